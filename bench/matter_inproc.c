/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * In-process Matter DAC rates (not a test; no nginx, no TLS, no curl):
 * where bench/matter.sh's time goes inside the core.
 *
 *   matter_inproc handle PKI_DIR BATCH_JSON THREADS ROUNDS [REDIS_SOCK]
 *       pki_matter_handle() on the batch body ROUNDS times, the PAI key of
 *       PKI_DIR (scripts/mkpki.sh with PKI_MKPKI_MATTER=1) in its SoftHSM2
 *       token, matter_batch_threads THREADS, Redis on REDIS_SOCK (none:
 *       offline, nothing recorded); prints DACs/s
 *   matter_inproc sign PKI_DIR THREADS SECONDS
 *       pki_key_sign_x509() with the PAI key in a loop on THREADS threads
 *       (signature verified each time, as always); prints signatures/s
 *
 * Build (after ./build.sh) and run with the token's configuration:
 *   cc -O2 -Icore -o /tmp/matter_inproc bench/matter_inproc.c \
 *       -Lbuild -lpkicore -Wl,-rpath,$PWD/build -lcjson -lcrypto -lpthread
 *   SOFTHSM2_CONF=PKI_DIR/hsm/softhsm2.conf /tmp/matter_inproc ...
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "pki.h"


#define P11_MODULE  "/usr/lib/softhsm/libsofthsm2.so"
#define PAI_URI     "pkcs11:token=nginx-pki;object=matter-pai;type=private"


static pki_key_t  *key;
static double      seconds;


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


/* CPU seconds of the whole process (all threads, user + system): the cost
 * per operation, robust to the machine's load */
static double
cpu(void)
{
    struct rusage  ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
           + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}


static pki_key_t *
open_pai(const char *pki)
{
    char           pin[512];
    pki_key_t     *k;
    pki_vault_t   *v;
    pki_result_t   res;

    pki_result_init(&res);
    snprintf(pin, sizeof(pin), "%s/hsm/pin", pki);

    v = pki_vault_new("bench", P11_MODULE, "nginx-pki", pin, &res);
    if (v == NULL || pki_vault_open(v, &res) != PKI_OK) {
        fprintf(stderr, "vault: %s\n", res.detail);
        return NULL;
    }

    k = pki_key_new(PAI_URI, v, &res);
    if (k == NULL || pki_key_open(k, &res) != PKI_OK) {
        fprintf(stderr, "key: %s %s\n", res.detail, res.log);
        return NULL;
    }

    return k;
}


static void *
sign_loop(void *arg)
{
    long          *count = arg;
    X509          *x;
    X509_NAME     *name;
    EVP_PKEY      *pk;
    double         end;
    pki_result_t   res;

    x = X509_new();
    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    name = X509_NAME_new();
    if (x == NULL || pk == NULL || name == NULL) {
        return NULL;
    }

    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               (const unsigned char *) "bench", -1, -1, 0);
    X509_set_version(x, X509_VERSION_3);
    X509_set_pubkey(x, pk);
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, name);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);

    end = now() + seconds;

    while (now() < end) {
        ASN1_INTEGER_set(X509_get_serialNumber(x), *count + 1);
        pki_result_init(&res);
        if (pki_key_sign_x509(key, x, &res) != PKI_OK) {
            fprintf(stderr, "sign: %s %s\n", res.detail, res.log);
            break;
        }
        (*count)++;
    }

    X509_NAME_free(name);
    EVP_PKEY_free(pk);
    X509_free(x);

    return NULL;
}


static int
run_sign(const char *pki, int nt, double secs)
{
    int         i;
    long        counts[64], total;
    double      t0, c0;
    pthread_t   tid[64];

    key = open_pai(pki);
    if (key == NULL || nt < 1 || nt > 64 || secs <= 0) {
        return 1;
    }

    seconds = secs;
    memset(counts, 0, sizeof(counts));
    t0 = now();
    c0 = cpu();

    for (i = 0; i < nt; i++) {
        pthread_create(&tid[i], NULL, sign_loop, &counts[i]);
    }

    total = 0;
    for (i = 0; i < nt; i++) {
        pthread_join(tid[i], NULL);
        total += counts[i];
    }

    printf("%.0f signatures/s, CPU %.1f us per signature\n",
           total / (now() - t0), total ? (cpu() - c0) * 1e6 / total : 0.0);

    return 0;
}


static int
run_handle(int argc, char **argv)
{
    int                 i, rounds;
    long                n;
    cJSON              *json;
    FILE               *f;
    double              t0, dt, c0, dc;
    pki_ca_t           *ca;
    pki_redis_t        *r;
    pki_result_t        res;
    pki_template_t     *t;
    unsigned char      *body;
    pki_matter_req_t    rq;
    pki_matter_conf_t   mc;
    pki_matter_resp_t   resp;
    pki_redis_conf_t    rc;
    const char         *argv1[1];
    char                path[512];

    key = open_pai(argv[2]);
    if (key == NULL) {
        return 1;
    }

    pki_result_init(&res);
    t = pki_matter_template_new("matter-dac", &res);
    ca = pki_ca_new("matter-pai");
    if (t == NULL || ca == NULL) {
        fprintf(stderr, "template: %s\n", res.detail);
        return 1;
    }

    snprintf(path, sizeof(path), "%s/matter/pai.pem", argv[2]);
    argv1[0] = path;
    pki_ca_set(ca, "certificate", 1, argv1, &res);
    snprintf(path, sizeof(path), "%s/matter/pai-chain.pem", argv[2]);
    pki_ca_set(ca, "chain", 1, argv1, &res);
    pki_ca_set_key(ca, key, &res);
    pki_ca_add_template(ca, t, &res);

    if (pki_ca_finish(ca, &res) != PKI_OK) {
        fprintf(stderr, "CA: %s %s\n", res.detail, res.log);
        return 1;
    }

    r = NULL;
    if (argc > 6) {
        memset(&rc, 0, sizeof(rc));
        rc.unix_path = argv[6];
        rc.timeout_ms = 5000;
        r = pki_redis_new(&rc, &res);
    }

    f = fopen(argv[3], "rb");
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) <= 0) {
        fprintf(stderr, "cannot read %s\n", argv[3]);
        return 1;
    }
    rewind(f);
    body = malloc((size_t) n);
    if (body == NULL || fread(body, 1, (size_t) n, f) != (size_t) n) {
        return 1;
    }
    fclose(f);

    memset(&mc, 0, sizeof(mc));
    mc.ca = ca;
    mc.tmpl = t;
    mc.redis = r;
    mc.threads = atoi(argv[4]);

    memset(&rq, 0, sizeof(rq));
    rq.op = PKI_MATTER_OP_DAC_BATCH;
    rq.method = "POST";
    rq.content_type = "application/json";
    rq.body = body;
    rq.body_len = (size_t) n;
    rq.user = "bench";
    rq.client = "127.0.0.1";

    rounds = atoi(argv[5]);
    t0 = now();
    dc = 0;
    n = 0;

    for (i = 0; i < rounds; i++) {
        memset(&resp, 0, sizeof(resp));
        c0 = cpu();
        pki_matter_handle(&mc, &rq, &resp);
        dc += cpu() - c0;
        if (resp.http_status != 200) {
            fprintf(stderr, "answer %d: %.*s\n", resp.http_status,
                    (int) resp.body_len, resp.body ? (char *) resp.body : "");
            return 1;
        }
        /* the certificates in the answer */
        json = cJSON_ParseWithLength((const char *) resp.body, resp.body_len);
        n += cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(json,
                                                         "certificates"));
        cJSON_Delete(json);
        pki_matter_resp_free(&resp);
    }

    dt = now() - t0;
    printf("%ld DACs in %.2f s = %.0f DACs/s (answer parsing included), "
           "CPU %.1f us per DAC in pki_matter_handle\n", n, dt, n / dt,
           n ? dc * 1e6 / n : 0.0);

    return 0;
}


int
main(int argc, char **argv)
{
    pki_init();

    if (argc >= 6 && strcmp(argv[1], "handle") == 0) {
        return run_handle(argc, argv);
    }

    if (argc == 5 && strcmp(argv[1], "sign") == 0) {
        return run_sign(argv[2], atoi(argv[3]), atof(argv[4]));
    }

    fprintf(stderr, "usage: matter_inproc handle PKI_DIR BATCH_JSON THREADS "
            "ROUNDS [REDIS_SOCK]\n"
            "       matter_inproc sign PKI_DIR THREADS SECONDS\n");
    return 2;
}
