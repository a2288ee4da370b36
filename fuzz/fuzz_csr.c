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
 *
 * A request a template accepts is also handed to what EST's
 * est_bind_names does with a client certificate's subject
 * (pki_int_request_keep_subject, here with the request's own subject: a
 * client certificate may come from any CA the server trusts, so its name
 * is as hostile) and is then issued by the fixture's issuing CA without a
 * store (pki_issue with no Redis: pki_build, the compressed EC point set
 * again uncompressed, one ECDSA signature).
 */

#include <stdio.h>
#include <stdlib.h>

#include <openssl/err.h>

#include "fuzz.h"
#include "issue_int.h"


static const pki_fuzz_fixture_t  *fx;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;

    fx = pki_fuzz_fixture();
    return 0;
}


/* What an issued certificate must hold whatever the request was: its EC
 * point uncompressed (Go refuses another form), each subject value in a
 * string type RFC 5280 issues (PrintableString, UTF8String, IA5String)
 * and without a C0 control or DEL.  abort() otherwise. */
static void
pki_fuzz_check_issued(X509 *x)
{
    int                   i, j, n, len;
    X509_NAME            *name;
    const ASN1_STRING    *d;
    const unsigned char  *pt, *v;
    ASN1_OBJECT          *aobj;

    if (!X509_PUBKEY_get0_param(&aobj, &pt, &n, NULL,
                                X509_get_X509_PUBKEY(x)))
    {
        abort();
    }

    if (OBJ_obj2nid(aobj) == NID_X9_62_id_ecPublicKey
        && (n <= 0 || pt[0] != 0x04))
    {
        abort();
    }

    name = X509_get_subject_name(x);

    for (i = 0; i < X509_NAME_entry_count(name); i++) {
        d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));

        switch (ASN1_STRING_type(d)) {
        case V_ASN1_PRINTABLESTRING:
        case V_ASN1_UTF8STRING:
        case V_ASN1_IA5STRING:
            break;
        default:
            abort();
        }

        v = ASN1_STRING_get0_data(d);
        len = ASN1_STRING_length(d);
        for (j = 0; j < len; j++) {
            if (v[j] < 0x20 || v[j] == 0x7f) {
                abort();
            }
        }
    }
}


static void
pki_fuzz_policy(const pki_template_t *t, X509_REQ *csr)
{
    X509          *x;
    pki_result_t   res;
    pki_request_t  req;

    pki_result_init(&res);
    if (pki_request_from_csr(t, csr, &req, &res) != PKI_OK) {
        return;
    }

    if (pki_int_request_keep_subject(t, &req, X509_REQ_get_subject_name(csr))
        == 0)
    {
        x = NULL;
        pki_result_init(&res);
        if (pki_issue(fx->ca, t, NULL, &req, NULL, &x, &res) == PKI_OK) {
            if (x == NULL) {
                abort();
            }
            pki_fuzz_check_issued(x);
            if (pki_fuzz_verbose()) {
                fprintf(stderr, "fuzz_csr: %s: issued\n",
                        pki_template_name(t));
            }
            X509_free(x);

        } else if (pki_fuzz_verbose()) {
            fprintf(stderr, "fuzz_csr: %s: not issued: %s\n",
                    pki_template_name(t), res.detail);
        }

    } else if (pki_fuzz_verbose()) {
        fprintf(stderr, "fuzz_csr: keep subject: out of memory\n");
    }

    pki_request_clear(&req);
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
        pki_fuzz_policy(fx->wide, csr);
        pki_fuzz_policy(fx->nodns, csr);
        pki_fuzz_policy(fx->client, csr);
        X509_REQ_free(csr);
        ERR_clear_error();
        return 0;
    }

    /* PKI_POLICY: a key or a signature algorithm no certificate may
     * have (a weak RSA modulus, MD5), refused before the signature */
    if (csr != NULL
        || (st != PKI_MALFORMED && st != PKI_BAD_SIGNATURE
            && st != PKI_TOO_LARGE && st != PKI_POLICY))
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
        pki_fuzz_policy(fx->wide, csr);
        pki_fuzz_policy(fx->nodns, csr);
        pki_fuzz_policy(fx->client, csr);

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
