/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Template directive parsing and consistency checks.
 */

#include <string.h>

#include "pki.h"
#include "test/unit.h"


#define MAX_ARGS  16


typedef struct {
    const char    *line;
    pki_status_t   want;
    const char    *detail;   /* substring of the detail, or NULL */
} line_case_t;

typedef struct {
    const char    *name;
    const char    *lines[8];
    pki_status_t   want;
    const char    *detail;
} finish_case_t;


static const line_case_t  line_cases[] = {
    /* key_types */
    { "key_types ec:P-256", PKI_OK, NULL },
    { "key_types ec:P-256 ec:P-384 ec:P-521 rsa:2048 rsa:3072-4096 ed25519 "
      "ed448", PKI_OK, NULL },
    { "key_types EC:p-384", PKI_OK, NULL },
    { "key_types ec:P-999", PKI_MALFORMED, "unknown key type \"ec:P-999\"" },
    { "key_types rsa:1024", PKI_MALFORMED, "unknown key type \"rsa:1024\"" },
    { "key_types rsa:4096-2048", PKI_MALFORMED, "unknown key type" },
    { "key_types rsa:2048-", PKI_MALFORMED, "unknown key type" },
    { "key_types rsa:", PKI_MALFORMED, "unknown key type" },
    { "key_types rsa:99999999999999999999", PKI_MALFORMED,
      "unknown key type" },
    { "key_types dsa:2048", PKI_MALFORMED, "unknown key type \"dsa:2048\"" },
    { "key_types ec:P-256 ec:P-256", PKI_MALFORMED, "duplicate key type" },
    { "key_types", PKI_MALFORMED, "invalid number of arguments" },

    /* subject */
    { "subject CN required", PKI_OK, NULL },
    { "subject O copy", PKI_OK, NULL },
    { "subject OU forbidden", PKI_OK, NULL },
    { "subject C fixed DE", PKI_OK, NULL },
    { "subject C fixed DEU", PKI_MALFORMED, "invalid value \"DEU\"" },
    { "subject ST copy", PKI_OK, NULL },
    { "subject L copy", PKI_OK, NULL },
    { "subject serialNumber copy", PKI_OK, NULL },
    { "subject emailAddress copy", PKI_OK, NULL },
    { "subject DC copy", PKI_OK, NULL },
    { "subject UID copy", PKI_OK, NULL },
    { "subject 1.3.6.1.4.1.37244.1.1 copy", PKI_OK, NULL },
    { "subject 1.3..6 copy", PKI_MALFORMED, "unknown subject attribute" },
    { "subject 1.3. copy", PKI_MALFORMED, "unknown subject attribute" },
    { "subject 13 copy", PKI_MALFORMED, "unknown subject attribute" },
    { "subject commonName copy", PKI_MALFORMED,
      "unknown subject attribute \"commonName\"" },
    { "subject CN maybe", PKI_MALFORMED, "unknown subject rule \"maybe\"" },
    { "subject CN fixed", PKI_MALFORMED, "needs a value" },
    { "subject CN copy x", PKI_MALFORMED, "takes no value" },
    { "subject CN", PKI_MALFORMED, "invalid number of arguments" },
    { "subject CN fixed a b", PKI_MALFORMED, "invalid number of arguments" },

    /* san */
    { "san dns copy", PKI_OK, NULL },
    { "san dns required wildcard", PKI_OK, NULL },
    { "san ip copy", PKI_OK, NULL },
    { "san email forbidden", PKI_OK, NULL },
    { "san uri required", PKI_OK, NULL },
    { "san dirname copy", PKI_MALFORMED, "unknown SAN type \"dirname\"" },
    { "san dns sometimes", PKI_MALFORMED, "unknown SAN rule" },
    { "san ip copy wildcard", PKI_MALFORMED, "unexpected \"wildcard\"" },
    { "san dns forbidden wildcard", PKI_MALFORMED, "unexpected" },
    { "san dns copy wild", PKI_MALFORMED, "unexpected" },

    /* validity */
    { "validity 30d", PKI_OK, NULL },
    { "validity 12h", PKI_OK, NULL },
    { "validity 90m", PKI_OK, NULL },
    { "validity 3600s", PKI_OK, NULL },
    { "validity 3600", PKI_OK, NULL },
    { "validity 0", PKI_MALFORMED, "invalid validity \"0\"" },
    { "validity -5d", PKI_MALFORMED, "invalid validity" },
    { "validity 5y", PKI_MALFORMED, "invalid validity \"5y\"" },
    { "validity 5dd", PKI_MALFORMED, "invalid validity" },
    { "validity d", PKI_MALFORMED, "invalid validity" },
    { "validity 99999999999999999999", PKI_MALFORMED, "invalid validity" },
    { "validity 30d 1h", PKI_MALFORMED, "invalid number of arguments" },

    /* key_usage */
    { "key_usage digitalSignature", PKI_OK, NULL },
    { "key_usage digitalSignature nonRepudiation keyEncipherment "
      "dataEncipherment keyAgreement keyCertSign cRLSign encipherOnly "
      "decipherOnly", PKI_OK, NULL },
    { "key_usage contentCommitment", PKI_OK, NULL },
    { "key_usage signEverything", PKI_MALFORMED,
      "unknown key usage \"signEverything\"" },
    { "key_usage cRLSign cRLSign", PKI_MALFORMED, "duplicate key usage" },

    /* extended_key_usage */
    { "extended_key_usage clientAuth serverAuth codeSigning emailProtection "
      "timeStamping OCSPSigning", PKI_OK, NULL },
    { "extended_key_usage 1.3.6.1.5.5.7.3.17", PKI_OK, NULL },
    { "extended_key_usage clientauth", PKI_MALFORMED,
      "unknown extended key usage \"clientauth\"" },
    { "extended_key_usage clientAuth 1.3.6.1.5.5.7.3.2", PKI_MALFORMED,
      "duplicate extended key usage" },

    /* basic_constraints */
    { "basic_constraints ca:false", PKI_OK, NULL },
    { "basic_constraints ca:true", PKI_OK, NULL },
    { "basic_constraints ca:true pathlen:0", PKI_OK, NULL },
    { "basic_constraints ca:true pathlen:255", PKI_OK, NULL },
    { "basic_constraints ca:true pathlen:256", PKI_MALFORMED,
      "invalid path length" },
    { "basic_constraints ca:true pathlen:-1", PKI_MALFORMED,
      "invalid basic constraint" },
    { "basic_constraints ca:true depth:1", PKI_MALFORMED,
      "invalid basic constraint" },
    { "basic_constraints ca:false pathlen:1", PKI_MALFORMED,
      "pathlen needs ca:true" },
    { "basic_constraints CA:TRUE", PKI_MALFORMED, "invalid basic constraint" },

    /* extension */
    { "extension 1.3.6.1.4.1.37244.1.1 critical 0500", PKI_OK, NULL },
    { "extension 1.3.6.1.4.1.99.1 noncritical 0c0568656c6c6f", PKI_OK, NULL },
    { "extension 1.3.6.1.4.1.99.1 noncritical 0C0568656C6C6F", PKI_OK, NULL },
    { "extension 1.3.6.1.4.1.99.1 maybe 0500", PKI_MALFORMED,
      "invalid criticality" },
    { "extension 1.3.6.1.4.1.99.1 critical 050", PKI_MALFORMED,
      "invalid extension value" },
    { "extension 1.3.6.1.4.1.99.1 critical 05zz", PKI_MALFORMED,
      "invalid hex" },
    { "extension 1.3.6.1.4.1.99.1 critical 050000", PKI_MALFORMED,
      "not one DER element" },
    { "extension 1.3.6.1.4.1.99.1 critical 0c05686565", PKI_MALFORMED,
      "not one DER element" },
    { "extension 2.5.29.19 critical 3000", PKI_MALFORMED,
      "built by the issuer" },
    { "extension 2.5.29.17 noncritical 3000", PKI_MALFORMED,
      "built by the issuer" },
    { "extension subjectAltName critical 3000", PKI_MALFORMED,
      "invalid extension OID" },
    { "extension 1.2.3 critical", PKI_MALFORMED,
      "invalid number of arguments" },

    /* flags */
    { "server_keygen on", PKI_OK, NULL },
    { "server_keygen off", PKI_OK, NULL },
    { "server_keygen yes", PKI_MALFORMED, "invalid value \"yes\"" },
    { "beyond_ca_expiry on", PKI_OK, NULL },
    { "beyond_ca_expiry maybe", PKI_MALFORMED, "invalid value \"maybe\"" },

    /* unknown */
    { "frobnicate 1", PKI_MALFORMED,
      "unknown template directive \"frobnicate\"" },
};


static const finish_case_t  finish_cases[] = {
    { "minimal", { "subject CN required", NULL }, PKI_OK, NULL },
    { "san only", { "san dns required", NULL }, PKI_OK, NULL },
    { "nothing allowed", { "key_types ec:P-256", NULL }, PKI_MALFORMED,
      "allows no subject attribute and no SAN" },
    { "only forbidden", { "subject CN forbidden", "san dns forbidden", NULL },
      PKI_MALFORMED, "allows no subject attribute" },
    { "keyCertSign without ca", { "subject CN copy",
      "key_usage digitalSignature keyCertSign", NULL }, PKI_MALFORMED,
      "keyCertSign needs \"basic_constraints ca:true\"" },
    { "ca without keyCertSign", { "subject CN copy",
      "basic_constraints ca:true", "key_usage digitalSignature", NULL },
      PKI_MALFORMED, "needs keyCertSign" },
    { "ca ok", { "subject CN copy", "basic_constraints ca:true pathlen:0",
      "key_usage keyCertSign cRLSign", NULL }, PKI_OK, NULL },
    { "ca default ku", { "subject CN copy", "basic_constraints ca:true",
      NULL }, PKI_OK, NULL },
    /* RFC 5280: CA certificates only */
    { "name constraints in a leaf", { "subject CN copy",
      "extension 2.5.29.30 critical 3011a00f300d820b6578616d706c652e636f6d",
      NULL }, PKI_MALFORMED, "X509v3 Name Constraints is for CA "
      "certificates only" },
    { "policy constraints in a leaf", { "subject CN copy",
      "extension 2.5.29.36 critical 3003800100", NULL }, PKI_MALFORMED,
      "X509v3 Policy Constraints is for CA certificates only" },
    { "inhibitAnyPolicy in a leaf", { "subject CN copy",
      "extension 2.5.29.54 critical 020100", NULL }, PKI_MALFORMED,
      "Inhibit Any Policy is for CA certificates only" },
    { "name constraints in a CA", { "subject CN copy",
      "basic_constraints ca:true",
      "extension 2.5.29.30 critical 3011a00f300d820b6578616d706c652e636f6d",
      NULL }, PKI_OK, NULL },
    { "keyEncipherment without RSA", { "subject CN copy",
      "key_types ec:P-256", "key_usage digitalSignature keyEncipherment",
      NULL }, PKI_MALFORMED, "need RSA" },
    { "keyEncipherment with RSA", { "subject CN copy", "key_types rsa:2048",
      "key_usage digitalSignature keyEncipherment", NULL }, PKI_OK, NULL },
    { "encipherOnly alone", { "subject CN copy",
      "key_usage digitalSignature encipherOnly", NULL }, PKI_MALFORMED,
      "need keyAgreement" },
    /* RFC 8410 5: an Ed25519/Ed448 key's keyUsage has digitalSignature,
     * nonRepudiation, keyCertSign or cRLSign; refused here when only Ed
     * keys are allowed, at issuance for an Ed key when others are too */
    { "ed25519 keyAgreement only", { "subject CN copy", "key_types ed25519",
      "key_usage keyAgreement", NULL }, PKI_MALFORMED,
      "an Ed25519 or Ed448 key needs digitalSignature, nonRepudiation, "
      "keyCertSign or cRLSign in \"key_usage\" (RFC 8410 5)" },
    { "ed448 keyAgreement encipherOnly", { "subject CN copy",
      "key_types ed448", "key_usage keyAgreement encipherOnly", NULL },
      PKI_MALFORMED, "RFC 8410" },
    { "ed25519 ed448 keyAgreement", { "subject CN copy",
      "key_types ed25519 ed448", "key_usage keyAgreement", NULL },
      PKI_MALFORMED, "RFC 8410" },
    { "ed25519 nonRepudiation", { "subject CN copy", "key_types ed25519",
      "key_usage nonRepudiation", NULL }, PKI_OK, NULL },
    { "ed25519 digitalSignature keyAgreement", { "subject CN copy",
      "key_types ed25519", "key_usage digitalSignature keyAgreement",
      NULL }, PKI_OK, NULL },
    { "ed25519 and EC keyAgreement", { "subject CN copy",
      "key_types ec:P-256 ed25519", "key_usage keyAgreement", NULL },
      PKI_OK, NULL },
    { "default key types keyAgreement", { "subject CN copy",
      "key_usage keyAgreement", NULL }, PKI_OK, NULL },
    /* RFC 3279 2.3.1: no keyAgreement for RSA; a template whose key
     * types all lose every bit could issue nothing */
    { "rsa keyAgreement only", { "subject CN copy", "key_types rsa:2048",
      "key_usage keyAgreement", NULL }, PKI_MALFORMED,
      "no key type of \"key_types\" may carry its \"key_usage\"" },
    { "rsa ed25519 keyAgreement", { "subject CN copy",
      "key_types rsa:2048 ed25519", "key_usage keyAgreement", NULL },
      PKI_MALFORMED, "RFC 3279" },
    { "rsa ec keyAgreement", { "subject CN copy",
      "key_types rsa:2048 ec:P-256", "key_usage keyAgreement", NULL },
      PKI_OK, NULL },
    { "server_keygen on a CA", { "subject CN copy",
      "basic_constraints ca:true", "server_keygen on", NULL },
      PKI_MALFORMED, "server_keygen is not allowed" },
    { "duplicate validity", { "subject CN copy", "validity 1d",
      "validity 2d", NULL }, PKI_MALFORMED, "\"validity\" is duplicate" },
    { "duplicate subject rule", { "subject CN copy", "subject CN required",
      NULL }, PKI_MALFORMED, "duplicate rule for subject attribute \"CN\"" },
    { "duplicate subject rule by OID", { "subject CN copy",
      "subject 2.5.4.3 required", NULL }, PKI_MALFORMED,
      "duplicate rule for subject attribute" },
    { "duplicate san rule", { "san dns copy", "san dns required", NULL },
      PKI_MALFORMED, "duplicate rule for SAN type \"dns\"" },
    { "duplicate key_types", { "key_types ed25519", "key_types ec:P-256",
      NULL }, PKI_MALFORMED, "\"key_types\" is duplicate" },
    { "duplicate extension", { "subject CN copy",
      "extension 1.2.3.4 critical 0500", "extension 1.2.3.4 noncritical 0500",
      NULL }, PKI_MALFORMED, "duplicate extension 1.2.3.4" },
    { "duplicate key_usage", { "key_usage digitalSignature",
      "key_usage cRLSign", NULL }, PKI_MALFORMED, "is duplicate" },
    { "duplicate eku", { "extended_key_usage clientAuth",
      "extended_key_usage serverAuth", NULL }, PKI_MALFORMED, "is duplicate" },
    { "duplicate bc", { "basic_constraints ca:false",
      "basic_constraints ca:false", NULL }, PKI_MALFORMED, "is duplicate" },
    { "duplicate flag", { "server_keygen on", "server_keygen off", NULL },
      PKI_MALFORMED, "is duplicate" },
};


static pki_status_t
set_line(pki_template_t *t, const char *line, pki_result_t *res)
{
    int          argc;
    char         buf[1024], *p, *words[MAX_ARGS + 1];
    const char  *argv[MAX_ARGS];

    snprintf(buf, sizeof(buf), "%s", line);
    argc = 0;

    for (p = strtok(buf, " "); p && argc <= MAX_ARGS; p = strtok(NULL, " ")) {
        words[argc++] = p;
    }

    for (int i = 1; i < argc; i++) {
        argv[i - 1] = words[i];
    }

    return pki_template_set(t, words[0], argc - 1, argv, res);
}


int
main(void)
{
    size_t           i, j;
    pki_status_t     st;
    pki_result_t     res;
    pki_template_t  *t;

    pki_init();

    for (i = 0; i < sizeof(line_cases) / sizeof(line_cases[0]); i++) {
        t = pki_template_new("device");
        pki_result_init(&res);
        st = set_line(t, line_cases[i].line, &res);
        is_status(st, line_cases[i].want, line_cases[i].line);
        if (line_cases[i].detail) {
            ok(strstr(res.detail, line_cases[i].detail) != NULL,
               "  detail \"%s\" has \"%s\"", res.detail, line_cases[i].detail);
        }
        pki_template_free(t);
    }

    for (i = 0; i < sizeof(finish_cases) / sizeof(finish_cases[0]); i++) {
        t = pki_template_new("device");
        pki_result_init(&res);
        st = PKI_OK;

        for (j = 0; finish_cases[i].lines[j] && st == PKI_OK; j++) {
            st = set_line(t, finish_cases[i].lines[j], &res);
        }

        if (st == PKI_OK) {
            st = pki_template_finish(t, &res);
        }

        is_status(st, finish_cases[i].want, finish_cases[i].name);
        if (finish_cases[i].detail) {
            ok(strstr(res.detail, finish_cases[i].detail) != NULL,
               "  detail \"%s\" has \"%s\"", res.detail,
               finish_cases[i].detail);
        }
        pki_template_free(t);
    }

    /* Defaults and accessors. */
    t = pki_template_new("web");
    ok(t != NULL && strcmp(pki_template_name(t), "web") == 0, "name");
    set_line(t, "subject CN copy", &res);
    is_status(pki_template_finish(t, &res), PKI_OK, "finish defaults");
    ok(pki_template_validity(t) == 30L * 86400, "default validity 30d");
    ok(pki_template_server_keygen(t) == 0, "default server_keygen off");
    pki_result_init(&res);
    is_status(set_line(t, "validity 1d", &res), PKI_INTERNAL,
              "no change after finish");
    pki_template_free(t);

    t = pki_template_new("web");
    set_line(t, "subject CN copy", &res);
    set_line(t, "validity 12h", &res);
    set_line(t, "server_keygen on", &res);
    pki_template_finish(t, &res);
    ok(pki_template_validity(t) == 12 * 3600, "validity 12h");
    ok(pki_template_server_keygen(t) == 1, "server_keygen on");
    pki_template_free(t);

    ok(pki_template_new("") == NULL, "empty name refused");
    ok(pki_template_new(NULL) == NULL, "NULL name refused");

    return done_testing();
}
