/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Two vaults on one PKCS#11 module, closed and reopened at the same time
 * (two vaults recovering from one HSM outage): the last close of the
 * module finalises it while the other vault loads it anew.  Both must go
 * on signing; neither may load the module while the other finalises it
 * (a new context's C_GetSlotList ran under the old one's C_Finalize, and
 * SoftHSM crashed).
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "pki.h"
#include "test/unit.h"
#include "test/p11.h"


#define ROUNDS  150


typedef struct {
    pki_vault_t  *vault;
    pki_key_t    *key;
    int           reopened;       /* close + open that came back PKI_OK */
    int           signed_ok;
    char          last[1400];
} lane_t;


static p11_env_t  env;


static pki_status_t
sign(pki_key_t *k, pki_result_t *res)
{
    static const unsigned char   tbs[] = "test_key_shared";
    unsigned char               *sig = NULL;
    size_t                       siglen = 0;
    pki_status_t                 st;

    pki_result_init(res);
    st = pki_key_sign(k, EVP_sha256(), tbs, sizeof(tbs) - 1, &sig, &siglen,
                      res);
    OPENSSL_free(sig);

    return st;
}


static void *
lane(void *arg)
{
    int            i;
    lane_t        *l = arg;
    pki_result_t   res;

    for (i = 0; i < ROUNDS; i++) {
        pki_vault_close(l->vault);

        pki_result_init(&res);
        if (pki_vault_open(l->vault, &res) == PKI_OK) {
            l->reopened++;
        } else {
            snprintf(l->last, sizeof(l->last), "open: %s %s", res.detail,
                     res.log);
        }

        if (sign(l->key, &res) == PKI_OK) {
            l->signed_ok++;
        } else {
            snprintf(l->last, sizeof(l->last), "sign: %s %s", res.detail,
                     res.log);
        }
    }

    return NULL;
}


int
main(void)
{
    int            i;
    lane_t         lanes[2];
    pthread_t      th[2];
    pki_result_t   res;
    static const char  *names[2] = { "shared-a", "shared-b" };

    p11_env(&env, 0);

    memset(lanes, 0, sizeof(lanes));

    for (i = 0; i < 2; i++) {
        pki_result_init(&res);
        lanes[i].vault = pki_vault_new(names[i], env.module, env.token,
                                       env.pin_file, &res);
        lanes[i].key = lanes[i].vault != NULL
                       ? pki_key_new(env.uri_ec, lanes[i].vault, &res) : NULL;
        pki_result_init(&res);
        if (!ok(lanes[i].key != NULL
                && pki_key_open(lanes[i].key, &res) == PKI_OK
                && sign(lanes[i].key, &res) == PKI_OK,
                "vault %s on the shared module opens and signs [%s]",
                names[i], res.detail))
        {
            return done_testing();
        }
    }

    for (i = 0; i < 2; i++) {
        pthread_create(&th[i], NULL, lane, &lanes[i]);
    }

    for (i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
    }

    for (i = 0; i < 2; i++) {
        ok(lanes[i].reopened == ROUNDS && lanes[i].signed_ok == ROUNDS,
           "vault %s: %d reopens and %d signatures of %d, beside the other "
           "vault's reopens [%s]", names[i], lanes[i].reopened,
           lanes[i].signed_ok, ROUNDS, lanes[i].last);
    }

    /* and after it all, each still signs */
    for (i = 0; i < 2; i++) {
        ok(sign(lanes[i].key, &res) == PKI_OK, "vault %s signs at the end "
           "[%s]", names[i], res.detail);
    }

    for (i = 0; i < 2; i++) {
        pki_key_free(lanes[i].key);
        pki_vault_free(lanes[i].vault);
    }

    return done_testing();
}
