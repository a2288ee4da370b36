/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Internal interfaces of the SCEP engine (scep.c) shared with redis.c and
 * admin.c.  Nothing here is exported from libpkicore.so.
 */

#ifndef PKI_SCEP_INT_H
#define PKI_SCEP_INT_H

#include <cJSON.h>
#include <hiredis.h>

#include "pki.h"


/* redis.c: one raw command (NULL with res filled; also in acme_int.h) and
 * dropping this thread's connection after an unexpected reply. */
redisReply *pki_int_redis_cmd(pki_redis_t *r, int argc, const char **argv,
    const size_t *lens, pki_result_t *res);
void pki_int_redis_drop(pki_redis_t *r);

/* An admin body's NUL in a string or member given twice: 1, res filled
 * (core/scep.c; the admin API's parser uses it too). */
int pki_int_json_hidden(const unsigned char *body, size_t len,
    const cJSON *root, pki_result_t *res);

/* 1 when nothing but JSON whitespace lies from end to last (what follows
 * the object cJSON parsed in an admin body; core/scep.c). */
int pki_int_json_rest_blank(const char *end, const char *last);

/* scep.c: the admin API's "scep/..." endpoints.  path is below "scep/".
 * On success returns PKI_OK with *status (200, 201) and *out (a JSON
 * object the caller deletes); otherwise a status with res filled.  *made
 * names a one-time challenge made and audited (else its kind is NONE),
 * also when the answer then failed: the caller withdraws it unless the
 * answer reaches the client.  cas (ncas): the CAs a challenge may be
 * bound to, and their templates. */
pki_status_t pki_int_scep_admin(pki_redis_t *r, pki_ca_t *const *cas,
    size_t ncas, const char *method, const char *path,
    const unsigned char *body, size_t body_len, const char *identity,
    int *status, cJSON **out, pki_admin_made_t *made, pki_result_t *res);

/* scep.c: deletes a one-time challenge by its Redis key (made->key):
 * PKI_OK, PKI_NOT_FOUND when it was already gone, else res filled. */
pki_status_t pki_int_scep_chal_delete(pki_redis_t *r, const char *key,
    pki_result_t *res);

/* scep.c: GET scep/pending, the requests waiting for manual approval,
 * oldest expiry first: {"pending": [{"transaction_id", "subject",
 * "sans", "template", "ca", "client", "created", "expires"}, ...],
 * "next_cursor": "C" or "0" when done}.  cursor: NULL or "0" starts, else
 * a next_cursor of an earlier page (PKI_MALFORMED otherwise); limit >= 1.
 * A page may hold fewer than limit entries while next_cursor is not "0"
 * (decided and expired requests are dropped from the index as met). */
pki_status_t pki_int_scep_pending(pki_redis_t *r, const char *cursor,
    size_t limit, cJSON **out, pki_result_t *res);


#endif /* PKI_SCEP_INT_H */
