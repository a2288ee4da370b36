/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * ACME load client for bench/acme.sh (not a test).
 *
 * Registers one account (ES256), then W worker threads each run full
 * issuances in a loop until the time is up: newOrder -> authorization ->
 * http-01 challenge POST -> poll the authorization until valid -> finalize
 * with a fresh P-256 CSR -> poll the order until valid -> download the
 * certificate.  Each worker keeps one keep-alive TLS connection and its own
 * nonce chain.  A built-in HTTP server answers every http-01 request with
 * token.thumbprint (one account, so no table is needed).  Polls back off
 * from 2 ms to 50 ms and ignore Retry-After, the same for every server.
 *
 *   acme_bench -d https://127.0.0.1:8443/acme/directory -c root.pem \
 *       -p 5002 [-w 8] [-t 10] [-l label] [-v]
 *
 * Prints one line: "RESULT label issued=N failed=F seconds=S rate=R
 * requests=Q".
 */

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>


#define MAX_WORKERS  64
#define MAX_POLLS    400

typedef struct {
    int            status;
    char          *head;       /* status line + headers, NUL terminated */
    char          *body;
    size_t         body_len;
} resp_t;

typedef struct {
    int            fd;
    SSL           *ssl;
} conn_t;

typedef struct {
    int            id;
    conn_t         c;
    char           nonce[256];
    unsigned long  issued;
    unsigned long  failed;
    unsigned long  requests;
    unsigned long  seq;
    unsigned long  polls;
    double         phase[7];   /* seconds spent per step, see phase_names */
    pthread_t      th;
} worker_t;

static const char  *phase_names[7] = {
    "newOrder", "authz", "challenge", "authz-poll", "finalize",
    "order-poll", "download"
};


static char           host[256], port[16];
static char           dir_url[512], new_nonce[512], new_account[512],
                      new_order[512];
static char           kid[512], jwk[512], thumb[64];
static EVP_PKEY      *acct_key;
static SSL_CTX       *ssl_ctx;
static double         end_time;
static int            verbose;
static unsigned       http_port;
static volatile int   stopping;
static unsigned long  errors_shown;
static pthread_mutex_t  err_lock = PTHREAD_MUTEX_INITIALIZER;

/* a server that stops answering (pebble 2.4 can deadlock under concurrent
 * orders: see broken() in acme.sh) fails the request instead of hanging the
 * run */
static const struct timeval  io_timeout = { 10, 0 };


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static void
sleep_ms(double ms)
{
    struct timespec  ts;

    ts.tv_sec = (time_t) (ms / 1000);
    ts.tv_nsec = (long) ((ms - ts.tv_sec * 1000.0) * 1e6);
    nanosleep(&ts, NULL);
}


static void
err(worker_t *w, const char *fmt, ...)
{
    va_list  ap;

    pthread_mutex_lock(&err_lock);
    if (errors_shown++ < 10 || verbose) {
        fprintf(stderr, "acme_bench: worker %d: ", w ? w->id : -1);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\n");
    }
    pthread_mutex_unlock(&err_lock);
}


/* ---- base64url --------------------------------------------------------- */

static char *
b64url(const unsigned char *in, size_t len)
{
    int     n, i, j;
    char   *out;

    out = malloc(4 * ((len + 2) / 3) + 1);
    if (out == NULL) {
        return NULL;
    }
    n = EVP_EncodeBlock((unsigned char *) out, in, (int) len);
    for (i = 0, j = 0; i < n; i++) {
        if (out[i] == '=') {
            break;
        }
        out[j++] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    }
    out[j] = '\0';
    return out;
}


/* ---- HTTP over TLS, keep-alive ------------------------------------------- */

static void
conn_close(conn_t *c)
{
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd != -1) {
        close(c->fd);
        c->fd = -1;
    }
}


static int
conn_open(conn_t *c)
{
    int               one, rc;
    struct addrinfo   hints, *ai;

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &ai) != 0) {
        return 0;
    }
    c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    rc = c->fd != -1 && connect(c->fd, ai->ai_addr, ai->ai_addrlen) == 0;
    freeaddrinfo(ai);
    if (!rc) {
        conn_close(c);
        return 0;
    }
    one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &io_timeout,
               sizeof(io_timeout));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &io_timeout,
               sizeof(io_timeout));

    c->ssl = SSL_new(ssl_ctx);
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_tlsext_host_name(c->ssl, "localhost");
    if (SSL_connect(c->ssl) != 1) {
        ERR_print_errors_fp(stderr);
        conn_close(c);
        return 0;
    }
    return 1;
}


static void
resp_free(resp_t *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof(*r));
}


/* Case-insensitive header lookup; copies the trimmed value. */
static int
header(const resp_t *r, const char *name, char *val, size_t size)
{
    size_t       nlen, vlen;
    const char  *p, *eol, *v;

    nlen = strlen(name);
    for (p = strchr(r->head, '\n'); p != NULL && p[1]; p = eol) {
        p++;
        eol = strchr(p, '\n');
        if (eol == NULL) {
            eol = p + strlen(p);
        }
        if (strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            v = p + nlen + 1;
            while (*v == ' ') {
                v++;
            }
            vlen = (size_t) (eol - v);
            while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == ' ')) {
                vlen--;
            }
            if (vlen >= size) {
                vlen = size - 1;
            }
            memcpy(val, v, vlen);
            val[vlen] = '\0';
            return 1;
        }
        if (*eol == '\0') {
            break;
        }
    }
    return 0;
}


/* Reads into a growing buffer; returns bytes or <= 0. */
static int
conn_read(conn_t *c, char **buf, size_t *len, size_t *cap)
{
    int  n;

    if (*cap - *len < 16384) {
        *cap = *cap * 2 + 16384;
        *buf = realloc(*buf, *cap + 1);
    }
    n = SSL_read(c->ssl, *buf + *len, (int) (*cap - *len));
    if (n > 0) {
        *len += (size_t) n;
        (*buf)[*len] = '\0';
    }
    return n;
}


static int
http_once(conn_t *c, const char *method, const char *path,
    const char *body, resp_t *r)
{
    int      n, chunked;
    char    *buf, *eoh, *p, *end, val[64], req[2048];
    size_t   len, cap, hlen, clen, need, pos, out, sz;

    memset(r, 0, sizeof(*r));
    if (c->ssl == NULL && !conn_open(c)) {
        return 0;
    }

    n = snprintf(req, sizeof(req),
                 "%s %s HTTP/1.1\r\nHost: %s:%s\r\n"
                 "User-Agent: nginx-pki-acme-bench\r\n"
                 "%s%s%zu\r\n\r\n", method, path, host, port,
                 body ? "Content-Type: application/jose+json\r\n" : "",
                 "Content-Length: ", body ? strlen(body) : 0);
    if (SSL_write(c->ssl, req, n) != n
        || (body && *body
            && SSL_write(c->ssl, body, (int) strlen(body))
               != (int) strlen(body)))
    {
        conn_close(c);
        return 0;
    }

    buf = NULL;
    len = 0;
    cap = 0;
    eoh = NULL;
    while (eoh == NULL) {
        if (conn_read(c, &buf, &len, &cap) <= 0) {
            goto fail;
        }
        eoh = strstr(buf, "\r\n\r\n");
    }
    hlen = (size_t) (eoh - buf) + 4;
    r->head = strndup(buf, hlen);
    r->status = atoi(buf + 9);

    chunked = header(r, "Transfer-Encoding", val, sizeof(val))
              && strcasecmp(val, "chunked") == 0;
    clen = header(r, "Content-Length", val, sizeof(val))
           ? strtoul(val, NULL, 10) : 0;
    if (strcmp(method, "HEAD") == 0 || r->status == 204 || r->status == 304) {
        clen = 0;
        chunked = 0;
    }

    if (!chunked) {
        while (len - hlen < clen) {
            if (conn_read(c, &buf, &len, &cap) <= 0) {
                goto fail;
            }
        }
        r->body = malloc(clen + 1);
        memcpy(r->body, buf + hlen, clen);
        r->body[clen] = '\0';
        r->body_len = clen;
        free(buf);
        return 1;
    }

    /* chunked: decode in place as data arrives */
    r->body = malloc(1);
    out = 0;
    pos = hlen;
    for ( ;; ) {
        p = memmem(buf + pos, len - pos, "\r\n", 2);
        if (p == NULL) {
            if (conn_read(c, &buf, &len, &cap) <= 0) {
                goto fail;
            }
            continue;
        }
        sz = strtoul(buf + pos, &end, 16);
        need = (size_t) (p - buf) + 2 + sz + 2;
        while (len < need) {
            if (conn_read(c, &buf, &len, &cap) <= 0) {
                goto fail;
            }
        }
        if (sz == 0) {
            break;
        }
        r->body = realloc(r->body, out + sz + 1);
        memcpy(r->body + out, p + 2, sz);
        out += sz;
        pos = need;
    }
    r->body[out] = '\0';
    r->body_len = out;
    free(buf);
    return 1;

fail:

    free(buf);
    resp_free(r);
    conn_close(c);
    return 0;
}


/* One request, one reconnect if a kept-alive connection was closed. */
static int
http(worker_t *w, const char *method, const char *url, const char *body,
    resp_t *r)
{
    const char  *path;

    path = strstr(url, "://");
    path = path ? strchr(path + 3, '/') : url;
    if (path == NULL) {
        path = "/";
    }

    w->requests++;
    if (http_once(&w->c, method, path, body, r)) {
        goto ok;
    }
    if (http_once(&w->c, method, path, body, r)) {
        goto ok;
    }
    return 0;

ok:

    header(r, "Replay-Nonce", w->nonce, sizeof(w->nonce));
    return 1;
}


/* ---- JWS ES256 ------------------------------------------------------------ */

static char *
jws(worker_t *w, const char *url, const char *payload, int use_jwk)
{
    char           *prot, *p64, *pl64, *sig64, *out, *tbs;
    size_t          siglen, n;
    EVP_MD_CTX     *md;
    ECDSA_SIG      *es;
    const BIGNUM   *r, *s;
    unsigned char   der[80], raw[64];
    const unsigned char  *dp;

    n = strlen(url) + strlen(jwk) + strlen(kid) + strlen(w->nonce) + 128;
    prot = malloc(n);
    if (use_jwk) {
        snprintf(prot, n, "{\"alg\":\"ES256\",\"jwk\":%s,\"nonce\":\"%s\","
                 "\"url\":\"%s\"}", jwk, w->nonce, url);
    } else {
        snprintf(prot, n, "{\"alg\":\"ES256\",\"kid\":\"%s\",\"nonce\":\"%s\","
                 "\"url\":\"%s\"}", kid, w->nonce, url);
    }
    p64 = b64url((unsigned char *) prot, strlen(prot));
    pl64 = b64url((const unsigned char *) payload, strlen(payload));
    free(prot);

    n = strlen(p64) + strlen(pl64) + 2;
    tbs = malloc(n);
    snprintf(tbs, n, "%s.%s", p64, pl64);

    md = EVP_MD_CTX_new();
    siglen = sizeof(der);
    EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, acct_key);
    EVP_DigestSign(md, der, &siglen, (unsigned char *) tbs, strlen(tbs));
    EVP_MD_CTX_free(md);
    free(tbs);

    dp = der;
    es = d2i_ECDSA_SIG(NULL, &dp, (long) siglen);
    ECDSA_SIG_get0(es, &r, &s);
    BN_bn2binpad(r, raw, 32);
    BN_bn2binpad(s, raw + 32, 32);
    ECDSA_SIG_free(es);
    sig64 = b64url(raw, 64);

    n = strlen(p64) + strlen(pl64) + strlen(sig64) + 64;
    out = malloc(n);
    snprintf(out, n, "{\"protected\":\"%s\",\"payload\":\"%s\","
             "\"signature\":\"%s\"}", p64, pl64, sig64);
    free(p64);
    free(pl64);
    free(sig64);
    return out;
}


/* Signed POST (payload "" = POST-as-GET); retries once on badNonce. */
static int
post(worker_t *w, const char *url, const char *payload, int use_jwk,
    resp_t *r)
{
    int    i;
    char  *body;

    for (i = 0; i < 3; i++) {
        if (w->nonce[0] == '\0') {
            resp_t  h;
            if (!http(w, "HEAD", new_nonce, NULL, &h)) {
                return 0;
            }
            resp_free(&h);
        }
        body = jws(w, url, payload, use_jwk);
        w->nonce[0] = '\0';
        if (!http(w, "POST", url, body, r)) {
            free(body);
            return 0;
        }
        free(body);
        if (r->status == 400 && r->body
            && strstr(r->body, "badNonce") != NULL)
        {
            resp_free(r);
            continue;
        }
        return 1;
    }
    return 0;
}


static const char *
jstr(const cJSON *o, const char *name)
{
    const cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}


/* ---- one issuance --------------------------------------------------------- */

static char *
make_csr(const char *name)
{
    int             len;
    char           *out, san[300];
    X509_REQ       *req;
    EVP_PKEY       *k;
    X509_EXTENSION *ext;
    STACK_OF(X509_EXTENSION)  *exts;
    unsigned char  *der, *p;

    k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    req = X509_REQ_new();
    X509_REQ_set_version(req, 0);
    X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN",
                               MBSTRING_ASC, (const unsigned char *) name,
                               -1, -1, 0);
    X509_REQ_set_pubkey(req, k);
    snprintf(san, sizeof(san), "DNS:%s", name);
    exts = sk_X509_EXTENSION_new_null();
    ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    sk_X509_EXTENSION_push(exts, ext);
    X509_REQ_add_extensions(req, exts);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_sign(req, k, EVP_sha256());

    len = i2d_X509_REQ(req, NULL);
    der = malloc((size_t) len);
    p = der;
    i2d_X509_REQ(req, &p);
    out = b64url(der, (size_t) len);
    free(der);
    X509_REQ_free(req);
    EVP_PKEY_free(k);
    return out;
}


/* Polls url (POST-as-GET) until its "status" is one of want / invalid. */
static cJSON *
poll_status(worker_t *w, const char *url, const char *want)
{
    int      i;
    double   delay;
    cJSON   *j;
    resp_t   r;
    const char  *st;

    delay = 2;
    for (i = 0; i < MAX_POLLS && !stopping; i++) {
        w->polls++;
        if (!post(w, url, "", 0, &r) || r.status != 200) {
            err(w, "poll %s: HTTP %d %s", url, r.status,
                r.body ? r.body : "");
            resp_free(&r);
            return NULL;
        }
        j = cJSON_Parse(r.body);
        resp_free(&r);
        st = jstr(j, "status");
        if (st != NULL && strcmp(st, want) == 0) {
            return j;
        }
        if (st == NULL || strcmp(st, "invalid") == 0) {
            char  *txt = cJSON_PrintUnformatted(j);
            err(w, "%s is %s: %s", url, st ? st : "?", txt);
            free(txt);
            cJSON_Delete(j);
            return NULL;
        }
        cJSON_Delete(j);
        sleep_ms(delay);
        delay = delay * 1.5 > 50 ? 50 : delay * 1.5;
    }
    err(w, "%s: still not %s", url, want);
    return NULL;
}


static int
issue_one(worker_t *w)
{
    int          ok;
    char         name[128], payload[512], order_url[512], chall_url[512],
                 fin_url[512], authz_url[512];
    char        *csr, *fp;
    cJSON       *o, *a, *azs, *ch, *fin;
    resp_t       r;
    const char  *s;

    double       t;

    ok = 0;
    o = a = fin = NULL;
    t = now();
#define PHASE(i)  do { double t2_ = now(); w->phase[i] += t2_ - t; t = t2_; } \
                  while (0)
    snprintf(name, sizeof(name), "w%d-%lu-%d.bench.test", w->id, w->seq++,
             (int) getpid());

    snprintf(payload, sizeof(payload),
             "{\"identifiers\":[{\"type\":\"dns\",\"value\":\"%s\"}]}", name);
    if (!post(w, new_order, payload, 0, &r) || r.status != 201
        || !header(&r, "Location", order_url, sizeof(order_url)))
    {
        err(w, "newOrder: HTTP %d %s", r.status, r.body ? r.body : "");
        resp_free(&r);
        return 0;
    }
    o = cJSON_Parse(r.body);
    resp_free(&r);
    PHASE(0);
    /* azs points into o: never freed on its own (a is freed at "done") */
    azs = cJSON_GetObjectItemCaseSensitive(o, "authorizations");
    s = jstr(o, "finalize");
    if (!cJSON_IsArray(azs) || !cJSON_IsString(cJSON_GetArrayItem(azs, 0))
        || s == NULL)
    {
        err(w, "newOrder: no authorization or finalize URL");
        goto done;
    }
    snprintf(authz_url, sizeof(authz_url), "%s",
             cJSON_GetArrayItem(azs, 0)->valuestring);
    snprintf(fin_url, sizeof(fin_url), "%s", s);

    if (!post(w, authz_url, "", 0, &r) || r.status != 200) {
        err(w, "authz: HTTP %d %s", r.status, r.body ? r.body : "");
        resp_free(&r);
        goto done;
    }
    a = cJSON_Parse(r.body);
    resp_free(&r);
    chall_url[0] = '\0';
    cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(a, "challenges")) {
        s = jstr(ch, "type");
        if (s != NULL && strcmp(s, "http-01") == 0 && jstr(ch, "url")) {
            snprintf(chall_url, sizeof(chall_url), "%s", jstr(ch, "url"));
        }
    }
    cJSON_Delete(a);
    a = NULL;
    PHASE(1);
    if (chall_url[0] == '\0') {
        err(w, "authz: no http-01 challenge");
        goto done;
    }

    if (!post(w, chall_url, "{}", 0, &r) || r.status != 200) {
        err(w, "challenge: HTTP %d %s", r.status, r.body ? r.body : "");
        resp_free(&r);
        goto done;
    }
    resp_free(&r);
    PHASE(2);

    a = poll_status(w, authz_url, "valid");
    if (a == NULL) {
        goto done;
    }
    PHASE(3);

    csr = make_csr(name);
    snprintf(payload, sizeof(payload), "{\"csr\":\"%s\"}", csr);
    free(csr);
    if (!post(w, fin_url, payload, 0, &r) || r.status != 200) {
        err(w, "finalize: HTTP %d %s", r.status, r.body ? r.body : "");
        resp_free(&r);
        goto done;
    }
    fin = cJSON_Parse(r.body);
    resp_free(&r);
    PHASE(4);
    s = jstr(fin, "status");
    if (s == NULL || strcmp(s, "valid") != 0 || !jstr(fin, "certificate")) {
        cJSON_Delete(fin);
        fin = poll_status(w, order_url, "valid");
        if (fin == NULL) {
            goto done;
        }
    }

    PHASE(5);
    s = jstr(fin, "certificate");
    if (s == NULL) {
        fp = cJSON_PrintUnformatted(fin);
        err(w, "valid order without certificate: %s", fp);
        free(fp);
        goto done;
    }
    if (!post(w, s, "", 0, &r) || r.status != 200 || r.body == NULL
        || strstr(r.body, "-----BEGIN CERTIFICATE-----") == NULL)
    {
        err(w, "certificate: HTTP %d", r.status);
        resp_free(&r);
        goto done;
    }
    resp_free(&r);
    PHASE(6);
    ok = 1;
#undef PHASE

done:

    cJSON_Delete(o);
    cJSON_Delete(a);
    cJSON_Delete(fin);
    return ok;
}


static void *
worker_main(void *arg)
{
    worker_t  *w;

    w = arg;
    while (now() < end_time) {
        if (issue_one(w)) {
            w->issued++;
        } else {
            w->failed++;
            if (w->failed > 20 && w->issued == 0) {
                break;
            }
            sleep_ms(10);
        }
    }
    conn_close(&w->c);
    return NULL;
}


/* ---- http-01 responder ------------------------------------------------- */

#define RESP_CONNS  512

typedef struct {
    int     fd;
    size_t  len;
    char    buf[2048];
} rconn_t;


static void *
responder_main(void *arg)
{
    int             lfd, fd, i, n, nfds;
    char            out[512], *eoh, *path, *sp, *tok;
    size_t          used;
    rconn_t        *rc;
    struct pollfd  *pf;

    lfd = *(int *) arg;
    rc = calloc(RESP_CONNS, sizeof(rconn_t));
    pf = calloc(RESP_CONNS + 1, sizeof(struct pollfd));
    for (i = 0; i < RESP_CONNS; i++) {
        rc[i].fd = -1;
    }

    while (!stopping) {
        pf[0].fd = lfd;
        pf[0].events = POLLIN;
        nfds = 1;
        for (i = 0; i < RESP_CONNS; i++) {
            pf[i + 1].fd = rc[i].fd;
            pf[i + 1].events = POLLIN;
            pf[i + 1].revents = 0;
        }
        nfds = RESP_CONNS + 1;
        if (poll(pf, (nfds_t) nfds, 100) <= 0) {
            continue;
        }

        if (pf[0].revents & POLLIN) {
            fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0) {
                for (i = 0; i < RESP_CONNS && rc[i].fd != -1; i++) {
                    /* find a slot */
                }
                if (i == RESP_CONNS) {
                    close(fd);
                } else {
                    rc[i].fd = fd;
                    rc[i].len = 0;
                }
            }
        }

        for (i = 0; i < RESP_CONNS; i++) {
            if (rc[i].fd == -1 || !(pf[i + 1].revents & (POLLIN | POLLHUP
                                                         | POLLERR)))
            {
                continue;
            }
            n = (int) recv(rc[i].fd, rc[i].buf + rc[i].len,
                           sizeof(rc[i].buf) - 1 - rc[i].len, 0);
            if (n <= 0) {
                close(rc[i].fd);
                rc[i].fd = -1;
                continue;
            }
            rc[i].len += (size_t) n;
            rc[i].buf[rc[i].len] = '\0';

            while ((eoh = strstr(rc[i].buf, "\r\n\r\n")) != NULL) {
                path = strchr(rc[i].buf, ' ');
                tok = NULL;
                if (path != NULL) {
                    path++;
                    sp = strchr(path, ' ');
                    if (sp != NULL && sp < eoh) {
                        *sp = '\0';
                        tok = strrchr(path, '/');
                    }
                }
                if (tok != NULL && strncmp(path, "/.well-known/acme-"
                                           "challenge/", 28) == 0)
                {
                    tok++;
                    n = snprintf(out, sizeof(out), "HTTP/1.1 200 OK\r\n"
                                 "Content-Type: text/plain\r\n"
                                 "Content-Length: %zu\r\n\r\n%s.%s",
                                 strlen(tok) + 1 + strlen(thumb), tok,
                                 thumb);
                } else {
                    n = snprintf(out, sizeof(out), "HTTP/1.1 404 Not "
                                 "Found\r\nContent-Length: 0\r\n\r\n");
                }
                (void) send(rc[i].fd, out, (size_t) n, MSG_NOSIGNAL);
                used = (size_t) (eoh + 4 - rc[i].buf);
                memmove(rc[i].buf, eoh + 4, rc[i].len - used + 1);
                rc[i].len -= used;
            }
            if (rc[i].len >= sizeof(rc[i].buf) - 1) {
                close(rc[i].fd);
                rc[i].fd = -1;
            }
        }
    }

    for (i = 0; i < RESP_CONNS; i++) {
        if (rc[i].fd != -1) {
            close(rc[i].fd);
        }
    }
    free(rc);
    free(pf);
    close(lfd);
    return NULL;
}


/* ---- setup ------------------------------------------------------------------ */

static int
make_account_key(void)
{
    char            *x, *y, buf[256];
    unsigned char    md[32];
    unsigned char    xb[32], yb[32];
    BIGNUM          *bx, *by;
    char            *t;

    acct_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    bx = by = NULL;
    if (acct_key == NULL
        || !EVP_PKEY_get_bn_param(acct_key, "qx", &bx)
        || !EVP_PKEY_get_bn_param(acct_key, "qy", &by))
    {
        return 0;
    }
    BN_bn2binpad(bx, xb, 32);
    BN_bn2binpad(by, yb, 32);
    BN_free(bx);
    BN_free(by);
    x = b64url(xb, 32);
    y = b64url(yb, 32);
    snprintf(jwk, sizeof(jwk),
             "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
             x, y);
    free(x);
    free(y);

    EVP_Digest(jwk, strlen(jwk), md, NULL, EVP_sha256(), NULL);
    t = b64url(md, 32);
    snprintf(thumb, sizeof(thumb), "%s", t);
    free(t);
    (void) buf;
    return 1;
}


static int
parse_url(const char *url)
{
    const char  *h, *e, *c;

    if (strncmp(url, "https://", 8) != 0) {
        return 0;
    }
    h = url + 8;
    e = strchr(h, '/');
    if (e == NULL) {
        return 0;
    }
    c = memchr(h, ':', (size_t) (e - h));
    if (c == NULL) {
        snprintf(host, sizeof(host), "%.*s", (int) (e - h), h);
        snprintf(port, sizeof(port), "443");
    } else {
        snprintf(host, sizeof(host), "%.*s", (int) (c - h), h);
        snprintf(port, sizeof(port), "%.*s", (int) (e - c - 1), c + 1);
    }
    return 1;
}


static int
listen_http(unsigned p)
{
    int                 fd, one;
    struct sockaddr_in  sin;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t) p);
    if (bind(fd, (struct sockaddr *) &sin, sizeof(sin)) != 0
        || listen(fd, 512) != 0)
    {
        close(fd);
        return -1;
    }
    return fd;
}


static void
usage(void)
{
    fprintf(stderr, "usage: acme_bench -d DIRECTORY_URL -c CA_FILE "
            "-p HTTP01_PORT [-w WORKERS] [-t SECONDS] [-l LABEL] [-v]\n");
    exit(2);
}


int
main(int argc, char **argv)
{
    int          opt, nw, i, lfd;
    double       secs, t0, t1;
    char         label[64], *cafile;
    cJSON       *d;
    resp_t       r;
    pthread_t    rth;
    worker_t    *ws, boot;
    int            k;
    double         phase[7];
    unsigned long  issued, failed, reqs, polls;
    struct rusage  ru;

    nw = 8;
    secs = 10;
    cafile = NULL;
    snprintf(label, sizeof(label), "server");

    while ((opt = getopt(argc, argv, "d:c:p:w:t:l:v")) != -1) {
        switch (opt) {
        case 'd': snprintf(dir_url, sizeof(dir_url), "%s", optarg); break;
        case 'c': cafile = optarg; break;
        case 'p': http_port = (unsigned) atoi(optarg); break;
        case 'w': nw = atoi(optarg); break;
        case 't': secs = atof(optarg); break;
        case 'l': snprintf(label, sizeof(label), "%s", optarg); break;
        case 'v': verbose = 1; break;
        default: usage();
        }
    }
    if (dir_url[0] == '\0' || cafile == NULL || http_port == 0 || nw < 1
        || nw > MAX_WORKERS || !parse_url(dir_url))
    {
        usage();
    }

    signal(SIGPIPE, SIG_IGN);

    ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (SSL_CTX_load_verify_locations(ssl_ctx, cafile, NULL) != 1) {
        fprintf(stderr, "acme_bench: cannot load %s\n", cafile);
        return 1;
    }
    SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER, NULL);

    if (!make_account_key()) {
        fprintf(stderr, "acme_bench: key generation failed\n");
        return 1;
    }

    lfd = listen_http(http_port);
    if (lfd < 0) {
        fprintf(stderr, "acme_bench: cannot listen on 127.0.0.1:%u: %s\n",
                http_port, strerror(errno));
        return 1;
    }
    pthread_create(&rth, NULL, responder_main, &lfd);

    /* directory + account */
    memset(&boot, 0, sizeof(boot));
    boot.c.fd = -1;
    boot.id = -1;
    if (!http(&boot, "GET", dir_url, NULL, &r) || r.status != 200) {
        fprintf(stderr, "acme_bench: directory %s: HTTP %d\n", dir_url,
                r.status);
        return 1;
    }
    d = cJSON_Parse(r.body);
    resp_free(&r);
    if (!jstr(d, "newNonce") || !jstr(d, "newAccount") || !jstr(d, "newOrder"))
    {
        fprintf(stderr, "acme_bench: incomplete directory\n");
        return 1;
    }
    snprintf(new_nonce, sizeof(new_nonce), "%s", jstr(d, "newNonce"));
    snprintf(new_account, sizeof(new_account), "%s", jstr(d, "newAccount"));
    snprintf(new_order, sizeof(new_order), "%s", jstr(d, "newOrder"));
    cJSON_Delete(d);

    if (!post(&boot, new_account, "{\"termsOfServiceAgreed\":true}", 1, &r)
        || (r.status != 201 && r.status != 200)
        || !header(&r, "Location", kid, sizeof(kid)))
    {
        fprintf(stderr, "acme_bench: newAccount: HTTP %d %s\n", r.status,
                r.body ? r.body : "");
        return 1;
    }
    resp_free(&r);
    conn_close(&boot.c);

    ws = calloc((size_t) nw, sizeof(worker_t));
    t0 = now();
    end_time = t0 + secs;
    for (i = 0; i < nw; i++) {
        ws[i].id = i;
        ws[i].c.fd = -1;
        pthread_create(&ws[i].th, NULL, worker_main, &ws[i]);
    }

    issued = failed = reqs = polls = 0;
    memset(phase, 0, sizeof(phase));
    for (i = 0; i < nw; i++) {
        pthread_join(ws[i].th, NULL);
        issued += ws[i].issued;
        failed += ws[i].failed;
        reqs += ws[i].requests;
        polls += ws[i].polls;
        for (k = 0; k < 7; k++) {
            phase[k] += ws[i].phase[k];
        }
    }
    t1 = now();

    stopping = 1;
    pthread_join(rth, NULL);

    if (issued > 0) {
        fprintf(stderr, "%s: ms per issuance:", label);
        for (k = 0; k < 7; k++) {
            fprintf(stderr, " %s %.1f", phase_names[k],
                    1000 * phase[k] / issued);
        }
        getrusage(RUSAGE_SELF, &ru);
        fprintf(stderr, "; polls/issuance %.1f; client CPU ms/issuance %.2f\n",
                (double) polls / issued,
                1000 * (ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
                        + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6)
                / issued);
    }
    printf("RESULT %s issued=%lu failed=%lu seconds=%.2f rate=%.1f "
           "requests=%lu workers=%d\n", label, issued, failed, t1 - t0,
           issued / (t1 - t0), reqs, nw);

    free(ws);
    EVP_PKEY_free(acct_key);
    SSL_CTX_free(ssl_ctx);
    return issued > 0 ? 0 : 1;
}
