/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The Matter part of the fuzz fixture (fuzz.h): both hierarchies, built
 * with the core's own built-in templates from FIXED test-only P-256 keys
 * (never used anywhere else), in the fixture's temporary directory:
 *
 *   PAA (VID FFF1) -> PAI (VID FFF1) -> DAC (VID FFF1, PID 8000)
 *   RCAC (fabric FAB000000000001D) -> ICAC
 *
 * and a Certification Declaration signer (self-signed, with the device
 * key: all test-only).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "fuzz.h"


#define OID_VID     "1.3.6.1.4.1.37244.2.1"
#define OID_FABRIC  "1.3.6.1.4.1.37244.1.5"
#define OID_RCACID  "1.3.6.1.4.1.37244.1.4"
#define OID_ICACID  "1.3.6.1.4.1.37244.1.3"


static const char  paa_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg0MP9YNeStEOKjpp3\n"
    "XJ17B2MM+ExyRwcTpHuTyp8WmDChRANCAARkrdO7hjtrr/xwUzEEEd3Bl+rDDCTg\n"
    "orcs3eTriL48t0WoNywA48/kTnhDijcqEoBAXJZ7zFW/G5wgbbSCa0cz\n"
    "-----END PRIVATE KEY-----\n";

static const char  pai_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgfW85yY+4drthDrAf\n"
    "XzWmsCPbXlGpDTWLlWjC2WnLDqyhRANCAARchd8UmtCCy0DZNSIOchqKi89d7/zb\n"
    "efuYam/aCH7XBUN0RkkKZ0l4/lvcNOt051mpH/O/PCqVv1Kwo1ATFb5H\n"
    "-----END PRIVATE KEY-----\n";

static const char  rcac_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgEJu45wOn2h3cWRQG\n"
    "ItAZ/EaTRvrvx3AvP7FLlJG1d06hRANCAARBO9dWnC8rqSHJPrpYUgYCMSuZ7flz\n"
    "JgM2qqucZnaU/bYCX5PTbMTxtEOGznaKONzMIuWbCQPmNt57y6xEqhaJ\n"
    "-----END PRIVATE KEY-----\n";

static const char  icac_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgCGG35p27j6+OHdd7\n"
    "kmsExCdtnWOZ2jkblKxfbXiRfkahRANCAARXJG8TXXIWM32zVYR/CqmS5G312rfO\n"
    "szdBX2zphnLRJ8arewOtHcp/MzkurDodHhpeiJoLx4ohYvrbBtW6kDt9\n"
    "-----END PRIVATE KEY-----\n";

static const char  dev_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgmrOG13H3DmKcPq5b\n"
    "a5UXfjFJ3Y+0X6U7J807S9MDAjehRANCAASNfNv22K8KPjnyjlLykblIpgIH3orf\n"
    "SUc+ECMeDSbz8BOTGcYSm+dxqp+Do1ICPIQRFVmJ/5ME7kbPj0kiI7YC\n"
    "-----END PRIVATE KEY-----\n";


static pki_fuzz_matter_t  mx;
static int                mx_done;


static void
die(const char *what, const pki_result_t *res)
{
    fprintf(stderr, "fuzz matter fixture: %s: %s %s\n", what,
            res ? res->detail : "", res ? res->log : "");
    exit(1);
}


EVP_PKEY *
pki_fuzz_pem_pkey(const char *pem)
{
    BIO       *b;
    EVP_PKEY  *pk;

    b = BIO_new_mem_buf(pem, -1);
    pk = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (pk == NULL) {
        die("PEM key", NULL);
    }

    return pk;
}


static X509_NAME *
name2(const char *a, const char *av, const char *b, const char *bv)
{
    X509_NAME  *n;

    n = X509_NAME_new();
    if (n == NULL
        || !X509_NAME_add_entry_by_txt(n, a, MBSTRING_UTF8,
                                       (const unsigned char *) av, -1, -1, 0)
        || (b != NULL
            && !X509_NAME_add_entry_by_txt(n, b, MBSTRING_UTF8,
                                           (const unsigned char *) bv, -1,
                                           -1, 0)))
    {
        die("name", NULL);
    }

    return n;
}


static pki_template_t *
builtin(const char *name)
{
    pki_result_t     res;
    pki_template_t  *t;

    pki_result_init(&res);
    t = pki_matter_template_new(name, &res);
    if (t == NULL) {
        die(name, &res);
    }

    return t;
}


/* a DAC template with its own matter_pid */
static pki_template_t *
dac_template(const char *name, const char *pid)
{
    const char      *a[1];
    pki_result_t     res;
    pki_template_t  *t;

    pki_result_init(&res);
    t = pki_template_new(name);
    a[0] = "dac";
    if (t == NULL || pki_template_set(t, "matter", 1, a, &res) != PKI_OK) {
        die(name, &res);
    }

    a[0] = pid;
    if (pki_template_set(t, "matter_pid", 1, a, &res) != PKI_OK
        || pki_template_finish(t, &res) != PKI_OK)
    {
        die(name, &res);
    }

    return t;
}


static pki_ca_t *
ca(const char *name, X509 *cert, const char *chain, pki_key_t *key,
    pki_template_t *t1, pki_template_t *t2)
{
    FILE          *f;
    char           path[160];
    const char    *argv[1];
    pki_ca_t      *c;
    pki_result_t   res;

    snprintf(path, sizeof(path), "%s/%s.pem", pki_fuzz_dir(), name);
    f = fopen(path, "w");
    if (f == NULL || !PEM_write_X509(f, cert)) {
        die("cannot write a certificate", NULL);
    }
    fclose(f);

    pki_result_init(&res);
    argv[0] = path;
    c = pki_ca_new(name);
    if (c == NULL || pki_ca_set(c, "certificate", 1, argv, &res) != PKI_OK
        || (chain && pki_ca_set(c, "chain", 1, &chain, &res) != PKI_OK)
        || pki_ca_set_key(c, key, &res) != PKI_OK
        || (t1 && pki_ca_add_template(c, t1, &res) != PKI_OK)
        || (t2 && pki_ca_add_template(c, t2, &res) != PKI_OK)
        || pki_ca_finish(c, &res) != PKI_OK)
    {
        die(name, &res);
    }

    return c;
}


static X509 *
issue(pki_ca_t *c, pki_template_t *t, X509_NAME *subject, EVP_PKEY *pk)
{
    X509           *x;
    pki_result_t    res;
    pki_request_t   req;

    memset(&req, 0, sizeof(req));
    req.subject = subject;
    req.pubkey = pk;
    x = NULL;
    pki_result_init(&res);
    if (pki_issue(c, t, NULL, &req, NULL, &x, &res) != PKI_OK) {
        die("issue", &res);
    }
    X509_NAME_free(subject);

    return x;
}


/* The CD signer: self-signed, subjectKeyIdentifier (CMS names it). */
static void
cd_signer(void)
{
    X509        *x;
    X509V3_CTX   v3;
    X509_NAME   *n;
    X509_EXTENSION  *ext;

    mx.cd_key = pki_fuzz_pem_pkey(dev_pem);

    x = X509_new();
    n = name2("CN", "Fuzz CD Signer", NULL, NULL);
    if (x == NULL || !X509_set_version(x, 2)
        || !ASN1_INTEGER_set(X509_get_serialNumber(x), 0x5a5a)
        || !X509_set_subject_name(x, n) || !X509_set_issuer_name(x, n)
        || !X509_gmtime_adj(X509_getm_notBefore(x), -86400)
        || !X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 3650)
        || !X509_set_pubkey(x, mx.cd_key))
    {
        die("CD signer", NULL);
    }
    X509_NAME_free(n);

    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_key_identifier, "hash");
    if (ext == NULL || !X509_add_ext(x, ext, -1)) {
        die("CD signer SKID", NULL);
    }
    X509_EXTENSION_free(ext);

    if (!X509_sign(x, mx.cd_key, EVP_sha256())) {
        die("CD signer signature", NULL);
    }

    mx.cd_signer = x;
}


const pki_fuzz_matter_t *
pki_fuzz_matter(void)
{
    X509           *paa, *rcac;
    pki_key_t      *kpaa, *kpai, *krc, *kic;
    pki_result_t    res;
    pki_template_t *tpaa, *tpai, *trc, *tic;
    char            chain[160];

    if (mx_done) {
        return &mx;
    }

    pki_fuzz_fixture();

    kpaa = pki_fuzz_key_pem(paa_pem, "paa.key");
    kpai = pki_fuzz_key_pem(pai_pem, "pai.key");
    krc = pki_fuzz_key_pem(rcac_pem, "rcac.key");
    kic = pki_fuzz_key_pem(icac_pem, "icac.key");
    mx.dev_key = pki_fuzz_pem_pkey(dev_pem);

    tpaa = mx.tpaa = builtin("matter-paa");
    tpai = builtin("matter-pai");
    trc = mx.trc = builtin("matter-rcac");
    tic = builtin("matter-icac");
    mx.tnoc = builtin("matter-noc");

    /* two DAC templates with a PID of their own (the PAI has none, and
     * a DAC template under it without one is refused) */
    mx.tdac = dac_template("dac-8000", "8000");
    mx.tdac2 = dac_template("dac-8001", "8001");

    /* attestation: PAA -> PAI -> DAC */
    pki_result_init(&res);
    {
        X509_NAME  *n = name2("CN", "Fuzz PAA", OID_VID, "FFF1");

        if (pki_selfsign(kpaa, tpaa, n, &paa, &res) != PKI_OK) {
            die("PAA", &res);
        }
        X509_NAME_free(n);
    }
    mx.capaa = ca("paa", paa, NULL, kpaa, tpai, NULL);
    mx.paa = pki_ca_cert(mx.capaa);
    X509_free(paa);

    {
        EVP_PKEY  *pk = pki_fuzz_pem_pkey(pai_pem);
        X509      *pai;

        pai = issue(mx.capaa, tpai, name2("CN", "Fuzz PAI", OID_VID, "FFF1"),
                    pk);
        EVP_PKEY_free(pk);
        mx.capai = ca("pai", pai, NULL, kpai, mx.tdac, mx.tdac2);
        X509_free(pai);
        mx.pai = pki_ca_cert(mx.capai);
    }

    mx.dac = issue(mx.capai, mx.tdac, name2("CN", "Fuzz DAC", NULL, NULL),
                   mx.dev_key);

    /* operational: RCAC -> ICAC */
    pki_result_init(&res);
    {
        X509_NAME  *n = name2(OID_RCACID, "CACACACA00000001", OID_FABRIC,
                              "FAB000000000001D");

        if (pki_selfsign(krc, trc, n, &rcac, &res) != PKI_OK) {
            die("RCAC", &res);
        }
        X509_NAME_free(n);
    }
    mx.carc = ca("rcac", rcac, NULL, krc, tic, mx.tnoc);
    mx.rcac = pki_ca_cert(mx.carc);
    X509_free(rcac);

    {
        EVP_PKEY  *pk = pki_fuzz_pem_pkey(icac_pem);
        X509      *icac;

        icac = issue(mx.carc, tic, name2(OID_ICACID, "CACACACA00000002",
                                         OID_FABRIC, "FAB000000000001D"), pk);
        EVP_PKEY_free(pk);
        snprintf(chain, sizeof(chain), "%s/rcac.pem", pki_fuzz_dir());
        mx.caic = ca("icac", icac, chain, kic, mx.tnoc, NULL);
        X509_free(icac);
        mx.icac = pki_ca_cert(mx.caic);
    }

    cd_signer();

    mx_done = 1;

    return &mx;
}
