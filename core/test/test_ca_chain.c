/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The CA certificate's issuer in the "chain" file: a root re-issued with
 * its key for a longer life leaves two issuers of the CA certificate, the
 * old one expired; the file may hold them in either order.
 * Above the issuer, the whole path is judged at load time too: a
 * certificate there expired or not valid yet is refused, named.
 *
 * The end of what a CA signs (pki_ca_end, pki_ca_live): the earliest
 * notAfter along its path through the chain file, its own copy of a
 * self-signed root not counted; pki_issue refuses past it and caps
 * notAfter at it.
 *
 * The trust anchor of what /cacerts and GetCACert serve
 * (pki_ca_anchor_missing): reached or not through the chain file, and
 * the issuer that is missing named.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "pki.h"
#include "test/unit.h"
#include "test/fixture.h"
#include "test/clock.h"
#include "test/certs.h"


static char  dir[64];


/* A CA certificate for cn and pub, issued by issuer (key ikey; NULL:
 * self-signed), valid from now + nb to now + na, with pathLenConstraint
 * pathlen unless negative. */
static X509 *
ca_cert(const char *cn, EVP_PKEY *pub, X509 *issuer, EVP_PKEY *ikey,
    long nb, long na, int pathlen)
{
    cx_ext_t     c = { 0 };
    static long  serial = 200;

    c.serial = serial++;
    c.ca = 1;
    c.pathlen = pathlen;
    c.ku = "critical,keyCertSign,cRLSign";

    return cx_cert(cn, pub, issuer, ikey, nb, na, &c);
}


/* The notAfter of x. */
static time_t
end_of(X509 *x)
{
    struct tm  tm;

    memset(&tm, 0, sizeof(tm));
    ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm);

    return timegm(&tm);
}


/* CA "low" of DIR/cert under DIR/chain (NULL: none). */
static pki_ca_t *
low_ca(const char *cert, const char *chain, pki_key_t *key,
    pki_template_t *t, pki_result_t *res)
{
    pki_ca_t  *ca;

    pki_result_init(res);
    ca = pki_ca_new("low");
    cx_ca_file(ca, "certificate", dir, cert, res);
    if (chain != NULL) {
        cx_ca_file(ca, "chain", dir, chain, res);
    }
    pki_ca_set_key(ca, key, res);
    if (t != NULL) {
        pki_ca_add_template(ca, t, res);
    }
    pki_result_init(res);
    (void) pki_ca_finish(ca, res);

    return ca;
}


/* A leaf of ca under t at this host's clock: its notAfter, or 0 with res
 * saying why it was refused. */
static time_t
leaf_end(pki_ca_t *ca, pki_template_t *t, pki_result_t *res)
{
    X509           *x;
    time_t          end;
    EVP_PKEY       *pk;
    X509_NAME      *n;
    pki_request_t   req;

    pk = fx_keygen("EC:P-256");
    n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                               (const unsigned char *) "leaf", -1, -1, 0);
    memset(&req, 0, sizeof(req));
    req.subject = n;
    req.pubkey = pk;
    pki_result_init(res);
    x = NULL;
    end = 0;

    if (pki_issue(ca, t, NULL, &req, NULL, &x, res) == PKI_OK && x != NULL) {
        end = end_of(x);
    }

    X509_free(x);
    X509_NAME_free(n);
    EVP_PKEY_free(pk);

    return end;
}


/*
 * A root R, an intermediate M under it that ends in a day, the CA "low"
 * under M for 100 days: what low signs ends with M.  Past M's end low
 * signs nothing (the next start refuses its chain); a leaf made before
 * ends no later than M.  Then the shapes of chain files: M re-issued with
 * its key for longer (the path through the new one counts), an expired
 * root (a trust anchor: the relying party's own copy counts, not the
 * file's), a self-signed CA (its own notAfter, whatever the file holds).
 */
static void
test_chain_end(void)
{
    time_t           mend, lend;
    X509            *r, *oldr, *m, *m2, *low, *self, *xself, *mroll;
    EVP_PKEY        *rk, *mk, *lk, *mold;
    pki_ca_t        *ca;
    pki_key_t       *key;
    pki_result_t     res;
    pki_template_t  *t;

    static const char *const dev[] = {
        "key_types ec:P-256", "subject CN required", "validity 30d",
        "extended_key_usage clientAuth", NULL
    };

    rk = fx_keygen("EC:P-256");
    mk = fx_keygen("EC:P-256");
    lk = fx_keygen("EC:P-256");
    t = fx_template("dev", dev);

    r = ca_cert("End Root", rk, NULL, rk, -3600, 86400L * 365, -1);
    oldr = ca_cert("End Root", rk, NULL, rk, -86400L * 400, -86400L, -1);
    m = ca_cert("End Mid", mk, r, rk, -3600, 86400L, -1);
    m2 = ca_cert("End Mid", mk, r, rk, -3600, 86400L * 300, -1);
    low = ca_cert("End Low", lk, m, mk, -3600, 86400L * 100, -1);
    self = ca_cert("End Self", lk, NULL, lk, -3600, 86400L * 50, -1);
    /* M's key certified by M's old key (self-issued, not self-signed:
     * a key rollover certificate), ending in a day */
    mold = fx_keygen("EC:P-256");
    mroll = ca_cert("End Mid", mk, NULL, mold, -3600, 86400L, -1);
    /* a cross certificate of it by R, ending in a day */
    xself = ca_cert("End Self", lk, r, rk, -3600, 86400L, -1);
    mend = end_of(m);
    lend = end_of(low);

    cx_write_certs(dir, "low.pem", low, NULL);
    cx_write_certs(dir, "self.pem", self, NULL);
    cx_write_certs(dir, "m-r.pem", m, r, NULL);
    cx_write_certs(dir, "m-m2-r.pem", m, m2, r, NULL);
    cx_write_certs(dir, "m2-oldr.pem", m2, oldr, NULL);
    cx_write_certs(dir, "cross.pem", m, NULL);
    cx_write_certs(dir, "xself-r.pem", xself, r, NULL);
    cx_write_certs(dir, "mroll.pem", mroll, NULL);
    key = fx_key_file(dir, "low.key", lk);

    ca = low_ca("low.pem", "m-r.pem", key, t, &res);
    ok(res.status == PKI_OK, "low under M under R: loads: %s", res.detail);
    ok(pki_ca_end(ca) == mend, "  it signs until M ends (%lld, M %lld)",
       (long long) pki_ca_end(ca), (long long) mend);
    ok(pki_ca_live(ca, time(NULL), NULL) == PKI_OK, "  live now");

    /* an hour before M ends: a leaf of the template's 30 days ends with
     * M (before: 30 days on, past its issuer's issuer) */
    clock_ahead = mend - time(NULL) - 3600;
    ok(leaf_end(ca, t, &res) == mend,
       "  a leaf an hour before M ends ends with M: %s", res.detail);

    /* M has ended, low has 99 days left */
    clock_ahead = 0;
    clock_ahead = mend - time(NULL) + 60;
    pki_result_init(&res);
    ok(pki_ca_live(ca, time(NULL), &res) == PKI_UNAVAILABLE
       && strstr(res.detail, "certificate 1 of the CA chain above the CA "
                 "certificate of \"low\" has expired") != NULL
       && strstr(res.log, "m-r.pem") != NULL
       && strstr(res.log, "End Mid") != NULL,
       "  past M's end: not live: %s (%s)", res.detail, res.log);
    ok(leaf_end(ca, t, &res) == 0 && res.status != PKI_OK,
       "  past M's end: pki_issue refuses (before: a leaf signed): %s",
       res.detail);
    clock_ahead = 0;
    pki_ca_free(ca);

    /* M re-issued with its key for 300 days, both in the file */
    ca = low_ca("low.pem", "m-m2-r.pem", key, t, &res);
    ok(res.status == PKI_OK && pki_ca_end(ca) == lend,
       "M re-issued for longer beside the old M: low's own end (%s)",
       res.detail);
    pki_ca_free(ca);

    /* the expired root in the file is a trust anchor: not counted */
    ca = low_ca("low.pem", "m2-oldr.pem", key, t, &res);
    ok(res.status == PKI_OK && pki_ca_end(ca) == lend,
       "an expired copy of the root above M: low's own end (%s)",
       res.detail);
    pki_ca_free(ca);

    /* M without R: the file ends at M, which counts */
    ca = low_ca("low.pem", "cross.pem", key, t, &res);
    ok(res.status == PKI_OK && pki_ca_end(ca) == mend,
       "M alone in the file: M's end (%s)", res.detail);
    pki_ca_free(ca);

    /* a self-issued issuer is no trust anchor: its end counts */
    ca = low_ca("low.pem", "mroll.pem", key, t, &res);
    ok(res.status == PKI_OK && pki_ca_end(ca) == end_of(mroll),
       "M's rollover certificate (self-issued) alone: its end (%s)",
       res.detail);
    pki_ca_free(ca);

    /* no chain file: the CA certificate's own end */
    ca = low_ca("low.pem", NULL, key, t, &res);
    ok(res.status == PKI_OK && pki_ca_end(ca) == lend,
       "no chain file: low's own end (%s)", res.detail);
    pki_ca_free(ca);

    /* a self-signed CA: its own end, a cross certificate of it in the
     * file ending sooner (another path, for other relying parties) */
    ca = low_ca("self.pem", "xself-r.pem", key, t, &res);
    ok(res.status == PKI_OK && pki_ca_end(ca) == end_of(self),
       "a self-signed CA: its own end (%s)", res.detail);
    clock_ahead = end_of(self) - time(NULL) + 60;
    pki_result_init(&res);
    ok(pki_ca_live(ca, time(NULL), &res) == PKI_UNAVAILABLE
       && strstr(res.detail, "the CA certificate of \"low\" has expired")
          != NULL,
       "  past it: not live: %s", res.detail);
    clock_ahead = 0;
    pki_ca_free(ca);

    pki_key_free(key);
    pki_template_free(t);
    X509_free(r);
    X509_free(oldr);
    X509_free(m);
    X509_free(m2);
    X509_free(low);
    X509_free(self);
    X509_free(xself);
    X509_free(mroll);
    EVP_PKEY_free(mold);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(mk);
    EVP_PKEY_free(lk);
}


/*
 * The whole path above the CA's issuer at load time (nginx -t): "low"
 * under A under B under R.  B (A's issuer, not low's) expired, or not
 * valid yet: low is refused, naming B (its place in the file, subject and
 * date).  Before, only A was judged: low loaded and signed nothing.  B
 * re-issued with its key beside the expired one: loads.  B on top of the
 * file (its issuer R missing) and expired: refused too; R, a trust
 * anchor, expired in the file: loads (relying parties hold their own).
 */
static void
test_chain_end_above(void)
{
    X509            *r, *oldr, *a, *olda, *b, *oldb, *newb, *futb, *low;
    EVP_PKEY        *rk, *ak, *bk, *lk;
    pki_ca_t        *ca;
    pki_key_t       *key;
    pki_result_t     res;

    rk = fx_keygen("EC:P-256");
    ak = fx_keygen("EC:P-256");
    bk = fx_keygen("EC:P-256");
    lk = fx_keygen("EC:P-256");

    r = ca_cert("Above Root", rk, NULL, rk, -3600, 86400L * 365, -1);
    oldr = ca_cert("Above Root", rk, NULL, rk, -86400L * 400, -86400L, -1);
    b = ca_cert("Above B", bk, r, rk, -3600, 86400L * 300, -1);
    oldb = ca_cert("Above B", bk, r, rk, -86400L * 400, -86400L, -1);
    newb = ca_cert("Above B", bk, r, rk, -3600, 86400L * 300, -1);
    futb = ca_cert("Above B", bk, r, rk, 86400L, 86400L * 300, -1);
    a = ca_cert("Above A", ak, b, bk, -3600, 86400L * 200, -1);
    low = ca_cert("Above Low", lk, a, ak, -3600, 86400L * 100, -1);

    cx_write_certs(dir, "above-low.pem", low, NULL);
    cx_write_certs(dir, "a-b-r.pem", a, b, r, NULL);
    cx_write_certs(dir, "a-oldb-r.pem", a, oldb, r, NULL);
    cx_write_certs(dir, "a-oldb-newb-r.pem", a, oldb, newb, r, NULL);
    cx_write_certs(dir, "a-futb-r.pem", a, futb, r, NULL);
    cx_write_certs(dir, "a-oldb.pem", a, oldb, NULL);
    cx_write_certs(dir, "a-b-oldr.pem", a, b, oldr, NULL);
    key = fx_key_file(dir, "above-low.key", lk);

    ca = low_ca("above-low.pem", "a-b-r.pem", key, NULL, &res);
    ok(res.status == PKI_OK, "low under A under B under R: loads: %s",
       res.detail);
    pki_ca_free(ca);

    ca = low_ca("above-low.pem", "a-oldb-r.pem", key, NULL, &res);
    ok(res.status == PKI_MALFORMED
       && strstr(res.detail, "certificate 2 of CA chain") != NULL
       && strstr(res.detail, "a-oldb-r.pem") != NULL
       && strstr(res.detail, "Above B") != NULL
       && strstr(res.detail, "has expired") != NULL,
       "B (above A, low's issuer) expired: refused (before: loaded): %s",
       res.detail);
    pki_ca_free(ca);

    ca = low_ca("above-low.pem", "a-oldb-newb-r.pem", key, NULL, &res);
    ok(res.status == PKI_OK,
       "B expired beside B re-issued with its key: loads: %s", res.detail);
    pki_ca_free(ca);

    ca = low_ca("above-low.pem", "a-futb-r.pem", key, NULL, &res);
    ok(res.status == PKI_MALFORMED
       && strstr(res.detail, "certificate 2 of CA chain") != NULL
       && strstr(res.detail, "Above B") != NULL
       && strstr(res.detail, "not valid yet") != NULL,
       "B not valid yet: refused (before: loaded): %s", res.detail);
    pki_ca_free(ca);

    ca = low_ca("above-low.pem", "a-oldb.pem", key, NULL, &res);
    ok(res.status == PKI_MALFORMED
       && strstr(res.detail, "certificate 2 of CA chain") != NULL
       && strstr(res.detail, "has expired") != NULL,
       "B expired on top of the file: refused (before: loaded): %s",
       res.detail);
    pki_ca_free(ca);

    ca = low_ca("above-low.pem", "a-b-oldr.pem", key, NULL, &res);
    ok(res.status == PKI_OK,
       "an expired copy of the root R on top: loads: %s", res.detail);
    pki_ca_free(ca);

    /* an expired old copy of A (low's issuer, same key) first in the
     * file, beside A whose issuer B is not valid yet: B is named, not the
     * harmless old copy met first */
    olda = ca_cert("Above A", ak, b, bk, -86400L * 400, -86400L, -1);
    cx_write_certs(dir, "olda-a-futb-r.pem", olda, a, futb, r, NULL);
    ca = low_ca("above-low.pem", "olda-a-futb-r.pem", key, NULL, &res);
    ok(res.status == PKI_MALFORMED
       && strstr(res.detail, "certificate 3 of CA chain") != NULL
       && strstr(res.detail, "Above B") != NULL
       && strstr(res.detail, "not valid yet") != NULL,
       "an old copy of A expired, B not valid yet: B named: %s",
       res.detail);
    pki_ca_free(ca);

    pki_key_free(key);
    X509_free(r);
    X509_free(oldr);
    X509_free(a);
    X509_free(olda);
    X509_free(b);
    X509_free(oldb);
    X509_free(newb);
    X509_free(futb);
    X509_free(low);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(ak);
    EVP_PKEY_free(bk);
    EVP_PKEY_free(lk);
}


/*
 * The trust anchor of /cacerts (pki_ca_anchor_missing): a root R, an
 * intermediate M under it, the CA "low" under M.  The chain file with R
 * (after M, or first) reaches it; one that stops at M misses R, and says
 * so by name; no chain file misses M; a self-signed CA is its own anchor;
 * M's rollover certificate (self-issued, another key) is none; a cross
 * certificate of a CA that reaches R counts for it.
 */
static void
test_anchor(void)
{
    char            name[256];
    X509           *r, *r2, *m, *m2, *low, *self, *mroll, *xlow;
    EVP_PKEY       *rk, *r2k, *mk, *lk, *mold;
    pki_ca_t       *ca;
    pki_key_t      *key;
    pki_result_t    res;

    rk = fx_keygen("EC:P-256");
    mk = fx_keygen("EC:P-256");
    lk = fx_keygen("EC:P-256");
    mold = fx_keygen("EC:P-256");
    r2k = fx_keygen("EC:P-256");

    r = ca_cert("Anchor Root", rk, NULL, rk, -3600, 86400L * 365, -1);
    m = ca_cert("Anchor Mid", mk, r, rk, -3600, 86400L * 300, -1);
    low = ca_cert("Anchor Low", lk, m, mk, -3600, 86400L * 100, -1);
    self = ca_cert("Anchor Self", lk, NULL, lk, -3600, 86400L * 50, -1);
    mroll = ca_cert("Anchor Mid", mk, NULL, mold, -3600, 86400L, -1);
    /* M under another root R2 (not in any file), and low
     * cross-certified by R itself */
    r2 = ca_cert("Anchor Other Root", r2k, NULL, r2k, -3600, 86400L, -1);
    m2 = ca_cert("Anchor Mid", mk, r2, r2k, -3600, 86400L * 300, -1);
    xlow = ca_cert("Anchor Low", lk, r, rk, -3600, 86400L * 100, -1);

    cx_write_certs(dir, "a-low.pem", low, NULL);
    cx_write_certs(dir, "a-self.pem", self, NULL);
    cx_write_certs(dir, "a-m-r.pem", m, r, NULL);
    cx_write_certs(dir, "a-r-m.pem", r, m, NULL);
    cx_write_certs(dir, "a-m.pem", m, NULL);
    cx_write_certs(dir, "a-m-mroll.pem", m, mroll, NULL);
    cx_write_certs(dir, "a-m2-xlow-r.pem", m2, xlow, r, NULL);
    cx_write_certs(dir, "a-m2-xlow.pem", m2, xlow, NULL);
    cx_write_certs(dir, "a-r.pem", r, NULL);
    key = fx_key_file(dir, "a-low.key", lk);

    ca = low_ca("a-low.pem", "a-m-r.pem", key, NULL, &res);
    ok(res.status == PKI_OK, "anchor: low under M under R loads: %s",
       res.detail);
    ok(pki_ca_anchor_missing(ca, name, sizeof(name)) == 0,
       "  M and R in the chain file: the root is reached");
    pki_ca_free(ca);

    ca = low_ca("a-low.pem", "a-r-m.pem", key, NULL, &res);
    ok(res.status == PKI_OK
       && pki_ca_anchor_missing(ca, name, sizeof(name)) == 0,
       "  R first, M after it: the root is reached (%s)", res.detail);
    pki_ca_free(ca);

    ca = low_ca("a-low.pem", "a-m.pem", key, NULL, &res);
    ok(res.status == PKI_OK
       && pki_ca_anchor_missing(ca, name, sizeof(name)) == 1
       && strcmp(name, "/CN=Anchor Root") == 0,
       "  M alone: missing, R named: \"%s\" (%s)", name, res.detail);
    ok(pki_ca_anchor_missing(ca, NULL, 0) == 1, "  and without a buffer");
    pki_ca_free(ca);

    ca = low_ca("a-low.pem", NULL, key, NULL, &res);
    ok(res.status == PKI_OK
       && pki_ca_anchor_missing(ca, name, sizeof(name)) == 1
       && strcmp(name, "/CN=Anchor Mid") == 0,
       "  no chain file: missing, M named: \"%s\" (%s)", name,
       res.detail);
    pki_ca_free(ca);

    ca = low_ca("a-low.pem", "a-m-mroll.pem", key, NULL, &res);
    ok(res.status == PKI_OK
       && pki_ca_anchor_missing(ca, name, sizeof(name)) == 1
       && strcmp(name, "/CN=Anchor Root") == 0,
       "  M and its self-issued rollover certificate: no anchor, R "
       "named: \"%s\" (%s)", name, res.detail);
    pki_ca_free(ca);

    /* low's path through M ends below R2; its cross certificate by R
     * reaches R */
    ca = low_ca("a-low.pem", "a-m2-xlow-r.pem", key, NULL, &res);
    ok(res.status == PKI_OK
       && pki_ca_anchor_missing(ca, name, sizeof(name)) == 0,
       "  M under R2 (missing), a cross certificate of low by R, and R: "
       "reached (%s)", res.detail);
    pki_ca_free(ca);

    ca = low_ca("a-low.pem", "a-m2-xlow.pem", key, NULL, &res);
    ok(res.status == PKI_OK
       && pki_ca_anchor_missing(ca, name, sizeof(name)) == 1
       && strcmp(name, "/CN=Anchor Other Root") == 0,
       "  without R: missing, the CA certificate's path named: \"%s\" "
       "(%s)", name, res.detail);
    pki_ca_free(ca);

    ca = low_ca("a-self.pem", NULL, key, NULL, &res);
    ok(res.status == PKI_OK
       && pki_ca_anchor_missing(ca, name, sizeof(name)) == 0
       && name[0] == '\0',
       "a self-signed CA, no chain file: its own anchor (%s)", res.detail);
    pki_ca_free(ca);

    ca = low_ca("a-self.pem", "a-r.pem", key, NULL, &res);
    ok(res.status == PKI_OK
       && pki_ca_anchor_missing(ca, name, sizeof(name)) == 0,
       "  with another root in the file: its own anchor (%s)", res.detail);
    pki_ca_free(ca);

    ok(pki_ca_anchor_missing(NULL, name, sizeof(name)) == 0,
       "no CA: 0");

    ca = pki_ca_new("unfinished");
    ok(pki_ca_anchor_missing(ca, name, sizeof(name)) == 0,
       "an unfinished CA: 0");
    pki_ca_free(ca);

    pki_key_free(key);
    X509_free(r);
    X509_free(m);
    X509_free(low);
    X509_free(self);
    X509_free(mroll);
    X509_free(xlow);
    X509_free(r2);
    X509_free(m2);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(r2k);
    EVP_PKEY_free(mk);
    EVP_PKEY_free(lk);
    EVP_PKEY_free(mold);
}


int
main(void)
{
    X509          *old, *now, *subx, *zero, *notca;
    EVP_PKEY      *rk, *sk;
    pki_ca_t      *ca;
    pki_key_t     *key;
    pki_result_t   res;

    pki_init();

    snprintf(dir, sizeof(dir), "/tmp/pki-ca-chain-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        skip_all("no temporary directory");
    }

    rk = fx_keygen("EC:P-256");
    sk = fx_keygen("EC:P-256");

    /* one root, one key: the old certificate expired yesterday, the new
     * one (re-issued for a longer life) valid for a year */
    old = ca_cert("Rollover Root", rk, NULL, rk, -86400L * 400, -86400L,
                  -1);
    now = ca_cert("Rollover Root", rk, NULL, rk, -3600, 86400L * 365, -1);
    /* and one that allows no CA under it */
    zero = ca_cert("Rollover Root", rk, NULL, rk, -3600, 86400L * 365, 0);
    subx = ca_cert("Rollover Sub", sk, now, rk, -3600, 86400L * 100, -1);

    cx_write_certs(dir, "sub.pem", subx, NULL);
    cx_write_certs(dir, "old-new.pem", old, now, NULL);
    cx_write_certs(dir, "new-old.pem", now, old, NULL);
    cx_write_certs(dir, "old.pem", old, NULL);
    cx_write_certs(dir, "zero-new.pem", zero, now, NULL);
    cx_write_certs(dir, "zero.pem", zero, NULL);

    key = fx_key_file(dir, "sub.key", sk);

    ca = cx_sub_ca(dir, "new-old.pem", NULL, key, NULL, &res);
    ok(res.status == PKI_OK, "chain with the new root first: %s",
       res.detail);
    pki_ca_free(ca);

    ca = cx_sub_ca(dir, "old-new.pem", NULL, key, NULL, &res);
    ok(res.status == PKI_OK, "chain with the expired old root first, the "
       "new one after it: %s", res.detail);
    pki_ca_free(ca);

    ca = cx_sub_ca(dir, "zero-new.pem", NULL, key, NULL, &res);
    ok(res.status == PKI_OK, "an issuer with pathlen:0 first, one that "
       "allows the CA after it: %s", res.detail);
    pki_ca_free(ca);

    /* with no issuer that passes, the first one's fault is said */
    ca = cx_sub_ca(dir, "old.pem", NULL, key, NULL, &res);
    ok(res.status == PKI_MALFORMED
       && strstr(res.detail, "certificate 1 of CA chain") != NULL
       && strstr(res.detail, "the CA certificate's issuer, has expired")
          != NULL,
       "only the expired root: refused: %s", res.detail);
    pki_ca_free(ca);

    ca = cx_sub_ca(dir, "zero.pem", NULL, key, NULL, &res);
    ok(res.status == PKI_MALFORMED
       && strstr(res.detail, "has pathlen:0") != NULL,
       "only a root with pathlen:0: refused: %s", res.detail);
    pki_ca_free(ca);

    /* a chain of another CA still says so */
    notca = ca_cert("Another Root", sk, NULL, sk, -3600, 86400L, -1);
    cx_write_certs(dir, "other.pem", notca, NULL);
    ca = cx_sub_ca(dir, "other.pem", NULL, key, NULL, &res);
    ok(res.status == PKI_MALFORMED
       && strstr(res.detail, "a chain file of another CA?") != NULL,
       "a chain without the issuer: refused: %s", res.detail);
    pki_ca_free(ca);

    pki_key_free(key);

    test_chain_end();
    test_chain_end_above();
    test_anchor();

    X509_free(old);
    X509_free(now);
    X509_free(zero);
    X509_free(subx);
    X509_free(notca);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(sk);

    {
        char  cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0) {
            diag("cannot remove %s", dir);
        }
    }

    return done_testing();
}
