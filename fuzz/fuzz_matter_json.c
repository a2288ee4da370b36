/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The Matter HTTP engine (pki_matter_handle): the DAC batch endpoint
 * ({"csrs": [...]} or {"count": N}) under the fixture's PAI, and the NOC
 * endpoint ({"csr", "node_id", "fabric_id", "cats"}) under the ICAC or
 * directly under the RCAC.  Every certificate that comes out is checked
 * against its profile again (pki_matter_check) and, for a NOC, converted
 * to Matter TLV and back.
 *
 * Store: none (nothing recorded, as in the unit tests), or the in-process
 * fake Redis (fakeredis.c, the core's Lua scripts run), so issuance runs
 * its reservation and commit calls.
 *
 * Input: byte 0 selects, the rest is the JSON body.
 *   bit 0  NOC (else DAC batch)
 *   bit 1  NOC: under the RCAC (else ICAC); DAC: template without PID
 *   bit 2  with the fake Redis
 *   bit 3  GET instead of POST
 *   bit 4  no authenticated user
 *   bit 5  Content-Type text/plain
 *   bit 6  full batch: up to 8 items (the engine's threaded path), else 2
 * Placeholders in the body: $CSR (base64 DER PKCS#10 of the device key,
 * CN "Fuzz device"), $CSR2 (another subject: O, OU, serialNumber).
 * "count" above 2 is lowered to 2 and more than 2 CSRs are cut, or 8 with
 * bit 6 (each item is a key generation or a CSR check, a signature, and
 * the oracle's parse + profile check: the throughput of the target, not a
 * limit of the engine; t/matter.t issues full batches).  Under ASan an
 * item costs ~1.5 ms and an 8-item batch also starts the engine's signing
 * threads (~6 ms more): with the old cap of 8 for every input the target
 * ran ~950 inputs/s on an idle core, with 2 (8 only with bit 6) it runs
 * several times that, while the JSON, the CSRs and every certificate out
 * are still checked and the threaded path stays reachable.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "fuzz.h"


#define PKI_MATTER_FUZZ_MAX  (64 * 1024)
#define PKI_MATTER_FUZZ_N    2         /* items per input ...     */
#define PKI_MATTER_FUZZ_FULL 8         /* ... with bit 6 (threads) */


static const pki_fuzz_matter_t  *mx;
static pki_redis_t              *kv;
static const char               *names[] = { "$CSR2", "$CSR" };
static char                     *values[2];


static char *
csr_b64(EVP_PKEY *pk, int rich)
{
    int             len;
    char           *b64;
    size_t          blen;
    X509_REQ       *req;
    X509_NAME      *n;
    unsigned char  *der;

    req = X509_REQ_new();
    n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                               (const unsigned char *) "Fuzz device", -1, -1,
                               0);
    if (rich) {
        X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8,
                                   (const unsigned char *) "Fuzz", -1, -1, 0);
        X509_NAME_add_entry_by_txt(n, "serialNumber", MBSTRING_UTF8,
                                   (const unsigned char *) "0001", -1, -1, 0);
        X509_NAME_add_entry_by_txt(n, "1.3.6.1.4.1.37244.2.1", MBSTRING_UTF8,
                                   (const unsigned char *) "FFF2", -1, -1, 0);
    }
    X509_REQ_set_subject_name(req, n);
    X509_NAME_free(n);
    X509_REQ_set_pubkey(req, pk);
    X509_REQ_sign(req, pk, EVP_sha256());
    der = NULL;
    len = i2d_X509_REQ(req, &der);
    X509_REQ_free(req);
    if (len <= 0) {
        abort();
    }
    b64 = pki_base64_encode(der, (size_t) len, 0, &blen);
    OPENSSL_free(der);

    return b64;
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;

    mx = pki_fuzz_matter();
    kv = pki_fuzz_kv_redis();
    pki_fuzz_kv_snapshot();

    values[0] = csr_b64(mx->dev_key, 1);
    values[1] = csr_b64(mx->dev_key, 0);

    return 0;
}


/* Keeps the work per input bounded (see the header). */
static void
cap_batch(cJSON *j, int max)
{
    cJSON  *c;

    c = cJSON_GetObjectItemCaseSensitive(j, "count");
    if (cJSON_IsNumber(c) && c->valuedouble > max) {
        cJSON_SetNumberValue(c, max);
    }

    c = cJSON_GetObjectItemCaseSensitive(j, "csrs");
    while (cJSON_IsArray(c) && cJSON_GetArraySize(c) > max) {
        cJSON_DeleteItemFromArray(c, cJSON_GetArraySize(c) - 1);
    }
}


static X509 *
der_b64(const char *b64)
{
    X509                 *x;
    size_t                n;
    pki_result_t          res;
    unsigned char        *der;
    const unsigned char  *p;

    pki_result_init(&res);
    if (b64 == NULL
        || pki_base64_decode((const unsigned char *) b64, strlen(b64), &der,
                             &n, &res) != PKI_OK)
    {
        return NULL;
    }
    p = der;
    x = d2i_X509(NULL, &p, (long) n);
    free(der);

    return x;
}


/* What came out must hold its profile. */
static void
check_out(int noc, int rcac, const pki_matter_resp_t *resp)
{
    X509            *x;
    cJSON           *j, *a, *e;
    size_t           tlen, dlen;
    pki_result_t     res;
    unsigned char   *tlv, *der, *back;

    j = cJSON_ParseWithLength((const char *) resp->body, resp->body_len);
    if (!cJSON_IsObject(j)) {
        abort();                        /* every answer is a JSON object */
    }

    if (resp->http_status != 200) {
        cJSON_Delete(j);
        return;
    }

    if (!noc) {
        a = cJSON_GetObjectItemCaseSensitive(j, "certificates");
        cJSON_ArrayForEach(e, a) {
            x = der_b64(cJSON_GetStringValue(e));
            pki_result_init(&res);
            if (x == NULL
                || pki_matter_check(x, PKI_MATTER_DAC, mx->pai, &res)
                   != PKI_OK)
            {
                fprintf(stderr, "DAC out of profile: %s\n", res.detail);
                abort();
            }
            X509_free(x);
        }

    } else {
        x = der_b64(cJSON_GetStringValue(cJSON_GetObjectItem(j, "noc")));
        pki_result_init(&res);
        if (x == NULL
            || pki_matter_check(x, PKI_MATTER_NOC, rcac ? mx->rcac : mx->icac,
                                &res) != PKI_OK)
        {
            fprintf(stderr, "NOC out of profile: %s\n", res.detail);
            abort();
        }

        der = NULL;
        dlen = (size_t) i2d_X509(x, &der);
        tlv = back = NULL;
        if (pki_matter_der_to_tlv(der, dlen, &tlv, &tlen, &res) != PKI_OK
            || pki_matter_tlv_to_der(tlv, tlen, &back, &tlen, &res) != PKI_OK
            || tlen != dlen || memcmp(back, der, dlen) != 0)
        {
            fprintf(stderr, "NOC TLV round trip: %s\n", res.detail);
            abort();
        }
        free(tlv);
        free(back);
        OPENSSL_free(der);
        X509_free(x);
    }

    cJSON_Delete(j);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                 noc, rcac;
    char               *body, *text;
    cJSON              *j;
    uint8_t             sel;
    pki_matter_req_t    req;
    pki_matter_conf_t   conf;
    pki_matter_resp_t   resp;

    if (size < 1 || size > PKI_MATTER_FUZZ_MAX) {
        return 0;
    }

    sel = data[0];
    noc = sel & 1;
    rcac = (sel & 2) != 0;

    body = pki_fuzz_expand((const char *) data + 1, size - 1, names,
                           (const char *const *) values, 2);

    j = cJSON_Parse(body);
    if (j != NULL) {
        cap_batch(j, (sel & 64) ? PKI_MATTER_FUZZ_FULL : PKI_MATTER_FUZZ_N);
        text = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        if (text != NULL) {
            free(body);
            body = text;
        }
    }

    memset(&conf, 0, sizeof(conf));
    if (noc) {
        conf.ca = rcac ? mx->carc : mx->caic;
        conf.tmpl = mx->tnoc;
    } else {
        conf.ca = mx->capai;
        conf.tmpl = rcac ? mx->tdac2 : mx->tdac;
    }
    conf.threads = 2;
    if (sel & 4) {
        conf.redis = kv;            /* reset to the snapshot after use */
    }

    memset(&req, 0, sizeof(req));
    req.op = noc ? PKI_MATTER_OP_NOC : PKI_MATTER_OP_DAC_BATCH;
    req.method = (sel & 8) ? "GET" : "POST";
    req.content_type = (sel & 32) ? "text/plain" : "application/json";
    req.user = (sel & 16) ? NULL : "fuzz-admin";
    req.client = "192.0.2.1";
    req.body = (const unsigned char *) body;
    req.body_len = strlen(body);

    pki_matter_handle(&conf, &req, &resp);

    if (pki_fuzz_verbose()) {
        fprintf(stderr, "sel %02x: %d %.*s\n", sel, resp.http_status,
                (int) (resp.body_len > 300 ? 300 : resp.body_len),
                resp.body ? (char *) resp.body : "");
    }

    if (resp.http_status < 100 || resp.http_status > 599
        || resp.body == NULL)
    {
        abort();
    }

    check_out(noc, rcac, &resp);

    pki_matter_resp_free(&resp);
    free(body);
    if (sel & 4) {
        pki_fuzz_kv_reset();
    }
    ERR_clear_error();

    return 0;
}
