/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A token key's own backoff (key.c, pki_key_gate) starts only for what is
 * the key's, and only a success that began after it ends it.  With the
 * RSA key of the token and test/p11.h's faults (libp11's C_Sign answers
 * CKR_DEVICE_ERROR, or waits):
 *   A. the vault is closed (by a token fault, or anyone), and the next
 *      signer of the key happens to be the one that opens it again; its
 *      signature then meets one device error.  That open was not made for
 *      the key: the error gets a reopen of its own, and the key signs.
 *      Before, the key went into its own backoff for 100 ms;
 *   B. a key that fails again after a reopen made for it still goes into
 *      its backoff, saying so;
 *   C. a signature in flight when another signer's failure starts the
 *      key's backoff succeeds: the backoff stands (the next signer is
 *      answered at once), and the try after it that fails again doubles
 *      it to 200 ms.  Before, the late success ended the backoff: the
 *      doubling was lost and the next failure reopened the vault again.
 * Environment as for test_key.c; without it the test skips.
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "pki.h"
#include "test/unit.h"
#include "test/p11.h"


static p11_t      p;
static p11_env_t  env;


/*
 * CLOCK_MONOTONIC as the core sees it (pki_int_now(), the clock of the
 * backoffs; libpkicore.so binds to this definition, as to test/clock.h's
 * time()): mono_back seconds behind the real one.  C asks whether the
 * backoff stands "right after" it began, however long the signature in
 * flight took meanwhile (Valgrind, a loaded machine): the clock is set
 * back by that time for the one question.
 */
static volatile double  mono_back;


static double
mono_real(void)
{
    struct timespec  ts;

    syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);

    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}


__attribute__((visibility("default"))) int
clock_gettime(clockid_t id, struct timespec *ts)
{
    double  t;

    if (syscall(SYS_clock_gettime, id, ts) != 0) {
        return -1;
    }

    if (id == CLOCK_MONOTONIC && mono_back > 0) {
        t = (double) ts->tv_sec + (double) ts->tv_nsec / 1e9 - mono_back;
        ts->tv_sec = (time_t) t;
        ts->tv_nsec = (long) ((t - (double) ts->tv_sec) * 1e9);
    }

    return 0;
}


typedef struct {
    pki_key_t     *key;
    pki_status_t   st;
    char           log[PKI_LOG_LEN];
} late_t;


static void *
late_signer(void *arg)
{
    late_t        *l = arg;
    pki_result_t   res;

    l->st = p11_sign(l->key, NULL, NULL, &res);
    snprintf(l->log, sizeof(l->log), "%s", res.log);

    return NULL;
}


/* Signs with k until it works again (its backoff over), at most 5 s. */
static int
recovers(pki_key_t *k)
{
    double        t0;
    pki_result_t  res;

    t0 = unit_now();
    while (p11_sign(k, NULL, NULL, &res) != PKI_OK) {
        if (unit_now() - t0 > 5) {
            return 0;
        }
        usleep(20000);
    }

    return 1;
}


int
main(void)
{
    int            inits;
    double         took, m0;
    late_t         l;
    pthread_t      t;
    pki_key_t     *k;
    pki_status_t   st;
    pki_vault_t   *v;
    pki_result_t   res;

    k = p11_fault_start(&env, &p, "backoff", 1, &v);
    if (k == NULL || !ok(p11_sign(k, NULL, NULL, &res) == PKI_OK,
                         "the RSA key signs [%s]", res.log))
    {
        return done_testing();
    }

    /* A. the open was not for the key */
    pki_vault_close(v);
    p11_fault_set(1, P11_CKR_DEVICE_ERROR, 0);
    inits = p11_fault_inits();
    st = p11_sign(k, NULL, NULL, &res);
    inits = p11_fault_inits() - inits;
    ok(st == PKI_OK, "A: after an open of the vault that was not for the "
       "key, one device error: it signs (%s, %d opens) [%s]",
       pki_status_name(st), inits, res.log);
    ok(strstr(res.log, "is not used for") == NULL,
       "A: no backoff of its own");
    st = p11_sign(k, NULL, NULL, &res);
    ok(st == PKI_OK, "A: and signs next (%s) [%s]", pki_status_name(st),
       res.log);
    p11_fault_set(0, 0, 0);
    ok(recovers(k), "A: the key works");

    /* B. it fails again after a reopen for it */
    p11_fault_set(1000000, P11_CKR_DEVICE_ERROR, 0);
    inits = p11_fault_inits();
    st = p11_sign(k, NULL, NULL, &res);
    inits = p11_fault_inits() - inits;
    ok(st == PKI_UNAVAILABLE
       && strstr(res.log, "is not used for 100 ms") != NULL
       && strstr(res.log, "after a reopen of the vault for it") != NULL,
       "B: failing again after a reopen for it, the key's backoff (%s, %d "
       "reopens) [%s]", pki_status_name(st), inits, res.log);
    ok(inits == 1, "B: one reopen (%d)", inits);
    p11_fault_set(0, 0, 0);
    ok(recovers(k), "B: back after its backoff");

    /* C. a success that began before the backoff */
    p11_fault_set(1, P11_CKR_DEVICE_ERROR, 1);
    memset(&l, 0, sizeof(l));
    l.key = k;
    pthread_create(&t, NULL, late_signer, &l);
    p11_fault_wait_held(1);

    /* the late signer failed once, reopened the vault for the key, and
     * now signs in the new generation (held): this signer fails there */
    p11_fault_set(1, P11_CKR_DEVICE_ERROR, 0);
    st = p11_sign(k, NULL, NULL, &res);
    m0 = mono_real();
    ok(st == PKI_UNAVAILABLE
       && strstr(res.log, "is not used for 100 ms") != NULL,
       "C: a failure after the reopen for the key: its backoff (%s) [%s]",
       pki_status_name(st), res.log);

    p11_fault_release();
    pthread_join(t, NULL);
    ok(l.st == PKI_OK, "C: the signature in flight succeeds (%s) [%s]",
       pki_status_name(l.st), l.log);

    /* asked within the backoff, always: a try after it would reopen,
     * sign and end it, so the core's clock is set back to the moment the
     * backoff began (mono_back) for this one question */
    took = mono_real() - m0;
    mono_back = took;
    st = p11_sign(k, NULL, NULL, &res);
    mono_back = 0;
    ok(st == PKI_UNAVAILABLE && strstr(res.log, "next try in") != NULL,
       "C: the backoff stands after that success (%s; asked %.3f s after "
       "it began, the clock set back by that) [%s]", pki_status_name(st),
       took, res.log);

    /* the try after the backoff fails again: it doubles */
    usleep(150000);
    p11_fault_set(1000000, P11_CKR_DEVICE_ERROR, 0);
    st = p11_sign(k, NULL, NULL, &res);
    ok(st == PKI_UNAVAILABLE
       && strstr(res.log, "is not used for 200 ms") != NULL,
       "C: the next failing try doubles the backoff (%s) [%s]",
       pki_status_name(st), res.log);
    p11_fault_set(0, 0, 0);
    ok(recovers(k), "C: back after its backoff");

    pki_key_free(k);
    pki_vault_free(v);
    dlclose(p.dl);

    return done_testing();
}
