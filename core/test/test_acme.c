/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The ACME engine driven in process.  Without Redis: routing, methods,
 * media type, size, and a table of hostile JWS requests, each with the
 * RFC 8555 problem type and status it must give (all decided before the
 * store is touched), then 503 with Retry-After for good requests.  With
 * Redis (PKI_TEST_REDIS_SOCK): nonces, accounts, an order whose
 * authorization is marked valid in the store, finalize, download, ARI,
 * revocation, and External Account Binding with keys made by the admin
 * API.
 */

#include <iconv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cJSON.h>
#include <hiredis/hiredis.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "pki.h"
#include "test/unit.h"
#include "test/clock.h"
#include "test/fixture.h"


#define BASE  "https://acme.test/acme"


static char              dir[64];


/* The state store's clock in seconds (0 if it did not answer). */
static double
redis_now(redisContext *rc)
{
    double       now;
    redisReply  *g;

    g = redisCommand(rc, "TIME");
    now = g != NULL && g->type == REDIS_REPLY_ARRAY && g->elements == 2
          ? atof(g->element[0]->str) : 0;
    freeReplyObject(g);

    return now;
}
static pki_acme_conf_t   conf;
static pki_ca_t         *altca;     /* conf.ca + an alternate chain */


static char *
b64u(const void *p, size_t n)
{
    return pki_b64url_encode(p, n);
}


/* A flattened ES256 JWS.  kid NULL: jwk.  extra goes into the header. */
static char *
jws_es256(EVP_PKEY *pk, const char *url, const char *nonce, const char *kid,
    const char *payload, const char *extra)
{
    int                   flen = 32;
    char                  hdr[4096], *ph, *pp, *ps, *jwk, *input, *out;
    size_t                siglen;
    EVP_MD_CTX           *mctx;
    ECDSA_SIG            *es;
    unsigned char         sig[256], raw[64];
    const unsigned char  *p;

    jwk = kid == NULL ? pki_jwk_json(pk) : NULL;
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"url\":\"%s\"%s%s%s"
             "%s%s%s%s%s}", url,
             nonce ? ",\"nonce\":\"" : "", nonce ? nonce : "",
             nonce ? "\"" : "",
             kid ? ",\"kid\":\"" : ",\"jwk\":", kid ? kid : jwk,
             kid ? "\"" : "", extra ? "," : "", extra ? extra : "");
    free(jwk);

    ph = b64u(hdr, strlen(hdr));
    pp = b64u(payload, strlen(payload));
    if (asprintf(&input, "%s.%s", ph, pp) < 0) {
        return NULL;
    }

    mctx = EVP_MD_CTX_new();
    EVP_DigestSignInit(mctx, NULL, EVP_sha256(), NULL, pk);
    siglen = sizeof(sig);
    EVP_DigestSign(mctx, sig, &siglen, (unsigned char *) input,
                   strlen(input));
    EVP_MD_CTX_free(mctx);

    p = sig;
    es = d2i_ECDSA_SIG(NULL, &p, (long) siglen);
    BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, flen);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + flen, flen);
    ECDSA_SIG_free(es);
    ps = b64u(raw, 2 * flen);

    if (asprintf(&out, "{\"protected\":\"%s\",\"payload\":\"%s\","
                 "\"signature\":\"%s\"}", ph, pp, ps) < 0)
    {
        out = NULL;
    }

    free(ph);
    free(pp);
    free(ps);
    free(input);

    return out;
}


/* the client address the engine sees (acme_accounts_per_hour) */
static const char  *client_addr = "127.0.0.1";

static int has_link(const pki_acme_resp_t *resp, const char *link);


static void
acme(const char *method, const char *path, const char *ct, const char *body,
    pki_acme_resp_t *resp)
{
    pki_acme_req_t  req;

    memset(&req, 0, sizeof(req));
    req.method = method;
    req.base_url = BASE;
    req.path = path;
    req.content_type = ct;
    req.body = (const unsigned char *) body;
    req.body_len = body ? strlen(body) : 0;
    req.client = client_addr;

    pki_acme_handle(&conf, &req, resp);
}


/* What the glue answers for a request it refuses by itself. */
static void
refuse(const char *base, int status, const char *type, int nonce,
    pki_acme_resp_t *resp)
{
    pki_acme_req_t  req;

    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.base_url = base;
    req.client = "127.0.0.1";

    pki_acme_refuse(&conf, &req, status, type, "refused by the glue", nonce,
                    resp);
}


static int
has(const pki_acme_resp_t *resp, const char *s)
{
    return resp->body && resp->body_len
           && memmem(resp->body, resp->body_len, s, strlen(s)) != NULL;
}


/* 1 when the body is well-formed UTF-8, as JSON text must be (RFC 8259
 * 8.1); glibc's iconv is the oracle. */
static int
body_utf8(const pki_acme_resp_t *resp)
{
    int      ok;
    char    *in, *out, *buf;
    size_t   inleft, outleft;
    iconv_t  cd;

    cd = iconv_open("UTF-32LE", "UTF-8");
    if (cd == (iconv_t) -1 || resp->body == NULL) {
        return 0;
    }

    buf = malloc(resp->body_len * 4 + 4);
    in = (char *) resp->body;
    inleft = resp->body_len;
    out = buf;
    outleft = resp->body_len * 4 + 4;

    ok = buf != NULL && iconv(cd, &in, &inleft, &out, &outleft) != (size_t) -1
         && inleft == 0;

    free(buf);
    iconv_close(cd);

    return ok;
}


/* "YYYY-MM-DDTHH:MM:SSZ" (as the engine writes times) to a time_t. */
static int
t3339(const char *s, time_t *out)
{
    struct tm  tm;

    memset(&tm, 0, sizeof(tm));
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon,
               &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
    {
        return 0;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = timegm(&tm);

    return 1;
}


/* The stored order of order URL ourl of account acct, parsed (NULL if
 * none); okey gets its Redis key.  put_order() stores one back (KEEPTTL). */
static cJSON *
get_order(redisContext *rc, const char *acct, const char *ourl, char *okey,
    size_t size)
{
    cJSON       *o;
    redisReply  *g;

    snprintf(okey, size, "acmetest:{acme:%s}:order:%s", acct,
             strrchr(ourl, '/') + 1);
    g = redisCommand(rc, "GET %s", okey);
    o = g != NULL && g->type == REDIS_REPLY_STRING ? cJSON_Parse(g->str)
                                                    : NULL;
    freeReplyObject(g);

    return o;
}


static void
put_order(redisContext *rc, const char *okey, const cJSON *o)
{
    char  *text;

    text = cJSON_PrintUnformatted(o);
    freeReplyObject(redisCommand(rc, "SET %s %s KEEPTTL", okey, text));
    free(text);
}


static void
check_problem(const char *name, pki_acme_resp_t *resp, int status,
    const char *type)
{
    char  t[128];

    snprintf(t, sizeof(t), "\"urn:ietf:params:acme:error:%s\"", type);
    ok(resp->http_status == status && has(resp, t)
       && resp->content_type
       && strcmp(resp->content_type, "application/problem+json") == 0,
       "%s: %d %s (got %d %.*s)", name, status, type, resp->http_status,
       (int) (resp->body_len > 200 ? 200 : resp->body_len),
       resp->body ? (char *) resp->body : "");
    if (resp->job) {
        pki_acme_job_free(resp->job);
        resp->job = NULL;
    }
    pki_acme_resp_free(resp);
}


/* ---- CA setup -------------------------------------------------------------- */

/* "CN=cn" self-signed with key under template troot, in DIR/file. */
static void
self_signed(pki_key_t *key, pki_template_t *troot, const char *cn,
    const char *file)
{
    X509          *x;
    X509_NAME     *name;
    pki_result_t   res;

    pki_result_init(&res);
    name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    x = NULL;
    if (pki_selfsign(key, troot, name, &x, &res) != PKI_OK) {
        diag("selfsign %s: %s %s", cn, res.detail, res.log);
    }
    X509_NAME_free(name);

    fx_write_cert(dir, file, x);
    X509_free(x);
}


/* CA caname: "certificate DIR/file", "alternate_chain DIR/alt" unless alt
 * is NULL, key, template t; finished. */
static pki_ca_t *
load_ca(const char *caname, const char *file, const char *alt,
    pki_key_t *key, pki_template_t *t)
{
    char           path[128];
    pki_ca_t      *ca;
    const char    *argv[1];
    pki_result_t   res;

    pki_result_init(&res);
    ca = pki_ca_new(caname);
    argv[0] = path;

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    pki_ca_set(ca, "certificate", 1, argv, &res);
    if (alt != NULL) {
        snprintf(path, sizeof(path), "%s/%s", dir, alt);
        pki_ca_set(ca, "alternate_chain", 1, argv, &res);
    }
    pki_ca_set_key(ca, key, &res);
    pki_ca_add_template(ca, t, &res);
    if (pki_ca_finish(ca, &res) != PKI_OK) {
        diag("CA %s: %s %s", caname, res.detail, res.log);
    }

    return ca;
}


static pki_ca_t *
make_ca(EVP_PKEY *capk, pki_key_t **key_out, pki_template_t *troot,
    pki_template_t *tacme)
{
    *key_out = fx_key_file(dir, "ca.key", capk);
    self_signed(*key_out, troot, "ACME Test CA", "ca.pem");

    return load_ca("acmetest", "ca.pem", NULL, *key_out, tacme);
}


/* The CA of make_ca() (DIR/ca.pem, key cakey) again, with "alternate_chain
 * DIR/cross.pem": its subject and key certified by a second root,
 * DIR/altroot.pem ("ACME Alt Root"). */
static pki_ca_t *
make_alt_ca(EVP_PKEY *capk, pki_key_t *cakey, pki_template_t *troot,
    pki_template_t *tacme)
{
    X509       *cross;
    EVP_PKEY   *altpk;
    pki_ca_t   *rootca;
    pki_key_t  *altkey;

    altpk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    altkey = fx_key_file(dir, "altroot.key", altpk);
    self_signed(altkey, troot, "ACME Alt Root", "altroot.pem");
    rootca = load_ca("altroot", "altroot.pem", NULL, altkey, troot);

    cross = fx_issue(rootca, troot, NULL,
                     X509_get_subject_name(pki_ca_cert(conf.ca)), capk, 0);
    fx_write_cert(dir, "cross.pem", cross);

    X509_free(cross);
    pki_ca_free(rootca);
    pki_key_free(altkey);
    EVP_PKEY_free(altpk);

    return load_ca("acmetest", "ca.pem", "cross.pem", cakey, tacme);
}


/* ---- without a store --------------------------------------------------------- */

/* pki_acme_signs(): a POST to finalize/<acct>/<order> and nothing else,
 * as pki_acme_handle() routes (the glue asks it on the event loop) */
static void
test_signs(void)
{
    size_t          i;
    pki_acme_req_t  req;

    static const struct {
        const char  *method;
        const char  *path;
        int          signs;
    } cases[] = {
        { "POST", "finalize/acct1/order1", 1 },
        { "GET", "finalize/acct1/order1", 0 },
        { "HEAD", "finalize/acct1/order1", 0 },
        { "POST", "finalize/acct1", 0 },
        { "POST", "finalize/acct1/order1/x", 0 },
        { "POST", "finalize", 0 },
        { "POST", "finalizer/acct1/order1", 0 },
        { "POST", "order/acct1/order1", 0 },
        { "POST", "revoke-cert", 0 },
        { "POST", "new-order", 0 },
        { "POST", "cert/acct1/order1", 0 },
        { "POST", "", 0 },
        { NULL, "finalize/acct1/order1", 0 },
        { "POST", NULL, 0 },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(&req, 0, sizeof(req));
        req.method = cases[i].method;
        req.path = cases[i].path;

        ok(pki_acme_signs(&req) == cases[i].signs,
           "pki_acme_signs %s \"%s\": %d", cases[i].method
           ? cases[i].method : "(null)", cases[i].path ? cases[i].path
                                                       : "(null)",
           cases[i].signs);
    }

    ok(pki_acme_signs(NULL) == 0, "pki_acme_signs NULL: 0");
}


static void
test_no_store(EVP_PKEY *pk)
{
    char             *j, *big;
    pki_acme_resp_t   resp;
    static const struct {
        const char  *name;
        const char  *body;
        int          status;
        const char  *type;
    } hostile[] = {
        { "empty body", "", 400, "malformed" },
        { "not JSON", "{{{", 400, "malformed" },
        { "JSON string", "\"x\"", 400, "malformed" },
        { "no signature",
          "{\"protected\":\"e30\",\"payload\":\"\"}", 400, "malformed" },
        { "alg none",
          /* {"alg":"none","url":"https://acme.test/acme/new-account"} */
          NULL, 400, "badSignatureAlgorithm" },
    };

    /* routing */

    acme("GET", "directory", NULL, NULL, &resp);
    ok(resp.http_status == 200 && has(&resp, "\"newNonce\":\"" BASE
                                              "/new-nonce\"")
       && has(&resp, "\"renewalInfo\"") && has(&resp, "\"meta\"")
       && has(&resp, "\"caaIdentities\":[\"ca.test\"]"),
       "directory with meta");
    pki_acme_resp_free(&resp);

    acme("GET", "nothing", NULL, NULL, &resp);
    check_problem("unknown resource", &resp, 404, "malformed");

    acme("GET", "new-order", NULL, NULL, &resp);
    check_problem("GET newOrder", &resp, 405, "malformed");

    acme("PUT", "directory", NULL, NULL, &resp);
    check_problem("PUT directory", &resp, 405, "malformed");

    acme("GET", "a/b/c/d/e/f", NULL, NULL, &resp);
    check_problem("deep path", &resp, 404, "malformed");

    /* the glue's own refusals: without a nonce, no I/O at all */

    refuse(BASE, 413, "malformed", 0, &resp);
    ok(resp.nonce[0] == '\0' && resp.retry_after == 0
       && resp.links[0] != NULL
       && strcmp(resp.links[0], "<" BASE "/directory>;rel=\"index\"") == 0
       && has(&resp, "\"detail\":\"refused by the glue\""),
       "glue refusal without a nonce: its detail, Link rel=\"index\"");
    check_problem("glue refusal without a nonce", &resp, 413, "malformed");

    refuse(NULL, 503, "rateLimited", 0, &resp);
    ok(resp.retry_after > 0 && resp.links[0] == NULL,
       "glue 503: Retry-After; no base URL, no Link");
    check_problem("glue 503", &resp, 503, "rateLimited");

    j = jws_es256(pk, BASE "/new-account", "nn", NULL, "{}", NULL);

    acme("POST", "new-account", "application/json", j, &resp);
    check_problem("application/json", &resp, 415, "malformed");
    acme("POST", "new-account", NULL, j, &resp);
    check_problem("no content type", &resp, 415, "malformed");

    conf.max_body = 100;
    acme("POST", "new-account", "application/jose+json", j, &resp);
    check_problem("over max_body", &resp, 413, "malformed");
    conf.max_body = 0;

    big = calloc(1, 70000);
    memset(big, 'a', 69999);
    acme("POST", "new-account", "application/jose+json", big, &resp);
    check_problem("over 64 KiB", &resp, 413, "malformed");
    free(big);
    free(j);

    for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        char  *body = (char *) hostile[i].body;

        if (body == NULL) {
            const char  h[] = "{\"alg\":\"none\",\"url\":\"" BASE
                              "/new-account\",\"nonce\":\"nn\"}";
            char       *ph = b64u(h, strlen(h));

            if (asprintf(&body, "{\"protected\":\"%s\",\"payload\":\"e30\","
                         "\"signature\":\"\"}", ph) < 0)
            {
                body = NULL;
            }
            free(ph);
        }

        acme("POST", "new-account", "application/jose+json", body, &resp);
        if (strcmp(hostile[i].type, "badSignatureAlgorithm") == 0) {
            ok(has(&resp, "\"algorithms\":["), "%s: algorithms listed",
               hostile[i].name);
        }
        check_problem(hostile[i].name, &resp, hostile[i].status,
                      hostile[i].type);

        if (body != hostile[i].body) {
            free(body);
        }
    }

    /* url mismatch, missing nonce, jwk where kid is needed, kid where jwk
     * is needed, a bad signature: all decided before Redis */

    j = jws_es256(pk, BASE "/new-order", "nn", NULL, "{}", NULL);
    acme("POST", "new-account", "application/jose+json", j, &resp);
    check_problem("url mismatch", &resp, 401, "unauthorized");
    free(j);

    j = jws_es256(pk, BASE "/new-account", NULL, NULL, "{}", NULL);
    acme("POST", "new-account", "application/jose+json", j, &resp);
    check_problem("no nonce", &resp, 400, "badNonce");
    free(j);

    j = jws_es256(pk, BASE "/new-order", "nn", NULL, "{}", NULL);
    acme("POST", "new-order", "application/jose+json", j, &resp);
    check_problem("jwk for newOrder", &resp, 400, "malformed");
    free(j);

    j = jws_es256(pk, BASE "/new-account", "nn", BASE "/acct/x", "{}", NULL);
    acme("POST", "new-account", "application/jose+json", j, &resp);
    check_problem("kid for newAccount", &resp, 400, "malformed");
    free(j);

    j = jws_es256(pk, BASE "/new-order", "nn", "https://evil/acct/x", "{}",
                  NULL);
    acme("POST", "new-order", "application/jose+json", j, &resp);
    ok(strcmp(resp.res.detail, "accountDoesNotExist: \"kid\" is not an "
              "account URL of this location (they start with " BASE
              "/acct/)") == 0
       && has(&resp, "(they start with " BASE "/acct/)"),
       "foreign kid: the detail names this location's account URLs (%s)",
       resp.res.detail);
    check_problem("foreign kid", &resp, 400, "accountDoesNotExist");
    free(j);

    j = jws_es256(pk, BASE "/new-account", "nn", NULL, "{}", NULL);
    {
        char  *s = strstr(j, "\"signature\":\"") + 13;
        *s = *s == 'A' ? 'B' : 'A';
    }
    acme("POST", "new-account", "application/jose+json", j, &resp);
    check_problem("bad signature", &resp, 400, "malformed");
    free(j);
}


static void
test_dead_store(EVP_PKEY *pk)
{
    char              *j, sock[128];
    pki_redis_t       *dead, *saved;
    pki_result_t       res;
    pki_acme_resp_t    resp;
    pki_redis_conf_t   rconf;

    snprintf(sock, sizeof(sock), "%s/dead.sock", dir);
    memset(&rconf, 0, sizeof(rconf));
    rconf.unix_path = sock;
    rconf.timeout_ms = 200;
    pki_result_init(&res);
    dead = pki_redis_new(&rconf, &res);

    saved = conf.redis;
    conf.redis = dead;

    acme("HEAD", "new-nonce", NULL, NULL, &resp);
    ok(resp.http_status == 503 && resp.retry_after > 0,
       "newNonce with Redis down: 503 with Retry-After");
    ok(has_link(&resp, "<" BASE "/directory>;rel=\"index\""),
       "newNonce with Redis down: Link rel=\"index\" (RFC 8555 7.1)");
    pki_acme_resp_free(&resp);

    j = jws_es256(pk, BASE "/new-account", "nn", NULL,
                  "{\"termsOfServiceAgreed\":true}", NULL);
    acme("POST", "new-account", "application/jose+json", j, &resp);
    ok(resp.http_status == 503 && resp.retry_after > 0,
       "newAccount with Redis down: 503 with Retry-After");
    check_problem("newAccount with Redis down", &resp, 503,
                  "serverInternal");
    free(j);

    refuse(BASE, 404, "malformed", 1, &resp);
    ok(resp.nonce[0] == '\0', "glue refusal with Redis down: no nonce");
    check_problem("glue refusal with Redis down: its own status", &resp, 404,
                  "malformed");

    conf.redis = saved;
    pki_redis_free(dead);
}


/* ---- with a store ----------------------------------------------------------- */

static char *
new_nonce(char *buf)
{
    pki_acme_resp_t  resp;

    acme("HEAD", "new-nonce", NULL, NULL, &resp);
    snprintf(buf, 32, "%s", resp.nonce);
    pki_acme_resp_free(&resp);

    return buf;
}


/* A store was emptied (store_close) since the last POST. */
static int  store_emptied;


/* A POST signed by pk (kid or jwk); payload "" is POST-as-GET. */
static void
post(EVP_PKEY *pk, const char *kid, const char *path, const char *payload,
    const char *nonce, pki_acme_resp_t *resp)
{
    char  url[512], n[32], *j;

    snprintf(url, sizeof(url), BASE "/%s", path);
    j = jws_es256(pk, url, nonce ? nonce : new_nonce(n), kid, payload, NULL);
    acme("POST", path, "application/jose+json", j, resp);
    free(j);

    /* as a client does (RFC 8555 6.5): once more with the answer's nonce,
     * only for the first POST after a store was emptied (it holds a new
     * nonce key, which this process learns from the first nonce refused) */
    if (nonce == NULL && store_emptied && resp->http_status == 400
        && resp->body != NULL
        && strstr((const char *) resp->body, ":badNonce\"") != NULL
        && resp->nonce[0] != '\0')
    {
        snprintf(n, sizeof(n), "%s", resp->nonce);
        pki_acme_resp_free(resp);
        j = jws_es256(pk, url, n, kid, payload, NULL);
        acme("POST", path, "application/jose+json", j, resp);
        free(j);
    }

    store_emptied = 0;
}


static const char *
rel(const char *url)
{
    return url + strlen(BASE) + 1;
}


/* A CSR signed by k for the subjectAltName value san (openssl's syntax,
 * e.g. "DNS:a.test,IP:192.0.2.1"), as base64url DER (malloc'd). */
static char *
csr_b64(EVP_PKEY *k, const char *san)
{
    int                        len;
    char                      *b;
    X509_REQ                  *q;
    unsigned char             *der;
    X509_EXTENSION            *ext;
    STACK_OF(X509_EXTENSION)  *exts;

    q = X509_REQ_new();
    exts = sk_X509_EXTENSION_new_null();
    X509_REQ_set_pubkey(q, k);
    ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    sk_X509_EXTENSION_push(exts, ext);
    X509_REQ_add_extensions(q, exts);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_sign(q, k, EVP_sha256());
    der = NULL;
    len = i2d_X509_REQ(q, &der);
    b = b64u(der, (size_t) len);
    OPENSSL_free(der);
    X509_REQ_free(q);

    return b;
}


/* The value of "name":"..." in a JSON body (first match), into buf. */
static char *
json_str(const pki_acme_resp_t *resp, const char *name, char *buf,
    size_t size)
{
    char        pat[64];
    const char *p, *e;

    buf[0] = '\0';
    snprintf(pat, sizeof(pat), "\"%s\":\"", name);
    p = resp->body ? memmem(resp->body, resp->body_len, pat, strlen(pat))
                   : NULL;
    if (p == NULL) {
        return buf;
    }
    p += strlen(pat);
    e = strchr(p, '"');
    if (e == NULL || (size_t) (e - p) >= size) {
        return buf;
    }
    memcpy(buf, p, e - p);
    buf[e - p] = '\0';

    return buf;
}


/* A store on the test's Redis, under namespace ns. */
static pki_redis_t *
state_open(const char *sock, const char *ns)
{
    pki_result_t       res;
    pki_redis_conf_t   sconf;

    memset(&sconf, 0, sizeof(sconf));
    sconf.unix_path = sock;
    sconf.ns = ns;
    pki_result_init(&res);

    return pki_redis_new(&sconf, &res);
}


/* A store under namespace ns for the engine (conf.redis), and in *rc a
 * connection of the test's own to look into it. */
static pki_redis_t *
store_open(const char *sock, const char *ns, redisContext **rc)
{
    conf.redis = state_open(sock, ns);
    *rc = redisConnectUnix(sock);

    return conf.redis;
}


/* Undoes store_open(): the keys whose names match pattern (a KEYS
 * pattern of the test's namespaces) are deleted first. */
static void
store_close(pki_redis_t *r, redisContext *rc, const char *pattern)
{
    freeReplyObject(redisCommand(rc, "EVAL %s 1 %s",
                                 "for _, k in ipairs(redis.call('KEYS', "
                                 "KEYS[1])) do redis.call('DEL', k) end",
                                 pattern));
    redisFree(rc);
    pki_redis_free(r);
    conf.redis = NULL;
    store_emptied = 1;
}


/* 1 when one of resp's Link values is exactly link. */
static int
has_link(const pki_acme_resp_t *resp, const char *link)
{
    for (size_t l = 0; l < PKI_ACME_MAX_LINKS; l++) {
        if (resp->links[l] != NULL && strcmp(resp->links[l], link) == 0) {
            return 1;
        }
    }

    return 0;
}


static int
count_links(const pki_acme_resp_t *resp, const char *rel)
{
    int  n = 0;

    for (size_t l = 0; l < PKI_ACME_MAX_LINKS; l++) {
        n += resp->links[l] != NULL && strstr(resp->links[l], rel) != NULL;
    }

    return n;
}


/* Redis commands the server has processed (INFO itself counts one). */
static long long
redis_commands(redisContext *rc)
{
    long long    n;
    const char  *p;
    redisReply  *r;

    n = -1;
    r = redisCommand(rc, "INFO stats");
    if (r != NULL && r->type == REDIS_REPLY_STRING
        && (p = strstr(r->str, "total_commands_processed:")) != NULL)
    {
        n = atoll(p + sizeof("total_commands_processed:") - 1);
    }
    freeReplyObject(r);

    return n;
}


/* The Redis commands one POST-as-GET of path by pk/kid costs (its nonce
 * fetched before counting). */
static long long
download_cost(redisContext *rc, EVP_PKEY *pk, const char *kid,
    const char *path, int *status)
{
    char              n[32];
    long long         before, after;
    pki_acme_resp_t   resp;

    new_nonce(n);
    before = redis_commands(rc);
    post(pk, kid, path, "", n, &resp);
    after = redis_commands(rc);
    *status = resp.http_status;
    pki_acme_resp_free(&resp);

    return after - before - 1;
}


/*
 * RFC 8555 7.4.2 alternate chains: with altca, cert/<acct>/<id> (cert)
 * links cert/<acct>/<id>/1, which answers the leaf and the cross
 * certificate, a chain to DIR/altroot.pem (checked by openssl verify);
 * other n are 404, other accounts 403; without an alternate chain nothing
 * changes.  pk2 holds another account.
 */
static void
test_alt_download(redisContext *rc, EVP_PKEY *pk, const char *kid,
    EVP_PKEY *pk2, const char *cert)
{
    int                i, st1, st2;
    char               url[512], path[512], link[600], kid2[256], file[128];
    BIO               *bio;
    FILE              *f;
    X509              *leaf, *x, *cross;
    pki_ca_t          *saved;
    long long          c1, c2;
    pki_acme_resp_t    resp;
    STACK_OF(X509)    *alt;
    static const char *const bad[] = { "0", "2", "01", "x", "1x", "-1",
                                       "10", "" };

    saved = conf.ca;

    /* no alternate chain configured: no Link rel="alternate", no n */
    post(pk, kid, rel(cert), "", NULL, &resp);
    ok(resp.http_status == 200 && count_links(&resp, "alternate") == 0,
       "no alternate chain: the download links none");
    pki_acme_resp_free(&resp);
    snprintf(path, sizeof(path), "%s/1", rel(cert));
    post(pk, kid, path, "", NULL, &resp);
    check_problem("no alternate chain: cert/.../1", &resp, 404, "malformed");

    conf.ca = altca;
    alt = pki_ca_alt_chain(altca, 0);
    cross = alt != NULL && sk_X509_num(alt) == 1 ? sk_X509_value(alt, 0)
                                                  : NULL;
    ok(cross != NULL, "the alternate CA has its cross certificate");

    post(pk, kid, rel(cert), "", NULL, &resp);
    snprintf(link, sizeof(link), "<%s/1>;rel=\"alternate\"", cert);
    ok(resp.http_status == 200 && has_link(&resp, link)
       && count_links(&resp, "alternate") == 1
       && has_link(&resp, "<" BASE "/directory>;rel=\"index\""),
       "default download: Link %s", link);
    bio = BIO_new_mem_buf(resp.body, (int) resp.body_len);
    leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    ok(leaf != NULL && x != NULL
       && X509_cmp(x, pki_ca_cert(altca)) == 0
       && PEM_read_bio_X509(bio, NULL, NULL, NULL) == NULL,
       "  still the leaf and the CA certificate");
    ERR_clear_error();
    X509_free(x);
    BIO_free(bio);
    pki_acme_resp_free(&resp);

    post(pk, kid, path, "", NULL, &resp);
    snprintf(link, sizeof(link), "<%s>;rel=\"alternate\"", cert);
    ok(resp.http_status == 200 && resp.content_type
       && strcmp(resp.content_type, "application/pem-certificate-chain") == 0
       && has_link(&resp, link) && count_links(&resp, "alternate") == 1,
       "alternate 1: PEM chain, Link %s", link);
    bio = BIO_new_mem_buf(resp.body, (int) resp.body_len);
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    ok(x != NULL && leaf != NULL && X509_cmp(x, leaf) == 0,
       "  the same leaf");
    X509_free(x);
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    ok(x != NULL && cross != NULL && X509_cmp(x, cross) == 0
       && PEM_read_bio_X509(bio, NULL, NULL, NULL) == NULL,
       "  then the cross certificate, and nothing else");
    ERR_clear_error();
    X509_free(x);
    BIO_free(bio);

    /* independent oracle: the answer chains to the alternate root, not
     * to the CA's own self-signed certificate */
    snprintf(file, sizeof(file), "%s/alt1.pem", dir);
    f = fopen(file, "w");
    if (f != NULL) {
        fwrite(resp.body, 1, resp.body_len, f);
        fclose(f);
    }
    snprintf(url, sizeof(url), "openssl verify -CAfile %s/altroot.pem "
             "-untrusted %s %s >/dev/null 2>&1", dir, file, file);
    ok(system(url) == 0, "  openssl verify -CAfile altroot.pem -untrusted "
       "<answer> <answer>: OK");
    snprintf(url, sizeof(url), "openssl verify -CAfile %s/altroot.pem "
             "%s >/dev/null 2>&1", dir, file);
    ok(system(url) != 0, "  (and the leaf alone does not verify there)");
    pki_acme_resp_free(&resp);
    X509_free(leaf);

    for (i = 0; i < (int) (sizeof(bad) / sizeof(bad[0])); i++) {
        char  name[64];

        snprintf(path, sizeof(path), "%s/%s", rel(cert), bad[i]);
        snprintf(name, sizeof(name), "alternate \"%s\"", bad[i]);
        post(pk, kid, path, "", NULL, &resp);
        check_problem(name, &resp, 404, "malformed");
    }

    snprintf(path, sizeof(path), "%s/1", rel(cert));
    acme("GET", path, NULL, NULL, &resp);
    check_problem("GET of an alternate", &resp, 405, "malformed");

    /* only the owning account */
    post(pk2, NULL, "new-account", "{\"onlyReturnExisting\":true}", NULL,
         &resp);
    snprintf(kid2, sizeof(kid2), "%s", resp.location ? resp.location : "");
    pki_acme_resp_free(&resp);
    post(pk2, kid2, rel(cert), "", NULL, &resp);
    check_problem("another account's certificate", &resp, 403,
                  "unauthorized");
    post(pk2, kid2, path, "", NULL, &resp);
    check_problem("another account's alternate chain", &resp, 403,
                  "unauthorized");

    /* the alternate costs the Redis round trips of the default download */
    c1 = download_cost(rc, pk, kid, rel(cert), &st1);
    c2 = download_cost(rc, pk, kid, path, &st2);
    ok(st1 == 200 && st2 == 200 && c1 > 0 && c1 == c2,
       "Redis commands: default %lld, alternate %lld", c1, c2);

    conf.ca = saved;
    c2 = download_cost(rc, pk, kid, rel(cert), &st2);
    ok(st2 == 200 && c2 == c1, "  without alternates %lld", c2);
}


static void
test_store(const char *sock, EVP_PKEY *cakey_pub)
{
    char               n[32], kid[256], acct[64], order[256], authz[256];
    char               fin[256], cert[256], key[512], *csr64, *p, ckid[32];
    char               hkey[PKI_ACME_EAB_KEY_BUF], buf[1024];
    EVP_PKEY          *pk, *pk2, *ck;
    X509              *x;
    BIO               *bio;
    X509_REQ          *csr;
    pki_redis_t       *r;
    redisReply        *reply;
    pki_result_t       res;
    redisContext      *rc;
    unsigned char     *der;
    pki_acme_resp_t    resp;
    int                len;

    r = store_open(sock, "acmetest:", &rc);
    pki_result_init(&res);

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    pk2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

    /* nonces */
    acme("GET", "new-nonce", NULL, NULL, &resp);
    ok(resp.http_status == 204 && strlen(resp.nonce) >= 16 && resp.no_store,
       "GET newNonce: 204, Replay-Nonce, no-store");
    pki_acme_resp_free(&resp);

    /* accounts */
    post(pk, NULL, "new-account", "{\"termsOfServiceAgreed\":true,"
         "\"contact\":[\"mailto:a@example.com\"]}", NULL, &resp);
    ok(resp.http_status == 201 && resp.location && resp.nonce[0],
       "newAccount: 201 with Location and a nonce");
    snprintf(kid, sizeof(kid), "%s", resp.location ? resp.location : "");
    snprintf(acct, sizeof(acct), "%s", strrchr(kid, '/') + 1);
    pki_acme_resp_free(&resp);

    post(pk, NULL, "new-account", "{\"onlyReturnExisting\":true}", NULL,
         &resp);
    ok(resp.http_status == 200 && resp.location
       && strcmp(resp.location, kid) == 0, "existing key: 200, same URL");
    pki_acme_resp_free(&resp);

    /* RFC 8555 6.5: the glue's refusals carry a nonce good for the next
     * request */
    refuse(BASE, 413, "malformed", 1, &resp);
    ok(strlen(resp.nonce) >= 16, "glue refusal: a fresh Replay-Nonce");
    snprintf(n, sizeof(n), "%s", resp.nonce);
    check_problem("glue refusal with a nonce", &resp, 413, "malformed");
    post(pk, kid, rel(kid), "", n, &resp);
    ok(resp.http_status == 200, "the nonce of a glue refusal is good");
    pki_acme_resp_free(&resp);

    post(pk2, NULL, "new-account", "{\"onlyReturnExisting\":true}", NULL,
         &resp);
    check_problem("onlyReturnExisting", &resp, 400, "accountDoesNotExist");

    post(pk2, NULL, "new-account", "{\"contact\":[\"mailto:x\"]}", NULL,
         &resp);
    check_problem("bad contact", &resp, 400, "invalidContact");

    /* a nonce is single-use, and survives a forged request */
    new_nonce(n);
    {
        char  url[256], *j;

        snprintf(url, sizeof(url), "%s", kid);
        j = jws_es256(pk2, url, n, kid, "", NULL);   /* wrong key */
        acme("POST", rel(kid), "application/jose+json", j, &resp);
        check_problem("kid with another key", &resp, 400, "malformed");
        free(j);
    }
    post(pk, kid, rel(kid), "", n, &resp);
    ok(resp.http_status == 200, "nonce still good after a forged request");
    pki_acme_resp_free(&resp);
    post(pk, kid, rel(kid), "", n, &resp);
    ok(resp.nonce[0] != '\0', "badNonce carries a fresh nonce");
    check_problem("replayed nonce", &resp, 400, "badNonce");
    post(pk, kid, rel(kid), "", "bm9wZQ", &resp);
    check_problem("made-up nonce", &resp, 400, "badNonce");

    /* a nonce whose tag is changed (the HMAC fails: no round trip), and
     * one that expired (acme_nonce_ttl 1 s, judged by the store's clock) */
    new_nonce(n);
    n[strlen(n) - 1] = n[strlen(n) - 1] == 'A' ? 'B' : 'A';
    post(pk, kid, rel(kid), "", n, &resp);
    check_problem("a nonce with a changed tag", &resp, 400, "badNonce");
    {
        long  ttl = conf.nonce_ttl;

        conf.nonce_ttl = 1;
        new_nonce(n);
        conf.nonce_ttl = ttl;
        sleep(2);
        post(pk, kid, rel(kid), "", n, &resp);
        check_problem("an expired nonce", &resp, 400, "badNonce");
        new_nonce(n);
        post(pk, kid, rel(kid), "", n, &resp);
        ok(resp.http_status == 200, "a fresh nonce after those: good");
        pki_acme_resp_free(&resp);
    }

    /* orders */
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"WWW.Example.TEST\"},{\"type\":\"ip\","
         "\"value\":\"192.0.2.1\"}]}", NULL, &resp);
    ok(resp.http_status == 201 && resp.location
       && has(&resp, "\"www.example.test\"") && has(&resp, "\"pending\""),
       "newOrder: 201, names lowercased, pending");
    snprintf(order, sizeof(order), "%s", resp.location ? resp.location : "");
    json_str(&resp, "finalize", fin, sizeof(fin));
    pki_acme_resp_free(&resp);

    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"1.2.3.4\"}]}", NULL, &resp);
    check_problem("an IP as a dns identifier", &resp, 400,
                  "rejectedIdentifier");
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"ip\","
         "\"value\":\"*.1.2.3\"}]}", NULL, &resp);
    check_problem("wildcard IP", &resp, 400, "rejectedIdentifier");
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"a.example\"}],\"notBefore\":\"yesterday\"}", NULL,
         &resp);
    check_problem("bad notBefore", &resp, 400, "malformed");
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"a.example\"}],\"notAfter\":\"2999-01-01T00:00:00Z\"}",
         NULL, &resp);
    check_problem("notAfter beyond the template", &resp, 400, "malformed");
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"a.example\"}],\"replaces\":\"AAAA.AAAA\"}", NULL,
         &resp);
    check_problem("replaces a foreign certificate", &resp, 400, "malformed");
    post(pk, kid, "new-order", "{\"identifiers\":[]}", NULL, &resp);
    check_problem("no identifiers", &resp, 400, "malformed");

    post(pk, kid, rel(order), "", NULL, &resp);
    json_str(&resp, "authorizations\":[", authz, sizeof(authz));
    pki_acme_resp_free(&resp);

    /* finalize before ready */
    ck = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    csr64 = csr_b64(ck, "DNS:www.example.test,IP:192.0.2.1");

    snprintf(buf, sizeof(buf), "{\"csr\":\"%s\"}", csr64);
    post(pk, kid, rel(fin), buf, NULL, &resp);
    check_problem("finalize before ready", &resp, 403, "orderNotReady");

    /* mark every authorization of the account valid in the store (the
     * validator has its own tests) */
    reply = redisCommand(rc, "KEYS acmetest:{acme:%s}:authz:*", acct);
    for (size_t i = 0; reply && i < reply->elements; i++) {
        redisReply  *g = redisCommand(rc, "GET %s", reply->element[i]->str);
        char        *s = g && g->str ? strdup(g->str) : NULL;

        if (s && (p = strstr(s, "\"status\":\"pending\"")) != NULL) {
            memcpy(p + 10, "valid\",  ", 9);
            freeReplyObject(redisCommand(rc, "SET %s %s",
                                         reply->element[i]->str, s));
        }
        free(s);
        if (g) {
            freeReplyObject(g);
        }
    }
    if (reply) {
        freeReplyObject(reply);
    }

    post(pk, kid, rel(order), "", NULL, &resp);
    ok(has(&resp, "\"status\":\"ready\""), "order ready once its "
       "authorizations are valid");
    ok(!has(&resp, "\"error\""), "a ready order has no error");
    pki_acme_resp_free(&resp);

    post(pk2, NULL, "new-account", "{}", NULL, &resp);
    {
        char  kid2[256];

        snprintf(kid2, sizeof(kid2), "%s", resp.location ? resp.location
                                                         : "");
        pki_acme_resp_free(&resp);
        post(pk2, kid2, rel(order), "", NULL, &resp);
        check_problem("another account's order", &resp, 403,
                      "unauthorized");
        post(pk2, kid2, rel(fin), buf, NULL, &resp);
        check_problem("another account's finalize", &resp, 403,
                      "unauthorized");
        snprintf(key, sizeof(key), "acct/%s/orders/2", acct);
        post(pk2, kid2, key, "", NULL, &resp);
        check_problem("another account's orders, page 2", &resp, 403,
                      "unauthorized");
    }

    /* the orders list in pages of 100, newest first, Link rel="next"
     * (RFC 8555 7.1.2.1): 250 more valid orders in the account's index */
    {
        int          k, total;
        char         zkey[256], id[32], next[300], msg[320];
        long long    score;
        redisReply  *z;

        snprintf(zkey, sizeof(zkey), "acmetest:{acme:%s}:orders", acct);
        z = redisCommand(rc, "ZCARD %s", zkey);
        total = z != NULL && z->type == REDIS_REPLY_INTEGER
                ? (int) z->integer : -1;
        freeReplyObject(z);
        score = (long long) time(NULL) + 1000;
        for (k = 0; k < 250; k++) {
            snprintf(id, sizeof(id), "pageorder%03d", k);
            freeReplyObject(redisCommand(rc, "ZADD %s %lld %s", zkey,
                                         score + k, id));
            /* listed: the list leaves out orders that are gone or invalid */
            freeReplyObject(redisCommand(rc, "SET acmetest:{acme:%s}:order:%s "
                                         "{\"status\":\"valid\"} EX 3600",
                                         acct, id));
        }
        total += 250;

        snprintf(key, sizeof(key), "acct/%s/orders", acct);
        for (k = 1; k <= 3; k++) {
            post(pk, kid, key, "", NULL, &resp);
            next[0] = '\0';
            for (size_t l = 0; l < PKI_ACME_MAX_LINKS; l++) {
                if (resp.links[l] != NULL
                    && strstr(resp.links[l], "rel=\"next\"") != NULL)
                {
                    snprintf(next, sizeof(next), "%s", resp.links[l]);
                }
            }
            if (k < 3) {
                snprintf(msg, sizeof(msg), "<%s/acct/%s/orders/%d>;"
                         "rel=\"next\"", BASE, acct, k + 1);
                ok(resp.http_status == 200 && strcmp(next, msg) == 0
                   && has(&resp, k == 1 ? "pageorder249" : "pageorder149")
                   && !has(&resp, k == 1 ? "pageorder149" : "pageorder049"),
                   "orders page %d: 100 newest first, next: %s", k, next);
                snprintf(key, sizeof(key), "acct/%s/orders/%d", acct, k + 1);
            } else {
                ok(resp.http_status == 200 && next[0] == '\0'
                   && has(&resp, "pageorder000") && has(&resp, rel(order)),
                   "orders page 3: the other %d, no next", total - 200);
            }
            pki_acme_resp_free(&resp);
        }

        {
            static const char *const bad[] = { "1", "0", "02", "-2", "x",
                                               "100001", "2x", "" };

            for (k = 0; k < (int) (sizeof(bad) / sizeof(bad[0])); k++) {
                snprintf(key, sizeof(key), "acct/%s/orders/%s", acct, bad[k]);
                post(pk, kid, key, "", NULL, &resp);
                snprintf(msg, sizeof(msg), "orders page \"%s\"", bad[k]);
                check_problem(msg, &resp, 404, "malformed");
            }
        }

        freeReplyObject(redisCommand(rc, "ZREMRANGEBYSCORE %s %lld %lld",
                                     zkey, score, score + 249));
    }

    /* CSR with the account key */
    {
        char  *b, body[2048];

        b = csr_b64(pk, "DNS:www.example.test,IP:192.0.2.1");
        snprintf(body, sizeof(body), "{\"csr\":\"%s\"}", b);
        post(pk, kid, rel(fin), body, NULL, &resp);
        check_problem("CSR with the account key", &resp, 400, "badCSR");
        free(b);
    }

    post(pk, kid, rel(fin), "{\"csr\":\"AAAA\"}", NULL, &resp);
    check_problem("CSR garbage", &resp, 400, "badCSR");

    post(pk, kid, rel(fin), buf, NULL, &resp);
    ok(resp.http_status == 200 && has(&resp, "\"status\":\"valid\"")
       && has(&resp, "\"certificate\""), "finalize: valid, certificate URL");
    json_str(&resp, "certificate", cert, sizeof(cert));
    pki_acme_resp_free(&resp);

    post(pk, kid, rel(order), "", NULL, &resp);
    ok(has(&resp, "\"status\":\"valid\"") && !has(&resp, "\"error\""),
       "a valid order has no error");
    pki_acme_resp_free(&resp);

    post(pk, kid, rel(cert), "", NULL, &resp);
    ok(resp.http_status == 200 && resp.content_type
       && strcmp(resp.content_type, "application/pem-certificate-chain") == 0,
       "certificate: PEM chain");
    bio = BIO_new_mem_buf(resp.body, (int) resp.body_len);
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    ok(x != NULL && X509_check_host(x, "www.example.test", 0, 0, NULL) == 1
       && X509_check_ip_asc(x, "192.0.2.1", 0) == 1,
       "certificate names the order's identifiers");
    ok(x != NULL && EVP_PKEY_eq(X509_get0_pubkey(x), ck) == 1,
       "certificate holds the CSR key");
    pki_acme_resp_free(&resp);

    post(pk, kid, rel(fin), buf, NULL, &resp);
    check_problem("finalize twice", &resp, 403, "orderNotReady");

    /* the stored order holds the certificate, not its chain: the download
     * appends the CA's chain */
    {
        char    okey[512], *saved;
        cJSON  *o, *keep;

        o = get_order(rc, acct, order, okey, sizeof(okey));
        saved = o != NULL ? cJSON_PrintUnformatted(o) : NULL;
        ok(saved != NULL && strstr(saved, "\"serial\":\"") != NULL
           && strstr(saved, "\"leaf\":\"-----BEGIN CERTIFICATE") != NULL
           && strstr(strstr(saved, "END CERTIFICATE") ? strstr(saved,
                     "END CERTIFICATE") : saved, "BEGIN CERTIFICATE") == NULL,
           "the stored order holds the certificate, not its chain "
           "(%zu bytes)", saved ? strlen(saved) : 0);
        keep = cJSON_Duplicate(o, 1);

        /* an order stored by an earlier version, with the chain in it */
        cJSON_AddStringToObject(o, "cert", "-----BEGIN CERTIFICATE-----\n"
                                "T0xE\n-----END CERTIFICATE-----\n");
        put_order(rc, okey, o);
        post(pk, kid, rel(cert), "", NULL, &resp);
        ok(resp.http_status == 200 && has(&resp, "T0xE"),
           "an order holding its chain (earlier versions) serves it");
        pki_acme_resp_free(&resp);

        /* without its copy the download reads the record; a valid order
         * whose record is gone: 500, not a made-up chain */
        cJSON_DeleteItemFromObject(o, "cert");
        cJSON_DeleteItemFromObject(o, "leaf");
        put_order(rc, okey, o);
        post(pk, kid, rel(cert), "", NULL, &resp);
        ok(resp.http_status == 200 && has(&resp, "BEGIN CERTIFICATE"),
           "an order without its copy: the chain from the record");
        pki_acme_resp_free(&resp);

        cJSON_ReplaceItemInObject(o, "serial",
                                  cJSON_CreateString("5ABCDEF0123456789ABC"
                                                     "DEF012345678"));
        put_order(rc, okey, o);
        cJSON_Delete(o);
        post(pk, kid, rel(cert), "", NULL, &resp);
        check_problem("certificate whose record is gone", &resp, 500,
                      "serverInternal");

        if (keep != NULL) {
            put_order(rc, okey, keep);
        }
        cJSON_Delete(keep);
        cJSON_free(saved);

        post(pk, kid, rel(cert), "", NULL, &resp);
        ok(resp.http_status == 200 && has(&resp, "BEGIN CERTIFICATE")
           && !has(&resp, "T0xE"), "  and from the order's copy again (a "
           "%zu-byte chain)", resp.body_len);
        pki_acme_resp_free(&resp);
    }

    test_alt_download(rc, pk, kid, pk2, cert);


    /* a finalize that died: the order is processing with its serial */
    {
        char        okey[512], serial[64];
        cJSON      *o;

        o = get_order(rc, acct, order, okey, sizeof(okey));
        snprintf(serial, sizeof(serial), "%s",
                 o && cJSON_GetObjectItem(o, "serial")
                 ? cJSON_GetObjectItem(o, "serial")->valuestring : "");
        cJSON_DeleteItemFromObject(o, "leaf");
        cJSON_DeleteItemFromObject(o, "serial");
        cJSON_ReplaceItemInObject(o, "status",
                                  cJSON_CreateString("processing"));
        cJSON_AddStringToObject(o, "finSerial", serial);
        cJSON_AddNumberToObject(o, "finStarted", (double) time(NULL));
        put_order(rc, okey, o);

        /* withdrawn first (revoked because the finalization could not
         * hand it out: its log entry refused): never the order's */
        {
            char         ckey[512];
            redisReply  *k;

            k = redisCommand(rc, "KEYS acmetest:{ca:*}:cert:%s", serial);
            ckey[0] = '\0';
            if (k != NULL && k->type == REDIS_REPLY_ARRAY
                && k->elements == 1)
            {
                snprintf(ckey, sizeof(ckey), "%s", k->element[0]->str);
            }
            freeReplyObject(k);
            ok(ckey[0] != '\0', "the order's record: %s", ckey);

            freeReplyObject(redisCommand(rc, "HSET %s status revoked "
                                         "withdrawn 1", ckey));
            post(pk, kid, rel(order), "", NULL, &resp);
            ok(has(&resp, "\"status\":\"processing\"")
               && !has(&resp, "\"certificate\""), "a processing order whose "
               "certificate was withdrawn does not complete with it");
            pki_acme_resp_free(&resp);

            cJSON_ReplaceItemInObject(o, "finStarted",
                                      cJSON_CreateNumber((double) time(NULL)
                                                         - 100));
            put_order(rc, okey, o);
            post(pk, kid, rel(order), "", NULL, &resp);
            ok(has(&resp, "\"status\":\"invalid\"")
               && has(&resp, "serverInternal")
               && !has(&resp, "\"certificate\""),
               "  and once stale, it becomes invalid with serverInternal");
            pki_acme_resp_free(&resp);

            freeReplyObject(redisCommand(rc, "HSET %s status good", ckey));
            freeReplyObject(redisCommand(rc, "HDEL %s withdrawn", ckey));
            cJSON_ReplaceItemInObject(o, "finStarted",
                                      cJSON_CreateNumber((double) time(NULL)));
            put_order(rc, okey, o);
        }

        post(pk, kid, rel(order), "", NULL, &resp);
        ok(has(&resp, "\"status\":\"valid\"") && has(&resp, "certificate"),
           "a processing order whose certificate is recorded completes");
        pki_acme_resp_free(&resp);

        cJSON_ReplaceItemInObject(o, "finSerial",
                                  cJSON_CreateString("5ABCDEF0123456789ABC"
                                                     "DEF012345678"));
        cJSON_ReplaceItemInObject(o, "finStarted",
                                  cJSON_CreateNumber((double) time(NULL)
                                                     - 100));
        put_order(rc, okey, o);
        cJSON_Delete(o);

        post(pk, kid, rel(order), "", NULL, &resp);
        ok(has(&resp, "\"status\":\"invalid\"")
           && has(&resp, "serverInternal"), "a stale processing order "
           "without a certificate becomes invalid with serverInternal");
        pki_acme_resp_free(&resp);
    }

    /* hosts whose clocks differ judge a finalization's age alike: it is
     * measured on the state store's clock, which finStarted comes from */
    {
        static const long  ahead[2] = { 100, -100 };
        static const int   age[2] = { 5, 60 };
        static const char *name[2] = { "www-skew1", "www-skew2" };
        char               okey[512], ourl[512], req[160];
        cJSON             *o;
        int                i;

        for (i = 0; i < 2; i++) {
            snprintf(req, sizeof(req), "{\"identifiers\":[{\"type\":"
                     "\"dns\",\"value\":\"%s.example.com\"}]}", name[i]);
            post(pk, kid, "new-order", req, NULL, &resp);
            snprintf(ourl, sizeof(ourl), "%s",
                     resp.location ? resp.location : "");
            pki_acme_resp_free(&resp);
            o = ourl[0] ? get_order(rc, acct, ourl, okey, sizeof(okey))
                        : NULL;
            if (o == NULL) {
                ok(0, "an order for the clock test");
                continue;
            }

            cJSON_ReplaceItemInObject(o, "status",
                                      cJSON_CreateString("processing"));
            cJSON_AddStringToObject(o, "finSerial", i == 0
                                    ? "5ABCDEF0123456789ABCDEF012345679"
                                    : "5ABCDEF0123456789ABCDEF01234567A");
            cJSON_AddNumberToObject(o, "finStarted",
                                    redis_now(rc) - age[i]);
            put_order(rc, okey, o);
            cJSON_Delete(o);

            clock_ahead = ahead[i];
            post(pk, kid, rel(ourl), "", NULL, &resp);
            clock_ahead = 0;

            if (i == 0) {
                ok(has(&resp, "\"status\":\"processing\""),
                   "a finalization started 5 s ago is running for a host "
                   "whose clock is 100 s ahead");
            } else {
                ok(has(&resp, "\"status\":\"invalid\"")
                   && has(&resp, "serverInternal"), "a finalization "
                   "started 60 s ago is dead for a host whose clock is "
                   "100 s behind");
            }
            pki_acme_resp_free(&resp);
        }
    }

    /* ARI */
    p = pki_acme_cert_id(x);
    ok(p != NULL, "certID");
    snprintf(key, sizeof(key), "renewal-info/%s", p ? p : "x");
    acme("GET", key, NULL, NULL, &resp);
    ok(resp.http_status == 200 && has(&resp, "suggestedWindow")
       && resp.retry_after > 0, "renewalInfo: window and Retry-After");
    pki_acme_resp_free(&resp);
    acme("GET", "renewal-info/AAAA.AAAA", NULL, NULL, &resp);
    check_problem("renewalInfo for an unknown certID", &resp, 404,
                  "malformed");

    /* RFC 9773 4.1: a certID carries the certificate's own AKI.  The CA's
     * certificate issued again (same name and key) with another
     * subjectKeyIdentifier: what the earlier one issued keeps its
     * renewalInfo; a keyIdentifier neither the CA's nor the
     * certificate's, with a known serial, is an unknown certID */
    if (p != NULL) {
        char               bad[256];
        X509              *ca2;
        pki_ca_t          *saved, *reissued;
        unsigned char      id[20];
        ASN1_OCTET_STRING *ski;

        ca2 = X509_dup(pki_ca_cert(conf.ca));
        ski = ASN1_OCTET_STRING_new();
        memset(id, 0x5a, sizeof(id));
        if (ca2 == NULL || ski == NULL
            || !ASN1_OCTET_STRING_set(ski, id, sizeof(id))
            || X509_add1_ext_i2d(ca2, NID_subject_key_identifier, ski, 0,
                                 X509V3_ADD_REPLACE) != 1
            || X509_sign(ca2, cakey_pub, EVP_sha256()) <= 0)
        {
            diag("a CA certificate with another SKI");
        }
        ASN1_OCTET_STRING_free(ski);
        fx_write_cert(dir, "ca-ski2.pem", ca2);
        X509_free(ca2);
        reissued = load_ca("acmetest", "ca-ski2.pem", NULL,
                           pki_ca_key(conf.ca), conf.tmpl);

        saved = conf.ca;
        conf.ca = reissued;
        acme("GET", key, NULL, NULL, &resp);
        ok(resp.http_status == 200 && has(&resp, "suggestedWindow"),
           "renewalInfo of a certificate the CA issued under its earlier "
           "subjectKeyIdentifier (%d)", resp.http_status);
        pki_acme_resp_free(&resp);
        conf.ca = saved;
        pki_ca_free(reissued);

        snprintf(bad, sizeof(bad),
                 "renewal-info/AQEBAQEBAQEBAQEBAQEBAQEBAQE%s", strchr(p, '.'));
        acme("GET", bad, NULL, NULL, &resp);
        check_problem("renewalInfo, a serial of ours under a foreign AKI",
                      &resp, 404, "malformed");
    }

    /* a planned revocation moves the window before it */
    {
        char          serial[41], ws[32], we[32];
        time_t        at, t0, t1, now;
        unsigned      done;
        ASN1_INTEGER *sn;
        BIGNUM       *bn;
        char         *hex;

        sn = X509_get_serialNumber(x);
        bn = ASN1_INTEGER_to_BN(sn, NULL);
        hex = BN_bn2hex(bn);
        snprintf(serial, sizeof(serial), "%s", hex);
        OPENSSL_free(hex);
        BN_free(bn);

        now = time(NULL);
        at = now + 10L * 86400;
        pki_result_init(&res);
        ok(pki_record_plan_revoke(r, "acmetest", serial, 5, at, "test", NULL,
                                  &res)
           == PKI_OK, "revocation planned in 10 days: %s", res.detail);
        acme("GET", key, NULL, NULL, &resp);
        json_str(&resp, "start", ws, sizeof(ws));
        json_str(&resp, "end", we, sizeof(we));
        ok(t3339(ws, &t0) && t3339(we, &t1)
           && t0 <= now + 5 && t1 > t0 && t1 <= now + 5L * 86400 + 5,
           "renewalInfo: renew from now, in the first half of the 10 days "
           "(%s .. %s)", ws, we);
        pki_acme_resp_free(&resp);
        ok(pki_record_revoke_due(r, "acmetest", now, 0, &done, &res)
           == PKI_OK && done == 0, "not carried out before its time");
    }

    /* revocation */
    der = NULL;
    len = i2d_X509(x, &der);
    {
        char  *b = b64u(der, (size_t) len), body[4096];

        snprintf(body, sizeof(body), "{\"certificate\":\"%s\",\"reason\":2}",
                 b);
        post(pk, kid, "revoke-cert", body, NULL, &resp);
        check_problem("reason 2", &resp, 400, "badRevocationReason");

        snprintf(body, sizeof(body), "{\"certificate\":\"%s\"}", b);
        post(pk2, NULL, "revoke-cert", body, NULL, &resp);
        check_problem("revocation by a stranger's key", &resp, 403,
                      "unauthorized");

        snprintf(body, sizeof(body), "{\"certificate\":\"%s\",\"reason\":1}",
                 b);
        post(ck, NULL, "revoke-cert", body, NULL, &resp);
        ok(resp.http_status == 200, "revocation with the certificate key");
        pki_acme_resp_free(&resp);

        post(pk, kid, "revoke-cert", body, NULL, &resp);
        check_problem("revoked twice", &resp, 400, "alreadyRevoked");
        free(b);
    }
    OPENSSL_free(der);

    acme("GET", key, NULL, NULL, &resp);
    ok(resp.http_status == 200, "renewalInfo for a revoked certificate");
    pki_acme_resp_free(&resp);
    free(p);

    /* External Account Binding: no key id or key starts with "-" (an
     * option parser would take it for an option); 200 keys make 400
     * draws, of which about 6 would start with "-" */
    {
        int  i, dash = 0, made = 0;

        for (i = 0; i < 200; i++) {
            pki_result_init(&res);
            if (pki_acme_eab_new(r, ckid, hkey, &res) == PKI_OK) {
                made++;
                dash += ckid[0] == '-' || hkey[0] == '-';
            }
        }
        ok(made == 200 && dash == 0, "EAB: 200 keys, none whose id or key "
           "starts with \"-\" (%d)", dash);
    }
    pki_result_init(&res);
    ok(pki_acme_eab_new(r, ckid, hkey, &res) == PKI_OK, "EAB key created");
    conf.eab_required = 1;
    {
        EVP_PKEY       *pk3 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        char           *jwk = pki_jwk_json(pk3), h[256], *ph, *pp, *ps;
        char           *payload;
        unsigned char  *k, mac[32];
        unsigned int    maclen;
        size_t          klen;

        post(pk3, NULL, "new-account", "{}", NULL, &resp);
        check_problem("no EAB", &resp, 403, "externalAccountRequired");

        snprintf(h, sizeof(h), "{\"alg\":\"HS256\",\"kid\":\"%s\","
                 "\"url\":\"" BASE "/new-account\"}", ckid);
        ph = b64u(h, strlen(h));
        pp = b64u(jwk, strlen(jwk));
        snprintf(buf, sizeof(buf), "%s.%s", ph, pp);
        pki_b64url_decode(hkey, strlen(hkey), &k, &klen);
        HMAC(EVP_sha256(), k, (int) klen, (unsigned char *) buf, strlen(buf),
             mac, &maclen);
        ps = b64u(mac, maclen);

        if (asprintf(&payload, "{\"externalAccountBinding\":{\"protected\":"
                     "\"%s\",\"payload\":\"%s\",\"signature\":\"AAAA%s\"}}",
                     ph, pp, ps) > 0)
        {
            post(pk3, NULL, "new-account", payload, NULL, &resp);
            check_problem("EAB with a bad MAC", &resp, 403, "unauthorized");
            free(payload);
        }

        if (asprintf(&payload, "{\"externalAccountBinding\":{\"protected\":"
                     "\"%s\",\"payload\":\"%s\",\"signature\":\"%s\"}}",
                     ph, pp, ps) > 0)
        {
            post(pk3, NULL, "new-account", payload, NULL, &resp);
            ok(resp.http_status == 201, "newAccount with EAB: 201");
            pki_acme_resp_free(&resp);
            free(payload);
        }

        pki_result_init(&res);
        ok(pki_acme_eab_disable(r, ckid, &res) == PKI_OK, "EAB disabled");
        pki_result_init(&res);
        ok(pki_acme_eab_disable(r, "nosuchkid1", &res) == PKI_NOT_FOUND,
           "disabling an unknown EAB key: not found");
        {
            int    found = 0, n = 0;
            char  *list = NULL, next[24], cur[24];

            /* paged: an SSCAN page of a hashtable set may hold fewer */
            strcpy(cur, "0");
            do {
                list = NULL;
                if (pki_acme_eab_list(r, cur, 100, &list, next, &res)
                    != PKI_OK)
                {
                    break;
                }
                found += list && strstr(list, ckid)
                         && strstr(list, "disabled");
                free(list);
                strcpy(cur, next);
            } while (strcmp(cur, "0") != 0 && ++n < 100);
            list = NULL;
            ok(found == 1, "EAB list shows the disabled key (%d)", found);
            ok(pki_acme_eab_list(r, "12x", 100, &list, next, &res)
               == PKI_MALFORMED && list == NULL, "EAB list: a cursor of "
               "other than digits refused");

            /* 300 more keys: paged 50 at a time, every key seen */
            {
                int     i, made, seen, pages;
                char    kids[300][32], key[PKI_ACME_EAB_KEY_BUF];
                char    cur[24];
                cJSON  *arr, *it;

                made = 0;
                for (i = 0; i < 300; i++) {
                    pki_result_init(&res);
                    made += pki_acme_eab_new(r, kids[i], key, &res)
                            == PKI_OK;
                    OPENSSL_cleanse(key, sizeof(key));
                }
                ok(made == 300, "300 EAB keys made (%d)", made);

                seen = 0;
                pages = 0;
                strcpy(cur, "0");
                do {
                    list = NULL;
                    pki_result_init(&res);
                    if (pki_acme_eab_list(r, cur, 50, &list, next, &res)
                        != PKI_OK)
                    {
                        break;
                    }
                    pages++;
                    arr = cJSON_Parse(list);
                    cJSON_ArrayForEach(it, arr) {
                        cJSON       *kj = cJSON_GetObjectItem(it, "kid");
                        const char  *k = cJSON_IsString(kj)
                                         ? kj->valuestring : NULL;

                        for (i = 0; k != NULL && i < 300; i++) {
                            if (kids[i][0] && strcmp(kids[i], k) == 0) {
                                kids[i][0] = '\0';
                                seen++;
                            }
                        }
                    }
                    cJSON_Delete(arr);
                    free(list);
                    strcpy(cur, next);
                } while (strcmp(cur, "0") != 0 && pages < 100);
                list = NULL;
                ok(seen == 300 && pages > 2, "paged through them: all 300 "
                   "seen (%d) in %d pages", seen, pages);
            }
        }

        free(ph);
        free(pp);
        free(ps);
        free(k);
        free(jwk);
        EVP_PKEY_free(pk3);
    }
    conf.eab_required = 0;

    /* rate limit: 429 with Retry-After */
    conf.orders_per_hour = 1;
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"r1.example\"}]}", NULL, &resp);
    ok(resp.http_status == 201, "first order within the hourly limit");
    pki_acme_resp_free(&resp);
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"r2.example\"}]}", NULL, &resp);
    ok(resp.retry_after > 0, "rate limited: Retry-After");
    check_problem("over the hourly order limit", &resp, 429, "rateLimited");
    conf.orders_per_hour = 0;
    {
        redisReply  *t;

        t = redisCommand(rc, "TTL acmetest:{acme:%s}:rate:%lld", acct,
                         (long long) (time(NULL) / 3600));
        if (t != NULL && t->type == REDIS_REPLY_INTEGER && t->integer == -2) {
            freeReplyObject(t);     /* the hour turned since */
            t = redisCommand(rc, "TTL acmetest:{acme:%s}:rate:%lld", acct,
                             (long long) (time(NULL) / 3600 - 1));
        }
        ok(t != NULL && t->type == REDIS_REPLY_INTEGER && t->integer > 0
           && t->integer <= 3600, "the hour's order count expires (%lld)",
           t != NULL ? t->integer : -9);
        freeReplyObject(t);
    }

    /* new accounts per client address and hour: only a created account
     * counts; the one over the limit gets 429 with Retry-After and is not
     * made; an IPv6 client is counted by its /64 */
    {
        int        i;
        EVP_PKEY  *k[5];

        for (i = 0; i < 5; i++) {
            k[i] = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        }
        conf.accounts_per_hour = 2;
        client_addr = "192.0.2.7";

        post(k[0], NULL, "new-account", "{}", NULL, &resp);
        ok(resp.http_status == 201, "account limit: first new account");
        pki_acme_resp_free(&resp);
        post(k[1], NULL, "new-account", "{}", NULL, &resp);
        ok(resp.http_status == 201, "account limit: second new account");
        pki_acme_resp_free(&resp);
        post(k[0], NULL, "new-account", "{}", NULL, &resp);
        ok(resp.http_status == 200, "account limit: an existing key is "
           "answered, not counted");
        pki_acme_resp_free(&resp);
        post(k[2], NULL, "new-account", "{}", NULL, &resp);
        ok(resp.retry_after > 0 && has(&resp, "192.0.2.7"),
           "account limit: Retry-After, the address in the detail");
        check_problem("over the hourly account limit", &resp, 429,
                      "rateLimited");
        post(k[2], NULL, "new-account", "{\"onlyReturnExisting\":true}",
             NULL, &resp);
        check_problem("the refused account was not made", &resp, 400,
                      "accountDoesNotExist");

        client_addr = "2001:db8:1:2::5";
        post(k[2], NULL, "new-account", "{}", NULL, &resp);
        ok(resp.http_status == 201, "account limit: another address has "
           "its own count");
        pki_acme_resp_free(&resp);
        client_addr = "2001:db8:1:2:ffff::9";
        post(k[3], NULL, "new-account", "{}", NULL, &resp);
        ok(resp.http_status == 201, "account limit: same /64, second");
        pki_acme_resp_free(&resp);
        client_addr = "2001:db8:1:2::77";
        post(k[4], NULL, "new-account", "{}", NULL, &resp);
        ok(has(&resp, "2001:db8:1:2::/64"), "account limit: an IPv6 "
           "client is counted by its /64");
        check_problem("the /64 over the limit", &resp, 429, "rateLimited");

        conf.accounts_per_hour = 0;
        client_addr = "127.0.0.1";
        post(k[4], NULL, "new-account", "{}", NULL, &resp);
        ok(resp.http_status == 201, "no limit: the account is made");
        pki_acme_resp_free(&resp);

        for (i = 0; i < 5; i++) {
            EVP_PKEY_free(k[i]);
        }
    }

    /* keyChange to a key in use */
    {
        char  *inner, *jwk = pki_jwk_json(pk), payload[2048], body[8192];
        char   url[] = BASE "/key-change";

        snprintf(payload, sizeof(payload), "{\"account\":\"%s\","
                 "\"oldKey\":%s}", kid, jwk);
        inner = jws_es256(pk2, url, NULL, NULL, payload, NULL);
        snprintf(body, sizeof(body), "%s", inner);
        post(pk, kid, "key-change", body, NULL, &resp);
        ok(resp.http_status == 409 && resp.location != NULL,
           "keyChange to a key in use: 409 with Location");
        pki_acme_resp_free(&resp);
        free(inner);
        free(jwk);
    }

    /* a second store for the replay-safe state (acme_redis) */
    {
        pki_redis_t       *st, *dead;
        pki_redis_conf_t   sconf;

        memset(&sconf, 0, sizeof(sconf));
        sconf.unix_path = sock;
        sconf.ns = "acmestate:";
        st = pki_redis_new(&sconf, &res);
        sconf.unix_path = "/nonexistent/redis.sock";
        sconf.timeout_ms = 200;
        dead = pki_redis_new(&sconf, &res);

        conf.state_redis = st;
        new_nonce(n);
        reply = redisCommand(rc, "EXISTS acmestate:acme:nonce:%s", n);
        ok(reply && reply->integer == 0, "split: a new nonce is no key");
        freeReplyObject(reply);

        post(pk, kid, rel(kid), "", n, &resp);
        ok(resp.http_status == 200, "split: an account read redeems the "
           "state store's nonce");
        pki_acme_resp_free(&resp);
        reply = redisCommand(rc, "EXISTS acmestate:acme:nonce:%s", n);
        ok(reply && reply->integer == 1, "split: its used mark is in the "
           "state store");
        freeReplyObject(reply);
        reply = redisCommand(rc, "EXISTS acmetest:acme:nonce:%s", n);
        ok(reply && reply->integer == 0, "split: ... and not in pki_redis");
        freeReplyObject(reply);

        post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
             "\"value\":\"split.example\"}]}", NULL, &resp);
        ok(resp.http_status == 201, "split: newOrder");
        pki_acme_resp_free(&resp);
        reply = redisCommand(rc, "KEYS acmestate:{acme:%s}:order:*", acct);
        ok(reply && reply->elements == 1, "split: the order is in the state "
           "store");
        freeReplyObject(reply);

        conf.state_redis = dead;
        acme("HEAD", "new-nonce", NULL, NULL, &resp);
        ok(resp.http_status == 503 && resp.retry_after > 0,
           "split: state store down: newNonce 503 with Retry-After");
        pki_acme_resp_free(&resp);

        conf.state_redis = NULL;
        pki_redis_free(st);
        pki_redis_free(dead);
    }

    free(csr64);
    X509_free(x);
    EVP_PKEY_free(ck);
    EVP_PKEY_free(pk);
    EVP_PKEY_free(pk2);
    redisFree(rc);
    pki_redis_free(r);
    conf.redis = NULL;
    (void) csr;
}


/* Accounts are kept (no TTL); a deactivated account's key is refused at
 * newAccount too; terms of service to agree to come with their link; the
 * template's name policy is applied at newOrder. */
static void
test_policy(const char *sock)
{
    int                 i, found;
    char                kid[256], acct[64];
    EVP_PKEY           *pk, *pk2;
    redisReply         *reply;
    pki_redis_t        *r;
    redisContext       *rc;
    pki_acme_resp_t     resp;
    pki_template_t     *tnarrow, *saved;
    static const char *const narrow_lines[] = {
        "key_types ec:P-256", "subject CN copy", "san dns copy",
        "validity 90d", "extended_key_usage serverAuth", NULL
    };

    r = store_open(sock, "acmepol:", &rc);

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    pk2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

    /* terms of service */
    conf.tos = "https://ca.test/tos";
    post(pk, NULL, "new-account", "{\"contact\":[\"mailto:a@example.com\"]}",
         NULL, &resp);
    found = 0;
    for (i = 0; i < PKI_ACME_MAX_LINKS && resp.links[i] != NULL; i++) {
        found |= strcmp(resp.links[i],
                        "<https://ca.test/tos>;rel=\"terms-of-service\"") == 0;
    }
    ok(found, "terms not agreed: Link rel=\"terms-of-service\"");
    check_problem("terms not agreed", &resp, 403, "userActionRequired");

    post(pk, NULL, "new-account", "{\"termsOfServiceAgreed\":true}", NULL,
         &resp);
    ok(resp.http_status == 201 && resp.location, "terms agreed: 201");
    snprintf(kid, sizeof(kid), "%s", resp.location ? resp.location : "");
    snprintf(acct, sizeof(acct), "%s", strrchr(kid, '/') + 1);
    pki_acme_resp_free(&resp);
    conf.tos = NULL;

    /* kept for good: created, updated */
    reply = redisCommand(rc, "TTL acmepol:{acme:%s}:acct", acct);
    ok(reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == -1,
       "a new account has no TTL (got %lld)", reply ? reply->integer : -3);
    freeReplyObject(reply);

    post(pk, kid, rel(kid), "{\"contact\":[\"mailto:b@example.com\"]}", NULL,
         &resp);
    ok(resp.http_status == 200, "account update: 200");
    pki_acme_resp_free(&resp);
    reply = redisCommand(rc, "TTL acmepol:{acme:%s}:acct", acct);
    ok(reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == -1,
       "an updated account has no TTL (got %lld)",
       reply ? reply->integer : -3);
    freeReplyObject(reply);

    /* the template's names, at newOrder */
    saved = conf.tmpl;
    tnarrow = fx_template("narrow", narrow_lines);
    conf.tmpl = tnarrow;

    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"ip\","
         "\"value\":\"192.0.2.7\"}]}", NULL, &resp);
    ok(has(&resp, "does not issue ip names"), "ip refused: says why");
    check_problem("an ip the template does not issue", &resp, 400,
                  "rejectedIdentifier");
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"ok.example\"},{\"type\":\"dns\","
         "\"value\":\"*.example\"}]}", NULL, &resp);
    ok(has(&resp, "does not issue wildcard names"),
       "wildcard refused: says why");
    check_problem("a wildcard the template does not issue", &resp, 400,
                  "rejectedIdentifier");
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"ip\","
         "\"value\":\"192.0.2.7\"},{\"type\":\"dns\","
         "\"value\":\"ok.example\"},{\"type\":\"dns\","
         "\"value\":\"*.example\"}]}", NULL, &resp);
    ok(has(&resp, "\"subproblems\":[") && has(&resp, "does not issue ip")
       && has(&resp, "does not issue wildcard")
       && has(&resp, "\"identifier\":{\"type\":\"ip\","
                     "\"value\":\"192.0.2.7\"}")
       && has(&resp, "\"identifier\":{\"type\":\"dns\","
                     "\"value\":\"*.example\"}"),
       "an ip and a wildcard the template does not issue: both named");
    check_problem("two names the template does not issue", &resp, 400,
                  "rejectedIdentifier");
    reply = redisCommand(rc, "KEYS acmepol:{acme:%s}:order:*", acct);
    ok(reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 0,
       "refused orders stored nothing");
    freeReplyObject(reply);
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"ok.example\"}]}", NULL, &resp);
    ok(resp.http_status == 201, "a name the template issues: 201");
    pki_acme_resp_free(&resp);

    conf.tmpl = saved;
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"*.example\"},{\"type\":\"ip\","
         "\"value\":\"192.0.2.7\"}]}", NULL, &resp);
    ok(resp.http_status == 201, "the same under a template with wildcards "
       "and ip names: 201");
    pki_acme_resp_free(&resp);

    /* deactivated: its key is refused at newAccount as everywhere */
    post(pk, kid, rel(kid), "{\"status\":\"deactivated\"}", NULL, &resp);
    ok(resp.http_status == 200 && has(&resp, "\"deactivated\""),
       "deactivation: 200");
    pki_acme_resp_free(&resp);
    reply = redisCommand(rc, "TTL acmepol:{acme:%s}:acct", acct);
    ok(reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == -1,
       "a deactivated account is kept too (got %lld)",
       reply ? reply->integer : -3);
    freeReplyObject(reply);

    post(pk, NULL, "new-account", "{\"onlyReturnExisting\":true}", NULL,
         &resp);
    check_problem("onlyReturnExisting, deactivated account", &resp, 401,
                  "unauthorized");
    post(pk, NULL, "new-account", "{\"termsOfServiceAgreed\":true}", NULL,
         &resp);
    check_problem("newAccount with a deactivated account's key", &resp, 401,
                  "unauthorized");
    post(pk2, NULL, "new-account", "{\"termsOfServiceAgreed\":true}", NULL,
         &resp);
    ok(resp.http_status == 201, "another key still opens an account");
    pki_acme_resp_free(&resp);

    pki_template_free(tnarrow);
    EVP_PKEY_free(pk);
    EVP_PKEY_free(pk2);
    store_close(r, rc, "acmepol:*");
}


/* ---- the admin API's account revocation (core/admin.c) ------------------ */

static char  adm_op[64], adm_who[64], adm_subject[64];
static int   adm_events;


static void
adm_sink(void *arg, const pki_event_t *ev)
{
    (void) arg;

    if (ev->type == PKI_EV_REQUEST && ev->operation != NULL) {
        adm_events++;
        snprintf(adm_op, sizeof(adm_op), "%s", ev->operation);
        snprintf(adm_who, sizeof(adm_who), "%s",
                 ev->requester ? ev->requester : "");
        snprintf(adm_subject, sizeof(adm_subject), "%s",
                 ev->subject ? ev->subject : "");
    }
}


/* One admin request; the body (malloc'd, "" when none) and the status. */
static char *
adm(pki_admin_conf_t *ac, const char *method, const char *path,
    const char *body, int *status)
{
    char              *out;
    pki_admin_req_t    req;
    pki_admin_resp_t   resp;

    memset(&req, 0, sizeof(req));
    req.method = method;
    req.path = path;
    req.path_len = strlen(path);
    req.body = (const unsigned char *) body;
    req.body_len = body != NULL ? strlen(body) : 0;
    req.identity = "ops";
    req.client = "127.0.0.1";

    pki_admin_handle(ac, &req, &resp);
    *status = resp.http_status;
    out = strndup(resp.body != NULL ? (char *) resp.body : "",
                  resp.body_len);
    if (resp.res.log[0] != '\0') {
        diag("admin log: %s", resp.res.log);
    }
    pki_admin_resp_free(&resp);

    return out;
}


static long long
count_keys(redisContext *rc, const char *pattern)
{
    long long    n;
    redisReply  *reply;

    reply = redisCommand(rc, "KEYS %s", pattern);
    n = reply && reply->type == REDIS_REPLY_ARRAY ? (long long) reply->elements
                                                  : -1;
    freeReplyObject(reply);

    return n;
}


/* An account made, used (its text is this process's hint), revoked by the
 * admin API, then refused on its very next request; alone and with
 * acme_redis (the state store's copy of the account). */
static void
test_admin_revoke(const char *sock)
{
    int                 st, i;
    char               *b, kid[256], acct[64], path[160], pat[160];
    char                body[512], n[32];
    EVP_PKEY           *pk, *pk2;
    long long           before;
    redisReply         *reply;
    pki_redis_t        *r, *sr, *dead, *states[1];
    redisContext       *rc;
    pki_result_t        res;
    pki_acme_resp_t     resp;
    pki_admin_conf_t    ac;
    pki_redis_conf_t    sconf;

    static const char *const bad_bodies[] = {
        "", "not json", "{\"status\":\"revoked\"} x", "[\"revoked\"]",
        "{\"status\":\"deactivated\"}", "{\"status\":\"valid\"}",
        "{\"status\":1}", "{\"status\":null}", "{}",
        "{\"status\":\"revoked\",\"contact\":[]}",
        "{\"status\":\"revoked\",\"status\":\"revoked\"}",
        "{\"reason\":\"x\",\"status\":\"revoked\"}",
        "{\"Status\":\"revoked\"}", NULL
    };
    static const char *const bad_ids[] = {
        "acme/accounts/a%2Fb", "acme/accounts/a.b", "acme/accounts/..",
        "acme/accounts/a b", "acme/accounts/x/y",
        "acme/accounts/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        "AAAAAAAAAAAAAAAAAAAA", NULL
    };

    r = store_open(sock, "acmeadm:", &rc);
    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    pk2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

    memset(&ac, 0, sizeof(ac));
    ac.redis = r;

    post(pk, NULL, "new-account", "{\"contact\":[\"mailto:ops@example.com\"]"
         ",\"termsOfServiceAgreed\":true}", NULL, &resp);
    ok(resp.http_status == 201 && resp.location, "admin: account made");
    snprintf(kid, sizeof(kid), "%s", resp.location ? resp.location : "/");
    snprintf(acct, sizeof(acct), "%s", strrchr(kid, '/') + 1);
    pki_acme_resp_free(&resp);

    /* GET: the stored account, nothing secret */
    snprintf(path, sizeof(path), "acme/accounts/%s", acct);
    b = adm(&ac, "GET", path, NULL, &st);
    snprintf(pat, sizeof(pat), "\"id\":\"%s\"", acct);
    ok(st == 200 && strstr(b, pat) && strstr(b, "\"status\":\"valid\"")
       && strstr(b, "\"contact\":[\"mailto:ops@example.com\"]")
       && strstr(b, "\"createdAt\":\"20") && strstr(b, "\"thumbprint\":\"")
       && strstr(b, "\"termsOfServiceAgreed\":true")
       && !strstr(b, "\"key\"") && !strstr(b, "\"d\""),
       "admin GET account: 200, id, status, contact, createdAt, thumbprint, "
       "no key (%d %s)", st, b);
    free(b);

    b = adm(&ac, "GET", "acme/accounts/nosuchaccount1", NULL, &st);
    ok(st == 404 && strstr(b, "no such ACME account"),
       "admin GET unknown account: 404 (%d)", st);
    free(b);
    b = adm(&ac, "POST", "acme/accounts/nosuchaccount1",
            "{\"status\":\"revoked\"}", &st);
    ok(st == 404, "admin revoke unknown account: 404 (%d)", st);
    free(b);
    b = adm(&ac, "DELETE", path, NULL, &st);
    ok(st == 405, "admin DELETE account: 405 (%d)", st);
    free(b);
    b = adm(&ac, "GET", "acme/accounts", NULL, &st);
    ok(st == 404, "admin acme/accounts without id: 404 (%d)", st);
    free(b);

    /* the account works; its text is now this process's hint */
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"adm.example\"}]}", NULL, &resp);
    ok(resp.http_status == 201, "admin: newOrder before the revocation");
    pki_acme_resp_free(&resp);
    post(pk, kid, rel(kid), "", NULL, &resp);
    ok(resp.http_status == 200, "admin: account read (hinted)");
    pki_acme_resp_free(&resp);

    /* bad bodies and ids: 400/404, nothing changed, Redis not asked */
    memset(&sconf, 0, sizeof(sconf));
    sconf.unix_path = "/nonexistent/redis.sock";
    sconf.timeout_ms = 100;
    pki_result_init(&res);
    dead = pki_redis_new(&sconf, &res);

    for (i = 0; bad_bodies[i] != NULL; i++) {
        b = adm(&ac, "POST", path, bad_bodies[i], &st);
        ok(st == 400 && strstr(b, "\"error\":\""),
           "admin revoke, bad body %s: 400 (%d %s)", bad_bodies[i], st, b);
        free(b);
    }
    ac.redis = dead;
    b = adm(&ac, "POST", path, "{\"status\":\"deactivated\"}", &st);
    ok(st == 400 && strstr(b, "the only change allowed"),
       "bad body refused before Redis is asked (%d %s)", st, b);
    free(b);
    for (i = 0; bad_ids[i] != NULL; i++) {
        b = adm(&ac, "POST", bad_ids[i], "{\"status\":\"revoked\"}", &st);
        ok(st == 404, "admin revoke, bad id %.40s: 404 without Redis (%d)",
           bad_ids[i], st);
        free(b);
        b = adm(&ac, "GET", bad_ids[i], NULL, &st);
        ok(st == 404, "admin GET, bad id %.40s: 404 without Redis (%d)",
           bad_ids[i], st);
        free(b);
    }
    ac.redis = r;

    reply = redisCommand(rc, "GET acmeadm:{acme:%s}:acct", acct);
    ok(reply && reply->type == REDIS_REPLY_STRING
       && strstr(reply->str, "\"status\":\"valid\""),
       "refused admin requests changed nothing");
    freeReplyObject(reply);

    /* revoke */
    adm_events = 0;
    pki_event_set_sink(adm_sink, NULL);
    b = adm(&ac, "POST", path, " {\"status\": \"revoked\"}\n", &st);
    ok(st == 200 && strstr(b, "\"status\":\"revoked\"") && strstr(b, pat),
       "admin revoke: 200, the account revoked (%d %s)", st, b);
    free(b);
    ok(adm_events == 1 && strcmp(adm_op, "acme-account-revoke") == 0
       && strcmp(adm_who, "ops") == 0 && strcmp(adm_subject, acct) == 0,
       "admin revoke: audited as the admin (%d %s %s)", adm_events, adm_op,
       adm_who);

    b = adm(&ac, "POST", path, "{\"status\":\"revoked\"}", &st);
    ok(st == 200 && strstr(b, "\"status\":\"revoked\"") && adm_events == 1,
       "admin revoke again: 200, no change, not audited again (%d)", st);
    free(b);
    pki_event_set_sink(NULL, NULL);

    b = adm(&ac, "GET", path, NULL, &st);
    ok(st == 200 && strstr(b, "\"status\":\"revoked\""),
       "admin GET: revoked (%d)", st);
    free(b);

    /* the very next request, although the hint holds the valid text */
    snprintf(pat, sizeof(pat), "acmeadm:{acme:%s}:order:*", acct);
    before = count_keys(rc, pat);
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"adm2.example\"}]}", NULL, &resp);
    ok(has(&resp, "revoked by the CA"), "revoked: the detail says so");
    check_problem("newOrder by a revoked account", &resp, 401,
                  "unauthorized");
    ok(count_keys(rc, pat) == before && before == 1,
       "the refused newOrder stored nothing (%lld)", before);
    post(pk, kid, rel(kid), "{\"contact\":[\"mailto:x@example.com\"]}", NULL,
         &resp);
    check_problem("account update by a revoked account", &resp, 401,
                  "unauthorized");
    post(pk, kid, rel(kid), "{\"status\":\"deactivated\"}", NULL, &resp);
    check_problem("self-deactivation of a revoked account", &resp, 401,
                  "unauthorized");
    post(pk, NULL, "new-account", "{\"onlyReturnExisting\":true}", NULL,
         &resp);
    ok(has(&resp, "revoked by the CA"), "onlyReturnExisting: says revoked");
    check_problem("onlyReturnExisting, revoked account", &resp, 401,
                  "unauthorized");
    post(pk, NULL, "new-account", "{\"termsOfServiceAgreed\":true}", NULL,
         &resp);
    check_problem("newAccount with a revoked account's key", &resp, 401,
                  "unauthorized");
    reply = redisCommand(rc, "GET acmeadm:{acme:%s}:acct", acct);
    ok(reply && reply->type == REDIS_REPLY_STRING
       && strstr(reply->str, "\"status\":\"revoked\"")
       && strstr(reply->str, "ops@example.com"),
       "the refused requests changed nothing");
    freeReplyObject(reply);

    /* a client-deactivated account: 409 */
    post(pk2, NULL, "new-account", "{}", NULL, &resp);
    snprintf(kid, sizeof(kid), "%s", resp.location ? resp.location : "/");
    snprintf(acct, sizeof(acct), "%s", strrchr(kid, '/') + 1);
    pki_acme_resp_free(&resp);
    post(pk2, kid, rel(kid), "{\"status\":\"deactivated\"}", NULL, &resp);
    pki_acme_resp_free(&resp);
    snprintf(path, sizeof(path), "acme/accounts/%s", acct);
    b = adm(&ac, "POST", path, "{\"status\":\"revoked\"}", &st);
    ok(st == 409 && strstr(b, "deactivated"),
       "admin revoke of a deactivated account: 409 (%d %s)", st, b);
    free(b);
    b = adm(&ac, "GET", path, NULL, &st);
    ok(st == 200 && strstr(b, "\"status\":\"deactivated\""),
       "... and it stays deactivated");
    free(b);

    /* split stores: the redeem script checks the state store's copy */
    sconf.unix_path = sock;
    sconf.ns = "acmeadmst:";
    sconf.timeout_ms = 0;
    sr = pki_redis_new(&sconf, &res);
    conf.state_redis = sr;
    EVP_PKEY_free(pk2);
    pk2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

    post(pk2, NULL, "new-account", "{}", NULL, &resp);
    ok(resp.http_status == 201, "split: account made");
    snprintf(kid, sizeof(kid), "%s", resp.location ? resp.location : "/");
    snprintf(acct, sizeof(acct), "%s", strrchr(kid, '/') + 1);
    pki_acme_resp_free(&resp);
    post(pk2, kid, rel(kid), "", NULL, &resp);
    pki_acme_resp_free(&resp);
    post(pk2, kid, rel(kid), "", NULL, &resp);
    ok(resp.http_status == 200, "split: account read (copy and hint)");
    pki_acme_resp_free(&resp);
    reply = redisCommand(rc, "TTL acmeadmst:{acme:%s}:acct", acct);
    ok(reply && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0,
       "split: the state store holds a copy with a TTL");
    freeReplyObject(reply);

    /* a state store that cannot be told: 503, the retry finishes it */
    states[0] = dead;
    ac.acme_state = states;
    ac.nacme_state = 1;
    snprintf(path, sizeof(path), "acme/accounts/%s", acct);
    b = adm(&ac, "POST", path, "{\"status\":\"revoked\"}", &st);
    ok(st == 503 && strstr(b, "acme_redis"),
       "split: state store down: 503, says which (%d %s)", st, b);
    free(b);

    states[0] = sr;
    b = adm(&ac, "POST", path, "{\"status\":\"revoked\"}", &st);
    ok(st == 200 && strstr(b, "\"status\":\"revoked\""),
       "split: the retry: 200 (%d %s)", st, b);
    free(b);
    reply = redisCommand(rc, "GET acmeadmst:{acme:%s}:acct", acct);
    ok(reply && reply->type == REDIS_REPLY_STRING
       && strstr(reply->str, "\"status\":\"revoked\""),
       "split: the state store's copy is revoked too");
    freeReplyObject(reply);

    post(pk2, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"adm3.example\"}]}", NULL, &resp);
    check_problem("split: newOrder by a revoked account, next request", &resp,
                  401, "unauthorized");
    snprintf(pat, sizeof(pat), "acmeadmst:{acme:%s}:order:*", acct);
    ok(count_keys(rc, pat) == 0, "split: nothing stored");

    /* a writer that read the valid account before the revocation cannot
     * put it back: the copy of a revoked account is kept */
    reply = redisCommand(rc, "GET acmeadmst:{acme:%s}:acct", acct);
    if (reply && reply->type == REDIS_REPLY_STRING) {
        char  *valid = strdup(reply->str), *p;

        p = strstr(valid, "\"revoked\"");
        if (p != NULL) {
            memcpy(p, "\"valid\"  ", 9);
        }
        snprintf(body, sizeof(body), "acmeadmst:{acme:%s}:acct", acct);
        freeReplyObject(redisCommand(rc, "DEL %s", body));
        freeReplyObject(redisCommand(rc, "SET %s %s", body, valid));
        /* the stale valid copy now; the durable one says revoked: the
         * engine's own update after a failed compare-and-set drops only
         * valid copies, so the next read gets the revoked text */
        free(valid);
    }
    freeReplyObject(reply);
    post(pk2, kid, rel(kid), "{\"contact\":[\"mailto:y@example.com\"]}",
         NULL, &resp);
    pki_acme_resp_free(&resp);
    post(pk2, kid, rel(kid), "", NULL, &resp);
    check_problem("split: a stale valid copy is replaced, not trusted "
                  "twice", &resp, 401, "unauthorized");
    reply = redisCommand(rc, "GET acmeadm:{acme:%s}:acct", acct);
    ok(reply && reply->type == REDIS_REPLY_STRING
       && strstr(reply->str, "\"status\":\"revoked\"")
       && !strstr(reply->str, "y@example.com"),
       "split: the durable account is still revoked, unchanged");
    freeReplyObject(reply);
    (void) n;

    conf.state_redis = NULL;
    pki_redis_free(sr);
    pki_redis_free(dead);
    EVP_PKEY_free(pk);
    EVP_PKEY_free(pk2);
    store_close(r, rc, "acmeadm*");
}


/* ---- profiles (draft-ietf-acme-profiles) --------------------------------- */

static pki_template_t  *tshort;     /* profile "short": 7 days, clientAuth */


/* Every pending authorization of acct in namespace ns made valid (the
 * validator has its own tests). */
static void
authz_all_valid(redisContext *rc, const char *ns, const char *acct)
{
    char        *s, *p;
    redisReply  *reply, *g;

    reply = redisCommand(rc, "KEYS %s{acme:%s}:authz:*", ns, acct);
    for (size_t i = 0; reply && i < reply->elements; i++) {
        g = redisCommand(rc, "GET %s", reply->element[i]->str);
        s = g && g->str ? strdup(g->str) : NULL;

        if (s && (p = strstr(s, "\"status\":\"pending\"")) != NULL) {
            memcpy(p + 10, "valid\",  ", 9);
            freeReplyObject(redisCommand(rc, "SET %s %s",
                                         reply->element[i]->str, s));
        }
        free(s);
        freeReplyObject(g);
    }
    freeReplyObject(reply);
}


/* {"csr": ...} for a fresh P-256 key and one dNSName. */
static char *
csr_body(const char *dns)
{
    char      *b, *out, san[300];
    EVP_PKEY  *k;

    k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    snprintf(san, sizeof(san), "DNS:%s", dns);
    b = csr_b64(k, san);
    if (asprintf(&out, "{\"csr\":\"%s\"}", b) < 0) {
        out = NULL;
    }
    free(b);
    EVP_PKEY_free(k);

    return out;
}


/* renewalInfo of certificate x: the answer (resp, to free), its window's
 * start as text in body, and x's notAfter in *na (0 when unknown) */
static void
ari_start(X509 *x, pki_acme_resp_t *resp, char *body, size_t size,
    time_t *na)
{
    char        key[600];
    char       *id;
    struct tm   tm;

    id = x != NULL ? pki_acme_cert_id(x) : NULL;
    snprintf(key, sizeof(key), "renewal-info/%s", id ? id : "x");
    free(id);
    acme("GET", key, NULL, NULL, resp);
    json_str(resp, "start", body, size);
    *na = 0;
    if (x != NULL && ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm)) {
        *na = timegm(&tm);
    }
}


/* newOrder (payload extra after the identifier of dns), authorizations
 * made valid, finalize: the certificate (NULL on failure); order gets
 * the order URL. */
static X509 *
profile_issue(redisContext *rc, EVP_PKEY *pk, const char *kid,
    const char *acct, const char *dns, const char *extra, char *order,
    size_t size)
{
    char             body[512], fin[256], cert[256], *csr;
    BIO             *bio;
    X509            *x;
    pki_acme_resp_t  resp;

    x = NULL;
    order[0] = '\0';
    snprintf(body, sizeof(body), "{\"identifiers\":[{\"type\":\"dns\","
             "\"value\":\"%s\"}]%s}", dns, extra);
    post(pk, kid, "new-order", body, NULL, &resp);
    if (resp.http_status != 201 || resp.location == NULL) {
        diag("newOrder %s: %d %.*s", body, resp.http_status,
             (int) resp.body_len, resp.body ? (char *) resp.body : "");
        pki_acme_resp_free(&resp);
        return NULL;
    }
    snprintf(order, size, "%s", resp.location);
    json_str(&resp, "finalize", fin, sizeof(fin));
    pki_acme_resp_free(&resp);

    authz_all_valid(rc, "acmeprof:", acct);

    csr = csr_body(dns);
    post(pk, kid, rel(fin), csr, NULL, &resp);
    free(csr);
    json_str(&resp, "certificate", cert, sizeof(cert));
    pki_acme_resp_free(&resp);
    if (cert[0] == '\0') {
        return NULL;
    }

    post(pk, kid, rel(cert), "", NULL, &resp);
    bio = BIO_new_mem_buf(resp.body, (int) resp.body_len);
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    pki_acme_resp_free(&resp);

    return x;
}


/* notAfter - notBefore in seconds (a validity of v seconds gives v - 1:
 * RFC 5280 4.1.2.5 counts notAfter in), and whether the EKU holds
 * clientAuth */
static long
cert_life(X509 *x)
{
    int  days, secs;

    if (x == NULL
        || !ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x),
                           X509_get0_notAfter(x)))
    {
        return -1;
    }

    return days * 86400L + secs;
}


static int
cert_client_auth(X509 *x)
{
    return x != NULL && (X509_get_extension_flags(x) & EXFLAG_XKUSAGE)
           && (X509_get_extended_key_usage(x) & XKU_SSL_CLIENT);
}


static void
test_profiles(const char *sock)
{
    int                 i, clean;
    char                kid[256], acct[64], order[256], order2[256];
    char                body[1024], fin[256], *csr;
    X509               *x;
    time_t              start, na;
    EVP_PKEY           *pk;
    pki_redis_t        *r;
    redisReply         *reply;
    redisContext       *rc;
    pki_result_t        res;
    pki_acme_resp_t     resp;
    static const char *const short_lines[] = {
        "key_types ec:P-256", "subject CN copy", "san dns copy",
        "validity 7d", "extended_key_usage serverAuth clientAuth", NULL
    };
    pki_acme_profile_t  profiles[3], only[2];

    r = store_open(sock, "acmeprof:", &rc);
    pki_result_init(&res);

    tshort = fx_template("short", short_lines);
    ok(pki_ca_add_template(conf.ca, tshort, &res) == PKI_OK,
       "the CA issues with template short too");

    /* no profiles: none in the directory */
    acme("GET", "directory", NULL, NULL, &resp);
    ok(resp.http_status == 200 && !has(&resp, "\"profiles\""),
       "directory without profiles: no meta.profiles");
    pki_acme_resp_free(&resp);

    memset(profiles, 0, sizeof(profiles));
    profiles[0].name = "short";
    profiles[0].tmpl = tshort;
    profiles[0].description = "7 days, serverAuth and clientAuth";
    profiles[1].name = "classic";
    profiles[1].tmpl = conf.tmpl;
    conf.profiles = profiles;

    acme("GET", "directory", NULL, NULL, &resp);
    ok(resp.http_status == 200
       && has(&resp, "\"profiles\":{\"short\":\"7 days, serverAuth and "
                     "clientAuth\",\"classic\":\"classic\"}"),
       "directory: meta.profiles, name: description (the name without "
       "one)");
    pki_acme_resp_free(&resp);

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    post(pk, NULL, "new-account", "{\"termsOfServiceAgreed\":true}", NULL,
         &resp);
    snprintf(kid, sizeof(kid), "%s", resp.location ? resp.location : "");
    snprintf(acct, sizeof(acct), "%s", strrchr(kid, '/') + 1);
    pki_acme_resp_free(&resp);

    /* each profile issues with its template */
    x = profile_issue(rc, pk, kid, acct, "short.example",
                      ",\"profile\":\"short\"", order, sizeof(order));
    ok(cert_life(x) == 7 * 86400L - 1 && cert_client_auth(x),
       "profile short: 7 days, notAfter included, clientAuth (got %ld s)",
       cert_life(x));

    post(pk, kid, rel(order), "", NULL, &resp);
    ok(has(&resp, "\"profile\":\"short\"") && has(&resp, "\"valid\""),
       "the order shows its profile");
    pki_acme_resp_free(&resp);

    /* renewalInfo of a short certificate: the window of 7 days */
    ari_start(x, &resp, body, sizeof(body), &na);
    ok(resp.http_status == 200 && t3339(body, &start)
       && start == na - 7 * 86400L / 3,
       "renewalInfo of a profile's certificate: its template's window "
       "(start %s)", body);
    pki_acme_resp_free(&resp);
    X509_free(x);

    x = profile_issue(rc, pk, kid, acct, "classic.example",
                      ",\"profile\":\"classic\"", order, sizeof(order));
    ok(cert_life(x) == 90 * 86400L - 1 && !cert_client_auth(x),
       "profile classic: 90 days, notAfter included, no clientAuth (got "
       "%ld s)", cert_life(x));

    /* renewalInfo follows the template the record names, not the
     * default: with a 7-day default, a 90-day certificate of a profile
     * still gets the window of 90 days */
    conf.tmpl = tshort;
    ari_start(x, &resp, body, sizeof(body), &na);
    ok(resp.http_status == 200 && t3339(body, &start)
       && start == na - 90 * 86400L / 3,
       "renewalInfo: the window of the record's template, not the "
       "default's (start %s)", body);
    pki_acme_resp_free(&resp);
    conf.tmpl = profiles[1].tmpl;
    X509_free(x);

    /* no profile: the default template, and the order names none */
    x = profile_issue(rc, pk, kid, acct, "default.example", "", order,
                      sizeof(order));
    ok(cert_life(x) == 90 * 86400L - 1 && !cert_client_auth(x),
       "no profile: the default template (got %ld s)", cert_life(x));
    X509_free(x);
    post(pk, kid, rel(order), "", NULL, &resp);
    ok(resp.http_status == 200 && !has(&resp, "\"profile\""),
       "an order without a profile shows none");
    pki_acme_resp_free(&resp);

    /* refused: not offered, not a string, hostile */
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"x.example\"}],\"profile\":\"tlsserver\"}", NULL, &resp);
    ok(has(&resp, "\\\"tlsserver\\\" is not offered"),
       "unknown profile: named in the detail");
    check_problem("unknown profile", &resp, 400, "invalidProfile");
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"x.example\"}],\"profile\":42}", NULL, &resp);
    check_problem("profile not a string", &resp, 400, "invalidProfile");
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"x.example\"}],\"profile\":null}", NULL, &resp);
    check_problem("profile null", &resp, 400, "invalidProfile");
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"x.example\"}],\"profile\":\"\"}", NULL, &resp);
    check_problem("empty profile", &resp, 400, "invalidProfile");
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"x.example\"}],\"profile\":\"SHORT\"}", NULL, &resp);
    check_problem("profile names are case-sensitive", &resp, 400,
                  "invalidProfile");

    snprintf(body, sizeof(body), "{\"identifiers\":[{\"type\":\"dns\","
             "\"value\":\"x.example\"}],\"profile\":\"sh\\\"ort\\n\\u0001"
             "\\u00e9%0300d\"}", 7);
    post(pk, kid, "new-order", body, NULL, &resp);
    clean = 1;
    for (i = 0; resp.res.detail[i] != '\0'; i++) {
        clean &= resp.res.detail[i] >= ' ' && resp.res.detail[i] < 0x7f;
    }
    ok(clean && strlen(resp.res.detail) < 200 && body_utf8(&resp)
       && has(&resp, "sh?ort????0000") && has(&resp, "...\\\"")
       && !has(&resp, "00000000000000000000000000000"),
       "a hostile profile: cut to 32, tamed, in the log too (%s)",
       resp.res.detail);
    check_problem("hostile profile", &resp, 400, "invalidProfile");

    reply = redisCommand(rc, "KEYS acmeprof:{acme:%s}:order:*", acct);
    ok(reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3,
       "refused profiles stored no order");
    freeReplyObject(reply);

    /* the profile's template decides names and validity at newOrder */
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"ip\","
         "\"value\":\"192.0.2.9\"}],\"profile\":\"short\"}", NULL, &resp);
    check_problem("an ip under a profile without ip names", &resp, 400,
                  "rejectedIdentifier");
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"ip\","
         "\"value\":\"192.0.2.9\"}],\"profile\":\"classic\"}", NULL, &resp);
    ok(resp.http_status == 201, "the same ip under profile classic: 201");
    pki_acme_resp_free(&resp);
    {
        char       nafter[32];
        time_t     t = time(NULL) + 30 * 86400;
        struct tm  tm;

        gmtime_r(&t, &tm);
        strftime(nafter, sizeof(nafter), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(body, sizeof(body), "{\"identifiers\":[{\"type\":\"dns\","
                 "\"value\":\"x.example\"}],\"notAfter\":\"%s\","
                 "\"profile\":\"short\"}", nafter);
        post(pk, kid, "new-order", body, NULL, &resp);
        ok(has(&resp, "outside what the profile allows (at most 7d "
               "(604800 s), starting"),
           "notAfter in 30 days under the 7-day profile: the limit in days "
           "(%s)", resp.res.detail);
        check_problem("notAfter in 30 days under the 7-day profile", &resp,
                      400, "malformed");
        snprintf(body, sizeof(body), "{\"identifiers\":[{\"type\":\"dns\","
                 "\"value\":\"x.example\"}],\"notAfter\":\"%s\"}", nafter);
        post(pk, kid, "new-order", body, NULL, &resp);
        ok(resp.http_status == 201,
           "notAfter in 30 days without a profile: 201");
        pki_acme_resp_free(&resp);
    }

    /* RFC 5280 4.1.2.5: notBefore through notAfter, both included, is
     * the span, so a 7-day profile takes a notAfter 7 days less 1 s after
     * the notBefore, not one a second later (it did: 7 days and 1 s) */
    for (i = 0; i < 2; i++) {
        char       nbefore[32], nafter[32];
        time_t     t = time(NULL) + 3600;
        struct tm  tm;

        gmtime_r(&t, &tm);
        strftime(nbefore, sizeof(nbefore), "%Y-%m-%dT%H:%M:%SZ", &tm);
        t += 7 * 86400L - 1 + i;
        gmtime_r(&t, &tm);
        strftime(nafter, sizeof(nafter), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(body, sizeof(body), "{\"identifiers\":[{\"type\":\"dns\","
                 "\"value\":\"x.example\"}],\"notBefore\":\"%s\","
                 "\"notAfter\":\"%s\",\"profile\":\"short\"}", nbefore,
                 nafter);
        post(pk, kid, "new-order", body, NULL, &resp);
        if (i == 0) {
            ok(resp.http_status == 201, "notBefore + 7 days - 1 s under the "
               "7-day profile: 201 (%d)", resp.http_status);
            pki_acme_resp_free(&resp);
        } else {
            check_problem("notBefore + 7 days under the 7-day profile "
                          "(a second too long)", &resp, 400, "malformed");
        }
    }

    /* a profile removed from the configuration since the order was made:
     * finalize fails the order, nothing is issued */
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"gone.example\"}],\"profile\":\"short\"}", NULL, &resp);
    snprintf(order2, sizeof(order2), "%s", resp.location ? resp.location
                                                         : "");
    json_str(&resp, "finalize", fin, sizeof(fin));
    pki_acme_resp_free(&resp);
    authz_all_valid(rc, "acmeprof:", acct);

    memset(only, 0, sizeof(only));
    only[0] = profiles[1];
    conf.profiles = only;

    csr = csr_body("gone.example");
    post(pk, kid, rel(fin), csr, NULL, &resp);
    ok(has(&resp, "\\\"short\\\" of the order is no longer offered"),
       "removed profile: finalize says so");
    check_problem("finalize with a removed profile", &resp, 403,
                  "unauthorized");
    post(pk, kid, rel(order2), "", NULL, &resp);
    ok(has(&resp, "\"status\":\"invalid\"") && has(&resp, "\"error\"")
       && has(&resp, "unauthorized") && !has(&resp, "\"certificate\"")
       && has(&resp, "\"profile\":\"short\""),
       "the order is invalid with its error, no certificate");
    pki_acme_resp_free(&resp);
    post(pk, kid, rel(fin), csr, NULL, &resp);
    check_problem("finalize again", &resp, 403, "orderNotReady");
    free(csr);

    /* an order stored before profiles existed has none: default */
    conf.profiles = NULL;
    x = profile_issue(rc, pk, kid, acct, "old.example", "", order,
                      sizeof(order));
    ok(cert_life(x) == 90 * 86400L - 1,
       "without profiles configured: the default template (got %ld s)",
       cert_life(x));
    X509_free(x);
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"x.example\"}],\"profile\":\"short\"}", NULL, &resp);
    check_problem("a profile where none are configured", &resp, 400,
                  "invalidProfile");

    EVP_PKEY_free(pk);
    store_close(r, rc, "acmeprof:*");
}


/* ---- order errors and subproblems (RFC 8555 7.1.3, 6.7.1) --------------- */

/* A member of a JSON object as a string ("" when it is not one). */
static const char *
jstr(const cJSON *o, const char *name)
{
    const char  *v;

    v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, name));
    return v != NULL ? v : "";
}


/* The response body as JSON, or NULL. */
static cJSON *
body_json(const pki_acme_resp_t *resp)
{
    return resp->body ? cJSON_ParseWithLength((const char *) resp->body,
                                              resp->body_len)
                      : NULL;
}


/* Whether subs holds a subproblem of type (the 6.7 name; NULL: any) with
 * a detail and the identifier id_type:value. */
static int
sub_has(const cJSON *subs, const char *id_type, const char *value,
    const char *type)
{
    char          t[96];
    const cJSON  *sub, *id;

    snprintf(t, sizeof(t), "urn:ietf:params:acme:error:%s",
             type ? type : "");

    cJSON_ArrayForEach(sub, subs) {
        id = cJSON_GetObjectItemCaseSensitive(sub, "identifier");
        if (strcmp(jstr(id, "type"), id_type) == 0
            && strcmp(jstr(id, "value"), value) == 0
            && jstr(sub, "detail")[0] != '\0'
            && (type == NULL || strcmp(jstr(sub, "type"), t) == 0))
        {
            return 1;
        }
    }

    return 0;
}


/* The order at ourl: its JSON, and the "error" member in *err. */
static cJSON *
order_get(EVP_PKEY *pk, const char *kid, const char *ourl, cJSON **err)
{
    cJSON            *o;
    pki_acme_resp_t   resp;

    post(pk, kid, rel(ourl), "", NULL, &resp);
    o = body_json(&resp);
    pki_acme_resp_free(&resp);
    *err = cJSON_GetObjectItemCaseSensitive(o, "error");

    return o;
}


/* A new order for names (a JSON list of identifiers): its URL into ourl
 * and its authorization URLs into az (up to n). */
static void
order_new(EVP_PKEY *pk, const char *kid, const char *ids, char *ourl,
    char az[][256], int n)
{
    char              body[512], *v;
    cJSON            *o;
    pki_acme_resp_t   resp;

    snprintf(body, sizeof(body), "{\"identifiers\":%s}", ids);
    post(pk, kid, "new-order", body, NULL, &resp);
    snprintf(ourl, 256, "%s", resp.location ? resp.location : BASE "/x");
    o = body_json(&resp);
    for (int i = 0; i < n; i++) {
        v = cJSON_GetStringValue(cJSON_GetArrayItem(
                cJSON_GetObjectItemCaseSensitive(o, "authorizations"), i));
        snprintf(az[i], 256, "%s", v != NULL ? v : BASE "/x");
    }
    cJSON_Delete(o);
    pki_acme_resp_free(&resp);
}


/* The authorization at URL az as its client reads it (NULL: none). */
static cJSON *
authz_get(EVP_PKEY *pk, const char *kid, const char *az)
{
    cJSON            *authz;
    pki_acme_resp_t   resp;

    post(pk, kid, rel(az), "", NULL, &resp);
    authz = body_json(&resp);
    pki_acme_resp_free(&resp);

    return authz;
}


/* The URL of authorization az's http-01 challenge into url ("" if none). */
static void
http01_url(EVP_PKEY *pk, const char *kid, const char *az, char *url,
    size_t size)
{
    cJSON  *authz, *ch;

    authz = authz_get(pk, kid, az);
    url[0] = '\0';
    cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(authz,
                                                          "challenges"))
    {
        if (strcmp(jstr(ch, "type"), "http-01") == 0) {
            snprintf(url, size, "%s", jstr(ch, "url"));
        }
    }
    cJSON_Delete(authz);
}


/* Moves the "started" of authorization URL az's http-01 challenge ago
 * seconds into the past (a job that never stored its result). */
static void
chall_started(redisContext *rc, const char *az, long ago)
{
    char         key[512], acct[64], aid[64], *text;
    cJSON       *o, *ch;
    redisReply  *g;

    if (sscanf(az, BASE "/authz/%63[^/]/%63s", acct, aid) != 2) {
        return;
    }
    snprintf(key, sizeof(key), "acmestale:{acme:%s}:authz:%s", acct, aid);
    g = redisCommand(rc, "GET %s", key);
    o = g != NULL && g->type == REDIS_REPLY_STRING ? cJSON_Parse(g->str)
                                                    : NULL;
    freeReplyObject(g);
    cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(o, "challenges"))
    {
        if (strcmp(jstr(ch, "type"), "http-01") == 0) {
            cJSON_ReplaceItemInObjectCaseSensitive(ch, "started",
                cJSON_CreateNumber((double) (time(NULL) - ago)));
        }
    }
    text = cJSON_PrintUnformatted(o);
    if (text != NULL) {
        freeReplyObject(redisCommand(rc, "SET %s %s KEEPTTL", key, text));
    }
    free(text);
    cJSON_Delete(o);
}


/* A poll of the authorization: whether it restarted the validation. */
static int
authz_poll_restarts(EVP_PKEY *pk, const char *kid, const char *az)
{
    int              started;
    pki_acme_resp_t  resp;

    post(pk, kid, rel(az), "", NULL, &resp);
    started = resp.job != NULL;
    pki_acme_job_free(resp.job);
    resp.job = NULL;
    pki_acme_resp_free(&resp);

    return started;
}


/* A new account's kid (size bytes at most). */
static void
account_kid(EVP_PKEY *pk, char *kid, size_t size)
{
    pki_acme_resp_t  resp;

    post(pk, NULL, "new-account", "{\"termsOfServiceAgreed\":true}", NULL,
         &resp);
    snprintf(kid, size, "%s", resp.location ? resp.location : "");
    pki_acme_resp_free(&resp);
}


/* An order for name whose http-01 challenge is posted: the job it
 * started (NULL: none), not run; *az the authorization's URL. */
static pki_acme_job_t *
http01_posted(EVP_PKEY *pk, const char *kid, const char *name,
    char az[1][256])
{
    char              ids[128], ourl[256], url[256];
    pki_acme_job_t   *job;
    pki_acme_resp_t   resp;

    snprintf(ids, sizeof(ids), "[{\"type\":\"dns\",\"value\":\"%s\"}]",
             name);
    order_new(pk, kid, ids, ourl, az, 1);
    http01_url(pk, kid, az[0], url, sizeof(url));
    post(pk, kid, url[0] ? rel(url) : "x", "{}", NULL, &resp);
    job = resp.job;
    resp.job = NULL;
    pki_acme_resp_free(&resp);

    return job;
}


/* A challenge left "processing" restarts only when its job cannot still be
 * running: it validates and then reads CAA, each within the validation
 * timeout, so after PKI_ACME_STALE (30 s), or twice the timeout and 5 s
 * when that is longer. */
static void
test_stale_restart(const char *sock)
{
    size_t             i;
    char               kid[256], az[1][256];
    unsigned           saved;
    EVP_PKEY          *pk;
    pki_redis_t       *r;
    redisContext      *rc;
    pki_acme_job_t    *job;

    static const struct {
        unsigned  timeout_ms;
        long      ago;
        int       restarts;
    } cases[] = {
        { 20000, 40, 0 },       /* 2 x 20 + 5 s: it may still run */
        { 20000, 50, 1 },
        { 3000, 25, 0 },        /* PKI_ACME_STALE, 30 s */
        { 3000, 35, 1 },
    };

    r = store_open(sock, "acmestale:", &rc);
    saved = conf.validate.timeout_ms;

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    account_kid(pk, kid, sizeof(kid));

    /* the job is lost: never run */
    job = http01_posted(pk, kid, "stale.example", az);
    ok(job != NULL, "stale: http-01 started");
    pki_acme_job_free(job);

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        conf.validate.timeout_ms = cases[i].timeout_ms;
        chall_started(rc, az[0], cases[i].ago);
        ok(authz_poll_restarts(pk, kid, az[0]) == cases[i].restarts,
           "a %u s timeout, a job started %ld s ago: %s",
           cases[i].timeout_ms / 1000, cases[i].ago,
           cases[i].restarts ? "a poll restarts it" : "left running");
    }

    conf.validate.timeout_ms = saved;
    EVP_PKEY_free(pk);
    store_close(r, rc, "acmestale:*");
}


/* A one-shot http-01 responder: answers the first request with body,
 * after touching the authorization stored at key (a field added: its
 * text changes while the validation runs, as when another challenge of
 * it is posted) and, with restart, moving its http-01 challenge's
 * "started" 31 s on (what a poll does that finds the challenge stale and
 * starts it again while the first job still runs). */
typedef struct {
    int          fd;
    int          restart;
    const char  *sock;
    char         key[512];
    char         body[256];
} touch_srv_t;


static void *
touch_srv(void *arg)
{
    int            c;
    char           buf[2048], out[512], *text;
    cJSON         *o, *ch;
    ssize_t        n;
    size_t         got;
    touch_srv_t   *t = arg;
    redisReply    *g;
    redisContext  *rc;

    c = accept(t->fd, NULL, NULL);
    if (c < 0) {
        return NULL;
    }

    got = 0;
    while (got < sizeof(buf) - 1
           && (n = recv(c, buf + got, sizeof(buf) - 1 - got, 0)) > 0)
    {
        got += (size_t) n;
        buf[got] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL) {
            break;
        }
    }

    rc = redisConnectUnix(t->sock);
    g = rc != NULL ? redisCommand(rc, "GET %s", t->key) : NULL;
    o = g != NULL && g->type == REDIS_REPLY_STRING ? cJSON_Parse(g->str)
                                                    : NULL;
    freeReplyObject(g);
    if (o != NULL) {
        cJSON_AddNumberToObject(o, "touch", 1);
        cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(o,
                                                          "challenges"))
        {
            if (t->restart && strcmp(jstr(ch, "type"), "http-01") == 0) {
                cJSON_ReplaceItemInObjectCaseSensitive(ch, "started",
                    cJSON_CreateNumber(cJSON_GetNumberValue(
                        cJSON_GetObjectItemCaseSensitive(ch, "started"))
                        + 31));
            }
        }
        text = cJSON_PrintUnformatted(o);
        if (text != NULL) {
            freeReplyObject(redisCommand(rc, "SET %s %s KEEPTTL", t->key,
                                         text));
        }
        cJSON_free(text);
        cJSON_Delete(o);
    }
    redisFree(rc);

    n = snprintf(out, sizeof(out), "HTTP/1.1 200 OK\r\nContent-Length: %zu"
                 "\r\nConnection: close\r\n\r\n%s", strlen(t->body),
                 t->body);
    if (send(c, out, (size_t) n, 0) < 0) {
        diag("touch_srv: send failed");
    }
    close(c);

    return NULL;
}


/* A new order for name whose http-01 challenge is posted and its job run
 * against touch_srv (restart as there), which answers right: the job's
 * result in *res, the authorization's URL in az. */
static void
touch_validate(const char *sock, EVP_PKEY *pk, const char *kid,
    const char *name, int restart, char az[1][256], pki_result_t *res)
{
    char                ids[128], ourl[256], url[256];
    char                acct[64], aid[64], thumb[PKI_JWK_THUMB_LEN];
    cJSON              *authz, *ch;
    pthread_t           th;
    socklen_t           slen;
    touch_srv_t         srv;
    pki_acme_resp_t     resp;
    struct sockaddr_in  sin;

    snprintf(ids, sizeof(ids), "[{\"type\":\"dns\",\"value\":\"%s\"}]",
             name);
    order_new(pk, kid, ids, ourl, az, 1);
    authz = authz_get(pk, kid, az[0]);
    memset(&srv, 0, sizeof(srv));
    srv.restart = restart;
    url[0] = '\0';
    cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(authz,
                                                          "challenges"))
    {
        if (strcmp(jstr(ch, "type"), "http-01") == 0
            && pki_jwk_thumbprint(pk, thumb))
        {
            snprintf(url, sizeof(url), "%s", jstr(ch, "url"));
            snprintf(srv.body, sizeof(srv.body), "%s.%s", jstr(ch, "token"),
                     thumb);
        }
    }
    cJSON_Delete(authz);

    if (sscanf(az[0], BASE "/authz/%63[^/]/%63s", acct, aid) == 2) {
        snprintf(srv.key, sizeof(srv.key), "acmestale:{acme:%s}:authz:%s",
                 acct, aid);
    }
    srv.sock = sock;
    srv.fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    slen = sizeof(sin);
    if (srv.fd < 0 || bind(srv.fd, (struct sockaddr *) &sin, sizeof(sin))
        != 0 || listen(srv.fd, 4) != 0
        || getsockname(srv.fd, (struct sockaddr *) &sin, &slen) != 0
        || pthread_create(&th, NULL, touch_srv, &srv) != 0)
    {
        diag("no http-01 responder");
        th = 0;
    }
    conf.validate.http_port = ntohs(sin.sin_port);

    post(pk, kid, url[0] ? rel(url) : "x", "{}", NULL, &resp);
    pki_result_init(res);
    if (resp.job != NULL) {
        pki_acme_job_run(&conf, resp.job, res);
    }
    pki_acme_job_free(resp.job);
    resp.job = NULL;
    pki_acme_resp_free(&resp);
    if (th != 0) {
        pthread_join(th, NULL);
    }
    if (srv.fd >= 0) {
        close(srv.fd);
    }
}


/* The validation job once its challenge is posted: one that waited for a
 * thread and finds its challenge restarted since (a poll took it for lost)
 * fetches nothing; one whose authorization changes while it validates (a
 * compare-and-set that fails) reads the authorization again and stores
 * its result there, unless a poll restarted the challenge meanwhile (the
 * newer attempt's job decides). */
static void
test_job_store(const char *sock)
{
    char                kid[256], az[1][256];
    cJSON              *authz, *ch;
    EVP_PKEY           *pk;
    pki_redis_t        *r;
    pki_result_t        res;
    redisContext       *rc;
    pki_acme_job_t     *job;
    pki_acme_validate_conf_t  saved;

    r = store_open(sock, "acmestale:", &rc);
    saved = conf.validate;

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    account_kid(pk, kid, sizeof(kid));

    /* a job that waited while a poll restarted its challenge */
    job = http01_posted(pk, kid, "waited.example", az);
    ok(job != NULL, "job: http-01 started");
    /* restarted meanwhile: a start the job cannot have (its own is at
     * most now; "now - 1" equals it when a second turns in between) */
    chall_started(rc, az[0], -5);
    sleep(2);                                   /* waited for a thread */
    conf.validate.http_port = 9;                /* nothing is fetched */
    conf.validate.resolve_to = "127.0.0.1";
    conf.validate.allow_private = 1;
    pki_result_init(&res);
    if (job != NULL) {
        pki_acme_job_run(&conf, job, &res);
    }
    pki_acme_job_free(job);
    ok(res.status == PKI_CONFLICT && strstr(res.detail, "skipped") != NULL,
       "job: a job that waited, its challenge restarted since: skipped (%s)",
       res.detail);
    authz = authz_get(pk, kid, az[0]);
    ok(strcmp(jstr(authz, "status"), "pending") == 0,
       "job: ... the authorization stays pending");
    cJSON_Delete(authz);

    /* the authorization changes while the validation runs */
    touch_validate(sock, pk, kid, "touch.example", 0, az, &res);
    ok(res.status == PKI_OK, "job: the authorization changed during the "
       "validation: stored after reading it again (%s)", res.detail);
    authz = authz_get(pk, kid, az[0]);
    ok(strcmp(jstr(authz, "status"), "valid") == 0,
       "job: ... the authorization is valid");
    cJSON_Delete(authz);

    /* a poll restarts the challenge while its first job still runs (that
     * job waited in the worker, then validation and CAA took it past the
     * stale time): the first job's result is older than the attempt now
     * running, whose job stores its own */
    touch_validate(sock, pk, kid, "restart.example", 1, az, &res);
    ok(res.status == PKI_CONFLICT && strstr(res.detail, "restarted"),
       "job: the challenge restarted during the validation: nothing "
       "stored (%s)", res.detail);
    authz = authz_get(pk, kid, az[0]);
    ok(strcmp(jstr(authz, "status"), "pending") == 0,
       "job: ... the authorization stays pending");
    ch = NULL;
    cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(authz,
                                                          "challenges"))
    {
        if (strcmp(jstr(ch, "type"), "http-01") == 0) {
            break;
        }
    }
    ok(ch != NULL && strcmp(jstr(ch, "status"), "processing") == 0,
       "job: ... its challenge still processing (the newer attempt)");
    cJSON_Delete(authz);

    /* a fault of this server (here a resolver setting that is no address:
     * serverInternal) is nothing the client's name did: nothing stored,
     * the challenge stays processing, and a poll restarts it once stale */
    conf.validate = saved;
    job = http01_posted(pk, kid, "fault.example", az);
    ok(job != NULL, "job: http-01 started (a server fault to come)");
    conf.validate.resolve_to = NULL;
    conf.validate.resolver = "not-an-address";
    pki_result_init(&res);
    if (job != NULL) {
        pki_acme_job_run(&conf, job, &res);
    }
    pki_acme_job_free(job);
    ok(res.status == PKI_INTERNAL && strstr(res.detail, "not stored"),
       "job: a server fault (an unusable resolver): internal, not stored "
       "(%s)", res.detail);
    authz = authz_get(pk, kid, az[0]);
    ok(strcmp(jstr(authz, "status"), "pending") == 0,
       "job: ... the authorization stays pending (%s)",
       jstr(authz, "status"));
    ch = NULL;
    cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(authz,
                                                          "challenges"))
    {
        if (strcmp(jstr(ch, "type"), "http-01") == 0) {
            break;
        }
    }
    ok(ch != NULL && strcmp(jstr(ch, "status"), "processing") == 0
       && cJSON_GetObjectItemCaseSensitive(ch, "error") == NULL,
       "job: ... its challenge still processing, no error (%s)",
       ch != NULL ? jstr(ch, "status") : "none");
    cJSON_Delete(authz);
    conf.validate = saved;
    chall_started(rc, az[0], 35);
    ok(authz_poll_restarts(pk, kid, az[0]),
       "job: ... a poll restarts it once stale");

    conf.validate = saved;
    EVP_PKEY_free(pk);
    store_close(r, rc, "acmestale:*");
}


/* A Redis proxy on a unix socket that, while armed, runs hook before a
 * command whose bytes hold mark goes on to Redis: what another request
 * does between two commands of this one, or a failure, made to order.
 * The hook returns 0 to pass the command on and disarm, -1 to pass it on
 * (still armed), 1 to answer it with an error instead (still armed), 2 to
 * pass it on, drop Redis's answer and close the client's connection (an
 * answer lost after the command ran; disarms). */
typedef struct {
    int            lfd;
    volatile int   stop;
    volatile int   armed;
    const char    *up;
    const char    *mark;
    int          (*hook)(void *data, const char *cmd, size_t len);
    void          *data;
    pthread_t      th;
    char           path[100];
} hook_proxy_t;


#define HOOK_PAIRS  8


static void *
hook_proxy(void *arg)
{
    int            i, n, fd[HOOK_PAIRS][2], from, to, v;
    char           buf[65536];
    ssize_t        got;
    struct pollfd  pfd[1 + 2 * HOOK_PAIRS];
    hook_proxy_t  *p = arg;
    struct sockaddr_un  sun;

    for (i = 0; i < HOOK_PAIRS; i++) {
        fd[i][0] = -1;
        fd[i][1] = -1;
    }

    while (!p->stop) {
        pfd[0].fd = p->lfd;
        pfd[0].events = POLLIN;
        for (i = 0; i < HOOK_PAIRS; i++) {
            pfd[1 + 2 * i].fd = fd[i][0];
            pfd[1 + 2 * i].events = POLLIN;
            pfd[2 + 2 * i].fd = fd[i][1];
            pfd[2 + 2 * i].events = POLLIN;
        }
        if (poll(pfd, 1 + 2 * HOOK_PAIRS, 100) <= 0) {
            continue;
        }

        if (pfd[0].revents & POLLIN) {
            for (i = 0; i < HOOK_PAIRS && fd[i][0] >= 0; i++) { /* void */ }
            n = accept(p->lfd, NULL, NULL);
            if (n >= 0 && i == HOOK_PAIRS) {
                close(n);

            } else if (n >= 0) {
                fd[i][0] = n;
                fd[i][1] = socket(AF_UNIX, SOCK_STREAM, 0);
                memset(&sun, 0, sizeof(sun));
                sun.sun_family = AF_UNIX;
                snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", p->up);
                if (fd[i][1] < 0
                    || connect(fd[i][1], (struct sockaddr *) &sun,
                               sizeof(sun)) != 0)
                {
                    diag("hook_proxy: no upstream");
                }
            }
        }

        for (i = 0; i < HOOK_PAIRS; i++) {
            for (from = 0; from < 2; from++) {
                if (fd[i][from] < 0
                    || !(pfd[1 + 2 * i + from].revents
                         & (POLLIN | POLLHUP | POLLERR)))
                {
                    continue;
                }
                to = 1 - from;
                got = read(fd[i][from], buf, sizeof(buf));
                if (got <= 0) {
                    close(fd[i][0]);
                    close(fd[i][1]);
                    fd[i][0] = -1;
                    fd[i][1] = -1;
                    break;
                }
                /* hiredis writes a command in one go, read here whole */
                v = -1;
                if (from == 0 && p->armed
                    && memmem(buf, (size_t) got, p->mark, strlen(p->mark))
                       != NULL)
                {
                    v = p->hook(p->data, buf, (size_t) got);
                    p->armed = v != 0;
                }
                if (v == 2) {
                    p->armed = 0;

                    if (write(fd[i][1], buf, (size_t) got) != got
                        || read(fd[i][1], buf, sizeof(buf)) <= 0)
                    {
                        diag("hook_proxy: no answer to drop");
                    }
                    close(fd[i][0]);
                    close(fd[i][1]);
                    fd[i][0] = -1;
                    fd[i][1] = -1;
                    break;

                } else if (v == 1) {
                    static const char  e[] = "-ERR hook_proxy: refused\r\n";

                    if (write(fd[i][0], e, sizeof(e) - 1)
                        != (ssize_t) sizeof(e) - 1)
                    {
                        diag("hook_proxy: short write");
                    }

                } else if (write(fd[i][to], buf, (size_t) got) != got) {
                    diag("hook_proxy: short write");
                }
            }
        }
    }

    for (i = 0; i < HOOK_PAIRS; i++) {
        if (fd[i][0] >= 0) {
            close(fd[i][0]);
            close(fd[i][1]);
        }
    }

    return NULL;
}


/* Starts proxy p in front of the Redis at sock, on "race.sock" in the
 * test's directory; 1 done. */
static int
hook_proxy_start(hook_proxy_t *p, const char *sock)
{
    struct sockaddr_un  sun;

    p->up = sock;
    p->stop = 0;
    p->armed = 0;
    snprintf(p->path, sizeof(p->path), "%s/race.sock", dir);
    p->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", p->path);
    if (p->lfd < 0
        || bind(p->lfd, (struct sockaddr *) &sun, sizeof(sun)) != 0
        || listen(p->lfd, 8) != 0
        || pthread_create(&p->th, NULL, hook_proxy, p) != 0)
    {
        if (p->lfd >= 0) {
            close(p->lfd);
        }
        unlink(p->path);
        return 0;
    }

    return 1;
}


static void
hook_proxy_stop(hook_proxy_t *p)
{
    p->stop = 1;
    pthread_join(p->th, NULL);
    close(p->lfd);
    unlink(p->path);
}


/* The other request of a newAccount race, which made an account for the
 * key first: its key index and account (status, eab as given). */
typedef struct {
    const char  *sock;
    const char  *ns;
    const char  *status;
    EVP_PKEY    *pk;
    char         id[32];
} race_winner_t;


static int
race_winner(void *data, const char *cmd, size_t len)
{
    char            key[512], thumb[PKI_JWK_THUMB_LEN], *jwk, *text;
    cJSON          *o;
    redisContext   *rc;
    race_winner_t  *w = data;

    (void) cmd;
    (void) len;

    jwk = pki_jwk_json(w->pk);
    if (jwk == NULL || !pki_jwk_thumbprint(w->pk, thumb)) {
        free(jwk);
        return 0;
    }

    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", w->status);
    cJSON_AddStringToObject(o, "key", jwk);
    cJSON_AddStringToObject(o, "thumb", thumb);
    cJSON_AddBoolToObject(o, "tos", 1);
    cJSON_AddNumberToObject(o, "created", (double) time(NULL));
    text = cJSON_PrintUnformatted(o);

    rc = redisConnectUnix(w->sock);
    snprintf(key, sizeof(key), "%s{acme:%s}:acct", w->ns, w->id);
    freeReplyObject(redisCommand(rc, "SET %s %s", key, text));
    snprintf(key, sizeof(key), "%sacme:jwk:%s", w->ns, thumb);
    freeReplyObject(redisCommand(rc, "SET %s %s", key, w->id));
    redisFree(rc);

    cJSON_free(text);
    cJSON_Delete(o);
    free(jwk);

    return 0;
}


/* An EAB newAccount payload (RFC 8555 7.3.4, HS256) binding pk's JWK to
 * EAB key ckid with HMAC key hkey (base64url); malloc'd. */
static char *
eab_payload(EVP_PKEY *pk, const char *ckid, const char *hkey)
{
    char           *jwk, h[256], *ph, *pp, *ps, *in, *payload;
    size_t          klen;
    unsigned int    maclen;
    unsigned char  *k, mac[32];

    payload = NULL;
    jwk = pki_jwk_json(pk);
    snprintf(h, sizeof(h), "{\"alg\":\"HS256\",\"kid\":\"%s\","
             "\"url\":\"" BASE "/new-account\"}", ckid);
    ph = b64u(h, strlen(h));
    pp = b64u(jwk, strlen(jwk));
    k = NULL;
    if (asprintf(&in, "%s.%s", ph, pp) > 0) {
        pki_b64url_decode(hkey, strlen(hkey), &k, &klen);
        HMAC(EVP_sha256(), k, (int) klen, (unsigned char *) in, strlen(in),
             mac, &maclen);
        ps = b64u(mac, maclen);
        if (asprintf(&payload, "{\"externalAccountBinding\":{\"protected\":"
                     "\"%s\",\"payload\":\"%s\",\"signature\":\"%s\"}}",
                     ph, pp, ps) < 0)
        {
            payload = NULL;
        }
        free(ps);
        free(in);
    }

    free(k);
    free(ph);
    free(pp);
    free(jwk);

    return payload;
}


/* newAccount that loses the race to create the key's account (the other
 * request's script ran between this one's index read and its own): the
 * winner is answered with the same refusals as a key found in the index,
 * a deactivated one 401, one made without the binding this location
 * requires bound in place by this request's binding. */
static void
test_account_race(const char *sock)
{
    char              key[512], ckid[32];
    char              hkey[PKI_ACME_EAB_KEY_BUF], *payload;
    cJSON            *o;
    redisReply       *g;
    pki_redis_t      *r;
    hook_proxy_t      px;
    pki_result_t      res;
    redisContext     *rc;
    race_winner_t     w;
    pki_acme_resp_t   resp;

    memset(&px, 0, sizeof(px));
    px.mark = "if cur and redis.call('EXISTS', ARGV[3]";
    px.hook = race_winner;
    px.data = &w;
    if (!hook_proxy_start(&px, sock)) {
        ok(0, "race: no proxy");
        return;
    }

    r = state_open(px.path, "acmerace:");
    conf.redis = r;
    rc = redisConnectUnix(sock);

    memset(&w, 0, sizeof(w));
    w.sock = sock;
    w.ns = "acmerace:";

    /* the winner was deactivated (RFC 8555 7.3.6) before this answer */
    w.status = "deactivated";
    w.pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    snprintf(w.id, sizeof(w.id), "racewinner1");
    px.armed = 1;
    post(w.pk, NULL, "new-account", "{\"termsOfServiceAgreed\":true}", NULL,
         &resp);
    check_problem("race: the winner deactivated", &resp, 401,
                  "unauthorized");
    EVP_PKEY_free(w.pk);

    /* the winner made at a location that needs no binding, this one
     * needs it: this request's binding binds it in place */
    pki_result_init(&res);
    ok(pki_acme_eab_new(r, ckid, hkey, &res) == PKI_OK, "race: EAB key");
    conf.eab_required = 1;
    w.status = "valid";
    w.pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    snprintf(w.id, sizeof(w.id), "racewinner2");
    payload = eab_payload(w.pk, ckid, hkey);
    px.armed = 1;
    post(w.pk, NULL, "new-account", payload ? payload : "{}", NULL, &resp);
    ok(resp.http_status == 200 && resp.location != NULL
       && strstr(resp.location, "/acct/racewinner2") != NULL,
       "race: the winner without the binding this location needs: 200 "
       "(%d)", resp.http_status);
    pki_acme_resp_free(&resp);
    free(payload);
    conf.eab_required = 0;
    EVP_PKEY_free(w.pk);

    g = redisCommand(rc, "GET acmerace:{acme:racewinner2}:acct");
    o = g != NULL && g->type == REDIS_REPLY_STRING ? cJSON_Parse(g->str)
                                                    : NULL;
    ok(strcmp(jstr(o, "eab"), ckid) == 0, "race: ... bound to the "
       "request's EAB key in place");
    cJSON_Delete(o);
    freeReplyObject(g);
    snprintf(key, sizeof(key), "acmerace:acme:eab:%s", ckid);
    g = redisCommand(rc, "HGET %s account", key);
    ok(g != NULL && g->type == REDIS_REPLY_STRING
       && strcmp(g->str, "racewinner2") == 0,
       "race: ... the EAB key names the winner");
    freeReplyObject(g);

    hook_proxy_stop(&px);
    store_close(r, rc, "acmerace:*");
}


/* The store command that holds the order fails (hook_proxy). */
static int
order_refuse(void *data, const char *cmd, size_t len)
{
    (void) data;

    return memmem(cmd, len, "}:order:", 8) != NULL ? 1 : -1;
}


/* The number of keys matching pattern. */
static long long
keys_count(redisContext *rc, const char *pattern)
{
    long long    n;
    redisReply  *g;

    g = redisCommand(rc, "EVAL %s 0 %s", "return #redis.call('KEYS', "
                     "ARGV[1])", pattern);
    n = g != NULL && g->type == REDIS_REPLY_INTEGER ? g->integer : -1;
    freeReplyObject(g);

    return n;
}


/* newOrder stores its new authorizations, the order and the list in one
 * script call: with more identifiers than fit in one batch of 8 the
 * authorizations went first in calls of their own, and a failure at the
 * order's call left them without any order. */
static void
test_order_atomic(const char *sock)
{
    int               i;
    char              kid[256], ids[2048], pattern[128], acct[64];
    size_t            len;
    EVP_PKEY         *pk;
    pki_redis_t      *r;
    hook_proxy_t      px;
    redisContext     *rc;
    pki_acme_resp_t   resp;

    memset(&px, 0, sizeof(px));
    px.mark = "local n = tonumber(ARGV[1])";     /* pki_lua_mset */
    px.hook = order_refuse;
    if (!hook_proxy_start(&px, sock)) {
        ok(0, "atomic: no proxy");
        return;
    }

    r = state_open(px.path, "acmeatomic:");
    conf.redis = r;
    rc = redisConnectUnix(sock);

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    account_kid(pk, kid, sizeof(kid));
    acct[0] = '\0';
    if (sscanf(kid, BASE "/acct/%63s", acct) != 1) {
        diag("atomic: no account");
    }
    snprintf(pattern, sizeof(pattern), "acmeatomic:{acme:%s}:authz:*", acct);

    len = (size_t) snprintf(ids, sizeof(ids), "{\"identifiers\":[");
    for (i = 0; i < 20; i++) {
        len += (size_t) snprintf(ids + len, sizeof(ids) - len,
                                 "%s{\"type\":\"dns\",\"value\":"
                                 "\"n%d.atomic.example\"}", i ? "," : "", i);
    }
    snprintf(ids + len, sizeof(ids) - len, "]}");

    px.armed = 1;
    post(pk, kid, "new-order", ids, NULL, &resp);
    ok(resp.http_status == 503, "atomic: 20 identifiers, the order's store "
       "fails: 503 (%d)", resp.http_status);
    pki_acme_resp_free(&resp);
    ok(keys_count(rc, pattern) == 0, "atomic: ... no authorization left "
       "without its order (%lld)", keys_count(rc, pattern));

    px.armed = 0;
    post(pk, kid, "new-order", ids, NULL, &resp);
    ok(resp.http_status == 201, "atomic: then made: 201 (%d)",
       resp.http_status);
    pki_acme_resp_free(&resp);
    ok(keys_count(rc, pattern) == 20, "atomic: ... its 20 authorizations "
       "(%lld)", keys_count(rc, pattern));

    EVP_PKEY_free(pk);
    hook_proxy_stop(&px);
    store_close(r, rc, "acmeatomic:*");
}


/* RFC 8555 7.3.6 across locations: one account orders through a location
 * without acme_redis (pki_redis), one with state store B and one with
 * state store A, then deactivates through A.  Its pending authorizations
 * in all three stores are deactivated, and B's copy of the account says
 * so, so that B refuses the account at once. */
static void
test_deactivate_stores(const char *sock)
{
    int                 i;
    char                kid[256], acct[64], ourl[256], az[1][256];
    char                ids[128], key[3][512];
    EVP_PKEY           *pk;
    pki_redis_t        *r, *loc[3], *states[2];
    redisReply         *reply;
    redisContext       *rc;
    pki_acme_resp_t     resp;

    static const char *const  ns[3] = { "acmedx:", "acmedxb:", "acmedxa:" };

    r = store_open(sock, ns[0], &rc);
    loc[0] = NULL;

    for (i = 1; i < 3; i++) {
        loc[i] = state_open(sock, ns[i]);
    }

    /* what the glue hands every location: each acme_redis of the server */
    states[0] = loc[2];
    states[1] = loc[1];
    conf.acme_state = states;
    conf.nacme_state = 2;

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

    conf.state_redis = loc[2];
    post(pk, NULL, "new-account", "{}", NULL, &resp);
    ok(resp.http_status == 201, "stores: account made");
    snprintf(kid, sizeof(kid), "%s", resp.location ? resp.location : "/");
    snprintf(acct, sizeof(acct), "%s", strrchr(kid, '/') + 1);
    pki_acme_resp_free(&resp);

    for (i = 0; i < 3; i++) {
        conf.state_redis = loc[i];
        snprintf(ids, sizeof(ids), "[{\"type\":\"dns\","
                 "\"value\":\"dx%d.example\"}]", i);
        order_new(pk, kid, ids, ourl, az, 1);
        snprintf(key[i], sizeof(key[i]), "%s{acme:%s}:authz:%s", ns[i], acct,
                 strrchr(az[0], '/') + 1);
        reply = redisCommand(rc, "GET %s", key[i]);
        ok(reply && reply->type == REDIS_REPLY_STRING,
           "stores: a pending authorization in %s", ns[i]);
        freeReplyObject(reply);
    }

    /* B reads the account: its copy there is "valid" now */
    conf.state_redis = loc[1];
    post(pk, kid, rel(kid), "", NULL, &resp);
    ok(resp.http_status == 200, "stores: account read through B");
    pki_acme_resp_free(&resp);

    conf.state_redis = loc[2];
    post(pk, kid, rel(kid), "{\"status\":\"deactivated\"}", NULL, &resp);
    ok(resp.http_status == 200 && has(&resp, "\"deactivated\""),
       "stores: deactivated through A");
    ok(strstr(resp.res.log, "3 authorizations deactivated") != NULL,
       "stores: the log counts the three (%s)", resp.res.log);
    pki_acme_resp_free(&resp);

    for (i = 0; i < 3; i++) {
        reply = redisCommand(rc, "GET %s", key[i]);
        ok(reply && reply->type == REDIS_REPLY_STRING
           && strstr(reply->str, "\"status\":\"deactivated\""),
           "stores: the authorization in %s is deactivated", ns[i]);
        freeReplyObject(reply);
    }

    reply = redisCommand(rc, "GET %s{acme:%s}:acct", ns[1], acct);
    ok(reply && reply->type == REDIS_REPLY_STRING
       && strstr(reply->str, "\"status\":\"deactivated\""),
       "stores: B's copy of the account says deactivated");
    freeReplyObject(reply);

    conf.state_redis = loc[1];
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"dx9.example\"}]}", NULL, &resp);
    check_problem("stores: B refuses the account at once", &resp, 401,
                  "unauthorized");

    conf.state_redis = NULL;
    conf.acme_state = NULL;
    conf.nacme_state = 0;
    pki_redis_free(loc[1]);
    pki_redis_free(loc[2]);
    EVP_PKEY_free(pk);
    store_close(r, rc, "acmedx*");
}


/* An account change writes the account's copy into every state store; a
 * store that cannot be reached is named in the log, and the change stands
 * (the durable account is what counts). */
static void
test_copy_dead_store(const char *sock)
{
    char                kid[256], dead[300];
    EVP_PKEY           *pk;
    pki_redis_t        *r, *live, *gone, *states[2];
    redisReply         *reply;
    redisContext       *rc;
    pki_acme_resp_t     resp;

    r = store_open(sock, "acmecd:", &rc);

    live = state_open(sock, "acmecdl:");

    /* a socket nobody listens on */
    snprintf(dead, sizeof(dead), "%s.gone", sock);
    gone = state_open(dead, "acmecdg:");

    states[0] = live;
    states[1] = gone;
    conf.state_redis = live;
    conf.acme_state = states;
    conf.nacme_state = 2;

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    post(pk, NULL, "new-account", "{}", NULL, &resp);
    ok(resp.http_status == 201, "dead copy store: account made");
    snprintf(kid, sizeof(kid), "%s", resp.location ? resp.location : "/");
    pki_acme_resp_free(&resp);

    post(pk, kid, rel(kid), "{\"contact\":[\"mailto:cd@example.com\"]}",
         NULL, &resp);
    ok(resp.http_status == 200 && has(&resp, "mailto:cd@example.com"),
       "dead copy store: the update stands (200)");
    ok(strstr(resp.res.log, "could not be written in 1 state stores")
       != NULL, "dead copy store: the log names it (%s)", resp.res.log);
    pki_acme_resp_free(&resp);

    reply = redisCommand(rc, "GET acmecdl:{acme:%s}:acct",
                         strrchr(kid, '/') + 1);
    ok(reply && reply->type == REDIS_REPLY_STRING
       && strstr(reply->str, "mailto:cd@example.com"),
       "dead copy store: the reachable store's copy follows");
    freeReplyObject(reply);

    conf.state_redis = NULL;
    conf.acme_state = NULL;
    conf.nacme_state = 0;
    pki_redis_free(live);
    pki_redis_free(gone);
    EVP_PKEY_free(pk);
    store_close(r, rc, "acmecd*");
}


/* An order names in its "error" why it is invalid, with a subproblem for
 * each failed authorization; newOrder names every identifier it refuses;
 * an order that is fine has no error. */
static void
test_order_errors(const char *sock)
{
    int                 fd;
    char                kid[256], acct[64], ourl[256], az[2][256];
    char                okey[512], ctype[96], cdetail[256], buf[256];
    cJSON              *o, *err, *subs, *authz, *ch, *arr;
    EVP_PKEY           *pk;
    socklen_t           slen;
    pki_redis_t        *r;
    pki_result_t        res;
    redisReply         *reply;
    redisContext       *rc;
    pki_acme_resp_t     resp;
    struct sockaddr_in  sin;

    r = store_open(sock, "acmetest:", &rc);

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    post(pk, NULL, "new-account", "{\"termsOfServiceAgreed\":true}", NULL,
         &resp);
    snprintf(kid, sizeof(kid), "%s", resp.location ? resp.location : "");
    snprintf(acct, sizeof(acct), "%s", strrchr(kid, '/') + 1);
    pki_acme_resp_free(&resp);

    /* newOrder: two bad identifiers among three, each its own subproblem
     * (RFC 8555 6.7.1) */
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"bad..name\"},{\"type\":\"dns\","
         "\"value\":\"good.example\"},{\"type\":\"ip\","
         "\"value\":\"300.1.2.3\"}]}", NULL, &resp);
    o = body_json(&resp);
    subs = cJSON_GetObjectItemCaseSensitive(o, "subproblems");
    ok(cJSON_GetArraySize(subs) == 2
       && sub_has(subs, "dns", "bad..name", "rejectedIdentifier")
       && sub_has(subs, "ip", "300.1.2.3", "rejectedIdentifier"),
       "two bad identifiers of three: a subproblem each, with its "
       "identifier");
    ok(strstr(jstr(o, "detail"), "\"bad..name\"") != NULL
       && strstr(jstr(o, "detail"), "\"300.1.2.3\"") != NULL,
       "... and the detail names both (%s)", jstr(o, "detail"));
    cJSON_Delete(o);
    check_problem("two bad identifiers of three", &resp, 400,
                  "rejectedIdentifier");

    /* one bad identifier: the answer it always had, one subproblem */
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
         "\"value\":\"x..y\"},{\"type\":\"dns\",\"value\":\"ok.example\"}]}",
         NULL, &resp);
    o = body_json(&resp);
    subs = cJSON_GetObjectItemCaseSensitive(o, "subproblems");
    ok(strcmp(jstr(o, "detail"), "invalid DNS name \"x..y\": an empty "
              "label") == 0
       && cJSON_GetArraySize(subs) == 1
       && sub_has(subs, "dns", "x..y", "rejectedIdentifier"),
       "one bad identifier: its own detail, one subproblem");
    cJSON_Delete(o);
    check_problem("one bad identifier", &resp, 400, "rejectedIdentifier");

    /* a bad dns identifier's detail says what is wrong with it */
    {
        size_t        k;
        char          body[300];
        const char   *d;

        static const struct {
            const char  *value;
            const char  *why;
        } bad_dns[] = {
            { "127.0.0.1", "; an IP address is an identifier of type "
                           "\"ip\" (RFC 8738)" },
            { "::1", "; an IP address is an identifier of type \"ip\" "
                     "(RFC 8738)" },
            { "*.10.0.0.1", "; an IP address is an identifier of type "
                            "\"ip\" (RFC 8738)" },
            { "dot.example.com.", ": a trailing dot (a name is written "
                                  "without it)" },
            { ".example.com", ": an empty label" },
            { "-a.example", ": a label that starts with \"-\"" },
            { "a-.example", ": a label that ends with \"-\"" },
            { "b-", ": a label that ends with \"-\"" },
            { "under_score.example", ": a character other than a letter, "
                                     "a digit, \"-\" or \".\"" },
            { "a.*.example", ": \"*\" other than as a whole first label" },
            { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
              "aaaa.example", ": a label longer than 63 characters" },
            { "1.2.3", ": digits and dots only: no host name" },
            { "ab--cd.example", ": a label of the reserved \"\?\?--\" "
                                "form" },
        };

        for (k = 0; k < sizeof(bad_dns) / sizeof(bad_dns[0]); k++) {
            snprintf(body, sizeof(body), "{\"identifiers\":[{\"type\":"
                     "\"dns\",\"value\":\"%s\"}]}", bad_dns[k].value);
            post(pk, kid, "new-order", body, NULL, &resp);
            o = body_json(&resp);
            d = jstr(o, "detail");
            snprintf(body, sizeof(body), "invalid DNS name \"%.64s\"%s",
                     bad_dns[k].value, bad_dns[k].why);
            ok(strcmp(d, body) == 0, "dns \"%.20s\": the detail says why "
               "(%s)", bad_dns[k].value, d);
            cJSON_Delete(o);
            check_problem("bad dns identifier", &resp, 400,
                          "rejectedIdentifier");
        }
    }

    /* what is echoed of a client's UTF-8 value and cut to a length
     * ("%.64s" in the detail, 255 bytes in the subproblem) does not end
     * inside a character: the answer stays UTF-8 (RFC 8259 8.1) */
    {
        char    req[1024], *q;
        size_t  k;

        q = req;
        q += sprintf(q, "{\"identifiers\":[{\"type\":\"dns\",\"value\":\"x");
        for (k = 0; k < 40; k++) {
            q += sprintf(q, "\xc3\xa9");         /* U+00E9 */
        }
        q += sprintf(q, "\"},{\"type\":\"dns\",\"value\":\"ab");
        for (k = 0; k < 150; k++) {
            q += sprintf(q, "\xc3\xa9");
        }
        sprintf(q, "\"},{\"type\":\"x\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9y\",\"value\":\"v\"}]}");

        post(pk, kid, "new-order", req, NULL, &resp);
        o = body_json(&resp);
        subs = cJSON_GetObjectItemCaseSensitive(o, "subproblems");
        ok(cJSON_GetArraySize(subs) == 3 && body_utf8(&resp),
           "identifiers cut inside a character: three subproblems, the "
           "answer is UTF-8");
        cJSON_Delete(o);
        check_problem("UTF-8 identifiers cut", &resp, 400,
                      "rejectedIdentifier");

        /* a payload that is not UTF-8 is not JSON (RFC 8259 8.1) */
        post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\","
             "\"value\":\"bad\xff\xfe..x\"}]}", NULL, &resp);
        o = body_json(&resp);
        ok(strstr(jstr(o, "detail"), "not UTF-8") != NULL
           && body_utf8(&resp), "a payload with bytes that are not UTF-8: "
           "malformed, saying so (%s)", jstr(o, "detail"));
        cJSON_Delete(o);
        check_problem("payload not UTF-8", &resp, 400, "malformed");
    }

    /* malformed and unsupported together: malformed; an identifier
     * without a value has no identifier to name */
    post(pk, kid, "new-order", "{\"identifiers\":[{\"type\":\"dns\"},"
         "{\"type\":\"email\",\"value\":\"a@b.example\"}]}", NULL, &resp);
    o = body_json(&resp);
    subs = cJSON_GetObjectItemCaseSensitive(o, "subproblems");
    ok(cJSON_GetArraySize(subs) == 2
       && cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(subs, 0),
                                           "identifier") == NULL
       && sub_has(subs, "email", "a@b.example", "unsupportedIdentifier"),
       "malformed and unsupported: two subproblems");
    cJSON_Delete(o);
    check_problem("malformed and unsupported identifiers", &resp, 400,
                  "malformed");

    reply = redisCommand(rc, "KEYS acmetest:{acme:%s}:order:*", acct);
    ok(reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 0,
       "refused orders stored nothing");
    freeReplyObject(reply);

    /* a failed http-01 (a port bound but not listening refuses): the
     * order's error is the challenge's, a subproblem names the name */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    slen = sizeof(sin);
    if (fd < 0 || bind(fd, (struct sockaddr *) &sin, sizeof(sin)) != 0
        || getsockname(fd, (struct sockaddr *) &sin, &slen) != 0)
    {
        diag("no port to refuse connections");
    }
    conf.validate.http_port = ntohs(sin.sin_port);
    conf.validate.resolve_to = "127.0.0.1";
    conf.validate.allow_private = 1;
    conf.validate.timeout_ms = 3000;

    order_new(pk, kid, "[{\"type\":\"dns\",\"value\":\"fail.example\"}]",
              ourl, az, 1);
    o = order_get(pk, kid, ourl, &err);
    ok(strcmp(jstr(o, "status"), "pending") == 0 && err == NULL,
       "a pending order has no error");
    cJSON_Delete(o);

    http01_url(pk, kid, az[0], buf, sizeof(buf));

    post(pk, kid, buf[0] ? rel(buf) : "x", "{}", NULL, &resp);
    ok(resp.job != NULL, "http-01 started");
    if (resp.job != NULL) {
        pki_result_init(&res);
        pki_acme_job_run(&conf, resp.job, &res);
        pki_acme_job_free(resp.job);
        resp.job = NULL;
    }
    pki_acme_resp_free(&resp);

    authz = authz_get(pk, kid, az[0]);
    ctype[0] = '\0';
    cdetail[0] = '\0';
    cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(authz,
                                                          "challenges"))
    {
        err = cJSON_GetObjectItemCaseSensitive(ch, "error");
        if (strcmp(jstr(ch, "type"), "http-01") == 0 && err != NULL) {
            snprintf(ctype, sizeof(ctype), "%s", jstr(err, "type"));
            snprintf(cdetail, sizeof(cdetail), "%s", jstr(err, "detail"));
        }
    }
    ok(strcmp(jstr(authz, "status"), "invalid") == 0
       && strcmp(ctype, "urn:ietf:params:acme:error:connection") == 0,
       "http-01 failed: connection (%s)", ctype);
    cJSON_Delete(authz);

    o = order_get(pk, kid, ourl, &err);
    subs = cJSON_GetObjectItemCaseSensitive(err, "subproblems");
    ok(strcmp(jstr(o, "status"), "invalid") == 0
       && strcmp(jstr(err, "type"), ctype) == 0
       && strstr(jstr(err, "detail"), "\"fail.example\"") != NULL,
       "order invalid after a failed http-01: its error has the "
       "challenge's type and names the identifier (%s)",
       jstr(err, "detail"));
    ok(cJSON_GetArraySize(subs) == 1
       && sub_has(subs, "dns", "fail.example", "connection")
       && strcmp(jstr(subs->child, "detail"), cdetail) == 0,
       "... a subproblem for fail.example with the challenge's error");
    ok(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(err, "status")),
       "... and a status");
    snprintf(buf, sizeof(buf), "%s", jstr(o, "finalize"));
    cJSON_Delete(o);

    post(pk, kid, buf[0] ? rel(buf) : "x", "{\"csr\":\"AAAA\"}", NULL,
         &resp);
    ok(has(&resp, "fail.example"), "finalize of it: orderNotReady says why");
    check_problem("finalize of an order whose http-01 failed", &resp, 403,
                  "orderNotReady");

    memset(&conf.validate, 0, sizeof(conf.validate));
    if (fd >= 0) {
        close(fd);
    }

    /* deactivated authorizations: one, then both */
    order_new(pk, kid, "[{\"type\":\"dns\",\"value\":\"d1.example\"},"
              "{\"type\":\"dns\",\"value\":\"d2.example\"}]", ourl, az, 2);
    post(pk, kid, rel(az[0]), "{\"status\":\"deactivated\"}", NULL, &resp);
    pki_acme_resp_free(&resp);

    o = order_get(pk, kid, ourl, &err);
    subs = cJSON_GetObjectItemCaseSensitive(err, "subproblems");
    ok(strcmp(jstr(o, "status"), "invalid") == 0
       && strcmp(jstr(err, "type"),
                 "urn:ietf:params:acme:error:unauthorized") == 0
       && cJSON_GetArraySize(subs) == 1
       && sub_has(subs, "dns", "d1.example", "unauthorized")
       && strcmp(jstr(subs->child, "detail"), "authorization deactivated")
          == 0,
       "an authorization deactivated: unauthorized, its subproblem (%s)",
       jstr(err, "detail"));
    cJSON_Delete(o);

    post(pk, kid, rel(az[1]), "{\"status\":\"deactivated\"}", NULL, &resp);
    pki_acme_resp_free(&resp);

    o = order_get(pk, kid, ourl, &err);
    subs = cJSON_GetObjectItemCaseSensitive(err, "subproblems");
    ok(strcmp(jstr(err, "type"),
              "urn:ietf:params:acme:error:unauthorized") == 0
       && cJSON_GetArraySize(subs) == 2
       && sub_has(subs, "dns", "d1.example", "unauthorized")
       && sub_has(subs, "dns", "d2.example", "unauthorized")
       && strstr(jstr(err, "detail"), "\"d1.example\", \"d2.example\"")
          != NULL,
       "both deactivated: two subproblems, the detail names both (%s)",
       jstr(err, "detail"));
    cJSON_Delete(o);

    /* an order past its expiry */
    order_new(pk, kid, "[{\"type\":\"dns\",\"value\":\"exp.example\"}]",
              ourl, az, 1);
    o = get_order(rc, acct, ourl, okey, sizeof(okey));
    cJSON_ReplaceItemInObjectCaseSensitive(o, "expires",
        cJSON_CreateNumber((double) (time(NULL) - 10)));
    put_order(rc, okey, o);
    cJSON_Delete(o);

    o = order_get(pk, kid, ourl, &err);
    ok(strcmp(jstr(o, "status"), "invalid") == 0
       && strcmp(jstr(err, "type"),
                 "urn:ietf:params:acme:error:unauthorized") == 0
       && strstr(jstr(err, "detail"), "expired") != NULL,
       "an expired order: its error says so (%s)", jstr(err, "detail"));
    cJSON_Delete(o);

    /* hostile: a stored order with 150 authorizations that are gone gets
     * no more subproblems than an order may have identifiers */
    order_new(pk, kid, "[{\"type\":\"dns\",\"value\":\"many.example\"}]",
              ourl, az, 1);
    o = get_order(rc, acct, ourl, okey, sizeof(okey));
    arr = cJSON_CreateArray();
    for (int i = 0; i < 150; i++) {
        snprintf(buf, sizeof(buf), "gone%d", i);
        cJSON_AddItemToArray(arr, cJSON_CreateString(buf));
    }
    cJSON_ReplaceItemInObjectCaseSensitive(o, "authzs", arr);
    put_order(rc, okey, o);
    cJSON_Delete(o);

    post(pk, kid, rel(ourl), "", NULL, &resp);
    o = body_json(&resp);
    err = cJSON_GetObjectItemCaseSensitive(o, "error");
    subs = cJSON_GetObjectItemCaseSensitive(err, "subproblems");
    ok(strcmp(jstr(o, "status"), "invalid") == 0
       && cJSON_GetArraySize(subs) == 100
       && sub_has(subs, "dns", "many.example", "unauthorized")
       && strstr(jstr(err, "detail"), "150") != NULL
       && resp.body_len < 65536,
       "150 authorizations gone: 100 subproblems, %zu bytes (%s)",
       resp.body_len, jstr(err, "detail"));
    cJSON_Delete(o);
    pki_acme_resp_free(&resp);

    EVP_PKEY_free(pk);
    redisFree(rc);
    pki_redis_free(r);
    conf.redis = NULL;
}


/* ---- what finalize and reads cost -------------------------------------- */

static pki_template_t  *tcopy;      /* "subject O copy" as well as CN */


static const char *
or_empty(const char *s)
{
    return s != NULL ? s : "";
}


/* A CSR by a fresh P-256 key with subject "O=org, CN=cn" (org NULL: none)
 * and the dNSName cn: {"csr": ...}, malloc'd. */
static char *
csr_body_subject(const char *org, const char *cn)
{
    int                        len;
    char                      *b, *out, san[300];
    EVP_PKEY                  *k;
    X509_REQ                  *q;
    X509_NAME                 *name;
    unsigned char             *der;
    X509_EXTENSION            *ext;
    STACK_OF(X509_EXTENSION)  *exts;

    k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    q = X509_REQ_new();
    X509_REQ_set_pubkey(q, k);
    name = X509_REQ_get_subject_name(q);
    if (org != NULL) {
        X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                   (const unsigned char *) org, -1, -1, 0);
    }
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    snprintf(san, sizeof(san), "DNS:%s", cn);
    exts = sk_X509_EXTENSION_new_null();
    ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    sk_X509_EXTENSION_push(exts, ext);
    X509_REQ_add_extensions(q, exts);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_sign(q, k, EVP_sha256());
    der = NULL;
    len = i2d_X509_REQ(q, &der);
    b = b64u(der, (size_t) len);
    OPENSSL_free(der);
    X509_REQ_free(q);
    EVP_PKEY_free(k);

    if (b == NULL || asprintf(&out, "{\"csr\":\"%s\"}", b) < 0) {
        out = NULL;
    }
    free(b);

    return out;
}


/* A new order for dns name, its authorization made valid in the store
 * (namespace ns): its URL and finalize URL. */
static void
order_ready_store(redisContext *rc, const char *ns, EVP_PKEY *pk,
    const char *kid, const char *acct, const char *name, char *ourl,
    char *fin)
{
    char              body[300];
    pki_acme_resp_t   resp;

    snprintf(body, sizeof(body), "{\"identifiers\":[{\"type\":\"dns\","
             "\"value\":\"%s\"}]}", name);
    post(pk, kid, "new-order", body, NULL, &resp);
    snprintf(ourl, 256, "%s", resp.location ? resp.location : BASE "/x");
    json_str(&resp, "finalize", fin, 256);
    pki_acme_resp_free(&resp);

    authz_all_valid(rc, ns, acct);
}


/* The status of the order at ourl, into buf. */
static const char *
order_status_of(EVP_PKEY *pk, const char *kid, const char *ourl, char *buf,
    size_t size)
{
    cJSON  *o, *err;

    o = order_get(pk, kid, ourl, &err);
    snprintf(buf, size, "%s", jstr(o, "status"));
    cJSON_Delete(o);

    return buf;
}


/*
 * Finalize issues for what the challenges validated: under a template that
 * copies O from the request (nginx -t refuses it for ACME; here it is set
 * all the same), a CSR with an O is badCSR and the order stays ready, then
 * the same order issues for one with a CN alone.  And
 * pki_acme_template_copies() names what the glue refuses.
 */
static void
test_subject_copies(const char *sock)
{
    char              kid[256], acct[64], ourl[256], fin[256], st[32];
    char             *csr;
    EVP_PKEY         *pk;
    pki_redis_t      *r;
    pki_result_t      res;
    redisContext     *rc;
    pki_template_t   *t, *saved;
    pki_acme_resp_t   resp;
    static const char *const copy_lines[] = {
        "key_types ec:P-256", "subject O copy", "subject CN copy",
        "san dns copy", "validity 30d", "extended_key_usage serverAuth",
        NULL
    };
    static const char *const fixed_lines[] = {
        "key_types ec:P-256", "subject O fixed Example", "subject CN copy",
        "san dns copy", "validity 30d", NULL
    };
    static const char *const req_lines[] = {
        "key_types ec:P-256", "subject CN required", "subject OU required",
        "san dns copy", "validity 30d", NULL
    };
    static const char *const oid_lines[] = {
        "key_types ec:P-256", "subject CN copy", "subject 2.5.4.10 copy",
        "san dns copy", "validity 30d", NULL
    };

    r = store_open(sock, "acmesubj:", &rc);
    pki_result_init(&res);
    saved = conf.tmpl;

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    account_kid(pk, kid, sizeof(kid));
    acct[0] = '\0';
    if (sscanf(kid, BASE "/acct/%63s", acct) != 1) {
        diag("subject copies: no account");
    }

    /* what the glue refuses at nginx -t */
    ok(pki_acme_template_copies(conf.tmpl) == NULL,
       "template acme (CN copy) copies nothing else");
    tcopy = fx_template("copy-o", copy_lines);
    ok(strcmp(or_empty(pki_acme_template_copies(tcopy)), "O") == 0,
       "a template with \"subject O copy\": O");
    t = fx_template("fixed-o", fixed_lines);
    ok(pki_acme_template_copies(t) == NULL, "\"subject O fixed\": nothing");
    pki_template_free(t);
    t = fx_template("req-ou", req_lines);
    ok(strcmp(or_empty(pki_acme_template_copies(t)), "OU") == 0,
       "\"subject CN required\" and \"subject OU required\": OU");
    pki_template_free(t);
    t = fx_template("oid-o", oid_lines);
    ok(strcmp(or_empty(pki_acme_template_copies(t)), "2.5.4.10") == 0,
       "\"subject 2.5.4.10 copy\": 2.5.4.10");
    pki_template_free(t);

    /* finalize under a template that copies O */
    ok(pki_ca_add_template(conf.ca, tcopy, &res) == PKI_OK,
       "the CA issues with template copy-o");
    conf.tmpl = tcopy;
    order_ready_store(rc, "acmesubj:", pk, kid, acct, "ov.example", ourl,
                      fin);
    csr = csr_body_subject("Big Bank Inc", "ov.example");
    post(pk, kid, rel(fin), csr, NULL, &resp);
    free(csr);
    ok(has(&resp, "subject has O"), "a CSR with O: the detail names it");
    check_problem("finalize, a CSR with O under a template that copies O",
                  &resp, 400, "badCSR");
    ok(strcmp(order_status_of(pk, kid, ourl, st, sizeof(st)), "ready") == 0,
       "... the order stays ready (%s)", st);
    csr = csr_body_subject(NULL, "ov.example");
    post(pk, kid, rel(fin), csr, NULL, &resp);
    free(csr);
    ok(resp.http_status == 200 && has(&resp, "\"status\":\"valid\""),
       "then a CSR with the CN alone: issued (%d)", resp.http_status);
    pki_acme_resp_free(&resp);
    conf.tmpl = saved;

    EVP_PKEY_free(pk);
    store_close(r, rc, "acmesubj:*");
}


/*
 * Finalize's CAA re-check holds no pool thread past the outbound budget.
 * Every slot held (validation jobs, other re-checks): a finalize that must
 * read CAA again gets 503 rateLimited with Retry-After at once, and its
 * order stays ready.  With a slot free it reads CAA (a resolver that never
 * answers: the order fails with dns) and gives the slot back.
 */
static void
test_caa_budget(const char *sock)
{
    int                 fd, took;
    char                kid[256], acct[64], ourl[256], fin[256], st[32];
    char                resolver[64], *csr;
    long long           ms;
    EVP_PKEY           *pk;
    socklen_t           slen;
    pki_redis_t        *r;
    redisContext       *rc;
    pki_acme_resp_t     resp;
    struct timespec     t0, t1;
    struct sockaddr_in  sin;

    r = store_open(sock, "acmefin:", &rc);

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    account_kid(pk, kid, sizeof(kid));
    acct[0] = '\0';
    if (sscanf(kid, BASE "/acct/%63s", acct) != 1) {
        diag("CAA budget: no account");
    }

    /* a resolver that never answers: a UDP socket nobody reads */
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    slen = sizeof(sin);
    if (fd < 0 || bind(fd, (struct sockaddr *) &sin, sizeof(sin)) != 0
        || getsockname(fd, (struct sockaddr *) &sin, &slen) != 0)
    {
        diag("no UDP port for a silent resolver");
    }
    snprintf(resolver, sizeof(resolver), "127.0.0.1:%u",
             (unsigned) ntohs(sin.sin_port));

    /* validated before CAA checks were on: no "validated" time, so CAA is
     * read again at finalization */
    order_ready_store(rc, "acmefin:", pk, kid, acct, "caa.example", ourl,
                      fin);
    conf.validate.caa = 1;
    conf.validate.caa_ids = conf.caa;
    conf.validate.resolver = resolver;
    conf.validate.timeout_ms = 400;

    pki_acme_outbound_max(1);
    ok(pki_acme_outbound_take() == 1, "budget 1: a slot taken (a "
       "validation job runs)");
    ok(pki_acme_outbound_take() == 0, "... and no other");

    csr = csr_body("caa.example");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    post(pk, kid, rel(fin), csr, NULL, &resp);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (t1.tv_sec - t0.tv_sec) * 1000LL
         + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    took = resp.retry_after;
    ok(resp.http_status == 503 && took > 0 && ms < 300,
       "every slot held: a finalize that must read CAA again gets 503 at "
       "once (%lld ms), Retry-After %d", ms, took);
    ok(resp.busy == 1, "... marked a refusal for load (logged as a "
       "warning, not an error)");
    check_problem("finalize past the outbound budget", &resp, 503,
                  "rateLimited");
    ok(strcmp(order_status_of(pk, kid, ourl, st, sizeof(st)), "ready") == 0,
       "... the order stays ready (%s)", st);

    pki_acme_outbound_give();
    clock_gettime(CLOCK_MONOTONIC, &t0);
    post(pk, kid, rel(fin), csr, NULL, &resp);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (t1.tv_sec - t0.tv_sec) * 1000LL
         + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    ok(ms >= 350 && has(&resp, ":dns\""),
       "a slot free: the re-check asks the resolver, which never answers: "
       "dns after %lld ms (%d)", ms, resp.http_status);
    ok(resp.busy == 0, "... not marked a refusal for load");
    pki_acme_resp_free(&resp);
    free(csr);
    ok(pki_acme_outbound_take() == 1, "... and it gave its slot back");
    pki_acme_outbound_give();

    pki_acme_outbound_max(PKI_ACME_OUTBOUND_DEFAULT);
    memset(&conf.validate, 0, sizeof(conf.validate));
    if (fd >= 0) {
        close(fd);
    }

    EVP_PKEY_free(pk);
    store_close(r, rc, "acmefin:*");
}


/*
 * With a state store of its own (acme_redis), another finalization's
 * pending record linked to the order is judged by the certificate
 * store's clock, not this host's: a host whose clock is 100 s ahead finds
 * a finalization started 5 s ago running (403 orderNotReady, Retry-After)
 * and leaves its record alone; a host whose clock is 100 s behind takes
 * over one started 60 s ago.
 */
static void
test_fin_link_clock(const char *sock)
{
    int                 i;
    char                kid[256], acct[64], ourl[256], fin[256], *csr;
    char                lkey[512], rkey[256], name[64];
    const char         *oid;
    pki_redis_t        *r, *st;
    redisReply         *g;
    redisContext       *rc;
    pki_acme_resp_t     resp;
    EVP_PKEY           *pk;
    static const long   ahead[2] = { 100, -100 };
    static const int    age[2] = { 5, 60 };
    static const char  *other[2] = { "7A3C3C3C3C3C3C3C3C3C3C3C3C3C3C3C",
                                     "7A3C3C3C3C3C3C3C3C3C3C3C3C3C3C3D" };

    r = store_open(sock, "acmelc:", &rc);
    st = state_open(sock, "acmelcs:");
    conf.state_redis = st;

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    account_kid(pk, kid, sizeof(kid));
    acct[0] = '\0';
    if (sscanf(kid, BASE "/acct/%63s", acct) != 1) {
        diag("link clock: no account");
    }

    for (i = 0; i < 2; i++) {
        snprintf(name, sizeof(name), "clock%d.example", i);
        order_ready_store(rc, "acmelcs:", pk, kid, acct, name, ourl, fin);
        oid = strrchr(ourl, '/') != NULL ? strrchr(ourl, '/') + 1 : "";

        /* the link and pending record of a finalization on another host */
        snprintf(rkey, sizeof(rkey), "acmelc:{ca:acmetest}:cert:%s",
                 other[i]);
        snprintf(lkey, sizeof(lkey), "acmelc:{ca:acmetest}:acmefin:%s:%s:%s",
                 acct, conf.realm, oid);
        freeReplyObject(redisCommand(rc, "HSET %s serial %s ca acmetest "
                                     "status pending", rkey, other[i]));
        freeReplyObject(redisCommand(rc, "EXPIRE %s 300", rkey));
        freeReplyObject(redisCommand(rc, "HSET %s s %s t someoneelse a %lld",
                                     lkey, other[i],
                                     (long long) redis_now(rc) - age[i]));

        csr = csr_body(name);
        clock_ahead = ahead[i];
        post(pk, kid, rel(fin), csr, NULL, &resp);
        clock_ahead = 0;
        free(csr);

        g = redisCommand(rc, "HGET %s status", rkey);
        if (i == 0) {
            ok(resp.http_status == 403 && has(&resp, "being finalized")
               && resp.retry_after > 0, "link clock: a finalization "
               "started 5 s ago runs for a host 100 s ahead (%d %s)",
               resp.http_status, resp.res.detail);
            ok(g != NULL && g->type == REDIS_REPLY_STRING
               && strcmp(g->str, "pending") == 0,
               "link clock: ... its pending record left alone");
        } else {
            ok(resp.http_status == 200 && has(&resp, "\"valid\""),
               "link clock: one started 60 s ago is taken over by a host "
               "100 s behind (%d %s)", resp.http_status, resp.res.detail);
            ok(g != NULL && g->type == REDIS_REPLY_NIL,
               "link clock: ... its pending record deleted");
        }
        freeReplyObject(g);
        pki_acme_resp_free(&resp);
    }

    conf.state_redis = NULL;
    pki_redis_free(st);
    EVP_PKEY_free(pk);
    store_close(r, rc, "acmelc*");
}


/*
 * A nonce's tag is HMAC-SHA256 (its first 8 octets) of its first 13
 * octets under the store's nonce key, as HMAC() makes it: nonces made by
 * one build are taken by another (a fleet upgraded host by host), also
 * after a second store's key was used in between.
 */
static void
test_nonce_tag(const char *sock)
{
    int             i, good;
    char            n[32];
    size_t          len;
    unsigned int    mdlen;
    pki_redis_t    *r, *other;
    redisReply     *g;
    redisContext   *rc;
    unsigned char  *raw, md[EVP_MAX_MD_SIZE];

    r = store_open(sock, "acmenk:", &rc);
    other = state_open(sock, "acmenk2:");

    good = 0;
    for (i = 0; i < 4; i++) {
        /* the other store's key in between */
        conf.redis = other;
        new_nonce(n);
        conf.redis = r;

        new_nonce(n);
        g = redisCommand(rc, "GET acmenk:acme:noncekey");
        raw = NULL;
        if (g != NULL && g->type == REDIS_REPLY_STRING
            && pki_b64url_decode(n, strlen(n), &raw, &len) && len == 21
            && HMAC(EVP_sha256(), g->str, (int) g->len, raw, 13, md, &mdlen)
               != NULL
            && memcmp(md, raw + 13, 8) == 0)
        {
            good++;
        }
        free(raw);
        freeReplyObject(g);
    }
    ok(good == 4, "nonce tag: %d of 4 nonces carry HMAC-SHA256 of the "
       "store's key", good);

    pki_redis_free(other);
    store_close(r, rc, "acmenk*");
}


/* Counts what passes the proxy: every command, and TIME on its own. */
typedef struct {
    int  all;
    int  time;
} rt_count_t;


static int
count_cmd(void *data, const char *cmd, size_t len)
{
    rt_count_t  *c = data;

    c->all++;
    if (len == sizeof("*1\r\n$4\r\nTIME\r\n") - 1
        && memcmp(cmd, "*1\r\n$4\r\nTIME\r\n", len) == 0)
    {
        c->time++;
    }

    return -1;
}


/*
 * The round trips of a finalize to its state store (acme_redis): the
 * order's move to processing reads the store's clock (finStarted) in its
 * own script, not in a TIME round trip before it; the order stored valid
 * carries that clock.
 */
static void
test_fin_round_trips(const char *sock)
{
    char               kid[256], acct[64], ourl[256], fin[256], *csr;
    double             t0;
    cJSON             *o, *err;
    EVP_PKEY          *pk;
    pki_redis_t       *r, *st;
    rt_count_t         c;
    hook_proxy_t       px;
    redisContext      *rc;
    pki_acme_resp_t    resp;

    memset(&px, 0, sizeof(px));
    memset(&c, 0, sizeof(c));
    px.hook = count_cmd;
    px.data = &c;
    px.mark = "\r\n";
    if (!ok(hook_proxy_start(&px, sock), "fin round trips: proxy")) {
        return;
    }

    r = store_open(sock, "acmert:", &rc);
    st = state_open(px.path, "acmerts:");
    conf.state_redis = st;

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    account_kid(pk, kid, sizeof(kid));
    acct[0] = '\0';
    if (sscanf(kid, BASE "/acct/%63s", acct) != 1) {
        diag("fin round trips: no account");
    }

    order_ready_store(rc, "acmerts:", pk, kid, acct, "rt.example", ourl,
                      fin);

    csr = csr_body("rt.example");
    t0 = redis_now(rc);
    px.armed = 1;
    post(pk, kid, rel(fin), csr, NULL, &resp);
    px.armed = 0;
    free(csr);

    ok(resp.http_status == 200 && has(&resp, "\"valid\""),
       "fin round trips: finalize issues (%d %s)", resp.http_status,
       resp.res.detail);
    ok(c.time == 0 && c.all > 0, "fin round trips: %d to the state store, "
       "%d of them a TIME of its own (0 wanted)", c.all, c.time);
    diag("fin round trips: %d to the state store", c.all);
    pki_acme_resp_free(&resp);

    o = order_get(pk, kid, ourl, &err);
    cJSON_Delete(err);
    {
        char         key[512];
        cJSON       *so;
        redisReply  *g;

        snprintf(key, sizeof(key), "acmerts:{acme:%s}:order:%s", acct,
                 strrchr(ourl, '/') != NULL ? strrchr(ourl, '/') + 1 : "");
        g = redisCommand(rc, "GET %s", key);
        so = g != NULL && g->type == REDIS_REPLY_STRING ? cJSON_Parse(g->str)
                                                         : NULL;
        ok(so != NULL && strcmp(jstr(so, "status"), "valid") == 0
           && cJSON_GetNumberValue(cJSON_GetObjectItem(so, "finStarted"))
              >= t0
           && cJSON_GetNumberValue(cJSON_GetObjectItem(so, "finStarted"))
              <= redis_now(rc),
           "fin round trips: the valid order's finStarted is the store's "
           "clock of the move");
        cJSON_Delete(so);
        freeReplyObject(g);
    }
    cJSON_Delete(o);

    conf.state_redis = NULL;
    pki_redis_free(st);
    hook_proxy_stop(&px);
    EVP_PKEY_free(pk);
    store_close(r, rc, "acmert*");
}


/* A JSON list of n dns identifiers "nI.tag.example". */
static char *
ids_json(const char *tag, int n)
{
    int     i;
    char   *buf;
    size_t  len, size;

    size = (size_t) n * 64 + 64;
    buf = malloc(size);
    if (buf == NULL) {
        return NULL;
    }
    len = (size_t) snprintf(buf, size, "[");
    for (i = 0; i < n; i++) {
        len += (size_t) snprintf(buf + len, size - len, "%s{\"type\":\"dns\","
                                 "\"value\":\"n%d.%s.example\"}",
                                 i ? "," : "", i, tag);
    }
    snprintf(buf + len, size - len, "]");

    return buf;
}


/* A newOrder of n names (tag as for ids_json): its URL into ourl, its
 * first authorization's URL into az. */
static void
order_of(EVP_PKEY *pk, const char *kid, const char *tag, int n, char *ourl,
    char az[1][256])
{
    char             *ids, *body;
    cJSON            *o;
    const char       *v;
    pki_acme_resp_t   resp;

    ids = ids_json(tag, n);
    if (ids == NULL
        || asprintf(&body, "{\"identifiers\":%s}", ids) < 0)
    {
        body = NULL;
    }
    free(ids);
    post(pk, kid, "new-order", body != NULL ? body : "{}", NULL, &resp);
    free(body);
    if (resp.http_status != 201) {
        diag("newOrder %s: %d", tag, resp.http_status);
    }
    snprintf(ourl, 256, "%s", resp.location ? resp.location : BASE "/x");
    o = body_json(&resp);
    v = cJSON_GetStringValue(cJSON_GetArrayItem(
            cJSON_GetObjectItemCaseSensitive(o, "authorizations"), 0));
    snprintf(az[0], 256, "%s", v != NULL ? v : BASE "/x");
    cJSON_Delete(o);
    pki_acme_resp_free(&resp);
}


/* acme_pending_authz_max: an account that orders names it never validates
 * is refused (429 rateLimited, Retry-After, nothing stored) once its
 * pending authorizations would pass the cap; one deactivated, or
 * validated, frees its place. */
static void
test_pending_cap(const char *sock)
{
    char              kid[256], ourl[256], az[1][256], pattern[128];
    char              acct[64], *ids, body[1024];
    EVP_PKEY         *pk;
    pki_redis_t      *r;
    redisContext     *rc;
    pki_acme_resp_t   resp;

    r = state_open(sock, "acmepend:");
    conf.redis = r;
    conf.pending_authz_max = 5;
    rc = redisConnectUnix(sock);

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    account_kid(pk, kid, sizeof(kid));
    acct[0] = '\0';
    if (sscanf(kid, BASE "/acct/%63s", acct) != 1) {
        diag("pending: no account");
    }
    snprintf(pattern, sizeof(pattern), "acmepend:{acme:%s}:authz:*", acct);

    order_of(pk, kid, "pa", 3, ourl, az);
    ok(keys_count(rc, pattern) == 3, "pending: 3 names, 3 pending "
       "authorizations (%lld)", keys_count(rc, pattern));

    ids = ids_json("pb", 3);
    snprintf(body, sizeof(body), "{\"identifiers\":%s}", ids ? ids : "[]");
    free(ids);

    post(pk, kid, "new-order", body, NULL, &resp);
    ok(resp.retry_after == 60, "pending: Retry-After 60 (%d)",
       resp.retry_after);
    ok(has(&resp, "has 3 pending authorizations and may have at most 5"),
       "pending: the problem says how many");
    check_problem("pending: 3 more over a cap of 5", &resp, 429,
                  "rateLimited");
    ok(keys_count(rc, pattern) == 3, "pending: the refused order stored "
       "nothing (%lld)", keys_count(rc, pattern));

    post(pk, kid, rel(az[0]), "{\"status\":\"deactivated\"}", NULL, &resp);
    ok(resp.http_status == 200, "pending: one deactivated (%d)",
       resp.http_status);
    pki_acme_resp_free(&resp);
    {
        redisReply  *g;

        g = redisCommand(rc, "ZCARD acmepend:{acme:%s}:pendauthz", acct);
        ok(g != NULL && g->type == REDIS_REPLY_INTEGER && g->integer == 2,
           "pending: the deactivation took it out of the count (%lld)",
           g != NULL && g->type == REDIS_REPLY_INTEGER ? g->integer : -1);
        freeReplyObject(g);
    }

    post(pk, kid, "new-order", body, NULL, &resp);
    ok(resp.http_status == 201, "pending: then 2 + 3 fit (%d)",
       resp.http_status);
    pki_acme_resp_free(&resp);

    post(pk, kid, "new-order", body, NULL, &resp);
    check_problem("pending: at the cap, another order", &resp, 429,
                  "rateLimited");

    /* more new names than the cap: never fits, no Retry-After */
    conf.pending_authz_max = 2;
    post(pk, kid, "new-order", body, NULL, &resp);
    ok(resp.retry_after == 0, "pending: an order over the cap by itself: "
       "no Retry-After (%d)", resp.retry_after);
    check_problem("pending: 3 names, a cap of 2", &resp, 400, "malformed");

    conf.pending_authz_max = 0;
    post(pk, kid, "new-order", body, NULL, &resp);
    ok(resp.http_status == 201, "pending: no cap (0): made (%d)",
       resp.http_status);
    pki_acme_resp_free(&resp);

    EVP_PKEY_free(pk);
    store_close(r, rc, "acmepend:*");
}


/* 1 when the orders list (first page) of acct holds URL ourl. */
static int
listed(EVP_PKEY *pk, const char *kid, const char *acct, const char *ourl)
{
    int              in;
    char             path[128];
    pki_acme_resp_t  resp;

    snprintf(path, sizeof(path), "acct/%s/orders", acct);
    post(pk, kid, path, "", NULL, &resp);
    in = resp.http_status == 200 && has(&resp, ourl);
    pki_acme_resp_free(&resp);

    return in;
}


/*
 * What reads cost in Redis, whatever an order holds:
 *  - a poll of a pending order reads its authorizations in one MGET (4 of
 *    them come with the nonce): an order of 40 names costs what one of 12
 *    does (each authorization was a GET of its own);
 *  - a page of the orders list reads the authorizations of all its
 *    pending orders in one MGET (it was one per order): 20 more pending
 *    orders cost nothing more; an order whose authorization was
 *    deactivated is left out (RFC 8555 7.1.2.1), while the page reads at
 *    most 300 authorizations: past them, newest first, an order is listed
 *    as it is stored (pending).
 */
static void
test_read_costs(const char *sock)
{
    int                 i, st1, st2;
    char                kid[256], acct[64], path[128], tag[16];
    char                o12[256], o40[256], old[256], ourl[256];
    char                az[1][256], oldaz[1][256];
    long long           c12, c40, l1, l2;
    EVP_PKEY           *pk;
    pki_redis_t        *r;
    redisContext       *rc;
    pki_acme_resp_t     resp;

    r = store_open(sock, "acmecost:", &rc);

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    account_kid(pk, kid, sizeof(kid));
    acct[0] = '\0';
    if (sscanf(kid, BASE "/acct/%63s", acct) != 1) {
        diag("read costs: no account");
    }
    snprintf(path, sizeof(path), "acct/%s/orders", acct);

    /* the oldest order: one name, its authorization deactivated below;
     * an hour older in the list (orders made in one second are listed in
     * any order) */
    order_of(pk, kid, "old", 1, old, oldaz);
    freeReplyObject(redisCommand(rc, "ZINCRBY acmecost:{acme:%s}:orders "
                                 "-3600 %s", acct, strrchr(old, '/') + 1));
    order_of(pk, kid, "twelve", 12, o12, az);
    order_of(pk, kid, "forty", 40, o40, az);

    c12 = download_cost(rc, pk, kid, rel(o12), &st1);
    c40 = download_cost(rc, pk, kid, rel(o40), &st2);
    ok(st1 == 200 && st2 == 200 && c12 > 0 && c40 == c12,
       "poll of a pending order: 40 names cost %lld Redis commands, 12 "
       "names %lld", c40, c12);

    post(pk, kid, rel(oldaz[0]), "{\"status\":\"deactivated\"}", NULL,
         &resp);
    ok(resp.http_status == 200, "the oldest order's authorization "
       "deactivated (%d)", resp.http_status);
    pki_acme_resp_free(&resp);

    l1 = download_cost(rc, pk, kid, path, &st1);
    for (i = 0; i < 20; i++) {
        snprintf(tag, sizeof(tag), "two%d", i);
        order_of(pk, kid, tag, 2, ourl, az);
    }
    l2 = download_cost(rc, pk, kid, path, &st2);
    ok(st1 == 200 && st2 == 200 && l1 > 0 && l2 == l1,
       "orders list: 3 pending orders cost %lld Redis commands, 23 cost "
       "%lld", l1, l2);
    ok(listed(pk, kid, acct, o40) && listed(pk, kid, acct, ourl)
       && !listed(pk, kid, acct, old),
       "... pending orders listed, the one whose authorization was "
       "deactivated left out (93 authorizations read)");

    /* 240 more names: the oldest order is past the 300 read */
    for (i = 0; i < 6; i++) {
        snprintf(tag, sizeof(tag), "more%d", i);
        order_of(pk, kid, tag, 40, ourl, az);
    }
    l2 = download_cost(rc, pk, kid, path, &st2);
    ok(st2 == 200 && l2 == l1, "... 29 pending orders of 333 names: still "
       "%lld Redis commands", l2);
    ok(listed(pk, kid, acct, ourl) && listed(pk, kid, acct, old),
       "... past the 300 authorizations a page reads, the oldest order is "
       "listed as it is stored");

    EVP_PKEY_free(pk);
    store_close(r, rc, "acmecost:*");
}


/* A hook that lets the command run and loses its answer. */
static int
lose_answer(void *data, const char *cmd, size_t len)
{
    (void) data;
    (void) cmd;
    (void) len;

    return 2;
}


/*
 * Writes whose answer is lost after Redis ran them (a connection reset,
 * a failover): hiredis's caller sends them again on a new connection
 * (pki_redis_cmd_sent()), and the second run must see its own first one
 * as done, not as "changed meanwhile": an authorization deactivation,
 * an account update and a keyChange each answer 200, and the client goes
 * on with what it asked for (the new key signs, the old one no longer).
 */
static void
test_lost_reply(const char *sock)
{
    char              kid[256], acct[64], ids[128], ourl[256], az[1][256];
    char              pl[2048], *jwk, *inner, path[300];
    char              thumb[PKI_JWK_THUMB_LEN];
    cJSON            *o;
    EVP_PKEY         *pk, *npk;
    pki_redis_t      *r;
    redisReply       *g;
    hook_proxy_t      px;
    redisContext     *rc;
    pki_acme_resp_t   resp;

    memset(&px, 0, sizeof(px));
    px.hook = lose_answer;
    if (!ok(hook_proxy_start(&px, sock), "lost answer: proxy")) {
        return;
    }

    r = state_open(px.path, "acmelost:");
    conf.redis = r;
    rc = redisConnectUnix(sock);

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    npk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    account_kid(pk, kid, sizeof(kid));
    sscanf(kid, BASE "/acct/%63s", acct);

    snprintf(ids, sizeof(ids),
             "[{\"type\":\"dns\",\"value\":\"lost.example\"}]");
    order_new(pk, kid, ids, ourl, az, 1);
    px.mark = "if redis.call('GET', KEYS[2]) == ARGV[4] then";
    px.armed = 1;
    post(pk, kid, rel(az[0]), "{\"status\":\"deactivated\"}", NULL, &resp);
    ok(resp.http_status == 200 && !px.armed, "lost answer: an authorization "
       "deactivation that ran answers 200 (%d %s)", resp.http_status,
       resp.res.detail);
    pki_acme_resp_free(&resp);
    o = authz_get(pk, kid, az[0]);
    ok(strcmp(jstr(o, "status"), "deactivated") == 0,
       "lost answer: ... the authorization is deactivated");
    cJSON_Delete(o);

    snprintf(path, sizeof(path), "acct/%s", acct);
    px.mark = "if ARGV[3] == '0' then redis.call('SET'";
    px.armed = 1;
    post(pk, kid, path, "{\"contact\":[\"mailto:lost@example.com\"]}",
         NULL, &resp);
    ok(resp.http_status == 200 && !px.armed, "lost answer: an account "
       "update that ran answers 200 (%d %s)", resp.http_status,
       resp.res.detail);
    pki_acme_resp_free(&resp);

    jwk = pki_jwk_json(pk);
    snprintf(pl, sizeof(pl), "{\"account\":\"%s\",\"oldKey\":%s}", kid,
             jwk);
    free(jwk);
    inner = jws_es256(npk, BASE "/key-change", NULL, NULL, pl, NULL);
    px.mark = "if cur and cur ~= ARGV[1]";
    px.armed = 1;
    post(pk, kid, "key-change", inner, NULL, &resp);
    free(inner);
    ok(resp.http_status == 200 && !px.armed, "lost answer: a keyChange that "
       "ran answers 200 (%d %s)", resp.http_status, resp.res.detail);
    pki_acme_resp_free(&resp);

    g = redisCommand(rc, "GET acmelost:{acme:%s}:acct", acct);
    o = g != NULL && g->type == REDIS_REPLY_STRING ? cJSON_Parse(g->str)
                                                    : NULL;
    pki_jwk_thumbprint(npk, thumb);
    ok(o != NULL && strcmp(jstr(o, "thumb"), thumb) == 0
       && strstr(g->str, "lost@example.com") != NULL,
       "lost answer: ... the account holds the new key and the contact");
    cJSON_Delete(o);
    freeReplyObject(g);

    post(npk, kid, path, "", NULL, &resp);
    ok(resp.http_status == 200, "lost answer: ... the new key signs (%d)",
       resp.http_status);
    pki_acme_resp_free(&resp);
    post(pk, kid, path, "", NULL, &resp);
    ok(resp.http_status >= 400, "lost answer: ... the old key no longer "
       "(%d)", resp.http_status);
    pki_acme_resp_free(&resp);

    /* the account, made without a binding, is bound where one is now
     * required: the bind ran, its answer was lost */
    {
        char          *payload, ckid[32], hkey[96];
        pki_result_t   res;

        pki_result_init(&res);
        ok(pki_acme_eab_new(r, ckid, hkey, &res) == PKI_OK,
           "lost answer: EAB key");
        conf.eab_required = 1;
        payload = eab_payload(npk, ckid, hkey);
        px.mark = "redis.call('HSET', KEYS[1], 'account', ARGV[1])";
        px.armed = 1;
        post(npk, NULL, "new-account", payload ? payload : "{}", NULL,
             &resp);
        conf.eab_required = 0;
        free(payload);
        ok(resp.http_status == 200 && !px.armed, "lost answer: an EAB "
           "binding that ran answers 200 (%d %s)", resp.http_status,
           resp.res.detail);
        pki_acme_resp_free(&resp);

        g = redisCommand(rc, "HGET acmelost:acme:eab:%s account", ckid);
        ok(g != NULL && g->type == REDIS_REPLY_STRING
           && strcmp(g->str, acct) == 0,
           "lost answer: ... the EAB key names the account");
        freeReplyObject(g);
    }

    EVP_PKEY_free(pk);
    EVP_PKEY_free(npk);
    hook_proxy_stop(&px);
    store_close(r, rc, "acmelost:*");
}


int
main(void)
{
    char             cmd[128];
    EVP_PKEY        *capk, *pk;
    pki_key_t       *cakey;
    const char      *sock;
    pki_redis_t     *none;
    pki_result_t     res;
    pki_template_t  *troot, *tacme;
    pki_redis_conf_t rconf;
    static const char  *caa[] = { "ca.test", NULL };
    static const char *const root_lines[] = {
        "subject CN copy", "basic_constraints ca:true", "validity 3650d",
        NULL
    };
    static const char *const acme_lines[] = {
        "key_types ec:P-256 rsa:2048-4096", "subject CN copy",
        "san dns copy wildcard", "san ip copy", "validity 90d",
        "extended_key_usage serverAuth", NULL
    };

    pki_init();

    snprintf(dir, sizeof(dir), "/tmp/acmetest.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        skip_all("mkdtemp failed");
    }

    troot = fx_template("root", root_lines + 0);
    tacme = fx_template("acme", acme_lines);
    capk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

    memset(&conf, 0, sizeof(conf));
    conf.ca = make_ca(capk, &cakey, troot, tacme);
    altca = make_alt_ca(capk, cakey, troot, tacme);
    conf.tmpl = tacme;
    conf.caa = caa;
    conf.authz_reuse = 3600;

    /* a store that is configured but never reached for these */
    memset(&rconf, 0, sizeof(rconf));
    snprintf(cmd, sizeof(cmd), "%s/none.sock", dir);
    rconf.unix_path = cmd;
    rconf.timeout_ms = 100;
    pki_result_init(&res);
    none = pki_redis_new(&rconf, &res);
    conf.redis = none;

    test_signs();
    test_no_store(pk);
    test_dead_store(pk);

    sock = getenv("PKI_TEST_REDIS_SOCK");
    if (sock && sock[0]) {
        test_lost_reply(sock);
        test_store(sock, capk);
        test_policy(sock);
        test_admin_revoke(sock);
        test_order_errors(sock);
        test_deactivate_stores(sock);
        test_copy_dead_store(sock);
        test_profiles(sock);
        test_stale_restart(sock);
        test_job_store(sock);
        test_account_race(sock);
        test_order_atomic(sock);
        test_pending_cap(sock);
        test_subject_copies(sock);
        test_caa_budget(sock);
        test_fin_link_clock(sock);
        test_fin_round_trips(sock);
        test_nonce_tag(sock);
        test_read_costs(sock);
    } else {
        diag("PKI_TEST_REDIS_SOCK not set: store tests skipped");
    }

    pki_redis_free(none);
    pki_ca_free(conf.ca);
    pki_ca_free(altca);
    pki_key_free(cakey);
    pki_template_free(troot);
    pki_template_free(tacme);
    pki_template_free(tshort);
    pki_template_free(tcopy);
    EVP_PKEY_free(capk);
    EVP_PKEY_free(pk);

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) {
        diag("cleanup failed");
    }

    return done_testing();
}
