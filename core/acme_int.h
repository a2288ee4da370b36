/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Internal interface of the ACME engine (acme.c) to the Redis layer
 * (redis.c).  Nothing here is exported from libpkicore.so.
 */

#ifndef PKI_ACME_INT_H
#define PKI_ACME_INT_H

#include <hiredis.h>

#include "pki.h"


/* One Redis command (binary safe, lens may be NULL for C strings is NOT
 * allowed: pass the lengths).  Returns the reply (caller frees with
 * freeReplyObject), or NULL with res filled (PKI_UNAVAILABLE); an error
 * reply is NULL too. */
/* Which Redis and namespace r is ("host:port db ns" or "unix db ns"),
 * into buf: the same text for two handles of one store. */
void pki_int_redis_id(const pki_redis_t *r, char *buf, size_t size);
redisReply *pki_int_redis_cmd(pki_redis_t *r, int argc, const char **argv,
    const size_t *lens, pki_result_t *res);


/* The same without the cap on argc (redis.c: PKI_REDIS_ARGS_MAX), for a
 * long MGET (a page of the orders list); the reply is a redisReply *. */
void *pki_int_redis_command(pki_redis_t *r, int argc, const char **argv,
    const size_t *lens, pki_result_t *res);

/* ncmd commands of argc arguments each, written at once and their
 * replies read after: one round trip.  argv and lens hold ncmd * argc
 * entries, one command after the other; replies[i] receives the reply of
 * command i (the caller frees each).  With arrays set, an error reply or
 * a reply other than an array fails the whole (PKI_UNAVAILABLE, no reply
 * kept); what names the commands in res. */
pki_status_t pki_int_redis_pipeline(pki_redis_t *r, size_t ncmd, int argc,
    const char **argv, size_t *lens, redisReply **replies, const char *what,
    int arrays, pki_result_t *res);


/* pki_jwk_parse() through a bounded per-process cache keyed by the exact
 * JWK text (jws.c): the same key, a reference the caller frees. */
EVP_PKEY *pki_int_jwk_cached(const char *json, size_t len,
    pki_result_t *res);

/* Empties that cache (unit tests, leak checks). */
void pki_int_jwk_cache_clear(void);


/* Control characters in s become '?' (util.c): text for the error log. */
void pki_int_tame(char *s);

/* Bytes of s outside well-formed UTF-8 become '?' (util.c): what a JSON
 * answer echoes of a client's value. */
void pki_int_utf8_fix(char *s);


/* cJSON_ParseWithLength() for what a client sent (jws.c): NULL also for
 * text after the value, a member name repeated in one object (RFC 7515
 * 5.2 lets a JWS parser refuse these, and a proxy that reads the last one
 * would see another request), "\u0000" (a C string would end there) and
 * raw control characters. */
struct cJSON *pki_int_json_strict(const void *text, size_t len);

/* pki_int_json_strict() that also refuses, before cJSON builds anything,
 * text of more than max_values values (0: any number) or nested deeper
 * than the strict parser takes; *why (when not NULL) then says, after
 * "body ", why the text was refused ("is not JSON" when cJSON refused it),
 * NULL when it was not. */
struct cJSON *pki_int_json_strict_max(const void *text, size_t len,
    size_t max_values, const char **why);

/* pki_acme_eab_disable(), *already 1 when the key was disabled before
 * and its transaction log entry written (nothing written then).  With
 * already the change is marked not yet logged: the caller removes the
 * mark (pki_int_acme_eab_logged) once its entry is durable, and a call
 * that finds the key disabled with the mark still there (the change was
 * made after its caller gave up) answers *already 0, so that its caller
 * writes the missing entry. */
pki_status_t pki_int_acme_eab_disable(pki_redis_t *r, const char *kid,
    int *already, pki_result_t *res);
void pki_int_acme_eab_logged(pki_redis_t *r, const char *kid,
    pki_result_t *res);

/* pki_acme_account_revoke() marks the revocation not yet logged (with
 * *changed 1 also when it finds the account revoked and still marked):
 * the caller removes the mark once its entry is durable. */
void pki_int_acme_account_logged(pki_redis_t *r, const char *id,
    pki_result_t *res);

/* 1 when text is well-formed UTF-8 throughout (RFC 3629; jws.c). */
int pki_int_utf8_valid(const void *text, size_t len);


#endif /* PKI_ACME_INT_H */
