/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests for core/key.c: file keys of every supported type, hostile key
 * references, and (when a SoftHSM token is prepared by the wrapper) PKCS#11
 * keys.  PKCS#11 checks need these environment variables:
 *   PKI_TEST_SOFTHSM_CONF  path to a softhsm2.conf (exported as SOFTHSM2_CONF)
 *   PKI_TEST_P11_MODULE    path to libsofthsm2.so
 *   PKI_TEST_TOKEN         token label
 *   PKI_TEST_PIN_FILE      file holding the user PIN
 *   PKI_TEST_KEY_URI_EC    pkcs11: URI of an EC P-256 private key
 *   PKI_TEST_KEY_URI_RSA   (optional) pkcs11: URI of an RSA private key
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "pki.h"
#include "test/unit.h"
#include "test/testkeys.h"


/* unit.h's is_status() evaluates its first argument twice: call once. */
static int
is_st(pki_status_t got, pki_status_t want, const char *name)
{
    return is_status(got, want, name);
}


static char  tmpdir[256];


static char *
tpath(const char *name)
{
    static char  buf[8][512];
    static int   i;

    i = (i + 1) % 8;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", tmpdir, name);
    return buf[i];
}


static void
write_file(const char *path, const void *data, size_t len)
{
    FILE  *f = fopen(path, "wb");

    if (f == NULL) {
        perror(path);
        exit(2);
    }
    fwrite(data, 1, len, f);
    fclose(f);
}


static void
write_key(const char *path, EVP_PKEY *pk, const char *pass)
{
    FILE  *f = fopen(path, "w");

    if (f == NULL) {
        perror(path);
        exit(2);
    }

    if (pass != NULL) {
        PEM_write_PrivateKey(f, pk, EVP_aes_256_cbc(),
                             (unsigned char *) pass, (int) strlen(pass),
                             NULL, NULL);
    } else {
        PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    }

    fclose(f);
}


static double
now_s(void)
{
    struct timeval  tv;

    gettimeofday(&tv, NULL);
    return tv.tv_sec + tv.tv_usec / 1e6;
}


/* A minimal certificate to sign: subject = issuer, pubkey of pub. */
static X509 *
make_tbs(EVP_PKEY *pub)
{
    X509       *x = X509_new();
    X509_NAME  *n = X509_NAME_new();

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 42);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
                               (const unsigned char *) "unit", -1, -1, 0);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, n);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pub);
    X509_NAME_free(n);
    return x;
}


static X509_CRL *
make_crl(void)
{
    X509_CRL   *crl = X509_CRL_new();
    X509_NAME  *n = X509_NAME_new();
    ASN1_TIME  *t = ASN1_TIME_new();

    X509_CRL_set_version(crl, 1);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
                               (const unsigned char *) "unit", -1, -1, 0);
    X509_CRL_set_issuer_name(crl, n);
    X509_gmtime_adj(t, 0);
    X509_CRL_set1_lastUpdate(crl, t);
    X509_NAME_free(n);
    ASN1_TIME_free(t);
    return crl;
}


/* Independent check of a raw signature. */
static int
verify_raw(EVP_PKEY *pub, const EVP_MD *md, const unsigned char *m,
    size_t mlen, const unsigned char *sig, size_t siglen)
{
    EVP_MD_CTX  *c = EVP_MD_CTX_new();
    int          rc;

    rc = EVP_DigestVerifyInit(c, NULL, md, NULL, pub) == 1
         && EVP_DigestVerify(c, sig, siglen, m, mlen) == 1;
    EVP_MD_CTX_free(c);
    return rc;
}


/* Signs a certificate, a CRL and a raw message with k and checks each with
 * OpenSSL directly. */
static void
check_signing(pki_key_t *k, const char *what, const EVP_MD *md)
{
    static const unsigned char  msg[] = "hello\0world";
    pki_result_t                res;
    EVP_PKEY                   *pub = pki_key_public(k);
    X509                       *x;
    X509_CRL                   *crl;
    unsigned char              *sig = NULL;
    size_t                      siglen = 0;
    pki_status_t                st;

    pki_result_init(&res);
    x = make_tbs(pub);
    st = pki_key_sign_x509(k, x, &res);
    is_st(st, PKI_OK, "sign x509");
    ok(X509_verify(x, pub) == 1, "%s: certificate verifies", what);
    X509_free(x);

    pki_result_init(&res);
    crl = make_crl();
    st = pki_key_sign_crl(k, crl, &res);
    is_st(st, PKI_OK, "sign crl");
    ok(X509_CRL_verify(crl, pub) == 1, "%s: CRL verifies", what);
    X509_CRL_free(crl);

    pki_result_init(&res);
    st = pki_key_sign(k, md, msg, sizeof(msg), &sig, &siglen, &res);
    is_st(st, PKI_OK, "sign raw");
    ok(sig != NULL && verify_raw(pub, md, msg, sizeof(msg), sig, siglen),
       "%s: raw signature verifies", what);
    free(sig);
}


/* 1 when the DER ECDSA signature sig has s <= n/2 for pub's curve. */
static int
low_s(EVP_PKEY *pub, const unsigned char *sig, size_t siglen)
{
    int             ok;
    char            name[64];
    BIGNUM         *half;
    EC_GROUP       *g;
    ECDSA_SIG      *es;
    const BIGNUM   *r, *s;

    es = d2i_ECDSA_SIG(NULL, &sig, (long) siglen);
    g = EVP_PKEY_get_group_name(pub, name, sizeof(name), NULL)
        ? EC_GROUP_new_by_curve_name(OBJ_sn2nid(name)) : NULL;
    half = g ? BN_dup(EC_GROUP_get0_order(g)) : NULL;
    ok = es != NULL && half != NULL && BN_rshift1(half, half);
    if (ok) {
        ECDSA_SIG_get0(es, &r, &s);
        ok = BN_cmp(s, half) <= 0;
    }
    BN_free(half);
    EC_GROUP_free(g);
    ECDSA_SIG_free(es);
    return ok;
}


/* Every EC signature released has the low s (key.c): certificates, CRLs
 * (empty: X509_CRL_sign) and raw messages, 24 each (a high s comes with
 * probability 1/2 per signature). */
static void
check_low_s(pki_key_t *k, const char *what)
{
    int                     i, bad, maxlen;
    size_t                  siglen;
    X509                   *x;
    X509_CRL               *crl;
    EVP_PKEY               *pub = pki_key_public(k);
    pki_result_t            res;
    unsigned char           m[32], *sig;
    const ASN1_BIT_STRING  *bs;

    for (bad = 0, maxlen = 0, i = 0; i < 24; i++) {
        pki_result_init(&res);
        x = make_tbs(pub);
        if (pki_key_sign_x509(k, x, &res) != PKI_OK) {
            bad++;
        } else {
            X509_get0_signature(&bs, NULL, x);
            if (!low_s(pub, ASN1_STRING_get0_data(bs),
                       (size_t) ASN1_STRING_length(bs))
                || X509_verify(x, pub) != 1)
            {
                bad++;
            }
            if (ASN1_STRING_length(bs) > maxlen) {
                maxlen = ASN1_STRING_length(bs);
            }
        }
        X509_free(x);

        pki_result_init(&res);
        crl = make_crl();
        if (pki_key_sign_crl(k, crl, &res) != PKI_OK) {
            bad++;
        } else {
            X509_CRL_get0_signature(crl, &bs, NULL);
            if (!low_s(pub, ASN1_STRING_get0_data(bs),
                       (size_t) ASN1_STRING_length(bs))
                || X509_CRL_verify(crl, pub) != 1)
            {
                bad++;
            }
        }
        X509_CRL_free(crl);

        memset(m, i, sizeof(m));
        sig = NULL;
        pki_result_init(&res);
        if (pki_key_sign(k, EVP_sha256(), m, sizeof(m), &sig, &siglen, &res)
            != PKI_OK || !low_s(pub, sig, siglen)
            || !verify_raw(pub, EVP_sha256(), m, sizeof(m), sig, siglen))
        {
            bad++;
        }
        free(sig);
    }

    ok(bad == 0, "%s: 24 certificate, 24 CRL and 24 raw signatures have a "
       "low s", what);
    ok(maxlen < EVP_PKEY_get_size(pub) || EVP_PKEY_get_bits(pub) % 8 != 0,
       "%s: the longest certificate signature is %d octets (the key's "
       "size %d)", what, maxlen, EVP_PKEY_get_size(pub));
}


/* ---- file keys ------------------------------------------------------------ */

typedef struct {
    const char  *file;
    const char  *alg;
    const char  *param;      /* curve, or NULL */
    size_t       bits;
    const char  *desc;
    const char  *md;         /* digest for the raw test, NULL for none */
} keycase_t;

static const keycase_t  keycases[] = {
    { "p256.pem", "EC", "P-256", 0, "EC P-256", "SHA256" },
    { "p384.pem", "EC", "P-384", 0, "EC P-384", "SHA384" },
    { "p521.pem", "EC", "P-521", 0, "EC P-521", "SHA512" },
    { "rsa2048.pem", "RSA", NULL, 2048, "RSA 2048", "SHA256" },
    { "rsa3072.pem", "RSA", NULL, 3072, "RSA 3072", "SHA256" },
    { "ed25519.pem", "ED25519", NULL, 0, "Ed25519", NULL },
};


static EVP_PKEY *
gen(const keycase_t *kc)
{
    if (kc->param != NULL) {
        return EVP_PKEY_Q_keygen(NULL, NULL, kc->alg, kc->param);
    }
    if (kc->bits != 0) {
        return pki_test_rsa((int) kc->bits, 1);
    }
    return EVP_PKEY_Q_keygen(NULL, NULL, kc->alg);
}


static void
test_file_keys(void)
{
    pki_result_t  res;
    pki_key_t    *k;
    EVP_PKEY     *pk, *gk;
    size_t        i;
    char          desc[64];

    for (i = 0; i < sizeof(keycases) / sizeof(keycases[0]); i++) {
        const keycase_t  *kc = &keycases[i];

        pk = gen(kc);
        if (pk == NULL) {
            ok(0, "generate %s", kc->desc);
            continue;
        }
        write_key(tpath(kc->file), pk, NULL);
        EVP_PKEY_free(pk);

        pki_result_init(&res);
        k = pki_key_new(tpath(kc->file), NULL, &res);
        if (!ok(k != NULL, "%s: key_new", kc->desc)) {
            continue;
        }
        is_st(pki_key_open(k, &res), PKI_OK, kc->desc);
        if (res.status != PKI_OK) {
            diag("%s / %s", res.detail, res.log);
            pki_key_free(k);
            continue;
        }

        ok(pki_key_open(k, &res) == PKI_OK, "%s: open twice", kc->desc);

        pki_pkey_describe(pki_key_public(k), desc, sizeof(desc));
        ok(strcmp(desc, kc->desc) == 0, "describe: %s", desc);
        ok(strcmp(pki_key_ref(k), tpath(kc->file)) == 0, "%s: ref",
           kc->desc);

        check_signing(k, kc->desc,
                      kc->md != NULL ? EVP_get_digestbyname(kc->md) : NULL);
        if (kc->param != NULL) {
            check_low_s(k, kc->desc);
        }

        if (kc->bits > 2048 && pki_test_vg(0, 1)) {
            /* RSA 3072 prime search under memcheck: minutes, no code of
             * ours (the 2048 case runs the same path) */
            diag("keygen_like %s: not under Valgrind", kc->desc);
            goto close;
        }

        pki_result_init(&res);
        gk = pki_keygen_like(pki_key_public(k), &res);
        pki_pkey_describe(gk, desc, sizeof(desc));
        ok(gk != NULL && strcmp(desc, kc->desc) == 0, "keygen_like %s: %s",
           kc->desc, desc);
        ok(gk != NULL && EVP_PKEY_eq(gk, pki_key_public(k)) != 1,
           "keygen_like %s: a new key", kc->desc);
        EVP_PKEY_free(gk);

    close:

        pki_key_close(k);
        ok(pki_key_public(k) == NULL, "%s: closed", kc->desc);
        ok(pki_key_open(k, &res) == PKI_OK, "%s: reopen", kc->desc);
        pki_key_free(k);
    }

    /* a file replaced between close and open (the master checked the
     * key against the CA certificate, then a worker opens the file
     * again): refused, as long as it holds another key */
    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    write_key(tpath("swap.pem"), pk, NULL);
    pki_result_init(&res);
    k = pki_key_new(tpath("swap.pem"), NULL, &res);
    ok(k != NULL && pki_key_open(k, &res) == PKI_OK, "swap.pem opens");
    pki_key_close(k);
    gk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    write_key(tpath("swap.pem"), gk, NULL);
    pki_result_init(&res);
    ok(pki_key_open(k, &res) != PKI_OK && pki_key_public(k) == NULL
       && strstr(res.detail, "now holds another key") != NULL,
       "a key file replaced by another key is refused on reopen [%s]",
       res.detail);
    write_key(tpath("swap.pem"), pk, NULL);
    pki_result_init(&res);
    ok(pki_key_open(k, &res) == PKI_OK
       && EVP_PKEY_eq(pki_key_public(k), pk) == 1,
       "the same key written back opens [%s]", res.detail);
    pki_key_free(k);
    EVP_PKEY_free(gk);
    EVP_PKEY_free(pk);

    /* a key file others may read opens, with a warning; others' write
     * is named as such; a private one opens without */
    chmod(tpath("swap.pem"), 0644);
    pki_result_init(&res);
    k = pki_key_new(tpath("swap.pem"), NULL, &res);
    ok(k != NULL && pki_key_open(k, &res) == PKI_OK
       && strstr(res.log, "may be read by other users (mode 0644)") != NULL
       && strstr(res.log, "chmod o-rwx") != NULL,
       "a key file readable by others: a warning [%s]", res.log);
    pki_key_free(k);
    chmod(tpath("swap.pem"), 0602);
    pki_result_init(&res);
    k = pki_key_new(tpath("swap.pem"), NULL, &res);
    ok(k != NULL && pki_key_open(k, &res) == PKI_OK
       && strstr(res.log, "may be written by other users") != NULL,
       "writable by others: said so [%s]", res.log);
    pki_key_free(k);
    chmod(tpath("swap.pem"), 0640);
    pki_result_init(&res);
    k = pki_key_new(tpath("swap.pem"), NULL, &res);
    ok(k != NULL && pki_key_open(k, &res) == PKI_OK && res.log[0] == '\0',
       "readable by its owner and group only: no warning [%s]", res.log);
    pki_key_free(k);

    pki_pkey_describe(NULL, desc, sizeof(desc));
    ok(strcmp(desc, "unsupported") == 0, "describe NULL");
    pki_result_init(&res);
    ok(pki_keygen_like(NULL, &res) == NULL, "keygen_like NULL");

    /* Ed448: a template may allow it with server_keygen on (csrattrs
     * offers it), so serverkeygen must be able to make one */
    pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED448");
    pki_result_init(&res);
    gk = pki_keygen_like(pk, &res);
    ok(gk != NULL && EVP_PKEY_get_base_id(gk) == EVP_PKEY_ED448
       && EVP_PKEY_eq(gk, pk) != 1, "keygen_like Ed448: a new Ed448 key (%s)",
       res.detail);
    EVP_PKEY_free(gk);
    EVP_PKEY_free(pk);

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    pki_pkey_describe(pk, desc, sizeof(desc));
    ok(strcmp(desc, "unsupported") == 0, "describe X25519: %s", desc);
    pki_result_init(&res);
    gk = pki_keygen_like(pk, &res);
    ok(gk == NULL && res.status != PKI_OK, "keygen_like X25519 refused");
    EVP_PKEY_free(pk);
}


/* ---- bad references ------------------------------------------------------- */

typedef struct {
    const char   *name;
    const char   *ref;       /* "@file" means tpath(file) */
    int           at_new;    /* 1: refused by key_new; 0: by key_open */
    const char   *detail;    /* substring expected in the detail */
} badref_t;

static const badref_t  badrefs[] = {
    { "missing file", "@nosuch.pem", 0, "nosuch.pem" },
    { "encrypted PEM", "@enc.pem", 0, "encrypted keys are not supported" },
    { "garbage", "@garbage.pem", 0, "no PEM private key" },
    { "empty file", "@empty.pem", 0, "no PEM private key" },
    { "certificate only", "@cert.pem", 0, "no PEM private key" },
    { "directory", "@", 0, "not a regular file" },
    { "RSA 1024", "@rsa1024.pem", 0, "too small" },
    { "secp256k1", "@k1.pem", 0, "unsupported key type" },
    { "empty ref", "", 1, "empty" },
    { "pin-value", "pkcs11:token=t;object=k?pin-value=1234", 1,
      "PINs belong in the vault's pin_file" },
    { "pin-value in path", "pkcs11:token=t;object=k;pin-value=1234", 1,
      "PINs belong in the vault's pin_file" },
    { "pin-source", "pkcs11:object=k?pin-source=file:/etc/pin", 1,
      "PINs belong in the vault's pin_file" },
    { "module-path", "pkcs11:object=k?module-path=/x.so", 1,
      "unsupported query attribute" },
    { "unknown attribute", "pkcs11:object=k;frobnicate=1", 1,
      "unsupported attribute \"frobnicate\"" },
    { "bad percent", "pkcs11:object=a%zz", 1, "bad percent-encoding" },
    { "truncated percent", "pkcs11:object=a%4", 1, "bad percent-encoding" },
    { "percent at end", "pkcs11:id=%", 1, "bad percent-encoding" },
    { "NUL in label", "pkcs11:object=a%00b", 1, "NUL" },
    { "type=public", "pkcs11:object=k;type=public", 1,
      "type must be \"private\"" },
    { "type=cert", "pkcs11:object=k;type=cert", 1,
      "type must be \"private\"" },
    { "no object, no id", "pkcs11:token=t", 1, "names no key" },
    { "no equals", "pkcs11:object", 1, "without \"=\"" },
    { "duplicate", "pkcs11:object=a;object=b", 1, "duplicate" },
    { "space", "pkcs11:object=a b", 1, "bad percent-encoding" },
    { "no vault", "pkcs11:object=k;type=private", 1, "needs a key vault" },
};


/* refused for something else than the PIN they carry (4321) */
static const char  *pinrefs[] = {
    "pkcs11:token=%zz;pin-value=4321",
    "pkcs11:object=a;object=b;pin-value=4321",
    "pkcs11:object=a;type=public;pin-value=4321",
    "pkcs11:id=%zz;pin-value=4321;object=k",
    "pkcs11:object;pin-value=4321",
    "pkcs11:token=t;PIN-VALUE=4321;object=%zz",
    "pkcs11:pin-value=4321;object=a%00b",
    "pkcs11:token=t?pin-source=/x/4321&pin-value=4321",
    "pkcs11:object=k;type=x?pin-value=4321",
    "pkcs11:token=t;object=k;foo=1;pin-source=file:4321",
    /* a PIN holding "&" (path) or "?" (query): hidden to the end */
    "pkcs11:token=x;bogus;pin-value=se&cret4321",
    "pkcs11:object;type=private?pin-value=a?4321",
    /* no pkcs11: URI, so a file name: never echoed with its PIN */
    "pkcs-11:token=t;object=k;pin-value=4321",
    "pkcs11;token=t;object=k;pin-value=4321",
    "/etc/keys/k.pem;PIN-SOURCE=/run/4321",
    /* not taken for an attribute by the parser: a label, then echoed */
    "pkcs11:token=t;object=k&pin-value=4321",
    "pkcs11:object=k;type=public; pin-value=4321",
    "pkcs11:object=k;pin-value =4321",
};


static void
test_bad_refs(void)
{
    static const char  enc_pass[] = "s3cret";
    static const char  garbage[] = "-----BEGIN PRIVATE KEY-----\n"
                                   "AAAA!!!!\n-----END PRIVATE KEY-----\n";
    pki_result_t       res;
    pki_key_t         *k;
    EVP_PKEY          *pk;
    X509              *x;
    FILE              *f;
    const char        *ref;
    size_t             i;
    char               longref[4096];

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    write_key(tpath("enc.pem"), pk, enc_pass);
    x = make_tbs(pk);
    X509_sign(x, pk, EVP_sha256());
    f = fopen(tpath("cert.pem"), "w");
    PEM_write_X509(f, x);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(pk);

    pk = pki_test_rsa(1024, 1);
    write_key(tpath("rsa1024.pem"), pk, NULL);
    EVP_PKEY_free(pk);

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp256k1");
    write_key(tpath("k1.pem"), pk, NULL);
    EVP_PKEY_free(pk);

    write_file(tpath("garbage.pem"), garbage, sizeof(garbage) - 1);
    write_file(tpath("empty.pem"), "", 0);

    for (i = 0; i < sizeof(badrefs) / sizeof(badrefs[0]); i++) {
        const badref_t  *b = &badrefs[i];

        ref = (b->ref[0] == '@') ? tpath(b->ref + 1) : b->ref;

        pki_result_init(&res);
        k = pki_key_new(ref, NULL, &res);

        if (b->at_new) {
            ok(k == NULL && res.status != PKI_OK
               && strstr(res.detail, b->detail) != NULL,
               "%s refused by key_new [%s]", b->name, res.detail);
            pki_key_free(k);
            continue;
        }

        if (!ok(k != NULL, "%s: key_new accepts the name", b->name)) {
            continue;
        }

        ok(pki_key_open(k, &res) != PKI_OK
           && strstr(res.detail, b->detail) != NULL
           && strstr(res.detail, enc_pass) == NULL
           && strstr(res.log, enc_pass) == NULL,
           "%s refused by key_open [%s]", b->name, res.detail);
        ok(pki_key_public(k) == NULL, "%s: no public key", b->name);
        pki_key_free(k);
    }

    /* A URI refused for another reason never shows its PIN. */
    for (i = 0; i < sizeof(pinrefs) / sizeof(pinrefs[0]); i++) {
        pki_result_init(&res);
        k = pki_key_new(pinrefs[i], NULL, &res);
        ok(k == NULL && res.status == PKI_MALFORMED
           && strstr(res.detail, "4321") == NULL
           && strstr(res.log, "4321") == NULL,
           "PIN of a refused URI is not shown: %s", res.detail);
        pki_key_free(k);
    }

    /* a directory whose name merely contains the words is a file name */
    pki_result_init(&res);
    k = pki_key_new("/nonexistent/spin-sources/PIN-Values/k.pem", NULL,
                    &res);
    ok(strstr(res.detail, "pin-value") == NULL,
       "a key file under \"spin-sources/PIN-Values\" is no PIN: %s",
       res.detail);
    pki_key_free(k);

    memset(longref, 'a', sizeof(longref) - 1);
    longref[sizeof(longref) - 1] = '\0';
    memcpy(longref, "pkcs11:object=", 14);
    pki_result_init(&res);
    k = pki_key_new(longref, NULL, &res);
    ok(k == NULL && res.status != PKI_OK, "very long URI refused [%s]",
       res.detail);

    /* Sign calls on a key that is not open. */
    pki_result_init(&res);
    k = pki_key_new(tpath("p256.pem"), NULL, &res);
    x = X509_new();
    ok(pki_key_sign_x509(k, x, &res) != PKI_OK, "sign with unopened key");
    ok(pki_key_sign_x509(NULL, x, &res) != PKI_OK, "sign with NULL key");
    X509_free(x);
    pki_key_free(k);
    pki_key_free(NULL);
    pki_key_close(NULL);
}


/* ---- URI token ------------------------------------------------------------ */

static void
test_uri_token(void)
{
    char  buf[64];

    ok(pki_key_uri_token("pkcs11:token=pki%20test;object=k", buf,
                         sizeof(buf)) == 1
       && strcmp(buf, "pki test") == 0, "uri token decoded: %s", buf);
    ok(pki_key_uri_token("PKCS11:object=k;token=abc;type=private", buf,
                         sizeof(buf)) == 1
       && strcmp(buf, "abc") == 0, "uri token, any order");
    ok(pki_key_uri_token("pkcs11:object=k", buf, sizeof(buf)) == 0,
       "uri without token");
    ok(pki_key_uri_token("/etc/key.pem", buf, sizeof(buf)) == 0,
       "file is not a URI");
    ok(pki_key_uri_token("pkcs11:token=abcdef;object=k", buf, 4) == 0,
       "token longer than the buffer");
    ok(pki_key_uri_token("pkcs11:token=a;object=k?pin-value=1", buf,
                         sizeof(buf)) == 0, "bad URI gives no token");
    ok(pki_key_uri_token(NULL, buf, sizeof(buf)) == 0, "NULL ref");
}


/* ---- vaults without a token ------------------------------------------------ */

static void
test_vault_config(void)
{
    static const char  pin[] = "98765432";
    pki_result_t       res;
    pki_vault_t       *v;
    char               big[300];

    pki_result_init(&res);
    v = pki_vault_new("v", "/nonexistent/pkcs11.so", "tok",
                      tpath("nopin"), &res);
    ok(v == NULL && strstr(res.detail, tpath("nopin")) != NULL,
       "missing PIN file named [%s]", res.detail);

    write_file(tpath("pin.empty"), "\r\n", 2);
    pki_result_init(&res);
    v = pki_vault_new("v", "/nonexistent/pkcs11.so", "tok",
                      tpath("pin.empty"), &res);
    ok(v == NULL && strstr(res.detail, "empty") != NULL,
       "empty PIN file [%s]", res.detail);

    memset(big, '7', sizeof(big));
    write_file(tpath("pin.big"), big, sizeof(big));
    pki_result_init(&res);
    v = pki_vault_new("v", "/nonexistent/pkcs11.so", "tok",
                      tpath("pin.big"), &res);
    ok(v == NULL && strstr(res.detail, "too long") != NULL
       && strstr(res.detail, "7777") == NULL, "long PIN file [%s]",
       res.detail);

    write_file(tpath("pin.256"), big, 256);
    pki_result_init(&res);
    v = pki_vault_new("v", "/nonexistent/pkcs11.so", "tok",
                      tpath("pin.256"), &res);
    ok(v != NULL, "PIN of 256 bytes accepted");
    pki_vault_free(v);

    pki_result_init(&res);
    v = pki_vault_new("v", "/nonexistent/pkcs11.so", "tok", tmpdir, &res);
    ok(v == NULL && res.status != PKI_OK, "PIN file is a directory [%s]",
       res.detail);

    write_file(tpath("pin.ok"), "98765432\r\n", 10);
    pki_result_init(&res);
    v = pki_vault_new("v1", "/nonexistent/pkcs11.so", "tok",
                      tpath("pin.ok"), &res);
    if (!ok(v != NULL, "vault_new")) {
        return;
    }
    ok(strcmp(pki_vault_name(v), "v1") == 0
       && strcmp(pki_vault_token(v), "tok") == 0, "vault name and token");

    pki_result_init(&res);
    ok(pki_vault_open(v, &res) != PKI_OK
       && strstr(res.detail, "/nonexistent/pkcs11.so") != NULL
       && strstr(res.detail, pin) == NULL && strstr(res.log, pin) == NULL,
       "missing module named, no PIN [%s]", res.detail);
    pki_vault_close(v);
    pki_vault_close(v);

    pki_result_init(&res);
    ok(pki_key_new("pkcs11:token=other;object=k", v, &res) == NULL
       && strstr(res.detail, "is not the token") != NULL,
       "URI token must match the vault [%s]", res.detail);

    pki_vault_free(v);
    pki_vault_free(NULL);
    pki_vault_close(NULL);
}


/* ---- PKCS#11 ----------------------------------------------------------------- */

typedef struct {
    pki_key_t  *key;
    int         n;
    int         errors;
} thr_arg_t;


static void *
sign_thread(void *p)
{
    thr_arg_t     *a = p;
    pki_result_t   res;
    X509          *x;
    int            i;

    for (i = 0; i < a->n; i++) {
        pki_result_init(&res);
        x = make_tbs(pki_key_public(a->key));
        if (pki_key_sign_x509(a->key, x, &res) != PKI_OK
            || X509_verify(x, pki_key_public(a->key)) != 1)
        {
            a->errors++;
        }
        X509_free(x);
    }

    return NULL;
}


static int
sign_threads(pki_key_t *k, int nthreads, int n)
{
    pthread_t  t[8];
    thr_arg_t  a[8];
    int        i, errors = 0;

    for (i = 0; i < nthreads; i++) {
        a[i].key = k;
        a[i].n = n;
        a[i].errors = 0;
        pthread_create(&t[i], NULL, sign_thread, &a[i]);
    }
    for (i = 0; i < nthreads; i++) {
        pthread_join(t[i], NULL);
        errors += a[i].errors;
    }

    return errors;
}


static void
test_p11_key(pki_vault_t *v, const char *uri, const char *what)
{
    pki_result_t  res;
    pki_key_t    *k;
    X509         *x;
    pid_t         pid;
    int           status;
    char          desc[64];

    pki_result_init(&res);
    k = pki_key_new(uri, v, &res);
    if (!ok(k != NULL, "%s: key_new [%s]", what, res.detail)) {
        return;
    }

    pki_result_init(&res);
    if (!is_st(pki_key_open(k, &res), PKI_OK, what)) {
        diag("%s / %s", res.detail, res.log);
        pki_key_free(k);
        return;
    }

    pki_pkey_describe(pki_key_public(k), desc, sizeof(desc));
    diag("%s is %s", what, desc);
    ok(strncmp(desc, what, strlen(what)) == 0, "%s: describe %s", what, desc);

    check_signing(k, what, EVP_sha256());
    if (EVP_PKEY_get_base_id(pki_key_public(k)) == EVP_PKEY_EC) {
        check_low_s(k, what);
    }

    ok(sign_threads(k, 4, pki_test_vg(50, 5)) == 0, "%s: 4 threads x %d "
       "signatures", what, pki_test_vg(50, 5));

    /* an EC P-256 token key verifies its signatures with a precomputed
     * table after a few (key.c, pki_fastvfy): raw signatures over SHA-256
     * and SHA-384 digests (truncated to the order), each checked by
     * OpenSSL */
    {
        int             i, bad = 0;
        size_t          siglen;
        unsigned char   m[32], *sig;
        const EVP_MD   *md;

        for (i = 0; i < 40; i++) {
            memset(m, i, sizeof(m));
            md = (i % 2) ? EVP_sha384() : EVP_sha256();
            sig = NULL;
            pki_result_init(&res);
            if (pki_key_sign(k, md, m, sizeof(m), &sig, &siglen, &res)
                != PKI_OK || !verify_raw(pki_key_public(k), md, m, sizeof(m),
                                         sig, siglen))
            {
                bad++;
            }
            free(sig);
        }
        ok(bad == 0, "%s: 40 raw signatures (SHA-256, SHA-384) verify",
           what);
    }

    /* The fork cycle: close in the "master", open again, sign. */
    pki_vault_close(v);
    pki_vault_close(v);
    pki_result_init(&res);
    is_st(pki_vault_open(v, &res), PKI_OK, "vault reopen");
    check_signing(k, what, EVP_sha256());

    /* Closed vault: signing reopens it by itself. */
    pki_vault_close(v);
    pki_result_init(&res);
    x = make_tbs(pki_key_public(k));
    is_st(pki_key_sign_x509(k, x, &res), PKI_OK, "sign after close");
    X509_free(x);

    /* A real fork: close in the parent, open in the child. */
    pki_vault_close(v);
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        pki_result_t  cres;
        X509         *cx;
        int           rc;

        pki_result_init(&cres);
        rc = pki_vault_open(v, &cres) == PKI_OK;
        cx = make_tbs(pki_key_public(k));
        rc = rc && pki_key_sign_x509(k, cx, &cres) == PKI_OK
             && X509_verify(cx, pki_key_public(k)) == 1
             && sign_threads(k, 2, pki_test_vg(20, 5)) == 0;
        X509_free(cx);
        _exit(rc ? 0 : 1);
    }
    status = -1;
    waitpid(pid, &status, 0);
    ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
       "%s: signs in a forked child", what);

    pki_result_init(&res);
    is_st(pki_vault_open(v, &res), PKI_OK, "parent reopens");
    ok(sign_threads(k, 4, pki_test_vg(20, 5)) == 0, "%s: threads after "
       "reopen", what);

    pki_key_free(k);
}


static void
test_pkcs11(void)
{
    const char    *conf, *module, *token, *pinf, *uri_ec, *uri_rsa;
    pki_result_t   res;
    pki_vault_t   *v, *bad;
    pki_key_t     *k;
    double         t0;
    char           uri[512], buf[64];

    conf = getenv("PKI_TEST_SOFTHSM_CONF");
    module = getenv("PKI_TEST_P11_MODULE");
    token = getenv("PKI_TEST_TOKEN");
    pinf = getenv("PKI_TEST_PIN_FILE");
    uri_ec = getenv("PKI_TEST_KEY_URI_EC");
    uri_rsa = getenv("PKI_TEST_KEY_URI_RSA");

    if (conf == NULL || module == NULL || token == NULL || pinf == NULL
        || uri_ec == NULL)
    {
        diag("SKIP PKCS#11 checks: set PKI_TEST_SOFTHSM_CONF, "
             "PKI_TEST_P11_MODULE, PKI_TEST_TOKEN, PKI_TEST_PIN_FILE and "
             "PKI_TEST_KEY_URI_EC (optional PKI_TEST_KEY_URI_RSA)");
        return;
    }

    setenv("SOFTHSM2_CONF", conf, 1);

    ok(pki_key_uri_token(uri_ec, buf, sizeof(buf)) == 0
       || strcmp(buf, token) == 0, "URI token is the test token");

    /* Wrong PIN: clear, quick, and the PIN is nowhere.  Checked before any
     * vault logs in: a PKCS#11 login is shared by the whole process. */
    write_file(tpath("pin.wrong"), "31337000\n", 9);
    pki_result_init(&res);
    bad = pki_vault_new("bad", module, token, tpath("pin.wrong"), &res);
    t0 = now_s();
    pki_result_init(&res);
    ok(bad != NULL && pki_vault_open(bad, &res) != PKI_OK
       && strstr(res.detail, "wrong PIN") != NULL
       && strstr(res.detail, token) != NULL
       && strstr(res.detail, "31337000") == NULL
       && strstr(res.log, "31337000") == NULL,
       "wrong PIN [%s]", res.detail);
    /* (Valgrind, t/valgrind_core.t, runs it 20-50x slower) */
    ok(now_s() - t0 < (getenv("PKI_TEST_VALGRIND") ? 20.0 : 1.0),
       "wrong PIN is not retried for long (%.2f s)", now_s() - t0);
    pki_vault_free(bad);

    pki_result_init(&res);
    v = pki_vault_new("hsm", module, token, pinf, &res);
    if (!ok(v != NULL, "vault_new [%s]", res.detail)) {
        return;
    }

    pki_result_init(&res);
    if (!is_st(pki_vault_open(v, &res), PKI_OK, "vault_open")) {
        diag("%s / %s", res.detail, res.log);
        pki_vault_free(v);
        return;
    }
    is_st(pki_vault_open(v, &res), PKI_OK, "vault_open is idempotent");

    /* Token not found. */
    pki_result_init(&res);
    bad = pki_vault_new("bad", module, "no-such-token", pinf, &res);
    t0 = now_s();
    pki_result_init(&res);
    ok(bad != NULL && pki_vault_open(bad, &res) != PKI_OK
       && strstr(res.detail, "token \"no-such-token\" not found") != NULL,
       "token not found [%s]", res.detail);
    ok(now_s() - t0 < 3.0, "bounded retries (%.2f s)", now_s() - t0);
    pki_vault_free(bad);

    /* Key not found. */
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=no-such-key", token);
    pki_result_init(&res);
    k = pki_key_new(uri, v, &res);
    ok(k != NULL, "key_new for a missing key");
    pki_result_init(&res);
    ok(k != NULL && pki_key_open(k, &res) == PKI_NOT_FOUND
       && strstr(res.detail, "not found") != NULL,
       "key not found [%s]", res.detail);
    pki_key_free(k);

    snprintf(uri, sizeof(uri), "pkcs11:id=%%fe%%ed;type=private");
    pki_result_init(&res);
    k = pki_key_new(uri, v, &res);
    pki_result_init(&res);
    ok(k != NULL && pki_key_open(k, &res) == PKI_NOT_FOUND,
       "key id not found [%s]", res.detail);
    pki_key_free(k);

    test_p11_key(v, uri_ec, "EC P-256");

    if (uri_rsa != NULL) {
        test_p11_key(v, uri_rsa, "RSA");
    } else {
        diag("PKI_TEST_KEY_URI_RSA not set: RSA token key not tested");
    }

    /* A key that outlives its vault is refused, not a crash. */
    pki_result_init(&res);
    k = pki_key_new(uri_ec, v, &res);
    pki_vault_free(v);
    pki_result_init(&res);
    ok(k != NULL && pki_key_open(k, &res) != PKI_OK,
       "key of a freed vault [%s]", res.detail);
    pki_key_free(k);
}


int
main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/pki_test_key.XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 2;
    }

    pki_init();

    test_file_keys();
    test_bad_refs();
    test_uri_token();
    test_vault_config();
    test_pkcs11();

    if (fork() == 0) {
        execlp("rm", "rm", "-rf", tmpdir, (char *) NULL);
        _exit(1);
    }
    wait(NULL);

    return done_testing();
}
