
/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * ngx_http_acme_module: an ACME server (RFC 8555) in one location.  The
 * glue turns a request below the location into a pki_acme_req_t, runs
 * pki_acme_handle() in the thread pool (every ACME resource touches
 * Redis), sends the pki_acme_resp_t back, and then runs the challenge
 * validation the response asked for as a detached pool task: the client
 * gets "processing" at once and polls.
 *
 * Needs ngx_http_pki_module loaded first (load_module order).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_pki_module.h"


/* acme_validation_timeout at most: a validation job holds a thread of the
 * shared pool up to twice this long */
#define NGX_HTTP_ACME_TIMEOUT_MAX  300000

/* acme_validation_jobs by default; and the jobs that may wait for one of
 * those slots in a worker (more are dropped: a poll restarts them) */
#define NGX_HTTP_ACME_JOBS          4
#define NGX_HTTP_ACME_JOBS_WAITING  10000
#define NGX_HTTP_ACME_JOBS_ACCT     1000    /* ... of one account */
#define NGX_HTTP_ACME_PENDING_MAX   1000    /* pending authzs of an account */

/* a poll of an authorization or challenge whose validation this worker
 * runs waits for it this long at most (ms), and so many polls per
 * validation (more are served at once) */
#define NGX_HTTP_ACME_PARK_MAX      500
#define NGX_HTTP_ACME_PARK_JOB      8
#define NGX_HTTP_ACME_PARK_ID       64      /* longest authorization id */


typedef struct {
    ngx_str_t                  name;
    ngx_str_t                  description; /* or empty: the name */
    ngx_str_t                  tmpl_name;
    pki_template_t            *tmpl;
    ngx_str_t                  file;        /* where it was declared, for */
    ngx_uint_t                 line;        /* the check against the CA */
} ngx_http_acme_profile_t;


typedef struct {
    ngx_flag_t                 enable;
    pki_ca_t                  *ca;
    pki_template_t            *tmpl;
    ngx_array_t               *profiles;    /* ngx_http_acme_profile_t */
    ngx_str_t                  prefix;      /* the location, no "/" at end */
    ngx_str_t                  base_url;    /* acme_base_url, or empty */

    ngx_flag_t                 eab_required;
    ngx_str_t                  tos;
    ngx_str_t                  website;
    ngx_str_t                  ari_explanation;
    ngx_array_t               *caa;         /* ngx_str_t */
    time_t                     authz_reuse;
    time_t                     nonce_ttl;
    time_t                     order_ttl;
    size_t                     max_body_size;
    ngx_int_t                  orders_per_hour;
    ngx_int_t                  pending_authz_max;
    ngx_int_t                  accounts_per_hour;

    ngx_uint_t                 http_port;
    ngx_uint_t                 tls_port;
    ngx_str_t                  resolver;
    ngx_str_t                  resolve_to;
    ngx_flag_t                 allow_private;
    ngx_msec_t                 validation_timeout;
    ngx_flag_t                 caa_check;

    pki_redis_t               *state_redis; /* acme_redis, or NULL */

    pki_acme_conf_t           *conf;        /* built at merge time */
} ngx_http_acme_loc_conf_t;


typedef struct {
    ngx_str_t                  file;        /* first acme directive, for */
    ngx_uint_t                 line;        /* the "needs pki_redis" error */
    ngx_int_t                  jobs;        /* acme_validation_jobs      */
    long                       list_keep;   /* longest validity of every
                                               ACME location's templates */
} ngx_http_acme_main_conf_t;


typedef struct {
    pki_acme_conf_t            conf;
    pki_acme_req_t             req;
    pki_acme_resp_t            resp;

    /* a problem the glue refuses with (pki_acme_refuse) */
    int                        refuse_status;
    const char                *refuse_type;
    const char                *refuse_detail;
    unsigned                   shed:1;      /* queue full: no task, no log */
} ngx_http_acme_ctx_t;


/* An account's validation jobs in a worker: its waiting ones in order,
 * and how many run.  Known while it has either. */
typedef struct {
    ngx_str_node_t             sn;          /* key: crc32, str: its id    */
    ngx_queue_t                ring;        /* in ..._jobs_accts while it
                                               has jobs waiting          */
    ngx_queue_t                jobs;        /* those jobs, in order       */
    ngx_queue_t                inflight;    /* every job waiting or
                                               running (their polls wait
                                               for them)                 */
    ngx_uint_t                 waiting;
    ngx_uint_t                 running;
} ngx_http_acme_jobs_acct_t;


typedef struct {
    pki_acme_conf_t            conf;
    pki_acme_job_t            *job;
    pki_result_t               res;
    ngx_thread_pool_t         *tp;
    ngx_queue_t                queue;       /* waiting for a slot        */
    ngx_http_acme_jobs_acct_t *acct;
    ngx_queue_t                inflight;    /* in acct->inflight         */
    ngx_queue_t                parked;      /* ngx_http_acme_park_t      */
    ngx_uint_t                 nparked;
    u_char                     aid[NGX_HTTP_ACME_PARK_ID + 1];
} ngx_http_acme_job_ctx_t;


/* A poll parked until its validation ends (or the timer fires) */
typedef struct {
    ngx_queue_t                queue;       /* in the job's parked        */
    ngx_http_request_t        *request;
    ngx_http_acme_job_ctx_t   *jctx;
    ngx_event_t                timer;
} ngx_http_acme_park_t;


/*
 * A validation job holds a thread of the pool every PKI request of the
 * worker shares for up to twice acme_validation_timeout (a target that
 * accepts and stalls).  Each worker runs at most acme_validation_jobs of
 * them at once, fewer while finalizes re-check CAA (the core counts both
 * against that budget: pki_acme_outbound_take); the others wait here, not
 * in the pool's queue, so challenges posted in bulk never starve
 * enrollment, OCSP or ACME requests.  They wait per account, in order,
 * and the accounts take turns (ngx_http_acme_jobs_drain), so one
 * account's bulk of challenges against targets that stall does not hold
 * up the others'.  A job that waited long checks first whether its
 * challenge still wants it (pki_acme_job_run).
 */
static ngx_uint_t         ngx_http_acme_jobs_max = NGX_HTTP_ACME_JOBS;
static ngx_uint_t         ngx_http_acme_jobs_running;
static ngx_uint_t         ngx_http_acme_jobs_nwaiting;
static ngx_queue_t        ngx_http_acme_jobs_accts;    /* the turn order */
static ngx_rbtree_t       ngx_http_acme_jobs_tree;     /* accounts by id */
static ngx_rbtree_node_t  ngx_http_acme_jobs_sentinel;
static ngx_event_t  ngx_http_acme_jobs_retry;
/*
 * Armed (not cancelable) while validations run: a worker that exits
 * (reload, quit) waits for them idle in its event loop.  Without it the
 * worker went on to exit, where nginx's thread pool teardown spins until
 * every pool thread is free: a CPU for up to twice
 * acme_validation_timeout, and the results never logged.
 */
static ngx_event_t  ngx_http_acme_jobs_guard;
static ngx_uint_t   ngx_http_acme_exited;       /* in exit_process */


static ngx_int_t ngx_http_acme_handler(ngx_http_request_t *r);
static void ngx_http_acme_body_handler(ngx_http_request_t *r);
static void ngx_http_acme_post(ngx_http_request_t *r,
    ngx_http_acme_ctx_t *ctx);
static ngx_int_t ngx_http_acme_park(ngx_http_request_t *r,
    ngx_http_acme_ctx_t *ctx);
static void ngx_http_acme_park_timeout(ngx_event_t *ev);
static void ngx_http_acme_unpark(ngx_http_acme_park_t *pk, ngx_uint_t post);
static void ngx_http_acme_unpark_all(ngx_http_acme_job_ctx_t *jctx,
    ngx_uint_t post);
static void ngx_http_acme_work(void *data);
static void ngx_http_acme_refuse_work(void *data);
static void ngx_http_acme_done(ngx_http_request_t *r, void *data);
static void ngx_http_acme_post_job(ngx_http_request_t *r,
    ngx_http_acme_ctx_t *ctx);
static void ngx_http_acme_job_work(void *data);
static void ngx_http_acme_job_done(void *data);
static void ngx_http_acme_jobs_drain(ngx_log_t *log);
static void ngx_http_acme_jobs_guard_handler(ngx_event_t *ev);
static void ngx_http_acme_jobs_drop(void);
static void ngx_http_acme_jobs_retry_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_acme_init_process(ngx_cycle_t *cycle);
static void ngx_http_acme_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_acme_send(ngx_http_request_t *r,
    ngx_http_acme_ctx_t *ctx);
static ngx_int_t ngx_http_acme_refuse(ngx_http_request_t *r,
    ngx_http_acme_ctx_t *ctx, int status, const char *type,
    const char *detail);
static ngx_uint_t ngx_http_acme_host_char(u_char c);
static ngx_int_t ngx_http_acme_no_tls(ngx_http_request_t *r,
    ngx_http_acme_ctx_t *ctx);

static void *ngx_http_acme_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_acme_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_acme_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_acme_init(ngx_conf_t *cf);

static char *ngx_http_acme(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_http_acme_profile(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_acme_template_check(ngx_conf_t *cf,
    pki_template_t *tmpl);
static char *ngx_http_acme_merge_profiles(ngx_conf_t *cf,
    ngx_http_acme_loc_conf_t *conf, pki_acme_conf_t *ac);
static char *ngx_http_acme_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_acme_conf_url(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_str_t *url, ngx_uint_t base);
static char *ngx_http_acme_meta_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_acme_base_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static char *ngx_http_acme_jobs_check(ngx_conf_t *cf, void *post,
    void *data);

static ngx_conf_post_t  ngx_http_acme_jobs_post = {
    ngx_http_acme_jobs_check
};


static ngx_command_t  ngx_http_acme_commands[] = {

    { ngx_string("acme"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_acme,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("acme_profile"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE23,
      ngx_http_acme_profile,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("acme_redis"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_acme_redis,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("acme_eab_required"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, eab_required),
      NULL },

    { ngx_string("acme_base_url"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_acme_base_url,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, base_url),
      NULL },

    { ngx_string("acme_terms_of_service"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_acme_meta_url,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, tos),
      NULL },

    { ngx_string("acme_website"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_acme_meta_url,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, website),
      NULL },

    { ngx_string("acme_renewal_explanation"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_acme_meta_url,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, ari_explanation),
      NULL },

    { ngx_string("acme_caa_identities"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_conf_set_str_array_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, caa),
      NULL },

    { ngx_string("acme_authz_reuse"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, authz_reuse),
      NULL },

    { ngx_string("acme_nonce_ttl"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, nonce_ttl),
      NULL },

    { ngx_string("acme_order_ttl"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, order_ttl),
      NULL },

    { ngx_string("acme_max_body_size"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, max_body_size),
      NULL },

    { ngx_string("acme_orders_per_hour"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, orders_per_hour),
      NULL },

    { ngx_string("acme_pending_authz_max"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, pending_authz_max),
      NULL },

    { ngx_string("acme_accounts_per_hour"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, accounts_per_hour),
      NULL },

    { ngx_string("acme_validation_http_port"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, http_port),
      NULL },

    { ngx_string("acme_validation_tls_port"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, tls_port),
      NULL },

    { ngx_string("acme_validation_resolver"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, resolver),
      NULL },

    { ngx_string("acme_validation_resolve_to"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, resolve_to),
      NULL },

    { ngx_string("acme_validation_allow_private"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, allow_private),
      NULL },

    { ngx_string("acme_validation_timeout"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, validation_timeout),
      NULL },

    { ngx_string("acme_validation_jobs"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_acme_main_conf_t, jobs),
      &ngx_http_acme_jobs_post },

    { ngx_string("acme_caa_check"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_acme_loc_conf_t, caa_check),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_acme_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_acme_init,                    /* postconfiguration */

    ngx_http_acme_create_main_conf,        /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_acme_create_loc_conf,         /* create location configuration */
    ngx_http_acme_merge_loc_conf           /* merge location configuration */
};


ngx_module_t  ngx_http_acme_module = {
    NGX_MODULE_V1,
    &ngx_http_acme_module_ctx,             /* module context */
    ngx_http_acme_commands,                /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_acme_init_process,            /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_acme_exit_process,            /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_acme_handler(ngx_http_request_t *r)
{
    u_char                     *p, *end;
    size_t                      len;
    ngx_int_t                   rc;
    ngx_str_t                   host, path, base;
    ngx_uint_t                  plain;
    ngx_http_acme_ctx_t        *ctx;
    ngx_http_acme_loc_conf_t   *alcf;
    ngx_http_acme_main_conf_t  *amcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_acme_module);

    if (!alcf->enable || alcf->conf == NULL) {
        return NGX_DECLINED;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_acme_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->conf = *alcf->conf;
    amcf = ngx_http_get_module_main_conf(r, ngx_http_acme_module);
    ctx->conf.list_keep = amcf->list_keep;
    ctx->conf.redis = ngx_http_pki_redis(r);
    ctx->conf.acme_state = ngx_http_pki_acme_states(r, &ctx->conf.nacme_state);

    ngx_http_set_ctx(r, ctx, ngx_http_acme_module);

    /* RFC 8555 6.1: HTTPS only; an https:// acme_base_url says that TLS
     * ends in a proxy in front of nginx */
    plain = 1;
#if (NGX_HTTP_SSL)
    plain = (r->connection->ssl == NULL);
#endif

    if (plain
        && (alcf->base_url.len < 8
            || ngx_strncasecmp(alcf->base_url.data, (u_char *) "https://", 8)
               != 0))
    {
        return ngx_http_acme_no_tls(r, ctx);
    }

    /* the base URL as the client sees it: acme_base_url behind a proxy
     * that terminates TLS or moves the path, else scheme, Host, location */

    if (alcf->base_url.len) {
        base = alcf->base_url;
        goto based;
    }

    if (r->headers_in.host) {
        host = r->headers_in.host->value;

    } else {
        host = r->headers_in.server;
    }

    if (host.len == 0 || host.len > 255) {
        goto bad_host;
    }

    /*
     * The Host goes into every URL of the answers (Location, Link, the
     * directory and its JSON): a name, an IPv4 or a bracketed IPv6
     * address, and a port.  nginx lets through characters such as '"',
     * '<' or '>', which would break a Link header or poison a cache in
     * front that keys on the path.
     */
    for (p = host.data, end = host.data + host.len; p < end; p++) {
        if (!ngx_http_acme_host_char(*p)) {
            goto bad_host;
        }
    }

    len = sizeof("https://") - 1 + host.len + alcf->prefix.len;

    base.data = ngx_pnalloc(r->pool, len + 1);
    if (base.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(base.data, "%s://%V%V",
#if (NGX_HTTP_SSL)
                    r->connection->ssl ? "https" : "http",
#else
                    "http",
#endif
                    &host, &alcf->prefix);
    *p = '\0';
    base.len = p - base.data;

based:

    ctx->req.base_url = (char *) base.data;

    /* <prefix>[/<path>] */

    if (r->uri.len < alcf->prefix.len
        || ngx_strncmp(r->uri.data, alcf->prefix.data, alcf->prefix.len) != 0)
    {
        goto not_found;
    }

    /* a POST is signed for the URL it is sent to (RFC 8555 6.4), which
     * the core compares with its own: so the URL as sent must be the one
     * nginx routed by (no query, no percent-encoding, no dot segments or
     * merged slashes); an internal redirect is the operator's choice */
    if (r->method == NGX_HTTP_POST && !r->internal
        && (r->unparsed_uri.len != r->uri.len
            || ngx_strncmp(r->unparsed_uri.data, r->uri.data, r->uri.len)
               != 0))
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "acme: a POST to \"%V\" is not sent to the URL of a "
                      "resource as written (query, escapes or dot segments)",
                      &r->unparsed_uri);
        goto not_found;
    }

    p = r->uri.data + alcf->prefix.len;
    end = r->uri.data + r->uri.len;

    if (p < end) {
        if (*p != '/') {
            goto not_found;
        }
        p++;
    }

    path.data = p;
    path.len = end - p;

    if (path.len > 400 || ngx_strlchr(path.data, end, '\0') != NULL) {
        goto not_found;
    }

    ctx->req.path = ngx_http_pki_cstr(r->pool, &path);
    ctx->req.method = ngx_http_pki_cstr(r->pool, &r->method_name);
    ctx->req.client = ngx_http_pki_cstr(r->pool,
                                        &r->connection->addr_text);

    if (ctx->req.path == NULL || ctx->req.method == NULL
        || ctx->req.client == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (r->headers_in.content_type) {
        ctx->req.content_type = ngx_http_pki_cstr(r->pool,
                                          &r->headers_in.content_type->value);
        if (ctx->req.content_type == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    rc = ngx_http_pki_read_body(r, alcf->max_body_size,
                                ngx_http_acme_body_handler);

    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        /* the connection stays when the announced body can be dropped */
        ngx_http_pki_body_refused(r, 1);
        return ngx_http_acme_refuse(r, ctx, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                    "malformed", "request body too large");
    }

    if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        /* pki_body_memory is used up: nothing read; counted and logged
         * (rate-limited) by the pki module */
        ngx_http_pki_body_refused(r, 0);
        return ngx_http_acme_refuse(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "serverInternal", "busy, retry later");
    }

    if (rc == NGX_HTTP_BAD_REQUEST || rc == NGX_HTTP_INTERNAL_SERVER_ERROR) {
        /* 400: the first bytes of the body are not HTTP (broken chunked
         * encoding); 500: no memory for the body's buffers or state.
         * Logged by nginx or the pki module; a problem document, as every
         * ACME error (RFC 8555 6.7); the rest stays unread, the connection
         * is not kept.  A later part broken the same way is nginx's to
         * answer: its read ends the request. */
        ngx_http_pki_body_refused(r, 0);
        return ngx_http_acme_refuse(r, ctx, (int) rc,
                                    rc == NGX_HTTP_BAD_REQUEST
                                    ? "malformed" : "serverInternal",
                                    "the request body cannot be read");
    }

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;

not_found:

    ngx_http_pki_body_unwanted(r);

    return ngx_http_acme_refuse(r, ctx, NGX_HTTP_NOT_FOUND, "malformed",
                                "no such resource");

bad_host:

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "acme: refused Host header \"%V\": a name or an address, "
                  "and a port, make the URLs of the answers", &host);

    ngx_http_pki_body_unwanted(r);

    return ngx_http_acme_refuse(r, ctx, NGX_HTTP_BAD_REQUEST, "malformed",
                                "bad Host header");
}


static void
ngx_http_acme_body_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_str_t                  body;
    ngx_http_acme_ctx_t       *ctx;
    ngx_http_acme_loc_conf_t  *alcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_acme_module);
    alcf = ngx_http_get_module_loc_conf(r, ngx_http_acme_module);

    rc = ngx_http_pki_request_body(r, alcf->max_body_size, &body);

    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        /* a body without Content-Length that crossed the cap after the
         * first read: the pki body filter ended it there, and the
         * connection is not kept (HTTP/1.1) */
        ngx_http_finalize_request(r,
            ngx_http_acme_refuse(r, ctx, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                 "malformed", "request body too large"));
        return;
    }

    if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        /* the body would have gone over pki_body_memory: ended there,
         * as above; a problem with a nonce and Retry-After, as the
         * core's other 503s */
        ngx_http_finalize_request(r,
            ngx_http_acme_refuse(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "serverInternal", "busy, retry later"));
        return;
    }

    if (rc != NGX_OK) {
        /* out of memory, or a temp file another module wrote that
         * cannot be read back (logged) */
        ngx_http_finalize_request(r,
            ngx_http_acme_refuse(r, ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                 "serverInternal",
                                 "cannot read the request body"));
        return;
    }

    ctx->req.body = body.data;
    ctx->req.body_len = body.len;

    if (pki_acme_signs(&ctx->req)
        && ngx_http_pki_key_hung(pki_ca_key(ctx->conf.ca)))
    {
        /*
         * A finalize signs with the CA key, whose token does not answer
         * (logged once by the pki module's watchdog): not a thread more
         * waits for it.  503 serverInternal with Retry-After at once, as
         * the core answers a finalize whose key is unavailable; nothing
         * is read or written, so the order stays ready.  Without a
         * Replay-Nonce, as a shed request: minting one takes a pool
         * thread, and the hung token may hold them all.
         */
        ctx->shed = 1;
        ngx_http_finalize_request(r,
            ngx_http_acme_refuse(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "serverInternal", "finalize: service "
                                 "unavailable, retry later"));
        return;
    }

    /* a poll of an authorization whose validation runs here waits for
     * it: the answer then says how it ended (one poll, not several) */
    if (ngx_http_acme_park(r, ctx) == NGX_OK) {
        /* drops the reference of the body reading; the park holds one */
        ngx_http_finalize_request(r, NGX_DONE);
        return;
    }

    ngx_http_acme_post(r, ctx);
}


/* Posts the request's task (from its body handler, or when a parked poll
 * resumes) and drops the reference its caller holds */
static void
ngx_http_acme_post(ngx_http_request_t *r, ngx_http_acme_ctx_t *ctx)
{
    ngx_int_t  rc;

    /* a finalize signs with the CA key: in the signing pool, if any */
    rc = pki_acme_signs(&ctx->req)
         ? ngx_http_pki_post_sign(r, ngx_http_acme_work, ngx_http_acme_done,
                                  ctx)
         : ngx_http_pki_post(r, ngx_http_acme_work, ngx_http_acme_done, ctx);

    switch (rc) {

    case NGX_OK:
        /* drops the reference of the body reading; the task holds one */
        ngx_http_finalize_request(r, NGX_DONE);
        return;

    case NGX_DECLINED:
        /*
         * The queue is full, so no task can reach Redis for a nonce either:
         * the one problem of the glue without a Replay-Nonce, 503 with
         * Retry-After.  Logged (rate-limited) by ngx_http_pki_post(), not
         * once more per request.
         */
        ctx->shed = 1;
        ngx_http_finalize_request(r,
            ngx_http_acme_refuse(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "rateLimited", "busy, retry later"));
        return;

    default:
        /* the post itself failed (out of memory, logged): answered here,
         * without Redis, so without a nonce */
        ctx->shed = 1;
        ngx_http_finalize_request(r,
            ngx_http_acme_refuse(r, ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                 "serverInternal", "cannot start the "
                                 "request, retry later"));
        return;
    }
}


/*
 * A poll (POST-as-GET) of an authorization or of its challenge while this
 * worker validates that challenge: the request waits, off the pool, until
 * the validation ends, then runs as any other; at most
 * NGX_HTTP_ACME_PARK_MAX ms (a target that stalls), and at most
 * NGX_HTTP_ACME_PARK_JOB polls per validation (more run at once).  A poll
 * sent right after the challenge gets the outcome in one answer instead of
 * "pending" and another poll.  Only a hint: the request is authenticated
 * and served by the core as it would have been; the URL and the empty
 * payload merely pick which requests wait.  NGX_OK when parked.
 */
static ngx_int_t
ngx_http_acme_park(ngx_http_request_t *r, ngx_http_acme_ctx_t *ctx)
{
    u_char                     *p, *end, *acct, *aid;
    uint32_t                    hash;
    ngx_str_t                   name;
    ngx_queue_t                *q;
    ngx_str_node_t             *sn;
    ngx_http_acme_park_t       *pk;
    ngx_http_acme_job_ctx_t    *jctx;
    ngx_http_acme_jobs_acct_t  *a;
    static const char           empty[] = "\"payload\":\"\"";

    if (ngx_http_acme_jobs_running + ngx_http_acme_jobs_nwaiting == 0
        || r->method != NGX_HTTP_POST || ngx_exiting || ngx_terminate
        || ctx->req.body == NULL
        || ngx_strlcasestrn((u_char *) ctx->req.body,
                            (u_char *) ctx->req.body + ctx->req.body_len,
                            (u_char *) empty, sizeof(empty) - 2) == NULL)
    {
        return NGX_DECLINED;
    }

    /* "authz/ACCT/AID" or "chall/ACCT/AID/TYPE" */
    p = (u_char *) ctx->req.path;
    end = p + ngx_strlen(p);

    if (end - p < 6
        || (ngx_strncmp(p, "authz/", 6) != 0
            && ngx_strncmp(p, "chall/", 6) != 0))
    {
        return NGX_DECLINED;
    }

    acct = p + 6;
    p = ngx_strlchr(acct, end, '/');
    if (p == NULL || p == acct) {
        return NGX_DECLINED;
    }

    name.data = acct;
    name.len = p - acct;

    aid = p + 1;
    p = ngx_strlchr(aid, end, '/');
    if (p == NULL) {
        p = end;
    }

    if (p == aid || p - aid > NGX_HTTP_ACME_PARK_ID) {
        return NGX_DECLINED;
    }

    hash = ngx_crc32_short(name.data, name.len);
    sn = ngx_str_rbtree_lookup(&ngx_http_acme_jobs_tree, &name, hash);
    if (sn == NULL) {
        return NGX_DECLINED;
    }

    a = (ngx_http_acme_jobs_acct_t *) sn;

    for (q = ngx_queue_head(&a->inflight);
         q != ngx_queue_sentinel(&a->inflight);
         q = ngx_queue_next(q))
    {
        jctx = ngx_queue_data(q, ngx_http_acme_job_ctx_t, inflight);

        if (ngx_strlen(jctx->aid) == (size_t) (p - aid)
            && ngx_strncmp(jctx->aid, aid, p - aid) == 0)
        {
            goto found;
        }
    }

    return NGX_DECLINED;

found:

    if (jctx->nparked >= NGX_HTTP_ACME_PARK_JOB) {
        return NGX_DECLINED;
    }

    pk = ngx_pcalloc(r->pool, sizeof(ngx_http_acme_park_t));
    if (pk == NULL) {
        return NGX_DECLINED;
    }

    pk->request = r;
    pk->jctx = jctx;
    pk->timer.handler = ngx_http_acme_park_timeout;
    pk->timer.data = pk;
    pk->timer.log = r->connection->log;

    ngx_add_timer(&pk->timer, NGX_HTTP_ACME_PARK_MAX);
    ngx_queue_insert_tail(&jctx->parked, &pk->queue);
    jctx->nparked++;

    /* as a request waiting for its task: a termination meanwhile (a
     * worker's shutdown timeout) is deferred until it is let go, so
     * r->pool, which holds the park, lives until then */
    r->main->blocked++;
    r->main->count++;

    return NGX_OK;
}


static void
ngx_http_acme_park_timeout(ngx_event_t *ev)
{
    ngx_http_acme_unpark(ev->data, 1);
}


/* The parked poll runs now (post), or is let go (a worker that stops) */
static void
ngx_http_acme_unpark(ngx_http_acme_park_t *pk, ngx_uint_t post)
{
    ngx_connection_t     *c;
    ngx_http_request_t   *r;

    r = pk->request;
    c = r->connection;

    ngx_queue_remove(&pk->queue);
    pk->jctx->nparked--;

    if (pk->timer.timer_set) {
        ngx_del_timer(&pk->timer);
    }

    r->main->blocked--;

    if (!post) {
        return;
    }

    ngx_http_set_log_request(c->log, r);

    if (c->error) {
        /* terminated while it waited: nginx closes it now */
        ngx_http_finalize_request(r, NGX_ERROR);
        ngx_http_run_posted_requests(c);
        return;
    }

    ngx_http_acme_post(r, ngx_http_get_module_ctx(r, ngx_http_acme_module));
    ngx_http_run_posted_requests(c);
}


/* A job ends (or is dropped): its polls run, and it is no longer found */
static void
ngx_http_acme_unpark_all(ngx_http_acme_job_ctx_t *jctx, ngx_uint_t post)
{
    ngx_queue_t  *q;

    ngx_queue_remove(&jctx->inflight);

    while (!ngx_queue_empty(&jctx->parked)) {
        q = ngx_queue_head(&jctx->parked);
        ngx_http_acme_unpark(ngx_queue_data(q, ngx_http_acme_park_t, queue),
                             post);
    }
}


/* pool thread */

static void
ngx_http_acme_work(void *data)
{
    ngx_http_acme_ctx_t *ctx = data;

    pki_acme_handle(&ctx->conf, &ctx->req, &ctx->resp);
}


/* pool thread */

static void
ngx_http_acme_refuse_work(void *data)
{
    ngx_http_acme_ctx_t *ctx = data;

    pki_acme_refuse(&ctx->conf, &ctx->req, ctx->refuse_status,
                    ctx->refuse_type, ctx->refuse_detail, 1, &ctx->resp);
}


static void
ngx_http_acme_done(ngx_http_request_t *r, void *data)
{
    ngx_int_t             rc;
    ngx_http_acme_ctx_t  *ctx = data;

    /* the validation starts before the answer is written: it is usually
     * done by the client's first poll */
    if (ctx->resp.job) {
        ngx_http_acme_post_job(r, ctx);

    } else if (ngx_http_acme_jobs_nwaiting > 0) {
        /* a finalize's CAA re-check may have given a slot back */
        ngx_http_acme_jobs_drain(r->connection->log);
    }

    rc = ngx_http_acme_send(r, ctx);

    ngx_http_finalize_request(r, rc);
}


/* The jobs of the account with this id (made when new), or NULL. */
static ngx_http_acme_jobs_acct_t *
ngx_http_acme_jobs_acct(const char *id, ngx_log_t *log)
{
    uint32_t                    hash;
    ngx_str_t                   name;
    ngx_str_node_t             *sn;
    ngx_http_acme_jobs_acct_t  *a;

    name.data = (u_char *) id;
    name.len = ngx_strlen(id);
    hash = ngx_crc32_short(name.data, name.len);

    sn = ngx_str_rbtree_lookup(&ngx_http_acme_jobs_tree, &name, hash);
    if (sn != NULL) {
        return (ngx_http_acme_jobs_acct_t *) sn;
    }

    a = ngx_alloc(sizeof(ngx_http_acme_jobs_acct_t) + name.len, log);
    if (a == NULL) {
        return NULL;
    }

    ngx_memzero(a, sizeof(ngx_http_acme_jobs_acct_t));
    a->sn.node.key = hash;
    a->sn.str.len = name.len;
    a->sn.str.data = (u_char *) (a + 1);
    ngx_memcpy(a->sn.str.data, name.data, name.len);
    ngx_queue_init(&a->jobs);
    ngx_queue_init(&a->inflight);
    ngx_rbtree_insert(&ngx_http_acme_jobs_tree, &a->sn.node);

    return a;
}


/* forgets an account with no job waiting or running */
static void
ngx_http_acme_jobs_acct_idle(ngx_http_acme_jobs_acct_t *a)
{
    if (a->waiting == 0 && a->running == 0) {
        ngx_rbtree_delete(&ngx_http_acme_jobs_tree, &a->sn.node);
        ngx_free(a);
    }
}


static void
ngx_http_acme_post_job(ngx_http_request_t *r, ngx_http_acme_ctx_t *ctx)
{
    u_char                     *p, *end, *aid;
    ngx_http_acme_job_ctx_t    *jctx;
    ngx_http_acme_jobs_acct_t  *a;

    jctx = ngx_calloc(sizeof(ngx_http_acme_job_ctx_t), r->connection->log);
    if (jctx == NULL) {
        /* as below: a poll restarts it once it is stale */
        pki_acme_job_free(ctx->resp.job);
        ctx->resp.job = NULL;
        return;
    }

    jctx->conf = ctx->conf;
    jctx->job = ctx->resp.job;
    jctx->tp = ngx_http_pki_cycle_thread_pool((ngx_cycle_t *) ngx_cycle);
    ctx->resp.job = NULL;

    a = ngx_http_acme_jobs_nwaiting < NGX_HTTP_ACME_JOBS_WAITING
        ? ngx_http_acme_jobs_acct(pki_acme_job_account(jctx->job),
                                  r->connection->log)
        : NULL;

    if (a == NULL || a->waiting >= NGX_HTTP_ACME_JOBS_ACCT) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "acme: validation for \"%V\" not started (%ui "
                      "validations wait in this worker, %ui of them this "
                      "account's), its challenge stays \"processing\" "
                      "until a poll restarts it", &r->unparsed_uri,
                      ngx_http_acme_jobs_nwaiting,
                      a != NULL ? a->waiting : 0);
        pki_acme_job_free(jctx->job);
        ngx_free(jctx);
        if (a != NULL) {
            ngx_http_acme_jobs_acct_idle(a);
        }
        return;
    }

    jctx->acct = a;
    ngx_queue_insert_tail(&a->jobs, &jctx->queue);

    /* the authorization it validates, from "chall/ACCT/AID/TYPE" (or
     * "authz/ACCT/AID", a poll that restarted it): its polls wait for it
     * (ngx_http_acme_park) */
    ngx_queue_init(&jctx->parked);
    ngx_queue_insert_tail(&a->inflight, &jctx->inflight);

    p = (u_char *) ctx->req.path;
    end = p + ngx_strlen(p);
    aid = ngx_strlchr(p, end, '/');
    aid = aid != NULL ? ngx_strlchr(aid + 1, end, '/') : NULL;

    if (aid != NULL) {
        aid++;
        p = ngx_strlchr(aid, end, '/');
        if (p == NULL) {
            p = end;
        }

        if (p - aid <= NGX_HTTP_ACME_PARK_ID) {
            ngx_memcpy(jctx->aid, aid, p - aid);
        }
    }

    if (a->waiting++ == 0) {
        ngx_queue_insert_tail(&ngx_http_acme_jobs_accts, &a->ring);
    }
    ngx_http_acme_jobs_nwaiting++;

    ngx_http_acme_jobs_drain(r->connection->log);
}


/* Starts waiting jobs while a slot of acme_validation_jobs is free
 * (finalizes re-checking CAA hold the others; each ACME answer drains
 * again, so a slot a re-check gives back is used at once).  The
 * accounts with jobs waiting take turns, each its oldest job: the first in
 * turn with fewer than half the slots running (its fair share), else the
 * first in turn (no slot stays idle while jobs wait); an account that
 * started one goes to the end of the turn, as does one whose first job
 * arrives.  So a validation waits for the running ones and at most one
 * job of each other account with jobs waiting, however many challenges
 * that account posted against targets that stall.  A pool whose queue is
 * full (max_queue)
 * keeps the rest waiting: the next job that ends, or a timer a second
 * later, tries again. */
static void
ngx_http_acme_jobs_drain(ngx_log_t *log)
{
    ngx_int_t                   rc;
    ngx_uint_t                  share;
    ngx_queue_t                *q;
    ngx_http_acme_job_ctx_t    *jctx;
    ngx_http_acme_jobs_acct_t  *a;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        /* a worker that exits starts no more: as at exit below */
        ngx_http_acme_jobs_drop();
        return;
    }

    share = ngx_http_acme_jobs_max / 2 > 0 ? ngx_http_acme_jobs_max / 2 : 1;

    /* a slot of the budget finalize's CAA re-checks share */
    while (!ngx_queue_empty(&ngx_http_acme_jobs_accts)
           && pki_acme_outbound_take())
    {
        for (q = ngx_queue_head(&ngx_http_acme_jobs_accts);
             q != ngx_queue_sentinel(&ngx_http_acme_jobs_accts);
             q = ngx_queue_next(q))
        {
            a = ngx_queue_data(q, ngx_http_acme_jobs_acct_t, ring);
            if (a->running < share) {
                break;
            }
        }

        if (q == ngx_queue_sentinel(&ngx_http_acme_jobs_accts)) {
            q = ngx_queue_head(&ngx_http_acme_jobs_accts);
        }

        a = ngx_queue_data(q, ngx_http_acme_jobs_acct_t, ring);
        q = ngx_queue_head(&a->jobs);
        jctx = ngx_queue_data(q, ngx_http_acme_job_ctx_t, queue);

        rc = ngx_http_pki_post_detached_tp(jctx->tp, log,
                                           ngx_http_acme_job_work,
                                           ngx_http_acme_job_done, jctx);

        if (rc == NGX_DECLINED) {
            pki_acme_outbound_give();
            if (!ngx_http_acme_jobs_retry.timer_set) {
                ngx_add_timer(&ngx_http_acme_jobs_retry, 1000);
            }
            return;
        }

        ngx_queue_remove(q);
        ngx_http_acme_jobs_nwaiting--;

        ngx_queue_remove(&a->ring);
        if (--a->waiting > 0) {
            ngx_queue_insert_tail(&ngx_http_acme_jobs_accts, &a->ring);
        }

        if (rc != NGX_OK) {
            pki_acme_outbound_give();

            /* the challenge stays "processing": a poll of its
             * authorization or challenge once it is stale starts it
             * again */
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "acme: a validation was not started (error), "
                          "its challenge stays \"processing\" until a "
                          "poll restarts it");
            ngx_http_acme_unpark_all(jctx, 1);
            pki_acme_job_free(jctx->job);
            ngx_free(jctx);
            ngx_http_acme_jobs_acct_idle(a);
            continue;
        }

        a->running++;
        ngx_http_acme_jobs_running++;

        if (!ngx_http_acme_jobs_guard.timer_set) {
            ngx_add_timer(&ngx_http_acme_jobs_guard, 1000);
        }
    }
}


static void
ngx_http_acme_jobs_guard_handler(ngx_event_t *ev)
{
    if (ngx_http_acme_jobs_running > 0) {
        ngx_add_timer(ev, 1000);
    }
}


static void
ngx_http_acme_jobs_retry_handler(ngx_event_t *ev)
{
    ngx_http_acme_jobs_drain(ev->log);
}


/* pool thread */

static void
ngx_http_acme_job_work(void *data)
{
    ngx_http_acme_job_ctx_t *jctx = data;

    pki_result_init(&jctx->res);
    pki_acme_job_run(&jctx->conf, jctx->job, &jctx->res);
}


static void
ngx_http_acme_job_done(void *data)
{
    ngx_http_acme_job_ctx_t *jctx = data;

    ngx_uint_t  level;

    /* a result stored (valid, or invalid by the client's doing: the core
     * says PKI_UNAUTHORIZED whatever went wrong at the client's end) is
     * info; a fault of this server (nothing stored, PKI_INTERNAL) or a
     * store that failed (Redis, PKI_UNAVAILABLE) is an error */
    level = (jctx->res.status == PKI_UNAVAILABLE
             || jctx->res.status == PKI_INTERNAL) ? NGX_LOG_ERR
            : NGX_LOG_INFO;

    ngx_log_error(level, ngx_cycle->log, 0, "acme: validation: %s%s%s%s",
                  jctx->res.status == PKI_OK ? "ok" : jctx->res.detail,
                  jctx->res.log[0] ? " (" : "", jctx->res.log,
                  jctx->res.log[0] ? ")" : "");

    /* before the account may be forgotten: its polls run now */
    ngx_http_acme_unpark_all(jctx, 1);

    jctx->acct->running--;
    ngx_http_acme_jobs_acct_idle(jctx->acct);

    pki_acme_job_free(jctx->job);
    ngx_free(jctx);

    pki_acme_outbound_give();
    ngx_http_acme_jobs_running--;

    if (ngx_http_acme_jobs_running == 0
        && ngx_http_acme_jobs_guard.timer_set)
    {
        ngx_del_timer(&ngx_http_acme_jobs_guard);
    }

    ngx_http_acme_jobs_drain(ngx_cycle->log);
}


static ngx_int_t
ngx_http_acme_init_process(ngx_cycle_t *cycle)
{
    ngx_http_acme_main_conf_t  *amcf;

    ngx_queue_init(&ngx_http_acme_jobs_accts);
    ngx_rbtree_init(&ngx_http_acme_jobs_tree, &ngx_http_acme_jobs_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_http_acme_jobs_running = 0;
    ngx_http_acme_jobs_nwaiting = 0;

    /* this cycle's setting (not what a failed reload left in the master) */
    amcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_acme_module);
    if (amcf != NULL && amcf->jobs > 0) {
        ngx_http_acme_jobs_max = (ngx_uint_t) amcf->jobs;
    }

    pki_acme_outbound_max((unsigned) ngx_http_acme_jobs_max);

    ngx_http_acme_jobs_retry.handler = ngx_http_acme_jobs_retry_handler;
    ngx_http_acme_jobs_retry.log = cycle->log;
    ngx_http_acme_jobs_retry.data = &ngx_http_acme_jobs_retry;
    ngx_http_acme_jobs_retry.cancelable = 1;

    ngx_http_acme_jobs_guard.handler = ngx_http_acme_jobs_guard_handler;
    ngx_http_acme_jobs_guard.log = cycle->log;
    ngx_http_acme_jobs_guard.data = &ngx_http_acme_jobs_guard;

    /* a fast stop (SIGTERM, "nginx -s stop") cuts running validations
     * short: the thread pool's teardown, before this module's exit, waits
     * for its threads with a busy loop */
    pki_acme_validate_stop_on(&ngx_terminate);

    return NGX_OK;
}


/* jobs still waiting go with the worker: their challenges stay
 * "processing" until a poll restarts them; so do the running ones a fast
 * stop cut short (their results were not stored) */
static void
ngx_http_acme_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_terminate && ngx_http_acme_jobs_running > 0) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "acme: the worker stops: %ui running validation(s) "
                      "cut short, their challenges stay \"processing\" "
                      "until a poll restarts them",
                      ngx_http_acme_jobs_running);
    }

    ngx_http_acme_exited = 1;
    ngx_http_acme_jobs_drop();
}


static void
ngx_http_acme_jobs_drop(void)
{
    ngx_queue_t                *q;
    ngx_http_acme_job_ctx_t    *jctx;
    ngx_http_acme_jobs_acct_t  *a;

    if (ngx_http_acme_jobs_accts.next == NULL
        || ngx_queue_empty(&ngx_http_acme_jobs_accts))
    {
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "acme: the worker exits: %ui waiting validation(s) not "
                  "started, their challenges stay \"processing\" until a "
                  "poll restarts them", ngx_http_acme_jobs_nwaiting);

    while (!ngx_queue_empty(&ngx_http_acme_jobs_accts)) {
        q = ngx_queue_head(&ngx_http_acme_jobs_accts);
        ngx_queue_remove(q);
        a = ngx_queue_data(q, ngx_http_acme_jobs_acct_t, ring);

        while (!ngx_queue_empty(&a->jobs)) {
            q = ngx_queue_head(&a->jobs);
            ngx_queue_remove(q);
            jctx = ngx_queue_data(q, ngx_http_acme_job_ctx_t, queue);
            /* a worker that exits gracefully still serves its polls */
            ngx_http_acme_unpark_all(jctx, !ngx_http_acme_exited);
            pki_acme_job_free(jctx->job);
            ngx_free(jctx);
        }

        a->waiting = 0;
        ngx_http_acme_jobs_acct_idle(a);
    }

    ngx_http_acme_jobs_nwaiting = 0;
}


static ngx_int_t
ngx_http_acme_send(ngx_http_request_t *r, ngx_http_acme_ctx_t *ctx)
{
    u_char           *p;
    size_t            len;
    ngx_buf_t        *b;
    ngx_uint_t        i, level, status;
    pki_acme_resp_t  *resp;

    resp = &ctx->resp;

    status = resp->http_status;

    if (status < 200 || status > 599) {
        status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_pki_metrics_mark(r, "acme", pki_ca_name(ctx->conf.ca),
        pki_template_name(ctx->conf.tmpl),
        ngx_http_pki_metrics_acme_status(resp->res.status, resp->res.detail),
        resp->res.detail);
    ngx_http_pki_metrics_requester(r, resp->requester);

    if (status >= 400 && !ctx->shed) {
        if (resp->busy) {
            /* back-pressure, as the pki module logs a shed request */
            level = NGX_LOG_WARN;

        } else {
            level = (status >= 500) ? NGX_LOG_ERR : NGX_LOG_INFO;
        }

        ngx_log_error(level, r->connection->log, 0,
                      "acme: %V from %V failed: %s%s%s%s",
                      &r->unparsed_uri, &r->connection->addr_text,
                      resp->res.detail,
                      resp->res.log[0] ? " (" : "", resp->res.log,
                      resp->res.log[0] ? ")" : "");

    } else if (resp->res.log[0]) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "%s",
                      resp->res.log);
    }

    b = NULL;

    if (resp->body && resp->body_len) {
        b = ngx_create_temp_buf(r->pool, resp->body_len);
        if (b == NULL) {
            goto failed;
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

    if (resp->nonce[0]) {
        len = ngx_strlen(resp->nonce);

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            goto failed;
        }

        ngx_memcpy(p, resp->nonce, len);

        if (ngx_http_pki_add_header(r, "Replay-Nonce", p, len) == NULL) {
            goto failed;
        }
    }

    if (resp->location) {
        len = ngx_strlen(resp->location);

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            goto failed;
        }

        ngx_memcpy(p, resp->location, len);

        if (ngx_http_pki_add_header(r, "Location", p, len) == NULL) {
            goto failed;
        }
    }

    for (i = 0; i < PKI_ACME_MAX_LINKS; i++) {
        if (resp->links[i] == NULL) {
            continue;
        }

        len = ngx_strlen(resp->links[i]);

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            goto failed;
        }

        ngx_memcpy(p, resp->links[i], len);

        if (ngx_http_pki_add_header(r, "Link", p, len) == NULL) {
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

    /* a static string: the header may point at it */
    if (resp->allow != NULL
        && ngx_http_pki_add_header(r, "Allow", (u_char *) resp->allow,
                                   ngx_strlen(resp->allow))
           == NULL)
    {
        goto failed;
    }

    if (resp->max_age > 0 && status == NGX_HTTP_OK) {
        /* renewalInfo: a GET that caches may serve (RFC 9773 7) */
        p = ngx_pnalloc(r->pool, sizeof("public, max-age=") + NGX_INT_T_LEN);
        if (p == NULL) {
            goto failed;
        }
        len = ngx_sprintf(p, "public, max-age=%d", resp->max_age) - p;

        if (ngx_http_pki_add_header(r, "Cache-Control", p, len) == NULL) {
            goto failed;
        }

    } else if (ngx_http_pki_add_header(r, "Cache-Control",
                                       (u_char *) "no-store",
                                       sizeof("no-store") - 1)
               == NULL)
    {
        goto failed;
    }

    pki_acme_resp_free(resp);

    if (b == NULL || r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
    }

    /* a body not read is discarded, not parsed as the next request
     * (see ngx_http_pki_send_plain()) */
    ngx_http_pki_body_unwanted(r);

    return ngx_http_pki_send_buf(r, b);

failed:

    pki_acme_resp_free(resp);

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


/*
 * A problem the glue decides by itself (a body over the cap, a path it
 * does not route).  RFC 8555 6.5: error answers carry a fresh Replay-Nonce
 * too, so the core builds the problem and mints the nonce in the pool, as
 * for its own problems.  Without a pool task (ctx->shed, or the queue
 * full: the refusal is not shed as a 503) the core builds the same problem
 * without a nonce and without I/O.  Returns what to finalize the request
 * with: NGX_DONE once posted (the done handler answers), else the answer's.
 */

static ngx_uint_t
ngx_http_acme_host_char(u_char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
           || c == ':' || c == '[' || c == ']';
}


static ngx_int_t
ngx_http_acme_refuse(ngx_http_request_t *r, ngx_http_acme_ctx_t *ctx,
    int status, const char *type, const char *detail)
{
    ctx->refuse_status = status;
    ctx->refuse_type = type;
    ctx->refuse_detail = detail;

    if (!ctx->shed
        && !ngx_http_pki_pool_full()
        && ngx_http_pki_post(r, ngx_http_acme_refuse_work, ngx_http_acme_done,
                             ctx)
           == NGX_OK)
    {
        return NGX_DONE;
    }

    pki_acme_refuse(&ctx->conf, &ctx->req, status, type, detail, 0,
                    &ctx->resp);

    return ngx_http_acme_send(r, ctx);
}


/*
 * RFC 8555 6.1: an ACME server MUST be reached over HTTPS.  Over plain
 * HTTP the directory would hand out http:// URLs and every JWS, EAB MAC
 * and certificate would travel in the clear, so a request on a connection
 * without TLS is refused before its body is read or anything is written:
 * no nonce, no Redis.  The type is "unauthorized" with 403, as RFC 8555
 * pairs them for a request the server will not serve as it came; the
 * message itself may be well formed, so "malformed" would send a client
 * looking for a fault in its JWS.
 */

static ngx_int_t
ngx_http_acme_no_tls(ngx_http_request_t *r, ngx_http_acme_ctx_t *ctx)
{
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "acme: \"%V\" from %V refused: the connection has no TLS "
                  "(RFC 8555 6.1: ACME needs HTTPS); serve ACME in an ssl "
                  "server, or set \"acme_base_url https://...\" where TLS "
                  "ends in front of nginx", &r->uri,
                  &r->connection->addr_text);

    ngx_http_pki_body_unwanted(r);

    pki_acme_refuse(&ctx->conf, &ctx->req, NGX_HTTP_FORBIDDEN,
                    "unauthorized", "ACME is served over HTTPS only "
                    "(RFC 8555 \xc2\xa7" "6.1)", 0, &ctx->resp);

    return ngx_http_acme_send(r, ctx);
}


static void *
ngx_http_acme_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_acme_main_conf_t  *amcf;

    amcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_acme_main_conf_t));
    if (amcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     amcf->file = { 0, NULL };
     *     amcf->line = 0;
     */

    amcf->jobs = NGX_CONF_UNSET;

    return amcf;
}


static void *
ngx_http_acme_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_acme_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_acme_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->prefix = { 0, NULL };
     *     conf->tos = { 0, NULL };
     *     conf->website = { 0, NULL };
     *     conf->ari_explanation = { 0, NULL };
     *     conf->resolver = { 0, NULL };
     *     conf->resolve_to = { 0, NULL };
     *     conf->conf = NULL;
     */

    conf->enable = NGX_CONF_UNSET;
    conf->ca = NGX_CONF_UNSET_PTR;
    conf->tmpl = NGX_CONF_UNSET_PTR;
    conf->profiles = NGX_CONF_UNSET_PTR;
    conf->eab_required = NGX_CONF_UNSET;
    conf->caa = NGX_CONF_UNSET_PTR;
    conf->state_redis = NGX_CONF_UNSET_PTR;
    conf->authz_reuse = NGX_CONF_UNSET;
    conf->nonce_ttl = NGX_CONF_UNSET;
    conf->order_ttl = NGX_CONF_UNSET;
    conf->max_body_size = NGX_CONF_UNSET_SIZE;
    conf->orders_per_hour = NGX_CONF_UNSET;
    conf->pending_authz_max = NGX_CONF_UNSET;
    conf->accounts_per_hour = NGX_CONF_UNSET;
    conf->http_port = NGX_CONF_UNSET_UINT;
    conf->tls_port = NGX_CONF_UNSET_UINT;
    conf->allow_private = NGX_CONF_UNSET;
    conf->validation_timeout = NGX_CONF_UNSET_MSEC;
    conf->caa_check = NGX_CONF_UNSET;

    return conf;
}


static const char *
ngx_http_acme_conf_cstr(ngx_conf_t *cf, ngx_str_t *s)
{
    if (s->len == 0) {
        return NULL;
    }

    return ngx_http_pki_cstr(cf->pool, s);
}


static char *
ngx_http_acme_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_acme_loc_conf_t *prev = parent;
    ngx_http_acme_loc_conf_t *conf = child;

    u_char                    *p;
    ngx_str_t                 *s;
    ngx_flag_t                 caa_check, own;
    ngx_uint_t                 i;
    pki_acme_conf_t           *ac;
    ngx_http_core_loc_conf_t  *clcf;

    /* acme_base_url is the URL of one ACME server: a location with an
     * "acme" of its own nested in an ACME location is another server and
     * does not inherit it (one without, serving the same server, does; so
     * does one whose parent sets the URL for it without being a server) */
    if (conf->base_url.data == NULL && conf->enable != NGX_CONF_UNSET
        && prev->enable == 1)
    {
        ngx_str_set(&conf->base_url, "");
    }

    own = (conf->enable != NGX_CONF_UNSET);

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_ptr_value(conf->ca, prev->ca, NULL);
    ngx_conf_merge_ptr_value(conf->tmpl, prev->tmpl, NULL);
    ngx_conf_merge_ptr_value(conf->profiles, prev->profiles, NULL);
    ngx_conf_merge_str_value(conf->prefix, prev->prefix, "");

    ngx_conf_merge_value(conf->eab_required, prev->eab_required, 0);
    ngx_conf_merge_str_value(conf->base_url, prev->base_url, "");
    ngx_conf_merge_str_value(conf->tos, prev->tos, "");
    ngx_conf_merge_str_value(conf->website, prev->website, "");
    ngx_conf_merge_str_value(conf->ari_explanation, prev->ari_explanation,
                             "");
    ngx_conf_merge_ptr_value(conf->caa, prev->caa, NULL);
    ngx_conf_merge_sec_value(conf->authz_reuse, prev->authz_reuse, 86400);
    ngx_conf_merge_sec_value(conf->nonce_ttl, prev->nonce_ttl, 3600);
    ngx_conf_merge_sec_value(conf->order_ttl, prev->order_ttl, 86400);
    ngx_conf_merge_size_value(conf->max_body_size, prev->max_body_size,
                              64 * 1024);
    ngx_conf_merge_value(conf->orders_per_hour, prev->orders_per_hour, 0);
    ngx_conf_merge_value(conf->pending_authz_max, prev->pending_authz_max,
                         NGX_HTTP_ACME_PENDING_MAX);
    ngx_conf_merge_value(conf->accounts_per_hour, prev->accounts_per_hour,
                         0);

    ngx_conf_merge_uint_value(conf->http_port, prev->http_port, 80);
    ngx_conf_merge_uint_value(conf->tls_port, prev->tls_port, 443);
    ngx_conf_merge_str_value(conf->resolver, prev->resolver, "");
    ngx_conf_merge_str_value(conf->resolve_to, prev->resolve_to, "");
    ngx_conf_merge_value(conf->allow_private, prev->allow_private, 0);
    ngx_conf_merge_msec_value(conf->validation_timeout,
                              prev->validation_timeout,
                              PKI_ACME_VALIDATE_TIMEOUT);

    /* CAA: unset stays unset through the levels; the location where ACME
     * is on decides below */
    if (conf->caa_check == NGX_CONF_UNSET) {
        conf->caa_check = prev->caa_check;
    }

    ngx_conf_merge_ptr_value(conf->state_redis, prev->state_redis, NULL);

    /* profiles are offered in the directory of the server they are given
     * with: a location nested in an ACME one serves its parent's directory,
     * so profiles of its own would never be offered */
    if ((!conf->enable || !own)
        && conf->profiles != NULL && conf->profiles != prev->profiles)
    {
        ngx_http_acme_profile_t  *pr = conf->profiles->elts;

        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"acme_profile\" needs \"acme CA TEMPLATE\" in "
                      "the same location in %V:%ui",
                      &pr[0].file, pr[0].line);
        return NGX_CONF_ERROR;
    }

    if (!conf->enable) {
        return NGX_CONF_OK;
    }

    if (conf->http_port == 0 || conf->http_port > 65535
        || conf->tls_port == 0 || conf->tls_port > 65535)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "acme_validation ports must be 1..65535");
        return NGX_CONF_ERROR;
    }

    /* a job may run twice this long (validation, then CAA) on a thread
     * of the pool every PKI request shares */
    if (conf->validation_timeout == 0
        || conf->validation_timeout > NGX_HTTP_ACME_TIMEOUT_MAX)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "acme_validation_timeout must be 1ms..%Ms",
                           (ngx_msec_t) NGX_HTTP_ACME_TIMEOUT_MAX / 1000);
        return NGX_CONF_ERROR;
    }

    /* CAA: on by default where the directory names identities, unless a
     * lab sends every name to one address and has no resolver to ask.
     * The default is this location's own: kept out of conf->caa_check, so
     * that a nested location works out its own and does not inherit it. */
    caa_check = conf->caa_check;

    if (caa_check == NGX_CONF_UNSET) {
        caa_check = conf->caa != NULL
                    && (conf->resolve_to.len == 0 || conf->resolver.len != 0);
    }

    if (caa_check && conf->caa == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "acme_caa_check on needs acme_caa_identities");
        return NGX_CONF_ERROR;
    }

    if (conf->nonce_ttl < 1 || conf->nonce_ttl > 86400
        || conf->order_ttl < 60)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "acme_nonce_ttl must be 1s..1d and "
                           "acme_order_ttl at least 60s");
        return NGX_CONF_ERROR;
    }

    if (conf->orders_per_hour < 0 || conf->accounts_per_hour < 0
        || conf->pending_authz_max < 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "acme_orders_per_hour, acme_accounts_per_hour "
                           "and acme_pending_authz_max must not be "
                           "negative");
        return NGX_CONF_ERROR;
    }

    if (conf->max_body_size < 1024 || conf->max_body_size > 1024 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "acme_max_body_size must be 1k..1m");
        return NGX_CONF_ERROR;
    }

    if (conf->conf == NULL || conf->conf == prev->conf) {
        ac = ngx_pcalloc(cf->pool, sizeof(pki_acme_conf_t));
        if (ac == NULL) {
            return NGX_CONF_ERROR;
        }

        ac->ca = conf->ca;
        ac->tmpl = conf->tmpl;

        if (ngx_http_acme_merge_profiles(cf, conf, ac) != NGX_CONF_OK) {
            return NGX_CONF_ERROR;
        }
        ac->tos = ngx_http_acme_conf_cstr(cf, &conf->tos);
        ac->website = ngx_http_acme_conf_cstr(cf, &conf->website);
        ac->ari_explanation = ngx_http_acme_conf_cstr(cf,
                                                      &conf->ari_explanation);
        ac->eab_required = conf->eab_required ? 1 : 0;
        ac->authz_reuse = (long) conf->authz_reuse;
        ac->nonce_ttl = (long) conf->nonce_ttl;
        ac->order_ttl = (long) conf->order_ttl;
        ac->max_body = conf->max_body_size;
        ac->orders_per_hour = (long) conf->orders_per_hour;
        ac->pending_authz_max = (long) conf->pending_authz_max;
        ac->accounts_per_hour = (long) conf->accounts_per_hour;
        ac->state_redis = conf->state_redis;

        if (conf->caa != NULL) {
            ac->caa = ngx_pcalloc(cf->pool,
                                  (conf->caa->nelts + 1) * sizeof(char *));
            if (ac->caa == NULL) {
                return NGX_CONF_ERROR;
            }

            s = conf->caa->elts;
            for (i = 0; i < conf->caa->nelts; i++) {
                ac->caa[i] = ngx_http_pki_cstr(cf->pool, &s[i]);
                if (ac->caa[i] == NULL) {
                    return NGX_CONF_ERROR;
                }
            }
        }

        ac->validate.http_port = (unsigned) conf->http_port;
        ac->validate.tls_port = (unsigned) conf->tls_port;
        ac->validate.resolver = ngx_http_acme_conf_cstr(cf, &conf->resolver);
        ac->validate.resolve_to = ngx_http_acme_conf_cstr(cf,
                                                          &conf->resolve_to);
        ac->validate.allow_private = conf->allow_private ? 1 : 0;
        ac->validate.timeout_ms = (unsigned) conf->validation_timeout;
        ac->validate.max_redirects = 10;
        ac->validate.caa = caa_check ? 1 : 0;
        ac->validate.caa_ids = ac->caa;

        /* each setting checked on its own, so the error names the one
         * directive at fault */
        {
            const char                *bad;
            pki_acme_validate_conf_t   vc;

            vc = ac->validate;
            vc.resolve_to = NULL;

            bad = pki_acme_validate_conf_check(&vc);
            if (bad != NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "acme_validation_resolver \"%V\": %s",
                                   &conf->resolver, bad);
                return NGX_CONF_ERROR;
            }

            vc = ac->validate;
            vc.resolver = NULL;

            bad = pki_acme_validate_conf_check(&vc);
            if (bad != NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "acme_validation_resolve_to \"%V\": %s",
                                   &conf->resolve_to, bad);
                return NGX_CONF_ERROR;
            }
        }

        pki_acme_realm(ac);

        conf->conf = ac;
    }

    /* an account's order list is the server's, whichever location adds
     * to it: kept for the longest validity of them all */
    {
        long                        v;
        const pki_acme_profile_t   *pr;
        ngx_http_acme_main_conf_t  *amcf;

        amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_acme_module);

        v = conf->conf->tmpl != NULL
            ? pki_template_validity(conf->conf->tmpl) : 0;
        amcf->list_keep = v > amcf->list_keep ? v : amcf->list_keep;

        for (pr = conf->conf->profiles; pr != NULL && pr->name != NULL; pr++)
        {
            v = pki_template_validity(pr->tmpl);
            amcf->list_keep = v > amcf->list_keep ? v : amcf->list_keep;
        }
    }

    /* the location name, without a trailing "/" */

    if (conf->prefix.len && conf->prefix.data[conf->prefix.len - 1] == '/') {
        p = ngx_pnalloc(cf->pool, conf->prefix.len);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(p, conf->prefix.data, conf->prefix.len - 1);
        conf->prefix.data = p;
        conf->prefix.len--;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler == NULL) {
        clcf->handler = ngx_http_acme_handler;
    }

    /* the module refuses a body over acme_max_body_size itself (a 413
     * problem with a nonce, for a length and for chunked data alike) */
    ngx_http_pki_own_body_cap(cf, ngx_http_acme_handler,
                              conf->max_body_size);

    return NGX_CONF_OK;
}


/* checked where it is set, so that nginx names the file and line */
static char *
ngx_http_acme_jobs_check(ngx_conf_t *cf, void *post, void *data)
{
    ngx_int_t  *n = data;

    (void) cf;
    (void) post;

    if (*n < 1 || *n > 1024) {
        return "must be 1..1024";
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_acme_init(ngx_conf_t *cf)
{
    ngx_http_acme_main_conf_t  *amcf;

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_acme_module);

    if (amcf->jobs == NGX_CONF_UNSET) {
        amcf->jobs = NGX_HTTP_ACME_JOBS;
    }

    return ngx_http_pki_needs_redis(cf, "acme", &amcf->file, amcf->line);
}


/* acme CA TEMPLATE;  acme off; */

static char *
ngx_http_acme(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_acme_loc_conf_t *alcf = conf;

    char                       *rv;
    ngx_http_core_loc_conf_t   *clcf;
    ngx_http_acme_main_conf_t  *amcf;

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_acme_module);

    rv = ngx_http_pki_proto_conf(cf, &alcf->enable, &alcf->ca, &alcf->tmpl,
                                 &amcf->file, &amcf->line);
    if (rv != NGX_CONF_OK || !alcf->enable) {
        return rv;
    }

    if (ngx_http_acme_template_check(cf, alcf->tmpl) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

#if (NGX_PCRE)
    if (clcf->regex) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"acme\" needs a prefix location, not a regex");
        return NGX_CONF_ERROR;
    }
#endif

    if (clcf->name.len == 0 || clcf->name.data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"acme\" needs a prefix location");
        return NGX_CONF_ERROR;
    }

    alcf->prefix = clcf->name;

    /* set here too (not only in the merge, which nested locations
     * inherit it by) to refuse another content handler in the location */
    rv = ngx_http_pki_content(cf, cmd, ngx_http_acme_handler);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    /* "location = /acme/directory": the directory would name resources
     * below it that the location does not match */
    if (clcf->exact_match) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"acme\" needs a prefix location, not an exact "
                           "match (\"=\"): its resources are below it");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* A template an ACME location issues with copies no subject attribute but
 * CN from the request: a client proves control of names, nothing else, so
 * an O, OU or C it chose must not reach a certificate (fixed values are
 * the template's own and stay allowed). */
static ngx_int_t
ngx_http_acme_template_check(ngx_conf_t *cf, pki_template_t *tmpl)
{
    const char  *attr;

    /* a DAC or NOC is no certificate for a validated name */
    if (tmpl != NULL && pki_matter_template_type(tmpl) != PKI_MATTER_NONE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "template \"%s\" issues Matter certificates, "
                           "which ACME does not: Matter certificates come "
                           "from the Matter endpoints and EST",
                           pki_template_name(tmpl));
        return NGX_ERROR;
    }

    attr = tmpl != NULL ? pki_acme_template_copies(tmpl) : NULL;
    if (attr == NULL) {
        return NGX_OK;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "template \"%s\" copies subject attribute \"%s\" "
                       "from the request, which no ACME challenge "
                       "validates: a template for ACME may copy only CN "
                       "(\"subject %s fixed VALUE\" sets it for every "
                       "certificate)", pki_template_name(tmpl), attr, attr);

    return NGX_ERROR;
}


/* acme_profile NAME TEMPLATE ["DESCRIPTION"];
 *
 * draft-ietf-acme-profiles: a newOrder with "profile": "NAME" is issued
 * with TEMPLATE instead of the template of "acme CA TEMPLATE" (which stays
 * the default).  The directory lists NAME with DESCRIPTION (default: the
 * name) in meta.profiles.  Whether the location's CA may issue with
 * TEMPLATE is checked once the location is complete (the "acme" directive
 * may come after this one), against the file and line kept here. */

static char *
ngx_http_acme_profile(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_acme_loc_conf_t *alcf = conf;

    u_char                   *p;
    ngx_str_t                *value;
    ngx_uint_t                i;
    ngx_http_acme_profile_t  *pr;

    (void) cmd;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > PKI_ACME_PROFILE_LEN) {
        goto bad_name;
    }

    for (p = value[1].data; p < value[1].data + value[1].len; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')
              || *p == '.' || *p == '_' || *p == '-'))
        {
            goto bad_name;
        }
    }

    if (alcf->profiles == NGX_CONF_UNSET_PTR) {
        alcf->profiles = ngx_array_create(cf->pool, 4,
                                          sizeof(ngx_http_acme_profile_t));
        if (alcf->profiles == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    pr = alcf->profiles->elts;
    for (i = 0; i < alcf->profiles->nelts; i++) {
        if (pr[i].name.len == value[1].len
            && ngx_strncmp(pr[i].name.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate acme_profile \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (alcf->profiles->nelts == PKI_ACME_MAX_PROFILES) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many acme_profile (at most %d)",
                           PKI_ACME_MAX_PROFILES);
        return NGX_CONF_ERROR;
    }

    pr = ngx_array_push(alcf->profiles);
    if (pr == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(pr, sizeof(ngx_http_acme_profile_t));

    pr->tmpl = ngx_http_pki_find_template(cf, &value[2]);
    if (pr->tmpl == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown template \"%V\" "
                           "(declare pki_template before use)", &value[2]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_acme_template_check(cf, pr->tmpl) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts == 4) {
        if (value[3].len == 0 || value[3].len > 200) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "acme_profile \"%V\": the description must "
                               "have 1 to 200 characters", &value[1]);
            return NGX_CONF_ERROR;
        }

        for (p = value[3].data; p < value[3].data + value[3].len; p++) {
            if (*p < ' ' || *p >= 0x7f) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "acme_profile \"%V\": the description "
                                   "must be printable ASCII", &value[1]);
                return NGX_CONF_ERROR;
            }
        }

        pr->description.data = (u_char *) ngx_http_pki_cstr(cf->pool,
                                                             &value[3]);
        if (pr->description.data == NULL) {
            return NGX_CONF_ERROR;
        }
        pr->description.len = value[3].len;
    }

    /* C strings for the core */
    pr->name.data = (u_char *) ngx_http_pki_cstr(cf->pool, &value[1]);
    if (pr->name.data == NULL) {
        return NGX_CONF_ERROR;
    }
    pr->name.len = value[1].len;

    pr->tmpl_name = value[2];
    pr->file = cf->conf_file->file.name;
    pr->line = cf->conf_file->line;

    return NGX_CONF_OK;

bad_name:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid acme_profile name \"%V\": 1 to %d of "
                       "a-z, 0-9, \".\", \"_\" and \"-\"",
                       &value[1], PKI_ACME_PROFILE_LEN);
    return NGX_CONF_ERROR;
}


/* The profiles of a location where ACME is on, for the core: each
 * template must be one the location's CA issues with. */
static char *
ngx_http_acme_merge_profiles(ngx_conf_t *cf, ngx_http_acme_loc_conf_t *conf,
    pki_acme_conf_t *ac)
{
    ngx_uint_t                i, n;
    pki_acme_profile_t       *out;
    ngx_http_acme_profile_t  *pr;

    if (conf->profiles == NULL) {
        return NGX_CONF_OK;
    }

    pr = conf->profiles->elts;
    n = conf->profiles->nelts;

    out = ngx_pcalloc(cf->pool, (n + 1) * sizeof(pki_acme_profile_t));
    if (out == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (!pki_ca_allows(conf->ca, pr[i].tmpl)) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "acme_profile \"%V\": CA \"%s\" does not allow "
                          "template \"%V\" in %V:%ui", &pr[i].name,
                          pki_ca_name(conf->ca), &pr[i].tmpl_name,
                          &pr[i].file, pr[i].line);
            return NGX_CONF_ERROR;
        }

        out[i].name = (const char *) pr[i].name.data;
        out[i].tmpl = pr[i].tmpl;
        out[i].description = pr[i].description.len
                             ? (const char *) pr[i].description.data : NULL;
    }

    ac->profiles = out;

    return NGX_CONF_OK;
}


/* acme_redis ADDRESS [db=N] [namespace=STR] [timeout=TIME]
 *            [password_file=FILE];
 *
 * A second store for the replay-safe ACME state (nonces, orders,
 * authorizations, challenges), which the operator may run with appendfsync
 * everysec; accounts and every certificate record stay in pki_redis. */

static char *
ngx_http_acme_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_acme_loc_conf_t *alcf = conf;

    char  *rv;

    (void) cmd;

    if (alcf->state_redis != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    rv = ngx_http_pki_redis_parse(cf, &alcf->state_redis);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    /* the admin API's account revocation and an account's deactivation
     * at any location reach it too */
    return ngx_http_pki_acme_state_add(cf, alcf->state_redis);
}


/*
 * An absolute http:// or https:// URL with a host, at most 400
 * characters of printable ASCII without space, quote, "<", ">" or "\\":
 * it goes into the directory's JSON and into Link headers as <URL>.
 * acme_base_url (a prefix for the server's own URLs) has no query or
 * fragment and no "/" at the end either.
 */
static ngx_int_t
ngx_http_acme_conf_url(ngx_conf_t *cf, ngx_command_t *cmd, ngx_str_t *url,
    ngx_uint_t base)
{
    u_char  *p, *host;

    if (url->len > 7 && ngx_strncasecmp(url->data, (u_char *) "http://", 7)
                        == 0)
    {
        host = url->data + 7;

    } else if (url->len > 8
               && ngx_strncasecmp(url->data, (u_char *) "https://", 8) == 0)
    {
        host = url->data + 8;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" must be an "
                           "http:// or https:// URL", &cmd->name);
        return NGX_ERROR;
    }

    if (url->len > 400 || host == url->data + url->len || *host == '/'
        || (base && url->data[url->len - 1] == '/'))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\": \"%V\" needs a "
                           "host, at most 400 characters%s", &cmd->name, url,
                           base ? " and no \"/\" at the end" : "");
        return NGX_ERROR;
    }

    for (p = url->data; p < url->data + url->len; p++) {
        if (*p <= ' ' || *p >= 0x7f || *p == '"' || *p == '<' || *p == '>'
            || *p == '\\' || (base && (*p == '?' || *p == '#')))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\": \"%V\" must "
                               "have no %sspace, quote, \"<\", \">\" or "
                               "\"\\\" and only printable ASCII",
                               &cmd->name, url,
                               base ? "query, fragment, " : "");
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* acme_terms_of_service URL, acme_website URL: the directory's meta (and
 * the terms in a Link header, RFC 8555 7.3.3); acme_renewal_explanation
 * URL: renewalInfo's explanationURL (RFC 9773) */
static char *
ngx_http_acme_meta_url(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_str_t  *value, *url;

    url = (ngx_str_t *) (p + cmd->offset);
    if (url->data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_acme_conf_url(cf, cmd, &value[1], 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    *url = value[1];

    return NGX_CONF_OK;
}


/* acme_base_url URL: the server's URL as clients reach it (the directory
 * is at URL/directory), for a server behind a proxy that terminates TLS or
 * serves it under another path.  Every URL the server hands out starts
 * with it, and a JWS "url" must too (RFC 8555 6.4). */
static char *
ngx_http_acme_base_url(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_acme_loc_conf_t *alcf = conf;

    u_char     *p;
    ngx_str_t  *value, *url;

    url = &alcf->base_url;
    if (url->data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    *url = value[1];

    if (ngx_http_acme_conf_url(cf, cmd, url, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* a C string for the core */
    p = ngx_pnalloc(cf->pool, url->len + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }
    ngx_memcpy(p, url->data, url->len);
    p[url->len] = '\0';
    url->data = p;

    return NGX_CONF_OK;
}
