/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Matter certificates: the TLV decoder (pki_matter_tlv_to_der), the
 * DER -> TLV converter (pki_matter_der_to_tlv) and the profile checks
 * (pki_matter_check for every type) on what decodes.
 *
 * Input: byte 0 bit 0 chooses how the rest is read first: 0 as Matter TLV,
 * 1 as X.509 DER.  Invariant: whatever converts from DER to TLV converts
 * back to the same DER bytes (the converter refuses what TLV cannot
 * represent byte-exactly).
 */

#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "fuzz.h"


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;

    if (!pki_init()) {
        abort();
    }
    return 0;
}


/* DER -> TLV -> DER must be the identity when the first step succeeds. */
static void
pki_fuzz_der_roundtrip(const unsigned char *der, size_t len)
{
    int                   t;
    X509                 *x;
    size_t                tlen, dlen;
    pki_result_t          res;
    unsigned char        *tlv, *back;
    const unsigned char  *p;

    pki_result_init(&res);
    tlv = NULL;
    if (pki_matter_der_to_tlv(der, len, &tlv, &tlen, &res) == PKI_OK) {
        back = NULL;
        pki_result_init(&res);
        if (pki_matter_tlv_to_der(tlv, tlen, &back, &dlen, &res) != PKI_OK
            || dlen != len || memcmp(back, der, len) != 0)
        {
            abort();
        }
        free(back);
        free(tlv);
    }

    p = der;
    x = d2i_X509(NULL, &p, (long) len);
    if (x != NULL) {
        for (t = PKI_MATTER_PAA; t <= PKI_MATTER_NOC; t++) {
            pki_result_init(&res);
            (void) pki_matter_check(x, (pki_matter_type_t) t, NULL, &res);
            pki_result_init(&res);
            (void) pki_matter_check(x, (pki_matter_type_t) t, x, &res);
        }
        X509_free(x);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t          dlen;
    pki_result_t    res;
    unsigned char  *der;

    if (size < 1) {
        return 0;
    }

    if (data[0] & 1) {
        pki_fuzz_der_roundtrip(data + 1, size - 1);

    } else {
        pki_result_init(&res);
        der = NULL;
        if (pki_matter_tlv_to_der(data + 1, size - 1, &der, &dlen, &res)
            == PKI_OK)
        {
            if (der == NULL || dlen == 0) {
                abort();
            }
            pki_fuzz_der_roundtrip(der, dlen);
            free(der);
        }
    }

    ERR_clear_error();

    return 0;
}
