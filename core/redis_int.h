/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Internal interface of the Redis layer (redis.c) for code that opens a
 * hiredis context by other means (the fuzz harness).  Not exported.
 */

#ifndef PKI_REDIS_INT_H
#define PKI_REDIS_INT_H

#include <hiredis.h>

#include "pki.h"


/* Most array elements a reply may announce, all its arrays together.
 * hiredis allocates the element vector as soon as it reads "*N", so
 * without a bound one line from a broken or hostile server costs N
 * pointers and a walk over them (and nested headers multiply it). */
#define PKI_REDIS_MAX_ELEMENTS  (1 << 22)


/* Makes c's reader refuse arrays over PKI_REDIS_MAX_ELEMENTS (the
 * command then fails as a protocol error of that connection). */
void pki_int_redis_limit_reader(redisContext *c);

/* Reads a string reply of exactly n non-negative decimal numbers
 * separated by one space each ("3 1700000000 0") into out[0..n-1].
 * Returns 0 for anything else: another type, an empty or overlong
 * string, a sign, a NUL byte, extra text, a value past LLONG_MAX. */
int pki_int_redis_numbers(const redisReply *v, long long *out, size_t n);

/* One ZMSCORE of the n members argv[2] .. argv[n + 1] (lengths in lens)
 * in the sorted set key; argv[0], argv[1] and their lengths are set here.
 * out[i]: member i's score, or -1 when it is not there or its score is
 * not a number.  Drops the connection on an unexpected reply. */
pki_status_t pki_int_redis_zmscore(pki_redis_t *r, const char *key,
    const char **argv, size_t *lens, size_t n, double *out,
    pki_result_t *res);

/* One command (a redisReply *, freeReplyObject() it), NULL with res filled
 * on error; *sent set to 1 when the command was written whole but no
 * answer came (Redis may have run it), left as is otherwise (no
 * connection, a failed write, an error reply).  For core/metrics.c and
 * core/scep.c (a write that must be undone when it ran). */
void *pki_int_redis_command_sent(pki_redis_t *r, int argc, const char **argv,
    const size_t *lens, int *sent, pki_result_t *res);

/* The Redis server's clock in ms since the epoch, -1 (res filled) when it
 * cannot be read.  For times that several hosts compare. */
long long pki_int_redis_time_ms(pki_redis_t *r, pki_result_t *res);

/* A copy of r with its own connections, whose connect and each command
 * wait at most timeout_ms (pki_redis_free() it).  For core/metrics.c. */
pki_redis_t *pki_int_redis_dup(const pki_redis_t *r, int timeout_ms,
    pki_result_t *res);

#endif /* PKI_REDIS_INT_H */
