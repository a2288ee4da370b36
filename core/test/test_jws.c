/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * JWS/JWK (core/jws.c): base64url, RFC 7638 thumbprints (the RFC's own
 * example), signatures of every algorithm made here with OpenSSL and
 * verified, and a table of hostile inputs, each with the problem type it
 * must give.
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/rsa.h>

#include "pki.h"
#include "test/unit.h"


/* RFC 7638 section 3.1 */
static const char  rfc7638_jwk[] =
    "{\"kty\":\"RSA\",\"n\":\"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78"
    "LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMs"
    "tn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Qvzq"
    "Y368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLy"
    "rdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-cs"
    "FCur-kEgU8awapJzKnqDKgw\",\"e\":\"AQAB\",\"alg\":\"RS256\","
    "\"kid\":\"2011-04-29\"}";
static const char  rfc7638_thumb[] =
    "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";


static char *
b64u(const void *p, size_t n)
{
    return pki_b64url_encode(p, n);
}


/* A flattened JWS signed by pk.  hdr_extra is spliced into the protected
 * header ("" for none); sig_override replaces the signature (base64url). */
static char *
make_jws(EVP_PKEY *pk, const char *alg, const char *hdr_extra,
    const char *payload, const char *sig_override, int with_jwk)
{
    int              n;
    char             hdr[4096], *ph, *pp, *ps, *jwk, *input, *out;
    size_t           siglen;
    EVP_MD_CTX      *mctx;
    EVP_PKEY_CTX    *pctx;
    const EVP_MD    *md;
    unsigned char    sig[1024], raw[132];

    jwk = with_jwk ? pki_jwk_json(pk) : NULL;
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"nonce\":\"n1\","
             "\"url\":\"https://x/acme/new-order\"%s%s%s}", alg,
             jwk ? ",\"jwk\":" : "", jwk ? jwk : "", hdr_extra);
    free(jwk);

    ph = b64u(hdr, strlen(hdr));
    pp = b64u(payload, strlen(payload));
    n = asprintf(&input, "%s.%s", ph, pp);
    (void) n;

    ps = NULL;
    if (sig_override != NULL) {
        ps = strdup(sig_override);

    } else {
        md = strcmp(alg, "ES384") == 0 ? EVP_sha384()
             : strcmp(alg, "ES512") == 0 ? EVP_sha512()
             : strcmp(alg, "EdDSA") == 0 ? NULL : EVP_sha256();

        mctx = EVP_MD_CTX_new();
        pctx = NULL;
        EVP_DigestSignInit(mctx, &pctx, md, NULL, pk);
        if (strcmp(alg, "PS256") == 0) {
            EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32);
        }
        siglen = sizeof(sig);
        EVP_DigestSign(mctx, sig, &siglen, (unsigned char *) input,
                       strlen(input));
        EVP_MD_CTX_free(mctx);

        if (alg[0] == 'E' && alg[1] == 'S') {
            /* DER -> r || s */
            const unsigned char  *p = sig;
            ECDSA_SIG            *es = d2i_ECDSA_SIG(NULL, &p, (long) siglen);
            int                   flen = strcmp(alg, "ES256") == 0 ? 32
                                         : strcmp(alg, "ES384") == 0 ? 48
                                         : 66;

            BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, flen);
            BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + flen, flen);
            ECDSA_SIG_free(es);
            ps = b64u(raw, 2 * flen);

        } else {
            ps = b64u(sig, siglen);
        }
    }

    n = asprintf(&out, "{\"protected\":\"%s\",\"payload\":\"%s\","
                 "\"signature\":\"%s\"}", ph, pp, ps);
    (void) n;

    free(ph);
    free(pp);
    free(ps);
    free(input);

    return out;
}


static void
test_b64url(void)
{
    size_t          n;
    char           *s;
    unsigned char  *out;
    static const struct {
        const char  *in;
        int          ok;
    } cases[] = {
        { "", 1 }, { "Zg", 1 }, { "Zm8", 1 }, { "Zm9v", 1 },
        { "Zh", 0 },              /* non-canonical trailing bits */
        { "Z", 0 }, { "Zm9v=", 0 }, { "Zm 9v", 0 }, { "Zm+v", 0 },
        { "Zm/v", 0 }, { "Zg==", 0 },
    };

    s = b64u("\xfb\xff", 2);
    ok(s && strcmp(s, "-_8") == 0, "b64url uses - and _ without padding");
    free(s);

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int r = pki_b64url_decode(cases[i].in, strlen(cases[i].in), &out, &n);
        ok(r == cases[i].ok, "b64url decode \"%s\": %s", cases[i].in,
           cases[i].ok ? "accepted" : "refused");
        free(out);
    }
}


static void
test_thumbprint(void)
{
    char           thumb[PKI_JWK_THUMB_LEN];
    EVP_PKEY      *pk;
    pki_result_t   res;

    pki_result_init(&res);
    pk = pki_jwk_parse(rfc7638_jwk, strlen(rfc7638_jwk), &res);
    ok(pk != NULL, "RFC 7638 example key parses");
    ok(pk && pki_jwk_thumbprint(pk, thumb)
       && strcmp(thumb, rfc7638_thumb) == 0,
       "RFC 7638 thumbprint matches the RFC");
    EVP_PKEY_free(pk);
}


#define ED(x)  "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"" x "\"}"

/* an Ed448 JWK; an RSA 2048 modulus, and the same with a zero octet */
#define ED448(x)  "{\"kty\":\"OKP\",\"crv\":\"Ed448\",\"x\":\"" x "\"}"
#define N1 \
    "wEkqZQKkJ7RKiaWpUQABEIS6vK8BOm70lYn0ba93l74Ecidyij4irpsq9SSpxJYr" \
    "dCG1VhoPCitmFUZkq7mw7dzvE9K_GxphRSKL7LBPvwGDzPGEq2Tkez1Ag0lQ7Fbl" \
    "mNZTinj5olxZrv4dolU2ANTSKs3uL3Cz4YS9tKndVRY0S9VHV-TTvGEglZmCQf00" \
    "tRcOYsmYlBgtSOe1h_VyiJSOmIA1TK0SnDqeLwVJKUbwECvxuTQF_wZr9JnXsupN" \
    "svHAf5QnkOLl8Puu5PlACNb1RoBKT-MBuwOO-agpXc_K6jwSxQWpISKw0MDU0bZN" \
    "i34H713a1pLBA4e9PTzlIQ"
#define N0 \
    "AMBJKmUCpCe0SomlqVEAARCEuryvATpu9JWJ9G2vd5e-BHIncoo-Iq6bKvUkqcSW" \
    "K3QhtVYaDworZhVGZKu5sO3c7xPSvxsaYUUii-ywT78Bg8zxhKtk5Hs9QINJUOxW" \
    "5ZjWU4p4-aJcWa7-HaJVNgDU0irN7i9ws-GEvbSp3VUWNEvVR1fk07xhIJWZgkH9" \
    "NLUXDmLJmJQYLUjntYf1coiUjpiANUytEpw6ni8FSSlG8BAr8bk0Bf8Ga_SZ17Lq" \
    "TbLxwH-UJ5Di5fD7ruT5QAjW9UaASk_jAbsDjvmoKV3Pyuo8EsUFqSEisNDA1NG2" \
    "TYt-B-9d2taSwQOHvT085SE"

static void
test_jwk_hostile(void)
{
    EVP_PKEY      *pk;
    pki_result_t   res;
    static const char  *unsupported[] = {
        "{\"kty\":\"OKP\",\"crv\":\"X448\",\"x\":\"AAAA\"}",
        "{\"kty\":\"EC\",\"crv\":\"P-192\",\"x\":\"AA\",\"y\":\"AA\"}",
        "{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"AAAA\"}",
        "{\"kty\":\"RSA\",\"e\":\"AQAB\",\"n\":\"wvoh8Dx8HwF1nnUg9VNQ3kxJ"
        "Xr6BdxBd06kmNKWXHI5FgpTkjLqazcqdH_f9dXI8wKw7fVS02Su3W5aKqD_z3Q\"}",
        NULL
    };
    static const char  *bad[] = {
        "",
        "null",
        "[]",
        "{}",
        "{\"kty\":\"oct\",\"k\":\"AAAA\"}",
        "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}",
        /* a point not on the curve */
        "{\"kty\":\"EC\",\"crv\":\"P-256\","
        "\"x\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
        "\"y\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
        "{\"kty\":\"EC\",\"crv\":\"P-192\",\"x\":\"AA\",\"y\":\"AA\"}",
        "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":1,\"y\":2}",
        /* a private key */
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
        "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\","
        "\"d\":\"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A\"}",
        "{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"AAAA\"}",
        /* RSA 512 */
        "{\"kty\":\"RSA\",\"e\":\"AQAB\",\"n\":\"wvoh8Dx8HwF1nnUg9VNQ3kxJ"
        "Xr6BdxBd06kmNKWXHI5FgpTkjLqazcqdH_f9dXI8wKw7fVS02Su3W5aKqD_z3Q\"}",
        "{\"kty\":\"RSA\",\"e\":\"AA\",\"n\":\"AQAB\"}",
        /* Ed25519 points of small order (one fixed signature verifies
         * any message): y = 0, 1 (also with the sign bit), p - 1, and
         * the two of order 8; then y = p + 1 and p + 5 (y >= p) */
        ED("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ED("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ED("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAIA"),
        ED("7P_______________________________________38"),
        ED("JuiVj8KyJ7BFw_SJ8u-Y8NXfrAXTxjM5sTgCiG1T_AU"),
        ED("xxdqcD1N2E-6PAt2DRBnDyogU_osOczGTsf9d5KsA_o"),
        ED("7v_______________________________________38"),
        ED("8v_______________________________________38"),
        /* Ed448: y = 0 (order 4), with the sign bit, y = 1, p - 1, p,
         * p + 1, and a last octet with a bit other than the sign */
        ED448("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
              "AAAAAAAAAAAAAAAA"),
        ED448("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
              "AAAAAAAAAAAAAACA"),
        ED448("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
              "AAAAAAAAAAAAAAAA"),
        ED448("_v____________________________________7___________________"
              "________________8A"),
        ED448("______________________________________7___________________"
              "________________8A"),
        ED448("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAP____________________"
              "________________8A"),
        ED448("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
              "AAAAAAAAAAAAAAAB"),
        /* not strict JSON: a member twice, text after the object, a NUL */
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
        "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\","
        "\"x\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
        "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}GARBAGE[[[",
        "{\"kty\":\"OKP\\u0000junk\",\"crv\":\"Ed25519\","
        "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}",
        /* RSA n and e with a leading zero octet (RFC 7518 2) */
        "{\"kty\":\"RSA\",\"e\":\"AQAB\",\"n\":\"" N0 "\"}",
        "{\"kty\":\"RSA\",\"e\":\"AAEAAQ\",\"n\":\"" N1 "\"}",
        /* not UTF-8 (RFC 8259 8.1): a stray byte, an overlong "." as a
         * member name, a surrogate, past U+10FFFF, a cut sequence */
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"\xff\","
        "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}",
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"\xc0\xae\":\"a\","
        "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}",
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"\xed\xa0\x80\","
        "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}",
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"\xf4\x90\x80\x80\","
        "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}",
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"\xe2\x82\","
        "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}",
        NULL
    };

    for (int i = 0; bad[i] != NULL; i++) {
        pki_result_init(&res);
        pk = pki_jwk_parse(bad[i], strlen(bad[i]), &res);
        ok(pk == NULL && (res.status == PKI_MALFORMED
                          || res.status == PKI_UNSUPPORTED),
           "hostile JWK %d refused (%s)", i, res.detail);
        EVP_PKEY_free(pk);
    }

    /* well-formed keys of kinds not taken: unsupported (ACME answers
     * badPublicKey), not malformed */
    for (int i = 0; unsupported[i] != NULL; i++) {
        pki_result_init(&res);
        pk = pki_jwk_parse(unsupported[i], strlen(unsupported[i]), &res);
        ok(pk == NULL && res.status == PKI_UNSUPPORTED,
           "JWK of a kind not taken %d: unsupported (%s)", i, res.detail);
        EVP_PKEY_free(pk);
    }

    /* an RSA key over 8192 bits is a key not taken (badPublicKey), up to
     * 32768 bits; a longer "n" is malformed */
    {
        static const size_t  sizes[] = { 1025, 1100, 4096, 4097 };
        char                *n64, *j;
        unsigned char        nb[4097];

        memset(nb, 0xc3, sizeof(nb));
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            n64 = b64u(nb, sizes[i]);
            j = NULL;
            if (n64 != NULL
                && asprintf(&j, "{\"kty\":\"RSA\",\"e\":\"AQAB\","
                            "\"n\":\"%s\"}", n64) < 0)
            {
                j = NULL;
            }
            pki_result_init(&res);
            pk = j != NULL ? pki_jwk_parse(j, strlen(j), &res) : NULL;
            ok(j != NULL && pk == NULL
               && res.status == (sizes[i] <= 4096 ? PKI_UNSUPPORTED
                                                  : PKI_MALFORMED),
               "RSA JWK of %zu bits: %s (%s)", sizes[i] * 8,
               sizes[i] <= 4096 ? "unsupported" : "malformed", res.detail);
            EVP_PKEY_free(pk);
            free(j);
            free(n64);
        }
    }

    pki_result_init(&res);
    pk = pki_jwk_parse("{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
                       "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}",
                       79, &res);
    ok(pk != NULL, "RFC 8037 Ed25519 public JWK parses");
    EVP_PKEY_free(pk);

    /* UTF-8 of two, three and four octets is taken */
    pki_result_init(&res);
    pk = pki_jwk_parse("{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
                       "\"kid\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x94\x91\","
                       "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}",
                       97, &res);
    ok(pk != NULL, "a JWK with UTF-8 in a member parses (%s)", res.detail);
    EVP_PKEY_free(pk);

    {
        static const char  *good[] = {
            ED448("AC6Cq3I5k0ZvGMSNJF1TSpff20jaj-eXBM4Hfm3ceGv5c7Bwoi9PNgt"
                  "x8Pt3f_gtKRSPxYFx0aSA"),
            "{\"kty\":\"RSA\",\"e\":\"AQAB\",\"n\":\"" N1 "\"}",
            NULL
        };

        for (int i = 0; good[i] != NULL; i++) {
            pki_result_init(&res);
            pk = pki_jwk_parse(good[i], strlen(good[i]), &res);
            ok(pk != NULL, "good JWK %d parses (%s)", i, res.detail);
            EVP_PKEY_free(pk);
        }
    }
}


/* A JWK of pk with its x coordinate cut to its last xlen octets (dropping
 * leading zeros, as some clients do) or grown by one leading zero. */
static char *
ec_jwk_x(EVP_PKEY *pk, const char *crv, size_t flen, size_t xlen)
{
    int             n;
    char           *xs, *ys, *out;
    size_t          len;
    unsigned char   pt[1 + 2 * 66], x[67];

    len = 0;
    EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, pt,
                                    sizeof(pt), &len);
    if (len != 1 + 2 * flen) {
        return NULL;
    }

    x[0] = 0;
    memcpy(x + 1, pt + 1, flen);
    xs = b64u(x + 1 + flen - xlen, xlen);
    ys = b64u(pt + 1 + flen, flen);
    n = asprintf(&out, "{\"kty\":\"EC\",\"crv\":\"%s\",\"x\":\"%s\","
                 "\"y\":\"%s\"}", crv, xs, ys);
    (void) n;
    free(xs);
    free(ys);

    return out;
}


/* Keys whose x starts with a zero octet, sent without it (the acme-client
 * gem 2.0.9 of Debian 12 does so, and builds its key authorizations from
 * that text): refused with a message that says why; the full length
 * parses to the same key. */
static void
test_jwk_short(void)
{
    int             tries;
    char           *j;
    size_t          len, flen, lens[3];
    EVP_PKEY       *pk, *got;
    pki_result_t    res;
    unsigned char   pt[1 + 2 * 66];
    static const struct {
        const char  *crv;
        size_t       flen;
    } curves[] = { { "P-256", 32 }, { "P-521", 66 } };

    for (size_t c = 0; c < 2; c++) {
        flen = curves[c].flen;

        for (tries = 0; tries < 20000; tries++) {
            pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curves[c].crv);
            len = 0;
            EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, pt,
                                            sizeof(pt), &len);
            if (len == 1 + 2 * flen && pt[1] == 0) {
                break;
            }
            EVP_PKEY_free(pk);
            pk = NULL;
        }

        ok(pk != NULL, "%s: a key whose x starts with 0x00 (%d tries)",
           curves[c].crv, tries);
        if (pk == NULL) {
            continue;
        }

        j = ec_jwk_x(pk, curves[c].crv, flen, flen);
        pki_result_init(&res);
        got = pki_jwk_parse(j, strlen(j), &res);
        ok(got != NULL && EVP_PKEY_eq(got, pk) == 1,
           "%s: x with its leading zero parses (%s)", curves[c].crv,
           res.detail);
        EVP_PKEY_free(got);
        free(j);

        lens[0] = flen - 1;
        lens[1] = flen + 1;
        lens[2] = 0;

        for (int i = 0; i < 3; i++) {
            j = ec_jwk_x(pk, curves[c].crv, flen, lens[i]);
            pki_result_init(&res);
            got = pki_jwk_parse(j, strlen(j), &res);
            ok(got == NULL && res.status == PKI_MALFORMED
               && strstr(res.detail, "RFC 7518") != NULL,
               "%s: a %zu-octet x refused (%s)", curves[c].crv, lens[i],
               res.detail);
            EVP_PKEY_free(got);
            free(j);
        }

        EVP_PKEY_free(pk);
    }
}


static void
test_algorithms(void)
{
    char          *j;
    EVP_PKEY      *keys[6], *other;
    pki_jws_t      jws;
    pki_result_t   res;
    static const char  *algs[] = { "ES256", "ES384", "ES512", "RS256",
                                   "PS256", "EdDSA" };

    keys[0] = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    keys[1] = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    keys[2] = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
    keys[3] = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
    keys[4] = keys[3];
    keys[5] = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

    for (int i = 0; i < 6; i++) {
        j = make_jws(keys[i], algs[i], "", "{\"a\":1}", NULL, 1);

        pki_result_init(&res);
        ok(pki_jws_parse((unsigned char *) j, strlen(j), &jws, &res)
           == PKI_OK, "%s: parses", algs[i]);
        ok(jws.jwk != NULL && strlen(jws.thumb) == 43, "%s: jwk and "
           "thumbprint", algs[i]);
        ok(jws.payload_len == 7 && strcmp((char *) jws.payload, "{\"a\":1}")
           == 0, "%s: payload", algs[i]);
        ok(pki_jws_verify(&jws, jws.jwk, &res) == PKI_OK, "%s: verifies",
           algs[i]);
        pki_jws_clear(&jws);

        /* the same JWS against a key it was not made with */
        pki_result_init(&res);
        pki_jws_parse((unsigned char *) j, strlen(j), &jws, &res);
        ok(pki_jws_verify(&jws, i == 0 ? keys[5] : other, &res) != PKI_OK,
           "%s: another key does not verify", algs[i]);
        pki_jws_clear(&jws);
        free(j);
    }

    /* ES256 alg with a P-384 key: the algorithm must fit the key */
    j = make_jws(keys[1], "ES384", "", "{}", NULL, 1);
    pki_result_init(&res);
    pki_jws_parse((unsigned char *) j, strlen(j), &jws, &res);
    strcpy(jws.alg, "ES256");
    ok(pki_jws_verify(&jws, jws.jwk, &res) != PKI_OK
       && strcmp(jws.problem, "badSignatureAlgorithm") == 0,
       "alg that does not fit the key: badSignatureAlgorithm");
    pki_jws_clear(&jws);
    free(j);

    /* a flipped bit in the payload */
    j = make_jws(keys[0], "ES256", "", "{\"a\":1}", NULL, 1);
    {
        char  *p = strstr(j, "\"payload\":\"") + 11;
        *p = *p == 'e' ? 'f' : 'e';
    }
    pki_result_init(&res);
    pki_jws_parse((unsigned char *) j, strlen(j), &jws, &res);
    ok(pki_jws_verify(&jws, jws.jwk, &res) == PKI_BAD_SIGNATURE,
       "a changed payload does not verify");
    pki_jws_clear(&jws);
    free(j);

    /* RSA: a signature one byte short (its leading zero dropped) is a
     * second encoding; only the modulus' length is taken (RFC 8017) */
    for (int a = 3; a <= 4; a++) {
        int  found = 0;

        for (int k = 0; k < 4000 && !found; k++) {
            char  pl[32];

            snprintf(pl, sizeof(pl), "{\"n\":%d}", k);
            j = make_jws(keys[a], algs[a], "", pl, NULL, 1);
            pki_result_init(&res);
            if (pki_jws_parse((unsigned char *) j, strlen(j), &jws, &res)
                == PKI_OK && jws.sig_len == 256 && jws.sig[0] == 0)
            {
                found = 1;
                memmove(jws.sig, jws.sig + 1, 255);
                jws.sig_len = 255;
                ok(pki_jws_verify(&jws, jws.jwk, &res) == PKI_BAD_SIGNATURE,
                   "%s: the signature without its leading zero is refused "
                   "(%s)", algs[a], res.detail);
            }
            pki_jws_clear(&jws);
            free(j);
        }
        ok(found, "%s: a signature with a leading zero was made", algs[a]);
    }

    for (int i = 0; i < 6; i++) {
        if (i != 4) {
            EVP_PKEY_free(keys[i]);
        }
    }
    EVP_PKEY_free(other);
}


static void
test_hostile(void)
{
    char          *j;
    EVP_PKEY      *pk;
    pki_jws_t      jws;
    pki_result_t   res;
    static const struct {
        const char  *name;
        const char  *body;            /* NULL: built from the fields below */
        const char  *alg;
        const char  *hdr;
        const char  *sig;
        int          jwk;
        const char  *problem;
    } cases[] = {
        { "empty body", "", NULL, NULL, NULL, 0, "malformed" },
        { "not JSON", "garbage", NULL, NULL, NULL, 0, "malformed" },
        { "JSON array", "[1,2]", NULL, NULL, NULL, 0, "malformed" },
        { "compact serialization", "\"a.b.c\"", NULL, NULL, NULL, 0,
          "malformed" },
        { "general serialization",
          "{\"payload\":\"e30\",\"signatures\":[]}", NULL, NULL, NULL, 0,
          "malformed" },
        { "unprotected header",
          "{\"protected\":\"e30\",\"header\":{},\"payload\":\"\","
          "\"signature\":\"AA\"}", NULL, NULL, NULL, 0, "malformed" },
        { "protected not base64url",
          "{\"protected\":\"e30=\",\"payload\":\"\",\"signature\":\"AA\"}",
          NULL, NULL, NULL, 0, "malformed" },
        { "protected not an object",
          "{\"protected\":\"WzFd\",\"payload\":\"\",\"signature\":\"AA\"}",
          NULL, NULL, NULL, 0, "malformed" },
        { "numeric payload",
          "{\"protected\":\"e30\",\"payload\":1,\"signature\":\"AA\"}",
          NULL, NULL, NULL, 0, "malformed" },
        { "NUL in body", NULL, "ES256", "", NULL, 1, "malformed" },
        { "alg none", NULL, "none", "", "", 1, "badSignatureAlgorithm" },
        { "alg HS256", NULL, "HS256", "", "AAAA", 1,
          "badSignatureAlgorithm" },
        { "alg RS1", NULL, "RS1", "", "AAAA", 1, "badSignatureAlgorithm" },
        { "jwk and kid", NULL, "ES256", ",\"kid\":\"https://x/acct/1\"",
          NULL, 1, "malformed" },
        { "crit", NULL, "ES256", ",\"crit\":[\"b64\"],\"b64\":false", NULL,
          1, "malformed" },
        { "b64 false", NULL, "ES256", ",\"b64\":false", NULL, 1,
          "malformed" },
        { "kid not a string", NULL, "ES256", ",\"kid\":7", NULL, 0,
          "malformed" },
        { "empty signature", NULL, "ES256", "", "", 1, "malformed" },
        { "signature not base64url", NULL, "ES256", "", "a+b/", 1,
          "malformed" },
        /* RFC 7515 5.2: repeated members refused (a proxy that reads
         * the last one would see another request) */
        { "two protected headers",
          "{\"protected\":\"e30\",\"protected\":\"e30\",\"payload\":\"\","
          "\"signature\":\"AA\"}", NULL, NULL, NULL, 0, "malformed" },
        { "alg twice", NULL, "ES256", ",\"alg\":\"HS256\"", NULL, 1,
          "malformed" },
        { "url twice", NULL, "ES256", ",\"url\":\"https://y/acme/b\"", NULL,
          1, "malformed" },
        { "an escaped NUL", NULL, "ES256", ",\"x\":\"a\\u0000b\"", NULL, 1,
          "malformed" },
        { "a raw control character", NULL, "ES256", ",\"x\":\"a\001b\"",
          NULL, 1, "malformed" },
        { "text after the JWS", NULL, "ES256", "", NULL, 1, "malformed" },
    };

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t  len;

        if (cases[i].body != NULL) {
            j = strdup(cases[i].body);
            len = strlen(j);

        } else {
            j = make_jws(pk, cases[i].alg, cases[i].hdr, "{}", cases[i].sig,
                         cases[i].jwk);
            len = strlen(j);
            if (strcmp(cases[i].name, "NUL in body") == 0) {
                j[len - 2] = '\0';
            }
            if (strcmp(cases[i].name, "text after the JWS") == 0) {
                char  *t = realloc(j, len + 4);

                if (t != NULL) {
                    j = t;
                    memcpy(j + len, " x\n", 4);
                    len += 3;
                }
            }
        }

        pki_result_init(&res);
        ok(pki_jws_parse((unsigned char *) j, len, &jws, &res)
           == PKI_MALFORMED && jws.problem != NULL
           && strcmp(jws.problem, cases[i].problem) == 0,
           "%s: %s (%s)", cases[i].name, cases[i].problem, res.detail);
        pki_jws_clear(&jws);
        free(j);
    }

    /* no url */
    {
        char  hdr[] = "{\"alg\":\"ES256\",\"nonce\":\"x\"}";
        char *ph = b64u(hdr, strlen(hdr)), *body;

        if (asprintf(&body, "{\"protected\":\"%s\",\"payload\":\"\","
                     "\"signature\":\"AAAA\"}", ph) > 0)
        {
            pki_result_init(&res);
            ok(pki_jws_parse((unsigned char *) body, strlen(body), &jws,
                             &res) == PKI_MALFORMED, "no url: malformed");
            pki_jws_clear(&jws);
            free(body);
        }
        free(ph);
    }

    /* a wrong-length ECDSA signature verifies as bad, without a crash */
    j = make_jws(pk, "ES256", "", "{}", "AAAA", 1);
    pki_result_init(&res);
    pki_jws_parse((unsigned char *) j, strlen(j), &jws, &res);
    ok(pki_jws_verify(&jws, jws.jwk, &res) == PKI_BAD_SIGNATURE,
       "short ECDSA signature: bad signature");
    pki_jws_clear(&jws);
    free(j);

    /* white space after the JWS is no text */
    j = make_jws(pk, "ES256", "", "{}", NULL, 1);
    {
        char  *t = realloc(j, strlen(j) + 4);

        if (t != NULL) {
            j = t;
            strcat(j, " \r\n");
        }
    }
    pki_result_init(&res);
    ok(pki_jws_parse((unsigned char *) j, strlen(j), &jws, &res) == PKI_OK,
       "white space after the JWS: parses (%s)", res.detail);
    pki_jws_clear(&jws);
    free(j);

    /* POST-as-GET: empty payload */
    j = make_jws(pk, "ES256", "", "", NULL, 1);
    pki_result_init(&res);
    ok(pki_jws_parse((unsigned char *) j, strlen(j), &jws, &res) == PKI_OK
       && jws.payload_len == 0 && pki_jws_verify(&jws, jws.jwk, &res)
          == PKI_OK, "POST-as-GET (empty payload) parses and verifies");
    pki_jws_clear(&jws);
    free(j);

    EVP_PKEY_free(pk);
}


/* Parses a fresh ES256 JWS signed by signer and verifies it with key;
 * tamper (when not NULL) edits the parsed JWS first. */
static pki_status_t
hot_verify(EVP_PKEY *signer, EVP_PKEY *key, int n,
    void (*tamper)(pki_jws_t *jws))
{
    char          *j, payload[64];
    pki_jws_t      jws;
    pki_status_t   rc;
    pki_result_t   res;

    snprintf(payload, sizeof(payload), "{\"n\":%d}", n);
    j = make_jws(signer, "ES256", "", payload, NULL, 1);
    pki_result_init(&res);
    rc = pki_jws_parse((unsigned char *) j, strlen(j), &jws, &res);
    if (rc == PKI_OK) {
        if (tamper != NULL) {
            tamper(&jws);
        }
        rc = pki_jws_verify(&jws, key, &res);
    }
    pki_jws_clear(&jws);
    free(j);

    return rc;
}


static void tamper_input(pki_jws_t *jws) { jws->signing_input[3] ^= 0x01; }
static void tamper_r0(pki_jws_t *jws) { memset(jws->sig, 0, 32); }
static void tamper_s0(pki_jws_t *jws) { memset(jws->sig + 32, 0, 32); }
static void tamper_ff(pki_jws_t *jws) { memset(jws->sig, 0xff, 64); }
static void tamper_sbit(pki_jws_t *jws) { jws->sig[63] ^= 0x01; }


/* r or s replaced by the group order n, or s by n - s (the other valid
 * signature of the same message: both verifiers accept it) */
static void
tamper_order(pki_jws_t *jws, int which)
{
    BIGNUM    *n, *s;
    EC_GROUP  *g;

    g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    n = BN_dup(EC_GROUP_get0_order(g));
    s = BN_bin2bn(jws->sig + 32, 32, NULL);

    if (which == 2) {
        BN_sub(s, n, s);
        BN_bn2binpad(s, jws->sig + 32, 32);
    } else {
        BN_bn2binpad(n, jws->sig + (which == 0 ? 0 : 32), 32);
    }

    BN_free(s);
    BN_free(n);
    EC_GROUP_free(g);
}

static void tamper_rn(pki_jws_t *jws) { tamper_order(jws, 0); }
static void tamper_sn(pki_jws_t *jws) { tamper_order(jws, 1); }
static void tamper_negs(pki_jws_t *jws) { tamper_order(jws, 2); }


/* An account key that signs often gets a table: the verifications that use
 * it must agree with the generic verifier on good and bad signatures, and
 * one key's table must never verify another key's signatures. */
static void
test_hot_keys(void)
{
    int                   i, good;
    EVP_PKEY             *k, *k2, *other;
    pki_jws_hot_stats_t   st, st2;
    static const struct {
        const char  *name;
        void       (*fn)(pki_jws_t *jws);
        int          good;
    } bad[] = {
        { "signing input changed", tamper_input, 0 },
        { "r = 0", tamper_r0, 0 },
        { "s = 0", tamper_s0, 0 },
        { "r = s = 2^256 - 1", tamper_ff, 0 },
        { "a bit of s flipped", tamper_sbit, 0 },
        { "r = n", tamper_rn, 0 },
        { "s = n", tamper_sn, 0 },
        { "s replaced by n - s", tamper_negs, 1 },
    };

    pki_jws_hot_clear();

    k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    k2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

    /* every tampered signature refused (or accepted) on the generic path
     * first, before the key is hot */
    for (size_t t = 0; t < sizeof(bad) / sizeof(bad[0]); t++) {
        ok((hot_verify(k2, k2, 0, bad[t].fn) == PKI_OK) == bad[t].good,
           "generic ES256: %s %s", bad[t].name,
           bad[t].good ? "verifies" : "refused");
    }

    good = 0;
    for (i = 0; i < 200; i++) {
        good += hot_verify(k, k, i, NULL) == PKI_OK;
    }
    pki_jws_hot_stats(&st);
    ok(good == 200, "200 ES256 signatures of one key verify (%d)", good);
    ok(st.built == 1 && st.refused == 0,
       "that key got a table (built %llu, refused %llu)", st.built,
       st.refused);
    ok(st.fast >= 100, "later verifications use it (%llu of 200)", st.fast);

    for (size_t t = 0; t < sizeof(bad) / sizeof(bad[0]); t++) {
        pki_jws_hot_stats(&st);
        ok((hot_verify(k, k, 1000 + (int) t, bad[t].fn) == PKI_OK)
           == bad[t].good, "table: %s %s", bad[t].name,
           bad[t].good ? "verifies" : "refused");
        pki_jws_hot_stats(&st2);
        ok(st2.fast == st.fast + 1, "... checked with the table");
    }

    /* the table path inverts s itself (key.c, pki_limb_inv): over many
     * signatures, so many values of s, every good one verifies and each
     * with the low bit of s flipped is refused */
    {
        int  refused = 0;

        pki_jws_hot_stats(&st);
        good = 0;
        for (i = 0; i < 2000; i++) {
            good += hot_verify(k, k, 10000 + i, NULL) == PKI_OK;
            refused += hot_verify(k, k, 20000 + i, tamper_sbit)
                       == PKI_BAD_SIGNATURE;
        }
        pki_jws_hot_stats(&st2);
        ok(good == 2000 && refused == 2000, "table: 2000 signatures verify "
           "(%d), each with s changed is refused (%d)", good, refused);
        ok(st2.fast == st.fast + 4000, "... all checked with the table "
           "(%llu)", st2.fast - st.fast);
    }

    pki_jws_hot_stats(&st);
    ok(hot_verify(other, k, 2000, NULL) == PKI_BAD_SIGNATURE,
       "table: another key's signature refused");
    pki_jws_hot_stats(&st2);
    ok(st2.fast == st.fast + 1, "... checked with the table");

    /* a second hot key (tables are built at most once a second) */
    sleep(1);
    good = 0;
    for (i = 0; i < 100; i++) {
        good += hot_verify(k2, k2, i, NULL) == PKI_OK;
    }
    pki_jws_hot_stats(&st);
    ok(good == 100 && st.built == 2, "a second key gets its own table "
       "(built %llu)", st.built);
    ok(hot_verify(k, k2, 3000, NULL) == PKI_BAD_SIGNATURE
       && hot_verify(k2, k, 3001, NULL) == PKI_BAD_SIGNATURE,
       "neither key's table verifies the other's signatures");
    ok(hot_verify(k, k, 3002, NULL) == PKI_OK
       && hot_verify(k2, k2, 3003, NULL) == PKI_OK,
       "each verifies its own");

    /* many keys seen once each push out counted keys, never a table */
    for (i = 0; i < 40; i++) {
        EVP_PKEY  *t = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

        good += hot_verify(t, t, i, NULL) == PKI_OK;
        EVP_PKEY_free(t);
    }
    pki_jws_hot_stats(&st);
    ok(hot_verify(k, k, 4000, NULL) == PKI_OK, "40 new keys later, the hot "
       "key verifies");
    pki_jws_hot_stats(&st2);
    ok(st2.fast == st.fast + 1 && st2.built == 2, "... still with its "
       "table");

    /* bad signatures with a key of one's own, one before each of an
     * account key's good ones: the account key still gets its table (the
     * bad ones gave the second's build back) */
    {
        EVP_PKEY  *att = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        EVP_PKEY  *acct = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        int        bogus = 0;

        pki_jws_hot_clear();          /* no build this second yet */
        pki_jws_hot_stats(&st);
        good = 0;
        for (i = 0; i < 100; i++) {
            bogus += hot_verify(att, att, 5000 + i, tamper_sbit)
                     == PKI_BAD_SIGNATURE;
            good += hot_verify(acct, acct, 5000 + i, NULL) == PKI_OK;
        }
        pki_jws_hot_stats(&st2);
        ok(bogus == 100 && good == 100 && st2.built == st.built + 1,
           "100 bad signatures of another key, each before one of an "
           "account key's 100: the account key gets its table (built "
           "%llu)", st2.built - st.built);
        EVP_PKEY_free(att);
        EVP_PKEY_free(acct);
    }

    /* P-384 and RSA keys never take that path */
    pki_jws_hot_clear();
    {
        EVP_PKEY  *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
        char      *j;
        pki_jws_t  jws;
        pki_result_t res;

        good = 0;
        for (i = 0; i < 80; i++) {
            j = make_jws(p384, "ES384", "", "{}", NULL, 1);
            pki_result_init(&res);
            good += pki_jws_parse((unsigned char *) j, strlen(j), &jws, &res)
                    == PKI_OK && pki_jws_verify(&jws, p384, &res) == PKI_OK;
            pki_jws_clear(&jws);
            free(j);
        }
        pki_jws_hot_stats(&st);
        ok(good == 80 && st.built == 0 && st.fast == 0,
           "ES384: no table (built %llu)", st.built);
        EVP_PKEY_free(p384);
    }

    pki_jws_hot_clear();
    EVP_PKEY_free(k);
    EVP_PKEY_free(k2);
    EVP_PKEY_free(other);
}


/* Threads verify good, tampered and wrong-key signatures of three keys
 * while tables are built and dropped (pki_jws_hot_clear) under them: every
 * verdict must be right (the sanitizer and Valgrind runs watch the
 * entries' lifetimes). */

#define HOT_KEYS  3

static struct {
    EVP_PKEY          *keys[HOT_KEYS];
    char              *good[HOT_KEYS];
    char              *bad[HOT_KEYS];
    int                stop;
    pthread_mutex_t    lock;
    long               wrong;
    long               total;
} hot_mt;


static void *
hot_thread(void *arg)
{
    int            i, k, tampered;
    long           wrong, total;
    unsigned       seed;
    const char    *b;
    pki_jws_t      jws;
    pki_result_t   res;

    seed = (unsigned) (size_t) arg;
    wrong = 0;
    total = 0;

    while (!__atomic_load_n(&hot_mt.stop, __ATOMIC_ACQUIRE)) {
        i = (int) (rand_r(&seed) % HOT_KEYS);
        tampered = rand_r(&seed) % 8 == 0;
        k = rand_r(&seed) % 16 == 0 ? (i + 1) % HOT_KEYS : i;
        b = tampered ? hot_mt.bad[i] : hot_mt.good[i];

        pki_result_init(&res);
        if (pki_jws_parse((const unsigned char *) b, strlen(b), &jws, &res)
            != PKI_OK)
        {
            wrong++;
            continue;
        }

        if ((pki_jws_verify(&jws, hot_mt.keys[k], &res) == PKI_OK)
            != (!tampered && k == i))
        {
            wrong++;
        }
        total++;
        pki_jws_clear(&jws);
    }

    pthread_mutex_lock(&hot_mt.lock);
    hot_mt.wrong += wrong;
    hot_mt.total += total;
    pthread_mutex_unlock(&hot_mt.lock);

    return NULL;
}


static void
test_hot_threads(void)
{
    int                   i;
    pthread_t             th[4];
    pki_jws_hot_stats_t   st;

    pki_jws_hot_clear();
    pthread_mutex_init(&hot_mt.lock, NULL);

    for (i = 0; i < HOT_KEYS; i++) {
        char  *j;

        hot_mt.keys[i] = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        hot_mt.good[i] = make_jws(hot_mt.keys[i], "ES256", "", "{}", NULL, 1);

        /* the same JWS with one bit of s flipped */
        j = make_jws(hot_mt.keys[i], "ES256", "", "{}", NULL, 1);
        {
            char  *sig = strstr(j, "\"signature\":\"") + 13;

            sig[60] = sig[60] == 'A' ? 'B' : 'A';
        }
        hot_mt.bad[i] = j;
    }

    hot_mt.stop = 0;

    for (i = 0; i < 4; i++) {
        pthread_create(&th[i], NULL, hot_thread, (void *) (size_t) (i + 1));
    }

    /* tables for the keys (up to 60 s: Valgrind is slow), then all dropped
     * under the threads, which go on for two more seconds */
    for (i = 0; i < 600; i++) {
        usleep(100000);
        pki_jws_hot_stats(&st);
        if (st.built >= 1 && st.fast > 1000) {
            break;
        }
    }

    pki_jws_hot_clear();
    sleep(2);
    __atomic_store_n(&hot_mt.stop, 1, __ATOMIC_RELEASE);

    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
    }

    ok(hot_mt.total > 0 && hot_mt.wrong == 0, "4 threads, 3 keys, tables "
       "built and dropped meanwhile: %ld verdicts, %ld wrong",
       hot_mt.total, hot_mt.wrong);
    ok(st.built >= 1 && st.fast > 0, "... the tables were used (%llu built, "
       "%llu verifications with one)", st.built, st.fast);

    pki_jws_hot_clear();
    for (i = 0; i < HOT_KEYS; i++) {
        EVP_PKEY_free(hot_mt.keys[i]);
        free(hot_mt.good[i]);
        free(hot_mt.bad[i]);
    }
    pthread_mutex_destroy(&hot_mt.lock);
}


int
main(void)
{
    pki_init();

    test_b64url();
    test_thumbprint();
    test_jwk_hostile();
    test_jwk_short();
    test_algorithms();
    test_hostile();
    test_hot_keys();
    test_hot_threads();

    return done_testing();
}
