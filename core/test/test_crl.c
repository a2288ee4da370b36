/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * CRLs: pki_crl_build_list (in memory) and pki_crl_build (Redis revoked
 * hash, CRL number).  Checked with OpenSSL's own parser and with the
 * openssl CLI as an oracle (openssl crl -CAfile, openssl verify
 * -crl_check).  Needs PKI_TEST_REDIS_SOCK (a running redis-server's unix
 * socket); skipped without it.
 */

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include <hiredis/hiredis.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "pki.h"
#include "test/unit.h"
#include "test/certs.h"
#include "test/clock.h"
#include "test/fixture.h"
#include "test/proxy.h"


#define NLEAVES  5


static char  dir[64];


static int
run(const char *fmt, ...)
{
    int      rc;
    char     cmd[2048];
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);

    rc = system(cmd);
    return rc == -1 ? -1 : WEXITSTATUS(rc);
}


static char *
path(const char *name)
{
    static char  buf[4][160];
    static int   n;
    char        *p;

    p = buf[n++ % 4];
    snprintf(p, 160, "%s/%s", dir, name);
    return p;
}


/* pki_crl_store_put as a builder makes it: under crl_lock, its token. */
static pki_status_t
locked_put(pki_redis_t *r, const char *ca, const pki_crl_info_t *c,
    int *stored, pki_result_t *res)
{
    int           won;
    pki_status_t  st;
    pki_result_t  ures;

    st = pki_crl_lock(r, ca, "test-put", 10000, &won, res);
    if (st != PKI_OK || !won) {
        return st != PKI_OK ? st : pki_fail(res, PKI_INTERNAL, "locked");
    }

    st = pki_crl_store_put(r, ca, c, "test-put", stored, res);

    pki_result_init(&ures);
    (void) pki_crl_unlock(r, ca, "test-put", &ures);

    return st;
}


static void
write_cert(X509 *x, const char *name)
{
    FILE  *f;

    f = fopen(path(name), "w");
    PEM_write_X509(f, x);
    fclose(f);
}


static void
write_der(const unsigned char *der, size_t len, const char *name)
{
    FILE  *f;

    f = fopen(path(name), "w");
    fwrite(der, 1, len, f);
    fclose(f);
}


static X509_NAME *
cn_name(const char *cn)
{
    X509_NAME  *n;

    n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8,
                               (const unsigned char *) "Test", -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    return n;
}


static pki_ca_t *
make_ca(const char *name, const char *cert, pki_key_t *key,
    pki_template_t *t)
{
    const char    *argv[1];
    pki_ca_t      *ca;
    pki_result_t   res;

    pki_result_init(&res);
    ca = pki_ca_new(name);
    argv[0] = path(cert);
    pki_ca_set(ca, "certificate", 1, argv, &res);
    pki_ca_set_key(ca, key, &res);
    pki_ca_add_template(ca, t, &res);

    if (pki_ca_finish(ca, &res) != PKI_OK) {
        diag("CA %s: %s %s", name, res.detail, res.log);
    }

    return ca;
}


static X509 *
issue(pki_ca_t *ca, pki_template_t *t, pki_redis_t *r, const char *cn,
    EVP_PKEY *pk)
{
    X509       *x;
    X509_NAME  *name;

    name = cn_name(cn);
    x = fx_issue(ca, t, r, name, pk, 0);
    X509_NAME_free(name);

    return x;
}


static X509_CRL *
parse_crl(const unsigned char *der, size_t len)
{
    const unsigned char  *p;
    X509_CRL             *crl;

    p = der;
    crl = d2i_X509_CRL(NULL, &p, (long) len);
    if (crl != NULL && p != der + len) {
        X509_CRL_free(crl);
        return NULL;
    }

    return crl;
}


/* Number of fields in the TBSCertList and whether one is the SEQUENCE OF
 * revokedCertificates (the sixth, after nextUpdate). */
static int
tbs_fields(X509_CRL *crl, int *has_revoked)
{
    int                   n, len, tag, cls, inf, nfields;
    long                  l;
    unsigned char        *der;
    const unsigned char  *p, *end;

    der = NULL;
    len = i2d_re_X509_CRL_tbs(crl, &der);
    if (len <= 0) {
        return -1;
    }

    p = der;
    inf = ASN1_get_object(&p, &l, &tag, &cls, len);
    if (inf & 0x80 || tag != V_ASN1_SEQUENCE) {
        OPENSSL_free(der);
        return -1;
    }

    end = p + l;
    nfields = 0;
    *has_revoked = 0;

    while (p < end) {
        inf = ASN1_get_object(&p, &l, &tag, &cls, end - p);
        if (inf & 0x80) {
            nfields = -1;
            break;
        }
        nfields++;
        /* version, sigalg, issuer, thisUpdate, nextUpdate, then either
         * SEQUENCE (revoked) or [0] (extensions). */
        if (nfields == 6 && cls == V_ASN1_UNIVERSAL
            && tag == V_ASN1_SEQUENCE)
        {
            *has_revoked = 1;
        }
        p += l;
    }

    n = nfields;
    OPENSSL_free(der);

    return n;
}


static long long
crl_number(X509_CRL *crl)
{
    int            crit;
    int64_t        v;
    ASN1_INTEGER  *num;

    num = X509_CRL_get_ext_d2i(crl, NID_crl_number, &crit, NULL);
    if (num == NULL || !ASN1_INTEGER_get_int64(&v, num)) {
        ASN1_INTEGER_free(num);
        return -1;
    }

    ASN1_INTEGER_free(num);
    return (long long) v;
}


static X509_REVOKED *
find_revoked(X509_CRL *crl, X509 *x)
{
    X509_REVOKED  *rev;

    if (X509_CRL_get0_by_serial(crl, &rev,
                                X509_get0_serialNumber(x)) != 1)
    {
        return NULL;
    }

    return rev;
}


static int
rev_reason(X509_REVOKED *rev)
{
    int               crit, reason;
    ASN1_ENUMERATED  *e;

    e = X509_REVOKED_get_ext_d2i(rev, NID_crl_reason, &crit, NULL);
    if (e == NULL) {
        return crit == -1 ? -1 : -2;    /* absent : broken */
    }

    reason = (int) ASN1_ENUMERATED_get(e);
    ASN1_ENUMERATED_free(e);

    return reason;
}


static time_t
rev_invalidity(X509_REVOKED *rev)
{
    int                    crit;
    struct tm              tm;
    ASN1_GENERALIZEDTIME  *gt;

    gt = X509_REVOKED_get_ext_d2i(rev, NID_invalidity_date, &crit, NULL);
    if (gt == NULL) {
        return 0;
    }

    if (ASN1_STRING_type(gt) != V_ASN1_GENERALIZEDTIME
        || !ASN1_TIME_to_tm(gt, &tm))
    {
        ASN1_GENERALIZEDTIME_free(gt);
        return -1;
    }

    ASN1_GENERALIZEDTIME_free(gt);
    return timegm(&tm);
}


static time_t
asn1_time(const ASN1_TIME *t)
{
    struct tm  tm;

    if (t == NULL || !ASN1_TIME_to_tm(t, &tm)) {
        return -1;
    }

    return timegm(&tm);
}


/* Checks the parts every CRL of this CA shares. */
static void
check_common(X509_CRL *crl, X509 *cacert, const char *what)
{
    int                crit;
    time_t             tu, nu, now;
    AUTHORITY_KEYID   *akid;
    const ASN1_OCTET_STRING  *skid;

    ok(X509_CRL_get_version(crl) == X509_CRL_VERSION_2, "%s: version 2",
       what);
    ok(X509_CRL_verify(crl, X509_get0_pubkey(cacert)) == 1,
       "%s: signature verifies with the CA key", what);
    ok(X509_NAME_cmp(X509_CRL_get_issuer(crl),
                     X509_get_subject_name(cacert)) == 0,
       "%s: issuer is the CA subject", what);

    now = time(NULL);
    tu = asn1_time(X509_CRL_get0_lastUpdate(crl));
    nu = asn1_time(X509_CRL_get0_nextUpdate(crl));
    ok(tu <= now && tu >= now - 60 && nu - tu == 3600,
       "%s: thisUpdate now, nextUpdate +1h (%lld, %lld)", what,
       (long long) (now - tu), (long long) (nu - tu));

    akid = X509_CRL_get_ext_d2i(crl, NID_authority_key_identifier, &crit,
                                NULL);
    skid = X509_get0_subject_key_id(cacert);
    ok(akid != NULL && akid->keyid != NULL && skid != NULL
       && ASN1_OCTET_STRING_cmp(akid->keyid, skid) == 0 && crit == 0,
       "%s: authorityKeyIdentifier = CA's subjectKeyIdentifier", what);
    AUTHORITY_KEYID_free(akid);
}


static void
test_list(pki_ca_t *ca, X509 *cacert)
{
    size_t            len;
    time_t            now;
    X509_CRL         *crl;
    pki_status_t      st;
    pki_result_t      res;
    X509_REVOKED     *rev;
    unsigned char    *der;
    const STACK_OF(X509_REVOKED)  *revs;
    int               nf, hr, seen[4];
    ASN1_INTEGER     *want;

    static const pki_crl_entry_t  entries[] = {
        { "00ab", 1, 1700000000, 1690000000 },
        { "0x0CD", 9, 1700000001, 0 },
        { "not-hex", 1, 1700000002, 0 },
        { "12", 8, 1700000003, 0 },          /* removeFromCRL: skipped */
        { "34", 7, 1700000004, 0 },          /* unused code: kept, no reason */
        { "56", 0, -5, 0 },                  /* bad time: thisUpdate */
        { "00", 1, 1700000005, 0 },          /* zero: not a serial */
        { "7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF", 10, 1700000006, 0 },
    };

    pki_result_init(&res);
    now = time(NULL);

    /* Argument checks. */
    st = pki_crl_build_list(ca, NULL, 0, 1, 0, 0, &der, &len, &res);
    is_status(st, PKI_INTERNAL, "nextUpdate 0 refused");
    st = pki_crl_build_list(ca, NULL, 0, 1, 0, 400L * 86400, &der, &len,
                            &res);
    is_status(st, PKI_INTERNAL, "nextUpdate 400 days refused");
    st = pki_crl_build_list(ca, NULL, 3, 1, 0, 3600, &der, &len, &res);
    is_status(st, PKI_INTERNAL, "NULL entries with n > 0 refused");
    st = pki_crl_build_list(ca, NULL, 0, 0, 0, 3600, &der, &len, &res);
    is_status(st, PKI_INTERNAL, "CRL number 0 refused");
    ok(der == NULL, "  no output");
    st = pki_crl_build_list(NULL, NULL, 0, 1, 0, 3600, &der, &len, &res);
    is_status(st, PKI_INTERNAL, "no CA refused");

    /* Empty list. */
    pki_result_init(&res);
    st = pki_crl_build_list(ca, NULL, 0, 42, now, 3600, &der, &len, &res);
    is_status(st, PKI_OK, "empty CRL from a list");
    crl = der ? parse_crl(der, len) : NULL;
    ok(crl != NULL, "  parses, no trailing bytes");
    if (crl) {
        check_common(crl, cacert, "empty list");
        ok(crl_number(crl) == 42, "  CRL number 42");
        nf = tbs_fields(crl, &hr);
        ok(nf == 6 && !hr, "  no revokedCertificates field (%d fields)", nf);
        X509_CRL_free(crl);
    }
    free(der);

    /* Hostile and odd entries. */
    pki_result_init(&res);
    st = pki_crl_build_list(ca, entries,
                            sizeof(entries) / sizeof(entries[0]),
                            (long long) 0x7fffffffffffffffLL, now, 3600,
                            &der, &len, &res);
    is_status(st, PKI_OK, "CRL from a list with bad entries");
    ok(strstr(res.log, "skipped 2 bad serials and 1 removeFromCRL") != NULL
       && strstr(res.log, "1 bad reasons, 1 bad times") != NULL,
       "  bad entries noted in the log: %s", res.log);
    crl = der ? parse_crl(der, len) : NULL;
    if (!ok(crl != NULL, "  parses")) {
        free(der);
        return;
    }

    check_common(crl, cacert, "list");
    ok(crl_number(crl) == 0x7fffffffffffffffLL, "  CRL number 2^63-1");
    nf = tbs_fields(crl, &hr);
    ok(nf == 7 && hr, "  revokedCertificates present");
    revs = X509_CRL_get_REVOKED(crl);
    ok(sk_X509_REVOKED_num(revs) == 5, "  5 entries (got %d)",
       sk_X509_REVOKED_num(revs));

    memset(seen, 0, sizeof(seen));
    want = ASN1_INTEGER_new();
    for (int i = 0; i < sk_X509_REVOKED_num(revs); i++) {
        rev = sk_X509_REVOKED_value(revs, i);
        if (i > 0) {
            ok(ASN1_INTEGER_cmp(
                   X509_REVOKED_get0_serialNumber(
                       sk_X509_REVOKED_value(revs, i - 1)),
                   X509_REVOKED_get0_serialNumber(rev)) < 0,
               "  entry %d sorted by serial", i);
        }
    }

    ASN1_INTEGER_set(want, 0xab);
    ok(X509_CRL_get0_by_serial(crl, &rev, want) == 1
       && rev_reason(rev) == 1 && rev_invalidity(rev) == 1690000000
       && asn1_time(X509_REVOKED_get0_revocationDate(rev)) == 1700000000,
       "  00ab: serial AB, keyCompromise, invalidity date, date");
    ASN1_INTEGER_set(want, 0xcd);
    ok(X509_CRL_get0_by_serial(crl, &rev, want) == 1
       && rev_reason(rev) == 9 && rev_invalidity(rev) == 0,
       "  0x0CD: privilegeWithdrawn, no invalidity date");
    ASN1_INTEGER_set(want, 0x34);
    ok(X509_CRL_get0_by_serial(crl, &rev, want) == 1
       && rev_reason(rev) == -1, "  reason 7 kept without reasonCode");
    ASN1_INTEGER_set(want, 0x56);
    ok(X509_CRL_get0_by_serial(crl, &rev, want) == 1
       && asn1_time(X509_REVOKED_get0_revocationDate(rev)) == now,
       "  bad revocation time: thisUpdate");
    ASN1_INTEGER_set(want, 0x12);
    ok(X509_CRL_get0_by_serial(crl, &rev, want) == 0,
       "  removeFromCRL entry absent");
    ASN1_INTEGER_free(want);

    X509_CRL_free(crl);
    free(der);
}


/* Many entries of every serial length, dates on both sides of 2050, all
 * reasons: what OpenSSL parses back must be what went in. */
static void
test_many(pki_ca_t *ca, X509 *cacert)
{
    int               bad, reason;
    char            (*hex)[41];
    size_t            i, j, n, len, slen;
    time_t            at;
    BIGNUM           *bn;
    X509_CRL         *crl;
    pki_status_t      st;
    pki_result_t      res;
    X509_REVOKED     *rev;
    ASN1_INTEGER     *ai;
    unsigned char    *der, b[20];
    pki_crl_entry_t  *e;

    static const int  reasons[] = { 0, 1, 2, 3, 4, 5, 6, 9, 10 };

    n = 3000;
    e = calloc(n, sizeof(*e));
    hex = calloc(n, sizeof(*hex));

    for (i = 0; i < n; i++) {
        slen = 1 + i % 20;
        for (j = 0; j < slen; j++) {
            b[j] = (unsigned char) (i * 7 + j * 13 + (i >> 3));
        }
        b[0] = (unsigned char) (i % 3 == 0 ? 0x80 | b[0] : 0x7f & b[0]);
        b[0] |= 0x01;                       /* no leading zero octet */
        if (slen == 20) {
            b[0] &= 0x7f;                   /* 20 octets: positive fits */
        }
        /* unique serials */
        if (slen <= 2) {
            b[0] = (unsigned char) (i / 20 + 1);
        } else {
            b[slen - 2] = (unsigned char) (i >> 8);
            b[slen - 1] = (unsigned char) i;
        }
        for (j = 0; j < slen; j++) {
            snprintf(hex[i] + 2 * j, 3, "%02x", b[j]);
        }
        e[i].serial = hex[i];
        e[i].reason = reasons[i % 9];
        /* 2023 .. 2107: UTCTime and GeneralizedTime */
        e[i].revoked_at = (time_t) 1700000000 + (time_t) i * 900000;
        e[i].invalidity_date = i % 5 == 0 ? e[i].revoked_at - 3600 : 0;
    }

    pki_result_init(&res);
    st = pki_crl_build_list(ca, e, n, 7, 0, 3600, &der, &len, &res);
    is_status(st, PKI_OK, "CRL of 3000 mixed entries");
    crl = der ? parse_crl(der, len) : NULL;
    if (!ok(crl != NULL, "  parses")) {
        goto done;
    }

    ok(X509_CRL_verify(crl, X509_get0_pubkey(cacert)) == 1,
       "  signature verifies");

    bn = NULL;
    bad = 0;
    for (i = 0; i < n; i++) {
        BN_hex2bn(&bn, hex[i]);
        ai = BN_to_ASN1_INTEGER(bn, NULL);
        if (X509_CRL_get0_by_serial(crl, &rev, ai) != 1) {
            bad++;
            ASN1_INTEGER_free(ai);
            continue;
        }
        ASN1_INTEGER_free(ai);
        reason = rev_reason(rev);
        at = asn1_time(X509_REVOKED_get0_revocationDate(rev));
        if (reason != (e[i].reason ? e[i].reason : -1)
            || at != e[i].revoked_at
            || rev_invalidity(rev) != e[i].invalidity_date
            || ASN1_STRING_type(X509_REVOKED_get0_revocationDate(rev))
               != (at < 2524608000 ? V_ASN1_UTCTIME : V_ASN1_GENERALIZEDTIME))
        {
            if (bad++ < 3) {
                diag("entry %s: reason %d at %lld", hex[i], reason,
                     (long long) at);
            }
        }
    }
    BN_free(bn);
    ok(bad == 0 && sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)) == (int) n,
       "  every entry read back (%d bad)", bad);

    write_der(der, len, "many.crl");
    ok(run("openssl crl -inform DER -in %s -CAfile %s -noout 2>&1 "
           "| grep -q 'verify OK'", path("many.crl"), path("ca.pem")) == 0,
       "  openssl crl -CAfile: verify OK");

    X509_CRL_free(crl);

done:

    free(der);
    free(e);
    free(hex);
}



/* The CA key types other than P-256: the digest is taken from the
 * signature algorithm the key produced. */
static void
test_algs(pki_template_t *tleaf)
{
    size_t            len;
    X509             *x;
    X509_CRL         *crl;
    EVP_PKEY         *pk;
    pki_ca_t         *ca;
    pki_key_t        *k;
    X509_NAME        *name;
    pki_status_t      st;
    pki_result_t      res;
    unsigned char    *der;
    pki_template_t   *t;

    static const char *const lines[] = {
        "subject CN copy", "subject O copy", "basic_constraints ca:true",
        "validity 30d", "key_types rsa:2048 ed25519 ec:P-384", NULL
    };
    static const char *const algs[][2] = {
        { "RSA", "2048" }, { "ED25519", NULL }, { "EC", "P-384" }
    };
    static const pki_crl_entry_t  entries[] = {
        { "01", 1, 1700000000, 0 }, { "0203", 0, 1700000001, 1690000000 },
    };

    t = fx_template("algroot", lines);

    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        char  file[32];

        if (algs[i][1] == NULL) {
            pk = EVP_PKEY_Q_keygen(NULL, NULL, algs[i][0]);
        } else if (strcmp(algs[i][0], "RSA") == 0) {
            pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
        } else {
            pk = EVP_PKEY_Q_keygen(NULL, NULL, algs[i][0], algs[i][1]);
        }
        snprintf(file, sizeof(file), "alg%zu.key", i);
        k = fx_key_file(dir, file, pk);

        name = cn_name("Alg CA");
        x = NULL;
        pki_result_init(&res);
        st = pki_selfsign(k, t, name, &x, &res);
        X509_NAME_free(name);
        if (!is_status(st, PKI_OK, "self-signed CA")) {
            diag("%s %s", res.detail, res.log);
            pki_key_free(k);
            EVP_PKEY_free(pk);
            continue;
        }

        snprintf(file, sizeof(file), "alg%zu.pem", i);
        write_cert(x, file);
        ca = make_ca("algca", file, k, tleaf);

        st = pki_crl_build_list(ca, entries, 2, 5, 0, 3600, &der, &len,
                                &res);
        ok(st == PKI_OK, "CRL signed by %s %s: %s", algs[i][0],
           algs[i][1] ? algs[i][1] : "", pki_status_name(st));
        crl = der ? parse_crl(der, len) : NULL;
        ok(crl != NULL && X509_CRL_verify(crl, pk) == 1
           && sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)) == 2,
           "  parses, 2 entries, verifies");
        write_der(der, len, "alg.crl");
        ok(run("openssl crl -inform DER -in %s -CAfile %s -noout 2>&1 "
               "| grep -q 'verify OK'", path("alg.crl"), path(file)) == 0,
           "  openssl crl -CAfile: verify OK");

        X509_CRL_free(crl);
        free(der);
        pki_ca_free(ca);
        X509_free(x);
        pki_key_free(k);
        EVP_PKEY_free(pk);
    }

    pki_template_free(t);
}



static void
revoke_leaf(pki_redis_t *r, const char *ca, X509 *x, int reason, time_t at,
    time_t inv)
{
    char          hex[41];
    pki_status_t  st;
    pki_result_t  res;

    pki_serial_to_hex(X509_get0_serialNumber(x), hex);
    pki_result_init(&res);
    st = pki_record_revoke(r, ca, hex, reason, at, inv, NULL, &res);
    is_status(st, PKI_OK, "pki_record_revoke");
    if (st != PKI_OK) {
        diag("%s %s", res.detail, res.log);
    }
}


static void foreign_crl(pki_ca_t *ca, pki_redis_t *r, pki_result_t *res);
static void expired_entries(pki_ca_t *ca, pki_redis_t *r, redisContext *rc,
    const char *ns);
static void big_der(pki_ca_t *ca, pki_redis_t *r, redisContext *rc,
    const char *ns);
static void late_builder(pki_ca_t *ca, pki_redis_t *r, redisContext *rc,
    const char *ns, pki_result_t *res);


/* pki_crl_current: built once per revgen, shared through Redis. */
static void
test_current(pki_ca_t *ca, pki_redis_t *r, redisContext *rc, const char *ns,
    X509 *good)
{
    int             won;
    long long       n1, gen;
    X509_CRL       *crl;
    redisReply     *reply;
    pki_status_t    st;
    pki_result_t    res;
    pki_crl_info_t  a, b, c;

    pki_result_init(&res);
    st = pki_crl_current(ca, r, 3600, 0, &a, &res);
    if (!is_status(st, PKI_OK, "pki_crl_current builds")) {
        diag("%s %s", res.detail, res.log);
        return;
    }
    ok(a.der != NULL && a.number > 0 && a.next_update - a.this_update == 3600,
       "  DER, number %lld, nextUpdate - thisUpdate 3600", a.number);
    crl = a.der ? parse_crl(a.der, a.len) : NULL;
    ok(crl != NULL && crl_number(crl) == a.number, "  number matches");
    X509_CRL_free(crl);
    n1 = a.number;

    st = pki_crl_current(ca, r, 3600, 0, &b, &res);
    ok(st == PKI_OK && b.number == n1 && b.der != NULL && b.len == a.len
       && memcmp(a.der, b.der, a.len) == 0, "  again: the stored one");
    free(b.der);

    st = pki_crl_current(ca, r, 3600, n1, &b, &res);
    ok(st == PKI_OK && b.number == n1 && b.der == NULL,
       "  with its number: unchanged, no DER");
    free(a.der);

    /* asked for a longer lifetime: the stored one stays; for a shorter
     * one (pki_crl_next_update lowered, then a reload): built again */
    st = pki_crl_current(ca, r, 7200, n1, &b, &res);
    ok(st == PKI_OK && b.number == n1 && b.der == NULL,
       "  a longer lifetime asked: unchanged");
    st = pki_crl_current(ca, r, 600, n1, &b, &res);
    ok(st == PKI_OK && b.number > n1 && b.der != NULL
       && b.next_update - b.this_update == 600,
       "  a shorter lifetime asked: a new CRL (%lld), of 600 s", b.number);
    free(b.der);
    st = pki_crl_current(ca, r, 3600, 0, &a, &res);
    ok(st == PKI_OK && a.number == b.number,
       "  then the longer one asked again: the shorter one stays");
    free(a.der);
    n1 = a.number;

    /* this host's clock 400 s behind the builder's: the CRL ends 400 s
     * further from its now than its lifetime, which is still the one
     * asked: not rebuilt (hosts with clocks apart took turns) */
    clock_ahead = -400;
    st = pki_crl_current(ca, r, 600, n1, &b, &res);
    clock_ahead = 0;
    ok(st == PKI_OK && b.number == n1 && b.der == NULL,
       "  a clock 400 s behind the builder's: unchanged (%lld)", b.number);
    free(b.der);

    /* a revocation: rebuilt once */
    revoke_leaf(r, pki_ca_name(ca), good, 4, time(NULL), 0);
    st = pki_crl_current(ca, r, 3600, n1, &a, &res);
    ok(st == PKI_OK && a.number > n1 && a.der != NULL,
       "  after a revocation: a new CRL (%lld)", a.number);
    crl = a.der ? parse_crl(a.der, a.len) : NULL;
    ok(crl != NULL && find_revoked(crl, good) != NULL, "  lists it");
    X509_CRL_free(crl);
    pki_record_revgen(r, pki_ca_name(ca), &gen, &res);
    ok(a.revgen == gen, "  meta revgen is the current one");
    free(a.der);

    /* another holds the lock: the stored (stale) one is served */
    freeReplyObject(redisCommand(rc, "INCR %s{ca:%s}:revgen", ns,
                                 pki_ca_name(ca)));
    st = pki_crl_lock(r, pki_ca_name(ca), "other", 10000, &won, &res);
    ok(st == PKI_OK && won, "  lock taken by another");
    st = pki_crl_lock(r, pki_ca_name(ca), "third", 10000, &won, &res);
    ok(st == PKI_OK && !won, "  lock not taken twice");
    st = pki_crl_current(ca, r, 3600, 0, &b, &res);
    ok(st == PKI_OK && b.der != NULL && b.revgen < gen + 1,
       "  locked: the stored one, stale");
    free(b.der);
    pki_crl_unlock(r, pki_ca_name(ca), "third", &res);
    st = pki_crl_lock(r, pki_ca_name(ca), "x", 10000, &won, &res);
    ok(st == PKI_OK && !won, "  unlock with the wrong token keeps it");
    pki_crl_unlock(r, pki_ca_name(ca), "other", &res);
    st = pki_crl_current(ca, r, 3600, 0, &b, &res);
    ok(st == PKI_OK && b.der != NULL && b.revgen == gen + 1,
       "  unlocked: rebuilt for the new revgen");
    free(b.der);

    /* an older CRL never replaces a newer one */
    memset(&a, 0, sizeof(a));
    a.der = (unsigned char *) "x";
    a.len = 1;
    a.number = 1;
    a.this_update = 1;
    a.next_update = 2;
    won = 1;
    st = locked_put(r, pki_ca_name(ca), &a, &won, &res);
    ok(st == PKI_OK && !won, "  an older number is not stored");

    /* a builder that outlived its lock: a higher number, but a snapshot
     * of an older revocation generation, is not stored either */
    st = pki_crl_current(ca, r, 3600, 0, &b, &res);
    ok(st == PKI_OK && b.der != NULL && b.revgen > 0, "  the stored one "
       "(revgen %lld)", b.revgen);
    a.number = b.number + 1;
    a.revgen = b.revgen - 1;
    won = 1;
    st = locked_put(r, pki_ca_name(ca), &a, &won, &res);
    ok(st == PKI_OK && !won, "  an older revocation snapshot under a "
       "higher number is not stored");
    a.revgen = b.revgen;

    /* a builder whose lock expired, or passed to another: not stored,
     * whatever its number and revgen (another may have built from a
     * newer snapshot of a CA that shares this one's key meanwhile) */
    a.number = b.number + 2;
    won = 1;
    st = pki_crl_store_put(r, pki_ca_name(ca), &a, "gone", &won, &res);
    ok(st == PKI_OK && won == -1, "  a builder without the lock: not "
       "stored (%d)", won);
    st = pki_crl_lock(r, pki_ca_name(ca), "another", 10000, &won, &res);
    won = 1;
    if (st == PKI_OK) {
        st = pki_crl_store_put(r, pki_ca_name(ca), &a, "gone", &won, &res);
    }
    ok(st == PKI_OK && won == -1, "  nor with the lock another's");
    pki_crl_unlock(r, pki_ca_name(ca), "another", &res);
    reply = redisCommand(rc, "EXISTS %s{ca:%s}:crl:%lld", ns,
                         pki_ca_name(ca), a.number);
    ok(reply != NULL && reply->type == REDIS_REPLY_INTEGER
       && reply->integer == 0, "  and its DER is gone");
    freeReplyObject(reply);
    st = pki_crl_current(ca, r, 3600, b.number, &c, &res);
    ok(st == PKI_OK && c.number == b.number && c.der == NULL,
       "  the stored one is still the current one (%lld)", c.number);
    free(c.der);

    a.number = b.number + 1;
    st = locked_put(r, pki_ca_name(ca), &a, &won, &res);
    ok(st == PKI_OK && won, "  the same snapshot under a higher number is");
    free(b.der);

    /* a stored CRL this CA's key did not sign (garbage here, another key
     * below): rebuilt, not served */
    st = pki_crl_current(ca, r, 3600, 0, &b, &res);
    ok(st == PKI_OK && b.der != NULL && b.number > a.number
       && strstr(res.log, "not signed by this CA") != NULL,
       "  a stored CRL that does not parse: rebuilt (%lld)", b.number);
    free(b.der);
    foreign_crl(ca, r, &res);
    late_builder(ca, r, rc, ns, &res);
    /* garbage meta: rebuilt */
    freeReplyObject(redisCommand(rc, "SET %s{ca:%s}:crl_meta %s", ns,
                                 pki_ca_name(ca), "garbage"));
    st = pki_crl_current(ca, r, 3600, 0, &b, &res);
    ok(st == PKI_OK && b.der != NULL && b.number > 0,
       "  garbage meta: rebuilt");
    free(b.der);

    expired_entries(ca, r, rc, ns);
    big_der(ca, r, rc, ns);
}


/* A DER of 2.5 MB (three GETRANGE chunks) is stored under its number and
 * read back byte for byte; the legacy key goes, the replaced DER expires. */
static void
big_der(pki_ca_t *ca, pki_redis_t *r, redisContext *rc, const char *ns)
{
    int             won;
    char            meta[128];
    size_t          i;
    long long       gen, ttl;
    redisReply     *reply;
    pki_status_t    st;
    pki_result_t    res;
    pki_crl_info_t  a, b;

    pki_result_init(&res);
    memset(&a, 0, sizeof(a));

    st = pki_crl_store_read(r, pki_ca_name(ca), 0, &gen, &b, &res);
    ok(st == PKI_OK && b.number > 0, "the stored CRL %lld", b.number);
    free(b.der);

    freeReplyObject(redisCommand(rc, "SET %s{ca:%s}:crl legacy", ns,
                                 pki_ca_name(ca)));

    a.len = 2621440;
    a.der = malloc(a.len);
    if (a.der == NULL) {
        return;
    }
    for (i = 0; i < a.len; i++) {
        a.der[i] = (unsigned char) (i * 7 + i / 251);
    }
    a.number = b.number + 10;
    a.revgen = gen;
    a.this_update = time(NULL);
    a.next_update = a.this_update + 3600;

    won = 0;
    st = locked_put(r, pki_ca_name(ca), &a, &won, &res);
    ok(st == PKI_OK && won, "a DER of %zu bytes stored", a.len);

    memset(&b, 0, sizeof(b));
    st = pki_crl_store_read(r, pki_ca_name(ca), 0, &gen, &b, &res);
    ok(st == PKI_OK && b.number == a.number && b.len == a.len
       && b.der != NULL && memcmp(a.der, b.der, a.len) == 0,
       "  read back whole (%zu bytes)", b.len);
    free(b.der);

    reply = redisCommand(rc, "EXISTS %s{ca:%s}:crl", ns, pki_ca_name(ca));
    ok(reply != NULL && reply->type == REDIS_REPLY_INTEGER
       && reply->integer == 0, "  the legacy key is gone");
    freeReplyObject(reply);

    reply = redisCommand(rc, "PTTL %s{ca:%s}:crl:%lld", ns, pki_ca_name(ca),
                         a.number - 10);
    ttl = reply != NULL && reply->type == REDIS_REPLY_INTEGER
          ? reply->integer : -3;
    freeReplyObject(reply);
    ok(ttl > 0 && ttl <= 60000, "  the replaced DER expires (%lld ms)", ttl);

    reply = redisCommand(rc, "PTTL %s{ca:%s}:crl:%lld", ns, pki_ca_name(ca),
                         a.number);
    ok(reply != NULL && reply->type == REDIS_REPLY_INTEGER
       && reply->integer == -1, "  the stored one does not");
    freeReplyObject(reply);

    /* what an older version stores: the meta, and the DER under the
     * legacy key (in one script): read from there */
    snprintf(meta, sizeof(meta), "%lld %lld %lld %lld", gen,
             (long long) a.next_update, a.number + 1,
             (long long) a.this_update);
    freeReplyObject(redisCommand(rc, "SET %s{ca:%s}:crl_meta %s", ns,
                                 pki_ca_name(ca), meta));
    freeReplyObject(redisCommand(rc, "SET %s{ca:%s}:crl %b", ns,
                                 pki_ca_name(ca), a.der, (size_t) 3000));
    memset(&b, 0, sizeof(b));
    st = pki_crl_store_read(r, pki_ca_name(ca), 0, &gen, &b, &res);
    ok(st == PKI_OK && b.number == a.number + 1 && b.len == 3000
       && b.der != NULL && memcmp(a.der, b.der, 3000) == 0,
       "  an older version's CRL: read from the legacy key (%zu bytes)",
       b.len);
    free(b.der);

    /* an older one is not stored and leaves no DER */
    a.number -= 5;
    st = locked_put(r, pki_ca_name(ca), &a, &won, &res);
    reply = redisCommand(rc, "EXISTS %s{ca:%s}:crl:%lld", ns,
                         pki_ca_name(ca), a.number);
    ok(st == PKI_OK && !won && reply != NULL
       && reply->type == REDIS_REPLY_INTEGER && reply->integer == 0,
       "  an older number: not stored, its DER deleted");
    freeReplyObject(reply);
    free(a.der);

    /* not this CA's signature: the next pki_crl_current rebuilds */
    st = pki_crl_current(ca, r, 3600, 0, &b, &res);
    ok(st == PKI_OK && b.der != NULL && b.number > a.number + 5,
       "  then rebuilt (%lld)", b.number);
    free(b.der);
}


/* 1 when the CRL lists the serial given in hex. */
static int
lists_hex(X509_CRL *crl, const char *hex)
{
    int            found;
    BIGNUM        *bn;
    ASN1_INTEGER  *ai;
    X509_REVOKED  *rev;

    bn = NULL;
    if (BN_hex2bn(&bn, hex) == 0) {
        return -1;
    }
    ai = BN_to_ASN1_INTEGER(bn, NULL);
    BN_free(bn);
    if (ai == NULL) {
        return -1;
    }

    found = X509_CRL_get0_by_serial(crl, &rev, ai) == 1;
    ASN1_INTEGER_free(ai);

    return found;
}


/* Entries of certificates that expired (a day or more) before the stored
 * CRL's thisUpdate are left out of the fleet's next CRL; those that
 * expired later, unexpired ones and those the expiry index lacks stay;
 * pki_crl_build (no previous CRL) lists them all. */
static void
expired_entries(pki_ca_t *ca, pki_redis_t *r, redisContext *rc,
    const char *ns)
{
    size_t          len;
    time_t          now;
    X509_CRL       *crl;
    pki_status_t    st;
    pki_result_t    res;
    unsigned char  *der;
    pki_crl_info_t  b;

    static const char *const  hex[] = {
        "7E57E0000001", "7E57E0000002", "7E57E0000003", "7E57E0000004"
    };

    now = time(NULL);
    pki_result_init(&res);

    st = pki_crl_current(ca, r, 3600, 0, &b, &res);
    ok(st == PKI_OK && b.this_update > 0, "a stored CRL (thisUpdate %lld)",
       (long long) b.this_update);
    free(b.der);

    /* expired 2 d before it, 1 h before it, unexpired, not indexed */
    freeReplyObject(redisCommand(rc, "HSET %s{ca:%s}:revoked %s %s %s %s "
                                 "%s %s %s %s", ns, pki_ca_name(ca),
                                 hex[0], "1 1700000000 0",
                                 hex[1], "1 1700000000 0",
                                 hex[2], "1 1700000000 0",
                                 hex[3], "1 1700000000 0"));
    freeReplyObject(redisCommand(rc, "ZADD %s{ca:%s}:expiry %lld %s %lld %s "
                                 "%lld %s", ns, pki_ca_name(ca),
                                 (long long) b.this_update - 2 * 86400,
                                 hex[0],
                                 (long long) b.this_update - 3600, hex[1],
                                 (long long) now + 86400, hex[2]));
    freeReplyObject(redisCommand(rc, "INCR %s{ca:%s}:revgen", ns,
                                 pki_ca_name(ca)));

    st = pki_crl_current(ca, r, 3600, 0, &b, &res);
    crl = st == PKI_OK && b.der != NULL ? parse_crl(b.der, b.len) : NULL;
    ok(crl != NULL, "rebuilt after the entries were added");
    ok(crl != NULL && lists_hex(crl, hex[0]) == 0,
       "  expired 2 d before the last CRL: left out");
    ok(crl != NULL && lists_hex(crl, hex[1]) == 1
       && lists_hex(crl, hex[2]) == 1 && lists_hex(crl, hex[3]) == 1,
       "  expired 1 h before it, unexpired, not indexed: listed");
    ok(strstr(res.log, "1 entries of certificates expired") != NULL,
       "  logged: %s", res.log);
    X509_CRL_free(crl);
    free(b.der);

    der = NULL;
    st = pki_crl_build(ca, r, 3600, &der, &len, &res);
    crl = st == PKI_OK && der != NULL ? parse_crl(der, len) : NULL;
    ok(crl != NULL && lists_hex(crl, hex[0]) == 1
       && lists_hex(crl, hex[1]) == 1, "pki_crl_build lists them all");
    X509_CRL_free(crl);
    free(der);

    freeReplyObject(redisCommand(rc, "HDEL %s{ca:%s}:revoked %s %s %s %s",
                                 ns, pki_ca_name(ca), hex[0], hex[1], hex[2],
                                 hex[3]));
    freeReplyObject(redisCommand(rc, "ZREM %s{ca:%s}:expiry %s %s %s", ns,
                                 pki_ca_name(ca), hex[0], hex[1], hex[2]));
    freeReplyObject(redisCommand(rc, "INCR %s{ca:%s}:revgen", ns,
                                 pki_ca_name(ca)));
}


/* Two CRLs built within one second (a revocation each): the second's
 * thisUpdate is strictly later, in meta and DER, so an HTTP cache that
 * revalidates with If-Modified-Since (Last-Modified = thisUpdate, to the
 * second) sees the change; and it is never in the future. */
static void
test_this_update(pki_ca_t *ca, pki_redis_t *r, redisContext *rc,
    const char *ns)
{
    int               i, lu[2];
    X509_CRL         *crl;
    pki_status_t      st;
    pki_result_t      res;
    pki_crl_info_t    c[2];
    struct timespec   ts;

    /* at the start of a second: both builds fall within it */
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec = 0;
    ts.tv_nsec = 1000000000L - ts.tv_nsec + 10000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_nsec -= 1000000000L;
    }
    nanosleep(&ts, NULL);

    for (i = 0; i < 2; i++) {
        freeReplyObject(redisCommand(rc, "INCR %s{ca:%s}:revgen", ns,
                                     pki_ca_name(ca)));
        pki_result_init(&res);
        st = pki_crl_current(ca, r, 3600, 0, &c[i], &res);
        is_status(st, PKI_OK, "same second: a CRL built");
        crl = c[i].der ? parse_crl(c[i].der, c[i].len) : NULL;
        lu[i] = crl != NULL
                && ASN1_TIME_cmp_time_t(X509_CRL_get0_lastUpdate(crl),
                                        c[i].this_update) == 0;
        X509_CRL_free(crl);
    }

    ok(c[1].number > c[0].number && c[1].this_update > c[0].this_update,
       "  the second's thisUpdate is later (%lld, %lld)",
       (long long) c[0].this_update, (long long) c[1].this_update);
    ok(lu[0] && lu[1], "  and so is the DER's (lastUpdate)");
    ok(c[1].this_update <= time(NULL), "  not in the future");

    free(c[0].der);
    free(c[1].der);

    /* another host's clock 100 s ahead built the stored CRL: this host's
     * is dated by its own clock, not after it (strict verifiers, as
     * OpenSSL, reject a CRL whose thisUpdate is still to come) */
    clock_ahead = 100;
    freeReplyObject(redisCommand(rc, "INCR %s{ca:%s}:revgen", ns,
                                 pki_ca_name(ca)));
    pki_result_init(&res);
    st = pki_crl_current(ca, r, 3600, 0, &c[0], &res);
    clock_ahead = 0;
    is_status(st, PKI_OK, "a CRL built by a host 100 s ahead");

    freeReplyObject(redisCommand(rc, "INCR %s{ca:%s}:revgen", ns,
                                 pki_ca_name(ca)));
    pki_result_init(&res);
    st = pki_crl_current(ca, r, 3600, 0, &c[1], &res);
    crl = st == PKI_OK && c[1].der ? parse_crl(c[1].der, c[1].len) : NULL;
    ok(crl != NULL && c[1].number > c[0].number
       && c[1].this_update <= time(NULL)
       && ASN1_TIME_cmp_time_t(X509_CRL_get0_lastUpdate(crl),
                               c[1].this_update) == 0,
       "  the next one, here: thisUpdate not in the future (%+lld s)",
       (long long) (c[1].this_update - time(NULL)));
    ok(strstr(res.log, "ahead of this host's clock") != NULL,
       "  logged (%s)", res.log);
    X509_CRL_free(crl);

    free(c[0].der);
    free(c[1].der);
}


/* A builder that outlived its lock: a newer snapshot (a higher revgen)
 * was stored meanwhile, so its own CRL is not stored, and it answers the
 * stored one, not its own (which has the higher number and may lack a
 * revocation the stored one lists). */
static void
late_builder(pki_ca_t *ca, pki_redis_t *r, redisContext *rc,
    const char *ns, pki_result_t *res)
{
    int              won;
    size_t           len;
    long long        gen;
    pki_status_t     st;
    unsigned char   *der;
    pki_crl_info_t   a, b;

    pki_result_init(res);
    st = pki_record_revgen(r, pki_ca_name(ca), &gen, res);
    der = NULL;
    len = 0;
    if (st == PKI_OK) {
        st = pki_crl_build_list(ca, NULL, 0, 7, time(NULL), 3600, &der, &len,
                                res);
    }
    if (!ok(st == PKI_OK && der != NULL, "a stored CRL of a newer "
            "snapshot")) {
        free(der);
        return;
    }

    /* stored with a revgen ahead of the current one and a low number:
     * "newer" by its snapshot, yet not fresh for this revgen */
    memset(&a, 0, sizeof(a));
    a.der = der;
    a.len = len;
    a.number = 7;
    a.revgen = gen + 5;
    a.this_update = time(NULL);
    a.next_update = a.this_update + 3600;
    freeReplyObject(redisCommand(rc, "DEL %s{ca:%s}:crl_meta", ns,
                                 pki_ca_name(ca)));
    st = locked_put(r, pki_ca_name(ca), &a, &won, res);
    ok(st == PKI_OK && won, "  stored");

    pki_result_init(res);
    st = pki_crl_current(ca, r, 3600, 0, &b, res);
    ok(st == PKI_OK && b.number == 7 && b.len == len && b.der != NULL
       && memcmp(b.der, der, len) == 0
       && strstr(res->log, "not stored: a newer one is") != NULL,
       "  a build refused as older answers the stored CRL (%lld)",
       b.number);
    free(b.der);
    free(der);
}


/* A CRL under the CA's name signed by another key (the CA re-keyed): a
 * fresh one in the store is rebuilt, and the rebuilt one verifies. */
static void
foreign_crl(pki_ca_t *ca, pki_redis_t *r, pki_result_t *res)
{
    int              won;
    X509_CRL        *crl;
    EVP_PKEY        *other;
    ASN1_TIME       *t;
    pki_status_t     st;
    unsigned char   *der;
    pki_crl_info_t   a, b;

    other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    crl = X509_CRL_new();
    t = ASN1_TIME_set(NULL, time(NULL));
    if (!ok(other != NULL && crl != NULL && t != NULL, "a foreign CRL")) {
        return;
    }
    X509_CRL_set_version(crl, 1);
    X509_CRL_set_issuer_name(crl, X509_get_subject_name(pki_ca_cert(ca)));
    X509_CRL_set1_lastUpdate(crl, t);
    ASN1_TIME_free(t);
    t = ASN1_TIME_set(NULL, time(NULL) + 3600);
    X509_CRL_set1_nextUpdate(crl, t);
    ASN1_TIME_free(t);
    X509_CRL_sign(crl, other, EVP_sha256());

    pki_result_init(res);
    st = pki_crl_current(ca, r, 3600, 0, &b, res);
    memset(&a, 0, sizeof(a));
    der = NULL;
    a.len = (size_t) i2d_X509_CRL(crl, &der);
    a.der = der;
    a.number = b.number + 1;
    a.revgen = b.revgen;
    a.this_update = time(NULL);
    a.next_update = a.this_update + 3600;
    free(b.der);
    st = locked_put(r, pki_ca_name(ca), &a, &won, res);
    ok(st == PKI_OK && won, "  stored, fresh, with the current revgen");

    pki_result_init(res);
    st = pki_crl_current(ca, r, 3600, 0, &b, res);
    X509_CRL_free(crl);
    crl = b.der ? parse_crl(b.der, b.len) : NULL;
    ok(st == PKI_OK && crl != NULL && b.number > a.number
       && X509_CRL_verify(crl, X509_get0_pubkey(pki_ca_cert(ca))) == 1,
       "  another key's CRL: rebuilt, signed by the CA (%lld)", b.number);
    X509_CRL_free(crl);
    free(b.der);
    OPENSSL_free(der);
    EVP_PKEY_free(other);

}


/* The record as of a time: a due plan is a revocation (pki_record_at). */
static void
test_record_at(void)
{
    pki_record_t  rec;

    memset(&rec, 0, sizeof(rec));
    rec.status = PKI_CERT_GOOD;
    ok(pki_record_at(&rec, 1000) == 0 && rec.status == PKI_CERT_GOOD,
       "record at: no plan, good");

    rec.revoke_planned = 1001;
    rec.planned_reason = 4;
    ok(pki_record_at(&rec, 1000) == 0 && rec.status == PKI_CERT_GOOD
       && rec.revoke_planned == 1001, "  a plan not due yet: good");

    ok(pki_record_at(&rec, 1001) == 1 && rec.status == PKI_CERT_REVOKED
       && rec.reason == 4 && rec.revoked_at == 1001
       && rec.invalidity_date == 0 && rec.revoke_planned == 0,
       "  due at its time: revoked then, for the planned reason");

    memset(&rec, 0, sizeof(rec));
    rec.status = PKI_CERT_REVOKED;
    rec.reason = 1;
    rec.revoked_at = 900;
    rec.revoke_planned = 950;
    rec.planned_reason = 4;
    ok(pki_record_at(&rec, 1000) == 0 && rec.reason == 1
       && rec.revoked_at == 900, "  revoked before: its own reason and "
       "time stay");

    memset(&rec, 0, sizeof(rec));
    rec.status = PKI_CERT_PENDING;
    rec.revoke_planned = 950;
    ok(pki_record_at(&rec, 1000) == 0 && rec.status == PKI_CERT_PENDING,
       "  pending: no change");
    ok(pki_record_at(NULL, 1000) == 0, "  NULL: no change");
}


/* One serial given twice (in other spellings): listed once. */
static void
test_dupes(pki_ca_t *ca)
{
    size_t          len;
    X509_CRL       *crl;
    pki_status_t    st;
    pki_result_t    res;
    unsigned char  *der;

    static const pki_crl_entry_t  entries[] = {
        { "0a", 1, 1700000000, 0 },
        { "2b", 4, 1700000001, 0 },
        { "0A", 1, 1700000000, 0 },
        { "000a", 1, 1700000000, 0 },
    };

    pki_result_init(&res);
    der = NULL;
    st = pki_crl_build_list(ca, entries, 4, 5, 0, 3600, &der, &len, &res);
    crl = der ? parse_crl(der, len) : NULL;
    ok(st == PKI_OK && crl != NULL
       && sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)) == 2,
       "a serial given three times is listed once (%d entries)",
       crl ? sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)) : -1);
    X509_CRL_free(crl);
    free(der);
}


static int
count_revoked(X509_CRL *crl, X509 *x)
{
    int            i, n;
    X509_REVOKED  *rev;

    n = 0;
    for (i = 0; i < sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)); i++) {
        rev = sk_X509_REVOKED_value(X509_CRL_get_REVOKED(crl), i);
        if (ASN1_INTEGER_cmp(X509_REVOKED_get0_serialNumber(rev),
                             X509_get0_serialNumber(x)) == 0)
        {
            n++;
        }
    }

    return n;
}


/* A planned revocation: before its time it cuts the CRL's nextUpdate to
 * it; from its time on the CRL lists it (planned time and reason), before
 * pki_record_revoke_due() carries it out and after, once. */
static void
test_planned(pki_ca_t *ca, pki_redis_t *r, redisContext *rc, X509 *x)
{
    char             hex[41];
    time_t           at, now;
    size_t           len;
    unsigned         done;
    long long        gen, gen2;
    X509_CRL        *crl;
    redisReply      *rep;
    pki_status_t     st;
    pki_result_t     res;
    X509_REVOKED    *rev;
    unsigned char   *der;
    pki_crl_info_t   a, b;

    pki_serial_to_hex(X509_get0_serialNumber(x), hex);

    pki_result_init(&res);
    st = pki_crl_current(ca, r, 3600, 0, &a, &res);
    if (!ok(st == PKI_OK && a.der != NULL, "planned: a current CRL first")) {
        diag("%s %s", res.detail, res.log);
        return;
    }
    free(a.der);
    ok(a.next_update - a.this_update == 3600 && a.planned == 0,
       "  nextUpdate 1h away, no plan");

    /* whole seconds: the plan is due at the start of second at (each
     * CRL built below may wait for the second after the one before) */
    now = time(NULL);
    at = now + 4;
    pki_result_init(&res);
    st = pki_record_plan_revoke(r, pki_ca_name(ca), hex, 4, at, "test",
                                NULL, &res);
    if (!is_status(st, PKI_OK, "  planned superseded at now + 4")) {
        diag("%s %s", res.detail, res.log);
        return;
    }

    /* made after the stored CRL was built, before its nextUpdate */
    pki_result_init(&res);
    st = pki_crl_current(ca, r, 3600, a.number, &b, &res);
    crl = b.der ? parse_crl(b.der, b.len) : NULL;
    ok(st == PKI_OK && b.number > a.number && crl != NULL,
       "  the stored CRL is rebuilt (%lld -> %lld)", a.number, b.number);
    ok(b.next_update == at && crl != NULL
       && asn1_time(X509_CRL_get0_nextUpdate(crl)) == at,
       "  its nextUpdate is the planned time (%lld, plan %lld)",
       (long long) (b.next_update - now), (long long) (at - now));
    ok(crl != NULL && find_revoked(crl, x) == NULL, "  not listed yet");
    X509_CRL_free(crl);
    free(b.der);

    /* cut to the plan, it stays until the plan is due */
    pki_result_init(&res);
    st = pki_crl_current(ca, r, 3600, b.number, &a, &res);
    ok(st == PKI_OK && a.number == b.number && a.der == NULL
       && a.planned == at, "  asked again before then: the same CRL");
    free(a.der);

    pki_result_init(&res);
    der = NULL;
    st = pki_crl_build(ca, r, 7200, &der, &len, &res);
    crl = der ? parse_crl(der, len) : NULL;
    ok(st == PKI_OK && crl != NULL
       && asn1_time(X509_CRL_get0_nextUpdate(crl)) == at,
       "  pki_crl_build: nextUpdate the planned time, not + 2h");
    X509_CRL_free(crl);
    free(der);

    while (time(NULL) < at) {
        usleep(50000);
    }

    /* due, not carried out: the record still says good */
    rep = redisCommand(rc, "HGET %s{ca:%s}:cert:%s status", pki_redis_ns(r),
                       pki_ca_name(ca), hex);
    ok(rep != NULL && rep->type == REDIS_REPLY_STRING
       && strcmp(rep->str, "good") == 0, "  due; the record still good");
    freeReplyObject(rep);

    pki_result_init(&res);
    st = pki_crl_current(ca, r, 3600, b.number, &a, &res);
    crl = a.der ? parse_crl(a.der, a.len) : NULL;
    rev = crl ? find_revoked(crl, x) : NULL;
    ok(st == PKI_OK && a.number > b.number && rev != NULL,
       "  a new CRL lists it (%lld)", a.number);
    ok(rev != NULL && rev_reason(rev) == 4 && rev_invalidity(rev) == 0
       && asn1_time(X509_REVOKED_get0_revocationDate(rev)) == at,
       "  superseded, revoked at the planned time");
    ok(a.next_update - a.this_update == 3600, "  nextUpdate 1h away again");
    X509_CRL_free(crl);
    free(a.der);

    /* due, not carried out: nothing undoes or moves it (every reader
     * has called it revoked since the planned time) */
    pki_result_init(&res);
    st = pki_record_revoke(r, pki_ca_name(ca), hex, 6, time(NULL), 0, NULL,
                           &res);
    is_status(st, PKI_CONFLICT, "  a hold on it: conflict");
    pki_result_init(&res);
    st = pki_record_revoke(r, pki_ca_name(ca), hex, 1, time(NULL), 0, NULL,
                           &res);
    is_status(st, PKI_CONFLICT, "  keyCompromise now: conflict");
    pki_result_init(&res);
    st = pki_record_plan_revoke(r, pki_ca_name(ca), hex, 4,
                                time(NULL) + 3600, "test", NULL, &res);
    is_status(st, PKI_CONFLICT, "  a new plan an hour ahead: conflict");
    rep = redisCommand(rc, "HGET %s{ca:%s}:cert:%s plan_at", pki_redis_ns(r),
                       pki_ca_name(ca), hex);
    ok(rep != NULL && rep->type == REDIS_REPLY_STRING
       && strtoll(rep->str, NULL, 10) == (long long) at,
       "  the plan is unchanged");
    freeReplyObject(rep);

    /* carried out: dated at the planned time too, listed once */
    pki_result_init(&res);
    pki_record_revgen(r, pki_ca_name(ca), &gen, &res);
    pki_result_init(&res);
    st = pki_record_revoke_due(r, pki_ca_name(ca), time(NULL), 0, &done,
                               &res);
    ok(st == PKI_OK && done == 1, "  carried out (%u)", done);

    /* which changes no answer: no new revocation generation, so the CRL
     * that lists the plan is not rebuilt (with many plans due at once,
     * a rebuild after each batch read all the plans still due) */
    pki_result_init(&res);
    pki_record_revgen(r, pki_ca_name(ca), &gen2, &res);
    ok(gen2 == gen, "  the revocation generation is unchanged (%lld %lld)",
       gen, gen2);
    pki_result_init(&res);
    st = pki_crl_current(ca, r, 3600, a.number, &b, &res);
    ok(st == PKI_OK && b.number == a.number && b.der == NULL,
       "  the CRL that lists it stays current (%lld %lld)", a.number,
       b.number);
    free(b.der);

    pki_result_init(&res);
    der = NULL;
    st = pki_crl_build(ca, r, 3600, &der, &len, &res);
    crl = der ? parse_crl(der, len) : NULL;
    rev = crl ? find_revoked(crl, x) : NULL;
    ok(st == PKI_OK && rev != NULL && count_revoked(crl, x) == 1
       && rev_reason(rev) == 4
       && asn1_time(X509_REVOKED_get0_revocationDate(rev)) == at,
       "  then listed once, with the same date and reason");
    X509_CRL_free(crl);
    free(der);
}


/* The record field of x (malloc'd, NULL when none). */
static char *
rec_field(pki_redis_t *r, redisContext *rc, pki_ca_t *ca, const char *hex,
    const char *field)
{
    char        *v;
    redisReply  *rep;

    rep = redisCommand(rc, "HGET %s{ca:%s}:cert:%s %s", pki_redis_ns(r),
                       pki_ca_name(ca), hex, field);
    v = rep != NULL && rep->type == REDIS_REPLY_STRING ? strdup(rep->str)
                                                        : NULL;
    freeReplyObject(rep);

    return v;
}


/* x's time in the CA's plan (the sorted set), -1 when not in it. */
static long long
plan_score(pki_redis_t *r, redisContext *rc, pki_ca_t *ca, const char *hex)
{
    long long    v;
    redisReply  *rep;

    rep = redisCommand(rc, "ZSCORE %s{ca:%s}:revplan %s", pki_redis_ns(r),
                       pki_ca_name(ca), hex);
    v = rep != NULL && rep->type == REDIS_REPLY_STRING
        ? strtoll(rep->str, NULL, 10) : -1;
    freeReplyObject(rep);

    return v;
}


/* x's reason and date in a CRL built now; -1 when not listed. */
static int
crl_lists(pki_ca_t *ca, pki_redis_t *r, X509 *x, time_t *at)
{
    int             reason;
    size_t          len;
    X509_CRL       *crl;
    pki_result_t    res;
    X509_REVOKED   *rev;
    unsigned char  *der;

    pki_result_init(&res);
    der = NULL;
    (void) pki_crl_build(ca, r, 3600, &der, &len, &res);
    crl = der ? parse_crl(der, len) : NULL;
    rev = crl ? find_revoked(crl, x) : NULL;
    reason = rev != NULL && count_revoked(crl, x) == 1 ? rev_reason(rev) : -1;
    *at = rev != NULL ? asn1_time(X509_REVOKED_get0_revocationDate(rev)) : 0;
    X509_CRL_free(crl);
    free(der);

    return reason;
}


/* A hold is temporary: it must not lose a planned revocation.  x is held
 * and released before its plan's time, y held over it and released after
 * it, z held and then revoked for good. */
static void
test_planned_hold(pki_ca_t *ca, pki_redis_t *r, redisContext *rc, X509 *x,
    X509 *y, X509 *z)
{
    int            i;
    char           hx[41], hy[41], hz[41], *v;
    time_t         at, when;
    unsigned       done;
    long long      gen, gen2;
    pki_record_t   rec;
    pki_status_t   st;
    pki_result_t   res;

    pki_serial_to_hex(X509_get0_serialNumber(x), hx);
    pki_serial_to_hex(X509_get0_serialNumber(y), hy);
    pki_serial_to_hex(X509_get0_serialNumber(z), hz);

    at = time(NULL) + 2;

    for (i = 0; i < 3; i++) {
        pki_result_init(&res);
        st = pki_record_plan_revoke(r, pki_ca_name(ca),
                                    i == 0 ? hx : i == 1 ? hy : hz, 5, at,
                                    "test", NULL, &res);
        pki_result_init(&res);
        if (st == PKI_OK) {
            st = pki_record_revoke(r, pki_ca_name(ca),
                                   i == 0 ? hx : i == 1 ? hy : hz, 6,
                                   time(NULL), 0, NULL, &res);
        }
        if (!is_status(st, PKI_OK, "planned at now + 2, then held")) {
            diag("%s %s", res.detail, res.log);
            return;
        }
    }

    v = rec_field(r, rc, ca, hx, "plan_at");
    ok(v != NULL && strtoll(v, NULL, 10) == (long long) at
       && plan_score(r, rc, ca, hx) == (long long) at,
       "  the hold keeps the plan: in the record and the CA's plan");
    free(v);
    ok(crl_lists(ca, r, x, &when) == 6, "  the CRL lists it on hold");

    pki_result_init(&res);
    st = pki_record_revoke(r, pki_ca_name(ca), hz, 1, time(NULL), 0, NULL,
                           &res);
    v = rec_field(r, rc, ca, hz, "plan_at");
    ok(st == PKI_OK && v == NULL && plan_score(r, rc, ca, hz) == -1,
       "  a hold turned into keyCompromise drops the plan");
    free(v);

    /* released before its time: good with its plan */
    pki_result_init(&res);
    st = pki_record_revoke(r, pki_ca_name(ca), hx, 8, time(NULL), 0, &rec,
                           &res);
    ok(st == PKI_OK && rec.status == PKI_CERT_GOOD
       && rec.revoke_planned == at && rec.planned_reason == 5
       && plan_score(r, rc, ca, hx) == (long long) at,
       "  released before its plan's time: good, the plan kept (%s)",
       pki_status_name(st));
    pki_record_clear(&rec);
    ok(crl_lists(ca, r, x, &when) == -1, "  the CRL does not list it");

    while (time(NULL) < at) {
        usleep(50000);
    }

    ok(crl_lists(ca, r, x, &when) == 5 && when == at,
       "  due: the CRL lists the released one from its plan, "
       "cessationOfOperation at the planned time");
    ok(crl_lists(ca, r, y, &when) == 6, "  due: the held one still on hold");

    /* worker 0 passes while y is held: x carried out, y's plan kept in
     * its record (off the CA's plan, which its release answers for) */
    pki_result_init(&res);
    st = pki_record_revoke_due(r, pki_ca_name(ca), time(NULL), 0, &done,
                               &res);
    ok(st == PKI_OK && done == 1, "  worker 0 carries out the released one "
       "(%u)", done);
    v = rec_field(r, rc, ca, hy, "plan_at");
    ok(v != NULL && strtoll(v, NULL, 10) == (long long) at,
       "  the held one keeps its plan in its record");
    free(v);

    /* released after its time: revoked as planned, not good */
    pki_result_init(&res);
    pki_record_revgen(r, pki_ca_name(ca), &gen, &res);
    pki_result_init(&res);
    st = pki_record_revoke(r, pki_ca_name(ca), hy, 8, time(NULL), 0, &rec,
                           &res);
    ok(st == PKI_OK && rec.status == PKI_CERT_REVOKED && rec.reason == 5
       && rec.revoked_at == at && rec.invalidity_date == 0
       && rec.revoke_planned == 0,
       "  released after its plan's time: revoked, cessationOfOperation, "
       "at the planned time (%s %d)", pki_status_name(st), rec.reason);
    pki_record_clear(&rec);
    pki_result_init(&res);
    pki_record_revgen(r, pki_ca_name(ca), &gen2, &res);
    ok(gen2 > gen, "  the revocation generation moves (%lld %lld)", gen,
       gen2);
    v = rec_field(r, rc, ca, hy, "plan_at");
    ok(v == NULL && plan_score(r, rc, ca, hy) == -1, "  the plan is done");
    free(v);
    ok(crl_lists(ca, r, y, &when) == 5 && when == at,
       "  the CRL lists it, cessationOfOperation at the planned time");

    pki_result_init(&res);
    st = pki_record_revoke(r, pki_ca_name(ca), hy, 8, time(NULL), 0, NULL,
                           &res);
    is_status(st, PKI_CONFLICT, "  released again: not on hold");
}


/* The local copy: written whole, read back only when it is this CA's,
 * whole and not expired. */
static void
test_file(pki_ca_t *ca, pki_ca_t *other)
{
    FILE            *f;
    char             path[128];
    size_t           len;
    time_t           now;
    pki_result_t     res;
    pki_status_t     st;
    unsigned char   *der;
    pki_crl_info_t   a, b;

    now = time(NULL);
    der = NULL;
    pki_result_init(&res);
    st = pki_crl_build_list(ca, NULL, 0, 4711, now, 3600, &der, &len, &res);
    if (!ok(st == PKI_OK, "local copy: a CRL to keep")) {
        return;
    }

    memset(&a, 0, sizeof(a));
    a.der = der;
    a.len = len;

    pki_result_init(&res);
    st = pki_crl_file_load(ca, dir, &b, &res);
    ok(st == PKI_NOT_FOUND && b.der == NULL, "  none yet: not found");

    pki_result_init(&res);
    st = pki_crl_file_save(ca, dir, &a, &res);
    ok(st == PKI_OK, "  saved (%s %s)", res.detail, res.log);

    pki_result_init(&res);
    st = pki_crl_file_load(ca, dir, &b, &res);
    ok(st == PKI_OK && b.len == len && memcmp(b.der, der, len) == 0
       && b.number == 4711 && b.next_update > now + 3500
       && b.this_update <= now + 1, "  read back with its number and dates");
    free(b.der);

    /* another CA's: same name on disk, here the root's file is ours */
    snprintf(path, sizeof(path), "%s/%s.crl", dir, pki_ca_name(other));
    run("cp %s/%s.crl %s", dir, pki_ca_name(ca), path);
    pki_result_init(&res);
    st = pki_crl_file_load(other, dir, &b, &res);
    ok(st == PKI_INTERNAL && b.der == NULL,
       "  another CA's CRL: refused (%s)", res.log);

    /* cut short */
    f = fopen(path, "wb");
    if (f != NULL) {
        fwrite(der, 1, len - 1, f);
        fclose(f);
    }
    snprintf(path, sizeof(path), "%s/%s.crl", dir, pki_ca_name(ca));
    run("cp %s/%s.crl %s", dir, pki_ca_name(other), path);
    pki_result_init(&res);
    st = pki_crl_file_load(ca, dir, &b, &res);
    ok(st == PKI_INTERNAL && b.der == NULL, "  cut short: refused");
    OPENSSL_free(der);

    /* expired */
    der = NULL;
    pki_result_init(&res);
    st = pki_crl_build_list(ca, NULL, 0, 4712, now - 7200, 3600, &der, &len,
                            &res);
    a.der = der;
    a.len = len;
    pki_result_init(&res);
    st = st == PKI_OK ? pki_crl_file_save(ca, dir, &a, &res) : st;
    pki_result_init(&res);
    st = st == PKI_OK ? pki_crl_file_load(ca, dir, &b, &res) : PKI_INTERNAL;
    ok(st == PKI_NOT_FOUND && b.der == NULL, "  expired: not served");
    OPENSSL_free(der);
}


static void
test_redis(pki_ca_t *ca, X509 *cacert, pki_template_t *t, const char *sock)
{
    int                 nf, hr;
    long long           prev = 0;
    char                ns[64];
    size_t              len;
    time_t              now;
    FILE               *f;
    X509               *leaf[NLEAVES], *planned;
    X509_CRL           *crl;
    EVP_PKEY           *pk;
    pki_redis_t        *r, *down;
    pki_status_t        st;
    pki_result_t        res;
    redisContext       *rc;
    X509_REVOKED       *rev;
    unsigned char      *der;

    snprintf(ns, sizeof(ns), "crltest%d:", (int) getpid());
    r = fx_redis(sock, ns, 1000, &res);
    rc = redisConnectUnix(sock);
    if (!ok(r != NULL && rc != NULL && rc->err == 0, "redis handles")) {
        return;
    }

    /* Empty: no revoked hash at all. */
    st = pki_crl_build(ca, r, 3600, &der, &len, &res);
    is_status(st, PKI_OK, "empty CRL from Redis");
    crl = der ? parse_crl(der, len) : NULL;
    if (ok(crl != NULL, "  parses")) {
        check_common(crl, cacert, "empty");
        prev = crl_number(crl);
        ok(prev >= ((long long) time(NULL) - 60) * 1000000,
           "  CRL number from the clock (got %lld)", prev);
        nf = tbs_fields(crl, &hr);
        ok(nf == 6 && !hr, "  no revokedCertificates field");
        write_der(der, len, "empty.crl");
        ok(run("openssl crl -inform DER -in %s -CAfile %s -noout 2>&1 "
               "| grep -q 'verify OK'", path("empty.crl"),
               path("ca.pem")) == 0, "  openssl crl -CAfile: verify OK");
        ok(run("openssl asn1parse -inform DER -in %s | grep 'd=2' "
               "| sed -n 6p | grep -q 'cont \\[ 0 \\]'",
               path("empty.crl")) == 0,
           "  openssl asn1parse: extensions follow nextUpdate");
        ok(run("openssl crl -inform DER -in %s -noout -text | grep -q "
               "'No Revoked Certificates'", path("empty.crl")) == 0,
           "  openssl crl -text: No Revoked Certificates");
        X509_CRL_free(crl);
    }
    free(der);

    /* Leaves: 0 keyCompromise + invalidity, 1 cessation, 2 hold,
     * 3 unspecified, 4 good. */
    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    for (int i = 0; i < NLEAVES; i++) {
        char  cn[32], file[32];

        snprintf(cn, sizeof(cn), "leaf%d", i);
        leaf[i] = issue(ca, t, r, cn, pk);
        if (!ok(leaf[i] != NULL, "issued %s", cn)) {
            EVP_PKEY_free(pk);
            return;
        }
        snprintf(file, sizeof(file), "leaf%d.pem", i);
        write_cert(leaf[i], file);
    }
    EVP_PKEY_free(pk);

    now = time(NULL);
    revoke_leaf(r, pki_ca_name(ca), leaf[0], 1, now - 10, now - 86400);
    revoke_leaf(r, pki_ca_name(ca), leaf[1], 5, now - 9, 0);
    revoke_leaf(r, pki_ca_name(ca), leaf[2], 6, now - 8, 0);
    revoke_leaf(r, pki_ca_name(ca), leaf[3], 0, now - 7, 0);

    pki_result_init(&res);
    st = pki_crl_build(ca, r, 3600, &der, &len, &res);
    if (!is_status(st, PKI_OK, "CRL with 4 revoked")) diag("%s %s", res.detail, res.log);
    crl = der ? parse_crl(der, len) : NULL;
    if (ok(crl != NULL, "  parses")) {
        check_common(crl, cacert, "revoked");
        ok(crl_number(crl) > prev, "  CRL number grows (got %lld)",
           crl_number(crl));
        prev = crl_number(crl);
        nf = tbs_fields(crl, &hr);
        ok(nf == 7 && hr, "  revokedCertificates present");
        ok(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)) == 4,
           "  4 entries");

        rev = find_revoked(crl, leaf[0]);
        ok(rev && rev_reason(rev) == 1
           && rev_invalidity(rev) == now - 86400
           && asn1_time(X509_REVOKED_get0_revocationDate(rev)) == now - 10,
           "  leaf0: keyCompromise, invalidityDate, revocationDate");
        rev = find_revoked(crl, leaf[1]);
        ok(rev && rev_reason(rev) == 5 && rev_invalidity(rev) == 0,
           "  leaf1: cessationOfOperation, no invalidityDate");
        rev = find_revoked(crl, leaf[2]);
        ok(rev && rev_reason(rev) == 6, "  leaf2: certificateHold");
        rev = find_revoked(crl, leaf[3]);
        ok(rev && rev_reason(rev) == -1,
           "  leaf3: unspecified, no reasonCode extension");
        ok(find_revoked(crl, leaf[4]) == NULL, "  leaf4 (good) absent");

        f = fopen(path("crl.pem"), "w");
        PEM_write_X509_CRL(f, crl);
        fclose(f);
        write_der(der, len, "crl.der");

        ok(run("openssl crl -inform DER -in %s -CAfile %s -noout 2>&1 "
               "| grep -q 'verify OK'", path("crl.der"),
               path("ca.pem")) == 0, "  openssl crl -CAfile: verify OK");
        ok(run("openssl crl -inform DER -in %s -CAfile %s -noout "
               ">/dev/null 2>&1", path("crl.der"), path("root.pem")) != 0,
           "  openssl crl -CAfile with the wrong CA fails");
        ok(run("openssl crl -inform DER -in %s -noout -text | grep -q "
               "'Key Compromise'", path("crl.der")) == 0,
           "  openssl crl -text shows Key Compromise");
        ok(run("openssl verify -crl_check -CAfile %s -untrusted %s "
               "-CRLfile %s %s >/dev/null 2>&1", path("root.pem"),
               path("ca.pem"), path("crl.pem"), path("leaf4.pem")) == 0,
           "  openssl verify -crl_check accepts the good leaf");
        for (int i = 0; i < 4; i++) {
            char  file[32];

            snprintf(file, sizeof(file), "leaf%d.pem", i);
            ok(run("openssl verify -crl_check -CAfile %s -untrusted %s "
                   "-CRLfile %s %s 2>&1 | grep -q 'certificate revoked'",
                   path("root.pem"), path("ca.pem"), path("crl.pem"),
                   path(file)) == 0,
               "  openssl verify -crl_check rejects revoked leaf%d", i);
        }
        X509_CRL_free(crl);
    }
    free(der);

    /* Release the hold: the entry goes, the number goes on. */
    revoke_leaf(r, pki_ca_name(ca), leaf[2], 8, now, 0);

    pki_result_init(&res);
    st = pki_crl_build(ca, r, 3600, &der, &len, &res);
    is_status(st, PKI_OK, "CRL after releasing the hold");
    crl = der ? parse_crl(der, len) : NULL;
    if (ok(crl != NULL, "  parses")) {
        ok(crl_number(crl) > prev, "  CRL number grows");
        prev = crl_number(crl);
        ok(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)) == 3,
           "  3 entries");
        ok(find_revoked(crl, leaf[2]) == NULL, "  released leaf2 absent");
        ok(find_revoked(crl, leaf[0]) != NULL, "  leaf0 still listed");
        X509_CRL_free(crl);
    }
    free(der);

    /* Garbage in the store: no CRL rather than an incomplete one. */
    freeReplyObject(redisCommand(rc, "HSET %s{ca:%s}:revoked zz %s", ns,
                                 pki_ca_name(ca), "1 1 0"));
    pki_result_init(&res);
    st = pki_crl_build(ca, r, 3600, &der, &len, &res);
    ok(st != PKI_OK && der == NULL && len == 0,
       "corrupt revoked entry: no CRL (%s)", pki_status_name(st));
    freeReplyObject(redisCommand(rc, "HDEL %s{ca:%s}:revoked zz", ns,
                                 pki_ca_name(ca)));

    /* a good serial with a value that cannot be read: still revoked,
     * listed without a reason, dated thisUpdate; the other entries kept */
    freeReplyObject(redisCommand(rc, "HSET %s{ca:%s}:revoked 0ABC %s", ns,
                                 pki_ca_name(ca), "junk"));
    pki_result_init(&res);
    st = pki_crl_build(ca, r, 3600, &der, &len, &res);
    crl = der ? parse_crl(der, len) : NULL;
    {
        int            n = -1, found = 0, reason = -2;
        X509_REVOKED  *rv;

        if (crl != NULL) {
            n = sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl));
            for (int i = 0; i < n; i++) {
                rv = sk_X509_REVOKED_value(X509_CRL_get_REVOKED(crl), i);
                if (ASN1_INTEGER_get(X509_REVOKED_get0_serialNumber(rv))
                    == 0xABC)
                {
                    ASN1_ENUMERATED  *e;

                    found = 1;
                    e = X509_REVOKED_get_ext_d2i(rv, NID_crl_reason, NULL,
                                                 NULL);
                    reason = e != NULL ? (int) ASN1_ENUMERATED_get(e) : -1;
                    ASN1_ENUMERATED_free(e);
                    ok(ASN1_TIME_compare(X509_REVOKED_get0_revocationDate(rv),
                                         X509_CRL_get0_lastUpdate(crl))
                       == 0, "  dated thisUpdate");
                }
            }
        }
        ok(st == PKI_OK && found && reason == -1 && n == 4,
           "a revoked entry whose value cannot be read: listed, no reason, "
           "beside the 3 others (%s, %d entries) [%s]",
           pki_status_name(st), n, res.log);
    }
    X509_CRL_free(crl);
    free(der);
    freeReplyObject(redisCommand(rc, "HDEL %s{ca:%s}:revoked 0ABC", ns,
                                 pki_ca_name(ca)));

    pki_result_init(&res);
    st = pki_crl_build(ca, r, 3600, &der, &len, &res);
    is_status(st, PKI_OK, "CRL after the garbage is gone");
    crl = der ? parse_crl(der, len) : NULL;
    ok(crl != NULL && crl_number(crl) > prev, "  CRL number still grows");
    prev = crl ? crl_number(crl) : prev;
    X509_CRL_free(crl);
    free(der);

    /* The store restored from an old backup: its counter goes back, the
     * numbers do not (they follow Redis's clock). */
    freeReplyObject(redisCommand(rc, "SET %s{ca:%s}:crlnumber 2", ns,
                                 pki_ca_name(ca)));
    pki_result_init(&res);
    st = pki_crl_build(ca, r, 3600, &der, &len, &res);
    crl = der ? parse_crl(der, len) : NULL;
    ok(st == PKI_OK && crl != NULL && crl_number(crl) > prev,
       "after a restore of the counter: the number still grows (%lld > "
       "%lld)", crl ? crl_number(crl) : -1, prev);
    X509_CRL_free(crl);
    free(der);

    /* A counter ahead of the clock goes on by one. */
    freeReplyObject(redisCommand(rc, "SET %s{ca:%s}:crlnumber "
                                 "4000000000000000", ns, pki_ca_name(ca)));
    pki_result_init(&res);
    st = pki_crl_build(ca, r, 3600, &der, &len, &res);
    crl = der ? parse_crl(der, len) : NULL;
    ok(st == PKI_OK && crl != NULL && crl_number(crl) == 4000000000000001LL,
       "a counter ahead of the clock: + 1");
    X509_CRL_free(crl);
    free(der);

    /* A counter that is not a number: no CRL. */
    freeReplyObject(redisCommand(rc, "SET %s{ca:%s}:crlnumber x", ns,
                                 pki_ca_name(ca)));
    pki_result_init(&res);
    st = pki_crl_build(ca, r, 3600, &der, &len, &res);
    ok(st != PKI_OK && der == NULL, "a counter that is not a number: no CRL "
       "(%s)", pki_status_name(st));
    freeReplyObject(redisCommand(rc, "SET %s{ca:%s}:crlnumber %lld", ns,
                                 pki_ca_name(ca), prev + 1000));

    test_current(ca, r, rc, ns, leaf[4]);
    test_this_update(ca, r, rc, ns);

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    planned = issue(ca, t, r, "planned", pk);
    EVP_PKEY_free(pk);
    if (ok(planned != NULL, "issued one to plan a revocation of")) {
        test_planned(ca, r, rc, planned);
        X509_free(planned);
    }

    {
        X509  *h[3];

        for (int i = 0; i < 3; i++) {
            pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
            h[i] = issue(ca, t, r, "held", pk);
            EVP_PKEY_free(pk);
        }
        if (ok(h[0] != NULL && h[1] != NULL && h[2] != NULL,
               "issued three to plan, hold and release"))
        {
            test_planned_hold(ca, r, rc, h[0], h[1], h[2]);
        }
        for (int i = 0; i < 3; i++) {
            X509_free(h[i]);
        }
    }

    /* Redis down. */
    down = fx_redis("/nonexistent/redis.sock", ns, 200, &res);
    if (down) {
        st = pki_crl_build(ca, down, 3600, &der, &len, &res);
        is_status(st, PKI_UNAVAILABLE, "Redis down: unavailable");
        ok(der == NULL && len == 0, "  no output");
        pki_redis_free(down);
    }

    st = pki_crl_build(ca, NULL, 3600, &der, &len, &res);
    is_status(st, PKI_INTERNAL, "no Redis handle refused");

    for (int i = 0; i < NLEAVES; i++) {
        X509_free(leaf[i]);
    }
    freeReplyObject(redisCommand(rc, "EVAL %s 0 %s*", "for _, k in ipairs("
                                 "redis.call('KEYS', ARGV[1])) do "
                                 "redis.call('DEL', k) end", ns));
    redisFree(rc);
    pki_redis_free(r);
}


/* A CA certified by rootca (template tsub) for the subject CN cn and the
 * key pk (signing with key), its certificate written to file; *cert (may
 * be NULL) receives the certificate. */
static pki_ca_t *
sub_ca(pki_ca_t *rootca, pki_template_t *tsub, pki_template_t *t,
    const char *cn, EVP_PKEY *pk, pki_key_t *key, const char *file,
    const char *name, X509 **cert)
{
    X509           *x;
    pki_ca_t       *ca;
    pki_result_t    res;
    pki_request_t   req;

    memset(&req, 0, sizeof(req));
    req.subject = cn_name(cn);
    req.pubkey = pk;
    x = NULL;
    pki_result_init(&res);
    (void) pki_issue(rootca, tsub, NULL, &req, NULL, &x, &res);
    X509_NAME_free(req.subject);
    write_cert(x, file);
    ca = make_ca(name, file, key, t);

    if (cert != NULL) {
        *cert = x;
    } else {
        X509_free(x);
    }

    return ca;
}


/* A CA re-certified with its subject and key, old and new certificate both
 * declared (pki_ca_link_same): one CRL issuer to relying parties, so the
 * CRL of each lists the revocations of both, and a revocation or a plan of
 * either makes both CRLs new.  Another key or another subject is not
 * linked. */
static void
test_same(pki_ca_t *ca, pki_ca_t *rootca, pki_template_t *tsub,
    pki_template_t *t, pki_key_t *subkey, EVP_PKEY *subpk, const char *sock)
{
    int              linked, i;
    char             ns[64], hex[41];
    time_t           at, plan;
    X509            *sub2, *x[4];
    EVP_PKEY        *pk, *otherpk;
    pki_ca_t        *ca2, *ca3, *ca4, *ca5;
    pki_key_t       *otherkey;
    pki_redis_t     *r;
    pki_status_t     st;
    pki_result_t     res;
    redisContext    *rc;
    pki_crl_info_t   a, b;

    snprintf(ns, sizeof(ns), "crlsame%d:", (int) getpid());
    pki_result_init(&res);
    r = fx_redis(sock, ns, 1000, &res);
    rc = redisConnectUnix(sock);
    if (!ok(r != NULL && rc != NULL && rc->err == 0, "same: redis handles")) {
        return;
    }

    /* re-certified: the same subject and key */
    sub2 = NULL;
    ca2 = sub_ca(rootca, tsub, t, "CRL Test Issuing CA", subpk, subkey,
                 "ca2.pem", "crlca2", &sub2);

    /* the same subject, another key; the same key, another subject */
    otherpk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    otherkey = fx_key_file(dir, "other.key", otherpk);
    ca3 = sub_ca(rootca, tsub, t, "CRL Test Issuing CA", otherpk, otherkey,
                 "ca3.pem", "crlca3", NULL);
    ca4 = sub_ca(rootca, tsub, t, "CRL Test Issuing CA 2", subpk, subkey,
                 "ca4.pem", "crlca4", NULL);

    pki_result_init(&res);
    st = pki_ca_link_same(ca, ca2, &linked, &res);
    ok(sub2 != NULL && st == PKI_OK && linked == 1
       && pki_ca_same_count(ca) == 1 && pki_ca_same_count(ca2) == 1
       && strcmp(pki_ca_same_name(ca, 0), "crlca2") == 0
       && strcmp(pki_ca_same_name(ca2, 0), "crlca") == 0,
       "the CA re-certified with its subject and key is linked to it");
    st = pki_ca_link_same(ca2, ca, &linked, &res);
    ok(st == PKI_OK && linked == 1 && pki_ca_same_count(ca) == 1,
       "  linking twice adds nothing");
    st = pki_ca_link_same(ca, ca3, &linked, &res);
    ok(st == PKI_OK && linked == 0 && pki_ca_same_count(ca3) == 0,
       "another key under the subject is not linked");
    st = pki_ca_link_same(ca, ca4, &linked, &res);
    ok(st == PKI_OK && linked == 0 && pki_ca_same_count(ca4) == 0,
       "the key under another subject is not linked");

    for (i = 0; i < 4; i++) {
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        x[i] = issue(i % 2 ? ca2 : ca, t, r, "same", pk);
        EVP_PKEY_free(pk);
    }

    if (!ok(x[0] && x[1] && x[2] && x[3], "one leaf each of the two, twice")) {
        goto done;
    }

    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    pki_result_init(&res);
    st = pki_crl_current(ca2, r, 3600, 0, &a, &res);
    ok(st == PKI_OK && a.number > 0, "the new certificate's CRL");

    /* a revocation of each: both CRLs list both */
    revoke_leaf(r, "crlca", x[0], 1, time(NULL) - 10, 0);
    revoke_leaf(r, "crlca2", x[1], 4, time(NULL) - 10, 0);
    ok(crl_lists(ca, r, x[0], &at) == 1 && crl_lists(ca, r, x[1], &at) == 4,
       "the old certificate's CRL lists the revocations of both");
    ok(crl_lists(ca2, r, x[0], &at) == 1 && crl_lists(ca2, r, x[1], &at) == 4,
       "the new certificate's CRL lists the revocations of both");
    ok(crl_lists(ca3, r, x[0], &at) == -1 && crl_lists(ca4, r, x[1], &at)
       == -1, "the others list neither");

    /* the stored CRL of the new one is stale after the old one's
     * revocation */
    pki_result_init(&res);
    st = pki_crl_current(ca2, r, 3600, a.number, &b, &res);
    ok(st == PKI_OK && b.number > a.number && b.der != NULL,
       "a revocation by the old one makes the new one's CRL new (%lld, "
       "%lld)", a.number, b.number);
    free(a.der);
    a = b;
    memset(&b, 0, sizeof(b));
    pki_result_init(&res);
    st = pki_crl_current(ca2, r, 3600, a.number, &b, &res);
    ok(st == PKI_OK && b.number == a.number && b.der == NULL,
       "  then stays until the next change");

    /* a plan of the old one cuts the new one's nextUpdate to it */
    plan = time(NULL) + 600;
    pki_serial_to_hex(X509_get0_serialNumber(x[2]), hex);
    pki_result_init(&res);
    st = pki_record_plan_revoke(r, "crlca", hex, 5, plan, "test", NULL,
                                &res);
    is_status(st, PKI_OK, "a plan of the old one's leaf");
    free(b.der);
    memset(&b, 0, sizeof(b));
    pki_result_init(&res);
    st = pki_crl_current(ca2, r, 3600, a.number, &b, &res);
    ok(st == PKI_OK && b.number > a.number && b.next_update == plan,
       "  the new one's CRL is rebuilt, its nextUpdate the plan (%lld, "
       "%lld)", (long long) b.next_update, (long long) plan);
    free(a.der);
    a = b;
    memset(&b, 0, sizeof(b));
    pki_result_init(&res);
    st = pki_crl_current(ca2, r, 3600, a.number, &b, &res);
    ok(st == PKI_OK && b.number == a.number,
       "  and is kept until the plan is due");

    /* the old certificate dropped from the configuration (a reload): the
     * new one alone again, its CRL is rebuilt, stored and then follows its
     * own revocations (the stored one was built from both) */
    free(a.der);
    free(b.der);
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    ca5 = make_ca("crlca2", "ca2.pem", subkey, t);
    pki_result_init(&res);
    st = pki_crl_current(ca5, r, 3600, 0, &a, &res);
    ok(st == PKI_OK && a.number > 0 && a.group == 0
       && strstr(res.log, "not stored") == NULL,
       "alone again: a CRL of its own is built and stored (%s)", res.log);
    revoke_leaf(r, "crlca2", x[3], 1, time(NULL) - 5, 0);
    pki_result_init(&res);
    st = pki_crl_current(ca5, r, 3600, a.number, &b, &res);
    ok(st == PKI_OK && b.number > a.number && b.der != NULL
       && strstr(res.log, "not stored") == NULL,
       "  its next revocation makes a new one, stored (%s)", res.log);
    ok(crl_lists(ca5, r, x[3], &at) == 1 && crl_lists(ca5, r, x[0], &at)
       == -1, "  which lists its own revocations only");
    free(a.der);
    free(b.der);
    pki_ca_free(ca5);

done:

    for (i = 0; i < 4; i++) {
        X509_free(x[i]);
    }
    freeReplyObject(redisCommand(rc, "EVAL %s 0 %s*", "for _, k in ipairs("
                                 "redis.call('KEYS', ARGV[1])) do "
                                 "redis.call('DEL', k) end", ns));
    redisFree(rc);
    pki_redis_free(r);
    pki_ca_free(ca2);
    pki_ca_free(ca3);
    pki_ca_free(ca4);
    pki_key_free(otherkey);
    EVP_PKEY_free(otherpk);
    X509_free(sub2);
}

/* A CA certificate near its end: the CRL ends with it, not an hour past
 * it (no relying party trusts the signature then), and is served until
 * then rather than built again ever more often in its last quarter; an
 * expired CA's CRL keeps the lifetime asked. */
static void
test_ca_end(pki_key_t *key, pki_template_t *t, const char *sock)
{
    char             ns2[64];
    size_t           len;
    time_t           end, now, nu;
    X509_CRL        *crl;
    pki_ca_t        *ca;
    pki_redis_t     *r;
    pki_status_t     st;
    pki_result_t     res;
    unsigned char   *der;
    pki_crl_info_t   a, b;

    ca = make_ca("crlend", "ca.pem", key, t);
    end = asn1_time(X509_get0_notAfter(pki_ca_cert(ca)));

    for (now = end - 7200; now <= end + 7200; now += 6600) {
        der = NULL;
        pki_result_init(&res);
        st = pki_crl_build_list(ca, NULL, 0, 9, now, 3600, &der, &len, &res);
        crl = st == PKI_OK ? parse_crl(der, len) : NULL;
        nu = crl ? asn1_time(X509_CRL_get0_nextUpdate(crl)) : 0;

        if (now >= end) {
            /* no relying party validates a CRL of an expired CA: none is
             * signed, as no certificate is (pki_issue) */
            ok(st == PKI_INTERNAL && der == NULL
               && strstr(res.detail, "has expired") != NULL,
               "CA ended %lld s ago: no CRL signed (%s)",
               (long long) (now - end), res.detail);

        } else {
            ok(nu == (now + 3600 > end ? end : now + 3600),
               "CA ending in %+lld s: nextUpdate %+lld s from thisUpdate",
               (long long) (end - now), (long long) (nu - now));
        }

        X509_CRL_free(crl);
        free(der);
    }

    snprintf(ns2, sizeof(ns2), "crlend%d:", (int) getpid());
    r = fx_redis(sock, ns2, 1000, &res);
    if (!ok(r != NULL, "CA end: a store")) {
        pki_ca_free(ca);
        return;
    }

    clock_ahead = (long) (end - 600 - time(NULL));
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    pki_result_init(&res);
    st = pki_crl_current(ca, r, 3600, 0, &a, &res);
    ok(st == PKI_OK && a.next_update == end,
       "  the current CRL 10 min before the CA's end ends with it "
       "(%+lld s)", (long long) (a.next_update - end));
    clock_ahead += 540;
    st = pki_crl_current(ca, r, 3600, a.number, &b, &res);
    ok(st == PKI_OK && b.number == a.number && b.der == NULL,
       "  a minute before it, in its last quarter: unchanged (%lld, %lld)",
       a.number, b.number);
    free(b.der);

    /* past the CA's end: its last CRL has expired with it, and no new
     * one is signed (the glue answers 503) */
    clock_ahead += 120;
    memset(&b, 0, sizeof(b));
    pki_result_init(&res);
    st = pki_crl_current(ca, r, 3600, a.number, &b, &res);
    ok(st == PKI_INTERNAL && b.der == NULL && b.number == 0
       && strstr(res.detail, "has expired") != NULL,
       "  a minute after it: no CRL (%s, number %lld)", res.detail,
       b.number);
    clock_ahead = 0;

    free(a.der);
    free(b.der);
    pki_redis_free(r);
    pki_ca_free(ca);
}



/* A CA certificate (pathlen unlimited) for cn and pub under issuer (key
 * ikey), valid from now + nb to now + na. */
static X509 *
chain_cert(const char *cn, EVP_PKEY *pub, X509 *issuer, EVP_PKEY *ikey,
    long nb, long na)
{
    cx_ext_t     c = { 0 };
    static long  serial = 7000;

    c.serial = serial++;
    c.ca = 1;
    c.pathlen = -1;
    c.ku = "critical,keyCertSign,cRLSign";

    return cx_cert(cn, pub, issuer, ikey, nb, na, &c);
}


/* The CA "low" under an intermediate M (under the root) ending in a day,
 * itself valid for 100: its CRLs end with M, and past M's end none is
 * signed, as past the CA certificate's own (test_ca_end).  Before: a CRL
 * of the full hour past M's end, and CRLs signed after it, which no
 * relying party validates (RFC 5280 6.3.3: the CRL issuer's path). */
static void
test_chain_end(X509 *root, EVP_PKEY *rootpk, pki_template_t *t)
{
    FILE            *f;
    char             path[128];
    size_t           len;
    time_t           mend, now, nu;
    X509            *m, *low;
    X509_CRL        *crl;
    EVP_PKEY        *mk, *lk;
    pki_ca_t        *ca;
    pki_key_t       *key;
    const char      *argv[1];
    pki_status_t     st;
    pki_result_t     res;
    unsigned char   *der;

    mk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    lk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    m = chain_cert("CRL Mid", mk, root, rootpk, -3600, 86400L);
    low = chain_cert("CRL Low", lk, m, mk, -3600, 86400L * 100);
    key = fx_key_file(dir, "low.key", lk);
    write_cert(low, "low.pem");
    mend = asn1_time(X509_get0_notAfter(m));

    snprintf(path, sizeof(path), "%s/mid-root.pem", dir);
    f = fopen(path, "w");
    PEM_write_X509(f, m);
    PEM_write_X509(f, root);
    fclose(f);

    pki_result_init(&res);
    ca = pki_ca_new("crllow");
    snprintf(path, sizeof(path), "%s/low.pem", dir);
    argv[0] = path;
    pki_ca_set(ca, "certificate", 1, argv, &res);
    snprintf(path, sizeof(path), "%s/mid-root.pem", dir);
    pki_ca_set(ca, "chain", 1, argv, &res);
    pki_ca_set_key(ca, key, &res);
    pki_ca_add_template(ca, t, &res);

    if (ok(pki_ca_finish(ca, &res) == PKI_OK, "CA low under M: %s",
           res.detail))
    {
        for (now = mend - 600; now <= mend + 60; now += 660) {
            der = NULL;
            pki_result_init(&res);
            st = pki_crl_build_list(ca, NULL, 0, 9, now, 3600, &der, &len,
                                    &res);
            crl = st == PKI_OK ? parse_crl(der, len) : NULL;
            nu = crl ? asn1_time(X509_CRL_get0_nextUpdate(crl)) : 0;

            if (now < mend) {
                ok(nu == mend, "  10 min before M ends: nextUpdate M's "
                   "end (%+lld s; before: an hour on)",
                   (long long) (nu - mend));

            } else {
                ok(st == PKI_INTERNAL && der == NULL
                   && strstr(res.detail, "certificate 1 of the CA chain")
                      != NULL,
                   "  a minute past M's end: no CRL signed (before: "
                   "signed): %s", res.detail);
            }

            X509_CRL_free(crl);
            free(der);
        }
    }

    pki_ca_free(ca);
    pki_key_free(key);
    X509_free(m);
    X509_free(low);
    EVP_PKEY_free(mk);
    EVP_PKEY_free(lk);
}


/* The lock's SET taken by Redis, its answer lost with the connection:
 * hiredis sends it again on a new one, which Redis refuses (the key is
 * there, this caller's).  The caller holds the lock: it is told so. */
static void
test_lock_lost_reply(const char *sock)
{
    int                won;
    proxy_t            px;
    pki_redis_t       *pr;
    pki_status_t       st;
    pki_result_t       res;
    pki_redis_conf_t   rc;

    if (!ok(proxy_start(&px, sock, dir, "px.sock"), "lock: a proxy")) {
        return;
    }

    memset(&rc, 0, sizeof(rc));
    rc.unix_path = px.path;
    rc.ns = "crl-px:";
    rc.timeout_ms = 500;
    pki_result_init(&res);
    pr = pki_redis_new(&rc, &res);
    if (!ok(pr != NULL && pki_redis_ping(pr, &res) == PKI_OK,
            "lock: a store through it"))
    {
        pki_redis_free(pr);
        return;
    }

    proxy_arm(&px, "crl_lock", PX_DROP, 0);
    won = -1;
    st = pki_crl_lock(pr, "pxca", "mine", 10000, &won, &res);
    ok(st == PKI_OK && won == 1 && px.fired, "lock: its answer lost, the "
       "SET sent again and refused: the caller holds it (st %d won %d)",
       st, won);
    proxy_arm(&px, "", 0, 0);

    st = pki_crl_lock(pr, "pxca", "another", 10000, &won, &res);
    ok(st == PKI_OK && won == 0, "lock: another caller does not get it");
    (void) pki_crl_unlock(pr, "pxca", "mine", &res);
    st = pki_crl_lock(pr, "pxca", "another", 10000, &won, &res);
    ok(st == PKI_OK && won == 1, "lock: released, then taken by another");
    (void) pki_crl_unlock(pr, "pxca", "another", &res);

    pki_redis_free(pr);
}

#define SLOW_TTL_MS    500     /* crl_lock's TTL in the slow builds */
#define SLOW_REPLY_MS  40      /* each Redis answer that late */
#define SLOW_ENTRIES   8000    /* HSCAN pages enough for over 1 s */


static double
mono_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}


/* Revoked entries 5E0000000001.. of ca, pipelined, and a revgen moved. */
static void
slow_fill(redisContext *rc, const char *ns, const char *ca, int n)
{
    int    i;
    void  *reply;

    for (i = 1; i <= n; i++) {
        redisAppendCommand(rc, "HSET %s{ca:%s}:revoked 5E%010X %s", ns,
                           ca, i, "1 1700000000 0");
    }

    for (i = 1; i <= n; i++) {
        if (redisGetReply(rc, &reply) == REDIS_OK) {
            freeReplyObject(reply);
        }
    }

    freeReplyObject(redisCommand(rc, "INCR %s{ca:%s}:revgen", ns, ca));
}


static int
key_exists(redisContext *rc, const char *ns, const char *ca,
    const char *what)
{
    int          n;
    redisReply  *reply;

    reply = redisCommand(rc, "EXISTS %s{ca:%s}:%s", ns, ca, what);
    n = reply != NULL && reply->type == REDIS_REPLY_INTEGER
        ? (int) reply->integer : -1;
    freeReplyObject(reply);

    return n;
}


typedef struct {
    proxy_t     *px;
    const char  *sock;
    const char  *key;
    int          done;
} thief_t;


/* Once the build's first HSCAN went out (and a few pages came back), the
 * lock is set to another token, as by a builder that took it after it
 * expired: on a connection of its own, past the proxy's slowdown. */
static void *
thief(void *arg)
{
    int            i, fired;
    thief_t       *t = arg;
    redisContext  *c;

    for (i = 0; i < 500; i++) {
        pthread_mutex_lock(&t->px->lock);
        fired = t->px->fired;
        pthread_mutex_unlock(&t->px->lock);

        if (fired) {
            break;
        }
        usleep(10000);
    }

    usleep(300000);

    c = redisConnectUnix(t->sock);
    if (c != NULL && c->err == 0) {
        freeReplyObject(redisCommand(c, "SET %s thief PX 10000", t->key));
        t->done = 1;
    }
    redisFree(c);

    return NULL;
}


/* A build that outlives crl_lock's TTL (a large CA: 2 million entries
 * take some 30 s against a 10 s lock; here a short TTL and a Redis that
 * answers late) keeps its lock and stores its CRL; one whose lock another
 * builder takes meanwhile stops at its next renewal, stores nothing and
 * leaves the other's lock alone. */
static void
test_slow_build(pki_key_t *key, pki_template_t *t, const char *sock)
{
    int                n;
    char               ns[64], lock[160];
    long long          number;
    double             t0, took;
    thief_t            th;
    proxy_t            px;
    X509_CRL          *crl;
    pki_ca_t          *ca, *ca2;
    pthread_t          tid;
    redisReply        *reply;
    pki_redis_t       *pr;
    pki_status_t       st;
    pki_result_t       res;
    redisContext      *rc;
    pki_crl_info_t     b;
    pki_redis_conf_t   conf;

    if (!ok(proxy_start(&px, sock, dir, "pxslow.sock"), "slow: a proxy")) {
        return;
    }

    snprintf(ns, sizeof(ns), "crlslow%d:", (int) getpid());
    memset(&conf, 0, sizeof(conf));
    conf.unix_path = px.path;
    conf.ns = ns;
    conf.timeout_ms = 3000;
    pki_result_init(&res);
    pr = pki_redis_new(&conf, &res);
    rc = redisConnectUnix(sock);
    if (!ok(pr != NULL && pki_redis_ping(pr, &res) == PKI_OK && rc != NULL
            && rc->err == 0, "slow: a store through it"))
    {
        pki_redis_free(pr);
        redisFree(rc);
        return;
    }

    ca = make_ca("crlslow", "ca.pem", key, t);
    ca2 = make_ca("crlsteal", "ca.pem", key, t);
    slow_fill(rc, ns, "crlslow", SLOW_ENTRIES);
    slow_fill(rc, ns, "crlsteal", SLOW_ENTRIES);

    pki_crl_set_lock_ttl(SLOW_TTL_MS);

    /* every answer late from the first HSCAN on */
    proxy_arm(&px, "HSCAN", PX_SLOW, SLOW_REPLY_MS);
    memset(&b, 0, sizeof(b));
    pki_result_init(&res);
    t0 = mono_now();
    st = pki_crl_current(ca, pr, 3600, 0, &b, &res);
    took = mono_now() - t0;
    proxy_arm(&px, "", 0, 0);

    crl = st == PKI_OK && b.der != NULL ? parse_crl(b.der, b.len) : NULL;
    n = crl != NULL ? sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)) : -1;
    ok(took * 1000 > 2 * SLOW_TTL_MS, "slow: the build took %.2f s, over "
       "twice the lock's %d ms", took, SLOW_TTL_MS);
    if (!ok(st == PKI_OK && b.number > 0 && n == SLOW_ENTRIES
            && !b.rebuild_failed, "slow: its CRL is the answer (st %d, "
            "number %lld, %d entries)", st, b.number, n))
    {
        diag("%s %s", res.detail, res.log);
    }
    ok(key_exists(rc, ns, "crlslow", "crl_meta") == 1,
       "slow: stored (crl_meta)");
    ok(key_exists(rc, ns, "crlslow", "crl_lock") == 0,
       "slow: its lock released");
    X509_CRL_free(crl);
    free(b.der);

    /* and served from the store: no rebuild, the same number, signed by
     * the CA */
    pki_result_init(&res);
    number = b.number;
    st = pki_crl_current(ca, pr, 3600, 0, &b, &res);
    crl = st == PKI_OK && b.der != NULL ? parse_crl(b.der, b.len) : NULL;
    ok(crl != NULL && b.number == number
       && X509_CRL_verify(crl, X509_get0_pubkey(pki_ca_cert(ca))) == 1,
       "slow: then served as stored (%lld)", b.number);
    X509_CRL_free(crl);
    free(b.der);

    /* the lock taken by another mid-build */
    snprintf(lock, sizeof(lock), "%s{ca:crlsteal}:crl_lock", ns);
    memset(&th, 0, sizeof(th));
    th.px = &px;
    th.sock = sock;
    th.key = lock;
    proxy_arm(&px, "HSCAN", PX_SLOW, SLOW_REPLY_MS);

    if (ok(pthread_create(&tid, NULL, thief, &th) == 0, "steal: a thief")) {
        memset(&b, 0, sizeof(b));
        pki_result_init(&res);
        t0 = mono_now();
        st = pki_crl_current(ca2, pr, 3600, 0, &b, &res);
        took = mono_now() - t0;
        pthread_join(tid, NULL);
        proxy_arm(&px, "", 0, 0);

        ok(th.done, "steal: the lock set to another token mid-build");
        ok(st == PKI_UNAVAILABLE && b.der == NULL && b.number == 0,
           "steal: refused, nothing to serve (st %d: %s)", st, res.detail);
        ok(strstr(res.log, "CRL build stopped: it lost crl_lock") != NULL,
           "steal: stopped at its next renewal (%.2f s): %s", took,
           res.log);
        ok(key_exists(rc, ns, "crlsteal", "crl_meta") == 0,
           "steal: nothing stored");
        reply = redisCommand(rc, "GET %s", lock);
        ok(reply != NULL && reply->type == REDIS_REPLY_STRING
           && strcmp(reply->str, "thief") == 0,
           "steal: the other's lock left alone");
        freeReplyObject(reply);
        free(b.der);
    }

    pki_crl_set_lock_ttl(0);

    freeReplyObject(redisCommand(rc, "EVAL %s 0 %s*", "for _, k in ipairs("
                                 "redis.call('KEYS', ARGV[1])) do "
                                 "redis.call('DEL', k) end", ns));
    redisFree(rc);
    pki_redis_free(pr);
    pki_ca_free(ca);
    pki_ca_free(ca2);
}


int
main(void)
{
    X509            *root, *sub;
    EVP_PKEY        *rootpk, *subpk;
    pki_ca_t        *rootca, *ca;
    pki_key_t       *rootkey, *subkey;
    X509_NAME       *name;
    const char      *sock;
    pki_result_t     res;
    pki_request_t    req;
    pki_template_t  *troot, *tsub, *tleaf;

    static const char *const root_lines[] = {
        "subject CN copy", "subject O copy", "basic_constraints ca:true "
        "pathlen:1", "validity 3650d", "key_types ec:P-256", NULL
    };
    static const char *const sub_lines[] = {
        "subject CN copy", "subject O copy", "basic_constraints ca:true "
        "pathlen:0", "validity 2d", NULL
    };
    static const char *const leaf_lines[] = {
        "key_types ec:P-256", "subject CN required", "subject O copy",
        "validity 1d", "extended_key_usage clientAuth", NULL
    };

    sock = getenv("PKI_TEST_REDIS_SOCK");
    if (sock == NULL || sock[0] == '\0') {
        skip_all("PKI_TEST_REDIS_SOCK not set");
    }

    pki_init();

    snprintf(dir, sizeof(dir), "/tmp/crltest.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        skip_all("mkdtemp failed");
    }

    troot = fx_template("root", root_lines);
    tsub = fx_template("sub", sub_lines);
    tleaf = fx_template("leaf", leaf_lines);

    rootpk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    subpk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    rootkey = fx_key_file(dir, "root.key", rootpk);
    subkey = fx_key_file(dir, "ca.key", subpk);

    pki_result_init(&res);
    name = cn_name("CRL Test Root");
    root = NULL;
    sub = NULL;
    if (pki_selfsign(rootkey, troot, name, &root, &res) != PKI_OK) {
        diag("root: %s %s", res.detail, res.log);
    }
    X509_NAME_free(name);
    write_cert(root, "root.pem");
    rootca = make_ca("root", "root.pem", rootkey, tsub);

    memset(&req, 0, sizeof(req));
    req.subject = cn_name("CRL Test Issuing CA");
    req.pubkey = subpk;
    if (pki_issue(rootca, tsub, NULL, &req, NULL, &sub, &res) != PKI_OK) {
        diag("issuing CA: %s %s", res.detail, res.log);
    }
    X509_NAME_free(req.subject);

    if (!ok(root != NULL && sub != NULL, "root and issuing CA")) {
        return done_testing();
    }

    write_cert(sub, "ca.pem");
    ca = make_ca("crlca", "ca.pem", subkey, tleaf);

    test_list(ca, sub);
    test_dupes(ca);
    test_record_at();
    test_file(ca, rootca);
    test_many(ca, sub);
    test_algs(tleaf);
    test_redis(ca, sub, tleaf, sock);
    test_same(ca, rootca, tsub, tleaf, subkey, subpk, sock);
    test_lock_lost_reply(sock);
    test_slow_build(subkey, tleaf, sock);
    test_ca_end(subkey, tleaf, sock);
    test_chain_end(root, rootpk, tleaf);

    pki_ca_free(ca);
    pki_ca_free(rootca);
    X509_free(root);
    X509_free(sub);
    pki_key_free(rootkey);
    pki_key_free(subkey);
    EVP_PKEY_free(rootpk);
    EVP_PKEY_free(subpk);
    pki_template_free(troot);
    pki_template_free(tsub);
    pki_template_free(tleaf);

    if (getenv("KEEP") == NULL) run("rm -rf %s", dir);

    return done_testing();
}
