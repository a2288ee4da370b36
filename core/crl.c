/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * RFC 5280 v2 CRLs: issuer = the CA's subject, thisUpdate / nextUpdate,
 * CRL number, authorityKeyIdentifier, one entry per revoked or held serial
 * with its reasonCode (omitted for unspecified) and invalidityDate.
 *
 * Speed: going through X509_CRL_add0_revoked + X509_CRL_sign + i2d costs
 * 1.5-2 s for 100,000 entries (every sign, verify and i2d re-encodes the
 * whole list).  So OpenSSL builds and signs only the CRL without entries
 * (pki_key_sign_crl: this fixes the signature AlgorithmIdentifier), the
 * entries are encoded here in one pass into the TBSCertList after
 * nextUpdate, and the result is signed with the same digest through
 * pki_key_sign(), which verifies the signature before it is released.
 *
 * A planned revocation whose time has come is listed (at the planned time,
 * for the planned reason) before worker 0 carries it out, and one still to
 * come cuts the CRL's nextUpdate short: a relying party that keeps the CRL
 * until its nextUpdate never calls the certificate good past the plan.
 *
 * Building only: coalescing rebuilds and serving belong to the glue.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "pki.h"
#include "audit_int.h"
#include "issue_int.h"


/* Longest nextUpdate - thisUpdate accepted: one year. */
#define PKI_CRL_MAX_NEXT_UPDATE  (366L * 24 * 3600)

/* Reason codes: 0..10 without 7 (unused); 8 (removeFromCRL) belongs only in
 * delta CRLs and never names a revoked serial in a full CRL. */
#define PKI_CRL_REASON_MAX       10
#define PKI_CRL_REMOVE_FROM_CRL  8

/* At most this many entries (about 100 bytes of memory each while built).
 * It is what bounds a build's time too: the builder renews crl_lock for as
 * long as it makes progress (pki_crl_hold), and a build reads and signs
 * about 70,000 entries a second (2 million: about 30 s), so the largest
 * CRL takes a pool thread for some minutes. */
#define PKI_CRL_MAX_ENTRIES      10000000

/* Latest time a CRL can express: 9999-12-31T23:59:59Z. */
#define PKI_CRL_TIME_MAX         ((time_t) 253402300799LL)


/* An entry stays a day longer than RFC 5280 needs (pki_crl_add_live). */
#define PKI_CRL_EXPIRED_MARGIN  86400


/* One entry, ready to encode: the INTEGER's content octets (a leading zero
 * octet when the top bit is set), reason -1 for none. */
typedef struct {
    time_t         revoked_at;
    time_t         invalidity_date;    /* 0: none */
    signed char    reason;
    unsigned char  len;
    unsigned char  serial[21];
    unsigned char  planned;            /* from a plan not carried out */
} pki_crl_rev_t;


/*
 * crl_lock, kept by its builder while the build runs (pki_crl_current).
 * A fixed TTL would bound every build: a CA whose revoked certificates
 * never expire (a Matter PAI's DACs) has ever more entries to read and
 * sign, and once its build outlived the TTL no CRL of it would ever be
 * stored, each worker retrying the doomed build.  Renewed only as the
 * build goes on, the lock of a builder that stops (a hung token, a
 * stalled Redis, a dead process) still expires one TTL later.
 */
typedef struct {
    pki_redis_t    *r;
    const char     *ca;
    const char     *token;
    long            ttl_ms;
    double          renewed;      /* monotonic s of the last renewal */
    int             lost;         /* the lock is no longer the token's */
    pki_status_t    status;       /* of the renewal that stopped it */
    pki_result_t   *res;
} pki_crl_hold_t;


typedef struct {
    pki_crl_rev_t   *revs;
    size_t           n;
    size_t           cap;
    time_t           now;
    size_t           skipped_serial;
    size_t           skipped_remove;
    size_t           bad_reason;
    size_t           bad_time;
    int              planned;     /* adding the plans due */
    int              failed;      /* sticky: 1 allocation failure, 2 the
                                     cap, 3 crl_lock lost or not renewed */
    time_t           expired_before;  /* leave out certificates that
                                         expired before: 0 keeps all */
    size_t           expired;
    pki_crl_hold_t  *hold;        /* NULL: a build without the lock */
} pki_crl_builder_t;


/* The lock is renewed every second, or every third of a shorter TTL (the
 * tests'): one round trip per second of build, and with the 10 s TTL a
 * slow page, sort or signature has nine seconds before the lock expires
 * under a build that goes on. */
#define PKI_CRL_RENEW_MAX_S  1.0


/* Renews the lock when due (or now, when now is set): PKI_OK while it is
 * the builder's; else the build stops (h->lost: another may have built
 * from a newer snapshot, and this one must not be stored). */
static pki_status_t
pki_crl_hold(pki_crl_hold_t *h, int now)
{
    int           held;
    double        t, every;
    pki_status_t  st;

    t = pki_int_now();
    every = h->ttl_ms / 3000.0;

    if (every > PKI_CRL_RENEW_MAX_S) {
        every = PKI_CRL_RENEW_MAX_S;
    }

    if (!now && t - h->renewed < every) {
        return PKI_OK;
    }

    st = pki_crl_lock_renew(h->r, h->ca, h->token, h->ttl_ms, &held,
                            h->res);
    if (st != PKI_OK) {
        h->status = st;
        return st;
    }

    if (!held) {
        h->lost = 1;
        h->status = pki_fail(h->res, PKI_UNAVAILABLE, "CRL: crl_lock is no "
                             "longer this build's (it expired while the "
                             "build stalled, or another builder took it)");
        return h->status;
    }

    /* the time it was sent: the TTL ran from no earlier */
    h->renewed = t;

    return PKI_OK;
}


static int
pki_hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }

    return -1;
}


/* Adds one entry.  Returns 1 to go on, 0 to stop (allocation failure, too
 * many entries).  Bad data never stops the build: an unparsable serial
 * cannot name a certificate and is skipped (and counted); a bad reason or
 * time keeps the entry (a revocation must never get lost) without the
 * reason, or with thisUpdate as its date. */
static int
pki_crl_add(void *arg, const char *serial, int reason, time_t revoked_at,
    time_t invalidity_date)
{
    int                 hi, lo;
    char                canon[41];
    size_t              i, nhex, cap;
    pki_crl_rev_t      *rev, *revs;
    pki_crl_builder_t  *b;

    b = arg;

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

    if (b->n >= PKI_CRL_MAX_ENTRIES) {
        b->failed = 2;              /* not the capacity: that doubles past */
        return 0;
    }

    if (b->n == b->cap) {
        cap = b->cap ? b->cap * 2 : 1024;
        revs = realloc(b->revs, cap * sizeof(pki_crl_rev_t));
        if (revs == NULL) {
            b->failed = 1;
            return 0;
        }
        b->revs = revs;
        b->cap = cap;
    }

    rev = &b->revs[b->n];
    nhex = strlen(canon);           /* even, 2..40 */
    rev->len = 0;

    if (pki_hexval(canon[0]) >= 8) {
        rev->serial[rev->len++] = 0;
    }

    for (i = 0; i + 1 < nhex; i += 2) {
        hi = pki_hexval(canon[i]);
        lo = pki_hexval(canon[i + 1]);
        if (hi < 0 || lo < 0) {
            b->skipped_serial++;
            return 1;
        }
        rev->serial[rev->len++] = (unsigned char) (hi << 4 | lo);
    }

    if (reason < 0 || reason > PKI_CRL_REASON_MAX || reason == 7) {
        b->bad_reason++;
        reason = 0;
    }

    /* RFC 5280 5.3.1: unspecified is better left out. */
    rev->reason = (signed char) (reason == 0 ? -1 : reason);

    if (revoked_at <= 0 || revoked_at > PKI_CRL_TIME_MAX) {
        if (revoked_at != 0) {
            b->bad_time++;
        }
        revoked_at = b->now;
    }
    rev->revoked_at = revoked_at;

    if (invalidity_date < 0 || invalidity_date > PKI_CRL_TIME_MAX) {
        b->bad_time++;
        invalidity_date = 0;
    }
    rev->invalidity_date = invalidity_date;
    rev->planned = (unsigned char) b->planned;

    b->n++;

    return 1;
}


/* An entry of the revoked hash with its certificate's notAfter (0: not
 * known).  RFC 5280 (3.3) lets an entry go once it has been on one CRL
 * issued after the certificate expired: one that expired a margin
 * (PKI_CRL_EXPIRED_MARGIN: a revocation written late, hosts' clocks)
 * before the previous CRL's thisUpdate was on that CRL (the previous build
 * kept everything that expired after the one before it), so it is left
 * out.  (A certificate revoked only after it expired need not be listed
 * at all: a CRL lists the unexpired ones.)  Without this a CA's CRL only
 * grows, every build reading and signing entries nobody can use. */
static int
pki_crl_add_live(void *arg, const char *serial, int reason,
    time_t revoked_at, time_t invalidity_date, time_t not_after)
{
    pki_crl_builder_t  *b;

    b = arg;

    /* per entry, not per HSCAN page: the walk's pages are not seen here,
     * and the clock is cheap next to the entry's parsing */
    if (b->hold != NULL && !b->failed && pki_crl_hold(b->hold, 0) != PKI_OK)
    {
        b->failed = 3;
        return 0;
    }

    if (not_after > 0 && not_after < b->expired_before) {
        b->expired++;
        return 1;
    }

    return pki_crl_add(arg, serial, reason, revoked_at, invalidity_date);
}


/* By serial; of one serial twice, the revoked hash's entry first. */
static int
pki_crl_rev_cmp(const void *a, const void *b)
{
    int                   c;
    const pki_crl_rev_t  *x, *y;

    x = a;
    y = b;

    if (x->len != y->len) {
        return x->len < y->len ? -1 : 1;
    }

    c = memcmp(x->serial, y->serial, x->len);
    if (c != 0) {
        return c;
    }

    return (int) x->planned - (int) y->planned;
}


/* Sorts the entries and keeps one per serial.  A plan carried out while
 * the CRL was read is both in the plan and in the revoked hash; the hash's
 * entry is the record's (the same date and reason, unless the certificate
 * was revoked by hand meanwhile). */
static void
pki_crl_sort(pki_crl_builder_t *b)
{
    size_t  i, n;

    if (b->n == 0) {
        return;
    }

    qsort(b->revs, b->n, sizeof(pki_crl_rev_t), pki_crl_rev_cmp);

    for (i = 1, n = 1; i < b->n; i++) {
        if (b->revs[i].len == b->revs[n - 1].len
            && memcmp(b->revs[i].serial, b->revs[n - 1].serial,
                      b->revs[i].len) == 0)
        {
            continue;
        }

        b->revs[n++] = b->revs[i];
    }

    b->n = n;
}


/* ---- DER ----------------------------------------------------------------- */

static size_t
pki_der_len_size(size_t len)
{
    size_t  n;

    if (len < 0x80) {
        return 1;
    }

    for (n = 1; len > 0; n++) {
        len >>= 8;
    }

    return n;
}


static unsigned char *
pki_der_put_hdr(unsigned char *p, unsigned char tag, size_t len)
{
    size_t  n, i;

    *p++ = tag;

    if (len < 0x80) {
        *p++ = (unsigned char) len;
        return p;
    }

    n = pki_der_len_size(len) - 1;
    *p++ = (unsigned char) (0x80 | n);
    for (i = n; i > 0; i--) {
        *p++ = (unsigned char) (len >> (8 * (i - 1)));
    }

    return p;
}


/* UTCTime for 1950..2049, GeneralizedTime otherwise (RFC 5280 5.1.2.4);
 * gen forces GeneralizedTime.  Writes the whole TLV (15 or 17 octets). */
static unsigned char *
pki_der_put_time(unsigned char *p, time_t t, int gen)
{
    char       buf[64];
    struct tm  tm;

    gmtime_r(&t, &tm);

    if (!gen && tm.tm_year >= 50 && tm.tm_year < 150) {
        snprintf(buf, sizeof(buf), "%02d%02d%02d%02d%02d%02dZ",
                 tm.tm_year % 100, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec);
        p = pki_der_put_hdr(p, V_ASN1_UTCTIME, 13);
        memcpy(p, buf, 13);
        return p + 13;
    }

    snprintf(buf, sizeof(buf), "%04d%02d%02d%02d%02d%02dZ",
             (tm.tm_year + 1900) % 10000, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec);
    p = pki_der_put_hdr(p, V_ASN1_GENERALIZEDTIME, 15);
    memcpy(p, buf, 15);

    return p + 15;
}


static int
pki_utctime_ok(time_t t)
{
    struct tm  tm;

    gmtime_r(&t, &tm);
    return tm.tm_year >= 50 && tm.tm_year < 150;
}


/* Length of the entry's content and of its crlEntryExtensions content. */
static size_t
pki_crl_rev_len(const pki_crl_rev_t *r, size_t *extlen)
{
    size_t  len;

    *extlen = 0;
    if (r->reason > 0) {
        *extlen += 12;     /* 30 0a 06 03 55 1d 15 04 03 0a 01 NN */
    }
    if (r->invalidity_date > 0) {
        *extlen += 26;     /* 30 18 06 03 55 1d 18 04 11 18 0f ...  */
    }

    len = 2 + r->len + (pki_utctime_ok(r->revoked_at) ? 15 : 17);
    if (*extlen > 0) {
        len += 2 + *extlen;
    }

    return len;
}


static unsigned char *
pki_crl_put_rev(unsigned char *p, const pki_crl_rev_t *r)
{
    size_t  len, extlen;

    static const unsigned char  reason_hdr[] = {
        0x30, 0x0a, 0x06, 0x03, 0x55, 0x1d, 0x15, 0x04, 0x03, 0x0a, 0x01
    };
    static const unsigned char  inv_hdr[] = {
        0x30, 0x18, 0x06, 0x03, 0x55, 0x1d, 0x18, 0x04, 0x11
    };

    len = pki_crl_rev_len(r, &extlen);
    p = pki_der_put_hdr(p, V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED, len);
    p = pki_der_put_hdr(p, V_ASN1_INTEGER, r->len);
    memcpy(p, r->serial, r->len);
    p += r->len;
    p = pki_der_put_time(p, r->revoked_at, 0);

    if (extlen > 0) {
        p = pki_der_put_hdr(p, V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED, extlen);
        if (r->reason > 0) {
            memcpy(p, reason_hdr, sizeof(reason_hdr));
            p += sizeof(reason_hdr);
            *p++ = (unsigned char) r->reason;
        }
        if (r->invalidity_date > 0) {
            memcpy(p, inv_hdr, sizeof(inv_hdr));
            p += sizeof(inv_hdr);
            p = pki_der_put_time(p, r->invalidity_date, 1);
        }
    }

    return p;
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


/* The CRL without entries, signed: this sets both AlgorithmIdentifiers the
 * way the key signs.  With no entries it is the whole CRL. */
static X509_CRL *
pki_crl_skeleton(pki_ca_t *ca, time_t now, long long number,
    long next_update_secs, pki_result_t *res)
{
    X509           *cacert;
    X509_CRL       *crl;
    ASN1_TIME      *this, *next;
    ASN1_INTEGER   *num;

    cacert = pki_ca_cert(ca);
    crl = X509_CRL_new();
    num = ASN1_INTEGER_new();
    this = ASN1_TIME_set(NULL, now);
    next = ASN1_TIME_set(NULL, now + next_update_secs);

    if (crl == NULL || num == NULL || this == NULL || next == NULL
        || !ASN1_INTEGER_set_int64(num, number)
        || !X509_CRL_set_version(crl, X509_CRL_VERSION_2)
        || !X509_CRL_set_issuer_name(crl, X509_get_subject_name(cacert))
        || !X509_CRL_set1_lastUpdate(crl, this)
        || !X509_CRL_set1_nextUpdate(crl, next)
        || !pki_crl_add_akid(crl, cacert)
        || X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0,
                                 X509V3_ADD_REPLACE) != 1)
    {
        pki_fail(res, PKI_INTERNAL, "cannot build the CRL");
        X509_CRL_free(crl);
        crl = NULL;
        goto done;
    }

    if (pki_key_sign_crl(pki_ca_key(ca), crl, res) != PKI_OK) {
        X509_CRL_free(crl);
        crl = NULL;
    }

done:

    ASN1_INTEGER_free(num);
    ASN1_TIME_free(this);
    ASN1_TIME_free(next);

    return crl;
}


static pki_status_t
pki_crl_i2d(X509_CRL *crl, unsigned char **der, size_t *len,
    pki_result_t *res)
{
    int             n;
    unsigned char  *buf, *p;

    n = i2d_X509_CRL(crl, NULL);
    if (n <= 0) {
        return pki_fail(res, PKI_INTERNAL, "cannot encode the CRL");
    }

    buf = malloc((size_t) n);
    if (buf == NULL) {
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    p = buf;
    if (i2d_X509_CRL(crl, &p) != n) {
        free(buf);
        return pki_fail(res, PKI_INTERNAL, "cannot encode the CRL");
    }

    *der = buf;
    *len = (size_t) n;

    return PKI_OK;
}


/* Splits the skeleton's TBSCertList content after nextUpdate: the
 * revokedCertificates SEQUENCE goes there, before the [0] extensions. */
static int
pki_crl_tbs_split(const unsigned char *tbs, long tbslen, size_t *start,
    size_t *split, size_t *end)
{
    int                   i, tag, cls, inf;
    long                  l;
    const unsigned char  *p, *q, *e;

    p = tbs;
    inf = ASN1_get_object(&p, &l, &tag, &cls, tbslen);
    if ((inf & 0x80) || inf != V_ASN1_CONSTRUCTED || tag != V_ASN1_SEQUENCE
        || p + l != tbs + tbslen)
    {
        return 0;
    }

    *start = (size_t) (p - tbs);
    e = p + l;

    /* version, signature, issuer, thisUpdate, nextUpdate */
    for (i = 0; i < 5; i++) {
        q = p;
        inf = ASN1_get_object(&q, &l, &tag, &cls, e - p);
        if ((inf & 0x80) || q + l > e) {
            return 0;
        }
        p = q + l;
    }

    *split = (size_t) (p - tbs);
    *end = (size_t) (e - tbs);

    return 1;
}


/* The end of what the CA signs (pki_ca_end: the CA certificate's
 * notAfter, or an earlier one above it in its chain), or -1 when
 * unreadable. */
static time_t
pki_crl_ca_end(pki_ca_t *ca)
{
    return pki_ca_end(ca);
}


/* A CRL ends no later than its CA certificate and the chain above it
 * (pki_ca_end), past which no relying party trusts its signature (nor
 * keeps it: it would be rejected as signed by an expired CA).  A CA
 * already ended signs none (pki_crl_ca_live). */
static long
pki_crl_ca_cap(pki_ca_t *ca, time_t now, long next_update_secs)
{
    time_t  end;

    end = pki_crl_ca_end(ca);

    if (end > now && end - now < next_update_secs) {
        return (long) (end - now);
    }

    return next_update_secs;
}


/* A CA past its notAfter (nginx up since it expired; the load refuses an
 * expired CA), or past that of a certificate above it in its chain (the
 * load refuses only an expired issuer), signs no CRL, as it signs no
 * certificate (pki_issue): RFC 5280 6.3.3 validates a CRL's signer by a
 * path valid now, so a CRL dated after the end verifies for no relying
 * party, and its key is used past the certificates that vouch for it.
 * The last CRL, cut to the end, is served until then; then none (503)
 * until the CA or its chain is renewed (a new certificate for the same
 * key and name, a new chain file: the load takes them).  PKI_INTERNAL:
 * the operator's to fix, logged as an error. */
static pki_status_t
pki_crl_ca_live(pki_ca_t *ca, time_t now, pki_result_t *res)
{
    char  why[PKI_DETAIL_LEN];

    if (pki_ca_live(ca, now, res) == PKI_OK) {
        return PKI_OK;
    }

    if (res == NULL) {
        return PKI_INTERNAL;
    }

    memcpy(why, res->detail, sizeof(why));

    return pki_fail(res, PKI_INTERNAL, "%s (no CRL)", why);
}


/* Builds, signs and encodes the CRL from the collected entries. */
static pki_status_t
pki_crl_finish(pki_ca_t *ca, pki_crl_builder_t *b, long long number,
    long next_update_secs, unsigned char **der, size_t *len,
    pki_result_t *res)
{
    int                  mdnid, pknid, tbs0len, alglen;
    size_t               i, elen, extlen, revlen, start, split, end, tbslen;
    size_t               contlen, siglen, bitlen, total;
    X509_CRL            *crl;
    const EVP_MD        *md;
    pki_status_t         st;
    unsigned char       *tbs0, *tbs, *p, *sig, *alg, *out;
    const X509_ALGOR    *sigalg;

    if (b->expired) {
        pki_log(res, "CRL of CA \"%s\": %zu entries of certificates "
                "expired before the previous CRL left out; ",
                pki_ca_name(ca), b->expired);
    }

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

    crl = pki_crl_skeleton(ca, b->now, number, next_update_secs, res);
    if (crl == NULL) {
        return res->status != PKI_OK ? res->status : PKI_INTERNAL;
    }

    pki_crl_sort(b);

    if (b->n == 0) {
        /* No revokedCertificates field at all (RFC 5280 5.1.2.6). */
        st = pki_crl_i2d(crl, der, len, res);
        X509_CRL_free(crl);
        return st;
    }

    tbs0 = NULL;
    tbs = NULL;
    sig = NULL;
    alg = NULL;

    /* The same digest the skeleton was signed with, read back from its
     * AlgorithmIdentifier (RSASSA-PSS parameters are not supported). */
    X509_CRL_get0_signature(crl, NULL, &sigalg);
    if (!OBJ_find_sigid_algs(OBJ_obj2nid(sigalg->algorithm), &mdnid, &pknid)
        || pknid == EVP_PKEY_RSA_PSS)
    {
        st = pki_fail(res, PKI_INTERNAL, "unsupported CRL signature "
                      "algorithm");
        goto done;
    }

    md = NULL;
    if (mdnid != NID_undef) {
        md = EVP_get_digestbynid(mdnid);
        if (md == NULL) {
            st = pki_fail(res, PKI_INTERNAL, "unsupported CRL digest");
            goto done;
        }
    }

    tbs0len = i2d_re_X509_CRL_tbs(crl, &tbs0);
    alglen = i2d_X509_ALGOR(sigalg, &alg);
    if (tbs0len <= 0 || alglen <= 0
        || !pki_crl_tbs_split(tbs0, tbs0len, &start, &split, &end))
    {
        st = pki_fail(res, PKI_INTERNAL, "cannot encode the CRL");
        goto done;
    }

    revlen = 0;
    for (i = 0; i < b->n; i++) {
        elen = pki_crl_rev_len(&b->revs[i], &extlen);
        revlen += 1 + pki_der_len_size(elen) + elen;
    }

    contlen = (size_t) tbs0len - start + 1 + pki_der_len_size(revlen) + revlen;
    tbslen = 1 + pki_der_len_size(contlen) + contlen;

    tbs = malloc(tbslen);
    if (tbs == NULL) {
        st = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto done;
    }

    p = pki_der_put_hdr(tbs, V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED, contlen);
    memcpy(p, tbs0 + start, split - start);
    p += split - start;
    p = pki_der_put_hdr(p, V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED, revlen);
    for (i = 0; i < b->n; i++) {
        p = pki_crl_put_rev(p, &b->revs[i]);
    }
    memcpy(p, tbs0 + split, end - split);
    p += end - split;

    if ((size_t) (p - tbs) != tbslen) {
        st = pki_fail(res, PKI_INTERNAL, "CRL encoding length mismatch");
        goto done;
    }

    /* the sort and the encoding of a long list took seconds: the lock
     * must still be the builder's for the signature to be worth making,
     * and last through it (a token may be slow) */
    if (b->hold != NULL) {
        st = pki_crl_hold(b->hold, 1);
        if (st != PKI_OK) {
            goto done;
        }
    }

    /* Signs and verifies the signature with the public key. */
    st = pki_key_sign(pki_ca_key(ca), md, tbs, tbslen, &sig, &siglen, res);
    if (st != PKI_OK) {
        goto done;
    }

    bitlen = 1 + siglen;
    contlen = tbslen + (size_t) alglen + 1 + pki_der_len_size(bitlen)
              + bitlen;
    total = 1 + pki_der_len_size(contlen) + contlen;

    out = malloc(total);
    if (out == NULL) {
        st = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto done;
    }

    p = pki_der_put_hdr(out, V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED, contlen);
    memcpy(p, tbs, tbslen);
    p += tbslen;
    memcpy(p, alg, (size_t) alglen);
    p += alglen;
    p = pki_der_put_hdr(p, V_ASN1_BIT_STRING, bitlen);
    *p++ = 0;
    memcpy(p, sig, siglen);

    *der = out;
    *len = total;
    st = PKI_OK;

done:

    X509_CRL_free(crl);
    OPENSSL_free(tbs0);
    OPENSSL_free(alg);
    free(tbs);
    free(sig);

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


static pki_status_t
pki_crl_failed(pki_crl_builder_t *b, pki_result_t *res)
{
    if (b->failed == 3) {
        return b->hold->status;     /* res filled by pki_crl_hold */
    }

    if (b->failed == 2) {
        return pki_fail(res, PKI_TOO_LARGE, "CRL: more than %d entries",
                        PKI_CRL_MAX_ENTRIES);
    }

    return pki_fail(res, PKI_INTERNAL, "out of memory");
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

    memset(&b, 0, sizeof(b));
    b.now = now > 0 ? now : time(NULL);

    for (i = 0; i < n; i++) {
        if (!pki_crl_add(&b, entries[i].serial, entries[i].reason,
                         entries[i].revoked_at, entries[i].invalidity_date))
        {
            break;
        }
    }

    if (b.failed) {
        st = pki_crl_failed(&b, res);
    } else {
        st = pki_crl_ca_live(ca, b.now, res);
    }

    if (st == PKI_OK) {
        next_update_secs = pki_crl_ca_cap(ca, b.now, next_update_secs);
        st = pki_crl_finish(ca, &b, number, next_update_secs, der, len, res);
    }

    free(b.revs);

    return st;
}


static pki_status_t pki_crl_build_info(pki_ca_t *ca, pki_redis_t *r,
    long next_update_secs, time_t prev_this_update, pki_crl_hold_t *hold,
    unsigned char **der, size_t *len, pki_crl_info_t *info,
    pki_result_t *res);


PKI_API pki_status_t
pki_crl_build(pki_ca_t *ca, pki_redis_t *r, long next_update_secs,
    unsigned char **der, size_t *len, pki_result_t *res)
{
    return pki_crl_build_info(ca, r, next_update_secs, 0, NULL, der, len,
                              NULL, res);
}


/* A builder renews its lock as long as its build runs (pki_crl_hold): the
 * TTL is how long a builder that stopped keeps the others waiting. */
#define PKI_CRL_LOCK_TTL_MS   10000
#define PKI_CRL_WAIT_STEP_MS  50
#define PKI_CRL_WAIT_STEPS    60


static long  pki_crl_lock_ttl_ms = PKI_CRL_LOCK_TTL_MS;


PKI_API void
pki_crl_set_lock_ttl(long ms)
{
    pki_crl_lock_ttl_ms = ms > 0 ? ms : PKI_CRL_LOCK_TTL_MS;
}


static void
pki_crl_sleep_ms(long ms)
{
    struct timespec  ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;

    while (nanosleep(&ts, &ts) != 0) {
        /* interrupted: sleep the rest */
    }
}


/*
 * The thisUpdate of a new CRL of ca: strictly after the stored CRL's when
 * this host's clock allows it.  thisUpdate has one-second granularity and
 * is the CRL's Last-Modified, and an HTTP cache that revalidates with
 * If-Modified-Since gets 304 for an equal one: a CRL built in the same
 * second as the one before (two revocations in a row) would never reach
 * it.  The next second is waited for (at most about 2 s, in the builder,
 * under crl_lock), not stated ahead of the clock: verifiers reject a CRL
 * whose thisUpdate is in the future (OpenSSL without any tolerance).  A
 * stored thisUpdate further ahead (another host's fast clock, a damaged
 * meta) is not followed: a CRL this host dates after its own clock would
 * be "not yet valid" to every relying party whose clock is right, for as
 * long as the lead.  The new CRL is dated now, earlier than the stored
 * one (its Last-Modified steps back, its ETag and number move on), with
 * a log line.
 */
static pki_status_t
pki_crl_next_time(pki_ca_t *ca, pki_redis_t *r, time_t *now,
    pki_result_t *res)
{
    time_t          t;
    long long       revgen;
    pki_status_t    st;
    pki_crl_info_t  prev;

    st = pki_crl_store_read(r, pki_ca_name(ca), -1, &revgen, &prev, res);
    if (st != PKI_OK) {
        return st;
    }

    free(prev.der);
    t = time(NULL);

    if (prev.number > 0 && prev.this_update >= t) {
        if (prev.this_update - t < 2) {
            while ((t = time(NULL)) <= prev.this_update) {
                pki_crl_sleep_ms(PKI_CRL_WAIT_STEP_MS);
            }

        } else {
            pki_log(res, "%sCRL: the stored CRL %lld has thisUpdate %lld, "
                    "%lld s ahead of this host's clock: not followed (a "
                    "clock of the fleet is off), the new one is dated %lld",
                    res->log[0] ? "; " : "", prev.number,
                    (long long) prev.this_update,
                    (long long) (prev.this_update - t), (long long) t);
        }
    }

    *now = t;

    return PKI_OK;
}


/* info (may be NULL) receives the number and the dates; prev_this_update:
 * the thisUpdate of the CA's CRL before this one (0: none known, every
 * entry is listed). */
/* The revgens of this CA and of those with its subject and key, added. */
static pki_status_t
pki_crl_group_gen(pki_ca_t *ca, pki_redis_t *r, long long *sum,
    pki_result_t *res)
{
    int           i, n;
    long long     g;
    pki_status_t  st;

    *sum = 0;
    n = pki_ca_same_count(ca);

    for (i = -1; i < n; i++) {
        st = pki_record_revgen(r, i < 0 ? pki_ca_name(ca)
                                        : pki_ca_same_name(ca, i), &g, res);
        if (st != PKI_OK) {
            return st;
        }
        *sum += g;
    }

    return PKI_OK;
}


/* The entries of a CRL built now into b, the earliest plan still to come
 * into *plan: the plans due, then the revoked hash, of this CA and then of
 * each with its subject and key (pki_ca_link_same: relying parties take
 * one CRL of an issuer as all its revocations).  The plans before the
 * revoked hash: one carried out in between is then in the hash (or in
 * both, listed once), never in neither. */
static pki_status_t
pki_crl_snapshot(pki_ca_t *ca, pki_redis_t *r, time_t prev_this_update,
    pki_crl_builder_t *b, time_t *plan, pki_result_t *res)
{
    int            i, n;
    time_t         p;
    const char    *name;
    pki_status_t   st;

    st = pki_crl_next_time(ca, r, &b->now, res);
    if (st != PKI_OK) {
        return st;
    }

    if (prev_this_update > PKI_CRL_EXPIRED_MARGIN
        && prev_this_update <= b->now)
    {
        b->expired_before = prev_this_update - PKI_CRL_EXPIRED_MARGIN;
    }

    n = pki_ca_same_count(ca);

    for (i = -1; i < n && st == PKI_OK && !b->failed; i++) {
        name = i < 0 ? pki_ca_name(ca) : pki_ca_same_name(ca, i);
        p = 0;

        b->planned = 1;
        st = pki_record_plans_due(r, name, b->now, pki_crl_add, b, &p, res);
        b->planned = 0;

        if (p > 0 && (*plan == 0 || p < *plan)) {
            *plan = p;
        }

        if (st == PKI_OK && !b->failed) {
            st = pki_record_revoked_walk(r, name, pki_crl_add_live, b, res);
        }
    }

    return st;
}


static pki_status_t
pki_crl_build_info(pki_ca_t *ca, pki_redis_t *r, long next_update_secs,
    time_t prev_this_update, pki_crl_hold_t *hold, unsigned char **der,
    size_t *len, pki_crl_info_t *info, pki_result_t *res)
{
    int                n, attempt;
    time_t             plan;
    long long          number, g0, g1;
    pki_status_t       st;
    pki_crl_builder_t  b;

    st = pki_crl_check_args(ca, next_update_secs, der, len, res);
    if (st != PKI_OK) {
        return st;
    }

    if (r == NULL) {
        return pki_fail(res, PKI_INTERNAL, "CRL: no Redis");
    }

    /* before reading the revoked set (checked again at its thisUpdate) */
    st = pki_crl_ca_live(ca, time(NULL), res);
    if (st != PKI_OK) {
        return st;
    }

    /* The entries first, then the number: a higher number never carries
     * an older snapshot of the revoked set.  With CAs of this one's
     * subject and key (one CRL issuer), each takes
     * its numbers from its own counter: a snapshot is numbered only when
     * no revgen of the group moved between its read and its number, so
     * that no CRL of the issuer lists less than one numbered below it. */
    n = pki_ca_same_count(ca);

    for (attempt = 0; ; attempt++) {
        memset(&b, 0, sizeof(b));
        b.hold = hold;
        plan = 0;
        g0 = g1 = 0;

        st = n > 0 ? pki_crl_group_gen(ca, r, &g0, res) : PKI_OK;
        if (st == PKI_OK) {
            st = pki_crl_snapshot(ca, r, prev_this_update, &b, &plan, res);
        }
        if (st == PKI_OK && b.failed) {
            st = pki_crl_failed(&b, res);
        }
        if (st == PKI_OK) {
            st = pki_record_next_crlnumber(r, pki_ca_name(ca), &number, res);
        }
        if (st == PKI_OK && n > 0) {
            st = pki_crl_group_gen(ca, r, &g1, res);
        }

        if (st != PKI_OK || g1 == g0) {
            break;
        }

        free(b.revs);
        b.revs = NULL;

        if (attempt == 2) {
            st = pki_fail(res, PKI_UNAVAILABLE, "CRL: the revocations of "
                          "the CAs with this subject and key kept changing "
                          "while it was built");
            break;
        }
    }

    if (st == PKI_OK) {
        st = pki_crl_ca_live(ca, b.now, res);
    }

    if (st != PKI_OK) {
        goto done;
    }

    /* no later than the next plan: the CRL that lists it is due then */
    if (plan > b.now && plan - b.now < next_update_secs) {
        next_update_secs = (long) (plan - b.now);
    }

    next_update_secs = pki_crl_ca_cap(ca, b.now, next_update_secs);

    st = pki_crl_finish(ca, &b, number, next_update_secs, der, len, res);

    if (info != NULL) {
        info->number = number;
        info->this_update = b.now;
        info->next_update = b.now + next_update_secs;
    }

done:

    free(b.revs);

    return st;
}


/* ---- the fleet's current CRL --------------------------------------------- */

/* Builds, stores and releases the lock; the lock is held by the caller. */
static pki_status_t
pki_crl_rebuild(pki_ca_t *ca, pki_redis_t *r, long next_update_secs,
    long long revgen, long long group, const char *token,
    pki_crl_info_t *out, pki_result_t *res)
{
    int             stored;
    time_t          prev;
    pki_status_t    st;
    pki_result_t    ures;
    pki_crl_hold_t  hold;

    /* what the caller read of the stored CRL: the one before this */
    prev = out->number > 0 ? out->this_update : 0;

    memset(out, 0, sizeof(*out));

    /* the lock was taken a round trip ago: due for renewal a little early */
    hold.r = r;
    hold.ca = pki_ca_name(ca);
    hold.token = token;
    hold.ttl_ms = pki_crl_lock_ttl_ms;
    hold.renewed = pki_int_now();
    hold.lost = 0;
    hold.status = PKI_OK;
    hold.res = res;

    st = pki_crl_build_info(ca, r, next_update_secs, prev, &hold, &out->der,
                            &out->len, out, res);

    /* a large DER takes a while to send: the TTL in full for it */
    if (st == PKI_OK) {
        st = pki_crl_hold(&hold, 1);
    }

    stored = 0;

    if (st == PKI_OK) {
        out->revgen = revgen;
        out->group = group;

        st = pki_crl_store_put(r, pki_ca_name(ca), out, token, &stored,
                               res);
        if (st == PKI_OK && stored == -1) {
            hold.lost = 1;
        }
    }

    if (hold.lost || (st == PKI_OK && stored == 0)) {
        /* a newer snapshot is stored, or this build lost its lock and one
         * may be: that one is the answer, not this one, which may lack
         * its revocations yet has the higher number (a build stopped
         * early has no number yet) */
        if (out->number > 0) {
            pki_log(res, "CRL %lld not stored: %s", out->number,
                    !hold.lost ? "a newer one is"
                               : "its build lost crl_lock (it expired "
                                 "while the build stalled, or another "
                                 "builder took it)");
        } else {
            pki_log(res, "%sCRL build stopped: it lost crl_lock (it "
                    "expired while the build stalled, or another builder "
                    "took it)", res != NULL && res->log[0] ? "; " : "");
        }

        if (res != NULL) {
            res->status = PKI_OK;       /* the stored CRL is the answer */
            res->detail[0] = '\0';
        }

        free(out->der);
        memset(out, 0, sizeof(*out));
        st = pki_crl_store_read(r, pki_ca_name(ca), 0, &revgen, out, res);
        if (st == PKI_OK && out->der == NULL) {
            st = pki_fail(res, PKI_UNAVAILABLE, "CRL: the stored CRL "
                          "is gone");
        }
    }

    pki_result_init(&ures);
    (void) pki_crl_unlock(r, pki_ca_name(ca), token, &ures);

    if (st != PKI_OK) {
        free(out->der);
        memset(out, 0, sizeof(*out));
    }

    return st;
}


/*
 * Whether a stored CRL is this CA's: its issuer is the CA's subject and
 * its signature verifies with the CA's key.  After the CA is re-keyed or
 * re-certified under the same name, the CRL the old one signed is still
 * in the store and may be fresh; relying parties could not verify it.
 */
static int
pki_crl_signed_by(const pki_ca_t *ca, const unsigned char *der, size_t len)
{
    int                   ok;
    X509                 *cert;
    EVP_PKEY             *pk;
    X509_CRL             *crl;
    const unsigned char  *p;

    cert = pki_ca_cert(ca);
    pk = cert != NULL ? X509_get0_pubkey(cert) : NULL;
    p = der;
    crl = pk != NULL ? d2i_X509_CRL(NULL, &p, (long) len) : NULL;

    ok = crl != NULL && p == der + len
         && X509_NAME_cmp(X509_CRL_get_issuer(crl),
                          X509_get_subject_name(cert)) == 0
         && X509_CRL_verify(crl, pk) == 1;

    X509_CRL_free(crl);
    ERR_clear_error();

    return ok;
}


/*
 * The lock won: rebuilds; out holds the stored CRL as read (and its DER
 * unless it is the caller's number).  When the build fails (the token or
 * HSM down, an entry cap, Redis gone mid-way), the stored CRL is still
 * the answer while it is valid, as for a caller that lost the lock: not
 * an error that leaves a new worker, or SCEP's GetCRL, nothing to serve
 * until the signer is back.  out->rebuild_failed and res->log say so.
 */
static pki_status_t
pki_crl_rebuild_or_keep(pki_ca_t *ca, pki_redis_t *r, long next_update_secs,
    long long revgen, long long group, const char *token, time_t now,
    pki_crl_info_t *out, pki_result_t *res)
{
    pki_status_t    st;
    pki_crl_info_t  stored;

    stored = *out;
    out->der = NULL;
    out->len = 0;

    st = pki_crl_rebuild(ca, r, next_update_secs, revgen, group, token, out,
                         res);

    if (st == PKI_OK || stored.number <= 0 || stored.next_update <= now
        || res == NULL)
    {
        free(stored.der);
        return st;
    }

    pki_log(res, "%sCRL: rebuilding failed (%s: %s); the stored CRL %lld "
            "is served until it is rebuilt or its nextUpdate %lld",
            res->log[0] ? "; " : "", pki_status_name(st), res->detail,
            stored.number, (long long) stored.next_update);

    res->status = PKI_OK;
    res->detail[0] = '\0';

    *out = stored;
    out->rebuild_failed = 1;

    return PKI_OK;
}


/* The CAs with this one's subject and key now: the sum of their revgens
 * into *group (the stored CRL's group is the sum it was built from) and
 * their earliest plan after the stored CRL's thisUpdate into c->planned
 * when sooner.  One round trip per such CA, none without. */
static pki_status_t
pki_crl_same_state(pki_ca_t *ca, pki_redis_t *r, pki_crl_info_t *c,
    long long *group, pki_result_t *res)
{
    int           i, n;
    time_t        plan;
    long long     g;
    pki_status_t  st;

    *group = 0;
    n = pki_ca_same_count(ca);

    for (i = 0; i < n; i++) {
        st = pki_record_revgen_plan(r, pki_ca_same_name(ca, i),
                                    c->number > 0 ? c->this_update : 0, &g,
                                    &plan, res);
        if (st != PKI_OK) {
            return st;
        }

        *group += g;

        if (c->number > 0 && plan > 0
            && (c->planned == 0 || plan < c->planned))
        {
            c->planned = plan;
        }
    }

    return PKI_OK;
}


/* Whether the stored CRL is still the one to serve at now. */
static int
pki_crl_fresh(const pki_crl_info_t *c, long long revgen, long long group,
    time_t now, long next_update_secs, time_t ca_end)
{
    if (c->number <= 0 || c->revgen != revgen || c->group != group
        || c->next_update <= now)
    {
        return 0;
    }

    /* A lifetime longer than the one asked for (it was lowered since, a
     * reload): built again, so that the new lifetime holds at once, also
     * for a CRL cut short by a plan (a new one is never longer).  Its own
     * two dates, not this host's clock: hosts whose clocks differ do not
     * rebuild each other's CRL. */
    if (c->next_update - c->this_update > next_update_secs) {
        return 0;
    }

    /* A plan after its thisUpdate and before its nextUpdate was made
     * after it was built (or came due since: the time has passed); the
     * CRL built now cuts nextUpdate to it, or lists it. */
    if (c->planned != 0 && c->planned < c->next_update) {
        return 0;
    }

    /* Cut to a plan: until the plan is due, a new CRL would end then too
     * (the last quarter of a short lifetime would rebuild it ever more
     * often). */
    if (c->planned != 0 && c->planned == c->next_update) {
        return 1;
    }

    /* Cut to the CA certificate's end: the same, until then */
    if (ca_end != 0 && c->next_update == ca_end) {
        return 1;
    }

    /* Until the last quarter of its own lifetime: a caller that asks for
     * a longer lifetime does not replace a good one. */
    return c->next_update - now
           > (c->next_update > c->this_update
              ? c->next_update - c->this_update : next_update_secs) / 4;
}


PKI_API pki_status_t
pki_crl_current(pki_ca_t *ca, pki_redis_t *r, long next_update_secs,
    long long have_number, pki_crl_info_t *out, pki_result_t *res)
{
    int             i, won;
    char            token[40];
    time_t          now;
    long long       revgen, group;
    pki_status_t    st;
    unsigned char   rnd[12];

    if (ca == NULL || r == NULL || out == NULL || have_number < 0
        || next_update_secs < 1 || next_update_secs > PKI_CRL_MAX_NEXT_UPDATE)
    {
        return pki_fail(res, PKI_INTERNAL, "CRL: bad arguments");
    }

    memset(out, 0, sizeof(*out));

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return pki_fail(res, PKI_INTERNAL, "CRL: no random token");
    }

    for (i = 0; i < (int) sizeof(rnd); i++) {
        snprintf(token + 2 * i, 3, "%02x", rnd[i]);
    }

    for (i = 0; ; i++) {
        st = pki_crl_store_read(r, pki_ca_name(ca), have_number, &revgen, out,
                                res);
        if (st == PKI_OK) {
            st = pki_crl_same_state(ca, r, out, &group, res);
        }
        if (st != PKI_OK) {
            free(out->der);
            memset(out, 0, sizeof(*out));
            return st;
        }

        if (out->der != NULL && !pki_crl_signed_by(ca, out->der, out->len)) {
            /* another CA key's: as if none were stored */
            pki_log(res, "CRL: the stored CRL %lld is not signed by this "
                    "CA's current certificate and key; rebuilding",
                    out->number);
            free(out->der);
            memset(out, 0, sizeof(*out));
        }

        now = time(NULL);

        if (pki_crl_fresh(out, revgen, group, now, next_update_secs,
                          pki_crl_ca_end(ca)))
        {
            return PKI_OK;
        }

        st = pki_crl_lock(r, pki_ca_name(ca), token, pki_crl_lock_ttl_ms,
                          &won, res);
        if (st != PKI_OK) {
            free(out->der);
            memset(out, 0, sizeof(*out));
            return st;
        }

        if (won) {
            return pki_crl_rebuild_or_keep(ca, r, next_update_secs,
                                           revgen, group, token, now, out,
                                           res);
        }

        /* someone else builds: the stored one meanwhile, while valid */
        if (out->number > 0 && out->next_update > now) {
            return PKI_OK;
        }

        free(out->der);
        memset(out, 0, sizeof(*out));

        if (i >= PKI_CRL_WAIT_STEPS) {
            return pki_fail(res, PKI_UNAVAILABLE,
                            "CRL: another builder holds the lock");
        }

        pki_crl_sleep_ms(PKI_CRL_WAIT_STEP_MS);
    }
}


/* ---- the local copy ------------------------------------------------------- */

/*
 * A worker keeps the CRLs it serves in memory; one that starts while Redis
 * is down (a reload, a crashed worker replaced) has none.  A copy of each
 * CA's current CRL on local disk serves it then: <dir>/<CA>.crl, written to
 * a temporary file and renamed over the old one (a reader never sees half
 * a file), and read back only when it is this CA's, whole and not expired.
 */

#define PKI_CRL_FILE_MAX  (256L * 1024 * 1024)


static int
pki_crl_file_name(char *buf, size_t size, const char *dir, const char *ca,
    const char *suffix)
{
    int  n;

    if (dir == NULL || dir[0] == '\0' || ca == NULL || ca[0] == '\0'
        || strchr(ca, '/') != NULL)
    {
        return 0;
    }

    n = snprintf(buf, size, "%s/%s.crl%s", dir, ca, suffix);
    return n > 0 && (size_t) n < size;
}


PKI_API pki_status_t
pki_crl_file_save(const pki_ca_t *ca, const char *dir,
    const pki_crl_info_t *crl, pki_result_t *res)
{
    int            fd, ok;
    char           path[4096], tmp[4096], sfx[48];
    size_t         off;
    ssize_t        n;
    unsigned char  rnd[6];

    if (ca == NULL || crl == NULL || crl->der == NULL || crl->len == 0
        || RAND_bytes(rnd, sizeof(rnd)) != 1)
    {
        return pki_fail(res, PKI_INTERNAL, "CRL copy: bad arguments");
    }

    snprintf(sfx, sizeof(sfx), ".%ld.%02x%02x%02x%02x%02x%02x",
             (long) getpid(), rnd[0], rnd[1], rnd[2], rnd[3], rnd[4],
             rnd[5]);

    if (!pki_crl_file_name(path, sizeof(path), dir, pki_ca_name(ca), "")
        || !pki_crl_file_name(tmp, sizeof(tmp), dir, pki_ca_name(ca), sfx))
    {
        return pki_fail(res, PKI_INTERNAL, "CRL copy: bad file name");
    }

    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        pki_log(res, "open(\"%s\"): %s", tmp, strerror(errno));
        return pki_fail(res, PKI_INTERNAL, "CRL copy: cannot write");
    }

    ok = 1;

    for (off = 0; ok && off < crl->len; off += (size_t) n) {
        n = write(fd, crl->der + off, crl->len - off);
        if (n < 0 && errno == EINTR) {
            n = 0;
        } else if (n <= 0) {
            pki_log(res, "write(\"%s\"): %s", tmp,
                    n < 0 ? strerror(errno) : "nothing written");
            ok = 0;
        }
    }

    /* the rename names only a whole file, also after a crash */
    if (ok && fsync(fd) != 0) {
        pki_log(res, "fsync(\"%s\"): %s", tmp, strerror(errno));
        ok = 0;
    }

    if (close(fd) != 0 && ok) {
        pki_log(res, "close(\"%s\"): %s", tmp, strerror(errno));
        ok = 0;
    }

    if (ok && rename(tmp, path) != 0) {
        pki_log(res, "rename(\"%s\", \"%s\"): %s", tmp, path,
                strerror(errno));
        ok = 0;
    }

    if (!ok) {
        (void) unlink(tmp);
        return pki_fail(res, PKI_INTERNAL, "CRL copy: cannot write");
    }

    return PKI_OK;
}


PKI_API pki_status_t
pki_crl_file_load(const pki_ca_t *ca, const char *dir, pki_crl_info_t *out,
    pki_result_t *res)
{
    int                   fd;
    char                  path[4096];
    size_t                off;
    time_t                now;
    ssize_t               n;
    int64_t               n64;
    X509_CRL             *crl;
    struct stat           sb;
    ASN1_INTEGER         *num;
    const ASN1_TIME      *nu;
    const unsigned char  *p;

    if (ca == NULL || out == NULL) {
        return pki_fail(res, PKI_INTERNAL, "CRL copy: bad arguments");
    }

    memset(out, 0, sizeof(*out));

    if (!pki_crl_file_name(path, sizeof(path), dir, pki_ca_name(ca), "")) {
        return pki_fail(res, PKI_INTERNAL, "CRL copy: bad file name");
    }

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            return pki_fail(res, PKI_NOT_FOUND, "no local CRL copy");
        }
        pki_log(res, "open(\"%s\"): %s", path, strerror(errno));
        return pki_fail(res, PKI_INTERNAL, "CRL copy: cannot read");
    }

    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0
        || sb.st_size > PKI_CRL_FILE_MAX)
    {
        close(fd);
        pki_log(res, "\"%s\": not a regular file of 1 to %ld bytes", path,
                PKI_CRL_FILE_MAX);
        return pki_fail(res, PKI_INTERNAL, "CRL copy: unusable");
    }

    out->len = (size_t) sb.st_size;
    out->der = malloc(out->len);
    if (out->der == NULL) {
        close(fd);
        memset(out, 0, sizeof(*out));
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    for (off = 0; off < out->len; off += (size_t) n) {
        n = read(fd, out->der + off, out->len - off);
        if (n < 0 && errno == EINTR) {
            n = 0;
        } else if (n <= 0) {
            break;
        }
    }

    close(fd);

    if (off != out->len) {
        pki_log(res, "\"%s\": short read", path);
        goto unusable;
    }

    /* this CA's current certificate and key signed it, it is whole */
    if (!pki_crl_signed_by(ca, out->der, out->len)) {
        pki_log(res, "\"%s\" is not a CRL of this CA's current certificate "
                "and key", path);
        goto unusable;
    }

    p = out->der;
    crl = d2i_X509_CRL(NULL, &p, (long) out->len);
    if (crl == NULL) {
        goto unusable;
    }

    nu = X509_CRL_get0_nextUpdate(crl);
    num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);

    out->this_update = pki_int_asn1_time(X509_CRL_get0_lastUpdate(crl));
    out->next_update = nu != NULL ? pki_int_asn1_time(nu) : (time_t) -1;
    if (num == NULL || !ASN1_INTEGER_get_int64(&n64, num)) {
        n64 = -1;
    }
    out->number = (long long) n64;

    ASN1_INTEGER_free(num);
    X509_CRL_free(crl);
    ERR_clear_error();

    now = time(NULL);

    if (out->number <= 0 || out->this_update == (time_t) -1
        || out->next_update == (time_t) -1)
    {
        pki_log(res, "\"%s\": no CRL number or dates", path);
        goto unusable;
    }

    if (out->next_update <= now) {
        free(out->der);
        memset(out, 0, sizeof(*out));
        return pki_fail(res, PKI_NOT_FOUND, "the local CRL copy expired");
    }

    return PKI_OK;

unusable:

    ERR_clear_error();
    free(out->der);
    memset(out, 0, sizeof(*out));
    return pki_fail(res, PKI_INTERNAL, "CRL copy: unusable");
}
