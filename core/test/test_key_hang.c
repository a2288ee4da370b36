/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A token that stops answering: PKCS#11 cannot cancel a call, so the
 * vault's watchdog (pki_vault_call_timeout) makes the vault hung once a
 * call has been in flight that long.  Its keys then answer PKI_UNAVAILABLE
 * at once, without a token call, and pki_key_hung() tells the event loop
 * so before it posts work; when the call returns, they sign again.  The
 * token is SoftHSM behind build/p11shim.so, whose C_Sign is made slow.
 */

#include <dlfcn.h>
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


typedef void (*shim_set_delay_pt)(long ms);
typedef void (*shim_stats_pt)(long *open, long *peak, long *refused,
    long *inits);

typedef struct {
    pki_key_t     *key;
    pki_status_t   st;
    int            verified;
    double         dt;
    pki_result_t   res;
} slow_t;


static void *
slow_sign(void *arg)
{
    double   t0;
    slow_t  *s = arg;

    t0 = unit_now();
    s->st = p11_sign(s->key, pki_key_public(s->key), &s->verified, &s->res);
    s->dt = unit_now() - t0;

    return NULL;
}


int
main(void)
{
    int                 verified;
    long                n, age, hung, inits0, inits, x;
    char                exe[PATH_MAX], shim[PATH_MAX + 16];
    void               *dl;
    double              t0, dt;
    slow_t              s;
    p11_env_t           e;
    pki_key_t          *k;
    pthread_t           th;
    pki_vault_t        *v;
    pki_status_t        st;
    pki_result_t        res;
    shim_stats_pt       stats;
    shim_set_delay_pt   set_delay;

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
    unsetenv("PKI_P11SHIM_HANG_FILE");

    dl = dlopen(shim, RTLD_NOW | RTLD_LOCAL);
    set_delay = dl != NULL
                ? (shim_set_delay_pt) dlsym(dl, "p11shim_set_sign_delay")
                : NULL;
    stats = dl != NULL ? (shim_stats_pt) dlsym(dl, "p11shim_stats") : NULL;

    if (!ok(set_delay != NULL && stats != NULL, "the shim module loads (%s)",
            shim))
    {
        return done_testing();
    }

    pki_result_init(&res);
    v = pki_vault_new("hang", shim, e.token, e.pin_file, &res);
    if (!ok(v != NULL && pki_vault_open(v, &res) == PKI_OK,
            "vault opens through the shim [%s %s]", res.detail, res.log))
    {
        return done_testing();
    }

    pki_vault_call_timeout(v, 300);

    pki_result_init(&res);
    k = pki_key_new(e.uri_ec, v, &res);
    if (!ok(k != NULL && pki_key_open(k, &res) == PKI_OK,
            "the EC key opens [%s %s]", res.detail, res.log))
    {
        return done_testing();
    }

    ok(pki_key_hung(k) == 0 && pki_vault_call_age(v) == 0,
       "idle: not hung, nothing in flight");
    ok(pki_key_hung(NULL) == 0, "no key: not hung");

    st = p11_sign(k, pki_key_public(k), &verified, &res);
    ok(st == PKI_OK && verified, "a first signature [%s %s]", res.detail,
       res.log);
    ok(pki_vault_call_age(v) == 0, "nothing in flight after it");

    /* a C_Sign that takes 1.2 s */
    stats(&x, &x, &x, &inits0);
    set_delay(1200);
    memset(&s, 0, sizeof(s));
    s.key = k;
    pki_result_init(&s.res);

    if (!ok(pthread_create(&th, NULL, slow_sign, &s) == 0, "slow signer")) {
        return done_testing();
    }

    usleep(100 * 1000);
    age = pki_vault_call_age(v);
    ok(age >= 50 && age < 300, "a call in flight for %ld ms", age);
    ok(pki_key_hung(k) == 0, "before call_timeout: not hung");

    usleep(350 * 1000);
    hung = pki_key_hung(k);
    ok(hung >= 300, "after call_timeout: hung (%ld ms)", hung);
    ok(pki_vault_hung(v) >= 300, "the vault says so too");

    t0 = unit_now();
    st = p11_sign(k, pki_key_public(k), &verified, &res);
    dt = unit_now() - t0;
    ok(st == PKI_UNAVAILABLE, "a signature while hung: PKI_UNAVAILABLE "
       "[%s %s]", res.detail, res.log);
    ok(dt < 0.05, "at once (%.3f s), not after the slow call", dt);
    ok(strstr(res.detail, "is hung: a call in flight for") != NULL
       && strstr(res.detail, "vault \"hang\"") != NULL,
       "the detail names the vault and the hang [%s]", res.detail);

    pthread_join(th, NULL);
    ok(s.st == PKI_OK && s.verified, "the slow call returns its signature "
       "(%.3f s) [%s %s]", s.dt, s.res.detail, s.res.log);

    set_delay(0);
    ok(pki_key_hung(k) == 0 && pki_vault_call_age(v) == 0,
       "it returned: not hung");

    st = p11_sign(k, pki_key_public(k), &verified, &res);
    ok(st == PKI_OK && verified, "signs again [%s %s]", res.detail, res.log);

    stats(&x, &x, &x, &inits);
    ok(inits == inits0, "no reopen of the vault for the hang (C_Initialize "
       "%ld, was %ld)", inits, inits0);

    /* call_timeout 0: no limit */
    pki_vault_call_timeout(v, 0);
    set_delay(500);
    memset(&s, 0, sizeof(s));
    s.key = k;
    pki_result_init(&s.res);

    if (ok(pthread_create(&th, NULL, slow_sign, &s) == 0, "slow signer")) {
        usleep(300 * 1000);
        ok(pki_vault_call_age(v) >= 200 && pki_key_hung(k) == 0,
           "call_timeout 0: a call in flight, never hung");
        pthread_join(th, NULL);
        ok(s.st == PKI_OK, "its signature [%s]", s.res.detail);
    }

    set_delay(0);

    pki_key_free(k);
    pki_vault_free(v);

    return done_testing();
}
