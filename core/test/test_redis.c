/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests for core/redis.c against a running redis-server.
 *   PKI_TEST_REDIS_SOCK  unix socket of the server (skip_all if unset)
 * Checks are made with raw hiredis commands as the oracle where it matters.
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <hiredis.h>
#include <openssl/rand.h>

#include "pki.h"
#include "test/unit.h"


/* unit.h's is_status() evaluates its first argument twice: call once. */
static int
is_st(pki_status_t got, pki_status_t want, const char *name)
{
    return is_status(got, want, name);
}


static const char  *sock;
static char         ns[64];


static double
now_s(void)
{
    struct timeval  tv;

    gettimeofday(&tv, NULL);
    return tv.tv_sec + tv.tv_usec / 1e6;
}


static pki_redis_t *
new_store(const char *path, int timeout_ms)
{
    pki_redis_conf_t  conf;
    pki_result_t      res;
    pki_redis_t      *r;

    memset(&conf, 0, sizeof(conf));
    conf.unix_path = path;
    conf.ns = ns;
    conf.timeout_ms = timeout_ms;

    pki_result_init(&res);
    r = pki_redis_new(&conf, &res);
    if (r == NULL) {
        diag("pki_redis_new: %s", res.detail);
    }
    return r;
}


static void
random_serial(char out[41])
{
    unsigned char  b[16];
    int            i;

    RAND_bytes(b, sizeof(b));
    b[0] &= 0x7f;
    b[0] |= 0x10;
    for (i = 0; i < 16; i++) {
        sprintf(out + 2 * i, "%02X", b[i]);
    }
}


static void
fill(pki_record_t *rec, const char *ca, const char *serial)
{
    memset(rec, 0, sizeof(*rec));
    snprintf(rec->serial, sizeof(rec->serial), "%s", serial);
    snprintf(rec->ca, sizeof(rec->ca), "%s", ca);
    snprintf(rec->template_name, sizeof(rec->template_name), "device");
    snprintf(rec->protocol, sizeof(rec->protocol), "est");
    rec->subject = (char *) "CN=dev1,O=Example";
    rec->sans = (char *) "DNS:dev1.example,IP:192.0.2.1";
    rec->requester = (char *) "alice";
    rec->client = (char *) "127.0.0.1";
    rec->not_before = 1700000000;
    rec->not_after = 1800000000;
    rec->created = 1700000001;
}


/* Raw oracle: a command with one or two arguments. */
static redisReply *
raw(redisContext *c, const char *cmd, const char *a1, const char *a2)
{
    const char  *argv[3];
    size_t       lens[3];
    int          n = 0;

    argv[n] = cmd;
    lens[n++] = strlen(cmd);
    if (a1 != NULL) {
        argv[n] = a1;
        lens[n++] = strlen(a1);
    }
    if (a2 != NULL) {
        argv[n] = a2;
        lens[n++] = strlen(a2);
    }

    return redisCommandArgv(c, n, argv, lens);
}


static void
test_round_trip(pki_redis_t *r, redisContext *c)
{
    static const unsigned char  der[] = {
        0x30, 0x82, 0x00, 0x00, 0x00, 0x01, 0xff, 0x00, 0x0a, 0x0d, 0x00,
        '%', 's', '%', 'b', 0x00, 0x80
    };
    pki_result_t                res;
    pki_record_t                rec, got;
    redisReply                 *rep;
    char                        serial[41], key[256];

    random_serial(serial);
    fill(&rec, "root", serial);

    pki_result_init(&res);
    is_st(pki_record_reserve(r, &rec, &res), PKI_OK, "reserve");

    pki_result_init(&res);
    is_st(pki_record_reserve(r, &rec, &res), PKI_CONFLICT,
              "double reserve");

    pki_result_init(&res);
    is_st(pki_record_get(r, "root", serial, &got, &res), PKI_OK,
              "get pending");
    ok(got.status == PKI_CERT_PENDING && got.der == NULL
       && strcmp(got.subject, rec.subject) == 0
       && strcmp(got.sans, rec.sans) == 0
       && strcmp(got.requester, "alice") == 0
       && strcmp(got.client, "127.0.0.1") == 0
       && strcmp(got.template_name, "device") == 0
       && strcmp(got.protocol, "est") == 0
       && strcmp(got.serial, serial) == 0
       && strcmp(got.ca, "root") == 0
       && got.created == 1700000001 && got.not_after == 1800000000,
       "pending record fields");
    pki_record_clear(&got);

    /* The layout, seen by a raw client. */
    snprintf(key, sizeof(key), "%s{ca:root}:serial:%s", ns, serial);
    rep = raw(c, "GET", key, NULL);
    ok(rep != NULL && rep->type == REDIS_REPLY_STRING
       && strcmp(rep->str, "1700000001") == 0, "reservation key %s", key);
    freeReplyObject(rep);

    snprintf(key, sizeof(key), "%s{ca:root}:cert:%s", ns, serial);
    rep = raw(c, "HGET", key, "status");
    ok(rep != NULL && rep->type == REDIS_REPLY_STRING
       && strcmp(rep->str, "pending") == 0, "record hash is pending");
    freeReplyObject(rep);

    rep = raw(c, "TTL", key, NULL);
    ok(rep != NULL && rep->type == REDIS_REPLY_INTEGER && rep->integer > 0
       && rep->integer <= 300, "a pending record expires by itself (TTL %lld)",
       rep ? rep->integer : 0);
    freeReplyObject(rep);

    rec.der = (unsigned char *) der;
    rec.der_len = sizeof(der);
    rec.not_before = 1700000100;
    rec.not_after = 1800000100;
    pki_result_init(&res);
    is_st(pki_record_commit(r, &rec, &res), PKI_OK, "commit");

    rep = raw(c, "TTL", key, NULL);
    ok(rep != NULL && rep->type == REDIS_REPLY_INTEGER && rep->integer == -1,
       "a committed record is permanent");
    freeReplyObject(rep);

    pki_result_init(&res);
    is_st(pki_record_commit(r, &rec, &res), PKI_CONFLICT,
              "commit twice");

    pki_result_init(&res);
    is_st(pki_record_get(r, "root", serial, &got, &res), PKI_OK,
              "get good");
    ok(got.status == PKI_CERT_GOOD && got.der_len == sizeof(der)
       && memcmp(got.der, der, sizeof(der)) == 0,
       "binary DER with NUL bytes round-trips");
    ok(got.not_before == 1700000100 && got.not_after == 1800000100,
       "validity updated");
    pki_record_clear(&got);
    ok(got.subject == NULL && got.der == NULL, "record_clear zeroes");

    snprintf(key, sizeof(key), "%s{ca:root}:expiry", ns);
    rep = raw(c, "ZSCORE", key, serial);
    ok(rep != NULL && rep->type == REDIS_REPLY_STRING
       && strcmp(rep->str, "1800000100") == 0, "expiry index");
    freeReplyObject(rep);

    /* Abandon leaves a good record alone. */
    pki_result_init(&res);
    is_st(pki_record_abandon(r, "root", serial, &res), PKI_OK,
              "abandon good");
    pki_result_init(&res);
    is_st(pki_record_get(r, "root", serial, &got, &res), PKI_OK,
              "good record stays");
    pki_record_clear(&got);

    /* Lowercase / 0x serials find the same record. */
    {
        char  lower[48];
        int   i;

        snprintf(lower, sizeof(lower), "0x%s", serial);
        for (i = 0; lower[i] != '\0'; i++) {
            if (lower[i] >= 'A' && lower[i] <= 'F') {
                lower[i] = (char) (lower[i] - 'A' + 'a');
            }
        }
        pki_result_init(&res);
        is_st(pki_record_get(r, "root", lower, &got, &res), PKI_OK,
                  "get by non-canonical serial");
        pki_record_clear(&got);
    }

    /* Abandon a pending record: hash gone, reservation stays. */
    random_serial(serial);
    fill(&rec, "root", serial);
    pki_result_init(&res);
    is_st(pki_record_reserve(r, &rec, &res), PKI_OK, "reserve 2");
    pki_result_init(&res);
    is_st(pki_record_abandon(r, "root", serial, &res), PKI_OK,
              "abandon pending");
    pki_result_init(&res);
    is_st(pki_record_get(r, "root", serial, &got, &res), PKI_NOT_FOUND,
              "abandoned record is gone");
    pki_result_init(&res);
    is_st(pki_record_reserve(r, &rec, &res), PKI_CONFLICT,
              "abandoned serial stays reserved");

    /* Commit after the record vanished (Redis flushed). */
    random_serial(serial);
    fill(&rec, "root", serial);
    pki_result_init(&res);
    is_st(pki_record_reserve(r, &rec, &res), PKI_OK, "reserve 3");
    snprintf(key, sizeof(key), "%s{ca:root}:cert:%s", ns, serial);
    freeReplyObject(raw(c, "DEL", key, NULL));
    rec.der = (unsigned char *) der;
    rec.der_len = sizeof(der);
    pki_result_init(&res);
    ok(pki_record_commit(r, &rec, &res) == PKI_UNAVAILABLE
       && strstr(res.detail, "record vanished") != NULL,
       "commit after delete [%s]", res.detail);
    rep = raw(c, "EXISTS", key, NULL);
    ok(rep != NULL && rep->integer == 0, "failed commit wrote nothing");
    freeReplyObject(rep);

    /* Not found, bad input. */
    random_serial(serial);
    pki_result_init(&res);
    is_st(pki_record_get(r, "root", serial, &got, &res), PKI_NOT_FOUND,
              "unknown serial");
    pki_result_init(&res);
    is_st(pki_record_get(r, "other", serial, &got, &res), PKI_NOT_FOUND,
              "other CA");
    pki_result_init(&res);
    ok(pki_record_get(r, "root", "XYZ", &got, &res) != PKI_OK,
       "bad serial refused [%s]", res.detail);
    pki_result_init(&res);
    ok(pki_record_get(r, "ro}ot", serial, &got, &res) != PKI_OK,
       "CA with a brace refused");
    fill(&rec, "root", "00");
    pki_result_init(&res);
    ok(pki_record_reserve(r, &rec, &res) != PKI_OK, "zero serial refused");

    /* Hostile strings go in as data. */
    random_serial(serial);
    fill(&rec, "root", serial);
    rec.subject = (char *) "CN=%s%n%b\r\nFLUSHALL\r\n";
    pki_result_init(&res);
    is_st(pki_record_reserve(r, &rec, &res), PKI_OK,
              "reserve hostile subject");
    pki_result_init(&res);
    is_st(pki_record_get(r, "root", serial, &got, &res), PKI_OK,
              "get hostile subject");
    ok(got.subject != NULL && strcmp(got.subject, rec.subject) == 0,
       "hostile subject round-trips");
    pki_record_clear(&got);

    /* A corrupt record is refused. */
    snprintf(key, sizeof(key), "%s{ca:root}:cert:%s", ns, serial);
    {
        const char  *argv[4] = { "HSET", key, "status", "weird" };
        size_t       lens[4];

        lens[0] = 4;
        lens[1] = strlen(key);
        lens[2] = 6;
        lens[3] = 5;
        freeReplyObject(redisCommandArgv(c, 4, argv, lens));
    }
    pki_result_init(&res);
    is_st(pki_record_get(r, "root", serial, &got, &res), PKI_INTERNAL,
              "corrupt record");
}


static void
test_unreachable(void)
{
    pki_redis_t   *r;
    pki_result_t   res;
    pki_record_t   rec, got;
    double         t0;
    char           serial[41];

    r = new_store("/nonexistent/redis.sock", 500);
    if (!ok(r != NULL, "store for a missing socket")) {
        return;
    }

    t0 = now_s();
    pki_result_init(&res);
    ok(pki_redis_ping(r, &res) == PKI_UNAVAILABLE
       && strcmp(res.detail, "certificate store unavailable") == 0
       && res.log[0] != '\0', "ping unreachable [%s | %s]", res.detail,
       res.log);

    random_serial(serial);
    fill(&rec, "root", serial);
    pki_result_init(&res);
    is_st(pki_record_reserve(r, &rec, &res), PKI_UNAVAILABLE,
              "reserve unreachable");
    pki_result_init(&res);
    is_st(pki_record_get(r, "root", serial, &got, &res),
              PKI_UNAVAILABLE, "get unreachable");
    ok(now_s() - t0 < 0.5, "fails quickly (%.3f s)", now_s() - t0);

    pki_redis_free(r);
}


typedef struct {
    pki_redis_t  *r;
    int           n;
    int           errors;
} thr_arg_t;


static void *
reserve_thread(void *p)
{
    thr_arg_t     *a = p;
    pki_result_t   res;
    pki_record_t   rec;
    char           serial[41];
    int            i;

    for (i = 0; i < a->n; i++) {
        random_serial(serial);
        fill(&rec, "load", serial);
        pki_result_init(&res);
        if (pki_record_reserve(a->r, &rec, &res) != PKI_OK) {
            if (a->errors++ < 3) {
                fprintf(stderr, "reserve: %s %s\n", res.detail, res.log);
            }
        }
    }

    /* The thread's connection is freed by the key destructor on exit. */
    return NULL;
}


static void
test_threads(pki_redis_t *r, redisContext *c)
{
    pthread_t    t[8];
    thr_arg_t    a[8];
    redisReply  *rep;
    char         pat[128];
    double       t0;
    int          i, errors = 0;
    long long    n = 0;

    t0 = now_s();
    for (i = 0; i < 8; i++) {
        a[i].r = r;
        a[i].n = 500;
        a[i].errors = 0;
        pthread_create(&t[i], NULL, reserve_thread, &a[i]);
    }
    for (i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        errors += a[i].errors;
    }
    ok(errors == 0, "8 threads x 500 reserves, %d errors (%.2f s)", errors,
       now_s() - t0);

    /* Count the reservations with a raw SCAN. */
    snprintf(pat, sizeof(pat), "%s{ca:load}:serial:*", ns);
    {
        char  cursor[32] = "0";

        do {
            const char  *argv[6] = { "SCAN", cursor, "MATCH", pat, "COUNT",
                                     "1000" };
            size_t       lens[6];
            int          j;

            for (j = 0; j < 6; j++) {
                lens[j] = strlen(argv[j]);
            }
            rep = redisCommandArgv(c, 6, argv, lens);
            if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
                freeReplyObject(rep);
                break;
            }
            snprintf(cursor, sizeof(cursor), "%s", rep->element[0]->str);
            n += (long long) rep->element[1]->elements;
            freeReplyObject(rep);
        } while (strcmp(cursor, "0") != 0);
    }
    ok(n == 4000, "4000 reservations stored (%lld)", n);
}


int
main(void)
{
    pki_redis_t     *r;
    pki_result_t     res;
    redisContext    *c;
    pki_redis_conf_t conf;
    struct timeval   tv = { 2, 0 };

    sock = getenv("PKI_TEST_REDIS_SOCK");
    if (sock == NULL || *sock == '\0') {
        skip_all("PKI_TEST_REDIS_SOCK not set");
    }

    pki_init();
    snprintf(ns, sizeof(ns), "test%ld:", (long) getpid());

    c = redisConnectUnixWithTimeout(sock, tv);
    if (c == NULL || c->err) {
        printf("Bail out! cannot connect to %s\n", sock);
        return 1;
    }

    /* Configuration checks. */
    memset(&conf, 0, sizeof(conf));
    pki_result_init(&res);
    ok(pki_redis_new(&conf, &res) == NULL, "no host nor socket refused");
    conf.unix_path = sock;
    conf.ns = "a{b}";
    pki_result_init(&res);
    ok(pki_redis_new(&conf, &res) == NULL, "namespace with braces refused");
    conf.ns = NULL;
    pki_result_init(&res);
    r = pki_redis_new(&conf, &res);
    ok(r != NULL && strcmp(pki_redis_ns(r), "pki:") == 0,
       "default namespace");
    pki_redis_free(r);

    r = new_store(sock, 1000);
    if (!ok(r != NULL, "pki_redis_new")) {
        redisFree(c);
        return done_testing();
    }
    ok(strcmp(pki_redis_ns(r), ns) == 0, "namespace %s", pki_redis_ns(r));

    pki_result_init(&res);
    is_st(pki_redis_ping(r, &res), PKI_OK, "ping");
    pki_redis_disconnect(r);
    pki_redis_disconnect(r);
    pki_result_init(&res);
    is_st(pki_redis_ping(r, &res), PKI_OK, "ping after disconnect");

    /* The server drops us: the next call fails or reconnects, never
     * hangs, and the one after works. */
    freeReplyObject(raw(c, "CLIENT", "KILL", "TYPE")); /* harmless error */
    {
        const char  *argv[4] = { "CLIENT", "KILL", "TYPE", "normal" };
        size_t       lens[4] = { 6, 4, 4, 6 };

        /* Kills every normal client, the oracle too: reconnect it. */
        freeReplyObject(redisCommandArgv(c, 4, argv, lens));
        redisFree(c);
        c = redisConnectUnixWithTimeout(sock, tv);
    }
    pki_result_init(&res);
    is_st(pki_redis_ping(r, &res), PKI_OK,
          "first command after a kill succeeds on a new connection");
    ok(res.status == PKI_OK && res.detail[0] == '\0',
       "a mended retry leaves no error in the result");

    test_round_trip(r, c);
    test_unreachable();
    test_threads(r, c);

    /* Clean up our namespace. */
    {
        char  script[] = "local n = 0 "
                         "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
                         "redis.call('DEL', k) n = n + 1 end return n";
        char  pat[80];
        const char  *argv[5];
        size_t       lens[5];

        snprintf(pat, sizeof(pat), "%s*", ns);
        argv[0] = "EVAL";
        argv[1] = script;
        argv[2] = "0";
        argv[3] = pat;
        lens[0] = 4;
        lens[1] = strlen(script);
        lens[2] = 1;
        lens[3] = strlen(pat);
        freeReplyObject(redisCommandArgv(c, 4, argv, lens));
    }

    pki_redis_free(r);
    redisFree(c);

    return done_testing();
}
