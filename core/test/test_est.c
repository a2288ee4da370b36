/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The EST engine driven in process: every operation, every error class,
 * successful outputs parsed back.  Enrollment successes need Redis: set
 * PKI_TEST_REDIS_SOCK to the unix socket of a running redis-server.
 */

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/x509v3.h>

#include "pki.h"
#include "test/unit.h"
#include "test/fixture.h"


static char             dir[64];
static pki_est_conf_t   conf;
static pki_template_t  *other_tmpl;   /* a second template of the CA */


/* i2d_PKCS7() and EVP_PKEY2PKCS8() as the library sees them (exported:
 * they come before libcrypto's): they fail while fail_p7 or fail_p8 is
 * set, as when memory runs out, and work as usual otherwise.  The engine
 * calls them once the certificate is issued (certs-only PKCS#7, the
 * serverkeygen key part). */
typedef int (*i2d_p7_pt)(const PKCS7 *p7, unsigned char **out);
typedef PKCS8_PRIV_KEY_INFO *(*p8_pt)(const EVP_PKEY *pk);

static int  fail_p7, fail_p8;

__attribute__((visibility("default"))) int
i2d_PKCS7(const PKCS7 *p7, unsigned char **out)
{
    static i2d_p7_pt  real;

    if (fail_p7) {
        return -1;
    }

    if (real == NULL) {
        real = (i2d_p7_pt) dlsym(RTLD_NEXT, "i2d_PKCS7");
    }

    return real(p7, out);
}


__attribute__((visibility("default"))) PKCS8_PRIV_KEY_INFO *
EVP_PKEY2PKCS8(const EVP_PKEY *pk)
{
    static p8_pt  real;

    if (fail_p8) {
        return NULL;
    }

    if (real == NULL) {
        real = (p8_pt) dlsym(RTLD_NEXT, "EVP_PKEY2PKCS8");
    }

    return real(pk);
}


static pki_ca_t *
make_ca(const char *name, const char *cert, const char *chain,
    pki_key_t *key, pki_template_t **tmpls)
{
    char           path[128];
    const char    *argv[1];
    pki_ca_t      *ca;
    pki_result_t   res;

    pki_result_init(&res);
    ca = pki_ca_new(name);
    argv[0] = path;
    snprintf(path, sizeof(path), "%s/%s", dir, cert);
    pki_ca_set(ca, "certificate", 1, argv, &res);
    if (chain) {
        snprintf(path, sizeof(path), "%s/%s", dir, chain);
        pki_ca_set(ca, "chain", 1, argv, &res);
    }
    pki_ca_set_key(ca, key, &res);
    for (; *tmpls; tmpls++) {
        pki_ca_add_template(ca, *tmpls, &res);
    }
    if (pki_ca_finish(ca, &res) != PKI_OK) {
        diag("CA %s: %s %s", name, res.detail, res.log);
    }

    return ca;
}


/* Base64 of a DER CSR; challenge: challengePassword or NULL; oid: an
 * attribute with an OCTET STRING value (a key identifier), or NULL. */
static char *
make_csr_attr_b64(EVP_PKEY *pk, const char *cn, const char *dns,
    const char *challenge, const char *oid)
{
    int                        n;
    char                      *b64, san[256];
    X509_REQ                  *csr;
    X509_NAME                 *name;
    ASN1_OBJECT               *obj;
    unsigned char             *der;
    X509_EXTENSION            *ext;
    STACK_OF(X509_EXTENSION)  *exts;

    csr = X509_REQ_new();
    name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    X509_REQ_set_subject_name(csr, name);
    X509_NAME_free(name);
    X509_REQ_set_pubkey(csr, pk);

    if (dns) {
        snprintf(san, sizeof(san), "DNS:%s", dns);
        ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
        exts = sk_X509_EXTENSION_new_null();
        sk_X509_EXTENSION_push(exts, ext);
        X509_REQ_add_extensions(csr, exts);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    }

    if (challenge) {
        X509_REQ_add1_attr_by_NID(csr, NID_pkcs9_challengePassword,
                                  MBSTRING_ASC,
                                  (const unsigned char *) challenge, -1);
    }

    if (oid) {
        obj = OBJ_txt2obj(oid, 1);
        X509_REQ_add1_attr_by_OBJ(csr, obj, V_ASN1_OCTET_STRING,
                                  (const unsigned char *) "kid-1", 5);
        ASN1_OBJECT_free(obj);
    }

    X509_REQ_sign(csr, pk, (EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519
                            || EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED448)
                           ? NULL : EVP_sha256());

    der = NULL;
    n = i2d_X509_REQ(csr, &der);
    X509_REQ_free(csr);
    b64 = pki_base64_encode(der, (size_t) n, 64, NULL);
    OPENSSL_free(der);

    return b64;
}


static char *
make_csr_b64(EVP_PKEY *pk, const char *cn, const char *dns,
    const char *challenge)
{
    return make_csr_attr_b64(pk, cn, dns, challenge, NULL);
}


/* Base64 of a DER CSR whose challengePassword is len octets of raw, as
 * an ASN.1 string of this type (BMPString, UniversalString). */
static char *
make_csr_cp_b64(EVP_PKEY *pk, const char *cn, int type,
    const unsigned char *raw, int len)
{
    int             n;
    char           *b64;
    X509_REQ       *csr;
    X509_NAME      *name;
    unsigned char  *der;

    csr = X509_REQ_new();
    name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    X509_REQ_set_subject_name(csr, name);
    X509_NAME_free(name);
    X509_REQ_set_pubkey(csr, pk);
    X509_REQ_add1_attr_by_NID(csr, NID_pkcs9_challengePassword, type, raw,
                              len);
    X509_REQ_sign(csr, pk, EVP_sha256());

    der = NULL;
    n = i2d_X509_REQ(csr, &der);
    X509_REQ_free(csr);
    b64 = pki_base64_encode(der, (size_t) n, 64, NULL);
    OPENSSL_free(der);

    return b64;
}


/* The ASCII text a as big-endian UCS-2 (w 2) or UCS-4 (w 4) in out: its
 * length. */
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


static void
est(pki_est_op_t op, const char *method, const char *ct, const char *body,
    const char *user, X509 *cert, pki_est_resp_t *resp)
{
    pki_est_req_t  req;

    memset(&req, 0, sizeof(req));
    req.op = op;
    req.method = method;
    req.content_type = ct;
    req.body = (const unsigned char *) body;
    req.body_len = body ? strlen(body) : 0;
    req.user = user;
    req.client_cert = cert;
    req.client = "127.0.0.1";

    pki_est_handle(&conf, &req, resp);
}


static int
body_has(const pki_est_resp_t *resp, const char *s)
{
    return resp->body && resp->body_len
           && memmem(resp->body, resp->body_len, s, strlen(s)) != NULL;
}


static STACK_OF(X509) *
certs_from_b64(const unsigned char *b64, size_t len)
{
    size_t                n;
    PKCS7                *p7;
    pki_result_t          res;
    unsigned char        *der;
    const unsigned char  *p;
    STACK_OF(X509)       *out;

    pki_result_init(&res);
    if (pki_base64_decode(b64, len, &der, &n, &res) != PKI_OK) {
        return NULL;
    }

    p = der;
    p7 = d2i_PKCS7(NULL, &p, (long) n);
    out = NULL;
    if (p7 && (size_t) (p - der) == n && PKCS7_type_is_signed(p7)
        && sk_PKCS7_SIGNER_INFO_num(p7->d.sign->signer_info) == 0)
    {
        out = X509_chain_up_ref(p7->d.sign->cert);
    }

    PKCS7_free(p7);
    free(der);

    return out;
}


/* An error response: status, text/plain body with the detail. */
static void
check_error(const char *name, pki_est_resp_t *resp, int want,
    const char *detail)
{
    ok(resp->http_status == want, "%s: HTTP %d (want %d, %s)", name,
       resp->http_status, want, resp->res.detail);

    if (want == 401) {
        ok(resp->body == NULL && resp->body_len == 0
           && resp->content_type == NULL && resp->www_authenticate
           && strcmp(resp->www_authenticate, "Basic realm=\"EST\"") == 0,
           "  401 with WWW-Authenticate and no body");
    } else {
        ok(resp->content_type && strcmp(resp->content_type, "text/plain") == 0
           && resp->body_len > 0 && resp->body[resp->body_len - 1] == '\n'
           && !resp->cte_base64, "  text/plain body");
    }

    if (detail) {
        ok(body_has(resp, detail) || strstr(resp->res.detail, detail),
           "  detail has \"%s\"", detail);
    }

    if (want == 503) {
        ok(resp->retry_after == 10, "  Retry-After 10");
    }

    pki_est_resp_free(resp);
}


/* Splits a multipart body; returns the part bodies (base64) in order. */
static int
split_multipart(const pki_est_resp_t *resp, char parts[2][8192],
    char types[2][128])
{
    int          n;
    char         bnd[128], *body, *p, *q, *end, *hdr;
    const char  *b;

    b = strstr(resp->content_type, "boundary=");
    if (b == NULL) {
        return 0;
    }
    snprintf(bnd, sizeof(bnd), "--%s", b + 9);

    body = calloc(1, resp->body_len + 1);
    memcpy(body, resp->body, resp->body_len);

    n = 0;
    p = strstr(body, bnd);
    while (p && n < 2) {
        p += strlen(bnd);
        if (strncmp(p, "--", 2) == 0) {
            break;
        }
        p += 2;                              /* CRLF */
        end = strstr(p, "\r\n\r\n");
        if (end == NULL) {
            break;
        }
        *end = '\0';
        types[n][0] = '\0';
        for (hdr = strtok(p, "\r\n"); hdr; hdr = strtok(NULL, "\r\n")) {
            if (strncasecmp(hdr, "Content-Type: ", 14) == 0) {
                snprintf(types[n], 128, "%s", hdr + 14);
            }
        }
        p = end + 4;
        q = strstr(p, bnd);
        if (q == NULL) {
            break;
        }
        snprintf(parts[n], 8192, "%.*s", (int) (q - p), p);
        n++;
        p = q;
    }

    OPENSSL_cleanse(body, resp->body_len);
    free(body);

    return n;
}


/* The two parts of a serverkeygen answer: the key (PKCS#8, base64; its
 * part text and DER are wiped) and the certificates; NULLs if a part does
 * not parse. */
static void
keygen_parts(char parts[2][8192], EVP_PKEY **key, STACK_OF(X509) **certs)
{
    size_t                 n;
    unsigned char         *der;
    pki_result_t           res;
    const unsigned char   *p;
    PKCS8_PRIV_KEY_INFO   *p8;

    der = NULL;
    n = 0;
    pki_result_init(&res);
    pki_base64_decode((unsigned char *) parts[0], strlen(parts[0]), &der, &n,
                      &res);
    p = der;
    p8 = der != NULL ? d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long) n) : NULL;
    *key = p8 ? EVP_PKCS82PKEY(p8) : NULL;
    PKCS8_PRIV_KEY_INFO_free(p8);
    OPENSSL_clear_free(der, n);
    OPENSSL_cleanse(parts[0], sizeof(parts[0]));

    *certs = certs_from_b64((unsigned char *) parts[1], strlen(parts[1]));
}


/* The certificate records of namespace ns in Redis: how many are good,
 * how many revoked (-1 each when Redis cannot be asked). */
static void
count_records(const char *sock, const char *ns, int *good, int *revoked)
{
    char           pattern[160];
    redisReply    *reply;
    redisContext  *rc;

    *good = -1;
    *revoked = -1;

    snprintf(pattern, sizeof(pattern), "%s{ca:*}:cert:*", ns);

    rc = redisConnectUnix(sock);
    reply = (rc && !rc->err)
            ? redisCommand(rc, "EVAL %s 0 %s",
                           "local c, g, r = '0', 0, 0; repeat "
                           "local s = redis.call('SCAN', c, 'MATCH', "
                           "ARGV[1], 'COUNT', 1000); c = s[1]; "
                           "for _, k in ipairs(s[2]) do "
                           "if redis.call('TYPE', k).ok == 'hash' then "
                           "local st = redis.call('HGET', k, 'status'); "
                           "if st == 'good' then g = g + 1 end; "
                           "if st == 'revoked' then r = r + 1 end end end "
                           "until c == '0'; return {g, r}", pattern)
            : NULL;

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2) {
        *good = (int) reply->element[0]->integer;
        *revoked = (int) reply->element[1]->integer;
    }

    freeReplyObject(reply);
    if (rc) {
        redisFree(rc);
    }
}


/*
 * est_bind_names: an enrollment bound to the client certificate's names
 * is issued that certificate's subject as it is encoded (its "DEV-9" for
 * the CSR's "dev-9"), but only when each value is as the template issues
 * one: X509_NAME_cmp() folds "dev\t7" to the CSR's "dev 7" and an
 * IA5String CN to a UTF8String, and those bytes never passed the checks
 * the CSR's did; such an enrollment gets the subject the template built.
 */
static void
test_bound_subject(void)
{
    int                 i, idx;
    char                name[96];
    X509               *client, *issued;
    EVP_PKEY           *ck, *pk;
    pki_result_t        res;
    pki_request_t       req;
    pki_est_resp_t      resp;
    STACK_OF(X509)     *certs;
    const ASN1_STRING  *d;
    char               *csr;
    pki_issue_ctx_t     ictx = { "est", "tester", "127.0.0.1", NULL, NULL };
    static const struct {
        int          type;       /* the client certificate's CN */
        const char  *cn;
        const char  *csr_cn;
        int          want_type;  /* the issued CN */
        const char  *want;
    } cases[] = {
        { V_ASN1_UTF8STRING, "dev\t7", "dev 7", V_ASN1_UTF8STRING, "dev 7" },
        { V_ASN1_UTF8STRING, "dev\n7b", "dev 7b", V_ASN1_UTF8STRING,
          "dev 7b" },
        { V_ASN1_IA5STRING, "dev-8", "dev-8", V_ASN1_UTF8STRING, "dev-8" },
        { V_ASN1_UTF8STRING, "DEV-9", "dev-9", V_ASN1_UTF8STRING, "DEV-9" },
    };

    conf.bind_names = 1;

    for (i = 0; i < (int) (sizeof(cases) / sizeof(cases[0])); i++) {
        ck = fx_keygen("EC:P-256");
        memset(&req, 0, sizeof(req));
        req.subject = X509_NAME_new();
        X509_NAME_add_entry_by_NID(req.subject, NID_commonName,
                                   cases[i].type,
                                   (unsigned char *) cases[i].cn, -1, -1, 0);
        req.pubkey = ck;
        client = NULL;
        pki_result_init(&res);
        if (pki_issue(conf.ca, conf.tmpl, conf.redis, &req, &ictx, &client,
                      &res) != PKI_OK)
        {
            diag("client certificate: %s %s", res.detail, res.log);
        }
        X509_NAME_free(req.subject);

        pk = fx_keygen("EC:P-256");
        csr = make_csr_b64(pk, cases[i].csr_cn, NULL, NULL);
        est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", csr, NULL,
            client, &resp);
        snprintf(name, sizeof(name), "bound simpleenroll, client CN type %d "
                 "\"%s\": %%d %%s", cases[i].type, cases[i].csr_cn);
        ok(resp.http_status == 200, name, resp.http_status,
           resp.res.detail);

        certs = resp.http_status == 200
                ? certs_from_b64(resp.body, resp.body_len) : NULL;
        issued = certs ? sk_X509_value(certs, 0) : NULL;
        idx = issued ? X509_NAME_get_index_by_NID(
                           X509_get_subject_name(issued), NID_commonName, -1)
                     : -1;
        d = idx >= 0 ? X509_NAME_ENTRY_get_data(X509_NAME_get_entry(
                           X509_get_subject_name(issued), idx))
                     : NULL;
        ok(d != NULL && ASN1_STRING_type(d) == cases[i].want_type
           && ASN1_STRING_length(d) == (int) strlen(cases[i].want)
           && memcmp(ASN1_STRING_get0_data(d), cases[i].want,
                     strlen(cases[i].want)) == 0,
           "  issued CN \"%s\" (type %d), got type %d \"%.*s\"",
           cases[i].want, cases[i].want_type, d ? ASN1_STRING_type(d) : -1,
           d ? ASN1_STRING_length(d) : 0,
           d ? (const char *) ASN1_STRING_get0_data(d) : "");

        sk_X509_pop_free(certs, X509_free);
        pki_est_resp_free(&resp);
        free(csr);
        EVP_PKEY_free(pk);
        EVP_PKEY_free(ck);
        X509_free(client);
    }

    conf.bind_names = 0;
}


static void
test_success(pki_ca_t *other_ca, pki_ca_t *same_ca, const char *sock,
    X509 *foreign)
{
    char                  *csr, parts[2][8192], types[2][128], ns[128];
    X509                  *cert, *cert2;
    size_t                 n;
    EVP_PKEY              *pk, *pk2, *gen;
    pki_redis_t           *r;
    pki_result_t           res;
    pki_est_resp_t         resp;
    STACK_OF(X509)        *certs;
    static const unsigned char  binding[] = "0123456789abcdef";

    snprintf(ns, sizeof(ns), "h2est%d:", (int) getpid());
    r = fx_redis(sock, ns, 1000, &res);
    conf.redis = r;

    /* simpleenroll with Basic auth. */
    pk = fx_keygen("EC:P-256");
    csr = make_csr_b64(pk, "dev1", "dev1.example.com", NULL);
    est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", csr, "alice",
        NULL, &resp);
    ok(resp.http_status == 200, "simpleenroll: 200 (%s %s)", resp.res.detail,
       resp.res.log);
    ok(resp.content_type && strcmp(resp.content_type, "application/pkcs7-mime;"
       " smime-type=certs-only") == 0 && resp.cte_base64,
       "  certs-only content type, base64");
    certs = certs_from_b64(resp.body, resp.body_len);
    ok(certs && sk_X509_num(certs) == 1, "  PKCS#7 with one certificate");
    cert = certs ? X509_dup(sk_X509_value(certs, 0)) : NULL;
    sk_X509_pop_free(certs, X509_free);
    ok(cert && EVP_PKEY_eq(X509_get0_pubkey(cert), pk) == 1,
       "  certificate holds the CSR key");
    ok(cert && pki_ca_issued(conf.ca, cert), "  issued by the CA");
    pki_est_resp_free(&resp);
    free(csr);

    /* simpleenroll with the client certificate as identity. */
    pk2 = fx_keygen("EC:P-256");
    csr = make_csr_b64(pk2, "dev2", NULL, NULL);
    est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", csr, NULL, cert,
        &resp);
    ok(resp.http_status == 200, "simpleenroll by client certificate: %d %s",
       resp.http_status, resp.res.detail);
    pki_est_resp_free(&resp);

    /* a password beside a good certificate of the CA, or beside another
     * CA's (a manufacturer's IDevID): the password authenticates */
    est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", csr, "alice",
        cert, &resp);
    ok(resp.http_status == 200, "simpleenroll by a password beside a good "
       "certificate: %d %s", resp.http_status, resp.res.detail);
    pki_est_resp_free(&resp);
    est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", csr, "alice",
        foreign, &resp);
    ok(resp.http_status == 200, "simpleenroll by a password beside another "
       "CA's certificate: %d %s", resp.http_status, resp.res.detail);
    pki_est_resp_free(&resp);

    est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", csr, NULL,
        foreign, &resp);
    check_error("simpleenroll with a foreign client certificate", &resp, 401,
                NULL);
    free(csr);
    EVP_PKEY_free(pk2);

    /* simplereenroll: same names, new key. */
    pk2 = fx_keygen("EC:P-384");
    csr = make_csr_b64(pk2, "dev1", "dev1.example.com", NULL);
    est(PKI_EST_SIMPLEREENROLL, "POST", "application/pkcs10", csr, NULL, cert,
        &resp);
    ok(resp.http_status == 200, "simplereenroll: %d %s", resp.http_status,
       resp.res.detail);
    certs = certs_from_b64(resp.body, resp.body_len);
    cert2 = certs ? sk_X509_value(certs, 0) : NULL;
    ok(cert2 && EVP_PKEY_eq(X509_get0_pubkey(cert2), pk2) == 1
       && X509_NAME_cmp(X509_get_subject_name(cert2),
                        X509_get_subject_name(cert)) == 0,
       "  renewed: same subject, new key");
    sk_X509_pop_free(certs, X509_free);
    pki_est_resp_free(&resp);
    free(csr);

    /* A renewal stays in the template its certificate was issued under. */
    csr = make_csr_b64(pk2, "dev1", "dev1.example.com", NULL);
    {
        pki_template_t  *saved = conf.tmpl;

        conf.tmpl = other_tmpl;
        est(PKI_EST_SIMPLEREENROLL, "POST", "application/pkcs10", csr, NULL,
            cert, &resp);
        check_error("simplereenroll under another template", &resp, 403,
                    "issued under template \"device\", not \"nokg\"");
        conf.tmpl = saved;
    }
    free(csr);

    csr = make_csr_b64(pk2, "other", "dev1.example.com", NULL);
    est(PKI_EST_SIMPLEREENROLL, "POST", "application/pkcs10", csr, NULL, cert,
        &resp);
    check_error("simplereenroll with another subject", &resp, 403,
                "subject/SANs differ");
    free(csr);

    csr = make_csr_b64(pk2, "dev1", "dev9.example.com", NULL);
    est(PKI_EST_SIMPLEREENROLL, "POST", "application/pkcs10", csr, NULL, cert,
        &resp);
    check_error("simplereenroll with other SANs", &resp, 403, NULL);

    est(PKI_EST_SIMPLEREENROLL, "POST", "application/pkcs10", csr, NULL,
        foreign, &resp);
    check_error("simplereenroll with a foreign certificate", &resp, 403,
                "not issued by this CA");
    free(csr);
    EVP_PKEY_free(pk2);

    /* serverkeygen. */
    csr = make_csr_b64(pk, "kg1", NULL, NULL);
    est(PKI_EST_SERVERKEYGEN, "POST", "application/pkcs10", csr, "alice", NULL,
        &resp);
    ok(resp.http_status == 200, "serverkeygen: %d %s", resp.http_status,
       resp.res.detail);
    ok(resp.content_type
       && strncmp(resp.content_type, "multipart/mixed; boundary=", 26) == 0
       && resp.content_type == resp.content_type_buf && !resp.cte_base64,
       "  multipart/mixed with a boundary");
    n = resp.http_status == 200 ? (size_t) split_multipart(&resp, parts, types)
                                : 0;
    ok(n == 2, "  two parts");
    if (n == 2) {
        ok(strcmp(types[0], "application/pkcs8") == 0, "  part 1 pkcs8");
        ok(strcmp(types[1], "application/pkcs7-mime; smime-type=certs-only")
           == 0, "  part 2 certs-only");
        ok(body_has(&resp, "Content-Transfer-Encoding: base64\r\n"),
           "  parts carry Content-Transfer-Encoding");

        keygen_parts(parts, &gen, &certs);
        cert2 = certs ? sk_X509_value(certs, 0) : NULL;
        ok(gen && cert2 && EVP_PKEY_eq(X509_get0_pubkey(cert2), gen) == 1,
           "  PKCS#8 key matches the certificate");
        ok(gen && EVP_PKEY_eq(gen, pk) != 1, "  a new key, not the CSR's");
        ok(gen && EVP_PKEY_get_base_id(gen) == EVP_PKEY_EC
           && EVP_PKEY_get_bits(gen) == 256, "  same type as the CSR key");
        ok(!strstr(resp.res.log, "PRIVATE") && !strstr(resp.res.detail,
           "PRIVATE"), "  no key in the result text");
        EVP_PKEY_free(gen);
        sk_X509_pop_free(certs, X509_free);
    }
    pki_est_resp_free(&resp);
    free(csr);

    /* serverkeygen of an Ed448 key: the template allows it, and csrattrs
     * offers it with server_keygen on */
    pk2 = fx_keygen("ED448");
    csr = make_csr_b64(pk2, "kg448", NULL, NULL);
    est(PKI_EST_SERVERKEYGEN, "POST", "application/pkcs10", csr, "alice", NULL,
        &resp);
    ok(resp.http_status == 200, "serverkeygen Ed448: %d %s",
       resp.http_status, resp.res.detail);
    n = resp.http_status == 200 ? (size_t) split_multipart(&resp, parts, types)
                                : 0;
    gen = NULL;
    cert2 = NULL;
    certs = NULL;
    if (n == 2) {
        keygen_parts(parts, &gen, &certs);
        cert2 = certs ? sk_X509_value(certs, 0) : NULL;
    }
    ok(gen && EVP_PKEY_get_base_id(gen) == EVP_PKEY_ED448
       && EVP_PKEY_eq(gen, pk2) != 1, "  a new Ed448 key");
    ok(gen && cert2 && EVP_PKEY_eq(X509_get0_pubkey(cert2), gen) == 1,
       "  the certificate holds it");
    EVP_PKEY_free(gen);
    sk_X509_pop_free(certs, X509_free);
    pki_est_resp_free(&resp);
    free(csr);
    EVP_PKEY_free(pk2);

    /* Issued, then no answer can carry the certificate (its PKCS#7, or
     * the serverkeygen key part, cannot be made): 500, and the record
     * withdrawn (revoked, cessationOfOperation), not left good. */
    {
        int            i, g0, r0, g1, r1;
        char           hex[41], *sp;
        pki_record_t   rec;
        pki_status_t   st;
        static const struct {
            const char    *name;
            pki_est_op_t   op;
            int           *fail;
        } faults[] = {
            { "simpleenroll, no PKCS#7", PKI_EST_SIMPLEENROLL, &fail_p7 },
            { "serverkeygen, no PKCS#7", PKI_EST_SERVERKEYGEN, &fail_p7 },
            { "serverkeygen, no PKCS#8", PKI_EST_SERVERKEYGEN, &fail_p8 },
        };

        for (i = 0; i < (int) (sizeof(faults) / sizeof(faults[0])); i++) {
            count_records(sock, ns, &g0, &r0);
            csr = make_csr_b64(pk, "undelivered", NULL, NULL);
            *faults[i].fail = 1;
            est(faults[i].op, "POST", "application/pkcs10", csr, "alice",
                NULL, &resp);
            *faults[i].fail = 0;
            free(csr);
            count_records(sock, ns, &g1, &r1);

            ok(resp.http_status == 500 && !body_has(&resp, "PRIVATE"),
               "%s: 500 (%d %s)", faults[i].name, resp.http_status,
               resp.res.detail);
            ok(g1 == g0 && r1 == r0 + 1, "  no record left good, one more "
               "revoked (good %d -> %d, revoked %d -> %d)", g0, g1, r0, r1);

            sp = strstr(resp.res.log, "issued serial ");
            hex[0] = '\0';
            ok(sp != NULL && sscanf(sp + 14, "%40[0-9A-F]", hex) == 1
               && strstr(resp.res.log, "withdrawn") != NULL,
               "  the log names the serial, withdrawn [%s]", resp.res.log);

            memset(&rec, 0, sizeof(rec));
            pki_result_init(&res);
            st = hex[0] ? pki_record_get(r, pki_ca_name(conf.ca), hex, &rec,
                                         &res)
                        : PKI_NOT_FOUND;
            ok(st == PKI_OK && rec.status == PKI_CERT_REVOKED
               && rec.reason == 5, "  its record: revoked, "
               "cessationOfOperation (status %d reason %d)",
               (int) rec.status, rec.reason);
            pki_record_clear(&rec);
            pki_est_resp_free(&resp);
        }
    }

    /* Proof-of-possession linking. */
    conf.pop_linking = 1;
    {
        pki_est_req_t  req;
        char          *cb64 = pki_base64_encode(binding, 16, 0, NULL);

        memset(&req, 0, sizeof(req));
        req.op = PKI_EST_SIMPLEENROLL;
        req.method = "POST";
        req.content_type = "application/pkcs10";
        req.user = "alice";
        req.channel_binding = binding;
        req.channel_binding_len = 16;

        csr = make_csr_b64(pk, "pop1", NULL, cb64);
        req.body = (unsigned char *) csr;
        req.body_len = strlen(csr);
        pki_est_handle(&conf, &req, &resp);
        ok(resp.http_status == 200, "pop linking: matching binding: %d %s",
           resp.http_status, resp.res.detail);
        pki_est_resp_free(&resp);

        /* the right tls-unique, but TLS 1.2 without the Extended Master
         * Secret (RFC 7627): it does not bind */
        req.binding_no_ems = 1;
        pki_est_handle(&conf, &req, &resp);
        check_error("pop linking: TLS 1.2 without EMS", &resp, 400,
                    "Extended Master Secret");
        req.binding_no_ems = 0;

        req.channel_binding = (const unsigned char *) "another binding!";
        pki_est_handle(&conf, &req, &resp);
        check_error("pop linking: other binding", &resp, 400,
                    "does not match the TLS channel binding");

        req.channel_binding = NULL;
        req.channel_binding_len = 0;
        pki_est_handle(&conf, &req, &resp);
        check_error("pop linking: no binding", &resp, 400,
                    "no TLS channel binding");
        free(csr);

        csr = make_csr_b64(pk, "pop1", NULL, NULL);
        req.body = (unsigned char *) csr;
        req.body_len = strlen(csr);
        req.channel_binding = binding;
        req.channel_binding_len = 16;
        pki_est_handle(&conf, &req, &resp);
        check_error("pop linking: no challengePassword", &resp, 400,
                    "no challengePassword");
        free(csr);

        /* the binding as a BMPString or UniversalString (RFC 2985
         * DirectoryString): read as its UTF-8 */
        {
            int            k, ul;
            unsigned char  u[1200];

            for (k = 0; k < 2; k++) {
                ul = ucs(cb64, k ? 4 : 2, u);
                csr = make_csr_cp_b64(pk, "pop-bmp", k ? V_ASN1_UNIVERSALSTRING
                                                       : V_ASN1_BMPSTRING,
                                      u, ul);
                req.body = (unsigned char *) csr;
                req.body_len = strlen(csr);
                pki_est_handle(&conf, &req, &resp);
                ok(resp.http_status == 200, "pop linking: the binding as a "
                   "%s: %d %s", k ? "UniversalString" : "BMPString",
                   resp.http_status, resp.res.detail);
                pki_est_resp_free(&resp);
                free(csr);
            }

            /* another binding: a mismatch, not a malformed attribute */
            ul = ucs("YW5vdGhlciBiaW5kaW5nIQ==", 2, u);
            csr = make_csr_cp_b64(pk, "pop-bmp", V_ASN1_BMPSTRING, u, ul);
            req.body = (unsigned char *) csr;
            req.body_len = strlen(csr);
            pki_est_handle(&conf, &req, &resp);
            check_error("pop linking: BMPString of another binding", &resp,
                        400, "does not match the TLS channel binding");
            free(csr);

            /* the binding and a NUL; a surrogate; past U+10FFFF; 300
             * characters */
            for (k = 0; k < 4; k++) {
                int  type = V_ASN1_BMPSTRING;

                ul = ucs(cb64, 2, u);
                if (k == 0) {
                    u[ul++] = 0;
                    u[ul++] = 0;
                } else if (k == 1) {
                    u[0] = 0xdc;
                } else if (k == 2) {
                    type = V_ASN1_UNIVERSALSTRING;
                    ul = ucs(cb64, 4, u);
                    u[1] = 0x11;
                } else {
                    memset(u, 'A', 300);
                    u[300] = '\0';
                    ul = ucs((char *) u, 2, u + 301);
                    memmove(u, u + 301, ul);
                }
                csr = make_csr_cp_b64(pk, "pop-bmp", type, u, ul);
                req.body = (unsigned char *) csr;
                req.body_len = strlen(csr);
                pki_est_handle(&conf, &req, &resp);
                check_error(k == 0 ? "pop linking: BMPString with a NUL"
                            : k == 1 ? "pop linking: BMPString, a surrogate"
                            : k == 2 ? "pop linking: UniversalString past "
                                       "U+10FFFF"
                            : "pop linking: BMPString of 300 characters",
                            &resp, 400, "malformed challengePassword");
                free(csr);
            }
        }
        free(cb64);
    }
    conf.pop_linking = 0;

    /* Linking not required, but a CSR that carries a challengePassword
     * is verified against the binding (RFC 7030 3.5), where one binds;
     * not for an RA (id-kp-cmcRA), which forwards its clients' CSRs */
    {
        int             k;
        char           *cb64 = pki_base64_encode(binding, 16, 0, NULL);
        X509           *ra;
        pki_est_req_t   req;

        memset(&req, 0, sizeof(req));
        req.op = PKI_EST_SIMPLEENROLL;
        req.method = "POST";
        req.content_type = "application/pkcs10";
        req.user = "alice";
        req.channel_binding = binding;
        req.channel_binding_len = 16;

        csr = make_csr_b64(pk, "nopop1", NULL, cb64);
        req.body = (unsigned char *) csr;
        req.body_len = strlen(csr);
        pki_est_handle(&conf, &req, &resp);
        ok(resp.http_status == 200, "linking off, the CSR's binding "
           "matches: %d %s", resp.http_status, resp.res.detail);
        pki_est_resp_free(&resp);

        for (k = 0; k < 2; k++) {
            req.op = k ? PKI_EST_SERVERKEYGEN : PKI_EST_SIMPLEENROLL;
            req.channel_binding = (const unsigned char *) "another binding!";
            pki_est_handle(&conf, &req, &resp);
            check_error(k ? "linking off, serverkeygen, another binding"
                          : "linking off, another binding", &resp, 400,
                        "does not match the TLS channel binding");
        }
        req.op = PKI_EST_SIMPLEENROLL;

        /* no binding that binds: not checked, as before */
        req.binding_no_ems = 1;
        pki_est_handle(&conf, &req, &resp);
        ok(resp.http_status == 200, "linking off, TLS 1.2 without EMS: not "
           "checked: %d %s", resp.http_status, resp.res.detail);
        pki_est_resp_free(&resp);
        req.binding_no_ems = 0;

        req.channel_binding = NULL;
        req.channel_binding_len = 0;
        pki_est_handle(&conf, &req, &resp);
        ok(resp.http_status == 200, "linking off, no binding (plain HTTP): "
           "not checked: %d %s", resp.http_status, resp.res.detail);
        pki_est_resp_free(&resp);

        /* an RA's certificate (not one of the server's CAs') */
        ra = X509_new();
        {
            X509_NAME       *nm = X509_NAME_new();
            X509_EXTENSION  *ext;

            X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC,
                                       (const unsigned char *) "ra", -1, -1,
                                       0);
            X509_set_version(ra, 2);
            ASN1_INTEGER_set(X509_get_serialNumber(ra), 7);
            X509_set_subject_name(ra, nm);
            X509_set_issuer_name(ra, nm);
            X509_gmtime_adj(X509_getm_notBefore(ra), -60);
            X509_gmtime_adj(X509_getm_notAfter(ra), 3600);
            X509_set_pubkey(ra, pk);
            ext = X509V3_EXT_conf_nid(NULL, NULL, NID_ext_key_usage,
                                      "clientAuth, cmcRA");
            X509_add_ext(ra, ext, -1);
            X509_EXTENSION_free(ext);
            X509_sign(ra, pk, EVP_sha256());
            X509_NAME_free(nm);
        }

        req.client_cert = ra;
        req.channel_binding = (const unsigned char *) "another binding!";
        req.channel_binding_len = 16;
        pki_est_handle(&conf, &req, &resp);
        ok(resp.http_status == 200, "linking off, an RA (id-kp-cmcRA) "
           "forwards another connection's CSR: %d %s", resp.http_status,
           resp.res.detail);
        pki_est_resp_free(&resp);
        req.client_cert = NULL;
        X509_free(ra);

        free(csr);

        /* without a challengePassword: nothing to check */
        csr = make_csr_b64(pk, "nopop1", NULL, NULL);
        req.body = (unsigned char *) csr;
        req.body_len = strlen(csr);
        pki_est_handle(&conf, &req, &resp);
        ok(resp.http_status == 200, "linking off, no challengePassword: %d "
           "%s", resp.http_status, resp.res.detail);
        pki_est_resp_free(&resp);
        free(csr);
        free(cb64);
    }

    test_bound_subject();

    /* A CA certified anew under another name (same subject and key,
     * linked as one issuer): the certificates of the first keep their
     * records under its name, and still renew and authenticate */
    if (same_ca != NULL) {
        pki_ca_t  *label_ca = conf.ca;

        conf.ca = same_ca;
        csr = make_csr_b64(pk, "dev1", "dev1.example.com", NULL);
        est(PKI_EST_SIMPLEREENROLL, "POST", "application/pkcs10", csr, NULL,
            cert, &resp);
        ok(resp.http_status == 200, "simplereenroll at a CA of the same "
           "subject and key under another name: 200 (%d %s %s)",
           resp.http_status, resp.res.detail, resp.res.log);
        pki_est_resp_free(&resp);
        free(csr);
        conf.ca = label_ca;
    }

    /* A revoked client certificate (status set through the documented
     * record layout). */
    {
        char           hex[41], key[256];
        redisReply    *reply;
        redisContext  *rc;

        pki_serial_to_hex(X509_get0_serialNumber(cert), hex);
        snprintf(key, sizeof(key), "%s{ca:%s}:cert:%s", ns,
                 pki_ca_name(conf.ca), hex);
        rc = redisConnectUnix(sock);
        reply = rc ? redisCommand(rc, "HSET %s status revoked", key) : NULL;
        ok(reply && reply->type == REDIS_REPLY_INTEGER, "record %s revoked",
           key);
        freeReplyObject(reply);

        csr = make_csr_b64(pk, "dev1", "dev1.example.com", NULL);
        est(PKI_EST_SIMPLEREENROLL, "POST", "application/pkcs10", csr, NULL,
            cert, &resp);
        check_error("simplereenroll with a revoked certificate", &resp, 403,
                    "revoked");
        est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", csr, NULL,
            cert, &resp);
        check_error("simpleenroll by a revoked certificate", &resp, 401,
                    NULL);
        /* a password does not make a revoked certificate beside it good:
         * with ssl_verify_client on it is the second factor */
        est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", csr, "alice",
            cert, &resp);
        check_error("simpleenroll by a password beside a revoked "
                    "certificate", &resp, 403, "revoked");

        /* and at the label of another of the server's CAs: the
         * certificate is judged by the CA that issued it */
        {
            pki_ca_t        *label_ca = conf.ca;
            pki_ca_t *const  all[2] = { label_ca, other_ca };

            conf.ca = other_ca;
            conf.cas = all;
            conf.ncas = 2;
            est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", csr,
                "alice", cert, &resp);
            check_error("simpleenroll at another CA's label by a password "
                        "beside a revoked certificate", &resp, 403,
                        "revoked");
            conf.ca = label_ca;
            conf.cas = NULL;
            conf.ncas = 0;
        }
        free(csr);

        if (rc) {
            reply = redisCommand(rc, "EVAL %s 0 %s",
                                 "local c = '0'; repeat local r = redis.call("
                                 "'SCAN', c, 'MATCH', ARGV[1], 'COUNT', 1000);"
                                 " c = r[1]; for _, k in ipairs(r[2]) do "
                                 "redis.call('DEL', k) end until c == '0'; "
                                 "return 1", "h2est*");
            freeReplyObject(reply);
            redisFree(rc);
        }
    }

    X509_free(cert);
    EVP_PKEY_free(pk);
    conf.redis = NULL;
    pki_redis_free(r);
}


int
main(void)
{
    char                 *csr, *big, ns[128];
    X509                 *root, *sub, *x;
    size_t                n;
    EVP_PKEY             *rootpk, *subpk, *pk, *otherpk;
    X509_NAME            *name;
    pki_ca_t             *rootca, *subca, *otherca, *sameca;
    pki_key_t            *rootkey, *subkey, *otherkey;
    const char           *sock;
    pki_redis_t          *dead;
    pki_result_t          res;
    pki_request_t         req;
    unsigned char        *der;
    pki_est_resp_t        resp;
    pki_template_t       *troot, *tsub, *tdev, *tnokg, *tmpls[4];
    STACK_OF(X509)       *certs;
    pki_redis_conf_t      rconf;
    const unsigned char  *p;
    STACK_OF(ASN1_TYPE)  *attrs;

    static const char *const root_lines[] = {
        "subject CN copy", "basic_constraints ca:true", "validity 3650d", NULL
    };
    static const char *const sub_lines[] = {
        "subject CN copy", "basic_constraints ca:true pathlen:0",
        "validity 365d", NULL
    };
    static const char *const dev_lines[] = {
        "key_types ec:P-256 ec:P-384 rsa:2048-4096 ed25519 ed448",
        "subject CN required", "san dns copy", "validity 7d",
        "server_keygen on", "extended_key_usage clientAuth", NULL
    };
    static const char *const nokg_lines[] = {
        "key_types ec:P-256", "subject CN required", "san dns required", NULL
    };

    pki_init();

    snprintf(dir, sizeof(dir), "/tmp/h2est.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        skip_all("mkdtemp failed");
    }

    troot = fx_template("root", root_lines);
    tsub = fx_template("sub", sub_lines);
    tdev = fx_template("device", dev_lines);
    tnokg = fx_template("nokg", nokg_lines);
    other_tmpl = tnokg;

    rootpk = fx_keygen("EC:P-256");
    subpk = fx_keygen("EC:P-256");
    otherpk = fx_keygen("EC:P-256");
    rootkey = fx_key_file(dir, "root.key", rootpk);
    subkey = fx_key_file(dir, "sub.key", subpk);
    otherkey = fx_key_file(dir, "other.key", otherpk);

    name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *) "EST Root", -1, -1, 0);
    pki_result_init(&res);
    if (pki_selfsign(rootkey, troot, name, &root, &res) != PKI_OK) {
        diag("selfsign: %s %s", res.detail, res.log);
        return done_testing();
    }
    X509_NAME_free(name);
    fx_write_cert(dir, "root.pem", root);

    tmpls[0] = tsub;
    tmpls[1] = NULL;
    rootca = make_ca("root", "root.pem", NULL, rootkey, tmpls);

    memset(&req, 0, sizeof(req));
    req.subject = X509_NAME_new();
    X509_NAME_add_entry_by_txt(req.subject, "CN", MBSTRING_UTF8,
                               (const unsigned char *) "EST Sub", -1, -1, 0);
    req.pubkey = subpk;
    if (pki_issue(rootca, tsub, NULL, &req, NULL, &sub, &res) != PKI_OK) {
        diag("issue sub: %s %s", res.detail, res.log);
        return done_testing();
    }
    X509_NAME_free(req.subject);
    fx_write_cert(dir, "sub.pem", sub);

    tmpls[0] = tdev;
    tmpls[1] = tnokg;
    tmpls[2] = NULL;
    subca = make_ca("sub", "sub.pem", "root.pem", subkey, tmpls);

    /* the same CA declared again under another name (a CA certified
     * anew: one subject and key), linked as one issuer */
    sameca = make_ca("sub-new", "sub.pem", "root.pem", subkey, tmpls);
    {
        int  linked;

        pki_result_init(&res);
        ok(pki_ca_link_same(subca, sameca, &linked, &res) == PKI_OK
           && linked, "CAs sub and sub-new linked %s", res.detail);
    }

    /* A second, unrelated CA for foreign client certificates. */
    name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *) "Other", -1, -1, 0);
    pki_selfsign(otherkey, troot, name, &x, &res);
    X509_NAME_free(name);
    fx_write_cert(dir, "other.pem", x);
    X509_free(x);
    tmpls[0] = tdev;
    tmpls[1] = NULL;
    otherca = make_ca("other", "other.pem", NULL, otherkey, tmpls);
    {
        pki_request_t  fr;

        memset(&fr, 0, sizeof(fr));
        fr.subject = X509_NAME_new();
        X509_NAME_add_entry_by_txt(fr.subject, "CN", MBSTRING_UTF8,
                                   (const unsigned char *) "dev1", -1, -1, 0);
        pk = fx_keygen("EC:P-256");
        fr.pubkey = pk;
        pki_issue(otherca, tdev, NULL, &fr, NULL, &x, &res);
        X509_NAME_free(fr.subject);
        EVP_PKEY_free(pk);
    }

    memset(&conf, 0, sizeof(conf));
    conf.ca = subca;
    conf.tmpl = tdev;

    /* Operation names. */
    ok(pki_est_op("cacerts", 7) == PKI_EST_CACERTS
       && pki_est_op("simpleenroll", 12) == PKI_EST_SIMPLEENROLL
       && pki_est_op("simplereenroll", 14) == PKI_EST_SIMPLEREENROLL
       && pki_est_op("csrattrs", 8) == PKI_EST_CSRATTRS
       && pki_est_op("serverkeygen", 12) == PKI_EST_SERVERKEYGEN,
       "pki_est_op maps the five operations");
    ok(pki_est_op("simpleenrollx", 13) == PKI_EST_UNKNOWN
       && pki_est_op("simpleenrollx", 12) == PKI_EST_SIMPLEENROLL
       && pki_est_op("cacert", 6) == PKI_EST_UNKNOWN
       && pki_est_op(NULL, 0) == PKI_EST_UNKNOWN, "pki_est_op unknown names");
    ok(pki_est_op_blocking(PKI_EST_SIMPLEENROLL)
       && pki_est_op_blocking(PKI_EST_SIMPLEREENROLL)
       && pki_est_op_blocking(PKI_EST_SERVERKEYGEN)
       && !pki_est_op_blocking(PKI_EST_CACERTS)
       && !pki_est_op_blocking(PKI_EST_CSRATTRS), "pki_est_op_blocking");

    est(PKI_EST_UNKNOWN, "GET", NULL, NULL, NULL, NULL, &resp);
    check_error("unknown operation", &resp, 404, NULL);

    /* cacerts. */
    est(PKI_EST_CACERTS, "GET", NULL, NULL, NULL, NULL, &resp);
    ok(resp.http_status == 200 && resp.cte_base64 && resp.content_type
       && strcmp(resp.content_type, "application/pkcs7-mime") == 0,
       "cacerts: 200 application/pkcs7-mime base64");
    certs = certs_from_b64(resp.body, resp.body_len);
    ok(certs && sk_X509_num(certs) == 2
       && X509_cmp(sk_X509_value(certs, 0), sub) == 0
       && X509_cmp(sk_X509_value(certs, 1), root) == 0,
       "  certs-only PKCS#7: CA then chain");
    ok(resp.body_len > 65 && resp.body[64] == '\n', "  64-column lines");
    sk_X509_pop_free(certs, X509_free);
    pki_est_resp_free(&resp);

    /* HEAD: the GET answer (the server sends it without the body) */
    est(PKI_EST_CACERTS, "HEAD", NULL, NULL, NULL, NULL, &resp);
    ok(resp.http_status == 200 && resp.cte_base64 && resp.body_len > 0
       && resp.allow == NULL, "cacerts HEAD: 200 as GET");
    pki_est_resp_free(&resp);

    est(PKI_EST_CACERTS, "POST", NULL, NULL, NULL, NULL, &resp);
    ok(resp.allow && strcmp(resp.allow, "GET, HEAD") == 0,
       "cacerts POST: Allow: GET, HEAD");
    check_error("cacerts POST", &resp, 405, NULL);

    /* csrattrs. */
    conf.pop_linking = 1;
    est(PKI_EST_CSRATTRS, "GET", NULL, NULL, NULL, NULL, &resp);
    conf.pop_linking = 0;
    ok(resp.http_status == 200 && resp.cte_base64 && resp.content_type
       && strcmp(resp.content_type, "application/csrattrs") == 0,
       "csrattrs: 200 application/csrattrs base64");
    pki_base64_decode(resp.body, resp.body_len, &der, &n, &res);
    p = der;
    attrs = d2i_ASN1_SEQUENCE_ANY(NULL, &p, (long) n);
    ok(attrs && (size_t) (p - der) == n, "  one DER SEQUENCE");
    if (attrs) {
        int  i, cp = 0, ec = 0, rsa = 0, ed = 0, ed448 = 0, sig = 0, cn = 0;

        for (i = 0; i < sk_ASN1_TYPE_num(attrs); i++) {
            ASN1_TYPE  *at = sk_ASN1_TYPE_value(attrs, i);

            if (at->type == V_ASN1_OBJECT) {
                int nid = OBJ_obj2nid(at->value.object);
                cp |= nid == NID_pkcs9_challengePassword;
                rsa |= nid == NID_rsaEncryption;
                ed |= nid == NID_ED25519;
                ed448 |= nid == NID_ED448;
                sig |= nid == NID_ecdsa_with_SHA256;
                cn |= nid == NID_commonName;
            } else if (at->type == V_ASN1_SEQUENCE) {
                ec |= memmem(at->value.sequence->data,
                             (size_t) at->value.sequence->length,
                             "\x06\x07\x2a\x86\x48\xce\x3d\x02\x01", 9)
                      != NULL;
            }
        }
        ok(cp && ec && rsa && ed && ed448 && sig && cn, "  challengePassword"
           " %d, EC %d, RSA %d, Ed25519 %d, Ed448 %d, ecdsa-with-SHA256 %d, "
           "CN %d", cp, ec, rsa, ed, ed448, sig, cn);
        sk_ASN1_TYPE_pop_free(attrs, ASN1_TYPE_free);
    }
    free(der);
    pki_est_resp_free(&resp);

    conf.tmpl = tnokg;
    est(PKI_EST_CSRATTRS, "GET", NULL, NULL, NULL, NULL, &resp);
    ok(resp.http_status == 200 && resp.body_len > 0,
       "csrattrs with a required SAN");
    pki_base64_decode(resp.body, resp.body_len, &der, &n, &res);
    ok(memmem(der, n, "\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x09\x0e", 11)
       && memmem(der, n, "\x06\x03\x55\x1d\x11", 5), "  extensionRequest "
       "hint with subjectAltName");
    free(der);
    pki_est_resp_free(&resp);

    /* the CSR signature algorithm advertised is ECDSA with the hash of
     * each allowed curve's strength (RFC 5480 4; RFC 9908 4): P-384 with
     * SHA-384, never SHA-256 alone; P-256 and P-384 both */
    {
        int              i, k, s256, s384, s512;
        pki_template_t  *tt[3];

        static const char *const p384_lines[] = {
            "key_types ec:P-384", "subject CN required", NULL
        };
        static const char *const p521_lines[] = {
            "key_types ec:P-521 ec:P-384", "subject CN required", NULL
        };
        static const int  want[3][3] = {
            { 0, 1, 0 }, { 0, 1, 1 }, { 1, 1, 0 }
        };

        tt[0] = fx_template("p384", p384_lines);
        tt[1] = fx_template("p521", p521_lines);
        tt[2] = tdev;

        for (k = 0; k < 3; k++) {
            conf.tmpl = tt[k];
            est(PKI_EST_CSRATTRS, "GET", NULL, NULL, NULL, NULL, &resp);
            der = NULL;
            n = 0;
            if (resp.http_status == 200) {
                pki_base64_decode(resp.body, resp.body_len, &der, &n, &res);
            }
            p = der;
            attrs = der ? d2i_ASN1_SEQUENCE_ANY(NULL, &p, (long) n) : NULL;
            s256 = s384 = s512 = 0;
            for (i = 0; attrs && i < sk_ASN1_TYPE_num(attrs); i++) {
                ASN1_TYPE  *at = sk_ASN1_TYPE_value(attrs, i);

                if (at->type == V_ASN1_OBJECT) {
                    int  nid = OBJ_obj2nid(at->value.object);

                    s256 += nid == NID_ecdsa_with_SHA256;
                    s384 += nid == NID_ecdsa_with_SHA384;
                    s512 += nid == NID_ecdsa_with_SHA512;
                }
            }
            ok(attrs != NULL && s256 == want[k][0] && s384 == want[k][1]
               && s512 == want[k][2], "csrattrs of %s: ecdsa-with-SHA256 "
               "%d, -SHA384 %d, -SHA512 %d", k == 0 ? "P-384"
               : k == 1 ? "P-521 and P-384" : "P-256 and P-384", s256, s384,
               s512);
            sk_ASN1_TYPE_pop_free(attrs, ASN1_TYPE_free);
            free(der);
            pki_est_resp_free(&resp);
        }

        pki_template_free(tt[0]);
        pki_template_free(tt[1]);
    }

    conf.tmpl = tdev;

    est(PKI_EST_CSRATTRS, "HEAD", NULL, NULL, NULL, NULL, &resp);
    ok(resp.http_status == 200 && resp.content_type
       && strcmp(resp.content_type, "application/csrattrs") == 0,
       "csrattrs HEAD: 200 as GET");
    pki_est_resp_free(&resp);

    est(PKI_EST_CSRATTRS, "PUT", NULL, NULL, NULL, NULL, &resp);
    ok(resp.allow && strcmp(resp.allow, "GET, HEAD") == 0,
       "csrattrs PUT: Allow: GET, HEAD");
    check_error("csrattrs PUT", &resp, 405, NULL);

    /* Enrollment errors (no state needed: all refused before issuing). */
    pk = fx_keygen("EC:P-256");
    csr = make_csr_b64(pk, "dev1", "dev1.example.com", NULL);

    est(PKI_EST_SIMPLEENROLL, "GET", NULL, NULL, "alice", NULL, &resp);
    ok(resp.allow && strcmp(resp.allow, "POST") == 0,
       "simpleenroll GET: Allow: POST");
    check_error("simpleenroll GET", &resp, 405, NULL);

    est(PKI_EST_SERVERKEYGEN, "HEAD", NULL, NULL, "alice", NULL, &resp);
    ok(resp.allow && strcmp(resp.allow, "POST") == 0,
       "serverkeygen HEAD: Allow: POST");
    check_error("serverkeygen HEAD", &resp, 405, NULL);

    est(PKI_EST_SIMPLEENROLL, "POST", "text/plain", csr, "alice", NULL,
        &resp);
    ok(resp.allow == NULL, "no Allow but on a 405");
    pki_est_resp_free(&resp);

    est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", csr, NULL, NULL,
        &resp);
    check_error("simpleenroll without identity", &resp, 401, NULL);

    est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", csr, "", NULL,
        &resp);
    check_error("simpleenroll with an empty user", &resp, 401, NULL);

    est(PKI_EST_SERVERKEYGEN, "POST", "application/pkcs10", csr, NULL, NULL,
        &resp);
    check_error("serverkeygen without identity", &resp, 401, NULL);

    est(PKI_EST_SIMPLEENROLL, "POST", "text/plain", csr, "alice", NULL,
        &resp);
    check_error("simpleenroll text/plain", &resp, 415, "application/pkcs10");

    est(PKI_EST_SIMPLEENROLL, "POST", NULL, csr, "alice", NULL, &resp);
    check_error("simpleenroll without Content-Type", &resp, 415, NULL);

    est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10x", csr, "alice",
        NULL, &resp);
    check_error("simpleenroll application/pkcs10x", &resp, 415, NULL);

    /* Case and parameters are fine; Redis is not configured here: 500. */
    est(PKI_EST_SIMPLEENROLL, "POST", "Application/PKCS10; charset=x", csr,
        "alice", NULL, &resp);
    check_error("simpleenroll without a store", &resp, 500,
                "internal error");

    conf.max_body = 100;
    est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", csr, "alice",
        NULL, &resp);
    check_error("simpleenroll over max_body", &resp, 413, NULL);
    conf.max_body = 0;

    big = calloc(1, 70000);
    memset(big, 'A', 69999);
    est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", big, "alice",
        NULL, &resp);
    check_error("simpleenroll over 64 KiB", &resp, 413, NULL);
    free(big);

    est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", "!!not*base64",
        "alice", NULL, &resp);
    check_error("simpleenroll bad base64", &resp, 400,
                "body is not valid base64");

    est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", "", "alice",
        NULL, &resp);
    check_error("simpleenroll empty body", &resp, 400, NULL);

    est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", "Z2FyYmFnZQ==",
        "alice", NULL, &resp);
    check_error("simpleenroll garbage DER", &resp, 400, "CSR");

    {
        /* A CSR with a broken signature. */
        char           *b;
        size_t          dl;
        unsigned char  *d;

        pki_base64_decode((unsigned char *) csr, strlen(csr), &d, &dl, &res);
        d[dl - 2] ^= 0x5a;
        b = pki_base64_encode(d, dl, 64, NULL);
        est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", b, "alice",
            NULL, &resp);
        ok(resp.http_status == 400, "simpleenroll bad CSR signature: %d %s",
           resp.http_status, resp.res.detail);
        pki_est_resp_free(&resp);
        free(b);
        free(d);
    }

    {
        EVP_PKEY  *weak = fx_keygen("RSA:1024");
        char      *wcsr = make_csr_b64(weak, "dev1", NULL, NULL);

        est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", wcsr, "alice",
            NULL, &resp);
        check_error("simpleenroll RSA 1024", &resp, 400,
                    "key type RSA 1024 is not allowed by template \"device\"");
        free(wcsr);
        EVP_PKEY_free(weak);

        wcsr = make_csr_b64(pk, "dev1", "bad_name", NULL);
        est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", wcsr, "alice",
            NULL, &resp);
        check_error("simpleenroll bad DNS SAN", &resp, 400, "invalid DNS");
        free(wcsr);
    }

    conf.tmpl = tnokg;
    est(PKI_EST_SERVERKEYGEN, "POST", "application/pkcs10", csr, "alice",
        NULL, &resp);
    check_error("serverkeygen refused by template", &resp, 403,
                "server-side key generation is not allowed by template "
                "\"nokg\"");
    conf.tmpl = tdev;

    {
        /* serverkeygen asking for the key encrypted (RFC 7030 4.4.1.1,
         * 4.4.1.2): refused right after the CSR is read (no Redis here:
         * a request that went further would get a 500) */
        int          i;
        char        *kcsr;
        const char  *oids[] = { "1.2.840.113549.1.9.16.2.37",
                                "1.2.840.113549.1.9.16.2.54" };

        for (i = 0; i < 2; i++) {
            kcsr = make_csr_attr_b64(pk, "dev1", "dev1.example.com", NULL,
                                     oids[i]);
            est(PKI_EST_SERVERKEYGEN, "POST", "application/pkcs10", kcsr,
                "alice", NULL, &resp);
            check_error(oids[i], &resp, 501, "is not supported");

            /* simpleenroll has no key to protect: the attribute is
             * ignored there (refused here for want of Redis only) */
            est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", kcsr,
                "alice", NULL, &resp);
            check_error("  simpleenroll with it", &resp, 500, NULL);
            free(kcsr);
        }
    }

    est(PKI_EST_SIMPLEREENROLL, "POST", "application/pkcs10", csr, "alice",
        NULL, &resp);
    check_error("simplereenroll without a client certificate", &resp, 403,
                NULL);

    est(PKI_EST_SIMPLEREENROLL, "POST", "application/pkcs10", csr, NULL, x,
        &resp);
    check_error("simplereenroll with a foreign certificate", &resp, 403,
                "not issued by this CA");

    /* Dead Redis: 503 with Retry-After, no certificate. */
    snprintf(ns, sizeof(ns), "%s/dead.sock", dir);
    memset(&rconf, 0, sizeof(rconf));
    rconf.unix_path = ns;
    rconf.timeout_ms = 200;
    dead = pki_redis_new(&rconf, &res);
    conf.redis = dead;

    est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", csr, "alice",
        NULL, &resp);
    check_error("simpleenroll with Redis down", &resp, 503, NULL);

    est(PKI_EST_SERVERKEYGEN, "POST", "application/pkcs10", csr, "alice",
        NULL, &resp);
    check_error("serverkeygen with Redis down", &resp, 503, NULL);

    {
        /* a certificate of this CA, issued offline: status lookup fails */
        pki_request_t  cr;
        X509          *mine;

        memset(&cr, 0, sizeof(cr));
        cr.subject = X509_NAME_new();
        X509_NAME_add_entry_by_txt(cr.subject, "CN", MBSTRING_UTF8,
                                   (const unsigned char *) "dev1", -1, -1, 0);
        cr.pubkey = pk;
        pki_issue(subca, tdev, NULL, &cr, NULL, &mine, &res);
        X509_NAME_free(cr.subject);

        est(PKI_EST_SIMPLEREENROLL, "POST", "application/pkcs10", csr, NULL,
            mine, &resp);
        check_error("simplereenroll with Redis down", &resp, 503, NULL);

        est(PKI_EST_SIMPLEENROLL, "POST", "application/pkcs10", csr, NULL,
            mine, &resp);
        check_error("simpleenroll by certificate with Redis down", &resp, 503,
                    NULL);
        X509_free(mine);
    }

    conf.redis = NULL;
    pki_redis_free(dead);
    free(csr);
    EVP_PKEY_free(pk);

    sock = getenv("PKI_TEST_REDIS_SOCK");
    if (sock && sock[0]) {
        test_success(otherca, sameca, sock, x);
    } else {
        diag("PKI_TEST_REDIS_SOCK not set: enrollment successes skipped");
    }

    X509_free(x);
    pki_ca_free(otherca);
    pki_ca_free(sameca);
    pki_ca_free(subca);
    pki_ca_free(rootca);
    X509_free(root);
    X509_free(sub);
    pki_key_free(rootkey);
    pki_key_free(subkey);
    pki_key_free(otherkey);
    EVP_PKEY_free(rootpk);
    EVP_PKEY_free(subpk);
    EVP_PKEY_free(otherpk);
    pki_template_free(troot);
    pki_template_free(tsub);
    pki_template_free(tdev);
    pki_template_free(tnokg);

    snprintf(ns, sizeof(ns), "rm -rf %s", dir);
    if (system(ns) != 0) {
        diag("cleanup failed");
    }

    return done_testing();
}
