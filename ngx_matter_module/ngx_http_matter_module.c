
/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * ngx_http_matter_module: Matter factory DAC batches and NOC issuance.
 *
 *   location = /matter/dac/batch { matter_dac_batch PAI_CA matter-dac; }
 *   location = /matter/noc       { matter_noc ICAC_CA matter-noc; }
 *
 * The glue reads the JSON body (capped), runs pki_matter_handle() in the
 * thread pool and sends the JSON answer.  Authentication is nginx's own
 * (auth_basic, auth_request, ssl_verify_client): the identity is the
 * auth_basic user, or matter_identity when set.
 *
 * Needs ngx_http_pki_module loaded first (load_module order).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_pki_module.h"


#define NGX_HTTP_MATTER_RETRY_AFTER  5
#define NGX_HTTP_MATTER_BODY_BUSY    "request bodies over pki_body_memory"
#define NGX_HTTP_MATTER_BATCH_BODY   (2 * 1024 * 1024)
#define NGX_HTTP_MATTER_NOC_BODY     (16 * 1024)


typedef struct {
    pki_matter_op_t            op;
    pki_ca_t                  *ca;
    pki_template_t            *tmpl;
    size_t                     max_body_size;
    ngx_int_t                  threads;
    ngx_http_complex_value_t  *identity;
} ngx_http_matter_loc_conf_t;


typedef struct {
    ngx_str_t                  file;
    ngx_uint_t                 line;
} ngx_http_matter_main_conf_t;


typedef struct {
    pki_matter_conf_t          conf;
    pki_matter_req_t           req;
    pki_matter_resp_t          resp;
} ngx_http_matter_ctx_t;


static ngx_int_t ngx_http_matter_handler(ngx_http_request_t *r);
static void ngx_http_matter_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_matter_fill_request(ngx_http_request_t *r,
    ngx_http_matter_ctx_t *ctx);
static void ngx_http_matter_work(void *data);
static void ngx_http_matter_done(ngx_http_request_t *r, void *data);
static size_t ngx_http_matter_body_max(ngx_http_matter_loc_conf_t *mlcf);
static ngx_int_t ngx_http_matter_too_large(ngx_http_request_t *r,
    ngx_http_matter_ctx_t *ctx);
static ngx_int_t ngx_http_matter_busy(ngx_http_request_t *r,
    ngx_http_matter_ctx_t *ctx, const char *why);
static ngx_int_t ngx_http_matter_too_early(ngx_http_request_t *r);
static ngx_int_t ngx_http_matter_send(ngx_http_request_t *r,
    ngx_http_matter_ctx_t *ctx);
static void ngx_http_matter_wipe(void *data);
static void ngx_http_matter_undelivered(ngx_http_request_t *r);
static void ngx_http_matter_sent_check(void *data);
static void ngx_http_matter_log_unsettled(ngx_http_request_t *r,
    const char *msg);

static void *ngx_http_matter_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_matter_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_matter_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_matter_init(ngx_conf_t *cf);

static char *ngx_http_matter_endpoint(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_conf_num_bounds_t  ngx_http_matter_threads_bounds = {
    ngx_conf_check_num_bounds, 1, 64
};


static ngx_command_t  ngx_http_matter_commands[] = {

    { ngx_string("matter_dac_batch"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_matter_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      PKI_MATTER_OP_DAC_BATCH,
      NULL },

    { ngx_string("matter_noc"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_matter_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      PKI_MATTER_OP_NOC,
      NULL },

    { ngx_string("matter_max_body_size"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_matter_loc_conf_t, max_body_size),
      NULL },

    { ngx_string("matter_batch_threads"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_matter_loc_conf_t, threads),
      &ngx_http_matter_threads_bounds },

    { ngx_string("matter_identity"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_matter_loc_conf_t, identity),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_matter_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_matter_init,                  /* postconfiguration */

    ngx_http_matter_create_main_conf,      /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_matter_create_loc_conf,       /* create location configuration */
    ngx_http_matter_merge_loc_conf         /* merge location configuration */
};


ngx_module_t  ngx_http_matter_module = {
    NGX_MODULE_V1,
    &ngx_http_matter_module_ctx,           /* module context */
    ngx_http_matter_commands,              /* module directives */
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


/* matter_max_body_size, or the operation's default */

static size_t
ngx_http_matter_body_max(ngx_http_matter_loc_conf_t *mlcf)
{
    if (mlcf->max_body_size) {
        return mlcf->max_body_size;
    }

    return mlcf->op == PKI_MATTER_OP_NOC ? NGX_HTTP_MATTER_NOC_BODY
                                         : NGX_HTTP_MATTER_BATCH_BODY;
}


static ngx_int_t
ngx_http_matter_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_http_matter_ctx_t       *ctx;
    ngx_http_matter_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_matter_module);

    if (mlcf->op == PKI_MATTER_OP_UNKNOWN) {
        return NGX_DECLINED;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_matter_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->conf.ca = mlcf->ca;
    ctx->conf.tmpl = mlcf->tmpl;
    ctx->conf.redis = ngx_http_pki_redis(r);
    ctx->conf.max_body = ngx_http_matter_body_max(mlcf);
    ctx->conf.threads = (int) mlcf->threads;

    ctx->req.op = mlcf->op;

    ngx_http_set_ctx(r, ctx, ngx_http_matter_module);

    rc = ngx_http_pki_read_body(r, ctx->conf.max_body,
                                ngx_http_matter_body_handler);

    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        ngx_http_pki_body_refused(r, 0);
        return ngx_http_matter_too_large(r, ctx);
    }

    if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        /* pki_body_memory is used up: nothing read */
        ngx_http_pki_body_refused(r, 0);
        return ngx_http_matter_busy(r, ctx, NGX_HTTP_MATTER_BODY_BUSY);
    }

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_matter_body_handler(ngx_http_request_t *r)
{
    ngx_int_t               rc;
    ngx_str_t               body;
    ngx_http_matter_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_matter_module);

    rc = ngx_http_pki_request_body(r, ctx->conf.max_body, &body);
    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        /* over the cap after the first read: the body filter ended it and
         * the connection is not kept */
        ngx_http_finalize_request(r, ngx_http_matter_too_large(r, ctx));
        return;
    }

    if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        /* the body would have gone over pki_body_memory: ended there */
        ngx_http_finalize_request(r,
            ngx_http_matter_busy(r, ctx, NGX_HTTP_MATTER_BODY_BUSY));
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    /* a POST sent in TLS 1.3 early data can be replayed: each copy
     * would issue its certificates */
    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))
        && ngx_http_pki_too_early(r))
    {
        ngx_http_finalize_request(r, ngx_http_matter_too_early(r));
        return;
    }

    ctx->req.body = body.data;
    ctx->req.body_len = body.len;

    if (ngx_http_matter_fill_request(r, ctx) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (r->method == NGX_HTTP_POST
        && ngx_http_pki_key_hung(pki_ca_key(ctx->conf.ca)))
    {
        /* DACs and NOCs are signed with the location's CA key, whose
         * token does not answer (logged once by the pki module's
         * watchdog): 503 with Retry-After at once, not a thread more
         * waiting for it */
        ngx_http_finalize_request(r,
            ngx_http_matter_busy(r, ctx, "the CA key's token is hung"));
        return;
    }

    /* a POST signs with the CA key: in the signing pool, if any */
    rc = r->method == NGX_HTTP_POST
         ? ngx_http_pki_post_sign(r, ngx_http_matter_work,
                                  ngx_http_matter_done, ctx)
         : ngx_http_pki_post(r, ngx_http_matter_work, ngx_http_matter_done,
                             ctx);

    switch (rc) {

    case NGX_OK:
        /* drops the reference of the body reading; the task holds one */
        ngx_http_finalize_request(r, NGX_DONE);
        return;

    case NGX_DECLINED:
        ngx_http_finalize_request(r,
            ngx_http_matter_busy(r, ctx, "thread pool queue full"));
        return;

    default:
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }
}


static ngx_int_t
ngx_http_matter_fill_request(ngx_http_request_t *r,
    ngx_http_matter_ctx_t *ctx)
{
    ngx_str_t                    user;
    pki_matter_req_t            *req;
    ngx_http_matter_loc_conf_t  *mlcf;

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

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_matter_module);

    if (mlcf->identity) {
        if (ngx_http_complex_value(r, mlcf->identity, &user) != NGX_OK) {
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

    return NGX_OK;
}


/* pool thread */

static void
ngx_http_matter_work(void *data)
{
    ngx_http_matter_ctx_t *ctx = data;

    pki_matter_handle(&ctx->conf, &ctx->req, &ctx->resp);
}


static void
ngx_http_matter_done(ngx_http_request_t *r, void *data)
{
    ngx_http_matter_ctx_t *ctx = data;

    ngx_http_finalize_request(r, ngx_http_matter_send(r, ctx));
}


/* 413 as the API's other errors: JSON, not nginx's HTML page */

static ngx_int_t
ngx_http_matter_too_large(ngx_http_request_t *r, ngx_http_matter_ctx_t *ctx)
{
    u_char  *p;
    size_t   len, max;

    max = ngx_http_pki_body_max(r, ctx->conf.max_body);

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "matter: request from %V failed: request body is larger "
                  "than %uz bytes", &r->connection->addr_text, max);

    len = sizeof("{\"error\":\"request body is larger than  bytes\"}\n")
          - 1 + NGX_SIZE_T_LEN;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_sprintf(p, "{\"error\":\"request body is larger than %uz "
                      "bytes\"}\n", max)
          - p;

    return ngx_http_pki_send_json(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, p,
                                  len);
}


/*
 * 503 when the thread pool's queue is full, the body would go over
 * pki_body_memory or the CA key's token is hung, as the API's other
 * errors: JSON, with Retry-After.
 * The warn lines of ngx_http_pki_post() and of the body budget count the
 * shed requests once a second (a hung token: the watchdog's one line);
 * the line for each is at info level, so that a storm does not write one
 * error line per request.
 */

static ngx_int_t
ngx_http_matter_busy(ngx_http_request_t *r, ngx_http_matter_ctx_t *ctx,
    const char *why)
{
    u_char  *p;

    static u_char  busy[] = "{\"error\":\"busy, retry later\"}\n";

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "matter: request from %V failed: busy, retry later "
                  "(%s)", &r->connection->addr_text, why);

    ngx_http_pki_metrics_mark(r, "matter", pki_ca_name(ctx->conf.ca),
                              pki_template_name(ctx->conf.tmpl),
                              PKI_UNAVAILABLE, "busy, retry later");

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_pki_add_header(r, "Retry-After", p,
                                ngx_sprintf(p, "%d",
                                            NGX_HTTP_MATTER_RETRY_AFTER)
                                - p)
        == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_pki_send_json(r, NGX_HTTP_SERVICE_UNAVAILABLE, busy,
                                  sizeof(busy) - 1);
}


/* 425 for a POST in TLS 1.3 early data (ngx_http_pki_too_early()) */

static ngx_int_t
ngx_http_matter_too_early(ngx_http_request_t *r)
{
    static u_char  early[] = "{\"error\":\"too early: send the request "
                             "again after the TLS handshake\"}\n";

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "matter: request from %V refused: sent in TLS 1.3 early "
                  "data, which can be replayed (425)",
                  &r->connection->addr_text);

    return ngx_http_pki_send_json(r, NGX_HTTP_PKI_TOO_EARLY, early,
                                  sizeof(early) - 1);
}


static ngx_int_t
ngx_http_matter_send(ngx_http_request_t *r, ngx_http_matter_ctx_t *ctx)
{
    u_char              *p;
    size_t               len;
    ngx_int_t            rc;
    ngx_buf_t           *b;
    ngx_uint_t           level, status, secret;
    pki_matter_resp_t   *resp;
    ngx_pool_cleanup_t  *cln;

    resp = &ctx->resp;

    status = resp->http_status;
    if (status < 200 || status > 599) {
        status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_pki_metrics_mark(r, "matter", pki_ca_name(ctx->conf.ca),
                              pki_template_name(ctx->conf.tmpl),
                              resp->res.status, resp->res.detail);

    if (status >= 400) {
        level = (status >= 500) ? NGX_LOG_ERR : NGX_LOG_INFO;

        ngx_log_error(level, r->connection->log, 0,
                      "matter: request from %V failed: %s%s%s%s",
                      &r->connection->addr_text, resp->res.detail,
                      resp->res.log[0] ? " (" : "", resp->res.log,
                      resp->res.log[0] ? ")" : "");

    } else {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "matter: %s for \"%s\" from %V", resp->res.log,
                      ctx->req.user ? ctx->req.user : "",
                      &r->connection->addr_text);
    }

    if (resp->unsettled != NULL) {
        ngx_http_matter_log_unsettled(r, resp->unsettled);
    }

    b = NULL;

    if (resp->body && resp->body_len) {
        b = ngx_create_temp_buf(r->pool, resp->body_len);
        if (b == NULL) {
            pki_matter_resp_free(resp);
            goto undelivered;
        }

        b->last = ngx_cpymem(b->pos, resp->body, resp->body_len);

        /* a batch with server keygen holds private keys: wipe them */
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            ngx_explicit_memzero(b->start, b->end - b->start);
            pki_matter_resp_free(resp);
            goto undelivered;
        }

        cln->handler = ngx_http_matter_wipe;
        cln->data = b;
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = b ? (off_t) (b->last - b->pos) : 0;

    if (b) {
        ngx_str_set(&r->headers_out.content_type, "application/json");
        r->headers_out.content_type_len = sizeof("application/json") - 1;
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

    /* RFC 9110 15.5.6: a 405 lists the methods the resource takes */
    if (resp->allow != NULL
        && ngx_http_pki_add_header(r, "Allow", (u_char *) resp->allow,
                                   ngx_strlen(resp->allow))
           == NULL)
    {
        goto failed;
    }

    if (ngx_http_pki_add_header(r, "Cache-Control", (u_char *) "no-store",
                                8)
        == NULL)
    {
        goto failed;
    }

    secret = resp->secret;

    pki_matter_resp_free(resp);

    if (b == NULL) {
        r->header_only = 1;

    } else if (secret) {
        /* the answer holds the new private keys: no copy in the TLS
         * buffer, which nginx frees without wiping */
        ngx_http_pki_send_unbuffered(r);
    }

    /* a body not read is discarded, not parsed as the next request
     * (see ngx_http_pki_send_plain()) */
    ngx_http_pki_body_unwanted(r);

    rc = ngx_http_pki_send_buf(r, b);

    if (rc == NGX_ERROR && status < 300) {
        ngx_http_matter_undelivered(r);
    }

    /* what nginx could not send at once goes later, from its writer: a
     * reset or send_timeout then ends the request with nobody told, so
     * the request's end looks at how it ended */
    if (rc == NGX_AGAIN && status < 300) {
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln != NULL) {
            cln->handler = ngx_http_matter_sent_check;
            cln->data = r;
        }
    }

    return rc;

failed:

    pki_matter_resp_free(resp);

undelivered:

    if (status < 300) {
        ngx_http_matter_undelivered(r);
    }

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


/* At the end of a request whose answer was still being sent when the
 * handler returned: an error or a timeout on the connection since means
 * the rest of it did not go out. */
static void
ngx_http_matter_sent_check(void *data)
{
    ngx_http_request_t *r = data;

    if (r->connection->error || r->connection->timedout) {
        ngx_http_matter_undelivered(r);
    }
}


/* An answer of issued certificates that did not reach the client: they
 * stay issued (recorded, each in the transaction log); a retry of the
 * same CSRs gets them again (the PAI's index of device keys), a keygen
 * batch's retry issues new ones beside them.  The operator hears of it. */
static void
ngx_http_matter_undelivered(ngx_http_request_t *r)
{
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "matter: the answer to %V could not be sent: the "
                  "certificates it holds stay issued (see the transaction "
                  "log); a retry of its CSRs gets them again, a keygen "
                  "batch's retry issues others", &r->connection->addr_text);
}


static void
ngx_http_matter_wipe(void *data)
{
    ngx_buf_t *b = data;

    ngx_explicit_memzero(b->start, b->end - b->start);
}


/* The serials a failed DAC batch issued and could not withdraw
 * (pki_matter_resp_t), for the operator to revoke: at error, in lines
 * under the error log's size (NGX_MAX_ERROR_STR), cut between serials, as
 * a 1000-DAC batch's list is longer. */
static void
ngx_http_matter_log_unsettled(ngx_http_request_t *r, const char *msg)
{
    size_t  len, off, part, k;

    len = ngx_strlen(msg);

    for (off = 0; off < len; off += part) {
        part = ngx_min(len - off, 1500);

        if (off + part < len) {
            for (k = part; k > 0 && msg[off + k] != ' '; k--) {
                /* void */
            }

            if (k > 0) {
                part = k;
            }
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "matter: %s%*s",
                      off ? "(continued)" : "", part, msg + off);
    }
}


static void *
ngx_http_matter_create_main_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_matter_main_conf_t));
}


static void *
ngx_http_matter_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_matter_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_matter_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->op = PKI_MATTER_OP_UNKNOWN;
     *     conf->ca = NULL;
     *     conf->tmpl = NULL;
     *     conf->identity = NULL;
     */

    conf->max_body_size = NGX_CONF_UNSET_SIZE;
    conf->threads = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_matter_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_matter_loc_conf_t *prev = parent;
    ngx_http_matter_loc_conf_t *conf = child;

    /* 0: the operation's default (2m for a batch, 16k for a NOC) */
    ngx_conf_merge_size_value(conf->max_body_size, prev->max_body_size, 0);

    /* a batch of 1000 CSRs is under 2m; far above, one request could
     * take a worker's whole pki_body_memory */
    if (conf->max_body_size != 0
        && (conf->max_body_size < 1024
            || conf->max_body_size > 16 * 1024 * 1024))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "matter_max_body_size must be 1k..16m (or 0 "
                           "for the default)");
        return NGX_CONF_ERROR;
    }
    ngx_conf_merge_value(conf->threads, prev->threads, 32);

    /* an if or limit_except block in the location answers too (the
     * shared module gives it the handler) */
    if (conf->op == PKI_MATTER_OP_UNKNOWN) {
        conf->op = prev->op;
        conf->ca = prev->ca;
        conf->tmpl = prev->tmpl;
    }

    if (conf->identity == NULL) {
        conf->identity = prev->identity;
    }

    /* the module refuses a body over its cap itself, in JSON */
    ngx_http_pki_own_body_cap(cf, ngx_http_matter_handler,
                              ngx_http_matter_body_max(conf));

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_matter_init(ngx_conf_t *cf)
{
    ngx_http_matter_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_matter_module);

    if (mmcf->line && !ngx_http_pki_has_redis(cf)) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"matter_dac_batch\"/\"matter_noc\" need "
                      "\"pki_redis\" in http{} in %V:%ui",
                      &mmcf->file, mmcf->line);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* matter_dac_batch CA TEMPLATE; matter_noc CA TEMPLATE; */

static char *
ngx_http_matter_endpoint(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_matter_loc_conf_t *mlcf = conf;

    ngx_str_t                    *value;
    pki_matter_type_t             want;
    ngx_http_matter_main_conf_t  *mmcf;

    if (mlcf->op != PKI_MATTER_OP_UNKNOWN) {
        return "is duplicate";
    }

    value = cf->args->elts;

    mlcf->ca = ngx_http_pki_find_ca(cf, &value[1]);
    if (mlcf->ca == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown CA \"%V\" (declare pki_ca before use)",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    mlcf->tmpl = ngx_http_pki_find_template(cf, &value[2]);
    if (mlcf->tmpl == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown template \"%V\" "
                           "(declare pki_template before use)", &value[2]);
        return NGX_CONF_ERROR;
    }

    want = cmd->offset == PKI_MATTER_OP_NOC ? PKI_MATTER_NOC : PKI_MATTER_DAC;

    if (pki_matter_template_type(mlcf->tmpl) != want) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "template \"%V\" is not a Matter %s template "
                           "(\"matter-%s\" or \"matter %s;\")", &value[2],
                           pki_matter_type_name(want),
                           pki_matter_type_name(want),
                           pki_matter_type_name(want));
        return NGX_CONF_ERROR;
    }

    if (!pki_ca_allows(mlcf->ca, mlcf->tmpl)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "CA \"%V\" does not allow template \"%V\"",
                           &value[1], &value[2]);
        return NGX_CONF_ERROR;
    }

    if (want == PKI_MATTER_NOC) {
        pki_result_t  res;

        pki_result_init(&res);
        if (pki_matter_noc_ca_check(mlcf->ca, &res) != PKI_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "CA \"%V\": %s",
                               &value[1], res.detail);
            return NGX_CONF_ERROR;
        }
    }

    mlcf->op = (pki_matter_op_t) cmd->offset;

    ngx_http_pki_metrics_location(cf, "matter");

    if (ngx_http_pki_content(cf, cmd, ngx_http_matter_handler)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_matter_module);

    if (mmcf->line == 0) {
        mmcf->file = cf->conf_file->file.name;
        mmcf->line = cf->conf_file->line;
    }

    return NGX_CONF_OK;
}
