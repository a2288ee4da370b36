/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The ACME request envelope: JWS flattened JSON (pki_jws_parse, then
 * pki_jws_verify with the key of its own "jwk" header), JWK text
 * (pki_jwk_parse, canonical form and thumbprint) and base64url.
 *
 * Input: the whole input is tried as each of the three.
 * Invariants: a parsed JWS with a jwk has the thumbprint of that key; a
 * parsed JWK's canonical JSON parses back to the same key; base64url that
 * decodes re-encodes to something that decodes to the same bytes.
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


static void
pki_fuzz_jwk_roundtrip(EVP_PKEY *pk)
{
    char           *json, thumb[PKI_JWK_THUMB_LEN], thumb2[PKI_JWK_THUMB_LEN];
    EVP_PKEY       *again;
    pki_result_t    res;

    json = pki_jwk_json(pk);
    if (json == NULL) {
        abort();
    }

    pki_result_init(&res);
    again = pki_jwk_parse(json, strlen(json), &res);
    if (again == NULL || EVP_PKEY_eq(pk, again) != 1
        || !pki_jwk_thumbprint(pk, thumb)
        || !pki_jwk_thumbprint(again, thumb2)
        || strcmp(thumb, thumb2) != 0)
    {
        abort();
    }

    EVP_PKEY_free(again);
    free(json);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char            *enc, thumb[PKI_JWK_THUMB_LEN];
    size_t           n, n2;
    EVP_PKEY        *pk;
    pki_jws_t        jws;
    pki_result_t     res;
    unsigned char   *out, *out2;

    /* JWS */
    pki_result_init(&res);
    if (pki_jws_parse(data, size, &jws, &res) == PKI_OK) {
        if (jws.jwk != NULL) {
            if (!pki_jwk_thumbprint(jws.jwk, thumb)
                || strcmp(thumb, jws.thumb) != 0)
            {
                abort();
            }
            pki_result_init(&res);
            (void) pki_jws_verify(&jws, jws.jwk, &res);
        }
    }
    pki_jws_clear(&jws);

    /* JWK */
    pki_result_init(&res);
    pk = pki_jwk_parse((const char *) data, size, &res);
    if (pk != NULL) {
        pki_fuzz_jwk_roundtrip(pk);
        EVP_PKEY_free(pk);
    }

    /* base64url */
    if (pki_b64url_decode((const char *) data, size, &out, &n)) {
        enc = pki_b64url_encode(out, n);
        if (enc == NULL
            || !pki_b64url_decode(enc, strlen(enc), &out2, &n2)
            || n2 != n || (n && memcmp(out, out2, n) != 0))
        {
            abort();
        }
        free(out2);
        free(enc);
        free(out);
    }

    ERR_clear_error();

    return 0;
}
