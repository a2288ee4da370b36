/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The parsers of the ACME validator, fed directly: what a hostile DNS
 * server, a hostile CAA record set or a hostile http-01 target sends.
 *
 * The target includes core/acme_validate.c (it is linked without
 * acme_validate.o) to reach its statics; no socket is opened.  Outputs go
 * to heap buffers of their exact size, so ASan sees a write past them, and
 * each call's results are checked against what its callers rely on (NUL
 * inside the buffer, lengths within caps, the shapes the next step
 * assumes).  The CAA decision is checked against a small independent
 * model of RFC 8659 section 4 (tags compared by their exact bytes).
 *
 * Input: byte 0 chooses the parser (low 3 bits) and its options (high
 * bits), the rest is the data:
 *
 *   0  av_dns_name       rest[0] is the start offset, rest+1 the message
 *   1  av_dns_parse      a response; qtype A, AAAA, TXT or CAA from bits
 *                        3-4; the qname and id are taken from the message
 *                        itself; a CAA answer goes on to av_caa_set
 *   2  av_caa_value_why  an issue/issuewild value
 *   3  av_caa_set        records <len><flags><taglen><tag><value>...,
 *                        len 0xff: a record over the size cap, of which
 *                        <len><flags><taglen><tag> follows (what
 *                        av_dns_parse keeps of one)
 *   4  av_header         an HTTP head block (status line + headers)
 *   5  av_unchunk        a chunked body; also fed in pieces, as it arrives
 *   6  av_url_redirect   Location values, one a line, followed in turn
 *   7  av_dns_build      a name; the query must parse back as the question
 */

#include "../core/acme_validate.c"

#include "fuzz.h"


#define PKI_FUZZ_INPUT_MAX  (AV_DNS_TCP_MAX + 2)


static const char *const  pki_fuzz_caa_ids[] = {
    "ca.example", "pki.example.net", NULL
};

static const char  pki_fuzz_account[] = "https://ca.example/acme/acct/17";

static const int   pki_fuzz_qtypes[] = { AV_T_A, AV_T_AAAA, AV_T_TXT,
                                         AV_T_CAA };


static void
pki_fuzz_need(int cond)
{
    if (!cond) {
        abort();
    }
}


/* 1 when s[0..size) holds a NUL */
static int
pki_fuzz_terminated(const char *s, size_t size)
{
    return memchr(s, '\0', size) != NULL;
}


static void
pki_fuzz_av(av_t *av, pki_acme_validate_conf_t *conf,
    pki_acme_validate_out_t *out, int with_ids)
{
    memset(conf, 0, sizeof(*conf));
    conf->caa = 1;
    conf->caa_ids = with_ids ? pki_fuzz_caa_ids : NULL;
    conf->resolver = "192.0.2.53";              /* never contacted here */

    if (!av_begin(av, conf, out)) {
        abort();
    }
    av_limits(av);
}


/* A dotted name as av_dns_name promises it: within AV_NAME_MAX, lowercase,
 * printable, no empty label. */
static void
pki_fuzz_check_name(const char *name)
{
    size_t  i, len;

    pki_fuzz_need(pki_fuzz_terminated(name, AV_NAME_MAX));
    len = strlen(name);

    for (i = 0; i < len; i++) {
        pki_fuzz_need((unsigned char) name[i] > 0x20
                      && (unsigned char) name[i] < 0x7f
                      && !(name[i] >= 'A' && name[i] <= 'Z'));
        if (name[i] == '.') {
            pki_fuzz_need(i > 0 && i + 1 < len && name[i + 1] != '.');
        }
    }
}


/* ---- the CAA model ------------------------------------------------------ */

static char *
pki_fuzz_trim(char *s)
{
    char  *e;

    while (*s == ' ' || *s == '\t') {
        s++;
    }
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t')) {
        *--e = '\0';
    }
    return s;
}


/* RFC 8659 4.2 issuer-domain-name [";" parameters], with RFC 8657's
 * accounturi and validationmethods; an unknown parameter is ignored.
 * What the value says of this CA: AV_CAA_OK, or why not (AV_CAA_OTHER:
 * another CA or none; for this CA, a bit for each parameter that refuses:
 * AV_CAA_BADPARAM without "=", AV_CAA_ACCOUNT, AV_CAA_METHOD). */
static int
pki_fuzz_caa_value_model(const unsigned char *v, size_t len, int with_ids,
    const char *account_uri, const char *method)
{
    int     named, listed, why;
    char   *buf, *seg, *rest, *dom, *eq, *tag, *val, *m;
    size_t  i;

    if (len >= AV_DNS_RDATA_MAX || memchr(v, '\0', len) != NULL) {
        return AV_CAA_OTHER;
    }

    buf = pki_fuzz_strndup(v, len);
    rest = strchr(buf, ';');
    if (rest != NULL) {
        *rest++ = '\0';
    }

    dom = pki_fuzz_trim(buf);
    named = 0;
    for (i = 0; with_ids && pki_fuzz_caa_ids[i] != NULL; i++) {
        if (dom[0] != '\0' && strcasecmp(dom, pki_fuzz_caa_ids[i]) == 0) {
            named = 1;
        }
    }
    if (!named) {
        free(buf);
        return AV_CAA_OTHER;
    }

    why = AV_CAA_OK;

    while (rest != NULL) {
        seg = rest;
        rest = strchr(seg, ';');
        if (rest != NULL) {
            *rest++ = '\0';
        }
        if (pki_fuzz_trim(seg)[0] == '\0') {
            continue;
        }
        eq = strchr(seg, '=');
        if (eq == NULL) {
            why |= AV_CAA_BADPARAM;
            continue;
        }
        *eq = '\0';
        tag = pki_fuzz_trim(seg);
        val = pki_fuzz_trim(eq + 1);

        if (strcasecmp(tag, "accounturi") == 0) {
            if (account_uri == NULL || strcmp(val, account_uri) != 0) {
                why |= AV_CAA_ACCOUNT;
            }

        } else if (strcasecmp(tag, "validationmethods") == 0) {
            listed = 0;
            while (*val != '\0') {
                m = val;
                val += strcspn(val, ",");
                if (*val == ',') {
                    *val++ = '\0';
                }
                if (strcmp(pki_fuzz_trim(m), method) == 0) {
                    listed = 1;
                }
            }
            if (!listed) {
                why |= AV_CAA_METHOD;
            }
        }
    }

    free(buf);
    return why;
}


static int
pki_fuzz_tag_is(const unsigned char *rec, const char *tag)
{
    return rec[1] == strlen(tag)
           && strncasecmp((const char *) rec + 2, tag, rec[1]) == 0;
}


/* RFC 8659 4: PKI_OK when the set lets one of our identities issue. */
static pki_status_t
pki_fuzz_caa_set_model(const av_dns_ans_t *ans, int wildcard, int with_ids,
    const char *account_uri, const char *method)
{
    int                   wild, seen, big;
    size_t                i, tl;
    const unsigned char  *r;
    const char           *want;

    /* a set with records left out cannot be judged (resolvers rotate:
     * the one left out may be the one that forbids) */
    if (ans->truncated) {
        return PKI_FORBIDDEN;
    }

    wild = 0;

    for (i = 0; i < ans->n; i++) {
        r = ans->data[i];
        tl = ans->len[i] >= 2 ? r[1] : 0;
        if (tl == 0 || tl + 2 > ans->len[i] || tl >= 32) {
            return PKI_FORBIDDEN;               /* malformed            */
        }
        if (pki_fuzz_tag_is(r, "issuewild")) {
            wild = wildcard;
        } else if (!pki_fuzz_tag_is(r, "issue")
                   && !pki_fuzz_tag_is(r, "iodef") && (r[0] & 0x80))
        {
            return PKI_FORBIDDEN;               /* unknown, critical    */
        }
    }

    want = wild ? "issuewild" : "issue";
    seen = 0;
    big = 0;

    /* a record over the cap is one of the set that rules, unread: it
     * refuses, unless another one of the set lets us issue */
    for (i = 0; i < ans->n; i++) {
        r = ans->data[i];
        if (!pki_fuzz_tag_is(r, want)) {
            continue;
        }
        seen = 1;
        if (ans->toolong[i]) {
            big = 1;
            continue;
        }
        if (pki_fuzz_caa_value_model(r + 2 + r[1], ans->len[i] - 2 - r[1],
                                     with_ids, account_uri, method)
            == AV_CAA_OK)
        {
            return PKI_OK;
        }
    }

    return seen || big ? PKI_FORBIDDEN : PKI_OK;
}


static void
pki_fuzz_caa(const av_dns_ans_t *ans, uint8_t op)
{
    int                       wildcard, with_ids;
    const char               *uri, *method;
    pki_status_t              st, want;
    av_t                      av;
    pki_acme_validate_out_t   out;
    pki_acme_validate_conf_t  conf;

    wildcard = (op & 0x20) != 0;
    uri = (op & 0x40) ? pki_fuzz_account : NULL;
    method = (op & 0x80) ? "dns-01" : "http-01";
    with_ids = !(op & 0x08) || (op & 0x10);

    pki_fuzz_av(&av, &conf, &out, with_ids);
    st = av_end(&av, av_caa_set(&av, "example.com", "example.com", ans,
                                wildcard, uri, method));
    want = pki_fuzz_caa_set_model(ans, wildcard, with_ids, uri, method);

    if (pki_fuzz_verbose()) {
        fprintf(stderr, "caa: %s (model %s) %s\n", pki_status_name(st),
                pki_status_name(want), out.res.detail);
    }

    pki_fuzz_need(st == want);
    if (st == PKI_OK) {
        pki_fuzz_need(out.problem_type == NULL);
    } else {
        pki_fuzz_need(out.problem_type != NULL
                      && strcmp(out.problem_type, "caa") == 0
                      && out.res.status == PKI_FORBIDDEN
                      && out.res.detail[0] != '\0');
    }
}


/* ---- the parsers --------------------------------------------------------- */

static void
pki_fuzz_dns_name(const uint8_t *data, size_t size)
{
    char    *out;
    size_t   off, start;

    if (size < 1) {
        return;
    }
    start = data[0];
    data++;
    size--;

    out = malloc(AV_NAME_MAX);
    if (out == NULL) {
        abort();
    }

    off = start;
    if (av_dns_name(data, size, &off, out)) {
        pki_fuzz_check_name(out);
        pki_fuzz_need(off > start && off <= size);
        if (pki_fuzz_verbose()) {
            fprintf(stderr, "dns name \"%s\", next %zu\n", out, off);
        }
    }

    free(out);
}


static void
pki_fuzz_dns_parse(const uint8_t *data, size_t size, uint8_t op)
{
    int            qtype;
    char           qname[AV_NAME_MAX];
    size_t         off, i;
    uint16_t       id;
    const char    *why;
    av_dns_ans_t  *ans;

    qtype = pki_fuzz_qtypes[(op >> 3) & 3];

    /* answer the question the message asks, so that the parse goes on */
    off = 12;
    if (size < 12 || !av_dns_name(data, size, &off, qname)) {
        snprintf(qname, sizeof(qname), "example.com");
    }
    id = size >= 2 ? (uint16_t) ((data[0] << 8) | data[1]) : 0;

    ans = malloc(sizeof(av_dns_ans_t));
    if (ans == NULL) {
        abort();
    }
    /* a TXT value sought (dns-01: every record compared) or none */
    ans->want = (op & 0x20) ? "x" : NULL;

    why = NULL;
    if (!av_dns_parse(data, size, id, qname, qtype, ans, &why)) {
        pki_fuzz_need(why != NULL && why[0] != '\0');
        if (pki_fuzz_verbose()) {
            fprintf(stderr, "dns parse \"%s\" type %d: %s\n", qname, qtype,
                    why);
        }
        free(ans);
        return;
    }

    pki_fuzz_need(ans->n <= AV_DNS_RR_MAX && ans->rcode <= 15);
    pki_fuzz_need(!ans->found || (qtype == AV_T_TXT && ans->want != NULL));
    pki_fuzz_check_name(ans->cname);
    pki_fuzz_need(ans->cname[0] == '\0' || ans->n == 0);

    for (i = 0; i < ans->n; i++) {
        pki_fuzz_need(ans->len[i] < AV_DNS_RDATA_MAX);
        if (qtype == AV_T_A || qtype == AV_T_AAAA) {
            pki_fuzz_need(ans->len[i] == (qtype == AV_T_A ? 4 : 16)
                          && !ans->toolong[i]);
        }
        if (ans->toolong[i] && qtype == AV_T_CAA) {
            /* its flags and tag only, and its own length */
            pki_fuzz_need(ans->size[i] >= AV_DNS_RDATA_MAX
                          && ans->len[i] >= 2
                          && ans->len[i] <= 2 + (size_t) ans->data[i][1]);
        } else if (ans->toolong[i]) {
            pki_fuzz_need(ans->len[i] == 0);
        } else if (qtype == AV_T_CAA) {
            pki_fuzz_need(ans->size[i] == ans->len[i]);
        }
    }

    if (pki_fuzz_verbose()) {
        fprintf(stderr, "dns parse \"%s\" type %d: rcode %d, %u records, "
                "cname \"%s\"\n", qname, qtype, ans->rcode, ans->n,
                ans->cname);
    }

    if (qtype == AV_T_CAA && ans->rcode == 0 && ans->n > 0) {
        pki_fuzz_caa(ans, op);
    }

    free(ans);
}


static void
pki_fuzz_caa_value(const uint8_t *data, size_t size, uint8_t op)
{
    int                       rc, want, with_ids;
    const char               *uri, *method;
    av_t                      av;
    pki_acme_validate_out_t   out;
    pki_acme_validate_conf_t  conf;

    uri = (op & 0x40) ? pki_fuzz_account : NULL;
    method = (op & 0x80) ? "dns-01" : "http-01";
    with_ids = !(op & 0x08);

    pki_fuzz_av(&av, &conf, &out, with_ids);
    rc = av_caa_value_why(&av, data, size, uri, method);
    want = pki_fuzz_caa_value_model(data, size, with_ids, uri, method);

    if (pki_fuzz_verbose()) {
        fprintf(stderr, "caa value: %d (model %d)\n", rc, want);
    }
    pki_fuzz_need(rc == want);
}


static void
pki_fuzz_caa_records(const uint8_t *data, size_t size, uint8_t op)
{
    int            big;
    size_t         off, n;
    av_dns_ans_t  *ans;

    ans = calloc(1, sizeof(av_dns_ans_t));
    if (ans == NULL) {
        abort();
    }

    /* as av_dns_parse leaves a CAA answer: of a record over the cap,
     * its head (at least flags and tag length, at most up to the tag's
     * end) and a length over the cap */
    for (off = 0; off < size && ans->n < AV_DNS_RR_MAX; off += n) {
        n = data[off++];
        big = 0;
        if (n == 0xff) {
            if (off == size) {
                break;
            }
            n = data[off++];
            big = 1;
        }
        if (n > size - off) {
            n = size - off;
        }
        if (big) {
            if (n < 2) {
                break;
            }
            if (n > 2 + (size_t) data[off + 1]) {
                n = 2 + (size_t) data[off + 1];
            }
        }
        memcpy(ans->data[ans->n], data + off, n);
        ans->toolong[ans->n] = (unsigned char) big;
        ans->size[ans->n] = (unsigned short) (big ? 256 + n : n);
        ans->len[ans->n++] = (unsigned short) n;
    }

    if (ans->n > 0) {
        pki_fuzz_caa(ans, op);
    }

    free(ans);
}


static void
pki_fuzz_header(const uint8_t *data, size_t size, uint8_t op)
{
    int          rc, rc2;
    char        *head, *val, *val2;
    size_t       vsize, vlen;
    const char  *name, *lower;

    static const size_t  sizes[] = { AV_URL_MAX, 64, 1, 8 };
    static const char   *names[] = { "Location", "Transfer-Encoding",
                                     "Content-Length", "X" };
    static const char   *lowers[] = { "location", "transfer-encoding",
                                      "content-length", "x" };

    vsize = sizes[(op >> 3) & 3];
    name = names[(op >> 5) & 3];
    lower = lowers[(op >> 5) & 3];

    head = pki_fuzz_strndup(data, size);
    val = malloc(vsize);
    val2 = malloc(vsize);
    if (val == NULL || val2 == NULL) {
        abort();
    }

    rc = av_header(head, name, val, vsize);
    pki_fuzz_need(rc >= -1 && rc <= 1);

    if (rc == 1) {
        pki_fuzz_need(pki_fuzz_terminated(val, vsize));
        vlen = strlen(val);
        pki_fuzz_need(strchr(val, '\n') == NULL);
        if (vlen > 0) {
            pki_fuzz_need(val[0] != ' ' && val[0] != '\t'
                          && val[vlen - 1] != ' ' && val[vlen - 1] != '\t'
                          && val[vlen - 1] != '\r');
        }
    }

    /* header names are case-insensitive */
    rc2 = av_header(head, lower, val2, vsize);
    pki_fuzz_need(rc2 == rc && (rc != 1 || strcmp(val, val2) == 0));

    if (pki_fuzz_verbose()) {
        fprintf(stderr, "header %s: %d \"%s\"\n", name, rc,
                rc == 1 ? val : "");
    }

    free(val2);
    free(val);
    free(head);
}


static void
pki_fuzz_unchunk(const uint8_t *data, size_t size, uint8_t op)
{
    int      rc, prc;
    char    *raw, *out, *pout;
    size_t   cap, outlen, plen, cut, step;

    static const size_t  caps[] = { AV_BODY_MAX, 16, 1, 300 };

    cap = caps[(op >> 3) & 3];

    /* exact sizes: ASan sees a read past the data or a write past cap */
    raw = malloc(size ? size : 1);
    out = malloc(cap);
    pout = malloc(cap);
    if (raw == NULL || out == NULL || pout == NULL) {
        abort();
    }
    if (size) {
        memcpy(raw, data, size);
    }

    outlen = (size_t) -1;
    rc = av_unchunk(raw, size, out, cap, &outlen);
    pki_fuzz_need(rc >= -2 && rc <= 1);
    if (rc == 1) {
        pki_fuzz_need(outlen <= cap);
    }

    if (pki_fuzz_verbose()) {
        fprintf(stderr, "unchunk: %d, %zu bytes\n", rc,
                rc == 1 ? outlen : 0);
    }

    /* av_http_get calls it again as more arrives: a complete body must
     * not look malformed, nor decode differently, while it is coming */
    if (rc == 1) {
        step = size / 16 + 1;
        for (cut = 0; cut < size; cut += step) {
            plen = (size_t) -1;
            prc = av_unchunk(raw, cut, pout, cap, &plen);
            pki_fuzz_need(prc == 0 || prc == 1);
            if (prc == 1) {
                pki_fuzz_need(plen == outlen
                              && memcmp(pout, out, outlen) == 0);
            }
        }
    }

    free(pout);
    free(out);
    free(raw);
}


static void
pki_fuzz_check_url(const av_url_t *u)
{
    av_addr_t  a;

    pki_fuzz_need(pki_fuzz_terminated(u->host, sizeof(u->host))
                  && pki_fuzz_terminated(u->path, sizeof(u->path)));
    pki_fuzz_need(u->host[0] != '\0' && u->path[0] == '/');
    pki_fuzz_need(u->port >= 1 && u->port <= 65535);
    pki_fuzz_need(av_hostname_ok(u->host) || av_addr_parse(u->host, &a));
    pki_fuzz_need(av_url_chars_ok(u->path) && strchr(u->path, '#') == NULL);
}


static void
pki_fuzz_redirect(const uint8_t *data, size_t size, uint8_t op)
{
    char      *locs, *loc, *nl, *text;
    size_t     hops, tsize;
    av_url_t  *cur, *next;

    cur = malloc(sizeof(av_url_t));
    next = malloc(sizeof(av_url_t));
    tsize = AV_NAME_MAX + 128;
    text = malloc(tsize);
    if (cur == NULL || next == NULL || text == NULL) {
        abort();
    }

    /* where av_http01 starts, or a target a redirect led to */
    switch ((op >> 3) & 3) {
    case 0:
        cur->https = 0;
        cur->port = 80;
        snprintf(cur->host, sizeof(cur->host), "www.example.com");
        snprintf(cur->path, sizeof(cur->path),
                 "/.well-known/acme-challenge/LoqXcYV8q5ONbJQxbmR7SCTNo3ti");
        break;
    case 1:
        cur->https = 1;
        cur->port = 8443;
        snprintf(cur->host, sizeof(cur->host), "2001:db8::1");
        snprintf(cur->path, sizeof(cur->path), "/a/b/c?x=1");
        break;
    case 2:
        cur->https = 0;
        cur->port = 80;
        snprintf(cur->host, sizeof(cur->host), "192.0.2.7");
        snprintf(cur->path, sizeof(cur->path), "/");
        break;
    default:
        cur->https = 1;
        cur->port = 443;
        snprintf(cur->host, sizeof(cur->host), "a.b.example");
        snprintf(cur->path, sizeof(cur->path), "/x");
        break;
    }

    locs = pki_fuzz_strndup(data, size);

    for (loc = locs, hops = 0; loc != NULL && hops < AV_REDIRECTS_DEFAULT;
         loc = nl, hops++)
    {
        nl = strchr(loc, '\n');
        if (nl != NULL) {
            *nl++ = '\0';
        }

        if (!av_url_redirect(cur, loc, next)) {
            if (pki_fuzz_verbose()) {
                fprintf(stderr, "redirect \"%s\": refused\n", loc);
            }
            break;
        }

        pki_fuzz_check_url(next);
        av_url_text(next, text, tsize);
        pki_fuzz_need(pki_fuzz_terminated(text, tsize));

        if (pki_fuzz_verbose()) {
            fprintf(stderr, "redirect \"%s\": %s\n", loc, text);
        }

        *cur = *next;
    }

    free(locs);
    free(text);
    free(next);
    free(cur);
}


static void
pki_fuzz_dns_build(const uint8_t *data, size_t size, uint8_t op)
{
    int             qtype, printable;
    char           *name, back[AV_NAME_MAX];
    size_t          n, i, off, qsize;
    uint16_t        id;
    const char     *why;
    av_dns_ans_t   *ans;
    unsigned char  *q;

    qtype = pki_fuzz_qtypes[(op >> 3) & 3];
    id = (uint16_t) (size * 7919);
    name = pki_fuzz_strndup(data, size);

    qsize = 512;                                /* as av_dns_query      */
    q = malloc(qsize);
    ans = malloc(sizeof(av_dns_ans_t));
    if (q == NULL || ans == NULL) {
        abort();
    }

    n = av_dns_build(q, qsize, id, name, qtype);
    if (n == 0) {
        goto done;
    }
    pki_fuzz_need(n <= qsize);

    printable = 1;
    for (i = 0; name[i] != '\0'; i++) {
        if ((unsigned char) name[i] <= 0x20
            || (unsigned char) name[i] >= 0x7f)
        {
            printable = 0;
        }
    }

    /* the name written reads back (a trailing dot is the root's: the
     * same name), and the query turned into an empty response parses as
     * the answer to itself */
    i = strlen(name);
    if (i > 0 && name[i - 1] == '.') {
        name[i - 1] = '\0';
    }
    off = 12;
    pki_fuzz_need(av_dns_name(q, n, &off, back) == printable);
    if (!printable) {
        goto done;
    }
    pki_fuzz_need(strcasecmp(back, name) == 0);

    q[2] |= 0x80;
    why = NULL;
    pki_fuzz_need(av_dns_parse(q, n, id, name, qtype, ans, &why) == 1);
    pki_fuzz_need(ans->n == 0 && ans->rcode == 0 && ans->cname[0] == '\0');

done:

    free(ans);
    free(q);
    free(name);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t  op;

    if (size < 1 || size > PKI_FUZZ_INPUT_MAX) {
        return 0;
    }

    op = data[0];
    data++;
    size--;

    switch (op & 7) {
    case 0:
        pki_fuzz_dns_name(data, size);
        break;
    case 1:
        pki_fuzz_dns_parse(data, size, op);
        break;
    case 2:
        pki_fuzz_caa_value(data, size, op);
        break;
    case 3:
        pki_fuzz_caa_records(data, size, op);
        break;
    case 4:
        pki_fuzz_header(data, size, op);
        break;
    case 5:
        pki_fuzz_unchunk(data, size, op);
        break;
    case 6:
        pki_fuzz_redirect(data, size, op);
        break;
    default:
        pki_fuzz_dns_build(data, size, op);
        break;
    }

    ERR_clear_error();

    return 0;
}
