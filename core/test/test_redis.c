/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests for core/redis.c against a running redis-server.
 *   PKI_TEST_REDIS_SOCK  unix socket of the server (skip_all if unset)
 * Checks are made with raw hiredis commands as the oracle where it matters.
 */

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis.h>
#include <openssl/rand.h>

#include "pki.h"
#include "test/unit.h"
#include "test/clock.h"


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


/* A fake server's part of a new connection's setup: the INFO memory that
 * asks the maxmemory-policy, answered as by a server without INFO (the
 * policy is then not known, and the connection taken). */
static void
fake_info(int fd)
{
    char        buf[512];
    const char *err = "-ERR unknown command 'INFO'\r\n";

    (void) !read(fd, buf, sizeof(buf));
    (void) !send(fd, err, strlen(err), MSG_NOSIGNAL);
}


/*
 * A fake server's socket, /tmp/pki-test-NAME-PID.sock, listening (WHAT
 * says so in the test's output); -1 when it could not be made.
 */
static int
fake_listen(struct sockaddr_un *sa, const char *name, const char *what)
{
    int  lfd;

    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    snprintf(sa->sun_path, sizeof(sa->sun_path), "/tmp/pki-test-%s-%ld.sock",
             name, (long) getpid());
    unlink(sa->sun_path);

    lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (!ok(lfd >= 0 && bind(lfd, (struct sockaddr *) sa, sizeof(*sa)) == 0
            && listen(lfd, 1) == 0, "%s", what))
    {
        if (lfd >= 0) {
            close(lfd);
        }
        return -1;
    }

    return lfd;
}


/* the fake server's thread is waited for, its socket closed and removed */
static void
fake_done(pthread_t th, int lfd, struct sockaddr_un *sa)
{
    pthread_join(th, NULL);
    close(lfd);
    unlink(sa->sun_path);
}


/* A server that answers any command with an array header announcing a
 * billion elements: the reader must refuse it before allocating. */
static void *
huge_array_server(void *arg)
{
    int          fd, lfd = *(int *) arg;
    char         buf[512];
    const char  *reply = "*1000000000\r\n$1\r\na\r\n";

    fd = accept(lfd, NULL, NULL);
    if (fd >= 0) {
        fake_info(fd);
        (void) !read(fd, buf, sizeof(buf));
        (void) !write(fd, reply, strlen(reply));
        (void) !read(fd, buf, sizeof(buf));         /* until the client closes */
        close(fd);
    }

    return NULL;
}


static void
test_huge_array(void)
{
    int                  lfd;
    pthread_t            th;
    pki_redis_t         *r;
    pki_result_t         res;
    struct sockaddr_un   sa;
    double               t0;

    lfd = fake_listen(&sa, "huge", "fake server listens");
    if (lfd < 0) {
        return;
    }

    pthread_create(&th, NULL, huge_array_server, &lfd);

    r = new_store(sa.sun_path, 2000);
    if (ok(r != NULL, "store for the fake server")) {
        t0 = now_s();
        pki_result_init(&res);
        ok(pki_redis_ping(r, &res) == PKI_UNAVAILABLE,
           "an announced array of 10^9 elements is refused [%s]", res.log);
        ok(now_s() - t0 < 0.5, "refused at once (%.3f s)", now_s() - t0);
        pki_redis_free(r);
    }

    fake_done(th, lfd, &sa);
}



/* A Redis 6 that takes one INFO section only: "INFO memory persistence"
 * is a syntax error there, the default sections (plain INFO) hold both.
 * got[0] and got[1] say which INFO came (2 the sections, 1 plain). */
static int  redis6_got[2];

static void *
redis6_server(void *arg)
{
    int          fd, lfd = *(int *) arg;
    char         buf[512];
    ssize_t      n;
    const char  *syntax = "-ERR syntax error\r\n";
    const char  *info = "# Memory\r\nmaxmemory_policy:noeviction\r\n"
                        "# Persistence\r\nloading:0\r\naof_enabled:0\r\n";
    char         bulk[256];

    snprintf(bulk, sizeof(bulk), "$%zu\r\n%s\r\n", strlen(info), info);

    fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
        return NULL;
    }

    n = read(fd, buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = '\0';
    redis6_got[0] = strstr(buf, "persistence") != NULL ? 2 : 1;
    (void) !send(fd, syntax, strlen(syntax), MSG_NOSIGNAL);

    n = read(fd, buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = '\0';
    redis6_got[1] = strncmp(buf, "*1\r\n$4\r\nINFO\r\n", 14) == 0 ? 1 : 2;
    (void) !send(fd, bulk, strlen(bulk), MSG_NOSIGNAL);

    n = read(fd, buf, sizeof(buf) - 1);             /* PING */
    if (n > 0) {
        (void) !send(fd, "+PONG\r\n", 7, MSG_NOSIGNAL);
    }
    (void) !read(fd, buf, sizeof(buf));         /* until the client closes */
    close(fd);

    return NULL;
}


static void
test_aof_redis6(void)
{
    int                  lfd;
    pthread_t            th;
    pki_redis_t         *r;
    pki_result_t         res;
    struct sockaddr_un   sa;

    lfd = fake_listen(&sa, "redis6", "fake Redis 6 listens");
    if (lfd < 0) {
        return;
    }

    pthread_create(&th, NULL, redis6_server, &lfd);

    r = new_store(sa.sun_path, 2000);
    if (ok(r != NULL, "store for the fake Redis 6")) {
        ok(pki_redis_aof(r) == -1, "aof_enabled not known before a "
           "connection");
        pki_result_init(&res);
        ok(pki_redis_ping(r, &res) == PKI_OK, "Redis 6: ping [%s]",
           res.log);
        ok(redis6_got[0] == 2 && redis6_got[1] == 1, "INFO memory "
           "persistence, refused as a syntax error, then INFO (%d %d)",
           redis6_got[0], redis6_got[1]);
        ok(pki_redis_aof(r) == 0, "aof_enabled:0 read from plain INFO");
        pki_redis_free(r);
    }

    fake_done(th, lfd, &sa);
}


/* aof_enabled read by a new connection, with the maxmemory-policy, from
 * the real server, and appendfsync with it (CONFIG SET appendonly and
 * appendfsync: set back as they were) */
static int
set_conf(redisContext *c, const char *name, const char *value)
{
    int          good;
    size_t       lens[4];
    const char  *argv[4];
    redisReply  *rp;

    argv[0] = "CONFIG";
    argv[1] = "SET";
    argv[2] = name;
    argv[3] = value;

    for (int k = 0; k < 4; k++) {
        lens[k] = strlen(argv[k]);
    }

    rp = redisCommandArgv(c, 4, argv, lens);
    good = rp != NULL && rp->type == REDIS_REPLY_STATUS;
    freeReplyObject(rp);

    return good;
}


static void
test_aof(pki_redis_t *r, redisContext *c)
{
    int           i;
    char          was[2][16];
    redisReply   *rp;
    pki_result_t  res;

    /* appendonly, appendfsync, and what pki_redis_aof() then says:
     * 1 on and synced each write, 0 off, 2 on and synced each second */
    static const struct {
        const char  *aof, *fsync;
        int          want;
    } v[] = {
        { "yes", "always", 1 }, { "no", "always", 0 },
        { "yes", "everysec", 2 }, { "yes", "no", 2 },
        { "yes", "always", 1 },
    };

    for (i = 0; i < 2; i++) {
        rp = raw(c, "CONFIG", "GET", i == 0 ? "appendonly" : "appendfsync");
        snprintf(was[i], sizeof(was[i]), "%s",
                 rp != NULL && rp->type == REDIS_REPLY_ARRAY
                 && rp->elements == 2 && rp->element[1]->str != NULL
                 ? rp->element[1]->str : i == 0 ? "no" : "everysec");
        freeReplyObject(rp);
    }

    for (i = 0; i < (int) (sizeof(v) / sizeof(v[0])); i++) {
        ok(set_conf(c, "appendfsync", v[i].fsync)
           && set_conf(c, "appendonly", v[i].aof),
           "CONFIG SET appendonly %s, appendfsync %s", v[i].aof,
           v[i].fsync);

        /* the open connection is not asked again */
        pki_result_init(&res);
        is_st(pki_redis_ping(r, &res), PKI_OK, "  ping on the open "
              "connection");
        ok(i == 0 || pki_redis_aof(r) == v[i - 1].want,
           "  still what the connection read (%d)", pki_redis_aof(r));

        pki_redis_disconnect(r);
        pki_result_init(&res);
        is_st(pki_redis_ping(r, &res), PKI_OK, "  ping on a new "
              "connection");
        ok(pki_redis_aof(r) == v[i].want, "  a new connection reads "
           "%d (%d)", v[i].want, pki_redis_aof(r));
    }

    (void) set_conf(c, "appendfsync", was[1]);
    (void) set_conf(c, "appendonly", was[0]);
}


/* A server that answers any command with a bulk string announced as
 * 300 MB, and sends it for as long as the client reads. */
static void *
huge_string_server(void *arg)
{
    int          fd, lfd = *(int *) arg;
    char         buf[512], *chunk;
    size_t       sent;
    const char  *head = "$300000000\r\n";

    chunk = malloc(1 << 20);
    fd = accept(lfd, NULL, NULL);
    if (fd >= 0 && chunk != NULL) {
        memset(chunk, 'a', 1 << 20);
        fake_info(fd);
        (void) !read(fd, buf, sizeof(buf));
        (void) !send(fd, head, strlen(head), MSG_NOSIGNAL);
        for (sent = 0; sent < 300; sent++) {
            if (send(fd, chunk, 1 << 20, MSG_NOSIGNAL) != 1 << 20) {
                break;
            }
        }
    }
    if (fd >= 0) {
        close(fd);
    }
    free(chunk);

    return NULL;
}


static long
max_rss_mb(void)
{
    struct rusage  ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024;
}


static void
test_huge_string(void)
{
    int                  lfd;
    long                 rss0;
    pthread_t            th;
    pki_redis_t         *r;
    pki_result_t         res;
    struct sockaddr_un   sa;
    double               t0;

    lfd = fake_listen(&sa, "str", "fake server listens");
    if (lfd < 0) {
        return;
    }

    pthread_create(&th, NULL, huge_string_server, &lfd);

    /* the 32 MiB cap must be what stops the answer, not the timeout:
     * under ASan with another test beside it, reading 32 MiB took more
     * than 5 s */
    r = new_store(sa.sun_path, 30000);
    if (ok(r != NULL, "store for the fake server")) {
        rss0 = max_rss_mb();
        t0 = now_s();
        pki_result_init(&res);
        ok(pki_redis_ping(r, &res) == PKI_UNAVAILABLE
           && strstr(res.log, "an answer of more than 32 MiB") != NULL,
           "a 300 MB string in an answer is refused [%s]", res.log);
#if defined(__SANITIZE_ADDRESS__)
        /* ASan's quarantine keeps each buffer hiredis grew out of */
        diag("peak RSS %ld MB (%ld MB before, %.3f s): not judged under "
             "AddressSanitizer", max_rss_mb(), rss0, now_s() - t0);
#else
        if (getenv("PKI_TEST_VALGRIND") != NULL) {
            /* memcheck keeps shadow memory and freed blocks of its own */
            diag("peak RSS %ld MB (%ld MB before, %.3f s): not judged "
                 "under Valgrind", max_rss_mb(), rss0, now_s() - t0);
        } else {
            ok(max_rss_mb() - rss0 < 100, "having held at most about "
               "32 MiB of it (peak RSS %ld MB, %ld MB before, %.3f s)",
               max_rss_mb(), rss0, now_s() - t0);
        }
#endif
        pki_redis_free(r);
    }

    fake_done(th, lfd, &sa);
}

/* A server that answers every command with a scan page that is empty and
 * not the last (cursor 1), until the client closes. */
static void *
endless_scan_server(void *arg)
{
    int          fd, lfd = *(int *) arg;
    char         buf[4096];
    const char  *page = "*2\r\n$1\r\n1\r\n*0\r\n";

    fd = accept(lfd, NULL, NULL);
    if (fd >= 0) {
        fake_info(fd);
        while (read(fd, buf, sizeof(buf)) > 0
               && send(fd, page, strlen(page), MSG_NOSIGNAL) > 0)
        {
            /* void */
        }
        close(fd);
    }

    return NULL;
}


/* a revoked entry or a due plan, each taken and nothing done with it */
static int
any_cb(void *arg, const char *serial, int reason, time_t at, time_t inv)
{
    (void) arg;
    (void) serial;
    (void) reason;
    (void) at;
    (void) inv;

    return 1;
}


static void
test_endless_scan(void)
{
    int                  lfd;
    pthread_t            th;
    pki_redis_t         *r;
    pki_result_t         res;
    struct sockaddr_un   sa;
    double               t0, took;
    pki_status_t         st;

    if (getenv("PKI_TEST_VALGRIND") != NULL) {
        diag("endless HSCAN: skipped under Valgrind (100000 round trips)");
        return;
    }

    lfd = fake_listen(&sa, "scan", "fake server listens");
    if (lfd < 0) {
        return;
    }

    pthread_create(&th, NULL, endless_scan_server, &lfd);

    r = new_store(sa.sun_path, 2000);
    if (ok(r != NULL, "store for the fake server")) {
        t0 = now_s();
        pki_result_init(&res);
        st = pki_record_revoked_each(r, "ca", any_cb, NULL, &res);
        took = now_s() - t0;
        ok(st == PKI_TOO_LARGE
           && strstr(res.detail, "over 100000 HSCAN pages") != NULL,
           "a revoked hash whose scan never ends is given up (%.2f s) [%s]",
           took, res.detail);
        pki_redis_free(r);
    }

    fake_done(th, lfd, &sa);
}


/* A server that answers PING with "+PONG\r\n" one byte every 100 ms: each
 * read gets a byte within the socket's timeout, the whole answer takes
 * 0.7 s. */
static void *
trickle_server(void *arg)
{
    int          fd, lfd = *(int *) arg;
    char         buf[512];
    const char  *p;

    fd = accept(lfd, NULL, NULL);
    if (fd >= 0) {
        fake_info(fd);
        (void) !read(fd, buf, sizeof(buf));
        for (p = "+PONG\r\n"; *p; p++) {
            usleep(100000);
            if (send(fd, p, 1, MSG_NOSIGNAL) != 1) {
                break;
            }
        }
        (void) !read(fd, buf, sizeof(buf));     /* until the client closes */
        close(fd);
    }

    return NULL;
}


/* A server that answers each of a new connection's first three commands
 * (AUTH, SELECT, INFO) with "+OK\r\n" one byte every 100 ms: each read
 * within the socket's timeout, the setup in 1.5 s. */
static void *
trickle_setup_server(void *arg)
{
    int          i, fd, lfd = *(int *) arg;
    char         buf[512];
    const char  *p;

    fd = accept(lfd, NULL, NULL);
    for (i = 0; fd >= 0 && i < 3; i++) {
        if (read(fd, buf, sizeof(buf)) <= 0) {
            break;
        }
        for (p = "+OK\r\n"; *p; p++) {
            usleep(100000);
            if (send(fd, p, 1, MSG_NOSIGNAL) != 1) {
                break;
            }
        }
    }
    if (fd >= 0) {
        (void) !read(fd, buf, sizeof(buf));     /* until the client closes */
        close(fd);
    }

    return NULL;
}


/* A server that answers the due plans' ZRANGEBYSCORE with 8 serials, then
 * the 8 pipelined HMGETs one every 100 ms: each answer within the socket's
 * timeout, the batch in 0.8 s. */
static void *
trickle_pipe_server(void *arg)
{
    int          i, n, fd, lfd = *(int *) arg;
    char         buf[4096], out[512];
    const char  *one = "*3\r\n$-1\r\n$-1\r\n$-1\r\n";

    fd = accept(lfd, NULL, NULL);
    if (fd >= 0) {
        fake_info(fd);
        (void) !read(fd, buf, sizeof(buf));
        n = snprintf(out, sizeof(out), "*8\r\n");
        for (i = 0; i < 8; i++) {
            n += snprintf(out + n, sizeof(out) - (size_t) n,
                          "$2\r\n%02X\r\n", i + 1);
        }
        (void) !send(fd, out, (size_t) n, MSG_NOSIGNAL);
        usleep(50000);
        (void) !read(fd, buf, sizeof(buf));
        for (i = 0; i < 8; i++) {
            usleep(100000);
            if (send(fd, one, strlen(one), MSG_NOSIGNAL) < 0) {
                break;
            }
        }
        (void) !read(fd, buf, sizeof(buf));     /* until the client closes */
        close(fd);
    }

    return NULL;
}


/* A server that reads what it is sent 4 KB every 20 ms (200 KB/s) for
 * 1.5 s, then at once, and answers nothing: a command of 900 KB is written
 * a bit at a time, each write within the socket's timeout. */
static void *
slow_reader_server(void *arg)
{
    int      fd, lfd = *(int *) arg;
    char     buf[4096];
    ssize_t  n;
    double   t0;

    fd = accept(lfd, NULL, NULL);
    if (fd >= 0) {
        fake_info(fd);
        t0 = now_s();
        do {
            if (now_s() - t0 < 1.5) {
                usleep(20000);
            }
            n = read(fd, buf, sizeof(buf));
        } while (n > 0);                        /* until the client closes */
        close(fd);
    }

    return NULL;
}


/* The store's timeout bounds the whole answer, not each read, and a
 * pipelined batch as a whole. */
static void
test_trickle(void)
{
    int                  lfd;
    pthread_t            th;
    pki_redis_t         *r;
    pki_result_t         res;
    struct sockaddr_un   sa;
    double               t0, dt;
    pki_status_t         st;
    pki_redis_conf_t     conf;

    lfd = fake_listen(&sa, "trickle", "trickling server listens");
    if (lfd < 0) {
        return;
    }

    pthread_create(&th, NULL, trickle_server, &lfd);

    r = new_store(sa.sun_path, 250);
    if (ok(r != NULL, "store for the trickling server")) {
        t0 = now_s();
        pki_result_init(&res);
        ok(pki_redis_ping(r, &res) == PKI_UNAVAILABLE,
           "an answer a byte at a time is given up [%s]", res.log);
        dt = now_s() - t0;
        ok(dt < 0.5, "within the 250 ms timeout, not the answer's 0.7 s "
           "(%.3f s)", dt);
        pki_redis_free(r);
    }

    pthread_join(th, NULL);

    pthread_create(&th, NULL, trickle_pipe_server, &lfd);

    r = new_store(sa.sun_path, 250);
    if (r != NULL) {
        t0 = now_s();
        pki_result_init(&res);
        ok(pki_record_plans_due(r, "x", time(NULL), any_cb, NULL, NULL,
                                &res) == PKI_UNAVAILABLE,
           "a batch answered 100 ms apart is given up [%s]", res.log);
        dt = now_s() - t0;
        ok(dt < 0.6, "within the timeout after the first answer, not the "
           "batch's 0.8 s (%.3f s)", dt);
        pki_redis_free(r);
    }

    pthread_join(th, NULL);

    /* AUTH, SELECT and INFO trickled: the whole setup within one timeout */
    pthread_create(&th, NULL, trickle_setup_server, &lfd);

    memset(&conf, 0, sizeof(conf));
    conf.unix_path = sa.sun_path;
    conf.ns = ns;
    conf.timeout_ms = 250;
    conf.password = "not-a-secret";
    conf.db = 1;
    pki_result_init(&res);
    r = pki_redis_new(&conf, &res);
    if (ok(r != NULL, "store with AUTH and SELECT [%s]", res.detail)) {
        t0 = now_s();
        pki_result_init(&res);
        st = pki_redis_ping(r, &res);
        dt = now_s() - t0;
        ok(st == PKI_UNAVAILABLE, "a setup answered a byte at a time is "
           "given up [%s]", res.log);
        ok(dt < 0.5, "within the 250 ms timeout, not AUTH's and SELECT's "
           "0.5 s each (%.3f s)", dt);
        pki_redis_free(r);
    }

    pthread_join(th, NULL);

    /* a command read by the server a bit at a time: its write too is
     * bounded by the timeout (each write() within the socket's timeout
     * held the thread for as long as the server kept reading) */
    pthread_create(&th, NULL, slow_reader_server, &lfd);

    r = new_store(sa.sun_path, 250);
    if (r != NULL) {
        pki_record_t  rec;

        fill(&rec, "x", "1A2B3C4D5E6F7081");
        rec.der_len = 900 * 1024;
        rec.der = calloc(1, rec.der_len);
        if (rec.der != NULL) {
            rec.der[0] = 0x30;
            t0 = now_s();
            pki_result_init(&res);
            st = pki_record_commit(r, &rec, &res);
            dt = now_s() - t0;
            ok(st == PKI_UNAVAILABLE, "a command the server reads slowly "
               "is given up [%s]", res.log);
            ok(dt < 0.6, "within the 250 ms timeout, not the 1.5 s the "
               "server takes to read it (%.3f s)", dt);
            free(rec.der);
        }
        pki_redis_free(r);
    }

    fake_done(th, lfd, &sa);
}


/* A server that takes AUTH, stops reading (shutdown) and answers +OK: the
 * client's SELECT is then written to a socket nobody reads (EPIPE). */
static void *
closing_server(void *arg)
{
    int   fd, lfd = *(int *) arg;
    char  buf[512];

    fd = accept(lfd, NULL, NULL);
    if (fd >= 0) {
        (void) !read(fd, buf, sizeof(buf));
        shutdown(fd, SHUT_RD);
        (void) !send(fd, "+OK\r\n", 5, MSG_NOSIGNAL);
        usleep(500000);
        close(fd);
    }

    return NULL;
}


/* The setup of a new connection (AUTH, SELECT) to a server that goes away
 * fails as any command does, in a process that does not ignore SIGPIPE
 * (pkictl): run in a child, which SIGPIPE would kill. */
static void
test_setup_sigpipe(void)
{
    int                  lfd, status;
    pid_t                pid;
    pthread_t            th;
    pki_redis_t         *r;
    pki_result_t         res;
    pki_redis_conf_t     conf;
    struct sockaddr_un   sa;

    lfd = fake_listen(&sa, "close", "closing server listens");
    if (lfd < 0) {
        return;
    }

    if (getenv("PKI_TEST_VALGRIND") != NULL) {
        /* the child inherits the parent's connections and leaves by
         * _exit: memcheck counts them lost in it (a signal, not memory,
         * is what this checks; the plain and sanitizer runs do) */
        diag("SIGPIPE in the connection's setup: not under Valgrind");
        close(lfd);
        unlink(sa.sun_path);
        return;
    }

    pthread_create(&th, NULL, closing_server, &lfd);

    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        signal(SIGPIPE, SIG_DFL);
        memset(&conf, 0, sizeof(conf));
        conf.unix_path = sa.sun_path;
        conf.ns = ns;
        conf.timeout_ms = 1000;
        conf.password = "secret";
        conf.db = 1;
        pki_result_init(&res);
        r = pki_redis_new(&conf, &res);
        pki_result_init(&res);
        status = r != NULL && pki_redis_ping(r, &res) == PKI_UNAVAILABLE;
        pki_redis_free(r);
        _exit(status ? 0 : 1);
    }

    status = -1;
    waitpid(pid, &status, 0);
    ok(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a server that stops "
       "reading after AUTH: SELECT fails, no SIGPIPE (status %d%s)",
       WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
       WIFSIGNALED(status) ? ", killed by a signal" : "");

    fake_done(th, lfd, &sa);
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


/* A committed record of CA "rv" with a fresh serial. */
static int
make_good_in(pki_redis_t *r, const char *ca, char serial[41])
{
    static const unsigned char  der[] = { 0x30, 0x03, 0x02, 0x01, 0x01 };
    pki_result_t                res;
    pki_record_t                rec;

    random_serial(serial);
    fill(&rec, ca, serial);
    pki_result_init(&res);
    if (pki_record_reserve(r, &rec, &res) != PKI_OK) {
        return 0;
    }
    rec.der = (unsigned char *) der;
    rec.der_len = sizeof(der);
    pki_result_init(&res);
    return pki_record_commit(r, &rec, &res) == PKI_OK;
}


static int
make_good(pki_redis_t *r, char serial[41])
{
    return make_good_in(r, "rv", serial);
}


typedef struct {
    int     n;
    char    serial[41];
    int     reason;
    time_t  at, inv;
} each_t;


static int
each_cb(void *arg, const char *serial, int reason, time_t at, time_t inv)
{
    each_t  *e = arg;

    if (strcmp(serial, e->serial) == 0) {
        e->reason = reason;
        e->at = at;
        e->inv = inv;
    }
    e->n++;
    return 1;
}


static long long
revgen(pki_redis_t *r)
{
    pki_result_t  res;
    long long     g = -1;

    pki_result_init(&res);
    pki_record_revgen(r, "rv", &g, &res);
    return g;
}


static void
test_revoke(pki_redis_t *r, redisContext *c)
{
    pki_result_t   res;
    pki_record_t   got, rec, *list;
    redisReply    *rep;
    each_t         e;
    long long      g0, g, crl1, crl2;
    size_t         n, i, total;
    char           serial[41], s2[41], key[256], lower[48];
    char           next[PKI_RECORD_CURSOR_MAX], cur[PKI_RECORD_CURSOR_MAX];
    size_t         k;
    int            found, j, pending_seen, dup;
    char           seen[64][41];

    dup = 0;

    pki_result_init(&res);
    is_st(pki_record_revgen(r, "rv", &g0, &res), PKI_OK, "revgen absent");
    ok(g0 == 0, "revgen starts at 0");

    ok(make_good(r, serial), "good record");

    /* good -> keyCompromise with an invalidity date */
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", serial, 1, 1750000000, 1749990000,
                            &got, &res), PKI_OK, "revoke keyCompromise");
    ok(got.status == PKI_CERT_REVOKED && got.reason == 1
       && got.revoked_at == 1750000000 && got.invalidity_date == 1749990000
       && strcmp(got.serial, serial) == 0,
       "updated record returned");
    pki_record_clear(&got);
    g = revgen(r);
    ok(g > g0 && g >= (long long) time(NULL) * 1000000 - 60000000,
       "revgen moved on, to Redis's clock in microseconds (%lld)", g);

    snprintf(key, sizeof(key), "%s{ca:rv}:revoked", ns);
    rep = raw(c, "HGET", key, serial);
    ok(rep != NULL && rep->type == REDIS_REPLY_STRING
       && strcmp(rep->str, "1 1750000000 1749990000") == 0,
       "revoked hash entry [%s]", rep && rep->str ? rep->str : "");
    freeReplyObject(rep);

    snprintf(key, sizeof(key), "%s{ca:rv}:cert:%s", ns, serial);
    rep = raw(c, "HGET", key, "invalidity_date");
    ok(rep != NULL && rep->type == REDIS_REPLY_STRING
       && strcmp(rep->str, "1749990000") == 0, "record invalidity_date");
    freeReplyObject(rep);

    pki_result_init(&res);
    is_st(pki_record_get(r, "rv", serial, &got, &res), PKI_OK, "get revoked");
    ok(got.status == PKI_CERT_REVOKED && got.reason == 1
       && got.invalidity_date == 1749990000, "get reads revocation fields");
    pki_record_clear(&got);

    /* no un-revoke, no second reason */
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", serial, 8, 0, 0, NULL, &res),
          PKI_CONFLICT, "removeFromCRL on a final revocation");
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", serial, 4, 0, 0, NULL, &res),
          PKI_CONFLICT, "second revocation");
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", serial, 6, 0, 0, NULL, &res),
          PKI_CONFLICT, "hold after a final revocation");
    ok(revgen(r) == g, "refusals leave revgen alone");

    /* hold -> release */
    ok(make_good(r, s2), "second good record");
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", s2, 8, 0, 0, NULL, &res),
          PKI_CONFLICT, "removeFromCRL on a good certificate");
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", s2, 6, 1750000100, 0, &got, &res),
          PKI_OK, "hold");
    ok(got.status == PKI_CERT_REVOKED && got.reason == 6, "on hold");
    pki_record_clear(&got);
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", s2, 6, 0, 0, NULL, &res),
          PKI_CONFLICT, "hold on a hold");

    memset(&e, 0, sizeof(e));
    snprintf(e.serial, sizeof(e.serial), "%s", s2);
    e.reason = -1;
    pki_result_init(&res);
    is_st(pki_record_revoked_each(r, "rv", each_cb, &e, &res), PKI_OK,
          "revoked_each");
    ok(e.n == 2 && e.reason == 6 && e.at == 1750000100 && e.inv == 0,
       "revoked_each sees both entries (n=%d)", e.n);

    /* lowercase with leading zeros names the same record */
    snprintf(lower, sizeof(lower), "000%s", s2);
    for (j = 0; lower[j] != '\0'; j++) {
        if (lower[j] >= 'A' && lower[j] <= 'F') {
            lower[j] = (char) (lower[j] - 'A' + 'a');
        }
    }
    g = revgen(r);
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", lower, 8, 0, 0, &got, &res), PKI_OK,
          "release hold (lowercase serial, leading zeros)");
    ok(got.status == PKI_CERT_GOOD && got.reason == 0
       && got.revoked_at == 0 && got.invalidity_date == 0,
       "released: good again");
    pki_record_clear(&got);
    ok(revgen(r) > g, "release moves revgen on");
    snprintf(key, sizeof(key), "%s{ca:rv}:revoked", ns);
    rep = raw(c, "HEXISTS", key, s2);
    ok(rep != NULL && rep->integer == 0, "released serial left the hash");
    freeReplyObject(rep);

    /* the store went back (a restore, a failover): the next change never
     * brings revgen back to a value it held, as INCR would (an OCSP
     * answer cached under it would come back to life) */
    g = revgen(r);
    snprintf(key, sizeof(key), "%s{ca:rv}:revgen", ns);
    snprintf(lower, sizeof(lower), "%lld", g - 1);
    freeReplyObject(raw(c, "SET", key, lower));
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", s2, 6, 0, 0, NULL, &res), PKI_OK,
          "hold after revgen was set back");
    ok(revgen(r) > g, "  revgen past every value it held (%lld > %lld)",
       revgen(r), g);
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", s2, 8, 0, 0, NULL, &res), PKI_OK,
          "  released again");

    /* one set by hand past the clock: counted on exactly */
    freeReplyObject(raw(c, "SET", key, "900000000000000000"));
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", s2, 6, 0, 0, NULL, &res), PKI_OK,
          "hold with revgen past the clock");
    ok(revgen(r) == 900000000000000001LL, "  revgen + 1 (%lld)", revgen(r));
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", s2, 8, 0, 0, NULL, &res), PKI_OK,
          "  released again");
    freeReplyObject(raw(c, "SET", key, lower));

    /* a hold whose record's plan is not a number (written by hand): the
     * release is refused before it changes anything, not half-way (the
     * hold gone from the CRL's set, revgen moved, the record on hold) */
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", s2, 6, 0, 0, NULL, &res), PKI_OK,
          "hold, then its plan spoilt");
    {
        char  ck[256], rk[256];

        snprintf(ck, sizeof(ck), "%s{ca:rv}:cert:%s", ns, s2);
        snprintf(rk, sizeof(rk), "%s{ca:rv}:revoked", ns);
        freeReplyObject(redisCommand(c, "HSET %s plan_at bogus "
                                     "plan_reason 1", ck));
        g = revgen(r);
        pki_result_init(&res);
        ok(pki_record_revoke(r, "rv", s2, 8, 0, 0, NULL, &res) != PKI_OK,
           "  its release refused: %s", res.detail);
        rep = raw(c, "HGET", rk, s2);
        ok(rep != NULL && rep->type == REDIS_REPLY_STRING,
           "  still in the revoked set");
        freeReplyObject(rep);
        ok(revgen(r) == g, "  revgen unchanged");
        freeReplyObject(redisCommand(c, "HDEL %s plan_at plan_reason", ck));
        pki_result_init(&res);
        is_st(pki_record_revoke(r, "rv", s2, 8, 0, 0, NULL, &res), PKI_OK,
              "  released once the plan is gone");
    }

    /* hold -> final reason keeps the hold time */
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", s2, 6, 1750000200, 0, NULL, &res),
          PKI_OK, "hold again");
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", s2, 5, 1750000300, 0, &got, &res),
          PKI_OK, "hold -> cessationOfOperation");
    ok(got.reason == 5 && got.revoked_at == 1750000200,
       "final reason, hold time kept");
    pki_record_clear(&got);
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", s2, 8, 0, 0, NULL, &res),
          PKI_CONFLICT, "no release after a final reason");

    /* bad input */
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", serial, 7, 0, 0, NULL, &res),
          PKI_MALFORMED, "reason 7");
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", serial, 11, 0, 0, NULL, &res),
          PKI_MALFORMED, "reason 11");
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", serial, -1, 0, 0, NULL, &res),
          PKI_MALFORMED, "reason -1");
    random_serial(s2);
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", s2, 1, 0, 0, NULL, &res),
          PKI_NOT_FOUND, "unknown serial");
    pki_result_init(&res);
    ok(pki_record_revoke(r, "rv", "zz", 1, 0, 0, NULL, &res) != PKI_OK,
       "bad serial");

    /* pending is not found */
    fill(&rec, "rv", s2);
    pki_result_init(&res);
    is_st(pki_record_reserve(r, &rec, &res), PKI_OK, "pending record");
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "rv", s2, 1, 0, 0, NULL, &res),
          PKI_NOT_FOUND, "pending record cannot be revoked");

    /* CRL numbers */
    pki_result_init(&res);
    is_st(pki_record_next_crlnumber(r, "rv", &crl1, &res), PKI_OK,
          "crlnumber");
    pki_result_init(&res);
    pki_record_next_crlnumber(r, "rv", &crl2, &res);
    ok(crl1 >= ((long long) time(NULL) - 60) * 1000000 && crl2 > crl1,
       "crlnumber grows, from Redis's clock in microseconds");

    /* listing: 25 more good records, pages of 5 */
    for (j = 0; j < 25; j++) {
        make_good(r, s2);
    }
    strcpy(cur, "0");
    total = 0;
    found = 0;
    pending_seen = 0;
    for (j = 0; j < 100; j++) {
        pki_result_init(&res);
        if (pki_record_list(r, "rv", cur, 5, &list, &n, next, &res)
            != PKI_OK)
        {
            diag("list: %s", res.detail);
            break;
        }
        for (i = 0; i < n; i++) {
            for (k = 0; k < total + i && k < 64; k++) {
                dup += strcmp(seen[k], list[i].serial) == 0;
            }
            if (total + i < 64) {
                strcpy(seen[total + i], list[i].serial);
            }
            if (strcmp(list[i].serial, serial) == 0
                && list[i].status == PKI_CERT_REVOKED)
            {
                found = 1;
            }
            if (list[i].status == PKI_CERT_PENDING) {
                pending_seen = 1;
            }
            pki_record_clear(&list[i]);
        }
        free(list);
        total += n;
        strcpy(cur, next);
        if (strcmp(cur, "0") == 0) {
            break;
        }
    }
    ok(strcmp(cur, "0") == 0 && total == 27 && dup == 0,
       "list pages through all 27 committed records once (got %zu, %d "
       "repeated)", total, dup);
    ok(found, "list returns the revoked record");
    ok(!pending_seen, "list skips pending records");
    pki_result_init(&res);
    ok(pki_record_list(r, "rv", "12x", 5, &list, &n, next, &res)
       == PKI_MALFORMED, "bad cursor");
    pki_result_init(&res);
    ok(pki_record_list(r, "rv", "17", 5, &list, &n, next, &res)
       == PKI_MALFORMED, "an older version's SCAN cursor: bad cursor");
    pki_result_init(&res);
    ok(pki_record_list(r, "rv", "1800000000_1a", 5, &list, &n, next, &res)
       == PKI_MALFORMED, "a cursor with a non-canonical serial: bad cursor");
    pki_result_init(&res);
    ok(pki_record_list(r, "rv", "x_1A", 5, &list, &n, next, &res)
       == PKI_MALFORMED, "a cursor with a bad notAfter: bad cursor");
    {
        /* the cursor after a page of members that are no serials */
        static const char *const  bad[] = {
            "1800000000~", "~5", "1800000000~-1", "1800000000~5x",
            "1800000000~+5", "1800000000~1234567890123456789",
            "1800000000~100000000000000000", "1800000000~1234567890",
            "1800000000~5_1A", "1800000000_1A~5", "x~5"
        };

        for (j = 0; j < (int) (sizeof(bad) / sizeof(bad[0])); j++) {
            pki_result_init(&res);
            ok(pki_record_list(r, "rv", bad[j], 5, &list, &n, next, &res)
               == PKI_MALFORMED, "cursor \"%s\": bad cursor", bad[j]);
        }

        pki_result_init(&res);
        is_st(pki_record_list(r, "rv", "1800000000~3", 5, &list, &n, next,
                              &res),
              PKI_OK, "cursor \"<notAfter>~<N>\" taken");
        for (i = 0; i < n; i++) {
            pki_record_clear(&list[i]);
        }
        free(list);
    }

    /* a cursor whose serial left the index restarts at its notAfter: a
     * repeat, never a gap */
    pki_result_init(&res);
    is_st(pki_record_list(r, "rv", "1800000000_10", 5, &list, &n, next,
                          &res),
          PKI_OK, "a cursor naming no member");
    ok(n == 5 && strcmp(next, "0") != 0,
       "  restarts at the first record of its notAfter (%zu)", n);
    for (i = 0; i < n; i++) {
        pki_record_clear(&list[i]);
    }
    free(list);
    pki_result_init(&res);
    is_st(pki_record_list(r, "nothing", "0", 5, &list, &n, next, &res),
          PKI_OK, "list of an empty CA");
    ok(n == 0 && list == NULL && strcmp(next, "0") == 0, "empty page");
}


/* A counter of the server's INFO stats ("total_connections_received"),
 * -1 when it cannot be read. */
static long long
info_stat(redisContext *c, const char *name)
{
    long long    n;
    const char  *p;
    redisReply  *reply;

    n = -1;
    reply = raw(c, "INFO", "stats", NULL);
    if (reply != NULL && reply->type == REDIS_REPLY_STRING) {
        p = strstr(reply->str, name);
        if (p != NULL && p[strlen(name)] == ':') {
            n = atoll(p + strlen(name) + 1);
        }
    }
    freeReplyObject(reply);

    return n;
}


/* A node demoted to a replica (a failover) answers writes READONLY but
 * keeps its clients: the store drops that connection, so that its next
 * command connects afresh (behind a proxy or a name: to the new master). */
/* A key of another type under the namespace (another application, an
 * operator): a script that writes several keys writes none of them,
 * rather than stop half-way (Lua scripts are not rolled back). */
static int
wt_status(redisContext *c, const char *serial, const char *want)
{
    int          ok;
    char         key[256];
    redisReply  *rep;

    snprintf(key, sizeof(key), "%s{ca:wt}:cert:%s", ns, serial);
    rep = raw(c, "HGET", key, "status");
    ok = rep != NULL && rep->type == REDIS_REPLY_STRING
         && strcmp(rep->str, want) == 0;
    freeReplyObject(rep);

    return ok;
}


static void
wt_set(redisContext *c, const char *what, const char *value)
{
    char         key[256];
    redisReply  *rep;

    snprintf(key, sizeof(key), "%s{ca:wt}:%s", ns, what);
    rep = raw(c, value != NULL ? "SET" : "DEL", key, value);
    freeReplyObject(rep);
}


static void
test_wrongtype(pki_redis_t *r, redisContext *c)
{
    int            i;
    char           serial[41], s2[41], key[256];
    const char    *bad[] = { "1.5", "01", "-0" };
    redisReply    *rep;
    pki_result_t   res;

    ok(make_good_in(r, "wt", serial), "wrongtype: a good record");

    /* the plan: a string, not a sorted set */
    wt_set(c, "revplan", "x");
    pki_result_init(&res);
    ok(pki_record_revoke(r, "wt", serial, 1, 1750000000, 0, NULL, &res)
       != PKI_OK, "wrongtype: revoke refused, the plan holds a string");
    ok(strstr(res.log, "WRONGTYPE") != NULL || strstr(res.detail,
       "WRONGTYPE") != NULL, "... saying so [%s / %s]", res.detail,
       res.log);
    ok(wt_status(c, serial, "good"), "... the record is still good");
    snprintf(key, sizeof(key), "%s{ca:wt}:revoked", ns);
    rep = raw(c, "HEXISTS", key, serial);
    ok(rep != NULL && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0,
       "... and not in the revoked hash");
    freeReplyObject(rep);
    pki_result_init(&res);
    ok(pki_record_plan_revoke(r, "wt", serial, 1, time(NULL) + 3600, "t",
                              NULL, &res) != PKI_OK,
       "wrongtype: a plan refused too");
    ok(wt_status(c, serial, "good"), "... the record is untouched");
    wt_set(c, "revplan", NULL);

    /* the generation: not a counter INCR takes */
    for (i = 0; i < 3; i++) {
        wt_set(c, "revgen", bad[i]);
        pki_result_init(&res);
        ok(pki_record_revoke(r, "wt", serial, 1, 1750000000, 0, NULL, &res)
           != PKI_OK, "wrongtype: revoke refused, revgen \"%s\" is no "
           "counter", bad[i]);
        ok(wt_status(c, serial, "good"), "... the record is still good");
    }
    wt_set(c, "revgen", "0");

    pki_result_init(&res);
    is_st(pki_record_revoke(r, "wt", serial, 1, 1750000000, 0, NULL, &res),
          PKI_OK, "wrongtype: revoked once the keys are right");
    ok(wt_status(c, serial, "revoked"), "... revoked");

    /* the expiry index: a string, not a sorted set */
    wt_set(c, "expiry", "x");
    ok(!make_good_in(r, "wt", s2), "wrongtype: commit refused, the expiry "
       "index holds a string");
    ok(wt_status(c, s2, "pending"), "... the record stays pending (for "
       "the abandon), not good outside the index");
    wt_set(c, "expiry", NULL);

    /* a plan whose time is not a number (written by hand) leaves the
     * queue: the plans after it are still carried out, each pass */
    {
        char          a[41], b[41], ck[256];
        time_t        now;
        unsigned      done;
        pki_status_t  st;

        now = time(NULL);
        pki_result_init(&res);
        ok(make_good_in(r, "pd", a) && make_good_in(r, "pd", b)
           && pki_record_plan_revoke(r, "pd", a, 1, now + 60, "t", NULL,
                                     &res) == PKI_OK
           && pki_record_plan_revoke(r, "pd", b, 1, now + 120, "t", NULL,
                                     &res) == PKI_OK,
           "two plans: %s", res.detail);
        snprintf(ck, sizeof(ck), "%s{ca:pd}:cert:%s", ns, a);
        freeReplyObject(redisCommand(c, "HSET %s plan_at bogus", ck));
        pki_result_init(&res);
        done = 0;
        st = pki_record_revoke_due(r, "pd", now + 300, 0, &done, &res);
        ok(st == PKI_OK && done == 1, "the spoilt plan skipped, the next "
           "carried out (%u): %s", done, res.detail);
    }

    /* a member with a NUL byte ("01\0x": read as serial 01 up to the
     * NUL) leaves the queue too: ZREM'd as "01" it stayed at the head,
     * and a pass of one (or 256 such) never reached the real plans */
    {
        char          a[41], pk[256];
        time_t        now;
        unsigned      done, total;
        int           i;
        pki_status_t  st;
        redisReply   *rp;
        const char   *argv[4];
        size_t        lens[4];

        now = time(NULL);
        pki_result_init(&res);
        ok(make_good_in(r, "pn", a)
           && pki_record_plan_revoke(r, "pn", a, 1, now + 60, "t", NULL,
                                     &res) == PKI_OK,
           "a plan behind a member with a NUL byte: %s", res.detail);
        snprintf(pk, sizeof(pk), "%s{ca:pn}:revplan", ns);
        argv[0] = "ZADD";
        argv[1] = pk;
        argv[2] = "1";
        argv[3] = "01\0x";
        lens[0] = 4;
        lens[1] = strlen(pk);
        lens[2] = 1;
        lens[3] = 4;
        freeReplyObject(redisCommandArgv(c, 4, argv, lens));

        total = 0;
        st = PKI_OK;
        for (i = 0; i < 3 && st == PKI_OK; i++) {
            pki_result_init(&res);
            done = 0;
            st = pki_record_revoke_due(r, "pn", now + 300, 1, &done, &res);
            total += done;
        }
        ok(st == PKI_OK && total == 1, "the member dropped, the plan "
           "behind it carried out (%u in 3 passes of one): %s", total,
           res.detail);
        rp = raw(c, "ZCARD", pk, NULL);
        ok(rp != NULL && rp->type == REDIS_REPLY_INTEGER && rp->integer == 0,
           "the plan is empty");
        freeReplyObject(rp);
    }
}


/* Whether a planned revocation is due is judged by the store's clock too,
 * not by the clock of the host that asks alone: one whose clock is behind
 * must not move or replace a plan that every other host already answers
 * revoked. */
static void
test_plan_skew(pki_redis_t *r)
{
    char          a[41];
    time_t        now;
    pki_status_t  st;
    pki_record_t  rec;
    pki_result_t  res;

    memset(&rec, 0, sizeof(rec));
    now = time(NULL);
    pki_result_init(&res);
    ok(make_good_in(r, "sk", a)
       && pki_record_plan_revoke(r, "sk", a, 1, now - 10, "t", NULL, &res)
          == PKI_OK, "skew: a plan due 10 s ago: %s", res.detail);

    clock_ahead = -60;

    pki_result_init(&res);
    is_st(pki_record_plan_revoke(r, "sk", a, 1, now + 86400, "t", NULL,
                                 &res), PKI_CONFLICT,
          "skew: a host 60 s behind cannot move a plan that is due");
    pki_result_init(&res);
    is_st(pki_record_revoke(r, "sk", a, 4, 0, 0, NULL, &res), PKI_CONFLICT,
          "skew: nor replace it by a revocation of another reason");
    pki_result_init(&res);
    st = pki_record_get(r, "sk", a, &rec, &res);
    ok(st == PKI_OK && rec.revoke_planned == now - 10 && rec.planned_reason == 1
       && (rec.status == PKI_CERT_GOOD || rec.reason == 1),
       "skew: the plan is as it was (%lld, reason %d)",
       (long long) rec.revoke_planned, rec.planned_reason);
    pki_record_clear(&rec);
    memset(&rec, 0, sizeof(rec));

    clock_ahead = 0;
}


static void
test_readonly(pki_redis_t *r, redisContext *c)
{
    long long     n0, n1;
    pki_record_t  rec;
    pki_result_t  res;

    pki_result_init(&res);
    is_st(pki_redis_ping(r, &res), PKI_OK, "readonly: ping");

    freeReplyObject(raw(c, "REPLICAOF", "127.0.0.1", "1"));

    fill(&rec, "ro", "7e57");
    pki_result_init(&res);
    is_st(pki_record_reserve(r, &rec, &res), PKI_UNAVAILABLE,
          "readonly: a write to a replica is unavailable");
    ok(strstr(res.log, "READONLY") != NULL, "  the log says why: %s",
       res.log);

    freeReplyObject(raw(c, "REPLICAOF", "NO", "ONE"));

    n0 = info_stat(c, "total_connections_received");
    pki_result_init(&res);
    is_st(pki_redis_ping(r, &res), PKI_OK, "readonly: next command works");
    n1 = info_stat(c, "total_connections_received");
    ok(n0 >= 0 && n1 == n0 + 1, "  on a new connection (%lld, %lld)",
       n0, n1);
}


/* One page: its records and how many commands it cost the server (the
 * INFO calls around it excluded; a script's own commands count). */
static long long
list_page(pki_redis_t *r, redisContext *c, const char *ca,
    const char *cursor, size_t limit, size_t *n, char *next, double *secs)
{
    pki_result_t   res;
    pki_record_t  *list;
    long long      before, after;
    double         t0;
    size_t         i;

    before = info_stat(c, "total_commands_processed");
    t0 = now_s();
    pki_result_init(&res);
    if (pki_record_list(r, ca, cursor, limit, &list, n, next, &res)
        != PKI_OK)
    {
        diag("list: %s", res.detail);
        return -1;
    }
    *secs = now_s() - t0;
    after = info_stat(c, "total_commands_processed");

    for (i = 0; i < *n; i++) {
        pki_record_clear(&list[i]);
    }
    free(list);

    return after - before - 1;
}


/*
 * A page's work is the page's: 200000 keys that are not the CA's (other
 * objects, other CAs) cost a page of a CA with 0 or 1 certificates
 * nothing.  The listing used to SCAN the keyspace until the page was full
 * or the scan ended: one limit=1 page ran a SCAN per key or so.
 */
static void
test_list_bounded(pki_redis_t *r, redisContext *c)
{
    redisReply  *rep;
    long long    cmds;
    double       secs;
    size_t       n;
    char         serial[41], next[PKI_RECORD_CURSOR_MAX], pfx[96];
    char         cur[PKI_RECORD_CURSOR_MAX];
    char         script[] = "for i = 1, tonumber(ARGV[2]) do "
                            "redis.call('SET', ARGV[1] .. i, 'x') end "
                            "return 1";
    const char  *argv[5];
    size_t       lens[5];

    snprintf(pfx, sizeof(pfx), "%s{ca:noise}:cert:", ns);
    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = "0";
    argv[3] = pfx;
    argv[4] = "200000";
    for (n = 0; n < 5; n++) {
        lens[n] = strlen(argv[n]);
    }
    rep = redisCommandArgv(c, 5, argv, lens);
    ok(rep != NULL && rep->type == REDIS_REPLY_INTEGER,
       "200000 keys of no listed CA");
    freeReplyObject(rep);

    ok(make_good_in(r, "lone", serial), "a CA with one certificate");

    cmds = list_page(r, c, "lone", "0", 1, &n, next, &secs);
    ok(cmds >= 0 && cmds <= 6 && n == 1,
       "limit=1 over 1 certificate: %lld commands, %.3f s, %zu record",
       cmds, secs, n);

    snprintf(cur, sizeof(cur), "%s", next);
    cmds = list_page(r, c, "lone", cur, 1, &n, next, &secs);
    ok(cmds >= 0 && cmds <= 6 && n == 0 && strcmp(next, "0") == 0,
       "  its next page: %lld commands, %.3f s, done", cmds, secs);

    cmds = list_page(r, c, "lone", "0", 2, &n, next, &secs);
    ok(cmds >= 0 && cmds <= 6 && n == 1 && strcmp(next, "0") == 0,
       "limit=2 over 1 certificate: %lld commands, %.3f s, done", cmds,
       secs);

    cmds = list_page(r, c, "void", "0", 1, &n, next, &secs);
    ok(cmds >= 0 && cmds <= 6 && n == 0 && strcmp(next, "0") == 0,
       "limit=1 over no certificate: %lld commands, %.3f s, done", cmds,
       secs);

    /* the noise out again */
    rep = redisCommand(c, "EVAL %s 0 %s %s",
                       "for i = 1, tonumber(ARGV[2]) do "
                       "redis.call('DEL', ARGV[1] .. i) end return 1",
                       pfx, "200000");
    freeReplyObject(rep);
}


/* A record key of another type at an indexed serial (something else
 * writing under the namespace) is passed over like a corrupt record, and
 * said in the log: WRONGTYPE used to fail the whole page.  An error of
 * the store itself still fails it. */
static int
list_has(const pki_record_t *list, size_t n, const char *serial)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (strcmp(list[i].serial, serial) == 0) {
            return 1;
        }
    }

    return 0;
}


static void
test_list_wrongtype(pki_redis_t *r, redisContext *c)
{
    int            i, bad;
    char           s[5][41], key[256], next[PKI_RECORD_CURSOR_MAX];
    size_t         n, k;
    redisReply    *rep;
    pki_status_t   st;
    pki_record_t  *list;
    pki_result_t   res;

    bad = 1;
    for (i = 0; i < 4; i++) {
        bad &= make_good_in(r, "lw", s[i]);
    }
    ok(bad, "list wrongtype: four good records");

    /* and a corrupt one, listed after them (the greatest serial of its
     * notAfter): passing it over keeps the notes of the keys before it */
    {
        static const unsigned char  der[] = { 0x30, 0x03, 0x02, 0x01, 0x01 };
        pki_record_t                rec;

        snprintf(s[4], sizeof(s[4]), "7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF");
        fill(&rec, "lw", s[4]);
        pki_result_init(&res);
        bad = pki_record_reserve(r, &rec, &res) == PKI_OK;
        rec.der = (unsigned char *) der;
        rec.der_len = sizeof(der);
        pki_result_init(&res);
        bad = bad && pki_record_commit(r, &rec, &res) == PKI_OK;
        snprintf(key, sizeof(key), "%s{ca:lw}:cert:%s", ns, s[4]);
        rep = redisCommand(c, "HSET %s status weird", key);
        ok(bad && rep != NULL && rep->type == REDIS_REPLY_INTEGER,
           "list wrongtype: a corrupt record %s", s[4]);
        freeReplyObject(rep);
    }

    /* s[1] a string, s[2] a list: both still in the expiry index */
    snprintf(key, sizeof(key), "%s{ca:lw}:cert:%s", ns, s[1]);
    freeReplyObject(raw(c, "DEL", key, NULL));
    rep = raw(c, "SET", key, "x");
    ok(rep != NULL && rep->type == REDIS_REPLY_STATUS,
       "list wrongtype: a string at cert:%s", s[1]);
    freeReplyObject(rep);
    snprintf(key, sizeof(key), "%s{ca:lw}:cert:%s", ns, s[2]);
    freeReplyObject(raw(c, "DEL", key, NULL));
    rep = raw(c, "RPUSH", key, "x");
    ok(rep != NULL && rep->type == REDIS_REPLY_INTEGER,
       "list wrongtype: a list at cert:%s", s[2]);
    freeReplyObject(rep);

    list = NULL;
    n = 0;
    pki_result_init(&res);
    st = pki_record_list(r, "lw", "0", 10, &list, &n, next, &res);
    is_st(st, PKI_OK, "list wrongtype: the page is listed");
    ok(n == 2 && list_has(list, n, s[0]) && list_has(list, n, s[3])
       && strcmp(next, "0") == 0,
       "  with the two good records only (%zu, next %s)", n, next);
    ok(res.detail[0] == '\0', "  no error in the result [%s]", res.detail);
    snprintf(key, sizeof(key), "{ca:lw}:cert:%s is not a hash", s[1]);
    ok(strstr(res.log, key) != NULL, "  the log names the string [%s]",
       res.log);
    snprintf(key, sizeof(key), "{ca:lw}:cert:%s is not a hash", s[2]);
    ok(strstr(res.log, key) != NULL, "  and the list");
    ok(strstr(res.log, s[4]) == NULL && strstr(res.log, "corrupt") == NULL,
       "  and not the corrupt record");
    for (k = 0; k < n; k++) {
        pki_record_clear(&list[k]);
    }
    free(list);

    /* pages of one: the bad records are pages with nothing to list, whose
     * cursor goes on past them */
    snprintf(next, sizeof(next), "0");
    bad = 0;
    for (i = 0; i < 7; i++) {
        char  cur[PKI_RECORD_CURSOR_MAX];

        snprintf(cur, sizeof(cur), "%s", next);
        pki_result_init(&res);
        if (pki_record_list(r, "lw", cur, 1, &list, &n, next, &res)
            != PKI_OK)
        {
            diag("list: %s %s", res.detail, res.log);
            bad = -1;
            break;
        }
        bad += (int) n;
        for (k = 0; k < n; k++) {
            pki_record_clear(&list[k]);
        }
        free(list);
        if (strcmp(next, "0") == 0) {
            break;
        }
    }
    ok(bad == 2 && i == 5, "list wrongtype: pages of one list the two "
       "good records (%d) and end after 6 pages (%d)", bad, i + 1);

    /* another error of the store still fails the page: HGETALL denied */
    rep = redisCommand(c, "ACL SETUSER default -hgetall");
    ok(rep != NULL && rep->type == REDIS_REPLY_STATUS,
       "list wrongtype: HGETALL denied to the store's user");
    freeReplyObject(rep);
    list = NULL;
    n = 0;
    pki_result_init(&res);
    st = pki_record_list(r, "lw", "0", 10, &list, &n, next, &res);
    freeReplyObject(redisCommand(c, "ACL SETUSER default +hgetall"));
    is_st(st, PKI_UNAVAILABLE, "  the page fails");
    ok(n == 0 && list == NULL && strcmp(next, "0") == 0
       && (strstr(res.log, "NOPERM") != NULL
           || strstr(res.log, "can't run this command") != NULL),
       "  with nothing listed, saying why [%s]", res.log);
}

/* pki_redis_probe (nginx -t): the cause of each failure, within its
 * timeout whatever the store's; the password in no log. */
static void
test_probe(redisContext *c)
{
    int                  lfd, sfd;
    double               t0, dt;
    pki_redis_t         *r, *r2;
    pki_result_t         res;
    pki_redis_conf_t     conf;
    pki_redis_probe_t    why;
    struct sockaddr_un   sa;

    /* a store that answers: OK, and aof_enabled known */
    r = new_store(sock, 1000);
    pki_result_init(&res);
    why = pki_redis_probe(r, 1000, &res);
    ok(why == PKI_REDIS_PROBE_OK && res.log[0] == '\0'
       && pki_redis_aof(r) != -1, "probe: a live store answers (%d, %s)",
       (int) why, res.log);

    /* the same server and db, another namespace: one probe does */
    r2 = new_store(sock, 5000);
    ok(pki_redis_same(r, r2), "probe: another namespace, the same store");
    pki_redis_free(r2);

    memset(&conf, 0, sizeof(conf));
    conf.unix_path = sock;
    conf.db = 99;
    conf.timeout_ms = 1000;
    pki_result_init(&res);
    r2 = pki_redis_new(&conf, &res);
    ok(r2 != NULL && !pki_redis_same(r, r2), "probe: another db, another "
       "store");
    pki_result_init(&res);
    why = pki_redis_probe(r2, 1000, &res);
    ok(why == PKI_REDIS_PROBE_SELECT
       && strncmp(res.log, "SELECT failed", 13) == 0,
       "probe: db 99: SELECT failed (%s)", res.log);
    pki_redis_free(r2);
    pki_redis_free(r);

    /* no such socket */
    r = new_store("/nonexistent/redis.sock", 1000);
    pki_result_init(&res);
    why = pki_redis_probe(r, 1000, &res);
    ok(why == PKI_REDIS_PROBE_NO_SOCKET
       && strncmp(res.log, "no such socket", 14) == 0,
       "probe: a missing socket: no such socket (%s)", res.log);
    pki_redis_free(r);

    /* at run time too, a failed connect names where it went: a
     * mistyped path or port shows in the error log */
    r = new_store("/nonexistent/redis.sock", 1000);
    pki_result_init(&res);
    ok(pki_redis_ping(r, &res) != PKI_OK
       && strstr(res.log, "(unix socket \"/nonexistent/redis.sock\")")
          != NULL, "a missing socket: its path is said (%s)", res.log);
    pki_redis_free(r);

    memset(&conf, 0, sizeof(conf));
    conf.host = "127.0.0.1";
    conf.port = 1;
    conf.timeout_ms = 1000;
    pki_result_init(&res);
    r = pki_redis_new(&conf, &res);
    pki_result_init(&res);
    ok(r != NULL && pki_redis_ping(r, &res) != PKI_OK
       && strstr(res.log, "(127.0.0.1 port 1)") != NULL,
       "a port nobody listens on: host and port are said (%s)", res.log);
    pki_redis_free(r);

    /* a socket file nobody listens on (bound, not listening) */
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "/tmp/pki-test-stale-%ld.sock",
             (long) getpid());
    unlink(sa.sun_path);
    sfd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (ok(sfd >= 0 && bind(sfd, (struct sockaddr *) &sa, sizeof(sa)) == 0,
           "a stale socket file"))
    {
        r = new_store(sa.sun_path, 1000);
        pki_result_init(&res);
        why = pki_redis_probe(r, 1000, &res);
        ok(why == PKI_REDIS_PROBE_REFUSED
           && strncmp(res.log, "connection refused", 18) == 0,
           "probe: nobody listens: connection refused (%s)", res.log);
        pki_redis_free(r);
    }
    if (sfd >= 0) {
        close(sfd);
    }
    unlink(sa.sun_path);

    /* a server that never answers: timed out within the probe's time,
     * not the store's 30 s */
    lfd = fake_listen(&sa, "mute", "a mute server listens");
    if (lfd >= 0) {
        r = new_store(sa.sun_path, 30000);
        t0 = now_s();
        pki_result_init(&res);
        why = pki_redis_probe(r, 300, &res);
        dt = now_s() - t0;
        ok(why == PKI_REDIS_PROBE_TIMEOUT
           && strncmp(res.log, "timed out", 9) == 0,
           "probe: a mute server: timed out (%s)", res.log);
        ok(dt < 0.6, "  within the probe's 300 ms (%.3f s)", dt);
        pki_redis_free(r);
        close(lfd);
        unlink(sa.sun_path);
    }

    /* a password: wrong, none */
    {
        const char  *argv[4] = { "CONFIG", "SET", "requirepass",
                                 "probe-right-pw" };
        size_t       lens[4] = { 6, 3, 11, 14 };
        redisReply  *rp;

        rp = redisCommandArgv(c, 4, argv, lens);
        if (!ok(rp != NULL && rp->type == REDIS_REPLY_STATUS,
                "CONFIG SET requirepass"))
        {
            freeReplyObject(rp);
            return;
        }
        freeReplyObject(rp);

        memset(&conf, 0, sizeof(conf));
        conf.unix_path = sock;
        conf.password = "probe-wrong-pw";
        conf.timeout_ms = 1000;
        pki_result_init(&res);
        r = pki_redis_new(&conf, &res);
        pki_result_init(&res);
        why = pki_redis_probe(r, 1000, &res);
        ok(why == PKI_REDIS_PROBE_AUTH
           && strncmp(res.log, "authentication failed", 21) == 0,
           "probe: a wrong password: authentication failed (%s)", res.log);
        ok(strstr(res.log, "probe-wrong-pw") == NULL
           && strstr(res.detail, "probe-wrong-pw") == NULL,
           "  the password in no text");
        pki_redis_free(r);

        r = new_store(sock, 1000);
        pki_result_init(&res);
        why = pki_redis_probe(r, 1000, &res);
        ok(why == PKI_REDIS_PROBE_AUTH
           && strncmp(res.log, "authentication required", 23) == 0,
           "probe: no password: authentication required (%s)", res.log);
        pki_redis_free(r);

        /* the oracle's connection stays authenticated */
        argv[3] = "";
        lens[3] = 0;
        rp = redisCommandArgv(c, 4, argv, lens);
        ok(rp != NULL && rp->type == REDIS_REPLY_STATUS,
           "CONFIG SET requirepass \"\" (back)");
        freeReplyObject(rp);
    }
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

    test_huge_array();
    test_huge_string();
    test_endless_scan();
    test_trickle();
    test_setup_sigpipe();
    test_aof_redis6();

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

    /* A server that evicts keys once full is not used: a new connection
     * asks its policy.  allkeys-* evicts records; volatile-* the marks of
     * spent nonces and seen SCEP messages (a replay would pass) */
    {
        static const char  *pol[] = { "allkeys-lru", "allkeys-random",
                                      "volatile-lru", "volatile-ttl",
                                      "noeviction" };
        size_t               i;
        redisReply          *rp;

        for (i = 0; i < sizeof(pol) / sizeof(pol[0]); i++) {
            const char  *argv[4] = { "CONFIG", "SET", "maxmemory-policy",
                                     "noeviction" };
            size_t       lens[4] = { 6, 3, 16, 10 };
            int          evicts = strcmp(pol[i], "noeviction") != 0;

            /* a connection opened under noeviction */
            freeReplyObject(redisCommandArgv(c, 4, argv, lens));
            pki_redis_disconnect(r);
            pki_result_init(&res);
            (void) pki_redis_ping(r, &res);

            argv[3] = pol[i];
            lens[3] = strlen(pol[i]);
            rp = redisCommandArgv(c, 4, argv, lens);
            ok(rp != NULL && rp->type == REDIS_REPLY_STATUS,
               "CONFIG SET maxmemory-policy %s", pol[i]);
            freeReplyObject(rp);

            /* the open connection is not asked again */
            pki_result_init(&res);
            is_st(pki_redis_ping(r, &res), PKI_OK, "  ping on the open "
                  "connection");
            pki_redis_disconnect(r);
            pki_result_init(&res);
            {
                pki_status_t  st = pki_redis_ping(r, &res);

                ok(st == (evicts ? PKI_UNAVAILABLE : PKI_OK), "  a new "
                   "connection: %s (status %d, %s)",
                   evicts ? "refused" : "taken", (int) st, res.log);
            }
            if (evicts) {
                char  want[64];

                snprintf(want, sizeof(want), "maxmemory-policy %s evicts",
                         pol[i]);
                ok(strstr(res.log, want) != NULL
                   && strstr(res.log, "noeviction") != NULL,
                   "  the log names the policy and what to set");
            }
        }
    }

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

    test_aof(r, c);
    test_round_trip(r, c);
    test_unreachable();
    test_probe(c);
    test_threads(r, c);
    test_revoke(r, c);
    test_wrongtype(r, c);
    test_plan_skew(r);
    test_readonly(r, c);
    test_list_bounded(r, c);
    test_list_wrongtype(r, c);

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
