
/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * ngx_http_est_module: EST (RFC 7030) endpoints.  The glue turns a request
 * under /.well-known/est/[<label>/]<op> into a pki_est_req_t, runs
 * pki_est_handle() (in the thread pool when the operation blocks) and sends
 * the pki_est_resp_t back.  Authentication is nginx's own (auth_basic,
 * auth_request, ssl_verify_client); this module reads its verdict.
 *
 * Needs ngx_http_pki_module loaded first (load_module order).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_pki_module.h"


#define NGX_HTTP_EST_PREFIX       "/.well-known/est/"
#define NGX_HTTP_EST_RETRY_AFTER  5


typedef struct {
    ngx_str_t                  label;
    pki_ca_t                  *ca;
    pki_template_t            *tmpl;
} ngx_http_est_label_t;


typedef struct {
    ngx_flag_t                 enable;
    pki_ca_t                  *ca;
    pki_template_t            *tmpl;
    ngx_array_t               *labels;      /* ngx_http_est_label_t */
    ngx_flag_t                 pop_linking;
    ngx_flag_t                 plain_http;
    ngx_flag_t                 bind_names;
    size_t                     max_body_size;
    ngx_http_complex_value_t  *identity;    /* est_identity, or NULL */
} ngx_http_est_loc_conf_t;


typedef struct {
    ngx_str_t                  file;        /* first est directive, for */
    ngx_uint_t                 line;        /* the "needs pki_redis" error */
    ngx_array_t               *anchor_checked;  /* pki_ca_t *, warned once */
} ngx_http_est_main_conf_t;


typedef struct {
    ngx_str_t                  op_name;
    pki_est_conf_t             conf;
    pki_est_req_t              req;
    pki_est_resp_t             resp;
    u_char                     binding[64];
} ngx_http_est_ctx_t;


static ngx_int_t ngx_http_est_handler(ngx_http_request_t *r);
static void ngx_http_est_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_est_fill_request(ngx_http_request_t *r,
    ngx_http_est_ctx_t *ctx);
#if (NGX_HTTP_SSL)
static ngx_int_t ngx_http_est_tls(ngx_http_request_t *r,
    ngx_http_est_ctx_t *ctx);
static void ngx_http_est_cert_cleanup(void *data);
#endif
static void ngx_http_est_work(void *data);
static void ngx_http_est_done(ngx_http_request_t *r, void *data);
static ngx_int_t ngx_http_est_send(ngx_http_request_t *r,
    ngx_http_est_ctx_t *ctx);
static ngx_int_t ngx_http_est_too_large(ngx_http_request_t *r,
    ngx_http_est_ctx_t *ctx);
static ngx_int_t ngx_http_est_no_tls(ngx_http_request_t *r, ngx_str_t *op);
static ngx_int_t ngx_http_est_too_early(ngx_http_request_t *r,
    ngx_http_est_ctx_t *ctx);

static ngx_uint_t ngx_http_est_challenged(ngx_http_request_t *r);
static ngx_int_t ngx_http_est_header_filter(ngx_http_request_t *r);
static void ngx_http_est_wipe(void *data);

static void *ngx_http_est_create_main_conf(ngx_conf_t *cf);
static ngx_int_t ngx_http_est_check_anchor(ngx_conf_t *cf, pki_ca_t *ca);
static void *ngx_http_est_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_est_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_est_init(ngx_conf_t *cf);

static char *ngx_http_est(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_http_est_label(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_http_est_commands[] = {

    { ngx_string("est"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_est,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("est_label"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE3,
      ngx_http_est_label,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("est_pop_linking"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_est_loc_conf_t, pop_linking),
      NULL },

    { ngx_string("est_plain_http"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_est_loc_conf_t, plain_http),
      NULL },

    { ngx_string("est_bind_names"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_est_loc_conf_t, bind_names),
      NULL },

    { ngx_string("est_max_body_size"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_est_loc_conf_t, max_body_size),
      NULL },

    { ngx_string("est_identity"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_est_loc_conf_t, identity),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_est_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_est_init,                     /* postconfiguration */

    ngx_http_est_create_main_conf,         /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_est_create_loc_conf,          /* create location configuration */
    ngx_http_est_merge_loc_conf            /* merge location configuration */
};


ngx_module_t  ngx_http_est_module = {
    NGX_MODULE_V1,
    &ngx_http_est_module_ctx,              /* module context */
    ngx_http_est_commands,                 /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


static ngx_str_t  ngx_http_est_not_found = ngx_string("not found\n");
static ngx_str_t  ngx_http_est_busy = ngx_string("busy, retry later\n");
static ngx_str_t  ngx_http_est_https = ngx_string("EST requires HTTPS\n");
static ngx_str_t  ngx_http_est_early = ngx_string(
    "too early: send the request again after the TLS handshake\n");


static ngx_int_t
ngx_http_est_handler(ngx_http_request_t *r)
{
    u_char                   *p, *start, *end, *slash;
    ngx_int_t                 rc;
    ngx_str_t                 label, op;
    ngx_uint_t                i;
    pki_ca_t                 *ca;
    pki_est_op_t              est_op;
    pki_template_t           *tmpl;
    ngx_http_est_ctx_t       *ctx;
    ngx_http_est_label_t     *lb;
    ngx_http_est_loc_conf_t  *elcf;

    elcf = ngx_http_get_module_loc_conf(r, ngx_http_est_module);

    if (!elcf->enable) {
        return NGX_DECLINED;
    }

    /* <prefix>/.well-known/est/<op> or .../est/<label>/<op> */

    start = NULL;
    end = r->uri.data + r->uri.len;

    for (p = r->uri.data;
         (size_t) (end - p) >= sizeof(NGX_HTTP_EST_PREFIX) - 1;
         p++)
    {
        if (ngx_strncmp(p, NGX_HTTP_EST_PREFIX,
                        sizeof(NGX_HTTP_EST_PREFIX) - 1)
            == 0)
        {
            start = p + sizeof(NGX_HTTP_EST_PREFIX) - 1;
            break;
        }
    }

    if (start == NULL || start == end) {
        goto not_found;
    }

    ca = elcf->ca;
    tmpl = elcf->tmpl;

    slash = ngx_strlchr(start, end, '/');

    if (slash) {
        label.data = start;
        label.len = slash - start;

        op.data = slash + 1;
        op.len = end - op.data;

        if (label.len == 0 || op.len == 0
            || ngx_strlchr(op.data, end, '/') != NULL)
        {
            goto not_found;
        }

        ca = NULL;
        tmpl = NULL;

        if (elcf->labels) {
            lb = elcf->labels->elts;

            for (i = 0; i < elcf->labels->nelts; i++) {
                if (lb[i].label.len == label.len
                    && ngx_strncmp(lb[i].label.data, label.data, label.len)
                       == 0)
                {
                    ca = lb[i].ca;
                    tmpl = lb[i].tmpl;
                    break;
                }
            }
        }

    } else {
        op.data = start;
        op.len = end - start;
    }

    if (ca == NULL || tmpl == NULL) {
        goto not_found;
    }

    est_op = pki_est_op((const char *) op.data, op.len);
    if (est_op == PKI_EST_UNKNOWN) {
        goto not_found;
    }

#if (NGX_HTTP_SSL)
    if (r->connection->ssl == NULL && !elcf->plain_http) {
        return ngx_http_est_no_tls(r, &op);
    }
#else
    if (!elcf->plain_http) {
        return ngx_http_est_no_tls(r, &op);
    }
#endif

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_est_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->op_name = op;

    ctx->conf.ca = ca;
    ctx->conf.tmpl = tmpl;
    ctx->conf.redis = ngx_http_pki_redis(r);
    ctx->conf.cas = ngx_http_pki_cas(r, &ctx->conf.ncas);
    ctx->conf.pop_linking = elcf->pop_linking ? 1 : 0;
    ctx->conf.bind_names = elcf->bind_names ? 1 : 0;
    ctx->conf.max_body = elcf->max_body_size;

    ctx->req.op = est_op;

    ngx_http_set_ctx(r, ctx, ngx_http_est_module);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "est: op \"%V\" blocking:%d", &op,
                   pki_est_op_blocking(est_op));

    rc = ngx_http_pki_read_body(r, elcf->max_body_size,
                                ngx_http_est_body_handler);

    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        /* closed after the answer, as nginx does after its own 413 */
        ngx_http_pki_body_refused(r, 0);
        return ngx_http_est_too_large(r, ctx);
    }

    if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        /* pki_body_memory is used up: nothing read; counted and logged
         * (rate-limited) by the pki module */
        ngx_http_pki_body_refused(r, 0);
        return ngx_http_pki_send_plain(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       &ngx_http_est_busy,
                                       NGX_HTTP_EST_RETRY_AFTER);
    }

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;

not_found:

    ngx_http_pki_body_unwanted(r);

    return ngx_http_pki_send_plain(r, NGX_HTTP_NOT_FOUND,
                                   &ngx_http_est_not_found, 0);
}


static void
ngx_http_est_body_handler(ngx_http_request_t *r)
{
    ngx_int_t            rc;
    ngx_str_t            body;
    ngx_http_est_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_est_module);

    rc = ngx_http_pki_request_body(r, ctx->conf.max_body, &body);

    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        /* a body without Content-Length that crossed the cap after the
         * first read: the pki body filter ended it there, and the
         * connection is not kept (HTTP/1.1) */
        ngx_http_finalize_request(r, ngx_http_est_too_large(r, ctx));
        return;
    }

    if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        /* the body would have gone over pki_body_memory: ended there */
        ngx_http_finalize_request(r,
            ngx_http_pki_send_plain(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    &ngx_http_est_busy,
                                    NGX_HTTP_EST_RETRY_AFTER));
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    /* an enrollment sent in TLS 1.3 early data can be replayed: each
     * copy would issue a certificate */
    if (pki_est_op_blocking(ctx->req.op) && ngx_http_pki_too_early(r)) {
        ngx_http_finalize_request(r, ngx_http_est_too_early(r, ctx));
        return;
    }

    ctx->req.body = body.data;
    ctx->req.body_len = body.len;

    if (ngx_http_est_fill_request(r, ctx) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (!pki_est_op_blocking(ctx->req.op)) {
        pki_est_handle(&ctx->conf, &ctx->req, &ctx->resp);
        ngx_http_finalize_request(r, ngx_http_est_send(r, ctx));
        return;
    }

    if (ngx_http_pki_key_hung(pki_ca_key(ctx->conf.ca))) {
        /* the CA's token does not answer (logged by the pki module's
         * watchdog): not a thread more waits for it */
        ngx_http_finalize_request(r,
            ngx_http_pki_send_plain(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    &ngx_http_est_busy,
                                    NGX_HTTP_EST_RETRY_AFTER));
        return;
    }

    /* an enrollment signs with the CA key */
    rc = ngx_http_pki_post_sign(r, ngx_http_est_work, ngx_http_est_done, ctx);

    switch (rc) {

    case NGX_OK:
        /* drops the reference of the body reading; the task holds one */
        ngx_http_finalize_request(r, NGX_DONE);
        return;

    case NGX_DECLINED:
        /* logged (rate-limited) by ngx_http_pki_post() */
        ngx_http_finalize_request(r,
            ngx_http_pki_send_plain(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    &ngx_http_est_busy,
                                    NGX_HTTP_EST_RETRY_AFTER));
        return;

    default:
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }
}


static ngx_int_t
ngx_http_est_fill_request(ngx_http_request_t *r, ngx_http_est_ctx_t *ctx)
{
    ngx_str_t                 user;
    pki_est_req_t            *req;
    ngx_http_est_loc_conf_t  *elcf;

    req = &ctx->req;

    req->method = ngx_http_pki_cstr(r->pool, &r->method_name);
    if (req->method == NULL) {
        return NGX_ERROR;
    }

    if (r->headers_in.content_type) {
        req->content_type = ngx_http_pki_cstr(r->pool,
                                         &r->headers_in.content_type->value);
        if (req->content_type == NULL) {
            return NGX_ERROR;
        }
    }

    /*
     * The authenticated user: est_identity when configured (for example a
     * variable set by auth_request_set), else the name auth_basic
     * verified.  The Authorization header is never parsed here.
     */

    elcf = ngx_http_get_module_loc_conf(r, ngx_http_est_module);

    if (elcf->identity) {
        if (ngx_http_complex_value(r, elcf->identity, &user) != NGX_OK) {
            return NGX_ERROR;
        }

    } else {
        ngx_http_pki_verified_user(r, &user);
    }

    if (user.len) {
        req->user = ngx_http_pki_cstr(r->pool, &user);
        if (req->user == NULL) {
            return NGX_ERROR;
        }
    }

    req->client = ngx_http_pki_cstr(r->pool, &r->connection->addr_text);
    if (req->client == NULL) {
        return NGX_ERROR;
    }

#if (NGX_HTTP_SSL)

    if (r->connection->ssl) {
        return ngx_http_est_tls(r, ctx);
    }

#endif

    return NGX_OK;
}


#if (NGX_HTTP_SSL)

static ngx_int_t
ngx_http_est_tls(ngx_http_request_t *r, ngx_http_est_ctx_t *ctx)
{
    int                  rc;
    SSL                 *ssl;
    X509                *cert;
    size_t               n;
    ngx_pool_cleanup_t  *cln;

    ssl = r->connection->ssl->connection;

    if (SSL_get_verify_result(ssl) == X509_V_OK) {
        cert = SSL_get_peer_certificate(ssl);

        if (cert) {
            cln = ngx_pool_cleanup_add(r->pool, 0);
            if (cln == NULL) {
                X509_free(cert);
                return NGX_ERROR;
            }

            cln->handler = ngx_http_est_cert_cleanup;
            cln->data = cert;

            ctx->req.client_cert = cert;
        }
    }

    /*
     * The binding of every enrollment under TLS 1.2: without
     * est_pop_linking, the engine still checks a CSR that carries one
     * (RFC 7030 3.5).  Not under TLS 1.3, which has no tls-unique:
     * clients put different values there (libest its client Finished,
     * not the RFC 9266 exporter), so only a location that requires
     * linking judges them.
     */
    if (!pki_est_op_blocking(ctx->req.op)
        || (!ctx->conf.pop_linking && SSL_version(ssl) >= TLS1_3_VERSION))
    {
        return NGX_OK;
    }

    if (SSL_version(ssl) >= TLS1_3_VERSION) {

        /* RFC 9266 tls-exporter */

        rc = SSL_export_keying_material(ssl, ctx->binding, 32,
                                        "EXPORTER-Channel-Binding",
                                        sizeof("EXPORTER-Channel-Binding")
                                        - 1,
                                        NULL, 0, 0);
        if (rc != 1) {
            ngx_ssl_error(NGX_LOG_ERR, r->connection->log, 0,
                          "SSL_export_keying_material() failed");
            return NGX_OK;
        }

        ctx->req.channel_binding = ctx->binding;
        ctx->req.channel_binding_len = 32;

        return NGX_OK;
    }

    /* RFC 5929 tls-unique: the first Finished message of the handshake,
     * the client's in a full handshake, the server's when resumed.  It
     * binds only with the Extended Master Secret (RFC 7627; the triple
     * handshake): without it the core refuses linking. */

    if (SSL_get_extms_support(ssl) != 1) {
        ctx->req.binding_no_ems = 1;
        return NGX_OK;
    }

    if (SSL_session_reused(ssl)) {
        n = SSL_get_finished(ssl, ctx->binding, sizeof(ctx->binding));

    } else {
        n = SSL_get_peer_finished(ssl, ctx->binding, sizeof(ctx->binding));
    }

    if (n > 0 && n <= sizeof(ctx->binding)) {
        ctx->req.channel_binding = ctx->binding;
        ctx->req.channel_binding_len = n;
    }

    return NGX_OK;
}


static void
ngx_http_est_cert_cleanup(void *data)
{
    X509_free(data);
}

#endif


/* pool thread */

static void
ngx_http_est_work(void *data)
{
    ngx_http_est_ctx_t *ctx = data;

    pki_est_handle(&ctx->conf, &ctx->req, &ctx->resp);
}


static void
ngx_http_est_done(ngx_http_request_t *r, void *data)
{
    ngx_http_est_ctx_t *ctx = data;

    ngx_http_finalize_request(r, ngx_http_est_send(r, ctx));
}


static ngx_int_t
ngx_http_est_send(ngx_http_request_t *r, ngx_http_est_ctx_t *ctx)
{
    u_char              *p;
    size_t               len;
    ngx_buf_t           *b;
    ngx_uint_t           level, status;
    pki_est_resp_t      *resp;
    ngx_pool_cleanup_t  *cln;

    resp = &ctx->resp;

    status = resp->http_status;

    if (status < 200 || status > 599) {
        status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_pki_metrics_mark(r, "est", pki_ca_name(ctx->conf.ca),
                              pki_template_name(ctx->conf.tmpl),
                              resp->res.status, resp->res.detail);

    if (status >= 400) {
        /* 501: the client asked for what EST offers and this server
         * does not (an encrypted serverkeygen key), no server fault */
        level = (status >= 500 && status != NGX_HTTP_NOT_IMPLEMENTED)
                ? NGX_LOG_ERR : NGX_LOG_INFO;

        ngx_log_error(level, r->connection->log, 0,
                      "est: %V from %V failed: %s%s%s%s",
                      &ctx->op_name, &r->connection->addr_text,
                      resp->res.detail,
                      resp->res.log[0] ? " (" : "", resp->res.log,
                      resp->res.log[0] ? ")" : "");

    } else if (resp->res.log[0]) {
        /* as Matter and SCEP do: the serial issued, or the DAC a key
         * already had answered again (a Matter DAC template) */
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "est: %V from %V: %s", &ctx->op_name,
                      &r->connection->addr_text, resp->res.log);
    }

    b = NULL;

    if (resp->body && resp->body_len && status != NGX_HTTP_UNAUTHORIZED) {
        b = ngx_create_temp_buf(r->pool, resp->body_len);
        if (b == NULL) {
            pki_est_resp_free(resp);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        b->last = ngx_cpymem(b->pos, resp->body, resp->body_len);

        if (ctx->req.op == PKI_EST_SERVERKEYGEN) {
            /* the body holds the new private key: wipe it with the pool */
            cln = ngx_pool_cleanup_add(r->pool, 0);
            if (cln == NULL) {
                ngx_explicit_memzero(b->start, b->end - b->start);
                pki_est_resp_free(resp);
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            cln->handler = ngx_http_est_wipe;
            cln->data = b;
        }
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = b ? (off_t) (b->last - b->pos) : 0;

    if (resp->content_type && b) {
        len = ngx_strlen(resp->content_type);

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            goto failed;
        }

        ngx_memcpy(p, resp->content_type, len);

        r->headers_out.content_type.data = p;
        r->headers_out.content_type.len = len;

        p = ngx_strlchr(p, p + len, ';');
        r->headers_out.content_type_len = p ? (size_t) (p - r->headers_out
                                                        .content_type.data)
                                            : len;
    }

    if (resp->cte_base64 && b) {
        if (ngx_http_pki_add_header(r, "Content-Transfer-Encoding",
                                    (u_char *) "base64", 6)
            == NULL)
        {
            goto failed;
        }
    }

    if (resp->www_authenticate) {
        if (ngx_http_pki_add_header(r, "WWW-Authenticate",
                                    (u_char *) resp->www_authenticate,
                                    ngx_strlen(resp->www_authenticate))
            == NULL)
        {
            goto failed;
        }
    }

    if (resp->allow) {
        if (ngx_http_pki_add_header(r, "Allow", (u_char *) resp->allow,
                                    ngx_strlen(resp->allow))
            == NULL)
        {
            goto failed;
        }
    }

    if (resp->retry_after > 0) {
        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            goto failed;
        }

        len = ngx_sprintf(p, "%d", resp->retry_after) - p;

        if (ngx_http_pki_add_header(r, "Retry-After", p, len) == NULL) {
            goto failed;
        }
    }

    if (ctx->req.op == PKI_EST_SIMPLEENROLL
        || ctx->req.op == PKI_EST_SIMPLEREENROLL
        || ctx->req.op == PKI_EST_SERVERKEYGEN)
    {
        if (ngx_http_pki_add_header(r, "Cache-Control",
                                    (u_char *) "no-store", 8)
            == NULL)
        {
            goto failed;
        }
    }

    pki_est_resp_free(resp);

    /* HEAD (cacerts, csrattrs): the GET answer's header, Content-Length
     * included, without the body */
    if (b == NULL || r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
    }

    /* the answer holds the new private key: no copy in the TLS buffer
     * (nothing of it is there yet: an earlier response on the connection
     * was flushed before this request was read) */
    if (ctx->req.op == PKI_EST_SERVERKEYGEN && b != NULL) {
        ngx_http_pki_send_unbuffered(r);
    }

    /* a body not read is discarded, not parsed as the next request
     * (see ngx_http_pki_send_plain()) */
    ngx_http_pki_body_unwanted(r);

    return ngx_http_pki_send_buf(r, b);

failed:

    pki_est_resp_free(resp);

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


/* 413 in the module's own form (text/plain, as the engine's errors), not
 * nginx's HTML page */

static ngx_int_t
ngx_http_est_too_large(ngx_http_request_t *r, ngx_http_est_ctx_t *ctx)
{
    size_t     max;
    ngx_str_t  text;

    max = ngx_http_pki_body_max(r, ctx->conf.max_body);

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "est: %V from %V failed: request body is larger than "
                  "%uz bytes", &ctx->op_name, &r->connection->addr_text, max);

    text.data = ngx_pnalloc(r->pool, sizeof("request body is larger than "
                                            " bytes\n") - 1
                                     + NGX_SIZE_T_LEN);
    if (text.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    text.len = ngx_sprintf(text.data, "request body is larger than %uz "
                           "bytes\n", max)
               - text.data;

    return ngx_http_pki_send_plain(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                   &text, 0);
}


/*
 * RFC 7030 3.3: EST MUST run over HTTPS.  In a server without TLS,
 * serverkeygen would send the new private key, and every enrollment the
 * Basic password, in the clear, so a request on a connection without TLS
 * is refused before its body is read or anything is written, unless
 * est_plain_http says that TLS ends in front of nginx.
 */

static ngx_int_t
ngx_http_est_no_tls(ngx_http_request_t *r, ngx_str_t *op)
{
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "est: %V from %V refused: the connection has no TLS "
                  "(RFC 7030 3.3: EST needs HTTPS); serve EST in an ssl "
                  "server, or set \"est_plain_http on\" where TLS ends in "
                  "front of nginx", op, &r->connection->addr_text);

    ngx_http_pki_body_unwanted(r);

    return ngx_http_pki_send_plain(r, NGX_HTTP_FORBIDDEN,
                                   &ngx_http_est_https, 0);
}


static ngx_int_t
ngx_http_est_too_early(ngx_http_request_t *r, ngx_http_est_ctx_t *ctx)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "est: %V from %V refused: sent in TLS 1.3 early data, "
                  "which can be replayed (425)", &ctx->op_name,
                  &r->connection->addr_text);

    return ngx_http_pki_send_plain(r, NGX_HTTP_PKI_TOO_EARLY,
                                   &ngx_http_est_early, 0);
}


/*
 * RFC 7030 clients break on a 401 with a body: in EST locations every 401
 * (auth_basic, auth_request or ours) goes out with WWW-Authenticate, no
 * body and Content-Length: 0.  Setting header_only makes
 * ngx_http_send_special_response() skip its HTML page.  A 401 without a
 * challenge (auth_request whose backend sent none, a "return 401") gets
 * EST's own Basic one: RFC 9110 11.6.1 requires one, and clients that
 * send credentials only when challenged (RFC 7030 3.2.3) would give up.
 */

static void
ngx_http_est_wipe(void *data)
{
    ngx_buf_t  *b = data;

    ngx_explicit_memzero(b->start, b->end - b->start);
}


/* a WWW-Authenticate is in the answer's headers (auth_basic's and
 * auth_request's set r->headers_out.www_authenticate, the engine's not) */

static ngx_uint_t
ngx_http_est_challenged(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    if (r->headers_out.www_authenticate != NULL
        && r->headers_out.www_authenticate->hash != 0)
    {
        return 1;
    }

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return 0;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash != 0
            && h[i].key.len == sizeof("WWW-Authenticate") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "WWW-Authenticate",
                               sizeof("WWW-Authenticate") - 1)
               == 0)
        {
            return 1;
        }
    }
}


static ngx_int_t
ngx_http_est_header_filter(ngx_http_request_t *r)
{
    ngx_http_est_loc_conf_t  *elcf;

    if (r->headers_out.status != NGX_HTTP_UNAUTHORIZED || r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    elcf = ngx_http_get_module_loc_conf(r, ngx_http_est_module);

    if (elcf == NULL || !elcf->enable) {
        return ngx_http_next_header_filter(r);
    }

    if (!ngx_http_est_challenged(r)
        && ngx_http_pki_add_header(r, "WWW-Authenticate",
                                   (u_char *) "Basic realm=\"EST\"",
                                   sizeof("Basic realm=\"EST\"") - 1)
           == NULL)
    {
        return NGX_ERROR;
    }

    r->header_only = 1;

    ngx_http_clear_content_length(r);
    r->headers_out.content_length_n = 0;

    r->headers_out.content_type.len = 0;
    r->headers_out.content_type.data = NULL;
    r->headers_out.content_type_len = 0;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.charset.len = 0;

    return ngx_http_next_header_filter(r);
}


static void *
ngx_http_est_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_est_main_conf_t  *emcf;

    emcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_est_main_conf_t));
    if (emcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     emcf->file = { 0, NULL };
     *     emcf->line = 0;
     *     emcf->anchor_checked = NULL;
     */

    return emcf;
}


static void *
ngx_http_est_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_est_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_est_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->enable = NGX_CONF_UNSET;
    conf->ca = NGX_CONF_UNSET_PTR;
    conf->tmpl = NGX_CONF_UNSET_PTR;
    conf->labels = NGX_CONF_UNSET_PTR;
    conf->pop_linking = NGX_CONF_UNSET;
    conf->plain_http = NGX_CONF_UNSET;
    conf->bind_names = NGX_CONF_UNSET;
    conf->max_body_size = NGX_CONF_UNSET_SIZE;

    return conf;
}


static char *
ngx_http_est_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_est_loc_conf_t *prev = parent;
    ngx_http_est_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_ptr_value(conf->ca, prev->ca, NULL);
    ngx_conf_merge_ptr_value(conf->tmpl, prev->tmpl, NULL);
    ngx_conf_merge_ptr_value(conf->labels, prev->labels, NULL);
    ngx_conf_merge_value(conf->pop_linking, prev->pop_linking, 0);
    ngx_conf_merge_value(conf->plain_http, prev->plain_http, 0);
    ngx_conf_merge_value(conf->bind_names, prev->bind_names, 0);
    ngx_conf_merge_size_value(conf->max_body_size, prev->max_body_size,
                              64 * 1024);

    /* 0 would refuse every POST; a CSR, even RSA-8192 with many names,
     * is far below 1m (as acme_max_body_size) */
    if (conf->max_body_size < 1024 || conf->max_body_size > 1024 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "est_max_body_size must be 1k..1m");
        return NGX_CONF_ERROR;
    }

    if (conf->identity == NULL) {
        conf->identity = prev->identity;
    }

    /*
     * The content handler also applies in nested locations (for example
     * a regex location with auth_basic inside /.well-known/est/), unless
     * they have a content handler of their own.
     */

    if (conf->enable) {
        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

        if (clcf->handler == NULL) {
            clcf->handler = ngx_http_est_handler;
        }

        /* the module refuses a body over est_max_body_size itself (a
         * text/plain 413, for a length and for chunked data alike) */
        ngx_http_pki_own_body_cap(cf, ngx_http_est_handler,
                                  conf->max_body_size);
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_est_init(ngx_conf_t *cf)
{
    ngx_http_est_main_conf_t  *emcf;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_est_header_filter;

    emcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_est_module);

    return ngx_http_pki_needs_redis(cf, "est", &emcf->file, emcf->line);
}


/* est CA TEMPLATE;  est off; */

static char *
ngx_http_est(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_est_loc_conf_t *elcf = conf;

    char                      *rv;
    ngx_http_est_main_conf_t  *emcf;

    emcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_est_module);

    rv = ngx_http_pki_proto_conf(cf, &elcf->enable, &elcf->ca, &elcf->tmpl,
                                 &emcf->file, &emcf->line);

    if (rv == NGX_CONF_OK && !elcf->enable
        && elcf->labels != NGX_CONF_UNSET_PTR)
    {
        return "off cannot be combined with \"est_label\"";
    }

    /* set here too (not only in the merge, which nested locations
     * inherit it by) to refuse another content handler in the location */
    if (rv == NGX_CONF_OK && elcf->enable) {
        if (ngx_http_est_check_anchor(cf, elcf->ca) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        return ngx_http_pki_content(cf, cmd, ngx_http_est_handler);
    }

    return rv;
}


/* est_label LABEL CA TEMPLATE; */

static char *
ngx_http_est_label(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_est_loc_conf_t *elcf = conf;

    u_char                     c;
    ngx_str_t                 *value;
    ngx_uint_t                 i;
    ngx_http_est_label_t      *lb;
    ngx_http_est_main_conf_t  *emcf;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > 64) {
        goto invalid;
    }

    for (i = 0; i < value[1].len; i++) {
        c = value[1].data[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.')
        {
            continue;
        }

        goto invalid;
    }

    if (pki_est_op((const char *) value[1].data, value[1].len)
        != PKI_EST_UNKNOWN)
    {
        goto invalid;
    }

    if (elcf->enable == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"est_label\" cannot be combined with "
                           "\"est off\"");
        return NGX_CONF_ERROR;
    }

    if (elcf->labels == NGX_CONF_UNSET_PTR) {
        elcf->labels = ngx_array_create(cf->pool, 2,
                                        sizeof(ngx_http_est_label_t));
        if (elcf->labels == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    lb = elcf->labels->elts;

    for (i = 0; i < elcf->labels->nelts; i++) {
        if (lb[i].label.len == value[1].len
            && ngx_strncmp(lb[i].label.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate est_label \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    lb = ngx_array_push(elcf->labels);
    if (lb == NULL) {
        return NGX_CONF_ERROR;
    }

    lb->label = value[1];

    if (ngx_http_pki_resolve(cf, &value[2], &value[3], &lb->ca, &lb->tmpl)
        != NGX_OK
        || ngx_http_est_check_anchor(cf, lb->ca) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (elcf->enable == NGX_CONF_UNSET) {
        elcf->enable = 1;

        /* as "est" does: another content handler in the location (a
         * proxy_pass) would leave the label dead, unsaid */
        if (ngx_http_pki_content(cf, cmd, ngx_http_est_handler)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    emcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_est_module);

    if (emcf->line == 0) {
        emcf->file = cf->conf_file->file.name;
        emcf->line = cf->conf_file->line;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid est label \"%V\" (1-64 of A-Z a-z 0-9 . _ -,"
                       " not an operation name)", &value[1]);
    return NGX_CONF_ERROR;
}


/*
 * RFC 7030 4.1.3: /cacerts carries the chain up to and including the
 * trust anchor where it is known.  It serves the CA certificate and its
 * "chain" file; when no path from the CA certificate through that file
 * reaches a self-signed certificate (pki_ca_anchor_missing), clients that
 * bootstrap their trust from /cacerts (RFC 7030 4.1.1) get no root.  The
 * root is nowhere else in the CA's configuration, so this is said once
 * per CA at nginx -t, naming the issuer that is missing.
 */
static ngx_int_t
ngx_http_est_check_anchor(ngx_conf_t *cf, pki_ca_t *ca)
{
    char                       name[256];
    pki_ca_t                 **p;
    ngx_uint_t                 k;
    ngx_http_est_main_conf_t  *emcf;

    if (ca == NULL || pki_ca_cert(ca) == NULL) {
        return NGX_OK;
    }

    emcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_est_module);

    if (emcf->anchor_checked == NULL) {
        emcf->anchor_checked = ngx_array_create(cf->pool, 4,
                                                sizeof(pki_ca_t *));
        if (emcf->anchor_checked == NULL) {
            return NGX_ERROR;
        }
    }

    p = emcf->anchor_checked->elts;

    for (k = 0; k < emcf->anchor_checked->nelts; k++) {
        if (p[k] == ca) {
            return NGX_OK;
        }
    }

    p = ngx_array_push(emcf->anchor_checked);
    if (p == NULL) {
        return NGX_ERROR;
    }

    *p = ca;

    if (!pki_ca_anchor_missing(ca, name, sizeof(name))) {
        return NGX_OK;
    }

    ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                       "est: CA \"%s\": its chain does not reach a root "
                       "(no certificate of \"%s\" in the CA's \"chain\" "
                       "file), so /cacerts carries no trust anchor "
                       "(RFC 7030 4.1.3): add the root to the chain file",
                       pki_ca_name(ca), name[0] != '\0' ? name : "?");

    return NGX_OK;
}
