/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * What the token tests do to the token behind the core's back, through the
 * PKCS#11 module the vault has loaded and initialised (dlopen returns the
 * same copy): sessions of their own, key pairs made, renamed and destroyed,
 * the login dropped.  A session's login is the process's: once the vault
 * has logged in, a session of the test may use the private objects.
 *
 * A probe tells whether the module was finalised (the vault reopened)
 * since it was armed: a session of the test with a find operation left
 * open answers the next C_FindObjectsInit with CKR_OPERATION_ACTIVE; after
 * C_Finalize the session is gone, and its number either refused or given
 * to a new session that has no operation open.
 *
 * The few PKCS#11 types used are declared by hand: pkcs11.h is not
 * installed with libp11.  Every PKCS#11 integer type is a CK_ULONG.
 */

#ifndef PKI_TEST_P11_H
#define PKI_TEST_P11_H

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "pki.h"
#include "test/unit.h"


typedef unsigned long  p11_ulong;

typedef struct {
    p11_ulong   type;
    void       *value;
    p11_ulong   len;
} p11_attr_t;

typedef struct {
    p11_ulong   mechanism;
    void       *param;
    p11_ulong   param_len;
} p11_mech_t;

typedef p11_ulong (*p11_slot_list_pt)(unsigned char present, p11_ulong *slots,
    p11_ulong *count);
typedef p11_ulong (*p11_token_info_pt)(p11_ulong slot, void *info);
typedef p11_ulong (*p11_open_pt)(p11_ulong slot, p11_ulong flags, void *app,
    void *notify, p11_ulong *session);
typedef p11_ulong (*p11_session_pt)(p11_ulong session);
typedef p11_ulong (*p11_find_init_pt)(p11_ulong session, p11_attr_t *t,
    p11_ulong n);
typedef p11_ulong (*p11_find_pt)(p11_ulong session, p11_ulong *objs,
    p11_ulong max, p11_ulong *n);
typedef p11_ulong (*p11_set_attr_pt)(p11_ulong session, p11_ulong obj,
    p11_attr_t *t, p11_ulong n);
typedef p11_ulong (*p11_destroy_pt)(p11_ulong session, p11_ulong obj);
typedef p11_ulong (*p11_keygen_pt)(p11_ulong session, p11_mech_t *mech,
    p11_attr_t *pub, p11_ulong npub, p11_attr_t *priv, p11_ulong npriv,
    p11_ulong *hpub, p11_ulong *hpriv);

#define P11_CKF_RW_SESSION          0x2UL
#define P11_CKF_SERIAL_SESSION      0x4UL
#define P11_CKR_OK                  0x0UL
#define P11_CKR_OPERATION_ACTIVE    0x90UL
#define P11_CKA_CLASS               0x0UL
#define P11_CKA_TOKEN               0x1UL
#define P11_CKA_PRIVATE             0x2UL
#define P11_CKA_LABEL               0x3UL
#define P11_CKA_ID                  0x102UL
#define P11_CKA_SENSITIVE           0x103UL
#define P11_CKA_SIGN                0x108UL
#define P11_CKA_VERIFY              0x10aUL
#define P11_CKA_EC_PARAMS           0x180UL
#define P11_CKM_EC_KEY_PAIR_GEN     0x1040UL
#define P11_CKA_ENCRYPT             0x104UL
#define P11_CKA_DECRYPT             0x105UL
#define P11_CKA_MODULUS_BITS        0x121UL
#define P11_CKA_PUBLIC_EXPONENT     0x122UL
#define P11_CKM_RSA_PKCS_KEY_PAIR_GEN  0x0UL

typedef struct {
    void               *dl;
    p11_ulong           slot;
    p11_slot_list_pt    slot_list;
    p11_token_info_pt   token_info;
    p11_open_pt         open;
    p11_session_pt      close;
    p11_session_pt      logout;
    p11_find_init_pt    find_init;
    p11_find_pt         find;
    p11_session_pt      find_final;
    p11_set_attr_pt     set_attr;
    p11_destroy_pt      destroy;
    p11_keygen_pt       keygen;
} p11_t;


/* The slot of token (again after the module was finalised). */
static __attribute__((unused)) int
p11_find_slot(p11_t *p, const char *token)
{
    size_t          len = strlen(token);
    p11_ulong       slots[64], n = 64, i;
    unsigned char   info[1024];

    if (p->slot_list(1, slots, &n) != P11_CKR_OK) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        memset(info, 0, sizeof(info));
        if (p->token_info(slots[i], info) == P11_CKR_OK
            && memcmp(info, token, len) == 0
            && (len == 32 || info[len] == ' '))
        {
            p->slot = slots[i];
            return 1;
        }
    }

    return 0;
}


/* The module (already initialised by a vault) and the slot of token. */
static __attribute__((unused)) int
p11_load(p11_t *p, const char *module, const char *token)
{
    memset(p, 0, sizeof(*p));

    p->dl = dlopen(module, RTLD_NOW | RTLD_LOCAL);
    if (p->dl == NULL) {
        return 0;
    }

    p->slot_list = (p11_slot_list_pt) dlsym(p->dl, "C_GetSlotList");
    p->token_info = (p11_token_info_pt) dlsym(p->dl, "C_GetTokenInfo");
    p->open = (p11_open_pt) dlsym(p->dl, "C_OpenSession");
    p->close = (p11_session_pt) dlsym(p->dl, "C_CloseSession");
    p->logout = (p11_session_pt) dlsym(p->dl, "C_Logout");
    p->find_init = (p11_find_init_pt) dlsym(p->dl, "C_FindObjectsInit");
    p->find = (p11_find_pt) dlsym(p->dl, "C_FindObjects");
    p->find_final = (p11_session_pt) dlsym(p->dl, "C_FindObjectsFinal");
    p->set_attr = (p11_set_attr_pt) dlsym(p->dl, "C_SetAttributeValue");
    p->destroy = (p11_destroy_pt) dlsym(p->dl, "C_DestroyObject");
    p->keygen = (p11_keygen_pt) dlsym(p->dl, "C_GenerateKeyPair");

    if (p->slot_list == NULL || p->token_info == NULL || p->open == NULL
        || p->close == NULL || p->logout == NULL || p->find_init == NULL
        || p->find == NULL || p->find_final == NULL || p->set_attr == NULL
        || p->destroy == NULL || p->keygen == NULL)
    {
        return 0;
    }

    return p11_find_slot(p, token);
}


/* A read/write session of the test's own, 0 on failure. */
static __attribute__((unused)) p11_ulong
p11_session(p11_t *p)
{
    p11_ulong  s;

    if (p->open(p->slot, P11_CKF_SERIAL_SESSION | P11_CKF_RW_SESSION, NULL,
                NULL, &s)
        != P11_CKR_OK)
    {
        return 0;
    }

    return s;
}


/* C_Logout: logs the whole process out (the vault's next use fails). */
static __attribute__((unused)) int
p11_logout(p11_t *p)
{
    p11_ulong  s, rv;

    s = p11_session(p);
    if (s == 0) {
        return 0;
    }

    rv = p->logout(s);
    p->close(s);

    return rv == P11_CKR_OK;
}


/* The objects (keys of both halves) labelled label; returns how many. */
static __attribute__((unused)) p11_ulong
p11_find_label(p11_t *p, p11_ulong s, const char *label, p11_ulong *objs,
    p11_ulong max)
{
    p11_ulong   n = 0;
    p11_attr_t  t;

    t.type = P11_CKA_LABEL;
    t.value = (void *) label;
    t.len = strlen(label);

    if (p->find_init(s, &t, 1) != P11_CKR_OK) {
        return 0;
    }

    if (p->find(s, objs, max, &n) != P11_CKR_OK) {
        n = 0;
    }

    (void) p->find_final(s);

    return n;
}


/* Renames both halves of the key pair labelled from. */
static __attribute__((unused)) int
p11_relabel(p11_t *p, const char *from, const char *to)
{
    p11_ulong   s, objs[8], n, i;
    p11_attr_t  t;
    int         rc;

    s = p11_session(p);
    if (s == 0) {
        return 0;
    }

    n = p11_find_label(p, s, from, objs, 8);
    rc = n > 0;

    t.type = P11_CKA_LABEL;
    t.value = (void *) to;
    t.len = strlen(to);

    for (i = 0; i < n; i++) {
        rc &= p->set_attr(s, objs[i], &t, 1) == P11_CKR_OK;
    }

    p->close(s);
    return rc;
}


/* Sets CKA_SIGN of the private key labelled label. */
static __attribute__((unused)) int
p11_set_sign(p11_t *p, const char *label, unsigned char on)
{
    p11_ulong   s, objs[8], n, i, cls = 3;     /* CKO_PRIVATE_KEY */
    p11_attr_t  t[2];
    int         rc = 0;

    s = p11_session(p);
    if (s == 0) {
        return 0;
    }

    t[0] = (p11_attr_t) { P11_CKA_CLASS, &cls, sizeof(cls) };
    t[1] = (p11_attr_t) { P11_CKA_LABEL, (void *) label, strlen(label) };

    n = 0;
    if (p->find_init(s, t, 2) == P11_CKR_OK) {
        if (p->find(s, objs, 8, &n) != P11_CKR_OK) {
            n = 0;
        }
        (void) p->find_final(s);
    }

    t[0] = (p11_attr_t) { P11_CKA_SIGN, &on, 1 };

    for (i = 0; i < n; i++) {
        rc = p->set_attr(s, objs[i], t, 1) == P11_CKR_OK;
    }

    p->close(s);
    return n == 1 && rc;
}


/* Destroys every object labelled label; returns how many went. */
static __attribute__((unused)) int
p11_destroy_label(p11_t *p, const char *label)
{
    p11_ulong   s, objs[8], n, i;
    int         gone = 0;

    s = p11_session(p);
    if (s == 0) {
        return 0;
    }

    n = p11_find_label(p, s, label, objs, 8);

    for (i = 0; i < n; i++) {
        gone += p->destroy(s, objs[i]) == P11_CKR_OK;
    }

    p->close(s);
    return gone;
}


/* A P-256 key pair on the token, both halves labelled label, CKA_ID id. */
static __attribute__((unused)) int
p11_ec_keygen(p11_t *p, const char *label, unsigned char id)
{
    static unsigned char  p256[] = {
        0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07
    };
    unsigned char         yes = 1;
    p11_ulong             s, hpub, hpriv, rv;
    p11_mech_t            mech = { P11_CKM_EC_KEY_PAIR_GEN, NULL, 0 };
    p11_attr_t            pub[5], priv[6];

    pub[0] = (p11_attr_t) { P11_CKA_EC_PARAMS, p256, sizeof(p256) };
    pub[1] = (p11_attr_t) { P11_CKA_TOKEN, &yes, 1 };
    pub[2] = (p11_attr_t) { P11_CKA_VERIFY, &yes, 1 };
    pub[3] = (p11_attr_t) { P11_CKA_LABEL, (void *) label, strlen(label) };
    pub[4] = (p11_attr_t) { P11_CKA_ID, &id, 1 };

    priv[0] = (p11_attr_t) { P11_CKA_TOKEN, &yes, 1 };
    priv[1] = (p11_attr_t) { P11_CKA_PRIVATE, &yes, 1 };
    priv[2] = (p11_attr_t) { P11_CKA_SENSITIVE, &yes, 1 };
    priv[3] = (p11_attr_t) { P11_CKA_SIGN, &yes, 1 };
    priv[4] = (p11_attr_t) { P11_CKA_LABEL, (void *) label, strlen(label) };
    priv[5] = (p11_attr_t) { P11_CKA_ID, &id, 1 };

    s = p11_session(p);
    if (s == 0) {
        return 0;
    }

    rv = p->keygen(s, &mech, pub, 5, priv, 6, &hpub, &hpriv);
    p->close(s);

    return rv == P11_CKR_OK;
}


/* An RSA-2048 key pair on the token that signs and decrypts, both halves
 * labelled label, CKA_ID id. */
static __attribute__((unused)) int
p11_rsa_keygen(p11_t *p, const char *label, unsigned char id)
{
    static unsigned char  f4[] = { 0x01, 0x00, 0x01 };
    unsigned char         yes = 1;
    p11_ulong             s, hpub, hpriv, rv, bits = 2048;
    p11_mech_t            mech = { P11_CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0 };
    p11_attr_t            pub[7], priv[7];

    pub[0] = (p11_attr_t) { P11_CKA_MODULUS_BITS, &bits, sizeof(bits) };
    pub[1] = (p11_attr_t) { P11_CKA_PUBLIC_EXPONENT, f4, sizeof(f4) };
    pub[2] = (p11_attr_t) { P11_CKA_TOKEN, &yes, 1 };
    pub[3] = (p11_attr_t) { P11_CKA_VERIFY, &yes, 1 };
    pub[4] = (p11_attr_t) { P11_CKA_ENCRYPT, &yes, 1 };
    pub[5] = (p11_attr_t) { P11_CKA_LABEL, (void *) label, strlen(label) };
    pub[6] = (p11_attr_t) { P11_CKA_ID, &id, 1 };

    priv[0] = (p11_attr_t) { P11_CKA_TOKEN, &yes, 1 };
    priv[1] = (p11_attr_t) { P11_CKA_PRIVATE, &yes, 1 };
    priv[2] = (p11_attr_t) { P11_CKA_SENSITIVE, &yes, 1 };
    priv[3] = (p11_attr_t) { P11_CKA_SIGN, &yes, 1 };
    priv[4] = (p11_attr_t) { P11_CKA_DECRYPT, &yes, 1 };
    priv[5] = (p11_attr_t) { P11_CKA_LABEL, (void *) label, strlen(label) };
    priv[6] = (p11_attr_t) { P11_CKA_ID, &id, 1 };

    s = p11_session(p);
    if (s == 0) {
        return 0;
    }

    rv = p->keygen(s, &mech, pub, 7, priv, 7, &hpub, &hpriv);
    p->close(s);

    return rv == P11_CKR_OK;
}


/* A probe (see above): a session with a find operation left open. */
static __attribute__((unused)) p11_ulong
p11_probe_arm(p11_t *p)
{
    p11_ulong   s;
    p11_attr_t  t;
    char        label[] = "no object has this label";

    s = p11_session(p);
    if (s == 0) {
        return 0;
    }

    t.type = P11_CKA_LABEL;
    t.value = label;
    t.len = sizeof(label) - 1;

    if (p->find_init(s, &t, 1) != P11_CKR_OK) {
        p->close(s);
        return 0;
    }

    return s;
}


/* 1 while the module has not been finalised since the probe was armed. */
static __attribute__((unused)) int
p11_probe_alive(p11_t *p, p11_ulong s)
{
    p11_ulong   rv;
    p11_attr_t  t;
    char        label[] = "no object has this label";

    t.type = P11_CKA_LABEL;
    t.value = label;
    t.len = sizeof(label) - 1;

    rv = p->find_init(s, &t, 1);

    if (rv == P11_CKR_OK) {
        /* the number went to a new session (the vault's): leave it as
         * it was */
        (void) p->find_final(s);
    }

    return rv == P11_CKR_OPERATION_ACTIVE;
}


/* pki_key_sign of a fixed message with SHA-256 (the lean PKCS#11 path for
 * EC keys); with pub, the signature is checked here too, with OpenSSL. */
static __attribute__((unused)) pki_status_t
p11_sign(pki_key_t *k, EVP_PKEY *pub, int *verified, pki_result_t *res)
{
    static const unsigned char  tbs[] = "nginx-pki p11 test";
    size_t                      siglen = 0;
    EVP_MD_CTX                 *ctx;
    pki_status_t                st;
    unsigned char              *sig = NULL;

    pki_result_init(res);
    st = pki_key_sign(k, EVP_sha256(), tbs, sizeof(tbs) - 1, &sig, &siglen,
                      res);

    if (verified != NULL) {
        *verified = 0;
        ctx = EVP_MD_CTX_new();
        if (st == PKI_OK && pub != NULL && ctx != NULL
            && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub) == 1
            && EVP_DigestVerify(ctx, sig, siglen, tbs, sizeof(tbs) - 1) == 1)
        {
            *verified = 1;
        }
        EVP_MD_CTX_free(ctx);
    }

    free(sig);
    return st;
}


/* The token directory of a SoftHSM configuration file into dir: 1 found,
 * 0 not. */
static __attribute__((unused)) int
p11_tokendir(const char *conf, char *dir, size_t size)
{
    int    found;
    char   line[1200], d[1024];
    FILE  *f;

    found = 0;
    f = fopen(conf, "r");

    while (f != NULL && !found && fgets(line, sizeof(line), f) != NULL) {
        found = sscanf(line, " directories.tokendir = %1023s", d) == 1;
    }

    if (f != NULL) {
        fclose(f);
    }

    return found && snprintf(dir, size, "%s", d) < (int) size;
}


/* pki_key_new without its result: NULL on failure. */
static __attribute__((unused)) pki_key_t *
p11_key_new(const char *uri, pki_vault_t *v)
{
    pki_result_t  res;

    pki_result_init(&res);
    return pki_key_new(uri, v, &res);
}


/* The SoftHSM token t/00-core.t sets up for the key tests. */
typedef struct {
    const char  *conf;              /* PKI_TEST_SOFTHSM_CONF */
    const char  *module;            /* PKI_TEST_P11_MODULE */
    const char  *token;             /* PKI_TEST_TOKEN */
    const char  *pin_file;          /* PKI_TEST_PIN_FILE */
    const char  *uri_ec;            /* PKI_TEST_KEY_URI_EC */
    const char  *uri_rsa;           /* PKI_TEST_KEY_URI_RSA, or NULL */
    int          vg;                /* under Valgrind (PKI_TEST_VALGRIND) */
    char         tokendir[1024];    /* with tokendir asked for: SoftHSM's */
    char         away[1100];        /* token directory, and a name to move
                                       it to ("<tokendir>.away") */
} p11_env_t;


/* Reads the token's environment, and with tokendir set SoftHSM's token
 * directory; the test skips (exits) without them.  Then points SoftHSM at
 * the configuration and initialises the core. */
static __attribute__((unused)) void
p11_env(p11_env_t *e, int tokendir)
{
    memset(e, 0, sizeof(*e));

    e->conf = getenv("PKI_TEST_SOFTHSM_CONF");
    e->module = getenv("PKI_TEST_P11_MODULE");
    e->token = getenv("PKI_TEST_TOKEN");
    e->pin_file = getenv("PKI_TEST_PIN_FILE");
    e->uri_ec = getenv("PKI_TEST_KEY_URI_EC");
    e->uri_rsa = getenv("PKI_TEST_KEY_URI_RSA");
    e->vg = getenv("PKI_TEST_VALGRIND") != NULL;

    if (e->conf == NULL || e->module == NULL || e->token == NULL
        || e->pin_file == NULL || e->uri_ec == NULL)
    {
        skip_all("no SoftHSM token (PKI_TEST_SOFTHSM_CONF, "
                 "PKI_TEST_P11_MODULE, PKI_TEST_TOKEN, PKI_TEST_PIN_FILE, "
                 "PKI_TEST_KEY_URI_EC)");
    }

    if (tokendir) {
        if (!p11_tokendir(e->conf, e->tokendir, sizeof(e->tokendir))) {
            skip_all("no directories.tokendir in the SoftHSM "
                     "configuration");
        }
        snprintf(e->away, sizeof(e->away), "%s.away", e->tokendir);
    }

    setenv("SOFTHSM2_CONF", e->conf, 1);
    pki_init();
}


/*
 * Token faults on demand.  libp11 calls the module through the function
 * list that C_GetFunctionList returns (SoftHSM's is writable static data
 * that stays in place while the test holds the module open): its C_Sign
 * and C_Initialize entries are replaced.  The next fail calls of C_Sign
 * answer ckr (the real C_Sign runs first, so that the token's operation
 * ends as after a real failure); after them the next hold calls wait until
 * p11_fault_release().  C_Initialize calls are counted: one per open of
 * the vault.  The core's lean path for EC keys calls the module's own
 * C_Sign, not the list: these faults reach RSA keys (and libp11's
 * signatures).
 */
typedef p11_ulong (*p11_sign_pt)(p11_ulong session, unsigned char *data,
    p11_ulong len, unsigned char *sig, p11_ulong *siglen);
typedef p11_ulong (*p11_init_pt)(void *args);

typedef struct {
    pthread_mutex_t   mutex;
    pthread_cond_t    cond;
    p11_sign_pt       sign;
    p11_init_pt       init;
    int               fail;
    p11_ulong         ckr;
    int               hold;
    int               held;         /* calls waiting */
    int               released;
    int               inits;
} p11_fault_t;

static __attribute__((unused)) p11_fault_t  p11_fault = {
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
    NULL, NULL, 0, 0, 0, 0, 0, 0
};

#define P11_CKR_DEVICE_ERROR        0x30UL


static __attribute__((unused)) p11_ulong
p11_fault_sign(p11_ulong session, unsigned char *data, p11_ulong len,
    unsigned char *sig, p11_ulong *siglen)
{
    p11_ulong  rv, ckr;

    pthread_mutex_lock(&p11_fault.mutex);

    ckr = 0;

    if (p11_fault.fail > 0) {
        p11_fault.fail--;
        ckr = p11_fault.ckr;

    } else if (p11_fault.hold > 0) {
        p11_fault.hold--;
        p11_fault.held++;
        pthread_cond_broadcast(&p11_fault.cond);

        while (!p11_fault.released) {
            pthread_cond_wait(&p11_fault.cond, &p11_fault.mutex);
        }

        p11_fault.held--;
    }

    pthread_mutex_unlock(&p11_fault.mutex);

    rv = p11_fault.sign(session, data, len, sig, siglen);

    return ckr != 0 ? ckr : rv;
}


static __attribute__((unused)) p11_ulong
p11_fault_init(void *args)
{
    pthread_mutex_lock(&p11_fault.mutex);
    p11_fault.inits++;
    pthread_mutex_unlock(&p11_fault.mutex);

    return p11_fault.init(args);
}


/* Puts the two entries into the module's function list (p11_load first):
 * 1 done. */
static __attribute__((unused)) int
p11_fault_install(p11_t *p)
{
    void         *sign, *init, **fl;
    size_t        i;
    p11_ulong   (*get)(void ***list);

    get = (p11_ulong (*)(void ***)) dlsym(p->dl, "C_GetFunctionList");
    sign = dlsym(p->dl, "C_Sign");
    init = dlsym(p->dl, "C_Initialize");

    if (get == NULL || sign == NULL || init == NULL || get(&fl) != 0) {
        return 0;
    }

    /* the version (two bytes) is padded to a pointer; the entries follow
     * in the order of the standard */
    fl = (void **) ((char *) fl + sizeof(void *));

    for (i = 0; i < 70; i++) {
        if (fl[i] == sign) {
            p11_fault.sign = (p11_sign_pt) sign;
            fl[i] = (void *) p11_fault_sign;
        }
        if (fl[i] == init) {
            p11_fault.init = (p11_init_pt) init;
            fl[i] = (void *) p11_fault_init;
        }
    }

    return p11_fault.sign != NULL && p11_fault.init != NULL;
}


/* The next fail signatures through the list answer ckr, and after them
 * the next hold wait for p11_fault_release(). */
static __attribute__((unused)) void
p11_fault_set(int fail, p11_ulong ckr, int hold)
{
    pthread_mutex_lock(&p11_fault.mutex);
    p11_fault.fail = fail;
    p11_fault.ckr = ckr;
    p11_fault.hold = hold;
    p11_fault.released = 0;
    pthread_mutex_unlock(&p11_fault.mutex);
}


/* Waits until n signatures are held. */
static __attribute__((unused)) void
p11_fault_wait_held(int n)
{
    pthread_mutex_lock(&p11_fault.mutex);
    while (p11_fault.held < n) {
        pthread_cond_wait(&p11_fault.cond, &p11_fault.mutex);
    }
    pthread_mutex_unlock(&p11_fault.mutex);
}


static __attribute__((unused)) void
p11_fault_release(void)
{
    pthread_mutex_lock(&p11_fault.mutex);
    p11_fault.released = 1;
    p11_fault.hold = 0;
    pthread_cond_broadcast(&p11_fault.cond);
    pthread_mutex_unlock(&p11_fault.mutex);
}


/* The tests with faults: a vault name of the token, open, and p's module
 * with the faults in place; NULL when that fails (said with ok()).  They
 * need the RSA key (faults reach libp11's signatures): skips without. */
static __attribute__((unused)) pki_vault_t *
p11_fault_vault(p11_env_t *e, p11_t *p, const char *name)
{
    pki_vault_t   *v;
    pki_result_t   res;

    if (e->uri_rsa == NULL) {
        skip_all("no RSA key on the token (PKI_TEST_KEY_URI_RSA)");
    }

    pki_result_init(&res);
    v = pki_vault_new(name, e->module, e->token, e->pin_file, &res);
    if (!ok(v != NULL && pki_vault_open(v, &res) == PKI_OK,
            "vault opens [%s]", res.detail))
    {
        return NULL;
    }

    if (!ok(p11_load(p, e->module, e->token) && p11_fault_install(p),
            "the token's module, with faults"))
    {
        pki_vault_free(v);
        return NULL;
    }

    return v;
}


/* How the tests with faults begin: the token's environment (p11_env; it
 * skips without one), vault name with the faults (p11_fault_vault) in *v,
 * and on it the RSA key (rsa) or the EC key, opened: that key, or NULL
 * when any of it fails (said with ok(); the vault then freed). */
static __attribute__((unused)) pki_key_t *
p11_fault_start(p11_env_t *e, p11_t *p, const char *name, int rsa,
    pki_vault_t **v)
{
    pki_key_t     *k;
    pki_result_t   res;

    p11_env(e, 0);

    *v = p11_fault_vault(e, p, name);
    if (*v == NULL) {
        return NULL;
    }

    pki_result_init(&res);
    k = pki_key_new(rsa ? e->uri_rsa : e->uri_ec, *v, &res);

    if (!ok(k != NULL && pki_key_open(k, &res) == PKI_OK,
            "the %s key opens [%s]", rsa ? "RSA" : "EC", res.detail))
    {
        pki_key_free(k);
        pki_vault_free(*v);
        *v = NULL;
        return NULL;
    }

    return k;
}


/* Opens of the vault (C_Initialize) so far. */
static __attribute__((unused)) int
p11_fault_inits(void)
{
    int  n;

    pthread_mutex_lock(&p11_fault.mutex);
    n = p11_fault.inits;
    pthread_mutex_unlock(&p11_fault.mutex);

    return n;
}

#endif /* PKI_TEST_P11_H */
