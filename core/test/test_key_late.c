/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A token key whose open fails when a worker starts.  nginx's master opens
 * every key at configuration time (and checks it against its CA
 * certificate), closes them before fork, and each worker opens its own in
 * init_process; here one process plays both.  The token goes away in
 * between (SoftHSM's token directory moved: every open fails, for longer
 * than the vault's open retries, as in an HSM blip during a reload), so the
 * worker's pki_vault_open and pki_key_open fail.  Before, such a key
 * answered PKI_INTERNAL "signing key is not open" (500, no Retry-After)
 * until the next reload.  What must hold:
 *   - signing and decrypting with it answer PKI_UNAVAILABLE, at once while
 *     the vault is in its backoff;
 *   - its public key is still the one the master opened;
 *   - once the token is back, it signs by itself, signatures that verify
 *     (OpenSSL) with the master's public key, and decrypts; 32 signers at
 *     once all succeed; a key first opened in the worker gets its public
 *     key from its first fetch;
 *   - a key whose object on the token is no longer the key the master
 *     opened (another one put under its label in between) fails its test
 *     signature in the worker and never signs, until its own key is back.
 * Environment as for test_key.c; without it the test skips.
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "pki.h"
#include "test/unit.h"
#include "test/p11.h"
#include "test/p11_key.h"


#define NSIGNERS  32


static int          moved;
static p11_env_t    env;


static void
token_away(void)
{
    moved = rename(env.tokendir, env.away) == 0;
}


static void
token_back(void)
{
    if (moved && rename(env.away, env.tokendir) == 0) {
        moved = 0;
    }
}


typedef struct {
    pki_key_t          *key;
    pthread_barrier_t  *go;
    pki_status_t        st;
    double              took;
} signer_t;


static void *
signer(void *arg)
{
    double         t0;
    signer_t      *s = arg;
    pki_result_t   res;

    pthread_barrier_wait(s->go);

    t0 = unit_now();
    s->st = p11_sign(s->key, NULL, NULL, &res);
    s->took = unit_now() - t0;

    return NULL;
}


/* NSIGNERS threads sign with k at once: how many got want, *max the
 * slowest. */
static int
wave(pki_key_t *k, pki_status_t want, double *max)
{
    int                 i, n = 0;
    signer_t            s[NSIGNERS];
    pthread_t           t[NSIGNERS];
    pthread_barrier_t   go;

    pthread_barrier_init(&go, NULL, NSIGNERS);
    *max = 0;

    for (i = 0; i < NSIGNERS; i++) {
        memset(&s[i], 0, sizeof(s[i]));
        s[i].key = k;
        s[i].go = &go;
        pthread_create(&t[i], NULL, signer, &s[i]);
    }

    for (i = 0; i < NSIGNERS; i++) {
        pthread_join(t[i], NULL);
        n += s[i].st == want;
        if (s[i].took > *max) {
            *max = s[i].took;
        }
    }

    pthread_barrier_destroy(&go);
    return n;
}


/* RSA PKCS#1 v1.5 of 32 random bytes to pub, decrypted by k: 1 if the
 * bytes come back, *st the status of pki_key_decrypt. */
static int
decrypt_round(pki_key_t *k, EVP_PKEY *pub, pki_status_t *st,
    pki_result_t *res)
{
    int             same;
    size_t          clen, outlen;
    EVP_PKEY_CTX   *pc;
    unsigned char   msg[32], ct[1024], *out;

    pki_result_init(res);
    *st = PKI_INTERNAL;

    clen = sizeof(ct);
    pc = EVP_PKEY_CTX_new(pub, NULL);
    if (pc == NULL || RAND_bytes(msg, sizeof(msg)) != 1
        || EVP_PKEY_encrypt_init(pc) != 1
        || EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) != 1
        || EVP_PKEY_encrypt(pc, ct, &clen, msg, sizeof(msg)) != 1)
    {
        EVP_PKEY_CTX_free(pc);
        return 0;
    }
    EVP_PKEY_CTX_free(pc);

    out = NULL;
    outlen = 0;
    *st = pki_key_decrypt(k, ct, clen, &out, &outlen, res);
    same = *st == PKI_OK && outlen == sizeof(msg)
           && memcmp(out, msg, sizeof(msg)) == 0;
    free(out);

    return same;
}


int
main(void)
{
    int            i, n, verified;
    char           uri_l[512];
    p11_t          p;
    double         t0, max;
    EVP_PKEY      *pub_k, *pub_r, *pub_l;
    pki_key_t     *k, *k2, *r, *l;
    pki_status_t   st;
    pki_vault_t   *v;
    pki_result_t   res;

    p11_env(&env, 1);
    atexit(token_back);

    /* ---- the master: configuration ---- */

    /* key pairs late-a (0xa1) and late-b (0xa2) */
    v = p11_key_pairs(&env, &p, "late", 0xa1, uri_l, sizeof(uri_l));
    if (v == NULL) {
        return done_testing();
    }

    k = p11_key_new(env.uri_ec, v);
    k2 = p11_key_new(env.uri_ec, v);
    l = p11_key_new(uri_l, v);
    r = env.uri_rsa != NULL ? p11_key_new(env.uri_rsa, v) : NULL;

    pki_result_init(&res);
    if (!ok(k != NULL && k2 != NULL && l != NULL
            && pki_key_open(k, &res) == PKI_OK
            && pki_key_open(l, &res) == PKI_OK
            && (r == NULL || pki_key_open(r, &res) == PKI_OK),
            "the master opens its keys [%s]", res.detail))
    {
        return done_testing();
    }

    pub_k = EVP_PKEY_dup(pki_key_public(k));
    pub_l = EVP_PKEY_dup(pki_key_public(l));
    pub_r = r != NULL ? EVP_PKEY_dup(pki_key_public(r)) : NULL;

    ok(p11_sign(k, pub_k, &verified, &res) == PKI_OK && verified,
       "and signs [%s]", res.detail);

    /* another key goes under the label of l (the master's l still has
     * the handle of its own) */
    ok(p11_relabel(&p, "late-a", "late-a-old")
       && p11_relabel(&p, "late-b", "late-a"),
       "another key under the label of the third key");

    /* before fork */
    pki_key_close(k);
    pki_key_close(l);
    pki_key_close(r);
    pki_vault_close(v);
    ok(pki_key_public(k) == NULL, "closed before fork");

    /* ---- the worker: the token is away ---- */

    token_away();
    if (!ok(moved, "token directory moved away")) {
        return done_testing();
    }

    t0 = unit_now();
    pki_result_init(&res);
    ok(pki_vault_open(v, &res) != PKI_OK, "worker: the vault does not open "
       "[%s]", res.detail);
    pki_result_init(&res);
    ok(pki_key_open(k, &res) == PKI_UNAVAILABLE, "worker: the key does not "
       "open either [%s] [%s]", res.detail, res.log);
    pki_result_init(&res);
    ok(pki_key_open(k2, &res) == PKI_UNAVAILABLE, "worker: nor one never "
       "opened before [%s]", res.detail);
    if (r != NULL) {
        pki_result_init(&res);
        ok(pki_key_open(r, &res) == PKI_UNAVAILABLE, "worker: nor the RSA "
           "key [%s]", res.detail);
    }
    diag("the worker's opens took %.3f s", unit_now() - t0);

    t0 = unit_now();
    st = p11_sign(k, NULL, NULL, &res);
    ok(st == PKI_UNAVAILABLE, "a key that did not open answers "
       "unavailable, not \"not open\" (%s) [%s] [%s]", pki_status_name(st),
       res.detail, res.log);
    ok(strstr(res.log, "next try in") != NULL
       && (env.vg || unit_now() - t0 < 0.05),
       "at once, in the vault's backoff (%.3f s)", unit_now() - t0);

    ok(pki_key_public(k) != NULL
       && EVP_PKEY_eq(pki_key_public(k), pub_k) == 1,
       "its public key is the one the master opened");
    ok(pki_key_public(k2) == NULL, "a key never fetched has none yet");

    if (r != NULL) {
        (void) decrypt_round(r, pub_r, &st, &res);
        ok(st == PKI_UNAVAILABLE, "decrypting with it answers unavailable "
           "(%s) [%s]", pki_status_name(st), res.detail);
    }

    n = wave(k, PKI_UNAVAILABLE, &max);
    ok(n == NSIGNERS && max < (env.vg ? 60.0 : 3.0),
       "%d signers at once: %d unavailable, slowest %.3f s", NSIGNERS, n,
       max);

    /* ---- the token comes back ---- */

    token_back();
    ok(!moved, "token directory back");

    t0 = unit_now();
    for (i = 0; p11_sign(k, NULL, NULL, &res) != PKI_OK && unit_now() - t0 < 15;
         i++)
    {
        usleep(50000);
    }
    ok(p11_sign(k, pub_k, &verified, &res) == PKI_OK && verified,
       "the key signs by itself in %.3f s (%d failed tries), verified with "
       "the master's public key [%s]", unit_now() - t0, i, res.log);
    ok(unit_now() - t0 < (env.vg ? 60.0 : 8.0),
       "within the vault's backoff (5 s at most) and a reopen");

    ok(p11_sign(k2, pub_k, &verified, &res) == PKI_OK && verified
       && pki_key_public(k2) != NULL
       && EVP_PKEY_eq(pki_key_public(k2), pub_k) == 1,
       "a key first opened in the worker signs, its public key from its "
       "first fetch [%s]", res.log);

    if (r != NULL) {
        n = decrypt_round(r, pub_r, &st, &res);
        ok(n, "the RSA key decrypts (%s) [%s]", pki_status_name(st),
           res.log);
    }

    n = wave(k, PKI_OK, &max);
    ok(n == NSIGNERS, "%d signers at once all succeed (%d)", NSIGNERS, n);

    /* ---- a key that is not the master's ---- */

    pki_result_init(&res);
    st = pki_key_open(l, &res);
    ok(st == PKI_UNAVAILABLE
       && strstr(res.detail, "no longer matches its certificate") != NULL,
       "a key whose label holds another key is refused: it no longer "
       "matches its certificate (%s) [%s]", pki_status_name(st),
       res.detail);
    ok(pki_key_public(l) != NULL
       && EVP_PKEY_eq(pki_key_public(l), pub_l) == 1,
       "its public key stays the master's");

    n = 0;
    t0 = unit_now();
    while (unit_now() - t0 < 0.5) {
        n += p11_sign(l, NULL, NULL, &res) == PKI_OK;
        usleep(10000);
    }
    ok(n == 0 && p11_sign(l, NULL, NULL, &res) == PKI_UNAVAILABLE,
       "and never signs (%d signatures) [%s]", n, res.log);

    ok(p11_find_slot(&p, env.token)
       && p11_relabel(&p, "late-a", "late-b")
       && p11_relabel(&p, "late-a-old", "late-a"),
       "its own key back under its label");

    t0 = unit_now();
    for (i = 0; p11_sign(l, NULL, NULL, &res) != PKI_OK && unit_now() - t0 < 15;
         i++)
    {
        usleep(50000);
    }
    ok(p11_sign(l, pub_l, &verified, &res) == PKI_OK && verified,
       "then it signs by itself in %.3f s (%d failed tries), verified with "
       "the master's public key [%s]", unit_now() - t0, i, res.log);

    ok(p11_destroy_label(&p, "late-a") == 2
       && p11_destroy_label(&p, "late-b") == 2,
       "the test's key pairs removed");

    pki_key_free(k);
    pki_key_free(k2);
    pki_key_free(l);
    pki_key_free(r);
    pki_vault_free(v);
    EVP_PKEY_free(pub_k);
    EVP_PKEY_free(pub_l);
    EVP_PKEY_free(pub_r);
    dlclose(p.dl);

    return done_testing();
}
