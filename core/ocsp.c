/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * OCSP responder engine (RFC 6960, RFC 5019 GET profile).
 *
 * The CA key may live in a PKCS#11 token and is reachable only through
 * pki_key_sign(), so OCSP_basic_sign() cannot be used.  The engine builds
 * the SingleResponses and the nonce extension with OpenSSL's OCSP API in a
 * scratch OCSP_BASICRESP, encodes ResponseData and BasicOCSPResponse with
 * its own ASN.1 templates (same DER as RFC 6960 4.2.1), signs the
 * ResponseData DER with pki_key_sign() (which verifies the signature), and
 * parses the result back with d2i_OCSP_BASICRESP() before wrapping it in
 * the OCSPResponse.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1t.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/sha.h>

#include "pki.h"
#include "issue_int.h"


/* RFC 9654 2.1 (which obsoletes RFC 8954 and its 32-octet limit): a
 * nonce is 1 to 128 octets and is echoed; 0 or more than 128 octets is
 * malformedRequest.  Responders MAY ignore one under 16 octets: it is
 * echoed all the same, as older RFC 6960 clients expect. */
#define PKI_OCSP_MAX_NONCE  128

static const char  pki_ocsp_type[] = "application/ocsp-response";


/* ResponseData with responderID byKey (RFC 6960 4.2.1); version v1 is the
 * DEFAULT and is therefore not encoded. */
typedef struct {
    ASN1_OCTET_STRING             *by_key;
    ASN1_GENERALIZEDTIME          *produced_at;
    STACK_OF(OCSP_SINGLERESP)     *responses;
    STACK_OF(X509_EXTENSION)      *exts;
} pki_respdata_t;

typedef struct {
    pki_respdata_t                *tbs;
    X509_ALGOR                    *alg;
    ASN1_BIT_STRING               *sig;
    STACK_OF(X509)                *certs;
} pki_basicresp_t;

ASN1_SEQUENCE(pki_respdata_t) = {
    ASN1_EXP(pki_respdata_t, by_key, ASN1_OCTET_STRING, 2),
    ASN1_SIMPLE(pki_respdata_t, produced_at, ASN1_GENERALIZEDTIME),
    ASN1_SEQUENCE_OF(pki_respdata_t, responses, OCSP_SINGLERESP),
    ASN1_EXP_SEQUENCE_OF_OPT(pki_respdata_t, exts, X509_EXTENSION, 1)
} static_ASN1_SEQUENCE_END(pki_respdata_t)

ASN1_SEQUENCE(pki_basicresp_t) = {
    ASN1_SIMPLE(pki_basicresp_t, tbs, pki_respdata_t),
    ASN1_SIMPLE(pki_basicresp_t, alg, X509_ALGOR),
    ASN1_SIMPLE(pki_basicresp_t, sig, ASN1_BIT_STRING),
    ASN1_EXP_SEQUENCE_OF_OPT(pki_basicresp_t, certs, X509, 0)
} static_ASN1_SEQUENCE_END(pki_basicresp_t)


/* What the records say about one CertID. */
typedef struct {
    int                            status;     /* V_OCSP_CERTSTATUS_*    */
    int                            reason;     /* -1: none               */
    time_t                         revoked_at;
    time_t                         invalidity; /* 0: none                */
    time_t                         planned;    /* good: its planned
                                                  revocation, 0: none    */
    int                            ca;         /* conf->cas index, -1    */
    int                            pending;    /* a record being issued  */
} pki_ocsp_single_t;


/* An OCSPResponse with only a status (no responseBytes). */
static void
pki_ocsp_status_only(pki_ocsp_resp_t *resp, int status)
{
    int             n;
    unsigned char  *p;
    OCSP_RESPONSE  *or;

    resp->http_status = 200;
    resp->content_type = pki_ocsp_type;
    resp->ocsp_status = status;
    resp->cacheable = 0;

    or = OCSP_response_create(status, NULL);
    if (or == NULL) {
        goto oom;
    }

    n = i2d_OCSP_RESPONSE(or, NULL);
    if (n <= 0 || (resp->body = malloc((size_t) n)) == NULL) {
        OCSP_RESPONSE_free(or);
        goto oom;
    }

    p = resp->body;
    i2d_OCSP_RESPONSE(or, &p);
    resp->body_len = (size_t) n;
    OCSP_RESPONSE_free(or);
    return;

oom:

    resp->http_status = 500;
    resp->content_type = NULL;
}


static int
pki_ocsp_fail(pki_ocsp_resp_t *resp, int status, pki_status_t st,
    const char *what)
{
    if (resp->res.status == PKI_OK) {
        pki_fail(&resp->res, st, "%s", what);
    }
    pki_ocsp_status_only(resp, status);
    return 0;
}


/* 1 if ca's name and key hash with md give name_hash and key_hash. */
static int
pki_ocsp_ca_match(pki_ca_t *ca, const EVP_MD *md,
    const ASN1_OCTET_STRING *name_hash, const ASN1_OCTET_STRING *key_hash)
{
    int                    n, ok;
    X509                  *cert;
    unsigned int           len;
    unsigned char          h[EVP_MAX_MD_SIZE], *der;
    const ASN1_BIT_STRING  *key;

    cert = pki_ca_cert(ca);
    if (cert == NULL || name_hash == NULL || key_hash == NULL) {
        return 0;
    }

    n = EVP_MD_get_size(md);
    if (n <= 0 || ASN1_STRING_length(name_hash) != n
        || ASN1_STRING_length(key_hash) != n)
    {
        return 0;
    }

    key = X509_get0_pubkey_bitstr(cert);
    if (key == NULL
        || !EVP_Digest(ASN1_STRING_get0_data(key), (size_t) key->length, h,
                       &len, md, NULL)
        || memcmp(h, ASN1_STRING_get0_data(key_hash), len) != 0)
    {
        return 0;
    }

    der = NULL;
    n = i2d_X509_NAME(X509_get_subject_name(cert), &der);
    if (n <= 0) {
        return 0;
    }

    ok = EVP_Digest(der, (size_t) n, h, &len, md, NULL)
         && memcmp(h, ASN1_STRING_get0_data(name_hash), len) == 0;
    OPENSSL_free(der);

    return ok;
}


/* The hash of a CertID, if it is one we match (SHA-1, SHA-256). */
static const EVP_MD *
pki_ocsp_cid_md(OCSP_CERTID *cid, ASN1_OCTET_STRING **name_hash,
    ASN1_OCTET_STRING **key_hash)
{
    int           nid;
    ASN1_OBJECT  *alg;

    if (!OCSP_id_get0_info(name_hash, &alg, key_hash, NULL, cid)) {
        return NULL;
    }

    nid = OBJ_obj2nid(alg);

    /* SHA-1 (RFC 5019 clients) and the SHA-2 family: a verifier that
     * hashes its CertIDs with SHA-384 or SHA-512 is answered too */
    return nid == NID_sha1 ? EVP_sha1()
           : nid == NID_sha256 ? EVP_sha256()
           : nid == NID_sha384 ? EVP_sha384()
           : nid == NID_sha512 ? EVP_sha512()
           : nid == NID_sha224 ? EVP_sha224() : NULL;
}


/* The index of the first CA of conf the CertID names, or -1.  Several CAs
 * may match: a CA re-certified with the same subject and key is declared
 * twice (old and new certificate), and a CertID cannot tell them apart. */
static int
pki_ocsp_find_ca(const pki_ocsp_conf_t *conf, OCSP_CERTID *cid, size_t from)
{
    size_t              i;
    const EVP_MD       *md;
    ASN1_OCTET_STRING  *name_hash, *key_hash;

    md = pki_ocsp_cid_md(cid, &name_hash, &key_hash);
    if (md == NULL) {
        return -1;
    }

    for (i = from; i < conf->ncas; i++) {
        if (pki_ocsp_ca_match(conf->cas[i], md, name_hash, key_hash)) {
            return (int) i;
        }
    }

    return -1;
}


/* 1: no nonce or a good one; 0: malformed. */
static int
pki_ocsp_nonce_ok(OCSP_REQUEST *req, int *has)
{
    int                  idx, ok, n;
    unsigned char       *der;
    X509_EXTENSION      *ext;
    ASN1_OCTET_STRING   *data, *inner;
    const unsigned char *p;

    *has = 0;
    idx = OCSP_REQUEST_get_ext_by_NID(req, NID_id_pkix_OCSP_Nonce, -1);
    if (idx < 0) {
        return 1;
    }

    if (OCSP_REQUEST_get_ext_by_NID(req, NID_id_pkix_OCSP_Nonce, idx) >= 0) {
        return 0;                       /* two nonces */
    }

    ext = OCSP_REQUEST_get_ext(req, idx);
    data = X509_EXTENSION_get_data(ext);
    if (data == NULL) {
        return 0;
    }

    /* extnValue holds a DER OCTET STRING (RFC 6960 4.4.1, RFC 9654).  The
     * value is echoed as it came (OCSP_copy_nonce): its DER form is what
     * bounds the echo (a BER constructed string of 20,000 empty segments
     * around 16 octets was taken, and echoed at 40 KB) */
    p = ASN1_STRING_get0_data(data);
    inner = d2i_ASN1_OCTET_STRING(NULL, &p, ASN1_STRING_length(data));
    ok = inner != NULL
         && p == ASN1_STRING_get0_data(data) + ASN1_STRING_length(data)
         && ASN1_STRING_length(inner) >= 1
         && ASN1_STRING_length(inner) <= PKI_OCSP_MAX_NONCE;

    if (ok) {
        /* byte for byte its own DER */
        der = NULL;
        n = i2d_ASN1_OCTET_STRING(inner, &der);
        ok = n == ASN1_STRING_length(data)
             && memcmp(der, ASN1_STRING_get0_data(data), (size_t) n) == 0;
        OPENSSL_free(der);
    }
    ASN1_OCTET_STRING_free(inner);

    *has = ok;
    return ok;
}


/* 1 if every critical extension of the request is one this responder
 * understands: the nonce among the requestExtensions, none among the
 * singleRequestExtensions.  RFC 6960 4.4: a critical extension that is
 * not understood makes the request malformed (non-critical ones are
 * ignored). */
static int
pki_ocsp_exts_understood(OCSP_REQUEST *req)
{
    int              i, j, n;
    OCSP_ONEREQ     *one;
    X509_EXTENSION  *ext;

    for (i = 0; i < OCSP_REQUEST_get_ext_count(req); i++) {
        ext = OCSP_REQUEST_get_ext(req, i);
        if (X509_EXTENSION_get_critical(ext) > 0
            && OBJ_obj2nid(X509_EXTENSION_get_object(ext))
               != NID_id_pkix_OCSP_Nonce)
        {
            return 0;
        }
    }

    n = OCSP_request_onereq_count(req);

    for (i = 0; i < n; i++) {
        one = OCSP_request_onereq_get0(req, i);
        for (j = 0; j < OCSP_ONEREQ_get_ext_count(one); j++) {
            if (X509_EXTENSION_get_critical(OCSP_ONEREQ_get_ext(one, j)) > 0)
            {
                return 0;
            }
        }
    }

    return 1;
}

/* The next TLV at *p, before end: 1 if it has tag and class, is
 * constructed or not as asked, has a definite length and fits; *p then
 * points at its contents and *len is their length. */
static int
pki_ocsp_tlv(const unsigned char **p, const unsigned char *end, int tag,
    int cls, int constructed, long *len)
{
    int                   r, t, c;
    const unsigned char  *q;

    if (*p >= end) {
        return 0;
    }

    q = *p;
    r = ASN1_get_object(&q, len, &t, &c, (long) (end - *p));

    if (r != (constructed ? V_ASN1_CONSTRUCTED : 0) || t != tag || c != cls
        || *len < 0 || *len > end - q)
    {
        return 0;
    }

    *p = q;
    return 1;
}


/* 1 if [p, end) is empty or one Extensions list (SEQUENCE OF SEQUENCE)
 * of at most PKI_OCSP_MAX_EXTS entries in an EXPLICIT [tag], nothing
 * after it; the entries are not decoded.  A client needs a few (RFC 6960
 * defines eight); thousands in a 64 KB request cost milliseconds of
 * d2i_OCSP_REQUEST() and of the critical-extension scan on the event
 * loop. */
static int
pki_ocsp_exts_shape(const unsigned char *p, const unsigned char *end,
    int tag)
{
    int   n;
    long  len;

    if (p == end) {
        return 1;
    }

    if (!pki_ocsp_tlv(&p, end, tag, V_ASN1_CONTEXT_SPECIFIC, 1, &len)
        || p + len != end
        || !pki_ocsp_tlv(&p, end, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, 1, &len)
        || p + len != end)
    {
        return 0;
    }

    for (n = 0; p < end; n++) {
        if (n == PKI_OCSP_MAX_EXTS
            || !pki_ocsp_tlv(&p, end, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, 1,
                             &len))
        {
            return 0;
        }
        p += len;
    }

    return 1;
}


/* 1 if [p, end) is an optionalSignature of the right shape (see
 * pki_ocsp_decode), its contents not looked at. */
static int
pki_ocsp_sig_shape(const unsigned char *p, const unsigned char *end)
{
    long  len;

    /* [0] EXPLICIT Signature ::= SEQUENCE { signatureAlgorithm,
     * signature BIT STRING, certs [0] EXPLICIT SEQUENCE OF Certificate
     * OPTIONAL } */
    if (!pki_ocsp_tlv(&p, end, 0, V_ASN1_CONTEXT_SPECIFIC, 1, &len)
        || p + len != end
        || !pki_ocsp_tlv(&p, end, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, 1, &len)
        || p + len != end)
    {
        return 0;
    }

    if (!pki_ocsp_tlv(&p, end, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, 1, &len))
    {
        return 0;
    }
    p += len;

    if (!pki_ocsp_tlv(&p, end, V_ASN1_BIT_STRING, V_ASN1_UNIVERSAL, 0,
                      &len)
        || len < 1)
    {
        return 0;
    }
    p += len;

    if (p != end) {
        if (!pki_ocsp_tlv(&p, end, 0, V_ASN1_CONTEXT_SPECIFIC, 1, &len)
            || p + len != end
            || !pki_ocsp_tlv(&p, end, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, 1,
                             &len)
            || p + len != end)
        {
            return 0;
        }

        /* each certificate: a SEQUENCE, not decoded */
        while (p < end) {
            if (!pki_ocsp_tlv(&p, end, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, 1,
                              &len))
            {
                return 0;
            }
            p += len;
        }
    }

    return 1;
}


/*
 * Decodes an OCSPRequest (RFC 6960 4.1.1) without its optionalSignature
 * and requestorName.  The responder does not verify request signatures
 * (RFC 6960 4.1.2 lets it ignore them) nor use the requestor's name, yet
 * d2i_OCSP_REQUEST() decodes every certificate of a signature, and with
 * it each public key (a 64 KB request holds some 240 of them: ~180 ms),
 * and canonicalises a name of thousands of RDNs (~40 ms), for an
 * anonymous client, and pki_ocsp_cache_key() runs on the event loop.  So
 * the DER is walked shallowly: the outer SEQUENCE, tbsRequest (its
 * requestorName [1] skipped, its requestList counted: more than
 * PKI_OCSP_MAX_IDS Requests are refused undecoded, and so are more than
 * PKI_OCSP_MAX_EXTS extensions in a list), and the shape of the
 * Signature (SEQUENCE of an AlgorithmIdentifier SEQUENCE, a BIT STRING
 * and an optional [0] SEQUENCE OF SEQUENCE), whose contents, the
 * certificates included, are not looked at.  A request with either is
 * then decoded from the rest of its tbsRequest, wrapped anew.  Definite
 * lengths only; nothing may follow.  NULL: malformed (or out of memory).
 */
static OCSP_REQUEST *
pki_ocsp_decode(const unsigned char *der, size_t derlen)
{
    int                   n, ids, tbs_n;
    long                  len, body_len, name_len;
    unsigned char        *buf, *q;
    OCSP_REQUEST         *oreq;
    const unsigned char  *p, *end, *body, *tend, *name, *lend, *rend;

    if (derlen == 0 || derlen > PKI_OCSP_MAX_BODY) {
        return NULL;
    }

    p = der;
    end = der + derlen;
    oreq = NULL;
    buf = NULL;

    /* OCSPRequest ::= SEQUENCE { tbsRequest, optionalSignature [0] } */
    if (!pki_ocsp_tlv(&p, end, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, 1, &len)
        || p + len != end)
    {
        goto done;
    }

    /* TBSRequest ::= SEQUENCE { version [0] DEFAULT v1, requestorName
     * [1] OPTIONAL, requestList SEQUENCE OF Request, requestExtensions
     * [2] OPTIONAL } */
    if (!pki_ocsp_tlv(&p, end, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, 1, &len)) {
        goto done;
    }
    body = p;
    tend = p + len;

    if (pki_ocsp_tlv(&p, tend, 0, V_ASN1_CONTEXT_SPECIFIC, 1, &len)) {
        p += len;
    }

    name = p;
    name_len = 0;
    if (pki_ocsp_tlv(&p, tend, 1, V_ASN1_CONTEXT_SPECIFIC, 1, &len)) {
        p += len;
        name_len = (long) (p - name);
    }

    if (!pki_ocsp_tlv(&p, tend, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, 1, &len))
    {
        goto done;
    }

    lend = p + len;
    for (ids = 0; p < lend; ids++) {
        /* Request ::= SEQUENCE { reqCert CertID,
         * singleRequestExtensions [0] EXPLICIT Extensions OPTIONAL } */
        if (ids == PKI_OCSP_MAX_IDS
            || !pki_ocsp_tlv(&p, lend, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, 1,
                             &len))
        {
            goto done;
        }
        rend = p + len;

        if (!pki_ocsp_tlv(&p, rend, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, 1,
                          &len)
            || !pki_ocsp_exts_shape(p + len, rend, 0))
        {
            goto done;
        }
        p = rend;
    }

    /* requestExtensions [2]: counted here, judged by d2i_OCSP_REQUEST() */
    if (!pki_ocsp_exts_shape(lend, tend, 2)) {
        goto done;
    }
    p = tend;
    body_len = (long) (tend - body) - name_len;

    if (p == end && name_len == 0) {
        /* neither signed nor named: as it is */
        p = der;
        oreq = d2i_OCSP_REQUEST(NULL, &p, (long) derlen);
        if (oreq != NULL && p != end) {
            OCSP_REQUEST_free(oreq);
            oreq = NULL;
        }
        goto done;
    }

    if (p != end && !pki_ocsp_sig_shape(p, end)) {
        goto done;
    }

    /* tbsRequest alone, without requestorName, as an unsigned
     * OCSPRequest */
    tbs_n = ASN1_object_size(1, body_len, V_ASN1_SEQUENCE);
    n = tbs_n > 0 ? ASN1_object_size(1, tbs_n, V_ASN1_SEQUENCE) : -1;
    if (n <= 0 || (buf = malloc((size_t) n)) == NULL) {
        goto done;
    }

    q = buf;
    ASN1_put_object(&q, 1, tbs_n, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    ASN1_put_object(&q, 1, body_len, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    memcpy(q, body, (size_t) (name - body));
    q += name - body;
    memcpy(q, name + name_len, (size_t) (tend - name - name_len));

    p = buf;
    oreq = d2i_OCSP_REQUEST(NULL, &p, (long) n);
    if (oreq != NULL && p != buf + n) {
        OCSP_REQUEST_free(oreq);
        oreq = NULL;
    }

done:

    free(buf);

    return oreq;
}


/* Signature algorithm and digest for the CA key: the rule of
 * pki_default_md() in key.c, which certificates and CRLs are signed with
 * (EC: SHA-384 for P-384, SHA-512 for P-521, else SHA-256; RSA SHA-256;
 * Ed25519 none). */
static int
pki_ocsp_sigalg(EVP_PKEY *pub, const EVP_MD **md, X509_ALGOR *alg)
{
    int   base, sig_nid, ptype, curve;
    char  name[64];

    base = EVP_PKEY_get_base_id(pub);
    ptype = V_ASN1_UNDEF;

    switch (base) {
    case EVP_PKEY_EC:
        curve = NID_undef;
        if (EVP_PKEY_get_group_name(pub, name, sizeof(name), NULL) == 1) {
            curve = OBJ_txt2nid(name) != NID_undef ? OBJ_txt2nid(name)
                                                   : EC_curve_nist2nid(name);
        }
        *md = curve == NID_secp384r1 ? EVP_sha384()
              : curve == NID_secp521r1 ? EVP_sha512() : EVP_sha256();
        break;
    case EVP_PKEY_RSA:
        *md = EVP_sha256();
        ptype = V_ASN1_NULL;
        break;
    case EVP_PKEY_ED25519:
        *md = NULL;
        break;
    default:
        return 0;
    }

    if (base == EVP_PKEY_ED25519) {
        sig_nid = NID_ED25519;      /* the key OID is the algorithm OID */

    } else if (!OBJ_find_sigid_by_algs(&sig_nid, EVP_MD_get_type(*md), base)) {
        return 0;
    }

    return X509_ALGOR_set0(alg, OBJ_nid2obj(sig_nid), ptype, NULL);
}


/* 1 if the delegated responder certificate is valid at now; otherwise
 * 0, with a line for the error log naming it. */
static int
pki_ocsp_signer_current(const pki_ocsp_signer_t *s, time_t now,
    pki_result_t *res)
{
    int    before, after;
    char   name[256], hex[41];

    before = X509_cmp_time(X509_get0_notBefore(s->cert), &now);
    after = X509_cmp_time(X509_get0_notAfter(s->cert), &now);

    if (before < 0 && after > 0) {
        return 1;
    }

    ERR_clear_error();

    if (res == NULL) {
        return 0;
    }

    if (X509_NAME_oneline(X509_get_subject_name(s->cert), name,
                          sizeof(name))
        == NULL)
    {
        snprintf(name, sizeof(name), "?");
    }

    if (!pki_serial_to_hex(X509_get0_serialNumber(s->cert), hex)) {
        snprintf(hex, sizeof(hex), "?");
    }

    pki_log(res, "%sthe delegated OCSP responder certificate \"%s\" "
            "(serial %s) of CA \"%s\" is %s: signed with the CA key "
            "instead", res->log[0] ? "; " : "", name, hex,
            pki_ca_name(s->ca), before > 0 ? "not yet valid"
                                : after < 0 ? "expired"
                                : "of unreadable validity");

    return 0;
}


/* The delegated responder that signs for ca at now, or NULL: the CA key
 * signs.  Of several configured for ca, the first one valid at now (an
 * expiring responder certificate and its replacement, configured side by
 * side, take over from each other without a reload).  NULL when none is
 * configured for ca, or none is valid at now: a response signed by it
 * would not verify, the CA's own signature always does, RFC 6960
 * 4.2.2.2; res->log then names the first one. */
static const pki_ocsp_signer_t *
pki_ocsp_signer(const pki_ocsp_conf_t *conf, pki_ca_t *ca, time_t now,
    pki_result_t *res)
{
    size_t                    j;
    const pki_ocsp_signer_t  *first;

    first = NULL;

    for (j = 0; conf->signers != NULL && j < conf->nsigners; j++) {
        if (conf->signers[j].ca != ca) {
            continue;
        }

        if (pki_ocsp_signer_current(&conf->signers[j], now, NULL)) {
            return &conf->signers[j];
        }

        if (first == NULL) {
            first = &conf->signers[j];
        }
    }

    if (first != NULL) {
        (void) pki_ocsp_signer_current(first, now, res);
    }

    return NULL;
}


/* Signs the ResponseData of scratch with sg's key (NULL: the CA key). */
static void
pki_ocsp_sign_and_wrap(pki_ca_t *ca, const pki_ocsp_signer_t *sg,
    OCSP_BASICRESP *scratch, time_t now, pki_ocsp_resp_t *resp)
{
    int                   i, n;
    long                  dlen;
    size_t                siglen;
    X509                 *cert;
    EVP_PKEY             *pub;
    unsigned int          hlen;
    const EVP_MD         *md;
    OCSP_RESPONSE        *or;
    pki_respdata_t        rd;
    OCSP_BASICRESP       *bs;
    pki_basicresp_t       br;
    unsigned char         keyhash[SHA_DIGEST_LENGTH], *tbs, *sig, *der, *p;
    const unsigned char  *cp;
    pki_key_t             *skey;
    const ASN1_BIT_STRING  *key;

    tbs = sig = der = NULL;
    or = NULL;
    bs = NULL;
    memset(&rd, 0, sizeof(rd));
    memset(&br, 0, sizeof(br));

    cert = pki_ca_cert(ca);
    skey = pki_ca_key(ca);

    if (sg != NULL) {
        cert = sg->cert;
        skey = sg->key;
        br.certs = sk_X509_new_null();
        if (br.certs == NULL || !sk_X509_push(br.certs, cert)) {
            goto internal;
        }
    }

    pub = skey ? pki_key_public(skey) : NULL;
    key = cert ? X509_get0_pubkey_bitstr(cert) : NULL;
    if (pub == NULL || key == NULL) {
        sk_X509_free(br.certs);
        pki_ocsp_fail(resp, OCSP_RESPONSE_STATUS_INTERNALERROR, PKI_INTERNAL,
                      "CA key not available");
        return;
    }

    rd.by_key = ASN1_OCTET_STRING_new();
    rd.produced_at = ASN1_GENERALIZEDTIME_set(NULL, now);
    rd.responses = sk_OCSP_SINGLERESP_new_null();
    br.alg = X509_ALGOR_new();
    br.sig = ASN1_BIT_STRING_new();
    if (rd.by_key == NULL || rd.produced_at == NULL || rd.responses == NULL
        || br.alg == NULL || br.sig == NULL)
    {
        goto internal;
    }

    if (!EVP_Digest(ASN1_STRING_get0_data(key), (size_t) key->length,
                    keyhash, &hlen, EVP_sha1(), NULL)
        || !ASN1_OCTET_STRING_set(rd.by_key, keyhash, (int) hlen))
    {
        goto internal;
    }

    /* borrowed from scratch */
    for (i = 0; i < OCSP_resp_count(scratch); i++) {
        if (!sk_OCSP_SINGLERESP_push(rd.responses, OCSP_resp_get0(scratch, i)))
        {
            goto internal;
        }
    }

    if (OCSP_BASICRESP_get_ext_count(scratch) > 0) {
        rd.exts = sk_X509_EXTENSION_new_null();
        if (rd.exts == NULL) {
            goto internal;
        }
        for (i = 0; i < OCSP_BASICRESP_get_ext_count(scratch); i++) {
            if (!sk_X509_EXTENSION_push(rd.exts,
                                        OCSP_BASICRESP_get_ext(scratch, i)))
            {
                goto internal;
            }
        }
    }

    if (!pki_ocsp_sigalg(pub, &md, br.alg)) {
        pki_fail(&resp->res, PKI_INTERNAL, "unsupported CA key type");
        goto internal;
    }

    n = ASN1_item_i2d((ASN1_VALUE *) &rd, &tbs,
                      ASN1_ITEM_rptr(pki_respdata_t));
    if (n <= 0) {
        goto internal;
    }

    if (pki_key_sign(skey, md, tbs, (size_t) n, &sig, &siglen,
                     &resp->res)
        != PKI_OK)
    {
        pki_ocsp_status_only(resp, resp->res.status == PKI_UNAVAILABLE
                                   ? OCSP_RESPONSE_STATUS_TRYLATER
                                   : OCSP_RESPONSE_STATUS_INTERNALERROR);
        goto done;
    }

    if (!ASN1_BIT_STRING_set(br.sig, sig, (int) siglen)) {
        goto internal;
    }
    br.sig->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
    br.sig->flags |= ASN1_STRING_FLAG_BITS_LEFT;
    br.tbs = &rd;

    n = ASN1_item_i2d((ASN1_VALUE *) &br, &der,
                      ASN1_ITEM_rptr(pki_basicresp_t));
    if (n <= 0) {
        goto internal;
    }

    /* round trip through OpenSSL's own parser */
    cp = der;
    dlen = n;
    bs = d2i_OCSP_BASICRESP(NULL, &cp, dlen);
    if (bs == NULL || cp != der + n) {
        goto internal;
    }

    or = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs);
    if (or == NULL) {
        goto internal;
    }

    n = i2d_OCSP_RESPONSE(or, NULL);
    if (n <= 0 || (resp->body = malloc((size_t) n)) == NULL) {
        goto internal;
    }

    p = resp->body;
    i2d_OCSP_RESPONSE(or, &p);
    resp->body_len = (size_t) n;
    resp->http_status = 200;
    resp->content_type = pki_ocsp_type;
    resp->ocsp_status = OCSP_RESPONSE_STATUS_SUCCESSFUL;
    goto done;

internal:

    pki_ocsp_fail(resp, OCSP_RESPONSE_STATUS_INTERNALERROR, PKI_INTERNAL,
                  "cannot build the OCSP response");

done:

    OCSP_RESPONSE_free(or);
    OCSP_BASICRESP_free(bs);
    OPENSSL_free(tbs);
    OPENSSL_free(der);
    free(sig);
    ASN1_OCTET_STRING_free(rd.by_key);
    ASN1_GENERALIZEDTIME_free(rd.produced_at);
    sk_OCSP_SINGLERESP_free(rd.responses);
    sk_X509_EXTENSION_free(rd.exts);
    X509_ALGOR_free(br.alg);
    ASN1_BIT_STRING_free(br.sig);
    sk_X509_free(br.certs);             /* borrowed certificate */
}


/* Adds the RFC 6960 2.2 extended revoke extension (NULL value). */
static int
pki_ocsp_add_extended_revoke(OCSP_BASICRESP *bs)
{
    int              ok;
    ASN1_OBJECT     *obj;
    X509_EXTENSION  *ext;
    ASN1_OCTET_STRING *val;
    static const unsigned char  null_der[] = { 0x05, 0x00 };

    obj = OBJ_txt2obj("1.3.6.1.5.5.7.48.1.9", 1);
    val = ASN1_OCTET_STRING_new();
    ext = NULL;
    ok = obj && val && ASN1_OCTET_STRING_set(val, null_der, 2)
         && (ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, val)) != NULL
         && OCSP_BASICRESP_add_ext(bs, ext, -1);
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(val);
    ASN1_OBJECT_free(obj);

    return ok;
}


/*
 * 1 if the certificate of rec was issued by ca: its issuer is the CA's
 * subject and its authorityKeyIdentifier names the CA's key (both through
 * X509_check_issued); without a keyIdentifier on either side, its
 * signature verifies with the CA's key.  A record is found by the CA's
 * name alone ({ca:NAME} keys), and a name can hold records of another CA
 * (pkictl issue --redis --ca-name with another CA's certificate and key)
 * or of the CA's older key (re-keyed under the same name): such a record
 * says nothing about the serial of the CA the CertID names.
 *
 * The signature is not verified when the key identifiers match: an
 * ECDSA P-256 verification costs about 60 us (openssl speed: 17k/s here),
 * as much as the answer's own signature from a token, per CertID on every
 * answer that is not cached; the key identifier tells the CA keys of one
 * name apart as well, and only a writer of Redis can forge a record, who
 * can as well write "good" into a genuine one.
 */
static int
pki_ocsp_issued(pki_ca_t *ca, const pki_record_t *rec, pki_result_t *res)
{
    int                     ok, rc;
    X509                   *cert, *cacert;
    char                    issuer[256];
    const unsigned char    *p;
    const ASN1_OCTET_STRING  *skid;
    const ASN1_OCTET_STRING  *akid;

    cacert = pki_ca_cert(ca);
    p = rec->der;
    cert = rec->der != NULL ? d2i_X509(NULL, &p, (long) rec->der_len)
                            : NULL;
    ok = 0;

    if (cert != NULL && cacert != NULL && p == rec->der + rec->der_len) {
        rc = X509_check_issued(cacert, cert);

        if (rc == X509_V_OK) {
            akid = X509_get0_authority_key_id(cert);
            skid = X509_get0_subject_key_id(cacert);
            ok = (akid != NULL && skid != NULL) || pki_ca_issued(ca, cert);

        } else if (rc == X509_V_ERR_AKID_SKID_MISMATCH) {
            /* the names match; the CA certificate was issued again for
             * the same key with another subjectKeyIdentifier (another
             * tool's method, RFC 7093's): the signature decides */
            ok = X509_get0_pubkey(cacert) != NULL
                 && X509_verify(cert, X509_get0_pubkey(cacert)) == 1;
        }
    }

    if (!ok) {
        if (cert == NULL
            || X509_NAME_oneline(X509_get_issuer_name(cert), issuer,
                                 sizeof(issuer))
               == NULL)
        {
            snprintf(issuer, sizeof(issuer), "?");
        }

        pki_log(res, "%sthe record of serial %s under CA \"%s\" holds a "
                "certificate that CA did not issue (issuer \"%s\"): "
                "answered as a serial it never issued",
                res->log[0] ? "; " : "", rec->serial, pki_ca_name(ca),
                issuer);
    }

    X509_free(cert);
    ERR_clear_error();

    return ok;
}


/* The status of every CertID of the request: its serial looked up under
 * every CA of conf, from index first on, that the CertID names.  A
 * revoked record wins over a good one (the first revoked one found gives
 * time and reason); unknown only if no CA has a good or revoked record.
 * singles[k].ca: the index of the CA whose record decided, or -1.
 *
 * All the records are read in one round trip (pki_int_records_fetch),
 * then taken in the order the CertIDs and CAs come, each as one
 * pki_record_get would give it.  PKI_OK, or the Redis failure (res): no
 * partial answer. */
static pki_status_t
pki_ocsp_lookup(const pki_ocsp_conf_t *conf, OCSP_REQUEST *oreq, int n,
    int first, time_t now, pki_ocsp_single_t *singles, pki_result_t *res)
{
    int                  k, i, *pca;
    char               (*hex)[41];
    size_t               j, np, max, *start;
    const char         **cas, **serials;
    OCSP_CERTID         *cid;
    pki_status_t         st, rst;
    pki_record_t         rec;
    pki_result_t         gres;
    ASN1_INTEGER        *serial;
    pki_ocsp_single_t   *s;
    pki_int_records_t   *recs;

    recs = NULL;
    max = (size_t) n * (conf->ncas > 0 ? conf->ncas : 1);

    hex = malloc((size_t) n * sizeof(*hex));
    start = malloc(((size_t) n + 1) * sizeof(*start));
    pca = malloc(max * sizeof(*pca));
    cas = malloc(max * sizeof(*cas));
    serials = malloc(max * sizeof(*serials));

    if (hex == NULL || start == NULL || pca == NULL || cas == NULL
        || serials == NULL)
    {
        st = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto done;
    }

    np = 0;

    for (k = 0; k < n; k++) {
        s = &singles[k];
        s->status = V_OCSP_CERTSTATUS_UNKNOWN;
        s->reason = -1;
        s->revoked_at = 0;
        s->invalidity = 0;
        s->planned = 0;
        s->ca = -1;
        s->pending = 0;
        start[k] = np;

        cid = OCSP_onereq_get0_id(OCSP_request_onereq_get0(oreq, k));
        serial = NULL;
        OCSP_id_get0_info(NULL, NULL, NULL, &serial, cid);
        if (serial == NULL || !pki_serial_to_hex(serial, hex[k])) {
            continue;                                   /* unknown */
        }

        for (i = first; i >= 0 && np < max;
             i = pki_ocsp_find_ca(conf, cid, (size_t) i + 1))
        {
            pca[np] = i;
            cas[np] = pki_ca_name(conf->cas[i]);
            serials[np] = hex[k];
            np++;
        }
    }

    start[n] = np;

    st = pki_int_records_fetch(conf->redis, cas, serials, np, &recs, res);
    if (st != PKI_OK) {
        goto done;
    }

    for (k = 0; k < n; k++) {
        s = &singles[k];

        for (j = start[k]; j < start[k + 1]; j++) {
            pki_result_init(&gres);
            rst = pki_int_records_get(recs, j, &rec, &gres);

            if (rst != PKI_OK && rst != PKI_NOT_FOUND) {
                pki_record_clear(&rec);
                *res = gres;
                st = rst;
                goto done;
            }

            /* a record of a certificate another CA (or this CA's former
             * key) issued: as if there were none, before anything is
             * answered or cached */
            if (rst == PKI_OK && rec.status != PKI_CERT_PENDING
                && !pki_ocsp_issued(conf->cas[pca[j]], &rec, res))
            {
                pki_record_clear(&rec);
                continue;
            }

            /* a due plan is a revocation, carried out or not */
            if (rst == PKI_OK) {
                (void) pki_record_at(&rec, now);
            }

            if (rst == PKI_OK && rec.status == PKI_CERT_PENDING) {
                s->pending = 1;
            }

            if (rst == PKI_OK && rec.status == PKI_CERT_REVOKED) {
                s->status = V_OCSP_CERTSTATUS_REVOKED;
                /* unspecified (0), and a value RFC 5280 does not name,
                 * leave revocationReason out, as the CRL leaves
                 * reasonCode out (RFC 5280 5.3.1) */
                s->reason = rec.reason > 0 && rec.reason <= 10
                            && rec.reason != 7 ? rec.reason : -1;
                /* a record without a usable time (written by hand, or
                 * damaged) says "revoked since now", as the CRL does,
                 * rather than 1970 */
                s->revoked_at = rec.revoked_at > 0
                                && rec.revoked_at <= PKI_TIME_MAX
                                ? rec.revoked_at : now;
                /* and an invalidity date out of range is left out, as
                 * the CRL leaves it out (it cannot be encoded: the whole
                 * answer would be internalError) */
                s->invalidity = rec.invalidity_date > 0
                                && rec.invalidity_date <= PKI_TIME_MAX
                                ? rec.invalidity_date : 0;
                s->ca = pca[j];
                pki_record_clear(&rec);
                break;
            }

            if (rst == PKI_OK && rec.status == PKI_CERT_GOOD) {
                /* the earliest plan of every good record the CertID
                 * names (two CAs of one key): the answer says good for
                 * all of them, so it ends at the first to take effect */
                if (rec.revoke_planned > 0
                    && (s->planned <= 0 || rec.revoke_planned < s->planned))
                {
                    s->planned = rec.revoke_planned;
                }

                if (s->ca < 0) {
                    s->status = V_OCSP_CERTSTATUS_GOOD;
                    s->ca = pca[j];
                }
            }

            pki_record_clear(&rec);
        }
    }

    st = PKI_OK;

done:

    pki_int_records_free(recs);
    free(hex);
    free(start);
    free(pca);
    free(cas);
    free(serials);

    return st;
}


void
pki_ocsp_handle(const pki_ocsp_conf_t *conf, const pki_ocsp_req_t *req,
    pki_ocsp_resp_t *resp)
{
    int                   i, n, nonce, st, reason, ext_revoke, added;
    int                   idx, first, signer, pending;
    time_t                now, inval, next, na;
    size_t                derlen;
    OCSP_CERTID          *cid;
    pki_status_t          rst;
    OCSP_REQUEST         *oreq;
    OCSP_BASICRESP       *bs;
    OCSP_SINGLERESP      *single;
    unsigned char        *decoded, md[SHA_DIGEST_LENGTH];
    pki_ocsp_single_t     singles[PKI_OCSP_MAX_IDS];
    ASN1_GENERALIZEDTIME *this_upd, *next_upd, *rev_time, *epoch;
    ASN1_GENERALIZEDTIME *inval_time;
    const unsigned char  *der;
    const pki_ocsp_signer_t  *sg;

    memset(resp, 0, sizeof(*resp));
    pki_result_init(&resp->res);
    ERR_clear_error();

    decoded = NULL;
    oreq = NULL;
    bs = NULL;
    this_upd = next_upd = rev_time = epoch = inval_time = NULL;
    first = -1;
    ext_revoke = 0;
    pending = 0;

    if (req->method == NULL
        || (strcmp(req->method, "POST") != 0
            && strcmp(req->method, "GET") != 0))
    {
        pki_fail(&resp->res, PKI_UNSUPPORTED, "method not allowed");
        resp->http_status = 405;
        return;
    }

    if (conf->redis == NULL) {
        pki_ocsp_fail(resp, OCSP_RESPONSE_STATUS_TRYLATER, PKI_UNAVAILABLE,
                      "no Redis configured");
        return;
    }

    if (req->body == NULL || req->body_len == 0) {
        pki_ocsp_fail(resp, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST,
                      PKI_MALFORMED, "empty OCSP request");
        return;
    }

    if (req->body_len > PKI_OCSP_MAX_BODY) {
        pki_ocsp_fail(resp, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST,
                      PKI_TOO_LARGE, "OCSP request too large");
        return;
    }

    if (strcmp(req->method, "POST") == 0) {
        if (req->content_type != NULL
            && !pki_media_type_is(req->content_type,
                                  "application/ocsp-request"))
        {
            pki_ocsp_fail(resp, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST,
                          PKI_UNSUPPORTED,
                          "content type is not application/ocsp-request");
            return;
        }
        der = req->body;
        derlen = req->body_len;

    } else {
        if (pki_base64_decode(req->body, req->body_len, &decoded, &derlen,
                              &resp->res)
            != PKI_OK)
        {
            pki_ocsp_fail(resp, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST,
                          PKI_MALFORMED, "bad base64 in the OCSP GET URL");
            return;
        }
        der = decoded;
    }

    /* the signature's certificates are not decoded (pki_ocsp_decode) */
    oreq = pki_ocsp_decode(der, derlen);
    if (oreq == NULL) {
        pki_ocsp_fail(resp, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST,
                      PKI_MALFORMED, "malformed OCSP request");
        goto done;
    }

    n = OCSP_request_onereq_count(oreq);
    if (n <= 0 || n > PKI_OCSP_MAX_IDS) {
        pki_ocsp_fail(resp, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST,
                      PKI_MALFORMED, n <= 0 ? "no CertID in the OCSP request"
                                            : "too many CertIDs");
        goto done;
    }

    if (!pki_ocsp_nonce_ok(oreq, &nonce)) {
        pki_ocsp_fail(resp, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST,
                      PKI_MALFORMED, "bad nonce (1 to 128 octets)");
        goto done;
    }

    if (!pki_ocsp_exts_understood(oreq)) {
        pki_ocsp_fail(resp, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST,
                      PKI_MALFORMED, "critical OCSP request extension not "
                      "understood");
        goto done;
    }

    /* every CertID must name one of our CAs, and one CA signs: the CAs
     * a CertID names (several if a CA was re-certified with the same
     * subject and key) must be the same for all */
    for (i = 0; i < n; i++) {
        cid = OCSP_onereq_get0_id(OCSP_request_onereq_get0(oreq, i));
        idx = pki_ocsp_find_ca(conf, cid, 0);
        if (idx < 0 || (first >= 0 && idx != first)) {
            pki_ocsp_fail(resp, OCSP_RESPONSE_STATUS_UNAUTHORIZED,
                          PKI_UNAUTHORIZED, idx < 0
                          ? "OCSP request for an issuer this responder "
                            "does not serve"
                          : "OCSP request for several issuers");
            goto done;
        }
        first = idx;
    }

    /* One time for the whole answer: the records are judged at the time
     * the answer states (thisUpdate).  Read again after the lookup, a
     * planned revocation that came due in between left a "good" judged
     * a second before with a nextUpdate an hour past the plan, which the
     * response cache then served (a carry-out drops no cached answer). */
    now = time(NULL);

    /* the records, all in one round trip; the CA whose record answered
     * the first CertID that has one signs (any of them verifies: same
     * name and key) */
    rst = pki_ocsp_lookup(conf, oreq, n, first, now, singles, &resp->res);
    if (rst != PKI_OK) {
        pki_ocsp_status_only(resp, rst == PKI_UNAVAILABLE
                                   ? OCSP_RESPONSE_STATUS_TRYLATER
                                   : OCSP_RESPONSE_STATUS_INTERNALERROR);
        goto done;
    }

    signer = -1;

    for (i = 0; i < n && signer < 0; i++) {
        signer = singles[i].ca;
    }

    if (signer < 0) {
        signer = first;
    }

    /* Past the end of what the CA signs (pki_ca_end: its notAfter, or an
     * earlier one of a certificate above it in its chain) no response is
     * signed, by the CA key or a delegated responder it certified: no
     * verifier validates its signer then (RFC 6960 4.2.2.2 with RFC 5280
     * 6.1.3 (a)(2): a path valid now), and the key would sign past the
     * certificates that vouch for it.  Another declaration of this CA
     * (same name and key, pki_ocsp_find_ca), renewed, signs instead: a
     * response signed by the CA key carries no certificate, and verifies
     * with either.  Without one the answer is tryLater, not unauthorized:
     * this responder is the authority for the CA's certificates, and a
     * renewed CA certificate (a reload) answers again for the same
     * CertIDs; tryLater also lets the response cache serve an answer
     * still fresh, and every answer ends by then (nextUpdate, below), so
     * none is served past the end.  Answers that tell no more than
     * unknown or revoked would need no trust in the CA either, but a
     * verifier checks them alike: none is signed.  Logged as an error:
     * the operator's to fix. */
    if (pki_ca_live(conf->cas[signer], now, NULL) != PKI_OK) {
        idx = pki_ocsp_find_ca(conf,
                  OCSP_onereq_get0_id(OCSP_request_onereq_get0(oreq, 0)), 0);

        for ( /* void */ ; idx >= 0; idx = pki_ocsp_find_ca(conf,
                  OCSP_onereq_get0_id(OCSP_request_onereq_get0(oreq, 0)),
                  (size_t) idx + 1))
        {
            if (pki_ca_live(conf->cas[idx], now, NULL) == PKI_OK) {
                break;
            }
        }

        if (idx < 0) {
            (void) pki_ca_live(conf->cas[signer], now, &resp->res);
            resp->res.status = PKI_INTERNAL;
            pki_ocsp_status_only(resp, OCSP_RESPONSE_STATUS_TRYLATER);
            goto done;
        }

        signer = idx;
    }

    /* The signer comes before nextUpdate: an answer a delegated responder
     * signs ends no later than its certificate (notAfter).  Otherwise the
     * answer, and with it the response cache and HTTP caches that keep it
     * until nextUpdate, would outlive the certificate, and verifiers would
     * get an answer signed by an expired responder.  Once it expired, the
     * CA key signs (pki_ocsp_signer). */
    sg = pki_ocsp_signer(conf, conf->cas[signer], now, &resp->res);
    next = conf->next_update > 0 ? now + conf->next_update : 0;

    if (sg != NULL) {
        na = pki_int_asn1_time(X509_get0_notAfter(sg->cert));
        if (na <= now) {
            sg = NULL;                  /* unreadable: the CA key signs */

        } else if (next > 0 && na < next) {
            next = na;
        }
    }

    /* and no later than the CA certificate and its chain (pki_ca_end),
     * whoever signs: no verifier trusts the CA, nor a responder it
     * certified (one made with beyond_ca_expiry may outlive it), past
     * then.  The signer is live (above): the end comes after thisUpdate */
    if (next > 0) {
        na = pki_ca_end(conf->cas[signer]);
        if (na > now && na < next) {
            next = na;
        }
    }

    /* a good answer ends when a planned revocation of its certificate
     * takes effect: neither a cache nor a verifier keeps "good" past it */
    for (i = 0; next > 0 && i < n; i++) {
        if (singles[i].status == V_OCSP_CERTSTATUS_GOOD
            && singles[i].planned > now && singles[i].planned < next)
        {
            next = singles[i].planned;
        }
    }

    /* unknown for a serial being issued (its record pending) holds for
     * this moment only: no nextUpdate (newer information is always
     * there, RFC 6960 2.4) and no cache keeps it, or the certificate
     * would read unknown (or, with unknown_revoked, revoked) after its
     * issuance until the answer's nextUpdate */
    for (i = 0; i < n; i++) {
        if (singles[i].status == V_OCSP_CERTSTATUS_UNKNOWN
            && singles[i].pending)
        {
            next = 0;
            pending = 1;
        }
    }

    bs = OCSP_BASICRESP_new();
    this_upd = ASN1_GENERALIZEDTIME_set(NULL, now);
    if (next > 0) {
        next_upd = ASN1_GENERALIZEDTIME_set(NULL, next);
    }
    if (bs == NULL || this_upd == NULL || (next > 0 && next_upd == NULL)) {
        pki_ocsp_fail(resp, OCSP_RESPONSE_STATUS_INTERNALERROR, PKI_INTERNAL,
                      "out of memory");
        goto done;
    }

    for (i = 0; i < n; i++) {
        cid = OCSP_onereq_get0_id(OCSP_request_onereq_get0(oreq, i));
        st = singles[i].status;
        reason = singles[i].reason;
        inval = singles[i].invalidity;
        ASN1_GENERALIZEDTIME_free(rev_time);
        rev_time = NULL;

        if (st == V_OCSP_CERTSTATUS_REVOKED) {
            rev_time = ASN1_GENERALIZEDTIME_set(NULL, singles[i].revoked_at);
        }

        if (st == V_OCSP_CERTSTATUS_UNKNOWN && conf->unknown_revoked) {
            if (epoch == NULL) {
                epoch = ASN1_GENERALIZEDTIME_set(NULL, 0);
            }
            st = V_OCSP_CERTSTATUS_REVOKED;
            reason = OCSP_REVOKED_STATUS_CERTIFICATEHOLD;
            rev_time = epoch ? ASN1_STRING_dup(epoch) : NULL;
            ext_revoke = 1;
        }

        if (st == V_OCSP_CERTSTATUS_REVOKED && rev_time == NULL) {
            pki_ocsp_fail(resp, OCSP_RESPONSE_STATUS_INTERNALERROR,
                          PKI_INTERNAL, "out of memory");
            goto done;
        }

        single = OCSP_basic_add1_status(bs, cid, st, reason, rev_time,
                                        this_upd, next_upd);
        added = single != NULL;

        /* RFC 5280 5.3.2 invalidity date as a singleExtension */
        if (added && st == V_OCSP_CERTSTATUS_REVOKED && inval > 0) {
            ASN1_GENERALIZEDTIME_free(inval_time);
            inval_time = ASN1_GENERALIZEDTIME_set(NULL, inval);
            added = inval_time != NULL
                    && OCSP_SINGLERESP_add1_ext_i2d(single,
                           NID_invalidity_date, inval_time, 0, 0) > 0;
        }

        if (!added) {
            pki_ocsp_fail(resp, OCSP_RESPONSE_STATUS_INTERNALERROR,
                          PKI_INTERNAL, "cannot add an OCSP status");
            goto done;
        }
    }

    if ((nonce && OCSP_copy_nonce(bs, oreq) <= 0)
        || (ext_revoke && !pki_ocsp_add_extended_revoke(bs)))
    {
        pki_ocsp_fail(resp, OCSP_RESPONSE_STATUS_INTERNALERROR, PKI_INTERNAL,
                      "cannot add an OCSP response extension");
        goto done;
    }

    pki_ocsp_sign_and_wrap(conf->cas[signer], sg, bs, now, resp);

    if (resp->ocsp_status == OCSP_RESPONSE_STATUS_SUCCESSFUL
        && resp->body != NULL)
    {
        resp->cacheable = !nonce && !pending;
        resp->this_update = now;
        resp->next_update = next;
        SHA1(resp->body, resp->body_len, md);
        for (i = 0; i < SHA_DIGEST_LENGTH; i++) {
            snprintf(resp->etag + 2 * i, 3, "%02x", md[i]);
        }
    }

done:

    ASN1_GENERALIZEDTIME_free(this_upd);
    ASN1_GENERALIZEDTIME_free(next_upd);
    ASN1_GENERALIZEDTIME_free(rev_time);
    ASN1_GENERALIZEDTIME_free(epoch);
    ASN1_GENERALIZEDTIME_free(inval_time);
    OCSP_BASICRESP_free(bs);
    OCSP_REQUEST_free(oreq);
    free(decoded);
}


pki_status_t
pki_ocsp_signer_check(const pki_ocsp_signer_t *s, pki_result_t *res)
{
    EVP_PKEY  *pub;

    if (s == NULL || s->ca == NULL || s->cert == NULL || s->key == NULL) {
        return pki_fail(res, PKI_INTERNAL, "incomplete OCSP signer");
    }

    if (!pki_ca_issued(s->ca, s->cert)) {
        return pki_fail(res, PKI_MALFORMED,
                        "the OCSP responder certificate was not issued by "
                        "CA \"%s\"", pki_ca_name(s->ca));
    }

    if (!(X509_get_extension_flags(s->cert) & EXFLAG_XKUSAGE)
        || !(X509_get_extended_key_usage(s->cert) & XKU_OCSP_SIGN))
    {
        return pki_fail(res, PKI_MALFORMED,
                        "the OCSP responder certificate lacks "
                        "extendedKeyUsage OCSPSigning");
    }

    /* Warnings (res->log), not refusals: a reload that fails takes every
     * module down, not just OCSP.  RFC 6960 4.2.2.2.1: without nocheck
     * (or another way named there) a client may ask the responder
     * certificate's own status, and only one issued through this CA has
     * a record to answer from. */
    if (X509_get_ext_by_NID(s->cert, NID_id_pkix_OCSP_noCheck, -1) < 0) {
        pki_log(res, "%sthe responder certificate lacks "
                "id-pkix-ocsp-nocheck: clients that check its own status "
                "need its record here or a CRL of it",
                res->log[0] ? "; " : "");
    }

    if (X509_cmp_current_time(X509_get0_notBefore(s->cert)) > 0
        || X509_cmp_current_time(X509_get0_notAfter(s->cert)) < 0)
    {
        pki_log(res, "%sthe responder certificate is not valid now "
                "(notBefore/notAfter): responses signed with it will not "
                "verify", res->log[0] ? "; " : "");
    }

    pub = pki_key_public(s->key);
    if (pub == NULL || EVP_PKEY_eq(pub, X509_get0_pubkey(s->cert)) != 1) {
        return pki_fail(res, PKI_MALFORMED,
                        "the OCSP responder key does not match its "
                        "certificate");
    }

    return PKI_OK;
}


void
pki_ocsp_resp_free(pki_ocsp_resp_t *resp)
{
    if (resp != NULL) {
        free(resp->body);
        resp->body = NULL;
        resp->body_len = 0;
    }
}


pki_status_t
pki_ocsp_cache_key(const pki_ocsp_req_t *req, const unsigned char *salt,
    size_t salt_len, unsigned char key[PKI_OCSP_KEY_LEN], pki_result_t *res)
{
    int                   i, n, len, nonce;
    size_t                derlen;
    EVP_MD_CTX           *mdctx;
    pki_result_t          local;
    pki_status_t          st;
    OCSP_REQUEST         *oreq;
    OCSP_CERTID          *cid;
    unsigned char        *decoded, *cder, buf[512], *bp;
    const unsigned char  *der;

    if (res == NULL) {
        res = &local;
    }
    pki_result_init(res);

    decoded = NULL;
    oreq = NULL;
    mdctx = NULL;

    if (req == NULL || req->method == NULL || req->body == NULL
        || req->body_len == 0 || req->body_len > PKI_OCSP_MAX_BODY)
    {
        return pki_fail(res, PKI_MALFORMED, "no usable OCSP request");
    }

    if (strcmp(req->method, "POST") == 0) {
        if (req->content_type != NULL
            && !pki_media_type_is(req->content_type,
                                  "application/ocsp-request"))
        {
            return pki_fail(res, PKI_UNSUPPORTED, "bad content type");
        }
        der = req->body;
        derlen = req->body_len;

    } else if (strcmp(req->method, "GET") == 0) {
        if (pki_base64_decode(req->body, req->body_len, &decoded, &derlen,
                              res)
            != PKI_OK)
        {
            return res->status;
        }
        der = decoded;

    } else {
        return pki_fail(res, PKI_UNSUPPORTED, "method");
    }

    st = PKI_MALFORMED;

    /* on the event loop: a request signature's certificates are not
     * decoded (pki_ocsp_decode) */
    oreq = pki_ocsp_decode(der, derlen);
    if (oreq == NULL) {
        pki_fail(res, PKI_MALFORMED, "malformed OCSP request");
        goto done;
    }

    n = OCSP_request_onereq_count(oreq);
    if (n <= 0 || n > PKI_OCSP_MAX_IDS) {
        pki_fail(res, PKI_MALFORMED, "CertID count");
        goto done;
    }

    /* answered malformedRequest by pki_ocsp_handle, never from a cache */
    if (!pki_ocsp_exts_understood(oreq)) {
        pki_fail(res, PKI_MALFORMED, "critical extension not understood");
        goto done;
    }

    if (!pki_ocsp_nonce_ok(oreq, &nonce)
        || OCSP_REQUEST_get_ext_by_NID(oreq, NID_id_pkix_OCSP_Nonce, -1) >= 0)
    {
        st = PKI_UNSUPPORTED;
        pki_fail(res, PKI_UNSUPPORTED, "request has a nonce");
        goto done;
    }

    mdctx = EVP_MD_CTX_new();
    if (mdctx == NULL || !EVP_DigestInit_ex(mdctx, EVP_sha256(), NULL)
        || (salt_len > 0 && !EVP_DigestUpdate(mdctx, salt, salt_len)))
    {
        st = PKI_INTERNAL;
        pki_fail(res, PKI_INTERNAL, "digest");
        goto done;
    }

    for (i = 0; i < n; i++) {
        cid = OCSP_onereq_get0_id(OCSP_request_onereq_get0(oreq, i));

        len = i2d_OCSP_CERTID(cid, NULL);
        if (len <= 0) {
            pki_fail(res, PKI_MALFORMED, "CertID");
            goto done;
        }

        cder = NULL;
        if ((size_t) len <= sizeof(buf)) {
            bp = buf;
            i2d_OCSP_CERTID(cid, &bp);
            cder = buf;

        } else if (i2d_OCSP_CERTID(cid, &cder) != len) {
            OPENSSL_free(cder);
            pki_fail(res, PKI_MALFORMED, "CertID");
            goto done;
        }

        if (!EVP_DigestUpdate(mdctx, cder, (size_t) len)) {
            if (cder != buf) {
                OPENSSL_free(cder);
            }
            st = PKI_INTERNAL;
            pki_fail(res, PKI_INTERNAL, "digest");
            goto done;
        }

        if (cder != buf) {
            OPENSSL_free(cder);
        }
    }

    if (!EVP_DigestFinal_ex(mdctx, key, NULL)) {
        st = PKI_INTERNAL;
        pki_fail(res, PKI_INTERNAL, "digest");
        goto done;
    }

    st = PKI_OK;

done:

    EVP_MD_CTX_free(mdctx);
    OCSP_REQUEST_free(oreq);
    free(decoded);
    ERR_clear_error();

    return st;
}


/* The key that signs the answers for ca at now, as pki_ocsp_handle()
 * picks it: its delegated responder's while that one is valid, else the
 * CA's own. */
static pki_key_t *
pki_ocsp_signing_key(const pki_ocsp_conf_t *conf, pki_ca_t *ca, time_t now)
{
    const pki_ocsp_signer_t  *sg;

    sg = pki_ocsp_signer(conf, ca, now, NULL);

    if (sg != NULL
        && pki_int_asn1_time(X509_get0_notAfter(sg->cert)) > now)
    {
        return sg->key;
    }

    return pki_ca_key(ca);
}


PKI_API int
pki_ocsp_hung(const pki_ocsp_conf_t *conf, const pki_ocsp_req_t *req)
{
    int                   i, n, idx, hung;
    size_t                j, derlen;
    time_t                now;
    OCSP_CERTID          *cid;
    pki_result_t          res;
    OCSP_REQUEST         *oreq;
    unsigned char        *decoded;
    const unsigned char  *der;

    if (conf == NULL || req == NULL) {
        return 0;
    }

    /* the usual case: no key of the responder is hung, nothing to parse */
    hung = 0;

    for (j = 0; j < conf->ncas && !hung; j++) {
        hung = pki_key_hung(pki_ca_key(conf->cas[j])) != 0;
    }

    for (j = 0; conf->signers != NULL && j < conf->nsigners && !hung; j++) {
        hung = pki_key_hung(conf->signers[j].key) != 0;
    }

    if (!hung || req->method == NULL || req->body == NULL
        || req->body_len == 0 || req->body_len > PKI_OCSP_MAX_BODY)
    {
        return 0;
    }

    decoded = NULL;

    if (strcmp(req->method, "POST") == 0) {
        der = req->body;
        derlen = req->body_len;

    } else {
        pki_result_init(&res);

        if (pki_base64_decode(req->body, req->body_len, &decoded, &derlen,
                              &res)
            != PKI_OK)
        {
            return 0;
        }

        der = decoded;
    }

    hung = 0;

    oreq = pki_ocsp_decode(der, derlen);
    if (oreq == NULL) {
        goto done;
    }

    n = OCSP_request_onereq_count(oreq);
    if (n <= 0 || n > PKI_OCSP_MAX_IDS) {
        goto done;
    }

    now = time(NULL);

    /* every CA a CertID names may be the one that signs (the lookup in
     * Redis decides among a re-certified CA's declarations) */
    for (i = 0; i < n && !hung; i++) {
        cid = OCSP_onereq_get0_id(OCSP_request_onereq_get0(oreq, i));

        for (idx = pki_ocsp_find_ca(conf, cid, 0);
             idx >= 0 && !hung;
             idx = pki_ocsp_find_ca(conf, cid, (size_t) idx + 1))
        {
            hung = pki_key_hung(pki_ocsp_signing_key(conf, conf->cas[idx],
                                                     now))
                   != 0;
        }
    }

done:

    OCSP_REQUEST_free(oreq);
    free(decoded);
    ERR_clear_error();

    return hung;
}
