/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Matter operational certificates: X.509 DER <-> Matter TLV ("CHIP
 * certificate"), Matter Core spec 6.5 (see vectors/matter/PROFILES.md 5).
 *
 * Both directions are strict.  DER -> TLV parses with a bounds-checked DER
 * cursor, writes TLV with a fixed-size sticky-error builder and then
 * rebuilds the DER from that TLV: the result must equal the input byte for
 * byte, so anything TLV cannot represent exactly (non-canonical DER, a
 * GeneralizedTime before 2050, ...) is refused.  TLV -> DER reads with a
 * cursor that never reads past the end, accepts only anonymous and
 * context tags, the fields in their order, and no trailing bytes.
 */

#include <stdlib.h>
#include <string.h>

#include "matter_int.h"


#define PKI_TLV_BUF        2048
#define PKI_TLV_EPOCH      946684800LL      /* 2000-01-01T00:00:00Z */

/* TLV element types */
#define TLV_UINT8          0x04
#define TLV_UINT16         0x05
#define TLV_UINT32         0x06
#define TLV_UINT64         0x07
#define TLV_FALSE          0x08
#define TLV_TRUE           0x09
#define TLV_UTF8_1         0x0c
#define TLV_BYTES_1        0x10
#define TLV_STRUCT         0x15
#define TLV_ARRAY          0x16
#define TLV_LIST           0x17
#define TLV_END            0x18
#define TLV_CTX            0x20

/* certificate fields */
#define TAG_SERIAL         1
#define TAG_SIG_ALGO       2
#define TAG_ISSUER         3
#define TAG_NOT_BEFORE     4
#define TAG_NOT_AFTER      5
#define TAG_SUBJECT        6
#define TAG_PK_ALGO        7
#define TAG_CURVE          8
#define TAG_PUBKEY         9
#define TAG_EXTENSIONS     10
#define TAG_SIGNATURE      11

#define TAG_EXT_BC         1
#define TAG_EXT_KU         2
#define TAG_EXT_EKU        3
#define TAG_EXT_SKID       4
#define TAG_EXT_AKID       5
#define TAG_EXT_FUTURE     6


typedef struct {
    const unsigned char  *p;
    size_t                n;
} pki_cur_t;

typedef struct {
    unsigned char  b[PKI_TLV_BUF];
    size_t         len;
    int            err;
} pki_bld_t;

typedef struct {
    int                   type;    /* element type, 0x00..0x18 */
    int                   tag;     /* -1: anonymous */
    uint64_t              u;       /* unsigned ints and booleans */
    const unsigned char  *data;    /* strings */
    size_t                len;
} pki_tlv_el_t;


static const unsigned char  oid_ecdsa_sha256[] = {
    0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02
};
static const unsigned char  oid_ec_pubkey[] = {
    0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01
};
static const unsigned char  oid_prime256v1[] = {
    0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07
};
static const unsigned char  oid_dc[] = {
    0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19
};
static const unsigned char  oid_kp[] = {
    0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03
};

/* X.520 attribute (2.5.4.n) of DN tags 1..15 */
static const unsigned char  dn_x520[16] = {
    0, 3, 4, 5, 6, 7, 8, 10, 11, 12, 41, 42, 43, 44, 46, 65
};

/* id-kp-* arc number of TLV EKU values 1..6 */
static const unsigned char  eku_kp[7] = { 0, 1, 2, 3, 4, 8, 9 };


/* ---- DER cursor ------------------------------------------------------------ */

/* Reads one element with a one-byte tag and a minimal DER length. */
static int
der_get(pki_cur_t *c, int *tag, pki_cur_t *out)
{
    size_t  len, hl;

    if (c->n < 2 || (c->p[0] & 0x1f) == 0x1f) {
        return 0;
    }

    if (c->p[1] < 0x80) {
        len = c->p[1];
        hl = 2;

    } else if (c->p[1] == 0x81) {
        if (c->n < 3 || c->p[2] < 0x80) {
            return 0;
        }
        len = c->p[2];
        hl = 3;

    } else if (c->p[1] == 0x82) {
        if (c->n < 4) {
            return 0;
        }
        len = (size_t) c->p[2] << 8 | c->p[3];
        if (len < 0x100) {
            return 0;
        }
        hl = 4;

    } else {
        return 0;
    }

    if (len > c->n - hl) {
        return 0;
    }

    *tag = c->p[0];
    out->p = c->p + hl;
    out->n = len;
    c->p += hl + len;
    c->n -= hl + len;

    return 1;
}


static int
der_expect(pki_cur_t *c, int want, pki_cur_t *out)
{
    int        tag;
    pki_cur_t  save;

    save = *c;
    if (!der_get(c, &tag, out) || tag != want) {
        *c = save;
        return 0;
    }

    return 1;
}


static int
der_peek(const pki_cur_t *c, int tag)
{
    return c->n > 0 && c->p[0] == tag;
}


static int
cur_eq(const pki_cur_t *c, const unsigned char *d, size_t n)
{
    return c->n == n && memcmp(c->p, d, n) == 0;
}


/* ---- builder --------------------------------------------------------------- */

static void
bld_put(pki_bld_t *b, const void *d, size_t n)
{
    if (b->err || n > sizeof(b->b) - b->len) {
        b->err = 1;
        return;
    }

    memcpy(b->b + b->len, d, n);
    b->len += n;
}


static void
bld_u8(pki_bld_t *b, unsigned v)
{
    unsigned char  c = (unsigned char) v;

    bld_put(b, &c, 1);
}


/* Wraps everything written since start into a DER element (moves the
 * content up to make room for the header). */
static void
der_wrap(pki_bld_t *b, size_t start, int tag)
{
    size_t         len, hl;
    unsigned char  h[4];

    if (b->err) {
        return;
    }

    len = b->len - start;
    h[0] = (unsigned char) tag;

    if (len < 0x80) {
        h[1] = (unsigned char) len;
        hl = 2;
    } else if (len < 0x100) {
        h[1] = 0x81;
        h[2] = (unsigned char) len;
        hl = 3;
    } else if (len < 0x10000) {
        h[1] = 0x82;
        h[2] = (unsigned char) (len >> 8);
        h[3] = (unsigned char) len;
        hl = 4;
    } else {
        b->err = 1;
        return;
    }

    if (hl > sizeof(b->b) - b->len) {
        b->err = 1;
        return;
    }

    memmove(b->b + start + hl, b->b + start, len);
    memcpy(b->b + start, h, hl);
    b->len += hl;
}


static void
der_put(pki_bld_t *b, int tag, const unsigned char *d, size_t n)
{
    size_t  start = b->len;

    bld_put(b, d, n);
    der_wrap(b, start, tag);
}


static void
tlv_ctl(pki_bld_t *b, int type, int tag)
{
    if (tag < 0) {
        bld_u8(b, (unsigned) type);
    } else {
        bld_u8(b, (unsigned) (TLV_CTX | type));
        bld_u8(b, (unsigned) tag);
    }
}


static void
tlv_uint(pki_bld_t *b, int tag, uint64_t v)
{
    int            i, n, type;
    unsigned char  le[8];

    if (v <= 0xff) {
        type = TLV_UINT8;
        n = 1;
    } else if (v <= 0xffff) {
        type = TLV_UINT16;
        n = 2;
    } else if (v <= 0xffffffffULL) {
        type = TLV_UINT32;
        n = 4;
    } else {
        type = TLV_UINT64;
        n = 8;
    }

    for (i = 0; i < n; i++) {
        le[i] = (unsigned char) (v >> (8 * i));
    }

    tlv_ctl(b, type, tag);
    bld_put(b, le, (size_t) n);
}


/* base: TLV_UTF8_1 or TLV_BYTES_1 */
static void
tlv_str(pki_bld_t *b, int base, int tag, const unsigned char *d, size_t n)
{
    if (n <= 0xff) {
        tlv_ctl(b, base, tag);
        bld_u8(b, (unsigned) n);
    } else if (n <= 0xffff) {
        tlv_ctl(b, base + 1, tag);
        bld_u8(b, (unsigned) (n & 0xff));
        bld_u8(b, (unsigned) (n >> 8));
    } else {
        b->err = 1;
        return;
    }

    bld_put(b, d, n);
}


/* ---- time ------------------------------------------------------------------ */

static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t   era;
    unsigned  yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned) (y - era * 400);
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + (int64_t) doe - 719468;
}


static void
civil_from_days(int64_t z, int *yy, unsigned *mm, unsigned *dd)
{
    int64_t   era, y;
    unsigned  doe, yoe, doy, mp, d, m;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned) (z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    y = (int64_t) yoe + era * 400;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;

    *yy = (int) (y + (m <= 2));
    *mm = m;
    *dd = d;
}


static int
digits(const unsigned char *s, int n, int *out)
{
    int  i, v;

    v = 0;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
        v = v * 10 + (s[i] - '0');
    }

    *out = v;

    return 1;
}


/*
 * DER UTCTime / GeneralizedTime -> TLV time, seconds since 2000-01-01.
 * 0 is that instant as a notBefore, and as a notAfter "no well-defined
 * expiration", which is 99991231235959Z (RFC 5280 4.1.2.5); a notAfter of
 * 2000-01-01 has no form.
 */
static int
der_time_to_tlv(int tag, const pki_cur_t *c, uint32_t *out, int not_after)
{
    int                   y, mo, d, h, mi, s;
    int64_t               t;
    const unsigned char  *p;

    p = c->p;

    if (not_after && tag == 0x18
        && cur_eq(c, (const unsigned char *) "99991231235959Z", 15))
    {
        *out = 0;
        return 1;
    }

    if (tag == 0x17 && c->n == 13 && p[12] == 'Z') {
        if (!digits(p, 2, &y)) {
            return 0;
        }
        y += y < 50 ? 2000 : 1900;
        p += 2;

    } else if (tag == 0x18 && c->n == 15 && p[14] == 'Z') {
        if (!digits(p, 4, &y)) {
            return 0;
        }
        p += 4;

    } else {
        return 0;
    }

    if (!digits(p, 2, &mo) || !digits(p + 2, 2, &d) || !digits(p + 4, 2, &h)
        || !digits(p + 6, 2, &mi) || !digits(p + 8, 2, &s)
        || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59
        || s > 59)
    {
        return 0;
    }

    t = days_from_civil(y, (unsigned) mo, (unsigned) d) * 86400
        + h * 3600 + mi * 60 + s - PKI_TLV_EPOCH;

    if (t < 0 || (t == 0 && not_after) || t > 0xffffffffLL) {
        return 0;
    }

    *out = (uint32_t) t;

    return 1;
}


/* TLV time -> DER (see der_time_to_tlv()) */
static void
tlv_time_to_der(pki_bld_t *b, uint64_t v, int not_after)
{
    int       y;
    char      buf[32];
    int64_t   t, days, sec;
    unsigned  m, d;

    if (v == 0 && not_after) {
        der_put(b, 0x18, (const unsigned char *) "99991231235959Z", 15);
        return;
    }

    t = (int64_t) v + PKI_TLV_EPOCH;
    days = t / 86400;
    sec = t % 86400;
    civil_from_days(days, &y, &m, &d);

    if (y < 2050) {
        snprintf(buf, sizeof(buf), "%02d%02u%02u%02d%02d%02dZ", y % 100, m, d,
                 (int) (sec / 3600), (int) (sec / 60 % 60), (int) (sec % 60));
        der_put(b, 0x17, (const unsigned char *) buf, 13);

    } else {
        snprintf(buf, sizeof(buf), "%04d%02u%02u%02d%02d%02dZ", y, m, d,
                 (int) (sec / 3600), (int) (sec / 60 % 60), (int) (sec % 60));
        der_put(b, 0x18, (const unsigned char *) buf, 15);
    }
}


/* ---- DN -------------------------------------------------------------------- */

static int
hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;   /* lowercase is not allowed */
}


/* The TLV tag of a DN attribute OID: 1..23, 0 if unknown, -1 for VID/PID. */
static int
dn_tag(const pki_cur_t *oid)
{
    int  i;

    if (oid->n == 3 && oid->p[0] == 0x55 && oid->p[1] == 0x04) {
        for (i = 1; i < 16; i++) {
            if (dn_x520[i] == oid->p[2]) {
                return i;
            }
        }
        return 0;
    }

    if (cur_eq(oid, oid_dc, sizeof(oid_dc))) {
        return 16;
    }

    if (oid->n == PKI_MATTER_ARC_LEN + 2
        && memcmp(oid->p, PKI_MATTER_ARC, PKI_MATTER_ARC_LEN) == 0)
    {
        if (oid->p[8] == 1 && oid->p[9] >= 1 && oid->p[9] <= 7) {
            return 16 + oid->p[9];
        }
        if (oid->p[8] == 2 && (oid->p[9] == 1 || oid->p[9] == 2)) {
            return -1;
        }
    }

    return 0;
}


static const char *
dn_to_tlv(pki_cur_t *name, pki_bld_t *b, int tag)
{
    int        t, st, i, n, v;
    uint64_t   u;
    pki_cur_t  set, atv, oid, val;

    tlv_ctl(b, TLV_LIST, tag);

    n = 0;
    while (name->n) {
        if (!der_expect(name, 0x31, &set) || !der_expect(&set, 0x30, &atv)) {
            return "malformed name";
        }
        if (set.n) {
            return "multi-valued RDNs cannot be represented";
        }
        if (!der_expect(&atv, 0x06, &oid) || !der_get(&atv, &st, &val)
            || atv.n)
        {
            return "malformed name attribute";
        }

        if (++n > 10) {
            return "too many RDNs";
        }

        t = dn_tag(&oid);
        if (t < 0) {
            return "VID/PID attributes cannot be in an operational "
                   "certificate";
        }
        if (t == 0) {
            return "a name attribute cannot be represented";
        }

        if (t > 16) {
            if (st != 0x0c) {
                return "Matter attributes must be UTF8String";
            }
            if (val.n != (t == PKI_MATTER_TAG_CAT ? 8u : 16u)) {
                return "Matter attribute of wrong length";
            }
            u = 0;
            for (i = 0; i < (int) val.n; i++) {
                v = hexval(val.p[i]);
                if (v < 0) {
                    return "Matter attribute is not uppercase hex";
                }
                u = u << 4 | (uint64_t) v;
            }
            tlv_uint(b, t, u);
            continue;
        }

        if (st == 0x0c) {
            /* UTF8String */
        } else if (st == 0x13 && t != 16) {
            t |= 0x80;
        } else if (st == 0x16 && t == 16) {
            /* domainComponent is IA5String */
        } else {
            return "name string type cannot be represented";
        }

        tlv_str(b, TLV_UTF8_1, t, val.p, val.n);
    }

    bld_u8(b, TLV_END);

    return NULL;
}


/* ---- extensions -------------------------------------------------------------- */

static int
ext_is(const pki_cur_t *oid, int last)
{
    return oid->n == 3 && oid->p[0] == 0x55 && oid->p[1] == 0x1d
           && oid->p[2] == last;
}


static const char *
ext_to_tlv(const pki_cur_t *whole, pki_bld_t *b, unsigned *seen)
{
    int        crit, i, tag;
    unsigned   ku;
    uint64_t   kp;
    pki_cur_t  e, oid, cr, val, in, x, y;

    e = *whole;
    if (!der_expect(&e, 0x30, &in)) {
        return "malformed extension";
    }
    e = in;

    if (!der_expect(&e, 0x06, &oid)) {
        return "malformed extension";
    }

    crit = 0;
    if (der_expect(&e, 0x01, &cr)) {
        if (cr.n != 1 || cr.p[0] != 0xff) {
            return "explicit critical FALSE (not DER)";
        }
        crit = 1;
    }

    if (!der_expect(&e, 0x04, &val) || e.n) {
        return "malformed extension";
    }

#define ONCE(bit)                                                            \
    if (*seen & (1u << (bit))) {                                             \
        return "duplicate extension";                                        \
    }                                                                        \
    *seen |= 1u << (bit)

    if (ext_is(&oid, 0x13)) {                 /* basicConstraints */
        ONCE(TAG_EXT_BC);
        if (!crit) {
            return "basicConstraints is not critical";
        }
        if (!der_expect(&val, 0x30, &in) || val.n) {
            return "malformed basicConstraints";
        }
        tlv_ctl(b, TLV_STRUCT, TAG_EXT_BC);
        if (der_expect(&in, 0x01, &x)) {
            if (x.n != 1 || x.p[0] != 0xff) {
                return "explicit cA FALSE (not DER)";
            }
            tlv_ctl(b, TLV_TRUE, 1);
            if (der_expect(&in, 0x02, &y)) {
                if (y.n < 1 || y.n > 1 || (y.p[0] & 0x80)) {
                    return "bad pathLenConstraint";
                }
                tlv_uint(b, 2, y.p[0]);
            }
        } else {
            if (in.n) {
                return "pathLenConstraint without cA";
            }
            tlv_ctl(b, TLV_FALSE, 1);
        }
        if (in.n) {
            return "malformed basicConstraints";
        }
        bld_u8(b, TLV_END);
        return NULL;
    }

    if (ext_is(&oid, 0x0f)) {                 /* keyUsage */
        ONCE(TAG_EXT_KU);
        if (!crit) {
            return "keyUsage is not critical";
        }
        if (!der_expect(&val, 0x03, &x) || val.n || x.n < 2 || x.n > 3
            || x.p[0] > 7)
        {
            return "malformed keyUsage";
        }
        ku = 0;
        for (i = 0; i < 9 && (size_t) (1 + i / 8) < x.n; i++) {
            if (x.p[1 + i / 8] & (0x80 >> (i % 8))) {
                ku |= 1u << i;
            }
        }
        tlv_uint(b, TAG_EXT_KU, ku);
        return NULL;
    }

    if (ext_is(&oid, 0x25)) {                 /* extendedKeyUsage */
        ONCE(TAG_EXT_EKU);
        if (!crit) {
            return "extendedKeyUsage is not critical";
        }
        if (!der_expect(&val, 0x30, &in) || val.n || in.n == 0) {
            return "malformed extendedKeyUsage";
        }
        tlv_ctl(b, TLV_ARRAY, TAG_EXT_EKU);
        while (in.n) {
            if (!der_expect(&in, 0x06, &x) || x.n != sizeof(oid_kp) + 1
                || memcmp(x.p, oid_kp, sizeof(oid_kp)) != 0)
            {
                return "unknown extendedKeyUsage purpose";
            }
            kp = 0;
            for (i = 1; i < 7; i++) {
                if (eku_kp[i] == x.p[sizeof(oid_kp)]) {
                    kp = (uint64_t) i;
                }
            }
            if (kp == 0) {
                return "unknown extendedKeyUsage purpose";
            }
            tlv_uint(b, -1, kp);
        }
        bld_u8(b, TLV_END);
        return NULL;
    }

    if (ext_is(&oid, 0x0e)) {                 /* subjectKeyIdentifier */
        ONCE(TAG_EXT_SKID);
        if (crit) {
            return "subjectKeyIdentifier is critical";
        }
        if (!der_expect(&val, 0x04, &x) || val.n || x.n != 20) {
            return "subjectKeyIdentifier is not 20 bytes";
        }
        tlv_str(b, TLV_BYTES_1, TAG_EXT_SKID, x.p, x.n);
        return NULL;
    }

    if (ext_is(&oid, 0x23)) {                 /* authorityKeyIdentifier */
        ONCE(TAG_EXT_AKID);
        if (crit) {
            return "authorityKeyIdentifier is critical";
        }
        if (!der_expect(&val, 0x30, &in) || val.n) {
            return "malformed authorityKeyIdentifier";
        }
        if (!der_expect(&in, 0x80, &x) || in.n) {
            return "authorityKeyIdentifier must hold keyIdentifier only";
        }
        if (x.n != 20) {
            return "authorityKeyIdentifier is not 20 bytes";
        }
        tlv_str(b, TLV_BYTES_1, TAG_EXT_AKID, x.p, x.n);
        return NULL;
    }

#undef ONCE

    /* anything else: a "future extension", the whole Extension verbatim */
    (void) tag;
    tlv_str(b, TLV_BYTES_1, TAG_EXT_FUTURE, whole->p, whole->n);

    return NULL;
}


/* ---- DER -> TLV ---------------------------------------------------------------- */

static const char *
cert_to_tlv(const unsigned char *der, size_t len, pki_bld_t *b)
{
    int          tag, i;
    uint32_t     nb, na;
    unsigned     seen;
    size_t       n;
    const char  *err;
    pki_cur_t    c, cert, tbs, v, serial, alg, x, issuer, validity, t1, t2,
                 subject, spki, pk, exts, ext, sig, r, s;
    unsigned char  rs[64];

    c.p = der;
    c.n = len;

    if (!der_expect(&c, 0x30, &cert) || c.n) {
        return "not a DER certificate (or trailing data)";
    }

    if (!der_expect(&cert, 0x30, &tbs)) {
        return "malformed certificate";
    }

    if (!der_expect(&tbs, 0xa0, &v) || !der_expect(&v, 0x02, &x) || v.n
        || x.n != 1 || x.p[0] != 2)
    {
        return "not an X.509 v3 certificate";
    }

    if (!der_expect(&tbs, 0x02, &serial) || serial.n < 1 || serial.n > 20) {
        return "serial number missing or longer than 20 octets";
    }
    if (serial.p[0] & 0x80) {
        return "negative serial number";
    }

    if (!der_expect(&tbs, 0x30, &alg) || !der_expect(&alg, 0x06, &x)
        || alg.n || !cur_eq(&x, oid_ecdsa_sha256, sizeof(oid_ecdsa_sha256)))
    {
        return "signature algorithm is not ecdsa-with-SHA256";
    }

    tlv_ctl(b, TLV_STRUCT, -1);
    tlv_str(b, TLV_BYTES_1, TAG_SERIAL, serial.p, serial.n);
    tlv_uint(b, TAG_SIG_ALGO, 1);

    if (!der_expect(&tbs, 0x30, &issuer)) {
        return "malformed issuer";
    }
    err = dn_to_tlv(&issuer, b, TAG_ISSUER);
    if (err) {
        return err;
    }

    if (!der_expect(&tbs, 0x30, &validity)) {
        return "malformed validity";
    }
    if (!der_get(&validity, &tag, &t1)
        || !der_time_to_tlv(tag, &t1, &nb, 0))
    {
        return "notBefore cannot be represented";
    }
    if (!der_get(&validity, &tag, &t2)
        || !der_time_to_tlv(tag, &t2, &na, 1) || validity.n)
    {
        return "notAfter cannot be represented";
    }
    tlv_uint(b, TAG_NOT_BEFORE, nb);
    tlv_uint(b, TAG_NOT_AFTER, na);

    if (!der_expect(&tbs, 0x30, &subject)) {
        return "malformed subject";
    }
    err = dn_to_tlv(&subject, b, TAG_SUBJECT);
    if (err) {
        return err;
    }

    if (!der_expect(&tbs, 0x30, &spki) || !der_expect(&spki, 0x30, &alg)
        || !der_expect(&alg, 0x06, &x)
        || !cur_eq(&x, oid_ec_pubkey, sizeof(oid_ec_pubkey)))
    {
        return "public key is not id-ecPublicKey";
    }
    if (!der_expect(&alg, 0x06, &x) || alg.n
        || !cur_eq(&x, oid_prime256v1, sizeof(oid_prime256v1)))
    {
        return "public key curve is not prime256v1 (named)";
    }
    if (!der_expect(&spki, 0x03, &pk) || spki.n || pk.n != 66
        || pk.p[0] != 0 || pk.p[1] != 0x04)
    {
        return "public key is not an uncompressed P-256 point";
    }
    tlv_uint(b, TAG_PK_ALGO, 1);
    tlv_uint(b, TAG_CURVE, 1);
    tlv_str(b, TLV_BYTES_1, TAG_PUBKEY, pk.p + 1, 65);

    if (der_peek(&tbs, 0x81) || der_peek(&tbs, 0x82)) {
        return "issuerUniqueID/subjectUniqueID cannot be represented";
    }

    if (!der_expect(&tbs, 0xa3, &v) || !der_expect(&v, 0x30, &exts) || v.n
        || tbs.n)
    {
        return "extensions missing or trailing data in the TBS";
    }

    tlv_ctl(b, TLV_LIST, TAG_EXTENSIONS);
    seen = 0;
    while (exts.n) {
        ext = exts;
        if (!der_expect(&exts, 0x30, &x)) {
            return "malformed extension";
        }
        ext.n = ext.n - exts.n;
        err = ext_to_tlv(&ext, b, &seen);
        if (err) {
            return err;
        }
    }
    bld_u8(b, TLV_END);

    if (!der_expect(&cert, 0x30, &alg) || !der_expect(&alg, 0x06, &x)
        || alg.n || !cur_eq(&x, oid_ecdsa_sha256, sizeof(oid_ecdsa_sha256)))
    {
        return "signature algorithm is not ecdsa-with-SHA256";
    }

    if (!der_expect(&cert, 0x03, &sig) || cert.n || sig.n < 1
        || sig.p[0] != 0)
    {
        return "malformed signature";
    }
    sig.p++;
    sig.n--;
    if (!der_expect(&sig, 0x30, &x) || sig.n
        || !der_expect(&x, 0x02, &r) || !der_expect(&x, 0x02, &s) || x.n)
    {
        return "malformed ECDSA signature";
    }

    memset(rs, 0, sizeof(rs));
    for (i = 0; i < 2; i++) {
        pki_cur_t  *q = i ? &s : &r;

        if (q->n == 0 || (q->p[0] & 0x80)) {
            return "malformed ECDSA signature";
        }
        if (q->n > 1 && q->p[0] == 0) {
            q->p++;
            q->n--;
        }
        n = q->n;
        if (n > 32) {
            return "malformed ECDSA signature";
        }
        memcpy(rs + 32 * i + 32 - n, q->p, n);
    }
    tlv_str(b, TLV_BYTES_1, TAG_SIGNATURE, rs, 64);

    bld_u8(b, TLV_END);

    if (b->err) {
        return "certificate too large";
    }

    return NULL;
}


/* ---- TLV cursor -------------------------------------------------------------- */

static uint64_t
le(const unsigned char *p, size_t n)
{
    uint64_t  v = 0;

    while (n--) {
        v = v << 8 | p[n];
    }

    return v;
}


/* One element; containers are entered (their content follows). */
static int
tlv_next(pki_cur_t *c, pki_tlv_el_t *e)
{
    int     ctl, type;
    size_t  w, need;

    memset(e, 0, sizeof(pki_tlv_el_t));

    if (c->n < 1) {
        return 0;
    }

    ctl = c->p[0] & 0xe0;
    type = c->p[0] & 0x1f;
    c->p++;
    c->n--;

    if (ctl == 0x00) {
        e->tag = -1;
    } else if (ctl == TLV_CTX) {
        if (c->n < 1) {
            return 0;
        }
        e->tag = c->p[0];
        c->p++;
        c->n--;
    } else {
        return -1;          /* invalid tag form */
    }

    e->type = type;

    if (type >= TLV_UINT8 && type <= TLV_UINT64) {
        w = (size_t) 1 << (type - TLV_UINT8);
        if (c->n < w) {
            return 0;
        }
        e->u = le(c->p, w);
        c->p += w;
        c->n -= w;
        return 1;
    }

    if (type == TLV_FALSE || type == TLV_TRUE) {
        e->u = type == TLV_TRUE;
        return 1;
    }

    if ((type >= TLV_UTF8_1 && type <= TLV_UTF8_1 + 3)
        || (type >= TLV_BYTES_1 && type <= TLV_BYTES_1 + 3))
    {
        w = (size_t) 1 << (type & 3);
        if (c->n < w) {
            return 0;
        }
        need = (size_t) le(c->p, w);
        if (w == 8 && (le(c->p, w) >> 32)) {
            return 0;
        }
        c->p += w;
        c->n -= w;
        if (need > c->n) {
            return 0;
        }
        e->data = c->p;
        e->len = need;
        e->type = type < TLV_BYTES_1 ? TLV_UTF8_1 : TLV_BYTES_1;
        c->p += need;
        c->n -= need;
        return 1;
    }

    if (type >= TLV_STRUCT && type <= TLV_END) {
        return 1;
    }

    return -2;              /* signed integer, float, null or reserved */
}


/* The message for what tlv_next() refused (rc 0, -1 or -2). */
static const char *
tlv_err(int rc, int cd)
{
    if (rc == -2) {
        return cd ? "unsupported TLV element type in CD (a signed "
                    "integer, float, null or reserved type)"
                  : "unsupported TLV element type (a signed integer, "
                    "float, null or reserved type)";
    }

    if (rc < 0) {
        return cd ? "invalid TLV tag in CD" : "invalid TLV tag";
    }

    return cd ? "truncated CD" : "truncated TLV";
}


/* 1: the element has this type (TLV_UINT8: any unsigned) and tag; 0: it
 * has not or is truncated; -1: an invalid tag form; -2: a type we do not
 * take. */
static int
tlv_want(pki_cur_t *c, int type, int tag, pki_tlv_el_t *e)
{
    int  rc;

    rc = tlv_next(c, e);
    if (rc != 1) {
        return rc;
    }

    if (type == TLV_UINT8) {
        return e->type >= TLV_UINT8 && e->type <= TLV_UINT64
               && e->tag == tag;
    }

    return e->type == type && e->tag == tag;
}


static const char *
tlv_to_dn(pki_cur_t *c, pki_bld_t *b)
{
    int            t, rc, n, i;
    size_t         seq, set, name;
    pki_tlv_el_t   e;
    unsigned char  oid[PKI_MATTER_ARC_LEN + 2];
    char           hex[17];

    name = b->len;
    n = 0;

    for ( ;; ) {
        rc = tlv_next(c, &e);
        if (rc != 1) {
            return tlv_err(rc, 0);
        }
        if (e.type == TLV_END && e.tag == -1) {
            break;
        }
        if (e.tag < 0 || ++n > 10) {
            return "bad name attribute";
        }

        set = b->len;
        seq = b->len;
        t = e.tag & 0x7f;

        if (t >= 1 && t <= 16 && e.type == TLV_UTF8_1) {
            if (t == 16 && (e.tag & 0x80)) {
                return "bad domainComponent";
            }
            if (t == 16) {
                der_put(b, 0x06, oid_dc, sizeof(oid_dc));
            } else {
                oid[0] = 0x55;
                oid[1] = 0x04;
                oid[2] = dn_x520[t];
                der_put(b, 0x06, oid, 3);
            }
            der_put(b, t == 16 ? 0x16 : (e.tag & 0x80) ? 0x13 : 0x0c,
                    e.data, e.len);

        } else if (e.tag >= 17 && e.tag <= 23 && e.type >= TLV_UINT8
                   && e.type <= TLV_UINT64)
        {
            memcpy(oid, PKI_MATTER_ARC, PKI_MATTER_ARC_LEN);
            oid[8] = 1;
            oid[9] = (unsigned char) (e.tag - 16);
            der_put(b, 0x06, oid, sizeof(oid));
            if (e.tag == PKI_MATTER_TAG_CAT) {
                if (e.u > 0xffffffffULL) {
                    return "CAT larger than 32 bits";
                }
                snprintf(hex, sizeof(hex), "%08X", (unsigned) e.u);
                der_put(b, 0x0c, (unsigned char *) hex, 8);
            } else {
                for (i = 0; i < 16; i++) {
                    hex[i] = "0123456789ABCDEF"[(e.u >> (60 - 4 * i)) & 0xf];
                }
                der_put(b, 0x0c, (unsigned char *) hex, 16);
            }

        } else {
            return "bad name attribute";
        }

        der_wrap(b, seq, 0x30);
        der_wrap(b, set, 0x31);
    }

    der_wrap(b, name, 0x30);

    return NULL;
}


static const char *
tlv_to_exts(pki_cur_t *c, pki_bld_t *b)
{
    int            rc, i, bits, last, ca;
    size_t         ext, oct, in, bs;
    unsigned       seen;
    pki_tlv_el_t   e, f;
    unsigned char  oid[3], kb[3];

    seen = 0;

    for ( ;; ) {
        rc = tlv_next(c, &e);
        if (rc != 1) {
            return tlv_err(rc, 0);
        }
        if (e.type == TLV_END && e.tag == -1) {
            break;
        }
        if (e.tag < TAG_EXT_BC || e.tag > TAG_EXT_FUTURE) {
            return "unknown extension tag";
        }
        if (e.tag != TAG_EXT_FUTURE) {
            if (seen & (1u << e.tag)) {
                return "duplicate extension";
            }
            seen |= 1u << e.tag;
        }

        if (e.tag == TAG_EXT_FUTURE) {
            if (e.type != TLV_BYTES_1 || e.len < 2 || e.data[0] != 0x30) {
                return "bad future extension";
            }
            bld_put(b, e.data, e.len);
            continue;
        }

        ext = b->len;
        oid[0] = 0x55;
        oid[1] = 0x1d;

        switch (e.tag) {

        case TAG_EXT_BC:
            if (e.type != TLV_STRUCT) {
                return "bad basicConstraints";
            }
            oid[2] = 0x13;
            der_put(b, 0x06, oid, 3);
            der_put(b, 0x01, (const unsigned char *) "\xff", 1);
            oct = b->len;
            in = b->len;
            if (tlv_next(c, &f) != 1 || f.tag != 1
                || (f.type != TLV_TRUE && f.type != TLV_FALSE))
            {
                return "bad basicConstraints";
            }
            ca = (f.type == TLV_TRUE);
            if (ca) {
                der_put(b, 0x01, (const unsigned char *) "\xff", 1);
            }
            rc = tlv_next(c, &f);
            if (rc == 1 && f.tag == 2 && f.type >= TLV_UINT8
                && f.type <= TLV_UINT64)
            {
                if (!ca) {
                    /* RFC 5280 4.2.1.9 */
                    return "pathLenConstraint without cA";
                }
                if (f.u > 127) {
                    return "bad pathLenConstraint";
                }
                kb[0] = (unsigned char) f.u;
                der_put(b, 0x02, kb, 1);
                rc = tlv_next(c, &f);
            }
            if (rc != 1 || f.type != TLV_END || f.tag != -1) {
                return "bad basicConstraints";
            }
            der_wrap(b, in, 0x30);
            der_wrap(b, oct, 0x04);
            break;

        case TAG_EXT_KU:
            if (e.type < TLV_UINT8 || e.type > TLV_UINT64 || e.u == 0
                || e.u > 0x1ff)
            {
                return "bad keyUsage";
            }
            oid[2] = 0x0f;
            der_put(b, 0x06, oid, 3);
            der_put(b, 0x01, (const unsigned char *) "\xff", 1);
            last = 0;
            for (i = 0; i < 9; i++) {
                if (e.u & (1u << i)) {
                    last = i;
                }
            }
            bits = last + 1;
            memset(kb, 0, sizeof(kb));
            kb[0] = (unsigned char) ((8 - bits % 8) % 8);
            for (i = 0; i < 9; i++) {
                if (e.u & (1u << i)) {
                    kb[1 + i / 8] |= (unsigned char) (0x80 >> (i % 8));
                }
            }
            oct = b->len;
            der_put(b, 0x03, kb, (size_t) (1 + (bits + 7) / 8));
            der_wrap(b, oct, 0x04);
            break;

        case TAG_EXT_EKU:
            if (e.type != TLV_ARRAY) {
                return "bad extendedKeyUsage";
            }
            oid[2] = 0x25;
            der_put(b, 0x06, oid, 3);
            der_put(b, 0x01, (const unsigned char *) "\xff", 1);
            oct = b->len;
            in = b->len;
            for (i = 0; ; i++) {
                unsigned char  kp[sizeof(oid_kp) + 1];

                rc = tlv_next(c, &f);
                if (rc != 1) {
                    return tlv_err(rc, 0);
                }
                if (f.type == TLV_END && f.tag == -1) {
                    break;
                }
                if (f.tag != -1 || f.type < TLV_UINT8
                    || f.type > TLV_UINT64 || f.u < 1 || f.u > 6)
                {
                    return "bad extendedKeyUsage";
                }
                memcpy(kp, oid_kp, sizeof(oid_kp));
                kp[sizeof(oid_kp)] = eku_kp[f.u];
                der_put(b, 0x06, kp, sizeof(kp));
            }
            if (i == 0) {
                return "empty extendedKeyUsage";
            }
            der_wrap(b, in, 0x30);
            der_wrap(b, oct, 0x04);
            break;

        case TAG_EXT_SKID:
        case TAG_EXT_AKID:
            if (e.type != TLV_BYTES_1 || e.len != 20) {
                return "key identifier is not 20 bytes";
            }
            oid[2] = e.tag == TAG_EXT_SKID ? 0x0e : 0x23;
            der_put(b, 0x06, oid, 3);
            oct = b->len;
            if (e.tag == TAG_EXT_SKID) {
                der_put(b, 0x04, e.data, 20);
            } else {
                bs = b->len;
                der_put(b, 0x80, e.data, 20);
                der_wrap(b, bs, 0x30);
            }
            der_wrap(b, oct, 0x04);
            break;
        }

        der_wrap(b, ext, 0x30);
    }

    return NULL;
}


static void
der_uint_be(pki_bld_t *b, const unsigned char *p, size_t n)
{
    size_t  start;

    while (n > 1 && p[0] == 0) {
        p++;
        n--;
    }

    start = b->len;
    if (p[0] & 0x80) {
        bld_u8(b, 0);
    }
    bld_put(b, p, n);
    der_wrap(b, start, 0x02);
}


static const char *
tlv_to_cert(const unsigned char *tlv, size_t len, pki_bld_t *b)
{
    int            rc;
    size_t         cert, tbs, seq, ext, sig;
    const char    *err;
    pki_cur_t      c;
    pki_tlv_el_t   e;
    uint64_t       nb;

    c.p = tlv;
    c.n = len;

    rc = tlv_next(&c, &e);
    if (rc == -1) {
        return tlv_err(rc, 0);
    }
    if (rc != 1 || e.type != TLV_STRUCT || e.tag != -1) {
        return "not a Matter TLV certificate (anonymous structure)";
    }

    cert = b->len;
    tbs = b->len;

    /* version v3 */
    bld_put(b, "\xa0\x03\x02\x01\x02", 5);

#define WANT(type, tag, cond, msg)                                           \
    rc = tlv_want(&c, type, tag, &e);                                        \
    if (rc < 0) {                                                            \
        return tlv_err(rc, 0);                                               \
    }                                                                        \
    if (rc == 0 || !(cond)) {                                                \
        return msg;                                                          \
    }

    WANT(TLV_BYTES_1, TAG_SERIAL, 1 && e.len >= 1
         && e.len <= 20, "bad serial number");
    if ((e.data[0] & 0x80) || (e.len > 1 && e.data[0] == 0
                               && !(e.data[1] & 0x80)))
    {
        return "serial number is not a positive minimal INTEGER";
    }
    der_put(b, 0x02, e.data, e.len);

    WANT(TLV_UINT8, TAG_SIG_ALGO, 1 && e.u == 1,
         "bad signature algorithm");
    seq = b->len;
    der_put(b, 0x06, oid_ecdsa_sha256, sizeof(oid_ecdsa_sha256));
    der_wrap(b, seq, 0x30);

    WANT(TLV_LIST, TAG_ISSUER, 1, "bad issuer");
    err = tlv_to_dn(&c, b);
    if (err) {
        return err;
    }

    seq = b->len;
    WANT(TLV_UINT8, TAG_NOT_BEFORE, 1 && e.u <= 0xffffffffULL,
         "bad notBefore");
    nb = e.u;
    tlv_time_to_der(b, nb, 0);
    WANT(TLV_UINT8, TAG_NOT_AFTER, 1 && e.u <= 0xffffffffULL,
         "bad notAfter");
    tlv_time_to_der(b, e.u, 1);
    der_wrap(b, seq, 0x30);

    WANT(TLV_LIST, TAG_SUBJECT, 1, "bad subject");
    err = tlv_to_dn(&c, b);
    if (err) {
        return err;
    }

    WANT(TLV_UINT8, TAG_PK_ALGO, 1 && e.u == 1,
         "bad public key algorithm");
    WANT(TLV_UINT8, TAG_CURVE, 1 && e.u == 1, "bad curve");
    WANT(TLV_BYTES_1, TAG_PUBKEY, 1 && e.len == 65
         && e.data[0] == 0x04, "bad public key");

    seq = b->len;
    bld_put(b, "\x30\x13\x06\x07", 4);
    bld_put(b, oid_ec_pubkey, sizeof(oid_ec_pubkey));
    bld_put(b, "\x06\x08", 2);
    bld_put(b, oid_prime256v1, sizeof(oid_prime256v1));
    bld_put(b, "\x03\x42\x00", 3);
    bld_put(b, e.data, 65);
    der_wrap(b, seq, 0x30);

    WANT(TLV_LIST, TAG_EXTENSIONS, 1, "bad extensions");
    ext = b->len;
    err = tlv_to_exts(&c, b);
    if (err) {
        return err;
    }
    der_wrap(b, ext, 0x30);
    der_wrap(b, ext, 0xa3);

    der_wrap(b, tbs, 0x30);

    seq = b->len;
    der_put(b, 0x06, oid_ecdsa_sha256, sizeof(oid_ecdsa_sha256));
    der_wrap(b, seq, 0x30);

    WANT(TLV_BYTES_1, TAG_SIGNATURE, 1 && e.len == 64,
         "bad signature");
    sig = b->len;
    bld_u8(b, 0);
    seq = b->len;
    der_uint_be(b, e.data, 32);
    der_uint_be(b, e.data + 32, 32);
    der_wrap(b, seq, 0x30);
    der_wrap(b, sig, 0x03);

    WANT(TLV_END, -1, 1, "bad end of certificate");

#undef WANT

    if (c.n) {
        return "trailing data after the TLV certificate";
    }

    der_wrap(b, cert, 0x30);

    if (b->err) {
        return "certificate too large";
    }

    return NULL;
}


/* ---- Certification Declaration payload --------------------------------------- */

/* What is refused when the element of a tag 0..8 is not where it belongs
 * (the SDK reads them in tag order, each once, and fails on any other). */
static const char  *cd_order[9] = {
    "CD payload: format_version (tag 0) missing or out of order",
    "CD payload: vendor_id (tag 1) missing or out of order",
    "CD payload: product_id_array (tag 2) missing, out of order or after "
        "a vendor_id given twice",
    "CD payload: device_type_id (tag 3) missing, out of order or after "
        "an element given twice",
    "CD payload: certificate_id (tag 4) missing, out of order or after "
        "an element given twice",
    "CD payload: security_level (tag 5) missing, out of order or after "
        "an element given twice",
    "CD payload: security_information (tag 6) missing, out of order or "
        "after an element given twice",
    "CD payload: version_number (tag 7) missing, out of order or after "
        "an element given twice",
    "CD payload: certification_type (tag 8) missing, out of order or "
        "after an element given twice"
};


/* The CD payload's element e where tag (0..8) belongs: an unsigned
 * integer of at most max (0: not an integer, the type checked by the
 * caller). */
static const char *
cd_elem(pki_cur_t *c, int tag, uint64_t max, pki_tlv_el_t *e)
{
    int  rc;

    rc = tlv_next(c, e);
    if (rc != 1) {
        return tlv_err(rc, 1);
    }

    if (e->type == TLV_END || e->tag != tag) {
        return cd_order[tag];
    }

    if (max && (e->type < TLV_UINT8 || e->type > TLV_UINT64 || e->u > max)) {
        return "CD payload: an integer element is not an unsigned integer "
               "of its range";
    }

    return NULL;
}


/* The elements of an array of the CD payload: each anonymous, of type
 * (TLV_UINT8: unsigned, at most 0xffff; TLV_BYTES_1: of 20 octets), 1 to
 * max of them, up to the array's end, kept in cd. */
static const char *
cd_array(pki_cur_t *c, int type, int max, pki_matter_cd_t *cd)
{
    int            rc, n;
    pki_tlv_el_t   f;

    for (n = 0; ; n++) {
        rc = tlv_next(c, &f);
        if (rc != 1) {
            return tlv_err(rc, 1);
        }
        if (f.type == TLV_END) {
            break;
        }
        if (n == max || f.tag != -1) {
            goto bad;
        }
        if (type == TLV_UINT8) {
            if (f.type < TLV_UINT8 || f.type > TLV_UINT64 || f.u > 0xffff) {
                goto bad;
            }
            cd->pids[n] = (int) f.u;

        } else {
            if (f.type != TLV_BYTES_1 || f.len != 20) {
                goto bad;
            }
            memcpy(cd->paas[n], f.data, 20);
        }
    }

    if (n == 0) {
        goto bad;
    }

    if (type == TLV_UINT8) {
        cd->npids = n;
    } else {
        cd->npaas = n;
    }

    return NULL;

bad:

    return type == TLV_UINT8
           ? "bad product_id_array (1 to 100 16-bit product IDs)"
           : "bad authorized_paa_list (1 to 10 key identifiers of 20 octets)";
}


/* The TLV payload of a Certification Declaration (spec 6.3.1), as the
 * SDK's DecodeCertificationElements reads it: tags 0..8 each once and in
 * order, format_version 1, a certificate_id of 19 characters, then
 * dac_origin_vendor_id with dac_origin_product_id or neither, then maybe
 * authorized_paa_list, and nothing else (a vendor_id given twice was read
 * as the last one, an unknown element skipped). */
const char *
pki_int_matter_cd_parse(const unsigned char *p, size_t n, pki_matter_cd_t *cd)
{
    int            rc, tag;
    const char    *why;
    pki_cur_t      c;
    pki_tlv_el_t   e;

    static const uint64_t  max[9] = {
        0xffff, 0xffff, 0, 0xffffffff, 0, 0xff, 0xffff, 0xffff, 0xff
    };

    memset(cd, 0, sizeof(pki_matter_cd_t));
    cd->vendor_id = -1;
    cd->origin_vid = -1;
    cd->origin_pid = -1;
    cd->npaas = -1;

    c.p = p;
    c.n = n;

    if (tlv_next(&c, &e) != 1 || e.type != TLV_STRUCT || e.tag != -1) {
        return "CD payload is not a TLV structure";
    }

    for (tag = 0; tag < 9; tag++) {
        why = cd_elem(&c, tag, max[tag], &e);
        if (why) {
            return why;
        }

        switch (tag) {

        case 0:
            if (e.u != 1) {
                return "CD payload: format_version is not 1";
            }
            break;

        case 1:
            cd->vendor_id = (int) e.u;
            break;

        case 2:
            if (e.type != TLV_ARRAY) {
                return "bad product_id_array (1 to 100 16-bit product IDs)";
            }
            why = cd_array(&c, TLV_UINT8, 100, cd);
            if (why) {
                return why;
            }
            break;

        case 4:
            if (e.type != TLV_UTF8_1 || e.len != 19) {
                return "CD payload: certificate_id is not a string of 19 "
                       "characters";
            }
            break;
        }
    }

    rc = tlv_next(&c, &e);
    if (rc != 1) {
        return tlv_err(rc, 1);
    }

    if (e.type != TLV_END && e.tag == 9) {
        if (e.type < TLV_UINT8 || e.type > TLV_UINT64 || e.u > 0xffff) {
            return "CD payload: dac_origin_vendor_id is not a 16-bit "
                   "unsigned integer";
        }
        cd->origin_vid = (int) e.u;

        rc = tlv_next(&c, &e);
        if (rc != 1) {
            return tlv_err(rc, 1);
        }
        if (e.type == TLV_END || e.tag != 10 || e.type < TLV_UINT8
            || e.type > TLV_UINT64 || e.u > 0xffff)
        {
            return "CD payload: dac_origin_vendor_id without a 16-bit "
                   "dac_origin_product_id after it";
        }
        cd->origin_pid = (int) e.u;

        rc = tlv_next(&c, &e);
        if (rc != 1) {
            return tlv_err(rc, 1);
        }

    } else if (e.type != TLV_END && e.tag == 10) {
        return "CD payload: dac_origin_product_id without "
               "dac_origin_vendor_id";
    }

    if (e.type != TLV_END && e.tag == 11) {
        if (e.type != TLV_ARRAY) {
            return "bad authorized_paa_list (1 to 10 key identifiers of 20 "
                   "octets)";
        }
        why = cd_array(&c, TLV_BYTES_1, 10, cd);
        if (why) {
            return why;
        }

        rc = tlv_next(&c, &e);
        if (rc != 1) {
            return tlv_err(rc, 1);
        }
    }

    if (e.type != TLV_END) {
        return e.tag >= 0 && e.tag <= 11
               ? "CD payload: an element given twice or out of order"
               : "CD payload: an element of an unknown tag";
    }

    if (c.n) {
        return "trailing data after the CD payload";
    }

    return NULL;
}


/* ---- API --------------------------------------------------------------------- */

pki_status_t
pki_matter_tlv_to_der(const unsigned char *tlv, size_t len,
    unsigned char **der, size_t *derlen, pki_result_t *res)
{
    pki_bld_t    *b;
    const char   *err;

    if (der == NULL || derlen == NULL) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    *der = NULL;
    *derlen = 0;

    if (tlv == NULL || len == 0) {
        return pki_fail(res, PKI_MALFORMED, "empty TLV certificate");
    }

    if (len > PKI_MATTER_TLV_MAX) {
        return pki_fail(res, PKI_TOO_LARGE, "TLV certificate larger than %d "
                        "bytes", PKI_MATTER_TLV_MAX);
    }

    b = calloc(1, sizeof(pki_bld_t));
    if (b == NULL) {
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    err = tlv_to_cert(tlv, len, b);
    if (err) {
        free(b);
        return pki_fail(res, PKI_MALFORMED, "TLV: %s", err);
    }

    if (b->len > PKI_MATTER_DER_MAX) {
        free(b);
        return pki_fail(res, PKI_TOO_LARGE, "DER certificate larger than %d "
                        "bytes", PKI_MATTER_DER_MAX);
    }

    /* one certificate, one TLV: the DER made is turned back into TLV and
     * must give these very bytes (wider integers or lengths than needed,
     * an extension the converter would not write, all refused), as the
     * other direction checks its own */
    {
        pki_bld_t  *d = calloc(1, sizeof(pki_bld_t));

        err = d != NULL ? cert_to_tlv(b->b, b->len, d) : "out of memory";
        if (err == NULL && (d->len != len || memcmp(d->b, tlv, len) != 0)) {
            err = "not the canonical encoding of its certificate";
        }
        free(d);
        if (err != NULL) {
            free(b);
            return pki_fail(res, PKI_MALFORMED, "TLV: %s", err);
        }
    }

    *der = malloc(b->len);
    if (*der == NULL) {
        free(b);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    memcpy(*der, b->b, b->len);
    *derlen = b->len;
    free(b);

    return PKI_OK;
}


pki_status_t
pki_matter_der_to_tlv(const unsigned char *der, size_t len,
    unsigned char **tlv, size_t *tlvlen, pki_result_t *res)
{
    pki_bld_t    *b, *d;
    const char   *err;

    if (tlv == NULL || tlvlen == NULL) {
        return pki_fail(res, PKI_INTERNAL, "bad arguments");
    }

    *tlv = NULL;
    *tlvlen = 0;

    if (der == NULL || len == 0) {
        return pki_fail(res, PKI_MALFORMED, "empty certificate");
    }

    if (len > PKI_MATTER_DER_MAX) {
        return pki_fail(res, PKI_TOO_LARGE, "DER certificate larger than %d "
                        "bytes", PKI_MATTER_DER_MAX);
    }

    b = calloc(1, sizeof(pki_bld_t));
    d = calloc(1, sizeof(pki_bld_t));
    if (b == NULL || d == NULL) {
        free(b);
        free(d);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    err = cert_to_tlv(der, len, b);
    if (err) {
        free(b);
        free(d);
        return pki_fail(res, PKI_MALFORMED, "DER to TLV: %s", err);
    }

    if (b->len > PKI_MATTER_TLV_MAX) {
        free(b);
        free(d);
        return pki_fail(res, PKI_TOO_LARGE, "TLV certificate larger than %d "
                        "bytes", PKI_MATTER_TLV_MAX);
    }

    /* Only what converts back to the very same DER is representable. */
    err = tlv_to_cert(b->b, b->len, d);
    if (err || d->len != len || memcmp(d->b, der, len) != 0) {
        free(b);
        free(d);
        return pki_fail(res, PKI_MALFORMED, "DER to TLV: the certificate is "
                        "not in the canonical DER form TLV can represent%s%s",
                        err ? ": " : "", err ? err : "");
    }

    *tlv = malloc(b->len);
    if (*tlv == NULL) {
        free(b);
        free(d);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    memcpy(*tlv, b->b, b->len);
    *tlvlen = b->len;
    free(b);
    free(d);

    return PKI_OK;
}
