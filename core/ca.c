/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Certificate authorities: certificate, chain, key and the templates a CA
 * may issue.
 */

#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "matter_int.h"


static pki_status_t pki_ca_check_template(pki_ca_t *ca,
    const pki_template_t *t, pki_result_t *res);
static pki_status_t pki_ca_check_mix(pki_ca_t *ca,
    const pki_template_t *t, pki_result_t *res);
static pki_status_t pki_ca_check_pathlen(pki_ca_t *ca,
    const pki_template_t *t, pki_result_t *res);
static pki_status_t pki_ca_read_certs(const char *what, const char *file,
    STACK_OF(X509) **out, pki_result_t *res);
static const char *pki_ca_time_error(X509 *x, time_t now);
static pki_status_t pki_ca_check_chain(pki_ca_t *ca, time_t now,
    pki_result_t *res);
static pki_status_t pki_ca_check_above(pki_ca_t *ca, time_t now,
    pki_result_t *res);
static pki_status_t pki_ca_check_path(const char *what, const char *file,
    STACK_OF(X509) *sk, int from, X509 *below, time_t now,
    pki_result_t *res);
static pki_status_t pki_ca_check_alt(pki_ca_t *ca, int n, time_t now,
    pki_result_t *res);
static int pki_set_str(char **dst, const char *src);


int
pki_name_valid(const char *s, size_t len)
{
    size_t  i;
    char    c;

    if (s == NULL || len == 0 || len > PKI_NAME_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = s[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.')
        {
            continue;
        }

        return 0;
    }

    return 1;
}


pki_ca_t *
pki_ca_new(const char *name)
{
    pki_ca_t  *ca;

    if (name == NULL || name[0] == '\0' || strlen(name) >= 64) {
        return NULL;
    }

    ca = calloc(1, sizeof(pki_ca_t));
    if (ca == NULL) {
        return NULL;
    }

    ca->name = strdup(name);
    if (ca->name == NULL) {
        free(ca);
        return NULL;
    }

    ca->pathlen = -1;

    return ca;
}


void
pki_ca_free(pki_ca_t *ca)
{
    int  i;

    if (ca == NULL) {
        return;
    }

    for (i = 0; i < ca->ntmpl_names; i++) {
        free(ca->tmpl_names[i]);
    }

    for (i = 0; i < ca->nalt; i++) {
        free(ca->alt_files[i]);
        sk_X509_pop_free(ca->alt[i], X509_free);
    }

    for (i = 0; i < ca->nsame; i++) {
        free(ca->same[i]);
    }

    X509_free(ca->cert);
    sk_X509_pop_free(ca->chain, X509_free);
    free(ca->name);
    free(ca->cert_file);
    free(ca->chain_file);
    free(ca->key_ref);
    free(ca->crl_url);
    free(ca->ocsp_url);
    free(ca->ca_issuers_url);
    free(ca);
}


const char *
pki_ca_name(const pki_ca_t *ca)
{
    return ca->name;
}


static int
pki_set_str(char **dst, const char *src)
{
    char  *s;

    s = strdup(src);
    if (s == NULL) {
        return 0;
    }

    free(*dst);
    *dst = s;

    return 1;
}


/*
 * A URL the CA writes into what it signs: crl_url (CRL distribution
 * point), ocsp_url and ca_issuers_url (authority information access).
 * Plain http:// only (ldap:// too for a CRL or issuer certificate, RFC
 * 5280 4.2.1.13, 4.2.2.1; OCSP has no LDAP transport, RFC 6960 A.1): a
 * relying party fetches them while it validates a certificate, and an
 * https:// one makes it validate the TLS server's certificate first,
 * whose revocation check may need the same fetch (a loop, or a failure
 * that soft-fail clients take for "not revoked"); the objects are signed
 * and need no TLS.  The CA/Browser Forum Baseline Requirements (7.1.2)
 * want HTTP URLs there.  NULL when s is taken, else why not.
 */
static const char *
pki_url_error(const char *s, int ldap)
{
    size_t  i, len;

    len = strlen(s);

    if (strncmp(s, "https://", 8) == 0) {
        return "must be an http:// URL, not https:// (fetched while a "
               "certificate is validated, https may loop; CA/B BR 7.1.2)";
    }

    if (strncmp(s, "http://", 7) != 0
        && (!ldap || strncmp(s, "ldap://", 7) != 0))
    {
        return ldap ? "must be an http:// (or ldap://) URL"
                    : "must be an http:// URL (RFC 6960 A.1)";
    }

    if (len < 8 || len > 1024) {
        return "is empty or longer than 1024 characters";
    }

    for (i = 0; i < len; i++) {
        if ((unsigned char) s[i] <= 0x20 || (unsigned char) s[i] >= 0x7f) {
            return "has a space, a control character or a non-ASCII "
                   "character";
        }
    }

    return NULL;
}


pki_status_t
pki_ca_set(pki_ca_t *ca, const char *name, int argc, const char *const *argv,
    pki_result_t *res)
{
    int          i, j;
    long         v;
    char       **field;
    const char  *err;

    if (ca == NULL || name == NULL || argc < 0 || (argc > 0 && argv == NULL)) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    if (ca->finished) {
        return pki_fail(res, PKI_INTERNAL, "CA \"%s\" is already finished",
                        ca->name);
    }

    for (i = 0; i < argc; i++) {
        if (argv[i] == NULL || argv[i][0] == '\0') {
            return pki_fail(res, PKI_MALFORMED, "empty argument in \"%.64s\"",
                            name);
        }
    }

    if (strcmp(name, "templates") == 0) {
        if (argc < 1) {
            return pki_fail(res, PKI_MALFORMED, "invalid number of arguments "
                            "in \"templates\"");
        }

        for (i = 0; i < argc; i++) {
            for (j = 0; j < ca->ntmpl_names; j++) {
                if (strcmp(ca->tmpl_names[j], argv[i]) == 0) {
                    return pki_fail(res, PKI_MALFORMED, "duplicate template "
                                    "\"%.64s\"", argv[i]);
                }
            }

            if (ca->ntmpl_names == PKI_MAX_TEMPLATES) {
                return pki_fail(res, PKI_MALFORMED, "too many templates");
            }

            ca->tmpl_names[ca->ntmpl_names] = strdup(argv[i]);
            if (ca->tmpl_names[ca->ntmpl_names] == NULL) {
                return pki_fail(res, PKI_INTERNAL, "out of memory");
            }
            ca->ntmpl_names++;
        }

        return PKI_OK;
    }

    if (argc != 1) {
        return pki_fail(res, PKI_MALFORMED, "invalid number of arguments in "
                        "\"%.64s\"", name);
    }

    if (strcmp(name, "max_validity") == 0) {
        if (ca->max_validity) {
            return pki_fail(res, PKI_MALFORMED, "\"max_validity\" is "
                            "duplicate");
        }

        if (!pki_int_parse_time(argv[0], &v)) {
            return pki_fail(res, PKI_MALFORMED, "invalid max_validity "
                            "\"%.64s\"", argv[0]);
        }

        ca->max_validity = v;
        return PKI_OK;
    }

    if (strcmp(name, "alternate_chain") == 0) {
        for (i = 0; i < ca->nalt; i++) {
            if (strcmp(ca->alt_files[i], argv[0]) == 0) {
                return pki_fail(res, PKI_MALFORMED, "duplicate "
                                "\"alternate_chain\" \"%.128s\"", argv[0]);
            }
        }

        if (ca->nalt == PKI_CA_MAX_ALT_CHAINS) {
            return pki_fail(res, PKI_MALFORMED, "too many \"alternate_chain\" "
                            "lines (at most %d)", PKI_CA_MAX_ALT_CHAINS);
        }

        ca->alt_files[ca->nalt] = strdup(argv[0]);
        if (ca->alt_files[ca->nalt] == NULL) {
            return pki_fail(res, PKI_INTERNAL, "out of memory");
        }
        ca->nalt++;

        return PKI_OK;
    }

    if (strcmp(name, "certificate") == 0) {
        field = &ca->cert_file;
    } else if (strcmp(name, "chain") == 0) {
        field = &ca->chain_file;
    } else if (strcmp(name, "key") == 0) {
        field = &ca->key_ref;
    } else if (strcmp(name, "crl_url") == 0) {
        field = &ca->crl_url;
    } else if (strcmp(name, "ocsp_url") == 0) {
        field = &ca->ocsp_url;
    } else if (strcmp(name, "ca_issuers_url") == 0) {
        field = &ca->ca_issuers_url;
    } else {
        return pki_fail(res, PKI_MALFORMED, "unknown CA directive \"%.64s\"",
                        name);
    }

    if (*field) {
        return pki_fail(res, PKI_MALFORMED, "\"%s\" is duplicate", name);
    }

    if (field == &ca->crl_url || field == &ca->ocsp_url
        || field == &ca->ca_issuers_url)
    {
        err = pki_url_error(argv[0], field != &ca->ocsp_url);
        if (err != NULL) {
            return pki_fail(res, PKI_MALFORMED, "invalid URL \"%.128s\" in "
                            "\"%s\": it %s", argv[0], name, err);
        }
    }

    if (!pki_set_str(field, argv[0])) {
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    return PKI_OK;
}


const char *
pki_ca_key_ref(const pki_ca_t *ca)
{
    return ca->key_ref;
}


pki_status_t
pki_ca_set_key(pki_ca_t *ca, pki_key_t *key, pki_result_t *res)
{
    if (key == NULL) {
        return pki_fail(res, PKI_INTERNAL, "no key for CA \"%s\"", ca->name);
    }

    ca->key = key;

    return PKI_OK;
}


int
pki_ca_template_count(const pki_ca_t *ca)
{
    return ca->ntmpl_names;
}


const char *
pki_ca_template_name(const pki_ca_t *ca, int i)
{
    if (i < 0 || i >= ca->ntmpl_names) {
        return NULL;
    }

    return ca->tmpl_names[i];
}


pki_status_t
pki_ca_add_template(pki_ca_t *ca, pki_template_t *t, pki_result_t *res)
{
    int  i;

    if (t == NULL) {
        return pki_fail(res, PKI_INTERNAL, "no template");
    }

    for (i = 0; i < ca->ntmpls; i++) {
        if (ca->tmpls[i] == t
            || strcmp(pki_template_name(ca->tmpls[i]), t->name) == 0)
        {
            return pki_fail(res, PKI_MALFORMED, "template \"%s\" is added "
                            "twice to CA \"%s\"", t->name, ca->name);
        }
    }

    if (ca->ntmpls == PKI_MAX_TEMPLATES) {
        return pki_fail(res, PKI_MALFORMED, "too many templates");
    }

    if (ca->finished
        && (pki_ca_check_template(ca, t, res) != PKI_OK
            || pki_ca_check_mix(ca, t, res) != PKI_OK))
    {
        return res ? res->status : PKI_MALFORMED;
    }

    ca->tmpls[ca->ntmpls++] = t;

    return PKI_OK;
}


time_t
pki_int_asn1_time(const ASN1_TIME *t)
{
    struct tm  tm;

    memset(&tm, 0, sizeof(tm));

    if (t == NULL || !ASN1_TIME_to_tm(t, &tm)) {
        return (time_t) -1;
    }

    return timegm(&tm);
}


/* The extendedKeyUsage of certificate x (on a path of CA ca) allows every
 * purpose of template t, where it has one: verifiers that nest purposes
 * (OpenSSL with a purpose set, Go, Windows) refuse a certificate for a
 * purpose that a CA above it may not serve.  OCSPSigning is left out
 * (below).  what names x in the refusal. */
static pki_status_t
pki_ca_cert_eku(const pki_ca_t *ca, X509 *x, const char *what,
    const pki_template_t *t, pki_result_t *res)
{
    int                  i, j, crit, found;
    char                 name[80];
    ASN1_OBJECT         *o;
    EXTENDED_KEY_USAGE  *eku;

    eku = X509_get_ext_d2i(x, NID_ext_key_usage, &crit, NULL);
    if (eku == NULL) {
        ERR_clear_error();
        return PKI_OK;
    }

    for (i = 0; i < sk_ASN1_OBJECT_num(eku); i++) {
        o = sk_ASN1_OBJECT_value(eku, i);
        if (OBJ_obj2nid(o) == NID_anyExtendedKeyUsage) {
            sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
            return PKI_OK;
        }
    }

    for (i = 0; i < sk_ASN1_OBJECT_num(t->eku); i++) {
        o = sk_ASN1_OBJECT_value(t->eku, i);

        /* a delegated OCSP responder is judged by the CA that names it,
         * not by nesting (a TLS CA's may not list OCSPSigning) */
        if (OBJ_obj2nid(o) == NID_OCSP_sign) {
            continue;
        }

        for (found = 0, j = 0; !found && j < sk_ASN1_OBJECT_num(eku); j++) {
            found = OBJ_cmp(o, sk_ASN1_OBJECT_value(eku, j)) == 0;
        }

        if (!found) {
            sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
            OBJ_obj2txt(name, sizeof(name), o, 0);
            return pki_fail(res, PKI_MALFORMED, "template \"%s\" issues "
                            "certificates for %s, which the "
                            "extendedKeyUsage of %s\"%s\" does not allow",
                            t->name, name, what, ca->name);
        }
    }

    sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);

    return PKI_OK;
}


/* 1 when issuer issued x: the names and key identifiers match
 * (X509_check_issued) and its key verifies x's signature. */
static int
pki_ca_signed(X509 *issuer, X509 *x)
{
    int        rv;
    EVP_PKEY  *pub;

    pub = X509_get0_pubkey(issuer);
    rv = pub != NULL && X509_check_issued(issuer, x) == X509_V_OK
         && X509_verify(x, pub) == 1;
    ERR_clear_error();

    return rv;
}


/* A template's extendedKeyUsage within that of every certificate on the
 * CA's paths that has one (pki_ca_cert_eku): the CA certificate, the
 * certificates of the "chain" file above it (each that issued it or one
 * such, pki_ca_signed: an old root beside them is no part of its paths),
 * and those of each
 * alternate chain.  A CA certificate without an extendedKeyUsage under
 * an intermediate or root restricted to serverAuth would otherwise sign
 * clientAuth certificates that no nesting verifier accepts. */
static pki_status_t
pki_ca_check_eku(const pki_ca_t *ca, const pki_template_t *t,
    pki_result_t *res)
{
    int           i, j, n, more;
    char          what[256];
    X509         *x;
    pki_status_t  rc;
    signed char   above[PKI_CA_CHAIN_MAX];

    rc = pki_ca_cert_eku(ca, ca->cert, "CA ", t, res);
    if (rc != PKI_OK || t->eku == NULL) {
        return rc;
    }

    n = sk_X509_num(ca->chain);
    n = n < 0 ? 0 : n > PKI_CA_CHAIN_MAX ? PKI_CA_CHAIN_MAX : n;
    memset(above, 0, sizeof(above));

    /* each pass takes the issuers of what the last one took */
    do {
        for (more = 0, i = 0; i < n; i++) {
            x = sk_X509_value(ca->chain, i);
            if (above[i]) {
                continue;
            }

            above[i] = pki_ca_signed(x, ca->cert);

            for (j = 0; !above[i] && j < n; j++) {
                above[i] = above[j]
                           && pki_ca_signed(x, sk_X509_value(ca->chain, j));
            }

            more |= above[i];
        }
    } while (more);

    ERR_clear_error();

    for (i = 0; i < n; i++) {
        if (!above[i]) {
            continue;
        }

        snprintf(what, sizeof(what), "certificate %d of CA chain "
                 "\"%.128s\" above CA ", i + 1, ca->chain_file);
        rc = pki_ca_cert_eku(ca, sk_X509_value(ca->chain, i), what, t, res);
        if (rc != PKI_OK) {
            return rc;
        }
    }

    for (j = 0; j < ca->nalt; j++) {
        for (i = 0; i < sk_X509_num(ca->alt[j]); i++) {
            snprintf(what, sizeof(what), "certificate %d of alternate chain "
                     "\"%.128s\" of CA ", i + 1, ca->alt_files[j]);
            rc = pki_ca_cert_eku(ca, sk_X509_value(ca->alt[j], i), what, t,
                                 res);
            if (rc != PKI_OK) {
                return rc;
            }
        }
    }

    return PKI_OK;
}


/* 1 when the CA certificate's subject is a Matter one: a Matter attribute
 * (VID, PID, node, fabric, RCAC or ICAC id, CAT: OIDs under
 * 1.3.6.1.4.1.37244), or a CN with the legacy "Mvid:" / "Mpid:" that
 * commissioners still read as the VID/PID of a PAI. */
static int
pki_ca_is_matter(pki_ca_t *ca)
{
    return ca->cert != NULL
           && pki_int_matter_name(X509_get_subject_name(ca->cert));
}


static pki_status_t
pki_ca_check_template(pki_ca_t *ca, const pki_template_t *t,
    pki_result_t *res)
{
    long  validity;

    validity = pki_template_validity(t);

    if (!t->finished) {
        return pki_fail(res, PKI_INTERNAL, "template \"%s\" is not finished",
                        t->name);
    }

    if (ca->max_validity && validity > ca->max_validity) {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\" validity %lds "
                        "exceeds the max_validity %lds of CA \"%s\"",
                        t->name, validity, ca->max_validity, ca->name);
    }

    if (pki_ca_check_pathlen(ca, t, res) != PKI_OK) {
        return res ? res->status : PKI_MALFORMED;
    }

    if (t->matter) {
        return pki_int_matter_ca_template(t, ca, res);
    }

    /* A Matter CA (PAA, PAI, RCAC, ICAC) issues through Matter templates
     * only: an ordinary one would sign what the Matter profile checks
     * never saw, such as a DAC for any PID (a CN "Widget Mvid:FFF1
     * Mpid:9999" copied verifies as attestation under a PAI) */
    if (pki_ca_is_matter(ca)) {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\" is not a "
                        "Matter template, but CA \"%s\" is a Matter CA (its "
                        "subject has Matter attributes, OID "
                        "1.3.6.1.4.1.37244.*, or a CN with Mvid: or "
                        "Mpid:): it issues through Matter templates only",
                        t->name, ca->name);
    }

    /* at pki_ca_finish, once every chain is read */
    return ca->finished ? pki_ca_check_eku(ca, t, res) : PKI_OK;
}


/* A template of CA certificates (t->ca) leaves room under the CA for the
 * certificate it signs (one more CA) and the CAs it allows under that one
 * (its pathlen): ca->pathlen, the CA's own pathLenConstraint or less when
 * a path above it allows less (pki_ca_limit_pathlen). */
static pki_status_t
pki_ca_check_pathlen(pki_ca_t *ca, const pki_template_t *t,
    pki_result_t *res)
{
    char  len[32];

    if (!t->ca || ca->pathlen < 0
        || (t->pathlen >= 0 && t->pathlen < ca->pathlen))
    {
        return PKI_OK;
    }

    if (t->pathlen < 0) {
        snprintf(len, sizeof(len), "an unlimited path length");
    } else {
        snprintf(len, sizeof(len), "path length %d", t->pathlen);
    }

    if (ca->pathlen_from != NULL) {
        return pki_fail(res, PKI_MALFORMED, "template \"%s\" issues CAs "
                        "with %s but CA \"%s\" may have only %ld CA "
                        "certificate%s under it: a pathLenConstraint in its "
                        "chain \"%.128s\", less the CA certificates between, "
                        "allows no more", t->name, len, ca->name,
                        ca->pathlen, ca->pathlen == 1 ? "" : "s",
                        ca->pathlen_from);
    }

    return pki_fail(res, PKI_MALFORMED, "template \"%s\" issues CAs with "
                    "%s but CA \"%s\" has pathlen:%ld", t->name, len,
                    ca->name, ca->pathlen);
}


/* The pathLenConstraint of x, -1 when it has none. */
static long
pki_ca_cert_pathlen(X509 *x)
{
    long                pl;
    BASIC_CONSTRAINTS  *bc;

    bc = X509_get_ext_d2i(x, NID_basic_constraints, NULL, NULL);
    pl = bc != NULL && bc->ca && bc->pathlen != NULL
         ? ASN1_INTEGER_get(bc->pathlen) : -1;
    BASIC_CONSTRAINTS_free(bc);
    ERR_clear_error();

    return pl < 0 ? -1 : pl;
}


/*
 * How many CA certificates may follow x (a certificate of the CA) on the
 * path up[0..n-1] above it (up[0] issued x), RFC 5280 6.1.4 (l), (m):
 * x's own pathLenConstraint, and that of each certificate above, less the
 * CA certificates between them (x included; self-issued ones do not
 * count); -1 unlimited, 0 when a path leaves no room at all.
 */
static long
pki_ca_path_room(X509 *x, X509 *const *up, int n)
{
    int   j, between;
    long  room, pl;

    room = pki_ca_cert_pathlen(x);
    between = (X509_get_extension_flags(x) & EXFLAG_SI) ? 0 : 1;

    for (j = 0; j < n; j++) {
        pl = pki_ca_cert_pathlen(up[j]);

        if (pl >= 0 && (room < 0 || pl - between < room)) {
            room = pl - between < 0 ? 0 : pl - between;
        }

        if (!(X509_get_extension_flags(up[j]) & EXFLAG_SI)) {
            between++;
        }
    }

    return room;
}


/* a and b stand for the same CA: one subject, one key (a certificate of
 * the CA and a cross certificate of it, or two versions of one). */
static int
pki_ca_same_ca(X509 *a, X509 *b)
{
    EVP_PKEY  *ka, *kb;

    ka = X509_get0_pubkey(a);
    kb = X509_get0_pubkey(b);

    return X509_NAME_cmp(X509_get_subject_name(a),
                         X509_get_subject_name(b)) == 0
           && ka != NULL && kb != NULL && EVP_PKEY_eq(ka, kb) == 1;
}


/* The paths through a chain file (pki_ca_chain_room).  Node -1 is the CA
 * certificate, node i the chain's certificate i; what is known of each
 * signature is kept, so that no pair is verified twice. */
typedef struct {
    X509            *cert;
    STACK_OF(X509)  *chain;
    int              k;
    int              base;
    int              paths;
    long             room;
    int              up[PKI_CA_CHAIN_MAX];
    signed char      by[PKI_CA_CHAIN_MAX + 1][PKI_CA_CHAIN_MAX + 1];
} pki_ca_walk_t;


static X509 *
pki_ca_walk_node(pki_ca_walk_t *w, int i)
{
    return i < 0 ? w->cert : sk_X509_value(w->chain, i);
}


/* Node x issued node cur (x == cur: cur is self-signed): the names match
 * and x's key verifies cur's signature. */
static int
pki_ca_walk_issued(pki_ca_walk_t *w, int cur, int x)
{
    X509         *c, *i;
    EVP_PKEY     *k;
    signed char  *m;

    m = &w->by[cur + 1][x + 1];

    if (*m < 0) {
        c = pki_ca_walk_node(w, cur);
        i = pki_ca_walk_node(w, x);
        k = X509_get0_pubkey(i);
        *m = X509_check_issued(i, c) == X509_V_OK && k != NULL
             && X509_verify(c, k) == 1;
        ERR_clear_error();
    }

    return *m;
}


/*
 * The least room (pki_ca_path_room) over every path from node w->base
 * up through the chain: w->up[0..n-1] is the path so far.  A certificate
 * may have more than one issuer there (two versions of an intermediate,
 * cross certificates); each starts a path of its own, up to a self-signed
 * root or a certificate whose issuer is not in the file.  No CA comes
 * twice on a path; w->paths stops at PKI_CA_PATHS_MAX.
 */
static void
pki_ca_chain_room(pki_ca_walk_t *w, int n)
{
    int    i, j, cur, more;
    long   r;
    X509  *x, *up[PKI_CA_CHAIN_MAX];

    cur = n > 0 ? w->up[n - 1] : w->base;
    more = 0;

    if (n < PKI_CA_CHAIN_MAX && !pki_ca_walk_issued(w, cur, cur)) {
        for (i = 0; i < w->k && w->paths < PKI_CA_PATHS_MAX; i++) {
            x = sk_X509_value(w->chain, i);

            if (pki_ca_same_ca(x, pki_ca_walk_node(w, w->base))) {
                continue;
            }
            for (j = 0; j < n && !pki_ca_same_ca(x,
                 sk_X509_value(w->chain, w->up[j])); j++) {
                /* void */
            }
            if (j < n || !pki_ca_walk_issued(w, cur, i)) {
                continue;
            }

            more = 1;
            w->up[n] = i;
            pki_ca_chain_room(w, n + 1);
        }
    }

    if (more || w->paths >= PKI_CA_PATHS_MAX) {
        return;
    }

    w->paths++;

    for (j = 0; j < n; j++) {
        up[j] = sk_X509_value(w->chain, w->up[j]);
    }

    r = pki_ca_path_room(pki_ca_walk_node(w, w->base), up, n);
    if (r >= 0 && (w->room < 0 || r < w->room)) {
        w->room = r;
    }
}


/* Lowers ca->pathlen to what each of its paths allows: every path of the
 * "chain" file, walked from the CA certificate issuer by issuer (it may
 * hold them in any order, and more than one issuer of a certificate), and
 * from each cross certificate of the CA in it; and each alternate chain,
 * whose first certificate stands for the CA's.  A CA certificate under
 * two hierarchies issues sub-CAs that both must accept. */
static void
pki_ca_limit_pathlen(pki_ca_t *ca)
{
    int             i, j, n;
    long            room;
    X509           *x, *up[PKI_CA_CHAIN_MAX];
    pki_ca_walk_t   w;

    ca->pathlen = pki_ca_cert_pathlen(ca->cert);
    ca->pathlen_from = NULL;

    memset(w.by, -1, sizeof(w.by));
    w.cert = ca->cert;
    w.chain = ca->chain;
    w.k = sk_X509_num(ca->chain);
    w.k = w.k < 0 ? 0 : w.k > PKI_CA_CHAIN_MAX ? PKI_CA_CHAIN_MAX : w.k;
    w.paths = 0;
    w.room = -1;
    w.base = -1;
    pki_ca_chain_room(&w, 0);

    for (i = 0; i < w.k; i++) {
        x = sk_X509_value(ca->chain, i);
        if (X509_cmp(x, ca->cert) != 0 && pki_ca_same_ca(x, ca->cert)) {
            w.base = i;
            pki_ca_chain_room(&w, 0);
        }
    }

    if (w.room >= 0 && (ca->pathlen < 0 || w.room < ca->pathlen)) {
        ca->pathlen = w.room;
        ca->pathlen_from = ca->chain_file;
    }

    for (i = 0; i < ca->nalt; i++) {
        n = sk_X509_num(ca->alt[i]) - 1;
        if (n < 0) {
            continue;
        }

        for (j = 0; j < n && j < PKI_CA_CHAIN_MAX; j++) {
            up[j] = sk_X509_value(ca->alt[i], j + 1);
        }

        room = pki_ca_path_room(sk_X509_value(ca->alt[i], 0), up, j);
        if (room >= 0 && (ca->pathlen < 0 || room < ca->pathlen)) {
            ca->pathlen = room;
            ca->pathlen_from = ca->alt_files[i];
        }
    }
}


/* A CA that has Matter templates has no other (t: one more, or NULL):
 * a PAA without a VID is a Matter CA by nothing its subject says, yet an
 * ordinary template beside its PAI template would sign with the key that
 * attestation chains trust what no Matter profile check saw. */
static pki_status_t
pki_ca_check_mix(pki_ca_t *ca, const pki_template_t *t, pki_result_t *res)
{
    int                    i;
    const pki_template_t  *m, *o, *x;

    m = NULL;
    o = NULL;

    for (i = 0; i <= ca->ntmpls; i++) {
        x = i < ca->ntmpls ? ca->tmpls[i] : t;
        if (x == NULL) {
            continue;
        }
        if (x->matter) {
            m = m ? m : x;
        } else {
            o = o ? o : x;
        }
    }

    if (m == NULL || o == NULL) {
        return PKI_OK;
    }

    return pki_fail(res, PKI_MALFORMED, "CA \"%s\" has the Matter template "
                    "\"%s\" and the non-Matter template \"%s\": a CA "
                    "that issues Matter certificates issues through Matter "
                    "templates only (use another CA for the other)",
                    ca->name, m->name, o->name);
}


/* The PEM certificates of file (1 to PKI_CA_CHAIN_MAX) into a new *out;
 * what names the file in errors. */
static pki_status_t
pki_ca_read_certs(const char *what, const char *file, STACK_OF(X509) **out,
    pki_result_t *res)
{
    BIO             *bio;
    X509            *x;
    pki_status_t     rc;
    STACK_OF(X509)  *sk;

    *out = NULL;
    ERR_clear_error();

    sk = sk_X509_new_null();
    if (sk == NULL) {
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    bio = BIO_new_file(file, "r");
    if (bio == NULL) {
        rc = pki_fail(res, PKI_MALFORMED, "cannot open %s \"%.128s\"", what,
                      file);
        goto failed;
    }

    for ( ;; ) {
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x == NULL) {
            break;
        }

        if (sk_X509_num(sk) >= PKI_CA_CHAIN_MAX || !sk_X509_push(sk, x)) {
            X509_free(x);
            BIO_free(bio);
            rc = pki_fail(res, PKI_MALFORMED, "too many certificates in "
                          "\"%.128s\" (at most %d)", file, PKI_CA_CHAIN_MAX);
            goto failed;
        }
    }

    BIO_free(bio);

    if (ERR_GET_REASON(ERR_peek_last_error()) == PEM_R_NO_START_LINE
        && sk_X509_num(sk) > 0)
    {
        ERR_clear_error();
    }

    if (ERR_peek_error() != 0 || sk_X509_num(sk) == 0) {
        rc = pki_fail(res, PKI_MALFORMED, "cannot read PEM certificates "
                      "from \"%.128s\"", file);
        goto failed;
    }

    *out = sk;

    return PKI_OK;

failed:

    sk_X509_pop_free(sk, X509_free);

    return rc;
}


/* 1 when a and b hold the same certificates in the same order. */
static int
pki_ca_same_certs(STACK_OF(X509) *a, STACK_OF(X509) *b)
{
    int  i;

    if (a == NULL || b == NULL || sk_X509_num(a) != sk_X509_num(b)) {
        return 0;
    }

    for (i = 0; i < sk_X509_num(a); i++) {
        if (X509_cmp(sk_X509_value(a, i), sk_X509_value(b, i)) != 0) {
            return 0;
        }
    }

    return 1;
}


/* NULL when x is valid at now, else how it is not.  A notBefore up to 5
 * minutes ahead is taken: a certificate made on a host whose clock runs a
 * little fast, installed at once (what the CA issues never starts before
 * its issuer's notBefore). */
static const char *
pki_ca_time_error(X509 *x, time_t now)
{
    if (pki_int_asn1_time(X509_get0_notAfter(x)) <= now) {
        return "has expired";
    }

    if (pki_int_asn1_time(X509_get0_notBefore(x)) > now + 300) {
        return "is not valid yet (notBefore in the future)";
    }

    return NULL;
}


/*
 * The certificates of an alternate chain file, loaded in sk, from index
 * from on, as a verifier meets them above a leaf of the CA: each issued
 * the one before it (its name, key identifier and keyUsage as
 * X509_check_issued() takes them, and the signature), the first one below
 * when below is not NULL; each is a CA certificate (a v1 self-signed root
 * on top too), the first valid at now, each whose pathLenConstraint,
 * where it has one, allows the CA certificates under it in this path
 * (below included; self-issued ones do not count, RFC 5280 6.1.4).
 * Certificates are numbered from 1 in the file's order.
 */
static pki_status_t
pki_ca_check_path(const char *what, const char *file, STACK_OF(X509) *sk,
    int from, X509 *below, time_t now, pki_result_t *res)
{
    int                 i, rv, ca, under;
    long                pl;
    X509               *x, *up;
    EVP_PKEY           *pub;
    const char         *err;
    BASIC_CONSTRAINTS  *bc;

    under = 0;
    x = below;

    for (i = from; i < sk_X509_num(sk); x = up, i++) {
        up = sk_X509_value(sk, i);

        if (x != NULL) {
            rv = X509_check_issued(up, x);
            pub = X509_get0_pubkey(up);

            if (rv == X509_V_OK && (pub == NULL || X509_verify(x, pub) != 1))
            {
                rv = X509_V_ERR_CERT_SIGNATURE_FAILURE;
            }

            ERR_clear_error();

            if (rv != X509_V_OK && x == below) {
                return pki_fail(res, PKI_MALFORMED, "certificate %d of %s "
                                "\"%.128s\" did not issue the CA "
                                "certificate (%s)", i + 1, what, file,
                                X509_verify_cert_error_string(rv));
            }

            if (rv != X509_V_OK) {
                return pki_fail(res, PKI_MALFORMED, "in %s \"%.128s\", "
                                "certificate %d did not issue certificate "
                                "%d (%s)", what, file, i + 1, i,
                                X509_verify_cert_error_string(rv));
            }

            if (!(X509_get_extension_flags(x) & EXFLAG_SI)) {
                under++;
            }
        }

        bc = X509_get_ext_d2i(up, NID_basic_constraints, NULL, NULL);
        ca = bc != NULL && bc->ca;
        pl = ca && bc->pathlen != NULL ? ASN1_INTEGER_get(bc->pathlen) : -1;
        rv = ca && bc->pathlen != NULL && pl < 0;
        BASIC_CONSTRAINTS_free(bc);
        ERR_clear_error();

        /* a v1 self-signed root on top counts, as for OpenSSL */
        if (!ca && i == sk_X509_num(sk) - 1
            && (X509_get_extension_flags(up) & EXFLAG_SS)
            && X509_check_ca(up) != 0)
        {
            ca = 1;
        }
        ERR_clear_error();

        if (!ca) {
            return pki_fail(res, PKI_MALFORMED, "certificate %d of %s "
                            "\"%.128s\" is not a CA certificate (no "
                            "basicConstraints CA:TRUE)", i + 1, what, file);
        }

        if (rv) {
            return pki_fail(res, PKI_MALFORMED, "certificate %d of %s "
                            "\"%.128s\" has an invalid path length", i + 1,
                            what, file);
        }

        /* the first only: an expired certificate above it (an old root
         * kept for old clients) must not stop the next start */
        err = i == from ? pki_ca_time_error(up, now) : NULL;
        if (err != NULL) {
            return pki_fail(res, PKI_MALFORMED, "certificate %d of %s "
                            "\"%.128s\" %s", i + 1, what, file, err);
        }

        if (pl >= 0 && under > pl) {
            return pki_fail(res, PKI_MALFORMED, "certificate %d of %s "
                            "\"%.128s\" has pathlen:%ld, too short for the "
                            "CA certificates under it (%d)", i + 1, what,
                            file, pl, under);
        }
    }

    return PKI_OK;
}


/*
 * The "chain" file, which EST and SCEP serve as a set and ACME in its
 * order, leaving out self-signed certificates and copies of the CA's: in
 * any order, with more trust anchors than one (a root rollover) or an old
 * copy of a root, as relying parties take it.  What it must hold is the
 * CA certificate's issuer, when it holds anything but copies of the CA
 * certificate: a chain file left from another CA or an older hierarchy
 * gives every client a chain that does not verify.  That issuer must be
 * a CA (a v1 self-signed root counts, as for OpenSSL), valid now, and
 * allow a CA certificate under it (pathLenConstraint).  The rest of the
 * file is not judged: an expired extra root would otherwise stop the next
 * start of the whole server.  A self-signed CA (a root that issues) needs
 * no issuer: its file may hold cross certificates of it (same subject and
 * key, issued by another root) and the path above them, which are not
 * judged either (pki_ca_check_root_chain); a file with certificates of
 * neither kind, nor any root, is another CA's.
 */
static pki_status_t
pki_ca_check_root_chain(pki_ca_t *ca, pki_result_t *res)
{
    int        i, n, cross, foreign;
    X509      *x;
    EVP_PKEY  *pub;

    cross = 0;
    foreign = 0;
    n = sk_X509_num(ca->chain);

    for (i = 0; i < n; i++) {
        x = sk_X509_value(ca->chain, i);

        if (X509_cmp(x, ca->cert) == 0
            || X509_check_issued(x, x) == X509_V_OK)
        {
            continue;                       /* a copy, another root */
        }

        pub = X509_get0_pubkey(x);
        if (X509_NAME_cmp(X509_get_subject_name(x),
                          X509_get_subject_name(ca->cert)) == 0
            && pub != NULL
            && EVP_PKEY_eq(pub, X509_get0_pubkey(ca->cert)) == 1)
        {
            cross++;
        } else if (foreign == 0) {
            foreign = i + 1;
        }
    }

    ERR_clear_error();

    if (foreign != 0 && cross == 0) {
        return pki_fail(res, PKI_MALFORMED, "CA certificate \"%.128s\" is "
                        "self-signed, and certificate %d of CA chain "
                        "\"%.128s\" is neither a root nor a cross "
                        "certificate of it (same subject and key): a chain "
                        "file of another CA?", ca->cert_file, foreign,
                        ca->chain_file);
    }

    return PKI_OK;
}


/* Why up, a certificate that issued the CA certificate, is no issuer a
 * verifier can take now, or NULL: no CA, not valid at now, or a
 * pathLenConstraint of 0 above a CA certificate that is not self-issued. */
static const char *
pki_ca_issuer_error(pki_ca_t *ca, X509 *up, time_t now)
{
    long                pl;
    const char         *err;
    BASIC_CONSTRAINTS  *bc;

    if (X509_check_ca(up) == 0) {
        ERR_clear_error();
        return "is not a CA certificate";
    }

    err = pki_ca_time_error(up, now);
    if (err != NULL) {
        return err;
    }

    bc = X509_get_ext_d2i(up, NID_basic_constraints, NULL, NULL);
    pl = bc != NULL && bc->ca && bc->pathlen != NULL
         ? ASN1_INTEGER_get(bc->pathlen) : -1;
    BASIC_CONSTRAINTS_free(bc);
    ERR_clear_error();

    if (pl == 0 && !(X509_get_extension_flags(ca->cert) & EXFLAG_SI)) {
        return "has pathlen:0: no CA certificate may follow it";
    }

    return NULL;
}


/* The CA certificate's issuer in the "chain" file: each certificate of it
 * that issued the CA certificate is judged (pki_ca_issuer_error), and one
 * that passes is enough.  A root re-issued with its key for a longer life
 * (the old one expired, kept for old clients) is a second issuer, which
 * the file may hold before or after the new one. */
static pki_status_t
pki_ca_check_chain(pki_ca_t *ca, time_t now, pki_result_t *res)
{
    int          i, n, others, rv, at;
    X509        *x;
    EVP_PKEY    *pub;
    const char  *err, *first;
    char         name[256];

    pub = X509_get0_pubkey(ca->cert);
    rv = X509_check_issued(ca->cert, ca->cert) == X509_V_OK && pub != NULL
         && X509_verify(ca->cert, pub) == 1;
    ERR_clear_error();

    if (rv) {
        return pki_ca_check_root_chain(ca, res);
    }

    at = 0;
    first = NULL;
    others = 0;
    n = sk_X509_num(ca->chain);

    for (i = 0; i < n; i++) {
        x = sk_X509_value(ca->chain, i);

        if (X509_cmp(x, ca->cert) == 0) {
            continue;
        }

        others++;
        rv = X509_check_issued(x, ca->cert);
        pub = X509_get0_pubkey(x);
        rv = rv == X509_V_OK && pub != NULL
             && X509_verify(ca->cert, pub) == 1;
        ERR_clear_error();

        if (!rv) {
            continue;
        }

        err = pki_ca_issuer_error(ca, x, now);
        if (err == NULL) {
            return PKI_OK;
        }

        if (first == NULL) {
            first = err;
            at = i + 1;
        }
    }

    if (others == 0) {
        return PKI_OK;
    }

    if (first == NULL) {
        if (X509_NAME_oneline(X509_get_issuer_name(ca->cert), name,
                              sizeof(name)) == NULL)
        {
            name[0] = '\0';
        }
        ERR_clear_error();

        return pki_fail(res, PKI_MALFORMED, "no certificate of CA chain "
                        "\"%.128s\" issued the CA certificate \"%.128s\" "
                        "(its issuer %.200s is not in it: a chain file of "
                        "another CA?)", ca->chain_file, ca->cert_file, name);
    }

    return pki_fail(res, PKI_MALFORMED, "certificate %d of CA chain "
                    "\"%.128s\", the CA certificate's issuer, %s", at,
                    ca->chain_file, first);
}


/* The paths through the "chain" file walked by pki_ca_path_end: at most
 * this many certificates above the CA certificate (a deeper hierarchy
 * counts its first ones only). */
#define PKI_CA_END_DEPTH  8



/* 1 when y, another certificate of the chain file, is a CA certificate
 * that issued x and whose key verifies x's signature (the error queue
 * cleared otherwise). */
static int
pki_ca_chain_issues(X509 *y, X509 *x)
{
    EVP_PKEY  *pub;

    if (X509_cmp(x, y) == 0 || X509_check_issued(y, x) != X509_V_OK
        || X509_check_ca(y) == 0 || (pub = X509_get0_pubkey(y)) == NULL
        || X509_verify(x, pub) != 1)
    {
        ERR_clear_error();
        return 0;
    }

    return 1;
}

/*
 * When the path above certificate x (certificate at of the "chain" file,
 * 0: the CA certificate) through the chain file ends, as a verifier meets
 * it: the earliest notAfter of x and its issuers, along the path that
 * ends last where the file holds several issuers of one certificate (a
 * root re-issued with its key, an intermediate and a cross certificate of
 * it).  A self-signed certificate above the CA certificate is a trust
 * anchor: relying parties take their own copy of it, never the one a
 * server sends (RFC 5280 6.1.1 (d): an input to path validation, not a
 * certificate of it), and a root is extended by re-issuing it with its
 * name and key, which changes nothing here, so its notAfter in the file
 * does not count.  A certificate whose issuer the file does not hold ends
 * the path; one met twice on a path ends it too (cross certificates of
 * each other).  *end_at: the certificate that ends it.  Load time only:
 * signatures are verified.
 */
static time_t
pki_ca_path_end(pki_ca_t *ca, X509 *x, int at, int depth, unsigned seen,
    int *end_at)
{
    int        i, n, up_at;
    X509      *y;
    time_t     end, up, best;
    EVP_PKEY  *pub;

    end = pki_int_asn1_time(X509_get0_notAfter(x));
    *end_at = at;

    /* a self-signed CA certificate (a root that issues) ends with
     * itself: cross certificates of it in the file are other paths.
     * Self-signed as pki_ca_check_chain takes it: a self-issued one
     * (another key: a rollover certificate) is not */
    pub = X509_get0_pubkey(x);

    if (X509_check_issued(x, x) == X509_V_OK && pub != NULL
        && X509_verify(x, pub) == 1)
    {
        ERR_clear_error();

        if (at > 0) {
            *end_at = -1;
            return PKI_TIME_MAX;                /* a trust anchor */
        }

        return end;
    }

    ERR_clear_error();

    if (end == (time_t) -1 || depth >= PKI_CA_END_DEPTH) {
        return end;
    }

    best = (time_t) -1;
    up_at = -1;
    n = sk_X509_num(ca->chain);

    for (i = 0; i < n && i < 32; i++) {
        y = sk_X509_value(ca->chain, i);

        if ((seen & (1u << i)) || !pki_ca_chain_issues(y, x)) {
            continue;
        }

        up = pki_ca_path_end(ca, y, i + 1, depth + 1, seen | (1u << i),
                             &at);
        if (up != (time_t) -1 && (best == (time_t) -1 || up > best)) {
            best = up;
            up_at = at;
        }
    }

    if (best != (time_t) -1 && best < end) {
        end = best;
        *end_at = up_at;
    }

    return end;
}


/*
 * 1 when a path above certificate x (certificate at of the "chain" file,
 * 0: the CA certificate) through the chain file is valid at now, walked
 * as pki_ca_path_end walks it (the same issuers, the same trust anchors,
 * whose copy in the file is not judged, the same depth).  Else *bad_at,
 * *bad_depth and *bad: of the certificates met that are not valid at now,
 * the one highest on its path (an expired old copy of the issuer beside
 * its valid renewal does not hide a certificate above them), and how
 * (pki_ca_time_error).  The CA certificate itself is judged before.
 */
static int
pki_ca_path_now(pki_ca_t *ca, X509 *x, int at, int depth, unsigned seen,
    time_t now, int *bad_at, int *bad_depth, const char **bad)
{
    int          i, n, found;
    X509        *y;
    EVP_PKEY    *pub;
    const char  *err;

    pub = X509_get0_pubkey(x);

    if (X509_check_issued(x, x) == X509_V_OK && pub != NULL
        && X509_verify(x, pub) == 1)
    {
        ERR_clear_error();
        return 1;               /* a trust anchor, or a self-signed CA */
    }

    ERR_clear_error();

    if (at > 0) {
        err = pki_ca_time_error(x, now);

        if (err != NULL) {
            if (*bad == NULL || depth > *bad_depth) {
                *bad = err;
                *bad_at = at;
                *bad_depth = depth;
            }

            return 0;
        }
    }

    if (depth >= PKI_CA_END_DEPTH) {
        return 1;
    }

    found = 0;
    n = sk_X509_num(ca->chain);

    for (i = 0; i < n && i < 32; i++) {
        y = sk_X509_value(ca->chain, i);

        if ((seen & (1u << i)) || !pki_ca_chain_issues(y, x)) {
            continue;
        }

        found = 1;

        if (pki_ca_path_now(ca, y, i + 1, depth + 1, seen | (1u << i), now,
                            bad_at, bad_depth, bad))
        {
            return 1;
        }
    }

    /* no issuer in the file: the path ends here, valid */
    return !found;
}


/*
 * nginx -t, a start, a reload: the whole path above the CA certificate
 * judged as pki_ca_check_chain judges its issuer, so that a CA whose
 * chain ended (or does not start yet) higher up is refused with the
 * certificate named, rather than loaded to sign nothing (pki_ca_live).
 * An end at or before now names the certificate pki_ca_live would name
 * (ca->end_at); else a path valid at now must exist.
 */
static pki_status_t
pki_ca_check_above(pki_ca_t *ca, time_t now, pki_result_t *res)
{
    int          at, depth, exp;
    X509        *x;
    time_t       t;
    const char  *err;
    char         name[256], date[PKI_RFC3339_LEN];

    at = -1;
    depth = 0;
    err = NULL;

    if (ca->end != (time_t) -1 && ca->end <= now && ca->end_at > 0) {
        at = ca->end_at;
        err = "has expired";

    } else if (!pki_ca_path_now(ca, ca->cert, 0, 0, 0, now, &at, &depth,
                                &err))
    {
        /* err set */

    } else {
        return PKI_OK;
    }

    x = at > 0 ? sk_X509_value(ca->chain, at - 1) : NULL;

    if (x == NULL || err == NULL) {
        return PKI_OK;
    }

    if (X509_NAME_oneline(X509_get_subject_name(x), name, sizeof(name))
        == NULL)
    {
        snprintf(name, sizeof(name), "?");
    }

    ERR_clear_error();

    exp = strcmp(err, "has expired") == 0;
    t = pki_int_asn1_time(exp ? X509_get0_notAfter(x)
                              : X509_get0_notBefore(x));
    pki_format_rfc3339(t, date);

    return pki_fail(res, PKI_MALFORMED, "certificate %d of CA chain "
                    "\"%.128s\" (%.200s), above the CA certificate's "
                    "issuer, %s (%s %s): the CA would sign nothing until "
                    "the chain is renewed", at, ca->chain_file, name,
                    exp ? "has expired" : "is not valid yet",
                    exp ? "notAfter" : "notBefore", date);
}


time_t
pki_ca_end(const pki_ca_t *ca)
{
    return ca != NULL && ca->finished ? ca->end : (time_t) -1;
}


int
pki_ca_end_at(const pki_ca_t *ca)
{
    return ca != NULL && ca->finished && ca->end != (time_t) -1
           ? ca->end_at : -1;
}


/*
 * Whether /cacerts-style answers (the CA certificate and its "chain"
 * file) miss the trust anchor: every path up from the CA certificate,
 * and from each certificate of the CA in the file (same subject and key:
 * a cross certificate of it), issuer by issuer through the file (any
 * order, more than one issuer of a certificate), stops below a
 * self-signed certificate.  The issuers are those pki_ca_chain_room
 * follows (names and signature, pki_ca_walk_issued); a self-signed
 * certificate is one that verifies with its own key, as
 * pki_ca_check_chain takes it (a self-issued one is not).
 */
int
pki_ca_anchor_missing(const pki_ca_t *ca, char *issuer, size_t size)
{
    int             i, n, cur, end, up;
    int             todo[PKI_CA_CHAIN_MAX + 1];
    X509           *x;
    signed char     seen[PKI_CA_CHAIN_MAX];
    pki_ca_walk_t   w;

    if (issuer != NULL && size > 0) {
        issuer[0] = '\0';
    }

    if (ca == NULL || !ca->finished || ca->cert == NULL) {
        return 0;
    }

    memset(w.by, -1, sizeof(w.by));
    memset(seen, 0, sizeof(seen));
    w.cert = ca->cert;
    w.chain = ca->chain;
    w.k = ca->chain != NULL ? sk_X509_num(ca->chain) : 0;
    w.k = w.k < 0 ? 0 : w.k > PKI_CA_CHAIN_MAX ? PKI_CA_CHAIN_MAX : w.k;
    n = 0;

    /* the CA certificate is walked first: its dead end is named */
    for (i = w.k - 1; i >= 0; i--) {
        if (pki_ca_same_ca(sk_X509_value(ca->chain, i), ca->cert)) {
            seen[i] = 1;
            todo[n++] = i;
        }
    }

    ERR_clear_error();
    todo[n++] = -1;
    end = -2;
    cur = -1;

    while (n > 0) {
        cur = todo[--n];

        if (pki_ca_walk_issued(&w, cur, cur)) {
            return 0;                           /* a trust anchor */
        }

        up = 0;

        /* pushed last to first: the file's first issuer is walked first */
        for (i = w.k - 1; i >= 0; i--) {
            if (i == cur || !pki_ca_walk_issued(&w, cur, i)) {
                continue;
            }

            up = 1;

            if (!seen[i]) {
                seen[i] = 1;
                todo[n++] = i;
            }
        }

        if (!up && end == -2) {
            end = cur;      /* the first path's end: its issuer is missing */
        }
    }

    /* no dead end: the paths go round (cross certificates of each
     * other); the last certificate walked is named */
    x = pki_ca_walk_node(&w, end != -2 ? end : cur);

    if (issuer != NULL && size > 0
        && X509_NAME_oneline(X509_get_issuer_name(x), issuer,
                             size > 4096 ? 4096 : (int) size) == NULL)
    {
        issuer[0] = '\0';
    }

    ERR_clear_error();

    return 1;
}


pki_status_t
pki_ca_live(const pki_ca_t *ca, time_t now, pki_result_t *res)
{
    X509  *x;
    char   name[256];

    if (ca == NULL || !ca->finished || ca->end == (time_t) -1
        || ca->end > now)
    {
        return PKI_OK;
    }

    if (ca->end_at <= 0) {
        return pki_fail(res, PKI_UNAVAILABLE, "the CA certificate of \"%s\" "
                        "has expired: it signs nothing until it is renewed",
                        ca->name);
    }

    x = sk_X509_value(ca->chain, ca->end_at - 1);

    if (x == NULL
        || X509_NAME_oneline(X509_get_subject_name(x), name, sizeof(name))
           == NULL)
    {
        snprintf(name, sizeof(name), "?");
    }

    ERR_clear_error();

    /* the file and the subject for the error log only: the detail may
     * reach a client (ACME, EST) */
    pki_fail(res, PKI_UNAVAILABLE, "certificate %d of the CA chain above "
             "the CA certificate of \"%s\" has expired: the CA signs "
             "nothing until the chain is renewed", ca->end_at, ca->name);
    pki_log(res, "%scertificate %d of CA chain \"%.128s\": %.200s",
            res != NULL && res->log[0] ? "; " : "", ca->end_at,
            ca->chain_file, name);

    return PKI_UNAVAILABLE;
}


/*
 * Alternate chain n (loaded): its first certificate certifies what the CA
 * signs (the CA's subject and key, and its subjectKeyIdentifier when both
 * have one, so that a leaf's authorityKeyIdentifier finds it); from there
 * the path as pki_ca_check_path() checks it.
 */
static pki_status_t
pki_ca_check_alt(pki_ca_t *ca, int n, time_t now, pki_result_t *res)
{
    int                       i;
    X509                     *first;
    EVP_PKEY                 *pub;
    const char               *file;
    STACK_OF(X509)           *sk;
    const ASN1_OCTET_STRING  *fkid, *ckid;

    file = ca->alt_files[n];
    sk = ca->alt[n];

    if (ca->chain_file != NULL && strcmp(file, ca->chain_file) == 0) {
        return pki_fail(res, PKI_MALFORMED, "alternate chain \"%.128s\" is "
                        "the CA's \"chain\"", file);
    }

    if (sk_X509_num(ca->chain) > 0 && pki_ca_same_certs(sk, ca->chain)) {
        return pki_fail(res, PKI_MALFORMED, "alternate chain \"%.128s\" holds "
                        "the certificates of the CA's \"chain\"", file);
    }

    for (i = 0; i < n; i++) {
        if (pki_ca_same_certs(sk, ca->alt[i])) {
            return pki_fail(res, PKI_MALFORMED, "alternate chain \"%.128s\" "
                            "holds the certificates of \"%.128s\"", file,
                            ca->alt_files[i]);
        }
    }

    first = sk_X509_value(sk, 0);

    if (X509_NAME_cmp(X509_get_subject_name(first),
                      X509_get_subject_name(ca->cert)) != 0)
    {
        return pki_fail(res, PKI_MALFORMED, "the first certificate of "
                        "alternate chain \"%.128s\" does not have the subject "
                        "of the CA certificate \"%.128s\"", file,
                        ca->cert_file);
    }

    pub = X509_get0_pubkey(first);
    if (pub == NULL || EVP_PKEY_eq(pub, X509_get0_pubkey(ca->cert)) != 1) {
        ERR_clear_error();
        return pki_fail(res, PKI_MALFORMED, "the first certificate of "
                        "alternate chain \"%.128s\" does not have the public "
                        "key of the CA certificate \"%.128s\"", file,
                        ca->cert_file);
    }

    fkid = X509_get0_subject_key_id(first);
    ckid = X509_get0_subject_key_id(ca->cert);
    if (fkid != NULL && ckid != NULL && ASN1_OCTET_STRING_cmp(fkid, ckid) != 0)
    {
        return pki_fail(res, PKI_MALFORMED, "the first certificate of "
                        "alternate chain \"%.128s\" has another "
                        "subjectKeyIdentifier than the CA certificate", file);
    }

    return pki_ca_check_path("alternate chain", file, sk, 0, NULL, now, res);
}


static pki_status_t pki_ca_finish_do(pki_ca_t *ca, int open_key,
    pki_result_t *res);


pki_status_t
pki_ca_finish(pki_ca_t *ca, pki_result_t *res)
{
    return pki_ca_finish_do(ca, 1, res);
}


pki_status_t
pki_ca_finish_unkeyed(pki_ca_t *ca, pki_result_t *res)
{
    return pki_ca_finish_do(ca, 0, res);
}


static pki_status_t
pki_ca_finish_do(pki_ca_t *ca, int open_key, pki_result_t *res)
{
    int               i, j, crit;
    long              pl;
    BIO              *bio;
    time_t            now;
    EVP_PKEY         *pub, *cpub;
    const char       *err;
    pki_status_t      rc;
    ASN1_BIT_STRING  *ku;
    BASIC_CONSTRAINTS *bc;

    if (ca->finished) {
        return PKI_OK;
    }

    if (ca->cert_file == NULL) {
        return pki_fail(res, PKI_MALFORMED, "CA \"%s\" has no \"certificate\"",
                        ca->name);
    }

    if (ca->key == NULL) {
        return pki_fail(res, PKI_MALFORMED, "CA \"%s\" has no key", ca->name);
    }

    X509_free(ca->cert);
    ca->cert = NULL;
    sk_X509_pop_free(ca->chain, X509_free);
    ca->chain = NULL;

    for (i = 0; i < ca->nalt; i++) {
        sk_X509_pop_free(ca->alt[i], X509_free);
        ca->alt[i] = NULL;
    }

    bio = BIO_new_file(ca->cert_file, "r");
    if (bio == NULL) {
        return pki_fail(res, PKI_MALFORMED, "cannot open CA certificate "
                        "\"%.128s\"", ca->cert_file);
    }

    ca->cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);

    if (ca->cert == NULL) {
        return pki_fail(res, PKI_MALFORMED, "cannot read a PEM certificate "
                        "from \"%.128s\"", ca->cert_file);
    }

    if (ca->chain_file) {
        rc = pki_ca_read_certs("CA chain", ca->chain_file, &ca->chain, res);
        if (rc != PKI_OK) {
            return rc;
        }

    } else {
        ca->chain = sk_X509_new_null();
        if (ca->chain == NULL) {
            return pki_fail(res, PKI_INTERNAL, "out of memory");
        }
    }

    /* A CA: basicConstraints CA:TRUE; keyCertSign if keyUsage present,
     * and cRLSign too with a crl_url. */
    bc = X509_get_ext_d2i(ca->cert, NID_basic_constraints, &crit, NULL);
    if (bc == NULL || !bc->ca) {
        BASIC_CONSTRAINTS_free(bc);
        ERR_clear_error();
        return pki_fail(res, PKI_MALFORMED, "\"%.128s\" is not a CA "
                        "certificate (no basicConstraints CA:TRUE)",
                        ca->cert_file);
    }

    pl = -1;
    if (bc->pathlen) {
        pl = ASN1_INTEGER_get(bc->pathlen);
        if (pl < 0) {
            BASIC_CONSTRAINTS_free(bc);
            return pki_fail(res, PKI_MALFORMED, "\"%.128s\" has an invalid "
                            "path length", ca->cert_file);
        }
    }
    BASIC_CONSTRAINTS_free(bc);
    ca->pathlen = pl;

    ku = X509_get_ext_d2i(ca->cert, NID_key_usage, &crit, NULL);
    if (ku == NULL && crit != -1) {
        return pki_fail(res, PKI_MALFORMED, "\"%.128s\" has a bad keyUsage",
                        ca->cert_file);
    }

    ca->crl_sign = 1;

    if (ku != NULL) {
        i = ASN1_BIT_STRING_get_bit(ku, PKI_KU_KEY_CERT_SIGN);
        j = ASN1_BIT_STRING_get_bit(ku, PKI_KU_CRL_SIGN);
        ASN1_BIT_STRING_free(ku);
        ca->crl_sign = j;
        if (!i) {
            return pki_fail(res, PKI_MALFORMED, "\"%.128s\" is not a CA "
                            "certificate (keyUsage without keyCertSign)",
                            ca->cert_file);
        }

        /* the CRL every certificate names would fail RFC 5280 6.3.3 (f)
         * at each relying party (OpenSSL: KEYUSAGE_NO_CRL_SIGN) */
        if (!j && ca->crl_url != NULL) {
            return pki_fail(res, PKI_MALFORMED, "\"%.128s\" may not sign "
                            "CRLs (keyUsage without cRLSign): relying "
                            "parties would refuse every CRL at its "
                            "\"crl_url\"", ca->cert_file);
        }
    }

    now = time(NULL);
    err = pki_ca_time_error(ca->cert, now);
    if (err != NULL) {
        return pki_fail(res, PKI_MALFORMED, "CA certificate \"%.128s\" %s",
                        ca->cert_file, err);
    }

    if (open_key) {
        rc = pki_key_open(ca->key, res);
        if (rc != PKI_OK) {
            return rc;
        }

        pub = pki_key_public(ca->key);
        cpub = X509_get0_pubkey(ca->cert);
        if (pub == NULL || cpub == NULL || EVP_PKEY_eq(pub, cpub) != 1) {
            ERR_clear_error();
            return pki_fail(res, PKI_MALFORMED, "the key \"%.128s\" of CA "
                            "\"%s\" does not match the certificate "
                            "\"%.128s\"", pki_key_ref(ca->key), ca->name,
                            ca->cert_file);
        }
    }

    for (i = 0; i < ca->ntmpls; i++) {
        rc = pki_ca_check_template(ca, ca->tmpls[i], res);
        if (rc != PKI_OK) {
            return rc;
        }
    }

    rc = pki_ca_check_mix(ca, NULL, res);
    if (rc != PKI_OK) {
        return rc;
    }

    rc = pki_ca_check_chain(ca, now, res);
    if (rc != PKI_OK) {
        return rc;
    }

    for (i = 0; i < ca->nalt; i++) {
        rc = pki_ca_read_certs("alternate chain", ca->alt_files[i],
                               &ca->alt[i], res);
        if (rc != PKI_OK) {
            return rc;
        }

        rc = pki_ca_check_alt(ca, i, now, res);
        if (rc != PKI_OK) {
            return rc;
        }
    }

    pki_ca_limit_pathlen(ca);

    ca->end = pki_ca_path_end(ca, ca->cert, 0, 0, 0, &ca->end_at);

    rc = pki_ca_check_above(ca, now, res);
    if (rc != PKI_OK) {
        return rc;
    }

    for (i = 0; i < ca->ntmpls; i++) {
        rc = pki_ca_check_pathlen(ca, ca->tmpls[i], res);
        if (rc != PKI_OK) {
            return rc;
        }

        if (!ca->tmpls[i]->matter) {
            rc = pki_ca_check_eku(ca, ca->tmpls[i], res);
            if (rc != PKI_OK) {
                return rc;
            }
        }
    }

    /* Fill the extension cache now, not concurrently in worker threads. */
    X509_check_purpose(ca->cert, -1, 0);
    for (i = 0; i < sk_X509_num(ca->chain); i++) {
        X509_check_purpose(sk_X509_value(ca->chain, i), -1, 0);
    }
    for (i = 0; i < ca->nalt; i++) {
        for (j = 0; j < sk_X509_num(ca->alt[i]); j++) {
            X509_check_purpose(sk_X509_value(ca->alt[i], j), -1, 0);
        }
    }
    ERR_clear_error();

    ca->finished = 1;

    return PKI_OK;
}


int
pki_ca_signs_crls(const pki_ca_t *ca)
{
    return ca != NULL && ca->finished && ca->crl_sign;
}


int
pki_ca_allows(const pki_ca_t *ca, const pki_template_t *t)
{
    int  i;

    if (ca == NULL || t == NULL) {
        return 0;
    }

    for (i = 0; i < ca->ntmpls; i++) {
        if (ca->tmpls[i] == t) {
            return 1;
        }
    }

    return 0;
}


X509 *
pki_ca_cert(const pki_ca_t *ca)
{
    return ca->cert;
}


pki_status_t
pki_ca_link_same(pki_ca_t *a, pki_ca_t *b, int *linked, pki_result_t *res)
{
    int        i;
    char      *na, *nb;
    EVP_PKEY  *ka, *kb;

    *linked = 0;

    if (a == NULL || b == NULL || a == b || !a->finished || !b->finished
        || strcmp(a->name, b->name) == 0)
    {
        return PKI_OK;
    }

    ka = X509_get0_pubkey(a->cert);
    kb = X509_get0_pubkey(b->cert);

    if (ka == NULL || kb == NULL
        || X509_NAME_cmp(X509_get_subject_name(a->cert),
                         X509_get_subject_name(b->cert)) != 0
        || EVP_PKEY_eq(ka, kb) != 1)
    {
        ERR_clear_error();
        return PKI_OK;
    }

    for (i = 0; i < a->nsame; i++) {
        if (strcmp(a->same[i], b->name) == 0) {
            *linked = 1;
            return PKI_OK;
        }
    }

    if (a->nsame >= PKI_CA_MAX_SAME || b->nsame >= PKI_CA_MAX_SAME) {
        return pki_fail(res, PKI_MALFORMED, "CAs \"%s\" and \"%s\": more "
                        "than %d other CAs with the same subject and key",
                        a->name, b->name, PKI_CA_MAX_SAME);
    }

    na = strdup(a->name);
    nb = strdup(b->name);
    if (na == NULL || nb == NULL) {
        free(na);
        free(nb);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    a->same[a->nsame++] = nb;
    b->same[b->nsame++] = na;
    *linked = 1;

    return PKI_OK;
}


int
pki_ca_same_count(const pki_ca_t *ca)
{
    return ca != NULL ? ca->nsame : 0;
}


const char *
pki_ca_same_name(const pki_ca_t *ca, int i)
{
    return ca != NULL && i >= 0 && i < ca->nsame ? ca->same[i] : NULL;
}


STACK_OF(X509) *
pki_ca_chain(const pki_ca_t *ca)
{
    return ca->chain;
}


int
pki_ca_alt_chain_count(const pki_ca_t *ca)
{
    return ca->nalt;
}


STACK_OF(X509) *
pki_ca_alt_chain(const pki_ca_t *ca, int i)
{
    if (i < 0 || i >= ca->nalt) {
        return NULL;
    }

    return ca->alt[i];
}


pki_key_t *
pki_ca_key(const pki_ca_t *ca)
{
    return ca->key;
}


int
pki_ca_issued(const pki_ca_t *ca, X509 *cert)
{
    int        rc;
    EVP_PKEY  *pub;

    if (ca == NULL || ca->cert == NULL || cert == NULL) {
        return 0;
    }

    /* Issuer name, and the AKID if present, must match the CA. */
    if (X509_check_issued(ca->cert, cert) != X509_V_OK) {
        ERR_clear_error();
        return 0;
    }

    pub = X509_get0_pubkey(ca->cert);
    if (pub == NULL) {
        ERR_clear_error();
        return 0;
    }

    rc = X509_verify(cert, pub);
    ERR_clear_error();

    return rc == 1;
}
