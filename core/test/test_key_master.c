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
 *      a signer's) and within two seconds.
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


int
main(void)
{
    int            inits;
    double         t0;
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

    pki_key_free(c);
    pki_key_free(b);
    pki_key_free(a);
    pki_key_free(g);
    pki_vault_free(v);
    dlclose(p.dl);

    return done_testing();
}
