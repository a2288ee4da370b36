/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The revocation admin API: JSON in, JSON out, server agnostic.
 *
 *   POST revoke                 {"serial", "reason", "invalidity_date",
 *                                "ca", "at"} -> the updated record; "at"
 *                                (RFC 3339, in the future) plans the
 *                                revocation for then instead
 *                                (pki_record_plan_revoke)
 *   GET  certificates/<serial>  [?ca=NAME] -> the record (with "der")
 *   GET  certificates           ?status=good|revoked|hold &subject=TEXT
 *                               &expires_before=RFC3339 &ca=NAME
 *                               &cursor=C &limit=N
 *                               -> {"certificates": [...],
 *                                   "next_cursor": "C" or "0" when done}
 *   GET  scep/pending           ?cursor=C &limit=N -> {"pending": [...],
 *                                   "next_cursor"} (core/scep.c)
 *   POST scep/...               challenges, approve, reject (core/scep.c)
 *   GET  acme/accounts/<id>     -> the ACME account (core/acme.c)
 *   POST acme/accounts/<id>     {"status": "revoked"} -> the account,
 *                                revoked (RFC 8555 7.1.6); already
 *                                revoked: 200, no change; deactivated by
 *                                its client: 409
 *
 * A list page is limit serials of one CA's expiry index, soonest expiry
 * first (pki_record_list: the work is the page's, whatever else the store
 * holds), filtered afterwards: a page may hold fewer records than the
 * limit, even none, while next_cursor is not "0".  A page of the index
 * that yields no record at all (members that are no serials, pending or
 * vanished records) is passed over for the next one, of this CA or the
 * next, up to PKI_ADMIN_LIST_PAGES index pages a request.  The cursor is
 * opaque ("I.C": CA index and the CA's list cursor; "I.0" starts CA I);
 * "0" or none starts.  The keyspace SCAN cursors of older versions are
 * refused (400): the listing starts again from "0".
 *
 * Access control is the server's: the glue passes the authenticated
 * identity, and a request without one is refused (403).
 */

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>

#include "pki.h"
#include "acme_int.h"
#include "audit_int.h"
#include "scep_int.h"


#define PKI_ADMIN_BODY_MAX     16384

/* Dates here are typed by an operator (curl, a query string), and this
 * API has always taken a space for the "T", which RFC 3339 5.6 allows by
 * agreement for readability; ACME and the log files do not. */
#define PKI_ADMIN_TIME         PKI_RFC3339_SPACE
#define PKI_ADMIN_PATH_MAX     256
#define PKI_ADMIN_QUERY_MAX    2048
#define PKI_ADMIN_VALUE_MAX    512
#define PKI_ADMIN_LIMIT_DEF    100
#define PKI_ADMIN_LIMIT_MAX    1000
#define PKI_ADMIN_LIST_PAGES   10      /* index pages a listing reads */
#define PKI_ADMIN_FUTURE_SKEW  300


static const char *const  pki_reason_names[11] = {
    "unspecified", "keyCompromise", "cACompromise", "affiliationChanged",
    "superseded", "cessationOfOperation", "certificateHold", NULL,
    "removeFromCRL", "privilegeWithdrawn", "aACompromise"
};


static int
pki_reason_code(const char *name)
{
    int  i;

    for (i = 0; i < 11; i++) {
        if (pki_reason_names[i] != NULL
            && strcmp(pki_reason_names[i], name) == 0)
        {
            return i;
        }
    }

    return -1;
}


static int
pki_admin_http_status(pki_status_t st)
{
    switch (st) {
    case PKI_OK:
        return 200;
    case PKI_MALFORMED:
    case PKI_BAD_SIGNATURE:
    case PKI_POLICY:
        return 400;
    case PKI_UNAUTHORIZED:
        return 401;
    case PKI_FORBIDDEN:
        return 403;
    case PKI_NOT_FOUND:
        return 404;
    case PKI_CONFLICT:
        return 409;
    case PKI_TOO_LARGE:
        return 413;
    case PKI_UNSUPPORTED:
        return 405;
    case PKI_UNAVAILABLE:
        return 503;
    default:
        return 500;
    }
}


/* ---- time --------------------------------------------------------------- */



/* ---- responses ---------------------------------------------------------- */

static void
pki_admin_json(pki_admin_resp_t *resp, int status, cJSON *obj)
{
    char  *s;

    resp->http_status = status;
    resp->content_type = "application/json";

    s = obj != NULL ? cJSON_PrintUnformatted(obj) : NULL;
    if (s == NULL) {
        resp->http_status = 500;
        pki_fail(&resp->res, PKI_INTERNAL, "out of memory");
        s = strdup("{\"error\":\"internal error\"}");
    }

    if (s != NULL) {
        resp->body = (unsigned char *) s;
        resp->body_len = strlen(s);
    }
}


/* The room an object's printed form can take: each string byte may be
 * escaped as \uXXXX (6), a number takes at most 26; wipe: its strings
 * are wiped as well. */
static size_t
pki_admin_json_walk(cJSON *n, int wipe)
{
    size_t  room;

    room = 8;
    for (; n != NULL; n = n->next) {
        room += 16 + (n->string != NULL ? 6 * strlen(n->string) : 0);
        if (cJSON_IsString(n) && n->valuestring != NULL) {
            room += 6 * strlen(n->valuestring);
            if (wipe) {
                OPENSSL_cleanse(n->valuestring, strlen(n->valuestring));
            }
        } else if (cJSON_IsNumber(n)) {
            room += 32;
        }
        room += pki_admin_json_walk(n->child, wipe);
    }

    return room;
}


/* An answer that holds a secret (a new one-time SCEP challenge):
 * printed into one buffer of its size, not by cJSON's printer, which
 * grows its buffer with realloc and leaves the old copies behind
 * unwiped.  Then the tree's strings are wiped (the caller deletes it);
 * the body is wiped when it is freed (pki_admin_resp_free), and
 * resp->secret asks the server to wipe its own copies. */
static void
pki_admin_json_secret(pki_admin_resp_t *resp, int status, cJSON *obj)
{
    char    *s;
    size_t   room;

    room = pki_admin_json_walk(obj, 0) + 8;
    s = malloc(room);

    if (s != NULL
        && cJSON_PrintPreallocated(obj, s, (int) room, 0))
    {
        resp->http_status = status;
        resp->content_type = "application/json";
        resp->body = (unsigned char *) s;
        resp->body_len = strlen(s);
        resp->secret = 1;

    } else {
        if (s != NULL) {
            OPENSSL_cleanse(s, room);
            free(s);
        }
        pki_fail(&resp->res, PKI_INTERNAL, "out of memory");
    }

    (void) pki_admin_json_walk(obj, 1);
}


/* An error answer from resp->res. */
static void
pki_admin_error(pki_admin_resp_t *resp)
{
    cJSON       *obj;
    const char  *msg;

    /* a client's value cut by "%.40s" may end inside a character */
    pki_int_utf8_fix(resp->res.detail);

    msg = resp->res.detail[0] != '\0' ? resp->res.detail
                                      : pki_status_name(resp->res.status);

    obj = cJSON_CreateObject();
    if (obj != NULL && cJSON_AddStringToObject(obj, "error", msg) == NULL) {
        cJSON_Delete(obj);
        obj = NULL;
    }

    pki_admin_json(resp, pki_admin_http_status(resp->res.status), obj);

    cJSON_Delete(obj);
}


static const char *
pki_cert_status_text(const pki_record_t *rec)
{
    switch (rec->status) {
    case PKI_CERT_GOOD:
        return "good";
    case PKI_CERT_REVOKED:
        return "revoked";
    default:
        return "pending";
    }
}


/* The record as JSON; with_der adds the certificate (base64).  A due
 * planned revocation shows as the revocation it is (pki_record_at). */
static cJSON *
pki_record_json(const pki_record_t *in, int with_der)
{
    cJSON         *o;
    char           t[32], *b64;
    size_t         len;
    int            good;
    pki_record_t   now, *rec;

    now = *in;
    rec = &now;
    (void) pki_record_at(rec, time(NULL));

    o = cJSON_CreateObject();
    if (o == NULL) {
        return NULL;
    }

    good = cJSON_AddStringToObject(o, "serial", rec->serial) != NULL
           && cJSON_AddStringToObject(o, "ca", rec->ca) != NULL
           && cJSON_AddStringToObject(o, "status", pki_cert_status_text(rec))
              != NULL;

    if (good && rec->status == PKI_CERT_REVOKED) {
        (void) pki_format_rfc3339(rec->revoked_at, t);
        good = cJSON_AddStringToObject(o, "reason",
                   rec->reason >= 0 && rec->reason <= 10
                   && pki_reason_names[rec->reason] != NULL
                   ? pki_reason_names[rec->reason] : "unspecified") != NULL
               && cJSON_AddNumberToObject(o, "reason_code", rec->reason)
                  != NULL
               && cJSON_AddStringToObject(o, "revoked_at", t) != NULL;

        if (good && rec->invalidity_date != 0) {
            (void) pki_format_rfc3339(rec->invalidity_date, t);
            good = cJSON_AddStringToObject(o, "invalidity_date", t) != NULL;
        }
    }

    /* a hold keeps its plan (pki_record_revoke): shown, since its
     * release brings it back */
    if (good && rec->revoke_planned != 0
        && (rec->status == PKI_CERT_GOOD
            || (rec->status == PKI_CERT_REVOKED && rec->reason == 6)))
    {
        (void) pki_format_rfc3339(rec->revoke_planned, t);
        good = cJSON_AddStringToObject(o, "revocation_planned", t) != NULL
               && cJSON_AddStringToObject(o, "planned_reason",
                      rec->planned_reason >= 0 && rec->planned_reason <= 10
                      && pki_reason_names[rec->planned_reason] != NULL
                      ? pki_reason_names[rec->planned_reason]
                      : "unspecified") != NULL;
    }

    if (good) {
        good = cJSON_AddStringToObject(o, "subject",
                   rec->subject != NULL ? rec->subject : "") != NULL
               && cJSON_AddStringToObject(o, "sans",
                   rec->sans != NULL ? rec->sans : "") != NULL;
    }

    if (good) {
        (void) pki_format_rfc3339(rec->not_before, t);
        good = cJSON_AddStringToObject(o, "not_before", t) != NULL;
    }

    if (good) {
        (void) pki_format_rfc3339(rec->not_after, t);
        good = cJSON_AddStringToObject(o, "not_after", t) != NULL;
    }

    if (good && rec->created != 0) {
        (void) pki_format_rfc3339(rec->created, t);
        good = cJSON_AddStringToObject(o, "created", t) != NULL;
    }

    if (good) {
        good = cJSON_AddStringToObject(o, "template", rec->template_name)
               != NULL
               && cJSON_AddStringToObject(o, "requester",
                      rec->requester != NULL ? rec->requester : "") != NULL
               && cJSON_AddStringToObject(o, "client",
                      rec->client != NULL ? rec->client : "") != NULL
               && cJSON_AddStringToObject(o, "protocol", rec->protocol)
                  != NULL;
    }

    if (good && with_der && rec->der != NULL && rec->der_len > 0) {
        b64 = pki_base64_encode(rec->der, rec->der_len, 0, &len);
        good = b64 != NULL
               && cJSON_AddStringToObject(o, "der", b64) != NULL;
        free(b64);
    }

    if (!good) {
        cJSON_Delete(o);
        return NULL;
    }

    return o;
}


static void
pki_admin_record(pki_admin_resp_t *resp, const pki_record_t *rec)
{
    cJSON  *o;

    o = pki_record_json(rec, 1);
    pki_admin_json(resp, 200, o);
    cJSON_Delete(o);
}


/* ---- helpers ------------------------------------------------------------ */

static pki_ca_t *
pki_admin_find_ca(const pki_admin_conf_t *conf, const char *name)
{
    size_t  i;

    for (i = 0; i < conf->ncas; i++) {
        if (strcmp(pki_ca_name(conf->cas[i]), name) == 0) {
            return conf->cas[i];
        }
    }

    return NULL;
}


/* The CA whose records hold the serial, for a request that names none.
 * A pending record (an issuance in flight, or abandoned) is no
 * certificate: neither GET nor revoke acts on one, so it does not count.
 * Serials are unique per CA only: when two CAs hold it, PKI_CONFLICT, and
 * nothing is done to either. */
static pki_status_t
pki_admin_holder(const pki_admin_conf_t *conf, const char *canon,
    pki_ca_t **out, pki_result_t *res)
{
    pki_record_t   rec;
    pki_status_t   st;
    pki_ca_t      *first;
    size_t         i;

    first = NULL;

    for (i = 0; i < conf->ncas; i++) {
        pki_result_init(res);
        st = pki_record_get(conf->redis, pki_ca_name(conf->cas[i]), canon,
                            &rec, res);
        if (st == PKI_NOT_FOUND) {
            continue;
        }

        if (st != PKI_OK) {
            return st;
        }

        st = rec.status == PKI_CERT_PENDING ? PKI_NOT_FOUND : PKI_OK;
        pki_record_clear(&rec);

        if (st == PKI_NOT_FOUND) {
            continue;
        }

        if (first != NULL) {
            pki_result_init(res);
            return pki_fail(res, PKI_CONFLICT, "serial %s is held by CA "
                            "\"%s\" and CA \"%s\": name one with \"ca\"",
                            canon, pki_ca_name(first),
                            pki_ca_name(conf->cas[i]));
        }

        first = conf->cas[i];
    }

    pki_result_init(res);

    if (first == NULL) {
        return pki_fail(res, PKI_NOT_FOUND, "no such certificate");
    }

    *out = first;
    return PKI_OK;
}


static int
pki_hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = tolower(c);
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}


/* Looks up the query parameter name; percent-decodes its value ('+' is a
 * space) into buf.  Returns 1 found, 0 absent, -1 malformed or too long. */
static int
pki_query_param(const char *q, size_t qlen, const char *name, char *buf,
    size_t size)
{
    const char  *p, *end, *amp, *eq;
    size_t       nlen, n;
    int          hi, lo;

    if (q == NULL) {
        return 0;
    }

    nlen = strlen(name);
    p = q;
    end = q + qlen;

    while (p < end) {
        amp = memchr(p, '&', (size_t) (end - p));
        if (amp == NULL) {
            amp = end;
        }

        eq = memchr(p, '=', (size_t) (amp - p));

        if ((size_t) ((eq != NULL ? eq : amp) - p) == nlen
            && memcmp(p, name, nlen) == 0)
        {
            n = 0;
            for (p = eq != NULL ? eq + 1 : amp; p < amp; p++) {
                if (n + 1 >= size) {
                    return -1;
                }
                if (*p == '%') {
                    if (amp - p < 3
                        || (hi = pki_hexval((unsigned char) p[1])) < 0
                        || (lo = pki_hexval((unsigned char) p[2])) < 0
                        || (hi == 0 && lo == 0))
                    {
                        return -1;
                    }
                    buf[n++] = (char) (hi * 16 + lo);
                    p += 2;
                } else {
                    buf[n++] = *p == '+' ? ' ' : *p;
                }
            }
            buf[n] = '\0';
            return 1;
        }

        p = amp + 1;
    }

    return 0;
}


/* ---- the transaction log of admin actions ------------------------------- */

/* README: admin actions are in the transaction log, made durable before
 * the answer.  So none is done while the log cannot take its entry: it
 * is refused (503) before anything changes, as a certificate's
 * revocation is (pki_record_revoke). */
int
pki_int_admin_ready(pki_result_t *res)
{
    const char  *why;

    if (pki_int_audit_ready(&why)) {
        return 1;
    }

    pki_fail(res, PKI_UNAVAILABLE, "transaction log unavailable");
    pki_log(res, "transaction log: %s", why);

    return 0;
}


/* The action's own entry, durable before the server answers (its ticket:
 * pki_audit_take_ticket), rather than the server's note of the request
 * after the answer, which names no object and is not waited for. */
pki_status_t
pki_int_admin_audit(const char *operation, const char *ca,
    const char *serial, const char *subject, const char *reason,
    pki_result_t *res)
{
    pki_event_t   ev;
    pki_status_t  st;
    pki_result_t  ares;

    memset(&ev, 0, sizeof(ev));
    ev.type = PKI_EV_REQUEST;
    ev.status = PKI_OK;
    ev.operation = operation;
    ev.ca = ca;
    ev.serial = serial;
    ev.subject = subject;
    ev.reason = reason;

    pki_result_init(&ares);

    st = pki_event_emit(&ev, 1, &ares);
    if (st != PKI_OK) {
        pki_log(res, "%stransaction log: %s %s",
                res != NULL && res->log[0] != '\0' ? "; " : "",
                ares.detail, ares.log);
    }

    return st;
}


/* ---- POST revoke -------------------------------------------------------- */

/* One CA's revocation now, or planned for at (0: now). */
static pki_status_t
pki_admin_revoke_one(pki_redis_t *r, const char *ca, const char *serial,
    int reason, time_t now, time_t inv, time_t at, const char *by,
    pki_record_t *rec, pki_result_t *res)
{
    if (at != 0) {
        return pki_record_plan_revoke(r, ca, serial, reason, at, by, rec,
                                      res);
    }

    return pki_record_revoke(r, ca, serial, reason, now, inv, rec, res);
}


/* A request body that must be one JSON object: the size cap, the parse
 * (nothing but whitespace after it).  The object (cJSON_Delete) or NULL
 * with res failed; what names the object for an empty body. */
static cJSON *
pki_admin_json_body(const pki_admin_conf_t *conf, const pki_admin_req_t *req,
    const char *what, pki_result_t *res)
{
    cJSON       *root;
    size_t       max;
    const char  *end, *last;

    max = conf->max_body != 0 ? conf->max_body : PKI_ADMIN_BODY_MAX;

    if (req->body_len > max) {
        pki_fail(res, PKI_TOO_LARGE, "request body over %zu bytes", max);
        return NULL;
    }

    if (req->body == NULL || req->body_len == 0) {
        pki_fail(res, PKI_MALFORMED, "empty body: %s is required", what);
        return NULL;
    }

    root = cJSON_ParseWithLengthOpts((const char *) req->body, req->body_len,
                                     &end, 0);
    if (root == NULL) {
        pki_fail(res, PKI_MALFORMED, "body is not valid JSON");
        return NULL;
    }

    last = (const char *) req->body + req->body_len;

    if (!pki_int_json_rest_blank(end, last)) {
        pki_fail(res, PKI_MALFORMED, "trailing data after the JSON object");
        cJSON_Delete(root);
        return NULL;
    }

    if (!cJSON_IsObject(root)) {
        pki_fail(res, PKI_MALFORMED, "body must be a JSON object");
        cJSON_Delete(root);
        return NULL;
    }

    if (pki_int_json_hidden(req->body, req->body_len, root, res)) {
        cJSON_Delete(root);
        return NULL;
    }

    return root;
}


static void
pki_admin_revoke(const pki_admin_conf_t *conf, const pki_admin_req_t *req,
    pki_admin_resp_t *resp)
{
    cJSON         *root, *item;
    const char    *serial, *reason_name, *ca_name;
    pki_ca_t      *ca;
    pki_record_t   rec;
    pki_status_t   st;
    time_t         now, inv, at;
    int            reason;
    char           canon[41];

    root = pki_admin_json_body(conf, req, "a JSON object", &resp->res);
    if (root == NULL) {
        return;
    }

    serial = NULL;
    reason_name = "unspecified";
    ca_name = NULL;
    inv = 0;
    at = 0;
    now = time(NULL);

    cJSON_ArrayForEach(item, root) {
        if (item->string == NULL) {
            pki_fail(&resp->res, PKI_MALFORMED, "bad member");
            goto done;
        }

        if (strcmp(item->string, "serial") != 0
            && strcmp(item->string, "reason") != 0
            && strcmp(item->string, "invalidity_date") != 0
            && strcmp(item->string, "ca") != 0
            && strcmp(item->string, "at") != 0)
        {
            pki_fail(&resp->res, PKI_MALFORMED, "unknown member \"%.32s\"",
                     item->string);
            goto done;
        }

        if (!cJSON_IsString(item) || item->valuestring == NULL) {
            pki_fail(&resp->res, PKI_MALFORMED, "\"%s\" must be a string",
                     item->string);
            goto done;
        }

        if (strcmp(item->string, "serial") == 0) {
            serial = item->valuestring;
        } else if (strcmp(item->string, "reason") == 0) {
            reason_name = item->valuestring;
        } else if (strcmp(item->string, "ca") == 0) {
            ca_name = item->valuestring;
        } else if (strcmp(item->string, "at") == 0) {
            if (!pki_parse_rfc3339(item->valuestring, PKI_ADMIN_TIME, &at)) {
                pki_fail(&resp->res, PKI_MALFORMED, "\"at\" is not an RFC "
                         "3339 date-time");
                goto done;
            }
            if (at < now - PKI_ADMIN_FUTURE_SKEW) {
                pki_fail(&resp->res, PKI_MALFORMED, "\"at\" is in the "
                         "past: leave it out to revoke now (a revocation is "
                         "dated when it is made; invalidity_date says since "
                         "when the key is compromised)");
                goto done;
            }
        } else if (!pki_parse_rfc3339(item->valuestring, PKI_ADMIN_TIME,
                                      &inv))
        {
            pki_fail(&resp->res, PKI_MALFORMED, "invalidity_date is not an "
                     "RFC 3339 date-time");
            goto done;

        } else if (inv <= 0) {
            /* the record and the CRL read 0 as none: it would be dropped
             * unsaid */
            pki_fail(&resp->res, PKI_MALFORMED, "invalidity_date must be "
                     "after 1970-01-01T00:00:00Z");
            goto done;
        }
    }

    if (serial == NULL) {
        pki_fail(&resp->res, PKI_MALFORMED, "\"serial\" is required");
        goto done;
    }

    if (strlen(serial) > 64 || !pki_serial_normalize(serial, canon)) {
        pki_fail(&resp->res, PKI_MALFORMED, "bad serial number");
        goto done;
    }

    reason = pki_reason_code(reason_name);
    if (reason < 0) {
        pki_fail(&resp->res, PKI_MALFORMED, "unknown reason \"%.40s\" (RFC "
                 "5280 names: unspecified, keyCompromise, ...)", reason_name);
        goto done;
    }

    if (inv > now + PKI_ADMIN_FUTURE_SKEW) {
        pki_fail(&resp->res, PKI_MALFORMED, "invalidity_date is in the "
                 "future");
        goto done;
    }

    if (reason == 8 && inv != 0) {
        /* a release makes the certificate good: no key is invalid */
        pki_fail(&resp->res, PKI_MALFORMED, "removeFromCRL takes no "
                 "invalidity_date");
        goto done;
    }

    /* "at": now is a revocation now; a plan is for a future time, an end
     * of service or a key rollover with no compromise (nothing is invalid
     * yet).  One further back than the clocks' skew was refused above:
     * a mistake (a plan with a wrong year), not a revocation now that
     * nothing undoes */
    if (at <= now) {
        at = 0;

    } else if (inv != 0 || reason == 6 || reason == 8) {
        pki_fail(&resp->res, PKI_MALFORMED, "a planned revocation takes no "
                 "invalidity_date and no certificateHold or removeFromCRL");
        goto done;
    }

    /* the revocation is audited as this identity (core/audit.c) */
    pki_event_set_actor("admin", req->identity, req->client);

    if (ca_name != NULL) {
        ca = pki_admin_find_ca(conf, ca_name);
        if (ca == NULL) {
            pki_fail(&resp->res, PKI_NOT_FOUND, "no such CA");
            goto done;
        }

        st = pki_admin_revoke_one(conf->redis, pki_ca_name(ca), canon,
                                  reason, now, inv, at, req->identity, &rec,
                                  &resp->res);

    } else {
        st = pki_admin_holder(conf, canon, &ca, &resp->res);

        if (st == PKI_OK) {
            st = pki_admin_revoke_one(conf->redis, pki_ca_name(ca), canon,
                                      reason, now, inv, at, req->identity,
                                      &rec, &resp->res);
        }
    }

    if (st == PKI_OK) {
        if (reason == 8 && rec.status == PKI_CERT_REVOKED) {
            /* released after the time of its planned revocation, which
             * revoked it instead (pki_record_revoke) */
            pki_log(&resp->res, "admin \"%s\": %s of CA \"%s\": %s "
                    "after its planned revocation: revoked, %s",
                    req->identity, canon, pki_ca_name(ca), reason_name,
                    rec.reason >= 0 && rec.reason <= 10
                    && pki_reason_names[rec.reason] != NULL
                    ? pki_reason_names[rec.reason] : "unspecified");

        } else {
            pki_log(&resp->res, "admin \"%s\": %s of CA \"%s\": %s%s",
                    req->identity, canon, pki_ca_name(ca), reason_name,
                    at != 0 ? " (planned)" : "");
        }

        pki_admin_record(resp, &rec);
        pki_record_clear(&rec);
    }

done:

    /* every way out: an unknown CA left the actor to the thread's next
     * event, which has no requester of its own */
    pki_event_set_actor(NULL, NULL, NULL);

    cJSON_Delete(root);
}


/* ---- GET certificates/<serial> ------------------------------------------ */

static void
pki_admin_get(const pki_admin_conf_t *conf, const pki_admin_req_t *req,
    const char *serial, pki_admin_resp_t *resp)
{
    pki_record_t   rec;
    pki_status_t   st;
    pki_ca_t      *ca;
    int            rc;
    char           canon[41], ca_name[PKI_ADMIN_VALUE_MAX];

    if (strlen(serial) > 64 || !pki_serial_normalize(serial, canon)) {
        pki_fail(&resp->res, PKI_MALFORMED, "bad serial number");
        return;
    }

    rc = pki_query_param(req->query, req->query_len, "ca", ca_name,
                         sizeof(ca_name));
    if (rc < 0) {
        pki_fail(&resp->res, PKI_MALFORMED, "bad query parameter \"ca\"");
        return;
    }

    if (rc != 1) {
        /* without "ca": the one CA that holds it */
        st = pki_admin_holder(conf, canon, &ca, &resp->res);
        if (st != PKI_OK) {
            return;
        }

    } else {
        ca = pki_admin_find_ca(conf, ca_name);
        if (ca == NULL) {
            pki_fail(&resp->res, PKI_NOT_FOUND, "no such CA");
            return;
        }
    }

    pki_result_init(&resp->res);
    st = pki_record_get(conf->redis, pki_ca_name(ca), canon, &rec,
                        &resp->res);

    if (st == PKI_OK && rec.status == PKI_CERT_PENDING) {
        /* an issuance in flight, or abandoned: no certificate yet */
        pki_record_clear(&rec);
        st = PKI_NOT_FOUND;
    }

    if (st == PKI_NOT_FOUND) {
        pki_fail(&resp->res, PKI_NOT_FOUND, "no such certificate");
        return;
    }

    if (st == PKI_OK) {
        pki_admin_record(resp, &rec);
        pki_record_clear(&rec);
    }
}


/* ---- GET certificates --------------------------------------------------- */

static int
pki_strcasestr_ok(const char *hay, const char *needle)
{
    return needle[0] == '\0' || strcasestr(hay, needle) != NULL;
}


/* The search text as a record's subject holds it: RFC 2253 text as
 * OpenSSL writes it (pki_int_name_text, XN_FLAG_RFC2253), each byte of
 * UTF-8 over 0x7f and each control character as \XX, the specials with
 * a backslash before them.  (The leading '#' and the spaces at either
 * end of a value, escaped there only, are left: the search is for a part
 * of the text.)  out holds 3 bytes per byte of in, and the NUL. */
static void
pki_admin_rfc2253(const char *in, char *out)
{
    unsigned char  c;

    for ( /* void */ ; *in != '\0'; in++) {
        c = (unsigned char) *in;

        if (c >= 0x80 || c < 0x20 || c == 0x7f) {
            out += sprintf(out, "\\%02X", c);
            continue;
        }

        if (strchr(",+\"\\<>;", c) != NULL) {
            *out++ = '\\';
        }

        *out++ = (char) c;
    }

    *out = '\0';
}


/* The "limit" query parameter of a listing into *limit (left as it is
 * when absent): digits, 1..PKI_ADMIN_LIMIT_MAX.  0 with resp failed. */
static int
pki_admin_limit(const pki_admin_req_t *req, pki_admin_resp_t *resp,
    size_t *limit)
{
    int    rc;
    long   l;
    char   s[16], *endp;

    rc = pki_query_param(req->query, req->query_len, "limit", s, sizeof(s));
    if (rc < 0) {
        pki_fail(&resp->res, PKI_MALFORMED, "bad query parameter \"limit\"");
        return 0;
    }

    if (rc == 0) {
        return 1;
    }

    errno = 0;
    l = strtol(s, &endp, 10);
    if (errno != 0 || endp == s || *endp != '\0' || l < 1
        || l > PKI_ADMIN_LIMIT_MAX || !isdigit((unsigned char) s[0]))
    {
        pki_fail(&resp->res, PKI_MALFORMED, "limit must be 1..%d",
                 PKI_ADMIN_LIMIT_MAX);
        return 0;
    }

    *limit = (size_t) l;
    return 1;
}


/* A paged listing's query: "limit" as pki_admin_limit, and "cursor" into
 * cursor (its form is the lister's to check), *have 0 when absent.  0 with
 * resp failed. */
static int
pki_admin_page(const pki_admin_req_t *req, pki_admin_resp_t *resp,
    size_t *limit, char *cursor, size_t size, int *have)
{
    int  rc;

    if (!pki_admin_limit(req, resp, limit)) {
        return 0;
    }

    rc = pki_query_param(req->query, req->query_len, "cursor", cursor, size);
    if (rc < 0 || (rc == 1 && cursor[0] == '\0')) {
        pki_fail(&resp->res, PKI_MALFORMED, "bad cursor");
        return 0;
    }

    *have = rc == 1;
    return 1;
}


static void
pki_admin_list(const pki_admin_conf_t *conf, const pki_admin_req_t *req,
    pki_admin_resp_t *resp)
{
    pki_record_t  *recs;
    cJSON         *root, *arr, *o;
    pki_status_t   st;
    time_t         before;
    size_t         n, i, limit, ca_idx, ca_lo, ca_hi, pages;
    long           l;
    char           status[32], subject[PKI_ADMIN_VALUE_MAX];
    char           esc[3 * PKI_ADMIN_VALUE_MAX];
    char           date[64], cursor[96], ca_name[PKI_ADMIN_VALUE_MAX];
    char           next[PKI_RECORD_CURSOR_MAX];
    char           out_cursor[96], *dot, *endp;
    int            rc, want, good, has_before;

    status[0] = '\0';
    subject[0] = '\0';
    before = 0;
    limit = PKI_ADMIN_LIMIT_DEF;

    if (pki_query_param(req->query, req->query_len, "status", status,
                        sizeof(status)) < 0
        || (status[0] != '\0' && strcmp(status, "good") != 0
            && strcmp(status, "revoked") != 0 && strcmp(status, "hold") != 0))
    {
        pki_fail(&resp->res, PKI_MALFORMED, "status must be good, revoked or "
                 "hold");
        return;
    }

    if (pki_query_param(req->query, req->query_len, "subject", subject,
                        sizeof(subject)) < 0)
    {
        pki_fail(&resp->res, PKI_MALFORMED, "bad query parameter "
                 "\"subject\"");
        return;
    }

    /* "Müller" finds CN=M\C3\BCller, "Acme, Inc" finds O=Acme\, Inc */
    pki_admin_rfc2253(subject, esc);

    rc = pki_query_param(req->query, req->query_len, "expires_before", date,
                         sizeof(date));
    if (rc < 0
        || (rc == 1 && !pki_parse_rfc3339(date, PKI_ADMIN_TIME, &before)))
    {
        pki_fail(&resp->res, PKI_MALFORMED, "expires_before is not an RFC "
                 "3339 date-time");
        return;
    }

    /* given as the epoch (0) too: then nothing expires before it */
    has_before = rc == 1;

    if (!pki_admin_limit(req, resp, &limit)) {
        return;
    }

    rc = pki_query_param(req->query, req->query_len, "ca", ca_name,
                         sizeof(ca_name));
    if (rc < 0) {
        pki_fail(&resp->res, PKI_MALFORMED, "bad query parameter \"ca\"");
        return;
    }

    ca_lo = 0;
    ca_hi = conf->ncas;

    if (rc == 1) {
        for (i = 0; i < conf->ncas; i++) {
            if (strcmp(pki_ca_name(conf->cas[i]), ca_name) == 0) {
                break;
            }
        }
        if (i == conf->ncas) {
            pki_fail(&resp->res, PKI_NOT_FOUND, "no such CA");
            return;
        }
        ca_lo = i;
        ca_hi = i + 1;
    }

    /* cursor "I.C" or "C" (CA index ca_lo) */
    ca_idx = ca_lo;
    strcpy(cursor, "0");

    rc = pki_query_param(req->query, req->query_len, "cursor", cursor,
                         sizeof(cursor));
    if (rc < 0 || cursor[0] == '\0') {
        pki_fail(&resp->res, PKI_MALFORMED, "bad cursor");
        return;
    }

    dot = strchr(cursor, '.');
    if (dot != NULL) {
        *dot = '\0';
        errno = 0;
        l = strtol(cursor, &endp, 10);
        if (errno != 0 || endp == cursor || *endp != '\0' || l < 0
            || (size_t) l < ca_lo || (size_t) l >= ca_hi)
        {
            pki_fail(&resp->res, PKI_MALFORMED, "bad cursor");
            return;
        }
        ca_idx = (size_t) l;
        memmove(cursor, dot + 1, strlen(dot + 1) + 1);
    }

    /* the rest is pki_record_list's to check */
    if (cursor[0] == '\0' || strlen(cursor) >= sizeof(next)) {
        pki_fail(&resp->res, PKI_MALFORMED, "bad cursor");
        return;
    }

    if (ca_idx >= ca_hi) {
        pki_fail(&resp->res, PKI_NOT_FOUND, "no CA configured");
        return;
    }

    /* a page that finds nothing to list (members of the index that are
     * no serials of ours, pending or vanished records) is not the end:
     * the next one is read, up to PKI_ADMIN_LIST_PAGES of them */
    for (pages = 1; ; pages++) {
        st = pki_record_list(conf->redis, pki_ca_name(conf->cas[ca_idx]),
                             cursor, limit, &recs, &n, next, &resp->res);
        if (st != PKI_OK) {
            return;
        }

        if (has_before) {
            /* the index is in the order of notAfter: from the first
             * record that expires at or after the bound on, nothing of
             * this CA is listed, so it ends here rather than after
             * every later page; a page left with nothing to list is
             * passed over as one with no records */
            for (i = 0; i < n && recs[i].not_after < before; i++) {
                /* void */
            }

            if (i < n) {
                strcpy(next, "0");
            }

            if (i == 0 && n > 0) {
                for (i = 0; i < n; i++) {
                    pki_record_clear(&recs[i]);
                }

                free(recs);
                recs = NULL;
                n = 0;
            }
        }

        if (n > 0 || pages == PKI_ADMIN_LIST_PAGES) {
            break;
        }

        if (strcmp(next, "0") != 0) {
            strcpy(cursor, next);

        } else if (ca_idx + 1 < ca_hi) {
            ca_idx++;
            strcpy(cursor, "0");

        } else {
            break;
        }
    }

    if (strcmp(next, "0") != 0) {
        snprintf(out_cursor, sizeof(out_cursor), "%zu.%s", ca_idx, next);
    } else if (ca_idx + 1 < ca_hi) {
        snprintf(out_cursor, sizeof(out_cursor), "%zu.0", ca_idx + 1);
    } else {
        strcpy(out_cursor, "0");
    }

    root = cJSON_CreateObject();
    arr = root != NULL ? cJSON_AddArrayToObject(root, "certificates") : NULL;
    good = arr != NULL;

    for (i = 0; i < n; i++) {
        if (good) {
            want = 1;

            /* a due plan is a revocation, for the filter as for the JSON */
            (void) pki_record_at(&recs[i], time(NULL));

            if (strcmp(status, "good") == 0) {
                want = recs[i].status == PKI_CERT_GOOD;
            } else if (strcmp(status, "revoked") == 0) {
                want = recs[i].status == PKI_CERT_REVOKED;
            } else if (strcmp(status, "hold") == 0) {
                want = recs[i].status == PKI_CERT_REVOKED
                       && recs[i].reason == 6;
            }

            if (want && has_before && recs[i].not_after >= before) {
                want = 0;
            }

            if (want && !pki_strcasestr_ok(recs[i].subject, subject)
                && !pki_strcasestr_ok(recs[i].subject, esc))
            {
                want = 0;
            }

            if (want) {
                o = pki_record_json(&recs[i], 0);
                good = o != NULL && cJSON_AddItemToArray(arr, o);
            }
        }

        pki_record_clear(&recs[i]);
    }

    free(recs);

    if (good) {
        good = cJSON_AddStringToObject(root, "next_cursor", out_cursor)
               != NULL;
    }

    if (!good) {
        cJSON_Delete(root);
        pki_fail(&resp->res, PKI_INTERNAL, "out of memory");
        return;
    }

    pki_admin_json(resp, 200, root);
    cJSON_Delete(root);
}


/* ---- what an answer that could not be sent made ------------------------ */

pki_status_t
pki_admin_withdraw(const pki_admin_conf_t *conf, const pki_admin_req_t *req,
    const pki_admin_resp_t *resp, pki_result_t *res)
{
    char                     why[160];
    const char              *op;
    pki_status_t             st;
    const pki_admin_made_t  *made;

    if (conf == NULL || conf->redis == NULL || resp == NULL) {
        return pki_fail(res, PKI_INTERNAL, "admin API not configured");
    }

    made = &resp->made;

    switch (made->kind) {

    case PKI_ADMIN_MADE_EAB_KEY:
        st = pki_acme_eab_disable(conf->redis, made->id, res);
        if (st != PKI_OK) {
            return st;
        }

        op = "acme-eab-disable";
        snprintf(why, sizeof(why), "acme eab key disabled: its answer "
                 "could not be sent");
        break;

    case PKI_ADMIN_MADE_SCEP_CHALLENGE:
        /* gone already (expired): nobody can use it either */
        st = pki_int_scep_chal_delete(conf->redis, made->key, res);
        if (st != PKI_OK && st != PKI_NOT_FOUND) {
            return st;
        }

        op = "scep-challenge-withdraw";
        snprintf(why, sizeof(why), "one-time SCEP challenge %s withdrawn: "
                 "its answer could not be sent", made->id);
        break;

    default:
        return pki_fail(res, PKI_INTERNAL, "nothing to withdraw");
    }

    /* an entry that could not be written is said in res->log, as for
     * DELETE acme/eab/ID: the withdrawal only takes trust away */
    pki_event_set_actor("admin", req != NULL ? req->identity : NULL,
                        req != NULL ? req->client : NULL);
    (void) pki_int_admin_audit(op, NULL, NULL,
                               made->kind == PKI_ADMIN_MADE_EAB_KEY
                               ? made->id : NULL, why, res);
    pki_event_set_actor(NULL, NULL, NULL);

    return PKI_OK;
}


/* In pki_admin_handle: what was made is withdrawn at once, the answer
 * (res failed) says so in its log. */
static void
pki_admin_withdraw_unsent(const pki_admin_conf_t *conf,
    const pki_admin_req_t *req, pki_admin_resp_t *resp)
{
    pki_result_t  tmp;

    pki_result_init(&tmp);

    if (pki_admin_withdraw(conf, req, resp, &tmp) == PKI_OK) {
        pki_log(&resp->res, "%sone-time SCEP challenge %s withdrawn",
                resp->res.log[0] != '\0' ? "; " : "", resp->made.id);

    } else {
        pki_log(&resp->res, "%sone-time SCEP challenge %s not withdrawn "
                "(%s): it stays usable, unseen, until it expires",
                resp->res.log[0] != '\0' ? "; " : "", resp->made.id,
                tmp.detail);
    }

    resp->made.kind = PKI_ADMIN_MADE_NONE;
}


/* ---- ACME External Account Binding keys (kept by core/acme.c) ------------ */

/* The answer to POST acme/eab, the one place a new key's HMAC key is
 * shown.  Written straight into the body, the pieces copied with memcpy
 * (kid and key are base64url: nothing to escape): no cJSON node, print
 * buffer or formatting buffer holds a copy that is freed without being
 * wiped.  The body is wiped when it is freed (pki_admin_resp_free), and
 * resp->secret asks the server to wipe its own copies. */
static void
pki_admin_eab_created(const pki_admin_conf_t *conf, const char *kid,
    const char *key, pki_admin_resp_t *resp)
{
    char          *body, *p;
    size_t         klen, hlen;
    pki_result_t   tmp;

    static const char  a[] = "{\"kid\":\"";
    static const char  b[] = "\",\"hmac_key\":\"";
    static const char  c[] = "\"}";

    klen = strlen(kid);
    hlen = strlen(key);

    body = malloc(sizeof(a) - 1 + klen + sizeof(b) - 1 + hlen + sizeof(c));
    if (body == NULL) {
        /* a key nobody was shown is of no use: disabled */
        pki_result_init(&tmp);
        (void) pki_acme_eab_disable(conf->redis, kid, &tmp);
        pki_fail(&resp->res, PKI_INTERNAL, "out of memory");
        return;
    }

    p = body;
    memcpy(p, a, sizeof(a) - 1);
    p += sizeof(a) - 1;
    memcpy(p, kid, klen);
    p += klen;
    memcpy(p, b, sizeof(b) - 1);
    p += sizeof(b) - 1;
    memcpy(p, key, hlen);
    p += hlen;
    memcpy(p, c, sizeof(c));            /* with the NUL */
    p += sizeof(c) - 1;

    resp->http_status = 201;
    resp->content_type = "application/json";
    resp->body = (unsigned char *) body;
    resp->body_len = (size_t) (p - body);
    resp->secret = 1;

    /* kid is base64url, shorter than PKI_ADMIN_MADE_ID (newkid[32]) */
    resp->made.kind = PKI_ADMIN_MADE_EAB_KEY;
    snprintf(resp->made.id, sizeof(resp->made.id), "%s", kid);

    pki_log(&resp->res, "acme eab key %s created", kid);
}


static void
pki_admin_acme_eab(const pki_admin_conf_t *conf, const pki_admin_req_t *req,
    const char *method, const char *kid, pki_admin_resp_t *resp)
{
    int           already;
    char          newkid[32], key[PKI_ACME_EAB_KEY_BUF], *json;
    cJSON        *obj, *keys;
    pki_status_t  rc;
    pki_result_t  tmp;

    if (kid == NULL && strcmp(method, "POST") == 0) {
        /* no body, or an empty object: a key takes no parameter, and one
         * asked for (a lifetime, a name) must not be dropped unsaid */
        if (req->body != NULL && req->body_len > 0
            && !pki_int_json_rest_blank((const char *) req->body,
                                        (const char *) req->body
                                        + req->body_len))
        {
            obj = pki_admin_json_body(conf, req, "{}", &resp->res);
            if (obj == NULL) {
                return;
            }

            if (obj->child != NULL) {
                pki_fail(&resp->res, PKI_MALFORMED, "unknown member "
                         "\"%.32s\": POST acme/eab takes none (an EAB key "
                         "does not expire; DELETE acme/eab/<kid> disables "
                         "it)", obj->child->string != NULL
                                ? obj->child->string : "");
                cJSON_Delete(obj);
                return;
            }

            cJSON_Delete(obj);
        }

        if (!pki_int_admin_ready(&resp->res)) {
            return;
        }

        rc = pki_acme_eab_new(conf->redis, newkid, key, &resp->res);

        if (rc == PKI_OK) {
            /* the key's id, never its HMAC key */
            pki_event_set_actor("admin", req->identity, req->client);
            rc = pki_int_admin_audit("acme-eab-create", NULL, NULL, newkid,
                                     "acme eab key created", &resp->res);
            pki_event_set_actor(NULL, NULL, NULL);

            if (rc != PKI_OK) {
                /* not in the log: not handed out, and disabled as a key
                 * nobody was shown (pki_admin_eab_created) */
                pki_result_init(&tmp);
                (void) pki_acme_eab_disable(conf->redis, newkid, &tmp);
                pki_fail(&resp->res, PKI_UNAVAILABLE, "transaction log "
                         "unavailable");
                pki_log(&resp->res, "; acme eab key %s disabled", newkid);

            } else {
                pki_admin_eab_created(conf, newkid, key, resp);
            }
        }

        OPENSSL_cleanse(key, sizeof(key));
        return;
    }

    if (kid == NULL && (strcmp(method, "GET") == 0
                        || strcmp(method, "HEAD") == 0))
    {
        int     have;
        char    cursor[32], next[24];
        size_t  limit;

        /* the cursor's form is checked by acme.c */
        limit = PKI_ADMIN_LIMIT_MAX;
        if (!pki_admin_page(req, resp, &limit, cursor, sizeof(cursor),
                            &have))
        {
            return;
        }

        rc = pki_acme_eab_list(conf->redis, have ? cursor : NULL, limit,
                               &json, next, &resp->res);
        if (rc != PKI_OK) {
            return;
        }

        keys = cJSON_Parse(json);
        free(json);

        obj = cJSON_CreateObject();
        if (obj != NULL && keys != NULL) {
            cJSON_AddItemToObject(obj, "keys", keys);
            keys = NULL;
            if (cJSON_AddStringToObject(obj, "next_cursor", next) == NULL) {
                cJSON_Delete(obj);
                obj = NULL;
            }
        }
        cJSON_Delete(keys);

        pki_admin_json(resp, 200, obj);
        cJSON_Delete(obj);
        return;
    }

    if (kid != NULL && strcmp(method, "DELETE") == 0) {
        if (!pki_int_admin_ready(&resp->res)) {
            return;
        }

        rc = pki_int_acme_eab_disable(conf->redis, kid, &already,
                                      &resp->res);
        if (rc != PKI_OK) {
            return;
        }

        if (already) {
            /* safe to retry: the same answer, nothing changed, nothing
             * more in the transaction log */
            pki_log(&resp->res, "acme eab key %s was disabled already",
                    kid);

        } else {
            /* also a key disabled by a request that gave up (503) before
             * Redis made the change: its entry is written now */
            pki_log(&resp->res, "acme eab key %s disabled", kid);

            /* an entry that could not be written is said in the error
             * log, as a revocation's (pki_record_revoke): the key stays
             * disabled, which only takes trust away, and marked, so that
             * a retry writes it */
            pki_event_set_actor("admin", req->identity, req->client);
            if (pki_int_admin_audit("acme-eab-disable", NULL, NULL, kid,
                                    "acme eab key disabled", &resp->res)
                == PKI_OK)
            {
                pki_int_acme_eab_logged(conf->redis, kid, &resp->res);
            }
            pki_event_set_actor(NULL, NULL, NULL);
        }

        obj = cJSON_CreateObject();
        if (obj != NULL) {
            cJSON_AddStringToObject(obj, "kid", kid);
            cJSON_AddStringToObject(obj, "status", "disabled");
        }

        pki_admin_json(resp, 200, obj);
        cJSON_Delete(obj);
        return;
    }

    pki_fail(&resp->res, PKI_UNSUPPORTED, "use POST or GET on acme/eab, "
             "DELETE on acme/eab/<kid>");
}


/* ---- ACME accounts (kept by core/acme.c) --------------------------------- */

/* The body of POST acme/accounts/<id>: exactly {"status": "revoked"}. */
static int
pki_admin_acct_body(const pki_admin_conf_t *conf, const pki_admin_req_t *req,
    pki_result_t *res)
{
    int     ok;
    cJSON  *root, *item;

    root = pki_admin_json_body(conf, req, "{\"status\":\"revoked\"}", res);
    if (root == NULL) {
        return 0;
    }

    ok = 0;

    cJSON_ArrayForEach(item, root) {
        if (item->string == NULL || strcmp(item->string, "status") != 0) {
            pki_fail(res, PKI_MALFORMED, "unknown member \"%.32s\": only "
                     "\"status\" may be set", item->string != NULL
                                                 ? item->string : "");
            goto done;
        }
    }

    item = cJSON_GetObjectItemCaseSensitive(root, "status");
    if (item == NULL || cJSON_GetArraySize(root) != 1) {
        pki_fail(res, PKI_MALFORMED, "\"status\" is required, once");
        goto done;
    }

    if (!cJSON_IsString(item) || strcmp(item->valuestring, "revoked") != 0) {
        pki_fail(res, PKI_MALFORMED, "the only change allowed is "
                 "{\"status\":\"revoked\"}");
        goto done;
    }

    ok = 1;

done:

    cJSON_Delete(root);

    return ok;
}


static void
pki_admin_acme_account(const pki_admin_conf_t *conf,
    const pki_admin_req_t *req, const char *method, const char *id,
    pki_admin_resp_t *resp)
{
    int           changed;
    char         *json;
    cJSON        *obj;
    const char   *why;
    pki_event_t   ev;
    pki_status_t  rc;
    pki_result_t  ares;

    json = NULL;

    if (id == NULL) {
        /* no resource of its own: not a 405 with nothing to Allow */
        pki_fail(&resp->res, PKI_NOT_FOUND, "no such endpoint: use GET or "
                 "POST on acme/accounts/<id>");
        return;
    }

    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) {
        rc = pki_acme_account_get(conf->redis, id, &json, &resp->res);

    } else if (strcmp(method, "POST") == 0) {
        if (!pki_admin_acct_body(conf, req, &resp->res)) {
            return;
        }

        /* audited as every admin action: not without the log (as a
         * certificate's revocation) */
        if (!pki_int_audit_ready(&why)) {
            pki_fail(&resp->res, PKI_UNAVAILABLE, "transaction log "
                     "unavailable");
            pki_log(&resp->res, "transaction log: %s", why);
            return;
        }

        rc = pki_acme_account_revoke(conf->redis, conf->acme_state,
                                     conf->nacme_state, id, &changed, &json,
                                     &resp->res);

        /* changed: the durable account is revoked, also when an ACME
         * state store could not be told after it (PKI_UNAVAILABLE, to be
         * retried); the retry finds it revoked already and changes
         * nothing, so this is the revocation's only entry */
        if (changed) {
            pki_log(&resp->res, "%sacme account %s revoked by admin "
                    "\"%s\"", rc != PKI_OK && resp->res.log[0] != '\0'
                    ? "; " : "", id, req->identity);

            /* the transaction log, as admin actions are audited */
            memset(&ev, 0, sizeof(ev));
            ev.type = PKI_EV_REQUEST;
            ev.status = PKI_OK;
            ev.protocol = "admin";
            ev.operation = "acme-account-revoke";
            ev.requester = req->identity;
            ev.client = req->client;
            ev.subject = id;
            ev.reason = "acme account revoked by admin";

            pki_result_init(&ares);
            if (pki_event_emit(&ev, 1, &ares) != PKI_OK) {
                /* the account stays marked: a retry writes the entry */
                pki_log(&resp->res, "; transaction log: %s %s", ares.detail,
                        ares.log);

            } else {
                pki_int_acme_account_logged(conf->redis, id, &resp->res);
            }
        }

    } else {
        pki_fail(&resp->res, PKI_UNSUPPORTED, "use GET or POST on "
                 "acme/accounts/<id>");
        return;
    }

    if (rc != PKI_OK) {
        free(json);
        return;
    }

    obj = cJSON_Parse(json);
    free(json);

    if (obj == NULL) {
        pki_fail(&resp->res, PKI_INTERNAL, "out of memory");
        return;
    }

    pki_admin_json(resp, 200, obj);
    cJSON_Delete(obj);
}


/* ---- GET scep/pending (kept by core/scep.c) ----------------------------- */

static void
pki_admin_scep_pending(const pki_admin_conf_t *conf,
    const pki_admin_req_t *req, pki_admin_resp_t *resp)
{
    int      rc;
    char     cursor[96];
    cJSON   *obj;
    size_t   limit;

    limit = PKI_ADMIN_LIMIT_DEF;

    /* the cursor's form is checked by scep.c */
    if (!pki_admin_page(req, resp, &limit, cursor, sizeof(cursor), &rc)) {
        return;
    }

    if (pki_int_scep_pending(conf->redis, rc ? cursor : NULL, limit,
                             &obj, &resp->res)
        == PKI_OK)
    {
        pki_admin_json(resp, 200, obj);
    }

    cJSON_Delete(obj);
}


/* ---- dispatch ----------------------------------------------------------- */

/* The methods an endpoint takes, for the Allow header of a 405 (RFC 9110
 * 15.5.6); "" for a path that takes none. */
static const char *
pki_admin_allow(const char *path)
{
    if (strcmp(path, "revoke") == 0 || strcmp(path, "scep/challenges") == 0
        || strcmp(path, "scep/approve") == 0
        || strcmp(path, "scep/reject") == 0)
    {
        return "POST";
    }

    if (strcmp(path, "certificates") == 0
        || strncmp(path, "certificates/", 13) == 0
        || strcmp(path, "scep/pending") == 0)
    {
        return "GET, HEAD";
    }

    if (strcmp(path, "acme/eab") == 0 || strcmp(path, "acme/eab/") == 0) {
        return "GET, HEAD, POST";
    }

    if (strncmp(path, "acme/eab/", 9) == 0) {
        return "DELETE";
    }

    if (strncmp(path, "acme/accounts/", 14) == 0 && path[14] != '\0') {
        return "GET, HEAD, POST";
    }

    return "";
}


PKI_API void
pki_admin_handle(const pki_admin_conf_t *conf, const pki_admin_req_t *req,
    pki_admin_resp_t *resp)
{
    char         path[PKI_ADMIN_PATH_MAX];
    const char  *method;
    int          get;

    memset(resp, 0, sizeof(*resp));
    pki_result_init(&resp->res);
    path[0] = '\0';

    if (conf == NULL || req == NULL || conf->redis == NULL) {
        pki_fail(&resp->res, PKI_INTERNAL, "admin API not configured");
        goto failed;
    }

    if (req->identity == NULL || req->identity[0] == '\0') {
        pki_fail(&resp->res, PKI_FORBIDDEN, "no authenticated identity: "
                 "protect the admin location with auth_basic");
        goto failed;
    }

    method = req->method != NULL ? req->method : "";

    if (req->path_len >= sizeof(path)
        || (req->path_len > 0 && req->path == NULL)
        || (req->path_len > 0 && memchr(req->path, '\0', req->path_len)))
    {
        pki_fail(&resp->res, PKI_NOT_FOUND, "no such endpoint");
        goto failed;
    }

    if (req->query_len > PKI_ADMIN_QUERY_MAX) {
        /* RFC 9110 15.5.15: 414 URI Too Long, not 413 */
        pki_fail(&resp->res, PKI_TOO_LARGE, "query string too long");
        pki_admin_error(resp);
        if (resp->http_status == 413) {
            resp->http_status = 414;
        }
        return;
    }

    if (req->path_len > 0) {
        memcpy(path, req->path, req->path_len);
    }
    path[req->path_len] = '\0';

    get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

    if (strcmp(path, "revoke") == 0) {
        if (strcmp(method, "POST") != 0) {
            pki_fail(&resp->res, PKI_UNSUPPORTED, "use POST");
            goto failed;
        }
        pki_admin_revoke(conf, req, resp);

    } else if (strcmp(path, "certificates") == 0
               || strcmp(path, "certificates/") == 0)
    {
        if (!get) {
            pki_fail(&resp->res, PKI_UNSUPPORTED, "use GET");
            goto failed;
        }
        pki_admin_list(conf, req, resp);

    } else if (strncmp(path, "certificates/", 13) == 0
               && strchr(path + 13, '/') == NULL)
    {
        if (!get) {
            pki_fail(&resp->res, PKI_UNSUPPORTED, "use GET");
            goto failed;
        }
        pki_admin_get(conf, req, path + 13, resp);

    } else if (strcmp(path, "acme/eab") == 0
               || strcmp(path, "acme/eab/") == 0)
    {
        pki_admin_acme_eab(conf, req, method, NULL, resp);

    } else if (strncmp(path, "acme/eab/", 9) == 0
               && strchr(path + 9, '/') == NULL)
    {
        pki_admin_acme_eab(conf, req, method, path + 9, resp);

    } else if (strcmp(path, "acme/accounts") == 0
               || strcmp(path, "acme/accounts/") == 0)
    {
        pki_admin_acme_account(conf, req, method, NULL, resp);

    } else if (strncmp(path, "acme/accounts/", 14) == 0
               && strchr(path + 14, '/') == NULL)
    {
        pki_admin_acme_account(conf, req, method, path + 14, resp);

    } else if (strcmp(path, "scep/pending") == 0) {
        /* SCEP requests waiting for manual approval (scep.c) */
        if (!get) {
            pki_fail(&resp->res, PKI_UNSUPPORTED, "use GET");
            goto failed;
        }
        pki_admin_scep_pending(conf, req, resp);

    } else if (strncmp(path, "scep/", 5) == 0) {
        /* SCEP one-time challenges and manual approval (scep.c) */
        cJSON  *obj = NULL;
        int     status = 0;

        /* its changes are audited as this identity (pki_int_admin_audit) */
        pki_event_set_actor("admin", req->identity, req->client);

        if (pki_int_scep_admin(conf->redis, conf->cas, conf->ncas, method,
                               path + 5, req->body, req->body_len,
                               req->identity, &status, &obj, &resp->made,
                               &resp->res)
            == PKI_OK)
        {
            if (strcmp(path + 5, "challenges") == 0) {
                pki_admin_json_secret(resp, status, obj);
            } else {
                pki_admin_json(resp, status, obj);
            }
        }

        pki_event_set_actor(NULL, NULL, NULL);

        cJSON_Delete(obj);

        if (resp->made.kind != PKI_ADMIN_MADE_NONE && resp->body == NULL) {
            /* a challenge made and audited, its answer not built: nobody
             * was shown it, so it is taken back */
            pki_admin_withdraw_unsent(conf, req, resp);
        }

    } else {
        pki_fail(&resp->res, PKI_NOT_FOUND, "no such endpoint");
    }

    if (resp->body != NULL) {
        return;
    }

    if (resp->res.status == PKI_OK) {
        pki_fail(&resp->res, PKI_INTERNAL, "no answer");
    }

failed:

    if (resp->res.status == PKI_UNSUPPORTED) {
        resp->allow = pki_admin_allow(path);
    }

    pki_admin_error(resp);
}


PKI_API void
pki_admin_resp_free(pki_admin_resp_t *resp)
{
    if (resp != NULL) {
        if (resp->body != NULL) {
            /* a new EAB key's answer holds its HMAC key */
            OPENSSL_cleanse(resp->body, resp->body_len);
        }
        free(resp->body);
        resp->body = NULL;
        resp->body_len = 0;
    }
}
