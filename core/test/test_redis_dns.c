/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A Redis store named by a host name: the lookup is bounded by the store's
 * timeout.  The test runs in a mount namespace of its own (root only) with
 * its own /etc/hosts and /etc/resolv.conf: a name in that hosts file
 * resolves and connects to a fake server on 127.0.0.1; any other name goes
 * to a DNS server that never answers (a UDP socket nobody reads), with
 * 2 s a try and two tries (the old code waited all 4 s).
 */

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>

#include "pki.h"
#include "test/unit.h"


/* The address of the silent DNS server: a loopback address of its own, so
 * that nothing else on the machine answers there. */
#define DNS_ADDR  "127.0.0.153"


static char  dir[256];
static int   srv_port;


/* A fake Redis: answers PING with PONG, INFO as a server without INFO
 * (the maxmemory-policy is then not known and the connection taken), on
 * every connection until the test ends. */
static void *
fake_conn(void *arg)
{
    int          fd = (int) (long) arg;
    char         buf[1024], *p;
    ssize_t      n;
    const char  *pong = "+PONG\r\n", *noinfo = "-ERR unknown command\r\n";

    while ((n = read(fd, buf, sizeof(buf) - 1)) > 0) {
        buf[n] = '\0';
        for (p = buf; (p = strchr(p, '$')) != NULL; p++) {
            if (strncmp(p, "$4\r\nPING", 8) == 0) {
                (void) !send(fd, pong, strlen(pong), MSG_NOSIGNAL);
            } else if (strncmp(p, "$4\r\nINFO", 8) == 0) {
                (void) !send(fd, noinfo, strlen(noinfo), MSG_NOSIGNAL);
            }
        }
    }

    close(fd);
    return NULL;
}


static void *
fake_server(void *arg)
{
    int        fd, lfd = *(int *) arg;
    pthread_t  th;

    while ((fd = accept(lfd, NULL, NULL)) >= 0) {
        if (pthread_create(&th, NULL, fake_conn, (void *) (long) fd) == 0) {
            pthread_detach(th);
        } else {
            close(fd);
        }
    }

    return NULL;
}


static int
listen_tcp(const char *addr, int type, int *port)
{
    int                 fd, on;
    socklen_t           len;
    struct sockaddr_in  sa;

    fd = socket(AF_INET, type, 0);
    if (fd < 0) {
        return -1;
    }

    on = 1;
    (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short) *port);
    inet_pton(AF_INET, addr, &sa.sin_addr);

    len = sizeof(sa);
    if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0
        || (type == SOCK_STREAM && listen(fd, 16) != 0)
        || getsockname(fd, (struct sockaddr *) &sa, &len) != 0)
    {
        close(fd);
        return -1;
    }

    *port = ntohs(sa.sin_port);
    return fd;
}


/* Writes text to dir/name and binds it over path. */
static int
bind_file(const char *name, const char *path, const char *text)
{
    char   file[512];
    FILE  *f;

    snprintf(file, sizeof(file), "%s/%s", dir, name);
    f = fopen(file, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
        return 0;
    }

    return mount(file, path, "none", MS_BIND, NULL) == 0;
}


static pki_redis_t *
store(const char *host, int timeout_ms)
{
    pki_redis_conf_t  conf;
    pki_result_t      res;
    pki_redis_t      *r;

    memset(&conf, 0, sizeof(conf));
    conf.host = host;
    conf.port = srv_port;
    conf.ns = "dns-test:";
    conf.timeout_ms = timeout_ms;

    pki_result_init(&res);
    r = pki_redis_new(&conf, &res);
    if (r == NULL) {
        diag("pki_redis_new(%s): %s", host, res.detail);
    }

    return r;
}


/* PING through a store for host: its status, the seconds it took, the
 * log text in log. */
static pki_status_t
ping(const char *host, int timeout_ms, double *secs, char *log, size_t size)
{
    double         t0;
    pki_redis_t   *r;
    pki_result_t   res;
    pki_status_t   st;

    r = store(host, timeout_ms);
    if (r == NULL) {
        *secs = 0;
        snprintf(log, size, "no store");
        return PKI_INTERNAL;
    }

    pki_result_init(&res);
    t0 = unit_now();
    st = pki_redis_ping(r, &res);
    *secs = unit_now() - t0;
    snprintf(log, size, "%s", res.log);
    pki_redis_free(r);

    return st;
}


int
main(void)
{
    int           lfd, dfd, dport;
    char          hosts[256], log[1024];
    double        secs;
    const char   *tmp;
    pthread_t     th;
    pki_status_t  st;

    if (geteuid() != 0) {
        skip_all("needs root (a mount namespace with its own resolv.conf)");
    }

    if (unshare(CLONE_NEWNS) != 0
        || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) != 0)
    {
        char  why[160];

        snprintf(why, sizeof(why), "no mount namespace here: %s",
                 strerror(errno));
        skip_all(why);
    }

    tmp = getenv("PKI_TEST_TMPDIR");
    snprintf(dir, sizeof(dir), "%s/dns-XXXXXX", tmp ? tmp : "/tmp");
    if (!ok(mkdtemp(dir) != NULL, "a directory for the files")) {
        return done_testing();
    }

    /* the silent DNS server: bound, never read */
    dport = 53;
    dfd = listen_tcp(DNS_ADDR, SOCK_DGRAM, &dport);
    srv_port = 0;
    lfd = listen_tcp("127.0.0.1", SOCK_STREAM, &srv_port);

    snprintf(hosts, sizeof(hosts), "127.0.0.1 localhost\n"
             "127.0.0.1 redis-a.pki-test\n");

    if (!ok(dfd >= 0 && lfd >= 0
            && bind_file("hosts", "/etc/hosts", hosts)
            && bind_file("resolv.conf", "/etc/resolv.conf",
                         "nameserver " DNS_ADDR "\n"
                         "options timeout:2 attempts:2\n"),
            "the namespace's hosts and resolv.conf, a silent DNS server "
            "on %s:53 and a fake Redis on port %d (%s)", DNS_ADDR, srv_port,
            strerror(errno)))
    {
        return done_testing();
    }

    if (!ok(pthread_create(&th, NULL, fake_server, &lfd) == 0,
            "the fake Redis runs"))
    {
        return done_testing();
    }

    /* a name in the hosts file: looked up, connected, answered */
    st = ping("redis-a.pki-test", 1000, &secs, log, sizeof(log));
    ok(st == PKI_OK, "a host name from the hosts file connects (%.3f s) "
       "[%s]", secs, log);

    /* a literal address: no lookup */
    st = ping("127.0.0.1", 1000, &secs, log, sizeof(log));
    ok(st == PKI_OK, "a literal address connects (%.3f s) [%s]", secs, log);

    /* a name only DNS could answer: given up on at the timeout, not after
     * the resolver's tries (2 s, twice) */
    st = ping("redis-b.pki-test", 500, &secs, log, sizeof(log));
    ok(st == PKI_UNAVAILABLE && secs >= 0.45 && secs < 2.0
       && strstr(log, "redis-b.pki-test") != NULL
       && strstr(log, "timeout (500 ms)") != NULL,
       "a lookup DNS does not answer ends at the store's timeout: "
       "unavailable after %.3f s [%s]", secs, log);

    /* again while the first lookup still waits in glibc's helper thread */
    st = ping("redis-b.pki-test", 300, &secs, log, sizeof(log));
    ok(st == PKI_UNAVAILABLE && secs >= 0.25 && secs < 2.0,
       "a second one too, with the first still pending: %.3f s [%s]", secs,
       log);

    /* the store works again for a name that resolves */
    st = ping("redis-a.pki-test", 1000, &secs, log, sizeof(log));
    ok(st == PKI_OK, "a resolvable name still connects after them "
       "(%.3f s) [%s]", secs, log);

    /* the lookups given up on finish in glibc's helper threads (two tries
     * of 2 s); waiting for them lets a leak checker see their memory
     * freed by the completion */
    sleep(5);

    /* accept() returns: the server's thread ends */
    shutdown(lfd, SHUT_RDWR);
    pthread_join(th, NULL);
    close(lfd);
    close(dfd);
    umount("/etc/hosts");
    umount("/etc/resolv.conf");

    {
        char  f[512];

        snprintf(f, sizeof(f), "%s/hosts", dir);
        unlink(f);
        snprintf(f, sizeof(f), "%s/resolv.conf", dir);
        unlink(f);
        rmdir(dir);
    }

    return done_testing();
}
