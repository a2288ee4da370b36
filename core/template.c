/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Certificate templates (profiles): parsed from directive lines, the same
 * for every server glue and for pkictl.
 */

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/objects.h>

#include "issue_int.h"
#include "matter_int.h"


#define PKI_DEFAULT_VALIDITY  (30L * 86400)
#define PKI_EXT_HEX_MAX       8192


typedef pki_status_t (*pki_tmpl_handler_pt)(pki_template_t *t, int argc,
    const char *const *argv, pki_result_t *res);

typedef struct {
    const char           *name;
    int                   min_args;
    int                   max_args;   /* -1: any */
    pki_tmpl_handler_pt   handler;
} pki_tmpl_directive_t;

typedef struct {
    const char  *name;
    int          nid;
} pki_name_nid_t;


static pki_status_t pki_tmpl_key_types(pki_template_t *t, int argc,
    const char *const *argv, pki_result_t *res);
static pki_status_t pki_tmpl_subject(pki_template_t *t, int argc,
    const char *const *argv, pki_result_t *res);
static pki_status_t pki_tmpl_san(pki_template_t *t, int argc,
    const char *const *argv, pki_result_t *res);
static pki_status_t pki_tmpl_validity(pki_template_t *t, int argc,
    const char *const *argv, pki_result_t *res);
static pki_status_t pki_tmpl_key_usage(pki_template_t *t, int argc,
    const char *const *argv, pki_result_t *res);
static pki_status_t pki_tmpl_eku(pki_template_t *t, int argc,
    const char *const *argv, pki_result_t *res);
static pki_status_t pki_tmpl_bc(pki_template_t *t, int argc,
    const char *const *argv, pki_result_t *res);
static pki_status_t pki_tmpl_extension(pki_template_t *t, int argc,
    const char *const *argv, pki_result_t *res);
static pki_status_t pki_tmpl_server_keygen(pki_template_t *t, int argc,
    const char *const *argv, pki_result_t *res);
static pki_status_t pki_tmpl_beyond(pki_template_t *t, int argc,
    const char *const *argv, pki_result_t *res);
static pki_status_t pki_tmpl_must_staple(pki_template_t *t, int argc,
    const char *const *argv, pki_result_t *res);
static int pki_parse_flag(const char *s, int *out);
static int pki_parse_key_type(const char *s, pki_key_type_t *kt);
static ASN1_OBJECT *pki_dotted_oid(const char *s);


static const pki_tmpl_directive_t  pki_tmpl_directives[] = {
    { "key_types",          1, -1, pki_tmpl_key_types },
    { "subject",            2,  3, pki_tmpl_subject },
    { "san",                2,  3, pki_tmpl_san },
    { "validity",           1,  1, pki_tmpl_validity },
    { "key_usage",          1, -1, pki_tmpl_key_usage },
    { "extended_key_usage", 1, -1, pki_tmpl_eku },
    { "basic_constraints",  1,  2, pki_tmpl_bc },
    { "extension",          3,  3, pki_tmpl_extension },
    { "server_keygen",      1,  1, pki_tmpl_server_keygen },
    { "beyond_ca_expiry",   1,  1, pki_tmpl_beyond },
    { "must_staple",        1,  1, pki_tmpl_must_staple },
    { NULL, 0, 0, NULL }
};

static const pki_name_nid_t  pki_subject_attrs[] = {
    { "CN", NID_commonName },
    { "O", NID_organizationName },
    { "OU", NID_organizationalUnitName },
    { "C", NID_countryName },
    { "ST", NID_stateOrProvinceName },
    { "L", NID_localityName },
    { "serialNumber", NID_serialNumber },
    { "emailAddress", NID_pkcs9_emailAddress },
    { "DC", NID_domainComponent },
    { "UID", NID_userId },
    { NULL, 0 }
};

static const char  *pki_ku_names[] = {
    "digitalSignature", "nonRepudiation", "keyEncipherment",
    "dataEncipherment", "keyAgreement", "keyCertSign", "cRLSign",
    "encipherOnly", "decipherOnly", NULL
};

static const pki_name_nid_t  pki_eku_names[] = {
    { "clientAuth", NID_client_auth },
    { "serverAuth", NID_server_auth },
    { "codeSigning", NID_code_sign },
    { "emailProtection", NID_email_protect },
    { "timeStamping", NID_time_stamp },
    { "OCSPSigning", NID_OCSP_sign },
    { NULL, 0 }
};

static const char  *pki_san_names[PKI_SAN_NTYPES] = {
    "dns", "ip", "email", "uri"
};

/* Extensions the issuer builds itself: a template may not add them. */
static const int  pki_builtin_ext_nids[] = {
    NID_basic_constraints, NID_key_usage, NID_ext_key_usage,
    NID_subject_key_identifier, NID_authority_key_identifier,
    NID_subject_alt_name, NID_crl_distribution_points, NID_info_access,
    NID_undef
};

static const pki_key_type_t  pki_default_key_types[] = {
    { PKI_KT_EC, NID_X9_62_prime256v1, 0, 0 },
    { PKI_KT_EC, NID_secp384r1, 0, 0 },
    { PKI_KT_RSA, 0, 2048, 4096 },
    { PKI_KT_ED25519, 0, 0, 0 }
};

static const char  pki_default_key_types_text[] =
    "ec:P-256 ec:P-384 rsa:2048-4096 ed25519";


pki_template_t *
pki_template_new(const char *name)
{
    pki_template_t  *t;

    if (name == NULL || name[0] == '\0') {
        return NULL;
    }

    t = calloc(1, sizeof(pki_template_t));
    if (t == NULL) {
        return NULL;
    }

    t->name = strdup(name);
    if (t->name == NULL) {
        free(t);
        return NULL;
    }

    t->pathlen = -1;
    t->server_keygen = -1;
    t->beyond_ca_expiry = -1;
    t->must_staple = -1;

    return t;
}


void
pki_template_free(pki_template_t *t)
{
    int  i;

    if (t == NULL) {
        return;
    }

    for (i = 0; i < t->nsubject; i++) {
        ASN1_OBJECT_free(t->subject[i].obj);
        free(t->subject[i].value);
    }

    sk_ASN1_OBJECT_pop_free(t->eku, ASN1_OBJECT_free);
    sk_X509_EXTENSION_pop_free(t->extensions, X509_EXTENSION_free);
    free(t->name);
    free(t);
}


const char *
pki_template_name(const pki_template_t *t)
{
    return t->name;
}


int
pki_template_server_keygen(const pki_template_t *t)
{
    return t->server_keygen == 1;
}


long
pki_template_validity(const pki_template_t *t)
{
    return t->validity ? t->validity : PKI_DEFAULT_VALIDITY;
}


pki_status_t
pki_template_set(pki_template_t *t, const char *name, int argc,
    const char *const *argv, pki_result_t *res)
{
    int                          i;
    const pki_tmpl_directive_t  *d;

    if (t == NULL || name == NULL || argc < 0 || (argc > 0 && argv == NULL)) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    if (t->finished) {
        return pki_fail(res, PKI_INTERNAL, "template \"%s\" is already "
                        "finished", t->name);
    }

    for (i = 0; i < argc; i++) {
        if (argv[i] == NULL) {
            return pki_fail(res, PKI_INTERNAL, "bad arguments");
        }
    }

    if (strncmp(name, "matter", 6) == 0) {
        return pki_int_matter_tmpl_set(t, name, argc, argv, res);
    }

    for (d = pki_tmpl_directives; d->name; d++) {
        if (strcmp(d->name, name) != 0) {
            continue;
        }

        if (argc < d->min_args || (d->max_args >= 0 && argc > d->max_args)) {
            return pki_fail(res, PKI_MALFORMED, "invalid number of "
                            "arguments in \"%s\"", name);
        }

        return d->handler(t, argc, argv, res);
    }

    return pki_fail(res, PKI_MALFORMED, "unknown template directive \"%.64s\"",
                    name);
}


static pki_status_t
pki_tmpl_key_types(pki_template_t *t, int argc, const char *const *argv,
    pki_result_t *res)
{
    int             i, j;
    size_t          len;
    pki_key_type_t  kt;

    if (t->nkey_types) {
        return pki_fail(res, PKI_MALFORMED, "\"key_types\" is duplicate");
    }

    if (argc > PKI_MAX_KEY_TYPES) {
        return pki_fail(res, PKI_MALFORMED, "too many key types");
    }

    t->key_types_text[0] = '\0';

    for (i = 0; i < argc; i++) {
        if (!pki_parse_key_type(argv[i], &kt)) {
            t->nkey_types = 0;
            return pki_fail(res, PKI_MALFORMED, "unknown key type \"%.64s\"",
                            argv[i]);
        }

        for (j = 0; j < i; j++) {
            if (t->key_types[j].type == kt.type
                && t->key_types[j].nid == kt.nid
                && kt.type != PKI_KT_RSA)
            {
                t->nkey_types = 0;
                return pki_fail(res, PKI_MALFORMED, "duplicate key type "
                                "\"%.64s\"", argv[i]);
            }
        }

        t->key_types[i] = kt;

        len = strlen(t->key_types_text);
        snprintf(t->key_types_text + len, sizeof(t->key_types_text) - len,
                 "%s%s", len ? " " : "", argv[i]);
    }

    t->nkey_types = argc;

    return PKI_OK;
}


static int
pki_parse_key_type(const char *s, pki_key_type_t *kt)
{
    long   lo, hi;
    char  *end;

    memset(kt, 0, sizeof(pki_key_type_t));

    if (strcasecmp(s, "ed25519") == 0) {
        kt->type = PKI_KT_ED25519;
        return 1;
    }

    if (strcasecmp(s, "ed448") == 0) {
        kt->type = PKI_KT_ED448;
        return 1;
    }

    if (strncasecmp(s, "ec:", 3) == 0) {
        kt->type = PKI_KT_EC;
        s += 3;

        if (strcasecmp(s, "P-256") == 0) {
            kt->nid = NID_X9_62_prime256v1;
        } else if (strcasecmp(s, "P-384") == 0) {
            kt->nid = NID_secp384r1;
        } else if (strcasecmp(s, "P-521") == 0) {
            kt->nid = NID_secp521r1;
        } else {
            return 0;
        }

        return 1;
    }

    if (strncasecmp(s, "rsa:", 4) != 0) {
        return 0;
    }

    s += 4;
    if (!isdigit((unsigned char) *s)) {
        return 0;
    }

    errno = 0;
    lo = strtol(s, &end, 10);
    hi = lo;

    if (*end == '-') {
        s = end + 1;
        if (!isdigit((unsigned char) *s)) {
            return 0;
        }
        hi = strtol(s, &end, 10);
    }

    if (*end != '\0' || errno || lo < 2048 || hi > 16384 || lo > hi) {
        return 0;
    }

    kt->type = PKI_KT_RSA;
    kt->min_bits = (int) lo;
    kt->max_bits = (int) hi;

    return 1;
}


static ASN1_OBJECT *
pki_dotted_oid(const char *s)
{
    const char  *p;
    int          dots;

    if (s[0] == '\0' || strlen(s) > 128) {
        return NULL;
    }

    dots = 0;
    for (p = s; *p; p++) {
        if (*p == '.') {
            if (p == s || p[1] == '.' || p[1] == '\0') {
                return NULL;
            }
            dots++;

        } else if (!isdigit((unsigned char) *p)) {
            return NULL;
        }
    }

    if (dots < 1) {
        return NULL;
    }

    ERR_set_mark();
    p = (const char *) OBJ_txt2obj(s, 1);
    ERR_pop_to_mark();

    return (ASN1_OBJECT *) p;
}


static pki_status_t
pki_tmpl_subject(pki_template_t *t, int argc, const char *const *argv,
    pki_result_t *res)
{
    int                    i, ok;
    X509_NAME             *probe;
    ASN1_OBJECT           *obj;
    pki_rule_t             rule;
    pki_subject_rule_t    *r;
    const pki_name_nid_t  *a;

    obj = NULL;

    for (a = pki_subject_attrs; a->name; a++) {
        if (strcmp(a->name, argv[0]) == 0) {
            obj = OBJ_nid2obj(a->nid);
            break;
        }
    }

    if (obj == NULL) {
        obj = pki_dotted_oid(argv[0]);
        if (obj == NULL) {
            return pki_fail(res, PKI_MALFORMED, "unknown subject attribute "
                            "\"%.64s\"", argv[0]);
        }

    } else {
        obj = OBJ_dup(obj);
        if (obj == NULL) {
            return pki_fail(res, PKI_INTERNAL, "out of memory");
        }
    }

    for (i = 0; i < t->nsubject; i++) {
        if (OBJ_cmp(t->subject[i].obj, obj) == 0) {
            ASN1_OBJECT_free(obj);
            return pki_fail(res, PKI_MALFORMED, "duplicate rule for subject "
                            "attribute \"%.64s\"", argv[0]);
        }
    }

    if (strcmp(argv[1], "copy") == 0) {
        rule = PKI_RULE_COPY;
    } else if (strcmp(argv[1], "required") == 0) {
        rule = PKI_RULE_REQUIRED;
    } else if (strcmp(argv[1], "forbidden") == 0) {
        rule = PKI_RULE_FORBIDDEN;
    } else if (strcmp(argv[1], "fixed") == 0) {
        rule = PKI_RULE_FIXED;
    } else {
        ASN1_OBJECT_free(obj);
        return pki_fail(res, PKI_MALFORMED, "unknown subject rule \"%.64s\" "
                        "(copy, required, forbidden or fixed)", argv[1]);
    }

    if ((rule == PKI_RULE_FIXED) != (argc == 3)) {
        ASN1_OBJECT_free(obj);
        return pki_fail(res, PKI_MALFORMED, rule == PKI_RULE_FIXED
                        ? "\"subject %.64s fixed\" needs a value"
                        : "\"subject %.64s\" takes no value",
                        argv[0]);
    }

    if (t->nsubject == PKI_MAX_SUBJECT_RULES) {
        ASN1_OBJECT_free(obj);
        return pki_fail(res, PKI_MALFORMED, "too many subject rules");
    }

    if (rule == PKI_RULE_FIXED) {
        /* Let OpenSSL check the value against the attribute's limits. */
        probe = X509_NAME_new();
        ok = probe != NULL && argv[2][0] != '\0'
             && X509_NAME_add_entry_by_OBJ(probe, obj, MBSTRING_UTF8,
                                           (const unsigned char *) argv[2],
                                           -1, -1, 0);
        X509_NAME_free(probe);
        ERR_clear_error();

        if (!ok) {
            ASN1_OBJECT_free(obj);
            return pki_fail(res, PKI_MALFORMED, "invalid value \"%.64s\" for "
                            "subject attribute \"%.64s\"", argv[2], argv[0]);
        }
    }

    r = &t->subject[t->nsubject];
    memset(r, 0, sizeof(pki_subject_rule_t));

    if (rule == PKI_RULE_FIXED) {
        r->value = strdup(argv[2]);
        if (r->value == NULL) {
            ASN1_OBJECT_free(obj);
            return pki_fail(res, PKI_INTERNAL, "out of memory");
        }
    }

    r->obj = obj;
    r->rule = rule;
    snprintf(r->name, sizeof(r->name), "%s", argv[0]);
    t->nsubject++;

    return PKI_OK;
}


static pki_status_t
pki_tmpl_san(pki_template_t *t, int argc, const char *const *argv,
    pki_result_t *res)
{
    int         i, type;
    pki_rule_t  rule;

    type = -1;
    for (i = 0; i < PKI_SAN_NTYPES; i++) {
        if (strcmp(argv[0], pki_san_names[i]) == 0) {
            type = i;
        }
    }

    if (type < 0) {
        return pki_fail(res, PKI_MALFORMED, "unknown SAN type \"%.64s\" "
                        "(dns, ip, email or uri)", argv[0]);
    }

    if (t->san[type] != PKI_RULE_NONE) {
        return pki_fail(res, PKI_MALFORMED, "duplicate rule for SAN type "
                        "\"%s\"", pki_san_names[type]);
    }

    if (strcmp(argv[1], "copy") == 0) {
        rule = PKI_RULE_COPY;
    } else if (strcmp(argv[1], "required") == 0) {
        rule = PKI_RULE_REQUIRED;
    } else if (strcmp(argv[1], "forbidden") == 0) {
        rule = PKI_RULE_FORBIDDEN;
    } else {
        return pki_fail(res, PKI_MALFORMED, "unknown SAN rule \"%.64s\" "
                        "(copy, required or forbidden)", argv[1]);
    }

    if (argc == 3) {
        if (type != PKI_SAN_DNS || rule == PKI_RULE_FORBIDDEN
            || strcmp(argv[2], "wildcard") != 0)
        {
            return pki_fail(res, PKI_MALFORMED, "unexpected \"%.64s\" in "
                            "\"san %s\" (only \"san dns copy|required "
                            "wildcard\")", argv[2], pki_san_names[type]);
        }

        t->san_wildcard = 1;
    }

    t->san[type] = rule;

    return PKI_OK;
}


int
pki_int_parse_time(const char *s, long *out)
{
    long   v, mul;
    char  *end;

    if (!isdigit((unsigned char) s[0])) {
        return 0;
    }

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || v <= 0) {
        return 0;
    }

    mul = 1;
    switch (*end) {
    case '\0':
    case 's':
        break;
    case 'm':
        mul = 60;
        break;
    case 'h':
        mul = 3600;
        break;
    case 'd':
        mul = 86400;
        break;
    default:
        return 0;
    }

    if (*end != '\0' && end[1] != '\0') {
        return 0;
    }

    /* At most 10000 years: notAfter is clamped to 9999-12-31 anyway. */
    if (v > 10000L * 366 * 86400 / mul) {
        return 0;
    }

    *out = v * mul;

    return 1;
}


static pki_status_t
pki_tmpl_validity(pki_template_t *t, int argc, const char *const *argv,
    pki_result_t *res)
{
    long  v;

    (void) argc;

    if (t->validity) {
        return pki_fail(res, PKI_MALFORMED, "\"validity\" is duplicate");
    }

    if (!pki_int_parse_time(argv[0], &v)) {
        return pki_fail(res, PKI_MALFORMED, "invalid validity \"%.64s\"",
                        argv[0]);
    }

    t->validity = v;

    return PKI_OK;
}


static pki_status_t
pki_tmpl_key_usage(pki_template_t *t, int argc, const char *const *argv,
    pki_result_t *res)
{
    int           i, bit;
    unsigned int  ku;

    if (t->key_usage_set) {
        return pki_fail(res, PKI_MALFORMED, "\"key_usage\" is duplicate");
    }

    ku = 0;

    for (i = 0; i < argc; i++) {
        for (bit = 0; pki_ku_names[bit]; bit++) {
            if (strcmp(pki_ku_names[bit], argv[i]) == 0) {
                break;
            }
        }

        if (pki_ku_names[bit] == NULL) {
            if (strcmp(argv[i], "contentCommitment") == 0) {
                bit = PKI_KU_NON_REPUDIATION;

            } else {
                return pki_fail(res, PKI_MALFORMED, "unknown key usage "
                                "\"%.64s\"", argv[i]);
            }
        }

        if (ku & (1u << bit)) {
            return pki_fail(res, PKI_MALFORMED, "duplicate key usage "
                            "\"%.64s\"", argv[i]);
        }

        ku |= 1u << bit;
    }

    t->key_usage = ku;
    t->key_usage_set = 1;

    return PKI_OK;
}


static pki_status_t
pki_tmpl_eku(pki_template_t *t, int argc, const char *const *argv,
    pki_result_t *res)
{
    int                    i, j;
    ASN1_OBJECT           *obj;
    STACK_OF(ASN1_OBJECT) *sk;
    const pki_name_nid_t  *e;

    if (t->eku) {
        return pki_fail(res, PKI_MALFORMED, "\"extended_key_usage\" is "
                        "duplicate");
    }

    sk = sk_ASN1_OBJECT_new_null();
    if (sk == NULL) {
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    for (i = 0; i < argc; i++) {
        obj = NULL;

        for (e = pki_eku_names; e->name; e++) {
            if (strcmp(e->name, argv[i]) == 0) {
                obj = OBJ_dup(OBJ_nid2obj(e->nid));
                break;
            }
        }

        if (e->name == NULL) {
            obj = pki_dotted_oid(argv[i]);
        }

        if (obj == NULL) {
            sk_ASN1_OBJECT_pop_free(sk, ASN1_OBJECT_free);
            return pki_fail(res, PKI_MALFORMED, "unknown extended key usage "
                            "\"%.64s\"", argv[i]);
        }

        for (j = 0; j < sk_ASN1_OBJECT_num(sk); j++) {
            if (OBJ_cmp(sk_ASN1_OBJECT_value(sk, j), obj) == 0) {
                ASN1_OBJECT_free(obj);
                sk_ASN1_OBJECT_pop_free(sk, ASN1_OBJECT_free);
                return pki_fail(res, PKI_MALFORMED, "duplicate extended key "
                                "usage \"%.64s\"", argv[i]);
            }
        }

        if (!sk_ASN1_OBJECT_push(sk, obj)) {
            ASN1_OBJECT_free(obj);
            sk_ASN1_OBJECT_pop_free(sk, ASN1_OBJECT_free);
            return pki_fail(res, PKI_INTERNAL, "out of memory");
        }
    }

    t->eku = sk;

    return PKI_OK;
}


static pki_status_t
pki_tmpl_bc(pki_template_t *t, int argc, const char *const *argv,
    pki_result_t *res)
{
    long   v;
    char  *end;

    if (t->bc_set) {
        return pki_fail(res, PKI_MALFORMED, "\"basic_constraints\" is "
                        "duplicate");
    }

    if (strcmp(argv[0], "ca:true") == 0) {
        t->ca = 1;

    } else if (strcmp(argv[0], "ca:false") == 0) {
        t->ca = 0;

    } else {
        return pki_fail(res, PKI_MALFORMED, "invalid basic constraint "
                        "\"%.64s\" (ca:true or ca:false)", argv[0]);
    }

    t->pathlen = -1;

    if (argc == 2) {
        if (!t->ca) {
            return pki_fail(res, PKI_MALFORMED, "pathlen needs ca:true");
        }

        if (strncmp(argv[1], "pathlen:", 8) != 0
            || !isdigit((unsigned char) argv[1][8]))
        {
            return pki_fail(res, PKI_MALFORMED, "invalid basic constraint "
                            "\"%.64s\" (pathlen:N)", argv[1]);
        }

        errno = 0;
        v = strtol(argv[1] + 8, &end, 10);
        if (*end != '\0' || errno || v < 0 || v > 255) {
            return pki_fail(res, PKI_MALFORMED, "invalid path length "
                            "\"%.64s\"", argv[1]);
        }

        t->pathlen = (int) v;
    }

    t->bc_set = 1;

    return PKI_OK;
}


static int
pki_hex_value(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }

    return -1;
}


static pki_status_t
pki_tmpl_extension(pki_template_t *t, int argc, const char *const *argv,
    pki_result_t *res)
{
    int                 crit, i, hi, lo;
    long                plen;
    size_t              hexlen, len;
    pki_status_t        rc;
    ASN1_OBJECT        *obj;
    unsigned char      *der;
    X509_EXTENSION     *ext;
    ASN1_OCTET_STRING  *os;
    const unsigned char *p;
    int                 tag, xclass, ret;

    (void) argc;

    der = NULL;
    os = NULL;
    ext = NULL;

    obj = pki_dotted_oid(argv[0]);
    if (obj == NULL) {
        return pki_fail(res, PKI_MALFORMED, "invalid extension OID \"%.64s\" "
                        "(dotted form expected)", argv[0]);
    }

    for (i = 0; pki_builtin_ext_nids[i] != NID_undef; i++) {
        if (OBJ_obj2nid(obj) == pki_builtin_ext_nids[i]) {
            rc = pki_fail(res, PKI_MALFORMED, "extension %.64s is built by the "
                          "issuer and cannot be set verbatim", argv[0]);
            goto failed;
        }
    }

    for (i = 0; i < sk_X509_EXTENSION_num(t->extensions); i++) {
        ext = sk_X509_EXTENSION_value(t->extensions, i);
        if (OBJ_cmp(X509_EXTENSION_get_object(ext), obj) == 0) {
            ext = NULL;
            rc = pki_fail(res, PKI_MALFORMED, "duplicate extension %.64s",
                          argv[0]);
            goto failed;
        }
    }

    ext = NULL;

    if (strcmp(argv[1], "critical") == 0) {
        crit = 1;
    } else if (strcmp(argv[1], "noncritical") == 0) {
        crit = 0;
    } else {
        rc = pki_fail(res, PKI_MALFORMED, "invalid criticality \"%.64s\" "
                      "(critical or noncritical)", argv[1]);
        goto failed;
    }

    hexlen = strlen(argv[2]);
    if (hexlen == 0 || hexlen % 2 || hexlen > PKI_EXT_HEX_MAX) {
        rc = pki_fail(res, PKI_MALFORMED, "invalid extension value for %.64s "
                      "(hex DER, at most %d bytes)", argv[0],
                      PKI_EXT_HEX_MAX / 2);
        goto failed;
    }

    len = hexlen / 2;
    der = malloc(len);
    if (der == NULL) {
        rc = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto failed;
    }

    for (i = 0; (size_t) i < len; i++) {
        hi = pki_hex_value((unsigned char) argv[2][2 * i]);
        lo = pki_hex_value((unsigned char) argv[2][2 * i + 1]);
        if (hi < 0 || lo < 0) {
            rc = pki_fail(res, PKI_MALFORMED, "invalid hex in extension "
                          "value for %.64s", argv[0]);
            goto failed;
        }
        der[i] = (unsigned char) (hi << 4 | lo);
    }

    /* The value must be exactly one DER element. */
    p = der;
    ret = ASN1_get_object(&p, &plen, &tag, &xclass, (long) len);
    if ((ret & 0x80) || ret == 0x21
        || (size_t) (p - der) + (size_t) plen != len)
    {
        ERR_clear_error();
        rc = pki_fail(res, PKI_MALFORMED, "extension value for %.64s is not "
                      "one DER element", argv[0]);
        goto failed;
    }

    os = ASN1_OCTET_STRING_new();
    if (os == NULL || !ASN1_OCTET_STRING_set(os, der, (int) len)) {
        rc = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto failed;
    }

    ext = X509_EXTENSION_create_by_OBJ(NULL, obj, crit, os);
    if (ext == NULL) {
        rc = pki_fail(res, PKI_INTERNAL, "X509_EXTENSION_create_by_OBJ() "
                      "failed");
        goto failed;
    }

    if (t->extensions == NULL) {
        t->extensions = sk_X509_EXTENSION_new_null();
    }

    if (t->extensions == NULL || !sk_X509_EXTENSION_push(t->extensions, ext)) {
        rc = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto failed;
    }

    ASN1_OCTET_STRING_free(os);
    ASN1_OBJECT_free(obj);
    free(der);

    return PKI_OK;

failed:

    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(os);
    ASN1_OBJECT_free(obj);
    free(der);

    return rc;
}


static int
pki_parse_flag(const char *s, int *out)
{
    if (strcmp(s, "on") == 0) {
        *out = 1;
        return 1;
    }

    if (strcmp(s, "off") == 0) {
        *out = 0;
        return 1;
    }

    return 0;
}


/* An on|off line that may appear once: *field is -1 until then. */
static pki_status_t
pki_tmpl_flag(int *field, const char *name, const char *value,
    pki_result_t *res)
{
    if (*field != -1) {
        return pki_fail(res, PKI_MALFORMED, "\"%s\" is duplicate", name);
    }

    if (!pki_parse_flag(value, field)) {
        return pki_fail(res, PKI_MALFORMED, "invalid value \"%.64s\" in "
                        "\"%s\" (on or off)", value, name);
    }

    return PKI_OK;
}


static pki_status_t
pki_tmpl_server_keygen(pki_template_t *t, int argc, const char *const *argv,
    pki_result_t *res)
{
    (void) argc;

    return pki_tmpl_flag(&t->server_keygen, "server_keygen", argv[0], res);
}


static pki_status_t
pki_tmpl_beyond(pki_template_t *t, int argc, const char *const *argv,
    pki_result_t *res)
{
    (void) argc;

    return pki_tmpl_flag(&t->beyond_ca_expiry, "beyond_ca_expiry", argv[0],
                         res);
}


/* must_staple on|off: whether a CSR may ask for the TLS feature
 * status_request (RFC 7633, OCSP Must-Staple).  Off, such a CSR is refused
 * rather than signed without what it asked for. */
static pki_status_t
pki_tmpl_must_staple(pki_template_t *t, int argc, const char *const *argv,
    pki_result_t *res)
{
    (void) argc;

    return pki_tmpl_flag(&t->must_staple, "must_staple", argv[0], res);
}


unsigned
pki_int_ku_bits(int type)
{
    unsigned  sig;

    sig = (1u << PKI_KU_DIGITAL_SIGNATURE) | (1u << PKI_KU_NON_REPUDIATION)
          | (1u << PKI_KU_KEY_CERT_SIGN) | (1u << PKI_KU_CRL_SIGN);

    switch (type) {
    case PKI_KT_RSA:
        return sig | (1u << PKI_KU_KEY_ENCIPHERMENT)
               | (1u << PKI_KU_DATA_ENCIPHERMENT);
    case PKI_KT_EC:
        return sig | (1u << PKI_KU_KEY_AGREEMENT)
               | (1u << PKI_KU_ENCIPHER_ONLY) | (1u << PKI_KU_DECIPHER_ONLY);
    case PKI_KT_ED25519:
    case PKI_KT_ED448:
        return sig;
    default:
        return ~0u;
    }
}


int
pki_int_key_usage_ok(const pki_template_t *t, int type)
{
    return !t->key_usage_set || (t->key_usage & pki_int_ku_bits(type));
}


int
pki_int_ed_key_usage_ok(const pki_template_t *t, int type)
{
    return (type != PKI_KT_ED25519 && type != PKI_KT_ED448)
           || !t->key_usage_set
           || (t->key_usage & ((1u << PKI_KU_DIGITAL_SIGNATURE)
                               | (1u << PKI_KU_NON_REPUDIATION)
                               | (1u << PKI_KU_KEY_CERT_SIGN)
                               | (1u << PKI_KU_CRL_SIGN)));
}


pki_status_t
pki_template_finish(pki_template_t *t, pki_result_t *res)
{
    int                    i, n, ed, bad, rsa, named;
    const pki_key_type_t  *kt;

    if (t->finished) {
        return PKI_OK;
    }

    if (t->matter && pki_int_matter_tmpl_finish(t, res) != PKI_OK) {
        return res ? res->status : PKI_MALFORMED;
    }

    kt = pki_int_key_types(t, &n, NULL);
    rsa = 0;
    ed = 0;
    bad = 0;
    for (i = 0; i < n; i++) {
        if (kt[i].type == PKI_KT_RSA) {
            rsa = 1;
        }

        if (!pki_int_ed_key_usage_ok(t, kt[i].type)) {
            ed++;
        }

        if (!pki_int_key_usage_ok(t, kt[i].type)) {
            bad++;
        }
    }

    /* only Ed keys, none of which the key usage suits: nothing could be
     * issued (with other key types too, an Ed key is refused with its
     * request, as an EC key is for a key usage that needs RSA) */
    if (n > 0 && ed == n) {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\": "
                        PKI_ED_KU_RULE, t->name);
    }

    if (!t->ca && t->key_usage_set
        && (t->key_usage & (1u << PKI_KU_KEY_CERT_SIGN)))
    {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\": keyCertSign "
                        "needs \"basic_constraints ca:true\"", t->name);
    }

    if (t->ca && t->key_usage_set
        && !(t->key_usage & (1u << PKI_KU_KEY_CERT_SIGN)))
    {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\": a CA template "
                        "needs keyCertSign in \"key_usage\"", t->name);
    }

    if (t->key_usage_set && t->key_usage == 0) {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\": empty "
                        "\"key_usage\"", t->name);
    }

    if (t->key_usage_set && !rsa
        && (t->key_usage & ((1u << PKI_KU_KEY_ENCIPHERMENT)
                            | (1u << PKI_KU_DATA_ENCIPHERMENT))))
    {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\": "
                        "keyEncipherment and dataEncipherment need RSA "
                        "in \"key_types\"", t->name);
    }

    /* no key type keeps a bit: nothing could be issued (with one that
     * does, the others' requests are refused, pki_check_key) */
    if (n > 0 && bad == n) {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\": no key type "
                        "of \"key_types\" may carry its \"key_usage\": "
                        PKI_KU_RULE, t->name);
    }

    if (t->key_usage_set
        && (t->key_usage & ((1u << PKI_KU_ENCIPHER_ONLY)
                            | (1u << PKI_KU_DECIPHER_ONLY)))
        && !(t->key_usage & (1u << PKI_KU_KEY_AGREEMENT)))
    {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\": encipherOnly "
                        "and decipherOnly need keyAgreement", t->name);
    }

    if (t->server_keygen == 1 && t->ca) {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\": server_keygen "
                        "is not allowed for CA templates", t->name);
    }

    named = 0;
    for (i = 0; i < t->nsubject; i++) {
        if (t->subject[i].rule != PKI_RULE_FORBIDDEN) {
            named = 1;
        }
    }

    for (i = 0; i < PKI_SAN_NTYPES; i++) {
        if (t->san[i] == PKI_RULE_COPY || t->san[i] == PKI_RULE_REQUIRED) {
            named = 1;
        }
    }

    if (!named) {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\" allows no "
                        "subject attribute and no SAN", t->name);
    }

    if (t->san_wildcard && t->san[PKI_SAN_DNS] == PKI_RULE_NONE) {
        return pki_fail(res, PKI_INTERNAL, "template \"%s\": wildcard "
                        "without a dns rule", t->name);
    }

    if (t->server_keygen == -1) {
        t->server_keygen = 0;
    }

    if (t->beyond_ca_expiry == -1) {
        t->beyond_ca_expiry = 0;
    }

    if (t->must_staple == 1) {
        if (t->ca || t->matter) {
            return pki_fail(res, PKI_MALFORMED, "template \"%s\": "
                            "must_staple is for end-entity certificates",
                            t->name);
        }

        for (i = 0; i < sk_X509_EXTENSION_num(t->extensions); i++) {
            if (OBJ_obj2nid(X509_EXTENSION_get_object(
                    sk_X509_EXTENSION_value(t->extensions, i)))
                == NID_tlsfeature)
            {
                return pki_fail(res, PKI_MALFORMED, "template \"%s\": "
                                "must_staple and a verbatim TLS feature "
                                "extension exclude each other", t->name);
            }
        }
    }

    if (t->must_staple == -1) {
        t->must_staple = 0;
    }

    /* RFC 5280 4.2.1.10, 4.2.1.11, 4.2.1.14: name constraints, policy
     * constraints and inhibitAnyPolicy are for CA certificates only (a
     * line copied from a CA template would make every leaf break it) */
    for (i = 0; !t->ca && i < sk_X509_EXTENSION_num(t->extensions); i++) {
        n = OBJ_obj2nid(X509_EXTENSION_get_object(
                sk_X509_EXTENSION_value(t->extensions, i)));

        if (n == NID_name_constraints || n == NID_policy_constraints
            || n == NID_inhibit_any_policy)
        {
            return pki_fail(res, PKI_MALFORMED, "template \"%s\": the "
                            "extension %s is for CA certificates only "
                            "(RFC 5280), and the template has no "
                            "\"basic_constraints ca:true\"", t->name,
                            OBJ_nid2ln(n));
        }
    }

    t->finished = 1;

    return PKI_OK;
}


const pki_key_type_t *
pki_int_key_types(const pki_template_t *t, int *n, const char **text)
{
    if (t->nkey_types) {
        *n = t->nkey_types;
        if (text) {
            *text = t->key_types_text;
        }
        return t->key_types;
    }

    *n = (int) (sizeof(pki_default_key_types)
                / sizeof(pki_default_key_types[0]));
    if (text) {
        *text = pki_default_key_types_text;
    }

    return pki_default_key_types;
}


int
pki_int_classify_key(const EVP_PKEY *pk, pki_key_type_t *kt)
{
    char  group[64];

    memset(kt, 0, sizeof(pki_key_type_t));

    if (pk == NULL) {
        return 0;
    }

    switch (EVP_PKEY_get_base_id(pk)) {

    case EVP_PKEY_EC:
        if (!EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME,
                                            group, sizeof(group), NULL))
        {
            ERR_clear_error();
            return 0;
        }
        kt->type = PKI_KT_EC;
        kt->nid = OBJ_txt2nid(group);
        if (kt->nid == NID_undef) {
            kt->nid = EC_curve_nist2nid(group);
        }
        return kt->nid != NID_undef;

    case EVP_PKEY_RSA:
        kt->type = PKI_KT_RSA;
        kt->min_bits = EVP_PKEY_get_bits(pk);
        kt->max_bits = kt->min_bits;
        return kt->min_bits > 0;

    case EVP_PKEY_ED25519:
        kt->type = PKI_KT_ED25519;
        return 1;

    case EVP_PKEY_ED448:
        kt->type = PKI_KT_ED448;
        return 1;
    }

    return 0;
}


void
pki_int_describe_key(const pki_key_type_t *kt, char *buf, size_t size)
{
    const char  *curve;

    switch (kt->type) {

    case PKI_KT_EC:
        curve = EC_curve_nid2nist(kt->nid);
        snprintf(buf, size, "EC %s", curve ? curve : OBJ_nid2sn(kt->nid));
        break;

    case PKI_KT_RSA:
        snprintf(buf, size, "RSA %d", kt->min_bits);
        break;

    case PKI_KT_ED25519:
        snprintf(buf, size, "Ed25519");
        break;

    case PKI_KT_ED448:
        snprintf(buf, size, "Ed448");
        break;

    default:
        snprintf(buf, size, "unknown");
    }
}


int
pki_int_template_san_ok(const pki_template_t *t, int type, int wildcard,
    char *why, size_t size)
{
    if (type < 0 || type >= PKI_SAN_NTYPES) {
        snprintf(why, size, "unknown SAN type");
        return 0;
    }

    /* the rules pki_issue applies to the CSR's SANs (issue.c) */
    if (t->san[type] != PKI_RULE_COPY && t->san[type] != PKI_RULE_REQUIRED) {
        snprintf(why, size, "template \"%s\" does not issue %s names",
                 t->name, pki_san_names[type]);
        return 0;
    }

    if (wildcard && (type != PKI_SAN_DNS || !t->san_wildcard)) {
        snprintf(why, size, "template \"%s\" does not issue wildcard names",
                 t->name);
        return 0;
    }

    return 1;
}


int
pki_int_key_allowed(const pki_template_t *t, const EVP_PKEY *pk)
{
    int                    i, n;
    pki_key_type_t         kt;
    const pki_key_type_t  *allowed;

    if (!pki_int_classify_key(pk, &kt)) {
        return 0;
    }

    allowed = pki_int_key_types(t, &n, NULL);

    for (i = 0; i < n; i++) {
        if (allowed[i].type != kt.type) {
            continue;
        }

        switch (kt.type) {
        case PKI_KT_EC:
            if (allowed[i].nid == kt.nid) {
                return 1;
            }
            break;

        case PKI_KT_RSA:
            if (kt.min_bits >= allowed[i].min_bits
                && kt.min_bits <= allowed[i].max_bits)
            {
                return 1;
            }
            break;

        default:
            return 1;
        }
    }

    return 0;
}
