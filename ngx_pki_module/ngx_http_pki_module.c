
/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * ngx_http_pki_module: the named objects every protocol module shares
 * (Redis, key vaults, certificate templates, CAs), the process model of
 * the keys (no PKCS#11 state crosses fork) and two request helpers
 * (thread pool post, capped request body).  No protocol logic lives here:
 * each directive line goes to the core (pki.h) as it is.
 *
 * Order matters: a pki_key_vault and the pki_templates a CA names must be
 * declared before that pki_ca, and pki_ca / pki_template blocks before the
 * protocol directives (est ...) that name them.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <dirent.h>

#include "ngx_http_pki_module.h"


#if !(NGX_THREADS)
#error ngx_http_pki_module needs nginx built --with-threads
#endif


#define NGX_HTTP_PKI_CRL_DEFAULT      3600    /* pki_crl_next_update */
#define NGX_HTTP_PKI_WATCHDOG_MSEC    250     /* ngx_http_pki_watchdog */
#define NGX_HTTP_PKI_TRIM_MSEC        5000    /* ngx_http_pki_trim */
#define NGX_HTTP_PKI_CA_EXPIRY_WARN   (30 * 86400)  /* a CA certificate
                                                       with less left: a
                                                       warning */
#define NGX_HTTP_PKI_NAME_MAX      PKI_NAME_MAX
#define NGX_HTTP_PKI_PASSWORD_MAX  1024

/* the workers' warning (ngx_http_pki_aof_check), and nginx -t's */
#define NGX_HTTP_PKI_AOF_OFF                                                  \
    "pki_redis \"%V\": Redis runs without its append-only file "              \
    "(appendonly no): certificate records and serial reservations "           \
    "written since the last snapshot are lost if Redis restarts; run it "     \
    "with appendonly yes and appendfsync always"

#define NGX_HTTP_PKI_FSYNC_LAZY                                               \
    "pki_redis \"%V\": Redis writes its append-only file without "          \
    "appendfsync always: certificate records and serial reservations "        \
    "answered in the last second or more are lost if its host crashes; "      \
    "run it with appendfsync always"


typedef struct {
    ngx_str_t                  name;
    ngx_str_t                  module;
    ngx_str_t                  token;
    pki_vault_t               *vault;
    ngx_msec_t                 hung_at;     /* the hung call's start */
    ngx_uint_t                 hung;        /* logged as hung */
    ngx_uint_t                 trimming;    /* a trim task in flight */
    unsigned                   trimmed;     /* what it closed */
} ngx_http_pki_vault_t;


typedef struct {
    ngx_str_t                  name;
    pki_template_t            *tmpl;
} ngx_http_pki_template_t;


typedef struct {
    ngx_str_t                  name;
    pki_ca_t                  *ca;
    pki_key_t                 *key;
} ngx_http_pki_ca_t;


typedef struct {
    ngx_array_t                vaults;      /* ngx_http_pki_vault_t */
    ngx_array_t                templates;   /* ngx_http_pki_template_t */
    ngx_array_t                cas;         /* ngx_http_pki_ca_t */
    pki_ca_t                 **ca_list;     /* every CA of cas, in order
                                               (ngx_http_pki_cas) */
    ngx_array_t                keys;        /* pki_key_t *: every key the
                                               modules use, CAs' included */
    ngx_array_t                acme_state;  /* pki_redis_t *: every
                                               acme_redis, whose copies of
                                               the ACME accounts and orders
                                               an account's revocation or
                                               deactivation reaches */
    pki_redis_t               *redis;
    ngx_str_t                  redis_addr;  /* pki_redis's address, for
                                               the log */
    ngx_array_t                probed;      /* pki_redis_t *: the stores
                                               nginx -t contacted */
    uid_t                      conf_uid;    /* who read the configuration
                                               (the master, nginx -t): */
    gid_t                      conf_gid;    /* a worker that runs as
                                               another user says so */
    ngx_str_t                  thread_pool_name;
    ngx_thread_pool_t         *thread_pool;
    ngx_thread_pool_t         *sign_pool;   /* pki_sign_thread_pool, or
                                               NULL: thread_pool */
    void                      *crl_states;  /* per worker, one per CA */
    time_t                     crl_refresh; /* shortest pki_crl_next_update
                                               of the pki_crl locations;
                                               0: no CRL is served */
    time_t                     crl_scep;    /* the same of the SCEP
                                               locations (GetCRL), for
                                               when no pki_crl one is */
    ngx_path_t                *crl_cache;   /* pki_crl_cache: the CRLs'
                                               local copies */
    char                      *crl_cache_dir;
    ngx_flag_t                 crl_cache_off;
    size_t                     body_memory; /* pki_body_memory */
} ngx_http_pki_main_conf_t;


/* pki_ca_certificate: a CA's certificate, made at configuration */
typedef struct {
    ngx_str_t                  der;
    ngx_str_t                  etag;        /* quoted */
    time_t                     not_before;  /* Last-Modified */
    time_t                     not_after;   /* no cache beyond it */
} ngx_http_pki_ca_cert_t;


typedef struct {
    ngx_flag_t                 crl;
    time_t                     crl_next_update;
    ngx_http_pki_ca_cert_t    *ca_cert;     /* pki_ca_certificate */
    ngx_flag_t                 admin_plain_http;
    off_t                      body_limit;  /* the client_max_body_size
                                               that ngx_http_pki_own_body_
                                               cap() turned off here, for
                                               other modules' reads;
                                               0: none turned off */
    size_t                     body_cap;    /* that limit where it is below
                                               the module's own cap, which
                                               the module then applies
                                               (ngx_http_pki_body_max());
                                               0: none */
    ngx_http_handler_pt        content;     /* ngx_http_pki_content():
                                               the location's, or its
                                               if/limit_except block's */
    ngx_str_t                  content_name; /* the directive, */
    ngx_str_t                  content_file; /* where it is */
    ngx_uint_t                 content_line;
} ngx_http_pki_loc_conf_t;


/* the inner lines of a pki_key_vault block */
typedef struct {
    ngx_str_t                  module;
    ngx_str_t                  token;
    ngx_str_t                  pin_file;
    ngx_msec_t                 call_timeout;
} ngx_http_pki_vault_conf_t;


typedef struct {
    ngx_http_pki_main_conf_t  *pmcf;
    pki_ca_t                  *ca;
    ngx_str_t                 *name;
} ngx_http_pki_ca_conf_t;


typedef struct {
    ngx_http_request_t           *request;
    ngx_http_pki_work_pt          work;
    ngx_http_pki_done_pt          done;
    void                         *data;
    ngx_event_t                   guard;
    ngx_uint_t                    lane;    /* 1: the signing pool's */
    unsigned long long            ticket;  /* transaction log, to sync */
    ngx_http_pki_audit_waiter_t   waiter;  /* on the list while it syncs */
} ngx_http_pki_task_ctx_t;


/*
 * While a task runs, its request has no timer of its own.  A worker that
 * shuts down gracefully (reload, binary upgrade) exits as soon as no
 * non-cancelable timer is left, which would drop the request with its
 * certificate already signed.  The guard timer keeps the worker until the
 * task is back; when it fires it only reports and re-arms.
 */
#define NGX_HTTP_PKI_GUARD_MSEC  30000


static void *ngx_http_pki_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_pki_init_main_conf(ngx_conf_t *cf, void *conf);
static ngx_int_t ngx_http_pki_init_module(ngx_cycle_t *cycle);
static void ngx_http_pki_check_order(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_pki_init_process(ngx_cycle_t *cycle);
static void ngx_http_pki_exit_process(ngx_cycle_t *cycle);
static void ngx_http_pki_watchdog(ngx_event_t *ev);
static void ngx_http_pki_trim(ngx_event_t *ev,
    ngx_http_pki_main_conf_t *pmcf);
static void ngx_http_pki_trim_work(void *data);
static void ngx_http_pki_trim_done(void *data);
static void ngx_http_pki_aof_check(ngx_log_t *log);
static char *ngx_http_pki_redis_check(ngx_conf_t *cf, pki_redis_t *r);
static ngx_int_t ngx_http_pki_post_lane(ngx_http_request_t *r,
    ngx_http_pki_work_pt work, ngx_http_pki_done_pt done, void *data,
    ngx_uint_t lane);
static ngx_uint_t ngx_http_pki_wait_threads(ngx_cycle_t *cycle);
static void ngx_http_pki_close_all(ngx_http_pki_main_conf_t *pmcf);
static void *ngx_http_pki_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_pki_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_pki_same_store(pki_redis_t *a, pki_redis_t *b);
static char *ngx_http_pki_crl_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_pki_crl_cache_init(ngx_conf_t *cf);
static char *ngx_http_pki_crl(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_pki_ca_certificate(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_pki_ca_certificate_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_pki_send_body(ngx_http_request_t *r, u_char *data,
    size_t len);
static ngx_int_t ngx_http_pki_send_der(ngx_http_request_t *r,
    ngx_str_t *type, ngx_str_t *der, time_t last_modified, ngx_str_t *etag,
    time_t max_age, ngx_uint_t revalidate);
static ngx_int_t ngx_http_pki_crl_handler(ngx_http_request_t *r);
static void ngx_http_pki_crl_free_all(ngx_http_pki_main_conf_t *pmcf);
static void ngx_http_pki_crl_refresh_start(ngx_cycle_t *cycle,
    ngx_http_pki_main_conf_t *pmcf);

static char *ngx_http_pki_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_pki_thread_pool(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_pki_key_vault(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_pki_key_vault_line(ngx_conf_t *cf, ngx_command_t *dummy,
    void *conf);
static void ngx_http_pki_pin_file_check(ngx_conf_t *cf, ngx_str_t *name,
    u_char *file);
static char *ngx_http_pki_template(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_pki_template_line(ngx_conf_t *cf, ngx_command_t *dummy,
    void *conf);
static char *ngx_http_pki_ca(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_http_pki_ca_line(ngx_conf_t *cf, ngx_command_t *dummy,
    void *conf);
static void ngx_http_pki_ca_expiry_warn(ngx_conf_t *cf, ngx_str_t *name,
    pki_ca_t *ca);
static char *ngx_http_pki_ca_finish(ngx_conf_t *cf,
    ngx_http_pki_main_conf_t *pmcf, ngx_str_t *name, pki_ca_t *ca);

static ngx_int_t ngx_http_pki_check_name(ngx_conf_t *cf, const char *what,
    ngx_str_t *name);
static const char **ngx_http_pki_argv(ngx_conf_t *cf, ngx_uint_t from);
static void ngx_http_pki_conf_error(ngx_conf_t *cf, pki_result_t *res,
    const char *fmt, ngx_str_t *name);
static ngx_int_t ngx_http_pki_read_secret(ngx_conf_t *cf, ngx_str_t *file,
    ngx_str_t *out);
static pki_vault_t *ngx_http_pki_find_vault_by_token(
    ngx_http_pki_main_conf_t *pmcf, const char *token);

static void ngx_http_pki_vault_cleanup(void *data);
static void ngx_http_pki_template_cleanup(void *data);
static pki_template_t *ngx_http_pki_matter_template(ngx_conf_t *cf,
    ngx_http_pki_main_conf_t *pmcf, ngx_str_t *name);
static void ngx_http_pki_ca_cleanup(void *data);
static void ngx_http_pki_key_cleanup(void *data);
static void ngx_http_pki_redis_cleanup(void *data);
static void ngx_http_pki_secret_cleanup(void *data);

static void ngx_http_pki_thread_handler(void *data, ngx_log_t *log);
static void ngx_http_pki_thread_event_handler(ngx_event_t *ev);
static void ngx_http_pki_task_resume(void *data);
static void ngx_http_pki_guard_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_pki_postconfiguration(ngx_conf_t *cf);
static char *ngx_http_pki_admin(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_pki_admin_handler(ngx_http_request_t *r);
static void ngx_http_pki_admin_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_pki_admin_body_error(ngx_http_request_t *r,
    ngx_int_t rc);
static ngx_int_t ngx_http_pki_admin_unavailable(ngx_http_request_t *r);
static ngx_int_t ngx_http_pki_admin_no_tls(ngx_http_request_t *r);
static void ngx_http_pki_admin_work(void *data);
static void ngx_http_pki_admin_done(ngx_http_request_t *r, void *data);
static void ngx_http_pki_admin_wipe(void *data);
static void ngx_http_pki_admin_withdraw_work(void *data);
static void ngx_http_pki_admin_withdrawn(ngx_http_request_t *r, void *data);
static ngx_int_t ngx_http_pki_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_str_t ngx_http_pki_log_value(ngx_pool_t *pool, ngx_str_t *value);


/*
 * A body being read: its cap, and the bytes so far, gathered by the body
 * filter in memory of their own (see ngx_http_pki_body_filter()).
 */
typedef struct {
    size_t                     max;
    off_t                      received;
    u_char                    *data;
    size_t                     len;
    size_t                     size;
    unsigned                   first_read:1;
    unsigned                   over:1;
    unsigned                   busy:1;      /* over the budget: 503 */
    size_t                     held;        /* of the budget: size */
    unsigned                   release:1;   /* its cleanup is set */
    unsigned                   gathering:1;
    unsigned                   other:1;     /* another module reads it */
} ngx_http_pki_body_ctx_t;


/* request bodies a worker holds in memory at once by default
 * (pki_body_memory; see ngx_http_pki_body_hold()) */
#define NGX_HTTP_PKI_BODY_BUDGET  (64 * 1024 * 1024)

/* the first buffer of a body: a page, then doubled as bytes arrive */
#define NGX_HTTP_PKI_BODY_FIRST   4096

/* pki_body_memory takes a body's first buffer at least; the largest body
 * cap of a location served by a module of ours (ngx_http_pki_own_body_cap,
 * from the merges), checked against it at postconfiguration */
static char *ngx_http_pki_body_memory_check(ngx_conf_t *cf, void *post,
    void *data);
static ngx_conf_post_t  ngx_http_pki_body_memory_post = {
    ngx_http_pki_body_memory_check
};
static size_t           ngx_http_pki_cap_max;

static size_t  ngx_http_pki_body_budget = NGX_HTTP_PKI_BODY_BUDGET;


static ngx_int_t ngx_http_pki_body_other(ngx_http_request_t *r,
    ngx_http_pki_body_ctx_t *bctx, ngx_chain_t *in);
static ngx_int_t ngx_http_pki_body_gather(ngx_http_request_t *r,
    ngx_http_pki_body_ctx_t *bctx, ngx_chain_t *in);
static size_t ngx_http_pki_body_size(ngx_http_request_t *r,
    ngx_http_pki_body_ctx_t *bctx, size_t need);
static ngx_uint_t ngx_http_pki_body_fits(size_t n);
static ngx_uint_t ngx_http_pki_lane_full(ngx_uint_t lane);
static ngx_uint_t ngx_http_pki_tp_lane(ngx_thread_pool_t *tp);
static void ngx_http_pki_body_busy(ngx_http_request_t *r);
static ngx_int_t ngx_http_pki_body_hold(ngx_http_request_t *r,
    ngx_http_pki_body_ctx_t *bctx, size_t size);
static void ngx_http_pki_body_free(ngx_http_request_t *r,
    ngx_http_pki_body_ctx_t *bctx);


static ngx_http_request_body_filter_pt  ngx_http_next_request_body_filter;


static ngx_command_t  ngx_http_pki_commands[] = {

    { ngx_string("pki_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_pki_redis_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("pki_body_memory"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_pki_main_conf_t, body_memory),
      &ngx_http_pki_body_memory_post },

    { ngx_string("pki_thread_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_pki_thread_pool,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("pki_sign_thread_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_pki_thread_pool,
      NGX_HTTP_MAIN_CONF_OFFSET,
      1,
      NULL },

    { ngx_string("pki_key_vault"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_BLOCK|NGX_CONF_TAKE1,
      ngx_http_pki_key_vault,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("pki_template"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_BLOCK|NGX_CONF_TAKE1,
      ngx_http_pki_template,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("pki_ca"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_BLOCK|NGX_CONF_TAKE1,
      ngx_http_pki_ca,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("pki_admin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_pki_admin,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("pki_admin_plain_http"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_pki_loc_conf_t, admin_plain_http),
      NULL },

    { ngx_string("pki_crl"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_pki_crl,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("pki_ca_certificate"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_pki_ca_certificate,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("pki_crl_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_pki_crl_cache,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_pki_main_conf_t, crl_cache),
      NULL },

    { ngx_string("pki_crl_next_update"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_pki_loc_conf_t, crl_next_update),
      NULL },

      ngx_null_command
};


/* private to the pki_key_vault block: dispatched by its cf->handler */
static ngx_command_t  ngx_http_pki_key_vault_commands[] = {

    { ngx_string("module"),
      NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      0,
      offsetof(ngx_http_pki_vault_conf_t, module),
      NULL },

    { ngx_string("token"),
      NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      0,
      offsetof(ngx_http_pki_vault_conf_t, token),
      NULL },

    { ngx_string("pin_file"),
      NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      0,
      offsetof(ngx_http_pki_vault_conf_t, pin_file),
      NULL },

    { ngx_string("call_timeout"),
      NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      0,
      offsetof(ngx_http_pki_vault_conf_t, call_timeout),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_pki_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_pki_postconfiguration,        /* postconfiguration */

    ngx_http_pki_create_main_conf,         /* create main configuration */
    ngx_http_pki_init_main_conf,           /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_pki_create_loc_conf,          /* create location configuration */
    ngx_http_pki_merge_loc_conf            /* merge location configuration */
};


ngx_module_t  ngx_http_pki_module = {
    NGX_MODULE_V1,
    &ngx_http_pki_module_ctx,              /* module context */
    ngx_http_pki_commands,                 /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_pki_init_module,              /* init module */
    ngx_http_pki_init_process,             /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_pki_exit_process,             /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_pki_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_pki_main_conf_t  *pmcf;

    if (!pki_init()) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "pki_init() failed");
        return NULL;
    }

    pmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_pki_main_conf_t));
    if (pmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     pmcf->redis = NULL;
     *     pmcf->redis_addr = { 0, NULL };
     *     pmcf->thread_pool_name = { 0, NULL };
     *     pmcf->thread_pool = NULL;
     *     pmcf->sign_pool = NULL;
     */

    if (ngx_array_init(&pmcf->vaults, cf->pool, 2,
                       sizeof(ngx_http_pki_vault_t))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&pmcf->templates, cf->pool, 4,
                       sizeof(ngx_http_pki_template_t))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&pmcf->cas, cf->pool, 2, sizeof(ngx_http_pki_ca_t))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&pmcf->keys, cf->pool, 4, sizeof(pki_key_t *))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&pmcf->acme_state, cf->pool, 1, sizeof(pki_redis_t *))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&pmcf->probed, cf->pool, 1, sizeof(pki_redis_t *))
        != NGX_OK)
    {
        return NULL;
    }

    pmcf->body_memory = NGX_CONF_UNSET_SIZE;
    pmcf->crl_cache_off = NGX_CONF_UNSET;
    pmcf->conf_uid = geteuid();
    pmcf->conf_gid = getegid();
    ngx_http_pki_cap_max = 0;

    return pmcf;
}


static char *
ngx_http_pki_body_memory_check(ngx_conf_t *cf, void *post, void *data)
{
    size_t  *sp = data;

    if (*sp < NGX_HTTP_PKI_BODY_FIRST) {
        return "is below 4k, a request body's first buffer: every body "
               "would be refused with 503";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_pki_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_pki_main_conf_t *pmcf = conf;

    if (pmcf->body_memory == NGX_CONF_UNSET_SIZE) {
        pmcf->body_memory = NGX_HTTP_PKI_BODY_BUDGET;
    }

    if (pmcf->thread_pool_name.data == NULL) {
        ngx_str_set(&pmcf->thread_pool_name, "default");

        pmcf->thread_pool = ngx_thread_pool_add(cf, &pmcf->thread_pool_name);
        if (pmcf->thread_pool == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (pmcf->cas.nelts > 0) {
        ngx_uint_t          i;
        ngx_http_pki_ca_t  *pca;

        pmcf->ca_list = ngx_palloc(cf->pool,
                                   pmcf->cas.nelts * sizeof(pki_ca_t *));
        if (pmcf->ca_list == NULL) {
            return NGX_CONF_ERROR;
        }

        pca = pmcf->cas.elts;
        for (i = 0; i < pmcf->cas.nelts; i++) {
            pmcf->ca_list[i] = pca[i].ca;
        }
    }

    /* one queue under two sets of counts: a hung token would hold the
     * threads of the Redis work too, which the directive exists to stop */
    if (pmcf->sign_pool != NULL && pmcf->sign_pool == pmcf->thread_pool) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"pki_sign_thread_pool\" names the pool of "
                           "\"pki_thread_pool\" (\"%V\"); give it a "
                           "thread_pool of its own, or leave it out",
                           &pmcf->thread_pool_name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * The master parsed the configuration and opened every vault and key to
 * validate them; it closes them all before forking the workers, which open
 * their own (PKCS#11 state must not be inherited across fork).
 */

static ngx_int_t
ngx_http_pki_init_module(ngx_cycle_t *cycle)
{
    ngx_http_pki_main_conf_t  *pmcf;

    ngx_http_pki_check_order(cycle);

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_pki_module);
    if (pmcf == NULL) {
        return NGX_OK;
    }

    ngx_http_pki_close_all(pmcf);

    return NGX_OK;
}


static ngx_event_t  ngx_http_pki_watchdog_ev;    /* this worker's */
static ngx_uint_t   ngx_http_pki_trim_ticks;     /* watchdog rounds since
                                                    the last trim check */

/* this worker's pki_redis, and whether its append-only file was last seen
 * on (1), on without appendfsync always (2, warned), off (0, warned) or
 * not yet known (-1): ngx_http_pki_aof_check() */
static pki_redis_t  *ngx_http_pki_aof_store;
static ngx_str_t     ngx_http_pki_aof_addr;
static int           ngx_http_pki_aof_seen = -1;


/*
 * Never fails: a failed init_process makes the worker exit for good and
 * its clients hang.  A vault or key that does not open is logged; signing
 * then answers "unavailable" (503) and the core reopens on the next use.
 * Only workers (or a single process) serve requests: nginx's helpers (the
 * cache manager and loader) run init_process too, and must not load the
 * PKCS#11 module nor log in to the token.
 */

static ngx_int_t
ngx_http_pki_init_process(ngx_cycle_t *cycle)
{
    char                       who[160];
    ngx_uint_t                 i;
    pki_key_t                **key;
    pki_result_t               res;
    ngx_http_pki_vault_t      *vault;
    ngx_http_pki_main_conf_t  *pmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_pki_module);
    if (pmcf == NULL) {
        return NGX_OK;
    }

    ngx_http_pki_body_budget = pmcf->body_memory;

    /* before any pool thread starts: a permission error names "the worker"
     * (pki_process_user()) */
    if (ngx_process == NGX_PROCESS_WORKER) {
        pki_set_process_role("the worker");
    }

    /* a worker that runs as another user than the one that read the
     * configuration (nginx's "user"): the token that opened there may be
     * closed to it */
    who[0] = '\0';
    if (geteuid() != pmcf->conf_uid || getegid() != pmcf->conf_gid) {
        (void) pki_process_user(who, sizeof(who));
    }

    vault = pmcf->vaults.elts;

    for (i = 0; i < pmcf->vaults.nelts; i++) {
        pki_result_init(&res);

        if (pki_vault_open(vault[i].vault, &res) != PKI_OK) {
            ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                          "pki_key_vault \"%V\" did not open: %s%s%s%s%s%s%s",
                          &vault[i].name, res.detail,
                          res.log[0] ? " (" : "", res.log,
                          res.log[0] ? ")" : "",
                          who[0] ? " (" : "", who,
                          who[0] ? ", not as the user that read the "
                                   "configuration; it opens the token "
                                   "itself: that user must be able to read "
                                   "the token's files (SoftHSM: the token "
                                   "directory and SOFTHSM2_CONF))" : "");

        } else if (res.log[0] != '\0') {
            /* the PIN's memory could not be locked against swapping */
            ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                          "pki_key_vault \"%V\": %s", &vault[i].name,
                          res.log);
        }
    }

    key = pmcf->keys.elts;

    for (i = 0; i < pmcf->keys.nelts; i++) {
        pki_result_init(&res);

        if (pki_key_open(key[i], &res) != PKI_OK) {
            ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                          "key \"%s\" did not open: %s%s%s%s%s%s%s",
                          pki_key_ref(key[i]), res.detail,
                          res.log[0] ? " (" : "", res.log,
                          res.log[0] ? ")" : "",
                          who[0] ? " (" : "", who,
                          who[0] ? ", not as the user that read the "
                                   "configuration)" : "");
        }
    }

    if (pmcf->redis) {
        pki_redis_disconnect(pmcf->redis);
    }

    ngx_http_pki_aof_store = pmcf->redis;
    ngx_http_pki_aof_addr = pmcf->redis_addr;

    ngx_http_pki_crl_refresh_start(cycle, pmcf);

    if (pmcf->vaults.nelts) {
        ngx_http_pki_watchdog_ev.handler = ngx_http_pki_watchdog;
        ngx_http_pki_watchdog_ev.data = pmcf;
        ngx_http_pki_watchdog_ev.log = cycle->log;
        ngx_http_pki_watchdog_ev.cancelable = 1;
        ngx_add_timer(&ngx_http_pki_watchdog_ev,
                      NGX_HTTP_PKI_WATCHDOG_MSEC);
    }

    return NGX_OK;
}


/*
 * The token watchdog of this worker: one line when a vault becomes hung (a
 * token call has not returned for its call_timeout, pki_vault_hung()) and
 * one when it answers again.  While it is hung, its keys answer 503 from
 * the core at once, and the protocol modules ask ngx_http_pki_key_hung()
 * before they post a task that would sign: not a thread more waits for it.
 */

static void
ngx_http_pki_watchdog(ngx_event_t *ev)
{
    long                       age;
    ngx_msec_t                 d;
    ngx_uint_t                 i;
    ngx_http_pki_vault_t      *vault;
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ev->data;
    vault = pmcf->vaults.elts;

    for (i = 0; i < pmcf->vaults.nelts; i++) {
        age = pki_vault_hung(vault[i].vault);

        if (age && !vault[i].hung) {
            vault[i].hung = 1;
            vault[i].hung_at = ngx_current_msec - (ngx_msec_t) age;

            ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                          "token \"%s\" of vault \"%V\": a call has not "
                          "returned for %l s; its keys answer 503 until it "
                          "does", pki_vault_token(vault[i].vault),
                          &vault[i].name,
                          age < 1500 ? 1 : (age + 500) / 1000);

        } else if (!age && vault[i].hung) {
            vault[i].hung = 0;
            d = ngx_current_msec - vault[i].hung_at;

            ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                          "token \"%s\" of vault \"%V\" answers again "
                          "after %M s", pki_vault_token(vault[i].vault),
                          &vault[i].name,
                          d < 1500 ? 1 : (d + 500) / 1000);
        }
    }

    if (++ngx_http_pki_trim_ticks
        >= NGX_HTTP_PKI_TRIM_MSEC / NGX_HTTP_PKI_WATCHDOG_MSEC)
    {
        ngx_http_pki_trim_ticks = 0;
        ngx_http_pki_trim(ev, pmcf);
    }

    ngx_add_timer(ev, NGX_HTTP_PKI_WATCHDOG_MSEC);
}


/*
 * Idle sessions.  A pooled PKCS#11 session of a key idle for 30 s is closed
 * when the key's next session comes back; a worker that signs nothing more
 * kept its whole pool until it signed again or exited, and on an HSM with
 * a small session limit (YubiHSM 2: 16 for all processes) the other
 * workers found none (503).  Every NGX_HTTP_PKI_TRIM_MSEC the watchdog
 * asks each vault whether some are due (pki_vault_idle_due(): no token
 * call, no wait for a lock) and posts one task per vault at most that
 * closes them in a pool thread (pki_vault_trim_idle()).  Not while
 * exiting, not for a hung vault, not when the pool's queue is full.
 */

static void
ngx_http_pki_trim(ngx_event_t *ev, ngx_http_pki_main_conf_t *pmcf)
{
    ngx_uint_t             i;
    ngx_thread_pool_t     *tp;
    ngx_http_pki_vault_t  *vault;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    tp = NULL;
    vault = pmcf->vaults.elts;

    for (i = 0; i < pmcf->vaults.nelts; i++) {

        if (vault[i].trimming || vault[i].hung
            || !pki_vault_idle_due(vault[i].vault))
        {
            continue;
        }

        /* a token call: in the signing pool when there is one, so that
         * a token that hangs in it holds a thread of that pool only */
        if (tp == NULL) {
            tp = pmcf->sign_pool != NULL
                 ? pmcf->sign_pool
                 : ngx_http_pki_cycle_thread_pool((ngx_cycle_t *) ngx_cycle);
            if (tp == NULL
                || ngx_http_pki_lane_full(ngx_http_pki_tp_lane(tp)))
            {
                return;
            }
        }

        if (ngx_http_pki_post_detached_tp(tp, ev->log,
                                          ngx_http_pki_trim_work,
                                          ngx_http_pki_trim_done,
                                          &vault[i])
            == NGX_OK)
        {
            vault[i].trimming = 1;
        }
    }
}


/* a pool thread: no nginx calls */
static void
ngx_http_pki_trim_work(void *data)
{
    ngx_http_pki_vault_t  *vault = data;

    vault->trimmed = pki_vault_trim_idle(vault->vault);
}


static void
ngx_http_pki_trim_done(void *data)
{
    ngx_http_pki_vault_t  *vault = data;

    vault->trimming = 0;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "pki vault \"%V\": %ui idle session(s) closed",
                   &vault->name, (ngx_uint_t) vault->trimmed);
}


/* see ngx_http_pki_module.h */
ngx_uint_t
ngx_http_pki_key_hung(pki_key_t *key)
{
    return pki_key_hung(key) != 0;
}


static void
ngx_http_pki_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_pki_module);
    if (pmcf == NULL) {
        return;
    }

    ngx_http_pki_audit_exit_threads();
    ngx_http_pki_threads_left = ngx_http_pki_wait_threads(cycle);

    /* the exit checkpoint is signed while its key's vault is open */
    ngx_http_pki_audit_exit(cycle);

    if (ngx_http_pki_threads_left) {
        /* nginx skips its pools' exit when their queue is full (a worker
         * stopped under load): tasks still sign, read CRLs, use Redis and
         * append to the log.  Returning would let nginx free the cycle's
         * pool (keys, vaults, CAs, the pool's own queue) and run
         * OPENSSL_cleanup under them: the process ends here instead, with
         * the log's queued entries and checkpoint written above */
        if (ngx_process == NGX_PROCESS_SINGLE) {
            /* master_process off: nginx's own exit would destroy the
             * same pool and run OPENSSL_cleanup.  What it does that
             * outlives the process (the pid file, unix sockets) is done
             * here instead */
            ngx_delete_pidfile(cycle);
            ngx_close_listening_sockets(cycle);
        }

        /* (the exit hooks of modules loaded after this one are skipped
         * too: ACME's notice of validations cut short) */
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "pki: exit with pool threads still running");
        _exit(0);
    }

    ngx_http_pki_crl_free_all(pmcf);
    ngx_http_pki_close_all(pmcf);
}


/*
 * The pool threads that ran a task of these modules, by kernel thread id.
 * Only they hold what the exit must outlive (a hiredis connection, a
 * PKCS#11 session in use, OpenSSL's per-thread state): a thread that a
 * PKCS#11 library keeps for itself is not waited for.  More distinct
 * threads than the table holds: every thread of the process counts, as
 * if nothing were known.
 */
#define NGX_HTTP_PKI_TIDS  512

static ngx_uint_t           ngx_http_pki_tasks_posted;  /* event loop */
static ngx_atomic_t         ngx_http_pki_tasks_entered; /* pool threads */
static ngx_tid_t            ngx_http_pki_tids[NGX_HTTP_PKI_TIDS];
static ngx_uint_t           ngx_http_pki_ntids;
static ngx_uint_t           ngx_http_pki_tids_full;
static pthread_mutex_t      ngx_http_pki_tids_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread ngx_uint_t  ngx_http_pki_tid_known;


/* see ngx_http_pki_module.h */
ngx_int_t
ngx_http_pki_thread_post(ngx_thread_pool_t *tp, ngx_thread_task_t *task)
{
    if (ngx_thread_task_post(tp, task) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_pki_tasks_posted++;

    return NGX_OK;
}


void
ngx_http_pki_thread_enter(void)
{
    if (ngx_http_pki_tid_known) {
        (void) ngx_atomic_fetch_add(&ngx_http_pki_tasks_entered, 1);
        return;
    }

    ngx_http_pki_tid_known = 1;

    (void) pthread_mutex_lock(&ngx_http_pki_tids_lock);

    if (ngx_http_pki_ntids < NGX_HTTP_PKI_TIDS) {
        ngx_http_pki_tids[ngx_http_pki_ntids++] = ngx_thread_tid();

    } else {
        ngx_http_pki_tids_full = 1;
    }

    /* counted once its id is in the table: equal counts mean every
     * thread that runs a task of ours is known */
    (void) ngx_atomic_fetch_add(&ngx_http_pki_tasks_entered, 1);

    (void) pthread_mutex_unlock(&ngx_http_pki_tids_lock);
}


/* threads of this process still running: those that ran a task, besides
 * the calling one; every thread when the table overflowed, or while a
 * task posted has not started (it is still queued, and may start on a
 * pool thread that ran none of ours, one shared with aio threads, say) */
static ngx_uint_t
ngx_http_pki_threads_running(void)
{
    DIR            *dir;
    char            path[64];
    ngx_uint_t      i, n, full, ntids;
    ngx_tid_t       tids[NGX_HTTP_PKI_TIDS];
    struct dirent  *de;

    (void) pthread_mutex_lock(&ngx_http_pki_tids_lock);
    full = ngx_http_pki_tids_full
           || ngx_http_pki_tasks_posted
              != (ngx_uint_t) ngx_atomic_fetch_add(
                                  &ngx_http_pki_tasks_entered, 0);
    ntids = ngx_http_pki_ntids;
    ngx_memcpy(tids, ngx_http_pki_tids, ntids * sizeof(ngx_tid_t));
    (void) pthread_mutex_unlock(&ngx_http_pki_tids_lock);

    n = 0;

    if (!full) {
        for (i = 0; i < ntids; i++) {
            (void) ngx_sprintf((u_char *) path, "/proc/self/task/%P%Z",
                               (ngx_pid_t) tids[i]);
            if (access(path, F_OK) == 0) {
                n++;
            }
        }

        return n;
    }

    dir = opendir("/proc/self/task");
    if (dir == NULL) {
        return 0;
    }

    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] != '.') {
            n++;
        }
    }

    closedir(dir);

    return n > 1 ? n - 1 : 0;
}


/*
 * nginx's thread pools are gone by now (a core module, it exits first),
 * but their threads are not joined: each one is told to pthread_exit() and
 * may still be running its thread-specific destructors (hiredis
 * connections, OpenSSL's per-thread state) when this runs.  Unloading the
 * PKCS#11 module under them crashed workers now and then during graceful
 * shutdown.  Wait, briefly and boundedly, until every thread that ran a
 * task is gone; 1: threads are left.
 */
static ngx_uint_t
ngx_http_pki_wait_threads(ngx_cycle_t *cycle)
{
    ngx_uint_t  tries;

    for (tries = 0; tries < 200; tries++) {
        if (ngx_http_pki_threads_running() == 0) {
            return 0;
        }

        ngx_msleep(5);
    }

    ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                  "pki: worker threads still running at exit");

    return 1;
}


static void
ngx_http_pki_close_all(ngx_http_pki_main_conf_t *pmcf)
{
    ngx_uint_t             i;
    pki_key_t            **key;
    ngx_http_pki_vault_t  *vault;

    key = pmcf->keys.elts;

    for (i = 0; i < pmcf->keys.nelts; i++) {
        pki_key_close(key[i]);
    }

    vault = pmcf->vaults.elts;

    for (i = 0; i < pmcf->vaults.nelts; i++) {
        pki_vault_close(vault[i].vault);
    }
}


/* pki_redis unix:/path | host[:port] [db=N] [namespace=STR] [timeout=TIME]
 *           [password_file=FILE]; */

static char *
ngx_http_pki_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_pki_main_conf_t *pmcf = conf;

    char          *rv;
    ngx_str_t     *value;
    ngx_uint_t     i;
    pki_redis_t  **state;

    (void) cmd;

    if (pmcf->redis) {
        return "is duplicate";
    }

    value = cf->args->elts;
    pmcf->redis_addr = value[1];

    rv = ngx_http_pki_redis_parse(cf, &pmcf->redis);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    state = pmcf->acme_state.elts;

    for (i = 0; i < pmcf->acme_state.nelts; i++) {
        if (ngx_http_pki_same_store(pmcf->redis, state[i])) {
            return "is the store of an acme_redis above (the same server, "
                   "database and namespace): the copies of ACME accounts "
                   "kept there would expire or delete the accounts "
                   "themselves; give that acme_redis another namespace= "
                   "or leave it out";
        }
    }

    return NGX_CONF_OK;
}


/* 1 when a and b hold the same keys: the same server, database and
 * password, and the same namespace. */
static ngx_int_t
ngx_http_pki_same_store(pki_redis_t *a, pki_redis_t *b)
{
    return pki_redis_same(a, b)
           && ngx_strcmp(pki_redis_ns(a), pki_redis_ns(b)) == 0;
}


/* An acme_redis store (ngx_acme_module), remembered so that the admin
 * API's account revocation and an account's own deactivation reach its
 * copies of the ACME accounts and the orders in it. */
char *
ngx_http_pki_acme_state_add(ngx_conf_t *cf, pki_redis_t *r)
{
    pki_redis_t               **slot;
    ngx_http_pki_main_conf_t   *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pki_module);

    /* acme_redis keeps a copy of each account under the account's own
     * key name, with a TTL, and deletes it on a change: in pki_redis's
     * key space that would be the account itself */
    if (pmcf->redis != NULL && ngx_http_pki_same_store(pmcf->redis, r)) {
        return "is the store of pki_redis (the same server, database and "
               "namespace): the copies of ACME accounts it keeps would "
               "expire or delete the accounts themselves; give it another "
               "namespace= or leave it out";
    }

    slot = ngx_array_push(&pmcf->acme_state);
    if (slot == NULL) {
        return NGX_CONF_ERROR;
    }

    *slot = r;

    return NGX_CONF_OK;
}


/* The arguments of a pki_redis-like directive (the address, then the
 * options) into a new store freed with the configuration; also used by
 * acme_redis (ngx_acme_module). */
char *
ngx_http_pki_redis_parse(ngx_conf_t *cf, pki_redis_t **out)
{
    u_char              *p, *last;
    ngx_int_t            n;
    ngx_str_t           *value, s, host, file, secret;
    ngx_uint_t           i, k, seen, bit;
    pki_result_t         res;
    pki_redis_conf_t     rc;
    ngx_pool_cleanup_t  *cln;

    static ngx_str_t  opts[] = {
        ngx_string("db="), ngx_string("namespace="), ngx_string("timeout="),
        ngx_string("password_file="), ngx_null_string
    };

    value = cf->args->elts;

    ngx_memzero(&rc, sizeof(pki_redis_conf_t));
    rc.port = 6379;
    rc.db = 0;
    rc.ns = "pki:";
    rc.timeout_ms = 1000;

    if (value[1].len > 5 && ngx_strncmp(value[1].data, "unix:", 5) == 0) {
        s.data = value[1].data + 5;
        s.len = value[1].len - 5;

        rc.unix_path = ngx_http_pki_cstr(cf->pool, &s);
        if (rc.unix_path == NULL) {
            return NGX_CONF_ERROR;
        }

    } else {
        host = value[1];
        last = host.data + host.len;

        if (host.len && host.data[0] == '[') {
            /* [IPv6]:port */
            p = ngx_strlchr(host.data, last, ']');
            if (p == NULL) {
                goto invalid_address;
            }

            host.data++;
            host.len = p - host.data;
            p++;

            if (p != last && *p != ':') {
                goto invalid_address;
            }

        } else {
            p = ngx_strlchr(host.data, last, ':');
            if (p) {
                host.len = p - host.data;
            }
        }

        if (p && p < last) {
            n = ngx_atoi(p + 1, last - p - 1);
            if (n < 1 || n > 65535) {
                goto invalid_address;
            }

            rc.port = (int) n;
        }

        if (host.len == 0) {
            goto invalid_address;
        }

        rc.host = ngx_http_pki_cstr(cf->pool, &host);
        if (rc.host == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    seen = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        /* each option once: the last one winning would hide a typo or a
         * template that set it twice */
        p = ngx_strlchr(value[i].data, value[i].data + value[i].len, '=');
        bit = 0;

        if (p != NULL) {
            for (k = 0; opts[k].len; k++) {
                if ((size_t) (p - value[i].data + 1) == opts[k].len
                    && ngx_strncmp(value[i].data, opts[k].data,
                                   opts[k].len) == 0)
                {
                    bit = (ngx_uint_t) 1 << k;
                    break;
                }
            }
        }

        if (bit != 0 && (seen & bit)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "duplicate parameter "
                               "\"%*s\"", (size_t) (p - value[i].data + 1),
                               value[i].data);
            return NGX_CONF_ERROR;
        }

        seen |= bit;

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            n = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (n == NGX_ERROR || n > 65535) {
                goto invalid;
            }

            rc.db = (int) n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "namespace=", 10) == 0) {
            s.data = value[i].data + 10;
            s.len = value[i].len - 10;

            rc.ns = ngx_http_pki_cstr(cf->pool, &s);
            if (rc.ns == NULL) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            n = ngx_parse_time(&s, 0);
            if (n == NGX_ERROR || n == 0 || n > 3600000) {
                goto invalid;
            }

            rc.timeout_ms = (int) n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "password_file=", 14) == 0) {
            file.data = value[i].data + 14;
            file.len = value[i].len - 14;

            if (ngx_http_pki_signaller()) {
                /* "nginx -s" connects to no Redis: the secret unread */
                continue;
            }

            if (ngx_http_pki_read_secret(cf, &file, &secret) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            rc.password = (const char *) secret.data;
            continue;
        }

        goto invalid;
    }

    pki_result_init(&res);

    *out = pki_redis_new(&rc, &res);
    if (*out == NULL) {
        ngx_http_pki_conf_error(cf, &res, "redis \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        pki_redis_free(*out);
        *out = NULL;
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_pki_redis_cleanup;
    cln->data = *out;

    if (ngx_test_config) {
        return ngx_http_pki_redis_check(cf, *out);
    }

    return NGX_CONF_OK;

invalid_address:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid redis address \"%V\"", &value[1]);
    return NGX_CONF_ERROR;

invalid:

    /* an unknown parameter's value is not shown: it may be a secret
     * ("password=..." for password_file=) */
    p = ngx_strlchr(value[i].data, value[i].data + value[i].len, '=');

    if (p != NULL && ngx_strncmp(value[i].data, "db=", 3) != 0
        && ngx_strncmp(value[i].data, "namespace=", 10) != 0
        && ngx_strncmp(value[i].data, "timeout=", 8) != 0)
    {
        value[i].len = p - value[i].data;
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter "
                           "\"%V=...\" (its value not shown)", &value[i]);
        return NGX_CONF_ERROR;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


/*
 * "nginx -t" only (not a start, a reload's master nor the signaller, when
 * Redis may come up after nginx): contacts each distinct store once
 * (pki_redis_probe), within NGX_HTTP_PKI_PROBE_MSEC whatever its timeout,
 * and warns when it does not answer, with the cause.  Nothing is refused:
 * the workers connect (and reconnect) by themselves, the requests answer
 * 503 meanwhile.  For pki_redis the workers' warning about a Redis
 * without its append-only file comes now too.
 */

#define NGX_HTTP_PKI_PROBE_MSEC  1000

static char *
ngx_http_pki_redis_check(ngx_conf_t *cf, pki_redis_t *r)
{
    char                      *user;
    ngx_uid_t                  uid;
    ngx_gid_t                  gid;
    ngx_str_t                 *value;
    ngx_uint_t                 i;
    pki_result_t               res;
    pki_redis_t              **seen, **slot;
    struct group              *grp;
    struct passwd             *pwd;
    ngx_core_conf_t           *ccf;
    pki_redis_probe_t          rc;
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pki_module);
    value = cf->args->elts;

    seen = pmcf->probed.elts;

    for (i = 0; i < pmcf->probed.nelts; i++) {
        if (pki_redis_same(seen[i], r)) {
            /* said once; its aof_enabled as that probe saw it */
            r = seen[i];
            goto aof;
        }
    }

    slot = ngx_array_push(&pmcf->probed);
    if (slot == NULL) {
        return NGX_CONF_ERROR;
    }

    *slot = r;

    pki_result_init(&res);

    /* run as root, as the workers are not: a socket they may not use is
     * judged by its modes for the user they will run as (the "user"
     * directive, or nginx's default when it comes later or not at all) */
    ccf = (ngx_core_conf_t *) ngx_get_conf(cf->cycle->conf_ctx,
                                           ngx_core_module);
    uid = 0;
    gid = 0;
    user = NULL;

    if (geteuid() == 0 && ccf != NULL) {
        if (ccf->user != (ngx_uid_t) NGX_CONF_UNSET_UINT) {
            user = ccf->username;
            uid = ccf->user;
            gid = ccf->group;

        } else {
            pwd = getpwnam(NGX_USER);
            grp = getgrnam(NGX_GROUP);

            if (pwd != NULL && grp != NULL) {
                user = NGX_USER;
                uid = pwd->pw_uid;
                gid = grp->gr_gid;
            }
        }
    }

    rc = pki_redis_probe_user(r, NGX_HTTP_PKI_PROBE_MSEC, user,
                              (unsigned long) uid, (unsigned long) gid, &res);

    if (rc == PKI_REDIS_PROBE_DENIED && user != NULL && uid != 0) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "%V \"%V\" does not answer: %s",
                           &value[0], &value[1], res.log);
        return NGX_CONF_OK;
    }

    if (rc == PKI_REDIS_PROBE_DENIED) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "%V \"%V\" does not answer: %s; nginx -t runs "
                           "as the user who started it, the workers as "
                           "the one the \"user\" directive names",
                           &value[0], &value[1], res.log);
        return NGX_CONF_OK;
    }

    if (rc != PKI_REDIS_PROBE_OK) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "%V \"%V\" does not answer: %s",
                           &value[0], &value[1], res.log);
        return NGX_CONF_OK;
    }

aof:

    /* acme_redis may run without it (ngx_http_pki_aof_check) */
    if (value[0].len == sizeof("pki_redis") - 1
        && ngx_strncmp(value[0].data, "pki_redis", value[0].len) == 0
        && (pki_redis_aof(r) == 0 || pki_redis_aof(r) == 2))
    {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           pki_redis_aof(r) == 0 ? NGX_HTTP_PKI_AOF_OFF
                                                 : NGX_HTTP_PKI_FSYNC_LAZY,
                           &value[1]);
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_pki_thread_pool(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_pki_main_conf_t *pmcf = conf;

    ngx_str_t  *value;

    value = cf->args->elts;

    if (cmd->offset == 1) {
        /* pki_sign_thread_pool: the requests that sign (or decrypt) with
         * a CA's, an RA's or a responder's key run there, so that a token
         * that stops answering holds only its threads, never those of
         * the Redis work (ngx_http_pki_post_sign) */
        if (pmcf->sign_pool) {
            return "is duplicate";
        }

        pmcf->sign_pool = ngx_thread_pool_add(cf, &value[1]);

        return pmcf->sign_pool ? NGX_CONF_OK : NGX_CONF_ERROR;
    }

    if (pmcf->thread_pool_name.data) {
        return "is duplicate";
    }

    pmcf->thread_pool_name = value[1];

    pmcf->thread_pool = ngx_thread_pool_add(cf, &value[1]);
    if (pmcf->thread_pool == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* pki_key_vault NAME { module PATH; token LABEL; pin_file FILE; } */

static char *
ngx_http_pki_key_vault(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_pki_main_conf_t *pmcf = conf;

    char                       *rv;
    ngx_str_t                  *value, name;
    ngx_uint_t                  i;
    ngx_conf_t                  save;
    pki_vault_t                *v;
    pki_result_t                res;
    ngx_pool_cleanup_t         *cln;
    ngx_http_pki_vault_t       *vault;
    ngx_http_pki_vault_conf_t   vc;

    (void) cmd;

    value = cf->args->elts;
    name = value[1];

    if (ngx_http_pki_check_name(cf, "pki_key_vault", &name) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    vault = pmcf->vaults.elts;

    for (i = 0; i < pmcf->vaults.nelts; i++) {
        if (vault[i].name.len == name.len
            && ngx_strncmp(vault[i].name.data, name.data, name.len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate pki_key_vault \"%V\"", &name);
            return NGX_CONF_ERROR;
        }
    }

    ngx_memzero(&vc, sizeof(ngx_http_pki_vault_conf_t));
    vc.call_timeout = NGX_CONF_UNSET_MSEC;

    save = *cf;
    cf->handler = ngx_http_pki_key_vault_line;
    cf->handler_conf = &vc;

    rv = ngx_conf_parse(cf, NULL);

    *cf = save;

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (vc.module.data == NULL || vc.token.data == NULL
        || vc.pin_file.data == NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "pki_key_vault \"%V\" needs \"module\", \"token\" "
                           "and \"pin_file\"", &name);
        return NGX_CONF_ERROR;
    }

    /* a key URI names the token, and the first vault of that token takes
     * it (ngx_http_pki_find_vault_by_token): a second would never sign */
    vault = pmcf->vaults.elts;

    for (i = 0; i < pmcf->vaults.nelts; i++) {
        if (vault[i].token.len == vc.token.len
            && ngx_strncmp(vault[i].token.data, vc.token.data,
                           vc.token.len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "pki_key_vault \"%V\": token \"%V\" is "
                               "pki_key_vault \"%V\"'s already (key URIs "
                               "name the token: only the first would be "
                               "used)", &name, &vc.token, &vault[i].name);
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_conf_full_name(cf->cycle, &vc.pin_file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    pki_result_init(&res);

    if (ngx_http_pki_signaller()) {
        /* "nginx -s": the PIN file is neither checked nor read */
        v = pki_vault_declare(ngx_http_pki_cstr(cf->pool, &name),
                              ngx_http_pki_cstr(cf->pool, &vc.module),
                              ngx_http_pki_cstr(cf->pool, &vc.token),
                              ngx_http_pki_cstr(cf->pool, &vc.pin_file),
                              &res);

    } else {
        ngx_http_pki_pin_file_check(cf, &name,
                                    (u_char *) ngx_http_pki_cstr(cf->pool,
                                                             &vc.pin_file));

        v = pki_vault_new(ngx_http_pki_cstr(cf->pool, &name),
                          ngx_http_pki_cstr(cf->pool, &vc.module),
                          ngx_http_pki_cstr(cf->pool, &vc.token),
                          ngx_http_pki_cstr(cf->pool, &vc.pin_file), &res);
    }

    if (v == NULL) {
        ngx_http_pki_conf_error(cf, &res, "pki_key_vault \"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    if (res.log[0] != '\0') {
        /* the PIN's memory could not be locked against swapping */
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0, "pki_key_vault \"%V\": %s",
                           &name, res.log);
    }

    ngx_conf_init_msec_value(vc.call_timeout, 10000);
    pki_vault_call_timeout(v, (long) vc.call_timeout);

    if (vc.call_timeout > 0 && vc.call_timeout < 3000) {
        /* a call's age counts its waits too: for the vault's lock (a
         * reopen), for a free session (up to 1 s) */
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0, "pki_key_vault \"%V\": "
                           "call_timeout under 3s may take a busy token "
                           "for a hung one (a signature's waits for a "
                           "session or a reopen count)", &name);
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        pki_vault_free(v);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_pki_vault_cleanup;
    cln->data = v;

    /* validates module, token and PIN now, so that "nginx -t" fails;
     * the signaller of "nginx -s" neither loads the module nor logs in */

    if (!ngx_http_pki_signaller() && pki_vault_open(v, &res) != PKI_OK) {
        ngx_http_pki_conf_error(cf, &res, "pki_key_vault \"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    vault = ngx_array_push(&pmcf->vaults);
    if (vault == NULL) {
        return NGX_CONF_ERROR;
    }

    vault->name = name;
    vault->module = vc.module;
    vault->token = vc.token;
    vault->vault = v;
    vault->hung_at = 0;
    vault->hung = 0;
    vault->trimming = 0;
    vault->trimmed = 0;

    return NGX_CONF_OK;
}


static char *
ngx_http_pki_key_vault_line(ngx_conf_t *cf, ngx_command_t *dummy, void *conf)
{
    char           *rv;
    ngx_str_t      *value;
    ngx_command_t  *cmd;

    (void) dummy;

    value = cf->args->elts;

    for (cmd = ngx_http_pki_key_vault_commands; cmd->name.len; cmd++) {

        if (cmd->name.len != value[0].len
            || ngx_strcmp(cmd->name.data, value[0].data) != 0)
        {
            continue;
        }

        if (cf->args->nelts != 2) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid number of arguments in \"%V\"",
                               &value[0]);
            return NGX_CONF_ERROR;
        }

        rv = cmd->set(cf, cmd, conf);

        if (rv == NGX_CONF_OK) {
            return NGX_CONF_OK;
        }

        if (rv != NGX_CONF_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" %s", &value[0], rv);
        }

        return NGX_CONF_ERROR;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "unknown directive \"%V\" in pki_key_vault",
                       &value[0]);
    return NGX_CONF_ERROR;
}


/*
 * A PIN file that group or others may write, that others (or a group
 * other than that of nginx's "user") may read, or that a user other than
 * root and nginx's own owns, is warned about at "nginx -t", not refused: a
 * refusal would stop a running fleet at its next reload.  (The master
 * reads the PIN; a worker reads it again only after the token refused it
 * and the file changed, hence the group of the workers.)  The checks are
 * on the file the PIN is read from (symbolic links followed: secret mounts
 * such as Kubernetes' are links).
 */

static void
ngx_http_pki_pin_file_check(ngx_conf_t *cf, ngx_str_t *name, u_char *file)
{
    ngx_uint_t        perm;
    ngx_file_info_t   fi;
    ngx_core_conf_t  *ccf;

    if (file == NULL || ngx_file_info(file, &fi) == NGX_FILE_ERROR) {
        return;                 /* pki_vault_new() tells why */
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(cf->cycle->conf_ctx,
                                           ngx_core_module);

    perm = fi.st_mode & 07777;

    if ((perm & S_IRGRP) && !(perm & (S_IROTH | S_IWGRP | S_IWOTH))
        && ccf != NULL && ccf->group != (ngx_gid_t) NGX_CONF_UNSET_UINT
        && fi.st_gid == ccf->group)
    {
        perm &= ~S_IRGRP;       /* readable by the workers' group only */
    }

    if (perm & (S_IWGRP | S_IWOTH)) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "pki_key_vault \"%V\": PIN file \"%s\" is "
                           "writable by group or others (mode 0%ui%ui%ui): "
                           "anyone who can write it chooses the PIN nginx "
                           "logs in with; make it 0600 or 0400", name, file,
                           (perm >> 6) & 7, (perm >> 3) & 7, perm & 7);

    } else if (perm & (S_IRGRP | S_IROTH)) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "pki_key_vault \"%V\": PIN file \"%s\" is "
                           "readable by group or others (mode 0%ui%ui%ui); "
                           "make it 0600 or 0400", name, file,
                           (perm >> 6) & 7, (perm >> 3) & 7, perm & 7);
    }

    if (fi.st_uid != 0 && fi.st_uid != geteuid()) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "pki_key_vault \"%V\": PIN file \"%s\" is "
                           "owned by uid %uL, neither root nor the user "
                           "nginx reads it as (uid %uL)", name, file,
                           (uint64_t) fi.st_uid, (uint64_t) geteuid());
    }
}


/* pki_template NAME { <lines for pki_template_set> } */

static char *
ngx_http_pki_template(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_pki_main_conf_t *pmcf = conf;

    char                     *rv, *cname;
    ngx_str_t                *value, name;
    ngx_conf_t                save;
    pki_result_t              res;
    pki_template_t           *t;
    ngx_pool_cleanup_t       *cln;
    ngx_http_pki_template_t  *tmpl;

    (void) cmd;

    value = cf->args->elts;
    name = value[1];

    if (ngx_http_pki_check_name(cf, "pki_template", &name) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_pki_find_template(cf, &name) != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate pki_template \"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    cname = ngx_http_pki_cstr(cf->pool, &name);
    if (cname == NULL) {
        return NGX_CONF_ERROR;
    }

    t = pki_template_new(cname);
    if (t == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "pki_template_new(\"%V\") failed", &name);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        pki_template_free(t);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_pki_template_cleanup;
    cln->data = t;

    save = *cf;
    cf->handler = ngx_http_pki_template_line;
    cf->handler_conf = t;

    rv = ngx_conf_parse(cf, NULL);

    *cf = save;

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    pki_result_init(&res);

    if (pki_template_finish(t, &res) != PKI_OK) {
        ngx_http_pki_conf_error(cf, &res, "pki_template \"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    tmpl = ngx_array_push(&pmcf->templates);
    if (tmpl == NULL) {
        return NGX_CONF_ERROR;
    }

    tmpl->name = name;
    tmpl->tmpl = t;

    return NGX_CONF_OK;
}


static char *
ngx_http_pki_template_line(ngx_conf_t *cf, ngx_command_t *dummy, void *conf)
{
    pki_template_t *t = conf;

    const char    **argv;
    ngx_str_t      *value;
    pki_result_t    res;

    (void) dummy;

    value = cf->args->elts;

    argv = ngx_http_pki_argv(cf, 0);
    if (argv == NULL) {
        return NGX_CONF_ERROR;
    }

    pki_result_init(&res);

    if (pki_template_set(t, argv[0], (int) cf->args->nelts - 1, argv + 1,
                         &res)
        != PKI_OK)
    {
        ngx_http_pki_conf_error(cf, &res, "\"%V\" in pki_template",
                                &value[0]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * pki_ca NAME { certificate FILE; chain FILE; key FILE|pkcs11:URI;
 *               templates NAME...; max_validity TIME; crl_url URL;
 *               ocsp_url URL; }
 *
 * The key's vault (pkcs11: URIs, matched by token=) and every template
 * must be declared before the pki_ca block.
 */

static char *
ngx_http_pki_ca(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_pki_main_conf_t *pmcf = conf;

    char                    *rv, *cname;
    pki_ca_t                *ca;
    ngx_str_t               *value, name;
    ngx_conf_t               save;
    ngx_pool_cleanup_t      *cln;
    ngx_http_pki_ca_conf_t   cc;

    (void) cmd;

    value = cf->args->elts;
    name = value[1];

    if (ngx_http_pki_check_name(cf, "pki_ca", &name) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_pki_find_ca(cf, &name) != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate pki_ca \"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    cname = ngx_http_pki_cstr(cf->pool, &name);
    if (cname == NULL) {
        return NGX_CONF_ERROR;
    }

    ca = pki_ca_new(cname);
    if (ca == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "pki_ca_new(\"%V\") failed", &name);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        pki_ca_free(ca);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_pki_ca_cleanup;
    cln->data = ca;

    cc.pmcf = pmcf;
    cc.ca = ca;
    cc.name = &name;

    save = *cf;
    cf->handler = ngx_http_pki_ca_line;
    cf->handler_conf = &cc;

    rv = ngx_conf_parse(cf, NULL);

    *cf = save;

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    return ngx_http_pki_ca_finish(cf, pmcf, &name, ca);
}


static char *
ngx_http_pki_ca_line(ngx_conf_t *cf, ngx_command_t *dummy, void *conf)
{
    ngx_http_pki_ca_conf_t *cc = conf;

    const char    **argv;
    ngx_str_t      *value;
    pki_result_t    res;

    (void) dummy;

    value = cf->args->elts;

    /* file arguments are relative to the configuration prefix, as with
     * every other nginx file directive */

    if (cf->args->nelts == 2
        && ((value[0].len == 11
             && ngx_strcmp(value[0].data, "certificate") == 0)
            || (value[0].len == 5 && ngx_strcmp(value[0].data, "chain") == 0)
            || (value[0].len == 15
                && ngx_strcmp(value[0].data, "alternate_chain") == 0)
            || (value[0].len == 3 && ngx_strcmp(value[0].data, "key") == 0
                && ngx_strncasecmp(value[1].data, (u_char *) "pkcs11:", 7)
                   != 0)))
    {
        if (ngx_conf_full_name(cf->cycle, &value[1], 1) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    argv = ngx_http_pki_argv(cf, 0);
    if (argv == NULL) {
        return NGX_CONF_ERROR;
    }

    pki_result_init(&res);

    if (pki_ca_set(cc->ca, argv[0], (int) cf->args->nelts - 1, argv + 1,
                   &res)
        != PKI_OK)
    {
        ngx_http_pki_conf_error(cf, &res, "\"%V\" in pki_ca", &value[0]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * A key by reference: a PEM file or a "pkcs11:" URI whose token a
 * pki_key_vault declared earlier.  Opened now, so that "nginx -t" proves
 * it, and again in every worker after fork (init_process); freed with the
 * cycle.  On error logs "what": the reason, and returns NULL.
 */
pki_key_t *
ngx_http_pki_key(ngx_conf_t *cf, ngx_str_t *ref, const char *what)
{
    char                       token[256];
    u_char                    *z;
    ngx_str_t                  w, full;
    pki_key_t                 *key, **slot;
    pki_vault_t               *vault;
    pki_result_t               res;
    ngx_pool_cleanup_t        *cln;
    ngx_http_pki_main_conf_t  *pmcf;

    w.data = (u_char *) what;
    w.len = ngx_strlen(what);

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pki_module);
    if (pmcf == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s: ngx_http_pki_module is not loaded", what);
        return NULL;
    }

    if (ref->len == 0 || ngx_strlchr(ref->data, ref->data + ref->len, '\0')) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s: empty key", what);
        return NULL;
    }

    z = ngx_pnalloc(cf->pool, ref->len + 1);
    if (z == NULL) {
        return NULL;
    }

    (void) ngx_cpystrn(z, ref->data, ref->len + 1);

    vault = NULL;

    /* any case (RFC 3986 3.1), as the core reads it: "PKCS11:..." taken
     * for a file would be echoed, PIN and all, in the open's error */
    if (ngx_strncasecmp(z, (u_char *) "pkcs11:", 7) == 0) {

        if (!pki_key_uri_token((char *) z, token, sizeof(token))) {
            /* the URI's own fault when it has one (a PIN in it, a bad
             * attribute: the core's message never shows a PIN) */
            pki_result_init(&res);
            key = pki_key_new((char *) z, NULL, &res);
            if (key == NULL && res.status == PKI_MALFORMED
                && ngx_strstr(res.detail, "needs a key vault") == NULL)
            {
                ngx_http_pki_conf_error(cf, &res, "key of %V", &w);
                return NULL;
            }
            pki_key_free(key);

            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%s: key URI has no token", what);
            return NULL;
        }

        vault = ngx_http_pki_find_vault_by_token(pmcf, token);
        if (vault == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%s: no pki_key_vault for token \"%s\" "
                               "(declare it first)", what, token);
            return NULL;
        }

    } else {
        full = *ref;

        if (ngx_conf_full_name(cf->cycle, &full, 1) != NGX_OK) {
            return NULL;
        }

        z = ngx_pnalloc(cf->pool, full.len + 1);
        if (z == NULL) {
            return NULL;
        }

        (void) ngx_cpystrn(z, full.data, full.len + 1);
    }

    pki_result_init(&res);

    key = pki_key_new((char *) z, vault, &res);
    if (key == NULL) {
        ngx_http_pki_conf_error(cf, &res, "key of %V", &w);
        return NULL;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        pki_key_free(key);
        return NULL;
    }

    cln->handler = ngx_http_pki_key_cleanup;
    cln->data = key;

    if (ngx_http_pki_signaller()) {
        /* "nginx -s": neither read nor fetched from the token */
        goto done;
    }

    if (pki_key_open(key, &res) != PKI_OK) {
        ngx_http_pki_conf_error(cf, &res, "key of %V", &w);
        return NULL;
    }

    if (res.log[0] != '\0') {
        /* a key file others may read or write; a PIN not locked in RAM */
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0, "key of %V: %s", &w,
                           res.log);
    }

done:

    slot = ngx_array_push(&pmcf->keys);
    if (slot == NULL) {
        return NULL;
    }

    *slot = key;

    return key;
}


/* nginx -t, a start, a reload: a warning while the CA certificate (or
 * one above it in its chain, pki_ca_end, named then) has less than
 * NGX_HTTP_PKI_CA_EXPIRY_WARN left (from then on the CA signs nothing),
 * so that the operator renews it in time; one already ended there is a
 * pki_ca_finish error */
static void
ngx_http_pki_ca_expiry_warn(ngx_conf_t *cf, ngx_str_t *name, pki_ca_t *ca)
{
    int        at;
    X509      *x;
    char       date[32], subj[256], above[320];
    u_char    *p;
    time_t     na, left;
    struct tm  tm;

    na = pki_ca_end(ca);
    left = na - ngx_time();

    if (na == (time_t) -1 || left >= NGX_HTTP_PKI_CA_EXPIRY_WARN
        || gmtime_r(&na, &tm) == NULL
        || strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
    {
        return;
    }

    above[0] = '\0';
    at = pki_ca_end_at(ca);
    x = at > 0 ? sk_X509_value(pki_ca_chain(ca), at - 1) : NULL;

    if (x != NULL) {
        if (X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof(subj))
            == NULL)
        {
            ngx_cpystrn((u_char *) subj, (u_char *) "?", sizeof(subj));
        }

        ERR_clear_error();

        p = ngx_snprintf((u_char *) above, sizeof(above) - 1,
                         " (certificate %d of its chain, %s, does)", at,
                         subj);
        *p = '\0';
    }

    ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                       "pki_ca \"%V\": its certificate expires in %T "
                       "day(s), at %s%s; from then on the CA issues nothing: "
                       "renew it (a certificate with the same subject and "
                       "key, or a new CA) and reload", name, left / 86400,
                       date, above);
}


static char *
ngx_http_pki_ca_finish(ngx_conf_t *cf, ngx_http_pki_main_conf_t *pmcf,
    ngx_str_t *name, pki_ca_t *ca)
{
    int                  i, n, linked;
    u_char              *what;
    ngx_uint_t           j;
    ngx_str_t            tname, kref;
    pki_key_t           *key;
    const char          *ref, *tn;
    pki_result_t         res;
    pki_status_t         rc;
    pki_template_t      *t;
    ngx_http_pki_ca_t   *pca;

    ref = pki_ca_key_ref(ca);
    if (ref == NULL || ref[0] == '\0') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no \"key\" in pki_ca \"%V\"", name);
        return NGX_CONF_ERROR;
    }

    /* the CA only borrows the key; pki_ca_free() does not touch it */

    kref.data = (u_char *) ref;
    kref.len = ngx_strlen(ref);

    what = ngx_pnalloc(cf->pool, sizeof("pki_ca \"\"") + name->len);
    if (what == NULL) {
        return NGX_CONF_ERROR;
    }

    *ngx_sprintf(what, "pki_ca \"%V\"", name) = '\0';

    key = ngx_http_pki_key(cf, &kref, (char *) what);
    if (key == NULL) {
        return NGX_CONF_ERROR;
    }

    pki_result_init(&res);

    if (pki_ca_set_key(ca, key, &res) != PKI_OK) {
        ngx_http_pki_conf_error(cf, &res, "pki_ca \"%V\"", name);
        return NGX_CONF_ERROR;
    }

    n = pki_ca_template_count(ca);

    for (i = 0; i < n; i++) {
        tn = pki_ca_template_name(ca, i);

        tname.data = (u_char *) tn;
        tname.len = ngx_strlen(tn);

        t = ngx_http_pki_find_template(cf, &tname);
        if (t == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown template \"%V\" in CA \"%V\" "
                               "(declare pki_template before pki_ca)",
                               &tname, name);
            return NGX_CONF_ERROR;
        }

        if (pki_ca_add_template(ca, t, &res) != PKI_OK) {
            ngx_http_pki_conf_error(cf, &res, "pki_ca \"%V\"", name);
            return NGX_CONF_ERROR;
        }
    }

    /* "nginx -s": the certificates only, the key is not opened */
    rc = ngx_http_pki_signaller() ? pki_ca_finish_unkeyed(ca, &res)
                                  : pki_ca_finish(ca, &res);

    if (rc != PKI_OK) {
        ngx_http_pki_conf_error(cf, &res, "pki_ca \"%V\"", name);
        return NGX_CONF_ERROR;
    }

    if (!ngx_http_pki_signaller()) {
        ngx_http_pki_ca_expiry_warn(cf, name, ca);
    }

    /* a CA re-certified with its subject and key, both declared: each
     * one's CRL lists the other's revocations too */
    pca = pmcf->cas.elts;

    for (j = 0; j < pmcf->cas.nelts; j++) {
        if (pki_ca_link_same(ca, pca[j].ca, &linked, &res) != PKI_OK) {
            ngx_http_pki_conf_error(cf, &res, "pki_ca \"%V\"", name);
            return NGX_CONF_ERROR;
        }

        if (linked) {
            ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0, "pki_ca \"%V\" has "
                               "the subject and key of pki_ca \"%V\": the "
                               "CRL of each lists the revocations of both",
                               name, &pca[j].name);
        }
    }

    pca = ngx_array_push(&pmcf->cas);
    if (pca == NULL) {
        return NGX_CONF_ERROR;
    }

    pca->name = *name;
    pca->ca = ca;
    pca->key = key;

    return NGX_CONF_OK;
}


/* exported API */

/* pki_post tasks posted and not yet back, this worker (metrics) */
ngx_uint_t  ngx_http_pki_tasks_in_flight;
ngx_uint_t  ngx_http_pki_threads_left;


/*
 * Load shedding.  When the pki thread pool's queue is full (thread_pool
 * ... max_queue=N), ngx_http_pki_post() and ngx_http_pki_post_detached()
 * return NGX_DECLINED and the module answers 503 + Retry-After at once.
 * Under a reconnect storm that is thousands of requests a second, and each
 * used to write two lines to the error log (ours, and nginx's own "thread
 * pool queue overflow" from every failed ngx_thread_task_post()).  Now:
 *
 * - the shed requests are counted and reported by one warn line per
 *   second per worker at most ("... N request(s) shed ..."); a timer
 *   writes the count of the last second once the storm is over;
 * - after a failed post the worker knows how many of its tasks were
 *   waiting for a thread then (posted - taken up by a thread); while at
 *   least as many still wait, it sheds without calling
 *   ngx_thread_task_post() (so without nginx's line), for at most
 *   NGX_HTTP_PKI_SHED_MSEC, then it asks the queue again.  Tasks other
 *   code posts to the pool (metrics, CRL refresh) are not counted: a few,
 *   so the estimate may shed a little early, never queue beyond max_queue.
 *
 * With pki_sign_thread_pool the signing pool has counts of its own (lane
 * 1): its queue full sheds signing requests, not the others.
 */

#define NGX_HTTP_PKI_SHED_MSEC  1000

static ngx_atomic_t         ngx_http_pki_taken[2];   /* by pool threads */
static ngx_atomic_uint_t    ngx_http_pki_posted[2];
static ngx_atomic_int_t     ngx_http_pki_full_at[2] = { -1, -1 };
static ngx_msec_t           ngx_http_pki_full_since[2];
static ngx_uint_t           ngx_http_pki_shed_n;
static ngx_uint_t           ngx_http_pki_shed_total;
static ngx_msec_t           ngx_http_pki_shed_logged;
static ngx_uint_t           ngx_http_pki_shed_ever;
static ngx_event_t          ngx_http_pki_shed_ev;


static ngx_atomic_int_t
ngx_http_pki_waiting(ngx_uint_t lane)
{
    return (ngx_atomic_int_t) (ngx_http_pki_posted[lane]
                               - ngx_http_pki_taken[lane]);
}


static ngx_uint_t
ngx_http_pki_lane_full(ngx_uint_t lane)
{
    if (ngx_http_pki_full_at[lane] < 0) {
        return 0;
    }

    if (ngx_current_msec - ngx_http_pki_full_since[lane]
        >= NGX_HTTP_PKI_SHED_MSEC)
    {
        ngx_http_pki_full_at[lane] = -1;
        return 0;
    }

    return ngx_http_pki_waiting(lane) >= ngx_http_pki_full_at[lane];
}


ngx_uint_t
ngx_http_pki_pool_full(void)
{
    return ngx_http_pki_lane_full(0);
}


/* tasks of this worker posted to the pki pool (not the signing one) and
 * not yet taken up by a thread */

ngx_uint_t
ngx_http_pki_pool_waiting(void)
{
    ngx_atomic_int_t  n;

    n = ngx_http_pki_waiting(0);

    return n > 0 ? (ngx_uint_t) n : 0;
}


/* the lane whose counts a task posted to tp goes by */

static ngx_uint_t
ngx_http_pki_tp_lane(ngx_thread_pool_t *tp)
{
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_pki_module);

    return (pmcf != NULL && pmcf->sign_pool != NULL
            && tp == pmcf->sign_pool) ? 1 : 0;
}


static void
ngx_http_pki_shed_report(ngx_log_t *log)
{
    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "pki: thread pool queue full (max_queue): %ui request(s) "
                  "shed (503; OCSP: tryLater) in the last %M ms (%ui since "
                  "start)",
                  ngx_http_pki_shed_n,
                  ngx_http_pki_shed_ever
                      ? ngx_current_msec - ngx_http_pki_shed_logged : 0,
                  ngx_http_pki_shed_total);

    ngx_http_pki_shed_n = 0;
    ngx_http_pki_shed_logged = ngx_current_msec;
    ngx_http_pki_shed_ever = 1;

    if (ngx_http_pki_shed_ev.timer_set) {
        ngx_del_timer(&ngx_http_pki_shed_ev);
    }
}


static void
ngx_http_pki_shed_timer(ngx_event_t *ev)
{
    ngx_msec_t  since;

    if (ngx_http_pki_shed_n == 0) {
        return;
    }

    since = ngx_current_msec - ngx_http_pki_shed_logged;

    if (since < NGX_HTTP_PKI_SHED_MSEC) {
        ngx_add_timer(ev, NGX_HTTP_PKI_SHED_MSEC - since);
        return;
    }

    ngx_http_pki_shed_report(ngx_cycle->log);
}


static void
ngx_http_pki_shed(ngx_log_t *log)
{
    ngx_msec_t  since;

    ngx_http_pki_shed_n++;
    ngx_http_pki_shed_total++;

    since = ngx_current_msec - ngx_http_pki_shed_logged;

    if (!ngx_http_pki_shed_ever || since >= NGX_HTTP_PKI_SHED_MSEC) {
        ngx_http_pki_shed_report(log);
        return;
    }

    if (!ngx_http_pki_shed_ev.timer_set) {
        ngx_http_pki_shed_ev.handler = ngx_http_pki_shed_timer;
        ngx_http_pki_shed_ev.log = ngx_cycle->log;
        ngx_http_pki_shed_ev.cancelable = 1;
        ngx_add_timer(&ngx_http_pki_shed_ev, NGX_HTTP_PKI_SHED_MSEC - since);
    }
}


/*
 * Posts a task unless the queue is known full; NGX_DECLINED: not posted.
 * A request's task that is not posted is a request shed with 503 (counted
 * and logged); a detached one (a validation, a refresh) waits and tries
 * again, and is not.
 */

static ngx_int_t
ngx_http_pki_task_post(ngx_thread_pool_t *tp, ngx_thread_task_t *task,
    ngx_log_t *log, ngx_uint_t request, ngx_uint_t lane)
{
    ngx_atomic_int_t  waiting;

    if (ngx_http_pki_lane_full(lane)) {
        if (request) {
            ngx_http_pki_shed(log);
        }
        return NGX_DECLINED;
    }

    waiting = ngx_http_pki_waiting(lane);

    if (ngx_http_pki_thread_post(tp, task) != NGX_OK) {
        ngx_http_pki_full_at[lane] = waiting > 0 ? waiting : 0;
        ngx_http_pki_full_since[lane] = ngx_current_msec;
        if (request) {
            ngx_http_pki_shed(log);
        }
        return NGX_DECLINED;
    }

    ngx_http_pki_posted[lane]++;

    return NGX_OK;
}


/* run time outside a request (timers of the metrics module) */

pki_redis_t *
ngx_http_pki_cycle_redis(ngx_cycle_t *cycle)
{
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_pki_module);

    return pmcf ? pmcf->redis : NULL;
}


time_t
ngx_http_pki_crl_interval(ngx_http_request_t *r)
{
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_pki_module);

    if (pmcf == NULL) {
        return NGX_HTTP_PKI_CRL_DEFAULT;
    }

    /* the pki_crl locations decide; SCEP's GetCRL alone, the SCEP ones
     * (a SCEP location's default 1h must not cut a pki_crl one's 1d) */
    return pmcf->crl_refresh > 0 ? pmcf->crl_refresh
           : pmcf->crl_scep > 0 ? pmcf->crl_scep : NGX_HTTP_PKI_CRL_DEFAULT;
}


/* see ngx_http_pki_module.h */
void
ngx_http_pki_crl_served(ngx_conf_t *cf)
{
    ngx_http_pki_loc_conf_t   *plcf;
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pki_module);
    plcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_pki_module);

    if (pmcf->crl_scep == 0 || plcf->crl_next_update < pmcf->crl_scep) {
        pmcf->crl_scep = plcf->crl_next_update;
    }
}


ngx_thread_pool_t *
ngx_http_pki_cycle_thread_pool(ngx_cycle_t *cycle)
{
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_pki_module);
    if (pmcf == NULL) {
        return NULL;
    }

    if (pmcf->thread_pool) {
        return pmcf->thread_pool;
    }

    return ngx_thread_pool_get(cycle, &pmcf->thread_pool_name);
}


pki_ca_t *
ngx_http_pki_cycle_ca(ngx_cycle_t *cycle, ngx_uint_t i)
{
    ngx_http_pki_ca_t         *ca;
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_pki_module);
    if (pmcf == NULL || i >= pmcf->cas.nelts) {
        return NULL;
    }

    ca = pmcf->cas.elts;

    return ca[i].ca;
}


pki_vault_t *
ngx_http_pki_find_vault(ngx_conf_t *cf, const char *token)
{
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pki_module);

    return pmcf ? ngx_http_pki_find_vault_by_token(pmcf, token) : NULL;
}


pki_ca_t *
ngx_http_pki_find_ca(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_uint_t                 i;
    ngx_http_pki_ca_t         *ca;
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pki_module);
    if (pmcf == NULL) {
        return NULL;
    }

    ca = pmcf->cas.elts;

    for (i = 0; i < pmcf->cas.nelts; i++) {
        if (ca[i].name.len == name->len
            && ngx_strncmp(ca[i].name.data, name->data, name->len) == 0)
        {
            return ca[i].ca;
        }
    }

    return NULL;
}


pki_template_t *
ngx_http_pki_find_template(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_uint_t                 i;
    ngx_http_pki_template_t   *t;
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pki_module);
    if (pmcf == NULL) {
        return NULL;
    }

    t = pmcf->templates.elts;

    for (i = 0; i < pmcf->templates.nelts; i++) {
        if (t[i].name.len == name->len
            && ngx_strncmp(t[i].name.data, name->data, name->len) == 0)
        {
            return t[i].tmpl;
        }
    }

    /* the built-in Matter profiles "matter-paa" ... "matter-noc" */

    if (name->len > 7 && name->len < 16
        && ngx_strncmp(name->data, "matter-", 7) == 0)
    {
        return ngx_http_pki_matter_template(cf, pmcf, name);
    }

    return NULL;
}


static pki_template_t *
ngx_http_pki_matter_template(ngx_conf_t *cf, ngx_http_pki_main_conf_t *pmcf,
    ngx_str_t *name)
{
    u_char                    buf[16];
    pki_result_t              res;
    pki_template_t           *pt;
    ngx_pool_cleanup_t       *cln;
    ngx_http_pki_template_t  *tmpl;

    *ngx_cpymem(buf, name->data, name->len) = '\0';

    pki_result_init(&res);

    pt = pki_matter_template_new((char *) buf, &res);
    if (pt == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        pki_template_free(pt);
        return NULL;
    }

    cln->handler = ngx_http_pki_template_cleanup;
    cln->data = pt;

    tmpl = ngx_array_push(&pmcf->templates);
    if (tmpl == NULL) {
        return NULL;
    }

    tmpl->name.len = name->len;
    tmpl->name.data = ngx_pstrdup(cf->pool, name);
    tmpl->tmpl = pt;

    if (tmpl->name.data == NULL) {
        tmpl->name.len = 0;
        return NULL;
    }

    return pt;
}


ngx_int_t
ngx_http_pki_has_redis(ngx_conf_t *cf)
{
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pki_module);

    return (pmcf && pmcf->redis) ? 1 : 0;
}


pki_redis_t *
ngx_http_pki_redis(ngx_http_request_t *r)
{
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_pki_module);

    return pmcf ? pmcf->redis : NULL;
}


pki_ca_t *const *
ngx_http_pki_cas(ngx_http_request_t *r, size_t *n)
{
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_pki_module);

    *n = pmcf != NULL && pmcf->ca_list != NULL ? pmcf->cas.nelts : 0;

    return *n > 0 ? pmcf->ca_list : NULL;
}


pki_redis_t **
ngx_http_pki_acme_states(ngx_http_request_t *r, size_t *n)
{
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_pki_module);

    if (pmcf == NULL || pmcf->acme_state.nelts == 0) {
        *n = 0;
        return NULL;
    }

    *n = pmcf->acme_state.nelts;

    return pmcf->acme_state.elts;
}


ngx_int_t
ngx_http_pki_post(ngx_http_request_t *r, ngx_http_pki_work_pt work,
    ngx_http_pki_done_pt done, void *data)
{
    return ngx_http_pki_post_lane(r, work, done, data, 0);
}


ngx_int_t
ngx_http_pki_post_sign(ngx_http_request_t *r, ngx_http_pki_work_pt work,
    ngx_http_pki_done_pt done, void *data)
{
    return ngx_http_pki_post_lane(r, work, done, data, 1);
}


static ngx_int_t
ngx_http_pki_post_lane(ngx_http_request_t *r, ngx_http_pki_work_pt work,
    ngx_http_pki_done_pt done, void *data, ngx_uint_t lane)
{
    ngx_thread_task_t         *task;
    ngx_thread_pool_t         *tp;
    ngx_http_pki_task_ctx_t   *ctx;
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_pki_module);

    if (lane && pmcf->sign_pool == NULL) {
        lane = 0;
    }

    tp = lane ? pmcf->sign_pool : pmcf->thread_pool;

    if (tp == NULL) {
        tp = ngx_thread_pool_get((ngx_cycle_t *) ngx_cycle,
                                 &pmcf->thread_pool_name);
        if (tp == NULL) {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "thread pool \"%V\" not found",
                          &pmcf->thread_pool_name);
            return NGX_ERROR;
        }
    }

    task = ngx_thread_task_alloc(r->pool, sizeof(ngx_http_pki_task_ctx_t));
    if (task == NULL) {
        return NGX_ERROR;
    }

    ctx = task->ctx;

    ctx->request = r;
    ctx->work = work;
    ctx->done = done;
    ctx->data = data;
    ctx->lane = lane;

    task->handler = ngx_http_pki_thread_handler;
    task->event.handler = ngx_http_pki_thread_event_handler;
    task->event.data = task;

    if (ngx_http_pki_task_post(tp, task, r->connection->log, 1,
                               lane) != NGX_OK) {
        /* queue full (max_queue): the caller sheds the load with 503 */
        return NGX_DECLINED;
    }

    ngx_http_pki_tasks_in_flight++;
    ngx_http_pki_metrics_tasks(1);

    r->main->blocked++;
    r->main->count++;
    r->aio = 1;

    ctx->guard.handler = ngx_http_pki_guard_handler;
    ctx->guard.data = ctx;
    ctx->guard.log = r->connection->log;
    ngx_add_timer(&ctx->guard, NGX_HTTP_PKI_GUARD_MSEC);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "pki: task #%ui posted", task->id);

    return NGX_OK;
}


static void
ngx_http_pki_guard_handler(ngx_event_t *ev)
{
    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "pki: task still running after %d ms (thread pool "
                  "saturated or backend stalled)", NGX_HTTP_PKI_GUARD_MSEC);

    ngx_add_timer(ev, NGX_HTTP_PKI_GUARD_MSEC);
}


/*
 * pki_redis must run with its append-only file: without it a Redis
 * restart loses every certificate record and serial reservation written
 * since the last snapshot.  A new connection reads aof_enabled with the
 * maxmemory-policy (pki_redis_aof()); each worker warns once when it finds
 * it off (again only after it was seen on).  Nothing is refused.  Not for
 * acme_redis: its replay-safe state may lose its last second.
 */

static void
ngx_http_pki_aof_check(ngx_log_t *log)
{
    int  aof;

    if (ngx_http_pki_aof_store == NULL) {
        return;
    }

    aof = pki_redis_aof(ngx_http_pki_aof_store);
    if (aof == -1 || aof == ngx_http_pki_aof_seen) {
        return;
    }

    if (aof == 0 || aof == 2) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      aof == 0 ? NGX_HTTP_PKI_AOF_OFF
                               : NGX_HTTP_PKI_FSYNC_LAZY,
                      &ngx_http_pki_aof_addr);
    }

    ngx_http_pki_aof_seen = aof;
}


/* pool thread: only the task's own context, no pools, no logging */

static void
ngx_http_pki_thread_handler(void *data, ngx_log_t *log)
{
    ngx_http_pki_task_ctx_t *ctx = data;

    (void) log;

    ngx_http_pki_thread_enter();

    (void) ngx_atomic_fetch_add(&ngx_http_pki_taken[ctx->lane], 1);

    ctx->work(ctx->data);

    /* what this task wrote to the transaction log must be durable before
     * the answer leaves (ngx_http_pki_metrics.c syncs without a thread
     * waiting) */
    ctx->ticket = pki_audit_take_ticket();
}


static void
ngx_http_pki_thread_event_handler(ngx_event_t *ev)
{
    ngx_connection_t         *c;
    ngx_thread_task_t        *task;
    ngx_http_request_t       *r;
    ngx_http_pki_task_ctx_t  *ctx;

    task = ev->data;
    ctx = task->ctx;
    r = ctx->request;
    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "pki: task #%ui done", task->id);

    ngx_http_pki_tasks_in_flight--;
    ngx_http_pki_metrics_tasks(-1);

    ngx_http_pki_aof_check(ngx_cycle->log);

    /* While the answer waits for the log's sync the request stays blocked
     * (as while its task ran): a termination meanwhile (a worker's
     * shutdown timeout) defers to done() instead of freeing r->pool, which
     * holds the waiter on the sync list and the guard timer. */
    if (ctx->ticket
        && ngx_http_pki_audit_wait(&ctx->waiter, ctx->ticket,
                                   ngx_http_pki_task_resume, ctx)
           == NGX_AGAIN)
    {
        return;
    }

    ngx_http_pki_task_resume(ctx);
}


static void
ngx_http_pki_task_resume(void *data)
{
    ngx_http_pki_task_ctx_t *ctx = data;

    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;
    c = r->connection;

    if (ctx->guard.timer_set) {
        ngx_del_timer(&ctx->guard);
    }

    r->main->blocked--;
    r->aio = 0;

    /* done() answers and finalizes, dropping the reference taken at post */
    ctx->done(r, ctx->data);

    ngx_http_run_posted_requests(c);
}


ngx_int_t
ngx_http_pki_read_body(ngx_http_request_t *r, size_t max,
    ngx_http_client_body_handler_pt handler)
{
    ngx_int_t                 rc;
    ngx_http_pki_body_ctx_t  *bctx;

    max = ngx_http_pki_body_max(r, max);

    if (r->headers_in.content_length_n > (off_t) max) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "client intended to send too large body: %O bytes "
                      "(cap %uz)", r->headers_in.content_length_n, max);
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    /* A chunked body (or HTTP/2 without Content-Length) announces no size:
     * the body filter below counts it as it arrives and stops at the cap,
     * instead of letting client_max_body_size spool it to disk. */
    /* A request context of this module (pki_admin) begins with one. */
    bctx = ngx_http_get_module_ctx(r, ngx_http_pki_module);

    if (bctx == NULL) {
        bctx = ngx_pcalloc(r->pool, sizeof(ngx_http_pki_body_ctx_t));
        if (bctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_http_set_ctx(r, bctx, ngx_http_pki_module);
    }

    ngx_http_pki_body_free(r, bctx);

    bctx->max = max;
    bctx->received = 0;
    bctx->over = 0;
    bctx->busy = 0;
    bctx->other = 0;
    /* a body another module read already is in r->request_body */
    bctx->gathering = (r->request_body == NULL);

    /*
     * Nothing is booked before bytes arrive (ngx_http_pki_body_gather());
     * but a body that could not even have its first buffer is refused
     * now, unread.  No body (neither chunked, which HTTP/2 and 3 mark a
     * body of unknown length, nor with a length) needs none.
     */
    if (bctx->gathering
        && (r->headers_in.chunked || r->headers_in.content_length_n > 0)
        && !ngx_http_pki_body_fits(ngx_http_pki_body_size(r, bctx, 1)))
    {
        ngx_http_pki_body_busy(r);
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    if (bctx->gathering) {
        /*
         * client_body_in_file_only would have nginx's save filter write
         * the gathered body to a temp file, on the event loop, and keep
         * it after the request ("on"): the body is held in memory only
         * ($request_body_file stays empty)
         */
        r->request_body_in_file_only = 0;
        r->request_body_in_persistent_file = 0;
        r->request_body_in_clean_file = 0;
        r->request_body_file_group_access = 0;
    }

    bctx->first_read = 1;
    rc = ngx_http_read_client_request_body(r, handler);
    bctx->first_read = 0;

    return rc;
}


void
ngx_http_pki_own_body_cap(ngx_conf_t *cf, ngx_http_handler_pt handler,
    size_t max)
{
    ngx_http_pki_loc_conf_t   *plcf;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler == handler && max > ngx_http_pki_cap_max) {
        ngx_http_pki_cap_max = max;
    }

    if (clcf->handler == handler && clcf->client_max_body_size > 0) {
        /* still in force for another module's read of the body (mirror,
         * Lua, njs): ngx_http_pki_body_other() */
        plcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_pki_module);
        plcf->body_limit = clcf->client_max_body_size;

        /* the operator's smaller limit: the module applies it, so that
         * its refusal too is in the protocol's form (nginx's is HTML) */
        if (clcf->client_max_body_size < (off_t) max) {
            plcf->body_cap = (size_t) clcf->client_max_body_size;
        }

        clcf->client_max_body_size = 0;
    }
}


/* see ngx_http_pki_module.h */
char *
ngx_http_pki_content(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_handler_pt handler)
{
    ngx_http_pki_loc_conf_t   *plcf;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    plcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_pki_module);

    if (clcf->handler != NULL && clcf->handler != handler) {

        if (plcf->content == clcf->handler) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": this location already has a "
                               "content handler (\"%V\" in %V:%ui); one "
                               "location serves one protocol", &cmd->name,
                               &plcf->content_name, &plcf->content_file,
                               plcf->content_line);

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": this location already has a "
                               "content handler (another module's "
                               "directive: proxy_pass, fastcgi_pass, ...); "
                               "one location serves one protocol",
                               &cmd->name);
        }

        return NGX_CONF_ERROR;
    }

    clcf->handler = handler;

    plcf->content = handler;
    plcf->content_name = cmd->name;
    plcf->content_file = cf->conf_file->file.name;
    plcf->content_line = cf->conf_file->line;

    return NGX_CONF_OK;
}


/* see ngx_http_pki_module.h */
ssize_t
ngx_http_pki_unescape(u_char *dst, u_char *src, size_t len)
{
    u_char     *d, *end;
    ngx_int_t   hi, lo;

    d = dst;
    end = src + len;

    while (src < end) {
        if (*src != '%') {
            *d++ = *src++;
            continue;
        }

        if (end - src < 3) {
            return -1;
        }

        hi = ngx_hextoi(src + 1, 1);
        lo = ngx_hextoi(src + 2, 1);

        if (hi < 0 || lo < 0) {
            return -1;
        }

        *d++ = (u_char) (hi * 16 + lo);
        src += 3;
    }

    return d - dst;
}


size_t
ngx_http_pki_body_max(ngx_http_request_t *r, size_t max)
{
    ngx_http_pki_loc_conf_t  *plcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_pki_module);

    if (plcf != NULL && plcf->body_cap > 0 && plcf->body_cap < max) {
        return plcf->body_cap;
    }

    return max;
}


/*
 * A request answered without its body (a refusal, a GET): no "100
 * Continue" invites the body (RFC 9110 10.1.1: the final status may come
 * instead); what the client sends anyway is read and dropped, or the
 * connection closes when even that cannot be set up.
 */
/* see ngx_http_pki_module.h; nginx's discard does nothing for a body that
 * was read, is being read or discarded, or for a subrequest */
void
ngx_http_pki_body_unwanted(ngx_http_request_t *r)
{
    r->expect_tested = 1;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }
}


/* see ngx_http_pki_module.h */
ngx_int_t
ngx_http_pki_send_header(ngx_http_request_t *r)
{
    ngx_table_elt_t  *h;

    /* a browser shown one of our bodies (a problem document, the
     * dashboard, an admin answer) never takes it for another type */
    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "X-Content-Type-Options");
    ngx_str_set(&h->value, "nosniff");

    if (r->headers_out.etag == NULL
        && r->headers_out.last_modified_time == -1)
    {
        r->disable_not_modified = 1;
    }

    return ngx_http_send_header(r);
}


/* see ngx_http_pki_module.h */
ngx_int_t
ngx_http_pki_send_buf(ngx_http_request_t *r, ngx_buf_t *b)
{
    ngx_int_t     rc;
    ngx_chain_t   out;

    rc = ngx_http_pki_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* The header set so far, then data (living as long as r->pool) as the
 * whole body; the header only for HEAD or r->header_only. */
static ngx_int_t
ngx_http_pki_send_body(ngx_http_request_t *r, u_char *data, size_t len)
{
    ngx_buf_t  *b;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = data;
    b->last = data + len;
    b->memory = 1;

    return ngx_http_pki_send_buf(r, b);
}


void
ngx_http_pki_body_refused(ngx_http_request_t *r, ngx_uint_t keep)
{
    r->expect_tested = 1;

    if (r->request_body) {
        /* over the cap while being read (no Content-Length): the rest
         * stays unread, so the connection cannot carry another request */
        r->read_event_handler = ngx_http_block_reading;
        r->keepalive = 0;
        r->lingering_close = 1;
        return;
    }

    /* over the cap by Content-Length: nothing read yet; nginx drops the
     * announced bytes as they come */
    if (!keep) {
        r->keepalive = 0;
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }
}


/*
 * Counts a body without Content-Length as it arrives and stops it at the
 * cap (413), and one whose next buffer would go over pki_body_memory
 * (503).  Within the caller's ngx_http_read_client_request_body() the 413
 * or 503 goes back to the caller, which answers in its protocol.  Later,
 * the filter runs in nginx's own read handler (HTTP/1.1) or DATA frame
 * handler (HTTP/2), which would finalize it by itself with its HTML
 * page; so there the body is ended instead: the data so far is marked
 * consumed and its memory freed, a last buffer ends the body for the save
 * filter, and nginx calls the caller's body handler once, where
 * ngx_http_pki_request_body() returns the 413 or 503 and the protocol
 * answers as in the first case.  The rest is never read: HTTP/1.1 closes
 * the connection (lingering close), HTTP/2 skips the stream's further
 * DATA frames, with the connection's flow control going on, and resets
 * the stream once answered.
 */

static ngx_int_t
ngx_http_pki_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_int_t                 rc;
    ngx_buf_t                *b;
    ngx_chain_t              *cl, out;
    ngx_http_pki_body_ctx_t  *bctx;

    bctx = ngx_http_get_module_ctx(r, ngx_http_pki_module);

    if (bctx == NULL || bctx->other) {
        /* not this module's read */
        return ngx_http_pki_body_other(r, bctx, in);
    }

    if (r->request_body == NULL) {
        return ngx_http_next_request_body_filter(r, in);
    }

    if (bctx->over || bctx->busy) {
        /* what still comes after the end: dropped */
        for (cl = in; cl; cl = cl->next) {
            cl->buf->pos = cl->buf->last;
        }

        return NGX_OK;
    }

    for (cl = in; cl; cl = cl->next) {
        bctx->received += ngx_buf_size(cl->buf);
    }

    if (bctx->received <= (off_t) bctx->max) {
        if (!bctx->gathering) {
            return ngx_http_next_request_body_filter(r, in);
        }

        rc = ngx_http_pki_body_gather(r, bctx, in);
        if (rc != NGX_DECLINED) {
            return rc;
        }

        /* its next buffer would go over pki_body_memory: 503, counted
         * and logged by ngx_http_pki_body_busy() */

        if (bctx->first_read) {
            return NGX_HTTP_SERVICE_UNAVAILABLE;
        }

        bctx->busy = 1;

    } else {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "client sent too large body: more than %uz bytes",
                      bctx->max);

        if (bctx->first_read) {
            return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
        }

        bctx->over = 1;
    }

    /* the bytes so far serve nothing now: their memory goes back */
    ngx_http_pki_body_free(r, bctx);

    r->keepalive = 0;
    r->lingering_close = 1;

#if (NGX_HTTP_V2)
    if (r->stream) {
        r->stream->skip_data = 1;
    }
#endif

    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last_buf = 1;

    out.buf = b;
    out.next = NULL;

    r->request_body->rest = 0;

    rc = ngx_http_next_request_body_filter(r, &out);

    /*
     * The buffers kept in memory count as busy for nginx until written to
     * a temp file; they never will be, and a busy one would fail the next
     * buffer flush of HTTP/2 with an alert.
     */
    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        if (ngx_buf_in_memory(cl->buf)) {
            cl->buf->pos = cl->buf->last;
        }
    }

    return rc;
}


/*
 * A body that another module of the location reads before this module's
 * handler runs (mirror, whose mirror_request_body is on by default, a Lua
 * or njs handler).  Where ngx_http_pki_own_body_cap() turned nginx's
 * client_max_body_size check off, so that the protocol answers a body over
 * its cap in its own form, the limit it turned off is checked here
 * instead, as nginx checks it: an announced length over it before the
 * body is read, the bytes as they come, 413 with nginx's page.  Without
 * it such a reader took a body of any size to a temp file before the
 * protocol's cap refused it.
 */

static ngx_int_t
ngx_http_pki_body_other(ngx_http_request_t *r, ngx_http_pki_body_ctx_t *bctx,
    ngx_chain_t *in)
{
    ngx_chain_t              *cl;
    ngx_http_pki_loc_conf_t  *plcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_pki_module);

    if (plcf == NULL || plcf->body_limit == 0) {
        /* nginx's own check is in force */
        return ngx_http_next_request_body_filter(r, in);
    }

    if (bctx == NULL) {
        if (!r->headers_in.chunked
            && r->headers_in.content_length_n > plcf->body_limit)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "client intended to send too large body: "
                          "%O bytes", r->headers_in.content_length_n);
            return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
        }

        bctx = ngx_pcalloc(r->pool, sizeof(ngx_http_pki_body_ctx_t));
        if (bctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        bctx->other = 1;
        ngx_http_set_ctx(r, bctx, ngx_http_pki_module);
    }

    for (cl = in; cl; cl = cl->next) {
        bctx->received += ngx_buf_size(cl->buf);
    }

    if (bctx->received > plcf->body_limit) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "client intended to send too large body: "
                      "more than %O bytes", plcf->body_limit);
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    return ngx_http_next_request_body_filter(r, in);
}


/*
 * Moves the body's bytes into the request's own memory and hands nginx
 * only the end of the body, as one buffer holding all of it.  nginx's
 * save filter writes what it holds to a temp file once its read buffer is
 * full and more is to come; the read buffer holds client_body_buffer_size
 * bytes, and a chunked body its framing too.  Holding nothing until the
 * end, it never writes one, so no body touches the disk on the event
 * loop, whatever the buffer size and the framing.  The read buffer is
 * reused as it empties.  NGX_DECLINED: the buffer would have to grow over
 * pki_body_memory (nothing of these bytes taken).
 */

static ngx_int_t
ngx_http_pki_body_gather(ngx_http_request_t *r,
    ngx_http_pki_body_ctx_t *bctx, ngx_chain_t *in)
{
    size_t        n, len, size;
    u_char       *p;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t  *cl, *ln, *out, **ll;

    n = 0;

    for (cl = in; cl; cl = cl->next) {
        if (cl->buf->in_file) {
            /* the filters before this one never write files */
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "pki: request body buffer in a file");
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        n += cl->buf->last - cl->buf->pos;
    }

    if (n > bctx->size - bctx->len) {
        /* bctx->received, counting these bytes, is within the cap */
        size = ngx_http_pki_body_size(r, bctx, bctx->len + n);

        rc = ngx_http_pki_body_hold(r, bctx, size);
        if (rc != NGX_OK) {
            return rc == NGX_DECLINED ? NGX_DECLINED
                                      : NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = ngx_pnalloc(r->pool, size);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        len = bctx->len;

        if (len) {
            ngx_memcpy(p, bctx->data, len);
        }

        ngx_http_pki_body_free(r, bctx);

        bctx->data = p;
        bctx->len = len;
        bctx->size = size;
    }

    out = NULL;
    ll = &out;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;
        n = b->last - b->pos;

        if (n) {
            ngx_memcpy(bctx->data + bctx->len, b->pos, n);
            bctx->len += n;
            b->pos = b->last;
        }

        if (b->last_buf) {
            /* the whole body, in one buffer, for nginx's own copy of it
             * ($request_body, a body read again after a redirect): the
             * body is complete, so the save filter writes no file */
            if (bctx->len) {
                b = ngx_calloc_buf(r->pool);
                if (b == NULL) {
                    return NGX_HTTP_INTERNAL_SERVER_ERROR;
                }

                b->temporary = 1;
                b->start = bctx->data;
                b->pos = bctx->data;
                b->last = bctx->data + bctx->len;
                b->end = b->last;
                b->last_buf = 1;
            }

            ln = ngx_alloc_chain_link(r->pool);
            if (ln == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ln->buf = b;
            ln->next = NULL;
            *ll = ln;
            ll = &ln->next;
        }
    }

    return ngx_http_next_request_body_filter(r, out);
}


/*
 * The size of a body's next buffer, to hold need bytes: a page, doubled
 * as the bytes arrive, never over the cap nor over the announced length
 * (both at least need).  The announcement only bounds it: a body that
 * announces 1m and sends 10 bytes gets a page.
 */

static size_t
ngx_http_pki_body_size(ngx_http_request_t *r, ngx_http_pki_body_ctx_t *bctx,
    size_t need)
{
    size_t  size;

    size = ngx_max(bctx->size * 2, NGX_HTTP_PKI_BODY_FIRST);

    while (size < need) {
        size *= 2;
    }

    size = ngx_min(size, bctx->max);

    if (!r->headers_in.chunked && r->headers_in.content_length_n > 0) {
        size = ngx_min(size, (size_t) r->headers_in.content_length_n);
    }

    return size;
}


/*
 * Bodies gathered in memory count against a budget per worker: what
 * their buffers hold allocated, booked as they grow with the bytes that
 * arrive, not what a body announces nor its cap (a stalled body that sent
 * little holds little), and returned when the body's memory is freed or
 * the request ends.  A body whose buffer would grow over the budget is
 * ended and answered 503 with Retry-After, as is one that comes when not
 * even a first buffer fits: never spooled to a temp file and read back on
 * the event loop.
 */

static size_t      ngx_http_pki_body_held_total;
static ngx_uint_t  ngx_http_pki_body_refused_n;
static ngx_msec_t  ngx_http_pki_body_refused_logged;
static ngx_uint_t  ngx_http_pki_body_file_logged;


static ngx_uint_t
ngx_http_pki_body_fits(size_t n)
{
    return ngx_http_pki_body_held_total <= ngx_http_pki_body_budget
           && n <= ngx_http_pki_body_budget - ngx_http_pki_body_held_total;
}


static void
ngx_http_pki_body_busy(ngx_http_request_t *r)
{
    /* at most one line a second: this is what a flood looks like */
    ngx_http_pki_body_refused_n++;

    if (ngx_current_msec - ngx_http_pki_body_refused_logged < 1000) {
        return;
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "pki: request bodies over the budget (pki_body_memory "
                  "%uz, %uz bytes held): %ui request(s) refused (503; OCSP: "
                  "tryLater) since the last such line",
                  ngx_http_pki_body_budget, ngx_http_pki_body_held_total,
                  ngx_http_pki_body_refused_n);

    ngx_http_pki_body_refused_n = 0;
    ngx_http_pki_body_refused_logged = ngx_current_msec;
}


static void
ngx_http_pki_body_release(void *data)
{
    ngx_http_pki_body_ctx_t *bctx = data;

    ngx_http_pki_body_held_total -= bctx->held;
    bctx->held = 0;
}


/*
 * Books a body's new buffer of size bytes, if the budget takes what it
 * adds to the one it replaces (freed once copied: a transient copy is not
 * counted); NGX_DECLINED, counted and logged, over the budget.
 */

static ngx_int_t
ngx_http_pki_body_hold(ngx_http_request_t *r, ngx_http_pki_body_ctx_t *bctx,
    size_t size)
{
    ngx_pool_cleanup_t  *cln;

    if (!ngx_http_pki_body_fits(size - bctx->size)) {
        ngx_http_pki_body_busy(r);
        return NGX_DECLINED;
    }

    if (!bctx->release) {
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_ERROR;
        }

        cln->handler = ngx_http_pki_body_release;
        cln->data = bctx;
        bctx->release = 1;
    }

    bctx->held += size;
    ngx_http_pki_body_held_total += size;

    return NGX_OK;
}


/*
 * A body's buffer back to the pool, and its booking to the budget.  A
 * buffer of a page or more is a large allocation, which ngx_pfree()
 * frees; a smaller one (a cap or an announced length under a page: it
 * never grows) stays in the pool, and booked, until the request ends.
 */

static void
ngx_http_pki_body_free(ngx_http_request_t *r, ngx_http_pki_body_ctx_t *bctx)
{
    if (bctx->data && ngx_pfree(r->pool, bctx->data) == NGX_OK) {
        bctx->held -= bctx->size;
        ngx_http_pki_body_held_total -= bctx->size;
    }

    bctx->data = NULL;
    bctx->len = 0;
    bctx->size = 0;
}


/*
 * The user name auth_basic verified, and no other.  nginx fills
 * r->headers_in.user from the Authorization header, unverified, whenever
 * $remote_user is evaluated (a "set", "map" or limit_req key before the
 * access phase, a log format or add_header after it, each time parsing it
 * again), and auth_basic parses it before it checks the password.  So:
 *  - this module's access handler, which runs first in the access phase
 *    (a phase's handlers run last-registered first; ngx_http_pki_check_
 *    order() warns when another module's runs before it), forgets any
 *    name parsed before: after it only auth_basic can set one;
 *  - its precontent handler, right after the access phase, keeps a name
 *    that is there and was not refused (under "satisfy any", auth_basic
 *    may refuse it while another module lets the request through: its
 *    WWW-Authenticate is then set) in the request's context
 *    (ngx_http_pki_metrics_set_user()), which an internal redirect
 *    clears with the rest of the context;
 *  - ngx_http_pki_verified_user() returns only that name: not one nginx
 *    parses later, nor one of a request that ended before the access
 *    phase (limit_req, a rewrite "return"), nor a subrequest's (it skips
 *    the access phase, and SSI or mirror could bring one to a location
 *    whose auth_basic never ran).  Other locations' $remote_user is left
 *    as nginx makes it.
 */
static ngx_int_t
ngx_http_pki_access_forget_user(ngx_http_request_t *r)
{
    ngx_str_null(&r->headers_in.user);
    ngx_str_null(&r->headers_in.passwd);

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_pki_precontent_mark_user(ngx_http_request_t *r)
{
    if (r == r->main && r->headers_in.user.len
        && r->headers_out.www_authenticate == NULL)
    {
        if (ngx_http_pki_metrics_set_user(r, &r->headers_in.user)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return NGX_DECLINED;
}


/* Warns when another module's access handler runs before this module's
 * (a module loaded after it with load_module): under "satisfy any" that
 * module may let a request through before the unverified name is
 * forgotten; under "satisfy all" a name it sets is forgotten. */
static void
ngx_http_pki_check_order(ngx_cycle_t *cycle)
{
    ngx_uint_t                  i;
    ngx_http_phase_handler_t   *ph;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_core_module);
    if (cmcf == NULL || cmcf->phase_engine.handlers == NULL) {
        return;
    }

    ph = cmcf->phase_engine.handlers;

    for (i = 0; ph[i].checker; i++) {
        if (ph[i].checker != ngx_http_core_access_phase) {
            continue;
        }

        if (ph[i].handler != ngx_http_pki_access_forget_user) {
            ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                          "ngx_http_pki_module: another module's access "
                          "handler runs before its own: put its "
                          "load_module line after the other modules' "
                          "(the user names auth_basic verified are told "
                          "from others by that order)");
        }

        return;
    }
}


static ngx_int_t
ngx_http_pki_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_pki_main_conf_t   *pmcf;
    ngx_http_core_main_conf_t  *cmcf;

    ngx_http_next_request_body_filter = ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_http_pki_body_filter;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pki_module);

    /* master_process off: nginx builds a reload's cycle but runs no
     * init_process for it, so its keys, its Redis and its thread pools
     * would never start, and every request would fail or wait forever.
     * The reload is refused; the running configuration goes on serving */
    if (ngx_process == NGX_PROCESS_SINGLE && !ngx_test_config
        && !ngx_is_init_cycle(cf->cycle->old_cycle)
        && (pmcf->keys.nelts || pmcf->vaults.nelts || pmcf->redis))
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "pki: a reload with "
                      "\"master_process off\" would leave the new "
                      "configuration's keys, Redis and thread pools "
                      "unstarted: refused, the running configuration stays; "
                      "restart nginx to change it");
        return NGX_ERROR;
    }

    /* the merges are done: a location whose bodies may be larger than
     * the whole budget refuses those over it with 503, idle or not (a
     * warning: a small budget beside a large cap may be meant, as a
     * bound on memory) */
    if (ngx_http_pki_cap_max > pmcf->body_memory) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0, "a PKI location takes "
                           "request bodies of up to %uz bytes, more than "
                           "\"pki_body_memory\" (%uz): bodies over it are "
                           "always refused with 503", ngx_http_pki_cap_max,
                           pmcf->body_memory);
    }

    if (ngx_http_pki_crl_cache_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_pki_access_forget_user;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_pki_precontent_mark_user;

    return NGX_OK;
}


ngx_int_t
ngx_http_pki_request_body(ngx_http_request_t *r, size_t max, ngx_str_t *body)
{
    u_char                   *p;
    off_t                     size;
    size_t                    len;
    ssize_t                   n;
    ngx_buf_t                *b;
    ngx_chain_t              *cl;
    ngx_http_pki_body_ctx_t  *bctx;

    body->len = 0;
    body->data = (u_char *) "";

    max = ngx_http_pki_body_max(r, max);

    bctx = ngx_http_get_module_ctx(r, ngx_http_pki_module);

    if (bctx != NULL && bctx->over) {
        /* ended by the body filter at the cap, already logged */
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    if (bctx != NULL && bctx->busy) {
        /* ended by the body filter over pki_body_memory, counted */
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    if (bctx != NULL && bctx->gathering) {
        if (bctx->len) {
            body->data = bctx->data;
            body->len = bctx->len;
        }

        return NGX_OK;
    }

    /*
     * A body read before this module's handler ran, by another module of
     * the location (mirror with mirror_request_body, a Lua or njs handler
     * that reads it): nginx read it as it reads any, in memory up to
     * client_body_buffer_size, past that (or with client_body_in_file_only)
     * to a temp file, which is read back here, on the event loop.  It is
     * read rather than refused: the operator's configuration chose that
     * module and nginx's own way of reading, which wrote the file on the
     * event loop just before (this read, of at most the cap, costs no
     * more), and a refusal would turn a working configuration into errors
     * for the larger bodies only.  Only such a configuration brings it:
     * without such a module every body is gathered in memory (above).  A
     * warning once per worker tells the operator how to keep these bodies
     * in memory too.
     */

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        size = ngx_buf_size(b);

        if (size < 0 || (size_t) size > max - len) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "client sent too large body (cap %uz)", max);
            return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
        }

        len += (size_t) size;
    }

    if (len == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body->data = p;
    body->len = len;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_in_memory(b)) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        if (b->in_file && b->file) {
            if (!ngx_http_pki_body_file_logged) {
                ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                              "pki: a request body that another module "
                              "read first is in a temp file, read back on "
                              "the event loop: a client_body_buffer_size "
                              "over the cap (%uz bytes) keeps such bodies "
                              "in memory (logged once per worker)",
                              max);
                ngx_http_pki_body_file_logged = 1;
            }

            size = b->file_last - b->file_pos;

            n = ngx_read_file(b->file, p, (size_t) size, b->file_pos);
            if (n != (ssize_t) size) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "pki: short read of request body temp file");
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            p += size;
        }
    }

    body->len = p - body->data;

    return NGX_OK;
}


/* helpers */

static ngx_int_t
ngx_http_pki_check_name(ngx_conf_t *cf, const char *what, ngx_str_t *name)
{
    if (pki_name_valid((const char *) name->data, name->len)) {
        return NGX_OK;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid %s name \"%V\" (1-%d of A-Z a-z 0-9 . _ -)",
                       what, name, NGX_HTTP_PKI_NAME_MAX);
    return NGX_ERROR;
}


char *
ngx_http_pki_cstr(ngx_pool_t *pool, ngx_str_t *s)
{
    u_char  *p;

    p = ngx_pnalloc(pool, s->len + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, s->data, s->len);
    p[s->len] = '\0';

    return (char *) p;
}


/*
 * A client's value (a header) for the error log, quoted "\"%V\"": its
 * control bytes and DEL as '?', as the core does with a client's text.
 * nginx refuses only CR, LF and NUL in a header value, so an ESC would
 * write terminal escapes into the log.  The value itself when it has
 * none, else a copy from pool.
 */
static ngx_str_t
ngx_http_pki_log_value(ngx_pool_t *pool, ngx_str_t *value)
{
    u_char     *p;
    size_t      i;
    ngx_str_t   s;

    for (i = 0; i < value->len; i++) {
        if (value->data[i] < 0x20 || value->data[i] == 0x7f) {
            break;
        }
    }

    if (i == value->len) {
        return *value;
    }

    p = ngx_pnalloc(pool, value->len);
    if (p == NULL) {
        ngx_str_set(&s, "?");
        return s;
    }

    for (i = 0; i < value->len; i++) {
        p[i] = (value->data[i] < 0x20 || value->data[i] == 0x7f)
               ? '?' : value->data[i];
    }

    s.data = p;
    s.len = value->len;

    return s;
}


/* pki_ca and pki_template blocks come before the directives using them */

ngx_int_t
ngx_http_pki_resolve(ngx_conf_t *cf, ngx_str_t *ca_name,
    ngx_str_t *tmpl_name, pki_ca_t **ca, pki_template_t **tmpl)
{
    *ca = ngx_http_pki_find_ca(cf, ca_name);
    if (*ca == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown CA \"%V\" (declare pki_ca before use)",
                           ca_name);
        return NGX_ERROR;
    }

    *tmpl = ngx_http_pki_find_template(cf, tmpl_name);
    if (*tmpl == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown template \"%V\" "
                           "(declare pki_template before use)", tmpl_name);
        return NGX_ERROR;
    }

    if (!pki_ca_allows(*ca, *tmpl)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "CA \"%V\" does not allow template \"%V\" "
                           "(list it in \"templates\" of pki_ca \"%V\")",
                           ca_name, tmpl_name, ca_name);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* acme, est, scep: "NAME CA TEMPLATE;" or "NAME off;" */

char *
ngx_http_pki_proto_conf(ngx_conf_t *cf, ngx_flag_t *enable, pki_ca_t **ca,
    pki_template_t **tmpl, ngx_str_t *first_file, ngx_uint_t *first_line)
{
    ngx_str_t  *value;

    if (*ca != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2) {
        if (ngx_strcmp(value[1].data, "off") != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\", "
                               "use \"%V CA TEMPLATE\" or \"%V off\"",
                               &value[1], &value[0], &value[0]);
            return NGX_CONF_ERROR;
        }

        *enable = 0;
        *ca = NULL;
        *tmpl = NULL;

        return NGX_CONF_OK;
    }

    if (ngx_http_pki_resolve(cf, &value[1], &value[2], ca, tmpl) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    *enable = 1;

    ngx_http_pki_metrics_location(cf, (const char *) value[0].data);

    if (*first_line == 0) {
        *first_file = cf->conf_file->file.name;
        *first_line = cf->conf_file->line;
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_pki_needs_redis(ngx_conf_t *cf, const char *directive,
    ngx_str_t *first_file, ngx_uint_t first_line)
{
    if (first_line == 0 || ngx_http_pki_has_redis(cf)) {
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                  "\"%s\" needs \"pki_redis\" in http{} in %V:%ui",
                  directive, first_file, first_line);

    return NGX_ERROR;
}


ngx_table_elt_t *
ngx_http_pki_add_header(ngx_http_request_t *r, const char *key,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NULL;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = value;
    h->value.len = len;

    return h;
}


ngx_int_t
ngx_http_pki_send_plain(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *text, ngx_uint_t retry_after)
{
    u_char       *p;

    /* a body left unread would be parsed as the connection's next
     * request (a refused cross-site POST smuggling one in): discarded,
     * unless it was read or is being read already */
    ngx_http_pki_body_unwanted(r);

    r->headers_out.status = status;
    r->headers_out.content_length_n = text->len;

    ngx_str_set(&r->headers_out.content_type, "text/plain");
    r->headers_out.content_type_len = sizeof("text/plain") - 1;

    if (retry_after) {
        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (ngx_http_pki_add_header(r, "Retry-After", p,
                                    ngx_sprintf(p, "%ui", retry_after) - p)
            == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_pki_send_body(r, text->data, text->len);
}


/* see ngx_http_pki_module.h */

void
ngx_http_pki_send_unbuffered(ngx_http_request_t *r)
{
    /* gzip (gzip_types covering the answer's type) would compress it
     * through buffers of its own, freed unwiped: the answer goes out
     * uncompressed, as to a client that does not accept gzip */
#if (NGX_HTTP_GZIP)
    r->gzip_tested = 1;
    r->gzip_ok = 0;
#endif

#if (NGX_HTTP_SSL)

    if (r->connection->ssl == NULL) {
        return;
    }

#if (NGX_HTTP_V2)
    if (r->stream != NULL) {
        return;
    }
#endif

    r->connection->ssl->buffer = 0;
    r->keepalive = 0;

#endif
}


/* 425 Too Early: see ngx_http_pki_module.h */

ngx_int_t
ngx_http_pki_too_early(ngx_http_request_t *r)
{
#if (NGX_HTTP_SSL)

    ngx_ssl_connection_t  *sc;

    /* an HTTP/2 stream's connection shares the TLS connection's */
    sc = r->connection->ssl;

    if (sc == NULL) {
        return 0;
    }

    if (sc->in_early) {
        goto early;
    }

#if defined SSL_ERROR_EARLY_DATA_REJECTED

    /* BoringSSL */
    if (SSL_in_early_data(sc->connection)) {
        goto early;
    }

#elif defined SSL_READ_EARLY_DATA_SUCCESS

    /* OpenSSL: the early data was read to its end (in_early is off then),
     * the client's Finished not yet */
    if (!SSL_is_init_finished(sc->connection)) {
        goto early;
    }

#endif

    return 0;

early:

    /* nginx 1.22 has no reason phrase for 425 */
    ngx_str_set(&r->headers_out.status_line, "425 Too Early");

    return 1;

#else

    return 0;

#endif
}


/* NUL-terminated copies of cf->args from index "from" on */

static const char **
ngx_http_pki_argv(ngx_conf_t *cf, ngx_uint_t from)
{
    ngx_str_t    *value;
    ngx_uint_t    i;
    const char  **argv;

    value = cf->args->elts;

    argv = ngx_palloc(cf->pool,
                      (cf->args->nelts - from + 1) * sizeof(const char *));
    if (argv == NULL) {
        return NULL;
    }

    for (i = from; i < cf->args->nelts; i++) {
        if (ngx_strlen(value[i].data) != value[i].len) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid NUL in \"%V\"", &value[i]);
            return NULL;
        }

        argv[i - from] = ngx_http_pki_cstr(cf->pool, &value[i]);
        if (argv[i - from] == NULL) {
            return NULL;
        }
    }

    argv[i - from] = NULL;

    return argv;
}


/* "<what>: <public detail>" at emerg, the private log text just before */

static void
ngx_http_pki_conf_error(ngx_conf_t *cf, pki_result_t *res, const char *fmt,
    ngx_str_t *name)
{
    u_char  *p, buf[NGX_MAX_CONF_ERRSTR];

    p = ngx_snprintf(buf, sizeof(buf) - 1, fmt, name);
    *p = '\0';

    if (res->log[0]) {
        ngx_conf_log_error(NGX_LOG_ERR, cf, 0, "%s: %s", buf, res->log);
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s: %s", buf,
                       res->detail[0] ? res->detail
                                      : pki_status_name(res->status));
}


/* a password file: first line, at most NGX_HTTP_PKI_PASSWORD_MAX bytes;
 * wiped from memory when the configuration goes away */

static ngx_int_t
ngx_http_pki_read_secret(ngx_conf_t *cf, ngx_str_t *file, ngx_str_t *out)
{
    u_char              *buf, *p;
    ssize_t              n;
    ngx_fd_t             fd;
    ngx_str_t            name;
    ngx_file_t           f;
    ngx_file_info_t      fi;
    ngx_pool_cleanup_t  *cln;

    name = *file;

    if (name.len == 0 || ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid password_file");
        return NGX_ERROR;
    }

    buf = ngx_pnalloc(cf->pool, NGX_HTTP_PKI_PASSWORD_MAX + 1);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(buf, NGX_HTTP_PKI_PASSWORD_MAX + 1);
    cln->handler = ngx_http_pki_secret_cleanup;
    cln->data = buf;

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &name);
        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR || !ngx_is_file(&fi)) {
        ngx_close_file(fd);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "password_file \"%V\" is no regular file",
                           &name);
        return NGX_ERROR;
    }

    ngx_memzero(&f, sizeof(ngx_file_t));
    f.fd = fd;
    f.name = name;
    f.log = cf->log;

    n = ngx_read_file(&f, buf, NGX_HTTP_PKI_PASSWORD_MAX + 1, 0);

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%V\" failed", &name);
    }

    if (n == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (n > NGX_HTTP_PKI_PASSWORD_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "password_file \"%V\" is too large", &name);
        return NGX_ERROR;
    }

    p = ngx_strlchr(buf, buf + n, '\n');
    if (p == NULL) {
        p = buf + n;
    }

    if (p > buf && p[-1] == '\r') {
        p--;
    }

    ngx_memzero(p, buf + NGX_HTTP_PKI_PASSWORD_MAX + 1 - p);

    if (p == buf) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "password_file \"%V\" is empty", &name);
        return NGX_ERROR;
    }

    out->data = buf;
    out->len = p - buf;

    return NGX_OK;
}


static pki_vault_t *
ngx_http_pki_find_vault_by_token(ngx_http_pki_main_conf_t *pmcf,
    const char *token)
{
    ngx_uint_t             i;
    const char            *t;
    ngx_http_pki_vault_t  *vault;

    vault = pmcf->vaults.elts;

    for (i = 0; i < pmcf->vaults.nelts; i++) {
        t = pki_vault_token(vault[i].vault);

        if (t && ngx_strcmp(t, token) == 0) {
            return vault[i].vault;
        }
    }

    return NULL;
}


static void
ngx_http_pki_vault_cleanup(void *data)
{
    pki_vault_free(data);
}


static void
ngx_http_pki_template_cleanup(void *data)
{
    pki_template_free(data);
}


static void
ngx_http_pki_ca_cleanup(void *data)
{
    pki_ca_free(data);
}


static void
ngx_http_pki_key_cleanup(void *data)
{
    pki_key_free(data);
}


static void
ngx_http_pki_redis_cleanup(void *data)
{
    pki_redis_free(data);
}


static void
ngx_http_pki_secret_cleanup(void *data)
{
    ngx_explicit_memzero(data, NGX_HTTP_PKI_PASSWORD_MAX + 1);
}


/* ---- pki_admin: the revocation admin API (core/admin.c) ----------------- */

#define NGX_HTTP_PKI_ADMIN_BODY_MAX       16384
#define NGX_HTTP_PKI_ADMIN_RETRY_AFTER    "5"


/* the module's request context: begins with the body cap (read_body) */
typedef struct {
    ngx_http_pki_body_ctx_t    body;
    pki_admin_conf_t           conf;
    pki_admin_req_t            req;
    pki_admin_resp_t           resp;

    /* what a secret answer made (resp.made: a new EAB key or SCEP
     * challenge) when the answer could not be built or sent */
    ngx_int_t                  rc;        /* the answer then */
    pki_result_t               res;       /* of its withdrawal */
} ngx_http_pki_admin_ctx_t;


static void ngx_http_pki_admin_withdraw(ngx_http_request_t *r,
    ngx_http_pki_admin_ctx_t *ctx, ngx_int_t rc);


static ngx_str_t  ngx_http_pki_admin_busy =
    ngx_string("{\"error\":\"busy, retry later\"}");
static ngx_str_t  ngx_http_pki_admin_early =
    ngx_string("{\"error\":\"sent in TLS early data: send it again "
               "after the handshake\"}");
static ngx_str_t  ngx_http_pki_admin_https =
    ngx_string("the admin API requires HTTPS\n");


static char *
ngx_http_pki_admin(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_pki_loc_conf_t   *plcf;
    ngx_http_pki_main_conf_t  *pmcf;
#if (NGX_PCRE)
    ngx_http_core_loc_conf_t  *clcf;
#endif

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pki_module);

    if (pmcf->redis == NULL) {
        return "needs pki_redis in the http{} block before it";
    }

    plcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_pki_module);

    if (plcf->content == ngx_http_pki_admin_handler) {
        return "is duplicate";
    }

#if (NGX_PCRE)
    /* the endpoint is the path below the location's name, taken as a
     * prefix (ngx_http_pki_admin_handler): under a regex every request
     * would be an unknown endpoint */
    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->regex != NULL) {
        return "needs a prefix location, not a regex";
    }
#endif

    if (ngx_http_pki_content(cf, cmd, ngx_http_pki_admin_handler)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    ngx_http_pki_metrics_location(cf, "admin");

    return NGX_CONF_OK;
}


/*
 * Access control is nginx's own (auth_basic, auth_request + a user, mTLS
 * with satisfy): the module only takes the name auth_basic verified.  A
 * request without one is refused by the core (403), so a location whose
 * protection was forgotten is never open.  The Authorization header is
 * never parsed here.
 */

/*
 * 1 when a browser made r for another site's page.  A form, or a fetch()
 * in "no-cors" mode, sends a POST across sites with no preflight, and a
 * browser may add the admin's cached Basic credentials: so a page could
 * revoke certificates or accounts.  Browsers say where a request comes
 * from: Sec-Fetch-Site (anything but same-origin or none, the user's own
 * navigation) and Origin (on every POST; it must be http:// or https://
 * and this server's Host).  Tools (curl, pkictl) send neither.
 */
ngx_int_t
ngx_http_pki_cross_site(ngx_http_request_t *r)
{
    size_t            n;
    u_char            own[300], *p;
    ngx_str_t         value;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {
        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }
            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("Sec-Fetch-Site") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Sec-Fetch-Site",
                               h[i].key.len) == 0)
        {
            if (!(h[i].value.len == sizeof("same-origin") - 1
                  && ngx_strncasecmp(h[i].value.data,
                                     (u_char *) "same-origin",
                                     h[i].value.len) == 0)
                && !(h[i].value.len == sizeof("none") - 1
                     && ngx_strncasecmp(h[i].value.data, (u_char *) "none",
                                        h[i].value.len) == 0))
            {
                goto refused;
            }

        } else if (h[i].key.len == sizeof("Origin") - 1
                   && ngx_strncasecmp(h[i].key.data, (u_char *) "Origin",
                                      h[i].key.len) == 0)
        {
            if (r->headers_in.host == NULL
                || r->headers_in.host->value.len > sizeof(own) - 16)
            {
                goto refused;
            }

            /* http or https: behind a proxy that ends TLS the browser's
             * scheme is not this connection's; the host is what counts */
            p = ngx_sprintf(own, "https://%V", &r->headers_in.host->value);
            n = p - own;

            if (!(h[i].value.len == n
                  && ngx_strncasecmp(h[i].value.data, own, n) == 0)
                && !(h[i].value.len == n - 1
                     && ngx_strncasecmp(h[i].value.data,
                                        (u_char *) "http://", 7) == 0
                     && ngx_strncasecmp(h[i].value.data + 7, own + 8,
                                        n - 8) == 0))
            {
                goto refused;
            }
        }
    }

    return 0;

refused:

    value = ngx_http_pki_log_value(r->pool, &h[i].value);

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "pki admin: refused a request made by another site "
                  "(%V: \"%V\")", &h[i].key, &value);
    return 1;
}


static ngx_int_t
ngx_http_pki_admin_handler(ngx_http_request_t *r)
{
    size_t                     i;
    ngx_int_t                  rc;
    ngx_str_t                 *loc, user;
    ngx_http_pki_ca_t         *cas;
    ngx_http_pki_loc_conf_t   *plcf;
    ngx_http_pki_admin_ctx_t  *ctx;
    ngx_http_core_loc_conf_t  *clcf;
    ngx_http_pki_main_conf_t  *pmcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_pki_module);

#if (NGX_HTTP_SSL)
    if (r->connection->ssl == NULL && !plcf->admin_plain_http) {
        return ngx_http_pki_admin_no_tls(r);
    }
#else
    if (!plcf->admin_plain_http) {
        return ngx_http_pki_admin_no_tls(r);
    }
#endif

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_pki_module);
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (r != r->main) {
        /* a subrequest (SSI, mirror, auth_request) carries its parent's
         * headers and skips the access phase */
        ngx_str_set(&user, "the admin API is not served to subrequests\n");
        return ngx_http_pki_send_plain(r, NGX_HTTP_FORBIDDEN, &user, 0);
    }

    if (ngx_http_pki_cross_site(r)) {
        ngx_str_set(&user, "a request made by another site is refused\n");
        return ngx_http_pki_send_plain(r, NGX_HTTP_FORBIDDEN, &user, 0);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_pki_admin_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->conf.redis = pmcf->redis;
    ctx->conf.max_body = NGX_HTTP_PKI_ADMIN_BODY_MAX;
    ctx->conf.ncas = pmcf->cas.nelts;
    ctx->conf.acme_state = pmcf->acme_state.elts;
    ctx->conf.nacme_state = pmcf->acme_state.nelts;

    ctx->conf.cas = ngx_pcalloc(r->pool,
                                (pmcf->cas.nelts + 1) * sizeof(pki_ca_t *));
    if (ctx->conf.cas == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cas = pmcf->cas.elts;
    for (i = 0; i < pmcf->cas.nelts; i++) {
        ctx->conf.cas[i] = cas[i].ca;
    }

    /* the path below the location prefix */

    loc = &clcf->name;

    if (r->uri.len >= loc->len
        && ngx_strncmp(r->uri.data, loc->data, loc->len) == 0)
    {
        ctx->req.path = (const char *) r->uri.data + loc->len;
        ctx->req.path_len = r->uri.len - loc->len;

    } else {
        ctx->req.path = (const char *) r->uri.data;
        ctx->req.path_len = r->uri.len;
    }

    while (ctx->req.path_len > 0 && ctx->req.path[0] == '/') {
        ctx->req.path++;
        ctx->req.path_len--;
    }

    if (r->args.len) {
        ctx->req.query = (const char *) r->args.data;
        ctx->req.query_len = r->args.len;
    }

    ctx->req.method = ngx_http_pki_cstr(r->pool, &r->method_name);
    ctx->req.client = ngx_http_pki_cstr(r->pool, &r->connection->addr_text);

    if (ctx->req.method == NULL || ctx->req.client == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_pki_verified_user(r, &user);

    if (user.len) {
        ctx->req.identity = ngx_http_pki_cstr(r->pool, &user);
        if (ctx->req.identity == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ngx_http_set_ctx(r, ctx, ngx_http_pki_module);

    rc = ngx_http_pki_read_body(r, NGX_HTTP_PKI_ADMIN_BODY_MAX,
                                ngx_http_pki_admin_body_handler);

    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE
        || rc == NGX_HTTP_SERVICE_UNAVAILABLE)
    {
        /* over the cap, or pki_body_memory used up (nothing read) */
        ngx_http_pki_body_refused(r, 0);
    }

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return ngx_http_pki_admin_body_error(r, rc);
    }

    return NGX_DONE;
}


/*
 * The admin API carries the admin's Basic password in every request, new
 * EAB hmac_key values and SCEP challenges in its answers.  In a server
 * without TLS these would cross the network in the clear, so a request on
 * a connection without TLS is refused before its body is read or anything
 * is done, unless pki_admin_plain_http says that TLS ends in front of
 * nginx.
 */

static ngx_int_t
ngx_http_pki_admin_no_tls(ngx_http_request_t *r)
{
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "pki admin: request from %V refused: the connection has "
                  "no TLS; serve pki_admin in an ssl server, or set "
                  "\"pki_admin_plain_http on\" where TLS ends in front "
                  "of nginx", &r->connection->addr_text);

    ngx_http_pki_body_unwanted(r);

    return ngx_http_pki_send_plain(r, NGX_HTTP_FORBIDDEN,
                                   &ngx_http_pki_admin_https, 0);
}


/* A body that could not be read: a JSON error like the API's own, not
 * nginx's HTML page (503 with Retry-After: over pki_body_memory).  The
 * rest of the body is not read: the connection closes after the answer. */
static ngx_int_t
ngx_http_pki_admin_body_error(ngx_http_request_t *r, ngx_int_t rc)
{
    u_char         *large, *last;
    static u_char   bad[] = "{\"error\":\"the request body could not be "
                            "read\"}\n";

    if (rc != NGX_HTTP_REQUEST_ENTITY_TOO_LARGE && rc != NGX_HTTP_BAD_REQUEST
        && rc != NGX_HTTP_SERVICE_UNAVAILABLE)
    {
        return rc;
    }

    r->keepalive = 0;
    r->lingering_close = 1;

    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        /* the cap in force: the API's, or a smaller client_max_body_size */
        large = ngx_pnalloc(r->pool, sizeof("{\"error\":\"request body too "
                                            "large (at most  bytes)\"}\n")
                                     + NGX_SIZE_T_LEN);
        if (large == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        last = ngx_sprintf(large, "{\"error\":\"request body too large (at "
                           "most %uz bytes)\"}\n",
                           ngx_http_pki_body_max(r,
                                                 NGX_HTTP_PKI_ADMIN_BODY_MAX));

        return ngx_http_pki_send_json(r, rc, large, last - large);
    }

    if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        return ngx_http_pki_admin_unavailable(r);
    }

    return ngx_http_pki_send_json(r, rc, bad, sizeof(bad) - 1);
}


/* 503 with Retry-After: the thread pool's queue is full, or the body
 * would go over pki_body_memory; each is logged (rate-limited) where it
 * is found */
static ngx_int_t
ngx_http_pki_admin_unavailable(ngx_http_request_t *r)
{
    if (ngx_http_pki_add_header(r, "Retry-After",
                                (u_char *) NGX_HTTP_PKI_ADMIN_RETRY_AFTER,
                                sizeof(NGX_HTTP_PKI_ADMIN_RETRY_AFTER) - 1)
        == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_pki_send_json(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                  ngx_http_pki_admin_busy.data,
                                  ngx_http_pki_admin_busy.len);
}


static void
ngx_http_pki_admin_body_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_str_t                  body;
    ngx_http_pki_admin_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_pki_module);

    rc = ngx_http_pki_request_body(r, NGX_HTTP_PKI_ADMIN_BODY_MAX, &body);
    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_http_pki_admin_body_error(r, rc));
        return;
    }

    /* a change (revocation, EAB key, ...) sent in TLS 1.3 early data can
     * be replayed by anyone who saw it: RFC 8470's 425, the client sends
     * it again after the handshake */
    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD
        && ngx_http_pki_too_early(r))
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "pki admin: %V in TLS early data refused (425)",
                      &r->method_name);
        ngx_http_finalize_request(r, ngx_http_pki_send_json(r,
                                      NGX_HTTP_PKI_TOO_EARLY,
                                      ngx_http_pki_admin_early.data,
                                      ngx_http_pki_admin_early.len));
        return;
    }

    ctx->req.body = body.data;
    ctx->req.body_len = body.len;

    rc = ngx_http_pki_post(r, ngx_http_pki_admin_work,
                           ngx_http_pki_admin_done, ctx);

    switch (rc) {

    case NGX_OK:
        /* drops the reference of the body reading; the task holds one */
        ngx_http_finalize_request(r, NGX_DONE);
        return;

    case NGX_DECLINED:
        /* logged (rate-limited) by ngx_http_pki_post() */
        ngx_http_finalize_request(r, ngx_http_pki_admin_unavailable(r));
        return;

    default:
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }
}


static void
ngx_http_pki_admin_work(void *data)
{
    ngx_http_pki_admin_ctx_t *ctx = data;

    pki_admin_handle(&ctx->conf, &ctx->req, &ctx->resp);
}


static void
ngx_http_pki_admin_done(ngx_http_request_t *r, void *data)
{
    ngx_http_pki_admin_ctx_t *ctx = data;

    u_char              *body;
    size_t               len;
    ngx_int_t            rc;
    ngx_str_t           *wipe;
    ngx_uint_t           level;
    ngx_table_elt_t     *h;
    pki_admin_resp_t    *resp;
    ngx_pool_cleanup_t  *cln;

    resp = &ctx->resp;

    ngx_http_pki_metrics_mark(r, "admin", NULL, NULL, resp->res.status,
                              resp->res.detail);

    if (resp->http_status >= 500) {
        level = NGX_LOG_ERR;

    } else if (resp->http_status >= 400) {
        level = NGX_LOG_INFO;

    } else {
        level = resp->res.log[0] != '\0' ? NGX_LOG_NOTICE : 0;
    }

    if (level) {
        ngx_log_error(level, r->connection->log, 0,
                      "pki admin: %d %s%s%s", resp->http_status,
                      resp->res.detail[0] ? resp->res.detail : "ok",
                      resp->res.log[0] ? ": " : "", resp->res.log);
    }

    body = NULL;
    len = resp->body_len;

    if (resp->body != NULL && len > 0) {
        body = ngx_pnalloc(r->pool, len);

        /* a body holding a secret (a new EAB key or SCEP challenge) is
         * wiped with the pool, after it was sent */
        cln = NULL;
        if (resp->secret) {
            cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_str_t));
        }

        if (body == NULL || (resp->secret && cln == NULL)) {
            /* wipes its copy; none was made in r->pool */
            pki_admin_resp_free(resp);

            if (resp->secret) {
                ngx_http_pki_admin_withdraw(r, ctx,
                                            NGX_HTTP_INTERNAL_SERVER_ERROR);
                return;
            }

            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        ngx_memcpy(body, resp->body, len);

        if (cln != NULL) {
            wipe = cln->data;
            wipe->data = body;
            wipe->len = len;
            cln->handler = ngx_http_pki_admin_wipe;

            /* nor a copy in the connection's TLS buffer */
            ngx_http_pki_send_unbuffered(r);
        }
    }

    /* wipes its copy */
    pki_admin_resp_free(resp);

    if (resp->http_status == NGX_HTTP_NOT_ALLOWED && resp->allow != NULL) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Allow");
        h->value.data = (u_char *) resp->allow;
        h->value.len = ngx_strlen(resp->allow);
    }

    /* the store or the transaction log did not answer: as every other
     * 503 of the API (ngx_http_pki_admin_unavailable), says when to come
     * back */
    if (resp->http_status == NGX_HTTP_SERVICE_UNAVAILABLE
        && ngx_http_pki_add_header(r, "Retry-After",
                                   (u_char *) NGX_HTTP_PKI_ADMIN_RETRY_AFTER,
                                   sizeof(NGX_HTTP_PKI_ADMIN_RETRY_AFTER) - 1)
           == NULL)
    {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    rc = ngx_http_pki_send_json(r, resp->http_status ? resp->http_status
                                     : NGX_HTTP_INTERNAL_SERVER_ERROR,
                                body, body ? len : 0);

    if (resp->secret && (rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE))
    {
        /* the secret did not leave whole (no header, no buffer, a broken
         * connection) */
        ngx_http_pki_admin_withdraw(r, ctx, rc);
        return;
    }

    ngx_http_finalize_request(r, rc);
}


/*
 * A new EAB key or one-time SCEP challenge whose answer could not be built
 * or sent (out of memory, a broken connection): nobody saw its secret, yet
 * it is live in Redis.  The core withdraws it (pki_admin_withdraw: the key
 * disabled, the challenge deleted, each audited) in a pool task (Redis
 * blocks), then r is finalized with rc; where even that cannot be done,
 * the error log names it for the operator to withdraw.  resp->made names
 * it by ids only: neither the HMAC key nor the challenge is logged.
 */
static void
ngx_http_pki_admin_withdraw(ngx_http_request_t *r,
    ngx_http_pki_admin_ctx_t *ctx, ngx_int_t rc)
{
    pki_admin_made_t  *made;

    ctx->rc = rc;
    made = &ctx->resp.made;

    if (made->kind == PKI_ADMIN_MADE_SCEP_CHALLENGE) {
        ngx_http_pki_metrics_mark(r, "admin", NULL, NULL, PKI_INTERNAL,
                                  "the answer with a new SCEP challenge "
                                  "could not be sent: the challenge stays "
                                  "usable");
    } else {
        ngx_http_pki_metrics_mark(r, "admin", NULL, NULL, PKI_INTERNAL,
                                  "the answer with a new EAB key could not "
                                  "be sent: the key stays enabled");
    }

    if (made->kind != PKI_ADMIN_MADE_NONE
        && ngx_http_pki_post(r, ngx_http_pki_admin_withdraw_work,
                             ngx_http_pki_admin_withdrawn, ctx)
           == NGX_OK)
    {
        /* drops the reference of this task; the new one holds one */
        ngx_http_finalize_request(r, NGX_DONE);
        return;
    }

    if (made->kind == PKI_ADMIN_MADE_SCEP_CHALLENGE) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "pki admin: the answer with new SCEP challenge \"%s\" "
                      "could not be sent, nor the challenge withdrawn: it "
                      "stays usable, unseen, until it expires; delete it "
                      "(redis DEL %s)", made->id, made->key);

    } else {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "pki admin: the answer with new EAB key \"%s\" could "
                      "not be sent, nor the key disabled: it stays enabled, "
                      "unseen; disable it (DELETE acme/eab/%s)",
                      made->id, made->id);
    }

    ngx_http_finalize_request(r, rc);
}


static void
ngx_http_pki_admin_withdraw_work(void *data)
{
    ngx_http_pki_admin_ctx_t *ctx = data;

    pki_result_init(&ctx->res);

    (void) pki_admin_withdraw(&ctx->conf, &ctx->req, &ctx->resp, &ctx->res);
}


static void
ngx_http_pki_admin_withdrawn(ngx_http_request_t *r, void *data)
{
    ngx_http_pki_admin_ctx_t *ctx = data;

    pki_result_t      *res;
    pki_admin_made_t  *made;

    res = &ctx->res;
    made = &ctx->resp.made;

    if (made->kind == PKI_ADMIN_MADE_SCEP_CHALLENGE) {

        if (res->status == PKI_OK) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "pki admin: the answer with new SCEP challenge "
                          "\"%s\" could not be sent: the challenge is "
                          "withdrawn%s%s", made->id,
                          res->log[0] ? "; " : "", res->log);

            ngx_http_pki_metrics_mark(r, "admin", NULL, NULL, PKI_INTERNAL,
                                      "the answer with a new SCEP challenge "
                                      "could not be sent: the challenge is "
                                      "withdrawn");

        } else {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "pki admin: the answer with new SCEP challenge "
                          "\"%s\" could not be sent, nor the challenge "
                          "withdrawn (%s%s%s): it stays usable, unseen, "
                          "until it expires; delete it (redis DEL %s)",
                          made->id, res->detail, res->log[0] ? ": " : "",
                          res->log, made->key);
        }

        ngx_http_finalize_request(r, ctx->rc);
        return;
    }

    if (res->status == PKI_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "pki admin: the answer with new EAB key \"%s\" could "
                      "not be sent: the key is disabled%s%s", made->id,
                      res->log[0] ? "; " : "", res->log);

        ngx_http_pki_metrics_mark(r, "admin", NULL, NULL, PKI_INTERNAL,
                                  "the answer with a new EAB key could not "
                                  "be sent: the key is disabled");

    } else {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "pki admin: the answer with new EAB key \"%s\" could "
                      "not be sent, nor the key disabled (%s%s%s): it stays "
                      "enabled, unseen; disable it (DELETE acme/eab/%s)",
                      made->id, res->detail, res->log[0] ? ": " : "",
                      res->log, made->id);
    }

    ngx_http_finalize_request(r, ctx->rc);
}


static void
ngx_http_pki_admin_wipe(void *data)
{
    ngx_str_t  *wipe = data;

    ngx_explicit_memzero(wipe->data, wipe->len);
}


ngx_int_t
ngx_http_pki_read_only(ngx_http_request_t *r)
{
    static ngx_str_t  text = ngx_string("use GET or HEAD\n");

    if (ngx_http_pki_add_header(r, "Allow", (u_char *) "GET, HEAD", 9)
        == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_pki_send_plain(r, NGX_HTTP_NOT_ALLOWED, &text, 0);
}


ngx_int_t
ngx_http_pki_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len)
{
    ngx_table_elt_t  *h;

    /* as in ngx_http_pki_send_plain() */
    ngx_http_pki_body_unwanted(r);

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = sizeof("application/json") - 1;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-store");

    if (len == 0) {
        r->header_only = 1;
    }

    return ngx_http_pki_send_body(r, body, len);
}


/* ---- pki_ca_certificate: a CA's certificate (RFC 5280 4.2.2.1) ---------- */

/*
 * What a CA's ca_issuers_url names: its certificate as DER,
 * application/pkix-cert (RFC 2585 4.1, RFC 5280 4.2.2.1).  Encoded once
 * at configuration from the certificate the pki_ca block loaded, and
 * served from memory on the event loop: no Redis, no key, no thread.  The
 * validators are the same on every host of a fleet and across reloads of
 * the same certificate: Last-Modified is its notBefore, the ETag a digest
 * of its DER.
 */

#define NGX_HTTP_PKI_CA_CERT_MAX_AGE  86400


time_t
ngx_http_pki_asn1_time(const ASN1_TIME *t)
{
    struct tm  tm;

    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1) {
        return (time_t) -1;
    }

    return timegm(&tm);
}


static char *
ngx_http_pki_ca_certificate(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_pki_loc_conf_t *plcf = conf;

    int                      len;
    u_char                  *p;
    X509                    *x;
    pki_ca_t                *ca;
    ngx_str_t               *value;
    unsigned int             mdlen;
    ngx_http_pki_ca_cert_t  *cc;
    u_char                   md[EVP_MAX_MD_SIZE];

    if (plcf->ca_cert != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ca = ngx_http_pki_find_ca(cf, &value[1]);
    if (ca == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown CA \"%V\" (declare pki_ca before use)",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    x = pki_ca_cert(ca);

    cc = ngx_pcalloc(cf->pool, sizeof(ngx_http_pki_ca_cert_t));
    if (cc == NULL) {
        return NGX_CONF_ERROR;
    }

    len = x ? i2d_X509(x, NULL) : -1;
    if (len <= 0) {
        ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                      "i2d_X509() failed for CA \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    cc->der.data = ngx_pnalloc(cf->pool, len);
    if (cc->der.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = cc->der.data;
    if (i2d_X509(x, &p) != len) {
        ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                      "i2d_X509() failed for CA \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    cc->der.len = len;

    if (EVP_Digest(cc->der.data, cc->der.len, md, &mdlen, EVP_sha256(),
                   NULL)
        != 1)
    {
        ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0, "EVP_Digest() failed");
        return NGX_CONF_ERROR;
    }

    /* "<first 128 bits of the SHA-256, hex>" */
    cc->etag.data = ngx_pnalloc(cf->pool, 2 + 32);
    if (cc->etag.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = cc->etag.data;
    *p++ = '"';
    p = ngx_hex_dump(p, md, 16);
    *p++ = '"';
    cc->etag.len = p - cc->etag.data;

    cc->not_before = ngx_http_pki_asn1_time(X509_get0_notBefore(x));
    cc->not_after = ngx_http_pki_asn1_time(X509_get0_notAfter(x));

    if (cc->not_before == (time_t) -1 || cc->not_after == (time_t) -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the certificate of CA \"%V\" has a validity "
                           "that cannot be read", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_pki_content(cf, cmd, ngx_http_pki_ca_certificate_handler)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    plcf->ca_cert = cc;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_pki_ca_certificate_handler(ngx_http_request_t *r)
{
    time_t                    age;
    ngx_int_t                 rc;
    ngx_http_pki_ca_cert_t   *cc;
    ngx_http_pki_loc_conf_t  *plcf;

    static ngx_str_t  type = ngx_string("application/pkix-cert");

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_pki_read_only(r);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_pki_module);

    cc = plcf->ca_cert;
    if (cc == NULL) {
        return NGX_HTTP_NOT_FOUND;
    }

    /* a day, and never cached past the certificate's end */
    age = cc->not_after - ngx_time();
    if (age < 0) {
        age = 0;
    }
    if (age > NGX_HTTP_PKI_CA_CERT_MAX_AGE) {
        age = NGX_HTTP_PKI_CA_CERT_MAX_AGE;
    }

    /* Last-Modified never after Date (RFC 9110 8.8.2.1): nginx -t takes
     * a CA a few minutes before its notBefore */
    return ngx_http_pki_send_der(r, &type, &cc->der,
                                 ngx_min(cc->not_before, ngx_time()),
                                 &cc->etag, age, 0);
}


/*
 * A 200 with der (living as long as r->pool) as the body of the given
 * type, for a cache: Cache-Control max-age (revalidate: must-revalidate
 * too), Last-Modified and ETag, so that nginx answers a conditional
 * request with 304.  HEAD: the header only.
 */
static ngx_int_t
ngx_http_pki_send_der(ngx_http_request_t *r, ngx_str_t *type,
    ngx_str_t *der, time_t last_modified, ngx_str_t *etag, time_t max_age,
    ngx_uint_t revalidate)
{
    u_char           *p;
    ngx_table_elt_t  *h;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = der->len;
    r->headers_out.last_modified_time = last_modified;

    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_pnalloc(r->pool, sizeof("max-age=, public, no-transform, "
                                    "must-revalidate") + NGX_TIME_T_LEN);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    h->value.data = p;
    h->value.len = ngx_sprintf(p, "max-age=%T, public, no-transform%s",
                               max_age,
                               revalidate ? ", must-revalidate" : "")
                   - p;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "ETag");
    h->value = *etag;
    r->headers_out.etag = h;

    /* a body not read is discarded, not parsed as the next request
     * (see ngx_http_pki_send_plain()) */
    ngx_http_pki_body_unwanted(r);

    return ngx_http_pki_send_body(r, der->data, der->len);
}


/* ---- pki_crl: the CAs' CRLs (core/crl.c pki_crl_current) ---------------- */

/*
 * Each worker keeps the last CRL of every CA in memory and answers from it
 * on the event loop.  At most once per second per CA, the first request
 * that finds the copy older than that posts one detached thread task, the
 * check (pki_crl_current: one Redis round trip when nothing changed, the
 * DER only when the number differs, a rebuild under the fleet's crl_lock
 * after a revocation); its answer updates the copy, whoever asked.  The
 * requests meanwhile get the copy in memory.  Redis down: the copy is
 * served until its nextUpdate, then 503.
 *
 * Stale-while-revalidate, bounded: the request that posts the check while
 * its copy is valid waits for it NGX_HTTP_PKI_CRL_WAIT_MSEC at most, then
 * gets the copy (signed, before its nextUpdate).  Waiting for the check
 * itself made that request take the Redis timeout during a stall, or a
 * whole rebuild after a revocation (about 1 s at 100k entries), although
 * a valid CRL was in memory; with requests more than a second apart (IoT
 * relying parties) that was every request.  The short wait keeps what a
 * check answers quickly: when Redis answers and the CRL listing a
 * revocation is stored (worker 0's refresher builds it within about 10 s
 * of the revocation, with no request) or is built within the wait, the
 * first request more than a second after the revocation gets it.  Only a
 * slower check (a large rebuild, a Redis stall) leaves that one request
 * with the previous CRL; the next after the check gets the new one.
 *
 * Without a valid copy (a new worker, a CRL past its nextUpdate) there is
 * nothing to serve meanwhile: the requests, the one that posted the check
 * included, wait for its answer on the CA's list, holding no thread, and
 * are answered from the new copy or with 503 when the check brought none.
 * A task per request would fill the pool with tasks that each wait for the
 * same lock (up to 3 s while another host builds) or Redis timeout, and
 * starve every other protocol of the worker.  Up to
 * NGX_HTTP_PKI_CRL_WAITERS wait per CA besides the poster; the requests
 * beyond get 503 with Retry-After at once.
 */

#define NGX_HTTP_PKI_CRL_CHECK_MSEC   1000
#define NGX_HTTP_PKI_CRL_WAIT_MSEC    100
#define NGX_HTTP_PKI_CRL_MAX_AGE      60
#define NGX_HTTP_PKI_CRL_RETRY_AFTER  "5"
#define NGX_HTTP_PKI_CRL_WAITERS      256


/* a CRL shared by the worker's copy and the responses still sending it;
 * data is the DER the task's pki_crl_current() malloc'd, taken as it is
 * (a copy on the event loop took tens of ms for a CRL of a million
 * entries, once per new CRL and worker) and free()d with the last ref */
typedef struct {
    ngx_uint_t                 refs;
    size_t                     len;
    u_char                    *data;
} ngx_http_pki_crl_blob_t;


/* a request waiting for its worker's task for the CRL (in its r->pool) */
typedef struct ngx_http_pki_crl_waiter_s  ngx_http_pki_crl_waiter_t;

struct ngx_http_pki_crl_waiter_s {
    ngx_http_pki_crl_waiter_t  *next;
    ngx_http_request_t         *request;
};


typedef struct {
    ngx_http_pki_crl_blob_t    *blob;
    long long                   number;
    time_t                      this_update;
    time_t                      next_update;
    ngx_msec_t                  checked;
    ngx_str_t                   name;      /* the CA's, in the config */
    ngx_http_pki_crl_waiter_t  *waiters;   /* while busy, without a copy */
    ngx_uint_t                  nwaiters;
    ngx_uint_t                  refused;   /* over the cap, this task */
    ngx_http_pki_crl_waiter_t  *poster;    /* posted it with a valid copy,
                                              waiting for it a moment */
    ngx_event_t                 wait;      /* the poster's moment */
    ngx_event_t                 guard;     /* keeps the worker up while
                                              the task is out */
    unsigned                    busy:1;    /* the worker's task is out */
} ngx_http_pki_crl_state_t;


typedef struct {
    pki_ca_t                  *ca;
    ngx_str_t                  name;
    pki_redis_t               *redis;
    long                       next_update;
    long long                  have;
    ngx_http_pki_crl_state_t  *state;
    pki_status_t               status;
    pki_crl_info_t             info;
    pki_result_t               res;
    const char                *cache_dir;   /* NULL: no local copy */
    pki_status_t               fstatus;     /* reading the local copy */
    pki_result_t               fres;
} ngx_http_pki_crl_ctx_t;


static void ngx_http_pki_crl_work(void *data);
static void ngx_http_pki_crl_done(void *data);
static void ngx_http_pki_crl_guard(ngx_event_t *ev);
static void ngx_http_pki_crl_waited(ngx_event_t *ev);
static ngx_int_t ngx_http_pki_crl_send(ngx_http_request_t *r,
    ngx_str_t *name, ngx_http_pki_crl_state_t *st);
static ngx_int_t ngx_http_pki_crl_wait(ngx_http_request_t *r,
    ngx_str_t *name, ngx_http_pki_crl_state_t *st);
static void ngx_http_pki_crl_block(ngx_http_request_t *r,
    ngx_http_pki_crl_waiter_t *w);
static void ngx_http_pki_crl_wake(ngx_http_pki_crl_waiter_t *w,
    ngx_str_t *name, ngx_http_pki_crl_state_t *st);
static ngx_int_t ngx_http_pki_crl_answer(ngx_http_request_t *r,
    ngx_str_t *name, ngx_http_pki_crl_state_t *st);
static void ngx_http_pki_crl_unref(void *data);


static void *
ngx_http_pki_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_pki_loc_conf_t  *plcf;

    plcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_pki_loc_conf_t));
    if (plcf == NULL) {
        return NULL;
    }

    plcf->crl = NGX_CONF_UNSET;
    plcf->crl_next_update = NGX_CONF_UNSET;
    plcf->ca_cert = NGX_CONF_UNSET_PTR;
    plcf->admin_plain_http = NGX_CONF_UNSET;

    return plcf;
}


static char *
ngx_http_pki_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_pki_loc_conf_t *prev = parent;
    ngx_http_pki_loc_conf_t *conf = child;

    ngx_flag_t                 here;
    ngx_http_pki_main_conf_t  *pmcf;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    /*
     * A directive of ours made the content handler here: another module's
     * directive read after it (proxy_pass, fastcgi_pass, ...) replaced it.
     * The clcf of a location is final once the static modules' merges ran
     * (they come before this dynamic module's).
     */

    here = (conf->content != NULL);

    if (here && clcf->handler != conf->content) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"%V\": this location already has a content "
                      "handler (another module's directive: proxy_pass, "
                      "fastcgi_pass, ...); one location serves one "
                      "protocol in %V:%ui", &conf->content_name,
                      &conf->content_file, conf->content_line);
        return NGX_CONF_ERROR;
    }

    /*
     * An if or limit_except block (clcf->noname) answers with the handler
     * of the location it is in: nginx keeps that for an if block, but
     * for the methods limit_except restricts it switches to the block's
     * configuration, whose handler is NULL (the static module would
     * answer 404).  As proxy_pass does.  A nested location does not
     * inherit it (EST, SCEP and ACME do that in their own merges).
     */

    if (!here && clcf->noname && prev->content != NULL) {
        conf->content = prev->content;
        conf->content_name = prev->content_name;
        conf->content_file = prev->content_file;
        conf->content_line = prev->content_line;

        if (clcf->handler == NULL) {
            clcf->handler = conf->content;
        }
    }

    /* the admin API refuses a body over its cap itself, in JSON */
    ngx_http_pki_own_body_cap(cf, ngx_http_pki_admin_handler,
                              NGX_HTTP_PKI_ADMIN_BODY_MAX);

    ngx_conf_merge_value(conf->crl, prev->crl, 0);
    ngx_conf_merge_sec_value(conf->crl_next_update, prev->crl_next_update,
                             NGX_HTTP_PKI_CRL_DEFAULT);
    ngx_conf_merge_value(conf->admin_plain_http, prev->admin_plain_http, 0);
    /* for the if and limit_except blocks that answer with the handler */
    ngx_conf_merge_ptr_value(conf->ca_cert, prev->ca_cert, NULL);

    if (conf->crl_next_update < 60
        || conf->crl_next_update > 366L * 24 * 3600)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "pki_crl_next_update must be between 1m and 366d");
        return NGX_CONF_ERROR;
    }

    /* the locations that serve CRLs: pki_crl written there, not inherited
     * by a nested location (which serves something else) */
    if (here && conf->content == ngx_http_pki_crl_handler) {
        pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pki_module);

        if (pmcf->crl_refresh == 0
            || conf->crl_next_update < pmcf->crl_refresh)
        {
            pmcf->crl_refresh = conf->crl_next_update;
        }
    }

    return NGX_CONF_OK;
}


/*
 * pki_crl_cache path | off: where each CA's current CRL is kept on disk
 * (pki_crl_file_save), so that a worker that starts while Redis is down (a
 * reload, a worker replaced after a crash) serves it instead of 503.
 * nginx creates the directory at start, owned by the workers' user.
 * Default off: a default under the prefix would be /usr/share/nginx on
 * Debian, read-only on many hosts, where nginx would not start.
 */
static char *
ngx_http_pki_crl_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_pki_main_conf_t *pmcf = conf;

    char             *rv;
    size_t            len;
    u_char           *parent;
    ngx_err_t         err;
    ngx_str_t        *value, *name;
    ngx_file_info_t   fi;

    if (pmcf->crl_cache_off != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        pmcf->crl_cache_off = 1;
        return NGX_CONF_OK;
    }

    pmcf->crl_cache_off = 0;

    /* the path and its creation at start (ngx_add_path) */
    rv = ngx_conf_set_path_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    /* nginx creates the directory itself only: under a parent that is not
     * there its mkdir() fails at start with no file and line */
    name = &pmcf->crl_cache->name;
    len = name->len;

    while (len > 1 && name->data[len - 1] == '/') {
        len--;
    }

    while (len > 0 && name->data[len - 1] != '/') {
        len--;
    }

    if (len > 1) {
        parent = ngx_pnalloc(cf->pool, len);
        if (parent == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(parent, name->data, len - 1);
        parent[len - 1] = '\0';

        err = ngx_file_info(parent, &fi) == NGX_FILE_ERROR ? ngx_errno : 0;

        if (err != 0 || !ngx_is_dir(&fi)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, err,
                               "pki_crl_cache \"%V\": its parent \"%s\" "
                               "is no directory (nginx creates the last "
                               "one only)", name, parent);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_pki_crl_cache_init(ngx_conf_t *cf)
{
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pki_module);

    if (pmcf->crl_cache_off == 1 || pmcf->crl_cache == NULL) {
        return NGX_OK;
    }

    pmcf->crl_cache_dir = ngx_http_pki_cstr(cf->pool,
                                            &pmcf->crl_cache->name);
    if (pmcf->crl_cache_dir == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static char *
ngx_http_pki_crl(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_pki_loc_conf_t *plcf = conf;

    ngx_http_pki_main_conf_t  *pmcf;

    if (plcf->crl != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pki_module);

    if (pmcf->redis == NULL) {
        return "needs pki_redis in the http{} block before it";
    }

    if (ngx_http_pki_content(cf, cmd, ngx_http_pki_crl_handler)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    plcf->crl = 1;

    return NGX_CONF_OK;
}


static void
ngx_http_pki_crl_free_all(ngx_http_pki_main_conf_t *pmcf)
{
    ngx_uint_t                 i;
    ngx_http_pki_crl_state_t  *st;

    st = pmcf->crl_states;
    if (st == NULL) {
        return;
    }

    for (i = 0; i < pmcf->cas.nelts; i++) {
        if (st[i].blob) {
            ngx_http_pki_crl_unref(st[i].blob);
            st[i].blob = NULL;
        }
    }
}


static void
ngx_http_pki_crl_unref(void *data)
{
    ngx_http_pki_crl_blob_t *blob = data;

    if (--blob->refs == 0) {
        free(blob->data);
        ngx_free(blob);
    }
}


static ngx_int_t
ngx_http_pki_crl_simple(ngx_http_request_t *r, ngx_uint_t status,
    const char *retry_after)
{
    ngx_table_elt_t  *h;

    if (retry_after) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        h->value.data = (u_char *) retry_after;
        h->value.len = ngx_strlen(retry_after);
    }

    return status;
}


static ngx_int_t
ngx_http_pki_crl_handler(ngx_http_request_t *r)
{
    u_char                     *p, *last;
    time_t                      now;
    ngx_int_t                   rc;
    ngx_str_t                   name;
    ngx_uint_t                  i, fresh;
    ngx_http_pki_ca_t          *cas;
    ngx_http_pki_crl_ctx_t     *ctx;
    ngx_http_pki_crl_state_t   *st;
    ngx_http_pki_main_conf_t   *pmcf;
    ngx_http_pki_crl_waiter_t  *w;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_pki_read_only(r);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_pki_module);

    /* the CA's name: the last path segment without ".crl" */

    last = r->uri.data + r->uri.len;
    p = last;

    while (p > r->uri.data && p[-1] != '/') {
        p--;
    }

    name.data = p;
    name.len = last - p;

    if (name.len <= 4
        || ngx_strncmp(last - 4, ".crl", 4) != 0
        || name.len - 4 > NGX_HTTP_PKI_NAME_MAX)
    {
        return NGX_HTTP_NOT_FOUND;
    }

    name.len -= 4;

    cas = pmcf->cas.elts;

    for (i = 0; i < pmcf->cas.nelts; i++) {
        if (cas[i].name.len == name.len
            && ngx_strncmp(cas[i].name.data, name.data, name.len) == 0)
        {
            break;
        }
    }

    /* a CA whose certificate may not sign CRLs publishes none */
    if (i == pmcf->cas.nelts || !pki_ca_signs_crls(cas[i].ca)) {
        return NGX_HTTP_NOT_FOUND;
    }

    if (pmcf->crl_states == NULL) {
        pmcf->crl_states = ngx_pcalloc(ngx_cycle->pool,
                               pmcf->cas.nelts
                               * sizeof(ngx_http_pki_crl_state_t));
        if (pmcf->crl_states == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    st = (ngx_http_pki_crl_state_t *) pmcf->crl_states + i;
    now = ngx_time();

    fresh = st->blob != NULL && st->next_update > now;

    if (fresh
        && (st->busy
            || ngx_current_msec - st->checked < NGX_HTTP_PKI_CRL_CHECK_MSEC))
    {
        return ngx_http_pki_crl_send(r, &cas[i].name, st);
    }

    if (st->busy) {
        /* no copy to serve, and the worker's task for one is out */
        return ngx_http_pki_crl_wait(r, &cas[i].name, st);
    }

    /* the first request after the second checks, or the first without a
     * copy: one detached task, whose answer the requests without a copy
     * wait for, and this one for NGX_HTTP_PKI_CRL_WAIT_MSEC at most when
     * it has a copy (see above) */

    w = ngx_palloc(r->pool, sizeof(ngx_http_pki_crl_waiter_t));
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* on the heap: the task may outlive this request */
    ctx = ngx_calloc(sizeof(ngx_http_pki_crl_ctx_t), r->connection->log);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->ca = cas[i].ca;
    ctx->name = cas[i].name;
    ctx->redis = pmcf->redis;
    /* one CRL per CA, whichever location asks: the shortest lifetime of
     * them all (a longer one would be built again by the next caller) */
    ctx->next_update = (long) ngx_http_pki_crl_interval(r);
    ctx->have = fresh ? st->number : 0;
    ctx->cache_dir = pmcf->crl_cache_dir;
    ctx->state = st;
    pki_result_init(&ctx->res);

    rc = ngx_http_pki_post_detached(r, ngx_http_pki_crl_work,
                                    ngx_http_pki_crl_done, ctx);

    if (rc != NGX_OK) {
        ngx_free(ctx);

        if (fresh) {
            return ngx_http_pki_crl_send(r, &cas[i].name, st);
        }

        if (rc != NGX_DECLINED) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* the pool's queue is full: shed as a request's task is */
        ngx_http_pki_shed(r->connection->log);

        return ngx_http_pki_crl_simple(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       NGX_HTTP_PKI_CRL_RETRY_AFTER);
    }

    st->busy = 1;
    st->refused = 0;
    st->name = cas[i].name;

    /* nothing else keeps a worker that shuts down gracefully until the
     * task is back, as the guard of a request's task does */
    st->guard.handler = ngx_http_pki_crl_guard;
    st->guard.data = st;
    st->guard.log = ngx_cycle->log;
    ngx_add_timer(&st->guard, NGX_HTTP_PKI_GUARD_MSEC);

    ngx_http_pki_crl_block(r, w);

    if (fresh) {
        st->poster = w;
        w->next = NULL;

        st->wait.handler = ngx_http_pki_crl_waited;
        st->wait.data = st;
        st->wait.log = ngx_cycle->log;
        ngx_add_timer(&st->wait, NGX_HTTP_PKI_CRL_WAIT_MSEC);

    } else {
        /* it posted the task: not counted against the cap */
        w->next = st->waiters;
        st->waiters = w;
    }

    return NGX_DONE;
}


static void
ngx_http_pki_crl_work(void *data)
{
    ngx_http_pki_crl_ctx_t *ctx = data;

    ctx->status = pki_crl_current(ctx->ca, ctx->redis, ctx->next_update,
                                  ctx->have, &ctx->info, &ctx->res);

    ctx->fstatus = PKI_NOT_FOUND;

    /* Redis down and no copy in memory (a worker that started during the
     * outage): the copy on disk, while it is valid */
    if (ctx->status != PKI_OK && ctx->have == 0 && ctx->cache_dir != NULL) {
        pki_result_init(&ctx->fres);
        ctx->fstatus = pki_crl_file_load(ctx->ca, ctx->cache_dir,
                                         &ctx->info, &ctx->fres);
    }
}


static void
ngx_http_pki_crl_done(void *data)
{
    ngx_http_pki_crl_ctx_t *ctx = data;

    time_t                      now;
    ngx_str_t                   name;
    ngx_log_t                  *log;
    ngx_uint_t                  level;
    pki_crl_info_t             *info;
    ngx_http_pki_crl_blob_t    *blob;
    ngx_http_pki_crl_state_t   *st;
    ngx_http_pki_crl_waiter_t  *waiters;

    st = ctx->state;
    info = &ctx->info;
    now = ngx_time();
    log = ngx_cycle->log;

    if (st->guard.timer_set) {
        ngx_del_timer(&st->guard);
    }

    /* the requests that waited for this answer, the poster too if its
     * moment has not passed; from now on a request posts the next task */
    st->busy = 0;
    waiters = st->waiters;
    st->waiters = NULL;
    st->nwaiters = 0;

    if (st->poster) {
        if (st->wait.timer_set) {
            ngx_del_timer(&st->wait);
        }

        st->poster->next = waiters;
        waiters = st->poster;
        st->poster = NULL;
    }

    if (st->refused) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "pki crl: \"%V\": %ui request(s) answered 503 at once "
                      "while %d waited for the CRL", &ctx->name,
                      st->refused, NGX_HTTP_PKI_CRL_WAITERS);
        st->refused = 0;
    }

    if (ctx->status != PKI_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "pki crl: \"%V\": %s (%s)%s%s", &ctx->name,
                      pki_status_name(ctx->status), ctx->res.detail,
                      ctx->res.log[0] ? ": " : "", ctx->res.log);

        /* Redis down: the copy, while valid; ask again in a second */
        st->checked = ngx_current_msec;

        if (ctx->fstatus == PKI_OK) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "pki crl: \"%V\": serving CRL %L from the local "
                          "copy in \"%s\" until Redis answers", &ctx->name,
                          info->number, ctx->cache_dir);

        } else if (ctx->fstatus != PKI_NOT_FOUND
                   || ctx->fres.log[0] != '\0')
        {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "pki crl: \"%V\": local copy: %s%s%s",
                          &ctx->name, ctx->fres.detail,
                          ctx->fres.log[0] ? ": " : "", ctx->fres.log);
        }
    }

    if (ctx->status == PKI_OK || ctx->fstatus == PKI_OK) {
        if (ctx->status == PKI_OK && ctx->res.log[0]) {
            /* a failed rebuild (the stored CRL served) is an error */
            level = info->rebuild_failed ? NGX_LOG_ERR : NGX_LOG_NOTICE;
            ngx_log_error(level, log, 0,
                          "pki crl: \"%V\": %s", &ctx->name, ctx->res.log);
        }

        if (info->der != NULL && info->len > 0
            && (st->blob == NULL || st->next_update <= now
                || info->number > st->number))
        {
            blob = ngx_alloc(sizeof(ngx_http_pki_crl_blob_t), log);

            if (blob != NULL) {
                blob->refs = 1;
                blob->len = info->len;
                blob->data = info->der;
                info->der = NULL;

                if (st->blob) {
                    ngx_http_pki_crl_unref(st->blob);
                }

                st->blob = blob;
                st->number = info->number;
                st->this_update = info->this_update;
                st->next_update = info->next_update;

                ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                               "pki crl: \"%V\" number %L", &ctx->name,
                               info->number);
            }

        } else if (info->der == NULL && info->number == st->number) {
            /* unchanged */
        }

        st->checked = ngx_current_msec;
    }

    free(info->der);
    info->der = NULL;

    /* the CA's name lives in the configuration */
    name = ctx->name;
    ngx_free(ctx);

    ngx_http_pki_crl_wake(waiters, &name, st);
}


/* the copy in memory while valid, else 503 */
static ngx_int_t
ngx_http_pki_crl_answer(ngx_http_request_t *r, ngx_str_t *name,
    ngx_http_pki_crl_state_t *st)
{
    if (st->blob == NULL || st->next_update <= ngx_time()) {
        return ngx_http_pki_crl_simple(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       NGX_HTTP_PKI_CRL_RETRY_AFTER);
    }

    return ngx_http_pki_crl_send(r, name, st);
}


/* A request without a copy to serve waits for the task that is out. */
static ngx_int_t
ngx_http_pki_crl_wait(ngx_http_request_t *r, ngx_str_t *name,
    ngx_http_pki_crl_state_t *st)
{
    ngx_http_pki_crl_waiter_t  *w;

    if (st->nwaiters >= NGX_HTTP_PKI_CRL_WAITERS) {
        /* counted, and logged once when the task is back */
        st->refused++;
        return ngx_http_pki_crl_simple(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       NGX_HTTP_PKI_CRL_RETRY_AFTER);
    }

    w = ngx_palloc(r->pool, sizeof(ngx_http_pki_crl_waiter_t));
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_pki_crl_block(r, w);

    w->next = st->waiters;
    st->waiters = w;
    st->nwaiters++;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "pki crl: \"%V\": waiting for the worker's task", name);

    return NGX_DONE;
}


/*
 * A request waits for the task that is out (on the list, or as its poster
 * for a moment) as a request waits for its own task: blocked, with a
 * reference (r->main->blocked, r->main->count), so that nginx defers a
 * termination meanwhile (a client gone, a worker's shutdown timeout) until
 * it is woken and its pool, which holds its place, lives until then.  The
 * task keeps the worker up (the CA's guard timer) and always comes back.
 */
static void
ngx_http_pki_crl_block(ngx_http_request_t *r, ngx_http_pki_crl_waiter_t *w)
{
    w->request = r;

    r->main->blocked++;
    r->main->count++;
    r->aio = 1;
}


static void
ngx_http_pki_crl_guard(ngx_event_t *ev)
{
    ngx_http_pki_crl_state_t *st = ev->data;

    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "pki crl: \"%V\": check still running after %d ms "
                  "(thread pool saturated or backend stalled)", &st->name,
                  NGX_HTTP_PKI_GUARD_MSEC);

    ngx_add_timer(ev, NGX_HTTP_PKI_GUARD_MSEC);
}


/* the poster's moment has passed, the check is still out: the copy */
static void
ngx_http_pki_crl_waited(ngx_event_t *ev)
{
    ngx_http_pki_crl_state_t *st = ev->data;

    ngx_http_pki_crl_waiter_t  *w;

    w = st->poster;
    st->poster = NULL;

    if (w == NULL) {
        return;
    }

    if (st->blob == NULL || st->next_update <= ngx_time()) {
        /* the copy ended meanwhile: nothing to serve, wait for the check
         * as a request without a copy does (it posted it: no cap) */
        w->next = st->waiters;
        st->waiters = w;
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, w->request->connection->log, 0,
                   "pki crl: \"%V\": check still out, serving the copy",
                   &st->name);

    w->next = NULL;
    ngx_http_pki_crl_wake(w, &st->name, st);
}


/* the task's answer to the requests that waited for it */
static void
ngx_http_pki_crl_wake(ngx_http_pki_crl_waiter_t *w, ngx_str_t *name,
    ngx_http_pki_crl_state_t *st)
{
    ngx_connection_t           *c;
    ngx_http_request_t         *r;
    ngx_http_pki_crl_waiter_t  *next;

    for ( /* void */ ; w; w = next) {
        next = w->next;         /* w goes with r->pool */
        r = w->request;
        c = r->connection;

        ngx_http_set_log_request(c->log, r);

        r->main->blocked--;
        r->aio = 0;

        if (c->error) {
            /* terminated while it waited: nginx closes it now */
            ngx_http_finalize_request(r, NGX_ERROR);

        } else {
            ngx_http_finalize_request(r,
                                      ngx_http_pki_crl_answer(r, name, st));
        }

        ngx_http_run_posted_requests(c);
    }
}


/*
 * Without requests nobody would rebuild a CRL before its nextUpdate, nor
 * after a revocation, and the first relying party to come back would wait
 * for the build.  Worker 0 of every host checks each CA every few seconds
 * off the event loop (one Redis round trip per CA when nothing changed);
 * pki_crl_current() rebuilds when the stored CRL is in the last quarter of
 * its validity or older than the last revocation, once across the fleet.
 * A CRL whose nextUpdate comes sooner (cut to a planned revocation) is
 * checked again right then, so that the CRL listing that revocation is
 * out within a second of its time, not only at the next regular check.
 */

#define NGX_HTTP_PKI_CRL_REFRESH_MSEC  10000
#define NGX_HTTP_PKI_CRL_REFRESH_MIN   100      /* msec */
/* after the second a CRL ends: the core reads time(), a coarse clock
 * that can lag the event loop's by a kernel tick, and a check a few
 * milliseconds into that second took the CRL for current (the next one
 * came 10 s late) */
#define NGX_HTTP_PKI_CRL_REFRESH_SLACK 50       /* msec */


typedef struct {
    ngx_http_pki_main_conf_t  *pmcf;
    long long                 *have;     /* per CA: the number seen last */
    pki_status_t              *status;   /* per CA: the last outcome     */
    pki_status_t              *logged;   /* per CA: the last one logged  */
    pki_result_t              *res;
    /* per CA: planned revocations carried out (pki_record_revoke_due) */
    unsigned                  *revoked;
    pki_status_t              *due;      /* per CA: the last outcome     */
    pki_status_t              *due_logged;
    pki_result_t              *due_res;
    pki_status_t              *fstatus;  /* per CA: saving the local copy */
    pki_status_t              *flogged;
    pki_result_t              *fres;
    time_t                    *next;     /* per CA: the CRL's nextUpdate
                                            (0: none known) */
    ngx_event_t                timer;
    ngx_thread_task_t         *task;
    ngx_thread_pool_t         *tp;
    unsigned                   busy:1;
} ngx_http_pki_crl_refresher_t;


static void ngx_http_pki_crl_refresh_tick(ngx_event_t *ev);
static void ngx_http_pki_crl_refresh_work(void *data, ngx_log_t *log);
static void ngx_http_pki_crl_refresh_done(ngx_event_t *ev);


static void
ngx_http_pki_crl_refresh_start(ngx_cycle_t *cycle,
    ngx_http_pki_main_conf_t *pmcf)
{
    ngx_uint_t                     n;
    ngx_http_pki_crl_refresher_t  *rf;

    n = pmcf->cas.nelts;

    /* also without a CRL location: planned revocations are carried out
     * here */
    if (pmcf->redis == NULL || n == 0) {
        return;
    }

    if (!(ngx_process == NGX_PROCESS_WORKER && ngx_worker == 0)
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return;
    }

    rf = ngx_pcalloc(cycle->pool, sizeof(ngx_http_pki_crl_refresher_t));
    if (rf == NULL) {
        return;
    }

    rf->have = ngx_pcalloc(cycle->pool, n * sizeof(long long));
    rf->status = ngx_pcalloc(cycle->pool, n * sizeof(pki_status_t));
    rf->logged = ngx_pcalloc(cycle->pool, n * sizeof(pki_status_t));
    rf->res = ngx_pcalloc(cycle->pool, n * sizeof(pki_result_t));
    rf->revoked = ngx_pcalloc(cycle->pool, n * sizeof(unsigned));
    rf->due = ngx_pcalloc(cycle->pool, n * sizeof(pki_status_t));
    rf->due_logged = ngx_pcalloc(cycle->pool, n * sizeof(pki_status_t));
    rf->due_res = ngx_pcalloc(cycle->pool, n * sizeof(pki_result_t));
    rf->fstatus = ngx_pcalloc(cycle->pool, n * sizeof(pki_status_t));
    rf->fres = ngx_pcalloc(cycle->pool, n * sizeof(pki_result_t));
    rf->flogged = ngx_pcalloc(cycle->pool, n * sizeof(pki_status_t));
    rf->next = ngx_pcalloc(cycle->pool, n * sizeof(time_t));
    rf->task = ngx_thread_task_alloc(cycle->pool, 0);

    if (rf->have == NULL || rf->status == NULL || rf->logged == NULL
        || rf->res == NULL || rf->revoked == NULL || rf->due == NULL
        || rf->due_logged == NULL || rf->due_res == NULL
        || rf->fstatus == NULL || rf->fres == NULL || rf->flogged == NULL
        || rf->next == NULL || rf->task == NULL)
    {
        return;
    }

    rf->tp = ngx_thread_pool_get(cycle, &pmcf->thread_pool_name);
    if (rf->tp == NULL) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "pki crl: thread pool \"%V\" not found",
                      &pmcf->thread_pool_name);
        return;
    }

    rf->pmcf = pmcf;

    rf->task->ctx = rf;
    rf->task->handler = ngx_http_pki_crl_refresh_work;
    rf->task->event.handler = ngx_http_pki_crl_refresh_done;
    rf->task->event.data = rf;
    rf->task->event.log = cycle->log;

    rf->timer.handler = ngx_http_pki_crl_refresh_tick;
    rf->timer.data = rf;
    rf->timer.log = cycle->log;
    rf->timer.cancelable = 1;

    /* the first check soon after start, then every few seconds */
    ngx_add_timer(&rf->timer, 1000);
}


static void
ngx_http_pki_crl_refresh_tick(ngx_event_t *ev)
{
    ngx_http_pki_crl_refresher_t *rf = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (!rf->busy) {
        if (ngx_http_pki_thread_post(rf->tp, rf->task) == NGX_OK) {
            rf->busy = 1;
            return;                 /* the done handler sets the timer */
        }

        /* queue full: the requests come first; try again later */
    }

    ngx_add_timer(&rf->timer, NGX_HTTP_PKI_CRL_REFRESH_MSEC);
}


static void
ngx_http_pki_crl_refresh_work(void *data, ngx_log_t *log)
{
    ngx_http_pki_crl_refresher_t *rf = data;

    ngx_uint_t          i;
    pki_crl_info_t      info;
    ngx_http_pki_ca_t  *cas;

    (void) log;

    ngx_http_pki_thread_enter();

    cas = rf->pmcf->cas.elts;

    for (i = 0; i < rf->pmcf->cas.nelts; i++) {
        /* planned revocations first: the CRL built next lists them */
        pki_result_init(&rf->due_res[i]);
        rf->due[i] = pki_record_revoke_due(rf->pmcf->redis,
                                           pki_ca_name(cas[i].ca), time(NULL),
                                           0, &rf->revoked[i],
                                           &rf->due_res[i]);

        pki_result_init(&rf->res[i]);
        rf->next[i] = 0;

        if (rf->pmcf->crl_refresh == 0 || !pki_ca_signs_crls(cas[i].ca)) {
            rf->status[i] = PKI_OK;
            continue;
        }

        rf->status[i] = pki_crl_current(cas[i].ca, rf->pmcf->redis,
                                        (long) rf->pmcf->crl_refresh,
                                        rf->have[i], &info, &rf->res[i]);

        /* rf->fstatus[i]: the last save's, kept until the next save */

        if (rf->status[i] == PKI_OK && info.rebuild_failed) {
            /* the stored CRL is still served, but this refresh failed:
             * logged as a failure, once per change of state; res.log
             * says why */
            rf->status[i] = PKI_UNAVAILABLE;
            ngx_cpystrn((u_char *) rf->res[i].detail,
                        (u_char *) "the CRL could not be rebuilt",
                        sizeof(rf->res[i].detail));
            free(info.der);
            continue;
        }

        if (rf->status[i] == PKI_OK) {
            rf->have[i] = info.number;
            rf->next[i] = info.next_update;

            /* a new CRL (or the first since start): the local copy */
            if (info.der != NULL && rf->pmcf->crl_cache_dir != NULL) {
                pki_result_init(&rf->fres[i]);
                rf->fstatus[i] = pki_crl_file_save(cas[i].ca,
                                                   rf->pmcf->crl_cache_dir,
                                                   &info, &rf->fres[i]);
                if (rf->fstatus[i] != PKI_OK) {
                    rf->have[i] = 0;        /* written again next tick */
                }
            }

            free(info.der);
        }
    }

    /* a planned revocation carried out above logged it: synced here, as
     * no answer waits for it (and the ticket must not stay on this pool
     * thread for the next task to wait on) */
    if (pki_audit_take_ticket()) {
        (void) pki_audit_sync(NULL, NULL);
    }
}


static void
ngx_http_pki_crl_refresh_done(ngx_event_t *ev)
{
    ngx_http_pki_crl_refresher_t *rf = ev->data;

    ngx_msec_t          delay;
    ngx_uint_t          i, level;
    ngx_time_t         *tp;
    ngx_msec_int_t      left;
    ngx_http_pki_ca_t  *cas;

    rf->busy = 0;
    cas = rf->pmcf->cas.elts;
    tp = ngx_timeofday();
    delay = NGX_HTTP_PKI_CRL_REFRESH_MSEC;

    ngx_http_pki_aof_check(ngx_cycle->log);

    for (i = 0; i < rf->pmcf->cas.nelts; i++) {

        if (rf->revoked[i] != 0) {
            ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                          "pki: \"%V\": %ui planned revocations carried out",
                          &cas[i].name, (ngx_uint_t) rf->revoked[i]);
        }

        if (rf->due[i] != rf->due_logged[i]) {
            /* once per change of state, not every tick */
            level = rf->due[i] == PKI_OK ? NGX_LOG_NOTICE : NGX_LOG_ERR;
            ngx_log_error(level, ev->log, 0,
                          "pki: \"%V\": planned revocations: %s%s%s",
                          &cas[i].name,
                          rf->due[i] == PKI_OK ? "work again"
                                               : pki_status_name(rf->due[i]),
                          rf->due[i] == PKI_OK ? "" : ": ",
                          rf->due[i] == PKI_OK ? "" : rf->due_res[i].detail);
            rf->due_logged[i] = rf->due[i];
        }

        /* once per change of state: a failing disk is retried every
         * tick */
        if (rf->fstatus[i] != rf->flogged[i]) {
            if (rf->fstatus[i] != PKI_OK) {
                ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                              "pki crl: \"%V\": local copy in \"%s\" not "
                              "written: %s%s%s", &cas[i].name,
                              rf->pmcf->crl_cache_dir, rf->fres[i].detail,
                              rf->fres[i].log[0] ? ": " : "",
                              rf->fres[i].log);
            } else {
                ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                              "pki crl: \"%V\": local copy written again",
                              &cas[i].name);
            }

            rf->flogged[i] = rf->fstatus[i];
        }

        if (rf->status[i] == PKI_OK) {
            if (rf->res[i].log[0]) {
                /* pki_crl_current() says when it built one */
                ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                              "pki crl: \"%V\": %s", &cas[i].name,
                              rf->res[i].log);
            }

            if (rf->logged[i] != PKI_OK) {
                ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                              "pki crl: \"%V\": refresh works again",
                              &cas[i].name);
            }

        } else if (rf->status[i] != rf->logged[i]) {
            /* once per change of state, not every tick */
            ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                          "pki crl: refresh of \"%V\": %s (%s)%s%s",
                          &cas[i].name, pki_status_name(rf->status[i]),
                          rf->res[i].detail, rf->res[i].log[0] ? ": " : "",
                          rf->res[i].log);
        }

        rf->logged[i] = rf->status[i];

        /* the next check when the CRL ends before the regular one (a
         * failed check leaves next 0: Redis down waits for the regular
         * one).  A nextUpdate passed since this check found the CRL
         * fresh (the check ran just before it, its answer came just
         * after) is checked again soon: it waited 10 s for that */
        if (rf->next[i] != 0
            && rf->next[i] - tp->sec
               <= NGX_HTTP_PKI_CRL_REFRESH_MSEC / 1000)
        {
            left = (ngx_msec_int_t) (rf->next[i] - tp->sec) * 1000
                   - (ngx_msec_int_t) tp->msec
                   + NGX_HTTP_PKI_CRL_REFRESH_SLACK;

            if (left < NGX_HTTP_PKI_CRL_REFRESH_MIN) {
                left = NGX_HTTP_PKI_CRL_REFRESH_MIN;
            }

            if ((ngx_msec_t) left < delay) {
                delay = (ngx_msec_t) left;
            }
        }
    }

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_add_timer(&rf->timer, delay);
}


static ngx_int_t
ngx_http_pki_crl_send(ngx_http_request_t *r, ngx_str_t *name,
    ngx_http_pki_crl_state_t *st)
{
    u_char              *p;
    time_t               age;
    ngx_str_t            der, etag;
    ngx_pool_cleanup_t  *cln;

    static ngx_str_t  type = ngx_string("application/pkix-crl");

    age = st->next_update - ngx_time();
    if (age < 0) {
        age = 0;
    }
    if (age > NGX_HTTP_PKI_CRL_MAX_AGE) {
        age = NGX_HTTP_PKI_CRL_MAX_AGE;
    }

    /* the response holds a reference: a newer CRL may replace it while
     * it is being sent */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    st->blob->refs++;
    cln->handler = ngx_http_pki_crl_unref;
    cln->data = st->blob;

    p = ngx_pnalloc(r->pool, name->len + NGX_INT64_LEN + 4);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    etag.data = p;
    etag.len = ngx_sprintf(p, "\"%V-%L\"", name, st->number) - p;

    der.data = st->blob->data;
    der.len = st->blob->len;

    return ngx_http_pki_send_der(r, &type, &der, st->this_update, &etag, age,
                                 1);
}


/*
 * Detached tasks (ACME challenge validation): work that outlives the
 * request that started it.  The task lives on the heap, not in r->pool;
 * done(data) runs on the event loop and must free data; the task frees
 * itself.  A worker exiting with tasks queued leaks them, as nginx's own
 * thread pools drop queued tasks at exit.
 */

typedef struct {
    ngx_http_pki_work_pt       work;
    ngx_http_pki_detached_pt   done;
    void                      *data;
    ngx_uint_t                 lane;
} ngx_http_pki_detached_ctx_t;


static void
ngx_http_pki_detached_handler(void *data, ngx_log_t *log)
{
    ngx_http_pki_detached_ctx_t *ctx = data;

    (void) log;

    ngx_http_pki_thread_enter();

    (void) ngx_atomic_fetch_add(&ngx_http_pki_taken[ctx->lane], 1);

    ctx->work(ctx->data);

    /* nobody waits for an answer: sync here if the log was written */
    if (pki_audit_take_ticket()) {
        (void) pki_audit_sync(NULL, NULL);
    }
}


static void
ngx_http_pki_detached_event_handler(ngx_event_t *ev)
{
    ngx_thread_task_t            *task;
    ngx_http_pki_detached_ctx_t  *ctx;

    task = ev->data;
    ctx = task->ctx;

    ngx_http_pki_aof_check(ngx_cycle->log);

    ctx->done(ctx->data);

    ngx_free(task);
}


ngx_int_t
ngx_http_pki_post_detached(ngx_http_request_t *r, ngx_http_pki_work_pt work,
    ngx_http_pki_detached_pt done, void *data)
{
    ngx_thread_pool_t         *tp;
    ngx_http_pki_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_pki_module);

    tp = pmcf->thread_pool;

    if (tp == NULL) {
        tp = ngx_thread_pool_get((ngx_cycle_t *) ngx_cycle,
                                 &pmcf->thread_pool_name);
    }

    return ngx_http_pki_post_detached_tp(tp, r->connection->log, work, done,
                                         data);
}


ngx_int_t
ngx_http_pki_post_detached_tp(ngx_thread_pool_t *tp, ngx_log_t *log,
    ngx_http_pki_work_pt work, ngx_http_pki_detached_pt done, void *data)
{
    ngx_thread_task_t            *task;
    ngx_http_pki_detached_ctx_t  *ctx;

    if (tp == NULL) {
        return NGX_ERROR;
    }

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_http_pki_detached_ctx_t), log);
    if (task == NULL) {
        return NGX_ERROR;
    }

    ctx = (ngx_http_pki_detached_ctx_t *) (task + 1);
    ctx->work = work;
    ctx->done = done;
    ctx->data = data;
    ctx->lane = ngx_http_pki_tp_lane(tp);

    task->ctx = ctx;
    task->handler = ngx_http_pki_detached_handler;
    task->event.handler = ngx_http_pki_detached_event_handler;
    task->event.data = task;
    task->event.log = ngx_cycle->log;

    if (ngx_http_pki_task_post(tp, task, log, 0, ctx->lane) != NGX_OK) {
        ngx_free(task);
        return NGX_DECLINED;
    }

    return NGX_OK;
}
