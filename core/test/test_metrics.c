/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests for pki_metrics_cert_counts (core/metrics.c) against a running
 * redis-server (PKI_TEST_REDIS_SOCK; skip_all if unset):
 *   - the four counts of records made through core/redis.c, and of a
 *     layout written raw, with the edge cases (notAfter == now, a revoked
 *     serial missing from the expiry index);
 *   - a revoked hash of 50,000 entries is counted right without any Redis
 *     command over 50 ms (SLOWLOG; the old single script took ~150 ms
 *     here, a page takes ~1 ms) and without HKEYS (INFO commandstats):
 *     the count works in bounded steps, not in one script;
 *   - with a TTL the count is made once: a second call within it reads
 *     <ns>{ca:CA}:counts (no HSCAN, the old numbers), "counting" there is
 *     PKI_CONFLICT, and odd keys (other types, garbage) neither crash nor
 *     get cached;
 *   - a history batch is added once per sender and sequence number (sent
 *     again after a lost answer, late), a failure says whether Redis may
 *     have run it, and an error reply writes nothing;
 *   - a flush with a timeout of its own (a worker's exit) gives up after
 *     it, not after the store's, and leaves the store's connection be;
 *   - the history is read a page of buckets per script (INFO
 *     commandstats: the old code read 2,880 buckets in one) and answers
 *     the buckets written.
 * The oracle is the data the test wrote and the server's own statistics.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>
#include <hiredis.h>

#include "pki.h"
#include "test/unit.h"


#define NOW  1800000000LL
#define DAY  86400LL


static const char  *sock;
static char         ns[64];


/* unit.h's is_status() evaluates its first argument twice: call once. */
static int
is_st(pki_status_t got, pki_status_t want, const char *name)
{
    return is_status(got, want, name);
}


static void
cmd(redisContext *c, const char *fmt, ...)
{
    va_list      ap;
    redisReply  *r;

    va_start(ap, fmt);
    r = redisvCommand(c, fmt, ap);
    va_end(ap);

    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        diag("redis: %s", r ? r->str : c->errstr);
    }
    freeReplyObject(r);
}


/* calls=N of one command in INFO commandstats (0 when never called). */
static long long
calls(redisContext *c, const char *name)
{
    char         want[64];
    long long    n;
    const char  *p;
    redisReply  *r;

    n = 0;
    snprintf(want, sizeof(want), "cmdstat_%s:calls=", name);

    r = redisCommand(c, "INFO commandstats");
    if (r != NULL && r->type == REDIS_REPLY_STRING
        && (p = strstr(r->str, want)) != NULL)
    {
        n = atoll(p + strlen(want));
    }
    freeReplyObject(r);

    return n;
}


static void
key(char *buf, size_t size, const char *ca, const char *what)
{
    snprintf(buf, size, "%s{ca:%s}:%s", ns, ca, what);
}


static pki_status_t
counts(pki_redis_t *r, const char *ca, unsigned long ttl_ms,
    long long out[4])
{
    pki_result_t  res;
    pki_status_t  st;

    pki_result_init(&res);
    st = pki_metrics_cert_counts(r, ca, (time_t) NOW, ttl_ms, out, &res);
    if (st != PKI_OK) {
        diag("pki_metrics_cert_counts(%s): %s %s", ca, res.detail, res.log);
    }

    return st;
}


static int
same(const long long got[4], long long u, long long rv, long long e7,
    long long e30)
{
    return got[0] == u && got[1] == rv && got[2] == e7 && got[3] == e30;
}


/* Records made and revoked through core/redis.c: the layout the count
 * reads is the one the store writes. */
static void
test_records(pki_redis_t *r)
{
    static const unsigned char  der[] = { 0x30, 0x03, 0x02, 0x01, 0x01 };
    static const long long      after[] = {
        NOW - DAY, NOW, NOW + 3 * DAY, NOW + 20 * DAY, NOW + 90 * DAY,
        NOW + 5 * DAY
    };
    static const int            revoke[] = { 1, 0, 1, 0, 1, 0 };
    size_t                      i;
    char                        serial[41];
    long long                   out[4];
    pki_result_t                res;
    pki_record_t                rec;

    for (i = 0; i < sizeof(after) / sizeof(after[0]); i++) {
        memset(&rec, 0, sizeof(rec));
        snprintf(serial, sizeof(serial), "%02X1122334455667788", (int) i + 16);
        snprintf(rec.serial, sizeof(rec.serial), "%s", serial);
        snprintf(rec.ca, sizeof(rec.ca), "rec");
        snprintf(rec.template_name, sizeof(rec.template_name), "device");
        snprintf(rec.protocol, sizeof(rec.protocol), "est");
        rec.subject = (char *) "CN=dev";
        rec.sans = (char *) "";
        rec.requester = (char *) "";
        rec.client = (char *) "";
        rec.not_before = (time_t) (NOW - 100 * DAY);
        rec.not_after = (time_t) after[i];
        rec.created = rec.not_before;

        pki_result_init(&res);
        if (pki_record_reserve(r, &rec, &res) != PKI_OK) {
            diag("reserve: %s", res.detail);
        }
        rec.der = (unsigned char *) der;
        rec.der_len = sizeof(der);
        pki_result_init(&res);
        if (pki_record_commit(r, &rec, &res) != PKI_OK) {
            diag("commit: %s", res.detail);
        }

        if (revoke[i]) {
            pki_result_init(&res);
            if (pki_record_revoke(r, "rec", serial, i == 4 ? 6 : 1,
                                  (time_t) (NOW - DAY), 0, NULL, &res)
                != PKI_OK)
            {
                diag("revoke: %s", res.detail);
            }
        }
    }

    /* unexpired: +3, +20, +90, +5 d (notAfter == now is expired); revoked
     * of those: +3 d and the hold at +90 d; within 7 d, not revoked: +5;
     * 30 d: +20 too (the revoked +3 d is in neither: expiring counts are
     * of valid certificates, a subset of unexpired minus revoked) */
    is_st(counts(r, "rec", 0, out), PKI_OK, "records: counted");
    ok(same(out, 4, 2, 1, 2), "records: 4 unexpired, 2 revoked, 1 in 7 d, "
       "2 in 30 d, revoked ones left out (%lld %lld %lld %lld)", out[0],
       out[1], out[2], out[3]);

    is_st(counts(r, "empty", 0, out), PKI_OK, "a CA without keys: counted");
    ok(same(out, 0, 0, 0, 0), "a CA without keys: zeros");
}


/* A revoked hash of n entries (every other one unexpired) and n more
 * unexpired certificates in the expiry index, pipelined. */
static void
fill(redisContext *c, const char *ca, int n)
{
    int        i, k;
    char       krev[128], kexp[128], serial[41];
    long long  at;
    void      *reply;

    key(krev, sizeof(krev), ca, "revoked");
    key(kexp, sizeof(kexp), ca, "expiry");

    k = 0;

    for (i = 0; i < n; i++) {
        snprintf(serial, sizeof(serial), "5E%030X", i);
        at = i % 2 ? NOW + 1 + (i % 60) * DAY : NOW - (i % 60) * DAY;
        redisAppendCommand(c, "HSET %s %s 1,1700000000,0", krev, serial);
        redisAppendCommand(c, "ZADD %s %lld %s", kexp, at, serial);
        snprintf(serial, sizeof(serial), "6E%030X", i);
        redisAppendCommand(c, "ZADD %s %lld %s", kexp, NOW + 100 * DAY,
                           serial);
        k += 3;

        if (k >= 3000 || i == n - 1) {
            while (k-- > 0) {
                if (redisGetReply(c, &reply) == REDIS_OK) {
                    freeReplyObject(reply);
                }
            }
            k = 0;
        }
    }
}


/* The old count ran HKEYS and a ZSCORE per entry in one script: at this
 * size that script alone takes over a hundred milliseconds, and grows with the
 * CA's life. */
static void
test_large(pki_redis_t *r, redisContext *c)
{
    int           i, n, slow, u7, u30, rv;
    char          old[32];
    long long     out[4], hkeys, hscan;
    redisReply   *rep, *e;
    pki_status_t  st;

    n = 50000;
    fill(c, "big", n);

    /* the oracle: the expiry scores written; the unexpired ones within
     * 30 days are all revoked, which the expiring counts leave out */
    rv = 0;
    u7 = 0;
    u30 = 0;
    for (i = 1; i < n; i += 2) {
        rv++;
    }

    rep = redisCommand(c, "CONFIG GET slowlog-log-slower-than");
    snprintf(old, sizeof(old), "%s",
             rep != NULL && rep->type == REDIS_REPLY_ARRAY
             && rep->elements == 2 ? rep->element[1]->str : "10000");
    freeReplyObject(rep);

    cmd(c, "CONFIG SET slowlog-log-slower-than 50000");
    cmd(c, "SLOWLOG RESET");
    hkeys = calls(c, "hkeys");
    hscan = calls(c, "hscan");

    st = counts(r, "big", 0, out);
    ok(st == PKI_OK && same(out, n + rv, rv, u7, u30),
       "%d revoked: %lld unexpired, %lld revoked, %lld in 7 d, %lld in "
       "30 d (want %d %d %d %d)", n, out[0], out[1], out[2], out[3],
       n + rv, rv, u7, u30);

    /* the slow log of this run: nothing of the count over 50 ms */
    slow = 0;
    rep = redisCommand(c, "SLOWLOG GET 128");
    for (i = 0; rep != NULL && rep->type == REDIS_REPLY_ARRAY
                && (size_t) i < rep->elements; i++)
    {
        e = rep->element[i];
        if (e->type == REDIS_REPLY_ARRAY && e->elements >= 4
            && e->element[3]->type == REDIS_REPLY_ARRAY
            && e->element[3]->elements > 0)
        {
            slow++;
            diag("slow: %s, %lld us", e->element[3]->element[0]->str,
                 e->element[2]->integer);
        }
    }
    freeReplyObject(rep);
    cmd(c, "CONFIG SET slowlog-log-slower-than %s", old);

    ok(slow == 0, "no Redis command of the count took over 50 ms (%d did)",
       slow);
    ok(calls(c, "hkeys") == hkeys, "no HKEYS of the revoked hash");
    ok(calls(c, "hscan") - hscan >= n / 1000,
       "the revoked hash walked in HSCAN pages (%lld)",
       calls(c, "hscan") - hscan);
}


/* With a TTL the fleet counts once: the second call reads the result. */
static void
test_cache(pki_redis_t *r, redisContext *c)
{
    char         kcnt[128], krev[128], kexp[128];
    long long    out[4], hscan, zcount;
    redisReply  *rep;

    key(kcnt, sizeof(kcnt), "cache", "counts");
    key(krev, sizeof(krev), "cache", "revoked");
    key(kexp, sizeof(kexp), "cache", "expiry");

    cmd(c, "ZADD %s %lld A1 %lld A2 %lld A3", kexp, NOW + DAY, NOW + 40 * DAY,
        NOW - DAY);
    cmd(c, "HSET %s A1 1,1,0 A3 1,1,0 ZZ 1,1,0", krev);

    hscan = calls(c, "hscan");
    is_st(counts(r, "cache", 60000, out), PKI_OK, "first call: counted");
    ok(same(out, 2, 1, 0, 0), "first call: 2 1 0 0 (%lld %lld %lld %lld)",
       out[0], out[1], out[2], out[3]);
    ok(calls(c, "hscan") > hscan, "first call walked the revoked hash");

    rep = redisCommand(c, "GET %s", kcnt);
    ok(rep != NULL && rep->type == REDIS_REPLY_STRING
       && strcmp(rep->str, "2 1 0 0") == 0, "%s holds the result", kcnt);
    freeReplyObject(rep);

    rep = redisCommand(c, "PTTL %s", kcnt);
    ok(rep != NULL && rep->type == REDIS_REPLY_INTEGER && rep->integer > 0
       && rep->integer <= 60000, "it expires with the TTL (%lld ms)",
       rep != NULL ? rep->integer : 0);
    freeReplyObject(rep);

    /* meanwhile one more certificate, revoked: the cache does not see it */
    cmd(c, "ZADD %s %lld A4", kexp, NOW + 2 * DAY);
    cmd(c, "HSET %s A4 1,1,0", krev);

    hscan = calls(c, "hscan");
    zcount = calls(c, "zcount");
    is_st(counts(r, "cache", 60000, out), PKI_OK, "second call: answered");
    ok(same(out, 2, 1, 0, 0), "second call: the cached result (%lld %lld "
       "%lld %lld)", out[0], out[1], out[2], out[3]);
    ok(calls(c, "hscan") == hscan && calls(c, "zcount") == zcount,
       "second call counted nothing");

    is_st(counts(r, "cache", 0, out), PKI_OK, "without a TTL: counted");
    ok(same(out, 3, 2, 0, 0), "without a TTL: the new numbers (%lld %lld "
       "%lld %lld)", out[0], out[1], out[2], out[3]);

    /* expired: counted again, and cached */
    cmd(c, "DEL %s", kcnt);
    ok(counts(r, "cache", 60000, out) == PKI_OK && same(out, 3, 2, 0, 0),
       "after the TTL: counted again");

    /* another caller holds the lease */
    cmd(c, "SET %s counting PX 60000", kcnt);
    is_st(counts(r, "cache", 60000, out), PKI_CONFLICT,
          "another caller counting: PKI_CONFLICT");
    ok(same(out, 0, 0, 0, 0), "... with zeros");

    /* odd contents: counted, not cached, the key left alone */
    cmd(c, "SET %s %s", kcnt, "1 2 x 4");
    ok(counts(r, "cache", 60000, out) == PKI_OK && same(out, 3, 2, 0, 0),
       "garbage in the counts key: counted");
    rep = redisCommand(c, "GET %s", kcnt);
    ok(rep != NULL && rep->type == REDIS_REPLY_STRING
       && strcmp(rep->str, "1 2 x 4") == 0, "... and left as it was");
    freeReplyObject(rep);

    cmd(c, "SET %s %s", kcnt, "-1 2 3 4");
    ok(counts(r, "cache", 60000, out) == PKI_OK && same(out, 3, 2, 0, 0),
       "a negative count in the counts key: counted");

    cmd(c, "DEL %s", kcnt);
    cmd(c, "HSET %s a b", kcnt);
    ok(counts(r, "cache", 60000, out) == PKI_OK && same(out, 3, 2, 0, 0),
       "a hash at the counts key: counted");
    rep = redisCommand(c, "TYPE %s", kcnt);
    ok(rep != NULL && rep->type == REDIS_REPLY_STATUS
       && strcmp(rep->str, "hash") == 0, "... and left a hash");
    freeReplyObject(rep);
    cmd(c, "DEL %s", kcnt);
}


/* field's value in hash key as a number (-1: none) */
static long long
hnum(redisContext *c, const char *key, const char *field)
{
    long long    n;
    redisReply  *rep;

    n = -1;
    rep = redisCommand(c, "HGET %s %s", key, field);
    if (rep != NULL && rep->type == REDIS_REPLY_STRING) {
        n = atoll(rep->str);
    }
    freeReplyObject(rep);

    return n;
}


static pki_status_t
flush_ms(pki_redis_t *r, const char *src, unsigned long long seq, time_t now,
    long long d1, long long d2, int *unknown, int within)
{
    pki_result_t               res;
    pki_metrics_batch_t        b;
    static const char *const   fields[] = { "req:est:success", "iss:a:ok" };
    long long                  deltas[2];

    deltas[0] = d1;
    deltas[1] = d2;

    memset(&b, 0, sizeof(b));
    b.source = src;
    b.seq = seq;
    b.now = now;
    b.fields = fields;
    b.deltas = deltas;
    b.n = 2;

    pki_result_init(&res);
    if (within != 0) {
        return pki_metrics_flush_within(r, &b, within, unknown, &res);
    }

    return pki_metrics_flush(r, &b, unknown, &res);
}


/* pki_metrics_flush(), or pki_metrics_flush_within(within ms) */
static pki_status_t
flush(pki_redis_t *r, const char *src, unsigned long long seq, time_t now,
    long long d1, long long d2, int *unknown)
{
    return flush_ms(r, src, seq, now, d1, d2, unknown, 0);
}


/* Redis busy for about usec (a script of another client), from about
 * 100 ms after the call on: busy_end() waits for its end. */
static redisContext *
busy_start(long long usec)
{
    int              done;
    char             lua[256];
    redisContext    *busy;
    struct timeval   tv = { 5, 0 };

    busy = redisConnectUnixWithTimeout(sock, tv);
    if (busy == NULL || busy->err) {
        redisFree(busy);
        return NULL;
    }

    snprintf(lua, sizeof(lua),
             "local s = redis.call('TIME') "
             "local t0 = s[1] * 1000000 + s[2] "
             "repeat local n = redis.call('TIME') "
             "until n[1] * 1000000 + n[2] - t0 > %lld "
             "return 1", usec);

    redisAppendCommand(busy, "EVAL %s 0", lua);
    do {
        if (redisBufferWrite(busy, &done) == REDIS_ERR) {
            break;
        }
    } while (!done);
    usleep(100000);

    return busy;
}


static void
busy_end(redisContext *busy)
{
    void  *reply;

    if (redisGetReply(busy, &reply) == REDIS_OK) {
        freeReplyObject(reply);
    }
    redisFree(busy);
    usleep(100000);
}


/* A batch is added once per sender and sequence number, whether it comes
 * again after a lost answer or from pki_redis_cmd's connection retry; a
 * failure tells "may have run" (sent, no answer) from "surely not". */
static void
test_flush(pki_redis_t *r, redisContext *c)
{
    int                unknown;
    char               km[128], kh[128], kf[128], km2[128];
    long long          pttl;
    redisReply        *rep;
    pki_result_t       res;
    redisContext      *busy;
    pki_redis_t       *r2, *gone;
    pki_redis_conf_t   conf;

    snprintf(km, sizeof(km), "%s{metrics}:m:%lld", ns, NOW / 60);
    snprintf(kh, sizeof(kh), "%s{metrics}:h:%lld", ns, NOW / 3600);
    snprintf(kf, sizeof(kf), "%s{metrics}:f:tsrc-1", ns);

    unknown = 7;
    ok(is_st(flush(r, "tsrc-1", 1, NOW, 2, 5, &unknown), PKI_OK,
             "flush 1") && unknown == 0, "flush 1: added");
    ok(hnum(c, km, "req:est:success") == 2 && hnum(c, km, "iss:a:ok") == 5
       && hnum(c, kh, "req:est:success") == 2 && hnum(c, kh, "iss:a:ok") == 5,
       "flush 1: in the minute and the hour bucket");

    is_st(flush(r, "tsrc-1", 1, NOW, 2, 5, NULL), PKI_OK, "flush 1 again");
    ok(hnum(c, km, "req:est:success") == 2 && hnum(c, kh, "iss:a:ok") == 5,
       "flush 1 again: added once");

    is_st(flush(r, "tsrc-1", 2, NOW, 2, 5, NULL), PKI_OK, "flush 2");
    ok(hnum(c, km, "req:est:success") == 4 && hnum(c, kh, "iss:a:ok") == 10,
       "flush 2: added");

    is_st(flush(r, "tsrc-1", 1, NOW, 2, 5, NULL), PKI_OK, "flush 1, late");
    ok(hnum(c, km, "req:est:success") == 4, "flush 1, late: not added");

    is_st(flush(r, "tsrc-2", 1, NOW, 1, 1, NULL), PKI_OK,
          "another sender's flush 1");
    ok(hnum(c, km, "req:est:success") == 5, "... added");

    rep = redisCommand(c, "PTTL %s", kf);
    pttl = rep != NULL && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -9;
    freeReplyObject(rep);
    ok(pttl > 0 && pttl <= 900000, "the sender's mark expires (%lld ms)",
       pttl);

    ok(is_st(flush(r, "a b", 3, NOW, 1, 1, NULL), PKI_INTERNAL,
             "a source with a space") && hnum(c, km, "iss:a:ok") == 11,
       "a source with a space: refused, nothing added");
    is_st(flush(r, "tsrc-1", 0, NOW, 1, 1, NULL), PKI_INTERNAL,
          "sequence number 0: refused");

    /* an error reply: surely not run, nothing written, the number unused */
    snprintf(km2, sizeof(km2), "%s{metrics}:m:%lld", ns, NOW / 60 + 1);
    cmd(c, "SET %s x", km2);
    unknown = 7;
    ok(is_st(flush(r, "tsrc-1", 3, NOW + 60, 1, 1, &unknown),
             PKI_UNAVAILABLE, "a bucket of another type") && unknown == 0,
       "a bucket of another type: an error reply, outcome known");
    ok(hnum(c, kh, "iss:a:ok") == 11, "... nothing added to the hour");
    cmd(c, "DEL %s", km2);
    is_st(flush(r, "tsrc-1", 3, NOW + 60, 1, 1, NULL), PKI_OK,
          "its number still adds afterwards");
    ok(hnum(c, kh, "iss:a:ok") == 12, "... once");

    /* no Redis: surely not run */
    memset(&conf, 0, sizeof(conf));
    conf.unix_path = "/nonexistent/redis.sock";
    conf.ns = ns;
    pki_result_init(&res);
    gone = pki_redis_new(&conf, &res);
    unknown = 7;
    ok(gone != NULL
       && flush(gone, "tsrc-1", 4, NOW, 1, 1, &unknown) == PKI_UNAVAILABLE
       && unknown == 0, "no connection: outcome known");
    pki_redis_free(gone);

    /* Redis busy past the timeout: sent, no answer, outcome unknown; the
     * same batch again is added once, whether Redis ran the first */
    conf.unix_path = sock;
    conf.timeout_ms = 300;
    pki_result_init(&res);
    r2 = pki_redis_new(&conf, &res);
    /* its connection open before (a new one would ask the server's
     * policy first, and that would be what goes unanswered) */
    if (r2 != NULL) {
        (void) pki_redis_ping(r2, &res);
    }
    busy = r2 != NULL ? busy_start(1200000) : NULL;
    if (!ok(r2 != NULL && busy != NULL, "a second client")) {
        pki_redis_free(r2);
        redisFree(busy);
        return;
    }

    unknown = 0;
    ok(is_st(flush(r2, "tsrc-1", 4, NOW, 1, 1, &unknown), PKI_UNAVAILABLE,
             "flush 4 while Redis is busy") && unknown == 1,
       "flush 4 while Redis is busy: outcome unknown");

    busy_end(busy);

    is_st(flush(r, "tsrc-1", 4, NOW, 1, 1, NULL), PKI_OK,
          "flush 4 again");
    ok(hnum(c, kh, "iss:a:ok") == 13, "flush 4: added once (%lld)",
       hnum(c, kh, "iss:a:ok"));

    /* a field holding no integer: the script must not fail after the
     * mark (its writes stay, and the deltas given back after an error
     * reply would be added twice); the field is left, the others added */
    snprintf(km2, sizeof(km2), "%s{metrics}:m:%lld", ns, NOW / 60 + 2);
    cmd(c, "HSET %s req:est:success abc", km2);
    unknown = 7;
    ok(is_st(flush(r, "tsrc-1", 5, NOW + 120, 1, 1, &unknown), PKI_OK,
             "a field holding no integer") && unknown == 0,
       "a field holding no integer: no error reply");
    ok(hnum(c, km2, "iss:a:ok") == 1 && hnum(c, kh, "iss:a:ok") == 14
       && hnum(c, kh, "req:est:success") == 8,
       "  the other fields added once (%lld %lld %lld)",
       hnum(c, km2, "iss:a:ok"), hnum(c, kh, "iss:a:ok"),
       hnum(c, kh, "req:est:success"));
    cmd(c, "DEL %s", km2);

    pki_redis_free(r2);
}


/* A worker's last flush at exit waits at most the short timeout it is
 * given, not the store's (5 s here): Redis busy for 1.2 s, the flush
 * gives up after about 200 ms, outcome unknown, and the same batch later
 * is added once; no server: outcome known, at once.  The store's own
 * connection is not touched. */
static void
test_flush_within(pki_redis_t *r, redisContext *c)
{
    int                         i, unknown;
    char                        kh[128];
    double                      t0, dt;
    pki_result_t                res;
    pki_redis_t                *gone;
    redisContext               *busy;
    pki_redis_conf_t            conf;
    pki_metrics_batch_t         one;
    static const char *const    onef[] = { "iss:a:ok" };
    static const long long      oned[] = { 1 };

    memset(&one, 0, sizeof(one));
    one.source = "tsrc-w";
    one.seq = 9;
    one.now = NOW;
    one.fields = onef;
    one.deltas = oned;
    one.n = 1;

    snprintf(kh, sizeof(kh), "%s{metrics}:h:%lld", ns, NOW / 3600);
    cmd(c, "DEL %s", kh);

    unknown = 7;
    ok(is_st(flush_ms(r, "tsrc-w", 1, NOW, 1, 2, &unknown, 200), PKI_OK,
             "within 200 ms: flush 1") && unknown == 0
       && hnum(c, kh, "req:est:success") == 1
       && hnum(c, kh, "iss:a:ok") == 2, "within 200 ms: flush 1 added");

    busy = busy_start(1200000);
    if (!ok(busy != NULL, "a client keeps Redis busy for 1.2 s")) {
        return;
    }

    unknown = 0;
    t0 = unit_now();
    ok(is_st(flush_ms(r, "tsrc-w", 2, NOW, 1, 2, &unknown, 200),
             PKI_UNAVAILABLE, "within 200 ms: flush 2 while Redis is busy")
       && unknown == 1, "flush 2 while Redis is busy: outcome unknown");
    dt = unit_now() - t0;
    ok(dt < 0.7, "... given up after %.3f s, not at the store's 5 s nor "
       "when Redis is free again", dt);

    busy_end(busy);

    is_st(flush(r, "tsrc-w", 2, NOW, 1, 2, NULL), PKI_OK,
          "flush 2 again, on the store's connection");
    ok(hnum(c, kh, "req:est:success") == 2 && hnum(c, kh, "iss:a:ok") == 4,
       "flush 2: added once (%lld %lld)", hnum(c, kh, "req:est:success"),
       hnum(c, kh, "iss:a:ok"));

    memset(&conf, 0, sizeof(conf));
    conf.unix_path = "/nonexistent/redis.sock";
    conf.ns = ns;
    pki_result_init(&res);
    gone = pki_redis_new(&conf, &res);
    unknown = 7;
    t0 = unit_now();
    ok(gone != NULL
       && flush_ms(gone, "tsrc-w", 3, NOW, 1, 1, &unknown, 200)
          == PKI_UNAVAILABLE
       && unknown == 0 && unit_now() - t0 < 0.5,
       "within 200 ms, no server: outcome known, at once");
    pki_redis_free(gone);

    /* a host name: getaddrinfo would wait as long as it likes */
    memset(&conf, 0, sizeof(conf));
    conf.host = "localhost";
    conf.port = 1;
    conf.ns = ns;
    pki_result_init(&res);
    gone = pki_redis_new(&conf, &res);
    ok(pki_redis_literal(r) && gone != NULL && !pki_redis_literal(gone),
       "a unix socket is literal, localhost is not");
    unknown = 7;
    pki_result_init(&res);
    ok(gone != NULL && flush_ms(gone, "tsrc-w", 3, NOW, 1, 1, &unknown, 200)
          == PKI_UNAVAILABLE && unknown == 0,
       "within 200 ms, a host name: outcome known, nothing sent");
    ok(gone != NULL
       && pki_metrics_flush_within(gone, &one, 200, NULL, &res)
          == PKI_UNAVAILABLE && strstr(res.detail, "host name") != NULL,
       "... not looked up (%s)", res.detail);
    pki_redis_free(gone);

    for (i = 0; i < 2; i++) {
        memset(&conf, 0, sizeof(conf));
        conf.host = i == 0 ? "127.0.0.1" : "::1";
        conf.port = 1;
        conf.ns = ns;
        pki_result_init(&res);
        gone = pki_redis_new(&conf, &res);
        ok(gone != NULL && pki_redis_literal(gone), "%s is literal",
           conf.host);
        pki_redis_free(gone);
    }

    unknown = 7;
    ok(flush_ms(r, "tsrc-w", 3, NOW, 1, 1, &unknown, -1) == PKI_INTERNAL
       && unknown == 0 && hnum(c, kh, "iss:a:ok") == 4,
       "a timeout below 1 ms: refused, nothing sent");
    ok(flush_ms(r, "tsrc-w", 3, NOW, 1, 1, NULL, 200) == PKI_OK
       && hnum(c, kh, "iss:a:ok") == 5, "... its number still adds");
    unknown = 7;
    ok(pki_metrics_flush_within(NULL, NULL, 200, &unknown, NULL) == PKI_OK
       && unknown == 0, "no store, no batch: nothing to do");
}


/* The history is read a page of buckets per script: no one command reads
 * them all (INFO commandstats: the old code ran one EVAL), and the answer
 * is the buckets as written. */
static void
test_history(pki_redis_t *r, redisContext *c)
{
    int            good, i, nb;
    char           k[128], *json;
    cJSON         *root, *arr, *b, *v;
    long long      first, evals, t;
    pki_result_t   res;
    pki_status_t   st;

    first = NOW / 60 - 299;

    for (i = 0; i < 300; i++) {
        snprintf(k, sizeof(k), "%s{metrics}:m:%lld", ns, first + i);
        cmd(c, "DEL %s", k);
        if (i % 3 == 0) {
            cmd(c, "HSET %s req:est:success %d iss:x:ok %d", k, i,
                2 * i + 1);
        }
    }

    evals = calls(c, "eval");
    json = NULL;
    pki_result_init(&res);
    st = pki_metrics_history(r, 0, (time_t) NOW, 300, &json, &res);
    evals = calls(c, "eval") - evals;

    is_st(st, PKI_OK, "history of 300 minutes");
    ok(evals >= 5, "read in pages: %lld scripts for 300 buckets", evals);

    root = json ? cJSON_Parse(json) : NULL;
    arr = cJSON_GetObjectItem(root, "buckets");
    ok(root != NULL
       && cJSON_GetObjectItem(root, "step")->valuedouble == 60
       && cJSON_GetObjectItem(root, "from")->valuedouble
          == (double) (first * 60)
       && cJSON_GetObjectItem(root, "to")->valuedouble
          == (double) ((NOW / 60) * 60),
       "history: step, from, to");

    nb = cJSON_GetArraySize(arr);
    good = 0;

    for (i = 0; i < nb; i++) {
        b = cJSON_GetArrayItem(arr, i);
        v = cJSON_GetObjectItem(b, "v");
        t = (first + 3 * i) * 60;
        if (cJSON_GetObjectItem(b, "t")->valuedouble == (double) t
            && cJSON_GetArraySize(v) == 2
            && cJSON_GetObjectItem(v, "req:est:success")->valuedouble
               == 3 * i
            && cJSON_GetObjectItem(v, "iss:x:ok")->valuedouble
               == 6 * i + 1)
        {
            good++;
        }
    }

    ok(nb == 100 && good == 100, "history: the 100 buckets written, in "
       "order, empty ones left out (%d of %d right)", good, nb);

    cJSON_Delete(root);
    free(json);

    /* the default count: 2160 hours */
    evals = calls(c, "eval");
    json = NULL;
    pki_result_init(&res);
    st = pki_metrics_history(r, 1, (time_t) NOW, 0, &json, &res);
    evals = calls(c, "eval") - evals;
    ok(st == PKI_OK && json != NULL && evals >= 36,
       "history of 2160 hours: %lld scripts", evals);
    free(json);
}


/* Other types where the indexes belong: an answer, no crash. */
static void
test_hostile(pki_redis_t *r, redisContext *c)
{
    char          krev[128], kexp[128];
    long long     out[4];
    pki_status_t  st;

    key(krev, sizeof(krev), "odd", "revoked");
    key(kexp, sizeof(kexp), "odd", "expiry");

    cmd(c, "SET %s x", krev);
    cmd(c, "ZADD %s %lld A1", kexp, NOW + DAY);
    ok(counts(r, "odd", 0, out) != PKI_OK && same(out, 0, 0, 0, 0),
       "a string as the revoked hash: an error, zeros");

    cmd(c, "DEL %s %s", krev, kexp);
    cmd(c, "SET %s x", kexp);
    cmd(c, "HSET %s A1 1,1,0", krev);
    ok(counts(r, "odd", 0, out) != PKI_OK && same(out, 0, 0, 0, 0),
       "a string as the expiry index: an error, zeros");

    /* odd members: empty, binary, long, inf scores */
    cmd(c, "DEL %s %s", krev, kexp);
    cmd(c, "ZADD %s +inf INF -inf NINF %lld %b", kexp, NOW + DAY, "a\0b",
        (size_t) 3);
    cmd(c, "HSET %s INF 1 NINF 1 %b 1 %b 1", krev, "a\0b", (size_t) 3, "",
        (size_t) 0);
    st = counts(r, "odd", 0, out);
    ok(st == PKI_OK && same(out, 2, 2, 0, 0),
       "odd members and infinite scores (%lld %lld %lld %lld)",
       out[0], out[1], out[2], out[3]);
}


int
main(void)
{
    redisContext      *c;
    pki_redis_t       *r;
    pki_result_t       res;
    pki_redis_conf_t   conf;
    struct timeval     tv = { 5, 0 };

    sock = getenv("PKI_TEST_REDIS_SOCK");
    if (sock == NULL || *sock == '\0') {
        skip_all("PKI_TEST_REDIS_SOCK not set");
    }

    pki_init();
    snprintf(ns, sizeof(ns), "tmetrics%ld:", (long) getpid());

    c = redisConnectUnixWithTimeout(sock, tv);
    if (c == NULL || c->err) {
        printf("Bail out! cannot connect to %s\n", sock);
        return 1;
    }

    memset(&conf, 0, sizeof(conf));
    conf.unix_path = sock;
    conf.ns = ns;
    conf.timeout_ms = 5000;
    pki_result_init(&res);
    r = pki_redis_new(&conf, &res);
    if (!ok(r != NULL, "pki_redis_new")) {
        return done_testing();
    }

    test_records(r);
    test_large(r, c);
    test_cache(r, c);
    test_hostile(r, c);
    test_flush(r, c);
    test_flush_within(r, c);
    test_history(r, c);

    freeReplyObject(redisCommand(c, "EVAL %s 1 %s*",
                                 "for _, k in ipairs(redis.call('KEYS', "
                                 "KEYS[1])) do redis.call('DEL', k) end",
                                 ns));
    redisFree(c);
    pki_redis_free(r);

    return done_testing();
}
