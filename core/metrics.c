/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Metrics history and certificate counts in Redis (see pki.h): per-minute
 * and per-hour buckets every host adds its deltas to, read back for the
 * dashboard's history charts.  A flush is one round trip (a Lua script)
 * that a sender may repeat: it is added once.  The history is read a page
 * of buckets per script, so that no single command keeps Redis from its
 * other clients for long; the certificate counts are a walk of bounded
 * steps, done once per interval for the whole fleet (the others read its
 * result).
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <hiredis.h>

#include "pki.h"
#include "audit_int.h"
#include "redis_int.h"


#define PKI_METRICS_MAX_FIELDS   256
#define PKI_METRICS_KEY_MAX      256
#define PKI_METRICS_MINUTE_TTL   (48L * 3600 + 120)
#define PKI_METRICS_HOUR_TTL     (90L * 86400 + 7200)
#define PKI_METRICS_MAX_MINUTES  2880
#define PKI_METRICS_MAX_HOURS    2160
#define PKI_METRICS_HISTORY_PAGE 60      /* buckets per history script */
#define PKI_METRICS_SOURCE_MAX   64
#define PKI_METRICS_MARK_TTL     "900000" /* ms: a sender's last batch */
#define PKI_METRICS_SCAN_COUNT   "1000"  /* HSCAN page of the revoked hash */
#define PKI_METRICS_SCORES_MAX   1000    /* members per ZMSCORE            */
#define PKI_METRICS_SCAN_ROUNDS  100000  /* HSCAN pages per count: a cap   */
#define PKI_METRICS_COUNTS_LEN   128


/*
 * KEYS[1] the minute bucket, KEYS[2] the hour bucket, KEYS[3] the sender's
 * mark <ns>{metrics}:f:<source>; ARGV[1], ARGV[2] the buckets' TTLs in
 * seconds, ARGV[3] the batch's sequence number, ARGV[4] the mark's TTL in
 * milliseconds, ARGV[5..] field/delta pairs.
 *
 * The mark holds the sequence number of the sender's last batch added: a
 * batch sent again (its answer was lost, or the connection retry of
 * pki_redis_cmd ran it twice) finds its own number or a later one there
 * and adds nothing (0).  A sender has one batch in flight at a time and
 * numbers its batches upwards, so one key per sender (not per batch)
 * tells them apart.  Buckets of another type are refused before anything
 * is written: an error reply leaves no trace.  After the mark nothing may
 * fail (Lua's writes are not rolled back, and the deltas given back after
 * an error reply would be added twice): a field that holds no integer, or
 * would overflow, is left as it is (redis.pcall) and the others added.
 */
static const char  pki_flush_lua[] =
    "for k = 1, 2 do "
    "  local t = redis.call('TYPE', KEYS[k]).ok "
    "  if t ~= 'none' and t ~= 'hash' then "
    "    return redis.error_reply('WRONGTYPE metrics bucket is a ' .. t) "
    "  end "
    "end "
    "local last = tonumber(redis.call('GET', KEYS[3]) or '') "
    "if last and last >= tonumber(ARGV[3]) then return 0 end "
    "redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4]) "
    "for i = 5, #ARGV, 2 do "
    "  redis.pcall('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) "
    "  redis.pcall('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) "
    "end "
    "redis.call('EXPIRE', KEYS[1], ARGV[1]) "
    "redis.call('EXPIRE', KEYS[2], ARGV[2]) "
    "return 1";

static const char  pki_history_lua[] =
    "local out = {} "
    "for i = 1, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end "
    "return out";

/* KEYS[1] the expiry index; ARGV[1] now, ARGV[2] now + 7 d, ARGV[3] now
 * + 30 d.  Three ZCOUNTs: O(log n) each. */
static const char  pki_counts_lua[] =
    "return {redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf'), "
    "redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], ARGV[2]), "
    "redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], ARGV[3])}";

/* KEYS[1] <ns>{ca:CA}:counts; ARGV[1] its TTL in milliseconds.  Returns the
 * string there (a result, or "counting" while another caller counts), 1
 * when this caller took the lease (SET ... PX: gone after the TTL even if
 * the caller dies), 0 when the key is of another type (counted, not
 * cached). */
static const char  pki_counts_lease_lua[] =
    "local t = redis.call('TYPE', KEYS[1]).ok "
    "if t == 'string' then return redis.call('GET', KEYS[1]) end "
    "if t ~= 'none' then return 0 end "
    "redis.call('SET', KEYS[1], 'counting', 'PX', ARGV[1]) "
    "return 1";


static int
pki_mkey(pki_redis_t *r, const char *kind, long long t, char *buf,
    size_t size)
{
    int  n;

    n = snprintf(buf, size, "%s{metrics}:%s:%lld", pki_redis_ns(r), kind, t);

    return n > 0 && (size_t) n < size;
}


static int
pki_metrics_source_ok(const char *src)
{
    size_t  i;

    for (i = 0; src[i] != '\0'; i++) {
        if (i == PKI_METRICS_SOURCE_MAX
            || !((src[i] >= '0' && src[i] <= '9')
                 || (src[i] >= 'a' && src[i] <= 'z')
                 || (src[i] >= 'A' && src[i] <= 'Z')
                 || src[i] == '-' || src[i] == '_' || src[i] == '.'))
        {
            return 0;
        }
    }

    return i > 0;
}


pki_status_t
pki_metrics_flush(pki_redis_t *r, const pki_metrics_batch_t *b, int *unknown,
    pki_result_t *res)
{
    int           argc;
    char          km[PKI_METRICS_KEY_MAX], kh[PKI_METRICS_KEY_MAX];
    char          kf[PKI_METRICS_KEY_MAX], ttl_m[24], ttl_h[24], seq[24];
    char         *nums;
    size_t        i, *lens;
    redisReply   *reply;
    const char  **argv;
    pki_status_t  st;

    if (unknown != NULL) {
        *unknown = 0;
    }

    if (r == NULL || b == NULL || b->n == 0) {
        return PKI_OK;
    }

    if (b->n > PKI_METRICS_MAX_FIELDS) {
        return pki_fail(res, PKI_TOO_LARGE, "too many metrics fields");
    }

    if (b->source == NULL || !pki_metrics_source_ok(b->source)
        || b->seq == 0)
    {
        return pki_fail(res, PKI_INTERNAL, "bad metrics batch source or "
                        "sequence number");
    }

    if (!pki_mkey(r, "m", (long long) b->now / 60, km, sizeof(km))
        || !pki_mkey(r, "h", (long long) b->now / 3600, kh, sizeof(kh))
        || snprintf(kf, sizeof(kf), "%s{metrics}:f:%s", pki_redis_ns(r),
                    b->source) >= (int) sizeof(kf))
    {
        return pki_fail(res, PKI_INTERNAL, "metrics key too long");
    }

    argc = 10 + 2 * (int) b->n;
    argv = calloc((size_t) argc, sizeof(char *));
    lens = calloc((size_t) argc, sizeof(size_t));
    nums = calloc(b->n, 24);

    if (argv == NULL || lens == NULL || nums == NULL) {
        st = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto done;
    }

    snprintf(ttl_m, sizeof(ttl_m), "%ld", PKI_METRICS_MINUTE_TTL);
    snprintf(ttl_h, sizeof(ttl_h), "%ld", PKI_METRICS_HOUR_TTL);
    snprintf(seq, sizeof(seq), "%llu", b->seq);

    argv[0] = "EVAL";
    argv[1] = pki_flush_lua;
    argv[2] = "3";
    argv[3] = km;
    argv[4] = kh;
    argv[5] = kf;
    argv[6] = ttl_m;
    argv[7] = ttl_h;
    argv[8] = seq;
    argv[9] = PKI_METRICS_MARK_TTL;

    for (i = 0; i < b->n; i++) {
        snprintf(nums + 24 * i, 24, "%lld", b->deltas[i]);
        argv[10 + 2 * i] = b->fields[i];
        argv[11 + 2 * i] = nums + 24 * i;
    }

    for (i = 0; i < (size_t) argc; i++) {
        lens[i] = strlen(argv[i]);
    }

    reply = pki_int_redis_command_sent(r, argc, argv, lens, unknown, res);
    st = reply ? PKI_OK : PKI_UNAVAILABLE;
    if (reply) {
        freeReplyObject(reply);
    }

done:

    free(argv);
    free(lens);
    free(nums);

    return st;
}


/* The batch on a connection of its own with a short timeout (a copy of
 * the store): the connect, AUTH, SELECT and the script each wait at most
 * timeout_ms, and a fresh connection is never retried. */
pki_status_t
pki_metrics_flush_within(pki_redis_t *r, const pki_metrics_batch_t *b,
    int timeout_ms, int *unknown, pki_result_t *res)
{
    pki_redis_t   *d;
    pki_status_t   st;

    if (unknown != NULL) {
        *unknown = 0;
    }

    if (r == NULL || b == NULL || b->n == 0) {
        return PKI_OK;
    }

    if (!pki_redis_literal(r)) {
        return pki_fail(res, PKI_UNAVAILABLE, "redis: a host name, not "
                        "looked up for a flush that must not wait");
    }

    d = pki_int_redis_dup(r, timeout_ms, res);
    if (d == NULL) {
        return PKI_INTERNAL;
    }

    st = pki_metrics_flush(d, b, unknown, res);

    pki_redis_free(d);

    return st;
}


/* The count buckets from first on, one page (a script of up to
 * PKI_METRICS_HISTORY_PAGE HGETALLs), each non-empty one appended to arr
 * as {"t":T,"v":{...}}. */
static pki_status_t
pki_metrics_history_page(pki_redis_t *r, int hourly, long long first,
    long long step, size_t count, const char **argv, size_t *lens,
    char *keys, cJSON *arr, pki_result_t *res)
{
    int            argc;
    char           ncount[16];
    size_t         i, j;
    cJSON         *b, *v;
    redisReply    *reply, *h;
    pki_status_t   st;

    argc = 3 + (int) count;

    snprintf(ncount, sizeof(ncount), "%zu", count);
    argv[0] = "EVAL";
    argv[1] = pki_history_lua;
    argv[2] = ncount;

    for (i = 0; i < count; i++) {
        if (!pki_mkey(r, hourly ? "h" : "m", first + (long long) i,
                      keys + i * PKI_METRICS_KEY_MAX, PKI_METRICS_KEY_MAX))
        {
            return pki_fail(res, PKI_INTERNAL, "metrics key too long");
        }
        argv[3 + i] = keys + i * PKI_METRICS_KEY_MAX;
    }

    for (i = 0; i < (size_t) argc; i++) {
        lens[i] = strlen(argv[i]);
    }

    reply = pki_int_redis_command(r, argc, argv, lens, res);
    if (reply == NULL) {
        return PKI_UNAVAILABLE;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != count) {
        st = pki_fail(res, PKI_UNAVAILABLE, "unexpected reply to the "
                      "metrics history script");
        goto done;
    }

    for (i = 0; i < count; i++) {
        h = reply->element[i];

        if (h->type != REDIS_REPLY_ARRAY || h->elements < 2) {
            continue;
        }

        b = cJSON_CreateObject();
        v = cJSON_CreateObject();
        if (b == NULL || v == NULL) {
            cJSON_Delete(b);
            cJSON_Delete(v);
            continue;
        }

        cJSON_AddNumberToObject(b, "t",
                                (double) ((first + (long long) i) * step));
        cJSON_AddItemToObject(b, "v", v);

        for (j = 0; j + 1 < h->elements; j += 2) {
            if (h->element[j]->type == REDIS_REPLY_STRING
                && h->element[j + 1]->type == REDIS_REPLY_STRING)
            {
                cJSON_AddNumberToObject(v, h->element[j]->str,
                                        strtod(h->element[j + 1]->str, NULL));
            }
        }

        cJSON_AddItemToArray(arr, b);
    }

    st = PKI_OK;

done:

    freeReplyObject(reply);

    return st;
}


/* The buckets a page at a time: each script reads at most
 * PKI_METRICS_HISTORY_PAGE hashes, and Redis serves its other clients
 * between pages (one script of 2,880 HGETALLs of 200 fields each held
 * Redis ~300 ms).  Pages read at different moments may see a flush either
 * way: a chart, not a ledger. */
pki_status_t
pki_metrics_history(pki_redis_t *r, int hourly, time_t now, unsigned count,
    char **json, pki_result_t *res)
{
    char          *keys;
    size_t         i, n, *lens;
    cJSON         *root, *arr;
    long long      step, last, first;
    const char   **argv;
    pki_status_t   st;

    *json = NULL;

    if (r == NULL) {
        return pki_fail(res, PKI_UNAVAILABLE, "no Redis");
    }

    step = hourly ? 3600 : 60;

    if (count == 0 || count > (hourly ? PKI_METRICS_MAX_HOURS
                                      : PKI_METRICS_MAX_MINUTES))
    {
        count = hourly ? PKI_METRICS_MAX_HOURS : PKI_METRICS_MAX_MINUTES;
    }

    last = (long long) now / step;
    first = last - (long long) count + 1;

    argv = calloc(3 + PKI_METRICS_HISTORY_PAGE, sizeof(char *));
    lens = calloc(3 + PKI_METRICS_HISTORY_PAGE, sizeof(size_t));
    keys = calloc(PKI_METRICS_HISTORY_PAGE, PKI_METRICS_KEY_MAX);
    root = cJSON_CreateObject();
    arr = cJSON_CreateArray();

    if (argv == NULL || lens == NULL || keys == NULL || root == NULL
        || arr == NULL)
    {
        cJSON_Delete(arr);
        st = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto done;
    }

    cJSON_AddNumberToObject(root, "step", (double) step);
    cJSON_AddNumberToObject(root, "from", (double) (first * step));
    cJSON_AddNumberToObject(root, "to", (double) (last * step));
    cJSON_AddItemToObject(root, "buckets", arr);

    for (i = 0; i < count; i += n) {
        n = count - i;
        if (n > PKI_METRICS_HISTORY_PAGE) {
            n = PKI_METRICS_HISTORY_PAGE;
        }

        st = pki_metrics_history_page(r, hourly, first + (long long) i, step,
                                      n, argv, lens, keys, arr, res);
        if (st != PKI_OK) {
            goto done;
        }
    }

    *json = cJSON_PrintUnformatted(root);
    st = *json ? PKI_OK : pki_fail(res, PKI_INTERNAL, "out of memory");

done:

    cJSON_Delete(root);
    free(argv);
    free(lens);
    free(keys);

    return st;
}


/* "<ns>{ca:CA}:<what>", the CA's keys as core/redis.c names them. */
static int
pki_counts_key(pki_redis_t *r, const char *ca, const char *what, char *buf,
    size_t size)
{
    int  n;

    n = snprintf(buf, size, "%s{ca:%s}:%s", pki_redis_ns(r), ca, what);

    return n > 0 && (size_t) n < size;
}


/* One ZMSCORE of argv[2] .. argv[n + 1] (serials) in the expiry index:
 * adds those whose notAfter is after now to rev[0], and those of them
 * whose notAfter is at most 7 and 30 days away to rev[1] and rev[2] (the
 * windows of pki_counts_lua's ZCOUNTs, which count them too).  A member
 * that is not there (nil) or a score that is not a number is not
 * counted. */
static pki_status_t
pki_counts_scores(pki_redis_t *r, const char *kexp, const char **argv,
    size_t *lens, size_t n, time_t now, long long rev[3], double *scores,
    pki_result_t *res)
{
    size_t        i;
    pki_status_t  st;

    st = pki_int_redis_zmscore(r, kexp, argv, lens, n, scores, res);
    if (st != PKI_OK) {
        return st;
    }

    for (i = 0; i < n; i++) {
        if (!(scores[i] > (double) now)) {
            continue;
        }

        rev[0]++;

        if (scores[i] <= (double) now + 7 * 86400) {
            rev[1]++;
        }

        if (scores[i] <= (double) now + 30 * 86400) {
            rev[2]++;
        }
    }

    return PKI_OK;
}


/* The revoked (or on hold) certificates of the CA still unexpired at now
 * (rev[0]), and of those the ones expiring within 7 and 30 days (rev[1],
 * rev[2]).  The revoked hash is walked with HSCAN a page at a time and
 * each page's serials are looked up in the expiry index with ZMSCORE, up
 * to PKI_METRICS_SCORES_MAX at a time: no command does work in proportion to
 * the revoked hash, and Redis serves its other clients in between.  An
 * entry revoked or expiring meanwhile may be counted either way, and SCAN
 * may return an entry twice while the hash is being resized: a gauge, not
 * a ledger.  At most PKI_METRICS_SCAN_ROUNDS pages (a cursor that never
 * comes back to 0 ends too). */
static pki_status_t
pki_counts_revoked(pki_redis_t *r, const char *kexp, const char *krev,
    time_t now, long long rev[3], pki_result_t *res)
{
    char               cursor[32];
    double            *scores;
    size_t             i, n, *lens;
    unsigned           rounds;
    redisReply        *page;
    const char       **argv;
    pki_status_t       st;
    const redisReply  *c, *items, *f;

    rev[0] = 0;
    rev[1] = 0;
    rev[2] = 0;
    page = NULL;

    argv = calloc(PKI_METRICS_SCORES_MAX + 2, sizeof(char *));
    lens = calloc(PKI_METRICS_SCORES_MAX + 2, sizeof(size_t));
    scores = calloc(PKI_METRICS_SCORES_MAX, sizeof(double));

    if (argv == NULL || lens == NULL || scores == NULL) {
        st = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto failed;
    }

    strcpy(cursor, "0");

    for (rounds = 0; rounds < PKI_METRICS_SCAN_ROUNDS; rounds++) {
        argv[0] = "HSCAN";
        argv[1] = krev;
        argv[2] = cursor;
        argv[3] = "COUNT";
        argv[4] = PKI_METRICS_SCAN_COUNT;

        for (i = 0; i < 5; i++) {
            lens[i] = strlen(argv[i]);
        }

        page = pki_int_redis_command(r, 5, argv, lens, res);
        if (page == NULL) {
            st = PKI_UNAVAILABLE;
            goto failed;
        }

        if (page->type != REDIS_REPLY_ARRAY || page->elements != 2
            || page->element[0]->type != REDIS_REPLY_STRING
            || page->element[0]->len == 0
            || page->element[0]->len >= sizeof(cursor)
            || page->element[1]->type != REDIS_REPLY_ARRAY
            || page->element[1]->elements % 2 != 0)
        {
            pki_int_redis_drop(r);
            st = pki_fail(res, PKI_UNAVAILABLE, "unexpected reply to HSCAN");
            goto failed;
        }

        c = page->element[0];
        items = page->element[1];

        memcpy(cursor, c->str, c->len);
        cursor[c->len] = '\0';

        /* the serials (even elements; odd ones are the entries) */

        n = 0;

        for (i = 0; i < items->elements; i += 2) {
            f = items->element[i];

            if (f->type != REDIS_REPLY_STRING) {
                continue;
            }

            argv[2 + n] = f->str;
            lens[2 + n] = f->len;
            n++;

            if (n == PKI_METRICS_SCORES_MAX) {
                st = pki_counts_scores(r, kexp, argv, lens, n, now, rev,
                                       scores, res);
                if (st != PKI_OK) {
                    goto failed;
                }
                n = 0;
            }
        }

        if (n > 0) {
            st = pki_counts_scores(r, kexp, argv, lens, n, now, rev, scores,
                                   res);
            if (st != PKI_OK) {
                goto failed;
            }
        }

        freeReplyObject(page);
        page = NULL;

        if (strcmp(cursor, "0") == 0) {
            st = PKI_OK;
            goto failed;
        }
    }

    st = pki_fail(res, PKI_TOO_LARGE, "revoked hash: over %u HSCAN pages",
                  (unsigned) PKI_METRICS_SCAN_ROUNDS);

failed:

    if (page != NULL) {
        freeReplyObject(page);
    }
    free(argv);
    free(lens);
    free(scores);

    return st;
}


/* Counts: the ZCOUNTs (one script), then the revoked ones, which the
 * expiring windows leave out (a revoked certificate is not "valid", and
 * expiring ones are valid ones about to lapse). */
static pki_status_t
pki_counts_compute(pki_redis_t *r, const char *kexp, const char *krev,
    time_t now, long long out[4], pki_result_t *res)
{
    int           i;
    char          a1[24], a2[24], a3[24];
    size_t        lens[7];
    long long     rev[3];
    redisReply   *reply;
    const char   *argv[7];
    pki_status_t  st;

    snprintf(a1, sizeof(a1), "%lld", (long long) now);
    snprintf(a2, sizeof(a2), "%lld", (long long) now + 7 * 86400);
    snprintf(a3, sizeof(a3), "%lld", (long long) now + 30 * 86400);

    argv[0] = "EVAL";
    argv[1] = pki_counts_lua;
    argv[2] = "1";
    argv[3] = kexp;
    argv[4] = a1;
    argv[5] = a2;
    argv[6] = a3;

    for (i = 0; i < 7; i++) {
        lens[i] = strlen(argv[i]);
    }

    reply = pki_int_redis_command(r, 7, argv, lens, res);
    if (reply == NULL) {
        return PKI_UNAVAILABLE;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) {
        freeReplyObject(reply);
        return pki_fail(res, PKI_UNAVAILABLE, "unexpected reply to the "
                        "certificate count script");
    }

    for (i = 0; i < 3; i++) {
        if (reply->element[i]->type == REDIS_REPLY_INTEGER) {
            out[i == 0 ? 0 : i + 1] = reply->element[i]->integer;
        }
    }

    freeReplyObject(reply);

    st = pki_counts_revoked(r, kexp, krev, now, rev, res);
    if (st != PKI_OK) {
        memset(out, 0, 4 * sizeof(long long));
        return st;
    }

    /* never below 0: the ZCOUNTs and the walk are not one instant */
    out[1] = rev[0];
    out[2] = out[2] > rev[1] ? out[2] - rev[1] : 0;
    out[3] = out[3] > rev[2] ? out[3] - rev[2] : 0;

    return PKI_OK;
}


pki_status_t
pki_metrics_cert_counts(pki_redis_t *r, const char *ca, time_t now,
    unsigned long ttl_ms, long long out[4], pki_result_t *res)
{
    int            i, lease;
    char           kexp[PKI_METRICS_KEY_MAX], krev[PKI_METRICS_KEY_MAX];
    char           kcnt[PKI_METRICS_KEY_MAX], ttl[24];
    char           val[PKI_METRICS_COUNTS_LEN];
    size_t         lens[6];
    long long      c[4];
    redisReply    *reply;
    const char    *argv[6];
    pki_result_t   scratch;
    pki_status_t   st;

    memset(out, 0, 4 * sizeof(long long));

    if (r == NULL || ca == NULL) {
        return pki_fail(res, PKI_UNAVAILABLE, "no Redis");
    }

    if (!pki_counts_key(r, ca, "expiry", kexp, sizeof(kexp))
        || !pki_counts_key(r, ca, "revoked", krev, sizeof(krev))
        || !pki_counts_key(r, ca, "counts", kcnt, sizeof(kcnt)))
    {
        return pki_fail(res, PKI_INTERNAL, "key too long");
    }

    lease = 0;

    if (ttl_ms > 0) {
        snprintf(ttl, sizeof(ttl), "%lu", ttl_ms);

        argv[0] = "EVAL";
        argv[1] = pki_counts_lease_lua;
        argv[2] = "1";
        argv[3] = kcnt;
        argv[4] = ttl;

        for (i = 0; i < 5; i++) {
            lens[i] = strlen(argv[i]);
        }

        reply = pki_int_redis_command(r, 5, argv, lens, res);
        if (reply == NULL) {
            return PKI_UNAVAILABLE;
        }

        if (reply->type == REDIS_REPLY_INTEGER) {
            lease = reply->integer == 1;

        } else if (reply->type == REDIS_REPLY_STRING) {

            if (pki_int_redis_numbers(reply, out, 4)) {
                freeReplyObject(reply);
                return PKI_OK;
            }

            if (reply->len == sizeof("counting") - 1
                && memcmp(reply->str, "counting", reply->len) == 0)
            {
                freeReplyObject(reply);
                return pki_fail(res, PKI_CONFLICT, "another worker is "
                                "counting the certificates");
            }

            /* anything else there: counted, not cached */

        } else {
            freeReplyObject(reply);
            pki_int_redis_drop(r);
            return pki_fail(res, PKI_UNAVAILABLE, "unexpected reply to the "
                            "certificate count lease script");
        }

        freeReplyObject(reply);
    }

    memset(c, 0, sizeof(c));

    st = pki_counts_compute(r, kexp, krev, now, c, res);
    if (st != PKI_OK) {
        /* the lease stays: nobody counts again before it expires */
        return st;
    }

    if (lease) {
        snprintf(val, sizeof(val), "%lld %lld %lld %lld", c[0], c[1], c[2],
                 c[3]);

        /* the lease's TTL stays; gone meanwhile: not cached */
        argv[0] = "SET";
        argv[1] = kcnt;
        argv[2] = val;
        argv[3] = "XX";
        argv[4] = "KEEPTTL";

        for (i = 0; i < 5; i++) {
            lens[i] = strlen(argv[i]);
        }

        pki_result_init(&scratch);
        reply = pki_int_redis_command(r, 5, argv, lens, &scratch);
        if (reply != NULL) {
            freeReplyObject(reply);
        }
    }

    memcpy(out, c, sizeof(c));

    return PKI_OK;
}
