/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The OCSP responder engine (pki_ocsp_handle) and its cache key
 * (pki_ocsp_cache_key) on hostile requests.
 *
 * Input: byte 0 chooses the request shape, the rest is the request.
 *   bit 0  GET (the rest is the base64 path segment, percent-decoded as
 *          the glue hands it over) instead of POST (the rest is DER)
 *   bit 1  unknown_revoked on
 *   bit 2  no Content-Type (POST)
 *   bit 3  Content-Type "text/plain" (POST: refused)
 *   bit 4  no nextUpdate
 * The CAs are the fixture's root and issuing CA; Redis is down, so a
 * request naming them gets tryLater (or, for a serial no CA can have
 * issued, a signed "unknown"), anything else malformedRequest or
 * unauthorized; never "good".
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>

#include "fuzz.h"


static const pki_fuzz_fixture_t  *fx;
static pki_ca_t                  *cas[2];


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;

    fx = pki_fuzz_fixture();
    cas[0] = fx->ca;
    cas[1] = fx->root;
    return 0;
}


/* Every answer is a DER OCSPResponse with the status the engine reports.
 * A successful one may exist without the store (a serial that no CA can
 * have issued, e.g. a negative one, is "unknown" without a lookup), but it
 * never says "good": only a record says that, and Redis is down. */
static void
pki_fuzz_check_answer(const pki_ocsp_resp_t *resp)
{
    int                   i, n, st;
    OCSP_RESPONSE        *or;
    OCSP_BASICRESP       *bs;
    OCSP_SINGLERESP      *single;
    const unsigned char  *p;

    if (resp->body == NULL || resp->body_len == 0) {
        abort();
    }

    p = resp->body;
    or = d2i_OCSP_RESPONSE(NULL, &p, (long) resp->body_len);
    if (or == NULL || p != resp->body + resp->body_len
        || OCSP_response_status(or) != resp->ocsp_status)
    {
        abort();
    }

    if (resp->ocsp_status == OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        bs = OCSP_response_get1_basic(or);
        if (bs == NULL) {
            abort();
        }

        n = OCSP_resp_count(bs);
        for (i = 0; i < n; i++) {
            single = OCSP_resp_get0(bs, i);
            st = OCSP_single_get0_status(single, NULL, NULL, NULL, NULL);
            if (st == V_OCSP_CERTSTATUS_GOOD) {
                abort();
            }
        }

        OCSP_BASICRESP_free(bs);
    }

    OCSP_RESPONSE_free(or);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t           mode;
    unsigned char     key[PKI_OCSP_KEY_LEN];
    pki_result_t      res;
    pki_ocsp_req_t    req;
    pki_ocsp_conf_t   conf;
    pki_ocsp_resp_t   resp;

    static const unsigned char  salt[] = "fuzz-salt";

    if (fx == NULL) {
        LLVMFuzzerInitialize(NULL, NULL);
    }

    if (size < 1) {
        return 0;
    }

    mode = data[0];
    data++;
    size--;

    memset(&conf, 0, sizeof(conf));
    conf.cas = cas;
    conf.ncas = 2;
    conf.redis = fx->dead_redis;
    conf.unknown_revoked = (mode & 0x02) != 0;
    conf.next_update = (mode & 0x10) ? 0 : 3600;

    memset(&req, 0, sizeof(req));
    req.method = (mode & 0x01) ? "GET" : "POST";
    req.content_type = (mode & 0x04) ? NULL
                       : (mode & 0x08) ? "text/plain"
                       : "application/ocsp-request";
    req.body = data;
    req.body_len = size;

    pki_ocsp_handle(&conf, &req, &resp);

    if (pki_fuzz_verbose()) {
        fprintf(stderr, "ocsp mode %02x: %d status %d %s (%s)\n", mode,
                resp.http_status, resp.ocsp_status, resp.res.detail,
                resp.res.log);
    }
    if (resp.http_status != 200 && resp.http_status != 405) {
        abort();
    }
    if (resp.http_status == 200) {
        pki_fuzz_check_answer(&resp);
    }
    pki_ocsp_resp_free(&resp);

    pki_result_init(&res);
    (void) pki_ocsp_cache_key(&req, salt, sizeof(salt) - 1, key, &res);
    (void) pki_ocsp_cache_key(&req, salt, sizeof(salt) - 1, key, NULL);

    ERR_clear_error();

    return 0;
}
