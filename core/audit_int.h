/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Internal side of the event hook (core/audit.c) for the core files that
 * time and count their work.  Nothing here is exported from libpkicore.so.
 */

#ifndef PKI_AUDIT_INT_H
#define PKI_AUDIT_INT_H

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


#endif /* PKI_AUDIT_INT_H */
