/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The URLs a CA writes into what it signs (crl_url, ocsp_url,
 * ca_issuers_url): plain http only, ldap too where RFC 5280 has it (CRL
 * distribution point, caIssuers), never https (a relying party fetches
 * them while it validates a certificate: https may loop).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pki.h"
#include "test/unit.h"


typedef struct {
    const char  *line;
    const char  *url;
    int          ok;
    const char  *why;          /* in the refusal, or NULL */
} url_case_t;


int
main(void)
{
    size_t         i;
    pki_ca_t      *ca;
    const char    *argv[1];
    pki_status_t   st;
    pki_result_t   res;

    static const url_case_t  cases[] = {
        { "crl_url", "http://pki.example/ca.crl", 1, NULL },
        { "crl_url", "ldap://ldap.example/cn=CA?certificateRevocationList",
          1, NULL },
        { "crl_url", "https://pki.example/ca.crl", 0, "not https://" },
        { "crl_url", "HTTPS://pki.example/ca.crl", 0, "http:// (or" },
        { "crl_url", "ftp://pki.example/ca.crl", 0, "http:// (or" },
        { "crl_url", "http://", 0, "empty" },
        { "crl_url", "http://pki.example/a b", 0, "space" },
        { "ocsp_url", "http://ocsp.example", 1, NULL },
        { "ocsp_url", "https://ocsp.example", 0, "not https://" },
        { "ocsp_url", "ldap://ldap.example/cn=ocsp", 0, "RFC 6960" },
        { "ca_issuers_url", "http://pki.example/ca.crt", 1, NULL },
        { "ca_issuers_url", "ldap://ldap.example/cn=CA", 1, NULL },
        { "ca_issuers_url", "https://pki.example/ca.crt", 0,
          "not https://" },
    };

    pki_init();

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ca = pki_ca_new("url");
        argv[0] = cases[i].url;
        pki_result_init(&res);
        st = pki_ca_set(ca, cases[i].line, 1, argv, &res);

        if (cases[i].ok) {
            ok(st == PKI_OK, "%s %s: taken (%s)", cases[i].line,
               cases[i].url, res.detail);

        } else {
            ok(st == PKI_MALFORMED
               && strstr(res.detail, cases[i].why) != NULL,
               "%s %s: refused: %s", cases[i].line, cases[i].url,
               res.detail);
        }

        pki_ca_free(ca);
    }

    return done_testing();
}
