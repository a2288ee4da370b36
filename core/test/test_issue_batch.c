/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Batch issuance (pki_issue_batch, pki_record_reserve_batch,
 * pki_record_commit_batch) and the lean PKCS#11 EC signing path.
 *
 *   PKI_TEST_REDIS_SOCK    unix socket of a running redis-server (the
 *                          Redis parts are skipped without it)
 *   PKI_TEST_P11_MODULE, PKI_TEST_SOFTHSM_CONF, PKI_TEST_TOKEN,
 *   PKI_TEST_PIN_FILE, PKI_TEST_KEY_URI_EC
 *                          a SoftHSM2 token with an EC P-256 key (the
 *                          token parts are skipped without them)
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "pki.h"
#include "test/unit.h"
#include "test/fixture.h"


static char  dir[64];
static int   issue_events;
static int   sign_events;


static void
sink(void *arg, const pki_event_t *ev)
{
    (void) arg;

    if (ev->type == PKI_EV_ISSUE) {
        __atomic_add_fetch(&issue_events, 1, __ATOMIC_SEQ_CST);
    }
    if (ev->type == PKI_EV_SIGN) {
        __atomic_add_fetch(&sign_events, 1, __ATOMIC_SEQ_CST);
    }
}


static X509_NAME *
cn(const char *s)
{
    X509_NAME  *name = X509_NAME_new();

    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *) s, -1, -1, 0);
    return name;
}


/* A CA named name signed by key (self-signed root), allowing tdev. */
static pki_ca_t *
make_ca(const char *name, pki_key_t *key, pki_template_t *troot,
    pki_template_t *tdev)
{
    FILE          *f;
    X509          *root;
    X509_NAME     *subject;
    pki_ca_t      *ca;
    const char    *argv[1];
    pki_result_t   res;
    char           path[128];

    pki_result_init(&res);
    subject = cn(name);
    if (pki_selfsign(key, troot, subject, &root, &res) != PKI_OK) {
        diag("selfsign %s: %s %s", name, res.detail, res.log);
        X509_NAME_free(subject);
        return NULL;
    }
    X509_NAME_free(subject);

    snprintf(path, sizeof(path), "%s/%s.pem", dir, name);
    f = fopen(path, "w");
    PEM_write_X509(f, root);
    fclose(f);
    X509_free(root);

    ca = pki_ca_new(name);
    argv[0] = path;
    pki_ca_set(ca, "certificate", 1, argv, &res);
    pki_ca_set_key(ca, key, &res);
    pki_ca_add_template(ca, tdev, &res);

    if (pki_ca_finish(ca, &res) != PKI_OK) {
        diag("CA %s: %s %s", name, res.detail, res.log);
        pki_ca_free(ca);
        return NULL;
    }

    return ca;
}


/* n requests with fresh P-256 keys; bad[i] != 0 gives item i a P-384 key
 * (refused by the template). */
static pki_request_t *
make_reqs(size_t n, const int *bad)
{
    size_t          i;
    char            name[64];
    pki_request_t  *reqs;

    reqs = calloc(n, sizeof(pki_request_t));

    for (i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "batch unit %zu", i);
        reqs[i].subject = cn(name);
        reqs[i].pubkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC",
                                           (bad && bad[i]) ? "P-384"
                                                           : "P-256");
    }

    return reqs;
}


static void
free_reqs(pki_request_t *reqs, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        X509_NAME_free(reqs[i].subject);
        EVP_PKEY_free(reqs[i].pubkey);
    }
    free(reqs);
}


static pki_issue_item_t *
make_items(pki_request_t *reqs, size_t n)
{
    size_t             i;
    pki_issue_item_t  *items;

    items = calloc(n, sizeof(pki_issue_item_t));
    for (i = 0; i < n; i++) {
        items[i].req = &reqs[i];
    }

    return items;
}


static void
free_items(pki_issue_item_t *items, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        X509_free(items[i].cert);
    }
    free(items);
}


/* Every issued certificate verifies with the CA key and the serials are
 * distinct; returns the number of issued items. */
static size_t
check_issued(pki_ca_t *ca, pki_issue_item_t *items, size_t n,
    const char *what)
{
    size_t     i, j, good, verified, distinct;
    EVP_PKEY  *capub;

    capub = X509_get0_pubkey(pki_ca_cert(ca));
    good = verified = 0;
    distinct = 1;

    for (i = 0; i < n; i++) {
        if (items[i].cert == NULL) {
            continue;
        }
        good++;
        if (X509_verify(items[i].cert, capub) == 1
            && X509_NAME_cmp(X509_get_subject_name(items[i].cert),
                             items[i].req->subject) == 0
            && EVP_PKEY_eq(X509_get0_pubkey(items[i].cert),
                           items[i].req->pubkey) == 1)
        {
            verified++;
        }
        for (j = 0; j < i; j++) {
            if (items[j].cert != NULL
                && ASN1_INTEGER_cmp(X509_get0_serialNumber(items[i].cert),
                                    X509_get0_serialNumber(items[j].cert))
                   == 0)
            {
                distinct = 0;
            }
        }
    }

    ok(verified == good, "%s: %zu of %zu certificates verify with the CA "
       "key, for their request's subject and key", what, verified, good);
    ok(distinct, "%s: serials are distinct", what);

    return good;
}


static size_t
count_keys(redisContext *c, const char *pattern)
{
    size_t       n = 0;
    char         cursor[32] = "0";
    redisReply  *r;

    do {
        r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            freeReplyObject(r);
            return (size_t) -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        n += r->element[1]->elements;
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);

    return n;
}


static void
test_offline(pki_ca_t *ca, pki_template_t *tdev)
{
    size_t              n = 10;
    pki_status_t        st;
    pki_result_t        res;
    pki_request_t      *reqs;
    pki_issue_item_t   *items;

    reqs = make_reqs(n, NULL);
    items = make_items(reqs, n);

    pki_result_init(&res);
    st = pki_issue_batch(ca, tdev, NULL, items, n, NULL, 3, &res);
    is_status(st, PKI_OK, "offline batch of 10, 3 threads");
    ok(check_issued(ca, items, n, "offline") == n, "  all 10 issued");
    free_items(items, n);

    /* bad arguments */
    st = pki_issue_batch(ca, tdev, NULL, NULL, 3, NULL, 1, &res);
    is_status(st, PKI_INTERNAL, "no items");

    items = make_items(reqs, 2);
    items[1].req = NULL;
    st = pki_issue_batch(ca, tdev, NULL, items, 2, NULL, 1, &res);
    is_status(st, PKI_INTERNAL, "a NULL request fails");
    ok(items[0].cert == NULL && items[0].stopped
       && items[1].cert == NULL && items[1].status == PKI_INTERNAL
       && !items[1].stopped,
       "  that item, and the batch with it");
    free_items(items, 2);

    items = make_items(reqs, 2);
    st = pki_issue_batch(NULL, tdev, NULL, items, 2, NULL, 1, &res);
    is_status(st, PKI_INTERNAL, "no CA");
    ok(items[0].cert == NULL && items[1].cert == NULL, "  nothing issued");
    free_items(items, 2);

    free_reqs(reqs, n);
}


/* A transaction log that is required and not open: the batch is refused
 * as pki_issue refuses one certificate, before anything is reserved or
 * signed (it used to be reserved, signed, committed, then withheld). */
static void
test_log_closed(pki_ca_t *ca, pki_template_t *tdev, pki_redis_t *r,
    redisContext *c, const char *ns)
{
    int                 signs, events;
    size_t              i, n = 4, keys, issued, committed;
    char                pat[256];
    pki_status_t        st;
    pki_result_t        res;
    pki_request_t      *reqs;
    pki_issue_item_t   *items;

    reqs = make_reqs(n, NULL);
    items = make_items(reqs, n);

    snprintf(pat, sizeof(pat), "%s{ca:batch}:*", ns ? ns : "");
    keys = c != NULL ? count_keys(c, pat) : 0;
    signs = sign_events;
    events = issue_events;

    pki_audit_set_required(1);
    pki_result_init(&res);
    st = pki_issue_batch(ca, tdev, r, items, n, NULL, 2, &res);
    pki_audit_set_required(0);

    ok(st == PKI_UNAVAILABLE, "required log not open: batch refused (%s)",
       res.detail);

    issued = committed = 0;
    for (i = 0; i < n; i++) {
        issued += items[i].cert != NULL;
        committed += items[i].committed[0] != '\0';
    }
    ok(issued == 0 && committed == 0, "  nothing issued, nothing committed");
    ok(items[0].status == PKI_UNAVAILABLE
       && strcmp(items[0].res.detail, "transaction log unavailable") == 0
       && strstr(items[0].res.log, "not open") != NULL,
       "  each item says why (%s; %s)", items[0].res.detail,
       items[0].res.log);
    ok(sign_events == signs, "  nothing signed (%d signatures)",
       sign_events - signs);
    ok(issue_events - events == (int) n, "  each refusal counted");
    if (c != NULL) {
        ok(count_keys(c, pat) == keys, "  nothing written to Redis");
    }

    free_items(items, n);
    free_reqs(reqs, n);
}


static void
test_records(pki_redis_t *r, redisContext *c, const char *ns)
{
    int            taken[3];
    size_t         i;
    char           pat[256];
    pki_status_t   st, cst[3];
    pki_result_t   res;
    pki_record_t   recs[3], got;
    redisReply    *rep;
    unsigned char  der[3] = { 0x30, 0x01, 0x00 };

    memset(recs, 0, sizeof(recs));
    for (i = 0; i < 3; i++) {
        snprintf(recs[i].serial, sizeof(recs[i].serial), "7E%038zu", i + 1);
        snprintf(recs[i].ca, sizeof(recs[i].ca), "recs");
        snprintf(recs[i].template_name, sizeof(recs[i].template_name), "t");
        snprintf(recs[i].protocol, sizeof(recs[i].protocol), "test");
        recs[i].subject = "CN=x";
        recs[i].sans = "";
        recs[i].requester = "tester";
        recs[i].client = "127.0.0.1";
        recs[i].not_before = 1000;
        recs[i].not_after = 2000 + (time_t) i;
    }

    pki_result_init(&res);
    st = pki_record_reserve_batch(r, recs, 3, taken, &res);
    is_status(st, PKI_OK, "reserve_batch of 3");
    ok(!taken[0] && !taken[1] && !taken[2], "  none taken");

    memset(&got, 0, sizeof(got));
    st = pki_record_get(r, "recs", recs[1].serial, &got, &res);
    is_status(st, PKI_OK, "  pending record readable");
    ok(got.status == PKI_CERT_PENDING && got.not_after == 2001
       && got.subject && strcmp(got.subject, "CN=x") == 0
       && got.requester && strcmp(got.requester, "tester") == 0,
       "  pending, with the intent's fields");
    pki_record_clear(&got);

    rep = redisCommand(c, "TTL %s{ca:recs}:cert:%s", ns, recs[1].serial);
    ok(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer > 0
       && rep->integer <= 300, "  a pending record expires (TTL %lld)",
       rep ? rep->integer : -9);
    freeReplyObject(rep);

    rep = redisCommand(c, "TTL %s{ca:recs}:serial:%s", ns, recs[1].serial);
    ok(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == -1,
       "  the serial reservation does not expire");
    freeReplyObject(rep);

    st = pki_record_reserve_batch(r, recs, 2, taken, &res);
    is_status(st, PKI_OK, "reserve_batch again");
    ok(taken[0] && taken[1], "  both serials are taken");

    for (i = 0; i < 3; i++) {
        recs[i].der = der;
        recs[i].der_len = sizeof(der);
    }

    st = pki_record_commit_batch(r, recs, 2, cst, &res);
    is_status(st, PKI_OK, "commit_batch of 2");
    ok(cst[0] == PKI_OK && cst[1] == PKI_OK, "  both committed");

    st = pki_record_get(r, "recs", recs[0].serial, &got, &res);
    ok(st == PKI_OK && got.status == PKI_CERT_GOOD && got.der_len == 3
       && memcmp(got.der, der, 3) == 0, "  record good with its DER");
    pki_record_clear(&got);

    rep = redisCommand(c, "TTL %s{ca:recs}:cert:%s", ns, recs[0].serial);
    ok(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == -1,
       "  a committed record is permanent");
    freeReplyObject(rep);

    rep = redisCommand(c, "ZSCORE %s{ca:recs}:expiry %s", ns,
                       recs[1].serial);
    ok(rep && rep->type == REDIS_REPLY_STRING && atoi(rep->str) == 2001,
       "  in the expiry index");
    freeReplyObject(rep);

    /* record 2 abandoned, then: 0 not pending, 2 gone */
    st = pki_record_abandon(r, "recs", recs[2].serial, &res);
    is_status(st, PKI_OK, "abandon record 2");
    st = pki_record_commit_batch(r, recs, 3, cst, &res);
    is_status(st, PKI_OK, "commit_batch of 3 again");
    ok(cst[0] == PKI_CONFLICT && cst[1] == PKI_CONFLICT
       && cst[2] == PKI_UNAVAILABLE,
       "  committed ones are not pending, the abandoned one is gone");

    recs[1].der = NULL;
    st = pki_record_commit_batch(r, recs, 3, cst, &res);
    is_status(st, PKI_INTERNAL, "commit without a DER refused");

    snprintf(recs[0].ca, sizeof(recs[0].ca), "bad{ca}");
    st = pki_record_reserve_batch(r, recs, 1, taken, &res);
    is_status(st, PKI_INTERNAL, "bad CA name refused");

    snprintf(pat, sizeof(pat), "%s{ca:recs}:cert:*", ns);
    ok(count_keys(c, pat) == 2, "two records of CA recs remain");
}


static void
test_redis(pki_ca_t *ca, pki_template_t *tdev, pki_redis_t *r,
    redisContext *c, const char *ns)
{
    int                 bad[300];
    size_t              i, n = 300, good, found, ok_recs;
    char                pat[256], hex[41];
    pki_status_t        st;
    pki_cert_status_t   cst;
    pki_result_t        res;
    pki_record_t        rec;
    pki_request_t      *reqs;
    pki_issue_item_t   *items;
    pki_issue_ctx_t     ictx;
    pki_redis_t        *down;
    pki_redis_conf_t    conf;
    unsigned char      *der;
    int                 len, before;

    ictx.protocol = "matter";
    ictx.requester = "factory";
    ictx.client = "127.0.0.1";
    ictx.realm = NULL;
    ictx.committed = NULL;

    /* 300 items: more than two pipelined chunks of 128 */
    reqs = make_reqs(n, NULL);
    items = make_items(reqs, n);

    before = issue_events;
    pki_result_init(&res);
    st = pki_issue_batch(ca, tdev, r, items, n, &ictx, 4, &res);
    is_status(st, PKI_OK, "batch of 300 with Redis, 4 threads");
    good = check_issued(ca, items, n, "batch of 300");
    ok(good == n, "  all 300 issued");
    ok(issue_events - before == (int) n, "  one issue event per "
       "certificate (%d)", issue_events - before);

    snprintf(pat, sizeof(pat), "%s{ca:%s}:cert:*", ns, pki_ca_name(ca));
    ok(count_keys(c, pat) == n, "  300 records in Redis");
    snprintf(pat, sizeof(pat), "%s{ca:%s}:serial:*", ns, pki_ca_name(ca));
    ok(count_keys(c, pat) == n, "  300 serial reservations");

    found = ok_recs = 0;
    for (i = 0; i < n; i++) {
        if (items[i].cert == NULL) {
            continue;
        }

        /* what OCSP asks: the status of the certificate's record */
        st = pki_cert_status(r, ca, items[i].cert, &cst, &res);
        if (st == PKI_OK && cst == PKI_CERT_GOOD) {
            found++;
        }

        pki_serial_to_hex(X509_get0_serialNumber(items[i].cert), hex);
        memset(&rec, 0, sizeof(rec));
        der = NULL;
        len = i2d_X509(items[i].cert, &der);
        if (pki_record_get(r, pki_ca_name(ca), hex, &rec, &res) == PKI_OK
            && rec.der_len == (size_t) len
            && memcmp(rec.der, der, (size_t) len) == 0
            && strcmp(rec.protocol, "matter") == 0
            && rec.requester && strcmp(rec.requester, "factory") == 0
            && strcmp(rec.template_name, "device") == 0
            && rec.subject && strstr(rec.subject, "batch unit") != NULL)
        {
            ok_recs++;
        }
        OPENSSL_free(der);
        pki_record_clear(&rec);
    }
    ok(found == n, "  pki_cert_status: every serial known and good (%zu)",
       found);
    ok(ok_recs == n, "  every record holds its DER and the intent (%zu)",
       ok_recs);

    free_items(items, n);
    free_reqs(reqs, n);

    /* one item refused while the batch is built refuses the batch: the
     * others were issued, recorded, then revoked by the caller */
    memset(bad, 0, sizeof(bad));
    bad[7] = 1;
    n = 12;
    reqs = make_reqs(n, bad);
    items = make_items(reqs, n);
    before = issue_events;
    st = pki_issue_batch(ca, tdev, r, items, n, &ictx, 2, &res);
    is_status(st, PKI_POLICY, "batch with a P-384 key: its status");
    ok(strstr(res.detail, "P-384") != NULL, "  detail names the key: %s",
       res.detail);
    ok(items[7].cert == NULL && items[7].status == PKI_POLICY
       && !items[7].stopped, "  that item refused");
    for (i = 0, good = 0; i < n; i++) {
        good += i != 7 && items[i].cert == NULL && items[i].stopped
                && items[i].status == PKI_POLICY
                && items[i].committed[0] == '\0'
                && strstr(items[i].res.detail, "item 7 ") != NULL;
    }
    ok(good == n - 1, "  the 11 others stopped, naming item 7 (%zu)", good);
    snprintf(pat, sizeof(pat), "%s{ca:%s}:cert:*", ns, pki_ca_name(ca));
    ok(count_keys(c, pat) == 300, "  no record of the batch");
    snprintf(pat, sizeof(pat), "%s{ca:%s}:serial:*", ns, pki_ca_name(ca));
    ok(count_keys(c, pat) == 300, "  no serial reserved");
    ok(issue_events - before == (int) n, "  each refusal counted (%d)",
       issue_events - before);
    free_items(items, n);
    free_reqs(reqs, n);

    /* Redis down: nothing signed, nothing returned */
    memset(&conf, 0, sizeof(conf));
    snprintf(pat, sizeof(pat), "%s/no-such-redis.sock", dir);
    conf.unix_path = pat;
    conf.ns = ns;
    conf.timeout_ms = 200;
    down = pki_redis_new(&conf, &res);
    n = 5;
    reqs = make_reqs(n, NULL);
    items = make_items(reqs, n);
    st = pki_issue_batch(ca, tdev, down, items, n, &ictx, 2, &res);
    is_status(st, PKI_UNAVAILABLE, "Redis down: unavailable");
    for (i = 0, good = 0; i < n; i++) {
        good += items[i].cert != NULL || items[i].status != PKI_UNAVAILABLE;
    }
    ok(good == 0, "  every item unavailable, no certificate");
    free_items(items, n);
    free_reqs(reqs, n);
    pki_redis_free(down);
}


static void
test_token(pki_template_t *troot, pki_template_t *tdev, pki_redis_t *r)
{
    size_t              n = 40;
    char               *module, *conf, *token, *pinf, *uri;
    EVP_PKEY           *pub;
    pki_ca_t           *ca;
    pki_key_t          *key;
    pki_vault_t        *v;
    pki_status_t        st;
    pki_result_t        res;
    pki_request_t      *reqs;
    pki_issue_item_t   *items;
    unsigned char      *sig;
    size_t              siglen;
    EVP_MD_CTX         *mctx;
    static const unsigned char  msg[] = "lean path raw signature";

    module = getenv("PKI_TEST_P11_MODULE");
    conf = getenv("PKI_TEST_SOFTHSM_CONF");
    token = getenv("PKI_TEST_TOKEN");
    pinf = getenv("PKI_TEST_PIN_FILE");
    uri = getenv("PKI_TEST_KEY_URI_EC");

    if (!module || !conf || !token || !pinf || !uri) {
        diag("no SoftHSM token in the environment: token tests skipped");
        return;
    }

    setenv("SOFTHSM2_CONF", conf, 1);

    pki_result_init(&res);
    v = pki_vault_new("batch", module, token, pinf, &res);
    if (!ok(v != NULL && pki_vault_open(v, &res) == PKI_OK,
            "vault opens: %s", res.detail))
    {
        pki_vault_free(v);
        return;
    }

    key = pki_key_new(uri, v, &res);
    if (!ok(key != NULL && pki_key_open(key, &res) == PKI_OK,
            "token key opens: %s %s", res.detail, res.log))
    {
        pki_key_free(key);
        pki_vault_free(v);
        return;
    }

    pub = pki_key_public(key);

    /* raw signatures (the OCSP path) from the lean path verify */
    st = pki_key_sign(key, EVP_sha256(), msg, sizeof(msg) - 1, &sig,
                      &siglen, &res);
    is_status(st, PKI_OK, "raw SHA-256 signature with the token key");
    mctx = EVP_MD_CTX_new();
    ok(st == PKI_OK && EVP_DigestVerifyInit(mctx, NULL, EVP_sha256(), NULL,
                                            pub) == 1
       && EVP_DigestVerify(mctx, sig, siglen, msg, sizeof(msg) - 1) == 1,
       "  it verifies (DER ECDSA-Sig-Value)");
    EVP_MD_CTX_free(mctx);
    free(sig);

    ca = make_ca("tokenca", key, troot, tdev);
    if (!ok(ca != NULL, "CA with the token key")) {
        goto done;
    }

    reqs = make_reqs(n, NULL);
    items = make_items(reqs, n);
    st = pki_issue_batch(ca, tdev, r, items, n, NULL, 4, &res);
    is_status(st, PKI_OK, "token batch of 40, 4 threads");
    ok(check_issued(ca, items, n, "token batch") == n, "  all 40 issued");
    free_items(items, n);

    /* the vault reopens (as after a token failure): signing goes on */
    pki_vault_close(v);
    items = make_items(reqs, n);
    st = pki_issue_batch(ca, tdev, r, items, n, NULL, 4, &res);
    is_status(st, PKI_OK, "token batch after the vault was closed");
    ok(check_issued(ca, items, n, "after reopen") == n, "  all 40 issued");
    free_items(items, n);
    free_reqs(reqs, n);

    pki_ca_free(ca);

done:

    pki_key_free(key);
    pki_vault_free(v);
}


int
main(void)
{
    char               ns[64], *sock;
    EVP_PKEY          *pk;
    pki_ca_t          *ca;
    pki_key_t         *key;
    pki_redis_t       *r;
    pki_result_t       res;
    pki_template_t    *troot, *tdev;
    pki_redis_conf_t   conf;
    redisContext      *c;
    redisReply        *rep;
    char               path[128];

    static const char *const root_lines[] = {
        "subject CN copy", "basic_constraints ca:true", "validity 3650d",
        "key_types ec:P-256", NULL
    };
    static const char *const dev_lines[] = {
        "key_types ec:P-256", "subject CN required", "validity 30d",
        "extended_key_usage clientAuth", NULL
    };

    pki_init();
    pki_event_set_sink(sink, NULL);

    snprintf(dir, sizeof(dir), "/tmp/batchtest.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        skip_all("mkdtemp failed");
    }

    troot = fx_template("root", root_lines);
    tdev = fx_template("device", dev_lines);

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    key = fx_key_file(dir, "ca.key", pk);
    EVP_PKEY_free(pk);
    if (key == NULL) {
        return done_testing();
    }

    ca = make_ca("batch", key, troot, tdev);
    if (!ok(ca != NULL, "file-key CA")) {
        return done_testing();
    }

    test_offline(ca, tdev);
    test_log_closed(ca, tdev, NULL, NULL, NULL);

    r = NULL;
    c = NULL;
    sock = getenv("PKI_TEST_REDIS_SOCK");

    if (sock == NULL) {
        diag("PKI_TEST_REDIS_SOCK not set: Redis tests skipped");

    } else {
        snprintf(ns, sizeof(ns), "batch%d:", (int) getpid());
        memset(&conf, 0, sizeof(conf));
        conf.unix_path = sock;
        conf.ns = ns;
        conf.timeout_ms = 5000;
        r = pki_redis_new(&conf, &res);
        c = redisConnectUnix(sock);

        if (ok(r != NULL && c != NULL && !c->err, "redis connections")) {
            test_records(r, c, ns);
            test_redis(ca, tdev, r, c, ns);
            test_log_closed(ca, tdev, r, c, ns);
        }
    }

    test_token(troot, tdev, r);

    if (c != NULL && !c->err) {
        /* leave the shared test Redis clean */
        char  pat[128], cursor[32] = "0";

        snprintf(pat, sizeof(pat), "%s*", ns);
        do {
            rep = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pat);
            if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
                freeReplyObject(rep);
                break;
            }
            snprintf(cursor, sizeof(cursor), "%s", rep->element[0]->str);
            for (size_t i = 0; i < rep->element[1]->elements; i++) {
                freeReplyObject(redisCommand(c, "DEL %s",
                                rep->element[1]->element[i]->str));
            }
            freeReplyObject(rep);
        } while (strcmp(cursor, "0") != 0);
    }

    if (c != NULL) {
        redisFree(c);
    }
    pki_redis_free(r);
    pki_ca_free(ca);
    pki_key_free(key);
    pki_template_free(troot);
    pki_template_free(tdev);

    snprintf(path, sizeof(path), "rm -rf %s", dir);
    if (system(path) != 0) {
        diag("cleanup of %s failed", dir);
    }

    return done_testing();
}
