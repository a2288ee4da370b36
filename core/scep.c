/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * SCEP (RFC 8894) engine: one request in, one response out.
 *
 * A PKIOperation goes through fixed stages, each with its own failure
 * answer:
 *   1. parse: DER PKCS#7 SignedData, one SignerInfo, the signer's
 *      certificate, messageType, transactionID and senderNonce among the
 *      signed attributes.  Without these no CertRep can be addressed: 400.
 *      More than PKI_SCEP_BAG_MAX certificates and CRLs, counted before
 *      anything is decoded, get 400 too.
 *   2. verify: digest algorithm (badAlg), signature and messageDigest
 *      (badMessageCheck), signingTime when present (badTime).
 *   3. dispatch on messageType; anything but PKCSReq, RenewalReq, CertPoll,
 *      GetCert and GetCRL is refused (badRequest), UpdateReq included.
 *   4. decrypt the EnvelopedData with the RA key (file or token; a padding
 *      failure is replaced by a random content key so that it looks like
 *      any other corrupt message: badMessageCheck).
 *   5. the message type's own authorisation (challenge, signer
 *      certificate, pending record), policy (the template), and only then
 *      state changes and issuance (pki_issue).
 * A CertRep is signed with the RA key through pki_key_sign (signature
 * verified before release) and, on success, encrypted to the requester's
 * certificate with the cipher of its request (AES; 3DES for a 3DES or DES
 * request, never single DES) and its key transport (PKCS#1 v1.5, or
 * RSAES-OAEP with the request's hash and MGF1 hash).
 *
 * PKCSReq, the hot path, is read by a lean reader first: OpenSSL 3.0's
 * d2i_PKCS7() decodes the signer certificate's public key through
 * OSSL_DECODER_CTX_new_for_pkey(), about 120 us per message (see csr.c).
 * The lean reader keeps the certificate's SubjectPublicKeyInfo as bits,
 * builds an RSA key directly and a small X509 holding what the engine
 * uses (names, serial, validity, key).  Whatever it does not handle
 * (another message type, another key type, CRLs in the message, a
 * self-signature that only verifies over the original BER) goes through
 * d2i_PKCS7() as before, so the checks and their answers are the same.
 * The legacy RSA constructor is deprecated in 3.0 but is the one way to an
 * EVP_PKEY without the decoder round trip.
 */

#define OPENSSL_SUPPRESS_DEPRECATED

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>

#include <hiredis.h>

#include <openssl/asn1.h>
#include <openssl/asn1t.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pkcs7.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "acme_int.h"
#include "audit_int.h"
#include "issue_int.h"
#include "redis_int.h"
#include "scep_int.h"


#define PKI_SCEP_CT_CACERT      "application/x-x509-ca-cert"
#define PKI_SCEP_CT_CARACERT    "application/x-x509-ca-ra-cert"
#define PKI_SCEP_CT_NEXTCA      "application/x-x509-next-ca-cert"
#define PKI_SCEP_CT_MESSAGE     "application/x-pki-message"
#define PKI_SCEP_CT_TEXT        "text/plain"

#define PKI_SCEP_RETRY_AFTER    10
#define PKI_SCEP_TID_MAX        64
#define PKI_SCEP_NONCE_MAX      64
#define PKI_SCEP_PENDING_TTL    (7L * 86400)
#define PKI_SCEP_CHAL_TTL       3600L
#define PKI_SCEP_CHAL_TTL_MAX   (30L * 86400)
#define PKI_SCEP_CHAL_ID_LEN    16      /* hex digits: the id in the log */
#define PKI_SCEP_ADMIN_BODY     16384
#define PKI_SCEP_KEY_MAX        256

/* pki_admin_made_t holds a challenge's id and Redis key */
#if PKI_SCEP_KEY_MAX > PKI_ADMIN_MADE_KEY \
    || PKI_SCEP_CHAL_ID_LEN + 1 > PKI_ADMIN_MADE_ID
#error "pki_admin_made_t cannot hold a challenge's key or id"
#endif

/* messageType */
#define PKI_SCEP_CERTREP        3
#define PKI_SCEP_RENEWALREQ     17
#define PKI_SCEP_UPDATEREQ      18
#define PKI_SCEP_PKCSREQ        19
#define PKI_SCEP_CERTPOLL       20
#define PKI_SCEP_GETCERT        21
#define PKI_SCEP_GETCRL         22

/* pkiStatus */
#define PKI_SCEP_SUCCESS        0
#define PKI_SCEP_FAILURE        2
#define PKI_SCEP_PENDING        3

/* failInfo */
#define PKI_SCEP_BAD_ALG        0
#define PKI_SCEP_BAD_MSG_CHECK  1
#define PKI_SCEP_BAD_REQUEST    2
#define PKI_SCEP_BAD_TIME       3
#define PKI_SCEP_BAD_CERT_ID    4

enum {
    PKI_OID_MESSAGE_TYPE = 0,
    PKI_OID_PKI_STATUS,
    PKI_OID_FAIL_INFO,
    PKI_OID_SENDER_NONCE,
    PKI_OID_RECIPIENT_NONCE,
    PKI_OID_TRANSACTION_ID,
    PKI_OID_N
};


typedef struct pki_scep_lean_s  pki_scep_lean_t;

typedef struct {
    PKCS7                *p7;              /* d2i_PKCS7(), or NULL */
    pki_scep_lean_t      *lean;            /* the lean reader's, or NULL */
    PKCS7_SIGNER_INFO    *si;
    ASN1_OCTET_STRING    *content;         /* the signed content */
    X509                 *signer;          /* borrowed from p7, or the lean
                                              reader's (owned) */
    int                   self_signed;     /* lean: 1 the signer's self-
                                              signature verifies, 0 not
                                              checked or failed */
    int                   type;
    char                  tid[PKI_SCEP_TID_MAX + 1];
    unsigned char         nonce[PKI_SCEP_NONCE_MAX];
    size_t                nonce_len;
    time_t                signed_at;       /* the checked signingTime, or
                                              0 (none, or not checked) */
    const EVP_CIPHER     *reply_cipher;
    const EVP_MD         *reply_oaep;      /* the request's RSAES-OAEP hash
                                              and MGF1 hash, or NULL:
                                              PKCS#1 v1.5 (the reply's key
                                              transport follows the
                                              request's) */
    const EVP_MD         *reply_mgf1;
    unsigned char        *reply_kt;        /* the request's key transport
                                              AlgorithmIdentifier (DER),
                                              sent back as it came */
    int                   reply_kt_len;
    unsigned char        *data;            /* decrypted messageData */
    size_t                data_len;
    const EVP_MD         *reply_md;        /* the CertRep's digest: the
                                              request's, or NULL (SHA-256) */
} pki_scep_msg_t;


/* What a one-time challenge is bound to (empty: anything). */
typedef struct {
    char                 *raw;             /* the stored value */
    char                 *taken;           /* ... as taken (for a give-back) */
    long long             expires_ms;      /* when it expires (ms since
                                              1970, Redis's clock) */
    char                  hkey[PKI_SCEP_KEY_MAX];
    char                  tkey[PKI_SCEP_KEY_MAX];  /* who took it */
    char                  token[65];       /* this request's take */
    int                   unsure;          /* the take was sent, its
                                              answer lost: it may have
                                              run */
    const char           *tmpl;
    const char           *cn;
    const char           *san;
    const char           *ca;
} pki_scep_chal_t;


static pthread_once_t   pki_scep_once = PTHREAD_ONCE_INIT;
static ASN1_OBJECT     *pki_scep_oids[PKI_OID_N];


static void pki_scep_getcacaps(const pki_scep_conf_t *conf,
    pki_scep_resp_t *resp);
static void pki_scep_getcacert(const pki_scep_conf_t *conf,
    pki_scep_resp_t *resp);
static void pki_scep_getnextcacert(const pki_scep_conf_t *conf,
    pki_scep_resp_t *resp);
static int pki_scep_resend(const pki_scep_conf_t *conf,
    const pki_scep_req_t *req, pki_scep_msg_t *m, pki_scep_resp_t *resp);
static void pki_scep_pkioperation(const pki_scep_conf_t *conf,
    const pki_scep_req_t *req, pki_scep_resp_t *resp);
static void pki_scep_http_error(pki_scep_resp_t *resp, int status);
static const EVP_MD *pki_scep_sd_digest(EVP_PKEY *pk);


/* ---- OIDs ------------------------------------------------------------------ */

static void
pki_scep_oids_init(void)
{
    static const char  *txt[PKI_OID_N] = {
        "2.16.840.1.113733.1.9.2",
        "2.16.840.1.113733.1.9.3",
        "2.16.840.1.113733.1.9.4",
        "2.16.840.1.113733.1.9.5",
        "2.16.840.1.113733.1.9.6",
        "2.16.840.1.113733.1.9.7",
    };
    int                 i;

    for (i = 0; i < PKI_OID_N; i++) {
        pki_scep_oids[i] = OBJ_txt2obj(txt[i], 1);
    }
}


static int
pki_scep_init(void)
{
    int  i;

    (void) pthread_once(&pki_scep_once, pki_scep_oids_init);

    for (i = 0; i < PKI_OID_N; i++) {
        if (pki_scep_oids[i] == NULL) {
            return 0;
        }
    }

    return 1;
}


/* ---- small helpers ------------------------------------------------------- */

static void
pki_hex(const unsigned char *in, size_t len, char *out, int upper)
{
    static const char  lo[] = "0123456789abcdef";
    static const char  up[] = "0123456789ABCDEF";
    const char        *d = upper ? up : lo;
    size_t             i;

    for (i = 0; i < len; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 0x0f];
    }

    out[2 * len] = '\0';
}


static int
pki_sha256_hex(const void *in, size_t len, char out[65])
{
    unsigned char  md[32];
    unsigned int   n;

    if (EVP_Digest(in, len, md, &n, EVP_sha256(), NULL) != 1 || n != 32) {
        return 0;
    }

    pki_hex(md, 32, out, 0);

    return 1;
}


/* "<ns>scep:<what>:<sha256 hex of id>" */
static int
pki_scep_rkey(pki_redis_t *r, const char *what, const void *id, size_t len,
    char *buf, size_t size)
{
    char  hex[65];
    int   n;

    if (!pki_sha256_hex(id, len, hex)) {
        return 0;
    }

    n = snprintf(buf, size, "%sscep:%s:%s", pki_redis_ns(r), what, hex);

    return n > 0 && (size_t) n < size;
}


static int
pki_printable(const unsigned char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (s[i] < 0x20 || s[i] > 0x7e) {
            return 0;
        }
    }

    return 1;
}


PKI_API pki_scep_op_t
pki_scep_op(const char *name, size_t len)
{
    size_t  i;
    static const struct {
        const char     *name;
        pki_scep_op_t   op;
    } ops[] = {
        { "GetCACaps", PKI_SCEP_GETCACAPS },
        { "GetCACert", PKI_SCEP_GETCACERT },
        { "GetNextCACert", PKI_SCEP_GETNEXTCACERT },
        { "PKIOperation", PKI_SCEP_PKIOPERATION },
    };

    if (name == NULL) {
        return PKI_SCEP_UNKNOWN;
    }

    for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        if (strlen(ops[i].name) == len && memcmp(ops[i].name, name, len) == 0)
        {
            return ops[i].op;
        }
    }

    return PKI_SCEP_UNKNOWN;
}


PKI_API int
pki_scep_op_blocking(pki_scep_op_t op)
{
    /* GetNextCACert is signed by the CA key, which may be in a token */
    return op == PKI_SCEP_PKIOPERATION || op == PKI_SCEP_GETNEXTCACERT;
}


static X509 *
pki_scep_ra_cert(const pki_scep_conf_t *conf)
{
    return conf->ra_cert != NULL ? conf->ra_cert : pki_ca_cert(conf->ca);
}


static pki_key_t *
pki_scep_ra_key(const pki_scep_conf_t *conf)
{
    return conf->ra_cert != NULL ? conf->ra_key : pki_ca_key(conf->ca);
}


PKI_API pki_status_t
pki_scep_conf_check(const pki_scep_conf_t *conf, pki_result_t *res)
{
    X509          *ra;
    EVP_PKEY      *pub, *kpub;
    pki_key_t     *key;

    if (!pki_scep_init()) {
        return pki_fail(res, PKI_INTERNAL, "cannot create the SCEP OIDs");
    }

    if (conf == NULL || conf->ca == NULL || conf->tmpl == NULL
        || pki_ca_cert(conf->ca) == NULL)
    {
        return pki_fail(res, PKI_INTERNAL, "SCEP needs a CA and a template");
    }

    if ((conf->ra_cert == NULL) != (conf->ra_key == NULL)) {
        return pki_fail(res, PKI_MALFORMED, "the RA needs a certificate and "
                        "a key");
    }

    ra = pki_scep_ra_cert(conf);
    key = pki_scep_ra_key(conf);
    pub = X509_get0_pubkey(ra);
    kpub = key != NULL ? pki_key_public(key) : NULL;

    if (pub == NULL || EVP_PKEY_get_base_id(pub) != EVP_PKEY_RSA) {
        return pki_fail(res, PKI_MALFORMED, "%s key is not RSA (SCEP key "
                        "transport needs RSA%s)",
                        conf->ra_cert ? "the RA" : "the CA",
                        conf->ra_cert ? "" : ": configure an RA certificate "
                        "with scep_ra");
    }

    if (kpub == NULL || EVP_PKEY_eq(pub, kpub) != 1) {
        ERR_clear_error();
        return pki_fail(res, PKI_MALFORMED, "the RA key does not match the "
                        "RA certificate");
    }

    if (conf->ra_cert != NULL
        && !pki_ca_issued(conf->ca, conf->ra_cert))
    {
        /* issued by a CA of the chain (the root) is fine as well */
        STACK_OF(X509)  *chain = pki_ca_chain(conf->ca);
        int              i, ok = 0;

        for (i = 0; i < sk_X509_num(chain) && !ok; i++) {
            ok = X509_check_issued(sk_X509_value(chain, i), conf->ra_cert)
                     == X509_V_OK
                 && X509_verify(conf->ra_cert,
                                X509_get0_pubkey(sk_X509_value(chain, i)))
                     == 1;
        }

        for (i = 0; i < sk_X509_num(conf->ra_chain) && !ok; i++) {
            ok = X509_check_issued(sk_X509_value(conf->ra_chain, i),
                                   conf->ra_cert) == X509_V_OK;
        }

        ERR_clear_error();

        if (!ok) {
            return pki_fail(res, PKI_MALFORMED, "the RA certificate was not "
                            "issued by CA \"%s\" or its chain",
                            pki_ca_name(conf->ca));
        }
    }

    if (X509_cmp_time(X509_get0_notAfter(ra), NULL) <= 0) {
        return pki_fail(res, PKI_MALFORMED, "the RA certificate has "
                        "expired");
    }

    if (conf->next_ca != NULL) {
        if (X509_check_ca(conf->next_ca) < 1) {
            return pki_fail(res, PKI_MALFORMED, "the next CA certificate "
                            "is not a CA certificate");
        }

        if (X509_cmp(conf->next_ca, pki_ca_cert(conf->ca)) == 0) {
            return pki_fail(res, PKI_MALFORMED, "the next CA certificate "
                            "is the current one");
        }

        if (pki_scep_sd_digest(X509_get0_pubkey(pki_ca_cert(conf->ca)))
            == NULL)
        {
            return pki_fail(res, PKI_MALFORMED, "GetNextCACert is signed "
                            "by the CA key, which must be RSA or EC");
        }
    }

    return PKI_OK;
}


PKI_API void
pki_scep_resp_free(pki_scep_resp_t *resp)
{
    if (resp == NULL) {
        return;
    }

    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
}


PKI_API void
pki_scep_handle(const pki_scep_conf_t *conf, const pki_scep_req_t *req,
    pki_scep_resp_t *resp)
{
    if (resp == NULL) {
        return;
    }

    memset(resp, 0, sizeof(pki_scep_resp_t));
    pki_result_init(&resp->res);
    resp->message_type = -1;
    resp->pki_status = -1;
    resp->fail_info = -1;

    if (conf == NULL || conf->ca == NULL || conf->tmpl == NULL || req == NULL
        || !pki_scep_init())
    {
        pki_fail(&resp->res, PKI_INTERNAL, "SCEP is not configured");
        pki_scep_http_error(resp, 500);
        return;
    }

    switch (req->op) {

    case PKI_SCEP_GETCACAPS:
        pki_scep_getcacaps(conf, resp);
        break;

    case PKI_SCEP_GETCACERT:
        pki_scep_getcacert(conf, resp);
        break;

    case PKI_SCEP_GETNEXTCACERT:
        pki_scep_getnextcacert(conf, resp);
        break;

    case PKI_SCEP_PKIOPERATION:
        pki_scep_pkioperation(conf, req, resp);
        break;

    default:
        pki_fail(&resp->res, PKI_MALFORMED, "unknown SCEP operation");
        pki_scep_http_error(resp, 400);
    }
}


/* ---- plain responses ------------------------------------------------------- */

static void
pki_scep_http_error(pki_scep_resp_t *resp, int status)
{
    const char  *text;
    size_t       len;

    pki_scep_resp_free(resp);

    if (resp->res.status == PKI_OK) {
        pki_fail(&resp->res, PKI_INTERNAL, "internal error");
    }

    if (status == 0) {
        switch (resp->res.status) {
        case PKI_TOO_LARGE:
            status = 413;
            break;
        case PKI_UNSUPPORTED:
            status = 405;
            break;
        case PKI_UNAVAILABLE:
        case PKI_CONFLICT:
            status = 503;
            break;
        case PKI_INTERNAL:
            status = 500;
            break;
        default:
            status = 400;
        }
    }

    resp->http_status = status;
    resp->content_type = PKI_SCEP_CT_TEXT;

    if (status == 503) {
        resp->retry_after = PKI_SCEP_RETRY_AFTER;
    }

    text = status >= 500 ? "server error, try again later"
                         : resp->res.detail;
    len = strlen(text);

    resp->body = malloc(len + 1);
    if (resp->body != NULL) {
        memcpy(resp->body, text, len);
        resp->body[len] = '\n';
        resp->body_len = len + 1;
    }
}


static void
pki_scep_body(pki_scep_resp_t *resp, const char *ct, unsigned char *der,
    size_t len)
{
    /* takes der (OPENSSL_malloc'd) */
    resp->body = malloc(len ? len : 1);
    if (resp->body == NULL) {
        OPENSSL_free(der);
        pki_fail(&resp->res, PKI_INTERNAL, "out of memory");
        pki_scep_http_error(resp, 500);
        return;
    }

    memcpy(resp->body, der, len);
    resp->body_len = len;
    OPENSSL_free(der);

    resp->http_status = 200;
    resp->content_type = ct;
}


static void
pki_scep_getcacaps(const pki_scep_conf_t *conf, pki_scep_resp_t *resp)
{
    /* DES3 and SHA-1 (RFC 8894 3.5.2) are accepted whatever the
     * configuration: listed so that jscep does not fall back to single
     * DES and an IOS router that knows no AES picks 3DES; the server
     * still answers an AES request in AES */
    static const char  caps[] =
        "POSTPKIOperation\nRenewal\nSHA-1\nSHA-256\nSHA-512\nAES\n"
        "DES3\nSCEPStandard\n";
    static const char  next[] = "GetNextCACert\n";
    size_t             len;

    len = sizeof(caps) - 1 + (conf->next_ca ? sizeof(next) - 1 : 0);

    resp->body = malloc(len + 1);
    if (resp->body == NULL) {
        pki_fail(&resp->res, PKI_INTERNAL, "out of memory");
        pki_scep_http_error(resp, 500);
        return;
    }

    memcpy(resp->body, caps, sizeof(caps) - 1);
    if (conf->next_ca) {
        memcpy(resp->body + sizeof(caps) - 1, next, sizeof(next) - 1);
    }

    resp->body_len = len;
    resp->http_status = 200;
    resp->content_type = PKI_SCEP_CT_TEXT;
}


/* ---- DER writing -----------------------------------------------------------
 *
 * The replies have fixed shapes (a CertRep: a SignedData with one
 * SignerInfo and the RA certificate around an optional EnvelopedData for
 * one RSA recipient; certificates-only SignedData).  They are written
 * straight into DER, as PKCS7_sign(), PKCS7_encrypt() and i2d_PKCS7()
 * would encode them (same fields, same order, attributes in DER SET OF
 * order), without building PKCS7 objects, BIO chains and cipher lookups per
 * request.
 */

typedef struct {
    unsigned char  *d;
    size_t          n, cap;
    int             err;
} pki_der_t;


static void
pki_der_put(pki_der_t *b, const void *p, size_t len)
{
    size_t          cap;
    unsigned char  *d;

    if (b->err) {
        return;
    }

    if (b->n + len > b->cap) {
        cap = b->cap ? b->cap : 1024;
        while (cap < b->n + len) {
            cap *= 2;
        }

        d = realloc(b->d, cap);
        if (d == NULL) {
            b->err = 1;
            return;
        }

        b->d = d;
        b->cap = cap;
    }

    if (len > 0) {
        memcpy(b->d + b->n, p, len);
    }
    b->n += len;
}


/* The content written since mark becomes the value of a TLV with tag. */
static void
pki_der_wrap(pki_der_t *b, size_t mark, unsigned char tag)
{
    size_t         len, hl, i;
    unsigned char  hdr[6];

    if (b->err) {
        return;
    }

    len = b->n - mark;
    if (len > 0xffffffUL) {
        b->err = 1;
        return;
    }

    hdr[0] = tag;
    if (len < 0x80) {
        hdr[1] = (unsigned char) len;
        hl = 2;
    } else if (len < 0x100) {
        hdr[1] = 0x81;
        hdr[2] = (unsigned char) len;
        hl = 3;
    } else if (len < 0x10000) {
        hdr[1] = 0x82;
        hdr[2] = (unsigned char) (len >> 8);
        hdr[3] = (unsigned char) len;
        hl = 4;
    } else {
        hdr[1] = 0x83;
        hdr[2] = (unsigned char) (len >> 16);
        hdr[3] = (unsigned char) (len >> 8);
        hdr[4] = (unsigned char) len;
        hl = 5;
    }

    pki_der_put(b, hdr, hl);       /* grows the buffer by hl */
    if (b->err) {
        return;
    }

    memmove(b->d + mark + hl, b->d + mark, len);
    for (i = 0; i < hl; i++) {
        b->d[mark + i] = hdr[i];
    }
}


static void
pki_der_tlv(pki_der_t *b, unsigned char tag, const void *p, size_t len)
{
    size_t  mark = b->n;

    pki_der_put(b, p, len);
    pki_der_wrap(b, mark, tag);
}


/* An i2d result appended (OBJECTs, names, INTEGERs, times); *der is
 * read only after the call that filled it (arguments have no order). */
static void
pki_der_i2d(pki_der_t *b, int n, unsigned char **der)
{
    if (n <= 0 || *der == NULL) {
        b->err = 1;
    } else {
        pki_der_put(b, *der, (size_t) n);
    }
    OPENSSL_free(*der);
    *der = NULL;
}


static void
pki_der_obj(pki_der_t *b, int nid)
{
    unsigned char  *der = NULL;

    pki_der_i2d(b, i2d_ASN1_OBJECT(OBJ_nid2obj(nid), &der), &der);
}


/* AlgorithmIdentifier { nid, NULL } */
static void
pki_der_alg_null(pki_der_t *b, int nid)
{
    size_t  mark = b->n;

    pki_der_obj(b, nid);
    pki_der_put(b, "\x05\x00", 2);
    pki_der_wrap(b, mark, 0x30);
}


/* IssuerAndSerialNumber of x */
static void
pki_der_ias(pki_der_t *b, X509 *x)
{
    size_t          mark = b->n;
    unsigned char  *der = NULL;

    pki_der_i2d(b, i2d_X509_NAME(X509_get_issuer_name(x), &der), &der);
    der = NULL;
    pki_der_i2d(b, i2d_ASN1_INTEGER((ASN1_INTEGER *)
                                    X509_get0_serialNumber(x), &der), &der);
    pki_der_wrap(b, mark, 0x30);
}


/* A degenerate (certs-only) PKCS#7 SignedData: certificates in order,
 * duplicates dropped, and optionally one CRL.  DER, OPENSSL_malloc'd. */
static int
pki_scep_degenerate(X509 *first, X509 *second, STACK_OF(X509) *more,
    X509_CRL *crl, unsigned char **der, size_t *len)
{
    int             i, j, dup;
    X509           *x, *all[2];
    size_t          m1, m2;
    pki_der_t       b;
    unsigned char  *enc;

    *der = NULL;
    memset(&b, 0, sizeof(b));

    /* ContentInfo { signedData, [0] SignedData { 1, SET {},
     *   ContentInfo { data }, [0] { certificates } [, [1] { crl }],
     *   SET {} } } */
    pki_der_obj(&b, NID_pkcs7_signed);
    m1 = b.n;
    pki_der_put(&b, "\x02\x01\x01\x31\x00", 5);
    m2 = b.n;
    pki_der_obj(&b, NID_pkcs7_data);
    pki_der_wrap(&b, m2, 0x30);

    m2 = b.n;
    all[0] = first;
    all[1] = second;

    for (i = 0; i < 2; i++) {
        if (all[i] == NULL || (i == 1 && first && X509_cmp(first, all[1]) == 0))
        {
            continue;
        }

        enc = NULL;
        pki_der_i2d(&b, i2d_X509(all[i], &enc), &enc);
    }

    for (i = 0; i < sk_X509_num(more); i++) {
        x = sk_X509_value(more, i);

        dup = (first && X509_cmp(first, x) == 0)
              || (second && X509_cmp(second, x) == 0);
        for (j = 0; j < i && !dup; j++) {
            dup = X509_cmp(sk_X509_value(more, j), x) == 0;
        }

        if (!dup) {
            enc = NULL;
            pki_der_i2d(&b, i2d_X509(x, &enc), &enc);
        }
    }

    if (b.n > m2) {
        pki_der_wrap(&b, m2, 0xa0);
    }

    if (crl != NULL) {
        m2 = b.n;
        enc = NULL;
        pki_der_i2d(&b, i2d_X509_CRL(crl, &enc), &enc);
        pki_der_wrap(&b, m2, 0xa1);
    }

    pki_der_put(&b, "\x31\x00", 2);
    pki_der_wrap(&b, m1, 0x30);
    pki_der_wrap(&b, m1, 0xa0);
    pki_der_wrap(&b, 0, 0x30);

    if (!b.err) {
        *der = OPENSSL_malloc(b.n);
        if (*der != NULL) {
            memcpy(*der, b.d, b.n);
            *len = b.n;
        }
    }

    free(b.d);
    ERR_clear_error();

    return *der != NULL;
}


static void
pki_scep_getcacert(const pki_scep_conf_t *conf, pki_scep_resp_t *resp)
{
    int             n;
    size_t          len;
    unsigned char  *der;

    der = NULL;

    /* RFC 8894 4.2.1.2: an intermediate CA sends its chain as a
     * certificates-only SignedData (x-x509-ca-ra-cert); opt-in, as
     * a client given this content type looks for an RA among them and
     * may take another certificate than the CA as the recipient */
    if (conf->ra_cert == NULL && conf->ca_chain
        && pki_ca_chain(conf->ca) != NULL
        && sk_X509_num(pki_ca_chain(conf->ca)) > 0)
    {
        if (!pki_scep_degenerate(pki_ca_cert(conf->ca), NULL,
                                 pki_ca_chain(conf->ca), NULL, &der, &len))
        {
            pki_fail(&resp->res, PKI_INTERNAL, "cannot encode the "
                     "certificates");
            pki_scep_http_error(resp, 500);
            return;
        }

        pki_scep_body(resp, PKI_SCEP_CT_CARACERT, der, len);
        return;
    }

    if (conf->ra_cert == NULL) {
        n = i2d_X509(pki_ca_cert(conf->ca), &der);
        if (n <= 0) {
            pki_fail(&resp->res, PKI_INTERNAL, "cannot encode the CA "
                     "certificate");
            pki_scep_http_error(resp, 500);
            return;
        }

        pki_scep_body(resp, PKI_SCEP_CT_CACERT, der, (size_t) n);
        return;
    }

    /* RFC 8894 4.2.1.2: the RA certificate(s) and the CA certificate */

    if (!pki_scep_degenerate(conf->ra_cert, pki_ca_cert(conf->ca),
                             conf->ra_chain != NULL ? conf->ra_chain
                                                    : pki_ca_chain(conf->ca),
                             NULL, &der, &len))
    {
        pki_fail(&resp->res, PKI_INTERNAL, "cannot encode the certificates");
        pki_scep_http_error(resp, 500);
        return;
    }

    pki_scep_body(resp, PKI_SCEP_CT_CARACERT, der, len);
}


/* The digest that goes with a signing key in a PKCS#7 SignerInfo, NULL
 * for a key PKCS#7 cannot sign with (Ed25519: CMS only). */
static const EVP_MD *
pki_scep_sd_digest(EVP_PKEY *pk)
{
    if (pk == NULL) {
        return NULL;
    }

    switch (EVP_PKEY_get_base_id(pk)) {
    case EVP_PKEY_RSA:
        return EVP_sha256();
    case EVP_PKEY_EC:
        return EVP_PKEY_get_bits(pk) > 384 ? EVP_sha512()
               : EVP_PKEY_get_bits(pk) > 256 ? EVP_sha384() : EVP_sha256();
    default:
        return NULL;
    }
}


/*
 * GetNextCACert (RFC 8894 4.7): a SignedData signed by the current CA
 * whose content (id-data) is a degenerate certificates-only SignedData
 * with the next CA certificate (and whatever came with it in the
 * scep_next_ca file: the next RA, intermediates).  The outer one carries
 * the current CA certificate and its chain, so that a client holding the
 * current root can check it.  The CA key signs through pki_key_sign (a
 * token key stays in the token; the signature is verified before it is
 * released): blocking, run in the thread pool.
 */
static int pki_scep_signed(pki_key_t *key, X509 *signer,
    STACK_OF(X509) *more, const EVP_MD *md, const unsigned char *content,
    size_t len, pki_der_t *attrs, int na, unsigned char **out,
    size_t *outlen, pki_result_t *res);


/*
 * GetNextCACert answers are signed once and served for
 * PKI_SCEP_NEXTCA_TTL seconds: the request is anonymous and the answer
 * changes only with the configuration, so a flood of GETs must not cost a
 * signature of the CA key (on the CA's token) each.  An answer is found by
 * the SHA-256 of everything it is made of (the content, the CA
 * certificate, its chain), so one configuration never gets another's, a
 * reload's included.  Per process, a few slots.
 */
#define PKI_SCEP_NEXTCA_SLOTS  8
#define PKI_SCEP_NEXTCA_TTL    300

typedef struct {
    unsigned char   id[32];
    time_t          at;
    unsigned char  *der;            /* malloc'd */
    size_t          len;
} pki_scep_nextca_t;

static pki_scep_nextca_t  pki_scep_nextca[PKI_SCEP_NEXTCA_SLOTS];
static pthread_mutex_t    pki_scep_nextca_lock = PTHREAD_MUTEX_INITIALIZER;


/* The cache's key for an answer: 1, or 0 (nothing is cached then). */
static int
pki_scep_nextca_id(X509 *ca, STACK_OF(X509) *chain,
    const unsigned char *inner, size_t len, unsigned char id[32])
{
    int             i, n, ok;
    EVP_MD_CTX     *md;
    unsigned char  *der;

    md = EVP_MD_CTX_new();
    ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1
         && EVP_DigestUpdate(md, inner, len) == 1;

    for (i = -1; ok && i < sk_X509_num(chain); i++) {
        der = NULL;
        n = i2d_X509(i < 0 ? ca : sk_X509_value(chain, i), &der);
        ok = n > 0 && EVP_DigestUpdate(md, der, (size_t) n) == 1;
        OPENSSL_free(der);
    }

    ok = ok && EVP_DigestFinal_ex(md, id, NULL) == 1;
    EVP_MD_CTX_free(md);

    return ok;
}


/* A copy of the cached answer of this id, if fresh: 1 (*out malloc'd). */
static int
pki_scep_nextca_get(const unsigned char id[32], unsigned char **out,
    size_t *len)
{
    int                 i, found;
    time_t              now;
    pki_scep_nextca_t  *e;

    now = time(NULL);
    found = 0;

    pthread_mutex_lock(&pki_scep_nextca_lock);

    for (i = 0; i < PKI_SCEP_NEXTCA_SLOTS; i++) {
        e = &pki_scep_nextca[i];

        if (e->der != NULL && memcmp(e->id, id, 32) == 0
            && now >= e->at && now - e->at < PKI_SCEP_NEXTCA_TTL)
        {
            *out = malloc(e->len);
            if (*out != NULL) {
                memcpy(*out, e->der, e->len);
                *len = e->len;
                found = 1;
            }

            break;
        }
    }

    pthread_mutex_unlock(&pki_scep_nextca_lock);

    return found;
}


/* Keeps a copy of a fresh answer, in the slot of its id or the oldest. */
static void
pki_scep_nextca_put(const unsigned char id[32], const unsigned char *der,
    size_t len)
{
    int                 i;
    unsigned char      *copy;
    pki_scep_nextca_t  *e, *old;

    copy = malloc(len);
    if (copy == NULL) {
        return;
    }

    memcpy(copy, der, len);

    pthread_mutex_lock(&pki_scep_nextca_lock);

    old = &pki_scep_nextca[0];

    for (i = 0; i < PKI_SCEP_NEXTCA_SLOTS; i++) {
        e = &pki_scep_nextca[i];

        if (e->der != NULL && memcmp(e->id, id, 32) == 0) {
            old = e;
            break;
        }

        if (e->der == NULL || (old->der != NULL && e->at < old->at)) {
            old = e;
        }
    }

    free(old->der);
    memcpy(old->id, id, 32);
    old->at = time(NULL);
    old->der = copy;
    old->len = len;

    pthread_mutex_unlock(&pki_scep_nextca_lock);
}


static void
pki_scep_getnextcacert(const pki_scep_conf_t *conf, pki_scep_resp_t *resp)
{
    int             i, have_id;
    X509           *ca;
    size_t          len, bodylen;
    pki_der_t       attr[3];
    unsigned char  *inner, *body, id[32];
    const EVP_MD   *dgst;

    if (conf->next_ca == NULL) {
        pki_fail(&resp->res, PKI_NOT_FOUND, "no next CA certificate");
        pki_scep_http_error(resp, 404);
        return;
    }

    ca = pki_ca_cert(conf->ca);
    dgst = pki_scep_sd_digest(X509_get0_pubkey(ca));

    if (dgst == NULL || pki_ca_key(conf->ca) == NULL) {
        pki_fail(&resp->res, PKI_INTERNAL, "the CA key cannot sign a "
                 "PKCS#7 SignedData");
        pki_scep_http_error(resp, 500);
        return;
    }

    if (!pki_scep_degenerate(conf->next_ca, NULL, conf->next_chain, NULL,
                             &inner, &len))
    {
        pki_fail(&resp->res, PKI_INTERNAL, "cannot encode the certificate");
        pki_scep_http_error(resp, 500);
        return;
    }

    have_id = pki_scep_nextca_id(ca, pki_ca_chain(conf->ca), inner, len,
                                 id);
    ERR_clear_error();

    if (have_id && pki_scep_nextca_get(id, &body, &bodylen)) {
        OPENSSL_free(inner);
        pki_scep_resp_free(resp);
        resp->body = body;
        resp->body_len = bodylen;
        resp->http_status = 200;
        resp->content_type = PKI_SCEP_CT_NEXTCA;
        return;
    }

    /* the current CA's certificate and chain, once each; signed by the CA
     * key (verified) */
    memset(attr, 0, sizeof(attr));

    i = pki_scep_signed(pki_ca_key(conf->ca), ca, pki_ca_chain(conf->ca),
                        dgst, inner, len, attr, 0, &body, &bodylen,
                        &resp->res);
    OPENSSL_free(inner);

    if (i && have_id) {
        pki_scep_nextca_put(id, body, bodylen);
    }

    free(attr[0].d);
    free(attr[1].d);
    free(attr[2].d);

    if (!i) {
        pki_scep_http_error(resp, 0);
        return;
    }

    pki_scep_resp_free(resp);
    resp->body = body;
    resp->body_len = bodylen;
    resp->http_status = 200;
    resp->content_type = PKI_SCEP_CT_NEXTCA;
}


/* ---- parsing a pkiMessage -------------------------------------------------- */

static ASN1_TYPE *
pki_scep_attr(PKCS7_SIGNER_INFO *si, int which)
{
    int              i;
    X509_ATTRIBUTE  *a;

    i = X509at_get_attr_by_OBJ(si->auth_attr, pki_scep_oids[which], -1);
    if (i < 0) {
        return NULL;
    }

    /* exactly one attribute of the type, with exactly one value */
    if (X509at_get_attr_by_OBJ(si->auth_attr, pki_scep_oids[which], i) >= 0) {
        return NULL;
    }

    a = X509at_get_attr(si->auth_attr, i);
    if (a == NULL || X509_ATTRIBUTE_count(a) != 1) {
        return NULL;
    }

    return X509_ATTRIBUTE_get0_type(a, 0);
}


/* ---- the lean pkiMessage reader (PKCSReq) ------------------------------------ */

typedef struct {
    X509_ALGOR                 *alg;
    ASN1_BIT_STRING            *bits;
} PKI_SCEP_SPKI;

typedef struct {
    ASN1_INTEGER               *version;
    ASN1_INTEGER               *serial;
    X509_ALGOR                 *sig_alg;
    X509_NAME                  *issuer;
    X509_VAL                   *validity;
    X509_NAME                  *subject;
    PKI_SCEP_SPKI              *spki;
    ASN1_BIT_STRING            *issuer_uid;
    ASN1_BIT_STRING            *subject_uid;
    STACK_OF(X509_EXTENSION)   *exts;
} PKI_SCEP_TBS;

typedef struct {
    PKI_SCEP_TBS               *tbs;
    X509_ALGOR                 *sig_alg;
    ASN1_BIT_STRING            *sig;
} PKI_SCEP_CERT;

typedef struct {
    ASN1_INTEGER               *version;
    STACK_OF(X509_ALGOR)       *md_algs;
    PKCS7                      *contents;
    OPENSSL_STACK              *certs;        /* of PKI_SCEP_CERT */
    STACK_OF(PKCS7_SIGNER_INFO)  *signer_info;
} PKI_SCEP_SD;

struct pki_scep_lean_s {
    ASN1_OBJECT                *type;
    PKI_SCEP_SD                *sd;
};

typedef struct pki_scep_lean_s  PKI_SCEP_LEAN;


ASN1_SEQUENCE(PKI_SCEP_SPKI) = {
    ASN1_SIMPLE(PKI_SCEP_SPKI, alg, X509_ALGOR),
    ASN1_SIMPLE(PKI_SCEP_SPKI, bits, ASN1_BIT_STRING)
} static_ASN1_SEQUENCE_END(PKI_SCEP_SPKI)

ASN1_SEQUENCE(PKI_SCEP_TBS) = {
    ASN1_EXP_OPT(PKI_SCEP_TBS, version, ASN1_INTEGER, 0),
    ASN1_SIMPLE(PKI_SCEP_TBS, serial, ASN1_INTEGER),
    ASN1_SIMPLE(PKI_SCEP_TBS, sig_alg, X509_ALGOR),
    ASN1_SIMPLE(PKI_SCEP_TBS, issuer, X509_NAME),
    ASN1_SIMPLE(PKI_SCEP_TBS, validity, X509_VAL),
    ASN1_SIMPLE(PKI_SCEP_TBS, subject, X509_NAME),
    ASN1_SIMPLE(PKI_SCEP_TBS, spki, PKI_SCEP_SPKI),
    ASN1_IMP_OPT(PKI_SCEP_TBS, issuer_uid, ASN1_BIT_STRING, 1),
    ASN1_IMP_OPT(PKI_SCEP_TBS, subject_uid, ASN1_BIT_STRING, 2),
    ASN1_EXP_SEQUENCE_OF_OPT(PKI_SCEP_TBS, exts, X509_EXTENSION, 3)
} static_ASN1_SEQUENCE_END(PKI_SCEP_TBS)

ASN1_SEQUENCE(PKI_SCEP_CERT) = {
    ASN1_SIMPLE(PKI_SCEP_CERT, tbs, PKI_SCEP_TBS),
    ASN1_SIMPLE(PKI_SCEP_CERT, sig_alg, X509_ALGOR),
    ASN1_SIMPLE(PKI_SCEP_CERT, sig, ASN1_BIT_STRING)
} static_ASN1_SEQUENCE_END(PKI_SCEP_CERT)

/* no crls [1]: a message with CRLs goes to d2i_PKCS7() */
ASN1_SEQUENCE(PKI_SCEP_SD) = {
    ASN1_SIMPLE(PKI_SCEP_SD, version, ASN1_INTEGER),
    ASN1_SET_OF(PKI_SCEP_SD, md_algs, X509_ALGOR),
    ASN1_SIMPLE(PKI_SCEP_SD, contents, PKCS7),
    ASN1_IMP_SET_OF_OPT(PKI_SCEP_SD, certs, PKI_SCEP_CERT, 0),
    ASN1_SET_OF(PKI_SCEP_SD, signer_info, PKCS7_SIGNER_INFO)
} static_ASN1_SEQUENCE_END(PKI_SCEP_SD)

ASN1_SEQUENCE(PKI_SCEP_LEAN) = {
    ASN1_SIMPLE(PKI_SCEP_LEAN, type, ASN1_OBJECT),
    ASN1_EXP(PKI_SCEP_LEAN, sd, PKI_SCEP_SD, 0)
} static_ASN1_SEQUENCE_END(PKI_SCEP_LEAN)


static void
pki_scep_lean_free(pki_scep_lean_t *l)
{
    ASN1_item_free((ASN1_VALUE *) l, ASN1_ITEM_rptr(PKI_SCEP_LEAN));
}


/* An RSA key (rsaEncryption, NULL parameters) straight from its bits;
 * NULL for anything else. */
static EVP_PKEY *
pki_scep_lean_key(const PKI_SCEP_SPKI *spki)
{
    int                   ptype, len;
    RSA                  *rsa;
    EVP_PKEY             *pk;
    const void           *pval;
    const ASN1_OBJECT    *aobj;
    const unsigned char  *p, *b;

    X509_ALGOR_get0(&aobj, &ptype, &pval, spki->alg);

    if (OBJ_obj2nid(aobj) != NID_rsaEncryption || ptype != V_ASN1_NULL) {
        return NULL;
    }

    b = ASN1_STRING_get0_data(spki->bits);
    len = ASN1_STRING_length(spki->bits);

    if (len <= 0 || (spki->bits->flags & 0x07) != 0) {
        return NULL;
    }

    p = b;
    rsa = d2i_RSAPublicKey(NULL, &p, len);
    if (rsa == NULL || p != b + len) {
        RSA_free(rsa);
        return NULL;
    }

    pk = EVP_PKEY_new();
    if (pk == NULL || !EVP_PKEY_assign_RSA(pk, rsa)) {
        EVP_PKEY_free(pk);
        RSA_free(rsa);
        return NULL;
    }

    return pk;
}


/*
 * Reads a PKCSReq with the lean reader.  Returns 1 with m->lean, m->si,
 * m->content, m->signer (a small X509 with the certificate's version,
 * serial, names, validity and key) and m->self_signed set; 0 if the
 * message is not one it handles (the caller uses d2i_PKCS7()).
 */
static int
pki_scep_lean_parse(const unsigned char *der, size_t len, pki_scep_msg_t *m)
{
    int                    i, n;
    long                   version;
    X509                  *x;
    EVP_PKEY              *pk;
    PKI_SCEP_SD           *sd;
    PKI_SCEP_CERT         *c, *found;
    pki_scep_lean_t       *l;
    PKCS7_SIGNER_INFO     *si;
    const unsigned char   *p;

    p = der;
    l = (pki_scep_lean_t *) ASN1_item_d2i(NULL, &p, (long) len,
                                          ASN1_ITEM_rptr(PKI_SCEP_LEAN));
    if (l == NULL || p != der + len
        || OBJ_obj2nid(l->type) != NID_pkcs7_signed)
    {
        pki_scep_lean_free(l);
        ERR_clear_error();
        return 0;
    }

    sd = l->sd;

    if (sd->contents == NULL || !PKCS7_type_is_data(sd->contents)
        || sd->contents->d.data == NULL
        || sk_PKCS7_SIGNER_INFO_num(sd->signer_info) != 1)
    {
        pki_scep_lean_free(l);
        return 0;
    }

    si = sk_PKCS7_SIGNER_INFO_value(sd->signer_info, 0);
    if (si->issuer_and_serial == NULL) {
        pki_scep_lean_free(l);
        return 0;
    }

    /* the signer's certificate: the first with its issuer and serial */
    found = NULL;
    n = OPENSSL_sk_num(sd->certs);

    for (i = 0; i < n && found == NULL; i++) {
        c = OPENSSL_sk_value(sd->certs, i);

        if (ASN1_INTEGER_cmp(c->tbs->serial, si->issuer_and_serial->serial)
                == 0
            && X509_NAME_cmp(c->tbs->issuer, si->issuer_and_serial->issuer)
                == 0)
        {
            found = c;
        }
    }

    if (found == NULL) {
        pki_scep_lean_free(l);
        return 0;
    }

    version = found->tbs->version != NULL
              ? ASN1_INTEGER_get(found->tbs->version) : 0;

    pk = (version >= 0 && version <= 2)
         ? pki_scep_lean_key(found->tbs->spki) : NULL;
    if (pk == NULL) {
        pki_scep_lean_free(l);
        ERR_clear_error();
        return 0;
    }

    x = X509_new();
    if (x == NULL
        || !X509_set_version(x, version)
        || !X509_set_serialNumber(x, found->tbs->serial)
        || !X509_set_issuer_name(x, found->tbs->issuer)
        || !X509_set_subject_name(x, found->tbs->subject)
        || !X509_set1_notBefore(x, found->tbs->validity->notBefore)
        || !X509_set1_notAfter(x, found->tbs->validity->notAfter)
        || !X509_set_pubkey(x, pk))
    {
        X509_free(x);
        EVP_PKEY_free(pk);
        pki_scep_lean_free(l);
        ERR_clear_error();
        return 0;
    }

    /* the self-signature, over the TBS as re-encoded (DER); a certificate
     * that only verifies over its original BER is left to X509_verify()
     * on the d2i_PKCS7() path.  Not checked for a key whose check costs
     * more than a message should (a public exponent of thousands of bits:
     * milliseconds of a pool thread for any anonymous sender): the other
     * path refuses it before any signature (pki_scep_sig_ok) */
    m->self_signed =
        X509_NAME_cmp(found->tbs->subject, found->tbs->issuer) == 0
        && pki_int_csr_key_refused(pk) == NULL
        && ASN1_item_verify(ASN1_ITEM_rptr(PKI_SCEP_TBS), found->sig_alg,
                            found->sig, found->tbs, pk) == 1;

    EVP_PKEY_free(pk);
    ERR_clear_error();

    m->lean = l;
    m->si = si;
    m->content = sd->contents->d.data;
    m->signer = x;

    return 1;
}


static void
pki_scep_msg_free(pki_scep_msg_t *m)
{
    if (m->lean != NULL) {
        X509_free(m->signer);
        pki_scep_lean_free(m->lean);
    }

    PKCS7_free(m->p7);
    OPENSSL_free(m->reply_kt);

    if (m->data != NULL) {
        OPENSSL_cleanse(m->data, m->data_len);
        free(m->data);
    }

    memset(m, 0, sizeof(pki_scep_msg_t));
}


/* ---- what a pkiMessage carries, counted before it is read ------------- */

/*
 * d2i_PKCS7() and the lean reader decode every certificate and CRL of a
 * SignedData before anything else of the message is looked at; d2i_PKCS7()
 * decodes each certificate's key too (about half a millisecond for an EC
 * key), so a 256 KB body of a thousand certificates and no SCEP attribute
 * cost a pool thread most of a second before its 400.  A SCEP client sends
 * its signer's certificate, perhaps with that certificate's chain: more
 * than PKI_SCEP_BAG_MAX certificates and CRLs together are refused (400,
 * as any message no CertRep can answer), counted here by their headers
 * alone (BER, indefinite lengths included; nothing inside them is read).
 * The content of a SignedData is an EnvelopedData for every message type,
 * and its type is checked the same way before d2i_PKCS7() reads it.
 */

#define PKI_SCEP_BAG_MAX        10
#define PKI_SCEP_BER_NEST       30      /* as OpenSSL's own reader */

typedef struct {
    const unsigned char  *p;
    const unsigned char  *end;
    int                   indef;        /* ends at an end-of-contents */
} pki_ber_t;


/* One header at c->p: 1 with its tag, class, constructed flag and body
 * (the body's end is c->end for an indefinite length), c->p past it. */
static int
pki_ber_hdr(pki_ber_t *c, int *tag, int *cls, pki_ber_t *body)
{
    int                   inf;
    long                  len;
    const unsigned char  *p;

    if (c->p >= c->end) {
        return 0;
    }

    p = c->p;
    inf = ASN1_get_object(&p, &len, tag, cls, (long) (c->end - c->p));
    if (inf & 0x80) {
        ERR_clear_error();
        return 0;
    }

    body->p = p;
    body->indef = inf & 1;

    if (body->indef) {
        body->end = c->end;

    } else {
        if (len < 0 || len > c->end - p) {
            return 0;
        }

        body->end = p + len;
    }

    /* constructed: the caller may enter it */
    c->p = p;
    return (inf & V_ASN1_CONSTRUCTED) ? 2 : 1;
}


static int
pki_ber_at_end(const pki_ber_t *c)
{
    if (!c->indef) {
        return c->p >= c->end;
    }

    return c->end - c->p >= 2 && c->p[0] == 0 && c->p[1] == 0;
}


/* Steps over one element (an indefinite one element by element). */
static int
pki_ber_skip(pki_ber_t *c, int depth)
{
    int        tag, cls;
    pki_ber_t  b;

    if (pki_ber_hdr(c, &tag, &cls, &b) == 0) {
        return 0;
    }

    if (!b.indef) {
        c->p = b.end;
        return 1;
    }

    if (depth >= PKI_SCEP_BER_NEST) {
        return 0;
    }

    while (!pki_ber_at_end(&b)) {
        if (!pki_ber_skip(&b, depth + 1)) {
            return 0;
        }
    }

    c->p = b.p + 2;
    return 1;
}


/* Enters a constructed element of this tag and class. */
static int
pki_ber_enter(pki_ber_t *c, int want, int want_cls, pki_ber_t *in)
{
    int  tag, cls;

    return pki_ber_hdr(c, &tag, &cls, in) == 2 && tag == want
           && cls == want_cls;
}


/*
 * A ContentInfo: 1 of type nid, 0 of another type (or a SignedData whose
 * content is not id-data), -1 not BER.  For a SignedData *certs and *crls
 * count what it carries.
 */
static int
pki_scep_p7_peek(const unsigned char *der, size_t len, int nid,
    size_t *certs, size_t *crls)
{
    int                  i, tag, cls;
    size_t              *n;
    pki_ber_t            c, ci, ex, sd, oid, bag;
    const ASN1_OBJECT   *obj;

    *certs = 0;
    *crls = 0;

    c.p = der;
    c.end = der + len;
    c.indef = 0;

    if (!pki_ber_enter(&c, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, &ci)
        || pki_ber_hdr(&ci, &tag, &cls, &oid) != 1
        || tag != V_ASN1_OBJECT || cls != V_ASN1_UNIVERSAL || oid.indef)
    {
        return -1;
    }

    obj = OBJ_nid2obj(nid);
    if (obj == NULL || (size_t) (oid.end - oid.p) != OBJ_length(obj)
        || memcmp(oid.p, OBJ_get0_data(obj), OBJ_length(obj)) != 0)
    {
        return 0;
    }

    if (nid != NID_pkcs7_signed) {
        return 1;
    }

    ci.p = oid.end;

    /* [0] EXPLICIT SignedData: version, digestAlgorithms, contentInfo,
     * then [0] certificates and [1] crls */
    if (!pki_ber_enter(&ci, 0, V_ASN1_CONTEXT_SPECIFIC, &ex)
        || !pki_ber_enter(&ex, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, &sd))
    {
        return -1;
    }

    for (i = 0; i < 3; i++) {
        if (i == 2) {
            /* contentInfo: of type id-data, checked before either reader
             * decodes any of it; another, such as a SignedData of its
             * own, would be decoded with every certificate it carries,
             * uncounted, before its type is looked at */
            ex = sd;
            obj = OBJ_nid2obj(NID_pkcs7_data);
            if (!pki_ber_enter(&ex, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, &bag)
                || pki_ber_hdr(&bag, &tag, &cls, &oid) != 1
                || tag != V_ASN1_OBJECT || cls != V_ASN1_UNIVERSAL
                || oid.indef || obj == NULL
                || (size_t) (oid.end - oid.p) != OBJ_length(obj)
                || memcmp(oid.p, OBJ_get0_data(obj), OBJ_length(obj)) != 0)
            {
                return 0;
            }
        }

        if (pki_ber_at_end(&sd) || !pki_ber_skip(&sd, 4)) {
            return -1;
        }
    }

    while (!pki_ber_at_end(&sd)) {
        ex = sd;
        if (pki_ber_hdr(&ex, &tag, &cls, &bag) != 2
            || cls != V_ASN1_CONTEXT_SPECIFIC || (tag != 0 && tag != 1))
        {
            break;
        }

        n = tag == 0 ? certs : crls;

        while (!pki_ber_at_end(&bag)) {
            if (!pki_ber_skip(&bag, 5)) {
                return -1;
            }

            (*n)++;
        }

        sd.p = bag.indef ? bag.p + 2 : bag.end;
    }

    return 1;
}


/* The SCEP attributes of the SignerInfo.  Returns 1, or 0 with res
 * filled. */
static int
pki_scep_read_attrs(pki_scep_msg_t *m, pki_result_t *res)
{
    int          n;
    long         v;
    char         buf[8], *end;
    ASN1_TYPE   *t;

    if (m->si->auth_attr == NULL
        || sk_X509_ATTRIBUTE_num(m->si->auth_attr) == 0)
    {
        pki_fail(res, PKI_MALFORMED, "the message has no signed attributes");
        return 0;
    }

    /* transactionID: PrintableString */
    t = pki_scep_attr(m->si, PKI_OID_TRANSACTION_ID);
    if (t == NULL || t->type != V_ASN1_PRINTABLESTRING
        || t->value.printablestring->length <= 0
        || t->value.printablestring->length > PKI_SCEP_TID_MAX
        || !pki_printable(t->value.printablestring->data,
                          t->value.printablestring->length))
    {
        pki_fail(res, PKI_MALFORMED, "missing or bad transactionID");
        return 0;
    }

    memcpy(m->tid, t->value.printablestring->data,
           t->value.printablestring->length);
    m->tid[t->value.printablestring->length] = '\0';

    /* senderNonce: OCTET STRING (16 octets by RFC 8894; up to 64 taken) */
    t = pki_scep_attr(m->si, PKI_OID_SENDER_NONCE);
    if (t == NULL || t->type != V_ASN1_OCTET_STRING
        || t->value.octet_string->length <= 0
        || t->value.octet_string->length > PKI_SCEP_NONCE_MAX)
    {
        pki_fail(res, PKI_MALFORMED, "missing or bad senderNonce");
        return 0;
    }

    m->nonce_len = t->value.octet_string->length;
    memcpy(m->nonce, t->value.octet_string->data, m->nonce_len);

    /* messageType: PrintableString, decimal */
    t = pki_scep_attr(m->si, PKI_OID_MESSAGE_TYPE);
    if (t == NULL || t->type != V_ASN1_PRINTABLESTRING
        || t->value.printablestring->length <= 0
        || t->value.printablestring->length > 3)
    {
        pki_fail(res, PKI_MALFORMED, "missing or bad messageType");
        return 0;
    }

    n = t->value.printablestring->length;
    memcpy(buf, t->value.printablestring->data, n);
    buf[n] = '\0';

    if (!isdigit((unsigned char) buf[0])) {
        pki_fail(res, PKI_MALFORMED, "bad messageType");
        return 0;
    }

    v = strtol(buf, &end, 10);
    if (*end != '\0') {
        pki_fail(res, PKI_MALFORMED, "bad messageType");
        return 0;
    }

    m->type = (int) v;

    return 1;
}


/* Stage 1.  Returns 1, or 0 with res filled (no CertRep possible). */
static int
pki_scep_parse(const unsigned char *der, size_t len, pki_scep_msg_t *m,
    pki_result_t *res)
{
    size_t                        certs, crls;
    STACK_OF(X509)               *signers;
    pki_result_t                  tmp;
    const unsigned char          *p;
    STACK_OF(PKCS7_SIGNER_INFO)  *sis;

    /* what it carries, before either reader decodes any of it */
    switch (pki_scep_p7_peek(der, len, NID_pkcs7_signed, &certs, &crls)) {
    case -1:
        pki_fail(res, PKI_MALFORMED, "the message is not a DER PKCS#7");
        return 0;
    case 0:
        pki_fail(res, PKI_MALFORMED, "the message is not a SignedData with "
                 "content");
        return 0;
    }

    if (certs + crls > PKI_SCEP_BAG_MAX) {
        pki_fail(res, PKI_MALFORMED, "the message carries %zu certificates "
                 "and %zu CRLs, more than %d", certs, crls,
                 PKI_SCEP_BAG_MAX);
        return 0;
    }

    /* the hot path: a PKCSReq signed by a self-signed RSA certificate */
    if (pki_scep_lean_parse(der, len, m)) {
        pki_result_init(&tmp);

        if (pki_scep_read_attrs(m, &tmp) && m->type == PKI_SCEP_PKCSREQ
            && m->self_signed)
        {
            return 1;
        }

        /* anything else: read again by OpenSSL's own reader */
        pki_scep_msg_free(m);
    }

    p = der;
    m->p7 = d2i_PKCS7(NULL, &p, (long) len);
    if (m->p7 == NULL || p != der + len) {
        pki_fail(res, PKI_MALFORMED, "the message is not a DER PKCS#7");
        return 0;
    }

    if (!PKCS7_type_is_signed(m->p7) || m->p7->d.sign == NULL
        || m->p7->d.sign->contents == NULL
        || !PKCS7_type_is_data(m->p7->d.sign->contents)
        || m->p7->d.sign->contents->d.data == NULL)
    {
        pki_fail(res, PKI_MALFORMED, "the message is not a SignedData with "
                 "content");
        return 0;
    }

    m->content = m->p7->d.sign->contents->d.data;

    sis = PKCS7_get_signer_info(m->p7);
    if (sis == NULL || sk_PKCS7_SIGNER_INFO_num(sis) != 1) {
        pki_fail(res, PKI_MALFORMED, "the message must have one signer");
        return 0;
    }

    m->si = sk_PKCS7_SIGNER_INFO_value(sis, 0);

    if (m->si->auth_attr == NULL
        || sk_X509_ATTRIBUTE_num(m->si->auth_attr) == 0)
    {
        pki_fail(res, PKI_MALFORMED, "the message has no signed attributes");
        return 0;
    }

    signers = PKCS7_get0_signers(m->p7, NULL, 0);
    if (signers == NULL || sk_X509_num(signers) != 1) {
        sk_X509_free(signers);
        ERR_clear_error();
        pki_fail(res, PKI_MALFORMED, "the signer's certificate is not in the "
                 "message");
        return 0;
    }

    m->signer = sk_X509_value(signers, 0);
    sk_X509_free(signers);

    return pki_scep_read_attrs(m, res);
}


/* The signature over the signed attributes and their messageDigest of the
 * content (what PKCS7_signatureVerify() checks; the signer is judged per
 * message type afterwards).  1 if both hold. */
static int
pki_scep_sig_ok(pki_scep_msg_t *m, const EVP_MD *md)
{
    int                  n, ok;
    EVP_PKEY            *pk;
    EVP_MD_CTX          *ctx;
    unsigned int         mdlen;
    unsigned char        dig[EVP_MAX_MD_SIZE], *abuf;
    ASN1_OCTET_STRING   *want;

    pk = X509_get0_pubkey(m->signer);
    want = PKCS7_digest_from_attributes(m->si->auth_attr);

    /* a key whose check costs more than a message should (a long RSA
     * exponent) is not checked, as a CSR's is not */
    if (pk == NULL || pki_int_csr_key_refused(pk) != NULL
        || want == NULL || m->si->enc_digest == NULL
        || EVP_Digest(m->content->data, (size_t) m->content->length, dig,
                      &mdlen, md, NULL) != 1
        || (unsigned int) want->length != mdlen
        || CRYPTO_memcmp(want->data, dig, mdlen) != 0)
    {
        return 0;
    }

    abuf = NULL;
    n = ASN1_item_i2d((ASN1_VALUE *) m->si->auth_attr, &abuf,
                      ASN1_ITEM_rptr(PKCS7_ATTR_VERIFY));
    if (n <= 0) {
        return 0;
    }

    ctx = EVP_MD_CTX_new();
    ok = ctx != NULL
         && EVP_DigestVerifyInit(ctx, NULL, md, NULL, pk) == 1
         && EVP_DigestVerify(ctx, m->si->enc_digest->data,
                             (size_t) m->si->enc_digest->length, abuf,
                             (size_t) n) == 1;

    EVP_MD_CTX_free(ctx);
    OPENSSL_free(abuf);

    return ok;
}


/* Stage 2.  Returns -1 on success or the failInfo. */
static int
pki_scep_verify(const pki_scep_conf_t *conf, pki_scep_msg_t *m,
    pki_result_t *res)
{
    int                   nid, i;
    time_t                when, now;
    ASN1_TYPE            *t;
    X509_ATTRIBUTE       *a;

    nid = OBJ_obj2nid(m->si->digest_alg->algorithm);

    switch (nid) {
    case NID_sha1:
    case NID_sha224:
    case NID_sha256:
    case NID_sha384:
    case NID_sha512:
        break;
    default:
        pki_fail(res, PKI_UNSUPPORTED, "unsupported digest algorithm %s",
                 OBJ_nid2sn(nid));
        return PKI_SCEP_BAD_ALG;
    }

    /*
     * The CertRep answers in the request's digest (RFC 8894 3.5.2: the
     * client picks from GetCACaps' SHA-1, SHA-256 and SHA-512, and an old
     * client that sends SHA-1 may verify nothing else).  SHA-224, taken
     * but not listed, is answered in SHA-256.  A SHA-1 signature of the
     * RA (often the CA) key covers only signed attributes whose
     * client-chosen parts (transactionID, recipientNonce) are at most 64
     * octets each next to a random senderNonce of ours: no room for the
     * near-collision blocks of a chosen-prefix collision.
     */
    m->reply_md = nid == NID_sha1 ? EVP_sha1()
                  : nid == NID_sha384 ? EVP_sha384()
                  : nid == NID_sha512 ? EVP_sha512() : EVP_sha256();

    /* the signature and the messageDigest; no chain (self-signed
     * signers are the rule in SCEP: the signer is judged per message
     * type afterwards) */
    i = pki_scep_sig_ok(m, EVP_get_digestbynid(nid));

    if (i != 1) {
        ERR_clear_error();
        pki_fail(res, PKI_BAD_SIGNATURE, "the message signature does not "
                 "verify");
        return PKI_SCEP_BAD_MSG_CHECK;
    }

    ERR_clear_error();

    /* signingTime, when present */
    i = X509at_get_attr_by_NID(m->si->auth_attr, NID_pkcs9_signingTime, -1);
    if (i >= 0 && conf->max_skew > 0) {
        a = X509at_get_attr(m->si->auth_attr, i);
        t = a != NULL ? X509_ATTRIBUTE_get0_type(a, 0) : NULL;

        if (t == NULL || (t->type != V_ASN1_UTCTIME
                          && t->type != V_ASN1_GENERALIZEDTIME))
        {
            pki_fail(res, PKI_MALFORMED, "bad signingTime");
            return PKI_SCEP_BAD_TIME;
        }

        when = pki_int_asn1_time(t->value.utctime);
        now = time(NULL);

        if (when == (time_t) -1 || when < now - conf->max_skew
            || when > now + conf->max_skew)
        {
            pki_fail(res, PKI_POLICY, "signingTime is more than %lds off",
                     conf->max_skew);
            return PKI_SCEP_BAD_TIME;
        }

        m->signed_at = when;
    }

    return -1;
}


static int
pki_scep_cipher_key(const EVP_CIPHER *c)
{
    return EVP_CIPHER_get_key_length(c);
}


/* An OAEP or MGF1 hash (alg NULL: the default, SHA-1); NULL for one not
 * accepted.  Its parameters are absent or NULL (RFC 4055 section 2.1). */
static const EVP_MD *
pki_scep_oaep_hash(const X509_ALGOR *alg)
{
    if (alg == NULL) {
        return EVP_sha1();
    }

    if (alg->parameter != NULL && alg->parameter->type != V_ASN1_NULL) {
        return NULL;
    }

    switch (OBJ_obj2nid(alg->algorithm)) {
    case NID_sha1:
        return EVP_sha1();
    case NID_sha256:
        return EVP_sha256();
    case NID_sha384:
        return EVP_sha384();
    case NID_sha512:
        return EVP_sha512();
    default:
        return NULL;
    }
}


/*
 * The key transport of the RecipientInfo to the RA: rsaEncryption (PKCS#1
 * v1.5, *md NULL) or id-RSAES-OAEP (RFC 8017 A.2.1) with RFC 4055's
 * RSAES-OAEP-params: SHA-1, SHA-256, SHA-384 or SHA-512 as the hash and
 * as MGF1's hash, and an empty label.  Windows SCEP clients (Intune, MDM)
 * send OAEP.  Parameters absent or NULL are read as the defaults (SHA-1,
 * MGF1-SHA1), as some encoders write them.  -1 when accepted, else the
 * failInfo.
 */
static int
pki_scep_ktri_alg(const X509_ALGOR *alg, const EVP_MD **md,
    const EVP_MD **mgf1, pki_result_t *res)
{
    int               nid, fi;
    X509_ALGOR       *mh;
    const ASN1_TYPE  *pt;
    RSA_OAEP_PARAMS  *op;

    *md = NULL;
    *mgf1 = NULL;

    nid = OBJ_obj2nid(alg->algorithm);

    if (nid == NID_rsaEncryption) {
        return -1;
    }

    if (nid != NID_rsaesOaep) {
        pki_fail(res, PKI_UNSUPPORTED, "unsupported key encryption %s",
                 OBJ_nid2sn(nid));
        return PKI_SCEP_BAD_ALG;
    }

    pt = alg->parameter;

    if (pt == NULL || pt->type == V_ASN1_NULL) {
        *md = EVP_sha1();
        *mgf1 = EVP_sha1();
        return -1;
    }

    op = pt->type == V_ASN1_SEQUENCE
         ? ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(RSA_OAEP_PARAMS), pt)
         : NULL;

    if (op == NULL) {
        ERR_clear_error();
        pki_fail(res, PKI_MALFORMED, "bad RSAES-OAEP parameters");
        return PKI_SCEP_BAD_MSG_CHECK;
    }

    mh = NULL;
    fi = -1;

    *md = pki_scep_oaep_hash(op->hashFunc);

    if (*md == NULL) {
        pki_fail(res, PKI_UNSUPPORTED, "unsupported RSAES-OAEP hash");
        fi = PKI_SCEP_BAD_ALG;
        goto done;
    }

    if (op->maskGenFunc == NULL) {
        *mgf1 = EVP_sha1();

    } else {
        if (OBJ_obj2nid(op->maskGenFunc->algorithm) != NID_mgf1
            || op->maskGenFunc->parameter == NULL
            || op->maskGenFunc->parameter->type != V_ASN1_SEQUENCE
            || (mh = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(X509_ALGOR),
                                     op->maskGenFunc->parameter)) == NULL
            || (*mgf1 = pki_scep_oaep_hash(mh)) == NULL)
        {
            ERR_clear_error();
            pki_fail(res, PKI_UNSUPPORTED, "unsupported RSAES-OAEP mask "
                     "generation");
            fi = PKI_SCEP_BAD_ALG;
            goto done;
        }
    }

    /* pSpecifiedEmpty only: a label is refused, not ignored */
    if (op->pSourceFunc != NULL
        && (OBJ_obj2nid(op->pSourceFunc->algorithm) != NID_pSpecified
            || op->pSourceFunc->parameter == NULL
            || op->pSourceFunc->parameter->type != V_ASN1_OCTET_STRING
            || op->pSourceFunc->parameter->value.octet_string->length != 0))
    {
        pki_fail(res, PKI_UNSUPPORTED, "RSAES-OAEP label not supported");
        fi = PKI_SCEP_BAD_ALG;
    }

done:

    if (fi != -1) {
        *md = NULL;
        *mgf1 = NULL;
    }

    X509_ALGOR_free(mh);
    RSA_OAEP_PARAMS_free(op);
    return fi;
}


/* Stage 4: the EnvelopedData with the RA key.  Returns -1 on success or the
 * failInfo; -2 for a server-side failure (res says which). */
static int
pki_scep_open(const pki_scep_conf_t *conf, pki_scep_msg_t *m,
    pki_result_t *res)
{
    int                           i, nid, klen, ivlen, outl, fin, found;
    X509                         *ra;
    PKCS7                        *env;
    size_t                        cekl, clen, certs, crls;
    pki_status_t                  st;
    unsigned char                 key[32], iv[16], *cek, *out;
    X509_ALGOR                   *alg;
    pki_result_t                  tmp;
    EVP_CIPHER_CTX               *ctx;
    const EVP_MD                 *omd, *mgf1;
    const EVP_CIPHER             *cipher;
    PKCS7_RECIP_INFO             *ri;
    ASN1_OCTET_STRING            *data, *ivs;
    const unsigned char          *p;
    STACK_OF(PKCS7_RECIP_INFO)   *ris;

    data = m->content;
    env = NULL;
    ctx = NULL;
    out = NULL;
    cek = NULL;

    /* its type before d2i_PKCS7() reads it (a SignedData would have
     * every certificate in it decoded) */
    if (data->length <= 0
        || pki_scep_p7_peek(data->data, (size_t) data->length,
                            NID_pkcs7_enveloped, &certs, &crls) != 1)
    {
        pki_fail(res, PKI_MALFORMED, "messageData is not an EnvelopedData");
        return PKI_SCEP_BAD_MSG_CHECK;
    }

    p = data->data;
    env = d2i_PKCS7(NULL, &p, data->length);
    if (env == NULL || p != data->data + data->length
        || !PKCS7_type_is_enveloped(env) || env->d.enveloped == NULL
        || env->d.enveloped->enc_data == NULL
        || env->d.enveloped->enc_data->enc_data == NULL)
    {
        PKCS7_free(env);
        pki_fail(res, PKI_MALFORMED, "messageData is not an EnvelopedData");
        return PKI_SCEP_BAD_MSG_CHECK;
    }

    alg = env->d.enveloped->enc_data->algorithm;
    nid = OBJ_obj2nid(alg->algorithm);

    switch (nid) {
    case NID_aes_128_cbc:
        cipher = EVP_aes_128_cbc();
        m->reply_cipher = cipher;
        break;
    case NID_aes_192_cbc:
        cipher = EVP_aes_192_cbc();
        m->reply_cipher = cipher;
        break;
    case NID_aes_256_cbc:
        cipher = EVP_aes_256_cbc();
        m->reply_cipher = cipher;
        break;
    case NID_des_ede3_cbc:
        cipher = EVP_des_ede3_cbc();
        m->reply_cipher = cipher;
        break;
    case NID_des_cbc:
        if (!conf->accept_des) {
            PKCS7_free(env);
            pki_fail(res, PKI_UNSUPPORTED, "the request is encrypted with "
                     "single DES (refused; scep_accept_des allows it)");
            return PKI_SCEP_BAD_ALG;
        }
        /* DES-CBC is 3DES-EDE with three equal keys; the answer goes out
         * in 3DES, never single DES */
        cipher = EVP_des_ede3_cbc();
        m->reply_cipher = cipher;
        break;
    default:
        PKCS7_free(env);
        pki_fail(res, PKI_UNSUPPORTED, "unsupported content encryption %s",
                 OBJ_nid2sn(nid));
        return PKI_SCEP_BAD_ALG;
    }

    klen = nid == NID_des_cbc ? 8 : pki_scep_cipher_key(cipher);
    ivlen = EVP_CIPHER_get_iv_length(cipher);

    if (alg->parameter == NULL || alg->parameter->type != V_ASN1_OCTET_STRING
        || alg->parameter->value.octet_string->length != ivlen
        || ivlen > (int) sizeof(iv))
    {
        PKCS7_free(env);
        pki_fail(res, PKI_MALFORMED, "bad content encryption IV");
        return PKI_SCEP_BAD_MSG_CHECK;
    }

    ivs = alg->parameter->value.octet_string;
    memcpy(iv, ivs->data, ivlen);

    /* the RecipientInfo addressed to the RA */
    ra = pki_scep_ra_cert(conf);
    ris = env->d.enveloped->recipientinfo;
    found = 0;
    ri = NULL;

    for (i = 0; i < sk_PKCS7_RECIP_INFO_num(ris); i++) {
        ri = sk_PKCS7_RECIP_INFO_value(ris, i);

        if (ri->issuer_and_serial != NULL
            && X509_NAME_cmp(ri->issuer_and_serial->issuer,
                             X509_get_issuer_name(ra)) == 0
            && ASN1_INTEGER_cmp(ri->issuer_and_serial->serial,
                                X509_get0_serialNumber(ra)) == 0)
        {
            found = 1;
            break;
        }
    }

    if (!found) {
        PKCS7_free(env);
        pki_fail(res, PKI_MALFORMED, "the request is not encrypted to the "
                 "RA certificate");
        return PKI_SCEP_BAD_MSG_CHECK;
    }

    i = pki_scep_ktri_alg(ri->key_enc_algor, &omd, &mgf1, res);
    if (i != -1) {
        PKCS7_free(env);
        return i;
    }

    /* a client that chose OAEP may have a key or a policy that refuses
     * PKCS#1 v1.5: its reply comes back the way it came */
    m->reply_oaep = omd;
    m->reply_mgf1 = mgf1;

    /* with its AlgorithmIdentifier as it came (the hash parameters NULL
     * or absent, whichever the client writes, and so reads) */
    if (omd != NULL) {
        m->reply_kt_len = i2d_X509_ALGOR(ri->key_enc_algor, &m->reply_kt);
        if (m->reply_kt_len <= 0) {
            m->reply_kt = NULL;
            PKCS7_free(env);
            pki_fail(res, PKI_INTERNAL, "cannot keep the key transport");
            return PKI_SCEP_BAD_MSG_CHECK;
        }
    }

    /* and so must fit its key: RSAES-OAEP carries at most k - 2 hLen - 2
     * octets (RFC 8017 7.1.1), which a small key and a large hash do not
     * leave for the reply's content key (RSA-1024 with SHA-512); found
     * only after issuing, the certificate would be recorded and never
     * delivered */
    if (omd != NULL && m->signer != NULL) {
        EVP_PKEY  *spk = X509_get0_pubkey(m->signer);

        if (spk != NULL && EVP_PKEY_get_base_id(spk) == EVP_PKEY_RSA
            && EVP_PKEY_get_size(spk) < 2 * EVP_MD_get_size(omd) + 2
                                        + EVP_CIPHER_get_key_length(cipher))
        {
            PKCS7_free(env);
            pki_fail(res, PKI_UNSUPPORTED, "RSAES-OAEP with %s cannot carry "
                     "the answer's %d-octet content key to the requester's "
                     "%d-bit key", EVP_MD_get0_name(omd),
                     EVP_CIPHER_get_key_length(cipher),
                     EVP_PKEY_get_bits(spk));
            return PKI_SCEP_BAD_ALG;
        }
    }

    /*
     * A bad padding (PKCS#1 v1.5 or OAEP) must not be told apart from a
     * bad content: use a random content key then (as OpenSSL's PKCS7 code
     * does against the million message attack, and against Manger's for
     * OAEP) and let the content decryption fail.
     */
    pki_result_init(&tmp);
    st = pki_key_decrypt_oaep(pki_scep_ra_key(conf), omd, mgf1,
                              ri->enc_key->data,
                              (size_t) ri->enc_key->length, &cek, &cekl,
                              &tmp);

    if (st == PKI_UNAVAILABLE || st == PKI_INTERNAL) {
        PKCS7_free(env);
        pki_fail(res, st, "%s", tmp.detail);
        pki_log(res, "%s", tmp.log);
        return -2;
    }

    if (st == PKI_OK && cekl == (size_t) klen) {
        memcpy(key, cek, klen);
    } else if (RAND_bytes(key, klen) != 1) {
        if (cek != NULL) {
            OPENSSL_cleanse(cek, cekl);
            free(cek);
        }
        PKCS7_free(env);
        pki_fail(res, PKI_INTERNAL, "RAND_bytes() failed");
        return -2;
    }

    if (cek != NULL) {
        OPENSSL_cleanse(cek, cekl);
        free(cek);
    }

    if (nid == NID_des_cbc) {
        memcpy(key + 8, key, 8);
        memcpy(key + 16, key, 8);
    }

    clen = (size_t) env->d.enveloped->enc_data->enc_data->length;
    out = malloc(clen + 32);
    ctx = EVP_CIPHER_CTX_new();

    if (out == NULL || ctx == NULL) {
        OPENSSL_cleanse(key, sizeof(key));
        EVP_CIPHER_CTX_free(ctx);
        free(out);
        PKCS7_free(env);
        pki_fail(res, PKI_INTERNAL, "out of memory");
        return -2;
    }

    outl = 0;
    fin = 0;

    i = EVP_DecryptInit_ex(ctx, cipher, NULL, key, iv) == 1
        && EVP_DecryptUpdate(ctx, out, &outl,
                             env->d.enveloped->enc_data->enc_data->data,
                             (int) clen) == 1
        && EVP_DecryptFinal_ex(ctx, out + outl, &fin) == 1;

    OPENSSL_cleanse(key, sizeof(key));
    EVP_CIPHER_CTX_free(ctx);
    PKCS7_free(env);
    ERR_clear_error();

    if (!i || outl + fin <= 0) {
        OPENSSL_cleanse(out, clen + 32);
        free(out);
        pki_fail(res, PKI_BAD_SIGNATURE, "cannot decrypt messageData");
        return PKI_SCEP_BAD_MSG_CHECK;
    }

    m->data = out;
    m->data_len = (size_t) (outl + fin);

    return -1;
}


/* ---- building a signed reply ------------------------------------------------ */

/*
 * The pkcsPKIEnvelope of a SUCCESS: an EnvelopedData of inner for the
 * requester (RSA key transport: PKCS#1 v1.5, or RSAES-OAEP with hash oaep
 * and MGF1 hash mgf1 when oaep is not NULL, named by kt, the DER of the
 * request's AlgorithmIdentifier; content encryption cipher with a fresh
 * key and IV), appended to b.  0 on failure.
 */
static int
pki_scep_envelope(pki_der_t *b, X509 *rcpt, const EVP_CIPHER *cipher,
    const EVP_MD *oaep, const EVP_MD *mgf1, const unsigned char *kt,
    int kt_len, const unsigned char *inner, size_t inner_len)
{
    int              ok, outl, fin, klen, ivlen;
    size_t           m0, m1, m2, m3, ekl;
    EVP_PKEY        *pk;
    EVP_PKEY_CTX    *pctx;
    unsigned char    key[EVP_MAX_KEY_LENGTH], iv[EVP_MAX_IV_LENGTH], *ek,
                    *ct;
    EVP_CIPHER_CTX  *ctx;

    pk = X509_get0_pubkey(rcpt);
    klen = EVP_CIPHER_get_key_length(cipher);
    ivlen = EVP_CIPHER_get_iv_length(cipher);

    if (pk == NULL || EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA
        || (oaep != NULL && (mgf1 == NULL || kt == NULL || kt_len <= 0))
        || inner_len > INT_MAX - 64 || klen <= 0 || ivlen <= 0
        || klen > (int) sizeof(key) || ivlen > (int) sizeof(iv))
    {
        return 0;
    }

    ok = 0;
    ek = NULL;
    ct = malloc(inner_len + 64);
    ctx = EVP_CIPHER_CTX_new();
    pctx = EVP_PKEY_CTX_new(pk, NULL);

    if (ct == NULL || ctx == NULL || pctx == NULL
        || EVP_EncryptInit_ex(ctx, cipher, NULL, NULL, NULL) != 1
        || EVP_CIPHER_CTX_rand_key(ctx, key) != 1   /* DES parity too */
        || RAND_bytes(iv, ivlen) != 1
        || EVP_EncryptInit_ex(ctx, NULL, NULL, key, iv) != 1
        || EVP_EncryptUpdate(ctx, ct, &outl, inner, (int) inner_len) != 1
        || EVP_EncryptFinal_ex(ctx, ct + outl, &fin) != 1)
    {
        goto done;
    }

    /* the content key for the requester */
    if (EVP_PKEY_encrypt_init(pctx) != 1
        || (oaep == NULL
            && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
        || (oaep != NULL
            && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING)
                != 1
                || EVP_PKEY_CTX_set_rsa_oaep_md(pctx, oaep) != 1
                || EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, mgf1) != 1)))
    {
        goto done;
    }

    if (EVP_PKEY_encrypt(pctx, NULL, &ekl, key, (size_t) klen) != 1
        || (ek = malloc(ekl)) == NULL
        || EVP_PKEY_encrypt(pctx, ek, &ekl, key, (size_t) klen) != 1)
    {
        goto done;
    }

    /* ContentInfo { envelopedData, [0] EnvelopedData { 0,
     *   SET { RecipientInfo { 0, IssuerAndSerial, rsaEncryption or
     *                         id-RSAES-OAEP, key } },
     *   EncryptedContentInfo { data, { cipher, IV }, [0] ciphertext } } } */
    m0 = b->n;
    pki_der_obj(b, NID_pkcs7_enveloped);
    m1 = b->n;
    m2 = b->n;
    pki_der_put(b, "\x02\x01\x00", 3);

    m3 = b->n;
    pki_der_put(b, "\x02\x01\x00", 3);
    pki_der_ias(b, rcpt);
    if (oaep != NULL) {
        pki_der_put(b, kt, (size_t) kt_len);
    } else {
        pki_der_alg_null(b, NID_rsaEncryption);
    }
    pki_der_tlv(b, 0x04, ek, ekl);
    pki_der_wrap(b, m3, 0x30);
    pki_der_wrap(b, m3, 0x31);

    m3 = b->n;
    pki_der_obj(b, NID_pkcs7_data);
    {
        size_t  ma = b->n;

        pki_der_obj(b, EVP_CIPHER_get_type(cipher));
        pki_der_tlv(b, 0x04, iv, (size_t) ivlen);
        pki_der_wrap(b, ma, 0x30);
    }
    pki_der_tlv(b, 0x80, ct, (size_t) (outl + fin));
    pki_der_wrap(b, m3, 0x30);

    pki_der_wrap(b, m2, 0x30);
    pki_der_wrap(b, m1, 0xa0);
    pki_der_wrap(b, m0, 0x30);

    ok = !b->err;

done:

    OPENSSL_cleanse(key, sizeof(key));
    EVP_CIPHER_CTX_free(ctx);
    EVP_PKEY_CTX_free(pctx);
    free(ct);
    free(ek);
    ERR_clear_error();

    return ok;
}


/* DER SET OF order: the encodings compared as octet strings */
static int
pki_der_cmp(const void *a, const void *b)
{
    const pki_der_t  *x = a, *y = b;
    size_t            n;
    int               c;

    n = x->n < y->n ? x->n : y->n;
    c = memcmp(x->d, y->d, n);

    return c != 0 ? c : (x->n > y->n) - (x->n < y->n);
}


/* Attribute { oid, SET { value } }; v holds the value's DER (freed and
 * cleared here) */
static void
pki_der_attr(pki_der_t *a, const ASN1_OBJECT *oid, pki_der_t *v)
{
    size_t          mark;
    unsigned char  *der = NULL;

    if (v->err || oid == NULL) {
        a->err = 1;
    }

    pki_der_i2d(a, i2d_ASN1_OBJECT(oid, &der), &der);
    mark = a->n;
    pki_der_put(a, v->d, v->n);
    pki_der_wrap(a, mark, 0x31);
    pki_der_wrap(a, 0, 0x30);

    free(v->d);
    memset(v, 0, sizeof(*v));
}


#define PKI_SCEP_NATTR  9

/*
 * A SignedData (in its ContentInfo) signed by key for signer: content
 * (id-data; NULL: left out, as in a FAILURE or PENDING CertRep), the
 * signer's certificate then those of more (the signer and duplicates
 * dropped), one SignerInfo whose signed attributes are attrs[0..na) plus
 * contentType, signingTime and messageDigest (added here: attrs has room for
 * three more), all in DER SET OF order.  Signed through pki_key_sign (the
 * signature is verified before it is used; a token key stays in the
 * token).  md: the digest; the signature algorithm follows the signer's
 * key (RSA: rsaEncryption, EC: ecdsa-with-<md>), as PKCS7_sign() writes
 * them.  1 with *out (malloc'd), or 0 with res filled.
 */
static int
pki_scep_signed(pki_key_t *key, X509 *signer, STACK_OF(X509) *more,
    const EVP_MD *md, const unsigned char *content, size_t len,
    pki_der_t *attrs, int na, unsigned char **out, size_t *outlen,
    pki_result_t *res)
{
    int              i, j, ok, dup, sigalg;
    X509            *x;
    size_t           m1, m2, m3, siglen;
    ASN1_TIME       *now;
    pki_der_t        sa, b, v;
    unsigned char    dig[EVP_MAX_MD_SIZE], *der, *sig;
    unsigned int     diglen;

    ok = 0;
    sig = NULL;
    der = NULL;
    memset(&sa, 0, sizeof(sa));
    memset(&b, 0, sizeof(b));
    memset(&v, 0, sizeof(v));
    *out = NULL;
    *outlen = 0;

    switch (EVP_PKEY_get_base_id(X509_get0_pubkey(signer))) {
    case EVP_PKEY_RSA:
        sigalg = NID_rsaEncryption;
        break;
    case EVP_PKEY_EC:
        if (!OBJ_find_sigid_by_algs(&sigalg, EVP_MD_get_type(md),
                                    EVP_PKEY_EC))
        {
            sigalg = NID_undef;
        }
        break;
    default:
        sigalg = NID_undef;
    }

    if (sigalg == NID_undef) {
        pki_fail(res, PKI_INTERNAL, "the signer's key cannot sign a PKCS#7 "
                 "SignedData");
        return 0;
    }

    now = X509_gmtime_adj(NULL, 0);
    if (now == NULL
        || EVP_Digest(content != NULL ? content : (const unsigned char *) "",
                      content != NULL ? len : 0, dig, &diglen, md, NULL) != 1)
    {
        ASN1_TIME_free(now);
        pki_fail(res, PKI_INTERNAL, "cannot build the SignedData");
        return 0;
    }

    pki_der_obj(&v, NID_pkcs7_data);
    pki_der_attr(&attrs[na++], OBJ_nid2obj(NID_pkcs9_contentType), &v);
    pki_der_i2d(&v, i2d_ASN1_TIME(now, &der), &der);
    pki_der_attr(&attrs[na++], OBJ_nid2obj(NID_pkcs9_signingTime), &v);
    pki_der_tlv(&v, 0x04, dig, diglen);
    pki_der_attr(&attrs[na++], OBJ_nid2obj(NID_pkcs9_messageDigest), &v);
    ASN1_TIME_free(now);

    for (i = 0; i < na; i++) {
        if (attrs[i].err) {
            pki_fail(res, PKI_INTERNAL, "cannot add the signed attributes");
            goto failed;
        }
    }

    qsort(attrs, (size_t) na, sizeof(pki_der_t), pki_der_cmp);

    for (i = 0; i < na; i++) {
        pki_der_put(&sa, attrs[i].d, attrs[i].n);
    }
    pki_der_wrap(&sa, 0, 0x31);     /* the SET OF that is signed */

    if (sa.err) {
        pki_fail(res, PKI_INTERNAL, "cannot encode the attributes");
        goto failed;
    }

    if (pki_key_sign(key, md, sa.d, sa.n, &sig, &siglen, res) != PKI_OK) {
        goto failed;
    }

    sa.d[0] = 0xa0;                 /* in the SignerInfo: [0] IMPLICIT */

    /* ContentInfo { signedData, [0] SignedData { 1, SET { md },
     *   ContentInfo { data [, [0] OCTET STRING content] },
     *   [0] { certificates }, SET { SignerInfo } } } */
    pki_der_obj(&b, NID_pkcs7_signed);
    m1 = b.n;
    pki_der_put(&b, "\x02\x01\x01", 3);

    m2 = b.n;
    pki_der_alg_null(&b, EVP_MD_get_type(md));
    pki_der_wrap(&b, m2, 0x31);

    m2 = b.n;
    pki_der_obj(&b, NID_pkcs7_data);
    if (content != NULL) {
        m3 = b.n;
        pki_der_tlv(&b, 0x04, content, len);
        pki_der_wrap(&b, m3, 0xa0);
    }
    pki_der_wrap(&b, m2, 0x30);

    m2 = b.n;
    pki_der_i2d(&b, i2d_X509(signer, &der), &der);
    for (i = 0; i < sk_X509_num(more); i++) {
        x = sk_X509_value(more, i);
        dup = X509_cmp(x, signer) == 0;

        for (j = 0; j < i && !dup; j++) {
            dup = X509_cmp(sk_X509_value(more, j), x) == 0;
        }

        if (!dup) {
            pki_der_i2d(&b, i2d_X509(x, &der), &der);
        }
    }
    pki_der_wrap(&b, m2, 0xa0);

    m2 = b.n;
    pki_der_put(&b, "\x02\x01\x01", 3);
    pki_der_ias(&b, signer);
    pki_der_alg_null(&b, EVP_MD_get_type(md));
    pki_der_put(&b, sa.d, sa.n);
    m3 = b.n;
    pki_der_obj(&b, sigalg);
    if (sigalg == NID_rsaEncryption) {
        pki_der_put(&b, "\x05\x00", 2);
    }
    pki_der_wrap(&b, m3, 0x30);
    pki_der_tlv(&b, 0x04, sig, siglen);
    pki_der_wrap(&b, m2, 0x30);
    pki_der_wrap(&b, m2, 0x31);

    pki_der_wrap(&b, m1, 0x30);
    pki_der_wrap(&b, m1, 0xa0);
    pki_der_wrap(&b, 0, 0x30);

    if (b.err) {
        pki_fail(res, PKI_INTERNAL, "cannot encode the SignedData");
        goto failed;
    }

    *out = b.d;
    *outlen = b.n;
    b.d = NULL;
    ok = 1;

failed:

    free(v.d);
    free(sa.d);
    free(b.d);
    free(sig);
    ERR_clear_error();

    return ok;
}


/*
 * The CertRep: SignedData signed by the RA key over contentType,
 * signingTime, messageDigest and the SCEP attributes; content: the inner
 * degenerate PKCS#7 (success only) encrypted to the requester.
 * Returns 1, or 0 with res filled (HTTP 500/503).
 */
static int
pki_scep_certrep(const pki_scep_conf_t *conf, pki_scep_msg_t *m, int status,
    int fail, const unsigned char *inner, size_t inner_len,
    pki_scep_resp_t *resp)
{
    int              i, na, ok;
    char             num[3][16];
    size_t           bodylen;
    pki_der_t        env, attr[PKI_SCEP_NATTR], v;
    unsigned char    nonce[16], *body;

    ok = 0;
    na = 0;
    memset(&env, 0, sizeof(env));
    memset(attr, 0, sizeof(attr));
    memset(&v, 0, sizeof(v));

    resp->pki_status = status;
    resp->fail_info = status == PKI_SCEP_FAILURE ? fail : -1;

    /* the encrypted reply for a success */

    if (status == PKI_SCEP_SUCCESS) {
        if (EVP_PKEY_get_base_id(X509_get0_pubkey(m->signer)) != EVP_PKEY_RSA)
        {
            pki_fail(&resp->res, PKI_UNSUPPORTED, "the requester's key is "
                     "not RSA: cannot encrypt the reply");
            goto failed;
        }

        if (!pki_scep_envelope(&env, m->signer, m->reply_cipher != NULL
                                                ? m->reply_cipher
                                                : EVP_aes_128_cbc(),
                               m->reply_oaep, m->reply_mgf1, m->reply_kt,
                               m->reply_kt_len, inner, inner_len))
        {
            pki_fail(&resp->res, PKI_INTERNAL, "cannot encrypt the reply");
            goto failed;
        }
    }

    if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
        pki_fail(&resp->res, PKI_INTERNAL, "cannot build the CertRep");
        goto failed;
    }

    /* the SCEP attributes (contentType, signingTime and messageDigest
     * come with the SignedData) */
    snprintf(num[0], sizeof(num[0]), "%d", PKI_SCEP_CERTREP);
    snprintf(num[1], sizeof(num[1]), "%d", status);
    snprintf(num[2], sizeof(num[2]), "%d", fail);

    pki_der_tlv(&v, 0x13, num[0], strlen(num[0]));
    pki_der_attr(&attr[na++], pki_scep_oids[PKI_OID_MESSAGE_TYPE], &v);
    pki_der_tlv(&v, 0x13, num[1], strlen(num[1]));
    pki_der_attr(&attr[na++], pki_scep_oids[PKI_OID_PKI_STATUS], &v);
    if (status == PKI_SCEP_FAILURE) {
        pki_der_tlv(&v, 0x13, num[2], strlen(num[2]));
        pki_der_attr(&attr[na++], pki_scep_oids[PKI_OID_FAIL_INFO], &v);
    }
    pki_der_tlv(&v, 0x13, m->tid, strlen(m->tid));
    pki_der_attr(&attr[na++], pki_scep_oids[PKI_OID_TRANSACTION_ID], &v);
    pki_der_tlv(&v, 0x04, m->nonce, m->nonce_len);
    pki_der_attr(&attr[na++], pki_scep_oids[PKI_OID_RECIPIENT_NONCE], &v);
    pki_der_tlv(&v, 0x04, nonce, sizeof(nonce));
    pki_der_attr(&attr[na++], pki_scep_oids[PKI_OID_SENDER_NONCE], &v);

    /* signed with the RA key (verified) in the request's digest (SHA-256
     * when not yet known); no pkcsPKIEnvelope in a FAILURE or PENDING
     * CertRep */
    if (!pki_scep_signed(pki_scep_ra_key(conf), pki_scep_ra_cert(conf), NULL,
                         m->reply_md != NULL ? m->reply_md : EVP_sha256(),
                         env.n > 0 ? env.d : NULL, env.n,
                         attr, na, &body, &bodylen, &resp->res))
    {
        goto failed;
    }

    pki_scep_resp_free(resp);

    resp->body = body;
    resp->body_len = bodylen;
    resp->http_status = 200;
    resp->content_type = PKI_SCEP_CT_MESSAGE;
    ok = 1;

failed:

    for (i = 0; i < PKI_SCEP_NATTR; i++) {
        free(attr[i].d);
    }
    free(env.d);
    free(v.d);
    ERR_clear_error();

    return ok;
}


/* A FAILURE CertRep; res already holds the reason for the log. */
static void
pki_scep_fail(const pki_scep_conf_t *conf, pki_scep_msg_t *m, int fail,
    pki_scep_resp_t *resp)
{
    pki_result_t  keep;

    keep = resp->res;

    if (!pki_scep_certrep(conf, m, PKI_SCEP_FAILURE, fail, NULL, 0, resp)) {
        pki_scep_http_error(resp, 0);
        return;
    }

    /* the log keeps why the request failed, not how the answer went */
    resp->res = keep;
    if (resp->res.status == PKI_OK) {
        resp->res.status = PKI_MALFORMED;
    }
}


/* Success: the certificate (and optionally a CRL) in a degenerate PKCS#7,
 * encrypted to the requester.  1 when that is the answer, 0 when another
 * one is (an HTTP error, a FAILURE CertRep): nothing was delivered. */
static int
pki_scep_success(const pki_scep_conf_t *conf, pki_scep_msg_t *m, X509 *cert,
    X509_CRL *crl, pki_scep_resp_t *resp)
{
    size_t          len;
    unsigned char  *der;

    if (!pki_scep_degenerate(cert, NULL, NULL, crl, &der, &len)) {
        pki_fail(&resp->res, PKI_INTERNAL, "cannot encode the reply");
        pki_scep_http_error(resp, 500);
        return 0;
    }

    if (!pki_scep_certrep(conf, m, PKI_SCEP_SUCCESS, 0, der, len, resp)) {
        OPENSSL_free(der);
        if (resp->res.status == PKI_UNSUPPORTED) {
            /* cannot encrypt to the requester's key */
            pki_scep_fail(conf, m, PKI_SCEP_BAD_ALG, resp);
            return 0;
        }
        pki_scep_http_error(resp, 0);
        return 0;
    }

    OPENSSL_free(der);

    return 1;
}


/* ---- transactionID ------------------------------------------------------------ */

/*
 * The transactionID as a hash of the public key is draft-nourse-scep's
 * rule, which the clients below follow (RFC 8894 3.2.1.1 asks only for a
 * unique PrintableString: scep_transaction_id any takes any).
 * Clients differ in the hash and the encoding: micromdm 2.x takes base64
 * of SHA-256 over the subjectPublicKey bits (the PKCS#1 key) cut to 160
 * bits, jscep hex of a digest of the SubjectPublicKeyInfo, sscep hex MD5.
 * Accepted: MD5, SHA-1, SHA-256 or SHA-512 over either, whole or cut to
 * 160 bits, as hex (any case) or base64.
 */
static int
pki_scep_tid_matches(const char *tid, X509_PUBKEY *xpk)
{
    int                   n, i, j, k, len[2];
    char                  text[2 * EVP_MAX_MD_SIZE + 1];
    unsigned char        *spki, md[EVP_MAX_MD_SIZE];
    unsigned int          mdlen, tl;
    const unsigned char  *in[2];
    const EVP_MD         *mds[4];
    const unsigned char  *bits;
    int                   bitslen, match;

    /* the DER of the structure as parsed: no OpenSSL 3 encoder runs */
    spki = NULL;
    match = 0;

    n = i2d_X509_PUBKEY(xpk, &spki);
    if (n <= 0
        || X509_PUBKEY_get0_param(NULL, &bits, &bitslen, NULL, xpk) != 1)
    {
        OPENSSL_free(spki);
        ERR_clear_error();
        return 0;
    }

    in[0] = spki;
    len[0] = n;
    in[1] = bits;
    len[1] = bitslen;

    mds[0] = EVP_md5();
    mds[1] = EVP_sha1();
    mds[2] = EVP_sha256();
    mds[3] = EVP_sha512();

    for (i = 0; i < 2 && !match; i++) {
        for (j = 0; j < 4 && !match; j++) {
            if (mds[j] == NULL
                || EVP_Digest(in[i], (size_t) len[i], md, &mdlen, mds[j],
                              NULL) != 1)
            {
                ERR_clear_error();
                continue;
            }

            /* the whole digest, and its first 160 bits (micromdm 2.x:
             * SHA-256 truncated to the size of a SHA-1 key identifier) */
            for (k = 0; k < 2 && !match; k++) {
                tl = (k == 0) ? mdlen : 20;

                if (k == 1 && mdlen <= 20) {
                    break;
                }

                pki_hex(md, tl, text, 0);
                if (strcasecmp(text, tid) == 0) {
                    match = 1;
                    break;
                }

                if (EVP_EncodeBlock((unsigned char *) text, md, (int) tl) > 0
                    && strcmp(text, tid) == 0)
                {
                    match = 1;
                }
            }
        }
    }

    OPENSSL_free(spki);

    return match;
}


/* The two SubjectPublicKeyInfos are the same key: compared as DER, which
 * avoids OpenSSL 3's encoder/decoder round trips of EVP_PKEY_eq. */
static int
pki_scep_same_key(X509_PUBKEY *a, X509_PUBKEY *b)
{
    int             la, lb, same;
    unsigned char  *da, *db;

    da = NULL;
    db = NULL;
    la = i2d_X509_PUBKEY(a, &da);
    lb = i2d_X509_PUBKEY(b, &db);

    same = la > 0 && la == lb && memcmp(da, db, (size_t) la) == 0;

    OPENSSL_free(da);
    OPENSSL_free(db);

    return same;
}


/* ---- challenges ----------------------------------------------------------------- */

/* The challengePassword of the CSR: 1, 0 (none) or -1 (malformed).  A
 * BMPString or UniversalString (RFC 2985 allows them; NDES-era clients
 * send BMPString) is compared as its UTF-8: the request's decoded copy
 * holds that text from then on, as a UTF8String, so that *pw lives as
 * long as csr (the bytes received, which are hashed and stored, do not
 * change). */
static int
pki_scep_csr_challenge(X509_REQ *csr, const unsigned char **pw, size_t *len)
{
    int              i;
    size_t           n;
    ASN1_TYPE       *t;
    ASN1_STRING     *u;
    unsigned char   *buf;
    X509_ATTRIBUTE  *a;

    i = X509_REQ_get_attr_by_NID(csr, NID_pkcs9_challengePassword, -1);
    if (i < 0) {
        return 0;
    }

    if (X509_REQ_get_attr_by_NID(csr, NID_pkcs9_challengePassword, i) >= 0) {
        return -1;
    }

    a = X509_REQ_get_attr(csr, i);
    if (a == NULL || X509_ATTRIBUTE_count(a) != 1) {
        return -1;
    }

    t = X509_ATTRIBUTE_get0_type(a, 0);
    if (!pki_int_challenge_text(t, PKI_SCEP_CHALLENGE_MAX, pw, &n, &buf)) {
        return -1;
    }

    if (buf != NULL) {
        u = ASN1_UTF8STRING_new();
        if (u == NULL || !ASN1_STRING_set(u, buf, (int) n)) {
            ASN1_UTF8STRING_free(u);
            OPENSSL_clear_free(buf, n);
            return -1;
        }

        OPENSSL_clear_free(buf, n);
        ASN1_TYPE_set(t, V_ASN1_UTF8STRING, u);
        *pw = u->data;
    }

    if (n == 0 || n > PKI_SCEP_CHALLENGE_MAX) {
        return -1;
    }

    *len = n;

    return 1;
}


/* Constant time in the secret: both sides are hashed first. */
static int
pki_scep_static_ok(const pki_scep_conf_t *conf, const unsigned char *pw,
    size_t len)
{
    unsigned char  a[32], b[32];
    unsigned int   n;

    if (conf->challenge == NULL || conf->challenge_len == 0) {
        return 0;
    }

    if (EVP_Digest(pw, len, a, &n, EVP_sha256(), NULL) != 1
        || EVP_Digest(conf->challenge, conf->challenge_len, b, &n,
                      EVP_sha256(), NULL) != 1)
    {
        return 0;
    }

    return CRYPTO_memcmp(a, b, 32) == 0;
}


static void
pki_scep_chal_clear(pki_scep_chal_t *c)
{
    free(c->raw);
    free(c->taken);
    memset(c, 0, sizeof(pki_scep_chal_t));
}


/* Looks the one-time challenge up without consuming it.  PKI_OK, or
 * PKI_NOT_FOUND (unknown, expired or used), or PKI_UNAVAILABLE. */
static pki_status_t
pki_scep_chal_peek(pki_redis_t *r, const unsigned char *pw, size_t len,
    pki_scep_chal_t *c, pki_result_t *res)
{
    char        *nl;
    redisReply  *reply;
    const char  *argv[2];
    size_t       lens[2];

    memset(c, 0, sizeof(pki_scep_chal_t));

    if (r == NULL) {
        return pki_fail(res, PKI_UNAVAILABLE, "no challenge store");
    }

    if (!pki_scep_rkey(r, "chal", pw, len, c->hkey, sizeof(c->hkey))
        || !pki_scep_rkey(r, "chaltaken", pw, len, c->tkey, sizeof(c->tkey)))
    {
        return pki_fail(res, PKI_INTERNAL, "cannot build the key");
    }

    argv[0] = "GET";
    lens[0] = 3;
    argv[1] = c->hkey;
    lens[1] = strlen(c->hkey);

    reply = pki_int_redis_cmd(r, 2, argv, lens, res);
    if (reply == NULL) {
        return res->status != PKI_OK ? res->status : PKI_UNAVAILABLE;
    }

    if (reply->type == REDIS_REPLY_NIL) {
        freeReplyObject(reply);
        return PKI_NOT_FOUND;
    }

    if (reply->type != REDIS_REPLY_STRING || reply->len > 4096) {
        freeReplyObject(reply);
        pki_int_redis_drop(r);
        return pki_fail(res, PKI_UNAVAILABLE, "redis: unexpected reply");
    }

    c->raw = malloc(reply->len + 1);
    if (c->raw == NULL) {
        freeReplyObject(reply);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    memcpy(c->raw, reply->str, reply->len);
    c->raw[reply->len] = '\0';
    freeReplyObject(reply);

    /* "TEMPLATE\nCN\nSAN\nCA" (without CA from an older version) */
    c->tmpl = c->raw;
    c->cn = "";
    c->san = "";
    c->ca = "";
    nl = strchr(c->raw, '\n');
    if (nl == NULL) {
        return PKI_OK;
    }

    *nl = '\0';
    c->cn = nl + 1;
    nl = strchr(nl + 1, '\n');
    if (nl == NULL) {
        return PKI_OK;
    }

    *nl = '\0';
    c->san = nl + 1;
    nl = strchr(nl + 1, '\n');
    if (nl == NULL) {
        return PKI_OK;
    }

    *nl = '\0';
    c->ca = nl + 1;

    return PKI_OK;
}


/* A request's token for what it writes (one-time challenge take, replay
 * record): random, in hex through SHA-256 as the keys are (65 bytes).
 * 0 with res filled when there is no randomness. */
static int
pki_scep_token(char *token, pki_result_t *res)
{
    unsigned char  rnd[16];

    if (RAND_bytes(rnd, sizeof(rnd)) != 1
        || !pki_sha256_hex(rnd, sizeof(rnd), token))
    {
        ERR_clear_error();
        pki_fail(res, PKI_INTERNAL, "no randomness");
        return 0;
    }

    return 1;
}


/*
 * Consumes the challenge KEYS[1]: one winner.  PKI_OK when this request
 * won (the value and its time left kept for pki_scep_chal_give_back).
 * The winner's token ARGV[1] stays a minute in KEYS[2] with what it took,
 * so that the same take sent again (hiredis resends a command whose
 * connection broke before the answer, which Redis may have run) answers
 * as the first did instead of "already used", and the challenge is not
 * lost to the request that took it.
 */
static const char  pki_lua_chal_take[] =
    "local v = redis.call('GET', KEYS[1]) "
    "if not v then "
    "  if redis.call('TYPE', KEYS[2]).ok ~= 'hash' then return false end "
    "  local d = redis.call('HMGET', KEYS[2], 'by', 'v', 'at') "
    "  if d[1] == ARGV[1] and d[2] and tonumber(d[3]) then "
    "    return { d[2], tonumber(d[3]) } end "
    "  return false "
    "end "
    "local t = redis.call('PTTL', KEYS[1]) "
    "local now = redis.call('TIME') "
    "local at = 0 "
    "if t >= 0 then at = now[1] * 1000 + math.floor(now[2] / 1000) + t end "
    "redis.call('DEL', KEYS[1], KEYS[2]) "
    "redis.call('HSET', KEYS[2], 'by', ARGV[1], 'v', v, "
    "           'at', string.format('%d', at)) "
    "redis.call('PEXPIRE', KEYS[2], 60000) "
    "return { v, at }";

static pki_status_t
pki_scep_chal_take(pki_redis_t *r, pki_scep_chal_t *c, pki_result_t *res)
{
    int             sent = 0;
    char           *token = c->token;
    redisReply     *reply;
    const char     *argv[6];
    size_t          lens[6];

    if (!pki_scep_token(token, res)) {
        return res->status;
    }

    argv[0] = "EVAL";
    argv[1] = pki_lua_chal_take;
    argv[2] = "2";
    argv[3] = c->hkey;
    argv[4] = c->tkey;
    argv[5] = token;
    lens[0] = 4;
    lens[1] = sizeof(pki_lua_chal_take) - 1;
    lens[2] = 1;
    lens[3] = strlen(c->hkey);
    lens[4] = strlen(c->tkey);
    lens[5] = strlen(token);

    /* an answer lost after the take was sent (Redis slower than the
     * timeout): it may have run, and the challenge is then gone with no
     * request holding it; pki_scep_chal_untake puts it back */
    reply = pki_int_redis_command_sent(r, 6, argv, lens, &sent, res);
    if (reply == NULL) {
        c->unsure = sent;
        return res->status != PKI_OK ? res->status : PKI_UNAVAILABLE;
    }

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && reply->element[0]->type == REDIS_REPLY_STRING
        && reply->element[1]->type == REDIS_REPLY_INTEGER)
    {
        c->taken = malloc(reply->element[0]->len + 1);
        if (c->taken != NULL) {
            memcpy(c->taken, reply->element[0]->str,
                   reply->element[0]->len);
            c->taken[reply->element[0]->len] = '\0';
        }
        c->expires_ms = reply->element[1]->integer;
        freeReplyObject(reply);
        return PKI_OK;
    }

    freeReplyObject(reply);

    return pki_fail(res, PKI_FORBIDDEN, "the one-time challenge was "
                    "already used");
}


/* A request that took the challenge and then issued nothing (Redis, the
 * key or the template failed or refused it) gives it back until the time
 * it expired at (PXAT: failed tries never lengthen its life), so that the
 * client's retry can use it.  Best effort. */
static void
pki_scep_chal_give_back(pki_redis_t *r, pki_scep_chal_t *c,
    pki_result_t *res)
{
    char          ms[24];
    redisReply   *reply;
    const char   *argv[6];
    size_t        lens[6];
    pki_result_t  tmp;

    if (c->taken == NULL || c->expires_ms <= 0) {
        return;
    }

    snprintf(ms, sizeof(ms), "%lld", c->expires_ms);
    argv[0] = "SET";
    argv[1] = c->hkey;
    argv[2] = c->taken;
    argv[3] = "PXAT";
    argv[4] = ms;
    argv[5] = "NX";
    lens[0] = 3;
    lens[1] = strlen(c->hkey);
    lens[2] = strlen(c->taken);
    lens[3] = 4;
    lens[4] = strlen(ms);
    lens[5] = 2;

    pki_result_init(&tmp);
    reply = pki_int_redis_cmd(r, 6, argv, lens, &tmp);
    pki_log(res, "%sthe one-time challenge %s", res->log[0] ? "; " : "",
            reply != NULL ? "was given back for a retry"
                          : "could not be given back");
    if (reply != NULL) {
        freeReplyObject(reply);
    }
}


/*
 * A take whose answer was lost (c->unsure): when it ran, KEYS[2] names
 * this request's token ARGV[1] with the value and the time it expires at,
 * and KEYS[1] is gone; the value goes back until that time, as
 * pki_scep_chal_give_back does.  Nothing when another request took it,
 * when it was never taken or when it has expired meanwhile.
 */
static const char  pki_lua_chal_untake[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end "
    "if redis.call('TYPE', KEYS[2]).ok ~= 'hash' then return 0 end "
    "local d = redis.call('HMGET', KEYS[2], 'by', 'v', 'at') "
    "if d[1] ~= ARGV[1] or not d[2] then return 0 end "
    "local at = tonumber(d[3]) "
    "local now = redis.call('TIME') "
    "if not at or at <= now[1] * 1000 + math.floor(now[2] / 1000) then "
    "  return 0 end "
    "redis.call('DEL', KEYS[2]) "
    "redis.call('SET', KEYS[1], d[2], 'PXAT', d[3]) "
    "return 1";

static void
pki_scep_chal_untake(pki_redis_t *r, pki_scep_chal_t *c, pki_result_t *res)
{
    redisReply   *reply;
    const char   *argv[6];
    size_t        lens[6];
    pki_result_t  tmp;

    argv[0] = "EVAL";
    argv[1] = pki_lua_chal_untake;
    argv[2] = "2";
    argv[3] = c->hkey;
    argv[4] = c->tkey;
    argv[5] = c->token;
    lens[0] = 4;
    lens[1] = sizeof(pki_lua_chal_untake) - 1;
    lens[2] = 1;
    lens[3] = strlen(c->hkey);
    lens[4] = strlen(c->tkey);
    lens[5] = strlen(c->token);

    pki_result_init(&tmp);
    reply = pki_int_redis_cmd(r, 6, argv, lens, &tmp);
    pki_log(res, "%sthe one-time challenge, whose take may have run, %s",
            res->log[0] ? "; " : "",
            reply == NULL ? "could not be looked at (it may be used up)"
            : reply->type == REDIS_REPLY_INTEGER && reply->integer == 1
            ? "was given back for a retry" : "was not taken by it");
    if (reply != NULL) {
        freeReplyObject(reply);
    }
}


static int
pki_scep_san_text(const GENERAL_NAME *gn, char *buf, size_t size)
{
    int                   n;
    const ASN1_STRING    *s;
    const unsigned char  *ip;
    const char           *prefix;

    switch (gn->type) {
    case GEN_DNS:
        prefix = "DNS:";
        s = gn->d.dNSName;
        break;
    case GEN_EMAIL:
        prefix = "email:";
        s = gn->d.rfc822Name;
        break;
    case GEN_URI:
        prefix = "URI:";
        s = gn->d.uniformResourceIdentifier;
        break;
    case GEN_IPADD:
        ip = gn->d.iPAddress->data;
        n = gn->d.iPAddress->length;
        if (n == 4) {
            n = snprintf(buf, size, "IP:");
            return inet_ntop(AF_INET, ip, buf + n, size - n) != NULL;
        }
        if (n == 16) {
            n = snprintf(buf, size, "IP:");
            return inet_ntop(AF_INET6, ip, buf + n, size - n) != NULL;
        }
        return 0;
    default:
        return 0;
    }

    n = snprintf(buf, size, "%s%.*s", prefix, s->length,
                 (const char *) s->data);

    return n > 0 && (size_t) n < size;
}


/* n octets alike, ASCII letters in either case. */
static int
pki_scep_same_nocase(const unsigned char *a, const char *b, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (tolower(a[i]) != tolower((unsigned char) b[i])) {
            return 0;
        }
    }

    return 1;
}


/*
 * A SAN of the request is the bound one tok: "DNS:", "email:", "URI:" or
 * "IP:" (in any case) and its value.  A DNS name, and an email address's
 * domain, match in any case; a URI and an email address's local part
 * only as they are (both are case-sensitive: spiffe://td/ns/prod is not
 * spiffe://td/NS/PROD); an IP address by its octets.  The whole value:
 * no NUL inside the SAN cuts it short.
 */
static int
pki_scep_san_match(const GENERAL_NAME *gn, const char *tok)
{
    int                   type, af;
    size_t                n, at;
    const char           *v;
    unsigned char         ip[16];
    const ASN1_STRING    *s;
    const unsigned char  *d;

    v = strchr(tok, ':');
    if (v == NULL) {
        return 0;
    }

    n = (size_t) (v - tok);
    v++;

    if (n == 3 && strncasecmp(tok, "DNS", 3) == 0) {
        type = GEN_DNS;
        s = gn->d.dNSName;
    } else if (n == 5 && strncasecmp(tok, "email", 5) == 0) {
        type = GEN_EMAIL;
        s = gn->d.rfc822Name;
    } else if (n == 3 && strncasecmp(tok, "URI", 3) == 0) {
        type = GEN_URI;
        s = gn->d.uniformResourceIdentifier;
    } else if (n == 2 && strncasecmp(tok, "IP", 2) == 0) {
        type = GEN_IPADD;
        s = gn->d.iPAddress;
    } else {
        return 0;
    }

    if (gn->type != type || s == NULL) {
        return 0;
    }

    d = ASN1_STRING_get0_data(s);

    if (type == GEN_IPADD) {
        n = (size_t) ASN1_STRING_length(s);
        af = n == 4 ? AF_INET : (n == 16 ? AF_INET6 : -1);

        return af != -1 && inet_pton(af, v, ip) == 1
               && memcmp(ip, d, n) == 0;
    }

    n = strlen(v);
    if ((size_t) ASN1_STRING_length(s) != n) {
        return 0;
    }

    switch (type) {

    case GEN_URI:
        return memcmp(d, v, n) == 0;

    case GEN_EMAIL:
        /* the local part (up to the last '@') as it is, the domain in
         * any case */
        at = strrchr(v, '@') != NULL ? (size_t) (strrchr(v, '@') - v) : n;

        return memcmp(d, v, at) == 0
               && pki_scep_same_nocase(d + at, v + at, n - at);

    default:
        return pki_scep_same_nocase(d, v, n);
    }
}


/* The request matches what the challenge is bound to. */

#define PKI_SCEP_BOUND_SANS  64     /* SANs of a request under a binding */
static int
pki_scep_chal_binding(const pki_scep_conf_t *conf, pki_scep_chal_t *c,
    const pki_request_t *preq, pki_result_t *res)
{
    int            i, j, n, lastpos, found, same;
    char           want[512], *tok, *save;
    unsigned char  marked[PKI_SCEP_BOUND_SANS], *utf8;
    X509_NAME_ENTRY  *e;
    ASN1_STRING   *s;

    if (c->tmpl[0] != '\0'
        && strcmp(c->tmpl, pki_template_name(conf->tmpl)) != 0)
    {
        pki_fail(res, PKI_FORBIDDEN, "the challenge is bound to another "
                 "template");
        return 0;
    }

    if (c->ca[0] != '\0' && strcmp(c->ca, pki_ca_name(conf->ca)) != 0) {
        pki_fail(res, PKI_FORBIDDEN, "the challenge is bound to another "
                 "CA");
        return 0;
    }

    if (c->cn[0] != '\0') {

        /* the CN's characters, not its bytes: a BMPString whose octets
         * spell "dev\0..." is another name; the whole of it, so an
         * embedded NUL does not cut it short */
        n = -1;
        utf8 = NULL;
        lastpos = X509_NAME_get_index_by_NID(preq->subject, NID_commonName,
                                             -1);
        if (lastpos >= 0) {
            e = X509_NAME_get_entry(preq->subject, lastpos);
            s = X509_NAME_ENTRY_get_data(e);
            n = s != NULL ? ASN1_STRING_to_UTF8(&utf8, s) : -1;
        }

        same = n > 0 && (size_t) n == strlen(c->cn)
               && memcmp(utf8, c->cn, (size_t) n) == 0;
        OPENSSL_free(utf8);
        if (n < 0) {
            ERR_clear_error();
        }

        /* that CN and no other: a second CN would be in the certificate
         * too, and some verifiers read the last one */
        if (!same
            || X509_NAME_get_index_by_NID(preq->subject, NID_commonName,
                                          lastpos) >= 0)
        {
            pki_fail(res, PKI_FORBIDDEN, "the challenge is bound to another "
                     "subject CN");
            return 0;
        }
    }

    if (c->san[0] != '\0') {
        if (strlen(c->san) >= sizeof(want)) {
            pki_fail(res, PKI_FORBIDDEN, "bad challenge binding");
            return 0;
        }

        /* the request names exactly the bound SANs: each of them, and
         * none besides (each of its SANs marked when a bound one is it) */
        strcpy(want, c->san);
        j = sk_GENERAL_NAME_num(preq->sans);
        if (j > PKI_SCEP_BOUND_SANS) {
            pki_fail(res, PKI_FORBIDDEN, "the request names more SANs than "
                     "a bound challenge allows");
            return 0;
        }
        memset(marked, 0, sizeof(marked));

        for (tok = strtok_r(want, ",", &save); tok != NULL;
             tok = strtok_r(NULL, ",", &save))
        {
            while (*tok == ' ') {
                tok++;
            }

            found = 0;

            for (i = 0; i < j; i++) {
                if (pki_scep_san_match(sk_GENERAL_NAME_value(preq->sans, i),
                                       tok))
                {
                    marked[i] = 1;
                    found = 1;
                }
            }

            if (!found) {
                pki_fail(res, PKI_FORBIDDEN, "the challenge is bound to "
                         "SAN %s, which the request lacks", tok);
                return 0;
            }
        }

        for (i = 0; i < j; i++) {
            if (!marked[i]) {
                pki_fail(res, PKI_FORBIDDEN, "the request names SANs the "
                         "challenge is not bound to");
                return 0;
            }
        }
    }

    return 1;
}


/* ---- pending requests (manual approval) ------------------------------------ */

/*
 * 1: created; a resend gets the stored "expires" (0 for a record of an
 * older version without one).  A resend is a request of the same key, CA
 * and template (ARGV[3..5]) while the record is undecided; a request with
 * another one while it waits is not (-1: nothing written), since one
 * transactionID names one request to approve, poll and issue.  A request
 * whose key already had one decided (rejected, or issued: CertPoll has
 * given out its certificate) is a new request, not a resend: it replaces
 * that record, unless ARGV[2] is not "1" (a copy of a message taken
 * before: -2, it may only find its own request still waiting, and makes
 * none where the record is gone, expired by scep_pending_ttl).  Another
 * key's request never replaces a decided record (-1), as it never joins
 * an undecided one: the first device may still have to poll for its
 * certificate, or learn it was rejected.
 * ARGV[1]: the TTL; ARGV[10..]: the fields.
 *
 * A new record needs room in the index (KEYS[2], below) when ARGV[6], the
 * cap (scep_pending_max), is not 0: expired members (below ARGV[7]) leave
 * it first; when it is full, the 32 that expire first are looked up (their
 * records' keys are ARGV[8] .. the member's hash) and those decided or
 * gone leave it.  Still full: nothing is written, and -3 - (the number
 * waiting) is the answer.  A new record enters the index as ARGV[9]
 * ("<expires>:<hash>") in the same step, and the entry of the decided
 * record it replaces leaves it: the count and the index never disagree
 * with the records (an index of another type: nothing is written).  A
 * resend always finds its record.
 */
static const char  pki_lua_pend_new[] =
    "local ty = redis.call('TYPE', KEYS[2]).ok "
    "if ty ~= 'none' and ty ~= 'zset' then "
    "return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' holds a ' .. ty) "
    "end "
    "local old = redis.call('EXISTS', KEYS[1]) == 1 "
    "if old then "
    "local s = redis.call('HGET', KEYS[1], 'status') "
    "if redis.call('HGET', KEYS[1], 'key') ~= ARGV[3] then return -1 end "
    "if s ~= 'rejected' and s ~= 'issued' then "
    "if redis.call('HGET', KEYS[1], 'ca') ~= ARGV[4] "
    "or redis.call('HGET', KEYS[1], 'template') ~= ARGV[5] then "
    "return -1 end "
    "local e = redis.call('HGET', KEYS[1], 'expires') "
    "if e then return e end "
    "return 0 end "
    "if ARGV[2] ~= '1' then return -2 end "
    "elseif ARGV[2] ~= '1' then return -2 "
    "end "
    "local hash = string.sub(ARGV[9], 14) "
    "local max = tonumber(ARGV[6]) "
    "if max > 0 then "
    "redis.call('ZREMRANGEBYLEX', KEYS[2], '-', ARGV[7]) "
    "local c = redis.call('ZCARD', KEYS[2]) "
    "if c >= max then "
    "for _, mb in ipairs(redis.call('ZRANGE', KEYS[2], 0, 31)) do "
    "local s = redis.pcall('HGET', ARGV[8] .. string.sub(mb, 14), "
    "'status') "
    "if type(s) ~= 'string' or s == 'rejected' or s == 'issued' then "
    "redis.call('ZREM', KEYS[2], mb) c = c - 1 end "
    "end "
    "if c >= max then return -3 - c end "
    "end "
    "end "
    "if old then "
    "local oe = redis.call('HGET', KEYS[1], 'expires') "
    "if oe then redis.call('ZREM', KEYS[2], oe .. ':' .. hash) end "
    "redis.call('DEL', KEYS[1]) "
    "end "
    "redis.call('HSET', KEYS[1], unpack(ARGV, 10)) "
    "redis.call('EXPIRE', KEYS[1], ARGV[1]) "
    "redis.call('ZADD', KEYS[2], 0, ARGV[9]) "
    "return 1";

/*
 * The index of pending requests for the admin listing: a sorted set
 * "<ns>scep:pending" whose members (all scored 0, so ordered by their
 * text) are "<expires, 12 digits>:<SHA256HEX(transactionID)>".  Adding
 * first drops every member whose record has expired: the index never
 * outgrows the live records by more than the decided ones, which the
 * listing drops as it meets them.
 */
static const char  pki_lua_pend_index[] =
    "redis.call('ZREMRANGEBYLEX', KEYS[1], '-', ARGV[1]) "
    "if ARGV[2] ~= '' then redis.call('ZADD', KEYS[1], 0, ARGV[2]) end "
    "return 1";

#define PKI_SCEP_PEND_MEMBER_LEN  (12 + 1 + 64)

/* A command of C strings whose answer is an integer (*out).  Anything
 * else drops the connection: PKI_UNAVAILABLE. */
static pki_status_t
pki_scep_int_cmd(pki_redis_t *r, int argc, const char **argv,
    long long *out, pki_result_t *res)
{
    int          i;
    size_t       lens[12];
    redisReply  *reply;

    if (argc > 12) {
        return pki_fail(res, PKI_INTERNAL, "too many arguments");
    }

    for (i = 0; i < argc; i++) {
        lens[i] = strlen(argv[i]);
    }

    reply = pki_int_redis_cmd(r, argc, argv, lens, res);
    if (reply == NULL) {
        return res->status != PKI_OK ? res->status : PKI_UNAVAILABLE;
    }

    if (reply->type != REDIS_REPLY_INTEGER) {
        freeReplyObject(reply);
        pki_int_redis_drop(r);
        return pki_fail(res, PKI_UNAVAILABLE, "redis: unexpected reply");
    }

    *out = reply->integer;
    freeReplyObject(reply);

    return PKI_OK;
}


/*
 * Compare-and-set of a pending record.  A CertPoll that issues an
 * approved request claims it first ("issuing", with a random claim and
 * its start time "since"), and records the serial pki_issue reserved
 * before anything is signed: a poller that died, or lost the answer of
 * the commit, leaves a record the next poll can settle from the
 * certificate store, so a request never gets two certificates.
 * ARGV[1..3]: the expected status, claim and serial ("*" any, "-" none);
 * ARGV[4]: the new status; ARGV[5], ARGV[6]: the new claim and since
 * ("" drops both); ARGV[7]: the serial ("" kept, "-" dropped).  A
 * request decided (issued, rejected) keeps its CSR's hash, not the CSR.
 */
static const char  pki_lua_pend_cas[] =
    "if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then "
    "return 0 end "
    "local c = redis.call('HGET', KEYS[1], 'claim') or '-' "
    "if ARGV[2] ~= '*' and c ~= ARGV[2] then return 0 end "
    "local n = redis.call('HGET', KEYS[1], 'serial') or '-' "
    "if ARGV[3] ~= '*' and n ~= ARGV[3] then return 0 end "
    "redis.call('HSET', KEYS[1], 'status', ARGV[4]) "
    "if (ARGV[4] == 'issued' or ARGV[4] == 'rejected') "
    "and redis.call('HEXISTS', KEYS[1], 'csrsha256') == 1 then "
    "redis.call('HDEL', KEYS[1], 'csr') end "
    "if ARGV[5] ~= '' then "
    "redis.call('HSET', KEYS[1], 'claim', ARGV[5], 'since', ARGV[6]) "
    "else redis.call('HDEL', KEYS[1], 'claim', 'since') end "
    "if ARGV[7] == '-' then redis.call('HDEL', KEYS[1], 'serial') "
    "elseif ARGV[7] ~= '' then "
    "redis.call('HSET', KEYS[1], 'serial', ARGV[7]) end "
    "return 1";

/* An "issuing" claim this old (seconds) is taken to have died: far more
 * than pki_issue can take with its Redis and token timeouts. */
#define PKI_SCEP_CLAIM_STALE  120


typedef struct {
    char           status[16];
    char           key[65];
    char           ca[64];
    char           tmpl[64];
    char           serial[41];
    char           expires[16];
    char           claim[33];
    char           since[24];
    char           csrhash[65];    /* SHA-256 hex of an issued one's CSR */
    unsigned char *csr;
    size_t         csr_len;
} pki_scep_pend_t;


static void
pki_scep_pend_clear(pki_scep_pend_t *p)
{
    free(p->csr);
    memset(p, 0, sizeof(pki_scep_pend_t));
}


static void
pki_copy_reply(char *dst, size_t size, const redisReply *v)
{
    size_t  n;

    dst[0] = '\0';

    if (v->type != REDIS_REPLY_STRING) {
        return;
    }

    n = v->len < size - 1 ? v->len : size - 1;
    memcpy(dst, v->str, n);
    dst[n] = '\0';
}


static pki_status_t
pki_scep_pend_get(pki_redis_t *r, const char *tid, pki_scep_pend_t *p,
    pki_result_t *res)
{
    int          oom;
    char         key[PKI_SCEP_KEY_MAX];
    size_t       i, lens[2];
    redisReply  *reply, *k, *v;
    const char  *argv[2];

    memset(p, 0, sizeof(pki_scep_pend_t));
    oom = 0;

    if (!pki_scep_rkey(r, "pend", tid, strlen(tid), key, sizeof(key))) {
        return pki_fail(res, PKI_INTERNAL, "cannot build the key");
    }

    argv[0] = "HGETALL";
    lens[0] = 7;
    argv[1] = key;
    lens[1] = strlen(key);

    reply = pki_int_redis_cmd(r, 2, argv, lens, res);
    if (reply == NULL) {
        return res->status != PKI_OK ? res->status : PKI_UNAVAILABLE;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(reply);
        pki_int_redis_drop(r);
        return pki_fail(res, PKI_UNAVAILABLE, "redis: unexpected reply");
    }

    if (reply->elements == 0) {
        freeReplyObject(reply);
        return PKI_NOT_FOUND;
    }

    for (i = 0; i + 1 < reply->elements; i += 2) {
        k = reply->element[i];
        v = reply->element[i + 1];

        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (strcmp(k->str, "status") == 0) {
            pki_copy_reply(p->status, sizeof(p->status), v);
        } else if (strcmp(k->str, "key") == 0) {
            pki_copy_reply(p->key, sizeof(p->key), v);
        } else if (strcmp(k->str, "ca") == 0) {
            pki_copy_reply(p->ca, sizeof(p->ca), v);
        } else if (strcmp(k->str, "template") == 0) {
            pki_copy_reply(p->tmpl, sizeof(p->tmpl), v);
        } else if (strcmp(k->str, "serial") == 0) {
            pki_copy_reply(p->serial, sizeof(p->serial), v);
        } else if (strcmp(k->str, "expires") == 0) {
            pki_copy_reply(p->expires, sizeof(p->expires), v);
        } else if (strcmp(k->str, "claim") == 0) {
            pki_copy_reply(p->claim, sizeof(p->claim), v);
        } else if (strcmp(k->str, "since") == 0) {
            pki_copy_reply(p->since, sizeof(p->since), v);
        } else if (strcmp(k->str, "csrsha256") == 0 && v->len == 64) {
            pki_copy_reply(p->csrhash, sizeof(p->csrhash), v);
        } else if (strcmp(k->str, "csr") == 0 && v->len > 0
                   && v->len <= PKI_CSR_MAX && p->csr == NULL)
        {
            p->csr = malloc(v->len);
            if (p->csr != NULL) {
                memcpy(p->csr, v->str, v->len);
                p->csr_len = v->len;
            } else {
                oom = 1;
            }
        }
    }

    freeReplyObject(reply);

    if (oom) {
        pki_scep_pend_clear(p);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    /* a decided request keeps its CSR's hash alone (the CSR holds the
     * challengePassword, a static one too: pki_scep_pend_done,
     * pki_lua_pend_cas).  A record without them was written by hand or by
     * another program: no retry of the client's mends it (500, not 503
     * with Retry-After) */
    if (p->status[0] == '\0' || p->key[0] == '\0'
        || (p->csr == NULL && p->csrhash[0] == '\0'))
    {
        pki_scep_pend_clear(p);
        return pki_fail(res, PKI_INTERNAL, "the pending record of "
                        "transactionID \"%.64s\" is corrupt (no status, key "
                        "or CSR)", tid);
    }

    return PKI_OK;
}


/* pki_lua_pend_cas: from = { status, claim, serial }, to = { status,
 * claim, since, serial } as the script says; *done: 1 if it was set. */
static pki_status_t
pki_scep_pend_cas(pki_redis_t *r, const char *tid, const char *from[3],
    const char *to[4], int *done, pki_result_t *res)
{
    int           i;
    char          key[PKI_SCEP_KEY_MAX];
    long long     v;
    const char   *argv[11];
    pki_status_t  st;

    *done = 0;

    if (!pki_scep_rkey(r, "pend", tid, strlen(tid), key, sizeof(key))) {
        return pki_fail(res, PKI_INTERNAL, "cannot build the key");
    }

    argv[0] = "EVAL";
    argv[1] = pki_lua_pend_cas;
    argv[2] = "1";
    argv[3] = key;

    for (i = 0; i < 3; i++) {
        argv[4 + i] = from[i];
    }

    for (i = 0; i < 4; i++) {
        argv[7 + i] = to[i];
    }

    st = pki_scep_int_cmd(r, 11, argv, &v, res);
    *done = st == PKI_OK && v == 1;

    return st;
}


/* The admin's decision: pending -> ARGV[1] (approved or rejected), only
 * while the record is the request the admin saw: created (epoch seconds)
 * ARGV[2], or "*" when the admin did not say.  1 decided, 0 not pending,
 * 2 another request (a new one with the same transactionID replaced the
 * decided one since it was listed).  A rejected request keeps its CSR's
 * hash, not the CSR (pki_lua_pend_cas).
 *
 * The decision is marked "unlogged" until its transaction log entry is
 * durable (pki_scep_pend_logged): one that Redis made after the admin
 * gave up (the store stalled past timeout=, 503) keeps the mark, and the
 * same decision asked again finds it and answers 1, so that the entry is
 * written then. */
static const char  pki_lua_pend_decide[] =
    "local st = redis.call('HGET', KEYS[1], 'status') "
    "if st == ARGV[1] "
    "   and redis.call('HGET', KEYS[1], 'unlogged') == ARGV[1] "
    "   and (ARGV[2] == '*' "
    "        or redis.call('HGET', KEYS[1], 'created') == ARGV[2]) then "
    "  return 1 "
    "end "
    "if st ~= 'pending' then return 0 end "
    "if ARGV[2] ~= '*' and redis.call('HGET', KEYS[1], 'created') "
    "~= ARGV[2] then return 2 end "
    "redis.call('HSET', KEYS[1], 'status', ARGV[1], 'unlogged', ARGV[1]) "
    "redis.call('HDEL', KEYS[1], 'claim', 'since') "
    "if ARGV[1] == 'rejected' "
    "and redis.call('HEXISTS', KEYS[1], 'csrsha256') == 1 then "
    "redis.call('HDEL', KEYS[1], 'csr') end "
    "return 1";


static pki_status_t
pki_scep_pend_decide(pki_redis_t *r, const char *tid, const char *to,
    const char *created, int *done, pki_result_t *res)
{
    char          key[PKI_SCEP_KEY_MAX];
    long long     v;
    const char   *argv[6];
    pki_status_t  st;

    *done = 0;

    if (!pki_scep_rkey(r, "pend", tid, strlen(tid), key, sizeof(key))) {
        return pki_fail(res, PKI_INTERNAL, "cannot build the key");
    }

    argv[0] = "EVAL";
    argv[1] = pki_lua_pend_decide;
    argv[2] = "1";
    argv[3] = key;
    argv[4] = to;
    argv[5] = created != NULL ? created : "*";

    st = pki_scep_int_cmd(r, 6, argv, &v, res);
    *done = st == PKI_OK ? (int) v : 0;

    return st;
}


/* The decision's entry is durable: its mark goes (pki_lua_pend_decide).
 * A failure leaves it; the same decision asked again logs it again. */
static void
pki_scep_pend_logged(pki_redis_t *r, const char *tid, pki_result_t *res)
{
    char          key[PKI_SCEP_KEY_MAX];
    long long     v;
    const char   *argv[3];
    pki_result_t  lres;

    if (!pki_scep_rkey(r, "pend", tid, strlen(tid), key, sizeof(key))) {
        return;
    }

    argv[0] = "HDEL";
    argv[1] = key;
    argv[2] = "unlogged";

    pki_result_init(&lres);

    if (pki_scep_int_cmd(r, 3, argv, &v, &lres) != PKI_OK) {
        pki_log(res, "%sredis: the mark of SCEP request %s (not yet "
                "logged) stays: %s %s", res != NULL && res->log[0] != '\0'
                ? "; " : "", tid, lres.detail, lres.log);
    }
}


/* Trims the index of expired members and adds member (may be ""). */
static pki_status_t
pki_scep_pend_index(pki_redis_t *r, const char *member, pki_result_t *res)
{
    int          n;
    char         key[PKI_SCEP_KEY_MAX], min[32];
    long long    v;
    const char  *argv[6];

    n = snprintf(key, sizeof(key), "%sscep:pending", pki_redis_ns(r));
    if (n <= 0 || (size_t) n >= sizeof(key)) {
        return pki_fail(res, PKI_INTERNAL, "cannot build the key");
    }

    /* every member below "<now>:" has expired */
    snprintf(min, sizeof(min), "(%012lld:", (long long) time(NULL));

    argv[0] = "EVAL";
    argv[1] = pki_lua_pend_index;
    argv[2] = "1";
    argv[3] = key;
    argv[4] = min;
    argv[5] = member;

    return pki_scep_int_cmd(r, 6, argv, &v, res);
}


/* The SANs of a request as a JSON array of "DNS:..", "IP:.." strings
 * (malloc'd), for the admin listing. */
static char *
pki_scep_sans_json(const GENERAL_NAMES *sans)
{
    int     i;
    char    buf[512], *out;
    cJSON  *arr;

    arr = cJSON_CreateArray();
    if (arr == NULL) {
        return NULL;
    }

    for (i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
        if (pki_scep_san_text(sk_GENERAL_NAME_value(sans, i), buf,
                              sizeof(buf))
            && cJSON_AddItemToArray(arr, cJSON_CreateString(buf)) == 0)
        {
            cJSON_Delete(arr);
            return NULL;
        }
    }

    out = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);

    return out;
}


/* pki_lua_pend_new; *created: 1 made, 0 a resend, -1 the transactionID
 * is another request's, -2 (only when !replace) its request was decided */
static pki_status_t
pki_scep_pend_new(const pki_scep_conf_t *conf, const pki_scep_msg_t *m,
    const char *keyhex, const char *subject, const char *sans,
    const char *client, int replace, int *created, long long *waiting,
    int *ran, pki_result_t *res)
{
    int           i, n, sent;
    long          ttlv;
    char          key[PKI_SCEP_KEY_MAX], ttl[24], now[24], exp[24];
    char          tidhex[65], member[PKI_SCEP_PEND_MEMBER_LEN + 1];
    char          csrhash[65], ikey[PKI_SCEP_KEY_MAX], prefix[PKI_SCEP_KEY_MAX];
    char          max[24], min[32];
    size_t        lens[40];
    time_t        t;
    redisReply   *reply;
    const char   *argv[40];
    pki_status_t  st;

    *created = 0;
    *waiting = 0;
    *ran = 0;

    n = snprintf(ikey, sizeof(ikey), "%sscep:pending",
                 pki_redis_ns(conf->redis));
    if (n <= 0 || (size_t) n >= sizeof(ikey)) {
        return pki_fail(res, PKI_INTERNAL, "cannot build the key");
    }
    n = snprintf(prefix, sizeof(prefix), "%sscep:pend:",
                 pki_redis_ns(conf->redis));
    if (n <= 0 || (size_t) n >= sizeof(prefix)) {
        return pki_fail(res, PKI_INTERNAL, "cannot build the key");
    }

    if (!pki_scep_rkey(conf->redis, "pend", m->tid, strlen(m->tid), key,
                       sizeof(key))
        || !pki_sha256_hex(m->tid, strlen(m->tid), tidhex)
        || !pki_sha256_hex(m->data, m->data_len, csrhash))
    {
        return pki_fail(res, PKI_INTERNAL, "cannot build the key");
    }

    t = time(NULL);
    ttlv = conf->pending_ttl > 0 ? conf->pending_ttl : PKI_SCEP_PENDING_TTL;
    snprintf(ttl, sizeof(ttl), "%ld", ttlv);
    snprintf(now, sizeof(now), "%lld", (long long) t);
    snprintf(exp, sizeof(exp), "%012lld", (long long) t + ttlv);
    snprintf(max, sizeof(max), "%ld",
             conf->pending_max > 0 ? conf->pending_max : 0);
    /* every member below "<now>:" has expired (pki_scep_pend_index) */
    snprintf(min, sizeof(min), "(%012lld:", (long long) t);

    i = 0;
    argv[i++] = "EVAL";
    argv[i++] = pki_lua_pend_new;
    argv[i++] = "2";
    argv[i++] = key;
    argv[i++] = ikey;
    argv[i++] = ttl;
    argv[i++] = replace ? "1" : "0";
    argv[i++] = keyhex;
    argv[i++] = pki_ca_name(conf->ca);
    argv[i++] = pki_template_name(conf->tmpl);
    argv[i++] = max;
    argv[i++] = min;
    argv[i++] = prefix;
    snprintf(member, sizeof(member), "%.12s:%s", exp, tidhex);
    argv[i++] = member;
    argv[i++] = "status";
    argv[i++] = "pending";
    argv[i++] = "key";
    argv[i++] = keyhex;
    argv[i++] = "tid";
    argv[i++] = m->tid;
    argv[i++] = "ca";
    argv[i++] = pki_ca_name(conf->ca);
    argv[i++] = "template";
    argv[i++] = pki_template_name(conf->tmpl);
    argv[i++] = "subject";
    argv[i++] = subject != NULL ? subject : "";
    argv[i++] = "sans";
    argv[i++] = sans != NULL ? sans : "[]";
    argv[i++] = "client";
    argv[i++] = client != NULL ? client : "";
    argv[i++] = "created";
    argv[i++] = now;
    argv[i++] = "expires";
    argv[i++] = exp;
    argv[i++] = "csrsha256";
    argv[i++] = csrhash;
    argv[i++] = "csr";
    argv[i++] = (const char *) m->data;

    /* the last one is the CSR's DER: binary, with its own length */
    for (int j = 0; j < i - 1; j++) {
        lens[j] = strlen(argv[j]);
    }
    lens[i - 1] = m->data_len;

    /* a failure before the script was sent whole made no record: the
     * caller gives the challenge back; after it, one may have been made */
    sent = 0;
    reply = pki_int_redis_command_sent(conf->redis, i, argv, lens, &sent,
                                       res);
    if (reply == NULL) {
        *ran = sent;
        return res->status != PKI_OK ? res->status : PKI_UNAVAILABLE;
    }

    *ran = 1;

    if (reply->type == REDIS_REPLY_INTEGER && reply->integer <= -3) {
        *created = -3;
        *waiting = -3 - reply->integer;
        freeReplyObject(reply);
        return PKI_OK;

    } else if (reply->type == REDIS_REPLY_INTEGER && reply->integer < 0) {
        *created = reply->integer == -1 ? -1 : -2;
        freeReplyObject(reply);
        return PKI_OK;

    } else if (reply->type == REDIS_REPLY_INTEGER) {
        *created = reply->integer == 1;
        /* created: indexed by the script; else an older record without
         * "expires": not indexed */
        exp[0] = '\0';

    } else if (reply->type == REDIS_REPLY_STRING && reply->len == 12
               && strspn(reply->str, "0123456789") == 12)
    {
        memcpy(exp, reply->str, 13);  /* a resend: index it again */

    } else {
        freeReplyObject(reply);
        pki_int_redis_drop(conf->redis);
        return pki_fail(res, PKI_UNAVAILABLE, "redis: unexpected reply");
    }

    freeReplyObject(reply);

    /* a resend's record listed again for the operators (an entry lost
     * to an older version); a new one was listed by the script */
    if (exp[0] == '\0') {
        return PKI_OK;
    }

    snprintf(member, sizeof(member), "%.12s:%s", exp, tidhex);
    st = pki_scep_pend_index(conf->redis, member, res);

    return st;
}


static int
pki_scep_key_hex(EVP_PKEY *pk, char out[65])
{
    int             n;
    unsigned char  *der;

    der = NULL;
    n = i2d_PUBKEY(pk, &der);
    if (n <= 0) {
        return 0;
    }

    n = pki_sha256_hex(der, (size_t) n, out);
    OPENSSL_free(der);

    return n;
}


/* ---- replayed enrollment messages ------------------------------------- */

/*
 * A PKCSReq or RenewalReq is taken once.  Its record is
 * "<ns>scep:seen:<SHA256HEX(signer's SubjectPublicKeyInfo || signed
 * attributes)>", the attributes in the DER the signature was verified
 * over: they hold the senderNonce, the transactionID, the signingTime and
 * the messageDigest of the envelope, and nobody but the signer can make
 * another set that verifies.  So a copy, however re-wrapped, names the
 * same record, while a client's own new try (a fresh senderNonce) is a
 * new message.  The record lives as long as the message could still pass
 * the signingTime check; see pki_scep_seen_ttl().
 */

/* slack for the clocks of the other hosts that check signingTime */
#define PKI_SCEP_SEEN_SLACK  300L

/* the window taken for messages whose signingTime is not checked */
#define PKI_SCEP_SEEN_SKEW   86400L

/* the shortest life of the record of a message whose signingTime is not
 * checked: twice a tightened scep_clock_skew (minutes) would let a
 * captured RenewalReq, or a PKCSReq with a static challenge, issue again
 * the same hour */
#define PKI_SCEP_SEEN_UNTIMED  (7 * 86400L)


static int
pki_scep_seen_key(pki_redis_t *r, pki_scep_msg_t *m, char *buf,
    size_t size)
{
    int             n, k, ok;
    unsigned char  *attrs, *spki, *id;

    attrs = NULL;
    spki = NULL;
    ok = 0;

    n = ASN1_item_i2d((ASN1_VALUE *) m->si->auth_attr, &attrs,
                      ASN1_ITEM_rptr(PKCS7_ATTR_VERIFY));
    k = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(m->signer), &spki);

    if (n > 0 && k > 0) {
        id = malloc((size_t) n + (size_t) k);
        if (id != NULL) {
            memcpy(id, spki, (size_t) k);
            memcpy(id + k, attrs, (size_t) n);
            ok = pki_scep_rkey(r, "seen", id, (size_t) n + (size_t) k, buf,
                               size);
            free(id);
        }
    }

    OPENSSL_free(attrs);
    OPENSSL_free(spki);
    ERR_clear_error();

    return ok;
}


/*
 * Seconds to remember a message: until its signingTime leaves the window
 * (a copy is refused as badTime from then on), plus the slack.  Without a
 * checked signingTime (none in the message, or scep_clock_skew off)
 * nothing ends the message's life: it is remembered for twice the window,
 * the longest any timed message can pass, and at least 7 days; a copy
 * sent after that would be taken again (README, SCEP).
 */
static long
pki_scep_seen_ttl(const pki_scep_conf_t *conf, const pki_scep_msg_t *m)
{
    long    skew, ttl;
    time_t  now;

    skew = conf->max_skew > 0 ? conf->max_skew : PKI_SCEP_SEEN_SKEW;

    if (m->signed_at == 0) {
        ttl = 2 * skew > PKI_SCEP_SEEN_UNTIMED ? 2 * skew
                                                : PKI_SCEP_SEEN_UNTIMED;
        return ttl + PKI_SCEP_SEEN_SLACK;
    }

    now = time(NULL);
    ttl = (long) (m->signed_at + skew - now) + PKI_SCEP_SEEN_SLACK;

    if (ttl < PKI_SCEP_SEEN_SLACK) {
        ttl = PKI_SCEP_SEEN_SLACK;
    }

    if (ttl > 2 * skew + PKI_SCEP_SEEN_SLACK) {
        ttl = 2 * skew + PKI_SCEP_SEEN_SLACK;
    }

    return ttl;
}


/*
 * The message's replay record: set to this request's token ARGV[1] unless
 * it is there; 1 when it is this request's (also when a retry on a new
 * connection finds the first try's write), 0 when another request's.
 *
 * It must live as long as any location on the store would take a copy,
 * not only this one: each location says its window in the store, KEYS[2]
 * the largest scep_clock_skew (ARGV[3], 0 for off), KEYS[3] set while a
 * location with the check off takes messages (it takes a copy for
 * PKI_SCEP_SEEN_UNTIMED), each for ARGV[6] s from that location's last
 * message.  The record lives for this location's ARGV[2] s, or longer as
 * pki_scep_seen_ttl() would size it with the largest skew (signingTime
 * ARGV[4], 0 for none, the clock ARGV[5]; slack ARGV[7]) or for an
 * untimed location (ARGV[8] s).
 */
static const char  pki_lua_seen_add[] =
    "local v = redis.call('GET', KEYS[1]) "
    "if v == ARGV[1] then return 1 end "
    "if v then return 0 end "
    "local own = tonumber(ARGV[3]) "
    "local mx = tonumber(redis.call('GET', KEYS[2]) or '0') or 0 "
    "if own > 0 and own >= mx then "
    "  redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[6]) mx = own end "
    "if own == 0 then redis.call('SET', KEYS[3], '1', 'EX', ARGV[6]) end "
    "local ttl = tonumber(ARGV[2]) "
    "local at = tonumber(ARGV[4]) "
    "local slack = tonumber(ARGV[7]) "
    "local t = 0 "
    "if mx > 0 and at > 0 then "
    "  t = at + mx - tonumber(ARGV[5]) + slack "
    "  if t > 2 * mx + slack then t = 2 * mx + slack end "
    "elseif mx > 0 then "
    "  t = 2 * mx + slack "
    "  if t < tonumber(ARGV[8]) then t = tonumber(ARGV[8]) end end "
    "if t > ttl then ttl = t end "
    "if redis.call('EXISTS', KEYS[3]) == 1 "
    "   and tonumber(ARGV[8]) > ttl then ttl = tonumber(ARGV[8]) end "
    "redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl) "
    "return 1";

/* how long a location's window is remembered after its last message: a
 * location that takes messages less often than that is sized for by the
 * others only while its mark lasts */
#define PKI_SCEP_SEEN_MARK  (30 * 86400L)

/* Records the message (its value token: 64 bytes of room).  PKI_OK the
 * first time, PKI_CONFLICT for a copy of a recorded one, else
 * PKI_UNAVAILABLE or PKI_INTERNAL; *unsure set when it failed after the
 * write was sent with no answer (it may have run:
 * pki_scep_seen_release_own). */
static pki_status_t
pki_scep_seen_add(const pki_scep_conf_t *conf, const pki_scep_msg_t *m,
    const char *key, char *token, int *unsure, pki_result_t *res)
{
    int            n, sent = 0;
    char           ttl[24], skew[24], at[24], now[24], mark[24];
    char           slack[24], untimed[24];
    char           kmax[PKI_SCEP_KEY_MAX], kuntimed[PKI_SCEP_KEY_MAX];
    size_t         lens[14];
    redisReply    *reply;
    const char    *argv[14];
    pki_status_t   st;

    snprintf(ttl, sizeof(ttl), "%ld", pki_scep_seen_ttl(conf, m));
    snprintf(skew, sizeof(skew), "%ld",
             conf->max_skew > 0 ? conf->max_skew : 0L);
    snprintf(at, sizeof(at), "%lld",
             conf->max_skew > 0 ? (long long) m->signed_at : 0LL);
    snprintf(now, sizeof(now), "%lld", (long long) time(NULL));
    snprintf(mark, sizeof(mark), "%ld", PKI_SCEP_SEEN_MARK);
    snprintf(slack, sizeof(slack), "%ld", PKI_SCEP_SEEN_SLACK);
    snprintf(untimed, sizeof(untimed), "%ld",
             PKI_SCEP_SEEN_UNTIMED + PKI_SCEP_SEEN_SLACK);

    n = snprintf(kmax, sizeof(kmax), "%sscep:skew_max",
                 pki_redis_ns(conf->redis));
    if (n <= 0 || (size_t) n >= sizeof(kmax)) {
        return pki_fail(res, PKI_INTERNAL, "cannot build the key");
    }
    n = snprintf(kuntimed, sizeof(kuntimed), "%sscep:skew_off",
                 pki_redis_ns(conf->redis));
    if (n <= 0 || (size_t) n >= sizeof(kuntimed)) {
        return pki_fail(res, PKI_INTERNAL, "cannot build the key");
    }

    if (!pki_scep_token(token, res)) {
        return res->status;
    }

    argv[0] = "EVAL";
    argv[1] = pki_lua_seen_add;
    argv[2] = "3";
    argv[3] = key;
    argv[4] = kmax;
    argv[5] = kuntimed;
    argv[6] = token;
    argv[7] = ttl;
    argv[8] = skew;
    argv[9] = at;
    argv[10] = now;
    argv[11] = mark;
    argv[12] = slack;
    argv[13] = untimed;

    for (int i = 0; i < 14; i++) {
        lens[i] = strlen(argv[i]);
    }

    /* sent counts only when no answer came in the end: a retry on a new
     * connection that answered leaves nothing to undo */
    reply = pki_int_redis_command_sent(conf->redis, 14, argv, lens, &sent,
                                       res);
    if (reply == NULL) {
        *unsure = sent;
        return res->status != PKI_OK ? res->status : PKI_UNAVAILABLE;
    }

    if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 1) {
        st = PKI_OK;

    } else if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) {
        st = PKI_CONFLICT;

    } else {
        pki_int_redis_drop(conf->redis);
        st = pki_fail(res, PKI_UNAVAILABLE, "redis: unexpected reply");
    }

    freeReplyObject(reply);

    return st;
}


/* A message that then changed nothing (refused, or Redis or the token
 * failed before anything was sent to be written) is forgotten, so that
 * the client's resend of it is taken.  Best effort: a record left behind
 * only refuses that resend until it expires. */
static void
pki_scep_seen_release(pki_redis_t *r, const char *key, pki_result_t *res)
{
    size_t        lens[2];
    redisReply   *reply;
    const char   *argv[2];
    pki_result_t  tmp;

    argv[0] = "DEL";
    argv[1] = key;
    lens[0] = 3;
    lens[1] = strlen(key);

    pki_result_init(&tmp);
    reply = pki_int_redis_cmd(r, 2, argv, lens, &tmp);
    if (reply == NULL) {
        pki_log(res, "%sthe message's replay record could not be dropped",
                res->log[0] ? "; " : "");
        return;
    }

    freeReplyObject(reply);
}


/* A replay record whose SET's answer was lost: dropped if it is this
 * request's (its token), so that the client's resend of the message is
 * taken; another request's record stays.  Best effort. */
static const char  pki_lua_seen_drop_own[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "  return redis.call('DEL', KEYS[1]) end "
    "return 0";

static void
pki_scep_seen_release_own(pki_redis_t *r, const char *key,
    const char *token, pki_result_t *res)
{
    size_t        lens[5];
    redisReply   *reply;
    const char   *argv[5];
    pki_result_t  tmp;

    argv[0] = "EVAL";
    argv[1] = pki_lua_seen_drop_own;
    argv[2] = "1";
    argv[3] = key;
    argv[4] = token;
    lens[0] = 4;
    lens[1] = sizeof(pki_lua_seen_drop_own) - 1;
    lens[2] = 1;
    lens[3] = strlen(key);
    lens[4] = strlen(token);

    pki_result_init(&tmp);
    reply = pki_int_redis_cmd(r, 5, argv, lens, &tmp);
    if (reply == NULL) {
        pki_log(res, "%sthe message's replay record, whose write may have "
                "run, could not be dropped", res->log[0] ? "; " : "");
        return;
    }

    freeReplyObject(reply);
}


/*
 * The record of a request enrolled at once (no approval), so that the
 * client's resend of it after a lost CertRep gets that certificate again
 * (pki_scep_resend) instead of a refusal: the shape of a manual request's
 * record once issued, kept as long as the message's replay record.  A
 * record of a request still waiting or being issued is left alone, and
 * so is a decided one of another key, CA or template (under
 * scep_transaction_id any, another device's transactionID: its resend
 * must still find its certificate).
 * ARGV[1]: the TTL; ARGV[2..]: the fields, key at ARGV[5], ca at ARGV[9],
 * template at ARGV[11].
 */
static const char  pki_lua_pend_done[] =
    "local s = redis.call('HGET', KEYS[1], 'status') "
    "if s and s ~= 'issued' and s ~= 'rejected' then return 0 end "
    "if s then "
    "local o = redis.call('HMGET', KEYS[1], 'key', 'ca', 'template') "
    "if o[1] ~= ARGV[5] or o[2] ~= ARGV[9] or o[3] ~= ARGV[11] then "
    "return 0 end end "
    "redis.call('DEL', KEYS[1]) "
    "redis.call('HSET', KEYS[1], unpack(ARGV, 2)) "
    "redis.call('EXPIRE', KEYS[1], ARGV[1]) "
    "return 1";


/* Best effort: without it a resend is refused as before.  The record
 * keeps the SHA-256 of the CSR, which is all a resend is compared by,
 * not the CSR: its challengePassword, where the challenge is static,
 * opens enrollment to whoever reads the store or a copy of it. */
static void
pki_scep_pend_done(const pki_scep_conf_t *conf, const pki_scep_msg_t *m,
    EVP_PKEY *csrkey, X509 *cert, pki_result_t *res)
{
    int           i, j;
    char          key[PKI_SCEP_KEY_MAX], ttl[24], now[24], keyhex[65];
    char          hex[41], csrhash[65];
    size_t        lens[24];
    redisReply   *reply;
    const char   *argv[24];
    pki_result_t  tmp;

    if (!pki_scep_rkey(conf->redis, "pend", m->tid, strlen(m->tid), key,
                       sizeof(key))
        || !pki_scep_key_hex(csrkey, keyhex)
        || !pki_serial_to_hex(X509_get0_serialNumber(cert), hex)
        || !pki_sha256_hex(m->data, m->data_len, csrhash))
    {
        pki_log(res, "%sno record for a resend", res->log[0] ? "; " : "");
        return;
    }

    snprintf(ttl, sizeof(ttl), "%ld", pki_scep_seen_ttl(conf, m));
    snprintf(now, sizeof(now), "%lld", (long long) time(NULL));

    i = 0;
    argv[i++] = "EVAL";
    argv[i++] = pki_lua_pend_done;
    argv[i++] = "1";
    argv[i++] = key;
    argv[i++] = ttl;
    argv[i++] = "status";
    argv[i++] = "issued";
    argv[i++] = "key";
    argv[i++] = keyhex;
    argv[i++] = "tid";
    argv[i++] = m->tid;
    argv[i++] = "ca";
    argv[i++] = pki_ca_name(conf->ca);
    argv[i++] = "template";
    argv[i++] = pki_template_name(conf->tmpl);
    argv[i++] = "serial";
    argv[i++] = hex;
    argv[i++] = "created";
    argv[i++] = now;
    argv[i++] = "csrsha256";
    argv[i++] = csrhash;
    /* pki_lua_pend_done reads key, ca and template at fixed places:
     * argv[8], [12] and [14] are its ARGV[5], [9] and [11] */

    for (j = 0; j < i; j++) {
        lens[j] = strlen(argv[j]);
    }

    pki_result_init(&tmp);
    reply = pki_int_redis_cmd(conf->redis, i, argv, lens, &tmp);
    if (reply == NULL) {
        pki_log(res, "%sno record for a resend: %s", res->log[0] ? "; " : "",
                tmp.detail);
        return;
    }

    if (reply->type != REDIS_REPLY_INTEGER) {
        pki_int_redis_drop(conf->redis);
        pki_log(res, "%sno record for a resend: unexpected reply",
                res->log[0] ? "; " : "");

    } else if (reply->integer == 0) {
        pki_log(res, "%sno record for a resend: transactionID \"%s\" "
                "keeps the record of another request", res->log[0] ? "; "
                : "", m->tid);
    }

    freeReplyObject(reply);
}


/* ---- PKIOperation ---------------------------------------------------------------- */

/* pki_issue and the mapping of its failure: 1 issued, 0 answered. */
static int
pki_scep_issue(const pki_scep_conf_t *conf, pki_scep_msg_t *m,
    const pki_request_t *preq, const char *who, const char *client,
    X509 **cert, int *committed, pki_scep_resp_t *resp)
{
    pki_status_t     rc;
    pki_issue_ctx_t  ictx;

    ictx.protocol = "scep";
    ictx.requester = who;
    ictx.client = client;
    ictx.realm = NULL;
    ictx.committed = committed;

    rc = pki_issue(conf->ca, conf->tmpl, conf->redis, preq, &ictx, cert,
                   &resp->res);

    if (rc == PKI_OK) {
        return 1;
    }

    if (rc == PKI_POLICY || rc == PKI_FORBIDDEN || rc == PKI_MALFORMED) {
        pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
    } else {
        pki_scep_http_error(resp, 0);
    }

    return 0;
}


static void
pki_scep_log_serial(pki_result_t *res, X509 *cert)
{
    char  hex[41];

    if (pki_serial_to_hex(X509_get0_serialNumber(cert), hex)) {
        pki_log(res, "%sissued serial %s", res->log[0] ? "; " : "", hex);
    }
}


/*
 * The decrypted messageData does not decode (a CSR, IssuerAndSubject or
 * IssuerAndSerialNumber), or the CSR's own signature fails: badMessageCheck,
 * as for a content whose CBC padding failed (pki_scep_open).  Two failInfos
 * would be a padding oracle: anyone may sign a message around a captured
 * request's RecipientInfo with a chosen IV and ciphertext block, and read
 * from the failInfo whether the padding held, recovering the plaintext (its
 * challengePassword) block by block.  The reason stays in the error log.
 */
static void
pki_scep_content_bad(const pki_scep_conf_t *conf, pki_scep_msg_t *m,
    pki_scep_resp_t *resp)
{
    pki_scep_fail(conf, m, PKI_SCEP_BAD_MSG_CHECK, resp);
}


/* PKCSReq (19) and RenewalReq (17). */
static void
pki_scep_enroll(const pki_scep_conf_t *conf, const pki_scep_req_t *req,
    pki_scep_msg_t *m, pki_scep_resp_t *resp)
{
    int                    rc, created, ran, taken, granted, seen, replay;
    int                    renew;
    char                  *who, keyhex[65], seenkey[PKI_SCEP_KEY_MAX];
    char                   seentok[65];
    int                    seen_unsure = 0;
    long long              waiting;
    X509                  *cert;
    size_t                 pwlen;
    X509_REQ              *csr;
    EVP_PKEY              *csrkey;
    pki_status_t           st;
    pki_record_t           rec;
    pki_result_t          *res;
    pki_request_t          preq;
    pki_scep_chal_t        chal;
    const unsigned char   *pw;

    res = &resp->res;
    taken = 0;
    granted = 0;
    seen = 0;
    replay = 0;
    who = NULL;
    cert = NULL;
    csr = NULL;
    memset(&preq, 0, sizeof(preq));
    memset(&chal, 0, sizeof(chal));

    /* whatever is wrong with the decrypted content, one failInfo
     * (pki_scep_content_bad) */
    st = pki_csr_parse(m->data, m->data_len, &csr, res);
    if (st != PKI_OK) {
        pki_scep_content_bad(conf, m, resp);
        goto done;
    }

    csrkey = X509_REQ_get0_pubkey(csr);

    if (!conf->tid_any
        && !pki_scep_tid_matches(m->tid, X509_REQ_get_X509_PUBKEY(csr)))
    {
        pki_fail(res, PKI_FORBIDDEN, "transactionID \"%s\" is not a hash of "
                 "the request's public key", m->tid);
        pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
        goto done;
    }

    renew = (m->type == PKI_SCEP_RENEWALREQ);

    /*
     * A PKCSReq is signed by a self-signed certificate holding the key of
     * the CSR, or it is a renewal: signed by a certificate this CA issued
     * and its key, as sscep (which has no RenewalReq) and other clients
     * send one (RFC 8894 2.3).  That one is judged by the RenewalReq
     * rules below, all of them, and needs no challenge.
     */
    if (m->type == PKI_SCEP_PKCSREQ
        && (X509_NAME_cmp(X509_get_subject_name(m->signer),
                          X509_get_issuer_name(m->signer)) != 0
            || (m->lean != NULL
                ? !m->self_signed   /* checked by the lean reader */
                : X509_verify(m->signer, X509_get0_pubkey(m->signer)) != 1)))
    {
        ERR_clear_error();

        if (!pki_ca_issued(conf->ca, m->signer)) {
            pki_fail(res, PKI_FORBIDDEN, "PKCSReq must be signed with a "
                     "self-signed certificate or one issued by CA \"%s\"",
                     pki_ca_name(conf->ca));
            pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
            goto done;
        }

        pki_log(res, "%sPKCSReq signed by an issued certificate: a renewal",
                res->log[0] ? "; " : "");
        renew = 1;
    }

    if (!renew) {

        if (!pki_scep_same_key(X509_get_X509_PUBKEY(m->signer),
                               X509_REQ_get_X509_PUBKEY(csr)))
        {
            pki_fail(res, PKI_FORBIDDEN, "the signer's key is not the key "
                     "of the CSR");
            pki_scep_fail(conf, m, PKI_SCEP_BAD_MSG_CHECK, resp);
            goto done;
        }

        /* a resend of a request under manual approval, or of one
         * enrolled at once whose CertRep was lost: answered from its
         * record, its challenge not judged again */
        if (conf->redis != NULL && !pki_scep_resend(conf, req, m, resp))
        {
            goto done;
        }

        /* the challenge */
        rc = pki_scep_csr_challenge(csr, &pw, &pwlen);
        if (rc <= 0) {
            pki_fail(res, PKI_UNAUTHORIZED, "%s challengePassword",
                     rc == 0 ? "no" : "malformed");
            pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
            goto done;
        }

        if (pki_scep_static_ok(conf, pw, pwlen)) {
            who = strdup("static challenge");

        } else if (conf->dynamic) {
            st = pki_scep_chal_peek(conf->redis, pw, pwlen, &chal, res);

            if (st == PKI_NOT_FOUND) {
                pki_fail(res, PKI_UNAUTHORIZED, "wrong, expired or used "
                         "challenge");
                pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
                goto done;
            }

            if (st != PKI_OK) {
                pki_scep_http_error(resp, 0);
                goto done;
            }

            who = strdup("one-time challenge");

        } else {
            pki_fail(res, PKI_UNAUTHORIZED, "wrong challenge");
            pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
            goto done;
        }

        st = pki_request_from_csr(conf->tmpl, csr, &preq, res);

    } else {

        /* RenewalReq, or a PKCSReq that renews: the signer is a current,
         * good certificate of ours (a PKCSReq's was found issued above) */
        if (m->type == PKI_SCEP_RENEWALREQ
            && !pki_ca_issued(conf->ca, m->signer))
        {
            ERR_clear_error();
            pki_fail(res, PKI_FORBIDDEN, "renewal signer was not issued "
                     "by CA \"%s\"", pki_ca_name(conf->ca));
            pki_scep_fail(conf, m, PKI_SCEP_BAD_CERT_ID, resp);
            goto done;
        }

        if (X509_cmp_time(X509_get0_notAfter(m->signer), NULL) <= 0
            || X509_cmp_time(X509_get0_notBefore(m->signer), NULL) >= 0)
        {
            pki_fail(res, PKI_FORBIDDEN, "renewal signer is expired or "
                     "not yet valid");
            pki_scep_fail(conf, m, PKI_SCEP_BAD_TIME, resp);
            goto done;
        }

        st = pki_int_cert_record(conf->redis, conf->ca, m->signer, &rec, res);
        if (st == PKI_UNAVAILABLE || st == PKI_INTERNAL) {
            /* the store down (503) or a record it cannot read (500, the
             * detail logged): not the client's fault */
            pki_scep_http_error(resp, 0);
            goto done;
        }

        if (st != PKI_OK) {
            /* the log keeps why (no record, or one of that serial that
             * holds another certificate: a CA key signing elsewhere) */
            pki_log(res, "%s%s", res->log[0] ? "; " : "", res->detail);
            pki_fail(res, PKI_FORBIDDEN, "renewal signer is unknown to "
                     "this CA");
            pki_scep_fail(conf, m, PKI_SCEP_BAD_CERT_ID, resp);
            goto done;
        }

        /* a due plan is a revocation, carried out by worker 0 or not */
        (void) pki_record_at(&rec, time(NULL));

        if (rec.status != PKI_CERT_GOOD) {
            pki_fail(res, PKI_FORBIDDEN, "renewal signer is %s",
                     rec.status == PKI_CERT_REVOKED ? "revoked"
                                                    : "not active");
            pki_record_clear(&rec);
            pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
            goto done;
        }

        if (strcmp(rec.template_name, pki_template_name(conf->tmpl)) != 0) {
            pki_fail(res, PKI_FORBIDDEN, "renewal signer was issued under "
                     "template \"%s\", not \"%s\"", rec.template_name,
                     pki_template_name(conf->tmpl));
            pki_record_clear(&rec);
            pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
            goto done;
        }

        pki_record_clear(&rec);

        who = pki_int_name_text(X509_get_subject_name(m->signer));
        st = pki_request_renewal(conf->tmpl, csr, m->signer, &preq, res);
    }

    if (st != PKI_OK) {
        pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
        goto done;
    }

    if (who == NULL) {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        pki_scep_http_error(resp, 500);
        goto done;
    }

    if (chal.raw != NULL && !pki_scep_chal_binding(conf, &chal, &preq, res)) {
        pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
        goto done;
    }

    if (conf->redis == NULL) {
        pki_fail(res, PKI_INTERNAL, "SCEP needs a certificate store (Redis)");
        pki_scep_http_error(resp, 500);
        goto done;
    }

    /* Every check passed: only now is any state written.  First the
     * message itself, so that a copy of it changes nothing: without this
     * a captured RenewalReq, or a PKCSReq with the static challenge,
     * would get a certificate every time it is sent again. */

    if (!pki_scep_seen_key(conf->redis, m, seenkey, sizeof(seenkey))) {
        pki_fail(res, PKI_INTERNAL, "cannot build the message's key");
        pki_scep_http_error(resp, 500);
        goto done;
    }

    st = pki_scep_seen_add(conf, m, seenkey, seentok, &seen_unsure, res);

    if (st == PKI_CONFLICT) {
        replay = 1;

        /* under manual approval the client's resend of its request may be
         * the same message: it finds its request still waiting (below) */
        if (renew || !conf->manual) {
            pki_fail(res, PKI_FORBIDDEN, "replayed message: this signed "
                     "message was taken before");
            pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
            goto done;
        }

    } else if (st != PKI_OK) {
        pki_scep_http_error(resp, 0);
        goto done;

    } else {
        seen = 1;
    }

    if (chal.raw != NULL) {
        st = pki_scep_chal_take(conf->redis, &chal, res);
        if (st == PKI_FORBIDDEN) {
            pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
            goto done;
        }
        if (st != PKI_OK) {
            pki_scep_http_error(resp, 0);
            goto done;
        }
        taken = 1;
    }

    if (!renew && conf->manual) {
        if (!pki_scep_key_hex(csrkey, keyhex)) {
            pki_fail(res, PKI_INTERNAL, "cannot hash the key");
            pki_scep_http_error(resp, 500);
            goto done;
        }

        {
            char  *subj = pki_int_name_text(preq.subject);
            char  *sans = pki_scep_sans_json(preq.sans);

            st = pki_scep_pend_new(conf, m, keyhex, subj, sans, req->client,
                                   !replay, &created, &waiting, &ran, res);
            free(subj);
            cJSON_free(sans);
        }

        if (st != PKI_OK) {
            /* the record may have been made (a lost answer, or its index
             * failed after it): the challenge stays used; surely not made
             * (no connection, the script not sent whole): given back for
             * the client's retry */
            granted = ran;
            pki_scep_http_error(resp, 0);
            goto done;
        }

        if (created == -1) {
            /* not this request's record: answering PENDING would leave
             * it waiting for nothing, with its challenge used up */
            pki_fail(res, PKI_FORBIDDEN, "transactionID \"%s\" is taken by "
                     "a pending request of another key, CA or template",
                     m->tid);
            pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
            goto done;
        }

        if (created == -2) {
            pki_fail(res, PKI_FORBIDDEN, "replayed message: this signed "
                     "message was taken before and its request is decided "
                     "or gone");
            pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
            goto done;
        }

        if (created == -3) {
            /* nothing written: the challenge and the message are given
             * back, so that the device's resend may be queued once the
             * operators have decided some */
            pki_fail(res, PKI_FORBIDDEN, "the approval queue is full: %lld "
                     "requests wait (scep_pending_max %ld); this one is not "
                     "queued", waiting, conf->pending_max);
            pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
            goto done;
        }

        pki_log(res, "%s", created ? "pending approval"
                                   : "already pending (resent)");
        /* used either way: "resent" may be the answer to this request's
         * own first run, sent again after a lost reply; a true resend
         * cannot hold the challenge its first send used */
        granted = 1;

        if (!pki_scep_certrep(conf, m, PKI_SCEP_PENDING, 0, NULL, 0, resp)) {
            pki_scep_http_error(resp, 0);
        }

        goto done;
    }

    /* the transaction log names a renewal, as for EST simplereenroll */
    if (renew) {
        pki_event_set_operation("renew");
    }

    /* a failure once the record's commit was sent may still have issued
     * (a lost answer): the challenge then stays used */
    if (!pki_scep_issue(conf, m, &preq, who, req->client, &cert, &granted,
                        resp))
    {
        goto done;
    }
    granted = 1;

    pki_scep_log_serial(res, cert);

    if (pki_scep_success(conf, m, cert, NULL, resp)) {
        if (!renew) {
            pki_scep_pend_done(conf, m, csrkey, cert, res);
        }

    } else if (pki_int_issue_withdraw(conf->redis, conf->ca, cert, res)) {
        /* Issued and recorded, but no CertRep carries it (the RA key's
         * token gone, say): revoked, so that nothing calls good a
         * certificate nobody holds, and the message and its challenge
         * are released, so that the client's resend of this request
         * gets one.  Not withdrawn (Redis gone too), they stay taken. */
        granted = 0;
    }

done:

    if (taken && !granted) {
        pki_scep_chal_give_back(conf->redis, &chal, res);
    }
    if (seen && !granted) {
        pki_scep_seen_release(conf->redis, seenkey, res);
    }
    if (seen_unsure) {
        pki_scep_seen_release_own(conf->redis, seenkey, seentok, res);
    }
    if (chal.unsure) {
        pki_scep_chal_untake(conf->redis, &chal, res);
    }
    pki_scep_chal_clear(&chal);
    X509_free(cert);
    pki_request_clear(&preq);
    X509_REQ_free(csr);
    free(who);
}


/* ---- CertPoll of a manually approved request ------------------------------- */

static void
pki_scep_poll_pending(const pki_scep_conf_t *conf, pki_scep_msg_t *m,
    pki_scep_resp_t *resp)
{
    pki_log(&resp->res, "still pending");

    if (!pki_scep_certrep(conf, m, PKI_SCEP_PENDING, 0, NULL, 0, resp)) {
        pki_scep_http_error(resp, 0);
    }
}


/* The request's certificate, from the store. */
static void
pki_scep_poll_issued(const pki_scep_conf_t *conf, pki_scep_msg_t *m,
    const char *serial, pki_scep_resp_t *resp)
{
    X509                 *cert;
    pki_status_t          st;
    pki_record_t          rec;
    pki_result_t         *res;
    const unsigned char  *p;

    res = &resp->res;

    st = pki_record_get(conf->redis, pki_ca_name(conf->ca), serial, &rec,
                        res);
    if (st != PKI_OK || rec.der == NULL) {
        pki_record_clear(&rec);
        if (st == PKI_UNAVAILABLE) {
            pki_scep_http_error(resp, 0);
            return;
        }
        pki_fail(res, PKI_NOT_FOUND, "the issued certificate is gone");
        pki_scep_fail(conf, m, PKI_SCEP_BAD_CERT_ID, resp);
        return;
    }

    /* a due plan is a revocation, carried out by worker 0 or not (OCSP
     * and the CRL say revoked from its time on) */
    (void) pki_record_at(&rec, time(NULL));

    if (rec.status != PKI_CERT_GOOD) {
        /* revoked since (by the operator, or withdrawn): the request
         * ended; a revoked certificate is no answer to it */
        pki_record_clear(&rec);
        pki_fail(res, PKI_FORBIDDEN, "the request's certificate (serial "
                 "%s) was revoked", serial);
        pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
        return;
    }

    p = rec.der;
    cert = d2i_X509(NULL, &p, (long) rec.der_len);
    pki_record_clear(&rec);

    if (cert == NULL) {
        pki_fail(res, PKI_INTERNAL, "bad stored certificate");
        pki_scep_http_error(resp, 500);
        return;
    }

    pki_log(res, "returned serial %s", serial);
    pki_scep_success(conf, m, cert, NULL, resp);
    X509_free(cert);
}


/* Gives a claim without a time one (a poll meanwhile keeps its; a record
 * gone or decided meanwhile is left alone). */
static const char  pki_lua_pend_stamp[] =
    "if redis.call('HGET', KEYS[1], 'status') == 'issuing' then "
    "redis.call('HSETNX', KEYS[1], 'since', ARGV[1]) end "
    "return 1";


static void
pki_scep_pend_stamp(pki_redis_t *r, const char *tid, pki_result_t *res)
{
    char          key[PKI_SCEP_KEY_MAX], now[24];
    long long     v;
    const char   *argv[5];
    pki_result_t  tmp;

    if (!pki_scep_rkey(r, "pend", tid, strlen(tid), key, sizeof(key))) {
        return;
    }

    snprintf(now, sizeof(now), "%lld", (long long) time(NULL));

    argv[0] = "EVAL";
    argv[1] = pki_lua_pend_stamp;
    argv[2] = "1";
    argv[3] = key;
    argv[4] = now;

    pki_result_init(&tmp);

    if (pki_scep_int_cmd(r, 5, argv, &v, &tmp) != PKI_OK) {
        pki_log(res, "CertPoll: could not time the claim: %s", tmp.detail);
        return;
    }

    pki_log(res, "CertPoll: a claim of an earlier version, timed now");
}


/* 1: the serial's record is committed and good, 2: committed and revoked
 * (withdrawn, pki_int_issue_withdraw, or revoked by an admin: never
 * handed out here), 0: not committed (pending or gone), -1: no answer. */
static int
pki_scep_poll_recorded(const pki_scep_conf_t *conf, const char *serial,
    pki_result_t *res)
{
    int           yes;
    pki_status_t  st;
    pki_record_t  rec;
    pki_result_t  tmp;

    /* "no such certificate" is an answer here, not the request's fate */
    pki_result_init(&tmp);

    st = pki_record_get(conf->redis, pki_ca_name(conf->ca), serial, &rec,
                        &tmp);
    if (st == PKI_NOT_FOUND) {
        return 0;
    }

    if (st != PKI_OK) {
        pki_fail(res, st, "%s", tmp.detail);
        return -1;
    }

    yes = rec.status == PKI_CERT_GOOD && rec.der != NULL ? 1
          : rec.status == PKI_CERT_REVOKED ? 2 : 0;
    pki_record_clear(&rec);

    return yes;
}


/*
 * A poll of a claimed ("issuing") request.  The serial recorded on the
 * claim (pki_scep_claim_serial) tells: its certificate committed means
 * the request is issued, whoever committed it (the claimer may have died
 * or lost the answer).  A claim that is stale (or given up: "since" 0)
 * with nothing committed is taken over, after the pending record of its
 * serial is abandoned, so a late commit of the old claimer fails and
 * never makes a second certificate.  1: take the claim over; 0: answered.
 */
static int
pki_scep_poll_settle(const pki_scep_conf_t *conf, pki_scep_msg_t *m,
    pki_scep_pend_t *pend, pki_scep_resp_t *resp)
{
    int           stale, got, done, withdrawn;
    long long     since;
    const char   *from[3], *to[4];
    pki_result_t *res;

    res = &resp->res;

    if (pend->since[0] == '\0') {
        /* a claim of a version before claims had a time (and a serial):
         * its poller may still be issuing.  It gets a time now, and is
         * taken over PKI_SCEP_CLAIM_STALE from now */
        pki_scep_pend_stamp(conf->redis, m->tid, res);
        pki_scep_poll_pending(conf, m, resp);
        return 0;
    }

    since = strtoll(pend->since, NULL, 10);
    stale = since + PKI_SCEP_CLAIM_STALE < (long long) time(NULL);

    if (pend->serial[0] == '\0') {
        /* nothing reserved yet (a claimer that reserves now fails its
         * compare-and-set of the serial once the claim is taken over) */
        if (!stale) {
            pki_scep_poll_pending(conf, m, resp);
            return 0;
        }
        pki_log(res, "CertPoll: taking over a stale claim");
        return 1;
    }

    got = pki_scep_poll_recorded(conf, pend->serial, res);

    if (got == 0 && stale) {
        if (pki_record_abandon(conf->redis, pki_ca_name(conf->ca),
                               pend->serial, res) != PKI_OK)
        {
            pki_scep_http_error(resp, 0);
            return 0;
        }
        got = pki_scep_poll_recorded(conf, pend->serial, res);
    }

    if (got < 0) {
        pki_scep_http_error(resp, 0);
        return 0;
    }

    if (got == 2) {
        /* recorded, then revoked: withdrawn (the transaction log refused
         * it, pki_int_issue_withdraw) is issued anew; revoked by an
         * operator (or withdrawn but not marked so) is the request's
         * end, as a rejection: no certificate for its key again */
        if (pki_int_record_withdrawn(conf->redis, pki_ca_name(conf->ca),
                                     pend->serial, 0, &withdrawn, res)
            != PKI_OK)
        {
            pki_scep_http_error(resp, 0);
            return 0;
        }

        if (withdrawn) {
            pki_log(res, "CertPoll: serial %s of an interrupted issuance "
                    "was withdrawn; issuing anew", pend->serial);
            return 1;
        }

        if (!stale) {
            /* a live claimer may be between its withdrawal's revocation
             * and its mark: it settles the request itself */
            pki_scep_poll_pending(conf, m, resp);
            return 0;
        }

        from[0] = "issuing";
        from[1] = pend->claim[0] ? pend->claim : "-";
        from[2] = pend->serial;
        to[0] = "rejected";
        to[1] = "";
        to[2] = "";
        to[3] = "";

        if (pki_scep_pend_cas(conf->redis, m->tid, from, to, &done, res)
            != PKI_OK)
        {
            pki_log(res, "CertPoll: could not mark the request rejected");
        }

        pki_fail(res, PKI_FORBIDDEN, "serial %s of the request's "
                 "interrupted issuance was revoked: not issued anew",
                 pend->serial);
        pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
        return 0;
    }

    if (got == 0) {
        if (!stale) {
            pki_scep_poll_pending(conf, m, resp);
            return 0;
        }
        pki_log(res, "CertPoll: taking over a stale claim (serial %s not "
                "recorded, abandoned)", pend->serial);
        return 1;
    }

    /* committed: the request is issued, with that certificate */
    from[0] = "issuing";
    from[1] = pend->claim[0] ? pend->claim : "-";
    from[2] = pend->serial;
    to[0] = "issued";
    to[1] = "";
    to[2] = "";
    to[3] = pend->serial;

    if (pki_scep_pend_cas(conf->redis, m->tid, from, to, &done, res)
        != PKI_OK)
    {
        pki_log(res, "CertPoll: could not mark the request issued");
    }

    pki_log(res, "CertPoll: serial %s of an interrupted issuance is "
            "recorded", pend->serial);
    pki_scep_poll_issued(conf, m, pend->serial, resp);

    return 0;
}


/* The hook pki_issue calls once the serial is reserved, before anything
 * is signed: the serial goes on the claim, or the issuance stops when
 * the claim was taken over. */
typedef struct {
    pki_redis_t  *r;
    const char   *tid;
    const char   *claim;
    const char   *since;
} pki_scep_claim_t;


static pki_status_t
pki_scep_claim_serial(void *arg, const char *serial, pki_result_t *res)
{
    int                done;
    pki_status_t       st;
    pki_scep_claim_t  *cl = arg;
    const char        *from[3], *to[4];

    from[0] = "issuing";
    from[1] = cl->claim;
    from[2] = "-";
    to[0] = "issuing";
    to[1] = cl->claim;
    to[2] = cl->since;
    to[3] = serial;

    st = pki_scep_pend_cas(cl->r, cl->tid, from, to, &done, res);
    if (st != PKI_OK) {
        return st;
    }

    if (!done) {
        return pki_fail(res, PKI_CONFLICT, "CertPoll: another poll took "
                        "the issuance over");
    }

    return PKI_OK;
}


/*
 * What the pending record tells a CertPoll of its request, or a resend of
 * its PKCSReq (the caller has checked that the signer holds the request's
 * key, under this CA and template): PENDING while undecided or being
 * issued, FAILURE after a rejection, the certificate once issued; an
 * approved request is issued here, by the one caller that claims it.
 */
static void
pki_scep_pend_answer(const pki_scep_conf_t *conf, const pki_scep_req_t *req,
    pki_scep_msg_t *m, pki_scep_pend_t *pend, pki_scep_resp_t *resp)
{
    int                    done, committed;
    char                   claim[17], since[24], hex[41];
    X509                  *cert;
    X509_REQ              *csr;
    const char            *from[3], *to[4];
    pki_status_t           st;
    pki_result_t          *res;
    pki_request_t          preq;
    unsigned char          rnd[8];
    pki_scep_claim_t       cl;

    res = &resp->res;
    cert = NULL;
    csr = NULL;
    memset(&preq, 0, sizeof(preq));

    if (strcmp(pend->status, "pending") == 0) {
        pki_scep_poll_pending(conf, m, resp);
        goto done;
    }

    if (strcmp(pend->status, "rejected") == 0) {
        pki_fail(res, PKI_FORBIDDEN, "the request was rejected");
        pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
        goto done;
    }

    if (strcmp(pend->status, "issued") == 0) {
        pki_scep_poll_issued(conf, m, pend->serial, resp);
        goto done;
    }

    if (strcmp(pend->status, "issuing") == 0) {
        /* a claim: running, or left by a poller that died or failed */
        if (!pki_scep_poll_settle(conf, m, pend, resp)) {
            goto done;
        }
        from[0] = "issuing";
        from[1] = pend->claim[0] ? pend->claim : "-";
        from[2] = pend->serial[0] ? pend->serial : "-";

    } else if (strcmp(pend->status, "approved") == 0) {
        from[0] = "approved";
        from[1] = "*";
        from[2] = "*";

    } else {
        pki_fail(res, PKI_INTERNAL, "unknown pending status");
        pki_scep_http_error(resp, 500);
        goto done;
    }

    if (pend->csr == NULL) {
        /* a decided request's record (its CSR's hash alone) set back by
         * hand: nothing to issue from */
        pki_fail(res, PKI_INTERNAL, "the pending record has no CSR");
        pki_scep_http_error(resp, 500);
        goto done;
    }

    /* one poller claims the issuance */

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        ERR_clear_error();
        pki_fail(res, PKI_INTERNAL, "no random bytes for the claim");
        pki_scep_http_error(resp, 500);
        goto done;
    }

    pki_hex(rnd, sizeof(rnd), claim, 0);
    snprintf(since, sizeof(since), "%lld", (long long) time(NULL));

    to[0] = "issuing";
    to[1] = claim;
    to[2] = since;
    to[3] = "-";

    st = pki_scep_pend_cas(conf->redis, m->tid, from, to, &done, res);
    if (st != PKI_OK) {
        pki_scep_http_error(resp, 0);
        goto done;
    }

    if (!done) {
        pki_scep_poll_pending(conf, m, resp);
        goto done;
    }

    /* from here on, only this claim changes the record */
    from[0] = "issuing";
    from[1] = claim;
    from[2] = "*";

    st = pki_csr_parse(pend->csr, pend->csr_len, &csr, res);
    if (st == PKI_OK) {
        st = pki_request_from_csr(conf->tmpl, csr, &preq, res);
    }

    if (st != PKI_OK) {
        to[0] = "rejected";
        to[1] = "";
        to[3] = "";
        (void) pki_scep_pend_cas(conf->redis, m->tid, from, to, &done, NULL);
        pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
        goto done;
    }

    cl.r = conf->redis;
    cl.tid = m->tid;
    cl.claim = claim;
    cl.since = since;
    pki_int_issue_on_reserved(pki_scep_claim_serial, &cl);

    committed = 0;

    if (!pki_scep_issue(conf, m, &preq, "manual approval", req->client, &cert,
                        &committed, resp))
    {
        if (committed) {
            /* the certificate may be recorded: the next poll settles it
             * from the store ("since" 0: no claim is running) */
            to[2] = "0";
            to[3] = "";
        } else {
            to[0] = "approved";
            to[1] = "";
        }
        (void) pki_scep_pend_cas(conf->redis, m->tid, from, to, &done, NULL);
        goto done;
    }

    if (!pki_serial_to_hex(X509_get0_serialNumber(cert), hex)) {
        hex[0] = '\0';
    }

    /* a failure here leaves the claim with the serial: the next poll
     * finds the certificate recorded and marks the request issued */
    to[0] = "issued";
    to[1] = "";
    to[3] = hex[0] ? hex : "";
    (void) pki_scep_pend_cas(conf->redis, m->tid, from, to, &done, NULL);

    pki_scep_log_serial(res, cert);
    pki_scep_success(conf, m, cert, NULL, resp);

done:

    X509_free(cert);
    X509_REQ_free(csr);
    pki_request_clear(&preq);
}


/*
 * A PKCSReq at a manual-approval location whose transactionID names a
 * request of the signer's key, CA and template is answered from that
 * request's record, before any challenge is judged (the first send used
 * a one-time challenge up) and with nothing consumed: the client's
 * resend of a request stands for its CertPoll (micromdm scepclient sends
 * the same message again and never polls).  While undecided, approved
 * or being issued any PKCSReq of that key is a resend; once issued or
 * rejected only one with the same CSR is (it gets that certificate, or
 * FAILURE), another is a new request.  1: not a resend, go on; 0:
 * answered.  A record of another key, CA or template is left to
 * pki_lua_pend_new, which refuses the request.
 */
static int
pki_scep_resend(const pki_scep_conf_t *conf, const pki_scep_req_t *req,
    pki_scep_msg_t *m, pki_scep_resp_t *resp)
{
    int              rc, same, closed, good;
    char             keyhex[65], csrhex[65];
    pki_status_t     st;
    pki_record_t     rec;
    pki_result_t     tmp;
    pki_scep_pend_t  pend;

    st = pki_scep_pend_get(conf->redis, m->tid, &pend, &resp->res);

    if (st == PKI_NOT_FOUND) {
        return 1;
    }

    if (st != PKI_OK) {
        pki_scep_http_error(resp, 0);
        return 0;
    }

    rc = 1;

    if (!pki_scep_key_hex(X509_get0_pubkey(m->signer), keyhex)
        || strcmp(keyhex, pend.key) != 0
        || strcmp(pend.ca, pki_ca_name(conf->ca)) != 0
        || strcmp(pend.tmpl, pki_template_name(conf->tmpl)) != 0)
    {
        goto done;
    }

    if (pend.csr != NULL) {
        same = pend.csr_len == m->data_len
               && memcmp(pend.csr, m->data, m->data_len) == 0;
    } else {
        same = pki_sha256_hex(m->data, m->data_len, csrhex)
               && strcmp(csrhex, pend.csrhash) == 0;
    }
    closed = strcmp(pend.status, "issued") == 0
             || strcmp(pend.status, "rejected") == 0;

    if (closed && !same) {
        goto done;
    }

    /* where requests are enrolled at once only an issued one is resent,
     * and only while its certificate is good: else it is a new request */
    if (!conf->manual) {
        if (strcmp(pend.status, "issued") != 0) {
            goto done;
        }

        pki_result_init(&tmp);
        st = pki_record_get(conf->redis, pki_ca_name(conf->ca), pend.serial,
                            &rec, &tmp);
        (void) pki_record_at(&rec, time(NULL));
        good = st == PKI_OK && rec.der != NULL
               && rec.status == PKI_CERT_GOOD;
        pki_record_clear(&rec);

        if (st == PKI_UNAVAILABLE) {
            pki_fail(&resp->res, PKI_UNAVAILABLE, "%s", tmp.detail);
            pki_scep_http_error(resp, 0);
            rc = 0;
            goto done;
        }

        if (!good) {
            goto done;
        }
    }

    rc = 0;

    if (strcmp(pend.status, "pending") == 0) {
        pki_log(&resp->res, "already pending (resent)");
        if (!pki_scep_certrep(conf, m, PKI_SCEP_PENDING, 0, NULL, 0, resp)) {
            pki_scep_http_error(resp, 0);
        }
        goto done;
    }

    pki_scep_pend_answer(conf, req, m, &pend, resp);
    pki_log(&resp->res, "%s(resent: the request is %s)",
            resp->res.log[0] ? "; " : "", pend.status);

done:

    pki_scep_pend_clear(&pend);

    return rc;
}


/* CertPoll / GetCertInitial (20): IssuerAndSubject; the transactionID
 * names the pending request, the signer must hold its key. */
static void
pki_scep_certpoll(const pki_scep_conf_t *conf, const pki_scep_req_t *req,
    pki_scep_msg_t *m, pki_scep_resp_t *resp)
{
    char                   keyhex[65];
    pki_status_t           st;
    pki_result_t          *res;
    pki_scep_pend_t        pend;
    STACK_OF(ASN1_TYPE)   *seq;
    const unsigned char   *p;

    res = &resp->res;
    memset(&pend, 0, sizeof(pend));

    /* IssuerAndSubject ::= SEQUENCE { issuer Name, subject Name } */
    p = m->data;
    seq = d2i_ASN1_SEQUENCE_ANY(NULL, &p, (long) m->data_len);
    if (seq == NULL || p != m->data + m->data_len
        || sk_ASN1_TYPE_num(seq) != 2
        || sk_ASN1_TYPE_value(seq, 0)->type != V_ASN1_SEQUENCE
        || sk_ASN1_TYPE_value(seq, 1)->type != V_ASN1_SEQUENCE)
    {
        sk_ASN1_TYPE_pop_free(seq, ASN1_TYPE_free);
        ERR_clear_error();
        pki_fail(res, PKI_MALFORMED, "CertPoll: bad IssuerAndSubject");
        pki_scep_content_bad(conf, m, resp);
        return;
    }

    sk_ASN1_TYPE_pop_free(seq, ASN1_TYPE_free);

    if (conf->redis == NULL) {
        pki_fail(res, PKI_INTERNAL, "no certificate store");
        pki_scep_http_error(resp, 500);
        return;
    }

    st = pki_scep_pend_get(conf->redis, m->tid, &pend, res);

    if (st == PKI_NOT_FOUND) {
        pki_fail(res, PKI_NOT_FOUND, "CertPoll: no pending request with "
                 "transactionID \"%s\"", m->tid);
        pki_scep_fail(conf, m, PKI_SCEP_BAD_CERT_ID, resp);
        return;
    }

    if (st != PKI_OK) {
        pki_scep_http_error(resp, 0);
        return;
    }

    if (!pki_scep_key_hex(X509_get0_pubkey(m->signer), keyhex)
        || strcmp(keyhex, pend.key) != 0
        || strcmp(pend.ca, pki_ca_name(conf->ca)) != 0
        || strcmp(pend.tmpl, pki_template_name(conf->tmpl)) != 0)
    {
        pki_fail(res, PKI_FORBIDDEN, "CertPoll: the signer does not hold the "
                 "key of the pending request (or another CA or template)");
        pki_scep_fail(conf, m, PKI_SCEP_BAD_CERT_ID, resp);
        goto done;
    }

    pki_scep_pend_answer(conf, req, m, &pend, resp);

done:

    pki_scep_pend_clear(&pend);
}


/*
 * The last CRL each CA's GetCRL answered with, per process: a GetCRL asks
 * the store whether that number is still current (the meta alone) rather
 * than reading the whole DER in chunks, checking its signature and
 * parsing it on each request; a client needs no credential for GetCRL,
 * and at a million entries that was seconds of a pool thread and Redis
 * per message.  Kept when its DER is at most PKI_SCEP_CRL_KEEP_MAX (a
 * parsed CRL takes a few times that in memory); a larger one is read
 * each time, as before.  An entry is the CA's (its pointer and name) and
 * is taken only for the number and thisUpdate the store names.
 */
#define PKI_SCEP_CRL_SLOTS     8
#define PKI_SCEP_CRL_KEEP_MAX  (16 * 1024 * 1024)

typedef struct {
    const pki_ca_t  *ca;            /* compared only, never followed */
    char            *name;          /* malloc'd */
    X509_CRL        *crl;
    long long        number;
    time_t           this_update;
    unsigned long    used;
} pki_scep_crl_t;

static pki_scep_crl_t    pki_scep_crls[PKI_SCEP_CRL_SLOTS];
static unsigned long     pki_scep_crl_clock;
static pthread_mutex_t   pki_scep_crl_lock = PTHREAD_MUTEX_INITIALIZER;


/* A reference to the CRL kept for ca (its number and thisUpdate in *number
 * and *this_update), or NULL. */
static X509_CRL *
pki_scep_crl_kept(const pki_ca_t *ca, long long *number, time_t *this_update)
{
    int              i;
    X509_CRL        *crl;
    pki_scep_crl_t  *e;

    crl = NULL;

    pthread_mutex_lock(&pki_scep_crl_lock);

    for (i = 0; i < PKI_SCEP_CRL_SLOTS; i++) {
        e = &pki_scep_crls[i];

        if (e->crl != NULL && e->ca == ca
            && strcmp(e->name, pki_ca_name(ca)) == 0)
        {
            if (X509_CRL_up_ref(e->crl) == 1) {
                crl = e->crl;
                *number = e->number;
                *this_update = e->this_update;
                e->used = ++pki_scep_crl_clock;
            }
            break;
        }
    }

    pthread_mutex_unlock(&pki_scep_crl_lock);

    return crl;
}


/* Keeps a reference to crl (DER len bytes) as ca's, in ca's slot or the
 * least recently used one. */
static void
pki_scep_crl_keep(const pki_ca_t *ca, X509_CRL *crl, size_t len,
    long long number, time_t this_update)
{
    int              i;
    char            *name;
    pki_scep_crl_t  *e, *slot;

    if (len > PKI_SCEP_CRL_KEEP_MAX) {
        return;
    }

    name = strdup(pki_ca_name(ca));
    if (name == NULL) {
        return;
    }

    if (X509_CRL_up_ref(crl) != 1) {
        free(name);
        return;
    }

    pthread_mutex_lock(&pki_scep_crl_lock);

    slot = &pki_scep_crls[0];

    for (i = 0; i < PKI_SCEP_CRL_SLOTS; i++) {
        e = &pki_scep_crls[i];

        if (e->crl != NULL && e->ca == ca && strcmp(e->name, name) == 0) {
            slot = e;
            break;
        }

        if (e->crl == NULL || (slot->crl != NULL && e->used < slot->used)) {
            slot = e;
        }
    }

    X509_CRL_free(slot->crl);
    free(slot->name);

    slot->ca = ca;
    slot->name = name;
    slot->crl = crl;
    slot->number = number;
    slot->this_update = this_update;
    slot->used = ++pki_scep_crl_clock;

    pthread_mutex_unlock(&pki_scep_crl_lock);
}


/* GetCert (21) and GetCRL (22): IssuerAndSerialNumber of this CA.  GetCRL
 * may name the CA certificate itself instead of one it issued: sscep sends
 * the CA's subject with the CA certificate's serial, older clients the CA
 * certificate's own IssuerAndSerialNumber (the CRL is public: either gets
 * it).  Any other issuer is refused. */
static void
pki_scep_getcert(const pki_scep_conf_t *conf, pki_scep_msg_t *m,
    pki_scep_resp_t *resp)
{
    int                        self;
    char                       hex[41];
    time_t                     have_this_update;
    X509                      *cert, *ca;
    X509_CRL                  *crl, *kept;
    long long                  have;
    pki_status_t               st;
    pki_record_t               rec;
    pki_result_t              *res;
    pki_crl_info_t             info;
    const unsigned char       *p;
    PKCS7_ISSUER_AND_SERIAL   *ias;

    res = &resp->res;
    cert = NULL;
    crl = NULL;

    p = m->data;
    ias = d2i_PKCS7_ISSUER_AND_SERIAL(NULL, &p, (long) m->data_len);
    if (ias == NULL || p != m->data + m->data_len) {
        PKCS7_ISSUER_AND_SERIAL_free(ias);
        ERR_clear_error();
        pki_fail(res, PKI_MALFORMED, "bad IssuerAndSerialNumber");
        pki_scep_content_bad(conf, m, resp);
        return;
    }

    ca = pki_ca_cert(conf->ca);

    self = m->type == PKI_SCEP_GETCRL
           && ASN1_INTEGER_cmp(ias->serial, X509_get0_serialNumber(ca)) == 0
           && (X509_NAME_cmp(ias->issuer, X509_get_subject_name(ca)) == 0
               || X509_NAME_cmp(ias->issuer, X509_get_issuer_name(ca)) == 0);

    if (!self
        && (X509_NAME_cmp(ias->issuer, X509_get_subject_name(ca)) != 0
            || !pki_serial_to_hex(ias->serial, hex)))
    {
        PKCS7_ISSUER_AND_SERIAL_free(ias);
        pki_fail(res, PKI_NOT_FOUND, "not a certificate of this CA");
        pki_scep_fail(conf, m, PKI_SCEP_BAD_CERT_ID, resp);
        return;
    }

    PKCS7_ISSUER_AND_SERIAL_free(ias);

    if (conf->redis == NULL) {
        pki_fail(res, PKI_INTERNAL, "no certificate store");
        pki_scep_http_error(resp, 500);
        return;
    }

    if (self) {
        pki_log(res, "GetCRL names the CA certificate; ");
        goto crl;
    }

    st = pki_record_get(conf->redis, pki_ca_name(conf->ca), hex, &rec, res);
    if (st == PKI_UNAVAILABLE) {
        pki_record_clear(&rec);
        pki_scep_http_error(resp, 0);
        return;
    }

    /* no record, or (GetCert) a withdrawn certificate
     * (pki_int_issue_withdraw): never given to its requester, maybe
     * without a transaction log entry (carry=off), its serial on the CRL
     * for anyone to ask for */
    if (st != PKI_OK || rec.der == NULL
        || (m->type == PKI_SCEP_GETCERT && rec.withdrawn))
    {
        pki_fail(res, PKI_NOT_FOUND, "no certificate with serial \"%s\"%s",
                 hex, st == PKI_OK && rec.withdrawn
                      ? " (withdrawn: never delivered)" : "");
        pki_record_clear(&rec);
        pki_scep_fail(conf, m, PKI_SCEP_BAD_CERT_ID, resp);
        return;
    }

    p = rec.der;
    cert = d2i_X509(NULL, &p, (long) rec.der_len);
    pki_record_clear(&rec);

    if (cert == NULL) {
        pki_fail(res, PKI_INTERNAL, "bad stored certificate");
        pki_scep_http_error(resp, 500);
        return;
    }

    if (m->type == PKI_SCEP_GETCERT) {
        /* RFC 8894 3.3.4: for a client to retrieve its own certificate.
         * To anyone else a serial (each revoked one is on the CRL) would
         * give the subject and names of its holder: answered as an
         * unknown serial */
        if (!pki_scep_same_key(X509_get_X509_PUBKEY(m->signer),
                               X509_get_X509_PUBKEY(cert)))
        {
            X509_free(cert);
            pki_fail(res, PKI_NOT_FOUND, "no certificate with serial \"%s\" "
                     "(the signer does not hold its key)", hex);
            pki_scep_fail(conf, m, PKI_SCEP_BAD_CERT_ID, resp);
            return;
        }

        pki_log(res, "returned serial %s", hex);
        pki_scep_success(conf, m, cert, NULL, resp);
        X509_free(cert);
        return;
    }

    X509_free(cert);

crl:

    /* no CRL any relying party would take: none is signed */
    if (!pki_ca_signs_crls(conf->ca)) {
        pki_fail(res, PKI_UNSUPPORTED, "CA \"%s\" publishes no CRL (its "
                 "keyUsage lacks cRLSign)", pki_ca_name(conf->ca));
        pki_scep_fail(conf, m, PKI_SCEP_BAD_REQUEST, resp);
        return;
    }

    kept = pki_scep_crl_kept(conf->ca, &have, &have_this_update);

    memset(&info, 0, sizeof(info));
    st = pki_crl_current(conf->ca, conf->redis,
                         conf->crl_next_update > 0 ? conf->crl_next_update
                                                   : 86400,
                         kept != NULL ? have : 0, &info, res);

    if (st == PKI_OK && info.der == NULL && kept != NULL
        && (info.number != have || info.this_update != have_this_update))
    {
        /* not the one kept after all: read it whole */
        X509_CRL_free(kept);
        kept = NULL;
        memset(&info, 0, sizeof(info));
        st = pki_crl_current(conf->ca, conf->redis,
                             conf->crl_next_update > 0
                             ? conf->crl_next_update : 86400,
                             0, &info, res);
    }

    if (st != PKI_OK || (info.der == NULL && kept == NULL)) {
        free(info.der);
        X509_CRL_free(kept);
        if (res->status == PKI_OK) {
            pki_fail(res, PKI_UNAVAILABLE, "no CRL");

        } else if (pki_ca_end(conf->ca) != (time_t) -1
                   && pki_ca_end(conf->ca) <= time(NULL))
        {
            /*
             * The CA (or a certificate above it, pki_ca_end) has ended:
             * its last CRL (cut to its end) has
             * expired with it, and no new one is signed (pki_crl).  The
             * CRL location answers 503 with Retry-After then, and so does
             * GetCRL, not a CertRep FAILURE: every failInfo of RFC 8894
             * 3.2.1.4 blames the request (badAlg, badMessageCheck,
             * badRequest, badTime, badCertId), which a client takes as
             * final, while this ends when the CA is renewed; and a
             * CertRep would be one more signature of a key past the
             * certificate that vouches for it (the RA is often the CA).
             */
            res->status = PKI_UNAVAILABLE;
        }
        pki_scep_http_error(resp, 0);
        return;
    }

    if (info.der == NULL) {
        crl = kept;

    } else {
        X509_CRL_free(kept);

        p = info.der;
        crl = d2i_X509_CRL(NULL, &p, (long) info.len);
        free(info.der);

        if (crl == NULL) {
            pki_fail(res, PKI_INTERNAL, "bad CRL");
            pki_scep_http_error(resp, 500);
            return;
        }

        pki_scep_crl_keep(conf->ca, crl, info.len, info.number,
                          info.this_update);
    }

    pki_log(res, "returned CRL %lld", info.number);
    pki_scep_success(conf, m, NULL, crl, resp);
    X509_CRL_free(crl);
}


static void
pki_scep_pkioperation(const pki_scep_conf_t *conf, const pki_scep_req_t *req,
    pki_scep_resp_t *resp)
{
    int                   fail, get;
    size_t                max, derlen;
    pki_result_t         *res;
    unsigned char        *der;
    pki_scep_msg_t        m;
    const unsigned char  *in;

    res = &resp->res;
    der = NULL;
    memset(&m, 0, sizeof(m));

    max = conf->max_body ? conf->max_body : PKI_SCEP_MAX_BODY;

    if (req->method == NULL
        || (strcmp(req->method, "GET") != 0
            && strcmp(req->method, "POST") != 0))
    {
        pki_fail(res, PKI_UNSUPPORTED, "method not allowed");
        pki_scep_http_error(resp, 405);
        return;
    }

    get = strcmp(req->method, "GET") == 0;

    /* the cap is on the message's DER, by GET as by POST: the base64 of
     * a GET is 4/3 of it, with line breaks maybe (a 16th more is room for
     * CR LF every 32 characters; bounded here as the glue does, before
     * the decoding; the DER is checked after it) */
    if (req->body_len > (get ? max / 3 * 4 + max / 12 + 16 : max)) {
        pki_fail(res, PKI_TOO_LARGE, "message larger than %zu bytes", max);
        pki_scep_http_error(resp, 413);
        return;
    }

    if (req->body == NULL || req->body_len == 0) {
        pki_fail(res, PKI_MALFORMED, "empty message");
        pki_scep_http_error(resp, 400);
        return;
    }

    if (get) {
        if (pki_base64_decode(req->body, req->body_len, &der, &derlen, res)
            != PKI_OK)
        {
            pki_fail(res, PKI_MALFORMED, "the message parameter is not "
                     "base64");
            pki_scep_http_error(resp, 400);
            return;
        }

        if (derlen > max) {
            pki_fail(res, PKI_TOO_LARGE, "message larger than %zu bytes",
                     max);
            pki_scep_http_error(resp, 413);
            goto done;
        }

        in = der;

    } else {
        in = req->body;
        derlen = req->body_len;
    }

    /* 1. parse */
    if (!pki_scep_parse(in, derlen, &m, res)) {
        pki_scep_http_error(resp, 400);
        goto done;
    }

    resp->message_type = m.type;
    snprintf(resp->tid, sizeof(resp->tid), "%s", m.tid);

    /* 2. verify */
    fail = pki_scep_verify(conf, &m, res);
    if (fail >= 0) {
        pki_scep_fail(conf, &m, fail, resp);
        goto done;
    }

    /* 3. default deny */
    switch (m.type) {
    case PKI_SCEP_PKCSREQ:
    case PKI_SCEP_RENEWALREQ:
    case PKI_SCEP_CERTPOLL:
    case PKI_SCEP_GETCERT:
    case PKI_SCEP_GETCRL:
        break;
    default:
        pki_fail(res, PKI_UNSUPPORTED, "messageType %d is not supported",
                 m.type);
        pki_scep_fail(conf, &m, PKI_SCEP_BAD_REQUEST, resp);
        goto done;
    }

    /* every answer but a FAILURE is encrypted to the signer: without an
     * RSA key it could not be delivered, so nothing is done for it */
    if (EVP_PKEY_get_base_id(X509_get0_pubkey(m.signer)) != EVP_PKEY_RSA) {
        pki_fail(res, PKI_UNSUPPORTED, "the signer's key is not RSA: no "
                 "reply could be encrypted to it");
        pki_scep_fail(conf, &m, PKI_SCEP_BAD_ALG, resp);
        goto done;
    }

    /* 4. decrypt */
    fail = pki_scep_open(conf, &m, res);
    if (fail == -2) {
        pki_scep_http_error(resp, 0);
        goto done;
    }

    if (fail >= 0) {
        pki_scep_fail(conf, &m, fail, resp);
        goto done;
    }

    /* 5. the message type's own authorisation and action */
    switch (m.type) {
    case PKI_SCEP_PKCSREQ:
    case PKI_SCEP_RENEWALREQ:
        pki_scep_enroll(conf, req, &m, resp);
        break;
    case PKI_SCEP_CERTPOLL:
        pki_scep_certpoll(conf, req, &m, resp);
        break;
    default:
        pki_scep_getcert(conf, &m, resp);
        break;
    }

done:

    pki_scep_msg_free(&m);
    free(der);
}


/* ---- admin API: one-time challenges and approvals -------------------------- */

static pki_status_t
pki_scep_admin_json(const unsigned char *body, size_t len, cJSON **root,
    pki_result_t *res)
{
    const char  *end;

    *root = NULL;

    if (len > PKI_SCEP_ADMIN_BODY) {
        return pki_fail(res, PKI_TOO_LARGE, "request body over %d bytes",
                        PKI_SCEP_ADMIN_BODY);
    }

    if (body == NULL || len == 0) {
        *root = cJSON_CreateObject();
        return *root != NULL ? PKI_OK
                             : pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    *root = cJSON_ParseWithLengthOpts((const char *) body, len, &end, 0);
    if (*root == NULL || !cJSON_IsObject(*root)) {
        cJSON_Delete(*root);
        *root = NULL;
        return pki_fail(res, PKI_MALFORMED, "body is not a JSON object");
    }

    if (!pki_int_json_rest_blank(end, (const char *) body + len)) {
        /* what a proxy or a log may read as a second request */
        cJSON_Delete(*root);
        *root = NULL;
        return pki_fail(res, PKI_MALFORMED, "trailing data after the JSON "
                        "object");
    }

    if (pki_int_json_hidden(body, len, *root, res)) {
        cJSON_Delete(*root);
        *root = NULL;
        return PKI_MALFORMED;
    }

    return PKI_OK;
}


int
pki_int_json_rest_blank(const char *end, const char *last)
{
    while (end < last
           && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
    {
        end++;
    }

    return end == last;
}


/* What the JSON parser would hide in an admin body: a string cut at a
 * NUL (raw or \u0000: the rest of "serial" unseen), and a member given
 * twice (a proxy or a log reads the first, the parser keeps the last).
 * 1 (res filled) when the body has either. */
int
pki_int_json_hidden(const unsigned char *body, size_t len,
    const cJSON *root, pki_result_t *res)
{
    const cJSON  *a, *b;

    if (memchr(body, '\0', len) != NULL
        || memmem(body, len, "\\u0000", 6) != NULL)
    {
        pki_fail(res, PKI_MALFORMED, "a string holds a NUL");
        return 1;
    }

    /* JSON text is UTF-8 (RFC 8259 8.1): cJSON takes any byte, and a
     * value stored and echoed as it came would make answers no strict
     * client reads (and match no certificate's name) */
    if (!pki_int_utf8_valid(body, len)) {
        pki_fail(res, PKI_MALFORMED, "the body is not UTF-8");
        return 1;
    }

    for (a = root->child; a != NULL; a = a->next) {
        for (b = a->next; b != NULL; b = b->next) {
            if (strcmp(a->string, b->string) == 0) {
                pki_fail(res, PKI_MALFORMED, "member \"%.32s\" given twice",
                         a->string);
                return 1;
            }
        }
    }

    return 0;
}


/* An optional string member: 1 ok (NULL when absent), 0 bad. */
static int
pki_scep_json_str(cJSON *root, const char *name, size_t max,
    const char **out)
{
    cJSON   *it;
    size_t   i, n;

    *out = NULL;
    it = cJSON_GetObjectItemCaseSensitive(root, name);
    if (it == NULL || cJSON_IsNull(it)) {
        return 1;
    }

    if (!cJSON_IsString(it) || it->valuestring == NULL) {
        return 0;
    }

    n = strlen(it->valuestring);
    if (n > max) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        if ((unsigned char) it->valuestring[i] < 0x20) {
            return 0;     /* no newline may split the stored fields */
        }
    }

    *out = it->valuestring;
    return 1;
}


/* A challenge just made is taken back (its entry was not written);
 * best effort: unused, it expires with its ttl. */
static void
pki_scep_chal_drop(pki_redis_t *r, const char *key)
{
    size_t         lens[2];
    redisReply    *reply;
    const char    *argv[2];
    pki_result_t   tmp;

    pki_result_init(&tmp);

    argv[0] = "DEL";
    argv[1] = key;
    lens[0] = 3;
    lens[1] = strlen(key);

    reply = pki_int_redis_cmd(r, 2, argv, lens, &tmp);
    if (reply != NULL) {
        freeReplyObject(reply);
    }
}


/* A challenge whose answer could not be built or sent is deleted
 * (pki_admin_withdraw): PKI_OK, PKI_NOT_FOUND when it was already gone
 * (used, expired), or the Redis failure. */
pki_status_t
pki_int_scep_chal_delete(pki_redis_t *r, const char *key, pki_result_t *res)
{
    int            n;
    size_t         lens[2];
    redisReply    *reply;
    const char    *argv[2];
    char           prefix[PKI_SCEP_KEY_MAX];
    pki_status_t   st;

    n = snprintf(prefix, sizeof(prefix), "%sscep:chal:", pki_redis_ns(r));

    if (key == NULL || n <= 0 || (size_t) n >= sizeof(prefix)
        || strncmp(key, prefix, (size_t) n) != 0
        || strlen(key) != (size_t) n + 64)
    {
        return pki_fail(res, PKI_INTERNAL, "not a challenge's key");
    }

    argv[0] = "DEL";
    argv[1] = key;
    lens[0] = 3;
    lens[1] = strlen(key);

    reply = pki_int_redis_cmd(r, 2, argv, lens, res);
    if (reply == NULL) {
        return res->status != PKI_OK ? res->status : PKI_UNAVAILABLE;
    }

    if (reply->type != REDIS_REPLY_INTEGER) {
        freeReplyObject(reply);
        pki_int_redis_drop(r);
        return pki_fail(res, PKI_UNAVAILABLE, "redis: unexpected reply");
    }

    st = reply->integer > 0 ? PKI_OK : PKI_NOT_FOUND;
    freeReplyObject(reply);

    return st;
}


/* Whether a challenge's binding can be met (why says otherwise): ca one
 * of the server's CAs (cas, ncas; not judged without them), template one
 * that CA, or any of them, issues under, each comma-separated SAN of
 * san TYPE:VALUE with a type the binding compares (DNS, email, URI, IP:
 * an address). */
static int
pki_scep_chal_bindable(pki_ca_t *const *cas, size_t ncas, const char *ca,
    const char *tmpl, const char *san, char *why, size_t size)
{
    int           j, found;
    char          want[512], *tok, *save, *v;
    size_t        i, n;
    unsigned char ip[16];

    found = ca == NULL;

    for (i = 0; ca != NULL && i < ncas; i++) {
        found = found || strcmp(ca, pki_ca_name(cas[i])) == 0;
    }

    if (!found && ncas > 0) {
        snprintf(why, size, "\"ca\": no CA \"%.63s\" (a pki_ca name)", ca);
        return 0;
    }

    found = tmpl == NULL || ncas == 0;

    for (i = 0; !found && i < ncas; i++) {
        if (ca != NULL && strcmp(ca, pki_ca_name(cas[i])) != 0) {
            continue;
        }
        for (j = 0; j < pki_ca_template_count(cas[i]); j++) {
            found = found
                    || strcmp(tmpl, pki_ca_template_name(cas[i], j)) == 0;
        }
    }

    if (!found) {
        snprintf(why, size, "\"template\": %s%s%s issues under no template "
                 "\"%.63s\"", ca != NULL ? "CA \"" : "no CA",
                 ca != NULL ? ca : "", ca != NULL ? "\"" : "", tmpl);
        return 0;
    }

    if (san == NULL) {
        return 1;
    }

    if (strlen(san) >= sizeof(want)) {
        snprintf(why, size, "\"san\" is too long");
        return 0;
    }

    strcpy(want, san);

    for (tok = strtok_r(want, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save))
    {
        while (*tok == ' ') {
            tok++;
        }

        v = strchr(tok, ':');
        n = v != NULL ? (size_t) (v - tok) : 0;

        if (v == NULL || v[1] == '\0'
            || !((n == 3 && strncasecmp(tok, "DNS", 3) == 0)
                 || (n == 5 && strncasecmp(tok, "email", 5) == 0)
                 || (n == 3 && strncasecmp(tok, "URI", 3) == 0)
                 || (n == 2 && strncasecmp(tok, "IP", 2) == 0)))
        {
            snprintf(why, size, "\"san\": \"%.64s\" is not TYPE:VALUE "
                     "with TYPE DNS, email, URI or IP", tok);
            return 0;
        }

        if (n == 2 && inet_pton(AF_INET, v + 1, ip) != 1
            && inet_pton(AF_INET6, v + 1, ip) != 1)
        {
            snprintf(why, size, "\"san\": \"%.64s\" is not an IP "
                     "address", v + 1);
            return 0;
        }
    }

    return 1;
}


static pki_status_t
pki_scep_admin_challenge_in(pki_redis_t *r, pki_ca_t *const *cas,
    size_t ncas, const unsigned char *body, size_t len, char *pw,
    int *status, cJSON **out, pki_admin_made_t *made, pki_result_t *res)
{
    long            ttl;
    char            key[PKI_SCEP_KEY_MAX], ttls[24], *val;
    cJSON          *root, *it, *o;
    size_t          vlen, lens[7];
    redisReply     *reply;
    const char     *cn, *san, *tmpl, *ca, *argv[7];
    pki_status_t    st;
    unsigned char   rnd[16];
    time_t          exp;
    char            when[PKI_RFC3339_LEN], id[65], why[160];

    st = pki_scep_admin_json(body, len, &root, res);
    if (st != PKI_OK) {
        return st;
    }

    /* Every member is one of these, none null or empty: a binding spelt
     * otherwise ("CA", "common_name") or left null would make a challenge
     * bound to nothing, good for any name at any CA */
    cJSON_ArrayForEach(it, root) {
        if (it->string == NULL
            || (strcmp(it->string, "ttl") != 0
                && strcmp(it->string, "cn") != 0
                && strcmp(it->string, "san") != 0
                && strcmp(it->string, "template") != 0
                && strcmp(it->string, "ca") != 0))
        {
            st = pki_fail(res, PKI_MALFORMED, "unknown member \"%.40s\" "
                          "(a challenge takes \"ttl\", \"cn\", \"san\", "
                          "\"template\" and \"ca\")",
                          it->string != NULL ? it->string : "");
            cJSON_Delete(root);
            return st;
        }

        if (cJSON_IsNull(it)
            || (cJSON_IsString(it) && it->valuestring != NULL
                && it->valuestring[0] == '\0'))
        {
            st = pki_fail(res, PKI_MALFORMED, "\"%s\" is null or empty: "
                          "leave it out for no binding", it->string);
            cJSON_Delete(root);
            return st;
        }
    }

    ttl = PKI_SCEP_CHAL_TTL;
    it = cJSON_GetObjectItemCaseSensitive(root, "ttl");
    if (it != NULL) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 1
            || it->valuedouble > (double) PKI_SCEP_CHAL_TTL_MAX
            || it->valuedouble != (double) (long) it->valuedouble)
        {
            cJSON_Delete(root);
            return pki_fail(res, PKI_MALFORMED, "\"ttl\" must be a whole "
                            "number of seconds, 1..%ld",
                            PKI_SCEP_CHAL_TTL_MAX);
        }
        ttl = (long) it->valuedouble;
    }

    if (!pki_scep_json_str(root, "cn", 255, &cn)
        || !pki_scep_json_str(root, "san", 400, &san)
        || !pki_scep_json_str(root, "template", 63, &tmpl)
        || !pki_scep_json_str(root, "ca", 63, &ca))
    {
        cJSON_Delete(root);
        return pki_fail(res, PKI_MALFORMED, "\"cn\", \"san\", "
                        "\"template\" and \"ca\" must be short strings");
    }

    /* a binding no enrollment can meet (a CA or template misspelt, a SAN
     * of no type): refused now, not at the device's enrollment */
    if (!pki_scep_chal_bindable(cas, ncas, ca, tmpl, san, why,
                                sizeof(why)))
    {
        cJSON_Delete(root);
        return pki_fail(res, PKI_MALFORMED, "%s", why);
    }

    /* audited (the caller set the actor): not while the log cannot take
     * the entry */
    if (!pki_int_admin_ready(res)) {
        cJSON_Delete(root);
        return res->status;
    }

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        cJSON_Delete(root);
        return pki_fail(res, PKI_INTERNAL, "RAND_bytes() failed");
    }

    pki_hex(rnd, sizeof(rnd), pw, 0);
    OPENSSL_cleanse(rnd, sizeof(rnd));

    vlen = strlen(tmpl ? tmpl : "") + strlen(cn ? cn : "")
           + strlen(san ? san : "") + strlen(ca ? ca : "") + 4;
    val = malloc(vlen);
    if (val == NULL) {
        cJSON_Delete(root);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    snprintf(val, vlen, "%s\n%s\n%s\n%s", tmpl ? tmpl : "", cn ? cn : "",
             san ? san : "", ca ? ca : "");

    if (!pki_scep_rkey(r, "chal", pw, strlen(pw), key, sizeof(key))) {
        free(val);
        cJSON_Delete(root);
        return pki_fail(res, PKI_INTERNAL, "cannot build the key");
    }

    snprintf(ttls, sizeof(ttls), "%ld", ttl);

    argv[0] = "SET";
    argv[1] = key;
    argv[2] = val;
    argv[3] = "NX";
    argv[4] = "EX";
    argv[5] = ttls;

    for (int i = 0; i < 6; i++) {
        lens[i] = strlen(argv[i]);
    }

    reply = pki_int_redis_cmd(r, 6, argv, lens, res);
    free(val);

    if (reply == NULL) {
        cJSON_Delete(root);
        return res->status != PKI_OK ? res->status : PKI_UNAVAILABLE;
    }

    st = reply->type == REDIS_REPLY_STATUS ? PKI_OK : PKI_CONFLICT;
    freeReplyObject(reply);

    if (st != PKI_OK) {
        cJSON_Delete(root);
        return pki_fail(res, PKI_CONFLICT, "challenge collision, retry");
    }

    exp = time(NULL) + ttl;
    (void) pki_format_rfc3339(exp, when);

    /* the log names the challenge by an id, the start of the SHA-256 of
     * the password (as its Redis key, scep:chal:HASH), never by the
     * password; the answer gives the same id */
    if (!pki_sha256_hex(pw, strlen(pw), id)) {
        pki_scep_chal_drop(r, key);
        cJSON_Delete(root);
        return pki_fail(res, PKI_INTERNAL, "SHA-256 failed");
    }
    id[PKI_SCEP_CHAL_ID_LEN] = '\0';

    snprintf(why, sizeof(why), "one-time SCEP challenge %s created, "
             "expires %s", id, when);

    if (pki_int_admin_audit("scep-challenge-create", NULL, NULL, cn, why,
                            res)
        != PKI_OK)
    {
        /* not in the log: not handed out, and removed */
        pki_scep_chal_drop(r, key);
        cJSON_Delete(root);
        return pki_fail(res, PKI_UNAVAILABLE, "transaction log "
                        "unavailable");
    }

    /* made and audited: from here on, an answer that does not reach the
     * client takes it back (pki_admin_withdraw) */
    made->kind = PKI_ADMIN_MADE_SCEP_CHALLENGE;
    memcpy(made->id, id, PKI_SCEP_CHAL_ID_LEN + 1);
    memcpy(made->key, key, strlen(key) + 1);

    o = cJSON_CreateObject();
    if (o == NULL
        || cJSON_AddStringToObject(o, "challenge", pw) == NULL
        || cJSON_AddStringToObject(o, "id", id) == NULL
        || cJSON_AddNumberToObject(o, "ttl", (double) ttl) == NULL
        || cJSON_AddStringToObject(o, "expires", when) == NULL
        || (cn && cJSON_AddStringToObject(o, "cn", cn) == NULL)
        || (san && cJSON_AddStringToObject(o, "san", san) == NULL)
        || (tmpl && cJSON_AddStringToObject(o, "template", tmpl) == NULL)
        || (ca && cJSON_AddStringToObject(o, "ca", ca) == NULL))
    {
        cJSON_Delete(o);
        cJSON_Delete(root);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    /* cn and tmpl point into root */
    pki_log(res, "one-time SCEP challenge created, ttl %lds%s%s%s%s", ttl,
            cn ? ", cn " : "", cn ? cn : "", tmpl ? ", template " : "",
            tmpl ? tmpl : "");

    cJSON_Delete(root);

    *status = 201;
    *out = o;

    return PKI_OK;
}


/* A one-time challenge: the password is wiped from the stack here, on
 * every path (the answer's copy is the admin API's to wipe) */
static pki_status_t
pki_scep_admin_challenge(pki_redis_t *r, pki_ca_t *const *cas, size_t ncas,
    const unsigned char *body, size_t len, int *status, cJSON **out,
    pki_admin_made_t *made, pki_result_t *res)
{
    char          pw[33];
    pki_status_t  st;

    pw[0] = '\0';
    st = pki_scep_admin_challenge_in(r, cas, ncas, body, len, pw, status,
                                     out, made, res);
    OPENSSL_cleanse(pw, sizeof(pw));

    return st;
}


/* Removes a decided request from the index; best effort. */
static void
pki_scep_pend_unindex(pki_redis_t *r, const char *tid)
{
    char             key[PKI_SCEP_KEY_MAX], hex[65];
    char             member[PKI_SCEP_PEND_MEMBER_LEN + 1];
    size_t           lens[3];
    redisReply      *reply;
    const char      *argv[3];
    pki_result_t     tmp;
    pki_scep_pend_t  p;

    pki_result_init(&tmp);

    if (pki_scep_pend_get(r, tid, &p, &tmp) != PKI_OK) {
        return;
    }

    if (strlen(p.expires) != 12 || !pki_sha256_hex(tid, strlen(tid), hex)
        || snprintf(key, sizeof(key), "%sscep:pending", pki_redis_ns(r))
           >= (int) sizeof(key))
    {
        pki_scep_pend_clear(&p);
        return;
    }

    snprintf(member, sizeof(member), "%s:%s", p.expires, hex);
    pki_scep_pend_clear(&p);

    argv[0] = "ZREM";
    argv[1] = key;
    argv[2] = member;
    lens[0] = 4;
    lens[1] = strlen(key);
    lens[2] = strlen(member);

    reply = pki_int_redis_cmd(r, 3, argv, lens, &tmp);
    freeReplyObject(reply);
}


/* "<12 digits>:<64 lowercase hex>" */
static int
pki_scep_member_ok(const char *s, size_t len)
{
    size_t  i;

    if (len != PKI_SCEP_PEND_MEMBER_LEN || s[12] != ':') {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (i < 12 ? !isdigit((unsigned char) s[i])
                   : i > 12 && !(isdigit((unsigned char) s[i])
                                 || (s[i] >= 'a' && s[i] <= 'f')))
        {
            return 0;
        }
    }

    return 1;
}


static void
pki_scep_time_text(const char *epoch, char buf[PKI_RFC3339_LEN])
{
    char       *end;
    long long   v;

    v = strtoll(epoch, &end, 10);

    if (end == epoch || *end != '\0'
        || !pki_format_rfc3339((time_t) v, buf))
    {
        buf[0] = '\0';
    }
}


/* One pending request as JSON: only what an operator needs to decide (no
 * CSR, no key hash).  NULL if the record is gone or no longer pending. */
static cJSON *
pki_scep_pend_json(redisReply *v)
{
    size_t          i;
    char            when[32];
    cJSON          *o, *sans, *it;
    redisReply     *f[9];     /* status tid subject sans template ca
                                 client created expires */

    if (v->type != REDIS_REPLY_ARRAY || v->elements != 9) {
        return NULL;
    }

    for (i = 0; i < 9; i++) {
        f[i] = v->element[i];
        if (f[i]->type != REDIS_REPLY_STRING || f[i]->len > 4096
            || memchr(f[i]->str, '\0', f[i]->len) != NULL)
        {
            if (i >= 3) {
                f[i] = NULL;       /* optional */
                continue;
            }
            return NULL;           /* status, tid, subject */
        }
    }

    if (strcmp(f[0]->str, "pending") != 0
        || !pki_printable((const unsigned char *) f[1]->str, f[1]->len))
    {
        return NULL;
    }

    o = cJSON_CreateObject();
    if (o == NULL) {
        return NULL;
    }

    sans = NULL;
    if (f[3] != NULL) {
        sans = cJSON_ParseWithLength(f[3]->str, f[3]->len);
        if (sans != NULL && !cJSON_IsArray(sans)) {
            cJSON_Delete(sans);
            sans = NULL;
        }
        cJSON_ArrayForEach(it, sans) {
            if (!cJSON_IsString(it)) {
                cJSON_Delete(sans);
                sans = NULL;
                break;
            }
        }
    }

    if (sans == NULL) {
        sans = cJSON_CreateArray();
    }

    if (cJSON_AddStringToObject(o, "transaction_id", f[1]->str) == NULL
        || cJSON_AddStringToObject(o, "subject", f[2]->str) == NULL
        || sans == NULL || !cJSON_AddItemToObject(o, "sans", sans))
    {
        cJSON_Delete(sans);
        cJSON_Delete(o);
        return NULL;
    }

    if ((f[4] && cJSON_AddStringToObject(o, "template", f[4]->str) == NULL)
        || (f[5] && cJSON_AddStringToObject(o, "ca", f[5]->str) == NULL)
        || (f[6] && cJSON_AddStringToObject(o, "client", f[6]->str) == NULL))
    {
        cJSON_Delete(o);
        return NULL;
    }

    if (f[7] != NULL) {
        pki_scep_time_text(f[7]->str, when);
        if (when[0] && cJSON_AddStringToObject(o, "created", when) == NULL) {
            cJSON_Delete(o);
            return NULL;
        }
    }

    if (f[8] != NULL) {
        pki_scep_time_text(f[8]->str, when);
        if (when[0] && cJSON_AddStringToObject(o, "expires", when) == NULL) {
            cJSON_Delete(o);
            return NULL;
        }
    }

    return o;
}


pki_status_t
pki_int_scep_pending(pki_redis_t *r, const char *cursor, size_t limit,
    cJSON **out, pki_result_t *res)
{
    int             good;
    char            ikey[PKI_SCEP_KEY_MAX], pkey[PKI_SCEP_KEY_MAX];
    char            min[PKI_SCEP_PEND_MEMBER_LEN + 2], lim[24];
    char            next[PKI_SCEP_PEND_MEMBER_LEN + 1];
    cJSON          *root, *arr, *o;
    size_t          i, lens[13];
    redisReply     *list, *m, *v, *z;
    const char     *argv[13];
    pki_status_t    st;

    *out = NULL;

    if (r == NULL || limit == 0) {
        return pki_fail(res, PKI_INTERNAL, "bad pending listing arguments");
    }

    if (cursor != NULL && cursor[0] != '\0' && strcmp(cursor, "0") != 0
        && !pki_scep_member_ok(cursor, strlen(cursor)))
    {
        return pki_fail(res, PKI_MALFORMED, "bad cursor");
    }

    if (snprintf(ikey, sizeof(ikey), "%sscep:pending", pki_redis_ns(r))
        >= (int) sizeof(ikey))
    {
        return pki_fail(res, PKI_INTERNAL, "cannot build the key");
    }

    /* expired members out first */
    st = pki_scep_pend_index(r, "", res);
    if (st != PKI_OK) {
        return st;
    }

    if (cursor == NULL || cursor[0] == '\0' || strcmp(cursor, "0") == 0) {
        strcpy(min, "-");
    } else {
        snprintf(min, sizeof(min), "(%s", cursor);
    }

    snprintf(lim, sizeof(lim), "%zu", limit);

    argv[0] = "ZRANGEBYLEX";
    argv[1] = ikey;
    argv[2] = min;
    argv[3] = "+";
    argv[4] = "LIMIT";
    argv[5] = "0";
    argv[6] = lim;

    for (i = 0; i < 7; i++) {
        lens[i] = strlen(argv[i]);
    }

    list = pki_int_redis_cmd(r, 7, argv, lens, res);
    if (list == NULL) {
        return res->status != PKI_OK ? res->status : PKI_UNAVAILABLE;
    }

    if (list->type != REDIS_REPLY_ARRAY || list->elements > limit) {
        freeReplyObject(list);
        pki_int_redis_drop(r);
        return pki_fail(res, PKI_UNAVAILABLE, "redis: unexpected reply");
    }

    root = cJSON_CreateObject();
    arr = root != NULL ? cJSON_AddArrayToObject(root, "pending") : NULL;
    good = arr != NULL;
    strcpy(next, "0");
    st = PKI_OK;

    for (i = 0; good && i < list->elements; i++) {
        m = list->element[i];

        if (m->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (!pki_scep_member_ok(m->str, m->len)) {
            o = NULL;              /* not ours: dropped, never parsed */
            goto drop;
        }

        if (list->elements == limit) {
            /* a full page: more may follow this member */
            memcpy(next, m->str, m->len);
            next[m->len] = '\0';
        }

        snprintf(pkey, sizeof(pkey), "%sscep:pend:%s", pki_redis_ns(r),
                 m->str + 13);

        argv[0] = "HMGET";
        argv[1] = pkey;
        argv[2] = "status";
        argv[3] = "tid";
        argv[4] = "subject";
        argv[5] = "sans";
        argv[6] = "template";
        argv[7] = "ca";
        argv[8] = "client";
        argv[9] = "created";
        argv[10] = "expires";

        for (size_t j = 0; j < 11; j++) {
            lens[j] = strlen(argv[j]);
        }

        v = pki_int_redis_cmd(r, 11, argv, lens, res);
        if (v == NULL) {
            st = res->status != PKI_OK ? res->status : PKI_UNAVAILABLE;
            good = 0;
            break;
        }

        o = pki_scep_pend_json(v);
        freeReplyObject(v);

    drop:

        if (o == NULL) {
            /* expired, decided or broken: no longer listed */
            argv[0] = "ZREM";
            argv[1] = ikey;
            argv[2] = m->str;
            lens[0] = 4;
            lens[1] = strlen(ikey);
            lens[2] = m->len;

            z = pki_int_redis_cmd(r, 3, argv, lens, res);
            if (z == NULL) {
                st = res->status != PKI_OK ? res->status : PKI_UNAVAILABLE;
                good = 0;
                break;
            }
            freeReplyObject(z);
            continue;
        }

        good = cJSON_AddItemToArray(arr, o);
        if (!good) {
            cJSON_Delete(o);
        }
    }

    freeReplyObject(list);

    if (good) {
        good = cJSON_AddStringToObject(root, "next_cursor", next) != NULL;
        if (!good) {
            st = PKI_INTERNAL;
        }
    }

    if (!good) {
        cJSON_Delete(root);
        if (st == PKI_OK || st == PKI_INTERNAL) {
            return pki_fail(res, PKI_INTERNAL, "out of memory");
        }
        return st;
    }

    *out = root;

    return PKI_OK;
}


static pki_status_t
pki_scep_admin_decide(pki_redis_t *r, const char *to,
    const unsigned char *body, size_t len, int *status, cJSON **out,
    pki_result_t *res)
{
    int            done;
    char           created[24], why[PKI_SCEP_TID_MAX + 32];
    cJSON         *root, *o;
    time_t         t;
    const char    *tid, *when;
    pki_status_t   st;

    st = pki_scep_admin_json(body, len, &root, res);
    if (st != PKI_OK) {
        return st;
    }

    /* Every member is one of these, none null: "created" spelt otherwise
     * ("createdAt", "Created") or null would decide for whatever request
     * the transactionID holds now, one nobody listed (a device may send
     * another under it after a rejection) */
    cJSON_ArrayForEach(o, root) {
        if (o->string == NULL
            || (strcmp(o->string, "transaction_id") != 0
                && strcmp(o->string, "created") != 0))
        {
            st = pki_fail(res, PKI_MALFORMED, "unknown member \"%.40s\" "
                          "(a decision takes \"transaction_id\" and "
                          "\"created\")",
                          o->string != NULL ? o->string : "");
            cJSON_Delete(root);
            return st;
        }

        if (cJSON_IsNull(o)) {
            st = pki_fail(res, PKI_MALFORMED, "\"%s\" is null: leave "
                          "\"created\" out to decide for the request the "
                          "transaction holds now", o->string);
            cJSON_Delete(root);
            return st;
        }
    }

    if (!pki_scep_json_str(root, "transaction_id", PKI_SCEP_TID_MAX, &tid)
        || tid == NULL || tid[0] == '\0')
    {
        cJSON_Delete(root);
        return pki_fail(res, PKI_MALFORMED, "\"transaction_id\" is "
                        "required");
    }

    /* "created" as the listing gave it: the decision is then only for
     * that request, not for one that replaced it since */
    if (!pki_scep_json_str(root, "created", 32, &when)) {
        cJSON_Delete(root);
        return pki_fail(res, PKI_MALFORMED, "\"created\" must be a string");
    }

    /* the listing writes UTC to the second (pki_scep_time_text()): no
     * offset (the flag) and no fraction (the length of that form) */
    if (when != NULL) {
        if (strlen(when) != sizeof("YYYY-MM-DDThh:mm:ssZ") - 1
            || !pki_parse_rfc3339(when, PKI_RFC3339_UTC, &t))
        {
            cJSON_Delete(root);
            return pki_fail(res, PKI_MALFORMED, "\"created\" must be the "
                            "time the listing gave, as "
                            "YYYY-MM-DDThh:mm:ssZ");
        }

        snprintf(created, sizeof(created), "%lld", (long long) t);
    }

    /* audited (the caller set the actor): not while the log cannot take
     * the entry */
    if (!pki_int_admin_ready(res)) {
        cJSON_Delete(root);
        return res->status;
    }

    st = pki_scep_pend_decide(r, tid, to, when != NULL ? created : NULL,
                              &done, res);
    if (st != PKI_OK) {
        cJSON_Delete(root);
        return st;
    }

    if (done == 2) {
        cJSON_Delete(root);
        return pki_fail(res, PKI_CONFLICT, "the request with that "
                        "transaction_id is not the one created at the "
                        "given time (the device sent a new one): list "
                        "again");
    }

    if (!done) {
        pki_scep_pend_t  p;

        st = pki_scep_pend_get(r, tid, &p, res);
        pki_scep_pend_clear(&p);
        cJSON_Delete(root);

        if (st == PKI_NOT_FOUND) {
            return pki_fail(res, PKI_NOT_FOUND, "no pending SCEP request "
                            "with that transaction_id");
        }
        if (st != PKI_OK) {
            return st;
        }
        return pki_fail(res, PKI_CONFLICT, "the request is no longer "
                        "pending");
    }

    /* no longer listed (the listing would drop it anyway) */
    pki_scep_pend_unindex(r, tid);

    /* an entry that could not be written is said in the error log, as a
     * revocation's (pki_record_revoke): the decision stands, the device
     * may have fetched its answer already */
    snprintf(why, sizeof(why), "SCEP request %.*s %s", PKI_SCEP_TID_MAX,
             tid, to);
    if (pki_int_admin_audit(to[0] == 'a' ? "scep-approve" : "scep-reject",
                            NULL, NULL, NULL, why, res)
        == PKI_OK)
    {
        pki_scep_pend_logged(r, tid, res);
    }

    o = cJSON_CreateObject();
    if (o == NULL
        || cJSON_AddStringToObject(o, "transaction_id", tid) == NULL
        || cJSON_AddStringToObject(o, "status", to) == NULL)
    {
        cJSON_Delete(o);
        cJSON_Delete(root);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    pki_log(res, "SCEP request %s %s", tid, to);

    cJSON_Delete(root);
    *status = 200;
    *out = o;

    return PKI_OK;
}


pki_status_t
pki_int_scep_admin(pki_redis_t *r, pki_ca_t *const *cas, size_t ncas,
    const char *method, const char *path, const unsigned char *body,
    size_t body_len, const char *identity, int *status, cJSON **out,
    pki_admin_made_t *made, pki_result_t *res)
{
    (void) identity;

    *out = NULL;
    *status = 0;
    memset(made, 0, sizeof(pki_admin_made_t));

    if (r == NULL) {
        return pki_fail(res, PKI_INTERNAL, "no Redis");
    }

    if (strcmp(path, "challenges") == 0) {
        if (strcmp(method, "POST") != 0) {
            return pki_fail(res, PKI_UNSUPPORTED, "use POST");
        }
        return pki_scep_admin_challenge(r, cas, ncas, body, body_len,
                                        status, out, made, res);
    }

    if (strcmp(path, "approve") == 0 || strcmp(path, "reject") == 0) {
        if (strcmp(method, "POST") != 0) {
            return pki_fail(res, PKI_UNSUPPORTED, "use POST");
        }
        return pki_scep_admin_decide(r, path[0] == 'a' ? "approved"
                                                       : "rejected",
                                     body, body_len, status, out, res);
    }

    return pki_fail(res, PKI_NOT_FOUND, "no such endpoint");
}
