/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The ACME engine end to end (pki_acme_handle, RFC 8555): routing, the JWS
 * checks, then every payload parser behind them (newAccount with contacts
 * and External Account Binding, newOrder identifiers, challenge and
 * authorization updates, finalize CSRs, keyChange, revokeCert, ARI).
 *
 * Most mutations of a JWS break its signature and stop at pki_jws_verify.
 * So the harness SIGNS what the fuzzer writes: the input holds the
 * protected header and the payload as text, and the harness signs them
 * with a fixed test-only account key (ES256).  A raw mode feeds the body
 * unsigned, to keep the envelope itself under fuzz.
 *
 * State: the in-process fake Redis (fakeredis.c), restored before each
 * input from a snapshot that the engine itself built at start: account
 * $ACCT (key A), a pending order $O1 (dns + ip identifiers, authz $Z1 with
 * challenge $C1), a ready order $O2 (authz valid), a valid order $O3 with
 * its certificate and record, an EAB key, and an unused nonce ($NONCE, made
 * by the engine).  The store's Lua scripts run in the fake Redis (Lua 5.1).
 *
 * Input (text):
 *   line 1   MODE PATH      MODE: a  POST signed with key A
 *                                 b  POST signed with key B (no account)
 *                                 k  keyChange: the payload part is an
 *                                    inner "header\npayload" signed with
 *                                    key B, wrapped, then signed with A
 *                                 r  POST, the rest is the raw body
 *                                 g  GET, h  HEAD (the rest ignored)
 *   line 2   the protected header (JSON text)
 *   rest     the payload ("" = POST-as-GET)
 * Placeholders replaced in all three: $ACCT $KID $JWKB $JWK $NONCE $URL
 * $BASE $O1 $O2 $O3 $Z1 $Z2 $C1 $CSR $CERTID $CERT $EAB (an EAB JWS
 * binding key B, valid MAC).
 *
 * Invariants: a response always has a status; a problem document is JSON;
 * every POST answer carries a fresh nonce unless Redis failed.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "fuzz.h"


#define BASE        "https://acme.fuzz/acme"
#define PKI_ACME_FUZZ_MAX   (32 * 1024)


/* Fixed test-only keys (never used anywhere else). */
static const char  key_a_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg6qR6tqQDdO2hP0yw\n"
    "kfRFR0EewpkmnJxpeHA4hEcIepihRANCAATNbcFV5plcdQZr4ljYW/MEzs9fL7sS\n"
    "YDNzNfPnpVXu1cUqsQ86tH3/hMUrsOjaAbZ4I6slGoh4ZnI0I882Iebc\n"
    "-----END PRIVATE KEY-----\n";

static const char  key_b_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgxeFJOKpeN8+hbvIx\n"
    "N1erzirYbv6ACR6YoFFmsTryRZOhRANCAAQ1K+hcyPA1ivOVt6UejEXuKIKnyWU6\n"
    "GKRdvgKG3fOMIRYPG8+KNUzoUHGuqwchT63rzEM9q90GnR756d6iV088\n"
    "-----END PRIVATE KEY-----\n";


typedef struct {
    const char  *name;
    char        *value;
} subst_t;

enum {
    S_ACCT, S_KID, S_JWKB, S_JWK, S_NONCE, S_URL, S_BASE, S_O1, S_O2, S_O3,
    S_Z1, S_Z2, S_C1, S_CSR, S_CERTID, S_CERT, S_EAB, S_N
};

static subst_t  subst[S_N] = {
    { "$ACCT", NULL }, { "$KID", NULL }, { "$JWKB", NULL }, { "$JWK", NULL },
    { "$NONCE", NULL }, { "$URL", NULL }, { "$BASE", NULL }, { "$O1", NULL },
    { "$O2", NULL }, { "$O3", NULL }, { "$Z1", NULL }, { "$Z2", NULL },
    { "$C1", NULL }, { "$CSR", NULL }, { "$CERTID", NULL },
    { "$CERT", NULL }, { "$EAB", NULL }
};

static pki_acme_conf_t   conf;
static EVP_PKEY         *key_a, *key_b;
static const char       *caa[] = { "acme.fuzz", NULL };


static char *
xstrdup(const char *s)
{
    char  *d = strdup(s);

    if (d == NULL) {
        abort();
    }
    return d;
}


static char *
xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
xasprintf(const char *fmt, ...)
{
    char     *s;
    va_list   ap;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0) {
        abort();
    }
    va_end(ap);

    return s;
}


/* Replaces the placeholders in s[0..n) ($URL: url).  malloc'd. */
static char *
expand(const char *s, size_t n, const char *url)
{
    int          i;
    const char  *names[S_N], *values[S_N];

    for (i = 0; i < S_N; i++) {
        names[i] = subst[i].name;
        values[i] = i == S_URL ? url : subst[i].value;
    }

    return pki_fuzz_expand(s, n, names, values, S_N);
}


/* A flattened JWS of header + payload text signed with pk (ES256). */
static char *
sign(EVP_PKEY *pk, const char *hdr, const char *payload)
{
    char                 *ph, *pp, *ps, *input, *out;
    size_t                siglen;
    EVP_MD_CTX           *mctx;
    ECDSA_SIG            *es;
    unsigned char         sig[128], raw[64];
    const unsigned char  *p;

    ph = pki_b64url_encode((const unsigned char *) hdr, strlen(hdr));
    pp = pki_b64url_encode((const unsigned char *) payload, strlen(payload));
    if (ph == NULL || pp == NULL) {
        abort();
    }
    input = xasprintf("%s.%s", ph, pp);

    mctx = EVP_MD_CTX_new();
    siglen = sizeof(sig);
    if (mctx == NULL
        || EVP_DigestSignInit(mctx, NULL, EVP_sha256(), NULL, pk) != 1
        || EVP_DigestSign(mctx, sig, &siglen, (unsigned char *) input,
                          strlen(input)) != 1)
    {
        abort();
    }
    EVP_MD_CTX_free(mctx);

    p = sig;
    es = d2i_ECDSA_SIG(NULL, &p, (long) siglen);
    if (es == NULL) {
        abort();
    }
    BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
    ECDSA_SIG_free(es);
    ps = pki_b64url_encode(raw, 64);

    out = xasprintf("{\"protected\":\"%s\",\"payload\":\"%s\","
                    "\"signature\":\"%s\"}", ph, pp, ps);

    free(ph);
    free(pp);
    free(ps);
    free(input);

    return out;
}


static void
run(const char *method, const char *path, const char *body,
    pki_acme_resp_t *resp)
{
    pki_acme_req_t  req;

    memset(&req, 0, sizeof(req));
    req.method = method;
    req.base_url = BASE;
    req.path = path;
    req.content_type = "application/jose+json";
    req.body = (const unsigned char *) body;
    req.body_len = body ? strlen(body) : 0;
    req.client = "192.0.2.1";

    pki_acme_handle(&conf, &req, resp);

    if (resp->job != NULL) {
        pki_acme_job_free(resp->job);     /* validation is not fuzzed */
        resp->job = NULL;
    }
}


/* ---- the state, made by the engine ------------------------------------- */

/* A nonce of the engine (newNonce; malloc'd): nonces are made under a key
 * in the store, so none can be written in by hand. */
static char *
new_nonce(void)
{
    char             *n;
    pki_acme_resp_t   resp;

    memset(&resp, 0, sizeof(resp));
    run("HEAD", "new-nonce", NULL, &resp);
    if (resp.nonce[0] == '\0') {
        fprintf(stderr, "fuzz_acme setup: no nonce (%d)\n", resp.http_status);
        exit(1);
    }
    n = xstrdup(resp.nonce);
    pki_acme_resp_free(&resp);

    return n;
}


static void
setup_post(EVP_PKEY *pk, int jwk, const char *path, const char *payload,
    pki_acme_resp_t *resp)
{
    char  *url, *hdr, *body, *nonce;

    nonce = new_nonce();

    url = xasprintf(BASE "/%s", path);
    if (jwk) {
        hdr = xasprintf("{\"alg\":\"ES256\",\"nonce\":\"%s\","
                        "\"url\":\"%s\",\"jwk\":%s}", nonce, url,
                        subst[S_JWK].value);
    } else {
        hdr = xasprintf("{\"alg\":\"ES256\",\"nonce\":\"%s\","
                        "\"url\":\"%s\",\"kid\":\"%s\"}", nonce, url,
                        subst[S_KID].value);
    }
    free(nonce);
    body = sign(pk, hdr, payload);

    run("POST", path, body, resp);

    if (pki_fuzz_verbose()) {
        fprintf(stderr, "setup %s: %d %.*s\n", path, resp->http_status,
                (int) resp->body_len, resp->body ? (char *) resp->body : "");
    }

    free(url);
    free(hdr);
    free(body);
}


/* The last path segment of a URL (malloc'd). */
static char *
last_seg(const char *url)
{
    const char  *p;

    if (url == NULL || (p = strrchr(url, '/')) == NULL) {
        fprintf(stderr, "fuzz_acme setup: no URL\n");
        exit(1);
    }

    return xstrdup(p + 1);
}


static cJSON *
body_json(const pki_acme_resp_t *resp)
{
    cJSON  *j;

    j = cJSON_ParseWithLength((const char *) resp->body, resp->body_len);
    if (j == NULL) {
        fprintf(stderr, "fuzz_acme setup: %d, no JSON\n", resp->http_status);
        exit(1);
    }

    return j;
}


/* Creates an order for ids; returns its id, the id of its first authz
 * (authz), and of that authz's first challenge (chall, may be NULL). */
static char *
setup_order(const char *ids, char **authz, char **chall)
{
    char             *oid, *p;
    cJSON            *j, *a;
    pki_acme_resp_t   resp;

    p = xasprintf("{\"identifiers\":%s}", ids);
    setup_post(key_a, 0, "new-order", p, &resp);
    free(p);
    if (resp.http_status != 201) {
        fprintf(stderr, "fuzz_acme setup: new-order %d\n", resp.http_status);
        exit(1);
    }
    oid = last_seg(resp.location);
    j = body_json(&resp);
    a = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "authorizations"), 0);
    *authz = last_seg(cJSON_IsString(a) ? a->valuestring : NULL);
    cJSON_Delete(j);
    pki_acme_resp_free(&resp);

    if (chall != NULL) {
        p = xasprintf("authz/%s/%s", subst[S_ACCT].value, *authz);
        setup_post(key_a, 0, p, "", &resp);
        free(p);
        j = body_json(&resp);
        a = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "challenges"), 0);
        a = cJSON_GetObjectItem(a, "url");
        *chall = last_seg(cJSON_IsString(a) ? a->valuestring : NULL);
        cJSON_Delete(j);
        pki_acme_resp_free(&resp);
    }

    return oid;
}


/* Marks an authorization valid in the store (as a validation would). */
static void
setup_valid(const char *aid)
{
    char   *key, *text;
    cJSON  *j;

    key = xasprintf("fz:{acme:%s}:authz:%s", subst[S_ACCT].value, aid);
    text = pki_fuzz_kv_get(key);
    j = text ? cJSON_Parse(text) : NULL;
    if (j == NULL) {
        fprintf(stderr, "fuzz_acme setup: no authz %s\n", key);
        exit(1);
    }
    cJSON_ReplaceItemInObject(j, "status", cJSON_CreateString("valid"));
    free(text);
    text = cJSON_PrintUnformatted(j);
    pki_fuzz_kv_set(key, text);
    free(text);
    free(key);
    cJSON_Delete(j);
}


static char *
csr_b64url(const char *cn, EVP_PKEY *pk)
{
    int                 n;
    char               *out;
    X509_REQ           *csr;
    X509_NAME          *name;
    unsigned char      *der;
    X509_EXTENSION     *ext;
    STACK_OF(X509_EXTENSION)  *exts;

    csr = X509_REQ_new();
    name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    X509_REQ_set_subject_name(csr, name);
    X509_NAME_free(name);

    exts = sk_X509_EXTENSION_new_null();
    {
        char  san[300];

        snprintf(san, sizeof(san), "DNS:%s", cn);
        ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    }
    sk_X509_EXTENSION_push(exts, ext);
    X509_REQ_add_extensions(csr, exts);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);

    X509_REQ_set_pubkey(csr, pk);
    X509_REQ_sign(csr, pk, EVP_sha256());

    der = NULL;
    n = i2d_X509_REQ(csr, &der);
    X509_REQ_free(csr);
    if (n <= 0) {
        abort();
    }
    out = pki_b64url_encode(der, (size_t) n);
    OPENSSL_free(der);

    return out;
}


static void
setup_eab(void)
{
    char            kid[32], hkey[PKI_ACME_EAB_KEY_BUF];
    char           *hdr, *ph, *pp, *ps, *input;
    size_t          klen;
    unsigned int    maclen;
    pki_result_t    res;
    unsigned char  *k, mac[64];

    pki_result_init(&res);
    if (pki_acme_eab_new(conf.redis, kid, hkey, &res) != PKI_OK
        || !pki_b64url_decode(hkey, strlen(hkey), &k, &klen))
    {
        fprintf(stderr, "fuzz_acme setup: EAB: %s\n", res.detail);
        exit(1);
    }

    hdr = xasprintf("{\"alg\":\"HS256\",\"kid\":\"%s\",\"url\":\""
                    BASE "/new-account\"}", kid);
    ph = pki_b64url_encode((unsigned char *) hdr, strlen(hdr));
    pp = pki_b64url_encode((unsigned char *) subst[S_JWKB].value,
                           strlen(subst[S_JWKB].value));
    input = xasprintf("%s.%s", ph, pp);
    HMAC(EVP_sha256(), k, (int) klen, (unsigned char *) input, strlen(input),
         mac, &maclen);
    ps = pki_b64url_encode(mac, maclen);

    subst[S_EAB].value = xasprintf("{\"protected\":\"%s\",\"payload\":\"%s\","
                                   "\"signature\":\"%s\"}", ph, pp, ps);

    free(hdr);
    free(ph);
    free(pp);
    free(ps);
    free(input);
    free(k);
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char                      *p, *pem;
    cJSON                     *j, *c;
    X509                      *cert;
    BIO                       *b;
    int                        n;
    pki_result_t               res;
    pki_acme_resp_t            resp;
    pki_template_t            *t;
    const pki_fuzz_fixture_t  *fx;
    unsigned char             *der;
    char                       serial[41], *z3, *hex;

    static const char *const acme_lines[] = {
        "key_types ec:P-256 ec:P-384 rsa:2048-4096 ed25519",
        "subject CN copy", "san dns copy wildcard", "san ip copy",
        "validity 90d", "extended_key_usage serverAuth", NULL
    };

    (void) argc;
    (void) argv;

    fx = pki_fuzz_fixture();
    key_a = pki_fuzz_pem_pkey(key_a_pem);
    key_b = pki_fuzz_pem_pkey(key_b_pem);

    t = pki_fuzz_template("acme", acme_lines);
    pki_result_init(&res);
    if (t == NULL || pki_ca_add_template(fx->ca, t, &res) != PKI_OK) {
        fprintf(stderr, "fuzz_acme: template: %s\n", res.detail);
        exit(1);
    }

    memset(&conf, 0, sizeof(conf));
    conf.ca = fx->ca;
    conf.tmpl = t;
    conf.redis = pki_fuzz_kv_redis();
    conf.tos = "https://acme.fuzz/tos";
    conf.website = "https://acme.fuzz/";
    conf.caa = caa;
    conf.authz_reuse = 3600;
    conf.max_body = 16384;
    conf.orders_per_hour = 1000;

    subst[S_BASE].value = xstrdup(BASE);
    /* the inputs' nonce ($NONCE): made at the end of the setup, unused in
     * the snapshot, and valid for the life of any fuzzing run */
    conf.nonce_ttl = 10L * 365 * 86400;
    subst[S_JWK].value = pki_jwk_json(key_a);
    subst[S_JWKB].value = pki_jwk_json(key_b);

    /* account A */
    setup_post(key_a, 1, "new-account", "{\"termsOfServiceAgreed\":true,"
               "\"contact\":[\"mailto:fuzz@acme.fuzz\"]}", &resp);
    if (resp.http_status != 201) {
        fprintf(stderr, "fuzz_acme setup: new-account %d\n",
                resp.http_status);
        exit(1);
    }
    subst[S_ACCT].value = last_seg(resp.location);
    subst[S_KID].value = xstrdup(resp.location);
    pki_acme_resp_free(&resp);

    /* orders: pending, ready, valid */
    subst[S_O1].value = setup_order("[{\"type\":\"dns\",\"value\":"
                                    "\"fuzz.example\"},{\"type\":\"ip\","
                                    "\"value\":\"192.0.2.7\"}]",
                                    &subst[S_Z1].value, &subst[S_C1].value);
    subst[S_O2].value = setup_order("[{\"type\":\"dns\",\"value\":"
                                    "\"ready.fuzz.example\"}]",
                                    &subst[S_Z2].value, NULL);
    setup_valid(subst[S_Z2].value);
    subst[S_CSR].value = csr_b64url("ready.fuzz.example", key_b);

    subst[S_O3].value = setup_order("[{\"type\":\"dns\",\"value\":"
                                    "\"valid.fuzz.example\"}]", &z3, NULL);
    setup_valid(z3);
    free(z3);

    p = csr_b64url("valid.fuzz.example", key_b);
    {
        char  *payload = xasprintf("{\"csr\":\"%s\"}", p);
        char  *path = xasprintf("finalize/%s/%s", subst[S_ACCT].value,
                                subst[S_O3].value);

        setup_post(key_a, 0, path, payload, &resp);
        free(payload);
        free(path);
    }
    free(p);
    if (resp.http_status != 200) {
        fprintf(stderr, "fuzz_acme setup: finalize %d %.*s\n",
                resp.http_status, (int) resp.body_len,
                resp.body ? (char *) resp.body : "");
        exit(1);
    }
    pki_acme_resp_free(&resp);

    /* the certificate of $O3 and its record */
    p = xasprintf("fz:{acme:%s}:order:%s", subst[S_ACCT].value,
                  subst[S_O3].value);
    pem = pki_fuzz_kv_get(p);
    free(p);
    j = pem ? cJSON_Parse(pem) : NULL;
    c = cJSON_GetObjectItem(j, "leaf");
    b = cJSON_IsString(c) ? BIO_new_mem_buf(c->valuestring, -1) : NULL;
    cert = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    cJSON_Delete(j);
    free(pem);
    if (cert == NULL) {
        fprintf(stderr, "fuzz_acme setup: no certificate in $O3\n");
        exit(1);
    }

    der = NULL;
    n = i2d_X509(cert, &der);
    subst[S_CERT].value = pki_b64url_encode(der, (size_t) n);
    subst[S_CERTID].value = pki_acme_cert_id(cert);
    {
        BIGNUM  *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);

        hex = BN_bn2hex(bn);
        BN_free(bn);
    }
    if (!pki_serial_normalize(hex, serial)) {
        abort();
    }
    OPENSSL_free(hex);
    {
        char  *key = xasprintf("fz:{ca:issuing}:cert:%s", serial);
        char  *req = xasprintf("acme:%s", subst[S_ACCT].value);

        pki_fuzz_kv_hset(key, "der", (char *) der, (size_t) n);
        pki_fuzz_kv_hset(key, "ca", "issuing", 7);
        pki_fuzz_kv_hset(key, "template", "acme", 4);
        pki_fuzz_kv_hset(key, "protocol", "acme", 4);
        pki_fuzz_kv_hset(key, "status", "good", 4);
        pki_fuzz_kv_hset(key, "reason", "0", 1);
        pki_fuzz_kv_hset(key, "subject", "CN=valid.fuzz.example", 21);
        pki_fuzz_kv_hset(key, "requester", req, strlen(req));
        pki_fuzz_kv_hset(key, "not_before", "1700000000", 10);
        pki_fuzz_kv_hset(key, "not_after", "4000000000", 10);
        pki_fuzz_kv_hset(key, "created", "1700000000", 10);
        free(key);
        free(req);
    }
    OPENSSL_free(der);
    X509_free(cert);

    setup_eab();

    subst[S_NONCE].value = new_nonce();
    pki_fuzz_kv_snapshot();

    if (pki_fuzz_verbose()) {
        for (n = 0; n < S_N; n++) {
            fprintf(stderr, "%s = %.80s\n", subst[n].name,
                    subst[n].value ? subst[n].value : "(null)");
        }
    }

    ERR_clear_error();

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char             mode, *path, *url, *hdr, *payload, *inner, *body;
    const char      *method, *nl, *nl2, *end, *p;
    pki_acme_resp_t  resp;

    if (size < 2 || size > PKI_ACME_FUZZ_MAX) {
        return 0;
    }

    end = (const char *) data + size;
    mode = (char) data[0];
    p = (const char *) data + 1;
    if (*p == ' ') {
        p++;
    }

    nl = memchr(p, '\n', (size_t) (end - p));
    if (nl == NULL) {
        nl = end;
    }

    path = expand(p, (size_t) (nl - p), NULL);
    url = xasprintf(BASE "/%s", path);
    p = nl < end ? nl + 1 : end;

    body = NULL;
    method = "POST";

    switch (mode) {
    case 'g':
        method = "GET";
        break;

    case 'h':
        method = "HEAD";
        break;

    case 'r':
        body = pki_fuzz_strndup((const uint8_t *) p, (size_t) (end - p));
        break;

    case 'a':
    case 'b':
    case 'k':
        nl2 = memchr(p, '\n', (size_t) (end - p));
        if (nl2 == NULL) {
            nl2 = end;
        }
        hdr = expand(p, (size_t) (nl2 - p), url);
        p = nl2 < end ? nl2 + 1 : end;
        payload = expand(p, (size_t) (end - p), url);

        if (mode == 'k') {
            /* the inner JWS of keyChange: "header\npayload", key B */
            nl2 = strchr(payload, '\n');
            if (nl2 != NULL) {
                *(char *) nl2 = '\0';
                inner = sign(key_b, payload, nl2 + 1);
            } else {
                inner = sign(key_b, payload, "");
            }
            free(payload);
            payload = inner;
        }

        body = sign(mode == 'b' ? key_b : key_a, hdr, payload);
        free(hdr);
        free(payload);
        break;

    default:
        free(path);
        free(url);
        return 0;
    }

    run(method, path, body, &resp);

    if (pki_fuzz_verbose()) {
        fprintf(stderr, "%s %s: %d %.*s\n", method, path, resp.http_status,
                (int) (resp.body_len > 300 ? 300 : resp.body_len),
                resp.body ? (char *) resp.body : "");
    }

    if (resp.http_status < 100 || resp.http_status > 599) {
        abort();
    }
    if (resp.body_len > 0 && resp.body == NULL) {
        abort();
    }
    if (resp.content_type != NULL
        && strcmp(resp.content_type, "application/problem+json") == 0)
    {
        cJSON  *j = cJSON_ParseWithLength((const char *) resp.body,
                                          resp.body_len);

        if (!cJSON_IsObject(j)) {
            abort();
        }
        cJSON_Delete(j);
    }

    pki_acme_resp_free(&resp);
    free(body);
    free(path);
    free(url);

    pki_fuzz_kv_reset();
    ERR_clear_error();

    return 0;
}
