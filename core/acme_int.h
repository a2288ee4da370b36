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
redisReply *pki_int_redis_cmd(pki_redis_t *r, int argc, const char **argv,
    const size_t *lens, pki_result_t *res);


#endif /* PKI_ACME_INT_H */
