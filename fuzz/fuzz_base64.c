/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * pki_base64_decode on arbitrary bytes; whatever decodes must encode back
 * to the same bytes (wrapped and unwrapped) and decode again identically.
 * Also pki_serial_normalize on the input as text.
 */

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char            *enc, *s, canon[41];
    size_t           n, n2, elen;
    pki_result_t     res;
    unsigned char   *out, *out2;

    pki_result_init(&res);
    out = NULL;
    n = 0;

    if (pki_base64_decode(data, size, &out, &n, &res) == PKI_OK) {
        if (out == NULL && n != 0) {
            abort();
        }

        enc = pki_base64_encode(out, n, 64, &elen);
        if (enc == NULL) {
            abort();
        }

        out2 = NULL;
        n2 = 0;
        if (pki_base64_decode((unsigned char *) enc, elen, &out2, &n2, &res)
            != PKI_OK
            || n2 != n || (n && memcmp(out, out2, n) != 0))
        {
            abort();                       /* round trip broken */
        }

        free(out2);
        free(enc);
        free(out);

    } else if (res.status != PKI_MALFORMED) {
        abort();
    }

    /* serial numbers: canonical form is a fixed point */
    s = pki_fuzz_strndup(data, size < 128 ? size : 128);
    if (pki_serial_normalize(s, canon)) {
        char  again[41];

        if (!pki_serial_normalize(canon, again) || strcmp(canon, again) != 0)
        {
            abort();
        }
    }
    free(s);

    return 0;
}
