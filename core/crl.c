/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * RFC 5280 v2 CRLs: issuer = the CA's subject, thisUpdate / nextUpdate,
 * CRL number, authorityKeyIdentifier, one entry per revoked or held serial
 * with its reasonCode (omitted for unspecified) and invalidityDate.  The CRL
 * is signed with the CA key through pki_key_sign_crl(), which verifies the
 * signature before it is released.
 *
 * Building only: coalescing rebuilds and serving belong to the glue.
 */

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "pki.h"


/* Longest nextUpdate - thisUpdate accepted: one year. */
#define PKI_CRL_MAX_NEXT_UPDATE  (366L * 24 * 3600)

/* Reason codes: 0..10 without 7 (unused); 8 (removeFromCRL) belongs only in
 * delta CRLs and never names a revoked serial in a full CRL. */
#define PKI_CRL_REASON_MAX       10
#define PKI_CRL_REMOVE_FROM_CRL  8


typedef struct {
    X509_CRL         *crl;
    time_t            now;
    ASN1_TIME        *now_time;     /* fallback revocationDate          */
    X509_EXTENSION   *reason_ext[PKI_CRL_REASON_MAX + 1];  /* shared, dup'd */
    BIGNUM           *bn;
    size_t            count;
    size_t            skipped_serial;
    size_t            skipped_remove;
    size_t            bad_reason;
    size_t            bad_time;
    int               failed;       /* sticky: allocation failure       */
    pki_result_t     *res;
} pki_crl_builder_t;


static void
pki_crl_builder_free(pki_crl_builder_t *b)
{
    int  i;

    X509_CRL_free(b->crl);
    ASN1_TIME_free(b->now_time);
    BN_free(b->bn);

    for (i = 0; i <= PKI_CRL_REASON_MAX; i++) {
        X509_EXTENSION_free(b->reason_ext[i]);
    }

    memset(b, 0, sizeof(*b));
}


static int
pki_crl_builder_init(pki_crl_builder_t *b, time_t now, pki_result_t *res)
{
    memset(b, 0, sizeof(*b));
    b->now = now;
    b->res = res;
    b->crl = X509_CRL_new();
    b->now_time = ASN1_TIME_set(NULL, now);
    b->bn = BN_new();

    if (b->crl == NULL || b->now_time == NULL || b->bn == NULL) {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        pki_crl_builder_free(b);
        return 0;
    }

    return 1;
}


/* The reasonCode extension for reason, built once per code and shared. */
static X509_EXTENSION *
pki_crl_reason_ext(pki_crl_builder_t *b, int reason)
{
    ASN1_ENUMERATED  *e;

    if (b->reason_ext[reason] != NULL) {
        return b->reason_ext[reason];
    }

    e = ASN1_ENUMERATED_new();
    if (e == NULL || !ASN1_ENUMERATED_set(e, reason)) {
        ASN1_ENUMERATED_free(e);
        return NULL;
    }

    b->reason_ext[reason] = X509V3_EXT_i2d(NID_crl_reason, 0, e);
    ASN1_ENUMERATED_free(e);

    return b->reason_ext[reason];
}


/* Adds one entry.  Returns 1 to go on, 0 to stop (allocation failure).
 * Bad data from the store never stops the build: an unparsable serial
 * cannot name a certificate and is skipped (and counted); a bad reason or
 * time keeps the entry (a revocation must never get lost) without the
 * reason, or with thisUpdate as its date. */
static int
pki_crl_add(void *arg, const char *serial, int reason, time_t revoked_at,
    time_t invalidity_date)
{
    pki_crl_builder_t  *b;
    char                   canon[41];
    ASN1_TIME             *t;
    X509_REVOKED          *rev;
    ASN1_INTEGER          *ai;
    X509_EXTENSION        *ext;
    ASN1_GENERALIZEDTIME  *gt;

    b = arg;
    rev = NULL;
    t = NULL;
    gt = NULL;

    if (b->failed) {
        return 0;
    }

    if (serial == NULL || !pki_serial_normalize(serial, canon)) {
        b->skipped_serial++;
        return 1;
    }

    if (reason == PKI_CRL_REMOVE_FROM_CRL) {
        b->skipped_remove++;
        return 1;
    }

    if (reason < 0 || reason > PKI_CRL_REASON_MAX || reason == 7) {
        b->bad_reason++;
        reason = 0;
    }

    rev = X509_REVOKED_new();
    if (rev == NULL) {
        goto failed;
    }

    if (BN_hex2bn(&b->bn, canon) == 0) {
        goto failed;
    }

    /* Written into the entry's embedded INTEGER: no copy. */
    ai = (ASN1_INTEGER *) X509_REVOKED_get0_serialNumber(rev);
    if (BN_to_ASN1_INTEGER(b->bn, ai) != ai) {
        goto failed;
    }

    t = NULL;
    if (revoked_at > 0) {
        t = ASN1_TIME_set(NULL, revoked_at);
    }
    if (t == NULL) {
        if (revoked_at != 0) {
            b->bad_time++;
        }
        if (!X509_REVOKED_set_revocationDate(rev, b->now_time)) {
            goto failed;
        }
    } else if (!X509_REVOKED_set_revocationDate(rev, t)) {
        goto failed;
    }

    if (reason != 0) {
        ext = pki_crl_reason_ext(b, reason);
        if (ext == NULL || !X509_REVOKED_add_ext(rev, ext, -1)) {
            goto failed;
        }
    }

    if (invalidity_date > 0) {
        gt = ASN1_GENERALIZEDTIME_set(NULL, invalidity_date);
        if (gt == NULL) {
            b->bad_time++;
        } else if (!X509_REVOKED_add1_ext_i2d(rev, NID_invalidity_date, gt,
                                              0, 0))
        {
            goto failed;
        }
    }

    if (!X509_CRL_add0_revoked(b->crl, rev)) {
        goto failed;
    }

    ASN1_TIME_free(t);
    ASN1_GENERALIZEDTIME_free(gt);
    b->count++;

    return 1;

failed:

    X509_REVOKED_free(rev);
    ASN1_TIME_free(t);
    ASN1_GENERALIZEDTIME_free(gt);
    b->failed = 1;

    return 0;
}


/* keyid of the CA: its subjectKeyIdentifier, else the SHA-1 of its public
 * key BIT STRING (RFC 5280 4.2.1.2, method 1). */
static int
pki_crl_add_akid(X509_CRL *crl, X509 *cacert)
{
    int                       ok;
    unsigned int              mdlen;
    AUTHORITY_KEYID          *akid;
    const ASN1_OCTET_STRING  *skid;
    unsigned char             md[EVP_MAX_MD_SIZE];

    akid = AUTHORITY_KEYID_new();
    if (akid == NULL) {
        return 0;
    }

    ok = 0;
    akid->keyid = ASN1_OCTET_STRING_new();
    if (akid->keyid == NULL) {
        goto done;
    }

    skid = X509_get0_subject_key_id(cacert);
    if (skid != NULL && ASN1_STRING_length(skid) > 0) {
        if (!ASN1_OCTET_STRING_set(akid->keyid, ASN1_STRING_get0_data(skid),
                                   ASN1_STRING_length(skid)))
        {
            goto done;
        }

    } else {
        if (!X509_pubkey_digest(cacert, EVP_sha1(), md, &mdlen)
            || !ASN1_OCTET_STRING_set(akid->keyid, md, (int) mdlen))
        {
            goto done;
        }
    }

    ok = X509_CRL_add1_ext_i2d(crl, NID_authority_key_identifier, akid, 0,
                               X509V3_ADD_REPLACE) == 1;

done:

    AUTHORITY_KEYID_free(akid);

    return ok;
}


/* Sets everything but the entries, signs, encodes. */
static pki_status_t
pki_crl_finish(pki_ca_t *ca, pki_crl_builder_t *b, long long number,
    long next_update_secs, unsigned char **der, size_t *len,
    pki_result_t *res)
{
    int             n;
    X509           *cacert;
    ASN1_TIME      *next;
    ASN1_INTEGER   *num;
    unsigned char  *buf, *p;
    pki_status_t    st;

    cacert = pki_ca_cert(ca);
    next = NULL;
    num = NULL;

    if (b->skipped_serial || b->skipped_remove || b->bad_reason
        || b->bad_time)
    {
        pki_log(res, "CRL of CA \"%s\": skipped %zu bad serials and %zu "
                "removeFromCRL entries; %zu bad reasons, %zu bad times kept "
                "without them; ", pki_ca_name(ca), b->skipped_serial,
                b->skipped_remove, b->bad_reason, b->bad_time);
    }

    if (number <= 0) {
        return pki_fail(res, PKI_INTERNAL, "bad CRL number");
    }

    num = ASN1_INTEGER_new();
    next = ASN1_TIME_set(NULL, b->now + next_update_secs);

    if (num == NULL || next == NULL
        || !ASN1_INTEGER_set_int64(num, number)
        || !X509_CRL_set_version(b->crl, X509_CRL_VERSION_2)
        || !X509_CRL_set_issuer_name(b->crl, X509_get_subject_name(cacert))
        || !X509_CRL_set1_lastUpdate(b->crl, b->now_time)
        || !X509_CRL_set1_nextUpdate(b->crl, next)
        || !pki_crl_add_akid(b->crl, cacert)
        || X509_CRL_add1_ext_i2d(b->crl, NID_crl_number, num, 0,
                                 X509V3_ADD_REPLACE) != 1)
    {
        st = pki_fail(res, PKI_INTERNAL, "cannot build the CRL");
        goto done;
    }

    if (b->count > 0 && !X509_CRL_sort(b->crl)) {
        st = pki_fail(res, PKI_INTERNAL, "cannot build the CRL");
        goto done;
    }

    st = pki_key_sign_crl(pki_ca_key(ca), b->crl, res);
    if (st != PKI_OK) {
        goto done;
    }

    n = i2d_X509_CRL(b->crl, NULL);
    if (n <= 0) {
        st = pki_fail(res, PKI_INTERNAL, "cannot encode the CRL");
        goto done;
    }

    buf = malloc((size_t) n);
    if (buf == NULL) {
        st = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto done;
    }

    p = buf;
    if (i2d_X509_CRL(b->crl, &p) != n) {
        free(buf);
        st = pki_fail(res, PKI_INTERNAL, "cannot encode the CRL");
        goto done;
    }

    *der = buf;
    *len = (size_t) n;
    st = PKI_OK;

done:

    ASN1_INTEGER_free(num);
    ASN1_TIME_free(next);

    return st;
}


static pki_status_t
pki_crl_check_args(pki_ca_t *ca, long next_update_secs, unsigned char **der,
    size_t *len, pki_result_t *res)
{
    if (der == NULL || len == NULL) {
        return pki_fail(res, PKI_INTERNAL, "CRL: no output");
    }

    *der = NULL;
    *len = 0;

    if (ca == NULL || pki_ca_cert(ca) == NULL || pki_ca_key(ca) == NULL) {
        return pki_fail(res, PKI_INTERNAL, "CRL: CA not ready");
    }

    if (next_update_secs <= 0 || next_update_secs > PKI_CRL_MAX_NEXT_UPDATE) {
        return pki_fail(res, PKI_INTERNAL, "CRL: bad nextUpdate interval");
    }

    return PKI_OK;
}


PKI_API pki_status_t
pki_crl_build_list(pki_ca_t *ca, const pki_crl_entry_t *entries, size_t n,
    long long number, time_t now, long next_update_secs,
    unsigned char **der, size_t *len, pki_result_t *res)
{
    size_t             i;
    pki_status_t       st;
    pki_crl_builder_t  b;

    st = pki_crl_check_args(ca, next_update_secs, der, len, res);
    if (st != PKI_OK) {
        return st;
    }

    if (entries == NULL && n != 0) {
        return pki_fail(res, PKI_INTERNAL, "CRL: no entries");
    }

    if (!pki_crl_builder_init(&b, now > 0 ? now : time(NULL), res)) {
        return res->status;
    }

    for (i = 0; i < n; i++) {
        if (!pki_crl_add(&b, entries[i].serial, entries[i].reason,
                         entries[i].revoked_at, entries[i].invalidity_date))
        {
            break;
        }
    }

    if (b.failed) {
        st = pki_fail(res, PKI_INTERNAL, "out of memory");
    } else {
        st = pki_crl_finish(ca, &b, number, next_update_secs, der, len, res);
    }

    pki_crl_builder_free(&b);

    return st;
}


PKI_API pki_status_t
pki_crl_build(pki_ca_t *ca, pki_redis_t *r, long next_update_secs,
    unsigned char **der, size_t *len, pki_result_t *res)
{
    long long          number;
    pki_status_t       st;
    pki_crl_builder_t  b;

    st = pki_crl_check_args(ca, next_update_secs, der, len, res);
    if (st != PKI_OK) {
        return st;
    }

    if (r == NULL) {
        return pki_fail(res, PKI_INTERNAL, "CRL: no Redis");
    }

    if (!pki_crl_builder_init(&b, time(NULL), res)) {
        return res->status;
    }

    /* The entries first, then the number: a higher number never carries
     * an older snapshot of the revoked set. */
    st = pki_record_revoked_each(r, pki_ca_name(ca), pki_crl_add, &b, res);
    if (st != PKI_OK) {
        goto done;
    }

    if (b.failed) {
        st = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto done;
    }

    st = pki_record_next_crlnumber(r, pki_ca_name(ca), &number, res);
    if (st != PKI_OK) {
        goto done;
    }

    st = pki_crl_finish(ca, &b, number, next_update_secs, der, len, res);

done:

    pki_crl_builder_free(&b);

    return st;
}
