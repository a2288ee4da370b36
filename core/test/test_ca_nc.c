/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A single-label CN ("intranet") against a CA's dNSName constraints: TLS
 * clients that fall back to the CN (OpenSSL's X509_check_host, so curl
 * and Python) match the host "intranet" against it, and OpenSSL's own
 * constraint check of the CN skips a name without a dot, so a CA
 * constrained to example.com would sign a server certificate verifiers
 * take for "intranet".  Judged under templates whose CN names a host;
 * a device template's serial number is not.
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


static X509 *
issue_cn(pki_ca_t *ca, const pki_template_t *t, const char *cn,
    pki_result_t *res)
{
    X509           *x;
    EVP_PKEY       *pk;
    X509_NAME      *name;
    pki_request_t   req;

    pk = fx_keygen("EC:P-256");
    name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);

    memset(&req, 0, sizeof(req));
    pki_result_init(res);
    x = NULL;

    if (pki_request_build(t, name, NULL, pk, &req, res) == PKI_OK) {
        (void) pki_issue(ca, t, NULL, &req, NULL, &x, res);
    }

    pki_request_clear(&req);
    X509_NAME_free(name);
    EVP_PKEY_free(pk);

    return x;
}


int
main(void)
{
    size_t           i;
    char             path[128];
    X509            *x;
    EVP_PKEY        *rk;
    pki_ca_t        *ca;
    pki_key_t       *key;
    X509_NAME       *name;
    const char      *argv[1];
    pki_result_t     res;
    pki_template_t  *troot, *tsrv, *tdev, *tcli;
    static const char *const root_lines[] = {
        "subject CN copy", "basic_constraints ca:true", "validity 30d",
        "extension 2.5.29.30 critical "
        "3011a00f300d820b6578616d706c652e636f6d", NULL
    };
    static const char *const srv_lines[] = {
        "subject CN copy", "san dns copy", "validity 10d",
        "extended_key_usage serverAuth", NULL
    };
    static const char *const dev_lines[] = {
        "subject CN copy", "validity 10d", NULL
    };
    static const char *const cli_lines[] = {
        "subject CN copy", "validity 10d",
        "extended_key_usage clientAuth", NULL
    };
    static const struct {
        int          tmpl;     /* 0 server, 1 device, 2 client */
        const char  *cn;
        int          issued;
    } cases[] = {
        { 0, "intranet", 0 },
        { 0, "intranet.", 0 },
        { 0, "device-33", 0 },
        { 0, "www.example.com", 1 },
        { 0, "example.com", 1 },
        { 0, "intranet.example.org", 0 },
        { 0, "Device 33", 1 },
        { 0, "12345", 1 },
        { 1, "intranet", 1 },
        { 1, "SN0001", 1 },
        { 2, "intranet", 1 },
    };

    snprintf(dir, sizeof(dir), "/tmp/pki-ca-nc-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        skip_all("no temporary directory");
    }

    pki_init();

    rk = fx_keygen("EC:P-256");
    key = fx_key_file(dir, "root.key", rk);
    troot = fx_template("root", root_lines);
    tsrv = fx_template("srv", srv_lines);
    tdev = fx_template("dev", dev_lines);
    tcli = fx_template("cli", cli_lines);

    /* a root permitted example.com only */
    name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *) "Constrained Root",
                               -1, -1, 0);
    pki_result_init(&res);
    x = NULL;
    ok(pki_selfsign(key, troot, name, &x, &res) == PKI_OK,
       "constrained root: %s", res.detail);
    X509_NAME_free(name);
    fx_write_cert(dir, "root.pem", x);
    X509_free(x);

    pki_result_init(&res);
    ca = pki_ca_new("cons");
    snprintf(path, sizeof(path), "%s/root.pem", dir);
    argv[0] = path;
    pki_ca_set(ca, "certificate", 1, argv, &res);
    pki_ca_set_key(ca, key, &res);
    pki_ca_add_template(ca, tsrv, &res);
    pki_ca_add_template(ca, tdev, &res);
    pki_ca_add_template(ca, tcli, &res);
    ok(pki_ca_finish(ca, &res) == PKI_OK, "constrained CA: %s", res.detail);

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const pki_template_t  *t;

        t = cases[i].tmpl == 0 ? tsrv : cases[i].tmpl == 1 ? tdev : tcli;
        x = issue_cn(ca, t, cases[i].cn, &res);

        if (cases[i].issued) {
            ok(x != NULL, "template %s, CN \"%s\": issued: %s",
               pki_template_name(t), cases[i].cn, res.detail);
        } else {
            ok(x == NULL && res.status == PKI_POLICY
               && strstr(res.detail, "name constraints") != NULL,
               "template %s, CN \"%s\": refused: %s",
               pki_template_name(t), cases[i].cn, res.detail);
        }

        X509_free(x);
    }

    pki_ca_free(ca);
    pki_template_free(troot);
    pki_template_free(tsrv);
    pki_template_free(tdev);
    pki_template_free(tcli);
    pki_key_free(key);
    EVP_PKEY_free(rk);

    {
        char  cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0) {
            diag("cannot remove %s", dir);
        }
    }

    return done_testing();
}
