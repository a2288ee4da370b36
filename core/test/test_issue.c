/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * CAs, CSR parsing, template policy and issuance.  With PKI_TEST_REDIS_SOCK
 * set (the unix socket of a running redis-server) also the Redis-backed
 * issue flow: records, 10,000 unique serials, Redis outage.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <hiredis/hiredis.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "pki.h"
#include "test/unit.h"
#include "test/fixture.h"
#include "test/certs.h"
#include "test/proxy.h"
#include "test/clock.h"


#define MAX_ARGS  16


static char             dir[64];
static pki_template_t  *extra[16];    /* added to a CA: freed after it */
static int              nextra;


typedef struct {
    const char    *name;
    const char    *alg;       /* "EC:P-256", "RSA:1024", "ED25519", ... */
    const char    *subject;   /* "/CN=x/O=y"; "+" joins a multi-valued RDN */
    const char    *sans;      /* OpenSSL conf syntax, or NULL */
    pki_status_t   want;
    const char    *detail;
    const char    *want_subject;  /* RFC 2253 of the request, or NULL */
} policy_case_t;


static const policy_case_t  policy_cases[] = {
    { "P-256 ok", "EC:P-256", "/CN=dev1", "DNS:dev1.example.com",
      PKI_OK, NULL, "C=DE,CN=dev1" },
    { "P-256 with O and IP", "EC:P-256", "/O=Acme/CN=dev1",
      "DNS:dev1.example.com,IP:192.0.2.1,IP:2001:db8::1", PKI_OK, NULL,
      "C=DE,O=Acme,CN=dev1" },
    { "fixed C overrides", "EC:P-256", "/C=US/CN=dev1", NULL, PKI_OK, NULL,
      "C=DE,CN=dev1" },
    { "RSA 2048 ok", "RSA:2048", "/CN=dev1", NULL, PKI_OK, NULL, NULL },
    { "Ed25519 ok", "ED25519", "/CN=dev1", NULL, PKI_OK, NULL, NULL },
    { "RSA 1024 refused", "RSA:1024", "/CN=dev1", NULL, PKI_POLICY,
      "key type RSA 1024 is not allowed by template \"device\" (allowed: "
      "ec:P-256 rsa:2048-4096 ed25519)", NULL },
    /* a key whose signatures anyone can make (e = 1: s = m) or that
     * is no RSA key (e even): the CSR's own signature proves nothing */
    { "RSA e=1 refused", "RSA-E:1", "/CN=dev1", NULL, PKI_POLICY,
      "RSA public exponent must be odd and at least 3", NULL },
    { "RSA e=3 ok", "RSA-E:3", "/CN=dev1", NULL, PKI_OK, NULL, NULL },
    /* a long exponent makes the signature check slow: refused before it */
    { "RSA e=2^33+1 refused", "RSA-E:8589934593", "/CN=dev1", NULL,
      PKI_POLICY, "the CSR's key: RSA public exponent over 32 bits", NULL },
    { "P-384 refused", "EC:P-384", "/CN=dev1", NULL, PKI_POLICY,
      "key type EC P-384 is not allowed", NULL },
    { "forbidden OU", "EC:P-256", "/CN=dev1/OU=x", NULL, PKI_POLICY,
      "subject attribute OU is forbidden by template \"device\"", NULL },
    { "unlisted L", "EC:P-256", "/CN=dev1/L=Berlin", NULL, PKI_POLICY,
      "subject attribute L is not allowed by template \"device\"", NULL },
    { "unlisted OID", "EC:P-256", "/CN=dev1/1.2.3.4=x", NULL, PKI_POLICY,
      "subject attribute 1.2.3.4 is not allowed", NULL },
    { "required CN missing", "EC:P-256", "/O=Acme", NULL, PKI_POLICY,
      "subject attribute CN is required by template \"device\"", NULL },
    { "multi-valued RDN", "EC:P-256", "/CN=dev1+O=Acme", NULL, PKI_POLICY,
      "multi-valued", NULL },
    { "two CNs", "EC:P-256", "/CN=dev1/CN=admin", NULL, PKI_POLICY,
      "the subject has more than one CN", NULL },
    { "CN of 64 characters", "EC:P-256",
      "/CN=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
      NULL, PKI_OK, NULL, NULL },
    { "CN of 64 two-byte characters", "EC:P-256",
      "/CN=\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
      NULL, PKI_OK, NULL, NULL },
    { "email SAN without rule", "EC:P-256", "/CN=dev1",
      "email:a@example.com", PKI_POLICY,
      "SAN type email is not allowed by template \"device\"", NULL },
    { "URI SAN forbidden", "EC:P-256", "/CN=dev1", "URI:https://x.example/",
      PKI_POLICY, "SAN type uri is forbidden by template \"device\"", NULL },
    { "dirName SAN", "EC:P-256", "/CN=dev1", "dirName:dirsect", PKI_POLICY,
      "SAN type dirName is not allowed", NULL },
    { "otherName SAN", "EC:P-256", "/CN=dev1", "otherName:1.2.3.4;UTF8:x",
      PKI_POLICY, "SAN type otherName is not allowed", NULL },
    { "bad DNS underscore", "EC:P-256", "/CN=dev1", "DNS:bad_name.example",
      PKI_POLICY, "invalid DNS name", NULL },
    { "bad DNS hyphen", "EC:P-256", "/CN=dev1", "DNS:-a.example", PKI_POLICY,
      "invalid DNS name", NULL },
    { "bad DNS trailing dot", "EC:P-256", "/CN=dev1", "DNS:a.example.",
      PKI_POLICY, "invalid DNS name", NULL },
    { "bad DNS empty label", "EC:P-256", "/CN=dev1", "DNS:a..example",
      PKI_POLICY, "invalid DNS name", NULL },
    { "IP address as DNS name", "EC:P-256", "/CN=dev1", "DNS:10.0.0.1",
      PKI_POLICY, "invalid DNS name", NULL },
    { "digits then letters ok", "EC:P-256", "/CN=dev1", "DNS:1.2.3.example4",
      PKI_OK, NULL, NULL },
    { "bad DNS long label", "EC:P-256", "/CN=dev1",
      "DNS:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
      "example", PKI_POLICY, "invalid DNS name", NULL },
    { "wildcard without rule", "EC:P-256", "/CN=dev1", "DNS:*.example.com",
      PKI_POLICY, "invalid DNS name", NULL },
    { "control char in CN", "EC:P-256", "/CN=a\tb", NULL, PKI_POLICY,
      "invalid value", NULL },
};


static void
run(const char *fmt, const char *a, const char *b)
{
    char  cmd[1024];

    snprintf(cmd, sizeof(cmd), fmt, a, b);
    if (system(cmd) != 0) {
        diag("command failed: %s", cmd);
    }
}


/* A 2048-bit RSA key with public exponent e: a real one for an odd e
 * OpenSSL generates with; for e = 1 the modulus of a real key with
 * d = 1 (signing and verifying are then the identity, so its CSR's
 * signature verifies) */
static EVP_PKEY *
rsa_with_e(unsigned long e)
{
    BIGNUM          *n, *be, *bd;
    EVP_PKEY        *pk, *real;
    EVP_PKEY_CTX    *ctx;
    OSSL_PARAM_BLD  *bld;
    OSSL_PARAM      *params;

    if (e != 1) {
        pk = NULL;
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
        be = BN_new();
        if (ctx && be && BN_set_word(be, (BN_ULONG) e)
            && EVP_PKEY_keygen_init(ctx) == 1
            && EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048) == 1
            && EVP_PKEY_CTX_set1_rsa_keygen_pubexp(ctx, be) == 1)
        {
            (void) EVP_PKEY_keygen(ctx, &pk);
        }
        BN_free(be);
        EVP_PKEY_CTX_free(ctx);
        return pk;
    }

    real = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
    n = NULL;
    pk = NULL;
    be = BN_new();
    bd = BN_new();
    bld = OSSL_PARAM_BLD_new();
    params = NULL;
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);

    if (real && be && bd && bld && ctx
        && EVP_PKEY_get_bn_param(real, OSSL_PKEY_PARAM_RSA_N, &n) == 1
        && BN_set_word(be, 1) && BN_set_word(bd, 1)
        && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n)
        && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be)
        && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_D, bd)
        && (params = OSSL_PARAM_BLD_to_param(bld)) != NULL
        && EVP_PKEY_fromdata_init(ctx) == 1)
    {
        (void) EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_KEYPAIR, params);
    }

    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    BN_free(n);
    BN_free(be);
    BN_free(bd);
    EVP_PKEY_free(real);

    return pk;
}


static EVP_PKEY *
keygen(const char *alg)
{
    int        bits;
    EVP_PKEY  *pk;

    if (strncmp(alg, "RSA-E:", 6) == 0) {
        pk = rsa_with_e(strtoul(alg + 6, NULL, 10));
    } else if (strncmp(alg, "EC:", 3) == 0) {
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", alg + 3);
    } else if (strncmp(alg, "RSA:", 4) == 0) {
        bits = atoi(alg + 4);
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) bits);
    } else {
        pk = EVP_PKEY_Q_keygen(NULL, NULL, alg);
    }

    return pk;
}


static char *
write_key(EVP_PKEY *pk, const char *name)
{
    FILE        *f;
    static char  path[8][128];
    static int   n;
    char        *p;

    p = path[n++ % 8];
    snprintf(p, 128, "%s/%s", dir, name);
    f = fopen(p, "w");
    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);

    return p;
}


static void
write_cert(X509 *x, const char *name)
{
    FILE  *f;
    char   path[128];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    PEM_write_X509(f, x);
    fclose(f);
}


static X509_NAME *
parse_name(const char *s)
{
    int         set;
    char        buf[512], *p, *q, *eq;
    X509_NAME  *name;

    name = X509_NAME_new();
    snprintf(buf, sizeof(buf), "%s", s);
    p = buf;
    set = 0;

    while (*p == '/' || *p == '+') {
        set = (*p == '+') ? -1 : 0;
        p++;
        q = p + strcspn(p, "/+");
        eq = strchr(p, '=');
        if (eq == NULL || eq > q) {
            break;
        }
        *eq = '\0';
        X509_NAME_add_entry_by_txt(name, p, MBSTRING_UTF8,
                                   (unsigned char *) eq + 1,
                                   (int) (q - eq - 1), -1, set);
        p = q;
        if (*q) {
            *q = (*q == '/') ? '/' : '+';
        }
    }

    return name;
}


/* The DER of rq (malloc'd), its length in *len. */
static unsigned char *
req_der(X509_REQ *rq, size_t *len)
{
    int             n;
    unsigned char  *der, *p;

    n = i2d_X509_REQ(rq, NULL);
    der = malloc((size_t) n);
    p = der;
    i2d_X509_REQ(rq, &p);
    *len = (size_t) n;

    return der;
}


static unsigned char *make_csr_ext(EVP_PKEY *pk, const char *subject,
    const char *sans, const char *feature, int nfeature, size_t *len);


static unsigned char *
make_csr(EVP_PKEY *pk, const char *subject, const char *sans, size_t *len)
{
    return make_csr_ext(pk, subject, sans, NULL, 0, len);
}


/* A CSR with SANs (NULL: none) and nfeature TLS feature extensions of the
 * openssl.cnf value feature ("status_request", "17", ...). */
static unsigned char *
make_csr_ext(EVP_PKEY *pk, const char *subject, const char *sans,
    const char *feature, int nfeature, size_t *len)
{
    int                        n;
    X509V3_CTX                 ctx;
    X509_REQ                  *csr;
    X509_NAME                 *nm;
    CONF                      *conf;
    long                       eline;
    BIO                       *bio;
    X509_EXTENSION            *ext;
    unsigned char             *der;
    STACK_OF(X509_EXTENSION)  *exts;
    static const char          cnf[] = "[dirsect]\nCN=other\n";

    csr = X509_REQ_new();
    X509_REQ_set_version(csr, 0);
    nm = parse_name(subject);
    X509_REQ_set_subject_name(csr, nm);
    X509_NAME_free(nm);
    X509_REQ_set_pubkey(csr, pk);

    if (sans || nfeature > 0) {
        conf = NCONF_new(NULL);
        bio = BIO_new_mem_buf(cnf, -1);
        NCONF_load_bio(conf, bio, &eline);
        BIO_free(bio);
        X509V3_set_ctx(&ctx, NULL, NULL, csr, NULL, 0);
        X509V3_set_nconf(&ctx, conf);
        exts = sk_X509_EXTENSION_new_null();
        if (sans) {
            ext = X509V3_EXT_nconf_nid(conf, &ctx, NID_subject_alt_name,
                                       (char *) sans);
            if (ext == NULL) {
                diag("bad SAN spec %s", sans);
                ERR_print_errors_fp(stdout);
            }
            sk_X509_EXTENSION_push(exts, ext);
        }
        for (n = 0; n < nfeature; n++) {
            ext = X509V3_EXT_nconf_nid(conf, &ctx, NID_tlsfeature,
                                       (char *) feature);
            if (ext == NULL) {
                diag("bad TLS feature spec %s", feature);
                ERR_print_errors_fp(stdout);
            }
            sk_X509_EXTENSION_push(exts, ext);
        }
        X509_REQ_add_extensions(csr, exts);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
        NCONF_free(conf);
    }

    X509_REQ_sign(csr, pk, EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519
                           || EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED448
                           ? NULL : EVP_sha256());

    der = req_der(csr, len);
    X509_REQ_free(csr);

    return der;
}


/* A P-256 request of the given version whose key is in point form form
 * ("compressed", "hybrid"): version 0 takes the fast reader, 2 OpenSSL's
 * (the key also in *key). */
static unsigned char *
form_csr(const char *form, long version, EVP_PKEY **key, size_t *len)
{
    X509_REQ             *rq;
    EVP_PKEY             *pk;
    unsigned char        *der;
    const unsigned char  *q;

    pk = keygen("EC:P-256");
    EVP_PKEY_set_utf8_string_param(pk,
        OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, form);
    der = make_csr(pk, "/CN=dev1", NULL, len);

    if (version != 0) {
        q = der;
        rq = d2i_X509_REQ(NULL, &q, (long) *len);
        X509_REQ_set_version(rq, version);
        X509_REQ_sign(rq, pk, EVP_sha256());
        free(der);
        der = req_der(rq, len);
        X509_REQ_free(rq);
    }

    *key = pk;

    return der;
}


/* The first octet of the request's encoded point, as sent. */
static int
csr_point_form(const unsigned char *der, size_t len)
{
    int                   n, form;
    X509_REQ             *rq;
    const unsigned char  *q, *pt;

    q = der;
    rq = d2i_X509_REQ(NULL, &q, (long) len);
    form = rq != NULL
           && X509_PUBKEY_get0_param(NULL, &pt, &n, NULL,
                                     X509_REQ_get_X509_PUBKEY(rq)) == 1
           && n > 0 ? pt[0] : -1;
    X509_REQ_free(rq);

    return form;
}


static pki_status_t
tset(pki_template_t *t, const char *line)
{
    int           argc;
    char          buf[512], *p, *words[MAX_ARGS + 1];
    const char   *argv[MAX_ARGS];
    pki_result_t  res;

    pki_result_init(&res);
    snprintf(buf, sizeof(buf), "%s", line);
    argc = 0;

    for (p = strtok(buf, " "); p && argc <= MAX_ARGS; p = strtok(NULL, " ")) {
        words[argc++] = p;
    }

    for (int i = 1; i < argc; i++) {
        argv[i - 1] = words[i];
    }

    if (pki_template_set(t, words[0], argc - 1, argv, &res) != PKI_OK) {
        diag("template line \"%s\": %s", line, res.detail);
    }

    return res.status;
}


static pki_template_t *
make_template(const char *name, const char *const *lines)
{
    pki_result_t     res;
    pki_template_t  *t;

    t = pki_template_new(name);
    for (; *lines; lines++) {
        tset(t, *lines);
    }

    pki_result_init(&res);
    if (pki_template_finish(t, &res) != PKI_OK) {
        diag("template %s: %s", name, res.detail);
    }

    return t;
}


static pki_status_t
ca_line(pki_ca_t *ca, const char *name, const char *arg, pki_result_t *res)
{
    const char  *argv[1];

    argv[0] = arg;
    return pki_ca_set(ca, name, 1, argv, res);
}


static pki_ca_t *
make_ca(const char *name, const char *cert, const char *chain,
    pki_key_t *key, pki_template_t **tmpls, const char *max_validity,
    pki_result_t *res)
{
    char       path[128];
    pki_ca_t  *ca;

    pki_result_init(res);
    ca = pki_ca_new(name);
    snprintf(path, sizeof(path), "%s/%s", dir, cert);
    ca_line(ca, "certificate", path, res);
    if (chain) {
        snprintf(path, sizeof(path), "%s/%s", dir, chain);
        ca_line(ca, "chain", path, res);
    }
    ca_line(ca, "crl_url", "http://pki.example/crl/ca.crl", res);
    ca_line(ca, "ocsp_url", "http://pki.example/ocsp", res);
    if (max_validity) {
        ca_line(ca, "max_validity", max_validity, res);
    }
    pki_ca_set_key(ca, key, res);
    for (; tmpls && *tmpls; tmpls++) {
        pki_ca_add_template(ca, *tmpls, res);
    }

    if (pki_ca_finish(ca, res) != PKI_OK) {
        return ca;
    }

    return ca;
}


static pki_key_t *
open_key(const char *path)
{
    pki_key_t     *k;
    pki_result_t   res;

    pki_result_init(&res);
    k = pki_key_new(path, NULL, &res);
    if (k == NULL || pki_key_open(k, &res) != PKI_OK) {
        diag("key %s: %s %s", path, res.detail, res.log);
    }

    return k;
}


static int
has_ext(X509 *x, int nid, int want_crit)
{
    int              idx;
    X509_EXTENSION  *e;

    idx = X509_get_ext_by_NID(x, nid, -1);
    if (idx < 0) {
        return 0;
    }

    e = X509_get_ext(x, idx);
    return want_crit < 0 || X509_EXTENSION_get_critical(e) == want_crit;
}


static time_t
asn1_to_time(const ASN1_TIME *t)
{
    struct tm  tm;

    ASN1_TIME_to_tm(t, &tm);
    return timegm(&tm);
}


static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


/*
 * A P-256 request whose public key is the point at infinity (the single
 * octet 0) with a signature that verifies for it: for Q = infinity,
 * u1*G + u2*Q = u1*G, so r = x(kG) mod n and s = e/k pass.  version 0
 * takes the fast reader, 2 OpenSSL's.
 */
static unsigned char *
inf_csr(long version, size_t *len)
{
    int                  tlen, slen, n;
    BIGNUM              *k, *r, *s, *e, *x, *ki;
    BN_CTX              *ctx;
    EC_POINT            *R;
    EC_GROUP            *g;
    X509_REQ            *req;
    EVP_PKEY            *tmp;
    X509_NAME           *nm;
    ECDSA_SIG           *sig;
    X509_ALGOR          *alg;
    const BIGNUM        *order;
    X509_PUBKEY         *xp;
    ASN1_BIT_STRING     *bs;
    unsigned char       *penc, *tbs, *sder, *out, md[32];

    tmp = keygen("EC:P-256");
    req = X509_REQ_new();
    nm = X509_NAME_new();
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC,
                               (const unsigned char *) "inf", -1, -1, 0);
    X509_REQ_set_version(req, version);
    X509_REQ_set_subject_name(req, nm);
    X509_NAME_free(nm);
    X509_REQ_set_pubkey(req, tmp);
    EVP_PKEY_free(tmp);
    xp = X509_REQ_get_X509_PUBKEY(req);
    penc = OPENSSL_malloc(1);
    penc[0] = 0;
    X509_PUBKEY_set0_param(xp, OBJ_nid2obj(NID_X9_62_id_ecPublicKey),
                           V_ASN1_OBJECT,
                           OBJ_nid2obj(NID_X9_62_prime256v1), penc, 1);

    tbs = NULL;
    tlen = i2d_re_X509_REQ_tbs(req, &tbs);
    SHA256(tbs, tlen, md);
    OPENSSL_free(tbs);

    g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    order = EC_GROUP_get0_order(g);
    ctx = BN_CTX_new();
    k = BN_new();
    r = BN_new();
    s = BN_new();
    x = BN_new();
    ki = BN_new();
    e = BN_bin2bn(md, 32, NULL);
    R = EC_POINT_new(g);
    BN_rand_range(k, order);
    EC_POINT_mul(g, R, k, NULL, NULL, ctx);
    EC_POINT_get_affine_coordinates(g, R, x, NULL, ctx);
    BN_nnmod(r, x, order, ctx);
    BN_mod_inverse(ki, k, order, ctx);
    BN_mod_mul(s, e, ki, order, ctx);
    sig = ECDSA_SIG_new();
    ECDSA_SIG_set0(sig, r, s);
    sder = NULL;
    slen = i2d_ECDSA_SIG(sig, &sder);
    ECDSA_SIG_free(sig);

    alg = X509_ALGOR_new();
    X509_ALGOR_set0(alg, OBJ_nid2obj(NID_ecdsa_with_SHA256), V_ASN1_UNDEF,
                    NULL);
    X509_REQ_set1_signature_algo(req, alg);
    X509_ALGOR_free(alg);
    bs = ASN1_BIT_STRING_new();
    ASN1_BIT_STRING_set(bs, sder, slen);
    bs->flags &= ~0x07;
    bs->flags |= ASN1_STRING_FLAG_BITS_LEFT;
    X509_REQ_set0_signature(req, bs);
    OPENSSL_free(sder);

    out = NULL;
    n = i2d_X509_REQ(req, &out);
    *len = n > 0 ? (size_t) n : 0;

    X509_REQ_free(req);
    EC_POINT_free(R);
    EC_GROUP_free(g);
    BN_free(k);
    BN_free(x);
    BN_free(ki);
    BN_free(e);
    BN_CTX_free(ctx);

    return out;
}


static void
test_csr_parse(void)
{
    int             n;
    size_t          len;
    X509_REQ       *csr;
    EVP_PKEY       *pk;
    pki_status_t    st;
    pki_result_t    res;
    unsigned char  *der, *buf;

    /* a repeated attribute: refused as malformed by both readers (EC:
     * the fast one, Ed25519: OpenSSL's); it was an internal error on the
     * first and taken (its first copy read) by the second */
    {
        size_t                     k;
        static const char *const   algs[] = { "EC:P-256", "ED25519" };
        static const unsigned char lasts[] = { 0x07, 0x0e };

        for (k = 0; k < 4; k++) {
            der = fx_dup_attr_csr(algs[k / 2], lasts[k % 2], &len);
            pki_result_init(&res);
            csr = NULL;
            st = pki_csr_parse(der, len, &csr, &res);
            ok(st == PKI_MALFORMED && csr == NULL
               && strstr(res.detail, "appears twice") != NULL,
               "%s CSR with %s twice: malformed (%s: %s)", algs[k / 2],
               k % 2 ? "extensionRequest" : "challengePassword",
               pki_status_name(st), res.detail);
            X509_REQ_free(csr);
            free(der);
        }
    }

    /* 65 attributes (distinct types): refused before the quadratic
     * check of repeats; 64 are read */
    {
        int         a, want;
        char        oid[32];
        X509_REQ   *req;
        X509_NAME  *nm;
        unsigned char  *p;

        for (want = 64; want <= 65; want++) {
            pk = keygen("EC:P-256");
            req = X509_REQ_new();
            nm = X509_NAME_new();
            X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC,
                                       (const unsigned char *) "many", -1,
                                       -1, 0);
            X509_REQ_set_subject_name(req, nm);
            X509_NAME_free(nm);
            X509_REQ_set_pubkey(req, pk);
            for (a = 0; a < want; a++) {
                snprintf(oid, sizeof(oid), "1.3.6.1.4.1.99999.%d", a + 1);
                X509_REQ_add1_attr_by_txt(req, oid, V_ASN1_UTF8STRING,
                                          (const unsigned char *) "x", 1);
            }
            X509_REQ_sign(req, pk, EVP_sha256());
            p = NULL;
            n = i2d_X509_REQ(req, &p);
            pki_result_init(&res);
            csr = NULL;
            st = pki_csr_parse(p, n > 0 ? (size_t) n : 0, &csr, &res);
            if (want == 64) {
                is_status(st, PKI_OK, "a CSR with 64 attributes");
            } else {
                ok(st == PKI_MALFORMED
                   && strstr(res.detail, "more than 64 attributes") != NULL,
                   "a CSR with 65 attributes: malformed (%s)", res.detail);
            }
            X509_REQ_free(csr);
            X509_REQ_free(req);
            OPENSSL_free(p);
            EVP_PKEY_free(pk);
        }
    }

    pk = keygen("EC:P-256");
    der = make_csr(pk, "/CN=dev1", "DNS:dev1.example.com", &len);
    buf = calloc(1, 70000);
    memcpy(buf, der, len);

    pki_result_init(&res);
    st = pki_csr_parse(der, len, &csr, &res);
    is_status(st, PKI_OK, "CSR parses");
    X509_REQ_free(csr);

    st = pki_csr_parse(der, 0, &csr, &res);
    is_status(st, PKI_MALFORMED, "empty CSR");
    ok(csr == NULL, "  no CSR returned");

    st = pki_csr_parse(NULL, 10, &csr, &res);
    is_status(st, PKI_MALFORMED, "NULL CSR");

    st = pki_csr_parse(der, len - 1, &csr, &res);
    is_status(st, PKI_MALFORMED, "truncated CSR");

    st = pki_csr_parse(der, len / 2, &csr, &res);
    is_status(st, PKI_MALFORMED, "half a CSR");

    buf[len] = 0;
    st = pki_csr_parse(buf, len + 1, &csr, &res);
    is_status(st, PKI_MALFORMED, "trailing byte");
    ok(strstr(res.detail, "trailing") != NULL, "  detail: %s", res.detail);

    st = pki_csr_parse((const unsigned char *) "garbage!garbage!", 16, &csr,
                       &res);
    is_status(st, PKI_MALFORMED, "garbage");

    memset(buf, 0x30, 100);
    st = pki_csr_parse(buf, 100, &csr, &res);
    is_status(st, PKI_MALFORMED, "nested SEQUENCE headers");

    memcpy(buf, der, len);
    buf[len - 3] ^= 0x01;
    st = pki_csr_parse(buf, len, &csr, &res);
    ok(st == PKI_BAD_SIGNATURE || st == PKI_MALFORMED,
       "flipped signature byte refused (%s)", pki_status_name(st));
    buf[len - 3] ^= 0x01;

    /* A byte of the subject: the signature no longer matches. */
    {
        unsigned char  *cn = memmem(buf, len, "dev1", 4);
        cn[0] = 'x';
        st = pki_csr_parse(buf, len, &csr, &res);
        is_status(st, PKI_BAD_SIGNATURE, "tampered subject");
        ok(strcmp(res.detail, "CSR signature does not verify") == 0,
           "  detail: %s", res.detail);
        cn[0] = 'd';
    }

    /* the version old certbot and the acme-client gem write (2) is taken;
     * 1 and 3 are not versions anyone writes */
    {
        long            v;
        size_t          vlen;
        X509_REQ       *rq;
        unsigned char  *vder;
        const unsigned char  *q;

        for (v = 1; v <= 3; v++) {
            q = der;
            rq = d2i_X509_REQ(NULL, &q, (long) len);
            X509_REQ_set_version(rq, v);
            X509_REQ_sign(rq, pk, EVP_sha256());
            vder = req_der(rq, &vlen);
            X509_REQ_free(rq);
            st = pki_csr_parse(vder, vlen, &csr, &res);
            if (v == 2) {
                is_status(st, PKI_OK, "CSR version 2 (old certbot, "
                          "acme-client gem) taken");
                X509_REQ_free(csr);
            } else {
                ok(st == PKI_MALFORMED, "CSR version %ld refused (%s)", v,
                   pki_status_name(st));
                ok(strcmp(res.detail, "unsupported CSR version") == 0,
                   "  detail: %s", res.detail);
            }
            free(vder);
        }
    }

    /* an EC key at the point at infinity, whose "signature" verifies:
     * the input's fault, by either reader (not a 500 later on) */
    for (n = 0; n <= 2; n += 2) {
        size_t          ilen;
        unsigned char  *inf = inf_csr(n, &ilen);

        pki_result_init(&res);
        csr = NULL;
        st = pki_csr_parse(inf, ilen, &csr, &res);
        ok(st == PKI_MALFORMED, "CSR version %d: EC key at infinity "
           "refused as malformed (%s)", n, pki_status_name(st));
        ok(csr == NULL && strstr(res.detail, "infinity") != NULL,
           "  detail: %s", res.detail);
        X509_REQ_free(csr);
        OPENSSL_free(inf);
    }

    /* RFC 5480 2.2: a point in hybrid form (04 with the parity of y in
     * the first octet: 06, 07) must not be used, and Go and BoringSSL
     * refuse a certificate carrying one: the request's fault, by either
     * reader.  A compressed point (02, 03) is allowed: taken. */
    for (n = 0; n <= 2; n += 2) {
        size_t          flen;
        EVP_PKEY       *fk;
        unsigned char  *f;

        f = form_csr("hybrid", n, &fk, &flen);
        ok(csr_point_form(f, flen) == 6 || csr_point_form(f, flen) == 7,
           "CSR version %d: a hybrid point (%02x)", n,
           csr_point_form(f, flen));
        pki_result_init(&res);
        csr = NULL;
        st = pki_csr_parse(f, flen, &csr, &res);
        ok(st == PKI_MALFORMED, "  refused as malformed (%s)",
           pki_status_name(st));
        ok(csr == NULL && strstr(res.detail, "hybrid") != NULL,
           "  detail: %s", res.detail);
        X509_REQ_free(csr);
        free(f);
        EVP_PKEY_free(fk);

        f = form_csr("compressed", n, &fk, &flen);
        pki_result_init(&res);
        csr = NULL;
        st = pki_csr_parse(f, flen, &csr, &res);
        ok(st == PKI_OK, "CSR version %d: a compressed point (%02x) taken "
           "(%s %s)", n, csr_point_form(f, flen), pki_status_name(st),
           res.detail);
        ok(csr != NULL && EVP_PKEY_eq(X509_REQ_get0_pubkey(csr), fk) == 1,
           "  the request's key");
        X509_REQ_free(csr);
        free(f);
        EVP_PKEY_free(fk);
    }

    st = pki_csr_parse(buf, 65537, &csr, &res);
    is_status(st, PKI_TOO_LARGE, "CSR over 64 KiB");
    ok(csr == NULL, "  no CSR returned");

    free(buf);
    free(der);
    EVP_PKEY_free(pk);
}


/*
 * A CSR self-signed with MD5 is refused by either reader (version 0 takes
 * the fast one, 2 OpenSSL's), with RSA and with the key checks passed; one
 * with SHA-1 (old device fleets) is taken.
 */
static void
test_csr_digest(void)
{
    int             i, v;
    size_t          len;
    X509_REQ       *rq, *csr;
    EVP_PKEY       *pk;
    X509_NAME      *nm;
    pki_status_t    st;
    pki_result_t    res;
    unsigned char  *der;
    static const struct {
        const char    *name;
        const EVP_MD  *(*md)(void);
        pki_status_t   want;
    } cases[] = {
        { "md5WithRSAEncryption", EVP_md5, PKI_POLICY },
        { "sha1WithRSAEncryption", EVP_sha1, PKI_OK },
        { "sha256WithRSAEncryption", EVP_sha256, PKI_OK },
    };

    pk = keygen("RSA:2048");

    for (i = 0; i < 3; i++) {
        for (v = 0; v <= 2; v += 2) {
            rq = X509_REQ_new();
            nm = parse_name("/CN=dev1");
            X509_REQ_set_version(rq, v);
            X509_REQ_set_subject_name(rq, nm);
            X509_NAME_free(nm);
            X509_REQ_set_pubkey(rq, pk);
            if (X509_REQ_sign(rq, pk, cases[i].md()) <= 0) {
                diag("X509_REQ_sign with %s failed", cases[i].name);
                ERR_print_errors_fp(stdout);
            }
            der = req_der(rq, &len);
            X509_REQ_free(rq);

            pki_result_init(&res);
            csr = NULL;
            st = pki_csr_parse(der, len, &csr, &res);
            ok(st == cases[i].want
               && (st == PKI_OK || (csr == NULL
                                    && strstr(res.detail, "MD5") != NULL)),
               "CSR version %d signed with %s: %s (%s)", v, cases[i].name,
               pki_status_name(st), res.detail);
            X509_REQ_free(csr);
            free(der);
        }
    }

    EVP_PKEY_free(pk);
}


/* RFC 8410 5: a template whose key_usage has none of digitalSignature,
 * nonRepudiation, keyCertSign, cRLSign but that allows EC keys beside
 * Ed25519 and Ed448 ones (taken by pki_template_finish) refuses an Ed key
 * with the request; an EC key is taken. */
static void
test_ed_key_usage(void)
{
    size_t           i, len;
    X509_REQ        *csr;
    EVP_PKEY        *pk;
    pki_status_t     st;
    pki_result_t     res;
    pki_request_t    req;
    pki_template_t  *t;
    unsigned char   *der;

    static const char *const lines[] = {
        "subject CN copy", "key_types ec:P-256 ed25519 ed448",
        "key_usage keyAgreement", NULL
    };
    static const struct {
        const char    *alg;
        pki_status_t   want;
    } cases[] = {
        { "EC:P-256", PKI_OK },
        { "ED25519", PKI_POLICY },
        { "ED448", PKI_POLICY },
    };

    t = make_template("agree", lines);

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pk = keygen(cases[i].alg);
        der = make_csr(pk, "/CN=agree", NULL, &len);
        pki_result_init(&res);
        st = pki_csr_parse(der, len, &csr, &res);
        if (st == PKI_OK) {
            st = pki_request_from_csr(t, csr, &req, &res);
            pki_request_clear(&req);
            X509_REQ_free(csr);
        }
        ok(st == cases[i].want, "keyAgreement-only template, %s key: %s "
           "(%s)", cases[i].alg, pki_status_name(st), res.detail);
        if (cases[i].want != PKI_OK) {
            ok(strstr(res.detail, "RFC 8410") != NULL
               && strstr(res.detail, "\"agree\"") != NULL,
               "  detail: %s", res.detail);
        }
        free(der);
        EVP_PKEY_free(pk);
    }

    pki_template_free(t);
}


/*
 * A request of an Ed25519 (nid NID_ED25519) or Ed448 key given as its raw
 * encoding pub, self-signed with the forgery a key of small order admits:
 * for the identity, R = B and S = 1 pass [S]B = R + [k]A for any message.
 * OpenSSL cannot sign with no private key, so the signature is set as
 * made here.
 */
static unsigned char *
ed_forged_csr(int nid, const unsigned char *pub, size_t *len)
{
    int               n;
    size_t            plen, half;
    X509_REQ         *req;
    EVP_PKEY         *tmp;
    X509_NAME        *nm;
    X509_ALGOR       *alg;
    X509_PUBKEY      *xp;
    ASN1_BIT_STRING  *bs;
    unsigned char    *penc, *out, sig[114];
    static const unsigned char  b25519[32] = {
        0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
        0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
        0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
        0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66
    };
    static const unsigned char  b448[57] =
        "\x14\xfa\x30\xf2\x5b\x79\x08\x98\xad\xc8\xd7\x4e\x2c\x13\xbd\xfd"
        "\xc4\x39\x7c\xe6\x1c\xff\xd3\x3a\xd7\xc2\xa0\x05\x1e\x9c\x78\x87"
        "\x40\x98\xa3\x6c\x73\x73\xea\x4b\x62\xc7\xc9\x56\x37\x20\x76\x88"
        "\x24\xbc\xb6\x6e\x71\x46\x3f\x69\x00";

    half = nid == NID_ED25519 ? 32 : 57;
    plen = half;

    tmp = keygen(nid == NID_ED25519 ? "ED25519" : "ED448");
    req = X509_REQ_new();
    nm = parse_name("/CN=small");
    X509_REQ_set_version(req, 0);
    X509_REQ_set_subject_name(req, nm);
    X509_NAME_free(nm);
    X509_REQ_set_pubkey(req, tmp);
    EVP_PKEY_free(tmp);

    xp = X509_REQ_get_X509_PUBKEY(req);
    penc = OPENSSL_malloc(plen);
    memcpy(penc, pub, plen);
    X509_PUBKEY_set0_param(xp, OBJ_nid2obj(nid), V_ASN1_UNDEF, NULL, penc,
                           (int) plen);

    memset(sig, 0, sizeof(sig));
    memcpy(sig, nid == NID_ED25519 ? b25519 : b448, half);
    sig[half] = 1;

    alg = X509_ALGOR_new();
    X509_ALGOR_set0(alg, OBJ_nid2obj(nid), V_ASN1_UNDEF, NULL);
    X509_REQ_set1_signature_algo(req, alg);
    X509_ALGOR_free(alg);
    bs = ASN1_BIT_STRING_new();
    ASN1_BIT_STRING_set(bs, sig, (int) (2 * half));
    bs->flags &= ~0x07;
    bs->flags |= ASN1_STRING_FLAG_BITS_LEFT;
    X509_REQ_set0_signature(req, bs);

    out = NULL;
    n = i2d_X509_REQ(req, &out);
    *len = n > 0 ? (size_t) n : 0;
    X509_REQ_free(req);

    return out;
}


/*
 * EdDSA keys of small order, for which a forged signature verifies over
 * any message: refused in a CSR (by the reader, before its signature) and
 * by pki_check_key for a key given as it is (pkictl, server keygen); the
 * sign bit of x and the non-canonical encodings make no difference.  A
 * key of full order next to them is taken.
 */
static void
test_small_order(void)
{
    size_t              i, len;
    X509_REQ           *csr, *rq;
    EVP_PKEY           *pk;
    X509_NAME          *nm;
    pki_status_t        st;
    pki_result_t        res;
    pki_request_t       req;
    pki_template_t     *t;
    unsigned char      *der, pub[57];
    const unsigned char  *q;

    static const char *const lines[] = {
        "subject CN copy", "key_types ed25519 ed448", NULL
    };
    static const struct {
        int          nid;
        const char  *name;
        const char  *hex;       /* the first octets; the others 00 or ff */
        int          fill;
        int          last;      /* the last octet */
    } keys[] = {
        { NID_ED25519, "Ed25519 identity (1)", "01", 0x00, 0x00 },
        { NID_ED25519, "Ed25519 identity, x sign bit set", "01", 0x00,
          0x80 },
        { NID_ED25519, "Ed25519 y = 0 (order 4)", "00", 0x00, 0x00 },
        { NID_ED25519, "Ed25519 y = p - 1 (order 2)", "ec", 0xff, 0x7f },
        { NID_ED25519, "Ed25519 y = p + 1 (identity, non-canonical)", "ee",
          0xff, 0x7f },
        { NID_ED25519, "Ed25519 order 8", "26e8958fc2b227b045c3f489f2ef98f0"
          "d5dfac05d3c63339b13802886d53fc", 0x00, 0x05 },
        { NID_ED25519, "Ed25519 order 8, x sign bit set",
          "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03",
          0x00, 0xfa },
        { NID_ED448, "Ed448 identity (1)", "01", 0x00, 0x00 },
        { NID_ED448, "Ed448 (0, -1) (order 2)",
          "feffffffffffffffffffffffffffffffffffffffffffffffffffffff"
          "fe", 0xff, 0x00 },
        { NID_ED448, "Ed448 y = 0 (order 4), x sign bit set", "00", 0x00,
          0x80 },
    };

    t = make_template("edsmall", lines);

    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        size_t  n, plen, k;

        plen = keys[i].nid == NID_ED25519 ? 32 : 57;
        memset(pub, keys[i].fill, sizeof(pub));
        n = strlen(keys[i].hex) / 2;
        for (k = 0; k < n; k++) {
            unsigned int  b;

            sscanf(keys[i].hex + 2 * k, "%2x", &b);
            pub[k] = (unsigned char) b;
        }
        pub[plen - 1] = (unsigned char) keys[i].last;
        if (keys[i].nid == NID_ED448 && n <= 29) {
            /* octets 29..55 follow octet 28's value, 0 or ff */
            memset(pub + n, keys[i].fill, 56 - n);
        }

        /* the CSR, whose forged self-signature OpenSSL verifies where
         * the key is the Ed25519 identity (its Ed448 code refused the
         * Ed448 forgery here, which is refused by the reader all the
         * same) */
        der = ed_forged_csr(keys[i].nid, pub, &len);
        if (i == 0) {
            q = der;
            rq = d2i_X509_REQ(NULL, &q, (long) len);
            ok(rq != NULL && X509_REQ_verify(rq, X509_REQ_get0_pubkey(rq))
                             == 1,
               "%s: its forged CSR signature verifies (OpenSSL)",
               keys[i].name);
            X509_REQ_free(rq);
            ERR_clear_error();
        }

        pki_result_init(&res);
        csr = NULL;
        st = pki_csr_parse(der, len, &csr, &res);
        ok(st == PKI_POLICY && csr == NULL
           && strstr(res.detail, "small-order point") != NULL,
           "%s: CSR refused (%s: %s)", keys[i].name, pki_status_name(st),
           res.detail);
        X509_REQ_free(csr);
        OPENSSL_free(der);

        /* the key as it is, through pki_check_key (pkictl, keygen) */
        pk = EVP_PKEY_new_raw_public_key(keys[i].nid, NULL, pub, plen);
        ok(pk != NULL, "%s: OpenSSL takes the key", keys[i].name);
        nm = parse_name("/CN=small");
        pki_result_init(&res);
        st = pk == NULL ? PKI_INTERNAL
             : pki_request_build(t, nm, NULL, pk, &req, &res);
        ok(st == PKI_POLICY && strstr(res.detail, "anyone can sign") != NULL,
           "%s: refused by the policy (%s: %s)", keys[i].name,
           pki_status_name(st), res.detail);
        if (st == PKI_OK) {
            pki_request_clear(&req);
        }
        X509_NAME_free(nm);
        EVP_PKEY_free(pk);
    }

    /* keys of full order: taken */
    for (i = 0; i < 2; i++) {
        pk = keygen(i == 0 ? "ED25519" : "ED448");
        nm = parse_name("/CN=small");
        pki_result_init(&res);
        st = pki_request_build(t, nm, NULL, pk, &req, &res);
        is_status(st, PKI_OK, i == 0 ? "Ed25519 key of full order taken"
                                     : "Ed448 key of full order taken");
        if (st == PKI_OK) {
            pki_request_clear(&req);
        }
        X509_NAME_free(nm);
        EVP_PKEY_free(pk);
    }

    pki_template_free(t);
}


/* An RSA key whose modulus is factor * p, p a prime of 2047 bits, e =
 * 65537: with d where the modulus is odd (OpenSSL signs with it; its
 * Montgomery code takes no even modulus), public only where it is even. */
static EVP_PKEY *
rsa_small_factor(unsigned long factor)
{
    BIGNUM          *p, *n, *e, *d, *phi;
    BN_CTX          *ctx;
    EVP_PKEY        *pk;
    EVP_PKEY_CTX    *pctx;
    OSSL_PARAM_BLD  *bld;
    OSSL_PARAM      *params;

    pk = NULL;
    params = NULL;
    ctx = BN_CTX_new();
    p = BN_new();
    n = BN_new();
    e = BN_new();
    d = BN_new();
    phi = BN_new();
    bld = OSSL_PARAM_BLD_new();
    pctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);

    if (ctx && p && n && e && d && phi && bld && pctx
        && BN_generate_prime_ex(p, 2047, 0, NULL, NULL, NULL)
        && BN_copy(n, p) && BN_mul_word(n, factor)
        && BN_set_word(e, 65537)
        && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n)
        && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
    {
        /* phi = (factor - 1)(p - 1) for a prime factor */
        if (factor % 2 == 1) {
            BN_copy(phi, p);
            BN_sub_word(phi, 1);
            BN_mul_word(phi, factor - 1);
            if (BN_mod_inverse(d, e, phi, ctx) != NULL) {
                OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_D, d);
            }
        }

        params = OSSL_PARAM_BLD_to_param(bld);
        if (params != NULL && EVP_PKEY_fromdata_init(pctx) == 1) {
            (void) EVP_PKEY_fromdata(pctx, &pk, factor % 2 == 1
                                                ? EVP_PKEY_KEYPAIR
                                                : EVP_PKEY_PUBLIC_KEY,
                                     params);
        }
    }

    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(pctx);
    BN_free(p);
    BN_free(n);
    BN_free(e);
    BN_free(d);
    BN_free(phi);
    BN_CTX_free(ctx);

    return pk;
}


/*
 * RSA moduli that are even or have a prime factor under 752 (CA/Browser
 * Forum BR 6.1.6) are refused: in a CSR, signed with such a key (the
 * reader refuses it before its signature), and given as a key
 * (pki_check_key: pkictl, server keygen).  t allows rsa:2048-4096.
 */
static void
test_rsa_modulus(pki_template_t *t)
{
    size_t          i, len;
    X509_REQ       *csr;
    EVP_PKEY       *pk;
    X509_NAME      *nm;
    pki_status_t    st;
    pki_result_t    res;
    pki_request_t   req;
    unsigned char  *der;
    static const struct {
        unsigned long   factor;
        const char     *detail;
    } cases[] = {
        { 3, "prime factor under 752" },
        { 751, "prime factor under 752" },
        { 2, "RSA modulus is even" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pk = rsa_small_factor(cases[i].factor);
        ok(pk != NULL && EVP_PKEY_get_bits(pk) >= 2048,
           "RSA modulus %lu * p: %d bits", cases[i].factor,
           pk ? EVP_PKEY_get_bits(pk) : 0);
        if (pk == NULL) {
            continue;
        }

        if (cases[i].factor % 2 == 1) {
            der = make_csr(pk, "/CN=dev1", NULL, &len);
            pki_result_init(&res);
            csr = NULL;
            st = pki_csr_parse(der, len, &csr, &res);
            if (st == PKI_OK) {
                st = pki_request_from_csr(t, csr, &req, &res);
                if (st == PKI_OK) {
                    pki_request_clear(&req);
                }
            }
            ok(st == PKI_POLICY
               && strstr(res.detail, cases[i].detail) != NULL,
               "  its CSR refused (%s: %s)", pki_status_name(st),
               res.detail);
            X509_REQ_free(csr);
            free(der);
        }

        nm = parse_name("/CN=dev1");
        pki_result_init(&res);
        st = pki_request_build(t, nm, NULL, pk, &req, &res);
        ok(st == PKI_POLICY && strstr(res.detail, cases[i].detail) != NULL,
           "  the key refused by the policy (%s: %s)", pki_status_name(st),
           res.detail);
        if (st == PKI_OK) {
            pki_request_clear(&req);
        }
        X509_NAME_free(nm);
        EVP_PKEY_free(pk);
    }
}


static void
test_policy(pki_template_t *t)
{
    size_t          i, len;
    char            text[256];
    BIO            *bio;
    X509_REQ       *csr;
    EVP_PKEY       *pk;
    pki_status_t    st;
    pki_result_t    res;
    pki_request_t   req;
    unsigned char  *der;

    for (i = 0; i < sizeof(policy_cases) / sizeof(policy_cases[0]); i++) {
        const policy_case_t  *c = &policy_cases[i];

        pk = keygen(c->alg);
        der = make_csr(pk, c->subject, c->sans, &len);
        pki_result_init(&res);

        st = pki_csr_parse(der, len, &csr, &res);
        if (st != PKI_OK) {
            /* refused by the reader itself (a key not worth checking) */
            is_status(st, c->want, c->name);
            ok(c->want != PKI_OK && c->detail != NULL
               && strstr(res.detail, c->detail) != NULL,
               "  refused by the CSR reader: %s", res.detail);
            free(der);
            EVP_PKEY_free(pk);
            continue;
        }

        st = pki_request_from_csr(t, csr, &req, &res);
        is_status(st, c->want, c->name);

        if (c->detail) {
            ok(strstr(res.detail, c->detail) != NULL, "  detail \"%s\"",
               res.detail);
        }

        if (st == PKI_OK) {
            ok(req.pubkey != NULL && EVP_PKEY_eq(req.pubkey, pk) == 1,
               "  request has the CSR key");
        } else {
            ok(req.subject == NULL && req.pubkey == NULL && req.sans == NULL,
               "  request left empty");
        }

        if (st == PKI_OK && c->want_subject) {
            bio = BIO_new(BIO_s_mem());
            X509_NAME_print_ex(bio, req.subject, 0, XN_FLAG_RFC2253);
            memset(text, 0, sizeof(text));
            BIO_read(bio, text, sizeof(text) - 1);
            BIO_free(bio);
            ok(strcmp(text, c->want_subject) == 0, "  subject %s", text);
        }

        pki_request_clear(&req);
        X509_REQ_free(csr);
        free(der);
        EVP_PKEY_free(pk);
    }
}


/* A request whose subject holds one attribute of the given ASN.1 string
 * type and raw bytes (no conversion), through the template's subject
 * rules: the status, and the request's value as type and UTF-8 text. */
static pki_status_t
typed_subject(pki_template_t *t, int nid, int type, const char *bytes,
    int len, int *out_type, char *out, size_t size)
{
    int                 i;
    X509_REQ           *csr;
    EVP_PKEY           *pk;
    X509_NAME          *nm;
    pki_status_t        st;
    pki_result_t        res;
    pki_request_t       req;
    unsigned char      *utf8;
    const ASN1_STRING  *d;

    pk = keygen("EC:P-256");
    csr = X509_REQ_new();
    nm = X509_NAME_new();
    X509_NAME_add_entry_by_NID(nm, NID_commonName, MBSTRING_UTF8,
                               (unsigned char *) "typed", -1, -1, 0);
    if (nid != NID_commonName || type >= 0) {
        X509_NAME_add_entry_by_NID(nm, nid, type, (unsigned char *) bytes,
                                   len, -1, 0);
    }
    if (nid == NID_commonName) {
        X509_NAME_ENTRY_free(X509_NAME_delete_entry(nm, 0));
    }
    X509_REQ_set_subject_name(csr, nm);
    X509_NAME_free(nm);
    X509_REQ_set_pubkey(csr, pk);
    X509_REQ_sign(csr, pk, EVP_sha256());

    *out_type = -1;
    out[0] = '\0';
    pki_result_init(&res);
    st = pki_request_from_csr(t, csr, &req, &res);

    if (st == PKI_OK) {
        i = X509_NAME_get_index_by_NID(req.subject, nid, -1);
        d = i >= 0 ? X509_NAME_ENTRY_get_data(
                         X509_NAME_get_entry(req.subject, i)) : NULL;
        utf8 = NULL;
        if (d != NULL && ASN1_STRING_to_UTF8(&utf8, d) >= 0) {
            *out_type = ASN1_STRING_type(d);
            snprintf(out, size, "%s", utf8);
        }
        OPENSSL_free(utf8);
        pki_request_clear(&req);
    }

    X509_REQ_free(csr);
    EVP_PKEY_free(pk);

    return st;
}


/* Subject values are judged by their own string type: a PrintableString
 * or IA5String of another alphabet is refused (it was copied as it came),
 * a BMPString or T61String is copied as UTF8String, a country is two
 * letters in a PrintableString. */
static void
test_subject_types(void)
{
    int              type;
    char             v[128];
    pki_template_t  *t;
    static const char *const lines[] = {
        "key_types ec:P-256", "subject CN copy", "subject C copy",
        "subject emailAddress copy", "validity 30d", NULL
    };

    t = make_template("typed", lines);

    is_status(typed_subject(t, NID_commonName, V_ASN1_PRINTABLESTRING,
                            "@a\xe9", 3, &type, v, sizeof(v)),
              PKI_POLICY, "PrintableString CN with '@' and 0xE9 refused");
    is_status(typed_subject(t, NID_commonName, V_ASN1_PRINTABLESTRING,
                            "dev-1 (lab)", 11, &type, v, sizeof(v)),
              PKI_OK, "PrintableString CN of its alphabet taken");
    ok(type == V_ASN1_PRINTABLESTRING && strcmp(v, "dev-1 (lab)") == 0,
       "  kept as it came (%d %s)", type, v);
    is_status(typed_subject(t, NID_pkcs9_emailAddress, V_ASN1_IA5STRING,
                            "A\xff" "B@x.example", 12, &type, v, sizeof(v)),
              PKI_POLICY, "IA5String with 0xFF refused");
    is_status(typed_subject(t, NID_commonName, V_ASN1_BMPSTRING,
                            "\0d\0e\0v", 6, &type, v, sizeof(v)),
              PKI_OK, "BMPString CN taken");
    ok(type == V_ASN1_UTF8STRING && strcmp(v, "dev") == 0,
       "  copied as UTF8String (%d %s)", type, v);
    /* a raw 0 byte within a valid BMP character is no end of the text */
    is_status(typed_subject(t, NID_commonName, V_ASN1_BMPSTRING,
                            "\0d\0e\0v\0\0", 8, &type, v, sizeof(v)),
              PKI_POLICY, "BMPString CN with a U+0000 refused");
    /* (OpenSSL's own name builder stops at 64: raw bytes here) */
    is_status(typed_subject(t, NID_commonName, V_ASN1_UTF8STRING,
                            "0123456789abcdef0123456789abcdef"
                            "0123456789abcdef0123456789abcdefX", 65, &type,
                            v, sizeof(v)),
              PKI_POLICY, "CN of 65 characters refused");
    is_status(typed_subject(t, NID_countryName, V_ASN1_PRINTABLESTRING,
                            "DEU", 3, &type, v, sizeof(v)),
              PKI_POLICY, "country of three letters refused");
    is_status(typed_subject(t, NID_countryName, V_ASN1_PRINTABLESTRING,
                            "D1", 2, &type, v, sizeof(v)),
              PKI_POLICY, "country with a digit refused");
    is_status(typed_subject(t, NID_countryName, V_ASN1_UTF8STRING,
                            "DE", 2, &type, v, sizeof(v)),
              PKI_OK, "UTF8String country taken");
    ok(type == V_ASN1_PRINTABLESTRING && strcmp(v, "DE") == 0,
       "  copied as PrintableString (%d %s)", type, v);

    pki_template_free(t);
}


/* One subject value sent as type in with raw bytes: the status wanted
 * and, when taken, the type and UTF-8 text it is issued as (text NULL:
 * not compared). */
typedef struct {
    int            nid;
    int            in;
    const char    *bytes;
    int            len;
    pki_status_t   want;
    int            type;
    const char    *text;
    const char    *name;
} typed_case_t;


static void
run_typed(pki_template_t *t, const typed_case_t *c, size_t n)
{
    int     type;
    char    v[128];
    size_t  i;

    for (i = 0; i < n; i++) {
        is_status(typed_subject(t, c[i].nid, c[i].in, c[i].bytes, c[i].len,
                                &type, v, sizeof(v)),
                  c[i].want, c[i].name);
        if (c[i].want == PKI_OK) {
            ok(type == c[i].type
               && (c[i].text == NULL || strcmp(v, c[i].text) == 0),
               "  issued as type %d \"%s\" (%d \"%s\")", c[i].type,
               c[i].text ? c[i].text : "", type, v);
        }
    }
}


/* Each attribute's value is issued in its attribute's own string type
 * (RFC 5280 4.1.2.4, appendix A): emailAddress and DC an IA5String of
 * ASCII, C a PrintableString, serialNumber and dnQualifier one where
 * they fit it (else a UTF8String, as devices send them), the
 * DirectoryString attributes a PrintableString or UTF8String (an
 * IA5String, T61String or BMPString becomes a UTF8String).  A value its
 * attribute's type cannot hold is a refusal of the request (PKI_POLICY),
 * never an internal error, whatever type it came in. */
static void
test_subject_attr_types(void)
{
    pki_template_t  *t;
    static const char *const lines[] = {
        "key_types ec:P-256", "subject CN copy", "subject O copy",
        "subject OU copy", "subject emailAddress copy", "subject DC copy",
        "subject serialNumber copy", "subject 2.5.4.46 copy",
        "validity 30d", NULL
    };
#define U8  V_ASN1_UTF8STRING
#define PS  V_ASN1_PRINTABLESTRING
#define IA  V_ASN1_IA5STRING
#define BMP V_ASN1_BMPSTRING
#define T61 V_ASN1_T61STRING
    static const typed_case_t  cases[] = {
        { NID_commonName, IA, "dev", 3, PKI_OK, U8, "dev",
          "IA5String CN taken (a DirectoryString)" },
        { NID_organizationName, IA, "Acme@x", 6, PKI_OK, U8, "Acme@x",
          "IA5String O taken" },
        { NID_organizationalUnitName, T61, "Caf\xe9", 4, PKI_OK, U8,
          "Caf\xc3\xa9", "T61String OU taken" },
        /* emailAddress and DC: IA5String, ASCII only */
        { NID_pkcs9_emailAddress, U8, "dev@x.example", 13, PKI_OK, IA,
          "dev@x.example", "UTF8String emailAddress of ASCII taken" },
        { NID_pkcs9_emailAddress, U8, "d\xc3\xa9v@x.example", 14,
          PKI_POLICY, 0, NULL, "UTF8String emailAddress with U+00E9 "
          "refused" },
        { NID_domainComponent, U8, "example", 7, PKI_OK, IA, "example",
          "UTF8String DC of ASCII taken" },
        { NID_domainComponent, U8, "caf\xc3\xa9", 5, PKI_POLICY, 0, NULL,
          "UTF8String DC with U+00E9 refused" },
        /* serialNumber and dnQualifier: PrintableString where they fit;
         * devices send serials such as "SN_0001" as a UTF8String, issued
         * so, as before (not locked out) */
        { NID_serialNumber, U8, "SN-0001", 7, PKI_OK, PS, "SN-0001",
          "UTF8String serialNumber taken" },
        { NID_serialNumber, U8, "SN_0001", 7, PKI_OK, U8, "SN_0001",
          "serialNumber with '_' taken" },
        { NID_serialNumber, IA, "SN@1", 4, PKI_OK, U8, "SN@1",
          "IA5String serialNumber with '@' taken" },
        { NID_dnQualifier, U8, "q1", 2, PKI_OK, PS, "q1",
          "UTF8String dnQualifier taken" },
        /* a BMPString or T61String its attribute's type cannot hold: a
         * refusal, not "cannot copy subject attribute" (PKI_INTERNAL) */
        { NID_pkcs9_emailAddress, BMP, "\0d\0\xe9\0@\0x\0.\0e\0x", 14,
          PKI_POLICY, 0, NULL, "BMPString emailAddress with U+00E9 "
          "refused" },
        { NID_pkcs9_emailAddress, T61, "d\xe9@x.ex", 7, PKI_POLICY, 0,
          NULL, "T61String emailAddress with 0xE9 refused" },
        { NID_domainComponent, BMP, "\x04\x10\0b", 4, PKI_POLICY, 0, NULL,
          "BMPString DC with U+0410 refused" },
        { NID_serialNumber, T61, "SN@1", 4, PKI_OK, U8, NULL,
          "T61String serialNumber with '@' taken" },
        { NID_serialNumber, BMP, "\0S\0N\0\xe9", 6, PKI_OK, U8,
          "SN\xc3\xa9", "BMPString serialNumber with U+00E9 taken" },
        { NID_pkcs9_emailAddress, BMP, "\0d\0@\0x\0.\0e\0x", 12, PKI_OK,
          IA, "d@x.ex", "BMPString emailAddress of ASCII taken" },
        { NID_serialNumber, T61, "SN-1", 4, PKI_OK, PS, "SN-1",
          "T61String serialNumber of printable characters taken" },
    };

    t = make_template("attrtypes", lines);
    run_typed(t, cases, sizeof(cases) / sizeof(cases[0]));
    pki_template_free(t);
}


/* Characters that reorder or hide text (a "dev\u202e1gpj.exe" shows as
 * "dev1exe.jpg"): C1 controls, bidi controls, zero-width characters and
 * the BOM are refused in any subject value, after decoding. */
static void
test_subject_invisible(void)
{
    pki_template_t  *t;
    static const char *const lines[] = {
        "key_types ec:P-256", "subject CN copy", "subject O copy",
        "validity 30d", NULL
    };
#define BAD_CN(s, what) \
    { NID_commonName, U8, s, (int) sizeof(s) - 1, PKI_POLICY, 0, NULL, \
      "UTF8String CN with " what " refused" }
    static const typed_case_t  cases[] = {
        BAD_CN("dev\xe2\x80\xae" "1gpj.exe", "U+202E (RLO)"),
        BAD_CN("dev\xc2\x85" "1", "U+0085 (NEL, C1)"),
        BAD_CN("dev\xc2\x9f" "1", "U+009F (C1)"),
        BAD_CN("dev\xe2\x80\x8b" "1", "U+200B (zero width space)"),
        BAD_CN("dev\xe2\x80\x8d" "1", "U+200D (zero width joiner)"),
        BAD_CN("dev\xe2\x80\x8e" "1", "U+200E (LRM)"),
        BAD_CN("dev\xe2\x80\x8f" "1", "U+200F (RLM)"),
        BAD_CN("dev\xe2\x80\xaa" "1", "U+202A (LRE)"),
        BAD_CN("dev\xe2\x81\xa0" "1", "U+2060 (word joiner)"),
        BAD_CN("dev\xe2\x81\xa6" "1", "U+2066 (LRI)"),
        BAD_CN("dev\xe2\x81\xa9" "1", "U+2069 (PDI)"),
        BAD_CN("\xef\xbb\xbf" "dev1", "U+FEFF (BOM)"),
        { NID_commonName, BMP, "\0d\0e\0v\x20\x2e\0" "1", 8, PKI_POLICY, 0,
          NULL, "BMPString CN with U+202E refused" },
        { NID_organizationName, BMP, "\xfe\xff\0A", 4, PKI_POLICY, 0, NULL,
          "BMPString O with U+FEFF refused" },
        { NID_organizationName, T61, "Ac\x85me", 5, PKI_POLICY, 0, NULL,
          "T61String O with 0x85 (C1 after decoding) refused" },
        { NID_commonName, U8, "d\xc3\xa9v \xe2\x80\x94 1", 10, PKI_OK, U8,
          NULL, "UTF8String CN with U+00E9 and U+2014 taken" },
    };
#undef BAD_CN
#undef U8
#undef PS
#undef IA
#undef BMP
#undef T61

    t = make_template("invisible", lines);
    run_typed(t, cases, sizeof(cases) / sizeof(cases[0]));
    pki_template_free(t);
}


/* The status of a request for subject and SANs (NULL: none) under t; the
 * detail of a refusal in detail. */
static pki_status_t
name_request(pki_template_t *t, const char *subject, const char *sans,
    char *detail, size_t size)
{
    size_t          len;
    X509_REQ       *csr;
    EVP_PKEY       *pk;
    pki_status_t    st;
    pki_result_t    res;
    pki_request_t   req;
    unsigned char  *der;

    pk = keygen("EC:P-256");
    der = make_csr(pk, subject, sans, &len);
    pki_result_init(&res);

    st = pki_csr_parse(der, len, &csr, &res);
    if (st == PKI_OK) {
        st = pki_request_from_csr(t, csr, &req, &res);
        if (st == PKI_OK) {
            pki_request_clear(&req);
        }
        X509_REQ_free(csr);
    }

    snprintf(detail, size, "%s", st == PKI_OK ? "" : res.detail);
    free(der);
    EVP_PKEY_free(pk);

    return st;
}


/*
 * A CN is what a TLS client checks when a certificate has no dNSName
 * (OpenSSL's X509_check_host, curl, Python, mbedTLS fall back to it): a
 * copied CN with a '*' needs a template that allows wildcards, and then
 * passes the checks of a wildcard dNSName; a CN that is a DNS name of two
 * labels or more, in an end entity's certificate that can serve TLS (EKU
 * serverAuth or anyExtendedKeyUsage, or no EKU where the template has a
 * DNS rule), passes the template's dNSName rules.
 */
static void
test_cn_dns(void)
{
    size_t           i;
    char             d[512], name[160];
    pki_template_t  *t[11];
    static const char *const lines[11][8] = {
        { "key_types ec:P-256", "subject CN copy", "san dns copy", NULL },
        { "key_types ec:P-256", "subject CN copy", "san dns forbidden",
          "extended_key_usage serverAuth", NULL },
        { "key_types ec:P-256", "subject CN copy", NULL },
        { "key_types ec:P-256", "subject CN copy", "san dns forbidden",
          "extended_key_usage clientAuth", NULL },
        { "key_types ec:P-256", "subject CN required",
          "san dns copy wildcard", "extended_key_usage serverAuth", NULL },
        { "key_types ec:P-256", "subject CN copy", "san dns copy",
          "extended_key_usage 2.5.29.37.0", "san ip copy", NULL },
        { "key_types ec:P-256", "subject CN required", "san dns forbidden",
          "extended_key_usage clientAuth serverAuth", NULL },
        { "key_types ec:P-256", "subject CN copy",
          "extended_key_usage serverAuth", NULL },
        { "key_types ec:P-256", "subject CN copy",
          "basic_constraints ca:true", NULL },
        { "key_types ec:P-256", "subject CN copy", "san ip forbidden",
          NULL },
        { "key_types ec:P-256", "subject CN copy", "san ip copy",
          "extended_key_usage serverAuth", NULL },
    };
    static const char *const names[11] = {
        "dnscopy", "dnsforbidden", "nodns", "client", "wild", "any",
        "clientserver", "server", "ca", "ipforbidden", "ipcopy"
    };
    static const struct {
        int            tmpl;
        const char    *subject;
        const char    *sans;
        pki_status_t   want;
        const char    *detail;
    } cases[] = {
        /* a: wildcards */
        { 0, "/CN=*.example.com", NULL, PKI_POLICY,
          "CN \"*.example.com\"" },
        { 0, "/CN=*.example.com", NULL, PKI_POLICY,
          "does not allow wildcards" },
        { 0, "/CN=*.example.com", "DNS:a.example.com", PKI_POLICY,
          "wildcard" },
        { 0, "/CN=my*device", NULL, PKI_POLICY, "wildcard" },
        { 3, "/CN=*.example.com", NULL, PKI_POLICY, "wildcard" },
        { 4, "/CN=*.example.com", NULL, PKI_OK, NULL },
        { 4, "/CN=*.com", NULL, PKI_POLICY, "CN \"*.com\"" },
        { 4, "/CN=a.*.example.com", NULL, PKI_POLICY, "DNS name" },
        { 4, "/CN=*.*.example.com", NULL, PKI_POLICY, "DNS name" },
        { 4, "/CN=*", NULL, PKI_POLICY, "DNS name" },
        /* b: a DNS name, in a certificate a TLS server can use */
        { 1, "/CN=login.bank.example", NULL, PKI_POLICY,
          "CN \"login.bank.example\"" },
        { 1, "/CN=login.bank.example", NULL, PKI_POLICY,
          "forbids DNS names" },
        { 1, "/CN=LOGIN.Bank.Example", NULL, PKI_POLICY, "DNS" },
        { 7, "/CN=login.bank.example", NULL, PKI_POLICY,
          "does not issue DNS names" },
        { 5, "/CN=login.bank.example", NULL, PKI_OK, NULL },
        { 5, "/CN=bad_name.example", NULL, PKI_OK, NULL },
        { 6, "/CN=login.bank.example", NULL, PKI_POLICY, "DNS" },
        { 0, "/CN=srv.example.com", "DNS:srv.example.com", PKI_OK, NULL },
        { 0, "/CN=srv.example.com", NULL, PKI_OK, NULL },
        { 4, "/CN=srv.example.com", NULL, PKI_OK, NULL },
        /* c: a trailing dot, which curl strips from the CN as from the
         * host name (lib/vtls/hostcheck.c) */
        { 1, "/CN=login.bank.example.", NULL, PKI_POLICY,
          "forbids DNS names" },
        { 7, "/CN=login.bank.example.", NULL, PKI_POLICY,
          "does not issue DNS names" },
        { 1, "/CN=*.bank.example.", NULL, PKI_POLICY, "wildcard" },
        { 0, "/CN=srv.example.com.", NULL, PKI_OK, NULL },
        { 4, "/CN=*.example.com.", NULL, PKI_OK, NULL },
        { 4, "/CN=*.com.", NULL, PKI_POLICY, "DNS name" },
        { 1, "/CN=device-33.", NULL, PKI_OK, NULL },
        { 1, "/CN=.", NULL, PKI_OK, NULL },
        { 3, "/CN=login.bank.example.", NULL, PKI_OK, NULL },
        /* as today: single labels, non-names, client certificates */
        { 1, "/CN=device-33", NULL, PKI_OK, NULL },
        { 2, "/CN=device-33", NULL, PKI_OK, NULL },
        { 1, "/CN=Device 33.1", NULL, PKI_OK, NULL },
        { 3, "/CN=login.bank.example", NULL, PKI_OK, NULL },
        /* neither a DNS rule nor an EKU: the operator never said the CN
         * is a host name, and fleets renew such certificates; a CA's
         * name is no host name either */
        { 2, "/CN=sensor-01.plant.example", NULL, PKI_OK, NULL },
        { 8, "/CN=issuing.ca.example.com", NULL, PKI_OK, NULL },
        { 2, "/CN=*.plant.example", NULL, PKI_POLICY, "wildcard" },
        { 8, "/CN=*.ca.example.com", NULL, PKI_POLICY, "wildcard" },
        /* d: white space at either end, which name comparison drops
         * (RFC 4518 2.6.1): a CN judged as a DNS name with any is
         * refused, not passed as no name or issued padded */
        { 1, "/CN=login.bank.example ", NULL, PKI_POLICY, "white space" },
        { 1, "/CN= login.bank.example", NULL, PKI_POLICY, "white space" },
        { 1, "/CN=  login.bank.example  ", NULL, PKI_POLICY,
          "white space" },
        { 1, "/CN=login.bank.example. ", NULL, PKI_POLICY, "white space" },
        { 7, "/CN=login.bank.example ", NULL, PKI_POLICY, "white space" },
        { 6, "/CN= login.bank.example", NULL, PKI_POLICY, "white space" },
        { 1, "/CN=login.bank.example\xc2\xa0", NULL, PKI_POLICY,
          "white space" },                              /* U+00A0 */
        { 1, "/CN=\xe3\x80\x80login.bank.example", NULL, PKI_POLICY,
          "white space" },                              /* U+3000 */
        { 1, "/CN=login.bank.example\xe2\x80\x8a", NULL, PKI_POLICY,
          "white space" },                              /* U+200A */
        { 1, "/CN=\xe2\x80\xaflogin.bank.example", NULL, PKI_POLICY,
          "white space" },                              /* U+202F */
        { 1, "/CN=login.bank.example\xe2\x81\x9f", NULL, PKI_POLICY,
          "white space" },                              /* U+205F */
        { 1, "/CN=\xe1\x9a\x80login.bank.example", NULL, PKI_POLICY,
          "white space" },                              /* U+1680 */
        { 0, "/CN= srv.example.com", NULL, PKI_POLICY, "white space" },
        { 0, "/CN=srv.example.com ", "DNS:srv.example.com", PKI_POLICY,
          "white space" },
        { 5, "/CN=login.bank.example ", NULL, PKI_POLICY, "white space" },
        { 1, "/CN= *.bank.example", NULL, PKI_POLICY, "white space" },
        { 0, "/CN=*.example.com ", NULL, PKI_POLICY, "white space" },
        { 4, "/CN= *.example.com", NULL, PKI_POLICY, "white space" },
        { 4, "/CN=*.example.com\xc2\xa0", NULL, PKI_POLICY,
          "white space" },
        { 2, "/CN= *.plant.example", NULL, PKI_POLICY, "white space" },
        /* no DNS name however it is folded, or under a template that
         * judges none: as before */
        { 1, "/CN= device-33 ", NULL, PKI_OK, NULL },
        { 1, "/CN=Device 33.1 ", NULL, PKI_OK, NULL },
        { 1, "/CN=login. bank.example", NULL, PKI_OK, NULL },
        { 1, "/CN=login.bank.example\xc2\xa0x", NULL, PKI_OK, NULL },
        { 1, "/CN=   ", NULL, PKI_OK, NULL },
        { 1, "/CN=\xc2\xa0", NULL, PKI_OK, NULL },
        { 3, "/CN=login.bank.example ", NULL, PKI_OK, NULL },
        { 2, "/CN= sensor-01.plant.example", NULL, PKI_OK, NULL },
        { 8, "/CN=issuing.ca.example.com ", NULL, PKI_OK, NULL },
        /* e: the full stops IDNA takes for '.' (U+3002, U+FF0E, U+FF61):
         * a CN that is a DNS name with them as '.' is refused wherever
         * such a CN is judged */
        { 1, "/CN=login\xe3\x80\x82" "bank\xe3\x80\x82" "example", NULL,
          PKI_POLICY, "full stop IDNA takes for '.'" },
        { 1, "/CN=login\xef\xbc\x8e" "bank.example", NULL, PKI_POLICY,
          "full stop" },
        { 1, "/CN=login.bank\xef\xbd\xa1" "example", NULL, PKI_POLICY,
          "full stop" },
        { 1, "/CN=login.bank.example\xe3\x80\x82", NULL, PKI_POLICY,
          "full stop" },
        { 7, "/CN=login\xe3\x80\x82" "bank.example", NULL, PKI_POLICY,
          "full stop" },
        { 6, "/CN=login\xef\xbc\x8e" "bank.example", NULL, PKI_POLICY,
          "full stop" },
        { 0, "/CN=srv\xef\xbc\x8e" "example.com", NULL, PKI_POLICY,
          "full stop" },
        { 0, "/CN=srv\xef\xbc\x8e" "example.com", "DNS:srv.example.com",
          PKI_POLICY, "full stop" },
        { 5, "/CN=xn--zz\xef\xbd\xa1" "example.com", NULL, PKI_POLICY,
          "full stop" },
        { 1, "/CN= login\xe3\x80\x82" "bank.example", NULL, PKI_POLICY,
          "white space" },
        { 1, "/CN=*\xe3\x80\x82" "bank.example", NULL, PKI_POLICY,
          "wildcard" },
        { 4, "/CN=*\xef\xbc\x8e" "example.com", NULL, PKI_POLICY,
          "DNS name" },
        { 4, "/CN=*.good.example\xe3\x80\x82", NULL, PKI_POLICY,
          "full stop" },
        /* no DNS name with them as '.', or a template that judges no
         * CN: as before */
        { 1, "/CN=device\xe3\x80\x82" "33", NULL, PKI_OK, NULL },
        { 1, "/CN=Device 33\xef\xbd\xa1" "1", NULL, PKI_OK, NULL },
        { 1, "/CN=\xe6\x9d\xb1\xe4\xba\xac\xe3\x80\x82"
          "\xe6\x94\xaf\xe5\xba\x97", NULL, PKI_OK, NULL },
        { 1, "/CN=\xe3\x80\x82", NULL, PKI_OK, NULL },
        { 1, "/CN=a\xe3\x80\x82\xe3\x80\x82" "b", NULL, PKI_OK, NULL },
        { 3, "/CN=login\xe3\x80\x82" "bank.example", NULL, PKI_OK, NULL },
        { 2, "/CN=sensor\xe3\x80\x82" "plant.example", NULL, PKI_OK, NULL },
        { 8, "/CN=issuing\xef\xbc\x8e" "ca.example", NULL, PKI_OK, NULL },
        /* f: characters IDNA maps to ASCII (UTS #46): a CN that is then a
         * DNS name with a label it does not spell is refused wherever
         * such a CN is judged; a genuine IDN, or one that maps to no DNS
         * name, as before */
        { 1, "/CN=\xef\xbd\x8c\xef\xbd\x8f\xef\xbd\x87\xef\xbd\x89"
          "\xef\xbd\x8e.bank.example", NULL, PKI_POLICY,
          "is the DNS name \"login.bank.example\" once IDNA maps" },
        { 1, "/CN=\xef\xbc\xac\xef\xbc\xaf\xef\xbc\xa7\xef\xbc\xa9"
          "\xef\xbc\xae\xef\xbc\x8e" "bank\xef\xbc\x8e" "example", NULL,
          PKI_POLICY, "once IDNA maps" },          /* all fullwidth */
        { 1, "/CN=log\xc2\xadin.bank.example", NULL, PKI_POLICY,
          "\"login.bank.example\" once IDNA maps" },  /* soft hyphen */
        { 1, "/CN=\xe2\x93\x81ogin.bank.example", NULL, PKI_POLICY,
          "once IDNA maps" },                      /* circled L */
        { 1, "/CN=a\xe2\x92\x88" "example", NULL, PKI_OK,
          NULL },                 /* U+2488: disallowed, no name at all */
        { 1, "/CN=\xef\xbd\x8c\xef\xbd\x8f\xef\xbd\x87\xef\xbd\x89"
          "\xef\xbd\x8e.\xe6\x9d\xb1\xe4\xba\xac.example", NULL,
          PKI_POLICY, "once IDNA maps" },          /* and an IDN label */
        { 7, "/CN=log\xc2\xadin.bank.example", NULL, PKI_POLICY,
          "once IDNA maps" },
        { 0, "/CN=log\xc2\xadin.bank.example", "DNS:login.bank.example",
          PKI_POLICY, "once IDNA maps" },
        { 5, "/CN=log\xc2\xadin.bank.example", NULL, PKI_POLICY,
          "once IDNA maps" },
        { 1, "/CN=b\xc3\xbc" "cher.example", NULL, PKI_OK, NULL },
        { 1, "/CN=B\xc3\xbc" "cher.Example", NULL, PKI_OK, NULL },
        { 1, "/CN=\xe6\x9d\xb1\xe4\xba\xac.example", NULL, PKI_OK, NULL },
        { 1, "/CN=\xef\xbc\xa4\xef\xbd\x85\xef\xbd\x96 33.1", NULL,
          PKI_OK, NULL },                          /* a space: no name */
        { 1, "/CN=\xef\xbd\x84\xef\xbd\x85\xef\xbd\x96-33", NULL,
          PKI_OK, NULL },                          /* one label */
        { 3, "/CN=log\xc2\xadin.bank.example", NULL, PKI_OK, NULL },
        { 2, "/CN=log\xc2\xadin.bank.example", NULL, PKI_OK, NULL },
        { 8, "/CN=log\xc2\xadin.ca.example", NULL, PKI_OK, NULL },
        /* g: an IP address, which curl matches against the CN of a
         * certificate without SANs as it does a host name: judged as an
         * iPAddress SAN wherever a host name is, and where an IP rule
         * says the certificates name hosts */
        { 9, "/CN=127.0.0.1", NULL, PKI_POLICY,
          "CN \"127.0.0.1\" is an IP address" },
        { 9, "/CN=127.0.0.1", NULL, PKI_POLICY, "san ip forbidden" },
        { 9, "/CN=::1", NULL, PKI_POLICY, "forbids IP addresses" },
        { 9, "/CN=2001:db8::1.", NULL, PKI_POLICY, "forbids IP" },
        { 9, "/CN=10.0.0.1.", NULL, PKI_POLICY, "forbids IP" },
        { 1, "/CN=10.0.0.1", NULL, PKI_POLICY,
          "does not issue IP addresses (no san ip)" },
        { 0, "/CN=192.0.2.7", NULL, PKI_POLICY, "no san ip" },
        { 7, "/CN=::ffff:192.0.2.7", NULL, PKI_POLICY, "no san ip" },
        { 1, "/CN=10.0.0.1 ", NULL, PKI_POLICY, "white space" },
        { 1, "/CN=10\xe3\x80\x82" "0.0.1", NULL, PKI_POLICY,
          "an IP address with a full stop" },
        { 5, "/CN=192.0.2.7", NULL, PKI_OK, NULL },
        { 10, "/CN=192.0.2.7", NULL, PKI_OK, NULL },
        { 10, "/CN=2001:db8::7", NULL, PKI_OK, NULL },
        /* no address (inet_pton's forms only), or a template that judges
         * no CN: as before */
        { 9, "/CN=device-10.0.0.1", NULL, PKI_OK, NULL },
        { 9, "/CN=10.1", NULL, PKI_OK, NULL },
        { 9, "/CN=0x7f.0.0.1", NULL, PKI_OK, NULL },
        { 1, "/CN=fe80::1%eth0", NULL, PKI_OK, NULL },
        { 2, "/CN=10.0.0.1", NULL, PKI_OK, NULL },
        { 3, "/CN=10.0.0.1", NULL, PKI_OK, NULL },
        { 8, "/CN=10.0.0.1", NULL, PKI_OK, NULL },
    };

    for (i = 0; i < 11; i++) {
        t[i] = make_template(names[i], lines[i]);
    }

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(name, sizeof(name), "template %s, %s%s%s",
                 names[cases[i].tmpl], cases[i].subject,
                 cases[i].sans ? " " : "",
                 cases[i].sans ? cases[i].sans : "");
        is_status(name_request(t[cases[i].tmpl], cases[i].subject,
                               cases[i].sans, d, sizeof(d)),
                  cases[i].want, name);
        if (cases[i].detail) {
            ok(strstr(d, cases[i].detail) != NULL, "  detail \"%s\"", d);
        }
    }

    /* the CN as the client reads it, whatever its string type */
    {
        int   type;
        char  v[128];

        is_status(typed_subject(t[1], NID_commonName, V_ASN1_BMPSTRING,
                                "\0a\0.\0b\0.\0e\0x", 12, &type, v,
                                sizeof(v)),
                  PKI_POLICY, "BMPString CN a.b.ex under san dns forbidden "
                  "refused");
        is_status(typed_subject(t[1], NID_commonName, V_ASN1_BMPSTRING,
                                "\0a\xff\x0e\0b\x30\x02\0e\0x", 12,
                                &type, v, sizeof(v)),
                  PKI_POLICY, "BMPString CN a\\uff0eb\\u3002ex under san "
                  "dns forbidden refused");
    }

    for (i = 0; i < 11; i++) {
        pki_template_free(t[i]);
    }
}


/*
 * Names a verifier reads beyond the SANs: a CN under a template whose only
 * server EKU is a Server Gated Crypto one (OpenSSL's sslserver purpose
 * takes it) is judged as a DNS name, and a subject emailAddress, which
 * S/MIME clients and X509_check_email read without an rfc822Name, must
 * be an email address and is refused under "san email forbidden".
 */
static void
test_names_beyond_san(void)
{
    size_t           i;
    char             d[512];
    pki_template_t  *t[4];
    static const char *const lines[4][6] = {
        { "key_types ec:P-256", "subject CN copy", "san dns forbidden",
          "extended_key_usage clientAuth 1.3.6.1.4.1.311.10.3.3", NULL },
        { "key_types ec:P-256", "subject CN copy", "san dns forbidden",
          "extended_key_usage clientAuth 2.16.840.1.113730.4.1", NULL },
        { "key_types ec:P-256", "subject CN copy",
          "subject emailAddress copy", "san email forbidden",
          "extended_key_usage emailProtection", NULL },
        { "key_types ec:P-256", "subject CN copy",
          "subject emailAddress copy", "san email copy",
          "extended_key_usage emailProtection", NULL },
    };
    static const struct {
        int            tmpl;
        const char    *subject;
        pki_status_t   want;
        const char    *detail;
    } cases[] = {
        { 0, "/CN=login.bank.example", PKI_POLICY, "forbids DNS names" },
        { 1, "/CN=login.bank.example", PKI_POLICY, "forbids DNS names" },
        { 0, "/CN=device-33", PKI_OK, NULL },
        { 2, "/CN=dev1/emailAddress=ceo@bank.example", PKI_POLICY,
          "san email forbidden" },
        { 3, "/CN=dev1/emailAddress=ceo@bank.example", PKI_OK, NULL },
        { 3, "/CN=dev1/emailAddress=not an email", PKI_POLICY,
          "is not an email address" },
        { 3, "/CN=dev1/emailAddress=a@xn--zz.example", PKI_POLICY,
          "is not an email address" },
        { 3, "/CN=dev1/emailAddress=@bank.example", PKI_POLICY,
          "is not an email address" },
        { 3, "/CN=dev1/emailAddress=a@b@bank.example", PKI_POLICY,
          "is not an email address" },
    };

    for (i = 0; i < 4; i++) {
        t[i] = make_template(i < 2 ? "sgc" : "mail", lines[i]);
    }

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pki_status_t  st;

        st = name_request(t[cases[i].tmpl], cases[i].subject, NULL, d,
                          sizeof(d));
        ok(st == cases[i].want
           && (cases[i].detail == NULL || strstr(d, cases[i].detail)),
           "names beyond the SANs: %s under template %d: %s (%s)",
           cases[i].subject, cases[i].tmpl,
           cases[i].want == PKI_OK ? "issued" : "refused", d);
    }

    for (i = 0; i < 4; i++) {
        pki_template_free(t[i]);
    }
}


/*
 * An "xn--" label must be an IDNA2008 A-label (the Punycode of a valid
 * U-label, RFC 5891 4.2.3.1) wherever a DNS name is issued: a dNSName, an
 * email address's domain, a CN judged as a DNS name; the label is judged
 * lowercased (A-labels compare as case-insensitive ASCII).  Other labels
 * of the reserved "??--" form are issued (private names); ACME newOrder
 * refuses those too, with the same helper (test_acme).
 */
static void
test_idna(void)
{
    size_t           i;
    char             d[512], name[160];
    pki_template_t  *t[3];
    static const char *const lines[3][8] = {
        { "key_types ec:P-256", "subject CN copy", "san dns copy",
          "san email copy", "san uri copy", "extended_key_usage serverAuth",
          NULL },
        { "key_types ec:P-256", "subject CN copy", "san dns copy wildcard",
          "extended_key_usage serverAuth", NULL },
        { "key_types ec:P-256", "subject CN copy", "san dns forbidden",
          "extended_key_usage clientAuth", NULL },
    };
    static const char *const names[3] = { "idna", "idnawild", "client" };
    static const struct {
        int            tmpl;
        const char    *subject;
        const char    *sans;
        pki_status_t   want;
        const char    *detail;
    } cases[] = {
        /* A-labels: issued */
        { 0, "/CN=dev1", "DNS:xn--bcher-kva.example", PKI_OK, NULL },
        { 0, "/CN=dev1", "DNS:shop.xn--bcher-kva.example", PKI_OK, NULL },
        { 0, "/CN=dev1", "DNS:XN--BCHER-KVA.example", PKI_OK, NULL },
        { 0, "/CN=dev1", "DNS:Xn--Bcher-Kva.example", PKI_OK, NULL },
        { 0, "/CN=dev1", "DNS:xn--nxasmq6b.example", PKI_OK, NULL },
        { 0, "/CN=dev1", "DNS:www.example.xn--4ca", PKI_OK, NULL },
        { 0, "/CN=dev1", "DNS:a-b--c.example", PKI_OK, NULL },
        { 0, "/CN=dev1", "DNS:abc-.example", PKI_POLICY, "invalid DNS" },
        { 0, "/CN=dev1", "email:ops@xn--bcher-kva.example", PKI_OK, NULL },
        { 0, "/CN=xn--bcher-kva.example", NULL, PKI_OK, NULL },
        { 1, "/CN=dev1", "DNS:*.xn--bcher-kva.example", PKI_OK, NULL },
        { 1, "/CN=*.xn--bcher-kva.example", NULL, PKI_OK, NULL },
        /* no A-label: refused */
        { 0, "/CN=dev1", "DNS:xn--zz.example.com", PKI_POLICY,
          "invalid DNS name in SAN \"xn--zz.example.com\": an \"xn--\" "
          "label that is not a valid IDNA2008 A-label" },
        { 0, "/CN=dev1", "DNS:XN--ZZ.example.com", PKI_POLICY,
          "IDNA2008" },
        { 0, "/CN=dev1", "DNS:www.xn--zz.example.com", PKI_POLICY,
          "IDNA2008" },
        { 0, "/CN=dev1", "DNS:example.xn--zz", PKI_POLICY, "IDNA2008" },
        { 0, "/CN=dev1", "DNS:xn--.example", PKI_POLICY, "invalid DNS" },
        { 0, "/CN=dev1", "DNS:xn---.example", PKI_POLICY, "invalid DNS" },
        { 0, "/CN=dev1", "DNS:xn--a.example", PKI_POLICY, "IDNA2008" },
        { 0, "/CN=dev1", "DNS:xn--ls8h.example", PKI_POLICY,
          "IDNA2008" },                         /* U+1F4A9: DISALLOWED */
        { 0, "/CN=dev1", "DNS:xn--bcher-kva-.example", PKI_POLICY,
          "invalid DNS" },
        { 0, "/CN=dev1", "DNS:xn--abc.example", PKI_POLICY,
          "IDNA2008" },
        { 0, "/CN=dev1", "DNS:ok.example,DNS:xn--zz.example", PKI_POLICY,
          "IDNA2008" },
        /* other "??--" labels: private names (db--primary), issued */
        { 0, "/CN=dev1", "DNS:ab--cd.example.com", PKI_OK, NULL },
        { 0, "/CN=dev1", "DNS:XY--cd.example.com", PKI_OK, NULL },
        { 0, "/CN=dev1", "email:ops@xn--zz.example", PKI_POLICY,
          "invalid email address" },
        { 1, "/CN=dev1", "DNS:*.xn--zz.example.com", PKI_POLICY,
          "IDNA2008" },
        /* a CN judged as a DNS name */
        { 0, "/CN=xn--zz.example.com", NULL, PKI_POLICY,
          "CN \"xn--zz.example.com\" is not a DNS name template \"idna\" "
          "issues (as a dNSName SAN): an \"xn--\" label that is not a "
          "valid IDNA2008 A-label" },
        { 0, "/CN=xn--zz.example.com.", NULL, PKI_POLICY, "IDNA2008" },
        { 0, "/CN=www.XN--ZZ.example", NULL, PKI_POLICY, "IDNA2008" },
        { 0, "/CN=ab--cd.example", NULL, PKI_OK, NULL },
        { 1, "/CN=*.xn--zz.example.com", NULL, PKI_POLICY, "IDNA2008" },
        /* a CN no TLS server certificate carries: as before */
        { 0, "/CN=xn--zz", NULL, PKI_OK, NULL },
        { 2, "/CN=xn--zz.example.com", NULL, PKI_OK, NULL },
        /* a URI's host when it is a reg-name, as RFC 3986 and, for
         * http(s), ws(s) and ftp, browsers find it; percent-decoded */
        { 0, "/CN=dev1", "URI:https://xn--zz.example.com/", PKI_POLICY,
          "invalid URI in SAN \"https://xn--zz.example.com/\": its host "
          "has an \"xn--\" label that is not a valid IDNA2008 A-label" },
        { 0, "/CN=dev1", "URI:https://www.XN--ZZ.example", PKI_POLICY,
          "IDNA2008" },
        { 0, "/CN=dev1", "URI:https://u:pw@xn--zz.example:8443/x",
          PKI_POLICY, "IDNA2008" },
        { 0, "/CN=dev1", "URI:https://shop.example.xn--zz?q", PKI_POLICY,
          "IDNA2008" },
        { 0, "/CN=dev1", "URI:spiffe://xn--zz.example/ns/a", PKI_POLICY,
          "IDNA2008" },
        { 0, "/CN=dev1", "URI:ldap://xn--a.example:389#x", PKI_POLICY,
          "IDNA2008" },
        { 0, "/CN=dev1", "URI:https://%78n--zz.example/", PKI_POLICY,
          "IDNA2008" },
        { 0, "/CN=dev1", "URI:https://xn--zz%2Eexample/", PKI_POLICY,
          "IDNA2008" },
        { 0, "/CN=dev1", "URI:https://%78n--bcher-kva%00.example/",
          PKI_POLICY, "IDNA2008" },
        { 0, "/CN=dev1", "URI:https://ok.example%E3%80%82xn--zz/",
          PKI_POLICY, "IDNA2008" },                     /* U+3002 */
        { 0, "/CN=dev1", "URI:https:xn--zz.example/", PKI_POLICY,
          "IDNA2008" },
        { 0, "/CN=dev1", "URI:HTTPS:/\\xn--zz.example", PKI_POLICY,
          "IDNA2008" },
        { 0, "/CN=dev1", "URI:https://xn--zz.example\\@ok.example/",
          PKI_POLICY, "IDNA2008" },
        { 0, "/CN=dev1", "URI:urn:a,URI:wss://xn--zz.example", PKI_POLICY,
          "IDNA2008" },
        /* A-labels, other "??--" labels, IP literals, no authority, or
         * not the host: as before */
        { 0, "/CN=dev1", "URI:https://xn--bcher-kva.example/", PKI_OK,
          NULL },
        { 0, "/CN=dev1", "URI:https://u@XN--BCHER-KVA.example:8443/a",
          PKI_OK, NULL },
        { 0, "/CN=dev1", "URI:https://%78n--bcher-kva.example/", PKI_OK,
          NULL },
        { 0, "/CN=dev1", "URI:https://xn--bcher-k%76a.example/", PKI_OK,
          NULL },
        { 0, "/CN=dev1", "URI:https://xn--bcher-kva%2Eexample/", PKI_OK,
          NULL },
        { 0, "/CN=dev1", "URI:https://xn--zz%zz.example/", PKI_POLICY,
          "IDNA2008" },
        { 0, "/CN=dev1", "URI:https://db--primary.example/", PKI_OK, NULL },
        { 0, "/CN=dev1", "URI:https://[2001:db8::1]:443/", PKI_OK, NULL },
        { 0, "/CN=dev1", "URI:https://192.0.2.1/", PKI_OK, NULL },
        { 0, "/CN=dev1", "URI:spiffe://example.org/ns/xn--zz", PKI_OK,
          NULL },
        { 0, "/CN=dev1", "URI:https://xn--zz@ok.example/?q=xn--zz#xn--zz",
          PKI_OK, NULL },
        { 0, "/CN=dev1", "URI:urn:xn--zz:thing", PKI_OK, NULL },
        { 0, "/CN=dev1", "URI:mailto:ops@xn--zz.example", PKI_OK, NULL },
        { 0, "/CN=dev1", "URI:https:", PKI_POLICY, "invalid URI" },
    };
    for (i = 0; i < 3; i++) {
        t[i] = make_template(names[i], lines[i]);
    }

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(name, sizeof(name), "template %s, %s%s%s",
                 names[cases[i].tmpl], cases[i].subject,
                 cases[i].sans ? " " : "",
                 cases[i].sans ? cases[i].sans : "");
        is_status(name_request(t[cases[i].tmpl], cases[i].subject,
                               cases[i].sans, d, sizeof(d)),
                  cases[i].want, name);
        if (cases[i].detail) {
            ok(strstr(d, cases[i].detail) != NULL, "  detail \"%s\"", d);
        }
    }

    for (i = 0; i < 3; i++) {
        pki_template_free(t[i]);
    }
}


static X509 *
issue_one(pki_ca_t *ca, pki_template_t *t, pki_redis_t *r,
    const char *subject, const char *sans, EVP_PKEY **key,
    pki_result_t *res)
{
    size_t            len;
    X509             *x;
    X509_REQ         *csr;
    EVP_PKEY         *pk;
    pki_request_t     req;
    unsigned char    *der;
    pki_issue_ctx_t   ictx = { "est", "tester", "127.0.0.1", NULL, NULL };

    x = NULL;
    pk = keygen("EC:P-256");
    der = make_csr(pk, subject, sans, &len);
    pki_result_init(res);

    if (pki_csr_parse(der, len, &csr, res) == PKI_OK) {
        if (pki_request_from_csr(t, csr, &req, res) == PKI_OK) {
            pki_issue(ca, t, r, &req, &ictx, &x, res);
            pki_request_clear(&req);
        }
        X509_REQ_free(csr);
    }

    free(der);

    if (key) {
        *key = pk;
    } else {
        EVP_PKEY_free(pk);
    }

    return x;
}


/* One request under a CA with name constraints: issued when issued, or
 * else refused as outside them (PKI_POLICY, "name constraints"). */
static void
constrained_case(pki_ca_t *cc, pki_template_t *t, const char *what,
    const char *subject, const char *sans, int issued)
{
    X509          *x;
    pki_result_t   res;

    pki_result_init(&res);
    x = issue_one(cc, t, NULL, subject, sans, NULL, &res);

    if (issued) {
        ok(x != NULL, "%s, %s %s: issued (%s)", what, subject,
           sans ? sans : "no SAN", res.detail);
    } else {
        ok(x == NULL && res.status == PKI_POLICY
           && strstr(res.detail, "name constraints") != NULL,
           "%s, %s %s: refused (%s)", what, subject, sans ? sans : "no SAN",
           res.detail);
    }

    X509_free(x);
}


/* The AIA of what a CA issues (RFC 5280 4.2.2.1): one extension, not
 * critical, with the OCSP accessDescription (ocsp_url) and then the
 * caIssuers one (ca_issuers_url), each only when configured; none at all
 * without either.  ca_issuers_url is checked as ocsp_url is. */
static void
test_aia(pki_key_t *key, pki_template_t *t)
{
    int                      i, j, n, crit, nids[2];
    X509                    *x;
    pki_ca_t                *ca;
    const char              *want[2];
    pki_result_t             res;
    ACCESS_DESCRIPTION      *ad;
    AUTHORITY_INFO_ACCESS   *aia;
    char                     path[128], what[64];

    static const struct {
        const char  *ocsp;
        const char  *issuers;
    }  cases[] = {
        { "http://pki.example/ocsp", "http://pki.example/ca/sub.crt" },
        { NULL, "http://pki.example/ca/sub.crt" },
        { "http://pki.example/ocsp", NULL },
        { NULL, NULL },
    };

    snprintf(path, sizeof(path), "%s/sub.pem", dir);

    for (i = 0; i < (int) (sizeof(cases) / sizeof(cases[0])); i++) {
        snprintf(what, sizeof(what), "AIA case %d (ocsp %s, caIssuers %s)",
                 i, cases[i].ocsp ? "yes" : "no",
                 cases[i].issuers ? "yes" : "no");

        pki_result_init(&res);
        ca = pki_ca_new("aia");
        ca_line(ca, "certificate", path, &res);
        if (cases[i].ocsp) {
            ca_line(ca, "ocsp_url", cases[i].ocsp, &res);
        }
        if (cases[i].issuers) {
            ca_line(ca, "ca_issuers_url", cases[i].issuers, &res);
        }
        pki_ca_set_key(ca, key, &res);
        pki_ca_add_template(ca, t, &res);
        if (res.status != PKI_OK || pki_ca_finish(ca, &res) != PKI_OK) {
            ok(0, "%s: CA finishes (%s %s)", what, res.detail, res.log);
            pki_ca_free(ca);
            continue;
        }

        x = issue_one(ca, t, NULL, "/CN=aia", NULL, NULL, &res);
        ok(x != NULL, "%s: issued (%s)", what, res.detail);
        if (x == NULL) {
            pki_ca_free(ca);
            continue;
        }

        n = 0;
        if (cases[i].ocsp) {
            nids[n] = NID_ad_OCSP;
            want[n++] = cases[i].ocsp;
        }
        if (cases[i].issuers) {
            nids[n] = NID_ad_ca_issuers;
            want[n++] = cases[i].issuers;
        }

        ok(X509_get_ext_by_NID(x, NID_info_access,
                               X509_get_ext_by_NID(x, NID_info_access, -1))
           < 0, "%s: at most one AIA extension", what);

        crit = -2;
        aia = X509_get_ext_d2i(x, NID_info_access, &crit, NULL);

        if (n == 0) {
            ok(aia == NULL && crit == -1, "%s: no AIA", what);

        } else {
            ok(aia != NULL && crit == 0, "%s: AIA, not critical", what);
            ok(aia != NULL && sk_ACCESS_DESCRIPTION_num(aia) == n,
               "%s: %d accessDescription(s) (%d)", what, n,
               aia ? sk_ACCESS_DESCRIPTION_num(aia) : -1);

            for (j = 0; aia && j < n && j < sk_ACCESS_DESCRIPTION_num(aia);
                 j++)
            {
                ad = sk_ACCESS_DESCRIPTION_value(aia, j);
                ok(OBJ_obj2nid(ad->method) == nids[j]
                   && ad->location->type == GEN_URI
                   && strcmp((const char *) ASN1_STRING_get0_data(
                                 ad->location->d.uniformResourceIdentifier),
                             want[j]) == 0,
                   "%s: #%d is %s %s", what, j,
                   nids[j] == NID_ad_OCSP ? "OCSP" : "caIssuers", want[j]);
            }
        }

        AUTHORITY_INFO_ACCESS_free(aia);
        X509_free(x);
        pki_ca_free(ca);
    }

    /* checked as ocsp_url is */
    ca = pki_ca_new("aia-bad");

    pki_result_init(&res);
    ok(ca_line(ca, "ca_issuers_url", "ftp://pki.example/sub.crt", &res)
       == PKI_MALFORMED && strstr(res.detail, "invalid URL"),
       "ca_issuers_url ftp:// refused: %s", res.detail);

    pki_result_init(&res);
    ok(ca_line(ca, "ca_issuers_url", "http://pki.example/a b", &res)
       == PKI_MALFORMED, "ca_issuers_url with a space refused: %s",
       res.detail);

    pki_result_init(&res);
    ok(ca_line(ca, "ca_issuers_url", "http://pki.example/sub.crt", &res)
       == PKI_OK, "ca_issuers_url http:// taken");

    pki_result_init(&res);
    ok(ca_line(ca, "ca_issuers_url", "http://pki.example/other.crt", &res)
       == PKI_MALFORMED && strstr(res.detail, "duplicate"),
       "a second ca_issuers_url refused: %s", res.detail);

    pki_ca_free(ca);
}


/* A compressed point is taken, but the certificate carries it uncompressed
 * (04 || x || y): Go's crypto/x509 refuses a certificate with a compressed
 * one.  Its key identifier is that of the point as carried. */
static void
test_point_forms(pki_ca_t *ca, pki_template_t *t)
{
    int                   n, len;
    X509                 *x;
    size_t                dlen;
    X509_REQ             *csr;
    EVP_PKEY             *pk;
    pki_status_t          st;
    pki_result_t          res;
    pki_request_t         req;
    unsigned int          mdlen;
    unsigned char        *der, md[EVP_MAX_MD_SIZE];
    const unsigned char  *pt;
    ASN1_OCTET_STRING    *skid;

    for (n = 0; n <= 2; n += 2) {
        der = form_csr("compressed", n, &pk, &dlen);
        x = NULL;
        pki_result_init(&res);
        st = pki_csr_parse(der, dlen, &csr, &res);
        if (st == PKI_OK) {
            st = pki_request_from_csr(t, csr, &req, &res);
            if (st == PKI_OK) {
                st = pki_issue(ca, t, NULL, &req, NULL, &x, &res);
                pki_request_clear(&req);
            }
            X509_REQ_free(csr);
        }
        ok(st == PKI_OK && x != NULL, "CSR version %d with a compressed "
           "point (%02x): issued (%s)", n, csr_point_form(der, dlen),
           res.detail);

        len = 0;
        pt = NULL;
        if (x != NULL) {
            X509_PUBKEY_get0_param(NULL, &pt, &len, NULL,
                                   X509_get_X509_PUBKEY(x));
        }
        ok(len == 65 && pt[0] == 0x04, "  the certificate's point is "
           "uncompressed (%d bytes, %02x)", len, len > 0 ? pt[0] : 0);
        ok(x != NULL && EVP_PKEY_eq(X509_get0_pubkey(x), pk) == 1,
           "  the request's key");

        skid = x ? X509_get_ext_d2i(x, NID_subject_key_identifier, NULL,
                                    NULL) : NULL;
        ok(len > 0 && skid != NULL
           && EVP_Digest(pt, (size_t) len, md, &mdlen, EVP_sha1(), NULL)
           && ASN1_STRING_length(skid) == (int) mdlen
           && memcmp(ASN1_STRING_get0_data(skid), md, mdlen) == 0,
           "  subjectKeyIdentifier of the uncompressed point");
        ASN1_OCTET_STRING_free(skid);

        X509_free(x);
        free(der);
        EVP_PKEY_free(pk);
    }
}


static void
test_redis(pki_ca_t *ca, pki_template_t *t, const char *sock)
{
    int                i, n, dups;
    char               ns[128], **serials, hex[41];
    X509              *x;
    redisReply        *reply;
    redisContext      *rc;
    pki_redis_t       *r;
    pki_status_t       st;
    pki_result_t       res;
    pki_record_t       rec;
    pki_cert_status_t  cst;
    unsigned char     *der;

    snprintf(ns, sizeof(ns), "h2test%d:", (int) getpid());
    r = fx_redis(sock, ns, 1000, &res);
    if (!ok(r != NULL, "redis handle: %s", res.detail)) {
        return;
    }

    x = issue_one(ca, t, r, "/CN=rec1", "DNS:rec1.example.com", NULL, &res);
    ok(x != NULL, "issued with Redis: %s %s", res.detail, res.log);

    if (x) {
        pki_serial_to_hex(X509_get0_serialNumber(x), hex);
        memset(&rec, 0, sizeof(rec));
        st = pki_record_get(r, pki_ca_name(ca), hex, &rec, &res);
        is_status(st, PKI_OK, "record present");
        ok(rec.status == PKI_CERT_GOOD, "  record is good");
        der = NULL;
        n = i2d_X509(x, &der);
        ok(rec.der && rec.der_len == (size_t) n
           && memcmp(rec.der, der, (size_t) n) == 0, "  record holds the DER");
        ok(rec.subject && strcmp(rec.subject, "CN=rec1,C=DE") != 0
           && strstr(rec.subject, "CN=rec1") != NULL, "  record subject %s",
           rec.subject ? rec.subject : "(null)");
        ok(rec.sans && strcmp(rec.sans, "DNS:rec1.example.com") == 0,
           "  record sans %s", rec.sans ? rec.sans : "(null)");
        ok(strcmp(rec.protocol, "est") == 0 && rec.requester
           && strcmp(rec.requester, "tester") == 0, "  record requester");
        ok(strcmp(rec.template_name, "device") == 0, "  record template");
        ok(rec.not_after == asn1_to_time(X509_get0_notAfter(x)),
           "  record notAfter");
        OPENSSL_free(der);
        pki_record_clear(&rec);

        st = pki_cert_status(r, ca, x, &cst, &res);
        is_status(st, PKI_OK, "pki_cert_status");
        ok(cst == PKI_CERT_GOOD, "  status good");
        X509_free(x);
    }

    /* A comma or backslash inside a URI or email SAN is escaped in the
     * record's comma-separated text. */
    {
        static const char  *const want =
            "DNS:rec2.example.com,URI:urn:a\\,b\\\\c,email:x\\,y@e.example";
        GENERAL_NAMES      *gens;
        pki_request_t       req;
        EVP_PKEY           *pk;

        gens = sk_GENERAL_NAME_new_null();
        sk_GENERAL_NAME_push(gens, a2i_GENERAL_NAME(NULL, NULL, NULL, GEN_DNS,
                                                   "rec2.example.com", 0));
        sk_GENERAL_NAME_push(gens, a2i_GENERAL_NAME(NULL, NULL, NULL, GEN_URI,
                                                   "urn:a,b\\c", 0));
        sk_GENERAL_NAME_push(gens, a2i_GENERAL_NAME(NULL, NULL, NULL,
                                                   GEN_EMAIL, "x,y@e.example",
                                                   0));
        pk = keygen("EC:P-256");
        memset(&req, 0, sizeof(req));
        req.subject = parse_name("/CN=rec2");
        req.pubkey = pk;
        req.sans = gens;
        pki_result_init(&res);
        x = NULL;
        st = pki_issue(ca, t, r, &req, NULL, &x, &res);
        ok(st == PKI_OK, "issued with a comma in a URI SAN: %s",
           res.detail);

        memset(&rec, 0, sizeof(rec));
        if (x != NULL) {
            pki_serial_to_hex(X509_get0_serialNumber(x), hex);
            (void) pki_record_get(r, pki_ca_name(ca), hex, &rec, &res);
        }
        ok(rec.sans != NULL && strcmp(rec.sans, want) == 0,
           "  record sans escape commas and backslashes: %s",
           rec.sans != NULL ? rec.sans : "(null)");
        pki_record_clear(&rec);
        X509_free(x);
        X509_NAME_free(req.subject);
        GENERAL_NAMES_free(gens);
        EVP_PKEY_free(pk);
    }

    /* 10,000 issuances, no duplicate serial (300 under Valgrind, which
     * t/valgrind_core.t runs to check memory, not serials: 10,000 take
     * about 6 minutes there). */
    n = getenv("PKI_TEST_VALGRIND") != NULL ? 300 : 10000;
    serials = calloc((size_t) n, sizeof(char *));
    for (i = 0; i < n; i++) {
        x = issue_one(ca, t, r, "/CN=bulk", NULL, NULL, &res);
        if (x == NULL) {
            diag("issuance %d failed: %s %s", i, res.detail, res.log);
            break;
        }
        pki_serial_to_hex(X509_get0_serialNumber(x), hex);
        serials[i] = strdup(hex);
        X509_free(x);
    }
    ok(i == n, "%d issuances", i);
    n = i;

    qsort(serials, (size_t) n, sizeof(char *), cmp_str);
    dups = 0;
    for (i = 1; i < n; i++) {
        if (strcmp(serials[i], serials[i - 1]) == 0) {
            dups++;
        }
    }
    ok(dups == 0, "no duplicate serial among %d", n);
    for (i = 0; i < n; i++) {
        free(serials[i]);
    }
    free(serials);

    rc = redisConnectUnix(sock);
    if (rc && !rc->err) {
        reply = redisCommand(rc, "EVAL %s 0 %s",
                             "local n = 0; local c = '0'; repeat "
                             "local r = redis.call('SCAN', c, 'MATCH', ARGV[1],"
                             " 'COUNT', 1000); c = r[1]; n = n + #r[2]; "
                             "until c == '0'; return n",
                             "h2test*:*cert:*");
        ok(reply && reply->type == REDIS_REPLY_INTEGER
           && reply->integer == n + 2, "%lld cert:* keys in Redis",
           reply ? reply->integer : -1);
        freeReplyObject(reply);

        reply = redisCommand(rc, "EVAL %s 0 %s",
                             "local c = '0'; repeat local r = redis.call("
                             "'SCAN', c, 'MATCH', ARGV[1], 'COUNT', 1000); "
                             "c = r[1]; for _, k in ipairs(r[2]) do "
                             "redis.call('DEL', k) end until c == '0'; "
                             "return 1", "h2test*");
        freeReplyObject(reply);
    }
    redisFree(rc);

    pki_redis_free(r);

    /* Redis unreachable. */
    snprintf(ns, sizeof(ns), "%s/no-such.sock", dir);
    r = fx_redis(ns, NULL, 200, &res);
    x = issue_one(ca, t, r, "/CN=down", NULL, NULL, &res);
    is_status(res.status, PKI_UNAVAILABLE, "Redis down: unavailable");
    ok(x == NULL, "  no certificate returned");
    X509_free(x);
    pki_redis_free(r);
}


/* ---- Redis stalls and lost answers ---------------------------------------
 *
 * A stall: right after the certificate is signed (its PKI_EV_SIGN event),
 * another connection makes Redis run a script that busy-waits stall_ms,
 * so Redis runs nothing else meanwhile (a BGSAVE fork, a slow fsync): the
 * commit, its read-back and the abandon all time out on the client's
 * side, then Redis runs them late.
 */

typedef struct {
    redisContext  *c;
    int            armed;
    int            ms;
    int            sent;
} stall_t;


static void
stall_sink(void *arg, const pki_event_t *ev)
{
    int       done;
    stall_t  *s = arg;

    if (!s->armed || ev->type != PKI_EV_SIGN) {
        return;
    }

    s->armed = 0;
    if (redisAppendCommand(s->c, "EVAL %s 0 %d",
                           "local t = redis.call('TIME') "
                           "local e = t[1] * 1000000 + t[2] + ARGV[1] * 1000 "
                           "repeat t = redis.call('TIME') "
                           "until t[1] * 1000000 + t[2] >= e "
                           "return 1", s->ms) != REDIS_OK)
    {
        return;
    }

    do {
        if (redisBufferWrite(s->c, &done) != REDIS_OK) {
            return;
        }
    } while (!done);

    s->sent = 1;
    usleep(20000);                  /* Redis is in the script */
}


/* Waits for the stall's end; then lets Redis run what queued behind it. */
static void
stall_wait(stall_t *s)
{
    void  *reply;

    if (s->sent && redisGetReply(s->c, &reply) == REDIS_OK) {
        freeReplyObject(reply);
    }
    s->sent = 0;
    usleep(300000);
}


/* How many records under namespace ns are good (-1: no answer). */
static int
count_good(redisContext *c, const char *ns)
{
    int          n;
    redisReply  *reply;

    reply = redisCommand(c, "EVAL %s 0 %s",
                         "local n = 0 local c = '0' repeat "
                         "local r = redis.call('SCAN', c, 'MATCH', ARGV[1], "
                         "'COUNT', 1000) c = r[1] "
                         "for _, k in ipairs(r[2]) do "
                         "if redis.call('TYPE', k).ok == 'hash' and "
                         "redis.call('HGET', k, 'status') == 'good' then "
                         "n = n + 1 end end until c == '0' return n",
                         ns);
    n = (reply && reply->type == REDIS_REPLY_INTEGER) ? (int) reply->integer
                                                      : -1;
    freeReplyObject(reply);

    return n;
}


/* Issue: a commit Redis runs after its client gave up (the store's
 * timeout past the commit's sending) writes nothing: no certificate nobody
 * received stays recorded as good.  The single commit, the batch's, and
 * the commit that carries the transaction-log entry. */
static void
test_late_commit(pki_ca_t *ca, pki_template_t *t, const char *sock)
{
    int                 i, n;
    char                ns[64], pat[80], ldir[200];
    X509               *x;
    stall_t             stall;
    pki_audit_t        *a;
    pki_redis_t        *r;
    pki_result_t        res;
    pki_request_t       reqs[3];
    pki_issue_item_t    items[3];
    pki_audit_conf_t    ac;

    memset(&stall, 0, sizeof(stall));
    stall.c = redisConnectUnix(sock);
    stall.ms = 1500;
    if (!ok(stall.c != NULL && !stall.c->err, "late commit: a connection "
            "to stall Redis with"))
    {
        redisFree(stall.c);
        return;
    }

    snprintf(ns, sizeof(ns), "late%d:", (int) getpid());
    snprintf(pat, sizeof(pat), "%s*cert:*", ns);
    r = fx_redis(sock, ns, 200, &res);
    if (!ok(r != NULL, "late commit: redis handle: %s", res.detail)) {
        redisFree(stall.c);
        return;
    }

    pki_event_set_sink(stall_sink, &stall);

    /* the single commit */
    stall.armed = 1;
    x = issue_one(ca, t, r, "/CN=late1", NULL, NULL, &res);
    ok(x == NULL && res.status == PKI_UNAVAILABLE, "late commit: the "
       "issuance fails (%d %s)", res.status, res.detail);
    X509_free(x);
    stall_wait(&stall);
    n = count_good(stall.c, pat);
    ok(n == 0, "  and Redis, running the commit after the stall, records "
       "no certificate as good (%d)", n);

    /* the batch's commit */
    memset(items, 0, sizeof(items));
    for (i = 0; i < 3; i++) {
        memset(&reqs[i], 0, sizeof(reqs[i]));
        reqs[i].subject = parse_name("/CN=late-batch");
        reqs[i].pubkey = keygen("EC:P-256");
        items[i].req = &reqs[i];
    }

    stall.armed = 1;
    pki_result_init(&res);
    (void) pki_issue_batch(ca, t, r, items, 3, NULL, 1, &res);
    n = 0;
    for (i = 0; i < 3; i++) {
        n += items[i].cert != NULL;
        X509_free(items[i].cert);
    }
    ok(n == 0, "late batch commit: no certificate handed out (%d)", n);
    stall_wait(&stall);
    n = count_good(stall.c, pat);
    ok(n == 0, "  and none recorded as good after the stall (%d)", n);

    for (i = 0; i < 3; i++) {
        X509_NAME_free(reqs[i].subject);
        EVP_PKEY_free(reqs[i].pubkey);
    }

    /* the commit that carries the issuance's log entry */
    snprintf(ldir, sizeof(ldir), "%s/late-log", dir);
    mkdir(ldir, 0700);
    memset(&ac, 0, sizeof(ac));
    ac.dir = ldir;
    pki_result_init(&res);
    a = pki_audit_open(&ac, &res);
    if (ok(a != NULL && pki_audit_carry(a, r, pki_ca_name(ca), &res)
           == PKI_OK, "late carried commit: a log whose entries the "
           "commit carries: %s", res.detail))
    {
        pki_audit_set_default(a);
        pki_audit_set_deferred(1);
        pki_result_init(&res);
        ok(pki_audit_syncer_start(a, NULL, NULL, &res) == PKI_OK,
           "  syncer started: %s", res.detail);

        stall.armed = 1;
        x = issue_one(ca, t, r, "/CN=late2", NULL, NULL, &res);
        ok(x == NULL && res.status == PKI_UNAVAILABLE, "  the issuance "
           "fails (%d %s)", res.status, res.detail);
        X509_free(x);
        stall_wait(&stall);
        n = count_good(stall.c, pat);
        ok(n == 0, "  and no certificate is recorded as good after the "
           "stall (%d)", n);
        {
            redisReply  *reply;

            snprintf(pat, sizeof(pat), "%s{ca:%s}:audit:*", ns,
                     pki_ca_name(ca));
            reply = redisCommand(stall.c, "EVAL %s 0 %s",
                                 "local n = 0 for _, k in ipairs("
                                 "redis.call('KEYS', ARGV[1])) do "
                                 "n = n + redis.call('XLEN', k) end "
                                 "return n", pat);
            ok(reply != NULL && reply->type == REDIS_REPLY_INTEGER
               && reply->integer == 0, "  nor an issuance entry in the "
               "log's stream (%lld)", reply && reply->type
               == REDIS_REPLY_INTEGER ? reply->integer : -1);
            freeReplyObject(reply);
        }

        (void) pki_audit_take_ticket();
        pki_audit_set_deferred(0);
        pki_audit_set_default(NULL);
    }
    pki_audit_close(a);

    pki_event_set_sink(NULL, NULL);
    pki_redis_free(r);
    redisFree(stall.c);
}


/* A certificate recorded as good whose transaction-log entry cannot be
 * written is withheld and withdrawn: revoked, cessationOfOperation. */
static void
test_log_refused(pki_ca_t *ca, pki_template_t *t, const char *sock)
{
    char              ns[64], ldir[200], p1[300], p2[300];
    X509             *x;
    redisReply       *reply;
    pki_audit_t      *a;
    pki_redis_t      *r;
    pki_result_t      res;
    redisContext     *c;
    pki_audit_conf_t  ac;

    snprintf(ns, sizeof(ns), "logref%d:", (int) getpid());
    r = fx_redis(sock, ns, 1000, &res);
    c = redisConnectUnix(sock);
    snprintf(ldir, sizeof(ldir), "%s/refused-log", dir);
    mkdir(ldir, 0700);
    memset(&ac, 0, sizeof(ac));
    ac.dir = ldir;
    pki_result_init(&res);
    a = r != NULL ? pki_audit_open(&ac, &res) : NULL;
    if (!ok(a != NULL && c != NULL && !c->err, "log refused: a log, a "
            "store (%s)", res.detail))
    {
        pki_audit_close(a);
        pki_redis_free(r);
        redisFree(c);
        return;
    }

    pki_audit_set_default(a);
    snprintf(p1, sizeof(p1), "%s/audit.log", ldir);
    snprintf(p2, sizeof(p2), "%s/audit.away", ldir);
    ok((access(p1, F_OK) != 0 || rename(p1, p2) == 0)
       && mkdir(p1, 0700) == 0, "  audit.log made a directory: no entry "
       "can be written");

    x = issue_one(ca, t, r, "/CN=logref", NULL, NULL, &res);
    ok(x == NULL && res.status == PKI_UNAVAILABLE, "  the issuance fails "
       "(%d %s)", res.status, res.detail);
    ok(strstr(res.log, "withdrawn (revoked, cessationOfOperation)") != NULL,
       "  its certificate is withdrawn: %s", res.log);
    X509_free(x);

    reply = redisCommand(c, "EVAL %s 0 %s", "local n = 0 "
                         "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
                         "if redis.call('HGET', k, 'status') ~= 'revoked' "
                         "or redis.call('HGET', k, 'reason') ~= '5' then "
                         "n = n + 1 end end return n", "logref*:cert:*");
    ok(reply != NULL && reply->type == REDIS_REPLY_INTEGER
       && reply->integer == 0, "  no record of it is left good (%lld)",
       reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1);
    freeReplyObject(reply);

    rmdir(p1);
    (void) rename(p2, p1);
    pki_audit_set_default(NULL);
    pki_audit_close(a);
    pki_redis_free(r);
    redisFree(c);
}


/* The status of record serial under namespace ns of CA ca, "" if none. */
static void
record_status(redisContext *c, const char *ns, const char *ca,
    const char *serial, char *buf, size_t size)
{
    redisReply  *reply;

    buf[0] = '\0';
    reply = redisCommand(c, "HGET %s{ca:%s}:cert:%s status", ns, ca, serial);
    if (reply != NULL && reply->type == REDIS_REPLY_STRING) {
        snprintf(buf, size, "%s", reply->str);
    }
    freeReplyObject(reply);
}


/* Issue: a DAC batch whose commit lost its answer (dropped: hiredis sends
 * it again, which finds the records no longer pending; held past the
 * timeout) reads its records back: good with their certificates, so the
 * batch is issued.  When the read-back gets no answer either (Redis gone
 * after the commit ran), every serial is reported committed, for the
 * caller's withdraw: its record may be good. */
static void
test_batch_lost(pki_ca_t *ca, pki_template_t *t, const char *sock)
{
    int                 i, k, n, good;
    char                ns[64], stat[16];
    proxy_t             px;
    redisContext       *c;
    pki_redis_t        *r;
    pki_result_t        res;
    pki_request_t       reqs[3];
    pki_issue_item_t    items[3];

    static const struct {
        int          mode;
        const char  *what;
    } cases[] = {
        { PX_DROP, "answer dropped" },
        { PX_HOLD, "answer held past the timeout" },
        { PX_CUT, "answer lost and Redis gone" },
    };

    c = redisConnectUnix(sock);
    if (!ok(proxy_start(&px, sock, dir, "px-batch.sock") && c != NULL
            && !c->err, "batch commit lost: a proxy to Redis"))
    {
        redisFree(c);
        return;
    }

    snprintf(ns, sizeof(ns), "blost%d:", (int) getpid());
    r = fx_redis(px.path, ns, 300, &res);

    for (k = 0; k < (int) (sizeof(cases) / sizeof(cases[0])); k++) {
        memset(items, 0, sizeof(items));
        for (i = 0; i < 3; i++) {
            memset(&reqs[i], 0, sizeof(reqs[i]));
            reqs[i].subject = parse_name("/CN=lost-batch");
            reqs[i].pubkey = keygen("EC:P-256");
            items[i].req = &reqs[i];
        }

        (void) pki_redis_ping(r, &res);
        proxy_arm(&px, "PERSIST", cases[k].mode, 700);
        pki_result_init(&res);
        (void) pki_issue_batch(ca, t, r, items, 3, NULL, 1, &res);
        ok(px.fired, "batch commit %s: the proxy lost it", cases[k].what);

        n = 0;
        good = 0;
        for (i = 0; i < 3; i++) {
            n += items[i].committed[0] != '\0';
            if (items[i].committed[0] != '\0') {
                record_status(c, ns, pki_ca_name(ca), items[i].committed,
                              stat, sizeof(stat));
                good += strcmp(stat, "good") == 0;
            }
        }

        if (cases[k].mode != PX_CUT) {
            int  issued = 0;

            for (i = 0; i < 3; i++) {
                issued += items[i].cert != NULL && items[i].status == PKI_OK;
            }
            ok(issued == 3, "  all 3 issued (%d): %s %s", issued,
               items[0].res.detail, items[0].res.log);

        } else {
            ok(items[0].cert == NULL && items[0].status == PKI_UNAVAILABLE,
               "  not issued (%d %s)", items[0].status,
               items[0].res.detail);
        }

        ok(n == 3 && good == 3, "  every serial reported committed (%d), "
           "its record good (%d)", n, good);

        for (i = 0; i < 3; i++) {
            X509_free(items[i].cert);
            X509_NAME_free(reqs[i].subject);
            EVP_PKEY_free(reqs[i].pubkey);
        }
    }

    px.down = 0;
    pki_redis_free(r);
    redisFree(c);
}


/* Issue: a batch whose Redis stalls right after its commit ran (nothing
 * answered after it, nothing else reaches it): the commit and the first
 * read-back get no answer, and the abandons of its pending records stop at
 * the first that gets none.  Each waited the whole timeout: 30 items at
 * 100 ms, over 3 s (a 1000-DAC batch, over 16 minutes at the default
 * 1 s).  Every serial is still reported committed, for the caller to
 * withdraw: its record is good. */
static void
test_batch_stalled(pki_ca_t *ca, pki_template_t *t, const char *sock)
{
    int                 i, n, good, said;
    char                ns[64], stat[16];
    double              t0, dt, base;
    proxy_t             px;
    pki_status_t        st;
    redisContext       *c;
    pki_redis_t        *r;
    pki_result_t        res;
    pki_request_t       reqs[30];
    pki_issue_item_t    items[30];
    struct timespec     ts;

    c = redisConnectUnix(sock);
    if (!ok(proxy_start(&px, sock, dir, "px-stall.sock") && c != NULL
            && !c->err, "batch, Redis stalled after its commit: a proxy"))
    {
        redisFree(c);
        return;
    }

    snprintf(ns, sizeof(ns), "bstall%d:", (int) getpid());
    r = fx_redis(px.path, ns, 100, &res);

    memset(items, 0, sizeof(items));
    for (i = 0; i < 30; i++) {
        memset(&reqs[i], 0, sizeof(reqs[i]));
        reqs[i].subject = parse_name("/CN=stalled-batch");
        reqs[i].pubkey = keygen("EC:P-256");
        items[i].req = &reqs[i];
    }

    (void) pki_redis_ping(r, &res);

    /* the same batch with Redis answering: what the stall adds is
     * measured against it, so that the bound holds on a loaded machine
     * and under Valgrind, where the signing alone takes seconds */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t0 = ts.tv_sec + ts.tv_nsec / 1e9;
    pki_result_init(&res);
    st = pki_issue_batch(ca, t, r, items, 30, NULL, 2, &res);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    base = ts.tv_sec + ts.tv_nsec / 1e9 - t0;
    ok(st == PKI_OK, "  the batch, Redis answering: %.2f s", base);
    for (i = 0; i < 30; i++) {
        X509_free(items[i].cert);
        memset(&items[i], 0, sizeof(items[i]));
        items[i].req = &reqs[i];
    }

    proxy_arm(&px, "PERSIST", PX_STALL, 0);

    clock_gettime(CLOCK_MONOTONIC, &ts);
    t0 = ts.tv_sec + ts.tv_nsec / 1e9;
    pki_result_init(&res);
    (void) pki_issue_batch(ca, t, r, items, 30, NULL, 2, &res);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    dt = ts.tv_sec + ts.tv_nsec / 1e9 - t0;

    /* the timeouts are wall-clock, not slowed by load or Valgrind: the
     * commit's, the read-back's and the first abandon's are 0.3 s; one
     * per abandon would be over 3 s */
    ok(px.fired, "  the proxy stalled Redis after the commit");
    ok(dt - base < 1.5, "  the stall adds %.2f s to the batch (< 1.5; a "
       "timeout per abandon: over 3)", dt - base);

    /* Redis answers again: what the stall left */
    proxy_arm(&px, "", 0, 0);

    n = 0;
    good = 0;
    said = 0;
    for (i = 0; i < 30; i++) {
        n += items[i].committed[0] != '\0' && items[i].cert == NULL;
        if (items[i].committed[0] != '\0') {
            record_status(c, ns, pki_ca_name(ca), items[i].committed, stat,
                          sizeof(stat));
            good += strcmp(stat, "good") == 0;
        }
        said += strstr(items[i].res.log, "not abandoned (") != NULL;
    }

    ok(n == 30 && good == 30, "  none issued, every serial reported "
       "committed (%d), its record good (%d)", n, good);
    ok(said >= 29 && strstr(items[0].res.log, "left, not abandoned")
       != NULL, "  the abandons left are said (%d): %s", said,
       items[0].res.log);

    for (i = 0; i < 30; i++) {
        X509_free(items[i].cert);
        X509_NAME_free(reqs[i].subject);
        EVP_PKEY_free(reqs[i].pubkey);
    }

    pki_redis_free(r);
    redisFree(c);
}


/* Lines of file path that contain s (-1: no file). */
static int
count_lines(const char *path, const char *s)
{
    int    n;
    FILE  *f;
    char   line[16384];

    f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }

    n = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        n += strstr(line, s) != NULL;
    }
    fclose(f);

    return n;
}


/* Issue: a commit carrying the issuance's log entry whose answer was lost
 * (hiredis runs it again: "not pending"; the read-back finds it good) is
 * an issuance logged once: by the entry it carried (in the log's stream,
 * for the janitor), not by pki_issue() a second time. */
static void
test_carry_lost(pki_ca_t *ca, pki_template_t *t, const char *sock)
{
    int                n;
    char               ns[64], pat[96], ldir[200], path[260], hex[41];
    X509              *x;
    proxy_t            px;
    redisReply        *reply;
    redisContext      *c;
    pki_audit_t       *a;
    pki_redis_t       *r;
    pki_result_t       res;
    pki_audit_conf_t   ac;

    c = redisConnectUnix(sock);
    if (!ok(proxy_start(&px, sock, dir, "px-carry.sock") && c != NULL
            && !c->err, "carried commit lost: a proxy to Redis"))
    {
        redisFree(c);
        return;
    }

    snprintf(ns, sizeof(ns), "clost%d:", (int) getpid());
    r = fx_redis(px.path, ns, 300, &res);

    snprintf(ldir, sizeof(ldir), "%s/carry-log", dir);
    mkdir(ldir, 0700);
    memset(&ac, 0, sizeof(ac));
    ac.dir = ldir;
    pki_result_init(&res);
    a = pki_audit_open(&ac, &res);
    if (!ok(a != NULL && pki_audit_carry(a, r, pki_ca_name(ca), &res)
            == PKI_OK, "  a log whose entries the commit carries: %s",
            res.detail))
    {
        pki_audit_close(a);
        pki_redis_free(r);
        redisFree(c);
        return;
    }

    pki_audit_set_default(a);
    pki_audit_set_deferred(1);
    pki_result_init(&res);
    ok(pki_audit_syncer_start(a, NULL, NULL, &res) == PKI_OK,
       "  syncer started: %s", res.detail);

    (void) pki_redis_ping(r, &res);
    proxy_arm(&px, "PERSIST", PX_DROP, 0);
    x = issue_one(ca, t, r, "/CN=carry-lost", NULL, NULL, &res);
    ok(px.fired, "  the proxy lost the commit's answer");
    ok(x != NULL, "  issued all the same: %s %s", res.detail, res.log);

    if (x != NULL) {
        pki_serial_to_hex(X509_get0_serialNumber(x), hex);
        X509_free(x);

        snprintf(path, sizeof(path), "%s/audit.log", ldir);
        snprintf(pat, sizeof(pat), "\"serial\":\"%s\"", hex);
        n = count_lines(path, pat);
        ok(n <= 0, "  pki_issue() wrote no second entry to the file (%d)",
           n);

        snprintf(path, sizeof(path), "%s{ca:%s}:audit:*", ns,
                 pki_ca_name(ca));
        reply = redisCommand(c, "EVAL %s 0 %s %s",
                             "local n = 0 for _, k in ipairs("
                             "redis.call('KEYS', ARGV[1])) do "
                             "for _, e in ipairs(redis.call('XRANGE', k, "
                             "'-', '+')) do for _, v in ipairs(e[2]) do "
                             "if string.find(v, ARGV[2], 1, true) then "
                             "n = n + 1 end end end end return n",
                             path, pat);
        ok(reply != NULL && reply->type == REDIS_REPLY_INTEGER
           && reply->integer == 1, "  the carried entry is in the stream, "
           "once (%lld)", reply && reply->type == REDIS_REPLY_INTEGER
           ? reply->integer : -1);
        freeReplyObject(reply);
    }

    (void) pki_audit_take_ticket();
    pki_audit_set_deferred(0);
    pki_audit_set_default(NULL);
    pki_audit_close(a);
    pki_redis_free(r);
    redisFree(c);
}


/* Issue: a serial reservation whose answer was lost ran all the same
 * (hiredis sends it again on a new connection, which finds the serial
 * taken: a collision), and the next serial drawn is reserved.  The
 * issuance succeeds and its result says so: not the collision's
 * "serial number already used" (the metrics counted such an enrollment,
 * answered 200, as a failure). */
static void
test_reserve_lost(pki_ca_t *ca, pki_template_t *t, const char *sock)
{
    char           ns[64];
    X509          *x;
    proxy_t        px;
    pki_redis_t   *r;
    pki_result_t   res;

    if (!ok(proxy_start(&px, sock, dir, "px-rsv.sock"),
            "reservation lost: a proxy to Redis"))
    {
        return;
    }

    snprintf(ns, sizeof(ns), "rlost%d:", (int) getpid());
    r = fx_redis(px.path, ns, 300, &res);
    if (!ok(r != NULL, "  a store through it: %s", res.detail)) {
        return;
    }

    pki_result_init(&res);
    (void) pki_redis_ping(r, &res);
    proxy_arm(&px, "'NX'", PX_DROP, 0);
    x = issue_one(ca, t, r, "/CN=reserve-lost", NULL, NULL, &res);
    ok(px.fired, "  the proxy lost the reservation's answer");
    ok(x != NULL && strstr(res.log, "collided") != NULL, "  issued with "
       "the next serial: %s %s", res.detail, res.log);
    ok(res.status == PKI_OK && res.detail[0] == '\0', "  the result says "
       "success (status %d, \"%s\")", (int) res.status, res.detail);

    X509_free(x);
    pki_redis_free(r);
}


static pki_status_t  revoke_event = PKI_INTERNAL;


static void
revoke_sink(void *arg, const pki_event_t *ev)
{
    (void) arg;

    if (ev->type == PKI_EV_REVOKE) {
        revoke_event = ev->status;
    }
}


/* Revocation whose answer is lost: hiredis sends the script again, which
 * finds the change made by this very request (its id in the record) and
 * answers as the first run did, so the caller and the transaction log see
 * the success it is (it was "already revoked", or "not on hold" for a
 * release).  A change made whose record then cannot be read (the admin
 * API's follow-up read timing out) is a success too. */
static void
test_revoke_lost(pki_ca_t *ca, pki_template_t *t, const char *sock)
{
    int            i;
    char           ns[64], hex[41], stat[16];
    X509          *x;
    proxy_t        px;
    redisContext  *c;
    pki_redis_t   *r;
    pki_record_t   out;
    pki_result_t   res;
    pki_status_t   st;

    static const struct {
        int          hold_first;   /* put on hold before (release) */
        int          reason;
        const char  *marker;
        int          mode;
        int          with_out;
        const char  *want;
        const char  *what;
    } cases[] = {
        { 0, 1, "'INCR'", PX_DROP, 0, "revoked",
          "revocation, answer dropped" },
        { 1, 8, "'INCR'", PX_DROP, 0, "good",
          "release of a hold, answer dropped" },
        { 0, 1, "'INCR'", PX_DROP, 1, "revoked",
          "revocation with the record asked for, answer dropped" },
        { 0, 4, "HGETALL", PX_HOLD, 1, "revoked",
          "revocation whose record's read times out" },
    };

    c = redisConnectUnix(sock);
    if (!ok(proxy_start(&px, sock, dir, "px-revoke.sock") && c != NULL
            && !c->err, "revoke lost: a proxy to Redis"))
    {
        redisFree(c);
        return;
    }

    snprintf(ns, sizeof(ns), "rlost%d:", (int) getpid());
    r = fx_redis(px.path, ns, 300, &res);
    pki_event_set_sink(revoke_sink, NULL);

    for (i = 0; i < (int) (sizeof(cases) / sizeof(cases[0])); i++) {
        x = issue_one(ca, t, r, "/CN=rlost", NULL, NULL, &res);
        if (!ok(x != NULL, "%s: issued: %s", cases[i].what, res.detail)) {
            continue;
        }
        pki_serial_to_hex(X509_get0_serialNumber(x), hex);
        X509_free(x);

        if (cases[i].hold_first) {
            pki_result_init(&res);
            is_status(pki_record_revoke(r, pki_ca_name(ca), hex, 6, 0, 0,
                                        NULL, &res), PKI_OK, "  on hold");
        }

        (void) pki_redis_ping(r, &res);
        proxy_arm(&px, cases[i].marker, cases[i].mode, 700);
        revoke_event = PKI_INTERNAL;
        pki_result_init(&res);
        memset(&out, 0, sizeof(out));
        st = pki_record_revoke(r, pki_ca_name(ca), hex, cases[i].reason, 0,
                               0, cases[i].with_out ? &out : NULL, &res);
        ok(px.fired, "%s: the proxy lost it", cases[i].what);
        ok(st == PKI_OK, "  success (%d %s %s)", st, res.detail, res.log);
        ok(revoke_event == PKI_OK, "  logged as a success (%d)",
           revoke_event);
        record_status(c, ns, pki_ca_name(ca), hex, stat, sizeof(stat));
        ok(strcmp(stat, cases[i].want) == 0, "  the record is %s (%s)",
           cases[i].want, stat);

        if (cases[i].with_out) {
            ok(st == PKI_OK && strcmp(out.serial, hex) == 0
               && out.status == PKI_CERT_REVOKED
               && out.reason == cases[i].reason, "  the record returned "
               "says revoked (%s %d %d)", out.serial, out.status,
               out.reason);
            pki_record_clear(&out);
        }
    }

    /* a planned revocation made (and logged) whose record's read then
     * times out: a success with what the plan set, not a 503 that a
     * retry would answer by planning and logging it again */
    x = issue_one(ca, t, r, "/CN=rlost-plan", NULL, NULL, &res);
    if (ok(x != NULL, "plan: issued: %s", res.detail)) {
        time_t  at = time(NULL) + 3600;

        pki_serial_to_hex(X509_get0_serialNumber(x), hex);
        X509_free(x);
        (void) pki_redis_ping(r, &res);
        proxy_arm(&px, "HGETALL", PX_HOLD, 700);
        pki_result_init(&res);
        memset(&out, 0, sizeof(out));
        st = pki_record_plan_revoke(r, pki_ca_name(ca), hex, 4, at, "t",
                                    &out, &res);
        ok(px.fired, "plan whose record's read times out: the proxy lost "
           "it");
        ok(st == PKI_OK && strcmp(out.serial, hex) == 0
           && out.status == PKI_CERT_GOOD && out.revoke_planned == at
           && out.planned_reason == 4, "  success, the record returned "
           "says planned (%d %s %lld %s)", st, res.detail,
           (long long) out.revoke_planned, res.log);
        pki_record_clear(&out);
    }

    pki_event_set_sink(NULL, NULL);
    pki_redis_free(r);
    redisFree(c);
}


/* A certificate with subject and key pk issued by ca under template t
 * (not_after: 0, or a time to end it), written to DIR/file. */
static X509 *
alt_cert(pki_ca_t *ca, pki_template_t *t, const char *subject, EVP_PKEY *pk,
    time_t not_after, const char *file)
{
    X509       *x;
    X509_NAME  *name;

    name = parse_name(subject);
    x = fx_issue(ca, t, NULL, name, pk, not_after);
    X509_NAME_free(name);
    write_cert(x, file);

    return x;
}


/* The issuing CA (sub.pem, chain root.pem, key subkey) with
 * "alternate_chain DIR/F" for each file; res says how pki_ca_finish went. */
static pki_ca_t *
alt_ca(pki_key_t *subkey, const char *const *files, pki_result_t *res)
{
    char       path[128];
    pki_ca_t  *ca;

    pki_result_init(res);
    ca = pki_ca_new("alt");
    snprintf(path, sizeof(path), "%s/sub.pem", dir);
    ca_line(ca, "certificate", path, res);
    snprintf(path, sizeof(path), "%s/root.pem", dir);
    ca_line(ca, "chain", path, res);
    for (; *files; files++) {
        snprintf(path, sizeof(path), "%s/%s", dir, *files);
        if (ca_line(ca, "alternate_chain", path, res) != PKI_OK) {
            return ca;
        }
    }
    pki_ca_set_key(ca, subkey, res);
    pki_ca_finish(ca, res);

    return ca;
}


/*
 * RFC 8555 7.4.2 alternate chains of the issuing CA (sub.pem, key subpk):
 * a second root cross-signs it.  pki_ca_finish accepts a cross certificate
 * (alone or with its root) and refuses one that does not certify the CA
 * (subject, key, not a CA, expired), a chain whose links do not issue each
 * other, more than 16 certificates or 4 files, and the CA's own chain.
 */
static void
test_alt_chains(EVP_PKEY *subpk, pki_key_t *subkey, EVP_PKEY *otherpk,
    pki_template_t *troot, pki_template_t *tsub)
{
    int              i;
    char             cmd[2048];
    X509            *alt, *x;
    EVP_PKEY        *altpk;
    pki_ca_t        *altca, *ca;
    X509_NAME       *name;
    pki_key_t       *altkey;
    pki_status_t     st;
    pki_result_t     res;
    pki_template_t  *tnotca, *tmpls[3];
    STACK_OF(X509)  *sk;
    static const char *const notca_lines[] = {
        "subject CN copy", "subject O copy", "validity 2d", NULL
    };
    static const struct {
        const char  *file;
        const char  *detail;
    } bad[] = {
        { "alt-subject.pem", "does not have the subject" },
        { "alt-key.pem", "does not have the public key" },
        { "alt-notca.pem", "is not a CA certificate" },
        { "alt-expired.pem", "has expired" },
        { "alt-broken.pem", "certificate 2 did not issue certificate 1" },
        { "alt-many.pem", "too many certificates" },
        { "alt-empty.pem", "cannot read PEM certificates" },
        { "root.pem", "is the CA's \"chain\"" },
        { "root-copy.pem", "holds the certificates of the CA's \"chain\"" },
    };

    tnotca = make_template("notca", notca_lines);
    altpk = keygen("EC:P-256");
    altkey = open_key(write_key(altpk, "altroot.key"));

    name = parse_name("/O=Test/CN=Test Alt Root");
    st = pki_selfsign(altkey, troot, name, &alt, &res);
    X509_NAME_free(name);
    is_status(st, PKI_OK, "alternate root");
    if (st != PKI_OK) {
        goto done;
    }
    write_cert(alt, "altroot.pem");

    tmpls[0] = tsub;
    tmpls[1] = tnotca;
    tmpls[2] = NULL;
    altca = make_ca("altroot", "altroot.pem", NULL, altkey, tmpls, NULL, &res);
    is_status(res.status, PKI_OK, "alternate root CA finishes");

    /* the cross certificate, alone and followed by its root */
    X509_free(alt_cert(altca, tsub, "/O=Test/CN=Test Issuing CA", subpk, 0,
                       "cross.pem"));
    snprintf(cmd, sizeof(cmd), "cat %s/cross.pem %s/altroot.pem "
             "> %s/cross-root.pem", dir, dir, dir);
    ok(system(cmd) == 0, "cross + alt root file");

    /* refused ones */
    X509_free(alt_cert(altca, tsub, "/O=Test/CN=Test Other CA", subpk, 0,
                       "alt-subject.pem"));
    X509_free(alt_cert(altca, tsub, "/O=Test/CN=Test Issuing CA", otherpk,
                       0, "alt-key.pem"));
    X509_free(alt_cert(altca, tnotca, "/O=Test/CN=Test Issuing CA", subpk,
                       0, "alt-notca.pem"));
    X509_free(alt_cert(altca, tsub, "/O=Test/CN=Test Issuing CA", subpk,
                       time(NULL) - 10, "alt-expired.pem"));
    snprintf(cmd, sizeof(cmd), "cat %s/cross.pem %s/root.pem "
             "> %s/alt-broken.pem && cp %s/cross.pem %s/alt-many.pem && "
             "for i in $(seq 16); do cat %s/altroot.pem >> %s/alt-many.pem; "
             "done && : > %s/alt-empty.pem && cp %s/root.pem "
             "%s/root-copy.pem", dir, dir, dir, dir, dir, dir, dir, dir,
             dir, dir);
    ok(system(cmd) == 0, "the refused files");

    for (i = 0; i < (int) (sizeof(bad) / sizeof(bad[0])); i++) {
        const char  *files[2] = { bad[i].file, NULL };

        ca = alt_ca(subkey, files, &res);
        ok(res.status == PKI_MALFORMED && strstr(res.detail, bad[i].detail)
           && strstr(res.detail, bad[i].file),
           "alternate_chain %s refused: %s", bad[i].file, res.detail);
        pki_ca_free(ca);
    }

    {
        const char  *files[2] = { "missing.pem", NULL };

        ca = alt_ca(subkey, files, &res);
        ok(res.status == PKI_MALFORMED && strstr(res.detail, "cannot open")
           && strstr(res.detail, "missing.pem"),
           "alternate_chain missing file: %s", res.detail);
        pki_ca_free(ca);
    }

    {
        const char  *files[6] = { "cross.pem", "cross-root.pem", "a3.pem",
                                  "a4.pem", "a5.pem", NULL };

        ca = alt_ca(subkey, files, &res);
        ok(res.status == PKI_MALFORMED && strstr(res.detail, "at most 4"),
           "a fifth alternate_chain: %s", res.detail);
        pki_ca_free(ca);

        files[2] = "cross.pem";
        files[3] = NULL;
        ca = alt_ca(subkey, files, &res);
        ok(res.status == PKI_MALFORMED && strstr(res.detail, "duplicate"),
           "the same alternate_chain twice: %s", res.detail);
        pki_ca_free(ca);
    }

    /* accepted: the cross certificate, and with its root */
    {
        const char  *files[3] = { "cross.pem", "cross-root.pem", NULL };

        ca = alt_ca(subkey, files, &res);
        is_status(res.status, PKI_OK, "two alternate chains accepted");
        if (res.status != PKI_OK) {
            diag("%s %s", res.detail, res.log);
        }
        ok(pki_ca_alt_chain_count(ca) == 2, "  two of them");
        sk = pki_ca_alt_chain(ca, 1);
        ok(sk != NULL && sk_X509_num(sk) == 2
           && X509_cmp(sk_X509_value(sk, 1), alt) == 0,
           "  the second: cross + alt root, in file order");
        sk = pki_ca_alt_chain(ca, 0);
        x = sk != NULL && sk_X509_num(sk) == 1 ? sk_X509_value(sk, 0) : NULL;
        ok(x != NULL && X509_check_issued(alt, x) == X509_V_OK
           && X509_verify(x, altpk) == 1, "  the first: the cross "
           "certificate, issued by the alt root");
        ok(pki_ca_alt_chain(ca, 2) == NULL && pki_ca_alt_chain(ca, -1) == NULL,
           "  none out of range");
        pki_ca_free(ca);
    }

    pki_ca_free(altca);
    X509_free(alt);

done:

    pki_key_free(altkey);
    EVP_PKEY_free(altpk);
    pki_template_free(tnotca);
}


/* A certificate of /CN=cn and key pub, issued by issuer (key ikey), or
 * self-signed by ikey when issuer is NULL, valid from now + nb to now +
 * na seconds: CA:TRUE when ca (pathLenConstraint pathlen when >= 0), else
 * CA:FALSE; keyUsage ku (OpenSSL conf syntax) unless NULL. */
static X509 *
raw_cert(const char *cn, EVP_PKEY *pub, X509 *issuer, EVP_PKEY *ikey,
    int ca, int pathlen, const char *ku, long nb, long na)
{
    cx_ext_t     c = { 0 };
    static long  serial = 1000;

    c.serial = serial++;
    c.ca = ca;
    c.pathlen = pathlen;
    c.ku = ku;

    return cx_cert(cn, pub, issuer, ikey, nb, na, &c);
}


/* CA "chk" of DIR/cert (key key), "chain DIR/chain" unless chain is NULL,
 * a crl_url when crl; res says how pki_ca_finish went. */
static pki_ca_t *
chain_ca(const char *cert, const char *chain, int crl, pki_key_t *key,
    pki_result_t *res)
{
    char       path[128];
    pki_ca_t  *ca;

    pki_result_init(res);
    ca = pki_ca_new("chk");
    snprintf(path, sizeof(path), "%s/%s", dir, cert);
    ca_line(ca, "certificate", path, res);
    if (chain) {
        snprintf(path, sizeof(path), "%s/%s", dir, chain);
        ca_line(ca, "chain", path, res);
    }
    if (crl) {
        ca_line(ca, "crl_url", "http://pki.example/crl/chk.crl", res);
    }
    pki_ca_set_key(ca, key, res);
    pki_ca_finish(ca, res);

    return ca;
}


/* CA "chk" of DIR/cu.pem, chain DIR/c-int.pem and alternate chain
 * DIR/alt, with template t; res says how pki_ca_finish went. */
static pki_ca_t *
cu_alt_ca(const char *alt, pki_key_t *key, pki_template_t *t,
    pki_result_t *res)
{
    char       path[128];
    pki_ca_t  *ca;

    pki_result_init(res);
    ca = pki_ca_new("chk");
    snprintf(path, sizeof(path), "%s/cu.pem", dir);
    ca_line(ca, "certificate", path, res);
    snprintf(path, sizeof(path), "%s/c-int.pem", dir);
    ca_line(ca, "chain", path, res);
    snprintf(path, sizeof(path), "%s/%s", dir, alt);
    ca_line(ca, "alternate_chain", path, res);
    pki_ca_set_key(ca, key, res);
    pki_ca_add_template(ca, t, res);
    pki_ca_finish(ca, res);

    return ca;
}


/* cu_alt_ca() whose alternate chain (written to file) is "Chain CA"
 * cross-signed by xr (key kx) with the name constraints nc (OpenSSL conf
 * syntax), "Chain CA" itself issued by in (key ki) with key kc. */
static pki_ca_t *
nc_alt_ca(const char *nc, const char *file, X509 *in, EVP_PKEY *ki,
    X509 *xr, EVP_PKEY *kx, EVP_PKEY *kc, pki_key_t *key,
    pki_template_t *t, pki_result_t *res)
{
    X509            *cu, *cun;
    pki_ca_t        *ca;
    X509V3_CTX       v3;
    X509_EXTENSION  *e;
    static const char  *ku = "critical,keyCertSign,cRLSign";

    cu = raw_cert("Chain CA", kc, in, ki, 1, -1, ku, -3600, 86400 * 10);
    cun = raw_cert("Chain CA", kc, xr, kx, 1, -1, ku, -3600, 86400 * 10);
    X509V3_set_ctx(&v3, xr, cun, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &v3, NID_name_constraints, nc);
    X509_add_ext(cun, e, -1);
    X509_EXTENSION_free(e);
    X509_sign(cun, kx, EVP_sha256());
    {
        X509 *const  cu_c[] = { cu, NULL };
        X509 *const  cun_alt[] = { cun, xr, NULL };

        cx_write_certv(dir, "cu.pem", cu_c);
        cx_write_certv(dir, file, cun_alt);
    }

    ca = cu_alt_ca(file, key, t, res);

    X509_free(cu);
    X509_free(cun);

    return ca;
}


/*
 * The CA's own "chain" (what ACME, EST and SCEP hand out above the CA
 * certificate) is the path a verifier takes: pki_ca_finish refuses a first
 * certificate that did not issue the CA (an unrelated root), a link that
 * does not issue the one before, a certificate that is not a CA, expired
 * or not yet valid, one whose pathlen the CAs under it exceed; it takes
 * the path with or without the CA certificate first, and a self-signed
 * root at the top.  The CA certificate itself must be valid now, and may
 * lack cRLSign only without a crl_url (pki_ca_signs_crls says which).
 */
static void
test_primary_chain(void)
{
    int           i;
    X509         *r, *in, *in0, *inx, *inf, *n, *xr, *c, *c0, *cx, *cf, *cn;
    X509         *cfut, *cnocrl, *cnoku, *v1, *cv1, *cskew;
    EVP_PKEY     *kr, *ki, *kc, *kx;
    pki_ca_t     *ca;
    pki_key_t    *key;
    pki_result_t  res;
    static const char  *ku = "critical,keyCertSign,cRLSign";
    static const struct {
        const char  *cert;
        const char  *chain;
        const char  *detail;     /* NULL: taken */
    } cases[] = {
        { "c.pem", "c-chain.pem", NULL },
        { "c.pem", "c-full.pem", NULL },
        { "c.pem", "c-int.pem", NULL },
        { "c.pem", "c-unrelated.pem", "no certificate of CA chain \"" },
        { "c.pem", "c-unrelated.pem", "issued the CA certificate" },
        { "c.pem", "c-full-unrelated.pem", "no certificate of CA chain \"" },
        /* EST and SCEP serve the chain as a set, ACME skips the roots:
         * another order, another root, an expired old root are taken */
        { "c.pem", "c-broken.pem", NULL },
        { "c.pem", "c-reversed.pem", NULL },
        { "cn.pem", "cn-chain.pem", "certificate 1 of CA chain \"" },
        { "cn.pem", "cn-chain.pem", "is not a CA certificate" },
        { "cx.pem", "cx-chain.pem", "has expired" },
        { "cf.pem", "cf-chain.pem", "is not valid yet" },
        { "c0.pem", "c0-chain.pem", "has pathlen:0" },
        { "c.pem", "c-root-expired.pem", NULL },
        { "cv1.pem", "cv1-chain.pem", NULL },
        { "cfut.pem", NULL, "is not valid yet" },
        { "cskew.pem", NULL, NULL },
        /* a root that issues, with an expired cross certificate of it */
        { "croot.pem", "croot-cross.pem", NULL },
        { "croot.pem", "c-int.pem", "neither a root nor a cross" },
        { "croot.pem", "c-chain.pem", "certificate 1 of CA chain \"" },
        { "croot.pem", "c-reversed.pem", "certificate 2 of CA chain \"" },
        { "croot.pem", "c-unrelated.pem", NULL },
    };

    kr = keygen("EC:P-256");
    ki = keygen("EC:P-256");
    kc = keygen("EC:P-256");
    kx = keygen("EC:P-256");
    key = open_key(write_key(kc, "chk.key"));

    /* root (pathlen:2) -> int -> the CA; the others beside them */
    r = raw_cert("Chain Root", kr, NULL, kr, 1, 2, ku, -3600, 86400 * 30);
    in = raw_cert("Chain Int", ki, r, kr, 1, -1, ku, -3600, 86400 * 30);
    in0 = raw_cert("Chain Int P0", ki, r, kr, 1, 0, ku, -3600, 86400 * 30);
    inx = raw_cert("Chain Int Old", ki, r, kr, 1, -1, ku, -86400 * 2,
                   -86400);
    inf = raw_cert("Chain Int New", ki, r, kr, 1, -1, ku, 86400,
                   86400 * 30);
    n = raw_cert("Chain Not CA", ki, r, kr, 0, -1, NULL, -3600, 86400 * 30);
    xr = raw_cert("Chain Unrelated Root", kx, NULL, kx, 1, -1, ku, -3600,
                  86400 * 30);
    c = raw_cert("Chain CA", kc, in, ki, 1, 0, ku, -3600, 86400 * 10);
    c0 = raw_cert("Chain CA", kc, in0, ki, 1, 0, ku, -3600, 86400 * 10);
    cx = raw_cert("Chain CA", kc, inx, ki, 1, 0, ku, -3600, 86400 * 10);
    cf = raw_cert("Chain CA", kc, inf, ki, 1, 0, ku, -3600, 86400 * 10);
    cn = raw_cert("Chain CA", kc, n, ki, 1, 0, ku, -3600, 86400 * 10);
    /* a v1 root (no extensions), as openssl x509 -req -signkey makes one,
     * and a CA it issued */
    v1 = X509_new();
    {
        X509_NAME  *vn = X509_NAME_new();

        X509_NAME_add_entry_by_txt(vn, "CN", MBSTRING_UTF8,
                                   (const unsigned char *) "Chain V1 Root",
                                   -1, -1, 0);
        X509_set_version(v1, X509_VERSION_1);
        ASN1_INTEGER_set(X509_get_serialNumber(v1), 77);
        X509_set_subject_name(v1, vn);
        X509_set_issuer_name(v1, vn);
        X509_gmtime_adj(X509_getm_notBefore(v1), -3600);
        X509_gmtime_adj(X509_getm_notAfter(v1), 86400 * 30);
        X509_set_pubkey(v1, kx);
        X509_sign(v1, kx, EVP_sha256());
        X509_NAME_free(vn);
    }
    cv1 = raw_cert("Chain CA", kc, v1, kx, 1, 0, ku, -3600, 86400 * 10);
    /* made on a host whose clock runs 2 minutes fast */
    cskew = raw_cert("Chain CA Skew", kc, NULL, kc, 1, -1, ku, 120,
                     86400 * 10);
    cfut = raw_cert("Chain CA Future", kc, NULL, kc, 1, -1, ku, 3600,
                    86400 * 10);
    cnocrl = raw_cert("Chain CA No CRL", kc, NULL, kc, 1, -1,
                      "critical,keyCertSign", -3600, 86400 * 10);
    cnoku = raw_cert("Chain CA No KU", kc, NULL, kc, 1, -1, NULL, -3600,
                     86400 * 10);

    {
        X509 *const  cc[] = { c, NULL };
        X509 *const  c_chain[] = { in, r, NULL };
        X509 *const  c_full[] = { c, in, r, NULL };
        X509 *const  c_int[] = { in, NULL };
        X509 *const  c_unrel[] = { xr, NULL };
        X509 *const  c_full_unrel[] = { c, xr, NULL };
        X509 *const  c_broken[] = { in, xr, NULL };
        X509 *const  c_rev[] = { r, in, NULL };
        X509 *const  cn_c[] = { cn, NULL };
        X509 *const  cn_chain[] = { n, r, NULL };
        X509 *const  cx_c[] = { cx, NULL };
        X509 *const  cx_chain[] = { inx, r, NULL };
        X509 *const  cf_c[] = { cf, NULL };
        X509 *const  cf_chain[] = { inf, r, NULL };
        X509 *const  c0_c[] = { c0, NULL };
        X509 *const  c0_chain[] = { in0, r, NULL };
        X509 *const  cfut_c[] = { cfut, NULL };
        X509 *const  cv1_c[] = { cv1, NULL };
        X509 *const  v1_chain[] = { v1, NULL };
        X509 *const  cskew_c[] = { cskew, NULL };
        X509 *const  cnocrl_c[] = { cnocrl, NULL };
        X509 *const  cnoku_c[] = { cnoku, NULL };
        X509        *rx, *rootx[3];

        cx_write_certv(dir, "c.pem", cc);
        cx_write_certv(dir, "c-chain.pem", c_chain);
        cx_write_certv(dir, "c-full.pem", c_full);
        cx_write_certv(dir, "c-int.pem", c_int);
        cx_write_certv(dir, "c-unrelated.pem", c_unrel);
        cx_write_certv(dir, "c-full-unrelated.pem", c_full_unrel);
        cx_write_certv(dir, "c-broken.pem", c_broken);
        cx_write_certv(dir, "c-reversed.pem", c_rev);
        cx_write_certv(dir, "cn.pem", cn_c);
        cx_write_certv(dir, "cn-chain.pem", cn_chain);
        cx_write_certv(dir, "cx.pem", cx_c);
        cx_write_certv(dir, "cx-chain.pem", cx_chain);
        cx_write_certv(dir, "cf.pem", cf_c);
        cx_write_certv(dir, "cf-chain.pem", cf_chain);
        cx_write_certv(dir, "c0.pem", c0_c);
        cx_write_certv(dir, "c0-chain.pem", c0_chain);
        cx_write_certv(dir, "cfut.pem", cfut_c);
        cx_write_certv(dir, "cv1.pem", cv1_c);
        cx_write_certv(dir, "cv1-chain.pem", v1_chain);
        cx_write_certv(dir, "cskew.pem", cskew_c);
        cx_write_certv(dir, "cnocrl.pem", cnocrl_c);
        cx_write_certv(dir, "cnoku.pem", cnoku_c);

        /* the root again, its validity over: the same name and key */
        rx = raw_cert("Chain Root", kr, NULL, kr, 1, 2, ku, -86400 * 2,
                      -86400);
        rootx[0] = in;
        rootx[1] = rx;
        rootx[2] = NULL;
        cx_write_certv(dir, "c-root-expired.pem", rootx);
        X509_free(rx);

        /* a self-signed CA, and its cross certificate from the chain
         * root, expired: the file of a root needs no issuer */
        rx = raw_cert("Chain CA Root", kc, NULL, kc, 1, -1, ku, -3600,
                      86400 * 10);
        rootx[0] = rx;
        rootx[1] = NULL;
        cx_write_certv(dir, "croot.pem", rootx);
        X509_free(rx);
        rx = raw_cert("Chain CA Root", kc, r, kr, 1, -1, ku, -86400 * 2,
                      -86400);
        rootx[0] = rx;
        cx_write_certv(dir, "croot-cross.pem", rootx);
        X509_free(rx);
    }

    for (i = 0; i < (int) (sizeof(cases) / sizeof(cases[0])); i++) {
        ca = chain_ca(cases[i].cert, cases[i].chain, 0, key, &res);

        if (cases[i].detail == NULL) {
            ok(res.status == PKI_OK, "chain %s under %s taken: %s",
               cases[i].chain, cases[i].cert, res.detail);

        } else {
            ok(res.status == PKI_MALFORMED
               && strstr(res.detail, cases[i].detail) != NULL
               && (cases[i].chain == NULL
                   || strstr(res.detail, cases[i].chain) != NULL),
               "%s under %s refused (%s): %s",
               cases[i].chain ? cases[i].chain : "no chain", cases[i].cert,
               cases[i].detail, res.detail);
        }

        pki_ca_free(ca);
    }

    /* a leaf of a CA that starts ahead of the clock starts with it, not
     * 60 s before the clock, and lasts its template's validity */
    {
        size_t            dlen;
        time_t            canb, lnb;
        X509             *x = NULL;
        X509_REQ         *csr = NULL;
        EVP_PKEY         *pk = keygen("EC:P-256");
        pki_request_t     req;
        pki_template_t   *t, *tl[2];
        unsigned char    *der;
        static const char *const lines[] = {
            "key_types ec:P-256", "subject CN copy", "validity 5d", NULL
        };

        t = make_template("skew", lines);     /* the CA lasts 10 days */
        tl[0] = t;
        tl[1] = NULL;
        ca = make_ca("chk", "cskew.pem", NULL, key, tl, NULL, &res);
        der = make_csr(pk, "/CN=skew-leaf", NULL, &dlen);
        canb = asn1_to_time(X509_get0_notBefore(cskew));

        if (res.status == PKI_OK
            && pki_csr_parse(der, dlen, &csr, &res) == PKI_OK
            && pki_request_from_csr(t, csr, &req, &res) == PKI_OK)
        {
            (void) pki_issue(ca, t, NULL, &req, NULL, &x, &res);
            pki_request_clear(&req);
        }
        lnb = x != NULL ? asn1_to_time(X509_get0_notBefore(x)) : 0;
        ok(x != NULL && lnb == canb
           && asn1_to_time(X509_get0_notAfter(x))
              == canb + 5L * 86400 - 1,
           "a leaf of a CA 120 s ahead starts with the CA (%+ld s) and "
           "lasts its validity: %s", (long) (lnb - canb), res.detail);

        X509_free(x);
        X509_REQ_free(csr);
        free(der);
        EVP_PKEY_free(pk);
        pki_ca_free(ca);
        pki_template_free(t);
    }

    /* the chain above a CA taken: what is served, in file order */
    ca = chain_ca("c.pem", "c-chain.pem", 1, key, &res);
    ok(res.status == PKI_OK && sk_X509_num(pki_ca_chain(ca)) == 2
       && X509_cmp(sk_X509_value(pki_ca_chain(ca), 0), in) == 0,
       "chain int + root kept as given: %s", res.detail);
    ok(pki_ca_signs_crls(ca), "  a CA with cRLSign signs CRLs");
    pki_ca_free(ca);

    /* cRLSign: needed with a crl_url, else the CA publishes no CRL */
    ca = chain_ca("cnocrl.pem", NULL, 1, key, &res);
    ok(res.status == PKI_MALFORMED && strstr(res.detail, "cnocrl.pem")
       && strstr(res.detail, "without cRLSign")
       && strstr(res.detail, "crl_url"),
       "keyUsage without cRLSign and a crl_url refused: %s", res.detail);
    pki_ca_free(ca);

    ca = chain_ca("cnocrl.pem", NULL, 0, key, &res);
    ok(res.status == PKI_OK, "keyUsage without cRLSign, no crl_url: "
       "taken: %s", res.detail);
    ok(!pki_ca_signs_crls(ca), "  it signs no CRL");
    pki_ca_free(ca);

    ca = chain_ca("cnoku.pem", NULL, 1, key, &res);
    ok(res.status == PKI_OK, "no keyUsage, a crl_url: taken: %s",
       res.detail);
    ok(pki_ca_signs_crls(ca), "  it signs CRLs");
    pki_ca_free(ca);

    /* a template of sub-CAs fits the room every path above the CA
     * leaves, not just the CA's own pathLenConstraint (it has none) */
    {
        X509            *cu, *cux;
        pki_template_t  *t0, *tl[2];
        static const char *const sub0[] = {
            "subject CN copy", "basic_constraints ca:true pathlen:0",
            "validity 2d", NULL
        };

        cu = raw_cert("Chain CA", kc, in, ki, 1, -1, ku, -3600, 86400 * 10);
        cux = raw_cert("Chain CA", kc, xr, kx, 1, 0, ku, -3600, 86400 * 10);
        {
            X509 *const  cu_c[] = { cu, NULL };
            X509 *const  cux_alt[] = { cux, xr, NULL };

            cx_write_certv(dir, "cu.pem", cu_c);
            cx_write_certv(dir, "cu-alt.pem", cux_alt);
        }
        t0 = make_template("sub0", sub0);
        tl[0] = t0;
        tl[1] = NULL;

        /* root pathlen:2 -> int -> the CA: no room for another CA */
        ca = make_ca("chk", "cu.pem", "c-chain.pem", key, tl, NULL, &res);
        ok(res.status == PKI_MALFORMED
           && strstr(res.detail, "may have only 0 CA certificates")
           && strstr(res.detail, "c-chain.pem"),
           "sub-CA template under root pathlen:2 -> int -> CA refused: %s",
           res.detail);
        pki_ca_free(ca);

        ca = make_ca("chk", "cu.pem", "c-reversed.pem", key, tl, NULL,
                     &res);
        ok(res.status == PKI_MALFORMED
           && strstr(res.detail, "may have only 0 CA certificates"),
           "  the same with the chain file root first: %s", res.detail);
        pki_ca_free(ca);

        ca = make_ca("chk", "cu.pem", "c-int.pem", key, tl, NULL, &res);
        ok(res.status == PKI_OK, "  without the root in the chain file: "
           "taken: %s", res.detail);

        /* added to a finished CA, the same limit */
        pki_ca_free(ca);
        ca = make_ca("chk", "cu.pem", "c-chain.pem", key, NULL, NULL, &res);
        ok(res.status == PKI_OK
           && pki_ca_add_template(ca, t0, &res) == PKI_MALFORMED
           && strstr(res.detail, "may have only 0"),
           "  added after the CA finished: refused: %s", res.detail);
        pki_ca_free(ca);

        /* an alternate chain whose cross certificate has pathlen:0 */
        ca = cu_alt_ca("cu-alt.pem", key, t0, &res);
        ok(res.status == PKI_MALFORMED
           && strstr(res.detail, "may have only 0 CA certificates")
           && strstr(res.detail, "cu-alt.pem"),
           "sub-CA template under a pathlen:0 cross certificate of an "
           "alternate chain refused: %s", res.detail);
        pki_ca_free(ca);

        /* a root CA whose chain file holds a cross certificate of it
         * (pathlen:0) from another root: a path through that one leaves
         * no room */
        {
            X509  *cr, *crx, *ia, *ib, *cu2;
            static const struct {
                const char  *cert;
                const char  *chain;
                int          taken;
                const char  *what;
            } rooms[] = {
                { "cr.pem", "cr-cross.pem", 0, "sub-CA template of a root "
                  "CA with a pathlen:0 cross certificate of it in its "
                  "chain file" },
                { "cu2.pem", "cu2-a.pem", 1, "  under an unlimited "
                  "intermediate and root" },
                { "cu2.pem", "cu2-ab.pem", 0, "  beside it another version "
                  "of the intermediate, pathlen:1" },
                { "cu2.pem", "cu2-ba.pem", 0, "  the two versions in the "
                  "other order" },
            };

            cr = raw_cert("Chain CA Root", kc, NULL, kc, 1, -1, ku, -3600,
                          86400 * 10);
            crx = raw_cert("Chain CA Root", kc, xr, kx, 1, 0, ku, -3600,
                           86400 * 10);
            /* two versions of one intermediate under the unlimited root,
             * one with pathlen:1 (room for the CA, none under it), the
             * CA under either */
            ia = raw_cert("Chain Int Two", ki, xr, kx, 1, -1, ku, -3600,
                          86400 * 30);
            ib = raw_cert("Chain Int Two", ki, xr, kx, 1, 1, ku, -3600,
                          86400 * 30);
            cu2 = raw_cert("Chain CA", kc, ia, ki, 1, -1, ku, -3600,
                           86400 * 10);
            {
                X509 *const  cr_c[] = { cr, NULL };
                X509 *const  crx_chain[] = { crx, xr, NULL };
                X509 *const  cu2_c[] = { cu2, NULL };
                X509 *const  ab_chain[] = { ia, ib, xr, NULL };
                X509 *const  ba_chain[] = { ib, ia, xr, NULL };
                X509 *const  a_chain[] = { ia, xr, NULL };

                cx_write_certv(dir, "cr.pem", cr_c);
                cx_write_certv(dir, "cr-cross.pem", crx_chain);
                cx_write_certv(dir, "cu2.pem", cu2_c);
                cx_write_certv(dir, "cu2-ab.pem", ab_chain);
                cx_write_certv(dir, "cu2-ba.pem", ba_chain);
                cx_write_certv(dir, "cu2-a.pem", a_chain);
            }

            for (i = 0; i < (int) (sizeof(rooms) / sizeof(rooms[0])); i++) {
                ca = make_ca("chk", rooms[i].cert, rooms[i].chain, key, tl,
                             NULL, &res);
                if (rooms[i].taken) {
                    ok(res.status == PKI_OK, "%s: taken: %s", rooms[i].what,
                       res.detail);
                } else {
                    ok(res.status == PKI_MALFORMED
                       && strstr(res.detail, "may have only 0 CA "
                                 "certificates")
                       && strstr(res.detail, rooms[i].chain),
                       "%s: refused: %s", rooms[i].what, res.detail);
                }
                pki_ca_free(ca);
            }

            X509_free(cr);
            X509_free(crx);
            X509_free(ia);
            X509_free(ib);
            X509_free(cu2);
        }

        pki_template_free(t0);
        X509_free(cu);
        X509_free(cux);
    }

    /* the name constraints of an alternate chain bind what the CA issues
     * as those of its own chain do: a client may pick either path */
    {
        X509            *x;
        pki_template_t  *tl;
        static const char *const leaf[] = {
            "subject CN copy", "san dns copy", "validity 2d", NULL
        };

        tl = make_template("ncleaf", leaf);
        ca = nc_alt_ca("critical,permitted;DNS:example.com", "cu-nc.pem",
                       in, ki, xr, kx, kc, key, tl, &res);
        is_status(res.status, PKI_OK, "CA with a name-constrained "
                  "alternate chain");

        x = issue_one(ca, tl, NULL, "/CN=a", "DNS:a.example.com", NULL,
                      &res);
        ok(x != NULL, "  a name within the alternate chain's constraints "
           "issued: %s", res.detail);
        X509_free(x);

        x = issue_one(ca, tl, NULL, "/CN=b", "DNS:b.example.org", NULL,
                      &res);
        ok(x == NULL && res.status == PKI_POLICY
           && strstr(res.detail, "name constraints") != NULL,
           "  a name outside the alternate chain's constraints refused: %s",
           res.detail);
        X509_free(x);

        pki_ca_free(ca);
        pki_template_free(tl);
    }

    /* names OpenSSL's constraint check reads otherwise than clients: a
     * URI whose host part another reader ends at '?', '#', '@' or '\\',
     * a wildcard over an excluded name, an IPv4-mapped IPv6 address
     * against an excluded IPv4 range; each refused, and the plain names
     * beside them still issued */
    {
        int              k;
        X509            *x;
        pki_template_t  *tl;
        static const char *const leaf[] = {
            "subject CN copy", "san dns copy wildcard", "san uri copy",
            "san ip copy", "validity 2d", NULL
        };
        static const struct {
            const char  *san;
            int          issued;
        } nc[] = {
            { "URI:https://www.good.example/", 1 },
            { "URI:https://www.good.example:8443/x?y#z", 1 },
            { "URI:https://evil.example?.good.example", 0 },
            { "URI:https://evil.example#.good.example", 0 },
            { "URI:https://x.good.example:@evil.example/", 0 },
            { "URI:https://evil.example\\.good.example/", 0 },
            { "DNS:www.corp.example", 1 },
            { "DNS:admin.corp.example", 0 },
            { "DNS:*.corp.example", 0 },
            { "DNS:*.other.example", 1 },
            { "IP:192.0.3.1", 1 },
            { "IP:192.0.2.1", 0 },
            { "IP:::ffff:192.0.2.1", 0 },
        };

        tl = make_template("ncgaps", leaf);
        ca = nc_alt_ca("critical,permitted;URI:.good.example,"
                       "excluded;DNS:admin.corp.example,"
                       "excluded;IP:192.0.2.0/255.255.255.0", "cu-nc2.pem",
                       in, ki, xr, kx, kc, key, tl, &res);
        is_status(res.status, PKI_OK, "CA under URI, DNS and IP name "
                  "constraints");

        for (k = 0; k < (int) (sizeof(nc) / sizeof(nc[0])); k++) {
            x = issue_one(ca, tl, NULL, "/CN=nc", nc[k].san, NULL, &res);
            ok(nc[k].issued ? x != NULL
                            : x == NULL && res.status == PKI_POLICY
                              && strstr(res.detail, "name constraints"),
               "  %s: %s (%s)", nc[k].san,
               nc[k].issued ? "issued" : "refused", res.detail);
            X509_free(x);
        }

        pki_ca_free(ca);
        pki_template_free(tl);
    }

    X509_free(r);
    X509_free(in);
    X509_free(in0);
    X509_free(inx);
    X509_free(inf);
    X509_free(n);
    X509_free(xr);
    X509_free(c);
    X509_free(c0);
    X509_free(cx);
    X509_free(cf);
    X509_free(cn);
    X509_free(cfut);
    X509_free(v1);
    X509_free(cv1);
    X509_free(cskew);
    X509_free(cnocrl);
    X509_free(cnoku);
    pki_key_free(key);
    EVP_PKEY_free(kr);
    EVP_PKEY_free(ki);
    EVP_PKEY_free(kc);
    EVP_PKEY_free(kx);
}


/* RFC 5280 4.1.2.5: a certificate is valid from notBefore through
 * notAfter, both included.  A template of 90 days under a CA whose
 * max_validity is 90 days gives notAfter - notBefore of 90 days less
 * 1 s (it gave 90 days: 90 days and 1 s of validity, over the
 * max_validity); a notAfter asked for is issued while the span stays
 * within both, and refused one second later. */
static void
test_validity_inclusive(X509 *root, pki_key_t *rootkey)
{
    int               i;
    long              span;
    X509             *x;
    time_t            nb, na;
    pki_ca_t         *ca;
    X509_REQ         *csr;
    EVP_PKEY         *pk;
    pki_result_t      res;
    pki_request_t     req;
    unsigned char    *der;
    pki_template_t   *t, *tl[2];
    size_t            len;
    static const char *const lines[] = {
        "key_types ec:P-256", "subject CN copy", "validity 90d", NULL
    };

    span = (long) (asn1_to_time(X509_get0_notAfter(root))
                   - asn1_to_time(X509_get0_notBefore(root)));
    ok(span == 3650 * 86400L - 1, "self-signed root of 3650d: notAfter - "
       "notBefore = 3650 days - 1 s (got %ld)", span);

    t = make_template("incl", lines);
    tl[0] = t;
    tl[1] = NULL;
    ca = make_ca("incl", "root.pem", NULL, rootkey, tl, "90d", &res);
    if (!ok(res.status == PKI_OK, "CA with max_validity 90d, template "
            "90d: %s", res.detail))
    {
        pki_ca_free(ca);
        pki_template_free(t);
        return;
    }

    x = issue_one(ca, t, NULL, "/CN=incl", NULL, NULL, &res);
    span = x ? (long) (asn1_to_time(X509_get0_notAfter(x))
                       - asn1_to_time(X509_get0_notBefore(x))) : -1;
    ok(span == 90 * 86400L - 1, "validity 90d, max_validity 90d: "
       "notAfter - notBefore = 90 days - 1 s, notAfter included (got %ld) "
       "%s", span, res.detail);
    X509_free(x);

    /* asked for a notBefore and a notAfter (ACME): the full span, then a
     * second more */
    for (i = 0; i < 2; i++) {
        x = NULL;
        pk = keygen("EC:P-256");
        der = make_csr(pk, "/CN=incl-dates", NULL, &len);
        csr = NULL;
        nb = time(NULL) + 60;
        na = nb + 90 * 86400L - 1 + i;
        pki_result_init(&res);
        if (pki_csr_parse(der, len, &csr, &res) == PKI_OK
            && pki_request_from_csr(t, csr, &req, &res) == PKI_OK)
        {
            req.not_before = nb;
            req.not_after = na;
            (void) pki_issue(ca, t, NULL, &req, NULL, &x, &res);
            pki_request_clear(&req);
        }

        if (i == 0) {
            ok(x != NULL && asn1_to_time(X509_get0_notBefore(x)) == nb
               && asn1_to_time(X509_get0_notAfter(x)) == na,
               "notAfter asked for at notBefore + 90 days - 1 s: issued "
               "with exactly those dates %s", res.detail);
        } else {
            ok(x == NULL && res.status == PKI_POLICY
               && strstr(res.detail, "cannot end at the notAfter"),
               "notAfter asked for at notBefore + 90 days (90 days and "
               "1 s): refused: %s", res.detail);
        }

        X509_free(x);
        X509_REQ_free(csr);
        free(der);
        EVP_PKEY_free(pk);
    }

    pki_ca_free(ca);
    pki_template_free(t);
}


int
main(void)
{
    long              pl;
    const char       *sock;
    BIGNUM           *bn;
    X509             *root, *sub, *x, *y;
    EVP_PKEY         *rootpk, *subpk, *otherpk, *leafpk;
    X509_NAME        *name;
    pki_ca_t         *rootca, *subca, *ca;
    pki_key_t        *rootkey, *subkey, *otherkey;
    pki_status_t      st;
    pki_result_t      res;
    pki_request_t     req;
    pki_template_t   *troot, *tsub, *tdev, *tlong, *tca2, *tother;
    pki_template_t   *tmpls[4];
    ASN1_OCTET_STRING *skid;
    AUTHORITY_KEYID  *akid;
    BASIC_CONSTRAINTS *bc;

    static const char *const root_lines[] = {
        "subject CN copy", "subject O copy", "basic_constraints ca:true "
        "pathlen:1", "validity 3650d", "key_types ec:P-256", NULL
    };
    static const char *const sub_lines[] = {
        "subject CN copy", "subject O copy", "basic_constraints ca:true "
        "pathlen:0", "validity 2d", NULL
    };
    static const char *const dev_lines[] = {
        "key_types ec:P-256 rsa:2048-4096 ed25519", "subject CN required",
        "subject O copy", "subject OU forbidden", "subject C fixed DE",
        "san dns copy", "san ip copy", "san uri forbidden", "validity 30d",
        "extended_key_usage clientAuth",
        "extension 1.3.6.1.4.1.99999.1 noncritical 0c0568656c6c6f", NULL
    };
    static const char *const long_lines[] = {
        "subject CN required", "san dns copy", "validity 30d",
        "beyond_ca_expiry on", NULL
    };
    static const char *const ca2_lines[] = {
        "subject CN copy", "basic_constraints ca:true", NULL
    };

    pki_init();

    snprintf(dir, sizeof(dir), "/tmp/h2issue.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        skip_all("mkdtemp failed");
    }

    test_csr_parse();
    test_csr_digest();

    troot = make_template("root", root_lines);
    tsub = make_template("sub", sub_lines);
    tdev = make_template("device", dev_lines);
    tlong = make_template("long", long_lines);
    tca2 = make_template("ca2", ca2_lines);
    tother = make_template("other", long_lines);

    test_policy(tdev);
    test_rsa_modulus(tdev);
    test_subject_types();
    test_ed_key_usage();
    test_small_order();
    test_subject_attr_types();
    test_subject_invisible();
    test_cn_dns();
    test_names_beyond_san();
    test_idna();

    /* Root: self-signed with our own builder. */
    rootpk = keygen("EC:P-256");
    subpk = keygen("EC:P-256");
    otherpk = keygen("EC:P-256");
    rootkey = open_key(write_key(rootpk, "root.key"));
    subkey = open_key(write_key(subpk, "sub.key"));
    otherkey = open_key(write_key(otherpk, "other.key"));

    name = parse_name("/O=Test/CN=Test Root");
    pki_result_init(&res);
    st = pki_selfsign(rootkey, troot, name, &root, &res);
    is_status(st, PKI_OK, "self-signed root");
    X509_NAME_free(name);
    if (st != PKI_OK) {
        diag("%s %s", res.detail, res.log);
        return done_testing();
    }
    write_cert(root, "root.pem");
    ok(X509_verify(root, rootpk) == 1, "  root verifies with its key");
    ok(X509_check_ca(root) > 0, "  root is a CA");

    tmpls[0] = tsub;
    tmpls[1] = NULL;
    rootca = make_ca("root", "root.pem", NULL, rootkey, tmpls, NULL, &res);
    is_status(res.status, PKI_OK, "root CA finishes");
    if (res.status != PKI_OK) {
        diag("%s %s", res.detail, res.log);
    }

    test_validity_inclusive(root, rootkey);

    /* Issuing CA, 2 days. */
    memset(&req, 0, sizeof(req));
    req.subject = parse_name("/O=Test/CN=Test Issuing CA");
    req.pubkey = subpk;
    st = pki_issue(rootca, tsub, NULL, &req, NULL, &sub, &res);
    is_status(st, PKI_OK, "issuing CA certificate (offline)");
    X509_NAME_free(req.subject);
    if (st != PKI_OK) {
        diag("%s %s", res.detail, res.log);
        return done_testing();
    }
    write_cert(sub, "sub.pem");
    ok(pki_ca_issued(rootca, sub), "  root issued it");

    /* CA consistency errors. */
    tmpls[0] = tdev;
    tmpls[1] = NULL;
    ca = make_ca("bad", "sub.pem", "root.pem", otherkey, tmpls, NULL, &res);
    ok(res.status == PKI_MALFORMED && strstr(res.detail, "does not match"),
       "key mismatch: %s", res.detail);
    pki_ca_free(ca);

    ca = make_ca("bad", "missing.pem", NULL, subkey, tmpls, NULL, &res);
    ok(res.status == PKI_MALFORMED && strstr(res.detail, "missing.pem"),
       "missing file: %s", res.detail);
    pki_ca_free(ca);

    ca = make_ca("bad", "sub.pem", "sub.key", subkey, tmpls, NULL, &res);
    ok(res.status == PKI_MALFORMED && strstr(res.detail, "sub.key"),
       "bad chain file: %s", res.detail);
    pki_ca_free(ca);

    ca = make_ca("bad", "sub.pem", NULL, subkey, tmpls, "7d", &res);
    ok(res.status == PKI_MALFORMED && strstr(res.detail, "\"device\"")
       && strstr(res.detail, "max_validity"),
       "template validity > max_validity: %s", res.detail);
    pki_ca_free(ca);

    tmpls[0] = tsub;
    ca = make_ca("bad", "sub.pem", NULL, subkey, tmpls, NULL, &res);
    ok(res.status == PKI_MALFORMED && strstr(res.detail, "pathlen"),
       "CA template under pathlen:0 CA: %s", res.detail);
    pki_ca_free(ca);

    tmpls[0] = tca2;
    ca = make_ca("bad", "root.pem", NULL, rootkey, tmpls, NULL, &res);
    ok(res.status == PKI_MALFORMED
       && strstr(res.detail, "an unlimited path length"),
       "unlimited CA template under pathlen:1 CA: %s", res.detail);
    pki_ca_free(ca);

    {
        pki_ca_t        *cx;
        pki_template_t  *texp;
        static const char *const exp_lines[] = {
            "subject CN copy", "basic_constraints ca:true", "validity 1s",
            NULL
        };

        texp = make_template("expired", exp_lines);
        name = parse_name("/CN=Expired Root");
        st = pki_selfsign(otherkey, texp, name, &x, &res);
        X509_NAME_free(name);
        write_cert(x, "expired.pem");
        X509_free(x);
        tmpls[0] = NULL;
        cx = make_ca("old", "expired.pem", NULL, otherkey, tmpls, NULL, &res);
        ok(res.status == PKI_MALFORMED && strstr(res.detail, "expired"),
           "expired CA: %s", res.detail);
        pki_ca_free(cx);
        pki_template_free(texp);
    }

    /* A CA restricted to serverAuth and to names under example.com: a
     * template for another purpose is refused at configuration, a name
     * outside the constraints at issuance, before anything is signed. */
    {
        pki_ca_t        *cc;
        pki_template_t  *tcons, *tsrv, *tcli, *tocsp;
        static const char *const cons_lines[] = {
            "subject CN copy", "basic_constraints ca:true", "validity 30d",
            "extended_key_usage serverAuth",
            "extension 2.5.29.30 critical "
            "3011a00f300d820b6578616d706c652e636f6d", NULL
        };
        static const char *const srv_lines[] = {
            "subject CN copy", "san dns copy", "validity 10d",
            "extended_key_usage serverAuth", NULL
        };
        static const char *const cli_lines[] = {
            "subject CN copy", "san dns copy", "validity 10d",
            "extended_key_usage clientAuth", NULL
        };
        static const char *const ocsp_lines[] = {
            "subject CN copy", "validity 10d",
            "extended_key_usage OCSPSigning", NULL
        };
        static const char *const wild_lines[] = {
            "subject CN copy", "san dns copy wildcard", "validity 10d",
            "extended_key_usage serverAuth", NULL
        };
        static const struct {
            const char  *subject;
            const char  *sans;
            int          issued;
        } cncases[] = {
            { "/CN=*.example.org", NULL, 0 },
            { "/CN=c.example.org.", NULL, 0 },
            { "/CN=*.example.org.", NULL, 0 },
            { "/CN=*.example.com", NULL, 1 },
            { "/CN=c.example.com.", NULL, 1 },
            { "/CN=*.example.org", "DNS:e.example.com", 1 },
        };
        size_t           k;
        pki_template_t  *twild;

        tcons = make_template("cons", cons_lines);
        twild = make_template("srvw", wild_lines);
        tsrv = make_template("srv", srv_lines);
        tcli = make_template("cli", cli_lines);
        tocsp = make_template("responder", ocsp_lines);
        name = parse_name("/CN=Constrained Root");
        st = pki_selfsign(otherkey, tcons, name, &x, &res);
        X509_NAME_free(name);
        ok(st == PKI_OK, "constrained root: %s", res.detail);
        write_cert(x, "cons.pem");
        X509_free(x);

        tmpls[0] = tcli;
        tmpls[1] = NULL;
        cc = make_ca("cons", "cons.pem", NULL, otherkey, tmpls, NULL, &res);
        ok(res.status == PKI_MALFORMED
           && strstr(res.detail, "extendedKeyUsage") != NULL
           && strstr(res.detail, "\"cli\"") != NULL,
           "clientAuth template under a serverAuth CA refused: %s",
           res.detail);
        pki_ca_free(cc);

        /* a delegated OCSP responder's template beside it: verifiers do
         * not nest OCSPSigning */
        tmpls[0] = tsrv;
        tmpls[1] = tocsp;
        tmpls[2] = NULL;
        cc = make_ca("cons", "cons.pem", NULL, otherkey, tmpls, NULL, &res);
        is_status(res.status, PKI_OK, "serverAuth and OCSPSigning templates "
                  "taken");
        tmpls[1] = NULL;

        x = issue_one(cc, tsrv, NULL, "/CN=a", "DNS:a.example.com", NULL,
                      &res);
        ok(x != NULL, "a name within the constraints issued: %s",
           res.detail);
        X509_free(x);

        x = issue_one(cc, tsrv, NULL, "/CN=b", "DNS:b.example.org", NULL,
                      &res);
        ok(x == NULL && res.status == PKI_POLICY
           && strstr(res.detail, "name constraints") != NULL,
           "a SAN outside the constraints refused: %s", res.detail);
        X509_free(x);

        x = issue_one(cc, tsrv, NULL, "/CN=c.example.org", NULL, NULL, &res);
        ok(x == NULL && res.status == PKI_POLICY,
           "a host name in the CN outside them, no SAN, refused: %s",
           res.detail);
        X509_free(x);

        x = issue_one(cc, tsrv, NULL, "/CN=device 7", "DNS:d.example.com",
                      NULL, &res);
        ok(x != NULL, "a CN that is no host name beside a SAN within: %s",
           res.detail);
        X509_free(x);

        pki_ca_free(cc);

        /* OpenSSL's CN check skips a wildcard CN and one with a trailing
         * dot, which TLS clients match (X509_check_host falls back to the
         * CN): such a CN is judged as a dNSName SAN is */
        tmpls[0] = twild;
        tmpls[1] = NULL;
        cc = make_ca("cons", "cons.pem", NULL, otherkey, tmpls, NULL, &res);
        is_status(res.status, PKI_OK, "wildcard template under the "
                  "constrained CA");
        for (k = 0; k < sizeof(cncases) / sizeof(cncases[0]); k++) {
            constrained_case(cc, twild, "name constraints",
                             cncases[k].subject, cncases[k].sans,
                             cncases[k].issued);
        }
        pki_ca_free(cc);
        pki_template_free(twild);
        pki_template_free(tcons);
        pki_template_free(tsrv);
        pki_template_free(tcli);
        pki_template_free(tocsp);
    }

    /* A CA restricted to addresses in 10.0.0.0/8 and 2001:db8::/32: an
     * address in the CN of a request without an iPAddress SAN is judged
     * against them as one in such a SAN is (curl matches an IP host
     * against that CN), as a host name in the CN is against dNSName
     * constraints. */
    {
        size_t           k;
        pki_ca_t        *cc;
        pki_template_t  *tcons, *tip;
        static const char *const cons_lines[] = {
            "subject CN copy", "basic_constraints ca:true", "validity 30d",
            "extension 2.5.29.30 critical "
            "3032a030300a87080a000000ff0000003022872020010db8000000000000"
            "000000000000ffffffff000000000000000000000000", NULL
        };
        static const char *const ip_lines[] = {
            "subject CN copy", "san ip copy", "validity 10d",
            "extended_key_usage serverAuth", NULL
        };
        static const struct {
            const char  *subject;
            const char  *sans;
            int          issued;
        } ipcases[] = {
            { "/CN=10.1.2.3", NULL, 1 },
            { "/CN=2001:db8::5", NULL, 1 },
            { "/CN=192.0.2.1", NULL, 0 },
            { "/CN=192.0.2.1.", NULL, 0 },
            { "/CN=2001:db9::1", NULL, 0 },
            { "/CN=::ffff:192.0.2.1", NULL, 0 },
            { "/CN=192.0.2.1", "IP:10.0.0.9", 1 },
            { "/CN=device 7", "IP:10.0.0.9", 1 },
            { "/CN=device 7", "IP:192.0.2.1", 0 },
        };

        tcons = make_template("ipcons", cons_lines);
        tip = make_template("ipsrv", ip_lines);
        name = parse_name("/CN=Address Constrained Root");
        st = pki_selfsign(otherkey, tcons, name, &x, &res);
        X509_NAME_free(name);
        ok(st == PKI_OK, "address-constrained root: %s", res.detail);
        write_cert(x, "ipcons.pem");
        X509_free(x);

        tmpls[0] = tip;
        tmpls[1] = NULL;
        cc = make_ca("ipcons", "ipcons.pem", NULL, otherkey, tmpls, NULL,
                     &res);
        is_status(res.status, PKI_OK, "address-constrained CA");

        for (k = 0; k < sizeof(ipcases) / sizeof(ipcases[0]); k++) {
            constrained_case(cc, tip, "address constraints",
                             ipcases[k].subject, ipcases[k].sans,
                             ipcases[k].issued);
        }

        pki_ca_free(cc);
        pki_template_free(tcons);
        pki_template_free(tip);
    }

    /* A leaf is not a CA. */
    tmpls[0] = tlong;
    tmpls[1] = NULL;
    ca = make_ca("leafca", "sub.pem", "root.pem", subkey, tmpls, NULL, &res);
    is_status(res.status, PKI_OK, "helper CA for a leaf");
    x = issue_one(ca, tlong, NULL, "/CN=leaf", NULL, &leafpk, &res);
    write_cert(x, "leaf.pem");
    write_key(leafpk, "leaf.key");
    pki_ca_free(ca);
    X509_free(x);
    {
        pki_key_t  *lk = open_key(write_key(leafpk, "leaf.key"));

        ca = make_ca("leaf", "leaf.pem", NULL, lk, NULL, NULL, &res);
        ok(res.status == PKI_MALFORMED && strstr(res.detail, "not a CA"),
           "leaf is not a CA: %s", res.detail);
        pki_ca_free(ca);
        pki_key_free(lk);
    }
    EVP_PKEY_free(leafpk);

    /* The issuing CA. */
    tmpls[0] = tdev;
    tmpls[1] = tlong;
    tmpls[2] = NULL;
    subca = make_ca("sub", "sub.pem", "root.pem", subkey, tmpls, "90d", &res);
    is_status(res.status, PKI_OK, "issuing CA finishes");
    ok(pki_ca_template_count(subca) == 0, "no template names configured");
    ok(sk_X509_num(pki_ca_chain(subca)) == 1, "chain has the root");
    ok(pki_ca_allows(subca, tdev) && pki_ca_allows(subca, tlong)
       && !pki_ca_allows(subca, tother), "pki_ca_allows");
    ok(pki_ca_alt_chain_count(subca) == 0 && pki_ca_alt_chain(subca, 0) == NULL,
       "no alternate chain configured");

    test_alt_chains(subpk, subkey, otherpk, troot, tsub);
    test_primary_chain();
    test_point_forms(subca, tdev);
    test_aia(subkey, tdev);

    x = issue_one(subca, tother, NULL, "/CN=dev1", NULL, NULL, &res);
    ok(x == NULL && res.status == PKI_POLICY
       && strstr(res.detail, "not allowed for CA"),
       "template not allowed: %s", res.detail);

    x = issue_one(subca, tdev, NULL, "/O=Acme/CN=dev1",
                  "DNS:dev1.example.com,IP:192.0.2.7", &leafpk, &res);
    ok(x != NULL, "issued offline: %s %s", res.detail, res.log);
    if (x == NULL) {
        return done_testing();
    }

    ok(X509_verify(x, subpk) == 1, "  verifies with the CA key");
    ok(pki_ca_issued(subca, x), "  pki_ca_issued");
    ok(!pki_ca_issued(rootca, x), "  not issued by the root");
    ok(X509_get_version(x) == X509_VERSION_3, "  v3");
    ok(EVP_PKEY_eq(X509_get0_pubkey(x), leafpk) == 1, "  subject key");
    bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    ok(!BN_is_negative(bn) && BN_num_bits(bn) >= 64
       && BN_num_bytes(bn) <= 20, "  serial positive, %d bits",
       BN_num_bits(bn));
    BN_free(bn);
    ok(has_ext(x, NID_basic_constraints, 1), "  basicConstraints critical");
    bc = X509_get_ext_d2i(x, NID_basic_constraints, NULL, NULL);
    ok(bc && !bc->ca, "  ca:false");
    BASIC_CONSTRAINTS_free(bc);
    ok(has_ext(x, NID_key_usage, 1), "  keyUsage critical");
    ok(X509_get_key_usage(x) == KU_DIGITAL_SIGNATURE,
       "  keyUsage digitalSignature only for EC (0x%x)",
       X509_get_key_usage(x));
    ok(has_ext(x, NID_ext_key_usage, 0)
       && X509_get_extended_key_usage(x) == XKU_SSL_CLIENT,
       "  EKU clientAuth");
    ok(has_ext(x, NID_subject_alt_name, 0), "  SAN non-critical");
    ok(has_ext(x, NID_crl_distribution_points, 0), "  CRL DP");
    ok(has_ext(x, NID_info_access, 0), "  AIA");
    {
        ASN1_OBJECT  *o = OBJ_txt2obj("1.3.6.1.4.1.99999.1", 1);

        ok(X509_get_ext_by_OBJ(x, o, -1) >= 0, "  template extension");
        ASN1_OBJECT_free(o);
    }
    ok(X509_get_ext_count(x) == 9, "  9 extensions (%d)",
       X509_get_ext_count(x));
    skid = X509_get_ext_d2i(sub, NID_subject_key_identifier, NULL, NULL);
    akid = X509_get_ext_d2i(x, NID_authority_key_identifier, NULL, NULL);
    ok(skid && akid && akid->keyid
       && ASN1_OCTET_STRING_cmp(skid, akid->keyid) == 0, "  AKID = CA SKID");
    ASN1_OCTET_STRING_free(skid);
    AUTHORITY_KEYID_free(akid);
    ok(X509_get0_subject_key_id(x) != NULL
       && ASN1_STRING_length(X509_get0_subject_key_id(x)) == 20, "  SKID");
    ok(X509_cmp_time(X509_get0_notBefore(x), NULL) < 0, "  notBefore past");
    ok(asn1_to_time(X509_get0_notAfter(x))
       == asn1_to_time(X509_get0_notAfter(sub)),
       "  notAfter clamped to the CA's notAfter");
    write_cert(x, "dev1.pem");

    /* Independent oracle: openssl verify. */
    {
        char  cmd[512];

        snprintf(cmd, sizeof(cmd), "openssl verify -CAfile %s/root.pem "
                 "-untrusted %s/sub.pem -x509_strict -purpose sslclient "
                 "%s/dev1.pem >/dev/null 2>&1", dir, dir, dir);
        ok(system(cmd) == 0, "openssl verify -x509_strict accepts the chain");
    }

    /* Renewal. */
    {
        size_t          len;
        X509_REQ       *csr;
        EVP_PKEY       *pk;
        unsigned char  *der;

        pk = keygen("EC:P-256");
        der = make_csr(pk, "/CN=dev1/O=Acme/C=DE",
                       "IP:192.0.2.7,DNS:dev1.example.com", &len);
        pki_csr_parse(der, len, &csr, &res);
        st = pki_request_renewal(tdev, csr, x, &req, &res);
        is_status(st, PKI_OK, "renewal with same subject and SANs");
        ok(st == PKI_OK && EVP_PKEY_eq(req.pubkey, pk) == 1
           && X509_NAME_cmp(req.subject, X509_get_subject_name(x)) == 0,
           "  request = old names + new key");
        if (st == PKI_OK) {
            st = pki_issue(subca, tdev, NULL, &req, NULL, &y, &res);
            is_status(st, PKI_OK, "  renewed certificate issued");
            X509_free(y);
        }
        pki_request_clear(&req);
        X509_REQ_free(csr);
        free(der);

        der = make_csr(pk, "/CN=dev2/O=Acme/C=DE",
                       "IP:192.0.2.7,DNS:dev1.example.com", &len);
        pki_csr_parse(der, len, &csr, &res);
        st = pki_request_renewal(tdev, csr, x, &req, &res);
        is_status(st, PKI_FORBIDDEN, "renewal with another subject");
        ok(strstr(res.detail, "subject/SANs differ") != NULL, "  detail %s",
           res.detail);
        X509_REQ_free(csr);
        free(der);

        /* A template that now fixes O (and C) renews CN=dev1,O=Acme into
         * the template's O: fixed values win, as for a new enrollment. */
        {
            char             buf[256];
            pki_template_t  *tfix;

            static const char *const fix_lines[] = {
                "key_types ec:P-256", "subject CN required",
                "subject O fixed NewCorp", "subject C fixed DE",
                "san dns copy", "san ip copy", "validity 30d", NULL
            };

            tfix = make_template("fixed-o", fix_lines);
            der = make_csr(pk, "/CN=dev1/O=Acme/C=DE",
                           "IP:192.0.2.7,DNS:dev1.example.com", &len);
            pki_csr_parse(der, len, &csr, &res);
            pki_result_init(&res);
            st = pki_request_renewal(tfix, csr, x, &req, &res);
            is_status(st, PKI_OK, "renewal under a template with O fixed "
                      "NewCorp");
            buf[0] = '\0';
            if (st == PKI_OK) {
                X509_NAME_oneline(req.subject, buf, sizeof(buf));
            }
            ok(strstr(buf, "/O=NewCorp") != NULL
               && strstr(buf, "Acme") == NULL
               && strstr(buf, "/CN=dev1") != NULL
               && strstr(buf, "/C=DE") != NULL,
               "  the template's fixed O wins: %s", buf);
            ok(st == PKI_OK && req.sans != NULL
               && sk_GENERAL_NAME_num(req.sans) == 2, "  the old SANs kept");

            /* renewed again (the certificate now says O=NewCorp) with the
             * subject the device was configured with (O=Acme): the
             * template makes it the certificate's */
            pki_request_clear(&req);
            X509_REQ_free(csr);
            free(der);
            y = NULL;
            der = make_csr(pk, "/CN=dev1/O=NewCorp/C=DE",
                           "IP:192.0.2.7,DNS:dev1.example.com", &len);
            pki_csr_parse(der, len, &csr, &res);
            pki_result_init(&res);
            st = pki_request_from_csr(tdev, csr, &req, &res);
            if (st == PKI_OK) {
                st = pki_issue(subca, tdev, NULL, &req, NULL, &y, &res);
            }
            pki_request_clear(&req);
            X509_REQ_free(csr);
            free(der);
            der = make_csr(pk, "/CN=dev1/O=Acme/C=DE",
                           "IP:192.0.2.7,DNS:dev1.example.com", &len);
            if (ok(st == PKI_OK && y != NULL, "  a certificate with "
                   "O=NewCorp (%s)", res.detail)) {
                pki_csr_parse(der, len, &csr, &res);
                pki_result_init(&res);
                st = pki_request_renewal(tfix, csr, y, &req, &res);
                is_status(st, PKI_OK, "  renewed again with the configured "
                          "O=Acme, which the template makes NewCorp");
                pki_request_clear(&req);
                X509_REQ_free(csr);
                free(der);
                der = make_csr(pk, "/CN=dev9/O=Acme/C=DE",
                               "IP:192.0.2.7,DNS:dev1.example.com", &len);
                pki_csr_parse(der, len, &csr, &res);
                pki_result_init(&res);
                st = pki_request_renewal(tfix, csr, y, &req, &res);
                is_status(st, PKI_FORBIDDEN, "  but not with another CN");
                pki_request_clear(&req);
                X509_REQ_free(csr);
            }
            X509_free(y);
            free(der);
            pki_template_free(tfix);
        }

        der = make_csr(pk, "/CN=dev1/O=Acme/C=DE", "DNS:dev1.example.com",
                       &len);
        pki_csr_parse(der, len, &csr, &res);
        st = pki_request_renewal(tdev, csr, x, &req, &res);
        is_status(st, PKI_FORBIDDEN, "renewal with fewer SANs");
        X509_REQ_free(csr);
        free(der);
        EVP_PKEY_free(pk);

        pk = keygen("RSA:1024");
        der = make_csr(pk, "/CN=dev1/O=Acme/C=DE",
                       "IP:192.0.2.7,DNS:dev1.example.com", &len);
        pki_csr_parse(der, len, &csr, &res);
        st = pki_request_renewal(tdev, csr, x, &req, &res);
        is_status(st, PKI_POLICY, "renewal with a refused key type");
        X509_REQ_free(csr);
        free(der);
        EVP_PKEY_free(pk);

        /* The old names must pass the renewing template too: "long" has
         * no rule for O or for IP SANs. */
        pk = keygen("EC:P-256");
        der = make_csr(pk, "/CN=dev1/O=Acme/C=DE",
                       "IP:192.0.2.7,DNS:dev1.example.com", &len);
        pki_csr_parse(der, len, &csr, &res);
        st = pki_request_renewal(tlong, csr, x, &req, &res);
        is_status(st, PKI_POLICY, "renewal into a template that refuses "
                  "the old names");
        ok(req.subject == NULL && req.sans == NULL && req.pubkey == NULL,
           "  nothing left in the request: %s", res.detail);
        X509_REQ_free(csr);
        free(der);
        EVP_PKEY_free(pk);
    }

    X509_free(x);
    EVP_PKEY_free(leafpk);

    /* beyond_ca_expiry: 30 days although the CA has 2 left. */
    x = issue_one(subca, tlong, NULL, "/CN=long", "DNS:long.example", NULL,
                  &res);
    ok(x && asn1_to_time(X509_get0_notAfter(x))
            - asn1_to_time(X509_get0_notBefore(x)) == 30L * 86400 - 1,
       "beyond_ca_expiry keeps 30 days (notAfter included)");
    X509_free(x);

    /* nginx still up when its CA expires: nothing more is signed,
     * beyond_ca_expiry or not (the CA has 2 days; this host is 3 ahead) */
    clock_ahead = 3 * 86400;
    x = issue_one(subca, tlong, NULL, "/CN=late", "DNS:late.example", NULL,
                  &res);
    ok(x == NULL && res.status == PKI_UNAVAILABLE
       && strstr(res.detail, "has expired") != NULL,
       "an expired CA signs nothing, beyond_ca_expiry neither "
       "(unavailable): %s",
       res.detail);
    X509_free(x);

    /* 30 s past its end: no certificate that ended when it was made */
    clock_ahead = 0;
    clock_ahead = asn1_to_time(X509_get0_notAfter(pki_ca_cert(subca)))
                  - time(NULL) + 30;
    x = issue_one(subca, tdev, NULL, "/CN=late", "DNS:late.example", NULL,
                  &res);
    ok(x == NULL && res.status == PKI_UNAVAILABLE
       && strstr(res.detail, "has expired") != NULL,
       "  nor just after its end: %s", res.detail);
    X509_free(x);
    clock_ahead = 0;

    /* a validity within the 60 s backdating: expired on arrival */
    {
        static const char *const short_lines[] = {
            "subject CN required", "validity 45s", NULL
        };
        pki_template_t  *tshort = make_template("short", short_lines);

        pki_ca_add_template(subca, tshort, &res);
        x = issue_one(subca, tshort, NULL, "/CN=short", NULL, NULL, &res);
        ok(x == NULL && res.status == PKI_INTERNAL
           && strstr(res.detail, "expired when issued") != NULL,
           "validity 45s: refused, not expired on arrival: %s",
           res.detail);
        X509_free(x);
        extra[nextra++] = tshort;
    }

    /* SAN-only certificate: SAN is critical. */
    {
        static const char *const san_lines[] = {
            "san dns required", "validity 1h", NULL
        };
        pki_template_t  *tsan = make_template("sanonly", san_lines);

        pki_ca_add_template(subca, tsan, &res);
        x = issue_one(subca, tsan, NULL, "", "DNS:only.example", NULL, &res);
        ok(x && has_ext(x, NID_subject_alt_name, 1)
           && X509_NAME_entry_count(X509_get_subject_name(x)) == 0,
           "empty subject: SAN critical");
        X509_free(x);

        x = issue_one(subca, tsan, NULL, "", NULL, NULL, &res);
        ok(x == NULL && res.status == PKI_POLICY, "no SAN: %s", res.detail);
        extra[nextra++] = tsan;
    }

    /* RSA subject key: keyEncipherment by default. */
    {
        size_t          len;
        X509_REQ       *csr;
        EVP_PKEY       *pk;
        unsigned char  *der;

        pk = keygen("RSA:2048");
        der = make_csr(pk, "/CN=rsa", NULL, &len);
        pki_csr_parse(der, len, &csr, &res);
        pki_request_from_csr(tdev, csr, &req, &res);
        st = pki_issue(subca, tdev, NULL, &req, NULL, &x, &res);
        ok(st == PKI_OK && X509_get_key_usage(x)
                           == (KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT),
           "RSA key: digitalSignature + keyEncipherment");
        X509_free(x);
        pki_request_clear(&req);
        X509_REQ_free(csr);
        free(der);
        EVP_PKEY_free(pk);
    }

    /* Explicit keyEncipherment: kept for RSA, dropped for EC keys. */
    {
        static const char *const ke_lines[] = {
            "key_types ec:P-256 rsa:2048", "subject CN copy",
            "key_usage digitalSignature keyEncipherment", NULL
        };
        static const char *const keonly_lines[] = {
            "key_types ec:P-256 rsa:2048", "subject CN copy",
            "key_usage keyEncipherment", NULL
        };
        pki_template_t  *tke = make_template("ke", ke_lines);
        pki_template_t  *tkeo = make_template("keonly", keonly_lines);

        pki_ca_add_template(subca, tke, &res);
        pki_ca_add_template(subca, tkeo, &res);
        x = issue_one(subca, tke, NULL, "/CN=ec", NULL, NULL, &res);
        ok(x && X509_get_key_usage(x) == KU_DIGITAL_SIGNATURE,
           "EC key: keyEncipherment dropped (RFC 8813)");
        X509_free(x);
        x = issue_one(subca, tkeo, NULL, "/CN=ec", NULL, NULL, &res);
        ok(x == NULL && res.status == PKI_POLICY
           && strstr(res.detail, "does not suit an EC key"),
           "EC key with keyEncipherment only: %s", res.detail);
        X509_free(x);
        extra[nextra++] = tke;
        extra[nextra++] = tkeo;
    }

    /* A template of several key types: each certificate carries only
     * the bits its key's type allows (RFC 3279 2.3.1, 5480 3, 8410 5). */
    {
        size_t           k, len;
        X509_REQ        *csr;
        EVP_PKEY        *pk;
        unsigned char   *der;
        pki_template_t  *tmix, *tka;

        static const char *const mix_lines[] = {
            "key_types ec:P-256 rsa:2048 ed25519", "subject CN copy",
            "key_usage digitalSignature keyEncipherment keyAgreement", NULL
        };
        static const char *const ka_lines[] = {
            "key_types ec:P-256 rsa:2048", "subject CN copy",
            "key_usage keyAgreement", NULL
        };
        static const struct {
            const char  *alg;
            int          tmpl;        /* 0 mix, 1 keyAgreement only */
            uint32_t     ku;          /* 0: refused */
        } mix[] = {
            { "RSA:2048", 0, KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT },
            { "EC:P-256", 0, KU_DIGITAL_SIGNATURE | KU_KEY_AGREEMENT },
            { "ED25519", 0, KU_DIGITAL_SIGNATURE },
            { "EC:P-256", 1, KU_KEY_AGREEMENT },
            { "RSA:2048", 1, 0 },
        };

        tmix = make_template("mix", mix_lines);
        tka = make_template("kaonly", ka_lines);
        pki_ca_add_template(subca, tmix, &res);
        pki_ca_add_template(subca, tka, &res);

        for (k = 0; k < sizeof(mix) / sizeof(mix[0]); k++) {
            pki_template_t  *tt = mix[k].tmpl ? tka : tmix;

            pk = keygen(mix[k].alg);
            der = make_csr(pk, "/CN=mix", NULL, &len);
            pki_result_init(&res);
            x = NULL;
            st = pki_csr_parse(der, len, &csr, &res);
            if (st == PKI_OK) {
                st = pki_request_from_csr(tt, csr, &req, &res);
                if (st == PKI_OK) {
                    st = pki_issue(subca, tt, NULL, &req, NULL, &x, &res);
                }
                pki_request_clear(&req);
                X509_REQ_free(csr);
            }

            if (mix[k].ku) {
                ok(st == PKI_OK && x != NULL
                   && X509_get_key_usage(x) == mix[k].ku,
                   "template %d, %s key: key usage %#x (%s)", mix[k].tmpl,
                   mix[k].alg, x ? (unsigned) X509_get_key_usage(x) : 0,
                   res.detail);
            } else {
                ok(x == NULL && st == PKI_POLICY
                   && strstr(res.detail, "does not suit an RSA key"),
                   "template %d, %s key refused: %s", mix[k].tmpl,
                   mix[k].alg, res.detail);
            }

            X509_free(x);
            free(der);
            EVP_PKEY_free(pk);
        }

        extra[nextra++] = tmix;
        extra[nextra++] = tka;
    }

    /* OCSP Must-Staple (RFC 7633): issued only under must_staple on */
    {
        int              crit;
        size_t           len;
        X509_REQ        *csr;
        EVP_PKEY        *pk;
        TLS_FEATURE     *tf;
        unsigned char   *der;
        pki_template_t  *tst, *tbad;

        static const char *const staple_lines[] = {
            "subject CN copy", "san dns copy", "must_staple on", NULL
        };
        static const char *const verbatim_lines[] = {
            "subject CN copy", "san dns copy",
            "extension 1.3.6.1.5.5.7.1.24 noncritical 3003020105", NULL
        };
        static const struct {
            const char  *name;
            const char  *lines[4];
            const char  *why;
        } bad[] = {
            { "ca", { "subject CN copy", "basic_constraints ca:true",
                      "must_staple on", NULL }, "end-entity" },
            { "verbatim", { "subject CN copy", "must_staple on",
                            "extension 1.3.6.1.5.5.7.1.24 noncritical "
                            "3003020105", NULL }, "exclude each other" },
        };

        tst = make_template("staple", staple_lines);
        pki_ca_add_template(subca, tst, &res);
        extra[nextra++] = tst;
        pk = keygen("EC:P-256");

        der = make_csr_ext(pk, "/CN=s1", "DNS:s1.example", "status_request",
                           1, &len);
        pki_csr_parse(der, len, &csr, &res);
        st = pki_request_from_csr(tdev, csr, &req, &res);
        ok(st == PKI_POLICY && strstr(res.detail, "must_staple off"),
           "must-staple CSR, template without must_staple: refused (%s)",
           res.detail);
        pki_request_clear(&req);

        st = pki_request_from_csr(tst, csr, &req, &res);
        ok(st == PKI_OK && req.must_staple == 1,
           "must-staple CSR, must_staple on: requested");
        x = NULL;
        if (st == PKI_OK) {
            st = pki_issue(subca, tst, NULL, &req, NULL, &x, &res);
        }
        tf = x ? X509_get_ext_d2i(x, NID_tlsfeature, &crit, NULL) : NULL;
        ok(tf && crit == 0 && sk_ASN1_INTEGER_num(tf) == 1
           && ASN1_INTEGER_get(sk_ASN1_INTEGER_value(tf, 0)) == 5,
           "  the certificate carries status_request, not critical");
        TLS_FEATURE_free(tf);
        if (x) {
            char  cmd[512];

            write_cert(x, "staple.pem");
            snprintf(cmd, sizeof(cmd), "openssl x509 -in %s/staple.pem "
                     "-noout -text | grep -q 'TLS Feature'", dir);
            ok(system(cmd) == 0, "  openssl shows the TLS Feature");
        }

        /* renewal of that certificate keeps what the new CSR asks */
        {
            pki_request_t  rreq;

            st = pki_request_renewal(tst, csr, x, &rreq, &res);
            ok(st == PKI_OK && rreq.must_staple == 1,
               "  renewal with a must-staple CSR: requested");
            pki_request_clear(&rreq);
            st = pki_request_renewal(tdev, csr, x, &rreq, &res);
            ok(st == PKI_POLICY, "  renewal under a template without it: "
               "refused");
            pki_request_clear(&rreq);
        }
        X509_free(x);
        pki_request_clear(&req);
        X509_REQ_free(csr);
        free(der);

        der = make_csr(pk, "/CN=s2", "DNS:s2.example", &len);
        pki_csr_parse(der, len, &csr, &res);
        st = pki_request_from_csr(tst, csr, &req, &res);
        x = NULL;
        if (st == PKI_OK) {
            st = pki_issue(subca, tst, NULL, &req, NULL, &x, &res);
        }
        ok(st == PKI_OK && x
           && X509_get_ext_by_NID(x, NID_tlsfeature, -1) < 0,
           "a CSR without it, must_staple on: no TLS feature");
        X509_free(x);
        pki_request_clear(&req);
        X509_REQ_free(csr);
        free(der);

        der = make_csr_ext(pk, "/CN=s3", "DNS:s3.example", "17", 1, &len);
        pki_csr_parse(der, len, &csr, &res);
        st = pki_request_from_csr(tst, csr, &req, &res);
        ok(st == PKI_POLICY && strstr(res.detail, "feature 17"),
           "TLS feature 17 (status_request_v2): refused (%s)", res.detail);
        pki_request_clear(&req);
        X509_REQ_free(csr);
        free(der);

        der = make_csr_ext(pk, "/CN=s4", "DNS:s4.example", "status_request",
                           2, &len);
        pki_csr_parse(der, len, &csr, &res);
        st = pki_request_from_csr(tst, csr, &req, &res);
        ok(st == PKI_MALFORMED && strstr(res.detail, "more than one"),
           "two TLS feature extensions: malformed (%s)", res.detail);
        pki_request_clear(&req);
        X509_REQ_free(csr);
        free(der);

        /* a template with the extension verbatim signs its own copy */
        tbad = make_template("verbatim", verbatim_lines);
        pki_ca_add_template(subca, tbad, &res);
        extra[nextra++] = tbad;
        der = make_csr_ext(pk, "/CN=s5", "DNS:s5.example", "status_request",
                           1, &len);
        pki_csr_parse(der, len, &csr, &res);
        st = pki_request_from_csr(tbad, csr, &req, &res);
        x = NULL;
        if (st == PKI_OK) {
            st = pki_issue(subca, tbad, NULL, &req, NULL, &x, &res);
        }
        ok(st == PKI_OK && x
           && X509_get_ext_by_NID(x, NID_tlsfeature, -1) >= 0
           && X509_get_ext_by_NID(x, NID_tlsfeature,
                                  X509_get_ext_by_NID(x, NID_tlsfeature, -1))
              < 0,
           "verbatim TLS feature template: one extension, the template's");
        X509_free(x);
        pki_request_clear(&req);
        X509_REQ_free(csr);
        free(der);
        EVP_PKEY_free(pk);

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            pki_template_t  *tb = pki_template_new(bad[i].name);

            for (const char *const *l = bad[i].lines; *l; l++) {
                tset(tb, *l);
            }
            pki_result_init(&res);
            st = pki_template_finish(tb, &res);
            ok(st == PKI_MALFORMED && strstr(res.detail, bad[i].why),
               "template %s refused: %s", bad[i].name, res.detail);
            pki_template_free(tb);
        }

        {
            pki_template_t  *tb = pki_template_new("flag");
            const char      *argv[1] = { "maybe" };

            st = pki_template_set(tb, "must_staple", 1, argv, &res);
            ok(st == PKI_MALFORMED, "must_staple maybe: refused (%s)",
               res.detail);
            argv[0] = "on";
            pki_template_set(tb, "must_staple", 1, argv, &res);
            st = pki_template_set(tb, "must_staple", 1, argv, &res);
            ok(st == PKI_MALFORMED && strstr(res.detail, "duplicate"),
               "must_staple twice: refused");
            pki_template_free(tb);
        }
    }

    bc = X509_get_ext_d2i(sub, NID_basic_constraints, NULL, NULL);
    pl = bc && bc->pathlen ? ASN1_INTEGER_get(bc->pathlen) : -1;
    ok(bc && bc->ca && pl == 0, "issuing CA: ca:true pathlen:0");
    BASIC_CONSTRAINTS_free(bc);

    sock = getenv("PKI_TEST_REDIS_SOCK");
    if (sock && sock[0]) {
        test_redis(subca, tdev, sock);
        test_late_commit(subca, tdev, sock);
        test_batch_lost(subca, tdev, sock);
        test_batch_stalled(subca, tdev, sock);
        test_revoke_lost(subca, tdev, sock);
        test_carry_lost(subca, tdev, sock);
        test_reserve_lost(subca, tdev, sock);
        test_log_refused(subca, tdev, sock);
    } else {
        diag("PKI_TEST_REDIS_SOCK not set: Redis tests skipped");
    }

    pki_ca_free(subca);
    pki_ca_free(rootca);
    while (nextra) {
        pki_template_free(extra[--nextra]);
    }
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
    pki_template_free(tlong);
    pki_template_free(tca2);
    pki_template_free(tother);

    run("rm -rf %s%s", dir, "");

    return done_testing();
}
