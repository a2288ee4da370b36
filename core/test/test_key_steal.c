/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The instant between the core's probe session and libp11's own
 * C_OpenSession: before libp11 lists a token's keys for the first time
 * after the module is loaded (a vault's open or reopen), the core opens a
 * session and closes it, so that a token with none free answers busy at
 * once (test_key_full_open.c).  Another process can take the session
 * freed in that instant; libp11 0.4.12 then takes CKR_SESSION_COUNT for
 * its session limit (zero: it holds none yet) and waits for ever for a
 * session of its own, with the vault's write lock and the process-wide
 * PKCS#11 lock held: the open, `nginx -t`, a worker's start or a pool
 * thread's reopen never returned.  The token here is SoftHSM behind
 * build/p11shim.so, whose p11shim_set_steal() refuses libp11's next
 * C_OpenSession (not the core's) as that other process would.  What must
 * hold: the open answers PKI_UNAVAILABLE within the vault's call timeout
 * plus a margin, saying why; the vault then opens (the module loaded
 * again) and its keys sign, through the lean path (EC) and through libp11
 * (RSA), and decrypt.  Each case runs in a child of its own under an
 * alarm: a hang is a failed check, not a stuck suite.
 */

#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "pki.h"
#include "test/unit.h"
#include "test/p11.h"


#define HANG_S      20
#define TIMEOUT_MS  1000


typedef void (*shim_set_steal_pt)(long n, long *stolen);
typedef void (*shim_set_steal_rv_pt)(unsigned long rv);


/* An RSA round trip through the token: PKCS#1 v1.5 to the key's public
 * key, decrypted by the key.  1 when the plaintext came back. */
static int
rsa_round(pki_key_t *k, pki_result_t *res)
{
    int             rc;
    size_t          ctlen, n;
    EVP_PKEY_CTX   *c;
    unsigned char   ct[512], *pt;
    static const unsigned char  msg[] = "steal";

    ctlen = sizeof(ct);
    c = EVP_PKEY_CTX_new(pki_key_public(k), NULL);
    rc = c != NULL && EVP_PKEY_encrypt_init(c) == 1
         && EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) == 1
         && EVP_PKEY_encrypt(c, ct, &ctlen, msg, sizeof(msg) - 1) == 1;
    EVP_PKEY_CTX_free(c);

    if (!rc) {
        return 0;
    }

    pt = NULL;
    n = 0;
    pki_result_init(res);
    rc = pki_key_decrypt(k, ct, ctlen, &pt, &n, res) == PKI_OK
         && n == sizeof(msg) - 1 && memcmp(pt, msg, n) == 0;
    free(pt);

    return rc;
}


/* Child: libp11's first C_OpenSession of the vault's open is taken; then
 * the vault opens and its keys work.  Exit 0 when all went as it should;
 * the detail on stderr. */
static int
child(p11_env_t *e, const char *shim, unsigned long rv)
{
    int                 verified;
    long                stolen;
    void               *dl;
    double              t0, dt;
    pki_key_t          *k, *r;
    pki_vault_t        *v;
    pki_status_t        st;
    pki_result_t        res;
    shim_set_steal_pt      set_steal;
    shim_set_steal_rv_pt   set_steal_rv;

    alarm(HANG_S);

    setenv("PKI_P11SHIM_MODULE", e->module, 1);
    unsetenv("PKI_P11SHIM_MAX_SESSIONS");

    /* the copy of the shim that libp11 loads (same path, same copy) */
    dl = dlopen(shim, RTLD_NOW | RTLD_LOCAL);
    set_steal = dl != NULL ? (shim_set_steal_pt) dlsym(dl, "p11shim_set_steal")
                           : NULL;
    set_steal_rv = dl != NULL
                   ? (shim_set_steal_rv_pt) dlsym(dl, "p11shim_set_steal_rv")
                   : NULL;
    if (set_steal == NULL || set_steal_rv == NULL) {
        fprintf(stdout, "# no p11shim_set_steal\n");
        return 2;
    }

    set_steal_rv(rv);

    pki_result_init(&res);
    v = pki_vault_new("steal", shim, e->token, e->pin_file, &res);
    if (v == NULL) {
        fprintf(stdout, "# vault_new: %s\n", res.detail);
        return 2;
    }

    pki_vault_call_timeout(v, TIMEOUT_MS);

    set_steal(1, NULL);

    t0 = unit_now();
    st = pki_vault_open(v, &res);
    dt = unit_now() - t0;
    set_steal(-1, &stolen);

    fprintf(stdout, "# open with libp11's C_OpenSession refused (CKR "
            "0x%lx): status %d in %.3f s (%ld refused): %s (%s)\n", rv,
            (int) st, dt, stolen, res.detail, res.log);

    if (stolen != 1) {
        fprintf(stdout, "# libp11 opened no session of its own\n");
        return 3;
    }

    if (st != PKI_UNAVAILABLE || dt > TIMEOUT_MS / 1000.0 + 4.0
        || strstr(res.detail, "session") == NULL)
    {
        return 4;
    }

    set_steal(0, NULL);

    pki_result_init(&res);
    st = pki_vault_open(v, &res);
    fprintf(stdout, "# open again: status %d: %s (%s)\n", (int) st,
            res.detail, res.log);
    if (st != PKI_OK) {
        return 5;
    }

    pki_result_init(&res);
    k = pki_key_new(e->uri_ec, v, &res);
    if (k == NULL || pki_key_open(k, &res) != PKI_OK) {
        fprintf(stdout, "# EC key: %s (%s)\n", res.detail, res.log);
        return 6;
    }

    st = p11_sign(k, pki_key_public(k), &verified, &res);
    fprintf(stdout, "# EC sign: status %d verified %d: %s\n", (int) st,
            verified, res.detail);
    if (st != PKI_OK || !verified) {
        return 7;
    }

    r = NULL;

    if (e->uri_rsa != NULL) {
        pki_result_init(&res);
        r = pki_key_new(e->uri_rsa, v, &res);
        if (r == NULL || pki_key_open(r, &res) != PKI_OK) {
            fprintf(stdout, "# RSA key: %s (%s)\n", res.detail, res.log);
            return 8;
        }

        st = p11_sign(r, pki_key_public(r), &verified, &res);
        fprintf(stdout, "# RSA sign: status %d verified %d: %s\n", (int) st,
                verified, res.detail);
        if (st != PKI_OK || !verified) {
            return 9;
        }

        if (!rsa_round(r, &res)) {
            fprintf(stdout, "# RSA decrypt: %s (%s)\n", res.detail, res.log);
            return 10;
        }
    }

    pki_key_free(r);
    pki_key_free(k);
    pki_vault_free(v);

    return 0;
}


/* Two vaults of the module open at once while libp11's listing of the
 * first is left waiting: the second, queued behind the first's wait on
 * the same module instance, must not start a listing of its own there
 * (libp11 would wait again: the slot's session limit is zero now), but
 * answer busy as soon as the first gives up. */

typedef struct {
    pki_vault_t   *v;
    pki_status_t   st;
    double         end;
    char           detail[PKI_DETAIL_LEN];
} opener_t;


static void *
opener(void *arg)
{
    opener_t      *o = arg;
    pki_result_t   res;

    pki_result_init(&res);
    o->st = pki_vault_open(o->v, &res);
    o->end = unit_now();
    snprintf(o->detail, sizeof(o->detail), "%s", res.detail);

    return NULL;
}


static int
child_two(p11_env_t *e, const char *shim)
{
    void               *dl;
    double              gap;
    opener_t            a, b;
    pthread_t           ta, tb;
    pki_result_t        res;
    shim_set_steal_pt   set_steal;

    alarm(HANG_S);

    setenv("PKI_P11SHIM_MODULE", e->module, 1);
    unsetenv("PKI_P11SHIM_MAX_SESSIONS");

    dl = dlopen(shim, RTLD_NOW | RTLD_LOCAL);
    set_steal = dl != NULL ? (shim_set_steal_pt) dlsym(dl, "p11shim_set_steal")
                           : NULL;
    if (set_steal == NULL) {
        return 2;
    }

    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    pki_result_init(&res);
    a.v = pki_vault_new("steal-a", shim, e->token, e->pin_file, &res);
    b.v = pki_vault_new("steal-b", shim, e->token, e->pin_file, &res);
    if (a.v == NULL || b.v == NULL) {
        return 2;
    }

    pki_vault_call_timeout(a.v, TIMEOUT_MS);
    pki_vault_call_timeout(b.v, TIMEOUT_MS);

    set_steal(1, NULL);

    pthread_create(&ta, NULL, opener, &a);
    usleep(TIMEOUT_MS * 300);          /* a waits for its listing */
    pthread_create(&tb, NULL, opener, &b);

    pthread_join(ta, NULL);
    pthread_join(tb, NULL);

    gap = b.end - a.end;

    fprintf(stdout, "# two vaults: a %d (%s), b %d %.3f s after a "
            "(%s)\n", (int) a.st, a.detail, (int) b.st, gap, b.detail);

    if (a.st != PKI_UNAVAILABLE || b.st != PKI_UNAVAILABLE) {
        return 3;
    }

    if (gap > TIMEOUT_MS / 2000.0) {
        return 4;                   /* b waited for a listing of its own */
    }

    set_steal(0, NULL);

    pki_result_init(&res);
    if (pki_vault_open(b.v, &res) != PKI_OK) {
        fprintf(stdout, "# b again: %s\n", res.detail);
        return 5;
    }

    pki_vault_free(a.v);
    pki_vault_free(b.v);

    return 0;
}


/* Runs child() in a process of its own; its exit status, or 128 + the
 * signal that ended it (SIGALRM: it hung). */
static int
run(p11_env_t *e, const char *shim, unsigned long rv)
{
    int    status;
    pid_t  pid;

    fflush(NULL);

    pid = fork();
    if (pid == 0) {
        status = rv != 0 ? child(e, shim, rv) : child_two(e, shim);
        fflush(NULL);
        _exit(status);
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

    rc = run(&e, shim, 0xb1);
    ok(rc == 0, "a vault whose libp11 session is taken in the instant "
       "after the probe answers busy within its call timeout, then opens, "
       "signs and decrypts (child: %d%s)", rc,
       rc == 128 + SIGALRM ? ", hung" : "");

    /* libp11 0.4.12 waits the same for any C_OpenSession that fails
     * while it holds no session: a token pulled in that instant */
    rc = run(&e, shim, 0x32);
    ok(rc == 0, "... and so does one whose token is pulled in that "
       "instant (CKR_DEVICE_REMOVED) (child: %d%s)", rc,
       rc == 128 + SIGALRM ? ", hung" : "");

    rc = run(&e, shim, 0);
    ok(rc == 0, "a second vault queued behind that wait on the same "
       "module answers busy when the first gives up, without a wait of "
       "its own, and opens afterwards (child: %d%s)", rc,
       rc == 128 + SIGALRM ? ", hung" : "");

    return done_testing();
}
