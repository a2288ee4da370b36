/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Matter HTTP engine (JSON in, JSON out), like pki_est_handle:
 *
 *   POST dac/batch  {"csrs": ["<b64 DER PKCS#10>", ...]}  (1..1000)
 *                   {"count": N}    server-generated P-256 keys (1..1000)
 *       -> {"certificates": ["<b64 DER>", ...]} in the same order
 *          (+ "keys": ["<b64 PKCS#8>", ...] for "count")
 *   POST noc        {"csr", "node_id", "fabric_id", "cats"}
 *       -> {"noc", "noc_tlv", "icac", "icac_tlv", "rcac", "rcac_tlv"}
 *
 * Every certificate goes through pki_issue() or pki_issue_batch() (serial
 * reserved in Redis,
 * intent recorded, signature verified, record committed) under a Matter
 * template, so the profile rules hold.  A batch is checked whole before
 * anything is signed; then it is issued with pki_issue_batch: serials and
 * intents reserved in one Redis round trip, signed by conf->threads threads
 * (the key is thread safe), records committed in one round trip.  Across
 * batches one DAC per device key holds through the PAI's index of the
 * keys it certified, written in the scripts that claim the keys and
 * reserve their serials: a key that has a DAC is answered with it (a
 * retry after a lost answer, also after a worker died once the batch was
 * committed), never signed again.
 */

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "acme_int.h"
#include "audit_int.h"
#include "matter_int.h"
#include "redis_int.h"


#define PKI_MATTER_BATCH_BODY   (2 * 1024 * 1024)
#define PKI_MATTER_NOC_BODY     16384

/* the JSON values a body may hold (counted before it is parsed): the
 * object, "csrs" and 1000 CSRs, or the few members of a NOC request, with
 * room for members a later version may add */
#define PKI_MATTER_BATCH_VALUES (PKI_MATTER_MAX_BATCH + 64)
#define PKI_MATTER_NOC_VALUES   64
#define PKI_MATTER_MAX_THREADS  64
#define PKI_MATTER_JSON         "application/json"
#define PKI_MATTER_IDX_KEY      PKI_INT_DAC_KEY_LEN


typedef struct {
    const cJSON     *src;          /* the CSR string, NULL: keygen */
    X509_REQ        *csr;
    EVP_PKEY        *key;          /* server keygen */
    pki_request_t    req;
    X509            *cert;
    pki_result_t     res;
    pki_status_t     rc;
    int              stopped;        /* not tried: another item refused */
    char             committed[41];  /* its record's serial, once committed */
    unsigned char    spki[32];       /* SHA-256 of its key's SPKI DER */
    int              has_spki;
    int              known;          /* cert: the DAC its key already has */
} pki_item_t;

typedef struct {
    const pki_matter_conf_t  *conf;
    const pki_matter_req_t   *req;
    pki_item_t               *items;
    size_t                    from;
    size_t                    to;
    int                       phase;     /* 0: check */
} pki_slice_t;

/* a batch's entries in the PAI's index of device keys (see pki_dac_claim) */
typedef struct {
    char     claim[2 + 32 + 1];      /* "c:" and 16 random octets in hex */
    char    *keys;                   /* n keys of PKI_MATTER_IDX_KEY */
    int      claimed;                /* the claim script was sent */
} pki_dac_index_t;


/* ---- output -------------------------------------------------------------------- */

typedef struct {
    char    *p;
    size_t   len;
    size_t   cap;
    int      err;
} pki_sb_t;


static void
sb_put(pki_sb_t *b, const char *s, size_t n)
{
    char    *np;
    size_t   cap;

    if (b->err) {
        return;
    }

    if (b->len + n + 1 > b->cap) {
        cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }

        /* not realloc(): the answer of a keygen batch holds private keys,
         * and realloc() may move it and free the old block unwiped */
        np = malloc(cap);
        if (np == NULL) {
            b->err = 1;
            return;
        }
        if (b->p != NULL) {
            memcpy(np, b->p, b->len);
            OPENSSL_cleanse(b->p, b->cap);
            free(b->p);
        }
        b->p = np;
        b->cap = cap;
    }

    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}


static void
sb_str(pki_sb_t *b, const char *s)
{
    sb_put(b, s, strlen(s));
}


static void
sb_b64(pki_sb_t *b, const unsigned char *d, size_t n)
{
    char    *s;
    size_t   len;

    s = pki_base64_encode(d, n, 0, &len);
    if (s == NULL) {
        b->err = 1;
        return;
    }

    sb_put(b, "\"", 1);
    sb_put(b, s, len);
    sb_put(b, "\"", 1);

    /* it may be a private key (PKCS#8) */
    OPENSSL_cleanse(s, len);
    free(s);
}


static int
sb_cert(pki_sb_t *b, X509 *x, int tlv, pki_result_t *res)
{
    int             n;
    size_t          tlen;
    unsigned char  *der, *t;

    der = NULL;
    n = i2d_X509(x, &der);
    if (n <= 0) {
        pki_fail(res, PKI_INTERNAL, "i2d_X509() failed");
        return 0;
    }

    if (!tlv) {
        sb_b64(b, der, (size_t) n);
        OPENSSL_free(der);
        return 1;
    }

    if (pki_matter_der_to_tlv(der, (size_t) n, &t, &tlen, res) != PKI_OK) {
        OPENSSL_free(der);
        return 0;
    }

    sb_b64(b, t, tlen);
    free(t);
    OPENSSL_free(der);

    return 1;
}


static void
pki_json_error(pki_matter_resp_t *resp, int status, const char *msg)
{
    cJSON  *o;
    char   *s;

    resp->http_status = status;
    resp->content_type = PKI_MATTER_JSON;

    o = cJSON_CreateObject();
    if (o == NULL || cJSON_AddStringToObject(o, "error", msg) == NULL) {
        cJSON_Delete(o);
        return;
    }

    s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (s) {
        resp->body = (unsigned char *) s;
        resp->body_len = strlen(s);
    }
}


static void
pki_fail_resp(pki_matter_resp_t *resp, pki_status_t st, const char *detail)
{
    int  code;

    switch (st) {
    case PKI_MALFORMED:
    case PKI_POLICY:
    case PKI_BAD_SIGNATURE:
        code = 400;
        break;
    case PKI_UNAUTHORIZED:
    case PKI_FORBIDDEN:
        code = 403;
        break;
    case PKI_TOO_LARGE:
        code = 413;
        break;
    case PKI_UNSUPPORTED:
        code = 415;
        break;
    case PKI_UNAVAILABLE:
    case PKI_CONFLICT:
        code = 503;
        resp->retry_after = 5;
        break;
    default:
        code = 500;
        detail = "internal error";
    }

    pki_json_error(resp, code, detail);
}


/* ---- DAC batch ------------------------------------------------------------------- */

static void
pki_item_check(const pki_matter_conf_t *conf, const cJSON *csr,
    pki_item_t *it)
{
    int             signid;
    size_t          len;
    EVP_PKEY       *pk;
    unsigned char  *der;
    X509_NAME      *name, *subject;

    if (csr == NULL) {
        /* server keygen: the request of a CSR without a subject, so that
         * the template's CN rule applies as it does to a CSR's (a fixed
         * CN, else "Matter DAC"; "required" finds none) */
        it->key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        name = X509_NAME_new();
        if (it->key == NULL || name == NULL) {
            X509_NAME_free(name);
            it->rc = pki_fail(&it->res, PKI_INTERNAL, "key generation "
                              "failed");
            return;
        }
        it->rc = pki_int_matter_dac_request(conf->tmpl, it->key,
                                            NID_ecdsa_with_SHA256, name,
                                            &it->req, &it->res);
        X509_NAME_free(name);
        return;
    }

    if (!cJSON_IsString(csr)) {
        it->rc = pki_fail(&it->res, PKI_MALFORMED, "not a base64 string");
        return;
    }

    it->rc = pki_base64_decode((const unsigned char *) csr->valuestring,
                               strlen(csr->valuestring), &der, &len,
                               &it->res);
    if (it->rc != PKI_OK) {
        return;
    }

    /* the lean reader takes what a DAC needs without an X509_REQ; what it
     * does not handle goes through pki_csr_parse (same checks, same
     * refusals) */
    if (pki_int_csr_parts(der, len, &pk, &subject, &signid, &it->rc,
                          &it->res))
    {
        free(der);
        if (it->rc == PKI_OK) {
            it->rc = pki_int_matter_dac_request(conf->tmpl, pk, signid,
                                                subject, &it->req, &it->res);
        }
        EVP_PKEY_free(pk);
        X509_NAME_free(subject);
        return;
    }

    it->rc = pki_csr_parse(der, len, &it->csr, &it->res);
    free(der);
    if (it->rc != PKI_OK) {
        return;
    }

    it->rc = pki_request_from_csr(conf->tmpl, it->csr, &it->req, &it->res);
}


static void *
pki_slice_run(void *arg)
{
    size_t             i;
    pki_slice_t       *s = arg;
    pki_item_t        *it;

    for (i = s->from; i < s->to; i++) {
        it = &s->items[i];

        pki_result_init(&it->res);
        pki_item_check(s->conf, it->src, it);
    }

    return NULL;
}


/* Runs a phase over the items, split across threads (the caller's thread
 * takes the first slice). */
static void
pki_run_phase(const pki_matter_conf_t *conf, const pki_matter_req_t *req,
    pki_item_t *items, size_t n, int phase)
{
    int           t, nt, started[PKI_MATTER_MAX_THREADS];
    size_t        per;
    pthread_t     tid[PKI_MATTER_MAX_THREADS];
    pki_slice_t   sl[PKI_MATTER_MAX_THREADS];

    nt = conf->threads > 0 ? conf->threads : 2;
    if (nt > PKI_MATTER_MAX_THREADS) {
        nt = PKI_MATTER_MAX_THREADS;
    }
    if ((size_t) nt > n) {
        nt = (int) n;
    }
    if (n < 8) {
        nt = 1;
    }

    per = (n + (size_t) nt - 1) / (size_t) nt;

    for (t = 0; t < nt; t++) {
        sl[t].conf = conf;
        sl[t].req = req;
        sl[t].items = items;
        sl[t].from = per * (size_t) t;
        sl[t].to = per * (size_t) (t + 1) > n ? n : per * (size_t) (t + 1);
        sl[t].phase = phase;
        started[t] = 0;
    }

    for (t = 1; t < nt; t++) {
        started[t] = pthread_create(&tid[t], NULL, pki_slice_run, &sl[t])
                     == 0;
    }

    pki_slice_run(&sl[0]);

    for (t = 1; t < nt; t++) {
        if (started[t]) {
            pthread_join(tid[t], NULL);
        } else {
            pki_slice_run(&sl[t]);
        }
    }
}


static const char *
pki_dac_key(pki_dac_index_t *ix, size_t i)
{
    return ix->keys + i * PKI_MATTER_IDX_KEY;
}


/* Issues every checked item with pki_issue_batch, but those answered with
 * the DAC their key already has (known); each item gets its own status
 * and result, as the per-item pki_issue did. */
static void
pki_issue_all(const pki_matter_conf_t *conf, const pki_matter_req_t *req,
    pki_item_t *items, size_t n, pki_dac_index_t *ix)
{
    int                  nt;
    size_t               i, m, *map;
    const char         **keys;
    pki_result_t         res;
    pki_issue_ctx_t      ictx;
    pki_issue_item_t    *bi;
    pki_int_batch_ix_t   bix;

    bi = calloc(n, sizeof(pki_issue_item_t));
    map = calloc(n, sizeof(size_t));
    keys = calloc(n, sizeof(char *));
    if (bi == NULL || map == NULL || keys == NULL) {
        free(bi);
        free(map);
        free(keys);
        for (i = 0; i < n; i++) {
            if (!items[i].known) {
                items[i].rc = pki_fail(&items[i].res, PKI_INTERNAL,
                                       "out of memory");
            }
        }
        return;
    }

    m = 0;
    for (i = 0; i < n; i++) {
        if (!items[i].known) {
            map[m] = i;
            keys[m] = ix->keys != NULL ? pki_dac_key(ix, i) : NULL;
            bi[m++].req = &items[i].req;
        }
    }

    if (m == 0) {
        free(bi);
        free(map);
        free(keys);
        return;
    }

    /* each key's index entry set to its serial by the script that
     * reserves it, while it holds this batch's claim */
    bix.claim = ix->claim;
    bix.keys = keys;

    ictx.protocol = "matter";
    ictx.requester = req->user;
    ictx.client = req->client;
    ictx.realm = NULL;
    ictx.committed = NULL;

    nt = conf->threads > 0 ? conf->threads : 2;
    if (nt > PKI_MATTER_MAX_THREADS) {
        nt = PKI_MATTER_MAX_THREADS;
    }
    if (m < 8) {
        nt = 1;
    }

    pki_result_init(&res);
    (void) pki_int_issue_batch(conf->ca, conf->tmpl, conf->redis, bi, m,
                               &ictx, ix->claimed ? &bix : NULL, nt, &res);

    for (i = 0; i < m; i++) {
        items[map[i]].cert = bi[i].cert;
        items[map[i]].stopped = bi[i].stopped;
        items[map[i]].rc = bi[i].status;
        items[map[i]].res = bi[i].res;
        memcpy(items[map[i]].committed, bi[i].committed,
               sizeof(items[map[i]].committed));
    }

    free(bi);
    free(map);
    free(keys);
}


/* Withdraws a certificate that was issued, its record committed good, and
 * that will not be delivered: whoever asked for it never gets it, and a
 * retry issues another.  As pki_issue withdraws one (revoked,
 * cessationOfOperation, marked withdrawn), also while the transaction log
 * takes nothing: often why it is not delivered (a batch whose entries
 * pushed the log's backlog past max_backlog), and a revocation that
 * waited for the log left it good in OCSP.  PKI_OK done; otherwise
 * logged in res, wres the status (PKI_UNAVAILABLE: Redis did not answer,
 * the revocation or the mark). */
static pki_status_t
pki_withdraw(const pki_matter_conf_t *conf, const char *hex,
    pki_result_t *wres, pki_result_t *res)
{
    int           marked;
    pki_status_t  st;

    pki_result_init(wres);

    st = pki_int_issue_withdraw_serial(conf->redis, pki_ca_name(conf->ca),
                                       hex, &marked, wres);

    if (st != PKI_OK) {
        pki_log(res, "%sissued serial %s could not be revoked: %s",
                res->log[0] ? "; " : "", hex, wres->detail);

    } else if (!marked) {
        pki_log(res, "%sissued serial %s revoked, not marked withdrawn",
                res->log[0] ? "; " : "", hex);
    }

    return st;
}


/*
 * A batch answers all or nothing: when an item failed after others were
 * issued (a check that only the signed certificate can make, Redis or the
 * key failing midway, the transaction log refusing their entries), those
 * are recorded, good, and would never reach the client, whose retry
 * issues its devices a second DAC each.  They are withdrawn before the
 * error is answered, and the log counts them.  (An item refused before
 * that stopped the batch before anything was reserved: nothing to
 * withdraw.)
 *
 * One round trip or two per item, so the cleanup stops at the first that
 * Redis leaves unanswered, tried twice (a stalled Redis held the thread two timeouts
 * per item: a 1000-DAC batch, over half an hour at the default 1 s, the
 * batch's abandons included) or at its deadline (pki_int_cleanup_deadline:
 * a Redis that answers each just in time).  The serials left are those of
 * certificates that may be good and are delivered to no one: listed in
 * resp->unsettled, which the server logs at error, for the operator to
 * revoke.
 */
static void
pki_batch_withdraw(const pki_matter_conf_t *conf, pki_item_t *items,
    size_t n, pki_matter_resp_t *resp)
{
    char          num[32], why[PKI_DETAIL_LEN];
    size_t        i, m, done, left;
    double        until;
    pki_sb_t      b, t;
    const char   *stop;
    pki_status_t  st;
    pki_result_t  wres, *res;

    if (conf->redis == NULL) {
        return;                     /* nothing recorded */
    }

    res = &resp->res;
    done = 0;
    left = 0;
    stop = NULL;
    why[0] = '\0';
    memset(&b, 0, sizeof(b));

    m = 0;
    for (i = 0; i < n; i++) {
        m += items[i].committed[0] != '\0';
    }

    until = pki_int_cleanup_deadline(conf->redis, m);

    /* every committed record, delivered to no one: those whose
     * certificate was dropped after the commit too */
    for (i = 0; i < n; i++) {
        if (items[i].committed[0] == '\0') {
            continue;
        }

        if (stop == NULL && pki_int_now() > until) {
            stop = "the cleanup ran out of time";
        }

        if (stop == NULL) {
            st = pki_withdraw(conf, items[i].committed, &wres, res);

            if (wres.status == PKI_UNAVAILABLE) {
                /* a node that cannot serve (READONLY after a failover)
                 * answers at once and drops the connection: once more, on
                 * a new one (a withdrawal that landed unanswered is then
                 * revoked already: PKI_CONFLICT) */
                st = pki_withdraw(conf, items[i].committed, &wres, res);
            }

            if (st == PKI_OK) {
                done++;
            }

            if (wres.status == PKI_UNAVAILABLE) {
                stop = "Redis did not answer one, twice";
            }

            if (st == PKI_OK || st == PKI_NOT_FOUND || st == PKI_CONFLICT) {
                /* withdrawn, revoked already, or nothing good to
                 * withdraw (a pending record: its commit did not land) */
                continue;
            }

            snprintf(why, sizeof(why), "%s", wres.detail);
        }

        sb_str(&b, " ");
        sb_str(&b, items[i].committed);
        left++;
    }

    if (done) {
        pki_log(res, "%s%zu certificate(s) the failed batch had issued "
                "withdrawn (revoked, cessationOfOperation)",
                res->log[0] ? "; " : "", done);
    }

    if (left == 0) {
        free(b.p);
        return;
    }

    if (stop == NULL) {
        stop = why[0] ? why : "the revocation failed";
    }

    pki_log(res, "%s%zu certificate(s) the failed batch had issued not "
            "withdrawn (%s): their serials follow, to revoke",
            res->log[0] ? "; " : "", left, stop);

    /* the list apart (a 1000-DAC batch's is 33 kB): resp->unsettled */
    memset(&t, 0, sizeof(t));
    snprintf(num, sizeof(num), "%zu", left);
    sb_str(&t, "CA \"");
    sb_str(&t, pki_ca_name(conf->ca));
    sb_str(&t, "\": ");
    sb_str(&t, num);
    sb_str(&t, " certificate(s) issued, maybe recorded good, delivered to "
           "no one and not withdrawn (");
    sb_str(&t, stop);

    if (n > 0 && items[0].src != NULL) {
        /* a batch of CSRs: each key's index entry names its DAC from
         * the reservation on, so a retry of the same CSRs gets it */
        sb_str(&t, "): each is indexed for its device key, and a retry "
               "of the same CSRs is answered with it: revoke, "
               "cessationOfOperation (admin API POST revoke), only those "
               "no station will send again, once Redis answers (404: it "
               "was never recorded, nothing to do); serials:");
    } else {
        sb_str(&t, "): revoke each, cessationOfOperation (admin API POST "
               "revoke), once Redis answers (404: it was never recorded, "
               "nothing to do); serials:");
    }
    sb_put(&t, b.p != NULL ? b.p : "", b.len);

    if (b.err) {
        sb_str(&t, " (out of memory: the list is cut short)");
    }

    free(b.p);

    if (t.err) {
        free(t.p);
        pki_log(res, "; out of memory: the serials cannot be listed");
        return;
    }

    free(resp->unsettled);
    resp->unsettled = t.p;
}


/* Each item's SHA-256 of its request's public key (SPKI DER); has_spki 0
 * when a key does not encode (the issuance refuses that one). */
static void
pki_batch_spki(pki_item_t *items, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        items[i].has_spki = pki_int_dac_spki(items[i].req.pubkey,
                                             items[i].spki);
    }
}


/* 1 when two items' requests hold the same public key (their SPKI DER),
 * *a < *b their places; 0 when none do. */
static int
pki_batch_dup_key(pki_item_t *items, size_t n, size_t *a, size_t *b)
{
    size_t  i, j;

    /* n is at most a batch's 1000 items: a pairwise look, 500k compares
     * of 32 octets, about a millisecond */
    for (i = 0; i < n; i++) {
        for (j = i + 1; items[i].has_spki && j < n; j++) {
            if (items[j].has_spki
                && memcmp(items[i].spki, items[j].spki, 32) == 0)
            {
                *a = i;
                *b = j;
                return 1;
            }
        }
    }

    return 0;
}


/* ---- one DAC per device key, across batches --------------------------------- */

/*
 * A per-PAI index of the device keys it certified: "<ns>{ca:PAI}:matterdac:
 * <hex SHA-256 of the SPKI DER>" holds "c:<token>" (with a TTL) while a
 * batch claims the key, then "s:<serial>" from the reservation of its
 * DAC's serial on.  So a factory station that retries a batch whose answer
 * it lost gets the DACs already issued, never a second DAC for a key, and
 * two batches with one key at once cannot both sign (the second answers
 * 503, Retry-After).
 *
 *  1. one script claims every key of the batch, all or nothing: a key
 *     whose DAC is recorded good is answered with it (no claim); one whose
 *     DAC is revoked (not withdrawn) is refused; one claimed by another
 *     batch, or whose entry names a pending record (another batch signs
 *     it), refuses the batch; the others are claimed, for
 *     PKI_MATTER_CLAIM_TTL seconds;
 *  2. the claimed keys are issued (pki_int_issue_batch): the script that
 *     reserves a key's serial sets its entry to "s:<serial>" while it
 *     holds this batch's claim (a claim lost or taken fails the batch
 *     before anything is signed), so the entry names the pending record,
 *     then, from the commit on, the DAC, with no later step to run: a
 *     worker that dies after the commit leaves its keys indexed, and a
 *     retry gets their DACs.
 * A batch that fails releases its claims (those still its own), its
 * abandoned reservations drop their entries, and it withdraws what it
 * committed (a withdrawn DAC does not count): the key can be issued at
 * once.  A worker that dies before its commit leaves claims or pending
 * records that expire (the key is busy until then, never for ever); an
 * entry naming a record that is gone or withdrawn does not count.
 *
 * EST under a DAC template follows the same rule for its one key, with
 * the same scripts and checks (matter_ix.c: pki_int_lua_dac_claim,
 * pki_int_lua_dac_release, pki_int_dac_check; est.c): its claim is set to
 * the serial by the single reservation's script (pki_int_issue_index), so
 * a batch finds an EST DAC as it finds its own, and EST a batch's.
 */

#define PKI_MATTER_CLAIM_TTL  PKI_INT_DAC_CLAIM_TTL


/* One EVAL of script over the index keys of the items that have one and
 * no DAC yet, with extra arguments; the reply, or NULL with res filled. */
static redisReply *
pki_dac_eval(const pki_matter_conf_t *conf, pki_dac_index_t *ix,
    pki_item_t *items, size_t n, const char *script, const char *ttl,
    const char *prefix, int *sent, pki_result_t *res)
{
    int           argc;
    char          nk[32];
    size_t        i, k, *lens;
    const char  **argv;
    redisReply   *v;

    argv = calloc(n + 8, sizeof(char *));
    lens = calloc(n + 8, sizeof(size_t));
    if (argv == NULL || lens == NULL) {
        free(argv);
        free(lens);
        pki_fail(res, PKI_INTERNAL, "out of memory");
        return NULL;
    }

    argc = 0;
    argv[argc++] = "EVAL";
    argv[argc++] = script;
    argv[argc++] = nk;

    k = 0;
    for (i = 0; i < n; i++) {
        if (!items[i].has_spki || items[i].known) {
            continue;
        }
        argv[argc++] = pki_dac_key(ix, i);
        k++;
    }

    snprintf(nk, sizeof(nk), "%zu", k);
    argv[argc++] = ix->claim;

    if (ttl != NULL) {
        argv[argc++] = ttl;
        argv[argc++] = prefix;
    }

    for (i = 0; i < (size_t) argc; i++) {
        lens[i] = strlen(argv[i]);
    }

    v = k == 0 ? NULL
               : pki_int_redis_command_sent(conf->redis, argc, argv, lens,
                                            sent, res);

    free(argv);
    free(lens);

    if (k == 0) {
        pki_fail(res, PKI_NOT_FOUND, "no key to index");
    }

    return v;
}


/* Frees what pki_dac_claim() made. */
static void
pki_dac_index_free(pki_dac_index_t *ix)
{
    free(ix->keys);
    ix->keys = NULL;
}


/* Releases this batch's claims still held (a batch that failed): its keys
 * can be issued at once.  A release that fails leaves them to expire. */
static void
pki_dac_release(const pki_matter_conf_t *conf, pki_dac_index_t *ix,
    pki_item_t *items, size_t n, pki_result_t *res)
{
    int           sent;
    redisReply   *v;
    pki_result_t  r;

    if (!ix->claimed) {
        return;
    }

    pki_result_init(&r);
    sent = 0;
    v = pki_dac_eval(conf, ix, items, n, pki_int_lua_dac_release, NULL, NULL,
                     &sent, &r);
    if (v == NULL && r.status != PKI_NOT_FOUND) {
        pki_log(res, "%sthe batch's claims on its device keys were not "
                "released (they expire in " PKI_MATTER_CLAIM_TTL " s): %s",
                res->log[0] ? "; " : "", r.log[0] ? r.log : r.detail);
    }
    freeReplyObject(v);
}


/* The DAC recorded good for items[i]'s key (serial), checked: issued by
 * this CA, under this template, for this very key, of the subject asked
 * (pki_int_dac_check, shared with EST).  PKI_OK with items[i].cert set
 * (known), else the status and msg. */
static pki_status_t
pki_dac_known_cert(const pki_matter_conf_t *conf, pki_item_t *it,
    pki_record_t *rec, const char *what, size_t i, char *msg, size_t size)
{
    char          where[64];
    pki_status_t  st;

    snprintf(where, sizeof(where), "%s[%zu]", what, i);

    st = pki_int_dac_check(conf->ca, conf->tmpl, rec, it->spki,
                           it->req.subject, where, &it->cert, msg, size);
    if (st == PKI_OK) {
        it->known = 1;
    }

    return st;
}


/*
 * Step 1: claims the batch's device keys (see above); the items whose key
 * has a good DAC get it (known).  PKI_OK, or the status with msg (the
 * claims then released).
 */
static pki_status_t
pki_dac_claim(const pki_matter_conf_t *conf, pki_dac_index_t *ix,
    pki_item_t *items, size_t n, const char *what, size_t *nknown,
    char *msg, size_t size, pki_result_t *res)
{
    int                  sent, len;
    char                 prefix[PKI_MATTER_IDX_KEY];
    size_t               i, k, at, m, *idx;
    const char          *ca, **cas, **serials;
    redisReply          *v;
    pki_status_t         st;
    pki_record_t         rec;
    pki_int_records_t   *b;

    *nknown = 0;
    ca = pki_ca_name(conf->ca);

    ix->keys = calloc(n, PKI_MATTER_IDX_KEY);
    if (ix->keys == NULL || !pki_int_dac_new_claim(ix->claim)) {
        snprintf(msg, size, "internal error");
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    for (i = 0; i < n; i++) {
        if (items[i].has_spki
            && !pki_int_dac_ix_key(conf->redis, ca, items[i].spki,
                                   ix->keys + i * PKI_MATTER_IDX_KEY,
                                   PKI_MATTER_IDX_KEY))
        {
            snprintf(msg, size, "internal error");
            return pki_fail(res, PKI_INTERNAL, "matter: index key too long");
        }
    }

    len = snprintf(prefix, sizeof(prefix), "%s{ca:%s}:cert:",
                   pki_redis_ns(conf->redis), ca);
    if (len <= 0 || (size_t) len >= sizeof(prefix)) {
        snprintf(msg, size, "internal error");
        return pki_fail(res, PKI_INTERNAL, "matter: index key too long");
    }

    sent = 0;
    v = pki_dac_eval(conf, ix, items, n, pki_int_lua_dac_claim,
                     PKI_MATTER_CLAIM_TTL, prefix, &sent, res);
    if (v == NULL) {
        if (res->status == PKI_NOT_FOUND) {
            pki_result_init(res);
            return PKI_OK;              /* no key to index */
        }
        /* an answer lost: the claims may stand, released below */
        ix->claimed = sent;
        snprintf(msg, size, "certificate store unavailable");
        pki_log(res, "%smatter: the claim of the batch's device keys "
                "failed", res->log[0] ? "; " : "");
        return PKI_UNAVAILABLE;
    }

    ix->claimed = 1;

    m = 0;
    for (i = 0; i < n; i++) {
        m += items[i].has_spki;
    }

    /* the k-th index key is item at(k): find it back */
    idx = calloc(m + 1, sizeof(size_t));
    if (idx == NULL) {
        freeReplyObject(v);
        snprintf(msg, size, "internal error");
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }
    for (i = 0, k = 0; i < n; i++) {
        if (items[i].has_spki) {
            idx[k++] = i;
        }
    }

    st = PKI_OK;

    if (v->type != REDIS_REPLY_ARRAY || v->elements < 1
        || v->element[0]->type != REDIS_REPLY_STRING)
    {
        st = PKI_UNAVAILABLE;

    } else if (strcmp(v->element[0]->str, "ok") == 0) {
        if (v->elements != m + 1) {
            st = PKI_UNAVAILABLE;
        }
        for (k = 0; st == PKI_OK && k < m; k++) {
            if (v->element[k + 1]->type != REDIS_REPLY_STRING
                || (v->element[k + 1]->len != 0
                    && !pki_serial_normalize(v->element[k + 1]->str,
                                             items[idx[k]].committed)))
            {
                st = PKI_UNAVAILABLE;
            }
        }

    } else if (v->elements >= 2 && v->element[1]->type == REDIS_REPLY_STRING
               && (at = strtoul(v->element[1]->str, NULL, 10)) >= 1
               && at <= m)
    {
        i = idx[at - 1];

        if (strcmp(v->element[0]->str, "busy") == 0) {
            snprintf(msg, size, "%s[%zu]: another batch is issuing the DAC "
                     "of its key (or an EST enrollment); retry", what, i);
            st = pki_fail(res, PKI_CONFLICT, "%s", msg);

        } else if (strcmp(v->element[0]->str, "revoked") == 0
                   && v->elements == 3
                   && v->element[2]->type == REDIS_REPLY_STRING)
        {
            snprintf(msg, size, "%s[%zu]: its key's DAC %.40s is revoked: "
                     "one DAC per device key", what, i,
                     v->element[2]->str);
            st = pki_fail(res, PKI_POLICY, "%s", msg);

        } else {
            snprintf(msg, size, "internal error");
            st = pki_fail(res, PKI_INTERNAL, "matter: the index entry of "
                          "%s[%zu]'s key is not ours (%s)", what, i,
                          pki_dac_key(ix, i));
        }

    } else {
        st = PKI_UNAVAILABLE;
    }

    freeReplyObject(v);
    free(idx);

    if (st == PKI_UNAVAILABLE) {
        pki_int_redis_drop(conf->redis);
        snprintf(msg, size, "certificate store unavailable");
        pki_fail(res, PKI_UNAVAILABLE, "certificate store unavailable");
        pki_log(res, "%smatter: unexpected reply to the claim of the "
                "batch's device keys", res->log[0] ? "; " : "");
    }

    if (st != PKI_OK) {
        for (i = 0; i < n; i++) {
            items[i].committed[0] = '\0';
        }
        return st;
    }

    /* the keys that have a DAC: their records, in one round trip */
    m = 0;
    for (i = 0; i < n; i++) {
        m += items[i].committed[0] != '\0';
    }

    if (m == 0) {
        return PKI_OK;
    }

    cas = calloc(m, sizeof(char *));
    serials = calloc(m, sizeof(char *));
    idx = calloc(m, sizeof(size_t));
    b = NULL;

    if (cas == NULL || serials == NULL || idx == NULL) {
        st = pki_fail(res, PKI_INTERNAL, "out of memory");
        snprintf(msg, size, "internal error");
        goto failed;
    }

    for (i = 0, k = 0; i < n; i++) {
        if (items[i].committed[0] != '\0') {
            cas[k] = ca;
            serials[k] = items[i].committed;
            idx[k++] = i;
        }
    }

    st = pki_int_records_fetch(conf->redis, cas, serials, m, &b, res);
    if (st != PKI_OK) {
        snprintf(msg, size, "certificate store unavailable");
        goto failed;
    }

    for (k = 0; k < m && st == PKI_OK; k++) {
        i = idx[k];
        memset(&rec, 0, sizeof(rec));
        st = pki_int_records_get(b, k, &rec, res);
        if (st == PKI_NOT_FOUND) {
            snprintf(msg, size, "%s[%zu]: its key's DAC %s is gone "
                     "meanwhile; retry", what, i, items[i].committed);
            st = PKI_CONFLICT;
        } else if (st == PKI_OK) {
            st = pki_dac_known_cert(conf, &items[i], &rec, what, i, msg,
                                    size);
        } else {
            snprintf(msg, size, "certificate store unavailable");
        }
        if (st != PKI_OK) {
            pki_fail(res, st, "%s", msg);
        }
        pki_record_clear(&rec);
        *nknown += st == PKI_OK;
    }

failed:

    pki_int_records_free(b);
    free(cas);
    free(serials);
    free(idx);

    /* "committed" held the known serials: no item is committed yet */
    for (i = 0; i < n; i++) {
        items[i].committed[0] = '\0';
    }

    return st;
}


static void
pki_dac_batch(const pki_matter_conf_t *conf, const pki_matter_req_t *req,
    const cJSON *json, pki_matter_resp_t *resp)
{
    int              keygen, encoded;
    size_t           i, j, n, known;
    char             msg[PKI_DETAIL_LEN + 64];
    const char      *why, *what;
    const cJSON     *csrs, *count;
    pki_sb_t         b;
    pki_item_t      *items;
    pki_status_t     rc;
    pki_dac_index_t  ix;

    csrs = cJSON_GetObjectItemCaseSensitive(json, "csrs");
    count = cJSON_GetObjectItemCaseSensitive(json, "count");

    if ((csrs == NULL) == (count == NULL)) {
        pki_json_error(resp, 400, "give either \"csrs\" (array) or "
                       "\"count\"");
        return;
    }

    keygen = count != NULL;

    if (keygen) {
        if (!cJSON_IsNumber(count) || count->valuedouble < 1
            || count->valuedouble > PKI_MATTER_MAX_BATCH
            || count->valuedouble != (double) count->valueint)
        {
            pki_json_error(resp, 400, "\"count\" must be an integer 1..1000");
            return;
        }
        if (!pki_template_server_keygen(conf->tmpl)) {
            pki_json_error(resp, 400, "server key generation is not allowed "
                           "by the template");
            return;
        }
        n = (size_t) count->valueint;

    } else {
        if (!cJSON_IsArray(csrs)) {
            pki_json_error(resp, 400, "\"csrs\" must be an array");
            return;
        }
        n = (size_t) cJSON_GetArraySize(csrs);
        if (n < 1 || n > PKI_MATTER_MAX_BATCH) {
            pki_json_error(resp, 400, "\"csrs\" must hold 1..1000 CSRs");
            return;
        }
    }

    if (!pki_int_audit_ready(&why)) {
        /* a transaction log is configured and not open (or holds all it
         * may for a file that takes nothing): refused as pki_issue
         * refuses one DAC, before a key is made, a serial reserved or
         * anything signed (pki_issue_batch would refuse it too, item by
         * item) */
        pki_fail(&resp->res, PKI_UNAVAILABLE, "transaction log unavailable");
        pki_log(&resp->res, "transaction log: %s; batch of %zu refused, "
                "nothing reserved or signed", why, n);
        pki_fail_resp(resp, PKI_UNAVAILABLE, resp->res.detail);
        return;
    }

    items = calloc(n, sizeof(pki_item_t));
    if (items == NULL) {
        pki_json_error(resp, 500, "out of memory");
        return;
    }

    memset(&b, 0, sizeof(b));
    memset(&ix, 0, sizeof(ix));
    rc = PKI_OK;
    encoded = 1;
    known = 0;

    if (!keygen) {
        const cJSON  *c;

        i = 0;
        cJSON_ArrayForEach(c, csrs) {
            items[i++].src = c;
        }
    }

    /* an item is named by its place in what the client sent: "csrs[i]",
     * or "certificates[i]" (and keys[i]) of a keygen batch */
    what = keygen ? "certificates" : "csrs";

    /* 1. every CSR checked before anything is signed */
    pki_run_phase(conf, req, items, n, 0);

    for (i = 0; i < n; i++) {
        if (items[i].rc != PKI_OK) {
            snprintf(msg, sizeof(msg), "%s[%zu]: %s", what, i,
                     items[i].res.detail);
            pki_fail_resp(resp, items[i].rc, msg);
            resp->res = items[i].res;
            goto done;
        }
    }

    pki_batch_spki(items, n);

    /* (a key that does not encode has no index entry: refused before
     * anything is claimed, as the issuance would refuse it) */
    for (i = 0; i < n; i++) {
        if (!items[i].has_spki) {
            snprintf(msg, sizeof(msg), "%s[%zu]: its public key does not "
                     "encode", what, i);
            pki_fail(&resp->res, PKI_INTERNAL, "%s", msg);
            pki_fail_resp(resp, PKI_INTERNAL, "internal error");
            goto done;
        }
    }

    /* one key, one DAC: a batch whose CSRs share a key (a station that
     * replays or reuses keys) is refused whole, naming both places */
    if (!keygen && pki_batch_dup_key(items, n, &i, &j)) {
        snprintf(msg, sizeof(msg), "%s[%zu] has the key of %s[%zu]: one "
                 "DAC per device key", what, j, what, i);
        pki_fail(&resp->res, PKI_POLICY, "%s", msg);
        pki_fail_resp(resp, PKI_POLICY, msg);
        goto done;
    }

    /* and across batches: each key claimed in the CA's index, a key that
     * has a DAC answered with it (a retry after a lost answer) */
    if (conf->redis != NULL) {
        rc = pki_dac_claim(conf, &ix, items, n, what, &known, msg,
                           sizeof(msg), &resp->res);
        if (rc != PKI_OK) {
            pki_fail_resp(resp, rc, msg);
            pki_dac_release(conf, &ix, items, n, &resp->res);
            goto done;
        }
    }

    /* 2. issue: every certificate built, and the batch refused whole if
     *    one cannot be, before anything is reserved; then serials and
     *    intents of the whole batch reserved in one Redis round trip (each
     *    key's index entry named its serial there), signed by
     *    conf->threads threads, committed in one round trip
     *    (pki_int_issue_batch) */
    pki_issue_all(conf, req, items, n, &ix);

    for (i = 0; i < n; i++) {
        /* the item at fault, not one stopped because of another */
        if (items[i].cert == NULL && !items[i].stopped) {
            break;
        }
    }

    if (i == n) {
        for (i = 0; i < n && items[i].cert != NULL; i++) {
            /* void */
        }
    }

    if (i < n) {
        rc = items[i].rc != PKI_OK ? items[i].rc : PKI_UNAVAILABLE;
        snprintf(msg, sizeof(msg), "%s[%zu]: %s", what, i,
                 items[i].rc != PKI_OK ? items[i].res.detail
                                       : "not issued (batch stopped)");
        pki_fail_resp(resp, rc, msg);
        resp->res = items[i].res;
        pki_batch_withdraw(conf, items, n, resp);
        pki_dac_release(conf, &ix, items, n, &resp->res);
        goto done;
    }

    /* a certificate that does not encode is an error of the batch, as
     * any other: its DACs are withdrawn, not answered 200 in broken JSON */
    sb_str(&b, "{\"certificates\":[");
    for (i = 0; i < n; i++) {
        if (i) {
            sb_put(&b, ",", 1);
        }
        if (!sb_cert(&b, items[i].cert, 0, &resp->res)) {
            encoded = 0;
            break;
        }
    }
    sb_str(&b, "]");

    if (keygen && encoded) {
        sb_str(&b, ",\"keys\":[");
        for (i = 0; i < n; i++) {
            PKCS8_PRIV_KEY_INFO  *p8;
            unsigned char        *kd = NULL;
            int                   kl;

            p8 = EVP_PKEY2PKCS8(items[i].key);
            kl = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &kd) : -1;
            PKCS8_PRIV_KEY_INFO_free(p8);
            if (kl <= 0) {
                b.err = 1;
                break;
            }
            if (i) {
                sb_put(&b, ",", 1);
            }
            sb_b64(&b, kd, (size_t) kl);
            OPENSSL_clear_free(kd, (size_t) kl);
        }
        sb_str(&b, "]");
    }

    sb_str(&b, "}");

    if (b.err || !encoded) {
        if (b.p) {
            OPENSSL_cleanse(b.p, b.cap);
        }
        free(b.p);
        /* (sb_cert() said why in resp->res) */
        pki_json_error(resp, 500, encoded ? "out of memory"
                                          : "cannot encode a certificate");
        pki_batch_withdraw(conf, items, n, resp);
        pki_dac_release(conf, &ix, items, n, &resp->res);
        goto done;
    }

    /* (the issued keys are indexed with their serials: each entry was
     * set by the script that reserved its serial) */

    resp->http_status = 200;
    resp->content_type = PKI_MATTER_JSON;
    resp->body = (unsigned char *) b.p;
    resp->body_len = b.len;
    resp->secret = keygen;
    if (known) {
        pki_log(&resp->res, "%sissued %zu DACs; %zu answered with the DAC "
                "their key already had", resp->res.log[0] ? "; " : "",
                n - known, known);
    } else {
        pki_log(&resp->res, "%sissued %zu DACs",
                resp->res.log[0] ? "; " : "", n);
    }

done:

    pki_dac_index_free(&ix);

    for (i = 0; i < n; i++) {
        X509_REQ_free(items[i].csr);
        EVP_PKEY_free(items[i].key);
        pki_request_clear(&items[i].req);
        X509_free(items[i].cert);
    }
    free(items);
}


/* ---- NOC ------------------------------------------------------------------------ */

static int
pki_json_hex(const cJSON *v, int digits, uint64_t *out)
{
    int          i;
    uint64_t     u;
    const char  *s;

    if (!cJSON_IsString(v)) {
        return 0;
    }

    s = v->valuestring;
    if ((int) strlen(s) != digits) {
        return 0;
    }

    u = 0;
    for (i = 0; i < digits; i++) {
        if (s[i] >= '0' && s[i] <= '9') {
            u = u << 4 | (uint64_t) (s[i] - '0');
        } else if (s[i] >= 'A' && s[i] <= 'F') {
            u = u << 4 | (uint64_t) (s[i] - 'A' + 10);
        } else {
            return 0;
        }
    }

    *out = u;

    return 1;
}


static int
pki_add_attr(X509_NAME *name, const char *oid, const char *value)
{
    int           ok;
    ASN1_OBJECT  *obj;

    obj = OBJ_txt2obj(oid, 1);
    ok = obj && X509_NAME_add_entry_by_OBJ(name, obj, V_ASN1_UTF8STRING,
                                           (const unsigned char *) value, -1,
                                           -1, 0);
    ASN1_OBJECT_free(obj);

    return ok;
}


static X509 *
pki_root_of(pki_ca_t *ca)
{
    int              i;
    X509            *x;
    STACK_OF(X509)  *chain;

    x = pki_ca_cert(ca);
    if (X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x))
        == 0)
    {
        return NULL;     /* the CA is the root */
    }

    chain = pki_ca_chain(ca);
    for (i = 0; i < sk_X509_num(chain); i++) {
        x = sk_X509_value(chain, i);
        if (X509_NAME_cmp(X509_get_subject_name(x),
                          X509_get_issuer_name(x)) == 0)
        {
            return x;
        }
    }

    return NULL;
}


/* Each NOC answer carries the ICAC and RCAC in DER and Matter TLV: one
 * that breaks the profile or has no TLV form would make every NOC issued
 * and committed, then not deliverable.  Found at configuration instead. */
static pki_status_t
pki_noc_chain_ok(X509 *x, pki_matter_type_t type, X509 *issuer,
    pki_result_t *res)
{
    int             n;
    size_t          tlen;
    pki_result_t    tmp;
    unsigned char  *der, *tlv;

    pki_result_init(&tmp);
    if (pki_matter_check(x, type, issuer, &tmp) != PKI_OK) {
        return pki_fail(res, PKI_MALFORMED, "the %s does not pass the "
                        "Matter profile: %s",
                        type == PKI_MATTER_RCAC ? "RCAC" : "ICAC",
                        tmp.detail);
    }

    /* (pki_matter_check converts it too; the answer's own path, again,
     * in case the two ever part) */
    der = NULL;
    n = i2d_X509(x, &der);
    if (n <= 0) {
        return pki_fail(res, PKI_INTERNAL, "i2d_X509() failed");
    }

    if (pki_matter_der_to_tlv(der, (size_t) n, &tlv, &tlen, &tmp) != PKI_OK)
    {
        OPENSSL_free(der);
        return pki_fail(res, PKI_MALFORMED, "the %s cannot be encoded as "
                        "Matter TLV: %s",
                        type == PKI_MATTER_RCAC ? "RCAC" : "ICAC",
                        tmp.detail);
    }

    free(tlv);
    OPENSSL_free(der);

    return PKI_OK;
}


/* A CA that issues NOCs is an RCAC, or an ICAC issued by the RCAC in its
 * chain: the answer hands the commissioner that RCAC as the root to
 * trust, and the fabric-id is checked along it.  Both must convert to
 * Matter TLV, as every answer converts them (pki_noc_chain_ok). */
PKI_API pki_status_t
pki_matter_noc_ca_check(pki_ca_t *ca, pki_result_t *res)
{
    X509  *x, *root;

    x = pki_ca_cert(ca);
    if (x == NULL) {
        return pki_fail(res, PKI_MALFORMED, "the CA has no certificate");
    }

    if (X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x))
        == 0)
    {
        return pki_noc_chain_ok(x, PKI_MATTER_RCAC, x, res);
    }

    root = pki_root_of(ca);
    if (root == NULL || X509_check_issued(root, x) != X509_V_OK) {
        return pki_fail(res, PKI_MALFORMED, "a Matter ICAC needs the RCAC "
                        "that issued it in its \"chain\" (the answer "
                        "names it as the root to trust)");
    }

    if (pki_noc_chain_ok(x, PKI_MATTER_ICAC, root, res) != PKI_OK) {
        return PKI_MALFORMED;
    }

    return pki_noc_chain_ok(root, PKI_MATTER_RCAC, root, res);
}


static void
pki_noc(const pki_matter_conf_t *conf, const pki_matter_req_t *req,
    const cJSON *json, pki_matter_resp_t *resp)
{
    int               i, j, ncats;
    size_t            len;
    X509             *noc, *root, *icac;
    X509_REQ         *csr;
    X509_NAME        *name;
    uint64_t          node, fabric, cats[3];
    const cJSON      *v, *c;
    pki_sb_t          b;
    pki_status_t      rc;
    pki_result_t      wres;
    pki_request_t     preq;
    pki_issue_ctx_t   ictx;
    unsigned char    *der;
    const char       *why;
    char              hex[17], hex40[41], msg[PKI_DETAIL_LEN + 16];

    noc = NULL;
    csr = NULL;
    name = NULL;
    memset(&b, 0, sizeof(b));
    memset(&preq, 0, sizeof(preq));

    v = cJSON_GetObjectItemCaseSensitive(json, "node_id");
    if (!pki_json_hex(v, 16, &node)) {
        pki_json_error(resp, 400, "node_id must be 16 uppercase hex digits");
        return;
    }
    if (node < 1 || node > 0xFFFFFFEFFFFFFFFFULL) {
        pki_json_error(resp, 400, "node_id is not an operational node ID "
                       "(0000000000000001..FFFFFFEFFFFFFFFF)");
        return;
    }

    v = cJSON_GetObjectItemCaseSensitive(json, "fabric_id");
    if (!pki_json_hex(v, 16, &fabric)) {
        pki_json_error(resp, 400, "fabric_id must be 16 uppercase hex "
                       "digits");
        return;
    }
    if (fabric == 0) {
        pki_json_error(resp, 400, "fabric_id must not be 0");
        return;
    }

    ncats = 0;
    v = cJSON_GetObjectItemCaseSensitive(json, "cats");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsArray(v)) {
            pki_json_error(resp, 400, "cats must be an array");
            return;
        }
        if (cJSON_GetArraySize(v) > 3) {
            pki_json_error(resp, 400, "at most 3 CATs");
            return;
        }
        cJSON_ArrayForEach(c, v) {
            if (!pki_json_hex(c, 8, &cats[ncats])) {
                pki_json_error(resp, 400, "a CAT must be 8 uppercase hex "
                               "digits");
                return;
            }
            if ((cats[ncats] & 0xffff) == 0) {
                pki_json_error(resp, 400, "CAT version must not be 0");
                return;
            }
            for (j = 0; j < ncats; j++) {
                if ((cats[j] >> 16) == (cats[ncats] >> 16)) {
                    pki_json_error(resp, 400, "CATs must have distinct "
                                   "identifiers");
                    return;
                }
            }
            ncats++;
        }
    }

    v = cJSON_GetObjectItemCaseSensitive(json, "csr");
    if (!cJSON_IsString(v)) {
        pki_json_error(resp, 400, "csr must be a base64 string");
        return;
    }

    rc = pki_base64_decode((const unsigned char *) v->valuestring,
                           strlen(v->valuestring), &der, &len, &resp->res);
    if (rc == PKI_OK) {
        rc = pki_csr_parse(der, len, &csr, &resp->res);
        free(der);
    }
    if (rc != PKI_OK) {
        snprintf(msg, sizeof(msg), "csr: %s", resp->res.detail);
        pki_fail_resp(resp, rc, msg);
        return;
    }

    if (X509_REQ_get_signature_nid(csr) != NID_ecdsa_with_SHA256) {
        X509_REQ_free(csr);
        pki_json_error(resp, 400, "csr must be signed with "
                       "ecdsa-with-SHA256");
        return;
    }

    /* pki_csr_parse() takes version 2 for ACME clients; a NOCSR is
     * version 1 (0) */
    if (X509_REQ_get_version(csr) != X509_REQ_VERSION_1) {
        X509_REQ_free(csr);
        pki_json_error(resp, 400, "csr must be PKCS#10 version 1 (0)");
        return;
    }

    /* refused here rather than by the profile check of the built NOC */
    why = pki_int_matter_req_key(X509_REQ_get0_pubkey(csr));
    if (why != NULL) {
        X509_REQ_free(csr);
        snprintf(msg, sizeof(msg), "csr key %s", why);
        pki_json_error(resp, 400, msg);
        return;
    }

    /* only the public key of the NOCSR is used */
    name = X509_NAME_new();
    snprintf(hex, sizeof(hex), "%016llX", (unsigned long long) node);
    i = name && pki_add_attr(name, PKI_MATTER_OID_NODE_ID, hex);
    snprintf(hex, sizeof(hex), "%016llX", (unsigned long long) fabric);
    i = i && pki_add_attr(name, PKI_MATTER_OID_FABRIC_ID, hex);
    for (j = 0; i && j < ncats; j++) {
        snprintf(hex, sizeof(hex), "%08X", (unsigned) cats[j]);
        i = pki_add_attr(name, PKI_MATTER_OID_CAT, hex);
    }

    preq.subject = name;
    preq.pubkey = X509_REQ_get0_pubkey(csr);
    if (!i || preq.pubkey == NULL) {
        X509_NAME_free(name);
        X509_REQ_free(csr);
        pki_json_error(resp, 500, "internal error");
        return;
    }

    ictx.protocol = "matter";
    ictx.requester = req->user;
    ictx.client = req->client;
    ictx.realm = NULL;
    ictx.committed = NULL;

    rc = pki_issue(conf->ca, conf->tmpl, conf->redis, &preq, &ictx, &noc,
                   &resp->res);
    X509_NAME_free(name);
    X509_REQ_free(csr);

    if (rc != PKI_OK) {
        pki_fail_resp(resp, rc, resp->res.detail);
        return;
    }

    /* From here on the NOC is issued: its record is good and its audit
     * entry written.  One that cannot be answered is withdrawn. */
    root = pki_root_of(conf->ca);
    icac = root ? pki_ca_cert(conf->ca) : NULL;
    if (root == NULL) {
        root = pki_ca_cert(conf->ca);
        if (X509_NAME_cmp(X509_get_subject_name(root),
                          X509_get_issuer_name(root)) != 0)
        {
            /* (refused at configuration: pki_matter_noc_ca_check) */
            pki_fail(&resp->res, PKI_INTERNAL, "the CA's RCAC is unknown");
            goto withdraw;
        }
    }

    sb_str(&b, "{\"noc\":");
    i = sb_cert(&b, noc, 0, &resp->res);
    sb_str(&b, ",\"noc_tlv\":");
    i = i && sb_cert(&b, noc, 1, &resp->res);
    sb_str(&b, ",\"icac\":");
    if (icac) {
        i = i && sb_cert(&b, icac, 0, &resp->res);
        sb_str(&b, ",\"icac_tlv\":");
        i = i && sb_cert(&b, icac, 1, &resp->res);
    } else {
        sb_str(&b, "null,\"icac_tlv\":null");
    }
    sb_str(&b, ",\"rcac\":");
    i = i && sb_cert(&b, root, 0, &resp->res);
    sb_str(&b, ",\"rcac_tlv\":");
    i = i && sb_cert(&b, root, 1, &resp->res);
    sb_str(&b, "}");

    if (!i || b.err) {
        if (i) {
            pki_fail(&resp->res, PKI_INTERNAL, "out of memory");
        }
        free(b.p);
        goto withdraw;
    }

    X509_free(noc);

    resp->http_status = 200;
    resp->content_type = PKI_MATTER_JSON;
    resp->body = (unsigned char *) b.p;
    resp->body_len = b.len;
    pki_log(&resp->res, "issued a NOC for node %016llX fabric %016llX",
            (unsigned long long) node, (unsigned long long) fabric);

    return;

withdraw:

    /* the record stays good, the audit log says issued, and the client,
     * answered 500, asks again: revoked like a failed batch's DACs */
    if (!pki_serial_to_hex(X509_get0_serialNumber(noc), hex40)) {
        pki_log(&resp->res, "%sthe issued NOC could not be withdrawn: its "
                "serial cannot be read", resp->res.log[0] ? "; " : "");

    } else if (pki_withdraw(conf, hex40, &wres, &resp->res) == PKI_OK) {
        pki_log(&resp->res, "%sissued NOC serial %s withdrawn, not "
                "delivered: revoked (cessationOfOperation)",
                resp->res.log[0] ? "; " : "", hex40);
    }

    X509_free(noc);
    pki_json_error(resp, 500, "internal error");
}


/* ---- entry ---------------------------------------------------------------------- */

void
pki_matter_handle(const pki_matter_conf_t *conf, const pki_matter_req_t *req,
    pki_matter_resp_t *resp)
{
    char                msg[128];
    size_t              max;
    cJSON              *json;
    const char         *why;
    pki_matter_type_t   want;

    memset(resp, 0, sizeof(pki_matter_resp_t));
    pki_result_init(&resp->res);

    if (conf == NULL || req == NULL || conf->ca == NULL
        || conf->tmpl == NULL)
    {
        pki_json_error(resp, 500, "internal error");
        return;
    }

    want = req->op == PKI_MATTER_OP_DAC_BATCH ? PKI_MATTER_DAC
           : req->op == PKI_MATTER_OP_NOC ? PKI_MATTER_NOC : PKI_MATTER_NONE;

    if (want == PKI_MATTER_NONE) {
        pki_json_error(resp, 404, "unknown Matter operation");
        return;
    }

    if (pki_matter_template_type(conf->tmpl) != want) {
        pki_fail(&resp->res, PKI_INTERNAL, "template \"%s\" is not a "
                 "matter-%s template", pki_template_name(conf->tmpl),
                 pki_matter_type_name(want));
        pki_json_error(resp, 500, "internal error");
        return;
    }

    if (req->method == NULL || strcmp(req->method, "POST") != 0) {
        pki_json_error(resp, 405, "method not allowed (POST)");
        resp->allow = "POST";
        return;
    }

    if (req->user == NULL || req->user[0] == '\0') {
        pki_json_error(resp, 403, "an authenticated identity is required");
        return;
    }

    if (!pki_media_type_is(req->content_type, PKI_MATTER_JSON)) {
        pki_json_error(resp, 415, "Content-Type must be application/json");
        return;
    }

    max = conf->max_body ? conf->max_body
          : want == PKI_MATTER_DAC ? PKI_MATTER_BATCH_BODY
                                   : PKI_MATTER_NOC_BODY;

    if (req->body_len > max) {
        pki_json_error(resp, 413, "request body too large");
        return;
    }

    /* strict: a member given twice ({"node_id": A, "node_id": B}) is
     * read as B here and maybe as A by a proxy or a log in front; a NUL
     * would cut a string short.  The values are counted before cJSON
     * builds a node: a 2m body of "0," would cost some 80 MB of tree (and
     * half a second of a signing thread) only to be refused */
    json = pki_int_json_strict_max(req->body, req->body_len,
                                   want == PKI_MATTER_DAC
                                   ? PKI_MATTER_BATCH_VALUES
                                   : PKI_MATTER_NOC_VALUES, &why);
    if (json == NULL) {
        if (why == NULL || strcmp(why, "is not JSON") == 0) {
            pki_json_error(resp, 400, "body is not a JSON object");

        } else if (strcmp(why, "holds too many values") == 0) {
            pki_json_error(resp, 400, want == PKI_MATTER_DAC
                           ? "body holds more JSON values than a batch of "
                             "1000 CSRs needs"
                           : "body holds more JSON values than a NOC "
                             "request needs");

        } else {
            snprintf(msg, sizeof(msg), "body %s", why);
            pki_json_error(resp, 400, msg);
        }
        return;
    }

    if (!cJSON_IsObject(json)) {
        cJSON_Delete(json);
        pki_json_error(resp, 400, "body is not a JSON object");
        return;
    }

    if (want == PKI_MATTER_DAC) {
        pki_dac_batch(conf, req, json, resp);
    } else {
        pki_noc(conf, req, json, resp);
    }

    cJSON_Delete(json);
}


void
pki_matter_resp_free(pki_matter_resp_t *resp)
{
    if (resp == NULL) {
        return;
    }

    if (resp->body) {
        OPENSSL_cleanse(resp->body, resp->body_len);
    }
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
    free(resp->unsettled);
    resp->unsettled = NULL;
}
