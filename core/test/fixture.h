/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Fixtures shared by the core unit tests: a CA key in a file, a handle on
 * the test Redis.  Include after pki.h and test/unit.h.
 */

#ifndef PKI_TEST_FIXTURE_H
#define PKI_TEST_FIXTURE_H

#include <stdio.h>

#include <openssl/evp.h>
#include <openssl/pem.h>


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


#endif /* PKI_TEST_FIXTURE_H */
