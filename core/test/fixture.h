/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Fixtures shared by the core unit tests: a key, a CA key in a file, a
 * template from its lines, a handle on the test Redis, a certificate
 * issued and written.  Include after pki.h and test/unit.h.
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


#endif /* PKI_TEST_FIXTURE_H */
