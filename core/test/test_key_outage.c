/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A token outage under many concurrent signers.  SoftHSM's token directory
 * (directories.tokendir of PKI_TEST_SOFTHSM_CONF) is renamed away and the
 * login dropped, so that every reopen of the vault fails.  What must hold:
 *   - 32 threads signing at once all get PKI_UNAVAILABLE, each within
 *     about one reopen of the vault: one thread reopens, the others wait
 *     for it instead of reopening in turn (before: ~1 s each, one after
 *     the other, so the last waited ~30 s);
 *   - during the backoff after the failed reopen, signers fail at once;
 *   - once the token is back, signing recovers by itself within the
 *     backoff (at most 5 s) plus one reopen.
 * Environment as for test_key.c; without it the test skips.
 */

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "pki.h"
#include "test/unit.h"
#include "test/p11.h"


typedef unsigned long  ck_ulong;

typedef ck_ulong (*ck_get_slot_list_pt)(unsigned char present,
    ck_ulong *slots, ck_ulong *count);
typedef ck_ulong (*ck_get_token_info_pt)(ck_ulong slot, void *info);
typedef ck_ulong (*ck_open_session_pt)(ck_ulong slot, ck_ulong flags,
    void *app, void *notify, ck_ulong *session);
typedef ck_ulong (*ck_session_pt)(ck_ulong session);

#define CKF_SERIAL_SESSION      0x4UL
#define CKR_OK                  0x0UL

#define NSIGNERS  32


static int          moved;
static pki_key_t   *key;
static p11_env_t    env;


static void
token_back(void)
{
    if (moved && rename(env.away, env.tokendir) == 0) {
        moved = 0;
    }
}


/* C_Logout through a session of our own on the module the vault loaded:
 * logs the whole process out. */
static int
drop_login(const char *module, const char *token)
{
    void                  *dl;
    ck_ulong               slots[64], n = 64, i, s, rv = ~0UL;
    size_t                 len = strlen(token);
    unsigned char          info[1024];
    ck_session_pt          logout, close_session;
    ck_open_session_pt     open_session;
    ck_get_slot_list_pt    slot_list;
    ck_get_token_info_pt   token_info;

    dl = dlopen(module, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        return 0;
    }

    slot_list = (ck_get_slot_list_pt) dlsym(dl, "C_GetSlotList");
    token_info = (ck_get_token_info_pt) dlsym(dl, "C_GetTokenInfo");
    open_session = (ck_open_session_pt) dlsym(dl, "C_OpenSession");
    logout = (ck_session_pt) dlsym(dl, "C_Logout");
    close_session = (ck_session_pt) dlsym(dl, "C_CloseSession");

    if (slot_list != NULL && token_info != NULL && open_session != NULL
        && logout != NULL && close_session != NULL
        && slot_list(1, slots, &n) == CKR_OK)
    {
        for (i = 0; i < n; i++) {
            memset(info, 0, sizeof(info));
            if (token_info(slots[i], info) == CKR_OK
                && memcmp(info, token, len) == 0
                && (len == 32 || info[len] == ' ')
                && open_session(slots[i], CKF_SERIAL_SESSION, NULL, NULL, &s)
                   == CKR_OK)
            {
                rv = logout(s);
                close_session(s);
                break;
            }
        }
    }

    dlclose(dl);
    return rv == CKR_OK;
}


static pki_status_t
sign(pki_result_t *res)
{
    static const unsigned char   tbs[] = "test_key_outage";
    unsigned char               *sig = NULL;
    size_t                       siglen = 0;
    pki_status_t                 st;

    pki_result_init(res);
    st = pki_key_sign(key, NULL, tbs, sizeof(tbs) - 1, &sig, &siglen, res);
    OPENSSL_free(sig);

    return st;
}


typedef struct {
    pthread_barrier_t  *go;
    pki_status_t        st;
    double              took;
    char                log[300];
} signer_t;


static void *
signer(void *arg)
{
    signer_t      *s = arg;
    double         t0;
    pki_result_t   res;

    pthread_barrier_wait(s->go);

    t0 = unit_now();
    s->st = sign(&res);
    s->took = unit_now() - t0;
    snprintf(s->log, sizeof(s->log), "%.290s", res.log);

    return NULL;
}


/* NSIGNERS threads sign at once; returns the slowest time, *unav the
 * number of PKI_UNAVAILABLE answers. */
static double
wave(int *unav, char *first, size_t size)
{
    int                 i;
    double              max = 0;
    signer_t            s[NSIGNERS];
    pthread_t           t[NSIGNERS];
    pthread_barrier_t   go;

    pthread_barrier_init(&go, NULL, NSIGNERS);
    *unav = 0;
    first[0] = '\0';

    for (i = 0; i < NSIGNERS; i++) {
        memset(&s[i], 0, sizeof(s[i]));
        s[i].go = &go;
        pthread_create(&t[i], NULL, signer, &s[i]);
    }

    for (i = 0; i < NSIGNERS; i++) {
        pthread_join(t[i], NULL);
        *unav += s[i].st == PKI_UNAVAILABLE;
        if (s[i].took > max) {
            max = s[i].took;
        }
        if (first[0] == '\0' && s[i].st != PKI_OK) {
            snprintf(first, size, "%s", s[i].log);
        }
    }

    pthread_barrier_destroy(&go);
    return max;
}


int
main(void)
{
    int            i, unav;
    char           first[300];
    double         t0, max;
    pki_vault_t   *v;
    pki_result_t   res;

    p11_env(&env, 1);
    atexit(token_back);

    pki_result_init(&res);
    v = pki_vault_new("outage", env.module, env.token, env.pin_file,
                      &res);
    key = v != NULL ? pki_key_new(env.uri_ec, v, &res) : NULL;
    pki_result_init(&res);
    if (!ok(key != NULL && pki_key_open(key, &res) == PKI_OK
            && sign(&res) == PKI_OK, "key opens and signs [%s]", res.detail))
    {
        return done_testing();
    }

    /* the token goes away: the login is dropped (the next signature
     * reopens), then the token directory is moved */
    ok(drop_login(env.module, env.token), "login dropped");
    moved = rename(env.tokendir, env.away) == 0;
    if (!ok(moved, "token directory moved away")) {
        return done_testing();
    }

    t0 = unit_now();
    max = wave(&unav, first, sizeof(first));
    diag("first wave: slowest %.3f s, all done in %.3f s [%s]", max,
         unit_now() - t0, first);
    ok(unav == NSIGNERS, "%d signers during the outage: %d PKI_UNAVAILABLE",
       NSIGNERS, unav);
    ok(max < (env.vg ? 60.0 : 3.0),
       "each within about one reopen of the vault (slowest %.3f s)", max);

    /* right after a failed reopen: the backoff, no wait */
    t0 = unit_now();
    ok(sign(&res) == PKI_UNAVAILABLE
       && strstr(res.log, "unavailable, next try in") != NULL,
       "a signer in the backoff fails at once (%.3f s) [%s]",
       unit_now() - t0, res.log);
    ok(env.vg || unit_now() - t0 < 0.05, "without waiting (%.3f s)",
       unit_now() - t0);

    max = wave(&unav, first, sizeof(first));
    ok(unav == NSIGNERS && max < (env.vg ? 60.0 : 3.0),
       "a second wave (%d PKI_UNAVAILABLE, slowest %.3f s) [%s]",
       unav, max, first);

    /* the token comes back: signing recovers within the backoff */
    token_back();
    ok(!moved, "token directory back");

    t0 = unit_now();
    for (i = 0; sign(&res) != PKI_OK && unit_now() - t0 < 15; i++) {
        usleep(50000);
    }
    ok(sign(&res) == PKI_OK, "signing recovers by itself in %.3f s "
       "(%d failed tries) [%s]", unit_now() - t0, i, res.log);
    ok(unit_now() - t0 < (env.vg ? 60.0 : 8.0),
       "within the backoff (5 s at most) and a reopen");

    max = wave(&unav, first, sizeof(first));
    ok(unav == 0, "and %d signers at once all succeed (%d unavailable) "
       "[%s]", NSIGNERS, unav, first);

    pki_key_free(key);
    pki_vault_free(v);
    return done_testing();
}
