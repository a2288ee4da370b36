/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests: pki_parse_rfc3339(), the one RFC 3339 date-time parser of
 * the ACME orders (notBefore, notAfter), the admin API (at,
 * invalidity_date, expires_before), the SCEP approvals ("created") and
 * the transaction log's verifier (each entry's "time").
 */

#include <string.h>

#include "pki.h"
#include "unit.h"


#define REFUSED  ((long long) -1)


typedef struct {
    const char  *in;
    unsigned     flags;
    long long    want;      /* seconds since the epoch, or REFUSED */
} time_case_t;


static const time_case_t  time_cases[] = {

    /* the forms taken */
    { "2026-01-01T00:00:00Z", 0, 1767225600LL },
    { "2026-01-01t00:00:00z", 0, 1767225600LL },   /* RFC 3339 5.6 NOTE */
    { "1970-01-01T00:00:00Z", 0, 0 },
    { "9999-12-31T23:59:59Z", 0, 253402300799LL },
    { "9999-12-31T23:59:59+05:00", 0, 253402300799LL - 5 * 3600 },
    /* past the last second X.509 can write (and the formatter shows) */
    { "9999-12-31T23:59:59-00:01", 0, REFUSED },
    { "9999-12-31T23:00:00-05:00", 0, REFUSED },
    { "2026-01-01T00:00:00.5Z", 0, 1767225600LL },
    { "2026-01-01T00:00:00.999999999Z", 0, 1767225600LL },
    { "2026-03-14T01:59:26+00:00", 0, 1773453566LL },
    { "2026-03-14T01:59:26-00:00", 0, 1773453566LL },
    { "2026-03-14T05:29:26+03:30", 0, 1773453566LL },
    { "2026-03-13T21:59:26-04:00", 0, 1773453566LL },
    { "2026-03-14T07:29:26.250+05:30", 0, 1773453566LL },
    { "2026-03-15T01:58:26+23:59", 0, 1773453566LL },
    { "1970-01-01T00:00:00-01:00", 0, 3600 },
    { "2024-02-29T12:00:00Z", 0, 1709208000LL },    /* leap day */
    { "2000-02-29T00:00:00Z", 0, 951782400LL },     /* 400-year rule */
    { "2016-12-31T23:59:60Z", 0, 1483228799LL },    /* leap second: :59 */

    /* what a flag widens or narrows */
    { "2026-01-01 00:00:00Z", PKI_RFC3339_SPACE, 1767225600LL },
    { "2026-01-01 00:00:00Z", 0, REFUSED },
    { "2026-01-01T00:00:00Z", PKI_RFC3339_SPACE, 1767225600LL },
    { "2026-01-01T00:00:00.123Z", PKI_RFC3339_UTC, 1767225600LL },
    { "2026-01-01T00:00:00+00:00", PKI_RFC3339_UTC, REFUSED },
    { "2026-01-01T01:00:00+01:00", PKI_RFC3339_UTC, REFUSED },

    /* incomplete */
    { "", 0, REFUSED },
    { "2026", 0, REFUSED },
    { "2026-01-01", 0, REFUSED },
    { "2026-01-01T", 0, REFUSED },
    { "2026-01-01T00:00", 0, REFUSED },
    { "2026-01-01T00:00Z", 0, REFUSED },
    { "2026-01-01T00:00:00", 0, REFUSED },          /* no zone */

    /* separators */
    { "2026/01/01T00:00:00Z", 0, REFUSED },
    { "2026-01-01X00:00:00Z", 0, REFUSED },
    { "2026-01-01_00:00:00Z", PKI_RFC3339_SPACE, REFUSED },
    { "2026-01-01T00.00.00Z", 0, REFUSED },
    { "20260101T000000Z", 0, REFUSED },             /* ISO 8601 basic */

    /* digits: exactly as many as the field has, no sign, no space */
    { "2026-1-01T00:00:00Z", 0, REFUSED },
    { "26-01-01T00:00:00Z", 0, REFUSED },
    { "12026-01-01T00:00:00Z", 0, REFUSED },
    { "2026-01-01T0:00:00Z", 0, REFUSED },
    { "2026-01-01T00:00:0Z", 0, REFUSED },
    { "+026-01-01T00:00:00Z", 0, REFUSED },
    { "2026-+1-01T00:00:00Z", 0, REFUSED },
    { " 2026-01-01T00:00:00Z", 0, REFUSED },
    { "2026-01-01T 0:00:00Z", 0, REFUSED },

    /* fields out of range */
    { "2026-00-01T00:00:00Z", 0, REFUSED },
    { "2026-13-01T00:00:00Z", 0, REFUSED },
    { "2026-01-00T00:00:00Z", 0, REFUSED },
    { "2026-01-32T00:00:00Z", 0, REFUSED },
    { "2026-04-31T00:00:00Z", 0, REFUSED },
    { "2026-02-30T00:00:00Z", 0, REFUSED },
    { "2023-02-29T00:00:00Z", 0, REFUSED },         /* not a leap year */
    { "2100-02-29T00:00:00Z", 0, REFUSED },         /* century */
    { "2026-01-01T24:00:00Z", 0, REFUSED },
    { "2026-01-01T00:60:00Z", 0, REFUSED },
    { "2026-01-01T00:00:61Z", 0, REFUSED },

    /* before the epoch */
    { "1969-12-31T23:59:59Z", 0, REFUSED },
    { "0000-01-01T00:00:00Z", 0, REFUSED },
    { "1970-01-01T00:00:00+01:00", 0, REFUSED },

    /* fractions */
    { "2026-01-01T00:00:00.Z", 0, REFUSED },
    { "2026-01-01T00:00:00.1234567890Z", 0, REFUSED },  /* 10 digits */
    { "2026-01-01T00:00:00,5Z", 0, REFUSED },
    { "2026-01-01T00:00:00.5.5Z", 0, REFUSED },
    { "2026-01-01T00:00:00.+01:00", 0, REFUSED },

    /* offsets */
    { "2026-01-01T00:00:00+24:00", 0, REFUSED },
    { "2026-01-01T00:00:00+00:60", 0, REFUSED },
    { "2026-01-01T00:00:00+0000", 0, REFUSED },
    { "2026-01-01T00:00:00+00", 0, REFUSED },
    { "2026-01-01T00:00:00+0:00", 0, REFUSED },
    { "2026-01-01T00:00:00+00:00:00", 0, REFUSED },
    { "2026-01-01T00:00:00Z+01:00", 0, REFUSED },
    { "2026-01-01T00:00:00 +01:00", 0, REFUSED },
    { "2026-01-01T00:00:00UTC", 0, REFUSED },

    /* anything after the zone */
    { "2026-01-01T00:00:00Zx", 0, REFUSED },
    { "2026-01-01T00:00:00Z ", 0, REFUSED },
    { "2026-01-01T00:00:00Z\n", 0, REFUSED },
    { "2026-01-01T00:00:00ZZ", 0, REFUSED },
    { "2026-01-01T00:00:00+01:00Z", 0, REFUSED },
};


/* the input as one TAP line: control characters become '?' */
static const char *
printable(const char *s, char *buf, size_t size)
{
    size_t  i;

    for (i = 0; s[i] != '\0' && i + 1 < size; i++) {
        buf[i] = ((unsigned char) s[i] < 0x20) ? '?' : s[i];
    }
    buf[i] = '\0';

    return buf;
}


int
main(void)
{
    int                 i, rc;
    char                buf[64], *big;
    size_t              n;
    time_t              t;
    const time_case_t  *c;

    for (i = 0; i < (int) (sizeof(time_cases) / sizeof(time_cases[0])); i++)
    {
        c = &time_cases[i];

        /* a refusal leaves *out as it was */
        t = (time_t) 12345;
        rc = pki_parse_rfc3339(c->in, c->flags, &t);

        if (c->want == REFUSED) {
            ok(rc == 0 && t == (time_t) 12345, "\"%s\" (flags %u) refused",
               printable(c->in, buf, sizeof(buf)), c->flags);
        } else {
            ok(rc == 1 && (long long) t == c->want,
               "\"%s\" (flags %u) -> %lld (got %d, %lld)",
               printable(c->in, buf, sizeof(buf)), c->flags, c->want, rc,
               (long long) t);
        }
    }

    ok(!pki_parse_rfc3339(NULL, 0, &t), "NULL refused");

    /* a fraction that runs on: refused, read no further than its end */
    n = 4096;
    big = malloc(n + 1);
    if (big == NULL) {
        ok(0, "malloc");
        return done_testing();
    }

    memcpy(big, "2026-01-01T00:00:00.", 20);
    memset(big + 20, '0', n - 21);
    big[n - 1] = 'Z';
    big[n] = '\0';
    ok(!pki_parse_rfc3339(big, 0, &t), "a fraction of %zu digits refused",
       n - 21);

    /* the same length of text after a valid time */
    memcpy(big, "2026-01-01T00:00:00Z", 20);
    memset(big + 20, ' ', n - 20);
    ok(!pki_parse_rfc3339(big, 0, &t), "%zu bytes after the zone refused",
       n - 20);

    free(big);

    /* the writer: whole seconds, UTC; every form it writes reads back */
    {
        static const struct {
            long long    t;
            int          rc;
            const char  *out;
        } w[] = {
            { 0, 1, "1970-01-01T00:00:00Z" },
            { 951782400LL, 1, "2000-02-29T00:00:00Z" },
            { 1796118239LL, 1, "2026-12-01T09:43:59Z" },
            { 253402300799LL, 1, "9999-12-31T23:59:59Z" },
            { 253402300800LL, 0, "1970-01-01T00:00:00Z" },
            { -1, 0, "1970-01-01T00:00:00Z" },
        };
        char  out[PKI_RFC3339_LEN];

        for (i = 0; i < (int) (sizeof(w) / sizeof(w[0])); i++) {
            memset(out, 'x', sizeof(out));
            rc = pki_format_rfc3339((time_t) w[i].t, out);
            t = 0;
            ok(rc == w[i].rc && strcmp(out, w[i].out) == 0
               && (rc == 0 || (pki_parse_rfc3339(out, PKI_RFC3339_UTC, &t)
                               && (long long) t == w[i].t)),
               "%lld written as %s (%d)", w[i].t, out, rc);
        }
    }

    return done_testing();
}
