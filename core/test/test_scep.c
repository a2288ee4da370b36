/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The SCEP engine driven in process: GetCACaps, GetCACert (CA and RA
 * mode), configuration checks, every PKIOperation failure class with its
 * failInfo, and with Redis (PKI_TEST_REDIS_SOCK) enrollment, one-time
 * challenges (through the admin API) and their reuse.  With a SoftHSM RSA
 * key (PKI_TEST_KEY_URI_RSA ...) pki_key_decrypt and an RA whose key is in
 * the token.
 */

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <cJSON.h>
#include <hiredis/hiredis.h>
#include <openssl/x509v3.h>

#include "pki.h"
#include "test/unit.h"
#include "test/proxy.h"
#include "test/testkeys.h"
#include "test/clock.h"


static char          dir[64];
static ASN1_OBJECT  *o_type, *o_status, *o_fail, *o_snonce, *o_rnonce,
                    *o_tid;


/* n: which of the distinct pre-generated keys under Valgrind */
static EVP_PKEY *
rsa(int bits, int n)
{
    return pki_test_rsa(bits, n);
}


/* ca: 0 an end entity, 1 a CA, 2 a CA without cRLSign */
static X509 *
cert(const char *cn, EVP_PKEY *pub, X509 *issuer, EVP_PKEY *ikey, int ca)
{
    X509             *x = X509_new();
    X509_NAME        *n = X509_NAME_new();
    X509V3_CTX        v3;
    X509_EXTENSION   *e;

    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1000 + (rand() & 0xffff));
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400 * 30);
    X509_set_pubkey(x, pub);
    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
                            ca ? "critical,CA:TRUE" : "CA:FALSE");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    e = X509V3_EXT_conf_nid(NULL, &v3, NID_key_usage,
                            ca == 2 ? "critical,keyCertSign,digitalSignature"
                            : ca ? "critical,keyCertSign,cRLSign,"
                                   "digitalSignature"
                            : "digitalSignature,keyEncipherment");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    e = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_key_identifier, "hash");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    X509_sign(x, ikey, EVP_sha256());
    X509_NAME_free(n);
    return x;
}


static void
write_pem(const char *name, X509 *x, EVP_PKEY *k, char *path)
{
    FILE  *f;

    snprintf(path, 128, "%s/%s", dir, name);
    f = fopen(path, "w");
    if (x) {
        PEM_write_X509(f, x);
    } else {
        PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    }
    fclose(f);
}


static pki_key_t *
file_key(EVP_PKEY *k, const char *name)
{
    char           path[128];
    pki_key_t     *key;
    pki_result_t   res;

    write_pem(name, NULL, k, path);
    pki_result_init(&res);
    key = pki_key_new(path, NULL, &res);
    if (key == NULL || pki_key_open(key, &res) != PKI_OK) {
        diag("key %s: %s %s", name, res.detail, res.log);
    }
    return key;
}


static pki_template_t *
scep_template(void)
{
    pki_result_t     res;
    pki_template_t  *t = pki_template_new("scep");
    const char      *kt[] = { "rsa:2048-4096", "ec:P-256" };
    const char      *cn[] = { "CN", "copy" };
    const char      *v[] = { "30d" };
    const char      *ku[] = { "digitalSignature", "keyEncipherment" };
    const char      *san[][2] = {
        { "dns", "copy" }, { "ip", "copy" }, { "email", "copy" },
        { "uri", "copy" }
    };
    size_t           i;

    pki_result_init(&res);
    for (i = 0; i < sizeof(san) / sizeof(san[0]); i++) {
        pki_template_set(t, "san", 2, san[i], &res);
    }
    pki_template_set(t, "key_types", 2, kt, &res);
    pki_template_set(t, "subject", 2, cn, &res);
    pki_template_set(t, "validity", 1, v, &res);
    pki_template_set(t, "key_usage", 2, ku, &res);
    if (pki_template_finish(t, &res) != PKI_OK) {
        diag("template: %s", res.detail);
    }
    return t;
}


static pki_ca_t *
make_ca(const char *name, X509 *x, pki_key_t *key, pki_template_t *t)
{
    char           path[128];
    const char    *argv[1];
    pki_ca_t      *ca = pki_ca_new(name);
    pki_result_t   res;

    write_pem(name, x, NULL, path);
    argv[0] = path;
    pki_result_init(&res);
    pki_ca_set(ca, "certificate", 1, argv, &res);
    pki_ca_set_key(ca, key, &res);
    pki_ca_add_template(ca, t, &res);
    if (pki_ca_finish(ca, &res) != PKI_OK) {
        diag("CA %s: %s %s", name, res.detail, res.log);
    }
    return ca;
}


/* ---- a minimal SCEP client -------------------------------------------------- */

typedef struct {
    int                type;
    EVP_PKEY          *key;         /* CSR key and signer key */
    X509              *signer;      /* NULL: self-signed from key */
    EVP_PKEY          *signkey;     /* NULL: key */
    const char        *cn;
    const unsigned char  *cn_raw;   /* non-NULL: the CN's octets, */
    int                cn_rawlen;   /* of this length, */
    int                cn_type;     /* as this ASN.1 string type */
    const char        *san;         /* NULL, or "URI:...,DNS:..." */
    const char        *challenge;
    X509              *rcpt;
    const EVP_CIPHER  *cipher;
    const EVP_MD      *md;
    const EVP_MD      *csr_md;      /* the CSR's signature (SHA-256) */
    const char        *tid;         /* NULL: base64 SHA-1 of the SPKI */
    int                corrupt_sig;
    int                no_nonce;
    int                des;
    const unsigned char  *inner;    /* non-NULL: the messageData, not a */
    int                inner_len;   /* CSR (GetCert, GetCRL) */
    X509              *extra;       /* carried besides the signer's, */
    int                nextra;      /* this many times */
    X509_CRL          *crl;         /* carried ncrl times */
    int                ncrl;
    const unsigned char  *content;  /* non-NULL: the signed content as */
    int                content_len; /* is, no EnvelopedData */
    const EVP_MD      *oaep;        /* non-NULL: RSAES-OAEP key transport */
    const EVP_MD      *oaep_mgf1;   /* with this hash (NULL: oaep's) */
    int                oaep_label;  /* with a label */
    int                oaep_bare;   /* its parameters left out */
    int                oaep_null;   /* its hashes with NULL parameters
                                       (RFC 4055 2.1's generators) */
    int                corrupt_ek;  /* the encryptedKey broken */
    const unsigned char  *chal_raw; /* non-NULL: the challengePassword's */
    int                chal_rawlen; /* octets, of this length, */
    int                chal_type;   /* as this ASN.1 string type */
} msg_t;


static char  last_detail[256];      /* the detail of pkiop's last answer */
static int   last_retry_after;      /* and its Retry-After */
static int   last_md_nid;           /* the digest of certrep()'s last
                                       CertRep (its SignerInfo and the
                                       SignedData's digestAlgorithms
                                       agreeing), else NID_undef */
static unsigned char  last_req_kt[256];  /* the DER of the last OAEP
                                            request's and reply's key */
static int            last_req_kt_len;   /* transport */
static unsigned char  last_rep_kt[256];
static int            last_rep_kt_len;
static char  last_kt[64];           /* the key transport of the last
                                       SUCCESS's envelope: "rsaEncryption"
                                       or "RSAES-OAEP SHA256 MGF1-SHA1" */


static unsigned char  last_nonce[16];


/* pki_key_sign as the library sees it (exported: it comes before the
 * library's own): fails for the key fail_sign names, as a token that is
 * gone would, and signs as usual with every other key. */
typedef pki_status_t (*sign_pt)(pki_key_t *k, const EVP_MD *md,
    const unsigned char *tbs, size_t tbslen, unsigned char **sig,
    size_t *siglen, pki_result_t *res);

static pki_key_t  *fail_sign;
static int         sign_calls;

__attribute__((visibility("default"))) pki_status_t
pki_key_sign(pki_key_t *k, const EVP_MD *md, const unsigned char *tbs,
    size_t tbslen, unsigned char **sig, size_t *siglen, pki_result_t *res)
{
    static sign_pt  real;

    sign_calls++;

    if (k != NULL && k == fail_sign) {
        return pki_fail(res, PKI_UNAVAILABLE, "test: the token is gone");
    }

    if (real == NULL) {
        real = (sign_pt) dlsym(RTLD_NEXT, "pki_key_sign");
    }

    return real(k, md, tbs, tbslen, sig, siglen, res);
}


/* d2i_PKCS7 as the library sees it (exported, as pki_key_sign): counts
 * its calls, so that a test sees whether a message was read by it. */
typedef PKCS7 *(*d2i_p7_pt)(PKCS7 **a, const unsigned char **pp, long len);

static int  d2i_p7_calls;

__attribute__((visibility("default"))) PKCS7 *
d2i_PKCS7(PKCS7 **a, const unsigned char **pp, long len)
{
    static d2i_p7_pt  real;

    if (real == NULL) {
        real = (d2i_p7_pt) dlsym(RTLD_NEXT, "d2i_PKCS7");
    }

    d2i_p7_calls++;
    return real(a, pp, len);
}


/* redisAppendCommandArgv as the library sees it (exported, as
 * pki_key_sign): with fail_pend set, the write of a pending record (the
 * only command with a "csrsha256" argument) is refused before anything
 * is sent, as when the connection is found broken and none can be made. */
typedef int (*append_pt)(redisContext *c, int argc, const char **argv,
    const size_t *argvlen);

static int  fail_pend;

__attribute__((visibility("default"))) int
redisAppendCommandArgv(redisContext *c, int argc, const char **argv,
    const size_t *argvlen)
{
    int               i;
    static append_pt  real;

    for (i = 0; fail_pend && i < argc; i++) {
        if (argvlen[i] == 9 && memcmp(argv[i], "csrsha256", 9) == 0) {
            c->err = REDIS_ERR_IO;
            snprintf(c->errstr, sizeof(c->errstr), "test: not sent");
            return REDIS_ERR;
        }
    }

    if (real == NULL) {
        real = (append_pt) dlsym(RTLD_NEXT, "redisAppendCommandArgv");
    }

    return real(c, argc, argv, argvlen);
}


/* The ASCII text a as big-endian UCS-2 (w 2, a BMPString) or UCS-4 (w 4,
 * a UniversalString) in out: its length. */
static int
ucs(const char *a, int w, unsigned char *out)
{
    int  n;

    for (n = 0; *a; a++) {
        memset(out + n, 0, w - 1);
        out[n + w - 1] = (unsigned char) *a;
        n += w;
    }

    return n;
}


/* env's RSAES-OAEP parameters written again with the hash md and MGF1
 * over md, each with NULL parameters, as RFC 4055 2.1 has generators
 * write them (OpenSSL leaves them out). */
static void
oaep_null_params(PKCS7 *env, const EVP_MD *md)
{
    X509_ALGOR        *mh;
    ASN1_STRING       *ps, *os;
    RSA_OAEP_PARAMS   *op;
    PKCS7_RECIP_INFO  *ri;

    ri = sk_PKCS7_RECIP_INFO_value(env->d.enveloped->recipientinfo, 0);
    op = RSA_OAEP_PARAMS_new();
    mh = X509_ALGOR_new();
    ps = NULL;
    os = NULL;
    if (ri == NULL || op == NULL || mh == NULL
        || (op->hashFunc = X509_ALGOR_new()) == NULL
        || (op->maskGenFunc = X509_ALGOR_new()) == NULL
        || !X509_ALGOR_set0(op->hashFunc, OBJ_nid2obj(EVP_MD_get_type(md)),
                            V_ASN1_NULL, NULL)
        || !X509_ALGOR_set0(mh, OBJ_nid2obj(EVP_MD_get_type(md)),
                            V_ASN1_NULL, NULL)
        || ASN1_item_pack(mh, ASN1_ITEM_rptr(X509_ALGOR), &ps) == NULL
        || !X509_ALGOR_set0(op->maskGenFunc, OBJ_nid2obj(NID_mgf1),
                            V_ASN1_SEQUENCE, ps)
        || (ps = NULL,
            ASN1_item_pack(op, ASN1_ITEM_rptr(RSA_OAEP_PARAMS), &os)) == NULL
        || !X509_ALGOR_set0(ri->key_enc_algor, OBJ_nid2obj(NID_rsaesOaep),
                            V_ASN1_SEQUENCE, os))
    {
        ASN1_STRING_free(os);
    }
    ASN1_STRING_free(ps);
    X509_ALGOR_free(mh);
    RSA_OAEP_PARAMS_free(op);
}


/* The EnvelopedData of in to m->rcpt with RSAES-OAEP key transport (its
 * hash m->oaep, MGF1 hash m->oaep_mgf1 or the same, a label when
 * m->oaep_label), built by OpenSSL's CMS code as openssl cms -encrypt
 * -keyopt rsa_padding_mode:oaep does, read back as a PKCS7. */
static PKCS7 *
oaep_envelope(msg_t *m, BIO *in)
{
    int                   n;
    PKCS7                *env;
    EVP_PKEY_CTX         *pc;
    unsigned char        *der;
    CMS_ContentInfo      *cms;
    CMS_RecipientInfo    *ri;
    const unsigned char  *p;

    cms = CMS_encrypt(NULL, NULL, m->cipher ? m->cipher : EVP_aes_128_cbc(),
                      CMS_BINARY | CMS_PARTIAL);
    ri = cms ? CMS_add1_recipient_cert(cms, m->rcpt, CMS_KEY_PARAM) : NULL;
    pc = ri ? CMS_RecipientInfo_get0_pkey_ctx(ri) : NULL;
    if (pc == NULL
        || EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_OAEP_PADDING) != 1
        || EVP_PKEY_CTX_set_rsa_oaep_md(pc, m->oaep) != 1
        || EVP_PKEY_CTX_set_rsa_mgf1_md(pc, m->oaep_mgf1 ? m->oaep_mgf1
                                                         : m->oaep) != 1
        || (m->oaep_label
            && EVP_PKEY_CTX_set0_rsa_oaep_label(pc, OPENSSL_strdup("L"), 1)
               != 1)
        || CMS_final(cms, in, NULL, CMS_BINARY) != 1)
    {
        CMS_ContentInfo_free(cms);
        return NULL;
    }
    der = NULL;
    n = i2d_CMS_ContentInfo(cms, &der);
    CMS_ContentInfo_free(cms);
    p = der;
    env = n > 0 ? d2i_PKCS7(NULL, &p, n) : NULL;
    OPENSSL_free(der);
    return env;
}


static int
build(msg_t *m, unsigned char **out)
{
    int                 n, ilen;
    char                num[8], tid[64];
    BIO                *in, *b;
    X509               *self;
    PKCS7              *env, *p7;
    X509_REQ           *csr;
    X509_NAME          *nm;
    EVP_PKEY           *sk;
    unsigned char      *inner = NULL, *envder = NULL, md[20], *spki = NULL;
    STACK_OF(X509)     *rc;
    PKCS7_SIGNER_INFO  *si;

    csr = X509_REQ_new();
    nm = X509_NAME_new();
    if (m->cn_raw != NULL) {
        X509_NAME_add_entry_by_NID(nm, NID_commonName, m->cn_type,
                                   m->cn_raw, m->cn_rawlen, -1, 0);
    } else {
        X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_UTF8,
                                   (const unsigned char *) m->cn, -1, -1,
                                   0);
    }
    X509_REQ_set_subject_name(csr, nm);
    X509_NAME_free(nm);
    if (m->san != NULL) {
        STACK_OF(X509_EXTENSION)  *exts = sk_X509_EXTENSION_new_null();

        sk_X509_EXTENSION_push(exts,
                               X509V3_EXT_conf_nid(NULL, NULL,
                                                   NID_subject_alt_name,
                                                   m->san));
        X509_REQ_add_extensions(csr, exts);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    }
    X509_REQ_set_pubkey(csr, m->key);
    if (m->chal_raw) {
        X509_REQ_add1_attr_by_NID(csr, NID_pkcs9_challengePassword,
                                  m->chal_type, m->chal_raw, m->chal_rawlen);
    } else if (m->challenge) {
        X509_REQ_add1_attr_by_NID(csr, NID_pkcs9_challengePassword,
                                  MBSTRING_ASC,
                                  (const unsigned char *) m->challenge, -1);
    }
    X509_REQ_sign(csr, m->key, m->csr_md != NULL ? m->csr_md : EVP_sha256());
    ilen = i2d_X509_REQ(csr, &inner);
    X509_REQ_free(csr);
    if (m->inner != NULL) {
        OPENSSL_free(inner);
        inner = OPENSSL_memdup(m->inner, m->inner_len);
        ilen = m->inner_len;
    }

    rc = sk_X509_new_null();
    sk_X509_push(rc, m->rcpt);
    in = BIO_new_mem_buf(inner, ilen);
    if (m->oaep != NULL) {
        env = oaep_envelope(m, in);
    } else {
        env = PKCS7_encrypt(rc, in, m->des ? EVP_des_ede3_cbc()
                                           : (m->cipher ? m->cipher
                                                        : EVP_aes_128_cbc()),
                            PKCS7_BINARY);
    }
    if (m->corrupt_ek || m->oaep_bare) {
        PKCS7_RECIP_INFO  *ri;

        ri = sk_PKCS7_RECIP_INFO_value(env->d.enveloped->recipientinfo, 0);
        if (m->corrupt_ek) {
            ri->enc_key->data[ri->enc_key->length / 2] ^= 0x5a;
        }
        if (m->oaep_bare) {
            X509_ALGOR_set0(ri->key_enc_algor, OBJ_nid2obj(NID_rsaesOaep),
                            V_ASN1_UNDEF, NULL);
        }
    }
    if (m->oaep_null) {
        oaep_null_params(env, m->oaep);
    }
    if (m->oaep != NULL) {
        PKCS7_RECIP_INFO  *ri;
        unsigned char     *q = last_req_kt;

        ri = sk_PKCS7_RECIP_INFO_value(env->d.enveloped->recipientinfo, 0);
        last_req_kt_len = i2d_X509_ALGOR(ri->key_enc_algor, NULL);
        if (last_req_kt_len > 0
            && last_req_kt_len <= (int) sizeof(last_req_kt))
        {
            i2d_X509_ALGOR(ri->key_enc_algor, &q);
        }
    }
    if (m->des) {
        X509_ALGOR  *alg = env->d.enveloped->enc_data->algorithm;

        ASN1_OBJECT_free(alg->algorithm);
        alg->algorithm = OBJ_nid2obj(NID_des_cbc);
    }
    n = i2d_PKCS7(env, &envder);
    PKCS7_free(env);
    BIO_free(in);
    sk_X509_free(rc);
    OPENSSL_free(inner);

    sk = m->signkey ? m->signkey : m->key;
    self = m->signer ? NULL : cert("self", sk, NULL, sk, 0);

    p7 = PKCS7_new();
    PKCS7_set_type(p7, NID_pkcs7_signed);
    PKCS7_content_new(p7, NID_pkcs7_data);
    PKCS7_add_certificate(p7, m->signer ? m->signer : self);
    for (ilen = 0; ilen < m->nextra; ilen++) {
        PKCS7_add_certificate(p7, m->extra);
    }
    for (ilen = 0; ilen < m->ncrl; ilen++) {
        PKCS7_add_crl(p7, m->crl);
    }
    si = PKCS7_add_signature(p7, m->signer ? m->signer : self, sk,
                             m->md ? m->md : EVP_sha256());
    PKCS7_add_signed_attribute(si, NID_pkcs9_contentType, V_ASN1_OBJECT,
                               OBJ_nid2obj(NID_pkcs7_data));
    snprintf(num, sizeof(num), "%d", m->type ? m->type : 19);
    X509at_add1_attr_by_OBJ(&si->auth_attr, o_type, V_ASN1_PRINTABLESTRING,
                            (unsigned char *) num, strlen(num));
    if (m->tid == NULL) {
        int  l = i2d_PUBKEY(m->key, &spki);

        SHA1(spki, l, md);
        EVP_EncodeBlock((unsigned char *) tid, md, 20);
        OPENSSL_free(spki);
    } else {
        snprintf(tid, sizeof(tid), "%s", m->tid);
    }
    X509at_add1_attr_by_OBJ(&si->auth_attr, o_tid, V_ASN1_PRINTABLESTRING,
                            (unsigned char *) tid, strlen(tid));
    RAND_bytes(last_nonce, sizeof(last_nonce));
    if (!m->no_nonce) {
        X509at_add1_attr_by_OBJ(&si->auth_attr, o_snonce,
                                V_ASN1_OCTET_STRING, last_nonce, 16);
    }

    b = PKCS7_dataInit(p7, NULL);
    if (m->content != NULL) {
        BIO_write(b, m->content, m->content_len);
    } else {
        BIO_write(b, envder, n);
    }
    BIO_flush(b);
    PKCS7_dataFinal(p7, b);
    BIO_free_all(b);
    OPENSSL_free(envder);

    if (m->corrupt_sig) {
        si->enc_digest->data[5] ^= 1;
    }

    *out = NULL;
    n = i2d_PKCS7(p7, out);
    PKCS7_free(p7);
    X509_free(self);
    return n;
}


/* DER re-encoded with indefinite lengths down to depth levels (the
 * rest copied as it is): the length written to out. */
static size_t
ber_indef(const unsigned char *in, size_t len, int depth, unsigned char *out)
{
    int                   inf, tag, cls;
    long                  l;
    size_t                o, hl;
    const unsigned char  *p;

    o = 0;
    while (len > 0) {
        p = in;
        inf = ASN1_get_object(&p, &l, &tag, &cls, (long) len);
        if (inf & 0x80) {
            break;
        }
        hl = (size_t) (p - in);
        if (depth > 0 && (inf & V_ASN1_CONSTRUCTED)) {
            out[o++] = in[0];
            out[o++] = 0x80;
            o += ber_indef(p, (size_t) l, depth - 1, out + o);
            out[o++] = 0;
            out[o++] = 0;
        } else {
            memcpy(out + o, in, hl + (size_t) l);
            o += hl + (size_t) l;
        }
        in += hl + (size_t) l;
        len -= hl + (size_t) l;
    }

    return o;
}


static ASN1_TYPE *
attr(PKCS7_SIGNER_INFO *si, ASN1_OBJECT *o)
{
    int  i = X509at_get_attr_by_OBJ(si->auth_attr, o, -1);

    return i < 0 ? NULL
                 : X509_ATTRIBUTE_get0_type(X509at_get_attr(si->auth_attr, i),
                                            0);
}


/* The key transport of env's first RecipientInfo into last_kt (OpenSSL's
 * names: rsaEncryption, or RSAES-OAEP with its hash and MGF1 hash). */
static void
reply_kt(PKCS7 *env)
{
    int                nid, h, mh;
    X509_ALGOR        *alg, *ma;
    RSA_OAEP_PARAMS   *op;
    PKCS7_RECIP_INFO  *ri;

    snprintf(last_kt, sizeof(last_kt), "?");
    ri = sk_PKCS7_RECIP_INFO_value(env->d.enveloped->recipientinfo, 0);
    if (ri == NULL) {
        return;
    }

    alg = ri->key_enc_algor;
    last_rep_kt_len = i2d_X509_ALGOR(alg, NULL);
    if (last_rep_kt_len > 0
        && last_rep_kt_len <= (int) sizeof(last_rep_kt))
    {
        unsigned char  *q = last_rep_kt;

        i2d_X509_ALGOR(alg, &q);
    }
    nid = OBJ_obj2nid(alg->algorithm);
    if (nid != NID_rsaesOaep) {
        snprintf(last_kt, sizeof(last_kt), "%s", OBJ_nid2sn(nid));
        return;
    }

    op = alg->parameter != NULL
         ? ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(RSA_OAEP_PARAMS),
                                     alg->parameter)
         : NULL;
    if (op == NULL) {
        snprintf(last_kt, sizeof(last_kt), "RSAES-OAEP bad parameters");
        return;
    }

    h = op->hashFunc ? OBJ_obj2nid(op->hashFunc->algorithm) : NID_sha1;
    ma = op->maskGenFunc
         ? ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(X509_ALGOR),
                                     op->maskGenFunc->parameter)
         : NULL;
    mh = op->maskGenFunc == NULL ? NID_sha1
         : ma != NULL ? OBJ_obj2nid(ma->algorithm) : NID_undef;
    snprintf(last_kt, sizeof(last_kt), "RSAES-OAEP %s MGF1-%s%s",
             OBJ_nid2sn(h), OBJ_nid2sn(mh), op->pSourceFunc ? " label" : "");
    X509_ALGOR_free(ma);
    RSA_OAEP_PARAMS_free(op);
}


/* Parses a CertRep: returns pkiStatus (-1 bad), failInfo in *fail,
 * checks the RA signature and the nonce; *issued (optional) receives the
 * certificate of a SUCCESS (decrypted with key by OpenSSL's CMS code,
 * which reads the OAEP parameters; PKCS7_decrypt() would take any key
 * transport for PKCS#1 v1.5), last_kt its key transport. */
static int
certrep(pki_scep_resp_t *resp, X509 *ra, EVP_PKEY *key, int *fail,
    X509 **issued)
{
    int                  st, ok;
    BIO                 *out;
    PKCS7               *p7, *env, *inner;
    CMS_ContentInfo     *cms;
    ASN1_TYPE           *t;
    STACK_OF(X509)      *s;
    const unsigned char *p;
    PKCS7_SIGNER_INFO   *si;

    *fail = -1;
    p = resp->body;
    p7 = d2i_PKCS7(NULL, &p, (long) resp->body_len);
    if (p7 == NULL || !PKCS7_type_is_signed(p7)) {
        PKCS7_free(p7);
        return -1;
    }

    s = sk_X509_new_null();
    sk_X509_push(s, ra);
    out = PKCS7_get_detached(p7) ? BIO_new_mem_buf("", 0) : NULL;
    ok = PKCS7_verify(p7, s, NULL, out, NULL,
                      PKCS7_NOVERIFY | PKCS7_NOINTERN | PKCS7_BINARY) == 1;
    BIO_free(out);
    sk_X509_free(s);
    ERR_clear_error();

    si = sk_PKCS7_SIGNER_INFO_value(PKCS7_get_signer_info(p7), 0);
    last_md_nid = NID_undef;
    if (si != NULL && sk_X509_ALGOR_num(p7->d.sign->md_algs) == 1
        && OBJ_cmp(sk_X509_ALGOR_value(p7->d.sign->md_algs, 0)->algorithm,
                   si->digest_alg->algorithm) == 0)
    {
        last_md_nid = OBJ_obj2nid(si->digest_alg->algorithm);
    }
    t = attr(si, o_rnonce);
    ok = ok && t && t->value.octet_string->length == 16
         && memcmp(t->value.octet_string->data, last_nonce, 16) == 0;
    t = attr(si, o_status);
    st = ok && t ? atoi((char *) t->value.printablestring->data) : -1;
    t = attr(si, o_fail);
    if (t) {
        *fail = atoi((char *) t->value.printablestring->data);
    }

    if (st == 0 && issued) {
        ASN1_OCTET_STRING  *c = p7->d.sign->contents->d.data;
        char               *mem;
        long                len;

        p = c->data;
        env = d2i_PKCS7(NULL, &p, c->length);
        p = c->data;
        cms = d2i_CMS_ContentInfo(NULL, &p, c->length);
        out = BIO_new(BIO_s_mem());
        if (env != NULL && PKCS7_type_is_enveloped(env)) {
            reply_kt(env);
        }
        if (env && cms && CMS_decrypt(cms, key, NULL, NULL, out, CMS_BINARY))
        {
            len = BIO_get_mem_data(out, &mem);
            p = (unsigned char *) mem;
            inner = d2i_PKCS7(NULL, &p, len);
            if (inner && sk_X509_num(inner->d.sign->cert) > 0) {
                *issued = X509_dup(sk_X509_value(inner->d.sign->cert, 0));
            }
            PKCS7_free(inner);
        }
        BIO_free(out);
        PKCS7_free(env);
        CMS_ContentInfo_free(cms);
        ERR_clear_error();
    }

    PKCS7_free(p7);
    return st;
}


static void
op(const pki_scep_conf_t *conf, pki_scep_op_t o, const char *method,
    const unsigned char *body, size_t len, pki_scep_resp_t *resp)
{
    pki_scep_req_t  req;

    memset(&req, 0, sizeof(req));
    req.op = o;
    req.method = method;
    req.body = body;
    req.body_len = len;
    req.client = "test";
    pki_scep_handle(conf, &req, resp);
}


/* PKIOperation with message m; returns the pkiStatus, *fail the failInfo */
static int
pkiop(const pki_scep_conf_t *conf, msg_t *m, int *fail, X509 **issued,
    int *http)
{
    int               n, st;
    unsigned char    *der;
    pki_scep_resp_t   resp;

    n = build(m, &der);
    op(conf, PKI_SCEP_PKIOPERATION, "POST", der, (size_t) n, &resp);
    OPENSSL_free(der);
    *http = resp.http_status;
    st = resp.http_status == 200
         ? certrep(&resp, conf->ra_cert ? conf->ra_cert
                                        : pki_ca_cert(conf->ca),
                   m->key, fail, issued)
         : -1;
    if (st != 0 && st != 3 && resp.http_status == 200) {
        diag("  -> %s (%s)", resp.res.detail, resp.res.log);
    }
    snprintf(last_detail, sizeof(last_detail), "%s", resp.res.detail);
    last_retry_after = resp.retry_after;
    pki_scep_resp_free(&resp);
    return st;
}


/* PKIOperation with message m as it is built: the HTTP status, the
 * reason in why, the calls of d2i_PKCS7 it made in *d2i.  indef: the
 * message's outer four levels re-encoded with indefinite lengths. */
static int
rawop(const pki_scep_conf_t *conf, msg_t *m, int indef, char *why,
    size_t size, int *d2i)
{
    int               n, h;
    size_t            len;
    unsigned char    *der, *ber;
    pki_scep_resp_t   resp;

    n = build(m, &der);
    ber = NULL;
    len = (size_t) n;
    if (indef) {
        ber = malloc(len + 64);
        len = ber_indef(der, len, 4, ber);
    }
    d2i_p7_calls = 0;
    op(conf, PKI_SCEP_PKIOPERATION, "POST", ber ? ber : der, len, &resp);
    *d2i = d2i_p7_calls;
    h = resp.http_status;
    snprintf(why, size, "%s", resp.res.detail);
    pki_scep_resp_free(&resp);
    OPENSSL_free(der);
    free(ber);
    return h;
}


/* The seconds since the DER of CRL number n of CA ca (namespace ns) was
 * last read (OBJECT IDLETIME, which does not touch it; the LRU clock
 * counts seconds), -1 when it cannot be read. */
static long long
crl_der_idle(redisContext *c, const char *ns, const char *ca, long long n)
{
    long long    idle;
    redisReply  *rep;

    idle = -1;
    rep = c != NULL ? redisCommand(c, "OBJECT IDLETIME %s{ca:%s}:crl:%lld",
                                   ns, ca, n)
                    : NULL;
    if (rep != NULL && rep->type == REDIS_REPLY_INTEGER) {
        idle = rep->integer;
    }
    freeReplyObject(rep);

    return idle;
}


/* The number of the CRL stored for CA ca under namespace ns (its crl_meta:
 * "REVGEN NEXTUPDATE NUMBER THISUPDATE"), 0 for none. */
static long long
crl_number(redisContext *c, const char *ns, const char *ca)
{
    long long    n, revgen, next;
    redisReply  *rep;

    n = 0;
    rep = c != NULL ? redisCommand(c, "GET %s{ca:%s}:crl_meta", ns, ca)
                    : NULL;
    if (rep != NULL && rep->type == REDIS_REPLY_STRING
        && sscanf(rep->str, "%lld %lld %lld", &revgen, &next, &n) != 3)
    {
        n = 0;
    }
    freeReplyObject(rep);

    return n;
}


/* The TTL of the replay record of the message der (its signer's key and
 * signed attributes, as pki_scep_seen_key names it), -3 if not read. */
static long long
seen_ttl(const char *sock, const unsigned char *der, int len)
{
    int                  n, k;
    char                 hex[65];
    X509                *sx;
    PKCS7               *p7;
    long long            ttl;
    redisReply          *rep;
    redisContext        *c;
    unsigned char       *attrs, *spki, *id, md[32];
    const unsigned char *p;
    STACK_OF(X509)      *signers;
    PKCS7_SIGNER_INFO   *si;

    ttl = -3;
    p = der;
    p7 = d2i_PKCS7(NULL, &p, len);
    signers = p7 ? PKCS7_get0_signers(p7, NULL, 0) : NULL;
    if (signers == NULL || sk_X509_num(signers) != 1) {
        sk_X509_free(signers);
        PKCS7_free(p7);
        return ttl;
    }
    sx = sk_X509_value(signers, 0);
    si = sk_PKCS7_SIGNER_INFO_value(PKCS7_get_signer_info(p7), 0);
    attrs = NULL;
    spki = NULL;
    n = ASN1_item_i2d((ASN1_VALUE *) si->auth_attr, &attrs,
                      ASN1_ITEM_rptr(PKCS7_ATTR_VERIFY));
    k = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(sx), &spki);
    id = malloc((size_t) n + (size_t) k);
    memcpy(id, spki, (size_t) k);
    memcpy(id + k, attrs, (size_t) n);
    SHA256(id, (size_t) n + (size_t) k, md);
    for (k = 0; k < 32; k++) {
        snprintf(hex + 2 * k, 3, "%02x", md[k]);
    }
    free(id);
    OPENSSL_free(attrs);
    OPENSSL_free(spki);
    sk_X509_free(signers);
    PKCS7_free(p7);

    c = redisConnectUnix(sock);
    rep = c != NULL && c->err == 0
          ? redisCommand(c, "TTL scep-test:scep:seen:%s", hex) : NULL;
    if (rep != NULL && rep->type == REDIS_REPLY_INTEGER) {
        ttl = rep->integer;
    }
    freeReplyObject(rep);
    redisFree(c);

    return ttl;
}


/* GetCRL (22), or GetCert (21) with type 21, for the IssuerAndSerialNumber
 * issuer, serial, signed by key: the pkiStatus, *fail the failInfo. */
static int
getcrl_ias(const pki_scep_conf_t *conf, int type, const X509_NAME *issuer,
    const ASN1_INTEGER *serial, EVP_PKEY *key, int *fail)
{
    int                       st, h;
    msg_t                     m;
    unsigned char            *der;
    PKCS7_ISSUER_AND_SERIAL  *ias;

    ias = PKCS7_ISSUER_AND_SERIAL_new();
    X509_NAME_set(&ias->issuer, (X509_NAME *) issuer);
    ASN1_INTEGER_free(ias->serial);
    ias->serial = ASN1_INTEGER_dup(serial);
    der = NULL;

    memset(&m, 0, sizeof(m));
    m.type = type ? type : 22;
    m.key = key;
    m.cn = "getcrl";
    m.rcpt = conf->ra_cert ? conf->ra_cert : pki_ca_cert(conf->ca);
    m.inner_len = i2d_PKCS7_ISSUER_AND_SERIAL(ias, &der);
    m.inner = der;
    PKCS7_ISSUER_AND_SERIAL_free(ias);

    st = pkiop(conf, &m, fail, NULL, &h);
    OPENSSL_free(der);

    return st;
}


/* GetCRL (22) for the IssuerAndSerialNumber of x, signed by key: the
 * pkiStatus, *fail the failInfo. */
static int
getcrl(const pki_scep_conf_t *conf, X509 *x, EVP_PKEY *key, int *fail)
{
    return getcrl_ias(conf, 22, X509_get_issuer_name(x),
                      X509_get0_serialNumber(x), key, fail);
}


/* A one-time challenge from the admin API with this JSON body: 1 made
 * (its 32 hex digits in chal), 0 not. */
static int
new_chal(pki_redis_t *redis, pki_ca_t *ca, const char *body, char *chal)
{
    int                st;
    char              *q;
    pki_admin_conf_t   ac;
    pki_admin_req_t    ar;
    pki_admin_resp_t   aresp;

    memset(&ac, 0, sizeof(ac));
    ac.redis = redis;
    ac.cas = &ca;
    ac.ncas = 1;
    memset(&ar, 0, sizeof(ar));
    ar.method = "POST";
    ar.path = "scep/challenges";
    ar.path_len = strlen(ar.path);
    ar.body = (const unsigned char *) body;
    ar.body_len = strlen(body);
    ar.identity = "admin";
    pki_admin_handle(&ac, &ar, &aresp);
    chal[0] = '\0';
    q = aresp.body ? strstr((char *) aresp.body, "\"challenge\":\"") : NULL;
    if (q) {
        snprintf(chal, 33, "%s", q + 13);
    }
    st = aresp.http_status;
    pki_admin_resp_free(&aresp);

    return st == 201 && strlen(chal) == 32;
}


#define EXPECT_FAIL(name, conf, m, want)                                      \
    do {                                                                      \
        int  f_, h_, s_;                                                      \
        s_ = pkiop(conf, m, &f_, NULL, &h_);                                  \
        ok(h_ == 200 && s_ == 2 && f_ == (want),                              \
           "%s: FAILURE failInfo %d (http %d status %d fail %d)", name,       \
           want, h_, s_, f_);                                                 \
    } while (0)


/* A store on the test Redis through a proxy (test/proxy.h) that the
 * caller arms, with a 300 ms timeout, connected; NULL when not made. */
static pki_redis_t *
proxied_store(proxy_t *px, const char *redis_sock, const char *name)
{
    pki_redis_t       *pr;
    pki_result_t       pres;
    pki_redis_conf_t   prc;

    if (!ok(proxy_start(px, redis_sock, dir, name), "proxy %s", name)) {
        return NULL;
    }

    memset(&prc, 0, sizeof(prc));
    prc.unix_path = px->path;
    prc.ns = "scep-test:";
    prc.timeout_ms = 300;
    pki_result_init(&pres);
    pr = pki_redis_new(&prc, &pres);
    if (pr != NULL) {
        (void) pki_redis_ping(pr, &pres);
    }

    return pr;
}


int
main(void)
{
    int               f, h, s;
    size_t            n;
    char              path[128], *redis_sock;
    X509             *ca_x, *eca_x, *ra_x, *bad_ra, *issued;
    EVP_PKEY         *ca_k, *eca_k, *ra_k, *dev_k, *ec_k, *other_k;
    pki_ca_t         *ca, *eca;
    pki_key_t        *ca_key, *eca_key, *ra_key, *other_key;
    pki_redis_t      *redis;
    pki_result_t      res;
    pki_template_t   *t;
    pki_scep_conf_t   conf, cmode;
    pki_scep_resp_t   resp;
    msg_t             m;
    unsigned char    *der;

    o_type = OBJ_txt2obj("2.16.840.1.113733.1.9.2", 1);
    o_status = OBJ_txt2obj("2.16.840.1.113733.1.9.3", 1);
    o_fail = OBJ_txt2obj("2.16.840.1.113733.1.9.4", 1);
    o_snonce = OBJ_txt2obj("2.16.840.1.113733.1.9.5", 1);
    o_rnonce = OBJ_txt2obj("2.16.840.1.113733.1.9.6", 1);
    o_tid = OBJ_txt2obj("2.16.840.1.113733.1.9.7", 1);

    pki_init();
    snprintf(dir, sizeof(dir), "/tmp/test_scep.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        skip_all("mkdtemp");
    }

    /* an RSA CA (CA mode), an EC CA with an RSA RA (RA mode) */
    ca_k = rsa(2048, 1);
    ca_x = cert("SCEP Test RSA CA", ca_k, NULL, ca_k, 1);
    eca_k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    eca_x = cert("SCEP Test EC CA", eca_k, NULL, eca_k, 1);
    ra_k = rsa(2048, 2);
    ra_x = cert("SCEP Test RA", ra_k, eca_x, eca_k, 0);
    dev_k = rsa(2048, 3);
    other_k = rsa(2048, 4);
    ec_k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

    t = scep_template();
    ca_key = file_key(ca_k, "ca.key");
    eca_key = file_key(eca_k, "eca.key");
    ra_key = file_key(ra_k, "ra.key");
    other_key = file_key(other_k, "other.key");
    ca = make_ca("rsaca", ca_x, ca_key, t);
    eca = make_ca("ecca", eca_x, eca_key, t);

    /* ---- operation names ---- */
    ok(pki_scep_op("GetCACaps", 9) == PKI_SCEP_GETCACAPS, "op GetCACaps");
    ok(pki_scep_op("PKIOperation", 12) == PKI_SCEP_PKIOPERATION,
       "op PKIOperation");
    ok(pki_scep_op("getcacaps", 9) == PKI_SCEP_UNKNOWN, "op is case "
       "sensitive");
    ok(pki_scep_op(NULL, 0) == PKI_SCEP_UNKNOWN, "op NULL");
    ok(pki_scep_op_blocking(PKI_SCEP_PKIOPERATION)
       && pki_scep_op_blocking(PKI_SCEP_GETNEXTCACERT)
       && !pki_scep_op_blocking(PKI_SCEP_GETCACERT)
       && !pki_scep_op_blocking(PKI_SCEP_GETCACAPS), "blocking ops");

    /* ---- configuration checks ---- */
    memset(&cmode, 0, sizeof(cmode));
    cmode.ca = ca;
    cmode.tmpl = t;
    cmode.challenge = (const unsigned char *) "s3cret";
    cmode.challenge_len = 6;
    cmode.max_skew = 86400;
    pki_result_init(&res);
    is_status(pki_scep_conf_check(&cmode, &res), PKI_OK, "CA mode with an "
              "RSA CA");

    memset(&conf, 0, sizeof(conf));
    conf.ca = eca;
    conf.tmpl = t;
    pki_result_init(&res);
    is_status(pki_scep_conf_check(&conf, &res), PKI_MALFORMED,
              "EC CA without an RA is refused");
    ok(strstr(res.detail, "RSA") != NULL, "... and says RSA [%s]",
       res.detail);

    conf.ra_cert = ra_x;
    conf.ra_key = other_key;
    pki_result_init(&res);
    is_status(pki_scep_conf_check(&conf, &res), PKI_MALFORMED,
              "RA key not matching the RA certificate");

    bad_ra = cert("Foreign RA", ra_k, ca_x, ca_k, 0);
    conf.ra_cert = bad_ra;
    conf.ra_key = ra_key;
    pki_result_init(&res);
    is_status(pki_scep_conf_check(&conf, &res), PKI_MALFORMED,
              "RA certificate of another CA");

    conf.ra_cert = ra_x;
    conf.challenge = (const unsigned char *) "s3cret";
    conf.challenge_len = 6;
    conf.max_skew = 86400;
    pki_result_init(&res);
    is_status(pki_scep_conf_check(&conf, &res), PKI_OK, "RA mode");

    /* ---- GetCACaps / GetCACert ---- */
    op(&conf, PKI_SCEP_GETCACAPS, "GET", NULL, 0, &resp);
    ok(resp.http_status == 200 && resp.body_len > 0
       && memmem(resp.body, resp.body_len, "AES\n", 4) != NULL
       && memmem(resp.body, resp.body_len, "SHA-256\n", 8) != NULL
       && memmem(resp.body, resp.body_len, "\nDES\n", 5) == NULL
       && memmem(resp.body, resp.body_len, "\nDES3\n", 6) != NULL
       && memmem(resp.body, resp.body_len, "\nSHA-1\n", 7) != NULL
       && memmem(resp.body, resp.body_len, "GetNextCACert", 13) == NULL,
       "GetCACaps: AES, SHA-256, DES3, SHA-1, no DES, no GetNextCACert");
    pki_scep_resp_free(&resp);

    conf.next_ca = ca_x;
    op(&conf, PKI_SCEP_GETCACAPS, "GET", NULL, 0, &resp);
    ok(memmem(resp.body, resp.body_len, "GetNextCACert\n", 14) != NULL,
       "GetCACaps: GetNextCACert with a next CA");
    pki_scep_resp_free(&resp);
    op(&conf, PKI_SCEP_GETNEXTCACERT, "GET", NULL, 0, &resp);
    ok(resp.http_status == 200 && resp.content_type
       && strcmp(resp.content_type, "application/x-x509-next-ca-cert") == 0,
       "GetNextCACert");
    {
        /* signed by the current (EC) CA over a degenerate PKCS#7 with the
         * next CA certificate */
        int                   vr;
        BIO                  *out = BIO_new(BIO_s_mem());
        PKCS7                *p7, *in7;
        X509_STORE           *st = X509_STORE_new();
        const unsigned char  *p = resp.body;
        unsigned char        *d;
        long                  dl;

        X509_STORE_add_cert(st, eca_x);
        p7 = d2i_PKCS7(NULL, &p, (long) resp.body_len);
        vr = p7 != NULL && PKCS7_verify(p7, NULL, st, NULL, out,
                                        PKCS7_BINARY) == 1;
        ok(vr, "GetNextCACert: verifies against the current CA");
        ok(p7 && sk_PKCS7_SIGNER_INFO_num(PKCS7_get_signer_info(p7)) == 1
           && X509_NAME_cmp(sk_PKCS7_SIGNER_INFO_value(
                  PKCS7_get_signer_info(p7), 0)->issuer_and_serial->issuer,
                  X509_get_subject_name(eca_x)) == 0,
           "GetNextCACert: one signer, the current CA");
        dl = BIO_get_mem_data(out, (char **) &d);
        p = d;
        in7 = vr ? d2i_PKCS7(NULL, &p, dl) : NULL;
        ok(in7 && PKCS7_type_is_signed(in7)
           && sk_PKCS7_SIGNER_INFO_num(PKCS7_get_signer_info(in7)) == 0
           && sk_X509_num(in7->d.sign->cert) == 1
           && X509_cmp(sk_X509_value(in7->d.sign->cert, 0), ca_x) == 0,
           "GetNextCACert: content is a certs-only PKCS#7 with the next CA");
        PKCS7_free(in7);

        /* a flipped byte in the content does not verify */
        if (p7 != NULL) {
            ASN1_OCTET_STRING  *os = p7->d.sign->contents->d.data;

            os->data[os->length / 2] ^= 1;
            ERR_set_mark();
            ok(PKCS7_verify(p7, NULL, st, NULL, NULL, PKCS7_BINARY) != 1,
               "GetNextCACert: a changed content fails to verify");
            ERR_pop_to_mark();
        }
        PKCS7_free(p7);
        X509_STORE_free(st);
        BIO_free(out);
    }

    /* the answer again: the same bytes, no signature (anonymous GETs do
     * not make the CA key sign each); other content: signed anew */
    {
        size_t            l1 = resp.body_len;
        unsigned char    *b1 = OPENSSL_memdup(resp.body, resp.body_len);
        pki_scep_resp_t   r2;
        STACK_OF(X509)   *more = sk_X509_new_null();

        sign_calls = 0;
        op(&conf, PKI_SCEP_GETNEXTCACERT, "GET", NULL, 0, &r2);
        ok(r2.http_status == 200 && b1 != NULL && r2.body_len == l1
           && memcmp(r2.body, b1, l1) == 0 && sign_calls == 0,
           "GetNextCACert again: the same answer, no signature (%d)",
           sign_calls);
        pki_scep_resp_free(&r2);

        sk_X509_push(more, ra_x);
        conf.next_chain = more;
        sign_calls = 0;
        op(&conf, PKI_SCEP_GETNEXTCACERT, "GET", NULL, 0, &r2);
        ok(r2.http_status == 200 && sign_calls == 1
           && (r2.body_len != l1 || memcmp(r2.body, b1, l1) != 0),
           "GetNextCACert with more content: signed anew (%d)", sign_calls);
        pki_scep_resp_free(&r2);
        conf.next_chain = NULL;
        sk_X509_free(more);
        OPENSSL_free(b1);
    }
    pki_scep_resp_free(&resp);

    /* configuration: the next CA must be a CA, and not the current one */
    conf.next_ca = ra_x;
    pki_result_init(&res);
    is_status(pki_scep_conf_check(&conf, &res), PKI_MALFORMED,
              "scep_next_ca: not a CA certificate");
    conf.next_ca = eca_x;
    pki_result_init(&res);
    is_status(pki_scep_conf_check(&conf, &res), PKI_MALFORMED,
              "scep_next_ca: the current CA");
    conf.next_ca = ca_x;
    pki_result_init(&res);
    is_status(pki_scep_conf_check(&conf, &res), PKI_OK,
              "scep_next_ca: another CA certificate");
    conf.next_ca = NULL;
    op(&conf, PKI_SCEP_GETNEXTCACERT, "GET", NULL, 0, &resp);
    ok(resp.http_status == 404, "GetNextCACert without a next CA: 404");
    pki_scep_resp_free(&resp);

    op(&conf, PKI_SCEP_GETCACERT, "GET", NULL, 0, &resp);
    {
        const unsigned char  *p = resp.body;
        PKCS7                *p7 = d2i_PKCS7(NULL, &p, (long) resp.body_len);

        ok(resp.http_status == 200
           && strcmp(resp.content_type, "application/x-x509-ca-ra-cert") == 0
           && p7 && PKCS7_type_is_signed(p7)
           && sk_X509_num(p7->d.sign->cert) == 2
           && X509_cmp(sk_X509_value(p7->d.sign->cert, 0), ra_x) == 0
           && X509_cmp(sk_X509_value(p7->d.sign->cert, 1), eca_x) == 0,
           "GetCACert (RA mode): RA, then CA, in a degenerate PKCS#7");
        PKCS7_free(p7);
    }
    pki_scep_resp_free(&resp);

    op(&cmode, PKI_SCEP_GETCACERT, "GET", NULL, 0, &resp);
    {
        const unsigned char  *p = resp.body;
        X509                 *x = d2i_X509(NULL, &p, (long) resp.body_len);

        ok(resp.http_status == 200
           && strcmp(resp.content_type, "application/x-x509-ca-cert") == 0
           && x && X509_cmp(x, ca_x) == 0, "GetCACert (CA mode): the CA");
        X509_free(x);
    }
    pki_scep_resp_free(&resp);

    /* scep_ca_chain on: an intermediate CA that is its own RA answers its
     * chain (RFC 8894 4.2.1.2), the CA first; off, or a CA without a
     * chain, the CA certificate alone as before */
    {
        char                  path[128], cpath[128];
        const char           *argv[1];
        const unsigned char  *p;
        X509                 *ix, *x;
        PKCS7                *p7;
        pki_ca_t             *ica;
        pki_scep_conf_t       cc;

        ix = cert("SCEP Test RSA Int", ca_k, eca_x, eca_k, 1);
        ica = pki_ca_new("rsaint");
        write_pem("rsaint.pem", ix, NULL, path);
        write_pem("rsaint-chain.pem", eca_x, NULL, cpath);
        pki_result_init(&res);
        argv[0] = path;
        pki_ca_set(ica, "certificate", 1, argv, &res);
        argv[0] = cpath;
        pki_ca_set(ica, "chain", 1, argv, &res);
        pki_ca_set_key(ica, ca_key, &res);
        pki_ca_add_template(ica, t, &res);
        is_status(pki_ca_finish(ica, &res), PKI_OK,
                  "an intermediate RSA CA with its chain");

        cc = cmode;
        cc.ca = ica;
        cc.ca_chain = 1;
        op(&cc, PKI_SCEP_GETCACERT, "GET", NULL, 0, &resp);
        p = resp.body;
        p7 = resp.body ? d2i_PKCS7(NULL, &p, (long) resp.body_len) : NULL;
        ok(resp.http_status == 200
           && strcmp(resp.content_type, "application/x-x509-ca-ra-cert") == 0
           && p7 && PKCS7_type_is_signed(p7)
           && sk_X509_num(p7->d.sign->cert) == 2
           && X509_cmp(sk_X509_value(p7->d.sign->cert, 0), ix) == 0
           && X509_cmp(sk_X509_value(p7->d.sign->cert, 1), eca_x) == 0,
           "GetCACert (CA mode, scep_ca_chain on): CA, then its chain");
        PKCS7_free(p7);
        pki_scep_resp_free(&resp);

        cc.ca_chain = 0;
        op(&cc, PKI_SCEP_GETCACERT, "GET", NULL, 0, &resp);
        p = resp.body;
        x = resp.body ? d2i_X509(NULL, &p, (long) resp.body_len) : NULL;
        ok(resp.http_status == 200
           && strcmp(resp.content_type, "application/x-x509-ca-cert") == 0
           && x && X509_cmp(x, ix) == 0,
           "GetCACert (CA mode, scep_ca_chain off): the CA alone");
        X509_free(x);
        pki_scep_resp_free(&resp);

        cc.ca = ca;
        cc.ca_chain = 1;
        op(&cc, PKI_SCEP_GETCACERT, "GET", NULL, 0, &resp);
        p = resp.body;
        x = resp.body ? d2i_X509(NULL, &p, (long) resp.body_len) : NULL;
        ok(resp.http_status == 200
           && strcmp(resp.content_type, "application/x-x509-ca-cert") == 0
           && x && X509_cmp(x, ca_x) == 0,
           "GetCACert (a root, scep_ca_chain on): the CA alone");
        X509_free(x);
        pki_scep_resp_free(&resp);

        pki_ca_free(ica);
        X509_free(ix);
    }

    /* ---- HTTP-level refusals ---- */
    op(&conf, PKI_SCEP_PKIOPERATION, "PUT", (unsigned char *) "x", 1, &resp);
    ok(resp.http_status == 405, "PUT: 405");
    pki_scep_resp_free(&resp);
    op(&conf, PKI_SCEP_PKIOPERATION, "POST", NULL, 0, &resp);
    ok(resp.http_status == 400, "empty: 400");
    pki_scep_resp_free(&resp);
    {
        unsigned char  *big = calloc(1, PKI_SCEP_MAX_BODY + 1);

        op(&conf, PKI_SCEP_PKIOPERATION, "POST", big, PKI_SCEP_MAX_BODY + 1,
           &resp);
        ok(resp.http_status == 413, "over the cap: 413");
        pki_scep_resp_free(&resp);
        free(big);
    }
    op(&conf, PKI_SCEP_PKIOPERATION, "POST", (unsigned char *) "\x30\x03\x02",
       3, &resp);
    ok(resp.http_status == 400, "garbage: 400 [%s]", resp.res.detail);
    pki_scep_resp_free(&resp);
    op(&conf, PKI_SCEP_PKIOPERATION, "GET", (unsigned char *) "!!notb64", 8,
       &resp);
    ok(resp.http_status == 400, "GET message not base64: 400");
    pki_scep_resp_free(&resp);

    memset(&m, 0, sizeof(m));
    m.key = dev_k;
    m.cn = "dev";
    m.challenge = "s3cret";
    m.rcpt = ra_x;
    m.no_nonce = 1;
    n = (size_t) build(&m, &der);
    op(&conf, PKI_SCEP_PKIOPERATION, "POST", der, n, &resp);
    ok(resp.http_status == 400, "no senderNonce: 400");
    pki_scep_resp_free(&resp);
    OPENSSL_free(der);

    /* GET: the cap is on the DER, as for POST, not on its base64 */
    m.no_nonce = 0;
    m.challenge = "wrong";
    n = (size_t) build(&m, &der);
    {
        unsigned char  *b64 = malloc(n / 3 * 4 + 8);
        size_t          blen;

        blen = (size_t) EVP_EncodeBlock(b64, der, (int) n);
        conf.max_body = n;
        op(&conf, PKI_SCEP_PKIOPERATION, "GET", b64, blen, &resp);
        ok(resp.http_status == 200, "GET: a message of exactly the cap "
           "(its base64 4/3 of it): a CertRep, not 413 (%d)",
           resp.http_status);
        pki_scep_resp_free(&resp);
        {
            /* the same base64 cut into lines of 64 (CR LF): the breaks
             * the decoder skips do not count against the cap */
            size_t          i, k;
            unsigned char  *wr = malloc(blen + blen / 32 + 4);

            for (i = 0, k = 0; i < blen; i++) {
                if (i > 0 && i % 64 == 0) {
                    wr[k++] = '\r';
                    wr[k++] = '\n';
                }
                wr[k++] = b64[i];
            }
            op(&conf, PKI_SCEP_PKIOPERATION, "GET", wr, k, &resp);
            ok(resp.http_status == 200, "GET: that message in lines of "
               "base64: a CertRep, not 413 (%d)", resp.http_status);
            pki_scep_resp_free(&resp);
            free(wr);
        }
        conf.max_body = n - 1;
        op(&conf, PKI_SCEP_PKIOPERATION, "GET", b64, blen, &resp);
        ok(resp.http_status == 413, "GET: a message one byte over the cap: "
           "413 (%d)", resp.http_status);
        pki_scep_resp_free(&resp);
        op(&conf, PKI_SCEP_PKIOPERATION, "POST", der, n, &resp);
        ok(resp.http_status == 413, "POST: the same: 413 (%d)",
           resp.http_status);
        pki_scep_resp_free(&resp);
        conf.max_body = 0;
        free(b64);
    }
    OPENSSL_free(der);
    m.challenge = "s3cret";

    /* ---- CertRep failures (no Redis needed: refused before) ---- */
    m.no_nonce = 0;
    m.corrupt_sig = 1;
    EXPECT_FAIL("bad signature", &conf, &m, 1);
    m.corrupt_sig = 0;
    m.md = EVP_md5();
    EXPECT_FAIL("MD5", &conf, &m, 0);
    m.md = NULL;
    /* a CSR refused by policy before its signature is checked (MD5) gets
     * badMessageCheck like any content that fails: another failInfo would
     * tell a tampered envelope whose CBC padding held from one whose did
     * not (a padding oracle on a captured request, challenge included) */
    m.csr_md = EVP_md5();
    EXPECT_FAIL("a CSR signed with MD5: badMessageCheck, as a broken "
                "content", &conf, &m, 1);
    m.csr_md = NULL;
    m.type = 99;
    EXPECT_FAIL("messageType 99", &conf, &m, 2);
    m.type = 18;
    EXPECT_FAIL("UpdateReq", &conf, &m, 2);
    m.type = 0;
    m.des = 1;
    EXPECT_FAIL("single DES refused", &conf, &m, 0);
    m.des = 0;
    m.challenge = "wrong";
    EXPECT_FAIL("wrong static challenge", &conf, &m, 2);

    /* the CertRep is signed with the request's digest (RFC 8894: the
     * answer in the algorithms the client uses; GetCACaps lists SHA-1,
     * SHA-256 and SHA-512), SHA-224 (accepted, not listed) answered
     * with SHA-256 */
    {
        int            k;
        const EVP_MD  *mds[5];
        const int      want[5] = { NID_sha1, NID_sha256, NID_sha384,
                                   NID_sha512, NID_sha256 };

        mds[0] = EVP_sha1();
        mds[1] = EVP_sha256();
        mds[2] = EVP_sha384();
        mds[3] = EVP_sha512();
        mds[4] = EVP_sha224();

        for (k = 0; k < 5; k++) {
            m.md = mds[k];
            last_md_nid = NID_undef;
            EXPECT_FAIL(EVP_MD_get0_name(mds[k]), &conf, &m, 2);
            ok(last_md_nid == want[k], "  its CertRep signed with %s (%s)",
               OBJ_nid2sn(want[k]), last_md_nid == NID_undef ? "?"
                                    : OBJ_nid2sn(last_md_nid));
        }

        m.md = NULL;
    }
    m.challenge = NULL;
    EXPECT_FAIL("no challenge", &conf, &m, 2);
    m.challenge = "s3cret";
    m.tid = "not-the-key";
    EXPECT_FAIL("transactionID not bound to the key", &conf, &m, 2);
    m.tid = NULL;
    m.signkey = other_k;
    EXPECT_FAIL("signer key is not the CSR key", &conf, &m, 1);
    m.signkey = NULL;
    m.rcpt = bad_ra;
    EXPECT_FAIL("encrypted to another certificate", &conf, &m, 1);
    m.rcpt = ra_x;

    /* RSAES-OAEP key transport (Windows clients): it decrypts (the wrong
     * challenge is seen), a broken OAEP block fails as a broken PKCS#1
     * v1.5 one (badMessageCheck), a label or an unsupported hash is
     * badAlg */
    m.challenge = "wrong";
    m.oaep = EVP_sha1();
    EXPECT_FAIL("OAEP SHA-1 decrypts, wrong challenge", &conf, &m, 2);
    m.oaep_bare = 1;
    EXPECT_FAIL("OAEP without parameters: the defaults", &conf, &m, 2);
    m.oaep_bare = 0;
    m.oaep = EVP_sha256();
    EXPECT_FAIL("OAEP SHA-256 decrypts, wrong challenge", &conf, &m, 2);
    m.oaep = EVP_sha512();
    m.oaep_mgf1 = EVP_sha1();
    EXPECT_FAIL("OAEP SHA-512 MGF1-SHA1 decrypts", &conf, &m, 2);
    m.oaep_mgf1 = NULL;
    /* a requester's key too small for the answer under that OAEP hash
     * (RSA-1024: 128 octets < 2 * 64 + 2 + 16): badAlg before anything is
     * issued, not a certificate that cannot be sent */
    m.key = rsa(1024, 8);
    m.challenge = "s3cret";
    EXPECT_FAIL("OAEP SHA-512 to an RSA-1024 requester", &conf, &m, 0);
    ok(strstr(last_detail, "cannot carry") != NULL,
       "  the detail says why [%s]", last_detail);
    m.oaep = EVP_sha256();
    m.challenge = "wrong";
    EXPECT_FAIL("OAEP SHA-256 to an RSA-1024 requester fits", &conf, &m, 2);
    EVP_PKEY_free(m.key);
    m.key = dev_k;
    m.challenge = "s3cret";
    m.oaep = EVP_sha1();
    m.corrupt_ek = 1;
    EXPECT_FAIL("OAEP SHA-1, broken block", &conf, &m, 1);
    m.oaep = EVP_sha256();
    EXPECT_FAIL("OAEP SHA-256, broken block", &conf, &m, 1);
    m.oaep = NULL;
    EXPECT_FAIL("PKCS#1 v1.5, broken block", &conf, &m, 1);
    m.corrupt_ek = 0;
    m.oaep = EVP_sha256();
    m.oaep_label = 1;
    EXPECT_FAIL("OAEP with a label", &conf, &m, 0);
    m.oaep_label = 0;
    m.oaep = EVP_sha224();
    EXPECT_FAIL("OAEP SHA-224", &conf, &m, 0);
    m.oaep = EVP_sha256();
    m.oaep_mgf1 = EVP_sha224();
    EXPECT_FAIL("OAEP MGF1-SHA224", &conf, &m, 0);
    m.oaep_mgf1 = NULL;
    m.oaep = NULL;

    /* a challengePassword as a BMPString or a UniversalString (RFC 2985
     * DirectoryString; NDES-era clients send BMPString) is read as its
     * UTF-8: one that differs is a wrong challenge, not a malformed one;
     * a NUL, a surrogate or a value past U+10FFFF is malformed (OpenSSL's
     * decoder refuses a BMPString of an odd length itself) */
    {
        static const struct {
            const char  *name;
            int          type;
            const char  *text;          /* as UCS-2/4, or */
            const char  *raw;           /* these octets */
            int          rawlen;
            const char  *detail;
        } cc[] = {
            { "BMPString, another challenge", V_ASN1_BMPSTRING, "s3cre7",
              NULL, 0, "wrong challenge" },
            { "UniversalString, another challenge", V_ASN1_UNIVERSALSTRING,
              "wrong", NULL, 0, "wrong challenge" },
            { "BMPString, non-ASCII, another challenge", V_ASN1_BMPSTRING,
              NULL, "\0s\0\x33\0c\0r\0\xe9\0t", 12,
              "wrong challenge" },
            { "BMPString with a NUL", V_ASN1_BMPSTRING, NULL,
              "\0s\0\x33\0c\0r\0e\0t\0\0", 14,
              "malformed challengePassword" },
            { "BMPString with a surrogate", V_ASN1_BMPSTRING, NULL,
              "\0s\0\x33\xd8\x3d\xde\x00", 8,
              "malformed challengePassword" },
            { "UniversalString past U+10FFFF", V_ASN1_UNIVERSALSTRING,
              NULL, "\0\0\0s\0\x11\0\0", 8,
              "malformed challengePassword" },
            { "BMPString, empty", V_ASN1_BMPSTRING, NULL, "", 0,
              "malformed challengePassword" },
        };
        size_t          k;
        unsigned char   u[2048];

        for (k = 0; k < sizeof(cc) / sizeof(cc[0]); k++) {
            m.chal_type = cc[k].type;
            if (cc[k].text != NULL) {
                m.chal_rawlen = ucs(cc[k].text,
                                    cc[k].type == V_ASN1_BMPSTRING ? 2 : 4,
                                    u);
            } else {
                memcpy(u, cc[k].raw, cc[k].rawlen);
                m.chal_rawlen = cc[k].rawlen;
            }
            m.chal_raw = u;
            s = pkiop(&conf, &m, &f, NULL, &h);
            ok(h == 200 && s == 2 && f == 2
               && strcmp(last_detail, cc[k].detail) == 0,
               "challenge: %s: badRequest, \"%s\" (http %d status %d "
               "fail %d \"%s\")", cc[k].name, cc[k].detail, h, s, f,
               last_detail);
        }

        /* 256 characters: over the cap as a PrintableString is */
        memset(u, 'a', 256);
        u[256] = '\0';
        m.chal_type = V_ASN1_BMPSTRING;
        m.chal_rawlen = ucs((char *) u, 2, u + 300);
        m.chal_raw = u + 300;
        s = pkiop(&conf, &m, &f, NULL, &h);
        ok(h == 200 && s == 2 && f == 2
           && strcmp(last_detail, "malformed challengePassword") == 0,
           "challenge: BMPString of 256 characters: malformed (%s)",
           last_detail);
        m.chal_raw = NULL;
        m.chal_rawlen = 0;
    }
    m.type = 17;
    EXPECT_FAIL("RenewalReq by a self-signed certificate", &conf, &m, 4);
    m.type = 0;
    m.key = ec_k;
    EXPECT_FAIL("EC requester: cannot be answered encrypted", &conf, &m, 0);
    m.key = dev_k;

    /* accepted DES is decrypted (this DES label sits on a 3DES
     * ciphertext), so the failure is not badAlg: the wrong key mostly
     * breaks the CBC padding, and about one time in 256 the padding passes
     * and the garbage inside does not decode: badMessageCheck both */
    conf.accept_des = 1;
    m.des = 1;
    s = pkiop(&conf, &m, &f, NULL, &h);
    ok(h == 200 && s == 2 && f == 1,
       "accepted DES is decrypted: FAILURE badMessageCheck, not badAlg "
       "(http %d status %d fail %d)", h, s, f);
    m.des = 0;
    conf.accept_des = 0;

    /* A content that decrypts (its padding holds) but does not decode
     * gets the failInfo of a broken padding: two would be a padding
     * oracle on a captured request's envelope (its challengePassword) */
    {
        static const unsigned char  junk[] = "sixteen octets!!not a CSR";
        static const int            types[] = { 0, 17, 20, 21, 22 };
        size_t                      i;

        m.inner = junk;
        m.inner_len = (int) sizeof(junk) - 1;
        for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
            m.type = types[i];
            s = pkiop(&conf, &m, &f, NULL, &h);
            ok(h == 200 && s == 2 && f == 1, "messageType %d, content that "
               "decrypts but does not decode: FAILURE badMessageCheck (http "
               "%d status %d fail %d)", types[i] ? types[i] : 19, h, s, f);
        }
        m.inner = NULL;
        m.inner_len = 0;
        m.type = 0;
    }

    /* ---- certificates and CRLs: counted before the message is read ---- */
    {
        int             d2i;
        char            why[256];
        X509           *fill;
        X509_CRL       *crl;
        ASN1_TIME      *now;
        unsigned char  *inner;

        fill = cert("filler", ec_k, NULL, ec_k, 0);
        crl = X509_CRL_new();
        now = ASN1_TIME_set(NULL, time(NULL));
        X509_CRL_set_issuer_name(crl, X509_get_subject_name(fill));
        X509_CRL_set1_lastUpdate(crl, now);
        X509_CRL_sign(crl, ec_k, EVP_sha256());
        ASN1_TIME_free(now);
        m.extra = fill;
        m.crl = crl;
        m.challenge = "wrong";

        /* the signer's certificate with a chain of 9: read as before, by
         * either reader, DER or BER */
        m.nextra = 9;
        EXPECT_FAIL("signer + 9 certificates: read (wrong challenge)",
                    &conf, &m, 2);
        m.type = 99;
        EXPECT_FAIL("messageType 99, signer + 9 certificates: read", &conf,
                    &m, 2);
        m.type = 0;
        h = rawop(&conf, &m, 1, why, sizeof(why), &d2i);
        ok(h == 200, "the same with indefinite lengths: read (%d %s)", h,
           why);
        m.nextra = 0;
        m.ncrl = 1;
        EXPECT_FAIL("a CRL: read (wrong challenge)", &conf, &m, 2);

        /* one more: refused before any reader, which names the count */
        m.nextra = 10;
        m.ncrl = 0;
        h = rawop(&conf, &m, 0, why, sizeof(why), &d2i);
        ok(h == 400 && strstr(why, "carries 11 certificates and 0 CRLs")
           && d2i == 0, "signer + 10 certificates: 400 before reading "
           "(%d %s, d2i_PKCS7 %d)", h, why, d2i);
        h = rawop(&conf, &m, 1, why, sizeof(why), &d2i);
        ok(h == 400 && strstr(why, "carries 11 certificates and 0 CRLs")
           && d2i == 0, "the same with indefinite lengths: 400 (%d %s, "
           "d2i_PKCS7 %d)", h, why, d2i);
        m.nextra = 5;
        m.ncrl = 6;
        h = rawop(&conf, &m, 0, why, sizeof(why), &d2i);
        ok(h == 400 && strstr(why, "carries 6 certificates and 6 CRLs")
           && d2i == 0, "5 certificates and 6 CRLs: 400 (%d %s, d2i_PKCS7 "
           "%d)", h, why, d2i);
        m.type = 20;
        m.nextra = 500;
        m.ncrl = 0;
        h = rawop(&conf, &m, 0, why, sizeof(why), &d2i);
        ok(h == 400 && strstr(why, "carries 501 certificates") && d2i == 0,
           "CertPoll with 501 certificates: 400, d2i_PKCS7 not called "
           "(%d %s, %d)", h, why, d2i);

        /* a SignedData of 200 certificates as the signed content: its
         * type is seen before d2i_PKCS7() would read it */
        m.type = 0;
        m.nextra = 200;
        n = (size_t) build(&m, &inner);
        m.nextra = 0;
        m.content = inner;
        m.content_len = (int) n;
        h = rawop(&conf, &m, 0, why, sizeof(why), &d2i);
        ok(h == 200 && strstr(why, "not an EnvelopedData") && d2i == 0,
           "content a SignedData of 200 certificates: not read (%d %s, "
           "d2i_PKCS7 %d)", h, why, d2i);
        EXPECT_FAIL("... badMessageCheck", &conf, &m, 1);
        m.content = NULL;
        m.content_len = 0;

        /* that SignedData as the contentInfo itself (of type signedData,
         * not id-data): refused by its type before either reader would
         * decode it with its 200 certificates */
        {
            int                   dl;
            PKCS7                *outer, *nested;
            unsigned char        *der;
            pki_scep_resp_t       resp;
            const unsigned char  *q;

            q = inner;
            nested = d2i_PKCS7(NULL, &q, (long) n);
            outer = PKCS7_new();
            der = NULL;
            dl = nested != NULL && outer != NULL
                 && PKCS7_set_type(outer, NID_pkcs7_signed) == 1
                 && PKCS7_set_content(outer, nested) == 1
                 ? i2d_PKCS7(outer, &der) : -1;
            if (dl < 0 || outer == NULL || outer->d.sign->contents != nested) {
                PKCS7_free(nested);
            }
            PKCS7_free(outer);
            ok(dl > 50000, "a SignedData nesting one of 200 certificates "
               "built (%d octets)", dl);
            d2i_p7_calls = 0;
            op(&conf, PKI_SCEP_PKIOPERATION, "POST", der,
               dl > 0 ? (size_t) dl : 0, &resp);
            ok(resp.http_status == 400 && d2i_p7_calls == 0
               && strstr(resp.res.detail, "not a SignedData with content"),
               "... refused by its content type, not read (%d %s, "
               "d2i_PKCS7 %d)", resp.http_status, resp.res.detail,
               d2i_p7_calls);
            pki_scep_resp_free(&resp);
            OPENSSL_free(der);
        }
        OPENSSL_free(inner);

        m.extra = NULL;
        m.crl = NULL;
        m.challenge = "s3cret";
        X509_CRL_free(crl);
        X509_free(fill);
    }

    /* ---- with Redis ---- */
    redis_sock = getenv("PKI_TEST_REDIS_SOCK");
    redis = NULL;
    if (redis_sock && redis_sock[0]) {
        pki_redis_conf_t   rc;
        pki_admin_conf_t   ac;
        pki_admin_req_t    ar;
        pki_admin_resp_t   aresp;
        char               chal[64], *q;

        memset(&rc, 0, sizeof(rc));
        rc.unix_path = redis_sock;
        rc.ns = "scep-test:";
        rc.timeout_ms = 1000;
        pki_result_init(&res);
        redis = pki_redis_new(&rc, &res);
        conf.redis = redis;
        cmode.redis = redis;

        issued = NULL;
        s = pkiop(&conf, &m, &f, &issued, &h);
        ok(s == 0 && issued != NULL, "RA mode: PKCSReq SUCCESS");
        ok(issued && pki_ca_issued(eca, issued), "issued by the EC CA");

        /* the static challenge as a BMPString and as a UniversalString */
        {
            int            k;
            X509          *bc;
            unsigned char  u[64];

            for (k = 0; k < 2; k++) {
                m.chal_type = k ? V_ASN1_UNIVERSALSTRING : V_ASN1_BMPSTRING;
                m.chal_rawlen = ucs("s3cret", k ? 4 : 2, u);
                m.chal_raw = u;
                bc = NULL;
                s = pkiop(&conf, &m, &f, &bc, &h);
                ok(s == 0 && bc != NULL, "challenge as a %s: PKCSReq "
                   "SUCCESS (%s)", k ? "UniversalString" : "BMPString",
                   last_detail);
                X509_free(bc);
            }
            m.chal_raw = NULL;
            m.chal_rawlen = 0;
        }

        /* RSAES-OAEP key transport to the RA's file key */
        {
            int          k;
            const char  *cn0 = m.cn;
            X509        *oc;

            static const char  *kt[] = {
                "RSAES-OAEP SHA1 MGF1-SHA1", "RSAES-OAEP SHA256 MGF1-SHA256",
                "RSAES-OAEP SHA512 MGF1-SHA1"
            };

            m.cn = "oaep";
            for (k = 0; k < 3; k++) {
                m.oaep = k == 0 ? EVP_sha1()
                         : k == 1 ? EVP_sha256() : EVP_sha512();
                m.oaep_mgf1 = k == 2 ? EVP_sha1() : NULL;
                oc = NULL;
                last_kt[0] = '\0';
                s = pkiop(&conf, &m, &f, &oc, &h);
                ok(s == 0 && oc != NULL && pki_ca_issued(eca, oc),
                   "RA mode, OAEP %s: PKCSReq SUCCESS",
                   EVP_MD_get0_name(m.oaep));
                /* a client that chose OAEP gets its reply so */
                ok(strcmp(last_kt, kt[k]) == 0, "RA mode, OAEP %s: the "
                   "reply's key transport is %s (%s)",
                   EVP_MD_get0_name(m.oaep), kt[k], last_kt);
                X509_free(oc);
            }

            /* the hashes with NULL parameters (RFC 4055's generators;
             * OpenSSL leaves them out): the reply names them as the
             * client did, byte for byte */
            m.oaep = EVP_sha256();
            m.oaep_mgf1 = NULL;
            m.oaep_null = 1;
            oc = NULL;
            last_rep_kt_len = 0;
            s = pkiop(&conf, &m, &f, &oc, &h);
            ok(s == 0 && oc != NULL && strcmp(last_kt, kt[1]) == 0,
               "RA mode, OAEP SHA-256 with NULL parameters: SUCCESS (%s)",
               last_kt);
            ok(last_req_kt_len > 0 && last_rep_kt_len == last_req_kt_len
               && memcmp(last_rep_kt, last_req_kt, last_req_kt_len) == 0,
               "  the reply's AlgorithmIdentifier is the request's (%d and "
               "%d octets)", last_req_kt_len, last_rep_kt_len);
            X509_free(oc);
            m.oaep_null = 0;
            m.oaep = NULL;
            m.oaep_mgf1 = NULL;
            m.cn = cn0;

            oc = NULL;
            last_kt[0] = '\0';
            s = pkiop(&conf, &m, &f, &oc, &h);
            ok(s == 0 && oc != NULL && strcmp(last_kt, "rsaEncryption") == 0,
               "RA mode, PKCS#1 v1.5: the reply's too (%s)", last_kt);
            X509_free(oc);
        }

        /* a copy of a message taken once changes nothing */
        {
            int              n2, f1, f2;
            X509            *c1 = NULL, *c2 = NULL;
            pki_scep_resp_t  r1, r2;

            m.cn = "replayed";
            n2 = build(&m, &der);
            op(&conf, PKI_SCEP_PKIOPERATION, "POST", der, (size_t) n2, &r1);
            op(&conf, PKI_SCEP_PKIOPERATION, "POST", der, (size_t) n2, &r2);
            OPENSSL_free(der);
            ok(certrep(&r1, ra_x, dev_k, &f1, &c1) == 0 && c1 != NULL,
               "replay: the message enrolls once");
            ok(certrep(&r2, ra_x, dev_k, &f2, &c2) == 0 && c2 != NULL
               && c1 != NULL
               && ASN1_INTEGER_cmp(X509_get0_serialNumber(c1),
                                   X509_get0_serialNumber(c2)) == 0,
               "replay: its copy (a CertRep lost) gets the same "
               "certificate, not another [%s]", r2.res.log);
            pki_scep_resp_free(&r1);
            pki_scep_resp_free(&r2);
            X509_free(c1);
            X509_free(c2);
            m.cn = "dev";
        }

        /* the replay record is sized by the loosest location of the
         * store: once a location with scep_clock_skew off has taken a
         * message, one taken where the skew is a day is remembered as
         * long as the off location takes its copy (7 days), not a day;
         * where the loosest skew is 3 days, 3 days */
        for (int loose = 0; loose < 2; loose++) {
            int              n2, f1;
            long long        ttl, want;
            X509            *c1;
            pki_scep_conf_t  lconf;
            pki_scep_resp_t  r1;

            lconf = conf;
            lconf.max_skew = loose ? 3 * 86400 : 0;
            want = loose ? 3 * 86400 : 7 * 86400;
            m.cn = "loose";
            n2 = build(&m, &der);
            op(&lconf, PKI_SCEP_PKIOPERATION, "POST", der, (size_t) n2, &r1);
            OPENSSL_free(der);
            c1 = NULL;
            ok(certrep(&r1, ra_x, dev_k, &f1, &c1) == 0 && c1 != NULL,
               "seen: enrolled at the loose location");
            pki_scep_resp_free(&r1);
            X509_free(c1);

            m.cn = "strict";
            n2 = build(&m, &der);
            op(&conf, PKI_SCEP_PKIOPERATION, "POST", der, (size_t) n2, &r1);
            c1 = NULL;
            ok(certrep(&r1, ra_x, dev_k, &f1, &c1) == 0 && c1 != NULL,
               "seen: enrolled where the skew is a day");
            ttl = seen_ttl(redis_sock, der, n2);
            ok(ttl > want && ttl <= want + 300,
               "seen: its replay record lives as long as the %s location "
               "takes a copy (TTL %lld s)", loose ? "3-day" : "off", ttl);
            pki_scep_resp_free(&r1);
            X509_free(c1);
            OPENSSL_free(der);
            m.cn = "dev";

            {
                redisContext  *rcx = redisConnectUnix(redis_sock);

                if (rcx != NULL && rcx->err == 0) {
                    freeReplyObject(redisCommand(rcx, "DEL "
                                    "scep-test:scep:skew_off "
                                    "scep-test:scep:skew_max"));
                }
                if (rcx != NULL) {
                    redisFree(rcx);
                }
            }
        }

        /* a CertRep lost after a one-time challenge was used: the
         * client's resend (a new message: a fresh senderNonce, the same
         * CSR) gets the same certificate, the challenge not judged; a
         * request with another CSR finds the challenge used */
        {
            int              f1, f2;
            char             otc[64];
            X509            *c1 = NULL, *c2 = NULL;

            conf.dynamic = 1;
            ok(new_chal(redis, eca, "{}", otc), "lost reply: a one-time "
               "challenge");
            m.cn = "lost-reply";
            m.challenge = otc;
            s = pkiop(&conf, &m, &f1, &c1, &h);
            ok(s == 0 && c1 != NULL, "lost reply: enrolled");
            s = pkiop(&conf, &m, &f2, &c2, &h);
            ok(s == 0 && c1 != NULL && c2 != NULL
               && ASN1_INTEGER_cmp(X509_get0_serialNumber(c1),
                                   X509_get0_serialNumber(c2)) == 0,
               "lost reply: the resend gets the same certificate (%d %d)",
               s, f2);
            m.cn = "lost-reply-2";
            EXPECT_FAIL("lost reply: another CSR finds the challenge used",
                        &conf, &m, 2);
            X509_free(c1);
            X509_free(c2);
            m.cn = "dev";
            m.challenge = "s3cret";
            conf.dynamic = 0;
        }

        /* the answer to the take of a one-time challenge is lost past
         * the timeout (Redis ran it, then stalled): 503, and the
         * challenge is given back, so that the client's resend enrolls
         * (it was used up, and the resend refused with badRequest) */
        {
            int              f1 = -1, f2 = -1, h1 = 0, h2 = 0, s1, s2;
            char             otc[64];
            proxy_t          px;
            pki_redis_t     *pr;
            pki_scep_conf_t  pconf;
            X509            *c1 = NULL, *c2 = NULL;

            pr = proxied_store(&px, redis_sock, "px-chal.sock");
            pconf = conf;
            pconf.redis = pr;
            pconf.dynamic = 1;
            ok(new_chal(redis, eca, "{}", otc),
               "lost take: a one-time challenge");
            m.cn = "lost-take";
            m.challenge = otc;
            proxy_arm(&px, "PTTL", PX_HOLD, 700);
            s1 = pkiop(&pconf, &m, &f1, &c1, &h1);
            ok(px.fired && h1 == 503, "lost take: 503 (fired %d, http %d, "
               "status %d)", px.fired, h1, s1);
            usleep(800000);
            proxy_arm(&px, "", 0, 0);
            s2 = pkiop(&pconf, &m, &f2, &c2, &h2);
            ok(s2 == 0 && c2 != NULL, "lost take: the resend after the "
               "503 enrolls (http %d status %d fail %d)", h2, s2, f2);
            X509_free(c1);
            X509_free(c2);
            pki_redis_free(pr);
            m.cn = "dev";
            m.challenge = "s3cret";
        }

        /* the answer to the replay record's SET NX is lost past the
         * timeout: 503, and the record (this request's) dropped, so that
         * the same message sent again enrolls (it was refused as a
         * replay) */
        {
            int              n2, f2 = -1, s2;
            unsigned char   *d2;
            proxy_t          px;
            pki_redis_t     *pr;
            pki_scep_conf_t  pconf;
            pki_scep_resp_t  r1, r2;
            X509            *c2 = NULL;

            pr = proxied_store(&px, redis_sock, "px-seen.sock");
            pconf = conf;
            pconf.redis = pr;
            m.cn = "lost-seen";
            n2 = build(&m, &d2);
            proxy_arm(&px, "seen", PX_HOLD, 700);
            op(&pconf, PKI_SCEP_PKIOPERATION, "POST", d2, (size_t) n2, &r1);
            ok(px.fired && r1.http_status == 503, "lost replay record: 503 "
               "(fired %d, http %d) [%s]", px.fired, r1.http_status,
               r1.res.detail);
            usleep(800000);
            proxy_arm(&px, "", 0, 0);
            op(&pconf, PKI_SCEP_PKIOPERATION, "POST", d2, (size_t) n2, &r2);
            s2 = r2.http_status == 200
                 ? certrep(&r2, pconf.ra_cert ? pconf.ra_cert
                                              : pki_ca_cert(pconf.ca),
                           m.key, &f2, &c2) : -1;
            ok(s2 == 0 && c2 != NULL, "lost replay record: the same "
               "message after the 503 enrolls (http %d status %d fail %d) "
               "[%s]", r2.http_status, s2, f2, r2.res.detail);
            pki_scep_resp_free(&r1);
            pki_scep_resp_free(&r2);
            OPENSSL_free(d2);
            X509_free(c2);
            pki_redis_free(pr);
            m.cn = "dev";
        }

        /* issued, but no CertRep can carry it (the RA key fails after
         * the CA key signed): withdrawn, and the message released, so
         * that its resend enrolls */
        {
            int              n2, f1;
            char             hex[41], *sp;
            X509            *c1 = NULL;
            pki_record_t     rec;
            pki_scep_resp_t  r1, r2;

            m.cn = "undelivered";
            n2 = build(&m, &der);
            fail_sign = conf.ra_key;
            op(&conf, PKI_SCEP_PKIOPERATION, "POST", der, (size_t) n2, &r1);
            fail_sign = NULL;
            ok(r1.http_status == 503, "undelivered: 503, not a CertRep "
               "(%d) [%s]", r1.http_status, r1.res.detail);
            sp = strstr(r1.res.log, "issued serial ");
            hex[0] = '\0';
            ok(sp != NULL && sscanf(sp + 14, "%40[0-9A-F]", hex) == 1,
               "undelivered: it was issued [%s]", r1.res.log);
            ok(strstr(r1.res.log, "withdrawn") != NULL,
               "undelivered: the log says withdrawn [%s]", r1.res.log);
            memset(&rec, 0, sizeof(rec));
            pki_result_init(&res);
            s = hex[0] ? pki_record_get(redis, pki_ca_name(eca), hex, &rec,
                                        &res)
                       : PKI_NOT_FOUND;
            ok(s == PKI_OK && rec.status == PKI_CERT_REVOKED
               && rec.reason == 5,
               "undelivered: its record is revoked, cessationOfOperation "
               "(status %d reason %d)", (int) rec.status, rec.reason);
            pki_record_clear(&rec);
            {
                /* marked as a withdrawal: SCEP CertPoll issues a
                 * request anew only after one, never after an
                 * operator's revocation */
                redisContext  *rcx = redisConnectUnix(redis_sock);
                redisReply    *rr = NULL;

                if (rcx != NULL && rcx->err == 0) {
                    rr = redisCommand(rcx, "HGET scep-test:{ca:%s}:cert:%s "
                                      "withdrawn", pki_ca_name(eca), hex);
                }
                ok(rr != NULL && rr->type == REDIS_REPLY_STRING
                   && strcmp(rr->str, "1") == 0,
                   "undelivered: its record is marked withdrawn");
                if (rr != NULL) {
                    freeReplyObject(rr);
                }
                if (rcx != NULL) {
                    redisFree(rcx);
                }
            }
            op(&conf, PKI_SCEP_PKIOPERATION, "POST", der, (size_t) n2, &r2);
            OPENSSL_free(der);
            ok(certrep(&r2, ra_x, dev_k, &f1, &c1) == 0 && c1 != NULL,
               "undelivered: the resent message enrolls [%s]",
               r2.res.detail);
            {
                /* nobody was given the withdrawn certificate, and with
                 * carry=off it may be unlogged: GetCert does not hand
                 * it out (its serial is on the CRL for all to read) */
                int            gs, gf = -1;
                BIGNUM        *bn = NULL;
                ASN1_INTEGER  *ai = NULL;

                if (hex[0] && BN_hex2bn(&bn, hex) > 0) {
                    ai = BN_to_ASN1_INTEGER(bn, NULL);
                }
                gs = ai != NULL
                     ? getcrl_ias(&conf, 21, X509_get_subject_name(eca_x),
                                  ai, dev_k, &gf)
                     : -1;
                ok(gs == 2 && gf == 4, "undelivered: GetCert of the "
                   "withdrawn certificate: FAILURE badCertId (%d %d)", gs,
                   gf);
                gs = c1 != NULL
                     ? getcrl_ias(&conf, 21, X509_get_issuer_name(c1),
                                  X509_get0_serialNumber(c1), dev_k, &gf)
                     : -1;
                ok(gs == 0, "undelivered: GetCert of the certificate of "
                   "the resend: SUCCESS (%d %d)", gs, gf);
                /* RFC 8894 3.3.4: a client's own certificate, for the
                 * holder of its key only */
                gs = c1 != NULL
                     ? getcrl_ias(&conf, 21, X509_get_issuer_name(c1),
                                  X509_get0_serialNumber(c1), other_k, &gf)
                     : -1;
                ok(gs == 2 && gf == 4, "GetCert signed by another key: "
                   "FAILURE badCertId (%d %d)", gs, gf);
                ASN1_INTEGER_free(ai);
                BN_free(bn);
            }
            pki_scep_resp_free(&r1);
            pki_scep_resp_free(&r2);
            X509_free(c1);
            m.cn = "dev";
        }

        /* RenewalReq signed by the issued certificate */
        m.type = 17;
        m.signer = issued;
        m.signkey = dev_k;
        m.key = other_k;
        m.challenge = NULL;
        {
            X509  *renewed = NULL;

            /* the reply goes to the signer: decrypt with its key */
            int    n2;
            pki_scep_resp_t  r2;

            n2 = build(&m, &der);
            op(&conf, PKI_SCEP_PKIOPERATION, "POST", der, (size_t) n2, &r2);
            OPENSSL_free(der);
            s = certrep(&r2, ra_x, dev_k, &f, &renewed);
            ok(s == 0 && renewed && pki_ca_issued(eca, renewed),
               "RenewalReq: SUCCESS [%s]", r2.res.detail);
            pki_scep_resp_free(&r2);
            X509_free(renewed);
        }
        for (int mode = 0; mode < 2; mode++) {
            /* a RenewalReq whose replay record's write went on a
             * connection that closed, before Redis read it (PX_NOSEND)
             * or after Redis ran it (PX_DROP): the client's retry on a
             * new connection answers, the request renews, and its
             * replay record stays: the very same message again is
             * refused (it was dropped as if unsure, and the copy got a
             * second certificate; after PX_DROP the retry read the
             * first try's record as a replay and refused the request) */
            int              n3, fa = -1, fb = -1, sa, sb;
            unsigned char   *d3;
            const char      *mname = mode ? "PX_DROP" : "PX_NOSEND";
            proxy_t          px;
            pki_redis_t     *pr;
            pki_scep_conf_t  pconf;
            pki_scep_resp_t  ra, rb;
            X509            *xa = NULL, *xb = NULL;

            pr = proxied_store(&px, redis_sock,
                               mode ? "px-renew-drop.sock" : "px-renew.sock");
            pconf = conf;
            pconf.redis = pr;
            n3 = build(&m, &d3);
            proxy_arm(&px, "seen", mode ? PX_DROP : PX_NOSEND, 0);
            op(&pconf, PKI_SCEP_PKIOPERATION, "POST", d3, (size_t) n3, &ra);
            sa = ra.http_status == 200 ? certrep(&ra, ra_x, dev_k, &fa, &xa)
                                       : -1;
            ok(px.fired && sa == 0 && xa != NULL, "renewal, replay record's "
               "write cut (%s): renewed (http %d status %d fail %d) [%s]",
               mname, ra.http_status, sa, fa, ra.res.detail);
            op(&conf, PKI_SCEP_PKIOPERATION, "POST", d3, (size_t) n3, &rb);
            sb = rb.http_status == 200 ? certrep(&rb, ra_x, dev_k, &fb, &xb)
                                       : -1;
            ok(sb == 2 && xb == NULL, "renewal, replay record's write cut "
               "(%s): the same message again is refused (status %d fail %d) "
               "[%s]", mname, sb, fb, rb.res.detail);
            pki_scep_resp_free(&ra);
            pki_scep_resp_free(&rb);
            X509_free(xa);
            X509_free(xb);
            OPENSSL_free(d3);
            pki_redis_free(pr);
        }

        /* A PKCSReq signed by the issued certificate and its key, as
         * sscep renews (it has no RenewalReq): judged as a RenewalReq,
         * no challenge; also under manual approval, not held */
        for (int manual = 0; manual < 2; manual++) {
            int              n2;
            char             hex[41];
            X509            *renewed = NULL;
            pki_record_t     rec;
            pki_scep_conf_t  rconf;
            pki_scep_resp_t  r2;

            rconf = conf;
            rconf.manual = manual;
            m.type = 0;
            n2 = build(&m, &der);
            op(&rconf, PKI_SCEP_PKIOPERATION, "POST", der, (size_t) n2,
               &r2);
            OPENSSL_free(der);
            s = certrep(&r2, ra_x, dev_k, &f, &renewed);
            ok(s == 0 && renewed && pki_ca_issued(eca, renewed)
               && X509_NAME_cmp(X509_get_subject_name(renewed),
                                X509_get_subject_name(issued)) == 0
               && EVP_PKEY_eq(X509_get0_pubkey(renewed), other_k) == 1,
               "PKCSReq signed by the issued certificate%s: SUCCESS, the "
               "same subject, the CSR's key (status %d fail %d) [%s]",
               manual ? " (manual approval)" : "", s, f, r2.res.detail);
            ok(strstr(r2.res.log, "a renewal") != NULL,
               "  the log says renewal [%s]", r2.res.log);
            memset(&rec, 0, sizeof(rec));
            pki_result_init(&res);
            hex[0] = '\0';
            if (renewed != NULL) {
                pki_serial_to_hex(X509_get0_serialNumber(renewed), hex);
            }
            s = hex[0] ? pki_record_get(redis, pki_ca_name(eca), hex, &rec,
                                        &res)
                       : PKI_NOT_FOUND;
            ok(s == PKI_OK && rec.requester != NULL
               && strstr(rec.requester, "challenge") == NULL
               && strstr(rec.requester, "dev") != NULL,
               "  its record's requester is the signer, as a RenewalReq's "
               "(%s)", s == PKI_OK ? rec.requester : "no record");
            pki_record_clear(&rec);
            pki_scep_resp_free(&r2);
            X509_free(renewed);
        }

        /* the signer expired: badTime, as for a RenewalReq */
        {
            X509  *old = cert("dev", dev_k, eca_x, eca_k, 0);

            X509_gmtime_adj(X509_getm_notBefore(old), -86400 * 2);
            X509_gmtime_adj(X509_getm_notAfter(old), -86400);
            X509_sign(old, eca_k, EVP_sha256());
            m.signer = old;
            m.type = 17;
            EXPECT_FAIL("RenewalReq signed by an expired certificate",
                        &conf, &m, 3);
            m.type = 0;
            EXPECT_FAIL("PKCSReq signed by an expired issued certificate",
                        &conf, &m, 3);
            X509_free(old);
        }

        /* the signer issued by another CA: badRequest as before (a
         * RenewalReq: badCertId) */
        {
            X509  *foreign = cert("dev", dev_k, ca_x, ca_k, 0);

            m.signer = foreign;
            m.type = 0;
            EXPECT_FAIL("PKCSReq signed by a certificate of another CA",
                        &conf, &m, 2);
            m.type = 17;
            EXPECT_FAIL("RenewalReq signed by a certificate of another CA",
                        &conf, &m, 4);
            X509_free(foreign);
        }

        /* the signer revoked: badRequest, as for a RenewalReq */
        {
            char  hex[41];

            m.signer = issued;
            pki_result_init(&res);
            s = pki_serial_to_hex(X509_get0_serialNumber(issued), hex)
                ? pki_record_revoke(redis, pki_ca_name(eca), hex, 4,
                                    time(NULL), 0, NULL, &res)
                : PKI_INTERNAL;
            ok(s == PKI_OK, "revoke the renewal signer [%s]", res.detail);
            m.type = 17;
            EXPECT_FAIL("RenewalReq signed by a revoked certificate", &conf,
                        &m, 2);
            m.type = 0;
            EXPECT_FAIL("PKCSReq signed by a revoked issued certificate",
                        &conf, &m, 2);
        }

        m.type = 0;
        m.signer = NULL;
        m.signkey = NULL;
        m.key = dev_k;
        m.challenge = "s3cret";
        X509_free(issued);

        issued = NULL;
        m.rcpt = ca_x;
        s = pkiop(&cmode, &m, &f, &issued, &h);
        m.rcpt = ra_x;
        ok(s == 0 && issued && pki_ca_issued(ca, issued), "CA mode: PKCSReq "
           "SUCCESS");
        ok(last_md_nid == NID_sha256, "  its CertRep signed with SHA-256, "
           "as the request (%s)", OBJ_nid2sn(last_md_nid));

        /* a success in SHA-512 and in SHA-1 (the RA is the CA here) */
        {
            X509  *i2;

            m.rcpt = ca_x;
            m.md = EVP_sha512();
            i2 = NULL;
            s = pkiop(&cmode, &m, &f, &i2, &h);
            ok(s == 0 && i2 != NULL && last_md_nid == NID_sha512,
               "CA mode: PKCSReq in SHA-512: SUCCESS, its CertRep signed "
               "with SHA-512 (%s)", OBJ_nid2sn(last_md_nid));
            X509_free(i2);
            m.md = EVP_sha1();
            i2 = NULL;
            s = pkiop(&cmode, &m, &f, &i2, &h);
            ok(s == 0 && i2 != NULL && last_md_nid == NID_sha1,
               "CA mode: PKCSReq in SHA-1: SUCCESS, its CertRep signed "
               "with SHA-1 (%s)", OBJ_nid2sn(last_md_nid));
            X509_free(i2);
            m.md = NULL;
            m.rcpt = ra_x;
        }
        s = issued ? getcrl(&cmode, issued, dev_k, &f) : -1;
        ok(s == 0, "GetCRL: SUCCESS (the CA has cRLSign) %d %d", s, f);

        /* the CRL a GetCRL answered with is kept: the next ones ask the
         * store whether it is still current (its meta) and read no DER;
         * a revocation makes another, which is then kept */
        {
            int                k, good;
            char               hex[41];
            long long          n0, n1, idle;
            redisContext      *rc;

            rc = redisConnectUnix(redis_sock);
            n0 = crl_number(rc, "scep-test:", pki_ca_name(ca));
            sleep(2);
            good = 0;
            for (k = 0; k < 3; k++) {
                good += getcrl(&cmode, issued, dev_k, &f) == 0;
            }
            idle = crl_der_idle(rc, "scep-test:", pki_ca_name(ca), n0);
            ok(good == 3 && n0 > 0 && idle >= 2, "three GetCRLs more: "
               "SUCCESS (%d of 3), the CRL kept: its DER not read from the "
               "store (idle %lld s)", good, idle);

            pki_result_init(&res);
            s = pki_serial_to_hex(X509_get0_serialNumber(issued), hex)
                ? pki_record_revoke(redis, pki_ca_name(ca), hex, 1,
                                    time(NULL), 0, NULL, &res)
                : PKI_INTERNAL;
            ok(s == PKI_OK, "a revocation [%s]", res.detail);

            good = getcrl(&cmode, issued, dev_k, &f) == 0;
            n1 = crl_number(rc, "scep-test:", pki_ca_name(ca));
            ok(good && n1 > n0, "GetCRL after it: SUCCESS, a new CRL "
               "(number %lld, then %lld)", n0, n1);

            sleep(2);
            good = getcrl(&cmode, issued, dev_k, &f) == 0;
            idle = crl_der_idle(rc, "scep-test:", pki_ca_name(ca), n1);
            ok(good && idle >= 2 && crl_number(rc, "scep-test:",
                                               pki_ca_name(ca)) == n1,
               "the next one answers with the new CRL, kept (idle %lld s)",
               idle);

            redisFree(rc);
        }
        X509_free(issued);

        /* GetCRL naming the CA certificate (sscep: the CA's subject and
         * its certificate's serial; older clients: the certificate's own
         * IssuerAndSerialNumber), for a root and for a CA under it */
        {
            X509             *sx;
            X509_NAME        *fn;
            pki_ca_t         *sca;
            pki_scep_conf_t   sconf;

            s = getcrl(&cmode, ca_x, dev_k, &f);
            ok(s == 0, "GetCRL naming the root CA's certificate: SUCCESS "
               "(%d %d)", s, f);
            s = getcrl_ias(&cmode, 21, X509_get_subject_name(ca_x),
                           X509_get0_serialNumber(ca_x), dev_k, &f);
            ok(s == 2 && f == 4, "GetCert of the CA certificate: FAILURE "
               "badCertId, as before (%d %d)", s, f);

            sx = cert("SCEP Test Sub CA", other_k, ca_x, ca_k, 1);
            sca = make_ca("subca", sx, other_key, t);
            sconf = cmode;
            sconf.ca = sca;
            s = getcrl_ias(&sconf, 22, X509_get_subject_name(sx),
                           X509_get0_serialNumber(sx), dev_k, &f);
            ok(s == 0, "sub CA: GetCRL with its subject and its "
               "certificate's serial (sscep): SUCCESS (%d %d)", s, f);
            s = getcrl(&sconf, sx, dev_k, &f);
            ok(s == 0, "sub CA: GetCRL with its certificate's own "
               "IssuerAndSerialNumber: SUCCESS (%d %d)", s, f);
            fn = X509_NAME_new();
            X509_NAME_add_entry_by_txt(fn, "CN", MBSTRING_ASC,
                                       (const unsigned char *) "Foreign CA",
                                       -1, -1, 0);
            s = getcrl_ias(&sconf, 22, fn, X509_get0_serialNumber(sx), dev_k,
                           &f);
            ok(s == 2 && f == 4, "sub CA: GetCRL with a foreign issuer and "
               "its certificate's serial: FAILURE badCertId (%d %d)", s, f);
            s = getcrl_ias(&sconf, 22, X509_get_subject_name(sx),
                           X509_get0_serialNumber(ca_x), dev_k, &f);
            ok(s == 2 && f == 4, "sub CA: GetCRL with its subject and "
               "another serial: FAILURE badCertId (%d %d)", s, f);
            X509_NAME_free(fn);
            pki_ca_free(sca);
            X509_free(sx);
        }

        /* a CA whose keyUsage lacks cRLSign: its CRL would verify
         * nowhere, none is signed */
        {
            X509             *nx;
            pki_ca_t         *nca;
            pki_scep_conf_t   nconf;

            nx = cert("SCEP Test RSA CA without cRLSign", ca_k, NULL, ca_k,
                      2);
            nca = make_ca("nocrl", nx, ca_key, t);
            ok(!pki_ca_signs_crls(nca) && pki_ca_signs_crls(ca),
               "pki_ca_signs_crls: not without cRLSign");
            nconf = cmode;
            nconf.ca = nca;
            issued = NULL;
            m.rcpt = nx;
            s = pkiop(&nconf, &m, &f, &issued, &h);
            m.rcpt = ra_x;
            ok(s == 0 && issued && pki_ca_issued(nca, issued),
               "CA without cRLSign: PKCSReq SUCCESS");
            s = issued ? getcrl(&nconf, issued, dev_k, &f) : -1;
            ok(s == 2 && f == 2, "CA without cRLSign: GetCRL FAILURE "
               "badRequest, no CRL signed (%d %d)", s, f);
            X509_free(issued);
            pki_ca_free(nca);
            X509_free(nx);
        }

        /* a CA that ends while it serves: GetCRL answers its last CRL
         * (cut to the CA's end) while that is valid, then, as the CRL
         * location does, HTTP 503 with Retry-After (no CRL is signed by
         * an expired CA), not 500 */
        {
            int               h2;
            X509             *ex;
            X509_CRL         *xcrl;
            pki_ca_t         *xca;
            pki_scep_conf_t   xconf;

            ex = cert("SCEP Test CA ending soon", ca_k, NULL, ca_k, 1);
            X509_gmtime_adj(X509_getm_notAfter(ex), 90);
            X509_sign(ex, ca_k, EVP_sha256());
            xca = make_ca("endca", ex, ca_key, t);
            xconf = cmode;
            xconf.ca = xca;

            s = getcrl(&xconf, ex, dev_k, &f);
            ok(s == 0, "CA ending in 90 s: GetCRL SUCCESS (%d %d)", s, f);

            clock_ahead = 60;
            s = getcrl(&xconf, ex, dev_k, &f);
            ok(s == 0, "  30 s before its end: SUCCESS, its last CRL "
               "(%d %d)", s, f);

            pki_result_init(&res);
            xcrl = NULL;
            {
                pki_crl_info_t  ci;

                memset(&ci, 0, sizeof(ci));
                if (pki_crl_current(xca, redis, 86400, 0, &ci, &res)
                    == PKI_OK && ci.der != NULL)
                {
                    const unsigned char  *q = ci.der;

                    xcrl = d2i_X509_CRL(NULL, &q, (long) ci.len);
                }
                free(ci.der);
            }
            ok(xcrl != NULL && ASN1_TIME_compare(
                   X509_CRL_get0_nextUpdate(xcrl),
                   X509_get0_notAfter(ex)) == 0,
               "  whose nextUpdate is the CA's notAfter");
            X509_CRL_free(xcrl);

            clock_ahead = 150;
            {
                msg_t                     gm;
                unsigned char            *gder;
                PKCS7_ISSUER_AND_SERIAL  *ias;

                ias = PKCS7_ISSUER_AND_SERIAL_new();
                X509_NAME_set(&ias->issuer, X509_get_subject_name(ex));
                ASN1_INTEGER_free(ias->serial);
                ias->serial = ASN1_INTEGER_dup(X509_get0_serialNumber(ex));
                gder = NULL;
                memset(&gm, 0, sizeof(gm));
                gm.type = 22;
                gm.key = dev_k;
                gm.cn = "getcrl";
                gm.rcpt = ex;
                gm.inner_len = i2d_PKCS7_ISSUER_AND_SERIAL(ias, &gder);
                gm.inner = gder;
                PKCS7_ISSUER_AND_SERIAL_free(ias);
                h2 = 0;
                s = pkiop(&xconf, &gm, &f, NULL, &h2);
                OPENSSL_free(gder);
            }
            ok(s == -1 && h2 == 503 && last_retry_after > 0
               && strstr(last_detail, "has expired") != NULL,
               "  past its end: HTTP 503 with Retry-After %d, no CRL "
               "(HTTP %d: %s)", last_retry_after, h2, last_detail);
            clock_ahead = 0;

            pki_ca_free(xca);
            X509_free(ex);
        }

        /* one-time challenge through the admin API */
        memset(&ac, 0, sizeof(ac));
        ac.redis = redis;
        ac.cas = &eca;
        ac.ncas = 1;
        memset(&ar, 0, sizeof(ar));
        ar.method = "POST";
        ar.path = "scep/challenges";
        ar.path_len = strlen(ar.path);
        ar.body = (const unsigned char *) "{\"ttl\": 60, \"cn\": \"dev\"}";
        ar.body_len = strlen((const char *) ar.body);
        ar.identity = "admin";
        pki_admin_handle(&ac, &ar, &aresp);
        chal[0] = '\0';
        q = aresp.body ? strstr((char *) aresp.body, "\"challenge\":\"")
                       : NULL;
        if (q) {
            snprintf(chal, 33, "%s", q + 13);
        }
        ok(aresp.http_status == 201 && strlen(chal) == 32,
           "admin: one-time challenge [%s]", chal);
        {
            /* printed whole into a body of its own, marked secret (the
             * server wipes its copies), every member there */
            cJSON  *j = aresp.body ? cJSON_ParseWithLength(
                            (const char *) aresp.body, aresp.body_len)
                                   : NULL;
            cJSON  *c = cJSON_GetObjectItemCaseSensitive(j, "challenge");
            cJSON  *t = cJSON_GetObjectItemCaseSensitive(j, "ttl");
            cJSON  *n = cJSON_GetObjectItemCaseSensitive(j, "cn");

            ok(aresp.secret == 1 && cJSON_IsString(c)
               && strcmp(c->valuestring, chal) == 0
               && cJSON_IsNumber(t) && t->valuedouble == 60
               && cJSON_IsString(n) && strcmp(n->valuestring, "dev") == 0
               && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "id"))
               && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j,
                                                            "expires"))
               && strlen((const char *) aresp.body) == aresp.body_len,
               "admin: the challenge's answer is whole and marked secret "
               "(secret %d, %.*s)", aresp.secret, (int) aresp.body_len,
               aresp.body ? (const char *) aresp.body : "");
            cJSON_Delete(j);
        }
        pki_admin_resp_free(&aresp);

        conf.challenge = NULL;
        conf.challenge_len = 0;
        conf.dynamic = 1;
        m.challenge = chal;
        m.cn = "someone-else";
        EXPECT_FAIL("one-time challenge bound to another CN", &conf, &m, 2);
        m.cn = "dev";
        s = pkiop(&conf, &m, &f, NULL, &h);
        ok(s == 0, "one-time challenge: used once");
        s = pkiop(&conf, &m, &f, NULL, &h);
        ok(s == 0, "one-time challenge: the same request again (a CertRep "
           "lost) gets its certificate");
        m.key = other_k;
        EXPECT_FAIL("one-time challenge: reuse by another key", &conf, &m, 2);

        /* bound to a CA: taken only where that CA issues */
        ok(new_chal(redis, ca, "{\"ca\": \"rsaca\"}", chal),
           "admin: a challenge bound to CA rsaca");
        m.challenge = chal;
        EXPECT_FAIL("one-time challenge bound to another CA", &conf, &m, 2);
        ok(new_chal(redis, eca, "{\"ca\": \"ecca\"}", chal),
           "admin: a challenge bound to CA ecca");
        s = pkiop(&conf, &m, &f, NULL, &h);
        ok(s == 0, "one-time challenge bound to this CA: used");
        m.key = dev_k;

        /* a CN binding compares characters: a BMPString whose octets are
         * "dev\0\0a\0d\0m\0i\0n" is "\u6465\u7600admin", not "dev";
         * a BMPString "dev" is "dev" */
        {
            static const unsigned char  bmp_nul[] = {
                'd', 'e', 'v', 0, 0, 'a', 0, 'd', 0, 'm', 0, 'i', 0, 'n'
            };
            static const unsigned char  bmp_dev[] = {
                0, 'd', 0, 'e', 0, 'v'
            };

            ok(new_chal(redis, eca, "{\"ttl\": 60, \"cn\": \"dev\"}",
                        chal), "admin: a challenge bound to CN dev");
            m.challenge = chal;
            m.cn_type = V_ASN1_BMPSTRING;
            m.cn_raw = bmp_nul;
            m.cn_rawlen = sizeof(bmp_nul);
            EXPECT_FAIL("one-time challenge bound to CN dev: a BMPString "
                        "CN whose octets start with dev\\0", &conf, &m, 2);
            m.cn_raw = bmp_dev;
            m.cn_rawlen = sizeof(bmp_dev);
            s = pkiop(&conf, &m, &f, NULL, &h);
            ok(s == 0, "one-time challenge bound to CN dev: a BMPString "
               "CN dev enrolls (%d)", s);
            m.cn_raw = NULL;
            m.cn_type = 0;
        }

        /* a SAN binding: a URI and an email local part as they are, DNS
         * names and email domains in any case, IP addresses by value */
        {
            static const struct {
                const char  *bound;
                const char  *san;
                int          want;      /* 0 SUCCESS, 2 FAILURE */
            } sc[] = {
                { "URI:spiffe://td/ns/prod/sa/web",
                  "URI:spiffe://td/NS/PROD/SA/WEB", 2 },
                { "URI:spiffe://td/ns/prod/sa/web",
                  "URI:spiffe://td/ns/prod/sa/web", 0 },
                { "email:Dev.Ops@Example.com",
                  "email:dev.ops@example.com", 2 },
                { "email:Dev.Ops@Example.com",
                  "email:Dev.Ops@EXAMPLE.COM", 0 },
                { "DNS:Dev.Example.com, IP:2001:DB8::1",
                  "DNS:dev.example.COM,IP:2001:db8:0:0::1", 0 },
                { "IP:192.0.2.1", "IP:192.0.2.10", 2 },
            };
            char    body[160];
            size_t  k;

            for (k = 0; k < sizeof(sc) / sizeof(sc[0]); k++) {
                snprintf(body, sizeof(body), "{\"ttl\": 60, \"san\": "
                         "\"%s\"}", sc[k].bound);
                new_chal(redis, eca, body, chal);
                m.challenge = chal;
                m.san = sc[k].san;
                s = pkiop(&conf, &m, &f, NULL, &h);
                ok(h == 200 && s == sc[k].want
                   && (s == 0 || f == 2),
                   "one-time challenge bound to %s, request with %s: %s "
                   "(http %d status %d fail %d)", sc[k].bound, sc[k].san,
                   sc[k].want ? "FAILURE badRequest" : "SUCCESS", h, s, f);
            }
            m.san = NULL;
        }

        ar.body = (const unsigned char *) "{\"ttl\": 0}";
        ar.body_len = strlen((const char *) ar.body);
        pki_admin_handle(&ac, &ar, &aresp);
        ok(aresp.http_status == 400, "admin: ttl 0 refused");
        pki_admin_resp_free(&aresp);

        /* a binding spelt otherwise, or null or empty, would make a
         * challenge bound to nothing: refused, nothing stored */
        {
            static const char  *bad[] = {
                "{\"CA\": \"factory-a\", \"common_name\": \"dev1\"}",
                "{\"ttl\": 60, \"Cn\": \"dev1\"}",
                "{\"cn\": null}",
                "{\"ca\": \"\"}",
                "{\"ttl\": 1.9}",
                /* a binding no enrollment meets: a CA or a template
                 * misspelt, a SAN of no type or no value */
                "{\"ca\": \"ECCA\"}",
                "{\"template\": \"no-such-template\"}",
                "{\"san\": \"bogus\"}",
                "{\"san\": \"DNS:a.example, dns:\"}",
                "{\"san\": \"IP:10.0.0\"}",
                "{\"san\": \"RID:1.2.3\"}",
                /* not UTF-8: stored, the 201 would not be JSON */
                "{\"cn\": \"\xff\xfe\"}",
                "{\"cn\": \"dev\xc0\xaf\"}",
            };
            size_t               i;

            for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                ar.body = (const unsigned char *) bad[i];
                ar.body_len = strlen(bad[i]);
                pki_admin_handle(&ac, &ar, &aresp);
                ok(aresp.http_status == 400,
                   "admin: scep/challenges %s refused (%d)",
                   bad[i], aresp.http_status);
                pki_admin_resp_free(&aresp);
            }
        }

        /* a second object after the first: refused, as everywhere in
         * the admin API; whitespace after it is not */
        ar.body = (const unsigned char *) "{\"ttl\": 60} {\"ttl\": 1}";
        ar.body_len = strlen((const char *) ar.body);
        pki_admin_handle(&ac, &ar, &aresp);
        ok(aresp.http_status == 400 && aresp.body != NULL
           && strstr((char *) aresp.body, "trailing data") != NULL,
           "admin: scep/challenges with trailing data refused (%d)",
           aresp.http_status);
        pki_admin_resp_free(&aresp);
        ar.body = (const unsigned char *) "{\"ttl\": 60} \r\n";
        ar.body_len = strlen((const char *) ar.body);
        pki_admin_handle(&ac, &ar, &aresp);
        ok(aresp.http_status == 201,
           "admin: scep/challenges with whitespace after it: 201 (%d)",
           aresp.http_status);
        pki_admin_resp_free(&aresp);
        conf.dynamic = 0;
        conf.challenge = (const unsigned char *) "s3cret";
        conf.challenge_len = 6;
        m.challenge = "s3cret";

        /* manual approval: listed while pending, gone once approved */
        {
            char   tid[80], body[160], *t0, *t1;

            conf.manual = 1;
            m.cn = "pending-dev";
            s = pkiop(&conf, &m, &f, NULL, &h);
            ok(s == 3, "manual: PKCSReq PENDING (%d)", s);

            /* a copy of a message whose pending record is gone (expired
             * by scep_pending_ttl, shorter than the replay record's
             * life): refused as a replay, nothing queued again */
            {
                int              n2, f1, f2, s1, s2;
                pki_scep_resp_t  r1, r2;

                m.cn = "pend-gone";
                m.tid = "pend-gone-tid";
                conf.tid_any = 1;
                conf.pending_ttl = 1;
                n2 = build(&m, &der);
                op(&conf, PKI_SCEP_PKIOPERATION, "POST", der, (size_t) n2,
                   &r1);
                s1 = certrep(&r1, ra_x, dev_k, &f1, NULL);
                sleep(2);
                op(&conf, PKI_SCEP_PKIOPERATION, "POST", der, (size_t) n2,
                   &r2);
                s2 = certrep(&r2, ra_x, dev_k, &f2, NULL);
                OPENSSL_free(der);
                ok(s1 == 3 && s2 == 2 && f2 == 2
                   && strstr(r2.res.detail, "replayed") != NULL,
                   "manual: the copy of a message whose request expired: "
                   "FAILURE badRequest, not queued again (%d, %d %d: %s)",
                   s1, s2, f2, r2.res.detail);
                pki_scep_resp_free(&r1);
                pki_scep_resp_free(&r2);
                conf.pending_ttl = 0;
                conf.tid_any = 0;
                m.tid = NULL;
                m.cn = "pending-dev";
            }

            /* one transactionID, one request: another key's is refused,
             * not answered PENDING as a resend of the first */
            conf.tid_any = 1;
            m.tid = "shared-tid";
            s = pkiop(&conf, &m, &f, NULL, &h);
            ok(s == 3, "manual, tid any: PKCSReq PENDING (%d)", s);
            m.key = other_k;
            EXPECT_FAIL("manual, tid any: the same transactionID, another "
                        "key", &conf, &m, 2);
            m.key = dev_k;
            s = pkiop(&conf, &m, &f, NULL, &h);
            ok(s == 3, "manual, tid any: a resend of the first key: PENDING "
               "(%d)", s);
            m.tid = NULL;
            conf.tid_any = 0;

            /* with a one-time challenge, the pending record's write not
             * sent (Redis out of reach): 503, and the challenge given
             * back, so that the client's retry is PENDING; written but
             * unanswered, it would stay used (t/fault_lost_reply.t's
             * kind of loss: the record may be there) */
            {
                char  otc[64];

                conf.dynamic = 1;
                ok(new_chal(redis, eca, "{}", otc), "manual: a one-time "
                   "challenge");
                m.cn = "pend-unsent";
                m.challenge = otc;
                m.key = other_k;    /* dev_k has a pending request */
                fail_pend = 1;
                s = pkiop(&conf, &m, &f, NULL, &h);
                fail_pend = 0;
                ok(s == -1 && h == 503, "manual: the pending record not "
                   "written: HTTP %d (%d)", h, s);
                s = pkiop(&conf, &m, &f, NULL, &h);
                ok(s == 3, "manual: the retry with the same one-time "
                   "challenge is PENDING (%d, HTTP %d)", s, h);
                m.key = dev_k;
                m.cn = "pending-dev";
                m.challenge = "s3cret";
                conf.dynamic = 0;
            }

            /* scep_pending_max: a full approval queue takes no new
             * request (FAILURE badRequest, its one-time challenge given
             * back); a resend of a waiting one is still PENDING */
            {
                char       otc[64];
                EVP_PKEY  *new_k = rsa(2048, 5);

                conf.pending_max = 2;
                conf.dynamic = 1;
                ok(new_chal(redis, eca, "{}", otc), "queue full: a one-time "
                   "challenge");
                m.cn = "pend-full";
                m.challenge = otc;
                m.key = new_k;
                EXPECT_FAIL("queue full (3 waiting, scep_pending_max 2): a "
                            "new request", &conf, &m, 2);
                conf.dynamic = 0;
                m.key = dev_k;
                m.cn = "pending-dev";
                m.challenge = "s3cret";
                s = pkiop(&conf, &m, &f, NULL, &h);
                ok(s == 3, "queue full: a resend of a waiting request is "
                   "PENDING (%d)", s);

                conf.pending_max = 0;
                conf.dynamic = 1;
                m.cn = "pend-full";
                m.challenge = otc;
                m.key = new_k;
                s = pkiop(&conf, &m, &f, NULL, &h);
                ok(s == 3, "no cap: the same one-time challenge, given back, "
                   "queues it (%d)", s);
                conf.dynamic = 0;

                /* decided requests leave a full queue: "pend-full"
                 * rejected, 4 in the index, a cap of 4 takes one more */
                {
                    redisContext  *rcx = redisConnectUnix(redis_sock);
                    redisReply    *rr = NULL;
                    EVP_PKEY      *after_k = rsa(2048, 6);

                    if (rcx != NULL && rcx->err == 0) {
                        rr = redisCommand(rcx, "EVAL %s 0 %s",
                            "local n = 0 "
                            "for _, k in ipairs(redis.call('KEYS', ARGV[1]))"
                            " do local sj = redis.call('HGET', k, 'subject')"
                            " if sj and string.find(sj, 'pend-full', 1, "
                            "true) then redis.call('HSET', k, 'status', "
                            "'rejected') n = n + 1 end end return n",
                            "scep-test:scep:pend:*");
                    }
                    ok(rr != NULL && rr->type == REDIS_REPLY_INTEGER
                       && rr->integer == 1, "queue full: pend-full "
                       "rejected");
                    if (rr != NULL) {
                        freeReplyObject(rr);
                    }
                    if (rcx != NULL) {
                        redisFree(rcx);
                    }

                    conf.pending_max = 4;
                    m.cn = "pend-after";
                    m.key = after_k;
                    m.challenge = "s3cret";
                    s = pkiop(&conf, &m, &f, NULL, &h);
                    ok(s == 3, "queue full: a decided request left it, the "
                       "next is PENDING (%d)", s);
                    conf.pending_max = 0;
                    EVP_PKEY_free(after_k);
                }

                /* an index of another type: the request fails whole (no
                 * record left unlisted), under a cap or not */
                {
                    redisContext  *rcx = redisConnectUnix(redis_sock);
                    redisReply    *rr = NULL;
                    long long      n0 = -1, n1 = -2;
                    const char    *cnt = "local n = 0 for _, k in ipairs("
                        "redis.call('KEYS', 'scep-test:scep:pend:*')) do "
                        "local sj = redis.call('HGET', k, 'subject') "
                        "if sj and string.find(sj, 'pend-wrongtype', 1, "
                        "true) then n = n + 1 end end return n";

                    if (rcx != NULL && rcx->err == 0) {
                        freeReplyObject(redisCommand(rcx, "RENAME "
                            "scep-test:scep:pending scep-test:keep"));
                        freeReplyObject(redisCommand(rcx, "SET "
                            "scep-test:scep:pending x"));
                        rr = redisCommand(rcx, "EVAL %s 0", cnt);
                        n0 = rr != NULL && rr->type == REDIS_REPLY_INTEGER
                             ? rr->integer : -1;
                        freeReplyObject(rr);
                    }
                    m.cn = "pend-wrongtype";
                    m.key = new_k;
                    conf.tid_any = 1;       /* a transactionID of no record */
                    m.tid = "wrongtype-tid";
                    s = pkiop(&conf, &m, &f, NULL, &h);
                    m.tid = NULL;
                    conf.tid_any = 0;
                    if (rcx != NULL && rcx->err == 0) {
                        rr = redisCommand(rcx, "EVAL %s 0", cnt);
                        n1 = rr != NULL && rr->type == REDIS_REPLY_INTEGER
                             ? rr->integer : -2;
                        freeReplyObject(rr);
                        freeReplyObject(redisCommand(rcx, "DEL "
                            "scep-test:scep:pending"));
                        freeReplyObject(redisCommand(rcx, "RENAME "
                            "scep-test:keep scep-test:scep:pending"));
                        redisFree(rcx);
                    }
                    ok(s == -1 && h == 503 && n0 == 0 && n1 == 0, "an index "
                       "of another type: HTTP %d, nothing written (%lld, "
                       "%lld)", h, n0, n1);
                }

                m.key = dev_k;
                m.cn = "pending-dev";
                m.challenge = "s3cret";
                EVP_PKEY_free(new_k);
            }
            conf.manual = 0;

            ar.method = "GET";
            ar.path = "scep/pending";
            ar.path_len = strlen(ar.path);
            ar.body = NULL;
            ar.body_len = 0;
            ar.query = "limit=10";
            ar.query_len = strlen(ar.query);
            pki_admin_handle(&ac, &ar, &aresp);
            tid[0] = '\0';
            t0 = aresp.body ? strstr((char *) aresp.body,
                                     "\"transaction_id\":\"") : NULL;
            t1 = t0 ? strchr(t0 + 18, '"') : NULL;
            if (t1 && t1 - (t0 + 18) < (long) sizeof(tid)) {
                memcpy(tid, t0 + 18, t1 - (t0 + 18));
                tid[t1 - (t0 + 18)] = '\0';
            }
            ok(aresp.http_status == 200 && tid[0] != '\0'
               && strstr((char *) aresp.body, "CN=pending-dev") != NULL
               && strstr((char *) aresp.body, "csr") == NULL,
               "admin: scep/pending lists it [%s]", tid);
            pki_admin_resp_free(&aresp);

            ar.query = "limit=0";
            ar.query_len = strlen(ar.query);
            pki_admin_handle(&ac, &ar, &aresp);
            ok(aresp.http_status == 400, "admin: scep/pending limit=0: 400");
            pki_admin_resp_free(&aresp);
            ar.query = "cursor=000000000001:zz";
            ar.query_len = strlen(ar.query);
            pki_admin_handle(&ac, &ar, &aresp);
            ok(aresp.http_status == 400, "admin: scep/pending bad cursor: "
               "400");
            pki_admin_resp_free(&aresp);

            snprintf(body, sizeof(body), "{\"transaction_id\": \"%s\"}", tid);
            ar.method = "POST";
            ar.path = "scep/approve";
            ar.path_len = strlen(ar.path);
            ar.query = NULL;
            ar.query_len = 0;
            ar.body = (const unsigned char *) body;
            ar.body_len = strlen(body);
            pki_admin_handle(&ac, &ar, &aresp);
            ok(aresp.http_status == 200, "admin: approve it");
            pki_admin_resp_free(&aresp);

            ar.method = "GET";
            ar.path = "scep/pending";
            ar.path_len = strlen(ar.path);
            ar.body = NULL;
            ar.body_len = 0;
            pki_admin_handle(&ac, &ar, &aresp);
            ok(aresp.http_status == 200 && aresp.body
               && strstr((char *) aresp.body, tid) == NULL,
               "admin: approved: no longer listed");
            pki_admin_resp_free(&aresp);
            m.cn = "dev";
        }
    } else {
        diag("PKI_TEST_REDIS_SOCK not set: enrollment skipped");
    }

    /* ---- the RA key in a PKCS#11 token ---- */
    {
        const char   *sconf = getenv("PKI_TEST_SOFTHSM_CONF");
        const char   *mod = getenv("PKI_TEST_P11_MODULE");
        const char   *tok = getenv("PKI_TEST_TOKEN");
        const char   *pinf = getenv("PKI_TEST_PIN_FILE");
        const char   *uri = getenv("PKI_TEST_KEY_URI_RSA");
        pki_vault_t  *v;
        pki_key_t    *tk;

        if (sconf && mod && tok && pinf && uri) {
            int             i;
            unsigned char   ct[512], pt[32], *outp;
            size_t          ctl, outl;
            EVP_PKEY_CTX   *pc;
            X509           *tra;
            pki_scep_conf_t tconf;

            setenv("SOFTHSM2_CONF", sconf, 1);
            pki_result_init(&res);
            v = pki_vault_new("t", mod, tok, pinf, &res);
            tk = v ? pki_key_new(uri, v, &res) : NULL;
            ok(tk && pki_vault_open(v, &res) == PKI_OK
               && pki_key_open(tk, &res) == PKI_OK, "token RSA key opens "
               "[%s]", res.detail);

            RAND_bytes(pt, sizeof(pt));
            pc = EVP_PKEY_CTX_new(pki_key_public(tk), NULL);
            ctl = sizeof(ct);
            EVP_PKEY_encrypt_init(pc);
            EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING);
            EVP_PKEY_encrypt(pc, ct, &ctl, pt, sizeof(pt));
            EVP_PKEY_CTX_free(pc);

            pki_result_init(&res);
            ok(pki_key_decrypt(tk, ct, ctl, &outp, &outl, &res) == PKI_OK
               && outl == sizeof(pt) && memcmp(outp, pt, outl) == 0,
               "pki_key_decrypt in the token [%s]", res.detail);
            if (res.status == PKI_OK) {
                free(outp);
            }
            ct[ctl - 1] ^= 0x5a;
            pki_result_init(&res);
            is_status(pki_key_decrypt(tk, ct, ctl, &outp, &outl, &res),
                      PKI_MALFORMED, "token: a bad ciphertext is the "
                      "input's fault");
            diag("bad ciphertext: %s (%s)", res.detail, res.log);
            pki_result_init(&res);
            is_status(pki_key_decrypt(tk, ct, 3, &outp, &outl, &res),
                      PKI_MALFORMED, "token: a short ciphertext");
            diag("short: %s (%s)", res.detail, res.log);
            ct[ctl - 1] ^= 0x5a;
            pki_result_init(&res);
            ok(pki_key_decrypt(tk, ct, ctl, &outp, &outl, &res) == PKI_OK,
               "token: decrypts again after bad input [%s]", res.log);
            if (res.status == PKI_OK) {
                free(outp);
            }

            /* OAEP (SHA-1 and SHA-256) through the token key: good, then
             * a bad block as the input's fault, then good again */
            for (i = 0; i < 2; i++) {
                const EVP_MD  *omd = i ? EVP_sha256() : EVP_sha1();

                pc = EVP_PKEY_CTX_new(pki_key_public(tk), NULL);
                ctl = sizeof(ct);
                EVP_PKEY_encrypt_init(pc);
                EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_OAEP_PADDING);
                EVP_PKEY_CTX_set_rsa_oaep_md(pc, omd);
                EVP_PKEY_CTX_set_rsa_mgf1_md(pc, omd);
                EVP_PKEY_encrypt(pc, ct, &ctl, pt, sizeof(pt));
                EVP_PKEY_CTX_free(pc);

                pki_result_init(&res);
                ok(pki_key_decrypt_oaep(tk, omd, omd, ct, ctl, &outp, &outl,
                                        &res) == PKI_OK
                   && outl == sizeof(pt) && memcmp(outp, pt, outl) == 0,
                   "token: OAEP %s decrypts [%s %s]", EVP_MD_get0_name(omd),
                   res.detail, res.log);
                if (res.status == PKI_OK) {
                    free(outp);
                }
                pki_result_init(&res);
                is_status(pki_key_decrypt(tk, ct, ctl, &outp, &outl, &res),
                          PKI_MALFORMED, "token: an OAEP block read as "
                          "PKCS#1 v1.5 is the input's fault");
                ct[ctl / 2] ^= 0x5a;
                pki_result_init(&res);
                is_status(pki_key_decrypt_oaep(tk, omd, omd, ct, ctl, &outp,
                                               &outl, &res),
                          PKI_MALFORMED, "token: a bad OAEP block is the "
                          "input's fault");
                ct[ctl / 2] ^= 0x5a;
                pki_result_init(&res);
                ok(pki_key_decrypt_oaep(tk, omd, omd, ct, ctl, &outp, &outl,
                                        &res) == PKI_OK,
                   "token: OAEP decrypts again after bad input [%s]",
                   res.log);
                if (res.status == PKI_OK) {
                    free(outp);
                }
            }

            /* an RA whose key is in the token */
            tra = cert("Token RA", pki_key_public(tk), eca_x, eca_k, 0);
            tconf = conf;
            tconf.ra_cert = tra;
            tconf.ra_key = tk;
            pki_result_init(&res);
            is_status(pki_scep_conf_check(&tconf, &res), PKI_OK,
                      "RA with a token key");
            m.rcpt = tra;
            m.challenge = "wrong";
            s = pkiop(&tconf, &m, &f, NULL, &h);
            ok(s == 2 && f == 2, "token RA: decrypts (then: wrong "
               "challenge) %d %d", s, f);
            if (redis) {
                m.challenge = "s3cret";
                issued = NULL;
                s = pkiop(&tconf, &m, &f, &issued, &h);
                ok(s == 0 && issued, "token RA: PKCSReq SUCCESS");
                X509_free(issued);
            }

            /* RSAES-OAEP to the token key: a broken block fails as a
             * broken v1.5 one; SHA-1 and SHA-256 decrypt (and enroll) */
            m.corrupt_ek = 1;
            EXPECT_FAIL("token RA: PKCS#1 v1.5, broken block", &tconf, &m,
                        1);
            for (i = 0; i < 2; i++) {
                m.oaep = i ? EVP_sha256() : EVP_sha1();
                m.corrupt_ek = 1;
                EXPECT_FAIL("token RA: OAEP, broken block", &tconf, &m, 1);
                m.corrupt_ek = 0;
                m.challenge = "wrong";
                EXPECT_FAIL("token RA: OAEP decrypts, wrong challenge",
                            &tconf, &m, 2);
                m.challenge = "s3cret";
                if (redis) {
                    issued = NULL;
                    s = pkiop(&tconf, &m, &f, &issued, &h);
                    ok(s == 0 && issued, "token RA: OAEP %s: PKCSReq "
                       "SUCCESS", EVP_MD_get0_name(m.oaep));
                    ok(strcmp(last_kt, i ? "RSAES-OAEP SHA256 MGF1-SHA256"
                                         : "RSAES-OAEP SHA1 MGF1-SHA1") == 0,
                       "token RA: OAEP %s: the reply's too (%s)",
                       EVP_MD_get0_name(m.oaep), last_kt);
                    X509_free(issued);
                }
            }
            m.oaep = NULL;
            m.rcpt = ra_x;
            X509_free(tra);
            pki_key_free(tk);
            pki_vault_free(v);
        } else {
            diag("SKIP token RA: PKI_TEST_KEY_URI_RSA etc. not set");
        }
    }

    /* file key decryption */
    {
        unsigned char   ct[512], pt[16] = "0123456789abcdef", *outp;
        size_t          ctl = sizeof(ct), outl;
        EVP_PKEY_CTX   *pc = EVP_PKEY_CTX_new(ra_k, NULL);

        EVP_PKEY_encrypt_init(pc);
        EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING);
        EVP_PKEY_encrypt(pc, ct, &ctl, pt, sizeof(pt));
        EVP_PKEY_CTX_free(pc);
        pki_result_init(&res);
        ok(pki_key_decrypt(ra_key, ct, ctl, &outp, &outl, &res) == PKI_OK
           && outl == 16 && memcmp(outp, pt, 16) == 0,
           "pki_key_decrypt with a file key");
        if (res.status == PKI_OK) {
            free(outp);
        }
        pki_result_init(&res);
        is_status(pki_key_decrypt(eca_key, ct, ctl, &outp, &outl, &res),
                  PKI_UNSUPPORTED, "pki_key_decrypt with an EC key");
    }

    pki_redis_free(redis);
    pki_ca_free(ca);
    pki_ca_free(eca);
    pki_template_free(t);
    pki_key_free(ca_key);
    pki_key_free(eca_key);
    pki_key_free(ra_key);
    pki_key_free(other_key);
    X509_free(ca_x);
    X509_free(eca_x);
    X509_free(ra_x);
    X509_free(bad_ra);
    EVP_PKEY_free(ca_k);
    EVP_PKEY_free(eca_k);
    EVP_PKEY_free(ra_k);
    EVP_PKEY_free(dev_k);
    EVP_PKEY_free(other_k);
    EVP_PKEY_free(ec_k);
    ASN1_OBJECT_free(o_type);
    ASN1_OBJECT_free(o_status);
    ASN1_OBJECT_free(o_fail);
    ASN1_OBJECT_free(o_snonce);
    ASN1_OBJECT_free(o_rnonce);
    ASN1_OBJECT_free(o_tid);

    snprintf(path, sizeof(path), "rm -rf %s", dir);
    if (system(path) != 0) {
        diag("cleanup failed");
    }

    return done_testing();
}
