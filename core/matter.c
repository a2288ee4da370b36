/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Matter PKI: the six built-in profiles (PAA, PAI, DAC, RCAC, ICAC, NOC),
 * the checks of vectors/matter/PROFILES.md 1-3 on what the CA emits and on
 * attestation chains, and the hooks pki_build()/pki_issue() call for a
 * Matter template.
 */

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/cms.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include "key_int.h"
#include "matter_int.h"


#define PKI_MATTER_NODE_MAX    0xFFFFFFEFFFFFFFFFULL
#define PKI_MATTER_MAX_RDNS    5
#define PKI_MATTER_DN_MAX      200
#define PKI_MATTER_VALIDITY    (10000L * 366 * 86400)
#define PKI_MATTER_EPOCH       ((time_t) 946684800)  /* 2000-01-01 */

/* check flags */
#define CHK_PRESIGN            0x01   /* TBS only: no signature yet       */
#define CHK_EMIT               0x02   /* what this CA emits: strictest    */


typedef struct {
    int        vid;          /* -1: none */
    int        pid;          /* -1: none */
    int        from_oid;     /* VID/PID OID attribute present */
    int        cn_vid;       /* the CN's Mvid: (-1: none) */
    int        cn_pid;       /* the CN's Mpid: (-1: none) */
} pki_vidpid_t;

typedef struct {
    int        node, fabric, rcac, icac, fw, cat, vvs, vid, pid, other;
    uint64_t   node_id, fabric_id;
    uint32_t   cats[8];
} pki_opdn_t;


static const char  *pki_matter_names[] = {
    NULL, "paa", "pai", "dac", "rcac", "icac", "noc"
};

static const char  *pki_matter_codes[] = {
    NULL, "kPaaFormatInvalid", "kPaiFormatInvalid", "kDacFormatInvalid",
    "RCAC", "ICAC", "NOC"
};


/* ---- names ------------------------------------------------------------------ */

pki_matter_type_t
pki_matter_type_by_name(const char *name)
{
    int  i;

    if (name == NULL) {
        return PKI_MATTER_NONE;
    }

    if (strncmp(name, "matter-", 7) == 0) {
        name += 7;
    }

    for (i = PKI_MATTER_PAA; i <= PKI_MATTER_NOC; i++) {
        if (strcmp(name, pki_matter_names[i]) == 0) {
            return (pki_matter_type_t) i;
        }
    }

    return PKI_MATTER_NONE;
}


const char *
pki_matter_type_name(pki_matter_type_t type)
{
    if (type < PKI_MATTER_PAA || type > PKI_MATTER_NOC) {
        return "none";
    }

    return pki_matter_names[type];
}


static int
pki_is_operational(pki_matter_type_t type)
{
    return type == PKI_MATTER_RCAC || type == PKI_MATTER_ICAC
           || type == PKI_MATTER_NOC;
}


/* 1 when a time has a Matter TLV form: 32-bit seconds since
 * 2000-01-01T00:00:00Z, not 0 (which stands for 99991231235959Z, the
 * one time past 2136-02-07T06:28:15Z that can be given). */
int
pki_int_matter_tlv_time(time_t t)
{
    return t == PKI_TIME_MAX
           || (t > PKI_MATTER_EPOCH
               && (int64_t) t - PKI_MATTER_EPOCH <= 0xffffffffLL);
}


int
pki_int_matter_attr(const ASN1_OBJECT *obj)
{
    size_t                n;
    const unsigned char  *d;

    n = (size_t) OBJ_length(obj);
    d = OBJ_get0_data(obj);

    if (d == NULL || n != PKI_MATTER_ARC_LEN + 2
        || memcmp(d, PKI_MATTER_ARC, PKI_MATTER_ARC_LEN) != 0)
    {
        return 0;
    }

    if (d[8] == 1 && d[9] >= 1 && d[9] <= 7) {
        return 16 + d[9];
    }

    if (d[8] == 2 && d[9] == 1) {
        return PKI_MATTER_ATTR_VID;
    }

    if (d[8] == 2 && d[9] == 2) {
        return PKI_MATTER_ATTR_PID;
    }

    return 0;
}


/* Uppercase hex of exactly n digits -> *out. */
static int
pki_uphex(const unsigned char *s, int len, int n, uint64_t *out)
{
    int       i;
    uint64_t  v;

    if (len != n) {
        return 0;
    }

    v = 0;
    for (i = 0; i < n; i++) {
        if (s[i] >= '0' && s[i] <= '9') {
            v = v << 4 | (uint64_t) (s[i] - '0');
        } else if (s[i] >= 'A' && s[i] <= 'F') {
            v = v << 4 | (uint64_t) (s[i] - 'A' + 10);
        } else {
            return 0;
        }
    }

    *out = v;

    return 1;
}


/* ---- DN rules ---------------------------------------------------------------- */

/* The SDK's Find16BitUpperCaseHexAfterPrefix() on the CN's octets: the
 * leftmost prefix followed by 4 uppercase hex digits gives *v (1); no
 * prefix at all: 0; a prefix, but never followed so: -1, which the SDK
 * fails with CHIP_ERROR_WRONG_CERT_DN. */
static int
pki_cn_hex(const unsigned char *s, size_t len, const char *prefix, int *v)
{
    int       seen;
    size_t    i, n;
    uint64_t  u;

    seen = 0;
    n = strlen(prefix);

    for (i = 0; i + n <= len; i++) {
        if (memcmp(s + i, prefix, n) != 0) {
            continue;
        }
        seen = 1;
        if (i + n + 4 > len) {
            break;
        }
        if (pki_uphex(s + i + n, 4, 4, &u)) {
            *v = (int) u;
            return 1;
        }
    }

    return seen ? -1 : 0;
}


/* The CN's "Mvid:" / "Mpid:" values, four uppercase hex digits (the SDK's
 * ExtractVIDPIDFromAttributeString(): the first 64 octets; each value -1
 * when absent).  NULL or the broken rule. */
static const char *
pki_cn_vidpid(const unsigned char *s, size_t len, int *vid, int *pid)
{
    int  k, v;

    *vid = -1;
    *pid = -1;

    if (len > 64) {
        len = 64;       /* the SDK truncates the CN to 64 */
    }

    for (k = 0; k < 2; k++) {
        switch (pki_cn_hex(s, len, k ? "Mpid:" : "Mvid:", &v)) {
        case 1:
            *(k ? pid : vid) = v;
            break;
        case -1:
            return k ? "Mpid: in the CN not followed by 4 uppercase hex "
                       "digits (CHIP_ERROR_WRONG_CERT_DN)"
                     : "Mvid: in the CN not followed by 4 uppercase hex "
                       "digits (CHIP_ERROR_WRONG_CERT_DN)";
        }
    }

    return NULL;
}


/* 1 when a name is a Matter one: an attribute under 1.3.6.1.4.1.37244, or
 * a commonName holding "Mvid:" or "Mpid:" (the legacy VID/PID the SDK
 * reads when there is no attribute; well-formed or not, anywhere in it). */
int
pki_int_matter_name(const X509_NAME *name)
{
    int                    i, n, v;
    char                   oid[64];
    const ASN1_STRING     *d;
    const X509_NAME_ENTRY *e;

    n = name != NULL ? X509_NAME_entry_count(name) : 0;

    for (i = 0; i < n; i++) {
        e = X509_NAME_get_entry(name, i);

        if (OBJ_obj2txt(oid, sizeof(oid), X509_NAME_ENTRY_get_object(e), 1)
            > 0 && strncmp(oid, "1.3.6.1.4.1.37244.", 18) == 0)
        {
            return 1;
        }

        if (OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)) != NID_commonName) {
            continue;
        }

        d = X509_NAME_ENTRY_get_data(e);

        if (pki_cn_hex(ASN1_STRING_get0_data(d),
                       (size_t) ASN1_STRING_length(d), "Mvid:", &v) != 0
            || pki_cn_hex(ASN1_STRING_get0_data(d),
                          (size_t) ASN1_STRING_length(d), "Mpid:", &v) != 0)
        {
            return 1;
        }
    }

    return 0;
}


/* VID/PID (OID attributes first, else the CN's "Mvid:" and "Mpid:" values),
 * as the SDK's ExtractVIDPIDFromX509Cert(): every attribute is parsed, so
 * a CN whose Mvid:/Mpid: is malformed fails even beside the attributes
 * (whose values then win; a CN is read until one gives a value).
 * Returns NULL or the broken rule. */
static const char *
pki_vidpid(const X509_NAME *name, pki_vidpid_t *vp)
{
    int                   i, n, a, cv, cp;
    uint64_t              v;
    const char           *why;
    const ASN1_STRING    *d;
    const X509_NAME_ENTRY *e;

    vp->vid = -1;
    vp->pid = -1;
    vp->from_oid = 0;
    vp->cn_vid = -1;
    vp->cn_pid = -1;

    n = X509_NAME_entry_count(name);

    for (i = 0; i < n; i++) {
        e = X509_NAME_get_entry(name, i);
        a = pki_int_matter_attr(X509_NAME_ENTRY_get_object(e));
        d = X509_NAME_ENTRY_get_data(e);

        if (a == PKI_MATTER_ATTR_VID || a == PKI_MATTER_ATTR_PID) {
            vp->from_oid = 1;
            if (ASN1_STRING_type(d) != V_ASN1_UTF8STRING
                || !pki_uphex(ASN1_STRING_get0_data(d), ASN1_STRING_length(d),
                              4, &v))
            {
                return "VID/PID must be a UTF8String of 4 uppercase hex "
                       "digits";
            }
            if (a == PKI_MATTER_ATTR_VID) {
                if (vp->vid >= 0) {
                    return "more than one VID attribute";
                }
                vp->vid = (int) v;
            } else {
                if (vp->pid >= 0) {
                    return "more than one PID attribute";
                }
                vp->pid = (int) v;
            }

        } else if (OBJ_obj2nid(X509_NAME_ENTRY_get_object(e))
                   == NID_commonName && vp->cn_vid < 0 && vp->cn_pid < 0)
        {
            why = pki_cn_vidpid(ASN1_STRING_get0_data(d),
                                (size_t) ASN1_STRING_length(d), &cv, &cp);
            if (why) {
                return why;
            }
            vp->cn_vid = cv;
            vp->cn_pid = cp;
        }
    }

    if (!vp->from_oid) {
        vp->vid = vp->cn_vid;
        vp->pid = vp->cn_pid;
    }

    return NULL;
}


/* Generic DN rules plus the operational attributes. */
static const char *
pki_dn_rules(const X509_NAME *name, int operational, int flags,
    pki_opdn_t *op)
{
    int                    i, n, a, set, prev, st, len;
    uint64_t               v;
    const ASN1_STRING     *d;
    const X509_NAME_ENTRY *e;

    memset(op, 0, sizeof(pki_opdn_t));

    n = X509_NAME_entry_count(name);
    prev = -1;

    if (i2d_X509_NAME((X509_NAME *) name, NULL) > PKI_MATTER_DN_MAX + 2) {
        return "distinguished name larger than 200 bytes";
    }

    if ((operational || (flags & CHK_EMIT)) && n > PKI_MATTER_MAX_RDNS) {
        return "more than 5 RDNs in a distinguished name";
    }

    for (i = 0; i < n; i++) {
        e = X509_NAME_get_entry(name, i);
        set = X509_NAME_ENTRY_set(e);
        if (set == prev) {
            return "multi-valued RDN (one attribute per RDN)";
        }
        prev = set;

        d = X509_NAME_ENTRY_get_data(e);
        st = ASN1_STRING_type(d);
        len = ASN1_STRING_length(d);
        a = pki_int_matter_attr(X509_NAME_ENTRY_get_object(e));

        if (a == 0) {
            if ((operational || (flags & CHK_EMIT))
                && st != V_ASN1_UTF8STRING && st != V_ASN1_PRINTABLESTRING
                && !(st == V_ASN1_IA5STRING
                     && OBJ_obj2nid(X509_NAME_ENTRY_get_object(e))
                        == NID_domainComponent))
            {
                return "name string type not UTF8String, PrintableString "
                       "or IA5String";
            }
            op->other++;
            continue;
        }

        if (st != V_ASN1_UTF8STRING) {
            return "Matter attributes must be UTF8String";
        }

        switch (a) {
        case PKI_MATTER_ATTR_VID:
            op->vid++;
            continue;
        case PKI_MATTER_ATTR_PID:
            op->pid++;
            continue;
        }

        if (!pki_uphex(ASN1_STRING_get0_data(d), len,
                       a == PKI_MATTER_TAG_CAT ? 8 : 16, &v))
        {
            return a == PKI_MATTER_TAG_CAT
                   ? "CAT must be 8 uppercase hex digits"
                   : "Matter ID must be 16 uppercase hex digits";
        }

        switch (a) {
        case PKI_MATTER_TAG_NODE_ID:
            op->node++;
            op->node_id = v;
            break;
        case PKI_MATTER_TAG_FABRIC_ID:
            op->fabric++;
            op->fabric_id = v;
            break;
        case PKI_MATTER_TAG_RCAC_ID:
            op->rcac++;
            break;
        case PKI_MATTER_TAG_ICAC_ID:
            op->icac++;
            break;
        case PKI_MATTER_TAG_FW_ID:
            op->fw++;
            break;
        case PKI_MATTER_TAG_VVS_ID:
            op->vvs++;
            break;
        case PKI_MATTER_TAG_CAT:
            if (op->cat < 8) {
                op->cats[op->cat] = (uint32_t) v;
            }
            op->cat++;
            break;
        }
    }

    return NULL;
}


/* ---- the profile check ----------------------------------------------------------- */

static pki_status_t
pki_rule(pki_result_t *res, pki_matter_type_t type, const char *what,
    const char *rule)
{
    return pki_fail(res, PKI_POLICY, "Matter %s %s: %s",
                    pki_matter_type_name(type), what, rule);
}


static int
pki_ku_bits(X509 *x, unsigned *ku, int *crit)
{
    int               i;
    ASN1_BIT_STRING  *bs;

    bs = X509_get_ext_d2i(x, NID_key_usage, crit, NULL);
    if (bs == NULL) {
        return 0;
    }

    *ku = 0;
    for (i = 0; i < 9; i++) {
        if (ASN1_BIT_STRING_get_bit(bs, i)) {
            *ku |= 1u << i;
        }
    }

    ASN1_BIT_STRING_free(bs);

    return 1;
}


/* keyid of SKID / AKID (keyid only) into id[20]; 0 when absent, -1 bad. */
static int
pki_keyid(X509 *x, int nid, unsigned char *id, const char **why)
{
    int                      idx, crit;
    X509_EXTENSION          *ext;
    AUTHORITY_KEYID         *ak;
    ASN1_OCTET_STRING       *os;

    idx = X509_get_ext_by_NID(x, nid, -1);
    if (idx < 0) {
        return 0;
    }

    if (X509_get_ext_by_NID(x, nid, idx) >= 0) {
        *why = "duplicate key identifier extension";
        return -1;
    }

    ext = X509_get_ext(x, idx);
    crit = X509_EXTENSION_get_critical(ext);
    if (crit) {
        *why = "SKID/AKID must be non-critical";
        return -1;
    }

    if (nid == NID_subject_key_identifier) {
        os = X509_get_ext_d2i(x, nid, NULL, NULL);
        if (os == NULL || ASN1_STRING_length(os) != 20) {
            ASN1_OCTET_STRING_free(os);
            *why = "subjectKeyIdentifier must be 20 bytes";
            return -1;
        }
        memcpy(id, ASN1_STRING_get0_data(os), 20);
        ASN1_OCTET_STRING_free(os);
        return 1;
    }

    ak = X509_get_ext_d2i(x, nid, NULL, NULL);
    if (ak == NULL || ak->keyid == NULL || ak->issuer || ak->serial) {
        AUTHORITY_KEYID_free(ak);
        *why = "authorityKeyIdentifier must hold a keyIdentifier only";
        return -1;
    }
    if (ASN1_STRING_length(ak->keyid) != 20) {
        AUTHORITY_KEYID_free(ak);
        *why = "authorityKeyIdentifier must be 20 bytes";
        return -1;
    }
    memcpy(id, ASN1_STRING_get0_data(ak->keyid), 20);
    AUTHORITY_KEYID_free(ak);

    return 1;
}


/* An SPKI with algorithm id-ecPublicKey and the named curve prime256v1. */
static int
pki_spki_named_p256(X509_PUBKEY *spki)
{
    int                 ptype;
    const void         *pval;
    ASN1_OBJECT        *aobj;
    X509_ALGOR         *alg;
    const ASN1_OBJECT  *kobj;

    if (spki == NULL
        || !X509_PUBKEY_get0_param(&aobj, NULL, NULL, &alg, spki))
    {
        return 0;
    }

    X509_ALGOR_get0(&kobj, &ptype, &pval, alg);

    return OBJ_obj2nid(kobj) == NID_X9_62_id_ecPublicKey
           && ptype == V_ASN1_OBJECT
           && OBJ_obj2nid(pval) == NID_X9_62_prime256v1;
}


static pki_status_t
pki_check(X509 *x, pki_matter_type_t type, X509 *issuer, int flags,
    pki_result_t *res)
{
    int                    i, crit, idx, n, ca, kind;
    long                   pathlen;
    size_t                 tlvlen;
    unsigned               ku, want;
    EVP_PKEY              *pk;
    const char            *why;
    pki_opdn_t             sop, iop;
    pki_vidpid_t           svp, ivp;
    unsigned char          skid[20], akid[20], iskid[20], *der, *tlv;
    const ASN1_OBJECT     *obj;
    const X509_ALGOR      *alg;
    const ASN1_INTEGER    *serial;
    BASIC_CONSTRAINTS     *bc;
    EXTENDED_KEY_USAGE    *eku;
    const ASN1_BIT_STRING *sig;
    X509_EXTENSION        *ext;
    const ASN1_OCTET_STRING *bcdata;
    int                    ptype;
    const void            *pval;

    if (x == NULL || type < PKI_MATTER_PAA || type > PKI_MATTER_NOC) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    /* version, signature algorithm, key */
    if (X509_get_version(x) != X509_VERSION_3) {
        return pki_rule(res, type, "version", "must be X.509 v3");
    }

    if (!(flags & CHK_PRESIGN)) {
        X509_get0_signature(&sig, &alg, x);
        X509_ALGOR_get0(&obj, &ptype, &pval, alg);
        if (OBJ_obj2nid(obj) != NID_ecdsa_with_SHA256
            || ptype != V_ASN1_UNDEF)
        {
            return pki_rule(res, type, "signature algorithm",
                            "must be ecdsa-with-SHA256 without parameters");
        }
        X509_ALGOR_get0(&obj, &ptype, &pval, X509_get0_tbs_sigalg(x));
        if (OBJ_obj2nid(obj) != NID_ecdsa_with_SHA256
            || ptype != V_ASN1_UNDEF)
        {
            return pki_rule(res, type, "signature algorithm",
                            "must be ecdsa-with-SHA256 without parameters");
        }
    }

    /* the key decodes as EC, and the certificate says P-256 by name: the
     * SPKI algorithm is id-ecPublicKey with the prime256v1 OID as its
     * parameter (not explicit parameters); asking the decoded key for its
     * group name costs more than reading the two OIDs */
    pk = X509_get0_pubkey(x);
    if (pk == NULL || EVP_PKEY_get_base_id(pk) != EVP_PKEY_EC
        || !pki_spki_named_p256(X509_get_X509_PUBKEY(x)))
    {
        ERR_clear_error();
        return pki_rule(res, type, "public key",
                        "must be EC P-256 (named curve prime256v1)");
    }

    {
        const unsigned char  *kd;
        int                   kl;

        X509_PUBKEY_get0_param(NULL, &kd, &kl, NULL, X509_get_X509_PUBKEY(x));
        if (kl != 65 || kd[0] != 0x04) {
            return pki_rule(res, type, "public key",
                            "must be an uncompressed 65-byte point");
        }
    }

    serial = X509_get0_serialNumber(x);
    if (!(flags & CHK_PRESIGN) || ASN1_STRING_length(serial) > 0) {
        if (ASN1_STRING_type(serial) != V_ASN1_INTEGER
            || ASN1_STRING_length(serial) < 1
            || ASN1_STRING_length(serial) > 20)
        {
            return pki_rule(res, type, "serial number",
                            "must be positive and at most 20 octets");
        }
    }

    /* unique IDs */
    {
        const ASN1_BIT_STRING  *iuid, *suid;

        X509_get0_uids(x, &iuid, &suid);
        if (iuid || suid) {
            return pki_rule(res, type, "unique IDs",
                            "issuerUniqueID/subjectUniqueID are forbidden");
        }
    }

    /* basicConstraints */
    ca = type == PKI_MATTER_PAA || type == PKI_MATTER_PAI
         || type == PKI_MATTER_RCAC || type == PKI_MATTER_ICAC;

    idx = X509_get_ext_by_NID(x, NID_basic_constraints, -1);
    if (idx < 0) {
        return pki_rule(res, type, "basicConstraints", "must be present");
    }
    ext = X509_get_ext(x, idx);
    if (!X509_EXTENSION_get_critical(ext)) {
        return pki_rule(res, type, "basicConstraints", "must be critical");
    }
    bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
    if (bc == NULL) {
        return pki_rule(res, type, "basicConstraints", "malformed");
    }
    pathlen = bc->pathlen ? ASN1_INTEGER_get(bc->pathlen) : -1;
    i = bc->ca != 0;
    BASIC_CONSTRAINTS_free(bc);

    if (ca && !i) {
        return pki_rule(res, type, "basicConstraints", "cA must be TRUE");
    }
    if (!ca) {
        bcdata = X509_EXTENSION_get_data(ext);
        if (i) {
            return pki_rule(res, type, "basicConstraints",
                            "cA must be FALSE (omitted)");
        }
        if (ASN1_STRING_length(bcdata) != 2
            || memcmp(ASN1_STRING_get0_data(bcdata), "\x30\x00", 2) != 0)
        {
            return pki_rule(res, type, "basicConstraints",
                            "cA=FALSE must be omitted and no pathLen");
        }
    }
    if (type == PKI_MATTER_PAI && pathlen != 0) {
        return pki_rule(res, type, "basicConstraints",
                        "PAI pathLenConstraint must be present and 0");
    }
    if (type == PKI_MATTER_PAA && pathlen != -1 && pathlen != 1) {
        return pki_rule(res, type, "basicConstraints",
                        "PAA pathLenConstraint must be absent or 1");
    }
    if (type == PKI_MATTER_ICAC && pathlen > 0 && (flags & CHK_EMIT)) {
        return pki_rule(res, type, "basicConstraints",
                        "ICAC pathLenConstraint must be absent or 0");
    }

    /* keyUsage */
    idx = X509_get_ext_by_NID(x, NID_key_usage, -1);
    if (idx < 0 || !pki_ku_bits(x, &ku, &crit)) {
        return pki_rule(res, type, "keyUsage", "must be present");
    }
    if (!crit) {
        return pki_rule(res, type, "keyUsage", "must be critical");
    }
    if (ca) {
        want = (1u << PKI_KU_KEY_CERT_SIGN) | (1u << PKI_KU_CRL_SIGN);
        if ((ku & want) != want
            || (ku & ~(want | (1u << PKI_KU_DIGITAL_SIGNATURE))))
        {
            return pki_rule(res, type, "keyUsage", "must be keyCertSign + "
                            "cRLSign (digitalSignature optional), nothing "
                            "else");
        }
    } else if (ku != (1u << PKI_KU_DIGITAL_SIGNATURE)) {
        return pki_rule(res, type, "keyUsage",
                        "must be digitalSignature only");
    }

    /* extendedKeyUsage */
    idx = X509_get_ext_by_NID(x, NID_ext_key_usage, -1);
    if (type == PKI_MATTER_NOC) {
        if (idx < 0) {
            return pki_rule(res, type, "extendedKeyUsage",
                            "must be present (clientAuth + serverAuth)");
        }
        if (!X509_EXTENSION_get_critical(X509_get_ext(x, idx))) {
            return pki_rule(res, type, "extendedKeyUsage",
                            "must be critical");
        }
        eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
        n = eku ? sk_ASN1_OBJECT_num(eku) : 0;
        kind = 0;
        for (i = 0; i < n; i++) {
            int  nid = OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i));

            kind |= nid == NID_client_auth ? 1 : nid == NID_server_auth ? 2
                                                                        : 4;
        }
        EXTENDED_KEY_USAGE_free(eku);
        if (n != 2 || kind != 3) {
            return pki_rule(res, type, "extendedKeyUsage",
                            "must be exactly clientAuth + serverAuth");
        }

    } else if (idx >= 0 && type != PKI_MATTER_DAC
               && (pki_is_operational(type) || (flags & CHK_EMIT)))
    {
        return pki_rule(res, type, "extendedKeyUsage", "must be absent");
    }

    /* SKID / AKID */
    why = NULL;
    i = pki_keyid(x, NID_subject_key_identifier, skid, &why);
    if (i < 0) {
        return pki_rule(res, type, "subjectKeyIdentifier", why);
    }
    if (i == 0) {
        return pki_rule(res, type, "subjectKeyIdentifier", "must be present");
    }

    i = pki_keyid(x, NID_authority_key_identifier, akid, &why);
    if (i < 0) {
        return pki_rule(res, type, "authorityKeyIdentifier", why);
    }
    if (i == 0 && type != PKI_MATTER_PAA) {
        return pki_rule(res, type, "authorityKeyIdentifier",
                        "must be present");
    }
    if (i == 1 && (type == PKI_MATTER_PAA || type == PKI_MATTER_RCAC)
        && memcmp(akid, skid, 20) != 0)
    {
        return pki_rule(res, type, "authorityKeyIdentifier",
                        "must equal the subjectKeyIdentifier (self-signed)");
    }

    if (issuer && type != PKI_MATTER_PAA && type != PKI_MATTER_RCAC) {
        why = NULL;
        if (pki_keyid(issuer, NID_subject_key_identifier, iskid, &why) != 1
            || memcmp(akid, iskid, 20) != 0)
        {
            return pki_rule(res, type, "authorityKeyIdentifier",
                            "must equal the issuer's subjectKeyIdentifier");
        }
    }

    /* critical extensions we do not know */
    n = X509_get_ext_count(x);
    for (i = 0; i < n; i++) {
        ext = X509_get_ext(x, i);
        switch (OBJ_obj2nid(X509_EXTENSION_get_object(ext))) {
        case NID_basic_constraints:
        case NID_key_usage:
        case NID_ext_key_usage:
        case NID_subject_key_identifier:
        case NID_authority_key_identifier:
            break;
        default:
            if (X509_EXTENSION_get_critical(ext)
                && (pki_is_operational(type) || (flags & CHK_EMIT)))
            {
                return pki_rule(res, type, "extensions", "an unknown "
                                "critical extension makes the certificate "
                                "unusable");
            }
        }
    }

    /* names */
    why = pki_dn_rules(X509_get_subject_name(x), pki_is_operational(type),
                       flags, &sop);
    if (why) {
        return pki_rule(res, type, "subject", why);
    }
    why = pki_dn_rules(X509_get_issuer_name(x), pki_is_operational(type),
                       flags, &iop);
    if (why) {
        return pki_rule(res, type, "issuer", why);
    }

    switch (type) {

    case PKI_MATTER_PAA:
    case PKI_MATTER_PAI:
    case PKI_MATTER_DAC:
        why = pki_vidpid(X509_get_subject_name(x), &svp);
        if (why) {
            return pki_rule(res, type, "subject", why);
        }
        if ((flags & CHK_EMIT) && (svp.vid >= 0 || svp.pid >= 0)
            && !svp.from_oid)
        {
            return pki_rule(res, type, "subject", "VID/PID must be OID "
                            "attributes, never only the CN fallback");
        }
        /* the SDK takes the attributes and ignores the CN's values: one
         * that says otherwise is a mistake the CA does not sign */
        if ((flags & CHK_EMIT) && svp.from_oid
            && ((svp.cn_vid >= 0 && svp.cn_vid != svp.vid)
                || (svp.cn_pid >= 0 && svp.cn_pid != svp.pid)))
        {
            return pki_rule(res, type, "subject", "the CN's Mvid:/Mpid: "
                            "differs from the VID/PID attribute");
        }
        if (type == PKI_MATTER_PAA && svp.pid >= 0) {
            return pki_rule(res, type, "subject", "a PAA must not have a "
                            "PID (kPaaFormatInvalid)");
        }
        if (type != PKI_MATTER_PAA && svp.vid < 0) {
            return pki_rule(res, type, "subject", "VID is mandatory");
        }
        if (type == PKI_MATTER_DAC && svp.pid < 0) {
            return pki_rule(res, type, "subject", "PID is mandatory");
        }
        if (issuer && type != PKI_MATTER_PAA) {
            why = pki_vidpid(X509_get_subject_name(issuer), &ivp);
            if (why == NULL && ivp.vid >= 0 && ivp.vid != svp.vid) {
                return pki_rule(res, type, "subject", type == PKI_MATTER_DAC
                                ? "DAC VID must equal the PAI VID "
                                  "(kDacVendorIdMismatch)"
                                : "PAI VID must equal the PAA VID");
            }
            if (type == PKI_MATTER_DAC && why == NULL && ivp.pid >= 0
                && ivp.pid != svp.pid)
            {
                return pki_rule(res, type, "subject", "DAC PID must equal "
                                "the PAI PID (kDacProductIdMismatch)");
            }
        }
        if (sop.node || sop.fabric || sop.rcac || sop.icac || sop.cat) {
            if (flags & CHK_EMIT) {
                return pki_rule(res, type, "subject", "operational IDs in "
                                "an attestation certificate");
            }
        }
        break;

    case PKI_MATTER_RCAC:
    case PKI_MATTER_ICAC:
    case PKI_MATTER_NOC:
        if (sop.vid || sop.pid || iop.vid || iop.pid) {
            return pki_rule(res, type, "subject", "VID/PID attributes are "
                            "not allowed in operational certificates");
        }
        if (sop.rcac + sop.icac + sop.node + sop.fw != 1) {
            return pki_rule(res, type, "subject", "must hold exactly one of "
                            "rcac-id, icac-id, node-id");
        }
        if (sop.fabric > 1) {
            return pki_rule(res, type, "subject", "at most one fabric-id");
        }
        if (sop.fabric && sop.fabric_id == 0) {
            return pki_rule(res, type, "subject", "fabric-id must not be 0");
        }
        if (type == PKI_MATTER_RCAC) {
            if (sop.rcac != 1 || sop.cat) {
                return pki_rule(res, type, "subject", "exactly one "
                                "matter-rcac-id, no node-id, icac-id or CAT");
            }
            if (X509_NAME_cmp(X509_get_subject_name(x),
                              X509_get_issuer_name(x)) != 0)
            {
                return pki_rule(res, type, "issuer", "an RCAC is "
                                "self-signed (issuer = subject)");
            }
        }
        if (type == PKI_MATTER_ICAC && (sop.icac != 1 || sop.cat)) {
            return pki_rule(res, type, "subject", "exactly one "
                            "matter-icac-id, no node-id, rcac-id or CAT");
        }
        if (type == PKI_MATTER_NOC) {
            if (sop.node != 1) {
                return pki_rule(res, type, "subject", "exactly one "
                                "matter-node-id");
            }
            if (sop.node_id < 1 || sop.node_id > PKI_MATTER_NODE_MAX) {
                return pki_rule(res, type, "subject", "node-id out of the "
                                "operational range 0000000000000001.."
                                "FFFFFFEFFFFFFFFF");
            }
            if (sop.fabric != 1) {
                return pki_rule(res, type, "subject", "exactly one "
                                "matter-fabric-id");
            }
            if (sop.cat > 3) {
                return pki_rule(res, type, "subject", "at most 3 CATs");
            }
            for (i = 0; i < sop.cat; i++) {
                if ((sop.cats[i] & 0xffff) == 0) {
                    return pki_rule(res, type, "subject", "CAT version "
                                    "must not be 0");
                }
                for (n = 0; n < i; n++) {
                    if ((sop.cats[i] >> 16) == (sop.cats[n] >> 16)) {
                        return pki_rule(res, type, "subject", "CATs must "
                                        "have distinct identifiers");
                    }
                }
            }
        }
        if (issuer && sop.fabric && iop.fabric == 0) {
            pki_opdn_t  isop;

            if (pki_dn_rules(X509_get_subject_name(issuer), 1, 0, &isop)
                == NULL && isop.fabric && isop.fabric_id != sop.fabric_id)
            {
                return pki_rule(res, type, "subject", "fabric-id must equal "
                                "the issuer's fabric-id");
            }
        }
        if (sop.fabric && iop.fabric && iop.fabric_id != sop.fabric_id) {
            return pki_rule(res, type, "subject", "fabric-id must equal "
                            "the issuer's fabric-id");
        }
        break;

    default:
        break;
    }

    if (issuer && X509_NAME_cmp(X509_get_issuer_name(x),
                                X509_get_subject_name(issuer)) != 0)
    {
        return pki_rule(res, type, "issuer", "does not match the issuer "
                        "certificate's subject");
    }

    /* validity: TLV holds 32-bit seconds since 2000-01-01T00:00:00Z, 0
     * meaning 99991231235959Z; judged here, before anything is reserved
     * or signed, not found by the TLV conversion of the signed one */
    if (pki_is_operational(type)) {
        if (!pki_int_matter_tlv_time(
                 pki_int_asn1_time(X509_get0_notBefore(x))))
        {
            return pki_rule(res, type, "validity", "notBefore cannot be "
                            "encoded in Matter TLV (2000-01-01T00:00:01Z.."
                            "2136-02-07T06:28:15Z)");
        }
        if (!pki_int_matter_tlv_time(
                 pki_int_asn1_time(X509_get0_notAfter(x))))
        {
            return pki_rule(res, type, "validity", "notAfter cannot be "
                            "encoded in Matter TLV (2000-01-01T00:00:01Z.."
                            "2136-02-07T06:28:15Z, or 99991231235959Z)");
        }
    }

    if (flags & CHK_PRESIGN) {
        return PKI_OK;
    }

    /* sizes and the TLV form */
    der = NULL;
    n = i2d_X509(x, &der);
    if (n <= 0) {
        return pki_fail(res, PKI_INTERNAL, "i2d_X509() failed");
    }
    if (n > PKI_MATTER_DER_MAX) {
        OPENSSL_free(der);
        return pki_rule(res, type, "size", "DER larger than 600 bytes");
    }

    if (pki_is_operational(type)) {
        pki_result_t  tr;

        pki_result_init(&tr);
        if (pki_matter_der_to_tlv(der, (size_t) n, &tlv, &tlvlen, &tr)
            != PKI_OK)
        {
            OPENSSL_free(der);
            return pki_rule(res, type, "TLV form", tr.detail);
        }
        free(tlv);
    }

    OPENSSL_free(der);

    return PKI_OK;
}


pki_status_t
pki_matter_check(X509 *x, pki_matter_type_t type, X509 *issuer,
    pki_result_t *res)
{
    return pki_check(x, type, issuer, CHK_EMIT, res);
}


/* ---- attestation chains (PROFILES.md 3) -------------------------------------------- */

static pki_status_t
pki_format(X509 *x, pki_matter_type_t type, pki_result_t *res)
{
    pki_result_t  r;

    pki_result_init(&r);
    if (pki_check(x, type, NULL, 0, &r) == PKI_OK) {
        return PKI_OK;
    }

    return pki_fail(res, PKI_POLICY, "%s: %s", pki_matter_codes[type],
                    r.detail);
}


pki_status_t
pki_matter_verify_attestation(X509 *dac, X509 *pai, X509 *paa, time_t now,
    pki_result_t *res)
{
    int               rc, err;
    const char       *why;
    pki_vidpid_t      dvp, ivp, avp;
    unsigned char     a[20], s[20];
    X509_STORE       *store;
    X509_STORE_CTX   *ctx;
    STACK_OF(X509)   *untrusted;
    X509_VERIFY_PARAM *vp;
    time_t            nb, na;

    if (dac == NULL || pai == NULL || paa == NULL) {
        return pki_fail(res, PKI_MALFORMED, "DAC, PAI and PAA are required");
    }

    /* 2. format */
    if (pki_format(pai, PKI_MATTER_PAI, res) != PKI_OK
        || pki_format(dac, PKI_MATTER_DAC, res) != PKI_OK)
    {
        return PKI_POLICY;
    }

    /* 3. VID/PID */
    why = pki_vidpid(X509_get_subject_name(dac), &dvp);
    if (why || dvp.vid < 0 || dvp.pid < 0) {
        return pki_fail(res, PKI_POLICY, "kDacFormatInvalid: DAC VID/PID: %s",
                        why ? why : "missing");
    }
    why = pki_vidpid(X509_get_subject_name(pai), &ivp);
    if (why || ivp.vid < 0) {
        return pki_fail(res, PKI_POLICY, "kPaiFormatInvalid: PAI VID: %s",
                        why ? why : "missing");
    }
    if (dvp.vid != ivp.vid) {
        return pki_fail(res, PKI_POLICY, "kDacVendorIdMismatch: DAC VID "
                        "%04X != PAI VID %04X", dvp.vid, ivp.vid);
    }
    if (ivp.pid >= 0 && ivp.pid != dvp.pid) {
        return pki_fail(res, PKI_POLICY, "kDacProductIdMismatch: DAC PID "
                        "%04X != PAI PID %04X", dvp.pid, ivp.pid);
    }

    /* 5. PAA lookup by the PAI's AKID */
    why = NULL;
    if (pki_keyid(pai, NID_authority_key_identifier, a, &why) != 1
        || pki_keyid(paa, NID_subject_key_identifier, s, &why) != 1
        || memcmp(a, s, 20) != 0)
    {
        return pki_fail(res, PKI_POLICY, "kPaaNotFound: the PAI's "
                        "authorityKeyIdentifier does not name this PAA");
    }

    /* 6. PAA format, VID */
    if (pki_format(paa, PKI_MATTER_PAA, res) != PKI_OK) {
        return PKI_POLICY;
    }
    why = pki_vidpid(X509_get_subject_name(paa), &avp);
    if (why) {
        return pki_fail(res, PKI_POLICY, "kPaaFormatInvalid: %s", why);
    }
    /* the PAA's VID wherever it is, the attribute or else the CN's
     * Mvid: (spec 6.2.2.2; the SDK's ExtractVIDPIDFromX509Cert), as
     * pki_check() judges a PAI against its PAA when issuing */
    if (avp.vid >= 0 && avp.vid != ivp.vid) {
        return pki_fail(res, PKI_POLICY, "kPaiVendorIdMismatch: PAA VID "
                        "%04X != PAI VID %04X", avp.vid, ivp.vid);
    }

    /* 7. DAC valid now */
    if (now == 0) {
        now = time(NULL);
    }
    nb = pki_int_asn1_time(X509_get0_notBefore(dac));
    na = pki_int_asn1_time(X509_get0_notAfter(dac));
    if (nb == (time_t) -1 || na == (time_t) -1 || now < nb || now > na) {
        return pki_fail(res, PKI_POLICY, "kDacExpired: the DAC is not valid "
                        "now");
    }

    /* 8. the chain, at the DAC's notBefore, X509_STRICT */
    store = X509_STORE_new();
    ctx = X509_STORE_CTX_new();
    untrusted = sk_X509_new_null();

    if (store == NULL || ctx == NULL || untrusted == NULL
        || !X509_STORE_add_cert(store, paa) || !sk_X509_push(untrusted, pai)
        || !X509_STORE_CTX_init(ctx, store, dac, untrusted))
    {
        X509_STORE_CTX_free(ctx);
        X509_STORE_free(store);
        sk_X509_free(untrusted);
        return pki_fail(res, PKI_INTERNAL, "cannot set up chain validation");
    }

    vp = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_X509_STRICT);
    X509_VERIFY_PARAM_set_time(vp, nb);
    X509_VERIFY_PARAM_set_depth(vp, 2);

    rc = X509_verify_cert(ctx);
    err = X509_STORE_CTX_get_error(ctx);
    if (rc == 1 && X509_STORE_CTX_get0_chain(ctx) != NULL
        && sk_X509_num(X509_STORE_CTX_get0_chain(ctx)) != 3)
    {
        rc = 0;
        err = X509_V_ERR_PATH_LENGTH_EXCEEDED;
    }

    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    sk_X509_free(untrusted);
    ERR_clear_error();

    if (rc != 1) {
        return pki_fail(res, err == X509_V_ERR_CERT_SIGNATURE_FAILURE
                             ? PKI_BAD_SIGNATURE : PKI_POLICY,
                        "chain validation at the DAC notBefore "
                        "(ValidateCertificateChain): %s",
                        X509_verify_cert_error_string(err));
    }

    return PKI_OK;
}


pki_status_t
pki_matter_verify_cd(const unsigned char *cms, size_t len, X509 *signer,
    X509 *dac, X509 *pai, X509 *paa, int basic_vid, int basic_pid,
    pki_result_t *res)
{
    int                   i, found;
    BIO                  *out;
    char                 *data;
    long                  dlen;
    const char           *why;
    CMS_ContentInfo      *ci;
    STACK_OF(X509)       *certs;
    pki_vidpid_t          dvp, ivp;
    pki_matter_cd_t       cd;
    unsigned char         s[20];
    const unsigned char  *p;

    if (cms == NULL || signer == NULL || dac == NULL || pai == NULL) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    p = cms;
    ci = d2i_CMS_ContentInfo(NULL, &p, (long) len);
    if (ci == NULL || (size_t) (p - cms) != len) {
        CMS_ContentInfo_free(ci);
        return pki_fail(res, PKI_MALFORMED, "CD is not a DER CMS message");
    }

    certs = sk_X509_new_null();
    out = BIO_new(BIO_s_mem());
    if (certs == NULL || out == NULL || !sk_X509_push(certs, signer)) {
        sk_X509_free(certs);
        BIO_free(out);
        CMS_ContentInfo_free(ci);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    i = CMS_verify(ci, certs, NULL, NULL, out,
                   CMS_NOINTERN | CMS_NO_SIGNER_CERT_VERIFY | CMS_BINARY);
    sk_X509_free(certs);
    CMS_ContentInfo_free(ci);

    if (i != 1) {
        BIO_free(out);
        return pki_fail(res, PKI_BAD_SIGNATURE, "CD signature does not "
                        "verify with the CD signing key");
    }

    dlen = BIO_get_mem_data(out, &data);
    why = pki_int_matter_cd_parse((unsigned char *) data, (size_t) dlen, &cd);
    BIO_free(out);
    ERR_clear_error();

    if (why) {
        return pki_fail(res, PKI_MALFORMED, "CD: %s", why);
    }

    if (pki_vidpid(X509_get_subject_name(dac), &dvp) != NULL
        || pki_vidpid(X509_get_subject_name(pai), &ivp) != NULL
        || dvp.vid < 0 || dvp.pid < 0)
    {
        return pki_fail(res, PKI_POLICY, "CD: DAC/PAI VID/PID unreadable");
    }

    if (basic_vid < 0) {
        basic_vid = dvp.vid;
    }
    if (basic_pid < 0) {
        basic_pid = dvp.pid;
    }

    if (cd.vendor_id != basic_vid) {
        return pki_fail(res, PKI_POLICY, "CD vendor_id %04X != "
                        "BasicInformation VendorID %04X", cd.vendor_id,
                        basic_vid);
    }

    for (found = 0, i = 0; i < cd.npids; i++) {
        found |= cd.pids[i] == basic_pid;
    }
    if (!found) {
        return pki_fail(res, PKI_POLICY, "CD product_id_array lacks the "
                        "BasicInformation ProductID %04X", basic_pid);
    }

    if (cd.origin_vid >= 0 || cd.origin_pid >= 0) {
        if (cd.origin_vid != dvp.vid || cd.origin_pid != dvp.pid
            || cd.origin_vid != ivp.vid)
        {
            return pki_fail(res, PKI_POLICY, "CD dac_origin_vendor_id/"
                            "product_id differ from the DAC VID/PID");
        }

    } else {
        if (cd.vendor_id != dvp.vid || dvp.vid != ivp.vid) {
            return pki_fail(res, PKI_POLICY, "CD vendor_id %04X differs "
                            "from the DAC/PAI VID %04X", cd.vendor_id,
                            dvp.vid);
        }
        for (found = 0, i = 0; i < cd.npids; i++) {
            found |= cd.pids[i] == dvp.pid;
        }
        if (!found) {
            return pki_fail(res, PKI_POLICY, "CD product_id_array lacks "
                            "the DAC PID %04X", dvp.pid);
        }
    }

    if (cd.npaas >= 0 && paa) {
        why = NULL;
        if (pki_keyid(paa, NID_subject_key_identifier, s, &why) != 1) {
            return pki_fail(res, PKI_POLICY, "CD: PAA has no SKID");
        }
        for (found = 0, i = 0; i < cd.npaas; i++) {
            found |= memcmp(cd.paas[i], s, 20) == 0;
        }
        if (!found) {
            return pki_fail(res, PKI_POLICY, "CD authorized_paa_list lacks "
                            "the PAA");
        }
    }

    return PKI_OK;
}


/* ---- operational chains ------------------------------------------------------------ */

static pki_status_t
pki_signed_by(X509 *x, X509 *issuer, const char *what, pki_result_t *res)
{
    EVP_PKEY  *pk;

    pk = X509_get0_pubkey(issuer);
    if (pk == NULL || X509_verify(x, pk) != 1) {
        ERR_clear_error();
        return pki_fail(res, PKI_BAD_SIGNATURE, "%s signature does not "
                        "verify", what);
    }

    return PKI_OK;
}


/* x valid at now (the SDK's ValidateCert against the current time):
 * notBefore <= now <= notAfter, where a notAfter of 99991231235959Z (TLV
 * 0) stands for no expiry. */
static pki_status_t
pki_valid_at(X509 *x, const char *what, time_t now, pki_result_t *res)
{
    time_t             nb, na;
    const ASN1_TIME   *t;

    nb = pki_int_asn1_time(X509_get0_notBefore(x));
    if (nb == (time_t) -1 || now < nb) {
        return pki_fail(res, PKI_POLICY, "CERT_NOT_VALID_YET: the %s is not "
                        "valid before its notBefore", what);
    }

    t = X509_get0_notAfter(x);
    if (t != NULL && ASN1_STRING_length(t) == 15
        && memcmp(ASN1_STRING_get0_data(t), "99991231235959Z", 15) == 0)
    {
        return PKI_OK;
    }

    na = pki_int_asn1_time(t);
    if (na == (time_t) -1 || now > na) {
        return pki_fail(res, PKI_POLICY, "CERT_EXPIRED: the %s expired (its "
                        "notAfter is past)", what);
    }

    return PKI_OK;
}


/* A CA certificate's pathLenConstraint, where it has one, lets below it
 * the CA certificates the chain holds there (RFC 5280 4.2.1.9; the SDK's
 * CERT_PATH_LEN_CONSTRAINT_EXCEEDED). */
static pki_status_t
pki_path_len(X509 *x, const char *what, long below, pki_result_t *res)
{
    long  pathlen;

    pathlen = X509_get_pathlen(x);
    if (pathlen >= 0 && pathlen < below) {
        return pki_fail(res, PKI_POLICY, "CERT_PATH_LEN_CONSTRAINT_EXCEEDED: "
                        "the %s's pathLenConstraint %ld allows fewer than the "
                        "%ld CA certificate(s) below it", what, pathlen,
                        below);
    }

    return PKI_OK;
}


pki_status_t
pki_matter_verify_operational(X509 *noc, X509 *icac, X509 *rcac,
    time_t now, pki_result_t *res)
{
    X509  *issuer;

    if (noc == NULL || rcac == NULL) {
        return pki_fail(res, PKI_MALFORMED, "NOC and RCAC are required");
    }

    if (pki_check(rcac, PKI_MATTER_RCAC, NULL, 0, res) != PKI_OK
        || pki_signed_by(rcac, rcac, "RCAC", res) != PKI_OK)
    {
        return res ? res->status : PKI_POLICY;
    }

    issuer = rcac;
    if (icac) {
        if (pki_check(icac, PKI_MATTER_ICAC, rcac, 0, res) != PKI_OK
            || pki_signed_by(icac, rcac, "ICAC", res) != PKI_OK)
        {
            return res ? res->status : PKI_POLICY;
        }
        issuer = icac;
    }

    if (pki_check(noc, PKI_MATTER_NOC, issuer, 0, res) != PKI_OK
        || pki_signed_by(noc, issuer, "NOC", res) != PKI_OK)
    {
        return res ? res->status : PKI_POLICY;
    }

    /* the NOC's fabric-id also matches the RCAC's, when the RCAC has one */
    if (icac && pki_check(noc, PKI_MATTER_NOC, NULL, 0, res) == PKI_OK) {
        pki_opdn_t  a, b;

        if (pki_dn_rules(X509_get_subject_name(noc), 1, 0, &a) == NULL
            && pki_dn_rules(X509_get_subject_name(rcac), 1, 0, &b) == NULL
            && b.fabric && a.fabric_id != b.fabric_id)
        {
            return pki_fail(res, PKI_POLICY, "Matter noc subject: fabric-id "
                            "must equal the RCAC's fabric-id");
        }
    }

    /* each certificate valid at now, each CA's pathLen room for the CAs
     * below it: the profiles above let an RCAC say pathLen 0 over an
     * ICAC, which a verifier refuses */
    if (now == 0) {
        now = time(NULL);
    }

    if (pki_valid_at(noc, "NOC", now, res) != PKI_OK
        || (icac && pki_valid_at(icac, "ICAC", now, res) != PKI_OK)
        || pki_valid_at(rcac, "RCAC", now, res) != PKI_OK
        || (icac && pki_path_len(icac, "ICAC", 0, res) != PKI_OK)
        || pki_path_len(rcac, "RCAC", icac ? 1 : 0, res) != PKI_OK)
    {
        return res ? res->status : PKI_POLICY;
    }

    return PKI_OK;
}


/* ---- templates ------------------------------------------------------------------ */

static int
pki_parse_vidpid(const char *s, char out[5])
{
    uint64_t  v;

    if (strlen(s) != 4 || !pki_uphex((const unsigned char *) s, 4, 4, &v)) {
        return 0;
    }

    memcpy(out, s, 5);

    return 1;
}


pki_status_t
pki_int_matter_tmpl_set(pki_template_t *t, const char *name, int argc,
    const char *const *argv, pki_result_t *res)
{
    pki_matter_type_t  type;

    if (argc != 1) {
        return pki_fail(res, PKI_MALFORMED, "invalid number of arguments in "
                        "\"%.32s\"", name);
    }

    if (strcmp(name, "matter") == 0) {
        if (t->matter) {
            return pki_fail(res, PKI_MALFORMED, "\"matter\" is duplicate");
        }
        type = pki_matter_type_by_name(argv[0]);
        if (type == PKI_MATTER_NONE) {
            return pki_fail(res, PKI_MALFORMED, "unknown Matter profile "
                            "\"%.32s\" (paa, pai, dac, rcac, icac or noc)",
                            argv[0]);
        }
        t->matter = (int) type;
        return PKI_OK;
    }

    if (strcmp(name, "matter_vid") == 0 || strcmp(name, "matter_pid") == 0) {
        if (!pki_parse_vidpid(argv[0], name[7] == 'v' ? t->matter_vid
                                                      : t->matter_pid))
        {
            return pki_fail(res, PKI_MALFORMED, "invalid \"%s\" \"%.32s\" "
                            "(4 uppercase hex digits)", name, argv[0]);
        }
        return PKI_OK;
    }

    return pki_fail(res, PKI_MALFORMED, "unknown template directive "
                    "\"%.64s\"", name);
}


pki_status_t
pki_int_matter_tmpl_finish(pki_template_t *t, pki_result_t *res)
{
    int                type, ca, i, cv, cp;
    size_t             k;
    unsigned           want;
    pki_key_type_t     kt;
    ASN1_OBJECT       *o;
    const char        *v, *why;

    type = t->matter;

    /* A DAC ends 99991231235959Z, beyond its PAI unless the template says
     * beyond_ca_expiry off: the Matter SDK judges the PAI and PAA at the
     * DAC's notBefore, the DAC alone at the time of commissioning, so a
     * DAC cut to a PAI of ten years would make its device fail
     * attestation for good when the PAI ends (a DAC is never renewed) */
    if (type == PKI_MATTER_DAC && t->beyond_ca_expiry == -1) {
        t->beyond_ca_expiry = 1;
    }

    /* the subject is the profile's: a DAC template may only rule on the
     * CN (a fixed one of 1..64 printable characters); any other rule
     * would be ignored, so it is refused */
    for (i = 0; i < t->nsubject; i++) {
        if (type != PKI_MATTER_DAC
            || OBJ_obj2nid(t->subject[i].obj) != NID_commonName)
        {
            return pki_fail(res, PKI_MALFORMED, "template \"%s\": a Matter "
                            "%s template takes no \"subject %s\" rule (only "
                            "a DAC template, on CN)", t->name,
                            pki_matter_type_name(type), t->subject[i].name);
        }
        v = t->subject[i].value;
        if (t->subject[i].rule == PKI_RULE_FIXED) {
            for (k = 0; v != NULL && v[k] != '\0'; k++) {
                if (v[k] < 0x20 || v[k] > 0x7e) {
                    break;
                }
            }
            if (v == NULL || k == 0 || k > 64 || v[k] != '\0') {
                return pki_fail(res, PKI_MALFORMED, "template \"%s\": a "
                                "fixed Matter DAC CN is 1..64 printable "
                                "characters", t->name);
            }
            why = pki_cn_vidpid((const unsigned char *) v, (size_t) k, &cv,
                                &cp);
            if (why != NULL) {
                return pki_fail(res, PKI_MALFORMED, "template \"%s\": the "
                                "fixed CN: %s", t->name, why);
            }
        }
    }
    ca = type == PKI_MATTER_PAA || type == PKI_MATTER_PAI
         || type == PKI_MATTER_RCAC || type == PKI_MATTER_ICAC;

    if (t->nkey_types == 0) {
        t->key_types[0].type = PKI_KT_EC;
        t->key_types[0].nid = NID_X9_62_prime256v1;
        t->nkey_types = 1;
        snprintf(t->key_types_text, sizeof(t->key_types_text), "ec:P-256");

    } else {
        kt = t->key_types[0];
        if (t->nkey_types != 1 || kt.type != PKI_KT_EC
            || kt.nid != NID_X9_62_prime256v1)
        {
            return pki_fail(res, PKI_MALFORMED, "template \"%s\": Matter "
                            "allows only \"key_types ec:P-256\"", t->name);
        }
    }

    if (!t->bc_set) {
        t->bc_set = 1;
        t->ca = ca;
        t->pathlen = type == PKI_MATTER_PAA ? 1
                     : (type == PKI_MATTER_PAI || type == PKI_MATTER_ICAC)
                       ? 0 : -1;

    } else if (t->ca != ca
               || (type == PKI_MATTER_PAI && t->pathlen != 0)
               || (type == PKI_MATTER_PAA && t->pathlen > 1)
               || (type == PKI_MATTER_PAA && t->pathlen == 0)
               || (type == PKI_MATTER_ICAC && t->pathlen > 0))
    {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\": "
                        "basic_constraints break the Matter %s profile",
                        t->name, pki_matter_type_name(type));
    }

    want = ca ? (1u << PKI_KU_KEY_CERT_SIGN) | (1u << PKI_KU_CRL_SIGN)
              : 1u << PKI_KU_DIGITAL_SIGNATURE;

    if (!t->key_usage_set) {
        t->key_usage = want;
        t->key_usage_set = 1;

    } else if (ca ? ((t->key_usage & want) != want
                     || (t->key_usage
                         & ~(want | (1u << PKI_KU_DIGITAL_SIGNATURE))))
                  : t->key_usage != want)
    {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\": key_usage "
                        "breaks the Matter %s profile", t->name,
                        pki_matter_type_name(type));
    }

    if (type == PKI_MATTER_NOC && t->eku == NULL) {
        t->eku = sk_ASN1_OBJECT_new_null();
        if (t->eku == NULL) {
            return pki_fail(res, PKI_INTERNAL, "out of memory");
        }
        /* the SDK's order: clientAuth, then serverAuth */
        o = OBJ_dup(OBJ_nid2obj(NID_client_auth));
        if (o == NULL || !sk_ASN1_OBJECT_push(t->eku, o)) {
            ASN1_OBJECT_free(o);
            return pki_fail(res, PKI_INTERNAL, "out of memory");
        }
        o = OBJ_dup(OBJ_nid2obj(NID_server_auth));
        if (o == NULL || !sk_ASN1_OBJECT_push(t->eku, o)) {
            ASN1_OBJECT_free(o);
            return pki_fail(res, PKI_INTERNAL, "out of memory");
        }
    }

    if (t->eku && type != PKI_MATTER_NOC && type != PKI_MATTER_DAC) {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\": the Matter %s "
                        "profile has no extended_key_usage", t->name,
                        pki_matter_type_name(type));
    }

    if (type == PKI_MATTER_NOC) {
        int  i, c = 0, s = 0, nid;

        for (i = 0; i < sk_ASN1_OBJECT_num(t->eku); i++) {
            nid = OBJ_obj2nid(sk_ASN1_OBJECT_value(t->eku, i));
            c += nid == NID_client_auth;
            s += nid == NID_server_auth;
        }
        if (sk_ASN1_OBJECT_num(t->eku) != 2 || c != 1 || s != 1) {
            return pki_fail(res, PKI_MALFORMED, "template \"%s\": a NOC's "
                            "extended_key_usage is clientAuth serverAuth",
                            t->name);
        }
    }

    if (sk_X509_EXTENSION_num(t->extensions) > 0 && pki_is_operational(type))
    {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\": no extra "
                        "extensions in Matter operational certificates",
                        t->name);
    }

    if ((t->matter_pid[0] && type != PKI_MATTER_DAC && type != PKI_MATTER_PAI)
        || (t->matter_vid[0] && type != PKI_MATTER_DAC
            && type != PKI_MATTER_PAI && type != PKI_MATTER_PAA))
    {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\": matter_vid/"
                        "matter_pid do not apply to the Matter %s profile",
                        t->name, pki_matter_type_name(type));
    }

    if (t->validity == 0) {
        t->validity = PKI_MATTER_VALIDITY;     /* 99991231235959Z */
    }

    /* DAC keys may be made by the factory or the PKI provider */
    if (type == PKI_MATTER_DAC && t->server_keygen == -1) {
        t->server_keygen = 1;
    }

    if (t->nsubject == 0) {
        t->subject[0].obj = OBJ_dup(OBJ_nid2obj(NID_commonName));
        if (t->subject[0].obj == NULL) {
            return pki_fail(res, PKI_INTERNAL, "out of memory");
        }
        t->subject[0].rule = PKI_RULE_COPY;
        snprintf(t->subject[0].name, sizeof(t->subject[0].name), "CN");
        t->nsubject = 1;
    }

    return PKI_OK;
}


pki_template_t *
pki_matter_template_new(const char *name, pki_result_t *res)
{
    pki_template_t     *t;
    pki_matter_type_t   type;

    if (name == NULL || strncmp(name, "matter-", 7) != 0) {
        return NULL;
    }

    type = pki_matter_type_by_name(name);
    if (type == PKI_MATTER_NONE) {
        return NULL;
    }

    t = pki_template_new(name);
    if (t == NULL) {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        return NULL;
    }

    t->matter = (int) type;

    if (pki_template_finish(t, res) != PKI_OK) {
        pki_template_free(t);
        return NULL;
    }

    return t;
}


pki_matter_type_t
pki_matter_template_type(const pki_template_t *t)
{
    return t ? (pki_matter_type_t) t->matter : PKI_MATTER_NONE;
}


/* ---- issuance hooks ----------------------------------------------------------------- */

/* NULL when a request's public key can go into a Matter certificate as it
 * is, else what is wrong with it.  Matter takes only the uncompressed
 * point: a compressed one (which other templates take, and the builder
 * sets uncompressed) is refused here, with the request, rather than
 * converted behind the requester's back; a hybrid one the CSR reader
 * already refuses (RFC 5480 2.2).  Either is refused before a batch is
 * under way. */
const char *
pki_int_matter_req_key(EVP_PKEY *pk)
{
    int                   ok, len, exp = 0;
    char                  group[64];
    X509_PUBKEY          *spki;
    const unsigned char  *pt;

    if (pk == NULL || EVP_PKEY_get_base_id(pk) != EVP_PKEY_EC
        || !EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME,
                                           group, sizeof(group), NULL)
        || OBJ_txt2nid(group) != NID_X9_62_prime256v1
        || (EVP_PKEY_get_int_param(pk,
                OSSL_PKEY_PARAM_EC_DECODED_FROM_EXPLICIT_PARAMS, &exp)
            && exp))
    {
        ERR_clear_error();
        return "must be EC P-256 (named curve prime256v1)";
    }

    /* the point as X509_set_pubkey() will encode it: the key's own
     * parameters do not tell (OpenSSL 3.0 gives the encoded public key
     * uncompressed whatever the key's form) */
    spki = NULL;
    ok = X509_PUBKEY_set(&spki, pk)
         && X509_PUBKEY_get0_param(NULL, &pt, &len, NULL, spki)
         && len == 65 && pt[0] == 0x04;
    X509_PUBKEY_free(spki);

    if (!ok) {
        ERR_clear_error();
        return "must be an uncompressed point (65 bytes starting 04), "
               "not a compressed or hybrid one";
    }

    return NULL;
}


/* The DAC request from what a CSR holds (key, signature algorithm,
 * subject); see pki_int_matter_request(). */
static pki_status_t
pki_matter_request(const pki_template_t *t, EVP_PKEY *pk, int signid,
    const X509_NAME *in, pki_request_t *req, pki_result_t *res)
{
    int                 i, n, len, have, vv, pv;
    X509_NAME          *name;
    const char         *why;
    const ASN1_STRING  *d;
    const unsigned char *s;
    const X509_NAME_ENTRY *e;
    char                cn[65];
    const pki_subject_rule_t  *rule;

    memset(req, 0, sizeof(pki_request_t));

    why = pki_int_matter_req_key(pk);
    if (why != NULL) {
        return pki_fail(res, PKI_POLICY, "Matter %s public key: %s",
                        pki_matter_type_name(t->matter), why);
    }

    if (signid != NID_ecdsa_with_SHA256) {
        return pki_fail(res, PKI_POLICY, "Matter %s CSR: must be signed with "
                        "ecdsa-with-SHA256", pki_matter_type_name(t->matter));
    }

    if (t->matter != PKI_MATTER_DAC) {
        return pki_fail(res, PKI_POLICY, "Matter %s certificates are not "
                        "issued from a plain CSR (use the Matter endpoints "
                        "or pkictl matter)", pki_matter_type_name(t->matter));
    }

    /* The CSR subject is not trusted: only a commonName is taken. */
    snprintf(cn, sizeof(cn), "Matter DAC");
    n = X509_NAME_entry_count(in);

    for (i = 0; i < n; i++) {
        e = X509_NAME_get_entry(in, i);
        if (OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)) != NID_commonName) {
            continue;
        }
        d = X509_NAME_ENTRY_get_data(e);
        s = ASN1_STRING_get0_data(d);
        len = ASN1_STRING_length(d);
        if ((ASN1_STRING_type(d) != V_ASN1_UTF8STRING
             && ASN1_STRING_type(d) != V_ASN1_PRINTABLESTRING)
            || len < 1 || len > 64)
        {
            return pki_fail(res, PKI_POLICY, "Matter dac subject: CN must "
                            "be 1..64 characters");
        }
        for (int k = 0; k < len; k++) {
            if (s[k] < 0x20 || s[k] > 0x7e) {
                return pki_fail(res, PKI_POLICY, "Matter dac subject: CN "
                                "must be printable ASCII");
            }
        }
        memcpy(cn, s, (size_t) len);
        cn[len] = '\0';
        break;
    }
    have = i < n;

    /* the template's CN rule (its only subject rule a Matter template
     * may have: pki_int_matter_tmpl_finish) */
    rule = NULL;
    for (i = 0; i < t->nsubject; i++) {
        if (OBJ_obj2nid(t->subject[i].obj) == NID_commonName) {
            rule = &t->subject[i];
        }
    }

    if (rule != NULL && rule->rule == PKI_RULE_FIXED) {
        snprintf(cn, sizeof(cn), "%s", rule->value);

    } else if (rule != NULL && rule->rule == PKI_RULE_FORBIDDEN && have) {
        return pki_fail(res, PKI_POLICY, "subject attribute CN is forbidden "
                        "by template \"%s\"", t->name);

    } else if (rule != NULL && rule->rule == PKI_RULE_REQUIRED && !have) {
        return pki_fail(res, PKI_POLICY, "subject attribute CN is required "
                        "by template \"%s\"", t->name);
    }

    /* a malformed Mvid:/Mpid: fails the SDK's VID/PID extraction
     * (CHIP_ERROR_WRONG_CERT_DN) whatever the attributes say: refused
     * with the request, before a batch reserves or signs anything */
    why = pki_cn_vidpid((const unsigned char *) cn, strlen(cn), &vv, &pv);
    if (why != NULL) {
        return pki_fail(res, PKI_POLICY, "Matter dac subject: %s", why);
    }

    name = X509_NAME_new();
    if (name == NULL
        || !X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                       (unsigned char *) cn, -1, -1, 0)
        || !EVP_PKEY_up_ref(pk))
    {
        X509_NAME_free(name);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    req->subject = name;
    req->pubkey = pk;

    return PKI_OK;
}


pki_status_t
pki_int_matter_request(const pki_template_t *t, X509_REQ *csr,
    pki_request_t *req, pki_result_t *res)
{
    /* pki_csr_parse() also takes version 2 for ACME clients that write
     * it; the Matter SDK writes and reads only version 1 (0) */
    if (X509_REQ_get_version(csr) != X509_REQ_VERSION_1) {
        memset(req, 0, sizeof(pki_request_t));
        return pki_fail(res, PKI_POLICY, "Matter %s CSR: must be PKCS#10 "
                        "version 1 (0)", pki_matter_type_name(t->matter));
    }

    return pki_matter_request(t, X509_REQ_get0_pubkey(csr),
                              X509_REQ_get_signature_nid(csr),
                              X509_REQ_get_subject_name(csr), req, res);
}


pki_status_t
pki_int_matter_dac_request(const pki_template_t *t, EVP_PKEY *pk,
    int signid, const X509_NAME *subject, pki_request_t *req,
    pki_result_t *res)
{
    return pki_matter_request(t, pk, signid, subject, req, res);
}


/* The VID and PID attribute types, made once (OBJ_txt2obj parses the
 * dotted text each time: a few us per DAC). */
static ASN1_OBJECT     *pki_vid_obj, *pki_pid_obj;
static pthread_once_t   pki_vidpid_once = PTHREAD_ONCE_INIT;


static void
pki_vidpid_objs(void)
{
    pki_vid_obj = OBJ_txt2obj(PKI_MATTER_OID_VID, 1);
    pki_pid_obj = OBJ_txt2obj(PKI_MATTER_OID_PID, 1);
}


static int
pki_add_hex_attr(X509_NAME *name, const ASN1_OBJECT *obj, const char *hex)
{
    return obj != NULL
           && X509_NAME_add_entry_by_OBJ(name, obj, V_ASN1_UTF8STRING,
                                         (const unsigned char *) hex, -1, -1,
                                         0);
}


/* The octets of a DER element whose content has n octets. */
static long
pki_der_len(long n)
{
    return 1 + (n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 4) + n;
}


/* The largest DER the unsigned certificate x can have once signed with
 * the key of signer (EC: ecdsa-with-SHA*, 12 octets, in the TBS and after
 * it; the signature with a low s, as key.c releases every EC signature)
 * and given a serial of octets octets, no leading zero, as
 * pki_serial_new_octets() makes it.  -1 when it cannot tell (another key
 * type): the check of the signed certificate still holds. */
static long
pki_der_bound(X509 *x, EVP_PKEY *signer, size_t octets)
{
    int             tbs, hdr, ser, alg, sig;
    long            content;
    X509_ALGOR     *a;
    unsigned char  *der;
    const ASN1_OBJECT  *obj;

    if (signer == NULL || EVP_PKEY_get_base_id(signer) != EVP_PKEY_EC) {
        return -1;
    }

    /* no algorithm yet (the TBS does not encode without one): the one
     * Matter signs with, which signing sets again */
    a = (X509_ALGOR *) X509_get0_tbs_sigalg(x);
    X509_ALGOR_get0(&obj, NULL, NULL, a);
    if (OBJ_obj2nid(obj) == NID_undef
        && !X509_ALGOR_set0(a, OBJ_nid2obj(NID_ecdsa_with_SHA256),
                            V_ASN1_UNDEF, NULL))
    {
        ERR_clear_error();
        return -1;
    }

    der = NULL;
    tbs = i2d_re_X509_tbs(x, &der);
    ser = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), NULL);
    alg = i2d_X509_ALGOR(a, NULL);
    sig = pki_int_ecdsa_sig_max(signer);

    if (tbs < 2 || ser <= 0 || alg <= 0 || sig <= 0) {
        OPENSSL_free(der);
        ERR_clear_error();
        return -1;
    }

    hdr = der[1] < 0x80 ? 2 : 2 + (der[1] & 0x7f);
    OPENSSL_free(der);

    /* the TBS with its serial and algorithm as signing sets them */
    content = pki_der_len((long) tbs - hdr + (2 + (long) octets - ser)
                          + (12 - alg));

    /* then the algorithm again and the signature in a BIT STRING */
    content += 12 + pki_der_len(1 + (long) sig);

    return pki_der_len(content);
}


/* The VID and PID (4 uppercase hex digits) of the DACs that template t
 * has the PAI pai issue: the PAI's VID, and its PID or else the
 * template's; the template's values must agree with the PAI's (DAC VID =
 * PAI VID, DAC PID = PAI PID when the PAI has one).  PKI_POLICY naming
 * what does not agree. */
static pki_status_t
pki_dac_vidpid(const pki_template_t *t, X509 *pai, char vid[9], char pid[9],
    pki_result_t *res)
{
    const char    *why;
    pki_vidpid_t   ivp;

    why = pki_vidpid(X509_get_subject_name(pai), &ivp);
    if (why || ivp.vid < 0) {
        return pki_fail(res, PKI_POLICY, "Matter dac: the PAI has no "
                        "usable VID%s%s", why ? ": " : "", why ? why : "");
    }

    snprintf(vid, 9, "%04X", (unsigned) ivp.vid);
    if (t->matter_vid[0] && strcmp(t->matter_vid, vid) != 0) {
        return pki_fail(res, PKI_POLICY, "Matter dac: template VID %s "
                        "differs from the PAI VID %s (DAC VID = PAI VID)",
                        t->matter_vid, vid);
    }

    if (ivp.pid >= 0) {
        snprintf(pid, 9, "%04X", (unsigned) ivp.pid);
        if (t->matter_pid[0] && strcmp(t->matter_pid, pid) != 0) {
            return pki_fail(res, PKI_POLICY, "Matter dac: template PID %s "
                            "differs from the PAI PID %s (DAC PID = PAI "
                            "PID)", t->matter_pid, pid);
        }

    } else if (t->matter_pid[0]) {
        memcpy(pid, t->matter_pid, sizeof(t->matter_pid));

    } else {
        return pki_fail(res, PKI_POLICY, "Matter dac: the PAI has no PID "
                        "and template \"%s\" sets no matter_pid", t->name);
    }

    return PKI_OK;
}


pki_status_t
pki_int_matter_prepare(const pki_template_t *t, const pki_ca_t *ca, X509 *x,
    pki_result_t *res)
{
    int                i, a;
    char               vid[9], pid[9];
    X509_NAME         *name;
    X509_NAME_ENTRY   *e;
    long               size;
    time_t             nb, canb;
    ASN1_TIME         *tm;
    pki_status_t       rc;

    if (t->matter == PKI_MATTER_DAC) {
        if (ca == NULL) {
            return pki_fail(res, PKI_POLICY, "Matter dac: a DAC is issued by "
                            "a PAI");
        }

        /* (the CA was found a PAI agreeing with the template at
         * configuration: pki_dac_ca_check) */
        rc = pki_dac_vidpid(t, ca->cert, vid, pid, res);
        if (rc != PKI_OK) {
            return rc;
        }

        /* the subject: what policy allowed (no VID/PID), then VID, PID,
         * each in its own RDN; edited in place (the certificate is not
         * signed yet: signing encodes the TBS again) rather than copied
         * (X509_set_subject_name() encodes and decodes the name) */
        (void) pthread_once(&pki_vidpid_once, pki_vidpid_objs);

        name = X509_get_subject_name(x);
        if (name == NULL) {
            return pki_fail(res, PKI_INTERNAL, "cannot set the DAC subject");
        }

        for (i = X509_NAME_entry_count(name) - 1; i >= 0; i--) {
            e = X509_NAME_get_entry(name, i);
            a = pki_int_matter_attr(X509_NAME_ENTRY_get_object(e));
            if (a == PKI_MATTER_ATTR_VID || a == PKI_MATTER_ATTR_PID) {
                X509_NAME_ENTRY_free(X509_NAME_delete_entry(name, i));
            }
        }

        if (!pki_add_hex_attr(name, pki_vid_obj, vid)
            || !pki_add_hex_attr(name, pki_pid_obj, pid))
        {
            return pki_fail(res, PKI_INTERNAL, "cannot set the DAC subject");
        }
    }

    /* never before the issuer: validation happens at the notBefore */
    if (ca) {
        nb = pki_int_asn1_time(X509_get0_notBefore(x));
        canb = pki_int_asn1_time(X509_get0_notBefore(ca->cert));
        if (nb != (time_t) -1 && canb != (time_t) -1 && nb < canb) {
            tm = ASN1_TIME_set(NULL, canb);
            if (tm == NULL || !X509_set1_notBefore(x, tm)) {
                ASN1_TIME_free(tm);
                return pki_fail(res, PKI_INTERNAL, "cannot set notBefore");
            }
            ASN1_TIME_free(tm);
        }
    }

    rc = pki_check(x, (pki_matter_type_t) t->matter,
                   ca ? ca->cert : NULL, CHK_PRESIGN | CHK_EMIT, res);
    if (rc != PKI_OK) {
        return rc;
    }

    /* the DER size, before a serial is reserved or anything signed: the
     * largest the signed certificate can be.  Found only once signed, a
     * certificate over it was recorded and then revoked, and in a batch
     * every DAC signed before it too.  Judged by the longest signature,
     * not the one a signing happens to give, so that one request is not
     * taken or refused by chance. */
    size = pki_der_bound(x, ca ? X509_get0_pubkey(ca->cert)
                               : X509_get0_pubkey(x),
                         pki_int_serial_octets(t));
    if (size > PKI_MATTER_DER_MAX) {
        return pki_fail(res, PKI_POLICY, "Matter %s size: DER larger than "
                        "%d bytes once signed (up to %ld)",
                        pki_matter_type_name(t->matter), PKI_MATTER_DER_MAX,
                        size);
    }

    /* fabric-id consistency along the whole chain (RCAC included) */
    if (ca && pki_is_operational(t->matter)) {
        pki_opdn_t   s, c;

        if (pki_dn_rules(X509_get_subject_name(x), 1, 0, &s) == NULL
            && s.fabric == 1)
        {
            for (i = 0; i < sk_X509_num(ca->chain); i++) {
                if (pki_dn_rules(X509_get_subject_name(
                                     sk_X509_value(ca->chain, i)), 1, 0, &c)
                    == NULL && c.fabric == 1 && c.fabric_id != s.fabric_id)
                {
                    return pki_fail(res, PKI_POLICY, "Matter %s subject: "
                                    "fabric-id must equal the issuer's "
                                    "fabric-id (chain)",
                                    pki_matter_type_name(t->matter));
                }
            }
        }
    }

    return PKI_OK;
}


/* Configuration: a CA that issues DACs of t is a PAI as a commissioner
 * checks one (kPaiFormatInvalid: P-256, pathLen 0, a VID...), issued by
 * the PAA of its chain when its chain holds others than itself, and the
 * template agrees with it on the VID and PID (pki_dac_vidpid).  Found
 * only per request, a PAA as the CA had DACs issued and recorded that no
 * commissioner takes, and the other cases refused every request, or
 * signed every DAC of a batch before its profile check refused it. */
static pki_status_t
pki_dac_ca_check(const pki_template_t *t, const pki_ca_t *ca,
    pki_result_t *res)
{
    int            i, others, cv, cp;
    X509          *x, *paa;
    char           vid[9], pid[9];
    const char    *v, *why;
    pki_opdn_t     op;
    pki_result_t   tmp;

    paa = NULL;
    others = 0;

    for (i = 0; i < sk_X509_num(ca->chain); i++) {
        x = sk_X509_value(ca->chain, i);
        if (X509_cmp(x, ca->cert) == 0) {
            continue;
        }
        others++;
        if (X509_check_issued(x, ca->cert) == X509_V_OK) {
            paa = x;
            break;
        }
    }
    ERR_clear_error();

    pki_result_init(&tmp);

    if (pki_check(ca->cert, PKI_MATTER_PAI, paa, 0, &tmp) != PKI_OK) {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\": CA \"%s\" "
                        "issues Matter DACs but its certificate is not a "
                        "PAI: %s", t->name, ca->name, tmp.detail);
    }

    /* the PAI subject is the issuer of every DAC, whose check holds it to
     * what the CA emits (pki_check(), CHK_EMIT: at most 5 RDNs, string
     * types); found only per request, every DAC request failed */
    why = pki_dn_rules(X509_get_subject_name(ca->cert), 0, CHK_EMIT, &op);
    if (why) {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\": the subject "
                        "of CA \"%s\" (a Matter PAI), the issuer of every "
                        "DAC, breaks a Matter rule: %s", t->name, ca->name,
                        why);
    }

    if (others && paa == NULL) {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\": the chain of "
                        "CA \"%s\" (a Matter PAI) does not hold the PAA "
                        "that issued it", t->name, ca->name);
    }

    if (paa != NULL) {
        if (pki_check(paa, PKI_MATTER_PAA, paa, 0, &tmp) != PKI_OK) {
            return pki_fail(res, PKI_MALFORMED, "template \"%s\": the PAA "
                            "in the chain of CA \"%s\": %s", t->name,
                            ca->name, tmp.detail);
        }

        if (X509_verify(ca->cert, X509_get0_pubkey(paa)) != 1) {
            ERR_clear_error();
            return pki_fail(res, PKI_MALFORMED, "template \"%s\": the "
                            "certificate of CA \"%s\" (a Matter PAI) is not "
                            "signed by the PAA in its chain", t->name,
                            ca->name);
        }
    }

    if (pki_dac_vidpid(t, ca->cert, vid, pid, &tmp) != PKI_OK) {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\" under CA "
                        "\"%s\": %s", t->name, ca->name, tmp.detail);
    }

    /* a fixed CN's Mvid:/Mpid: must say what the attributes say (the CA
     * does not sign a DAC whose CN says otherwise) */
    for (i = 0; i < t->nsubject; i++) {
        v = t->subject[i].value;
        if (t->subject[i].rule != PKI_RULE_FIXED || v == NULL
            || OBJ_obj2nid(t->subject[i].obj) != NID_commonName
            || pki_cn_vidpid((const unsigned char *) v, strlen(v), &cv, &cp)
               != NULL)
        {
            continue;
        }
        if ((cv >= 0 && cv != (int) strtol(vid, NULL, 16))
            || (cp >= 0 && cp != (int) strtol(pid, NULL, 16)))
        {
            return pki_fail(res, PKI_MALFORMED, "template \"%s\" under CA "
                            "\"%s\": the fixed CN's Mvid:/Mpid: differs "
                            "from the DAC VID %s / PID %s", t->name,
                            ca->name, vid, pid);
        }
    }

    return PKI_OK;
}


/* Configuration: operational certificates of t issued by ca now end when
 * no TLV time can say (past 2136-02-07T06:28:15Z, not 99991231235959Z);
 * that end only moves later with time, so every request would be refused
 * (by pki_check() before signing).  Refused with the CA's templates, as
 * is a DAC template whose CA is not a PAI agreeing with it
 * (pki_dac_ca_check). */
pki_status_t
pki_int_matter_ca_template(const pki_template_t *t, const pki_ca_t *ca,
    pki_result_t *res)
{
    char       when[32];
    time_t     nb, na;
    struct tm  tm;

    if (t->matter == PKI_MATTER_DAC) {
        return pki_dac_ca_check(t, ca, res);
    }

    if (!pki_is_operational(t->matter)) {
        return PKI_OK;
    }

    nb = time(NULL) - 60;
    na = pki_int_validity_end(nb, pki_template_validity(t));
    na = pki_int_cap_not_after(t, ca, nb, na);

    if (pki_int_matter_tlv_time(na)) {
        return PKI_OK;
    }

    if (gmtime_r(&na, &tm) == NULL
        || strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    {
        snprintf(when, sizeof(when), "%lld", (long long) na);
    }

    return pki_fail(res, PKI_MALFORMED, "template \"%s\": a Matter %s of CA "
                    "\"%s\" would end %s, which Matter TLV cannot encode "
                    "(after 2136-02-07T06:28:15Z, other than "
                    "99991231235959Z): shorten its validity", t->name,
                    pki_matter_type_name(t->matter), ca->name, when);
}


pki_status_t
pki_int_matter_issued(const pki_template_t *t, const pki_ca_t *ca, X509 *x,
    pki_result_t *res)
{
    pki_status_t  rc;

    rc = pki_check(x, (pki_matter_type_t) t->matter, ca ? ca->cert : x,
                   CHK_EMIT, res);
    if (rc != PKI_OK) {
        /* the CA never emits a certificate that breaks the profile */
        pki_log(res, "%sissued certificate failed the Matter check",
                res && res->log[0] ? "; " : "");
        return PKI_POLICY;
    }

    return PKI_OK;
}
