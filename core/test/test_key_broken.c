/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * One key of a vault is broken on the token while the others work:
 *   A. missing: nothing under its label any more (deleted, or absent on
 *      one HSM of a cluster);
 *   B. replaced: another key under its label, whose public key is not
 *      the key's (it no longer matches its certificate);
 *   C. refused: the token will not sign with it (CKA_SIGN false), a token
 *      error that reopening the vault does not cure.
 * Before, every request for such a key closed and reopened the whole vault
 * up to three times, without a backoff: each reopen holds the vault's
 * write lock through C_Finalize, C_Initialize and the login, and drops
 * every other key's handles (one client asking for a broken key took
 * another key of the vault from 5,275 to 440 signatures a second; OCSP
 * requests need no authentication).  What must hold, for each:
 *   - the key answers PKI_UNAVAILABLE and says why; then, for its backoff,
 *     at once and without reopening the vault: over two seconds of
 *     requests, the vault is reopened at most once per backoff (they
 *     double from 100 ms), not for each request.  Reopens are counted with
 *     a probe (test/p11.h): a session of the test with a find operation
 *     open, which the module's C_Finalize ends;
 *   - another key of the vault signs all along (its pace beside the
 *     broken key's requests is printed, not judged: on the shared machine
 *     and under the sanitizers the requesting thread's own CPU weighs as
 *     much as the reopens did);
 *   - once the key is as it was, it signs again by itself, signatures that
 *     verify with its public key.
 * Environment as for test_key.c; without it the test skips.
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
#include "test/p11_key.h"



static p11_t        p;
static p11_env_t    env;


/* Requests for k, one a millisecond for secs, each followed by a look at
 * the probe (never while a reopen of the core's may run: the test's calls
 * into the module inside the core's C_Finalize could crash SoftHSM). */
typedef struct {
    int            n;
    int            unavailable;
    int            reopens;
    int            fast;             /* answered within 5 ms (50 ms under
                                        Valgrind) */
    char           log[PKI_LOG_LEN];  /* of the last one in the backoff */
} hammer_t;


static void
hammer(pki_key_t *k, double secs, hammer_t *h)
{
    double         t0, t1;
    p11_ulong      probe;
    pki_status_t   st;
    pki_result_t   res;

    memset(h, 0, sizeof(*h));
    probe = p11_probe_arm(&p);

    t0 = unit_now();

    while (unit_now() - t0 < secs) {
        t1 = unit_now();
        st = p11_sign(k, NULL, NULL, &res);
        h->fast += unit_now() - t1 < (env.vg ? 0.05 : 0.005);
        h->n++;
        h->unavailable += st == PKI_UNAVAILABLE;
        if (strstr(res.log, "next try in") != NULL) {
            /* the last answer in the backoff (not the try after it) */
            snprintf(h->log, sizeof(h->log), "%s", res.log);
        }

        if (probe == 0 || !p11_probe_alive(&p, probe)) {
            /* the session died with the module: its number is not ours
             * any more, never closed */
            h->reopens++;
            probe = p11_probe_arm(&p);
        }

        usleep(1000);
    }

    if (probe != 0) {
        (void) p.find_final(probe);
        p.close(probe);
    }
}


typedef struct {
    pki_key_t     *key;
    volatile int  *stop;
    int            n;
} bg_t;


static void *
bg_requests(void *arg)
{
    bg_t          *b = arg;
    pki_result_t   res;

    while (!*b->stop) {
        (void) p11_sign(b->key, NULL, NULL, &res);
        b->n++;
        usleep(1000);
    }

    return NULL;
}


/* Signatures of g in secs (with a thread asking for bad meanwhile, if
 * not NULL): how many, *fails the failed ones, *worst the slowest. */
static int
pace(pki_key_t *g, pki_key_t *bad, double secs, int *fails, double *worst)
{
    int            n;
    bg_t           b;
    double         t0, t1, took;
    pthread_t      t;
    pki_result_t   res;
    volatile int   stop = 0;

    memset(&b, 0, sizeof(b));
    b.key = bad;
    b.stop = &stop;

    if (bad != NULL) {
        pthread_create(&t, NULL, bg_requests, &b);
    }

    n = 0;
    *fails = 0;
    *worst = 0;
    t0 = unit_now();

    while (unit_now() - t0 < secs) {
        t1 = unit_now();
        *fails += p11_sign(g, NULL, NULL, &res) != PKI_OK;
        took = unit_now() - t1;
        if (took > *worst) {
            *worst = took;
        }
        n++;
    }

    if (bad != NULL) {
        stop = 1;
        pthread_join(t, NULL);
        diag("  (%d requests for the broken key meanwhile)", b.n);
    }

    return n;
}


/* The broken key a is asked for; g, another key of the vault, works. */
static void
broken(const char *what, const char *why, pki_key_t *a, pki_key_t *g,
    int alone)
{
    int            gfails, n;
    double         t0, worst;
    hammer_t       h;
    pki_status_t   st;
    pki_result_t   res;

    t0 = unit_now();
    st = p11_sign(a, NULL, NULL, &res);
    ok(st == PKI_UNAVAILABLE && strstr(res.log, why) != NULL,
       "%s: unavailable, saying why (%s, %.3f s) [%s]", what,
       pki_status_name(st), unit_now() - t0, res.log);

    hammer(a, 2.0, &h);
    diag("%s: %d requests in 2 s, %d answered at once, %d reopens of the "
         "vault", what, h.n, h.fast, h.reopens);
    ok(h.unavailable == h.n, "%s: every request unavailable (%d of %d)",
       what, h.unavailable, h.n);
    ok(h.n >= (env.vg ? 20 : 200) && h.fast * 10 >= h.n * 9,
       "%s: at once in its backoff (%d of %d within %d ms)", what, h.fast,
       h.n, env.vg ? 50 : 5);
    ok(h.reopens <= 5, "%s: the vault reopened at most once per backoff "
       "(%d reopens for %d requests)", what, h.reopens, h.n);
    ok(strstr(h.log, "next try in") != NULL && strstr(h.log, why) != NULL,
       "%s: the backoff and its reason logged [%s]", what, h.log);

    n = pace(g, a, 1.0, &gfails, &worst);
    diag("%s: the other key: %d signatures in 1 s (%d a second alone), "
         "slowest %.3f s", what, n, alone, worst);
    ok(gfails == 0, "%s: the other key signs all along (%d failed)", what,
       gfails);
}


/* a comes back: it signs by itself, verified with pub. */
static void
back(const char *what, pki_key_t *a, EVP_PKEY *pub)
{
    int            i, verified;
    double         t0;
    pki_result_t   res;

    t0 = unit_now();
    for (i = 0; p11_sign(a, NULL, NULL, &res) != PKI_OK && unit_now() - t0 < 15;
         i++)
    {
        usleep(20000);
    }

    ok(p11_sign(a, pub, &verified, &res) == PKI_OK && verified,
       "%s: back, it signs by itself in %.3f s (%d tries), verified [%s]",
       what, unit_now() - t0, i, res.log);
    ok(unit_now() - t0 < (env.vg ? 60.0 : 10.0), "%s: within its backoff",
       what);
}


int
main(void)
{
    int            alone, gfails, verified;
    char           uri_a[512];
    double         worst;
    EVP_PKEY      *pub_a;
    pki_key_t     *a, *g;
    pki_vault_t   *v;
    pki_result_t   res;

    p11_env(&env, 0);

    /* key pairs broken-a (0xb1) and broken-b (0xb2) */
    v = p11_key_pairs(&env, &p, "broken", 0xb1, uri_a, sizeof(uri_a));
    if (v == NULL) {
        return done_testing();
    }

    g = p11_key_new(env.uri_ec, v);
    a = p11_key_new(uri_a, v);
    pki_result_init(&res);
    if (!ok(g != NULL && a != NULL && pki_key_open(g, &res) == PKI_OK
            && pki_key_open(a, &res) == PKI_OK,
            "both keys open [%s]", res.detail))
    {
        return done_testing();
    }

    pub_a = EVP_PKEY_dup(pki_key_public(a));
    ok(p11_sign(a, pub_a, &verified, &res) == PKI_OK && verified
       && p11_sign(g, NULL, NULL, &res) == PKI_OK, "both keys sign");

    alone = pace(g, NULL, 1.0, &gfails, &worst);
    diag("the other key alone: %d signatures in 1 s, slowest %.3f s", alone,
         worst);

    /* A. missing: its label goes; the logout makes the core look again */
    ok(p11_relabel(&p, "broken-a", "broken-a-away") && p11_logout(&p),
       "A: the key's label gone from the token, the login dropped");
    broken("A (missing)", "not found", a, g, alone);
    ok(p11_find_slot(&p, env.token)
       && p11_relabel(&p, "broken-a-away", "broken-a"), "A: label back");
    back("A (missing)", a, pub_a);

    /* B. replaced: another key under its label */
    ok(p11_find_slot(&p, env.token)
       && p11_relabel(&p, "broken-a", "broken-a-old")
       && p11_relabel(&p, "broken-b", "broken-a") && p11_logout(&p),
       "B: another key under the key's label, the login dropped");
    broken("B (replaced)", "no longer matches its certificate", a, g,
           alone);
    ok(p11_find_slot(&p, env.token)
       && p11_relabel(&p, "broken-a", "broken-b")
       && p11_relabel(&p, "broken-a-old", "broken-a"), "B: its key back");
    back("B (replaced)", a, pub_a);

    /* C. refused: the token does not sign with it */
    if (p11_find_slot(&p, env.token) && p11_set_sign(&p, "broken-a", 0)) {
        broken("C (refused)", "after a reopen", a, g, alone);
        ok(p11_find_slot(&p, env.token) && p11_set_sign(&p, "broken-a", 1),
           "C: signing allowed again");
        back("C (refused)", a, pub_a);

    } else {
        diag("C: the token does not let CKA_SIGN change: not tested");
    }

    ok(p11_find_slot(&p, env.token)
       && p11_destroy_label(&p, "broken-a") == 2
       && p11_destroy_label(&p, "broken-b") == 2,
       "the test's key pairs removed");

    pki_key_free(a);
    pki_key_free(g);
    pki_vault_free(v);
    EVP_PKEY_free(pub_a);
    dlclose(p.dl);

    return done_testing();
}
