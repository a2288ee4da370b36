/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The EST engine (pki_est_handle) on hostile bodies.
 *
 * Input: byte 0 chooses the request shape, the rest is the body (base64 of
 * a PKCS#10, as a client sends it).
 *   bits 0-1  0 simpleenroll, 1 serverkeygen, 2 simplereenroll,
 *             3 simpleenroll with proof-of-possession linking
 *   bit 2     Content-Type "application/pkcs10; x=y" instead of the plain
 *   bit 3     authenticate with the fixture's client certificate, not a user
 *   bit 4     method GET instead of POST (405 path)
 * Redis is a socket that does not exist: parsing and policy run, then the
 * store fails at once (503).  simplereenroll stops at the client
 * certificate's record (Redis), so its policy step (pki_request_renewal)
 * is driven directly on the decoded body as well.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "fuzz.h"


static const pki_fuzz_fixture_t  *fx;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;

    fx = pki_fuzz_fixture();
    return 0;
}


static void
pki_fuzz_check_resp(const pki_est_resp_t *resp)
{
    if (resp->http_status < 200 || resp->http_status > 599
        || (resp->body == NULL && resp->body_len != 0))
    {
        abort();
    }

    /* no success without a working store */
    if (resp->http_status == 200) {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                derlen;
    uint8_t               mode;
    X509_REQ             *csr;
    pki_result_t          res;
    unsigned char        *der;
    pki_request_t         preq;
    pki_est_conf_t        conf;
    pki_est_req_t         req;
    pki_est_resp_t        resp;
    const unsigned char  *p;

    static const unsigned char  binding[] = "0123456789abcdef";

    if (fx == NULL) {
        fx = pki_fuzz_fixture();
    }

    if (size < 1) {
        return 0;
    }

    mode = data[0];
    data++;
    size--;

    memset(&conf, 0, sizeof(conf));
    conf.ca = fx->ca;
    conf.tmpl = fx->device;
    conf.redis = fx->dead_redis;

    memset(&req, 0, sizeof(req));
    req.method = (mode & 0x10) ? "GET" : "POST";
    req.content_type = (mode & 0x04) ? "application/pkcs10; x=y"
                                     : "application/pkcs10";
    req.body = data;
    req.body_len = size;
    req.client = "192.0.2.1";

    if (mode & 0x08) {
        req.client_cert = fx->leaf;
    } else {
        req.user = "fuzz";
    }

    switch (mode & 0x03) {
    case 0:
        req.op = PKI_EST_SIMPLEENROLL;
        break;
    case 1:
        req.op = PKI_EST_SERVERKEYGEN;
        conf.tmpl = fx->keygen;        /* no RSA: keygen stays fast */
        break;
    case 2:
        req.op = PKI_EST_SIMPLEREENROLL;
        req.client_cert = fx->leaf;
        break;
    default:
        req.op = PKI_EST_SIMPLEENROLL;
        conf.pop_linking = 1;
        req.channel_binding = binding;
        req.channel_binding_len = sizeof(binding) - 1;
        break;
    }

    memset(&resp, 0, sizeof(resp));
    pki_est_handle(&conf, &req, &resp);
    if (pki_fuzz_verbose()) {
        fprintf(stderr, "est mode %02x: %d %s (%s)\n", mode, resp.http_status,
                resp.res.detail, resp.res.log);
    }
    pki_fuzz_check_resp(&resp);
    pki_est_resp_free(&resp);

    if (req.op == PKI_EST_SIMPLEREENROLL) {
        pki_result_init(&res);
        if (pki_base64_decode(data, size, &der, &derlen, &res) == PKI_OK) {
            p = der;
            csr = d2i_X509_REQ(NULL, &p, (long) derlen);
            if (csr != NULL) {
                pki_result_init(&res);
                if (pki_request_renewal(fx->device, csr, fx->leaf, &preq,
                                        &res)
                    == PKI_OK)
                {
                    pki_request_clear(&preq);
                }
                X509_REQ_free(csr);
            }
            free(der);
        }
    }

    ERR_clear_error();

    return 0;
}
