/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A hostile Redis: every store call of the core, and the engines above it,
 * read their replies from the fuzz input.
 *
 * A fleet shares one Redis; a broken, stale or compromised one must not
 * crash a host nor make it hand out a certificate it did not record.  The
 * target includes core/redis.c (it is linked without redis.o) to install a
 * connection of its own in the store's per-thread slot: one end of a
 * socketpair whose other end already holds the input as the server's
 * reply stream, then EOF.  Single threaded and deterministic; what the
 * client writes (its commands) lands in the socket buffer unread.
 *
 * Input: byte 0 chooses the call, the rest is the reply stream (RESP).
 */

#include "../core/redis.c"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>

#include "fuzz.h"


#define PKI_FUZZ_STREAM_MAX  (64 * 1024)


static const pki_fuzz_fixture_t  *fx;
static pki_redis_t               *hostile;
static pki_ca_t                  *cas[2];
static char                      *csr_b64;
static unsigned char             *ocsp_der;
static size_t                     ocsp_len;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    int                n;
    X509_REQ          *csr;
    X509_NAME         *name;
    OCSP_CERTID       *id;
    pki_result_t       res;
    OCSP_REQUEST      *oreq;
    unsigned char     *der;
    pki_redis_conf_t   rconf;

    (void) argc;
    (void) argv;

    fx = pki_fuzz_fixture();
    cas[0] = fx->ca;
    cas[1] = fx->root;

    memset(&rconf, 0, sizeof(rconf));
    rconf.unix_path = "/nonexistent/nginx-pki-fuzz/hostile.sock";
    rconf.ns = "fz:";
    rconf.timeout_ms = 100;
    pki_result_init(&res);
    hostile = pki_redis_new(&rconf, &res);
    if (hostile == NULL) {
        abort();
    }

    /* a valid CSR for the device template (EST enroll) */
    csr = X509_REQ_new();
    name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *) "fuzz-dev", -1, -1, 0);
    X509_REQ_set_subject_name(csr, name);
    X509_NAME_free(name);
    X509_REQ_set_pubkey(csr, fx->leaf_key);
    X509_REQ_sign(csr, fx->leaf_key, EVP_sha256());
    der = NULL;
    n = i2d_X509_REQ(csr, &der);
    X509_REQ_free(csr);
    if (n <= 0) {
        abort();
    }
    csr_b64 = pki_base64_encode(der, (size_t) n, 64, NULL);
    OPENSSL_free(der);

    /* an OCSP request for the fixture's leaf */
    oreq = OCSP_REQUEST_new();
    id = OCSP_cert_to_id(EVP_sha1(), fx->leaf, fx->ca_cert);
    if (oreq == NULL || id == NULL || !OCSP_request_add0_id(oreq, id)) {
        abort();
    }
    ocsp_der = NULL;
    n = i2d_OCSP_REQUEST(oreq, &ocsp_der);
    OCSP_REQUEST_free(oreq);
    if (n <= 0 || csr_b64 == NULL) {
        abort();
    }
    ocsp_len = (size_t) n;

    return 0;
}


/* Installs a connection whose server side holds data; returns the server
 * fd (kept open so that the client's writes succeed), or -1. */
static int
pki_fuzz_install(const uint8_t *data, size_t size)
{
    int            sv[2], fl;
    size_t         off;
    ssize_t        w;
    redisContext  *c;

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
        return -1;
    }

    fl = fcntl(sv[1], F_GETFL);
    fcntl(sv[1], F_SETFL, fl | O_NONBLOCK);

    for (off = 0; off < size; off += (size_t) w) {
        w = write(sv[1], data + off, size - off);
        if (w <= 0) {
            break;                  /* socket buffer full: the rest is cut */
        }
    }
    shutdown(sv[1], SHUT_WR);

    c = redisConnectFd(sv[0]);
    if (c == NULL || c->err) {
        if (c) {
            redisFree(c);
        } else {
            close(sv[0]);
        }
        close(sv[1]);
        return -1;
    }

    pki_int_redis_limit_reader(c);

    pki_redis_disconnect(hostile);
    if (pthread_setspecific(hostile->tkey, c) != 0) {
        redisFree(c);
        close(sv[1]);
        return -1;
    }

    return sv[1];
}


static int
pki_fuzz_revoked_cb(void *arg, const char *serial, int reason,
    time_t revoked_at, time_t invalidity_date)
{
    size_t  *n = arg;

    (void) reason;
    (void) revoked_at;
    (void) invalidity_date;

    if (serial == NULL) {
        abort();
    }

    return ++*n < 100000;
}


static void
pki_fuzz_record(pki_record_t *rec)
{
    memset(rec, 0, sizeof(*rec));
    snprintf(rec->serial, sizeof(rec->serial), "0A1B2C");
    snprintf(rec->ca, sizeof(rec->ca), "issuing");
    snprintf(rec->template_name, sizeof(rec->template_name), "device");
    snprintf(rec->protocol, sizeof(rec->protocol), "est");
    rec->subject = "CN=fuzz";
    rec->sans = "";
    rec->requester = "fuzz";
    rec->client = "192.0.2.1";
    rec->status = PKI_CERT_PENDING;
    rec->not_before = 1700000000;
    rec->not_after = 1800000000;
    rec->created = 1700000000;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                 fd, won, stored;
    char                next[PKI_RECORD_CURSOR_MAX];
    size_t              i, n;
    uint8_t             op;
    long long           v;
    pki_result_t        res;
    pki_record_t        rec, *list;
    unsigned char      *der;
    pki_crl_info_t      info;
    pki_cert_status_t   st;

    if (fx == NULL) {
        LLVMFuzzerInitialize(NULL, NULL);
    }

    if (size < 1 || size > PKI_FUZZ_STREAM_MAX) {
        return 0;
    }

    op = data[0];
    fd = pki_fuzz_install(data + 1, size - 1);
    if (fd < 0) {
        return 0;
    }

    pki_result_init(&res);

    switch (op % 16) {
    case 0:
        if (pki_record_get(hostile, "issuing", "0a1b2c", &rec, &res)
            == PKI_OK)
        {
            if (rec.subject == NULL || rec.sans == NULL
                || rec.requester == NULL || rec.client == NULL
                || (rec.status != PKI_CERT_PENDING && rec.der == NULL))
            {
                abort();
            }
            pki_record_clear(&rec);
        }
        break;

    case 1:
        n = 0;
        (void) pki_record_revoked_each(hostile, "issuing",
                                       pki_fuzz_revoked_cb, &n, &res);
        break;

    case 2:
        (void) pki_record_revgen(hostile, "issuing", &v, &res);
        break;

    case 3:
        (void) pki_record_next_crlnumber(hostile, "issuing", &v, &res);
        break;

    case 4:
        list = NULL;
        n = 0;
        if (pki_record_list(hostile, "issuing",
                            (op & 0x10) ? "1800000000_1F" : "0",
                            (op & 0x20) ? 1 : 100, &list, &n, next, &res)
            == PKI_OK)
        {
            for (i = 0; i < n; i++) {
                pki_record_clear(&list[i]);
            }
        }
        free(list);
        break;

    case 5:
        memset(&info, 0, sizeof(info));
        if (pki_crl_store_read(hostile, "issuing", (op & 0x10) ? 7 : 0, &v,
                               &info, &res)
            == PKI_OK)
        {
            if ((info.der == NULL) != (info.len == 0)) {
                abort();
            }
        }
        free(info.der);
        break;

    case 6:
        memset(&info, 0, sizeof(info));
        info.der = (unsigned char *) "\x30\x00";
        info.len = 2;
        info.revgen = 3;
        info.number = 9;
        info.this_update = 1700000000;
        info.next_update = 1700003600;
        (void) pki_crl_store_put(hostile, "issuing", &info, "fuzz-token",
                                 &stored, &res);
        break;

    case 7:
        (void) pki_crl_lock(hostile, "issuing", "fuzz-token", 10000, &won,
                            &res);
        (void) pki_crl_lock_renew(hostile, "issuing", "fuzz-token", 10000,
                                  &won, &res);
        (void) pki_crl_unlock(hostile, "issuing", "fuzz-token", &res);
        break;

    case 8:
        memset(&rec, 0, sizeof(rec));
        (void) pki_record_revoke(hostile, "issuing", "0A1B2C",
                                 (op & 0x10) ? 6 : 1, 1700000000,
                                 (op & 0x20) ? 1699990000 : 0,
                                 (op & 0x40) ? &rec : NULL, &res);
        pki_record_clear(&rec);
        break;

    case 9:
        pki_fuzz_record(&rec);
        (void) pki_record_reserve(hostile, &rec, &res);
        rec.status = PKI_CERT_GOOD;
        rec.der = (unsigned char *) "\x30\x00";
        rec.der_len = 2;
        pki_result_init(&res);
        (void) pki_record_commit(hostile, &rec, &res);
        pki_result_init(&res);
        (void) pki_record_abandon(hostile, "issuing", "0A1B2C", &res);
        break;

    case 10:
        (void) pki_redis_ping(hostile, &res);
        break;

    case 11:
        (void) pki_cert_status(hostile, fx->ca, fx->leaf, &st, &res);
        break;

    case 12:
        der = NULL;
        n = 0;
        if (pki_crl_build(fx->ca, hostile, 3600, &der, &n, &res) == PKI_OK) {
            if (der == NULL || n == 0) {
                abort();
            }
        }
        free(der);
        break;

    case 13: {
        pki_ocsp_conf_t  conf;
        pki_ocsp_req_t   req;
        pki_ocsp_resp_t  resp;

        memset(&conf, 0, sizeof(conf));
        conf.cas = cas;
        conf.ncas = 2;
        conf.redis = hostile;
        conf.next_update = 3600;
        conf.unknown_revoked = (op & 0x10) != 0;
        memset(&req, 0, sizeof(req));
        req.method = "POST";
        req.content_type = "application/ocsp-request";
        req.body = ocsp_der;
        req.body_len = ocsp_len;
        pki_ocsp_handle(&conf, &req, &resp);
        if (resp.ocsp_status == OCSP_RESPONSE_STATUS_SUCCESSFUL
            && resp.body == NULL)
        {
            abort();
        }
        res = resp.res;
        pki_ocsp_resp_free(&resp);
        break;
    }

    case 14: {
        pki_est_conf_t  conf;
        pki_est_req_t   req;
        pki_est_resp_t  resp;

        memset(&conf, 0, sizeof(conf));
        conf.ca = fx->ca;
        conf.tmpl = fx->device;
        conf.redis = hostile;
        memset(&req, 0, sizeof(req));
        req.op = (op & 0x10) ? PKI_EST_SIMPLEREENROLL : PKI_EST_SIMPLEENROLL;
        req.method = "POST";
        req.content_type = "application/pkcs10";
        req.body = (const unsigned char *) csr_b64;
        req.body_len = strlen(csr_b64);
        if (op & 0x30) {
            req.client_cert = fx->leaf;
        } else {
            req.user = "fuzz";
        }
        pki_est_handle(&conf, &req, &resp);
        res = resp.res;
        pki_est_resp_free(&resp);
        break;
    }

    default: {
        pki_admin_conf_t  conf;
        pki_admin_req_t   req;
        pki_admin_resp_t  resp;

        static const char  body[] =
            "{\"serial\": \"0A1B2C\", \"reason\": \"keyCompromise\"}";

        memset(&conf, 0, sizeof(conf));
        conf.cas = cas;
        conf.ncas = 2;
        conf.redis = hostile;
        memset(&req, 0, sizeof(req));
        req.identity = "fuzz-admin";
        if (op & 0x10) {
            req.method = "POST";
            req.path = "revoke";
            req.path_len = 6;
            req.body = (const unsigned char *) body;
            req.body_len = sizeof(body) - 1;
        } else if (op & 0x20) {
            req.method = "GET";
            req.path = "certificates/0A1B2C";
            req.path_len = 19;
        } else {
            req.method = "GET";
            req.path = "certificates";
            req.path_len = 12;
            req.query = "status=revoked&limit=5";
            req.query_len = 22;
        }
        pki_admin_handle(&conf, &req, &resp);
        res = resp.res;
        pki_admin_resp_free(&resp);
        break;
    }
    }

    if (pki_fuzz_verbose()) {
        fprintf(stderr, "redis op %02x: %s %s (%s)\n", op,
                pki_status_name(res.status), res.detail, res.log);
    }

    pki_redis_disconnect(hostile);
    close(fd);
    ERR_clear_error();

    return 0;
}
