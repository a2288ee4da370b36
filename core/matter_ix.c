/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * One DAC per device key: the per-PAI index of the device keys a PAI
 * certified ("<ns>{ca:PAI}:matterdac:<hex SHA-256 of the SPKI DER>"),
 * shared by the Matter batch (matter_api.c, which describes the index)
 * and EST enrollments under a Matter DAC template (est.c): the claim and
 * release scripts, the entry's key, and the check of the DAC an entry
 * names ("the key already has a DAC"); for EST, the claim of one key.
 */

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "audit_int.h"
#include "issue_int.h"
#include "redis_int.h"


/* KEYS: the index keys; ARGV[1] the claim, ARGV[2] its TTL, ARGV[3] the
 * prefix of record keys.  {"ok", s1, ..., sn}: si the serial of key i's
 * good DAC, "" when claimed; {"busy", i}: another batch's claim, or a
 * pending record (another batch signs its DAC);
 * {"revoked", i, serial}: its DAC is revoked for a reason that bars the
 * key (keyCompromise, a hold that may be released, privilegeWithdrawn,
 * unspecified, ...); {"bad", i}: a value of no known form.  A DAC
 * withdrawn, or revoked affiliationChanged, superseded or
 * cessationOfOperation (what the error log asks of the operator for a
 * failed batch's serials it could not withdraw) leaves the key free. */
const char  pki_int_lua_dac_claim[] =
    "local c = ARGV[1] "
    "local out = {'ok'} "
    "for i = 1, #KEYS do "
    "  local v = redis.call('GET', KEYS[i]) "
    "  local s = '' "
    "  if v and v ~= c then "
    "    if string.sub(v, 1, 2) == 's:' then "
    "      local h = redis.call('HMGET', ARGV[3] .. string.sub(v, 3), "
    "                           'status', 'withdrawn', 'reason') "
    "      if h[1] == 'good' then s = string.sub(v, 3) "
    "      elseif h[1] == 'pending' then return {'busy', tostring(i)} "
    "      elseif h[1] == 'revoked' and h[2] ~= '1' and h[3] ~= '3' "
    "             and h[3] ~= '4' and h[3] ~= '5' then "
    "        return {'revoked', tostring(i), string.sub(v, 3)} "
    "      end "
    "    elseif string.sub(v, 1, 2) == 'c:' then "
    "      return {'busy', tostring(i)} "
    "    else "
    "      return {'bad', tostring(i)} "
    "    end "
    "  end "
    "  out[i + 1] = s "
    "end "
    "for i = 1, #KEYS do "
    "  if out[i + 1] == '' then "
    "    redis.call('SET', KEYS[i], c, 'EX', ARGV[2]) "
    "  end "
    "end "
    "return out";

/* KEYS: index keys; ARGV[1] the claim: those still claimed by it deleted */
const char  pki_int_lua_dac_release[] =
    "local n = 0 "
    "for i = 1, #KEYS do "
    "  if redis.call('GET', KEYS[i]) == ARGV[1] then "
    "    redis.call('DEL', KEYS[i]) n = n + 1 "
    "  end "
    "end "
    "return n";


int
pki_int_dac_new_claim(char claim[PKI_INT_DAC_CLAIM_LEN])
{
    size_t         i;
    unsigned char  rnd[16];

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        ERR_clear_error();
        return 0;
    }

    claim[0] = 'c';
    claim[1] = ':';
    for (i = 0; i < sizeof(rnd); i++) {
        snprintf(claim + 2 + 2 * i, 3, "%02x", rnd[i]);
    }

    return 1;
}


int
pki_int_dac_ix_key(pki_redis_t *r, const char *ca,
    const unsigned char spki[32], char *buf, size_t size)
{
    int  len, i;

    len = snprintf(buf, size, "%s{ca:%s}:matterdac:", pki_redis_ns(r), ca);
    if (len <= 0 || (size_t) len + 65 > size) {
        return 0;
    }

    for (i = 0; i < 32; i++) {
        snprintf(buf + len + 2 * i, 3, "%02x", spki[i]);
    }

    return 1;
}


int
pki_int_dac_spki(EVP_PKEY *pub, unsigned char spki[32])
{
    int             len, ok;
    unsigned char  *der;

    der = NULL;
    len = pub != NULL ? i2d_PUBKEY(pub, &der) : -1;
    ok = len > 0 && EVP_Digest(der, (size_t) len, spki, NULL, EVP_sha256(),
                               NULL) == 1;
    OPENSSL_free(der);
    ERR_clear_error();

    return ok;
}


/* Whether a DAC's subject is the one a request asks for: the request's
 * attributes (the template's rules applied to its CSR), compared as
 * X509_NAME_cmp() does, with those the issuance adds (a VID or PID the
 * template fixes) left out of the DAC's.  1 same, 0 not (or no memory). */
static int
pki_dac_subject_same(const X509_NAME *want, const X509_NAME *got)
{
    int               i, j, same;
    X509_NAME        *kept;
    X509_NAME_ENTRY  *e;

    kept = X509_NAME_new();
    if (kept == NULL) {
        return 0;
    }

    for (i = 0; i < X509_NAME_entry_count(got); i++) {
        e = X509_NAME_get_entry(got, i);

        for (j = 0; j < X509_NAME_entry_count(want); j++) {
            if (OBJ_cmp(X509_NAME_ENTRY_get_object(
                            X509_NAME_get_entry(want, j)),
                        X509_NAME_ENTRY_get_object(e)) == 0)
            {
                break;
            }
        }

        if (j < X509_NAME_entry_count(want)
            && X509_NAME_add_entry(kept, e, -1, 0) != 1)
        {
            X509_NAME_free(kept);
            return 0;
        }
    }

    same = X509_NAME_cmp(kept, want) == 0;
    X509_NAME_free(kept);

    return same;
}


pki_status_t
pki_int_dac_check(const pki_ca_t *ca, const pki_template_t *t,
    const pki_record_t *rec, const unsigned char spki[32],
    const X509_NAME *subject, const char *what, X509 **out, char *msg,
    size_t size)
{
    int                   len;
    X509                 *x;
    unsigned char        *der, md[32];
    const unsigned char  *p;

    *out = NULL;

    if (rec->status != PKI_CERT_GOOD || rec->der == NULL) {
        snprintf(msg, size, "%s: its key's DAC %s was revoked meanwhile; "
                 "retry", what, rec->serial);
        return PKI_CONFLICT;
    }

    /* (a record's notAfter as read; a DAC of a finite validity that has
     * passed is not handed out as the key's answer, nor a second made) */
    if (rec->not_after != 0 && rec->not_after < time(NULL)) {
        snprintf(msg, size, "%s: its key's DAC %s has expired: one DAC per "
                 "device key", what, rec->serial);
        return PKI_POLICY;
    }

    if (strcmp(rec->template_name, pki_template_name(t)) != 0) {
        snprintf(msg, size, "%s: its key has the DAC %s, of template "
                 "\"%.64s\": one DAC per device key", what, rec->serial,
                 rec->template_name);
        return PKI_POLICY;
    }

    p = rec->der;
    x = d2i_X509(NULL, &p, (long) rec->der_len);
    der = NULL;
    len = x != NULL ? i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der) : -1;

    if (x == NULL || p != rec->der + rec->der_len || len <= 0
        || EVP_Digest(der, (size_t) len, md, NULL, EVP_sha256(), NULL) != 1
        || memcmp(md, spki, 32) != 0
        || !pki_ca_issued(ca, x))
    {
        OPENSSL_free(der);
        X509_free(x);
        ERR_clear_error();
        snprintf(msg, size, "%s: the DAC %s the index names for its key is "
                 "not that key's", what, rec->serial);
        return PKI_INTERNAL;
    }

    OPENSSL_free(der);

    /* the subject this request would be issued (the template's rules
     * applied to its CSR): a station that corrected a subject must not
     * install the DAC of the old one as if it were its answer */
    if (subject != NULL
        && !pki_dac_subject_same(subject, X509_get_subject_name(x)))
    {
        X509_free(x);
        snprintf(msg, size, "%s: its key has the DAC %s, of another "
                 "subject: one DAC per device key (revoke it, "
                 "superseded, for a new one)", what, rec->serial);
        return PKI_POLICY;
    }

    *out = x;

    return PKI_OK;
}


/*
 * The claim of one key (EST): the claim script over its entry, then the
 * DAC it names checked.  PKI_OK with *known the key's DAC, or with
 * d->claimed 1 (the key is this caller's to issue, with
 * pki_int_issue_index(d->claim, d->key)); else the status, res's detail
 * the reason (d->claimed says whether the claim script was sent: then
 * pki_int_dac_one_release()).
 */
pki_status_t
pki_int_dac_one_claim(pki_redis_t *r, const pki_ca_t *ca,
    const pki_template_t *t, EVP_PKEY *pub, const X509_NAME *subject,
    pki_int_dac_one_t *d, X509 **known, pki_result_t *res)
{
    int             sent, len;
    char            prefix[PKI_INT_DAC_KEY_LEN], serial[41];
    char            msg[PKI_DETAIL_LEN];
    const char     *argv[7];
    size_t          lens[7], i;
    redisReply     *v;
    pki_status_t    st;
    pki_record_t    rec;
    unsigned char   spki[32];

    *known = NULL;
    d->claimed = 0;

    if (!pki_int_dac_spki(pub, spki)) {
        return pki_fail(res, PKI_INTERNAL, "matter: the request's public "
                        "key does not encode");
    }

    len = snprintf(prefix, sizeof(prefix), "%s{ca:%s}:cert:",
                   pki_redis_ns(r), pki_ca_name(ca));

    if (!pki_int_dac_ix_key(r, pki_ca_name(ca), spki, d->key, sizeof(d->key))
        || len <= 0 || (size_t) len >= sizeof(prefix))
    {
        return pki_fail(res, PKI_INTERNAL, "matter: index key too long");
    }

    if (!pki_int_dac_new_claim(d->claim)) {
        return pki_fail(res, PKI_INTERNAL, "cannot make a claim");
    }

    argv[0] = "EVAL";
    argv[1] = pki_int_lua_dac_claim;
    argv[2] = "1";
    argv[3] = d->key;
    argv[4] = d->claim;
    argv[5] = PKI_INT_DAC_CLAIM_TTL;
    argv[6] = prefix;

    for (i = 0; i < 7; i++) {
        lens[i] = strlen(argv[i]);
    }

    sent = 0;
    v = pki_int_redis_command_sent(r, 7, argv, lens, &sent, res);
    if (v == NULL) {
        /* an answer lost: the claim may stand, for the release */
        d->claimed = sent;
        pki_log(res, "%smatter: the claim of the device key failed",
                res->log[0] ? "; " : "");
        return PKI_UNAVAILABLE;
    }

    d->claimed = 1;
    st = PKI_OK;
    serial[0] = '\0';

    if (v->type != REDIS_REPLY_ARRAY || v->elements < 2
        || v->element[0]->type != REDIS_REPLY_STRING
        || v->element[1]->type != REDIS_REPLY_STRING)
    {
        st = PKI_UNAVAILABLE;

    } else if (strcmp(v->element[0]->str, "ok") == 0) {
        if (v->elements != 2
            || (v->element[1]->len != 0
                && !pki_serial_normalize(v->element[1]->str, serial)))
        {
            st = PKI_UNAVAILABLE;
        }

    } else if (strcmp(v->element[0]->str, "busy") == 0) {
        st = pki_fail(res, PKI_CONFLICT, "another issuance (a Matter batch "
                      "or an enrollment) is making the DAC of this key; "
                      "retry");

    } else if (strcmp(v->element[0]->str, "revoked") == 0
               && v->elements == 3
               && v->element[2]->type == REDIS_REPLY_STRING)
    {
        st = pki_fail(res, PKI_POLICY, "the key's DAC %.40s is revoked: one "
                      "DAC per device key", v->element[2]->str);

    } else {
        st = pki_fail(res, PKI_INTERNAL, "matter: the index entry of the "
                      "request's key is not ours (%s)", d->key);
    }

    freeReplyObject(v);

    if (st == PKI_UNAVAILABLE) {
        pki_int_redis_drop(r);
        pki_fail(res, PKI_UNAVAILABLE, "certificate store unavailable");
        pki_log(res, "%smatter: unexpected reply to the claim of the "
                "device key", res->log[0] ? "; " : "");
    }

    if (st != PKI_OK || serial[0] == '\0') {
        return st;                      /* claimed, or refused */
    }

    /* the key has a good DAC (not claimed): it is checked */
    memset(&rec, 0, sizeof(rec));
    st = pki_record_get(r, pki_ca_name(ca), serial, &rec, res);

    if (st == PKI_NOT_FOUND) {
        st = pki_fail(res, PKI_CONFLICT, "the key's DAC %s is gone "
                      "meanwhile; retry", serial);

    } else if (st == PKI_OK) {
        st = pki_int_dac_check(ca, t, &rec, spki, subject, "the request",
                               known, msg, sizeof(msg));
        if (st != PKI_OK) {
            pki_fail(res, st, "%s", msg);
        }
    }

    pki_record_clear(&rec);

    return st;
}


void
pki_int_dac_one_release(pki_redis_t *r, pki_int_dac_one_t *d,
    pki_result_t *res)
{
    int            sent;
    size_t         i, lens[5];
    const char    *argv[5];
    redisReply    *v;
    pki_result_t   rr;

    if (!d->claimed) {
        return;
    }

    d->claimed = 0;

    argv[0] = "EVAL";
    argv[1] = pki_int_lua_dac_release;
    argv[2] = "1";
    argv[3] = d->key;
    argv[4] = d->claim;

    for (i = 0; i < 5; i++) {
        lens[i] = strlen(argv[i]);
    }

    pki_result_init(&rr);
    sent = 0;

    v = pki_int_redis_command_sent(r, 5, argv, lens, &sent, &rr);
    if (v == NULL) {
        pki_log(res, "%sthe claim on the device key was not released (it "
                "expires in " PKI_INT_DAC_CLAIM_TTL " s): %s",
                res->log[0] ? "; " : "", rr.log[0] ? rr.log : rr.detail);
    }

    freeReplyObject(v);
}
