/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A template's extendedKeyUsage against every certificate on the CA's
 * paths: verifiers that nest purposes (OpenSSL with a purpose, Go,
 * Windows) refuse a leaf whose purpose a certificate above its CA does
 * not list, even when the CA certificate itself has no extendedKeyUsage.
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
static int   no_akid;     /* the next certificates have no AKID */


/* A CA certificate for cn and pub, issued by issuer (key ikey; NULL:
 * self-signed), with extendedKeyUsage eku unless NULL. */
static X509 *
ca_cert(const char *cn, EVP_PKEY *pub, X509 *issuer, EVP_PKEY *ikey,
    const char *eku)
{
    cx_ext_t     c = { 0 };
    static long  serial = 100;

    c.serial = serial++;
    c.ca = 1;
    c.pathlen = -1;
    c.no_akid = no_akid;
    c.ku = "critical,keyCertSign,cRLSign";
    c.eku = eku;

    return cx_cert(cn, pub, issuer, ikey, -3600, 86400L * 365, &c);
}


int
main(void)
{
    X509            *root, *subx, *other, *cross, *root2;
    EVP_PKEY        *rk, *sk, *ok2, *rk2;
    pki_ca_t        *ca;
    pki_key_t       *key;
    pki_result_t     res;
    pki_template_t  *tcli, *tsrv, *tcli2;
    static const char *const cli_lines[] = {
        "subject CN copy", "validity 10d",
        "extended_key_usage clientAuth", NULL
    };
    static const char *const srv_lines[] = {
        "subject CN copy", "validity 10d",
        "extended_key_usage serverAuth", NULL
    };

    snprintf(dir, sizeof(dir), "/tmp/pki-ca-eku-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        skip_all("no temporary directory");
    }

    rk = fx_keygen("EC:P-256");
    sk = fx_keygen("EC:P-256");
    ok2 = fx_keygen("EC:P-256");
    rk2 = fx_keygen("EC:P-256");

    /* a root restricted to serverAuth, a CA under it without any */
    root = ca_cert("EKU Root", rk, NULL, rk, "serverAuth");
    subx = ca_cert("EKU Sub", sk, root, rk, NULL);
    /* an unrelated old root restricted to serverAuth */
    other = ca_cert("Other Root", ok2, NULL, ok2, "serverAuth");
    /* a root without restriction and a cross certificate of the CA
     * under it, then one under the restricted root */
    root2 = ca_cert("Open Root", rk2, NULL, rk2, NULL);

    cx_write_certs(dir, "sub.pem", subx, NULL);
    cx_write_certs(dir, "root.pem", root, NULL);
    cx_write_certs(dir, "other.pem", other, NULL);
    cx_write_certs(dir, "open.pem", root2, NULL);

    key = fx_key_file(dir, "sub.key", sk);
    tcli = fx_template("cli", cli_lines);
    tcli2 = fx_template("cli2", cli_lines);
    tsrv = fx_template("srv", srv_lines);

    ca = cx_sub_ca(dir, "root.pem", NULL, key, tsrv, &res);
    ok(res.status == PKI_OK, "serverAuth template under a serverAuth "
       "root: %s", res.detail);

    /* added after the CA is finished: judged against the chain too */
    pki_result_init(&res);
    ok(pki_ca_add_template(ca, tcli2, &res) == PKI_MALFORMED
       && strstr(res.detail, "certificate 1 of CA chain") != NULL,
       "clientAuth template added later refused: %s", res.detail);
    pki_ca_free(ca);

    ca = cx_sub_ca(dir, "root.pem", NULL, key, tcli, &res);
    ok(res.status == PKI_MALFORMED
       && strstr(res.detail, "template \"cli\" issues certificates for "
                 "TLS Web Client Authentication") != NULL
       && strstr(res.detail, "certificate 1 of CA chain") != NULL
       && strstr(res.detail, "above CA \"sub\"") != NULL,
       "clientAuth template under a CA whose root is restricted to "
       "serverAuth refused: %s", res.detail);
    pki_ca_free(ca);

    /* the chain's issuer without a restriction, an old root beside it
     * with one: the old root is on no path of the CA */
    X509_free(subx);
    subx = ca_cert("EKU Sub", sk, root2, rk2, NULL);
    cx_write_certs(dir, "sub.pem", subx, NULL);
    cx_write_certs(dir, "two.pem", other, root2, NULL);
    ca = cx_sub_ca(dir, "two.pem", NULL, key, tcli, &res);
    ok(res.status == PKI_OK, "an unrelated restricted root in the "
       "chain file is not judged: %s", res.detail);
    pki_ca_free(ca);

    /* an alternate chain through a cross certificate under the
     * restricted root: clients that pick it refuse clientAuth leaves */
    cross = ca_cert("EKU Sub", sk, root, rk, NULL);
    cx_write_certs(dir, "alt.pem", cross, root, NULL);
    ca = cx_sub_ca(dir, "open.pem", "alt.pem", key, tcli, &res);
    ok(res.status == PKI_MALFORMED
       && strstr(res.detail, "certificate 2 of alternate chain") != NULL,
       "clientAuth template refused through an alternate chain: %s",
       res.detail);
    pki_ca_free(ca);

    /* a CA certificate without an AKID, and beside its open root a
     * restricted one of the same name but another key, which issued
     * nothing of this path: not judged */
    {
        X509      *fake, *subn;
        EVP_PKEY  *fk;

        fk = fx_keygen("EC:P-256");
        fake = ca_cert("Open Root", fk, NULL, fk, "serverAuth");
        no_akid = 1;
        subn = ca_cert("EKU Sub", sk, root2, rk2, NULL);
        no_akid = 0;
        cx_write_certs(dir, "sub.pem", subn, NULL);
        cx_write_certs(dir, "same-name.pem", fake, root2, NULL);
        ca = cx_sub_ca(dir, "same-name.pem", NULL, key, tcli, &res);
        ok(res.status == PKI_OK, "a restricted root of the issuer's name "
           "but another key is not judged: %s", res.detail);
        pki_ca_free(ca);
        X509_free(fake);
        X509_free(subn);
        EVP_PKEY_free(fk);
    }

    pki_template_free(tcli);
    pki_template_free(tcli2);
    pki_template_free(tsrv);
    pki_key_free(key);
    X509_free(root);
    X509_free(subx);
    X509_free(other);
    X509_free(cross);
    X509_free(root2);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(sk);
    EVP_PKEY_free(ok2);
    EVP_PKEY_free(rk2);

    {
        char  cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0) {
            diag("cannot remove %s", dir);
        }
    }

    return done_testing();
}
