/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * JWS (RFC 7515) as RFC 8555 section 6.2 profiles it: flattened JSON
 * serialization, one signature, protected header only; JWK (RFC 7517)
 * public keys and their RFC 7638 thumbprints.
 */

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include "pki.h"
#include "acme_int.h"
#include "key_int.h"


#define PKI_JWK_RSA_N_MAX 4096     /* octets of a JWK's "n": 32768 bits */
#define PKI_JWS_MAX       (1024 * 1024)
#define PKI_JWK_MAX       8192
#define PKI_RSA_MIN_BITS  2048
#define PKI_RSA_MAX_BITS  8192


/* ---- base64url ---------------------------------------------------------- */

PKI_API char *
pki_b64url_encode(const unsigned char *in, size_t len)
{
    static const char  tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                               "abcdefghijklmnopqrstuvwxyz0123456789-_";
    char              *out, *p;
    size_t             i;
    unsigned long      v;

    if (len > (SIZE_MAX - 8) / 4 * 3) {
        return NULL;
    }

    out = malloc(len / 3 * 4 + 5);
    if (out == NULL) {
        return NULL;
    }

    p = out;

    for (i = 0; i + 2 < len; i += 3) {
        v = ((unsigned long) in[i] << 16) | (in[i + 1] << 8) | in[i + 2];
        *p++ = tab[(v >> 18) & 63];
        *p++ = tab[(v >> 12) & 63];
        *p++ = tab[(v >> 6) & 63];
        *p++ = tab[v & 63];
    }

    if (len - i == 1) {
        v = (unsigned long) in[i] << 16;
        *p++ = tab[(v >> 18) & 63];
        *p++ = tab[(v >> 12) & 63];

    } else if (len - i == 2) {
        v = ((unsigned long) in[i] << 16) | (in[i + 1] << 8);
        *p++ = tab[(v >> 18) & 63];
        *p++ = tab[(v >> 12) & 63];
        *p++ = tab[(v >> 6) & 63];
    }

    *p = '\0';

    return out;
}


static int
pki_b64url_val(int c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '-') {
        return 62;
    }
    if (c == '_') {
        return 63;
    }
    return -1;
}


PKI_API int
pki_b64url_decode(const char *in, size_t len, unsigned char **out,
    size_t *outlen)
{
    int             c;
    size_t          i, n;
    unsigned char  *buf;
    unsigned long   v;

    *out = NULL;
    *outlen = 0;

    if (len % 4 == 1 || len > PKI_JWS_MAX * 2) {
        return 0;
    }

    buf = malloc(len / 4 * 3 + 3);
    if (buf == NULL) {
        return 0;
    }

    n = 0;
    v = 0;

    for (i = 0; i < len; i++) {
        c = pki_b64url_val((unsigned char) in[i]);
        if (c < 0) {
            free(buf);
            return 0;
        }

        v = (v << 6) | (unsigned long) c;

        if (i % 4 == 3) {
            buf[n++] = (v >> 16) & 0xff;
            buf[n++] = (v >> 8) & 0xff;
            buf[n++] = v & 0xff;
            v = 0;
        }
    }

    /* the unused low bits of the last character must be zero, so that
     * one value has one encoding */

    switch (len % 4) {
    case 2:
        if (v & 0xf) {
            free(buf);
            return 0;
        }
        buf[n++] = (v >> 4) & 0xff;
        break;
    case 3:
        if (v & 0x3) {
            free(buf);
            return 0;
        }
        buf[n++] = (v >> 10) & 0xff;
        buf[n++] = (v >> 2) & 0xff;
        break;
    default:
        break;
    }

    buf[n] = '\0';   /* room: len / 4 * 3 + 3 > n */

    *out = buf;
    *outlen = n;

    return 1;
}


/* ---- JWK ------------------------------------------------------------------- */

/* A base64url member decoded; NULL if absent or malformed. */
static unsigned char *
pki_jwk_member(const cJSON *obj, const char *name, size_t *len)
{
    cJSON          *item;
    unsigned char  *out;

    item = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!cJSON_IsString(item) || item->valuestring == NULL) {
        return NULL;
    }

    if (!pki_b64url_decode(item->valuestring, strlen(item->valuestring),
                           &out, len))
    {
        return NULL;
    }

    return out;
}


static EVP_PKEY *
pki_jwk_ec(const cJSON *obj, const char *crv, pki_result_t *res)
{
    size_t           xlen, ylen, flen;
    EVP_PKEY        *pk = NULL;
    const char      *group;
    EVP_PKEY_CTX    *ctx = NULL;
    OSSL_PARAM       params[3];
    unsigned char   *x, *y, pt[1 + 2 * 66];

    if (strcmp(crv, "P-256") == 0) {
        group = "P-256";
        flen = 32;
    } else if (strcmp(crv, "P-384") == 0) {
        group = "P-384";
        flen = 48;
    } else if (strcmp(crv, "P-521") == 0) {
        group = "P-521";
        flen = 66;
    } else {
        pki_fail(res, PKI_UNSUPPORTED, "unsupported JWK curve");
        return NULL;
    }

    x = pki_jwk_member(obj, "x", &xlen);
    y = pki_jwk_member(obj, "y", &ylen);

    if (x == NULL || y == NULL) {
        pki_fail(res, PKI_MALFORMED, "bad EC JWK coordinates");
        goto failed;
    }

    /* RFC 7518 6.2.1.2: each coordinate at the curve's full length.  A
     * client that drops leading zero octets (the acme-client gem 2.0.9
     * does, for about one key in 128) also computes its key authorizations
     * from that text, a thumbprint no server computes: refused here, the
     * client learns it at once instead of at every challenge. */
    if (xlen != flen || ylen != flen) {
        pki_fail(res, PKI_MALFORMED, "EC JWK coordinates must have %zu "
                 "octets each on %s (RFC 7518 6.2.1.2), got %zu and %zu%s",
                 flen, crv, xlen, ylen, xlen < flen || ylen < flen
                 ? ": leading zero octets dropped?" : "");
        goto failed;
    }

    pt[0] = 0x04;
    memcpy(pt + 1, x, flen);
    memcpy(pt + 1 + flen, y, flen);

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
                                                 (char *) group, 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY,
                                                  pt, 1 + 2 * flen);
    params[2] = OSSL_PARAM_construct_end();

    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0
        || EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) <= 0)
    {
        pki_fail(res, PKI_MALFORMED, "EC JWK point is not on the curve");
        goto failed;
    }

    EVP_PKEY_CTX_free(ctx);

    /* fromdata decodes the point (which checks it is on the curve); the
     * quick public check also refuses the point at infinity and
     * out-of-range coordinates.  The full check adds n * Q == O, a scalar
     * multiplication (as costly as the signature check itself) that can
     * never fail on these curves: their cofactor is 1, so every finite
     * point on the curve has order n. */
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    if (ctx == NULL || EVP_PKEY_public_check_quick(ctx) != 1) {
        EVP_PKEY_free(pk);
        pk = NULL;
        pki_fail(res, PKI_MALFORMED, "EC JWK point is not valid");
        goto failed;
    }

failed:

    EVP_PKEY_CTX_free(ctx);
    free(x);
    free(y);

    return pk;
}


static EVP_PKEY *
pki_jwk_rsa(const cJSON *obj, pki_result_t *res)
{
    int              bits;
    size_t           nlen, elen;
    BIGNUM          *n = NULL, *e = NULL;
    EVP_PKEY        *pk = NULL;
    OSSL_PARAM      *params = NULL;
    EVP_PKEY_CTX    *ctx = NULL;
    unsigned char   *nb, *eb;
    OSSL_PARAM_BLD  *bld = NULL;

    nb = pki_jwk_member(obj, "n", &nlen);
    eb = pki_jwk_member(obj, "e", &elen);

    /* a modulus over PKI_RSA_MAX_BITS is a key not taken (badPublicKey,
     * below); only one past any RSA key in use is malformed */
    if (nb == NULL || eb == NULL || nlen == 0 || elen == 0 || elen > 8
        || nlen > PKI_JWK_RSA_N_MAX)
    {
        pki_fail(res, PKI_MALFORMED, "bad RSA JWK");
        goto failed;
    }

    /* RFC 7518 2: a Base64urlUInt has no leading zero octet; a client
     * that hashes its own text would derive another thumbprint, and no key
     * authorization of its would match */
    if (nb[0] == 0 || eb[0] == 0) {
        pki_fail(res, PKI_MALFORMED, "RSA JWK \"n\" and \"e\" must have no "
                 "leading zero octet (RFC 7518 2)");
        goto failed;
    }

    n = BN_bin2bn(nb, (int) nlen, NULL);
    e = BN_bin2bn(eb, (int) elen, NULL);
    if (n == NULL || e == NULL) {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        goto failed;
    }

    bits = BN_num_bits(n);
    if (bits < PKI_RSA_MIN_BITS || bits > PKI_RSA_MAX_BITS) {
        pki_fail(res, PKI_UNSUPPORTED, "RSA JWK must have 2048 to 8192 bits");
        goto failed;
    }

    if (!BN_is_odd(e) || BN_is_one(e) || BN_num_bits(e) > 33
        || !BN_is_odd(n))
    {
        pki_fail(res, PKI_MALFORMED, "bad RSA JWK");
        goto failed;
    }

    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL
        || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n)
        || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e)
        || (params = OSSL_PARAM_BLD_to_param(bld)) == NULL)
    {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        goto failed;
    }

    ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0
        || EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) <= 0)
    {
        pki_fail(res, PKI_MALFORMED, "bad RSA JWK");
        pk = NULL;
    }

failed:

    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    free(nb);
    free(eb);

    return pk;
}


/* An Ed25519 public key (RFC 8032 5.1.3 encoding) that is no key:
 * non-canonical (y >= p), or a point of small order, for which one fixed
 * signature verifies every message (OpenSSL 3.0 takes these).  The eight
 * points of order 1, 2, 4 and 8 have y in {0, 1, p - 1, y8, p - y8}. */
static int
pki_ed25519_weak(const unsigned char x[32])
{
    int                         i, ones;
    unsigned char               y[32];
    static const unsigned char  y8[2][32] = {
        { 0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4,
          0x89, 0xf2, 0xef, 0x98, 0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6,
          0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05 },
        { 0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b,
          0x76, 0x0d, 0x10, 0x67, 0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39,
          0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a }
    };

    memcpy(y, x, 32);
    y[31] &= 0x7f;                              /* the sign of x        */

    /* p = 2^255 - 19: bytes ed ff .. ff 7f, little-endian */
    ones = (y[31] == 0x7f);
    for (i = 1; ones && i < 31; i++) {
        ones = (y[i] == 0xff);
    }

    if (ones && y[0] >= 0xec) {
        return 1;                               /* p - 1, or y >= p     */
    }

    for (i = 1; i < 32 && y[i] == 0; i++) {
        /* void */
    }

    if (i == 32 && y[0] <= 1) {
        return 1;                               /* 0 or 1               */
    }

    return memcmp(y, y8[0], 32) == 0 || memcmp(y, y8[1], 32) == 0;
}


/* An Ed448 public key (RFC 8032 5.2.2 encoding, 57 octets: y little-
 * endian in the first 56, the sign of x in the top bit of the last) that
 * is no key: a last octet with other bits set, non-canonical (y >= p,
 * p = 2^448 - 2^224 - 1), or a point of small order (y in {0, 1, p - 1}:
 * the curve's cofactor is 4), for which one fixed signature verifies
 * every message. */
static int
pki_ed448_weak(const unsigned char x[57])
{
    int            i, cmp, pm1;
    unsigned char  p;

    if ((x[56] & 0x7f) != 0) {
        return 1;
    }

    /* y against p and against p - 1, from the most significant octet */
    cmp = 0;
    pm1 = 1;

    for (i = 55; i >= 0; i--) {
        p = i == 28 ? 0xfe : 0xff;

        if (cmp == 0 && x[i] != p) {
            cmp = x[i] > p ? 1 : -1;
        }

        if (x[i] != (i == 0 ? 0xfe : p)) {
            pm1 = 0;
        }
    }

    if (cmp >= 0 || pm1) {
        return 1;                               /* y >= p, y = p - 1    */
    }

    for (i = 1; i < 56 && x[i] == 0; i++) {
        /* void */
    }

    return i == 56 && x[0] <= 1;                /* y = 0 or 1           */
}


static EVP_PKEY *
pki_jwk_okp(const cJSON *obj, const char *crv, pki_result_t *res)
{
    int             type;
    size_t          xlen, want;
    EVP_PKEY       *pk;
    unsigned char  *x;

    if (strcmp(crv, "Ed25519") == 0) {
        type = EVP_PKEY_ED25519;
        want = 32;
    } else if (strcmp(crv, "Ed448") == 0) {
        type = EVP_PKEY_ED448;
        want = 57;
    } else {
        pki_fail(res, PKI_UNSUPPORTED, "unsupported OKP curve");
        return NULL;
    }

    x = pki_jwk_member(obj, "x", &xlen);
    if (x == NULL || xlen != want) {
        free(x);
        pki_fail(res, PKI_MALFORMED, "bad OKP JWK");
        return NULL;
    }

    if (type == EVP_PKEY_ED25519 ? pki_ed25519_weak(x) : pki_ed448_weak(x)) {
        free(x);
        pki_fail(res, PKI_MALFORMED, "the %s key is a point of small "
                 "order or not canonical", crv);
        return NULL;
    }

    pk = EVP_PKEY_new_raw_public_key(type, NULL, x, xlen);
    free(x);

    if (pk == NULL) {
        pki_fail(res, PKI_MALFORMED, "bad OKP JWK");
    }

    return pk;
}


/* ---- strict JSON -------------------------------------------------------- */

#define PKI_JSON_DEPTH  32

static int
pki_json_name_cmp(const void *a, const void *b)
{
    return strcmp((*(const cJSON *const *) a)->string,
                  (*(const cJSON *const *) b)->string);
}


/* 1 when no object at or below item repeats a member name (a sorted
 * copy of each object's names: a hostile object of thousands of members
 * costs n log n, not n^2). */
static int
pki_json_names_unique(const cJSON *item, int depth)
{
    int            ok;
    size_t         n, i;
    const cJSON   *c;
    const cJSON  **v;

    if (depth > PKI_JSON_DEPTH) {
        return 0;
    }

    n = 0;
    for (c = item->child; c != NULL; c = c->next) {
        if (!pki_json_names_unique(c, depth + 1)) {
            return 0;
        }
        n++;
    }

    if (!cJSON_IsObject(item) || n < 2) {
        return 1;
    }

    v = malloc(n * sizeof(*v));
    if (v == NULL) {
        return 0;
    }

    i = 0;
    for (c = item->child; c != NULL; c = c->next) {
        if (c->string == NULL) {
            free(v);
            return 0;
        }
        v[i++] = c;
    }

    qsort(v, n, sizeof(*v), pki_json_name_cmp);

    ok = 1;
    for (i = 1; ok && i < n; i++) {
        ok = strcmp(v[i - 1]->string, v[i]->string) != 0;
    }

    free(v);

    return ok;
}


/* The length of the well-formed UTF-8 sequence at p (RFC 3629: shortest
 * form, no surrogate, at most U+10FFFF), 0 if there is none. */
static size_t
pki_utf8_seq(const uint8_t *p, size_t n)
{
    size_t   len, i;
    uint8_t  lo, hi;

    lo = 0x80;
    hi = 0xbf;

    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        len = 2;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        len = 3;
        lo = p[0] == 0xe0 ? 0xa0 : 0x80;     /* overlong */
        hi = p[0] == 0xed ? 0x9f : 0xbf;     /* surrogates */
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        len = 4;
        lo = p[0] == 0xf0 ? 0x90 : 0x80;     /* overlong */
        hi = p[0] == 0xf4 ? 0x8f : 0xbf;     /* over U+10FFFF */
    } else {
        return 0;
    }

    if (n < len || p[1] < lo || p[1] > hi) {
        return 0;
    }

    for (i = 2; i < len; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf) {
            return 0;
        }
    }

    return len;
}


int
pki_int_utf8_valid(const void *text, size_t len)
{
    size_t          i, n;
    const uint8_t  *p = text;

    for (i = 0; i < len; i++) {
        if (p[i] >= 0x80) {
            n = pki_utf8_seq(p + i, len - i);
            if (n == 0) {
                return 0;
            }
            i += n - 1;
        }
    }

    return 1;
}


static const char  pki_json_bad_bytes[] =
    "holds a NUL, a control character or bytes that are not UTF-8";


cJSON *
pki_int_json_strict(const void *text, size_t len)
{
    return pki_int_json_strict_max(text, len, 0, NULL);
}


cJSON *
pki_int_json_strict_max(const void *text, size_t len, size_t max_values,
    const char **why)
{
    int             in_str;
    size_t          i, values, depth;
    cJSON          *obj;
    const char     *end, *dummy;
    const uint8_t  *p = text;

    if (why == NULL) {
        why = &dummy;
    }

    *why = "is not JSON";

    if (text == NULL || len == 0) {
        return NULL;
    }

    /* no raw control character but white space; no escaped NUL (an
     * escaped backslash is skipped with what it escapes); UTF-8 only (RFC
     * 8259 8.1: cJSON copies any byte through, and another parser that
     * reads bad bytes as U+FFFD could see two member names as one).
     *
     * Outside strings, every value cJSON makes starts the text, follows a
     * '[' or '{' or follows a ',': their count bounds the tree it would
     * build (even from a prefix it later refuses), so a body of a million
     * tiny values is refused here, before a node is allocated. */
    in_str = 0;
    values = 1;
    depth = 0;

    for (i = 0; i < len; i++) {
        if (p[i] < 0x20 && p[i] != ' ' && p[i] != '\t' && p[i] != '\n'
            && p[i] != '\r')
        {
            *why = pki_json_bad_bytes;
            return NULL;
        }

        if (p[i] >= 0x80) {
            size_t  n = pki_utf8_seq(p + i, len - i);

            if (n == 0) {
                *why = pki_json_bad_bytes;
                return NULL;
            }
            i += n - 1;
            continue;
        }

        if (in_str) {
            if (p[i] == '"') {
                in_str = 0;

            } else if (p[i] == '\\' && i + 1 < len) {
                if (p[i + 1] == 'u' && i + 5 < len
                    && memcmp(p + i + 2, "0000", 4) == 0)
                {
                    *why = pki_json_bad_bytes;
                    return NULL;
                }
                i++;
            }
            continue;
        }

        switch (p[i]) {

        case '"':
            in_str = 1;
            break;

        case '[':
        case '{':
            if (++depth > PKI_JSON_DEPTH + 1) {
                *why = "nests too deep";
                return NULL;
            }
            values++;
            break;

        case ']':
        case '}':
            if (depth > 0) {
                depth--;
            }
            break;

        case ',':
            values++;
            break;

        default:
            break;
        }

        if (max_values && values > max_values) {
            *why = "holds too many values";
            return NULL;
        }
    }

    end = NULL;
    obj = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (obj == NULL) {
        return NULL;
    }

    while (end != NULL && (size_t) (end - (const char *) text) < len
           && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
    {
        end++;
    }

    if (end == NULL || (size_t) (end - (const char *) text) != len) {
        cJSON_Delete(obj);
        return NULL;
    }

    if (!pki_json_names_unique(obj, 0)) {
        *why = "repeats a member or nests too deep";
        cJSON_Delete(obj);
        return NULL;
    }

    *why = NULL;

    return obj;
}


static EVP_PKEY *
pki_jwk_from_json(const cJSON *obj, pki_result_t *res)
{
    cJSON       *kty, *crv;
    static const char  *priv[] = { "d", "p", "q", "dp", "dq", "qi", "oth",
                                   "k", NULL };
    int          i;

    if (!cJSON_IsObject(obj)) {
        pki_fail(res, PKI_MALFORMED, "JWK is not an object");
        return NULL;
    }

    for (i = 0; priv[i] != NULL; i++) {
        if (cJSON_GetObjectItemCaseSensitive(obj, priv[i]) != NULL) {
            pki_fail(res, PKI_MALFORMED, "JWK holds private key material");
            return NULL;
        }
    }

    kty = cJSON_GetObjectItemCaseSensitive(obj, "kty");
    if (!cJSON_IsString(kty) || kty->valuestring == NULL) {
        pki_fail(res, PKI_MALFORMED, "JWK has no \"kty\"");
        return NULL;
    }

    crv = cJSON_GetObjectItemCaseSensitive(obj, "crv");

    if (strcmp(kty->valuestring, "RSA") == 0) {
        return pki_jwk_rsa(obj, res);
    }

    if (!cJSON_IsString(crv) || crv->valuestring == NULL) {
        pki_fail(res, PKI_MALFORMED, "JWK has no \"crv\"");
        return NULL;
    }

    if (strcmp(kty->valuestring, "EC") == 0) {
        return pki_jwk_ec(obj, crv->valuestring, res);
    }

    if (strcmp(kty->valuestring, "OKP") == 0) {
        return pki_jwk_okp(obj, crv->valuestring, res);
    }

    pki_fail(res, PKI_UNSUPPORTED, "unsupported JWK key type");
    return NULL;
}


PKI_API EVP_PKEY *
pki_jwk_parse(const char *json, size_t len, pki_result_t *res)
{
    cJSON     *obj;
    EVP_PKEY  *pk;

    if (json == NULL || len == 0 || len > PKI_JWK_MAX) {
        pki_fail(res, PKI_MALFORMED, "bad JWK");
        return NULL;
    }

    /* strict: no repeated member, nothing after the object, no NUL */
    obj = pki_int_json_strict(json, len);
    if (obj == NULL) {
        pki_fail(res, PKI_MALFORMED, "JWK is not strict JSON");
        return NULL;
    }

    pk = pki_jwk_from_json(obj, res);
    cJSON_Delete(obj);

    return pk;
}


/*
 * Parsed account keys, per process: the account record holds its key as
 * JWK text, and every kid-signed request used to rebuild the EVP_PKEY from
 * it (OpenSSL 3's fromdata plus the public check: about as costly as the
 * signature check).  The cache maps the exact text to the key it parses
 * to, so it changes no answer: a keyChange stores another text, which is
 * another entry; the account itself (status, key) is still read from Redis
 * on every request.  Bounded, least recently used out.
 */

#define PKI_JWK_CACHE  64

#define PKI_JWK_P256_PT  65            /* an uncompressed P-256 point */

static struct {
    char               *text;
    size_t              len;
    EVP_PKEY           *pk;
    unsigned long long  used;
    /* a P-256 key's point, for pki_jws_verify(): asking the provider for
     * the group and the point cost about 2 % of a request */
    size_t              ptlen;          /* 0: not a P-256 key */
    unsigned char       pt[PKI_JWK_P256_PT];
}                       pki_jwk_cache[PKI_JWK_CACHE];
static unsigned long long  pki_jwk_clock;
static pthread_mutex_t  pki_jwk_lock = PTHREAD_MUTEX_INITIALIZER;


static EVP_PKEY *
pki_jwk_cache_get(const char *json, size_t len)
{
    int        i;
    EVP_PKEY  *pk = NULL;

    pthread_mutex_lock(&pki_jwk_lock);

    for (i = 0; i < PKI_JWK_CACHE; i++) {
        if (pki_jwk_cache[i].text != NULL && pki_jwk_cache[i].len == len
            && memcmp(pki_jwk_cache[i].text, json, len) == 0)
        {
            if (EVP_PKEY_up_ref(pki_jwk_cache[i].pk)) {
                pk = pki_jwk_cache[i].pk;
                pki_jwk_cache[i].used = ++pki_jwk_clock;
            }
            break;
        }
    }

    pthread_mutex_unlock(&pki_jwk_lock);

    return pk;
}


static void
pki_jwk_cache_put(const char *json, size_t len, EVP_PKEY *pk)
{
    int            i, victim;
    char          *text, group[32];
    size_t         ptlen;
    EVP_PKEY      *old;
    unsigned char  pt[PKI_JWK_P256_PT];

    text = malloc(len);
    if (text == NULL) {
        return;
    }
    memcpy(text, json, len);

    ptlen = 0;
    if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC
        && EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME,
                                          group, sizeof(group), NULL)
        && strcmp(group, "prime256v1") == 0
        && EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, pt,
                                           sizeof(pt), &ptlen) != 1)
    {
        ptlen = 0;
    }
    ERR_clear_error();

    if (!EVP_PKEY_up_ref(pk)) {
        free(text);
        return;
    }

    pthread_mutex_lock(&pki_jwk_lock);

    victim = 0;
    for (i = 0; i < PKI_JWK_CACHE; i++) {
        if (pki_jwk_cache[i].text != NULL && pki_jwk_cache[i].len == len
            && memcmp(pki_jwk_cache[i].text, json, len) == 0)
        {
            /* another thread was first */
            pthread_mutex_unlock(&pki_jwk_lock);
            EVP_PKEY_free(pk);
            free(text);
            return;
        }
        if (pki_jwk_cache[i].used < pki_jwk_cache[victim].used) {
            victim = i;
        }
    }

    old = pki_jwk_cache[victim].pk;
    free(pki_jwk_cache[victim].text);
    pki_jwk_cache[victim].text = text;
    pki_jwk_cache[victim].len = len;
    pki_jwk_cache[victim].pk = pk;
    pki_jwk_cache[victim].used = ++pki_jwk_clock;
    pki_jwk_cache[victim].ptlen = ptlen;
    memcpy(pki_jwk_cache[victim].pt, pt, ptlen);

    pthread_mutex_unlock(&pki_jwk_lock);

    EVP_PKEY_free(old);
}


/* 1 with pk's point in pt (*len bytes) when pk is a cached P-256 key:
 * the caller holds a reference, so the pointer names that key alone. */
static int
pki_jwk_cache_p256(const EVP_PKEY *pk, unsigned char *pt, size_t *len)
{
    int  i, found;

    found = 0;

    pthread_mutex_lock(&pki_jwk_lock);

    for (i = 0; i < PKI_JWK_CACHE; i++) {
        if (pki_jwk_cache[i].pk == pk && pki_jwk_cache[i].text != NULL) {
            if (pki_jwk_cache[i].ptlen > 0) {
                memcpy(pt, pki_jwk_cache[i].pt, pki_jwk_cache[i].ptlen);
                *len = pki_jwk_cache[i].ptlen;
                found = 1;
            }
            break;
        }
    }

    pthread_mutex_unlock(&pki_jwk_lock);

    return found;
}


EVP_PKEY *
pki_int_jwk_cached(const char *json, size_t len, pki_result_t *res)
{
    EVP_PKEY  *pk;

    if (json == NULL || len == 0 || len > PKI_JWK_MAX) {
        pki_fail(res, PKI_MALFORMED, "bad JWK");
        return NULL;
    }

    pk = pki_jwk_cache_get(json, len);
    if (pk != NULL) {
        return pk;
    }

    pk = pki_jwk_parse(json, len, res);
    if (pk != NULL) {
        pki_jwk_cache_put(json, len, pk);
    }

    return pk;
}


void
pki_int_jwk_cache_clear(void)
{
    int  i;

    pthread_mutex_lock(&pki_jwk_lock);

    for (i = 0; i < PKI_JWK_CACHE; i++) {
        EVP_PKEY_free(pki_jwk_cache[i].pk);
        free(pki_jwk_cache[i].text);
        pki_jwk_cache[i].pk = NULL;
        pki_jwk_cache[i].text = NULL;
        pki_jwk_cache[i].len = 0;
        pki_jwk_cache[i].used = 0;
    }

    pthread_mutex_unlock(&pki_jwk_lock);
}


static char *
pki_bn_b64url(const BIGNUM *bn, size_t pad)
{
    int             n;
    char           *out;
    size_t          len;
    unsigned char  *buf;

    n = BN_num_bytes(bn);
    len = (size_t) n > pad ? (size_t) n : pad;
    if (len == 0) {
        len = 1;
    }

    buf = calloc(1, len);
    if (buf == NULL) {
        return NULL;
    }

    if (BN_bn2binpad(bn, buf, (int) len) < 0) {
        free(buf);
        return NULL;
    }

    out = pki_b64url_encode(buf, len);
    free(buf);

    return out;
}


/* x and y of an EC key on the NIST curve crv from its encoded point:
 * 0x04 || x || y (flen bytes each), or compressed, then decompressed on
 * the curve (rare: the cost of a group is paid only then). */
static int
pki_ec_point_xy(EVP_PKEY *pk, const char *crv, size_t flen, BIGNUM **x,
    BIGNUM **y)
{
    size_t          len;
    EC_POINT       *p;
    EC_GROUP       *g;
    unsigned char  *pt;

    pt = NULL;
    len = EVP_PKEY_get1_encoded_public_key(pk, &pt);

    if (len == 1 + 2 * flen && pt[0] == 0x04) {
        *x = BN_bin2bn(pt + 1, (int) flen, NULL);
        *y = BN_bin2bn(pt + 1 + flen, (int) flen, NULL);

    } else if (len == 1 + flen && (pt[0] == 0x02 || pt[0] == 0x03)) {
        g = EC_GROUP_new_by_curve_name(EC_curve_nist2nid(crv));
        p = g != NULL ? EC_POINT_new(g) : NULL;
        *x = BN_new();
        *y = BN_new();

        if (p == NULL || *x == NULL || *y == NULL
            || !EC_POINT_oct2point(g, p, pt, len, NULL)
            || !EC_POINT_get_affine_coordinates(g, p, *x, *y, NULL))
        {
            BN_free(*x);
            BN_free(*y);
            *x = NULL;
            *y = NULL;
        }

        EC_POINT_free(p);
        EC_GROUP_free(g);
    }

    OPENSSL_free(pt);

    return *x != NULL && *y != NULL;
}


PKI_API char *
pki_jwk_json(EVP_PKEY *pk)
{
    int             id;
    char           *a = NULL, *b = NULL, *out = NULL, crv[32];
    size_t          len, flen;
    BIGNUM         *x = NULL, *y = NULL, *n = NULL, *e = NULL;
    unsigned char   raw[64];

    if (pk == NULL) {
        return NULL;
    }

    id = EVP_PKEY_get_base_id(pk);

    switch (id) {

    case EVP_PKEY_EC:
        if (!EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME,
                                            crv, sizeof(crv), NULL))
        {
            goto failed;
        }

        if (strcmp(crv, "prime256v1") == 0 || strcmp(crv, "P-256") == 0) {
            strcpy(crv, "P-256");
            flen = 32;
        } else if (strcmp(crv, "secp384r1") == 0
                   || strcmp(crv, "P-384") == 0)
        {
            strcpy(crv, "P-384");
            flen = 48;
        } else if (strcmp(crv, "secp521r1") == 0
                   || strcmp(crv, "P-521") == 0)
        {
            strcpy(crv, "P-521");
            flen = 66;
        } else {
            goto failed;
        }

        if (!EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_X, &x)
            || !EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_Y, &y))
        {
            /* a legacy EC_KEY (the CSR parser's fast path builds one) has
             * no x and y parameters: they are in its uncompressed point */
            BN_free(x);
            x = NULL;
            if (!pki_ec_point_xy(pk, crv, flen, &x, &y)) {
                goto failed;
            }
        }

        a = pki_bn_b64url(x, flen);
        b = pki_bn_b64url(y, flen);
        if (a == NULL || b == NULL) {
            goto failed;
        }

        len = strlen(a) + strlen(b) + 64;
        out = malloc(len);
        if (out != NULL) {
            snprintf(out, len, "{\"crv\":\"%s\",\"kty\":\"EC\",\"x\":\"%s\","
                     "\"y\":\"%s\"}", crv, a, b);
        }
        break;

    case EVP_PKEY_RSA:
        if (!EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &n)
            || !EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &e))
        {
            goto failed;
        }

        a = pki_bn_b64url(e, 0);
        b = pki_bn_b64url(n, 0);
        if (a == NULL || b == NULL) {
            goto failed;
        }

        len = strlen(a) + strlen(b) + 64;
        out = malloc(len);
        if (out != NULL) {
            snprintf(out, len, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}",
                     a, b);
        }
        break;

    case EVP_PKEY_ED25519:
    case EVP_PKEY_ED448:
        len = sizeof(raw);
        if (!EVP_PKEY_get_raw_public_key(pk, raw, &len)) {
            goto failed;
        }

        a = pki_b64url_encode(raw, len);
        if (a == NULL) {
            goto failed;
        }

        len = strlen(a) + 64;
        out = malloc(len);
        if (out != NULL) {
            snprintf(out, len, "{\"crv\":\"%s\",\"kty\":\"OKP\",\"x\":\"%s\"}",
                     id == EVP_PKEY_ED25519 ? "Ed25519" : "Ed448", a);
        }
        break;

    default:
        break;
    }

failed:

    free(a);
    free(b);
    BN_free(x);
    BN_free(y);
    BN_free(n);
    BN_free(e);

    return out;
}


static int
pki_thumb_of(const char *json, char out[PKI_JWK_THUMB_LEN])
{
    char           *b;
    unsigned char   md[32];

    if (json == NULL
        || EVP_Digest(json, strlen(json), md, NULL, EVP_sha256(), NULL) != 1)
    {
        return 0;
    }

    b = pki_b64url_encode(md, sizeof(md));
    if (b == NULL) {
        return 0;
    }

    snprintf(out, PKI_JWK_THUMB_LEN, "%s", b);
    free(b);

    return 1;
}


PKI_API int
pki_jwk_thumbprint(EVP_PKEY *pk, char out[PKI_JWK_THUMB_LEN])
{
    int    ok;
    char  *json;

    json = pki_jwk_json(pk);
    ok = pki_thumb_of(json, out);
    free(json);

    return ok;
}


/* ---- JWS ------------------------------------------------------------------ */

PKI_API void
pki_jws_clear(pki_jws_t *jws)
{
    if (jws == NULL) {
        return;
    }

    free(jws->kid);
    free(jws->nonce);
    free(jws->url);
    EVP_PKEY_free(jws->jwk);
    free(jws->jwk_json);
    free(jws->payload);
    free(jws->signing_input);
    free(jws->sig);

    memset(jws, 0, sizeof(pki_jws_t));
}


static char *
pki_json_strdup(const cJSON *obj, const char *name, int *bad)
{
    cJSON  *item;
    char   *s;

    item = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (item == NULL) {
        return NULL;
    }

    if (!cJSON_IsString(item) || item->valuestring == NULL
        || strlen(item->valuestring) > 2048)
    {
        *bad = 1;
        return NULL;
    }

    s = strdup(item->valuestring);
    if (s == NULL) {
        *bad = 1;
    }

    return s;
}


static pki_status_t
pki_jws_malformed(pki_jws_t *jws, pki_result_t *res, const char *problem,
    const char *detail)
{
    jws->problem = problem;
    return pki_fail(res, PKI_MALFORMED, "%s", detail);
}


PKI_API pki_status_t
pki_jws_parse(const unsigned char *body, size_t len, pki_jws_t *jws,
    pki_result_t *res)
{
    int              bad;
    cJSON           *root = NULL, *hdr = NULL, *item, *prot, *pay, *sig;
    size_t           hlen, plen, n;
    const char      *ps, *pp;
    unsigned char   *hbuf = NULL;
    pki_status_t     rc;

    memset(jws, 0, sizeof(pki_jws_t));

    if (body == NULL || len == 0) {
        return pki_jws_malformed(jws, res, "malformed", "empty request body");
    }

    if (len > PKI_JWS_MAX || memchr(body, '\0', len) != NULL) {
        return pki_jws_malformed(jws, res, "malformed", "bad request body");
    }

    root = pki_int_json_strict(body, len);
    if (!cJSON_IsObject(root)) {
        rc = pki_jws_malformed(jws, res, "malformed",
                               "request body is not a JSON object");
        goto done;
    }

    /* flattened serialization only: protected, payload, signature and
     * nothing else (no "header", no "signatures") */

    for (item = root->child; item != NULL; item = item->next) {
        if (item->string == NULL
            || (strcmp(item->string, "protected") != 0
                && strcmp(item->string, "payload") != 0
                && strcmp(item->string, "signature") != 0))
        {
            rc = pki_jws_malformed(jws, res, "malformed", "JWS must be "
                                   "flattened JSON with a protected header "
                                   "only");
            goto done;
        }
    }

    prot = cJSON_GetObjectItemCaseSensitive(root, "protected");
    pay = cJSON_GetObjectItemCaseSensitive(root, "payload");
    sig = cJSON_GetObjectItemCaseSensitive(root, "signature");

    if (!cJSON_IsString(prot) || !cJSON_IsString(pay) || !cJSON_IsString(sig)
        || prot->valuestring == NULL || pay->valuestring == NULL
        || sig->valuestring == NULL)
    {
        rc = pki_jws_malformed(jws, res, "malformed", "JWS needs string "
                               "\"protected\", \"payload\" and "
                               "\"signature\"");
        goto done;
    }

    ps = prot->valuestring;
    pp = pay->valuestring;
    hlen = strlen(ps);
    plen = strlen(pp);

    if (!pki_b64url_decode(ps, hlen, &hbuf, &n)) {
        rc = pki_jws_malformed(jws, res, "malformed", "bad base64url in "
                               "\"protected\"");
        goto done;
    }

    hdr = pki_int_json_strict(hbuf, n);
    if (!cJSON_IsObject(hdr)) {
        rc = pki_jws_malformed(jws, res, "malformed", "protected header is "
                               "not a JSON object");
        goto done;
    }

    if (!pki_b64url_decode(pp, plen, &jws->payload, &jws->payload_len)) {
        rc = pki_jws_malformed(jws, res, "malformed", "bad base64url in "
                               "\"payload\"");
        goto done;
    }


    jws->signing_input = malloc(hlen + plen + 2);
    if (jws->signing_input == NULL) {
        rc = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto done;
    }

    memcpy(jws->signing_input, ps, hlen);
    jws->signing_input[hlen] = '.';
    memcpy(jws->signing_input + hlen + 1, pp, plen);
    jws->signing_input[hlen + plen + 1] = '\0';

    /* header members */

    if (cJSON_GetObjectItemCaseSensitive(hdr, "crit") != NULL) {
        rc = pki_jws_malformed(jws, res, "malformed", "\"crit\" is not "
                               "supported");
        goto done;
    }

    if (cJSON_GetObjectItemCaseSensitive(hdr, "b64") != NULL) {
        rc = pki_jws_malformed(jws, res, "malformed", "\"b64\" is not "
                               "supported");
        goto done;
    }

    item = cJSON_GetObjectItemCaseSensitive(hdr, "alg");
    if (!cJSON_IsString(item) || item->valuestring == NULL) {
        rc = pki_jws_malformed(jws, res, "malformed", "protected header has "
                               "no \"alg\"");
        goto done;
    }

    if (strcmp(item->valuestring, "ES256") != 0
        && strcmp(item->valuestring, "ES384") != 0
        && strcmp(item->valuestring, "ES512") != 0
        && strcmp(item->valuestring, "RS256") != 0
        && strcmp(item->valuestring, "PS256") != 0
        && strcmp(item->valuestring, "EdDSA") != 0)
    {
        rc = pki_jws_malformed(jws, res, "badSignatureAlgorithm",
                               "unsupported JWS algorithm");
        goto done;
    }

    snprintf(jws->alg, sizeof(jws->alg), "%s", item->valuestring);

    if (!pki_b64url_decode(sig->valuestring, strlen(sig->valuestring),
                           &jws->sig, &jws->sig_len)
        || jws->sig_len == 0)
    {
        rc = pki_jws_malformed(jws, res, "malformed", "bad base64url in "
                               "\"signature\"");
        goto done;
    }

    bad = 0;
    jws->kid = pki_json_strdup(hdr, "kid", &bad);
    jws->nonce = pki_json_strdup(hdr, "nonce", &bad);
    jws->url = pki_json_strdup(hdr, "url", &bad);

    if (bad) {
        rc = pki_jws_malformed(jws, res, "malformed", "\"kid\", \"nonce\" "
                               "and \"url\" must be strings");
        goto done;
    }

    if (jws->url == NULL) {
        rc = pki_jws_malformed(jws, res, "malformed", "protected header has "
                               "no \"url\"");
        goto done;
    }

    item = cJSON_GetObjectItemCaseSensitive(hdr, "jwk");

    if (item != NULL && jws->kid != NULL) {
        rc = pki_jws_malformed(jws, res, "malformed", "\"jwk\" and \"kid\" "
                               "are mutually exclusive");
        goto done;
    }

    if (item != NULL) {
        jws->jwk = pki_jwk_from_json(item, res);
        if (jws->jwk == NULL) {
            /* RFC 8555 6.7: a key of a kind this server does not take */
            jws->problem = res != NULL && res->status == PKI_UNSUPPORTED
                           ? "badPublicKey" : "malformed";
            rc = res != NULL ? res->status : PKI_MALFORMED;
            goto done;
        }

        jws->jwk_json = pki_jwk_json(jws->jwk);
        if (!pki_thumb_of(jws->jwk_json, jws->thumb)) {
            rc = pki_fail(res, PKI_INTERNAL, "cannot encode the JWK");
            goto done;
        }
    }

    rc = PKI_OK;

done:

    cJSON_Delete(root);
    cJSON_Delete(hdr);
    free(hbuf);

    return rc;
}


/*
 * ES256 for hot account keys.  On a busy server one account (the
 * cert-manager or Traefik of a whole cluster) signs most requests, and
 * ECDSA verification with a table precomputed for that account's point
 * costs about 40 us here against 70 us for the generic verifier.
 *
 * The table is found by the key's exact encoded point, never by an
 * EVP_PKEY pointer (a freed key's address can come back as another key).
 * A point earns one after PKI_JWS_HOT_AFTER signatures that verified on the
 * generic path; tables are built at most once a second per process (one
 * costs about 30 ms of CPU, so keys made up to get tables cannot buy much
 * CPU), and at most PKI_JWS_HOT_TABLES are kept (about 150 KB each), the
 * least recently used going first.  A new table must accept the signature
 * the generic verifier has just accepted and refuse it over another digest,
 * or the point stays on the generic path.  Entries in use are freed by their
 * last user.
 */

#define PKI_JWS_HOT         32          /* points counted */
#define PKI_JWS_HOT_TABLES  8           /* of which with a table */
#define PKI_JWS_HOT_AFTER   64
#define PKI_JWS_PT_MAX      65          /* uncompressed P-256 point */

typedef struct {
    unsigned char       pt[PKI_JWS_PT_MAX];
    size_t              len;
    EC_GROUP           *gq;             /* NULL until built */
    unsigned            seen;
    unsigned            refs;           /* verifications using gq now */
    int                 building;
    int                 gone;           /* out of the slots; last user frees */
    unsigned long long  used;
    time_t              claim;          /* building: pki_jws_hot_last set */
    time_t              prev;           /* ... and what it was before */
} pki_jws_hot_t;

static pki_jws_hot_t      *pki_jws_hot[PKI_JWS_HOT];
static unsigned long long  pki_jws_hot_clock;
static time_t              pki_jws_hot_last;    /* last build started */
static pki_jws_hot_stats_t pki_jws_hot_st;
static pthread_mutex_t     pki_jws_hot_lock = PTHREAD_MUTEX_INITIALIZER;


static void
pki_jws_hot_free(pki_jws_hot_t *h)
{
    if (h != NULL) {
        EC_GROUP_free(h->gq);
        free(h);
    }
}


/* Takes h out of its slot; freed now if nobody uses it.  Lock held. */
static void
pki_jws_hot_drop(int i)
{
    pki_jws_hot_t  *h;

    h = pki_jws_hot[i];
    pki_jws_hot[i] = NULL;

    if (h->refs > 0) {
        h->gone = 1;
    } else {
        pki_jws_hot_free(h);
    }
}


/*
 * Looks the point up.  Returns the entry with a reference when its table
 * is ready (the fast path), or when *build says that this caller is to
 * build the table after a good generic verification (pki_jws_hot_build()
 * takes that reference back); NULL otherwise.
 */
static pki_jws_hot_t *
pki_jws_hot_get(const unsigned char *pt, size_t len, int *build)
{
    int             i, slot, tables;
    time_t          now;
    pki_jws_hot_t  *h;

    *build = 0;
    h = NULL;
    slot = -1;

    pthread_mutex_lock(&pki_jws_hot_lock);

    for (i = 0; i < PKI_JWS_HOT; i++) {
        if (pki_jws_hot[i] != NULL && pki_jws_hot[i]->len == len
            && memcmp(pki_jws_hot[i]->pt, pt, len) == 0)
        {
            h = pki_jws_hot[i];
            break;
        }
    }

    if (h == NULL) {
        /* a new point takes a free slot, or the least recently used
         * one without a table */
        for (i = 0; i < PKI_JWS_HOT; i++) {
            if (pki_jws_hot[i] == NULL) {
                slot = i;
                break;
            }
            if (pki_jws_hot[i]->gq == NULL && !pki_jws_hot[i]->building
                && (slot < 0
                    || pki_jws_hot[i]->used < pki_jws_hot[slot]->used))
            {
                slot = i;
            }
        }

        h = slot >= 0 ? calloc(1, sizeof(pki_jws_hot_t)) : NULL;

        if (h != NULL) {
            if (pki_jws_hot[slot] != NULL) {
                pki_jws_hot_drop(slot);
            }
            memcpy(h->pt, pt, len);
            h->len = len;
            h->used = ++pki_jws_hot_clock;
            pki_jws_hot[slot] = h;
        }

        pthread_mutex_unlock(&pki_jws_hot_lock);
        return NULL;
    }

    h->used = ++pki_jws_hot_clock;

    if (h->gq != NULL) {
        h->refs++;
        pki_jws_hot_st.fast++;
        pthread_mutex_unlock(&pki_jws_hot_lock);
        return h;
    }

    now = time(NULL);

    if (!h->building && ++h->seen >= PKI_JWS_HOT_AFTER
        && now != pki_jws_hot_last)
    {
        /* room for one more table: the least recently used goes */
        tables = 0;
        slot = -1;
        for (i = 0; i < PKI_JWS_HOT; i++) {
            if (pki_jws_hot[i] != NULL
                && (pki_jws_hot[i]->gq != NULL || pki_jws_hot[i]->building))
            {
                tables++;
                if (pki_jws_hot[i]->gq != NULL
                    && (slot < 0
                        || pki_jws_hot[i]->used < pki_jws_hot[slot]->used))
                {
                    slot = i;
                }
            }
        }

        if (tables < PKI_JWS_HOT_TABLES || slot >= 0) {
            if (tables >= PKI_JWS_HOT_TABLES) {
                pki_jws_hot_drop(slot);
            }
            h->building = 1;
            h->refs++;
            h->claim = now;
            h->prev = pki_jws_hot_last;
            pki_jws_hot_last = now;
            *build = 1;
            pthread_mutex_unlock(&pki_jws_hot_lock);
            return h;
        }
    }

    pthread_mutex_unlock(&pki_jws_hot_lock);

    return NULL;
}


static void
pki_jws_hot_put(pki_jws_hot_t *h)
{
    int  last;

    pthread_mutex_lock(&pki_jws_hot_lock);
    last = --h->refs == 0 && h->gone;
    pthread_mutex_unlock(&pki_jws_hot_lock);

    if (last) {
        pki_jws_hot_free(h);
    }
}


/* The builder's part (h from pki_jws_hot_get() with *build set): der has
 * just verified over dig on the generic path with the key of h's point.
 * Takes the builder's reference back. */
static void
pki_jws_hot_build(pki_jws_hot_t *h, const unsigned char *der, size_t derlen,
    const unsigned char *dig, size_t dlen)
{
    int        last;
    EC_GROUP  *gq;

    /* no good signature (it did not verify, or no memory): no table */
    gq = der != NULL ? pki_int_p256_table(h->pt, h->len, der, derlen, dig,
                                          dlen)
                     : NULL;

    pthread_mutex_lock(&pki_jws_hot_lock);

    h->building = 0;

    if (gq != NULL) {
        h->gq = gq;
        pki_jws_hot_st.built++;

    } else if (der != NULL) {
        /* no table (it disagreed with the generic verifier, or could not
         * be built): count again */
        h->seen = 0;
        pki_jws_hot_st.refused++;

    } else {
        /* the signature did not verify: the second's build is not used
         * up (anyone may send bad signatures with a key of theirs, and
         * then no account key got a table), and the key counts again */
        h->seen = 0;
        if (pki_jws_hot_last == h->claim) {
            pki_jws_hot_last = h->prev;
        }
    }

    last = --h->refs == 0 && h->gone;

    pthread_mutex_unlock(&pki_jws_hot_lock);

    if (last) {
        pki_jws_hot_free(h);
    }
}


PKI_API void
pki_jws_hot_stats(pki_jws_hot_stats_t *st)
{
    pthread_mutex_lock(&pki_jws_hot_lock);
    *st = pki_jws_hot_st;
    pthread_mutex_unlock(&pki_jws_hot_lock);
}


PKI_API void
pki_jws_hot_clear(void)
{
    int  i;

    pthread_mutex_lock(&pki_jws_hot_lock);

    for (i = 0; i < PKI_JWS_HOT; i++) {
        if (pki_jws_hot[i] != NULL) {
            pki_jws_hot_drop(i);
        }
    }

    pki_jws_hot_last = 0;
    memset(&pki_jws_hot_st, 0, sizeof(pki_jws_hot_st));

    pthread_mutex_unlock(&pki_jws_hot_lock);
}


/* raw r || s -> DER ECDSA-Sig-Value */
static unsigned char *
pki_ecdsa_der(const unsigned char *sig, size_t len, size_t *outlen)
{
    int             n;
    BIGNUM         *r, *s;
    ECDSA_SIG      *es;
    unsigned char  *der = NULL;

    es = ECDSA_SIG_new();
    r = BN_bin2bn(sig, (int) (len / 2), NULL);
    s = BN_bin2bn(sig + len / 2, (int) (len / 2), NULL);

    if (es == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(es, r, s)) {
        ECDSA_SIG_free(es);
        BN_free(r);
        BN_free(s);
        return NULL;
    }

    n = i2d_ECDSA_SIG(es, &der);
    ECDSA_SIG_free(es);

    if (n <= 0) {
        return NULL;
    }

    *outlen = (size_t) n;
    return der;
}


PKI_API pki_status_t
pki_jws_verify(pki_jws_t *jws, EVP_PKEY *key, pki_result_t *res)
{
    int              id, ok, bits, build;
    char             group[32];
    size_t           siglen, flen, ptlen;
    unsigned int     dlen;
    pki_jws_hot_t   *hot;
    unsigned char    pt[PKI_JWS_PT_MAX], dig[EVP_MAX_MD_SIZE];
    EVP_MD_CTX      *mctx;
    EVP_PKEY_CTX    *pctx;
    const EVP_MD    *md;
    unsigned char   *der = NULL;
    const unsigned char *sig;

    if (jws == NULL || key == NULL || jws->signing_input == NULL) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    id = EVP_PKEY_get_base_id(key);
    md = NULL;
    flen = 0;
    sig = jws->sig;
    siglen = jws->sig_len;

    ptlen = 0;

    if (strncmp(jws->alg, "ES", 2) == 0) {
        /* an account's key (cached) has its group and point at hand */
        if (strcmp(jws->alg, "ES256") == 0 && id == EVP_PKEY_EC
            && pki_jwk_cache_p256(key, pt, &ptlen))
        {
            strcpy(group, "prime256v1");

        } else if (id != EVP_PKEY_EC
                   || !EVP_PKEY_get_utf8_string_param(key,
                                                  OSSL_PKEY_PARAM_GROUP_NAME,
                                                  group, sizeof(group), NULL))
        {
            goto badalg;
        }

        if (strcmp(jws->alg, "ES256") == 0
            && strcmp(group, "prime256v1") == 0)
        {
            md = EVP_sha256();
            flen = 32;
        } else if (strcmp(jws->alg, "ES384") == 0
                   && strcmp(group, "secp384r1") == 0)
        {
            md = EVP_sha384();
            flen = 48;
        } else if (strcmp(jws->alg, "ES512") == 0
                   && strcmp(group, "secp521r1") == 0)
        {
            md = EVP_sha512();
            flen = 66;
        } else {
            goto badalg;
        }

        if (jws->sig_len != 2 * flen) {
            jws->problem = "malformed";
            return pki_fail(res, PKI_BAD_SIGNATURE, "JWS signature has the "
                            "wrong length");
        }

    } else if (strcmp(jws->alg, "RS256") == 0
               || strcmp(jws->alg, "PS256") == 0)
    {
        bits = EVP_PKEY_get_bits(key);
        if (id != EVP_PKEY_RSA || bits < PKI_RSA_MIN_BITS) {
            goto badalg;
        }
        md = EVP_sha256();

        /* RFC 8017 8.1.2 and 8.2.2: exactly the modulus' length (the PSS
         * verifier takes one short of a leading zero: a second encoding
         * of one signature) */
        if (jws->sig_len != (size_t) EVP_PKEY_get_size(key)) {
            jws->problem = "malformed";
            return pki_fail(res, PKI_BAD_SIGNATURE, "JWS signature has the "
                            "wrong length");
        }

    } else if (strcmp(jws->alg, "EdDSA") == 0) {
        if (id != EVP_PKEY_ED25519 && id != EVP_PKEY_ED448) {
            goto badalg;
        }

    } else {
        goto badalg;
    }

    hot = NULL;
    build = 0;

    if (flen == 32) {
        /* ES256: a hot key's table (see pki_jws_hot_get); the digest is
         * made here only for the table (to use it, or to build it) */
        if (ptlen > 0
            || EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY,
                                               pt, sizeof(pt), &ptlen) == 1)
        {
            hot = pki_jws_hot_get(pt, ptlen, &build);
        }

        if (hot != NULL
            && EVP_Digest(jws->signing_input, strlen(jws->signing_input),
                          dig, &dlen, md, NULL) != 1)
        {
            if (build) {
                pki_jws_hot_build(hot, NULL, 0, NULL, 0);
            } else {
                pki_jws_hot_put(hot);
            }
            hot = NULL;
            build = 0;
        }
        ERR_clear_error();

        if (hot != NULL && !build) {
            ok = pki_int_p256_verify_raw(hot->gq, jws->sig, jws->sig_len,
                                         dig, dlen) == 1;
            pki_jws_hot_put(hot);
            goto verified;
        }
    }

    if (flen != 0) {
        /* the generic verifier (and the table's check) take DER */
        der = pki_ecdsa_der(jws->sig, jws->sig_len, &siglen);
        if (der == NULL) {
            if (build) {
                pki_jws_hot_build(hot, NULL, 0, NULL, 0);
            }
            return pki_fail(res, PKI_INTERNAL, "out of memory");
        }
        sig = der;
    }

    mctx = EVP_MD_CTX_new();
    if (mctx == NULL) {
        if (build) {
            pki_jws_hot_build(hot, NULL, 0, NULL, 0);
        }
        OPENSSL_free(der);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    pctx = NULL;
    ok = EVP_DigestVerifyInit(mctx, &pctx, md, NULL, key) == 1;

    if (ok && strcmp(jws->alg, "PS256") == 0) {
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0
             && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) > 0
             && EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) > 0;
    }

    if (ok) {
        ok = EVP_DigestVerify(mctx, sig, siglen,
                              (const unsigned char *) jws->signing_input,
                              strlen(jws->signing_input)) == 1;
    }

    EVP_MD_CTX_free(mctx);
    ERR_clear_error();

    if (build) {
        /* the table is checked on this signature, so only a good one */
        pki_jws_hot_build(hot, ok ? sig : NULL, ok ? siglen : 0, dig, dlen);
    }

    OPENSSL_free(der);

verified:

    if (!ok) {
        jws->problem = "malformed";
        return pki_fail(res, PKI_BAD_SIGNATURE, "JWS signature does not "
                        "verify");
    }

    return PKI_OK;

badalg:

    jws->problem = "badSignatureAlgorithm";
    return pki_fail(res, PKI_MALFORMED, "JWS algorithm %s does not fit the "
                    "key", jws->alg);
}
