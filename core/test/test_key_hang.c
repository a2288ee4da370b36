/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A token that stops answering: PKCS#11 cannot cancel a call, so the
 * vault's watchdog (pki_vault_call_timeout) makes the vault hung once a
 * call has been in flight that long.  Its keys then answer PKI_UNAVAILABLE
 * at once, without a token call, and pki_key_hung() tells the event loop
 * so before it posts work; when the call returns, they sign again.  The
 * token is SoftHSM behind build/p11shim.so, whose C_Sign is made slow
 * (or fail).  Signers already waiting for the vault behind the slow call
 * give up once it is hung, and the idle-session trim leaves it alone.
 * pki_ocsp_hung() tells an OCSP request that a hung key would sign (the
 * CA's, or its delegated responder's) from one answered by another key or
 * unsigned.
 */

#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>

#include "pki.h"
#include "test/unit.h"
#include "test/p11.h"
#include "test/fixture.h"


typedef void (*shim_set_delay_pt)(long ms);
typedef void (*shim_set_fail_pt)(long n);
typedef void (*shim_sign_state_pt)(long *fails_left, long *signing);
typedef void (*shim_stats_pt)(long *open, long *peak, long *refused,
    long *inits);

typedef struct {
    pki_key_t     *key;
    pki_status_t   st;
    int            verified;
    double         dt;
    double         end;
    pki_result_t   res;
} slow_t;


static void *
slow_sign(void *arg)
{
    double   t0;
    slow_t  *s = arg;

    t0 = unit_now();
    s->st = p11_sign(s->key, pki_key_public(s->key), &s->verified, &s->res);
    s->end = unit_now();
    s->dt = s->end - t0;

    return NULL;
}


/* A certificate for pub named cn, issued by issuer (NULL: cn itself)
 * with signer: a CA, or (ca 0) a delegated OCSP responder. */
static X509 *
mk_cert(EVP_PKEY *pub, const char *cn, X509 *issuer, EVP_PKEY *signer,
    int ca, long serial)
{
    X509            *x;
    X509_NAME       *name;
    X509V3_CTX       v3;
    X509_EXTENSION  *ext;

    x = X509_new();
    name = X509_NAME_new();

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, pub);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               (const unsigned char *) cn, -1, -1, 0);
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509_NAME_free(name);

    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
                              ca ? "critical,CA:TRUE" : "CA:FALSE");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);

    if (!ca) {
        ext = X509V3_EXT_conf_nid(NULL, &v3, NID_ext_key_usage,
                                  "OCSPSigning");
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }

    X509_sign(x, signer, EVP_sha256());

    return x;
}


static pki_ca_t *
mk_ca(const char *dir, const char *name, X509 *cert, pki_key_t *key)
{
    char           path[512];
    pki_ca_t      *ca;
    const char    *argv[1];
    pki_result_t   res;

    fx_write_cert(dir, name, cert);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    argv[0] = path;

    pki_result_init(&res);
    ca = pki_ca_new(name);
    pki_ca_set(ca, "certificate", 1, argv, &res);
    pki_ca_set_key(ca, key, &res);

    if (!ok(pki_ca_finish(ca, &res) == PKI_OK, "CA %s [%s %s]", name,
            res.detail, res.log))
    {
        pki_ca_free(ca);
        return NULL;
    }

    return ca;
}


/* an OCSP request (DER, no nonce) for serial 0x1234 of ca's certificate */
static unsigned char *
mk_ocsp_req(X509 *ca, size_t *len)
{
    int            n;
    ASN1_INTEGER  *serial;
    OCSP_CERTID   *id;
    OCSP_REQUEST  *req;
    unsigned char *der;

    serial = ASN1_INTEGER_new();
    ASN1_INTEGER_set(serial, 0x1234);
    id = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(ca),
                          X509_get0_pubkey_bitstr(ca), serial);
    ASN1_INTEGER_free(serial);

    req = OCSP_REQUEST_new();
    OCSP_request_add0_id(req, id);

    der = NULL;
    n = i2d_OCSP_REQUEST(req, &der);
    OCSP_REQUEST_free(req);

    *len = n > 0 ? (size_t) n : 0;

    return n > 0 ? der : NULL;
}


static int
ocsp_hung(const pki_ocsp_conf_t *conf, const char *method,
    const unsigned char *body, size_t len)
{
    pki_ocsp_req_t  req;

    memset(&req, 0, sizeof(req));
    req.method = method;
    req.body = body;
    req.body_len = len;

    return pki_ocsp_hung(conf, &req);
}


int
main(void)
{
    int                 verified, i;
    long                n, age, hung, inits0, inits, x;
    long                left, signing;
    slow_t              q[4];
    pthread_t           qt[4];
    shim_set_fail_pt    set_fail;
    shim_sign_state_pt  sign_state;
    char                exe[PATH_MAX], shim[PATH_MAX + 16];
    void               *dl;
    double              t0, dt;
    slow_t              s;
    p11_env_t           e;
    pki_key_t          *k;
    pthread_t           th;
    pki_vault_t        *v;
    pki_status_t        st;
    pki_result_t        res;
    shim_stats_pt       stats;
    shim_set_delay_pt   set_delay;
    char                tmp[] = "/tmp/keyhang.XXXXXX";
    size_t              ra_len, rf_len;
    X509               *xa, *xf, *xr;
    EVP_PKEY           *pf, *pz;
    pki_ca_t           *ca_tok, *ca_file, *cas[2];
    pki_key_t          *kf;
    unsigned char      *ra, *rf, junk[] = { 0x30, 0x03, 0x02, 0x01 };
    unsigned char       ga[1024];
    char                path[PATH_MAX];
    pki_ocsp_conf_t     oc;
    pki_ocsp_signer_t   sg;
    static const unsigned char  b64[] = "not%%base64";

    p11_env(&e, 0);

    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        skip_all("no /proc/self/exe");
    }
    exe[n] = '\0';
    snprintf(shim, sizeof(shim), "%s/p11shim.so", dirname(exe));

    if (access(shim, R_OK) != 0) {
        skip_all("no build/p11shim.so");
    }

    setenv("PKI_P11SHIM_MODULE", e.module, 1);
    unsetenv("PKI_P11SHIM_MAX_SESSIONS");
    unsetenv("PKI_P11SHIM_HANG_FILE");

    dl = dlopen(shim, RTLD_NOW | RTLD_LOCAL);
    set_delay = dl != NULL
                ? (shim_set_delay_pt) dlsym(dl, "p11shim_set_sign_delay")
                : NULL;
    stats = dl != NULL ? (shim_stats_pt) dlsym(dl, "p11shim_stats") : NULL;

    if (!ok(set_delay != NULL && stats != NULL, "the shim module loads (%s)",
            shim))
    {
        return done_testing();
    }

    pki_result_init(&res);
    v = pki_vault_new("hang", shim, e.token, e.pin_file, &res);
    if (!ok(v != NULL && pki_vault_open(v, &res) == PKI_OK,
            "vault opens through the shim [%s %s]", res.detail, res.log))
    {
        return done_testing();
    }

    pki_vault_call_timeout(v, 300);

    pki_result_init(&res);
    k = pki_key_new(e.uri_ec, v, &res);
    if (!ok(k != NULL && pki_key_open(k, &res) == PKI_OK,
            "the EC key opens [%s %s]", res.detail, res.log))
    {
        return done_testing();
    }

    ok(pki_key_hung(k) == 0 && pki_vault_call_age(v) == 0,
       "idle: not hung, nothing in flight");
    ok(pki_key_hung(NULL) == 0, "no key: not hung");

    st = p11_sign(k, pki_key_public(k), &verified, &res);
    ok(st == PKI_OK && verified, "a first signature [%s %s]", res.detail,
       res.log);
    ok(pki_vault_call_age(v) == 0, "nothing in flight after it");

    /* OCSP: CA "tok" signs with the token key; CA "file" with a file key,
     * and with its delegated responder "resp", whose key is the token's,
     * when conf has it */
    if (mkdtemp(tmp) == NULL) {
        return done_testing();
    }

    pf = fx_keygen("EC:P-256");
    pz = fx_keygen("EC:P-256");
    kf = fx_key_file(tmp, "file.key", pf);
    xa = mk_cert(pki_key_public(k), "tok", NULL, pz, 1, 1);
    xf = mk_cert(pf, "file", NULL, pf, 1, 2);
    xr = mk_cert(pki_key_public(k), "resp", xf, pf, 0, 3);
    ca_tok = mk_ca(tmp, "tok", xa, k);
    ca_file = mk_ca(tmp, "file", xf, kf);

    if (ca_tok == NULL || ca_file == NULL) {
        return done_testing();
    }

    cas[0] = ca_tok;
    cas[1] = ca_file;
    memset(&oc, 0, sizeof(oc));
    oc.cas = cas;
    oc.ncas = 2;

    sg.ca = ca_file;
    sg.cert = xr;
    sg.key = k;

    ra = mk_ocsp_req(xa, &ra_len);
    rf = mk_ocsp_req(xf, &rf_len);

    ok(ocsp_hung(&oc, "POST", ra, ra_len) == 0,
       "pki_ocsp_hung: no key hung, 0");

    /* two signatures at once: the key's pool keeps two sessions, one left
     * idle while the slow call below has the other; idle from 1 ms on */
    set_delay(100);
    memset(q, 0, sizeof(q));
    for (i = 0; i < 2; i++) {
        q[i].key = k;
        pki_result_init(&q[i].res);
        ok(pthread_create(&qt[i], NULL, slow_sign, &q[i]) == 0,
           "a signer at once with another");
    }
    for (i = 0; i < 2; i++) {
        pthread_join(qt[i], NULL);
        ok(q[i].st == PKI_OK, "its signature [%s]", q[i].res.detail);
    }
    set_delay(0);
    pki_vault_session_idle(v, 1);
    usleep(5 * 1000);
    ok(pki_vault_idle_due(v) == 1, "their sessions idle: a trim is due");

    /* a C_Sign that takes 1.2 s */
    stats(&x, &x, &x, &inits0);
    set_delay(1200);
    memset(&s, 0, sizeof(s));
    s.key = k;
    pki_result_init(&s.res);

    if (!ok(pthread_create(&th, NULL, slow_sign, &s) == 0, "slow signer")) {
        return done_testing();
    }

    usleep(100 * 1000);
    age = pki_vault_call_age(v);
    ok(age >= 50 && age < 300, "a call in flight for %ld ms", age);
    ok(pki_key_hung(k) == 0, "before call_timeout: not hung");

    usleep(350 * 1000);
    hung = pki_key_hung(k);
    ok(hung >= 300, "after call_timeout: hung (%ld ms)", hung);
    ok(pki_vault_hung(v) >= 300, "the vault says so too");

    /* the idle trim leaves a hung vault alone: a close could hang too */
    ok(pki_vault_idle_due(v) == 0, "hung: no trim due, with a session "
       "idle");
    t0 = unit_now();
    n = (long) pki_vault_trim_idle(v);
    dt = unit_now() - t0;
    ok(n == 0 && dt < 0.05, "hung: a trim closes nothing (%ld), at once "
       "(%.3f s)", n, dt);

    t0 = unit_now();
    st = p11_sign(k, pki_key_public(k), &verified, &res);
    dt = unit_now() - t0;
    ok(st == PKI_UNAVAILABLE, "a signature while hung: PKI_UNAVAILABLE "
       "[%s %s]", res.detail, res.log);
    ok(dt < 0.05, "at once (%.3f s), not after the slow call", dt);
    ok(strstr(res.detail, "is hung: a call in flight for") != NULL
       && strstr(res.detail, "vault \"hang\"") != NULL,
       "the detail names the vault and the hang [%s]", res.detail);

    ok(ocsp_hung(&oc, "POST", ra, ra_len) == 1,
       "pki_ocsp_hung: a request for the CA whose key is hung, 1");
    ok(ocsp_hung(&oc, "POST", rf, rf_len) == 0,
       "one for the CA with a file key, 0");
    oc.signers = &sg;
    oc.nsigners = 1;
    ok(ocsp_hung(&oc, "POST", rf, rf_len) == 1,
       "the same with a delegated responder whose key is hung, 1");
    oc.signers = NULL;
    oc.nsigners = 0;
    ok(ocsp_hung(&oc, "POST", junk, sizeof(junk)) == 0,
       "a request that does not parse (answered unsigned), 0");
    ok(ocsp_hung(&oc, "GET", b64, sizeof(b64) - 1) == 0,
       "a GET that is not base64, 0");
    n = EVP_EncodeBlock(ga, ra, (int) ra_len);
    ok(n > 0 && ocsp_hung(&oc, "GET", ga, (size_t) n) == 1,
       "the hung CA's request as a GET, 1");
    cas[0] = ca_file;
    oc.ncas = 1;
    ok(ocsp_hung(&oc, "POST", ra, ra_len) == 0,
       "a CA the responder does not serve (answered unsigned), 0");
    cas[0] = ca_tok;
    oc.ncas = 2;
    ok(ocsp_hung(NULL, "POST", ra, ra_len) == 0 && pki_ocsp_hung(&oc, NULL)
       == 0, "no conf or no request, 0");

    pthread_join(th, NULL);
    ok(s.st == PKI_OK && s.verified, "the slow call returns its signature "
       "(%.3f s) [%s %s]", s.dt, s.res.detail, s.res.log);

    set_delay(0);
    ok(pki_key_hung(k) == 0 && pki_vault_call_age(v) == 0,
       "it returned: not hung");
    usleep(5 * 1000);
    ok(pki_vault_idle_due(v) == 1, "then an idle session is due");
    n = (long) pki_vault_trim_idle(v);
    ok(n >= 1, "and a trim closes it (%ld)", n);
    pki_vault_session_idle(v, 30000);
    ok(ocsp_hung(&oc, "POST", ra, ra_len) == 0,
       "pki_ocsp_hung: 0 again");

    st = p11_sign(k, pki_key_public(k), &verified, &res);
    ok(st == PKI_OK && verified, "signs again [%s %s]", res.detail, res.log);

    stats(&x, &x, &x, &inits);
    ok(inits == inits0, "no reopen of the vault for the hang (C_Initialize "
       "%ld, was %ld)", inits, inits0);

    /* Queued behind a hang: two signers whose C_Signs fail, one to reopen
     * the vault (it waits for the write lock behind the slow call) and
     * one that waits for that reopen, and a signer after them that waits
     * for the lock behind the reopen; once the vault is hung all three
     * give up, as a signer that comes then does, not when the slow call
     * returns, and none of them goes into the hung token (the third's
     * C_Sign would be slow too). */
    set_fail = (shim_set_fail_pt) dlsym(dl, "p11shim_set_sign_fail");
    sign_state = (shim_sign_state_pt) dlsym(dl, "p11shim_sign_state");
    if (ok(set_fail != NULL && sign_state != NULL,
           "the shim can fail a C_Sign"))
    {
        stats(&x, &x, &x, &inits0);
        pki_vault_call_timeout(v, 300);
        set_delay(1200);
        memset(q, 0, sizeof(q));
        for (i = 0; i < 4; i++) {
            q[i].key = k;
            pki_result_init(&q[i].res);
        }

        t0 = unit_now();
        ok(pthread_create(&qt[0], NULL, slow_sign, &q[0]) == 0,
           "the slow signer");
        for (i = 0; i < 200; i++) {
            sign_state(&left, &signing);
            if (signing > 0) {
                break;
            }
            usleep(5 * 1000);
        }
        ok(signing == 1, "it is in C_Sign (%.3f s)", unit_now() - t0);

        set_fail(2);
        ok(pthread_create(&qt[1], NULL, slow_sign, &q[1]) == 0
           && pthread_create(&qt[2], NULL, slow_sign, &q[2]) == 0,
           "two signers whose C_Signs fail");
        /* one C_Sign fails at once; the other one's signer may find the
         * reopen already waiting, and then waits for the lock instead
         * (under Valgrind): its failure is not kept for the next one */
        for (i = 0; i < 20; i++) {
            sign_state(&left, &signing);
            if (left == 0) {
                break;
            }
            usleep(5 * 1000);
        }
        set_fail(0);
        ok(left < 2, "a C_Sign failed (%ld of 2, %.3f s)", 2 - left,
           unit_now() - t0);

        /* the reopen waits for the write lock after 10-20 ms */
        usleep(150 * 1000);
        ok(pthread_create(&qt[3], NULL, slow_sign, &q[3]) == 0,
           "a signer after them (%.3f s)", unit_now() - t0);

        for (i = 0; i < 4; i++) {
            pthread_join(qt[i], NULL);
        }
        set_fail(0);
        set_delay(0);

        ok(q[0].st == PKI_OK && q[0].verified, "the slow call returns its "
           "signature (%.3f s) [%s]", q[0].end - t0, q[0].res.detail);
        for (i = 1; i < 4; i++) {
            ok(q[i].st == PKI_UNAVAILABLE && q[i].end < q[0].end - 0.3
               && (strstr(q[i].res.log, "is hung") != NULL
                   || strstr(q[i].res.detail, "is hung") != NULL),
               "%s gives up once the vault is hung, before the slow call "
               "returns: %s at %.3f s [%s %s]",
               i == 3 ? "the signer behind the reopen" : "a failed signer",
               q[i].st == PKI_OK ? "PKI_OK" : "PKI_UNAVAILABLE",
               q[i].end - t0, q[i].res.detail, q[i].res.log);
        }

        st = p11_sign(k, pki_key_public(k), &verified, &res);
        ok(st == PKI_OK && verified, "then the key signs [%s %s]",
           res.detail, res.log);
        stats(&x, &x, &x, &inits);
        ok(inits == inits0, "the vault was not reopened under the slow "
           "call (C_Initialize %ld, was %ld)", inits, inits0);
    }

    /* call_timeout 0: no limit */
    pki_vault_call_timeout(v, 0);
    set_delay(500);
    memset(&s, 0, sizeof(s));
    s.key = k;
    pki_result_init(&s.res);

    if (ok(pthread_create(&th, NULL, slow_sign, &s) == 0, "slow signer")) {
        usleep(300 * 1000);
        ok(pki_vault_call_age(v) >= 200 && pki_key_hung(k) == 0,
           "call_timeout 0: a call in flight, never hung");
        pthread_join(th, NULL);
        ok(s.st == PKI_OK, "its signature [%s]", s.res.detail);
    }

    set_delay(0);

    OPENSSL_free(ra);
    OPENSSL_free(rf);
    pki_ca_free(ca_tok);
    pki_ca_free(ca_file);
    X509_free(xa);
    X509_free(xf);
    X509_free(xr);
    EVP_PKEY_free(pf);
    EVP_PKEY_free(pz);
    pki_key_free(kf);
    pki_key_free(k);
    pki_vault_free(v);

    snprintf(path, sizeof(path), "%s/tok", tmp);
    unlink(path);
    snprintf(path, sizeof(path), "%s/file", tmp);
    unlink(path);
    snprintf(path, sizeof(path), "%s/file.key", tmp);
    unlink(path);
    rmdir(tmp);

    return done_testing();
}
