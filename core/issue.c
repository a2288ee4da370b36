/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Issuance: CSR parsing, the policy that turns a CSR into an explicit
 * request, the certificate builder and the Redis-backed issue flow
 * (reserve serial + intent, sign, verify, commit).
 */

#include <arpa/inet.h>
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <idn2.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "issue_int.h"
#include "audit_int.h"
#include "matter_int.h"


#define PKI_SERIAL_TRIES  5


static pki_status_t pki_check_key(const pki_template_t *t, EVP_PKEY *pk,
    pki_result_t *res);
static pki_status_t pki_csr_sans(X509_REQ *csr, GENERAL_NAMES **out,
    pki_result_t *res);
static pki_status_t pki_build(const pki_template_t *t, const pki_ca_t *ca,
    const pki_request_t *req, X509 **out, pki_result_t *res);
static char *pki_sans_text(const GENERAL_NAMES *gens);
static int pki_dns_ok(const unsigned char *s, int len, int wildcard);
static int pki_email_ok(const unsigned char *s, int len);
static int pki_dns_name_ok(const pki_template_t *t, const unsigned char *s,
    int len, const char **why);


/* ---- CSR ----------------------------------------------------------------- */

static X509_ATTRIBUTE *
pki_csr_req_attr(const void *src, int i)
{
    return X509_REQ_get_attr((const X509_REQ *) src, i);
}


pki_status_t
pki_csr_parse(const unsigned char *der, size_t len, X509_REQ **out,
    pki_result_t *res)
{
    int                   n;
    X509_REQ             *csr;
    EVP_PKEY             *pk;
    const char           *why;
    pki_status_t          st;
    unsigned char        *enc;
    const unsigned char  *p;

    if (out == NULL) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    *out = NULL;

    if (der == NULL || len == 0) {
        return pki_fail(res, PKI_MALFORMED, "empty CSR");
    }

    if (len > PKI_CSR_MAX) {
        return pki_fail(res, PKI_TOO_LARGE, "CSR is larger than %d bytes",
                        PKI_CSR_MAX);
    }

    if (pki_int_csr_fast(der, len, out, &st, res)) {
        return st;
    }

    p = der;
    csr = d2i_X509_REQ(NULL, &p, (long) len);
    if (csr == NULL) {
        return pki_fail(res, PKI_MALFORMED, "CSR is not a DER PKCS#10 "
                        "request");
    }

    if ((size_t) (p - der) != len) {
        X509_REQ_free(csr);
        return pki_fail(res, PKI_MALFORMED, "trailing data after the CSR");
    }

    enc = NULL;
    n = i2d_X509_REQ(csr, &enc);
    if (n < 0 || (size_t) n != len || memcmp(enc, der, len) != 0) {
        OPENSSL_free(enc);
        X509_REQ_free(csr);
        return pki_fail(res, PKI_MALFORMED, "CSR is not DER encoded");
    }
    OPENSSL_free(enc);

    /* RFC 2986 has only version 0, but certbot before 1.29 (pyOpenSSL's
     * X509Req.set_version(2)) and the acme-client gem before 2.0.19 (GitLab,
     * Debian 12) write 2, which Let's Encrypt and step-ca (Go's parser)
     * take; the version is signed and never copied into the certificate */
    if (X509_REQ_get_version(csr) != X509_REQ_VERSION_1
        && X509_REQ_get_version(csr) != 2)
    {
        X509_REQ_free(csr);
        return pki_fail(res, PKI_MALFORMED, "unsupported CSR version");
    }

    pk = X509_REQ_get0_pubkey(csr);
    if (pk == NULL) {
        X509_REQ_free(csr);
        return pki_fail(res, PKI_MALFORMED, "CSR public key cannot be "
                        "decoded");
    }

    if (pki_int_key_at_infinity(pk)) {
        X509_REQ_free(csr);
        ERR_clear_error();
        return pki_fail(res, PKI_MALFORMED, "the CSR's public key is the "
                        "point at infinity");
    }

    why = pki_int_csr_point_refused(X509_REQ_get_X509_PUBKEY(csr));
    if (why != NULL) {
        X509_REQ_free(csr);
        return pki_fail(res, PKI_MALFORMED, "%s", why);
    }

    why = pki_int_csr_key_refused(pk);
    if (why != NULL) {
        X509_REQ_free(csr);
        return pki_fail(res, PKI_POLICY, "the CSR's key: %s", why);
    }

    {
        const X509_ALGOR  *alg;

        X509_REQ_get0_signature(csr, NULL, &alg);
        why = pki_int_csr_sig_refused(alg);
        if (why != NULL) {
            X509_REQ_free(csr);
            return pki_fail(res, PKI_POLICY, "%s", why);
        }
    }

    if (X509_REQ_verify(csr, pk) != 1) {
        X509_REQ_free(csr);
        return pki_fail(res, PKI_BAD_SIGNATURE, "CSR signature does not "
                        "verify");
    }

    why = pki_int_csr_attrs_refused(csr, X509_REQ_get_attr_count(csr),
                                    pki_csr_req_attr);
    if (why != NULL) {
        X509_REQ_free(csr);
        return pki_fail(res, PKI_MALFORMED, "%s", why);
    }

    ERR_clear_error();
    *out = csr;

    return PKI_OK;
}


static const char *
pki_kt_article_name(pki_kt_t type)
{
    switch (type) {
    case PKI_KT_RSA:
        return "an RSA";
    case PKI_KT_EC:
        return "an EC";
    case PKI_KT_ED25519:
        return "an Ed25519";
    case PKI_KT_ED448:
        return "an Ed448";
    default:
        return "this";
    }
}


/* ---- policy ------------------------------------------------------------ */

static pki_status_t
pki_check_key(const pki_template_t *t, EVP_PKEY *pk, pki_result_t *res)
{
    int             n;
    char            desc[64];
    const char     *allowed, *why;
    pki_key_type_t  kt;

    if (!pki_int_classify_key(pk, &kt)) {
        return pki_fail(res, PKI_POLICY, "unsupported public key type");
    }

    /* a CSR's key was checked by its reader, but pkictl's and a server
     * keygen's were not */
    why = pki_int_key_weak(pk);
    if (why != NULL) {
        return pki_fail(res, PKI_POLICY, "%s", why);
    }

    /* RFC 5480 2.1.1: named curves only, never specifiedCurve. */
    if (kt.type == PKI_KT_EC) {
        int  explicit = 0;

        if (EVP_PKEY_get_int_param(pk,
                                   OSSL_PKEY_PARAM_EC_DECODED_FROM_EXPLICIT_PARAMS,
                                   &explicit) == 1
            && explicit)
        {
            return pki_fail(res, PKI_POLICY, "EC keys with explicit curve "
                            "parameters are not allowed (RFC 5480)");
        }
    }

    /* an odd public exponent of at least 3: with e = 1 a signature is a
     * copy of its message, so the CSR's own proves nothing, and an even
     * one is no RSA key */
    if (kt.type == PKI_KT_RSA) {
        int      bad;
        BIGNUM  *e = NULL;

        bad = EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &e) != 1
              || BN_is_negative(e) || !BN_is_odd(e) || BN_is_one(e);
        BN_free(e);

        if (bad) {
            return pki_fail(res, PKI_POLICY, "RSA public exponent must be "
                            "odd and at least 3");
        }
    }

    if (pki_int_key_allowed(t, pk)) {
        if (!pki_int_ed_key_usage_ok(t, kt.type)) {
            return pki_fail(res, PKI_POLICY, "template \"%s\": "
                            PKI_ED_KU_RULE, t->name);
        }

        if (!pki_int_key_usage_ok(t, kt.type)) {
            return pki_fail(res, PKI_POLICY, "the key usage of template "
                            "\"%s\" does not suit %s key: " PKI_KU_RULE,
                            t->name, pki_kt_article_name(kt.type));
        }

        return PKI_OK;
    }

    pki_int_key_types(t, &n, &allowed);
    pki_int_describe_key(&kt, desc, sizeof(desc));

    return pki_fail(res, PKI_POLICY, "key type %s is not allowed by template "
                    "\"%s\" (allowed: %s)", desc, t->name, allowed);
}


static const char *
pki_attr_text(const ASN1_OBJECT *obj, char *buf, int size)
{
    int  nid;

    nid = OBJ_obj2nid(obj);
    if (nid != NID_undef && OBJ_nid2sn(nid) != NULL) {
        snprintf(buf, (size_t) size, "%s", OBJ_nid2sn(nid));

    } else if (OBJ_obj2txt(buf, size, obj, 1) <= 0) {
        snprintf(buf, (size_t) size, "?");
    }

    return buf;
}


/* The upper bound, in characters, of an attribute's value (RFC 5280's
 * ub-* values; 256 for the others). */
static int
pki_name_ub(int nid)
{
    switch (nid) {
    case NID_countryName:
        return 2;
    case NID_commonName:
    case NID_organizationName:
    case NID_organizationalUnitName:
    case NID_title:
    case NID_serialNumber:
        return 64;
    case NID_localityName:
    case NID_stateOrProvinceName:
    case NID_pseudonym:
        return 128;
    case NID_pkcs9_emailAddress:
        return 255;
    }

    return 256;
}


#define pki_ascii_letter(c)  (((c) | 0x20) >= 'a' && ((c) | 0x20) <= 'z')


/* 1 when s is of PrintableString's alphabet (X.680). */
static int
pki_printable(const unsigned char *s, int len)
{
    int  i;

    for (i = 0; i < len; i++) {
        if (!pki_ascii_letter(s[i]) && !(s[i] >= '0' && s[i] <= '9')
            && (s[i] == '\0' || strchr(" '()+,-./:=?", s[i]) == NULL))
        {
            return 0;
        }
    }

    return 1;
}


/* The string type a subject attribute's value is issued in (RFC 5280
 * appendix A): an IA5String for emailAddress and domainComponent, a
 * PrintableString for countryName, serialNumber and dnQualifier, 0 for
 * the DirectoryString attributes (CN, O, OU, L, ST, title, ...), issued
 * as a PrintableString or UTF8String (RFC 5280 4.1.2.4). */
static int
pki_name_type(int nid)
{
    switch (nid) {
    case NID_pkcs9_emailAddress:
    case NID_domainComponent:
        return V_ASN1_IA5STRING;
    case NID_countryName:
    case NID_serialNumber:
    case NID_dnQualifier:
        return V_ASN1_PRINTABLESTRING;
    }

    return 0;
}


/* 1 for a code point no subject value may hold: a C0 or C1 control,
 * DEL, a bidi control, a zero-width character, the word joiner or the
 * BOM, which reorder or hide what a person reads ("dev\u202e1gpj.exe"
 * shows as "dev1exe.jpg"), or a surrogate. */
static int
pki_name_char_refused(unsigned long c)
{
    return c < 0x20 || (c >= 0x7f && c <= 0x9f)
           || (c >= 0x200b && c <= 0x200f)
           || (c >= 0x202a && c <= 0x202e)
           || c == 0x2060 || (c >= 0x2066 && c <= 0x2069)
           || c == 0xfeff || (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff;
}


/*
 * A subject value from a request as it is issued: its UTF-8 text in
 * *utf8 (OPENSSL_free) and its string type in *type; returns the text's
 * length, or 0 for a value refused, with why said.
 *
 * The request's type must be a directory string type whose bytes are of
 * its own alphabet (a PrintableString of printable characters, an
 * IA5String of ASCII); the text holds no control, bidi or invisible
 * character (pki_name_char_refused) and at most the attribute's upper
 * bound of characters; the attribute's own type must hold it (ASCII for
 * an IA5String, PrintableString's alphabet, a country of two letters).
 * A DirectoryString attribute keeps a PrintableString or UTF8String and
 * takes an IA5String, T61String or BMPString as UTF8String.
 */
static int
pki_name_value(const X509_NAME_ENTRY *e, int *type, unsigned char **utf8,
    const char **why)
{
    int                   len, in, i, n, chars, nid;
    unsigned long         c;
    const ASN1_STRING    *d;
    const unsigned char  *raw;

    *utf8 = NULL;

    d = X509_NAME_ENTRY_get_data(e);
    in = ASN1_STRING_type(d);
    raw = ASN1_STRING_get0_data(d);
    len = ASN1_STRING_length(d);
    nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(e));

    *why = "a character outside its string type's alphabet";

    switch (in) {
    case V_ASN1_PRINTABLESTRING:
        if (!pki_printable(raw, len)) {
            return 0;
        }
        break;
    case V_ASN1_IA5STRING:
        for (i = 0; i < len; i++) {
            if (raw[i] >= 0x80) {
                return 0;
            }
        }
        break;
    case V_ASN1_UTF8STRING:
    case V_ASN1_T61STRING:
    case V_ASN1_BMPSTRING:
        break;
    default:
        *why = "a string type other than a directory string's";
        return 0;
    }

    *why = "no text or more than 1024 bytes of it";

    len = ASN1_STRING_to_UTF8(utf8, d);
    if (len <= 0 || len > 1024) {
        OPENSSL_free(*utf8);
        *utf8 = NULL;
        ERR_clear_error();
        return 0;
    }

    *why = "a control, bidi or invisible character";

    chars = 0;
    for (i = 0; i < len; i += n) {
        n = UTF8_getc(*utf8 + i, len - i, &c);
        if (n <= 0 || pki_name_char_refused(c)) {
            goto refused;
        }
        chars++;
    }

    if (chars > pki_name_ub(nid)) {
        *why = "more characters than its attribute's upper bound";
        goto refused;
    }

    *type = pki_name_type(nid);

    switch (*type) {
    case V_ASN1_IA5STRING:
        *why = "a character an IA5String cannot hold (ASCII only)";
        if (chars != len) {
            goto refused;
        }
        break;
    case V_ASN1_PRINTABLESTRING:
        if (!pki_printable(*utf8, len)) {
            if (nid == NID_countryName) {
                *why = "a character a PrintableString cannot hold";
                goto refused;
            }

            /* a serialNumber such as "SN_0001", which devices send as a
             * UTF8String: X.520 wants a PrintableString, but refusing it
             * would lock such devices out; issued as it was before */
            *type = V_ASN1_UTF8STRING;
        }
        break;
    default:
        *type = in == V_ASN1_PRINTABLESTRING ? in : V_ASN1_UTF8STRING;
    }

    if (nid == NID_countryName
        && (len != 2 || !pki_ascii_letter((*utf8)[0])
            || !pki_ascii_letter((*utf8)[1])))
    {
        *why = "a country that is not two letters";
        goto refused;
    }

    return len;

refused:

    OPENSSL_free(*utf8);
    *utf8 = NULL;
    ERR_clear_error();

    return 0;
}


/* Appends a request's subject value to name in the type it is issued in
 * (pki_name_value). */
static int
pki_name_copy(X509_NAME *name, const X509_NAME_ENTRY *e)
{
    int             len, ok, type;
    const char     *why;
    unsigned char  *utf8;

    len = pki_name_value(e, &type, &utf8, &why);
    ok = len > 0
         && X509_NAME_add_entry_by_OBJ(name, X509_NAME_ENTRY_get_object(e),
                                       type, utf8, len, -1, 0);
    OPENSSL_free(utf8);

    return ok;
}


/* A name's text for a message and the log: printable ASCII, '?' for
 * the other bytes, at most 64 of them. */
static const char *
pki_shown(const unsigned char *s, int len, char *buf)
{
    int  k;

    for (k = 0; k < len && k < 64; k++) {
        buf[k] = (s[k] > 0x20 && s[k] < 0x7f) ? (char) s[k] : '?';
    }
    buf[k] = '\0';

    return buf;
}


/* 1 when a certificate of template t can serve as a TLS server's: its
 * extendedKeyUsage has serverAuth, anyExtendedKeyUsage or a Server
 * Gated Crypto purpose (Microsoft's or Netscape's, which OpenSSL's
 * sslserver purpose still takes for serverAuth), or it has none. */
static int
pki_tls_server(const pki_template_t *t)
{
    int  i, nid;

    if (t->eku == NULL) {
        return 1;
    }

    for (i = 0; i < sk_ASN1_OBJECT_num(t->eku); i++) {
        nid = OBJ_obj2nid(sk_ASN1_OBJECT_value(t->eku, i));
        if (nid == NID_server_auth || nid == NID_anyExtendedKeyUsage
            || nid == NID_ms_sgc || nid == NID_ns_sgc)
        {
            return 1;
        }
    }

    return 0;
}


/* 1 when template t's certificates name a host in their CN, as
 * pki_check_cn judges a CN that is a DNS name: not a CA's, fit for a TLS
 * server, and with a DNS rule or an extendedKeyUsage that says so.  A
 * device template without either (a serial number for a CN) is not. */
static int
pki_cn_host_template(const pki_template_t *t)
{
    return !t->ca && pki_tls_server(t)
           && (t->san[PKI_SAN_DNS] != PKI_RULE_NONE || t->eku != NULL);
}


/* The bytes of the white space character s (UTF-8, len bytes) starts
 * with, 0 for none: SPACE or another space separator (Zs), which name
 * comparison maps to SPACE and drops at either end of a value (RFC 4518
 * 2.2, 2.6.1; RFC 5280 7.1).  The other white space (TAB, LF, NEL) is a
 * control, refused in any value (pki_name_char_refused). */
static int
pki_space_len(const unsigned char *s, int len)
{
    if (len >= 1 && s[0] == ' ') {
        return 1;
    }

    if (len >= 2 && s[0] == 0xc2 && s[1] == 0xa0) {
        return 2;                               /* U+00A0 */
    }

    if (len >= 3
        && ((s[0] == 0xe1 && s[1] == 0x9a && s[2] == 0x80)   /* U+1680 */
            || (s[0] == 0xe2 && s[1] == 0x80
                && (s[2] <= 0x8a || s[2] == 0xaf))  /* U+2000-200A, 202F */
            || (s[0] == 0xe2 && s[1] == 0x81 && s[2] == 0x9f) /* U+205F */
            || (s[0] == 0xe3 && s[1] == 0x80 && s[2] == 0x80)))
    {                                           /* U+3000 */
        return 3;
    }

    return 0;
}


/* The bytes of the white space character s (UTF-8, len bytes) ends
 * with, 0 for none (pki_space_len). */
static int
pki_space_end(const unsigned char *s, int len)
{
    int  k;

    for (k = 1; k <= 3 && k <= len; k++) {
        if (pki_space_len(s + len - k, k) == k) {
            return k;
        }
    }

    return 0;
}


/* The bytes of the full stop s (UTF-8, len bytes) starts with that IDNA
 * takes for a label separator as it takes '.', 0 for none: U+3002
 * (ideographic), U+FF0E (fullwidth) or U+FF61 (halfwidth ideographic),
 * RFC 3490 3.1; UTS #46 maps them to '.'. */
static int
pki_full_stop_len(const unsigned char *s, int len)
{
    if (len >= 3
        && ((s[0] == 0xe3 && s[1] == 0x80 && s[2] == 0x82)   /* U+3002 */
            || (s[0] == 0xef && s[1] == 0xbc && s[2] == 0x8e) /* U+FF0E */
            || (s[0] == 0xef && s[1] == 0xbd && s[2] == 0xa1)))
    {                                                      /* U+FF61 */
        return 3;
    }

    return 0;
}


/* The label of name (len bytes; labels end at '.' and the full stops of
 * pki_full_stop_len) that equals label (llen LDH bytes, ASCII case
 * folded): 1 found, 0 not. */
static int
pki_has_label(const unsigned char *name, int len, const char *label,
    size_t llen)
{
    int  i, b, k;

    for (b = 0, i = 0; i <= len; i++) {
        k = (i == len || name[i] == '.') ? 1
                                         : pki_full_stop_len(name + i, len - i);
        if (k == 0) {
            continue;
        }

        if ((size_t) (i - b) == llen
            && strncasecmp((const char *) name + b, label, llen) == 0)
        {
            return 1;
        }

        i += k - 1;
        b = i + 1;
    }

    return 0;
}


/* A non-ASCII CN (s, len bytes, no '*') that IDNA's mapping (UTS #46:
 * fullwidth and circled letters, a soft hyphen dropped)
 * turns into a DNS name with an ASCII label the CN does not hold: that
 * name into out (at most size bytes), 1; else 0.  "ｌｏｇｉｎ.bank.example"
 * is login.bank.example to a verifier that maps its host names, and to
 * none a name of its own.  A genuine IDN ("東京.example", "Bücher.de")
 * maps to A-labels and its ASCII labels as they are: 0. */
static int
pki_cn_idna_ascii(const unsigned char *s, int len, char *out, size_t size)
{
    int          rc, found, n;
    char        *a, *p, *dot, buf[1024];
    size_t       alen;

    if (len < 1 || len >= (int) sizeof(buf)) {
        return 0;
    }

    for (n = 0; n < len && s[n] < 0x80; n++) {
        /* void */
    }

    if (n == len) {
        return 0;                       /* ASCII: judged as it is */
    }

    memcpy(buf, s, (size_t) len);
    buf[len] = '\0';

    a = NULL;
    rc = idn2_to_ascii_8z(buf, &a, IDN2_NONTRANSITIONAL);
    if (rc != IDN2_OK || a == NULL) {
        idn2_free(a);
        return 0;                       /* no name IDNA reads */
    }

    alen = strlen(a);
    if (alen > 1 && a[alen - 1] == '.') {
        a[--alen] = '\0';
    }

    found = 0;

    if (memchr(a, '.', alen) != NULL
        && pki_dns_ok((const unsigned char *) a, (int) alen, 0))
    {
        for (p = a; p != NULL && !found; p = dot != NULL ? dot + 1 : NULL) {
            dot = strchr(p, '.');
            n = dot != NULL ? (int) (dot - p) : (int) strlen(p);

            if (n >= 4 && strncasecmp(p, "xn--", 4) == 0) {
                continue;               /* from an IDN label */
            }

            found = !pki_has_label(s, len, p, (size_t) n);
        }
    }

    if (found) {
        snprintf(out, size, "%s", a);
    }

    idn2_free(a);

    return found;
}


/* The address the text s (len bytes) spells, in addr as an iPAddress
 * SAN carries it: 4 or 16 octets, 0 when it spells none.  inet_pton()
 * takes the dotted quad and the IPv6 text forms only, no octal, hex or
 * shortened IPv4 and no zone: curl compares the CN with an IP host as
 * text, and such a host is written in those forms. */
static int
pki_cn_ip(const unsigned char *s, int len, unsigned char *addr)
{
    char  buf[INET6_ADDRSTRLEN];

    if (len < 2 || len >= (int) sizeof(buf)
        || memchr(s, '\0', (size_t) len) != NULL)
    {
        return 0;
    }

    memcpy(buf, s, (size_t) len);
    buf[len] = '\0';

    if (inet_pton(AF_INET, buf, addr) == 1) {
        return 4;
    }

    return inet_pton(AF_INET6, buf, addr) == 1 ? 16 : 0;
}


/*
 * A CN from a request (UTF-8 text) as a TLS client may read it: OpenSSL's
 * X509_check_host, curl, Python's ssl and mbedTLS take the CN for the
 * host name when a certificate has no dNSName, so a CN would otherwise
 * get past the template's DNS rules.  A CN with a '*' needs a template
 * that allows wildcards and then passes as a wildcard dNSName would; a
 * CN that is a DNS name of two labels or more, in an end entity's
 * certificate a TLS server can use, passes as a dNSName would where the
 * template issues DNS names, and is refused where it forbids them or has
 * no DNS rule but names serverAuth (or anyExtendedKeyUsage).  Others pass
 * as before: device serials, client certificates' CNs, a CA's name, and
 * a dotted CN under a template with neither a DNS rule nor an
 * extendedKeyUsage (fleets renew such certificates; the operator never
 * said whether the CN is a host name).  The CN is judged without one
 * trailing dot: curl strips it from the CN as from the host name
 * (lib/vtls/hostcheck.c), so it takes "login.bank.example." for
 * login.bank.example.  It is judged without the white space at either
 * end too, which name comparison drops (RFC 4518 2.6.1), and a CN so
 * judged that has any is refused: " login.bank.example" is that name to
 * a verifier that folds it and no name to one that does not, and no
 * requester needs the padding.  White space inside ("Device 33.1") makes
 * no DNS name either way.  A full stop IDNA takes for '.'
 * (pki_full_stop_len) is judged as '.', and a CN so judged to be a DNS
 * name is refused wherever such a CN is judged, whatever the template's
 * DNS rules: a client or resolver that maps it reads
 * "login\u3002bank.example" as login.bank.example, one that does not
 * reads no name, and no host name needs one.  Refusing is safer than
 * issuing it where a dNSName of the name would pass: the bytes issued
 * would not be the name judged, nor a name all verifiers agree on.
 * A CN that is an IP address (pki_cn_ip) is judged where a DNS name is,
 * and also where the template has an IP rule: curl takes the CN for an
 * IP host too when a certificate has no SAN, so such a CN passes where
 * the template issues iPAddress SANs and is refused where it forbids them
 * or has no IP rule (pki_dns_ok, which refuses an all-digit last label,
 * let it through as no host name).
 */
static pki_status_t
pki_check_cn(const pki_template_t *t, const unsigned char *cn, int len,
    pki_result_t *res)
{
    int                   wild, b, e, i, k, m, n, dm, mapped, ip;
    char                  shown[65], ascii[256];
    const char           *why, *what;
    unsigned char         dots[1024], addr[16];
    const unsigned char  *s;

    if (len < 1) {
        return PKI_OK;
    }

    for (b = 0; b < len && (k = pki_space_len(cn + b, len - b)) > 0;
         b += k)
    {
        /* void */
    }

    for (e = len; e > b && (k = pki_space_end(cn + b, e - b)) > 0; e -= k) {
        /* void */
    }

    s = cn + b;
    m = e - b;

    /* a longer CN (pki_name_value takes up to 1024 bytes) is no DNS name
     * with its full stops as '.' either: at least 342 bytes */
    dm = m;
    if (m <= (int) sizeof(dots)) {
        for (dm = 0, i = 0; i < m; dm++) {
            k = pki_full_stop_len(s + i, m - i);
            dots[dm] = k ? '.' : s[i];
            i += k ? k : 1;
        }

        if (dm != m) {
            s = dots;
        }
    }

    n = (dm > 1 && s[dm - 1] == '.') ? dm - 1 : dm;
    wild = memchr(s, '*', (size_t) dm) != NULL;
    ip = !wild && pki_cn_ip(s, n, addr) != 0;

    /* an IP rule says the template's certificates name hosts, as a DNS
     * rule does */
    if (t->ca || !pki_tls_server(t)
        || (t->san[PKI_SAN_DNS] == PKI_RULE_NONE && t->eku == NULL
            && (!ip || t->san[PKI_SAN_IP] == PKI_RULE_NONE)))
    {
        mapped = 0;
        if (!wild) {
            return PKI_OK;
        }

    } else {
        mapped = !wild && !ip
                 && pki_cn_idna_ascii(cn + b, m, ascii, sizeof(ascii));
    }

    if (!wild && !mapped && !ip
        && (memchr(s, '.', (size_t) n) == NULL || !pki_dns_ok(s, n, 0)))
    {
        return PKI_OK;
    }

    pki_shown(cn, len, shown);
    what = ip ? "an IP address" : "a DNS name";

    if (m != len) {
        return pki_fail(res, PKI_POLICY, "CN \"%s\" is %s with white "
                        "space at its start or end, which name comparison "
                        "drops (template \"%s\")", shown, what, t->name);
    }

    if (wild && !t->san_wildcard) {
        return pki_fail(res, PKI_POLICY, "CN \"%s\": template \"%s\" does "
                        "not allow wildcards (san dns ... wildcard)", shown,
                        t->name);
    }

    if (mapped && (dm == m || !pki_dns_ok(s, n, 0))) {
        return pki_fail(res, PKI_POLICY, "CN \"%s\" is the DNS name "
                        "\"%.80s\" once IDNA maps its characters (UTS #46), "
                        "a name it does not spell (template \"%s\")", shown,
                        ascii, t->name);
    }

    /* a wildcard's too: the check of its bytes below reads only the
     * first n of them (n counts a mapped full stop as one byte) */
    if (dm != m) {
        return pki_fail(res, PKI_POLICY, "CN \"%s\" is %s with a full "
                        "stop IDNA takes for '.' (U+3002, U+FF0E or "
                        "U+FF61) (template \"%s\")", shown, what, t->name);
    }

    if (ip) {
        if (t->san[PKI_SAN_IP] == PKI_RULE_NONE) {
            return pki_fail(res, PKI_POLICY, "CN \"%s\" is an IP address a "
                            "TLS client would accept, and template \"%s\" "
                            "does not issue IP addresses (no san ip)", shown,
                            t->name);
        }

        if (t->san[PKI_SAN_IP] == PKI_RULE_FORBIDDEN) {
            return pki_fail(res, PKI_POLICY, "CN \"%s\" is an IP address a "
                            "TLS client would accept, and template \"%s\" "
                            "forbids IP addresses (san ip forbidden)", shown,
                            t->name);
        }

        return PKI_OK;
    }

    if (t->san[PKI_SAN_DNS] == PKI_RULE_NONE) {
        return pki_fail(res, PKI_POLICY, "CN \"%s\" is a DNS name a TLS "
                        "client would accept, and template \"%s\" does not "
                        "issue DNS names (no san dns)", shown, t->name);
    }

    if (t->san[PKI_SAN_DNS] == PKI_RULE_FORBIDDEN) {
        return pki_fail(res, PKI_POLICY, "CN \"%s\" is a DNS name a TLS "
                        "client would accept, and template \"%s\" forbids "
                        "DNS names (san dns forbidden)", shown, t->name);
    }

    if (!pki_dns_name_ok(t, cn, n, &why)) {
        return pki_fail(res, PKI_POLICY, "CN \"%s\" is not a DNS name "
                        "template \"%s\" issues (as a dNSName SAN)%s%s",
                        shown, t->name, why ? ": " : "", why ? why : "");
    }

    return PKI_OK;
}


/* A subject emailAddress from a request (ASCII, IA5String): S/MIME
 * clients and OpenSSL's X509_check_email read it when a certificate has
 * no rfc822Name, so it must be an address as an rfc822Name SAN must
 * (pki_email_ok), and is refused where the template forbids those. */
static pki_status_t
pki_check_email_attr(const pki_template_t *t, const unsigned char *s,
    int len, pki_result_t *res)
{
    char  shown[65];

    if (!pki_email_ok(s, len)) {
        return pki_fail(res, PKI_POLICY, "subject emailAddress \"%s\" is "
                        "not an email address", pki_shown(s, len, shown));
    }

    if (t->san[PKI_SAN_EMAIL] == PKI_RULE_FORBIDDEN) {
        return pki_fail(res, PKI_POLICY, "subject emailAddress \"%s\": "
                        "template \"%s\" forbids email addresses (san "
                        "email forbidden)", pki_shown(s, len, shown),
                        t->name);
    }

    return PKI_OK;
}


/* The checks a value from a request gets for its attribute nid beyond
 * its type's: a CN's (pki_check_cn), an emailAddress's. */
static pki_status_t
pki_check_attr(const pki_template_t *t, int nid, const unsigned char *s,
    int len, pki_result_t *res)
{
    switch (nid) {
    case NID_commonName:
        return pki_check_cn(t, s, len, res);
    case NID_pkcs9_emailAddress:
        return pki_check_email_attr(t, s, len, res);
    default:
        return PKI_OK;
    }
}


/* 1 when name holds only values as pki_apply_subject issues them under
 * t: each of its type and bytes, and values that pass pki_check_attr. */
static int
pki_subject_as_issued(const pki_template_t *t, const X509_NAME *name)
{
    int                 i, len, type, good;
    const char         *why;
    pki_result_t        tmp;
    unsigned char      *utf8;
    X509_NAME_ENTRY    *e;
    const ASN1_STRING  *d;

    for (i = 0; i < X509_NAME_entry_count(name); i++) {
        e = X509_NAME_get_entry(name, i);
        d = X509_NAME_ENTRY_get_data(e);

        len = pki_name_value(e, &type, &utf8, &why);
        good = len > 0 && type == ASN1_STRING_type(d)
               && len == ASN1_STRING_length(d)
               && memcmp(utf8, ASN1_STRING_get0_data(d), (size_t) len) == 0;

        if (good) {
            pki_result_init(&tmp);
            good = pki_check_attr(t,
                                  OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)),
                                  utf8, len, &tmp)
                   == PKI_OK;
        }

        OPENSSL_free(utf8);

        if (!good) {
            return 0;
        }
    }

    return 1;
}


static pki_status_t
pki_apply_subject(const pki_template_t *t, const X509_NAME *in,
    X509_NAME **out, pki_result_t *res)
{
    int                        i, j, n, found, cns, len, type;
    char                       an[80];
    X509_NAME                 *name;
    const char                *why;
    pki_status_t               rc;
    unsigned char             *utf8;
    const ASN1_OBJECT         *obj;
    X509_NAME_ENTRY           *e;
    const pki_subject_rule_t  *rule;

    n = X509_NAME_entry_count(in);
    cns = 0;

    if (n > 64) {
        return pki_fail(res, PKI_POLICY, "subject has too many attributes");
    }

    for (i = 0; i < n; i++) {
        e = X509_NAME_get_entry(in, i);
        obj = X509_NAME_ENTRY_get_object(e);

        if (i > 0 && X509_NAME_ENTRY_set(e)
                     == X509_NAME_ENTRY_set(X509_NAME_get_entry(in, i - 1)))
        {
            return pki_fail(res, PKI_POLICY, "multi-valued RDNs are not "
                            "allowed in the subject");
        }

        rule = NULL;
        for (j = 0; j < t->nsubject; j++) {
            if (OBJ_cmp(t->subject[j].obj, obj) == 0) {
                rule = &t->subject[j];
                break;
            }
        }

        if (rule == NULL) {
            return pki_fail(res, PKI_POLICY, "subject attribute %s is not "
                            "allowed by template \"%s\"",
                            pki_attr_text(obj, an, sizeof(an)), t->name);
        }

        if (rule->rule == PKI_RULE_FORBIDDEN) {
            return pki_fail(res, PKI_POLICY, "subject attribute %s is "
                            "forbidden by template \"%s\"", rule->name,
                            t->name);
        }

        if (rule->rule != PKI_RULE_FIXED) {
            len = pki_name_value(e, &type, &utf8, &why);
            if (len <= 0) {
                return pki_fail(res, PKI_POLICY, "subject attribute %s has "
                                "an invalid value (%s)", rule->name, why);
            }

            rc = pki_check_attr(t, OBJ_obj2nid(obj), utf8, len, res);
            OPENSSL_free(utf8);

            if (rc != PKI_OK) {
                return rc;
            }
        }

        /* one name: verifiers that read one CN differ on which (a fixed
         * CN replaces the request's) */
        if (OBJ_obj2nid(obj) == NID_commonName
            && rule->rule != PKI_RULE_FIXED && ++cns > 1)
        {
            return pki_fail(res, PKI_POLICY, "the subject has more than one "
                            "CN");
        }
    }

    name = X509_NAME_new();
    if (name == NULL) {
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    for (j = 0; j < t->nsubject; j++) {
        rule = &t->subject[j];

        switch (rule->rule) {

        case PKI_RULE_FIXED:
            if (!X509_NAME_add_entry_by_OBJ(name, rule->obj, MBSTRING_UTF8,
                                            (unsigned char *) rule->value,
                                            -1, -1, 0))
            {
                X509_NAME_free(name);
                return pki_fail(res, PKI_INTERNAL, "cannot set subject "
                                "attribute %s", rule->name);
            }
            break;

        case PKI_RULE_COPY:
        case PKI_RULE_REQUIRED:
            found = 0;
            for (i = 0; i < n; i++) {
                e = X509_NAME_get_entry(in, i);
                if (OBJ_cmp(X509_NAME_ENTRY_get_object(e), rule->obj) != 0) {
                    continue;
                }

                if (!pki_name_copy(name, e)) {
                    X509_NAME_free(name);
                    return pki_fail(res, PKI_INTERNAL, "cannot copy subject "
                                    "attribute %s", rule->name);
                }
                found++;
            }

            if (rule->rule == PKI_RULE_REQUIRED && !found) {
                X509_NAME_free(name);
                return pki_fail(res, PKI_POLICY, "subject attribute %s is "
                                "required by template \"%s\"", rule->name,
                                t->name);
            }
            break;

        default:
            break;
        }
    }

    *out = name;

    return PKI_OK;
}


static int
pki_ldh(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '-';
}


static int
pki_dns_ok(const unsigned char *s, int len, int wildcard)
{
    int  i, start, lablen, labels;

    if (len < 1 || len > 253) {
        return 0;
    }

    start = 0;
    if (wildcard && len > 2 && s[0] == '*' && s[1] == '.') {
        start = 2;
    }

    lablen = 0;
    labels = 0;

    for (i = start; i < len; i++) {
        if (s[i] == '.') {
            if (lablen == 0 || s[i - 1] == '-') {
                return 0;
            }
            lablen = 0;
            labels++;
            continue;
        }

        if (!pki_ldh(s[i]) || (s[i] == '-' && lablen == 0)) {
            return 0;
        }

        if (++lablen > 63) {
            return 0;
        }
    }

    if (lablen == 0 || s[len - 1] == '-') {
        return 0;
    }

    labels++;

    /* An all-digit last label makes "10.0.0.1" look like a name: an IP
     * address belongs in an iPAddress SAN, which the template rules on. */
    for (i = len - lablen; i < len; i++) {
        if (!(s[i] >= '0' && s[i] <= '9')) {
            break;
        }
    }

    if (i == len) {
        return 0;
    }

    /* "*.com" is not a useful wildcard. */
    return start == 0 || labels >= 2;
}


/* A label of the reserved "??--" form (an R-LDH label, RFC 5890 2.3.1)
 * must be an IDNA2008 A-label: "xn--" and the Punycode of a valid U-label
 * (RFC 5891 4.2.3.1, 5.4; RFC 8555 7.1.4; the CA/B Forum's Baseline
 * Requirements take only such P-Labels and non-reserved LDH labels).
 * label is len LDH characters in any case: A-labels compare as
 * case-insensitive ASCII, so it is judged lowercased (RFC 5891 5.3).
 * NULL: fine, else why not (static text). */
const char *
pki_int_dns_label_refused(const char *label, size_t len)
{
    char    buf[64];
    size_t  i;

    if (len < 4 || label[2] != '-' || label[3] != '-') {
        return NULL;
    }

    if (len >= sizeof(buf)) {
        return "a label of more than 63 characters";
    }

    for (i = 0; i < len; i++) {
        buf[i] = (char) tolower((unsigned char) label[i]);
    }
    buf[len] = '\0';

    if (buf[0] != 'x' || buf[1] != 'n') {
        return "a label of the reserved \"\?\?--\" form";
    }

    if (idn2_register_u8(NULL, (const uint8_t *) buf, NULL, 0) != IDN2_OK) {
        return "an \"xn--\" label that is not a valid IDNA2008 A-label";
    }

    return NULL;
}


/* The first "xn--" label of DNS name s (len bytes) that is no A-label
 * (pki_int_dns_label_refused): NULL, else why not.  Labels end at '.'
 * and at the full stops IDNA takes for one (pki_full_stop_len), which a
 * percent-decoded URI host may hold; an "xn--" label with a byte other
 * than a letter, digit or '-' is no A-label (a dNSName's labels are LDH
 * already).  Other labels of the reserved "??--" form pass here:
 * private names such as "db--primary" are common, and a renewal checks
 * the names it renews against the template; ACME's newOrder still
 * refuses them, as public CAs do. */
static const char *
pki_dns_labels_refused(const unsigned char *s, int len)
{
    int          i, j, b, k;
    const char  *why;

    for (b = 0, i = 0; i <= len; i++) {
        k = (i == len || s[i] == '.') ? 1 : pki_full_stop_len(s + i, len - i);
        if (k == 0) {
            continue;
        }

        if (i - b >= 4 && (s[b] | 0x20) == 'x' && (s[b + 1] | 0x20) == 'n'
            && s[b + 2] == '-' && s[b + 3] == '-')
        {
            for (j = b; j < i && pki_ldh(s[j]); j++) {
                /* void */
            }

            why = j < i ? "an \"xn--\" label that is not a valid IDNA2008 "
                          "A-label"
                        : pki_int_dns_label_refused((const char *) s + b,
                                                    (size_t) (i - b));
            if (why != NULL) {
                return why;
            }
        }

        b = i + k;
        i = b - 1;
    }

    return NULL;
}


/* A dNSName under template t's rules, a SAN's or a CN's a TLS client
 * takes for one (pki_check_cn): its syntax, a "*." only where t allows
 * wildcards, and each "xn--" label an A-label.  0 with *why set when
 * the syntax is fine but a label is not (else NULL). */
static int
pki_dns_name_ok(const pki_template_t *t, const unsigned char *s, int len,
    const char **why)
{
    *why = NULL;

    if (!pki_dns_ok(s, len, t->san_wildcard)) {
        return 0;
    }

    *why = pki_dns_labels_refused(s, len);

    return *why == NULL;
}


static int
pki_email_ok(const unsigned char *s, int len)
{
    int  i, at;

    if (len < 3 || len > 254) {
        return 0;
    }

    at = -1;
    for (i = 0; i < len; i++) {
        if (s[i] <= 0x20 || s[i] >= 0x7f) {
            return 0;
        }

        if (s[i] == '@') {
            if (at >= 0) {
                return 0;
            }
            at = i;
        }
    }

    if (at < 1 || at > 64) {
        return 0;
    }

    return pki_dns_ok(s + at + 1, len - at - 1, 0)
           && pki_dns_labels_refused(s + at + 1, len - at - 1) == NULL;
}


static int
pki_uri_ok(const unsigned char *s, int len)
{
    int  i, colon;

    if (len < 3 || len > 2048) {
        return 0;
    }

    colon = -1;
    for (i = 0; i < len; i++) {
        if (s[i] <= 0x20 || s[i] >= 0x7f) {
            return 0;
        }

        if (colon < 0) {
            if (s[i] == ':') {
                colon = i;

            } else if (!((s[i] >= 'a' && s[i] <= 'z')
                         || (s[i] >= 'A' && s[i] <= 'Z')
                         || (i > 0 && ((s[i] >= '0' && s[i] <= '9')
                                       || s[i] == '+' || s[i] == '-'
                                       || s[i] == '.'))))
            {
                return 0;
            }
        }
    }

    return colon > 0 && colon < len - 1;
}


/* 1 when scheme s (len bytes) is one the WHATWG URL Standard parses a
 * host from without "//" (a special scheme's; file's needs "//"). */
static int
pki_uri_web_scheme(const unsigned char *s, int len)
{
    size_t              i;
    static const char  *web[] = { "http", "https", "ws", "wss", "ftp" };

    for (i = 0; i < sizeof(web) / sizeof(web[0]); i++) {
        if ((size_t) len == strlen(web[i])
            && strncasecmp((const char *) s, web[i], (size_t) len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* The value of hex digit c, -1 for none. */
static int
pki_hex_digit(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}


/*
 * The first "xn--" label of URI s's host that is no A-label (s, len as
 * pki_uri_ok takes them): NULL, else why not.  A reg-name host (RFC 3986
 * 3.2.2) is a DNS name to most who read it, so its labels are judged as
 * a dNSName's are (pki_dns_labels_refused); an IP literal, a URI with no
 * authority ("urn:...") and other "??--" labels pass as before.
 * Parsers differ on where the host is, so two readings are judged: RFC
 * 3986's, an authority after "scheme://" up to '/', '?' or '#', and for
 * http(s), ws(s) and ftp a browser's (the WHATWG URL Standard), which
 * skips any '/' and '\' after the ':' and ends the authority at '\' too.
 * Either way the host follows the authority's last '@' and ends at a
 * ':' (the port); it is judged percent-decoded, as browsers take
 * it.
 */
static const char *
pki_uri_host_refused(const unsigned char *s, int len)
{
    int                   c, i, a, e, h, p, n, hi, lo, web, browser;
    const char           *why;
    unsigned char         buf[2048];

    for (c = 0; s[c] != ':'; c++) {
        /* void: pki_uri_ok found one */
    }

    web = pki_uri_web_scheme(s, c);

    for (browser = 0; browser <= web; browser++) {
        a = c + 1;

        if (browser) {
            while (a < len && (s[a] == '/' || s[a] == '\\')) {
                a++;
            }

        } else if (len - a >= 2 && s[a] == '/' && s[a + 1] == '/') {
            a += 2;

        } else {
            continue;
        }

        for (e = a; e < len && s[e] != '/' && s[e] != '?' && s[e] != '#'
                    && !(browser && s[e] == '\\'); e++)
        {
            /* void */
        }

        for (h = e; h > a && s[h - 1] != '@'; h--) {
            /* void */
        }

        if (h < e && s[h] == '[') {
            continue;                           /* an IP literal */
        }

        for (p = h; p < e && s[p] != ':'; p++) {
            /* void */
        }

        /* into buf: p - h <= 2048 (pki_uri_ok); a '%' without two hex
         * digits after it stays a '%'.  Only the decoded host is judged:
         * "xn--bcher-k%76a" is the valid A-label it decodes to */
        for (n = 0, i = h; i < p; n++) {
            hi = i + 2 < p ? pki_hex_digit(s[i + 1]) : -1;
            lo = i + 2 < p ? pki_hex_digit(s[i + 2]) : -1;

            if (s[i] == '%' && hi >= 0 && lo >= 0) {
                buf[n] = (unsigned char) (hi << 4 | lo);
                i += 3;

            } else {
                buf[n] = s[i++];
            }
        }

        why = pki_dns_labels_refused(buf, n);
        if (why != NULL) {
            return why;
        }
    }

    return NULL;
}


static const char *
pki_gen_type_name(int type)
{
    switch (type) {
    case GEN_OTHERNAME:
        return "otherName";
    case GEN_EMAIL:
        return "email";
    case GEN_DNS:
        return "dns";
    case GEN_X400:
        return "x400Address";
    case GEN_DIRNAME:
        return "dirName";
    case GEN_EDIPARTY:
        return "ediPartyName";
    case GEN_URI:
        return "uri";
    case GEN_IPADD:
        return "ip";
    case GEN_RID:
        return "registeredID";
    }

    return "unknown";
}


static pki_status_t
pki_check_sans(const pki_template_t *t, const GENERAL_NAMES *gens,
    pki_result_t *res)
{
    int                  i, n, type, len, count[PKI_SAN_NTYPES];
    const char          *why;
    const GENERAL_NAME  *g;
    const ASN1_STRING   *s;
    const unsigned char *d;
    static const char   *names[PKI_SAN_NTYPES] = {
        "dns", "ip", "email", "uri"
    };

    memset(count, 0, sizeof(count));
    n = gens ? sk_GENERAL_NAME_num(gens) : 0;

    if (n > PKI_MAX_SANS) {
        return pki_fail(res, PKI_POLICY, "too many SANs (at most %d)",
                        PKI_MAX_SANS);
    }

    for (i = 0; i < n; i++) {
        g = sk_GENERAL_NAME_value(gens, i);

        switch (g->type) {
        case GEN_DNS:
            type = PKI_SAN_DNS;
            s = g->d.dNSName;
            break;
        case GEN_IPADD:
            type = PKI_SAN_IP;
            s = g->d.iPAddress;
            break;
        case GEN_EMAIL:
            type = PKI_SAN_EMAIL;
            s = g->d.rfc822Name;
            break;
        case GEN_URI:
            type = PKI_SAN_URI;
            s = g->d.uniformResourceIdentifier;
            break;
        default:
            return pki_fail(res, PKI_POLICY, "SAN type %s is not allowed",
                            pki_gen_type_name(g->type));
        }

        if (t->san[type] == PKI_RULE_NONE) {
            return pki_fail(res, PKI_POLICY, "SAN type %s is not allowed by "
                            "template \"%s\"", names[type], t->name);
        }

        if (t->san[type] == PKI_RULE_FORBIDDEN) {
            return pki_fail(res, PKI_POLICY, "SAN type %s is forbidden by "
                            "template \"%s\"", names[type], t->name);
        }

        d = ASN1_STRING_get0_data(s);
        len = ASN1_STRING_length(s);

        switch (type) {
        case PKI_SAN_DNS:
            if (!pki_dns_name_ok(t, d, len, &why)) {
                char  shown[65];

                /* the client's bytes, printable ASCII only, for the
                 * message and the log */
                return pki_fail(res, PKI_POLICY, "invalid DNS name in SAN "
                                "\"%s\"%s%s", pki_shown(d, len, shown),
                                why ? ": " : "", why ? why : "");
            }
            break;
        case PKI_SAN_IP:
            if (len != 4 && len != 16) {
                return pki_fail(res, PKI_POLICY, "invalid IP address in "
                                "SAN");
            }
            break;
        case PKI_SAN_EMAIL:
            if (!pki_email_ok(d, len)) {
                return pki_fail(res, PKI_POLICY, "invalid email address in "
                                "SAN");
            }
            break;
        case PKI_SAN_URI:
            if (!pki_uri_ok(d, len)) {
                return pki_fail(res, PKI_POLICY, "invalid URI in SAN");
            }

            why = pki_uri_host_refused(d, len);
            if (why != NULL) {
                char  shown[65];

                return pki_fail(res, PKI_POLICY, "invalid URI in SAN "
                                "\"%s\": its host has %s",
                                pki_shown(d, len, shown), why);
            }
            break;
        }

        count[type]++;
    }

    for (type = 0; type < PKI_SAN_NTYPES; type++) {
        if (t->san[type] == PKI_RULE_REQUIRED && count[type] == 0) {
            return pki_fail(res, PKI_POLICY, "a SAN of type %s is required "
                            "by template \"%s\"", names[type], t->name);
        }
    }

    return PKI_OK;
}


static pki_status_t
pki_csr_sans(X509_REQ *csr, GENERAL_NAMES **out, pki_result_t *res)
{
    int                        crit, idx;
    GENERAL_NAMES             *gens;
    STACK_OF(X509_EXTENSION)  *exts;

    *out = NULL;

    exts = X509_REQ_get_extensions(csr);
    if (exts == NULL) {
        if (X509_REQ_get_attr_by_NID(csr, NID_ext_req, -1) >= 0
            || X509_REQ_get_attr_by_NID(csr, NID_ms_ext_req, -1) >= 0)
        {
            return pki_fail(res, PKI_MALFORMED, "CSR has a malformed "
                            "extensionRequest attribute");
        }

        ERR_clear_error();
        return PKI_OK;
    }

    idx = X509v3_get_ext_by_NID(exts, NID_subject_alt_name, -1);
    if (idx >= 0
        && X509v3_get_ext_by_NID(exts, NID_subject_alt_name, idx) >= 0)
    {
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
        return pki_fail(res, PKI_MALFORMED, "CSR has more than one "
                        "subjectAltName extension");
    }

    gens = NULL;
    if (idx >= 0) {
        gens = X509V3_get_d2i(exts, NID_subject_alt_name, &crit, NULL);
        if (gens == NULL) {
            sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
            return pki_fail(res, PKI_MALFORMED, "CSR has a malformed "
                            "subjectAltName extension");
        }
    }

    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    *out = gens;

    return PKI_OK;
}


/* The CSR's TLS feature extension (RFC 7633).  Only status_request (5,
 * OCSP Must-Staple) is issued, and only under a template with must_staple
 * on; a template that sets the extension verbatim already carries it.  A
 * CSR that asks for what will not be signed is refused, not signed
 * without it. */
static pki_status_t
pki_csr_must_staple(const pki_template_t *t, X509_REQ *csr, int *out,
    pki_result_t *res)
{
    int                        i, idx, crit, verbatim;
    long                       v;
    TLS_FEATURE               *tf;
    STACK_OF(X509_EXTENSION)  *exts;

    *out = 0;

    exts = X509_REQ_get_extensions(csr);
    if (exts == NULL) {
        ERR_clear_error();
        return PKI_OK;
    }

    idx = X509v3_get_ext_by_NID(exts, NID_tlsfeature, -1);
    if (idx < 0) {
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
        return PKI_OK;
    }

    if (X509v3_get_ext_by_NID(exts, NID_tlsfeature, idx) >= 0) {
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
        return pki_fail(res, PKI_MALFORMED, "CSR has more than one TLS "
                        "feature extension");
    }

    tf = X509V3_get_d2i(exts, NID_tlsfeature, &crit, NULL);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);

    if (tf == NULL || sk_ASN1_INTEGER_num(tf) <= 0) {
        TLS_FEATURE_free(tf);
        ERR_clear_error();
        return pki_fail(res, PKI_MALFORMED, "CSR has a malformed TLS "
                        "feature extension");
    }

    for (i = 0; i < sk_ASN1_INTEGER_num(tf); i++) {
        v = ASN1_INTEGER_get(sk_ASN1_INTEGER_value(tf, i));
        if (v != 5) {
            TLS_FEATURE_free(tf);
            ERR_clear_error();
            return pki_fail(res, PKI_POLICY, "the CSR asks for TLS feature "
                            "%ld; only status_request (5) is issued", v);
        }
    }

    TLS_FEATURE_free(tf);

    verbatim = 0;
    for (i = 0; i < sk_X509_EXTENSION_num(t->extensions); i++) {
        if (OBJ_obj2nid(X509_EXTENSION_get_object(
                sk_X509_EXTENSION_value(t->extensions, i)))
            == NID_tlsfeature)
        {
            verbatim = 1;
        }
    }

    if (t->must_staple != 1 && !verbatim) {
        return pki_fail(res, PKI_POLICY, "template \"%s\" does not issue "
                        "OCSP Must-Staple certificates (must_staple off)",
                        t->name);
    }

    *out = !verbatim;

    return PKI_OK;
}


pki_status_t
pki_request_from_csr(const pki_template_t *t, X509_REQ *csr,
    pki_request_t *req, pki_result_t *res)
{
    int             staple;
    EVP_PKEY       *pk;
    pki_status_t    rc;
    GENERAL_NAMES  *gens;

    if (t == NULL || csr == NULL || req == NULL) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    if (t->matter) {
        return pki_int_matter_request(t, csr, req, res);
    }

    memset(req, 0, sizeof(pki_request_t));

    pk = X509_REQ_get0_pubkey(csr);
    if (pk == NULL) {
        return pki_fail(res, PKI_MALFORMED, "CSR public key cannot be "
                        "decoded");
    }

    gens = NULL;
    staple = 0;

    rc = pki_check_key(t, pk, res);
    if (rc == PKI_OK) {
        rc = pki_csr_sans(csr, &gens, res);
    }
    if (rc == PKI_OK) {
        rc = pki_csr_must_staple(t, csr, &staple, res);
    }
    if (rc == PKI_OK) {
        rc = pki_request_build(t, X509_REQ_get_subject_name(csr), gens, pk,
                               req, res);
    }

    GENERAL_NAMES_free(gens);

    if (rc == PKI_OK) {
        req->must_staple = staple;
    }

    return rc;
}


/* The request of a subject, SANs and key given in parts (pkictl's command
 * line), through the checks of a CSR's. */
pki_status_t
pki_request_build(const pki_template_t *t, const X509_NAME *subject,
    const GENERAL_NAMES *sans, EVP_PKEY *pub, pki_request_t *req,
    pki_result_t *res)
{
    pki_status_t    rc;
    GENERAL_NAMES  *gens = NULL;
    X509_NAME      *name = NULL;

    if (t == NULL || subject == NULL || pub == NULL || req == NULL) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    if (t->matter) {
        return pki_fail(res, PKI_INTERNAL, "a Matter template takes its "
                        "request from a CSR");
    }

    memset(req, 0, sizeof(pki_request_t));

    rc = pki_check_key(t, pub, res);
    if (rc != PKI_OK) {
        return rc;
    }

    rc = pki_apply_subject(t, subject, &name, res);
    if (rc != PKI_OK) {
        return rc;
    }

    rc = pki_check_sans(t, sans, res);
    if (rc != PKI_OK) {
        X509_NAME_free(name);
        return rc;
    }

    if (X509_NAME_entry_count(name) == 0 && sk_GENERAL_NAME_num(sans) <= 0) {
        X509_NAME_free(name);
        return pki_fail(res, PKI_POLICY, "the request has neither a subject "
                        "nor a SAN");
    }

    if (sans != NULL) {
        gens = sk_GENERAL_NAME_deep_copy(sans, GENERAL_NAME_dup,
                                         GENERAL_NAME_free);
        if (gens == NULL) {
            X509_NAME_free(name);
            return pki_fail(res, PKI_INTERNAL, "out of memory");
        }
    }

    if (!EVP_PKEY_up_ref(pub)) {
        GENERAL_NAMES_free(gens);
        X509_NAME_free(name);
        return pki_fail(res, PKI_INTERNAL, "EVP_PKEY_up_ref() failed");
    }

    req->subject = name;
    req->sans = gens;
    req->pubkey = pub;

    return PKI_OK;
}


static int
pki_sans_equal(const GENERAL_NAMES *a, const GENERAL_NAMES *b)
{
    int  i, j, na, nb, found;

    na = a ? sk_GENERAL_NAME_num(a) : 0;
    nb = b ? sk_GENERAL_NAME_num(b) : 0;

    if (na != nb) {
        return 0;
    }

    for (i = 0; i < na; i++) {
        found = 0;
        for (j = 0; j < nb && !found; j++) {
            found = GENERAL_NAME_cmp(sk_GENERAL_NAME_value(a, i),
                                     sk_GENERAL_NAME_value(b, j)) == 0;
        }

        if (!found) {
            return 0;
        }

        found = 0;
        for (j = 0; j < na && !found; j++) {
            found = GENERAL_NAME_cmp(sk_GENERAL_NAME_value(b, i),
                                     sk_GENERAL_NAME_value(a, j)) == 0;
        }

        if (!found) {
            return 0;
        }
    }

    return 1;
}


/* A renewal names the certificate's subject: the same, or one that the
 * template's rules make it (a device configured with O=OldCorp renews a
 * certificate whose O the template has since fixed to NewCorp). */
static int
pki_renewal_subject_same(const pki_template_t *t, X509_NAME *csr,
    X509_NAME *old)
{
    int           same;
    X509_NAME    *applied;
    pki_result_t  tmp;

    if (X509_NAME_cmp(csr, old) == 0) {
        return 1;
    }

    applied = NULL;
    pki_result_init(&tmp);

    same = pki_apply_subject(t, csr, &applied, &tmp) == PKI_OK
           && applied != NULL && X509_NAME_cmp(applied, old) == 0;

    X509_NAME_free(applied);

    return same;
}


/*
 * A request whose subject is name in canonical form (X509_NAME_cmp():
 * ASCII case, spaces and string types folded) gets name as it was
 * encoded: a renewal, or an enrollment bound to a certificate's names,
 * keeps that certificate's subject byte for byte, not the CSR's "DEV-1"
 * for "dev-1" (a relying party may compare the bytes).  Only when each
 * of name's values is as template t issues it, though: "dev\t1" folds to
 * the CSR's "dev 1", an IA5String CN to its UTF8String, and the bytes
 * issued must pass the checks the CSR's passed; otherwise the request
 * keeps the subject the template built.  -1 out of memory (req->subject
 * is then NULL).
 */
int
pki_int_request_keep_subject(const pki_template_t *t, pki_request_t *req,
    X509_NAME *name)
{
    if (req->subject == NULL || X509_NAME_cmp(req->subject, name) != 0
        || !pki_subject_as_issued(t, name))
    {
        return req->subject == NULL ? -1 : 0;
    }

    X509_NAME_free(req->subject);
    req->subject = X509_NAME_dup(name);

    return req->subject == NULL ? -1 : 0;
}


pki_status_t
pki_request_renewal(const pki_template_t *t, X509_REQ *csr, X509 *old,
    pki_request_t *req, pki_result_t *res)
{
    int             crit, same, staple;
    EVP_PKEY       *pk;
    pki_status_t    rc;
    GENERAL_NAMES  *csr_sans, *old_sans;

    if (t == NULL || csr == NULL || old == NULL || req == NULL) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    memset(req, 0, sizeof(pki_request_t));

    /*
     * A Matter certificate is not renewed from a CSR.  A DAC is the
     * device's identity for its life (notAfter 99991231235959Z): a
     * renewal would be a second DAC for another key, got by whoever holds
     * the first, and the old subject (its VID/PID the PAI's, not the
     * CSR's) never passed the template's rules here, which only
     * pki_int_matter_request applies.  Operational certificates come from
     * the Matter endpoints only.
     */
    if (t->matter == PKI_MATTER_DAC) {
        return pki_fail(res, PKI_POLICY, "template \"%s\": a Matter DAC is "
                        "issued once for the device's life and is not "
                        "renewed", t->name);
    }

    if (t->matter) {
        return pki_fail(res, PKI_POLICY, "template \"%s\": Matter "
                        "certificates are not renewed from a CSR (use the "
                        "Matter endpoints or pkictl matter)", t->name);
    }

    pk = X509_REQ_get0_pubkey(csr);
    if (pk == NULL) {
        return pki_fail(res, PKI_MALFORMED, "CSR public key cannot be "
                        "decoded");
    }

    rc = pki_check_key(t, pk, res);
    if (rc != PKI_OK) {
        return rc;
    }

    rc = pki_csr_sans(csr, &csr_sans, res);
    if (rc != PKI_OK) {
        return rc;
    }

    rc = pki_csr_must_staple(t, csr, &staple, res);
    if (rc != PKI_OK) {
        GENERAL_NAMES_free(csr_sans);
        return rc;
    }

    old_sans = X509_get_ext_d2i(old, NID_subject_alt_name, &crit, NULL);
    if (old_sans == NULL && crit != -1) {
        GENERAL_NAMES_free(csr_sans);
        return pki_fail(res, PKI_MALFORMED, "the certificate being renewed "
                        "has a malformed subjectAltName");
    }

    same = pki_sans_equal(csr_sans, old_sans)
           && pki_renewal_subject_same(t, X509_REQ_get_subject_name(csr),
                                       X509_get_subject_name(old));

    GENERAL_NAMES_free(csr_sans);

    if (!same) {
        GENERAL_NAMES_free(old_sans);
        return pki_fail(res, PKI_FORBIDDEN, "subject/SANs differ from the "
                        "certificate being renewed");
    }

    /*
     * The names being renewed must still pass the template the new
     * certificate is issued under: a certificate from another template of
     * the same CA, or one issued before the template was tightened, is not
     * renewed into names the template now refuses.
     */
    rc = pki_apply_subject(t, X509_get_subject_name(old), &req->subject, res);
    if (rc == PKI_OK) {
        rc = pki_check_sans(t, old_sans, res);
    }

    if (rc != PKI_OK) {
        GENERAL_NAMES_free(old_sans);
        X509_NAME_free(req->subject);
        req->subject = NULL;
        return rc;
    }

    /*
     * The template's subject rules, applied to the old names, decide the
     * new subject: a value the template now fixes (O fixed NewCorp over
     * an old O=OldCorp) wins, as it would for a new enrollment.
     */
    req->sans = old_sans;

    if (pki_int_request_keep_subject(t, req, X509_get_subject_name(old)) != 0
        || !EVP_PKEY_up_ref(pk))
    {
        pki_request_clear(req);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    req->pubkey = pk;
    req->must_staple = staple;

    return PKI_OK;
}


/* The first name of a that b lacks, as SAN text (malloc'd), or NULL. */
static char *
pki_san_missing(const GENERAL_NAMES *a, const GENERAL_NAMES *b)
{
    int             i, j, na, nb, found;
    char           *s;
    GENERAL_NAMES  *one;

    na = a ? sk_GENERAL_NAME_num(a) : 0;
    nb = b ? sk_GENERAL_NAME_num(b) : 0;

    for (i = 0; i < na; i++) {
        found = 0;
        for (j = 0; j < nb && !found; j++) {
            found = GENERAL_NAME_cmp(sk_GENERAL_NAME_value(a, i),
                                     sk_GENERAL_NAME_value(b, j)) == 0;
        }

        if (found) {
            continue;
        }

        /* a stack that borrows the name, for its text */
        one = sk_GENERAL_NAME_new_null();
        if (one == NULL
            || !sk_GENERAL_NAME_push(one, sk_GENERAL_NAME_value(a, i)))
        {
            sk_GENERAL_NAME_free(one);
            return NULL;
        }

        s = pki_sans_text(one);
        sk_GENERAL_NAME_free(one);

        return s;
    }

    return NULL;
}


/*
 * Names bound to a certificate (EST est_bind_names): the CSR asks for the
 * subject and SANs of cert, compared as a renewal compares them.  The
 * detail says which of the two differs; the log names the first name
 * that differs, not the whole request.
 */
pki_status_t
pki_request_names_bound(const pki_template_t *t, X509_REQ *csr, X509 *cert,
    pki_result_t *res)
{
    int             crit, subject_same, sans_same;
    char           *a, *b;
    pki_status_t    rc;
    GENERAL_NAMES  *csr_sans, *cert_sans;

    if (t == NULL || csr == NULL || cert == NULL) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    rc = pki_csr_sans(csr, &csr_sans, res);
    if (rc != PKI_OK) {
        return rc;
    }

    cert_sans = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
    if (cert_sans == NULL && crit != -1) {
        GENERAL_NAMES_free(csr_sans);
        return pki_fail(res, PKI_FORBIDDEN, "the client certificate has a "
                        "malformed subjectAltName");
    }

    sans_same = pki_sans_equal(csr_sans, cert_sans);
    subject_same = pki_renewal_subject_same(t,
                                            X509_REQ_get_subject_name(csr),
                                            X509_get_subject_name(cert));

    if (sans_same && subject_same) {
        GENERAL_NAMES_free(csr_sans);
        GENERAL_NAMES_free(cert_sans);
        return PKI_OK;
    }

    pki_fail(res, PKI_FORBIDDEN, "the CSR's %s the client certificate's",
             sans_same ? "subject differs from"
             : subject_same ? "subjectAltName differs from"
             : "subject and subjectAltName differ from");

    if (!subject_same) {
        a = pki_int_name_text(X509_REQ_get_subject_name(csr));
        b = pki_int_name_text(X509_get_subject_name(cert));

        pki_log(res, "%sCSR subject \"%s\", client certificate subject "
                "\"%s\"", res->log[0] ? "; " : "", a ? a : "?",
                b ? b : "?");

        free(a);
        free(b);
    }

    if (!sans_same) {
        a = pki_san_missing(csr_sans, cert_sans);
        b = pki_san_missing(cert_sans, csr_sans);

        pki_log(res, "%sCSR subjectAltName: ", res->log[0] ? "; " : "");

        if (a) {
            pki_log(res, "\"%s\" not in the client certificate%s", a,
                    b ? ", " : "");
        }

        if (b) {
            pki_log(res, "\"%s\" of the client certificate left out", b);
        }

        if (a == NULL && b == NULL) {
            pki_log(res, "%d names, the client certificate %d",
                    csr_sans ? sk_GENERAL_NAME_num(csr_sans) : 0,
                    cert_sans ? sk_GENERAL_NAME_num(cert_sans) : 0);
        }

        free(a);
        free(b);
    }

    GENERAL_NAMES_free(csr_sans);
    GENERAL_NAMES_free(cert_sans);

    return PKI_FORBIDDEN;
}


void
pki_request_set_pubkey(pki_request_t *req, EVP_PKEY *pub)
{
    if (pub == NULL || !EVP_PKEY_up_ref(pub)) {
        return;
    }

    EVP_PKEY_free(req->pubkey);
    req->pubkey = pub;
}


void
pki_request_clear(pki_request_t *req)
{
    if (req == NULL) {
        return;
    }

    X509_NAME_free(req->subject);
    GENERAL_NAMES_free(req->sans);
    EVP_PKEY_free(req->pubkey);
    memset(req, 0, sizeof(pki_request_t));
}


/* ---- certificate builder ----------------------------------------------- */

static GENERAL_NAME *
pki_uri_name(const char *url)
{
    GENERAL_NAME     *g;
    ASN1_IA5STRING   *s;

    s = ASN1_IA5STRING_new();
    g = GENERAL_NAME_new();

    if (s == NULL || g == NULL || !ASN1_STRING_set(s, url, -1)) {
        ASN1_IA5STRING_free(s);
        GENERAL_NAME_free(g);
        return NULL;
    }

    GENERAL_NAME_set0_value(g, GEN_URI, s);

    return g;
}


static int
pki_add_crldp(X509 *x, const char *url)
{
    int                 ok;
    DIST_POINT         *dp;
    GENERAL_NAME       *g;
    CRL_DIST_POINTS    *dps;

    ok = 0;
    dps = sk_DIST_POINT_new_null();
    dp = DIST_POINT_new();
    g = pki_uri_name(url);

    if (dps == NULL || dp == NULL || g == NULL) {
        goto failed;
    }

    dp->distpoint = DIST_POINT_NAME_new();
    if (dp->distpoint == NULL) {
        goto failed;
    }

    dp->distpoint->type = 0;
    dp->distpoint->name.fullname = sk_GENERAL_NAME_new_null();
    if (dp->distpoint->name.fullname == NULL
        || !sk_GENERAL_NAME_push(dp->distpoint->name.fullname, g))
    {
        goto failed;
    }
    g = NULL;

    if (!sk_DIST_POINT_push(dps, dp)) {
        goto failed;
    }
    dp = NULL;

    ok = X509_add1_ext_i2d(x, NID_crl_distribution_points, dps, 0,
                       X509V3_ADD_DEFAULT);

failed:

    GENERAL_NAME_free(g);
    DIST_POINT_free(dp);
    CRL_DIST_POINTS_free(dps);

    return ok;
}


/* one accessDescription of an AIA: method (NID_ad_OCSP, NID_ad_ca_issuers)
 * and a URI */
static int
pki_aia_push(AUTHORITY_INFO_ACCESS *aia, int method, const char *url)
{
    GENERAL_NAME         *g;
    ACCESS_DESCRIPTION   *ad;

    ad = ACCESS_DESCRIPTION_new();
    g = pki_uri_name(url);

    if (ad == NULL || g == NULL) {
        GENERAL_NAME_free(g);
        ACCESS_DESCRIPTION_free(ad);
        return 0;
    }

    ASN1_OBJECT_free(ad->method);
    ad->method = OBJ_nid2obj(method);
    GENERAL_NAME_free(ad->location);
    ad->location = g;

    if (!sk_ACCESS_DESCRIPTION_push(aia, ad)) {
        ACCESS_DESCRIPTION_free(ad);
        return 0;
    }

    return 1;
}


/* Authority Information Access (RFC 5280 4.2.2.1), not critical: the OCSP
 * responder, then where the issuer's certificate is, each when given; one
 * extension for both */
static int
pki_add_aia(X509 *x, const char *ocsp, const char *ca_issuers)
{
    int                      ok;
    AUTHORITY_INFO_ACCESS   *aia;

    if (ocsp == NULL && ca_issuers == NULL) {
        return 1;
    }

    ok = 0;
    aia = sk_ACCESS_DESCRIPTION_new_null();

    if (aia == NULL
        || (ocsp && !pki_aia_push(aia, NID_ad_OCSP, ocsp))
        || (ca_issuers && !pki_aia_push(aia, NID_ad_ca_issuers, ca_issuers)))
    {
        goto failed;
    }

    ok = X509_add1_ext_i2d(x, NID_info_access, aia, 0, X509V3_ADD_DEFAULT);

failed:

    AUTHORITY_INFO_ACCESS_free(aia);

    return ok;
}


/* TLS feature status_request (RFC 7633), not critical */
static int
pki_add_must_staple(X509 *x)
{
    int           ok;
    TLS_FEATURE  *tf;
    ASN1_INTEGER *v;

    tf = TLS_FEATURE_new();
    v = ASN1_INTEGER_new();

    ok = tf != NULL && v != NULL && ASN1_INTEGER_set(v, 5)
         && sk_ASN1_INTEGER_push(tf, v) > 0;
    if (ok) {
        v = NULL;
        ok = X509_add1_ext_i2d(x, NID_tlsfeature, tf, 0, X509V3_ADD_DEFAULT)
             == 1;
    }

    ASN1_INTEGER_free(v);
    TLS_FEATURE_free(tf);

    return ok;
}


static int
pki_add_keyid(X509 *x, int nid, const unsigned char *id, unsigned int len)
{
    int                 ok;
    AUTHORITY_KEYID    *akid;
    ASN1_OCTET_STRING  *os;

    os = ASN1_OCTET_STRING_new();
    if (os == NULL || !ASN1_OCTET_STRING_set(os, id, (int) len)) {
        ASN1_OCTET_STRING_free(os);
        return 0;
    }

    if (nid == NID_subject_key_identifier) {
        ok = X509_add1_ext_i2d(x, nid, os, 0, X509V3_ADD_DEFAULT);
        ASN1_OCTET_STRING_free(os);
        return ok;
    }

    akid = AUTHORITY_KEYID_new();
    if (akid == NULL) {
        ASN1_OCTET_STRING_free(os);
        return 0;
    }

    akid->keyid = os;
    ok = X509_add1_ext_i2d(x, nid, akid, 0, X509V3_ADD_DEFAULT);
    AUTHORITY_KEYID_free(akid);

    return ok;
}


/* Serials of 16 octets, but 9 (over 70 random bits) for the Matter
 * operational certificates: the SDK's are 8, and with 16 a NOC with 3
 * CATs under an ICAC whose subject has a fabric-id was over 600 bytes of
 * DER (pki_der_bound in matter.c counts with this). */
size_t
pki_int_serial_octets(const pki_template_t *t)
{
    if (t != NULL && (t->matter == PKI_MATTER_RCAC
                      || t->matter == PKI_MATTER_ICAC
                      || t->matter == PKI_MATTER_NOC))
    {
        return 9;
    }

    return 16;
}


/* A notAfter as the CA caps it: its max_validity (notBefore through
 * notAfter, both included, spans no more), its own notAfter (unless the
 * template goes beyond_ca_expiry: a certificate may end when the CA
 * does), 99991231235959Z. */
time_t
pki_int_cap_not_after(const pki_template_t *t, const pki_ca_t *ca,
    time_t nb, time_t na)
{
    long    max;
    time_t  ca_na;

    if (ca) {
        max = ca->max_validity;
        if (max && na > pki_int_validity_end(nb, max)) {
            na = pki_int_validity_end(nb, max);
        }

        if (!t->beyond_ca_expiry) {
            ca_na = pki_ca_end(ca);
            if (ca_na != (time_t) -1 && na > ca_na) {
                na = ca_na;
            }
        }
    }

    if (na > PKI_TIME_MAX) {
        na = PKI_TIME_MAX;
    }

    return na;
}


/* The host name a CN of len bytes names for a name-constraints check, as
 * pki_check_cn reads it (the full stops IDNA takes for '.' as '.', one
 * trailing dot dropped), into out (size bytes): 1 when it is LDH labels,
 * '.' and '*' with a '.' in it (or, with single, one LDH label that
 * pki_dns_ok takes), else 0.  OpenSSL's CN check skips a CN with a '*'
 * or a dot at its end, which TLS clients (and pki_check_cn) take for a
 * host name. */
static int
pki_cn_dns_form(const unsigned char *cn, int len, char *out, size_t size,
    int single)
{
    int     i, k, dot;
    size_t  n;

    for (n = 0, dot = 0, i = 0; i < len; i += k) {
        k = pki_full_stop_len(cn + i, len - i);
        if (n + 1 >= size) {
            return 0;
        }
        if (k > 0) {
            out[n++] = '.';
            continue;
        }
        k = 1;
        if (!(cn[i] >= 'a' && cn[i] <= 'z') && !(cn[i] >= 'A' && cn[i] <= 'Z')
            && !(cn[i] >= '0' && cn[i] <= '9') && cn[i] != '-'
            && cn[i] != '.' && cn[i] != '*')
        {
            return 0;
        }
        out[n++] = (char) cn[i];
    }

    if (n > 1 && out[n - 1] == '.') {
        n--;
    }
    out[n] = '\0';

    for (dot = 0, i = 0; i < (int) n; i++) {
        dot |= out[i] == '.';
    }

    /* a single label ("intranet"): a host name to TLS clients that fall
     * back to the CN (OpenSSL's X509_check_host), which OpenSSL's own
     * constraint check of the CN skips */
    return dot || (single && pki_dns_ok((const unsigned char *) out,
                                        (int) n, 0));
}


/* The request's SANs (req->sans itself) or, with what its CNs name added,
 * a new list, to be freed with pki_names_free(): where the request has no
 * iPAddress SAN (ipadd 0), a CN that is an IP address as one; where it has
 * no dNSName SAN (dns 0), a CN that names a host (pki_cn_dns_form; a
 * single label too with single) as a dNSName.  The CN is read as
 * pki_check_cn reads it, without one trailing dot.  1, or 0 out of
 * memory. */
static int
pki_names_with_cn(const pki_request_t *req, int ipadd, int dns, int single,
    GENERAL_NAMES **out)
{
    int                 i, len, alen, type;
    char                host[256];
    GENERAL_NAME       *g;
    GENERAL_NAMES      *names;
    unsigned char      *utf8, addr[16];
    ASN1_IA5STRING     *ia5;
    ASN1_OCTET_STRING  *os;

    *out = req->sans;
    names = NULL;

    if (ipadd && dns) {
        return 1;
    }

    for (i = X509_NAME_get_index_by_NID(req->subject, NID_commonName, -1);
         i >= 0;
         i = X509_NAME_get_index_by_NID(req->subject, NID_commonName, i))
    {
        utf8 = NULL;
        len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(
                                      X509_NAME_get_entry(req->subject, i)));
        if (len < 0) {
            ERR_clear_error();
            continue;
        }

        alen = 0;
        type = 0;

        if (len > 1 && utf8[len - 1] == '.') {
            alen = pki_cn_ip(utf8, len - 1, addr);
        } else if (len > 0) {
            alen = pki_cn_ip(utf8, len, addr);
        }

        if (alen > 0) {
            type = ipadd ? 0 : GEN_IPADD;
        } else if (!dns
                   && pki_cn_dns_form(utf8, len, host, sizeof(host), single))
        {
            type = GEN_DNS;
        }

        OPENSSL_free(utf8);

        if (type == 0) {
            continue;
        }

        if (names == NULL) {
            names = req->sans != NULL ? sk_GENERAL_NAME_dup(req->sans)
                                      : sk_GENERAL_NAME_new_null();
            if (names == NULL) {
                return 0;
            }
            *out = names;
        }

        g = GENERAL_NAME_new();
        if (g == NULL) {
            return 0;
        }

        if (type == GEN_IPADD) {
            os = ASN1_OCTET_STRING_new();
            if (os == NULL || !ASN1_OCTET_STRING_set(os, addr, alen)) {
                GENERAL_NAME_free(g);
                ASN1_OCTET_STRING_free(os);
                return 0;
            }
            GENERAL_NAME_set0_value(g, GEN_IPADD, os);

        } else {
            ia5 = ASN1_IA5STRING_new();
            if (ia5 == NULL || !ASN1_STRING_set(ia5, host, -1)) {
                GENERAL_NAME_free(g);
                ASN1_IA5STRING_free(ia5);
                return 0;
            }
            GENERAL_NAME_set0_value(g, GEN_DNS, ia5);
        }

        if (!sk_GENERAL_NAME_push(names, g)) {
            GENERAL_NAME_free(g);
            return 0;
        }
    }

    return 1;
}


/* Frees what pki_names_with_cn() made: its own names only. */
static void
pki_names_free(const pki_request_t *req, GENERAL_NAMES *names)
{
    int  i;

    if (names == NULL || names == req->sans) {
        return;
    }

    for (i = sk_GENERAL_NAME_num(req->sans); i < sk_GENERAL_NAME_num(names);
         i++)
    {
        GENERAL_NAME_free(sk_GENERAL_NAME_value(names, i));
    }

    sk_GENERAL_NAME_free(names);
}


/* Certificate i of the CA's paths: its certificate, the "chain" file, then
 * each alternate chain in turn; NULL past the last. */
static X509 *
pki_ca_path_cert(const pki_ca_t *ca, int i)
{
    int  a, n;

    if (i == 0) {
        return ca->cert;
    }

    i--;
    n = sk_X509_num(ca->chain);
    if (i < n) {
        return sk_X509_value(ca->chain, i);
    }
    i -= n;

    for (a = 0; a < ca->nalt; a++) {
        n = sk_X509_num(ca->alt[a]);
        if (i < n) {
            return sk_X509_value(ca->alt[a], i);
        }
        i -= n;
    }

    return NULL;
}


/* 1 when URI u's authority (after "://", up to the first '/') is a plain
 * host name, a dotted address, and maybe ":PORT": the host every reader
 * of the URI finds (OpenSSL's constraint check takes what runs up to the
 * first ':' or '/', browsers end the host at '@', '?', '#' or '\\'). */
static int
pki_nc_uri_plain(const ASN1_STRING *u)
{
    int                   n, i, port;
    const unsigned char  *d;

    d = ASN1_STRING_get0_data(u);
    n = ASN1_STRING_length(u);

    for (i = 0; i + 2 < n; i++) {
        if (d[i] == ':' && d[i + 1] == '/' && d[i + 2] == '/') {
            break;
        }
    }

    if (i + 2 >= n) {
        return 1;           /* no authority: OpenSSL refuses it already */
    }

    for (i += 3, port = 0; i < n && d[i] != '/'; i++) {
        if (d[i] == ':' && !port) {
            port = 1;

        } else if (port ? !isdigit(d[i])
                        : !(isalnum(d[i]) || d[i] == '.' || d[i] == '-'))
        {
            return 0;
        }
    }

    return 1;
}


/* Where OpenSSL's NAME_CONSTRAINTS_check() reads a name otherwise than
 * clients do, the name is judged here (a description, or NULL): a URI
 * whose host part another reader ends elsewhere (a permitted subtree
 * would pass "https://evil.example?.good.example"), an IPv4-mapped IPv6
 * address (IPv4 ranges are skipped for it; clients take it as the IPv4
 * address), a dNSName "*.P" that covers a name an excluded subtree
 * holds ("*.corp.example" against "admin.corp.example", which the
 * suffix comparison misses). */
static const char *
pki_nc_gap(const NAME_CONSTRAINTS *nc, const GENERAL_NAMES *names)
{
    int                    i, j, k, uri, ip, bl, pl, off;
    const GENERAL_NAME    *g;
    GENERAL_SUBTREE       *st;
    const unsigned char   *b, *p, *d;
    STACK_OF(GENERAL_SUBTREE)  *sets[2];

    sets[0] = nc->permittedSubtrees;
    sets[1] = nc->excludedSubtrees;
    uri = 0;
    ip = 0;

    for (k = 0; k < 2; k++) {
        for (j = 0; j < sk_GENERAL_SUBTREE_num(sets[k]); j++) {
            st = sk_GENERAL_SUBTREE_value(sets[k], j);
            uri |= st->base->type == GEN_URI;
            ip |= st->base->type == GEN_IPADD;
        }
    }

    for (i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        g = sk_GENERAL_NAME_value(names, i);

        if (g->type == GEN_URI && uri
            && !pki_nc_uri_plain(g->d.uniformResourceIdentifier))
        {
            return "a URI whose host part holds more than a host name and "
                   "a port cannot be judged against URI name constraints";
        }

        if (g->type == GEN_IPADD && ip
            && ASN1_STRING_length(g->d.iPAddress) == 16)
        {
            d = ASN1_STRING_get0_data(g->d.iPAddress);
            if (memcmp(d, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
                return "an IPv4-mapped IPv6 address cannot be judged "
                       "against IP name constraints";
            }
        }

        if (g->type != GEN_DNS || ASN1_STRING_length(g->d.dNSName) < 3
            || memcmp(ASN1_STRING_get0_data(g->d.dNSName), "*.", 2) != 0)
        {
            continue;
        }

        p = ASN1_STRING_get0_data(g->d.dNSName) + 2;
        pl = ASN1_STRING_length(g->d.dNSName) - 2;

        for (j = 0; j < sk_GENERAL_SUBTREE_num(sets[1]); j++) {
            st = sk_GENERAL_SUBTREE_value(sets[1], j);
            if (st->base->type != GEN_DNS) {
                continue;
            }

            b = ASN1_STRING_get0_data(st->base->d.dNSName);
            bl = ASN1_STRING_length(st->base->d.dNSName);
            if (bl > 0 && b[0] == '.') {
                b++;
                bl--;
            }

            /* the excluded name lies below P: "*.P" covers it, or names
             * beside it that a verifier matching by label would take */
            off = bl - pl;
            if (off > 1 && b[off - 1] == '.'
                && strncasecmp((const char *) b + off, (const char *) p,
                               (size_t) pl) == 0)
            {
                return "a wildcard covers a name an excluded subtree "
                       "holds";
            }
        }
    }

    return NULL;
}


/*
 * The names of a request against the name constraints (RFC 5280 4.2.1.10)
 * of the issuing CA and of the chain above it, as a verifier judges them: a
 * certificate outside them is one no verifier accepts, so it is refused
 * before anything is reserved or signed.  Every path counts: a leaf that
 * the certificates of an alternate chain (RFC 8555 7.4.2) exclude fails
 * every client that picks that chain.  The names go into a scratch
 * certificate: OpenSSL's check reads a certificate's extension cache, and
 * filling that of the certificate being built would keep its digest of the
 * unsigned form.
 */
static pki_status_t
pki_name_constraints(const pki_ca_t *ca, const pki_template_t *t,
    const pki_request_t *req, pki_result_t *res)
{
    int                 i, crit, dns, ipadd, rv;
    X509               *tmp, *c;
    const char         *why;
    GENERAL_NAMES      *names;
    NAME_CONSTRAINTS   *nc;
    const GENERAL_NAME *g;

    tmp = NULL;
    names = NULL;
    rv = X509_V_OK;
    c = NULL;
    why = NULL;

    for (dns = 0, ipadd = 0, i = 0; i < sk_GENERAL_NAME_num(req->sans); i++)
    {
        g = sk_GENERAL_NAME_value(req->sans, i);
        dns |= g->type == GEN_DNS;
        ipadd |= g->type == GEN_IPADD;
    }

    for (i = 0; rv == X509_V_OK && (c = pki_ca_path_cert(ca, i)) != NULL;
         i++)
    {
        nc = X509_get_ext_d2i(c, NID_name_constraints, &crit, NULL);
        if (nc == NULL) {
            ERR_clear_error();
            continue;
        }

        /* an IP address in the CN counts where no iPAddress SAN is, as a
         * host name in it does where no dNSName is (pki_check_cn): the
         * scratch certificate carries them as SANs, which
         * NAME_CONSTRAINTS_check() judges.  Its own CN check reads IP
         * addresses not at all, and skips a wildcard CN, one with a
         * trailing dot and a single label ("intranet", under a template
         * whose CN names a host: pki_cn_host_template), which TLS
         * clients match all the same. */
        if (tmp == NULL) {
            tmp = X509_new();
            if (tmp == NULL
                || !X509_set_subject_name(tmp, req->subject)
                || !pki_names_with_cn(req, ipadd, dns,
                                      pki_cn_host_template(t), &names)
                || (sk_GENERAL_NAME_num(names) > 0
                    && !X509_add1_ext_i2d(tmp, NID_subject_alt_name,
                                          names, 0, 0)))
            {
                NAME_CONSTRAINTS_free(nc);
                X509_free(tmp);
                pki_names_free(req, names);
                return pki_fail(res, PKI_INTERNAL, "out of memory");
            }
            (void) X509_check_purpose(tmp, -1, 0);    /* fills the cache */
            ERR_clear_error();
        }

        rv = NAME_CONSTRAINTS_check(tmp, nc);

        /* a host name in the CN counts where no dNSName SAN is */
        if (rv == X509_V_OK && !dns) {
            rv = NAME_CONSTRAINTS_check_CN(tmp, nc);
        }

        if (rv == X509_V_OK && why == NULL) {
            why = pki_nc_gap(nc, names);
        }

        NAME_CONSTRAINTS_free(nc);
    }

    X509_free(tmp);
    pki_names_free(req, names);
    ERR_clear_error();

    if (rv == X509_V_OK && why != NULL) {
        return pki_fail(res, PKI_POLICY, "a name of the request is outside "
                        "the name constraints of CA \"%s\" (%s)", ca->name,
                        why);
    }

    if (rv != X509_V_OK) {
        return pki_fail(res, PKI_POLICY, "a name of the request is outside "
                        "the name constraints of CA \"%s\" (%s)", ca->name,
                        X509_verify_cert_error_string(rv));
    }

    return PKI_OK;
}


/* The keyUsage bits a subject key of this type may carry (all of them
 * for a key we cannot classify: the template's checks refused those). */
static unsigned
pki_ku_allowed(const EVP_PKEY *pk, pki_key_type_t *kt)
{
    if (!pki_int_classify_key(pk, kt)) {
        kt->type = (pki_kt_t) 0;
        return ~0u;
    }

    return pki_int_ku_bits(kt->type);
}


static pki_status_t
pki_build(const pki_template_t *t, const pki_ca_t *ca,
    const pki_request_t *req, X509 **out, pki_result_t *res)
{
    int                      i, bit, empty;
    X509                    *x;
    time_t                   now, nb, na, start;
    unsigned int             ku, mdlen, aklen;
    ASN1_TIME               *tm;
    pki_key_type_t           kt;
    unsigned char            md[EVP_MAX_MD_SIZE], ak[EVP_MAX_MD_SIZE];
    ASN1_BIT_STRING         *kus;
    BASIC_CONSTRAINTS       *bc;
    const ASN1_OCTET_STRING *caskid;

    *out = NULL;

    if (ca != NULL) {
        pki_status_t  nrc = pki_name_constraints(ca, t, req, res);

        if (nrc != PKI_OK) {
            return nrc;
        }
    }

    x = X509_new();
    if (x == NULL) {
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    if (!X509_set_version(x, X509_VERSION_3)
        || !X509_set_subject_name(x, req->subject)
        || !X509_set_issuer_name(x, ca ? X509_get_subject_name(ca->cert)
                                        : req->subject)
        || !X509_set_pubkey(x, req->pubkey)
        || !pki_int_cert_point_uncompressed(x))
    {
        X509_free(x);
        return pki_fail(res, PKI_INTERNAL, "cannot build the certificate");
    }

    /* Validity. */
    now = time(NULL);

    /* a CA past its end, or past a certificate's above it (nginx up
     * since it expired; the check at load is the only other one), signs
     * nothing, beyond_ca_expiry or not: no verifier would take what it
     * signs.  Not the client's fault, and over once the CA is renewed and
     * nginx reloaded: PKI_UNAVAILABLE (503 with Retry-After), as its CRL
     * and OCSP answers, with which certificate ended in the log */
    if (ca != NULL && pki_ca_live(ca, now, res) != PKI_OK) {
        X509_free(x);
        return res != NULL ? res->status : PKI_UNAVAILABLE;
    }

    nb = req->not_before ? req->not_before : now - 60;

    /* asked to end at notAfter without a start: start no earlier than
     * the template's validity allows for that end (less backdating),
     * notBefore through notAfter spanning at most the validity */
    start = pki_int_validity_start(req->not_after, pki_template_validity(t));

    if (!req->not_before && req->not_after && pki_template_validity(t) > 0
        && start > nb && start <= now)
    {
        nb = start;
    }

    /* and not before the CA's own start: a CA made a moment ago, or on a
     * host whose clock runs ahead (pki_ca_finish allows some skew), would
     * otherwise certify a span it did not cover yet (RFC 5280 path
     * validation does not mind, stricter verifiers do) */
    if (!req->not_before && ca != NULL) {
        time_t  canb = pki_int_asn1_time(X509_get0_notBefore(ca->cert));

        if (canb > nb) {
            nb = canb;
        }
    }

    /* RFC 5280 4.1.2.5: valid through notAfter, so that the span counted
     * inclusively is the template's validity, not a second more */
    na = pki_int_validity_end(nb, pki_template_validity(t));

    if (req->not_after && req->not_after < na) {
        na = req->not_after;
    }

    na = pki_int_cap_not_after(t, ca, nb, na);

    /* na == nb is one second of validity (RFC 5280 4.1.2.5) */
    if (na < nb) {
        X509_free(x);
        return pki_fail(res, PKI_POLICY, "the certificate would expire "
                        "before it starts (CA certificate expires too soon)");
    }

    /* backdated by 60 s: a validity that short would hand out a
     * certificate expired on arrival (a notAfter asked for is the
     * caller's: ACME checks it is ahead) */
    if (ca != NULL && !req->not_after && na <= now) {
        X509_free(x);
        return pki_fail(res, PKI_INTERNAL, "the certificate would be expired "
                        "when issued (the template's validity or the CA's "
                        "notAfter leaves no time after now)");
    }

    /* one asked for with a notAfter (ACME) ends there or is not issued
     * (RFC 8555 7.4) */
    if (req->not_after && na != req->not_after) {
        X509_free(x);
        return pki_fail(res, PKI_POLICY, "the certificate cannot end at "
                        "the notAfter asked for (the template's validity, "
                        "the CA certificate or its max_validity ends "
                        "sooner)");
    }

    tm = ASN1_TIME_set(NULL, nb);
    if (tm == NULL || !X509_set1_notBefore(x, tm)
        || !ASN1_TIME_set(tm, na) || !X509_set1_notAfter(x, tm))
    {
        ASN1_TIME_free(tm);
        X509_free(x);
        return pki_fail(res, PKI_INTERNAL, "cannot set the validity");
    }
    ASN1_TIME_free(tm);

    /* basicConstraints, critical. */
    bc = BASIC_CONSTRAINTS_new();
    if (bc == NULL) {
        goto failed;
    }

    bc->ca = t->ca ? 0xff : 0;
    if (t->ca && t->pathlen >= 0) {
        bc->pathlen = ASN1_INTEGER_new();
        if (bc->pathlen == NULL || !ASN1_INTEGER_set(bc->pathlen, t->pathlen)) {
            BASIC_CONSTRAINTS_free(bc);
            goto failed;
        }
    }

    i = X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT);
    BASIC_CONSTRAINTS_free(bc);
    if (!i) {
        goto failed;
    }

    /* keyUsage, critical. */
    if (t->key_usage_set) {
        ku = t->key_usage;

    } else if (t->ca) {
        ku = (1u << PKI_KU_DIGITAL_SIGNATURE) | (1u << PKI_KU_KEY_CERT_SIGN)
             | (1u << PKI_KU_CRL_SIGN);

    } else {
        ku = 1u << PKI_KU_DIGITAL_SIGNATURE;
        if (pki_int_classify_key(req->pubkey, &kt) && kt.type == PKI_KT_RSA) {
            ku |= 1u << PKI_KU_KEY_ENCIPHERMENT;
        }
    }

    /* Only the bits the subject key's type allows, when a template
     * that takes several key types names others too: RSA (RFC 3279
     * 2.3.1) has no keyAgreement, EC (RFC 5480 3, RFC 8813 3) no
     * encipherment, Ed25519 and Ed448 (RFC 8410 5) neither. */
    ku &= pki_ku_allowed(req->pubkey, &kt);

    if (ku == 0) {
        X509_free(x);
        return pki_fail(res, PKI_POLICY, "the key usage of template \"%s\" "
                        "does not suit %s key (RFC 3279, 5480, 8410)",
                        t->name, pki_kt_article_name(kt.type));
    }

    kus = ASN1_BIT_STRING_new();
    if (kus == NULL) {
        goto failed;
    }

    for (bit = 0; bit <= PKI_KU_DECIPHER_ONLY; bit++) {
        if ((ku & (1u << bit)) && !ASN1_BIT_STRING_set_bit(kus, bit, 1)) {
            ASN1_BIT_STRING_free(kus);
            goto failed;
        }
    }

    i = X509_add1_ext_i2d(x, NID_key_usage, kus, 1, X509V3_ADD_DEFAULT);
    ASN1_BIT_STRING_free(kus);
    if (!i) {
        goto failed;
    }

    /* Matter: extendedKeyUsage is critical */
    if (t->eku
        && !X509_add1_ext_i2d(x, NID_ext_key_usage, t->eku, t->matter != 0,
                              X509V3_ADD_DEFAULT))
    {
        goto failed;
    }

    /* SKID: SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2 (1)). */
    if (!X509_pubkey_digest(x, EVP_sha1(), md, &mdlen)
        || !pki_add_keyid(x, NID_subject_key_identifier, md, mdlen))
    {
        goto failed;
    }

    /* AKID: the CA's SKID, else computed; self-signed: our own SKID. */
    if (ca) {
        caskid = X509_get0_subject_key_id(ca->cert);
        if (caskid && ASN1_STRING_length(caskid) > 0
            && ASN1_STRING_length(caskid) <= (int) sizeof(ak))
        {
            aklen = (unsigned int) ASN1_STRING_length(caskid);
            memcpy(ak, ASN1_STRING_get0_data(caskid), aklen);

        } else if (!X509_pubkey_digest(ca->cert, EVP_sha1(), ak, &aklen)) {
            goto failed;
        }

    } else {
        memcpy(ak, md, mdlen);
        aklen = mdlen;
    }

    if (!pki_add_keyid(x, NID_authority_key_identifier, ak, aklen)) {
        goto failed;
    }

    /* SAN: critical when the subject is empty (RFC 5280 4.2.1.6). */
    if (req->sans && sk_GENERAL_NAME_num(req->sans) > 0) {
        empty = X509_NAME_entry_count(req->subject) == 0;
        if (!X509_add1_ext_i2d(x, NID_subject_alt_name, req->sans, empty,
                           X509V3_ADD_DEFAULT))
        {
            goto failed;
        }

    } else if (X509_NAME_entry_count(req->subject) == 0) {
        X509_free(x);
        return pki_fail(res, PKI_POLICY, "the request has neither a subject "
                        "nor a SAN");
    }

    if (ca && ca->crl_url && !pki_add_crldp(x, ca->crl_url)) {
        goto failed;
    }

    if (ca && !pki_add_aia(x, ca->ocsp_url, ca->ca_issuers_url)) {
        goto failed;
    }

    for (i = 0; i < sk_X509_EXTENSION_num(t->extensions); i++) {
        if (!X509_add_ext(x, sk_X509_EXTENSION_value(t->extensions, i), -1)) {
            goto failed;
        }
    }

    if (req->must_staple && !pki_add_must_staple(x)) {
        goto failed;
    }

    if (t->matter) {
        pki_status_t  mrc = pki_int_matter_prepare(t, ca, x, res);

        if (mrc != PKI_OK) {
            X509_free(x);
            return mrc;
        }
    }

    *out = x;

    return PKI_OK;

failed:

    X509_free(x);

    return pki_fail(res, PKI_INTERNAL, "cannot build the certificate "
                    "extensions");
}


/* RFC 2253 text of a name, malloc'd; NULL on failure. */
char *
pki_int_name_text(const X509_NAME *name)
{
    BIO    *bio;
    char   *s, *data;
    long    len;

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        return NULL;
    }

    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) < 0) {
        BIO_free(bio);
        return NULL;
    }

    len = BIO_get_mem_data(bio, &data);
    s = malloc((size_t) len + 1);
    if (s) {
        if (len > 0) {
            memcpy(s, data, (size_t) len);
        }
        s[len] = '\0';
    }

    BIO_free(bio);

    return s;
}


/* A SAN value in the record's text: the text separates values with
 * commas, so a comma (or backslash) inside one, which a URI or an email
 * address may hold, is written with a backslash before it. */
static void
pki_sans_put(BIO *bio, const char *type, const unsigned char *d, int len)
{
    int  i, from;

    BIO_puts(bio, type);

    for (from = 0, i = 0; i < len; i++) {
        if (d[i] == ',' || d[i] == '\\') {
            BIO_write(bio, d + from, i - from);
            BIO_write(bio, "\\", 1);
            from = i;
        }
    }

    BIO_write(bio, d + from, len - from);
}


static char *
pki_sans_text(const GENERAL_NAMES *gens)
{
    int                   i, n, len;
    BIO                  *bio;
    char                 *s, *data, ip[INET6_ADDRSTRLEN];
    long                  blen;
    const GENERAL_NAME   *g;
    const unsigned char  *d;

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        return NULL;
    }

    n = gens ? sk_GENERAL_NAME_num(gens) : 0;

    for (i = 0; i < n; i++) {
        g = sk_GENERAL_NAME_value(gens, i);

        if (i) {
            BIO_write(bio, ",", 1);
        }

        switch (g->type) {
        case GEN_DNS:
            d = ASN1_STRING_get0_data(g->d.dNSName);
            len = ASN1_STRING_length(g->d.dNSName);
            BIO_printf(bio, "DNS:%.*s", len, d);
            break;
        case GEN_EMAIL:
            d = ASN1_STRING_get0_data(g->d.rfc822Name);
            len = ASN1_STRING_length(g->d.rfc822Name);
            pki_sans_put(bio, "email:", d, len);
            break;
        case GEN_URI:
            d = ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
            len = ASN1_STRING_length(g->d.uniformResourceIdentifier);
            pki_sans_put(bio, "URI:", d, len);
            break;
        case GEN_IPADD:
            d = ASN1_STRING_get0_data(g->d.iPAddress);
            len = ASN1_STRING_length(g->d.iPAddress);
            if ((len != 4 && len != 16)
                || inet_ntop(len == 4 ? AF_INET : AF_INET6, d, ip,
                             sizeof(ip)) == NULL)
            {
                snprintf(ip, sizeof(ip), "?");
            }
            BIO_printf(bio, "IP:%s", ip);
            break;
        default:
            BIO_printf(bio, "other:?");
        }
    }

    blen = BIO_get_mem_data(bio, &data);
    s = malloc((size_t) blen + 1);
    if (s) {
        if (blen) {
            memcpy(s, data, (size_t) blen);
        }
        s[blen] = '\0';
    }

    BIO_free(bio);

    return s;
}


/* ---- issuance ----------------------------------------------------------- */

/* The ACME engine's "serial reserved" hook (issue_int.h): one per thread,
 * consumed by the next pki_issue(). */
static __thread pki_int_reserved_fn  pki_reserved_fn;
static __thread void                *pki_reserved_arg;


void
pki_int_issue_on_reserved(pki_int_reserved_fn fn, void *arg)
{
    pki_reserved_fn = fn;
    pki_reserved_arg = arg;
}

static __thread pki_int_link_t  *pki_issue_link_next;


void
pki_int_issue_link(pki_int_link_t *link)
{
    pki_issue_link_next = link;
}

/* The index entry of this thread's next pki_issue() (issue_int.h). */
static __thread const char  *pki_issue_ix_claim;
static __thread const char  *pki_issue_ix_key;


void
pki_int_issue_index(const char *claim, const char *ixkey)
{
    pki_issue_ix_claim = claim;
    pki_issue_ix_key = ixkey;
}


/* Set by pki_issue_carry() when the success entry of this thread's
 * issuance went into the record's commit (pki_issue then only counts it). */
static __thread int  pki_issue_carried;


/* The record commit that also carries the issuance's transaction-log
 * entry (the entry pki_issue() would write on success, byte for byte):
 * 0 when the entry cannot be built (then the plain commit runs and
 * pki_issue() logs as before), else 1 with *rc the commit's outcome. */
static int
pki_issue_carry(pki_ca_t *ca, const pki_template_t *t, pki_redis_t *r,
    X509 *x, const char *stream, const pki_record_t *rec, pki_int_rsv_t *rsv,
    pki_result_t *res, pki_status_t *rc)
{
    int           ok;
    char          hex[41], tm[40], rid[64], *subject;
    size_t        blen;
    pki_event_t   ev;
    char          body[8192];

    memset(&ev, 0, sizeof(ev));
    ev.type = PKI_EV_ISSUE;
    ev.status = PKI_OK;
    ev.operation = pki_int_peek_operation();
    ev.ca = ca->name;
    ev.template_name = t->name;

    if (!pki_serial_to_hex(X509_get0_serialNumber(x), hex)) {
        return 0;
    }

    ev.serial = hex;
    subject = pki_int_name_text(X509_get_subject_name(x));
    ev.subject = subject;

    ok = pki_int_audit_entry(&ev, body, sizeof(body), &blen, tm);
    free(subject);

    if (!ok) {
        return 0;
    }

    *rc = pki_int_record_commit_by(r, rec, rsv, stream, tm, body, blen,
                                   rid, sizeof(rid), res);
    if (*rc == PKI_OK) {
        pki_int_audit_carried(stream, tm, body, blen, rid);
        pki_issue_carried = 1;
    }

    return 1;
}


static pki_status_t pki_issue_do(pki_ca_t *ca, const pki_template_t *t,
    pki_redis_t *r, const pki_request_t *req, const pki_issue_ctx_t *ictx,
    X509 **out, pki_result_t *res);

/* ixkey (NULL: none): the record's index entry, dropped with it while it
 * names it (pki_int_record_abandon_ix). */
static void
pki_abandon(pki_redis_t *r, const pki_ca_t *ca, const char *serial,
    const char *ixkey, pki_result_t *res)
{
    pki_result_t  ar;

    pki_result_init(&ar);

    if (pki_int_record_abandon_ix(r, ca->name, serial, ixkey, &ar)
        != PKI_OK)
    {
        pki_log(res, "%sabandoning serial %s failed: %s %s",
                (res && res->log[0]) ? "; " : "", serial, ar.detail, ar.log);
    }
}


/*
 * A commit that failed may have run all the same: its answer was lost
 * (hiredis then sends it again on a new connection, which finds the
 * record no longer pending: a conflict), or Redis answered too late.  The
 * record as stored says: good, with this certificate, means committed,
 * and the issuance stands (the certificate must not be withheld, or the
 * order failed, while OCSP calls it good).  Anything else: not committed,
 * and the serial is abandoned.  1 committed, 0 not, -1 no answer (then a
 * batch withdraws the serial all the same: its record may be good).
 */
static int
pki_issue_committed(pki_redis_t *r, const pki_record_t *rec,
    pki_result_t *res)
{
    int           yes;
    pki_record_t  got;
    pki_result_t  tmp;
    pki_status_t  st;

    memset(&got, 0, sizeof(got));
    pki_result_init(&tmp);

    st = pki_record_get(r, rec->ca, rec->serial, &got, &tmp);
    if (st != PKI_OK) {
        if (st == PKI_NOT_FOUND) {
            return 0;
        }

        pki_log(res, "%sits read-back failed: %s %s", res->log[0] ? "; "
                : "", tmp.detail, tmp.log);
        return -1;
    }

    yes = got.status == PKI_CERT_GOOD && got.der != NULL
          && got.der_len == rec->der_len
          && memcmp(got.der, rec->der, rec->der_len) == 0;

    pki_record_clear(&got);

    if (yes) {
        pki_log(res, "%sthe record's commit answered \"%s\", yet it is "
                "committed", res->log[0] ? "; " : "", res->detail);
        res->status = PKI_OK;
        res->detail[0] = '\0';
    }

    return yes;
}


static pki_status_t
pki_issue_do(pki_ca_t *ca, const pki_template_t *t, pki_redis_t *r,
    const pki_request_t *req, const pki_issue_ctx_t *ictx, X509 **out,
    pki_result_t *res)
{
    int              tries, len, carried, yes, lost;
    X509            *x;
    pki_status_t     rc;
    pki_record_t     rec;
    ASN1_INTEGER    *serial;
    unsigned char   *der, *p;
    const char      *stream, *ixkey, *ixclaim;
    pki_int_rsv_t    rsv;
    pki_int_link_t  *link;

    if (out == NULL) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    *out = NULL;
    link = pki_issue_link_next;
    lost = 0;

    /* an index entry (a Matter DAC's key, est.c): not with a link */
    ixkey = link == NULL ? pki_issue_ix_key : NULL;
    ixclaim = pki_issue_ix_claim;

    if (ca == NULL || t == NULL || req == NULL || req->subject == NULL
        || req->pubkey == NULL)
    {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    if (!ca->finished || ca->key == NULL) {
        return pki_fail(res, PKI_INTERNAL, "CA \"%s\" is not ready",
                        ca->name);
    }

    if (!pki_ca_allows(ca, t)) {
        return pki_fail(res, PKI_POLICY, "template \"%s\" is not allowed for "
                        "CA \"%s\"", t->name, ca->name);
    }

    rc = pki_check_key(t, req->pubkey, res);
    if (rc != PKI_OK) {
        return rc;
    }

    rc = pki_build(t, ca, req, &x, res);
    if (rc != PKI_OK) {
        return rc;
    }

    memset(&rec, 0, sizeof(rec));
    memset(&rsv, 0, sizeof(rsv));
    serial = NULL;
    der = NULL;

    snprintf(rec.ca, sizeof(rec.ca), "%s", ca->name);
    snprintf(rec.template_name, sizeof(rec.template_name), "%s", t->name);
    snprintf(rec.protocol, sizeof(rec.protocol), "%s",
             (ictx && ictx->protocol) ? ictx->protocol : "");
    rec.requester = (char *) ((ictx && ictx->requester) ? ictx->requester
                                                        : "");
    rec.client = (char *) ((ictx && ictx->client) ? ictx->client : "");
    snprintf(rec.realm, sizeof(rec.realm), "%s",
             (ictx && ictx->realm) ? ictx->realm : "");
    rec.status = PKI_CERT_PENDING;
    rec.not_before = pki_int_asn1_time(X509_get0_notBefore(x));
    rec.not_after = pki_int_asn1_time(X509_get0_notAfter(x));
    rec.created = time(NULL);
    /* the certificate's: a DAC's VID and PID are added by pki_build */
    rec.subject = pki_int_name_text(X509_get_subject_name(x));
    rec.sans = pki_sans_text(req->sans);

    if (rec.subject == NULL || rec.sans == NULL) {
        rc = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto failed;
    }

    /* A fresh serial, reserved with the intent before anything is signed. */
    for (tries = 0; tries < PKI_SERIAL_TRIES; tries++) {
        ASN1_INTEGER_free(serial);
        serial = NULL;

        if (!pki_serial_new_octets(&serial, pki_int_serial_octets(t))
            || !pki_serial_to_hex(serial, rec.serial))
        {
            rc = pki_fail(res, PKI_INTERNAL, "cannot make a serial number");
            goto failed;
        }

        if (r == NULL) {
            rc = PKI_OK;
            break;
        }

        if (ixkey != NULL) {
            rc = pki_int_record_reserve_ix(r, &rec, ixclaim, ixkey, &lost,
                                           &rsv, res);
        } else {
            rc = pki_int_record_reserve_link(r, &rec, link, &rsv, res);
        }
        if (rc != PKI_CONFLICT || lost
            || (link != NULL && link->found != 0))
        {
            break;
        }

        pki_log(res, "%sserial %s collided", res && res->log[0] ? "; " : "",
                rec.serial);
    }

    if (rc != PKI_OK) {
        if (rc == PKI_CONFLICT && !lost
            && (link == NULL || link->found == 0))
        {
            pki_fail(res, PKI_CONFLICT, "no free serial number after %d "
                     "tries", PKI_SERIAL_TRIES);

        } else if (rc == PKI_UNAVAILABLE && (link != NULL || ixkey != NULL))
        {
            /* it may have run: the link's next finalization must not
             * wait for this record to look dead, nor the key's next
             * issuance for its index entry */
            pki_abandon(r, ca, rec.serial, ixkey, res);
        }
        goto failed;
    }

    if (tries > 0 && res != NULL) {
        /* a serial drawn after a collision is reserved: the collision
         * stays in the log, not in the result of an issuance that
         * succeeds (the metrics counted it a failure) */
        res->status = PKI_OK;
        res->detail[0] = '\0';
    }

    /* From here on, a failure abandons the pending record. */
    if (pki_reserved_fn != NULL && r != NULL) {
        pki_int_reserved_fn  fn = pki_reserved_fn;

        pki_reserved_fn = NULL;
        rc = fn(pki_reserved_arg, rec.serial, res);
        if (rc != PKI_OK) {
            goto abandon;
        }
    }

    if (!X509_set_serialNumber(x, serial)) {
        rc = pki_fail(res, PKI_INTERNAL, "cannot set the serial number");
        goto abandon;
    }

    rc = pki_key_sign_x509(ca->key, x, res);
    if (rc != PKI_OK) {
        goto abandon;
    }

    if (t->matter) {
        rc = pki_int_matter_issued(t, ca, x, res);
        if (rc != PKI_OK) {
            goto abandon;
        }
    }

    if (r) {
        len = i2d_X509(x, NULL);
        if (len <= 0 || (der = malloc((size_t) len)) == NULL) {
            rc = pki_fail(res, PKI_INTERNAL, "cannot encode the certificate");
            goto abandon;
        }

        p = der;
        i2d_X509(x, &p);
        rec.der = der;
        rec.der_len = (size_t) len;
        rec.status = PKI_CERT_GOOD;

        if (ictx != NULL && ictx->committed != NULL) {
            *ictx->committed = 1;
        }

        stream = pki_int_audit_stream(r, ca->name);

        carried = stream != NULL
                  && pki_issue_carry(ca, t, r, x, stream, &rec, &rsv, res,
                                     &rc);
        if (!carried) {
            rc = pki_int_record_commit_by(r, &rec, &rsv, NULL, NULL, NULL, 0,
                                          NULL, 0, res);
        }

        /* a commit run too late wrote nothing: the record is pending, for
         * the abandon (or its expiry) */
        yes = 0;
        if ((rc == PKI_UNAVAILABLE || rc == PKI_CONFLICT) && !rsv.late) {
            yes = pki_issue_committed(r, &rec, res);
        }

        if (yes < 0) {
            /* maybe committed, and nobody will hold the certificate: as a
             * batch does, it is withdrawn (revoked, cessationOfOperation;
             * a pending record is abandoned below), or a protocol that
             * settles its request from the store (an ACME order, SCEP
             * CertPoll) could hand it out later, unlogged with carry=off */
            (void) pki_int_issue_withdraw(r, ca, x, res);
        }

        if (yes > 0) {
            rc = PKI_OK;

            /* the carried entry went in with the record (the script adds
             * it first): in its stream, for the janitor, whose orphan it
             * is (its stream id was in the lost answer).  pki_issue()
             * must not log the issuance a second time. */
            if (carried) {
                pki_issue_carried = 1;
            }
        }

        if (rc != PKI_OK) {
            goto abandon;
        }
    }

    free(der);
    free(rec.subject);
    free(rec.sans);
    ASN1_INTEGER_free(serial);

    *out = x;

    return PKI_OK;

abandon:

    if (r) {
        pki_abandon(r, ca, rec.serial, ixkey, res);
    }

failed:

    free(der);
    free(rec.subject);
    free(rec.sans);
    ASN1_INTEGER_free(serial);
    X509_free(x);

    return rc;
}

/* The audit hook (core/audit.c): every outcome of an issuance is logged
 * and counted here, for every protocol.  A certificate whose record cannot
 * be written to the transaction log is not handed out. */
/*
 * A certificate recorded as good but withheld (the transaction log
 * refused its entry, or SCEP could not build its CertRep) is revoked,
 * cessationOfOperation, so that nothing calls good a certificate nobody
 * holds, and a protocol that settles an interrupted issuance from the
 * store (SCEP CertPoll, an ACME order) does not hand it out later.  Best
 * effort: 0 and the log line say when it failed.
 */
int
pki_int_issue_withdraw(pki_redis_t *r, const pki_ca_t *ca, X509 *x,
    pki_result_t *res)
{
    int           marked;
    char          hex[41];
    pki_result_t  wres;

    if (r == NULL || x == NULL
        || !pki_serial_to_hex(X509_get0_serialNumber(x), hex))
    {
        return 0;
    }

    pki_result_init(&wres);

    if (pki_int_issue_withdraw_serial(r, ca->name, hex, &marked, &wres)
        == PKI_OK)
    {
        pki_log(res, "; serial %s withdrawn (revoked, cessationOfOperation)"
                "%s", hex, marked ? "" : " (not marked withdrawn)");
        return 1;
    }

    pki_log(res, "; serial %s could not be withdrawn: %s", hex, wres.detail);

    return 0;
}


/* pki_int_issue_withdraw's steps, for a serial (a Matter batch's DACs, a
 * NOC: issue_int.h). */
pki_status_t
pki_int_issue_withdraw_serial(pki_redis_t *r, const char *ca,
    const char *hex, int *marked, pki_result_t *wres)
{
    pki_status_t  st;

    *marked = 0;

    st = pki_int_record_withdraw(r, ca, hex, wres);
    if (st != PKI_OK) {
        return st;
    }

    /* told apart from an operator's revocation (SCEP CertPoll issues
     * anew only after this); unmarked, it counts as one */
    if (pki_int_record_withdrawn(r, ca, hex, 1, marked, wres) != PKI_OK) {
        *marked = 0;
    }

    return PKI_OK;
}


/* The time a batch's cleanup may take (pki_batch_abandon,
 * pki_batch_withdraw): the store's timeout, and per item a hundredth of it
 * but at least 50 ms, room for a withdrawal's two durable writes (each
 * waiting for an fsync under appendfsync always, milliseconds on a slow
 * disk).  A stalled store stops the cleanup sooner (a command left
 * unanswered twice); this bounds one that answers each command just
 * within the timeout, which held a thread over half an hour for 1000
 * items at the default 1 s (now at most 51 s). */
double
pki_int_cleanup_deadline(const pki_redis_t *r, size_t n)
{
    double  t;

    t = pki_int_redis_timeout_ms(r) / 1000.0;

    return pki_int_now() + t + (double) n * (t / 100.0 > 0.05 ? t / 100.0
                                                               : 0.05);
}


pki_status_t
pki_issue(pki_ca_t *ca, const pki_template_t *t, pki_redis_t *r,
    const pki_request_t *req, const pki_issue_ctx_t *ictx, X509 **out,
    pki_result_t *res)
{
    char             hex[41], opbuf[32], *subject;
    const char      *why;
    pki_event_t      ev;
    pki_status_t     rc, ast;
    pki_result_t     ares;
    pki_int_link_t  *link;

    if (ictx != NULL) {
        pki_event_set_actor(ictx->protocol, ictx->requester, ictx->client);
    }

    pki_issue_carried = 0;
    link = pki_issue_link_next;

    if (pki_int_audit_ready(&why)) {
        rc = pki_issue_do(ca, t, r, req, ictx, out, res);

    } else {
        /* a transaction log is configured and not open, or holds all it
         * may for a file that takes nothing: nothing is signed that it
         * could not hold */
        if (out != NULL) {
            *out = NULL;
        }
        rc = pki_fail(res, PKI_UNAVAILABLE, "transaction log unavailable");
        pki_log(res, "transaction log: %s", why);
    }

    pki_reserved_fn = NULL;         /* one call only, even when unused */
    pki_issue_link_next = NULL;
    pki_issue_ix_claim = NULL;
    pki_issue_ix_key = NULL;

    if (link != NULL && link->found != 0) {
        /* not an issuance: the order's certificate is recorded already,
         * or another finalization runs; the caller says which */
        (void) pki_int_take_operation(opbuf);
        pki_event_set_actor(NULL, NULL, NULL);
        return rc;
    }

    memset(&ev, 0, sizeof(ev));
    ev.type = PKI_EV_ISSUE;
    ev.status = rc;
    ev.operation = pki_int_take_operation(opbuf);
    ev.ca = ca ? ca->name : NULL;
    ev.template_name = t ? t->name : NULL;
    ev.reason = (rc != PKI_OK && res) ? res->detail : NULL;

    hex[0] = '\0';
    subject = NULL;

    if (rc == PKI_OK && out && *out) {
        if (pki_serial_to_hex(X509_get0_serialNumber(*out), hex)) {
            ev.serial = hex;
        }

        /* a carried entry is logged already: the counters need no
         * subject */
        if (!pki_issue_carried) {
            subject = pki_int_name_text(X509_get_subject_name(*out));
        }

    } else if (req && req->subject) {
        subject = pki_int_name_text(req->subject);
    }

    ev.subject = subject;

    pki_result_init(&ares);

    if (pki_issue_carried && rc == PKI_OK) {
        /* the entry went into the record's commit: counted only */
        pki_int_event_sink(&ev);
        ast = PKI_OK;

    } else {
        ast = pki_event_emit(&ev, rc == PKI_OK, &ares);
    }

    pki_issue_carried = 0;

    /* no stale actor for the thread's next event */
    pki_event_set_actor(NULL, NULL, NULL);

    free(subject);

    if (ast != PKI_OK && rc == PKI_OK) {
        pki_log(res, "%stransaction log: %s %s", res && res->log[0] ? "; "
                : "", ares.detail, ares.log);
        (void) pki_int_issue_withdraw(r, ca, *out, res);
        X509_free(*out);
        *out = NULL;
        return pki_fail(res, PKI_UNAVAILABLE, "transaction log unavailable");
    }

    return rc;
}



pki_status_t
pki_selfsign(pki_key_t *key, const pki_template_t *t, X509_NAME *subject,
    X509 **out, pki_result_t *res)
{
    X509           *x;
    EVP_PKEY       *pub;
    pki_status_t    rc;
    pki_request_t   req;
    ASN1_INTEGER   *serial;

    if (out == NULL) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    *out = NULL;

    if (key == NULL || t == NULL || subject == NULL) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    if (X509_NAME_entry_count(subject) == 0) {
        return pki_fail(res, PKI_MALFORMED, "a self-signed certificate needs "
                        "a subject");
    }

    pub = pki_key_public(key);
    if (pub == NULL) {
        return pki_fail(res, PKI_INTERNAL, "the key is not open");
    }

    rc = pki_check_key(t, pub, res);
    if (rc != PKI_OK) {
        return rc;
    }

    memset(&req, 0, sizeof(req));
    req.subject = subject;
    req.pubkey = pub;

    rc = pki_build(t, NULL, &req, &x, res);
    if (rc != PKI_OK) {
        return rc;
    }

    serial = NULL;
    if (!pki_serial_new_octets(&serial, pki_int_serial_octets(t))
        || !X509_set_serialNumber(x, serial))
    {
        ASN1_INTEGER_free(serial);
        X509_free(x);
        return pki_fail(res, PKI_INTERNAL, "cannot make a serial number");
    }
    ASN1_INTEGER_free(serial);

    rc = pki_key_sign_x509(key, x, res);
    if (rc == PKI_OK && t->matter) {
        rc = pki_int_matter_issued(t, NULL, x, res);
    }
    if (rc != PKI_OK) {
        X509_free(x);
        return rc;
    }

    *out = x;

    return PKI_OK;
}


/* The record under CA name of the certificate whose serial is hex,
 * checked to hold exactly that certificate: PKI_NOT_FOUND when it does
 * not. */
static pki_status_t
pki_cert_record_under(pki_redis_t *r, const char *name, X509 *cert,
    const char *hex, pki_record_t *rec, pki_result_t *res)
{
    int             len, same;
    pki_status_t    rc;
    unsigned char  *der;

    rc = pki_record_get(r, name, hex, rec, res);
    if (rc != PKI_OK) {
        pki_record_clear(rec);
        return rc;
    }

    if (rec->der) {
        der = NULL;
        len = i2d_X509(cert, &der);
        same = len > 0 && (size_t) len == rec->der_len
               && memcmp(der, rec->der, rec->der_len) == 0;
        OPENSSL_free(der);
        if (!same) {
            pki_record_clear(rec);
            return pki_fail(res, PKI_NOT_FOUND, "the record of serial %s "
                            "holds another certificate", hex);
        }
    }

    /* the name it is stored under, for what the caller does next */
    snprintf(rec->ca, sizeof(rec->ca), "%s", name);

    return PKI_OK;
}


/* The record of a certificate this CA issued, checked to hold exactly
 * that certificate.  rec is filled on PKI_OK (pki_record_clear it); its
 * ca names the CA it is stored under: this one, or one of this CA's
 * subject and key (a CA certified anew under another name, whose earlier
 * certificates keep their records under the first). */
pki_status_t
pki_int_cert_record(pki_redis_t *r, const pki_ca_t *ca, X509 *cert,
    pki_record_t *rec, pki_result_t *res)
{
    int             i, n;
    char            hex[41];
    pki_status_t    rc, one;
    pki_result_t    ores;

    memset(rec, 0, sizeof(pki_record_t));

    if (ca == NULL || cert == NULL) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    if (!pki_ca_issued(ca, cert)) {
        return pki_fail(res, PKI_NOT_FOUND, "the certificate was not issued "
                        "by CA \"%s\"", ca->name);
    }

    if (r == NULL) {
        return pki_fail(res, PKI_UNAVAILABLE, "no certificate store");
    }

    if (!pki_serial_to_hex(X509_get0_serialNumber(cert), hex)) {
        return pki_fail(res, PKI_NOT_FOUND, "unusable serial number");
    }

    rc = pki_cert_record_under(r, ca->name, cert, hex, rec, res);
    n = pki_ca_same_count(ca);

    for (i = 0; rc == PKI_NOT_FOUND && i < n; i++) {
        pki_result_init(&ores);
        one = pki_cert_record_under(r, pki_ca_same_name(ca, i), cert, hex,
                                    rec, &ores);
        if (one == PKI_OK) {
            if (res != NULL) {
                res->status = PKI_OK;
                res->detail[0] = '\0';
            }
            return PKI_OK;
        }
        if (one != PKI_NOT_FOUND) {
            if (ores.log[0] != '\0') {
                pki_log(res, "%s%s", res != NULL && res->log[0] != '\0'
                                     ? "; " : "", ores.log);
            }
            return pki_fail(res, one, "%s", ores.detail);
        }
    }

    return rc;
}


pki_status_t
pki_cert_status(pki_redis_t *r, const pki_ca_t *ca, X509 *cert,
    pki_cert_status_t *status, pki_result_t *res)
{
    pki_status_t  rc;
    pki_record_t  rec;

    if (status == NULL) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    rc = pki_int_cert_record(r, ca, cert, &rec, res);
    if (rc != PKI_OK) {
        return rc;
    }

    *status = rec.status;
    pki_record_clear(&rec);

    return PKI_OK;
}


/* ---- batch issuance ------------------------------------------------------
 *
 * pki_issue_batch (pki.h): the steps of pki_issue_do for many items, with
 * the Redis steps done for all items at once (pki_record_reserve_batch,
 * pki_record_commit_batch) and the CPU steps spread over threads.
 */

#define PKI_BATCH_THREADS_MAX  64

typedef struct {
    pki_issue_item_t  *item;
    X509              *x;
    pki_record_t       rec;
    ASN1_INTEGER      *serial;
    unsigned char     *der;
    int                stage;    /* 0 failed, 1 built, 2 reserved,
                                    3 signed, 4 committed */
    int                unsure;   /* its commit failed, and no read-back
                                    told whether it ran: withdrawn */
} pki_bstate_t;

typedef struct {
    pki_ca_t                *ca;
    const pki_template_t    *t;
    const pki_issue_ctx_t   *ictx;
    pki_bstate_t            *st;
    size_t                   n;
    size_t                   from;
    size_t                   to;
    int                      phase;    /* 1 build, 3 sign */
} pki_bslice_t;


static void
pki_batch_fail(pki_bstate_t *b, pki_status_t rc)
{
    b->item->status = rc;
    b->stage = 0;
}


/* Step 1 for one item: what pki_issue_do does before the reservation. */
static void
pki_batch_build(pki_bslice_t *s, pki_bstate_t *b)
{
    pki_status_t          rc;
    const pki_request_t  *req = b->item->req;
    pki_result_t         *res = &b->item->res;

    if (req == NULL || req->subject == NULL || req->pubkey == NULL) {
        pki_batch_fail(b, pki_fail(res, PKI_INTERNAL, "bad arguments"));
        return;
    }

    rc = pki_check_key(s->t, req->pubkey, res);
    if (rc == PKI_OK) {
        rc = pki_build(s->t, s->ca, req, &b->x, res);
    }
    if (rc != PKI_OK) {
        pki_batch_fail(b, rc);
        return;
    }

    snprintf(b->rec.ca, sizeof(b->rec.ca), "%s", s->ca->name);
    snprintf(b->rec.template_name, sizeof(b->rec.template_name), "%s",
             s->t->name);
    snprintf(b->rec.protocol, sizeof(b->rec.protocol), "%s",
             (s->ictx && s->ictx->protocol) ? s->ictx->protocol : "");
    b->rec.requester = (char *) ((s->ictx && s->ictx->requester)
                                 ? s->ictx->requester : "");
    b->rec.client = (char *) ((s->ictx && s->ictx->client)
                              ? s->ictx->client : "");
    b->rec.status = PKI_CERT_PENDING;
    b->rec.not_before = pki_int_asn1_time(X509_get0_notBefore(b->x));
    b->rec.not_after = pki_int_asn1_time(X509_get0_notAfter(b->x));
    b->rec.created = time(NULL);
    /* the certificate's: a DAC's VID and PID are added by pki_build */
    b->rec.subject = pki_int_name_text(X509_get_subject_name(b->x));
    b->rec.sans = pki_sans_text(req->sans);

    if (b->rec.subject == NULL || b->rec.sans == NULL) {
        pki_batch_fail(b, pki_fail(res, PKI_INTERNAL, "out of memory"));
        return;
    }

    b->stage = 1;
}


/* Step 3 for one reserved item: sign (verified), profile, encode. */
static void
pki_batch_sign(pki_bslice_t *s, pki_bstate_t *b)
{
    int            len;
    unsigned char *p;
    pki_status_t   rc;
    pki_result_t  *res = &b->item->res;

    if (!X509_set_serialNumber(b->x, b->serial)) {
        pki_batch_fail(b, pki_fail(res, PKI_INTERNAL, "cannot set the serial "
                                   "number"));
        b->stage = -1;
        return;
    }

    rc = pki_key_sign_x509(s->ca->key, b->x, res);
    if (rc == PKI_OK && s->t->matter) {
        rc = pki_int_matter_issued(s->t, s->ca, b->x, res);
    }
    if (rc != PKI_OK) {
        pki_batch_fail(b, rc);
        b->stage = -1;                  /* reserved: to be abandoned */
        return;
    }

    len = i2d_X509(b->x, NULL);
    if (len <= 0 || (b->der = malloc((size_t) len)) == NULL) {
        pki_batch_fail(b, pki_fail(res, PKI_INTERNAL, "cannot encode the "
                                   "certificate"));
        b->stage = -1;
        return;
    }

    p = b->der;
    i2d_X509(b->x, &p);
    b->rec.der = b->der;
    b->rec.der_len = (size_t) len;
    b->rec.status = PKI_CERT_GOOD;
    b->stage = 3;
}


static void *
pki_bslice_run(void *arg)
{
    size_t         i;
    pki_bslice_t  *s = arg;

    for (i = s->from; i < s->to; i++) {
        if (s->phase == 1) {
            pki_batch_build(s, &s->st[i]);

        } else if (s->st[i].stage == 2) {
            pki_batch_sign(s, &s->st[i]);
        }
    }

    return NULL;
}


/* Runs a step over all items, split across threads (the caller's thread
 * takes the first slice; a thread that cannot start is run inline). */
static void
pki_batch_phase(pki_bslice_t *proto, int threads, int phase)
{
    int            t, nt, started[PKI_BATCH_THREADS_MAX];
    size_t         per, n = proto->n;
    pthread_t      tid[PKI_BATCH_THREADS_MAX];
    pki_bslice_t   sl[PKI_BATCH_THREADS_MAX];

    nt = threads < 1 ? 1 : threads;
    if (nt > PKI_BATCH_THREADS_MAX) {
        nt = PKI_BATCH_THREADS_MAX;
    }
    if ((size_t) nt > n) {
        nt = (int) n;
    }

    per = (n + (size_t) nt - 1) / (size_t) nt;

    for (t = 0; t < nt; t++) {
        sl[t] = *proto;
        sl[t].from = per * (size_t) t;
        sl[t].to = per * (size_t) (t + 1) > n ? n : per * (size_t) (t + 1);
        sl[t].phase = phase;
        started[t] = 0;
    }

    for (t = 1; t < nt; t++) {
        started[t] = pthread_create(&tid[t], NULL, pki_bslice_run, &sl[t])
                     == 0;
    }

    pki_bslice_run(&sl[0]);

    for (t = 1; t < nt; t++) {
        if (started[t]) {
            pthread_join(tid[t], NULL);
        } else {
            pki_bslice_run(&sl[t]);
        }
    }
}


/* After step 1: one item refused refuses the batch.  A batch is delivered
 * whole or not at all, so any item issued beside a refused one would be
 * a record and a signature for nothing, then a revocation: the others are
 * stopped before a serial is reserved. */
static void
pki_batch_refused(pki_bstate_t *st, size_t n)
{
    size_t  i, bad;

    for (bad = 0; bad < n; bad++) {
        if (st[bad].stage != 1) {
            break;
        }
    }

    if (bad == n) {
        return;
    }

    for (i = 0; i < n; i++) {
        if (st[i].stage == 1) {
            st[i].item->stopped = 1;
            pki_batch_fail(&st[i], pki_fail(&st[i].item->res,
                                            st[bad].item->status,
                                            "not issued: item %zu of the "
                                            "batch was refused", bad));
        }
    }
}


/* Step 2: serials for every built item (of octets octets), reserved with
 * their intents in one round trip per try; the items whose serial collided
 * draw again.  With an index (ix), each reservation names its serial in
 * the item's entry, and an entry that no longer holds the caller's claim
 * stops the batch here, before anything is signed: that item fails
 * PKI_CONFLICT, the others are stopped, those reserved abandoned (stage
 * -1, which drops their entries); so are those of a round trip that got
 * no answer (it may have run). */
static void
pki_batch_reserve(pki_redis_t *r, pki_bstate_t *st, size_t n,
    size_t octets, pki_int_rsv_t *rsv, const pki_int_batch_ix_t *ix)
{
    int            *taken;
    size_t          i, m, lost, *idx;
    int             tries;
    const char    **ixk;
    pki_status_t    rc;
    pki_record_t   *recs;
    pki_result_t    rres;

    taken = calloc(n, sizeof(int));
    idx = calloc(n, sizeof(size_t));
    recs = calloc(n, sizeof(pki_record_t));
    ixk = calloc(n, sizeof(char *));
    lost = n;

    if (taken == NULL || idx == NULL || recs == NULL || ixk == NULL) {
        for (i = 0; i < n; i++) {
            if (st[i].stage == 1) {
                pki_batch_fail(&st[i], pki_fail(&st[i].item->res,
                                                PKI_INTERNAL,
                                                "out of memory"));
            }
        }
        goto done;
    }

    for (tries = 0; tries < PKI_SERIAL_TRIES; tries++) {
        m = 0;

        for (i = 0; i < n; i++) {
            if (st[i].stage != 1) {
                continue;
            }

            ASN1_INTEGER_free(st[i].serial);
            st[i].serial = NULL;

            if (!pki_serial_new_octets(&st[i].serial, octets)
                || !pki_serial_to_hex(st[i].serial, st[i].rec.serial))
            {
                pki_batch_fail(&st[i], pki_fail(&st[i].item->res,
                                                PKI_INTERNAL, "cannot make "
                                                "a serial number"));
                continue;
            }

            if (tries > 0) {
                pki_log(&st[i].item->res, "%sserial collided",
                        st[i].item->res.log[0] ? "; " : "");
            }

            idx[m] = i;
            recs[m] = st[i].rec;
            ixk[m] = ix != NULL ? ix->keys[i] : NULL;
            m++;
        }

        if (m == 0) {
            break;
        }

        if (r == NULL) {
            for (i = 0; i < m; i++) {
                st[idx[i]].stage = 2;
            }
            break;
        }

        pki_result_init(&rres);
        rc = pki_int_record_reserve_batch(r, recs, m, taken, rsv,
                                          ix != NULL ? ix->claim : NULL,
                                          ix != NULL ? ixk : NULL, &rres);

        if (rc != PKI_OK) {
            /* nothing known to be reserved: none of them is signed; with
             * an index, each abandoned (it may have been reserved and
             * its entry set: dropped with it) */
            for (i = 0; i < m; i++) {
                st[idx[i]].item->res = rres;
                pki_batch_fail(&st[idx[i]], rc);
                if (ix != NULL) {
                    st[idx[i]].stage = -1;
                }
            }
            goto done;
        }

        for (i = 0; i < m; i++) {
            if (taken[i] == 0) {
                st[idx[i]].stage = 2;

            } else if (taken[i] == -1) {
                if (lost == n) {
                    lost = idx[i];
                }
                pki_batch_fail(&st[idx[i]],
                               pki_fail(&st[idx[i]].item->res, PKI_CONFLICT,
                                        "its key's index entry is not this "
                                        "batch's claim (lost, or taken): "
                                        "not signed"));

            }                           /* -2: not tried, stays built */
        }

        if (lost < n) {
            break;
        }
    }

    if (lost < n) {
        for (i = 0; i < n; i++) {
            if (st[i].stage != 1 && st[i].stage != 2) {
                continue;
            }
            /* the reserved ones abandoned, their entries dropped */
            tries = st[i].stage;
            st[i].item->stopped = 1;
            pki_batch_fail(&st[i], pki_fail(&st[i].item->res, PKI_CONFLICT,
                                            "not issued: the claim of item "
                                            "%zu of the batch was lost",
                                            lost));
            if (tries == 2) {
                st[i].stage = -1;
            }
        }
        goto done;
    }

    for (i = 0; i < n; i++) {
        if (st[i].stage == 1) {
            pki_batch_fail(&st[i], pki_fail(&st[i].item->res, PKI_CONFLICT,
                                            "no free serial number after %d "
                                            "tries", PKI_SERIAL_TRIES));
        }
    }

done:

    free(taken);
    free(idx);
    free(recs);
    free(ixk);
}


/* Step 4: every signed item's record committed in one round trip, within
 * the deadline of the last reservation (rsv: its round trip came last,
 * so Redis's clock then is the latest known).  An item whose commit
 * failed, unless it ran too late, may have been committed all the same
 * (the answer lost, or late): its record is read back as in pki_issue_do,
 * good with its certificate is committed.  The others are abandoned
 * (stage -1); those whose read-back got no answer (and all after the
 * first such: Redis is gone) are unsure, for the caller to withdraw. */
static void
pki_batch_commit(pki_redis_t *r, pki_bstate_t *st, size_t n,
    const pki_int_rsv_t *rsv)
{
    int             reread, yes, *late;
    size_t          i, m, *idx;
    pki_status_t    rc, *cst;
    pki_record_t   *recs;
    pki_result_t    rres;

    idx = calloc(n, sizeof(size_t));
    recs = calloc(n, sizeof(pki_record_t));
    cst = calloc(n, sizeof(pki_status_t));
    late = calloc(n, sizeof(int));

    m = 0;

    if (idx != NULL && recs != NULL && cst != NULL && late != NULL) {
        for (i = 0; i < n; i++) {
            if (st[i].stage == 3) {
                idx[m] = i;
                recs[m] = st[i].rec;
                m++;
            }
        }
    }

    if (m == 0 && (idx == NULL || recs == NULL || cst == NULL
                   || late == NULL))
    {
        for (i = 0; i < n; i++) {
            if (st[i].stage == 3) {
                pki_batch_fail(&st[i], pki_fail(&st[i].item->res,
                                                PKI_INTERNAL,
                                                "out of memory"));
                st[i].stage = -1;
            }
        }
        goto done;
    }

    if (m == 0) {
        goto done;
    }

    if (r == NULL) {
        for (i = 0; i < m; i++) {
            st[idx[i]].stage = 4;
        }
        goto done;
    }

    pki_result_init(&rres);
    rc = pki_int_record_commit_batch(r, recs, m, cst, rsv, late, &rres);

    reread = 1;

    for (i = 0; i < m; i++) {
        pki_bstate_t  *b = &st[idx[i]];

        if (rc == PKI_OK && cst[i] == PKI_OK) {
            b->stage = 4;
            continue;
        }

        if (rc != PKI_OK) {
            b->item->res = rres;
            cst[i] = rc;

        } else if (late[i]) {
            pki_fail(&b->item->res, PKI_UNAVAILABLE, "certificate store too "
                     "slow");
            pki_log(&b->item->res, "redis: the commit of record %s of CA "
                    "\"%s\" ran past its deadline: not committed",
                    b->rec.serial, b->rec.ca);

        } else if (cst[i] == PKI_UNAVAILABLE) {
            pki_fail(&b->item->res, PKI_UNAVAILABLE, "record vanished");
            pki_log(&b->item->res, "redis: record %s of CA \"%s\" is gone "
                    "(flushed?)", b->rec.serial, b->rec.ca);
        } else {
            pki_fail(&b->item->res, PKI_CONFLICT, "record is not pending");
            pki_log(&b->item->res, "redis: record %s of CA \"%s\" is not "
                    "pending", b->rec.serial, b->rec.ca);
        }

        if (rc == PKI_OK && late[i]) {
            yes = 0;                    /* nothing written */

        } else if (reread) {
            yes = pki_issue_committed(r, &b->rec, &b->item->res);

        } else {
            yes = -1;
            pki_log(&b->item->res, "; not read back (Redis did not answer "
                    "an earlier one)");
        }

        if (yes > 0) {
            b->stage = 4;
            continue;
        }

        if (yes < 0) {
            b->unsure = 1;
            reread = 0;
        }

        pki_batch_fail(b, cst[i]);
        b->stage = -1;
    }

done:

    free(idx);
    free(recs);
    free(cst);
    free(late);
}


/* An index (ix, NULL: none) that names an entry for each of n items. */
static int
pki_batch_ix_ok(const pki_int_batch_ix_t *ix, size_t n)
{
    size_t  i;

    if (ix == NULL) {
        return 1;
    }

    if (ix->claim == NULL || ix->keys == NULL) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (ix->keys[i] == NULL) {
            return 0;
        }
    }

    return 1;
}


/*
 * The pending records of the reserved items that failed (stage -1)
 * deleted, one round trip each, until Redis leaves one unanswered or the
 * cleanup's deadline (pki_int_cleanup_deadline) passes: a stalled Redis
 * held the thread a timeout per item (a 1000-DAC batch, over 16 minutes
 * at the default 1 s).  What is left is only tidying: a pending record
 * expires by itself (PKI_PENDING_TTL), never reaches OCSP as good, and no
 * commit of it can still land (one run past the commit's deadline writes
 * nothing).  An item whose commit may have landed all the same (unsure)
 * is the caller's to withdraw, abandoned or not (an abandon deletes only
 * a pending record).  With an index, an item's entry is dropped with its
 * pending record (pki_int_record_abandon_ix): its key is free at once.
 */
static void
pki_batch_abandon(pki_redis_t *r, const pki_ca_t *ca, pki_bstate_t *st,
    size_t n, const pki_int_batch_ix_t *ix)
{
    size_t          i, m, left;
    pki_status_t    rc;
    double          until;
    const char     *stop, *ixkey;
    pki_result_t    ar, *res, *first;

    m = 0;
    first = NULL;

    for (i = 0; i < n; i++) {
        if (st[i].stage == -1) {
            m++;
            if (first == NULL) {
                first = &st[i].item->res;
            }
        }
    }

    if (r == NULL || m == 0) {
        return;
    }

    until = pki_int_cleanup_deadline(r, m);
    stop = NULL;
    left = 0;

    for (i = 0; i < n; i++) {
        if (st[i].stage != -1) {
            continue;
        }

        res = &st[i].item->res;

        if (stop == NULL && pki_int_now() > until) {
            stop = "the cleanup ran out of time";
        }

        if (stop != NULL) {
            pki_log(res, "%sserial %s not abandoned (%s): a pending "
                    "record expires by itself", res->log[0] ? "; " : "",
                    st[i].rec.serial, stop);
            left++;
            continue;
        }

        ixkey = ix != NULL ? ix->keys[i] : NULL;

        pki_result_init(&ar);
        rc = pki_int_record_abandon_ix(r, ca->name, st[i].rec.serial, ixkey,
                                       &ar);

        if (rc == PKI_UNAVAILABLE) {
            /* a node that cannot serve (READONLY after a failover)
             * answers at once and drops the connection: once more, on a
             * new one; a second failure is a store that does not answer */
            pki_result_init(&ar);
            rc = pki_int_record_abandon_ix(r, ca->name, st[i].rec.serial,
                                           ixkey, &ar);
        }

        if (rc != PKI_OK) {
            pki_log(res, "%sabandoning serial %s failed: %s %s",
                    res->log[0] ? "; " : "", st[i].rec.serial, ar.detail,
                    ar.log);

            if (rc == PKI_UNAVAILABLE) {
                stop = "Redis did not answer an earlier abandon, twice";
            }
        }
    }

    if (left) {
        pki_log(first, "%s%zu reservation(s) of the batch left, not "
                "abandoned (%s): a record still pending expires by itself",
                first->log[0] ? "; " : "", left, stop);
    }
}


PKI_API pki_status_t
pki_issue_batch(pki_ca_t *ca, const pki_template_t *t, pki_redis_t *r,
    pki_issue_item_t *items, size_t n, const pki_issue_ctx_t *ictx,
    int threads, pki_result_t *res)
{
    return pki_int_issue_batch(ca, t, r, items, n, ictx, NULL, threads, res);
}


pki_status_t
pki_int_issue_batch(pki_ca_t *ca, const pki_template_t *t, pki_redis_t *r,
    pki_issue_item_t *items, size_t n, const pki_issue_ctx_t *ictx,
    const pki_int_batch_ix_t *ix, int threads, pki_result_t *res)
{
    size_t          i, first;
    char            hex[41], opbuf[32], *subject;
    const char     *op, *why;
    pki_event_t     ev;
    pki_status_t    rc, ast;
    pki_result_t    ares;
    pki_bstate_t   *st;
    pki_bslice_t    proto;
    pki_int_rsv_t   rsv;

    if (items == NULL || n == 0) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    for (i = 0; i < n; i++) {
        items[i].cert = NULL;
        items[i].status = PKI_INTERNAL;
        items[i].stopped = 0;
        items[i].committed[0] = '\0';
        pki_result_init(&items[i].res);
    }

    if (ictx != NULL) {
        pki_event_set_actor(ictx->protocol, ictx->requester, ictx->client);
    }

    op = pki_int_take_operation(opbuf);

    st = calloc(n, sizeof(pki_bstate_t));

    rc = PKI_OK;
    if (st == NULL) {
        rc = PKI_INTERNAL;
        for (i = 0; i < n; i++) {
            pki_fail(&items[i].res, PKI_INTERNAL, "out of memory");
        }

    } else if (ca == NULL || t == NULL || !pki_batch_ix_ok(ix, n)) {
        rc = PKI_INTERNAL;
        for (i = 0; i < n; i++) {
            pki_fail(&items[i].res, PKI_INTERNAL, "bad arguments");
        }

    } else if (!ca->finished || ca->key == NULL) {
        rc = PKI_INTERNAL;
        for (i = 0; i < n; i++) {
            pki_fail(&items[i].res, PKI_INTERNAL, "CA \"%s\" is not ready",
                     ca->name);
        }

    } else if (!pki_ca_allows(ca, t)) {
        rc = PKI_POLICY;
        for (i = 0; i < n; i++) {
            pki_fail(&items[i].res, PKI_POLICY, "template \"%s\" is not "
                     "allowed for CA \"%s\"", t->name, ca->name);
        }

    } else if (!pki_int_audit_ready(&why)) {
        /* as pki_issue: nothing signed that the log could not hold */
        rc = PKI_UNAVAILABLE;
        for (i = 0; i < n; i++) {
            pki_fail(&items[i].res, PKI_UNAVAILABLE, "transaction log "
                     "unavailable");
            pki_log(&items[i].res, "transaction log: %s", why);
        }
    }

    if (rc != PKI_OK) {
        for (i = 0; i < n; i++) {
            items[i].status = rc;
        }

    } else {
        for (i = 0; i < n; i++) {
            st[i].item = &items[i];
        }

        memset(&proto, 0, sizeof(proto));
        proto.ca = ca;
        proto.t = t;
        proto.ictx = ictx;
        proto.st = st;
        proto.n = n;

        memset(&rsv, 0, sizeof(rsv));

        pki_batch_phase(&proto, threads, 1);     /* build */
        pki_batch_refused(st, n);
        pki_batch_reserve(r, st, n, pki_int_serial_octets(t),
                          &rsv, ix);              /* one round trip */
        pki_batch_phase(&proto, threads, 3);     /* sign + verify */
        pki_batch_commit(r, st, n, &rsv);        /* one round trip */

        pki_batch_abandon(r, ca, st, n, ix);

        for (i = 0; i < n; i++) {
            if (st[i].unsure) {
                /* maybe committed: the caller's withdraw tries it */
                snprintf(items[i].committed, sizeof(items[i].committed),
                         "%s", st[i].rec.serial);
            }

            if (st[i].stage == 4) {
                items[i].cert = st[i].x;
                items[i].status = PKI_OK;
                st[i].x = NULL;
                snprintf(items[i].committed, sizeof(items[i].committed),
                         "%s", st[i].rec.serial);
            }
        }
    }

    /* Step 5: one event per item, as pki_issue emits it; the entries are
     * written as they come and made durable by the last one (one sync for
     * the batch).  A certificate whose entry cannot be written is not
     * handed out. */
    for (i = 0; i < n; i++) {
        memset(&ev, 0, sizeof(ev));
        ev.type = PKI_EV_ISSUE;
        ev.status = items[i].status;
        ev.operation = op;
        ev.ca = ca ? ca->name : NULL;
        ev.template_name = t ? t->name : NULL;
        ev.reason = items[i].status != PKI_OK ? items[i].res.detail : NULL;

        hex[0] = '\0';
        subject = NULL;

        if (items[i].cert != NULL) {
            if (pki_serial_to_hex(X509_get0_serialNumber(items[i].cert),
                                  hex))
            {
                ev.serial = hex;
            }
            subject = pki_int_name_text(
                          X509_get_subject_name(items[i].cert));

        } else if (items[i].req != NULL && items[i].req->subject != NULL) {
            subject = pki_int_name_text(items[i].req->subject);
        }

        ev.subject = subject;

        pki_result_init(&ares);
        ast = pki_event_emit(&ev, i == n - 1, &ares);
        free(subject);

        if (ast != PKI_OK && i == n - 1) {
            /* the sync failed: no entry of the batch is known durable */
            for (first = 0; first < n; first++) {
                if (items[first].cert != NULL) {
                    X509_free(items[first].cert);
                    items[first].cert = NULL;
                    pki_log(&items[first].res, "transaction log: %s %s",
                            ares.detail, ares.log);
                    items[first].status = pki_fail(&items[first].res,
                                                   PKI_UNAVAILABLE,
                                                   "transaction log "
                                                   "unavailable");
                }
            }

        } else if (ast != PKI_OK && items[i].cert != NULL) {
            X509_free(items[i].cert);
            items[i].cert = NULL;
            pki_log(&items[i].res, "transaction log: %s %s", ares.detail,
                    ares.log);
            items[i].status = pki_fail(&items[i].res, PKI_UNAVAILABLE,
                                       "transaction log unavailable");
        }
    }

    pki_event_set_actor(NULL, NULL, NULL);

    if (st != NULL) {
        for (i = 0; i < n; i++) {
            X509_free(st[i].x);
            ASN1_INTEGER_free(st[i].serial);
            free(st[i].der);
            free(st[i].rec.subject);
            free(st[i].rec.sans);
        }
        free(st);
    }

    /* the item that failed on its own, not one stopped because of it */
    for (i = 0; i < n; i++) {
        if (items[i].status != PKI_OK && !items[i].stopped) {
            if (res != NULL) {
                *res = items[i].res;
            }
            return items[i].status;
        }
    }

    return PKI_OK;
}
