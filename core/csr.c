/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A PKCS#10 reader for the hot path.
 *
 * OpenSSL 3.0's d2i_X509_REQ() decodes the subject public key through
 * OSSL_DECODER_CTX_new_for_pkey(), which builds a decoder chain on every
 * call: about 100 us per CSR, more than verifying its signature.  (Later
 * OpenSSL releases cache the chain.)  This reader parses the request with
 * an ASN.1 template whose SubjectPublicKeyInfo is kept as algorithm + bits,
 * builds the key directly for the types that matter on a device fleet (EC
 * on a named curve, RSA), verifies the self-signature over the bytes as
 * received, and then assembles the X509_REQ that the rest of the core
 * reads.  Anything else (Ed25519, explicit curve parameters, RSA-PSS keys)
 * is left to d2i_X509_REQ(): the caller falls back.
 *
 * The legacy key constructors (EC_KEY, RSA) are deprecated in OpenSSL 3.0
 * but are the only public way to get an EVP_PKEY that X509_PUBKEY_set()
 * encodes without the encoder round trip.
 *
 * Two more OpenSSL 3.0 costs are avoided for EC keys on the named curves:
 * EC_KEY_new_by_curve_name() builds a new EC_GROUP every time (Montgomery
 * set-up and all, ~25 us), so the groups are built once and copied
 * (EC_GROUP_dup, ~3 us); and ASN1_item_verify() exports the legacy key to
 * the provider (another group construction) and re-encodes the request
 * info, so an ecdsa-with-SHA256/384/512 self-signature is checked with
 * ECDSA_verify() -- what the provider itself calls -- over the
 * CertificationRequestInfo bytes as received (the request re-encodes to
 * exactly those bytes: checked before).
 */

#define OPENSSL_SUPPRESS_DEPRECATED

#include <pthread.h>
#include <string.h>

#include <openssl/asn1t.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "issue_int.h"


typedef struct {
    X509_ALGOR       *alg;
    ASN1_BIT_STRING  *bits;
} PKI_SPKI;

typedef struct {
    ASN1_INTEGER                *version;
    X509_NAME                   *subject;
    PKI_SPKI                    *spki;
    STACK_OF(X509_ATTRIBUTE)    *attributes;
} PKI_REQ_INFO;

typedef struct {
    PKI_REQ_INFO     *info;
    X509_ALGOR       *sig_alg;
    ASN1_BIT_STRING  *sig;
} PKI_REQ;


ASN1_SEQUENCE(PKI_SPKI) = {
    ASN1_SIMPLE(PKI_SPKI, alg, X509_ALGOR),
    ASN1_SIMPLE(PKI_SPKI, bits, ASN1_BIT_STRING)
} static_ASN1_SEQUENCE_END(PKI_SPKI)

ASN1_SEQUENCE(PKI_REQ_INFO) = {
    ASN1_SIMPLE(PKI_REQ_INFO, version, ASN1_INTEGER),
    ASN1_SIMPLE(PKI_REQ_INFO, subject, X509_NAME),
    ASN1_SIMPLE(PKI_REQ_INFO, spki, PKI_SPKI),
    ASN1_IMP_SET_OF(PKI_REQ_INFO, attributes, X509_ATTRIBUTE, 0)
} static_ASN1_SEQUENCE_END(PKI_REQ_INFO)

ASN1_SEQUENCE(PKI_REQ) = {
    ASN1_SIMPLE(PKI_REQ, info, PKI_REQ_INFO),
    ASN1_SIMPLE(PKI_REQ, sig_alg, X509_ALGOR),
    ASN1_SIMPLE(PKI_REQ, sig, ASN1_BIT_STRING)
} static_ASN1_SEQUENCE_END(PKI_REQ)


/* the named curves this reader takes, built once (read-only afterwards;
 * EC_GROUP_dup() of a shared group is thread-safe) */
static const int        pki_csr_curve_nids[] = {
    NID_X9_62_prime256v1, NID_secp384r1, NID_secp521r1
};
static EC_GROUP        *pki_csr_curves[3];
static pthread_once_t   pki_csr_curves_once = PTHREAD_ONCE_INIT;

static const char  pki_csr_hybrid[] = "the CSR's public key is an EC point "
    "in hybrid form (RFC 5480 2.2: uncompressed or compressed only)";
static const char  pki_small_order[] = "the public key is a small-order "
    "point: anyone can sign for it";


static void
pki_csr_curves_init(void)
{
    size_t  i;

    for (i = 0; i < sizeof(pki_csr_curves) / sizeof(pki_csr_curves[0]); i++)
    {
        pki_csr_curves[i] = EC_GROUP_new_by_curve_name(pki_csr_curve_nids[i]);
    }
}


/* A new EC_KEY on the named curve nid (a copy of the cached group). */
static EC_KEY *
pki_csr_ec_key(int nid)
{
    size_t   i;
    EC_KEY  *ec;

    (void) pthread_once(&pki_csr_curves_once, pki_csr_curves_init);

    for (i = 0; i < sizeof(pki_csr_curves) / sizeof(pki_csr_curves[0]); i++)
    {
        if (pki_csr_curve_nids[i] == nid && pki_csr_curves[i] != NULL) {
            ec = EC_KEY_new();
            if (ec != NULL && !EC_KEY_set_group(ec, pki_csr_curves[i])) {
                EC_KEY_free(ec);
                ec = NULL;
            }
            return ec;
        }
    }

    return EC_KEY_new_by_curve_name(nid);
}


/*
 * The encodings of the Ed25519 points of small order, the sign bit of x
 * (the top bit of the last octet) left out: y = 0 (two points of order
 * 4), 1 (the identity), the two y of the four points of order 8, p - 1
 * (order 2), and the non-canonical p and p + 1 (0 and 1 again), which
 * OpenSSL decodes.  libsodium's list (ge25519_has_small_order).  A
 * signature verifies for such a key whatever the message: with A the
 * identity, R = B and S = 1 pass [S]B = R + [k]A.
 */
static const unsigned char  pki_ed25519_small[][32] = {
    { 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 },
    { 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 },
    { 0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0,
      0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0,
      0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39,
      0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05 },
    { 0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f,
      0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f,
      0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6,
      0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a },
    { 0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f },
    { 0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f },
    { 0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f }
};


/*
 * 1 when the 57-octet Ed448 encoding pub is of a point of small order,
 * the sign bit of x (the top bit of the last octet, whose other bits are
 * 0) left out.  The cofactor is 4, so these are all four: y = 0 ((1, 0)
 * and (-1, 0), order 4), y = 1 (the identity) and y = p - 1 ((0, -1),
 * order 2), with p = 2^448 - 2^224 - 1; and the non-canonical y = p and
 * p + 1 (0 and 1 again).  Octets 0..27 and 29..55 of each are all one
 * value: only octets 0 and 28 differ.
 */
static int
pki_ed448_small(const unsigned char *pub)
{
    size_t  i, k;
    static const unsigned char  small[5][4] = {
        /* octet 0, 1..27, 28, 29..55 */
        { 0x00, 0x00, 0x00, 0x00 },                 /* 0 */
        { 0x01, 0x00, 0x00, 0x00 },                 /* 1 */
        { 0xfe, 0xff, 0xfe, 0xff },                 /* p - 1 */
        { 0xff, 0xff, 0xfe, 0xff },                 /* p */
        { 0x00, 0x00, 0xff, 0xff }                  /* p + 1 */
    };

    if ((pub[56] & 0x7f) != 0) {
        return 0;                   /* no point OpenSSL decodes */
    }

    for (k = 0; k < 5; k++) {
        if (pub[0] != small[k][0] || pub[28] != small[k][2]) {
            continue;
        }

        for (i = 1; i < 56; i++) {
            if (i != 28 && pub[i] != small[k][i < 28 ? 1 : 3]) {
                break;
            }
        }

        if (i == 56) {
            return 1;
        }
    }

    return 0;
}


/* the odd primes under 752: CA/Browser Forum BR 6.1.6 wants an RSA
 * modulus odd, of no power of a prime, and with no factor under 752 */
static const unsigned short  pki_small_primes[] = {
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71,
    73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151,
    157, 163, 167, 173, 179, 181, 191, 193, 197, 199, 211, 223, 227, 229, 233,
    239, 241, 251, 257, 263, 269, 271, 277, 281, 283, 293, 307, 311, 313, 317,
    331, 337, 347, 349, 353, 359, 367, 373, 379, 383, 389, 397, 401, 409, 419,
    421, 431, 433, 439, 443, 449, 457, 461, 463, 467, 479, 487, 491, 499, 503,
    509, 521, 523, 541, 547, 557, 563, 569, 571, 577, 587, 593, 599, 601, 607,
    613, 617, 619, 631, 641, 643, 647, 653, 659, 661, 673, 677, 683, 691, 701,
    709, 719, 727, 733, 739, 743, 751
};


/*
 * Why the RSA modulus of pk is refused, or NULL: even, or with a prime
 * factor under 752 (BR 6.1.6).  Such a modulus is no product of two large
 * primes: whoever knows the small factor, anyone who looks, can factor
 * the rest far more easily, and no generator makes one.  The primes are
 * taken as many at a time as their product fits a word, one division of
 * the modulus each (about 5 us for 2048 bits, against 25 for a prime at a
 * time: the check runs on every RSA request).
 */
static const char *
pki_rsa_modulus_weak(const EVP_PKEY *pk)
{
    size_t       i, j, k, np;
    BIGNUM      *n;
    BN_ULONG     m, r;
    const char  *why;

    n = NULL;
    if (EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &n) != 1) {
        ERR_clear_error();
        return "the RSA modulus cannot be read";
    }

    why = NULL;
    np = sizeof(pki_small_primes) / sizeof(pki_small_primes[0]);

    if (!BN_is_odd(n)) {
        why = "the RSA modulus is even";
        goto done;
    }

    for (i = 0; i < np; i = j) {
        m = 1;
        for (j = i; j < np && m <= (BN_ULONG) -1 / pki_small_primes[j]; j++)
        {
            m *= pki_small_primes[j];
        }

        /* r < m: never the (BN_ULONG) -1 of an error */
        r = BN_mod_word(n, m);

        for (k = i; k < j; k++) {
            if (r % pki_small_primes[k] == 0) {
                why = "the RSA modulus has a prime factor under 752 "
                      "(CA/Browser Forum BR 6.1.6)";
                goto done;
            }
        }
    }

done:

    BN_free(n);

    return why;
}


/*
 * Why a well-formed public key is still no key to certify, or NULL: an
 * Ed25519 or Ed448 key of small order (RFC 8032 does not refuse one, nor
 * does OpenSSL), for which a forged signature verifies over any message,
 * so a request's own proves nothing and a certificate would let anyone
 * sign as its subject; an RSA modulus that is even or has a small prime
 * factor (pki_rsa_modulus_weak).  Checked for a request's key before its
 * signature and by pki_check_key for every key issued for.
 */
const char *
pki_int_key_weak(const EVP_PKEY *pk)
{
    size_t         i, k, len;
    unsigned char  pub[57];

    switch (EVP_PKEY_get_base_id(pk)) {

    case EVP_PKEY_RSA:
        return pki_rsa_modulus_weak(pk);

    case EVP_PKEY_ED25519:
        len = sizeof(pub);
        if (EVP_PKEY_get_raw_public_key(pk, pub, &len) != 1 || len != 32) {
            ERR_clear_error();
            return "the Ed25519 public key cannot be read";
        }

        for (k = 0; k < sizeof(pki_ed25519_small) / 32; k++) {
            for (i = 0; i < 31 && pub[i] == pki_ed25519_small[k][i]; i++) {
                /* void */
            }

            if (i == 31 && (pub[31] & 0x7f) == pki_ed25519_small[k][31]) {
                return pki_small_order;
            }
        }

        return NULL;

    case EVP_PKEY_ED448:
        len = sizeof(pub);
        if (EVP_PKEY_get_raw_public_key(pk, pub, &len) != 1 || len != 57) {
            ERR_clear_error();
            return "the Ed448 public key cannot be read";
        }

        return pki_ed448_small(pub) ? pki_small_order : NULL;

    default:
        return NULL;
    }
}


/*
 * Why a request's signature algorithm is refused, or NULL: a self-
 * signature with MD2, MD4 or MD5 (RSA PKCS#1 v1.5, or RSASSA-PSS with that
 * hash) proves nothing, since anyone can make a second request with the
 * same digest (RFC 6151; MD5 collisions are computed in seconds).  SHA-1
 * stays allowed: old device fleets sign their requests with it, and a
 * chosen-prefix collision costs far more than forging proof of
 * possession is worth to anyone.
 */
const char *
pki_int_csr_sig_refused(const X509_ALGOR *alg)
{
    int                 nid, mdnid, pknid, ptype;
    const void         *pval;
    RSA_PSS_PARAMS     *pss;
    const ASN1_OBJECT  *aobj;

    X509_ALGOR_get0(&aobj, &ptype, &pval, alg);
    nid = OBJ_obj2nid(aobj);

    if (nid == NID_rsassaPss) {
        pss = ptype == V_ASN1_SEQUENCE
              ? ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(RSA_PSS_PARAMS),
                                          (const ASN1_TYPE *) pval)
              : NULL;
        mdnid = NID_undef;
        if (pss != NULL && pss->hashAlgorithm != NULL) {
            X509_ALGOR_get0(&aobj, NULL, NULL, pss->hashAlgorithm);
            mdnid = OBJ_obj2nid(aobj);
        }
        RSA_PSS_PARAMS_free(pss);
        ERR_clear_error();

    } else if (!OBJ_find_sigid_algs(nid, &mdnid, &pknid)) {
        return NULL;                /* OpenSSL's verification decides */
    }

    switch (mdnid) {
    case NID_md2:
    case NID_md4:
    case NID_md5:
        return "the CSR is signed with MD2, MD4 or MD5, whose collisions "
               "make its signature no proof of possession";
    }

    return NULL;
}


/*
 * Why a request's key is refused before its signature is checked, or NULL.
 * The check's cost is the key's: an RSA modulus of 16384 bits, or a public
 * exponent of thousands of bits (3070 bits: 44 ms a request, against
 * 0.3 ms for RSA-3072 with 65537), or a DSA key of a 10000-bit prime
 * (64 ms) is work any sender could make a server do.  What no template can
 * issue is not checked at all: a key that is no EC, RSA or EdDSA key, an
 * RSA modulus over the largest a template allows (16384 bits), an exponent
 * over 32 bits (Go refuses over 31).
 */
const char *
pki_int_csr_key_refused(const EVP_PKEY *pk)
{
    int      ok;
    BIGNUM  *e;

    switch (EVP_PKEY_get_base_id(pk)) {

    case EVP_PKEY_EC:
        return NULL;

    case EVP_PKEY_ED25519:
    case EVP_PKEY_ED448:
        return pki_int_key_weak(pk);

    case EVP_PKEY_RSA:
        if (EVP_PKEY_get_bits(pk) > 16384) {
            return "RSA modulus over 16384 bits";
        }

        e = NULL;
        ok = EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &e)
             && BN_num_bits(e) <= 32;
        BN_free(e);
        ERR_clear_error();

        return ok ? pki_int_key_weak(pk) : "RSA public exponent over 32 bits";

    default:
        return "unsupported public key type";
    }
}


/* An EC key that is the point at infinity (the single octet 0, which
 * o2i_ECPublicKey() takes): no key at all, and one for which a forged
 * signature verifies. */
int
pki_int_key_at_infinity(const EVP_PKEY *pk)
{
    const EC_KEY  *ec;

    if (EVP_PKEY_get_base_id(pk) != EVP_PKEY_EC) {
        return 0;
    }

    ec = EVP_PKEY_get0_EC_KEY(pk);

    return ec == NULL || EC_KEY_get0_public_key(ec) == NULL
           || EC_POINT_is_at_infinity(EC_KEY_get0_group(ec),
                                      EC_KEY_get0_public_key(ec));
}


/* The detail of a request whose attributes (n of them, the i-th from
 * at(src, i)) break PKCS#9's rules, or NULL: an attribute type appears
 * at most once (OpenSSL's X509_REQ_add1_attr() refuses a repeat, its
 * d2i reader keeps it, and the readers of extensions and of the
 * challenge take the first), challengePassword and extensionRequest hold
 * exactly one value (RFC 2985 5.4.1, 5.4.2), and a request carries
 * extensionRequest or Microsoft's form of it, not both. */
const char *
pki_int_csr_attrs_refused(const void *src, int n,
    X509_ATTRIBUTE *(*at)(const void *src, int i))
{
    int                 i, j, nid, ext;
    X509_ATTRIBUTE     *a;
    const ASN1_OBJECT  *obj;

    /* the check of repeats is quadratic: a request of 64 KiB could hold
     * thousands of empty attributes (a few have a handful) */
    if (n > PKI_CSR_ATTRS_MAX) {
        return "the CSR has more than 64 attributes";
    }

    for (ext = 0, i = 0; i < n; i++) {
        a = at(src, i);
        obj = X509_ATTRIBUTE_get0_object(a);
        if (obj == NULL) {
            return "a CSR attribute has no type";
        }

        for (j = 0; j < i; j++) {
            if (OBJ_cmp(obj, X509_ATTRIBUTE_get0_object(at(src, j))) == 0) {
                return "a CSR attribute appears twice";
            }
        }

        nid = OBJ_obj2nid(obj);
        if ((nid == NID_pkcs9_challengePassword || nid == NID_ext_req
             || nid == NID_ms_ext_req)
            && X509_ATTRIBUTE_count(a) != 1)
        {
            return nid == NID_pkcs9_challengePassword
                   ? "the CSR's challengePassword must hold one value"
                   : "the CSR's extensionRequest must hold one value";
        }

        if (nid == NID_ext_req || nid == NID_ms_ext_req) {
            if (ext++) {
                return "the CSR carries extensionRequest twice (PKCS#9 "
                       "and Microsoft's)";
            }
        }
    }

    return NULL;
}


/* The text of a challengePassword value (a DirectoryString, RFC 2985
 * 5.4.1), see issue_int.h. */
int
pki_int_challenge_text(const ASN1_TYPE *t, size_t max,
    const unsigned char **pw, size_t *len, unsigned char **buf)
{
    int                   i, n, w;
    unsigned char        *u;
    unsigned long         c;
    const ASN1_STRING    *s;
    const unsigned char  *p;

    *buf = NULL;

    if (t == NULL) {
        return 0;
    }

    switch (t->type) {
    case V_ASN1_PRINTABLESTRING:
    case V_ASN1_UTF8STRING:
    case V_ASN1_IA5STRING:
    case V_ASN1_T61STRING:
        *pw = t->value.asn1_string->data;
        *len = (size_t) t->value.asn1_string->length;
        return 1;
    case V_ASN1_BMPSTRING:
        w = 2;
        break;
    case V_ASN1_UNIVERSALSTRING:
        w = 4;
        break;
    default:
        return 0;
    }

    /* UCS-2 (no surrogate pairs) or UCS-4, big-endian: every character
     * one UTF-8 octet at least, so more than max characters never fit */
    s = t->value.asn1_string;
    n = s->length;
    p = s->data;

    if (n <= 0 || n % w != 0 || (size_t) (n / w) > max) {
        return 0;
    }

    for (i = 0; i < n; i += w) {
        c = w == 2 ? (unsigned long) p[i] << 8 | p[i + 1]
                   : (unsigned long) p[i] << 24
                     | (unsigned long) p[i + 1] << 16
                     | (unsigned long) p[i + 2] << 8 | p[i + 3];

        /* a NUL would end the text early for a reader in C; surrogates
         * and values past U+10FFFF are no characters */
        if (c == 0 || (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff) {
            return 0;
        }
    }

    u = NULL;
    n = ASN1_STRING_to_UTF8(&u, s);

    if (n <= 0 || (size_t) n > max) {
        OPENSSL_clear_free(u, n > 0 ? (size_t) n : 0);
        ERR_clear_error();
        return 0;
    }

    *buf = u;
    *pw = u;
    *len = (size_t) n;

    return 1;
}


static X509_ATTRIBUTE *
pki_csr_stack_attr(const void *src, int i)
{
    return sk_X509_ATTRIBUTE_value((const STACK_OF(X509_ATTRIBUTE) *) src,
                                   i);
}


/* The detail of a request whose EC key is a point in hybrid form (first
 * octet 06 or 07: 04 || x || y with the parity of y in the octet), or
 * NULL.  RFC 5480 2.2: the hybrid form MUST NOT be used; Go's crypto/x509
 * and BoringSSL refuse a certificate carrying one, and OpenSSL would copy
 * it into the certificate as it came. */
const char *
pki_int_csr_point_refused(const X509_PUBKEY *xpk)
{
    int                   len;
    ASN1_OBJECT          *aobj;
    const unsigned char  *pt;

    if (xpk == NULL
        || !X509_PUBKEY_get0_param(&aobj, &pt, &len, NULL, xpk)
        || OBJ_obj2nid(aobj) != NID_X9_62_id_ecPublicKey
        || len <= 0 || (pt[0] != 0x06 && pt[0] != 0x07))
    {
        return NULL;
    }

    return pki_csr_hybrid;
}


/*
 * A certificate's subject key as it is to be carried: an EC point in
 * compressed form (02, 03), which a request may send (RFC 5480 2.2 allows
 * it) but Go's crypto/x509 refuses in a certificate, is set again
 * uncompressed (04 || x || y); any other key is left as it is.  Returns 1,
 * or 0 when the key cannot be re-encoded.  The cost (a decompression) is
 * paid only for a compressed point.
 */
int
pki_int_cert_point_uncompressed(X509 *x)
{
    int                   len, ptype, ok;
    EC_KEY               *ec;
    EVP_PKEY             *pk;
    X509_PUBKEY          *xpk;
    X509_ALGOR           *alg;
    const void           *pval;
    ASN1_OBJECT          *aobj;
    const unsigned char  *pt;

    xpk = X509_get_X509_PUBKEY(x);
    if (xpk == NULL
        || !X509_PUBKEY_get0_param(&aobj, &pt, &len, &alg, xpk))
    {
        return 0;
    }

    if (OBJ_obj2nid(aobj) != NID_X9_62_id_ecPublicKey
        || len <= 0 || (pt[0] != 0x02 && pt[0] != 0x03))
    {
        return 1;
    }

    X509_ALGOR_get0(NULL, &ptype, &pval, alg);
    if (ptype != V_ASN1_OBJECT) {
        return 0;                   /* explicit parameters: refused before */
    }

    ec = pki_csr_ec_key(OBJ_obj2nid(pval));
    if (ec == NULL || o2i_ECPublicKey(&ec, &pt, len) == NULL) {
        EC_KEY_free(ec);
        return 0;
    }

    EC_KEY_set_conv_form(ec, POINT_CONVERSION_UNCOMPRESSED);

    pk = EVP_PKEY_new();
    if (pk == NULL || !EVP_PKEY_assign_EC_KEY(pk, ec)) {
        EC_KEY_free(ec);
        EVP_PKEY_free(pk);
        return 0;
    }

    ok = X509_set_pubkey(x, pk);
    EVP_PKEY_free(pk);

    return ok;
}


/* The request's key, or NULL: then *refused tells why a key is refused
 * (at infinity, a hybrid point) from one this reader leaves to OpenSSL's
 * (NULL). */
static EVP_PKEY *
pki_csr_key(const PKI_SPKI *spki, const char **refused)
{
    int                   ptype, nid, len;
    RSA                  *rsa;
    EC_KEY               *ec;
    EVP_PKEY             *pk;
    const void           *pval;
    const ASN1_OBJECT    *aobj;
    const unsigned char  *p;

    X509_ALGOR_get0(&aobj, &ptype, &pval, spki->alg);

    p = ASN1_STRING_get0_data(spki->bits);
    len = ASN1_STRING_length(spki->bits);

    if (len <= 0 || (spki->bits->flags & 0x07) != 0) {
        return NULL;                /* unused bits in a key: not ours */
    }

    pk = EVP_PKEY_new();
    if (pk == NULL) {
        return NULL;
    }

    switch (OBJ_obj2nid(aobj)) {

    case NID_X9_62_id_ecPublicKey:
        if (ptype != V_ASN1_OBJECT) {
            goto fallback;          /* explicit parameters */
        }

        nid = OBJ_obj2nid(pval);
        if (nid != NID_X9_62_prime256v1 && nid != NID_secp384r1
            && nid != NID_secp521r1)
        {
            goto fallback;
        }

        if (p[0] == 0x06 || p[0] == 0x07) {
            *refused = pki_csr_hybrid;
            goto fallback;
        }

        ec = pki_csr_ec_key(nid);
        if (ec == NULL) {
            goto fallback;
        }

        if (o2i_ECPublicKey(&ec, &p, len) == NULL
            || p != ASN1_STRING_get0_data(spki->bits) + len)
        {
            EC_KEY_free(ec);
            goto fallback;
        }

        if (EC_POINT_is_at_infinity(EC_KEY_get0_group(ec),
                                    EC_KEY_get0_public_key(ec)))
        {
            EC_KEY_free(ec);
            *refused = "the CSR's public key is the point at infinity";
            goto fallback;
        }

        if (!EVP_PKEY_assign_EC_KEY(pk, ec)) {
            EC_KEY_free(ec);
            goto fallback;
        }

        return pk;

    case NID_rsaEncryption:
        if (ptype != V_ASN1_NULL) {
            goto fallback;
        }

        rsa = d2i_RSAPublicKey(NULL, &p, len);
        if (rsa == NULL
            || p != ASN1_STRING_get0_data(spki->bits) + len
            || !EVP_PKEY_assign_RSA(pk, rsa))
        {
            RSA_free(rsa);
            goto fallback;
        }

        return pk;

    default:
        break;
    }

fallback:

    EVP_PKEY_free(pk);
    return NULL;
}


/*
 * The self-signature of an EC request signed with ecdsa-with-SHA256/384/512
 * (no parameters, as RFC 5758 3.2 says): 1 verifies, 0 does not, -1 not
 * handled here (ASN1_item_verify() decides).  der/len is the whole request,
 * whose first element is the CertificationRequestInfo as signed.
 */
static int
pki_csr_ecdsa_pop(const unsigned char *der, size_t len, const PKI_REQ *pr,
    EVP_PKEY *pk)
{
    int                   ptype, tag, xclass, nid, inf;
    long                  body, infolen;
    EC_KEY               *ec;
    const void           *pval;
    const ASN1_OBJECT    *aobj;
    const unsigned char  *p, *info;
    unsigned char         md[SHA512_DIGEST_LENGTH];
    size_t                mdlen;

    if (EVP_PKEY_get_base_id(pk) != EVP_PKEY_EC
        || (ec = (EC_KEY *) EVP_PKEY_get0_EC_KEY(pk)) == NULL
        || (pr->sig->flags & 0x07) != 0)
    {
        return -1;
    }

    X509_ALGOR_get0(&aobj, &ptype, &pval, pr->sig_alg);
    nid = OBJ_obj2nid(aobj);
    if (ptype != V_ASN1_UNDEF
        || (nid != NID_ecdsa_with_SHA256 && nid != NID_ecdsa_with_SHA384
            && nid != NID_ecdsa_with_SHA512))
    {
        return -1;
    }

    /* the outer SEQUENCE, then the info's own header: its full span */
    p = der;
    inf = ASN1_get_object(&p, &body, &tag, &xclass, (long) len);
    if ((inf & 0x80) || tag != V_ASN1_SEQUENCE || xclass != V_ASN1_UNIVERSAL
        || inf != V_ASN1_CONSTRUCTED)
    {
        return -1;
    }

    info = p;
    inf = ASN1_get_object(&p, &body, &tag, &xclass,
                          (long) (len - (size_t) (p - der)));
    if ((inf & 0x80) || tag != V_ASN1_SEQUENCE || xclass != V_ASN1_UNIVERSAL
        || inf != V_ASN1_CONSTRUCTED)
    {
        return -1;
    }

    infolen = (long) (p - info) + body;
    if (infolen <= 0 || (size_t) (info - der) + (size_t) infolen > len) {
        return -1;
    }

    switch (nid) {
    case NID_ecdsa_with_SHA256:
        SHA256(info, (size_t) infolen, md);
        mdlen = SHA256_DIGEST_LENGTH;
        break;
    case NID_ecdsa_with_SHA384:
        SHA384(info, (size_t) infolen, md);
        mdlen = SHA384_DIGEST_LENGTH;
        break;
    default:
        SHA512(info, (size_t) infolen, md);
        mdlen = SHA512_DIGEST_LENGTH;
    }

    /* ECDSA_verify() refuses a signature that is not DER, as the provider
     * does (it is what the provider calls) */
    return ECDSA_verify(0, md, (int) mdlen,
                        ASN1_STRING_get0_data(pr->sig),
                        ASN1_STRING_length(pr->sig), ec) == 1;
}


/*
 * Parses and checks a request: *pr and *pk set when it returns 1 with
 * *st == PKI_OK (the caller frees both); 1 with the refusal in *st and res
 * (bad self-signature); 0 when this reader does not handle the request.
 */
static int
pki_csr_fast_check(const unsigned char *der, size_t len, PKI_REQ **out,
    EVP_PKEY **outpk, pki_status_t *st, pki_result_t *res)
{
    int                   n, i;
    PKI_REQ              *pr;
    EVP_PKEY             *pk;
    const char           *why, *refused;
    unsigned char        *enc;
    const unsigned char  *p;

    *out = NULL;
    *outpk = NULL;

    p = der;
    pr = (PKI_REQ *) ASN1_item_d2i(NULL, &p, (long) len,
                                   ASN1_ITEM_rptr(PKI_REQ));
    if (pr == NULL) {
        ERR_clear_error();
        return 0;                   /* let OpenSSL's reader say why */
    }

    pk = NULL;
    refused = NULL;

    if ((size_t) (p - der) != len) {
        goto fallback;
    }

    /* Strict DER: the request must re-encode to the bytes received, so
     * the signature below covers exactly what was parsed. */
    enc = NULL;
    n = ASN1_item_i2d((ASN1_VALUE *) pr, &enc, ASN1_ITEM_rptr(PKI_REQ));
    if (n < 0 || (size_t) n != len || memcmp(enc, der, len) != 0) {
        OPENSSL_free(enc);
        goto fallback;
    }
    OPENSSL_free(enc);

    if (ASN1_INTEGER_get(pr->info->version) != X509_REQ_VERSION_1) {
        goto fallback;
    }

    pk = pki_csr_key(pr->info->spki, &refused);
    if (pk == NULL) {
        if (refused == NULL) {
            goto fallback;
        }

        ASN1_item_free((ASN1_VALUE *) pr, ASN1_ITEM_rptr(PKI_REQ));
        ERR_clear_error();
        *st = pki_fail(res, PKI_MALFORMED, "%s", refused);
        return 1;
    }

    why = pki_int_csr_key_refused(pk);
    if (why != NULL) {
        EVP_PKEY_free(pk);
        ASN1_item_free((ASN1_VALUE *) pr, ASN1_ITEM_rptr(PKI_REQ));
        *st = pki_fail(res, PKI_POLICY, "the CSR's key: %s", why);
        return 1;
    }

    why = pki_int_csr_sig_refused(pr->sig_alg);
    if (why != NULL) {
        EVP_PKEY_free(pk);
        ASN1_item_free((ASN1_VALUE *) pr, ASN1_ITEM_rptr(PKI_REQ));
        *st = pki_fail(res, PKI_POLICY, "%s", why);
        return 1;
    }

    i = pki_csr_ecdsa_pop(der, len, pr, pk);
    if (i < 0) {
        i = ASN1_item_verify(ASN1_ITEM_rptr(PKI_REQ_INFO), pr->sig_alg,
                             pr->sig, pr->info, pk) == 1;
    }

    if (i != 1) {
        EVP_PKEY_free(pk);
        ASN1_item_free((ASN1_VALUE *) pr, ASN1_ITEM_rptr(PKI_REQ));
        ERR_clear_error();
        *st = pki_fail(res, PKI_BAD_SIGNATURE, "CSR signature does not "
                       "verify");
        return 1;
    }

    *out = pr;
    *outpk = pk;
    *st = PKI_OK;
    return 1;

fallback:

    EVP_PKEY_free(pk);
    ASN1_item_free((ASN1_VALUE *) pr, ASN1_ITEM_rptr(PKI_REQ));
    ERR_clear_error();

    return 0;
}


/*
 * Returns 1 with *st set (PKI_OK and *out, or the refusal with res
 * filled), or 0 when this reader does not handle the request and
 * d2i_X509_REQ() must.
 */
int
pki_int_csr_fast(const unsigned char *der, size_t len, X509_REQ **out,
    pki_status_t *st, pki_result_t *res)
{
    int         i;
    PKI_REQ    *pr;
    X509_REQ   *csr;
    EVP_PKEY   *pk;

    *out = NULL;

    if (!pki_csr_fast_check(der, len, &pr, &pk, st, res)) {
        return 0;
    }

    if (*st != PKI_OK) {
        return 1;
    }

    {
        const char  *why;

        why = pki_int_csr_attrs_refused(pr->info->attributes,
                                        sk_X509_ATTRIBUTE_num(
                                            pr->info->attributes),
                                        pki_csr_stack_attr);
        if (why != NULL) {
            *st = pki_fail(res, PKI_MALFORMED, "%s", why);
            csr = NULL;
            goto done;
        }
    }

    csr = X509_REQ_new();
    if (csr == NULL
        || !X509_REQ_set_version(csr, X509_REQ_VERSION_1)
        || !X509_REQ_set_subject_name(csr, pr->info->subject)
        || !X509_REQ_set_pubkey(csr, pk))
    {
        goto internal;
    }

    for (i = 0; i < sk_X509_ATTRIBUTE_num(pr->info->attributes); i++) {
        if (!X509_REQ_add1_attr(csr,
                                sk_X509_ATTRIBUTE_value(pr->info->attributes,
                                                        i)))
        {
            goto internal;
        }
    }

    {
        X509_ALGOR       *alg;
        ASN1_BIT_STRING  *sig;

        alg = X509_ALGOR_dup(pr->sig_alg);
        sig = ASN1_STRING_dup(pr->sig);

        if (alg == NULL || sig == NULL
            || !X509_REQ_set1_signature_algo(csr, alg))
        {
            X509_ALGOR_free(alg);
            ASN1_BIT_STRING_free(sig);
            goto internal;
        }

        X509_ALGOR_free(alg);
        X509_REQ_set0_signature(csr, sig);
    }

    *out = csr;
    csr = NULL;
    goto done;

internal:

    *st = pki_fail(res, PKI_INTERNAL, "cannot assemble the CSR");

done:

    X509_REQ_free(csr);
    EVP_PKEY_free(pk);
    ASN1_item_free((ASN1_VALUE *) pr, ASN1_ITEM_rptr(PKI_REQ));
    ERR_clear_error();

    return 1;
}


/*
 * What a Matter DAC request takes from a CSR (the public key, the
 * signature algorithm, the subject), checked like pki_csr_parse() does but
 * without assembling an X509_REQ that nobody reads.  Returns 1 with *st
 * set (PKI_OK: *pk referenced and *subject owned by the caller; or the
 * refusal), 0 when the caller must use pki_csr_parse() (which then also
 * gives the refusals of what this reader does not take).
 */
int
pki_int_csr_parts(const unsigned char *der, size_t len, EVP_PKEY **pk,
    X509_NAME **subject, int *signid, pki_status_t *st, pki_result_t *res)
{
    PKI_REQ  *pr;

    *pk = NULL;
    *subject = NULL;

    if (der == NULL || len == 0 || len > PKI_CSR_MAX
        || !pki_csr_fast_check(der, len, &pr, pk, st, res))
    {
        return 0;
    }

    if (*st != PKI_OK) {
        return 1;
    }

    {
        const char         *why;
        const ASN1_OBJECT  *aobj;

        /* the attribute rules every other reader applies */
        why = pki_int_csr_attrs_refused(pr->info->attributes,
                                        sk_X509_ATTRIBUTE_num(
                                            pr->info->attributes),
                                        pki_csr_stack_attr);
        if (why != NULL) {
            *st = pki_fail(res, PKI_MALFORMED, "%s", why);
            EVP_PKEY_free(*pk);
            *pk = NULL;
            ASN1_item_free((ASN1_VALUE *) pr, ASN1_ITEM_rptr(PKI_REQ));
            return 1;
        }

        X509_ALGOR_get0(&aobj, NULL, NULL, pr->sig_alg);
        *signid = OBJ_obj2nid(aobj);
    }
    *subject = pr->info->subject;
    pr->info->subject = NULL;           /* taken */

    ASN1_item_free((ASN1_VALUE *) pr, ASN1_ITEM_rptr(PKI_REQ));

    return 1;
}
