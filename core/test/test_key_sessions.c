/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A token with a small session limit (YubiHSM2: 16) behind a large thread
 * pool: C_OpenSession answers CKR_SESSION_COUNT in a burst.  That is a
 * busy token, not a failing one: the signers wait for a session to come
 * back (PKI_UNAVAILABLE after about a second at most), the vault is never
 * reopened (every key's handles dropped) and the key takes no backoff.
 * The token is SoftHSM behind build/p11shim.so (core/test/p11_shim.c),
 * which refuses sessions beyond its limit and counts C_Initialize.
 */

#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "pki.h"
#include "test/unit.h"
#include "test/p11.h"


#define THREADS  32
#define ROUNDS   40
#define EXTRA    3          /* sessions allowed above the vault's own */


typedef void (*shim_set_max_pt)(long max);
typedef void (*shim_stats_pt)(long *open, long *peak, long *refused,
    long *inits);
typedef void (*shim_reset_peak_pt)(void);
typedef void (*shim_set_delay_pt)(long ms);

typedef struct {
    pki_key_t  *key;
    EVP_PKEY   *pub;
    int         rounds;
    int         good;
    int         busy;           /* PKI_UNAVAILABLE, the token busy */
    int         other;
    double      slowest;
    char        last[1400];
} lane_t;


static pthread_barrier_t  start;


static void *
lane(void *arg)
{
    int            i, verified;
    double         t0, dt;
    lane_t        *l = arg;
    pki_status_t   st;
    pki_result_t   res;

    pthread_barrier_wait(&start);

    for (i = 0; i < l->rounds; i++) {
        t0 = unit_now();
        st = p11_sign(l->key, l->pub, &verified, &res);
        dt = unit_now() - t0;

        if (dt > l->slowest) {
            l->slowest = dt;
        }

        if (st == PKI_OK && verified) {
            l->good++;

        } else if (st == PKI_UNAVAILABLE
                   && strstr(res.detail, "no free session") != NULL)
        {
            l->busy++;
            snprintf(l->last, sizeof(l->last), "%s (%s)", res.detail,
                     res.log);

        } else {
            l->other++;
            snprintf(l->last, sizeof(l->last), "status %d: %s (%s)",
                     (int) st, res.detail, res.log);
        }
    }

    return NULL;
}


/* THREADS lanes signing rounds times each with k, all started at once;
 * their counts summed into *sum (slowest: the largest). */
static void
run_lanes(lane_t *lanes, pki_key_t *k, int rounds, lane_t *sum)
{
    int        i;
    pthread_t  tids[THREADS];

    memset(lanes, 0, THREADS * sizeof(lane_t));
    memset(sum, 0, sizeof(lane_t));
    pthread_barrier_init(&start, NULL, THREADS);

    for (i = 0; i < THREADS; i++) {
        lanes[i].key = k;
        lanes[i].pub = pki_key_public(k);
        lanes[i].rounds = rounds;
        pthread_create(&tids[i], NULL, lane, &lanes[i]);
    }

    for (i = 0; i < THREADS; i++) {
        pthread_join(tids[i], NULL);
        sum->good += lanes[i].good;
        sum->busy += lanes[i].busy;
        sum->other += lanes[i].other;
        if (lanes[i].slowest > sum->slowest) {
            sum->slowest = lanes[i].slowest;
        }
    }

    pthread_barrier_destroy(&start);
}


int
main(void)
{
    int                  i, verified, good, busy, other, alive;
    unsigned             closed;
    long                 open0, peak, refused, inits0, inits, n, n2, i2;
    char                 exe[PATH_MAX], shim[PATH_MAX + 16];
    void                *dl;
    double               t0, dt, slowest;
    p11_t                p;
    lane_t               lanes[THREADS], sum;
    p11_env_t            e;
    pki_key_t           *k, *k2, *k3;
    p11_ulong            probe;
    pki_vault_t         *v;
    pki_status_t         st;
    pki_result_t         res;
    shim_stats_pt        stats;
    shim_set_max_pt      set_max;
    shim_reset_peak_pt   reset_peak;
    shim_set_delay_pt    set_delay;

    p11_env(&e, 0);

    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        skip_all("no /proc/self/exe");
    }
    exe[n] = '\0';
    snprintf(shim, sizeof(shim), "%s/p11shim.so", dirname(exe));

    if (access(shim, R_OK) != 0) {
        skip_all("no build/p11shim.so");
    }

    setenv("PKI_P11SHIM_MODULE", e.module, 1);
    unsetenv("PKI_P11SHIM_MAX_SESSIONS");

    /* the shim stays loaded (its counters with it) while the test runs */
    dl = dlopen(shim, RTLD_NOW | RTLD_LOCAL);
    stats = dl != NULL ? (shim_stats_pt) dlsym(dl, "p11shim_stats") : NULL;
    set_max = dl != NULL ? (shim_set_max_pt) dlsym(dl, "p11shim_set_max")
                         : NULL;
    reset_peak = dl != NULL
                 ? (shim_reset_peak_pt) dlsym(dl, "p11shim_reset_peak")
                 : NULL;

    set_delay = dl != NULL
                ? (shim_set_delay_pt) dlsym(dl, "p11shim_set_sign_delay")
                : NULL;

    if (!ok(stats != NULL && set_max != NULL && reset_peak != NULL
            && set_delay != NULL,
            "the shim module loads (%s)", shim))
    {
        return done_testing();
    }

    pki_result_init(&res);
    v = pki_vault_new("sessions", shim, e.token, e.pin_file, &res);
    if (!ok(v != NULL && pki_vault_open(v, &res) == PKI_OK,
            "vault opens through the shim [%s %s]", res.detail, res.log))
    {
        return done_testing();
    }

    pki_result_init(&res);
    k = pki_key_new(e.uri_ec, v, &res);
    if (!ok(k != NULL && pki_key_open(k, &res) == PKI_OK,
            "the EC key opens [%s %s]", res.detail, res.log))
    {
        return done_testing();
    }

    st = p11_sign(k, pki_key_public(k), &verified, &res);
    ok(st == PKI_OK && verified, "a first signature [%s %s]", res.detail,
       res.log);

    /* a session with a find left open, on SoftHSM itself (not counted by
     * the shim): alive until the module is finalised */
    probe = 0;
    if (ok(p11_load(&p, e.module, e.token), "SoftHSM's module")) {
        probe = p11_probe_arm(&p);
    }
    ok(probe != 0 && p11_probe_alive(&p, probe), "the probe is armed");

    stats(&open0, &peak, &refused, &inits0);
    diag("the vault holds %ld sessions, limit %ld", open0, open0 + EXTRA);
    set_max(open0 + EXTRA);
    reset_peak();

    /* the burst */
    run_lanes(lanes, k, ROUNDS, &sum);
    good = sum.good;
    busy = sum.busy;
    other = sum.other;
    slowest = sum.slowest;

    stats(&n, &peak, &refused, &inits);

    diag("%d signatures: %d good, %d busy, %d other; slowest %.3f s; "
         "%ld sessions refused, at most %ld open", THREADS * ROUNDS, good,
         busy, other, slowest, refused, peak);

    ok(refused > 0, "the token ran out of sessions (%ld refused)", refused);
    ok(peak <= open0 + EXTRA, "never more than the limit open (%ld)", peak);
    ok(good > 0, "signatures went through (%d)", good);

    for (i = 0; i < THREADS; i++) {
        if (lanes[i].other > 0) {
            diag("lane %d: %s", i, lanes[i].last);
            break;
        }
    }

    for (i = 0; i < THREADS; i++) {
        if (lanes[i].busy > 0) {
            diag("busy, lane %d: %s", i, lanes[i].last);
            break;
        }
    }

    ok(other == 0, "every signature good or busy (%d neither)", other);
    ok(good + busy == THREADS * ROUNDS, "all %d accounted for",
       THREADS * ROUNDS);
    ok(slowest < 3.0, "no signer waited long (%.3f s)", slowest);
    ok(inits == inits0, "the vault was not reopened (C_Initialize %ld, "
       "was %ld)", inits, inits0);

    alive = probe != 0 && p11_probe_alive(&p, probe);
    ok(alive, "the module was not finalised (the probe)");

    /* no backoff: the next signature goes through at once */
    t0 = unit_now();
    st = p11_sign(k, pki_key_public(k), &verified, &res);
    ok(st == PKI_OK && verified, "a signature right after [%s %s]",
       res.detail, res.log);
    ok(unit_now() - t0 < 0.5, "at once (%.3f s)", unit_now() - t0);

    /* after the burst the pool holds a session per signer that was busy
     * at once; those idle past the vault's limit are closed as the key's
     * signers put theirs back, down to what one signer at a time uses */
    stats(&n, &peak, &refused, &inits);
    diag("after the burst: %ld sessions open", n);
    ok(n > open0 + 1, "the burst left pooled sessions open (%ld)", n);

    /* a worker that signs nothing after the burst: a pool thread's trim
     * gives the idle ones back to the token, without a signature */
    ok(pki_vault_idle_due(v) == 0, "none idle 30 s yet: no trim due");
    pki_vault_session_idle(v, 200);
    usleep(300 * 1000);
    ok(pki_vault_idle_due(v) == 1, "idle 200 ms: a trim is due");
    closed = pki_vault_trim_idle(v);
    stats(&n2, &peak, &refused, &inits);
    diag("the trim closed %u: %ld sessions open", closed, n2);
    ok(n2 <= open0, "the idle ones were closed with no signature: %ld "
       "open, as before the burst (%ld)", n2, open0);
    ok((long) closed == n - n2, "it says how many (%u, %ld fewer open)",
       closed, n - n2);
    ok(pki_vault_idle_due(v) == 0, "no trim due after it");
    ok(pki_vault_trim_idle(v) == 0, "a second trim closes nothing");
    st = p11_sign(k, pki_key_public(k), &verified, &res);
    ok(st == PKI_OK && verified, "the key signs after the trim [%s %s]",
       res.detail, res.log);
    pki_vault_session_idle(v, 30000);

    /* another burst, for the trim of a signature's own session_put (a
     * set-up step: on a loaded machine the lanes of a short burst may
     * not overlap, so up to 5 bursts until two sessions were in use) */
    for (i = 0; i < 5; i++) {
        run_lanes(lanes, k, ROUNDS / 4, &sum);
        stats(&n, &peak, &refused, &inits);
        if (sum.good > 0 && n > open0 + 1) {
            break;
        }
    }
    ok(sum.good > 0 && n > open0 + 1, "another burst left pooled "
       "sessions open (%ld, after %d burst(s))", n, i + (i < 5));
    pki_vault_session_idle(v, 200);
    usleep(300 * 1000);
    for (i = 0; i < 8; i++) {
        st = p11_sign(k, pki_key_public(k), &verified, &res);
        if (st != PKI_OK || !verified) {
            break;
        }
    }
    stats(&n2, &peak, &refused, &inits);
    ok(i == 8, "8 signatures one at a time [%s %s]", res.detail, res.log);
    ok(n2 <= open0, "the idle ones were closed: %ld open, as before the "
       "burst (%ld)", n2, open0);
    pki_vault_session_idle(v, 30000);

    /* a slow token that gives no new session: the key's pooled sessions
     * serve in turn, and who waits longer than about a second is told
     * the token is busy */
    stats(&n, &peak, &refused, &inits);
    set_max(n);
    set_delay(250);

    t0 = unit_now();
    run_lanes(lanes, k, 1, &sum);
    good = sum.good;
    busy = sum.busy;
    other = sum.other;
    slowest = sum.slowest;
    set_delay(0);

    diag("slow, no new session: %d good, %d busy, %d other; slowest "
         "%.3f s, all in %.3f s", good, busy, other, slowest,
         unit_now() - t0);

    for (i = 0; i < THREADS; i++) {
        if (lanes[i].other + lanes[i].busy > 0) {
            diag("lane %d: %s", i, lanes[i].last);
            break;
        }
    }

    ok(good > 0, "the pooled sessions signed (%d)", good);
    ok(busy > 0, "the others were told the token is busy (%d)", busy);
    ok(other == 0, "nothing else (%d)", other);
    ok(slowest >= 0.9 && slowest < 2.5, "after about a second (%.3f s)",
       slowest);

    t0 = unit_now();
    st = p11_sign(k, pki_key_public(k), &verified, &res);
    dt = unit_now() - t0;
    ok(st == PKI_OK && verified, "a signature right after [%s %s]",
       res.detail, res.log);
    ok(dt < 0.5, "at once, no backoff (%.3f s)", dt);

    /* a second key object (no session of its own) opened while the token
     * gives no new session: the first key's idle pooled sessions are the
     * token's, and one of them is closed to make room (before, one key's
     * idle pool kept another key out for good) */
    stats(&n, &peak, &refused, &inits);
    set_max(n);
    pki_result_init(&res);
    k2 = pki_key_new(e.uri_ec, v, &res);
    t0 = unit_now();
    st = k2 != NULL ? pki_key_open(k2, &res) : PKI_INTERNAL;
    dt = unit_now() - t0;
    ok(st == PKI_OK, "another key opens on a full token: an idle session "
       "of the first made room [%s %s]", res.detail, res.log);
    ok(dt < 0.5, "at once (%.3f s)", dt);
    st = k2 != NULL ? p11_sign(k2, pki_key_public(k), &verified, &res)
                    : PKI_INTERNAL;
    ok(st == PKI_OK && verified, "and signs [%s %s]", res.detail, res.log);

    /* a third opened with no session to be had anywhere (the limit under
     * what the vault itself holds: the idle ones of both keys are closed,
     * and still none opens): its test signature under the write lock is
     * busy at once, not a failed lookup */
    set_max(1);
    pki_result_init(&res);
    k3 = pki_key_new(e.uri_ec, v, &res);
    t0 = unit_now();
    st = k3 != NULL ? pki_key_open(k3, &res) : PKI_INTERNAL;
    dt = unit_now() - t0;
    diag("open without a session: status %d in %.3f s: %s (%s)", (int) st,
         dt, res.detail, res.log);
    ok(st == PKI_UNAVAILABLE && strstr(res.log, "no free session") != NULL,
       "an open without a session anywhere is refused as busy");
    ok(dt < 0.5, "at once, under the write lock (%.3f s)", dt);

    /* its signer fetches it once (busy: 503), and the next signer within
     * the second does not take the write lock for another try */
    st = k3 != NULL ? p11_sign(k3, pki_key_public(k), &verified, &res)
                    : PKI_INTERNAL;
    ok(st == PKI_UNAVAILABLE, "a signature with it: 503 [%s %s]",
       res.detail, res.log);
    stats(&n, &peak, &refused, &inits);
    st = k3 != NULL ? p11_sign(k3, pki_key_public(k), &verified, &res)
                    : PKI_INTERNAL;
    stats(&n, &peak, &i2, &inits);
    ok(st == PKI_UNAVAILABLE && strstr(res.log, "next try in") != NULL
       && i2 == refused,
       "the next within the second: 503 without another fetch (sessions "
       "refused %ld, then %ld) [%s %s]", refused, i2, res.detail, res.log);

    set_max(0);
    usleep(1100 * 1000);

    st = k3 != NULL ? p11_sign(k3, pki_key_public(k), &verified, &res)
                    : PKI_INTERNAL;
    ok(st == PKI_OK && verified, "it signs once the token has sessions "
       "[%s %s]", res.detail, res.log);

    stats(&n, &peak, &refused, &inits);
    ok(inits == inits0, "still no reopen (C_Initialize %ld)", inits);
    ok(probe != 0 && p11_probe_alive(&p, probe), "the probe is alive");

    if (probe != 0) {
        (void) p.find_final(probe);
        (void) p.close(probe);
    }

    pki_key_free(k3);
    pki_key_free(k2);
    pki_key_free(k);
    pki_vault_free(v);

    return done_testing();
}
