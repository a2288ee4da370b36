/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests for core/admin.c: certificates issued by a file-key CA into a
 * running redis-server, then revoked, read and listed through
 * pki_admin_handle.
 *   PKI_TEST_REDIS_SOCK  unix socket of the server (skip_all if unset)
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>
#include <hiredis.h>
#include <openssl/pem.h>

#include "pki.h"
#include "test/unit.h"
#include "test/fixture.h"


static char               dir[64];
static char               ns[64];
static pki_admin_conf_t   conf;
static pki_key_t         *keys[2];
static int                nkeys;


static X509_NAME *
cn(const char *s)
{
    X509_NAME  *n;

    n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                               (const unsigned char *) s, -1, -1, 0);
    return n;
}


static pki_ca_t *
make_ca(const char *name, pki_template_t *tca, pki_template_t *tdev)
{
    EVP_PKEY      *pk;
    pki_key_t     *key;
    X509          *x;
    X509_NAME     *n;
    pki_ca_t      *ca;
    pki_result_t   res;
    FILE          *f;
    const char    *argv[1];
    char           path[256], subj[64];

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    snprintf(path, sizeof(path), "%s.key", name);
    key = fx_key_file(dir, path, pk);
    EVP_PKEY_free(pk);
    if (nkeys < 2) {
        keys[nkeys++] = key;
    }

    snprintf(subj, sizeof(subj), "Admin Test %s", name);
    n = cn(subj);
    pki_result_init(&res);
    x = NULL;
    if (pki_selfsign(key, tca, n, &x, &res) != PKI_OK) {
        diag("selfsign: %s", res.detail);
    }
    X509_NAME_free(n);

    snprintf(path, sizeof(path), "%s/%s.pem", dir, name);
    f = fopen(path, "w");
    PEM_write_X509(f, x);
    fclose(f);
    X509_free(x);

    ca = pki_ca_new(name);
    pki_result_init(&res);
    argv[0] = path;
    pki_ca_set(ca, "certificate", 1, argv, &res);
    pki_ca_set_key(ca, key, &res);
    pki_ca_add_template(ca, tdev, &res);
    if (pki_ca_finish(ca, &res) != PKI_OK) {
        diag("CA %s: %s %s", name, res.detail, res.log);
    }

    return ca;
}


/* Issues a certificate; its serial in hex into serial. */
static int
issue(pki_ca_t *ca, pki_template_t *t, const char *name, char serial[41])
{
    EVP_PKEY         *pk;
    X509             *x;
    pki_request_t     req;
    pki_result_t      res;
    pki_issue_ctx_t   ictx = { "est", "tester", "127.0.0.1", NULL, NULL };
    pki_status_t      st;

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    memset(&req, 0, sizeof(req));
    req.subject = cn(name);
    req.pubkey = pk;

    pki_result_init(&res);
    x = NULL;
    st = pki_issue(ca, t, conf.redis, &req, &ictx, &x, &res);
    X509_NAME_free(req.subject);
    EVP_PKEY_free(pk);

    if (st != PKI_OK) {
        diag("issue: %s %s", res.detail, res.log);
        return 0;
    }

    pki_serial_to_hex(X509_get0_serialNumber(x), serial);
    X509_free(x);
    return 1;
}


static void test_same_serial(const char *sock, pki_ca_t *one,
    pki_template_t *t);


/* Runs one request; returns the parsed body (caller deletes). */
static cJSON *
call(const char *method, const char *path, const char *query,
    const char *body, int *status)
{
    pki_admin_req_t   req;
    pki_admin_resp_t  resp;
    cJSON            *j;

    memset(&req, 0, sizeof(req));
    req.method = method;
    req.path = path;
    req.path_len = strlen(path);
    req.query = query;
    req.query_len = query != NULL ? strlen(query) : 0;
    req.body = (const unsigned char *) body;
    req.body_len = body != NULL ? strlen(body) : 0;
    req.identity = "admin";
    req.client = "127.0.0.1";

    pki_admin_handle(&conf, &req, &resp);
    *status = resp.http_status;

    j = NULL;
    if (resp.body != NULL) {
        j = cJSON_ParseWithLength((const char *) resp.body, resp.body_len);
    }

    if (j == NULL || resp.content_type == NULL
        || strcmp(resp.content_type, "application/json") != 0)
    {
        diag("bad answer %d: %.*s", resp.http_status, (int) resp.body_len,
             resp.body != NULL ? (char *) resp.body : "");
    }

    pki_admin_resp_free(&resp);
    return j;
}



static const char *
jstr(cJSON *j, const char *name)
{
    cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(j, name);
    return cJSON_IsString(v) ? v->valuestring : "";
}


/* The records that every page of GET certificates?QUERY lists, through
 * every CA; -1 when a page fails. */
static int
count_all(const char *query)
{
    int     st, count, pages;
    char    q[512], cursor[128];
    cJSON  *j;

    strcpy(cursor, "0");
    count = 0;

    for (pages = 0; pages < 1000; pages++) {
        snprintf(q, sizeof(q), "%s&cursor=%s", query, cursor);
        j = call("GET", "certificates", q, NULL, &st);
        if (st != 200) {
            cJSON_Delete(j);
            return -1;
        }
        count += cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j,
                                    "certificates"));
        snprintf(cursor, sizeof(cursor), "%s", jstr(j, "next_cursor"));
        cJSON_Delete(j);
        if (strcmp(cursor, "0") == 0) {
            return count;
        }
    }

    return -1;
}


static void
revoke_expect(const char *body, int want, const char *name)
{
    cJSON  *j;
    int     st;

    j = call("POST", "revoke", NULL, body, &st);
    ok(st == want && (want == 200 || jstr(j, "error")[0] != '\0'),
       "%s: %d (want %d) %s", name, st, want, jstr(j, "error"));
    cJSON_Delete(j);
}


/* The last revocation event (the transaction log's entry). */
static char  ev_op[32], ev_reason[80];


static void
rev_sink(void *arg, const pki_event_t *ev)
{
    (void) arg;

    if (ev->type == PKI_EV_REVOKE) {
        snprintf(ev_op, sizeof(ev_op), "%s",
                 ev->operation ? ev->operation : "");
        snprintf(ev_reason, sizeof(ev_reason), "%s",
                 ev->reason ? ev->reason : "");
    }
}


/* Events of the transaction log for disabled EAB keys. */
static int  eab_disables;


static void
eab_sink(void *arg, const pki_event_t *ev)
{
    (void) arg;

    if (ev->operation != NULL
        && strcmp(ev->operation, "acme-eab-disable") == 0)
    {
        eab_disables++;
    }
}


/* The requester of the last request event. */
static char  ev_requester[80];


static void
req_sink(void *arg, const pki_event_t *ev)
{
    (void) arg;

    if (ev->type == PKI_EV_REQUEST) {
        snprintf(ev_requester, sizeof(ev_requester), "%s",
                 ev->requester ? ev->requester : "");
    }
}


/* The operation and subject of the last admin request event. */
static char  acct_op[40], acct_subject[80];


static void
acct_sink(void *arg, const pki_event_t *ev)
{
    (void) arg;

    if (ev->type == PKI_EV_REQUEST && ev->operation != NULL) {
        snprintf(acct_op, sizeof(acct_op), "%s", ev->operation);
        snprintf(acct_subject, sizeof(acct_subject), "%s",
                 ev->subject ? ev->subject : "");
    }
}


/* POST revoke of serial with reason; the answer (caller deletes). */
static cJSON *
revoke_as(const char *serial, const char *reason, int *status)
{
    char  body[160];

    snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":\"%s\"}",
             serial, reason);

    return call("POST", "revoke", NULL, body, status);
}


static void
lower_pad(const char *in, char *out, size_t size)
{
    size_t  i;

    snprintf(out, size, "0000%s", in);
    for (i = 0; out[i] != '\0'; i++) {
        if (out[i] >= 'A' && out[i] <= 'F') {
            out[i] = (char) (out[i] - 'A' + 'a');
        }
    }
}


/* A counter of the server's INFO stats, -1 when it cannot be read. */
static long long
info_stat(redisContext *c, const char *name)
{
    long long    n;
    const char  *p;
    redisReply  *rep;

    n = -1;
    rep = redisCommand(c, "INFO stats");
    if (rep != NULL && rep->type == REDIS_REPLY_STRING) {
        p = strstr(rep->str, name);
        if (p != NULL && p[strlen(name)] == ':') {
            n = atoll(p + strlen(name) + 1);
        }
    }
    freeReplyObject(rep);

    return n;
}


/*
 * GET acme/eab reads every key's fields: it used to cost one round trip
 * per key (an HGETALL each, up to 10,000 in a pool thread); now a few
 * pipelines.  Redis counts the reads of its clients' sockets
 * (total_reads_processed): one per round trip, while a pipeline of 300
 * short commands arrives in a read or two.  The answer stays what it was:
 * {"kid", "status", "created", "account"} per key, never the HMAC key.
 */
#define EAB_KEYS  300

static void
test_eab_list(const char *sock)
{
    int            st, seen, bad, i;
    long long      r0, r1, c0, c1;
    char           kids[EAB_KEYS][32], q[128], set[96];
    cJSON         *j, *arr, *it;
    redisContext  *c;
    redisReply    *rep;

    c = redisConnectUnix(sock);
    if (!ok(c != NULL && c->err == 0, "eab list: a connection of its own")) {
        return;
    }

    bad = 0;
    for (i = 0; i < EAB_KEYS; i++) {
        j = call("POST", "acme/eab", NULL, NULL, &st);
        bad += st != 201 || strlen(jstr(j, "kid")) >= sizeof(kids[0])
               || strlen(jstr(j, "hmac_key")) != 86;
        snprintf(kids[i], sizeof(kids[i]), "%s", jstr(j, "kid"));
        cJSON_Delete(j);
    }
    ok(bad == 0, "eab list: %d keys made (%d failed)", EAB_KEYS, bad);

    snprintf(q, sizeof(q), "acme/eab/%s", kids[7]);
    eab_disables = 0;
    pki_event_set_sink(eab_sink, NULL);
    j = call("DELETE", q, NULL, NULL, &st);
    ok(st == 200 && eab_disables == 1, "  one disabled, audited (%d, %d)",
       st, eab_disables);
    cJSON_Delete(j);
    /* again: the same answer (safe to retry), no second entry */
    j = call("DELETE", q, NULL, NULL, &st);
    ok(st == 200 && strcmp(jstr(j, "status"), "disabled") == 0
       && eab_disables == 1, "  disabled again: 200, nothing more in the "
       "transaction log (%d, %d)", st, eab_disables);
    pki_event_set_sink(NULL, NULL);
    cJSON_Delete(j);

    /* one bound to an account; a kid whose hash is gone; a member that is
     * no kid (left out) */
    rep = redisCommand(c, "HSET %sacme:eab:%s account acct42", ns, kids[9]);
    freeReplyObject(rep);
    snprintf(set, sizeof(set), "%sacme:eabs", ns);
    rep = redisCommand(c, "SADD %s gonekid not/a/kid", set);
    freeReplyObject(rep);

    c0 = info_stat(c, "total_commands_processed");
    r0 = info_stat(c, "total_reads_processed");
    j = call("GET", "acme/eab", NULL, NULL, &st);
    r1 = info_stat(c, "total_reads_processed");
    c1 = info_stat(c, "total_commands_processed");

    arr = cJSON_GetObjectItemCaseSensitive(j, "keys");
    ok(st == 200 && cJSON_GetArraySize(arr) == EAB_KEYS + 1,
       "eab list: 200, every key and the gone one (%d, %d)", st,
       cJSON_GetArraySize(arr));

    /* round trips: the INFO after the listing is one read of its own;
     * three INFOs count as commands */
    if (r0 < 0 || r1 < 0) {
        ok(1, "  # SKIP this Redis counts no reads");
    } else {
        ok(r1 - r0 - 1 <= 20, "  in a few round trips: %lld socket reads "
           "for %lld commands (one per key: %d and more)", r1 - r0 - 1,
           c1 - c0 - 3, EAB_KEYS);
    }

    seen = 0;
    bad = 0;
    cJSON_ArrayForEach(it, arr) {
        const char  *kid = jstr(it, "kid");

        if (strcmp(kid, "gonekid") == 0) {
            bad += cJSON_GetArraySize(it) != 1;
            continue;
        }

        for (i = 0; i < EAB_KEYS && strcmp(kids[i], kid) != 0; i++) {
            /* find it */
        }
        if (i == EAB_KEYS) {
            bad++;
            continue;
        }
        seen++;

        bad += strcmp(jstr(it, "status"), i == 7 ? "disabled" : "active")
               != 0;
        bad += strlen(jstr(it, "created")) != 20
               || jstr(it, "created")[19] != 'Z';
        bad += strcmp(jstr(it, "account"), i == 9 ? "acct42" : "") != 0;
        bad += !cJSON_IsBool(cJSON_GetObjectItem(it, "bound"))
               || cJSON_IsTrue(cJSON_GetObjectItem(it, "bound")) != (i == 9);
        bad += cJSON_GetArraySize(it) != (i == 9 ? 5 : 4);
    }
    ok(seen == EAB_KEYS && bad == 0, "  each key once, as before: kid, "
       "status, created (RFC 3339), its account, bound (true with an "
       "account) and nothing else (%d seen, %d bad)",
       seen, bad);
    cJSON_Delete(j);

    /* the answer holding the key asks the server to wipe its copies */
    {
        pki_admin_req_t   req;
        pki_admin_resp_t  resp;
        char              kid[32], key[100];

        memset(&req, 0, sizeof(req));
        req.method = "POST";
        req.path = "acme/eab";
        req.path_len = 8;
        req.identity = "admin";
        pki_admin_handle(&conf, &req, &resp);
        ok(resp.http_status == 201 && resp.secret
           && resp.body_len == strlen((char *) resp.body)
           && sscanf((char *) resp.body, "{\"kid\":\"%31[A-Za-z0-9_-]\","
                     "\"hmac_key\":\"%99[A-Za-z0-9_-]\"}", kid, key) == 2
           && strlen(key) == 86 && resp.body[resp.body_len - 1] == '}',
           "eab: a new key, marked secret: %.*s...", 30,
           (char *) resp.body);
        pki_admin_resp_free(&resp);

        req.method = "GET";
        pki_admin_handle(&conf, &req, &resp);
        ok(resp.http_status == 200 && !resp.secret, "  the list is not");
        pki_admin_resp_free(&resp);
    }

    redisFree(c);
}


/* Calls of EVAL so far (INFO commandstats), -1 when it cannot be read. */
static long long
eval_calls(redisContext *c)
{
    long long    n;
    const char  *p;
    redisReply  *rep;

    n = -1;
    rep = redisCommand(c, "INFO commandstats");
    if (rep != NULL && rep->type == REDIS_REPLY_STRING) {
        p = strstr(rep->str, "cmdstat_eval:calls=");
        n = p != NULL ? atoll(p + 19) : 0;
    }
    freeReplyObject(rep);

    return n;
}


/* Pages through GET certificates with query q (without cursor=) until the
 * cursor is "0"; counts the serials of want[] seen (each once), the
 * others, and the requests.  first_n and first_cursor: the first answer. */
static int
list_all(const char *q, char want[][41], int nwant, int *seen, int *others,
    int *first_n, char *first_cursor, size_t size)
{
    int     st, req, i, hit[64];
    char    query[256], cursor[128];
    cJSON  *j, *arr, *it;

    memset(hit, 0, sizeof(hit));
    *others = 0;
    strcpy(cursor, "0");

    for (req = 1; req <= 200; req++) {
        snprintf(query, sizeof(query), "%s&cursor=%s", q, cursor);
        j = call("GET", "certificates", query, NULL, &st);
        if (st != 200) {
            diag("page: %d", st);
            cJSON_Delete(j);
            break;
        }

        arr = cJSON_GetObjectItemCaseSensitive(j, "certificates");
        if (req == 1) {
            *first_n = cJSON_GetArraySize(arr);
            snprintf(first_cursor, size, "%s", jstr(j, "next_cursor"));
        }

        cJSON_ArrayForEach(it, arr) {
            for (i = 0; i < nwant && i < 64; i++) {
                if (strcmp(want[i], jstr(it, "serial")) == 0) {
                    hit[i]++;
                    break;
                }
            }
            *others += i == nwant;
        }

        snprintf(cursor, sizeof(cursor), "%s", jstr(j, "next_cursor"));
        cJSON_Delete(j);

        if (strcmp(cursor, "0") == 0) {
            break;
        }
    }

    *seen = 0;
    for (i = 0; i < nwant && i < 64; i++) {
        *seen += hit[i] == 1;
    }

    return req;
}


/*
 * Members of a CA's expiry index that are no serials of ours (another
 * program's data, a hand-made entry, a serial not in canonical form): a
 * whole page of them used to end the listing there (next_cursor "0", or
 * the next CA), hiding every certificate after them.  Now such a page is
 * passed over, up to 10 index pages a request, and a request that read
 * its 10 returns what it has with a cursor to go on.  Pages of members
 * that share one score (the cursor after them counts its way into that
 * score), scores that are no whole seconds, and a tail of foreign members
 * after the certificates.
 */
static void
test_list_foreign(const char *sock)
{
    int            st, n, nwant, seen, others, first_n, reqs, i;
    long long      e0, e1;
    char           want[64][41], key[128], m[32], sc[32], cur[128];
    cJSON         *j, *arr, *it;
    redisContext  *c;
    redisReply    *rep;

    static const char *const  odd[] = {
        "00", "abcd", "0A1B", "-1", "1A:2B", "", "G1"
    };

    c = redisConnectUnix(sock);
    if (!ok(c != NULL && c->err == 0, "foreign: a connection of its own")) {
        return;
    }

    /* CA two's certificates, read before the foreign data comes */
    j = call("GET", "certificates", "ca=two&limit=1000", NULL, &st);
    arr = cJSON_GetObjectItemCaseSensitive(j, "certificates");
    nwant = 0;
    cJSON_ArrayForEach(it, arr) {
        if (nwant < 64) {
            snprintf(want[nwant++], sizeof(want[0]), "%s",
                     jstr(it, "serial"));
        }
    }
    ok(st == 200 && nwant >= 7 && strcmp(jstr(j, "next_cursor"), "0") == 0,
       "foreign: CA two has %d certificates, one page", nwant);
    cJSON_Delete(j);

    snprintf(key, sizeof(key), "%s{ca:two}:expiry", ns);

    /* 270 members before every certificate, 50 after them */
    for (i = 0; i < 120; i++) {
        snprintf(m, sizeof(m), "foreign:%d", i);
        snprintf(sc, sizeof(sc), "%d", 1000 + i);
        rep = redisCommand(c, "ZADD %s %s %s", key, sc, m);
        freeReplyObject(rep);
    }
    for (i = 0; i < 143; i++) {
        snprintf(m, sizeof(m), "same:%03d", i);
        rep = redisCommand(c, "ZADD %s 5000 %s", key, m);
        freeReplyObject(rep);
    }
    for (i = 0; i < 7; i++) {
        rep = redisCommand(c, "ZADD %s 6000.5 %s", key, odd[i]);
        freeReplyObject(rep);
    }
    for (i = 0; i < 50; i++) {
        snprintf(m, sizeof(m), "tail:%d", i);
        rep = redisCommand(c, "ZADD %s +inf %s", key, m);
        freeReplyObject(rep);
    }
    rep = redisCommand(c, "ZCARD %s", key);
    ok(rep != NULL && rep->type == REDIS_REPLY_INTEGER
       && rep->integer == nwant + 320, "  320 foreign members added");
    freeReplyObject(rep);

    /* one request: three index pages of 100 to the first certificates */
    e0 = eval_calls(c);
    j = call("GET", "certificates", "ca=two&limit=100", NULL, &st);
    e1 = eval_calls(c);
    arr = cJSON_GetObjectItemCaseSensitive(j, "certificates");
    n = cJSON_GetArraySize(arr);
    ok(st == 200 && n == nwant, "limit=100: the certificates after 270 "
       "foreign members (%d of %d), next_cursor %s", n, nwant,
       jstr(j, "next_cursor"));
    ok(e0 < 0 || e1 - e0 == 3, "  3 index pages read (%lld scripts)",
       e1 - e0);
    cJSON_Delete(j);

    /* pages of 10: at most 10 index pages a request */
    e0 = eval_calls(c);
    j = call("GET", "certificates", "ca=two&limit=10", NULL, &st);
    e1 = eval_calls(c);
    arr = cJSON_GetObjectItemCaseSensitive(j, "certificates");
    snprintf(cur, sizeof(cur), "%s", jstr(j, "next_cursor"));
    ok(st == 200 && cJSON_GetArraySize(arr) == 0 && strcmp(cur, "0") != 0,
       "limit=10: the first request returns nothing yet, with a cursor "
       "(%s)", cur);
    ok(e0 < 0 || e1 - e0 == 10, "  after 10 index pages (%lld scripts)",
       e1 - e0);
    cJSON_Delete(j);

    reqs = list_all("ca=two&limit=10", want, nwant, &seen, &others,
                    &first_n, cur, sizeof(cur));
    ok(seen == nwant && others == 0, "limit=10: every certificate once "
       "(%d of %d, %d others) in %d requests", seen, nwant, others, reqs);
    ok(reqs >= 4 && reqs < 200, "  and the listing ends (%d requests)",
       reqs);

    /* a page size that ends pages inside the 143 members of score 5000 */
    reqs = list_all("ca=two&limit=7", want, nwant, &seen, &others,
                    &first_n, cur, sizeof(cur));
    ok(seen == nwant && others == 0, "limit=7: every certificate once "
       "(%d of %d, %d others) in %d requests", seen, nwant, others, reqs);

    reqs = list_all("ca=two&limit=1", want, nwant, &seen, &others,
                    &first_n, cur, sizeof(cur));
    ok(seen == nwant && others == 0, "limit=1: every certificate once "
       "(%d of %d, %d others) in %d requests", seen, nwant, others, reqs);

    /* without ca=: CA one's certificates first, then CA two's */
    reqs = list_all("limit=50", want, nwant, &seen, &others, &first_n,
                    cur, sizeof(cur));
    ok(seen == nwant && others > 0, "all CAs, limit=50: CA two's "
       "certificates once each, and CA one's (%d of %d, %d others)",
       seen, nwant, others);

    snprintf(key, sizeof(key), "%s{ca:two}:expiry", ns);
    rep = redisCommand(c, "ZREMRANGEBYSCORE %s -inf 6000.5", key);
    freeReplyObject(rep);
    rep = redisCommand(c, "ZREMRANGEBYSCORE %s +inf +inf", key);
    freeReplyObject(rep);

    redisFree(c);
}


int
main(void)
{
    const char        *sock;
    pki_redis_conf_t   rconf;
    pki_result_t       res;
    pki_template_t    *tca, *tdev;
    pki_ca_t          *cas[2];
    cJSON             *j, *arr, *it;
    int                st, i, found, pages, count, n;
    char               s1[41], s2[41], s3[41], other[41], lower[64];
    char               body[512], q[256], cursor[64];
    pki_admin_req_t    req;
    pki_admin_resp_t   resp;

    static const char *const ca_lines[] = {
        "subject CN copy", "basic_constraints ca:true", "validity 3650d",
        NULL
    };
    static const char *const dev_lines[] = {
        "key_types ec:P-256", "subject CN required", "validity 30d", NULL
    };

    sock = getenv("PKI_TEST_REDIS_SOCK");
    if (sock == NULL || *sock == '\0') {
        skip_all("PKI_TEST_REDIS_SOCK not set");
    }

    pki_init();

    snprintf(dir, sizeof(dir), "/tmp/admintest.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        skip_all("mkdtemp failed");
    }

    snprintf(ns, sizeof(ns), "admintest%ld:", (long) getpid());
    memset(&rconf, 0, sizeof(rconf));
    rconf.unix_path = sock;
    rconf.ns = ns;
    pki_result_init(&res);
    conf.redis = pki_redis_new(&rconf, &res);
    if (!ok(conf.redis != NULL, "redis store")) {
        return done_testing();
    }

    tca = fx_template("ca", ca_lines);
    tdev = fx_template("device", dev_lines);
    cas[0] = make_ca("one", tca, tdev);
    cas[1] = make_ca("two", tca, tdev);
    conf.cas = cas;
    conf.ncas = 2;

    ok(issue(cas[0], tdev, "dev1", s1), "issued dev1 by CA one");
    ok(issue(cas[0], tdev, "dev2", s2), "issued dev2 by CA one");
    ok(issue(cas[1], tdev, "dev3", s3), "issued dev3 by CA two");

    /* a revocation for an unknown CA leaves no actor to the thread's
     * next event, which names no requester of its own */
    {
        pki_event_t   rev;
        pki_result_t  rres;

        snprintf(body, sizeof(body), "{\"serial\":\"01\",\"ca\":\"nope\"}");
        revoke_expect(body, 404, "revoke for an unknown CA: 404");

        pki_event_set_sink(req_sink, NULL);
        memset(&rev, 0, sizeof(rev));
        rev.type = PKI_EV_REQUEST;
        rev.status = PKI_UNAUTHORIZED;
        rev.protocol = "est";
        snprintf(ev_requester, sizeof(ev_requester), "unset");
        pki_result_init(&rres);
        (void) pki_event_emit(&rev, 0, &rres);
        pki_event_set_sink(NULL, NULL);
        ok(ev_requester[0] == '\0', "  the next event of the thread has "
           "no requester (\"%s\")", ev_requester);
    }

    /* revoke with lowercase + leading zeros, CA found by search */
    lower_pad(s1, lower, sizeof(lower));
    snprintf(body, sizeof(body), "{\"serial\": \"%s\", \"reason\": "
             "\"keyCompromise\", \"invalidity_date\": "
             "\"2026-01-02T03:04:05+01:00\"}", lower);
    j = call("POST", "revoke", NULL, body, &st);
    ok(st == 200, "revoke: 200 (%d)", st);
    ok(strcmp(jstr(j, "serial"), s1) == 0
       && strcmp(jstr(j, "status"), "revoked") == 0
       && strcmp(jstr(j, "reason"), "keyCompromise") == 0
       && strcmp(jstr(j, "ca"), "one") == 0
       && strcmp(jstr(j, "invalidity_date"), "2026-01-02T02:04:05Z") == 0
       && strcmp(jstr(j, "subject"), "CN=dev1") == 0
       && strcmp(jstr(j, "requester"), "tester") == 0
       && strcmp(jstr(j, "protocol"), "est") == 0
       && strcmp(jstr(j, "template"), "device") == 0
       && jstr(j, "revoked_at")[0] != '\0' && jstr(j, "der")[0] != '\0',
       "revoke answers the updated record");
    cJSON_Delete(j);

    /* a revoked certificate cannot change */
    snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":"
             "\"removeFromCRL\"}", s1);
    revoke_expect(body, 409, "un-revoke refused");
    snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":"
             "\"superseded\"}", s1);
    revoke_expect(body, 409, "second reason refused");

    /* GET the record, in another case */
    snprintf(q, sizeof(q), "certificates/%s", lower);
    j = call("GET", q, NULL, NULL, &st);
    ok(st == 200 && strcmp(jstr(j, "status"), "revoked") == 0
       && strcmp(jstr(j, "serial"), s1) == 0, "GET record (%d)", st);
    cJSON_Delete(j);
    snprintf(q, sizeof(q), "certificates/%s", s1);
    j = call("GET", q, "ca=two", NULL, &st);
    ok(st == 404, "GET record of the wrong CA: 404 (%d)", st);
    cJSON_Delete(j);

    /* hold, then release */
    snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":"
             "\"certificateHold\",\"ca\":\"one\"}", s2);
    j = call("POST", "revoke", NULL, body, &st);
    ok(st == 200 && strcmp(jstr(j, "reason"), "certificateHold") == 0,
       "hold (%d)", st);
    cJSON_Delete(j);

    j = call("GET", "certificates", "status=hold&ca=one&limit=1000", NULL,
             &st);
    arr = cJSON_GetObjectItemCaseSensitive(j, "certificates");
    found = 0;
    cJSON_ArrayForEach(it, arr) {
        found += strcmp(jstr(it, "serial"), s2) == 0;
        found += 100 * (strcmp(jstr(it, "serial"), s1) == 0);
    }
    ok(st == 200 && found == 1, "list status=hold has only the hold (%d)",
       found);
    cJSON_Delete(j);

    snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":"
             "\"removeFromCRL\"}", s2);
    j = call("POST", "revoke", NULL, body, &st);
    ok(st == 200 && strcmp(jstr(j, "status"), "good") == 0
       && cJSON_GetObjectItemCaseSensitive(j, "reason") == NULL,
       "removeFromCRL releases the hold (%d)", st);
    cJSON_Delete(j);
    revoke_expect(body, 409, "removeFromCRL on a good certificate");
    snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":"
             "\"removeFromCRL\",\"invalidity_date\":"
             "\"2026-01-01T00:00:00Z\"}", s2);
    revoke_expect(body, 400, "removeFromCRL with an invalidity_date "
                  "(it was dropped unsaid)");

    /* errors */
    /* a serial never issued: s3 with its first octet changed (never
     * equal to s3 itself, whatever s3 starts with) */
    snprintf(other, sizeof(other), "%s%s",
             strncmp(s3, "7F", 2) == 0 ? "7E" : "7F", s3 + 2);
    snprintf(body, sizeof(body), "{\"serial\":\"%s\"}", other);
    revoke_expect(body, 404, "unknown serial");
    revoke_expect("{\"serial\":", 400, "bad JSON");
    revoke_expect("[1,2]", 400, "not an object");
    revoke_expect("", 400, "empty body");
    revoke_expect("{\"serial\":\"01\"} x", 400, "trailing garbage");
    revoke_expect("{\"reason\":\"keyCompromise\"}", 400, "no serial");
    revoke_expect("{\"serial\":12}", 400, "serial not a string");
    revoke_expect("{\"serial\":\"XYZ\"}", 400, "bad serial");
    revoke_expect("{\"serial\":\"00\"}", 400, "zero serial");
    snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":\"bogus\"}",
             s3);
    revoke_expect(body, 400, "unknown reason");
    snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":\"7\"}", s3);
    revoke_expect(body, 400, "numeric reason");
    snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"invalidity_date\":"
             "\"2026-02-30T00:00:00Z\"}", s3);
    revoke_expect(body, 400, "bad date");
    snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"invalidity_date\":"
             "\"2999-01-01T00:00:00Z\"}", s3);
    revoke_expect(body, 400, "future date");
    snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"invalidity_date\":"
             "\"1970-01-01T00:00:00Z\"}", s3);
    revoke_expect(body, 400, "the epoch as invalidity date (read as none)");
    snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"invalidity_date\":"
             "\"1969-12-31T23:59:59Z\"}", s3);
    revoke_expect(body, 400, "a date before the epoch");
    snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"ca\":\"nope\"}", s3);
    revoke_expect(body, 404, "unknown CA");
    snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"extra\":1}", s3);
    revoke_expect(body, 400, "unknown member");

    {
        char  *big = malloc(20000);

        memset(big, ' ', 19999);
        big[0] = '{';
        big[19997] = '}';
        big[19998] = '\0';
        revoke_expect(big, 413, "body over 16 KiB");
        memset(big, '[', 19999);
        big[16000] = '\0';
        revoke_expect(big, 400, "deep nesting");
        free(big);
    }

    j = call("GET", "revoke", NULL, NULL, &st);
    ok(st == 405, "GET revoke: 405 (%d)", st);
    cJSON_Delete(j);
    j = call("POST", "certificates", NULL, "{}", &st);
    ok(st == 405, "POST certificates: 405 (%d)", st);
    cJSON_Delete(j);
    j = call("GET", "nothing", NULL, NULL, &st);
    ok(st == 404, "unknown endpoint: 404 (%d)", st);
    cJSON_Delete(j);
    j = call("GET", "certificates/zz", NULL, NULL, &st);
    ok(st == 400, "GET bad serial: 400 (%d)", st);
    cJSON_Delete(j);
    j = call("GET", "certificates", "status=weird", NULL, &st);
    ok(st == 400, "bad status filter: 400 (%d)", st);
    cJSON_Delete(j);
    j = call("GET", "certificates", "cursor=abc", NULL, &st);
    ok(st == 400, "bad cursor: 400 (%d)", st);
    cJSON_Delete(j);
    j = call("GET", "certificates", "cursor=0.17", NULL, &st);
    ok(st == 400, "an older version's SCAN cursor: 400 (%d)", st);
    cJSON_Delete(j);
    j = call("GET", "certificates", "cursor=1.0&limit=1", NULL, &st);
    ok(st == 200, "\"I.0\" still starts CA I (%d)", st);
    cJSON_Delete(j);
    j = call("GET", "certificates", "expires_before=yesterday", NULL, &st);
    ok(st == 400, "bad expires_before: 400 (%d)", st);
    cJSON_Delete(j);

    /* no identity */
    memset(&req, 0, sizeof(req));
    req.method = "GET";
    req.path = "certificates";
    req.path_len = 12;
    pki_admin_handle(&conf, &req, &resp);
    ok(resp.http_status == 403, "no identity: 403 (%d)", resp.http_status);
    pki_admin_resp_free(&resp);

    /* paging through both CAs with filters */
    for (i = 0; i < 6; i++) {
        issue(cas[1], tdev, "bulk", s3);
    }
    strcpy(cursor, "0");
    count = 0;
    found = 0;
    for (pages = 0; pages < 100; pages++) {
        snprintf(q, sizeof(q), "limit=2&subject=BULK&cursor=%s", cursor);
        j = call("GET", "certificates", q, NULL, &st);
        if (st != 200) {
            diag("page: %d", st);
            cJSON_Delete(j);
            break;
        }
        arr = cJSON_GetObjectItemCaseSensitive(j, "certificates");
        cJSON_ArrayForEach(it, arr) {
            count++;
            found += strcmp(jstr(it, "subject"), "CN=bulk") != 0;
            found += jstr(it, "der")[0] != '\0';
        }
        snprintf(cursor, sizeof(cursor), "%s", jstr(j, "next_cursor"));
        cJSON_Delete(j);
        if (strcmp(cursor, "0") == 0) {
            break;
        }
    }
    ok(count == 6 && found == 0 && strcmp(cursor, "0") == 0,
       "paged list across CAs finds the 6 matching records (%d, %d pages)",
       count, pages + 1);

    j = call("GET", "certificates", "expires_before=2000-01-01T00:00:00Z",
             NULL, &st);
    arr = cJSON_GetObjectItemCaseSensitive(j, "certificates");
    ok(st == 200 && cJSON_GetArraySize(arr) == 0,
       "expires_before filters");
    cJSON_Delete(j);

    /* the expiry index is in notAfter order: a bound before every
     * certificate ends the listing on the first page, not after a page
     * per certificate */
    j = call("GET", "certificates",
             "limit=1&expires_before=2000-01-01T00:00:00Z", NULL, &st);
    arr = cJSON_GetObjectItemCaseSensitive(j, "certificates");
    ok(st == 200 && cJSON_GetArraySize(arr) == 0
       && strcmp(jstr(j, "next_cursor"), "0") == 0,
       "expires_before before every notAfter: done on the first page "
       "(next_cursor \"%s\")", jstr(j, "next_cursor"));
    cJSON_Delete(j);

    /* subjects are kept as RFC 2253 text (M\C3\BCller, Acme\, Inc): the
     * search finds them by the plain text too */
    ok(issue(cas[1], tdev, "M\xc3\xbcller-dev", s3)
       && issue(cas[1], tdev, "Acme, Inc", s3), "issued CN=M\\C3\\BCller-dev "
       "and CN=Acme\\, Inc");
    n = count_all("subject=M%C3%BCller");
    ok(n == 1, "subject=M\xc3\xbcller finds it (%d)", n);
    n = count_all("subject=acme%2C%20inc");
    ok(n == 1, "subject=acme, inc finds it (%d)", n);
    n = count_all("subject=Acme%5C%2C");
    ok(n == 1, "so does the escaped text, Acme\\, (%d)", n);

    /* the epoch is a date like any other, not "no filter" */
    j = call("GET", "certificates", "expires_before=1970-01-01T00:00:00Z",
             NULL, &st);
    arr = cJSON_GetObjectItemCaseSensitive(j, "certificates");
    ok(st == 200 && cJSON_GetArraySize(arr) == 0,
       "expires_before the epoch lists none (%d)", cJSON_GetArraySize(arr));
    cJSON_Delete(j);

    j = call("GET", "certificates", "status=revoked&ca=one", NULL, &st);
    arr = cJSON_GetObjectItemCaseSensitive(j, "certificates");
    ok(st == 200 && cJSON_GetArraySize(arr) == 1
       && strcmp(jstr(cJSON_GetArrayItem(arr, 0), "serial"), s1) == 0,
       "status=revoked lists the revoked one");
    cJSON_Delete(j);

    /* a planned revocation: recorded now, carried out when due */
    {
        char       s4[41], when[32];
        time_t     at;
        unsigned   done;
        struct tm  tm;

        ok(issue(cas[0], tdev, "dev4", s4), "issued dev4 by CA one");
        at = time(NULL) + 7200;
        gmtime_r(&at, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);

        snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":"
                 "\"cessationOfOperation\",\"at\":\"%s\","
                 "\"invalidity_date\":\"2026-01-02T00:00:00Z\"}", s4, when);
        revoke_expect(body, 400, "planned with an invalidity date");
        snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":"
                 "\"certificateHold\",\"at\":\"%s\"}", s4, when);
        revoke_expect(body, 400, "planned hold");
        snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"at\":\"soon\"}",
                 s4);
        revoke_expect(body, 400, "planned at a bad time");
        snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":"
                 "\"superseded\",\"at\":\"%s\"}", s1, when);
        revoke_expect(body, 409, "planned for a revoked certificate");

        snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":"
                 "\"cessationOfOperation\",\"at\":\"%s\"}", s4, when);
        j = call("POST", "revoke", NULL, body, &st);
        ok(st == 200 && strcmp(jstr(j, "status"), "good") == 0
           && strcmp(jstr(j, "revocation_planned"), when) == 0
           && strcmp(jstr(j, "planned_reason"), "cessationOfOperation") == 0,
           "planned revocation: 200, still good, the plan in the record "
           "(%d %s)", st, jstr(j, "revocation_planned"));
        cJSON_Delete(j);

        pki_result_init(&res);
        ok(pki_record_revoke_due(conf.redis, "one", at - 1, 0, &done, &res)
           == PKI_OK && done == 0, "not due yet: nothing revoked");
        snprintf(q, sizeof(q), "certificates/%s", s4);
        j = call("GET", q, NULL, NULL, &st);
        ok(strcmp(jstr(j, "status"), "good") == 0, "still good");
        cJSON_Delete(j);

        ok(pki_record_revoke_due(conf.redis, "one", at, 0, &done, &res)
           == PKI_OK && done == 1, "due: revoked (%u)", done);
        j = call("GET", q, NULL, NULL, &st);
        ok(strcmp(jstr(j, "status"), "revoked") == 0
           && strcmp(jstr(j, "reason"), "cessationOfOperation") == 0
           && jstr(j, "revocation_planned")[0] == '\0',
           "the planned reason, and the plan is gone (%s %s)",
           jstr(j, "status"), jstr(j, "reason"));
        cJSON_Delete(j);
        ok(pki_record_revoke_due(conf.redis, "one", at + 60, 0, &done, &res)
           == PKI_OK && done == 0, "carried out once");

        /* members of the plan that are no serial (damaged, or written by
         * hand), more than one pass reads, due before a real plan: they
         * are dropped, and the plan behind them is carried out */
        ok(issue(cas[0], tdev, "dev4b", s4), "issued dev4b by CA one");
        snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":"
                 "\"superseded\",\"at\":\"%s\"}", s4, when);
        revoke_expect(body, 200, "planned dev4b");
        {
            int            n;
            char           key[128];
            redisReply    *rep;
            pki_status_t   rst;
            redisContext  *c;

            c = redisConnectUnix(sock);
            snprintf(key, sizeof(key), "%s{ca:one}:revplan", ns);
            for (n = 0; n < 300; n++) {
                rep = redisCommand(c, "ZADD %s 1 junk%d", key, n);
                freeReplyObject(rep);
            }
            rep = redisCommand(c, "ZADD %s 2 %b", key, "x\0y", (size_t) 3);
            freeReplyObject(rep);

            pki_result_init(&res);
            ok(pki_record_revoke_due(conf.redis, "one", at, 0, &done, &res)
               == PKI_OK, "a pass over 301 members that are no serial");
            pki_result_init(&res);
            rst = pki_record_revoke_due(conf.redis, "one", at, 0, &done,
                                        &res);
            ok(rst == PKI_OK && done == 1, "the next pass carries out the "
               "plan behind them (%u)", done);
            rep = redisCommand(c, "ZCARD %s", key);
            ok(rep != NULL && rep->type == REDIS_REPLY_INTEGER
               && rep->integer == 0, "and the plan is empty (%lld)",
               rep != NULL ? rep->integer : -1);
            freeReplyObject(rep);
            redisFree(c);
        }
        snprintf(q, sizeof(q), "certificates/%s", s4);
        j = call("GET", q, NULL, NULL, &st);
        ok(strcmp(jstr(j, "status"), "revoked") == 0
           && strcmp(jstr(j, "reason"), "superseded") == 0,
           "dev4b revoked as planned (%s %s)", jstr(j, "status"),
           jstr(j, "reason"));
        cJSON_Delete(j);

        /* planned, then revoked by hand first: the plan is dropped */
        ok(issue(cas[0], tdev, "dev5", s4), "issued dev5 by CA one");
        snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"at\":\"%s\"}",
                 s4, when);
        revoke_expect(body, 200, "planned dev5");
        snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":"
                 "\"keyCompromise\"}", s4);
        revoke_expect(body, 200, "dev5 revoked by hand before");
        ok(pki_record_revoke_due(conf.redis, "one", at, 0, &done, &res)
           == PKI_OK && done == 0, "a plan of a revoked certificate is "
           "dropped");
        snprintf(q, sizeof(q), "certificates/%s", s4);
        j = call("GET", q, NULL, NULL, &st);
        ok(strcmp(jstr(j, "reason"), "keyCompromise") == 0,
           "its own reason stays (%s)", jstr(j, "reason"));
        cJSON_Delete(j);

        /* due, not carried out yet: shown as the revocation it is */
        ok(issue(cas[0], tdev, "dev6", s4), "issued dev6 by CA one");
        at = time(NULL) + 1;
        gmtime_r(&at, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":"
                 "\"superseded\",\"at\":\"%s\"}", s4, when);
        revoke_expect(body, 200, "planned dev6 a second ahead");
        while (time(NULL) < at) {
            usleep(50000);
        }
        snprintf(q, sizeof(q), "certificates/%s", s4);
        j = call("GET", q, NULL, NULL, &st);
        ok(strcmp(jstr(j, "status"), "revoked") == 0
           && strcmp(jstr(j, "reason"), "superseded") == 0
           && strcmp(jstr(j, "revoked_at"), when) == 0
           && jstr(j, "revocation_planned")[0] == '\0',
           "due, not carried out: revoked at the planned time (%s %s %s)",
           jstr(j, "status"), jstr(j, "reason"), jstr(j, "revoked_at"));
        cJSON_Delete(j);
        snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":"
                 "\"certificateHold\"}", s4);
        revoke_expect(body, 409, "a hold on a due plan: 409");

        /* a hold and its release keep a plan: dev7 released before its
         * time (good, the plan kept), dev8 after it (revoked as planned) */
        {
            char  s7[41], s8[41];

            ok(issue(cas[0], tdev, "dev7", s7)
               && issue(cas[0], tdev, "dev8", s8), "issued dev7, dev8");
            at = time(NULL) + 2;
            gmtime_r(&at, &tm);
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
            snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":"
                     "\"cessationOfOperation\",\"at\":\"%s\"}", s7, when);
            revoke_expect(body, 200, "planned dev7 2 s ahead");
            snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":"
                     "\"cessationOfOperation\",\"at\":\"%s\"}", s8, when);
            revoke_expect(body, 200, "planned dev8 2 s ahead");

            j = revoke_as(s7, "certificateHold", &st);
            ok(st == 200 && strcmp(jstr(j, "reason"), "certificateHold") == 0
               && strcmp(jstr(j, "revocation_planned"), when) == 0,
               "dev7 held: the record shows the plan kept (%d %s)", st,
               jstr(j, "revocation_planned"));
            cJSON_Delete(j);
            j = revoke_as(s8, "certificateHold", &st);
            cJSON_Delete(j);

            j = revoke_as(s7, "removeFromCRL", &st);
            ok(st == 200 && strcmp(jstr(j, "status"), "good") == 0
               && strcmp(jstr(j, "revocation_planned"), when) == 0
               && strcmp(jstr(j, "planned_reason"), "cessationOfOperation")
                  == 0,
               "dev7 released before its time: good, with its plan (%d %s "
               "%s)", st, jstr(j, "status"), jstr(j, "revocation_planned"));
            cJSON_Delete(j);

            while (time(NULL) < at) {
                usleep(50000);
            }

            snprintf(q, sizeof(q), "certificates/%s", s7);
            j = call("GET", q, NULL, NULL, &st);
            ok(strcmp(jstr(j, "status"), "revoked") == 0
               && strcmp(jstr(j, "reason"), "cessationOfOperation") == 0
               && strcmp(jstr(j, "revoked_at"), when) == 0,
               "dev7 at its time: revoked as planned (%s %s)",
               jstr(j, "status"), jstr(j, "reason"));
            cJSON_Delete(j);

            ev_op[0] = '\0';
            pki_event_set_sink(rev_sink, NULL);
            j = revoke_as(s8, "removeFromCRL", &st);
            pki_event_set_sink(NULL, NULL);
            ok(st == 200 && strcmp(jstr(j, "status"), "revoked") == 0
               && strcmp(jstr(j, "reason"), "cessationOfOperation") == 0
               && strcmp(jstr(j, "revoked_at"), when) == 0
               && jstr(j, "revocation_planned")[0] == '\0',
               "dev8 released after its time: 200, revoked as planned, at "
               "the planned time (%d %s %s)", st, jstr(j, "status"),
               jstr(j, "reason"));
            cJSON_Delete(j);
            ok(strcmp(ev_op, "release") == 0
               && strcmp(ev_reason, "planned cessationOfOperation, due")
                  == 0,
               "  audited as what it did (%s, %s)", ev_op, ev_reason);

            pki_result_init(&res);
            ok(pki_record_revoke_due(conf.redis, "one", time(NULL), 0,
                                     &done, &res) == PKI_OK,
               "worker 0 passes");
            ok(done == 2, "  it carries out dev6's and dev7's plans, dev8's "
               "is done (%u)", done);
        }
    }

    /* The admin's revocation of an ACME account is audited like every
     * admin action: with a transaction log required and none open it is
     * refused (503) and the account stays as it was. */
    {
        int            status;
        char           key[160];
        cJSON         *j;
        redisContext  *c;
        redisReply    *rep;

        snprintf(key, sizeof(key), "%s{acme:gatetest}:acct", ns);
        c = redisConnectUnix(sock);
        rep = redisCommand(c, "SET %s %s", key,
                           "{\"status\":\"valid\",\"contact\":[]}");
        freeReplyObject(rep);

        pki_audit_set_required(1);
        j = call("POST", "acme/accounts/gatetest", NULL,
                 "{\"status\": \"revoked\"}", &status);
        pki_audit_set_required(0);
        ok(status == 503, "account revocation without the log: 503 (%d)",
           status);
        cJSON_Delete(j);

        rep = redisCommand(c, "GET %s", key);
        ok(rep != NULL && rep->type == REDIS_REPLY_STRING
           && strstr(rep->str, "\"valid\"") != NULL,
           "  the account unchanged: %s",
           rep != NULL && rep->type == REDIS_REPLY_STRING ? rep->str : "-");
        freeReplyObject(rep);
        redisFree(c);
    }

    /* An ACME state store (acme_redis) that cannot be told after the
     * account is revoked in the certificate store: 503, to be retried,
     * but the revocation is made and is in the transaction log; the
     * retry finds it done and changes nothing, so it used to have no
     * entry at all. */
    {
        int                status;
        char               key[160];
        cJSON             *j;
        redisContext      *c;
        redisReply        *rep;
        pki_redis_t       *state[1];
        pki_redis_conf_t   bad;

        snprintf(key, sizeof(key), "%s{acme:statelost}:acct", ns);
        c = redisConnectUnix(sock);
        rep = redisCommand(c, "SET %s %s", key,
                           "{\"status\":\"valid\",\"contact\":[]}");
        freeReplyObject(rep);

        memset(&bad, 0, sizeof(bad));
        bad.unix_path = "/nonexistent/redis.sock";
        bad.timeout_ms = 200;
        pki_result_init(&res);
        state[0] = pki_redis_new(&bad, &res);
        conf.acme_state = state;
        conf.nacme_state = 1;

        acct_op[0] = '\0';
        acct_subject[0] = '\0';
        pki_event_set_sink(acct_sink, NULL);
        j = call("POST", "acme/accounts/statelost", NULL,
                 "{\"status\": \"revoked\"}", &status);
        pki_event_set_sink(NULL, NULL);
        ok(status == 503, "account revocation, state store down: 503 (%d)",
           status);
        cJSON_Delete(j);

        rep = redisCommand(c, "GET %s", key);
        ok(rep != NULL && rep->type == REDIS_REPLY_STRING
           && strstr(rep->str, "\"revoked\"") != NULL,
           "  the account is revoked in the certificate store");
        freeReplyObject(rep);

        ok(strcmp(acct_op, "acme-account-revoke") == 0
           && strcmp(acct_subject, "statelost") == 0,
           "  and the revocation is audited (\"%s\" \"%s\")", acct_op,
           acct_subject);

        conf.acme_state = NULL;
        conf.nacme_state = 0;
        pki_redis_free(state[0]);

        acct_op[0] = '\0';
        pki_event_set_sink(acct_sink, NULL);
        j = call("POST", "acme/accounts/statelost", NULL,
                 "{\"status\": \"revoked\"}", &status);
        pki_event_set_sink(NULL, NULL);
        ok(status == 200 && acct_op[0] == '\0', "  the retry: 200, no "
           "second entry (%d \"%s\")", status, acct_op);
        cJSON_Delete(j);

        redisFree(c);
    }

    test_eab_list(sock);
    test_list_foreign(sock);
    test_same_serial(sock, cas[0], tdev);

    /* Redis down: 503 */
    {
        pki_redis_conf_t  bad;
        pki_redis_t      *keep = conf.redis;

        memset(&bad, 0, sizeof(bad));
        bad.unix_path = "/nonexistent/redis.sock";
        bad.timeout_ms = 200;
        pki_result_init(&res);
        conf.redis = pki_redis_new(&bad, &res);
        snprintf(body, sizeof(body), "{\"serial\":\"%s\"}", s3);
        revoke_expect(body, 503, "Redis unreachable");
        pki_redis_free(conf.redis);
        conf.redis = keep;
    }

    /* clean up */
    {
        redisContext  *c;
        redisReply    *rep;
        char           script[] = "for _, k in ipairs(redis.call('KEYS', "
                                  "ARGV[1])) do redis.call('DEL', k) end "
                                  "return 0";
        char           pat[80];
        const char    *argv[4];
        size_t         lens[4];

        c = redisConnectUnix(sock);
        snprintf(pat, sizeof(pat), "%s*", ns);
        argv[0] = "EVAL";
        argv[1] = script;
        argv[2] = "0";
        argv[3] = pat;
        for (i = 0; i < 4; i++) {
            lens[i] = strlen(argv[i]);
        }
        rep = redisCommandArgv(c, 4, argv, lens);
        freeReplyObject(rep);
        redisFree(c);
    }

    pki_ca_free(cas[0]);
    pki_ca_free(cas[1]);
    for (i = 0; i < nkeys; i++) {
        pki_key_free(keys[i]);
    }
    pki_template_free(tca);
    pki_template_free(tdev);
    pki_redis_free(conf.redis);

    {
        char  cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0) {
            diag("cleanup failed");
        }
    }

    return done_testing();
}


/* Serials are unique per CA only: a serial both CAs hold (CA one's record
 * copied to CA two) is revoked or read only where "ca" names the CA; a
 * request without it gets 409 and changes neither (it acted on the first
 * CA in the list). */
static void
test_same_serial(const char *sock, pki_ca_t *one, pki_template_t *t)
{
    int            st;
    cJSON         *j;
    redisContext  *c;
    redisReply    *rep;
    char           serial[41], canon[41], body[160], path[80];
    char           from[160], to[160];

    if (!ok(issue(one, t, "twin", serial), "same serial: issued by CA one")
        || !pki_serial_normalize(serial, canon))
    {
        return;
    }

    c = redisConnectUnix(sock);
    snprintf(from, sizeof(from), "%s{ca:one}:cert:%s", ns, canon);
    snprintf(to, sizeof(to), "%s{ca:two}:cert:%s", ns, canon);
    rep = redisCommand(c, "COPY %s %s", from, to);
    ok(rep != NULL && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1,
       "  and held by CA two too");
    freeReplyObject(rep);

    snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":"
             "\"keyCompromise\"}", serial);
    j = call("POST", "revoke", NULL, body, &st);
    ok(st == 409 && strstr(jstr(j, "error"), "name one with") != NULL,
       "  a revocation without \"ca\": 409 (%d %s)", st, jstr(j, "error"));
    cJSON_Delete(j);

    rep = redisCommand(c, "HGET %s status", from);
    ok(rep != NULL && rep->type == REDIS_REPLY_STRING
       && strcmp(rep->str, "good") == 0,
       "  CA one's record is still good (%s)",
       rep != NULL && rep->type == REDIS_REPLY_STRING ? rep->str : "-");
    freeReplyObject(rep);

    snprintf(path, sizeof(path), "certificates/%s", serial);
    j = call("GET", path, NULL, NULL, &st);
    ok(st == 409, "  a read without ?ca=: 409 (%d)", st);
    cJSON_Delete(j);
    j = call("GET", path, "ca=two", NULL, &st);
    ok(st == 200 && strcmp(jstr(j, "status"), "good") == 0,
       "  with ?ca=two: 200 (%d)", st);
    cJSON_Delete(j);

    snprintf(body, sizeof(body), "{\"serial\":\"%s\",\"reason\":"
             "\"keyCompromise\",\"ca\":\"one\"}", serial);
    j = call("POST", "revoke", NULL, body, &st);
    ok(st == 200 && strcmp(jstr(j, "status"), "revoked") == 0,
       "  with \"ca\": \"one\": 200 revoked (%d)", st);
    cJSON_Delete(j);

    rep = redisCommand(c, "HGET %s status", to);
    ok(rep != NULL && rep->type == REDIS_REPLY_STRING
       && strcmp(rep->str, "good") == 0, "  CA two's stays good");
    freeReplyObject(rep);

    /* a pending record is no certificate: the other CA's is the one */
    freeReplyObject(redisCommand(c, "HSET %s status pending", to));
    j = call("GET", path, NULL, NULL, &st);
    ok(st == 200 && strcmp(jstr(j, "ca"), "one") == 0,
       "  CA two's record pending: a read without ?ca= finds CA one's "
       "(%d %s)", st, jstr(j, "error"));
    cJSON_Delete(j);

    j = call("GET", path, "ca=three", NULL, &st);
    ok(st == 404 && strcmp(jstr(j, "error"), "no such CA") == 0,
       "  ?ca= naming no CA: 404 no such CA (%d %s)", st, jstr(j, "error"));
    cJSON_Delete(j);

    rep = redisCommand(c, "DEL %s", to);
    freeReplyObject(rep);
    redisFree(c);
}
