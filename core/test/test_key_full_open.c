/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A vault opened while its token has one free session: the vault's login
 * session takes it, and libp11 0.4.12, asked to list the keys with none
 * left, took CKR_SESSION_COUNT for its limit and waited for ever for a
 * session of its own that it never had (the open, `nginx -t`, a worker's
 * start and a vault's reopen after a token error hung, holding the
 * process-wide PKCS#11 lock).  The open must answer busy at once, and
 * open once sessions are free again.  Each case runs in a child of its
 * own, under an alarm: libp11's state is per process, and a hang is a
 * failed check, not a stuck suite.  The token is SoftHSM behind
 * build/p11shim.so (core/test/p11_shim.c), which refuses sessions beyond
 * PKI_P11SHIM_MAX_SESSIONS.
 */

#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pki.h"
#include "test/unit.h"
#include "test/p11.h"


#define HANG_S  20


typedef void (*shim_set_max_pt)(long max);


/* Child: the vault opens with the token limited to one session; with
 * lift, the limit is then lifted and the vault opens and its EC key
 * signs.  Exit 0 when all went as it should; the detail on stderr. */
static int
child(p11_env_t *e, const char *shim, int lift)
{
    int               verified;
    void             *dl;
    double            t0, dt;
    pki_key_t        *k;
    pki_vault_t      *v;
    pki_status_t      st;
    pki_result_t      res;
    shim_set_max_pt   set_max;

    alarm(HANG_S);

    setenv("PKI_P11SHIM_MODULE", e->module, 1);
    setenv("PKI_P11SHIM_MAX_SESSIONS", "1", 1);

    pki_result_init(&res);
    v = pki_vault_new("full", shim, e->token, e->pin_file, &res);
    if (v == NULL) {
        fprintf(stderr, "vault_new: %s\n", res.detail);
        return 2;
    }

    t0 = unit_now();
    st = pki_vault_open(v, &res);
    dt = unit_now() - t0;

    fprintf(stderr, "open with one session: status %d in %.3f s: %s (%s)\n",
            (int) st, dt, res.detail, res.log);

    if (st != PKI_UNAVAILABLE || dt > 5.0) {
        return 3;
    }

    if (!lift) {
        pki_vault_free(v);
        return 0;
    }

    dl = dlopen(shim, RTLD_NOW | RTLD_LOCAL);
    set_max = dl != NULL ? (shim_set_max_pt) dlsym(dl, "p11shim_set_max")
                         : NULL;
    if (set_max == NULL) {
        fprintf(stderr, "no p11shim_set_max\n");
        return 4;
    }

    /* the shim reads the variable again at each C_Initialize (the
     * failed open finalised the module) */
    unsetenv("PKI_P11SHIM_MAX_SESSIONS");
    set_max(0);

    pki_result_init(&res);
    st = pki_vault_open(v, &res);
    fprintf(stderr, "open with the limit lifted: status %d: %s (%s)\n",
            (int) st, res.detail, res.log);
    if (st != PKI_OK) {
        return 5;
    }

    pki_result_init(&res);
    k = pki_key_new(e->uri_ec, v, &res);
    if (k == NULL || pki_key_open(k, &res) != PKI_OK) {
        fprintf(stderr, "key: %s (%s)\n", res.detail, res.log);
        return 6;
    }

    st = p11_sign(k, pki_key_public(k), &verified, &res);
    fprintf(stderr, "sign: status %d verified %d: %s\n", (int) st, verified,
            res.detail);

    pki_key_free(k);
    pki_vault_free(v);
    dlclose(dl);

    return st == PKI_OK && verified ? 0 : 7;
}


/* Runs child(lift) in a process of its own; its exit status, or 128 +
 * the signal that ended it (SIGALRM: it hung). */
static int
run(p11_env_t *e, const char *shim, int lift)
{
    int    status;
    pid_t  pid;

    fflush(NULL);

    pid = fork();
    if (pid == 0) {
        _exit(child(e, shim, lift));
    }

    if (pid < 0 || waitpid(pid, &status, 0) != pid) {
        return -1;
    }

    return WIFEXITED(status) ? WEXITSTATUS(status)
                             : 128 + WTERMSIG(status);
}


int
main(void)
{
    int        rc;
    long       n;
    char       exe[PATH_MAX], shim[PATH_MAX + 16];
    p11_env_t  e;

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

    rc = run(&e, shim, 0);
    ok(rc == 0, "a vault opened on a token with one free session answers "
       "busy at once (child: %d%s)", rc,
       rc == 128 + SIGALRM ? ", hung" : "");

    rc = run(&e, shim, 1);
    ok(rc == 0, "... and opens and signs once sessions are free (child: "
       "%d%s)", rc, rc == 128 + SIGALRM ? ", hung" : "");

    return done_testing();
}
