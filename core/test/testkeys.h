/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * RSA keys for the unit tests.  Normally generated fresh.  Under Valgrind
 * (PKI_TEST_VALGRIND set, and PKI_TEST_KEYS naming core/test/keys, as
 * t/valgrind_core.t does) they are read from the pre-generated test-only
 * files there: OpenSSL's prime search under memcheck takes minutes per
 * key and checks none of our code.  n (1-based) picks one of several
 * distinct keys of a size (2048: 1..4).
 */

#ifndef PKI_TESTKEYS_H
#define PKI_TESTKEYS_H

#include <stdio.h>
#include <stdlib.h>

#include <openssl/evp.h>
#include <openssl/pem.h>


static inline EVP_PKEY *
pki_test_rsa(int bits, int n)
{
    FILE        *f;
    char         path[4096];
    EVP_PKEY    *pk;
    const char  *dir;

    dir = getenv("PKI_TEST_KEYS");

    if (dir != NULL && getenv("PKI_TEST_VALGRIND") != NULL) {
        if (bits == 2048) {
            snprintf(path, sizeof(path), "%s/rsa2048-%d.pem", dir, n);
        } else {
            snprintf(path, sizeof(path), "%s/rsa%d.pem", dir, bits);
        }

        f = fopen(path, "r");
        if (f != NULL) {
            pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
            fclose(f);
            if (pk != NULL && EVP_PKEY_get_bits(pk) == bits) {
                return pk;
            }
            EVP_PKEY_free(pk);
        }

        printf("# %s: no RSA-%d key there, generating one\n", path, bits);
    }

    return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) bits);
}


/* under Valgrind: repeat counts of load loops shrink (memory, not load,
 * is what that run checks) */
static inline int
pki_test_vg(int normal, int valgrind)
{
    return getenv("PKI_TEST_VALGRIND") != NULL ? valgrind : normal;
}

#endif /* PKI_TESTKEYS_H */
