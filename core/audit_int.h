/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Internal side of the event hook (core/audit.c) for the core files that
 * time and count their work.  Nothing here is exported from libpkicore.so.
 */

#ifndef PKI_AUDIT_INT_H
#define PKI_AUDIT_INT_H

#include <signal.h>
#include <sys/types.h>

#include "pki.h"


/* Monotonic seconds. */
double pki_int_now(void);

/* A counted-only event (PKI_EV_SIGN, PKI_EV_REDIS) to the metrics sink:
 * a no-op when there is none, or while this thread signs an audit
 * checkpoint (not a CA signature).  seconds < 0: an error without a
 * latency (no connection).  what: the kind of signature ("certificate",
 * "crl", "other"), NULL for Redis. */
void pki_int_observe(pki_event_type_t type, double seconds,
    pki_status_t status, const char *what);

/* The thread's operation for the next issuance ("issue" when none was
 * set), then reset. */
const char *pki_int_take_operation(char buf[32]);

/* RFC 5280 name of a CRLReason code ("unknown" if none). */
const char *pki_int_reason_name(int reason);

/* redis.c: one command (a redisReply *, freeReplyObject() it), NULL with
 * res filled on error. */
void *pki_int_redis_command(pki_redis_t *r, int argc, const char **argv,
    const size_t *lens, pki_result_t *res);

/* redis.c: drops this thread's connection after an unexpected reply (also
 * in scep_int.h). */
void pki_int_redis_drop(pki_redis_t *r);

/* redis.c: pki_record_commit() that also appends a transaction-log entry
 * (time, fields) to the stream named by the full key "stream" in the same
 * script; rid (ridsize bytes) receives the entry's stream id.  With
 * stream NULL it is pki_record_commit(). */
pki_status_t pki_int_record_commit_carry(pki_redis_t *r,
    const pki_record_t *rec, const char *stream, const char *time,
    const char *body, size_t blen, char *rid, size_t ridsize,
    pki_result_t *res);

/* audit.c, for issue.c, redis.c and matter_api.c: 0 when a log is required
 * (pki_audit_set_required) and none is open, or when the entries it holds
 * not yet written reached max_backlog (pki_audit_backlog): an issuance or a
 * revocation is refused before anything is signed or changed; *why says
 * which. */
int pki_int_audit_ready(const char **why);

/* admin.c, for admin.c, scep.c and redis.c: the transaction log of an
 * admin action (an EAB key, a SCEP challenge or decision, a planned
 * revocation).  pki_int_admin_ready(): 0 with res failed (PKI_UNAVAILABLE)
 * while the log cannot take an entry (pki_int_audit_ready): the action
 * is refused before it changes anything.  pki_int_admin_audit(): the
 * durable entry of the action just done, a "request" entry of the
 * thread's actor (pki_event_set_actor: "admin", the identity, the
 * client); nothing secret goes into it.  Not PKI_OK: it was not written,
 * said in res->log. */
int pki_int_admin_ready(pki_result_t *res);
pki_status_t pki_int_admin_audit(const char *operation, const char *ca,
    const char *serial, const char *subject, const char *reason,
    pki_result_t *res);

/* audit.c, for issue.c: the stream key that carries the entries of CA
 * "ca" on store r to the default log, or NULL when they are written and
 * synced by the log itself (no log, no syncer, or not registered with
 * pki_audit_carry()). */
const char *pki_int_audit_stream(pki_redis_t *r, const char *ca);

/* audit.c, for issue.c: the fields of ev as the log writes them (the
 * thread's actor filled in), and the current time text; 0 if too long. */
int pki_int_audit_entry(const pki_event_t *ev, char *body, size_t size,
    size_t *blen, char time[40]);

/* audit.c, for issue.c: the entry of a commit that carried it (stream id
 * rid) is queued for the file; the thread's ticket waits for its write
 * only.  Then ev goes to the metrics sink alone. */
void pki_int_audit_carried(const char *stream, const char *time,
    const char *body, size_t blen, const char *rid);
void pki_int_event_sink(const pki_event_t *ev);

/* getpid(), without a system call after the first (reset by fork()). */
pid_t pki_int_pid(void);

/* A write to a socket whose peer went away raises SIGPIPE, which kills a
 * host that does not ignore it.  pki_int_sigpipe_block() keeps it from
 * this thread around such writes, pki_int_sigpipe_restore() swallows one
 * that became pending and restores the mask.  Both do nothing in a process
 * that ignores SIGPIPE (nginx sets SIG_IGN before its workers start): the
 * disposition is read once per process, so a host must not take SIG_IGN
 * back after its first Redis command or validation. */
typedef struct {
    sigset_t  old;
    int       pending_before;
    int       active;
} pki_sigpipe_t;

void pki_int_sigpipe_block(pki_sigpipe_t *sp);
void pki_int_sigpipe_restore(pki_sigpipe_t *sp);

/* The thread's operation for the next issuance, not reset. */
const char *pki_int_peek_operation(void);


#endif /* PKI_AUDIT_INT_H */
