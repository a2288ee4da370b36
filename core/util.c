/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Results, base64, serial numbers and RFC 3339 times: small pieces every
 * core part uses.
 */

#include <ctype.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include "pki.h"


#define PKI_SERIAL_BYTES  16
#define PKI_SERIAL_MIN    9         /* 71 random bits: 64 at least */
#define PKI_SERIAL_MAX    20        /* RFC 5280 4.1.2.2 */


static void pki_vappend(char *buf, size_t size, const char *fmt, va_list ap);
static void pki_drain_openssl(pki_result_t *res);


static const char *pki_status_names[] = {
    "ok", "malformed", "bad signature", "policy", "unauthorized",
    "forbidden", "not found", "conflict", "too large", "unsupported",
    "unavailable", "internal"
};


void
pki_result_init(pki_result_t *res)
{
    res->status = PKI_OK;
    res->detail[0] = '\0';
    res->log[0] = '\0';
}


const char *
pki_status_name(pki_status_t st)
{
    if ((size_t) st >= sizeof(pki_status_names) / sizeof(pki_status_names[0]))
    {
        return "unknown";
    }

    return pki_status_names[st];
}


pki_status_t
pki_fail(pki_result_t *res, pki_status_t st, const char *fmt, ...)
{
    va_list  ap;

    if (res == NULL) {
        ERR_clear_error();
        return st;
    }

    res->status = st;
    res->detail[0] = '\0';

    va_start(ap, fmt);
    pki_vappend(res->detail, sizeof(res->detail), fmt, ap);
    va_end(ap);

    pki_drain_openssl(res);

    return st;
}


void
pki_log(pki_result_t *res, const char *fmt, ...)
{
    va_list  ap;

    if (res == NULL) {
        return;
    }

    va_start(ap, fmt);
    pki_vappend(res->log, sizeof(res->log), fmt, ap);
    va_end(ap);
}


/* Replaces in place each byte of s that does not belong to a well-formed
 * UTF-8 sequence (RFC 3629) with '?': what an error echoes of a client's
 * value, cut to a length by "%.64s" and the like, may end inside a
 * character, or was never UTF-8, and JSON text must be (RFC 8259 8.1).
 * Declared in acme_int.h. */
void
pki_int_utf8_fix(char *s)
{
    size_t          i, n, k;
    unsigned char  *u, lo, hi;

    u = (unsigned char *) s;

    for (i = 0; u[i] != '\0'; i += n) {
        n = 1;
        lo = 0x80;
        hi = 0xbf;

        if (u[i] < 0x80) {
            continue;

        } else if (u[i] >= 0xc2 && u[i] <= 0xdf) {
            n = 2;

        } else if (u[i] >= 0xe0 && u[i] <= 0xef) {
            n = 3;
            lo = u[i] == 0xe0 ? 0xa0 : 0x80;
            hi = u[i] == 0xed ? 0x9f : 0xbf;

        } else if (u[i] >= 0xf0 && u[i] <= 0xf4) {
            n = 4;
            lo = u[i] == 0xf0 ? 0x90 : 0x80;
            hi = u[i] == 0xf4 ? 0x8f : 0xbf;
        }

        for (k = 1; k < n; k++) {
            if (u[i + k] < (k == 1 ? lo : 0x80)
                || u[i + k] > (k == 1 ? hi : 0xbf))
            {
                break;
            }
        }

        if (n == 1 || k < n) {
            u[i] = '?';
            n = 1;
        }
    }
}


/* Control characters (a client's "\n" in an identifier or a subject)
 * become '?': a detail or log text ends up in the error log as one line
 * that no client wrote itself.  Declared in acme_int.h. */
void
pki_int_tame(char *s)
{
    for ( ; *s != '\0'; s++) {
        if ((unsigned char) *s < 0x20 || *s == 0x7f) {
            *s = '?';
        }
    }
}


static void
pki_vappend(char *buf, size_t size, const char *fmt, va_list ap)
{
    size_t  len;

    len = strnlen(buf, size);
    if (len + 1 >= size) {
        return;
    }

    vsnprintf(buf + len, size - len, fmt, ap);
    pki_int_tame(buf + len);
}


static void
pki_drain_openssl(pki_result_t *res)
{
    char           text[256];
    unsigned long  e;

    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, text, sizeof(text));
        pki_log(res, "%s(%s)", res->log[0] ? "; " : "", text);
    }
}


static pthread_once_t  pki_once = PTHREAD_ONCE_INIT;
static int             pki_init_ok;


static void
pki_init_once(void)
{
    pki_init_ok = OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CRYPTO_STRINGS
                                      | OPENSSL_INIT_ADD_ALL_CIPHERS
                                      | OPENSSL_INIT_ADD_ALL_DIGESTS, NULL);
}


int
pki_init(void)
{
    pthread_once(&pki_once, pki_init_once);
    return pki_init_ok;
}


/* ---- the process's user ------------------------------------------------ */

static const char  *pki_process_role = "the process";


void
pki_set_process_role(const char *role)
{
    pki_process_role = role != NULL ? role : "the process";
}


const char *
pki_process_user(char *buf, size_t size)
{
    char            ubuf[1024], gbuf[1024], un[32], gn[32];
    uid_t           uid;
    gid_t           gid;
    struct group    gr, *grp;
    struct passwd   pw, *pwp;

    uid = geteuid();
    gid = getegid();

    pwp = NULL;
    if (getpwuid_r(uid, &pw, ubuf, sizeof(ubuf), &pwp) == 0
        && pwp != NULL)
    {
        snprintf(un, sizeof(un), "%s", pwp->pw_name);

    } else {
        snprintf(un, sizeof(un), "%lu", (unsigned long) uid);
    }

    grp = NULL;
    if (getgrgid_r(gid, &gr, gbuf, sizeof(gbuf), &grp) == 0
        && grp != NULL)
    {
        snprintf(gn, sizeof(gn), "%s", grp->gr_name);

    } else {
        snprintf(gn, sizeof(gn), "%lu", (unsigned long) gid);
    }

    snprintf(buf, size, "%s runs as %s:%s (uid %lu, gid %lu)",
             pki_process_role, un, gn, (unsigned long) uid,
             (unsigned long) gid);

    return buf;
}


/* ---- base64 ----------------------------------------------------------- */

static const char  pki_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


static int
pki_b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return -1;
}


pki_status_t
pki_base64_decode(const unsigned char *in, size_t len, unsigned char **out,
    size_t *outlen, pki_result_t *res)
{
    int             v;
    size_t          i, n, pad;
    uint32_t        acc;
    unsigned char  *buf, c;

    *out = NULL;
    *outlen = 0;

    buf = malloc(len / 4 * 3 + 3);
    if (buf == NULL) {
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    acc = 0;
    n = 0;      /* significant characters seen */
    pad = 0;

    for (i = 0; i < len; i++) {
        c = in[i];

        if (c == '\r' || c == '\n' || c == ' ' || c == '\t') {
            continue;
        }

        if (c == '=') {
            pad++;
            if (pad > 2) {
                goto bad;
            }
            continue;
        }

        if (pad) {
            goto bad;               /* data after padding */
        }

        v = pki_b64_value(c);
        if (v < 0) {
            goto bad;
        }

        acc = (acc << 6) | (uint32_t) v;
        n++;

        if (n % 4 == 0) {
            buf[(*outlen)++] = (unsigned char) (acc >> 16);
            buf[(*outlen)++] = (unsigned char) (acc >> 8);
            buf[(*outlen)++] = (unsigned char) acc;
            acc = 0;
        }
    }

    switch (n % 4) {
    case 0:
        if (pad != 0) {
            goto bad;
        }
        break;
    case 1:
        goto bad;
    case 2:
        if (pad != 0 && pad != 2) {
            goto bad;
        }
        if (acc & 0xf) {
            goto bad;               /* non-canonical trailing bits */
        }
        buf[(*outlen)++] = (unsigned char) (acc >> 4);
        break;
    case 3:
        if (pad != 0 && pad != 1) {
            goto bad;
        }
        if (acc & 0x3) {
            goto bad;
        }
        buf[(*outlen)++] = (unsigned char) (acc >> 10);
        buf[(*outlen)++] = (unsigned char) (acc >> 2);
        break;
    }

    if (*outlen == 0) {
        goto bad;
    }

    *out = buf;
    return PKI_OK;

bad:

    free(buf);
    *outlen = 0;
    return pki_fail(res, PKI_MALFORMED, "body is not valid base64");
}


char *
pki_base64_encode(const unsigned char *in, size_t len, size_t wrap,
    size_t *outlen)
{
    char      *out, *p;
    size_t     i, groups, size, col;
    uint32_t   acc;

    groups = (len + 2) / 3;
    size = groups * 4;
    if (wrap) {
        size += size / wrap + 1;        /* CRLF-free: "\n" per line */
    }

    out = malloc(size + 1);
    if (out == NULL) {
        return NULL;
    }

    p = out;
    col = 0;

    for (i = 0; i < len; i += 3) {
        acc = (uint32_t) in[i] << 16;
        if (i + 1 < len) {
            acc |= (uint32_t) in[i + 1] << 8;
        }
        if (i + 2 < len) {
            acc |= in[i + 2];
        }

        *p++ = pki_b64[(acc >> 18) & 0x3f];
        *p++ = pki_b64[(acc >> 12) & 0x3f];
        *p++ = (i + 1 < len) ? pki_b64[(acc >> 6) & 0x3f] : '=';
        *p++ = (i + 2 < len) ? pki_b64[acc & 0x3f] : '=';

        col += 4;
        if (wrap && col >= wrap) {
            *p++ = '\n';
            col = 0;
        }
    }

    if (wrap && col) {
        *p++ = '\n';
    }

    *p = '\0';

    if (outlen) {
        *outlen = (size_t) (p - out);
    }

    return out;
}


/* ---- serial numbers ----------------------------------------------------- */

int
pki_serial_new(ASN1_INTEGER **out)
{
    return pki_serial_new_octets(out, PKI_SERIAL_BYTES);
}


int
pki_serial_new_octets(ASN1_INTEGER **out, size_t octets)
{
    BIGNUM         *bn;
    ASN1_INTEGER   *ai;
    unsigned char   buf[PKI_SERIAL_MAX];

    *out = NULL;

    if (octets < PKI_SERIAL_MIN || octets > PKI_SERIAL_MAX) {
        return 0;
    }

    do {
        if (RAND_priv_bytes(buf, octets) != 1) {
            return 0;
        }
        buf[0] &= 0x7f;             /* positive in two's complement */
    } while (buf[0] == 0);          /* keep the full width */

    bn = BN_bin2bn(buf, (int) octets, NULL);
    OPENSSL_cleanse(buf, sizeof(buf));
    if (bn == NULL) {
        return 0;
    }

    ai = BN_to_ASN1_INTEGER(bn, NULL);
    BN_free(bn);
    if (ai == NULL) {
        return 0;
    }

    *out = ai;
    return 1;
}


static int
pki_bn_to_hex(const BIGNUM *bn, char out[41])
{
    int            len, i;
    unsigned char  buf[20];
    static const char  hex[] = "0123456789ABCDEF";

    if (BN_is_negative(bn) || BN_is_zero(bn) || BN_num_bytes(bn) > 20) {
        return 0;
    }

    len = BN_bn2bin(bn, buf);

    for (i = 0; i < len; i++) {
        out[2 * i] = hex[buf[i] >> 4];
        out[2 * i + 1] = hex[buf[i] & 0xf];
    }

    out[2 * len] = '\0';
    return 1;
}


int
pki_serial_to_hex(const ASN1_INTEGER *serial, char out[41])
{
    int      rc;
    BIGNUM  *bn;

    out[0] = '\0';

    bn = ASN1_INTEGER_to_BN(serial, NULL);
    if (bn == NULL) {
        return 0;
    }

    rc = pki_bn_to_hex(bn, out);
    BN_free(bn);

    return rc;
}


int
pki_serial_normalize(const char *in, char out[41])
{
    int      rc;
    size_t   i, len;
    BIGNUM  *bn;

    out[0] = '\0';

    if (in == NULL) {
        return 0;
    }

    if (in[0] == '0' && (in[1] == 'x' || in[1] == 'X')) {
        in += 2;
    }

    len = strlen(in);
    if (len == 0 || len > 128) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!isxdigit((unsigned char) in[i])) {
            return 0;
        }
    }

    bn = NULL;
    if (BN_hex2bn(&bn, in) != (int) len) {
        BN_free(bn);
        return 0;
    }

    rc = pki_bn_to_hex(bn, out);
    BN_free(bn);

    return rc;
}


/* ---- RFC 3339 times ----------------------------------------------------- */

/* n decimal digits at *p into *out, *p moved past them; 0 at anything
 * else (isdigit() alone: no sign and no space, which sscanf() and
 * strtol() would let through). */
static int
pki_time_digits(const char **p, int n, int *out)
{
    int  v;

    for (v = 0; n > 0; n--, (*p)++) {
        if (!isdigit((unsigned char) **p)) {
            return 0;
        }
        v = v * 10 + (**p - '0');
    }

    *out = v;
    return 1;
}


int
pki_format_rfc3339(time_t t, char buf[PKI_RFC3339_LEN])
{
    struct tm  tm;

    if (t < 0 || (long long) t > 253402300799LL || gmtime_r(&t, &tm) == NULL
        || strftime(buf, PKI_RFC3339_LEN, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    {
        snprintf(buf, PKI_RFC3339_LEN, "1970-01-01T00:00:00Z");
        return 0;
    }

    return 1;
}


int
pki_media_type_is(const char *ct, const char *type)
{
    size_t  n;

    if (ct == NULL) {
        return 0;
    }

    ct += strspn(ct, " \t");
    n = strlen(type);

    if (strncasecmp(ct, type, n) != 0) {
        return 0;
    }

    ct += n;
    ct += strspn(ct, " \t");

    return *ct == '\0' || *ct == ';';
}


int
pki_parse_rfc3339(const char *s, unsigned flags, time_t *out)
{
    int          y, mo, d, h, mi, sec, oh, om, sign, nfrac;
    time_t       t;
    struct tm    tm;
    const char  *p;

    static const int  mdays[12] = {
        31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    if (s == NULL) {
        return 0;
    }

    p = s;

    /* each separator is tested before p moves past it: p never passes
     * the string's end */

    if (!pki_time_digits(&p, 4, &y) || *p != '-') {
        return 0;
    }
    p++;

    if (!pki_time_digits(&p, 2, &mo) || *p != '-') {
        return 0;
    }
    p++;

    if (!pki_time_digits(&p, 2, &d)) {
        return 0;
    }

    if (*p != 'T' && *p != 't'
        && !(*p == ' ' && (flags & PKI_RFC3339_SPACE)))
    {
        return 0;
    }
    p++;

    if (!pki_time_digits(&p, 2, &h) || *p != ':') {
        return 0;
    }
    p++;

    if (!pki_time_digits(&p, 2, &mi) || *p != ':') {
        return 0;
    }
    p++;

    if (!pki_time_digits(&p, 2, &sec)) {
        return 0;
    }

    if (*p == '.') {
        p++;
        for (nfrac = 0; isdigit((unsigned char) *p); nfrac++) {
            p++;
        }

        /* nanoseconds are the finest any client sends (Go's
         * RFC3339Nano); a longer run of digits is no clock's */
        if (nfrac == 0 || nfrac > PKI_RFC3339_FRAC_MAX) {
            return 0;
        }
    }

    oh = 0;
    om = 0;
    sign = 0;

    if (*p == 'Z' || *p == 'z') {
        p++;

    } else if ((*p == '+' || *p == '-') && !(flags & PKI_RFC3339_UTC)) {
        sign = (*p == '+') ? 1 : -1;
        p++;

        if (!pki_time_digits(&p, 2, &oh) || *p != ':') {
            return 0;
        }
        p++;

        if (!pki_time_digits(&p, 2, &om)) {
            return 0;
        }

    } else {
        return 0;
    }

    if (*p != '\0') {
        return 0;
    }

    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1]
        || h > 23 || mi > 59 || sec > 60 || oh > 23 || om > 59)
    {
        return 0;
    }

    if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
    {
        return 0;
    }

    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;

    /* a leap second (hh:mm:60) has no time_t of its own: it counts as
     * the minute's last second that has one, so it never lands in the
     * next minute, hour or day */
    tm.tm_sec = (sec == 60) ? 59 : sec;

    t = timegm(&tm);
    if (t == (time_t) -1) {
        return 0;
    }

    /* the local time at offset +hh:mm is that much ahead of UTC */
    t -= (time_t) sign * (oh * 3600 + om * 60);

    /* 9999-12-31T23:59:59Z is the last second a GeneralizedTime holds
     * (and pki_format_rfc3339 shows): a later one is no date to a CA */
    if (t < 0 || t > (time_t) 253402300799LL) {
        return 0;
    }

    *out = t;
    return 1;
}
