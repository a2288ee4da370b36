/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The test signature of a token key when the configuration is loaded (the
 * master's pki_key_open, so that nginx -t catches a broken key) meets a
 * token error that one reopen of the vault cures.  Before, that signature
 * was tried once, and one transient error failed nginx -t and the reload.
 * What must hold:
 *   A. the token lost its login (a C_Logout from elsewhere) after the
 *      vault opened: a key opened then is opened all the same;
 *   B. the token answers its test signature once with CKR_DEVICE_ERROR
 *      (test/p11.h's faults, on the RSA key that libp11 signs with): the
 *      key opens;
 *   C. the token fails every signature: the open fails, saying which key,
 *      after a bounded number of reopens of the vault (at most three, as
 *      a signer's) and within two seconds;
 *   D. the token lost its login before the key was ever looked up: libp11
 *      then lists no private key, and the lookup finds nothing
 *      (PKI_NOT_FOUND).  The key opens after one reopen of the vault (a
 *      new login), signs, and has no backoff of its own.  Before, the
 *      lookup's answer was final: a key on the token failed nginx -t;
 *   E. a key that is not on the token, with or without a lost login: the
 *      open fails with PKI_NOT_FOUND, naming the key, after that one
 *      reopen and within two seconds.
 * Environment as for test_key.c; without it the test skips.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "pki.h"
#include "test/unit.h"
#include "test/p11.h"


static p11_t      p;
static p11_env_t  env;


/* D and E: the lookup finds nothing when the key is opened */
typedef struct {
    const char    *name;
    int            key;         /* 0 the EC key, 1 the RSA key, 2 none */
    int            logout;      /* the login lost before the open */
    pki_status_t   want;
} lookup_case_t;

static const lookup_case_t  lookups[] = {
    { "D: login lost, the EC key", 0, 1, PKI_OK },
    { "D: login lost, the RSA key", 1, 1, PKI_OK },
    { "E: a key not on the token", 2, 0, PKI_NOT_FOUND },
    { "E: a key not on the token, login lost", 2, 1, PKI_NOT_FOUND },
};

#define NOKEY_URI  "pkcs11:object=no-such-key;type=private"


static void
lookup_case(pki_vault_t *v, const lookup_case_t *lc)
{
    int            inits;
    double         t0, took;
    pki_key_t     *k;
    const char    *uri;
    pki_status_t   st;
    pki_result_t   res;

    uri = lc->key == 0 ? env.uri_ec : lc->key == 1 ? env.uri_rsa : NOKEY_URI;

    /* a vault just opened: libp11 has listed no key of it yet */
    pki_vault_close(v);
    pki_result_init(&res);
    if (!ok(pki_vault_open(v, &res) == PKI_OK
            && p11_find_slot(&p, env.token)
            && (!lc->logout || p11_logout(&p)),
            "%s: the vault reopened%s [%s]", lc->name,
            lc->logout ? ", then its login dropped" : "", res.detail))
    {
        return;
    }

    k = p11_key_new(uri, v);
    inits = p11_fault_inits();
    t0 = unit_now();
    pki_result_init(&res);
    st = k != NULL ? pki_key_open(k, &res) : PKI_INTERNAL;
    took = unit_now() - t0;
    inits = p11_fault_inits() - inits;

    ok(st == lc->want
       && (st == PKI_OK || (strstr(res.detail, uri) != NULL
                            && strstr(res.detail, "not found on token")
                               != NULL)),
       "%s: %s (%s) [%s] [%s]", lc->name,
       lc->want == PKI_OK ? "the key opens" : "not found, naming the key",
       pki_status_name(st), res.detail, res.log);
    ok(inits == 1 && took < (env.vg ? 30.0 : 2.0),
       "%s: after one reopen of the vault (%d), in %.3f s", lc->name,
       inits, took);

    if (lc->want == PKI_OK) {
        st = p11_sign(k, NULL, NULL, &res);
        ok(st == PKI_OK && strstr(res.log, "is not used for") == NULL,
           "%s: it signs, no backoff of its own (%s) [%s]", lc->name,
           pki_status_name(st), res.log);
    }

    pki_key_free(k);
}


int
main(void)
{
    int            inits;
    double         t0;
    size_t         i;
    pki_key_t     *g, *a, *b, *c;
    pki_status_t   st;
    pki_vault_t   *v;
    pki_result_t   res;

    g = p11_fault_start(&env, &p, "master", 0, &v);
    if (g == NULL) {
        return done_testing();
    }

    a = p11_key_new(env.uri_ec, v);
    b = p11_key_new(env.uri_rsa, v);
    c = p11_key_new(env.uri_rsa, v);

    if (!ok(a != NULL && b != NULL && c != NULL, "three more keys")) {
        return done_testing();
    }

    /* A. the login lost after the vault opened */
    ok(p11_logout(&p), "A: the token's login dropped");
    pki_result_init(&res);
    st = pki_key_open(a, &res);
    ok(st == PKI_OK, "A: the next key opens all the same (%s) [%s] [%s]",
       pki_status_name(st), res.detail, res.log);
    ok(st == PKI_OK && p11_sign(a, NULL, NULL, &res) == PKI_OK,
       "A: and signs [%s]", res.log);

    /* the vault as a configuration finds it, whatever A left */
    pki_vault_close(v);
    pki_result_init(&res);
    ok(pki_vault_open(v, &res) == PKI_OK && p11_find_slot(&p, env.token),
       "the vault reopened [%s]", res.detail);

    /* B. one device error in its test signature */
    p11_fault_set(1, P11_CKR_DEVICE_ERROR, 0);
    pki_result_init(&res);
    st = pki_key_open(b, &res);
    ok(st == PKI_OK, "B: a key whose test signature meets one device error "
       "opens (%s) [%s] [%s]", pki_status_name(st), res.detail, res.log);
    ok(st == PKI_OK && p11_sign(b, NULL, NULL, &res) == PKI_OK,
       "B: and signs [%s]", res.log);
    p11_fault_set(0, 0, 0);

    /* C. every signature fails */
    p11_fault_set(1000000, P11_CKR_DEVICE_ERROR, 0);
    inits = p11_fault_inits();
    t0 = unit_now();
    pki_result_init(&res);
    st = pki_key_open(c, &res);
    inits = p11_fault_inits() - inits;
    ok(st == PKI_UNAVAILABLE && strstr(res.detail, env.uri_rsa) != NULL
       && strstr(res.detail, "test signature") != NULL,
       "C: a key the token never signs with does not open, and says which "
       "(%s) [%s] [%s]", pki_status_name(st), res.detail, res.log);
    ok(inits >= 1 && inits <= 3 && unit_now() - t0 < (env.vg ? 30.0 : 2.0),
       "C: after %d reopens of the vault (1 to 3), in %.3f s", inits,
       unit_now() - t0);
    p11_fault_set(0, 0, 0);

    /* D, E. the lookup finds nothing */
    for (i = 0; i < sizeof(lookups) / sizeof(lookups[0]); i++) {
        lookup_case(v, &lookups[i]);
    }

    pki_key_free(c);
    pki_key_free(b);
    pki_key_free(a);
    pki_key_free(g);
    pki_vault_free(v);
    dlclose(p.dl);

    return done_testing();
}
