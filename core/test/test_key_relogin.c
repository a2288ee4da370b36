/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The token's login dropped (C_Logout from elsewhere in the process, an
 * HSM that ends its sessions) while two vaults share the PKCS#11 module:
 * each vault must log in again when it reopens, although the other vault
 * keeps the module loaded.  libp11 remembers a login of its own per slot
 * and skips C_Login while it believes it; a vault that trusted it stayed
 * unavailable until the module was unloaded (in nginx: a reload).  EC
 * keys sign through the core's own path, RSA keys through libp11's.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pki.h"
#include "test/unit.h"
#include "test/p11.h"


#define LANES     2
#define DROPS     3
#define WAIT_MAX  15.0


static p11_env_t  env;


/* Signs with k until the signature is made and verifies, for at most WAIT_MAX seconds; returns
 * the seconds it took, or -1, with the number of failures in *fails. */
static double
recover(pki_key_t *k, int *fails, char *last, size_t size)
{
    int           verified;
    double        t0;
    pki_result_t  res;

    t0 = unit_now();
    *fails = 0;
    last[0] = '\0';

    while (p11_sign(k, pki_key_public(k), &verified, &res) != PKI_OK
           || !verified)
    {
        (*fails)++;
        snprintf(last, size, "%.250s %.300s", res.detail, res.log);
        if (unit_now() - t0 > WAIT_MAX) {
            return -1;
        }
        usleep(50000);
    }

    return unit_now() - t0;
}


int
main(void)
{
    int            i, j, n, fails;
    char           last[600];
    double         took;
    p11_t          p;
    pki_key_t     *keys[LANES * 2];
    const char    *what[LANES * 2];
    pki_vault_t   *v[LANES];
    pki_result_t   res;
    static const char  *names[LANES] = { "relogin-a", "relogin-b" };

    p11_env(&env, 0);

    n = 0;
    for (i = 0; i < LANES; i++) {
        pki_result_init(&res);
        v[i] = pki_vault_new(names[i], env.module, env.token, env.pin_file,
                             &res);
        if (!ok(v[i] != NULL, "vault %s [%s]", names[i], res.detail)) {
            return done_testing();
        }

        keys[n] = p11_key_new(env.uri_ec, v[i]);
        what[n++] = "EC";
        if (env.uri_rsa != NULL) {
            keys[n] = p11_key_new(env.uri_rsa, v[i]);
            what[n++] = "RSA";
        }
    }

    for (j = 0; j < n; j++) {
        pki_result_init(&res);
        if (!ok(keys[j] != NULL && pki_key_open(keys[j], &res) == PKI_OK
                && p11_sign(keys[j], NULL, NULL, &res) == PKI_OK,
                "%s key of vault %s opens and signs [%s]", what[j],
                names[j * LANES / n], res.detail))
        {
            return done_testing();
        }
    }

    if (!ok(p11_load(&p, env.module, env.token), "the test's own handle "
            "on the module"))
    {
        return done_testing();
    }

    for (i = 1; i <= DROPS; i++) {
        ok(p11_logout(&p), "drop %d: the process is logged out", i);

        for (j = 0; j < n; j++) {
            took = recover(keys[j], &fails, last, sizeof(last));
            ok(took >= 0, "drop %d: the %s key of vault %s signs again "
               "after %.3f s, %d failed tries, with the other vault "
               "holding the module [%s]", i, what[j], names[j * LANES / n],
               took, fails, last);
        }
    }

    dlclose(p.dl);

    for (j = 0; j < n; j++) {
        pki_key_free(keys[j]);
    }
    for (i = 0; i < LANES; i++) {
        pki_vault_free(v[i]);
    }

    return done_testing();
}
