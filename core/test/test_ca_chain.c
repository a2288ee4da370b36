/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The CA certificate's issuer in the "chain" file: a root re-issued with
 * its key for a longer life leaves two issuers of the CA certificate, the
 * old one expired; the file may hold them in either order.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "pki.h"
#include "test/unit.h"
#include "test/fixture.h"


static char  dir[64];


/* A CA certificate for cn and pub, issued by issuer (key ikey; NULL:
 * self-signed), valid from now + nb to now + na, with pathLenConstraint
 * pathlen unless negative. */
static X509 *
ca_cert(const char *cn, EVP_PKEY *pub, X509 *issuer, EVP_PKEY *ikey,
    long nb, long na, int pathlen)
{
    int              i, nid[5];
    char             bc[64];
    X509            *x;
    X509_NAME       *n;
    X509V3_CTX       v3;
    const char      *val[5];
    X509_EXTENSION  *e;
    static long      serial = 200;

    x = X509_new();
    n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    X509_gmtime_adj(X509_getm_notBefore(x), nb);
    X509_gmtime_adj(X509_getm_notAfter(x), na);
    X509_set_pubkey(x, pub);
    X509_NAME_free(n);

    if (pathlen >= 0) {
        snprintf(bc, sizeof(bc), "critical,CA:TRUE,pathlen:%d", pathlen);
    } else {
        snprintf(bc, sizeof(bc), "critical,CA:TRUE");
    }

    nid[0] = NID_basic_constraints;
    val[0] = bc;
    nid[1] = NID_key_usage;
    val[1] = "critical,keyCertSign,cRLSign";
    nid[2] = NID_subject_key_identifier;
    val[2] = "hash";
    nid[3] = issuer ? NID_authority_key_identifier : NID_undef;
    val[3] = "keyid:always";
    nid[4] = NID_undef;
    val[4] = NULL;

    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);

    for (i = 0; i < 5; i++) {
        if (nid[i] == NID_undef) {
            continue;
        }
        e = X509V3_EXT_conf_nid(NULL, &v3, nid[i], val[i]);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }

    X509_sign(x, ikey ? ikey : NULL, EVP_sha256());

    return x;
}


static void
write_certs(const char *name, X509 *a, X509 *b)
{
    FILE  *f;
    char   path[128];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    PEM_write_X509(f, a);
    if (b != NULL) {
        PEM_write_X509(f, b);
    }
    fclose(f);
}


static pki_status_t
ca_line(pki_ca_t *ca, const char *name, const char *file, pki_result_t *res)
{
    char         path[128];
    const char  *argv[1];

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    argv[0] = path;
    return pki_ca_set(ca, name, 1, argv, res);
}


/* CA "sub" of DIR/sub.pem under DIR/chain; res says how pki_ca_finish
 * went. */
static pki_ca_t *
sub_ca(const char *chain, pki_key_t *key, pki_result_t *res)
{
    pki_ca_t  *ca;

    pki_result_init(res);
    ca = pki_ca_new("sub");
    ca_line(ca, "certificate", "sub.pem", res);
    ca_line(ca, "chain", chain, res);
    pki_ca_set_key(ca, key, res);
    pki_result_init(res);
    (void) pki_ca_finish(ca, res);

    return ca;
}


int
main(void)
{
    X509          *old, *now, *subx, *zero, *notca;
    EVP_PKEY      *rk, *sk;
    pki_ca_t      *ca;
    pki_key_t     *key;
    pki_result_t   res;

    snprintf(dir, sizeof(dir), "/tmp/pki-ca-chain-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        skip_all("no temporary directory");
    }

    rk = fx_keygen("EC:P-256");
    sk = fx_keygen("EC:P-256");

    /* one root, one key: the old certificate expired yesterday, the new
     * one (re-issued for a longer life) valid for a year */
    old = ca_cert("Rollover Root", rk, NULL, rk, -86400L * 400, -86400L,
                  -1);
    now = ca_cert("Rollover Root", rk, NULL, rk, -3600, 86400L * 365, -1);
    /* and one that allows no CA under it */
    zero = ca_cert("Rollover Root", rk, NULL, rk, -3600, 86400L * 365, 0);
    subx = ca_cert("Rollover Sub", sk, now, rk, -3600, 86400L * 100, -1);

    write_certs("sub.pem", subx, NULL);
    write_certs("old-new.pem", old, now);
    write_certs("new-old.pem", now, old);
    write_certs("old.pem", old, NULL);
    write_certs("zero-new.pem", zero, now);
    write_certs("zero.pem", zero, NULL);

    key = fx_key_file(dir, "sub.key", sk);

    ca = sub_ca("new-old.pem", key, &res);
    ok(res.status == PKI_OK, "chain with the new root first: %s",
       res.detail);
    pki_ca_free(ca);

    ca = sub_ca("old-new.pem", key, &res);
    ok(res.status == PKI_OK, "chain with the expired old root first, the "
       "new one after it: %s", res.detail);
    pki_ca_free(ca);

    ca = sub_ca("zero-new.pem", key, &res);
    ok(res.status == PKI_OK, "an issuer with pathlen:0 first, one that "
       "allows the CA after it: %s", res.detail);
    pki_ca_free(ca);

    /* with no issuer that passes, the first one's fault is said */
    ca = sub_ca("old.pem", key, &res);
    ok(res.status == PKI_MALFORMED
       && strstr(res.detail, "certificate 1 of CA chain") != NULL
       && strstr(res.detail, "the CA certificate's issuer, has expired")
          != NULL,
       "only the expired root: refused: %s", res.detail);
    pki_ca_free(ca);

    ca = sub_ca("zero.pem", key, &res);
    ok(res.status == PKI_MALFORMED
       && strstr(res.detail, "has pathlen:0") != NULL,
       "only a root with pathlen:0: refused: %s", res.detail);
    pki_ca_free(ca);

    /* a chain of another CA still says so */
    notca = ca_cert("Another Root", sk, NULL, sk, -3600, 86400L, -1);
    write_certs("other.pem", notca, NULL);
    ca = sub_ca("other.pem", key, &res);
    ok(res.status == PKI_MALFORMED
       && strstr(res.detail, "a chain file of another CA?") != NULL,
       "a chain without the issuer: refused: %s", res.detail);
    pki_ca_free(ca);

    pki_key_free(key);
    X509_free(old);
    X509_free(now);
    X509_free(zero);
    X509_free(subx);
    X509_free(notca);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(sk);

    {
        char  cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0) {
            diag("cannot remove %s", dir);
        }
    }

    return done_testing();
}
