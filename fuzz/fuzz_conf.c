/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The configuration lines our nginx directives hand to the core: template
 * lines (pki_template_set / pki_template_finish), CA lines
 * (pki_ca_set: templates, max_validity, crl_url, ocsp_url, key), PKCS#11
 * URIs (pki_key_uri_token, pki_key_new) and EST operation names.
 *
 * Input: text lines "directive arg arg ..." (split on spaces and tabs, at
 * most 16 words); a line starting with "ca " goes to the CA, "uri " to the
 * URI parsers, "op " to pki_est_op, anything else to the template.  The
 * nginx side of directive parsing (ngx_conf_t, block handlers, pki_redis
 * options) is covered by t/config_reject.t, not here: running nginx -t per
 * input would give a few executions per second.
 */

#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "fuzz.h"


#define PKI_FUZZ_WORDS  16


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;

    if (!pki_init()) {
        abort();
    }
    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int              argc;
    char            *text, *line, *lsave, *w, *wsave, *words[PKI_FUZZ_WORDS];
    char             tok[128];
    pki_ca_t        *ca;
    pki_key_t       *key;
    pki_result_t     res;
    pki_template_t  *t;

    if (size > 4096) {
        return 0;
    }

    text = pki_fuzz_strndup(data, size);
    t = pki_template_new("fuzz");
    ca = pki_ca_new("fuzz");
    if (t == NULL || ca == NULL) {
        abort();
    }

    for (line = strtok_r(text, "\n", &lsave); line;
         line = strtok_r(NULL, "\n", &lsave))
    {
        argc = 0;
        for (w = strtok_r(line, " \t", &wsave); w && argc < PKI_FUZZ_WORDS;
             w = strtok_r(NULL, " \t", &wsave))
        {
            words[argc++] = w;
        }

        if (argc == 0) {
            continue;
        }

        pki_result_init(&res);

        if (strcmp(words[0], "ca") == 0 && argc >= 2) {
            if (strcmp(words[1], "certificate") == 0
                || strcmp(words[1], "chain") == 0)
            {
                continue;           /* file access: not fuzzed here */
            }
            (void) pki_ca_set(ca, words[1], argc - 2,
                              (const char *const *) words + 2, &res);

        } else if (strcmp(words[0], "uri") == 0 && argc >= 2) {
            (void) pki_key_uri_token(words[1], tok, sizeof(tok));
            if (strncmp(words[1], "pkcs11:", 7) == 0) {
                key = pki_key_new(words[1], NULL, &res);
                pki_key_free(key);
            }

        } else if (strcmp(words[0], "op") == 0 && argc >= 2) {
            (void) pki_est_op(words[1], strlen(words[1]));

        } else {
            (void) pki_template_set(t, words[0], argc - 1,
                                    (const char *const *) words + 1, &res);
        }
    }

    pki_result_init(&res);
    if (pki_template_finish(t, &res) == PKI_OK) {
        (void) pki_template_validity(t);
        (void) pki_template_server_keygen(t);
    }

    (void) pki_ca_key_ref(ca);
    for (argc = 0; argc < pki_ca_template_count(ca); argc++) {
        (void) pki_ca_template_name(ca, argc);
    }

    pki_ca_free(ca);
    pki_template_free(t);
    free(text);
    ERR_clear_error();

    return 0;
}
