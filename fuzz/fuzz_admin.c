/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The revocation admin API engine (pki_admin_handle): JSON bodies, paths
 * and query strings.
 *
 * Input: byte 0 chooses the request shape, the rest is split by it.
 *   bits 0-1  method GET, POST, HEAD, DELETE
 *   bit 2     no authenticated identity (403 path)
 *   bit 3     max_body 64 instead of the default
 *   bits 4-5  0: rest is "PATH\nQUERY\nBODY" (missing parts empty)
 *             1: path "revoke", rest is the JSON body (method POST)
 *             2: path "certificates", rest is the query (method GET)
 *             3: path "certificates/" + rest (method GET), query "ca=issuing"
 * Redis is down: a request that parses ends in 503, the rest in 4xx.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char               *path, *q, *nl;
    uint8_t             mode;
    pki_admin_req_t     req;
    pki_admin_conf_t    conf;
    pki_admin_resp_t    resp;

    static const char  *methods[] = { "GET", "POST", "HEAD", "DELETE" };

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
    conf.max_body = (mode & 0x08) ? 64 : 0;

    memset(&req, 0, sizeof(req));
    req.method = methods[mode & 0x03];
    req.identity = (mode & 0x04) ? NULL : "fuzz-admin";
    req.client = "192.0.2.7";

    path = NULL;

    switch ((mode >> 4) & 0x03) {
    case 0:
        /* PATH \n QUERY \n BODY, on the raw bytes (NULs included) */
        req.path = (const char *) data;
        nl = memchr(data, '\n', size);
        req.path_len = nl ? (size_t) (nl - (const char *) data) : size;
        if (nl) {
            q = nl + 1;
            req.query = q;
            nl = memchr(q, '\n', size - (size_t) (q - (const char *) data));
            req.query_len = nl ? (size_t) (nl - q)
                               : size - (size_t) (q - (const char *) data);
            if (nl) {
                req.body = (const unsigned char *) nl + 1;
                req.body_len = size - (size_t) (nl + 1 - (const char *) data);
            }
        }
        break;

    case 1:
        req.method = "POST";
        req.path = "revoke";
        req.path_len = 6;
        req.body = data;
        req.body_len = size;
        break;

    case 2:
        req.method = "GET";
        req.path = "certificates";
        req.path_len = 12;
        req.query = (const char *) data;
        req.query_len = size;
        break;

    default:
        req.method = "GET";
        path = malloc(size + 13);
        if (path == NULL) {
            abort();
        }
        memcpy(path, "certificates/", 13);
        if (size) {
            memcpy(path + 13, data, size);
        }
        req.path = path;
        req.path_len = size + 13;
        req.query = "ca=issuing";
        req.query_len = 10;
        break;
    }

    pki_admin_handle(&conf, &req, &resp);

    if (pki_fuzz_verbose()) {
        fprintf(stderr, "admin mode %02x: %d %s (%s)\n", mode,
                resp.http_status, resp.res.detail, resp.res.log);
    }
    if (resp.http_status < 400 || resp.http_status > 599
        || resp.body == NULL || resp.body_len == 0)
    {
        abort();                /* nothing succeeds without the store */
    }

    pki_admin_resp_free(&resp);
    free(path);

    return 0;
}
