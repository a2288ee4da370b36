/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Metrics history and certificate counts in Redis (see pki.h): per-minute
 * and per-hour buckets every host adds its deltas to, read back for the
 * dashboard's history charts.  Each call is one round trip (a Lua script).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <hiredis.h>

#include "pki.h"
#include "audit_int.h"


#define PKI_METRICS_MAX_FIELDS   256
#define PKI_METRICS_KEY_MAX      256
#define PKI_METRICS_MINUTE_TTL   (48L * 3600 + 120)
#define PKI_METRICS_HOUR_TTL     (90L * 86400 + 7200)
#define PKI_METRICS_MAX_MINUTES  2880
#define PKI_METRICS_MAX_HOURS    2160


static const char  pki_flush_lua[] =
    "for i = 3, #ARGV, 2 do "
    "  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) "
    "  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) "
    "end "
    "redis.call('EXPIRE', KEYS[1], ARGV[1]) "
    "redis.call('EXPIRE', KEYS[2], ARGV[2]) "
    "return 1";

static const char  pki_history_lua[] =
    "local out = {} "
    "for i = 1, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end "
    "return out";

static const char  pki_counts_lua[] =
    "local now = tonumber(ARGV[1]) "
    "local u = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf') "
    "local e7 = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], ARGV[2]) "
    "local e30 = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], ARGV[3]) "
    "local rv = 0 "
    "local ks = redis.call('HKEYS', KEYS[2]) "
    "for i = 1, #ks do "
    "  local s = redis.call('ZSCORE', KEYS[1], ks[i]) "
    "  if s and tonumber(s) > now then rv = rv + 1 end "
    "end "
    "return {u, rv, e7, e30}";


static int
pki_mkey(pki_redis_t *r, const char *kind, long long t, char *buf,
    size_t size)
{
    int  n;

    n = snprintf(buf, size, "%s{metrics}:%s:%lld", pki_redis_ns(r), kind, t);

    return n > 0 && (size_t) n < size;
}


pki_status_t
pki_metrics_flush(pki_redis_t *r, time_t now, const char *const *fields,
    const long long *deltas, size_t n, pki_result_t *res)
{
    int           argc;
    char          km[PKI_METRICS_KEY_MAX], kh[PKI_METRICS_KEY_MAX];
    char          ttl_m[24], ttl_h[24], *nums;
    size_t        i, *lens;
    redisReply   *reply;
    const char  **argv;
    pki_status_t  st;

    if (r == NULL || n == 0) {
        return PKI_OK;
    }

    if (n > PKI_METRICS_MAX_FIELDS) {
        return pki_fail(res, PKI_TOO_LARGE, "too many metrics fields");
    }

    if (!pki_mkey(r, "m", (long long) now / 60, km, sizeof(km))
        || !pki_mkey(r, "h", (long long) now / 3600, kh, sizeof(kh)))
    {
        return pki_fail(res, PKI_INTERNAL, "metrics key too long");
    }

    argc = 7 + 2 * (int) n;
    argv = calloc((size_t) argc, sizeof(char *));
    lens = calloc((size_t) argc, sizeof(size_t));
    nums = calloc(n, 24);

    if (argv == NULL || lens == NULL || nums == NULL) {
        st = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto done;
    }

    snprintf(ttl_m, sizeof(ttl_m), "%ld", PKI_METRICS_MINUTE_TTL);
    snprintf(ttl_h, sizeof(ttl_h), "%ld", PKI_METRICS_HOUR_TTL);

    argv[0] = "EVAL";
    argv[1] = pki_flush_lua;
    argv[2] = "2";
    argv[3] = km;
    argv[4] = kh;
    argv[5] = ttl_m;
    argv[6] = ttl_h;

    for (i = 0; i < n; i++) {
        snprintf(nums + 24 * i, 24, "%lld", deltas[i]);
        argv[7 + 2 * i] = fields[i];
        argv[8 + 2 * i] = nums + 24 * i;
    }

    for (i = 0; i < (size_t) argc; i++) {
        lens[i] = strlen(argv[i]);
    }

    reply = pki_int_redis_command(r, argc, argv, lens, res);
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


pki_status_t
pki_metrics_history(pki_redis_t *r, int hourly, time_t now, unsigned count,
    char **json, pki_result_t *res)
{
    int            argc;
    char          *keys, ncount[16];
    long long      step, last, t;
    size_t         i, j, *lens;
    cJSON         *root, *arr, *b, *v;
    redisReply    *reply, *h;
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
    argc = 3 + (int) count;

    argv = calloc((size_t) argc, sizeof(char *));
    lens = calloc((size_t) argc, sizeof(size_t));
    keys = calloc(count, PKI_METRICS_KEY_MAX);
    root = NULL;
    reply = NULL;

    if (argv == NULL || lens == NULL || keys == NULL) {
        st = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto done;
    }

    snprintf(ncount, sizeof(ncount), "%u", count);
    argv[0] = "EVAL";
    argv[1] = pki_history_lua;
    argv[2] = ncount;

    for (i = 0; i < count; i++) {
        t = last - (long long) (count - 1 - i);
        if (!pki_mkey(r, hourly ? "h" : "m", t, keys + i * PKI_METRICS_KEY_MAX,
                      PKI_METRICS_KEY_MAX))
        {
            st = pki_fail(res, PKI_INTERNAL, "metrics key too long");
            goto done;
        }
        argv[3 + i] = keys + i * PKI_METRICS_KEY_MAX;
    }

    for (i = 0; i < (size_t) argc; i++) {
        lens[i] = strlen(argv[i]);
    }

    reply = pki_int_redis_command(r, argc, argv, lens, res);
    if (reply == NULL) {
        st = PKI_UNAVAILABLE;
        goto done;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != count) {
        st = pki_fail(res, PKI_UNAVAILABLE, "unexpected reply to the "
                      "metrics history script");
        goto done;
    }

    root = cJSON_CreateObject();
    arr = cJSON_CreateArray();
    if (root == NULL || arr == NULL) {
        cJSON_Delete(arr);
        st = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto done;
    }

    cJSON_AddNumberToObject(root, "step", (double) step);
    cJSON_AddNumberToObject(root, "from",
                            (double) ((last - (long long) count + 1) * step));
    cJSON_AddNumberToObject(root, "to", (double) (last * step));
    cJSON_AddItemToObject(root, "buckets", arr);

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

        t = (last - (long long) (count - 1 - i)) * step;
        cJSON_AddNumberToObject(b, "t", (double) t);
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

    *json = cJSON_PrintUnformatted(root);
    st = *json ? PKI_OK : pki_fail(res, PKI_INTERNAL, "out of memory");

done:

    if (reply) {
        freeReplyObject(reply);
    }
    cJSON_Delete(root);
    free(argv);
    free(lens);
    free(keys);

    return st;
}


pki_status_t
pki_metrics_cert_counts(pki_redis_t *r, const char *ca, time_t now,
    long long out[4], pki_result_t *res)
{
    int           n, i;
    char          kexp[PKI_METRICS_KEY_MAX], krev[PKI_METRICS_KEY_MAX];
    char          a1[24], a2[24], a3[24];
    size_t        lens[8];
    redisReply   *reply;
    const char   *argv[8];

    memset(out, 0, 4 * sizeof(long long));

    if (r == NULL || ca == NULL) {
        return pki_fail(res, PKI_UNAVAILABLE, "no Redis");
    }

    n = snprintf(kexp, sizeof(kexp), "%s{ca:%s}:expiry", pki_redis_ns(r), ca);
    if (n <= 0 || (size_t) n >= sizeof(kexp)) {
        return pki_fail(res, PKI_INTERNAL, "key too long");
    }

    n = snprintf(krev, sizeof(krev), "%s{ca:%s}:revoked", pki_redis_ns(r),
                 ca);
    if (n <= 0 || (size_t) n >= sizeof(krev)) {
        return pki_fail(res, PKI_INTERNAL, "key too long");
    }

    snprintf(a1, sizeof(a1), "%lld", (long long) now);
    snprintf(a2, sizeof(a2), "%lld", (long long) now + 7 * 86400);
    snprintf(a3, sizeof(a3), "%lld", (long long) now + 30 * 86400);

    argv[0] = "EVAL";
    argv[1] = pki_counts_lua;
    argv[2] = "2";
    argv[3] = kexp;
    argv[4] = krev;
    argv[5] = a1;
    argv[6] = a2;
    argv[7] = a3;

    for (i = 0; i < 8; i++) {
        lens[i] = strlen(argv[i]);
    }

    reply = pki_int_redis_command(r, 8, argv, lens, res);
    if (reply == NULL) {
        return PKI_UNAVAILABLE;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 4) {
        freeReplyObject(reply);
        return pki_fail(res, PKI_UNAVAILABLE, "unexpected reply to the "
                        "certificate count script");
    }

    for (i = 0; i < 4; i++) {
        if (reply->element[i]->type == REDIS_REPLY_INTEGER) {
            out[i] = reply->element[i]->integer;
        }
    }

    freeReplyObject(reply);

    return PKI_OK;
}
