/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * OCSP engine (pki_ocsp_handle): file-key CAs (EC P-256, P-384, RSA,
 * Ed25519 issuing CAs under one root), records in the Redis at
 * PKI_TEST_REDIS_SOCK.  Requests are built and responses checked with
 * OpenSSL's OCSP API (OCSP_basic_verify against the root, nonce check,
 * OCSP_resp_find_status).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include <hiredis.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "pki.h"
#include "test/unit.h"
#include "test/certs.h"
#include "test/fixture.h"


static char           dir[64];
static redisContext  *stats;        /* for INFO stats, or NULL */
static char           ns[64];       /* this test's Redis namespace */
static time_t         clock_step;   /* see time() below */
static int            clock_calls;


static pki_ca_t *
make_ca(const char *name, const char *cert, pki_key_t *key,
    pki_template_t *t)
{
    char           path[128];
    pki_ca_t      *ca;
    const char    *argv[1];
    pki_result_t   res;

    pki_result_init(&res);
    ca = pki_ca_new(name);
    snprintf(path, sizeof(path), "%s/%s", dir, cert);
    argv[0] = path;
    pki_ca_set(ca, "certificate", 1, argv, &res);
    pki_ca_set_key(ca, key, &res);
    if (t) {
        pki_ca_add_template(ca, t, &res);
    }
    if (pki_ca_finish(ca, &res) != PKI_OK) {
        diag("CA %s: %s %s", name, res.detail, res.log);
    }
    return ca;
}


static X509 *
issue_leaf(pki_ca_t *ca, pki_template_t *t, pki_redis_t *r, const char *cn)
{
    X509            *x;
    EVP_PKEY        *pk;
    pki_result_t     res;
    pki_request_t    req;
    pki_issue_ctx_t  ictx = { "est", "tester", "127.0.0.1", NULL, NULL };

    pk = fx_keygen("EC:P-256");
    memset(&req, 0, sizeof(req));
    req.subject = X509_NAME_new();
    X509_NAME_add_entry_by_txt(req.subject, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    req.pubkey = pk;
    pki_result_init(&res);
    x = NULL;
    if (pki_issue(ca, t, r, &req, &ictx, &x, &res) != PKI_OK) {
        diag("issue %s: %s %s", cn, res.detail, res.log);
    }
    X509_NAME_free(req.subject);
    EVP_PKEY_free(pk);
    return x;
}


/* A CA certificate for pk (CN=cn) under rootca; NULL (said) if refused. */
static X509 *
issue_sub(pki_ca_t *rootca, pki_template_t *tsub, const char *cn,
    EVP_PKEY *pk)
{
    X509       *sub;
    X509_NAME  *name;

    name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    sub = fx_issue(rootca, tsub, NULL, name, pk, 0);
    X509_NAME_free(name);

    return sub;
}


/* DER of a request for (issuer, cert or serial) pairs. */
typedef struct {
    const EVP_MD  *md;
    X509          *issuer;
    X509          *cert;       /* or NULL: serial */
    long           serial;
} id_spec_t;


static OCSP_CERTID *
make_id(const id_spec_t *s)
{
    OCSP_CERTID   *id;
    ASN1_INTEGER  *sn;

    if (s->cert) {
        return OCSP_cert_to_id(s->md, s->cert, s->issuer);
    }
    sn = ASN1_INTEGER_new();
    ASN1_INTEGER_set(sn, s->serial);
    id = OCSP_cert_id_new(s->md, X509_get_subject_name(s->issuer),
                          X509_get0_pubkey_bitstr(s->issuer), sn);
    ASN1_INTEGER_free(sn);
    return id;
}


static unsigned char *
make_req(const id_spec_t *ids, int n, int nonce_len, size_t *len,
    OCSP_REQUEST **keep)
{
    int             i, l;
    unsigned char  *der, *p;
    OCSP_REQUEST   *req;

    req = OCSP_REQUEST_new();
    for (i = 0; i < n; i++) {
        OCSP_request_add0_id(req, make_id(&ids[i]));
    }
    if (nonce_len > 0) {
        OCSP_request_add1_nonce(req, NULL, nonce_len);
    }

    l = i2d_OCSP_REQUEST(req, NULL);
    der = malloc((size_t) l + 1);
    p = der;
    i2d_OCSP_REQUEST(req, &p);
    *len = (size_t) l;

    if (keep) {
        *keep = req;
    } else {
        OCSP_REQUEST_free(req);
    }
    return der;
}


static unsigned char *make_req_exts(const id_spec_t *id, int kind,
    int crit, int count, size_t *len);


/* A request for one CertID with an extension: kind 0 an unknown one (OID
 * 1.2.3.4.5, NULL value) among the requestExtensions, 1 the same among the
 * singleRequestExtensions, 2 a 16-octet nonce. */
static unsigned char *
make_req_ext(const id_spec_t *id, int kind, int crit, size_t *len)
{
    return make_req_exts(id, kind, crit, 1, len);
}


/* make_req_ext() with count extensions of kind 0 or 1 (OIDs 1.2.3.4.5,
 * 1.2.3.4.6, ...). */
static unsigned char *
make_req_exts(const id_spec_t *id, int kind, int crit, int count,
    size_t *len)
{
    int                  i, l;
    char                 oid[32];
    ASN1_OBJECT         *obj;
    OCSP_ONEREQ         *one;
    OCSP_REQUEST        *req;
    unsigned char       *der, *p, nonce[18];
    X509_EXTENSION      *ext;
    ASN1_OCTET_STRING   *val;
    static const unsigned char  null_der[] = { 0x05, 0x00 };

    req = OCSP_REQUEST_new();
    one = OCSP_request_add0_id(req, make_id(id));

    val = ASN1_OCTET_STRING_new();
    if (kind == 2) {
        /* extnValue: the DER of an OCTET STRING (RFC 8954) */
        nonce[0] = 0x04;
        nonce[1] = sizeof(nonce) - 2;
        RAND_bytes(nonce + 2, sizeof(nonce) - 2);
        ASN1_OCTET_STRING_set(val, nonce, sizeof(nonce));
        ext = X509_EXTENSION_create_by_NID(NULL, NID_id_pkix_OCSP_Nonce,
                                           crit, val);
        OCSP_REQUEST_add_ext(req, ext, -1);
        X509_EXTENSION_free(ext);

    } else {
        ASN1_OCTET_STRING_set(val, null_der, sizeof(null_der));
        for (i = 0; i < count; i++) {
            snprintf(oid, sizeof(oid), "1.2.3.4.%d", 5 + i);
            obj = OBJ_txt2obj(oid, 1);
            ext = X509_EXTENSION_create_by_OBJ(NULL, obj, crit, val);
            if (kind == 0) {
                OCSP_REQUEST_add_ext(req, ext, -1);
            } else {
                OCSP_ONEREQ_add_ext(one, ext, -1);
            }
            X509_EXTENSION_free(ext);
            ASN1_OBJECT_free(obj);
        }
    }
    ASN1_OCTET_STRING_free(val);

    l = i2d_OCSP_REQUEST(req, NULL);
    der = malloc((size_t) l);
    p = der;
    i2d_OCSP_REQUEST(req, &p);
    *len = (size_t) l;
    OCSP_REQUEST_free(req);

    return der;
}


/* DER builder for hand-made requests: prefixes buf (len bytes) with a
 * definite length header of tag and class (one spare byte after it, for
 * a trailing-byte test). */
static void
der_wrap(unsigned char **buf, size_t *len, int tag, int cls)
{
    int             n;
    unsigned char  *out, *p;

    n = ASN1_object_size(1, (int) *len, tag);
    out = malloc((size_t) n + 1);
    p = out;
    ASN1_put_object(&p, 1, (int) *len, tag, cls);
    memcpy(p, *buf, *len);
    free(*buf);
    *buf = out;
    *len = (size_t) n;
}


static void
der_cat(unsigned char **buf, size_t *len, const unsigned char *d,
    size_t dlen)
{
    *buf = realloc(*buf, *len + dlen + 1);
    memcpy(*buf + *len, d, dlen);
    *len += dlen;
}


/* The request der (unsigned) with an optionalSignature holding ncerts
 * copies of cert (any DER: a real certificate, or a SEQUENCE that is
 * none) in its certs.  kind 0: well formed; 1: a BIT STRING where the
 * last certificate goes; 2: the signature tagged [1]; 3: no BIT STRING;
 * 4: a byte after the certs, inside the Signature. */
static unsigned char *
make_signed(const unsigned char *der, size_t len, const unsigned char *cert,
    size_t cert_len, int ncerts, int kind, size_t *out_len)
{
    int                   i, tag, cls;
    long                  tlen;
    size_t                slen, clen, olen;
    unsigned char        *sig, *certs, *out;
    const unsigned char  *p;

    static const unsigned char  alg[] = {      /* ecdsa-with-SHA256 */
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03,
        0x02
    };
    static const unsigned char  bits[] = { 0x03, 0x03, 0x00, 0xab, 0xcd };

    certs = NULL;
    clen = 0;
    for (i = 0; i < ncerts; i++) {
        if (kind == 1 && i == ncerts - 1) {
            der_cat(&certs, &clen, bits, sizeof(bits));
        } else {
            der_cat(&certs, &clen, cert, cert_len);
        }
    }
    der_wrap(&certs, &clen, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    der_wrap(&certs, &clen, 0, V_ASN1_CONTEXT_SPECIFIC);
    if (kind == 4) {
        der_cat(&certs, &clen, (const unsigned char *) "", 1);
    }

    sig = NULL;
    slen = 0;
    der_cat(&sig, &slen, alg, sizeof(alg));
    if (kind != 3) {
        der_cat(&sig, &slen, bits, sizeof(bits));
    }
    der_cat(&sig, &slen, certs, clen);
    free(certs);
    der_wrap(&sig, &slen, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    der_wrap(&sig, &slen, kind == 2 ? 1 : 0, V_ASN1_CONTEXT_SPECIFIC);

    /* tbsRequest: the contents of the unsigned request's SEQUENCE */
    p = der;
    ASN1_get_object(&p, &tlen, &tag, &cls, (long) len);
    out = NULL;
    olen = 0;
    der_cat(&out, &olen, p, (size_t) tlen);
    der_cat(&out, &olen, sig, slen);
    free(sig);
    der_wrap(&out, &olen, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);

    *out_len = olen;
    return out;
}


/* The request of ids signed with key and signer, ncerts copies of extra
 * in its certs (OpenSSL's OCSP_request_sign: requestorName set). */
static unsigned char *
make_req_signed(const id_spec_t *ids, int n, X509 *signer, EVP_PKEY *key,
    X509 *extra, int ncerts, size_t *len)
{
    int              i, l;
    unsigned char   *der, *p;
    OCSP_REQUEST    *req;
    STACK_OF(X509)  *certs;

    req = OCSP_REQUEST_new();
    for (i = 0; i < n; i++) {
        OCSP_request_add0_id(req, make_id(&ids[i]));
    }

    certs = sk_X509_new_null();
    for (i = 0; i < ncerts; i++) {
        sk_X509_push(certs, extra);
    }

    der = NULL;
    if (OCSP_request_sign(req, signer, key, EVP_sha256(), certs, 0) == 1) {
        l = i2d_OCSP_REQUEST(req, NULL);
        der = malloc((size_t) l + 1);
        p = der;
        i2d_OCSP_REQUEST(req, &p);
        *len = (size_t) l;
    }

    sk_X509_free(certs);
    OCSP_REQUEST_free(req);
    return der;
}


/* The request der (unsigned, no version, no requestorName) with the TLV
 * name as its requestorName ([1] EXPLICIT). */
static unsigned char *
make_named(const unsigned char *der, size_t len, const unsigned char *name,
    size_t name_len, size_t *out_len)
{
    int                   tag, cls;
    long                  tlen;
    size_t                olen;
    unsigned char        *out;
    const unsigned char  *p;

    out = NULL;
    olen = 0;
    der_cat(&out, &olen, name, name_len);
    der_wrap(&out, &olen, 1, V_ASN1_CONTEXT_SPECIFIC);

    /* the contents of tbsRequest, after the name */
    p = der;
    ASN1_get_object(&p, &tlen, &tag, &cls, (long) len);
    ASN1_get_object(&p, &tlen, &tag, &cls, (long) len);
    der_cat(&out, &olen, p, (size_t) tlen);
    der_wrap(&out, &olen, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    der_wrap(&out, &olen, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);

    *out_len = olen;
    return out;
}


/* A SEQUENCE that is no certificate: an OCTET STRING of 240 bytes. */
static unsigned char *
make_junk_cert(size_t *len)
{
    size_t          l;
    unsigned char  *d;

    d = malloc(243);
    d[0] = V_ASN1_OCTET_STRING;
    d[1] = 0x81;
    d[2] = 240;
    memset(d + 3, 0x41, 240);
    l = 243;
    der_wrap(&d, &l, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    *len = l;
    return d;
}


static int
run(const pki_ocsp_conf_t *conf, const char *method,
    const unsigned char *body, size_t len, pki_ocsp_resp_t *resp)
{
    pki_ocsp_req_t  req;

    memset(&req, 0, sizeof(req));
    req.method = method;
    req.content_type = "application/ocsp-request";
    req.body = body;
    req.body_len = len;
    pki_ocsp_handle(conf, &req, resp);

    return resp->ocsp_status;
}


/* Parses the response body: OCSP status, and the verified basic response
 * (NULL unless successful and verified against root). */
static int
parse(pki_ocsp_resp_t *resp, X509 *root, X509 *signer,
    OCSP_BASICRESP **out)
{
    int                   st, v;
    X509_STORE           *store;
    OCSP_RESPONSE        *or;
    OCSP_BASICRESP       *bs;
    const unsigned char  *p;
    STACK_OF(X509)       *certs;

    *out = NULL;
    p = resp->body;
    or = resp->body ? d2i_OCSP_RESPONSE(NULL, &p, (long) resp->body_len)
                    : NULL;
    if (or == NULL) {
        return -1;
    }
    st = OCSP_response_status(or);
    if (st == OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        bs = OCSP_response_get1_basic(or);
        store = X509_STORE_new();
        X509_STORE_add_cert(store, root);
        /* root may be an intermediate (test_chain_ended) */
        X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
        certs = sk_X509_new_null();
        sk_X509_push(certs, signer);
        v = bs ? OCSP_basic_verify(bs, certs, store, 0) : 0;
        if (v != 1) {
            diag("OCSP_basic_verify: %d", v);
            ERR_print_errors_fp(stdout);
            OCSP_BASICRESP_free(bs);
            bs = NULL;
        }
        sk_X509_free(certs);
        X509_STORE_free(store);
        *out = bs;
    }
    OCSP_RESPONSE_free(or);
    return st;
}


static int
find_status(OCSP_BASICRESP *bs, const id_spec_t *s, int *reason,
    time_t *revtime, int *has_next)
{
    int                    st, r;
    OCSP_CERTID           *id;
    ASN1_GENERALIZEDTIME  *rev, *thisupd, *nextupd;
    struct tm              tm;

    id = make_id(s);
    st = -1;
    r = -1;
    rev = thisupd = nextupd = NULL;
    if (!OCSP_resp_find_status(bs, id, &st, &r, &rev, &thisupd, &nextupd)) {
        st = -1;
    }
    OCSP_CERTID_free(id);
    if (reason) {
        *reason = r;
    }
    if (revtime) {
        *revtime = 0;
        if (rev && ASN1_TIME_to_tm(rev, &tm)) {
            *revtime = timegm(&tm);
        }
    }
    if (has_next) {
        *has_next = nextupd != NULL;
    }
    if (st >= 0 && !OCSP_check_validity(thisupd, nextupd, 300, -1)) {
        diag("validity check failed");
        st = -2;
    }
    return st;
}


/* A responder certificate valid from now + nb to now + na seconds. */
static X509 *
make_responder_at(X509 *issuer, EVP_PKEY *issuer_pk, EVP_PKEY *pk, int eku,
    long nb, long na)
{
    X509            *x;
    X509V3_CTX       ctx;
    X509_EXTENSION  *ext;

    x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 4242);
    X509_set_issuer_name(x, X509_get_subject_name(issuer));
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
                               (const unsigned char *) "OCSP responder", -1,
                               -1, 0);
    X509_gmtime_adj(X509_getm_notBefore(x), nb);
    X509_gmtime_adj(X509_getm_notAfter(x), na);
    X509_set_pubkey(x, pk);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    if (eku) {
        ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_ext_key_usage,
                                  "critical,OCSPSigning");
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage,
                              "critical,digitalSignature");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    X509_sign(x, issuer_pk, EVP_PKEY_get_base_id(issuer_pk) == EVP_PKEY_ED25519
                            ? NULL : EVP_sha256());
    return x;
}


static X509 *
make_responder(X509 *issuer, EVP_PKEY *issuer_pk, EVP_PKEY *pk, int eku)
{
    return make_responder_at(issuer, issuer_pk, pk, eku, -60, 86400);
}


/* Redis's count of the read events it served (INFO stats): commands sent
 * one after another's answer take one each, a pipeline one (or a few, if
 * long).  -1 if unknown. */
static long long
redis_reads(void)
{
    long long    n;
    const char  *p;
    redisReply  *reply;

    reply = stats ? redisCommand(stats, "INFO stats") : NULL;
    p = reply && reply->type == REDIS_REPLY_STRING
        ? strstr(reply->str, "total_reads_processed:") : NULL;
    n = p ? strtoll(p + sizeof("total_reads_processed:") - 1, NULL, 10) : -1;
    if (reply) {
        freeReplyObject(reply);
    }
    return n;
}


/* One issuing CA of type alg: the full matrix. */
static void
test_ca(const char *alg, X509 *root, pki_ca_t *rootca, pki_template_t *tsub,
    pki_template_t *tdev, pki_redis_t *r, int full)
{
    int               st, reason, has_next, i;
    char              name[32], file[64], hex[41];
    long              t0;
    X509             *sub, *good, *rev;
    ASN1_OBJECT      *obj;
    const ASN1_OBJECT *obj_c;
    time_t            revtime;
    size_t            len, blen;
    EVP_PKEY         *pk;
    pki_ca_t         *ca, *cas[2];
    pki_key_t        *key;
    id_spec_t         ids[PKI_OCSP_MAX_IDS + 1];
    pki_result_t      res;
    unsigned char    *der, *b64, *bad;
    OCSP_REQUEST     *oreq;
    OCSP_BASICRESP   *bs;
    pki_ocsp_conf_t   conf;
    pki_ocsp_resp_t   resp;

    snprintf(name, sizeof(name), "ocsp-%s", alg);
    for (i = 0; name[i]; i++) {
        if (name[i] == ':') {
            name[i] = '-';
        }
    }

    pk = fx_keygen(alg);
    snprintf(file, sizeof(file), "%s.key", name);
    key = fx_key_file(dir, file, pk);

    sub = issue_sub(rootca, tsub, name, pk);
    if (!ok(sub != NULL, "issuing CA certificate")) {
        pki_key_free(key);
        EVP_PKEY_free(pk);
        return;
    }
    snprintf(file, sizeof(file), "%s.pem", name);
    fx_write_cert(dir, file, sub);
    ca = make_ca(name, file, key, tdev);

    good = issue_leaf(ca, tdev, r, "good");
    rev = issue_leaf(ca, tdev, r, "revoked");
    if (!ok(good && rev, "%s: two leaves issued", alg)) {
        goto done;
    }

    pki_serial_to_hex(X509_get0_serialNumber(rev), hex);
    pki_result_init(&res);
    t0 = (long) time(NULL) - 100;
    st = pki_record_revoke(r, name, hex, 1, (time_t) t0, (time_t) t0 - 3600,
                           NULL, &res);
    if (st != PKI_OK) {
        diag("pki_record_revoke: %s %s", res.detail, res.log);
    }

    memset(&conf, 0, sizeof(conf));
    cas[0] = ca;
    cas[1] = NULL;
    conf.cas = cas;
    conf.ncas = 1;
    conf.redis = r;
    conf.next_update = 3600;

    /* good + revoked + unknown in one request, SHA-1, nonce */
    ids[0] = (id_spec_t) { EVP_sha1(), sub, good, 0 };
    ids[1] = (id_spec_t) { EVP_sha1(), sub, rev, 0 };
    ids[2] = (id_spec_t) { EVP_sha1(), sub, NULL, 0x1234 };
    der = make_req(ids, 3, 16, &len, &oreq);
    st = run(&conf, "POST", der, len, &resp);
    ok(st == OCSP_RESPONSE_STATUS_SUCCESSFUL && resp.http_status == 200,
       "%s: successful (%d %s)", alg, st, resp.res.detail);
    ok(resp.content_type
       && strcmp(resp.content_type, "application/ocsp-response") == 0,
       "%s: content type", alg);
    st = parse(&resp, root, sub, &bs);
    ok(bs != NULL, "%s: response verifies against the root", alg);
    if (bs) {
        /* the digest certificates and CRLs use (pki_default_md) */
        X509_ALGOR_get0(&obj_c, NULL, NULL, OCSP_resp_get0_tbs_sigalg(bs));
        i = OBJ_obj2nid(obj_c);
        ok(i == (strcmp(alg, "EC:P-384") == 0 ? NID_ecdsa_with_SHA384
                 : strcmp(alg, "EC:P-521") == 0 ? NID_ecdsa_with_SHA512
                 : strncmp(alg, "EC:", 3) == 0 ? NID_ecdsa_with_SHA256
                 : strncmp(alg, "RSA:", 4) == 0 ? NID_sha256WithRSAEncryption
                 : NID_ED25519), "%s: signature algorithm %s", alg,
           OBJ_nid2sn(i));
        ok(OCSP_check_nonce(oreq, bs) == 1, "%s: nonce echoed", alg);
        ok(find_status(bs, &ids[0], NULL, NULL, &has_next)
           == V_OCSP_CERTSTATUS_GOOD && has_next, "%s: good, nextUpdate",
           alg);
        st = find_status(bs, &ids[1], &reason, &revtime, NULL);
        ok(st == V_OCSP_CERTSTATUS_REVOKED && reason == 1
           && (long) revtime == t0, "%s: revoked, keyCompromise, time "
           "(st %d reason %d)", alg, st, reason);
        ok(find_status(bs, &ids[2], NULL, NULL, NULL)
           == V_OCSP_CERTSTATUS_UNKNOWN, "%s: never issued: unknown", alg);
        {
            int           idx;
            OCSP_CERTID  *cid = make_id(&ids[1]);

            idx = OCSP_resp_find(bs, cid, -1);
            ok(idx >= 0 && OCSP_SINGLERESP_get_ext_by_NID(
                   OCSP_resp_get0(bs, idx), NID_invalidity_date, -1) >= 0,
               "%s: revoked: invalidity date singleExtension", alg);
            OCSP_CERTID_free(cid);
        }
        OCSP_BASICRESP_free(bs);
    }
    ok(resp.cacheable == 0, "%s: nonce response not cacheable", alg);
    pki_ocsp_resp_free(&resp);
    OCSP_REQUEST_free(oreq);
    free(der);

    if (!full) {
        goto done;
    }

    /* SHA-256 CertID, no nonce, GET (base64), next_update 0 */
    conf.next_update = 0;
    ids[0].md = EVP_sha256();
    der = make_req(ids, 1, 0, &len, &oreq);
    b64 = (unsigned char *) pki_base64_encode(der, len, 0, &blen);
    st = run(&conf, "GET", b64, blen, &resp);
    parse(&resp, root, sub, &bs);
    ok(st == OCSP_RESPONSE_STATUS_SUCCESSFUL && bs, "GET SHA-256: ok");
    if (bs) {
        ok(find_status(bs, &ids[0], NULL, NULL, &has_next)
           == V_OCSP_CERTSTATUS_GOOD && !has_next,
           "SHA-256 CertID good, no nextUpdate with next_update 0");
        OCSP_BASICRESP_free(bs);
    }
    ok(resp.cacheable == 1 && strlen(resp.etag) == 40
       && resp.next_update == 0 && resp.this_update > 0,
       "GET without nonce: cacheable, ETag");
    pki_ocsp_resp_free(&resp);
    free(b64);
    OCSP_REQUEST_free(oreq);
    conf.next_update = 3600;

    /* unknown_revoked: RFC 6960 2.2 form */
    conf.unknown_revoked = 1;
    ids[2].md = EVP_sha1();
    der = (free(der), make_req(&ids[2], 1, 0, &len, NULL));
    st = run(&conf, "POST", der, len, &resp);
    parse(&resp, root, sub, &bs);
    ok(st == OCSP_RESPONSE_STATUS_SUCCESSFUL && bs, "unknown_revoked: ok");
    if (bs) {
        st = find_status(bs, &ids[2], &reason, &revtime, NULL);
        ok(st == V_OCSP_CERTSTATUS_REVOKED
           && reason == OCSP_REVOKED_STATUS_CERTIFICATEHOLD && revtime == 0,
           "never issued: revoked, certificateHold, 1970 (st %d r %d t %ld)",
           st, reason, (long) revtime);
        obj = OBJ_txt2obj("1.3.6.1.5.5.7.48.1.9", 1);
        ok(OCSP_BASICRESP_get_ext_by_OBJ(bs, obj, -1) >= 0,
           "extended revoke extension present");
        ASN1_OBJECT_free(obj);
        OCSP_BASICRESP_free(bs);
    }
    pki_ocsp_resp_free(&resp);
    conf.unknown_revoked = 0;
    free(der);

    /* a serial being issued (its record pending): unknown for now only,
     * so neither cached nor given a nextUpdate */
    {
        id_spec_t     pid;
        pki_record_t  prec;

        memset(&prec, 0, sizeof(prec));
        snprintf(prec.serial, sizeof(prec.serial), "7A11");
        snprintf(prec.ca, sizeof(prec.ca), "%s", name);
        prec.status = PKI_CERT_PENDING;
        prec.created = time(NULL);
        pki_result_init(&res);
        ok(pki_record_reserve(r, &prec, &res) == PKI_OK,
           "%s: serial 7A11 pending %s", alg, res.detail);
        pid = (id_spec_t) { EVP_sha1(), sub, NULL, 0x7a11 };
        der = make_req(&pid, 1, 0, &len, NULL);
        st = run(&conf, "POST", der, len, &resp);
        parse(&resp, root, sub, &bs);
        has_next = 1;
        st = bs != NULL ? find_status(bs, &pid, NULL, NULL, &has_next) : -1;
        ok(st == V_OCSP_CERTSTATUS_UNKNOWN && !has_next
           && resp.cacheable == 0 && resp.next_update == 0,
           "%s: a pending serial: unknown, no nextUpdate, not cacheable "
           "(next %d, cacheable %d)", alg, has_next, resp.cacheable);
        OCSP_BASICRESP_free(bs);
        pki_ocsp_resp_free(&resp);
        free(der);
    }

    /* revoked with reason unspecified: revoked, no revocationReason (RFC
     * 5280 5.3.1 leaves unspecified out; the CRL does the same) */
    {
        X509  *un;

        un = issue_leaf(ca, tdev, r, "unspecified");
        if (un != NULL) {
            pki_serial_to_hex(X509_get0_serialNumber(un), hex);
            pki_result_init(&res);
            if (pki_record_revoke(r, name, hex, 0, (time_t) t0, 0, NULL,
                                  &res) != PKI_OK)
            {
                diag("pki_record_revoke: %s %s", res.detail, res.log);
            }
            ids[3] = (id_spec_t) { EVP_sha1(), sub, un, 0 };
            der = make_req(&ids[3], 1, 0, &len, NULL);
            st = run(&conf, "POST", der, len, &resp);
            parse(&resp, root, sub, &bs);
            reason = 99;
            st = bs != NULL ? find_status(bs, &ids[3], &reason, &revtime,
                                          NULL) : -1;
            ok(st == V_OCSP_CERTSTATUS_REVOKED && reason == -1
               && (long) revtime == t0, "%s: revoked, unspecified: no "
               "revocationReason (st %d reason %d)", alg, st, reason);
            OCSP_BASICRESP_free(bs);
            pki_ocsp_resp_free(&resp);

            /* a record that lost its revocation time (by hand, or
             * damaged): revoked since the answer's time, not 1970 */
            if (stats != NULL) {
                redisReply  *rp;
                time_t       before;

                rp = redisCommand(stats, "HDEL %s{ca:%s}:cert:%s revoked_at",
                                  ns, name, hex);
                ok(rp != NULL && rp->type == REDIS_REPLY_INTEGER
                   && rp->integer == 1, "%s: revoked_at removed", alg);
                freeReplyObject(rp);
                before = time(NULL);
                st = run(&conf, "POST", der, len, &resp);
                parse(&resp, root, sub, &bs);
                st = bs != NULL ? find_status(bs, &ids[3], &reason,
                                              &revtime, NULL) : -1;
                ok(st == V_OCSP_CERTSTATUS_REVOKED && revtime >= before
                   && revtime <= time(NULL), "%s: no revocation time: "
                   "revoked since now (st %d time %ld)", alg, st,
                   (long) revtime);
                OCSP_BASICRESP_free(bs);
                pki_ocsp_resp_free(&resp);

                /* an invalidity date past 9999 (damaged): left out, the
                 * answer still says revoked (it was internalError) */
                rp = redisCommand(stats, "HSET %s{ca:%s}:cert:%s "
                                  "invalidity_date 999999999999", ns, name,
                                  hex);
                freeReplyObject(rp);
                st = run(&conf, "POST", der, len, &resp);
                parse(&resp, root, sub, &bs);
                ok(st == OCSP_RESPONSE_STATUS_SUCCESSFUL && bs != NULL
                   && find_status(bs, &ids[3], NULL, NULL, NULL)
                      == V_OCSP_CERTSTATUS_REVOKED
                   && OCSP_SINGLERESP_get_ext_by_NID(
                          OCSP_resp_get0(bs, 0), NID_invalidity_date, -1)
                      < 0, "%s: an invalidity date out of range: revoked, "
                   "without it (status %d)", alg, st);
                OCSP_BASICRESP_free(bs);
                pki_ocsp_resp_free(&resp);
            }
            free(der);
            X509_free(un);
        } else {
            ok(0, "%s: a leaf to revoke as unspecified", alg);
        }
    }

    /* signed requests: the signature is not verified (RFC 6960 4.1.2)
     * and its certificates are not decoded (non-certificates pass); the
     * answer is the one of the CertIDs.  Every mutation of one is
     * malformedRequest or a verifiable answer. */
    {
        int             ncerts, fails;
        size_t          slen, jlen, ulen;
        unsigned char  *sder, *junk, *uder;

        ids[0] = (id_spec_t) { EVP_sha1(), sub, good, 0 };
        jlen = (size_t) i2d_X509(sub, NULL);
        ncerts = (int) ((PKI_OCSP_MAX_BODY - 1024) / (jlen + 4));
        sder = make_req_signed(ids, 1, sub, pk, sub, ncerts, &slen);
        st = sder ? run(&conf, "POST", sder, slen, &resp) : -1;
        parse(&resp, root, sub, &bs);
        ok(st == OCSP_RESPONSE_STATUS_SUCCESSFUL && bs
           && find_status(bs, &ids[0], NULL, NULL, NULL)
              == V_OCSP_CERTSTATUS_GOOD,
           "signed, %d certificates (%zu bytes): good (%d)", ncerts, slen,
           st);
        OCSP_BASICRESP_free(bs);
        pki_ocsp_resp_free(&resp);
        free(sder);

        uder = make_req(ids, 1, 0, &ulen, NULL);
        junk = make_junk_cert(&jlen);
        sder = make_signed(uder, ulen, junk, jlen, 200, 0, &slen);
        st = run(&conf, "POST", sder, slen, &resp);
        parse(&resp, root, sub, &bs);
        ok(st == OCSP_RESPONSE_STATUS_SUCCESSFUL && bs
           && find_status(bs, &ids[0], NULL, NULL, NULL)
              == V_OCSP_CERTSTATUS_GOOD && resp.cacheable,
           "signed, 200 non-certificates in the signature: not decoded, "
           "good (%d)", st);
        OCSP_BASICRESP_free(bs);
        pki_ocsp_resp_free(&resp);
        free(sder);

        sder = make_signed(uder, ulen, junk, jlen, 3, 1, &slen);
        st = run(&conf, "POST", sder, slen, &resp);
        ok(st == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST,
           "signed, a BIT STRING among the certificates: malformedRequest "
           "(%d)", st);
        pki_ocsp_resp_free(&resp);
        free(sder);

        sder = make_signed(uder, ulen, junk, jlen, 2, 0, &slen);
        bad = malloc(slen);
        fails = 0;
        for (i = 0; i < 500; i++) {
            memcpy(bad, sder, slen);
            bad[(size_t) rand() % slen] ^= (unsigned char) (1 + rand() % 255);
            st = run(&conf, "POST", bad, slen, &resp);
            if (st == OCSP_RESPONSE_STATUS_SUCCESSFUL) {
                parse(&resp, root, sub, &bs);
                fails += bs == NULL;
                OCSP_BASICRESP_free(bs);

            } else {
                fails += resp.body == NULL || resp.http_status != 200;
            }
            pki_ocsp_resp_free(&resp);
        }
        ok(fails == 0, "signed, 500 mutations: each an OCSP answer (%d "
           "not)", fails);
        free(bad);
        free(sder);
        free(junk);
        free(uder);
    }

    /* unknown issuer: the root */
    ids[0] = (id_spec_t) { EVP_sha1(), root, NULL, 0x1234 };
    der = make_req(ids, 1, 0, &len, NULL);
    st = run(&conf, "POST", der, len, &resp);
    ok(st == OCSP_RESPONSE_STATUS_UNAUTHORIZED, "unknown issuer: "
       "unauthorized (%d)", st);
    pki_ocsp_resp_free(&resp);
    free(der);

    /* RFC 9654 2.1 (obsoletes RFC 8954): a nonce of 1 to 128 octets is
     * answered and echoed, none of them cached; 0 (OpenSSL cannot build
     * it) or over 128 octets is malformedRequest */
    {
        int                   nl, want;
        size_t                j;
        pki_ocsp_req_t        creq;
        OCSP_REQUEST         *kreq;
        unsigned char         ck[PKI_OCSP_KEY_LEN];
        static const int      lens[] = { 1, 16, 32, 33, 64, 128, 129, 200 };

        ids[0] = (id_spec_t) { EVP_sha1(), sub, good, 0 };

        for (j = 0; j < sizeof(lens) / sizeof(lens[0]); j++) {
            nl = lens[j];
            want = nl <= 128;
            der = make_req(ids, 1, nl, &len, &kreq);
            st = run(&conf, "POST", der, len, &resp);

            if (!want) {
                ok(st == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST,
                   "%d-octet nonce: malformedRequest (%d)", nl, st);

            } else {
                ok(st == OCSP_RESPONSE_STATUS_SUCCESSFUL
                   && resp.cacheable == 0,
                   "%d-octet nonce: successful, not cacheable (%d)", nl,
                   st);
                parse(&resp, root, sub, &bs);
                ok(bs != NULL && OCSP_check_nonce(kreq, bs) == 1,
                   "%d-octet nonce: echoed", nl);
                OCSP_BASICRESP_free(bs);
            }

            memset(&creq, 0, sizeof(creq));
            creq.method = "POST";
            creq.body = der;
            creq.body_len = len;
            ok(pki_ocsp_cache_key(&creq, NULL, 0, ck, NULL)
               == PKI_UNSUPPORTED, "%d-octet nonce: no cache key", nl);

            pki_ocsp_resp_free(&resp);
            OCSP_REQUEST_free(kreq);
            free(der);
        }

        /* a nonce in BER, which OpenSSL reads but the echo would copy as
         * it came: a constructed string of 2,000 empty segments around 16
         * octets, and 16 octets with a long-form length */
        for (j = 0; j < 2; j++) {
            size_t              n, k;
            unsigned char      *v, *q;
            OCSP_REQUEST       *breq;
            X509_EXTENSION     *ext;
            ASN1_OCTET_STRING  *val;

            v = malloc(4 + 2000 * 2 + 18);
            q = v;
            if (j == 0) {
                n = 2000 * 2 + 18;
                *q++ = 0x24;
                *q++ = 0x82;
                *q++ = (unsigned char) (n >> 8);
                *q++ = (unsigned char) n;
                for (k = 0; k < 2000; k++) {
                    *q++ = 0x04;
                    *q++ = 0x00;
                }
                *q++ = 0x04;
                *q++ = 16;
            } else {
                *q++ = 0x04;
                *q++ = 0x81;
                *q++ = 16;
            }
            RAND_bytes(q, 16);
            q += 16;

            breq = OCSP_REQUEST_new();
            OCSP_request_add0_id(breq, make_id(&ids[0]));
            val = ASN1_OCTET_STRING_new();
            ASN1_OCTET_STRING_set(val, v, (int) (q - v));
            ext = X509_EXTENSION_create_by_NID(NULL, NID_id_pkix_OCSP_Nonce,
                                               0, val);
            OCSP_REQUEST_add_ext(breq, ext, -1);
            X509_EXTENSION_free(ext);
            ASN1_OCTET_STRING_free(val);
            free(v);

            der = NULL;
            len = (size_t) i2d_OCSP_REQUEST(breq, &der);
            OCSP_REQUEST_free(breq);
            st = run(&conf, "POST", der, len, &resp);
            ok(st == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST
               && resp.body_len < 100,
               "a 16-octet nonce in BER (%s, a request of %zu bytes): "
               "malformedRequest, %zu bytes, nothing echoed (%d)",
               j == 0 ? "2,000 empty segments" : "long-form length", len,
               resp.body_len, st);
            pki_ocsp_resp_free(&resp);
            OPENSSL_free(der);
        }

        /* the request the truncations and mutations below start from */
        der = make_req(ids, 1, 129, &len, NULL);
    }

    /* RFC 6960 4.4: a critical extension not understood is malformed,
     * a non-critical one is ignored; the nonce is understood */
    {
        int                kind, crit, want;
        size_t             elen;
        unsigned char     *eder;
        static const char *const kinds[] = {
            "requestExtension", "singleRequestExtension", "nonce"
        };

        for (kind = 0; kind < 3; kind++) {
            for (crit = 0; crit < 2; crit++) {
                eder = make_req_ext(&ids[0], kind, crit, &elen);
                st = run(&conf, "POST", eder, elen, &resp);
                want = crit && kind != 2
                       ? OCSP_RESPONSE_STATUS_MALFORMEDREQUEST
                       : OCSP_RESPONSE_STATUS_SUCCESSFUL;
                ok(st == want, "%s unknown %s: %s (%d)",
                   crit ? "critical" : "non-critical", kinds[kind],
                   want ? "malformedRequest" : "successful", st);
                pki_ocsp_resp_free(&resp);
                free(eder);
            }
        }
    }

    /* truncated, trailing, garbage, empty, mutated */
    for (i = 1; i < (int) len; i += 7) {
        st = run(&conf, "POST", der, (size_t) i, &resp);
        if (st != OCSP_RESPONSE_STATUS_MALFORMEDREQUEST) {
            ok(0, "truncated at %d: %d", i, st);
        }
        pki_ocsp_resp_free(&resp);
    }
    ok(1, "every truncation: malformedRequest");
    der[len] = 0;
    st = run(&conf, "POST", der, len + 1, &resp);
    ok(st == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, "trailing byte");
    pki_ocsp_resp_free(&resp);
    st = run(&conf, "POST", (const unsigned char *) "garbage", 7, &resp);
    ok(st == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, "garbage");
    pki_ocsp_resp_free(&resp);
    st = run(&conf, "POST", NULL, 0, &resp);
    ok(st == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, "empty");
    pki_ocsp_resp_free(&resp);
    st = run(&conf, "GET", (const unsigned char *) "!!!", 3, &resp);
    ok(st == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, "GET bad base64");
    pki_ocsp_resp_free(&resp);

    bad = malloc(len);
    for (i = 0; i < 2000; i++) {
        memcpy(bad, der, len);
        bad[(size_t) rand() % len] ^= (unsigned char) (1 + rand() % 255);
        if (i % 3 == 0) {
            bad[(size_t) rand() % len] = (unsigned char) rand();
        }
        st = run(&conf, "POST", bad, len, &resp);
        if (resp.body == NULL || resp.http_status != 200
            || st == OCSP_RESPONSE_STATUS_SUCCESSFUL)
        {
            /* a mutation may still be a valid request: then it verifies */
            if (st == OCSP_RESPONSE_STATUS_SUCCESSFUL) {
                parse(&resp, root, sub, &bs);
                if (bs == NULL) {
                    ok(0, "mutation %d: successful but unverifiable", i);
                }
                OCSP_BASICRESP_free(bs);
            } else {
                ok(0, "mutation %d: no OCSP response", i);
            }
        }
        pki_ocsp_resp_free(&resp);
    }
    ok(1, "2000 mutated requests: an OCSP answer each, no crash");
    free(bad);
    free(der);

    /* CertID cap */
    for (i = 0; i <= PKI_OCSP_MAX_IDS; i++) {
        ids[i] = (id_spec_t) { EVP_sha1(), sub, NULL, 0x100 + i };
    }
    der = make_req(ids, PKI_OCSP_MAX_IDS, 0, &len, NULL);
    st = run(&conf, "POST", der, len, &resp);
    ok(st == OCSP_RESPONSE_STATUS_SUCCESSFUL, "%d CertIDs: ok",
       PKI_OCSP_MAX_IDS);
    pki_ocsp_resp_free(&resp);
    free(der);
    der = make_req(ids, PKI_OCSP_MAX_IDS + 1, 0, &len, NULL);
    st = run(&conf, "POST", der, len, &resp);
    ok(st == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, "%d CertIDs: "
       "malformedRequest", PKI_OCSP_MAX_IDS + 1);
    pki_ocsp_resp_free(&resp);

    /* extension cap, in either list */
    for (i = 0; i < 2; i++) {
        unsigned char  *eder;
        size_t          elen;

        eder = make_req_exts(&ids[0], i, 0, PKI_OCSP_MAX_EXTS, &elen);
        st = run(&conf, "POST", eder, elen, &resp);
        ok(st == OCSP_RESPONSE_STATUS_SUCCESSFUL, "%d non-critical %s "
           "extensions: ok", PKI_OCSP_MAX_EXTS, i ? "single" : "request");
        pki_ocsp_resp_free(&resp);
        free(eder);

        eder = make_req_exts(&ids[0], i, 0, PKI_OCSP_MAX_EXTS + 1, &elen);
        st = run(&conf, "POST", eder, elen, &resp);
        ok(st == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, "%d %s extensions: "
           "malformedRequest", PKI_OCSP_MAX_EXTS + 1,
           i ? "single" : "request");
        pki_ocsp_resp_free(&resp);
        free(eder);
    }

    /* wrong content type, bad method */
    {
        pki_ocsp_req_t  q;

        memset(&q, 0, sizeof(q));
        q.method = "POST";
        q.content_type = "text/plain";
        q.body = der;
        q.body_len = len;
        pki_ocsp_handle(&conf, &q, &resp);
        ok(resp.ocsp_status == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST,
           "wrong content type: malformedRequest");
        pki_ocsp_resp_free(&resp);
        q.method = "PUT";
        pki_ocsp_handle(&conf, &q, &resp);
        ok(resp.http_status == 405 && resp.body == NULL, "PUT: 405");
        pki_ocsp_resp_free(&resp);
    }
    free(der);

    /* delegated responder */
    {
        X509               *rcert, *bad, *found;
        EVP_PKEY           *rpk;
        pki_ocsp_signer_t   sg;

        rpk = fx_keygen("EC:P-256");
        sg.ca = ca;
        sg.key = fx_key_file(dir, "responder.key", rpk);
        rcert = make_responder(sub, pk, rpk, 1);
        bad = make_responder(sub, pk, rpk, 0);

        sg.cert = bad;
        pki_result_init(&res);
        ok(pki_ocsp_signer_check(&sg, &res) == PKI_MALFORMED
           && strstr(res.detail, "OCSPSigning"), "signer without EKU "
           "refused: %s", res.detail);
        sg.cert = root;
        pki_result_init(&res);
        ok(pki_ocsp_signer_check(&sg, &res) == PKI_MALFORMED,
           "signer not issued by the CA refused: %s", res.detail);
        sg.cert = rcert;
        pki_result_init(&res);
        is_status(pki_ocsp_signer_check(&sg, &res), PKI_OK,
                  "delegated signer accepted");

        conf.signers = &sg;
        conf.nsigners = 1;
        ids[0] = (id_spec_t) { EVP_sha1(), sub, rev, 0 };
        der = make_req(ids, 1, 16, &len, &oreq);
        st = run(&conf, "POST", der, len, &resp);
        parse(&resp, root, sub, &bs);
        ok(st == OCSP_RESPONSE_STATUS_SUCCESSFUL && bs,
           "delegated: response verifies");
        if (bs) {
            found = NULL;
            ok(OCSP_resp_get0_signer(bs, &found, NULL) == 1
               && X509_cmp(found, rcert) == 0,
               "delegated: ResponderID names the responder, cert included");
            ok(find_status(bs, &ids[0], NULL, NULL, NULL)
               == V_OCSP_CERTSTATUS_REVOKED, "delegated: revoked");
            OCSP_BASICRESP_free(bs);
        }
        pki_ocsp_resp_free(&resp);
        OCSP_REQUEST_free(oreq);
        free(der);

        /* a responder certificate out of its validity at signing time:
         * the CA key signs instead (always verifiable), and the log says
         * which certificate */
        for (i = 0; i < 2; i++) {
            X509            *stale;
            STACK_OF(X509)  *extra;

            stale = i == 0
                    ? make_responder_at(sub, pk, rpk, 1, -7200, -3600)
                    : make_responder_at(sub, pk, rpk, 1, 3600, 7200);
            sg.cert = stale;
            pki_result_init(&res);
            ok(pki_ocsp_signer_check(&sg, &res) == PKI_OK
               && strstr(res.log, "not valid now") != NULL,
               "%s signer: accepted with a warning (%s)",
               i ? "future" : "expired", res.log);

            ids[0] = (id_spec_t) { EVP_sha1(), sub, good, 0 };
            der = make_req(ids, 1, 16, &len, NULL);
            st = run(&conf, "POST", der, len, &resp);
            parse(&resp, root, sub, &bs);
            ok(st == OCSP_RESPONSE_STATUS_SUCCESSFUL && bs,
               "%s delegated signer: response verifies",
               i ? "not yet valid" : "expired");
            if (bs) {
                found = NULL;
                extra = sk_X509_new_null();
                sk_X509_push(extra, sub);
                ok(OCSP_resp_get0_signer(bs, &found, extra) == 1
                   && X509_cmp(found, sub) == 0
                   && sk_X509_num(OCSP_resp_get0_certs(bs)) <= 0,
                   "%s delegated signer: signed by the CA key, no "
                   "certificate included", i ? "not yet valid" : "expired");
                ok(find_status(bs, &ids[0], NULL, NULL, NULL)
                   == V_OCSP_CERTSTATUS_GOOD, "... good");
                sk_X509_free(extra);
                OCSP_BASICRESP_free(bs);
            }
            ok(resp.res.status == PKI_OK
               && strstr(resp.res.log, "OCSP responder certificate") != NULL
               && strstr(resp.res.log, i ? "not yet valid" : "expired")
               && strstr(resp.res.log, "serial 1092") != NULL,
               "the log names the certificate: %s", resp.res.log);
            pki_ocsp_resp_free(&resp);
            free(der);
            X509_free(stale);
        }

        /* a responder certificate that ends before nextUpdate would: the
         * answer it signs ends with it (nextUpdate, and resp.next_update,
         * which the response cache keeps the answer until); one that ends
         * later leaves nextUpdate alone; one that outlives the CA
         * (beyond_ca_expiry) signs answers that end with the CA */
        for (i = 0; i < 3; i++) {
            X509                  *soon;
            time_t                 na, nu;
            struct tm              tm;
            OCSP_CERTID           *cid;
            ASN1_GENERALIZEDTIME  *thisupd, *nextupd;

            soon = make_responder_at(sub, pk, rpk, 1, -60,
                                     i == 0 ? 30 : i == 1 ? 7200 : 3 * 86400);
            memset(&tm, 0, sizeof(tm));
            ASN1_TIME_to_tm(X509_get0_notAfter(i < 2 ? soon : sub), &tm);
            na = timegm(&tm);
            sg.cert = soon;
            conf.next_update = 3600;

            ids[0] = (id_spec_t) { EVP_sha1(), sub, good, 0 };
            der = make_req(ids, 1, 0, &len, NULL);
            clock_step = i == 2 ? na - 600 : 0;
            clock_calls = 0;
            st = run(&conf, "POST", der, len, &resp);
            clock_step = 0;
            parse(&resp, root, sub, &bs);
            ok(st == OCSP_RESPONSE_STATUS_SUCCESSFUL && bs,
               "responder ending in %s: response verifies",
               i == 0 ? "30 s" : i == 1 ? "2 h" : "3 days");
            nu = 0;
            if (bs) {
                found = NULL;
                OCSP_resp_get0_signer(bs, &found, NULL);
                ok(found != NULL && X509_cmp(found, soon) == 0,
                   "... signed by the responder");
                cid = make_id(&ids[0]);
                nextupd = thisupd = NULL;
                if (OCSP_resp_find_status(bs, cid, NULL, NULL, NULL,
                                          &thisupd, &nextupd)
                    && nextupd != NULL)
                {
                    memset(&tm, 0, sizeof(tm));
                    ASN1_TIME_to_tm(nextupd, &tm);
                    nu = timegm(&tm);
                }
                OCSP_CERTID_free(cid);
                OCSP_BASICRESP_free(bs);
            }
            if (i == 0) {
                ok(nu == na && resp.next_update == na && resp.cacheable,
                   "responder ending in 30 s: nextUpdate and the cache "
                   "lifetime end at its notAfter (%lld, %lld, notAfter "
                   "%lld)", (long long) nu, (long long) resp.next_update,
                   (long long) na);
            } else if (i == 1) {
                ok(nu == resp.this_update + 3600
                   && resp.next_update == nu,
                   "responder ending in 2 h: nextUpdate 1 h after "
                   "thisUpdate, as configured");
            } else {
                ok(nu == na && resp.next_update == na,
                   "responder outliving its CA, 10 min before the CA's "
                   "end: nextUpdate at the CA's notAfter (%lld, notAfter "
                   "%lld)", (long long) nu, (long long) na);
            }
            pki_ocsp_resp_free(&resp);
            free(der);
            X509_free(soon);
        }

        conf.signers = NULL;
        conf.nsigners = 0;

        X509_free(rcert);
        X509_free(bad);
        pki_key_free(sg.key);
        EVP_PKEY_free(rpk);
    }

done:

    X509_free(good);
    X509_free(rev);
    X509_free(sub);
    pki_ca_free(ca);
    pki_key_free(key);
    EVP_PKEY_free(pk);
}


/* Two CAs with one certificate and key (a CA re-certified, both declared):
 * a CertID names both; each serial is looked up under both, and the CA
 * whose record answered signs (its delegated responder if it has one). */
static void
test_same_key(X509 *root, pki_ca_t *rootca, pki_template_t *tsub,
    pki_template_t *tdev, pki_redis_t *r)
{
    int                 st, i;
    X509               *sub, *leaf, *oldleaf, *rcert, *found;
    size_t              len;
    EVP_PKEY           *pk, *rpk;
    pki_ca_t           *cas[2];
    pki_key_t          *key;
    id_spec_t           id;
    pki_result_t        res;
    unsigned char      *der;
    OCSP_BASICRESP     *bs;
    pki_ocsp_conf_t     conf;
    pki_ocsp_resp_t     resp;
    pki_ocsp_signer_t   sg;

    pk = fx_keygen("EC:P-256");
    key = fx_key_file(dir, "same.key", pk);

    sub = issue_sub(rootca, tsub, "same-key CA", pk);
    if (!ok(sub != NULL, "same-key CA certificate")) {
        pki_key_free(key);
        EVP_PKEY_free(pk);
        return;
    }
    fx_write_cert(dir, "same.pem", sub);
    cas[0] = make_ca("same-old", "same.pem", key, tdev);
    cas[1] = make_ca("same-new", "same.pem", key, tdev);

    leaf = issue_leaf(cas[1], tdev, r, "same-new leaf");
    oldleaf = issue_leaf(cas[0], tdev, r, "same-old leaf");

    rpk = fx_keygen("EC:P-256");
    rcert = make_responder(sub, pk, rpk, 1);
    sg.ca = cas[1];
    sg.cert = rcert;
    sg.key = fx_key_file(dir, "same-responder.key", rpk);

    memset(&conf, 0, sizeof(conf));
    conf.cas = cas;
    conf.ncas = 2;
    conf.redis = r;
    conf.next_update = 3600;
    conf.signers = &sg;
    conf.nsigners = 1;

    /* 0: the second CA's certificate, 1: the first's, 2: neither's */
    for (i = 0; leaf && oldleaf && i < 3; i++) {
        id = (id_spec_t) { EVP_sha1(), sub, i == 0 ? leaf : i == 1 ? oldleaf
                                                     : NULL, 0x999 };
        der = make_req(&id, 1, 8, &len, NULL);
        st = run(&conf, "POST", der, len, &resp);
        parse(&resp, root, sub, &bs);
        ok(st == OCSP_RESPONSE_STATUS_SUCCESSFUL && bs,
           "same-key CAs %d: response verifies", i);
        if (bs) {
            ok(find_status(bs, &id, NULL, NULL, NULL)
               == (i < 2 ? V_OCSP_CERTSTATUS_GOOD
                         : V_OCSP_CERTSTATUS_UNKNOWN),
               "same-key CAs %d: %s", i, i < 2 ? "good" : "unknown");
            found = NULL;
            OCSP_resp_get0_signer(bs, &found, NULL);
            ok(i == 0 ? found != NULL && X509_cmp(found, rcert) == 0
                      : found == NULL,
               "same-key CAs %d: signed by %s", i,
               i == 0 ? "the second CA's delegated responder"
                      : "the CA key (no responder certificate)");
            OCSP_BASICRESP_free(bs);
        }
        pki_ocsp_resp_free(&resp);
        free(der);
    }

    /* 99 CertIDs in one request, each naming both CAs: the second CA's
     * certificate (good), the first's (revoked there), a serial of
     * neither (unknown), in turn; all 198 records read in one round trip,
     * each status as in the requests of one CertID above */
    if (leaf && oldleaf) {
        int          bad, want, reason;
        char         hex[41];
        long long    r0, r1;
        id_spec_t    many[99];

        pki_result_init(&res);
        pki_serial_to_hex(X509_get0_serialNumber(oldleaf), hex);
        is_status(pki_record_revoke(r, "same-old", hex, 1, time(NULL) - 10, 0,
                                    NULL, &res),
                  PKI_OK, "same-key CAs: the first CA's certificate revoked");

        for (i = 0; i < 99; i++) {
            many[i] = (id_spec_t) { i % 2 ? EVP_sha256() : EVP_sha1(), sub,
                                    i % 3 == 0 ? leaf
                                    : i % 3 == 1 ? oldleaf : NULL,
                                    0x1000 + i };
        }

        der = make_req(many, 99, 8, &len, NULL);
        r0 = redis_reads();
        st = run(&conf, "POST", der, len, &resp);
        r1 = redis_reads();
        if (r0 < 0 || r1 < 0) {
            diag("INFO stats unavailable: round trips not counted");
        } else {
            ok(r1 - r0 < 10, "99 CertIDs under two CAs: the records read in "
               "one round trip (%lld Redis read events, one per record "
               "would be 99 or more)", r1 - r0);
        }

        parse(&resp, root, sub, &bs);
        ok(st == OCSP_RESPONSE_STATUS_SUCCESSFUL && bs,
           "99 CertIDs under two CAs: response verifies");
        if (bs) {
            bad = 0;
            for (i = 0; i < 99; i++) {
                want = i % 3 == 0 ? V_OCSP_CERTSTATUS_GOOD
                       : i % 3 == 1 ? V_OCSP_CERTSTATUS_REVOKED
                       : V_OCSP_CERTSTATUS_UNKNOWN;
                if (find_status(bs, &many[i], &reason, NULL, NULL) != want
                    || (want == V_OCSP_CERTSTATUS_REVOKED && reason != 1))
                {
                    bad++;
                }
            }
            ok(bad == 0, "99 CertIDs under two CAs: good, revoked "
               "(keyCompromise) and unknown as the records say (%d wrong)",
               bad);
            found = NULL;
            OCSP_resp_get0_signer(bs, &found, NULL);
            ok(found != NULL && X509_cmp(found, rcert) == 0,
               "99 CertIDs under two CAs: the CA whose record answered the "
               "first CertID signs (the second's delegated responder)");
            OCSP_BASICRESP_free(bs);
        }
        pki_ocsp_resp_free(&resp);
        free(der);
    }

    X509_free(leaf);
    X509_free(oldleaf);
    X509_free(rcert);
    X509_free(sub);
    pki_key_free(sg.key);
    EVP_PKEY_free(rpk);
    pki_ca_free(cas[0]);
    pki_ca_free(cas[1]);
    pki_key_free(key);
    EVP_PKEY_free(pk);
}


/* time() as the library sees it (exported: it comes before libc's): the
 * real clock, or with clock_step set the second before clock_step on the
 * first call and clock_step on every later one, a clock that ticks over
 * to clock_step while a request is answered. */
__attribute__((visibility("default"))) time_t
time(time_t *t)
{
    time_t           v;
    struct timespec  ts;

    if (clock_step != 0) {
        v = clock_calls++ == 0 ? clock_step - 1 : clock_step;

    } else {
        clock_gettime(CLOCK_REALTIME, &ts);
        v = ts.tv_sec;
    }

    if (t != NULL) {
        *t = v;
    }

    return v;
}


/* A CA of its own (an EC key file, a certificate under rootca) with one
 * leaf: 1, or 0 (said) when the CA was refused. */
typedef struct {
    EVP_PKEY    *pk;
    pki_key_t   *key;
    X509        *sub;
    X509        *leaf;
    pki_ca_t    *ca;
} own_ca_t;


static int
own_ca(own_ca_t *o, const char *name, pki_ca_t *rootca,
    pki_template_t *tsub, pki_template_t *tdev, pki_redis_t *r)
{
    char  file[64];

    memset(o, 0, sizeof(*o));
    o->pk = fx_keygen("EC:P-256");
    snprintf(file, sizeof(file), "%s.key", name);
    o->key = fx_key_file(dir, file, o->pk);
    o->sub = issue_sub(rootca, tsub, name, o->pk);
    if (!ok(o->sub != NULL, "%s: a CA", name)) {
        return 0;
    }
    snprintf(file, sizeof(file), "%s.pem", name);
    fx_write_cert(dir, file, o->sub);
    o->ca = make_ca(name, file, o->key, tdev);
    o->leaf = issue_leaf(o->ca, tdev, r, "leaf");
    return 1;
}


static void
own_ca_free(own_ca_t *o)
{
    X509_free(o->leaf);
    X509_free(o->sub);
    pki_ca_free(o->ca);
    pki_key_free(o->key);
    EVP_PKEY_free(o->pk);
}


/* A planned revocation whose time comes while the answer is made: the
 * record is judged at the time the answer states, so the answer is good
 * and ends at the plan, or revoked; never good with a nextUpdate an hour
 * past the plan (the response cache would serve that for the hour). */
static void
test_plan_clock(X509 *root, pki_ca_t *rootca, pki_template_t *tsub,
    pki_template_t *tdev, pki_redis_t *r)
{
    int               st, reason, has_next;
    char              hex[41];
    size_t            len;
    time_t            at, revtime;
    X509             *sub, *leaf;
    own_ca_t          o;
    pki_ca_t         *ca, *cas[1];
    id_spec_t         id;
    pki_result_t      res;
    unsigned char    *der;
    OCSP_BASICRESP   *bs;
    pki_ocsp_conf_t   conf;
    pki_ocsp_resp_t   resp;

    if (!own_ca(&o, "plan-clock", rootca, tsub, tdev, r)) {
        own_ca_free(&o);
        return;
    }
    sub = o.sub;
    leaf = o.leaf;
    ca = o.ca;

    at = time(NULL) + 100;
    pki_result_init(&res);
    st = leaf && pki_serial_to_hex(X509_get0_serialNumber(leaf), hex)
         ? pki_record_plan_revoke(r, "plan-clock", hex, 1, at, "test", NULL,
                                  &res)
         : PKI_INTERNAL;
    if (!is_status(st, PKI_OK, "  a leaf planned for revocation")) {
        goto done;
    }

    memset(&conf, 0, sizeof(conf));
    cas[0] = ca;
    conf.cas = cas;
    conf.ncas = 1;
    conf.redis = r;
    conf.next_update = 3600;

    id = (id_spec_t) { EVP_sha1(), sub, leaf, 0 };
    der = make_req(&id, 1, 0, &len, NULL);
    clock_step = at;
    clock_calls = 0;
    run(&conf, "POST", der, len, &resp);
    clock_step = 0;
    free(der);

    st = parse(&resp, root, sub, &bs);
    st = bs ? find_status(bs, &id, &reason, &revtime, &has_next) : -1;
    ok(st == V_OCSP_CERTSTATUS_REVOKED
       || (st == V_OCSP_CERTSTATUS_GOOD && resp.next_update <= at),
       "  answered as the clock ticks to the plan: %s, nextUpdate "
       "plan%+lld", st == V_OCSP_CERTSTATUS_GOOD ? "good" : "revoked",
       (long long) (resp.next_update - at));
    OCSP_BASICRESP_free(bs);
    pki_ocsp_resp_free(&resp);

done:

    own_ca_free(&o);
}


/* The CA key signs close to the CA certificate's end: the answer's
 * nextUpdate (and the cache's lifetime) is the CA's notAfter, not an hour
 * past it; an hour before, it is the configured hour. */
static void
test_ca_expiry(X509 *root, pki_ca_t *rootca, pki_template_t *tsub,
    pki_template_t *tdev, pki_redis_t *r)
{
    int                    i, st;
    size_t                 len;
    time_t                 na, nu;
    X509                  *sub, *leaf;
    own_ca_t               o;
    pki_ca_t              *ca, *cas[1];
    id_spec_t              id;
    struct tm              tm;
    OCSP_CERTID           *cid;
    unsigned char         *der;
    OCSP_BASICRESP        *bs;
    pki_ocsp_conf_t        conf;
    pki_ocsp_resp_t        resp;
    ASN1_GENERALIZEDTIME  *thisupd, *nextupd;

    if (!own_ca(&o, "ending", rootca, tsub, tdev, r)) {
        own_ca_free(&o);
        return;
    }
    sub = o.sub;
    leaf = o.leaf;
    ca = o.ca;
    memset(&tm, 0, sizeof(tm));
    ASN1_TIME_to_tm(X509_get0_notAfter(sub), &tm);
    na = timegm(&tm);

    memset(&conf, 0, sizeof(conf));
    cas[0] = ca;
    conf.cas = cas;
    conf.ncas = 1;
    conf.redis = r;
    conf.next_update = 3600;

    for (i = 0; i < 2 && leaf != NULL; i++) {
        id = (id_spec_t) { EVP_sha1(), sub, leaf, 0 };
        der = make_req(&id, 1, 0, &len, NULL);
        clock_step = na - (i ? 7200 : 600);
        clock_calls = 0;
        run(&conf, "POST", der, len, &resp);
        clock_step = 0;
        free(der);

        st = parse(&resp, root, sub, &bs);
        nu = 0;
        if (st == OCSP_RESPONSE_STATUS_SUCCESSFUL && bs != NULL) {
            cid = make_id(&id);
            nextupd = thisupd = NULL;
            if (OCSP_resp_find_status(bs, cid, NULL, NULL, NULL, &thisupd,
                                      &nextupd)
                && nextupd != NULL)
            {
                memset(&tm, 0, sizeof(tm));
                ASN1_TIME_to_tm(nextupd, &tm);
                nu = timegm(&tm);
            }
            OCSP_CERTID_free(cid);
        }
        if (i == 0) {
            ok(nu == na && resp.next_update == na,
               "the CA ends in 10 min: nextUpdate and the cache lifetime "
               "end at its notAfter (%lld, %lld, notAfter %lld)",
               (long long) nu, (long long) resp.next_update, (long long) na);
        } else {
            ok(nu == resp.this_update + 3600 && nu < na
               && resp.next_update == nu,
               "the CA ends in 2 h: nextUpdate 1 h after thisUpdate "
               "(%lld, notAfter %lld)", (long long) nu, (long long) na);
        }
        OCSP_BASICRESP_free(bs);
        pki_ocsp_resp_free(&resp);
    }

    own_ca_free(&o);
}


/* The answer to one POST request for (issuer, leaf) at clock at, into
 * resp: its OCSP status. */
static int
answer_at(const pki_ocsp_conf_t *conf, X509 *issuer, X509 *leaf, int nonce,
    time_t at, pki_ocsp_resp_t *resp)
{
    int             st;
    size_t          len;
    id_spec_t       id;
    unsigned char  *der;

    id = (id_spec_t) { EVP_sha1(), issuer, leaf, 0 };
    der = make_req(&id, 1, nonce, &len, NULL);
    clock_step = at;
    clock_calls = 0;
    st = run(conf, "POST", der, len, resp);
    clock_step = 0;
    free(der);

    return st;
}


/* The nextUpdate of the answer in resp for (issuer, leaf) once verified
 * against root with signer, or 0. */
static time_t
answer_next(pki_ocsp_resp_t *resp, X509 *root, X509 *signer, X509 *issuer,
    X509 *leaf)
{
    time_t                 nu;
    id_spec_t              id;
    struct tm              tm;
    OCSP_CERTID           *cid;
    OCSP_BASICRESP        *bs;
    ASN1_GENERALIZEDTIME  *thisupd, *nextupd;

    nu = 0;
    if (parse(resp, root, signer, &bs) != OCSP_RESPONSE_STATUS_SUCCESSFUL
        || bs == NULL)
    {
        return 0;
    }

    id = (id_spec_t) { EVP_sha1(), issuer, leaf, 0 };
    cid = make_id(&id);
    thisupd = nextupd = NULL;
    if (OCSP_resp_find_status(bs, cid, NULL, NULL, NULL, &thisupd, &nextupd)
        && nextupd != NULL)
    {
        memset(&tm, 0, sizeof(tm));
        ASN1_TIME_to_tm(nextupd, &tm);
        nu = timegm(&tm);
    }
    OCSP_CERTID_free(cid);
    OCSP_BASICRESP_free(bs);

    return nu;
}


/* A CA whose certificate has ended while the responder runs signs no
 * answer (RFC 6960 4.2.2.2: no verifier takes it), by its key or by a
 * delegated responder it certified that outlives it: tryLater, logged as
 * an error, with or without a nonce.  A renewed declaration of the CA
 * (same name and key) signs instead.  Before: a signed answer, dated
 * after the CA's end, nextUpdate an hour on. */
static void
test_ca_ended(X509 *root, pki_ca_t *rootca, pki_template_t *tsub,
    pki_template_t *tdev, pki_redis_t *r)
{
    int                 st;
    time_t              na, na2, nu;
    X509               *old, *renewed, *leaf, *rcert;
    EVP_PKEY           *pk, *rpk;
    X509_NAME          *name;
    pki_ca_t           *ca, *ca2, *cas[2];
    pki_key_t          *key, *rkey;
    struct tm           tm;
    pki_ocsp_conf_t     conf;
    pki_ocsp_resp_t     resp;
    pki_ocsp_signer_t   sg;

    pk = fx_keygen("EC:P-256");
    key = fx_key_file(dir, "ended.key", pk);
    rpk = fx_keygen("EC:P-256");
    rkey = fx_key_file(dir, "ended-resp.key", rpk);
    name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *) "Ended CA", -1, -1,
                               0);
    /* the CA certificate ends in a day, its renewal in two */
    old = fx_issue(rootca, tsub, NULL, name, pk, time(NULL) + 86400);
    renewed = fx_issue(rootca, tsub, NULL, name, pk, 0);
    X509_NAME_free(name);
    if (!ok(old != NULL && renewed != NULL, "a CA ending in a day and its "
            "renewal"))
    {
        goto free;
    }
    fx_write_cert(dir, "ended.pem", old);
    fx_write_cert(dir, "ended2.pem", renewed);
    ca = make_ca("ended", "ended.pem", key, tdev);
    ca2 = make_ca("ended2", "ended2.pem", key, tdev);
    leaf = issue_leaf(ca, tdev, r, "leaf");

    memset(&tm, 0, sizeof(tm));
    ASN1_TIME_to_tm(X509_get0_notAfter(old), &tm);
    na = timegm(&tm);
    memset(&tm, 0, sizeof(tm));
    ASN1_TIME_to_tm(X509_get0_notAfter(renewed), &tm);
    na2 = timegm(&tm);

    memset(&conf, 0, sizeof(conf));
    cas[0] = ca;
    cas[1] = ca2;
    conf.cas = cas;
    conf.ncas = 1;
    conf.redis = r;
    conf.next_update = 3600;

    /* before the end, as before: an answer ending with the CA */
    st = answer_at(&conf, old, leaf, 0, na - 600, &resp);
    nu = answer_next(&resp, root, old, old, leaf);
    ok(st == OCSP_RESPONSE_STATUS_SUCCESSFUL && nu == na,
       "a CA 10 min before its end: answered, nextUpdate its end (%lld, "
       "notAfter %lld)", (long long) nu, (long long) na);
    pki_ocsp_resp_free(&resp);

    /* a minute past it */
    st = answer_at(&conf, old, leaf, 0, na + 60, &resp);
    ok(st == OCSP_RESPONSE_STATUS_TRYLATER && resp.body != NULL
       && !resp.cacheable,
       "a minute past the CA's end: tryLater (before: a signed answer), "
       "status %d", st);
    ok(resp.res.status == PKI_INTERNAL
       && strstr(resp.res.detail, "the CA certificate of \"ended\" has "
                 "expired") != NULL,
       "  logged as an error: %s", resp.res.detail);
    pki_ocsp_resp_free(&resp);

    st = answer_at(&conf, old, leaf, 16, na + 60, &resp);
    ok(st == OCSP_RESPONSE_STATUS_TRYLATER,
       "  with a nonce: tryLater, status %d", st);
    pki_ocsp_resp_free(&resp);

    /* a delegated responder valid for three more days signs nothing
     * either: its issuer has ended */
    rcert = make_responder_at(old, pk, rpk, 1, -60, 86400L * 4);
    sg = (pki_ocsp_signer_t) { ca, rcert, rkey };
    conf.signers = &sg;
    conf.nsigners = 1;
    st = answer_at(&conf, old, leaf, 0, na + 60, &resp);
    ok(st == OCSP_RESPONSE_STATUS_TRYLATER,
       "  a delegated responder outliving the CA: tryLater, status %d", st);
    pki_ocsp_resp_free(&resp);
    conf.signers = NULL;
    conf.nsigners = 0;

    /* the renewed certificate of the CA declared too: it signs */
    conf.ncas = 2;
    st = answer_at(&conf, old, leaf, 0, na + 60, &resp);
    nu = answer_next(&resp, root, renewed, old, leaf);
    ok(st == OCSP_RESPONSE_STATUS_SUCCESSFUL && nu > na + 60 && nu <= na2,
       "  the CA renewed (same name and key) beside it: answered by the "
       "renewal, good to %lld (renewal ends %lld)", (long long) nu,
       (long long) na2);
    pki_ocsp_resp_free(&resp);

    X509_free(rcert);
    X509_free(leaf);
    pki_ca_free(ca);
    pki_ca_free(ca2);

free:

    X509_free(old);
    X509_free(renewed);
    pki_key_free(key);
    pki_key_free(rkey);
    EVP_PKEY_free(pk);
    EVP_PKEY_free(rpk);
}


/* A CA certificate (pathlen unlimited) for cn and pub under issuer (key
 * ikey), valid from now + nb to now + na. */
static X509 *
chain_cert(const char *cn, EVP_PKEY *pub, X509 *issuer, EVP_PKEY *ikey,
    long nb, long na)
{
    cx_ext_t     c = { 0 };
    static long  serial = 7000;

    c.serial = serial++;
    c.ca = 1;
    c.pathlen = -1;
    c.ku = "critical,keyCertSign,cRLSign";

    return cx_cert(cn, pub, issuer, ikey, nb, na, &c);
}


/* The CA "low" under an intermediate M (under the root) that ends in a
 * day, itself valid for 100: its answers end with M (nextUpdate), and
 * past M's end none is signed (tryLater).  Before: nextUpdate an hour
 * on past M's end, and answers signed after it. */
static void
test_chain_ended(X509 *root, EVP_PKEY *rootpk, pki_template_t *tdev,
    pki_redis_t *r)
{
    int               st;
    char              path[128];
    time_t            mend, nu;
    X509             *m, *low, *leaf;
    FILE             *f;
    EVP_PKEY         *mk, *lk;
    pki_ca_t         *ca, *cas[1];
    pki_key_t        *key;
    const char       *argv[1];
    struct tm         tm;
    pki_result_t      res;
    pki_ocsp_conf_t   conf;
    pki_ocsp_resp_t   resp;

    mk = fx_keygen("EC:P-256");
    lk = fx_keygen("EC:P-256");
    m = chain_cert("OCSP Mid", mk, root, rootpk, -3600, 86400L);
    low = chain_cert("OCSP Low", lk, m, mk, -3600, 86400L * 100);
    key = fx_key_file(dir, "low.key", lk);
    fx_write_cert(dir, "low.pem", low);

    snprintf(path, sizeof(path), "%s/mid-root.pem", dir);
    f = fopen(path, "w");
    PEM_write_X509(f, m);
    PEM_write_X509(f, root);
    fclose(f);

    pki_result_init(&res);
    ca = pki_ca_new("low");
    snprintf(path, sizeof(path), "%s/low.pem", dir);
    argv[0] = path;
    pki_ca_set(ca, "certificate", 1, argv, &res);
    snprintf(path, sizeof(path), "%s/mid-root.pem", dir);
    pki_ca_set(ca, "chain", 1, argv, &res);
    pki_ca_set_key(ca, key, &res);
    pki_ca_add_template(ca, tdev, &res);
    if (!is_status(pki_ca_finish(ca, &res), PKI_OK, "CA low under M")) {
        diag("%s", res.detail);
        goto done;
    }

    leaf = issue_leaf(ca, tdev, r, "leaf");
    memset(&tm, 0, sizeof(tm));
    ASN1_TIME_to_tm(X509_get0_notAfter(m), &tm);
    mend = timegm(&tm);

    memset(&conf, 0, sizeof(conf));
    cas[0] = ca;
    conf.cas = cas;
    conf.ncas = 1;
    conf.redis = r;
    conf.next_update = 3600;

    /* (verified against M: the root alone has no path to low) */
    st = answer_at(&conf, low, leaf, 0, mend - 600, &resp);
    nu = answer_next(&resp, m, low, low, leaf);
    ok(st == OCSP_RESPONSE_STATUS_SUCCESSFUL && nu == mend
       && resp.next_update == mend,
       "  10 min before M ends: nextUpdate M's end (%lld, M %lld; before: "
       "an hour on)", (long long) nu, (long long) mend);
    pki_ocsp_resp_free(&resp);

    st = answer_at(&conf, low, leaf, 0, mend + 60, &resp);
    ok(st == OCSP_RESPONSE_STATUS_TRYLATER
       && strstr(resp.res.detail, "certificate 1 of the CA chain") != NULL
       && strstr(resp.res.log, "mid-root.pem") != NULL,
       "  past M's end: tryLater (before: signed), %d: %s (%s)", st,
       resp.res.detail, resp.res.log);
    pki_ocsp_resp_free(&resp);

    X509_free(leaf);

done:

    pki_ca_free(ca);
    pki_key_free(key);
    X509_free(m);
    X509_free(low);
    EVP_PKEY_free(mk);
    EVP_PKEY_free(lk);
}


static void
test_redis_down(X509 *root, pki_ca_t *rootca)
{
    int                st;
    size_t             len;
    pki_ca_t          *cas[1];
    id_spec_t          id;
    pki_redis_t       *r;
    pki_result_t       res;
    unsigned char     *der;
    pki_ocsp_conf_t    conf;
    pki_ocsp_resp_t    resp;
    pki_redis_conf_t   rconf;

    memset(&rconf, 0, sizeof(rconf));
    rconf.unix_path = "/nonexistent/redis.sock";
    rconf.timeout_ms = 200;
    pki_result_init(&res);
    r = pki_redis_new(&rconf, &res);

    memset(&conf, 0, sizeof(conf));
    cas[0] = rootca;
    conf.cas = cas;
    conf.ncas = 1;
    conf.redis = r;
    conf.next_update = 3600;

    id = (id_spec_t) { EVP_sha1(), root, NULL, 0x77 };
    der = make_req(&id, 1, 8, &len, NULL);
    st = run(&conf, "POST", der, len, &resp);
    ok(st == OCSP_RESPONSE_STATUS_TRYLATER, "Redis down: tryLater (%d)", st);
    pki_ocsp_resp_free(&resp);

    conf.redis = NULL;
    st = run(&conf, "POST", der, len, &resp);
    ok(st == OCSP_RESPONSE_STATUS_TRYLATER, "no Redis: tryLater");
    pki_ocsp_resp_free(&resp);

    free(der);
    pki_redis_free(r);
}


static void
test_cache_key(X509 *root, EVP_PKEY *rootpk)
{
    size_t           len1, len2, len3, b64len;
    id_spec_t        ids[2];
    pki_ocsp_req_t   req;
    unsigned char   *d1, *d2, *d3, *b64, k1[PKI_OCSP_KEY_LEN];
    unsigned char    k2[PKI_OCSP_KEY_LEN], k3[PKI_OCSP_KEY_LEN];

    ids[0] = (id_spec_t) { EVP_sha1(), root, NULL, 0x42 };
    ids[1] = (id_spec_t) { EVP_sha256(), root, NULL, 0x43 };

    d1 = make_req(ids, 1, 0, &len1, NULL);
    d2 = make_req(ids, 2, 0, &len2, NULL);
    d3 = make_req(ids, 1, 8, &len3, NULL);

    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.content_type = "application/ocsp-request";
    req.body = d1;
    req.body_len = len1;
    ok(pki_ocsp_cache_key(&req, (const unsigned char *) "s", 1, k1, NULL)
       == PKI_OK, "cache key: POST without nonce");

    b64len = 4 * ((len1 + 2) / 3) + 1;
    b64 = malloc(b64len);
    EVP_EncodeBlock(b64, d1, (int) len1);
    req.method = "GET";
    req.content_type = NULL;
    req.body = b64;
    req.body_len = strlen((char *) b64);
    ok(pki_ocsp_cache_key(&req, (const unsigned char *) "s", 1, k2, NULL)
       == PKI_OK && memcmp(k1, k2, sizeof(k1)) == 0,
       "cache key: the GET form gives the same key");

    ok(pki_ocsp_cache_key(&req, (const unsigned char *) "t", 1, k2, NULL)
       == PKI_OK && memcmp(k1, k2, sizeof(k1)) != 0,
       "cache key: another salt, another key");

    req.method = "POST";
    req.content_type = "application/ocsp-request";
    req.body = d2;
    req.body_len = len2;
    ok(pki_ocsp_cache_key(&req, (const unsigned char *) "s", 1, k3, NULL)
       == PKI_OK && memcmp(k1, k3, sizeof(k1)) != 0,
       "cache key: two CertIDs, another key");

    req.body = d3;
    req.body_len = len3;
    ok(pki_ocsp_cache_key(&req, NULL, 0, k3, NULL) == PKI_UNSUPPORTED,
       "cache key: a nonce request is not cacheable");

    req.body_len = len1 - 3;
    req.body = d1;
    ok(pki_ocsp_cache_key(&req, NULL, 0, k3, NULL) == PKI_MALFORMED,
       "cache key: truncated");

    req.body = (const unsigned char *) "garbage";
    req.body_len = 7;
    ok(pki_ocsp_cache_key(&req, NULL, 0, k3, NULL) == PKI_MALFORMED,
       "cache key: garbage");

    req.content_type = "text/plain";
    req.body = d1;
    req.body_len = len1;
    ok(pki_ocsp_cache_key(&req, NULL, 0, k3, NULL) != PKI_OK,
       "cache key: wrong content type");

    /* a critical extension not understood: never answered from a cache
     * (pki_ocsp_handle answers malformedRequest); a non-critical one is
     * ignored, as pki_ocsp_handle ignores it */
    {
        size_t          elen;
        unsigned char  *eder;

        req.content_type = "application/ocsp-request";
        eder = make_req_ext(&ids[0], 0, 1, &elen);
        req.body = eder;
        req.body_len = elen;
        ok(pki_ocsp_cache_key(&req, (const unsigned char *) "s", 1, k3, NULL)
           == PKI_MALFORMED, "cache key: critical requestExtension");
        free(eder);

        eder = make_req_ext(&ids[0], 1, 1, &elen);
        req.body = eder;
        req.body_len = elen;
        ok(pki_ocsp_cache_key(&req, (const unsigned char *) "s", 1, k3, NULL)
           == PKI_MALFORMED, "cache key: critical singleRequestExtension");
        free(eder);

        eder = make_req_ext(&ids[0], 0, 0, &elen);
        req.body = eder;
        req.body_len = elen;
        ok(pki_ocsp_cache_key(&req, (const unsigned char *) "s", 1, k3, NULL)
           == PKI_OK && memcmp(k1, k3, sizeof(k1)) == 0,
           "cache key: a non-critical extension is ignored");
        free(eder);
    }

    /* A signed request (RFC 6960 4.1.2; the responder ignores request
     * signatures) gives the key of its CertIDs, as before, however many
     * certificates its signature carries: they are not decoded, on the
     * event loop least of all.  Shown structurally: "certificates" that
     * are SEQUENCEs but no certificates (d2i_X509 fails on them, so a
     * decoder of them refuses the request) give the key too. */
    {
        int             ncerts, kind;
        size_t          slen, jlen;
        unsigned char  *sder, *junk;

        req.method = "POST";
        req.content_type = "application/ocsp-request";

        jlen = (size_t) i2d_X509(root, NULL);
        ncerts = (int) ((PKI_OCSP_MAX_BODY - 1024) / (jlen + 4));
        sder = make_req_signed(ids, 1, root, rootpk, root, ncerts, &slen);
        req.body = sder;
        req.body_len = slen;
        ok(sder != NULL && slen <= PKI_OCSP_MAX_BODY
           && pki_ocsp_cache_key(&req, (const unsigned char *) "s", 1, k3,
                                 NULL) == PKI_OK
           && memcmp(k1, k3, sizeof(k1)) == 0,
           "cache key: signed with %d certificates (%zu bytes): the key of "
           "its CertIDs", ncerts, slen);
        free(sder);

        sder = make_req_signed(ids, 1, root, rootpk, root, 0, &slen);
        req.body = sder;
        req.body_len = slen;
        ok(sder != NULL
           && pki_ocsp_cache_key(&req, (const unsigned char *) "s", 1, k3,
                                 NULL) == PKI_OK
           && memcmp(k1, k3, sizeof(k1)) == 0,
           "cache key: signed without certificates: the key of its "
           "CertIDs");
        free(sder);

        junk = make_junk_cert(&jlen);
        sder = make_signed(d1, len1, junk, jlen, 200, 0, &slen);
        req.body = sder;
        req.body_len = slen;
        ok(slen <= PKI_OCSP_MAX_BODY
           && pki_ocsp_cache_key(&req, (const unsigned char *) "s", 1, k3,
                                 NULL) == PKI_OK
           && memcmp(k1, k3, sizeof(k1)) == 0,
           "cache key: 200 signature certificates not decoded (%zu bytes "
           "of non-certificates: same key)", slen);
        free(sder);

        /* the Signature's shape is checked all the same */
        for (kind = 1; kind <= 4; kind++) {
            sder = make_signed(d1, len1, junk, jlen, 3, kind, &slen);
            req.body = sder;
            req.body_len = slen;
            ok(pki_ocsp_cache_key(&req, NULL, 0, k3, NULL) == PKI_MALFORMED,
               "cache key: misshapen signature %d: malformed", kind);
            free(sder);
        }

        sder = make_signed(d1, len1, junk, jlen, 3, 0, &slen);
        sder[slen] = 0;
        req.body = sder;
        req.body_len = slen + 1;
        ok(pki_ocsp_cache_key(&req, NULL, 0, k3, NULL) == PKI_MALFORMED,
           "cache key: signed, a trailing byte: malformed");

        /* the outer SEQUENCE with an indefinite length (BER, RFC 6960
         * wants DER): 30 80 contents 00 00 */
        {
            int                   tag, cls;
            long                  clen;
            unsigned char        *ber;
            const unsigned char  *cp;

            cp = sder;
            ASN1_get_object(&cp, &clen, &tag, &cls, (long) slen);
            ber = malloc((size_t) clen + 4);
            ber[0] = 0x30;
            ber[1] = 0x80;
            memcpy(ber + 2, cp, (size_t) clen);
            ber[clen + 2] = 0;
            ber[clen + 3] = 0;
            req.body = ber;
            req.body_len = (size_t) clen + 4;
            ok(pki_ocsp_cache_key(&req, NULL, 0, k3, NULL) == PKI_MALFORMED,
               "cache key: indefinite length: malformed");
            free(ber);
        }
        free(sder);
        free(junk);
    }

    /* requestorName (unused by the responder) is not decoded either: a
     * name of 3000 RDNs gives the key of the CertIDs, and so does an
     * OCTET STRING where the GeneralName goes (no GeneralName at all:
     * a decoder of it refuses the request) */
    {
        int             i;
        size_t          nlen, rlen;
        unsigned char  *nder, *rder;
        X509_NAME      *big;
        GENERAL_NAME   *gn;
        static const unsigned char  os[] = { 0x04, 0x02, 0x68, 0x69 };

        big = X509_NAME_new();
        for (i = 0; i < 3000; i++) {
            X509_NAME_add_entry_by_txt(big, "CN", MBSTRING_ASC,
                                       (const unsigned char *) "AbCd", -1,
                                       -1, 0);
        }
        gn = GENERAL_NAME_new();
        GENERAL_NAME_set0_value(gn, GEN_DIRNAME, big);
        nder = NULL;
        nlen = (size_t) i2d_GENERAL_NAME(gn, &nder);
        GENERAL_NAME_free(gn);

        rder = make_named(d1, len1, nder, nlen, &rlen);
        req.method = "POST";
        req.content_type = "application/ocsp-request";
        req.body = rder;
        req.body_len = rlen;
        ok(rlen <= PKI_OCSP_MAX_BODY
           && pki_ocsp_cache_key(&req, (const unsigned char *) "s", 1, k3,
                                 NULL) == PKI_OK
           && memcmp(k1, k3, sizeof(k1)) == 0,
           "cache key: requestorName of 3000 RDNs (%zu bytes): the key of "
           "its CertIDs", rlen);
        free(rder);
        OPENSSL_free(nder);

        rder = make_named(d1, len1, os, sizeof(os), &rlen);
        req.body = rder;
        req.body_len = rlen;
        ok(pki_ocsp_cache_key(&req, (const unsigned char *) "s", 1, k3,
                              NULL) == PKI_OK
           && memcmp(k1, k3, sizeof(k1)) == 0,
           "cache key: requestorName not decoded (no GeneralName: same "
           "key)");
        free(rder);
    }

    free(b64);
    free(d1);
    free(d2);
    free(d3);
}


int
main(void)
{
    char              cmd[128];
    X509             *root;
    EVP_PKEY         *rootpk;
    X509_NAME        *name;
    pki_ca_t         *rootca;
    pki_key_t        *rootkey;
    pki_redis_t      *r;
    const char       *sock;
    pki_result_t      res;
    pki_template_t   *troot, *tsub, *tdev;

    static const char *const root_lines[] = {
        "subject CN copy", "basic_constraints ca:true pathlen:1",
        "validity 3650d", NULL
    };
    static const char *const sub_lines[] = {
        "subject CN copy", "basic_constraints ca:true pathlen:0",
        "validity 2d",
        "key_types ec:P-256 ec:P-384 ec:P-521 rsa:2048-4096 ed25519",
        NULL
    };
    static const char *const dev_lines[] = {
        "key_types ec:P-256", "subject CN required", "validity 1d",
        "extended_key_usage clientAuth", NULL
    };

    pki_init();
    srand(42);

    sock = getenv("PKI_TEST_REDIS_SOCK");
    if (sock == NULL || sock[0] == '\0') {
        skip_all("PKI_TEST_REDIS_SOCK not set");
    }

    snprintf(dir, sizeof(dir), "/tmp/ocsptest.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        skip_all("mkdtemp failed");
    }

    troot = fx_template("root", root_lines);
    tsub = fx_template("sub", sub_lines);
    tdev = fx_template("device", dev_lines);

    rootpk = fx_keygen("EC:P-256");
    rootkey = fx_key_file(dir, "root.key", rootpk);
    name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *) "OCSP Test Root", -1,
                               -1, 0);
    pki_result_init(&res);
    root = NULL;
    if (!is_status(pki_selfsign(rootkey, troot, name, &root, &res), PKI_OK,
                   "root")) {
        diag("%s %s", res.detail, res.log);
        return done_testing();
    }
    X509_NAME_free(name);
    fx_write_cert(dir, "root.pem", root);
    rootca = make_ca("root", "root.pem", rootkey, tsub);

    snprintf(ns, sizeof(ns), "ocsptest%d:", (int) getpid());
    r = fx_redis(sock, ns, 1000, &res);
    if (!ok(r != NULL, "redis handle")) {
        return done_testing();
    }
    stats = redisConnectUnix(sock);
    if (stats != NULL && stats->err) {
        redisFree(stats);
        stats = NULL;
    }

    test_ca("EC:P-256", root, rootca, tsub, tdev, r, 1);
    test_ca("EC:P-384", root, rootca, tsub, tdev, r, 0);
    test_ca("EC:P-521", root, rootca, tsub, tdev, r, 0);
    test_ca("RSA:2048", root, rootca, tsub, tdev, r, 0);
    test_ca("ED25519", root, rootca, tsub, tdev, r, 0);
    test_same_key(root, rootca, tsub, tdev, r);
    test_plan_clock(root, rootca, tsub, tdev, r);
    test_ca_expiry(root, rootca, tsub, tdev, r);
    test_ca_ended(root, rootca, tsub, tdev, r);
    test_chain_ended(root, rootpk, tdev, r);
    test_redis_down(root, rootca);
    test_cache_key(root, rootpk);

    pki_redis_free(r);
    if (stats != NULL) {
        redisFree(stats);
    }
    pki_ca_free(rootca);
    pki_key_free(rootkey);
    EVP_PKEY_free(rootpk);
    X509_free(root);
    pki_template_free(troot);
    pki_template_free(tsub);
    pki_template_free(tdev);

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) {
        diag("cleanup failed");
    }

    return done_testing();
}
