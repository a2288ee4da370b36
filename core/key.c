/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Signing keys: PEM files and PKCS#11 tokens (libp11 0.4.12).
 *
 * A vault is logged in to one token through a libp11 context shared by all
 * vaults of the same module (see "PKCS#11 modules" below).  Keys of a vault
 * hold EVP_PKEY handles that point into the vault's slots, so every key of a
 * vault is linked into the vault's list: closing the vault drops the handles
 * of all its keys, and a key re-fetches them lazily when the vault's
 * generation (bumped on every successful open) differs from its own.
 *
 * Locking: vault->lock is a writer-preferring rwlock.  Signers hold it for
 * reading while they use a handle; opening, closing and re-fetching hold it
 * for writing.  File keys need no lock: they are immutable while open.
 */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libp11.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "pki.h"
#include "audit_int.h"
#include "key_int.h"


#define PKI_PIN_MAX          256
#define PKI_KEY_FILE_MAX     (1024 * 1024)
#define PKI_URI_MAX          2048
#define PKI_LABEL_MAX        256
#define PKI_ID_MAX           128
#define PKI_OPEN_TRIES       10
#define PKI_SIGN_REOPENS     3
#define PKI_BACKOFF_MIN      100     /* ms after a failed reopen */
#define PKI_BACKOFF_MAX      5000    /* ms, doubling from PKI_BACKOFF_MIN */
#define PKI_KEY_BACKOFF_MAX  30000   /* ms, a key's own (pki_key_gate) */
#define PKI_VAULT_CALLS      64      /* token operations tracked at once */
#define PKI_CALL_TIMEOUT     10000   /* ms, pki_vault_call_timeout() */

/* pki_key_t.state */
#define PKI_KEY_CLOSED       0
#define PKI_KEY_OPEN         1       /* fetched and self-tested once */
#define PKI_KEY_OPENING      2       /* a token key whose open failed:
                                        fetched and tested on its next use */

/* PKCS#11 return values (pkcs11.h is not installed with libp11). */
#define PKI_CKR_PIN_INCORRECT          0xa0UL
#define PKI_CKR_PIN_INVALID            0xa1UL
#define PKI_CKR_PIN_LEN_RANGE          0xa2UL
#define PKI_CKR_PIN_EXPIRED            0xa3UL
#define PKI_CKR_PIN_LOCKED             0xa4UL
#define PKI_CKR_USER_ALREADY_LOGGED_IN 0x100UL

/*
 * The lean EC signing path (pki_p11_sign below) calls the module directly
 * for C_Sign.  Only the few PKCS#11 types and constants it needs are
 * declared here (no pkcs11.h in the core's include path); the functions
 * are taken from the module libp11 already loaded (dlopen RTLD_NOLOAD +
 * dlsym).  Every PKCS#11 ABI on Linux uses unsigned long for CK_ULONG and
 * the handles, and these two structs are laid out like the standard ones.
 */
typedef unsigned long  pki_ck_ulong;

typedef struct {
    pki_ck_ulong   type;
    void          *value;
    pki_ck_ulong   len;
} pki_ck_attr_t;

typedef struct {
    pki_ck_ulong   mechanism;
    void          *param;
    pki_ck_ulong   param_len;
} pki_ck_mech_t;

typedef pki_ck_ulong (*pki_ck_open_pt)(pki_ck_ulong slot, pki_ck_ulong flags,
    void *app, void *notify, pki_ck_ulong *session);
typedef pki_ck_ulong (*pki_ck_close_pt)(pki_ck_ulong session);
typedef pki_ck_ulong (*pki_ck_find_init_pt)(pki_ck_ulong session,
    pki_ck_attr_t *tmpl, pki_ck_ulong count);
typedef pki_ck_ulong (*pki_ck_find_pt)(pki_ck_ulong session,
    pki_ck_ulong *objs, pki_ck_ulong max, pki_ck_ulong *count);
typedef pki_ck_ulong (*pki_ck_find_final_pt)(pki_ck_ulong session);
typedef pki_ck_ulong (*pki_ck_sign_init_pt)(pki_ck_ulong session,
    pki_ck_mech_t *mech, pki_ck_ulong key);
typedef pki_ck_ulong (*pki_ck_sign_pt)(pki_ck_ulong session,
    unsigned char *data, pki_ck_ulong len, unsigned char *sig,
    pki_ck_ulong *siglen);

typedef struct {
    pki_ck_ulong   slot;
    pki_ck_ulong   state;
    pki_ck_ulong   flags;
    pki_ck_ulong   device_error;
} pki_ck_session_info_t;

typedef pki_ck_ulong (*pki_ck_login_pt)(pki_ck_ulong session,
    pki_ck_ulong user, unsigned char *pin, pki_ck_ulong len);
typedef pki_ck_ulong (*pki_ck_session_info_pt)(pki_ck_ulong session,
    pki_ck_session_info_t *info);

typedef struct {
    pki_ck_open_pt        open;
    pki_ck_close_pt       close;
    pki_ck_find_init_pt   find_init;
    pki_ck_find_pt        find;
    pki_ck_find_final_pt  find_final;
    pki_ck_sign_init_pt   sign_init;
    pki_ck_sign_pt        sign;
    pki_ck_login_pt       login;
    pki_ck_session_info_pt  session_info;
} pki_p11fn_t;

#define PKI_CKR_OK              0x0UL
#define PKI_CKF_SERIAL_SESSION  0x4UL
#define PKI_CKA_CLASS           0x0UL
#define PKI_CKA_LABEL           0x3UL
#define PKI_CKA_ID              0x102UL
#define PKI_CKO_PRIVATE_KEY     0x3UL
#define PKI_CKM_ECDSA           0x1041UL
#define PKI_CKU_USER            0x1UL
#define PKI_CKS_RO_USER_FUNCTIONS  0x1UL
#define PKI_CKS_RW_USER_FUNCTIONS  0x3UL
#define PKI_P11_SESSIONS_MAX    256

/* A token out of sessions (CKR_SESSION_COUNT from C_OpenSession: an HSM
 * with a small session limit behind a large thread pool) is busy, not
 * failing: the signer waits for a session to come back, in slices (the
 * sessions of other keys on the token are not signalled), for at most
 * PKI_P11_BUSY_MS in all, with the vault's read lock held. */
#define PKI_CKR_SESSION_COUNT   0xb1UL
#define PKI_P11_BUSY_MS         1000
#define PKI_P11_BUSY_SLICE_MS   50

/* A pooled session idle that long is closed when the key's next session
 * comes back (pki_p11_session_put), or by pki_vault_trim_idle() when the
 * key signs nothing more: the pool shrinks to what the key's signers use
 * after a burst, and gives the token's sessions back to the other worker
 * processes (pki_vault_session_idle). */
#define PKI_P11_IDLE_MS         30000


typedef struct pki_p11mod_s  pki_p11mod_t;

typedef struct {
    pki_ck_ulong       s;
    double             since;        /* pooled then (pki_int_now()) */
} pki_p11_pooled_t;

struct pki_vault_s {
    char              *name;
    char              *module;
    char              *token;
    char              *pin_file;
    char              *pin;
    size_t             pin_len;
    struct stat        pin_st;       /* the PIN file when pin was read */
    unsigned long      pin_refused;  /* CKR_PIN_* of the token's refusal of
                                        pin, 0 if none: no C_Login until
                                        the PIN file changes */
    int                declared;     /* pki_vault_declare(): never opens */

    pthread_rwlock_t   lock;
    pki_p11mod_t      *mod;
    PKCS11_CTX        *ctx;          /* mod->ctx while open */
    PKCS11_SLOT       *slots;
    unsigned int       nslots;
    PKCS11_SLOT       *slot;
    unsigned long      gen;          /* bumped by each successful open */
    long               idle_ms;      /* pooled sessions idle that long are
                                        closed (PKI_P11_IDLE_MS) */
    int                login_open;   /* login_sess is open */
    pki_ck_ulong       login_sess;   /* the session of our C_Login, kept
                                        while open (pki_vault_login) */

    pki_key_t         *keys;         /* keys of this vault */

    /* Shared recovery (pki_vault_recover): one thread reopens while the
     * others wait for it; after a failed open nobody tries again before
     * retry_after (pki_int_now()), backoff_ms doubling up to
     * PKI_BACKOFF_MAX.  Under state_mutex. */
    pthread_mutex_t    state_mutex;
    pthread_cond_t     state_cond;
    int                reopening;
    long               backoff_ms;
    double             retry_after;
    char               last_error[256];

    /* The hang watchdog (pki_vault_hung): the start of each token
     * operation in flight (pki_int_now() in ms, plus 1; 0: a free slot),
     * claimed with a compare-and-swap and freed with a store, no lock.
     * An operation that finds every slot taken is not tracked: the older
     * ones are.  call_timeout_ms: the age that makes the vault hung (0:
     * never); set before the signers start. */
    long long          calls[PKI_VAULT_CALLS];
    long               call_timeout_ms;
};

struct pki_key_s {
    char              *ref;
    pki_vault_t       *vault;        /* NULL for a file key */
    pki_key_t         *next;         /* in vault->keys */

    /* pkcs11: URI attributes */
    char              *label;
    unsigned char     *id;
    size_t             id_len;

    int                state;        /* PKI_KEY_*, atomic: pool threads
                                        read it without a lock */
    unsigned long      gen;          /* vault generation of priv */
    unsigned long      bad_gen;      /* vault generation whose lookup of
                                        this key failed (0: none) */
    EVP_PKEY          *priv;
    EVP_PKEY          *pub;          /* standalone copy, survives reopen;
                                        for a token key also close and
                                        open (pki_key_close); set once,
                                        atomic (pki_key_public) */
    EVP_PKEY          *was_pub;      /* a file key's public key when it
                                        was closed: the file must hold
                                        the same key when it is opened
                                        again (a worker's open after the
                                        master checked it against the CA
                                        certificate) */

    /* The key's own backoff (pki_key_gate), for what fails with this key
     * alone: not found or ambiguous on the token, a signature that does
     * not verify with pub, or a token error that a reopen of the vault for
     * this key did not cure.  Such a key fails at once until kb_until and
     * takes no lock but the state mutex; the first try after that reopens
     * the vault once for it and fetches it again (kb_retry set meanwhile);
     * kb_ms doubles from PKI_BACKOFF_MIN up to PKI_KEY_BACKOFF_MAX when
     * that try fails with the key again (not when the vault is in its own
     * backoff), and a success clears it all.  kb_gen: the vault generation
     * a reopen for this key made (pki_vault_recover closed the vault after
     * this key failed in it, or retried after its backoff; not an open of
     * a vault closed already), 0 if none since its last success.  Under
     * the vault's state_mutex; kb_set (atomic) is 0 when all of it is
     * clear, so that a healthy key's signature takes no mutex for it.
     * kb_seq (atomic, written under the mutex) counts what set any of it:
     * a success clears only what was there when its operation began, not
     * a backoff another signer started meanwhile (pki_key_good). */
    int                kb_set;
    unsigned long      kb_seq;
    int                kb_retry;
    long               kb_ms;
    double             kb_until;
    unsigned long      kb_gen;
    char               kb_error[200];

    /* lean EC signing (pki_p11_sign): the private key object and a pool of
     * idle sessions, valid for vault generation p11_gen; under p11_mutex */
    pthread_mutex_t    p11_mutex;
    pthread_cond_t     p11_cond;     /* a session came back (pooled or
                                        closed): pki_p11_session_put */
    int                p11_state;    /* 0 not looked up, 1 usable, -1 no */
    int                p11_busy;     /* the last fetch's test found no free
                                        session; under the write lock */
    double             busy_until;   /* no fetch before (p11_busy); under
                                        the vault's state_mutex */
    unsigned long      p11_gen;
    pki_ck_ulong       p11_obj;
    pki_p11_pooled_t  *p11_sess;     /* oldest first */
    size_t             p11_nsess;

    /* verify-after-sign with precomputed multiples of the public point
     * (pki_fastvfy_*); under p11_mutex */
    int                fv_state;     /* 0 not yet, 1 building, 2 ready,
                                        -1 not for this key */
    unsigned long      fv_count;
    EC_GROUP          *fv_group;
};


static pki_status_t pki_key_test_locked(pki_key_t *k, int *busy,
    pki_result_t *res);
static int pki_key_fault(pki_status_t st);
static void pki_key_failed(pki_key_t *k, const char *why, pki_result_t *res);


/* ---- small helpers ------------------------------------------------------ */

static char *
pki_strdup(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}


static void
pki_sleep_ms(long ms)
{
    struct timespec  ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;

    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
        /* continue */
    }
}


/* Sleeps lo..hi ms with jitter from the CSPRNG (falls back to lo). */
static void
pki_jitter_sleep(long lo, long hi)
{
    unsigned int  r = 0;

    if (hi > lo && RAND_bytes((unsigned char *) &r, sizeof(r)) == 1) {
        lo += (long) (r % (unsigned int) (hi - lo + 1));
    }

    pki_sleep_ms(lo);
}


/* Appends the OpenSSL error queue to the log and clears it. */
/* Between two entries of res->log. */
static const char *
pki_sep(const pki_result_t *res)
{
    return res != NULL && res->log[0] ? "; " : "";
}


static void
pki_drain_errors(pki_result_t *res)
{
    unsigned long  e;
    char           buf[256];

    while ((e = ERR_get_error()) != 0) {
        if (res != NULL) {
            ERR_error_string_n(e, buf, sizeof(buf));
            pki_log(res, "%s%s", res->log[0] ? "; " : "", buf);
        }
    }
}


/* ---- key type helpers --------------------------------------------------- */

static int
pki_pkey_curve_nid(const EVP_PKEY *pk)
{
    char  name[64];

    if (EVP_PKEY_get_group_name(pk, name, sizeof(name), NULL) != 1) {
        return NID_undef;
    }

    return OBJ_txt2nid(name) != NID_undef ? OBJ_txt2nid(name)
                                          : EC_curve_nist2nid(name);
}


PKI_API void
pki_pkey_describe(const EVP_PKEY *pk, char *buf, size_t size)
{
    const char  *s = "unsupported";
    int          nid;

    if (buf == NULL || size == 0) {
        return;
    }

    if (pk == NULL) {
        snprintf(buf, size, "%s", s);
        return;
    }

    switch (EVP_PKEY_get_base_id(pk)) {

    case EVP_PKEY_RSA:
        snprintf(buf, size, "RSA %d", EVP_PKEY_get_bits(pk));
        return;

    case EVP_PKEY_EC:
        nid = pki_pkey_curve_nid(pk);
        if (nid == NID_X9_62_prime256v1) {
            s = "EC P-256";
        } else if (nid == NID_secp384r1) {
            s = "EC P-384";
        } else if (nid == NID_secp521r1) {
            s = "EC P-521";
        }
        break;

    case EVP_PKEY_ED25519:
        s = "Ed25519";
        break;

    default:
        break;
    }

    snprintf(buf, size, "%s", s);
}


/* 1 if we sign with this key type; otherwise fills res. */
static int
pki_pkey_supported(const EVP_PKEY *pk, const char *ref, pki_result_t *res)
{
    char  desc[64];

    pki_pkey_describe(pk, desc, sizeof(desc));

    if (strcmp(desc, "unsupported") == 0) {
        pki_fail(res, PKI_UNSUPPORTED, "key \"%s\": unsupported key type "
                 "(EC P-256/P-384/P-521, RSA >= 2048 or Ed25519)", ref);
        return 0;
    }

    if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA
        && EVP_PKEY_get_bits(pk) < 2048)
    {
        pki_fail(res, PKI_POLICY, "key \"%s\": %s is too small "
                 "(RSA keys need at least 2048 bits)", ref, desc);
        return 0;
    }

    return 1;
}


static const EVP_MD *
pki_default_md(const EVP_PKEY *pk)
{
    switch (EVP_PKEY_get_base_id(pk)) {

    case EVP_PKEY_EC:
        switch (pki_pkey_curve_nid(pk)) {
        case NID_secp384r1:
            return EVP_sha384();
        case NID_secp521r1:
            return EVP_sha512();
        default:
            return EVP_sha256();
        }

    case EVP_PKEY_ED25519:
        return NULL;

    default:
        return EVP_sha256();
    }
}


/* A standalone copy of the public half (no token references). */
static EVP_PKEY *
pki_pkey_public_copy(EVP_PKEY *pk)
{
    unsigned char        *der = NULL;
    const unsigned char  *p;
    EVP_PKEY             *pub;
    int                   len;

    len = i2d_PUBKEY(pk, &der);
    if (len <= 0) {
        return NULL;
    }

    p = der;
    pub = d2i_PUBKEY(NULL, &p, len);
    OPENSSL_free(der);

    return pub;
}


PKI_API EVP_PKEY *
pki_keygen_like(const EVP_PKEY *like, pki_result_t *res)
{
    EVP_PKEY      *pk = NULL;
    const char    *curve;
    int            bits;

    if (like == NULL) {
        pki_fail(res, PKI_INTERNAL, "no key to generate a key like");
        return NULL;
    }

    switch (EVP_PKEY_get_base_id(like)) {

    case EVP_PKEY_RSA:
        bits = EVP_PKEY_get_bits(like);
        if (bits < 2048 || bits > 16384) {
            pki_fail(res, PKI_UNSUPPORTED, "cannot generate RSA %d keys",
                     bits);
            return NULL;
        }
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) bits);
        break;

    case EVP_PKEY_EC:
        switch (pki_pkey_curve_nid(like)) {
        case NID_X9_62_prime256v1:
            curve = "P-256";
            break;
        case NID_secp384r1:
            curve = "P-384";
            break;
        case NID_secp521r1:
            curve = "P-521";
            break;
        default:
            pki_fail(res, PKI_UNSUPPORTED, "cannot generate keys on this "
                     "curve");
            return NULL;
        }
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
        break;

    case EVP_PKEY_ED25519:
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        break;

    case EVP_PKEY_ED448:
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED448");
        break;

    default:
        pki_fail(res, PKI_UNSUPPORTED, "cannot generate keys of this type");
        return NULL;
    }

    if (pk == NULL) {
        pki_fail(res, PKI_INTERNAL, "key generation failed");
        return NULL;
    }

    return pk;
}


/* ---- PKCS#11 modules ------------------------------------------------------
 *
 * A module is initialised once per process (C_Initialize) and finalised by
 * C_Finalize for all its users at once, and a token's login is shared by
 * every session of the process; releasing a slot closes all its sessions
 * (C_CloseAllSessions).  So vaults share one libp11 context and one slot
 * list per module path, counted; the last vault to close it unloads it.
 */

struct pki_p11mod_s {
    char          *path;
    PKCS11_CTX    *ctx;
    PKCS11_SLOT   *slots;
    unsigned int   nslots;
    int            refs;
    pki_p11mod_t  *next;

    void          *dl;               /* our reference to libp11's dlopen */
    int            fn_ok;            /* fn usable (lean signing path) */
    int            login_ok;         /* fn.login, session_info, open and
                                        close usable (pki_vault_login) */
    unsigned int  *stale;            /* per slot: libp11's private keys
                                        listed before our last C_Login
                                        (pki_vault_login); nslots long */
    unsigned int  *pooled;           /* per slot: 1 once a libp11 call
                                        that takes a session of its own
                                        passed (libp11 keeps it pooled:
                                        pki_p11_libp11_room); in stale's
                                        allocation, after it */
    pki_p11fn_t    fn;
};

static pthread_mutex_t   pki_p11_mutex = PTHREAD_MUTEX_INITIALIZER;
static pki_p11mod_t     *pki_p11_mods;

/*
 * libp11's per-module state (the slots, each token's cached key list, its
 * login flag) is shared by every vault on the module, and libp11 does not
 * lock it: two vaults of one token listing its keys at once each appended
 * the token's keys to the one cached list, and every later lookup found
 * the key twice ("matches more than one key") until the module was
 * unloaded.  The calls that read or fill that state (login, key lookup)
 * hold this lock; a vault's write lock is always taken before it.
 */
static pthread_mutex_t   pki_p11_lib_mutex = PTHREAD_MUTEX_INITIALIZER;


static void
pki_p11mod_put(pki_p11mod_t *m)
{
    pki_p11mod_t  **pp;

    pthread_mutex_lock(&pki_p11_mutex);

    if (--m->refs > 0) {
        pthread_mutex_unlock(&pki_p11_mutex);
        return;
    }

    for (pp = &pki_p11_mods; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == m) {
            *pp = m->next;
            break;
        }
    }

    /* Finalised with the lock held: a vault opening meanwhile would load
     * the module anew and call into it (C_Initialize, C_GetSlotList)
     * while this C_Finalize tears down its process-wide state; SoftHSM
     * crashed (test_key_shared). */
    if (m->slots != NULL) {
        PKCS11_release_all_slots(m->ctx, m->slots, m->nslots);
    }

    PKCS11_CTX_unload(m->ctx);      /* C_Finalize */
    PKCS11_CTX_free(m->ctx);

    if (m->dl != NULL) {
        dlclose(m->dl);
    }

    pthread_mutex_unlock(&pki_p11_mutex);

    free(m->stale);
    free(m->path);
    free(m);
}


/* The lean signing path's entry points into the module libp11 loaded: only
 * a module already in memory is used (RTLD_NOLOAD), never a second copy.
 * Missing any of them leaves fn_ok 0: libp11 signs, as before. */
static void
pki_p11mod_fn(pki_p11mod_t *m)
{
    void  *dl;

    m->fn_ok = 0;

    dl = dlopen(m->path, RTLD_NOW | RTLD_NOLOAD);
    if (dl == NULL) {
        (void) dlerror();
        return;
    }

    m->fn.open = (pki_ck_open_pt) dlsym(dl, "C_OpenSession");
    m->fn.close = (pki_ck_close_pt) dlsym(dl, "C_CloseSession");
    m->fn.find_init = (pki_ck_find_init_pt) dlsym(dl, "C_FindObjectsInit");
    m->fn.find = (pki_ck_find_pt) dlsym(dl, "C_FindObjects");
    m->fn.find_final = (pki_ck_find_final_pt) dlsym(dl,
                                                    "C_FindObjectsFinal");
    m->fn.sign_init = (pki_ck_sign_init_pt) dlsym(dl, "C_SignInit");
    m->fn.sign = (pki_ck_sign_pt) dlsym(dl, "C_Sign");
    m->fn.login = (pki_ck_login_pt) dlsym(dl, "C_Login");
    m->fn.session_info = (pki_ck_session_info_pt) dlsym(dl,
                                                        "C_GetSessionInfo");
    (void) dlerror();

    m->dl = dl;
    m->fn_ok = m->fn.open != NULL && m->fn.close != NULL
               && m->fn.find_init != NULL && m->fn.find != NULL
               && m->fn.find_final != NULL && m->fn.sign_init != NULL
               && m->fn.sign != NULL;
    m->login_ok = m->fn.open != NULL && m->fn.close != NULL
                  && m->fn.login != NULL && m->fn.session_info != NULL;
}


/* Returns the module (loaded, counted), or NULL with res filled. */
static pki_p11mod_t *
pki_p11mod_get(const char *vault, const char *path, pki_result_t *res)
{
    pki_p11mod_t  *m;

    pthread_mutex_lock(&pki_p11_mutex);

    for (m = pki_p11_mods; m != NULL; m = m->next) {
        if (strcmp(m->path, path) == 0) {
            m->refs++;
            pthread_mutex_unlock(&pki_p11_mutex);
            return m;
        }
    }

    m = calloc(1, sizeof(*m));
    if (m == NULL || (m->path = strdup(path)) == NULL) {
        free(m);
        pthread_mutex_unlock(&pki_p11_mutex);
        pki_fail(res, PKI_INTERNAL, "out of memory");
        return NULL;
    }

    m->ctx = PKCS11_CTX_new();
    if (m->ctx == NULL) {
        free(m->path);
        free(m);
        pthread_mutex_unlock(&pki_p11_mutex);
        pki_fail(res, PKI_INTERNAL, "vault \"%s\": PKCS11_CTX_new() failed",
                 vault);
        return NULL;
    }

    ERR_clear_error();

    if (PKCS11_CTX_load(m->ctx, path) != 0) {
        unsigned long  e;
        char           last[256];

        PKCS11_CTX_free(m->ctx);
        free(m->path);
        free(m);
        pthread_mutex_unlock(&pki_p11_mutex);

        /*
         * Loading can fail in dlopen() or in C_Initialize(); the queue then
         * holds leftovers of both (DSO, engine), so only its last entry is
         * kept.  C_Initialize may also fail spuriously when several
         * processes start at once, or when the token store is missing.
         */
        last[0] = '\0';
        e = ERR_peek_last_error();
        if (e != 0) {
            ERR_error_string_n(e, last, sizeof(last));
        }
        ERR_clear_error();

        pki_fail(res, PKI_UNAVAILABLE, "vault \"%s\": cannot load or "
                 "initialise PKCS#11 module \"%s\" (token store "
                 "unavailable?)", vault, path);
        if (last[0] != '\0') {
            pki_log(res, "%s", last);
        }
        return NULL;
    }

    if (PKCS11_enumerate_slots(m->ctx, &m->slots, &m->nslots) != 0) {
        PKCS11_CTX_unload(m->ctx);
        PKCS11_CTX_free(m->ctx);
        free(m->path);
        free(m);
        pthread_mutex_unlock(&pki_p11_mutex);
        pki_fail(res, PKI_UNAVAILABLE, "vault \"%s\": cannot list the slots "
                 "of \"%s\"", vault, path);
        return NULL;
    }

    pki_p11mod_fn(m);

    m->stale = calloc(m->nslots > 0 ? 2 * m->nslots : 1,
                      sizeof(unsigned int));
    m->pooled = m->stale + m->nslots;
    if (m->stale == NULL) {
        PKCS11_release_all_slots(m->ctx, m->slots, m->nslots);
        PKCS11_CTX_unload(m->ctx);
        PKCS11_CTX_free(m->ctx);
        if (m->dl != NULL) {
            dlclose(m->dl);
        }
        free(m->path);
        free(m);
        pthread_mutex_unlock(&pki_p11_mutex);
        pki_fail(res, PKI_INTERNAL, "out of memory");
        return NULL;
    }

    m->refs = 1;
    m->next = pki_p11_mods;
    pki_p11_mods = m;

    pthread_mutex_unlock(&pki_p11_mutex);

    return m;
}


/* ---- the PIN's memory ----------------------------------------------------
 *
 * The PIN stays in memory for the vault's life: a lost login is logged in
 * again with it.  It has a mapping of its own, left out of core dumps
 * (MADV_DONTDUMP, inherited by the workers) and locked out of swap (mlock,
 * which a fork does not inherit: pki_vault_open locks it again; without the
 * privilege or the RLIMIT_MEMLOCK for it the PIN stays unlocked, said once
 * per process).  The PIN file is read straight into it, so no other copy
 * is made, and it is wiped before it is unmapped.
 */

static int  pki_pin_mlock_warned;


static size_t
pki_pin_size(void)
{
    long    pg;
    size_t  sz;

    pg = sysconf(_SC_PAGESIZE);
    sz = pg > 0 ? (size_t) pg : 4096;

    return (PKI_PIN_MAX + 2 + sz - 1) / sz * sz;
}


/* Locks the PIN's pages; the first failure in a process goes to res->log
 * (a warning, not an error). */
static void
pki_pin_lock(char *pin, pki_result_t *res)
{
    int  err;

    if (mlock(pin, pki_pin_size()) == 0) {
        return;
    }

    err = errno;

    if (__atomic_exchange_n(&pki_pin_mlock_warned, 1, __ATOMIC_SEQ_CST)) {
        return;
    }

    pki_log(res, "%sthe PIN's memory is not locked against swapping: "
            "mlock() failed: %s (RLIMIT_MEMLOCK)",
            res != NULL && res->log[0] ? "; " : "", strerror(err));
}


static char *
pki_pin_alloc(pki_result_t *res)
{
    int     err;
    void   *p;
    size_t  sz;

    sz = pki_pin_size();

    p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
             -1, 0);
    if (p == MAP_FAILED) {
        err = errno;
        pki_fail(res, PKI_INTERNAL, "mmap() for the PIN failed: %s",
                 strerror(err));
        return NULL;
    }

    if (madvise(p, sz, MADV_DONTDUMP) != 0) {
        /* a PIN that a core dump would hold: refused */
        err = errno;
        (void) munmap(p, sz);
        pki_fail(res, PKI_INTERNAL, "madvise(MADV_DONTDUMP) for the PIN "
                 "failed: %s", strerror(err));
        return NULL;
    }

    pki_pin_lock(p, res);

    return p;
}


void
pki_pin_free(char *pin)
{
    size_t  sz;

    if (pin == NULL) {
        return;
    }

    sz = pki_pin_size();

    OPENSSL_cleanse(pin, sz);
    (void) munlock(pin, sz);
    (void) munmap(pin, sz);
}


/* ---- vaults ------------------------------------------------------------- */

static void
pki_vault_wipe_pin(pki_vault_t *v)
{
    pki_pin_free(v->pin);
    v->pin = NULL;
    v->pin_len = 0;
}


/* Reads the PIN file path of the vault name: returns the PIN
 * (pki_pin_alloc'ed, NUL-terminated, *plen bytes) and the file's stat in
 * *pst, or NULL with res filled.  Never puts the PIN into res.  The file is
 * read straight into the PIN's memory: no other buffer holds it. */
static char *
pki_pin_load(const char *name, const char *path, size_t *plen,
    struct stat *pst, pki_result_t *res)
{
    char           *pin;
    unsigned char  *buf;
    ssize_t         n;
    size_t          len = 0;
    int             fd, err;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd == -1) {
        err = errno;
        pki_fail(res, PKI_INTERNAL, "vault \"%s\": cannot open PIN file "
                 "\"%s\": %s", name, path, strerror(err));
        return NULL;
    }

    if (fstat(fd, pst) == -1 || !S_ISREG(pst->st_mode)) {
        close(fd);
        pki_fail(res, PKI_INTERNAL, "vault \"%s\": PIN file \"%s\" is not "
                 "a regular file", name, path);
        return NULL;
    }

    pin = pki_pin_alloc(res);
    if (pin == NULL) {
        close(fd);
        return NULL;
    }

    buf = (unsigned char *) pin;

    /* Read at most PKI_PIN_MAX + 1 bytes: one more tells it is too long
     * (after a trailing newline is allowed for). */
    n = 0;
    while (len < PKI_PIN_MAX + 2) {
        n = read(fd, buf + len, PKI_PIN_MAX + 2 - len);
        if (n == -1 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        len += (size_t) n;
    }

    err = (n == -1) ? errno : 0;
    close(fd);

    if (err != 0) {
        pki_pin_free(pin);
        pki_fail(res, PKI_INTERNAL, "vault \"%s\": cannot read PIN file "
                 "\"%s\": %s", name, path, strerror(err));
        return NULL;
    }

    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) {
        len--;
    }

    if (len == 0 || len > PKI_PIN_MAX || memchr(buf, '\0', len) != NULL) {
        pki_pin_free(pin);
        pki_fail(res, PKI_INTERNAL, "vault \"%s\": PIN file \"%s\" %s",
                 name, path,
                 len == 0 ? "is empty"
                 : len > PKI_PIN_MAX ? "is too long (at most 256 bytes)"
                 : "contains a NUL byte");
        return NULL;
    }

    /* the line end read with it, gone: only the PIN and its NUL remain */
    OPENSSL_cleanse(buf + len, PKI_PIN_MAX + 2 - len);
    *plen = len;

    return pin;
}


char *
pki_pin_read(const char *name, const char *path, size_t *len,
    pki_result_t *res)
{
    struct stat  st;

    if (name == NULL || path == NULL || len == NULL) {
        pki_fail(res, PKI_INTERNAL, "pki_pin_read: no name, path or length");
        return NULL;
    }

    return pki_pin_load(name, path, len, &st, res);
}


/* Reads the PIN file into v->pin. */
static int
pki_vault_read_pin(pki_vault_t *v, pki_result_t *res)
{
    char         *pin;
    size_t        len;
    struct stat   st;

    pin = pki_pin_load(v->name, v->pin_file, &len, &st, res);
    if (pin == NULL) {
        return 0;
    }

    pki_vault_wipe_pin(v);

    v->pin = pin;
    v->pin_len = len;
    v->pin_st = st;

    return 1;
}


/* 1 when a failed login's CKR says the token or its device is away or
 * failing (it may come back, so the request is worth retrying: 503), not
 * that it refuses this login for good. */
static int
pki_login_outage(unsigned long ckr)
{
    switch (ckr) {
    case 0x2UL:     /* CKR_HOST_MEMORY */
    case 0x5UL:     /* CKR_GENERAL_ERROR */
    case 0x6UL:     /* CKR_FUNCTION_FAILED */
    case 0x30UL:    /* CKR_DEVICE_ERROR */
    case 0x31UL:    /* CKR_DEVICE_MEMORY */
    case 0x32UL:    /* CKR_DEVICE_REMOVED */
    case 0xb0UL:    /* CKR_SESSION_CLOSED */
    case 0xb1UL:    /* CKR_SESSION_COUNT */
    case 0xb3UL:    /* CKR_SESSION_HANDLE_INVALID */
    case 0xe0UL:    /* CKR_TOKEN_NOT_PRESENT */
    case 0xe1UL:    /* CKR_TOKEN_NOT_RECOGNIZED */
    case 0x190UL:   /* CKR_CRYPTOKI_NOT_INITIALIZED */
        return 1;
    default:
        return 0;
    }
}


static const char *
pki_pin_refusal(unsigned long ckr)
{
    switch (ckr) {
    case PKI_CKR_PIN_LOCKED:
        return "PIN locked";
    case PKI_CKR_PIN_EXPIRED:
        return "PIN expired";
    case PKI_CKR_PIN_LEN_RANGE:
        return "wrong PIN length";
    default:
        return "wrong PIN";
    }
}


/* 1 when the file at path is still the one whose stat was taken (same
 * device, inode, size, mtime and ctime), or when it cannot be looked at. */
static int
pki_pin_file_same(const char *path, const struct stat *was)
{
    struct stat  st;

    if (stat(path, &st) == -1) {
        return 1;
    }

    return st.st_dev == was->st_dev && st.st_ino == was->st_ino
           && st.st_size == was->st_size
           && st.st_mtim.tv_sec == was->st_mtim.tv_sec
           && st.st_mtim.tv_nsec == was->st_mtim.tv_nsec
           && st.st_ctim.tv_sec == was->st_ctim.tv_sec
           && st.st_ctim.tv_nsec == was->st_ctim.tv_nsec;
}


/*
 * The token refused v->pin (v->pin_refused): no C_Login with it again, as
 * an HSM locks the PIN after a few failures.  Only a PIN file that changed
 * (another file, size, mtime or ctime) is read again, and only a PIN other
 * than the refused one ends the refusal (a reload, i.e. a new vault, ends
 * it too).  Returns 1 when there is a new PIN to try; otherwise 0 with res
 * filled (PKI_UNAVAILABLE).  Write lock held.
 */
static int
pki_vault_pin_retry(pki_vault_t *v, pki_result_t *res)
{
    char          *pin;
    size_t         len;
    struct stat    st;
    pki_result_t   tmp;

    if (pki_pin_file_same(v->pin_file, &v->pin_st)) {
        goto refused;
    }

    pki_result_init(&tmp);

    pin = pki_pin_load(v->name, v->pin_file, &len, &st, &tmp);
    if (pin == NULL) {
        /* read again next time: the file may be half written */
        pki_fail(res, PKI_UNAVAILABLE, "%s", tmp.detail);
        return 0;
    }

    if (len == v->pin_len && CRYPTO_memcmp(pin, v->pin, len) == 0) {
        pki_pin_free(pin);
        v->pin_st = st;
        goto refused;
    }

    pki_vault_wipe_pin(v);

    v->pin = pin;
    v->pin_len = len;
    v->pin_st = st;
    v->pin_refused = 0;

    return 1;

refused:

    pki_fail(res, PKI_UNAVAILABLE, "vault \"%s\": the token \"%s\" refused "
             "the PIN (%s); fix the PIN file \"%s\", nothing is retried "
             "until it changes", v->name, v->token,
             pki_pin_refusal(v->pin_refused), v->pin_file);
    return 0;
}


static pki_vault_t *pki_vault_create(const char *name,
    const char *module_path, const char *token_label, const char *pin_file,
    int read_pin, pki_result_t *res);


PKI_API pki_vault_t *
pki_vault_new(const char *name, const char *module_path,
    const char *token_label, const char *pin_file, pki_result_t *res)
{
    return pki_vault_create(name, module_path, token_label, pin_file, 1,
                            res);
}


PKI_API pki_vault_t *
pki_vault_declare(const char *name, const char *module_path,
    const char *token_label, const char *pin_file, pki_result_t *res)
{
    return pki_vault_create(name, module_path, token_label, pin_file, 0,
                            res);
}


static pki_vault_t *
pki_vault_create(const char *name, const char *module_path,
    const char *token_label, const char *pin_file, int read_pin,
    pki_result_t *res)
{
    pthread_rwlockattr_t   attr;
    pki_vault_t           *v;

    if (name == NULL || module_path == NULL || token_label == NULL
        || pin_file == NULL || *module_path == '\0' || *token_label == '\0'
        || *pin_file == '\0')
    {
        pki_fail(res, PKI_INTERNAL, "vault \"%s\": module, token and "
                 "pin_file are required", name != NULL ? name : "");
        return NULL;
    }

    if (strlen(token_label) > 32) {
        pki_fail(res, PKI_INTERNAL, "vault \"%s\": token label \"%.40s\" "
                 "is longer than 32 characters", name, token_label);
        return NULL;
    }

    v = calloc(1, sizeof(*v));
    if (v == NULL) {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        return NULL;
    }

    v->idle_ms = PKI_P11_IDLE_MS;
    v->call_timeout_ms = PKI_CALL_TIMEOUT;
    v->name = pki_strdup(name);
    v->module = pki_strdup(module_path);
    v->token = pki_strdup(token_label);
    v->pin_file = pki_strdup(pin_file);

    if (v->name == NULL || v->module == NULL || v->token == NULL
        || v->pin_file == NULL)
    {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        goto failed;
    }

    if (pthread_rwlockattr_init(&attr) != 0) {
        pki_fail(res, PKI_INTERNAL, "pthread_rwlockattr_init() failed");
        goto failed;
    }

    pthread_rwlockattr_setkind_np(&attr,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);

    if (pthread_rwlock_init(&v->lock, &attr) != 0) {
        pthread_rwlockattr_destroy(&attr);
        pki_fail(res, PKI_INTERNAL, "pthread_rwlock_init() failed");
        goto failed;
    }

    pthread_rwlockattr_destroy(&attr);

    if (pthread_mutex_init(&v->state_mutex, NULL) != 0) {
        pthread_rwlock_destroy(&v->lock);
        pki_fail(res, PKI_INTERNAL, "pthread_mutex_init() failed");
        goto failed;
    }

    if (pthread_cond_init(&v->state_cond, NULL) != 0) {
        pthread_mutex_destroy(&v->state_mutex);
        pthread_rwlock_destroy(&v->lock);
        pki_fail(res, PKI_INTERNAL, "pthread_cond_init() failed");
        goto failed;
    }

    v->declared = !read_pin;

    if (read_pin && !pki_vault_read_pin(v, res)) {
        pthread_cond_destroy(&v->state_cond);
        pthread_mutex_destroy(&v->state_mutex);
        pthread_rwlock_destroy(&v->lock);
        goto failed;
    }

    return v;

failed:

    free(v->name);
    free(v->module);
    free(v->token);
    free(v->pin_file);
    free(v);
    return NULL;
}


PKI_API const char *
pki_vault_name(const pki_vault_t *v)
{
    return v != NULL ? v->name : NULL;
}


PKI_API const char *
pki_vault_token(const pki_vault_t *v)
{
    return v != NULL ? v->token : NULL;
}


PKI_API void
pki_vault_session_idle(pki_vault_t *v, long ms)
{
    v->idle_ms = ms < 0 ? 0 : ms;
}


/* ---- the hang watchdog ----------------------------------------------------
 *
 * PKCS#11 cannot cancel a call: a token that stops answering (a network
 * HSM gone silent, a USB reset, a driver deadlock) holds the thread that
 * called it until it returns, and with it whatever that thread waits for.
 * Each token operation (open, login, fetch, sign, decrypt) of a vault takes
 * a slot with its start time while it runs; when the oldest one has run
 * for call_timeout_ms, the vault is hung: new operations on its keys fail
 * at once with PKI_UNAVAILABLE, without a lock and without a token call,
 * until that call returns.  The servers ask pki_key_hung() before they
 * hand a request to a thread, so that a hung token does not take every
 * thread of their pool.
 */

static long long
pki_now_ms(void)
{
    return (long long) (pki_int_now() * 1000.0) + 1;
}


/* The slot of an operation that starts now, -1 if none is free. */
static int
pki_vault_call_begin(pki_vault_t *v)
{
    int        i;
    long long  now, zero;

    now = pki_now_ms();

    for (i = 0; i < PKI_VAULT_CALLS; i++) {
        zero = 0;

        if (__atomic_load_n(&v->calls[i], __ATOMIC_RELAXED) == 0
            && __atomic_compare_exchange_n(&v->calls[i], &zero, now, 0,
                                           __ATOMIC_ACQ_REL,
                                           __ATOMIC_RELAXED))
        {
            return i;
        }
    }

    return -1;
}


static void
pki_vault_call_end(pki_vault_t *v, int slot)
{
    if (slot >= 0) {
        __atomic_store_n(&v->calls[slot], 0, __ATOMIC_RELEASE);
    }
}


PKI_API void
pki_vault_call_timeout(pki_vault_t *v, long ms)
{
    if (v != NULL) {
        v->call_timeout_ms = ms < 0 ? 0 : ms;
    }
}


PKI_API long
pki_vault_call_age(const pki_vault_t *v)
{
    int        i;
    long long  t, oldest;

    if (v == NULL) {
        return 0;
    }

    oldest = 0;

    for (i = 0; i < PKI_VAULT_CALLS; i++) {
        t = __atomic_load_n(&v->calls[i], __ATOMIC_ACQUIRE);
        if (t != 0 && (oldest == 0 || t < oldest)) {
            oldest = t;
        }
    }

    if (oldest == 0) {
        return 0;
    }

    t = pki_now_ms() - oldest;

    return t > 0 ? (long) t : 1;
}


PKI_API long
pki_vault_hung(const pki_vault_t *v)
{
    long  age;

    if (v == NULL || v->call_timeout_ms == 0) {
        return 0;
    }

    age = pki_vault_call_age(v);

    return age >= v->call_timeout_ms ? age : 0;
}


PKI_API long
pki_key_hung(const pki_key_t *k)
{
    return k != NULL ? pki_vault_hung(k->vault) : 0;
}


/* PKI_UNAVAILABLE: v is hung, for age ms (res filled). */
static pki_status_t
pki_vault_hung_fail(const pki_vault_t *v, long age, pki_result_t *res)
{
    return pki_fail(res, PKI_UNAVAILABLE, "token \"%s\" of vault \"%s\" is "
                    "hung: a call in flight for %ld s", v->token, v->name,
                    age < 1500 ? 1 : (age + 500) / 1000);
}


/* PKI_UNAVAILABLE when the key's vault is hung (res filled), else PKI_OK. */
static pki_status_t
pki_key_hung_check(const pki_key_t *k, pki_result_t *res)
{
    long  age;

    age = pki_key_hung(k);

    if (age == 0) {
        return PKI_OK;
    }

    return pki_vault_hung_fail(k->vault, age, res);
}


/*
 * ts: when the vault will be hung if the oldest call in flight goes on (on
 * CLOCK_MONOTONIC): a waiter waits once until then, not in slices, which
 * would let the readers behind a reopen that is waiting in at each slice's
 * end.  At least 1 ms ahead.
 */
static void
pki_vault_hung_at(const pki_vault_t *v, struct timespec *ts)
{
    long  ms;

    ms = v->call_timeout_ms - pki_vault_call_age(v);
    if (ms < 1) {
        ms = 1;
    }

    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    ts->tv_sec += ts->tv_nsec / 1000000000L;
    ts->tv_nsec %= 1000000000L;
}


/*
 * Takes v's lock, shared (write 0) or exclusive, unless the vault is hung,
 * before or while this thread waits for it.  A token call that hangs
 * holds the lock shared for as long as it hangs, and a reopen queued for
 * it exclusively holds up every signer that comes after; such a waiter
 * would keep its request, and its pool's thread, until the token answers.
 * The hang is looked for again once the lock is taken: a reopen that gave
 * up on the hung call lets the readers queued behind it in, and those
 * must not call the token either.  Without a call_timeout, the plain
 * wait.  Returns PKI_OK with the lock, PKI_UNAVAILABLE without it (res
 * filled).
 */
static pki_status_t
pki_vault_lock(pki_vault_t *v, int write, pki_result_t *res)
{
    int              rc, tried;
    long             age;
    struct timespec  ts;

    if (v->call_timeout_ms == 0) {
        if (write) {
            pthread_rwlock_wrlock(&v->lock);
        } else {
            pthread_rwlock_rdlock(&v->lock);
        }
        return PKI_OK;
    }

    for (tried = 0; ; tried = 1) {
        age = pki_vault_hung(v);
        if (age != 0) {
            return pki_vault_hung_fail(v, age, res);
        }

        if (!tried) {
            rc = write ? pthread_rwlock_trywrlock(&v->lock)
                       : pthread_rwlock_tryrdlock(&v->lock);

        } else {
            pki_vault_hung_at(v, &ts);
            rc = write ? pthread_rwlock_clockwrlock(&v->lock,
                                                    CLOCK_MONOTONIC, &ts)
                       : pthread_rwlock_clockrdlock(&v->lock,
                                                    CLOCK_MONOTONIC, &ts);

            if (rc != 0 && rc != ETIMEDOUT) {
                /* not a wait that can end (EDEADLK, EAGAIN): as before */
                if (write) {
                    pthread_rwlock_wrlock(&v->lock);
                } else {
                    pthread_rwlock_rdlock(&v->lock);
                }
                rc = 0;
            }
        }

        if (rc == 0) {
            age = pki_vault_hung(v);
            if (age == 0) {
                return PKI_OK;
            }

            pthread_rwlock_unlock(&v->lock);
            return pki_vault_hung_fail(v, age, res);
        }
    }
}


static void
pki_key_drop_handles(pki_key_t *k)
{
    size_t         i;
    pki_p11mod_t  *m;

    if (k->priv != NULL) {
        EVP_PKEY_free(k->priv);
        k->priv = NULL;
    }

    k->gen = 0;

    /* The lean path's sessions: the module is still initialised here (the
     * vault drops its keys' handles before it releases the module), and
     * nobody signs (write lock held, or the key is being closed). */
    if (k->vault != NULL) {
        pthread_mutex_lock(&k->p11_mutex);

        m = k->vault->mod;
        if (m != NULL && m->fn_ok && k->p11_gen == k->vault->gen) {
            for (i = 0; i < k->p11_nsess; i++) {
                (void) m->fn.close(k->p11_sess[i].s);
            }
        }

        free(k->p11_sess);
        k->p11_sess = NULL;
        k->p11_nsess = 0;
        k->p11_state = 0;
        k->p11_gen = 0;

        pthread_mutex_unlock(&k->p11_mutex);
    }
}


/* Caller holds the write lock (or is the only thread). */
static void
pki_vault_close_locked(pki_vault_t *v)
{
    pki_key_t  *k;

    for (k = v->keys; k != NULL; k = k->next) {
        pki_key_drop_handles(k);
    }

    if (v->ctx == NULL) {
        return;
    }

    if (v->login_open) {
        (void) v->mod->fn.close(v->login_sess);
        v->login_open = 0;
    }

    /* No explicit C_Logout and no slot release here: the login and the
     * slots belong to every vault of this module; C_Finalize by the last
     * user of the module ends them. */
    pki_p11mod_put(v->mod);

    v->mod = NULL;
    v->ctx = NULL;
    v->slots = NULL;
    v->nslots = 0;
    v->slot = NULL;

    ERR_clear_error();
}


/* The CKR code of the last libp11 error, or 0. */
static unsigned long
pki_p11_last_ckr(void)
{
    unsigned long  e;
    int            lib;

    e = ERR_peek_last_error();
    if (e == 0) {
        return 0;
    }

    lib = ERR_get_CKR_code();

    if (lib != 0 && ERR_GET_LIB(e) == lib) {
        return (unsigned long) ERR_GET_REASON(e);
    }

    return 0;
}


/*
 * Whether libp11 can open a session on v's token for a call that needs
 * one of its own (listing keys, its login): CKR_SESSION_COUNT when the
 * token has none free, else 0.  libp11 0.4.12 takes a CKR_SESSION_COUNT
 * from C_OpenSession for its session limit and then waits for one of
 * its own sessions to come back; when it holds none (a vault just opened
 * or reopened), nothing ever wakes it, and the thread hangs for good
 * with the vault's write lock and pki_p11_lib_mutex held.  So a session
 * is opened here first and closed just before libp11's call: with none
 * free the caller answers busy.  Another process can still take the
 * session in between; the window is one C_CloseSession wide.  Once a
 * call of libp11 that takes a session passed, libp11 keeps that session
 * in its pool and waits only for it (m->pooled: no probe).  Without the
 * module's own C_OpenSession (never with libp11 over a conforming
 * module) it says 0.  Under pki_p11_lib_mutex.
 */
static unsigned long
pki_p11_libp11_room(pki_vault_t *v)
{
    pki_ck_ulong   s, rv;
    pki_p11mod_t  *m;

    m = v->mod;

    if (m->pooled[v->slot - m->slots]
        || m->fn.open == NULL || m->fn.close == NULL)
    {
        return 0;
    }

    rv = m->fn.open(PKCS11_get_slotid_from_slot(v->slot),
                    PKI_CKF_SERIAL_SESSION, NULL, NULL, &s);
    if (rv == PKI_CKR_SESSION_COUNT) {
        return PKI_CKR_SESSION_COUNT;
    }

    if (rv == PKI_CKR_OK) {
        (void) m->fn.close(s);
    }

    return 0;
}


/*
 * Logs the process in to v's token, unless it is already, through the
 * module's own C_Login in a session the vault keeps while it is open (a
 * token's login lasts while any session of the process is open on it).
 * Not libp11's PKCS11_login: that trusts a logged-in flag of its own,
 * shared by every vault of the module and never cleared by a C_Logout
 * from elsewhere, so a vault reopened while another held the module never
 * logged in again; and it keeps a strdup of the PIN in ordinary heap (for
 * its relogin after fork) until the module is finalised.  Here the token's
 * own session state decides, and the PIN is read from v's locked copy
 * only.  Returns the CKR value, 0 when logged in.  Under
 * pki_p11_lib_mutex.
 */
static unsigned long
pki_vault_login(pki_vault_t *v)
{
    unsigned int            n;
    pki_ck_ulong            s, rv;
    PKCS11_KEY             *keys;
    pki_p11mod_t           *m;
    pki_ck_session_info_t   info;

    m = v->mod;

    rv = m->fn.open(PKCS11_get_slotid_from_slot(v->slot),
                    PKI_CKF_SERIAL_SESSION, NULL, NULL, &s);
    if (rv != PKI_CKR_OK) {
        return rv;
    }

    memset(&info, 0, sizeof(info));
    rv = m->fn.session_info(s, &info);

    if (rv != PKI_CKR_OK
        || (info.state != PKI_CKS_RO_USER_FUNCTIONS
            && info.state != PKI_CKS_RW_USER_FUNCTIONS))
    {
        /* Every private key libp11 listed so far is stale once the
         * login was lost: PKCS#11 invalidates a process's handles to
         * private objects at logout, for good, and after the login the
         * token hands out new ones, which libp11 appends to its list
         * (it drops an entry only if the handle is the same).  The key
         * lookup prefers what is listed after this mark. */
        if (pki_p11_libp11_room(v) != 0) {
            (void) m->fn.close(s);
            return PKI_CKR_SESSION_COUNT;
        }

        if (PKCS11_enumerate_keys(v->slot->token, &keys, &n) == 0) {
            m->stale[v->slot - m->slots] = n;
            m->pooled[v->slot - m->slots] = 1;
        }
        ERR_clear_error();

        rv = m->fn.login(s, PKI_CKU_USER, (unsigned char *) v->pin,
                         (pki_ck_ulong) v->pin_len);
        if (rv == PKI_CKR_USER_ALREADY_LOGGED_IN) {
            rv = PKI_CKR_OK;
        }
    }

    if (rv != PKI_CKR_OK) {
        (void) m->fn.close(s);
        return rv;
    }

    v->login_sess = s;
    v->login_open = 1;

    return PKI_CKR_OK;
}


/* One attempt.  Returns PKI_OK, PKI_UNAVAILABLE (transient: retry) or any
 * other status (permanent).  On failure the context is gone. */
static pki_status_t
pki_vault_try_open(pki_vault_t *v, int *login_failed, pki_result_t *res)
{
    PKCS11_SLOT    *slot;
    unsigned long   ckr;
    unsigned int    i;
    int             logged_in;

    if (strchr(v->module, '/') != NULL && access(v->module, R_OK) != 0) {
        return pki_fail(res, PKI_INTERNAL, "vault \"%s\": PKCS#11 module "
                        "\"%s\" not found or not readable", v->name,
                        v->module);
    }

    v->mod = pki_p11mod_get(v->name, v->module, res);
    if (v->mod == NULL) {
        return res->status;
    }

    v->ctx = v->mod->ctx;
    v->slots = v->mod->slots;
    v->nslots = v->mod->nslots;

    slot = NULL;

    for (i = 0; i < v->nslots; i++) {
        if (v->slots[i].token != NULL && v->slots[i].token->label != NULL
            && v->slots[i].token->initialized
            && strcmp(v->slots[i].token->label, v->token) == 0)
        {
            slot = &v->slots[i];
            break;
        }
    }

    if (slot == NULL) {
        pki_fail(res, PKI_UNAVAILABLE, "vault \"%s\": token \"%s\" not found "
                 "in \"%s\"", v->name, v->token, v->module);
        goto failed;
    }

    v->slot = slot;

    pthread_mutex_lock(&pki_p11_lib_mutex);

    if (v->mod->login_ok) {
        ckr = pki_vault_login(v);

    } else {
        logged_in = 0;
        if (PKCS11_is_logged_in(slot, 0, &logged_in) != 0) {
            logged_in = 0;
        }

        ckr = 0;
        if (!logged_in) {
            ERR_clear_error();

            ckr = pki_p11_libp11_room(v);

            if (ckr == 0 && PKCS11_login(slot, 0, v->pin) != 0) {
                ckr = pki_p11_last_ckr();
                if (ckr == 0) {
                    ckr = ~0UL;
                }
            }

            if (ckr == 0) {
                v->mod->pooled[slot - v->slots] = 1;
            }
        }
    }

    pthread_mutex_unlock(&pki_p11_lib_mutex);

    if (ckr == PKI_CKR_USER_ALREADY_LOGGED_IN) {
        ERR_clear_error();

    } else if (ckr == PKI_CKR_PIN_INCORRECT
               || ckr == PKI_CKR_PIN_INVALID
               || ckr == PKI_CKR_PIN_LEN_RANGE
               || ckr == PKI_CKR_PIN_EXPIRED
               || ckr == PKI_CKR_PIN_LOCKED)
    {
        /* Never retried: a real HSM counts wrong PINs and locks the PIN
         * after a few (pki_vault_pin_retry). */
        v->pin_refused = ckr;
        pki_fail(res, PKI_UNAVAILABLE, "vault \"%s\": the token \"%s\" "
                 "refused the PIN (%s); fix the PIN file \"%s\", nothing "
                 "is retried until it changes", v->name, v->token,
                 pki_pin_refusal(ckr), v->pin_file);
        goto failed;

    } else if (ckr == ~0UL) {
        (*login_failed)++;
        pki_fail(res, PKI_UNAVAILABLE, "vault \"%s\": login to token \"%s\" "
                 "failed (wrong PIN?)", v->name, v->token);
        goto failed;

    } else if (ckr != 0) {
        /* an outage is retried and stays a 503 however long it lasts;
         * any other refusal three times over is not a race */
        if (!pki_login_outage(ckr)) {
            (*login_failed)++;
        }
        pki_fail(res, PKI_UNAVAILABLE, "vault \"%s\": login to token \"%s\" "
                 "failed (CKR 0x%lx)", v->name, v->token, ckr);
        goto failed;
    }

    ERR_clear_error();
    return PKI_OK;

failed:

    pki_vault_close_locked(v);
    return res->status;
}


static pki_status_t
pki_vault_open_locked_do(pki_vault_t *v, pki_result_t *res)
{
    pki_status_t  st;
    int           i, login_failed = 0;

    if (v->declared) {
        return pki_fail(res, PKI_INTERNAL, "vault \"%s\" was declared "
                        "only: it does not open", v->name);
    }

    if (v->pin_refused && !pki_vault_pin_retry(v, res)) {
        return res->status;
    }

    for (i = 0; i < PKI_OPEN_TRIES; i++) {
        if (i > 0) {
            pki_jitter_sleep(20, 50);
        }

        pki_result_init(res);

        st = pki_vault_try_open(v, &login_failed, res);

        if (st == PKI_OK) {
            /* a worker's copy of the PIN's pages is not locked (fork does
             * not inherit mlock): locked again, a failure said in
             * res->log */
            if (v->pin != NULL) {
                pki_pin_lock(v->pin, res);
            }
            return PKI_OK;
        }

        if (st != PKI_UNAVAILABLE || v->pin_refused) {
            return st;
        }

        if (login_failed >= 3) {
            /* The token is there but refuses the login, and not
             * because it is away or failing: not a race. */
            res->status = PKI_INTERNAL;
            return PKI_INTERNAL;
        }
    }

    return res->status;
}


/* Opens the vault (write lock held): a new generation, or the backoff of
 * pki_vault_recover grows. */
static pki_status_t
pki_vault_open_locked(pki_vault_t *v, pki_result_t *res)
{
    pki_result_t  tmp;
    pki_status_t  st;

    if (v->ctx != NULL) {
        return PKI_OK;
    }

    if (res == NULL) {
        res = &tmp;
    }

    st = pki_vault_open_locked_do(v, res);

    pthread_mutex_lock(&v->state_mutex);

    if (st == PKI_OK) {
        v->gen++;
        if (v->gen == 0) {
            v->gen = 1;
        }
        v->backoff_ms = 0;
        v->retry_after = 0;
        v->last_error[0] = '\0';

    } else {
        v->backoff_ms = v->backoff_ms == 0 ? PKI_BACKOFF_MIN
                        : v->backoff_ms * 2 > PKI_BACKOFF_MAX
                          ? PKI_BACKOFF_MAX : v->backoff_ms * 2;
        v->retry_after = pki_int_now() + v->backoff_ms / 1000.0;
        snprintf(v->last_error, sizeof(v->last_error), "%s", res->detail);
    }

    pthread_mutex_unlock(&v->state_mutex);

    return st;
}


PKI_API pki_status_t
pki_vault_open(pki_vault_t *v, pki_result_t *res)
{
    int           slot;
    pki_status_t  st;

    if (v == NULL) {
        return pki_fail(res, PKI_INTERNAL, "no vault");
    }

    slot = pki_vault_call_begin(v);

    pthread_rwlock_wrlock(&v->lock);
    st = pki_vault_open_locked(v, res);
    pthread_rwlock_unlock(&v->lock);

    pki_vault_call_end(v, slot);

    return st;
}


PKI_API void
pki_vault_close(pki_vault_t *v)
{
    if (v == NULL) {
        return;
    }

    pthread_rwlock_wrlock(&v->lock);
    pki_vault_close_locked(v);
    pthread_rwlock_unlock(&v->lock);
}


PKI_API void
pki_vault_free(pki_vault_t *v)
{
    pki_key_t  *k;

    if (v == NULL) {
        return;
    }

    pki_vault_close(v);

    /* Keys that outlive their vault become unusable, not dangling. */
    for (k = v->keys; k != NULL; k = k->next) {
        k->vault = NULL;
        __atomic_store_n(&k->state, PKI_KEY_CLOSED, __ATOMIC_RELEASE);
    }

    pthread_cond_destroy(&v->state_cond);
    pthread_mutex_destroy(&v->state_mutex);
    pthread_rwlock_destroy(&v->lock);
    pki_vault_wipe_pin(v);
    free(v->name);
    free(v->module);
    free(v->token);
    free(v->pin_file);
    free(v);
}


/* ---- pkcs11: URIs (RFC 7512) -------------------------------------------- */

typedef struct {
    char           token[PKI_LABEL_MAX + 1];
    int            has_token;
    char           object[PKI_LABEL_MAX + 1];
    int            has_object;
    unsigned char  id[PKI_ID_MAX];
    size_t         id_len;
    int            has_id;
} pki_uri_t;


static int
pki_hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}


/* Percent-decodes s[0..len) into out (capacity cap).  Returns the decoded
 * length, or -1 on a bad escape, -2 if too long. */
static long
pki_pct_decode(const char *s, size_t len, unsigned char *out, size_t cap)
{
    size_t  i, n = 0;
    int     hi, lo;

    for (i = 0; i < len; i++) {
        unsigned char  c = (unsigned char) s[i];

        if (c == '%') {
            if (i + 2 >= len) {
                return -1;
            }
            hi = pki_hexval((unsigned char) s[i + 1]);
            lo = pki_hexval((unsigned char) s[i + 2]);
            if (hi < 0 || lo < 0) {
                return -1;
            }
            c = (unsigned char) (hi << 4 | lo);
            i += 2;

        } else if (c < 0x21 || c > 0x7e) {
            return -1;
        }

        if (n >= cap) {
            return -2;
        }
        out[n++] = c;
    }

    return (long) n;
}


/* Parses a text attribute (token, object) into a NUL-terminated buffer. */
static int
pki_uri_text(const char *ref, const char *name, const char *v, size_t len,
    char *out, pki_result_t *res)
{
    long  n;

    n = pki_pct_decode(v, len, (unsigned char *) out, PKI_LABEL_MAX);

    if (n == -1) {
        pki_fail(res, PKI_MALFORMED, "key \"%s\": bad percent-encoding in "
                 "attribute \"%s\"", ref, name);
        return 0;
    }

    if (n == -2) {
        pki_fail(res, PKI_MALFORMED, "key \"%s\": attribute \"%s\" is too "
                 "long", ref, name);
        return 0;
    }

    if (memchr(out, '\0', (size_t) n) != NULL) {
        pki_fail(res, PKI_MALFORMED, "key \"%s\": attribute \"%s\" contains "
                 "a NUL byte", ref, name);
        return 0;
    }

    out[n] = '\0';
    return 1;
}


/*
 * ref as an error may show it: from the first "pin-" (any case, anywhere:
 * pin-value, pin-source, however mistyped around them) on, everything
 * becomes "(hidden)", so that a URI refused for another reason does not
 * carry its PIN into a log.  To the end: a PIN may hold "&" in the path
 * and "?" in the query (RFC 7512), and a URI refused as malformed may not
 * split where a parser would.  (pki_key_new refuses such a URI before
 * this; the guard stays for the parser's own callers.)
 */
static void
pki_uri_redact(const char *ref, char *out, size_t size)
{
    size_t       n, nlen;
    const char  *p;

    n = 0;

    for (p = ref; *p != '\0' && n + 1 < size; ) {

        nlen = strncasecmp(p, "pin-", 4) == 0 ? 4 : 0;

        if (nlen == 0) {
            out[n++] = *p++;
            continue;
        }

        n += (size_t) snprintf(out + n, size - n, "%.*s(hidden)",
                               (int) nlen, p);
        if (n >= size) {
            n = size - 1;
        }

        break;
    }

    out[n] = '\0';
}


static int
pki_uri_parse(const char *uri, pki_uri_t *u, pki_result_t *res)
{
    const char  *p, *end, *q, *eq, *path_end;
    size_t       nlen, vlen, len;
    long         n;
    char         tbuf[16], ref[PKI_URI_MAX + 1];

    memset(u, 0, sizeof(*u));

    len = strlen(uri);
    if (len > PKI_URI_MAX) {
        pki_fail(res, PKI_MALFORMED, "key URI is too long");
        return 0;
    }

    /* errors show ref (PINs hidden); parsing reads uri */
    pki_uri_redact(uri, ref, sizeof(ref));

    if (strncasecmp(uri, "pkcs11:", 7) != 0) {
        pki_fail(res, PKI_MALFORMED, "key \"%s\" is not a pkcs11: URI", ref);
        return 0;
    }

    p = uri + 7;
    path_end = strchr(p, '?');
    if (path_end == NULL) {
        path_end = uri + len;
    }

    /* Query attributes: only PINs and modules could appear; refuse all. */
    if (*path_end == '?') {
        q = path_end + 1;

        while (*q != '\0') {
            end = strchr(q, '&');
            if (end == NULL) {
                end = q + strlen(q);
            }
            eq = memchr(q, '=', (size_t) (end - q));
            nlen = (eq != NULL) ? (size_t) (eq - q) : (size_t) (end - q);

            if ((nlen == 9 && strncmp(q, "pin-value", 9) == 0)
                || (nlen == 10 && strncmp(q, "pin-source", 10) == 0))
            {
                pki_fail(res, PKI_MALFORMED, "key URI: \"%.*s\" is not "
                         "allowed: PINs belong in the vault's pin_file",
                         (int) nlen, q);
                return 0;
            }

            if (nlen > 0) {
                pki_fail(res, PKI_MALFORMED, "key URI: unsupported query "
                         "attribute \"%.*s\"", (int) (nlen > 32 ? 32 : nlen),
                         q);
                return 0;
            }

            q = (*end == '&') ? end + 1 : end;
        }
    }

    while (p < path_end) {
        end = memchr(p, ';', (size_t) (path_end - p));
        if (end == NULL) {
            end = path_end;
        }

        if (end == p) {
            p++;           /* tolerate empty attributes (";;") */
            continue;
        }

        eq = memchr(p, '=', (size_t) (end - p));
        if (eq == NULL) {
            pki_fail(res, PKI_MALFORMED, "key \"%s\": attribute without "
                     "\"=\"", ref);
            return 0;
        }

        nlen = (size_t) (eq - p);
        vlen = (size_t) (end - eq - 1);
        eq++;

#define PKI_ATTR(s)  (nlen == sizeof(s) - 1 && strncmp(p, s, nlen) == 0)

        if (PKI_ATTR("pin-value") || PKI_ATTR("pin-source")) {
            pki_fail(res, PKI_MALFORMED, "key URI: \"%.*s\" is not allowed: "
                     "PINs belong in the vault's pin_file", (int) nlen, p);
            return 0;

        } else if (PKI_ATTR("token")) {
            if (u->has_token) {
                goto duplicate;
            }
            if (!pki_uri_text(ref, "token", eq, vlen, u->token, res)) {
                return 0;
            }
            u->has_token = 1;

        } else if (PKI_ATTR("object")) {
            if (u->has_object) {
                goto duplicate;
            }
            if (!pki_uri_text(ref, "object", eq, vlen, u->object, res)) {
                return 0;
            }
            u->has_object = 1;

        } else if (PKI_ATTR("id")) {
            if (u->has_id) {
                goto duplicate;
            }
            n = pki_pct_decode(eq, vlen, u->id, sizeof(u->id));
            if (n < 0) {
                pki_fail(res, PKI_MALFORMED, "key \"%s\": %s in attribute "
                         "\"id\"", ref, n == -1 ? "bad percent-encoding"
                                                : "too many bytes");
                return 0;
            }
            u->id_len = (size_t) n;
            u->has_id = 1;

        } else if (PKI_ATTR("type")) {
            n = pki_pct_decode(eq, vlen, (unsigned char *) tbuf,
                               sizeof(tbuf) - 1);
            if (n < 0) {
                tbuf[0] = '?';
                n = 1;
            }
            tbuf[n] = '\0';
            if (strcmp(tbuf, "private") != 0) {
                pki_fail(res, PKI_MALFORMED, "key \"%s\": type must be "
                         "\"private\"", ref);
                return 0;
            }

        } else {
            pki_fail(res, PKI_MALFORMED, "key URI: unsupported attribute "
                     "\"%.*s\"", (int) (nlen > 32 ? 32 : nlen), p);
            return 0;
        }

#undef PKI_ATTR

        p = end;
        if (p < path_end) {
            p++;
        }
    }

    if (!u->has_object && !u->has_id) {
        pki_fail(res, PKI_MALFORMED, "key \"%s\" names no key (object= or "
                 "id=)", ref);
        return 0;
    }

    if (u->has_id && u->id_len == 0) {
        pki_fail(res, PKI_MALFORMED, "key \"%s\": empty id", ref);
        return 0;
    }

    return 1;

duplicate:

    pki_fail(res, PKI_MALFORMED, "key \"%s\": duplicate attribute", ref);
    return 0;
}


static int
pki_is_pkcs11_uri(const char *ref)
{
    return ref != NULL && strncasecmp(ref, "pkcs11:", 7) == 0;
}


PKI_API int
pki_key_uri_token(const char *ref, char *buf, size_t size)
{
    pki_uri_t     u;
    pki_result_t  tmp;

    if (!pki_is_pkcs11_uri(ref) || buf == NULL || size == 0) {
        return 0;
    }

    pki_result_init(&tmp);

    if (!pki_uri_parse(ref, &u, &tmp) || !u.has_token) {
        return 0;
    }

    if (strlen(u.token) >= size) {
        return 0;
    }

    memcpy(buf, u.token, strlen(u.token) + 1);
    return 1;
}


/* ---- keys --------------------------------------------------------------- */

PKI_API pki_key_t *
pki_key_new(const char *ref, pki_vault_t *vault, pki_result_t *res)
{
    int                  rc;
    pki_key_t           *k;
    pki_uri_t            u;
    pthread_condattr_t   ca;

    if (ref == NULL || *ref == '\0') {
        pki_fail(res, PKI_MALFORMED, "empty key reference");
        return NULL;
    }

    if (pki_is_pkcs11_uri(ref)
        && (strcasestr(ref, "pin-value") != NULL
            || strcasestr(ref, "pin-source") != NULL))
    {
        /* anywhere, any case: a PIN the parser would not take for an
         * attribute ("object=k&pin-value=...", " pin-value=...") would
         * end up in a label that errors print; not shown */
        pki_fail(res, PKI_MALFORMED, "key URI holds pin-value or "
                 "pin-source (not shown): PINs belong in the vault's "
                 "pin_file");
        return NULL;
    }

    if (pki_is_pkcs11_uri(ref)) {
        if (!pki_uri_parse(ref, &u, res)) {
            return NULL;
        }

        if (vault == NULL) {
            pki_fail(res, PKI_MALFORMED, "key \"%s\": a pkcs11: URI needs a "
                     "key vault", ref);
            return NULL;
        }

        if (u.has_token && strcmp(u.token, vault->token) != 0) {
            pki_fail(res, PKI_MALFORMED, "key \"%s\": token \"%s\" is not the "
                     "token \"%s\" of vault \"%s\"", ref, u.token,
                     vault->token, vault->name);
            return NULL;
        }

    } else if (strcasestr(ref, "pin-value=") != NULL
               || strcasestr(ref, "pin-source=") != NULL)
    {
        /* a mistyped URI ("pkcs-11:...", "pkcs11;...") would be opened
         * as a file and named in the error, PIN and all: not echoed */
        pki_fail(res, PKI_MALFORMED, "key reference holds pin-value= or "
                 "pin-source= but is no pkcs11: URI (not shown: it may hold "
                 "a PIN)");
        return NULL;

    } else if (strlen(ref) > 4096) {
        pki_fail(res, PKI_MALFORMED, "key file name is too long");
        return NULL;
    }

    k = calloc(1, sizeof(*k));
    if (k == NULL) {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        return NULL;
    }

    if (pthread_mutex_init(&k->p11_mutex, NULL) != 0) {
        free(k);
        pki_fail(res, PKI_INTERNAL, "pthread_mutex_init() failed");
        return NULL;
    }

    if (pthread_condattr_init(&ca) != 0) {
        pthread_mutex_destroy(&k->p11_mutex);
        free(k);
        pki_fail(res, PKI_INTERNAL, "pthread_condattr_init() failed");
        return NULL;
    }

    /* timed waits (pki_p11_session_get) on the clock of pki_int_now() */
    rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0
         && pthread_cond_init(&k->p11_cond, &ca) == 0;
    pthread_condattr_destroy(&ca);

    if (!rc) {
        pthread_mutex_destroy(&k->p11_mutex);
        free(k);
        pki_fail(res, PKI_INTERNAL, "pthread_cond_init() failed");
        return NULL;
    }

    k->ref = strdup(ref);
    if (k->ref == NULL) {
        goto nomem;
    }

    if (pki_is_pkcs11_uri(ref)) {
        if (u.has_object) {
            k->label = strdup(u.object);
            if (k->label == NULL) {
                goto nomem;
            }
        }

        if (u.has_id) {
            k->id = malloc(u.id_len);
            if (k->id == NULL) {
                goto nomem;
            }
            memcpy(k->id, u.id, u.id_len);
            k->id_len = u.id_len;
        }

        k->vault = vault;

        pthread_rwlock_wrlock(&vault->lock);
        k->next = vault->keys;
        vault->keys = k;
        pthread_rwlock_unlock(&vault->lock);
    }

    return k;

nomem:

    pthread_cond_destroy(&k->p11_cond);
    pthread_mutex_destroy(&k->p11_mutex);
    free(k->ref);
    free(k->label);
    free(k->id);
    free(k);
    pki_fail(res, PKI_INTERNAL, "out of memory");
    return NULL;
}


PKI_API const char *
pki_key_ref(const pki_key_t *k)
{
    return k != NULL ? k->ref : NULL;
}


/* Read without the vault lock: a token key that did not open (state
 * PKI_KEY_OPENING) gets its public key from the signer that fetches it. */
PKI_API EVP_PKEY *
pki_key_public(const pki_key_t *k)
{
    if (k == NULL
        || __atomic_load_n(&k->state, __ATOMIC_ACQUIRE) == PKI_KEY_CLOSED)
    {
        return NULL;
    }

    return __atomic_load_n(&k->pub, __ATOMIC_ACQUIRE);
}


static int
pki_pem_pass_cb(char *buf, int size, int rwflag, void *u)
{
    (void) buf;
    (void) size;
    (void) rwflag;

    *(int *) u = 1;
    return -1;
}


/*
 * The PEM text of a key file, read with read(2) into a buffer that is
 * cleansed before it is freed (*len bytes; OPENSSL_clear_free).  stdio
 * (BIO_new_file) would leave the text in a libc buffer freed as it was,
 * in the master and in every worker forked after it.  A file others may
 * read is loaded, with a warning in res->log.
 */
static char *
pki_key_file_read(const char *path, size_t *len, pki_result_t *res)
{
    int          fd, err;
    char        *buf;
    size_t       size, n;
    ssize_t      got;
    struct stat  st;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd == -1) {
        (void) pki_fail(res, PKI_INTERNAL, "key file \"%s\": %s", path,
                        strerror(errno));
        return NULL;
    }

    if (fstat(fd, &st) == -1) {
        err = errno;
        close(fd);
        (void) pki_fail(res, PKI_INTERNAL, "key file \"%s\": %s", path,
                        strerror(err));
        return NULL;
    }

    if (!S_ISREG(st.st_mode)) {
        close(fd);
        (void) pki_fail(res, PKI_INTERNAL, "key file \"%s\" is not a "
                        "regular file", path);
        return NULL;
    }

    if (st.st_size > PKI_KEY_FILE_MAX) {
        close(fd);
        (void) pki_fail(res, PKI_INTERNAL, "key file \"%s\" is too large",
                        path);
        return NULL;
    }

    size = (size_t) st.st_size;
    buf = OPENSSL_malloc(size + 1);
    if (buf == NULL) {
        close(fd);
        (void) pki_fail(res, PKI_INTERNAL, "key file \"%s\": out of memory",
                        path);
        return NULL;
    }

    /* at most the size fstat saw: a file that grows meanwhile is cut
     * there, and fails to parse rather than being read without end */
    err = 0;

    for (n = 0; n < size; n += (size_t) got) {
        got = read(fd, buf + n, size - n);
        if (got == -1 && errno == EINTR) {
            got = 0;
            continue;
        }
        if (got <= 0) {
            err = got == -1 ? errno : 0;
            break;
        }
    }

    close(fd);

    if (n < size) {
        OPENSSL_clear_free(buf, size + 1);
        (void) pki_fail(res, PKI_INTERNAL, "key file \"%s\": %s", path,
                        err != 0 ? strerror(err) : "shorter than it was");
        return NULL;
    }

    buf[size] = '\0';
    *len = size;

    if (st.st_mode & (S_IROTH | S_IWOTH)) {
        pki_log(res, "%skey file \"%s\" may be %s by other users (mode "
                "%04o): make it readable by nginx's users only, e.g. "
                "chmod o-rwx", res != NULL && res->log[0] ? "; " : "", path,
                st.st_mode & S_IWOTH ? "written" : "read",
                (unsigned) (st.st_mode & 07777));
    }

    return buf;
}


static pki_status_t
pki_key_load_file(pki_key_t *k, pki_result_t *res)
{
    char      *text;
    size_t     len;
    EVP_PKEY  *pk;
    BIO       *bio;
    int        encrypted = 0;

    text = pki_key_file_read(k->ref, &len, res);
    if (text == NULL) {
        return res != NULL ? res->status : PKI_INTERNAL;
    }

    bio = BIO_new_mem_buf(text, (int) len);
    if (bio == NULL) {
        OPENSSL_clear_free(text, len + 1);
        return pki_fail(res, PKI_INTERNAL, "cannot open key file \"%s\"",
                        k->ref);
    }

    pk = PEM_read_bio_PrivateKey(bio, NULL, pki_pem_pass_cb, &encrypted);
    BIO_free(bio);
    OPENSSL_clear_free(text, len + 1);

    if (pk == NULL) {
        if (encrypted) {
            return pki_fail(res, PKI_UNSUPPORTED, "key file \"%s\": encrypted "
                            "keys are not supported, use a pkcs11: URI",
                            k->ref);
        }

        return pki_fail(res, PKI_MALFORMED, "key file \"%s\" holds no PEM "
                        "private key", k->ref);
    }

    ERR_clear_error();

    if (!pki_pkey_supported(pk, k->ref, res)) {
        EVP_PKEY_free(pk);
        return res->status;
    }

    k->pub = pki_pkey_public_copy(pk);
    if (k->pub == NULL) {
        EVP_PKEY_free(pk);
        return pki_fail(res, PKI_INTERNAL, "key file \"%s\": cannot extract "
                        "the public key", k->ref);
    }

    if (k->was_pub != NULL && EVP_PKEY_eq(k->was_pub, k->pub) != 1) {
        /* replaced since it was checked (against the CA certificate, in
         * the master): it would sign certificates nobody can verify */
        EVP_PKEY_free(k->pub);
        k->pub = NULL;
        EVP_PKEY_free(pk);
        ERR_clear_error();
        return pki_fail(res, PKI_INTERNAL, "key file \"%s\" now holds "
                        "another key than when it was opened before (it was "
                        "replaced): reload nginx, which checks the key "
                        "against its certificate", k->ref);
    }

    ERR_clear_error();
    k->priv = pk;
    return PKI_OK;
}


/* What the key's URI names on the token, for a log line: its label, or
 * its id in hex when it has no label. */
static void
pki_key_describe(const pki_key_t *k, char *buf, size_t size)
{
    size_t  i, n;

    if (k->label != NULL) {
        snprintf(buf, size, "label \"%.*s\"", PKI_LABEL_MAX, k->label);
        return;
    }

    n = (size_t) snprintf(buf, size, "id ");

    for (i = 0; i < k->id_len && n + 3 <= size; i++) {
        n += (size_t) snprintf(buf + n, size - n, "%02x", k->id[i]);
    }
}


/* 0 when the public half that the token's private key pk carries (RSA:
 * always; EC: when the token has the point) is not k's public key, the
 * one the key was opened with and its certificate was checked against;
 * 1 otherwise, also when pk carries none (the signature's verification
 * with k->pub tells then). */
static int
pki_key_same_pub(const pki_key_t *k, EVP_PKEY *pk)
{
    int        same;
    EVP_PKEY  *pub;

    pub = pki_pkey_public_copy(pk);

    if (pub == NULL
        || (EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC
            && EVP_PKEY_get_bits(pub) <= 0))
    {
        EVP_PKEY_free(pub);
        ERR_clear_error();
        return 1;
    }

    same = EVP_PKEY_eq(pub, k->pub) == 1;

    EVP_PKEY_free(pub);
    ERR_clear_error();

    return same;
}


/* Finds the key on the token and gets its handles.  Write lock held, vault
 * open. */
static pki_status_t
pki_key_fetch_locked_do(pki_key_t *k, int *busy, pki_result_t *res)
{
    pki_vault_t   *v = k->vault;
    PKCS11_KEY    *keys, *key = NULL, *old = NULL;
    PKCS11_CERT   *cert;
    EVP_PKEY      *pk, *pub = NULL, *cpub;
    unsigned int   n, i, stale;
    int            type;
    char           what[PKI_LABEL_MAX + 16];

    pki_key_drop_handles(k);

    if (pki_p11_libp11_room(v) != 0) {
        *busy = 1;
        return pki_fail(res, PKI_UNAVAILABLE, "key \"%s\": token \"%s\" "
                        "has no free session to list its keys", k->ref,
                        v->token);
    }

    if (PKCS11_enumerate_keys(v->slot->token, &keys, &n) != 0) {
        v->mod->pooled[v->slot - v->mod->slots] = 0;
        return pki_fail(res, PKI_UNAVAILABLE, "key \"%s\": cannot list the "
                        "keys of token \"%s\"", k->ref, v->token);
    }

    v->mod->pooled[v->slot - v->mod->slots] = 1;

    /* Entries listed before the last C_Login (pki_vault_login) have lost
     * their handles: a key listed again after it is taken, and only a
     * key that was not (its handle survived) from before it. */
    stale = v->mod->stale[v->slot - v->mod->slots];
    if (stale > n) {
        stale = 0;          /* libp11 dropped its list and began anew */
    }

    for (i = 0; i < n; i++) {
        if (!keys[i].isPrivate) {
            continue;
        }

        if (k->label != NULL
            && (keys[i].label == NULL || strcmp(keys[i].label, k->label) != 0))
        {
            continue;
        }

        if (k->id != NULL
            && (keys[i].id_len != k->id_len
                || memcmp(keys[i].id, k->id, k->id_len) != 0))
        {
            continue;
        }

        if (i < stale) {
            old = &keys[i];
            continue;
        }

        if (key != NULL) {
            return pki_fail(res, PKI_MALFORMED, "key \"%s\" matches more than "
                            "one key on token \"%s\"", k->ref, v->token);
        }

        key = &keys[i];
    }

    if (key == NULL) {
        key = old;
    }

    if (key == NULL) {
        return pki_fail(res, PKI_NOT_FOUND, "key \"%s\" not found on token "
                        "\"%s\"", k->ref, v->token);
    }

    type = PKCS11_get_key_type(key);
    if (type != EVP_PKEY_RSA && type != EVP_PKEY_EC) {
        return pki_fail(res, PKI_UNSUPPORTED, "key \"%s\": unsupported key "
                        "type on the token (libp11 0.4.12 signs with RSA and "
                        "EC keys only)", k->ref);
    }

    pk = PKCS11_get_private_key(key);
    if (pk == NULL) {
        return pki_fail(res, PKI_UNAVAILABLE, "key \"%s\": cannot get the "
                        "private key from token \"%s\"", k->ref, v->token);
    }

    if (k->pub != NULL && !pki_key_same_pub(k, pk)) {
        /* Another key under the label (replaced on the token): its
         * signatures would not verify and its decryptions of what was
         * encrypted to the certificate would fail as the input's fault
         * ("cannot decrypt").  The key's own failure: its backoff. */
        EVP_PKEY_free(pk);
        ERR_clear_error();
        pki_key_describe(k, what, sizeof(what));
        return pki_fail(res, PKI_BAD_SIGNATURE, "key \"%s\" no longer "
                        "matches its certificate: the key under %s on "
                        "token \"%s\" has another public key (replaced?)",
                        k->ref, what, v->token);
    }

    if (k->pub == NULL) {
        /* libp11 puts the public half into the private EVP_PKEY (RSA n, e;
         * the EC point when the token has it); PKCS11_get_public_key()
         * leaks in 0.4.12, so it is only the fallback. */
        pub = pki_pkey_public_copy(pk);
        if (pub != NULL && EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC
            && EVP_PKEY_get_bits(pub) <= 0)
        {
            EVP_PKEY_free(pub);
            pub = NULL;
        }

        ERR_clear_error();
        cpub = (pub == NULL) ? PKCS11_get_public_key(key) : NULL;
        if (cpub != NULL) {
            pub = pki_pkey_public_copy(cpub);
            EVP_PKEY_free(cpub);
        }

        if (pub == NULL) {
            ERR_clear_error();
            cert = PKCS11_find_certificate(key);
            if (cert != NULL && cert->x509 != NULL) {
                pub = pki_pkey_public_copy(X509_get0_pubkey(cert->x509));
            }
        }

        if (pub == NULL) {
            EVP_PKEY_free(pk);
            return pki_fail(res, PKI_NOT_FOUND, "key \"%s\": no public key "
                            "or certificate for it on token \"%s\"", k->ref,
                            v->token);
        }

        if (!pki_pkey_supported(pub, k->ref, res)) {
            EVP_PKEY_free(pub);
            EVP_PKEY_free(pk);
            return res->status;
        }

        /* published for pki_key_public(), which takes no lock */
        __atomic_store_n(&k->pub, pub, __ATOMIC_RELEASE);
    }

    ERR_clear_error();

    k->priv = pk;
    k->gen = v->gen;

    return PKI_OK;
}


/*
 * A failed lookup is remembered with the vault generation it failed in.
 * A token that lost its login (a C_Logout from anywhere in the process, or
 * the token's own timeout) lists no private key at all: such a lookup
 * keeps failing until the vault is closed and opened again (login, which
 * marks what libp11's cached list held before it as stale).  The sign and
 * decrypt loops reopen when they see bad_gen == gen.
 *
 * A key that is not open yet (pki_key_open, or a token key whose open
 * failed) signs its test message before its handles are kept, here under
 * the write lock, so that no signer uses them untested.  A failure of the
 * key itself (pki_key_fault) starts its backoff.
 */
static pki_status_t
pki_key_fetch_locked(pki_key_t *k, pki_result_t *res)
{
    int           opening, busy;
    pki_status_t  st;

    busy = 0;

    pthread_mutex_lock(&pki_p11_lib_mutex);
    st = pki_key_fetch_locked_do(k, &busy, res);
    pthread_mutex_unlock(&pki_p11_lib_mutex);

    if (st == PKI_OK
        && __atomic_load_n(&k->state, __ATOMIC_ACQUIRE) != PKI_KEY_OPEN)
    {
        st = pki_key_test_locked(k, &busy, res);

        if (st == PKI_OK) {
            /* a key closed meanwhile stays closed */
            opening = PKI_KEY_OPENING;
            (void) __atomic_compare_exchange_n(&k->state, &opening,
                                               PKI_KEY_OPEN, 0,
                                               __ATOMIC_ACQ_REL,
                                               __ATOMIC_ACQUIRE);

        } else {
            pki_key_drop_handles(k);
        }
    }

    /* a token out of sessions is not a failed lookup: no reopen for it
     * (pki_vault_recover gives up instead) */
    k->bad_gen = st == PKI_OK || busy ? 0 : k->vault->gen;
    k->p11_busy = busy;

    if (pki_key_fault(st)) {
        pki_key_failed(k, res->detail, NULL);
    }

    return st;
}


/* ---- low-S ECDSA ------------------------------------------------------------
 *
 * (r, s) and (r, n - s) are both valid ECDSA signatures.  Every EC signature
 * the CA releases carries the smaller s (s <= n/2), as the token's or
 * OpenSSL's signing gives either: for P-256 and P-384 s then never needs the
 * DER sign octet, so a certificate's largest size is one octet less and
 * known before signing (a Matter certificate must fit 600 octets of DER).
 * Done before the signature is verified (invariant 4 holds on what goes
 * out).  Curves other than P-256, P-384 and P-521 are left as signed. */

static pthread_once_t  pki_half_once = PTHREAD_ONCE_INIT;
static const int       pki_half_nid[3] = {
    NID_X9_62_prime256v1, NID_secp384r1, NID_secp521r1
};
static BIGNUM         *pki_order[3], *pki_half[3];


static void
pki_half_init(void)
{
    int        i;
    EC_GROUP  *g;

    for (i = 0; i < 3; i++) {
        g = EC_GROUP_new_by_curve_name(pki_half_nid[i]);
        if (g != NULL) {
            pki_order[i] = BN_dup(EC_GROUP_get0_order(g));
            pki_half[i] = pki_order[i] ? BN_dup(pki_order[i]) : NULL;
            if (pki_half[i] == NULL || !BN_rshift1(pki_half[i], pki_half[i]))
            {
                BN_free(pki_order[i]);
                BN_free(pki_half[i]);
                pki_order[i] = pki_half[i] = NULL;
            }
            EC_GROUP_free(g);
        }
    }

    ERR_clear_error();
}


/* Index of pub's curve in pki_half_nid, -1 for another key or curve. */
static int
pki_half_index(const EVP_PKEY *pub)
{
    int   i, nid;
    char  name[64];

    if (pub == NULL || EVP_PKEY_get_base_id(pub) != EVP_PKEY_EC
        || !EVP_PKEY_get_group_name(pub, name, sizeof(name), NULL))
    {
        ERR_clear_error();
        return -1;
    }

    nid = OBJ_sn2nid(name);
    if (nid == NID_undef) {
        nid = EC_curve_nist2nid(name);
    }

    pthread_once(&pki_half_once, pki_half_init);

    for (i = 0; i < 3; i++) {
        if (nid == pki_half_nid[i] && pki_half[i] != NULL) {
            return i;
        }
    }

    return -1;
}


/* The DER ECDSA-Sig-Value in *der (OPENSSL_malloc'd, *len octets) with a
 * low s, re-encoded in place when it had a high one.  1 done (or nothing
 * to do: not an EC key of the three curves), 0 the signature does not
 * decode or cannot be re-encoded (a failed signing). */
static int
pki_ecdsa_low_s(const EVP_PKEY *pub, unsigned char **der, int *len)
{
    int                   i, n, ok;
    BIGNUM               *ns;
    ECDSA_SIG            *es;
    unsigned char        *out;
    const BIGNUM         *r, *s;
    const unsigned char  *p;

    i = pki_half_index(pub);
    if (i < 0) {
        return 1;
    }

    p = *der;
    es = d2i_ECDSA_SIG(NULL, &p, *len);
    if (es == NULL || p != *der + *len) {
        ECDSA_SIG_free(es);
        ERR_clear_error();
        return 0;
    }

    ECDSA_SIG_get0(es, &r, &s);

    if (BN_cmp(s, pki_half[i]) <= 0) {
        ECDSA_SIG_free(es);
        return 1;
    }

    ok = 0;
    out = NULL;
    ns = BN_new();

    if (ns != NULL && BN_sub(ns, pki_order[i], s)) {
        r = BN_dup(r);
        if (r != NULL && ECDSA_SIG_set0(es, (BIGNUM *) r, ns)) {
            ns = NULL;
            n = i2d_ECDSA_SIG(es, &out);
            if (n > 0) {
                OPENSSL_free(*der);
                *der = out;
                *len = n;
                ok = 1;
            }
        } else {
            BN_free((BIGNUM *) r);
        }
    }

    BN_free(ns);
    ECDSA_SIG_free(es);
    ERR_clear_error();

    return ok;
}


/* The largest DER signature pub's key releases: a high s of P-256 or P-384
 * would take the sign octet.  0 when not an EC key. */
int
pki_int_ecdsa_sig_max(const EVP_PKEY *pub)
{
    int  n;

    if (pub == NULL || EVP_PKEY_get_base_id(pub) != EVP_PKEY_EC) {
        return 0;
    }

    n = EVP_PKEY_get_size(pub);

    if (n > 0 && pki_half_index(pub) >= 0 && EVP_PKEY_get_bits(pub) % 8 == 0)
    {
        n--;
    }

    return n;
}


/* The same on the signature BIT STRING of a certificate or a CRL. */
static int
pki_bits_low_s(ASN1_BIT_STRING *bs, const EVP_PKEY *pub)
{
    int                     len;
    unsigned char          *der;

    if (pki_half_index(pub) < 0) {
        return 1;
    }

    len = ASN1_STRING_length(bs);
    der = len > 0 ? OPENSSL_memdup(ASN1_STRING_get0_data(bs), len) : NULL;

    if (der == NULL || !pki_ecdsa_low_s(pub, &der, &len)
        || !ASN1_BIT_STRING_set(bs, der, len))
    {
        OPENSSL_free(der);
        return 0;
    }

    OPENSSL_free(der);
    bs->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
    bs->flags |= ASN1_STRING_FLAG_BITS_LEFT;

    return 1;
}


static int
pki_x509_low_s(X509 *x, const EVP_PKEY *pub)
{
    const ASN1_BIT_STRING  *bs;

    X509_get0_signature(&bs, NULL, x);

    return bs != NULL && pki_bits_low_s((ASN1_BIT_STRING *) bs, pub);
}


static int
pki_crl_low_s(X509_CRL *crl, const EVP_PKEY *pub)
{
    const ASN1_BIT_STRING  *bs;

    X509_CRL_get0_signature(crl, &bs, NULL);

    return bs != NULL && pki_bits_low_s((ASN1_BIT_STRING *) bs, pub);
}


/* ---- signing ------------------------------------------------------------ */

typedef struct {
    int                   what;      /* 0 raw, 1 x509, 2 crl */
    X509                 *x509;
    X509_CRL             *crl;
    const EVP_MD         *md;
    int                   md_given;
    const unsigned char  *tbs;
    size_t                tbslen;
    unsigned char        *sig;
    size_t                siglen;
} pki_sign_op_t;


/* Returns 1 on success, 0 if signing failed, -1 if the signature did not
 * verify. */
static int
pki_sign_once(pki_sign_op_t *op, EVP_PKEY *priv, EVP_PKEY *pub,
    pki_result_t *res)
{
    const EVP_MD   *md;
    EVP_MD_CTX     *mctx;
    unsigned char  *sig;
    size_t          siglen;
    int             rc, n;

    md = op->md_given ? op->md : pki_default_md(pub);

    switch (op->what) {

    case 1:
        if (X509_sign(op->x509, priv, md) <= 0) {
            pki_log(res, "%sX509_sign() failed", pki_sep(res));
            return 0;
        }
        if (!pki_x509_low_s(op->x509, pub)) {
            pki_log(res, "%sthe ECDSA signature does not decode",
                    pki_sep(res));
            return 0;
        }
        if (X509_verify(op->x509, pub) != 1) {
            pki_log(res, "%sX509_verify() failed", pki_sep(res));
            return -1;
        }
        return 1;

    case 2:
        if (X509_CRL_sign(op->crl, priv, md) <= 0) {
            pki_log(res, "%sX509_CRL_sign() failed", pki_sep(res));
            return 0;
        }
        if (!pki_crl_low_s(op->crl, pub)) {
            pki_log(res, "%sthe ECDSA signature does not decode",
                    pki_sep(res));
            return 0;
        }
        if (X509_CRL_verify(op->crl, pub) != 1) {
            pki_log(res, "%sX509_CRL_verify() failed", pki_sep(res));
            return -1;
        }
        return 1;

    default:
        break;
    }

    mctx = EVP_MD_CTX_new();
    if (mctx == NULL) {
        return 0;
    }

    sig = NULL;
    rc = 0;

    if (EVP_DigestSignInit(mctx, NULL, md, NULL, priv) != 1
        || EVP_DigestSign(mctx, NULL, &siglen, op->tbs, op->tbslen) != 1)
    {
        pki_log(res, "%sEVP_DigestSignInit() failed", pki_sep(res));
        goto done;
    }

    sig = OPENSSL_malloc(siglen);
    if (sig == NULL
        || EVP_DigestSign(mctx, sig, &siglen, op->tbs, op->tbslen) != 1)
    {
        pki_log(res, "%sEVP_DigestSign() failed", pki_sep(res));
        goto done;
    }

    n = (int) siglen;
    if (!pki_ecdsa_low_s(pub, &sig, &n)) {
        pki_log(res, "%sthe ECDSA signature does not decode", pki_sep(res));
        goto done;
    }
    siglen = (size_t) n;

    EVP_MD_CTX_reset(mctx);

    if (EVP_DigestVerifyInit(mctx, NULL, md, NULL, pub) != 1
        || EVP_DigestVerify(mctx, sig, siglen, op->tbs, op->tbslen) != 1)
    {
        pki_log(res, "%sEVP_DigestVerify() failed", pki_sep(res));
        rc = -1;
        goto done;
    }

    op->sig = sig;
    op->siglen = siglen;
    sig = NULL;
    rc = 1;

done:

    OPENSSL_free(sig);
    EVP_MD_CTX_free(mctx);
    return rc;
}


/* ---- the lean PKCS#11 EC signing path --------------------------------------
 *
 * libp11 signs through an EVP_PKEY with a legacy EC method: every signature
 * pays OpenSSL 3's provider export attempts and fetches, libp11's locking,
 * and the X509_verify() afterwards re-encodes the certificate.  For EC keys
 * on a token this path does the same work directly:
 *   - the digest of the TBS is computed in-process (a digest fetched once);
 *   - C_SignInit + C_Sign (CKM_ECDSA) on a session from the key's pool of
 *     idle sessions (opened once, kept open; the token's login is shared by
 *     all sessions of the process), on the private key object looked up
 *     once per vault generation;
 *   - r || s is turned into the DER ECDSA-Sig-Value in-process;
 *   - the signature is verified over the same digest with the key's cached
 *     public EVP_PKEY before anything else sees it (invariant 4).
 * A failure returns 0 (signing failed: the caller's retry/reopen logic runs
 * as for libp11), a verify failure -1.  When the module does not export the
 * functions, or the key object is not found exactly once, the key stays on
 * libp11 (returns 2: not handled). */

static pthread_once_t  pki_md_once = PTHREAD_ONCE_INIT;
static EVP_MD         *pki_md_sha256, *pki_md_sha384, *pki_md_sha512;


static void
pki_md_fetch(void)
{
    pki_md_sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL);
    pki_md_sha384 = EVP_MD_fetch(NULL, "SHA2-384", NULL);
    pki_md_sha512 = EVP_MD_fetch(NULL, "SHA2-512", NULL);
}


/* The fetched digest for md (NULL: not one the lean path handles). */
static const EVP_MD *
pki_md_fetched(const EVP_MD *md)
{
    if (md == NULL) {
        return NULL;
    }

    pthread_once(&pki_md_once, pki_md_fetch);

    switch (EVP_MD_get_type(md)) {
    case NID_sha256:
        return pki_md_sha256;
    case NID_sha384:
        return pki_md_sha384;
    case NID_sha512:
        return pki_md_sha512;
    default:
        return NULL;
    }
}


/* Looks the private key object up (p11_mutex held, vault open).  Sets
 * p11_state to 1 (usable) or -1 (leave the key to libp11), or leaves it 0
 * when no session opens: returns C_OpenSession's CKR. */
static pki_ck_ulong
pki_p11_lookup(pki_key_t *k, pki_p11mod_t *m, pki_ck_ulong slot)
{
    pki_ck_ulong    s, objs[2], n, cls = PKI_CKO_PRIVATE_KEY, ck;
    pki_ck_attr_t   t[3];
    pki_ck_ulong    nt;

    k->p11_state = -1;

    ck = m->fn.open(slot, PKI_CKF_SERIAL_SESSION, NULL, NULL, &s);
    if (ck != PKI_CKR_OK) {
        /* the token may be gone: let libp11 fail and the vault reopen */
        k->p11_state = 0;
        return ck;
    }

    nt = 0;
    t[nt].type = PKI_CKA_CLASS;
    t[nt].value = &cls;
    t[nt++].len = sizeof(cls);

    if (k->label != NULL) {
        t[nt].type = PKI_CKA_LABEL;
        t[nt].value = k->label;
        t[nt++].len = strlen(k->label);
    }

    if (k->id != NULL) {
        t[nt].type = PKI_CKA_ID;
        t[nt].value = k->id;
        t[nt++].len = k->id_len;
    }

    n = 0;
    if (m->fn.find_init(s, t, nt) == PKI_CKR_OK) {
        if (m->fn.find(s, objs, 2, &n) != PKI_CKR_OK) {
            n = 0;
        }
        (void) m->fn.find_final(s);
    }

    if (n == 1) {
        k->p11_obj = objs[0];
        k->p11_state = 1;

        /* the session joins the pool */
        k->p11_sess = malloc(PKI_P11_SESSIONS_MAX
                             * sizeof(pki_p11_pooled_t));
        if (k->p11_sess != NULL) {
            k->p11_sess[k->p11_nsess].s = s;
            k->p11_sess[k->p11_nsess++].since = pki_int_now();
            return PKI_CKR_OK;
        }

        k->p11_state = -1;
    }

    (void) m->fn.close(s);

    return PKI_CKR_OK;
}


/* Closes one idle pooled session of another key of the vault (vault lock
 * held, no p11_mutex: two keys trimming each other take one mutex at a
 * time).  Only sessions of the current generation: older numbers may be
 * reused.  1 when one was closed. */
static int
pki_p11_trim_other(pki_key_t *k, pki_p11mod_t *m)
{
    int            got;
    pki_key_t     *o;
    pki_ck_ulong   s;

    for (o = k->vault->keys; o != NULL; o = o->next) {
        if (o == k) {
            continue;
        }

        s = 0;
        pthread_mutex_lock(&o->p11_mutex);
        got = o->p11_gen == k->vault->gen && o->p11_sess != NULL
              && o->p11_nsess > 0;
        if (got) {
            s = o->p11_sess[--o->p11_nsess].s;
        }
        pthread_mutex_unlock(&o->p11_mutex);

        if (got) {
            (void) m->fn.close(s);
            return 1;
        }
    }

    return 0;
}


/* A session for signing (vault lock held): 1 with *s set, 0 on a token
 * failure, 2 when the key is not for this path, 3 when the token has no
 * free session (CKR_SESSION_COUNT) and none came back within
 * PKI_P11_BUSY_MS (wait 1; at once with wait 0: under the write lock no
 * signer of the vault can give one back).  *ck: C_OpenSession's last CKR
 * (0 if not called). */
static int
pki_p11_session_get(pki_key_t *k, pki_p11mod_t *m, int wait_ok,
    pki_ck_ulong *s, pki_ck_ulong *ck)
{
    int              trimmed;
    double           now, end, wait;
    pki_vault_t     *v = k->vault;
    pki_ck_ulong     slot;
    struct timespec  ts;

    slot = PKCS11_get_slotid_from_slot(v->slot);
    *ck = PKI_CKR_OK;
    end = 0;

    pthread_mutex_lock(&k->p11_mutex);

    for ( ;; ) {

        if (k->p11_gen != v->gen) {
            /* a reopen since: the old handles died with the old module
             * instance (never close them: the numbers may be reused) */
            k->p11_nsess = 0;
            k->p11_state = 0;
            k->p11_gen = v->gen;
            free(k->p11_sess);
            k->p11_sess = NULL;
        }

        if (k->p11_state == 0) {
            *ck = pki_p11_lookup(k, m, slot);
        }

        if (k->p11_state < 0) {
            pthread_mutex_unlock(&k->p11_mutex);
            return 2;
        }

        if (k->p11_state == 1 && k->p11_nsess > 0) {
            *s = k->p11_sess[--k->p11_nsess].s;
            pthread_mutex_unlock(&k->p11_mutex);
            return 1;
        }

        if (k->p11_state == 1) {
            pthread_mutex_unlock(&k->p11_mutex);

            *ck = m->fn.open(slot, PKI_CKF_SERIAL_SESSION, NULL, NULL, s);
            if (*ck == PKI_CKR_OK) {
                return 1;
            }

            pthread_mutex_lock(&k->p11_mutex);
        }

        if (*ck != PKI_CKR_SESSION_COUNT) {
            pthread_mutex_unlock(&k->p11_mutex);
            return 0;
        }

        /* busy: wait for a session of this key to come back (or a slice,
         * for those of other keys), then look again */
        now = pki_int_now();

        if (end == 0) {
            end = now + PKI_P11_BUSY_MS / 1000.0;
        }

        if (now >= end) {
            pthread_mutex_unlock(&k->p11_mutex);
            return 3;
        }

        if (k->p11_state == 1 && k->p11_nsess > 0) {
            continue;           /* one came back while the open ran */
        }

        /* the token's sessions are its keys': another key's idle pool
         * would keep this one out for good */
        pthread_mutex_unlock(&k->p11_mutex);
        trimmed = pki_p11_trim_other(k, m);
        pthread_mutex_lock(&k->p11_mutex);

        if (trimmed) {
            continue;
        }

        if (!wait_ok) {
            pthread_mutex_unlock(&k->p11_mutex);
            return 3;
        }

        wait = end - now;
        if (wait > PKI_P11_BUSY_SLICE_MS / 1000.0) {
            wait = PKI_P11_BUSY_SLICE_MS / 1000.0;
        }

        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long) (wait * 1e9);
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;

        (void) pthread_cond_timedwait(&k->p11_cond, &k->p11_mutex, &ts);
    }
}


/* The pooled sessions of k idle idle_ms or more at now, taken out of
 * the pool (its bottom: the pool is a stack) into old, max at most; how
 * many (p11_mutex held, the caller closes them outside it). */
static size_t
pki_p11_take_idle(pki_key_t *k, double now, pki_ck_ulong *old, size_t max)
{
    size_t  n;

    n = 0;

    while (n < max && n < k->p11_nsess
           && (now - k->p11_sess[n].since) * 1000 >= k->vault->idle_ms)
    {
        old[n] = k->p11_sess[n].s;
        n++;
    }

    if (n > 0) {
        k->p11_nsess -= n;
        memmove(k->p11_sess, k->p11_sess + n,
                k->p11_nsess * sizeof(pki_p11_pooled_t));
    }

    return n;
}


/* Back into the pool (vault read lock held); a waiter for a session
 * (pki_p11_session_get) is woken either way.  The pool is a stack: the
 * sessions at its bottom idle longest, and those idle idle_ms or more are
 * closed (a few at a time, outside the mutex). */
static void
pki_p11_session_put(pki_key_t *k, pki_p11mod_t *m, pki_ck_ulong s, int ok)
{
    size_t        i, n;
    double        now;
    pki_ck_ulong  old[8];

    pthread_mutex_lock(&k->p11_mutex);

    n = 0;
    now = 0;

    if (ok && k->p11_gen == k->vault->gen && k->p11_sess != NULL) {
        /* the idle ones first: a full pool keeps this one then */
        now = pki_int_now();
        n = pki_p11_take_idle(k, now, old, sizeof(old) / sizeof(old[0]));
    }

    if (ok && k->p11_gen == k->vault->gen && k->p11_sess != NULL
        && k->p11_nsess < PKI_P11_SESSIONS_MAX)
    {
        k->p11_sess[k->p11_nsess].s = s;
        k->p11_sess[k->p11_nsess++].since = now;
        pthread_cond_signal(&k->p11_cond);
        pthread_mutex_unlock(&k->p11_mutex);

        for (i = 0; i < n; i++) {
            (void) m->fn.close(old[i]);
        }

        return;
    }

    pthread_mutex_unlock(&k->p11_mutex);

    for (i = 0; i < n; i++) {
        (void) m->fn.close(old[i]);
    }

    (void) m->fn.close(s);

    /* the token has one session more to give */
    pthread_mutex_lock(&k->p11_mutex);
    pthread_cond_signal(&k->p11_cond);
    pthread_mutex_unlock(&k->p11_mutex);
}


/* The pooled sessions of every key of the vault idle idle_ms or more,
 * closed without waiting for a signature (pki_p11_session_put closes them
 * only when another session of the key comes back): a worker that signs
 * nothing after a burst gives the token's sessions back to the others.
 * A pool thread's: C_CloseSession may block.  The vault's read lock and
 * each key's p11_mutex are only tried: a writer (an open, a close) drops
 * the sessions itself, and a key whose mutex is held is in use (its next
 * session_put trims it, or the next call); never a wait behind a token
 * call that hangs.  Sessions of the current generation only (older
 * numbers may be reused), closed outside the mutex, under the read lock,
 * as one tracked call of the hang watchdog. */
PKI_API unsigned
pki_vault_trim_idle(pki_vault_t *v)
{
    int            slot;
    size_t         i, n;
    unsigned       closed, kc;
    pki_key_t     *k;
    pki_p11mod_t  *m;
    pki_ck_ulong   old[16];

    if (v == NULL || pki_vault_hung(v) != 0) {
        return 0;
    }

    if (pthread_rwlock_tryrdlock(&v->lock) != 0) {
        return 0;
    }

    closed = 0;
    m = v->mod;

    if (v->ctx == NULL || m == NULL || !m->fn_ok) {
        pthread_rwlock_unlock(&v->lock);
        return 0;
    }

    slot = pki_vault_call_begin(v);

    for (k = v->keys; k != NULL; k = k->next) {
        kc = 0;

        do {
            if (pthread_mutex_trylock(&k->p11_mutex) != 0) {
                break;
            }

            n = 0;

            if (k->p11_gen == v->gen && k->p11_sess != NULL) {
                n = pki_p11_take_idle(k, pki_int_now(), old,
                                      sizeof(old) / sizeof(old[0]));
            }

            pthread_mutex_unlock(&k->p11_mutex);

            for (i = 0; i < n; i++) {
                (void) m->fn.close(old[i]);
            }

            kc += (unsigned) n;

        } while (n == sizeof(old) / sizeof(old[0]));

        closed += kc;

        if (kc > 0) {
            /* a signer waiting for a session (pki_p11_session_get) may
             * open one now */
            pthread_mutex_lock(&k->p11_mutex);
            pthread_cond_broadcast(&k->p11_cond);
            pthread_mutex_unlock(&k->p11_mutex);
        }
    }

    pki_vault_call_end(v, slot);

    pthread_rwlock_unlock(&v->lock);

    return closed;
}


/* 1 when a key of the vault has a pooled session idle idle_ms or more: for
 * an event loop, to decide whether to hand pki_vault_trim_idle() to a
 * thread.  No token call, and no lock it may wait for: the vault's read
 * lock and each key's p11_mutex are only tried (0 when busy). */
PKI_API int
pki_vault_idle_due(pki_vault_t *v)
{
    int         due;
    double      now;
    pki_key_t  *k;

    if (v == NULL || pki_vault_hung(v) != 0) {
        return 0;
    }

    if (pthread_rwlock_tryrdlock(&v->lock) != 0) {
        return 0;
    }

    due = 0;

    if (v->ctx != NULL) {
        now = pki_int_now();

        for (k = v->keys; k != NULL && !due; k = k->next) {
            if (pthread_mutex_trylock(&k->p11_mutex) != 0) {
                continue;
            }

            due = k->p11_gen == v->gen && k->p11_sess != NULL
                  && k->p11_nsess > 0
                  && (now - k->p11_sess[0].since) * 1000 >= v->idle_ms;

            pthread_mutex_unlock(&k->p11_mutex);
        }
    }

    pthread_rwlock_unlock(&v->lock);

    return due;
}


/* ECDSA over a digest on the token, DER-encoded into *der (OPENSSL_free).
 * 1 ok, 0 token failure, 2 not handled, 3 the token has no free session
 * (pki_p11_session_get). */
static int
pki_p11_ecdsa(pki_key_t *k, int wait_ok, const unsigned char *dig,
    size_t dlen, unsigned char **der, int *derlen, pki_result_t *res)
{
    int              rc, half;
    BIGNUM          *r, *sv;
    ECDSA_SIG       *es;
    pki_ck_ulong     s, ck, rawlen;
    pki_p11mod_t    *m = k->vault->mod;
    pki_ck_mech_t    mech;
    unsigned char    raw[2 * 66 + 2], buf[64];

    if (m == NULL || !m->fn_ok) {
        return 2;
    }

    rc = pki_p11_session_get(k, m, wait_ok, &s, &ck);
    if (rc != 1) {
        if (rc == 0) {
            pki_log(res, "%sC_OpenSession() failed: CKR 0x%lx",
                    pki_sep(res), ck);

        } else if (rc == 3) {
            pki_log(res, "%sC_OpenSession() failed: CKR 0x%lx, the token "
                    "has no free session (none came back within %d ms)",
                    pki_sep(res), ck, wait_ok ? PKI_P11_BUSY_MS : 0);
        }
        return rc;
    }

    memcpy(buf, dig, dlen);
    mech.mechanism = PKI_CKM_ECDSA;
    mech.param = NULL;
    mech.param_len = 0;
    rawlen = sizeof(raw);

    ck = m->fn.sign_init(s, &mech, k->p11_obj);
    if (ck == PKI_CKR_OK) {
        ck = m->fn.sign(s, buf, (pki_ck_ulong) dlen, raw, &rawlen);
    }

    pki_p11_session_put(k, m, s, ck == PKI_CKR_OK);

    if (ck != PKI_CKR_OK) {
        pki_log(res, "%sC_Sign() failed: CKR 0x%lx", pki_sep(res), ck);
        return 0;
    }

    if (rawlen < 2 || rawlen > sizeof(raw) || rawlen % 2 != 0) {
        pki_log(res, "%sC_Sign() returned %lu bytes", pki_sep(res), rawlen);
        return 0;
    }

    half = (int) (rawlen / 2);
    r = BN_bin2bn(raw, half, NULL);
    sv = BN_bin2bn(raw + half, half, NULL);
    es = ECDSA_SIG_new();

    if (r == NULL || sv == NULL || es == NULL || !ECDSA_SIG_set0(es, r, sv)) {
        BN_free(r);
        BN_free(sv);
        ECDSA_SIG_free(es);
        return 0;
    }

    *der = NULL;
    *derlen = i2d_ECDSA_SIG(es, der);
    ECDSA_SIG_free(es);

    if (*derlen > 0 && !pki_ecdsa_low_s(k->pub, der, derlen)) {
        OPENSSL_free(*der);
        *der = NULL;
        *derlen = 0;
    }

    return *derlen > 0;
}


/* 1 if sig verifies over the digest with the cached public key. */
static int
pki_p11_verify(EVP_PKEY *pub, const unsigned char *sig, size_t siglen,
    const unsigned char *dig, size_t dlen)
{
    int            ok;
    EVP_PKEY_CTX  *pc;

    pc = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
    ok = pc != NULL && EVP_PKEY_verify_init(pc) == 1
         && EVP_PKEY_verify(pc, sig, siglen, dig, dlen) == 1;
    EVP_PKEY_CTX_free(pc);

    return ok;
}


/* ---- verify-after-sign with a precomputed table --------------------------
 *
 * Invariant 4: every signature is verified before it leaves.  For a hot
 * EC P-256 token key the check stays the ECDSA verification (FIPS 186-4
 * 6.4.2: r, s in [1, n-1], R = u1*G + u2*Q with u1 = e/s, u2 = r/s, valid
 * when x(R) mod n == r), over the DER signature that goes out, with the
 * key's cached public point -- only computed faster.  OpenSSL multiplies
 * G from a table of precomputed multiples (several times faster than a
 * variable point); a copy of the P-256 group whose generator is the key's
 * point Q gets such a table too (EC_GROUP_precompute_mult, built once per
 * key and process after PKI_FASTVFY_AFTER signatures, ~150 KB), so u2*Q is
 * a fixed-base multiplication as well.  When the table is built it is
 * checked against a signature the generic verifier accepted, and must
 * reject the same signature over another digest; otherwise the key keeps
 * the generic verifier.
 */

#define PKI_FASTVFY_AFTER  16

static EC_GROUP        *pki_p256;
static pthread_once_t   pki_p256_once = PTHREAD_ONCE_INIT;


static void
pki_p256_init(void)
{
    pki_p256 = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
}


/* EC_GROUP_precompute_mult() is deprecated in OpenSSL 3.0 with nothing to
 * replace it; it is what builds the table. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

static int
pki_ec_precompute(EC_GROUP *g, BN_CTX *ctx)
{
    return EC_GROUP_precompute_mult(g, ctx);
}

#pragma GCC diagnostic pop


/* P-256 with the point pt (its octet encoding) as generator and its table;
 * NULL if pt is not a point of P-256 other than infinity, or on any
 * failure. */
static EC_GROUP *
pki_p256_table(const unsigned char *pt, size_t len)
{
    int        ok;
    BN_CTX    *ctx;
    EC_POINT  *q;
    EC_GROUP  *gq;

    (void) pthread_once(&pki_p256_once, pki_p256_init);

    if (pki_p256 == NULL || pt == NULL || len == 0) {
        return NULL;
    }

    gq = EC_GROUP_dup(pki_p256);
    q = gq ? EC_POINT_new(gq) : NULL;
    ctx = BN_CTX_new();

    ok = q != NULL && ctx != NULL
         && EC_POINT_oct2point(gq, q, pt, len, ctx)
         && !EC_POINT_is_at_infinity(gq, q)
         && EC_POINT_is_on_curve(gq, q, ctx) == 1
         && EC_GROUP_set_generator(gq, q, EC_GROUP_get0_order(pki_p256),
                                   EC_GROUP_get0_cofactor(pki_p256))
         && pki_ec_precompute(gq, ctx);

    EC_POINT_free(q);
    BN_CTX_free(ctx);
    ERR_clear_error();

    if (!ok) {
        EC_GROUP_free(gq);
        return NULL;
    }

    return gq;
}


/* The table, checked on a signature the generic verifier has just
 * accepted: it must accept it too, and refuse it over another digest. */
EC_GROUP *
pki_int_p256_table(const unsigned char *pt, size_t len,
    const unsigned char *sig, size_t siglen, const unsigned char *dig,
    size_t dlen)
{
    int             ok;
    EC_GROUP       *gq;
    unsigned char   other[EVP_MAX_MD_SIZE];

    if (sig == NULL || dig == NULL || dlen == 0 || dlen > sizeof(other)) {
        return NULL;
    }

    gq = pki_p256_table(pt, len);
    if (gq == NULL) {
        return NULL;
    }

    memcpy(other, dig, dlen);
    other[dlen - 1] ^= 0x01;
    ok = pki_int_p256_verify(gq, sig, siglen, dig, dlen) == 1
         && pki_int_p256_verify(gq, sig, siglen, other, dlen) == 0;

    if (!ok) {
        EC_GROUP_free(gq);
        return NULL;
    }

    return gq;
}


/*
 * The inverse of a modulo the odd n, each four 64-bit limbs (least
 * significant first), by the binary extended Euclid: x1 * a = u and
 * x2 * a = v (mod n) hold while u and v go down, until one is 1.  Its time
 * depends on a, so it is only for public values: the s of a signature
 * being verified.  BN_mod_inverse() runs the same steps on BIGNUMs, at
 * several times the cost, and was half of a table verification.  0 when a
 * is 0, not below n, or shares a factor with n.
 */
typedef unsigned long long  pki_limb_t;

static pki_limb_t
pki_limb_add(pki_limb_t *x, const pki_limb_t *y)
{
    int         i;
    pki_limb_t  t, c, c1;

    c = 0;
    for (i = 0; i < 4; i++) {
        t = x[i] + y[i];
        c1 = t < y[i];
        x[i] = t + c;
        c = c1 | (x[i] < t);
    }

    return c;
}


static pki_limb_t
pki_limb_sub(pki_limb_t *x, const pki_limb_t *y)
{
    int         i;
    pki_limb_t  t, b, b1;

    b = 0;
    for (i = 0; i < 4; i++) {
        b1 = x[i] < y[i];
        t = x[i] - y[i];
        x[i] = t - b;
        b = b1 | (t < b);
    }

    return b;
}


/* x / 2, top the bit shifted in at the top */
static void
pki_limb_half(pki_limb_t *x, pki_limb_t top)
{
    x[0] = (x[0] >> 1) | (x[1] << 63);
    x[1] = (x[1] >> 1) | (x[2] << 63);
    x[2] = (x[2] >> 1) | (x[3] << 63);
    x[3] = (x[3] >> 1) | (top << 63);
}


static int
pki_limb_cmp(const pki_limb_t *x, const pki_limb_t *y)
{
    int  i;

    for (i = 3; i >= 0; i--) {
        if (x[i] != y[i]) {
            return x[i] < y[i] ? -1 : 1;
        }
    }

    return 0;
}


static int
pki_limb_is(const pki_limb_t *x, pki_limb_t v)
{
    return x[0] == v && (x[1] | x[2] | x[3]) == 0;
}


/* x / 2 mod n (x < n, n odd) */
static void
pki_limb_half_mod(pki_limb_t *x, const pki_limb_t *n)
{
    if (x[0] & 1) {
        pki_limb_half(x, pki_limb_add(x, n));
    } else {
        pki_limb_half(x, 0);
    }
}


/* x - y mod n (both below n) */
static void
pki_limb_sub_mod(pki_limb_t *x, const pki_limb_t *y, const pki_limb_t *n)
{
    if (pki_limb_sub(x, y)) {
        (void) pki_limb_add(x, n);      /* the carry out ends the wrap */
    }
}


static int
pki_limb_inv(pki_limb_t *out, const pki_limb_t *a, const pki_limb_t *n)
{
    int         steps;
    pki_limb_t  u[4], v[4], x1[4], x2[4];

    if (pki_limb_is(a, 0) || (n[0] & 1) == 0 || pki_limb_cmp(a, n) >= 0) {
        return 0;
    }

    memcpy(u, a, sizeof(u));
    memcpy(v, n, sizeof(v));
    memset(x1, 0, sizeof(x1));
    memset(x2, 0, sizeof(x2));
    x1[0] = 1;

    /* each round takes a bit off u or v at least: 512 rounds end it */
    for (steps = 0; steps < 520; steps++) {
        if (pki_limb_is(u, 1)) {
            memcpy(out, x1, sizeof(x1));
            return 1;
        }
        if (pki_limb_is(v, 1)) {
            memcpy(out, x2, sizeof(x2));
            return 1;
        }
        if (pki_limb_is(u, 0) || pki_limb_is(v, 0)) {
            return 0;                   /* a common factor */
        }

        while ((u[0] & 1) == 0) {
            pki_limb_half(u, 0);
            pki_limb_half_mod(x1, n);
        }
        while ((v[0] & 1) == 0) {
            pki_limb_half(v, 0);
            pki_limb_half_mod(x2, n);
        }

        if (pki_limb_cmp(u, v) >= 0) {
            (void) pki_limb_sub(u, v);
            pki_limb_sub_mod(x1, x2, n);
        } else {
            (void) pki_limb_sub(v, u);
            pki_limb_sub_mod(x2, x1, n);
        }
    }

    return 0;
}


static void
pki_limb_load(pki_limb_t *x, const unsigned char *be)
{
    int  i, j;

    for (i = 0; i < 4; i++) {
        x[i] = 0;
        for (j = 0; j < 8; j++) {
            x[i] |= (pki_limb_t) be[31 - 8 * i - j] << (8 * j);
        }
    }
}


static void
pki_limb_store(unsigned char *be, const pki_limb_t *x)
{
    int  i, j;

    for (i = 0; i < 4; i++) {
        for (j = 0; j < 8; j++) {
            be[31 - 8 * i - j] = (unsigned char) (x[i] >> (8 * j));
        }
    }
}


/* 1 when (r, s) verifies over dig with the key whose point is gq's
 * generator, 0 otherwise. */
static int
pki_p256_verify_rs(const EC_GROUP *gq, const BIGNUM *r, const BIGNUM *s,
    const unsigned char *dig, size_t dlen)
{
    int             ok;
    BN_CTX         *ctx;
    BIGNUM         *w, *e, *u1, *u2, *x;
    EC_POINT       *p1, *p2;
    pki_limb_t      la[4], ln[4], lw[4];
    const BIGNUM   *n;
    unsigned char   buf[32];

    ok = 0;
    p1 = NULL;
    p2 = NULL;

    (void) pthread_once(&pki_p256_once, pki_p256_init);

    if (gq == NULL || pki_p256 == NULL || dlen == 0) {
        return 0;
    }

    n = EC_GROUP_get0_order(pki_p256);

    if (BN_is_zero(r) || BN_is_negative(r) || BN_ucmp(r, n) >= 0
        || BN_is_zero(s) || BN_is_negative(s) || BN_ucmp(s, n) >= 0)
    {
        return 0;
    }

    ctx = BN_CTX_new();
    if (ctx == NULL) {
        return 0;
    }

    BN_CTX_start(ctx);
    w = BN_CTX_get(ctx);
    e = BN_CTX_get(ctx);
    u1 = BN_CTX_get(ctx);
    u2 = BN_CTX_get(ctx);
    x = BN_CTX_get(ctx);
    p1 = EC_POINT_new(pki_p256);
    p2 = EC_POINT_new(pki_p256);

    if (x == NULL || p1 == NULL || p2 == NULL
        || BN_bn2binpad(s, buf, 32) != 32)
    {
        goto done;
    }
    pki_limb_load(la, buf);

    if (BN_bn2binpad(n, buf, 32) != 32) {
        goto done;
    }
    pki_limb_load(ln, buf);

    if (!pki_limb_inv(lw, la, ln)) {
        goto done;
    }
    pki_limb_store(buf, lw);

    /* e: the leftmost 256 bits of the digest (the order has 256 bits) */
    if (BN_bin2bn(buf, 32, w) == NULL
        || BN_bin2bn(dig, dlen > 32 ? 32 : (int) dlen, e) == NULL
        || !BN_mod_mul(u1, e, w, n, ctx)
        || !BN_mod_mul(u2, r, w, n, ctx)
        || !EC_POINT_mul(pki_p256, p1, u1, NULL, NULL, ctx)
        || !EC_POINT_mul(gq, p2, u2, NULL, NULL, ctx)
        || !EC_POINT_add(pki_p256, p1, p1, p2, ctx)
        || EC_POINT_is_at_infinity(pki_p256, p1)
        || !EC_POINT_get_affine_coordinates(pki_p256, p1, x, NULL, ctx)
        || !BN_nnmod(x, x, n, ctx))
    {
        goto done;
    }

    ok = BN_cmp(x, r) == 0;

done:

    BN_CTX_end(ctx);
    BN_CTX_free(ctx);
    EC_POINT_free(p1);
    EC_POINT_free(p2);
    ERR_clear_error();

    return ok;
}


/* 1 when the DER ECDSA-Sig-Value sig verifies over dig with the key whose
 * point is gq's generator, 0 otherwise. */
int
pki_int_p256_verify(const EC_GROUP *gq, const unsigned char *sig,
    size_t siglen, const unsigned char *dig, size_t dlen)
{
    int                   ok, derlen;
    ECDSA_SIG            *es;
    const BIGNUM         *r, *s;
    unsigned char        *der;
    const unsigned char  *p;

    ok = 0;
    der = NULL;

    /* DER only (as ECDSA_verify): the bytes that go out are the ones
     * checked */
    p = sig;
    es = d2i_ECDSA_SIG(NULL, &p, (long) siglen);
    if (es == NULL || p != sig + siglen) {
        goto done;
    }

    derlen = i2d_ECDSA_SIG(es, &der);
    if (derlen <= 0 || (size_t) derlen != siglen
        || memcmp(der, sig, siglen) != 0)
    {
        goto done;
    }

    ECDSA_SIG_get0(es, &r, &s);
    ok = pki_p256_verify_rs(gq, r, s, dig, dlen);

done:

    ECDSA_SIG_free(es);
    OPENSSL_free(der);
    ERR_clear_error();

    return ok;
}


/* The same for a JWS signature: r and s as 32 bytes each (RFC 7518
 * 3.4), which has one encoding only. */
int
pki_int_p256_verify_raw(const EC_GROUP *gq, const unsigned char *rs,
    size_t len, const unsigned char *dig, size_t dlen)
{
    int      ok;
    BIGNUM  *r, *s;

    if (rs == NULL || len != 64) {
        return 0;
    }

    r = BN_bin2bn(rs, 32, NULL);
    s = BN_bin2bn(rs + 32, 32, NULL);

    ok = r != NULL && s != NULL && pki_p256_verify_rs(gq, r, s, dig, dlen);

    BN_free(r);
    BN_free(s);

    return ok;
}


/* The key's table when ready; counts the signature and says (*build) when
 * this caller is to build the table. */
static const EC_GROUP *
pki_fastvfy_get(pki_key_t *k, int *build)
{
    const EC_GROUP  *gq;

    *build = 0;

    pthread_mutex_lock(&k->p11_mutex);

    if (k->fv_state == 0 && ++k->fv_count >= PKI_FASTVFY_AFTER) {
        k->fv_state = 1;
        *build = 1;
    }

    gq = k->fv_state == 2 ? k->fv_group : NULL;

    pthread_mutex_unlock(&k->p11_mutex);

    return gq;
}


/* The key's table (pki_int_p256_table) on a signature the generic
 * verifier has just accepted. */
static void
pki_fastvfy_install(pki_key_t *k, const unsigned char *sig, size_t siglen,
    const unsigned char *dig, size_t dlen)
{
    size_t          len;
    EC_GROUP       *gq;
    unsigned char  *pt;

    gq = NULL;
    pt = NULL;

    if (EVP_PKEY_get_base_id(k->pub) == EVP_PKEY_EC
        && pki_pkey_curve_nid(k->pub) == NID_X9_62_prime256v1)
    {
        len = EVP_PKEY_get1_encoded_public_key(k->pub, &pt);
        if (pt != NULL) {
            gq = pki_int_p256_table(pt, len, sig, siglen, dig, dlen);
        }
        OPENSSL_free(pt);
    }

    pthread_mutex_lock(&k->p11_mutex);
    k->fv_group = gq;
    k->fv_state = gq != NULL ? 2 : -1;
    pthread_mutex_unlock(&k->p11_mutex);
}


/* The lean path for one operation: 1 signed and verified, 0 signing
 * failed, -1 did not verify, 2 not handled (libp11 signs), 3 the token
 * has no free session (busy, not failing: pki_p11_session_get, waiting
 * for one with wait_ok).  Vault lock held (the read lock with wait_ok),
 * handles current. */
static int
pki_p11_sign(pki_key_t *k, int wait_ok, pki_sign_op_t *op,
    pki_result_t *res)
{
    int                   rc, derlen, signid, tbslen;
    unsigned int          dlen;
    const EVP_MD         *md;
    X509_ALGOR           *alg_tbs, *alg_sig;
    int                   build;
    unsigned char         dig[EVP_MAX_MD_SIZE], *der, *tbs;
    const EC_GROUP       *fq;
    const X509_ALGOR     *calg;
    const ASN1_BIT_STRING *csig;
    ASN1_BIT_STRING      *sig;

    if (k->pub == NULL || EVP_PKEY_get_base_id(k->pub) != EVP_PKEY_EC
        || (op->what != 0 && op->what != 1))
    {
        return 2;
    }

    md = pki_md_fetched(op->md_given ? op->md : pki_default_md(k->pub));
    if (md == NULL) {
        return 2;
    }

    tbs = NULL;

    if (op->what == 1) {
        if (!OBJ_find_sigid_by_algs(&signid, EVP_MD_get_type(md),
                                    EVP_PKEY_EC))
        {
            return 2;
        }

        /* what X509_sign() does before it signs */
        if (sk_X509_EXTENSION_num(X509_get0_extensions(op->x509)) > 0
            && !X509_set_version(op->x509, X509_VERSION_3))
        {
            return 0;
        }

        /* Both AlgorithmIdentifiers live inside the X509 object; OpenSSL
         * has no setter for them other than its own signing functions. */
        alg_tbs = (X509_ALGOR *) X509_get0_tbs_sigalg(op->x509);
        X509_get0_signature(&csig, &calg, op->x509);
        alg_sig = (X509_ALGOR *) calg;
        sig = (ASN1_BIT_STRING *) csig;

        if (alg_tbs == NULL || alg_sig == NULL || sig == NULL
            || !X509_ALGOR_set0(alg_tbs, OBJ_nid2obj(signid), V_ASN1_UNDEF,
                                NULL)
            || !X509_ALGOR_set0(alg_sig, OBJ_nid2obj(signid), V_ASN1_UNDEF,
                                NULL))
        {
            return 0;
        }

        tbslen = i2d_re_X509_tbs(op->x509, &tbs);
        if (tbslen <= 0) {
            pki_log(res, "%scannot encode the TBS certificate",
                    pki_sep(res));
            return 0;
        }

        rc = EVP_Digest(tbs, (size_t) tbslen, dig, &dlen, md, NULL);
        OPENSSL_free(tbs);

    } else {
        sig = NULL;
        rc = EVP_Digest(op->tbs, op->tbslen, dig, &dlen, md, NULL);
    }

    if (rc != 1) {
        return 0;
    }

    der = NULL;
    rc = pki_p11_ecdsa(k, wait_ok, dig, dlen, &der, &derlen, res);
    if (rc != 1) {
        return rc;
    }

    /* invariant 4, on the DER signature that goes out */
    fq = pki_fastvfy_get(k, &build);
    if (fq != NULL) {
        rc = pki_int_p256_verify(fq, der, (size_t) derlen, dig, dlen);
    } else {
        rc = pki_p11_verify(k->pub, der, (size_t) derlen, dig, dlen);
    }

    if (!rc) {
        if (build) {
            pthread_mutex_lock(&k->p11_mutex);
            k->fv_state = 0;            /* try again on a good signature */
            pthread_mutex_unlock(&k->p11_mutex);
        }
        OPENSSL_free(der);
        pki_log(res, "%sthe token's signature does not verify", pki_sep(res));
        return -1;
    }

    if (build) {
        pki_fastvfy_install(k, der, (size_t) derlen, dig, dlen);
    }

    if (op->what == 1) {
        if (!ASN1_BIT_STRING_set(sig, der, derlen)) {
            OPENSSL_free(der);
            return 0;
        }
        OPENSSL_free(der);
        /* no unused bits (as ASN1_item_sign does) */
        sig->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
        sig->flags |= ASN1_STRING_FLAG_BITS_LEFT;
        return 1;
    }

    op->sig = der;
    op->siglen = (size_t) derlen;

    return 1;
}


/*
 * A key's own backoff (pki_key_t.kb_*).  A failure that only this key has
 * -- it is not on the token (deleted, or missing on one HSM of a cluster),
 * matches several objects, or its signature does not verify (another key
 * under its label) -- is not cured by closing the vault, which drops every
 * other key's handles and holds the write lock through C_Finalize,
 * C_Initialize and the login: while one client asked for a broken key,
 * another key of its vault fell from 5,275 to 440 signatures per second.
 * Such a key answers "unavailable" at once for its backoff, and then one
 * caller reopens the vault once for it (libp11 keeps the labels it listed
 * until then, so a key put back is seen only after a reopen) and looks
 * again.
 */

/* The key's backoff state changed (state_mutex held): a success whose
 * operation began before leaves it standing (pki_key_good). */
static void
pki_key_kb_changed(pki_key_t *k)
{
    __atomic_store_n(&k->kb_seq, k->kb_seq + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&k->kb_set, 1, __ATOMIC_RELEASE);
}


/* What a success will compare (pki_key_good), read before the operation
 * it ends. */
static unsigned long
pki_key_kb_seq(pki_key_t *k)
{
    return __atomic_load_n(&k->kb_seq, __ATOMIC_ACQUIRE);
}


/* 1 for a failure of the key itself rather than of the token. */
static int
pki_key_fault(pki_status_t st)
{
    return st == PKI_NOT_FOUND || st == PKI_MALFORMED
           || st == PKI_UNSUPPORTED || st == PKI_BAD_SIGNATURE;
}


/* The key's backoff starts, or goes on (state_mutex held).  It doubles
 * once per backoff, when the try after it (pki_key_gate) fails with the
 * key again; a failure within it (another signer's, at the same moment)
 * does not double it. */
static void
pki_key_failed_locked(pki_key_t *k, const char *why, pki_result_t *res)
{
    double  now;

    now = pki_int_now();

    if (k->kb_ms == 0) {
        k->kb_ms = PKI_BACKOFF_MIN;

    } else if (k->kb_retry) {
        k->kb_ms = k->kb_ms * 2 > PKI_KEY_BACKOFF_MAX ? PKI_KEY_BACKOFF_MAX
                   : k->kb_ms * 2;
    }

    k->kb_retry = 0;

    if (k->kb_until < now + k->kb_ms / 1000.0) {
        k->kb_until = now + k->kb_ms / 1000.0;
    }

    if (why != NULL) {
        snprintf(k->kb_error, sizeof(k->kb_error), "%s", why);
    }

    pki_key_kb_changed(k);

    if (res != NULL) {
        pki_log(res, "%skey \"%s\" is not used for %ld ms: %s",
                res->log[0] ? "; " : "", k->ref, k->kb_ms, k->kb_error);
    }
}


static void
pki_key_failed(pki_key_t *k, const char *why, pki_result_t *res)
{
    pthread_mutex_lock(&k->vault->state_mutex);
    pki_key_failed_locked(k, why, res);
    pthread_mutex_unlock(&k->vault->state_mutex);
}


/* The key worked: its backoff, if any, ends, unless it changed after
 * the operation began (seq, pki_key_kb_seq() then): a backoff another
 * signer started meanwhile stands, with its doubling, and the try after
 * it reopens once, as for any backoff. */
static void
pki_key_good(pki_key_t *k, unsigned long seq)
{
    if (!__atomic_load_n(&k->kb_set, __ATOMIC_ACQUIRE)) {
        return;
    }

    pthread_mutex_lock(&k->vault->state_mutex);

    if (k->kb_seq != seq) {
        pthread_mutex_unlock(&k->vault->state_mutex);
        return;
    }

    k->kb_ms = 0;
    k->kb_retry = 0;
    k->kb_until = 0;
    k->kb_gen = 0;
    k->kb_error[0] = '\0';
    __atomic_store_n(&k->kb_set, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&k->vault->state_mutex);
}


/* Before each try with the key: 0 go on, 1 give up (the key is in its
 * backoff; res->log says why and for how long), 2 the backoff is over and
 * this caller tries again, with a reopen for the key (pki_vault_recover,
 * failed 2), while the same backoff again holds the others off. */
static int
pki_key_gate(pki_key_t *k, pki_result_t *res)
{
    double  now, wait;

    if (!__atomic_load_n(&k->kb_set, __ATOMIC_ACQUIRE)) {
        return 0;
    }

    pthread_mutex_lock(&k->vault->state_mutex);

    if (k->kb_ms == 0) {
        pthread_mutex_unlock(&k->vault->state_mutex);
        return 0;
    }

    now = pki_int_now();
    wait = k->kb_until - now;

    if (wait > 0) {
        pki_log(res, "%skey \"%s\" is unavailable, next try in %ld ms: %s",
                res->log[0] ? "; " : "", k->ref, (long) (wait * 1000) + 1,
                k->kb_error);
        pthread_mutex_unlock(&k->vault->state_mutex);
        return 1;
    }

    k->kb_retry = 1;
    k->kb_until = now + k->kb_ms / 1000.0;
    pki_key_kb_changed(k);

    pthread_mutex_unlock(&k->vault->state_mutex);

    return 2;
}


/*
 * A signer (or decrypter) of key k found no usable handle: failed 1 when
 * the handle it used did not work (or its lookup failed in this generation
 * seen), 2 when the key's own backoff is over (pki_key_gate) and the vault
 * is to be reopened once for it, 0 otherwise: the vault is closed, k's
 * handle is from an older generation, or k was never fetched (a token key
 * whose open failed).  One thread at a time repairs (close, reopen,
 * re-fetch under the write lock) while the others wait for it and then
 * look again; after a failed reopen nobody tries before the vault's
 * retry_after, and while the token refuses the PIN nobody tries before the
 * PIN file changes: such callers fail at once, without the write lock.
 * A handle that fails again in the generation a reopen for k made (one
 * that closed the vault after k failed in it, or the retry after k's
 * backoff) is k's own failure: k's backoff, no second reopen.  Returns 1
 * to look again, 0 to give up (the reason is in res->log).
 */
static int
pki_vault_recover(pki_vault_t *v, pki_key_t *k, int failed,
    unsigned long seen, pki_result_t *res)
{
    int              reopened, closed, busy;
    long             age;
    double           wait;
    struct stat      pst;
    pki_status_t     st;
    pki_result_t     tmp;
    unsigned long    refused;
    struct timespec  ts;
    char             why[200], *p, *q;

    pki_result_init(&tmp);

    if (pki_vault_lock(v, 0, &tmp) != PKI_OK) {
        pki_log(res, "%s%s", res->log[0] ? "; " : "", tmp.detail);
        return 0;
    }
    refused = v->ctx == NULL ? v->pin_refused : 0;
    pst = v->pin_st;
    pthread_rwlock_unlock(&v->lock);

    pthread_mutex_lock(&v->state_mutex);

    if (v->reopening) {
        /* another thread repairs; one that waits for a call that hangs
         * is given up, as pki_vault_lock() does (the next look, after a
         * reopen that gave up, finds the hang in pki_vault_lock()) */
        while (v->reopening) {
            if (v->call_timeout_ms == 0) {
                pthread_cond_wait(&v->state_cond, &v->state_mutex);
                continue;
            }

            age = pki_vault_hung(v);
            if (age != 0) {
                pthread_mutex_unlock(&v->state_mutex);
                (void) pki_vault_hung_fail(v, age, &tmp);
                pki_log(res, "%s%s", res->log[0] ? "; " : "", tmp.detail);
                return 0;
            }

            pki_vault_hung_at(v, &ts);
            (void) pthread_cond_clockwait(&v->state_cond, &v->state_mutex,
                                          CLOCK_MONOTONIC, &ts);
        }
        pthread_mutex_unlock(&v->state_mutex);
        return 1;
    }

    if (refused && pki_pin_file_same(v->pin_file, &pst)) {
        pthread_mutex_unlock(&v->state_mutex);
        pki_log(res, "%svault \"%s\": the token \"%s\" refused the PIN "
                "(%s); fix the PIN file \"%s\", nothing is retried until "
                "it changes", res->log[0] ? "; " : "", v->name, v->token,
                pki_pin_refusal(refused), v->pin_file);
        return 0;
    }

    wait = k->busy_until - pki_int_now();

    if (failed == 0 && wait > 0) {
        pki_log(res, "%skey \"%s\": the token had no free session to "
                "fetch it, next try in %ld ms", res->log[0] ? "; " : "",
                k->ref, (long) (wait * 1000) + 1);
        pthread_mutex_unlock(&v->state_mutex);
        return 0;
    }

    wait = v->retry_after - pki_int_now();

    if (!refused && failed != 1 && wait > 0) {
        pki_log(res, "%svault \"%s\" is unavailable, next try in %ld ms%s%s",
                res->log[0] ? "; " : "", v->name, (long) (wait * 1000) + 1,
                v->last_error[0] ? ": " : "", v->last_error);
        pthread_mutex_unlock(&v->state_mutex);
        return 0;
    }

    if (failed == 1 && seen != 0 && v->gen == seen && k->kb_gen == seen) {
        /* the last entry of the log: the token's error */
        p = res->log;
        while ((q = strstr(p, "; ")) != NULL) {
            p = q + 2;
        }

        snprintf(why, sizeof(why), "the token fails with it after a reopen "
                 "of the vault for it (%.100s)", p);
        pki_key_failed_locked(k, why, res);
        pthread_mutex_unlock(&v->state_mutex);
        return 0;
    }

    v->reopening = 1;
    pthread_mutex_unlock(&v->state_mutex);

    if (failed == 1) {
        pki_jitter_sleep(10, 20);
    }

    pki_result_init(&tmp);
    reopened = 0;
    closed = 0;
    busy = 0;

    st = pki_vault_lock(v, 1, &tmp);

    if (st != PKI_OK) {
        /* the call this repair waits for hangs: given up, the vault left
         * as it is for the first signer after the hang to repair */
        pthread_mutex_lock(&v->state_mutex);
        v->reopening = 0;
        pthread_cond_broadcast(&v->state_cond);
        pthread_mutex_unlock(&v->state_mutex);
        pki_log(res, "%s%s", res->log[0] ? "; " : "", tmp.detail);
        return 0;
    }

    if (failed && v->gen == seen && v->ctx != NULL) {
        /* Nobody reopened since our failure: do it. */
        pki_vault_close_locked(v);
        closed = 1;
    }

    if (v->ctx == NULL) {
        reopened = pki_vault_open_locked(v, &tmp) == PKI_OK;
    }

    if (v->ctx != NULL && k->gen != v->gen) {
        st = pki_key_fetch_locked(k, &tmp);
        busy = st != PKI_OK && k->p11_busy;
    }

    pthread_rwlock_unlock(&v->lock);

    pthread_mutex_lock(&v->state_mutex);

    v->reopening = 0;
    pthread_cond_broadcast(&v->state_cond);

    /* the next fetch of a key the token had no session for waits a
     * second: each one holds the write lock, which stops every signer of
     * the vault */
    k->busy_until = busy ? pki_int_now() + PKI_P11_BUSY_MS / 1000.0 : 0;

    if (reopened && (closed || failed == 2)) {
        /* a reopen for k: k failing again in this generation is k's own
         * failure.  Not so an open of a vault that was closed already (a
         * token fault, a failed reopen, anyone's close) which k's signer
         * merely came first to: that cured nothing of k's. */
        k->kb_gen = v->gen;
        pki_key_kb_changed(k);
    }

    pthread_mutex_unlock(&v->state_mutex);

    if (tmp.status != PKI_OK && strstr(res->log, tmp.detail) == NULL) {
        pki_log(res, "%s%s", res->log[0] ? "; " : "", tmp.detail);
        if (tmp.log[0] != '\0') {
            pki_log(res, " (%s)", tmp.log);
        }
    }

    /* a token out of sessions: not looked at again now (each look holds
     * the write lock), nor a failure to cure */
    if (busy) {
        return 0;
    }

    /* a key not found, or not the key it was: its backoff has begun */
    return !pki_key_fault(st);
}


static pki_status_t pki_key_do_sign_once(pki_key_t *k, pki_sign_op_t *op,
    pki_result_t *res);


/* Every signature is timed and counted (core/audit.c event hook). */
static pki_status_t
pki_key_do_sign(pki_key_t *k, pki_sign_op_t *op, pki_result_t *res)
{
    int           slot;
    double        t0;
    pki_status_t  st;

    if (k != NULL && k->vault != NULL) {
        st = pki_key_hung_check(k, res);
        if (st != PKI_OK) {
            pki_int_observe(PKI_EV_SIGN, 0, st,
                            op->what == 1 ? "certificate"
                            : op->what == 2 ? "crl" : "other");
            return st;
        }
    }

    slot = k != NULL && k->vault != NULL ? pki_vault_call_begin(k->vault)
                                         : -1;

    t0 = pki_int_now();
    st = pki_key_do_sign_once(k, op, res);

    if (slot >= 0) {
        pki_vault_call_end(k->vault, slot);
    }

    pki_int_observe(PKI_EV_SIGN, pki_int_now() - t0, st,
                    op->what == 1 ? "certificate"
                    : op->what == 2 ? "crl" : "other");

    return st;
}


/*
 * A token key that is not open (its open failed: the token was away when
 * the worker started) is not refused: it goes through the recovery above
 * like any key without a handle, and its first fetch tests it
 * (pki_key_fetch_locked) before any signature is released.
 */
static pki_status_t
pki_key_do_sign_once(pki_key_t *k, pki_sign_op_t *op, pki_result_t *res)
{
    pki_vault_t    *v;
    unsigned long   seen, kseq;
    int             attempt, rc, failed, gate, retry;
    char            what[PKI_LABEL_MAX + 16], why[PKI_LABEL_MAX + 192];

    if (k == NULL
        || __atomic_load_n(&k->state, __ATOMIC_ACQUIRE) == PKI_KEY_CLOSED)
    {
        return pki_fail(res, PKI_INTERNAL, "signing key is not open");
    }

    v = k->vault;

    if (v == NULL) {
        rc = pki_sign_once(op, k->priv, k->pub, res);
        if (rc == 1) {
            ERR_clear_error();
            return PKI_OK;
        }
        return pki_fail(res, PKI_INTERNAL, "signing with key \"%s\" failed%s",
                        k->ref, rc < 0 ? " (signature does not verify)" : "");
    }

    retry = 0;

    for (attempt = 0; ; attempt++) {
        /* the caller that retries after the key's backoff is past it */
        gate = retry ? 0 : pki_key_gate(k, res);
        if (gate == 1) {
            break;
        }
        retry |= gate == 2;

        failed = 0;

        if (pki_vault_lock(v, 0, res) != PKI_OK) {
            return PKI_UNAVAILABLE;
        }

        seen = v->gen;

        if (gate == 0 && v->ctx != NULL && k->priv != NULL
            && k->gen == v->gen)
        {
            kseq = pki_key_kb_seq(k);
            rc = pki_p11_sign(k, 1, op, res);
            if (rc == 2) {
                rc = pki_sign_once(op, k->priv, k->pub, res);
            }
            pthread_rwlock_unlock(&v->lock);

            if (rc == 1) {
                ERR_clear_error();
                pki_key_good(k, kseq);
                return PKI_OK;
            }

            pki_drain_errors(res);

            if (rc == 3) {
                /* the token is busy, not failing (its sessions are all
                 * in use): no reopen, no backoff, the handles stay */
                return pki_fail(res, PKI_UNAVAILABLE, "the token has no "
                                "free session");
            }

            if (rc < 0) {
                /* the token signs, with another key than this one's:
                 * reopening will not change that */
                pki_key_describe(k, what, sizeof(what));
                snprintf(why, sizeof(why), "the key under %s no longer "
                         "matches its certificate: its signature does not "
                         "verify with the key's public key (replaced on "
                         "the token?)", what);
                pki_key_failed(k, why, res);
                break;
            }

            failed = 1;

        } else if (gate == 2) {
            pthread_rwlock_unlock(&v->lock);
            failed = 2;

        } else {
            /* a lookup that failed in this generation needs a reopen */
            failed = v->ctx != NULL && k->bad_gen == v->gen;
            pthread_rwlock_unlock(&v->lock);
        }

        if (attempt >= PKI_SIGN_REOPENS
            || !pki_vault_recover(v, k, failed, seen, res))
        {
            break;
        }
    }

    return pki_fail(res, PKI_UNAVAILABLE, "signing key unavailable");
}


static const unsigned char  pki_selftest_msg[] = "nginx-pki key self test";


/* A file key's test signature. */
static pki_status_t
pki_key_selftest(pki_key_t *k, pki_result_t *res)
{
    pki_sign_op_t  op;
    pki_status_t   st;

    memset(&op, 0, sizeof(op));
    op.tbs = pki_selftest_msg;
    op.tbslen = sizeof(pki_selftest_msg) - 1;

    st = pki_key_do_sign(k, &op, res);
    OPENSSL_free(op.sig);

    if (st != PKI_OK) {
        return pki_fail(res, st, "key \"%s\" failed its test signature",
                        k->ref);
    }

    return PKI_OK;
}


/* A token key's test signature with the handles just fetched (the vault's
 * write lock held): PKI_BAD_SIGNATURE when it does not verify with pub;
 * *busy set with PKI_UNAVAILABLE when the token had no free session. */
static pki_status_t
pki_key_test_locked(pki_key_t *k, int *busy, pki_result_t *res)
{
    int            rc;
    pki_sign_op_t  op;

    *busy = 0;

    memset(&op, 0, sizeof(op));
    op.tbs = pki_selftest_msg;
    op.tbslen = sizeof(pki_selftest_msg) - 1;

    rc = pki_p11_sign(k, 0, &op, res);
    if (rc == 2) {
        rc = pki_sign_once(&op, k->priv, k->pub, res);
    }

    OPENSSL_free(op.sig);

    if (rc == 1) {
        ERR_clear_error();
        return PKI_OK;
    }

    pki_drain_errors(res);

    if (rc < 0) {
        return pki_fail(res, PKI_BAD_SIGNATURE, "key \"%s\" failed its test "
                        "signature: the key on the token does not match its "
                        "public key", k->ref);
    }

    if (rc == 3) {
        /* busy, not failing: no reopen for it (pki_key_fetch_locked) */
        *busy = 1;
        return pki_fail(res, PKI_UNAVAILABLE, "key \"%s\" failed its test "
                        "signature: the token has no free session", k->ref);
    }

    return pki_fail(res, PKI_UNAVAILABLE, "key \"%s\" failed its test "
                    "signature", k->ref);
}


/*
 * The lookup of key k found nothing (PKI_NOT_FOUND).  A token that lost
 * its login (a C_Logout anywhere in the process, the token's own timeout,
 * a session closed under libp11) lists no private key at all, and a key
 * never listed before is not in libp11's list either: such a key looks
 * missing until the vault is opened again.  One close and open of the
 * vault (a new login, the keys listed again) and one more lookup tell the
 * two apart before nginx -t or a reload fails; a key that is not there
 * costs that one reopen, and its open fails as before.  A second answer
 * that is not the key's own (the key found, or the vault not opening)
 * ends the backoff the first one started.  Write lock held, vault open.
 */
static pki_status_t
pki_key_refetch_locked(pki_key_t *k, pki_result_t *res)
{
    pki_vault_t    *v = k->vault;
    pki_result_t    tmp;
    pki_status_t    st;
    unsigned long   seq;

    seq = pki_key_kb_seq(k);

    pki_log(res, "%s%s; the vault reopened for it (a new login)",
            res->log[0] ? "; " : "", res->detail);

    pki_vault_close_locked(v);

    pki_result_init(&tmp);
    st = pki_vault_open_locked(v, &tmp);

    if (st != PKI_OK) {
        /* the vault's failure, as a first open's */
        pki_fail(res, st, "%s", tmp.detail);
        if (tmp.log[0] != '\0') {
            pki_log(res, "; %s", tmp.log);
        }

    } else {
        st = pki_key_fetch_locked(k, res);

        if (st == PKI_OK) {
            /* what failed first stays in res->log */
            res->status = PKI_OK;
            res->detail[0] = '\0';
        }
    }

    if (!pki_key_fault(st)) {
        pki_key_good(k, seq);
    }

    return st;
}


/*
 * A token key whose open fails stays PKI_KEY_OPENING, not closed: in a
 * worker the token may be away for longer than the vault's open retries
 * (an HSM blip during a reload or a respawn), and nothing would open the
 * key again before the next reload.  Its signers recover it as they
 * recover a lost handle.  A file key that does not open is a
 * configuration error and stays closed.
 */
PKI_API pki_status_t
pki_key_open(pki_key_t *k, pki_result_t *res)
{
    int            opened, slot;
    pki_vault_t   *v;
    pki_status_t   st;

    if (k == NULL) {
        return pki_fail(res, PKI_INTERNAL, "no key");
    }

    if (__atomic_load_n(&k->state, __ATOMIC_ACQUIRE) == PKI_KEY_OPEN) {
        return PKI_OK;
    }

    v = k->vault;

    if (v == NULL) {
        if (pki_is_pkcs11_uri(k->ref)) {
            return pki_fail(res, PKI_INTERNAL, "key \"%s\": its vault is gone",
                            k->ref);
        }

        st = pki_key_load_file(k, res);
        if (st != PKI_OK) {
            return st;
        }

        __atomic_store_n(&k->state, PKI_KEY_OPEN, __ATOMIC_RELEASE);

        st = pki_key_selftest(k, res);
        if (st != PKI_OK) {
            pki_key_close(k);
            return st;
        }

        return PKI_OK;
    }

    /* not open until its test signature (pki_key_fetch_locked) */
    __atomic_store_n(&k->state, PKI_KEY_OPENING, __ATOMIC_RELEASE);

    /* a token that stops answering here (a key opened again at run time,
     * from a pool thread) is seen by the watchdog as in a signature */
    slot = pki_vault_call_begin(v);

    pthread_rwlock_wrlock(&v->lock);

    st = pki_vault_open_locked(v, res);
    opened = st == PKI_OK;
    if (opened) {
        st = pki_key_fetch_locked(k, res);

        if (st == PKI_NOT_FOUND) {
            st = pki_key_refetch_locked(k, res);
            opened = v->ctx != NULL;
        }
    }

    pthread_rwlock_unlock(&v->lock);

    pki_vault_call_end(v, slot);

    if (opened && st != PKI_OK && !pki_key_fault(st)) {
        /* A token error with the vault open (the lookup or the test
         * signature: a session closed, a login lost, a device error) is
         * retried as a signer's is, with at most PKI_SIGN_REOPENS reopens
         * of the vault; one transient error would fail nginx -t or the
         * reload.  The key's own failure (pki_key_fault) is not: its
         * backoff has begun. */
        st = pki_key_selftest(k, res);

        if (st == PKI_OK) {
            /* what failed first stays in res->log */
            res->status = PKI_OK;
            res->detail[0] = '\0';
        }
    }

    if (st != PKI_OK) {
        if (st == PKI_BAD_SIGNATURE) {
            /* a key's status, not one of the input's */
            res->status = st = PKI_UNAVAILABLE;
        }

        pki_log(res, "%sits signers will fetch it again", res->log[0]
                ? "; " : "");
        return st;
    }

    return PKI_OK;
}


/* A token key keeps its public key: the next open (a worker's, after
 * fork) must find the key that the opener checked (against the CA
 * certificate), and its test signature says whether it did. */
PKI_API void
pki_key_close(pki_key_t *k)
{
    if (k == NULL) {
        return;
    }

    __atomic_store_n(&k->state, PKI_KEY_CLOSED, __ATOMIC_RELEASE);

    if (k->vault != NULL) {
        pthread_rwlock_wrlock(&k->vault->lock);
        pki_key_drop_handles(k);
        k->bad_gen = 0;
        pthread_rwlock_unlock(&k->vault->lock);

        pthread_mutex_lock(&k->vault->state_mutex);
        k->kb_ms = 0;
        k->kb_retry = 0;
        k->kb_until = 0;
        k->kb_gen = 0;
        k->kb_error[0] = '\0';
        __atomic_store_n(&k->kb_set, 0, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&k->vault->state_mutex);

    } else {
        pki_key_drop_handles(k);
    }

    pthread_mutex_lock(&k->p11_mutex);
    EC_GROUP_free(k->fv_group);
    k->fv_group = NULL;
    k->fv_state = 0;
    k->fv_count = 0;
    pthread_mutex_unlock(&k->p11_mutex);

    if (k->vault == NULL && k->pub != NULL) {
        EVP_PKEY_free(k->was_pub);
        k->was_pub = k->pub;
        k->pub = NULL;
    }
}


PKI_API void
pki_key_free(pki_key_t *k)
{
    pki_key_t  **pp;

    if (k == NULL) {
        return;
    }

    pki_key_close(k);

    EVP_PKEY_free(k->pub);
    k->pub = NULL;
    EVP_PKEY_free(k->was_pub);
    k->was_pub = NULL;

    if (k->vault != NULL) {
        pthread_rwlock_wrlock(&k->vault->lock);

        for (pp = &k->vault->keys; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == k) {
                *pp = k->next;
                break;
            }
        }

        pthread_rwlock_unlock(&k->vault->lock);
    }

    pthread_cond_destroy(&k->p11_cond);
    pthread_mutex_destroy(&k->p11_mutex);
    free(k->ref);
    free(k->label);
    free(k->id);
    free(k);
}


PKI_API pki_status_t
pki_key_sign_x509(pki_key_t *k, X509 *x, pki_result_t *res)
{
    pki_sign_op_t  op;

    if (x == NULL) {
        return pki_fail(res, PKI_INTERNAL, "nothing to sign");
    }

    memset(&op, 0, sizeof(op));
    op.what = 1;
    op.x509 = x;

    return pki_key_do_sign(k, &op, res);
}


PKI_API pki_status_t
pki_key_sign_crl(pki_key_t *k, X509_CRL *crl, pki_result_t *res)
{
    pki_sign_op_t  op;

    if (crl == NULL) {
        return pki_fail(res, PKI_INTERNAL, "nothing to sign");
    }

    memset(&op, 0, sizeof(op));
    op.what = 2;
    op.crl = crl;

    return pki_key_do_sign(k, &op, res);
}


PKI_API pki_status_t
pki_key_sign(pki_key_t *k, const EVP_MD *md, const unsigned char *tbs,
    size_t tbslen, unsigned char **sig, size_t *siglen, pki_result_t *res)
{
    pki_sign_op_t  op;
    pki_status_t   st;

    if (sig == NULL || siglen == NULL || (tbs == NULL && tbslen != 0)) {
        return pki_fail(res, PKI_INTERNAL, "bad pki_key_sign() arguments");
    }

    *sig = NULL;
    *siglen = 0;

    memset(&op, 0, sizeof(op));
    op.md = md;
    op.md_given = 1;
    op.tbs = tbs != NULL ? tbs : (const unsigned char *) "";
    op.tbslen = tbslen;

    st = pki_key_do_sign(k, &op, res);
    if (st != PKI_OK) {
        return st;
    }

    /* Callers free with free(): copy out of OpenSSL's allocator. */
    *sig = malloc(op.siglen);
    if (*sig == NULL) {
        OPENSSL_free(op.sig);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    memcpy(*sig, op.sig, op.siglen);
    *siglen = op.siglen;
    OPENSSL_free(op.sig);

    return PKI_OK;
}


/* ---- decryption (SCEP key transport) -------------------------------------
 *
 * RSA PKCS#1 v1.5, or OAEP with the hash and MGF1 hash given (SCEP's
 * EnvelopedData: some Windows clients send OAEP).  With a token key libp11's
 * RSA method does the raw private-key operation (CKM_RSA_X_509) and
 * OpenSSL's legacy RSA code checks the OAEP padding, in constant time, as
 * it does for a file key.  A token error that
 * says the session or token is gone closes and reopens the vault (bounded
 * retries, as for signing); any other failure is the input's fault (bad
 * padding, wrong length) and returns PKI_MALFORMED at once, without a
 * reopen, so that hostile ciphertexts cannot churn the token.  SoftHSM
 * answers a bad padding with CKR_GENERAL_ERROR: that code counts as the
 * input's fault too.
 */

/* Returns 1 on success, 0 on a bad ciphertext, -1 on a token failure, -2
 * when the token refuses the operation with this key by its policy. */
static int
pki_decrypt_once(pki_key_t *k, EVP_PKEY *priv, const EVP_MD *md,
    const EVP_MD *mgf1, const unsigned char *in, size_t inlen,
    unsigned char *out, size_t *outlen, pki_result_t *res)
{
    int             rc;
    unsigned long   ckr;
    EVP_PKEY_CTX   *pctx;

    pctx = EVP_PKEY_CTX_new(priv, NULL);
    if (pctx == NULL) {
        return -1;
    }

    rc = 0;

    if (EVP_PKEY_decrypt_init(pctx) != 1
        || (md == NULL
            && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
        || (md != NULL
            && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING)
                != 1
                || EVP_PKEY_CTX_set_rsa_oaep_md(pctx, md) != 1
                || EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, mgf1) != 1)))
    {
        pki_log(res, "%sEVP_PKEY_decrypt_init() failed", pki_sep(res));
        rc = -1;
        goto done;
    }

    if (EVP_PKEY_decrypt(pctx, out, outlen, in, inlen) == 1) {
        rc = 1;
        goto done;
    }

    rc = 0;

    if (k->vault != NULL) {
        ckr = pki_p11_last_ckr();

        switch (ckr) {
        case 0x30UL:   /* CKR_DEVICE_ERROR */
        case 0x31UL:   /* CKR_DEVICE_MEMORY */
        case 0x32UL:   /* CKR_DEVICE_REMOVED */
        case 0x60UL:   /* CKR_KEY_HANDLE_INVALID */
        case 0x82UL:   /* CKR_OBJECT_HANDLE_INVALID */
        case 0x90UL:   /* CKR_OPERATION_ACTIVE: a session stuck in an
                          unfinished C_Decrypt; a new session mends it */
        case 0xB0UL:   /* CKR_SESSION_CLOSED */
        case 0xB3UL:   /* CKR_SESSION_HANDLE_INVALID */
        case 0xE0UL:   /* CKR_TOKEN_NOT_PRESENT */
        case 0x101UL:  /* CKR_USER_NOT_LOGGED_IN */
        case 0x190UL:  /* CKR_CRYPTOKI_NOT_INITIALIZED */
            pki_log(res, "%stoken decryption failed (CKR 0x%lx)",
                    pki_sep(res), ckr);
            rc = -1;
            break;
        case 0x68UL:   /* CKR_KEY_FUNCTION_NOT_PERMITTED */
        case 0x70UL:   /* CKR_MECHANISM_INVALID */
        case 0x71UL:   /* CKR_MECHANISM_PARAM_INVALID */
            /* the token's policy, whatever the ciphertext (no oracle):
             * OAEP needs the raw RSA operation (CKM_RSA_X_509) on the
             * key, which some HSMs do not allow; a reopen cannot help */
            pki_log(res, "%sCKR 0x%lx%s", pki_sep(res), ckr,
                    md != NULL ? ": RSAES-OAEP needs raw RSA "
                                 "(CKM_RSA_X_509) allowed on the key" : "");
            rc = -2;
            break;
        default:
            break;
        }
    }

done:

    ERR_clear_error();
    EVP_PKEY_CTX_free(pctx);
    return rc;
}


PKI_API pki_status_t
pki_key_decrypt(pki_key_t *k, const unsigned char *in, size_t inlen,
    unsigned char **out, size_t *outlen, pki_result_t *res)
{
    return pki_key_decrypt_oaep(k, NULL, NULL, in, inlen, out, outlen, res);
}


static pki_status_t
pki_key_decrypt_do(pki_key_t *k, const EVP_MD *md, const EVP_MD *mgf1,
    const unsigned char *in, size_t inlen, unsigned char **out,
    size_t *outlen, pki_result_t *res)
{
    int             attempt, rc, failed, gate, retry;
    size_t          cap, n;
    EVP_PKEY       *pub;
    pki_vault_t    *v;
    unsigned char  *buf;
    unsigned long   seen, kseq;

    if (out == NULL || outlen == NULL || in == NULL || inlen == 0
        || (md != NULL && mgf1 == NULL))
    {
        return pki_fail(res, PKI_INTERNAL, "bad pki_key_decrypt() arguments");
    }

    *out = NULL;
    *outlen = 0;

    if (k == NULL
        || __atomic_load_n(&k->state, __ATOMIC_ACQUIRE) == PKI_KEY_CLOSED)
    {
        return pki_fail(res, PKI_INTERNAL, "decryption key is not open");
    }

    pub = pki_key_public(k);

    if (pub == NULL && k->vault != NULL) {
        /* a token key whose open failed before its public key was ever
         * known: fetched first (pki_vault_recover), once */
        if (pki_vault_lock(k->vault, 0, res) != PKI_OK) {
            return PKI_UNAVAILABLE;
        }
        seen = k->vault->gen;
        pthread_rwlock_unlock(&k->vault->lock);

        gate = pki_key_gate(k, res);
        if (gate != 1) {
            (void) pki_vault_recover(k->vault, k, gate == 2 ? 2 : 0, seen,
                                     res);
        }

        pub = pki_key_public(k);
        if (pub == NULL) {
            return pki_fail(res, PKI_UNAVAILABLE, "decryption key "
                            "unavailable");
        }
    }

    if (pub == NULL) {
        return pki_fail(res, PKI_INTERNAL, "decryption key is not open");
    }

    if (EVP_PKEY_get_base_id(pub) != EVP_PKEY_RSA) {
        return pki_fail(res, PKI_UNSUPPORTED, "key \"%s\" is not an RSA key",
                        k->ref);
    }

    /* An RSA ciphertext is exactly as long as the modulus.  Anything else
     * never reaches the token: SoftHSM answers a short one with
     * CKR_BUFFER_TOO_SMALL and leaves the decryption active in the
     * session, which then refuses the next, good one. */
    cap = (size_t) EVP_PKEY_get_size(pub);
    if (cap == 0 || inlen != cap) {
        return pki_fail(res, PKI_MALFORMED, "ciphertext length does not "
                        "match the key");
    }

    buf = malloc(cap);
    if (buf == NULL) {
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    v = k->vault;

    if (v == NULL) {
        n = cap;
        rc = pki_decrypt_once(k, k->priv, md, mgf1, in, inlen, buf, &n,
                              res);
        goto result;
    }

    rc = -1;
    n = cap;
    retry = 0;

    /* as pki_key_do_sign_once */
    for (attempt = 0; ; attempt++) {
        gate = retry ? 0 : pki_key_gate(k, res);
        if (gate == 1) {
            rc = -1;
            break;
        }
        retry |= gate == 2;

        if (pki_vault_lock(v, 0, res) != PKI_OK) {
            rc = -3;
            break;
        }

        seen = v->gen;

        if (gate == 0 && v->ctx != NULL && k->priv != NULL
            && k->gen == v->gen)
        {
            n = cap;
            kseq = pki_key_kb_seq(k);
            rc = pki_decrypt_once(k, k->priv, md, mgf1, in, inlen, buf,
                                  &n, res);
            pthread_rwlock_unlock(&v->lock);

            if (rc == -2) {
                break;          /* the token's policy: no reopen */
            }

            if (rc >= 0) {
                /* a bad padding too: the token did the private-key
                 * operation, the key works (its backoff ends, else every
                 * try after it reopened the vault) */
                pki_key_good(k, kseq);
                break;
            }

            failed = 1;

        } else if (gate == 2) {
            pthread_rwlock_unlock(&v->lock);
            failed = 2;

        } else {
            failed = v->ctx != NULL && k->bad_gen == v->gen;
            pthread_rwlock_unlock(&v->lock);
        }

        rc = -1;

        if (attempt >= PKI_SIGN_REOPENS
            || !pki_vault_recover(v, k, failed, seen, res))
        {
            break;
        }
    }

result:

    if (rc == 1) {
        *out = buf;
        *outlen = n;
        return PKI_OK;
    }

    OPENSSL_cleanse(buf, cap);
    free(buf);

    if (rc == 0) {
        return pki_fail(res, PKI_MALFORMED, "cannot decrypt");
    }

    if (rc == -2) {
        return pki_fail(res, PKI_UNAVAILABLE, "the token refuses to decrypt "
                        "with this key");
    }

    if (rc == -3) {
        return PKI_UNAVAILABLE;     /* the vault hung: res says so */
    }

    return pki_fail(res, PKI_UNAVAILABLE, "decryption key unavailable");
}


PKI_API pki_status_t
pki_key_decrypt_oaep(pki_key_t *k, const EVP_MD *md, const EVP_MD *mgf1,
    const unsigned char *in, size_t inlen, unsigned char **out,
    size_t *outlen, pki_result_t *res)
{
    int           slot;
    pki_status_t  st;

    if (k == NULL || k->vault == NULL) {
        return pki_key_decrypt_do(k, md, mgf1, in, inlen, out, outlen, res);
    }

    if (out != NULL && outlen != NULL) {
        *out = NULL;
        *outlen = 0;
    }

    st = pki_key_hung_check(k, res);
    if (st != PKI_OK) {
        return st;
    }

    slot = pki_vault_call_begin(k->vault);
    st = pki_key_decrypt_do(k, md, mgf1, in, inlen, out, outlen, res);
    pki_vault_call_end(k->vault, slot);

    return st;
}
