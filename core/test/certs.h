/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Certificates made by hand for the chain tests: a CA or end-entity
 * certificate with the extensions a test asks for, certificate files
 * written, and a CA "sub" over them.  Include after pki.h and
 * test/unit.h.
 */

#ifndef PKI_TEST_CERTS_H
#define PKI_TEST_CERTS_H

#include <stdarg.h>
#include <stdio.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>


/* What cx_cert() puts in a certificate beyond its name, key, issuer and
 * validity; unset pointers leave their extension out. */
typedef struct {
    long         serial;
    int          ca;         /* CA:TRUE, else CA:FALSE */
    int          pathlen;    /* pathLenConstraint when ca and >= 0 */
    int          no_akid;    /* no AKID even with an issuer */
    const char  *ku;         /* keyUsage (OpenSSL conf syntax) */
    const char  *eku;        /* extendedKeyUsage */
} cx_ext_t;


/* A certificate of /CN=cn and key pub, issued by issuer (key ikey), or
 * self-signed by ikey when issuer is NULL, valid from now + nb to now + na
 * seconds, with what c says: basicConstraints (critical), keyUsage,
 * subjectKeyIdentifier, authorityKeyIdentifier (with an issuer), then
 * extendedKeyUsage; signed with SHA-256. */
static __attribute__((unused)) X509 *
cx_cert(const char *cn, EVP_PKEY *pub, X509 *issuer, EVP_PKEY *ikey,
    long nb, long na, const cx_ext_t *c)
{
    int              i, nid[5];
    char             bc[64];
    X509            *x;
    X509_NAME       *n;
    X509V3_CTX       v3;
    const char      *val[5];
    X509_EXTENSION  *e;

    x = X509_new();
    n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), c->serial);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    X509_gmtime_adj(X509_getm_notBefore(x), nb);
    X509_gmtime_adj(X509_getm_notAfter(x), na);
    X509_set_pubkey(x, pub);
    X509_NAME_free(n);

    if (!c->ca) {
        snprintf(bc, sizeof(bc), "critical,CA:FALSE");
    } else if (c->pathlen >= 0) {
        snprintf(bc, sizeof(bc), "critical,CA:TRUE,pathlen:%d", c->pathlen);
    } else {
        snprintf(bc, sizeof(bc), "critical,CA:TRUE");
    }

    nid[0] = NID_basic_constraints;
    val[0] = bc;
    nid[1] = c->ku ? NID_key_usage : NID_undef;
    val[1] = c->ku;
    nid[2] = NID_subject_key_identifier;
    val[2] = "hash";
    nid[3] = issuer && !c->no_akid ? NID_authority_key_identifier
                                   : NID_undef;
    val[3] = "keyid:always";
    nid[4] = c->eku ? NID_ext_key_usage : NID_undef;
    val[4] = c->eku;

    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);

    for (i = 0; i < 5; i++) {
        if (nid[i] == NID_undef) {
            continue;
        }
        e = X509V3_EXT_conf_nid(NULL, &v3, nid[i], val[i]);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }

    X509_sign(x, ikey, EVP_sha256());

    return x;
}


/* DIR/NAME: the certificates of xs (NULL-terminated), in that order. */
static __attribute__((unused)) void
cx_write_certv(const char *dir, const char *name, X509 *const *xs)
{
    FILE  *f;
    char   path[512];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    if (f == NULL) {
        diag("cannot write %s", path);
        return;
    }
    for (; *xs; xs++) {
        PEM_write_X509(f, *xs);
    }
    fclose(f);
}


/* DIR/NAME: the certificates given, up to a NULL, in that order. */
static __attribute__((unused, sentinel)) void
cx_write_certs(const char *dir, const char *name, ...)
{
    int       n;
    X509     *xs[8];
    va_list   ap;

    va_start(ap, name);
    for (n = 0; n < 7; n++) {
        xs[n] = va_arg(ap, X509 *);
        if (xs[n] == NULL) {
            break;
        }
    }
    va_end(ap);
    xs[n] = NULL;

    cx_write_certv(dir, name, xs);
}


/* The CA directive name of ca set to the path DIR/FILE. */
static __attribute__((unused)) pki_status_t
cx_ca_file(pki_ca_t *ca, const char *name, const char *dir,
    const char *file, pki_result_t *res)
{
    char         path[512];
    const char  *argv[1];

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    argv[0] = path;
    return pki_ca_set(ca, name, 1, argv, res);
}


/* CA "sub" of DIR/sub.pem (key key) under chain DIR/CHAIN, alternate chain
 * DIR/ALT unless alt is NULL, issuing template t unless NULL; res says how
 * pki_ca_finish went. */
static __attribute__((unused)) pki_ca_t *
cx_sub_ca(const char *dir, const char *chain, const char *alt,
    pki_key_t *key, pki_template_t *t, pki_result_t *res)
{
    pki_ca_t  *ca;

    pki_result_init(res);
    ca = pki_ca_new("sub");
    cx_ca_file(ca, "certificate", dir, "sub.pem", res);
    cx_ca_file(ca, "chain", dir, chain, res);
    if (alt != NULL) {
        cx_ca_file(ca, "alternate_chain", dir, alt, res);
    }
    pki_ca_set_key(ca, key, res);
    if (t != NULL) {
        pki_ca_add_template(ca, t, res);
    }
    pki_result_init(res);
    (void) pki_ca_finish(ca, res);

    return ca;
}


#endif /* PKI_TEST_CERTS_H */
