/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * ACME challenge validation (RFC 8555 section 8, RFC 8737, RFC 8738): the
 * outbound side of http-01, dns-01 and tls-alpn-01.
 *
 * Blocking code for a thread-pool thread.  Every socket is non-blocking and
 * every wait is a poll() bounded by what is left of the overall deadline
 * (conf->timeout_ms), so one validation never takes longer than that, no
 * matter how slow or hostile the other side is; OpenSSL reads nothing past
 * it either (av_tls_bio_cb).  Everything read is capped: HTTP headers and
 * body, redirects, DNS messages, CNAME chains.  What TLS costs is bounded
 * too: no finite-field DH, whose size the other side picks.
 *
 * Names resolve through a small DNS client of our own (UDP, TCP when the
 * answer is truncated) talking to conf->resolver or the servers of
 * /etc/resolv.conf; conf->resolve_to replaces that for labs: every host
 * (identifier, IP literal and redirect target alike) then connects to that
 * address.  Before any connect() each target address is classified: the
 * unspecified address, multicast and the 240/4 block are never contacted;
 * loopback, private, link-local, CGNAT and documentation ranges only with
 * conf->allow_private.
 *
 * Problem types (out->problem_type) and statuses:
 *   rejectedIdentifier  PKI_POLICY       identifier unusable for this
 *                                        challenge, or an address of it
 *                                        refused by the rules above
 *   dns                 PKI_UNAVAILABLE  lookup failed: NXDOMAIN, SERVFAIL,
 *                                        timeout, malformed answer, no
 *                                        A/AAAA record (a failed lookup
 *                                        of one family is none when the
 *                                        other gives an address)
 *   connection          PKI_UNAVAILABLE  connect/read failed or timed out,
 *                                        broken HTTP, redirect refused
 *                                        (PKI_POLICY: to an address the
 *                                        rules above refuse)
 *   tls                 PKI_UNAVAILABLE  TLS handshake failed, ALPN
 *                                        acme-tls/1 not negotiated
 *   unauthorized        PKI_UNAUTHORIZED the server answered without a
 *                                        proof: HTTP status not 200, no TXT
 *                                        record at the name
 *   incorrectResponse   PKI_UNAUTHORIZED the proof is wrong: body, TXT
 *                                        value, tls-alpn-01 certificate
 *   caa                 PKI_FORBIDDEN    pki_acme_caa_check: the CAA
 *                                        records of the name do not let
 *                                        this CA issue
 *   malformed           PKI_MALFORMED    bad arguments from the caller
 *   serverInternal      PKI_INTERNAL     out of memory, unusable conf
 *
 * out->res.detail goes to the client, who picks the names and redirect
 * targets the CA looks up and contacts: it never holds the resolver's
 * address, an address a name resolved to unless it is a public one, the
 * bytes a server reached through a redirect sent (their length only), nor
 * a TXT value found through a CNAME.  Those go to out->res.log (the
 * server's error log).
 *
 * SIGPIPE is blocked in the calling thread for the duration of a call (TLS
 * writes go through write()) and one raised meanwhile is swallowed.
 */

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "pki.h"
#include "audit_int.h"


#define AV_REDIRECTS_DEFAULT 10
#define AV_HEAD_MAX          8192       /* HTTP status line + headers   */
#define AV_HTTP_INTERIM_MAX  5          /* 1xx heads before the final   */
#define AV_BODY_MAX          8192       /* http-01 body                 */
#define AV_RAW_MAX           (AV_BODY_MAX * 2 + 1024)  /* chunked body  */
#define AV_URL_MAX           2048
#define AV_NAME_MAX          256        /* dotted name + NUL            */
#define AV_DNS_NAME_LEN      253        /* a dotted name, as queried    */
#define AV_DNS_JUMPS_MAX     128        /* compression pointers a name
                                           follows (a name has at most
                                           127 labels)                  */
#define AV_ADDRS_MAX         8
#define AV_TOKEN_MAX         256
#define AV_KEYAUTHZ_MAX      1024

#define AV_DNS_PORT          53
#define AV_DNS_SERVERS_MAX   3
#define AV_DNS_TRY_MS        2000       /* one UDP attempt              */
#define AV_DNS_UDP_MAX       4096
#define AV_DNS_TCP_MAX       65535
#define AV_DNS_EDNS_SIZE     1232
#define AV_DNS_ANS_MAX       64         /* answer RRs looked at         */
#define AV_DNS_RR_MAX        16         /* records of the asked type    */
#define AV_DNS_RDATA_MAX     256
#define AV_DNS_CNAME_MAX     8

#define AV_T_A               1
#define AV_T_CNAME           5
#define AV_T_TXT             16
#define AV_T_AAAA            28
#define AV_T_OPT             41
#define AV_T_CAA             257

#define AV_ADDR_OK           0
#define AV_ADDR_PRIVATE      1
#define AV_ADDR_NEVER        2

#define AV_IO_TIMEOUT        (-2)
#define AV_CONNECT_PART      5000       /* ms, an address but the last  */


typedef struct {
    const pki_acme_validate_conf_t  *conf;
    pki_acme_validate_out_t         *out;
    long long                        deadline;     /* monotonic ms */
    unsigned                         timeout_ms;
    unsigned                         http_port;
    unsigned                         tls_port;
    unsigned                         max_redirects;
    unsigned                         hop;   /* http-01: redirects followed */
} av_t;

typedef struct {
    struct sockaddr_storage          ss;
    socklen_t                        len;
} av_addr_t;

typedef struct {
    int                              fd;
    SSL_CTX                         *ctx;
    SSL                             *ssl;
} av_conn_t;

typedef struct {
    int                              https;
    unsigned                         port;
    char                             host[AV_NAME_MAX];   /* no brackets */
    char                             path[AV_URL_MAX];
} av_url_t;

typedef struct {
    int                              rcode;
    unsigned                         n;
    int                              truncated;  /* records left out */
    int                              aliased;    /* the records are those
                                                    of a CNAME's target */
    unsigned short                   len[AV_DNS_RR_MAX];
    unsigned short                   size[AV_DNS_RR_MAX];  /* CAA: RDATA
                                                    length, even toolong */
    unsigned char                    toolong[AV_DNS_RR_MAX];
    unsigned char                    data[AV_DNS_RR_MAX][AV_DNS_RDATA_MAX];
    char                             cname[AV_NAME_MAX];
    const char                      *want;   /* TXT: the value sought   */
    int                              found;  /* ... among all records   */
} av_dns_ans_t;



static const char  av_acme_tls_alpn[] = "\x0a" "acme-tls/1";


/* ---- results and time ------------------------------------------------- */

static pki_status_t
av_fail(av_t *av, pki_status_t st, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static pki_status_t
av_fail(av_t *av, pki_status_t st, const char *type, const char *fmt, ...)
{
    char     buf[PKI_DETAIL_LEN];
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);

    av->out->problem_type = type;
    return pki_fail(&av->out->res, st, "%s", buf);
}


/* Appends to the private log text of the outcome (the server's error log),
 * for what the client is not told: the addresses the CA's resolver and
 * network see, the resolver's own. */
static void
av_log(av_t *av, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
av_log(av_t *av, const char *fmt, ...)
{
    char     buf[PKI_LOG_LEN];
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);

    pki_log(&av->out->res, "%s%s", av->out->res.log[0] ? "; " : "", buf);
}


static long long
av_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* Milliseconds left until deadline, 0 when it has passed. */
static int
av_left(long long deadline)
{
    long long  left;

    left = deadline - av_now();
    if (left <= 0) {
        return 0;
    }
    return left > INT_MAX ? INT_MAX : (int) left;
}


static const volatile sig_atomic_t  *av_stop;


PKI_API void
pki_acme_validate_stop_on(const volatile sig_atomic_t *flag)
{
    av_stop = flag;
}


PKI_API int
pki_acme_validate_stopping(void)
{
    return av_stop != NULL && *av_stop != 0;
}


/*
 * Slots for outbound lookups on threads of the pool every request of the
 * process shares: the server's validation jobs take one each, and so does
 * finalize's CAA re-check (pki_acme_caa_recheck).  The threads of one
 * process share this count; each process (nginx worker) has its own.
 */
static pthread_mutex_t  av_slots_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned         av_slots_max = PKI_ACME_OUTBOUND_DEFAULT;
static unsigned         av_slots_held;


PKI_API void
pki_acme_outbound_max(unsigned n)
{
    pthread_mutex_lock(&av_slots_lock);
    av_slots_max = n > 0 ? n : 1;
    pthread_mutex_unlock(&av_slots_lock);
}


PKI_API int
pki_acme_outbound_take(void)
{
    int  ok;

    pthread_mutex_lock(&av_slots_lock);
    ok = av_slots_held < av_slots_max;
    if (ok) {
        av_slots_held++;
    }
    pthread_mutex_unlock(&av_slots_lock);

    return ok;
}


PKI_API void
pki_acme_outbound_give(void)
{
    pthread_mutex_lock(&av_slots_lock);
    if (av_slots_held > 0) {
        av_slots_held--;
    }
    pthread_mutex_unlock(&av_slots_lock);
}


/* 1: fd ready (or in error), 0: deadline passed (or the process stops),
 * -1: poll failed.  With a stop flag, each poll lasts at most
 * PKI_ACME_STOP_SLICE_MS: a server stopping at once must not wait (nginx
 * spins a CPU in its thread pool's teardown until every thread is free). */
static int
av_wait(int fd, short events, long long deadline)
{
    int            n, left;
    struct pollfd  pfd;

    for ( ;; ) {
        left = av_left(deadline);
        if (left == 0 || pki_acme_validate_stopping()) {
            return 0;
        }

        if (av_stop != NULL && left > PKI_ACME_STOP_SLICE_MS) {
            left = PKI_ACME_STOP_SLICE_MS;
        }

        pfd.fd = fd;
        pfd.events = events;
        pfd.revents = 0;

        n = poll(&pfd, 1, left);
        if (n > 0) {
            return 1;
        }
        if (n < 0 && errno != EINTR) {
            return -1;
        }
    }
}


/* Copies up to 64 bytes of s for a detail text, '?' for anything not
 * printable ASCII. */
static void
av_printable(char *dst, size_t size, const unsigned char *s, size_t len)
{
    size_t  i, n;

    n = len < 64 ? len : 64;
    if (n >= size) {
        n = size - 1;
    }

    for (i = 0; i < n; i++) {
        dst[i] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"') ? (char) s[i]
                                                               : '?';
    }
    dst[n] = '\0';
}


/* base64url without padding of SHA-256(s): 43 characters + NUL. */
static void
av_sha256_b64url(const char *s, char out[48])
{
    int            i, n;
    unsigned char  md[SHA256_DIGEST_LENGTH];
    unsigned char  b64[64];

    SHA256((const unsigned char *) s, strlen(s), md);
    n = EVP_EncodeBlock(b64, md, sizeof(md));

    for (i = 0; i < n && b64[i] != '='; i++) {
        out[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char) b64[i];
    }
    out[i] = '\0';
}


/* ---- addresses ----------------------------------------------------------- */

/* An IP literal (no brackets, no port). */
static int
av_addr_parse(const char *s, av_addr_t *a)
{
    struct sockaddr_in   *s4;
    struct sockaddr_in6  *s6;

    memset(a, 0, sizeof(*a));

    s4 = (struct sockaddr_in *) &a->ss;
    if (inet_pton(AF_INET, s, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        a->len = sizeof(*s4);
        return 1;
    }

    s6 = (struct sockaddr_in6 *) &a->ss;
    if (inet_pton(AF_INET6, s, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        a->len = sizeof(*s6);
        return 1;
    }

    return 0;
}


static void
av_addr_set_port(av_addr_t *a, unsigned port)
{
    if (a->ss.ss_family == AF_INET) {
        ((struct sockaddr_in *) &a->ss)->sin_port = htons((uint16_t) port);
    } else {
        ((struct sockaddr_in6 *) &a->ss)->sin6_port = htons((uint16_t) port);
    }
}


static const char *
av_addr_str(const av_addr_t *a, char *buf, size_t size)
{
    const void  *p;

    if (a->ss.ss_family == AF_INET) {
        p = &((const struct sockaddr_in *) &a->ss)->sin_addr;
    } else {
        p = &((const struct sockaddr_in6 *) &a->ss)->sin6_addr;
    }

    if (inet_ntop(a->ss.ss_family, p, buf, (socklen_t) size) == NULL) {
        snprintf(buf, size, "?");
    }
    return buf;
}


static int
av_v4_class(uint32_t a)
{
    if ((a >> 24) == 0                          /* 0.0.0.0/8 "this net" */
        || (a >> 28) >= 14)                     /* 224/4 mcast, 240/4   */
    {
        return AV_ADDR_NEVER;
    }

    if ((a >> 24) == 127                        /* loopback             */
        || (a >> 24) == 10                      /* RFC 1918             */
        || (a & 0xfff00000) == 0xac100000       /* 172.16/12            */
        || (a & 0xffff0000) == 0xc0a80000       /* 192.168/16           */
        || (a & 0xffff0000) == 0xa9fe0000       /* 169.254/16 link-loc. */
        || (a & 0xffc00000) == 0x64400000       /* 100.64/10 CGNAT      */
        || (a & 0xffffff00) == 0xc0000000       /* 192.0.0/24 IETF      */
        || (a & 0xffffff00) == 0xc0000200       /* 192.0.2/24 doc       */
        || (a & 0xffffff00) == 0xc0586300       /* 192.88.99/24 6to4    */
        || (a & 0xfffe0000) == 0xc6120000       /* 198.18/15 bench      */
        || (a & 0xffffff00) == 0xc6336400       /* 198.51.100/24 doc    */
        || (a & 0xffffff00) == 0xcb007100)      /* 203.0.113/24 doc     */
    {
        return AV_ADDR_PRIVATE;
    }

    return AV_ADDR_OK;
}


static int
av_addr_class(const av_addr_t *a)
{
    uint32_t              v4;
    const unsigned char  *b;
    static const unsigned char  zero[16];
    static const unsigned char  nat64[12] = { 0, 0x64, 0xff, 0x9b };

    if (a->ss.ss_family == AF_INET) {
        v4 = ntohl(((const struct sockaddr_in *) &a->ss)->sin_addr.s_addr);
        return av_v4_class(v4);
    }

    b = ((const struct sockaddr_in6 *) &a->ss)->sin6_addr.s6_addr;
    v4 = ((uint32_t) b[12] << 24) | ((uint32_t) b[13] << 16)
         | ((uint32_t) b[14] << 8) | b[15];

    if (memcmp(b, zero, 16) == 0 || b[0] == 0xff) {
        return AV_ADDR_NEVER;                   /* ::, ff00::/8         */
    }

    if (memcmp(b, zero, 10) == 0 && b[10] == 0xff && b[11] == 0xff) {
        return av_v4_class(v4);                 /* ::ffff:a.b.c.d       */
    }

    if (memcmp(b, nat64, 12) == 0               /* 64:ff9b::/96         */
        || (memcmp(b, zero, 8) == 0 && b[8] == 0xff && b[9] == 0xff
            && b[10] == 0 && b[11] == 0))       /* ::ffff:0:a.b.c.d     */
    {
        return av_v4_class(v4);
    }

    /* Not globally reachable, or a way into IPv4 space that the host's
     * own relays or translators decide (IANA's special-purpose registry):
     * 6to4, Teredo and the rest of 2001::/23, a local-use NAT64 prefix
     * (RFC 8215), documentation, SRv6 SIDs. */
    if (memcmp(b, zero, 12) == 0                /* ::1, ::a.b.c.d       */
        || (b[0] == 0xfe && (b[1] & 0x80) == 0x80)  /* fe80::/9         */
        || (b[0] & 0xfe) == 0xfc                /* fc00::/7 ULA         */
        || (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
        || (b[0] == 0x01 && memcmp(b + 1, zero, 7) == 0)    /* 100::/64 */
        || (b[0] == 0x20 && b[1] == 0x02)       /* 2002::/16 6to4       */
        || (b[0] == 0x20 && b[1] == 0x01 && b[2] < 0x02)    /* 2001::/23 */
        || (memcmp(b, nat64, 4) == 0 && b[4] == 0 && b[5] == 1)
                                                /* 64:ff9b:1::/48       */
        || (b[0] == 0x3f && b[1] == 0xff && (b[2] & 0xf0) == 0)
                                                /* 3fff::/20 doc        */
        || (b[0] == 0x5f && b[1] == 0x00))      /* 5f00::/16 SRv6       */
    {
        return AV_ADDR_PRIVATE;
    }

    return AV_ADDR_OK;
}


/* ---- connections ----------------------------------------------------------- */

static void
av_conn_close(av_conn_t *c)
{
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->ctx != NULL) {
        SSL_CTX_free(c->ctx);
        c->ctx = NULL;
    }
    if (c->fd != -1) {
        close(c->fd);
        c->fd = -1;
    }
}


/* 1 connected, 0 timeout, -1 failed (errno). */
static int
av_connect_one(const av_addr_t *a, int type, long long deadline, int *fdp)
{
    int        fd, err, rc, one;
    socklen_t  len;

    fd = socket(a->ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        return -1;
    }

    if (type == SOCK_STREAM) {
        one = 1;
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }

    if (connect(fd, (const struct sockaddr *) &a->ss, a->len) == 0) {
        *fdp = fd;
        return 1;
    }

    if (errno != EINPROGRESS) {
        err = errno;
        close(fd);
        errno = err;
        return -1;
    }

    rc = av_wait(fd, POLLOUT, deadline);
    if (rc <= 0) {
        err = errno;
        close(fd);
        errno = err;
        return rc;
    }

    err = 0;
    len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 || err != 0) {
        close(fd);
        errno = err ? err : EIO;
        return -1;
    }

    *fdp = fd;
    return 1;
}


/* Tries each address in turn until one accepts.  Each but the last gets
 * at most half of the time left (and AV_CONNECT_PART), so an address that
 * drops packets (a broken IPv6 path, tried first) leaves time for the
 * next one.  The detail names the last address only when it is a public
 * one (a lab's private target goes to the log). */
static pki_status_t
av_connect(av_t *av, const char *host, unsigned port, av_addr_t *addrs,
    size_t n, av_conn_t *c)
{
    int           rc, err, part;
    char          ip[INET6_ADDRSTRLEN], where[INET6_ADDRSTRLEN + 48];
    size_t        i;
    long long     dl;
    pki_status_t  st;

    err = ECONNREFUSED;
    rc = -1;

    for (i = 0; i < n; i++) {
        dl = av->deadline;
        if (i + 1 < n) {
            part = av_left(av->deadline) / 2;
            dl = av_now() + (part < AV_CONNECT_PART ? part : AV_CONNECT_PART);
        }

        rc = av_connect_one(&addrs[i], SOCK_STREAM, dl, &c->fd);
        if (rc == 1) {
            return PKI_OK;
        }
        err = rc == 0 ? ETIMEDOUT : errno;
    }

    /* the port always (the client may have its server on another one),
     * the address only when public */
    if (n == 0) {
        snprintf(ip, sizeof(ip), "-");
        snprintf(where, sizeof(where), " (port %u)", port);

    } else if (av_addr_class(&addrs[n - 1]) == AV_ADDR_OK) {
        snprintf(where, sizeof(where), " (%s port %u%s)",
                 av_addr_str(&addrs[n - 1], ip, sizeof(ip)), port,
                 n > 1 ? " and the others" : "");

    } else {
        av_addr_str(&addrs[n - 1], ip, sizeof(ip));
        snprintf(where, sizeof(where), " (port %u)", port);
    }

    if (rc == 0) {
        st = av_fail(av, PKI_UNAVAILABLE, "connection",
                     "timeout connecting to %s%s", host, where);
    } else {
        st = av_fail(av, PKI_UNAVAILABLE, "connection",
                     "cannot connect to %s%s: %s", host, where,
                     strerror(err));
    }

    av_log(av, "%s: %zu address%s tried, the last %s port %u", host, n,
           n == 1 ? "" : "es", ip, port);
    return st;
}


/* >0 bytes, 0 EOF, -1 error, AV_IO_TIMEOUT. */
static ssize_t
av_read(av_t *av, av_conn_t *c, void *buf, size_t len)
{
    int      rc, err;
    ssize_t  n;

    for ( ;; ) {
        if (c->ssl != NULL) {
            ERR_clear_error();
            rc = SSL_read(c->ssl, buf, len > INT_MAX ? INT_MAX : (int) len);
            if (rc > 0) {
                return rc;
            }
            err = SSL_get_error(c->ssl, rc);
            if (err == SSL_ERROR_ZERO_RETURN) {
                return 0;
            }
            if (err == SSL_ERROR_WANT_READ) {
                rc = av_wait(c->fd, POLLIN, av->deadline);
            } else if (err == SSL_ERROR_WANT_WRITE) {
                rc = av_wait(c->fd, POLLOUT, av->deadline);
            } else {
                return -1;
            }

        } else {
            n = recv(c->fd, buf, len, 0);
            if (n >= 0) {
                return n;
            }
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                return -1;
            }
            rc = av_wait(c->fd, POLLIN, av->deadline);
        }

        if (rc == 0) {
            return AV_IO_TIMEOUT;
        }
        if (rc < 0) {
            return -1;
        }
    }
}


/* 1 written, -1 error, AV_IO_TIMEOUT. */
static int
av_write(av_t *av, av_conn_t *c, const void *buf, size_t len)
{
    int                   rc, err;
    size_t                done;
    ssize_t               n;
    const unsigned char  *p;

    p = buf;
    done = 0;

    while (done < len) {
        if (c->ssl != NULL) {
            ERR_clear_error();
            rc = SSL_write(c->ssl, p + done, (int) (len - done));
            if (rc > 0) {
                done += (size_t) rc;
                continue;
            }
            err = SSL_get_error(c->ssl, rc);
            if (err == SSL_ERROR_WANT_READ) {
                rc = av_wait(c->fd, POLLIN, av->deadline);
            } else if (err == SSL_ERROR_WANT_WRITE) {
                rc = av_wait(c->fd, POLLOUT, av->deadline);
            } else {
                return -1;
            }

        } else {
            n = send(c->fd, p + done, len - done, MSG_NOSIGNAL);
            if (n >= 0) {
                done += (size_t) n;
                continue;
            }
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                return -1;
            }
            rc = av_wait(c->fd, POLLOUT, av->deadline);
        }

        if (rc == 0) {
            return AV_IO_TIMEOUT;
        }
        if (rc < 0) {
            return -1;
        }
    }

    return 1;
}


/* A read callback on the TLS socket BIO: a read past the deadline (or
 * once the process stops) "would block", so the caller's av_wait()
 * reports the timeout.  Some loops inside OpenSSL read on for as long as
 * the target sends and never come back to our own checks: SSL_connect()
 * skips any number of HelloRequest messages while it waits for the
 * ServerHello. */
static long
av_tls_bio_cb(BIO *b, int oper, const char *argp, size_t len, int argi,
    long argl, int ret, size_t *processed)
{
    av_t  *av;

    (void) argp;
    (void) len;
    (void) argi;
    (void) argl;
    (void) processed;

    if (oper != BIO_CB_READ) {
        return ret;
    }

    av = (av_t *) BIO_get_callback_arg(b);
    if (av_left(av->deadline) > 0 && !pki_acme_validate_stopping()) {
        return ret;
    }

    BIO_clear_retry_flags(b);
    BIO_set_retry_read(b);
    return -1;
}


/* TLS ≥ 1.2 over c->fd, certificate not verified (RFC 8737 section 3 and
 * the https redirects of http-01 do not need a trusted chain).  sni may be
 * NULL; alpn is in wire format or NULL. */
static pki_status_t
av_tls_start(av_t *av, av_conn_t *c, const char *host, const char *sni,
    const unsigned char *alpn, size_t alpnlen)
{
    int            rc, err;
    const char    *reason;
    unsigned long  e;

    c->ctx = SSL_CTX_new(TLS_client_method());
    if (c->ctx == NULL) {
        return av_fail(av, PKI_INTERNAL, "serverInternal",
                       "SSL_CTX_new() failed");
    }

    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    /* a target that asks for renegotiation gets none: one handshake
     * within the deadline, no second one in the middle of a read */
    SSL_CTX_set_options(c->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF
                                | SSL_OP_NO_RENEGOTIATION);
    /* SSL_read() returns after a record without data (a TLS 1.3
     * NewSessionTicket or KeyUpdate) as "want read", to av_read() and its
     * deadline, instead of reading on while the target sends more */
    SSL_CTX_clear_mode(c->ctx, SSL_MODE_AUTO_RETRY);

    /* no finite-field DH: its cost is the target's choice (DHE with a
     * 10000-bit odd modulus of its own takes most of a second of CPU per
     * handshake, and http-01 may follow 10 redirects to https); real
     * servers speak ECDHE, on these named curves, whose cost is fixed (in
     * TLS 1.2 the list also bounds the server's ECDSA certificate curve:
     * P-521 stays) */
    if (!SSL_CTX_set_cipher_list(c->ctx, "DEFAULT:!kDHE")
        || !SSL_CTX_set1_groups_list(c->ctx, "X25519:P-256:P-384:P-521"))
    {
        return av_fail(av, PKI_INTERNAL, "serverInternal",
                       "cannot set the TLS ciphers or groups");
    }

    c->ssl = SSL_new(c->ctx);
    if (c->ssl == NULL || !SSL_set_fd(c->ssl, c->fd)) {
        return av_fail(av, PKI_INTERNAL, "serverInternal",
                       "SSL_new() failed");
    }

    /* SSL_set_fd() made one socket BIO for both directions */
    BIO_set_callback_ex(SSL_get_rbio(c->ssl), av_tls_bio_cb);
    BIO_set_callback_arg(SSL_get_rbio(c->ssl), (char *) av);

    if (sni != NULL && !SSL_set_tlsext_host_name(c->ssl, sni)) {
        return av_fail(av, PKI_INTERNAL, "serverInternal",
                       "cannot set the TLS server name");
    }

    if (alpn != NULL
        && SSL_set_alpn_protos(c->ssl, alpn, (unsigned) alpnlen) != 0)
    {
        return av_fail(av, PKI_INTERNAL, "serverInternal",
                       "cannot set ALPN");
    }

    for ( ;; ) {
        ERR_clear_error();
        rc = SSL_connect(c->ssl);
        if (rc == 1) {
            return PKI_OK;
        }

        err = SSL_get_error(c->ssl, rc);
        if (err == SSL_ERROR_WANT_READ) {
            rc = av_wait(c->fd, POLLIN, av->deadline);
        } else if (err == SSL_ERROR_WANT_WRITE) {
            rc = av_wait(c->fd, POLLOUT, av->deadline);
        } else {
            e = ERR_peek_last_error();
            reason = e != 0 ? ERR_reason_error_string(e) : NULL;
            return av_fail(av, PKI_UNAVAILABLE, "tls",
                           "TLS handshake with %s failed: %s", host,
                           reason != NULL ? reason
                           : e != 0 ? "error" : "connection closed");
        }

        if (rc == 0) {
            return av_fail(av, PKI_UNAVAILABLE, "connection",
                           "timeout during the TLS handshake with %s", host);
        }
        if (rc < 0) {
            return av_fail(av, PKI_UNAVAILABLE, "tls",
                           "TLS handshake with %s failed", host);
        }
    }
}


/* ---- DNS ---------------------------------------------------------------- */

/* "ip", "ip:port", "[v6]", "[v6]:port" or a bare v6 literal. */
static int
av_server_parse(const char *s, av_addr_t *a)
{
    char           buf[INET6_ADDRSTRLEN + 8];
    char          *colon, *end;
    size_t         len;
    unsigned long  port;

    len = strlen(s);
    if (len == 0 || len >= sizeof(buf)) {
        return 0;
    }
    memcpy(buf, s, len + 1);
    port = AV_DNS_PORT;

    if (buf[0] == '[') {
        end = strchr(buf, ']');
        if (end == NULL) {
            return 0;
        }
        *end++ = '\0';
        if (*end == ':') {
            port = strtoul(end + 1, &colon, 10);
            if (*colon != '\0' || end[1] == '\0') {
                return 0;
            }
        } else if (*end != '\0') {
            return 0;
        }
        if (!av_addr_parse(buf + 1, a)) {
            return 0;
        }

    } else if (av_addr_parse(buf, a)) {
        /* bare v4 or v6 */

    } else {
        colon = strrchr(buf, ':');
        if (colon == NULL || strchr(buf, ':') != colon) {
            return 0;
        }
        *colon = '\0';
        port = strtoul(colon + 1, &end, 10);
        if (*end != '\0' || colon[1] == '\0' || !av_addr_parse(buf, a)
            || a->ss.ss_family != AF_INET)
        {
            return 0;
        }
    }

    if (port == 0 || port > 65535) {
        return 0;
    }

    av_addr_set_port(a, (unsigned) port);
    return 1;
}


static size_t
av_dns_servers(av_t *av, av_addr_t *srv)
{
    int          ok;
    char         line[256], *p, *e;
    FILE        *f;
    size_t       n;
    const char  *path;

    if (av->conf->resolver != NULL && av->conf->resolver[0] != '\0') {
        return av_server_parse(av->conf->resolver, &srv[0]) ? 1 : 0;
    }

    /* a test's own file may give each server a port, which a real
     * resolv.conf cannot (its resolver would skip such a line) */
    path = av->conf->resolv_conf;
    if (path == NULL || path[0] == '\0') {
        path = "/etc/resolv.conf";
    }

    n = 0;
    f = fopen(path, "re");
    if (f != NULL) {
        while (n < AV_DNS_SERVERS_MAX && fgets(line, sizeof(line), f) != NULL)
        {
            if (strncmp(line, "nameserver", 10) != 0
                || (line[10] != ' ' && line[10] != '\t'))
            {
                continue;
            }
            p = line + 10;
            p += strspn(p, " \t");
            e = p + strcspn(p, " \t\r\n%");     /* drop a v6 zone id */
            *e = '\0';
            if (path == av->conf->resolv_conf) {
                ok = av_server_parse(p, &srv[n]);

            } else {
                ok = av_addr_parse(p, &srv[n]);
                if (ok) {
                    av_addr_set_port(&srv[n], AV_DNS_PORT);
                }
            }
            if (ok) {
                n++;
            }
        }
        fclose(f);
    }

    if (n == 0) {
        (void) av_addr_parse("127.0.0.1", &srv[0]);
        av_addr_set_port(&srv[0], AV_DNS_PORT);
        n = 1;
    }

    return n;
}


/* Query message with one question and an EDNS0 OPT record. */
static size_t
av_dns_build(unsigned char *buf, size_t size, uint16_t id, const char *name,
    int qtype)
{
    size_t       n, lab;
    const char  *p, *dot;

    if (size < 12 + AV_NAME_MAX + 4 + 11) {
        return 0;
    }

    memset(buf, 0, 12);
    buf[0] = (unsigned char) (id >> 8);
    buf[1] = (unsigned char) id;
    buf[2] = 0x01;                              /* RD */
    buf[5] = 1;                                 /* QDCOUNT */
    buf[11] = 1;                                /* ARCOUNT */
    n = 12;

    for (p = name; *p != '\0'; p = *dot ? dot + 1 : dot) {
        dot = strchr(p, '.');
        if (dot == NULL) {
            dot = p + strlen(p);
        }
        lab = (size_t) (dot - p);
        if (lab == 0 || lab > 63 || n - 12 + lab + 2 > 255) {
            return 0;
        }
        buf[n++] = (unsigned char) lab;
        memcpy(buf + n, p, lab);
        n += lab;
    }
    buf[n++] = 0;

    buf[n++] = (unsigned char) (qtype >> 8);
    buf[n++] = (unsigned char) qtype;
    buf[n++] = 0;
    buf[n++] = 1;                               /* IN */

    buf[n++] = 0;                               /* OPT: root name */
    buf[n++] = 0;
    buf[n++] = AV_T_OPT;
    buf[n++] = (unsigned char) (AV_DNS_EDNS_SIZE >> 8);
    buf[n++] = (unsigned char) AV_DNS_EDNS_SIZE;
    memset(buf + n, 0, 6);                      /* TTL, RDLENGTH */
    n += 6;

    return n;
}


/* Expands a possibly compressed name at *off into out (lowercase, dotted,
 * no trailing dot; "" for the root) and moves *off past it.  Pointers must
 * point backwards, which bounds the walk. */
static int
av_dns_name(const unsigned char *m, size_t len, size_t *off, char *out)
{
    int     jumped, jumps, c;
    size_t  pos, n, lab, i, limit;

    pos = *off;
    limit = pos;
    jumped = 0;
    jumps = 0;
    n = 0;

    for ( ;; ) {
        if (pos >= len) {
            return 0;
        }
        lab = m[pos];

        if ((lab & 0xc0) == 0xc0) {
            if (pos + 1 >= len) {
                return 0;
            }
            if (!jumped) {
                *off = pos + 2;
                jumped = 1;
            }
            i = ((lab & 0x3f) << 8) | m[pos + 1];
            if (i >= limit) {
                return 0;                       /* forward or self loop */
            }
            if (++jumps > AV_DNS_JUMPS_MAX) {
                /* a chain of pointers to pointers: each owner name of a
                 * large answer would walk it again */
                return 0;
            }
            limit = i;
            pos = i;
            continue;
        }

        if (lab & 0xc0) {
            return 0;                           /* 0x40/0x80: reserved  */
        }

        pos++;
        if (lab == 0) {
            break;
        }

        /* no longer than a name av_dns_build() can ask about: a CNAME
         * to a longer one is a bad answer, not a bad identifier */
        if (pos + lab > len || n + (n > 0) + lab > AV_DNS_NAME_LEN) {
            return 0;
        }
        if (n > 0) {
            out[n++] = '.';
        }
        for (i = 0; i < lab; i++) {
            c = m[pos + i];
            if (c <= 0x20 || c >= 0x7f || c == '.') {
                return 0;
            }
            out[n++] = (char) (c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        pos += lab;
    }

    out[n] = '\0';
    if (!jumped) {
        *off = pos;
    }
    return 1;
}


typedef struct {
    char            owner[AV_NAME_MAX];
    unsigned short  type;
    size_t          rdoff;
    size_t          rdlen;
} av_dns_rr_t;


/* Parses a response to (id, qname, qtype).  Returns 1 and fills ans, or 0
 * with *why set.  The records kept are those of qtype owned by the end of
 * the CNAME chain that starts at qname; a chain that ends without such a
 * record leaves its last name in ans->cname. */
static int
av_dns_parse(const unsigned char *m, size_t len, uint16_t id,
    const char *qname, int qtype, av_dns_ans_t *ans, const char **why)
{
    char          name[AV_NAME_MAX], cur[AV_NAME_MAX];
    size_t        off, i, k, nrr, an, end, t;
    unsigned      type, cls;
    av_dns_rr_t  *rr;
    av_dns_rr_t   rrs[AV_DNS_ANS_MAX];

    memset(ans, 0, offsetof(av_dns_ans_t, data));
    ans->cname[0] = '\0';
    ans->found = 0;

    if (len < 12) {
        *why = "short message";
        return 0;
    }
    if (((m[0] << 8) | m[1]) != id || !(m[2] & 0x80)) {
        *why = "not a response to the query";
        return 0;
    }
    if (((m[2] >> 3) & 0x0f) != 0) {
        *why = "unexpected opcode";
        return 0;
    }

    ans->rcode = m[3] & 0x0f;

    if (((m[4] << 8) | m[5]) != 1) {
        *why = "bad question count";
        return 0;
    }

    off = 12;
    if (!av_dns_name(m, len, &off, name) || off + 4 > len) {
        *why = "malformed question";
        return 0;
    }
    if (strcasecmp(name, qname) != 0
        || (unsigned) ((m[off] << 8) | m[off + 1]) != (unsigned) qtype
        || ((m[off + 2] << 8) | m[off + 3]) != 1)
    {
        *why = "question does not match";
        return 0;
    }
    off += 4;

    an = (size_t) ((m[6] << 8) | m[7]);
    nrr = 0;

    for (i = 0; i < an; i++) {
        if (!av_dns_name(m, len, &off, name) || off + 10 > len) {
            *why = "malformed answer";
            return 0;
        }
        type = (m[off] << 8) | m[off + 1];
        cls = (m[off + 2] << 8) | m[off + 3];
        t = (size_t) ((m[off + 8] << 8) | m[off + 9]);
        off += 10;
        if (off + t > len) {
            *why = "truncated answer";
            return 0;
        }

        if (cls == 1 && nrr == AV_DNS_ANS_MAX) {
            ans->truncated = 1;

        } else if (cls == 1) {
            rr = &rrs[nrr++];
            memcpy(rr->owner, name, sizeof(name));
            rr->type = (unsigned short) type;
            rr->rdoff = off;
            rr->rdlen = t;
        }
        off += t;
    }

    /* follow the CNAME chain inside this answer: up to
     * AV_DNS_CNAME_MAX of them, a longer chain is taken for a loop */
    snprintf(cur, sizeof(cur), "%s", qname);
    for (k = 0; ; k++) {
        for (i = 0; i < nrr; i++) {
            if (rrs[i].type == AV_T_CNAME && strcasecmp(rrs[i].owner, cur) == 0)
            {
                break;
            }
        }
        if (i == nrr) {
            break;
        }
        if (k == AV_DNS_CNAME_MAX) {
            *why = "CNAME loop (or a chain of more than 8)";
            return 0;
        }
        off = rrs[i].rdoff;
        if (!av_dns_name(m, len, &off, name)
            || off != rrs[i].rdoff + rrs[i].rdlen || name[0] == '\0')
        {
            *why = "malformed CNAME";
            return 0;
        }
        memcpy(cur, name, sizeof(name));
    }

    ans->aliased = strcasecmp(cur, qname) != 0;

    for (i = 0; i < nrr; i++) {
        rr = &rrs[i];
        if (rr->type != (unsigned) qtype || strcasecmp(rr->owner, cur) != 0) {
            continue;
        }

        if (ans->n == AV_DNS_RR_MAX) {
            ans->truncated = 1;         /* a caller that needs the whole
                                           set refuses it (CAA) */
            if (qtype != AV_T_TXT || ans->want == NULL) {
                break;
            }
            ans->n--;                   /* TXT sought for a value: the
                                           last slot reads the rest */
        }

        if (qtype == AV_T_A || qtype == AV_T_AAAA) {
            if (rr->rdlen != (qtype == AV_T_A ? 4u : 16u)) {
                *why = "malformed address record";
                return 0;
            }
            memcpy(ans->data[ans->n], m + rr->rdoff, rr->rdlen);
            ans->len[ans->n++] = (unsigned short) rr->rdlen;
            continue;
        }

        if (qtype == AV_T_CAA) {
            /* raw: flags, tag length, tag, value (evaluated by the
             * caller); of a record too long to keep, its flags and tag
             * only (what tells whether it bears on issuance) */
            t = rr->rdlen;
            ans->toolong[ans->n] = t >= AV_DNS_RDATA_MAX;
            if (ans->toolong[ans->n]) {
                t = 2 + (size_t) m[rr->rdoff + 1];
                if (t >= AV_DNS_RDATA_MAX) {
                    t = AV_DNS_RDATA_MAX - 1;
                }
            }
            memcpy(ans->data[ans->n], m + rr->rdoff, t);
            ans->size[ans->n] = (unsigned short) rr->rdlen;
            ans->len[ans->n++] = (unsigned short) t;
            continue;
        }

        /* TXT: one or more <length><bytes>, concatenated */
        k = 0;
        ans->toolong[ans->n] = 0;
        off = rr->rdoff;
        end = rr->rdoff + rr->rdlen;
        if (off == end) {
            *why = "empty TXT record";
            return 0;
        }
        while (off < end) {
            t = m[off++];
            if (off + t > end) {
                *why = "malformed TXT record";
                return 0;
            }
            if (k + t < AV_DNS_RDATA_MAX) {
                memcpy(ans->data[ans->n] + k, m + off, t);
            } else {
                ans->toolong[ans->n] = 1;
            }
            k += t;
            off += t;
        }
        ans->len[ans->n] = (unsigned short) (k < AV_DNS_RDATA_MAX ? k : 0);
        if (ans->want != NULL && !ans->toolong[ans->n]
            && ans->len[ans->n] == strlen(ans->want)
            && memcmp(ans->data[ans->n], ans->want, ans->len[ans->n]) == 0)
        {
            ans->found = 1;
        }
        ans->n++;
    }

    if (ans->n == 0 && strcasecmp(cur, qname) != 0) {
        memcpy(ans->cname, cur, sizeof(cur));
    }

    return 1;
}


/* 1 when message m (n bytes) holds exactly the question of our query q
 * (one question, as av_dns_build() made it: the name, then type and
 * class), which a resolver echoes (RFC 1035 4.1.1); the name's letters
 * compare without case.  Length octets are below 64 and type and class
 * are compared as bytes, so tolower() only ever touches letters. */
static int
av_dns_same_question(const unsigned char *m, size_t n,
    const unsigned char *q, size_t qlen)
{
    size_t  i, end;

    end = 12;
    while (end < qlen && q[end] != 0) {
        end += 1 + (size_t) q[end];
    }
    end += 1 + 4;

    if (end > qlen || n < end || m[4] != 0 || m[5] != 1) {
        return 0;
    }

    for (i = 12; i < end - 4; i++) {
        if (tolower(m[i]) != tolower(q[i])) {
            return 0;
        }
    }

    return memcmp(m + end - 4, q + end - 4, 4) == 0;
}


/* One UDP exchange.  1: a message with our id and our question arrived,
 * 0: try deadline passed, -1: socket error.  A datagram larger than size
 * keeps its first size bytes, marked truncated (TC): the caller asks
 * again over TCP, as for a resolver's own truncation.  *others counts the
 * responses with our id that asked another question (ignored). */
static int
av_dns_udp(const av_addr_t *srv, const unsigned char *q, size_t qlen,
    unsigned char *resp, size_t size, size_t *rlen, long long deadline,
    unsigned *others)
{
    int      fd, rc;
    ssize_t  n;

    rc = av_connect_one(srv, SOCK_DGRAM, deadline, &fd);
    if (rc != 1) {
        return rc;
    }

    if (send(fd, q, qlen, MSG_NOSIGNAL) != (ssize_t) qlen) {
        close(fd);
        return -1;
    }

    for ( ;; ) {
        rc = av_wait(fd, POLLIN, deadline);
        if (rc <= 0) {
            close(fd);
            return rc;
        }

        /* MSG_TRUNC: the datagram's whole length, even past size */
        n = recv(fd, resp, size, MSG_TRUNC);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) {
                continue;
            }
            close(fd);
            return -1;                          /* e.g. ECONNREFUSED    */
        }

        /* ignore strays: another id, not a response, or an answer to
         * another question (a forged one, or a late one of an earlier
         * query that reused the id): the answer may still come */
        if ((size_t) n < 12 || resp[0] != q[0] || resp[1] != q[1]
            || !(resp[2] & 0x80))
        {
            continue;
        }

        if (!av_dns_same_question(resp, (size_t) n < size ? (size_t) n
                                                          : size, q, qlen))
        {
            (*others)++;
            continue;
        }

        if ((size_t) n > size) {
            resp[2] |= 0x02;                    /* TC: ask over TCP     */
            n = (ssize_t) size;
        }

        *rlen = (size_t) n;
        close(fd);
        return 1;
    }
}


/* One exchange over TCP (after a truncated UDP answer).  1: an answer
 * of at least a header is in resp; 0: none, why says what went wrong (the
 * caller may still ask another server). */
static int
av_dns_tcp(av_t *av, const av_addr_t *srv, const unsigned char *q,
    size_t qlen, unsigned char *resp, size_t *rlen, char *why,
    size_t why_size)
{
    int            rc;
    size_t         got, want;
    ssize_t        n;
    av_conn_t      c;
    unsigned char  out[2 + 512];

    c.fd = -1;
    c.ssl = NULL;
    c.ctx = NULL;

    rc = av_connect_one(srv, SOCK_STREAM, av->deadline, &c.fd);
    if (rc != 1) {
        snprintf(why, why_size, "failed: %s",
                 rc == 0 ? "timeout" : strerror(errno));
        return 0;
    }

    out[0] = (unsigned char) (qlen >> 8);
    out[1] = (unsigned char) qlen;
    memcpy(out + 2, q, qlen);

    rc = av_write(av, &c, out, qlen + 2);
    if (rc != 1) {
        av_conn_close(&c);
        snprintf(why, why_size, "failed: %s",
                 rc == AV_IO_TIMEOUT ? "timeout" : "write error");
        return 0;
    }

    want = 2;
    got = 0;
    while (got < want) {
        n = av_read(av, &c, resp + got, want - got);
        if (n <= 0) {
            av_conn_close(&c);
            snprintf(why, why_size, "failed: %s",
                     n == AV_IO_TIMEOUT ? "timeout"
                     : n == 0 ? "connection closed" : "read error");
            return 0;
        }
        got += (size_t) n;
        if (want == 2 && got == 2) {
            want = (size_t) ((resp[0] << 8) | resp[1]);
            if (want < 12) {
                av_conn_close(&c);
                snprintf(why, why_size, "failed: malformed answer");
                return 0;
            }
            got = 0;
        }
    }

    av_conn_close(&c);
    *rlen = want;
    return 1;
}


/* A resolver's failure of its own, not an answer about the name: another
 * resolver may do better (as the system's resolver moves on). */
static int
av_dns_rcode_retry(const unsigned char *m)
{
    int  rcode;

    rcode = m[3] & 0x0f;

    return rcode == 2 || rcode == 4 || rcode == 5;   /* SERVFAIL, NOTIMP,
                                                        REFUSED         */
}


/* One query, UDP first, TCP when truncated, over the configured servers
 * (two UDP attempts each) until the deadline.  The first answer that is
 * not a SERVFAIL, NOTIMP or REFUSED is the one: an NXDOMAIN is final.
 * Such a failure (or a truncated answer whose TCP retry failed) sends the
 * query on to the next server; the first of them is returned only when
 * no server answers better within the attempts and the time left. */
static pki_status_t
av_dns_query(av_t *av, const char *name, int qtype, av_dns_ans_t *ans)
{
    int             rc, tcp, done, kept_tcp;
    char            ip[INET6_ADDRSTRLEN], why[128], tcp_why[128];
    size_t          nsrv, qlen, rlen, attempt, s, kept_s, kept_len,
                    tcp_s;
    unsigned        others;
    uint16_t        id;
    long long       try_deadline;
    av_addr_t       srv[AV_DNS_SERVERS_MAX];
    pki_status_t    st;
    const char     *perr;
    unsigned char  *resp, *kept;
    unsigned char   q[512];

    nsrv = av_dns_servers(av, srv);
    if (nsrv == 0) {
        return av_fail(av, PKI_INTERNAL, "serverInternal",
                       "invalid DNS resolver address in the configuration");
    }

    if (RAND_bytes((unsigned char *) &id, sizeof(id)) != 1) {
        return av_fail(av, PKI_INTERNAL, "serverInternal",
                       "RAND_bytes() failed");
    }

    qlen = av_dns_build(q, sizeof(q), id, name, qtype);
    if (qlen == 0) {
        return av_fail(av, PKI_POLICY, "rejectedIdentifier",
                       "\"%.100s\" is not a valid DNS name", name);
    }

    resp = malloc(AV_DNS_TCP_MAX + 2);
    if (resp == NULL) {
        return av_fail(av, PKI_INTERNAL, "serverInternal", "out of memory");
    }

    rc = 0;
    s = 0;
    others = 0;
    done = 0;
    tcp = 0;
    rlen = 0;
    kept = NULL;
    kept_len = 0;
    kept_s = 0;
    kept_tcp = 0;
    tcp_s = 0;
    tcp_why[0] = '\0';

    for (attempt = 0; attempt < 2 * nsrv; attempt++) {
        s = attempt % nsrv;

        try_deadline = av_now() + AV_DNS_TRY_MS;
        if (try_deadline > av->deadline) {
            try_deadline = av->deadline;
        }

        rc = av_dns_udp(&srv[s], q, qlen, resp, AV_DNS_UDP_MAX, &rlen,
                        try_deadline, &others);
        if (rc == 1) {
            tcp = 0;
            if (resp[2] & 0x02) {               /* TC */
                if (!av_dns_tcp(av, &srv[s], q, qlen, resp, &rlen, why,
                                sizeof(why)))
                {
                    if (tcp_why[0] == '\0') {
                        memcpy(tcp_why, why, sizeof(why));
                        tcp_s = s;
                    }
                    goto next;
                }
                tcp = 1;
            }

            if (!av_dns_rcode_retry(resp)) {
                done = 1;
                break;
            }

            if (kept == NULL) {
                kept = malloc(rlen);
                if (kept == NULL) {
                    free(resp);
                    return av_fail(av, PKI_INTERNAL, "serverInternal",
                                   "out of memory");
                }
                memcpy(kept, resp, rlen);
                kept_len = rlen;
                kept_s = s;
                kept_tcp = tcp;
            }
        }

    next:

        if (av_left(av->deadline) == 0) {
            break;
        }
    }

    if (!done && kept != NULL) {
        /* only failures: the first one (over TCP, too, if any) */
        memcpy(resp, kept, kept_len);
        rlen = kept_len;
        s = kept_s;
        tcp = kept_tcp;
        done = 1;
    }
    free(kept);

    if (!done && tcp_why[0] != '\0') {
        free(resp);
        st = av_fail(av, PKI_UNAVAILABLE, "dns",
                     "DNS query over TCP for %.100s %s", name, tcp_why);
        av_log(av, "resolver %s", av_addr_str(&srv[tcp_s], ip, sizeof(ip)));
        return st;
    }

    if (!done) {
        free(resp);
        st = av_fail(av, PKI_UNAVAILABLE, "dns", "DNS query for %.100s: %s%s",
                     name, rc == 0 ? "timeout" : strerror(errno),
                     others ? " (answers that asked another question were "
                     "ignored)" : "");
        av_log(av, "resolver %s", av_addr_str(&srv[s], ip, sizeof(ip)));
        return st;
    }

    if (!av_dns_parse(resp, rlen, id, name, qtype, ans, &perr)) {
        free(resp);
        st = av_fail(av, PKI_UNAVAILABLE, "dns",
                     "bad DNS answer%s for %.100s: %s",
                     tcp ? " over TCP" : "", name, perr);
        av_log(av, "resolver %s", av_addr_str(&srv[s], ip, sizeof(ip)));
        return st;
    }

    if (ans->rcode != 0) {
        av_log(av, "resolver %s", av_addr_str(&srv[s], ip, sizeof(ip)));
    }

    free(resp);
    return PKI_OK;
}


/* A query that follows CNAMEs across queries as well. */
static pki_status_t
av_dns_lookup(av_t *av, const char *name, int qtype, av_dns_ans_t *ans)
{
    char          cur[AV_NAME_MAX];
    unsigned      hops;
    pki_status_t  st;

    snprintf(cur, sizeof(cur), "%s", name);

    for (hops = 0; hops <= AV_DNS_CNAME_MAX; hops++) {
        st = av_dns_query(av, cur, qtype, ans);
        if (st != PKI_OK) {
            return st;
        }
        if (hops > 0) {
            ans->aliased = 1;
        }
        if (ans->rcode != 0 || ans->n > 0 || ans->cname[0] == '\0') {
            return PKI_OK;
        }
        memcpy(cur, ans->cname, sizeof(cur));
    }

    return av_fail(av, PKI_UNAVAILABLE, "dns",
                   "too many CNAMEs looking up %.100s", name);
}


static const char *
av_rcode_name(int rcode)
{
    switch (rcode) {
    case 1:  return "FORMERR";
    case 2:  return "SERVFAIL";
    case 3:  return "NXDOMAIN";
    case 4:  return "NOTIMP";
    case 5:  return "REFUSED";
    default: return "error";
    }
}


/* ---- resolution with the address policy ------------------------------- */

/* The AAAA and A records of a name, at most AV_ADDRS_MAX, the families
 * interleaved (IPv6 first, as RFC 8305 orders them): with both, each has
 * at least half of the slots, so a name with 8 AAAA records still has its
 * A records tried (and the reverse).  A lookup of one family that fails
 * (SERVFAIL, REFUSED, timeout, a malformed answer) leaves the other one's
 * addresses to use: a broken IPv6 zone (or IPv4 one) is no reason to fail
 * a host that answers over the other.  An NXDOMAIN for AAAA, the first
 * query, is the answer: the name does not exist.  With no address, the
 * failures are the answer, both when both failed. */
static pki_status_t
av_resolve_name(av_t *av, const char *host, av_addr_t *addrs, size_t *naddrs)
{
    int                    rcode, failed[2];
    size_t                 n, i, t, len, nf[2];
    const char            *type0, *ftype[2];
    long long              dl;
    pki_status_t           st;
    pki_result_t           res0, fres[2];
    av_dns_ans_t          *ans;
    struct sockaddr_in    *s4;
    struct sockaddr_in6   *s6;
    av_addr_t              fam[2][AV_ADDRS_MAX];
    static const int       types[2] = { AV_T_AAAA, AV_T_A };

    ans = malloc(sizeof(av_dns_ans_t));
    if (ans == NULL) {
        return av_fail(av, PKI_INTERNAL, "serverInternal", "out of memory");
    }
    ans->want = NULL;

    res0 = av->out->res;
    type0 = av->out->problem_type;

    for (t = 0; t < 2; t++) {
        failed[t] = 0;
        nf[t] = 0;

        /* AAAA gets half the time left: a zone that drops AAAA queries
         * leaves the A lookup and the fetch their time */
        dl = av->deadline;
        if (types[t] == AV_T_AAAA) {
            av->deadline = av_now() + av_left(dl) / 2;
        }
        st = av_dns_lookup(av, host, types[t], ans);
        av->deadline = dl;
        rcode = st == PKI_OK ? ans->rcode : 0;
        if (rcode != 0) {
            st = av_fail(av, PKI_UNAVAILABLE, "dns",
                         "%s looking up %s for %.100s",
                         av_rcode_name(rcode),
                         types[t] == AV_T_A ? "A" : "AAAA", host);
        }

        if (st == PKI_UNAVAILABLE && !(types[t] == AV_T_AAAA && rcode == 3))
        {
            failed[t] = 1;
            fres[t] = av->out->res;
            ftype[t] = av->out->problem_type;
            av->out->res = res0;
            av->out->problem_type = type0;
            continue;
        }

        if (st != PKI_OK) {
            free(ans);
            return st;
        }

        for (i = 0; i < ans->n && nf[t] < AV_ADDRS_MAX; i++) {
            memset(&fam[t][nf[t]], 0, sizeof(av_addr_t));
            if (types[t] == AV_T_A) {
                s4 = (struct sockaddr_in *) &fam[t][nf[t]].ss;
                s4->sin_family = AF_INET;
                memcpy(&s4->sin_addr, ans->data[i], 4);
                fam[t][nf[t]].len = sizeof(*s4);
            } else {
                s6 = (struct sockaddr_in6 *) &fam[t][nf[t]].ss;
                s6->sin6_family = AF_INET6;
                memcpy(&s6->sin6_addr, ans->data[i], 16);
                fam[t][nf[t]].len = sizeof(*s6);
            }
            nf[t]++;
        }
    }

    free(ans);

    n = 0;
    for (i = 0; i < AV_ADDRS_MAX && n < AV_ADDRS_MAX; i++) {
        for (t = 0; t < 2 && n < AV_ADDRS_MAX; t++) {
            if (i < nf[t]) {
                addrs[n++] = fam[t][i];
            }
        }
    }

    if (n == 0 && (failed[0] || failed[1])) {
        /* A's failure first, then AAAA's */
        t = failed[1] ? 1 : 0;
        av->out->res = fres[t];
        av->out->problem_type = ftype[t];

        if (failed[0] && failed[1]) {
            len = strlen(av->out->res.detail);
            snprintf(av->out->res.detail + len,
                     sizeof(av->out->res.detail) - len, "; %s",
                     fres[0].detail);
            if (fres[0].log[0] != '\0') {
                av_log(av, "%s", fres[0].log);
            }
        }

        return av->out->res.status;
    }

    if (n == 0) {
        return av_fail(av, PKI_UNAVAILABLE, "dns",
                       "no A or AAAA record for %.100s", host);
    }

    *naddrs = n;
    return PKI_OK;
}


/* Addresses for host (an IP literal or a name) on port, after the policy
 * check.  Nothing is contacted when any address is refused; the detail
 * then names a refused address only when it is host itself (an IP
 * literal): what a name resolves to, for the CA's resolver, goes to the
 * log (a client must not map the CA's network through it). */
static pki_status_t
av_resolve(av_t *av, const char *host, unsigned port, av_addr_t *addrs,
    size_t *naddrs)
{
    int            cls, literal;
    char           ip[INET6_ADDRSTRLEN];
    size_t         n, i;
    const char    *what, *ptype;
    pki_status_t   st;

    n = 0;
    literal = 0;

    if (av->conf->resolve_to != NULL && av->conf->resolve_to[0] != '\0') {
        if (!av_addr_parse(av->conf->resolve_to, &addrs[0])) {
            return av_fail(av, PKI_INTERNAL, "serverInternal",
                           "resolve_to is not an IP address");
        }
        n = 1;

    } else if (av_addr_parse(host, &addrs[0])) {
        n = 1;
        literal = 1;

    } else {
        st = av_resolve_name(av, host, addrs, &n);
        if (st != PKI_OK) {
            return st;
        }
    }

    for (i = 0; i < n; i++) {
        cls = av_addr_class(&addrs[i]);
        if (cls == AV_ADDR_NEVER
            || (cls == AV_ADDR_PRIVATE && !av->conf->allow_private))
        {
            /* a redirect's target is no identifier of the order */
            ptype = av->hop > 0 ? "connection" : "rejectedIdentifier";
            what = cls == AV_ADDR_NEVER ? "reserved" : "private";
            av_addr_str(&addrs[i], ip, sizeof(ip));

            if (literal) {
                return av_fail(av, PKI_POLICY, ptype,
                               "refusing to connect to %s address %.100s",
                               what, host);
            }

            st = av_fail(av, PKI_POLICY, ptype,
                         "%.100s resolves to a %s address: not contacted",
                         host, cls == AV_ADDR_NEVER ? "reserved"
                                                    : "non-public");
            av_log(av, "%.100s: refused %s address %s", host, what, ip);
            return st;
        }
        av_addr_set_port(&addrs[i], port);
    }

    *naddrs = n;
    return PKI_OK;
}


/* Resolves and connects. */
static pki_status_t
av_open(av_t *av, const char *host, unsigned port, av_conn_t *c)
{
    size_t        n;
    av_addr_t     addrs[AV_ADDRS_MAX];
    pki_status_t  st;

    n = 0;
    st = av_resolve(av, host, port, addrs, &n);
    if (st != PKI_OK) {
        return st;
    }

    return av_connect(av, host, port, addrs, n, c);
}


const char *
pki_acme_validate_conf_check(const pki_acme_validate_conf_t *conf)
{
    av_addr_t  a;

    if (conf->resolver != NULL && conf->resolver[0] != '\0'
        && !av_server_parse(conf->resolver, &a))
    {
        return "the resolver is not an IP address with an optional port";
    }

    if (conf->resolve_to != NULL && conf->resolve_to[0] != '\0'
        && !av_addr_parse(conf->resolve_to, &a))
    {
        return "resolve_to is not an IP address";
    }

    return NULL;
}


/* ---- http-01 ------------------------------------------------------------ */

/* Hostnames: LDH labels (and '_' which some internal names carry). */
static int
av_hostname_ok(const char *s)
{
    size_t  len, lab;

    len = strlen(s);
    if (len == 0 || len > 253) {
        return 0;
    }

    lab = 0;
    for ( ; *s != '\0'; s++) {
        if (*s == '.') {
            if (lab == 0) {
                return 0;
            }
            lab = 0;
            continue;
        }
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')
              || (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
        {
            return 0;
        }
        if (++lab > 63) {
            return 0;
        }
    }

    return lab > 0;
}


static int
av_url_chars_ok(const char *s)
{
    for ( ; *s != '\0'; s++) {
        if ((unsigned char) *s <= 0x20 || (unsigned char) *s >= 0x7f) {
            return 0;
        }
    }
    return 1;
}


/* Resolves a Location value against the current URL.  0 if malformed. */
static int
av_url_redirect(const av_url_t *cur, const char *loc, av_url_t *next)
{
    int             bracket;
    char           *slash, *end;
    const char     *p, *auth_end, *h, *hend;
    size_t          len;
    av_addr_t       a;
    unsigned long   port;

    if (!av_url_chars_ok(loc) || strlen(loc) >= AV_URL_MAX) {
        return 0;
    }

    *next = *cur;

    if (strncasecmp(loc, "http://", 7) == 0) {
        next->https = 0;
        p = loc + 7;
    } else if (strncasecmp(loc, "https://", 8) == 0) {
        next->https = 1;
        p = loc + 8;
    } else if (loc[0] == '/' && loc[1] == '/') {
        p = loc + 2;
    } else {
        p = NULL;
        len = strspn(loc, "abcdefghijklmnopqrstuvwxyz"
                          "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
        if (len > 0 && loc[len] == ':') {
            return 0;                           /* another scheme       */
        }
    }

    if (p != NULL) {
        auth_end = p + strcspn(p, "/?#");
        if (memchr(p, '@', (size_t) (auth_end - p)) != NULL) {
            return 0;                           /* no userinfo          */
        }

        bracket = (*p == '[');
        if (bracket) {
            h = p + 1;
            hend = memchr(h, ']', (size_t) (auth_end - h));
            if (hend == NULL) {
                return 0;
            }
            p = hend + 1;
        } else {
            h = p;
            hend = memchr(h, ':', (size_t) (auth_end - h));
            if (hend == NULL) {
                hend = auth_end;
            }
            p = hend;
        }

        len = (size_t) (hend - h);
        if (len == 0 || len >= sizeof(next->host)) {
            return 0;
        }
        memcpy(next->host, h, len);
        next->host[len] = '\0';

        /* a fully qualified name ("host.example."): the same name, and
         * SNI takes none with the dot (RFC 6066 3) */
        if (!bracket && len > 1 && next->host[len - 1] == '.') {
            next->host[len - 1] = '\0';
        }

        if (bracket) {
            if (!av_addr_parse(next->host, &a) || a.ss.ss_family != AF_INET6)
            {
                return 0;
            }
        } else {
            if (!av_hostname_ok(next->host)
                && !(av_addr_parse(next->host, &a)
                     && a.ss.ss_family == AF_INET))
            {
                return 0;
            }
        }

        if (p < auth_end && *p == ':') {
            if (p + 1 == auth_end) {
                return 0;
            }
            port = strtoul(p + 1, &end, 10);
            if (end != auth_end || port == 0 || port > 65535) {
                return 0;
            }
        } else if (p == auth_end) {
            port = next->https ? 443 : 80;
        } else {
            return 0;
        }
        next->port = (unsigned) port;

        p = auth_end;
        len = strcspn(p, "#");
        if (len == 0) {
            snprintf(next->path, sizeof(next->path), "/");
        } else if (*p == '?') {
            snprintf(next->path, sizeof(next->path), "/%.*s", (int) len, p);
        } else {
            snprintf(next->path, sizeof(next->path), "%.*s", (int) len, p);
        }
        return 1;
    }

    len = strcspn(loc, "#");
    if (len == 0) {
        return 0;
    }

    if (loc[0] == '/') {
        snprintf(next->path, sizeof(next->path), "%.*s", (int) len, loc);
        return 1;
    }

    /* relative reference (RFC 3986 5.2.2), against the path without its
     * query: "?q" keeps the whole path, else the last segment is
     * replaced */
    next->path[strcspn(next->path, "?")] = '\0';

    if (loc[0] != '?') {
        slash = strrchr(next->path, '/');
        if (slash == NULL) {
            return 0;
        }
        slash[1] = '\0';
    }
    if (strlen(next->path) + len >= sizeof(next->path)) {
        return 0;
    }
    strncat(next->path, loc, len);
    return 1;
}


/* Finds a header (name without colon) in the head block; copies its
 * trimmed value.  Returns 1 found, 0 absent, -1 present twice. */
static int
av_header(const char *head, const char *name, char *val, size_t size)
{
    int          found;
    size_t       nlen, vlen;
    const char  *line, *eol, *v;

    found = 0;
    nlen = strlen(name);
    line = strchr(head, '\n');

    while (line != NULL && line[1] != '\0') {
        line++;
        eol = strchr(line, '\n');
        if (eol == NULL) {
            eol = line + strlen(line);
        }

        if ((size_t) (eol - line) > nlen && line[nlen] == ':'
            && strncasecmp(line, name, nlen) == 0)
        {
            if (found) {
                return -1;
            }
            found = 1;
            v = line + nlen + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) {
                v++;
            }
            vlen = (size_t) (eol - v);
            while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == ' '
                                || v[vlen - 1] == '\t'))
            {
                vlen--;
            }
            if (vlen >= size) {
                return -1;
            }
            memcpy(val, v, vlen);
            val[vlen] = '\0';
        }

        line = *eol ? eol : NULL;
    }

    return found;
}


/* Decodes a chunked body in raw[0..len).  1: complete, 0: need more,
 * -1: malformed, -2: decoded body over cap. */
static int
av_unchunk(const char *raw, size_t len, char *out, size_t cap, size_t *outlen)
{
    char          *end;
    size_t         pos, n;
    unsigned long  size;
    char           hex[20];
    const char    *eol;

    pos = 0;
    n = 0;

    for ( ;; ) {
        eol = memchr(raw + pos, '\n', len - pos);
        if (eol == NULL) {
            return (len - pos) > 64 ? -1 : 0;
        }
        if ((size_t) (eol - (raw + pos)) >= sizeof(hex)) {
            return -1;
        }
        memcpy(hex, raw + pos, (size_t) (eol - (raw + pos)));
        hex[eol - (raw + pos)] = '\0';
        /* the size is hex digits only (strtoul alone would take "0x4",
         * " 4" or "+4"), then the line's end or an extension */
        end = hex + strspn(hex, "0123456789abcdefABCDEF");
        if (end == hex || end - hex > 16) {
            return -1;
        }
        size = strtoul(hex, NULL, 16);
        end += strspn(end, " \t");             /* before an extension */
        if (*end != '\0' && *end != ';'
            && !(end[0] == '\r' && end[1] == '\0'))
        {
            return -1;
        }
        pos = (size_t) (eol - raw) + 1;

        if (size == 0) {
            *outlen = n;
            return 1;                           /* trailers ignored     */
        }
        if (size > cap || n + size > cap) {
            return -2;
        }
        if (len - pos < size + 1) {
            return 0;
        }
        memcpy(out + n, raw + pos, size);
        n += size;
        pos += size;
        if (raw[pos] == '\r') {
            pos++;
        }
        if (pos >= len) {
            return 0;
        }
        if (raw[pos] != '\n') {
            return -1;
        }
        pos++;
    }
}


typedef struct {
    int     status;
    char    location[AV_URL_MAX];
    char    body[AV_BODY_MAX + 1];
    size_t  body_len;
} av_http_resp_t;


static pki_status_t
av_http_io_fail(av_t *av, const char *what, ssize_t rc, const char *host)
{
    return av_fail(av, PKI_UNAVAILABLE, "connection", "%s %s: %s",
                   what, host,
                   rc == AV_IO_TIMEOUT ? "timeout"
                   : rc == 0 ? "connection closed" : "connection error");
}


/* The end of a response's header block: right after its first empty
 * line (lines end with CRLF or a bare LF), or NULL.  Not the first CRLF
 * CRLF anywhere: with LF-only headers that may be in the body. */
static char *
av_http_eoh(char *head)
{
    char  *p;

    for (p = strchr(head, '\n'); p != NULL; p = strchr(p + 1, '\n')) {
        if (p[1] == '\n') {
            return p + 2;
        }
        if (p[1] == '\r' && p[2] == '\n') {
            return p + 3;
        }
    }

    return NULL;
}


/* One GET; reads the body only for a 200. */
static pki_status_t
av_http_get(av_t *av, const av_url_t *url, const char *url_text,
    av_http_resp_t *r)
{
    int            rc, chunked, has_len, interim;
    char          *head, *eoh, *raw, *end;
    char           val[64], hostport[AV_NAME_MAX + 16];
    size_t         hlen, rawlen, need, room;
    ssize_t        n;
    av_addr_t      a;
    av_conn_t      c;
    pki_status_t   st;
    unsigned long  clen;
    char           req[AV_URL_MAX + AV_NAME_MAX + 256];

    c.fd = -1;
    c.ssl = NULL;
    c.ctx = NULL;
    head = NULL;
    raw = NULL;
    clen = 0;

    st = av_open(av, url->host, url->port, &c);
    if (st != PKI_OK) {
        goto done;
    }

    if (url->https) {
        st = av_tls_start(av, &c, url->host,
                          av_addr_parse(url->host, &a) ? NULL : url->host,
                          NULL, 0);
        if (st != PKI_OK) {
            goto done;
        }
    }

    if (av_addr_parse(url->host, &a) && a.ss.ss_family == AF_INET6) {
        snprintf(hostport, sizeof(hostport), "[%s]", url->host);
    } else {
        snprintf(hostport, sizeof(hostport), "%s", url->host);
    }
    if (url->port != (url->https ? 443u : 80u)) {
        snprintf(hostport + strlen(hostport),
                 sizeof(hostport) - strlen(hostport), ":%u", url->port);
    }

    n = snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\n"
                 "Host: %s\r\n"
                 "User-Agent: nginx-pki-acme-validator\r\n"
                 "Accept: */*\r\n"
                 "Connection: close\r\n\r\n", url->path, hostport);
    if (n < 0 || (size_t) n >= sizeof(req)) {
        st = av_fail(av, PKI_UNAVAILABLE, "connection", "URL too long");
        goto done;
    }

    rc = av_write(av, &c, req, (size_t) n);
    if (rc != 1) {
        st = av_http_io_fail(av, "sending the request to", rc, url_text);
        goto done;
    }

    head = malloc(AV_HEAD_MAX + 1);
    raw = malloc(AV_RAW_MAX + 1);
    if (head == NULL || raw == NULL) {
        st = av_fail(av, PKI_INTERNAL, "serverInternal", "out of memory");
        goto done;
    }

    /* status line and headers; an interim (1xx) response before the
     * final one is read and dropped (RFC 9110 15.2: 100 Continue, 103
     * Early Hints), at most AV_HTTP_INTERIM_MAX of them, all heads within
     * AV_HEAD_MAX bytes together.  101 is final: no upgrade was asked. */
    hlen = 0;
    room = AV_HEAD_MAX;
    eoh = NULL;

    for (interim = 0; /* void */; interim++) {

        head[hlen] = '\0';
        eoh = av_http_eoh(head);

        while (eoh == NULL) {
            if (hlen == room) {
                st = av_fail(av, PKI_UNAVAILABLE, "connection",
                             "response headers from %s over %d bytes",
                             url_text, AV_HEAD_MAX);
                goto done;
            }
            n = av_read(av, &c, head + hlen, room - hlen);
            if (n <= 0) {
                st = av_http_io_fail(av, "reading the response from", n,
                                     url_text);
                goto done;
            }
            hlen += (size_t) n;
            head[hlen] = '\0';
            eoh = av_http_eoh(head);
            if (memchr(head, '\0', hlen) != NULL) {
                st = av_fail(av, PKI_UNAVAILABLE, "connection",
                             "malformed HTTP response from %s", url_text);
                goto done;
            }
        }

        if (strncmp(head, "HTTP/1.", 7) != 0 || head[7] < '0'
            || head[7] > '9' || head[8] != ' ' || head[9] < '1'
            || head[9] > '5' || head[10] < '0' || head[10] > '9'
            || head[11] < '0' || head[11] > '9'
            || (head[12] != ' ' && head[12] != '\r' && head[12] != '\n'))
        {
            st = av_fail(av, PKI_UNAVAILABLE, "connection",
                         "malformed HTTP response from %s", url_text);
            goto done;
        }
        r->status = (head[9] - '0') * 100 + (head[10] - '0') * 10
                    + (head[11] - '0');

        if (r->status >= 200 || r->status == 101) {
            break;
        }

        if (interim == AV_HTTP_INTERIM_MAX) {
            st = av_fail(av, PKI_UNAVAILABLE, "connection",
                         "more than %d interim (1xx) responses from %s",
                         AV_HTTP_INTERIM_MAX, url_text);
            goto done;
        }

        /* the next head starts where this one ended: what was read past
         * it moves to the front, the budget shrinks by what is dropped */
        rawlen = hlen - (size_t) (eoh - head);
        room -= (size_t) (eoh - head);
        memmove(head, eoh, rawlen);
        hlen = rawlen;
    }

    rawlen = hlen - (size_t) (eoh - head);
    memcpy(raw, eoh, rawlen);
    *eoh = '\0';

    if (r->status == 301 || r->status == 302 || r->status == 303
        || r->status == 307 || r->status == 308)
    {
        rc = av_header(head, "Location", r->location, sizeof(r->location));
        if (rc != 1) {
            st = av_fail(av, PKI_UNAVAILABLE, "connection",
                         "redirect from %s with %s Location", url_text,
                         rc == 0 ? "no" : "an invalid");
            goto done;
        }
        st = PKI_OK;
        goto done;
    }

    if (r->status != 200) {
        st = PKI_OK;                            /* the caller judges    */
        goto done;
    }

    /* body */
    rc = av_header(head, "Transfer-Encoding", val, sizeof(val));
    chunked = (rc == 1 && strcasecmp(val, "chunked") == 0);
    if (rc == -1 || (rc == 1 && !chunked)) {
        st = av_fail(av, PKI_UNAVAILABLE, "connection",
                     "unsupported Transfer-Encoding from %s", url_text);
        goto done;
    }

    has_len = 0;
    if (!chunked) {
        rc = av_header(head, "Content-Length", val, sizeof(val));
        if (rc == -1 || (rc == 1 && (val[0] < '0' || val[0] > '9'))) {
            st = av_fail(av, PKI_UNAVAILABLE, "connection",
                         "invalid Content-Length from %s", url_text);
            goto done;
        }
        if (rc == 1) {
            errno = 0;
            clen = strtoul(val, &end, 10);
            if (*end != '\0' || errno != 0) {
                st = av_fail(av, PKI_UNAVAILABLE, "connection",
                             "invalid Content-Length from %s", url_text);
                goto done;
            }
            if (clen > AV_BODY_MAX) {
                goto too_large;
            }
            has_len = 1;
        }
    }

    for ( ;; ) {
        if (chunked) {
            rc = av_unchunk(raw, rawlen, r->body, AV_BODY_MAX, &r->body_len);
            if (rc == 1) {
                break;
            }
            if (rc == -2) {
                goto too_large;
            }
            if (rc == -1) {
                st = av_fail(av, PKI_UNAVAILABLE, "connection",
                             "malformed chunked body from %s", url_text);
                goto done;
            }
            if (rawlen == AV_RAW_MAX) {
                goto too_large;
            }
            need = AV_RAW_MAX - rawlen;

        } else if (has_len) {
            if (rawlen >= clen) {
                break;
            }
            need = clen - rawlen;

        } else {
            if (rawlen > AV_BODY_MAX) {
                goto too_large;
            }
            need = AV_BODY_MAX + 1 - rawlen;
        }

        n = av_read(av, &c, raw + rawlen, need);
        if (n == 0 && !chunked && !has_len) {
            break;                              /* EOF delimits         */
        }
        if (n <= 0) {
            st = av_http_io_fail(av, "reading the body from", n, url_text);
            goto done;
        }
        rawlen += (size_t) n;
    }

    if (!chunked) {
        r->body_len = has_len ? clen : rawlen;
        memcpy(r->body, raw, r->body_len);
    }
    r->body[r->body_len] = '\0';
    st = PKI_OK;
    goto done;

too_large:

    st = av_fail(av, PKI_UNAUTHORIZED, "incorrectResponse",
                 "response body from %s is over %d bytes", url_text,
                 AV_BODY_MAX);

done:

    free(head);
    free(raw);
    av_conn_close(&c);
    return st;
}


static void
av_url_text(const av_url_t *u, char *buf, size_t size)
{
    av_addr_t  a;
    int        v6;

    v6 = av_addr_parse(u->host, &a) && a.ss.ss_family == AF_INET6;

    if (u->port == (u->https ? 443u : 80u)) {
        snprintf(buf, size, "%s://%s%s%s%.80s", u->https ? "https" : "http",
                 v6 ? "[" : "", u->host, v6 ? "]" : "", u->path);
    } else {
        snprintf(buf, size, "%s://%s%s%s:%u%.80s",
                 u->https ? "https" : "http", v6 ? "[" : "", u->host,
                 v6 ? "]" : "", u->port, u->path);
    }
}


static pki_status_t
av_http01(av_t *av, const char *identifier, const char *token,
    const char *key_authz)
{
    char             text[AV_NAME_MAX + 128], seen[80];
    size_t           len;
    unsigned         hops;
    const char      *b;
    av_url_t         url, next;
    pki_status_t     st;
    av_http_resp_t  *r;

    r = malloc(sizeof(av_http_resp_t));
    if (r == NULL) {
        return av_fail(av, PKI_INTERNAL, "serverInternal", "out of memory");
    }

    url.https = 0;
    url.port = av->http_port;
    snprintf(url.host, sizeof(url.host), "%s", identifier);
    snprintf(url.path, sizeof(url.path), "/.well-known/acme-challenge/%s",
             token);

    for (hops = 0; ; hops++) {
        av_url_text(&url, text, sizeof(text));

        r->status = 0;
        r->body_len = 0;
        r->location[0] = '\0';

        av->hop = hops;
        st = av_http_get(av, &url, text, r);
        if (st != PKI_OK) {
            goto done;
        }

        /* the redirects (av_http_get read their Location); any other
         * status, a 300 or a 304 too, is the answer */
        if (r->status != 301 && r->status != 302 && r->status != 303
            && r->status != 307 && r->status != 308)
        {
            break;
        }

        if (hops >= av->max_redirects) {
            st = av_fail(av, PKI_UNAVAILABLE, "connection",
                         "too many redirects (over %u), last from %s",
                         av->max_redirects, text);
            goto done;
        }

        if (!av_url_redirect(&url, r->location, &next)) {
            /* echoed from the identifier's own server only: past a
             * redirect, a host that the client picked and the CA
             * reaches (see the key authorization below) */
            if (hops == 0) {
                av_printable(seen, sizeof(seen),
                             (const unsigned char *) r->location,
                             strlen(r->location));
                st = av_fail(av, PKI_UNAVAILABLE, "connection",
                             "invalid redirect target \"%s\" from %s",
                             seen, text);
            } else {
                st = av_fail(av, PKI_UNAVAILABLE, "connection",
                             "invalid redirect target (%zu bytes) from %s",
                             strlen(r->location), text);
            }
            goto done;
        }

        if (next.https ? (next.port != 443 && next.port != av->tls_port)
                       : (next.port != 80 && next.port != av->http_port))
        {
            st = av_fail(av, PKI_UNAVAILABLE, "connection",
                         "redirect from %s to port %u refused (only %s)",
                         text, next.port,
                         next.https ? "443" : "80");
            goto done;
        }

        url = next;
    }

    if (r->status != 200) {
        st = av_fail(av, PKI_UNAUTHORIZED, "unauthorized",
                     "invalid response from %s: HTTP %d", text, r->status);
        goto done;
    }

    /* RFC 8555 8.3: white space at the end is ignored (only there) */
    b = r->body;
    len = r->body_len;
    while (len > 0 && (b[len - 1] == ' ' || b[len - 1] == '\t'
                       || b[len - 1] == '\r' || b[len - 1] == '\n'))
    {
        len--;
    }

    /* what the identifier's own server sent is shown, as Let's Encrypt
     * does; what a server reached through a redirect sent is not: the
     * client picks that target, and the body of one inside the CA's
     * network (reachable with allow_private, or an address that only
     * the CA's resolver gives) is no business of the client's */
    if (len != strlen(key_authz) || memcmp(b, key_authz, len) != 0) {
        if (hops == 0) {
            av_printable(seen, sizeof(seen), (const unsigned char *) b,
                         len);
            st = av_fail(av, PKI_UNAUTHORIZED, "incorrectResponse",
                         "the key authorization from %s does not match: "
                         "got \"%s%s\"", text, seen, len > 64 ? "..." : "");
        } else {
            st = av_fail(av, PKI_UNAUTHORIZED, "incorrectResponse",
                         "the key authorization from %s does not match: "
                         "got %zu bytes (after %u redirect%s)", text, len,
                         hops, hops == 1 ? "" : "s");
        }
        goto done;
    }

    st = PKI_OK;

done:

    free(r);
    return st;
}


/* ---- tls-alpn-01 ------------------------------------------------------ */

/* RFC 8738 section 6: the reverse-mapping name of an IP address. */
static void
av_reverse_name(const av_addr_t *a, char *out, size_t size)
{
    int                   i;
    size_t                n;
    const unsigned char  *b;
    static const char     hex[] = "0123456789abcdef";

    if (a->ss.ss_family == AF_INET) {
        b = (const unsigned char *) &((const struct sockaddr_in *) &a->ss)
                ->sin_addr;
        snprintf(out, size, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1],
                 b[0]);
        return;
    }

    b = ((const struct sockaddr_in6 *) &a->ss)->sin6_addr.s6_addr;
    n = 0;
    for (i = 15; i >= 0 && n + 4 < size; i--) {
        out[n++] = hex[b[i] & 0x0f];
        out[n++] = '.';
        out[n++] = hex[b[i] >> 4];
        out[n++] = '.';
    }
    snprintf(out + n, size - n, "ip6.arpa");
}


static pki_status_t
av_tlsalpn01(av_t *av, const char *identifier, const av_addr_t *ip,
    const char *key_authz)
{
    int                   crit, idx;
    char                  sni[AV_NAME_MAX], where[AV_NAME_MAX + 16];
    unsigned              alen;
    av_conn_t             c;
    pki_status_t          st;
    X509                 *cert;
    ASN1_OBJECT          *obj;
    X509_EXTENSION       *ext;
    GENERAL_NAME         *gn;
    GENERAL_NAMES        *gens;
    ASN1_OCTET_STRING    *os, *val;
    const unsigned char  *alpn, *p;
    unsigned char         md[SHA256_DIGEST_LENGTH];

    c.fd = -1;
    c.ssl = NULL;
    c.ctx = NULL;
    crit = 0;
    obj = NULL;
    gens = NULL;
    val = NULL;

    if (ip != NULL) {
        av_reverse_name(ip, sni, sizeof(sni));
    } else {
        snprintf(sni, sizeof(sni), "%s", identifier);
    }
    snprintf(where, sizeof(where), "%s:%u", identifier, av->tls_port);

    st = av_open(av, identifier, av->tls_port, &c);
    if (st != PKI_OK) {
        goto done;
    }

    st = av_tls_start(av, &c, where, sni,
                      (const unsigned char *) av_acme_tls_alpn,
                      sizeof(av_acme_tls_alpn) - 1);
    if (st != PKI_OK) {
        goto done;
    }

    SSL_get0_alpn_selected(c.ssl, &alpn, &alen);
    if (alen != sizeof(av_acme_tls_alpn) - 2
        || memcmp(alpn, av_acme_tls_alpn + 1, alen) != 0)
    {
        st = av_fail(av, PKI_UNAVAILABLE, "tls",
                     "%s did not negotiate the ALPN protocol acme-tls/1",
                     where);
        goto done;
    }

    cert = SSL_get0_peer_certificate(c.ssl);
    if (cert == NULL) {
        st = av_fail(av, PKI_UNAVAILABLE, "tls",
                     "%s sent no certificate", where);
        goto done;
    }

    /* exactly one subjectAltName, equal to the identifier */
    gens = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
    if (gens == NULL || sk_GENERAL_NAME_num(gens) != 1) {
        st = av_fail(av, PKI_UNAUTHORIZED, "incorrectResponse",
                     "the certificate from %s must have exactly one "
                     "subjectAltName (%s)", where,
                     gens != NULL ? (sk_GENERAL_NAME_num(gens) == 0
                                     ? "has an empty one" : "has several")
                     : crit == -1 ? "has none"
                     : crit == -2 ? "extension repeated" : "malformed");
        goto done;
    }

    gn = sk_GENERAL_NAME_value(gens, 0);
    if (ip == NULL) {
        if (gn->type != GEN_DNS
            || (size_t) ASN1_STRING_length(gn->d.dNSName) != strlen(identifier)
            || strncasecmp((const char *) ASN1_STRING_get0_data(gn->d.dNSName),
                           identifier, strlen(identifier)) != 0)
        {
            st = av_fail(av, PKI_UNAUTHORIZED, "incorrectResponse",
                         "the subjectAltName of the certificate from %s is "
                         "not dNSName %s", where, identifier);
            goto done;
        }

    } else {
        const void  *want;
        size_t       wlen;

        if (ip->ss.ss_family == AF_INET) {
            want = &((const struct sockaddr_in *) &ip->ss)->sin_addr;
            wlen = 4;
        } else {
            want = &((const struct sockaddr_in6 *) &ip->ss)->sin6_addr;
            wlen = 16;
        }

        if (gn->type != GEN_IPADD
            || (size_t) ASN1_STRING_length(gn->d.iPAddress) != wlen
            || memcmp(ASN1_STRING_get0_data(gn->d.iPAddress), want, wlen)
               != 0)
        {
            st = av_fail(av, PKI_UNAUTHORIZED, "incorrectResponse",
                         "the subjectAltName of the certificate from %s is "
                         "not iPAddress %s", where, identifier);
            goto done;
        }
    }

    /* the acmeIdentifier extension: critical, OCTET STRING of the
     * SHA-256 of the key authorization (RFC 8737 section 3) */
    obj = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
    if (obj == NULL) {
        st = av_fail(av, PKI_INTERNAL, "serverInternal",
                     "OBJ_txt2obj() failed");
        goto done;
    }

    idx = X509_get_ext_by_OBJ(cert, obj, -1);
    if (idx < 0) {
        st = av_fail(av, PKI_UNAUTHORIZED, "incorrectResponse",
                     "the certificate from %s has no acmeIdentifier "
                     "extension", where);
        goto done;
    }
    if (X509_get_ext_by_OBJ(cert, obj, idx) >= 0) {
        st = av_fail(av, PKI_UNAUTHORIZED, "incorrectResponse",
                     "the certificate from %s repeats the acmeIdentifier "
                     "extension", where);
        goto done;
    }

    ext = X509_get_ext(cert, idx);
    if (!X509_EXTENSION_get_critical(ext)) {
        st = av_fail(av, PKI_UNAUTHORIZED, "incorrectResponse",
                     "the acmeIdentifier extension from %s is not critical",
                     where);
        goto done;
    }

    /* RFC 8737 3: the DER of an OCTET STRING of 32 octets, 04 20 and the
     * digest (OpenSSL's reader also takes BER: a long-form length, a
     * constructed string, which other validators refuse) */
    os = X509_EXTENSION_get_data(ext);
    p = ASN1_STRING_get0_data(os);
    val = d2i_ASN1_OCTET_STRING(NULL, &p, ASN1_STRING_length(os));
    if (val == NULL || p != ASN1_STRING_get0_data(os) + ASN1_STRING_length(os)
        || ASN1_STRING_length(val) != SHA256_DIGEST_LENGTH
        || ASN1_STRING_length(os) != SHA256_DIGEST_LENGTH + 2
        || ASN1_STRING_get0_data(os)[0] != V_ASN1_OCTET_STRING
        || ASN1_STRING_get0_data(os)[1] != SHA256_DIGEST_LENGTH)
    {
        st = av_fail(av, PKI_UNAUTHORIZED, "incorrectResponse",
                     "the acmeIdentifier extension from %s is malformed",
                     where);
        goto done;
    }

    SHA256((const unsigned char *) key_authz, strlen(key_authz), md);
    if (memcmp(ASN1_STRING_get0_data(val), md, sizeof(md)) != 0) {
        st = av_fail(av, PKI_UNAUTHORIZED, "incorrectResponse",
                     "the acmeIdentifier extension from %s does not hold "
                     "the SHA-256 of the key authorization", where);
        goto done;
    }

    st = PKI_OK;

done:

    ASN1_OCTET_STRING_free(val);
    ASN1_OBJECT_free(obj);
    GENERAL_NAMES_free(gens);
    av_conn_close(&c);
    return st;
}


/* ---- dns-01 -------------------------------------------------------------- */

static pki_status_t
av_dns01(av_t *av, const char *identifier, const char *key_authz)
{
    char           name[AV_NAME_MAX + 16], want[48], seen[80];
    pki_status_t   st;
    av_dns_ans_t  *ans;

    if (snprintf(name, sizeof(name), "_acme-challenge.%s", identifier)
        >= AV_NAME_MAX)
    {
        return av_fail(av, PKI_POLICY, "rejectedIdentifier",
                       "identifier too long for dns-01");
    }

    ans = malloc(sizeof(av_dns_ans_t));
    if (ans == NULL) {
        return av_fail(av, PKI_INTERNAL, "serverInternal", "out of memory");
    }

    /* every record is compared, not only those kept (stale ones pile up
     * at _acme-challenge, and resolvers rotate them) */
    av_sha256_b64url(key_authz, want);
    ans->want = want;

    st = av_dns_lookup(av, name, AV_T_TXT, ans);
    if (st != PKI_OK) {
        goto done;
    }

    if (ans->rcode != 0) {
        st = av_fail(av, PKI_UNAVAILABLE, "dns", "%s looking up TXT for %s",
                     av_rcode_name(ans->rcode), name);
        goto done;
    }

    if (ans->n == 0) {
        st = av_fail(av, PKI_UNAUTHORIZED, "unauthorized",
                     "no TXT record found at %s", name);
        goto done;
    }

    if (ans->found) {
        st = PKI_OK;
        goto done;
    }

    /* the value is shown when it is the client's own record; one that a
     * CNAME led to may be a name only the CA's resolver sees */
    if (ans->aliased) {
        st = av_fail(av, PKI_UNAUTHORIZED, "incorrectResponse",
                     "incorrect TXT record%s at the CNAME target of %s",
                     ans->n > 1 ? "s" : "", name);
        goto done;
    }

    if (ans->toolong[0]) {
        snprintf(seen, sizeof(seen), "(over %d bytes)", AV_DNS_RDATA_MAX - 1);
    } else {
        av_printable(seen, sizeof(seen), ans->data[0], ans->len[0]);
    }
    st = av_fail(av, PKI_UNAUTHORIZED, "incorrectResponse",
                 "incorrect TXT record \"%s\"%s at %s", seen,
                 ans->n > 1 ? " (and others)" : "", name);

done:

    free(ans);
    return st;
}


static void av_limits(av_t *av);
static int av_begin(av_t *av, const pki_acme_validate_conf_t *conf,
    pki_acme_validate_out_t *out);
static pki_status_t av_end(av_t *av, pki_status_t st);


/* ---- CAA (RFC 8659, with the parameters of RFC 8657) -------------------
 *
 * The relevant record set of a name is the first non-empty CAA answer
 * climbing from the name towards (not including) the root; none anywhere
 * allows every CA.  In it, for a wildcard the "issuewild" properties rule
 * when there is one, else "issue"; no such property allows every CA too.
 * One of them must name one of our identities and, where it has them,
 * accounturi equal to the account's URL and validationmethods listing the
 * method that validated.  An unknown property with the critical flag, a
 * malformed record, or a lookup that fails (other than NXDOMAIN) refuses.
 * A record of 256 bytes or more is kept as its flags, tag and length: an
 * "issue" or "issuewild" one of the properties that rule (it may be the
 * one that names us, with parameters too long to read) refuses when no
 * other of them lets this CA issue; any other (an iodef with a long URL,
 * a non-critical unknown property) bears on nothing, as RFC 8659 has it;
 * a critical unknown one refuses as any does.
 */

static char *
av_trim(char *s)
{
    char  *e;

    s += strspn(s, " \t");
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t')) {
        *--e = '\0';
    }
    return s;
}


/* What one issue/issuewild value says of this CA: AV_CAA_OK (0) when it
 * lets this CA issue, else why not, as bits: another CA (or none) is
 * named; or this CA is, and a parameter cannot be read, or
 * validationmethods leaves the method out, or accounturi names another
 * account (each parameter is judged, so a value that refuses on two
 * counts says both) */
#define AV_CAA_OK        0x00
#define AV_CAA_OTHER     0x01
#define AV_CAA_BADPARAM  0x02
#define AV_CAA_METHOD    0x04
#define AV_CAA_ACCOUNT   0x08

static int
av_caa_value_why(const av_t *av, const unsigned char *v, size_t len,
    const char *account_uri, const char *method)
{
    int    named, why;
    char   buf[AV_DNS_RDATA_MAX], *p, *next, *tag, *val, *m, *save;
    size_t i;

    if (len >= sizeof(buf) || memchr(v, '\0', len) != NULL) {
        return AV_CAA_OTHER;
    }
    memcpy(buf, v, len);
    buf[len] = '\0';

    next = strchr(buf, ';');
    if (next != NULL) {
        *next++ = '\0';
    }

    p = av_trim(buf);
    named = 0;
    for (i = 0; p[0] != '\0' && av->conf->caa_ids != NULL
                && av->conf->caa_ids[i] != NULL; i++)
    {
        if (strcasecmp(p, av->conf->caa_ids[i]) == 0) {
            named = 1;
        }
    }
    if (!named) {
        return AV_CAA_OTHER;
    }

    why = AV_CAA_OK;

    while (next != NULL) {
        tag = next;
        next = strchr(tag, ';');
        if (next != NULL) {
            *next++ = '\0';
        }
        tag = av_trim(tag);
        if (tag[0] == '\0') {
            continue;
        }

        val = strchr(tag, '=');
        if (val == NULL) {
            why |= AV_CAA_BADPARAM;         /* malformed: refuses */
            continue;
        }
        *val++ = '\0';
        tag = av_trim(tag);
        val = av_trim(val);

        if (strcasecmp(tag, "accounturi") == 0) {
            if (account_uri == NULL || strcmp(val, account_uri) != 0) {
                why |= AV_CAA_ACCOUNT;
            }

        } else if (strcasecmp(tag, "validationmethods") == 0) {
            for (m = strtok_r(val, ",", &save); m != NULL;
                 m = strtok_r(NULL, ",", &save))
            {
                if (strcmp(av_trim(m), method) == 0) {
                    break;
                }
            }
            if (m == NULL) {
                why |= AV_CAA_METHOD;
            }
        }
    }

    return why;
}


/* 1 when the tag of record rec is tag: by its length, not as a C string (a
 * tag "issue\0x" is an unknown property, not "issue") */
static int
av_caa_tag_is(const unsigned char *rec, const char *tag)
{
    return rec[1] == strlen(tag)
           && strncasecmp((const char *) rec + 2, tag, rec[1]) == 0;
}


static pki_status_t
av_caa_set(av_t *av, const char *at, const char *name, const av_dns_ans_t *ans,
    int wildcard, const char *account_uri, const char *method)
{
    int          use_wild, seen, v, why, n;
    size_t       i, tl, big;
    char         tag[32], ids[160];
    const char  *want;

    use_wild = 0;

    /* RFC 8659 judges the whole set: a record left out may be the issue,
     * issuewild or critical one that forbids (and resolvers rotate) */
    if (ans->truncated) {
        return av_fail(av, PKI_FORBIDDEN, "caa", "the CAA record set at %s "
                       "has more records than this CA reads (%d of %d "
                       "answers): it cannot be judged", at, AV_DNS_RR_MAX,
                       AV_DNS_ANS_MAX);
    }

    for (i = 0; i < ans->n; i++) {
        if (ans->len[i] < 2 || ans->data[i][1] == 0
            || (size_t) ans->data[i][1] + 2 > ans->len[i]
            || ans->data[i][1] >= sizeof(tag))
        {
            return av_fail(av, PKI_FORBIDDEN, "caa", "a CAA record at %s "
                           "cannot be read (malformed)", at);
        }

        tl = ans->data[i][1];
        memcpy(tag, ans->data[i] + 2, tl);
        tag[tl] = '\0';

        if (av_caa_tag_is(ans->data[i], "issuewild")) {
            use_wild = wildcard;

        } else if (!av_caa_tag_is(ans->data[i], "issue")
                   && !av_caa_tag_is(ans->data[i], "iodef")
                   && (ans->data[i][0] & 0x80))
        {
            av_printable(ids, sizeof(ids), (const unsigned char *) tag, tl);
            return av_fail(av, PKI_FORBIDDEN, "caa", "the CAA record set at "
                           "%s has a critical property \"%s\" this CA does "
                           "not know", at, ids);
        }
    }

    want = use_wild ? "issuewild" : "issue";
    seen = 0;
    big = 0;
    why = 0;

    for (i = 0; i < ans->n; i++) {
        if (!av_caa_tag_is(ans->data[i], want)) {
            continue;
        }
        seen = 1;
        if (ans->toolong[i]) {
            big = ans->size[i];
            continue;
        }
        tl = ans->data[i][1];
        v = av_caa_value_why(av, ans->data[i] + 2 + tl,
                             ans->len[i] - 2 - tl, account_uri, method);
        if (v == AV_CAA_OK) {
            return PKI_OK;
        }
        why |= v;
    }

    if (!seen) {
        return PKI_OK;                      /* only iodef etc.: no limit */
    }

    if (big) {
        return av_fail(av, PKI_FORBIDDEN, "caa", "a CAA \"%s\" record at "
                       "%s cannot be read (%zu bytes, over %d), and no "
                       "other lets this CA issue for %s%s", want, at, big,
                       AV_DNS_RDATA_MAX - 1, wildcard ? "*." : "", name);
    }

    ids[0] = '\0';
    for (i = 0; av->conf->caa_ids != NULL && av->conf->caa_ids[i] != NULL;
         i++)
    {
        tl = strlen(ids);
        snprintf(ids + tl, sizeof(ids) - tl, "%s%s", i ? ", " : "",
                 av->conf->caa_ids[i]);
    }

    /* records that name this CA and limit it: say each limit met (the
     * bits of all of them) */
    if (why & (AV_CAA_ACCOUNT | AV_CAA_METHOD | AV_CAA_BADPARAM)) {
        char  lim[200];

        lim[0] = '\0';
        n = 0;
        if (why & AV_CAA_ACCOUNT) {
            n += snprintf(lim + n, sizeof(lim) - n, "only for another ACME "
                          "account (accounturi)");
        }
        if ((why & AV_CAA_METHOD) && n < (int) sizeof(lim)) {
            n += snprintf(lim + n, sizeof(lim) - n, "%snot by %s "
                          "(validationmethods)", n ? "; " : "",
                          method[0] ? method : "a method the order's "
                          "authorization was validated with");
        }
        if ((why & AV_CAA_BADPARAM) && n < (int) sizeof(lim)) {
            (void) snprintf(lim + n, sizeof(lim) - n, "%swith a parameter "
                            "that cannot be read (no \"=\")",
                            n ? "; " : "");
        }

        return av_fail(av, PKI_FORBIDDEN, "caa", "the CAA \"%s\" records at "
                       "%s name this CA (%s) for %s%s, but %s", want, at, ids,
                       wildcard ? "*." : "", name, lim);
    }

    return av_fail(av, PKI_FORBIDDEN, "caa", "the CAA \"%s\" records at %s "
                   "do not allow this CA (%s) to issue for %s%s: none of "
                   "them names it", want, at, ids[0] ? ids : "no identity",
                   wildcard ? "*." : "", name);
}


pki_status_t
pki_acme_caa_check(const pki_acme_validate_conf_t *conf,
    const char *identifier, int wildcard, const char *account_uri,
    const char *method, pki_acme_validate_out_t *out)
{
    av_t           av;
    const char    *cur, *dot;
    pki_status_t   st;
    pki_sigpipe_t  sp;
    av_dns_ans_t  *ans;

    if (!av_begin(&av, conf, out)) {
        return PKI_MALFORMED;
    }

    if (conf == NULL || identifier == NULL || method == NULL) {
        return av_fail(&av, PKI_MALFORMED, "malformed",
                       "missing CAA argument");
    }

    if (!av_hostname_ok(identifier)) {
        return av_fail(&av, PKI_POLICY, "rejectedIdentifier",
                       "\"%.100s\" is not a valid DNS name", identifier);
    }

    av_limits(&av);

    ans = malloc(sizeof(av_dns_ans_t));
    if (ans == NULL) {
        return av_fail(&av, PKI_INTERNAL, "serverInternal", "out of memory");
    }
    ans->want = NULL;

    pki_int_sigpipe_block(&sp);

    st = PKI_OK;

    for (cur = identifier; cur != NULL && cur[0] != '\0';
         cur = dot != NULL ? dot + 1 : NULL)
    {
        dot = strchr(cur, '.');

        st = av_dns_lookup(&av, cur, AV_T_CAA, ans);
        if (st != PKI_OK) {
            break;
        }

        if (ans->rcode != 0 && ans->rcode != 3) {
            st = av_fail(&av, PKI_UNAVAILABLE, "dns", "%s looking up CAA "
                         "for %s", av_rcode_name(ans->rcode), cur);
            break;
        }

        if (ans->rcode == 0 && (ans->n > 0 || ans->truncated)) {
            st = av_caa_set(&av, cur, identifier, ans, wildcard, account_uri,
                            method);
            break;
        }
    }

    pki_int_sigpipe_restore(&sp);
    free(ans);

    return av_end(&av, st);
}


/* ---- entry point ------------------------------------------------------- */

/* One call's state, its outcome cleared; 0 when there is nowhere to put
 * the outcome. */
static int
av_begin(av_t *av, const pki_acme_validate_conf_t *conf,
    pki_acme_validate_out_t *out)
{
    memset(av, 0, sizeof(av_t));

    if (out == NULL) {
        return 0;
    }

    pki_result_init(&out->res);
    out->problem_type = NULL;

    av->conf = conf;
    av->out = out;

    return 1;
}


/* A success leaves no trace of what was tried on the way. */
static pki_status_t
av_end(av_t *av, pki_status_t st)
{
    if (st == PKI_OK) {
        ERR_clear_error();
        av->out->problem_type = NULL;
        pki_result_init(&av->out->res);
    }

    return st;
}


/* the time budget and ports of one call, from conf */
static void
av_limits(av_t *av)
{
    const pki_acme_validate_conf_t  *conf = av->conf;

    av->timeout_ms = conf->timeout_ms ? conf->timeout_ms
                                      : PKI_ACME_VALIDATE_TIMEOUT;
    av->http_port = conf->http_port ? conf->http_port : 80;
    av->tls_port = conf->tls_port ? conf->tls_port : 443;
    av->max_redirects = conf->max_redirects ? conf->max_redirects
                                            : AV_REDIRECTS_DEFAULT;
    av->deadline = av_now() + av->timeout_ms;
}


static int
av_token_ok(const char *s)
{
    size_t  n;

    for (n = 0; s[n] != '\0'; n++) {
        if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z')
              || (s[n] >= '0' && s[n] <= '9') || s[n] == '-' || s[n] == '_'))
        {
            return 0;
        }
    }
    return n > 0 && n <= AV_TOKEN_MAX;
}


pki_status_t
pki_acme_validate(const pki_acme_validate_conf_t *conf,
    pki_acme_chall_t type, const char *id_type, const char *identifier,
    const char *token, const char *key_authz, pki_acme_validate_out_t *out)
{
    int           is_ip;
    size_t        n;
    av_t          av;
    av_addr_t     ip;
    pki_status_t  st;
    pki_sigpipe_t  sp;

    if (!av_begin(&av, conf, out)) {
        return PKI_MALFORMED;
    }

    if (conf == NULL || id_type == NULL || identifier == NULL
        || key_authz == NULL || (type == PKI_ACME_HTTP01 && token == NULL))
    {
        return av_fail(&av, PKI_MALFORMED, "malformed",
                       "missing validation argument");
    }

    n = strlen(key_authz);
    if (n == 0 || n > AV_KEYAUTHZ_MAX
        || (type == PKI_ACME_HTTP01 && !av_token_ok(token)))
    {
        return av_fail(&av, PKI_MALFORMED, "malformed",
                       "invalid token or key authorization");
    }

    if (strcmp(id_type, "ip") == 0) {
        is_ip = 1;
        if (!av_addr_parse(identifier, &ip)) {
            return av_fail(&av, PKI_POLICY, "rejectedIdentifier",
                           "\"%.100s\" is not an IP address", identifier);
        }
        if (type == PKI_ACME_DNS01) {
            return av_fail(&av, PKI_POLICY, "rejectedIdentifier",
                           "dns-01 cannot validate an IP address");
        }

    } else if (strcmp(id_type, "dns") == 0) {
        is_ip = 0;
        if (!av_hostname_ok(identifier)) {
            return av_fail(&av, PKI_POLICY, "rejectedIdentifier",
                           "\"%.100s\" is not a valid DNS name", identifier);
        }

    } else {
        return av_fail(&av, PKI_POLICY, "rejectedIdentifier",
                       "unsupported identifier type");
    }

    av_limits(&av);

    if (av.http_port > 65535 || av.tls_port > 65535) {
        return av_fail(&av, PKI_INTERNAL, "serverInternal",
                       "invalid port in the validation configuration");
    }

    pki_int_sigpipe_block(&sp);

    switch (type) {

    case PKI_ACME_HTTP01:
        st = av_http01(&av, identifier, token, key_authz);
        break;

    case PKI_ACME_TLSALPN01:
        st = av_tlsalpn01(&av, identifier, is_ip ? &ip : NULL, key_authz);
        break;

    case PKI_ACME_DNS01:
        st = av_dns01(&av, identifier, key_authz);
        break;

    default:
        st = av_fail(&av, PKI_MALFORMED, "malformed",
                     "unknown challenge type");
        break;
    }

    pki_int_sigpipe_restore(&sp);

    return av_end(&av, st);
}
