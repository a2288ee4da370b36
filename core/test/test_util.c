/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests: results, base64, serial numbers, configured names.
 */

#include <string.h>

#include <openssl/err.h>

#include "pki.h"
#include "unit.h"


typedef struct {
    const char  *in;
    const char  *out;       /* NULL: must be refused */
    size_t       outlen;
} b64_case_t;


static const b64_case_t  b64_cases[] = {
    { "TWFu", "Man", 3 },
    { "TWE=", "Ma", 2 },
    { "TQ==", "M", 1 },
    { "TW\nFu\n", "Man", 3 },
    { " T W F u ", "Man", 3 },
    { "TWE", "Ma", 2 },             /* unpadded is accepted */
    { "TWF", NULL, 0 },             /* non-canonical */
    { "TQ", "M", 1 },
    { "", NULL, 0 },
    { "====", NULL, 0 },
    { "T", NULL, 0 },
    { "TQ=", NULL, 0 },
    { "TQ===", NULL, 0 },
    { "TQ==TQ==", NULL, 0 },        /* data after padding */
    { "TR==", NULL, 0 },            /* non-canonical trailing bits */
    { "TW-u", NULL, 0 },            /* url alphabet is not base64 */
    { "TW\x80u", NULL, 0 },
    { "TWE==", NULL, 0 },
};


typedef struct {
    const char  *in;
    const char  *out;       /* NULL: invalid */
} serial_case_t;


static const serial_case_t  serial_cases[] = {
    { "01", "01" },
    { "1", "01" },
    { "0x1f", "1F" },
    { "000000ab", "AB" },
    { "7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
      "7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF" },
    { "00FF", "FF" },
    { "0102030405060708090a0b0c0d0e0f1011121314",
      "0102030405060708090A0B0C0D0E0F1011121314" },
    { "0102030405060708090a0b0c0d0e0f101112131415", NULL },  /* 21 octets */
    { "0", NULL },
    { "", NULL },
    { "-1", NULL },
    { "zz", NULL },
    { "12 34", NULL },
    { "0x", NULL },
};


typedef struct {
    const char  *in;
    size_t       len;       /* 0: strlen(in) */
    int          valid;
} name_case_t;


static const name_case_t  name_cases[] = {
    { "issuing", 0, 1 },
    { "Matter-PAI_2.v1", 0, 1 },
    { "a", 0, 1 },
    { "012345678901234567890123456789012345678901234567890123456789012",
      0, 1 },                                               /* 63 bytes */
    { "0123456789012345678901234567890123456789012345678901234567890123",
      0, 0 },                                               /* 64 bytes */
    { "", 0, 0 },
    { "a b", 0, 0 },
    { "{ca:x}", 0, 0 },             /* would break the keys' hash tag */
    { "a:b", 0, 0 },
    { "a/b", 0, 0 },
    { "caf\xc3\xa9", 0, 0 },
    { "ab\0cd", 5, 0 },             /* a NUL inside */
    { "ab\n", 0, 0 },
};


int
main(void)
{
    int             i, j, dup;
    char            hex[41], seen[64][41];
    size_t          n, len;
    char           *enc;
    pki_status_t    st;
    ASN1_INTEGER   *ai;
    pki_result_t    res;
    unsigned char  *dec, bin[300];

    ok(pki_init(), "pki_init");

    for (i = 0; i < (int) (sizeof(b64_cases) / sizeof(b64_cases[0])); i++) {
        const b64_case_t  *c = &b64_cases[i];

        pki_result_init(&res);
        st = pki_base64_decode((const unsigned char *) c->in, strlen(c->in),
                               &dec, &len, &res);
        if (c->out) {
            ok(st == PKI_OK && len == c->outlen
               && memcmp(dec, c->out, len) == 0, "base64 decode case %d", i);
        } else {
            ok(st == PKI_MALFORMED && dec == NULL
               && strstr(res.detail, "base64") != NULL,
               "base64 refuses case %d", i);
        }
        free(dec);
    }

    for (i = 0; i < (int) sizeof(bin); i++) {
        bin[i] = (unsigned char) (i * 7 + 3);
    }

    for (n = 1; n < sizeof(bin); n += 37) {
        enc = pki_base64_encode(bin, n, 64, &len);
        st = pki_base64_decode((unsigned char *) enc, len, &dec, &len, NULL);
        ok(st == PKI_OK && len == n && memcmp(dec, bin, n) == 0,
           "base64 round trip %zu bytes", n);
        free(enc);
        free(dec);
    }

    enc = pki_base64_encode(bin, 48, 64, &len);
    ok(len == 65 && enc[64] == '\n', "base64 wraps at 64 columns");
    free(enc);

    for (i = 0; i < (int) (sizeof(serial_cases) / sizeof(serial_cases[0]));
         i++)
    {
        const serial_case_t  *c = &serial_cases[i];

        if (c->out) {
            ok(pki_serial_normalize(c->in, hex) && strcmp(hex, c->out) == 0,
               "serial \"%s\" -> %s (got %s)", c->in, c->out, hex);
        } else {
            ok(!pki_serial_normalize(c->in, hex), "serial \"%s\" refused",
               c->in);
        }
    }

    dup = 0;
    for (i = 0; i < 64; i++) {
        if (!pki_serial_new(&ai) || !pki_serial_to_hex(ai, seen[i])) {
            dup = -1;
            break;
        }
        if (strlen(seen[i]) != 32 || seen[i][0] > '7') {
            dup = -2;
        }
        ASN1_INTEGER_free(ai);
        for (j = 0; j < i; j++) {
            if (strcmp(seen[i], seen[j]) == 0) {
                dup = 1;
            }
        }
    }
    ok(dup == 0, "64 new serials: 16 octets, positive, distinct (%d)", dup);

    dup = 0;
    for (i = 0; i < 64; i++) {
        if (!pki_serial_new_octets(&ai, 9) || !pki_serial_to_hex(ai, seen[i]))
        {
            dup = -1;
            break;
        }
        if (strlen(seen[i]) != 18 || seen[i][0] > '7') {
            dup = -2;
        }
        ASN1_INTEGER_free(ai);
        for (j = 0; j < i; j++) {
            if (strcmp(seen[i], seen[j]) == 0) {
                dup = 1;
            }
        }
    }
    ok(dup == 0, "64 new 9-octet serials: positive, distinct (%d)", dup);
    ai = NULL;
    ok(!pki_serial_new_octets(&ai, 8) && ai == NULL
       && !pki_serial_new_octets(&ai, 21) && ai == NULL,
       "serials of 8 octets (under 64 random bits) or 21 refused");

    for (i = 0; i < (int) (sizeof(name_cases) / sizeof(name_cases[0]));
         i++)
    {
        const name_case_t  *c = &name_cases[i];

        len = c->len ? c->len : strlen(c->in);
        ok(pki_name_valid(c->in, len) == c->valid, "name case %d %s", i,
           c->valid ? "valid" : "refused");
    }
    ok(!pki_name_valid(NULL, 3), "name NULL refused");

    pki_result_init(&res);
    ERR_put_error(ERR_LIB_X509, 0, ERR_R_MALLOC_FAILURE, __FILE__, __LINE__);
    st = pki_fail(&res, PKI_POLICY, "rule %s", "x");
    ok(st == PKI_POLICY && strcmp(res.detail, "rule x") == 0
       && res.log[0] != '\0' && ERR_peek_error() == 0,
       "pki_fail sets detail and drains the OpenSSL queue into the log");
    ok(strcmp(pki_status_name(PKI_UNAVAILABLE), "unavailable") == 0
       && strcmp(pki_status_name((pki_status_t) 99), "unknown") == 0,
       "status names");

    /* a media type, alone or with parameters; not a longer one */
    {
        static const struct {
            const char  *ct;
            int          is;
        } mt[] = {
            { "application/json", 1 },
            { "Application/JSON", 1 },
            { "application/json; charset=utf-8", 1 },
            { "application/json;charset=utf-8", 1 },
            { " application/json ", 1 },
            { "application/jsonx", 0 },
            { "application/json x", 0 },
            { "application/json-seq", 0 },
            { "application/jso", 0 },
            { "", 0 },
        };

        for (i = 0; i < (int) (sizeof(mt) / sizeof(mt[0])); i++) {
            ok(pki_media_type_is(mt[i].ct, "application/json") == mt[i].is,
               "media type \"%s\": %s", mt[i].ct,
               mt[i].is ? "application/json" : "another");
        }

        ok(!pki_media_type_is(NULL, "application/json"),
           "media type NULL: none");
    }

    return done_testing();
}
