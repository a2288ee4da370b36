/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A PKCS#11 module for the tests (build/p11shim.so): SoftHSM with a
 * session limit, as an HSM has one (YubiHSM2: 16).  It loads the module
 * named by PKI_P11SHIM_MODULE (SoftHSM's), hands libp11 a copy of its
 * function list (C_GetFunctionList) and exports the symbols the core's
 * lean signing path takes with dlsym.  C_OpenSession answers
 * CKR_SESSION_COUNT while PKI_P11SHIM_MAX_SESSIONS (0 or unset: no limit;
 * read at C_Initialize, or set by p11shim_set_max) sessions are open;
 * p11shim_set_sign_delay (or PKI_P11SHIM_SIGN_DELAY_MS, read at
 * C_Initialize) makes each C_Sign slower (a busy token).  While
 * the file named by PKI_P11SHIM_HANG_FILE exists, each C_Sign waits for it
 * to go away (at most 120 s): a token that stops answering, for an nginx
 * test that cannot call into the shim.  p11shim_set_sign_fail(n) makes
 * the next n C_Signs fail with CKR_DEVICE_ERROR at once
 * (p11shim_sign_state: how many are left, how many C_Signs run).
 * C_Initialize calls are counted: one per open of a vault.
 *
 * A token whose policy forbids raw RSA on its keys (many HSMs): with
 * PKI_P11SHIM_DENY_RAW_RSA=1 (read at C_Initialize) or after
 * p11shim_set_deny_raw_rsa(1), C_DecryptInit with CKM_RSA_X_509 answers
 * CKR_KEY_FUNCTION_NOT_PERMITTED; every other mechanism (CKM_RSA_PKCS for
 * PKCS#1 v1.5) goes through.  With PKI_P11SHIM_EVENTS=FILE each
 * C_Initialize and C_DecryptInit appends a line to FILE, for a test that
 * runs the shim inside nginx's workers (no dlsym there), and so does each
 * change of the count of open sessions (written under the shim's mutex:
 * a process's last line has its count):
 *     init pid=N
 *     decrypt_init mech=0xM rv=0xR pid=N
 *     open_session rv=0xR open=C pid=N
 *     close_session open=C pid=N
 *     close_all_sessions open=0 pid=N
 */

#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>


#define P11SHIM_API  __attribute__((visibility("default")))


static pthread_mutex_t     shim_mutex = PTHREAD_MUTEX_INITIALIZER;
static void               *shim_dl;
static CK_FUNCTION_LIST   *shim_real;
static CK_FUNCTION_LIST    shim_list;
static long                shim_max;
static long                shim_open;       /* sessions open now */
static long                shim_peak;
static long                shim_refused;    /* CKR_SESSION_COUNT given */
static long                shim_inits;
static long                shim_delay_ms;   /* before each C_Sign */
static long                shim_sign_fail;  /* C_Signs still to fail */
static long                shim_signing;    /* C_Signs in progress */
static int                 shim_deny_raw;   /* CKM_RSA_X_509 refused */
static long                shim_denied;     /* C_DecryptInit refusals */
static long                shim_decrypts;   /* C_DecryptInit calls */


/* One line to PKI_P11SHIM_EVENTS, if set (O_APPEND: the workers share
 * the file, a short line is written whole). */
static void shim_event(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void
shim_event(const char *fmt, ...)
{
    int          fd, n;
    char         line[128];
    va_list      ap;
    const char  *path;

    path = getenv("PKI_P11SHIM_EVENTS");
    if (path == NULL || *path == '\0') {
        return;
    }

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);

    if (n <= 0 || (size_t) n >= sizeof(line)) {
        return;
    }

    n += snprintf(line + n, sizeof(line) - n, " pid=%ld\n",
                  (long) getpid());
    if ((size_t) n >= sizeof(line)) {
        return;
    }

    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        return;
    }

    (void) !write(fd, line, (size_t) n);
    (void) close(fd);
}


/* The real module's function list: 1 loaded. */
static int
shim_load(void)
{
    int              ok;
    const char      *path;
    CK_C_GetFunctionList  get;

    pthread_mutex_lock(&shim_mutex);

    if (shim_real == NULL) {
        path = getenv("PKI_P11SHIM_MODULE");
        if (path != NULL) {
            shim_dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        }

        get = shim_dl != NULL
              ? (CK_C_GetFunctionList) dlsym(shim_dl, "C_GetFunctionList")
              : NULL;

        if (get != NULL && get(&shim_real) != CKR_OK) {
            shim_real = NULL;
        }
    }

    ok = shim_real != NULL;

    pthread_mutex_unlock(&shim_mutex);

    return ok;
}


P11SHIM_API CK_RV
C_Initialize(CK_VOID_PTR args)
{
    CK_RV        rv;
    const char  *max, *deny, *delay;

    if (!shim_load()) {
        return CKR_GENERAL_ERROR;
    }

    rv = shim_real->C_Initialize(args);

    pthread_mutex_lock(&shim_mutex);
    shim_inits++;
    shim_open = 0;
    max = getenv("PKI_P11SHIM_MAX_SESSIONS");
    if (max != NULL) {
        shim_max = atol(max);
    }
    delay = getenv("PKI_P11SHIM_SIGN_DELAY_MS");
    if (delay != NULL) {
        shim_delay_ms = atol(delay);
    }
    deny = getenv("PKI_P11SHIM_DENY_RAW_RSA");
    if (deny != NULL) {
        shim_deny_raw = atoi(deny) != 0;
    }
    pthread_mutex_unlock(&shim_mutex);

    shim_event("init rv=0x%lx", (unsigned long) rv);

    return rv;
}


P11SHIM_API CK_RV
C_Finalize(CK_VOID_PTR reserved)
{
    CK_RV  rv;

    rv = shim_real->C_Finalize(reserved);

    pthread_mutex_lock(&shim_mutex);
    shim_open = 0;
    pthread_mutex_unlock(&shim_mutex);

    return rv;
}


P11SHIM_API CK_RV
C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app,
    CK_NOTIFY notify, CK_SESSION_HANDLE_PTR session)
{
    CK_RV  rv;

    /* counted before the call: two opens at once never pass the limit */
    pthread_mutex_lock(&shim_mutex);

    if (shim_max > 0 && shim_open >= shim_max) {
        shim_refused++;
        pthread_mutex_unlock(&shim_mutex);
        return CKR_SESSION_COUNT;
    }

    shim_open++;
    if (shim_open > shim_peak) {
        shim_peak = shim_open;
    }

    pthread_mutex_unlock(&shim_mutex);

    rv = shim_real->C_OpenSession(slot, flags, app, notify, session);

    pthread_mutex_lock(&shim_mutex);
    shim_open -= rv != CKR_OK;
    shim_event("open_session rv=0x%lx open=%ld", (unsigned long) rv,
               shim_open);
    pthread_mutex_unlock(&shim_mutex);

    return rv;
}


P11SHIM_API CK_RV
C_CloseSession(CK_SESSION_HANDLE session)
{
    CK_RV  rv;

    rv = shim_real->C_CloseSession(session);

    if (rv == CKR_OK) {
        pthread_mutex_lock(&shim_mutex);
        shim_open -= shim_open > 0;
        shim_event("close_session open=%ld", shim_open);
        pthread_mutex_unlock(&shim_mutex);
    }

    return rv;
}


/* Every session is counted against one token (the tests have one). */
P11SHIM_API CK_RV
C_CloseAllSessions(CK_SLOT_ID slot)
{
    CK_RV  rv;

    rv = shim_real->C_CloseAllSessions(slot);

    if (rv == CKR_OK) {
        pthread_mutex_lock(&shim_mutex);
        shim_open = 0;
        shim_event("close_all_sessions open=0");
        pthread_mutex_unlock(&shim_mutex);
    }

    return rv;
}


P11SHIM_API CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    if (list == NULL) {
        return CKR_ARGUMENTS_BAD;
    }

    if (!shim_load()) {
        return CKR_GENERAL_ERROR;
    }

    pthread_mutex_lock(&shim_mutex);

    shim_list = *shim_real;
    shim_list.C_Initialize = C_Initialize;
    shim_list.C_Finalize = C_Finalize;
    shim_list.C_GetFunctionList = C_GetFunctionList;
    shim_list.C_OpenSession = C_OpenSession;
    shim_list.C_CloseSession = C_CloseSession;
    shim_list.C_CloseAllSessions = C_CloseAllSessions;
    shim_list.C_DecryptInit = C_DecryptInit;

    pthread_mutex_unlock(&shim_mutex);

    *list = &shim_list;

    return CKR_OK;
}


/* What the core's lean path takes with dlsym, forwarded. */

P11SHIM_API CK_RV
C_FindObjectsInit(CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
    return shim_real->C_FindObjectsInit(s, t, n);
}


P11SHIM_API CK_RV
C_FindObjects(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE_PTR objs, CK_ULONG max,
    CK_ULONG_PTR n)
{
    return shim_real->C_FindObjects(s, objs, max, n);
}


P11SHIM_API CK_RV
C_FindObjectsFinal(CK_SESSION_HANDLE s)
{
    return shim_real->C_FindObjectsFinal(s);
}


P11SHIM_API CK_RV
C_SignInit(CK_SESSION_HANDLE s, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
    return shim_real->C_SignInit(s, mech, key);
}


P11SHIM_API CK_RV
C_Sign(CK_SESSION_HANDLE s, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig,
    CK_ULONG_PTR siglen)
{
    int              fail;
    long             ms;
    CK_RV            rv;
    struct stat      st;
    const char      *hang;
    struct timespec  ts;

    pthread_mutex_lock(&shim_mutex);
    ms = shim_delay_ms;
    fail = sig != NULL && shim_sign_fail > 0;
    if (fail) {
        shim_sign_fail--;
    }
    shim_signing++;
    pthread_mutex_unlock(&shim_mutex);

    if (fail) {
        /* the token's signature is made (it ends the operation, as a
         * failed C_Sign does), then lost: a device error, at once */
        (void) shim_real->C_Sign(s, data, len, sig, siglen);
        rv = CKR_DEVICE_ERROR;
        goto done;
    }

    if (ms > 0) {
        ts.tv_sec = ms / 1000;
        ts.tv_nsec = (ms % 1000) * 1000000L;
        (void) nanosleep(&ts, NULL);
    }

    hang = getenv("PKI_P11SHIM_HANG_FILE");

    for (ms = 0; hang != NULL && ms < 120000; ms += 20) {
        if (stat(hang, &st) != 0) {
            break;
        }
        ts.tv_sec = 0;
        ts.tv_nsec = 20 * 1000000L;
        (void) nanosleep(&ts, NULL);
    }

    rv = shim_real->C_Sign(s, data, len, sig, siglen);

done:

    pthread_mutex_lock(&shim_mutex);
    shim_signing--;
    pthread_mutex_unlock(&shim_mutex);

    return rv;
}


/* A policy that forbids raw RSA: the mechanism is refused before the
 * token sees it, whatever the key and the ciphertext. */
P11SHIM_API CK_RV
C_DecryptInit(CK_SESSION_HANDLE s, CK_MECHANISM_PTR mech,
    CK_OBJECT_HANDLE key)
{
    int            deny;
    CK_RV          rv;
    unsigned long  type;

    type = mech != NULL ? (unsigned long) mech->mechanism : ~0UL;

    pthread_mutex_lock(&shim_mutex);
    deny = shim_deny_raw && type == CKM_RSA_X_509;
    shim_decrypts++;
    shim_denied += deny;
    pthread_mutex_unlock(&shim_mutex);

    rv = deny ? CKR_KEY_FUNCTION_NOT_PERMITTED
              : shim_real->C_DecryptInit(s, mech, key);

    shim_event("decrypt_init mech=0x%lx rv=0x%lx", type, (unsigned long) rv);

    return rv;
}


P11SHIM_API CK_RV
C_Login(CK_SESSION_HANDLE s, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin,
    CK_ULONG len)
{
    return shim_real->C_Login(s, user, pin, len);
}


P11SHIM_API CK_RV
C_GetSessionInfo(CK_SESSION_HANDLE s, CK_SESSION_INFO_PTR info)
{
    return shim_real->C_GetSessionInfo(s, info);
}


/* For the test (dlsym): the limit, and what happened. */

P11SHIM_API void
p11shim_set_max(long max)
{
    pthread_mutex_lock(&shim_mutex);
    shim_max = max;
    pthread_mutex_unlock(&shim_mutex);
}


/* A slow token: each C_Sign takes ms more (0: none). */
P11SHIM_API void
p11shim_set_sign_delay(long ms)
{
    pthread_mutex_lock(&shim_mutex);
    shim_delay_ms = ms;
    pthread_mutex_unlock(&shim_mutex);
}


/* A token that fails: the next n C_Signs answer CKR_DEVICE_ERROR at
 * once, without the delay (0: none). */
P11SHIM_API void
p11shim_set_sign_fail(long n)
{
    pthread_mutex_lock(&shim_mutex);
    shim_sign_fail = n;
    pthread_mutex_unlock(&shim_mutex);
}


/* How many of those are still to fail; how many C_Signs are running. */
P11SHIM_API void
p11shim_sign_state(long *fails_left, long *signing)
{
    pthread_mutex_lock(&shim_mutex);
    *fails_left = shim_sign_fail;
    *signing = shim_signing;
    pthread_mutex_unlock(&shim_mutex);
}


/* A token that refuses CKM_RSA_X_509 to C_DecryptInit (0: allows it). */
P11SHIM_API void
p11shim_set_deny_raw_rsa(int on)
{
    pthread_mutex_lock(&shim_mutex);
    shim_deny_raw = on != 0;
    pthread_mutex_unlock(&shim_mutex);
}


/* C_DecryptInit calls, and those refused by the raw RSA policy. */
P11SHIM_API void
p11shim_decrypt_stats(long *calls, long *denied)
{
    pthread_mutex_lock(&shim_mutex);
    *calls = shim_decrypts;
    *denied = shim_denied;
    pthread_mutex_unlock(&shim_mutex);
}


P11SHIM_API void
p11shim_stats(long *open, long *peak, long *refused, long *inits)
{
    pthread_mutex_lock(&shim_mutex);
    *open = shim_open;
    *peak = shim_peak;
    *refused = shim_refused;
    *inits = shim_inits;
    pthread_mutex_unlock(&shim_mutex);
}


P11SHIM_API void
p11shim_reset_peak(void)
{
    pthread_mutex_lock(&shim_mutex);
    shim_peak = shim_open;
    pthread_mutex_unlock(&shim_mutex);
}
