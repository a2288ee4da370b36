/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * CRL build time (not a test; run through bench/crl.sh).  Fills the revoked
 * hash of one CA with N entries (random 16-byte serials, mixed reasons,
 * every fourth with an invalidity date), then times:
 *   walk   pki_record_revoked_each alone (HSCAN, parsing)
 *   list   pki_crl_build_list from memory (entries, sort, sign, encode)
 *   full   pki_crl_build (walk + CRL number + build + sign + encode)
 *
 *   crl_bench SOCK CA_CERT CA_KEY [N] [RUNS] [OUT.der]
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <openssl/rand.h>

#include "pki.h"


typedef struct {
    pki_crl_entry_t  *e;
    char            (*serials)[41];
    size_t            n;
    size_t            cap;
} bench_list_t;


static double
now_s(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}


static int
count_cb(void *arg, const char *serial, int reason, time_t at, time_t inv)
{
    (void) serial; (void) reason; (void) at; (void) inv;
    (*(size_t *) arg)++;
    return 1;
}


static int
list_cb(void *arg, const char *serial, int reason, time_t at, time_t inv)
{
    bench_list_t  *l;

    l = arg;
    if (l->n >= l->cap) {
        return 0;
    }

    snprintf(l->serials[l->n], 41, "%s", serial);
    l->e[l->n].serial = l->serials[l->n];
    l->e[l->n].reason = reason;
    l->e[l->n].revoked_at = at;
    l->e[l->n].invalidity_date = inv;
    l->n++;

    return 1;
}


static int
fill(redisContext *rc, const char *key, size_t n)
{
    size_t          i, j, pending;
    char            hex[41], val[64];
    time_t          now;
    redisReply     *reply;
    unsigned char   b[16];

    static const int  reasons[] = { 0, 1, 3, 4, 5, 6, 9 };

    now = time(NULL);
    pending = 0;

    for (i = 0; i < n; i++) {
        RAND_bytes(b, sizeof(b));
        b[0] &= 0x7f;
        b[0] |= 0x01;
        for (j = 0; j < sizeof(b); j++) {
            snprintf(hex + 2 * j, 3, "%02X", b[j]);
        }
        snprintf(val, sizeof(val), "%d %lld %lld",
                 reasons[i % (sizeof(reasons) / sizeof(reasons[0]))],
                 (long long) (now - (time_t) (i % 86400)),
                 (long long) (i % 4 == 0 ? now - 2 * 86400 : 0));
        redisAppendCommand(rc, "HSET %s %s %s", key, hex, val);
        pending++;

        if (pending == 1000 || i + 1 == n) {
            for (; pending > 0; pending--) {
                if (redisGetReply(rc, (void **) &reply) != REDIS_OK) {
                    return 0;
                }
                freeReplyObject(reply);
            }
        }
    }

    return 1;
}


int
main(int argc, char **argv)
{
    int                 runs;
    char                key[256], ns[64];
    size_t              n, got, len;
    double              t0, t1, best_walk, best_list, best_full;
    pki_ca_t           *ca;
    pki_key_t          *k;
    pki_redis_t        *r;
    pki_status_t        st;
    pki_result_t        res;
    redisContext       *rc;
    bench_list_t        l;
    unsigned char      *der;
    pki_redis_conf_t    conf;
    const char         *cargv[1];

    if (argc < 4) {
        fprintf(stderr, "usage: %s SOCK CA_CERT CA_KEY [N] [RUNS] [OUT]\n",
                argv[0]);
        return 2;
    }

    n = argc > 4 ? (size_t) strtoul(argv[4], NULL, 10) : 100000;
    runs = argc > 5 ? atoi(argv[5]) : 3;
    if (runs < 1) {
        runs = 1;
    }

    pki_init();
    pki_result_init(&res);

    k = pki_key_new(argv[3], NULL, &res);
    if (k == NULL || pki_key_open(k, &res) != PKI_OK) {
        fprintf(stderr, "key: %s %s\n", res.detail, res.log);
        return 1;
    }

    ca = pki_ca_new("bench");
    cargv[0] = argv[2];
    pki_ca_set(ca, "certificate", 1, cargv, &res);
    pki_ca_set_key(ca, k, &res);
    if (pki_ca_finish(ca, &res) != PKI_OK) {
        fprintf(stderr, "CA: %s %s\n", res.detail, res.log);
        return 1;
    }

    snprintf(ns, sizeof(ns), "crlbench%d:", (int) getpid());
    memset(&conf, 0, sizeof(conf));
    conf.unix_path = argv[1];
    conf.ns = ns;
    conf.timeout_ms = 5000;
    r = pki_redis_new(&conf, &res);
    rc = redisConnectUnix(argv[1]);
    if (r == NULL || rc == NULL || rc->err) {
        fprintf(stderr, "redis: %s\n", res.detail);
        return 1;
    }

    snprintf(key, sizeof(key), "%s{ca:bench}:revoked", ns);
    t0 = now_s();
    if (!fill(rc, key, n)) {
        fprintf(stderr, "fill failed\n");
        return 1;
    }
    printf("filled %zu revoked entries in %.2f s\n", n, now_s() - t0);

    l.cap = n;
    l.e = calloc(n ? n : 1, sizeof(*l.e));
    l.serials = calloc(n ? n : 1, sizeof(*l.serials));
    if (l.e == NULL || l.serials == NULL) {
        return 1;
    }

    best_walk = best_list = best_full = 1e9;

    for (int i = 0; i < runs; i++) {
        got = 0;
        t0 = now_s();
        st = pki_record_revoked_each(r, "bench", count_cb, &got, &res);
        t1 = now_s() - t0;
        if (st != PKI_OK || got != n) {
            fprintf(stderr, "walk: %s (%zu)\n", res.detail, got);
            return 1;
        }
        best_walk = t1 < best_walk ? t1 : best_walk;

        l.n = 0;
        pki_record_revoked_each(r, "bench", list_cb, &l, &res);
        t0 = now_s();
        st = pki_crl_build_list(ca, l.e, l.n, 1, 0, 3600, &der, &len, &res);
        t1 = now_s() - t0;
        if (st != PKI_OK) {
            fprintf(stderr, "list: %s %s\n", res.detail, res.log);
            return 1;
        }
        free(der);
        best_list = t1 < best_list ? t1 : best_list;

        t0 = now_s();
        st = pki_crl_build(ca, r, 3600, &der, &len, &res);
        t1 = now_s() - t0;
        if (st != PKI_OK) {
            fprintf(stderr, "full: %s %s\n", res.detail, res.log);
            return 1;
        }
        if (argc > 6 && i + 1 == runs) {
            FILE  *f = fopen(argv[6], "w");

            if (f == NULL || fwrite(der, 1, len, f) != len) {
                fprintf(stderr, "cannot write %s\n", argv[6]);
            }
            if (f != NULL) {
                fclose(f);
            }
        }
        free(der);
        best_full = t1 < best_full ? t1 : best_full;

        printf("run %d: pki_crl_build %.3f s (%zu bytes)\n", i + 1, t1, len);
    }

    printf("entries %zu: walk %.3f s, build from memory %.3f s, "
           "pki_crl_build %.3f s (best of %d; goal < 2 s)\n",
           n, best_walk, best_list, best_full, runs);

    freeReplyObject(redisCommand(rc, "DEL %s %s{ca:bench}:crlnumber", key,
                                 ns));
    redisFree(rc);
    pki_redis_free(r);
    pki_ca_free(ca);
    pki_key_free(k);
    free(l.e);
    free(l.serials);

    return 0;
}
