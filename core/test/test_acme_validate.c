/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * ACME challenge validation (pki_acme_validate) against real servers run
 * in this process on 127.0.0.1: a small HTTP server thread (http-01, with
 * redirects, chunked and oversized bodies, stalls), a TLS server thread
 * whose acme-tls/1 certificates are built here with OpenSSL (tls-alpn-01,
 * and https for redirects), and a DNS responder thread on UDP and TCP
 * (dns-01, A/AAAA, CNAME, truncation, NXDOMAIN, SERVFAIL, garbage).
 * The TLS server also plays hostile: DHE or ffdhe only (a key exchange
 * whose cost it picks), endless HelloRequests in the handshake, endless
 * NewSessionTickets after it.
 * Addresses that must be refused (10/8, 224/4, 0.0.0.0) are refused
 * before any connect(), so nothing leaves the loopback interface.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "pki.h"
#include "test/unit.h"
#include "test/testkeys.h"

/* the time bounds are 20x under Valgrind (t/valgrind_core.t) */
#define VG_SLOW  (getenv("PKI_TEST_VALGRIND") != NULL ? 20 : 1)


#define THUMB  "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"

static volatile int  stop;

static unsigned      http_port, tls_port, dns_port, closed_port;
static int           http_conns;                /* accepted so far     */
static char          http_host_seen[256];
static char          tls_sni_seen[256];

enum {
    CERT_GOOD = 0, CERT_WRONGHASH, CERT_NOEXT, CERT_NONCRIT, CERT_TWOSAN,
    CERT_WRONGSAN, CERT_BADEXT, CERT_BEREXT, CERT_IPSAN, CERT_EMPTYSAN,
    CERT_NOALPN,
    CERT_HANG,
    /* server behaviours, with a good certificate */
    SRV_TLS12,          /* TLS 1.2, ECDHE-RSA on P-256 only           */
    SRV_DHE,            /* TLS 1.2, DHE only, 10000-bit odd modulus   */
    SRV_FFDHE,          /* TLS 1.3, group ffdhe2048 only              */
    SRV_HELLOREQ,       /* HelloRequests instead of a ServerHello     */
    SRV_TICKETS,        /* NewSessionTickets instead of an answer     */
    CERT_MAX
};
static volatile int  tls_mode;
static const char   *ka_token;                 /* key authz of another token */


static void
ka(const char *token, char *out, size_t size)
{
    size_t  n;

    n = strlen(token);
    if (n + sizeof(THUMB) + 1 > size) {
        n = size - sizeof(THUMB) - 1;
    }
    memcpy(out, token, n);
    out[n] = '.';
    memcpy(out + n + 1, THUMB, sizeof(THUMB));
}


static void
ka_b64(const char *token, char out[64])
{
    int            i, n;
    char           k[256];
    unsigned char  md[32], b64[64];

    ka(token, k, sizeof(k));
    SHA256((unsigned char *) k, strlen(k), md);
    n = EVP_EncodeBlock(b64, md, 32);
    for (i = 0; i < n && b64[i] != '='; i++) {
        out[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char) b64[i];
    }
    out[i] = '\0';
}


static long long
now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* CPU time of the calling thread: what a validation costs, whatever the
 * load of the machine */
static long long
cpu_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* A socket bound to addr (host order):*port (0: any, then set), a stream
 * one listening with that backlog; -1 when it cannot be bound. */
static int
listen_at(uint32_t addr, int type, unsigned *port, int backlog)
{
    int                 fd, one;
    socklen_t           len;
    struct sockaddr_in  sin;

    fd = socket(AF_INET, type, 0);
    one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(addr);
    sin.sin_port = htons((uint16_t) *port);
    if (bind(fd, (struct sockaddr *) &sin, sizeof(sin)) != 0
        || (type == SOCK_STREAM && listen(fd, backlog) != 0))
    {
        close(fd);
        return -1;
    }
    len = sizeof(sin);
    getsockname(fd, (struct sockaddr *) &sin, &len);
    *port = ntohs(sin.sin_port);
    return fd;
}


static int
listen_on(int type, unsigned *port)
{
    return listen_at(INADDR_LOOPBACK, type, port, 16);
}


/* A listener on 127.0.0.2:port whose accept queue is full, so that a
 * further SYN is dropped, as a host whose path drops packets.  The
 * listener and its queued connections stay open until the test ends. */
static void
blackhole(unsigned port)
{
    int                 i, c;
    struct sockaddr_in  sin;

    if (listen_at(0x7f000002, SOCK_STREAM, &port, 0) < 0) {
        fprintf(stderr, "blackhole: %s\n", strerror(errno));
        exit(1);
    }
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(0x7f000002);
    sin.sin_port = htons((uint16_t) port);
    for (i = 0; i < 3; i++) {
        c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        (void) connect(c, (struct sockaddr *) &sin, sizeof(sin));
    }
    usleep(200000);
}


/* accept() with a 100 ms poll so the thread sees `stop`. */
static int
accept_wait(int lfd)
{
    struct pollfd  p;

    p.fd = lfd;
    p.events = POLLIN;
    if (poll(&p, 1, 100) <= 0) {
        return -1;
    }
    return accept(lfd, NULL, NULL);
}


static int
send_all(int fd, const char *s, size_t len)
{
    ssize_t  n;

    while (len > 0) {
        n = send(fd, s, len, MSG_NOSIGNAL);
        if (n <= 0) {
            return 0;
        }
        s += n;
        len -= (size_t) n;
    }
    return 1;
}


/* Waits until the peer closes (or 5 s). */
static void
drain_until_close(int fd)
{
    char           buf[512];
    struct pollfd  p;
    long long      end;

    end = now_ms() + 5000;
    while (now_ms() < end) {
        p.fd = fd;
        p.events = POLLIN;
        if (poll(&p, 1, 100) > 0 && recv(fd, buf, sizeof(buf), 0) <= 0) {
            return;
        }
    }
}


/* ---- HTTP server ----------------------------------------------------------- */

static void
http_answer(int fd, const char *path, const char *host)
{
    char        k[256], buf[4096];
    const char *tok;
    size_t      i;

    tok = strrchr(path, '/');
    tok = tok ? tok + 1 : path;
    ka(tok, k, sizeof(k));

#define SEND(...)  do { int n_ = snprintf(buf, sizeof(buf), __VA_ARGS__); \
                        send_all(fd, buf, (size_t) n_); } while (0)

    if (strcmp(tok, "good") == 0 || strcmp(tok, "redirtarget") == 0
        || strcmp(tok, "redirq?v=1") == 0
        || strcmp(path, "/.well-known/acme-challenge/good?w") == 0)
    {
        ka("good", k, sizeof(k));
        SEND("HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s\r\n",
             strlen(k) + 2, k);
    } else if (strcmp(tok, "early") == 0) {
        /* an interim 103 before the final answer, in one write */
        SEND("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n"
             "\r\nHTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(k), k);
    } else if (strcmp(tok, "continue") == 0) {
        /* 100 and 103, each a write of its own, LF-only the second */
        SEND("HTTP/1.1 100 Continue\r\n\r\n");
        usleep(20000);
        SEND("HTTP/1.1 103 Early Hints\nLink: </a.js>; rel=preload\n\n");
        usleep(20000);
        SEND("HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(k), k);
    } else if (strcmp(tok, "interim6") == 0) {
        for (i = 0; i < 6; i++) {
            SEND("HTTP/1.1 103 Early Hints\r\nLink: </%zu.css>\r\n\r\n",
                 i);
        }
        SEND("HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(k), k);
    } else if (strcmp(tok, "interimbig") == 0) {
        /* 103s of 3000 bytes each: their heads together over 8192 */
        memset(buf, 'x', 2900);
        buf[2900] = '\0';
        for (i = 0; i < 3; i++) {
            char  h[3100];
            int   hn;

            hn = snprintf(h, sizeof(h), "HTTP/1.1 103 Early Hints\r\n"
                          "Link: </%s>\r\n\r\n", buf);
            send_all(fd, h, (size_t) hn);
        }
        SEND("HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(k), k);
    } else if (strcmp(tok, "switch") == 0) {
        SEND("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"
             "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(k), k);
    } else if (strcmp(tok, "chunked") == 0) {
        SEND("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             "5\r\n%.5s\r\n%zx;ext=1\r\n%s\r\n0\r\n\r\n", k, strlen(k) - 5,
             k + 5);
    } else if (strcmp(tok, "chunk0x") == 0 || strcmp(tok, "chunksp") == 0) {
        /* a size strtoul reads but HTTP does not: "0x5", " 5" */
        SEND("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             "%s5\r\n%.5s\r\n%zx\r\n%s\r\n0\r\n\r\n",
             tok[5] == 'x' ? "0x" : " ", k, strlen(k) - 5, k + 5);
    } else if (strcmp(tok, "chunkbws") == 0) {
        /* white space before a chunk extension (RFC 9112 7.1.1) */
        SEND("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             "5 ;a=b\r\n%.5s\r\n%zx\t;c\r\n%s\r\n0\r\n\r\n", k,
             strlen(k) - 5, k + 5);
    } else if (strcmp(tok, "chunk17") == 0) {
        SEND("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             "00000000000000005\r\n%.5s\r\n0\r\n\r\n", k);
    } else if (strcmp(tok, "noclen") == 0) {
        SEND("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n%s \r\n\t",
             k);
    } else if (strcmp(tok, "lead") == 0) {
        SEND("HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n  %s",
             strlen(k) + 2, k);
    } else if (strcmp(tok, "lfgood") == 0) {
        ka("good", k, sizeof(k));
        SEND("HTTP/1.1 200 OK\nContent-Length: %zu\n\n%s", strlen(k), k);
    } else if (strcmp(tok, "lfbody") == 0) {
        /* LF-only headers; the body holds a CRLF CRLF before the key
         * authorization: the body is all of it, and wrong */
        ka("good", k, sizeof(k));
        SEND("HTTP/1.1 200 OK\nContent-Type: text/plain\n\njunk\r\n\r\n%s",
             k);
    } else if (strcmp(tok, "wrong") == 0) {
        SEND("HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\nnot-the-key-authz");
    } else if (strcmp(tok, "big") == 0) {
        SEND("HTTP/1.1 200 OK\r\n\r\n");
        memset(buf, 'x', sizeof(buf));
        for (i = 0; i < 5; i++) {
            send_all(fd, buf, sizeof(buf));
        }
    } else if (strcmp(tok, "bigclen") == 0) {
        SEND("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nxxxx");
    } else if (strcmp(tok, "bigchunk") == 0) {
        SEND("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             "ffffffff\r\nxx");
    } else if (strcmp(tok, "redir") == 0) {
        SEND("HTTP/1.1 302 Found\r\nLocation: http://%s/.well-known/"
             "acme-challenge/redirtarget\r\nContent-Length: 0\r\n\r\n", host);
    } else if (strcmp(tok, "redirrel") == 0) {
        SEND("HTTP/1.1 301 Moved\r\nLocation: good\r\n\r\n");
    } else if (strcmp(tok, "redirq") == 0) {
        /* RFC 3986 5.2.2: the same path with this query */
        SEND("HTTP/1.1 302 Found\r\nLocation: ?v=1\r\n\r\n");
    } else if (strcmp(tok, "redirq2") == 0) {
        SEND("HTTP/1.1 302 Found\r\nLocation: ?v=/2\r\n\r\n");
    } else if (strcmp(path, "/.well-known/acme-challenge/redirq2?v=/2") == 0) {
        /* a relative path against a path with a query (holding a "/"):
         * the query goes, the path's last segment is replaced */
        SEND("HTTP/1.1 302 Found\r\nLocation: good?w\r\n\r\n");
    } else if (strcmp(tok, "redirfqdn") == 0) {
        /* a fully qualified name: the trailing dot is the same name */
        SEND("HTTP/1.1 302 Found\r\nLocation: http://host.test.:%u/"
             ".well-known/acme-challenge/good\r\n\r\n", http_port);
    } else if (strcmp(tok, "loop") == 0) {
        SEND("HTTP/1.1 307 Again\r\nLocation: /.well-known/acme-challenge/"
             "loop\r\n\r\n");
    } else if (strcmp(tok, "badport") == 0) {
        SEND("HTTP/1.1 302 Found\r\nLocation: http://host.test:22/x\r\n\r\n");
    } else if (strcmp(tok, "ftp") == 0) {
        SEND("HTTP/1.1 302 Found\r\nLocation: ftp://host.test/x\r\n\r\n");
    } else if (strcmp(tok, "userinfo") == 0) {
        SEND("HTTP/1.1 302 Found\r\nLocation: http://u@host.test:%u/x\r\n\r\n",
             http_port);
    } else if (strcmp(tok, "nolocation") == 0) {
        SEND("HTTP/1.1 302 Found\r\n\r\n");
    } else if (strcmp(tok, "tomcast") == 0) {
        SEND("HTTP/1.1 302 Found\r\nLocation: http://mcast.test:%u/"
             ".well-known/acme-challenge/good\r\n\r\n", http_port);
    } else if (strcmp(tok, "tozero") == 0) {
        SEND("HTTP/1.1 302 Found\r\nLocation: http://0.0.0.0:%u/"
             ".well-known/acme-challenge/good\r\n\r\n", http_port);
    } else if (strcmp(tok, "tohttps") == 0) {
        SEND("HTTP/1.1 308 Perm\r\nLocation: https://host.test:%u/"
             ".well-known/acme-challenge/good\r\n\r\n", tls_port);
    } else if (strcmp(tok, "tosecret") == 0) {
        SEND("HTTP/1.1 302 Found\r\nLocation: http://host.test:%u/"
             ".well-known/acme-challenge/secret\r\n\r\n", http_port);
    } else if (strcmp(tok, "secret") == 0) {
        /* what a host inside the CA's network might serve */
        SEND("HTTP/1.1 200 OK\r\nContent-Length: 24\r\n\r\n"
             "s3cr3t-internal-api-key\n");
    } else if (strcmp(tok, "notmod") == 0) {
        SEND("HTTP/1.1 304 Not Modified\r\n\r\n");
    } else if (strcmp(tok, "404") == 0) {
        SEND("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    } else if (strcmp(tok, "slow") == 0) {
        drain_until_close(fd);
    } else if (strcmp(tok, "slowbody") == 0) {
        SEND("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc");
        drain_until_close(fd);
    } else if (strcmp(tok, "hugehead") == 0) {
        SEND("HTTP/1.1 200 OK\r\n");
        memset(buf, 'h', sizeof(buf));
        for (i = 0; i < 3; i++) {
            send_all(fd, buf, sizeof(buf));
        }
    } else if (strcmp(tok, "garbage") == 0) {
        SEND("XYZZY 200\r\n\r\n%s", k);
    } else if (strcmp(tok, "nul") == 0) {
        send_all(fd, "HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n", 27);
    } else if (strcmp(tok, "twoclen") == 0) {
        SEND("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n"
             "\r\nabcd");
    } else {
        SEND("HTTP/1.1 404 Not Found\r\n\r\n");
    }
#undef SEND
}


/* Reads one request; returns the path and the Host header. */
static int
read_request(int fd, SSL *ssl, char *path, size_t psize, char *host,
    size_t hsize)
{
    int     n;
    char    req[4096], *p, *e;
    size_t  len;

    len = 0;
    req[0] = '\0';
    while (strstr(req, "\r\n\r\n") == NULL && len < sizeof(req) - 1) {
        n = ssl ? SSL_read(ssl, req + len, (int) (sizeof(req) - 1 - len))
                : (int) recv(fd, req + len, sizeof(req) - 1 - len, 0);
        if (n <= 0) {
            return 0;
        }
        len += (size_t) n;
        req[len] = '\0';
        if (len >= 4 && memcmp(req, "GET ", 4) != 0) {
            return 0;
        }
    }

    if (sscanf(req, "GET %255s HTTP/1.1", path) != 1 || psize < 256) {
        return 0;
    }
    host[0] = '\0';
    p = strstr(req, "\r\nHost: ");
    if (p != NULL) {
        p += 8;
        e = strstr(p, "\r\n");
        snprintf(host, hsize, "%.*s", (int) (e - p), p);
    }
    return 1;
}


static void *
http_thread(void *arg)
{
    int   lfd, fd;
    char  path[256], host[256];

    lfd = *(int *) arg;
    while (!stop) {
        fd = accept_wait(lfd);
        if (fd < 0) {
            continue;
        }
        __atomic_add_fetch(&http_conns, 1, __ATOMIC_SEQ_CST);
        if (read_request(fd, NULL, path, sizeof(path), host, sizeof(host))) {
            snprintf(http_host_seen, sizeof(http_host_seen), "%s", host);
            http_answer(fd, path, host);
        } else {
            send_all(fd, "HTTP/1.1 400 Bad Request\r\n\r\n", 28);
        }
        close(fd);
    }
    close(lfd);
    return NULL;
}


/* ---- TLS server ------------------------------------------------------------ */

static EVP_PKEY  *tls_key;
static X509      *tls_certs[CERT_MAX];
static EVP_PKEY  *tls_rsa_key;              /* for the RSA cipher suites */
static X509      *tls_rsa_cert;
static EVP_PKEY  *tls_dh;                   /* 10000-bit odd modulus     */
static char       tls_secret[2 * EVP_MAX_MD_SIZE + 1];    /* hex         */


static X509 *
make_cert(int mode, EVP_PKEY *key)
{
    int                 crit;
    char                k[256];
    X509               *x;
    X509V3_CTX          v3;
    ASN1_OBJECT        *obj;
    X509_EXTENSION     *ext;
    GENERAL_NAMES      *gens;
    ASN1_OCTET_STRING  *os;
    unsigned char       der[3 + 32];
    const char         *san;

    x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), mode + 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (unsigned char *) "acme-tls", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, key);

    san = mode == CERT_TWOSAN ? "DNS:tls.test,DNS:other.test"
        : mode == CERT_WRONGSAN ? "DNS:other.test"
        : mode == CERT_IPSAN ? "IP:127.0.0.1"
        : "DNS:tls.test";
    if (mode == CERT_EMPTYSAN) {
        /* an extension holding an empty sequence */
        gens = GENERAL_NAMES_new();
        X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0,
                          X509V3_ADD_DEFAULT);
        GENERAL_NAMES_free(gens);
    } else {
        X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
        ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }

    if (mode != CERT_NOEXT) {
        ka(mode == CERT_WRONGHASH ? "other" : "tlstok", k, sizeof(k));
        der[0] = 0x04;
        der[1] = 32;
        SHA256((unsigned char *) k, strlen(k), der + 2);
        os = ASN1_OCTET_STRING_new();
        if (mode == CERT_BADEXT) {
            ASN1_OCTET_STRING_set(os, der + 2, 32);     /* no inner tag */
        } else if (mode == CERT_BEREXT) {
            /* BER, not DER: the length in long form (81 20) */
            memmove(der + 3, der + 2, 32);
            der[1] = 0x81;
            der[2] = 32;
            ASN1_OCTET_STRING_set(os, der, 35);
        } else {
            ASN1_OCTET_STRING_set(os, der, 34);
        }
        obj = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
        crit = mode != CERT_NONCRIT;
        ext = X509_EXTENSION_create_by_OBJ(NULL, obj, crit, os);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
        ASN1_OBJECT_free(obj);
        ASN1_OCTET_STRING_free(os);
    }

    X509_sign(x, key, EVP_sha256());
    return x;
}


static int
sni_cb(SSL *ssl, int *al, void *arg)
{
    const char  *sni;

    (void) al;
    (void) arg;
    sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    snprintf(tls_sni_seen, sizeof(tls_sni_seen), "%s", sni ? sni : "");
    return SSL_TLSEXT_ERR_OK;
}


static int
alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned inlen, void *arg)
{
    (void) ssl;
    (void) arg;

    if (tls_mode == CERT_NOALPN) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    if (inlen >= 11 && in[0] == 10 && memcmp(in + 1, "acme-tls/1", 10) == 0)
    {
        *out = in + 1;
        *outlen = 10;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}


/* DH parameters no real server uses and a client should not accept: a
 * 10000-bit modulus (OpenSSL's limit), odd, random, no subgroup; a short
 * private value on our side, so that only the client pays. */
static EVP_PKEY *
make_dh(void)
{
    BIGNUM          *p, *g;
    EVP_PKEY        *dh;
    OSSL_PARAM      *params;
    EVP_PKEY_CTX    *pc;
    OSSL_PARAM_BLD  *bld;

    dh = NULL;
    p = BN_new();
    g = BN_new();
    bld = OSSL_PARAM_BLD_new();
    BN_rand(p, 10000, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ODD);
    BN_set_word(g, 2);
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_FFC_P, p);
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_FFC_G, g);
    OSSL_PARAM_BLD_push_int(bld, OSSL_PKEY_PARAM_DH_PRIV_LEN, 160);
    params = OSSL_PARAM_BLD_to_param(bld);
    pc = EVP_PKEY_CTX_new_from_name(NULL, "DH", NULL);
    if (params == NULL || pc == NULL || EVP_PKEY_fromdata_init(pc) <= 0
        || EVP_PKEY_fromdata(pc, &dh, EVP_PKEY_KEY_PARAMETERS, params) <= 0)
    {
        fprintf(stderr, "cannot build the DH parameters\n");
        exit(1);
    }
    EVP_PKEY_CTX_free(pc);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(p);
    BN_free(g);
    return dh;
}


/* The server's first application traffic secret, for stream_tickets(). */
static void
keylog_cb(const SSL *ssl, const char *line)
{
    (void) ssl;

    if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0) {
        snprintf(tls_secret, sizeof(tls_secret), "%s", strrchr(line, ' ') + 1);
    }
}


/* HKDF-Expand-Label(secret, label, "", len) with SHA-256 (RFC 8446 7.1) */
static int
expand_label(const unsigned char *secret, size_t slen, const char *label,
    unsigned char *out, size_t len)
{
    int            rc;
    size_t         n, l;
    EVP_PKEY_CTX  *pc;
    unsigned char  info[64];

    l = strlen(label);
    info[0] = 0;
    info[1] = (unsigned char) len;
    info[2] = (unsigned char) (6 + l);
    memcpy(info + 3, "tls13 ", 6);
    memcpy(info + 9, label, l);
    n = 9 + l;
    info[n++] = 0;                              /* empty context        */

    pc = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    rc = pc != NULL && EVP_PKEY_derive_init(pc) > 0
         && EVP_PKEY_CTX_set_hkdf_mode(pc, EVP_PKEY_HKDEF_MODE_EXPAND_ONLY) > 0
         && EVP_PKEY_CTX_set_hkdf_md(pc, EVP_sha256()) > 0
         && EVP_PKEY_CTX_set1_hkdf_key(pc, secret, (int) slen) > 0
         && EVP_PKEY_CTX_add1_hkdf_info(pc, info, (int) n) > 0
         && EVP_PKEY_derive(pc, out, &len) > 0;
    EVP_PKEY_CTX_free(pc);
    return rc;
}


/* After a TLS 1.3 handshake (TLS_AES_128_GCM_SHA256, no ticket sent yet):
 * NewSessionTicket messages as fast as the client takes them, until it
 * goes away or 6 s pass.  The records are built here, 842 small tickets
 * to a record: OpenSSL's own server makes one record per ticket and is
 * not faster at making them than a client at reading them, so the client
 * would find the socket empty now and then. */
static void
stream_tickets(int fd)
{
    int              n, len;
    long             slen;
    uint64_t         seq;
    long long        end;
    unsigned char   *secret, key[16], iv[12], nonce[12];
    unsigned char    pt[16001], rec[5 + sizeof(pt) + 16];
    EVP_CIPHER_CTX  *cc;
    static const unsigned char  nst[19] = {
        4, 0, 0, 15,                            /* NewSessionTicket     */
        0, 0, 0x1c, 0x20,                       /* lifetime 7200 s      */
        0, 0, 0, 0,                             /* age_add              */
        1, 'n',                                 /* nonce                */
        0, 1, 't',                              /* ticket               */
        0, 0                                    /* no extensions        */
    };

    secret = OPENSSL_hexstr2buf(tls_secret, &slen);
    if (secret == NULL || slen != 32
        || !expand_label(secret, 32, "key", key, sizeof(key))
        || !expand_label(secret, 32, "iv", iv, sizeof(iv)))
    {
        fprintf(stderr, "stream_tickets: no traffic secret\n");
        OPENSSL_free(secret);
        return;
    }
    OPENSSL_free(secret);

    for (n = 0; n + (int) sizeof(nst) < (int) sizeof(pt); n += sizeof(nst)) {
        memcpy(pt + n, nst, sizeof(nst));
    }
    pt[n++] = 22;                               /* inner type handshake */

    rec[0] = 23;                                /* application_data     */
    rec[1] = 3;
    rec[2] = 3;
    rec[3] = (unsigned char) ((n + 16) >> 8);
    rec[4] = (unsigned char) (n + 16);

    cc = EVP_CIPHER_CTX_new();
    end = now_ms() + 6000;

    for (seq = 0; now_ms() < end; seq++) {
        memcpy(nonce, iv, sizeof(iv));
        for (len = 0; len < 8; len++) {
            nonce[11 - len] ^= (unsigned char) (seq >> (8 * len));
        }
        if (!EVP_EncryptInit_ex(cc, EVP_aes_128_gcm(), NULL, key, nonce)
            || !EVP_EncryptUpdate(cc, NULL, &len, rec, 5)
            || !EVP_EncryptUpdate(cc, rec + 5, &len, pt, n)
            || !EVP_EncryptFinal_ex(cc, rec + 5 + len, &len)
            || !EVP_CIPHER_CTX_ctrl(cc, EVP_CTRL_GCM_GET_TAG, 16, rec + 5 + n)
            || !send_all(fd, (char *) rec, 5 + (size_t) n + 16))
        {
            break;
        }
    }

    EVP_CIPHER_CTX_free(cc);
}


/* Answers a ClientHello with HelloRequest messages only, as fast as the
 * client takes them, until it goes away or 6 s pass: a client skips them
 * while it waits for the ServerHello.  One to a record: the client reads
 * each record with two read()s, so it is far slower at taking them than
 * we are at sending, and the socket never runs dry (with 4096 to a
 * record it did, now and then, on a loaded machine). */
static void
hello_flood(int fd)
{
    char           buf[4096];
    size_t         i;
    long long      end;
    unsigned char  recs[9 * 1820];

    (void) recv(fd, buf, sizeof(buf), 0);       /* the ClientHello      */

    memset(recs, 0, sizeof(recs));
    for (i = 0; i < sizeof(recs); i += 9) {
        recs[i] = 22;                           /* handshake            */
        recs[i + 1] = 3;
        recs[i + 2] = 3;
        recs[i + 4] = 4;                        /* 0 0 0 0: HelloRequest */
    }

    end = now_ms() + 6000;
    while (now_ms() < end && send_all(fd, (char *) recs, sizeof(recs))) {
        /* void */
    }
}


static SSL_CTX *
tls_ctx(int mode)
{
    SSL_CTX  *ctx;

    ctx = SSL_CTX_new(TLS_server_method());

    if (mode == SRV_TLS12 || mode == SRV_DHE) {
        SSL_CTX_use_certificate(ctx, tls_rsa_cert);
        SSL_CTX_use_PrivateKey(ctx, tls_rsa_key);
        SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    } else {
        SSL_CTX_use_certificate(ctx, tls_certs[mode < CERT_NOALPN
                                               ? mode : CERT_GOOD]);
        SSL_CTX_use_PrivateKey(ctx, tls_key);
    }

    if (mode == SRV_TLS12) {
        SSL_CTX_set_cipher_list(ctx, "ECDHE-RSA-AES128-GCM-SHA256");
        SSL_CTX_set1_groups_list(ctx, "P-256");

    } else if (mode == SRV_DHE) {
        SSL_CTX_set_cipher_list(ctx, "DHE-RSA-AES128-GCM-SHA256");
        SSL_CTX_set_security_level(ctx, 0);     /* for its 160-bit exponent */
        EVP_PKEY_up_ref(tls_dh);
        SSL_CTX_set0_tmp_dh_pkey(ctx, tls_dh);

    } else if (mode == SRV_FFDHE) {
        SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
        SSL_CTX_set1_groups_list(ctx, "ffdhe2048");

    } else if (mode == SRV_TICKETS) {
        SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
        SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256");
        SSL_CTX_set_num_tickets(ctx, 0);
        SSL_CTX_set_keylog_callback(ctx, keylog_cb);
    }

    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
    return ctx;
}


static void *
tls_thread(void *arg)
{
    int                   lfd, fd, mode;
    SSL                  *ssl;
    SSL_CTX              *ctx;
    unsigned              alen;
    const unsigned char  *alpn;
    char                  path[256], host[256];

    lfd = *(int *) arg;
    while (!stop) {
        fd = accept_wait(lfd);
        if (fd < 0) {
            continue;
        }
        mode = tls_mode;
        if (mode == CERT_HANG) {
            drain_until_close(fd);
            close(fd);
            continue;
        }
        if (mode == SRV_HELLOREQ) {
            hello_flood(fd);
            close(fd);
            continue;
        }

        ctx = tls_ctx(mode);
        tls_sni_seen[0] = '\0';
        ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);

        if (SSL_accept(ssl) == 1) {
            SSL_get0_alpn_selected(ssl, &alpn, &alen);
            if (alen == 0 && mode == SRV_TICKETS
                && read_request(fd, ssl, path, sizeof(path), host,
                                sizeof(host)))
            {
                stream_tickets(fd);
                SSL_set_quiet_shutdown(ssl, 1);     /* its sequence is off */

            } else if (alen == 0
                       && read_request(fd, ssl, path, sizeof(path), host,
                                       sizeof(host)))
            {
                char  k[256], resp[512];
                int   n;

                ka("good", k, sizeof(k));
                n = snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\n"
                             "Content-Length: %zu\r\n\r\n%s", strlen(k), k);
                SSL_write(ssl, resp, n);
            }
            SSL_shutdown(ssl);
        }
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        close(fd);
        ERR_clear_error();
    }
    close(lfd);
    return NULL;
}


/* ---- DNS responder --------------------------------------------------------- */

static size_t
put_name(unsigned char *m, size_t n, const char *name)
{
    const char  *p, *dot;
    size_t       l;

    for (p = name; *p; p = *dot ? dot + 1 : dot) {
        dot = strchr(p, '.');
        if (dot == NULL) {
            dot = p + strlen(p);
        }
        l = (size_t) (dot - p);
        m[n++] = (unsigned char) l;
        memcpy(m + n, p, l);
        n += l;
    }
    m[n++] = 0;
    return n;
}


static size_t
put_rr_head(unsigned char *m, size_t n, const char *owner, int type,
    size_t rdlen)
{
    if (owner == NULL) {
        m[n++] = 0xc0;                          /* pointer to question  */
        m[n++] = 12;
    } else {
        n = put_name(m, n, owner);
    }
    m[n++] = (unsigned char) (type >> 8);
    m[n++] = (unsigned char) type;
    m[n++] = 0;
    m[n++] = 1;
    memset(m + n, 0, 3);
    m[n + 3] = 60;
    n += 4;
    m[n++] = (unsigned char) (rdlen >> 8);
    m[n++] = (unsigned char) rdlen;
    return n;
}


/* an A record for the question's name: a.b.c.d */
static size_t
put_a(unsigned char *m, size_t n, int a, int b, int c, int d)
{
    n = put_rr_head(m, n, NULL, 1, 4);
    m[n++] = (unsigned char) a;
    m[n++] = (unsigned char) b;
    m[n++] = (unsigned char) c;
    m[n++] = (unsigned char) d;
    return n;
}


/* an AAAA record for the question's name: the IPv6 literal a */
static size_t
put_aaaa(unsigned char *m, size_t n, const char *a)
{
    n = put_rr_head(m, n, NULL, 28, 16);
    if (inet_pton(AF_INET6, a, m + n) != 1) {
        fprintf(stderr, "put_aaaa: bad address %s\n", a);
        exit(1);
    }
    return n + 16;
}


static size_t
put_txt(unsigned char *m, size_t n, const char *owner, const char *s1,
    const char *s2)
{
    size_t  l1, l2;

    l1 = strlen(s1);
    l2 = s2 ? strlen(s2) : 0;
    n = put_rr_head(m, n, owner, 16, 1 + l1 + (s2 ? 1 + l2 : 0));
    m[n++] = (unsigned char) l1;
    memcpy(m + n, s1, l1);
    n += l1;
    if (s2) {
        m[n++] = (unsigned char) l2;
        memcpy(m + n, s2, l2);
        n += l2;
    }
    return n;
}


static size_t
put_cname(unsigned char *m, size_t n, const char *owner, const char *target)
{
    size_t  at;

    at = put_rr_head(m, n, owner, 5, 0);
    n = put_name(m, at, target);
    m[at - 2] = (unsigned char) ((n - at) >> 8);
    m[at - 1] = (unsigned char) (n - at);
    return n;
}


static size_t
put_caa(unsigned char *m, size_t n, const char *owner, int flags,
    const char *tag, const char *value)
{
    size_t  tl, vl;

    tl = strlen(tag);
    vl = strlen(value);
    n = put_rr_head(m, n, owner, 257, 2 + tl + vl);
    m[n++] = (unsigned char) flags;
    m[n++] = (unsigned char) tl;
    memcpy(m + n, tag, tl);
    n += tl;
    memcpy(m + n, value, vl);
    return n + vl;
}


/* Builds the answer to query q; 0: send nothing. */
static size_t
dns_answer(const unsigned char *q, size_t qlen, int tcp, unsigned char *m)
{
    int            qtype, an, rcode;
    char           name[256], good[64];
    size_t         off, n, l;
    unsigned char  big[151];

    if (qlen < 17) {
        return 0;
    }
    off = 12;
    name[0] = '\0';
    while (off < qlen && q[off] != 0) {
        l = q[off];
        if (off + 1 + l > qlen || strlen(name) + l + 2 > sizeof(name)) {
            return 0;
        }
        if (name[0]) {
            strcat(name, ".");
        }
        strncat(name, (const char *) q + off + 1, l);
        off += 1 + l;
    }
    off++;
    if (off + 4 > qlen) {
        return 0;
    }
    qtype = (q[off] << 8) | q[off + 1];
    off += 4;

    /* header + question echoed */
    memcpy(m, q, off);
    m[2] = 0x81;                                /* QR, RD               */
    m[3] = 0x80;                                /* RA                   */
    m[4] = 0; m[5] = 1;
    memset(m + 6, 0, 6);
    n = off;
    an = 0;
    rcode = 0;

    ka_b64("dnstok", good);

#define IS(s)  (strcmp(name, s) == 0)

    if (IS("_acme-challenge.silent.test")) {
        return 0;
    } else if (IS("_acme-challenge.good.test") && qtype == 16) {
        n = put_txt(m, n, NULL, good, NULL);
        an = 1;
    } else if ((IS("_acme-challenge.spoof.test")
                || IS("_acme-challenge.huge.test")) && qtype == 16) {
        /* spoof: dns_thread sends a forged answer first */
        n = put_txt(m, n, NULL, good, NULL);
        an = 1;
        if (IS("_acme-challenge.huge.test") && !tcp) {
            /* over UDP, a second TXT record of 4500 bytes takes the
             * datagram past the client's 4096-byte buffer */
            n = put_rr_head(m, n, NULL, 16, 4500);
            for (l = 0; l < 4500; l += 250) {
                m[n] = 249;
                memset(m + n + 1, 'x', 249);
                n += 250;
            }
            an = 2;
        }
    } else if (IS("_acme-challenge.multi.test") && qtype == 16) {
        n = put_txt(m, n, NULL, "some-other-value", NULL);
        n = put_txt(m, n, NULL, "abc", NULL);
        {
            char  a[8];
            snprintf(a, sizeof(a), "%.5s", good);
            n = put_txt(m, n, NULL, a, good + 5);
        }
        an = 3;
    } else if (IS("_acme-challenge.pile.test") && qtype == 16) {
        /* stale records piled up: the right one is the 21st */
        for (l = 0; l < 20; l++) {
            n = put_txt(m, n, NULL, "stale-value", NULL);
        }
        n = put_txt(m, n, NULL, good, NULL);
        an = 21;
    } else if (IS("_acme-challenge.wrong.test")) {
        n = put_txt(m, n, NULL, "nope", NULL);
        an = 1;
    } else if (IS("_acme-challenge.long.test")) {
        memset(big, 'a', 150);
        big[150] = '\0';
        n = put_txt(m, n, NULL, (char *) big, (char *) big);
        an = 1;
    } else if (IS("_acme-challenge.empty.test")) {
        /* NOERROR, no data */
    } else if (IS("_acme-challenge.servfail.test")) {
        rcode = 2;
    } else if (IS("_acme-challenge.cname.test")) {
        n = put_cname(m, n, NULL, "_acme-challenge.good.test");
        n = put_txt(m, n, "_acme-challenge.good.test", good, NULL);
        an = 2;
    } else if (IS("_acme-challenge.cnwrong.test")) {
        /* a CNAME to a name only the CA's resolver may know */
        n = put_cname(m, n, NULL, "txt.internal.test");
        n = put_txt(m, n, "txt.internal.test", "internal-secret-value",
                    NULL);
        an = 2;
    } else if (IS("_acme-challenge.cname2.test")) {
        n = put_cname(m, n, NULL, "_acme-challenge.good.test");
        an = 1;
    } else if (IS("_acme-challenge.cloop.test") || IS("a.cloop.test")) {
        n = put_cname(m, n, NULL, IS("a.cloop.test")
                      ? "_acme-challenge.cloop.test" : "a.cloop.test");
        an = 1;
    } else if (IS("_acme-challenge.chain8.test")
               || IS("_acme-challenge.chain9.test"))
    {
        /* a chain of 8 (9) CNAMEs in one answer, then the TXT */
        char  own[64], tgt[64];
        int   j, len9;

        len9 = IS("_acme-challenge.chain9.test") ? 9 : 8;
        for (j = 1; j <= len9; j++) {
            snprintf(own, sizeof(own), "c%d.chain.test", j - 1);
            snprintf(tgt, sizeof(tgt), "c%d.chain.test", j);
            n = put_cname(m, n, j == 1 ? NULL : own, tgt);
        }
        n = put_txt(m, n, tgt, good, NULL);
        an = len9 + 1;
    } else if (IS("_acme-challenge.selfloop.test")) {
        n = put_cname(m, n, NULL, "_acme-challenge.selfloop.test");
        an = 1;
    } else if (IS("_acme-challenge.trunc.test")) {
        if (!tcp) {
            m[2] |= 0x02;                       /* TC, no answer        */
        } else {
            n = put_txt(m, n, NULL, good, NULL);
            an = 1;
        }
    } else if (IS("_acme-challenge.garbage.test")) {
        m[4] = 0; m[5] = 1;
        m[12] = 0xc0;                           /* question: bad ptr    */
        m[13] = 0xff;
        n = 14 + 4;
    } else if (IS("_acme-challenge.short.test")) {
        an = 1;                                 /* claims 1, sends 0    */
    } else if (IS("_acme-challenge.ptrloop.test")) {
        l = n;
        m[n++] = (unsigned char) (0xc0 | (l >> 8));
        m[n++] = (unsigned char) l;
        memset(m + n, 0, 10);
        n += 10;
        an = 1;
    } else if (IS("_acme-challenge.longcname.test")) {
        /* a CNAME to a name of 254 characters, one more than DNS allows */
        char  t[300];

        memset(t, 'a', 254);
        t[254] = '\0';
        t[63] = t[127] = t[191] = '.';
        n = put_cname(m, n, NULL, t);
        an = 1;
    } else if (IS("_acme-challenge.ptrchain.test")) {
        /* the right TXT, under an owner name reached through 150
         * compression pointers, each to the one before: a TXT whose
         * strings hold the chain (the first pointer to the question's
         * name), then the TXT of the token owned by the chain's end */
        size_t  at[150], rd;
        int     k;

        n = put_rr_head(m, n, NULL, 16, 0);
        rd = n;
        for (k = 0; k < 150; k++) {
            if (k % 100 == 0) {
                m[n++] = (unsigned char) (k == 0 ? 200 : 100);
            }
            at[k] = n;
            l = k == 0 ? 12 : at[k - 1];
            m[n++] = (unsigned char) (0xc0 | (l >> 8));
            m[n++] = (unsigned char) l;
        }
        m[rd - 2] = (unsigned char) ((n - rd) >> 8);
        m[rd - 1] = (unsigned char) (n - rd);
        l = at[149];
        m[n++] = (unsigned char) (0xc0 | (l >> 8));
        m[n++] = (unsigned char) l;
        m[n++] = 0;
        m[n++] = 16;
        m[n++] = 0;
        m[n++] = 1;
        memset(m + n, 0, 3);
        m[n + 3] = 60;
        n += 4;
        m[n++] = 0;
        m[n++] = (unsigned char) (1 + strlen(good));
        m[n++] = (unsigned char) strlen(good);
        memcpy(m + n, good, strlen(good));
        n += strlen(good);
        an = 2;
    } else if (IS("_acme-challenge.badlen.test")) {
        n = put_rr_head(m, n, NULL, 16, 200);   /* rdlength past end    */
        m[n++] = 3;
        an = 1;
    } else if (IS("_acme-challenge.fuzz.test")) {
        n = put_cname(m, n, NULL, "x.fuzz.test");
        n = put_txt(m, n, "x.fuzz.test", good, "tail");
        an = 2;
    } else if (qtype == 257 && (IS("ours.caa") || IS("case.caa"))) {
        n = put_caa(m, n, NULL, 0, IS("ours.caa") ? "issue" : "ISSUE",
                    IS("ours.caa") ? "nginx-pki.test" : " NGINX-PKI.TEST ");
        an = 1;
    } else if (qtype == 257 && IS("empty.ours.caa")) {
        /* NOERROR, no data: the parent's set applies */
    } else if (qtype == 257 && IS("other.caa")) {
        n = put_caa(m, n, NULL, 0, "issue", "ca.example.net");
        n = put_caa(m, n, NULL, 0, "iodef", "mailto:sec@example.net");
        an = 2;
    } else if (qtype == 257 && IS("none.caa")) {
        n = put_caa(m, n, NULL, 0, "issue", ";");
        an = 1;
    } else if (qtype == 257 && IS("wild.caa")) {
        n = put_caa(m, n, NULL, 0, "issue", "ca.example.net");
        n = put_caa(m, n, NULL, 0, "issuewild", "nginx-pki.test");
        an = 2;
    } else if (qtype == 257 && IS("many.caa")) {
        /* 16 records that allow us, and the 17th forbids wildcards:
         * a set this CA cannot read whole */
        for (l = 0; l < 16; l++) {
            n = put_caa(m, n, NULL, 0, "issue", "nginx-pki.test");
        }
        n = put_caa(m, n, NULL, 0, "issuewild", ";");
        an = 17;
    } else if (qtype == 257 && IS("manyans.caa")) {
        /* 64 answers of another type first: the CAA record is the 65th */
        for (l = 0; l < 64; l++) {
            n = put_txt(m, n, NULL, "x", NULL);
        }
        n = put_caa(m, n, NULL, 0, "issue", "ca.example.net");
        an = 65;
    } else if (qtype == 257 && IS("wild2.caa")) {
        n = put_caa(m, n, NULL, 0, "issue", "nginx-pki.test");
        n = put_caa(m, n, NULL, 0, "issuewild", ";");
        an = 2;
    } else if (qtype == 257 && IS("acct.caa")) {
        n = put_caa(m, n, NULL, 0, "issue", "ca.example.net");
        n = put_caa(m, n, NULL, 0, "issue", "nginx-pki.test; accounturi="
                    "https://ca.test/acme/acct/A1");
        an = 2;
    } else if (qtype == 257 && IS("meth.caa")) {
        n = put_caa(m, n, NULL, 0, "issue", "nginx-pki.test; "
                    "validationmethods=tls-alpn-01,dns-01; other=x");
        an = 1;
    } else if (qtype == 257 && IS("two.caa")) {
        n = put_caa(m, n, NULL, 0, "issue", "nginx-pki.test; "
                    "validationmethods=dns-01");
        n = put_caa(m, n, NULL, 0, "issue", "nginx-pki.test; accounturi="
                    "https://ca.test/acme/acct/A1");
        an = 2;
    } else if (qtype == 257 && IS("both.caa")) {
        n = put_caa(m, n, NULL, 0, "issue", "nginx-pki.test; "
                    "validationmethods=dns-01; accounturi="
                    "https://ca.test/acme/acct/A1");
        an = 1;
    } else if (qtype == 257 && IS("param.caa")) {
        n = put_caa(m, n, NULL, 0, "issue", "nginx-pki.test; policy");
        an = 1;
    } else if (qtype == 257 && IS("crit.caa")) {
        n = put_caa(m, n, NULL, 0, "issue", "nginx-pki.test");
        n = put_caa(m, n, NULL, 128, "tbs", "unknown");
        an = 2;
    } else if (qtype == 257 && IS("noncrit.caa")) {
        n = put_caa(m, n, NULL, 0, "tbs", "unknown");
        n = put_caa(m, n, NULL, 0, "issue", "nginx-pki.test");
        an = 2;
    } else if (qtype == 257 && IS("iodef.caa")) {
        n = put_caa(m, n, NULL, 0, "iodef", "mailto:sec@example.net");
        an = 1;
    } else if (qtype == 257 && IS("servfail.caa")) {
        rcode = 2;
    } else if (qtype == 257 && IS("cname.caa")) {
        n = put_cname(m, n, NULL, "ours.caa");
        n = put_caa(m, n, "ours.caa", 0, "issue", "nginx-pki.test");
        an = 2;
    } else if (qtype == 257 && IS("long.caa")) {
        char  v[300];

        memset(v, 'a', 280);
        v[280] = '\0';
        n = put_caa(m, n, NULL, 0, "issue", v);
        an = 1;
    } else if (qtype == 257 && (IS("iodeflong.caa") || IS("wildlong.caa")
                                || IS("critlong.caa")
                                || IS("issuelong.caa")
                                || IS("issuelong2.caa")))
    {
        /* a record of 298 bytes (over the 255 this CA reads) beside an
         * issue that names us (another CA for issuelong2): an iodef, an
         * issuewild, an unknown critical property, another issue */
        char         v[300];
        const char  *tag;

        tag = IS("iodeflong.caa") ? "iodef" : IS("wildlong.caa")
              ? "issuewild" : IS("critlong.caa") ? "tbs" : "issue";
        l = 298 - 2 - strlen(tag);
        memset(v, 'a', l);
        v[l] = '\0';
        if (IS("iodeflong.caa")) {
            memcpy(v, "mailto:", 7);
            memcpy(v + l - 12, "@example.net", 12);
        }
        n = put_caa(m, n, NULL, 0, "issue", IS("issuelong2.caa")
                    ? "ca.example.net" : "nginx-pki.test");
        n = put_caa(m, n, NULL, IS("critlong.caa") ? 128 : 0, tag, v);
        an = 2;
    } else if (qtype == 257 && (IS("nulcrit.caa") || IS("nulwild.caa"))) {
        /* a tag with a NUL in it is no known property: "issue\0x"
         * critical refuses; "issuewild\0" does not make issuewild rule */
        l = IS("nulcrit.caa") ? 7 : 10;
        n = put_rr_head(m, n, NULL, 257, 2 + l + 14);
        m[n++] = IS("nulcrit.caa") ? 128 : 0;
        m[n++] = (unsigned char) l;
        memcpy(m + n, IS("nulcrit.caa") ? "issue\0x" : "issuewild\0", l);
        n += l;
        memcpy(m + n, "nginx-pki.test", 14);
        n += 14;
        an = 1;
        if (IS("nulwild.caa")) {
            n = put_caa(m, n, NULL, 0, "issue", "ca.example.net");
            an = 2;
        }
    } else if (qtype == 257 && IS("bad.caa")) {
        n = put_rr_head(m, n, NULL, 257, 2);    /* tag length 0         */
        m[n++] = 0;
        m[n++] = 0;
        an = 1;
    } else if (IS("host.test") || IS("www.host.test")) {
        if (qtype == 1) {
            n = put_a(m, n, 127, 0, 0, 1);
            an = 1;
        }
    } else if (IS("dual.test")) {            /* 127.0.0.2 drops SYNs   */
        if (qtype == 1) {
            n = put_a(m, n, 127, 0, 0, 2);
            n = put_a(m, n, 127, 0, 0, 1);
            an = 2;
        }
    } else if (IS("v6silent.test")) {         /* AAAA never answered  */
        if (qtype == 28) {
            return 0;
        }
        if (qtype == 1) {
            n = put_a(m, n, 127, 0, 0, 1);
            an = 1;
        }
    } else if (IS("v6fail.test") || IS("v6failnoa.test")) {
        /* AAAA SERVFAIL; A 127.0.0.1 for the first, none for the other */
        if (qtype == 28) {
            rcode = 2;
        } else if (qtype == 1 && IS("v6fail.test")) {
            n = put_a(m, n, 127, 0, 0, 1);
            an = 1;
        }
    } else if (IS("v6many.test")) {
        /* 8 AAAA records none of which answers (::1 and IPv4-mapped
         * loopback addresses nothing listens on: refused at once, and
         * no packet leaves the host), then the A record that serves */
        if (qtype == 28) {
            char  a[32];

            n = put_aaaa(m, n, "::1");
            for (l = 2; l <= 8; l++) {
                snprintf(a, sizeof(a), "::ffff:127.0.0.%zu", 10 + l);
                n = put_aaaa(m, n, a);
            }
            an = 8;
        } else if (qtype == 1) {
            n = put_a(m, n, 127, 0, 0, 1);
            an = 1;
        }
    } else if (IS("v4fail.test")) {
        /* A SERVFAIL; AAAA: IPv4-mapped 127.0.0.1, where the HTTP
         * server listens */
        if (qtype == 1) {
            rcode = 2;
        } else if (qtype == 28) {
            n = put_aaaa(m, n, "::ffff:127.0.0.1");
            an = 1;
        }
    } else if (IS("bothfail.test")) {
        rcode = 2;                              /* A and AAAA SERVFAIL  */
    } else if (IS("mcast.test")) {
        if (qtype == 1) {
            n = put_a(m, n, 224, 0, 0, 1);
            an = 1;
        }
    } else if (IS("private.test")) {
        if (qtype == 1) {
            n = put_a(m, n, 10, 0, 0, 1);
            an = 1;
        }
    } else if (IS("mixed.test")) {               /* one good, one bad    */
        if (qtype == 1) {
            n = put_a(m, n, 127, 0, 0, 1);
            n = put_a(m, n, 0, 0, 0, 0);
            an = 2;
        }
    } else {
        rcode = 3;
    }
#undef IS

    m[3] |= (unsigned char) rcode;
    m[7] = (unsigned char) an;

    if (strcmp(name, "_acme-challenge.fuzz.test") == 0) {
        unsigned char  r[3];
        RAND_bytes(r, sizeof(r));
        m[12 + r[0] % (n - 12)] ^= (unsigned char) (1u << (r[1] % 8));
        if (r[2] & 1) {
            n -= r[2] % 8;                       /* and cut the tail     */
        }
    }
    return n;
}


static void *
dns_thread(void *arg)
{
    int                 ufd, tfd, fd;
    ssize_t             n;
    size_t              len, got;
    socklen_t           slen;
    struct pollfd       p[2];
    struct sockaddr_in  from;
    unsigned char       q[1024], m[8192], d[8192];

    ufd = ((int *) arg)[0];
    tfd = ((int *) arg)[1];

    while (!stop) {
        p[0].fd = ufd;
        p[0].events = POLLIN;
        p[1].fd = tfd;
        p[1].events = POLLIN;
        if (poll(p, 2, 100) <= 0) {
            continue;
        }

        if (p[0].revents & POLLIN) {
            slen = sizeof(from);
            n = recvfrom(ufd, q, sizeof(q), 0, (struct sockaddr *) &from,
                         &slen);
            if (n > 0) {
                len = dns_answer(q, (size_t) n, 0, m);
                if (len > 13 && memmem(q, (size_t) n, "\5spoof", 6)) {
                    /* first a forged answer: our id, and a question
                     * whose name differs ("^acme-challenge...") */
                    memcpy(d, m, len);
                    d[13] ^= 0x01;
                    sendto(ufd, d, len, 0, (struct sockaddr *) &from, slen);
                }
                if (len > 0) {
                    sendto(ufd, m, len, 0, (struct sockaddr *) &from, slen);
                }
            }
        }

        if (p[1].revents & POLLIN) {
            fd = accept(tfd, NULL, NULL);
            if (fd < 0) {
                continue;
            }
            got = 0;
            while (got < 2 || got < 2 + (size_t) ((q[0] << 8) | q[1])) {
                n = recv(fd, q + got, sizeof(q) - got, 0);
                if (n <= 0) {
                    break;
                }
                got += (size_t) n;
            }
            if (got > 2) {
                len = dns_answer(q + 2, got - 2, 1, m + 2);
                m[0] = (unsigned char) (len >> 8);
                m[1] = (unsigned char) len;
                send_all(fd, (char *) m, len + 2);
            }
            close(fd);
        }
    }
    close(ufd);
    close(tfd);
    return NULL;
}


/* ---- checks ------------------------------------------------------------------ */

/* A resolver that fails on its own: every query gets rcode fail_rcode
 * (SERVFAIL, NOTIMP, REFUSED; NXDOMAIN as the final answer it is), or
 * with FAIL_TC a truncated answer whose TCP retry finds no listener.
 * It listens on UDP only, as resolver #1 before the good one. */
#define FAIL_TC  16

static unsigned      fail_port;
static volatile int  fail_rcode;
static int           fail_asked;


static void *
fail_dns_thread(void *arg)
{
    int                 fd;
    ssize_t             n;
    size_t              off;
    socklen_t           slen;
    struct pollfd       p;
    struct sockaddr_in  from;
    unsigned char       q[1024];

    fd = *(int *) arg;

    while (!stop) {
        p.fd = fd;
        p.events = POLLIN;
        if (poll(&p, 1, 100) <= 0) {
            continue;
        }
        slen = sizeof(from);
        n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *) &from, &slen);
        if (n < 17) {
            continue;
        }
        off = 12;
        while (off < (size_t) n && q[off] != 0) {
            off += 1 + q[off];
        }
        off += 5;                               /* root, type, class    */
        if (off > (size_t) n) {
            continue;
        }
        __atomic_add_fetch(&fail_asked, 1, __ATOMIC_SEQ_CST);
        q[2] = 0x81 | (fail_rcode == FAIL_TC ? 0x02 : 0);
        q[3] = (unsigned char) (0x80 | (fail_rcode & 0x0f));
        memset(q + 6, 0, 6);                    /* no AN, NS, AR        */
        sendto(fd, q, off, 0, (struct sockaddr *) &from, slen);
    }
    close(fd);
    return NULL;
}


/* A resolv.conf naming the failing resolver first, then the good one
 * (or, with good 0, the failing one alone). */
static void
fail_resolv_conf(char *path, int good)
{
    FILE  *f;

    f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        exit(1);
    }
    fprintf(f, "# test\nsearch test\nnameserver 127.0.0.1:%u\n", fail_port);
    if (good) {
        fprintf(f, "options attempts:2\nnameserver 127.0.0.1:%u\n",
                dns_port);
    }
    fclose(f);
}


static pki_acme_validate_conf_t
lab(void)
{
    pki_acme_validate_conf_t  c;

    memset(&c, 0, sizeof(c));
    c.http_port = http_port;
    c.tls_port = tls_port;
    c.resolve_to = "127.0.0.1";
    c.allow_private = 1;
    c.timeout_ms = 3000;
    return c;
}


static void
check(const char *name, const pki_acme_validate_conf_t *c,
    pki_acme_chall_t type, const char *id_type, const char *id,
    const char *token, const char *want_type, const char *want_detail)
{
    char                     k[256];
    long long                t0;
    pki_status_t             st;
    pki_acme_validate_out_t  out;

    ka(ka_token ? ka_token : token ? token : "x", k, sizeof(k));
    t0 = now_ms();
    st = pki_acme_validate(c, type, id_type, id, token, k, &out);

    if (want_type == NULL) {
        if (!ok(st == PKI_OK && out.problem_type == NULL,
                "%s: valid (%lld ms)", name, now_ms() - t0))
            diag("got %s %s: %s | %s", pki_status_name(st),
                out.problem_type ? out.problem_type : "-", out.res.detail,
                out.res.log);
        return;
    }

    if (!ok(st != PKI_OK && out.res.status == st && out.problem_type != NULL
            && strcmp(out.problem_type, want_type) == 0
            && (want_detail == NULL || strstr(out.res.detail, want_detail)),
            "%s: %s (%lld ms)", name, want_type, now_ms() - t0))
        diag("got %s %s: \"%s\" | %s", pki_status_name(st),
            out.problem_type ? out.problem_type : "-", out.res.detail,
            out.res.log);
}


/* A failure of want_type whose detail (what the client sees) holds
 * want_detail (unless NULL) and not hidden, which is in the log (what the
 * server's error log gets) when in_log. */
static void
check_hidden(const char *name, const pki_acme_validate_conf_t *c,
    pki_acme_chall_t type, const char *id, const char *token,
    const char *want_type, const char *want_detail, const char *hidden,
    int in_log)
{
    char                     k[256];
    pki_status_t             st;
    pki_acme_validate_out_t  out;

    ka(token, k, sizeof(k));
    st = pki_acme_validate(c, type, "dns", id, token, k, &out);

    if (!ok(st != PKI_OK && out.problem_type != NULL
            && strcmp(out.problem_type, want_type) == 0
            && (want_detail == NULL || strstr(out.res.detail, want_detail))
            && strstr(out.res.detail, hidden) == NULL
            && (!in_log || strstr(out.res.log, hidden) != NULL),
            "%s: %s, \"%s\" not in the detail%s", name, want_type, hidden,
            in_log ? ", in the log" : ""))
        diag("got %s %s: \"%s\" | %s", pki_status_name(st),
             out.problem_type ? out.problem_type : "-", out.res.detail,
             out.res.log);
}


int
main(void)
{
    int                       hfd, tfd, dfds[2], ffd, i, before, fuzz_bad,
                              fuzz_read, fuzz_n;
    char                      resolver[64], want[64], k[256],
                              rconf[64];
    pthread_t                 th, tt, td, tf;
    long long                 t0;
    pki_status_t              st;
    pki_acme_validate_out_t   out;
    pki_acme_validate_conf_t  c;

    signal(SIGPIPE, SIG_IGN);
    pki_init();

    http_port = 0;
    hfd = listen_on(SOCK_STREAM, &http_port);
    tls_port = 0;
    tfd = listen_on(SOCK_STREAM, &tls_port);
    dns_port = 0;
    dfds[0] = listen_on(SOCK_DGRAM, &dns_port);
    dfds[1] = listen_on(SOCK_STREAM, &dns_port);
    closed_port = 0;
    i = listen_on(SOCK_STREAM, &closed_port);   /* bound, then closed   */
    close(i);
    fail_port = 0;
    ffd = listen_on(SOCK_DGRAM, &fail_port);    /* UDP only: TCP refused */
    if (hfd < 0 || tfd < 0 || dfds[0] < 0 || dfds[1] < 0 || ffd < 0) {
        skip_all("cannot listen on 127.0.0.1");
    }
    snprintf(resolver, sizeof(resolver), "127.0.0.1:%u", dns_port);

    tls_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    for (i = 0; i < CERT_NOALPN; i++) {
        tls_certs[i] = make_cert(i, tls_key);
    }
    tls_rsa_key = pki_test_rsa(2048, 1);
    tls_rsa_cert = make_cert(CERT_GOOD, tls_rsa_key);
    tls_dh = make_dh();

    pthread_create(&th, NULL, http_thread, &hfd);
    pthread_create(&tt, NULL, tls_thread, &tfd);
    pthread_create(&td, NULL, dns_thread, dfds);
    pthread_create(&tf, NULL, fail_dns_thread, &ffd);

    /* ---- http-01 ---- */
    c = lab();
    check("http-01", &c, PKI_ACME_HTTP01, "dns", "good.test", "good",
          NULL, NULL);
    snprintf(want, sizeof(want), "good.test:%u", http_port);
    ok(strcmp(http_host_seen, want) == 0, "Host header is the identifier "
       "(%s)", http_host_seen);
    check("http-01 chunked", &c, PKI_ACME_HTTP01, "dns", "good.test",
          "chunked", NULL, NULL);
    check("http-01 chunk size \"0x5\"", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "chunk0x", "connection", "malformed chunked body");
    check("http-01 chunk size \" 5\"", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "chunksp", "connection", "malformed chunked body");
    check("http-01 chunk extension after white space", &c,
          PKI_ACME_HTTP01, "dns", "good.test", "chunkbws", NULL, NULL);
    check("http-01 chunk size of 17 digits", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "chunk17", "connection", "malformed chunked body");
    check("http-01 close-delimited, trailing white space", &c,
          PKI_ACME_HTTP01, "dns", "good.test", "noclen", NULL, NULL);
    /* RFC 8555 8.3: only trailing white space is ignored */
    check("http-01 leading white space", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "lead", "incorrectResponse", "does not match");
    ka_token = "good";
    check("http-01 absolute redirect", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "redir", NULL, NULL);
    check("http-01 relative redirect", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "redirrel", NULL, NULL);
    check("http-01 redirect to a query (\"?v=1\")", &c, PKI_ACME_HTTP01,
          "dns", "good.test", "redirq", NULL, NULL);
    check("http-01 relative redirect from a path with a query", &c,
          PKI_ACME_HTTP01, "dns", "good.test", "redirq2", NULL, NULL);
    check("http-01 redirect to https", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "tohttps", NULL, NULL);
    check("http-01 redirect to a name with a trailing dot", &c,
          PKI_ACME_HTTP01, "dns", "good.test", "redirfqdn", NULL, NULL);
    ka_token = "good";
    check("http-01 LF-only headers", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "lfgood", NULL, NULL);
    check("http-01 LF-only headers, CRLF CRLF in the body", &c,
          PKI_ACME_HTTP01, "dns", "good.test", "lfbody", "incorrectResponse",
          "junk");
    ka_token = NULL;
    check("http-01 wrong body", &c, PKI_ACME_HTTP01, "dns", "good.test",
          "wrong", "incorrectResponse", "not-the-key-authz");
    check("http-01 oversized body", &c, PKI_ACME_HTTP01, "dns", "good.test",
          "big", "incorrectResponse", "over 8192");
    check("http-01 oversized Content-Length", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "bigclen", "incorrectResponse", "over 8192");
    check("http-01 oversized chunk", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "bigchunk", "incorrectResponse", "over 8192");
    c.max_redirects = 3;
    check("http-01 too many redirects", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "loop", "connection", "too many redirects");
    c.max_redirects = 0;
    check("http-01 redirect loop, default cap", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "loop", "connection", "over 10");
    check("http-01 redirect to port 22", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "badport", "connection", "port 22");
    check("http-01 redirect to ftp", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "ftp", "connection", "invalid redirect");
    check("http-01 redirect with userinfo", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "userinfo", "connection", "invalid redirect");
    check("http-01 redirect without Location", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "nolocation", "connection", "no Location");
    check("http-01 404", &c, PKI_ACME_HTTP01, "dns", "good.test", "404",
          "unauthorized", "HTTP 404");
    /* RFC 9110 15.2: interim answers before the final one are skipped */
    check("http-01 103 Early Hints, then 200", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "early", NULL, NULL);
    check("http-01 100 Continue and 103 in writes of their own, then 200",
          &c, PKI_ACME_HTTP01, "dns", "good.test", "continue", NULL, NULL);
    check("http-01 six interim answers", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "interim6", "connection", "more than 5 interim");
    check("http-01 interim heads over 8192 bytes together", &c,
          PKI_ACME_HTTP01, "dns", "good.test", "interimbig", "connection",
          "headers");
    check("http-01 101 is final", &c, PKI_ACME_HTTP01, "dns", "good.test",
          "switch", "unauthorized", "HTTP 101");
    check("http-01 huge headers", &c, PKI_ACME_HTTP01, "dns", "good.test",
          "hugehead", "connection", "headers");
    check("http-01 not HTTP", &c, PKI_ACME_HTTP01, "dns", "good.test",
          "garbage", "connection", "malformed");
    check("http-01 NUL in headers", &c, PKI_ACME_HTTP01, "dns", "good.test",
          "nul", "connection", "malformed");
    check("http-01 two Content-Length", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "twoclen", "connection", "Content-Length");
    check("http-01 bad token", &c, PKI_ACME_HTTP01, "dns", "good.test",
          "../etc", "malformed", NULL);
    check("http-01 bad identifier", &c, PKI_ACME_HTTP01, "dns",
          "bad name.test", "good", "rejectedIdentifier", NULL);
    check("http-01 IP identifier not an IP", &c, PKI_ACME_HTTP01, "ip",
          "good.test", "good", "rejectedIdentifier", NULL);

    c.timeout_ms = 300;
    t0 = now_ms();
    check("http-01 server never answers", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "slow", "connection", "timeout");
    ok(now_ms() - t0 < 1000 * VG_SLOW, "timeout honoured (%lld ms)", now_ms() - t0);
    t0 = now_ms();
    check("http-01 body stalls", &c, PKI_ACME_HTTP01, "dns", "good.test",
          "slowbody", "connection", "timeout");
    ok(now_ms() - t0 < 1000 * VG_SLOW, "timeout honoured (%lld ms)", now_ms() - t0);
    c = lab();

    c.http_port = closed_port;
    check("http-01 connection refused", &c, PKI_ACME_HTTP01, "dns",
          "good.test", "good", "connection", "cannot connect");
    check_hidden("http-01 connection refused, private target", &c,
                 PKI_ACME_HTTP01, "good.test", "good", "connection",
                 "cannot connect to good.test", "127.0.0.1", 1);
    /* the port tried is named (the address only when public) */
    snprintf(want, sizeof(want), "cannot connect to good.test (port %u): ",
             closed_port);
    check("http-01 connection refused: the port in the detail", &c,
          PKI_ACME_HTTP01, "dns", "good.test", "good", "connection", want);
    c.tls_port = closed_port;
    check("tls-alpn-01 connection refused: the port in the detail", &c,
          PKI_ACME_TLSALPN01, "dns", "good.test", "good", "connection",
          want);
    c = lab();

    /* address policy: refused before any connect() */
    c.allow_private = 0;
    before = __atomic_load_n(&http_conns, __ATOMIC_SEQ_CST);
    check_hidden("http-01 loopback refused", &c, PKI_ACME_HTTP01,
                 "good.test", "good", "rejectedIdentifier", "non-public",
                 "127.0.0.1", 1);
    ok(__atomic_load_n(&http_conns, __ATOMIC_SEQ_CST) == before,
       "no connection made to a refused address");
    c.resolve_to = NULL;
    c.resolver = resolver;
    check("http-01 private address refused", &c, PKI_ACME_HTTP01, "ip",
          "10.0.0.1", "good", "rejectedIdentifier", "private address");
    check_hidden("http-01 name resolving to 10/8 refused", &c,
                 PKI_ACME_HTTP01, "private.test", "good",
                 "rejectedIdentifier", "non-public address", "10.0.0.1", 1);
    check("http-01 link-local refused", &c, PKI_ACME_HTTP01, "ip",
          "169.254.1.1", "good", "rejectedIdentifier", NULL);
    check("http-01 IPv6 loopback refused", &c, PKI_ACME_HTTP01, "ip",
          "::1", "good", "rejectedIdentifier", NULL);
    check("http-01 IPv6 ULA refused", &c, PKI_ACME_HTTP01, "ip",
          "fd00::1", "good", "rejectedIdentifier", NULL);
    check("http-01 v4-mapped loopback refused", &c, PKI_ACME_HTTP01, "ip",
          "::ffff:127.0.0.1", "good", "rejectedIdentifier", NULL);
    {
        /* IPv6 ways into IPv4 space (or nowhere global) */
        static const char  *via[] = {
            "2002:7f00:1::1",                   /* 6to4 of 127.0.0.1    */
            "2002:808:808::1",                  /* 6to4 of a public v4  */
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",     /* Teredo      */
            "2001:1ff::1",                      /* 2001::/23            */
            "64:ff9b:1::a9fe:a9fe",             /* local-use NAT64      */
            "64:ff9b::a00:1",                   /* NAT64 of 10.0.0.1    */
            "::ffff:0:7f00:1",                  /* SIIT of 127.0.0.1    */
            "3fff::1",                          /* documentation        */
            "3fff:fff:ffff::1",                 /* ... its end (/20)    */
            "5f00::1",                          /* SRv6 SID             */
            "192.88.99.1",                      /* 6to4 relay anycast   */
        };
        char  name[96];
        size_t  i;

        for (i = 0; i < sizeof(via) / sizeof(via[0]); i++) {
            snprintf(name, sizeof(name), "http-01 %s refused", via[i]);
            check(name, &c, PKI_ACME_HTTP01, "ip", via[i], "good",
                  "rejectedIdentifier", NULL);
        }
    }
    c.allow_private = 1;
    check("http-01 unspecified refused even in a lab", &c, PKI_ACME_HTTP01,
          "ip", "0.0.0.0", "good", "rejectedIdentifier", "reserved");
    check("http-01 multicast refused even in a lab", &c, PKI_ACME_HTTP01,
          "ip", "ff02::1", "good", "rejectedIdentifier", "reserved");

    /* names through our resolver */
    check("http-01 name via DNS", &c, PKI_ACME_HTTP01, "dns", "host.test",
          "good", NULL, NULL);
    check("http-01 AAAA lookup fails, A answers", &c, PKI_ACME_HTTP01,
          "dns", "v6fail.test", "good", NULL, NULL);
    check("http-01 AAAA lookup never answered, A answers", &c,
          PKI_ACME_HTTP01, "dns", "v6silent.test", "good", NULL, NULL);
    check("http-01 AAAA lookup fails, no A", &c, PKI_ACME_HTTP01, "dns",
          "v6failnoa.test", "good", "dns", "SERVFAIL looking up AAAA");
    check("http-01 8 AAAA records that refuse, the A record answers", &c,
          PKI_ACME_HTTP01, "dns", "v6many.test", "good", NULL, NULL);
    i = socket(AF_INET6, SOCK_STREAM, 0);
    if (i >= 0) {
        close(i);
        check("http-01 A lookup fails, AAAA answers", &c, PKI_ACME_HTTP01,
              "dns", "v4fail.test", "good", NULL, NULL);
    } else {
        ok(1, "http-01 A lookup fails, AAAA answers # SKIP no IPv6 "
           "sockets");
    }
    check("http-01 A and AAAA lookups fail: both said", &c, PKI_ACME_HTTP01,
          "dns", "bothfail.test", "good", "dns", "SERVFAIL looking up A for "
          "bothfail.test; SERVFAIL looking up AAAA");
    check("http-01 304 is an answer, no redirect", &c, PKI_ACME_HTTP01,
          "dns", "host.test", "notmod", "unauthorized", "HTTP 304");
    blackhole(http_port);
    check("http-01 first address drops SYNs, the next one answers", &c,
          PKI_ACME_HTTP01, "dns", "dual.test", "good", NULL, NULL);
    check("http-01 IP identifier", &c, PKI_ACME_HTTP01, "ip", "127.0.0.1",
          "good", NULL, NULL);
    snprintf(want, sizeof(want), "127.0.0.1:%u", http_port);
    ok(strcmp(http_host_seen, want) == 0, "Host header for an IP (%s)",
       http_host_seen);
    check_hidden("http-01 redirect to a multicast name", &c,
                 PKI_ACME_HTTP01, "host.test", "tomcast", "connection",
                 "reserved address", "224.0.0.1", 1);
    check("http-01 redirect to 0.0.0.0", &c, PKI_ACME_HTTP01, "dns",
          "host.test", "tozero", "connection", "0.0.0.0");
    check_hidden("http-01 name with one reserved address", &c,
                 PKI_ACME_HTTP01, "mixed.test", "good", "rejectedIdentifier",
                 "reserved address", "0.0.0.0", 1);
    check_hidden("http-01 wrong body after a redirect: its length only", &c,
                 PKI_ACME_HTTP01, "host.test", "tosecret",
                 "incorrectResponse", "got 23 bytes", "s3cr3t", 0);
    check("http-01 NXDOMAIN", &c, PKI_ACME_HTTP01, "dns", "nx.test", "good",
          "dns", "NXDOMAIN");

    /* ---- tls-alpn-01 ---- */
    c = lab();
    tls_mode = CERT_GOOD;
    check("tls-alpn-01", &c, PKI_ACME_TLSALPN01, "dns", "tls.test", "tlstok",
          NULL, NULL);
    ok(strcmp(tls_sni_seen, "tls.test") == 0, "SNI is the identifier (%s)",
       tls_sni_seen);
    tls_mode = CERT_WRONGHASH;
    check("tls-alpn-01 wrong digest", &c, PKI_ACME_TLSALPN01, "dns",
          "tls.test", "tlstok", "incorrectResponse", "SHA-256");
    tls_mode = CERT_NOEXT;
    check("tls-alpn-01 no acmeIdentifier", &c, PKI_ACME_TLSALPN01, "dns",
          "tls.test", "tlstok", "incorrectResponse", "no acmeIdentifier");
    tls_mode = CERT_NONCRIT;
    check("tls-alpn-01 non-critical acmeIdentifier", &c, PKI_ACME_TLSALPN01,
          "dns", "tls.test", "tlstok", "incorrectResponse", "not critical");
    tls_mode = CERT_BADEXT;
    check("tls-alpn-01 acmeIdentifier not an OCTET STRING", &c,
          PKI_ACME_TLSALPN01, "dns", "tls.test", "tlstok",
          "incorrectResponse", "malformed");
    tls_mode = CERT_BEREXT;
    check("tls-alpn-01 acmeIdentifier in BER (long-form length), not DER",
          &c, PKI_ACME_TLSALPN01, "dns", "tls.test", "tlstok",
          "incorrectResponse", "malformed");
    tls_mode = CERT_TWOSAN;
    check("tls-alpn-01 two SANs", &c, PKI_ACME_TLSALPN01, "dns", "tls.test",
          "tlstok", "incorrectResponse", "exactly one");
    tls_mode = CERT_WRONGSAN;
    check("tls-alpn-01 other SAN", &c, PKI_ACME_TLSALPN01, "dns", "tls.test",
          "tlstok", "incorrectResponse", "not dNSName");
    tls_mode = CERT_EMPTYSAN;
    check("tls-alpn-01 empty SAN extension", &c, PKI_ACME_TLSALPN01, "dns",
          "tls.test", "tlstok", "incorrectResponse", "has an empty one");
    tls_mode = CERT_NOALPN;
    check("tls-alpn-01 ALPN not negotiated", &c, PKI_ACME_TLSALPN01, "dns",
          "tls.test", "tlstok", "tls", "acme-tls/1");
    tls_mode = CERT_IPSAN;
    c.resolve_to = NULL;
    check("tls-alpn-01 IP identifier", &c, PKI_ACME_TLSALPN01, "ip",
          "127.0.0.1", "tlstok", NULL, NULL);
    ok(strcmp(tls_sni_seen, "1.0.0.127.in-addr.arpa") == 0,
       "SNI is the reverse name for an IP (%s)", tls_sni_seen);
    tls_mode = CERT_GOOD;
    check("tls-alpn-01 IP identifier, DNS SAN", &c, PKI_ACME_TLSALPN01, "ip",
          "127.0.0.1", "tlstok", "incorrectResponse", "iPAddress");
    c = lab();
    c.tls_port = http_port;
    check("tls-alpn-01 not TLS", &c, PKI_ACME_TLSALPN01, "dns", "tls.test",
          "tlstok", "tls", "handshake");
    c = lab();
    c.timeout_ms = 300;
    tls_mode = CERT_HANG;
    t0 = now_ms();
    check("tls-alpn-01 handshake stalls", &c, PKI_ACME_TLSALPN01, "dns",
          "tls.test", "tlstok", "connection", "timeout");
    ok(now_ms() - t0 < 1000 * VG_SLOW, "timeout honoured (%lld ms)", now_ms() - t0);

    /* the key exchange: elliptic curves, as real servers use; no
     * finite-field DH, whose cost the server picks (DHE with a 10000-bit
     * odd modulus: most of a second of CPU per handshake) */
    c = lab();
    tls_mode = SRV_TLS12;
    check("tls-alpn-01 over TLS 1.2, ECDHE-RSA on P-256", &c,
          PKI_ACME_TLSALPN01, "dns", "tls.test", "tlstok", NULL, NULL);
    tls_mode = SRV_DHE;
    t0 = cpu_ms();
    check("tls-alpn-01 server with DHE only (10000-bit modulus) refused", &c,
          PKI_ACME_TLSALPN01, "dns", "tls.test", "tlstok", "tls",
          "handshake");
    ok(cpu_ms() - t0 < 200 * VG_SLOW, "no DH computed (%lld ms of CPU)",
       cpu_ms() - t0);
    tls_mode = SRV_FFDHE;
    check("tls-alpn-01 TLS 1.3 server with ffdhe2048 only refused", &c,
          PKI_ACME_TLSALPN01, "dns", "tls.test", "tlstok", "tls",
          "handshake");

    /* a server that never stops sending cannot hold a validation past its
     * timeout: OpenSSL would read on inside one SSL_connect() or
     * SSL_read() for as long as data comes */
    c = lab();
    c.timeout_ms = 1000;
    tls_mode = SRV_HELLOREQ;
    t0 = now_ms();
    check("tls-alpn-01 endless HelloRequests in the handshake", &c,
          PKI_ACME_TLSALPN01, "dns", "tls.test", "tlstok", "connection",
          "timeout");
    ok(now_ms() - t0 < 3000 * VG_SLOW, "timeout honoured (%lld ms)",
       now_ms() - t0);
    tls_mode = SRV_TICKETS;
    t0 = now_ms();
    check("http-01 via https, endless NewSessionTickets", &c,
          PKI_ACME_HTTP01, "dns", "good.test", "tohttps", "connection",
          "timeout");
    ok(now_ms() - t0 < 3000 * VG_SLOW, "timeout honoured (%lld ms)",
       now_ms() - t0);

    tls_mode = CERT_GOOD;
    c = lab();
    c.allow_private = 0;
    check("tls-alpn-01 loopback refused", &c, PKI_ACME_TLSALPN01, "dns",
          "tls.test", "tlstok", "rejectedIdentifier", NULL);

    /* ---- dns-01 ---- */
    memset(&c, 0, sizeof(c));
    c.resolver = resolver;
    c.timeout_ms = 3000;
    check("dns-01", &c, PKI_ACME_DNS01, "dns", "good.test", "dnstok", NULL,
          NULL);
    check("dns-01 among other TXT, split strings", &c, PKI_ACME_DNS01, "dns",
          "multi.test", "dnstok", NULL, NULL);
    check("dns-01 the 21st of 21 TXT records", &c, PKI_ACME_DNS01, "dns",
          "pile.test", "dnstok", NULL, NULL);
    check("dns-01 CNAME in the answer", &c, PKI_ACME_DNS01, "dns",
          "cname.test", "dnstok", NULL, NULL);
    check("dns-01 CNAME followed by a new query", &c, PKI_ACME_DNS01, "dns",
          "cname2.test", "dnstok", NULL, NULL);
    check("dns-01 truncated UDP answer, TCP retry", &c, PKI_ACME_DNS01,
          "dns", "trunc.test", "dnstok", NULL, NULL);
    check("dns-01 UDP answer over 4096 bytes, TCP retry", &c,
          PKI_ACME_DNS01, "dns", "huge.test", "dnstok", NULL, NULL);
    check("dns-01 a forged answer to another question is skipped", &c,
          PKI_ACME_DNS01, "dns", "spoof.test", "dnstok", NULL, NULL);
    check("dns-01 TXT mismatch", &c, PKI_ACME_DNS01, "dns", "wrong.test",
          "dnstok", "incorrectResponse", "nope");
    check_hidden("dns-01 TXT mismatch through a CNAME", &c, PKI_ACME_DNS01,
                 "cnwrong.test", "dnstok", "incorrectResponse",
                 "CNAME target", "internal-secret", 0);
    check("dns-01 TXT too long", &c, PKI_ACME_DNS01, "dns", "long.test",
          "dnstok", "incorrectResponse", "over 255");
    check("dns-01 NXDOMAIN", &c, PKI_ACME_DNS01, "dns", "nx.test", "dnstok",
          "dns", "NXDOMAIN");
    check("dns-01 no TXT", &c, PKI_ACME_DNS01, "dns", "empty.test", "dnstok",
          "unauthorized", "no TXT");
    check("dns-01 SERVFAIL", &c, PKI_ACME_DNS01, "dns", "servfail.test",
          "dnstok", "dns", "SERVFAIL");
    /* its question is garbage: not an answer to ours, waited past */
    c.timeout_ms = 500;
    check("dns-01 garbage answer", &c, PKI_ACME_DNS01, "dns", "garbage.test",
          "dnstok", "dns", "answers that asked another question were "
          "ignored");
    c.timeout_ms = 3000;
    check("dns-01 truncated answer", &c, PKI_ACME_DNS01, "dns", "short.test",
          "dnstok", "dns", "malformed answer");
    check("dns-01 compression pointer loop", &c, PKI_ACME_DNS01, "dns",
          "ptrloop.test", "dnstok", "dns", "bad DNS answer");
    check("dns-01 CNAME to a name of 254 characters", &c, PKI_ACME_DNS01,
          "dns", "longcname.test", "dnstok", "dns", "bad DNS answer");
    check("dns-01 owner name through 150 compression pointers", &c,
          PKI_ACME_DNS01, "dns", "ptrchain.test", "dnstok", "dns",
          "bad DNS answer");
    check("dns-01 rdlength past the end", &c, PKI_ACME_DNS01, "dns",
          "badlen.test", "dnstok", "dns", "truncated answer");
    check("dns-01 CNAME loop across queries", &c, PKI_ACME_DNS01, "dns",
          "cloop.test", "dnstok", "dns", "too many CNAMEs");
    check("dns-01 CNAME to itself", &c, PKI_ACME_DNS01, "dns",
          "selfloop.test", "dnstok", "dns", "CNAME loop");
    check("dns-01 a chain of 8 CNAMEs in one answer", &c, PKI_ACME_DNS01,
          "dns", "chain8.test", "dnstok", NULL, NULL);
    check("dns-01 a chain of 9 CNAMEs in one answer", &c, PKI_ACME_DNS01,
          "dns", "chain9.test", "dnstok", "dns", "more than 8");
    check("dns-01 for an IP identifier", &c, PKI_ACME_DNS01, "ip",
          "127.0.0.1", "dnstok", "rejectedIdentifier", NULL);
    c.timeout_ms = 400;
    t0 = now_ms();
    check("dns-01 resolver silent", &c, PKI_ACME_DNS01, "dns", "silent.test",
          "dnstok", "dns", "timeout");
    check_hidden("dns-01 resolver silent: its address", &c, PKI_ACME_DNS01,
                 "silent.test", "dnstok", "dns", "timeout", "127.0.0.1", 1);
    ok(now_ms() - t0 < 1200 * VG_SLOW, "timeout honoured (%lld ms)", now_ms() - t0);
    c.timeout_ms = 3000;
    snprintf(want, sizeof(want), "127.0.0.1:%u", closed_port);
    c.resolver = want;
    check("dns-01 resolver refuses", &c, PKI_ACME_DNS01, "dns", "good.test",
          "dnstok", "dns", NULL);
    c.resolver = "not-an-address";
    check("dns-01 bad resolver setting", &c, PKI_ACME_DNS01, "dns",
          "good.test", "dnstok", "serverInternal", NULL);
    c.resolver = resolver;

    /* resolv.conf with two servers: a resolver's own failure (SERVFAIL,
     * NOTIMP, REFUSED, a truncated answer with no TCP) sends the query
     * on to the next one; an NXDOMAIN is the answer */
    snprintf(rconf, sizeof(rconf), "/tmp/pki-test-resolv.%ld",
             (long) getpid());
    c.resolver = NULL;
    c.resolv_conf = rconf;
    fail_resolv_conf(rconf, 1);
    {
        static const struct {
            int          rcode;
            const char  *what;
        } fails[] = {
            { 5, "REFUSED" }, { 2, "SERVFAIL" }, { 4, "NOTIMP" },
            { FAIL_TC, "truncated, TCP refused" },
        };

        for (i = 0; i < (int) (sizeof(fails) / sizeof(fails[0])); i++) {
            fail_rcode = fails[i].rcode;
            before = __atomic_load_n(&fail_asked, __ATOMIC_SEQ_CST);
            snprintf(want, sizeof(want), "dns-01: resolver #1 %s, #2 asked",
                     fails[i].what);
            check(want, &c, PKI_ACME_DNS01, "dns", "good.test", "dnstok",
                  NULL, NULL);
            ok(__atomic_load_n(&fail_asked, __ATOMIC_SEQ_CST) > before,
               "resolver #1 was asked first");
        }
    }
    fail_rcode = 3;
    check("dns-01: resolver #1 NXDOMAIN is final", &c, PKI_ACME_DNS01,
          "dns", "good.test", "dnstok", "dns",
          "NXDOMAIN looking up TXT for _acme-challenge.good.test");
    fail_rcode = 5;
    {
        pki_acme_validate_conf_t  h;

        h = lab();
        h.resolve_to = NULL;
        h.resolv_conf = rconf;
        check("http-01: A/AAAA past a REFUSED resolver #1", &h,
              PKI_ACME_HTTP01, "dns", "host.test", "good", NULL, NULL);
    }
    fail_resolv_conf(rconf, 0);
    check("dns-01: resolver REFUSED, no other", &c, PKI_ACME_DNS01, "dns",
          "good.test", "dnstok", "dns", "REFUSED looking up TXT");
    fail_rcode = FAIL_TC;
    check("dns-01: truncated, TCP refused, no other", &c, PKI_ACME_DNS01,
          "dns", "good.test", "dnstok", "dns", "over TCP");
    c.resolv_conf = NULL;
    c.resolver = resolver;

    /* mutated answers: any outcome but a crash or a bogus success.  A
     * flipped bit in the ID or the question makes the answer one the
     * client must not take: it waits out the timeout for the real one,
     * so a short timeout (a local answer comes in well under 1 ms; any
     * outcome counts) keeps the 300 rounds from taking minutes */
    fuzz_bad = 0;
    fuzz_read = 0;
    ka("dnstok", k, sizeof(k));
    c.timeout_ms = 200 * VG_SLOW;
    fuzz_n = pki_test_vg(300, 60);      /* 4 s each waited out under
                                           Valgrind */
    for (i = 0; i < fuzz_n; i++) {
        st = pki_acme_validate(&c, PKI_ACME_DNS01, "dns", "fuzz.test", NULL,
                               k, &out);
        if ((st == PKI_OK) != (out.problem_type == NULL)) {
            fuzz_bad++;
        }
        if (strstr(out.res.detail, "timeout") == NULL
            && strstr(out.res.detail, "timed out") == NULL)
        {
            fuzz_read++;
        }
    }
    ok(fuzz_bad == 0, "%d mutated DNS answers handled", fuzz_n);
    /* and most were read, not waited out: the parser saw them */
    ok(fuzz_read >= fuzz_n / 2, "mutated DNS answers read (%d of %d)",
       fuzz_read, fuzz_n);
    c.timeout_ms = 3000;

    /* ---- CAA (RFC 8659, RFC 8657) ---- */
    {
        static const char *const  ids[] = { "other-name.test",
                                            "nginx-pki.test", NULL };
        static const struct {
            const char  *what, *id;
            int          wild;
            const char  *acct, *method, *want_type, *want_detail;
        } cases[] = {
            { "no CAA anywhere", "open.caa", 0, NULL, "http-01", NULL, NULL },
            { "issue names us", "ours.caa", 0, NULL, "http-01", NULL, NULL },
            { "case and blanks ignored", "case.caa", 0, NULL, "http-01",
              NULL, NULL },
            { "climbs past NOERROR/no data", "empty.ours.caa", 0, NULL,
              "http-01", NULL, NULL },
            { "climbs past NXDOMAIN", "a.b.ours.caa", 0, NULL, "http-01",
              NULL, NULL },
            { "issue names another CA", "other.caa", 0, NULL, "http-01",
              "caa", "do not allow this CA (other-name.test, nginx-pki.test)"
              " to issue for other.caa: none of them names it" },
            { "parent names another CA", "x.other.caa", 0, NULL, "http-01",
              "caa", "records at other.caa" },
            { "issue \";\": nobody", "none.caa", 0, NULL, "http-01", "caa",
              NULL },
            { "issuewild rules a wildcard", "wild.caa", 1, NULL, "dns-01",
              NULL, NULL },
            { "issuewild is not for a plain name", "wild.caa", 0, NULL,
              "http-01", "caa", "\"issue\"" },
            { "issuewild \";\" refuses a wildcard", "wild2.caa", 1, NULL,
              "dns-01", "caa", "*.wild2.caa" },
            { "issue still allows the plain name", "wild2.caa", 0, NULL,
              "http-01", NULL, NULL },
            { "17 records: the set cannot be judged", "many.caa", 1, NULL,
              "dns-01", "caa", "more records than this CA reads" },
            { "a CAA record past 64 answers", "manyans.caa", 0, NULL,
              "http-01", "caa", "more records than this CA reads" },
            { "accounturi equal", "acct.caa", 0,
              "https://ca.test/acme/acct/A1", "http-01", NULL, NULL },
            { "accounturi of another account", "acct.caa", 0,
              "https://ca.test/acme/acct/A2", "http-01", "caa",
              "only for another ACME account (accounturi)" },
            { "validationmethods lists it", "meth.caa", 0, NULL, "dns-01",
              NULL, NULL },
            { "validationmethods does not", "meth.caa", 0, NULL, "http-01",
              "caa", "name this CA (other-name.test, nginx-pki.test) for "
              "meth.caa, but not by http-01 (validationmethods)" },
            { "a parameter without a value", "param.caa", 0, NULL,
              "http-01", "caa", "name this CA (other-name.test, "
              "nginx-pki.test) for param.caa, but with a parameter that "
              "cannot be read" },
            { "two records, each limits: both said", "two.caa", 0,
              "https://ca.test/acme/acct/A2", "http-01", "caa",
              "but only for another ACME account (accounturi); not by "
              "http-01 (validationmethods)" },
            { "two records, one lets this account by dns-01", "two.caa", 0,
              "https://ca.test/acme/acct/A2", "dns-01", NULL, NULL },
            { "one value, two limits: both said", "both.caa", 0,
              "https://ca.test/acme/acct/A2", "http-01", "caa",
              "but only for another ACME account (accounturi); not by "
              "http-01 (validationmethods)" },
            { "one value, the account's own, another method", "both.caa",
              0, "https://ca.test/acme/acct/A1", "http-01", "caa",
              "for both.caa, but not by http-01 (validationmethods)" },
            { "no method (a re-check without a valid challenge)",
              "meth.caa", 0, NULL, "", "caa", "but not by a method the "
              "order's authorization was validated with" },
            { "unknown critical property", "crit.caa", 0, NULL, "http-01",
              "caa", "critical property \"tbs\"" },
            { "unknown property, not critical", "noncrit.caa", 0, NULL,
              "http-01", NULL, NULL },
            { "iodef only: no limit", "iodef.caa", 0, NULL, "http-01", NULL,
              NULL },
            { "CNAME to a set naming us", "cname.caa", 0, NULL, "http-01",
              NULL, NULL },
            { "SERVFAIL refuses", "servfail.caa", 0, NULL, "http-01", "dns",
              "SERVFAIL looking up CAA" },
            { "record over 255 bytes refuses", "long.caa", 0, NULL,
              "http-01", "caa", "cannot be read" },
            { "malformed record refuses", "bad.caa", 0, NULL, "http-01",
              "caa", "cannot be read" },
            { "iodef of 298 bytes beside an issue naming us",
              "iodeflong.caa", 0, NULL, "http-01", NULL, NULL },
            { "issuewild of 298 bytes: not for a plain name", "wildlong.caa",
              0, NULL, "http-01", NULL, NULL },
            { "issuewild of 298 bytes rules a wildcard", "wildlong.caa", 1,
              NULL, "dns-01", "caa", "\"issuewild\" record at wildlong.caa "
              "cannot be read (298 bytes" },
            { "critical unknown property of 298 bytes", "critlong.caa", 0,
              NULL, "http-01", "caa", "critical property \"tbs\"" },
            { "issue of 298 bytes, another issue names us", "issuelong.caa",
              0, NULL, "http-01", NULL, NULL },
            { "issue of 298 bytes, another issue names another CA",
              "issuelong2.caa", 0, NULL, "http-01", "caa", "\"issue\" "
              "record at issuelong2.caa cannot be read (298 bytes" },
            { "critical tag issue\\0x is unknown", "nulcrit.caa", 0, NULL,
              "http-01", "caa", "critical property \"issue?x\"" },
            { "tag issuewild\\0 is not issuewild", "nulwild.caa", 1, NULL,
              "dns-01", "caa", "the CAA \"issue\" records" },
        };

        memset(&c, 0, sizeof(c));
        c.resolver = resolver;
        c.timeout_ms = 3000;
        c.caa = 1;
        c.caa_ids = ids;

        for (i = 0; i < (int) (sizeof(cases) / sizeof(cases[0])); i++) {
            st = pki_acme_caa_check(&c, cases[i].id, cases[i].wild,
                                    cases[i].acct, cases[i].method, &out);
            if (cases[i].want_type == NULL) {
                if (!ok(st == PKI_OK && out.problem_type == NULL,
                        "CAA %s: allowed", cases[i].what))
                {
                    diag("got %s: %s", out.problem_type
                         ? out.problem_type : "-", out.res.detail);
                }
            } else {
                if (!ok(st != PKI_OK && out.problem_type != NULL
                        && strcmp(out.problem_type, cases[i].want_type) == 0
                        && (cases[i].want_detail == NULL
                            || strstr(out.res.detail, cases[i].want_detail)),
                        "CAA %s: %s", cases[i].what, cases[i].want_type))
                {
                    diag("got %s: %s", out.problem_type
                         ? out.problem_type : "-", out.res.detail);
                }
            }
        }

        c.timeout_ms = 400;
        t0 = now_ms();
        st = pki_acme_caa_check(&c, "_acme-challenge.silent.test", 0, NULL,
                                "http-01", &out);
        ok(st == PKI_UNAVAILABLE && out.problem_type
           && strcmp(out.problem_type, "dns") == 0
           && now_ms() - t0 < 1200 * VG_SLOW,
           "CAA: a silent resolver refuses within the timeout (%lld ms)",
           now_ms() - t0);
        st = pki_acme_caa_check(&c, "not a name", 0, NULL, "http-01", &out);
        ok(st == PKI_POLICY, "CAA: a bad name refused");
        c.timeout_ms = 3000;

        /* past a resolver #1 that fails on its own */
        c.resolver = NULL;
        c.resolv_conf = rconf;
        fail_resolv_conf(rconf, 1);
        fail_rcode = 5;
        st = pki_acme_caa_check(&c, "ours.caa", 0, NULL, "http-01", &out);
        if (!ok(st == PKI_OK, "CAA: resolver #1 REFUSED, #2 asked")) {
            diag("got %s: %s", out.problem_type ? out.problem_type : "-",
                 out.res.detail);
        }
        fail_rcode = 2;
        st = pki_acme_caa_check(&c, "other.caa", 0, NULL, "http-01", &out);
        ok(st == PKI_FORBIDDEN && out.problem_type
           && strcmp(out.problem_type, "caa") == 0,
           "CAA: resolver #1 SERVFAIL, #2's records judged");
        fail_resolv_conf(rconf, 0);
        st = pki_acme_caa_check(&c, "ours.caa", 0, NULL, "http-01", &out);
        ok(st == PKI_UNAVAILABLE
           && strstr(out.res.detail, "SERVFAIL looking up CAA") != NULL,
           "CAA: resolver SERVFAIL, no other: refused (%s)",
           out.res.detail);
        c.resolv_conf = NULL;
        c.resolver = resolver;
    }

    /* arguments */
    st = pki_acme_validate(&c, PKI_ACME_HTTP01, "dns", "good.test", NULL, k,
                           &out);
    ok(st == PKI_MALFORMED, "missing token refused");
    st = pki_acme_validate(&c, PKI_ACME_HTTP01, "email", "a@b", "good", k,
                           &out);
    ok(st == PKI_POLICY, "unknown identifier type refused");

    stop = 1;
    pthread_join(th, NULL);
    pthread_join(tt, NULL);
    pthread_join(td, NULL);
    pthread_join(tf, NULL);
    unlink(rconf);

    for (i = 0; i < CERT_NOALPN; i++) {
        X509_free(tls_certs[i]);
    }
    EVP_PKEY_free(tls_key);
    X509_free(tls_rsa_cert);
    EVP_PKEY_free(tls_rsa_key);
    EVP_PKEY_free(tls_dh);

    return done_testing();
}
