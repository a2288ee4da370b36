/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The set-up of the token tests that break a key of their own: a vault
 * of the token, open, the token's module loaded beside it, and two fresh
 * P-256 key pairs on the token for the test to rename and restore.
 * Include after test/p11.h.
 */

#ifndef PKI_TEST_P11_KEY_H
#define PKI_TEST_P11_KEY_H

#include <stdio.h>

#include "pki.h"
#include "test/unit.h"
#include "test/p11.h"


/*
 * The vault name of e's token, open, and p loaded with the token's module
 * (after the vault: it needs the module initialised).  Then two key pairs
 * of the test's own, made before any key is listed (libp11 keeps the list
 * of its first look): labelled "<name>-a" and "<name>-b", CKA_ID id and
 * id + 1, what an earlier run left under "<name>-a", "-b", "-a-old" and
 * "-a-away" removed first; uri gets the URI of the first's private key.
 * Three checks; NULL when the vault or the module fails (the key pairs
 * failing is said, and the vault returned).
 */
static __attribute__((unused)) pki_vault_t *
p11_key_pairs(p11_env_t *e, p11_t *p, const char *name, unsigned char id,
    char *uri, size_t size)
{
    size_t              i;
    char                label[4][128];
    pki_vault_t        *v;
    pki_result_t        res;
    static const char  *suffix[4] = { "a", "b", "a-old", "a-away" };

    pki_result_init(&res);
    v = pki_vault_new(name, e->module, e->token, e->pin_file, &res);
    if (!ok(v != NULL && pki_vault_open(v, &res) == PKI_OK,
            "vault opens [%s]", res.detail))
    {
        pki_vault_free(v);
        return NULL;
    }

    if (!ok(p11_load(p, e->module, e->token),
            "the token's module, directly"))
    {
        pki_vault_free(v);
        return NULL;
    }

    for (i = 0; i < 4; i++) {
        snprintf(label[i], sizeof(label[i]), "%s-%s", name, suffix[i]);
        (void) p11_destroy_label(p, label[i]);
    }

    ok(p11_ec_keygen(p, label[0], id) && p11_ec_keygen(p, label[1], id + 1),
       "two P-256 key pairs made on the token");

    snprintf(uri, size, "pkcs11:token=%s;object=%s;type=private", e->token,
             label[0]);

    return v;
}

#endif /* PKI_TEST_P11_KEY_H */
