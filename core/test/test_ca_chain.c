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
#include "test/certs.h"


static char  dir[64];


/* A CA certificate for cn and pub, issued by issuer (key ikey; NULL:
 * self-signed), valid from now + nb to now + na, with pathLenConstraint
 * pathlen unless negative. */
static X509 *
ca_cert(const char *cn, EVP_PKEY *pub, X509 *issuer, EVP_PKEY *ikey,
    long nb, long na, int pathlen)
{
    cx_ext_t     c = { 0 };
    static long  serial = 200;

    c.serial = serial++;
    c.ca = 1;
    c.pathlen = pathlen;
    c.ku = "critical,keyCertSign,cRLSign";

    return cx_cert(cn, pub, issuer, ikey, nb, na, &c);
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

    cx_write_certs(dir, "sub.pem", subx, NULL);
    cx_write_certs(dir, "old-new.pem", old, now, NULL);
    cx_write_certs(dir, "new-old.pem", now, old, NULL);
    cx_write_certs(dir, "old.pem", old, NULL);
    cx_write_certs(dir, "zero-new.pem", zero, now, NULL);
    cx_write_certs(dir, "zero.pem", zero, NULL);

    key = fx_key_file(dir, "sub.key", sk);

    ca = cx_sub_ca(dir, "new-old.pem", NULL, key, NULL, &res);
    ok(res.status == PKI_OK, "chain with the new root first: %s",
       res.detail);
    pki_ca_free(ca);

    ca = cx_sub_ca(dir, "old-new.pem", NULL, key, NULL, &res);
    ok(res.status == PKI_OK, "chain with the expired old root first, the "
       "new one after it: %s", res.detail);
    pki_ca_free(ca);

    ca = cx_sub_ca(dir, "zero-new.pem", NULL, key, NULL, &res);
    ok(res.status == PKI_OK, "an issuer with pathlen:0 first, one that "
       "allows the CA after it: %s", res.detail);
    pki_ca_free(ca);

    /* with no issuer that passes, the first one's fault is said */
    ca = cx_sub_ca(dir, "old.pem", NULL, key, NULL, &res);
    ok(res.status == PKI_MALFORMED
       && strstr(res.detail, "certificate 1 of CA chain") != NULL
       && strstr(res.detail, "the CA certificate's issuer, has expired")
          != NULL,
       "only the expired root: refused: %s", res.detail);
    pki_ca_free(ca);

    ca = cx_sub_ca(dir, "zero.pem", NULL, key, NULL, &res);
    ok(res.status == PKI_MALFORMED
       && strstr(res.detail, "has pathlen:0") != NULL,
       "only a root with pathlen:0: refused: %s", res.detail);
    pki_ca_free(ca);

    /* a chain of another CA still says so */
    notca = ca_cert("Another Root", sk, NULL, sk, -3600, 86400L, -1);
    cx_write_certs(dir, "other.pem", notca, NULL);
    ca = cx_sub_ca(dir, "other.pem", NULL, key, NULL, &res);
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
