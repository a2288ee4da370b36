/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A PIN the token refuses is tried once, not again and again: an HSM that
 * locks the user PIN after a few failures must not be locked by one
 * signing request, nor by a worker's start.  The vault loads OpenSC's
 * pkcs11-spy in front of SoftHSM; the spy's log counts every C_Login the
 * core makes (an oracle outside the core).
 *   A. The PIN file is wrong from the start: opening the vault logs in
 *      once; opening it and its key again makes no C_Login until the PIN
 *      file changes; a rewrite with the same PIN still makes none; the
 *      right PIN then opens the key.
 *   B. The token's PIN changes while the process signs (C_SetPIN, then the
 *      login is lost): N signatures make exactly one C_Login, each fails
 *      with PKI_UNAVAILABLE, fast; writing the new PIN into the PIN file
 *      recovers signing without a restart.
 *   C. The device fails at login (CKR_DEVICE_ERROR): every signature and
 *      the open of the vault fail with PKI_UNAVAILABLE (an outage, worth a
 *      retry), never PKI_INTERNAL; signing recovers once it is back.
 *   D. A vault only declared (nginx -s) reads no PIN and opens nothing.
 * Environment as for test_key.c; the spy is PKI_TEST_P11_SPY (default
 * /usr/lib/x86_64-linux-gnu/pkcs11-spy.so).  Without them it skips.
 */

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "pki.h"
#include "test/unit.h"


typedef unsigned long  ck_ulong;

typedef ck_ulong (*ck_get_slot_list_pt)(unsigned char present,
    ck_ulong *slots, ck_ulong *count);
typedef ck_ulong (*ck_get_token_info_pt)(ck_ulong slot, void *info);
typedef ck_ulong (*ck_open_session_pt)(ck_ulong slot, ck_ulong flags,
    void *app, void *notify, ck_ulong *session);
typedef ck_ulong (*ck_session_pt)(ck_ulong session);
typedef ck_ulong (*ck_login_pt)(ck_ulong session, ck_ulong user,
    unsigned char *pin, ck_ulong len);
typedef ck_ulong (*ck_set_pin_pt)(ck_ulong session, unsigned char *old,
    ck_ulong oldlen, unsigned char *pin, ck_ulong len);

#define CKF_RW_SESSION          0x2UL
#define CKF_SERIAL_SESSION      0x4UL
#define CKU_USER                1UL
#define CKR_OK                  0x0UL


static int spy_calls(const char *what);


static char        tmpdir[512];
static const char *spy_log;
static const char *spy;
static const char *token;


/* LeakSanitizer (./build.sh test --sanitize): pkcs11-spy itself leaks 16
 * bytes at load (its interface list); not ours. */
const char *__lsan_default_suppressions(void)
    __attribute__((visibility("default")));

const char *
__lsan_default_suppressions(void)
{
    return "leak:pkcs11-spy.so\n";
}


static double
now_s(void)
{
    struct timeval  tv;

    gettimeofday(&tv, NULL);
    return tv.tv_sec + tv.tv_usec / 1e6;
}


static char *
tpath(const char *name)
{
    static char  buf[8][600];
    static int   i;

    i = (i + 1) % 8;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", tmpdir, name);
    return buf[i];
}


/* Replaces path (a new inode, as an operator's editor or a secret
 * manager does). */
static void
put_pin(const char *path, const char *pin)
{
    char   tmp[700];
    FILE  *f;

    snprintf(tmp, sizeof(tmp), "%s.new", path);
    f = fopen(tmp, "w");
    if (f == NULL || fprintf(f, "%s\n", pin) < 0 || fclose(f) != 0
        || rename(tmp, path) != 0)
    {
        perror(path);
        exit(2);
    }
}


/* The C_Login calls in the spy's log ("N: C_Login" lines). */
static int
logins(void)
{
    return spy_calls(": C_Login\n");
}


/* The calls of one function in the spy's log: what follows the number of
 * its lines, e.g. ": C_Initialize\n". */
static int
spy_calls(const char *what)
{
    FILE  *f;
    char   line[512];
    int    n = 0;

    f = fopen(spy_log, "r");
    if (f == NULL) {
        return 0;
    }

    while (fgets(line, sizeof(line), f) != NULL) {
        char  *p = line;

        while (*p >= '0' && *p <= '9') {
            p++;
        }
        if (p != line && strcmp(p, what) == 0) {
            n++;
        }
    }

    fclose(f);
    return n;
}


/* A read/write session of the test's own on the vault's token, through the
 * module the vault loaded (the spy: its calls land in the log too). */
static int
session(void **dl, ck_ulong *s)
{
    ck_get_slot_list_pt   slot_list;
    ck_get_token_info_pt  token_info;
    ck_open_session_pt    open_session;
    ck_ulong              slots[64], n = 64, i;
    unsigned char         info[1024];
    size_t                len = strlen(token);

    *dl = dlopen(spy, RTLD_NOW | RTLD_LOCAL);
    if (*dl == NULL) {
        return 0;
    }

    slot_list = (ck_get_slot_list_pt) dlsym(*dl, "C_GetSlotList");
    token_info = (ck_get_token_info_pt) dlsym(*dl, "C_GetTokenInfo");
    open_session = (ck_open_session_pt) dlsym(*dl, "C_OpenSession");

    if (slot_list == NULL || token_info == NULL || open_session == NULL
        || slot_list(1, slots, &n) != CKR_OK)
    {
        return 0;
    }

    for (i = 0; i < n; i++) {
        memset(info, 0, sizeof(info));
        if (token_info(slots[i], info) == CKR_OK
            && memcmp(info, token, len) == 0
            && (len == 32 || info[len] == ' '))
        {
            return open_session(slots[i], CKF_RW_SESSION | CKF_SERIAL_SESSION,
                                NULL, NULL, s) == CKR_OK;
        }
    }

    return 0;
}


/* C_SetPIN(from, to) in a session of our own (logged in first with `from`
 * when login is set); then, when logout is set, C_Logout, which logs the
 * whole process out.  Returns the CKR of C_SetPIN. */
static ck_ulong
set_pin(const char *from, const char *to, int login, int logout)
{
    void           *dl;
    ck_ulong        s, rv;
    ck_set_pin_pt   set;
    ck_login_pt     li;
    ck_session_pt   lo, close_session;

    if (!session(&dl, &s)) {
        return ~0UL;
    }

    set = (ck_set_pin_pt) dlsym(dl, "C_SetPIN");
    li = (ck_login_pt) dlsym(dl, "C_Login");
    lo = (ck_session_pt) dlsym(dl, "C_Logout");
    close_session = (ck_session_pt) dlsym(dl, "C_CloseSession");

    if (login) {
        (void) li(s, CKU_USER, (unsigned char *) from, strlen(from));
    }

    rv = set(s, (unsigned char *) from, strlen(from), (unsigned char *) to,
             strlen(to));

    if (logout) {
        (void) lo(s);
    }

    close_session(s);
    dlclose(dl);
    return rv;
}


static pki_status_t
sign(pki_key_t *k, pki_result_t *res)
{
    static const unsigned char   tbs[] = "test_key_pin";
    unsigned char               *sig = NULL;
    size_t                       siglen = 0;
    pki_status_t                 st;

    pki_result_init(res);
    st = pki_key_sign(k, NULL, tbs, sizeof(tbs) - 1, &sig, &siglen, res);
    OPENSSL_free(sig);

    return st;
}


static int
secret_free(const pki_result_t *res, const char *pin)
{
    return strstr(res->detail, pin) == NULL && strstr(res->log, pin) == NULL;
}


/* A. wrong from the start */
static void
test_wrong_from_start(const char *uri, const char *good)
{
    int            i, n0, bad;
    double         t0;
    pki_key_t     *k;
    pki_vault_t   *v;
    pki_result_t   res;

    put_pin(tpath("pin.a"), "31337000");

    pki_result_init(&res);
    v = pki_vault_new("spy-a", spy, token, tpath("pin.a"), &res);
    if (!ok(v != NULL, "A: vault_new [%s]", res.detail)) {
        return;
    }

    n0 = logins();
    pki_result_init(&res);
    ok(pki_vault_open(v, &res) == PKI_UNAVAILABLE
       && strstr(res.detail, "refused the PIN") != NULL
       && strstr(res.detail, "wrong PIN") != NULL
       && strstr(res.detail, "nothing is retried") != NULL
       && secret_free(&res, "31337000"),
       "A: a wrong PIN fails the open, clearly [%s]", res.detail);
    ok(logins() - n0 == 1, "A: one C_Login (%d)", logins() - n0);

    pki_result_init(&res);
    k = pki_key_new(uri, v, &res);
    if (!ok(k != NULL, "A: key_new [%s]", res.detail)) {
        pki_vault_free(v);
        return;
    }

    t0 = now_s();
    bad = 0;
    for (i = 0; i < 5; i++) {
        pki_result_init(&res);
        if (pki_vault_open(v, &res) != PKI_UNAVAILABLE
            || strstr(res.detail, "refused the PIN") == NULL)
        {
            bad++;
        }
        pki_result_init(&res);
        if (pki_key_open(k, &res) != PKI_UNAVAILABLE
            || !secret_free(&res, "31337000"))
        {
            bad++;
        }
    }
    ok(bad == 0, "A: five more opens of vault and key fail at once [%s]",
       res.detail);
    ok(logins() - n0 == 1, "A: still one C_Login after them (%d)",
       logins() - n0);
    ok(now_s() - t0 < (getenv("PKI_TEST_VALGRIND") ? 20.0 : 1.0),
       "A: and fast (%.3f s)", now_s() - t0);

    /* the file is rewritten, the PIN in it is the same: not tried */
    put_pin(tpath("pin.a"), "31337000");
    pki_result_init(&res);
    ok(pki_key_open(k, &res) == PKI_UNAVAILABLE
       && logins() - n0 == 1,
       "A: the same PIN in a new file is not tried (%d C_Login) [%s]",
       logins() - n0, res.detail);

    put_pin(tpath("pin.a"), good);
    pki_result_init(&res);
    ok(pki_key_open(k, &res) == PKI_OK,
       "A: the right PIN in the PIN file opens the key [%s %s]",
       res.detail, res.log);
    ok(logins() - n0 == 2, "A: with one more C_Login (%d)", logins() - n0);
    ok(sign(k, &res) == PKI_OK, "A: and it signs [%s]", res.detail);

    pki_key_free(k);
    pki_vault_free(v);
}


/* B. the token's PIN changes under a running process */
static void
test_changed_at_token(const char *uri, const char *good)
{
    static const char  *newpin = "87654321";
    int                 i, n0, fails, unav, leaks;
    double              t0, took;
    ck_ulong            rv;
    pki_key_t          *k;
    pki_vault_t        *v;
    pki_result_t        res;
    char                first[600];

    put_pin(tpath("pin.b"), good);

    pki_result_init(&res);
    v = pki_vault_new("spy-b", spy, token, tpath("pin.b"), &res);
    k = v != NULL ? pki_key_new(uri, v, &res) : NULL;
    pki_result_init(&res);
    if (!ok(k != NULL && pki_key_open(k, &res) == PKI_OK
            && sign(k, &res) == PKI_OK,
            "B: key opens and signs [%s]", res.detail))
    {
        pki_key_free(k);
        pki_vault_free(v);
        return;
    }

    rv = set_pin(good, newpin, 0, 1);
    if (!ok(rv == CKR_OK, "B: the token's PIN changed, login lost (0x%lx)",
            rv))
    {
        pki_key_free(k);
        pki_vault_free(v);
        return;
    }

    n0 = logins();
    fails = unav = leaks = 0;
    first[0] = '\0';
    t0 = now_s();

    for (i = 0; i < 10; i++) {
        pki_status_t  st = sign(k, &res);

        fails += st != PKI_OK;
        unav += st == PKI_UNAVAILABLE;
        leaks += !secret_free(&res, good) || !secret_free(&res, newpin);
        if (first[0] == '\0' && st != PKI_OK) {
            snprintf(first, sizeof(first), "%.250s (%.300s)", res.detail,
                     res.log);
        }
    }

    took = now_s() - t0;

    ok(fails == 10 && unav == 10,
       "B: 10 signatures fail with PKI_UNAVAILABLE (%d, %d) [%s]",
       fails, unav, first);
    ok(strstr(first, "refused the PIN") != NULL,
       "B: the log says the token refused the PIN");
    ok(leaks == 0, "B: no PIN in any result (%d)", leaks);
    ok(logins() - n0 == 1, "B: 10 signatures made exactly 1 C_Login (%d)",
       logins() - n0);
    ok(took < (getenv("PKI_TEST_VALGRIND") ? 60.0 : 3.0),
       "B: all 10 took %.3f s", took);

    put_pin(tpath("pin.b"), newpin);
    ok(sign(k, &res) == PKI_OK,
       "B: the new PIN in the PIN file recovers signing [%s %s]",
       res.detail, res.log);
    ok(logins() - n0 == 2, "B: with one more C_Login (%d)", logins() - n0);

    for (fails = 0, i = 0; i < 5; i++) {
        fails += sign(k, &res) != PKI_OK;
    }
    ok(fails == 0, "B: 5 more signatures (%d failed)", fails);
    ok(logins() - n0 == 2, "B: without a C_Login (%d)", logins() - n0);

    /* the token gets its PIN back for the other tests */
    rv = set_pin(newpin, good, 0, 0);
    if (rv != CKR_OK) {
        rv = set_pin(newpin, good, 1, 0);
    }
    ok(rv == CKR_OK, "B: the token's PIN restored (0x%lx)", rv);

    pki_key_free(k);
    pki_vault_free(v);
}


/* C_Login of SoftHSM's function list, which the spy calls, answers
 * CKR_DEVICE_ERROR while login_fault.armed is set. */
typedef ck_ulong (*ck_get_list_pt)(void ***list);

static struct {
    ck_login_pt   real;
    void        **slot;
    int           armed;
    int           calls;
} login_fault;


static ck_ulong
login_fault_fn(ck_ulong session, ck_ulong user, unsigned char *pin,
    ck_ulong len)
{
    if (login_fault.armed) {
        login_fault.calls++;
        return 0x30UL;                      /* CKR_DEVICE_ERROR */
    }

    return login_fault.real(session, user, pin, len);
}


/* Puts login_fault_fn into the module's list (SoftHSM's is writable static
 * data, loaded once by the spy): 1 done. */
static int
login_fault_install(const char *module)
{
    void            *dl, *li, **fl;
    size_t           i;
    ck_get_list_pt   get;

    dl = dlopen(module, RTLD_NOW | RTLD_NOLOAD);
    if (dl == NULL) {
        return 0;
    }

    get = (ck_get_list_pt) dlsym(dl, "C_GetFunctionList");
    li = dlsym(dl, "C_Login");
    if (get == NULL || li == NULL || get(&fl) != CKR_OK) {
        dlclose(dl);
        return 0;
    }

    /* the version (two bytes) is padded to a pointer; the entries follow */
    fl = (void **) ((char *) fl + sizeof(void *));
    for (i = 0; i < 70 && login_fault.slot == NULL; i++) {
        if (fl[i] == li) {
            login_fault.real = (ck_login_pt) li;
            login_fault.slot = &fl[i];
            fl[i] = (void *) login_fault_fn;
        }
    }

    dlclose(dl);
    return login_fault.slot != NULL;
}


/* C_Logout in a session of our own: the whole process is logged out. */
static int
logout_all(void)
{
    void           *dl;
    ck_ulong        s, rv;
    ck_session_pt   lo, close_session;

    if (!session(&dl, &s)) {
        return 0;
    }

    lo = (ck_session_pt) dlsym(dl, "C_Logout");
    close_session = (ck_session_pt) dlsym(dl, "C_CloseSession");
    rv = lo(s);
    close_session(s);
    dlclose(dl);

    return rv == CKR_OK;
}


/* C. the token's device fails at login (CKR_DEVICE_ERROR): an outage,
 * answered PKI_UNAVAILABLE (503, worth a retry) however many logins fail,
 * never PKI_INTERNAL; nothing is latched, and signing recovers alone */
static void
test_device_error(const char *module, const char *uri, const char *good)
{
    int            i, unav, calls;
    double         t0;
    pki_key_t     *k;
    pki_vault_t   *v;
    pki_status_t   st;
    pki_result_t   res;
    char           first[600];

    put_pin(tpath("pin.c"), good);

    pki_result_init(&res);
    v = pki_vault_new("spy-c", spy, token, tpath("pin.c"), &res);
    k = v != NULL ? pki_key_new(uri, v, &res) : NULL;
    pki_result_init(&res);
    if (!ok(k != NULL && pki_key_open(k, &res) == PKI_OK
            && sign(k, &res) == PKI_OK,
            "C: key opens and signs [%s]", res.detail)
        || !ok(login_fault_install(module), "C: C_Login fault installed"))
    {
        pki_key_free(k);
        pki_vault_free(v);
        return;
    }

    login_fault.armed = 1;
    ok(logout_all(), "C: the process logged out");

    unav = 0;
    first[0] = '\0';
    calls = 0;
    for (i = 0; i < 3; i++) {
        st = sign(k, &res);
        unav += st == PKI_UNAVAILABLE;
        if (i == 0) {
            snprintf(first, sizeof(first), "%.250s (%.300s)", res.detail,
                     res.log);
            calls = login_fault.calls;
        }
    }

    ok(unav == 3, "C: 3 signatures while the device fails at login are "
       "PKI_UNAVAILABLE (%d) [%s]", unav, first);
    ok(strstr(first, "CKR 0x30") != NULL
       && strstr(first, "refused the PIN") == NULL,
       "C: the log names the device's CKR, not the PIN [%s]", first);
    ok(calls >= 3, "C: the first signature tried the login %d times",
       calls);

    /* a worker's start opens the vault itself */
    pki_vault_close(v);
    pki_result_init(&res);
    st = pki_vault_open(v, &res);
    ok(st == PKI_UNAVAILABLE, "C: opening the vault while the device fails "
       "is PKI_UNAVAILABLE (%d) [%s]", st, res.detail);

    login_fault.armed = 0;
    t0 = now_s();
    do {
        st = sign(k, &res);
        if (st != PKI_OK) {
            usleep(100000);
        }
    } while (st != PKI_OK && now_s() - t0 < 15.0);
    ok(st == PKI_OK, "C: once the device is back, signing recovers by "
       "itself [%s]", res.detail);

    *login_fault.slot = (void *) login_fault.real;

    pki_key_free(k);
    pki_vault_free(v);
}


/*
 * D. A vault declared only (pki_vault_declare(), the process of "nginx -s"):
 *    its PIN file is not read (there is none), a key of it is made, and
 *    neither the vault nor the key opens: the module is not even
 *    initialised (no C_Initialize, no C_Login in the spy's log).
 *    pki_vault_new() of the same vault fails: it reads the PIN file.
 */
static void
test_declared(const char *uri)
{
    int            i0, l0;
    pki_key_t     *k;
    pki_vault_t   *v;
    pki_result_t   res;

    i0 = spy_calls(": C_Initialize\n");
    l0 = logins();
    ok(i0 > 0 && l0 > 0, "D: the spy logged the C_Initialize (%d) and "
       "C_Login (%d) of A-C", i0, l0);

    pki_result_init(&res);
    v = pki_vault_new("spy-d", spy, token, tpath("no-pin"), &res);
    ok(v == NULL, "D: vault_new without its PIN file fails [%s]",
       res.detail);
    pki_vault_free(v);

    pki_result_init(&res);
    v = pki_vault_declare("spy-d", spy, token, tpath("no-pin"), &res);
    if (!ok(v != NULL && pki_vault_token(v) != NULL
            && strcmp(pki_vault_token(v), token) == 0,
            "D: vault_declare without its PIN file works [%s]", res.detail))
    {
        pki_vault_free(v);
        return;
    }

    pki_result_init(&res);
    k = pki_key_new(uri, v, &res);
    ok(k != NULL, "D: key_new on the declared vault [%s]", res.detail);

    pki_result_init(&res);
    ok(pki_vault_open(v, &res) == PKI_INTERNAL
       && strstr(res.detail, "declared") != NULL,
       "D: the declared vault does not open [%s]", res.detail);

    if (k != NULL) {
        pki_result_init(&res);
        ok(pki_key_open(k, &res) != PKI_OK,
           "D: nor its key [%s]", res.detail);
    }

    ok(spy_calls(": C_Initialize\n") == i0 && logins() == l0,
       "D: no C_Initialize, no C_Login (%d, %d)",
       spy_calls(": C_Initialize\n") - i0, logins() - l0);

    pki_key_free(k);
    pki_vault_free(v);
}


int
main(void)
{
    FILE        *f;
    char         good[300], logname[600];
    size_t       n;
    const char  *conf, *module, *pinf, *uri, *dir;

    conf = getenv("PKI_TEST_SOFTHSM_CONF");
    module = getenv("PKI_TEST_P11_MODULE");
    token = getenv("PKI_TEST_TOKEN");
    pinf = getenv("PKI_TEST_PIN_FILE");
    uri = getenv("PKI_TEST_KEY_URI_EC");
    spy = getenv("PKI_TEST_P11_SPY");
    if (spy == NULL) {
        spy = "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so";
    }

    if (conf == NULL || module == NULL || token == NULL || pinf == NULL
        || uri == NULL)
    {
        skip_all("no SoftHSM token (PKI_TEST_SOFTHSM_CONF, "
                 "PKI_TEST_P11_MODULE, PKI_TEST_TOKEN, PKI_TEST_PIN_FILE, "
                 "PKI_TEST_KEY_URI_EC)");
    }

    if (access(spy, R_OK) != 0) {
        skip_all("no pkcs11-spy (opensc)");
    }

    dir = getenv("PKI_TEST_TMPDIR");
    snprintf(tmpdir, sizeof(tmpdir), "%s/key_pin.XXXXXX",
             dir != NULL ? dir : "/tmp");
    if (mkdtemp(tmpdir) == NULL) {
        perror(tmpdir);
        return 2;
    }

    f = fopen(pinf, "r");
    n = f != NULL ? fread(good, 1, sizeof(good) - 1, f) : 0;
    if (f != NULL) {
        fclose(f);
    }
    while (n > 0 && (good[n - 1] == '\n' || good[n - 1] == '\r')) {
        n--;
    }
    good[n] = '\0';
    if (n == 0) {
        skip_all("cannot read the test PIN");
    }

    snprintf(logname, sizeof(logname), "%s/spy.log", tmpdir);
    spy_log = logname;

    setenv("SOFTHSM2_CONF", conf, 1);
    setenv("PKCS11SPY", module, 1);
    setenv("PKCS11SPY_OUTPUT", spy_log, 1);
    pki_init();

    /* The spy allocates its function lists once per load and never frees
     * them; each unload of the module (the last vault closing) would leak
     * them (LeakSanitizer).  Kept loaded, they stay reachable. */
    if (dlopen(spy, RTLD_NOW | RTLD_LOCAL) == NULL) {
        skip_all("cannot load pkcs11-spy");
    }

    test_wrong_from_start(uri, good);
    test_changed_at_token(uri, good);
    test_device_error(module, uri, good);
    test_declared(uri);

    OPENSSL_cleanse(good, sizeof(good));
    return done_testing();
}
