
/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * ngx_http_scep_module: SCEP (RFC 8894) endpoint.  The glue turns
 * GET/POST <location>?operation=...[&message=...] into a pki_scep_req_t,
 * runs pki_scep_handle() (PKIOperation in the thread pool) and sends the
 * pki_scep_resp_t back.
 *
 *     location /scep {
 *         scep issuing device;
 *         scep_ra ra.pem ra.key;            # or a pkcs11: URI
 *         scep_challenge file=challenge.txt;
 *         scep_dynamic_challenges on;
 *     }
 *
 * Needs ngx_http_pki_module loaded first (load_module order).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/pem.h>

#include "ngx_http_pki_module.h"


#define NGX_HTTP_SCEP_RETRY_AFTER  5
#define NGX_HTTP_SCEP_PENDING_MAX  10000   /* requests awaiting approval */


typedef struct {
    ngx_flag_t                 enable;
    pki_ca_t                  *ca;
    pki_template_t            *tmpl;
    X509                      *ra_cert;
    pki_key_t                 *ra_key;
    X509                      *next_ca;
    STACK_OF(X509)            *next_chain;
    ngx_str_t                  challenge;
    ngx_flag_t                 dynamic;
    ngx_flag_t                 manual;
    ngx_flag_t                 accept_des;
    ngx_flag_t                 ca_chain;
    ngx_uint_t                 tid;
    size_t                     max_body_size;
    time_t                     pending_ttl;
    ngx_int_t                  pending_max;
    time_t                     clock_skew;
    ngx_str_t                  file;        /* of the scep directive */
    ngx_uint_t                 line;
    pki_scep_conf_t           *conf;
} ngx_http_scep_loc_conf_t;


typedef struct {
    ngx_str_t                  file;        /* first scep directive, for */
    ngx_uint_t                 line;        /* the "needs pki_redis" error */
    ngx_array_t               *anchor_checked;  /* pki_ca_t *, warned once */
} ngx_http_scep_main_conf_t;


typedef struct {
    ngx_str_t                  op_name;
    pki_scep_conf_t            conf;
    pki_scep_req_t             req;
    pki_scep_resp_t            resp;
} ngx_http_scep_ctx_t;


static ngx_int_t ngx_http_scep_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_scep_unescape(ngx_pool_t *pool, ngx_str_t *op);
static void ngx_http_scep_body_handler(ngx_http_request_t *r);
static void ngx_http_scep_run(ngx_http_request_t *r,
    ngx_http_scep_ctx_t *ctx);
static ngx_uint_t ngx_http_scep_hung(ngx_http_scep_ctx_t *ctx);
static void ngx_http_scep_work(void *data);
static void ngx_http_scep_done(ngx_http_request_t *r, void *data);
static ngx_int_t ngx_http_scep_too_early(ngx_http_request_t *r);
static ngx_int_t ngx_http_scep_send(ngx_http_request_t *r,
    ngx_http_scep_ctx_t *ctx);

static void *ngx_http_scep_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_scep_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_scep_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_scep_check_anchor(ngx_conf_t *cf,
    ngx_http_scep_loc_conf_t *slcf);
static ngx_int_t ngx_http_scep_init(ngx_conf_t *cf);

static char *ngx_http_scep(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_http_scep_ra(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_scep_next_ca(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_scep_challenge(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_scep_clock_skew(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_scep_max_body_size(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_scep_pending_ttl(ngx_conf_t *cf, void *post,
    void *data);
static X509 *ngx_http_scep_load_cert(ngx_conf_t *cf, ngx_str_t *file);
static void ngx_http_scep_x509_cleanup(void *data);
static void ngx_http_scep_chain_cleanup(void *data);
static void ngx_http_scep_wipe_cleanup(void *data);


static ngx_conf_enum_t  ngx_http_scep_tid[] = {
    { ngx_string("key"), 0 },
    { ngx_string("any"), 1 },
    { ngx_null_string, 0 }
};


static ngx_conf_post_t  ngx_http_scep_max_body_size_post = {
    ngx_http_scep_max_body_size
};


static ngx_conf_post_t  ngx_http_scep_pending_ttl_post = {
    ngx_http_scep_pending_ttl
};


static ngx_command_t  ngx_http_scep_commands[] = {

    { ngx_string("scep"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_scep,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("scep_ra"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_scep_ra,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("scep_next_ca"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_scep_next_ca,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("scep_challenge"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_scep_challenge,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("scep_dynamic_challenges"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_scep_loc_conf_t, dynamic),
      NULL },

    { ngx_string("scep_manual_approval"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_scep_loc_conf_t, manual),
      NULL },

    { ngx_string("scep_accept_des"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_scep_loc_conf_t, accept_des),
      NULL },

    { ngx_string("scep_ca_chain"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_scep_loc_conf_t, ca_chain),
      NULL },

    { ngx_string("scep_transaction_id"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_scep_loc_conf_t, tid),
      &ngx_http_scep_tid },

    { ngx_string("scep_max_body_size"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_scep_loc_conf_t, max_body_size),
      &ngx_http_scep_max_body_size_post },

    { ngx_string("scep_pending_ttl"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_scep_loc_conf_t, pending_ttl),
      &ngx_http_scep_pending_ttl_post },

    { ngx_string("scep_pending_max"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_scep_loc_conf_t, pending_max),
      NULL },

    { ngx_string("scep_clock_skew"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_scep_clock_skew,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_scep_loc_conf_t, clock_skew),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_scep_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_scep_init,                    /* postconfiguration */

    ngx_http_scep_create_main_conf,        /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_scep_create_loc_conf,         /* create location configuration */
    ngx_http_scep_merge_loc_conf           /* merge location configuration */
};


ngx_module_t  ngx_http_scep_module = {
    NGX_MODULE_V1,
    &ngx_http_scep_module_ctx,             /* module context */
    ngx_http_scep_commands,                /* module directives */
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


static ngx_str_t  ngx_http_scep_bad_op =
    ngx_string("unknown or missing operation\n");
static ngx_str_t  ngx_http_scep_busy = ngx_string("busy, retry later\n");
static ngx_str_t  ngx_http_scep_early = ngx_string(
    "too early: send the request again after the TLS handshake\n");
static ngx_str_t  ngx_http_scep_bad_method = ngx_string("use GET or POST\n");
static ngx_str_t  ngx_http_scep_no_head =
    ngx_string("PKIOperation: use GET or POST (HEAD would issue, unseen)\n");
static ngx_str_t  ngx_http_scep_get_only =
    ngx_string("only PKIOperation is POSTed: use GET\n");
static ngx_str_t  ngx_http_scep_bad_escape =
    ngx_string("message= holds a broken percent-escape\n");
static ngx_str_t  ngx_http_scep_too_large =
    ngx_string("message too large\n");


/* op decoded into a copy (ngx_http_pki_unescape()), NGX_DECLINED for a
 * broken escape, NGX_ERROR without memory */
static ngx_int_t
ngx_http_scep_unescape(ngx_pool_t *pool, ngx_str_t *op)
{
    u_char   *dst;
    ssize_t   n;

    if (op->len == 0
        || ngx_strlchr(op->data, op->data + op->len, '%') == NULL)
    {
        return NGX_OK;
    }

    dst = ngx_pnalloc(pool, op->len);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    n = ngx_http_pki_unescape(dst, op->data, op->len);
    if (n < 0) {
        return NGX_DECLINED;
    }

    op->data = dst;
    op->len = (size_t) n;

    return NGX_OK;
}


static ngx_int_t
ngx_http_scep_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_str_t                  op, msg;
    ngx_str_t                  raw;
    pki_scep_op_t              scep_op;
    ngx_http_scep_ctx_t       *ctx;
    ngx_http_scep_loc_conf_t  *slcf;

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_scep_module);

    if (!slcf->enable || slcf->conf == NULL) {
        return NGX_DECLINED;
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_POST))) {
        ngx_http_pki_body_unwanted(r);

        if (ngx_http_pki_add_header(r, "Allow",
                                    (u_char *) "GET, HEAD, POST", 15)
            == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_pki_send_plain(r, NGX_HTTP_NOT_ALLOWED,
                                       &ngx_http_scep_bad_method, 0);
    }

    if (ngx_http_arg(r, (u_char *) "operation", 9, &op) != NGX_OK) {
        op.len = 0;
        op.data = NULL;
    }

    /* percent-encoded as any query value may be (message= is decoded by
     * the core); a broken escape is no operation.  The log names the
     * value as sent (raw), so no escape makes a line of its own there. */
    raw = op;
    scep_op = PKI_SCEP_UNKNOWN;

    rc = ngx_http_scep_unescape(r->pool, &op);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_OK) {
        scep_op = pki_scep_op((const char *) op.data, op.len);
    }

    if (scep_op == PKI_SCEP_UNKNOWN) {
        ngx_http_pki_body_unwanted(r);

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "scep: unknown operation \"%V\" from %V",
                      &raw, &r->connection->addr_text);

        return ngx_http_pki_send_plain(r, NGX_HTTP_BAD_REQUEST,
                                       &ngx_http_scep_bad_op, 0);
    }

    /* RFC 8894 4.1: only PKIOperation is ever POSTed; the others are
     * there, for GET (RFC 9110 15.5.6) */
    if (r->method == NGX_HTTP_POST && scep_op != PKI_SCEP_PKIOPERATION) {
        ngx_http_pki_body_unwanted(r);

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "scep: POST of %V from %V refused (GET only)",
                      &op, &r->connection->addr_text);

        if (ngx_http_pki_add_header(r, "Allow", (u_char *) "GET, HEAD", 9)
            == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_pki_send_plain(r, NGX_HTTP_NOT_ALLOWED,
                                       &ngx_http_scep_get_only, 0);
    }

    /* a PKIOperation may issue or consume a challenge: not for a method
     * that is safe and whose answer has no body */
    if (r->method == NGX_HTTP_HEAD && scep_op == PKI_SCEP_PKIOPERATION) {
        ngx_http_pki_body_unwanted(r);

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "scep: HEAD of PKIOperation from %V refused",
                      &r->connection->addr_text);

        if (ngx_http_pki_add_header(r, "Allow", (u_char *) "GET, POST", 9)
            == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_pki_send_plain(r, NGX_HTTP_NOT_ALLOWED,
                                       &ngx_http_scep_no_head, 0);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_scep_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->op_name = op;
    ctx->conf = *slcf->conf;
    ctx->conf.redis = ngx_http_pki_redis(r);
    /* GetCRL builds with the lifetime the CRL locations publish: a CRL
     * of another lifetime would replace theirs */
    ctx->conf.crl_next_update = (long) ngx_http_pki_crl_interval(r);
    ctx->req.op = scep_op;

    ctx->req.client = ngx_http_pki_cstr(r->pool, &r->connection->addr_text);
    if (ctx->req.client == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_scep_module);

    if (r->method == NGX_HTTP_POST) {
        ctx->req.method = "POST";

        rc = ngx_http_pki_read_body(r, slcf->max_body_size,
                                    ngx_http_scep_body_handler);

        if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "scep: %V from %V: body over %uz bytes",
                          &ctx->op_name, &r->connection->addr_text,
                          ngx_http_pki_body_max(r, slcf->max_body_size));

            ngx_http_pki_body_refused(r, 0);

            return ngx_http_pki_send_plain(r,
                                        NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                        &ngx_http_scep_too_large, 0);
        }

        if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
            /* pki_body_memory is used up: nothing read; counted and
             * logged (rate-limited) by the pki module */
            ngx_http_pki_body_refused(r, 0);
            return ngx_http_pki_send_plain(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           &ngx_http_scep_busy,
                                           NGX_HTTP_SCEP_RETRY_AFTER);
        }

        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }

        return NGX_DONE;
    }

    ctx->req.method = "GET";

    ngx_http_pki_body_unwanted(r);

    if (scep_op == PKI_SCEP_PKIOPERATION) {
        if (ngx_http_arg(r, (u_char *) "message", 7, &msg) != NGX_OK) {
            msg.len = 0;
        }

        /* base64 grows by 4/3 (and its line breaks); percent-encoding
         * by up to 3 */
        if (msg.len > (slcf->max_body_size / 3 * 4
                       + slcf->max_body_size / 12) * 3 + 48)
        {
            return ngx_http_pki_send_plain(r,
                                        NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                        &ngx_http_scep_too_large, 0);
        }

        if (msg.len) {
            rc = ngx_http_scep_unescape(r->pool, &msg);

            if (rc == NGX_ERROR) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            /* nginx's decoder would drop the broken escape and go on */
            if (rc == NGX_DECLINED) {
                ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                              "scep: broken percent-escape in message= "
                              "from %V", &r->connection->addr_text);

                return ngx_http_pki_send_plain(r, NGX_HTTP_BAD_REQUEST,
                                               &ngx_http_scep_bad_escape, 0);
            }

            ctx->req.body = msg.data;
            ctx->req.body_len = msg.len;

            /* base64 of the cap, and room for line breaks (as
             * pki_scep_handle bounds it; the DER is checked there) */
            if (ctx->req.body_len > slcf->max_body_size / 3 * 4
                                    + slcf->max_body_size / 12 + 16)
            {
                return ngx_http_pki_send_plain(r,
                                        NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                        &ngx_http_scep_too_large, 0);
            }
        }
    }

    if (!pki_scep_op_blocking(scep_op)) {
        pki_scep_handle(&ctx->conf, &ctx->req, &ctx->resp);
        return ngx_http_scep_send(r, ctx);
    }

    if (ngx_http_pki_too_early(r)) {
        return ngx_http_scep_too_early(r);
    }

    if (ngx_http_scep_hung(ctx)) {
        return ngx_http_pki_send_plain(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       &ngx_http_scep_busy,
                                       NGX_HTTP_SCEP_RETRY_AFTER);
    }

    rc = ngx_http_pki_post_sign(r, ngx_http_scep_work, ngx_http_scep_done,
                                ctx);

    switch (rc) {

    case NGX_OK:
        return NGX_DONE;

    case NGX_DECLINED:
        /* logged (rate-limited) by ngx_http_pki_post() */
        return ngx_http_pki_send_plain(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       &ngx_http_scep_busy,
                                       NGX_HTTP_SCEP_RETRY_AFTER);

    default:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}


static void
ngx_http_scep_body_handler(ngx_http_request_t *r)
{
    ngx_int_t             rc;
    ngx_str_t             body;
    ngx_http_scep_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_scep_module);

    rc = ngx_http_pki_request_body(r, ctx->conf.max_body, &body);
    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        /* over the cap after the first read: the body filter ended it and
         * the connection is not kept */
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "scep: %V from %V: body over %uz bytes",
                      &ctx->op_name, &r->connection->addr_text,
                      ngx_http_pki_body_max(r, ctx->conf.max_body));

        ngx_http_finalize_request(r,
                          ngx_http_pki_send_plain(r,
                                        NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                        &ngx_http_scep_too_large, 0));
        return;
    }

    if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        /* the body would have gone over pki_body_memory: ended there */
        ngx_http_finalize_request(r,
            ngx_http_pki_send_plain(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    &ngx_http_scep_busy,
                                    NGX_HTTP_SCEP_RETRY_AFTER));
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    ctx->req.body = body.data;
    ctx->req.body_len = body.len;

    ngx_http_scep_run(r, ctx);
}


/* Runs a POSTed request in the thread pool (inline if it needs no Redis or
 * key).  Called from the body handler: finalizes the body's reference. */
static void
ngx_http_scep_run(ngx_http_request_t *r, ngx_http_scep_ctx_t *ctx)
{
    ngx_int_t  rc;

    if (!pki_scep_op_blocking(ctx->req.op)) {
        pki_scep_handle(&ctx->conf, &ctx->req, &ctx->resp);
        ngx_http_finalize_request(r, ngx_http_scep_send(r, ctx));
        return;
    }

    if (ngx_http_pki_too_early(r)) {
        ngx_http_finalize_request(r, ngx_http_scep_too_early(r));
        return;
    }

    if (ngx_http_scep_hung(ctx)) {
        ngx_http_finalize_request(r,
            ngx_http_pki_send_plain(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    &ngx_http_scep_busy,
                                    NGX_HTTP_SCEP_RETRY_AFTER));
        return;
    }

    rc = ngx_http_pki_post_sign(r, ngx_http_scep_work, ngx_http_scep_done,
                                ctx);

    switch (rc) {

    case NGX_OK:
        /* drops our reference; the task holds one */
        ngx_http_finalize_request(r, NGX_DONE);
        return;

    case NGX_DECLINED:
        /* logged (rate-limited) by ngx_http_pki_post() */
        ngx_http_finalize_request(r,
            ngx_http_pki_send_plain(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    &ngx_http_scep_busy,
                                    NGX_HTTP_SCEP_RETRY_AFTER));
        return;

    default:
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }
}


/*
 * A PKIOperation decrypts with the RA key (the CA's when there is no RA),
 * signs its answer with it and may sign a certificate with the CA's: when
 * the token of either does not answer (logged by the pki module's
 * watchdog), 503 at once rather than one more pool thread waiting for it.
 */

static ngx_uint_t
ngx_http_scep_hung(ngx_http_scep_ctx_t *ctx)
{
    return ngx_http_pki_key_hung(pki_ca_key(ctx->conf.ca))
           || (ctx->conf.ra_key != NULL
               && ngx_http_pki_key_hung(ctx->conf.ra_key));
}


/* pool thread */

static void
ngx_http_scep_work(void *data)
{
    ngx_http_scep_ctx_t *ctx = data;

    pki_scep_handle(&ctx->conf, &ctx->req, &ctx->resp);
}


static void
ngx_http_scep_done(ngx_http_request_t *r, void *data)
{
    ngx_http_scep_ctx_t *ctx = data;

    ngx_http_finalize_request(r, ngx_http_scep_send(r, ctx));
}


static const char *
ngx_http_scep_fail_name(int fail)
{
    static const char  *names[] = {
        "badAlg", "badMessageCheck", "badRequest", "badTime", "badCertId"
    };

    if (fail >= 0 && fail < 5) {
        return names[fail];
    }

    return "-";
}


/* A PKIOperation (enrollment, renewal, poll) in TLS 1.3 early data: 425
 * Too Early (RFC 8470), as EST and Matter answer; a replay of the first
 * flight must not reach the CA */
static ngx_int_t
ngx_http_scep_too_early(ngx_http_request_t *r)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "scep: PKIOperation from %V refused: sent in TLS 1.3 "
                  "early data, which can be replayed (425)",
                  &r->connection->addr_text);

    return ngx_http_pki_send_plain(r, NGX_HTTP_PKI_TOO_EARLY,
                                   &ngx_http_scep_early, 0);
}


static ngx_int_t
ngx_http_scep_send(ngx_http_request_t *r, ngx_http_scep_ctx_t *ctx)
{
    u_char           *p;
    size_t            len;
    ngx_buf_t        *b;
    ngx_uint_t        level, status;
    pki_scep_resp_t  *resp;

    resp = &ctx->resp;

    status = resp->http_status;

    if (status < 200 || status > 599) {
        status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_pki_metrics_mark(r, "scep", pki_ca_name(ctx->conf.ca),
                              pki_template_name(ctx->conf.tmpl),
                              resp->res.status, resp->res.detail);

    if (status >= 400 || resp->pki_status == 2) {
        level = (status >= 500) ? NGX_LOG_ERR : NGX_LOG_INFO;

        ngx_log_error(level, r->connection->log, 0,
                      "scep: %V messageType %d transactionID \"%s\" from %V "
                      "failed (%s): %s%s%s%s",
                      &ctx->op_name, resp->message_type, resp->tid,
                      &r->connection->addr_text,
                      resp->pki_status == 2
                          ? ngx_http_scep_fail_name(resp->fail_info)
                          : "HTTP error",
                      resp->res.detail,
                      resp->res.log[0] ? " (" : "", resp->res.log,
                      resp->res.log[0] ? ")" : "");

    } else if (resp->message_type >= 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "scep: messageType %d transactionID \"%s\" from %V: "
                      "%s%s%s",
                      resp->message_type, resp->tid,
                      &r->connection->addr_text,
                      resp->pki_status == 3 ? "PENDING" : "SUCCESS",
                      resp->res.log[0] ? ", " : "", resp->res.log);
    }

    b = NULL;

    if (resp->body && resp->body_len) {
        b = ngx_create_temp_buf(r->pool, resp->body_len);
        if (b == NULL) {
            pki_scep_resp_free(resp);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        b->last = ngx_cpymem(b->pos, resp->body, resp->body_len);
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = b ? (off_t) (b->last - b->pos) : 0;

    if (resp->content_type && b) {
        len = ngx_strlen(resp->content_type);
        r->headers_out.content_type.data = (u_char *) resp->content_type;
        r->headers_out.content_type.len = len;
        r->headers_out.content_type_len = len;
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

    if (ctx->req.op == PKI_SCEP_PKIOPERATION) {
        if (ngx_http_pki_add_header(r, "Cache-Control",
                                    (u_char *) "no-store", 8)
            == NULL)
        {
            goto failed;
        }
    }

    pki_scep_resp_free(resp);

    if (b == NULL || r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
    }

    /* a body not read is discarded, not parsed as the next request
     * (see ngx_http_pki_send_plain()) */
    ngx_http_pki_body_unwanted(r);

    return ngx_http_pki_send_buf(r, b);

failed:

    pki_scep_resp_free(resp);

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


static void *
ngx_http_scep_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_scep_main_conf_t  *smcf;

    smcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_scep_main_conf_t));
    if (smcf == NULL) {
        return NULL;
    }

    return smcf;
}


static void *
ngx_http_scep_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_scep_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_scep_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->challenge = { 0, NULL };
     *     conf->conf = NULL;
     *     conf->file = { 0, NULL };
     *     conf->line = 0;
     */

    conf->enable = NGX_CONF_UNSET;
    conf->ca = NGX_CONF_UNSET_PTR;
    conf->tmpl = NGX_CONF_UNSET_PTR;
    conf->ra_cert = NGX_CONF_UNSET_PTR;
    conf->ra_key = NGX_CONF_UNSET_PTR;
    conf->next_ca = NGX_CONF_UNSET_PTR;
    conf->next_chain = NGX_CONF_UNSET_PTR;
    conf->dynamic = NGX_CONF_UNSET;
    conf->manual = NGX_CONF_UNSET;
    conf->accept_des = NGX_CONF_UNSET;
    conf->ca_chain = NGX_CONF_UNSET;
    conf->tid = NGX_CONF_UNSET_UINT;
    conf->max_body_size = NGX_CONF_UNSET_SIZE;
    conf->pending_ttl = NGX_CONF_UNSET;
    conf->pending_max = NGX_CONF_UNSET;
    conf->clock_skew = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_scep_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_scep_loc_conf_t *prev = parent;
    ngx_http_scep_loc_conf_t *conf = child;

    pki_result_t               res;
    pki_scep_conf_t           *sc;
    ngx_http_core_loc_conf_t  *clcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_ptr_value(conf->ca, prev->ca, NULL);
    ngx_conf_merge_ptr_value(conf->tmpl, prev->tmpl, NULL);
    ngx_conf_merge_ptr_value(conf->ra_cert, prev->ra_cert, NULL);
    ngx_conf_merge_ptr_value(conf->ra_key, prev->ra_key, NULL);
    ngx_conf_merge_ptr_value(conf->next_ca, prev->next_ca, NULL);
    ngx_conf_merge_ptr_value(conf->next_chain, prev->next_chain, NULL);
    ngx_conf_merge_str_value(conf->challenge, prev->challenge, "");
    ngx_conf_merge_value(conf->dynamic, prev->dynamic, 0);
    ngx_conf_merge_value(conf->manual, prev->manual, 0);
    ngx_conf_merge_value(conf->accept_des, prev->accept_des, 0);
    ngx_conf_merge_value(conf->ca_chain, prev->ca_chain, 0);
    ngx_conf_merge_uint_value(conf->tid, prev->tid, 0);
    ngx_conf_merge_size_value(conf->max_body_size, prev->max_body_size,
                              PKI_SCEP_MAX_BODY);
    ngx_conf_merge_sec_value(conf->pending_ttl, prev->pending_ttl,
                             7 * 86400);
    ngx_conf_merge_sec_value(conf->clock_skew, prev->clock_skew, 86400);
    ngx_conf_merge_value(conf->pending_max, prev->pending_max,
                         NGX_HTTP_SCEP_PENDING_MAX);

    if (conf->pending_max < 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "scep_pending_max must not be negative");
        return NGX_CONF_ERROR;
    }

    if (conf->line == 0) {
        conf->file = prev->file;
        conf->line = prev->line;
    }

    if (!conf->enable) {
        return NGX_CONF_OK;
    }

    if (conf->conf != NULL) {
        return NGX_CONF_OK;
    }

    if (conf->challenge.len == 0 && !conf->dynamic) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "scep location has neither \"scep_challenge\" "
                           "nor \"scep_dynamic_challenges on\": only "
                           "renewals can be served");
    }

    sc = ngx_pcalloc(cf->pool, sizeof(pki_scep_conf_t));
    if (sc == NULL) {
        return NGX_CONF_ERROR;
    }

    sc->ca = conf->ca;
    sc->tmpl = conf->tmpl;
    sc->ra_cert = conf->ra_cert;
    sc->ra_key = conf->ra_key;
    sc->next_ca = conf->next_ca;
    sc->next_chain = conf->next_chain;
    sc->challenge = conf->challenge.len ? conf->challenge.data : NULL;
    sc->challenge_len = conf->challenge.len;
    sc->dynamic = conf->dynamic ? 1 : 0;
    sc->manual = conf->manual ? 1 : 0;
    sc->tid_any = conf->tid ? 1 : 0;
    sc->accept_des = conf->accept_des ? 1 : 0;
    sc->ca_chain = conf->ca_chain ? 1 : 0;
    sc->max_body = conf->max_body_size;
    sc->pending_ttl = (long) conf->pending_ttl;
    sc->pending_max = (long) conf->pending_max;
    sc->max_skew = (long) conf->clock_skew;
    sc->crl_next_update = 3600;     /* set per request (GetCRL) */

    pki_result_init(&res);

    /* "nginx -s" opened no key to match the certificates with */
    if (!ngx_http_pki_signaller()
        && pki_scep_conf_check(sc, &res) != PKI_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "scep: %s%s%s%s",
                           res.detail, res.log[0] ? " (" : "", res.log,
                           res.log[0] ? ")" : "");
        return NGX_CONF_ERROR;
    }

    if (ngx_http_scep_check_anchor(cf, conf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    conf->conf = sc;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler == NULL) {
        clcf->handler = ngx_http_scep_handler;
    }

    /* GetCRL serves the CA's CRL: where no pki_crl location does, the
     * shortest lifetime of the SCEP locations is the CRL's (a nested
     * location that inherits scep and serves something else not
     * counted) */
    if (clcf->handler == ngx_http_scep_handler) {
        ngx_http_pki_crl_served(cf);
    }

    /* the module refuses a body over scep_max_body_size itself */
    ngx_http_pki_own_body_cap(cf, ngx_http_scep_handler,
                              conf->max_body_size);

    return NGX_CONF_OK;
}

/*
 * With "scep_ca_chain on" (and no RA) GetCACert serves the CA certificate
 * and its "chain" file, so that a client of an intermediate CA gets the
 * path to its root (RFC 8894 4.2.1.2).  When no path from the CA
 * certificate through that file reaches a self-signed certificate
 * (pki_ca_anchor_missing) it carries none; the root is nowhere else in
 * the CA's configuration, so this is said once per CA at nginx -t, with
 * the scep directive's file and line (the merge runs after the block).
 */
static ngx_int_t
ngx_http_scep_check_anchor(ngx_conf_t *cf, ngx_http_scep_loc_conf_t *slcf)
{
    char                        name[256];
    pki_ca_t                  **p;
    ngx_uint_t                  k;
    ngx_http_scep_main_conf_t  *smcf;

    if (!slcf->ca_chain || slcf->ra_cert != NULL || slcf->ca == NULL
        || pki_ca_cert(slcf->ca) == NULL)
    {
        return NGX_OK;
    }

    smcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_scep_module);

    if (smcf->anchor_checked == NULL) {
        smcf->anchor_checked = ngx_array_create(cf->pool, 4,
                                                sizeof(pki_ca_t *));
        if (smcf->anchor_checked == NULL) {
            return NGX_ERROR;
        }
    }

    p = smcf->anchor_checked->elts;

    for (k = 0; k < smcf->anchor_checked->nelts; k++) {
        if (p[k] == slcf->ca) {
            return NGX_OK;
        }
    }

    p = ngx_array_push(smcf->anchor_checked);
    if (p == NULL) {
        return NGX_ERROR;
    }

    *p = slcf->ca;

    if (!pki_ca_anchor_missing(slcf->ca, name, sizeof(name))) {
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                  "scep: CA \"%s\": its chain does not reach a root "
                  "(no certificate of \"%s\" in the CA's \"chain\" file), "
                  "so GetCACert with \"scep_ca_chain on\" carries no "
                  "trust anchor (RFC 8894 4.2.1.2): add the root to the "
                  "chain file in %V:%ui",
                  pki_ca_name(slcf->ca), name[0] != '\0' ? name : "?",
                  &slcf->file, slcf->line);

    return NGX_OK;
}


static ngx_int_t
ngx_http_scep_init(ngx_conf_t *cf)
{
    ngx_http_scep_main_conf_t  *smcf;

    smcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_scep_module);

    return ngx_http_pki_needs_redis(cf, "scep", &smcf->file, smcf->line);
}


/* scep CA TEMPLATE;  scep off; */

static char *
ngx_http_scep(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_scep_loc_conf_t *slcf = conf;

    char                       *rv;
    ngx_http_scep_main_conf_t  *smcf;

    smcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_scep_module);

    rv = ngx_http_pki_proto_conf(cf, &slcf->enable, &slcf->ca, &slcf->tmpl,
                                 &smcf->file, &smcf->line);

    if (rv == NGX_CONF_OK && slcf->enable) {
        slcf->file = cf->conf_file->file.name;
        slcf->line = cf->conf_file->line;

        /* set here too (not only in the merge, which nested locations
         * inherit it by) to refuse another content handler here */
        return ngx_http_pki_content(cf, cmd, ngx_http_scep_handler);
    }

    return rv;
}


/* scep_ra CERT KEY;  KEY: a PEM file or a pkcs11: URI */

static char *
ngx_http_scep_ra(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_scep_loc_conf_t *slcf = conf;

    ngx_str_t  *value;

    (void) cmd;

    if (slcf->ra_cert != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    slcf->ra_cert = ngx_http_scep_load_cert(cf, &value[1]);
    if (slcf->ra_cert == NULL) {
        return NGX_CONF_ERROR;
    }

    slcf->ra_key = ngx_http_pki_key(cf, &value[2], "scep_ra");
    if (slcf->ra_key == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* An OpenSSL failure reading a file of the configuration, as an [emerg]
 * with the directive's file and line (ngx_ssl_error() logs neither) and
 * OpenSSL's last error (the system's, for a file not there). */
static void
ngx_http_scep_conf_ssl_error(ngx_conf_t *cf, const char *what,
    ngx_str_t *file)
{
    char           buf[256];
    unsigned long  e;

    e = ERR_peek_last_error();
    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
    }
    ERR_clear_error();

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s \"%V\"%s%s", what, file,
                       e != 0 ? ": " : "", e != 0 ? buf : "");
}


/* scep_next_ca FILE;  the next CA certificate first, then any further
 * certificates of the rollover (the next RA, intermediates), PEM */

static char *
ngx_http_scep_next_ca(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_scep_loc_conf_t *slcf = conf;

    BIO                 *bio;
    X509                *x;
    ngx_str_t           *value, file;
    unsigned long        err;
    STACK_OF(X509)      *chain;
    ngx_pool_cleanup_t  *cln;

    (void) cmd;

    if (slcf->next_ca != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    slcf->next_ca = ngx_http_scep_load_cert(cf, &value[1]);
    if (slcf->next_ca == NULL) {
        return NGX_CONF_ERROR;
    }

    slcf->next_chain = NULL;

    /* the rest of the file */

    file = value[1];

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    bio = BIO_new_file((char *) file.data, "r");
    if (bio == NULL) {
        ngx_http_scep_conf_ssl_error(cf, "cannot open", &file);
        return NGX_CONF_ERROR;
    }

    chain = sk_X509_new_null();
    cln = ngx_pool_cleanup_add(cf->pool, 0);

    if (chain == NULL || cln == NULL) {
        sk_X509_free(chain);
        BIO_free(bio);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_scep_chain_cleanup;
    cln->data = chain;

    ERR_clear_error();

    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);   /* the first, again */
    X509_free(x);

    for ( ;; ) {
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x == NULL) {
            break;
        }

        if (!sk_X509_push(chain, x)) {
            X509_free(x);
            BIO_free(bio);
            return NGX_CONF_ERROR;
        }

        if (sk_X509_num(chain) > 16) {
            BIO_free(bio);
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "more than 17 certificates in \"%V\"",
                               &file);
            return NGX_CONF_ERROR;
        }
    }

    BIO_free(bio);

    /* the end of the file, or a broken PEM block */
    err = ERR_peek_last_error();
    if (err != 0 && !(ERR_GET_LIB(err) == ERR_LIB_PEM
                      && ERR_GET_REASON(err) == PEM_R_NO_START_LINE))
    {
        ngx_http_scep_conf_ssl_error(cf, "no PEM certificate in", &file);
        return NGX_CONF_ERROR;
    }

    ERR_clear_error();

    if (sk_X509_num(chain) > 0) {
        slcf->next_chain = chain;
    }

    return NGX_CONF_OK;
}


/* scep_challenge VALUE;  scep_challenge file=PATH; */

static char *
ngx_http_scep_challenge(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_scep_loc_conf_t *slcf = conf;

    u_char              *p;
    ssize_t              n;
    ngx_fd_t             fd;
    ngx_str_t           *value, file;
    ngx_file_info_t      fi;
    ngx_pool_cleanup_t  *cln;
    u_char               buf[PKI_SCEP_CHALLENGE_MAX + 2];

    (void) cmd;

    if (slcf->challenge.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strncmp(value[1].data, "file=", 5) != 0) {
        if (value[1].len == 0 || value[1].len > PKI_SCEP_CHALLENGE_MAX) {
            return "must be 1-255 characters";
        }

        slcf->challenge = value[1];
        return NGX_CONF_OK;
    }

    file.data = value[1].data + 5;
    file.len = value[1].len - 5;

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(file.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &file);
        return NGX_CONF_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR || !ngx_is_file(&fi)) {
        ngx_close_file(fd);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "challenge file \"%V\" is no regular file", &file);
        return NGX_CONF_ERROR;
    }

    if (ngx_file_size(&fi) > (off_t) sizeof(buf)) {
        ngx_close_file(fd);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "challenge file \"%V\" is too large", &file);
        return NGX_CONF_ERROR;
    }

    n = ngx_read_fd(fd, buf, sizeof(buf));
    ngx_close_file(fd);

    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
        n--;
    }

    if (n <= 0 || n > PKI_SCEP_CHALLENGE_MAX) {
        ngx_explicit_memzero(buf, sizeof(buf));
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "challenge file \"%V\" must hold 1-255 "
                           "characters", &file);
        return NGX_CONF_ERROR;
    }

    p = ngx_pnalloc(cf->pool, n);
    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (p == NULL || cln == NULL) {
        ngx_explicit_memzero(buf, sizeof(buf));
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(p, buf, n);
    ngx_explicit_memzero(buf, sizeof(buf));

    slcf->challenge.data = p;
    slcf->challenge.len = n;

    cln->handler = ngx_http_scep_wipe_cleanup;
    cln->data = &slcf->challenge;

    return NGX_CONF_OK;
}


/* scep_clock_skew TIME | off; */

static char *
ngx_http_scep_clock_skew(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_scep_loc_conf_t *slcf = conf;

    char       *rv;
    ngx_str_t  *value;

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (slcf->clock_skew != NGX_CONF_UNSET) {
            return "is duplicate";
        }

        slcf->clock_skew = 0;
        return NGX_CONF_OK;
    }

    rv = ngx_conf_set_sec_slot(cf, cmd, conf);

    /* 0 is how "off" is kept: as a time it would read as the tightest
     * check, and be none */
    if (rv == NGX_CONF_OK && slcf->clock_skew == 0) {
        return "of 0 turns the signingTime check off: write \"off\" for "
               "that";
    }

    return rv;
}


/*
 * scep_max_body_size SIZE: 1k..1m, as est_max_body_size.  0 refused
 * every POST (413) without a word at nginx -t; a pkiMessage, even with an
 * RSA-16384 signer and many names, is far below 1m.
 */

static char *
ngx_http_scep_max_body_size(ngx_conf_t *cf, void *post, void *data)
{
    size_t  *sp = data;

    if (*sp < 1024 || *sp > 1024 * 1024) {
        return "must be 1k..1m";
    }

    return NGX_CONF_OK;
}


/* 0 would be taken for the default (7d) by the core: refused here */
static char *
ngx_http_scep_pending_ttl(ngx_conf_t *cf, void *post, void *data)
{
    time_t  *tp = data;

    if (*tp < 1) {
        return "must be at least 1s";
    }

    return NGX_CONF_OK;
}


static X509 *
ngx_http_scep_load_cert(ngx_conf_t *cf, ngx_str_t *name)
{
    BIO                 *bio;
    X509                *x;
    ngx_str_t            file;
    ngx_pool_cleanup_t  *cln;

    file = *name;

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NULL;
    }

    bio = BIO_new_file((char *) file.data, "r");
    if (bio == NULL) {
        ngx_http_scep_conf_ssl_error(cf, "cannot open", &file);
        return NULL;
    }

    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);

    if (x == NULL) {
        ngx_http_scep_conf_ssl_error(cf, "no PEM certificate in", &file);
        return NULL;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        X509_free(x);
        return NULL;
    }

    cln->handler = ngx_http_scep_x509_cleanup;
    cln->data = x;

    return x;
}


static void
ngx_http_scep_x509_cleanup(void *data)
{
    X509_free(data);
}


static void
ngx_http_scep_chain_cleanup(void *data)
{
    sk_X509_pop_free(data, X509_free);
}


static void
ngx_http_scep_wipe_cleanup(void *data)
{
    ngx_str_t  *s = data;

    ngx_explicit_memzero(s->data, s->len);
}
