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


static char  dir[64];
static int   no_akid;     /* the next certificates have no AKID */


/* A CA certificate for cn and pub, issued by issuer (key ikey; NULL:
 * self-signed), with extendedKeyUsage eku unless NULL. */
static X509 *
ca_cert(const char *cn, EVP_PKEY *pub, X509 *issuer, EVP_PKEY *ikey,
    const char *eku)
{
    int              i, nid[5];
    X509            *x;
    X509_NAME       *n;
    X509V3_CTX       v3;
    const char      *val[5];
    X509_EXTENSION  *e;
    static long      serial = 100;

    x = X509_new();
    n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365);
    X509_set_pubkey(x, pub);
    X509_NAME_free(n);

    nid[0] = NID_basic_constraints;
    val[0] = "critical,CA:TRUE";
    nid[1] = NID_key_usage;
    val[1] = "critical,keyCertSign,cRLSign";
    nid[2] = NID_subject_key_identifier;
    val[2] = "hash";
    nid[3] = issuer && !no_akid ? NID_authority_key_identifier : NID_undef;
    val[3] = "keyid:always";
    nid[4] = eku ? NID_ext_key_usage : NID_undef;
    val[4] = eku;

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


/* CA "sub" of DIR/sub.pem under chain (and alternate chain alt unless
 * NULL), issuing template t; res says how pki_ca_finish went. */
static pki_ca_t *
sub_ca(const char *chain, const char *alt, pki_key_t *key,
    pki_template_t *t, pki_result_t *res)
{
    pki_ca_t  *ca;

    pki_result_init(res);
    ca = pki_ca_new("sub");
    ca_line(ca, "certificate", "sub.pem", res);
    ca_line(ca, "chain", chain, res);
    if (alt != NULL) {
        ca_line(ca, "alternate_chain", alt, res);
    }
    pki_ca_set_key(ca, key, res);
    pki_ca_add_template(ca, t, res);
    pki_result_init(res);
    (void) pki_ca_finish(ca, res);

    return ca;
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

    write_certs("sub.pem", subx, NULL);
    write_certs("root.pem", root, NULL);
    write_certs("other.pem", other, NULL);
    write_certs("open.pem", root2, NULL);

    key = fx_key_file(dir, "sub.key", sk);
    tcli = fx_template("cli", cli_lines);
    tcli2 = fx_template("cli2", cli_lines);
    tsrv = fx_template("srv", srv_lines);

    ca = sub_ca("root.pem", NULL, key, tsrv, &res);
    ok(res.status == PKI_OK, "serverAuth template under a serverAuth "
       "root: %s", res.detail);

    /* added after the CA is finished: judged against the chain too */
    pki_result_init(&res);
    ok(pki_ca_add_template(ca, tcli2, &res) == PKI_MALFORMED
       && strstr(res.detail, "certificate 1 of CA chain") != NULL,
       "clientAuth template added later refused: %s", res.detail);
    pki_ca_free(ca);

    ca = sub_ca("root.pem", NULL, key, tcli, &res);
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
    write_certs("sub.pem", subx, NULL);
    write_certs("two.pem", other, root2);
    ca = sub_ca("two.pem", NULL, key, tcli, &res);
    ok(res.status == PKI_OK, "an unrelated restricted root in the "
       "chain file is not judged: %s", res.detail);
    pki_ca_free(ca);

    /* an alternate chain through a cross certificate under the
     * restricted root: clients that pick it refuse clientAuth leaves */
    cross = ca_cert("EKU Sub", sk, root, rk, NULL);
    write_certs("alt.pem", cross, root);
    ca = sub_ca("open.pem", "alt.pem", key, tcli, &res);
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
        write_certs("sub.pem", subn, NULL);
        write_certs("same-name.pem", fake, root2);
        ca = sub_ca("same-name.pem", NULL, key, tcli, &res);
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
