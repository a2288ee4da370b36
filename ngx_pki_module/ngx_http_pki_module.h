
/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The thin API that ngx_http_pki_module.so exports to the protocol modules
 * (ngx_http_est_module.so, ...).  nginx loads modules RTLD_GLOBAL, so
 * "load_module ngx_http_pki_module.so;" must come before the protocol
 * modules.  Everything else a protocol module needs comes from pki.h.
 */


#ifndef _NGX_HTTP_PKI_MODULE_H_INCLUDED_
#define _NGX_HTTP_PKI_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <pki.h>


/*
 * Small response helpers shared by the protocol modules.
 * ngx_http_pki_cstr: a NUL-terminated copy from the pool (NULL: no memory).
 * ngx_http_pki_add_header: one more response header (value not copied; NULL:
 * no memory).  ngx_http_pki_send_plain: a complete text/plain answer with an
 * optional Retry-After, returned by the content handler or its done handler;
 * a request body not read (nor being read) is discarded first
 * (ngx_http_pki_body_unwanted()), as ngx_http_pki_send_json() does.
 */
char *ngx_http_pki_cstr(ngx_pool_t *pool, ngx_str_t *s);
/* The user name auth_basic verified for r, else an empty string (never
 * one nginx parsed from the Authorization header without checking it, and
 * none for a subrequest). */
void ngx_http_pki_verified_user(ngx_http_request_t *r, ngx_str_t *user);
/* Keeps user as r's verified name (ngx_http_pki_module.c, after the
 * access phase). */
ngx_int_t ngx_http_pki_metrics_set_user(ngx_http_request_t *r,
    ngx_str_t *user);
ngx_table_elt_t *ngx_http_pki_add_header(ngx_http_request_t *r,
    const char *key, u_char *value, size_t len);
ngx_int_t ngx_http_pki_send_plain(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *text, ngx_uint_t retry_after);

/*
 * TLS 1.3 early data (0-RTT, RFC 8446 2.3 and 8): what a client sends with
 * its ClientHello can be replayed, by anyone who saw it, as often as the
 * server accepts it (ssl_early_data on).  ngx_http_pki_too_early() is 1
 * when r may have come in early data: the handshake is not complete yet,
 * as $ssl_early_data tells.  r's status line is then "425 Too Early", and
 * a request that changes state is answered NGX_HTTP_PKI_TOO_EARLY before
 * anything is done (RFC 8470 5.2): the client sends it again once the
 * handshake is complete.  0 otherwise, and without TLS.
 */
#define NGX_HTTP_PKI_TOO_EARLY  425

ngx_int_t ngx_http_pki_too_early(ngx_http_request_t *r);

/*
 * For an answer that carries a secret (a server-generated private key, a
 * new EAB key): over TLS nginx gathers what it sends in c->ssl->buf
 * (NGX_SSL_BUFFER) and frees or reuses that buffer without wiping it.
 * ngx_http_pki_send_unbuffered() makes r's answer go from its own buffer
 * straight to SSL_write() (which encrypts in place in its own record
 * buffer) over HTTP/1.x, and closes the connection after it: nginx's
 * unbuffered send skips limit_rate and cannot send file buffers (kTLS
 * sendfile), so it must not carry other requests.  Call it before the
 * header is sent.  HTTP/2: DATA frames go through the connection's
 * buffer, shared by its streams, which this does not change.  gzip is
 * turned off for the answer (its deflate buffers are not wiped either);
 * the other filters that rewrite a body (sub_filter, ssi, addition, xslt)
 * act only on the types they are given, text/html by default, never
 * multipart/mixed nor application/json unless configured so.
 */
void ngx_http_pki_send_unbuffered(ngx_http_request_t *r);


/* runs in a pool thread: may block, must not touch nginx objects */
typedef void (*ngx_http_pki_work_pt)(void *data);

/* runs back on the event loop once the work is done */
typedef void (*ngx_http_pki_done_pt)(ngx_http_request_t *r, void *data);


/*
 * Configuration time (directive handlers): named objects declared by
 * pki_ca / pki_template blocks earlier in the same http{} block.
 * NULL if there is none by that name.
 */
pki_ca_t *ngx_http_pki_find_ca(ngx_conf_t *cf, ngx_str_t *name);
pki_template_t *ngx_http_pki_find_template(ngx_conf_t *cf, ngx_str_t *name);
/* Both by name, and the CA must allow the template; NGX_ERROR after an
 * emerg line naming what is wrong. */
ngx_int_t ngx_http_pki_resolve(ngx_conf_t *cf, ngx_str_t *ca_name,
    ngx_str_t *tmpl_name, pki_ca_t **ca, pki_template_t **tmpl);

/*
 * Configuration time: the directive that turns a protocol on in a location,
 * "NAME CA TEMPLATE;" or "NAME off;" (acme, est, scep).  Refuses a second
 * one in the location (*ca set already: is duplicate), one argument other
 * than "off", and what ngx_http_pki_resolve() refuses.  "off": *enable 0,
 * *ca and *tmpl NULL.  Else *enable 1 with the CA and template, the
 * location shows on /pki/metrics under NAME, and *first_file and
 * *first_line keep the place of the http{} block's first such directive
 * (while *first_line is 0).  Returns what a directive handler returns.
 */
char *ngx_http_pki_proto_conf(ngx_conf_t *cf, ngx_flag_t *enable,
    pki_ca_t **ca, pki_template_t **tmpl, ngx_str_t *first_file,
    ngx_uint_t *first_line);

/* Configuration time, postconfiguration: when "directive" was used
 * (first_line not 0) and http{} has no pki_redis, an emerg line naming
 * where it was first used, and NGX_ERROR. */
ngx_int_t ngx_http_pki_needs_redis(ngx_conf_t *cf, const char *directive,
    ngx_str_t *first_file, ngx_uint_t first_line);

/*
 * 1 in the process of "nginx -s reload|reopen|quit|stop": it parses the
 * configuration only to find the "pid" file and signal the master, and
 * exits.  It opens nothing: no vault (no PKCS#11 module, no token login,
 * no PIN file), no key (nor its test signature and its match with a
 * certificate), no secret file; configuration-time checks that need an
 * open key are left out, as is every side effect (nginx itself does not
 * create paths nor open logs in it).  So neither SOFTHSM2_CONF nor the
 * PIN is needed to signal nginx, and a signal leaves no trace on the HSM.
 * "nginx -t" still opens and checks everything.
 */
#define ngx_http_pki_signaller()  (ngx_process == NGX_PROCESS_SIGNALLER)

/*
 * Configuration time: a key by reference, a PEM file (relative to the
 * prefix) or a "pkcs11:" URI of a token declared by a pki_key_vault before.
 * Opened at once (so "nginx -t" proves it), reopened in every worker after
 * fork, closed and freed with the cycle; declared only, not opened, in the
 * signaller (ngx_http_pki_signaller()).  "what" names the directive in
 * the error; NULL after the error was logged.
 */
pki_key_t *ngx_http_pki_key(ngx_conf_t *cf, ngx_str_t *ref, const char *what);

/* configuration time: 1 if pki_redis is configured */
ngx_int_t ngx_http_pki_has_redis(ngx_conf_t *cf);

/* run time: the pki_redis handle, or NULL if not configured */
pki_redis_t *ngx_http_pki_redis(ngx_http_request_t *r);

/* run time: every pki_ca of the http{} block (*n of them; NULL if none) */
pki_ca_t *const *ngx_http_pki_cas(ngx_http_request_t *r, size_t *n);

/* configuration time: parses the current directive's arguments as
 * pki_redis does (ADDRESS [db=] [namespace=] [timeout=] [password_file=])
 * into a new store freed with the configuration (acme_redis) */
char *ngx_http_pki_redis_parse(ngx_conf_t *cf, pki_redis_t **out);

/* configuration time: an acme_redis store, whose copies of the ACME
 * accounts the admin API's account revocation rewrites (core/acme.c) */
char *ngx_http_pki_acme_state_add(ngx_conf_t *cf, pki_redis_t *r);

/* run time: every acme_redis store of the http{} block (*n of them, NULL
 * when none), for an ACME account's deactivation (core/acme.c) */
pki_redis_t **ngx_http_pki_acme_states(ngx_http_request_t *r, size_t *n);

/*
 * Runs work(data) in the pki_thread_pool, then done(r, data) on the event
 * loop, then ngx_http_run_posted_requests().  Takes a reference on the
 * request (r->main->count++) and blocks it while the task runs; done() must
 * finalize the request.  Returns NGX_OK when posted; NGX_DECLINED when the
 * queue is full (answer 503 with Retry-After); NGX_ERROR otherwise.
 */
ngx_int_t ngx_http_pki_post(ngx_http_request_t *r, ngx_http_pki_work_pt work,
    ngx_http_pki_done_pt done, void *data);
/* The same for a request that signs or decrypts with a CA's, an RA's or
 * a responder's key: in the pki_sign_thread_pool when there is one (a
 * token that stops answering then holds its threads only, and the Redis
 * work of the other requests goes on), else in the pki_thread_pool. */
ngx_int_t ngx_http_pki_post_sign(ngx_http_request_t *r,
    ngx_http_pki_work_pt work, ngx_http_pki_done_pt done, void *data);

/*
 * 1 when the key's vault is hung (a token call has not returned for the
 * vault's call_timeout): a request that would sign or decrypt with it is
 * answered 503 with Retry-After at once instead of being posted, so that
 * a hung token does not take every thread of the pool.  Lock-free, no
 * token call; 0 for a file key.
 */
ngx_uint_t ngx_http_pki_key_hung(pki_key_t *key);

/*
 * Request body with a cap, gathered in memory against the worker's
 * pki_body_memory.  ngx_http_pki_read_body() answers 413 at once when
 * Content-Length is over max, 503 when the budget has no room left for a
 * body's first buffer, else starts ngx_http_read_client_request_body(r,
 * handler) and returns its result: 413 too when a body without
 * Content-Length is over max in what that first read finds, 503 when it
 * would go over the budget there.  One over max or the budget only in data
 * read later ends there, and the handler is called, the connection not
 * kept alive (HTTP/1.1) or the stream's further DATA skipped (HTTP/2).  In
 * the handler, ngx_http_pki_request_body() returns the body in one buffer
 * from r->pool: NGX_OK, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE (body over max),
 * NGX_HTTP_SERVICE_UNAVAILABLE (over the budget: the module answers 503
 * with Retry-After) or NGX_HTTP_INTERNAL_SERVER_ERROR.  An absent body
 * gives len 0.
 */
ngx_int_t ngx_http_pki_read_body(ngx_http_request_t *r, size_t max,
    ngx_http_client_body_handler_pt handler);
ngx_int_t ngx_http_pki_request_body(ngx_http_request_t *r, size_t max,
    ngx_str_t *body);

/*
 * Before a module answers 413 or 503 for a body that
 * ngx_http_pki_read_body() refused (its own error form, not nginx's HTML
 * page): no "100 Continue" is sent for it, and the rest of a body that
 * was being read is never read (no more reading, no keep-alive).  A body
 * refused by its Content-Length, or before it is read (503), is discarded
 * by nginx; with keep, the connection stays open when that works, else it
 * closes after the answer.
 */
void ngx_http_pki_body_refused(ngx_http_request_t *r, ngx_uint_t keep);
/* An answer that will not read r's body: no "100 Continue", and the body
 * discarded as it comes (else it would be parsed as the connection's next
 * request), or the connection closed after the answer. */
void ngx_http_pki_body_unwanted(ngx_http_request_t *r);
/* ngx_http_send_header(), and an answer without validators (no ETag, no
 * Last-Modified) is sent whole whatever conditional headers came: nginx's
 * not-modified filter would answer If-None-Match: * with a bodiless 304,
 * and If-Match or If-Unmodified-Since with 412. */
ngx_int_t ngx_http_pki_send_header(ngx_http_request_t *r);
/* ngx_http_pki_send_header(), then b, the whole body (last_buf set here
 * for the main request), unless the header only is sent (r->header_only,
 * which a HEAD or a NULL b needs set by the caller); returns what the
 * content handler returns. */
ngx_int_t ngx_http_pki_send_buf(ngx_http_request_t *r, ngx_buf_t *b);

/*
 * In the handler of a directive that makes handler the location's content
 * handler (ocsp_responder, scep, pki_admin, ...): sets it, or refuses the
 * directive (an emerg line naming it, NGX_CONF_ERROR) when the location
 * already has another content handler, ours or another module's, whatever
 * the order: one set after it by another module's directive (proxy_pass)
 * is refused in the shared module's merge, naming this directive and its
 * line.  The if and limit_except blocks of the location get the handler
 * too (nginx serves the methods limit_except restricts from the block's
 * configuration, which has no content handler of its own).  Returns what
 * a directive handler returns.
 */
char *ngx_http_pki_content(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_handler_pt handler);

/*
 * In a location's merge: where handler answers and refuses a body over max
 * itself (in its protocol's form), nginx's own check (client_max_body_size)
 * would answer some of those first with its HTML page, so it is turned off
 * there.  A limit smaller than max (the operator's) becomes the module's
 * cap there (ngx_http_pki_body_max()); a limit where another handler
 * answers (a nested proxy) stays nginx's.  The limit turned off still
 * holds another module that reads the body before handler (mirror, Lua,
 * njs): the shared module's body filter checks it.
 */
void ngx_http_pki_own_body_cap(ngx_conf_t *cf, ngx_http_handler_pt handler,
    size_t max);

/* The body cap in force for r: max, or the location's client_max_body_size
 * where that is smaller (ngx_http_pki_read_body() applies it; a module
 * names it in its 413). */
size_t ngx_http_pki_body_max(ngx_http_request_t *r, size_t max);

/* The len bytes at src percent-decoded into dst (room for len bytes):
 * each "%" followed by two hex digits, nothing else decoded ("+" stays);
 * the decoded length, or -1 for a broken escape (nginx's own
 * ngx_unescape_uri() drops those, so "GetCACaps%" would pass for a
 * name). */
ssize_t ngx_http_pki_unescape(u_char *dst, u_char *src, size_t len);

/* 405 for a resource that is read only, as text/plain like the module's
 * other errors (not nginx's HTML page), with the Allow header RFC 9110
 * 15.5.6 requires (GET, HEAD); the handler returns what it returns. */
ngx_int_t ngx_http_pki_read_only(ngx_http_request_t *r);

/* A complete application/json answer (Cache-Control: no-store); len 0
 * sends the header only.  body must live as long as r->pool. */
ngx_int_t ngx_http_pki_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len);



/* ---- metrics, dashboard, transaction log (ngx_http_pki_metrics.c) ------
 *
 * Every issuance and revocation that goes through the core (pki_issue,
 * pki_record_revoke) is logged and counted with no code in the protocol
 * module.  Two calls make a protocol module's requests show up on
 * /pki/metrics and /pki/dashboard, by protocol, CA, template and outcome:
 *
 * 1. Configuration time, in the protocol's location directive handler
 *    (e.g. "acme_server ..."):
 *
 *        ngx_http_pki_metrics_location(cf, "acme");
 *
 *    Every request of that location (and its nested locations) is then
 *    counted, with its latency, even when nginx itself refuses it (401
 *    from auth_basic, 413, ...): the outcome comes from the HTTP status.
 *
 * 2. Run time, once the core answered (before or after sending):
 *
 *        ngx_http_pki_metrics_mark(r, "acme", pki_ca_name(ca),
 *                                  pki_template_name(t), res.status,
 *                                  res.detail);
 *
 *    gives the CA, template, the outcome class (pki_outcome_class():
 *    success, auth, policy, malformed, backend) and the public reason
 *    (quoted parts dropped, numbers made "#", to bound the label set).  A
 *    refused request (status != PKI_OK) is also appended to the
 *    transaction log with the client's address and identity (one without
 *    an authenticated identity through the log's refusal bucket, past it
 *    counted into a summary entry).  ca, tmpl and reason may be NULL; the
 *    strings are copied.
 */
void ngx_http_pki_metrics_location(ngx_conf_t *cf, const char *proto);
void ngx_http_pki_metrics_mark(ngx_http_request_t *r, const char *proto,
    const char *ca, const char *tmpl, pki_status_t status,
    const char *reason);

/*
 * The identity the protocol itself verified for r, besides nginx's own
 * (auth_basic, a client certificate): an ACME account whose signature
 * and fresh nonce verified, a SCEP requester whose challenge or renewal
 * signer did (the core's resp.requester).  A refusal with one is logged
 * as the requester's own entry, not through the refusal bucket; it comes
 * before nginx's identity.  Only a verified one may be given: a name the
 * client merely claimed would let anyone flood the log.  who NULL or "":
 * none; copied (out of memory: none).
 */
void ngx_http_pki_metrics_requester(ngx_http_request_t *r, const char *who);

/*
 * ACME: the engine answers every 4xx problem with PKI_MALFORMED; this gives
 * the outcome class from the problem type that starts res.detail
 * (unauthorized, accountDoesNotExist, ... -> auth; rejectedIdentifier,
 * rateLimited, orderNotReady, ... -> policy).  Other statuses pass through.
 */
pki_status_t ngx_http_pki_metrics_acme_status(pki_status_t status,
    const char *detail);

/*
 * The thread-pool glue (ngx_http_pki_post) calls this when a task wrote
 * to the transaction log: NGX_OK when that is durable already, NGX_AGAIN
 * when resume(data) will be called on the event loop once a sync task made
 * it durable (no pool thread waits for the fdatasync).  w is the caller's
 * storage, linked into the list of waiters until resume(data) is called:
 * it must live that long (no allocation here, so nothing can fail).
 */
typedef struct ngx_http_pki_audit_waiter_s  ngx_http_pki_audit_waiter_t;

struct ngx_http_pki_audit_waiter_s {
    ngx_http_pki_audit_waiter_t  *next;
    unsigned long long            ticket;
    void                        (*resume)(void *data);
    void                         *data;
};

ngx_int_t ngx_http_pki_audit_wait(ngx_http_pki_audit_waiter_t *w,
    unsigned long long ticket, void (*resume)(void *data), void *data);

/* Worker exit: stops the transaction log's syncer thread (called before
 * the shared module waits for the process to be down to one thread). */
void ngx_http_pki_audit_exit_threads(void);
/* Worker exit, once the pool threads are gone and before the key vaults
 * close: writes what is held and the exit checkpoint, closes the log. */
void ngx_http_pki_audit_exit(ngx_cycle_t *cycle);

/* helpers the metrics module takes from the shared module */
extern ngx_uint_t  ngx_http_pki_tasks_in_flight;
/* a thread task posted (1) or back (-1): the shared in-flight gauge */
void ngx_http_pki_metrics_tasks(ngx_int_t delta);
/* worker exit: pool threads outlived the wait (nginx skipped their exit) */
extern ngx_uint_t  ngx_http_pki_threads_left;
/* first thing in every pool task of the modules: the worker's exit waits
 * for the threads that ran one, not for threads of a PKCS#11 library */
void ngx_http_pki_thread_enter(void);
/* 1 when a browser sent r for another site's page (Sec-Fetch-Site,
 * Origin); tools send neither */
ngx_int_t ngx_http_pki_cross_site(ngx_http_request_t *r);
/* ngx_thread_task_post() for every pool task of the modules, counted:
 * the worker's exit knows whether one is still queued */
ngx_int_t ngx_http_pki_thread_post(ngx_thread_pool_t *tp,
    ngx_thread_task_t *task);
pki_redis_t *ngx_http_pki_cycle_redis(ngx_cycle_t *cycle);
ngx_thread_pool_t *ngx_http_pki_cycle_thread_pool(ngx_cycle_t *cycle);
/* the CRLs' lifetime (s): the shortest pki_crl_next_update of the
 * pki_crl locations; without one, of the SCEP locations
 * (ngx_http_pki_crl_served()); its default when none serves CRLs */
time_t ngx_http_pki_crl_interval(ngx_http_request_t *r);
/* In the merge of a SCEP location (GetCRL serves the CA's CRL): its
 * pki_crl_next_update takes part in the shortest value used where no
 * pki_crl location is (the shared module's configuration of the location
 * is merged by then). */
void ngx_http_pki_crl_served(ngx_conf_t *cf);
pki_ca_t *ngx_http_pki_cycle_ca(ngx_cycle_t *cycle, ngx_uint_t i);
/* an ASN1_TIME as Unix time, (time_t) -1 when it cannot be read */
time_t ngx_http_pki_asn1_time(const ASN1_TIME *t);
pki_vault_t *ngx_http_pki_find_vault(ngx_conf_t *cf, const char *token);

/*
 * Runs work(data) in the pki_thread_pool without holding r (the request
 * may be finished long before), then done(data) on the event loop, which
 * frees data.  NGX_OK when posted, NGX_DECLINED when the queue is full,
 * NGX_ERROR otherwise (data is then the caller's to free).
 */
typedef void (*ngx_http_pki_detached_pt)(void *data);

ngx_int_t ngx_http_pki_post_detached(ngx_http_request_t *r,
    ngx_http_pki_work_pt work, ngx_http_pki_detached_pt done, void *data);

/* The same with no request: to the pool tp (the request's, or
 * ngx_http_pki_cycle_thread_pool()), errors to log. */
ngx_int_t ngx_http_pki_post_detached_tp(ngx_thread_pool_t *tp,
    ngx_log_t *log, ngx_http_pki_work_pt work, ngx_http_pki_detached_pt done,
    void *data);

/*
 * Load shedding (this worker): 1 while the pki thread pool's queue is
 * known to be full (a post failed on max_queue less than a second ago and
 * as many of this worker's tasks still wait), 0 otherwise.  Code that posts
 * its own tasks to the pool (ngx_thread_task_post) can skip the post then:
 * nginx writes an error line for every post the full queue refuses.
 * ngx_http_pki_post() and ngx_http_pki_post_detached() check it, and log
 * the requests they shed at most once a second, with the count.
 */
ngx_uint_t ngx_http_pki_pool_full(void);

/*
 * Tasks of this worker posted to the pki pool (pki_thread_pool, not
 * pki_sign_thread_pool) that no thread has taken up yet: 0 when a posted
 * task would start at once (as far as this worker's tasks tell).
 */
ngx_uint_t ngx_http_pki_pool_waiting(void);


#endif /* _NGX_HTTP_PKI_MODULE_H_INCLUDED_ */
