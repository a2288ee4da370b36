
/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * ngx_http_ocsp_module: OCSP responder (RFC 6960; RFC 5019 for GET).
 *
 *   location /ocsp {
 *       ocsp_responder issuing [other-ca ...];
 *       ocsp_responder_unknown unknown | revoked;     # default unknown
 *       ocsp_responder_next_update 1h;                # 0: no nextUpdate
 *       ocsp_responder_signer issuing ocsp.pem ocsp.key;  # delegated
 *       ocsp_responder_cache zone=ocsp:16m;           # default off
 *       ocsp_responder_revgen_check 1s;
 *       ocsp_responder_revgen_stale 3s;               # 0: no stale answers
 *       ocsp_responder_revgen_outage 60s;
 *       ocsp_responder_cache_header off;              # X-OCSP-Cache
 *   }
 *
 * ocsp_responder_signer CA CERT KEY (KEY: a PEM file or a pkcs11: URI in a
 * pki_key_vault token) names a delegated responder for one of
 * the CAs (id-kp-OCSPSigning certificate issued by that CA; checked at
 * configuration time).  Several for one CA: the first one valid at the
 * time of the answer signs (an expiring one and its replacement).
 *
 * POST <location> with an application/ocsp-request body (another content
 * type is answered with the OCSP status malformedRequest, not an HTTP
 * error, so that OCSP clients see a proper OCSP answer), or
 * GET <location>/<base64 of the DER request>, read from the raw request
 * URI (merge_slashes would corrupt "//") and percent-decoded.  Both run
 * pki_ocsp_handle() in the pki thread pool (Redis lookup, signature).
 * Successful GET responses carry Cache-Control max-age up to nextUpdate,
 * ETag, Last-Modified (thisUpdate) and Expires (nextUpdate, RFC 5019 6.2).
 *
 * Response cache (ocsp_responder_cache zone=NAME:SIZE).  Responses to
 * requests WITHOUT a nonce are kept in a shared-memory zone (all workers):
 * an rbtree keyed by pki_ocsp_cache_key() (SHA-256 of the request's
 * CertIDs, salted with a digest of what the location's answers depend on
 * (ngx_http_ocsp_conf_digest) and the Redis namespace, so the POST and the
 * GET form of a request share one entry, and a reload keeps the entries of
 * a location it did not change), the value being the response DER
 * with thisUpdate/nextUpdate, ETag and the revocation generation it was
 * signed under.  A hit is answered on the event loop: no thread hop, no
 * Redis.  The key needs nothing about which CA answered: for a given
 * location the answer follows from the CertIDs and the records (a CertID
 * naming several of the location's CAs, same subject and key, is looked
 * up under all of them), and the revgens of all those CAs are in the view
 * below, so a revocation under any of them outdates the entry.  Requests
 * with a critical extension the engine does not understand get no key
 * (they are answered malformedRequest).
 *
 * Revocation generation.  Every revocation moves <ns>{ca:CA}:revgen on
 * to a value it never held (Redis's clock in microseconds, or one more:
 * PKI_LUA_BUMP in core/redis.c).  The zone keeps one "view": the sum of
 * the revgens of all the CAs of the locations using the zone (each only
 * grows, so an equal sum means nothing was revoked), and when it was last
 * confirmed (shared by every worker).  A view that goes down means the
 * store went back (a restore from a backup, a failover that lost writes,
 * pki_redis pointed at another server): every entry is dropped, and an
 * answer read before that is not stored, so none comes back to life when
 * later revocations bring the sum up to its generation again.  Only the
 * refresh (below) takes the view down: misses read the revgens in every
 * worker's pool threads and come back in any order, so a lower sum from a
 * miss may be one read just before a revocation that a miss posted
 * earlier saw already.
 * An entry is served only while its generation equals the view and now <
 * nextUpdate - margin (margin: a tenth of the validity, at most 60 s).  When
 * the view is older than ocsp_responder_revgen_check (default 1 s), the
 * first request claims the refresh.
 *
 * The view is tagged with the CA set it sums over (a 64-bit digest of the
 * CAs, sorted by name, and of the Redis namespace), and the zone survives
 * reloads: the workers of the old configuration still finishing their
 * requests share it with the new ones.  Sums over different sets are not
 * comparable (after a CA is added, the old set's sum can equal an entry's
 * tag while a certificate of the new CA was revoked since), so a worker
 * whose set differs from the view's neither uses the view nor refreshes
 * it: its requests read the revgens in the pool (as misses).  When such a
 * read comes back, the worker takes the view over (set and sum) only if
 * its configuration is newer than the newest one seen over the view's set
 * (the zone's epoch, counted per cycle): the new workers take the view
 * from the old ones, never the other way round.  The entries need no such
 * tag: their keys are salted with the set (below).
 *
 * Stale-while-revalidate (ocsp_responder_revgen_stale, default 3 s): the
 * refresh is claimed ahead, by the first request that sees the view older
 * than half of revgen_check; that request posts a detached refresh task
 * (it only reads the revgens) and is answered from the cache like every
 * other one.  While Redis answers (and answered the last refresh), the
 * view is thus confirmed before it reaches revgen_check and a revocation
 * is seen within revgen_check, as without this mode.  A view older than
 * revgen_check is still served only while refreshes are going on and only
 * up to revgen_check + revgen_stale (its age counts from the start of the
 * read that last confirmed it).
 * The refresh task does not wait its turn behind the uncached tasks in
 * the pool's queue: the first OCSP task to finish its work reads it
 * (ngx_http_ocsp_refresh()).
 * Refreshes are going on when one is in flight, one came back less than
 * revgen_check ago (Redis slow, or the pool saturated), or the last one
 * failed (Redis failing, or stalled past its timeout: a failed refresh
 * confirms the view as of its start without moving sh->read_ok, so
 * sh->checked != sh->read_ok says so).  Otherwise (an idle spell after a
 * refresh that succeeded, or past that bound) the request goes to the
 * thread pool and reads the revgens itself (as a miss does).  So during a
 * Redis stall no cached answer waits for Redis, also when the requests
 * come further apart than revgen_check (each is answered from the cache
 * and posts the next refresh), unless they come revgen_check +
 * revgen_stale or more apart.
 *
 * What "seen within" means when reads fail: a view is served only while
 * the read that last confirmed it started less than revgen_check +
 * revgen_stale ago, and a failed read confirms it without reading.  So an
 * answer given at time t shows every revocation made before t -
 * (revgen_check + revgen_stale), unless a read of the revgens that this
 * host started after the revocation failed; it then shows it once the
 * last such failed read started revgen_check + revgen_stale before t, or
 * once a successful read started after that one came back, if sooner.
 * While Redis answers, no read fails: the bound is revgen_check +
 * revgen_stale (revgen_check as above once a refresh succeeded).  When
 * Redis fails and recovers, it counts from the start of the last failed
 * read, which is before Redis answered again.  Meanwhile a cached answer
 * may still carry the older status, but none is served once the last
 * successful read is revgen_outage old (below).
 *
 * revgen_stale 0: the claiming request goes to the thread pool, where the
 * task reads the revgens (pki_record_revgen, before the record lookups, so a
 * response is never tagged newer than what it saw) and signs; the other
 * requests keep using the view for at most 200 ms more, then go to the pool
 * too: a revocation is seen within revgen_check (+ 200 ms under a stuck
 * refresh), but a Redis stall slows cached answers down to the Redis
 * timeout.
 *
 * Every miss (and every refresh) reads the revgens too; its response is
 * stored tagged with the generation read.  After an idle spell longer than
 * revgen_check + revgen_stale the first request is thus answered fresh (it
 * carries the refresh); under load the refresh is one Redis round trip per
 * revgen_check per zone.
 *
 * Redis down or stalled past its timeout: the refresh fails and the view
 * is kept and confirmed, so cached responses are served until nextUpdate -
 * margin; a request whose task answers tryLater is given the cached
 * response instead while now < nextUpdate (never a good beyond it); an
 * uncached request gets tryLater.  But only for a while: no revocation
 * can be written through this host meanwhile, but other hosts sharing the
 * Redis (the ones that still reach it) can revoke, and this host cannot
 * see it.  So no cached response is served, by either path, once the last
 * successful read of the revgens (sh->read_ok, when it started) is
 * ocsp_responder_revgen_outage (default 60 s, at least revgen_check) or
 * more ago: such requests go to the pool, and with Redis still out of
 * reach they get tryLater (RFC 6960 2.3), not a good that may be stale.
 * The first successful read serves the entries again (the view's
 * generation unchanged) or outdates them.  Requests with a nonce never
 * read or fill the cache.
 *
 * A signing key whose token is hung (pki_ocsp_hung()): a request not
 * answered from the cache above is never signed.  With an entry under its
 * key, the view being due for a read (or this request carrying the
 * refresh), it reads the revgens alone in a pool thread and is answered
 * from the cache after that read, within the bounds above; otherwise
 * tryLater, and a refresh it claimed is posted detached rather than
 * dropped (ngx_http_ocsp_hung()).
 *
 * Memory is bounded by the zone: when the slab is full, the least recently
 * used entries are evicted (expired or outdated ones are removed on
 * lookup).  ocsp_responder_cache_header on adds "X-OCSP-Cache: HIT|MISS"
 * (for tests and debugging).
 *
 * Needs ngx_http_pki_module loaded first (load_module order).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "ngx_http_pki_module.h"


#define NGX_HTTP_OCSP_RETRY_AFTER  5
#define NGX_HTTP_OCSP_GRACE        200      /* ms: see the comment above */
#define NGX_HTTP_OCSP_STUCK        5000     /* ms: a refresh lost         */
#define NGX_HTTP_OCSP_MAX_ENTRY    16384    /* bytes of response DER      */
#define NGX_HTTP_OCSP_NOTE_EVERY   10       /* s: setup errors, see send  */
#define NGX_HTTP_OCSP_NS_MAX       64       /* of a Redis namespace (core)*/


typedef struct {
    ngx_rbtree_t               rbtree;
    ngx_rbtree_node_t          sentinel;
    ngx_queue_t                lru;
    uint64_t                   gen;          /* the view               */
    uint64_t                   set;          /* its CA set, see run()  */
    ngx_uint_t                 set_epoch;    /* newest cycle over set  */
    ngx_msec_t                 checked;      /* view confirmed at      */
    ngx_msec_t                 refreshing;   /* refresh claimed at, 0  */
    ngx_msec_t                 active;       /* a refresh claimed or   */
                                             /* back at (stale mode)   */
    ngx_msec_t                 read_ok;      /* last good read from    */
    ngx_uint_t                 epoch;
} ngx_http_ocsp_shctx_t;


typedef struct {
    ngx_http_ocsp_shctx_t     *sh;
    ngx_slab_pool_t           *shpool;
    ngx_array_t               *cas;          /* pki_ca_t *, all users' */
    ngx_cycle_t               *cycle;        /* its pki_redis          */
    ngx_uint_t                 epoch;        /* grows with each cycle  */
    u_char                     cas_digest[32];  /* of cas, see run() */
    uint64_t                   set;          /* from cas_digest        */
} ngx_http_ocsp_zone_t;


typedef struct {
    ngx_rbtree_node_t          node;
    ngx_queue_t                queue;
    u_char                     key[PKI_OCSP_KEY_LEN];
    uint64_t                   gen;
    time_t                     this_update;
    time_t                     next_update;
    time_t                     valid_until;
    u_char                     etag[40];
    size_t                     len;
    u_char                     data[1];
} ngx_http_ocsp_node_t;


typedef struct {
    ngx_array_t               *cas;          /* pki_ca_t * */
    ngx_array_t               *signers;      /* pki_ocsp_signer_t */
    ngx_uint_t                 unknown;
    time_t                     next_update;
    ngx_shm_zone_t            *cache;
    ngx_msec_t                 revgen_check;
    ngx_msec_t                 revgen_stale;
    ngx_msec_t                 revgen_outage;
    ngx_flag_t                 cache_header;
    u_char                     digest[32];   /* what answers depend on */
} ngx_http_ocsp_loc_conf_t;


/* a detached revgen refresh (stale-while-revalidate) */
typedef struct {
    ngx_http_ocsp_zone_t      *zone;
    pki_redis_t               *redis;
    ngx_msec_t                 claimed;      /* sh->refreshing value   */
    ngx_msec_t                 at;           /* its read started       */
    uint64_t                   gen;
    ngx_uint_t                 ok;
    unsigned                   slot:1;       /* it is in the slot      */
    unsigned                   carried:1;    /* its task read the slot */
} ngx_http_ocsp_refresh_t;


/*
 * The refresh of this process waiting for a pool thread (see
 * ngx_http_ocsp_refresh()): the first OCSP task to finish its work in a
 * thread reads it, not only its own detached task.  FREE -> POSTED and
 * READ -> FREE on the event loop, POSTED -> READ by that thread, which
 * then writes at, gen and ok; its task's done handler (event loop)
 * applies them.
 */

#define NGX_HTTP_OCSP_SLOT_FREE    0
#define NGX_HTTP_OCSP_SLOT_POSTED  1
#define NGX_HTTP_OCSP_SLOT_READ    2

typedef struct {
    ngx_atomic_t               state;
    ngx_http_ocsp_zone_t      *zone;
    pki_redis_t               *redis;
    ngx_msec_t                 claimed;
    ngx_msec_t                 at;
    uint64_t                   gen;
    ngx_uint_t                 ok;
} ngx_http_ocsp_slot_t;


typedef struct {
    ngx_str_t                  file;
    ngx_uint_t                 line;
} ngx_http_ocsp_main_conf_t;


typedef struct {
    pki_ocsp_conf_t            conf;
    pki_ocsp_req_t             req;
    pki_ocsp_resp_t            resp;
    ngx_uint_t                 get;

    ngx_http_ocsp_zone_t      *zone;         /* cache candidate if set */
    pki_redis_t               *redis;
    u_char                     key[PKI_OCSP_KEY_LEN];
    uint64_t                   read_gen;
    ngx_msec_t                 started;
    ngx_msec_t                 claimed;      /* sh->refreshing, refresh */
    unsigned                   refresh:1;
    unsigned                   gen_ok:1;
    unsigned                   hit:1;
    unsigned                   hung:1;       /* reads the revgens only */
    unsigned                   carried:1;    /* read the slot's refresh */

    u_char                    *body;         /* a cached answer        */
    size_t                     body_len;
    time_t                     this_update;
    time_t                     next_update;
    u_char                     etag[41];
} ngx_http_ocsp_ctx_t;


static ngx_int_t ngx_http_ocsp_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_ocsp_get_arg(ngx_http_request_t *r,
    ngx_http_ocsp_ctx_t *ctx);
static void ngx_http_ocsp_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_ocsp_too_large(ngx_http_request_t *r,
    ngx_http_ocsp_ctx_t *ctx);
static ngx_int_t ngx_http_ocsp_shed(ngx_http_request_t *r,
    ngx_http_ocsp_ctx_t *ctx, const char *why);
static void ngx_http_ocsp_run(ngx_http_request_t *r,
    ngx_http_ocsp_ctx_t *ctx);
static void ngx_http_ocsp_work(void *data);
static ngx_int_t ngx_http_ocsp_hung(ngx_http_request_t *r,
    ngx_http_ocsp_ctx_t *ctx);
static void ngx_http_ocsp_refresh(ngx_http_request_t *r,
    ngx_http_ocsp_zone_t *zone, pki_redis_t *redis, ngx_msec_t claimed);
static ngx_int_t ngx_http_ocsp_zone_digest(ngx_http_ocsp_zone_t *zone);
static ngx_uint_t ngx_http_ocsp_read_gen(ngx_http_ocsp_zone_t *zone,
    pki_redis_t *redis, uint64_t *gen);
static void ngx_http_ocsp_view_update(ngx_http_ocsp_zone_t *zone,
    ngx_uint_t ok, uint64_t gen, ngx_msec_t at, ngx_uint_t confirm);
static ngx_uint_t ngx_http_ocsp_carry(void);
static void ngx_http_ocsp_carried(void);
static void ngx_http_ocsp_refresh_work(void *data);
static void ngx_http_ocsp_refresh_done(void *data);
static void ngx_http_ocsp_done(ngx_http_request_t *r, void *data);
static ngx_int_t ngx_http_ocsp_send(ngx_http_request_t *r,
    ngx_http_ocsp_ctx_t *ctx);
static ngx_int_t ngx_http_ocsp_output(ngx_http_request_t *r,
    ngx_http_ocsp_ctx_t *ctx, u_char *body, size_t len, ngx_uint_t cacheable,
    const char *cache_state);
static ngx_http_ocsp_node_t *ngx_http_ocsp_cache_find(
    ngx_http_ocsp_zone_t *zone, u_char *key);
static ngx_int_t ngx_http_ocsp_cache_lookup(ngx_http_request_t *r,
    ngx_http_ocsp_ctx_t *ctx, ngx_uint_t strict);
static void ngx_http_ocsp_cache_store(ngx_http_ocsp_ctx_t *ctx);
static void ngx_http_ocsp_cache_delete(ngx_http_ocsp_zone_t *zone,
    ngx_http_ocsp_node_t *n);
static void ngx_http_ocsp_cache_drop(ngx_http_ocsp_zone_t *zone);
static void ngx_http_ocsp_rbtree_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_int_t ngx_http_ocsp_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static char *ngx_http_ocsp_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

static void *ngx_http_ocsp_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_ocsp_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ocsp_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_ocsp_init(ngx_conf_t *cf);
static char *ngx_http_ocsp_responder(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ocsp_signer(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void ngx_http_ocsp_signer_cleanup(void *data);


static ngx_conf_enum_t  ngx_http_ocsp_unknown_modes[] = {
    { ngx_string("unknown"), 0 },
    { ngx_string("revoked"), 1 },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_ocsp_commands[] = {

    { ngx_string("ocsp_responder"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_ocsp_responder,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ocsp_responder_unknown"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ocsp_loc_conf_t, unknown),
      &ngx_http_ocsp_unknown_modes },

    { ngx_string("ocsp_responder_next_update"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ocsp_loc_conf_t, next_update),
      NULL },

    { ngx_string("ocsp_responder_signer"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE3,
      ngx_http_ocsp_signer,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ocsp_responder_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_ocsp_cache,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ocsp_responder_revgen_check"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ocsp_loc_conf_t, revgen_check),
      NULL },

    { ngx_string("ocsp_responder_revgen_stale"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ocsp_loc_conf_t, revgen_stale),
      NULL },

    { ngx_string("ocsp_responder_revgen_outage"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ocsp_loc_conf_t, revgen_outage),
      NULL },

    { ngx_string("ocsp_responder_cache_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ocsp_loc_conf_t, cache_header),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_ocsp_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_ocsp_init,                    /* postconfiguration */

    ngx_http_ocsp_create_main_conf,        /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ocsp_create_loc_conf,         /* create location configuration */
    ngx_http_ocsp_merge_loc_conf           /* merge location configuration */
};


ngx_module_t  ngx_http_ocsp_module = {
    NGX_MODULE_V1,
    &ngx_http_ocsp_module_ctx,             /* module context */
    ngx_http_ocsp_commands,                /* module directives */
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


static time_t     ngx_http_ocsp_noted;
static time_t     ngx_http_ocsp_ended_noted;

static ngx_http_ocsp_slot_t  ngx_http_ocsp_slot;

static ngx_str_t  ngx_http_ocsp_method = ngx_string("method not allowed\n");


static ngx_int_t
ngx_http_ocsp_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_http_ocsp_ctx_t       *ctx;
    ngx_http_ocsp_loc_conf_t  *olcf;

    olcf = ngx_http_get_module_loc_conf(r, ngx_http_ocsp_module);

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_POST))) {
        ngx_http_pki_body_unwanted(r);

        if (ngx_http_pki_add_header(r, "Allow",
                                    (u_char *) "GET, HEAD, POST", 15)
            == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_pki_send_plain(r, NGX_HTTP_NOT_ALLOWED,
                                       &ngx_http_ocsp_method, 0);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_ocsp_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->conf.cas = olcf->cas->elts;
    ctx->conf.ncas = olcf->cas->nelts;
    ctx->conf.redis = ngx_http_pki_redis(r);
    ctx->conf.unknown_revoked = olcf->unknown ? 1 : 0;
    ctx->conf.next_update = (long) olcf->next_update;

    if (olcf->signers) {
        ctx->conf.signers = olcf->signers->elts;
        ctx->conf.nsigners = olcf->signers->nelts;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_ocsp_module);

    /* HEAD: the GET's answer without its body (RFC 9110 9.3.2; nginx
     * leaves the body out), for caches and monitors probing the URL */
    if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {
        ctx->get = 1;
        ctx->req.method = "GET";

        ngx_http_pki_body_unwanted(r);

        rc = ngx_http_ocsp_get_arg(r, ctx);

        if (rc == NGX_HTTP_REQUEST_URI_TOO_LARGE) {
            /* as a body over the cap: malformedRequest, not HTML 414 */
            return ngx_http_ocsp_too_large(r, ctx);
        }

        if (rc != NGX_OK) {
            return rc;
        }

        r->main->count++;
        ngx_http_ocsp_run(r, ctx);
        return NGX_DONE;
    }

    ctx->req.method = "POST";

    rc = ngx_http_pki_read_body(r, PKI_OCSP_MAX_BODY,
                                ngx_http_ocsp_body_handler);

    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        ngx_http_pki_body_refused(r, 0);
        return ngx_http_ocsp_too_large(r, ctx);
    }

    if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        /* pki_body_memory is used up: nothing read; counted and logged
         * (rate-limited) by the pki module */
        ngx_http_pki_body_refused(r, 0);
        return ngx_http_ocsp_shed(r, ctx, "busy, retry later");
    }

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/* The base64 request of a GET: what follows "<location>/" in the raw URI,
 * percent-decoded.  After a rewrite (the raw URI is no longer the one
 * that reached this location) it is read from the rewritten URI, which
 * nginx decoded already (base64 has no '%': decoding it again is
 * harmless; a "//" merged by merge_slashes is lost, as for any URI).  An
 * empty or undecodable one stays empty (the engine answers
 * malformedRequest). */

static ngx_int_t
ngx_http_ocsp_get_arg(ngx_http_request_t *r, ngx_http_ocsp_ctx_t *ctx)
{
    u_char                    *p, *end, *dst;
    ssize_t                    n;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (r->valid_unparsed_uri) {
        p = r->unparsed_uri.data;
        end = p + r->unparsed_uri.len;

        if (r->args_start && r->args_start > p && r->args_start <= end) {
            end = r->args_start - 1;            /* the '?' */
        }

    } else {
        p = r->uri.data;
        end = p + r->uri.len;
    }

    if ((size_t) (end - p) < clcf->name.len
        || ngx_strncmp(p, clcf->name.data, clcf->name.len) != 0)
    {
        return NGX_OK;
    }

    p += clcf->name.len;

    if (p < end && *p == '/') {
        p++;

    } else if (clcf->name.len == 0 || clcf->name.data[clcf->name.len - 1]
                                      != '/')
    {
        return NGX_OK;
    }

    /* "/ocsp//MEow...": a client that appends a slash to an AIA URL that
     * ends in one; a DER OCSPRequest's base64 starts with 'M', never '/' */
    while (p < end && *p == '/') {
        p++;
    }

    if ((size_t) (end - p) > 4 * PKI_OCSP_MAX_BODY) {
        return NGX_HTTP_REQUEST_URI_TOO_LARGE;
    }

    dst = ngx_pnalloc(r->pool, end - p + 1);
    if (dst == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->req.body = dst;

    /* a broken escape: no request (malformedRequest) */
    n = ngx_http_pki_unescape(dst, p, end - p);
    ctx->req.body_len = n < 0 ? 0 : (size_t) n;

    return NGX_OK;
}


static void
ngx_http_ocsp_body_handler(ngx_http_request_t *r)
{
    ngx_int_t             rc;
    ngx_str_t             body;
    ngx_http_ocsp_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ocsp_module);

    rc = ngx_http_pki_request_body(r, PKI_OCSP_MAX_BODY, &body);
    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        /* over the cap after the first read: the body filter ended it and
         * the connection is not kept */
        ngx_http_finalize_request(r, ngx_http_ocsp_too_large(r, ctx));
        return;
    }

    if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        /* the body would have gone over pki_body_memory: ended there */
        ngx_http_finalize_request(r,
            ngx_http_ocsp_shed(r, ctx, "busy, retry later"));
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    ctx->req.body = body.data;
    ctx->req.body_len = body.len;

    if (r->headers_in.content_type) {
        ctx->req.content_type = (char *) ngx_pnalloc(r->pool,
                                    r->headers_in.content_type->value.len + 1);
        if (ctx->req.content_type == NULL) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        ngx_cpystrn((u_char *) ctx->req.content_type,
                    r->headers_in.content_type->value.data,
                    r->headers_in.content_type->value.len + 1);
    }

    ngx_http_ocsp_run(r, ctx);
}


/* A body over the cap is not a request: the OCSP status malformedRequest
 * (RFC 6960 4.2.1), as for any other request that cannot be parsed, not
 * nginx's HTML 413. */

static ngx_int_t
ngx_http_ocsp_too_large(ngx_http_request_t *r, ngx_http_ocsp_ctx_t *ctx)
{
    /* OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED (1) } */
    static u_char  malformed[] = { 0x30, 0x03, 0x0a, 0x01, 0x01 };

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "ocsp: request from %V refused: %s larger than %uz "
                  "bytes", &r->connection->addr_text,
                  ctx->get ? "GET request (base64)" : "body",
                  ctx->get ? (size_t) 4 * PKI_OCSP_MAX_BODY
                           : ngx_http_pki_body_max(r, PKI_OCSP_MAX_BODY));

    return ngx_http_ocsp_output(r, ctx, malformed, sizeof(malformed), 0,
                                NULL);
}


/* A request shed for load (the thread pool's queue or pki_body_memory is
 * full, logged by the pki module) or because its signing key's token is
 * hung (logged by the pki module's watchdog): the OCSP status tryLater
 * (RFC 6960 4.2.1) that a relying party understands, not an HTTP 503 it
 * would take for a broken responder.  Never cached; Retry-After says
 * when.  why: the reason the metrics keep. */

static ngx_int_t
ngx_http_ocsp_shed(ngx_http_request_t *r, ngx_http_ocsp_ctx_t *ctx,
    const char *why)
{
    u_char  *p;

    /* OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED (3) } */
    static u_char  try_later[] = { 0x30, 0x03, 0x0a, 0x01, 0x03 };

    /* counted as shed (outcome "backend"), not as an answer */
    ngx_http_pki_metrics_mark(r, "ocsp", NULL, NULL, PKI_UNAVAILABLE, why);

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_pki_add_header(r, "Retry-After", p,
                                ngx_sprintf(p, "%d",
                                            NGX_HTTP_OCSP_RETRY_AFTER) - p)
        == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_ocsp_output(r, ctx, try_later, sizeof(try_later), 0,
                                NULL);
}


/*
 * now - then for a time another worker wrote (sh->checked, refreshing,
 * active): its ngx_current_msec may be a few ms ahead of this worker's, and
 * the unsigned difference would then wrap to ~2^64, a fresh view taken
 * for a stale one (a miss, a new refresh claimed).  Ahead counts as 0.
 */

static ngx_inline ngx_msec_t
ngx_http_ocsp_age(ngx_msec_t now, ngx_msec_t then)
{
    return (ngx_msec_int_t) (now - then) > 0 ? now - then : 0;
}


/* Posts the work; always ends with one ngx_http_finalize_request(). */

static void
ngx_http_ocsp_run(ngx_http_request_t *r, ngx_http_ocsp_ctx_t *ctx)
{
    u_char                     salt[64 + NGX_HTTP_OCSP_NS_MAX];
    size_t                     ns;
    ngx_int_t                  rc;
    ngx_msec_t                 now, age, claimed;
    ngx_uint_t                 use, going;
    ngx_http_ocsp_zone_t      *zone;
    ngx_http_ocsp_shctx_t     *sh;
    ngx_http_ocsp_loc_conf_t  *olcf;

    olcf = ngx_http_get_module_loc_conf(r, ngx_http_ocsp_module);

    if (olcf->cache) {
        zone = olcf->cache->data;

        /* what the answer depends on, not which cycle: an entry outlives
         * a reload that changed nothing it depends on (with Redis down,
         * the cached answers are all there is).  The zone's CA set is in
         * it too: the view (a sum of revgens) means the same only over
         * the same CAs, so a reload that changes them drops the zone's
         * entries (a CA removed, later revocations could bring the sum
         * back to an old entry's generation) */
        ngx_memcpy(salt, olcf->digest, 32);
        ngx_memcpy(salt + 32, zone->cas_digest, 32);
        ns = ngx_min(ngx_strlen(pki_redis_ns(ctx->conf.redis)),
                     NGX_HTTP_OCSP_NS_MAX);
        ngx_memcpy(salt + 64, pki_redis_ns(ctx->conf.redis), ns);

        if (pki_ocsp_cache_key(&ctx->req, salt, 64 + ns, ctx->key, NULL)
            == PKI_OK)
        {
            ctx->zone = zone;
            ctx->redis = ctx->conf.redis;
            sh = zone->sh;
            now = ngx_current_msec;

            ngx_shmtx_lock(&zone->shpool->mutex);

            age = ngx_http_ocsp_age(now, sh->checked);
            use = 1;
            claimed = 0;

            if (sh->set != zone->set) {
                /* another configuration's view (see above): a miss,
                 * which may take the view over in ngx_http_ocsp_done() */
                use = 0;

            } else if (olcf->revgen_stale) {
                /* stale-while-revalidate, bounded (see above) */

                /* refreshes going on: one in flight, one back less
                 * than revgen_check ago, or the last one failed (only a
                 * failed refresh confirms the view without moving
                 * read_ok): Redis slow or failing, not an idle spell */
                going = (sh->refreshing != 0
                         && ngx_http_ocsp_age(now, sh->refreshing)
                            <= NGX_HTTP_OCSP_STUCK)
                        || ngx_http_ocsp_age(now, sh->active)
                           < olcf->revgen_check
                        || sh->checked != sh->read_ok;

                if (age >= olcf->revgen_check
                    && (age >= olcf->revgen_check + olcf->revgen_stale
                        || !going))
                {
                    /* too stale, or no refresh going on (idle spell) */
                    use = 0;
                }

                if (age >= olcf->revgen_check / 2
                    && (sh->refreshing == 0
                        || ngx_http_ocsp_age(now, sh->refreshing)
                           > NGX_HTTP_OCSP_STUCK))
                {
                    sh->refreshing = now ? now : 1;
                    sh->active = now;
                    claimed = sh->refreshing;
                }

            } else if (age >= olcf->revgen_check) {
                if (sh->refreshing == 0
                    || ngx_http_ocsp_age(now, sh->refreshing)
                       > NGX_HTTP_OCSP_STUCK)
                {
                    sh->refreshing = now ? now : 1;
                    claimed = sh->refreshing;
                }

                if (claimed) {
                    ctx->refresh = 1;
                    ctx->claimed = claimed;
                    claimed = 0;
                    use = 0;

                } else if (age >= olcf->revgen_check + NGX_HTTP_OCSP_GRACE) {
                    use = 0;
                }
            }

            ngx_shmtx_unlock(&zone->shpool->mutex);

            ctx->started = now;

            if (claimed) {
                if (use) {
                    ngx_http_ocsp_refresh(r, zone, ctx->redis, claimed);

                } else {
                    /* this request goes to the pool: it carries the refresh */
                    ctx->refresh = 1;
                    ctx->claimed = claimed;
                }
            }

            if (use && ngx_http_ocsp_cache_lookup(r, ctx, 1) == NGX_OK) {
                ngx_http_finalize_request(r,
                    ngx_http_ocsp_output(r, ctx, ctx->body, ctx->body_len, 1,
                                         "HIT"));
                return;
            }
        }
    }

    if (pki_ocsp_hung(&ctx->conf, &ctx->req)) {
        /* signed by a key whose token does not answer: see below */
        rc = ngx_http_ocsp_hung(r, ctx);

    } else {
        rc = ngx_http_pki_post_sign(r, ngx_http_ocsp_work,
                                    ngx_http_ocsp_done, ctx);
    }

    if (rc != NGX_OK && ctx->refresh) {
        /* not posted: drop the refresh claim at once (a later request
         * claims again) rather than hold it until NGX_HTTP_OCSP_STUCK */
        ngx_shmtx_lock(&ctx->zone->shpool->mutex);

        if (ctx->zone->sh->refreshing == ctx->claimed) {
            ctx->zone->sh->refreshing = 0;
        }

        ngx_shmtx_unlock(&ctx->zone->shpool->mutex);

        ctx->refresh = 0;
    }

    switch (rc) {

    case NGX_OK:
        ngx_http_finalize_request(r, NGX_DONE);
        return;

    case NGX_DECLINED:
        /* logged (rate-limited) by ngx_http_pki_post() */
        ngx_http_finalize_request(r,
            ngx_http_ocsp_shed(r, ctx, "busy, retry later"));
        return;

    case NGX_BUSY:
        ngx_http_finalize_request(r,
            ngx_http_ocsp_shed(r, ctx, "signing key's token is hung, retry "
                               "later"));
        return;

    default:
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }
}


/*
 * Not answered from the cache above, and signed by a key whose token does
 * not answer (the CA's or its delegated responder's): not a thread more
 * waits for it, and not a request more queues behind the threads that do.
 * A cached answer needs no token, only a read of the revgens (the view
 * was too old to serve, or this request carried the refresh), so a
 * request with an entry under its key goes to the pki pool (not the
 * signing one) for that read alone, and ngx_http_ocsp_done() answers it
 * from the cache as it does a task's tryLater (not strict: no fresher
 * answer can be signed), else with tryLater.  Without such an entry, or
 * when tasks already wait for a thread of that pool (the hung calls may
 * hold them all, and the read would wait with them), tryLater at once,
 * as the engine answers for a key that is unavailable; a refresh this
 * request claimed is then posted detached rather than dropped, so the
 * view is still confirmed and later requests are answered from the
 * cache.  NGX_OK: posted; NGX_BUSY: tryLater.
 */

static ngx_int_t
ngx_http_ocsp_hung(ngx_http_request_t *r, ngx_http_ocsp_ctx_t *ctx)
{
    time_t                 now;
    ngx_uint_t             found;
    ngx_http_ocsp_node_t  *n;

    found = 0;

    if (ctx->zone != NULL && ngx_http_pki_pool_waiting() == 0) {
        now = ngx_time();

        ngx_shmtx_lock(&ctx->zone->shpool->mutex);

        n = ngx_http_ocsp_cache_find(ctx->zone, ctx->key);
        found = (n != NULL && now < n->next_update);

        ngx_shmtx_unlock(&ctx->zone->shpool->mutex);
    }

    if (found) {
        ctx->hung = 1;

        if (ngx_http_pki_post(r, ngx_http_ocsp_work, ngx_http_ocsp_done, ctx)
            == NGX_OK)
        {
            return NGX_OK;
        }

        ctx->hung = 0;
    }

    if (ctx->refresh) {
        /* drops the claim if it cannot be posted either */
        ctx->refresh = 0;
        ngx_http_ocsp_refresh(r, ctx->zone, ctx->redis, ctx->claimed);
    }

    return NGX_BUSY;
}


/*
 * Stale-while-revalidate: reads the revgens in a detached task (nobody
 * waits for it); the view is updated (or, Redis failing, confirmed) when it
 * comes back.  The pool's queue is FIFO: under uncached load stuck on a
 * slow Redis (each task holding a thread for a Redis timeout) the task
 * would start only after every task queued before it, and past
 * revgen_check + revgen_stale the cached requests would queue there too.
 * So the refresh is also put in this process's slot, and the first OCSP
 * task to end its work in a thread reads it before it gives the thread
 * back (a Redis round trip, or a timeout, more for that request; the
 * result is applied when the task is back on the event loop, right
 * after): it waits for the next OCSP task to finish, not for the queue.
 * If it cannot be posted, the claim is dropped: a later request claims
 * again, and past revgen_check + revgen_stale requests go to the pool
 * themselves.
 */

static void
ngx_http_ocsp_refresh(ngx_http_request_t *r, ngx_http_ocsp_zone_t *zone,
    pki_redis_t *redis, ngx_msec_t claimed)
{
    ngx_uint_t                slot;
    ngx_http_ocsp_slot_t     *sl;
    ngx_http_ocsp_refresh_t  *rf;

    sl = &ngx_http_ocsp_slot;

    rf = ngx_alloc(sizeof(ngx_http_ocsp_refresh_t), r->connection->log);

    if (rf != NULL) {
        ngx_memzero(rf, sizeof(ngx_http_ocsp_refresh_t));
        rf->zone = zone;
        rf->redis = redis;
        rf->claimed = claimed;

        /* the slot is busy while another refresh (a stuck one taken
         * over, another zone's) waits or is read: this one reads alone */
        if (sl->state == NGX_HTTP_OCSP_SLOT_FREE) {
            sl->zone = zone;
            sl->redis = redis;
            sl->claimed = claimed;

            rf->slot = ngx_atomic_cmp_set(&sl->state,
                                          NGX_HTTP_OCSP_SLOT_FREE,
                                          NGX_HTTP_OCSP_SLOT_POSTED);
        }

        if (ngx_http_pki_post_detached(r, ngx_http_ocsp_refresh_work,
                                       ngx_http_ocsp_refresh_done, rf)
            == NGX_OK)
        {
            return;
        }

        slot = rf->slot;
        ngx_free(rf);

        if (slot && !ngx_atomic_cmp_set(&sl->state,
                                        NGX_HTTP_OCSP_SLOT_POSTED,
                                        NGX_HTTP_OCSP_SLOT_FREE))
        {
            /* another task's thread reads it already: its done handler
             * applies it and lets the claim go */
            return;
        }
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (zone->sh->refreshing == claimed) {
        zone->sh->refreshing = 0;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/* pool thread: reads the slot's refresh if it still waits for one */

static ngx_uint_t
ngx_http_ocsp_carry(void)
{
    ngx_http_ocsp_slot_t  *sl;

    sl = &ngx_http_ocsp_slot;

    if (sl->state != NGX_HTTP_OCSP_SLOT_POSTED
        || !ngx_atomic_cmp_set(&sl->state, NGX_HTTP_OCSP_SLOT_POSTED,
                               NGX_HTTP_OCSP_SLOT_READ))
    {
        return 0;
    }

    /* a failed read confirms the view as of now, when it starts (not as
     * of the claim, which may be a queue's wait ago) */
    sl->at = ngx_current_msec;
    sl->ok = ngx_http_ocsp_read_gen(sl->zone, sl->redis, &sl->gen);

    return 1;
}


/* event loop, in the done handler of the task that read the slot */

static void
ngx_http_ocsp_carried(void)
{
    ngx_http_ocsp_slot_t   *sl;
    ngx_http_ocsp_shctx_t  *sh;

    sl = &ngx_http_ocsp_slot;
    sh = sl->zone->sh;

    ngx_shmtx_lock(&sl->zone->shpool->mutex);

    /* Redis failing: keep (and confirm) the view, see above */
    ngx_http_ocsp_view_update(sl->zone, sl->ok, sl->gen, sl->at, 1);

    if (sh->refreshing == sl->claimed) {
        sh->refreshing = 0;
    }

    sh->active = ngx_current_msec;

    ngx_shmtx_unlock(&sl->zone->shpool->mutex);

    ngx_memory_barrier();

    sl->state = NGX_HTTP_OCSP_SLOT_FREE;
}


static ngx_uint_t
ngx_http_ocsp_read_gen(ngx_http_ocsp_zone_t *zone, pki_redis_t *redis,
    uint64_t *gen)
{
    size_t          i;
    long long       g;
    uint64_t        sum;
    pki_ca_t      **ca;
    pki_result_t    res;

    if (redis == NULL) {
        return 0;
    }

    ca = zone->cas->elts;
    sum = 0;

    for (i = 0; i < zone->cas->nelts; i++) {
        pki_result_init(&res);

        if (pki_record_revgen(redis, pki_ca_name(ca[i]), &g, &res) != PKI_OK) {
            return 0;
        }

        sum += (uint64_t) g;
    }

    *gen = sum;

    return 1;
}


/*
 * Called with the zone locked, after a read of the revgens that started at
 * "at" (ok: it succeeded, the sum is gen; confirm: keep and confirm the
 * view when it failed).  Over the view's CA set, a read never replaces a
 * newer one.  Over another set, the view is taken over by a successful
 * read of a newer configuration only (see the comment at the top).
 */

static void
ngx_http_ocsp_view_update(ngx_http_ocsp_zone_t *zone, ngx_uint_t ok,
    uint64_t gen, ngx_msec_t at, ngx_uint_t confirm)
{
    ngx_http_ocsp_shctx_t  *sh;

    sh = zone->sh;

    if (sh->set != zone->set) {
        if (ok && zone->epoch > sh->set_epoch) {
            sh->set = zone->set;
            sh->set_epoch = zone->epoch;
            sh->gen = gen;
            sh->checked = at;
            sh->read_ok = at;
        }

        return;
    }

    if (zone->epoch > sh->set_epoch) {
        sh->set_epoch = zone->epoch;
    }

    if ((ngx_msec_int_t) (at - sh->checked) < 0) {
        return;
    }

    if (ok && !confirm && (int64_t) (gen - sh->gen) < 0) {
        /* a miss: the reads of misses run in every worker's pool threads
         * and come back in any order, so one posted earlier may have read
         * later, after a revocation, and come back before one posted
         * later that read before it.  A lower sum from a miss is taken
         * for that, not for the store going back: only the refresh (one
         * in flight at a time) takes the view down.  Nor does it confirm
         * the view, which it did not read as it is. */
        return;
    }

    if (ok) {
        if ((int64_t) (gen - sh->gen) < 0) {
            /* the view went down: the store went back (see the comment
             * at the top); no entry made before is trusted again */
            ngx_http_ocsp_cache_drop(zone);
        }

        sh->gen = gen;
        sh->checked = at;
        sh->read_ok = at;

    } else if (confirm) {
        /* a failed refresh keeps the view, but cached answers are
         * served only within revgen_outage of sh->read_ok (lookup);
         * checked != read_ok then also tells run() that the last
         * refresh failed (refreshes are going on, see the top) */
        sh->checked = at;
    }
}


static void
ngx_http_ocsp_refresh_work(void *data)
{
    ngx_http_ocsp_refresh_t *rf = data;

    /* this refresh's own slot, unless an OCSP task that finished first
     * took it, or another refresh's */
    rf->carried = ngx_http_ocsp_carry();

    if (!rf->slot) {
        rf->at = ngx_current_msec;
        rf->ok = ngx_http_ocsp_read_gen(rf->zone, rf->redis, &rf->gen);
    }
}


static void
ngx_http_ocsp_refresh_done(void *data)
{
    ngx_http_ocsp_refresh_t *rf = data;

    ngx_http_ocsp_shctx_t  *sh;

    if (rf->carried) {
        ngx_http_ocsp_carried();
    }

    if (!rf->slot) {
        sh = rf->zone->sh;

        ngx_shmtx_lock(&rf->zone->shpool->mutex);

        /* the revgens were read after the thread started: the view is
         * as new as that; Redis failing: keep (and confirm) the view */
        ngx_http_ocsp_view_update(rf->zone, rf->ok, rf->gen, rf->at, 1);

        if (sh->refreshing == rf->claimed) {
            sh->refreshing = 0;
        }

        sh->active = ngx_current_msec;

        ngx_shmtx_unlock(&rf->zone->shpool->mutex);
    }

    ngx_free(rf);
}


static void
ngx_http_ocsp_work(void *data)
{
    ngx_http_ocsp_ctx_t *ctx = data;

    /* the generation first: the response below can only be newer; read
     * from now, not from the post (a queue's wait ago) */

    ctx->started = ngx_current_msec;

    if (ctx->zone
        && ngx_http_ocsp_read_gen(ctx->zone, ctx->redis, &ctx->read_gen))
    {
        ctx->gen_ok = 1;
    }

    if (!ctx->hung) {
        pki_ocsp_handle(&ctx->conf, &ctx->req, &ctx->resp);
    }

    /* then a refresh waiting for a thread (see ngx_http_ocsp_refresh()),
     * last: its result is applied when this task is back, right after */
    ctx->carried = ngx_http_ocsp_carry();
}


static void
ngx_http_ocsp_done(ngx_http_request_t *r, void *data)
{
    ngx_http_ocsp_ctx_t *ctx = data;

    ngx_http_ocsp_shctx_t  *sh;

    if (ctx->carried) {
        ngx_http_ocsp_carried();
    }

    if (ctx->zone) {
        sh = ctx->zone->sh;

        ngx_shmtx_lock(&ctx->zone->shpool->mutex);

        /* Redis down: a refresh keeps (and confirms) the view, see above */
        ngx_http_ocsp_view_update(ctx->zone, ctx->gen_ok, ctx->read_gen,
                                  ctx->started, ctx->refresh);

        if (ctx->refresh) {
            /* unless the claim was taken over as stuck meanwhile */
            if (sh->refreshing == ctx->claimed) {
                sh->refreshing = 0;
            }

            sh->active = ngx_current_msec;
        }

        ngx_shmtx_unlock(&ctx->zone->shpool->mutex);

        if (ctx->hung) {
            /* the revgens read for a cached answer (ngx_http_ocsp_hung) */
            if (ngx_http_ocsp_cache_lookup(r, ctx, 0) == NGX_OK) {
                ngx_http_finalize_request(r,
                    ngx_http_ocsp_output(r, ctx, ctx->body, ctx->body_len, 1,
                                         "HIT"));
                return;
            }

            ngx_http_finalize_request(r,
                ngx_http_ocsp_shed(r, ctx, "signing key's token is hung, "
                                   "retry later"));
            return;
        }

        if (ctx->resp.ocsp_status == OCSP_RESPONSE_STATUS_SUCCESSFUL
            && ctx->resp.cacheable && ctx->gen_ok
            && ctx->resp.body && ctx->resp.next_update > 0)
        {
            ngx_http_ocsp_cache_store(ctx);

        } else if (ctx->resp.ocsp_status == OCSP_RESPONSE_STATUS_TRYLATER
                   && ngx_http_ocsp_cache_lookup(r, ctx, 0) == NGX_OK)
        {
            pki_ocsp_resp_free(&ctx->resp);
            ngx_http_finalize_request(r,
                ngx_http_ocsp_output(r, ctx, ctx->body, ctx->body_len, 1,
                                     "HIT"));
            return;
        }
    }

    ngx_http_finalize_request(r, ngx_http_ocsp_send(r, ctx));
}


static ngx_int_t
ngx_http_ocsp_send(ngx_http_request_t *r, ngx_http_ocsp_ctx_t *ctx)
{
    u_char            *body;
    size_t             len;
    ngx_uint_t         status, level, cacheable;
    pki_ocsp_resp_t   *resp;

    resp = &ctx->resp;
    status = resp->http_status;

    if (status < 200 || status > 599) {
        status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_pki_metrics_mark(r, "ocsp", NULL, NULL, resp->res.status,
                              resp->res.detail);

    if (resp->res.status != PKI_OK) {
        level = (resp->res.status == PKI_INTERNAL) ? NGX_LOG_ERR
                                                   : NGX_LOG_INFO;

        /* a CA (or its chain) past its end: every request gets tryLater
         * until it is renewed, so one error line per
         * NGX_HTTP_OCSP_NOTE_EVERY seconds per worker, the others at
         * info (a fleet of clients would flood the log otherwise) */
        if (resp->res.status == PKI_INTERNAL
            && resp->ocsp_status == OCSP_RESPONSE_STATUS_TRYLATER)
        {
            if (ngx_time() - ngx_http_ocsp_ended_noted
                >= NGX_HTTP_OCSP_NOTE_EVERY)
            {
                ngx_http_ocsp_ended_noted = ngx_time();

            } else {
                level = NGX_LOG_INFO;
            }
        }

        ngx_log_error(level, r->connection->log, 0,
                      "ocsp: request from %V: %s%s%s%s (OCSP status %d)",
                      &r->connection->addr_text, resp->res.detail,
                      resp->res.log[0] ? " (" : "", resp->res.log,
                      resp->res.log[0] ? ")" : "", resp->ocsp_status);

    } else if (resp->res.log[0] != '\0'
               && ngx_time() - ngx_http_ocsp_noted >= NGX_HTTP_OCSP_NOTE_EVERY)
    {
        /* answered, but something is wrong with the setup (a delegated
         * responder certificate out of its validity): one line per
         * NGX_HTTP_OCSP_NOTE_EVERY seconds per worker */
        ngx_http_ocsp_noted = ngx_time();

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "ocsp: %s", resp->res.log);
    }

    if (status != NGX_HTTP_OK || resp->body == NULL || resp->body_len == 0) {
        pki_ocsp_resp_free(resp);
        return status == NGX_HTTP_OK ? NGX_HTTP_INTERNAL_SERVER_ERROR
                                     : (ngx_int_t) status;
    }

    body = ngx_pnalloc(r->pool, resp->body_len);
    if (body == NULL) {
        pki_ocsp_resp_free(resp);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(body, resp->body, resp->body_len);
    len = resp->body_len;
    cacheable = resp->cacheable;
    ctx->this_update = resp->this_update;
    ctx->next_update = resp->next_update;
    ngx_memcpy(ctx->etag, resp->etag, sizeof(ctx->etag));
    ctx->etag[sizeof(ctx->etag) - 1] = '\0';

    pki_ocsp_resp_free(resp);

    return ngx_http_ocsp_output(r, ctx, body, len, cacheable,
                                ctx->zone && cacheable ? "MISS" : NULL);
}


static ngx_int_t
ngx_http_ocsp_output(ngx_http_request_t *r, ngx_http_ocsp_ctx_t *ctx,
    u_char *body, size_t len, ngx_uint_t cacheable, const char *cache_state)
{
    u_char                    *p;
    time_t                     now, age;
    ngx_buf_t                 *b;
    ngx_table_elt_t           *h;
    ngx_http_ocsp_loc_conf_t  *olcf;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = body;
    b->last = body + len;
    b->memory = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "application/ocsp-response");
    r->headers_out.content_type_len = sizeof("application/ocsp-response") - 1;

    olcf = ngx_http_get_module_loc_conf(r, ngx_http_ocsp_module);

    if (olcf->cache_header && cache_state) {
        if (ngx_http_pki_add_header(r, "X-OCSP-Cache", (u_char *) cache_state,
                                    ngx_strlen(cache_state))
            == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ctx->get && cacheable) {
        now = ngx_time();
        age = ctx->next_update > now ? ctx->next_update - now : 0;

        p = ngx_pnalloc(r->pool, sizeof("max-age=, public, no-transform, "
                                        "must-revalidate") - 1
                                 + NGX_TIME_T_LEN);
        if (p == NULL) {
            goto failed;
        }

        if (ngx_http_pki_add_header(r, "Cache-Control", p,
                ngx_sprintf(p, "max-age=%T, public, no-transform, "
                            "must-revalidate", age) - p)
            == NULL)
        {
            goto failed;
        }

        p = ngx_pnalloc(r->pool, sizeof(ctx->etag) + 2);
        if (p == NULL) {
            goto failed;
        }

        h = ngx_http_pki_add_header(r, "ETag", p,
                                    ngx_sprintf(p, "\"%s\"", ctx->etag) - p);
        if (h == NULL) {
            goto failed;
        }

        r->headers_out.etag = h;
        r->headers_out.last_modified_time = ctx->this_update;

        /*
         * Last-Modified is thisUpdate to the second: a "good" and a
         * "revoked" answer for one CertID produced in the same second
         * share it, and nginx answers an equal If-Modified-Since with
         * 304, so a client would keep "good".  Only the ETag (a hash of
         * the DER) tells two answers apart, and with If-None-Match
         * nginx gives 304 only when it matches too.  A request that
         * validates with If-Modified-Since alone gets the whole answer
         * (a few hundred bytes): no state across workers and hosts to
         * order the answers of one second is needed.
         */

        if (r->headers_in.if_none_match == NULL) {
            r->disable_not_modified = 1;
        }

        /* RFC 5019 6.2: Expires = nextUpdate (none without one) */

        if (ctx->next_update > 0) {
            p = ngx_pnalloc(r->pool, sizeof("Mon, 28 Sep 1970 06:00:00 GMT"));
            if (p == NULL) {
                goto failed;
            }

            h = ngx_http_pki_add_header(r, "Expires", p,
                    ngx_http_time(p, ctx->next_update) - p);
            if (h == NULL) {
                goto failed;
            }

            r->headers_out.expires = h;
        }

    } else {
        if (ngx_http_pki_add_header(r, "Cache-Control",
                                    (u_char *) "no-store", 8)
            == NULL)
        {
            goto failed;
        }
    }

    /* a body not read is discarded, not parsed as the next request
     * (see ngx_http_pki_send_plain()) */
    ngx_http_pki_body_unwanted(r);

    return ngx_http_pki_send_buf(r, b);

failed:

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


/* ---- the response cache (see the comment at the top) ---------------------- */

static ngx_http_ocsp_node_t *
ngx_http_ocsp_cache_find(ngx_http_ocsp_zone_t *zone, u_char *key)
{
    ngx_int_t              rc;
    ngx_rbtree_key_t       hash;
    ngx_rbtree_node_t     *node, *sentinel;
    ngx_http_ocsp_node_t  *n;

    ngx_memcpy(&hash, key, sizeof(hash));

    node = zone->sh->rbtree.root;
    sentinel = zone->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        n = (ngx_http_ocsp_node_t *) node;

        rc = ngx_memcmp(key, n->key, PKI_OCSP_KEY_LEN);

        if (rc == 0) {
            return n;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/* strict: a hit needs now < valid_until (nextUpdate - margin); otherwise
 * (Redis down, the fresh answer was tryLater) now < nextUpdate.  Either
 * way the view must be over this configuration's CA set, the entry's
 * generation must equal it, and the revgens must have been read less than
 * revgen_outage ago (see the comment at the top).  NGX_OK: ctx->body etc.
 * hold a copy. */

static ngx_int_t
ngx_http_ocsp_cache_lookup(ngx_http_request_t *r, ngx_http_ocsp_ctx_t *ctx,
    ngx_uint_t strict)
{
    time_t                  now;
    ngx_int_t                  rc;
    ngx_http_ocsp_node_t      *n;
    ngx_http_ocsp_zone_t      *zone;
    ngx_http_ocsp_loc_conf_t  *olcf;

    zone = ctx->zone;
    if (zone == NULL) {
        return NGX_DECLINED;
    }

    olcf = ngx_http_get_module_loc_conf(r, ngx_http_ocsp_module);
    now = ngx_time();
    rc = NGX_DECLINED;

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (zone->sh->set != zone->set) {
        /* the view is another configuration's: no way to judge */
        goto done;
    }

    if (ngx_http_ocsp_age(ngx_current_msec, zone->sh->read_ok)
        >= olcf->revgen_outage)
    {
        /* the revgens unread for too long: another host may have
         * revoked meanwhile (the entries are kept for when they are
         * read again) */
        goto done;
    }

    n = ngx_http_ocsp_cache_find(zone, ctx->key);

    if (n == NULL) {
        goto done;
    }

    if (n->gen != zone->sh->gen || now >= n->next_update) {
        ngx_http_ocsp_cache_delete(zone, n);
        goto done;
    }

    if (strict && now >= n->valid_until) {
        goto done;
    }

    ctx->body = ngx_pnalloc(r->pool, n->len);
    if (ctx->body == NULL) {
        goto done;
    }

    ngx_memcpy(ctx->body, n->data, n->len);
    ctx->body_len = n->len;
    ctx->this_update = n->this_update;
    ctx->next_update = n->next_update;
    ngx_memcpy(ctx->etag, n->etag, sizeof(n->etag));
    ctx->etag[sizeof(n->etag)] = '\0';
    ctx->hit = 1;

    ngx_queue_remove(&n->queue);
    ngx_queue_insert_head(&zone->sh->lru, &n->queue);

    rc = NGX_OK;

done:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return rc;
}


static void
ngx_http_ocsp_cache_delete(ngx_http_ocsp_zone_t *zone,
    ngx_http_ocsp_node_t *n)
{
    ngx_queue_remove(&n->queue);
    ngx_rbtree_delete(&zone->sh->rbtree, &n->node);
    ngx_slab_free_locked(zone->shpool, n);
}


/* Called with the zone locked: every entry. */

static void
ngx_http_ocsp_cache_drop(ngx_http_ocsp_zone_t *zone)
{
    ngx_queue_t  *q;

    while (!ngx_queue_empty(&zone->sh->lru)) {
        q = ngx_queue_head(&zone->sh->lru);
        ngx_http_ocsp_cache_delete(zone,
            ngx_queue_data(q, ngx_http_ocsp_node_t, queue));
    }
}


static void
ngx_http_ocsp_cache_store(ngx_http_ocsp_ctx_t *ctx)
{
    size_t                  size;
    time_t                  margin;
    ngx_uint_t              i;
    ngx_queue_t            *q;
    pki_ocsp_resp_t        *resp;
    ngx_http_ocsp_node_t   *n;
    ngx_http_ocsp_zone_t   *zone;

    zone = ctx->zone;
    resp = &ctx->resp;

    if (resp->body_len == 0 || resp->body_len > NGX_HTTP_OCSP_MAX_ENTRY
        || resp->next_update <= resp->this_update)
    {
        return;
    }

    margin = (resp->next_update - resp->this_update) / 10;
    if (margin > 60) {
        margin = 60;
    }

    if (resp->next_update - margin <= ngx_time()) {
        return;
    }

    size = offsetof(ngx_http_ocsp_node_t, data) + resp->body_len;

    ngx_shmtx_lock(&zone->shpool->mutex);

    if ((int64_t) (ctx->read_gen - zone->sh->gen) > 0) {
        /* read before the view went down (a newer read saw it lower):
         * the entries of that time were dropped, not this one either */
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return;
    }

    n = ngx_http_ocsp_cache_find(zone, ctx->key);
    if (n) {
        ngx_http_ocsp_cache_delete(zone, n);
    }

    /* full: evict the least recently used, a few at a time */

    for (i = 0; ; i++) {
        n = ngx_slab_alloc_locked(zone->shpool, size);
        if (n != NULL || i == 64 || ngx_queue_empty(&zone->sh->lru)) {
            break;
        }

        q = ngx_queue_last(&zone->sh->lru);
        ngx_http_ocsp_cache_delete(zone,
            ngx_queue_data(q, ngx_http_ocsp_node_t, queue));
    }

    if (n == NULL) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return;
    }

    ngx_memcpy(&n->node.key, ctx->key, sizeof(ngx_rbtree_key_t));
    ngx_memcpy(n->key, ctx->key, PKI_OCSP_KEY_LEN);
    n->gen = ctx->read_gen;
    n->this_update = resp->this_update;
    n->next_update = resp->next_update;
    n->valid_until = resp->next_update - margin;
    ngx_memcpy(n->etag, resp->etag, sizeof(n->etag));
    n->len = resp->body_len;
    ngx_memcpy(n->data, resp->body, resp->body_len);

    ngx_rbtree_insert(&zone->sh->rbtree, &n->node);
    ngx_queue_insert_head(&zone->sh->lru, &n->queue);

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


static void
ngx_http_ocsp_rbtree_insert(ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t     **p;
    ngx_http_ocsp_node_t   *n, *t;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            n = (ngx_http_ocsp_node_t *) node;
            t = (ngx_http_ocsp_node_t *) temp;

            p = (ngx_memcmp(n->key, t->key, PKI_OCSP_KEY_LEN) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static ngx_int_t
ngx_http_ocsp_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_ocsp_zone_t *ozone = data;

    size_t                  len;
    ngx_http_ocsp_zone_t   *zone;

    zone = shm_zone->data;

    if (ngx_http_ocsp_zone_digest(zone) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ozone) {
        /* reload: keep the entries (a changed location's keys are salted
         * differently: its old entries are never hit and age out); the
         * epoch only counts the cycles */
        zone->sh = ozone->sh;
        zone->shpool = ozone->shpool;

        ngx_shmtx_lock(&zone->shpool->mutex);
        zone->epoch = ++zone->sh->epoch;
        ngx_shmtx_unlock(&zone->shpool->mutex);

        return NGX_OK;
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;
        zone->epoch = ++zone->sh->epoch;
        return NGX_OK;
    }

    zone->sh = ngx_slab_alloc(zone->shpool, sizeof(ngx_http_ocsp_shctx_t));
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    zone->shpool->data = zone->sh;

    ngx_rbtree_init(&zone->sh->rbtree, &zone->sh->sentinel,
                    ngx_http_ocsp_rbtree_insert);
    ngx_queue_init(&zone->sh->lru);

    zone->sh->gen = 0;
    zone->sh->set = zone->set;
    zone->sh->set_epoch = 1;
    zone->sh->checked = ngx_current_msec - 3600000;  /* stale: refresh */
    zone->sh->read_ok = zone->sh->checked;
    zone->sh->refreshing = 0;
    zone->sh->active = 0;
    zone->sh->epoch = 1;
    zone->epoch = 1;

    len = sizeof(" in OCSP cache zone \"\"") + shm_zone->shm.name.len;

    zone->shpool->log_ctx = ngx_slab_alloc(zone->shpool, len);
    if (zone->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(zone->shpool->log_ctx, " in OCSP cache zone \"%V\"%Z",
                &shm_zone->shm.name);

    zone->shpool->log_nomem = 0;

    return NGX_OK;
}


/* ocsp_responder_cache zone=NAME:SIZE | off; */

static char *
ngx_http_ocsp_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ocsp_loc_conf_t *olcf = conf;

    u_char                *p;
    ssize_t                size;
    ngx_str_t             *value, name, s;
    ngx_http_ocsp_zone_t  *zone;

    (void) cmd;

    if (olcf->cache != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        olcf->cache = NULL;
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value[1].data, "zone=", 5) != 0) {
        return "needs \"zone=NAME:SIZE\" or \"off\"";
    }

    name.data = value[1].data + 5;
    p = (u_char *) ngx_strchr(name.data, ':');
    if (p == NULL || p == name.data) {
        return "needs \"zone=NAME:SIZE\"";
    }

    name.len = p - name.data;

    s.data = p + 1;
    s.len = value[1].data + value[1].len - s.data;

    size = ngx_parse_size(&s);
    if (size == NGX_ERROR || size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "OCSP cache zone \"%V\" is too small or invalid",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    olcf->cache = ngx_shared_memory_add(cf, &name, size,
                                        &ngx_http_ocsp_module);
    if (olcf->cache == NULL) {
        return NGX_CONF_ERROR;
    }

    if (olcf->cache->data == NULL) {
        zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_ocsp_zone_t));
        if (zone == NULL) {
            return NGX_CONF_ERROR;
        }

        zone->cas = ngx_array_create(cf->pool, 4, sizeof(pki_ca_t *));
        if (zone->cas == NULL) {
            return NGX_CONF_ERROR;
        }

        zone->cycle = cf->cycle;

        olcf->cache->init = ngx_http_ocsp_init_zone;
        olcf->cache->data = zone;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_ocsp_create_main_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_ocsp_main_conf_t));
}


static void *
ngx_http_ocsp_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ocsp_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ocsp_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->cas = NGX_CONF_UNSET_PTR;
    conf->signers = NGX_CONF_UNSET_PTR;
    conf->unknown = NGX_CONF_UNSET_UINT;
    conf->next_update = NGX_CONF_UNSET;
    conf->cache = NGX_CONF_UNSET_PTR;
    conf->revgen_check = NGX_CONF_UNSET_MSEC;
    conf->revgen_stale = NGX_CONF_UNSET_MSEC;
    conf->revgen_outage = NGX_CONF_UNSET_MSEC;
    conf->cache_header = NGX_CONF_UNSET;

    return conf;
}


/* A SHA-256 of what a location's answers depend on (besides the records
 * and the store): its CAs (names and certificates), delegated responders,
 * ocsp_responder_unknown and ocsp_responder_next_update.  It salts the
 * cache keys, so a reload keeps the entries of a location it did not
 * change and never serves them to one it did. */
/* Adds a kind, a CA's name and a certificate to a digest; 1 if done. */
static int
ngx_http_ocsp_digest_cert(EVP_MD_CTX *md, u_char kind, const char *name,
    X509 *cert)
{
    int             ok, len;
    unsigned char  *der;

    der = NULL;
    len = cert != NULL ? i2d_X509(cert, &der) : -1;

    ok = len > 0
         && EVP_DigestUpdate(md, &kind, 1) == 1
         && EVP_DigestUpdate(md, name, ngx_strlen(name) + 1) == 1
         && EVP_DigestUpdate(md, der, (size_t) len) == 1;

    OPENSSL_free(der);

    return ok;
}


static ngx_int_t
ngx_http_ocsp_ca_cmp(const void *one, const void *two)
{
    pki_ca_t * const  *a = one;
    pki_ca_t * const  *b = two;

    return ngx_strcmp(pki_ca_name(*a), pki_ca_name(*b));
}


/* The zone's CA set (every location using it; sorted by name, so that
 * the order of the locations does not matter) and the Redis namespace of
 * their revgens: the keys' salt, and the view's set (its first 8 bytes,
 * see the comment at the top). */
static ngx_int_t
ngx_http_ocsp_zone_digest(ngx_http_ocsp_zone_t *zone)
{
    int            ok;
    u_char         kind;
    ngx_uint_t     i;
    pki_ca_t     **ca;
    EVP_MD_CTX    *md;
    const char    *ns;
    pki_redis_t   *redis;

    redis = ngx_http_pki_cycle_redis(zone->cycle);
    ns = redis ? pki_redis_ns(redis) : NULL;
    if (ns == NULL) {
        ns = "";
    }

    ngx_sort(zone->cas->elts, zone->cas->nelts, sizeof(pki_ca_t *),
             ngx_http_ocsp_ca_cmp);

    md = EVP_MD_CTX_new();
    ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    ca = zone->cas->elts;

    for (i = 0; ok && i < zone->cas->nelts; i++) {
        ok = ngx_http_ocsp_digest_cert(md, 'Z', pki_ca_name(ca[i]),
                                       pki_ca_cert(ca[i]));
    }

    kind = 'N';

    ok = ok && EVP_DigestUpdate(md, &kind, 1) == 1
         && EVP_DigestUpdate(md, ns, ngx_strlen(ns) + 1) == 1
         && EVP_DigestFinal_ex(md, zone->cas_digest, NULL) == 1;

    if (ok) {
        ngx_memcpy(&zone->set, zone->cas_digest, sizeof(uint64_t));
    }

    EVP_MD_CTX_free(md);
    ERR_clear_error();

    return ok ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_ocsp_conf_digest(ngx_http_ocsp_loc_conf_t *conf)
{
    int                  ok;
    int64_t              nu;
    u_char               flag;
    ngx_uint_t           i;
    EVP_MD_CTX          *md;
    pki_ca_t           **ca;
    pki_ocsp_signer_t   *sg;

    md = EVP_MD_CTX_new();
    ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;

    ca = conf->cas->elts;

    for (i = 0; ok && i < conf->cas->nelts; i++) {
        ok = ngx_http_ocsp_digest_cert(md, 'C', pki_ca_name(ca[i]),
                                       pki_ca_cert(ca[i]));
    }

    sg = conf->signers ? conf->signers->elts : NULL;

    for (i = 0; ok && sg != NULL && i < conf->signers->nelts; i++) {
        ok = ngx_http_ocsp_digest_cert(md, 'S', pki_ca_name(sg[i].ca),
                                       sg[i].cert);
    }

    flag = conf->unknown ? 1 : 0;
    nu = (int64_t) conf->next_update;

    ok = ok && EVP_DigestUpdate(md, &flag, 1) == 1
         && EVP_DigestUpdate(md, &nu, sizeof(nu)) == 1
         && EVP_DigestFinal_ex(md, conf->digest, NULL) == 1;

    EVP_MD_CTX_free(md);
    ERR_clear_error();

    return ok ? NGX_OK : NGX_ERROR;
}


static char *
ngx_http_ocsp_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ocsp_loc_conf_t *prev = parent;
    ngx_http_ocsp_loc_conf_t *conf = child;

    ngx_uint_t             i, j;
    pki_ca_t             **ca, **zca, **pca;
    pki_ocsp_signer_t     *sg;
    ngx_http_ocsp_zone_t  *zone;

    ngx_conf_merge_ptr_value(conf->cas, prev->cas, NULL);
    ngx_conf_merge_ptr_value(conf->cache, prev->cache, NULL);
    ngx_conf_merge_msec_value(conf->revgen_check, prev->revgen_check, 1000);
    ngx_conf_merge_msec_value(conf->revgen_stale, prev->revgen_stale, 3000);
    ngx_conf_merge_msec_value(conf->revgen_outage, prev->revgen_outage,
                              60000);

    if (conf->revgen_outage < conf->revgen_check) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ocsp_responder_revgen_outage must not be "
                           "shorter than ocsp_responder_revgen_check");
        return NGX_CONF_ERROR;
    }
    ngx_conf_merge_value(conf->cache_header, prev->cache_header, 0);

    /* the module answers a body over its cap itself (malformedRequest) */
    ngx_http_pki_own_body_cap(cf, ngx_http_ocsp_handler, PKI_OCSP_MAX_BODY);

    /* the zone's view covers every CA of every location using it */

    if (conf->cache && conf->cas) {
        zone = conf->cache->data;
        ca = conf->cas->elts;

        for (i = 0; i < conf->cas->nelts; i++) {
            zca = zone->cas->elts;

            for (j = 0; j < zone->cas->nelts; j++) {
                if (zca[j] == ca[i]) {
                    break;
                }
            }

            if (j < zone->cas->nelts) {
                continue;
            }

            pca = ngx_array_push(zone->cas);
            if (pca == NULL) {
                return NGX_CONF_ERROR;
            }

            *pca = ca[i];
        }
    }
    ngx_conf_merge_ptr_value(conf->signers, prev->signers, NULL);
    ngx_conf_merge_uint_value(conf->unknown, prev->unknown, 0);
    ngx_conf_merge_value(conf->next_update, prev->next_update, 3600);

    /* as pki_crl_next_update: far beyond it the time has no ASN.1 form
     * (after 9999) and every answer would be internalError */
    if (conf->next_update > 366L * 24 * 3600) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "ocsp_responder_next_update "
                           "must be 366d at most, or 0 for none");
        return NGX_CONF_ERROR;
    }

    if (conf->cas != NULL && ngx_http_ocsp_conf_digest(conf) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "ocsp_responder: cannot "
                           "hash the configuration");
        return NGX_CONF_ERROR;
    }

    if (conf->signers == NULL) {
        return NGX_CONF_OK;
    }

    sg = conf->signers->elts;

    for (i = 0; i < conf->signers->nelts; i++) {
        ca = conf->cas ? conf->cas->elts : NULL;

        for (j = 0; ca && j < conf->cas->nelts; j++) {
            if (ca[j] == sg[i].ca) {
                break;
            }
        }

        if (ca == NULL || j == conf->cas->nelts) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"ocsp_responder_signer\" for CA \"%s\" "
                               "which \"ocsp_responder\" does not name",
                               pki_ca_name(sg[i].ca));
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ocsp_init(ngx_conf_t *cf)
{
    ngx_http_ocsp_main_conf_t  *omcf;

    omcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ocsp_module);

    return ngx_http_pki_needs_redis(cf, "ocsp_responder", &omcf->file,
                                    omcf->line);
}


/* ocsp_responder CA...; */

static char *
ngx_http_ocsp_responder(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ocsp_loc_conf_t *olcf = conf;

    pki_ca_t                   **pca;
    ngx_str_t                   *value;
    ngx_uint_t                   i;
    ngx_http_core_loc_conf_t    *clcf;
    ngx_http_ocsp_main_conf_t   *omcf;

    if (olcf->cas != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    ngx_http_pki_metrics_location(cf, "ocsp");

    olcf->cas = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                 sizeof(pki_ca_t *));
    if (olcf->cas == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        pca = ngx_array_push(olcf->cas);
        if (pca == NULL) {
            return NGX_CONF_ERROR;
        }

        *pca = ngx_http_pki_find_ca(cf, &value[i]);
        if (*pca == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown CA \"%V\" (declare pki_ca before use)",
                               &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_http_pki_content(cf, cmd, ngx_http_ocsp_handler) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

#if (NGX_PCRE)
    if (clcf->regex != NULL) {
        /* the GET request is what follows the location's prefix */
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0, "ocsp_responder in the "
                           "regex location \"%V\": GET requests (RFC "
                           "5019) are answered malformedRequest there, "
                           "only POST works; use a prefix location",
                           &clcf->name);
    }
#endif

    omcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ocsp_module);

    if (omcf->line == 0) {
        omcf->file = cf->conf_file->file.name;
        omcf->line = cf->conf_file->line;
    }

    return NGX_CONF_OK;
}


/* ocsp_responder_signer CA CERT KEY; */

static char *
ngx_http_ocsp_signer(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ocsp_loc_conf_t *olcf = conf;

    BIO                 *bio;
    ngx_str_t           *value, cert, key;
    pki_result_t         res;
    pki_ocsp_signer_t   *sg;
    ngx_pool_cleanup_t  *cln;

    (void) cmd;

    value = cf->args->elts;

    if (olcf->signers == NGX_CONF_UNSET_PTR) {
        olcf->signers = ngx_array_create(cf->pool, 2,
                                         sizeof(pki_ocsp_signer_t));
        if (olcf->signers == NULL) {
            return NGX_CONF_ERROR;
        }

        /* frees every signer of the array (which may move as it grows) */
        cln = ngx_pool_cleanup_add(cf->pool, 0);
        if (cln == NULL) {
            return NGX_CONF_ERROR;
        }

        cln->handler = ngx_http_ocsp_signer_cleanup;
        cln->data = olcf->signers;
    }

    sg = ngx_array_push(olcf->signers);
    if (sg == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(sg, sizeof(pki_ocsp_signer_t));

    sg->ca = ngx_http_pki_find_ca(cf, &value[1]);
    if (sg->ca == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown CA \"%V\" (declare pki_ca before use)",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    cert = value[2];
    key = value[3];

    if (ngx_conf_full_name(cf->cycle, &cert, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    bio = BIO_new_file((char *) cert.data, "r");
    if (bio != NULL) {
        sg->cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
    }

    if (sg->cert == NULL) {
        ERR_clear_error();
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cannot read the OCSP responder certificate "
                           "\"%V\"", &cert);
        return NGX_CONF_ERROR;
    }

    /* a PEM file or a key in a pki_key_vault token; the shared module
     * owns it (reopened in each worker, freed with the cycle) */

    sg->key = ngx_http_pki_key(cf, &key, "ocsp_responder_signer");
    if (sg->key == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_pki_signaller()) {
        return NGX_CONF_OK;     /* "nginx -s": the key was not opened */
    }

    pki_result_init(&res);

    if (pki_ocsp_signer_check(sg, &res) != PKI_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ocsp_responder_signer \"%V\": %s",
                           &cert, res.detail);
        return NGX_CONF_ERROR;
    }

    if (res.log[0] != '\0') {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "ocsp_responder_signer \"%V\": %s", &cert,
                           res.log);
    }

    return NGX_CONF_OK;
}


static void
ngx_http_ocsp_signer_cleanup(void *data)
{
    ngx_array_t *signers = data;

    ngx_uint_t          i;
    pki_ocsp_signer_t  *sg;

    sg = signers->elts;

    /* the keys belong to ngx_http_pki_module */

    for (i = 0; i < signers->nelts; i++) {
        X509_free(sg[i].cert);
    }
}
