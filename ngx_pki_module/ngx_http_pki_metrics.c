
/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * ngx_http_pki_metrics_module (built into ngx_http_pki_module.so): the
 * transaction log directive, the counters, the Prometheus endpoint and the
 * dashboard.
 *
 * Counters live in one shared memory zone: a fixed table of series, each
 * keyed by its Prometheus name and labels ("pki_requests_total{protocol=
 * \"est\",...}") and holding one column of values per worker slot, updated
 * with atomic adds (pool threads update them too).  Nothing on the hot path
 * talks to Redis: a timer in each worker posts one thread-pool task every
 * pki_metrics_interval (10 s) that adds this worker's deltas to the
 * per-minute and per-hour buckets in Redis (pki_metrics_flush), and every
 * 6th time counts each CA's certificates (pki_metrics_cert_counts: one
 * worker of the fleet counts per period, the others read its result) and
 * writes an audit checkpoint.
 *
 * Events come from two places: the core's event hook (pki_event_set_sink:
 * issuance, revocation, signatures, Redis commands), and this module's
 * log-phase handler, which counts the requests of the locations that a
 * protocol module registered (ngx_http_pki_metrics_location) with the
 * detail the protocol module gave (ngx_http_pki_metrics_mark).
 *
 * The same handler writes refused requests to the transaction log: each
 * one that reached the CA with an authenticated identity, and the others
 * (nginx's own 4xx, anonymous and malformed requests) within a token
 * bucket per worker (pki_audit_log refusal_rate, refusal_burst); past it
 * they are counted, and said in one summary entry per protocol, CA and
 * status every NGX_HTTP_PKI_M_QUIET_MSEC, so that no anonymous client
 * fills the log's disk (issuance fails closed when it is full).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/err.h>
#include <openssl/rand.h>

#include "ngx_http_pki_module.h"
#include "ngx_http_pki_dashboard.h"


#define NGX_HTTP_PKI_M_SLOTS       8
#define NGX_HTTP_PKI_M_VALS        16
#define NGX_HTTP_PKI_M_KEY         224
#define NGX_HTTP_PKI_M_FIELD       96
#define NGX_HTTP_PKI_M_LABEL       64
#define NGX_HTTP_PKI_M_REASON      64
#define NGX_HTTP_PKI_M_NBUCKETS    14      /* 13 bounds + Inf */
#define NGX_HTTP_PKI_M_SUM         14      /* value index: sum in us */
#define NGX_HTTP_PKI_M_FLUSH_MSEC  10000
#define NGX_HTTP_PKI_M_SLOW_TICKS  6       /* certs + checkpoint: 60 s */
#define NGX_HTTP_PKI_M_MAX_CAS     64
#define NGX_HTTP_PKI_M_MAX_FIELDS  256
#define NGX_HTTP_PKI_M_SYNC_RETRY  100     /* ms: sync task not queued */
#define NGX_HTTP_PKI_M_REOPEN_MIN  1000    /* ms: a log that did not open */
#define NGX_HTTP_PKI_M_REOPEN_MAX  30000
#define NGX_HTTP_PKI_M_RETRY       5       /* s: pool full, Redis failing */
#define NGX_HTTP_PKI_M_OFF_RETRY   3600    /* s: counting off (config)   */
#define NGX_HTTP_PKI_M_QUIET_KEYS  32      /* protocol, CA, status        */
#define NGX_HTTP_PKI_M_QUIET_MSEC  10000   /* a summary at most this often */
#define NGX_HTTP_PKI_M_TOKEN       1000000 /* an entry, in bucket units   */
#define NGX_HTTP_PKI_M_PENDING     300     /* s: a batch sent again, at most
                                              (pki_metrics_flush) */
#define NGX_HTTP_PKI_M_PARKED      8       /* batches left by exited workers */
#define NGX_HTTP_PKI_M_HELD        ((ngx_atomic_uint_t) -1)  /* parked */
#define NGX_HTTP_PKI_M_EXIT_MSEC   100     /* ms: each wait of an exit flush */
#define NGX_HTTP_PKI_M_EXIT_TOTAL  250     /* ms: both exit flushes */
#define NGX_HTTP_PKI_M_EXIT_MIN    5       /* ms: a wait worth a flush */
#define NGX_HTTP_PKI_M_LEASE       60      /* s: a parked batch's holder */
#define NGX_HTTP_PKI_M_REASONS     32      /* failure series per protocol */
#define NGX_HTTP_PKI_M_PROTOS      16
#define NGX_HTTP_PKI_M_WORKERS     256     /* in-flight task counts */

#define NGX_HTTP_PKI_M_COUNTER     1
#define NGX_HTTP_PKI_M_HISTOGRAM   2
#define NGX_HTTP_PKI_M_GAUGE_SUM   3       /* one value per worker slot */
#define NGX_HTTP_PKI_M_GAUGE       4       /* slot 0, last writer wins */


/* bucket bounds in microseconds */
static const ngx_atomic_uint_t  ngx_http_pki_m_bounds[] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000
};

static const char  *ngx_http_pki_m_le[] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5", "5", "+Inf"
};


typedef struct {
    ngx_atomic_t               state;      /* 0 free, 1 ready */
    uint32_t                   hash;
    uint16_t                   kind;
    uint16_t                   len;
    u_char                     key[NGX_HTTP_PKI_M_KEY];
    u_char                     field[NGX_HTTP_PKI_M_FIELD];  /* history */
    ngx_atomic_t               v[NGX_HTTP_PKI_M_SLOTS][NGX_HTTP_PKI_M_VALS];
    /* per slot, the count the history has from it (v[slot][0] as last
     * claimed): kept here, not per worker, so that a reload's new workers,
     * which find the counts of the old ones, and workers sharing a slot
     * (more than NGX_HTTP_PKI_M_SLOTS), add each increment once */
    ngx_atomic_t               flushed[NGX_HTTP_PKI_M_SLOTS];
} ngx_http_pki_m_series_t;


/* the last 5 minutes, per second, for the dashboard's live view */
#define NGX_HTTP_PKI_M_RECENT      300

typedef struct {
    ngx_atomic_t               time;
    ngx_atomic_t               issued;
    ngx_atomic_t               failed;
} ngx_http_pki_m_second_t;


/*
 * A history batch a worker sent at exit without an answer (Redis may have
 * added it): the next worker to look sends it again, under the exited
 * worker's name and number, so that Redis still adds it once.  owner: 0
 * free, NGX_HTTP_PKI_M_HELD parked, else the pid of the process filling
 * or sending it (every change a compare-and-set: a process found dead,
 * or holding it for NGX_HTTP_PKI_M_LEASE since taken, gives it up: a pid
 * reused, or one kill() may not probe, pins no batch).  The fields are
 * series indexes (series[i].field names one): series are never removed,
 * and a reload keeps the zone.
 */
typedef struct {
    ngx_atomic_t               owner;
    ngx_atomic_t               filled;     /* whole: may be sent */
    ngx_atomic_t               taken;      /* when owner took it */
    unsigned long long         seq;
    time_t                     now;
    ngx_uint_t                 n;
    u_char                     source[48];
    uint32_t                   field[NGX_HTTP_PKI_M_MAX_FIELDS];
    long long                  delta[NGX_HTTP_PKI_M_MAX_FIELDS];
} ngx_http_pki_m_parked_t;


/* the pki_failures_total series of a protocol: at most
 * NGX_HTTP_PKI_M_REASONS, the others counted under reason="other" (a
 * reason may carry what an anonymous client chose: each new one would be
 * a series for ever, and a full table drops everyone's events) */
typedef struct {
    char                       proto[16];
    ngx_uint_t                 n;
} ngx_http_pki_m_reasons_t;


/* the thread tasks a worker has in flight (ngx_http_pki_metrics_tasks):
 * an entry per process, found dead (its pid gone, or taken by a process
 * that started at another time) or freed at its exit, so that the gauge
 * is exact with any number of workers and no count of a worker that died
 * stays in it; workers past NGX_HTTP_PKI_M_WORKERS add to tasks_more */
typedef struct {
    ngx_atomic_t               pid;        /* 0 free, HELD being reset */
    ngx_atomic_t               n;
    ngx_atomic_t               start;      /* of pid, 0: not known */
} ngx_http_pki_m_tasks_t;


typedef struct {
    ngx_atomic_t               lock;
    ngx_atomic_t               nseries;
    ngx_atomic_t               dropped;
    time_t                     start;
    ngx_uint_t                 max;
    ngx_http_pki_m_second_t    recent[NGX_HTTP_PKI_M_RECENT];
    ngx_http_pki_m_parked_t    parked[NGX_HTTP_PKI_M_PARKED];
    ngx_http_pki_m_reasons_t   reasons[NGX_HTTP_PKI_M_PROTOS]; /* lock */
    ngx_atomic_t               tasks_more;
    ngx_http_pki_m_tasks_t     tasks[NGX_HTTP_PKI_M_WORKERS];
    ngx_http_pki_m_series_t    series[1];
} ngx_http_pki_m_shm_t;


typedef struct {
    ngx_str_t                  dir;
    ngx_str_t                  key_ref;
    size_t                     max_size;
    size_t                     max_backlog;
    ngx_uint_t                 checkpoint;
    ngx_flag_t                 fsync;
    ngx_flag_t                 carry;
    ngx_msec_t                 orphan;
    ngx_uint_t                 refusal_rate;   /* entries/1000 s */
    ngx_uint_t                 refusal_burst;
    pki_key_t                 *key;
    pki_audit_t               *audit;

    ngx_shm_zone_t            *zone;
    size_t                     zone_size;
    ngx_flag_t                 history;
    ngx_uint_t                 used;       /* pki_metrics / pki_dashboard */
    ngx_uint_t                 off;        /* pki_metrics_zone off */
    ngx_msec_t                 interval;   /* pki_metrics_interval */
} ngx_http_pki_m_main_conf_t;


typedef struct {
    const char                *proto;      /* registered location */
    ngx_uint_t                 handler;    /* 1 metrics, 2 dashboard */
} ngx_http_pki_m_loc_conf_t;


typedef struct {
    const char                *proto;
    const char                *ca;
    const char                *tmpl;
    const char                *reason;
    pki_status_t               status;
    ngx_str_t                  user;       /* auth_basic verified it */
    const char                *requester;  /* the protocol verified it */
    unsigned                   marked:1;   /* by a protocol handler */
} ngx_http_pki_m_ctx_t;


/* per worker: the timer's thread task */
typedef struct {
    ngx_uint_t                 n;
    char                      *fields[NGX_HTTP_PKI_M_MAX_FIELDS];
    long long                  deltas[NGX_HTTP_PKI_M_MAX_FIELDS];
    uint32_t                   fidx[NGX_HTTP_PKI_M_MAX_FIELDS];
                                           /* the series naming fields[k] */
    ngx_uint_t                 series[NGX_HTTP_PKI_M_MAX_FIELDS * 4];
    u_char                     slots[NGX_HTTP_PKI_M_MAX_FIELDS * 4];
    ngx_atomic_uint_t          values[NGX_HTTP_PKI_M_MAX_FIELDS * 4];
                                           /* claimed from series[i]'s
                                              slots[i], given back on a
                                              refusal */
    ngx_uint_t                 nseries;
    unsigned long long         seq;        /* the batch's number */
    ngx_uint_t                 pending;    /* sent, outcome unknown: the
                                              same batch goes again */
    int                        unknown;
    pki_status_t               flushed;

    /* a batch an exited worker parked, sent again by this task */
    ngx_http_pki_m_parked_t   *adopt;
    char                      *afields[NGX_HTTP_PKI_M_MAX_FIELDS];
    int                        aunknown;
    pki_status_t               aflushed;

    ngx_atomic_t               done;       /* the handler returned */

    ngx_uint_t                 certs;      /* count certificates too */
    ngx_uint_t                 ncas;
    pki_ca_t                  *cas[NGX_HTTP_PKI_M_MAX_CAS];
    long long                  counts[NGX_HTTP_PKI_M_MAX_CAS][4];
    pki_status_t               counted[NGX_HTTP_PKI_M_MAX_CAS];
    ngx_msec_t                 counts_ttl; /* the fleet counts once per */

    pki_redis_t               *redis;
    pki_audit_t               *audit;
    time_t                     now;        /* the batch's buckets */
    time_t                     tick;       /* this tick's, for counts */
} ngx_http_pki_m_task_t;


/* a refusal waiting for the audit thread task */
typedef struct ngx_http_pki_m_item_s  ngx_http_pki_m_item_t;

struct ngx_http_pki_m_item_s {
    ngx_http_pki_m_item_t     *next;
    pki_event_t                ev;
    pki_status_t               st;
    ngx_uint_t                 done;       /* written by the task */
    char                       buf[1280];
};


typedef struct {
    ngx_http_pki_m_item_t     *head;       /* waiting */
    ngx_http_pki_m_item_t    **last;
    ngx_http_pki_m_item_t     *batch;      /* posted to be written:
                                              claimed by the task, or at
                                              exit by the flush */
    ngx_http_pki_m_item_t     *taken;      /* what the task claimed */
    ngx_uint_t                 n;
    ngx_uint_t                 busy;
    ngx_thread_task_t         *task;
    pki_audit_t               *audit;
    ngx_uint_t                 dropped;    /* since the last log line */
    ngx_msec_t                 dropped_at;
    ngx_uint_t                 unwritten;  /* since the last log line */
    ngx_msec_t                 unwritten_at;
} ngx_http_pki_m_queue_t;


#define NGX_HTTP_PKI_M_AUDIT_QUEUE  4096


/* refusals not logged one by one (past the bucket), by protocol, CA and
 * status, until their summary entry */
typedef struct {
    char                       proto[32];
    char                       ca[128];
    pki_status_t               status;
    ngx_uint_t                 count;
    time_t                     since;
} ngx_http_pki_m_quiet_t;


typedef struct {
    int                        hourly;
    unsigned                   count;
    pki_redis_t               *redis;
    char                      *json;
    pki_status_t               status;
    pki_result_t               res;
} ngx_http_pki_m_hist_ctx_t;


static void *ngx_http_pki_m_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_pki_m_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_pki_m_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_pki_m_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static void ngx_http_pki_m_cas_left_out(ngx_conf_t *cf);
static ngx_int_t ngx_http_pki_m_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_pki_m_init_process(ngx_cycle_t *cycle);
static void ngx_http_pki_m_exit_process(ngx_cycle_t *cycle);

static char *ngx_http_pki_audit_log(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void ngx_http_pki_m_key_cleanup(void *data);
static char *ngx_http_pki_metrics_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_pki_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_pki_dashboard(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_pki_m_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);

static ngx_http_pki_m_series_t *ngx_http_pki_m_series(u_char *key,
    size_t len, ngx_uint_t kind, const char *field);
static ngx_http_pki_m_series_t *ngx_http_pki_m_insert(u_char *key,
    size_t len, ngx_uint_t kind, const char *field, const char *proto,
    ngx_uint_t *over);
static ngx_uint_t ngx_http_pki_m_reason_quota(ngx_http_pki_m_shm_t *sh,
    const char *proto);
static ngx_uint_t ngx_http_pki_m_stale(ngx_http_pki_m_series_t *s);
static void ngx_http_pki_m_tasks_claim(void);
static void ngx_http_pki_m_tasks_release(void);
static void ngx_http_pki_m_add(ngx_http_pki_m_series_t *s, ngx_uint_t i,
    ngx_atomic_int_t n);
static void ngx_http_pki_m_observe(ngx_http_pki_m_series_t *s,
    double seconds);
static size_t ngx_http_pki_m_key(u_char *buf, size_t size, const char *name,
    const char *const *labels);
static void ngx_http_pki_m_sink(void *arg, const pki_event_t *ev);

static ngx_int_t ngx_http_pki_m_log_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_pki_metrics_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_pki_dashboard_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_pki_m_send(ngx_http_request_t *r,
    ngx_uint_t status, const char *type, u_char *body, size_t len);
static ngx_int_t ngx_http_pki_m_unavailable(ngx_http_request_t *r);
static void ngx_http_pki_m_hist_work(void *data);
static void ngx_http_pki_m_hist_done(ngx_http_request_t *r, void *data);

static void ngx_http_pki_m_audit_queue(ngx_http_pki_m_main_conf_t *mmcf,
    const pki_event_t *ev, ngx_log_t *log);
static ngx_uint_t ngx_http_pki_m_quiet_take(ngx_http_pki_m_main_conf_t *mmcf);
static void ngx_http_pki_m_quiet_count(const char *proto, const char *ca,
    pki_status_t status);
static void ngx_http_pki_m_quiet_timer(ngx_event_t *ev);
static void ngx_http_pki_m_quiet_flush(ngx_http_pki_m_main_conf_t *mmcf,
    ngx_log_t *log);
static void ngx_http_pki_m_audit_write(void *data, ngx_log_t *log);
static void ngx_http_pki_m_audit_done(ngx_event_t *ev);
static void ngx_http_pki_m_audit_post(void);
static void ngx_http_pki_m_audit_flush(pki_audit_t *audit);
static void ngx_http_pki_m_backlog(pki_audit_t *audit);

static void ngx_http_pki_m_sync_post(void);
static void ngx_http_pki_m_sync_work(void *data, ngx_log_t *log);
static void ngx_http_pki_m_sync_done(ngx_event_t *ev);

static void ngx_http_pki_m_audit_opened(ngx_cycle_t *cycle,
    ngx_http_pki_m_main_conf_t *mmcf, int no_fsync);
static void ngx_http_pki_m_reopen_timer(ngx_event_t *ev);
static void ngx_http_pki_m_reopen_work(void *data);
static void ngx_http_pki_m_reopen_done(void *data);

static void ngx_http_pki_m_timer_start(ngx_cycle_t *cycle);
static void ngx_http_pki_m_unwritten_log(ngx_log_t *log);
static void ngx_http_pki_m_timer(ngx_event_t *ev);
static void ngx_http_pki_m_task_handler(void *data, ngx_log_t *log);
static void ngx_http_pki_m_task_done(ngx_event_t *ev);
static void ngx_http_pki_m_give_back(ngx_http_pki_m_task_t *t);
static ngx_uint_t ngx_http_pki_m_claims(void);
static void ngx_http_pki_m_claim(ngx_http_pki_m_task_t *t);
static void ngx_http_pki_m_batch(ngx_http_pki_m_task_t *t,
    pki_metrics_batch_t *b);
static void ngx_http_pki_m_dropped_log(ngx_log_t *log, unsigned long long seq,
    ngx_uint_t n, const u_char *source, time_t sent);
static ngx_uint_t ngx_http_pki_m_outcome(ngx_http_pki_m_task_t *t,
    ngx_log_t *log);
static void ngx_http_pki_m_park(ngx_http_pki_m_task_t *t, ngx_log_t *log);
static ngx_http_pki_m_parked_t *ngx_http_pki_m_adopt(
    ngx_http_pki_m_task_t *t, ngx_log_t *log);
static void ngx_http_pki_m_unpark(ngx_http_pki_m_parked_t *e,
    ngx_uint_t keep);
static void ngx_http_pki_m_history_exit(ngx_cycle_t *cycle);
static int ngx_http_pki_m_exit_wait(ngx_msec_t start);
static void ngx_http_pki_m_audit_close(ngx_cycle_t *cycle);


static ngx_command_t  ngx_http_pki_m_commands[] = {

    { ngx_string("pki_audit_log"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_pki_audit_log,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("pki_metrics_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_pki_metrics_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("pki_metrics_history"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_pki_m_main_conf_t, history),
      NULL },

    { ngx_string("pki_metrics_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_pki_m_main_conf_t, interval),
      NULL },

    { ngx_string("pki_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_pki_metrics,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("pki_dashboard"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_pki_dashboard,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_pki_metrics_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_pki_m_postconfiguration,      /* postconfiguration */

    ngx_http_pki_m_create_main_conf,       /* create main configuration */
    ngx_http_pki_m_init_main_conf,         /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_pki_m_create_loc_conf,        /* create location configuration */
    ngx_http_pki_m_merge_loc_conf          /* merge location configuration */
};


ngx_module_t  ngx_http_pki_metrics_module = {
    NGX_MODULE_V1,
    &ngx_http_pki_metrics_module_ctx,      /* module context */
    ngx_http_pki_m_commands,               /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_pki_m_init_process,           /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_pki_m_exit_process,           /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_pki_m_shm_t  *ngx_http_pki_m_shm;
static ngx_http_pki_m_tasks_t  *ngx_http_pki_m_tasks; /* this worker's */
static ngx_atomic_uint_t        ngx_http_pki_m_self_start;
static ngx_event_t            ngx_http_pki_m_timer_ev;
static ngx_thread_task_t     *ngx_http_pki_m_task;
static ngx_uint_t             ngx_http_pki_m_busy;
static ngx_uint_t             ngx_http_pki_m_ticks;
static unsigned long long     ngx_http_pki_m_seq;
static u_char                 ngx_http_pki_m_source[48];
static ngx_connection_t       ngx_http_pki_m_dummy;
static ngx_uint_t             ngx_http_pki_m_audit;    /* log open */
static ngx_http_pki_m_queue_t  ngx_http_pki_m_aq;

/* the bucket of the refusals that carry no authenticated identity (per
 * worker), and those it did not let through */
static struct {
    uint64_t                      tokens;   /* NGX_HTTP_PKI_M_TOKEN each */
    ngx_msec_t                    last;
    ngx_uint_t                    init;
    ngx_uint_t                    n;        /* keys[] in use */
    ngx_event_t                   timer;
    /* keys[NGX_HTTP_PKI_M_QUIET_KEYS]: all the others, when full */
    ngx_http_pki_m_quiet_t        keys[NGX_HTTP_PKI_M_QUIET_KEYS + 1];
} ngx_http_pki_m_quiet;

static ngx_str_t  ngx_http_pki_m_off_text =
    ngx_string("metrics are off (pki_metrics_zone off)\n");
static ngx_str_t  ngx_http_pki_m_cross_text =
    ngx_string("a request made by another site is refused\n");
static ngx_str_t  ngx_http_pki_m_busy_text =
    ngx_string("busy, retry later\n");
static ngx_str_t  ngx_http_pki_m_history_text =
    ngx_string("history unavailable (Redis), retry later\n");

/* the log's backlog cap (pki_audit_backlog): its refusals, said at most
 * once a second */
static struct {
    ngx_uint_t                    full;
    unsigned long long            refused;  /* said so far */
    ngx_msec_t                    said;
} ngx_http_pki_m_bl;


/* answers waiting for the transaction log's sync (the waiters are the
 * callers' storage: ngx_http_pki_audit_wait) */
static struct {
    ngx_http_pki_audit_waiter_t  *head;
    ngx_uint_t                    busy;
    ngx_thread_task_t            *task;
    pki_audit_t                  *audit;
    pki_status_t                  st;

    /* without the syncer: a sync task the pool did not take is posted
     * again by this timer (no sync on the event loop) */
    ngx_event_t                   retry;
    ngx_uint_t                    refused;  /* warned since the last post */

    /* the core's syncer thread (pki_audit_syncer_start) tells the event
     * loop through this pipe that a sync completed */
    ngx_uint_t                    syncer;
    int                           pipe[2];
    ngx_connection_t             *conn;
} ngx_http_pki_m_sync;


/* the log is opened by a thread-pool task (pki_audit_open takes the log's
 * lock and reads its tail: never on the event loop), at start and, if it
 * did not open, again, one at a time, after a backoff that doubles up to
 * NGX_HTTP_PKI_M_REOPEN_MAX; until then issuance and revocation are
 * refused (pki_audit_set_required) */
static struct {
    ngx_event_t                   timer;
    ngx_msec_t                    backoff;
    ngx_uint_t                    busy;     /* a task in flight */
    ngx_uint_t                    first;    /* no open done yet */
    ngx_uint_t                    tries;    /* after the first */
    pki_audit_conf_t              conf;
    pki_audit_t                  *audit;    /* the task opened it */
    pki_result_t                  res;
    ngx_uint_t                    key_failed;
    pki_result_t                  key_res;
} ngx_http_pki_m_reopen;


static void ngx_http_pki_m_syncer_start(ngx_cycle_t *cycle);
static void ngx_http_pki_m_carry(ngx_cycle_t *cycle, pki_audit_t *audit);
static void ngx_http_pki_m_syncer_notify(void *arg);
static void ngx_http_pki_m_syncer_event(ngx_event_t *ev);
static void ngx_http_pki_m_resume_ready(void);
static void ngx_http_pki_m_sync_retry(ngx_event_t *ev);


/* ---- configuration -------------------------------------------------------- */

static void *
ngx_http_pki_m_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_pki_m_main_conf_t  *mmcf;

    mmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_pki_m_main_conf_t));
    if (mmcf == NULL) {
        return NULL;
    }

    mmcf->max_size = NGX_CONF_UNSET_SIZE;
    mmcf->max_backlog = NGX_CONF_UNSET_SIZE;
    mmcf->checkpoint = NGX_CONF_UNSET_UINT;
    mmcf->fsync = NGX_CONF_UNSET;
    mmcf->carry = NGX_CONF_UNSET;
    mmcf->orphan = NGX_CONF_UNSET_MSEC;
    mmcf->refusal_rate = NGX_CONF_UNSET_UINT;
    mmcf->refusal_burst = NGX_CONF_UNSET_UINT;
    mmcf->zone_size = NGX_CONF_UNSET_SIZE;
    mmcf->history = NGX_CONF_UNSET;
    mmcf->interval = NGX_CONF_UNSET_MSEC;

    return mmcf;
}


static char *
ngx_http_pki_m_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_pki_m_main_conf_t *mmcf = conf;

    (void) cf;

    ngx_conf_init_size_value(mmcf->zone_size, 2 * 1024 * 1024);
    ngx_conf_init_value(mmcf->history, 1);
    ngx_conf_init_msec_value(mmcf->interval, NGX_HTTP_PKI_M_FLUSH_MSEC);

    /* anonymous refusals, per worker: 1 a second after a burst of 100 is
     * about 35 MB of log a day at most, less than the access log writes
     * for such a client in minutes */
    ngx_conf_init_uint_value(mmcf->refusal_rate, 1000);
    ngx_conf_init_uint_value(mmcf->refusal_burst, 100);

    if (mmcf->interval < 100) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "pki_metrics_interval must be at least 100ms");
        return NGX_CONF_ERROR;
    }

    if (mmcf->zone_size < 64 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "pki_metrics_zone must be at least 64k");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_pki_m_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_pki_m_loc_conf_t  *mlcf;

    mlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_pki_m_loc_conf_t));
    if (mlcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mlcf->proto = NULL;
     *     mlcf->handler = 0;
     */

    return mlcf;
}


static char *
ngx_http_pki_m_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_pki_m_loc_conf_t *prev = parent;
    ngx_http_pki_m_loc_conf_t *conf = child;

    (void) cf;

    if (conf->proto == NULL) {
        conf->proto = prev->proto;
    }

    return NGX_CONF_OK;
}


/*
 * pki_audit_log DIR [key=FILE|pkcs11:URI] [max_size=SIZE] [checkpoint=N]
 *               [fsync=on|off] [carry=on|off] [orphan_after=TIME]
 *               [max_backlog=SIZE] [refusal_rate=RATE] [refusal_burst=N];
 *
 * carry=on (default): an issuance's entry travels in its record's Redis
 * commit (durable with the record), and the answer waits for nothing
 * more; a thread writes such entries to the file in batches (within
 * 20 ms) and syncs it every second.  carry=off: every answer waits for the
 * file's own fdatasync.  orphan_after (default 30s): a carried entry still
 * in its stream after this long is written by the janitor if the file
 * lacks it (its writer died between the record's commit and the file).
 * max_backlog (default 64m): the entries a worker holds in memory for a
 * file that cannot take them (disk full, I/O errors); at the cap,
 * issuance and revocation are refused (503) until the file takes them.
 * Entries written and waiting for their sync do not count; past as many
 * bytes they are synced at once.  refusal_rate (Nr/s or Nr/m, default
 * 1r/s) and refusal_burst (default 100): the token bucket, per worker, of
 * the refusals logged one by one that did not reach the CA with an
 * authenticated identity; the others are counted into summary entries.
 */

static char *
ngx_http_pki_audit_log(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_pki_m_main_conf_t *mmcf = conf;

    char                *ref, token[256];
    ssize_t              size;
    ngx_int_t            n;
    ngx_str_t           *value, v;
    ngx_uint_t           i, scale;
    pki_vault_t         *vault;
    pki_result_t         res;
    ngx_file_info_t      fi;
    ngx_pool_cleanup_t  *cln;

    (void) cmd;

    if (mmcf->dir.data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    mmcf->dir = value[1];

    if (ngx_conf_full_name(cf->cycle, &mmcf->dir, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "key=", 4) == 0) {
            /* empty (a key=$VAR left unset) would mean no checkpoint
             * signing, unsaid */
            if (value[i].len == 4) {
                goto invalid;
            }

            mmcf->key_ref.data = value[i].data + 4;
            mmcf->key_ref.len = value[i].len - 4;
            continue;
        }

        if (ngx_strncmp(value[i].data, "max_size=", 9) == 0) {
            v.data = value[i].data + 9;
            v.len = value[i].len - 9;
            size = ngx_parse_size(&v);
            if (size < 4096) {
                goto invalid;
            }
            mmcf->max_size = (size_t) size;
            continue;
        }

        if (ngx_strncmp(value[i].data, "max_backlog=", 12) == 0) {
            v.data = value[i].data + 12;
            v.len = value[i].len - 12;
            size = ngx_parse_size(&v);
            if (size < 4096) {
                goto invalid;
            }
            mmcf->max_backlog = (size_t) size;
            continue;
        }

        if (ngx_strncmp(value[i].data, "refusal_rate=", 13) == 0) {
            v.data = value[i].data + 13;
            v.len = value[i].len - 13;

            if (v.len < 4 || v.data[v.len - 2] != '/'
                || v.data[v.len - 3] != 'r')
            {
                goto invalid;
            }

            if (v.data[v.len - 1] == 's') {
                scale = 1;

            } else if (v.data[v.len - 1] == 'm') {
                scale = 60;

            } else {
                goto invalid;
            }

            n = ngx_atoi(v.data, v.len - 3);
            if (n == NGX_ERROR || n > (ngx_int_t) (1000 * scale)) {
                goto invalid;
            }

            mmcf->refusal_rate = (ngx_uint_t) n * 1000 / scale;
            continue;
        }

        if (ngx_strncmp(value[i].data, "refusal_burst=", 14) == 0) {
            n = ngx_atoi(value[i].data + 14, value[i].len - 14);
            if (n == NGX_ERROR || n > 100000) {
                goto invalid;
            }
            mmcf->refusal_burst = (ngx_uint_t) n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "checkpoint=", 11) == 0) {
            n = ngx_atoi(value[i].data + 11, value[i].len - 11);
            if (n <= 0) {
                goto invalid;
            }
            mmcf->checkpoint = (ngx_uint_t) n;
            continue;
        }

        if (ngx_strcmp(value[i].data, "fsync=on") == 0) {
            mmcf->fsync = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "orphan_after=", 13) == 0) {
            v.data = value[i].data + 13;
            v.len = value[i].len - 13;
            mmcf->orphan = ngx_parse_time(&v, 0);
            if (mmcf->orphan == (ngx_msec_t) NGX_ERROR || mmcf->orphan < 300
                || mmcf->orphan > 3600000)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "pki_audit_log: orphan_after must be "
                                   "between 300ms and 1h");
                return NGX_CONF_ERROR;
            }
            continue;
        }

        if (ngx_strcmp(value[i].data, "carry=on") == 0) {
            mmcf->carry = 1;
            continue;
        }

        if (ngx_strcmp(value[i].data, "carry=off") == 0) {
            mmcf->carry = 0;
            continue;
        }

        if (ngx_strcmp(value[i].data, "fsync=off") == 0) {
            mmcf->fsync = 0;
            continue;
        }

        goto invalid;
    }

    if (ngx_file_info(mmcf->dir.data, &fi) == NGX_FILE_ERROR
        || !ngx_is_dir(&fi))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "pki_audit_log: \"%V\" is not a directory",
                           &mmcf->dir);
        return NGX_CONF_ERROR;
    }

    if (access((char *) mmcf->dir.data, W_OK) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "pki_audit_log: \"%V\" is not writable",
                           &mmcf->dir);
        return NGX_CONF_ERROR;
    }

    pki_result_init(&res);

    if (pki_audit_check_dir((char *) mmcf->dir.data, &res) != PKI_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "pki_audit_log: %s",
                           res.detail);
        return NGX_CONF_ERROR;
    }

    if (mmcf->key_ref.len == 0) {
        return NGX_CONF_OK;
    }

    ref = ngx_pnalloc(cf->pool, mmcf->key_ref.len + 1);
    if (ref == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(ref, mmcf->key_ref.data, mmcf->key_ref.len);
    ref[mmcf->key_ref.len] = '\0';

    vault = NULL;

    if (ngx_strncasecmp((u_char *) ref, (u_char *) "pkcs11:", 7) == 0) {
        if (!pki_key_uri_token(ref, token, sizeof(token))) {
            /* the URI's own fault when it has one (pki_key_new never
             * shows a PIN), else the missing token */
            pki_result_init(&res);
            mmcf->key = pki_key_new(ref, NULL, &res);
            if (mmcf->key == NULL && res.status == PKI_MALFORMED
                && ngx_strstr(res.detail, "needs a key vault") == NULL)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "pki_audit_log: key: %s", res.detail);
                return NGX_CONF_ERROR;
            }
            pki_key_free(mmcf->key);
            mmcf->key = NULL;

            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "pki_audit_log: the key URI has no token");
            return NGX_CONF_ERROR;
        }

        vault = ngx_http_pki_find_vault(cf, token);
        if (vault == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "pki_audit_log: no pki_key_vault for token "
                               "\"%s\" (declare it before)", token);
            return NGX_CONF_ERROR;
        }

    } else if (ngx_conf_full_name(cf->cycle, &mmcf->key_ref, 1) == NGX_OK) {
        ref = ngx_pnalloc(cf->pool, mmcf->key_ref.len + 1);
        if (ref == NULL) {
            return NGX_CONF_ERROR;
        }
        ngx_memcpy(ref, mmcf->key_ref.data, mmcf->key_ref.len);
        ref[mmcf->key_ref.len] = '\0';
    }

    pki_result_init(&res);

    mmcf->key = pki_key_new(ref, vault, &res);
    if (mmcf->key == NULL) {
        goto key_failed;
    }

    /* freed with the configuration, of which the master makes one per
     * reload (this cleanup runs before the vault's, registered before:
     * the key is in its vault's list) */
    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        pki_key_free(mmcf->key);
        mmcf->key = NULL;
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_pki_m_key_cleanup;
    cln->data = mmcf->key;

    if (ngx_http_pki_signaller()) {
        return NGX_CONF_OK;         /* "nginx -s": the key is not opened */
    }

    if (pki_key_open(mmcf->key, &res) != PKI_OK) {
        goto key_failed;
    }

    /* file keys hold no PKCS#11 state; a vault key is dropped with its
     * vault before fork and fetched again in the worker */

    return NGX_CONF_OK;

key_failed:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "pki_audit_log: key: %s%s%s", res.detail,
                       res.log[0] ? ": " : "", res.log);
    return NGX_CONF_ERROR;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in pki_audit_log",
                       &value[i]);
    return NGX_CONF_ERROR;
}


static void
ngx_http_pki_m_key_cleanup(void *data)
{
    pki_key_free(data);
}


/* pki_metrics_zone SIZE | off; */

static char *
ngx_http_pki_metrics_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_pki_m_main_conf_t *mmcf = conf;

    ssize_t     size;
    ngx_str_t  *value;

    (void) cmd;

    if (mmcf->zone_size != NGX_CONF_UNSET_SIZE || mmcf->off) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        mmcf->off = 1;
        return NGX_CONF_OK;
    }

    size = ngx_parse_size(&value[1]);
    if (size == NGX_ERROR) {
        return "has an invalid size";
    }

    mmcf->zone_size = (size_t) size;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_pki_m_zone(ngx_conf_t *cf)
{
    ngx_str_t                    name;
    ngx_http_pki_m_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pki_metrics_module);

    if (mmcf->zone) {
        return NGX_OK;
    }

    ngx_str_set(&name, "pki_metrics");

    mmcf->zone = ngx_shared_memory_add(cf, &name, 0,
                                       &ngx_http_pki_metrics_module);
    if (mmcf->zone == NULL) {
        return NGX_ERROR;
    }

    mmcf->zone->init = ngx_http_pki_m_init_zone;
    mmcf->zone->data = mmcf;

    return NGX_OK;
}


static char *
ngx_http_pki_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_pki_m_loc_conf_t *mlcf = conf;

    ngx_http_pki_m_main_conf_t  *mmcf;

    if (mlcf->handler) {
        return "is duplicate";
    }

    if (ngx_http_pki_content(cf, cmd, ngx_http_pki_metrics_handler)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    mlcf->handler = 1;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pki_metrics_module);
    mmcf->used = 1;

    return NGX_CONF_OK;
}


static char *
ngx_http_pki_dashboard(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_pki_m_loc_conf_t *mlcf = conf;

    ngx_http_pki_m_main_conf_t  *mmcf;

    if (mlcf->handler) {
        return "is duplicate";
    }

    if (ngx_http_pki_content(cf, cmd, ngx_http_pki_dashboard_handler)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    mlcf->handler = 2;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pki_metrics_module);
    mmcf->used = 1;

    return NGX_CONF_OK;
}


void
ngx_http_pki_metrics_location(ngx_conf_t *cf, const char *proto)
{
    ngx_http_pki_m_loc_conf_t  *mlcf;

    mlcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_pki_metrics_module);
    if (mlcf != NULL) {
        mlcf->proto = proto;
    }
}


/* The certificate gauges cover the first NGX_HTTP_PKI_M_MAX_CAS CAs: the
 * others are named at nginx -t, not left out silently. */
static void
ngx_http_pki_m_cas_left_out(ngx_conf_t *cf)
{
    u_char      *p, *last, buf[1024];
    pki_ca_t    *ca;
    ngx_uint_t   i;

    p = buf;
    last = buf + sizeof(buf) - sizeof("...");

    for (i = NGX_HTTP_PKI_M_MAX_CAS; ; i++) {
        ca = ngx_http_pki_cycle_ca(cf->cycle, i);
        if (ca == NULL) {
            break;
        }

        if (p + ngx_strlen(pki_ca_name(ca)) + 4 >= last) {
            p = ngx_cpymem(p, "...", 3);
            break;
        }

        p = ngx_sprintf(p, "%s\"%s\"", p == buf ? "" : ", ",
                        pki_ca_name(ca));
    }

    if (p != buf) {
        ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                      "pki metrics: pki_certificates gauges for the first "
                      "%d CAs only, not for %*s", NGX_HTTP_PKI_M_MAX_CAS,
                      p - buf, buf);
    }
}


static ngx_int_t
ngx_http_pki_m_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt         *h;
    ngx_http_core_main_conf_t   *cmcf;
    ngx_http_pki_m_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_pki_metrics_module);

    /* a zone whenever the module is loaded into a PKI configuration: the
     * counters then exist before anyone looks at them */

    if (!mmcf->off
        && (mmcf->used || ngx_http_pki_has_redis(cf) || mmcf->dir.len))
    {
        if (ngx_http_pki_m_zone(cf) != NGX_OK) {
            return NGX_ERROR;
        }

        /* the parked batches and the task counts on top of the
         * configured size (with a page for the slab's page table and
         * rounding), so that the series a size holds stay what they were
         * without them */
        mmcf->zone->shm.size = mmcf->zone_size
            + ngx_align(sizeof(ngx_http_pki_m_parked_t)
                        * NGX_HTTP_PKI_M_PARKED, ngx_pagesize)
            + ngx_align(sizeof(ngx_http_pki_m_tasks_t)
                        * NGX_HTTP_PKI_M_WORKERS
                        + sizeof(ngx_http_pki_m_reasons_t)
                        * NGX_HTTP_PKI_M_PROTOS, ngx_pagesize)
            + ngx_pagesize;

        ngx_http_pki_m_cas_left_out(cf);
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_pki_m_log_handler;

    return NGX_OK;
}


static ngx_int_t
ngx_http_pki_m_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    size_t                 n;
    ngx_slab_pool_t       *shpool;
    ngx_http_pki_m_shm_t  *sh;

    if (data) {
        /* reload: same size, keep the counters */
        shm_zone->data = data;
        ngx_http_pki_m_shm = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        ngx_http_pki_m_shm = shpool->data;
        return NGX_OK;
    }

    /* as many series as the free pages hold; a smaller table if the
     * slab allocator still says no (quietly: no "no memory" alert) */
    shpool->log_nomem = 0;

    n = (shpool->pfree * ngx_pagesize - sizeof(ngx_http_pki_m_shm_t))
        / sizeof(ngx_http_pki_m_series_t);

    sh = ngx_slab_calloc(shpool, sizeof(ngx_http_pki_m_shm_t)
                                 + n * sizeof(ngx_http_pki_m_series_t));
    while (sh == NULL && n > 16) {
        n = n * 7 / 8;
        sh = ngx_slab_calloc(shpool, sizeof(ngx_http_pki_m_shm_t)
                                     + n * sizeof(ngx_http_pki_m_series_t));
    }

    if (sh == NULL) {
        return NGX_ERROR;
    }

    sh->max = n + 1;
    sh->start = ngx_time();

    shpool->data = sh;
    shm_zone->data = sh;
    ngx_http_pki_m_shm = sh;

    return NGX_OK;
}


/* ---- worker life ------------------------------------------------------------- */

static ngx_int_t
ngx_http_pki_m_init_process(ngx_cycle_t *cycle)
{
    pki_audit_conf_t             ac;
    ngx_http_pki_m_main_conf_t  *mmcf;

    /* nginx's cache manager and loader run init_process too: they have
     * no thread pool for the timers below to post to (they crashed) */
    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    mmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_pki_metrics_module);

    /* this cycle's zone, or none: after a reload that turned counting off
     * the master still holds the old cycle's, unmapped since */
    ngx_http_pki_m_shm = (mmcf && mmcf->zone) ? mmcf->zone->data : NULL;

    if (mmcf == NULL) {
        return NGX_OK;
    }

    if (ngx_http_pki_m_shm != NULL) {
        pki_event_set_sink(ngx_http_pki_m_sink, NULL);
        ngx_http_pki_m_tasks_claim();
    }

    if (mmcf->dir.len) {
        /* until the log is open (and if it does not open), issuance and
         * revocation fail closed: no certificate leaves unlogged; while
         * the first open is under way (2) they wait for it a little */
        pki_audit_set_required(2);

        ngx_memzero(&ac, sizeof(pki_audit_conf_t));
        ac.key = mmcf->key;
        ac.dir = (const char *) mmcf->dir.data;
        ac.max_size = mmcf->max_size == NGX_CONF_UNSET_SIZE ? 0
                                                            : mmcf->max_size;
        ac.max_backlog = mmcf->max_backlog == NGX_CONF_UNSET_SIZE
                         ? 0 : mmcf->max_backlog;
        ac.checkpoint_every = mmcf->checkpoint == NGX_CONF_UNSET_UINT
                              ? 0 : (unsigned) mmcf->checkpoint;
        ac.no_fsync = mmcf->fsync == 0;
        if (mmcf->orphan != NGX_CONF_UNSET_MSEC) {
            ac.orphan_ms = (unsigned) mmcf->orphan;
        }

        ngx_http_pki_m_reopen.conf = ac;
        ngx_http_pki_m_reopen.first = 1;
        ngx_http_pki_m_reopen.backoff = NGX_HTTP_PKI_M_REOPEN_MIN;
        ngx_http_pki_m_reopen.timer.handler = ngx_http_pki_m_reopen_timer;
        ngx_http_pki_m_reopen.timer.log = cycle->log;
        ngx_http_pki_m_reopen.timer.data = &ngx_http_pki_m_dummy;
        ngx_http_pki_m_reopen.timer.cancelable = 1;
        ngx_http_pki_m_dummy.fd = (ngx_socket_t) -1;

        ngx_http_pki_m_quiet.timer.handler = ngx_http_pki_m_quiet_timer;
        ngx_http_pki_m_quiet.timer.log = cycle->log;
        ngx_http_pki_m_quiet.timer.data = &ngx_http_pki_m_dummy;
        ngx_http_pki_m_quiet.timer.cancelable = 1;

        /* the first open too is a pool task: it waits for the log's lock,
         * which another process may hold (an appender, the janitor across
         * its sync, a checkpoint, an old worker's exit), and reads the
         * file's tail; the worker serves meanwhile */
        ngx_http_pki_m_reopen_timer(&ngx_http_pki_m_reopen.timer);
    }

    if (ngx_http_pki_m_shm == NULL) {
        return NGX_OK;          /* the open starts the timer */
    }

    ngx_http_pki_m_timer_start(cycle);

    return NGX_OK;
}


/* The log is open (at start, or by a retry): the default log of every
 * thread from now on, the rest set up first. */
static void
ngx_http_pki_m_audit_opened(ngx_cycle_t *cycle,
    ngx_http_pki_m_main_conf_t *mmcf, int no_fsync)
{
    ngx_http_pki_m_audit = 1;

    ngx_http_pki_m_aq.last = &ngx_http_pki_m_aq.head;
    ngx_http_pki_m_aq.task = ngx_thread_task_alloc(cycle->pool, 0);

    if (ngx_http_pki_m_aq.task != NULL) {
        ngx_http_pki_m_aq.task->handler = ngx_http_pki_m_audit_write;
        ngx_http_pki_m_aq.task->event.handler = ngx_http_pki_m_audit_done;
        ngx_http_pki_m_aq.task->event.data = ngx_http_pki_m_aq.task;
        ngx_http_pki_m_aq.task->event.log = cycle->log;
    }

    /* issuance and revocation: written by the pool thread, synced by one
     * task for many answers (ngx_http_pki_audit_wait) */
    ngx_http_pki_m_sync.audit = mmcf->audit;
    ngx_http_pki_m_sync.task = ngx_thread_task_alloc(cycle->pool, 0);

    if (ngx_http_pki_m_sync.task != NULL && !no_fsync) {
        ngx_http_pki_m_sync.task->handler = ngx_http_pki_m_sync_work;
        ngx_http_pki_m_sync.task->event.handler = ngx_http_pki_m_sync_done;
        ngx_http_pki_m_sync.task->event.data = ngx_http_pki_m_sync.task;
        ngx_http_pki_m_sync.task->event.log = cycle->log;

        ngx_http_pki_m_dummy.fd = (ngx_socket_t) -1;
        ngx_http_pki_m_sync.retry.handler = ngx_http_pki_m_sync_retry;
        ngx_http_pki_m_sync.retry.log = cycle->log;
        ngx_http_pki_m_sync.retry.data = &ngx_http_pki_m_dummy;
        ngx_http_pki_m_sync.retry.cancelable = 1;

        pki_audit_set_deferred(1);

        /* issuance entries carried by the certificate store's commit: no
         * answer waits for the file's flush */
        if (mmcf->carry != 0) {
            ngx_http_pki_m_carry(cycle, mmcf->audit);
        }

        /* better: a thread of its own, no pool thread waits for the disk
         * and no sync task queues behind requests */
        ngx_http_pki_m_syncer_start(cycle);
    }

    /* last: pool threads may be issuing (a retry), they see it whole */
    pki_audit_set_default(mmcf->audit);
}


static void
ngx_http_pki_m_reopen_timer(ngx_event_t *ev)
{
    ngx_int_t           rc;
    ngx_thread_pool_t  *tp;

    if (ngx_exiting || ngx_terminate || ngx_quit
        || ngx_http_pki_m_reopen.busy)
    {
        return;
    }

    tp = ngx_http_pki_cycle_thread_pool((ngx_cycle_t *) ngx_cycle);

    rc = NGX_DECLINED;

    if (tp != NULL && !ngx_http_pki_pool_full()) {
        rc = ngx_http_pki_post_detached_tp(tp, ev->log,
                                           ngx_http_pki_m_reopen_work,
                                           ngx_http_pki_m_reopen_done,
                                           &ngx_http_pki_m_reopen);
    }

    if (rc != NGX_OK) {
        /* the pool is busy: the same step again */
        ngx_add_timer(ev, ngx_http_pki_m_reopen.backoff);
        return;
    }

    ngx_http_pki_m_reopen.busy = 1;
}


/* a pool thread: no nginx calls */
static void
ngx_http_pki_m_reopen_work(void *data)
{
    (void) data;

    if (ngx_http_pki_m_reopen.first && ngx_http_pki_m_reopen.conf.key) {
        /* a token's key may be slow to fetch too; one that does not open
         * leaves the log going, its checkpoints unsigned */
        pki_result_init(&ngx_http_pki_m_reopen.key_res);

        if (pki_key_open(ngx_http_pki_m_reopen.conf.key,
                         &ngx_http_pki_m_reopen.key_res)
            != PKI_OK)
        {
            ngx_http_pki_m_reopen.conf.key = NULL;
            ngx_http_pki_m_reopen.key_failed = 1;
        }
    }

    pki_result_init(&ngx_http_pki_m_reopen.res);

    ngx_http_pki_m_reopen.audit = pki_audit_open(&ngx_http_pki_m_reopen.conf,
                                                 &ngx_http_pki_m_reopen.res);
}


static void
ngx_http_pki_m_reopen_done(void *data)
{
    ngx_uint_t                   first;
    ngx_cycle_t                 *cycle;
    pki_result_t                *res;
    ngx_http_pki_m_main_conf_t  *mmcf;

    (void) data;

    first = ngx_http_pki_m_reopen.first;

    ngx_http_pki_m_reopen.busy = 0;
    ngx_http_pki_m_reopen.first = 0;

    if (!first) {
        ngx_http_pki_m_reopen.tries++;
    }

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;                 /* exit_process closes an opened one */
    }

    cycle = (ngx_cycle_t *) ngx_cycle;
    mmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_pki_metrics_module);
    res = &ngx_http_pki_m_reopen.res;

    if (ngx_http_pki_m_reopen.key_failed) {
        ngx_http_pki_m_reopen.key_failed = 0;

        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "pki_audit_log: key did not open: %s (%s); "
                      "checkpoints are not signed",
                      ngx_http_pki_m_reopen.key_res.detail,
                      ngx_http_pki_m_reopen.key_res.log);
    }

    if (ngx_http_pki_m_reopen.audit == NULL && first) {
        /* issuance and revocation then fail closed (503), without
         * waiting: nothing issued goes unlogged; tried again soon */
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "pki_audit_log \"%V\": %s%s%s; issuance and "
                      "revocation are refused", &mmcf->dir, res->detail,
                      res->log[0] ? ": " : "", res->log);

        pki_audit_set_required(1);

        ngx_add_timer(&ngx_http_pki_m_reopen.timer,
                      ngx_http_pki_m_reopen.backoff);
        return;
    }

    if (ngx_http_pki_m_reopen.audit == NULL) {
        /* one line per try: one per step of the backoff */
        ngx_http_pki_m_reopen.backoff = ngx_min(
            ngx_http_pki_m_reopen.backoff * 2, NGX_HTTP_PKI_M_REOPEN_MAX);

        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "pki_audit_log \"%V\": %s%s%s; issuance and "
                      "revocation are still refused, next try in %M ms",
                      &mmcf->dir, res->detail, res->log[0] ? ": " : "",
                      res->log, ngx_http_pki_m_reopen.backoff);

        ngx_add_timer(&ngx_http_pki_m_reopen.timer,
                      ngx_http_pki_m_reopen.backoff);
        return;
    }

    mmcf->audit = ngx_http_pki_m_reopen.audit;
    ngx_http_pki_m_reopen.audit = NULL;

    if (!first) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "pki_audit_log \"%V\": opened (try %ui); issuance and "
                      "revocation resume", &mmcf->dir,
                      ngx_http_pki_m_reopen.tries);
    }

    if (res->log[0]) {
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0, "pki_audit_log \"%V\": %s",
                      &mmcf->dir, res->log);
    }

    ngx_http_pki_m_audit_opened(cycle, mmcf,
                                ngx_http_pki_m_reopen.conf.no_fsync);

    pki_audit_set_required(1);

    /* the checkpoint timer, if the counters did not start it */
    ngx_http_pki_m_timer_start(cycle);
}


/* the worker's timer: Redis history, certificate counts, checkpoint */
static void
ngx_http_pki_m_timer_start(ngx_cycle_t *cycle)
{
    size_t   i;
    u_char  *p, rnd[12];

    if (ngx_http_pki_m_task != NULL) {
        return;
    }

    ngx_http_pki_m_task = ngx_thread_task_alloc(cycle->pool,
                                               sizeof(ngx_http_pki_m_task_t));
    if (ngx_http_pki_m_task == NULL) {
        return;
    }

    /* the worker's name for its history batches, unique in the fleet:
     * a pid and a start time repeat across containers */
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        ERR_clear_error();

        for (i = 0; i < sizeof(rnd); i++) {
            rnd[i] = (u_char) ngx_random();
        }
    }

    p = ngx_hex_dump(ngx_http_pki_m_source, rnd, sizeof(rnd));
    *ngx_sprintf(p, "-%P", ngx_pid) = '\0';

    ngx_http_pki_m_task->handler = ngx_http_pki_m_task_handler;
    ngx_http_pki_m_task->event.handler = ngx_http_pki_m_task_done;
    ngx_http_pki_m_task->event.data = ngx_http_pki_m_task;
    ngx_http_pki_m_task->event.log = cycle->log;

    ngx_http_pki_m_dummy.fd = (ngx_socket_t) -1;
    ngx_http_pki_m_timer_ev.handler = ngx_http_pki_m_timer;
    ngx_http_pki_m_timer_ev.log = cycle->log;
    ngx_http_pki_m_timer_ev.data = &ngx_http_pki_m_dummy;
    ngx_http_pki_m_timer_ev.cancelable = 1;

    /* a first look soon, so that certificate counts exist early */
    ngx_http_pki_m_ticks = NGX_HTTP_PKI_M_SLOW_TICKS - 1;
    ngx_add_timer(&ngx_http_pki_m_timer_ev, 1000 + ngx_random() % 1000);
}


/* pki_audit_close_report(): what the log never took at exit (the file
 * failed to the end).  An entry kept nowhere else (an alert) comes with
 * its text, for the operator to restore: in parts under the error log's
 * line size (NGX_MAX_ERROR_STR), a Matter batch's entry is longer. */
static void
ngx_http_pki_m_audit_lost(void *arg, int lost, const char *msg)
{
    ngx_log_t  *log = arg;

    size_t      len, off, part;
    ngx_uint_t  i, n, level;

    level = lost ? NGX_LOG_ALERT : NGX_LOG_WARN;
    len = ngx_strlen(msg);
    n = (len + 1499) / 1500;

    if (n <= 1) {
        ngx_log_error(level, log, 0, "pki_audit_log: %s", msg);
        return;
    }

    for (i = 0, off = 0; off < len; i++, off += part) {
        part = ngx_min(len - off, 1500);
        ngx_log_error(level, log, 0,
                      "pki_audit_log: (part %ui of %ui) %*s",
                      i + 1, n, part, msg + off);
    }
}


static void
ngx_http_pki_m_exit_process(ngx_cycle_t *cycle)
{
    /* done already by the shared module, before its vaults closed */
    ngx_http_pki_audit_exit(cycle);

    /* the tasks still in flight end with this process */
    ngx_http_pki_m_tasks_release();
}


/* worker exit: the shared module calls this once its pool threads are
 * gone and before it closes the key vaults, which the exit checkpoint's
 * key (key=pkcs11:...) signs in.  The audit log's queued entries and its
 * checkpoint go first, the history's last batches after them (the
 * master kills a worker slow to exit on nginx -s stop: a slow Redis
 * must not cost the audit log); a second call does nothing. */
void
ngx_http_pki_audit_exit(ngx_cycle_t *cycle)
{
    ngx_http_pki_m_audit_close(cycle);

    /* threads left: the history task may still run on its context */
    if (!ngx_http_pki_threads_left) {
        ngx_http_pki_m_history_exit(cycle);
    }
}


static void
ngx_http_pki_m_audit_close(ngx_cycle_t *cycle)
{
    pki_result_t                 res;
    ngx_http_pki_m_main_conf_t  *mmcf;

    mmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_pki_metrics_module);
    if (mmcf == NULL) {
        return;
    }

    pki_event_set_sink(NULL, NULL);

    if (ngx_http_pki_m_reopen.timer.timer_set) {
        ngx_del_timer(&ngx_http_pki_m_reopen.timer);
    }

    if (ngx_http_pki_m_quiet.timer.timer_set) {
        ngx_del_timer(&ngx_http_pki_m_quiet.timer);
    }

    if (ngx_http_pki_m_reopen.audit != NULL) {
        /* opened by a task whose completion did not run: never the
         * default, nothing written to it */
        pki_audit_close(ngx_http_pki_m_reopen.audit);
        ngx_http_pki_m_reopen.audit = NULL;
    }

    if (mmcf->audit) {
        pki_audit_set_deferred(0);
        pki_audit_set_default(NULL);
        ngx_http_pki_audit_exit_threads();
        ngx_http_pki_m_sync.audit = NULL;

        /* the pool threads are gone (ngx_http_pki_module waited for
         * them): the last summary is queued (posted to no task), and what
         * is queued is written now */
        ngx_http_pki_m_aq.task = NULL;
        ngx_http_pki_m_quiet_flush(mmcf, cycle->log);

        ngx_http_pki_m_audit_flush(mmcf->audit);

        pki_result_init(&res);
        if (pki_audit_checkpoint(mmcf->audit, &res) != PKI_OK) {
            ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                          "pki_audit_log: no checkpoint at exit: %s",
                          res.detail);
        }

        /* tasks left running (a worker stopped with its pool's queue
         * full) may still append: the log stays open to the end */
        if (!ngx_http_pki_threads_left) {
            pki_audit_close_report(mmcf->audit, ngx_http_pki_m_audit_lost,
                                   cycle->log);
            ngx_http_pki_m_aq.audit = NULL;
        }

        mmcf->audit = NULL;
    }
}


/* ---- series --------------------------------------------------------------- */

static uint32_t
ngx_http_pki_m_hash(u_char *p, size_t n)
{
    uint32_t  h;

    h = 2166136261u;

    while (n--) {
        h = (h ^ *p++) * 16777619u;
    }

    return h;
}


static ngx_http_pki_m_series_t *
ngx_http_pki_m_series(u_char *key, size_t len, ngx_uint_t kind,
    const char *field)
{
    return ngx_http_pki_m_insert(key, len, kind, field, NULL, NULL);
}


/* The series of key, made if new.  With proto, a new one is made only
 * within the protocol's quota of failure series
 * (ngx_http_pki_m_reason_quota): past it NULL, and *over set. */
static ngx_http_pki_m_series_t *
ngx_http_pki_m_insert(u_char *key, size_t len, ngx_uint_t kind,
    const char *field, const char *proto, ngx_uint_t *over)
{
    uint32_t                  h;
    ngx_uint_t                i, n, tries;
    ngx_atomic_uint_t         owner;
    ngx_http_pki_m_shm_t     *sh;
    ngx_http_pki_m_series_t  *s;

    sh = ngx_http_pki_m_shm;

    if (sh == NULL || len == 0 || len >= NGX_HTTP_PKI_M_KEY) {
        return NULL;
    }

    h = ngx_http_pki_m_hash(key, len);
    n = sh->max;

    /* lock free lookup */

    for (i = h % n, tries = 0; tries < n; i = (i + 1) % n, tries++) {
        s = &sh->series[i];

        if (s->state == 0) {
            break;
        }

        if (s->hash == h && s->len == len && ngx_memcmp(s->key, key, len) == 0)
        {
            return s;
        }
    }

    /* a full table stays full (series are never removed): a missed event
     * is dropped at once, not after a second walk under the lock */

    if (sh->nseries >= n) {
        (void) ngx_atomic_fetch_add(&sh->dropped, 1);
        return NULL;
    }

    /* insert under the zone's spin lock (pool threads come here too),
     * which holds its owner's pid: a worker killed while it held it
     * (SIGKILL, the OOM killer) would stop every worker here for good */

    while (!ngx_atomic_cmp_set(&sh->lock, 0, (ngx_atomic_uint_t) ngx_pid)) {
        owner = sh->lock;

        if (owner != 0 && owner != (ngx_atomic_uint_t) ngx_pid
            && kill((ngx_pid_t) owner, 0) == -1 && ngx_errno == NGX_ESRCH)
        {
            (void) ngx_atomic_cmp_set(&sh->lock, owner, 0);
            continue;
        }

        ngx_sched_yield();
    }

    for (i = h % n, tries = 0; tries < n; i = (i + 1) % n, tries++) {
        s = &sh->series[i];

        if (s->state == 0) {
            if (proto != NULL && !ngx_http_pki_m_reason_quota(sh, proto)) {
                *over = 1;
                s = NULL;
                break;
            }

            s->hash = h;
            s->kind = (uint16_t) kind;
            s->len = (uint16_t) len;
            ngx_memcpy(s->key, key, len);
            s->key[len] = '\0';

            if (field) {
                ngx_cpystrn(s->field, (u_char *) field, NGX_HTTP_PKI_M_FIELD);
            }

            ngx_memory_barrier();
            s->state = 1;
            sh->nseries++;
            break;
        }

        if (s->hash == h && s->len == len && ngx_memcmp(s->key, key, len) == 0)
        {
            break;
        }
    }

    ngx_memory_barrier();
    sh->lock = 0;

    if (tries == n) {
        (void) ngx_atomic_fetch_add(&sh->dropped, 1);
        return NULL;
    }

    return s;
}


/* Under the zone's lock: 1 and one more failure series counted for
 * proto if it has fewer than NGX_HTTP_PKI_M_REASONS (a protocol past the
 * table's NGX_HTTP_PKI_M_PROTOS has none of its own). */
static ngx_uint_t
ngx_http_pki_m_reason_quota(ngx_http_pki_m_shm_t *sh, const char *proto)
{
    ngx_uint_t                 k;
    ngx_http_pki_m_reasons_t  *q;

    for (k = 0; k < NGX_HTTP_PKI_M_PROTOS; k++) {
        q = &sh->reasons[k];

        if (q->proto[0] == '\0') {
            ngx_cpystrn((u_char *) q->proto, (u_char *) proto,
                        sizeof(q->proto));
        }

        if (ngx_strncmp(q->proto, proto, sizeof(q->proto) - 1) == 0) {
            if (q->n >= NGX_HTTP_PKI_M_REASONS) {
                return 0;
            }

            q->n++;
            return 1;
        }
    }

    return 0;
}


static ngx_uint_t
ngx_http_pki_m_slot(void)
{
    return ngx_worker % NGX_HTTP_PKI_M_SLOTS;
}


static void
ngx_http_pki_m_add(ngx_http_pki_m_series_t *s, ngx_uint_t i,
    ngx_atomic_int_t n)
{
    if (s != NULL) {
        (void) ngx_atomic_fetch_add(&s->v[ngx_http_pki_m_slot()][i], n);
    }
}


static void
ngx_http_pki_m_set(ngx_http_pki_m_series_t *s, ngx_uint_t slot,
    ngx_atomic_int_t n)
{
    if (s != NULL) {
        s->v[slot][0] = n;
    }
}


static void
ngx_http_pki_m_observe(ngx_http_pki_m_series_t *s, double seconds)
{
    ngx_uint_t          b, slot;
    ngx_atomic_uint_t   us;

    if (s == NULL) {
        return;
    }

    if (seconds < 0) {
        seconds = 0;
    }

    us = (ngx_atomic_uint_t) (seconds * 1e6);

    for (b = 0; b < NGX_HTTP_PKI_M_NBUCKETS - 1; b++) {
        if (us <= ngx_http_pki_m_bounds[b]) {
            break;
        }
    }

    slot = ngx_http_pki_m_slot();

    (void) ngx_atomic_fetch_add(&s->v[slot][b], 1);
    (void) ngx_atomic_fetch_add(&s->v[slot][NGX_HTTP_PKI_M_SUM], us);
}


/* name{l1="v1",l2="v2"}; labels: NULL-terminated name/value pairs, values
 * escaped for the Prometheus text format and capped */
static size_t
ngx_http_pki_m_key(u_char *buf, size_t size, const char *name,
    const char *const *labels)
{
    u_char      *p, *last;
    size_t       n;
    ngx_uint_t   i, first;
    const char  *v;

    p = buf;
    last = buf + size - 4;

    p = ngx_cpymem(p, name, ngx_strlen(name));
    first = 1;

    for (i = 0; labels && labels[i]; i += 2) {
        v = labels[i + 1] ? labels[i + 1] : "";

        if (p + ngx_strlen(labels[i]) + 8 >= last) {
            break;
        }

        *p++ = first ? '{' : ',';
        first = 0;
        p = ngx_cpymem(p, labels[i], ngx_strlen(labels[i]));
        *p++ = '=';
        *p++ = '"';

        for (n = 0; v[n] && n < NGX_HTTP_PKI_M_LABEL && p + 3 < last; n++) {
            if (v[n] == '\\' || v[n] == '"') {
                *p++ = '\\';
                *p++ = v[n];

            } else if (v[n] == '\n') {
                *p++ = '\\';
                *p++ = 'n';

            } else if ((u_char) v[n] < 0x20 || (u_char) v[n] >= 0x7f) {
                /* (UTF-8 cut at the length cap would break the scrape) */
                *p++ = '?';

            } else {
                *p++ = v[n];
            }
        }

        *p++ = '"';
    }

    if (!first) {
        *p++ = '}';
    }

    *p = '\0';

    return p - buf;
}


/* 1 (and *end at its last character) when in starts a word of at least
 * 8 hex digits with a digit among them: a serial number, a key id, a
 * transaction id, which a reason label must not hold (one series each) */
static ngx_uint_t
ngx_http_pki_m_hexword(const char *in, char before, const char **end)
{
    size_t       n;
    ngx_uint_t   digit;
    const char  *p;

    if (isalnum((u_char) before)) {
        return 0;
    }

    digit = 0;

    for (p = in; isxdigit((u_char) *p); p++) {
        digit |= isdigit((u_char) *p) != 0;
    }

    n = (size_t) (p - in);

    if (n < 8 || !digit || isalnum((u_char) *p)) {
        return 0;
    }

    *end = p - 1;

    return 1;
}


/* A failure reason as a bounded label: quoted parts dropped, numbers (a
 * digit run not glued to a letter, as in "base64") and words of 8 hex
 * digits or more become "#".  Quoted text is the client's, and may hold
 * quotes of its own: everything from the first quote to the last one
 * goes, so no client text makes a label value (the series would be theirs
 * to multiply).  Non-ASCII bytes become "?".  "unsupported ...
 * algorithm|encryption NAME" ends before NAME: an OpenSSL name of the
 * client's OID (SCEP's digest and ciphers), thousands of them.  (The
 * protocol's quota of series bounds what other rules miss.) */
static void
ngx_http_pki_m_reason(char *out, size_t size, const char *in)
{
    size_t       n;
    const char  *last, *stop, *w;

    n = 0;
    last = in != NULL ? strrchr(in, '"') : NULL;
    stop = NULL;

    if (in != NULL && ngx_strncmp(in, "unsupported ", 12) == 0) {
        w = ngx_strstr(in, " algorithm ");
        stop = w ? w + sizeof(" algorithm") - 1 : NULL;

        w = ngx_strstr(in, " encryption ");
        if (w != NULL && (stop == NULL || w < stop)) {
            stop = w + sizeof(" encryption") - 1;
        }
    }

    for ( /* void */ ; in && *in && in != stop && n + 1 < size; in++) {
        if (*in == '"') {
            out[n++] = '_';
            if (last == NULL || last == in) {
                break;          /* an unclosed quote: the rest goes */
            }
            in = last;
            last = NULL;
            continue;
        }

        if (ngx_http_pki_m_hexword(in, n > 0 ? out[n - 1] : ' ', &in)) {
            out[n++] = '#';
            continue;
        }

        if (*in >= '0' && *in <= '9'
            && !(n > 0 && (((out[n - 1] | 0x20) >= 'a'
                            && (out[n - 1] | 0x20) <= 'z')
                           || (out[n - 1] >= '0' && out[n - 1] <= '9'))))
        {
            while (in[1] >= '0' && in[1] <= '9') {
                in++;
            }
            out[n++] = '#';
            continue;
        }

        if (*in == ' ' && n > 0 && out[n - 1] == ' ') {
            continue;
        }

        out[n++] = (*in == '\\' || (u_char) *in < 0x20) ? ' '
                   : ((u_char) *in >= 0x7f) ? '?' : *in;
    }

    while (n > 0 && (out[n - 1] == ' ' || out[n - 1] == ':')) {
        n--;
    }

    out[n] = '\0';
}


/* one more issuance or failed request in this second (any thread) */
static void
ngx_http_pki_m_second(ngx_uint_t failed)
{
    time_t                    now, t;
    ngx_http_pki_m_second_t  *s;

    if (ngx_http_pki_m_shm == NULL) {
        return;
    }

    now = time(NULL);
    s = &ngx_http_pki_m_shm->recent[now % NGX_HTTP_PKI_M_RECENT];
    t = (time_t) s->time;

    if (t != now) {
        /* the first of this second resets the slot (approximate: an add
         * racing with the reset may be lost; it is a live view) */
        if (t < now && ngx_atomic_cmp_set(&s->time, (ngx_atomic_uint_t) t,
                                          (ngx_atomic_uint_t) now))
        {
            s->issued = 0;
            s->failed = 0;
        }
    }

    (void) ngx_atomic_fetch_add(failed ? &s->failed : &s->issued, 1);
}


/* ---- events from the core (any thread) --------------------------------------- */

static void
ngx_http_pki_m_sink(void *arg, const pki_event_t *ev)
{
    char                      field[NGX_HTTP_PKI_M_FIELD];
    size_t                    len;
    const char               *labels[12], *outcome;
    u_char                    key[NGX_HTTP_PKI_M_KEY];
    ngx_http_pki_m_series_t  *s;

    (void) arg;

    outcome = pki_outcome_class(ev->status);

    switch (ev->type) {

    case PKI_EV_ISSUE:
        labels[0] = "protocol";
        labels[1] = ev->protocol;
        labels[2] = "ca";
        labels[3] = ev->ca;
        labels[4] = "template";
        labels[5] = ev->template_name;
        labels[6] = "outcome";
        labels[7] = outcome;
        labels[8] = NULL;

        ngx_snprintf((u_char *) field, sizeof(field) - 1, "iss:%s:%s%Z",
                     ev->ca ? ev->ca : "", outcome);

        len = ngx_http_pki_m_key(key, sizeof(key), "pki_issuance_total",
                                 labels);
        ngx_http_pki_m_add(ngx_http_pki_m_series(key, len,
                                                 NGX_HTTP_PKI_M_COUNTER,
                                                 field), 0, 1);

        if (ev->status == PKI_OK) {
            ngx_http_pki_m_second(0);
        }
        break;

    case PKI_EV_REVOKE:
        labels[0] = "ca";
        labels[1] = ev->ca;
        labels[2] = "reason";
        /* one series per reason, not per invalidity date */
        labels[3] = ev->status != PKI_OK ? ""
                    : ev->reason_label ? ev->reason_label : ev->reason;
        labels[4] = "outcome";
        labels[5] = outcome;
        labels[6] = NULL;

        ngx_snprintf((u_char *) field, sizeof(field) - 1, "rev:%s:%s%Z",
                     ev->ca ? ev->ca : "", outcome);

        len = ngx_http_pki_m_key(key, sizeof(key), "pki_revocations_total",
                                 labels);
        ngx_http_pki_m_add(ngx_http_pki_m_series(key, len,
                                                 NGX_HTTP_PKI_M_COUNTER,
                                                 field), 0, 1);
        break;

    case PKI_EV_SIGN:
        if (ev->seconds >= 0) {
            labels[0] = "what";
            labels[1] = ev->operation ? ev->operation : "other";
            labels[2] = NULL;

            len = ngx_http_pki_m_key(key, sizeof(key),
                                     "pki_sign_duration_seconds", labels);
            s = ngx_http_pki_m_series(key, len, NGX_HTTP_PKI_M_HISTOGRAM,
                                      NULL);
            ngx_http_pki_m_observe(s, ev->seconds);
        }

        if (ev->status != PKI_OK) {
            s = ngx_http_pki_m_series((u_char *) "pki_sign_errors_total",
                                      sizeof("pki_sign_errors_total") - 1,
                                      NGX_HTTP_PKI_M_COUNTER, NULL);
            ngx_http_pki_m_add(s, 0, 1);
        }
        break;

    case PKI_EV_REDIS:
        if (ev->seconds >= 0) {
            s = ngx_http_pki_m_series(
                    (u_char *) "pki_redis_duration_seconds",
                    sizeof("pki_redis_duration_seconds") - 1,
                    NGX_HTTP_PKI_M_HISTOGRAM, NULL);
            ngx_http_pki_m_observe(s, ev->seconds);
        }

        if (ev->status != PKI_OK) {
            s = ngx_http_pki_m_series((u_char *) "pki_redis_errors_total",
                                      sizeof("pki_redis_errors_total") - 1,
                                      NGX_HTTP_PKI_M_COUNTER, NULL);
            ngx_http_pki_m_add(s, 0, 1);
        }
        break;

    default:
        break;
    }

    if (ev->type == PKI_EV_ISSUE || ev->type == PKI_EV_REVOKE
        || ev->type == PKI_EV_REQUEST)
    {
        labels[0] = "type";
        labels[1] = ev->type == PKI_EV_ISSUE ? "issue"
                    : ev->type == PKI_EV_REVOKE ? "revoke" : "request";
        labels[2] = NULL;

        len = ngx_http_pki_m_key(key, sizeof(key), "pki_audit_events_total",
                                 labels);
        ngx_http_pki_m_add(ngx_http_pki_m_series(key, len,
                                                 NGX_HTTP_PKI_M_COUNTER,
                                                 NULL), 0, 1);
    }
}


/* ---- requests: mark + log phase ---------------------------------------------- */

static char *
ngx_http_pki_m_strdup(ngx_pool_t *pool, const char *s)
{
    size_t   n;
    char    *p;

    if (s == NULL) {
        return NULL;
    }

    n = ngx_strlen(s);
    if (n > 255) {
        n = 255;
    }

    p = ngx_pnalloc(pool, n + 1);
    if (p != NULL) {
        ngx_memcpy(p, s, n);
        p[n] = '\0';
    }

    return p;
}


/* The request's context, made when needed. */
static ngx_http_pki_m_ctx_t *
ngx_http_pki_m_ctx(ngx_http_request_t *r)
{
    ngx_http_pki_m_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_pki_metrics_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_pki_m_ctx_t));
        if (ctx == NULL) {
            return NULL;
        }

        ngx_http_set_ctx(r->main, ctx, ngx_http_pki_metrics_module);
    }

    return ctx;
}


ngx_int_t
ngx_http_pki_metrics_set_user(ngx_http_request_t *r, ngx_str_t *user)
{
    ngx_http_pki_m_ctx_t  *ctx;

    ctx = ngx_http_pki_m_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ctx->user = *user;

    return NGX_OK;
}


void
ngx_http_pki_verified_user(ngx_http_request_t *r, ngx_str_t *user)
{
    ngx_http_pki_m_ctx_t  *ctx;

    ctx = r == r->main ? ngx_http_get_module_ctx(r, ngx_http_pki_metrics_module)
                       : NULL;

    if (ctx == NULL || ctx->user.len == 0) {
        ngx_str_null(user);
        return;
    }

    *user = ctx->user;
}


void
ngx_http_pki_metrics_mark(ngx_http_request_t *r, const char *proto,
    const char *ca, const char *tmpl, pki_status_t status,
    const char *reason)
{
    ngx_http_pki_m_ctx_t  *ctx;

    ctx = ngx_http_pki_m_ctx(r);
    if (ctx == NULL) {
        return;
    }

    ctx->marked = 1;
    ctx->proto = ngx_http_pki_m_strdup(r->pool, proto);
    ctx->ca = ngx_http_pki_m_strdup(r->pool, ca);
    ctx->tmpl = ngx_http_pki_m_strdup(r->pool, tmpl);
    ctx->reason = ngx_http_pki_m_strdup(r->pool, reason);
    ctx->status = status;
}


void
ngx_http_pki_metrics_requester(ngx_http_request_t *r, const char *who)
{
    ngx_http_pki_m_ctx_t  *ctx;

    if (who == NULL || who[0] == '\0') {
        return;
    }

    ctx = ngx_http_pki_m_ctx(r);
    if (ctx == NULL) {
        return;
    }

    ctx->requester = ngx_http_pki_m_strdup(r->pool, who);
}


/*
 * The ACME engine reports every 4xx problem as PKI_MALFORMED; the problem
 * type at the start of the detail ("type: text") tells the class.
 */

pki_status_t
ngx_http_pki_metrics_acme_status(pki_status_t status, const char *detail)
{
    size_t       n;
    ngx_uint_t   i;

    static const char  *auth[] = {
        "unauthorized", "accountDoesNotExist", "externalAccountRequired",
        "userActionRequired", NULL
    };

    static const char  *policy[] = {
        "rejectedIdentifier", "unsupportedIdentifier", "rateLimited", "caa",
        "badRevocationReason", "alreadyRevoked", "alreadyReplaced",
        "orderNotReady", NULL
    };

    if (status != PKI_MALFORMED || detail == NULL) {
        return status;
    }

    for (i = 0; auth[i]; i++) {
        n = ngx_strlen(auth[i]);
        if (ngx_strncmp(detail, auth[i], n) == 0 && detail[n] == ':') {
            return PKI_UNAUTHORIZED;
        }
    }

    for (i = 0; policy[i]; i++) {
        n = ngx_strlen(policy[i]);
        if (ngx_strncmp(detail, policy[i], n) == 0 && detail[n] == ':') {
            return PKI_POLICY;
        }
    }

    return status;
}


static pki_status_t
ngx_http_pki_m_http_status(ngx_uint_t code)
{
    if (code < 400) {
        return PKI_OK;
    }

    switch (code) {

    case NGX_HTTP_UNAUTHORIZED:
    case NGX_HTTP_FORBIDDEN:
        return PKI_UNAUTHORIZED;

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        return PKI_TOO_LARGE;

    default:
        return code >= 500 ? PKI_UNAVAILABLE : PKI_MALFORMED;
    }
}


static ngx_int_t
ngx_http_pki_m_log_handler(ngx_http_request_t *r)
{
    char                        reason[NGX_HTTP_PKI_M_REASON], user[256];
    ngx_str_t                   vuser;
    char                        client[NGX_SOCKADDR_STRLEN + 1], who[256];
    size_t                      len;
    double                      seconds;
    ngx_uint_t                  over;
    ngx_msec_int_t              ms;
    ngx_time_t                 *tp;
    const char                 *labels[12], *outcome, *proto, *rs;
    pki_status_t                status;
    pki_event_t                 ev;
    u_char                      key[NGX_HTTP_PKI_M_KEY];
    ngx_http_pki_m_ctx_t       *ctx;
    ngx_http_pki_m_series_t    *s;
    ngx_http_pki_m_loc_conf_t  *mlcf;
    ngx_http_pki_m_main_conf_t *mmcf;

    if (r != r->main || (ngx_http_pki_m_shm == NULL && !ngx_http_pki_m_audit))
    {
        return NGX_OK;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_pki_metrics_module);
    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_pki_metrics_module);

    if (ctx != NULL && !ctx->marked) {
        ctx = NULL;             /* it holds no more than the user name */
    }

    if (ctx == NULL && (mlcf == NULL || mlcf->proto == NULL)) {
        return NGX_OK;
    }

    proto = (ctx && ctx->proto) ? ctx->proto : mlcf->proto;
    status = ctx ? ctx->status
                 : ngx_http_pki_m_http_status(r->headers_out.status);

    if (status == PKI_OK && r->headers_out.status >= 400) {
        /* marked before the answer went wrong (shed, out of memory) */
        status = ngx_http_pki_m_http_status(r->headers_out.status);
    }

    outcome = pki_outcome_class(status);

    if (ngx_http_pki_m_sync.audit != NULL
        && (status == PKI_UNAVAILABLE || ngx_http_pki_m_bl.full))
    {
        ngx_http_pki_m_backlog(ngx_http_pki_m_sync.audit);
    }

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));
    seconds = ms < 0 ? 0 : ms / 1000.0;

    labels[0] = "protocol";
    labels[1] = proto;
    labels[2] = "ca";
    labels[3] = ctx ? ctx->ca : NULL;
    labels[4] = "template";
    labels[5] = ctx ? ctx->tmpl : NULL;
    labels[6] = "outcome";
    labels[7] = outcome;
    labels[8] = NULL;

    {
        char  field[NGX_HTTP_PKI_M_FIELD];

        ngx_snprintf((u_char *) field, sizeof(field) - 1, "req:%s:%s%Z",
                     proto, outcome);

        len = ngx_http_pki_m_key(key, sizeof(key), "pki_requests_total",
                                 labels);
        ngx_http_pki_m_add(ngx_http_pki_m_series(key, len,
                                                 NGX_HTTP_PKI_M_COUNTER,
                                                 field), 0, 1);
    }

    labels[2] = NULL;
    len = ngx_http_pki_m_key(key, sizeof(key),
                             "pki_request_duration_seconds", labels);
    ngx_http_pki_m_observe(ngx_http_pki_m_series(key, len,
                                                 NGX_HTTP_PKI_M_HISTOGRAM,
                                                 NULL),
                           seconds);

    if (status != PKI_OK) {
        ngx_http_pki_m_second(1);

    } else if (ngx_strcmp(proto, "admin") != 0) {
        return NGX_OK;
    }

    rs = ctx && ctx->reason && ctx->reason[0] ? ctx->reason
         : status != PKI_OK ? pki_status_name(status) : "";

    if (status != PKI_OK) {
        ngx_http_pki_m_reason(reason, sizeof(reason), rs);

        labels[2] = "outcome";
        labels[3] = outcome;
        labels[4] = "reason";
        labels[5] = reason;
        labels[6] = NULL;

        len = ngx_http_pki_m_key(key, sizeof(key), "pki_failures_total",
                                 labels);

        over = 0;
        s = ngx_http_pki_m_insert(key, len, NGX_HTTP_PKI_M_COUNTER, NULL,
                                  proto, &over);

        if (over) {
            /* the protocol's quota of reasons is spent: "other" */
            labels[5] = "other";
            len = ngx_http_pki_m_key(key, sizeof(key), "pki_failures_total",
                                     labels);
            s = ngx_http_pki_m_series(key, len, NGX_HTTP_PKI_M_COUNTER,
                                      NULL);
        }

        ngx_http_pki_m_add(s, 0, 1);
    }

    /* the transaction log: refused requests and admin actions */

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_pki_metrics_module);
    if (mmcf == NULL || mmcf->audit == NULL) {
        return NGX_OK;
    }

    who[0] = '\0';
    ngx_http_pki_verified_user(r, &vuser);

    if (ctx != NULL && ctx->requester != NULL) {
        ngx_cpystrn((u_char *) who, (u_char *) ctx->requester, sizeof(who));

    } else if (vuser.len) {
        len = ngx_min(vuser.len, sizeof(user) - 1);
        ngx_memcpy(user, vuser.data, len);
        user[len] = '\0';
        ngx_cpystrn((u_char *) who, (u_char *) user, sizeof(who));
    }

#if (NGX_HTTP_SSL)
    if (who[0] == '\0' && r->connection->ssl) {
        X509  *peer;

        peer = SSL_get0_peer_certificate(r->connection->ssl->connection);
        if (peer != NULL
            && SSL_get_verify_result(r->connection->ssl->connection)
               == X509_V_OK)
        {
            X509_NAME_oneline(X509_get_subject_name(peer), who, sizeof(who));
        }
    }
#endif

    /* one entry each for admin actions and for the refusals that reached
     * the CA (marked) with an authenticated identity; the others within
     * the bucket, counted past it (the counters above have them all) */

    if (status != PKI_OK && (ctx == NULL || who[0] == '\0')
        && !ngx_http_pki_m_quiet_take(mmcf))
    {
        ngx_http_pki_m_quiet_count(proto, ctx ? ctx->ca : NULL, status);
        return NGX_OK;
    }

    len = ngx_min(r->connection->addr_text.len, sizeof(client) - 1);
    ngx_memcpy(client, r->connection->addr_text.data, len);
    client[len] = '\0';

    ngx_memzero(&ev, sizeof(pki_event_t));
    ev.type = PKI_EV_REQUEST;
    ev.status = status;
    ev.protocol = proto;
    ev.operation = "request";
    ev.ca = ctx ? ctx->ca : NULL;
    ev.template_name = ctx ? ctx->tmpl : NULL;
    ev.requester = who;
    ev.client = client;
    ev.reason = rs;

    {
        char    op[128];
        size_t  n;

        /* what was asked (method and path, no query, no body) */
        n = ngx_min(r->method_name.len + 1 + r->uri.len, sizeof(op) - 1);
        ngx_snprintf((u_char *) op, n, "%V %V", &r->method_name, &r->uri);
        op[n] = '\0';
        ev.operation = op;

        ngx_http_pki_m_audit_queue(mmcf, &ev, r->connection->log);
    }

    ngx_http_pki_m_sink(NULL, &ev);

    return NGX_OK;
}


/*
 * Refusals and admin actions reach the log from the event loop, which must
 * not block on the file (an append can wait for a journal commit): they
 * are copied into a bounded per-worker queue and written by one thread-pool
 * task at a time, all of a batch with one fdatasync.
 */

static char *
ngx_http_pki_m_cpy(char **p, const char *s, size_t max)
{
    char    *d;
    size_t   n;

    if (s == NULL) {
        return NULL;
    }

    n = ngx_min(ngx_strlen(s), max);
    d = *p;
    ngx_memcpy(d, s, n);
    d[n] = '\0';
    *p += n + 1;

    return d;
}


static void
ngx_http_pki_m_audit_queue(ngx_http_pki_m_main_conf_t *mmcf,
    const pki_event_t *ev, ngx_log_t *log)
{
    char                   *p;
    ngx_http_pki_m_item_t  *it;

    if (ngx_http_pki_m_aq.n >= NGX_HTTP_PKI_M_AUDIT_QUEUE) {
        /* a reconnect storm refuses thousands a second: one line a
         * second per worker, with the count (the counter has them all) */
        ngx_http_pki_m_aq.dropped++;

        if (ngx_current_msec - ngx_http_pki_m_aq.dropped_at >= 1000
            || ngx_http_pki_m_aq.dropped_at == 0)
        {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "pki_audit_log: queue full, %ui refusal(s) not "
                          "logged", ngx_http_pki_m_aq.dropped);
            ngx_http_pki_m_aq.dropped = 0;
            ngx_http_pki_m_aq.dropped_at = ngx_current_msec;
        }

        ngx_http_pki_m_add(ngx_http_pki_m_series(
                               (u_char *) "pki_audit_dropped_total",
                               sizeof("pki_audit_dropped_total") - 1,
                               NGX_HTTP_PKI_M_COUNTER, NULL), 0, 1);
        return;
    }

    it = ngx_alloc(sizeof(ngx_http_pki_m_item_t), log);
    if (it == NULL) {
        return;
    }

    p = it->buf;
    it->ev = *ev;
    it->ev.protocol = ngx_http_pki_m_cpy(&p, ev->protocol, 63);
    it->ev.operation = ngx_http_pki_m_cpy(&p, ev->operation, 127);
    it->ev.ca = ngx_http_pki_m_cpy(&p, ev->ca, 127);
    it->ev.template_name = ngx_http_pki_m_cpy(&p, ev->template_name, 127);
    it->ev.requester = ngx_http_pki_m_cpy(&p, ev->requester, 255);
    it->ev.client = ngx_http_pki_m_cpy(&p, ev->client, 127);
    it->ev.reason = ngx_http_pki_m_cpy(&p, ev->reason, 255);
    it->ev.serial = NULL;
    it->ev.subject = NULL;
    it->next = NULL;
    it->done = 0;

    *ngx_http_pki_m_aq.last = it;
    ngx_http_pki_m_aq.last = &it->next;
    ngx_http_pki_m_aq.n++;
    ngx_http_pki_m_aq.audit = mmcf->audit;

    ngx_http_pki_m_audit_post();
}


/*
 * The bucket of the refusals that carry no authenticated identity: up to
 * refusal_burst entries at once, refusal_rate a second after that (the
 * rate is in thousandths of an entry a second, so in millionths a
 * millisecond: the bucket's units).  1 takes one entry's worth.
 */
static ngx_uint_t
ngx_http_pki_m_quiet_take(ngx_http_pki_m_main_conf_t *mmcf)
{
    uint64_t    cap, add;
    ngx_msec_t  ms;

    cap = (uint64_t) mmcf->refusal_burst * NGX_HTTP_PKI_M_TOKEN;

    if (!ngx_http_pki_m_quiet.init) {
        ngx_http_pki_m_quiet.init = 1;
        ngx_http_pki_m_quiet.tokens = cap;
        ngx_http_pki_m_quiet.last = ngx_current_msec;
    }

    ms = ngx_current_msec - ngx_http_pki_m_quiet.last;
    ngx_http_pki_m_quiet.last = ngx_current_msec;

    /* (a day of milliseconds fills any bucket) */
    add = (uint64_t) ngx_min(ms, 86400000) * mmcf->refusal_rate;

    ngx_http_pki_m_quiet.tokens = ngx_min(ngx_http_pki_m_quiet.tokens + add,
                                          cap);

    if (ngx_http_pki_m_quiet.tokens < NGX_HTTP_PKI_M_TOKEN) {
        return 0;
    }

    ngx_http_pki_m_quiet.tokens -= NGX_HTTP_PKI_M_TOKEN;

    return 1;
}


/* one more refusal past the bucket: counted for its summary entry */
static void
ngx_http_pki_m_quiet_count(const char *proto, const char *ca,
    pki_status_t status)
{
    size_t                   len;
    u_char                   key[NGX_HTTP_PKI_M_KEY];
    ngx_uint_t               i;
    const char              *labels[4];
    ngx_http_pki_m_quiet_t  *q;

    if (ca == NULL) {
        ca = "";
    }

    for (i = 0; i < ngx_http_pki_m_quiet.n; i++) {
        q = &ngx_http_pki_m_quiet.keys[i];

        if (q->status == status && ngx_strcmp(q->proto, proto) == 0
            && ngx_strcmp(q->ca, ca) == 0)
        {
            break;
        }
    }

    if (i == ngx_http_pki_m_quiet.n && i < NGX_HTTP_PKI_M_QUIET_KEYS) {
        q = &ngx_http_pki_m_quiet.keys[i];

        ngx_cpystrn((u_char *) q->proto, (u_char *) proto, sizeof(q->proto));
        ngx_cpystrn((u_char *) q->ca, (u_char *) ca, sizeof(q->ca));
        q->status = status;
        q->count = 0;

        ngx_http_pki_m_quiet.n++;
    }

    if (i == NGX_HTTP_PKI_M_QUIET_KEYS) {
        /* more kinds than the table holds: one count for the rest, said
         * with the status of the first of them */
        q = &ngx_http_pki_m_quiet.keys[i];

        if (q->count == 0) {
            q->status = status;
        }
    }

    if (q->count++ == 0) {
        q->since = ngx_time();
    }

    if (!ngx_http_pki_m_quiet.timer.timer_set) {
        ngx_add_timer(&ngx_http_pki_m_quiet.timer, NGX_HTTP_PKI_M_QUIET_MSEC);
    }

    labels[0] = "protocol";
    labels[1] = proto;
    labels[2] = NULL;

    len = ngx_http_pki_m_key(key, sizeof(key),
                             "pki_audit_refusals_unlogged_total", labels);
    ngx_http_pki_m_add(ngx_http_pki_m_series(key, len,
                                             NGX_HTTP_PKI_M_COUNTER, NULL),
                       0, 1);
}


static void
ngx_http_pki_m_quiet_timer(ngx_event_t *ev)
{
    ngx_http_pki_m_main_conf_t  *mmcf;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;                 /* exit_process writes them */
    }

    mmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_pki_metrics_module);

    ngx_http_pki_m_quiet_flush(mmcf, ev->log);
}


/* The summary entries of the refusals counted since the last ones, into
 * the log's queue; the counts start again. */
static void
ngx_http_pki_m_quiet_flush(ngx_http_pki_m_main_conf_t *mmcf, ngx_log_t *log)
{
    char                     reason[160];
    ngx_tm_t                 tm;
    ngx_uint_t               i;
    pki_event_t              ev;
    ngx_http_pki_m_quiet_t  *q;

    for (i = 0; i <= NGX_HTTP_PKI_M_QUIET_KEYS; i++) {
        q = &ngx_http_pki_m_quiet.keys[i];

        if (q->count == 0) {
            continue;
        }

        if (mmcf == NULL || mmcf->audit == NULL) {
            q->count = 0;
            continue;
        }

        ngx_gmtime(q->since, &tm);

        ngx_snprintf((u_char *) reason, sizeof(reason) - 1,
                     "%ui refusals not logged individually since "
                     "%4d-%02d-%02dT%02d:%02d:%02dZ%s%Z",
                     q->count, tm.ngx_tm_year, tm.ngx_tm_mon,
                     tm.ngx_tm_mday, tm.ngx_tm_hour, tm.ngx_tm_min,
                     tm.ngx_tm_sec,
                     i == NGX_HTTP_PKI_M_QUIET_KEYS
                     ? " (several protocols and CAs)" : "");

        ngx_memzero(&ev, sizeof(pki_event_t));
        ev.type = PKI_EV_REQUEST;
        ev.status = q->status;
        ev.operation = "summary";

        if (i < NGX_HTTP_PKI_M_QUIET_KEYS) {
            ev.protocol = q->proto;
            ev.ca = q->ca[0] ? q->ca : NULL;
        }

        ev.reason = reason;

        ngx_http_pki_m_audit_queue(mmcf, &ev, log);
        ngx_http_pki_m_sink(NULL, &ev);

        q->count = 0;
    }

    ngx_http_pki_m_quiet.n = 0;
}


/* A file that takes nothing (disk full) while the worker holds
 * max_backlog of its entries: issuance and revocation are refused (the
 * core does, pki_int_audit_ready), and that is said once a second with
 * the count, not once per request; the end of it once. */
static void
ngx_http_pki_m_backlog(pki_audit_t *audit)
{
    size_t              bytes, max;
    ngx_uint_t          full;
    unsigned long long  refused;

    full = pki_audit_backlog(audit, &bytes, &max, &refused);

    if (full) {
        if (refused != ngx_http_pki_m_bl.refused
            && (ngx_http_pki_m_bl.said == 0
                || ngx_current_msec - ngx_http_pki_m_bl.said >= 1000))
        {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "pki_audit_log: %uz bytes of entries wait for a "
                          "log file that takes none (max_backlog %uz): "
                          "%uL issuance(s) and revocation(s) refused",
                          bytes, max,
                          (uint64_t) (refused - ngx_http_pki_m_bl.refused));
            ngx_http_pki_m_bl.refused = refused;
            ngx_http_pki_m_bl.said = ngx_current_msec;
        }

        ngx_http_pki_m_bl.full = 1;
        return;
    }

    if (ngx_http_pki_m_bl.full) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "pki_audit_log: the log file takes entries again "
                      "(%uz bytes wait): issuance and revocation resume",
                      bytes);
        ngx_http_pki_m_bl.full = 0;
        ngx_http_pki_m_bl.refused = refused;
        /* the next outage is said at its first refusal, even within a
         * second of this one's last line */
        ngx_http_pki_m_bl.said = 0;
    }
}


/* the waiting entries become the batch of the (one) audit task */
static void
ngx_http_pki_m_audit_post(void)
{
    ngx_thread_pool_t  *tp;

    if (ngx_http_pki_m_aq.busy || ngx_http_pki_m_aq.task == NULL
        || ngx_http_pki_m_aq.head == NULL || ngx_http_pki_m_aq.audit == NULL)
    {
        return;
    }

    if (ngx_http_pki_pool_full()) {
        /* shedding: the timer tries again (a post now would only add
         * nginx's own "queue overflow" line) */
        return;
    }

    tp = ngx_http_pki_cycle_thread_pool((ngx_cycle_t *) ngx_cycle);
    if (tp == NULL) {
        return;
    }

    ngx_http_pki_m_aq.batch = ngx_http_pki_m_aq.head;

    if (ngx_http_pki_thread_post(tp, ngx_http_pki_m_aq.task) != NGX_OK) {
        /* queue full: the next refusal or the timer tries again */
        ngx_http_pki_m_aq.batch = NULL;
        return;
    }

    ngx_http_pki_m_aq.head = NULL;
    ngx_http_pki_m_aq.last = &ngx_http_pki_m_aq.head;
    ngx_http_pki_m_aq.busy = 1;
}


static void
ngx_http_pki_m_audit_write(void *data, ngx_log_t *log)
{
    pki_result_t            res;
    ngx_http_pki_m_item_t  *it, *batch;

    (void) data;
    (void) log;

    ngx_http_pki_thread_enter();

    /* claimed: a worker that exits while this task is queued or runs
     * (threads left at exit) writes what is still unclaimed itself */
    batch = __atomic_exchange_n(&ngx_http_pki_m_aq.batch, NULL,
                                __ATOMIC_ACQ_REL);
    ngx_http_pki_m_aq.taken = batch;

    for (it = batch; it; it = it->next) {
        pki_result_init(&res);
        it->st = pki_audit_append(ngx_http_pki_m_aq.audit, &it->ev,
                                  it->next == NULL, &res);
        it->done = 1;
    }
}


static void
ngx_http_pki_m_audit_done(ngx_event_t *ev)
{
    ngx_uint_t              failed;
    ngx_http_pki_m_item_t  *it, *next;

    failed = 0;

    for (it = ngx_http_pki_m_aq.taken; it; it = next) {
        next = it->next;
        failed += it->st != PKI_OK;
        ngx_http_pki_m_aq.n--;
        ngx_free(it);
    }

    ngx_http_pki_m_aq.taken = NULL;
    ngx_http_pki_m_aq.batch = NULL;
    ngx_http_pki_m_aq.busy = 0;

    /* a file that takes nothing fails every batch: a line a second */
    ngx_http_pki_m_aq.unwritten += failed;
    ngx_http_pki_m_unwritten_log(ev->log);

    /* more came meanwhile: the next batch */
    ngx_http_pki_m_audit_post();
}


/* The entries not written since the last line, at most a line a second;
 * also from the worker's timer, so that the count of the last failures is
 * said even when no batch follows them. */
static void
ngx_http_pki_m_unwritten_log(ngx_log_t *log)
{
    if (ngx_http_pki_m_aq.unwritten
        && (ngx_http_pki_m_aq.unwritten_at == 0
            || ngx_current_msec - ngx_http_pki_m_aq.unwritten_at >= 1000))
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "pki_audit_log: %ui entries not written",
                      ngx_http_pki_m_aq.unwritten);
        ngx_http_pki_m_aq.unwritten = 0;
        ngx_http_pki_m_aq.unwritten_at = ngx_current_msec;
    }
}


ngx_int_t
ngx_http_pki_audit_wait(ngx_http_pki_audit_waiter_t *w,
    unsigned long long ticket, void (*resume)(void *data), void *data)
{
    if (ngx_http_pki_m_sync.audit == NULL || ngx_http_pki_m_sync.task == NULL
        || pki_audit_ticket_done(ngx_http_pki_m_sync.audit, ticket))
    {
        return NGX_OK;
    }

    w->ticket = ticket;
    w->resume = resume;
    w->data = data;
    w->next = ngx_http_pki_m_sync.head;
    ngx_http_pki_m_sync.head = w;

    if (!ngx_http_pki_m_sync.syncer) {
        ngx_http_pki_m_sync_post();
    }

    /* else: the append that gave the ticket woke the syncer; the sync
     * that covers it ends with a byte in the pipe, read after this */

    return NGX_AGAIN;
}


/* worker exit: the shared module calls this before it waits for this
 * process to be down to its main thread */
void
ngx_http_pki_audit_exit_threads(void)
{
    if (ngx_http_pki_m_sync.retry.timer_set) {
        ngx_del_timer(&ngx_http_pki_m_sync.retry);
    }

    if (!ngx_http_pki_m_sync.syncer) {
        return;
    }

    pki_audit_syncer_stop(ngx_http_pki_m_sync.audit);
    ngx_http_pki_m_sync.syncer = 0;

    if (ngx_http_pki_m_sync.conn) {
        ngx_close_connection(ngx_http_pki_m_sync.conn);
        ngx_http_pki_m_sync.conn = NULL;
    }

    (void) close(ngx_http_pki_m_sync.pipe[1]);
}


/* Every CA's issuance entries travel in its records' commits to the
 * certificate store (pki_audit_carry). */
static void
ngx_http_pki_m_carry(ngx_cycle_t *cycle, pki_audit_t *audit)
{
    pki_ca_t      *ca;
    ngx_uint_t     i;
    pki_redis_t   *store;
    pki_result_t   res;

    store = ngx_http_pki_cycle_redis(cycle);
    if (store == NULL) {
        return;
    }

    for (i = 0; (ca = ngx_http_pki_cycle_ca(cycle, i)) != NULL; i++) {
        pki_result_init(&res);
        if (pki_audit_carry(audit, store, pki_ca_name(ca), &res) != PKI_OK) {
            ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                          "pki_audit_log: CA \"%s\" logs each issuance "
                          "with its own sync: %s", pki_ca_name(ca),
                          res.detail);
        }
    }
}


static void
ngx_http_pki_m_syncer_start(ngx_cycle_t *cycle)
{
    int                fd[2];
    pki_result_t       res;
    ngx_event_t       *rev;
    ngx_connection_t  *c;

    if (pipe2(fd, O_NONBLOCK | O_CLOEXEC) != 0) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, ngx_errno,
                      "pki_audit_log: pipe2() failed, syncing in the pool");
        return;
    }

    c = ngx_get_connection(fd[0], cycle->log);
    if (c == NULL) {
        (void) close(fd[0]);
        (void) close(fd[1]);
        return;
    }

    c->pool = cycle->pool;
    rev = c->read;
    rev->log = cycle->log;
    rev->channel = 1;
    rev->handler = ngx_http_pki_m_syncer_event;
    c->write->log = cycle->log;
    c->write->channel = 1;

    if (ngx_add_event(rev, NGX_READ_EVENT, 0) != NGX_OK) {
        ngx_free_connection(c);
        (void) close(fd[0]);
        (void) close(fd[1]);
        return;
    }

    ngx_http_pki_m_sync.pipe[0] = fd[0];
    ngx_http_pki_m_sync.pipe[1] = fd[1];
    ngx_http_pki_m_sync.conn = c;

    pki_result_init(&res);

    if (pki_audit_syncer_start(ngx_http_pki_m_sync.audit,
                               ngx_http_pki_m_syncer_notify,
                               &ngx_http_pki_m_sync.pipe[1], &res)
        != PKI_OK)
    {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "pki_audit_log: %s, syncing in the pool", res.detail);
        ngx_close_connection(c);
        ngx_http_pki_m_sync.conn = NULL;
        (void) close(fd[1]);
        return;
    }

    ngx_http_pki_m_sync.syncer = 1;
}


/* the syncer thread, after each completed sync */
static void
ngx_http_pki_m_syncer_notify(void *arg)
{
    int  *fd = arg;

    u_char  b;

    b = 1;

    /* EAGAIN: a full pipe already holds a wake-up */
    while (write(*fd, &b, 1) < 0 && errno == EINTR) {
        /* again */
    }
}


static void
ngx_http_pki_m_syncer_event(ngx_event_t *ev)
{
    u_char             buf[64];
    ngx_connection_t  *c;

    c = ev->data;

    while (read(c->fd, buf, sizeof(buf)) > 0) {
        /* drain */
    }

    ngx_http_pki_m_resume_ready();
}


/* the answers whose entries are durable now go out */
static void
ngx_http_pki_m_resume_ready(void)
{
    ngx_http_pki_audit_waiter_t  *w, **pw, *ready;

    if (ngx_http_pki_m_sync.audit == NULL) {
        return;
    }

    /* take the ready ones out first: resume() may add new waiters */
    ready = NULL;
    pw = &ngx_http_pki_m_sync.head;

    while ((w = *pw) != NULL) {
        if (pki_audit_ticket_done(ngx_http_pki_m_sync.audit, w->ticket)) {
            *pw = w->next;
            w->next = ready;
            ready = w;
        } else {
            pw = &w->next;
        }
    }

    while ((w = ready) != NULL) {
        ready = w->next;
        w->next = NULL;
        w->resume(w->data);     /* may free w's storage */
    }
}


static void
ngx_http_pki_m_sync_post(void)
{
    ngx_thread_pool_t  *tp;

    if (ngx_http_pki_m_sync.busy || ngx_http_pki_m_sync.head == NULL) {
        return;
    }

    tp = ngx_http_pki_cycle_thread_pool((ngx_cycle_t *) ngx_cycle);

    /* a queue known to be full is not asked (nginx logs each refusal) */
    if (tp != NULL && !ngx_http_pki_pool_full()
        && ngx_http_pki_thread_post(tp, ngx_http_pki_m_sync.task) == NGX_OK)
    {
        ngx_http_pki_m_sync.busy = 1;
        ngx_http_pki_m_sync.refused = 0;

        if (ngx_http_pki_m_sync.retry.timer_set) {
            ngx_del_timer(&ngx_http_pki_m_sync.retry);
        }

        return;
    }

    /* not queued: the answers wait (never before their entries are
     * durable) and the post is tried again soon; an fdatasync here would
     * stall every connection of the worker */
    if (!ngx_http_pki_m_sync.refused) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "pki_audit_log: sync task not queued (thread pool "
                      "queue full), answers wait");
        ngx_http_pki_m_sync.refused = 1;
    }

    if (!ngx_http_pki_m_sync.retry.timer_set) {
        ngx_add_timer(&ngx_http_pki_m_sync.retry, NGX_HTTP_PKI_M_SYNC_RETRY);
    }
}


static void
ngx_http_pki_m_sync_retry(ngx_event_t *ev)
{
    (void) ev;

    /* a sync of another kind (a refusals batch) may have covered some */
    ngx_http_pki_m_resume_ready();
    ngx_http_pki_m_sync_post();
}


static void
ngx_http_pki_m_sync_work(void *data, ngx_log_t *log)
{
    pki_result_t  res;

    (void) data;
    (void) log;

    ngx_http_pki_thread_enter();

    pki_result_init(&res);
    ngx_http_pki_m_sync.st = pki_audit_sync(ngx_http_pki_m_sync.audit, &res);
}


static void
ngx_http_pki_m_sync_done(ngx_event_t *ev)
{
    ngx_http_pki_m_sync.busy = 0;

    ngx_http_pki_m_resume_ready();

    if (ngx_http_pki_m_sync.st != PKI_OK) {
        /* a failing disk is tried again from the timer, not in a loop of
         * fdatasync calls and alerts */
        ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                      "pki_audit_log: fdatasync failed; answers wait, "
                      "retry in %d ms", NGX_HTTP_PKI_M_SYNC_RETRY);

        if (ngx_http_pki_m_sync.head != NULL
            && !ngx_http_pki_m_sync.retry.timer_set)
        {
            ngx_add_timer(&ngx_http_pki_m_sync.retry,
                          NGX_HTTP_PKI_M_SYNC_RETRY);
        }

        return;
    }

    /* written while this sync ran: the next one */
    ngx_http_pki_m_sync_post();
}


/* worker exit, threads gone: what is left is written here */
static void
ngx_http_pki_m_audit_flush(pki_audit_t *audit)
{
    pki_result_t            res;
    ngx_http_pki_m_item_t  *it, *next, *lists[3];
    ngx_uint_t              i;

    /* a batch its task has not claimed (still queued when the pool's
     * threads outlived the exit: ngx_http_pki_threads_left) is written
     * here; one claimed is the task's while threads are left, and done
     * (or never begun) otherwise */
    lists[0] = __atomic_exchange_n(&ngx_http_pki_m_aq.batch, NULL,
                                   __ATOMIC_ACQ_REL);
    lists[1] = ngx_http_pki_threads_left ? NULL : ngx_http_pki_m_aq.taken;
    lists[2] = ngx_http_pki_m_aq.head;

    for (i = 0; i < 3; i++) {
        for (it = lists[i]; it; it = next) {
            next = it->next;
            if (!it->done) {
                pki_result_init(&res);
                (void) pki_audit_append(audit, &it->ev, 1, &res);
            }
            ngx_free(it);
        }
    }

    ngx_http_pki_m_aq.taken = NULL;
    ngx_http_pki_m_aq.head = NULL;
    ngx_http_pki_m_aq.last = &ngx_http_pki_m_aq.head;
    ngx_http_pki_m_aq.n = 0;
}


/* ---- output ---------------------------------------------------------------------- */

static int
ngx_http_pki_m_cmp(const void *a, const void *b)
{
    const ngx_http_pki_m_series_t *x = *(ngx_http_pki_m_series_t **) a;
    const ngx_http_pki_m_series_t *y = *(ngx_http_pki_m_series_t **) b;

    return ngx_strcmp(x->key, y->key);
}


/* 1 for a gauge of a CA this cycle does not have (a reload removed or
 * renamed it): the zone keeps its series, but a gauge of a CA no longer
 * served would say its last value for ever.  Counters stay: history. */
static ngx_uint_t
ngx_http_pki_m_stale(ngx_http_pki_m_series_t *s)
{
    u_char       *p, frag[NGX_HTTP_PKI_M_KEY];
    size_t        len;
    pki_ca_t     *ca;
    ngx_uint_t    j;
    const char   *labels[3];

    if (s->kind != NGX_HTTP_PKI_M_GAUGE
        && s->kind != NGX_HTTP_PKI_M_GAUGE_SUM)
    {
        return 0;
    }

    p = (u_char *) ngx_strstr(s->key, "{ca=\"");
    if (p == NULL) {
        p = (u_char *) ngx_strstr(s->key, ",ca=\"");
        if (p == NULL) {
            return 0;
        }
    }

    p++;

    for (j = 0; /* void */ ; j++) {
        ca = ngx_http_pki_cycle_ca((ngx_cycle_t *) ngx_cycle, j);
        if (ca == NULL) {
            return 1;
        }

        /* {ca="NAME"}, escaped and capped as the series' own label */
        labels[0] = "ca";
        labels[1] = pki_ca_name(ca);
        labels[2] = NULL;

        len = ngx_http_pki_m_key(frag, sizeof(frag), "", labels);
        if (len < 2) {
            continue;
        }

        len -= 2;

        if ((size_t) (p - s->key) + len < s->len
            && ngx_strncmp(p, frag + 1, len) == 0
            && (p[len] == ',' || p[len] == '}'))
        {
            return 0;
        }
    }
}


/* the ready series sorted by key (a metric family stays together), but
 * for the gauges of CAs gone */
static ngx_http_pki_m_series_t **
ngx_http_pki_m_sorted(ngx_pool_t *pool, ngx_uint_t *n)
{
    ngx_uint_t                 i, k;
    ngx_http_pki_m_shm_t      *sh;
    ngx_http_pki_m_series_t  **list;

    sh = ngx_http_pki_m_shm;
    *n = 0;

    list = ngx_palloc(pool, (sh->max + 1) * sizeof(void *));
    if (list == NULL) {
        return NULL;
    }

    for (i = 0, k = 0; i < sh->max; i++) {
        if (sh->series[i].state == 1
            && !ngx_http_pki_m_stale(&sh->series[i]))
        {
            list[k++] = &sh->series[i];
        }
    }

    ngx_qsort(list, k, sizeof(void *), ngx_http_pki_m_cmp);
    *n = k;

    return list;
}


static ngx_atomic_uint_t
ngx_http_pki_m_total(ngx_http_pki_m_series_t *s, ngx_uint_t i)
{
    ngx_uint_t          w;
    ngx_atomic_uint_t   sum;

    if (s->kind == NGX_HTTP_PKI_M_GAUGE) {
        return s->v[0][i];
    }

    sum = 0;

    for (w = 0; w < NGX_HTTP_PKI_M_SLOTS; w++) {
        sum += s->v[w][i];
    }

    return sum;
}


/* each CA certificate's notAfter (Unix time), for an alert well before
 * it: a CA that has expired signs nothing; the first
 * NGX_HTTP_PKI_M_MAX_CAS CAs, as pki_certificates */
static void
ngx_http_pki_m_ca_expiry(void)
{
    u_char                    key[NGX_HTTP_PKI_M_KEY];
    size_t                    len;
    time_t                    na;
    pki_ca_t                 *ca;
    ngx_uint_t                j;
    const char               *labels[3];
    ngx_http_pki_m_series_t  *s;

    for (j = 0; j < NGX_HTTP_PKI_M_MAX_CAS; j++) {
        ca = ngx_http_pki_cycle_ca((ngx_cycle_t *) ngx_cycle, j);
        if (ca == NULL) {
            break;
        }

        /* the end of what it signs: its certificate's, or an earlier
         * one's above it in its chain */
        na = pki_ca_end(ca);
        if (na <= 0) {
            continue;
        }

        labels[0] = "ca";
        labels[1] = pki_ca_name(ca);
        labels[2] = NULL;

        len = ngx_http_pki_m_key(key, sizeof(key),
                                 "pki_ca_not_after_timestamp_seconds",
                                 labels);
        s = ngx_http_pki_m_series(key, len, NGX_HTTP_PKI_M_GAUGE, NULL);

        ngx_http_pki_m_set(s, 0, (ngx_atomic_int_t) na);
    }
}


/* When process pid started (clock ticks since boot: field 22 of
 * /proc/PID/stat), 0 when it cannot be read (no /proc, gone).  procfs
 * makes the text in memory: no disk is waited for. */
static ngx_atomic_uint_t
ngx_http_pki_m_start_time(ngx_pid_t pid)
{
    int                 fd;
    char                path[64], buf[1024], *p, *end;
    ssize_t             n;
    ngx_uint_t          field;
    unsigned long long  v;

    ngx_sprintf((u_char *) path, "/proc/%P/stat%Z", pid);

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        return 0;
    }

    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);

    if (n <= 0) {
        return 0;
    }

    buf[n] = '\0';

    /* "PID (COMM) S ...": COMM may hold spaces and parentheses */
    p = strrchr(buf, ')');
    if (p == NULL) {
        return 0;
    }

    /* field 3 (the state) is the first after it, 22 the start time */
    for (field = 2; field < 22; field++) {
        p = strchr(p + 1, ' ');
        if (p == NULL) {
            return 0;
        }
    }

    errno = 0;
    v = strtoull(p + 1, &end, 10);

    if (errno != 0 || end == p + 1 || (*end != ' ' && *end != '\0')) {
        return 0;
    }

    return (ngx_atomic_uint_t) v;
}


/* Whether the process of an in-flight entry (pid, which started at
 * start) is still there: kill(pid, 0) alone takes a process that got a
 * dead worker's pid for it, and its count would stay in the gauge until
 * that process ends. */
static ngx_uint_t
ngx_http_pki_m_alive(ngx_atomic_uint_t pid, ngx_atomic_uint_t start)
{
    ngx_atomic_uint_t  now;

    if (pid == (ngx_atomic_uint_t) ngx_pid) {
        return start == 0 || start == ngx_http_pki_m_self_start;
    }

    if (kill((ngx_pid_t) pid, 0) == -1 && ngx_errno == NGX_ESRCH) {
        return 0;
    }

    if (start == 0) {
        return 1;
    }

    /* not readable (gone meanwhile, procfs hidden): as kill() said */
    now = ngx_http_pki_m_start_time((ngx_pid_t) pid);

    return now == 0 || now == start;
}


/* the live gauges, set just before output and by the worker's metrics
 * timer: the thread tasks in flight, the sum of every live process's
 * count (ngx_http_pki_metrics_tasks), and the CAs' notAfter */
static void
ngx_http_pki_m_live_gauges(void)
{
    ngx_uint_t                j;
    ngx_atomic_int_t          sum;
    ngx_atomic_uint_t         pid, start;
    ngx_http_pki_m_shm_t     *sh;
    ngx_http_pki_m_series_t  *s;

    sh = ngx_http_pki_m_shm;

    s = ngx_http_pki_m_series((u_char *) "pki_thread_tasks_in_flight",
                              sizeof("pki_thread_tasks_in_flight") - 1,
                              NGX_HTTP_PKI_M_GAUGE, NULL);
    if (s == NULL) {
        return;
    }

    sum = (ngx_atomic_int_t) sh->tasks_more;

    for (j = 0; j < NGX_HTTP_PKI_M_WORKERS; j++) {
        pid = sh->tasks[j].pid;
        ngx_memory_barrier();
        start = sh->tasks[j].start;

        if (pid == 0 || pid == NGX_HTTP_PKI_M_HELD
            || !ngx_http_pki_m_alive(pid, start))
        {
            continue;       /* free, or its process died without a word */
        }

        sum += (ngx_atomic_int_t) sh->tasks[j].n;
    }

    ngx_http_pki_m_set(s, 0, sum > 0 ? sum : 0);

    ngx_http_pki_m_ca_expiry();
}


/* This worker's entry for its in-flight count: a free one, or one whose
 * process is gone (killed, its exit cut short).  None left: tasks_more. */
static void
ngx_http_pki_m_tasks_claim(void)
{
    ngx_uint_t               j;
    ngx_atomic_uint_t        pid, start;
    ngx_http_pki_m_tasks_t  *e;

    ngx_http_pki_m_tasks = NULL;
    ngx_http_pki_m_self_start = ngx_http_pki_m_start_time(ngx_pid);

    for (j = 0; j < NGX_HTTP_PKI_M_WORKERS; j++) {
        e = &ngx_http_pki_m_shm->tasks[j];
        pid = e->pid;
        ngx_memory_barrier();
        start = e->start;

        if (pid == NGX_HTTP_PKI_M_HELD
            || (pid != 0 && ngx_http_pki_m_alive(pid, start)))
        {
            continue;
        }

        /* held while its count is reset: a reader skips it */
        if (!ngx_atomic_cmp_set(&e->pid, pid, NGX_HTTP_PKI_M_HELD)) {
            continue;
        }

        e->n = ngx_http_pki_tasks_in_flight;
        e->start = ngx_http_pki_m_self_start;
        ngx_memory_barrier();
        e->pid = (ngx_atomic_uint_t) ngx_pid;

        ngx_http_pki_m_tasks = e;
        return;
    }

    (void) ngx_atomic_fetch_add(&ngx_http_pki_m_shm->tasks_more,
                                (ngx_atomic_int_t)
                                ngx_http_pki_tasks_in_flight);
}


static void
ngx_http_pki_m_tasks_release(void)
{
    static ngx_uint_t  released;

    if (ngx_http_pki_m_shm == NULL || released) {
        return;
    }

    released = 1;

    if (ngx_http_pki_m_tasks != NULL) {
        ngx_http_pki_m_tasks->n = 0;
        ngx_memory_barrier();
        ngx_http_pki_m_tasks->pid = 0;
        ngx_http_pki_m_tasks = NULL;

    } else {
        (void) ngx_atomic_fetch_add(&ngx_http_pki_m_shm->tasks_more,
                                    -(ngx_atomic_int_t)
                                    ngx_http_pki_tasks_in_flight);
    }
}


/* A thread task of this worker posted (1) or back (-1): its shared
 * count, which the gauge sums. */
void
ngx_http_pki_metrics_tasks(ngx_int_t delta)
{
    if (ngx_http_pki_m_shm == NULL) {
        return;
    }

    if (ngx_http_pki_m_tasks != NULL) {
        (void) ngx_atomic_fetch_add(&ngx_http_pki_m_tasks->n,
                                    (ngx_atomic_int_t) delta);

    } else {
        (void) ngx_atomic_fetch_add(&ngx_http_pki_m_shm->tasks_more,
                                    (ngx_atomic_int_t) delta);
    }
}


static ngx_int_t
ngx_http_pki_metrics_handler(ngx_http_request_t *r)
{
    u_char                    *p, *brace, *buf;
    size_t                     size, nlen;
    ngx_int_t                  rc;
    ngx_uint_t                 i, b, n;
    const char                *type;
    ngx_atomic_uint_t          cum, v;
    ngx_http_pki_m_series_t  **list, *s, *prev;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_pki_read_only(r);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_pki_m_shm == NULL) {
        return ngx_http_pki_m_unavailable(r);
    }

    ngx_http_pki_m_live_gauges();

    list = ngx_http_pki_m_sorted(r->pool, &n);
    if (list == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    size = 256 + n * 18 * (NGX_HTTP_PKI_M_KEY + 96);

    buf = ngx_pnalloc(r->pool, size);
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = buf;
    prev = NULL;

    p = ngx_sprintf(p, "# TYPE pki_metrics_start_time_seconds gauge\n"
                    "pki_metrics_start_time_seconds %T\n"
                    "# TYPE pki_metrics_series_dropped_total counter\n"
                    "pki_metrics_series_dropped_total %uA\n",
                    ngx_http_pki_m_shm->start, ngx_http_pki_m_shm->dropped);

    for (i = 0; i < n; i++) {
        s = list[i];

        brace = (u_char *) ngx_strchr(s->key, '{');
        nlen = brace ? (size_t) (brace - s->key) : s->len;

        if (prev == NULL || ngx_strncmp(prev->key, s->key, nlen) != 0
            || (prev->key[nlen] != '{' && prev->key[nlen] != '\0'))
        {
            type = s->kind == NGX_HTTP_PKI_M_COUNTER ? "counter"
                   : s->kind == NGX_HTTP_PKI_M_HISTOGRAM ? "histogram"
                   : "gauge";

            p = ngx_sprintf(p, "# TYPE %*s %s\n", nlen, s->key, type);
        }

        prev = s;

        if (s->kind != NGX_HTTP_PKI_M_HISTOGRAM) {
            p = ngx_sprintf(p, "%s %uA\n", s->key,
                            ngx_http_pki_m_total(s, 0));
            continue;
        }

        cum = 0;

        for (b = 0; b < NGX_HTTP_PKI_M_NBUCKETS; b++) {
            cum += ngx_http_pki_m_total(s, b);

            if (brace) {
                p = ngx_sprintf(p, "%*s_bucket%*s,le=\"%s\"} %uA\n", nlen,
                                s->key, s->len - nlen - 1, brace,
                                ngx_http_pki_m_le[b], cum);
            } else {
                p = ngx_sprintf(p, "%*s_bucket{le=\"%s\"} %uA\n", nlen,
                                s->key, ngx_http_pki_m_le[b], cum);
            }
        }

        v = ngx_http_pki_m_total(s, NGX_HTTP_PKI_M_SUM);

        p = ngx_sprintf(p, "%*s_sum%s %uA.%06uA\n%*s_count%s %uA\n",
                        nlen, s->key, brace ? brace : (u_char *) "",
                        v / 1000000, v % 1000000,
                        nlen, s->key, brace ? brace : (u_char *) "", cum);
    }

    return ngx_http_pki_m_send(r, NGX_HTTP_OK,
                               "text/plain; version=0.0.4; charset=utf-8",
                               buf, p - buf);
}


/* JSON for the dashboard: every series with its summed values */
static ngx_int_t
ngx_http_pki_m_json(ngx_http_request_t *r)
{
    u_char                    *p, *buf;
    size_t                     size;
    ngx_uint_t                 i, b, n, nv;
    ngx_http_pki_m_series_t  **list, *s;

    ngx_http_pki_m_live_gauges();

    list = ngx_http_pki_m_sorted(r->pool, &n);
    if (list == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    size = 256 + n * (2 * NGX_HTTP_PKI_M_KEY + 40 + 16 * 22)
           + NGX_HTTP_PKI_M_RECENT * (NGX_TIME_T_LEN + 2 * NGX_ATOMIC_T_LEN + 6);

    buf = ngx_pnalloc(r->pool, size);
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(buf, "{\"now\":%T,\"start\":%T,\"series\":[",
                    ngx_time(), ngx_http_pki_m_shm->start);

    for (i = 0; i < n; i++) {
        s = list[i];

        p = ngx_sprintf(p, "%s{\"k\":\"", i ? "," : "");
        p = (u_char *) ngx_escape_json(p, s->key, s->len);
        p = ngx_sprintf(p, "\",\"t\":%ui,\"v\":[", (ngx_uint_t) s->kind);

        nv = s->kind == NGX_HTTP_PKI_M_HISTOGRAM ? NGX_HTTP_PKI_M_SUM + 1 : 1;

        for (b = 0; b < nv; b++) {
            p = ngx_sprintf(p, "%s%uA", b ? "," : "",
                            ngx_http_pki_m_total(s, b));
        }

        *p++ = ']';
        *p++ = '}';
    }

    /* the last 5 minutes per second: [time, issued, failed requests] */

    p = ngx_sprintf(p, "],\"recent\":[");

    {
        time_t                    now, t;
        ngx_uint_t                first;
        ngx_http_pki_m_second_t  *sec;

        now = ngx_time();
        first = 1;

        for (t = now - NGX_HTTP_PKI_M_RECENT + 1; t <= now; t++) {
            sec = &ngx_http_pki_m_shm->recent[t % NGX_HTTP_PKI_M_RECENT];

            if ((time_t) sec->time != t) {
                continue;
            }

            p = ngx_sprintf(p, "%s[%T,%uA,%uA]", first ? "" : ",", t,
                            sec->issued, sec->failed);
            first = 0;
        }
    }

    p = ngx_sprintf(p, "]}");

    return ngx_http_pki_m_send(r, NGX_HTTP_OK, "application/json", buf,
                               p - buf);
}


static ngx_int_t
ngx_http_pki_dashboard_handler(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_str_t                   arg;
    ngx_http_pki_m_hist_ctx_t  *ctx;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_pki_read_only(r);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_pki_m_shm == NULL) {
        return ngx_http_pki_m_unavailable(r);
    }

    /* the data behind the page is for the page (same origin): another
     * site's page could make an operator's browser, with its cached
     * credentials, load the pool and Redis with history reads */
    if (r->args.len != 0 && ngx_http_pki_cross_site(r)) {
        return ngx_http_pki_send_plain(r, NGX_HTTP_FORBIDDEN,
                                       &ngx_http_pki_m_cross_text, 0);
    }

    if (ngx_http_arg(r, (u_char *) "format", 6, &arg) == NGX_OK
        && arg.len == 4 && ngx_strncmp(arg.data, "json", 4) == 0)
    {
        return ngx_http_pki_m_json(r);
    }

    if (ngx_http_arg(r, (u_char *) "history", 7, &arg) == NGX_OK) {

        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_pki_m_hist_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (arg.len == 4 && ngx_strncmp(arg.data, "hour", 4) == 0) {
            ctx->hourly = 1;
            ctx->count = 2160;

        } else if (arg.len == 6 && ngx_strncmp(arg.data, "minute", 6) == 0) {
            ctx->count = 2880;

        } else {
            return NGX_HTTP_BAD_REQUEST;
        }

        if (ngx_http_arg(r, (u_char *) "n", 1, &arg) == NGX_OK) {
            rc = ngx_atoi(arg.data, arg.len);
            if (rc <= 0 || (ngx_uint_t) rc > ctx->count) {
                return NGX_HTTP_BAD_REQUEST;
            }
            ctx->count = (unsigned) rc;
        }

        ctx->redis = ngx_http_pki_redis(r);
        if (ctx->redis == NULL) {
            return ngx_http_pki_m_send(r, NGX_HTTP_OK, "application/json",
                                       (u_char *) "{\"buckets\":[]}", 14);
        }

        pki_result_init(&ctx->res);

        rc = ngx_http_pki_post(r, ngx_http_pki_m_hist_work,
                               ngx_http_pki_m_hist_done, ctx);

        if (rc == NGX_OK) {
            return NGX_DONE;
        }

        if (rc == NGX_DECLINED) {
            /* logged (rate-limited) by ngx_http_pki_post() */
            return ngx_http_pki_send_plain(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           &ngx_http_pki_m_busy_text,
                                           NGX_HTTP_PKI_M_RETRY);
        }

        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_pki_m_send(r, NGX_HTTP_OK, "text/html; charset=utf-8",
                               (u_char *) ngx_http_pki_dashboard_html,
                               sizeof(ngx_http_pki_dashboard_html) - 1);
}


static void
ngx_http_pki_m_hist_work(void *data)
{
    ngx_http_pki_m_hist_ctx_t *ctx = data;

    ctx->status = pki_metrics_history(ctx->redis, ctx->hourly, time(NULL),
                                      ctx->count, &ctx->json, &ctx->res);
}


static void
ngx_http_pki_m_hist_done(ngx_http_request_t *r, void *data)
{
    ngx_http_pki_m_hist_ctx_t *ctx = data;

    u_char  *p;
    size_t   len;

    if (ctx->status != PKI_OK || ctx->json == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "pki dashboard: history: %s %s", ctx->res.detail,
                      ctx->res.log);
        free(ctx->json);
        ngx_http_finalize_request(r,
            ngx_http_pki_send_plain(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    &ngx_http_pki_m_history_text,
                                    NGX_HTTP_PKI_M_RETRY));
        return;
    }

    len = ngx_strlen(ctx->json);

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        free(ctx->json);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memcpy(p, ctx->json, len);
    free(ctx->json);

    ngx_http_finalize_request(r,
        ngx_http_pki_m_send(r, NGX_HTTP_OK, "application/json", p, len));
}


/* pki_metrics_zone off: no counters until a reload turns them on */

static ngx_int_t
ngx_http_pki_m_unavailable(ngx_http_request_t *r)
{
    return ngx_http_pki_send_plain(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   &ngx_http_pki_m_off_text,
                                   NGX_HTTP_PKI_M_OFF_RETRY);
}


static ngx_int_t
ngx_http_pki_m_send(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, u_char *body, size_t len)
{
    ngx_int_t         rc;
    ngx_buf_t        *b;
    ngx_chain_t       out;
    ngx_table_elt_t  *h;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    r->headers_out.content_type.data = (u_char *) type;
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-store");

    /* the page fetches only itself: no outside script, style or image */
    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Content-Security-Policy");
    /* frame-ancestors is not covered by default-src: no other site
     * frames the page */
    ngx_str_set(&h->value, "default-src 'self'; script-src 'unsafe-inline'; "
                           "style-src 'unsafe-inline'; img-src 'self' data:; "
                           "frame-ancestors 'none'; base-uri 'none'; "
                           "form-action 'none'");

    if (len == 0) {
        r->header_only = 1;
    }

    /* a body not read is discarded, not parsed as the next request
     * (see ngx_http_pki_send_plain()) */
    ngx_http_pki_body_unwanted(r);

    rc = ngx_http_pki_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = body;
    b->last = body + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* ---- the worker's timer: Redis history, certificate counts, checkpoint ---- */

static void
ngx_http_pki_m_timer(ngx_event_t *ev)
{
    ngx_uint_t                   j, history;
    ngx_thread_pool_t           *tp;
    ngx_http_pki_m_task_t       *t;
    ngx_http_pki_m_main_conf_t  *mmcf;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    mmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_pki_metrics_module);

    ngx_add_timer(ev, mmcf->interval);

    ngx_http_pki_m_live_gauges();

    ngx_http_pki_m_unwritten_log(ev->log);
    ngx_http_pki_m_audit_post();

    if (mmcf->audit != NULL) {
        ngx_http_pki_m_backlog(mmcf->audit);
    }

    if (ngx_http_pki_m_busy) {
        return;
    }

    t = ngx_http_pki_m_task->ctx;

    if (t->pending && ngx_time() - t->now > NGX_HTTP_PKI_M_PENDING) {
        /* Redis may have added it: neither sent again nor given back */
        ngx_http_pki_m_dropped_log(ev->log, t->seq, t->n, NULL, t->now);
        t->pending = 0;
    }

    if (t->pending) {
        /* sent, outcome unknown: the same batch (number, deltas, buckets)
         * again, which Redis adds once; new deltas wait in the zone */
        t->certs = 0;
        t->ncas = 0;
        t->counts_ttl = 0;
        t->adopt = NULL;

    } else {
        ngx_memzero(t, sizeof(ngx_http_pki_m_task_t));
        t->now = ngx_time();
    }

    t->done = 0;

    /* the certificate counts are the fleet's, read by every host: this
     * tick's clock, not that of a batch sent again (up to 5 minutes old) */
    t->tick = ngx_time();

    t->redis = ngx_http_pki_cycle_redis((ngx_cycle_t *) ngx_cycle);
    t->audit = mmcf->audit;

    ngx_http_pki_m_ticks++;

    if (ngx_http_pki_m_ticks >= NGX_HTTP_PKI_M_SLOW_TICKS) {
        ngx_http_pki_m_ticks = 0;
        t->certs = 1;

        /*
         * one count per CA and period for every worker of every host: the
         * result serves the others for a tick less than the period, so
         * each worker's next turn finds it expired and the gauges lag
         * at most a period
         */
        t->counts_ttl = mmcf->interval * (NGX_HTTP_PKI_M_SLOW_TICKS - 1);
    }

    history = ngx_http_pki_m_shm != NULL && t->redis != NULL
              && mmcf->history;

    if (history && !t->pending) {
        ngx_http_pki_m_claim(t);
    }

    if (t->n && !t->pending) {
        t->seq = ++ngx_http_pki_m_seq;
    }

    /* a batch an exited worker left unanswered: sent again too */
    if (history) {
        t->adopt = ngx_http_pki_m_adopt(t, ev->log);
    }

    if (t->certs && t->redis != NULL) {
        for (j = 0; j < NGX_HTTP_PKI_M_MAX_CAS; j++) {
            t->cas[j] = ngx_http_pki_cycle_ca((ngx_cycle_t *) ngx_cycle, j);
            if (t->cas[j] == NULL) {
                break;
            }
        }
        t->ncas = j;
    }

    if (t->n == 0 && t->ncas == 0 && !(t->certs && t->audit)
        && t->adopt == NULL)
    {
        return;
    }

    tp = ngx_http_pki_cycle_thread_pool((ngx_cycle_t *) ngx_cycle);

    if (tp != NULL
        && ngx_http_pki_thread_post(tp, ngx_http_pki_m_task) == NGX_OK)
    {
        ngx_http_pki_m_busy = 1;
        return;
    }

    /* the pool's queue is full: what was claimed goes back, for the next
     * tick, unless it was sent before (it stays pending); an adopted
     * batch is parked again */
    if (!t->pending) {
        ngx_http_pki_m_give_back(t);
    }

    if (t->adopt != NULL) {
        ngx_http_pki_m_unpark(t->adopt, 1);
        t->adopt = NULL;
    }
}


/* The slots whose deltas this worker sends to the history (a bit each):
 * its own, and while there are fewer workers than slots every slot j
 * with j % workers equal to its number.  After a reload to fewer workers
 * (4 -> 2) the slots of the workers gone (2, 3: their counts stay in the
 * kept zone, their old workers may still be finishing requests) are taken
 * by those left (0, 1); a single process takes them all.  Deltas are
 * claimed with a compare-and-set (ngx_http_pki_m_claim): each is taken
 * once, whichever process takes it.  The in-flight gauge of each slot but
 * its own reads 0 (ngx_http_pki_m_live_gauges). */
static ngx_uint_t
ngx_http_pki_m_claims(void)
{
    ngx_uint_t        j, n, mask;
    ngx_core_conf_t  *ccf;

    ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                           ngx_core_module);

    n = 1;

    if (ngx_process == NGX_PROCESS_WORKER && ccf != NULL
        && ccf->worker_processes > 0)
    {
        n = (ngx_uint_t) ccf->worker_processes;
    }

    if (n >= NGX_HTTP_PKI_M_SLOTS) {
        return (ngx_uint_t) 1 << ngx_http_pki_m_slot();
    }

    mask = 0;

    for (j = 0; j < NGX_HTTP_PKI_M_SLOTS; j++) {
        if (j % n == ngx_worker % n) {
            mask |= (ngx_uint_t) 1 << j;
        }
    }

    return mask;
}


/* The deltas of this worker's slots (ngx_http_pki_m_claims) since the
 * history last took them, summed by field into t, each claimed
 * (s->flushed) before it is sent. */
static void
ngx_http_pki_m_claim(ngx_http_pki_m_task_t *t)
{
    char                     *f;
    ngx_uint_t                i, j, k, mask;
    ngx_atomic_uint_t         cur, base;
    ngx_http_pki_m_shm_t     *sh;
    ngx_http_pki_m_series_t  *s;

    sh = ngx_http_pki_m_shm;
    mask = ngx_http_pki_m_claims();

    for (i = 0; i < sh->max; i++) {
        s = &sh->series[i];

        if (s->state != 1 || s->field[0] == '\0') {
            continue;
        }

        f = (char *) s->field;

        for (j = 0; j < NGX_HTTP_PKI_M_SLOTS; j++) {
            if (!(mask & ((ngx_uint_t) 1 << j))) {
                continue;
            }

            cur = s->v[j][0];
            base = s->flushed[j];

            if (cur == base || t->nseries == NGX_HTTP_PKI_M_MAX_FIELDS * 4) {
                continue;
            }

            for (k = 0; k < t->n; k++) {
                if (ngx_strcmp(t->fields[k], f) == 0) {
                    break;
                }
            }

            if (k == NGX_HTTP_PKI_M_MAX_FIELDS
                /* another process took it meanwhile: next time */
                || !ngx_atomic_cmp_set(&s->flushed[j], base, cur))
            {
                continue;
            }

            if (k == t->n) {
                t->fields[k] = f;      /* stable: shm, never removed */
                t->fidx[k] = (uint32_t) i;
                t->n++;
            }

            t->deltas[k] += (long long) (cur - base);
            t->series[t->nseries] = i;
            t->slots[t->nseries] = (u_char) j;
            t->values[t->nseries] = cur - base;
            t->nseries++;
        }
    }
}


/* The deltas a task claimed (s->flushed) and did not put into the
 * history, given back to the next flush of their slots. */
static void
ngx_http_pki_m_give_back(ngx_http_pki_m_task_t *t)
{
    ngx_uint_t                i;
    ngx_http_pki_m_series_t  *s;

    if (ngx_http_pki_m_shm == NULL) {
        return;
    }

    for (i = 0; i < t->nseries; i++) {
        s = &ngx_http_pki_m_shm->series[t->series[i]];
        (void) ngx_atomic_fetch_add(&s->flushed[t->slots[i]],
                                    -(ngx_atomic_int_t) t->values[i]);
    }

    t->nseries = 0;
}


static void
ngx_http_pki_m_batch(ngx_http_pki_m_task_t *t, pki_metrics_batch_t *b)
{
    b->source = (const char *) ngx_http_pki_m_source;
    b->seq = t->seq;
    b->now = t->now;
    b->fields = (const char *const *) t->fields;
    b->deltas = t->deltas;
    b->n = t->n;
}


/* A history batch first sent at time sent, unanswered since and given up
 * after NGX_HTTP_PKI_M_PENDING (Redis may have added it or not): one text
 * for this worker's own batch of n fields (source NULL) and for a batch
 * that the exited worker source parked. */
static void
ngx_http_pki_m_dropped_log(ngx_log_t *log, unsigned long long seq,
    ngx_uint_t n, const u_char *source, time_t sent)
{
    u_char  *p, whose[80];

    if (source != NULL) {
        p = ngx_snprintf(whose, sizeof(whose), "the exited worker %s",
                         source);
    } else {
        p = ngx_snprintf(whose, sizeof(whose), "%ui fields", n);
    }

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "pki metrics: history batch %uL of %*s unanswered since "
                  "%T s: dropped, it may be in the history or not",
                  (uint64_t) seq, (size_t) (p - whose), whose,
                  ngx_time() - sent);
}


/* What a task's answers mean for its batches; 1 if one failed. */
static ngx_uint_t
ngx_http_pki_m_outcome(ngx_http_pki_m_task_t *t, ngx_log_t *log)
{
    ngx_uint_t                failed;
    ngx_http_pki_m_parked_t  *e;

    failed = 0;

    if (t->n && t->flushed == PKI_OK) {
        t->pending = 0;

    } else if (t->n && (t->unknown || t->pending)) {
        /* Redis may have added it (this time or an earlier one): the same
         * batch goes again next tick, added once (pki_metrics_flush) */
        t->pending = 1;
        failed = 1;

    } else if (t->n) {
        /* surely not in the history: given back, for the next flush */
        ngx_http_pki_m_give_back(t);
        failed = 1;
    }

    e = t->adopt;
    t->adopt = NULL;

    if (e == NULL) {
        return failed;
    }

    if (t->aflushed == PKI_OK) {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "pki metrics: history batch %uL of the exited worker "
                      "%s in Redis", (uint64_t) e->seq, e->source);
        ngx_http_pki_m_unpark(e, 0);
        return failed;
    }

    /* parked again, whatever the answer (an earlier sending may have
     * been added): the next look sends it again */
    ngx_http_pki_m_unpark(e, 1);

    return 1;
}


/* Exit: the batch t (sent, no answer) handed to the other workers. */
static void
ngx_http_pki_m_park(ngx_http_pki_m_task_t *t, ngx_log_t *log)
{
    ngx_uint_t                i, k;
    ngx_atomic_uint_t         pid;
    ngx_http_pki_m_parked_t  *e;

    pid = (ngx_atomic_uint_t) ngx_pid;

    for (i = 0; i < NGX_HTTP_PKI_M_PARKED; i++) {
        e = &ngx_http_pki_m_shm->parked[i];

        if (!ngx_atomic_cmp_set(&e->owner, 0, pid)) {
            continue;
        }

        e->taken = (ngx_atomic_uint_t) ngx_time();
        e->filled = 0;
        ngx_cpystrn(e->source, ngx_http_pki_m_source, sizeof(e->source));
        e->seq = t->seq;
        e->now = t->now;
        e->n = t->n;

        for (k = 0; k < t->n; k++) {
            e->field[k] = t->fidx[k];
            e->delta[k] = t->deltas[k];
        }

        ngx_memory_barrier();
        e->filled = 1;
        ngx_http_pki_m_unpark(e, 1);

        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "pki metrics: history batch %uL of %ui fields "
                      "unanswered at exit: left in the zone for the next "
                      "worker to send again",
                      (uint64_t) t->seq, t->n);
        return;
    }

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "pki metrics: history batch %uL of %ui fields "
                  "unanswered at exit and %d others waiting: dropped, it "
                  "may be in the history or not", (uint64_t) t->seq, t->n,
                  NGX_HTTP_PKI_M_PARKED);
}


/* A parked batch for this worker's task to send, taken from the zone (or
 * from a process that died holding it); NULL if there is none. */
static ngx_http_pki_m_parked_t *
ngx_http_pki_m_adopt(ngx_http_pki_m_task_t *t, ngx_log_t *log)
{
    uint32_t                  f;
    ngx_uint_t                i, k;
    ngx_atomic_uint_t         owner, pid;
    ngx_http_pki_m_shm_t     *sh;
    ngx_http_pki_m_parked_t  *e;

    sh = ngx_http_pki_m_shm;
    pid = (ngx_atomic_uint_t) ngx_pid;

    for (i = 0; i < NGX_HTTP_PKI_M_PARKED; i++) {
        e = &sh->parked[i];
        owner = e->owner;

        if (owner == 0 || owner == pid) {
            continue;
        }

        if (owner != NGX_HTTP_PKI_M_HELD
            && (kill((ngx_pid_t) owner, 0) == 0 || ngx_errno != NGX_ESRCH)
            && ngx_time() - (time_t) e->taken < NGX_HTTP_PKI_M_LEASE)
        {
            continue;           /* being filled or sent */
        }

        if (!ngx_atomic_cmp_set(&e->owner, owner, pid)) {
            continue;
        }

        e->taken = (ngx_atomic_uint_t) ngx_time();

        if (!e->filled || e->n == 0 || e->n > NGX_HTTP_PKI_M_MAX_FIELDS) {
            ngx_http_pki_m_unpark(e, 0);    /* its filler died */
            continue;
        }

        if (ngx_time() - e->now > NGX_HTTP_PKI_M_PENDING) {
            ngx_http_pki_m_dropped_log(log, e->seq, 0, e->source, e->now);
            ngx_http_pki_m_unpark(e, 0);
            continue;
        }

        for (k = 0; k < e->n; k++) {
            f = e->field[k];

            if (f >= sh->max || sh->series[f].state != 1
                || sh->series[f].field[0] == '\0')
            {
                break;
            }

            t->afields[k] = (char *) sh->series[f].field;
        }

        if (k < e->n) {
            ngx_http_pki_m_unpark(e, 0);    /* not of this zone's making */
            continue;
        }

        return e;
    }

    return NULL;
}


/* A parked batch this process holds: freed (keep 0), or parked again for
 * whichever worker looks next (keep 1). */
static void
ngx_http_pki_m_unpark(ngx_http_pki_m_parked_t *e, ngx_uint_t keep)
{
    ngx_atomic_uint_t  pid;

    pid = (ngx_atomic_uint_t) ngx_pid;

    if (!keep) {
        e->filled = 0;
    }

    ngx_memory_barrier();
    (void) ngx_atomic_cmp_set(&e->owner, pid,
                              keep ? NGX_HTTP_PKI_M_HELD : 0);
}


/*
 * Worker exit (after the pool threads are gone: nothing runs the task
 * meanwhile).  The ticks stopped when the worker began to exit, so the
 * batch still unanswered and the deltas since the last tick would be lost
 * with it.  They go now, each on a connection of its own whose every wait
 * is NGX_HTTP_PKI_M_EXIT_MSEC (nginx waits for the exit: half a second at
 * most, and a quick Redis takes a millisecond).  What may be in Redis
 * already and did not go is parked in the zone, sent again under this
 * worker's name and number by the next worker to look (a reload's new
 * worker, another one): Redis still adds it once.  What surely is not in
 * Redis stays in the slot, for the next worker that takes the slot; the
 * deltas after a batch that did not go stay there too (its number is
 * this worker's last: one parked batch per name, sent in any order).
 * With nginx stopped, the zone goes too: only what went now is kept.
 * Both flushes together take NGX_HTTP_PKI_M_EXIT_TOTAL at most (the
 * audit log's exit went before them), and a Redis named by a host name
 * gets neither (its lookup has no timeout): as if it did not answer.
 */
static void
ngx_http_pki_m_history_exit(ngx_cycle_t *cycle)
{
    int                          unknown, wait;
    ngx_msec_t                   start;
    pki_redis_t                 *redis;
    pki_result_t                 res;
    pki_status_t                 st;
    pki_metrics_batch_t          b;
    ngx_http_pki_m_task_t       *t;
    ngx_http_pki_m_main_conf_t  *mmcf;

    if (ngx_http_pki_m_task == NULL) {
        return;
    }

    t = ngx_http_pki_m_task->ctx;
    ngx_http_pki_m_task = NULL;             /* once */

    if (ngx_http_pki_m_busy) {
        ngx_http_pki_m_busy = 0;

        ngx_memory_barrier();

        if (t->done) {
            (void) ngx_http_pki_m_outcome(t, cycle->log);

        } else {
            /* the task did not come back (a thread still running it, or
             * it never ran): its batch may be in Redis or not, and sending
             * it again is safe */
            if (t->n) {
                t->pending = 1;
            }

            if (t->adopt != NULL) {
                ngx_http_pki_m_unpark(t->adopt, 1);
                t->adopt = NULL;
            }
        }
    }

    mmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_pki_metrics_module);
    redis = ngx_http_pki_cycle_redis(cycle);

    if (ngx_http_pki_m_shm == NULL || mmcf == NULL || !mmcf->history
        || redis == NULL)
    {
        return;
    }

    ngx_time_update();
    start = ngx_current_msec;

    if (!pki_redis_literal(redis)) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "pki metrics: pki_redis names a host, not looked up "
                      "at exit: the history's last counts left in the "
                      "zone for the next worker");
        if (t->pending) {
            ngx_http_pki_m_park(t, cycle->log);
        }
        return;
    }

    if (t->pending && ngx_time() - t->now > NGX_HTTP_PKI_M_PENDING) {
        ngx_http_pki_m_dropped_log(cycle->log, t->seq, t->n, NULL, t->now);
        t->pending = 0;
    }

    if (t->pending) {
        ngx_http_pki_m_batch(t, &b);
        pki_result_init(&res);

        if (pki_metrics_flush_within(redis, &b,
                                     ngx_http_pki_m_exit_wait(start), NULL,
                                     &res)
            != PKI_OK)
        {
            ngx_http_pki_m_park(t, cycle->log);
            return;
        }
    }

    wait = ngx_http_pki_m_exit_wait(start);

    if (wait < NGX_HTTP_PKI_M_EXIT_MIN) {
        return;                 /* a slow Redis: the slots keep the rest */
    }

    ngx_memzero(t, sizeof(ngx_http_pki_m_task_t));
    t->now = ngx_time();

    ngx_http_pki_m_claim(t);

    if (t->n == 0) {
        return;
    }

    t->seq = ++ngx_http_pki_m_seq;

    ngx_http_pki_m_batch(t, &b);
    pki_result_init(&res);
    st = pki_metrics_flush_within(redis, &b, wait, &unknown, &res);

    if (st == PKI_OK) {
        return;
    }

    if (unknown) {
        ngx_http_pki_m_park(t, cycle->log);

    } else {
        ngx_http_pki_m_give_back(t);
    }
}


/* An exit flush's every wait (connect, AUTH, SELECT, the script: four
 * at most): a quarter of what is left of NGX_HTTP_PKI_M_EXIT_TOTAL since
 * start, NGX_HTTP_PKI_M_EXIT_MSEC at most. */
static int
ngx_http_pki_m_exit_wait(ngx_msec_t start)
{
    ngx_msec_t  spent;

    ngx_time_update();
    spent = ngx_current_msec - start;

    if (spent >= NGX_HTTP_PKI_M_EXIT_TOTAL) {
        return 0;
    }

    return (int) ngx_min(NGX_HTTP_PKI_M_EXIT_MSEC,
                         (NGX_HTTP_PKI_M_EXIT_TOTAL - spent) / 4);
}


static void
ngx_http_pki_m_task_handler(void *data, ngx_log_t *log)
{
    ngx_http_pki_m_task_t *t = data;

    ngx_uint_t           i;
    pki_result_t         res;
    pki_metrics_batch_t  b;

    (void) log;

    ngx_http_pki_thread_enter();

    t->flushed = PKI_OK;
    t->unknown = 0;

    if (t->n) {
        ngx_http_pki_m_batch(t, &b);

        pki_result_init(&res);
        t->flushed = pki_metrics_flush(t->redis, &b, &t->unknown, &res);
    }

    if (t->adopt != NULL) {
        b.source = (const char *) t->adopt->source;
        b.seq = t->adopt->seq;
        b.now = t->adopt->now;
        b.fields = (const char *const *) t->afields;
        b.deltas = t->adopt->delta;
        b.n = t->adopt->n;

        pki_result_init(&res);
        t->aflushed = pki_metrics_flush(t->redis, &b, &t->aunknown, &res);
    }

    for (i = 0; i < t->ncas; i++) {
        pki_result_init(&res);
        t->counted[i] = pki_metrics_cert_counts(t->redis,
                                                pki_ca_name(t->cas[i]),
                                                t->tick, t->counts_ttl,
                                                t->counts[i], &res);
    }

    if (t->certs && t->audit) {
        pki_result_init(&res);
        (void) pki_audit_checkpoint(t->audit, &res);
    }

    ngx_memory_barrier();
    t->done = 1;
}


static void
ngx_http_pki_m_task_done(ngx_event_t *ev)
{
    size_t                    len;
    long long                 v;
    ngx_uint_t                i, k;
    const char               *labels[6], *state[4];
    u_char                    key[NGX_HTTP_PKI_M_KEY];
    ngx_thread_task_t        *task;
    ngx_http_pki_m_task_t    *t;
    ngx_http_pki_m_series_t  *s;

    task = ev->data;
    t = task->ctx;

    ngx_http_pki_m_busy = 0;

    if (ngx_http_pki_m_outcome(t, ev->log)) {
        s = ngx_http_pki_m_series((u_char *) "pki_metrics_flush_errors_total",
                                  sizeof("pki_metrics_flush_errors_total")
                                  - 1, NGX_HTTP_PKI_M_COUNTER, NULL);
        ngx_http_pki_m_add(s, 0, 1);
    }

    state[0] = "valid";
    state[1] = "revoked";
    state[2] = "expiring_7d";
    state[3] = "expiring_30d";

    for (i = 0; i < t->ncas; i++) {
        if (t->counted[i] != PKI_OK) {
            continue;
        }

        for (k = 0; k < 4; k++) {
            labels[0] = "ca";
            labels[1] = pki_ca_name(t->cas[i]);
            labels[2] = "state";
            labels[3] = state[k];
            labels[4] = NULL;

            len = ngx_http_pki_m_key(key, sizeof(key), "pki_certificates",
                                     labels);
            s = ngx_http_pki_m_series(key, len, NGX_HTTP_PKI_M_GAUGE, NULL);

            /* valid: unexpired and not revoked; never below 0 in an
             * unsigned gauge (the counts are not taken at one instant:
             * HSCAN may see a serial twice, a revocation may come
             * between the ZCOUNT and the walk) */
            if (k == 0) {
                v = t->counts[i][0] > t->counts[i][1]
                    ? t->counts[i][0] - t->counts[i][1] : 0;

            } else {
                v = t->counts[i][k] > 0 ? t->counts[i][k] : 0;
            }

            ngx_http_pki_m_set(s, 0, (ngx_atomic_int_t) v);
        }
    }
}
