/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * PKCS#10 parsing and the template policy.
 *
 * pki_csr_parse gets the raw bytes (strict DER, self-signature).  Since
 * anyone can sign any well-formed request with a key of their own, the
 * policy code must cope with every request that parses and only fails its
 * signature: such bytes are decoded again without the signature check
 * (d2i_X509_REQ) and handed to pki_request_from_csr under three templates
 * and to pki_request_renewal against the fixture's device certificate.
 * This reaches the subject/SAN/key rules with mutated contents that the
 * broken signature would otherwise stop.
 */

#include <stdlib.h>

#include <openssl/err.h>

#include "fuzz.h"


static const pki_fuzz_fixture_t  *fx;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;

    fx = pki_fuzz_fixture();
    return 0;
}


static void
pki_fuzz_policy(const pki_template_t *t, X509_REQ *csr)
{
    pki_result_t   res;
    pki_request_t  req;

    pki_result_init(&res);
    if (pki_request_from_csr(t, csr, &req, &res) == PKI_OK) {
        pki_request_clear(&req);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    X509_REQ             *csr;
    pki_status_t          st;
    pki_result_t          res;
    pki_request_t         req;
    const unsigned char  *p;

    if (fx == NULL) {
        fx = pki_fuzz_fixture();
    }

    pki_result_init(&res);
    csr = NULL;
    st = pki_csr_parse(data, size, &csr, &res);

    if (st == PKI_OK) {
        if (csr == NULL) {
            abort();
        }
        pki_fuzz_policy(fx->device, csr);
        pki_fuzz_policy(fx->strict, csr);
        X509_REQ_free(csr);
        ERR_clear_error();
        return 0;
    }

    if (csr != NULL
        || (st != PKI_MALFORMED && st != PKI_BAD_SIGNATURE
            && st != PKI_TOO_LARGE))
    {
        abort();                    /* a failure must not hand out a CSR */
    }

    if (st != PKI_BAD_SIGNATURE) {
        ERR_clear_error();
        return 0;
    }

    /* the unverified decode: what a request signed by its sender may
     * carry */
    p = data;
    csr = d2i_X509_REQ(NULL, &p, (long) size);
    if (csr != NULL) {
        pki_fuzz_policy(fx->device, csr);
        pki_fuzz_policy(fx->keygen, csr);
        pki_fuzz_policy(fx->strict, csr);

        pki_result_init(&res);
        if (pki_request_renewal(fx->device, csr, fx->leaf, &req, &res)
            == PKI_OK)
        {
            pki_request_clear(&req);
        }

        X509_REQ_free(csr);
    }

    ERR_clear_error();

    return 0;
}
