/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * EST (RFC 7030) engine: one request in, one response out.  The server glue
 * authenticates (Basic, TLS client certificates), reads the body and sends
 * what this file returns; it holds no protocol logic.
 */

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pkcs7.h>
#include <openssl/rand.h>

#include "issue_int.h"


#define PKI_EST_MAX_BODY       65536
#define PKI_EST_RETRY_AFTER    10
#define PKI_EST_DER_MAX        4096
#define PKI_EST_CHALLENGE_MAX  255     /* UTF-8 octets of a BMPString or
                                          UniversalString challenge */

#define PKI_EST_CT_CERTS       "application/pkcs7-mime; smime-type=certs-only"
#define PKI_EST_CT_CACERTS     "application/pkcs7-mime"
#define PKI_EST_CT_CSRATTRS    "application/csrattrs"
#define PKI_EST_CT_TEXT        "text/plain"
#define PKI_EST_CT_PKCS8       "application/pkcs8"


typedef struct {
    unsigned char  buf[PKI_EST_DER_MAX];
    size_t         len;
    int            err;
} pki_der_t;


static void pki_est_cacerts(const pki_est_conf_t *conf,
    const pki_est_req_t *req, pki_est_resp_t *resp);
static int pki_est_curve_sig(int curve);
static void pki_est_csrattrs(const pki_est_conf_t *conf,
    const pki_est_req_t *req, pki_est_resp_t *resp);
static void pki_est_enroll(const pki_est_conf_t *conf,
    const pki_est_req_t *req, pki_est_resp_t *resp);
static void pki_est_error(pki_est_resp_t *resp, int http_status);


pki_est_op_t
pki_est_op(const char *name, size_t len)
{
    size_t  i;
    static const struct {
        const char    *name;
        pki_est_op_t   op;
    } ops[] = {
        { "cacerts", PKI_EST_CACERTS },
        { "simpleenroll", PKI_EST_SIMPLEENROLL },
        { "simplereenroll", PKI_EST_SIMPLEREENROLL },
        { "csrattrs", PKI_EST_CSRATTRS },
        { "serverkeygen", PKI_EST_SERVERKEYGEN },
    };

    if (name == NULL) {
        return PKI_EST_UNKNOWN;
    }

    for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        if (strlen(ops[i].name) == len && memcmp(ops[i].name, name, len) == 0)
        {
            return ops[i].op;
        }
    }

    return PKI_EST_UNKNOWN;
}


int
pki_est_op_blocking(pki_est_op_t op)
{
    return op == PKI_EST_SIMPLEENROLL || op == PKI_EST_SIMPLEREENROLL
           || op == PKI_EST_SERVERKEYGEN;
}


void
pki_est_resp_free(pki_est_resp_t *resp)
{
    if (resp == NULL) {
        return;
    }

    if (resp->body) {
        /* serverkeygen bodies hold a private key */
        OPENSSL_cleanse(resp->body, resp->body_len);
        free(resp->body);
    }

    resp->body = NULL;
    resp->body_len = 0;
}


void
pki_est_handle(const pki_est_conf_t *conf, const pki_est_req_t *req,
    pki_est_resp_t *resp)
{
    if (resp == NULL) {
        return;
    }

    memset(resp, 0, sizeof(pki_est_resp_t));
    pki_result_init(&resp->res);

    if (conf == NULL || conf->ca == NULL || conf->tmpl == NULL || req == NULL)
    {
        pki_fail(&resp->res, PKI_INTERNAL, "EST is not configured");
        pki_est_error(resp, 0);
        return;
    }

    switch (req->op) {

    case PKI_EST_CACERTS:
        pki_est_cacerts(conf, req, resp);
        break;

    case PKI_EST_CSRATTRS:
        pki_est_csrattrs(conf, req, resp);
        break;

    case PKI_EST_SIMPLEENROLL:
    case PKI_EST_SIMPLEREENROLL:
    case PKI_EST_SERVERKEYGEN:
        pki_est_enroll(conf, req, resp);
        break;

    default:
        pki_fail(&resp->res, PKI_NOT_FOUND, "unknown EST operation");
        pki_est_error(resp, 0);
    }
}


/* ---- responses -------------------------------------------------------- */

static int
pki_est_http_status(pki_status_t st)
{
    switch (st) {
    case PKI_OK:
        return 200;
    case PKI_MALFORMED:
    case PKI_BAD_SIGNATURE:
    case PKI_POLICY:
        return 400;
    case PKI_UNAUTHORIZED:
        return 401;
    case PKI_FORBIDDEN:
        return 403;
    case PKI_NOT_FOUND:
        return 404;
    case PKI_TOO_LARGE:
        return 413;
    case PKI_UNSUPPORTED:
        return 415;
    case PKI_CONFLICT:
    case PKI_UNAVAILABLE:
        return 503;
    default:
        return 500;
    }
}


/* resp->res holds the failure; http_status 0 maps it. */
static void
pki_est_error(pki_est_resp_t *resp, int http_status)
{
    size_t  len;

    pki_est_resp_free(resp);

    if (resp->res.status == PKI_OK) {
        pki_fail(&resp->res, PKI_INTERNAL, "internal error");
    }

    resp->http_status = http_status ? http_status
                                    : pki_est_http_status(resp->res.status);
    resp->cte_base64 = 0;
    resp->content_type = NULL;

    if (resp->http_status == 401) {
        resp->www_authenticate = "Basic realm=\"EST\"";
        return;
    }

    if (resp->http_status == 503) {
        resp->retry_after = PKI_EST_RETRY_AFTER;
    }

    if (resp->http_status == 500) {
        /* the detail of an internal failure is for the log only */
        pki_log(&resp->res, "%s(%s)", resp->res.log[0] ? "; " : "",
                resp->res.detail);
        snprintf(resp->res.detail, sizeof(resp->res.detail),
                 "internal error");
    }

    len = strlen(resp->res.detail);
    resp->body = malloc(len + 1);
    if (resp->body == NULL) {
        return;
    }

    memcpy(resp->body, resp->res.detail, len);
    resp->body[len] = '\n';
    resp->body_len = len + 1;
    resp->content_type = PKI_EST_CT_TEXT;
}


static int
pki_est_body_base64(pki_est_resp_t *resp, const unsigned char *der,
    size_t len, const char *content_type)
{
    char    *b64;
    size_t   blen;

    b64 = pki_base64_encode(der, len, 64, &blen);
    if (b64 == NULL) {
        pki_fail(&resp->res, PKI_INTERNAL, "out of memory");
        return 0;
    }

    resp->http_status = 200;
    resp->content_type = content_type;
    resp->cte_base64 = 1;
    resp->body = (unsigned char *) b64;
    resp->body_len = blen;

    return 1;
}


/* A degenerate (certs-only) PKCS#7 SignedData, DER. */
static int
pki_certs_only(X509 *first, STACK_OF(X509) *more, unsigned char **der,
    size_t *len)
{
    int      i, j, n, dup;
    X509    *x;
    PKCS7   *p7;

    *der = NULL;

    p7 = PKCS7_new();
    if (p7 == NULL || !PKCS7_set_type(p7, NID_pkcs7_signed)
        || !PKCS7_content_new(p7, NID_pkcs7_data)
        || !PKCS7_set_detached(p7, 1))
    {
        PKCS7_free(p7);
        return 0;
    }

    if (first && !PKCS7_add_certificate(p7, first)) {
        PKCS7_free(p7);
        return 0;
    }

    for (i = 0; i < sk_X509_num(more); i++) {
        x = sk_X509_value(more, i);

        dup = first && X509_cmp(first, x) == 0;
        for (j = 0; j < i && !dup; j++) {
            dup = X509_cmp(sk_X509_value(more, j), x) == 0;
        }

        if (!dup && !PKCS7_add_certificate(p7, x)) {
            PKCS7_free(p7);
            return 0;
        }
    }

    n = i2d_PKCS7(p7, der);
    PKCS7_free(p7);

    if (n <= 0) {
        *der = NULL;
        return 0;
    }

    *len = (size_t) n;

    return 1;
}


static int
pki_est_method(const pki_est_req_t *req, const char *want)
{
    return req->method && strcmp(req->method, want) == 0;
}


/* GET, or HEAD: the same answer, which the server sends without its body */
static int
pki_est_get(const pki_est_req_t *req)
{
    return pki_est_method(req, "GET") || pki_est_method(req, "HEAD");
}


static void
pki_est_not_allowed(pki_est_resp_t *resp, const char *allow)
{
    pki_fail(&resp->res, PKI_UNSUPPORTED, "method not allowed");
    pki_est_error(resp, 405);
    resp->allow = allow;
}


/* ---- cacerts ----------------------------------------------------------- */

static void
pki_est_cacerts(const pki_est_conf_t *conf, const pki_est_req_t *req,
    pki_est_resp_t *resp)
{
    size_t          len;
    unsigned char  *der;

    if (!pki_est_get(req)) {
        pki_est_not_allowed(resp, "GET, HEAD");
        return;
    }

    if (pki_ca_cert(conf->ca) == NULL
        || !pki_certs_only(pki_ca_cert(conf->ca), pki_ca_chain(conf->ca),
                           &der, &len))
    {
        pki_fail(&resp->res, PKI_INTERNAL, "cannot encode the CA "
                 "certificates");
        pki_est_error(resp, 0);
        return;
    }

    if (!pki_est_body_base64(resp, der, len, PKI_EST_CT_CACERTS)) {
        pki_est_error(resp, 0);
    }

    OPENSSL_free(der);
}


/* ---- csrattrs ---------------------------------------------------------- */

static void
pki_der_put(pki_der_t *d, const unsigned char *p, size_t n)
{
    if (d->err || n > sizeof(d->buf) - d->len) {
        d->err = 1;
        return;
    }

    memcpy(d->buf + d->len, p, n);
    d->len += n;
}


static void
pki_der_wrap(pki_der_t *d, int tag, const pki_der_t *inner)
{
    unsigned char  hdr[4];
    size_t         n;

    if (inner->err || inner->len > 0xffff) {
        d->err = 1;
        return;
    }

    hdr[0] = (unsigned char) tag;
    if (inner->len < 0x80) {
        hdr[1] = (unsigned char) inner->len;
        n = 2;
    } else if (inner->len < 0x100) {
        hdr[1] = 0x81;
        hdr[2] = (unsigned char) inner->len;
        n = 3;
    } else {
        hdr[1] = 0x82;
        hdr[2] = (unsigned char) (inner->len >> 8);
        hdr[3] = (unsigned char) inner->len;
        n = 4;
    }

    pki_der_put(d, hdr, n);
    pki_der_put(d, inner->buf, inner->len);
}


static void
pki_der_obj(pki_der_t *d, const ASN1_OBJECT *obj)
{
    int             n;
    unsigned char   tmp[256], *p;

    n = i2d_ASN1_OBJECT(obj, NULL);
    if (n <= 0 || (size_t) n > sizeof(tmp)) {
        d->err = 1;
        return;
    }

    p = tmp;
    i2d_ASN1_OBJECT(obj, &p);
    pki_der_put(d, tmp, (size_t) n);
}


static void
pki_der_nid(pki_der_t *d, int nid)
{
    pki_der_obj(d, OBJ_nid2obj(nid));
}


/* Attribute ::= SEQUENCE { type OID, values SET OF OID } */
static void
pki_der_attr(pki_der_t *d, int type, const int *nids, int n)
{
    int         i;
    pki_der_t  *seq, *set;

    seq = calloc(1, sizeof(pki_der_t));
    set = calloc(1, sizeof(pki_der_t));

    if (seq == NULL || set == NULL) {
        d->err = 1;

    } else {
        for (i = 0; i < n; i++) {
            pki_der_nid(set, nids[i]);
        }

        pki_der_nid(seq, type);
        pki_der_wrap(seq, V_ASN1_SET | V_ASN1_CONSTRUCTED, set);
        pki_der_wrap(d, V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED, seq);
    }

    free(seq);
    free(set);
}


/* The ECDSA signature algorithm for a curve: its hash matched to the
 * curve's strength (RFC 5480 4): P-384 SHA-384, P-521 SHA-512, any
 * other SHA-256. */
static int
pki_est_curve_sig(int curve)
{
    switch (curve) {
    case NID_secp384r1:
        return NID_ecdsa_with_SHA384;
    case NID_secp521r1:
        return NID_ecdsa_with_SHA512;
    default:
        return NID_ecdsa_with_SHA256;
    }
}


static void
pki_est_csrattrs(const pki_est_conf_t *conf, const pki_est_req_t *req,
    pki_est_resp_t *resp)
{
    int                    i, j, n, ncurves, rsa, ed25519, ed448, dup;
    int                    curves[PKI_MAX_KEY_TYPES], san_required;
    static const int       sigs[3] = { NID_ecdsa_with_SHA256,
                                       NID_ecdsa_with_SHA384,
                                       NID_ecdsa_with_SHA512 };
    pki_der_t             *items, *out;
    const pki_template_t  *t;
    const pki_key_type_t  *kt;

    if (!pki_est_get(req)) {
        pki_est_not_allowed(resp, "GET, HEAD");
        return;
    }

    t = conf->tmpl;

    items = calloc(1, sizeof(pki_der_t));
    out = calloc(1, sizeof(pki_der_t));
    if (items == NULL || out == NULL) {
        free(items);
        free(out);
        pki_fail(&resp->res, PKI_INTERNAL, "out of memory");
        pki_est_error(resp, 0);
        return;
    }

    if (conf->pop_linking) {
        pki_der_nid(items, NID_pkcs9_challengePassword);
    }

    kt = pki_int_key_types(t, &n, NULL);
    ncurves = 0;
    rsa = 0;
    ed25519 = 0;
    ed448 = 0;

    for (i = 0; i < n; i++) {
        switch (kt[i].type) {
        case PKI_KT_EC:
            dup = 0;
            for (j = 0; j < ncurves; j++) {
                dup |= curves[j] == kt[i].nid;
            }
            if (!dup) {
                curves[ncurves++] = kt[i].nid;
            }
            break;
        case PKI_KT_RSA:
            rsa = 1;
            break;
        case PKI_KT_ED25519:
            ed25519 = 1;
            break;
        case PKI_KT_ED448:
            ed448 = 1;
            break;
        }
    }

    if (ncurves) {
        pki_der_attr(items, NID_X9_62_id_ecPublicKey, curves, ncurves);
    }

    if (rsa) {
        pki_der_nid(items, NID_rsaEncryption);
    }

    if (ed25519) {
        pki_der_nid(items, NID_ED25519);
    }

    if (ed448) {
        pki_der_nid(items, NID_ED448);
    }

    /* the CSR's signature algorithm: ECDSA with the hash that matches
     * each allowed curve's strength (RFC 5480 4, RFC 9908 4), as the CA
     * signs with them; ecdsa-with-SHA256 alone told a client held to
     * P-384 to sign with a hash weaker than its key */
    for (i = 0; i < 3; i++) {
        for (j = 0; j < ncurves; j++) {
            if (pki_est_curve_sig(curves[j]) == sigs[i]) {
                pki_der_nid(items, sigs[i]);
                break;
            }
        }
    }

    for (i = 0; i < t->nsubject; i++) {
        if (t->subject[i].rule == PKI_RULE_REQUIRED) {
            pki_der_obj(items, t->subject[i].obj);
        }
    }

    san_required = 0;
    for (i = 0; i < PKI_SAN_NTYPES; i++) {
        san_required |= t->san[i] == PKI_RULE_REQUIRED;
    }

    if (san_required) {
        j = NID_subject_alt_name;
        pki_der_attr(items, NID_ext_req, &j, 1);
    }

    if (items->err) {
        free(items);
        free(out);
        pki_fail(&resp->res, PKI_INTERNAL, "cannot encode the CSR "
                 "attributes");
        pki_est_error(resp, 0);
        return;
    }

    if (items->len == 0) {
        free(items);
        free(out);
        resp->http_status = 204;
        return;
    }

    pki_der_wrap(out, V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED, items);

    if (out->err
        || !pki_est_body_base64(resp, out->buf, out->len, PKI_EST_CT_CSRATTRS))
    {
        pki_fail(&resp->res, PKI_INTERNAL, "cannot encode the CSR "
                 "attributes");
        pki_est_error(resp, 0);
    }

    free(items);
    free(out);
}


/* ---- enrollment ---------------------------------------------------------- */

/* The client certificate: issued by CA ca (the label's, or for a second
 * factor any of the server's) under this template (under any template
 * of the CA when any_template), current, recorded as good. */
static pki_status_t
pki_est_client_cert(const pki_est_conf_t *conf, const pki_ca_t *ca,
    X509 *cert, int any_template, pki_result_t *res)
{
    pki_status_t       rc;
    pki_record_t       rec;
    pki_cert_status_t  st;

    if (!pki_ca_issued(ca, cert)) {
        return pki_fail(res, PKI_FORBIDDEN, "the client certificate was not "
                        "issued by this CA");
    }

    if (X509_cmp_time(X509_get0_notAfter(cert), NULL) <= 0
        || X509_cmp_time(X509_get0_notBefore(cert), NULL) >= 0)
    {
        return pki_fail(res, PKI_FORBIDDEN, "the client certificate is not "
                        "valid now");
    }

    if (conf->redis == NULL) {
        return pki_fail(res, PKI_UNAVAILABLE, "no certificate store");
    }

    rc = pki_int_cert_record(conf->redis, ca, cert, &rec, res);

    if (rc == PKI_NOT_FOUND) {
        /* the log keeps why: no record, or a record of that serial that
         * holds another certificate (a CA key signing elsewhere) */
        pki_log(res, "%s%s", res->log[0] ? "; " : "", res->detail);
        return pki_fail(res, PKI_FORBIDDEN, "the client certificate is "
                        "unknown to this CA");
    }

    if (rc != PKI_OK) {
        /* the store down (503) or a record it cannot read (500, the
         * detail logged): not the client's fault */
        return rc;
    }

    /* a due plan is a revocation, carried out by worker 0 or not */
    (void) pki_record_at(&rec, time(NULL));
    st = rec.status;

    /* A certificate stays in its profile: one issued under another
     * template (another label of the same CA) neither renews into this
     * one nor authenticates an enrollment under it (a device certificate
     * would otherwise get server certificates for any name). */
    if (st == PKI_CERT_GOOD && !any_template
        && strcmp(rec.template_name, pki_template_name(conf->tmpl)) != 0)
    {
        rc = pki_fail(res, PKI_FORBIDDEN, "the client certificate was issued "
                      "under template \"%s\", not \"%s\"",
                      rec.template_name, pki_template_name(conf->tmpl));
        pki_record_clear(&rec);
        return rc;
    }

    pki_record_clear(&rec);

    if (st != PKI_CERT_GOOD) {
        return pki_fail(res, PKI_FORBIDDEN, "the client certificate is %s",
                        st == PKI_CERT_REVOKED ? "revoked" : "not active");
    }

    return PKI_OK;
}


/* The CA of the server that issued cert: the label's first, else the
 * first of conf->cas; NULL when none did. */
static const pki_ca_t *
pki_est_cert_ca(const pki_est_conf_t *conf, X509 *cert)
{
    size_t  i;

    if (pki_ca_issued(conf->ca, cert)) {
        return conf->ca;
    }

    for (i = 0; conf->cas != NULL && i < conf->ncas; i++) {
        if (conf->cas[i] != NULL && pki_ca_issued(conf->cas[i], cert)) {
            return conf->cas[i];
        }
    }

    return NULL;
}


static int
pki_est_is_pkcs10(const char *ct)
{
    return pki_media_type_is(ct, "application/pkcs10");
}


static pki_status_t
pki_est_pop(const pki_est_req_t *req, X509_REQ *csr, pki_result_t *res)
{
    int                  idx, ok;
    char                *want;
    size_t               wlen, pwlen;
    ASN1_TYPE           *at;
    unsigned char       *buf;
    X509_ATTRIBUTE      *attr;
    const unsigned char *pw;

    if (req->binding_no_ems) {
        /* the triple handshake (RFC 7627): without the Extended Master
         * Secret, a man in the middle can make the tls-unique of its
         * connection to the client equal to that of its connection to
         * this server, and forward the client's linked CSR as its own */
        return pki_fail(res, PKI_MALFORMED, "proof-of-possession linking "
                        "needs TLS 1.3, or TLS 1.2 with the Extended Master "
                        "Secret (RFC 7627): without it tls-unique does not "
                        "bind the CSR to this connection");
    }

    if (req->channel_binding == NULL || req->channel_binding_len == 0) {
        return pki_fail(res, PKI_MALFORMED, "proof-of-possession linking is "
                        "required but no TLS channel binding is available "
                        "(use TLS and a client that sends tls-unique)");
    }

    idx = X509_REQ_get_attr_by_NID(csr, NID_pkcs9_challengePassword, -1);
    if (idx < 0) {
        return pki_fail(res, PKI_MALFORMED, "the CSR has no challengePassword "
                        "with the TLS channel binding (proof-of-possession "
                        "linking)");
    }

    if (X509_REQ_get_attr_by_NID(csr, NID_pkcs9_challengePassword, idx) >= 0)
    {
        return pki_fail(res, PKI_MALFORMED, "the CSR has more than one "
                        "challengePassword");
    }

    attr = X509_REQ_get_attr(csr, idx);
    if (attr == NULL || X509_ATTRIBUTE_count(attr) != 1) {
        return pki_fail(res, PKI_MALFORMED, "malformed challengePassword");
    }

    /* a BMPString or UniversalString (RFC 2985 DirectoryString) is
     * compared as its UTF-8 */
    at = X509_ATTRIBUTE_get0_type(attr, 0);
    if (!pki_int_challenge_text(at, PKI_EST_CHALLENGE_MAX, &pw, &pwlen,
                                &buf))
    {
        return pki_fail(res, PKI_MALFORMED, "malformed challengePassword");
    }

    want = pki_base64_encode(req->channel_binding, req->channel_binding_len,
                             0, &wlen);
    if (want == NULL) {
        OPENSSL_clear_free(buf, pwlen);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    ok = pwlen == wlen && CRYPTO_memcmp(pw, want, wlen) == 0;
    free(want);
    OPENSSL_clear_free(buf, pwlen);

    if (!ok) {
        return pki_fail(res, PKI_POLICY, "the CSR's challengePassword does "
                        "not match the TLS channel binding");
    }

    return PKI_OK;
}


/*
 * A CSR that carries a challengePassword where this location does not
 * require linking: RFC 7030 3.5 has the server verify the tls-unique
 * information a CSR holds, required or not, so that a client's linked
 * CSR, forwarded by whoever it reached, is not issued under another
 * connection's credentials.  Only where the server gives a binding that
 * binds (the nginx glue: TLS 1.2 with the Extended Master Secret; under
 * TLS 1.3 only where linking is required, as clients disagree on what
 * they put there): plain HTTP behind a proxy has none, and an RA
 * (id-kp-cmcRA, RFC 7030 3.7) forwards CSRs linked to its own clients'
 * connections.
 */
static int
pki_est_linked(const pki_est_req_t *req, X509_REQ *csr)
{
    int                  i, ra;
    EXTENDED_KEY_USAGE  *eku;

    if (req->channel_binding == NULL || req->channel_binding_len == 0
        || req->binding_no_ems
        || X509_REQ_get_attr_by_NID(csr, NID_pkcs9_challengePassword, -1)
           < 0)
    {
        return 0;
    }

    if (req->client_cert == NULL) {
        return 1;
    }

    eku = X509_get_ext_d2i(req->client_cert, NID_ext_key_usage, NULL, NULL);
    ra = 0;

    for (i = 0; eku != NULL && i < sk_ASN1_OBJECT_num(eku); i++) {
        ra |= OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i)) == NID_cmcRA;
    }

    EXTENDED_KEY_USAGE_free(eku);

    return !ra;
}


/* 1 if the CSR asks for the server-generated key to be encrypted (RFC
 * 7030 4.4.1.1 DecryptKeyIdentifier, 4.4.1.2
 * AsymmetricDecryptKeyIdentifier), 0 if not, -1 on failure. */
static int
pki_est_wants_key_encrypted(const X509_REQ *csr)
{
    int                  i, found;
    ASN1_OBJECT         *obj;
    static const char   *oids[] = {
        "1.2.840.113549.1.9.16.2.37",       /* id-aa-decryptKeyID */
        "1.2.840.113549.1.9.16.2.54",       /* id-aa-asymmDecryptKeyID */
    };

    found = 0;

    for (i = 0; i < (int) (sizeof(oids) / sizeof(oids[0])) && !found; i++) {
        obj = OBJ_txt2obj(oids[i], 1);
        if (obj == NULL) {
            return -1;
        }

        found = X509_REQ_get_attr_by_OBJ(csr, obj, -1) >= 0;
        ASN1_OBJECT_free(obj);
    }

    return found;
}


/* base64 with CRLF every 64 columns, for MIME parts. */
static char *
pki_est_b64_crlf(const unsigned char *in, size_t len, size_t *outlen)
{
    char    *b64, *out, *p;
    size_t   blen, i;

    b64 = pki_base64_encode(in, len, 0, &blen);
    if (b64 == NULL) {
        return NULL;
    }

    out = malloc(blen + 2 * (blen / 64 + 1) + 1);
    if (out == NULL) {
        OPENSSL_cleanse(b64, blen);
        free(b64);
        return NULL;
    }

    p = out;
    for (i = 0; i < blen; i += 64) {
        memcpy(p, b64 + i, blen - i < 64 ? blen - i : 64);
        p += blen - i < 64 ? blen - i : 64;
        *p++ = '\r';
        *p++ = '\n';
    }
    *p = '\0';

    OPENSSL_cleanse(b64, blen);
    free(b64);
    *outlen = (size_t) (p - out);

    return out;
}


static int
pki_est_multipart(pki_est_resp_t *resp, EVP_PKEY *key,
    const unsigned char *p7, size_t p7len)
{
    int                    n, ok;
    char                  *kb64, *cb64, bnd[48];
    size_t                 klen, clen, size, i;
    unsigned char          rnd[16], *kder, *p;
    PKCS8_PRIV_KEY_INFO   *p8;

    ok = 0;
    kder = NULL;
    kb64 = NULL;
    cb64 = NULL;
    n = 0;

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return 0;
    }

    memcpy(bnd, "est-", 4);
    for (i = 0; i < sizeof(rnd); i++) {
        snprintf(bnd + 4 + 2 * i, 3, "%02x", rnd[i]);
    }

    p8 = EVP_PKEY2PKCS8(key);
    if (p8 == NULL) {
        return 0;
    }

    n = i2d_PKCS8_PRIV_KEY_INFO(p8, &kder);
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (n <= 0) {
        kder = NULL;
        goto done;
    }

    kb64 = pki_est_b64_crlf(kder, (size_t) n, &klen);
    cb64 = pki_est_b64_crlf(p7, p7len, &clen);
    if (kb64 == NULL || cb64 == NULL) {
        goto done;
    }

    size = klen + clen + 3 * strlen(bnd) + 512;
    resp->body = malloc(size);
    if (resp->body == NULL) {
        goto done;
    }

    p = resp->body;
    p += snprintf((char *) p, size,
                  "--%s\r\n"
                  "Content-Type: " PKI_EST_CT_PKCS8 "\r\n"
                  "Content-Transfer-Encoding: base64\r\n"
                  "\r\n"
                  "%s"
                  "--%s\r\n"
                  "Content-Type: " PKI_EST_CT_CERTS "\r\n"
                  "Content-Transfer-Encoding: base64\r\n"
                  "\r\n"
                  "%s"
                  "--%s--\r\n",
                  bnd, kb64, bnd, cb64, bnd);

    resp->body_len = (size_t) (p - resp->body);
    snprintf(resp->content_type_buf, sizeof(resp->content_type_buf),
             "multipart/mixed; boundary=%s", bnd);
    resp->content_type = resp->content_type_buf;
    resp->cte_base64 = 0;
    resp->http_status = 200;
    ok = 1;

done:

    if (kder) {
        OPENSSL_clear_free(kder, (size_t) n);
    }

    if (kb64) {
        OPENSSL_cleanse(kb64, klen);
        free(kb64);
    }

    free(cb64);

    return ok;
}


static void
pki_est_enroll(const pki_est_conf_t *conf, const pki_est_req_t *req,
    pki_est_resp_t *resp)
{
    int                 n, status;
    char               *who;
    X509               *cert, *known;
    size_t              derlen, max, p7len;
    EVP_PKEY           *newkey;
    X509_REQ           *csr;
    pki_status_t        rc;
    pki_result_t       *res;
    pki_request_t       preq;
    unsigned char      *der, *p7;
    pki_issue_ctx_t     ictx;
    const pki_ca_t     *ca;
    pki_int_dac_one_t   dac;

    res = &resp->res;
    who = NULL;
    cert = NULL;
    known = NULL;
    dac.claimed = 0;
    csr = NULL;
    der = NULL;
    p7 = NULL;
    newkey = NULL;
    status = 0;
    memset(&preq, 0, sizeof(preq));

    if (!pki_est_method(req, "POST")) {
        pki_est_not_allowed(resp, "POST");
        return;
    }

    /* Identity. */
    if (req->op == PKI_EST_SIMPLEREENROLL) {
        if (req->client_cert == NULL) {
            pki_fail(res, PKI_FORBIDDEN, "re-enrollment needs the client "
                     "certificate being renewed");
            goto failed;
        }

        rc = pki_est_client_cert(conf, conf->ca, req->client_cert, 0, res);
        if (rc != PKI_OK) {
            goto failed;
        }

        who = pki_int_name_text(X509_get_subject_name(req->client_cert));

    } else if (req->user && req->user[0]) {
        /*
         * A certificate of one of our CAs shown beside the password must
         * still be good, under whichever template: with ssl_verify_client
         * on it is the second factor (nginx knows nothing of our
         * revocations), and est_bind_names issues its names.  A revoked
         * device that kept its key and the fleet's password gets nothing
         * for its identity, at this label or at another CA's.
         */
        ca = req->client_cert != NULL
             ? pki_est_cert_ca(conf, req->client_cert) : NULL;
        if (ca != NULL) {
            rc = pki_est_client_cert(conf, ca, req->client_cert, 1, res);
            if (rc != PKI_OK) {
                goto failed;
            }
        }

        who = strdup(req->user);

    } else if (req->client_cert) {
        /* A Matter certificate is issued once per device (see
         * pki_request_renewal): a DAC shown alone would get its holder a
         * second DAC, for another key and any name the template allows */
        if (conf->tmpl->matter) {
            pki_fail(res, PKI_FORBIDDEN, "template \"%s\" issues Matter "
                     "certificates: a client certificate alone does not "
                     "authenticate an enrollment under it",
                     pki_template_name(conf->tmpl));
            goto failed;
        }

        rc = pki_est_client_cert(conf, conf->ca, req->client_cert, 0, res);
        if (rc == PKI_UNAVAILABLE || rc == PKI_INTERNAL) {
            goto failed;
        }

        if (rc != PKI_OK) {
            pki_log(res, "%sclient certificate refused: %s",
                    res->log[0] ? "; " : "", res->detail);
            pki_fail(res, PKI_UNAUTHORIZED, "authentication required");
            goto failed;
        }

        who = pki_int_name_text(X509_get_subject_name(req->client_cert));

    } else {
        pki_fail(res, PKI_UNAUTHORIZED, "authentication required");
        goto failed;
    }

    if (who == NULL) {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        goto failed;
    }

    if (req->op == PKI_EST_SERVERKEYGEN
        && !pki_template_server_keygen(conf->tmpl))
    {
        pki_fail(res, PKI_FORBIDDEN, "server-side key generation is not "
                 "allowed by template \"%s\"", pki_template_name(conf->tmpl));
        goto failed;
    }

    /* The body: a base64 DER PKCS#10. */
    if (!pki_est_is_pkcs10(req->content_type)) {
        pki_fail(res, PKI_UNSUPPORTED, "Content-Type must be "
                 "application/pkcs10");
        goto failed;
    }

    max = conf->max_body ? conf->max_body : PKI_EST_MAX_BODY;
    if (req->body_len > max) {
        pki_fail(res, PKI_TOO_LARGE, "request body is larger than %zu bytes",
                 max);
        goto failed;
    }

    if (req->body == NULL || req->body_len == 0) {
        pki_fail(res, PKI_MALFORMED, "empty request body");
        goto failed;
    }

    if (pki_base64_decode(req->body, req->body_len, &der, &derlen, res)
        != PKI_OK)
    {
        pki_fail(res, PKI_MALFORMED, "body is not valid base64");
        goto failed;
    }

    if (pki_csr_parse(der, derlen, &csr, res) != PKI_OK) {
        goto failed;
    }

    n = req->op == PKI_EST_SERVERKEYGEN ? pki_est_wants_key_encrypted(csr)
                                        : 0;
    if (n < 0) {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        goto failed;
    }

    if (n) {
        /* RFC 7030 4.4.1.1, 4.4.1.2: a request for a protected key that
         * the server cannot honour MUST be terminated with an error;
         * answering with the key in the clear would disregard it */
        pki_fail(res, PKI_UNSUPPORTED, "encryption of the server-generated "
                 "key (DecryptKeyIdentifier, AsymmetricDecryptKeyIdentifier)"
                 " is not supported; ask without it, over TLS");
        status = 501;
        goto failed;
    }

    if ((conf->pop_linking || pki_est_linked(req, csr))
        && pki_est_pop(req, csr, res) != PKI_OK)
    {
        goto failed;
    }

    /*
     * est_bind_names: a client that shows a certificate enrolls for that
     * certificate's names only, whether the certificate or a password
     * authenticated it (RFC 7030 3.3.2, 4.2.1: the server may check that
     * the identity is authorized for the names asked).  A renewal
     * already asks for the names of the certificate it renews.
     */
    if (conf->bind_names && req->client_cert != NULL
        && req->op != PKI_EST_SIMPLEREENROLL
        && pki_request_names_bound(conf->tmpl, csr, req->client_cert, res)
           != PKI_OK)
    {
        goto failed;
    }

    if (req->op == PKI_EST_SIMPLEREENROLL) {
        rc = pki_request_renewal(conf->tmpl, csr, req->client_cert, &preq,
                                 res);
    } else {
        rc = pki_request_from_csr(conf->tmpl, csr, &preq, res);

        /* bound: the certificate's subject as it is encoded, not the
         * CSR's spelling of it ("DEV-1" for "dev-1" compares equal) */
        if (rc == PKI_OK && conf->bind_names && req->client_cert != NULL
            && pki_int_request_keep_subject(conf->tmpl, &preq,
                   X509_get_subject_name(req->client_cert)) != 0)
        {
            rc = pki_fail(res, PKI_INTERNAL, "out of memory");
        }
    }

    if (rc != PKI_OK) {
        goto failed;
    }

    if (req->op == PKI_EST_SERVERKEYGEN) {
        newkey = pki_keygen_like(X509_REQ_get0_pubkey(csr), res);
        if (newkey == NULL) {
            if (res->status == PKI_OK) {
                pki_fail(res, PKI_INTERNAL, "key generation failed");
            }
            goto failed;
        }

        pki_request_set_pubkey(&preq, newkey);
        if (preq.pubkey != newkey) {
            pki_fail(res, PKI_INTERNAL, "cannot use the generated key");
            goto failed;
        }
    }

    if (conf->redis == NULL) {
        pki_fail(res, PKI_INTERNAL, "EST needs a certificate store (Redis)");
        goto failed;
    }

    /*
     * Every check passed: only now is any state written.  Under a Matter
     * DAC template, one DAC per device key, as for a Matter batch (see
     * matter_api.c): the key is claimed in the PAI's index of the keys it
     * certified, and its entry names the serial from the reservation on
     * (pki_int_issue_index).  A key that has a good DAC of this template
     * and of the subject asked is answered with it (a retry after a lost
     * answer); any other DAC of the key refuses the request (400); a key
     * claimed by a batch or an enrollment right now answers 503.
     */
    if (conf->tmpl->matter == PKI_MATTER_DAC) {
        rc = pki_int_dac_one_claim(conf->redis, conf->ca, conf->tmpl,
                                   preq.pubkey, preq.subject, &dac, &known,
                                   res);
        if (rc != PKI_OK) {
            pki_int_dac_one_release(conf->redis, &dac, res);
            goto failed;
        }

        if (known != NULL) {
            cert = known;
            pki_log(res, "%sthe key already has the DAC ",
                    res->log[0] ? "; " : "");
            goto answer;
        }

        pki_int_issue_index(dac.claim, dac.key);
    }

    ictx.protocol = "est";
    ictx.requester = who;
    ictx.client = req->client;
    ictx.realm = NULL;
    ictx.committed = NULL;
    pki_event_set_operation(req->op == PKI_EST_SIMPLEREENROLL ? "renew"
                            : req->op == PKI_EST_SERVERKEYGEN ? "serverkeygen"
                            : "enroll");

    rc = pki_issue(conf->ca, conf->tmpl, conf->redis, &preq, &ictx, &cert,
                   res);
    if (rc != PKI_OK) {
        /* its claim, if it still holds the entry (an abandoned
         * reservation dropped the entry already) */
        pki_int_dac_one_release(conf->redis, &dac, res);
        goto failed;
    }

    pki_log(res, "%sissued serial ", res->log[0] ? "; " : "");

answer:

    {
        char  hex[41];

        if (pki_serial_to_hex(X509_get0_serialNumber(cert), hex)) {
            pki_log(res, "%s", hex);
        }
    }

    if (known != NULL) {
        pki_log(res, ", answered again (a retry after a lost answer): one "
                "DAC per device key");
    }

    /* From here on the certificate is issued, recorded good: one that no
     * answer can carry is withdrawn, as SCEP and Matter do, so that
     * nothing calls good a certificate nobody holds (for serverkeygen,
     * one whose key is gone with this call) */

    if (!pki_certs_only(cert, NULL, &p7, &p7len)) {
        pki_fail(res, PKI_INTERNAL, "cannot encode the certificate");
        goto withdraw;
    }

    if (req->op == PKI_EST_SERVERKEYGEN) {
        if (!pki_est_multipart(resp, newkey, p7, p7len)) {
            pki_est_resp_free(resp);
            pki_fail(res, PKI_INTERNAL, "cannot encode the response");
            goto withdraw;
        }

    } else if (!pki_est_body_base64(resp, p7, p7len, PKI_EST_CT_CERTS)) {
        goto withdraw;
    }

    OPENSSL_free(p7);
    X509_free(cert);
    EVP_PKEY_free(newkey);
    pki_request_clear(&preq);
    X509_REQ_free(csr);
    free(der);
    free(who);

    return;

withdraw:

    /* (a DAC the key had already is not this call's to withdraw) */
    if (known == NULL) {
        (void) pki_int_issue_withdraw(conf->redis, conf->ca, cert, res);
    }

failed:

    OPENSSL_free(p7);
    X509_free(cert);
    EVP_PKEY_free(newkey);
    pki_request_clear(&preq);
    X509_REQ_free(csr);
    free(der);
    free(who);

    pki_est_error(resp, status);
}
