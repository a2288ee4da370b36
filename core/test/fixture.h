/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Fixtures shared by the core unit tests: a key, a CA key in a file, a
 * template from its lines, a handle on the test Redis, a certificate
 * issued and written, a request with a repeated attribute.  Include
 * after pki.h and test/unit.h.
 */

#ifndef PKI_TEST_FIXTURE_H
#define PKI_TEST_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>


#define FX_TEMPLATE_WORDS  32


/* A new key: "EC:<curve>", "RSA:<bits>" or an algorithm name ("ED25519"). */
static __attribute__((unused)) EVP_PKEY *
fx_keygen(const char *alg)
{
    if (strncmp(alg, "EC:", 3) == 0) {
        return EVP_PKEY_Q_keygen(NULL, NULL, "EC", alg + 3);
    }

    if (strncmp(alg, "RSA:", 4) == 0) {
        return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) atoi(alg + 4));
    }

    return EVP_PKEY_Q_keygen(NULL, NULL, alg);
}


/* A template name set from lines (up to NULL), each a directive and its
 * arguments split at spaces, then finished; what it refuses is said with
 * diag(). */
static __attribute__((unused)) pki_template_t *
fx_template(const char *name, const char *const *lines)
{
    int              argc;
    char             buf[512], *p, *words[FX_TEMPLATE_WORDS];
    pki_result_t     res;
    pki_template_t  *t;

    t = pki_template_new(name);

    for (; *lines != NULL; lines++) {
        snprintf(buf, sizeof(buf), "%s", *lines);
        argc = 0;
        for (p = strtok(buf, " "); p != NULL && argc < FX_TEMPLATE_WORDS;
             p = strtok(NULL, " "))
        {
            words[argc++] = p;
        }
        if (argc == 0) {
            continue;
        }
        pki_result_init(&res);
        if (pki_template_set(t, words[0], argc - 1,
                             (const char *const *) words + 1, &res)
            != PKI_OK)
        {
            diag("template %s: \"%s\": %s", name, *lines, res.detail);
        }
    }

    pki_result_init(&res);
    if (pki_template_finish(t, &res) != PKI_OK) {
        diag("template %s: %s", name, res.detail);
    }

    return t;
}


/* pk written to DIR/NAME (PEM, unencrypted) and opened as a file key;
 * NULL (with a diagnostic) on failure. */
static __attribute__((unused)) pki_key_t *
fx_key_file(const char *dir, const char *name, EVP_PKEY *pk)
{
    FILE          *f;
    char           path[512];
    pki_key_t     *k;
    pki_result_t   res;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    if (f == NULL || !PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL))
    {
        if (f != NULL) {
            fclose(f);
        }
        diag("key %s: cannot write it", path);
        return NULL;
    }
    fclose(f);

    pki_result_init(&res);
    k = pki_key_new(path, NULL, &res);
    if (k == NULL || pki_key_open(k, &res) != PKI_OK) {
        diag("key %s: %s %s", path, res.detail, res.log);
    }

    return k;
}


/* A store on the Redis at unix socket sock, keys under namespace ns (NULL:
 * the default), commands timing out after ms; NULL with res filled. */
static __attribute__((unused)) pki_redis_t *
fx_redis(const char *sock, const char *ns, int ms, pki_result_t *res)
{
    pki_redis_conf_t  conf;

    memset(&conf, 0, sizeof(conf));
    conf.unix_path = sock;
    conf.ns = ns;
    conf.timeout_ms = ms;

    pki_result_init(res);
    return pki_redis_new(&conf, res);
}


/* A certificate for subject and key pk signed by ca under template t
 * (recorded in r unless NULL), ending at not_after unless 0; NULL with a
 * diagnostic. */
static __attribute__((unused)) X509 *
fx_issue(pki_ca_t *ca, const pki_template_t *t, pki_redis_t *r,
    X509_NAME *subject, EVP_PKEY *pk, time_t not_after)
{
    X509           *x;
    pki_result_t    res;
    pki_request_t   req;

    memset(&req, 0, sizeof(req));
    req.subject = subject;
    req.pubkey = pk;
    req.not_after = not_after;
    pki_result_init(&res);
    x = NULL;

    if (pki_issue(ca, t, r, &req, NULL, &x, &res) != PKI_OK) {
        diag("issue: %s %s", res.detail, res.log);
    }

    return x;
}


/* x written to DIR/NAME (PEM). */
static __attribute__((unused)) void
fx_write_cert(const char *dir, const char *name, X509 *x)
{
    FILE  *f;
    char   path[512];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    if (f == NULL || x == NULL || !PEM_write_X509(f, x)) {
        diag("cannot write %s", path);
    }
    if (f != NULL) {
        fclose(f);
    }
}


/* DER length octets of n into p (at most 4 bytes): how many. */
static __attribute__((unused)) size_t
fx_der_len(unsigned char *p, size_t n)
{
    if (n < 0x80) {
        p[0] = (unsigned char) n;
        return 1;
    }
    if (n < 0x100) {
        p[0] = 0x81;
        p[1] = (unsigned char) n;
        return 2;
    }
    p[0] = 0x82;
    p[1] = (unsigned char) (n >> 8);
    p[2] = (unsigned char) n;
    return 3;
}


/*
 * A strict-DER request of a key of type alg whose attributes are
 * unstructuredName "aaaa" and challengePassword "bbbb", both types then
 * set to last (their OID's last octet: 0x07 challengePassword, 0x0e
 * extensionRequest), and signed as that.  OpenSSL cannot build one: its
 * X509_REQ_add1_attr() refuses a repeated type.  The SET OF stays in DER
 * order (same lengths, "aaaa" < "bbbb").
 */
static __attribute__((unused)) unsigned char *
fx_dup_attr_csr(const char *alg, unsigned char last, size_t *len)
{
    int                 tlen, alen;
    size_t              i, slen, n, body;
    X509_REQ           *req;
    EVP_PKEY           *pk;
    X509_NAME          *nm;
    EVP_MD_CTX         *md;
    const X509_ALGOR   *sa;
    unsigned char      *tbs, *algder, *out, sig[1024], hd[8];
    static const unsigned char  un[] = {
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x02
    };

    pk = fx_keygen(alg);
    req = X509_REQ_new();
    nm = X509_NAME_new();
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC,
                               (const unsigned char *) "dup", -1, -1, 0);
    X509_REQ_set_version(req, X509_REQ_VERSION_1);
    X509_REQ_set_subject_name(req, nm);
    X509_NAME_free(nm);
    X509_REQ_set_pubkey(req, pk);
    X509_REQ_add1_attr_by_NID(req, NID_pkcs9_unstructuredName,
                              V_ASN1_PRINTABLESTRING,
                              (const unsigned char *) "aaaa", 4);
    X509_REQ_add1_attr_by_NID(req, NID_pkcs9_challengePassword,
                              V_ASN1_PRINTABLESTRING,
                              (const unsigned char *) "bbbb", 4);
    /* the signature algorithm as OpenSSL writes it for this key */
    X509_REQ_sign(req, pk, EVP_PKEY_get_id(pk) == EVP_PKEY_ED25519
                           ? NULL : EVP_sha256());
    X509_REQ_get0_signature(req, NULL, &sa);
    algder = NULL;
    alen = i2d_X509_ALGOR(sa, &algder);

    tbs = NULL;
    tlen = i2d_re_X509_REQ_tbs(req, &tbs);
    for (i = 0; tlen > 0 && i + sizeof(un) <= (size_t) tlen; i++) {
        if (memcmp(tbs + i, un, sizeof(un) - 1) == 0
            && (tbs[i + sizeof(un) - 1] == 0x02
                || tbs[i + sizeof(un) - 1] == 0x07))
        {
            tbs[i + sizeof(un) - 1] = last;
        }
    }

    md = EVP_MD_CTX_new();
    slen = sizeof(sig);
    if (EVP_DigestSignInit(md, NULL, EVP_PKEY_get_id(pk) == EVP_PKEY_ED25519
                                     ? NULL : EVP_sha256(), NULL, pk) != 1
        || EVP_DigestSign(md, sig, &slen, tbs, (size_t) tlen) != 1)
    {
        slen = 0;
    }
    EVP_MD_CTX_free(md);

    /* SEQUENCE { tbs, algorithm, BIT STRING { 0, sig } } */
    body = (size_t) tlen + (size_t) alen + 1 + fx_der_len(hd, slen + 1) + 1
           + slen;
    out = malloc(body + 8);
    n = 0;
    out[n++] = 0x30;
    n += fx_der_len(out + n, body);
    memcpy(out + n, tbs, (size_t) tlen);
    n += (size_t) tlen;
    memcpy(out + n, algder, (size_t) alen);
    n += (size_t) alen;
    out[n++] = 0x03;
    n += fx_der_len(out + n, slen + 1);
    out[n++] = 0x00;
    memcpy(out + n, sig, slen);
    n += slen;
    *len = n;

    OPENSSL_free(tbs);
    OPENSSL_free(algder);
    X509_REQ_free(req);
    EVP_PKEY_free(pk);

    return out;
}


#endif /* PKI_TEST_FIXTURE_H */
