/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * ACME server engine (RFC 8555 with RFC 8737 tls-alpn-01, RFC 8738 IP
 * identifiers and RFC 9773 renewal information): one request in, one
 * response out, state in Redis.  The glue reads the body, runs
 * pki_acme_handle() in a pool thread, sends the response, and then runs the
 * challenge validation job (if any) in a pool thread again.
 *
 * Order of checks for a POST (RFC 8555 section 6): media type, size, JWS
 * syntax, url, key (jwk or kid as the resource demands), signature, and only
 * then the nonce is redeemed (one DEL wins), so that a forged request never
 * burns a nonce.  Objects are JSON documents in Redis under the account's
 * hash tag; order status pending/ready/invalid is derived from its
 * authorizations when read, so the validator only ever writes the
 * authorization.
 */

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cJSON.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "audit_int.h"
#include "issue_int.h"
#include "acme_int.h"
#include "redis_int.h"


#define PKI_ACME_ERR           "urn:ietf:params:acme:error:"
#define PKI_ACME_CT_JSON       "application/json"
#define PKI_ACME_CT_PROBLEM    "application/problem+json"
#define PKI_ACME_CT_JOSE       "application/jose+json"
#define PKI_ACME_CT_PEM        "application/pem-certificate-chain"

/* The orders list (RFC 8555 7.1.2.1): orders per page, newest first, and
 * the last page served (the account's order index keeps an order until
 * its certificate expires) */
#define PKI_ACME_ORDER_PAGE    100
#define PKI_ACME_ORDER_PAGES   100000
#define PKI_ACME_LIST_AUTHZ    300     /* read for a page of orders */

#define PKI_ACME_MAX_BODY      65536
#define PKI_ACME_MAX_IDS       100
#define PKI_ACME_MAX_CONTACTS  10
#define PKI_ACME_ID_MAX        64
#define PKI_ACME_KEY_MAX       512
#define PKI_ACME_RETRY_AFTER   5
#define PKI_ACME_ARI_RETRY     21600
#define PKI_ACME_STALE         30      /* a processing challenge restarts */
#define PKI_ACME_CAA_REUSE     (8 * 3600)  /* CAA checks on: reuse window cap */
#define PKI_ACME_PENDING_RETRY 60      /* s: over acme_pending_authz_max */
#define PKI_ACME_NB_AHEAD      (30L * 86400)  /* latest notBefore asked for */
#define PKI_ACME_NB_BACK       86400          /* earliest: a day back       */
/* one answer whether an EAB key id is unknown, disabled, bound to
 * another account, or its MAC wrong: the answer tells nothing of a key's
 * state to whoever knows its id (the log says which) */
#define PKI_ACME_EAB_REFUSED                                                  \
    "externalAccountBinding refused: unknown, disabled or used key, or a "    \
    "MAC that does not verify"
#define PKI_ACME_FIN_STALE     30      /* a processing order is recovered */
#define PKI_ACME_MAX_PRE       8       /* objects read with the nonce     */
#define PKI_ACME_REUSE_PRE     4       /* newOrder: "valid" index entries */
#define PKI_ACME_MISS          ((pki_status_t) -1)   /* not prefetched   */
#define PKI_ACME_ACCT_COPY_TTL "60"    /* account copy in the state store */
#define PKI_ACME_KEEP          LONG_MAX /* pki_acme_cas: no expiry */

/* The store of the replay-safe state (nonces, orders, authorizations):
 * acme_redis when configured, else the durable pki_redis. */
#define PKI_ACME_ST(conf)  ((conf)->state_redis != NULL                   \
                            ? (conf)->state_redis : (conf)->redis)


struct pki_acme_job_s {
    char               acct[PKI_ACME_ID_MAX];
    char               authz[PKI_ACME_ID_MAX];
    char               type[16];
    pki_acme_chall_t   chall;
    char               id_type[8];
    char               identifier[256];
    char               token[64];
    char               key_authz[128];
    int                wildcard;       /* the authorization's */
    char              *account_url;    /* RFC 8657 accounturi, or NULL */
    char              *authz_text;     /* as the challenge stored it, or
                                        * NULL: then read again */
    time_t             started;        /* the challenge's "started"    */
};


/* A job that waited this long for a thread (s) first asks whether its
 * authorization still waits for it */
#define PKI_ACME_JOB_WAITED    2


typedef enum {
    PKI_KEY_KID = 0,
    PKI_KEY_JWK,
    PKI_KEY_ANY
} pki_acme_keyreq_t;


typedef struct {
    const pki_acme_conf_t  *conf;
    const pki_acme_req_t   *req;
    pki_acme_resp_t        *resp;
    pki_result_t           *res;
    pki_jws_t               jws;
    char                    acct[PKI_ACME_ID_MAX];  /* kid's account, "" */
    cJSON                  *account;                /* its JSON          */
    char                   *account_text;           /* as stored         */
    EVP_PKEY               *key;                    /* verified key      */
    cJSON                  *payload;                /* NULL: POST-as-GET */
    char                   *seg[5];
    int                     nseg;
    char                    pathbuf[512];
    time_t                  now;
    const char             *instance;   /* the next problem's "instance" */

    /* objects read by the nonce redeem script (one round trip), each
     * used once by the first load of its key */
    int                     npre;
    struct {
        char                key[PKI_ACME_KEY_MAX];
        char               *text;           /* NULL: the key is absent */
        int                 used;
    }                       pre[PKI_ACME_MAX_PRE];
} pki_acme_t;


static void pki_acme_problem(pki_acme_t *a, int status, const char *type,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void pki_acme_problem_subs(pki_acme_t *a, int status,
    const char *type, cJSON *subs, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void pki_acme_vproblem(pki_acme_t *a, int status, const char *type,
    cJSON *subs, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));
static const char *pki_acme_account_mine(const cJSON *acct);


/* ---- small helpers ---------------------------------------------------------- */

static int
pki_random_id(char *buf, size_t size, size_t nbytes)
{
    char           *s;
    unsigned char   rnd[64];

    if (nbytes > sizeof(rnd) || RAND_bytes(rnd, (int) nbytes) != 1) {
        return 0;
    }

    s = pki_b64url_encode(rnd, nbytes);
    OPENSSL_cleanse(rnd, sizeof(rnd));      /* may be key material (EAB) */
    if (s == NULL || strlen(s) >= size) {
        if (s != NULL) {
            OPENSSL_cleanse(s, strlen(s));
        }
        free(s);
        return 0;
    }

    strcpy(buf, s);
    OPENSSL_cleanse(s, strlen(s));
    free(s);

    return 1;
}


/* [A-Za-z0-9_-]{1,63}: the ids we make (base64url) */
static int
pki_id_ok(const char *s)
{
    size_t  i;

    for (i = 0; s[i] != '\0'; i++) {
        if (!(isalnum((unsigned char) s[i]) || s[i] == '-' || s[i] == '_')
            || i >= PKI_ACME_ID_MAX - 1)
        {
            return 0;
        }
    }

    return i > 0;
}


/* Unpadded base64url text (RFC 4648 section 5): its alphabet only, and a
 * length that some octet string encodes to (never 1 mod 4). */
static int
pki_b64url_text_ok(const char *s)
{
    size_t  len;

    len = strlen(s);

    return len > 0 && len % 4 != 1
           && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                        "0123456789-_") == len;
}


static char *
pki_strfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
pki_strfmt(const char *fmt, ...)
{
    int       n;
    char     *s;
    va_list   ap;

    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);

    return n < 0 ? NULL : s;
}


static const char *
pki_json_str(const cJSON *obj, const char *name)
{
    cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!cJSON_IsString(item)) {
        return NULL;
    }

    return item->valuestring;
}


static double
pki_json_num(const cJSON *obj, const char *name)
{
    cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!cJSON_IsNumber(item)) {
        return 0;
    }

    return item->valuedouble;
}


static void
pki_json_set_str(cJSON *obj, const char *name, const char *value)
{
    cJSON  *item;

    item = cJSON_CreateString(value);
    if (item == NULL) {
        return;
    }

    if (cJSON_GetObjectItemCaseSensitive(obj, name) != NULL) {
        cJSON_ReplaceItemInObjectCaseSensitive(obj, name, item);
    } else {
        cJSON_AddItemToObject(obj, name, item);
    }
}


static void
pki_json_set_num(cJSON *obj, const char *name, double value)
{
    cJSON  *item;

    item = cJSON_CreateNumber(value);
    if (item == NULL) {
        return;
    }

    if (cJSON_GetObjectItemCaseSensitive(obj, name) != NULL) {
        cJSON_ReplaceItemInObjectCaseSensitive(obj, name, item);
    } else {
        cJSON_AddItemToObject(obj, name, item);
    }
}


static void
pki_json_set_item(cJSON *obj, const char *name, cJSON *item)
{
    if (item == NULL) {
        return;
    }

    if (cJSON_GetObjectItemCaseSensitive(obj, name) != NULL) {
        cJSON_ReplaceItemInObjectCaseSensitive(obj, name, item);
    } else {
        cJSON_AddItemToObject(obj, name, item);
    }
}


static void
pki_json_time(cJSON *obj, const char *name, time_t t)
{
    char  buf[32];

    (void) pki_format_rfc3339(t, buf);
    cJSON_AddStringToObject(obj, name, buf);
}


/* ---- Redis ------------------------------------------------------------------ */

/* Runs a command of C strings.  Returns the reply or NULL (res filled). */
static redisReply *
pki_acme_cmd(pki_redis_t *r, pki_result_t *res, int argc, ...)
{
    int          i;
    size_t       lens[12];
    va_list      ap;
    const char  *argv[12];

    if (argc > 12) {
        pki_fail(res, PKI_INTERNAL, "redis: too many arguments");
        return NULL;
    }

    va_start(ap, argc);
    for (i = 0; i < argc; i++) {
        argv[i] = va_arg(ap, const char *);
        lens[i] = strlen(argv[i]);
    }
    va_end(ap);

    return pki_int_redis_cmd(r, argc, argv, lens, res);
}


/* Integer (or OK/nil status) reply: 1 for OK or a positive integer, 0 for
 * nil or 0; -1 when Redis failed. */
static int
pki_acme_cmd_int(pki_redis_t *r, pki_result_t *res, redisReply *reply)
{
    int  v;

    (void) r;

    if (reply == NULL) {
        return -1;
    }

    switch (reply->type) {
    case REDIS_REPLY_INTEGER:
        v = reply->integer > 0;
        break;
    case REDIS_REPLY_STATUS:
        v = 1;
        break;
    case REDIS_REPLY_NIL:
        v = 0;
        break;
    default:
        pki_fail(res, PKI_UNAVAILABLE, "certificate store unavailable");
        pki_log(res, "redis: unexpected reply type %d", reply->type);
        v = -1;
        break;
    }

    freeReplyObject(reply);
    return v;
}


static void
pki_key_name(char *buf, size_t size, const pki_redis_t *r, const char *acct,
    const char *what, const char *id)
{
    if (acct != NULL) {
        snprintf(buf, size, "%s{acme:%s}:%s%s%s", pki_redis_ns(r), acct, what,
                 id != NULL ? ":" : "", id != NULL ? id : "");
    } else {
        snprintf(buf, size, "%sacme:%s%s%s", pki_redis_ns(r), what,
                 id != NULL ? ":" : "", id != NULL ? id : "");
    }
}


/* The "valid" index key of one identifier (idx "dns:NAME", "ip:ADDR")
 * for the authorizations of one policy (realm; NULL or "": none, an
 * authorization older than realms): locations of other policies sharing
 * the store keep their own entries, so that neither replaces the other's
 * (reuse, revocation by authorization). */
static void
pki_acme_valid_key(char *buf, size_t size, const pki_redis_t *r,
    const char *acct, const char *realm, const char *idx)
{
    char  id[PKI_ACME_KEY_MAX];

    if (realm != NULL && realm[0] != '\0') {
        snprintf(id, sizeof(id), "%s:%s", realm, idx);
        pki_key_name(buf, size, r, acct, "valid", id);

    } else {
        pki_key_name(buf, size, r, acct, "valid", idx);
    }
}


/* A JSON document as one value of a reply (GET, an element of MGET):
 * PKI_OK, PKI_NOT_FOUND (nil), PKI_INTERNAL (not a JSON object) or
 * PKI_UNAVAILABLE (another reply).  text as for pki_acme_load_text. */
static pki_status_t
pki_acme_value_json(const redisReply *v, const char *key, cJSON **out,
    char **text, pki_result_t *res)
{
    *out = NULL;
    if (text != NULL) {
        *text = NULL;
    }

    if (v->type == REDIS_REPLY_NIL) {
        return PKI_NOT_FOUND;
    }

    if (v->type != REDIS_REPLY_STRING) {
        return pki_fail(res, PKI_UNAVAILABLE, "certificate store "
                        "unavailable");
    }

    *out = cJSON_ParseWithLength(v->str, v->len);

    if (!cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        pki_fail(res, PKI_INTERNAL, "corrupt ACME object");
        pki_log(res, "acme: %s does not hold a JSON object", key);
        return PKI_INTERNAL;
    }

    if (text != NULL) {
        *text = strndup(v->str, v->len);
        if (*text == NULL) {
            cJSON_Delete(*out);
            *out = NULL;
            return pki_fail(res, PKI_INTERNAL, "out of memory");
        }
    }

    return PKI_OK;
}


/* GET a JSON document: PKI_OK, PKI_NOT_FOUND or PKI_UNAVAILABLE.  text
 * (may be NULL) receives the stored text, malloc'd, for a compare-and-set
 * (pki_acme_cas). */
static pki_status_t
pki_acme_load_text(pki_redis_t *r, const char *key, cJSON **out,
    char **text, pki_result_t *res)
{
    pki_status_t   rc;
    redisReply    *reply;

    *out = NULL;
    if (text != NULL) {
        *text = NULL;
    }

    reply = pki_acme_cmd(r, res, 2, "GET", key);
    if (reply == NULL) {
        return PKI_UNAVAILABLE;
    }

    rc = pki_acme_value_json(reply, key, out, text, res);
    freeReplyObject(reply);

    return rc;
}


/* Runs a Lua script: EVAL script nkeys args... (all C strings).  Returns
 * the reply (caller frees) or NULL with res filled. */
static redisReply *
pki_acme_eval(pki_redis_t *r, pki_result_t *res, const char *script,
    int nkeys, int nargs, const char *const *args)
{
    int          i;
    char         num[12];
    size_t       lens[16];
    const char  *argv[16];

    if (nargs + 3 > 16) {
        pki_fail(res, PKI_INTERNAL, "redis: too many arguments");
        return NULL;
    }

    snprintf(num, sizeof(num), "%d", nkeys);
    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = num;

    for (i = 0; i < nargs; i++) {
        argv[3 + i] = args[i];
    }

    for (i = 0; i < nargs + 3; i++) {
        lens[i] = strlen(argv[i]);
    }

    return pki_int_redis_cmd(r, nargs + 3, argv, lens, res);
}


/*
 * Compare-and-set of a JSON document: replaced only while it still holds
 * the text it was read with.  KEYS[1]; ARGV[1] old text, ARGV[2] new text,
 * ARGV[3] TTL ("0": none, the document is kept).  ARGV[4] "1": a document
 * that holds the new text already counts as done.  Such a text carries a
 * random write id (accounts: pki_acme_account_rev()), so only this write
 * can have made it: run a second time because its answer was lost
 * (pki_redis_cmd_sent() repeats a command on a new connection), it must
 * not be told "changed meanwhile".  Orders and authorizations have none
 * (two challenge POSTs of one second make one text): "0".
 */
static const char  pki_lua_cas[] =
    "local cur = redis.call('GET', KEYS[1]) "
    "if ARGV[4] == '1' and cur == ARGV[2] then return 1 end "
    "if cur ~= ARGV[1] then return 0 end "
    "if ARGV[3] == '0' then redis.call('SET', KEYS[1], ARGV[2]) "
    "else redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end "
    "return 1";

/* An authorization deactivated (RFC 8555 7.5.2): compare-and-set of
 * KEYS[1] from ARGV[1] to ARGV[2] (TTL ARGV[3]), and its identifier's
 * "valid" index KEYS[2] dropped only while it names this authorization
 * (ARGV[4]), not a newer one; it leaves the account's pending ones
 * (KEYS[3], pki_lua_order_create; pcall: a key of another type there
 * costs the cap's count, not the deactivation).  1 done (also when
 * KEYS[1] holds ARGV[2] already: this script run before, its answer
 * lost, or the same deactivation by a concurrent request), 0 changed
 * meanwhile. */
static const char  pki_lua_authz_deactivate[] =
    "local cur = redis.call('GET', KEYS[1]) "
    "if cur == ARGV[2] then return 1 end "
    "if cur ~= ARGV[1] then return 0 end "
    "redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) "
    "if redis.call('GET', KEYS[2]) == ARGV[4] then "
    "  redis.call('DEL', KEYS[2]) "
    "end "
    "redis.pcall('ZREM', KEYS[3], ARGV[4]) "
    "return 1";

/* A counter of a clock hour: INCR KEYS[1], which expires an hour after
 * its first count. */
static const char  pki_lua_count_hour[] =
    "local n = redis.call('INCR', KEYS[1]) "
    "if n == 1 then redis.call('EXPIRE', KEYS[1], 3600) end "
    "return n";

/* ... and a count given back (a newOrder that made no order): only while
 * the key stands, so no key without an expiry is made */
static const char  pki_lua_uncount[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then "
    "  return redis.call('DECR', KEYS[1]) "
    "end "
    "return 0";

/* An account made before its location required EAB, bound now.  KEYS[1]
 * EAB key, KEYS[2] account; ARGV[1] id, ARGV[2] the account as read,
 * ARGV[3] the account with its binding, ARGV[4] "1" when ARGV[3] has a
 * write id.  1 bound (also when the account holds ARGV[3] already, with
 * its write id: this script run before, its answer lost), 0 the EAB key
 * is bound to another account or disabled, -1 the account changed
 * meanwhile. */
static const char  pki_lua_eab_bind[] =
    "if ARGV[4] == '1' and redis.call('GET', KEYS[2]) == ARGV[3] "
    "   and redis.call('HGET', KEYS[1], 'account') == ARGV[1] then "
    "  return 1 "
    "end "
    "local b = redis.call('HGET', KEYS[1], 'account') "
    "if b and b ~= '' and b ~= ARGV[1] then return 0 end "
    "if redis.call('HGET', KEYS[1], 'status') ~= 'active' then return 0 end "
    "if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end "
    "redis.call('HSET', KEYS[1], 'account', ARGV[1]) "
    "redis.call('SET', KEYS[2], ARGV[3]) "
    "return 1";

/* newAccount.  KEYS[1] key index, KEYS[2] account, KEYS[3] EAB key (when
 * bound); ARGV[1] id, ARGV[2] account, ARGV[3] and ARGV[4] the account
 * key name around an id.  Accounts have no TTL: one that is used for
 * years (a cluster's cert-manager) must not vanish under its owner.
 * Returns the id the key maps to afterwards (an index whose account is
 * gone is replaced), or "" when the EAB key was bound to another account
 * or disabled meanwhile, "!" when ARGV[5] (a counter of new accounts per
 * client address and clock hour, "": none) went over ARGV[6]; only an
 * account that is created counts.  The index and the account do not share
 * a hash tag: on a Redis Cluster these scripts would need both in one
 * slot (one Redis or a Sentinel pair is what the design runs today). */
static const char  pki_lua_new_account[] =
    "local cur = redis.call('GET', KEYS[1]) "
    "if cur and redis.call('EXISTS', ARGV[3] .. cur .. ARGV[4]) == 1 then "
    "  return cur "
    "end "
    "if KEYS[3] then "
    "  local b = redis.call('HGET', KEYS[3], 'account') "
    "  if b and b ~= '' and b ~= ARGV[1] then return '' end "
    "  if redis.call('HGET', KEYS[3], 'status') ~= 'active' then "
    "    return '' "
    "  end "
    "end "
    "if ARGV[5] ~= '' then "
    "  local n = redis.call('INCR', ARGV[5]) "
    "  if n == 1 then redis.call('EXPIRE', ARGV[5], 3600) end "
    "  if n > tonumber(ARGV[6]) then "
    "    redis.call('DECR', ARGV[5]) "
    "    return '!' "
    "  end "
    "end "
    "if KEYS[3] then redis.call('HSET', KEYS[3], 'account', ARGV[1]) end "
    "redis.call('SET', KEYS[2], ARGV[2]) "
    "redis.call('SET', KEYS[1], ARGV[1]) "
    "return ARGV[1]";

/* keyChange.  KEYS[1] new key index, KEYS[2] old key index, KEYS[3]
 * account; ARGV[1] id, ARGV[2] the account as read, ARGV[3] the account
 * with the new key, ARGV[4]/ARGV[5] as above, ARGV[6] "1" when ARGV[3]
 * has a write id.  Returns the account id holding the new key when it is
 * in use (409), "" when the account changed meanwhile, else ARGV[1] (done:
 * account, new index, old index removed, in one step; or done before,
 * when the account holds ARGV[3] already, with its write id: this script
 * run again, its answer lost). */
static const char  pki_lua_key_change[] =
    "local cur = redis.call('GET', KEYS[1]) "
    "if cur and cur ~= ARGV[1] "
    "   and redis.call('EXISTS', ARGV[4] .. cur .. ARGV[5]) == 1 then "
    "  return cur "
    "end "
    "local t = redis.call('GET', KEYS[3]) "
    "if ARGV[6] == '1' and t == ARGV[3] and cur == ARGV[1] then "
    "  return ARGV[1] "
    "end "
    "if t ~= ARGV[2] then return '' end "
    "redis.call('SET', KEYS[3], ARGV[3]) "
    "redis.call('SET', KEYS[1], ARGV[1]) "
    "if redis.call('GET', KEYS[2]) == ARGV[1] then "
    "  redis.call('DEL', KEYS[2]) "
    "end "
    "return ARGV[1]";

/* 1: swapped (*newtext receives the stored text, malloc'd, when not NULL),
 * 0: the document changed meanwhile, -1: Redis failed (res filled).  ttl
 * PKI_ACME_KEEP: no expiry (accounts). */
static int
pki_acme_cas(pki_redis_t *r, const char *key, const char *old,
    const cJSON *obj, long ttl, char **newtext, pki_result_t *res)
{
    int          v;
    char        *text, num[24];
    const char  *args[5];

    if (newtext != NULL) {
        *newtext = NULL;
    }

    text = cJSON_PrintUnformatted(obj);
    if (text == NULL) {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        return -1;
    }

    if (ttl == PKI_ACME_KEEP) {
        num[0] = '0';
        num[1] = '\0';

    } else {
        snprintf(num, sizeof(num), "%ld", ttl > 0 ? ttl : 1);
    }

    args[0] = key;
    args[1] = old;
    args[2] = text;
    args[3] = num;
    /* accounts, the documents kept without expiry, carry a write id */
    args[4] = ttl == PKI_ACME_KEEP ? pki_acme_account_mine(obj) : "0";

    v = pki_acme_cmd_int(r, res, pki_acme_eval(r, res, pki_lua_cas, 1, 5,
                                               args));

    if (v == 1 && newtext != NULL) {
        *newtext = text;
    } else {
        free(text);
    }

    return v;
}


/* ---- responses ---------------------------------------------------------------- */

static void
pki_acme_body(pki_acme_resp_t *resp, char *text, const char *ctype)
{
    free(resp->body);
    resp->body = (unsigned char *) text;
    resp->body_len = text != NULL ? strlen(text) : 0;
    resp->content_type = text != NULL ? ctype : NULL;
}


static void
pki_acme_json(pki_acme_t *a, int status, const cJSON *obj)
{
    char  *text;

    text = obj != NULL ? cJSON_PrintUnformatted(obj) : NULL;
    if (obj != NULL && text == NULL) {
        pki_acme_problem(a, 500, "serverInternal", "out of memory");
        return;
    }

    a->resp->http_status = status;
    pki_acme_body(a->resp, text, PKI_ACME_CT_JSON);
}


/* A problem document: type is an RFC 8555 6.7 name or a whole URN (as a
 * stored challenge error has it); status 0 leaves "status" out (as in a
 * subproblem).  NULL: out of memory. */
static cJSON *
pki_acme_problem_new(const char *type, const char *detail, int status)
{
    char    t[96];
    cJSON  *p, *d;

    p = cJSON_CreateObject();
    if (p == NULL) {
        return NULL;
    }

    snprintf(t, sizeof(t), "%s%s",
             strncmp(type, "urn:", 4) == 0 ? "" : PKI_ACME_ERR, type);

    d = NULL;

    if (cJSON_AddStringToObject(p, "type", t) == NULL
        || (d = cJSON_AddStringToObject(p, "detail", detail)) == NULL
        || (status > 0 && cJSON_AddNumberToObject(p, "status", status)
                          == NULL))
    {
        cJSON_Delete(p);
        return NULL;
    }

    pki_int_utf8_fix(d->valuestring);

    return p;
}


/* The status a problem of an RFC 8555 6.7 type has on its own (as
 * Boulder's): a wrong or missing answer of the client is 403, our own
 * failure 500, the rest 400. */
static int
pki_acme_type_status(const char *type)
{
    if (strncmp(type, PKI_ACME_ERR, sizeof(PKI_ACME_ERR) - 1) == 0) {
        type += sizeof(PKI_ACME_ERR) - 1;
    }

    return strcmp(type, "incorrectResponse") == 0
           || strcmp(type, "unauthorized") == 0
           || strcmp(type, "caa") == 0 ? 403
           : strcmp(type, "serverInternal") == 0 ? 500 : 400;
}


/* Adds to subs a subproblem (RFC 8555 6.7.1) about the identifier
 * id_type:id_value (either NULL: about no identifier one can name).  The
 * echo of what a client sent is cut to a DNS name's length, and subs to
 * the identifiers an order may hold. */
static void
pki_acme_subproblem(cJSON *subs, const char *type, const char *detail,
    const char *id_type, const char *id_value)
{
    char    t[17], v[256];
    cJSON  *p, *id;

    if (subs == NULL || cJSON_GetArraySize(subs) >= PKI_ACME_MAX_IDS) {
        return;
    }

    p = pki_acme_problem_new(type, detail, 0);
    if (p == NULL) {
        return;
    }

    if (id_type != NULL && id_value != NULL) {
        snprintf(t, sizeof(t), "%s", id_type);
        snprintf(v, sizeof(v), "%s", id_value);
        pki_int_utf8_fix(t);
        pki_int_utf8_fix(v);

        id = cJSON_AddObjectToObject(p, "identifier");
        if (id == NULL || cJSON_AddStringToObject(id, "type", t) == NULL
            || cJSON_AddStringToObject(id, "value", v) == NULL)
        {
            cJSON_Delete(p);
            return;
        }
    }

    cJSON_AddItemToArray(subs, p);
}


/* The identifiers of subproblems as '"a", "b"', as many as fit in size,
 * then how many more there are. */
static void
pki_acme_subproblem_names(const cJSON *subs, char *buf, size_t size)
{
    int          more;
    size_t       len;
    cJSON       *sub;
    const char  *v;

    len = 0;
    more = 0;
    buf[0] = '\0';

    cJSON_ArrayForEach(sub, subs) {
        v = pki_json_str(cJSON_GetObjectItemCaseSensitive(sub, "identifier"),
                         "value");
        if (v == NULL) {
            continue;
        }

        /* room for this one and for ", and 100 more" after it */
        if (more > 0 || len + strlen(v) + 4 + 16 >= size) {
            more++;
            continue;
        }

        len += (size_t) snprintf(buf + len, size - len, "%s\"%s\"",
                                 len > 0 ? ", " : "", v);
    }

    if (more > 0) {
        snprintf(buf + len, size - len, "%s%d more",
                 len > 0 ? ", and " : "", more);
    }
}


static void
pki_acme_vproblem(pki_acme_t *a, int status, const char *type, cJSON *subs,
    const char *fmt, va_list ap)
{
    char    detail[PKI_DETAIL_LEN], *text;
    cJSON  *obj, *algs;

    vsnprintf(detail, sizeof(detail), fmt, ap);

    if (a->res->status == PKI_OK) {
        a->res->status = status >= 500 ? (status == 503 ? PKI_UNAVAILABLE
                                                        : PKI_INTERNAL)
                                       : PKI_MALFORMED;
    }
    if (a->res->detail[0] == '\0' || status < 500) {
        snprintf(a->res->detail, sizeof(a->res->detail), "%.40s: %.200s",
                 type, detail);
        pki_int_tame(a->res->detail);
    }

    free(a->resp->location);
    a->resp->location = NULL;

    a->resp->http_status = status;
    a->resp->busy = 0;

    if (status == 503 || status == 429) {
        a->resp->retry_after = PKI_ACME_RETRY_AFTER;
    }

    obj = pki_acme_problem_new(type, detail, status);
    if (obj == NULL) {
        cJSON_Delete(subs);
        pki_acme_body(a->resp, NULL, NULL);
        return;
    }

    if (strcmp(type, "badSignatureAlgorithm") == 0) {
        static const char  *names[] = { "ES256", "ES384", "ES512", "RS256",
                                        "PS256", "EdDSA" };

        algs = cJSON_CreateStringArray(names, 6);
        if (algs != NULL) {
            cJSON_AddItemToObject(obj, "algorithms", algs);
        }
    }

    if (subs != NULL) {
        cJSON_AddItemToObject(obj, "subproblems", subs);
    }

    if (a->instance != NULL) {
        cJSON_AddStringToObject(obj, "instance", a->instance);
        a->instance = NULL;
    }

    text = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);

    pki_acme_body(a->resp, text, PKI_ACME_CT_PROBLEM);
}


static void
pki_acme_problem(pki_acme_t *a, int status, const char *type,
    const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    pki_acme_vproblem(a, status, type, NULL, fmt, ap);
    va_end(ap);
}


/* A problem with subproblems (RFC 8555 6.7.1), taken over. */
static void
pki_acme_problem_subs(pki_acme_t *a, int status, const char *type,
    cJSON *subs, const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    pki_acme_vproblem(a, status, type, subs, fmt, ap);
    va_end(ap);
}


/* A core status to a problem (after a failed core call). */
static void
pki_acme_fail(pki_acme_t *a, pki_status_t st, const char *what)
{
    switch (st) {
    case PKI_UNAVAILABLE:
        pki_acme_problem(a, 503, "serverInternal", "%s: service "
                         "unavailable, retry later", what);
        break;
    case PKI_NOT_FOUND:
        pki_acme_problem(a, 404, "malformed", "%s: not found", what);
        break;
    case PKI_MALFORMED:
        pki_acme_problem(a, 400, "malformed", "%s", a->res->detail);
        break;
    default:
        pki_acme_problem(a, 500, "serverInternal", "%s failed", what);
        break;
    }
}


static void
pki_acme_link(pki_acme_resp_t *resp, const char *url, const char *rel)
{
    int  i;

    for (i = 0; i < PKI_ACME_MAX_LINKS; i++) {
        if (resp->links[i] == NULL) {
            resp->links[i] = pki_strfmt("<%s>;rel=\"%s\"", url, rel);
            return;
        }
    }
}


/*
 * Nonces (RFC 8555 6.5) are stateless until used: version, expiry, 8
 * random octets and a truncated HMAC-SHA256 under a key kept in the state
 * store (<ns>acme:noncekey, made by the first process that needs it).  A
 * nonce costs Redis nothing until a signed request spends it: the redeem
 * script then sets <ns>acme:nonce:<NONCE> (SET NX, until the nonce's
 * expiry), and only while the store still holds the key the nonce was
 * made with, so a flushed store refuses every older nonce.  Each process
 * keeps the key per store; a nonce its key does not verify, or a redeem
 * that finds another key stored, loads it again (at most once a second).
 */

#define PKI_NONCE_VER      1
#define PKI_NONCE_RAW      21          /* 1 + 4 + 8 + 8 octets: 28 chars */
#define PKI_NONCE_TAG      8
#define PKI_NONCE_KEYS     64

static struct {
    char                id[320];       /* pki_int_redis_id() of the store */
    char                text[64];      /* base64url of 32 octets       */
    time_t              loaded;
}                       pki_nonce_keys[PKI_NONCE_KEYS];
static pthread_mutex_t  pki_nonce_lock = PTHREAD_MUTEX_INITIALIZER;


/* The nonce key of store st into text (64), loaded from (or made in)
 * Redis when not known, when reload is 1 and a second has passed since
 * the last load (a nonce this key does not verify: perhaps forged), or
 * when reload is 2 (the store said it holds another key).  1, or 0 when
 * there is none (Redis failed). */
static int
pki_nonce_key(pki_redis_t *st, int reload, char text[64])
{
    int           i, slot, v;
    char          key[PKI_ACME_KEY_MAX], fresh[64], id[320];
    time_t        now;
    redisReply   *reply;
    pki_result_t  tmp;

    now = time(NULL);
    slot = -1;
    pki_int_redis_id(st, id, sizeof(id));

    pthread_mutex_lock(&pki_nonce_lock);
    for (i = 0; i < PKI_NONCE_KEYS; i++) {
        if (strcmp(pki_nonce_keys[i].id, id) == 0) {
            slot = i;
            break;
        }
    }
    if (slot >= 0 && pki_nonce_keys[slot].text[0] != '\0'
        && (!reload || (reload == 1 && pki_nonce_keys[slot].loaded == now)))
    {
        memcpy(text, pki_nonce_keys[slot].text, 64);
        pthread_mutex_unlock(&pki_nonce_lock);
        return 1;
    }
    pthread_mutex_unlock(&pki_nonce_lock);

    pki_key_name(key, sizeof(key), st, NULL, "noncekey", NULL);
    pki_result_init(&tmp);

    for (i = 0; i < 2; i++) {
        reply = pki_acme_cmd(st, &tmp, 2, "GET", key);
        if (reply == NULL) {
            return 0;
        }
        v = reply->type == REDIS_REPLY_STRING && reply->len > 0
            && reply->len < 64;
        if (v) {
            memcpy(text, reply->str, reply->len);
            text[reply->len] = '\0';
        }
        freeReplyObject(reply);

        if (v) {
            break;
        }

        /* none yet (or the store was flushed): made once, by whoever
         * comes first */
        if (i == 1 || !pki_random_id(fresh, sizeof(fresh), 32)) {
            return 0;
        }
        if (pki_acme_cmd_int(st, &tmp, pki_acme_cmd(st, &tmp, 4, "SET", key,
                                                    fresh, "NX")) < 0)
        {
            return 0;
        }
    }

    pthread_mutex_lock(&pki_nonce_lock);
    if (slot < 0) {
        for (i = 0; i < PKI_NONCE_KEYS; i++) {
            if (pki_nonce_keys[i].id[0] == '\0'
                || strcmp(pki_nonce_keys[i].id, id) == 0)
            {
                slot = i;
                break;
            }
        }
    }
    if (slot >= 0) {
        memcpy(pki_nonce_keys[slot].id, id, sizeof(id));
        memcpy(pki_nonce_keys[slot].text, text, 64);
        pki_nonce_keys[slot].loaded = now;
    }
    pthread_mutex_unlock(&pki_nonce_lock);

    return 1;
}


/*
 * HMAC-SHA256 keyed with a nonce key, ready for the message: HMAC() looks
 * the MAC and its digest up in the providers on every call (twice per
 * request: the nonce taken, the one made), a copy of a keyed context does
 * not.  A few keys (one per state store), the oldest replaced.
 */

#define PKI_NONCE_MACS  4

static struct {
    char                text[64];
    EVP_MAC_CTX        *ctx;
}                       pki_nonce_macs[PKI_NONCE_MACS];
static unsigned         pki_nonce_mac_next;
static pthread_mutex_t  pki_nonce_mac_lock = PTHREAD_MUTEX_INITIALIZER;


/* a context of its own, keyed with keytext, or NULL */
static EVP_MAC_CTX *
pki_nonce_mac(const char *keytext)
{
    int           i;
    size_t        len;
    EVP_MAC      *mac;
    OSSL_PARAM    params[2];
    EVP_MAC_CTX  *ctx, *dup;

    len = strlen(keytext);
    if (len >= sizeof(pki_nonce_macs[0].text)) {
        return NULL;
    }

    pthread_mutex_lock(&pki_nonce_mac_lock);
    for (i = 0; i < PKI_NONCE_MACS; i++) {
        if (pki_nonce_macs[i].ctx != NULL
            && strcmp(pki_nonce_macs[i].text, keytext) == 0)
        {
            dup = EVP_MAC_CTX_dup(pki_nonce_macs[i].ctx);
            pthread_mutex_unlock(&pki_nonce_mac_lock);
            return dup;
        }
    }
    pthread_mutex_unlock(&pki_nonce_mac_lock);

    mac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
    ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac);

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();

    if (ctx == NULL
        || !EVP_MAC_init(ctx, (const unsigned char *) keytext, len, params)
        || (dup = EVP_MAC_CTX_dup(ctx)) == NULL)
    {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }

    pthread_mutex_lock(&pki_nonce_mac_lock);
    i = (int) (pki_nonce_mac_next++ % PKI_NONCE_MACS);
    EVP_MAC_CTX_free(pki_nonce_macs[i].ctx);
    memcpy(pki_nonce_macs[i].text, keytext, len + 1);
    pki_nonce_macs[i].ctx = ctx;
    pthread_mutex_unlock(&pki_nonce_mac_lock);

    return dup;
}


/* 1, or 0 when HMAC failed: then no nonce is made or taken */
static int
pki_nonce_tag(const char *keytext, const unsigned char *msg, size_t len,
    unsigned char tag[PKI_NONCE_TAG])
{
    int            ok;
    size_t         n;
    EVP_MAC_CTX   *ctx;
    unsigned char  md[EVP_MAX_MD_SIZE];

    ctx = pki_nonce_mac(keytext);
    if (ctx == NULL) {
        return 0;
    }

    n = 0;
    ok = EVP_MAC_update(ctx, msg, len)
         && EVP_MAC_final(ctx, md, &n, sizeof(md))
         && n >= PKI_NONCE_TAG;
    EVP_MAC_CTX_free(ctx);

    if (!ok) {
        return 0;
    }
    memcpy(tag, md, PKI_NONCE_TAG);

    return 1;
}


/* A nonce under keytext, valid until expires, into out (32). */
static int
pki_nonce_make(const char *keytext, time_t expires, char out[32])
{
    char           *b;
    uint32_t        exp;
    unsigned char   raw[PKI_NONCE_RAW];

    exp = (uint32_t) expires;
    raw[0] = PKI_NONCE_VER;
    raw[1] = (unsigned char) (exp >> 24);
    raw[2] = (unsigned char) (exp >> 16);
    raw[3] = (unsigned char) (exp >> 8);
    raw[4] = (unsigned char) exp;
    if (RAND_bytes(raw + 5, 8) != 1
        || !pki_nonce_tag(keytext, raw, 13, raw + 13))
    {
        return 0;
    }

    b = pki_b64url_encode(raw, sizeof(raw));
    if (b == NULL || strlen(b) >= 32) {
        free(b);
        return 0;
    }
    snprintf(out, 32, "%s", b);
    free(b);

    return 1;
}


/* 1 when nonce was made under keytext and has not expired at now (its
 * expiry in *expires), else 0. */
static int
pki_nonce_check(const char *keytext, const char *nonce, time_t now,
    time_t *expires)
{
    int             ok;
    size_t          len;
    uint32_t        exp;
    unsigned char  *raw, tag[PKI_NONCE_TAG];

    if (!pki_b64url_decode(nonce, strlen(nonce), &raw, &len)) {
        return 0;
    }

    ok = len == PKI_NONCE_RAW && raw[0] == PKI_NONCE_VER;
    if (ok) {
        ok = pki_nonce_tag(keytext, raw, 13, tag)
             && CRYPTO_memcmp(tag, raw + 13, PKI_NONCE_TAG) == 0;
        exp = (uint32_t) raw[1] << 24 | (uint32_t) raw[2] << 16
              | (uint32_t) raw[3] << 8 | raw[4];
        *expires = (time_t) exp;
        ok = ok && *expires >= now;
    }

    free(raw);

    return ok;
}


static void
pki_acme_nonce(pki_acme_t *a)
{
    char  keytext[64], nonce[32];

    if (!pki_nonce_key(PKI_ACME_ST(a->conf), 0, keytext)
        || !pki_nonce_make(keytext, a->now + (a->conf->nonce_ttl > 0
                                              ? a->conf->nonce_ttl : 3600),
                           nonce))
    {
        return;
    }

    memcpy(a->resp->nonce, nonce, sizeof(nonce));
}


/* ---- URLs ------------------------------------------------------------------------ */

static char *
pki_acme_url(pki_acme_t *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static char *
pki_acme_url(pki_acme_t *a, const char *fmt, ...)
{
    int       n;
    char     *tail, *s;
    va_list   ap;

    va_start(ap, fmt);
    n = vasprintf(&tail, fmt, ap);
    va_end(ap);

    if (n < 0) {
        return NULL;
    }

    s = pki_strfmt("%s/%s", a->req->base_url, tail);
    free(tail);

    return s;
}


static void
pki_json_url(pki_acme_t *a, cJSON *obj, const char *name, char *url)
{
    (void) a;

    if (url != NULL) {
        cJSON_AddStringToObject(obj, name, url);
        free(url);
    }
}


/* ---- profiles (draft-ietf-acme-profiles) ---------------------------------------------- */

static const pki_acme_profile_t *
pki_acme_profile_find(const pki_acme_conf_t *conf, const char *name)
{
    const pki_acme_profile_t  *p;

    for (p = conf->profiles; p != NULL && p->name != NULL; p++) {
        if (strcmp(p->name, name) == 0) {
            return p;
        }
    }

    return NULL;
}


/* What a client sent as a profile name, safe for a log line and a problem
 * detail: at most PKI_ACME_PROFILE_LEN characters, each outside
 * [A-Za-z0-9._-] shown as '?', and "..." when it was longer. */
static void
pki_acme_profile_echo(const char *in, char out[PKI_ACME_PROFILE_LEN + 4])
{
    size_t  i;

    for (i = 0; in[i] != '\0' && i < PKI_ACME_PROFILE_LEN; i++) {
        out[i] = (isalnum((unsigned char) in[i]) && !(in[i] & 0x80))
                 || in[i] == '.' || in[i] == '_' || in[i] == '-'
                 ? in[i] : '?';
    }

    if (in[i] != '\0') {
        memcpy(out + i, "...", 3);
        i += 3;
    }

    out[i] = '\0';
}


/* The template an order is issued with: its profile's, or the default for
 * an order without one (made without "profile", or before profiles
 * existed).  NULL: the order names a profile this location no longer
 * offers (removed from the configuration since). */
static pki_template_t *
pki_acme_order_tmpl(const pki_acme_conf_t *conf, const cJSON *order)
{
    const char                *name;
    const pki_acme_profile_t  *p;

    name = pki_json_str(order, "profile");
    if (name == NULL) {
        return conf->tmpl;
    }

    p = pki_acme_profile_find(conf, name);

    return p != NULL ? p->tmpl : NULL;
}


/*
 * An order is issued with the template of the location that made it
 * ("template" in its JSON: the profile's, or that location's default).
 * Locations of one realm share orders, and each would otherwise issue
 * with its own: an order made at a 7-day location, finalized at a 90-day
 * sibling, got 90 days, and a stricter location's choice could be
 * bypassed.  1: this location issues the order with its template, or it
 * names none (made before orders kept it, issued as before an upgrade),
 * or the profile it names is not offered here (finalize fails it as a
 * removed profile); 0: refused, problem set, nothing changed, so the
 * order stays finalizable where it was made.
 */
static int
pki_acme_order_bound(pki_acme_t *a, const char *oid, const cJSON *order)
{
    const char      *made, *here;
    pki_template_t  *tmpl;

    made = pki_json_str(order, "template");
    tmpl = pki_acme_order_tmpl(a->conf, order);

    if (made == NULL || tmpl == NULL) {
        return 1;
    }

    here = pki_template_name(tmpl);
    if (strcmp(made, here) == 0) {
        return 1;
    }

    pki_log(a->res, "acme: finalize of order %s refused: it was made for "
            "template \"%.64s\", this location issues it with \"%.64s\"",
            oid, made, here);

    pki_acme_problem(a, 403, "unauthorized", "this order was created at "
                     "another ACME location (template \"%.64s\"); "
                     "finalize it there", made);

    return 0;
}


/* The template a certificate of this CA was issued with, as its record
 * names it, when this location still issues with it; else the default
 * (the template a renewal without a profile gets). */
static pki_template_t *
pki_acme_record_tmpl(const pki_acme_conf_t *conf, const pki_record_t *rec)
{
    const pki_acme_profile_t  *p;

    for (p = conf->profiles; p != NULL && p->name != NULL; p++) {
        if (strcmp(pki_template_name(p->tmpl), rec->template_name) == 0) {
            return p->tmpl;
        }
    }

    return conf->tmpl;
}


/* ---- directory and nonces --------------------------------------------------------- */

static void
pki_acme_directory(pki_acme_t *a)
{
    int                        i;
    cJSON                     *dir, *meta, *caa, *profiles;
    const pki_acme_profile_t  *p;

    dir = cJSON_CreateObject();
    meta = cJSON_CreateObject();
    if (dir == NULL || meta == NULL) {
        cJSON_Delete(dir);
        cJSON_Delete(meta);
        pki_acme_problem(a, 500, "serverInternal", "out of memory");
        return;
    }

    pki_json_url(a, dir, "newNonce", pki_acme_url(a, "new-nonce"));
    pki_json_url(a, dir, "newAccount", pki_acme_url(a, "new-account"));
    pki_json_url(a, dir, "newOrder", pki_acme_url(a, "new-order"));
    pki_json_url(a, dir, "revokeCert", pki_acme_url(a, "revoke-cert"));
    pki_json_url(a, dir, "keyChange", pki_acme_url(a, "key-change"));
    pki_json_url(a, dir, "renewalInfo", pki_acme_url(a, "renewal-info"));

    if (a->conf->tos != NULL) {
        cJSON_AddStringToObject(meta, "termsOfService", a->conf->tos);
    }
    if (a->conf->website != NULL) {
        cJSON_AddStringToObject(meta, "website", a->conf->website);
    }
    if (a->conf->caa != NULL && a->conf->caa[0] != NULL) {
        caa = cJSON_AddArrayToObject(meta, "caaIdentities");
        for (i = 0; caa != NULL && a->conf->caa[i] != NULL; i++) {
            cJSON_AddItemToArray(caa, cJSON_CreateString(a->conf->caa[i]));
        }
    }
    if (a->conf->profiles != NULL && a->conf->profiles[0].name != NULL) {
        profiles = cJSON_AddObjectToObject(meta, "profiles");
        for (p = a->conf->profiles; profiles != NULL && p->name != NULL;
             p++)
        {
            cJSON_AddStringToObject(profiles, p->name,
                                    p->description != NULL ? p->description
                                                           : p->name);
        }
    }
    cJSON_AddBoolToObject(meta, "externalAccountRequired",
                          a->conf->eab_required ? 1 : 0);
    cJSON_AddItemToObject(dir, "meta", meta);

    pki_acme_json(a, 200, dir);
    cJSON_Delete(dir);
}


/*
 * The nonce redeem script: one round trip spends the request's nonce and
 * (only when the nonce was good) reads the object the request is about,
 * so that the handler does not read it again.  KEYS[1] the nonce's used
 * mark, KEYS[2] the nonce key, KEYS[3..] objects to read; ARGV[1] the
 * nonce's expiry (Unix time, judged and the mark's TTL counted by the
 * store's clock, the one all hosts share: hosts whose clocks differ never
 * take a nonce whose mark is gone), ARGV[2] (may be "") the key prefix
 * of the authorizations of the order read as the first object: those are
 * read too; ARGV[3] the nonce key the nonce verified under.  Returns
 * {spent, value of the first object, ..., then authz id, value pairs};
 * spent 0 returns nothing else; {-3} when the store holds another nonce
 * key (flushed, or made anew): nothing spent, the nonce is refused.
 *
 * ARGV[4] "1": KEYS[3] is the signer's account (in the store of the
 * nonces) and ARGV[5] the account text whose key verified the signature;
 * the objects start at KEYS[4].  When the account is not exactly that
 * text any more (keyChange, deactivation, update, expired copy), nothing
 * is spent and the script returns {-1, current text or nil}: the caller
 * verifies again with the current key.
 */
static const char  pki_lua_redeem[] =
    "local first = 3 "
    "if redis.call('GET', KEYS[2]) ~= ARGV[3] then return { -3 } end "
    "if ARGV[4] == '1' then "
    "  first = 4 "
    "  local cur = redis.call('GET', KEYS[3]) "
    "  if cur ~= ARGV[5] then return { -1, cur } end "
    "end "
    "local now = tonumber(redis.call('TIME')[1]) "
    "local left = tonumber(ARGV[1]) - now "
    "local spent = 0 "
    "if left >= 0 and redis.call('SET', KEYS[1], '1', 'EX', left + 1, "
    "                            'NX') then "
    "  spent = 1 "
    "end "
    "local out = { spent } "
    "if spent == 0 then return out end "
    "for i = first, #KEYS do out[#out + 1] = redis.call('GET', KEYS[i]) end "
    "if ARGV[2] ~= '' and out[2] then "
    "  local ok, o = pcall(cjson.decode, out[2]) "
    "  if ok and type(o) == 'table' and type(o.status) == 'string' "
    "     and o.status == 'pending' and type(o.authzs) == 'table' then "
    "    for i, id in ipairs(o.authzs) do "
    "      if i > 4 or type(id) ~= 'string' or #id > 64 then break end "
    "      out[#out + 1] = id "
    "      out[#out + 1] = redis.call('GET', ARGV[2] .. id) "
    "    end "
    "  end "
    "end "
    "return out";


static void
pki_acme_pre_add(pki_acme_t *a, const char *key, const redisReply *v)
{
    if (a->npre >= PKI_ACME_MAX_PRE) {
        return;
    }

    snprintf(a->pre[a->npre].key, sizeof(a->pre[a->npre].key), "%s", key);
    a->pre[a->npre].used = 0;
    a->pre[a->npre].text = NULL;

    if (v->type == REDIS_REPLY_STRING) {
        a->pre[a->npre].text = strndup(v->str, v->len);
        if (a->pre[a->npre].text == NULL) {
            return;                 /* not recorded: read again later */
        }

    } else if (v->type != REDIS_REPLY_NIL) {
        return;
    }

    a->npre++;
}


/* newOrder: the "valid" index keys of its identifiers (as the payload has
 * them; pki_acme_authz_for() reads any other one itself), at most
 * PKI_ACME_REUSE_PRE.  Returns how many. */
static int
pki_acme_reuse_keys(pki_acme_t *a, char keys[][PKI_ACME_KEY_MAX])
{
    int           n;
    char          idx[300];
    cJSON        *pl, *ids, *id;
    const char   *type, *value;

    if (a->conf->authz_reuse <= 0 || a->acct[0] == '\0'
        || a->jws.payload == NULL || a->jws.payload_len == 0)
    {
        return 0;
    }

    pl = cJSON_ParseWithLength((const char *) a->jws.payload,
                               a->jws.payload_len);
    ids = cJSON_GetObjectItemCaseSensitive(pl, "identifiers");

    n = 0;
    cJSON_ArrayForEach(id, ids) {
        if (n == PKI_ACME_REUSE_PRE) {
            break;
        }
        type = pki_json_str(id, "type");
        value = pki_json_str(id, "value");
        if (type == NULL || value == NULL || strlen(type) > 8
            || strlen(value) > 253)
        {
            continue;
        }
        snprintf(idx, sizeof(idx), "%s:%s", type, value);
        pki_acme_valid_key(keys[n++], PKI_ACME_KEY_MAX, PKI_ACME_ST(a->conf),
                           a->acct, a->conf->realm, idx);
    }

    cJSON_Delete(pl);

    return n;
}


/* 1: redeemed, 0: unknown, expired or used, -1: Redis failed.  A fresh
 * nonce for the response comes along.  acct_text (NULL: none) is the
 * signer's account as the signature was verified against it: the nonce is
 * spent only if the account is still exactly that text, else -2 and
 * nothing changed. */
static int
pki_acme_redeem(pki_acme_t *a, const char *nonce, const char *acct_text)
{
    int           nkeys, nargs, spent, nok, k;
    char          key[PKI_ACME_KEY_MAX], nkey[PKI_ACME_KEY_MAX], fresh[32];
    char          okey[PKI_ACME_REUSE_PRE][PKI_ACME_KEY_MAX];
    char          prefix[PKI_ACME_KEY_MAX], expiry[24], keytext[64];
    char          akey[PKI_ACME_KEY_MAX];
    size_t        i;
    time_t        expires;
    const char   *args[14], *acct, *id;
    redisReply   *reply;
    pki_redis_t  *st;

    if (nonce == NULL || nonce[0] == '\0' || strlen(nonce) > 64) {
        return 0;
    }

    st = PKI_ACME_ST(a->conf);

    if (!pki_nonce_key(st, 0, keytext)) {
        pki_fail(a->res, PKI_UNAVAILABLE, "certificate store unavailable");
        return -1;
    }

    /* not made under the key this process knows: perhaps under one made
     * since (another host after a flush); else forged, expired or of
     * another store, refused without a round trip */
    if (!pki_nonce_check(keytext, nonce, a->now, &expires)
        && (!pki_nonce_key(st, 1, keytext)
            || !pki_nonce_check(keytext, nonce, a->now, &expires)))
    {
        return 0;
    }

    if (!pki_nonce_make(keytext, a->now + (a->conf->nonce_ttl > 0
                                           ? a->conf->nonce_ttl : 3600),
                        fresh))
    {
        pki_fail(a->res, PKI_INTERNAL, "no randomness");
        return -1;
    }

    pki_key_name(key, sizeof(key), st, NULL, "nonce", nonce);
    pki_key_name(nkey, sizeof(nkey), st, NULL, "noncekey", NULL);
    snprintf(expiry, sizeof(expiry), "%lld", (long long) expires);

    /* the object of the resource, read along */
    nok = 0;
    prefix[0] = '\0';
    acct = a->nseg >= 3 ? a->seg[1] : NULL;
    id = a->nseg >= 3 ? a->seg[2] : NULL;

    if (acct != NULL && pki_id_ok(acct) && pki_id_ok(id)) {
        if ((a->nseg == 3 && strcmp(a->seg[0], "authz") == 0)
            || (a->nseg == 4 && strcmp(a->seg[0], "chall") == 0))
        {
            pki_key_name(okey[nok++], sizeof(okey[0]), st, acct, "authz",
                         id);

        } else if ((a->nseg == 3 && (strcmp(a->seg[0], "order") == 0
                                     || strcmp(a->seg[0], "finalize") == 0
                                     || strcmp(a->seg[0], "cert") == 0))
                   || (a->nseg == 4 && strcmp(a->seg[0], "cert") == 0))
        {
            pki_key_name(okey[nok++], sizeof(okey[0]), st, acct, "order",
                         id);
            if (strcmp(a->seg[0], "cert") != 0) {
                pki_key_name(prefix, sizeof(prefix), st, acct, "authz", "");
            }
        }

    } else if (a->nseg == 1 && strcmp(a->seg[0], "new-order") == 0) {
        /* the "valid" index entries authorization reuse will look up */
        nok = pki_acme_reuse_keys(a, okey);
    }

    nkeys = 0;
    args[nkeys++] = key;
    args[nkeys++] = nkey;
    if (acct_text != NULL) {
        pki_key_name(akey, sizeof(akey), st, a->acct, "acct", NULL);
        args[nkeys++] = akey;
    }
    for (k = 0; k < nok; k++) {
        args[nkeys++] = okey[k];
    }
    nargs = nkeys;
    args[nargs++] = expiry;
    args[nargs++] = prefix;
    args[nargs++] = keytext;
    if (acct_text != NULL) {
        args[nargs++] = "1";
        args[nargs++] = acct_text;
    }

    reply = pki_acme_eval(st, a->res, pki_lua_redeem, nkeys, nargs, args);
    if (reply == NULL) {
        return -1;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        freeReplyObject(reply);
        pki_fail(a->res, PKI_UNAVAILABLE, "certificate store unavailable");
        return -1;
    }

    if (reply->element[0]->integer == -3) {
        /* the store holds another key: the nonce is of a flushed store */
        freeReplyObject(reply);
        (void) pki_nonce_key(st, 2, keytext);
        return 0;
    }

    if (reply->element[0]->integer < 0) {
        freeReplyObject(reply);
        return -2;                  /* the account changed: nothing spent */
    }

    memcpy(a->resp->nonce, fresh, sizeof(fresh));
    spent = reply->element[0]->integer > 0;

    if (spent && nok > 0 && reply->elements >= (size_t) nok + 1) {
        for (k = 0; k < nok; k++) {
            pki_acme_pre_add(a, okey[k], reply->element[k + 1]);
        }

        for (i = (size_t) nok + 1; prefix[0] != '\0' && i + 1 < reply->elements;
             i += 2)
        {
            if (reply->element[i]->type != REDIS_REPLY_STRING
                || !pki_id_ok(reply->element[i]->str))
            {
                break;
            }
            pki_key_name(key, sizeof(key), st, acct, "authz",
                         reply->element[i]->str);
            pki_acme_pre_add(a, key, reply->element[i + 1]);
        }
    }

    freeReplyObject(reply);

    return spent;
}


/* ---- accounts ------------------------------------------------------------------------ */

/*
 * The last account text seen per account id, per process: a hint only.
 * A kid-signed request verifies its signature against the hint's key and
 * then hands the hint to the nonce redeem script, which spends the nonce
 * only if the stored account is still exactly that text (in the store of
 * the nonces: the account itself, or its copy with acme_redis).  So the
 * account is still read from Redis on every request, in the same round
 * trip as the nonce, and a keyChange, deactivation or update is seen at
 * once.  A stale hint costs the old two round trips.  Bounded, least
 * recently used out.
 */

#define PKI_ACME_HINTS  64

static struct {
    char                id[PKI_ACME_ID_MAX];
    char               *text;
    unsigned long long  used;
}                       pki_acme_hints[PKI_ACME_HINTS];
static unsigned long long  pki_acme_hint_clock;
static pthread_mutex_t  pki_acme_hint_lock = PTHREAD_MUTEX_INITIALIZER;


/* a copy of the hint for id, or NULL */
static char *
pki_acme_hint_get(const char *id)
{
    int    i;
    char  *t = NULL;

    pthread_mutex_lock(&pki_acme_hint_lock);

    for (i = 0; i < PKI_ACME_HINTS; i++) {
        if (pki_acme_hints[i].text != NULL
            && strcmp(pki_acme_hints[i].id, id) == 0)
        {
            t = strdup(pki_acme_hints[i].text);
            pki_acme_hints[i].used = ++pki_acme_hint_clock;
            break;
        }
    }

    pthread_mutex_unlock(&pki_acme_hint_lock);

    return t;
}


/* text NULL: forget the hint */
static void
pki_acme_hint_put(const char *id, const char *text)
{
    int    i, slot, victim;
    char  *t, *old;

    if (strlen(id) >= PKI_ACME_ID_MAX) {
        return;
    }

    t = NULL;
    if (text != NULL && (t = strdup(text)) == NULL) {
        return;
    }

    pthread_mutex_lock(&pki_acme_hint_lock);

    slot = -1;
    victim = 0;
    for (i = 0; i < PKI_ACME_HINTS; i++) {
        if (pki_acme_hints[i].text != NULL
            && strcmp(pki_acme_hints[i].id, id) == 0)
        {
            slot = i;
            break;
        }
        if (pki_acme_hints[i].used < pki_acme_hints[victim].used) {
            victim = i;
        }
    }

    if (slot < 0) {
        slot = victim;
    }
    if (t == NULL && pki_acme_hints[slot].text != NULL
        && strcmp(pki_acme_hints[slot].id, id) != 0)
    {
        pthread_mutex_unlock(&pki_acme_hint_lock);
        return;                     /* nothing to forget */
    }

    old = pki_acme_hints[slot].text;
    snprintf(pki_acme_hints[slot].id, sizeof(pki_acme_hints[slot].id), "%s",
             id);
    pki_acme_hints[slot].text = t;
    pki_acme_hints[slot].used = t != NULL ? ++pki_acme_hint_clock : 0;

    pthread_mutex_unlock(&pki_acme_hint_lock);

    free(old);
}


/*
 * The account's copy in the state store (acme_redis): refreshed from the
 * durable account when missing, and written in every state store of the
 * server after the durable account changed (pki_acme_account_copy: a
 * keyChange, update or deactivation at any location) or the admin API
 * revoked it (pki_acme_account_revoke).
 * The durable and the state store are two servers, so a writer that read
 * the durable account a moment ago may land after a newer writer; a copy
 * whose status is no longer "valid" (deactivated, revoked: both final) is
 * therefore never replaced nor dropped, it only expires, and by then the
 * durable account says the same.  Every durable change raises the
 * account's "rev" (pki_acme_account_rev), so a valid copy is not replaced
 * by an older text either: a writer that lands late (an update's copy
 * after a keyChange's) cannot give a replaced key back its account.
 * KEYS[1] the copy; ARGV[1] the text, "" to drop the copy; ARGV[2] TTL;
 * ARGV[3] "1": only when there is none; ARGV[4] the text's rev.
 * Returns 1 when written (or dropped), 0 when kept.
 */
static const char  pki_lua_acct_copy[] =
    "local cur = redis.call('GET', KEYS[1]) "
    "if cur then "
    "  if ARGV[3] == '1' then return 0 end "
    "  local ok, o = pcall(cjson.decode, cur) "
    "  if not ok or type(o) ~= 'table' or o.status ~= 'valid' then "
    "    return 0 "
    "  end "
    "  if ARGV[1] ~= '' "
    "     and (tonumber(o.rev) or 0) > (tonumber(ARGV[4]) or 0) then "
    "    return 0 "
    "  end "
    "end "
    "if ARGV[1] == '' then redis.call('DEL', KEYS[1]) return 1 end "
    "redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) "
    "return 1";


/*
 * The account's revision: raised by one with every change of the
 * durable account (rev_up), so that copies can tell an older text from a
 * newer one; accounts made before it was kept count as 0.  Each change
 * also gets a random write id, "w", so that the text it writes is its
 * own: two requests that read one text and make the same change (a host
 * with a stale copy repeating a keyChange) write two texts.  A script
 * run again after its answer was lost (pki_redis_cmd_sent()) can thus
 * tell its own write, done, from another's (pki_acme_account_mine()).
 */
static double
pki_acme_account_rev(cJSON *acct, int rev_up)
{
    char          w[24];
    double        rev;
    const cJSON  *r;

    r = cJSON_GetObjectItemCaseSensitive(acct, "rev");
    rev = cJSON_IsNumber(r) && r->valuedouble >= 0 ? r->valuedouble : 0;

    if (rev_up) {
        rev += 1;
        pki_json_set_item(acct, "rev", cJSON_CreateNumber(rev));

        if (pki_random_id(w, sizeof(w), 12)) {
            pki_json_set_str(acct, "w", w);

        } else {
            cJSON_DeleteItemFromObjectCaseSensitive(acct, "w");
        }
    }

    return rev;
}


/* "1" when the account's text, with its write id, can only be this
 * change's (see pki_acme_account_rev()), for the scripts' ARGV */
static const char *
pki_acme_account_mine(const cJSON *acct)
{
    return pki_json_str(acct, "w") != NULL ? "1" : "0";
}


/* text NULL: drop the copy.  1 written, 0 kept, -1 Redis failed. */
static int
pki_acme_copy_write(pki_redis_t *st, const char *id, const char *text,
    int nx, pki_result_t *res)
{
    char         ckey[PKI_ACME_KEY_MAX], rev[32];
    cJSON       *o;
    const char  *args[5];

    pki_key_name(ckey, sizeof(ckey), st, id, "acct", NULL);

    o = text != NULL ? cJSON_Parse(text) : NULL;
    snprintf(rev, sizeof(rev), "%.0f", o != NULL ? pki_acme_account_rev(o, 0)
                                                 : 0);
    cJSON_Delete(o);

    args[0] = ckey;
    args[1] = text != NULL ? text : "";
    args[2] = PKI_ACME_ACCT_COPY_TTL;
    args[3] = nx ? "1" : "0";
    args[4] = rev;

    return pki_acme_cmd_int(st, res, pki_acme_eval(st, res,
                                                   pki_lua_acct_copy, 1, 5,
                                                   args));
}


static pki_status_t
pki_acme_account_load(pki_acme_t *a, const char *id, cJSON **out,
    char **text)
{
    int           v;
    char          key[PKI_ACME_KEY_MAX], ckey[PKI_ACME_KEY_MAX], *t;
    pki_status_t  rc;

    if (!pki_id_ok(id)) {
        *out = NULL;
        return PKI_NOT_FOUND;
    }

    pki_key_name(key, sizeof(key), a->conf->redis, id, "acct", NULL);

    if (a->conf->state_redis == NULL) {
        return pki_acme_load_text(a->conf->redis, key, out, text, a->res);
    }

    /* split stores: a copy of the account in the state store spares the
     * durable one (busy with its fsyncs) a read per request */
    pki_key_name(ckey, sizeof(ckey), a->conf->state_redis, id, "acct", NULL);

    rc = pki_acme_load_text(a->conf->state_redis, ckey, out, text, a->res);
    if (rc != PKI_NOT_FOUND) {
        return rc;
    }

    t = NULL;
    rc = pki_acme_load_text(a->conf->redis, key, out, &t, a->res);
    if (rc == PKI_OK) {
        pki_result_t  tmp;

        pki_result_init(&tmp);
        v = pki_acme_copy_write(a->conf->state_redis, id, t, 1, &tmp);
        (void) v;
    }

    if (text != NULL) {
        *text = t;
    } else {
        free(t);
    }

    return rc;
}


/* After the durable account changed: the state store's copy follows (text
 * NULL: the copy is dropped, the next read refreshes it). */
/* After the durable account changed: its copy in this location's state
 * store and in every other acme_redis of the server (the account is the
 * server's: after a keyChange, a deactivation or a contact update no
 * location may go on with the old text for the copy's lifetime).  text
 * NULL drops the copies (the next read refreshes them).  Returns how many
 * of the copies could not be written; each of those stands until it
 * expires (PKI_ACME_ACCT_COPY_TTL). */
static size_t
pki_acme_account_copy(pki_acme_t *a, const char *id, const char *text)
{
    size_t         i, failed;
    pki_redis_t   *st;
    pki_result_t   tmp;

    failed = 0;

    for (i = 0; i <= a->conf->nacme_state; i++) {
        st = (i == 0) ? a->conf->state_redis : a->conf->acme_state[i - 1];

        if (st == NULL || (i > 0 && st == a->conf->state_redis)) {
            continue;
        }

        pki_result_init(&tmp);
        if (pki_acme_copy_write(st, id, text, 0, &tmp) < 0) {
            failed++;
        }
    }

    return failed;
}


/* After a compare-and-set on the durable account lost, or its answer was
 * lost: every copy takes the durable account as it is now (no older text
 * than a copy's own, see pki_lua_acct_copy), so no location goes on with
 * the text that lost.  A copy dropped instead could be written back, old,
 * by a reader that read the durable account before the change.  Dropped
 * only when the durable account cannot be read. */
static void
pki_acme_account_resync(pki_acme_t *a, const char *id)
{
    char          key[PKI_ACME_KEY_MAX], *t;
    cJSON        *o;
    pki_result_t  tmp;

    if (a->conf->state_redis == NULL && a->conf->nacme_state == 0) {
        return;
    }

    pki_key_name(key, sizeof(key), a->conf->redis, id, "acct", NULL);
    pki_result_init(&tmp);
    o = NULL;
    t = NULL;

    if (pki_acme_load_text(a->conf->redis, key, &o, &t, &tmp) == PKI_OK) {
        (void) pki_acme_account_copy(a, id, t);

    } else {
        (void) pki_acme_account_copy(a, id, NULL);
    }

    cJSON_Delete(o);
    free(t);
}


/* the log's note of copies that pki_acme_account_copy() could not write */
static void
pki_acme_copy_failed(pki_acme_t *a, size_t failed)
{
    if (failed) {
        pki_log(a->res, "%sthe account's copy could not be written in %zu "
                "state stores (acme_redis): the old one stands there until "
                "it expires (" PKI_ACME_ACCT_COPY_TTL " s)",
                a->res->log[0] ? "; " : "", failed);
    }
}


/* The refusal of an account whose status (st: NULL when it has none) is
 * not "valid" (RFC 8555 7.1.6: "revoked" is the server's doing, the admin
 * API; "deactivated" the client's). */
static const char *
pki_acme_not_valid(const char *st)
{
    return st != NULL && strcmp(st, "revoked") == 0 ? "was revoked by the CA"
           : st != NULL && strcmp(st, "deactivated") == 0 ? "is deactivated"
           : "is not valid";
}


static void
pki_acme_account_reply(pki_acme_t *a, int status, const char *id,
    const cJSON *acct)
{
    cJSON        *out, *c;
    const char   *st;

    out = cJSON_CreateObject();
    if (out == NULL) {
        pki_acme_problem(a, 500, "serverInternal", "out of memory");
        return;
    }

    st = pki_json_str(acct, "status");
    cJSON_AddStringToObject(out, "status", st != NULL ? st : "valid");

    c = cJSON_GetObjectItemCaseSensitive(acct, "contact");
    if (cJSON_IsArray(c)) {
        cJSON_AddItemToObject(out, "contact", cJSON_Duplicate(c, 1));
    }

    c = cJSON_GetObjectItemCaseSensitive(acct, "tos");
    if (cJSON_IsBool(c)) {
        cJSON_AddBoolToObject(out, "termsOfServiceAgreed", cJSON_IsTrue(c));
    }

    c = cJSON_GetObjectItemCaseSensitive(acct, "eab_jws");
    if (cJSON_IsObject(c)) {
        cJSON_AddItemToObject(out, "externalAccountBinding",
                              cJSON_Duplicate(c, 1));
    }

    pki_json_url(a, out, "orders", pki_acme_url(a, "acct/%s/orders", id));

    pki_acme_json(a, status, out);
    cJSON_Delete(out);

    free(a->resp->location);
    a->resp->location = pki_acme_url(a, "acct/%s", id);
}


static int pki_acme_dns_ok(char *s, const char **why);

/* why a dns identifier that is an IP literal is refused (compared by
 * address: its detail joins it with "; ", the others with ": ") */
static const char  pki_acme_dns_why_ip[] =
    "an IP address is an identifier of type \"ip\" (RFC 8738)";


/* contact: an array of mailto: URLs */
static int
pki_acme_contact_ok(pki_acme_t *a, const cJSON *c)
{
    int          n;
    char         dom[260];
    const cJSON *item;
    const char  *s, *at, *p, *why;

    if (!cJSON_IsArray(c)) {
        pki_acme_problem(a, 400, "malformed", "\"contact\" must be an array");
        return 0;
    }

    n = 0;
    cJSON_ArrayForEach(item, c) {
        if (++n > PKI_ACME_MAX_CONTACTS) {
            pki_acme_problem(a, 400, "malformed", "too many contacts");
            return 0;
        }

        if (!cJSON_IsString(item)) {
            pki_acme_problem(a, 400, "malformed", "a contact must be a "
                             "string");
            return 0;
        }

        s = item->valuestring;

        /* a URI scheme is case-insensitive (RFC 3986 3.1) */
        if (strncasecmp(s, "mailto:", 7) != 0) {
            pki_acme_problem(a, 400, "unsupportedContact", "only mailto: "
                             "contacts are supported");
            return 0;
        }

        /* one addr-spec, no hfields (RFC 8555 7.3): a local part, one
         * "@", a domain; nothing percent-encoded that would decode to
         * a second address, and no gen-delim RFC 6068 2 wants encoded
         * ("#" would start a fragment, "/" and "[]" end the address
         * to a URI reader) */
        at = strchr(s + 7, '@');
        if (strlen(s) > 256 || at == NULL || at == s + 7 || at[1] == '\0'
            || strchr(at + 1, '@') != NULL
            || strpbrk(s, "?,;% \t\r\n<>\"#/[]") != NULL)
        {
            pki_acme_problem(a, 400, "invalidContact", "invalid contact "
                             "address");
            return 0;
        }

        /* printable ASCII only (RFC 3986: anything else is
         * percent-encoded, and "%" is refused above), and a domain that
         * is a host name */
        for (p = s; *p != '\0'; p++) {
            if ((unsigned char) *p < 0x21 || (unsigned char) *p > 0x7e) {
                pki_acme_problem(a, 400, "invalidContact", "a contact "
                                 "address must be printable ASCII");
                return 0;
            }
        }

        snprintf(dom, sizeof(dom), "%s", at + 1);
        why = NULL;
        if (dom[0] == '*' || !pki_acme_dns_ok(dom, &why)) {
            if (why == pki_acme_dns_why_ip) {
                why = "an IP address";
            }
            pki_acme_problem(a, 400, "invalidContact", "the domain of a "
                             "contact address is no host name%s%s",
                             why ? ": " : "", why ? why : "");
            return 0;
        }
    }

    return 1;
}


static pki_status_t
pki_acme_eab_check(pki_acme_t *a, const cJSON *eab, const char *acct_id,
    char *kid_out, size_t kid_size)
{
    int             bad, v;
    char           *kid = NULL, *url = NULL, key[PKI_ACME_KEY_MAX], *nurl;
    cJSON          *hdr = NULL, *prot, *pay, *sig, *alg, *hm;
    size_t          hlen, plen, slen, klen, n;
    EVP_PKEY       *pk = NULL;
    redisReply     *reply = NULL;
    unsigned char  *hbuf = NULL, *pbuf = NULL, *sbuf = NULL, *kbuf = NULL;
    unsigned char   mac[EVP_MAX_MD_SIZE];
    unsigned int    maclen;
    const EVP_MD   *md;
    char            thumb[PKI_JWK_THUMB_LEN], *input = NULL;
    pki_status_t    rc = PKI_MALFORMED;

    prot = cJSON_GetObjectItemCaseSensitive(eab, "protected");
    pay = cJSON_GetObjectItemCaseSensitive(eab, "payload");
    sig = cJSON_GetObjectItemCaseSensitive(eab, "signature");

    /* flattened JWS with these three members only: the binding is kept
     * with the account and shown with it, so nothing the MAC does not
     * cover (an unprotected "header", anything else) is taken */
    if (!cJSON_IsObject(eab) || !cJSON_IsString(prot) || !cJSON_IsString(pay)
        || !cJSON_IsString(sig) || cJSON_GetArraySize(eab) != 3)
    {
        pki_acme_problem(a, 400, "malformed", "bad externalAccountBinding "
                         "(a flattened JWS: protected, payload and "
                         "signature, nothing else)");
        goto done;
    }

    hlen = strlen(prot->valuestring);
    plen = strlen(pay->valuestring);

    if (!pki_b64url_decode(prot->valuestring, hlen, &hbuf, &n)
        || (hdr = pki_int_json_strict(hbuf, n)) == NULL
        || !cJSON_IsObject(hdr)
        || !pki_b64url_decode(pay->valuestring, plen, &pbuf, &n)
        || !pki_b64url_decode(sig->valuestring, strlen(sig->valuestring),
                              &sbuf, &slen))
    {
        pki_acme_problem(a, 400, "malformed", "bad externalAccountBinding");
        goto done;
    }

    /* RFC 8555 7.3.4: a MAC algorithm (cert-manager offers all three) */
    alg = cJSON_GetObjectItemCaseSensitive(hdr, "alg");
    md = !cJSON_IsString(alg) ? NULL
         : strcmp(alg->valuestring, "HS256") == 0 ? EVP_sha256()
         : strcmp(alg->valuestring, "HS384") == 0 ? EVP_sha384()
         : strcmp(alg->valuestring, "HS512") == 0 ? EVP_sha512() : NULL;
    if (md == NULL) {
        pki_acme_problem(a, 400, "malformed", "externalAccountBinding must "
                         "use HS256, HS384 or HS512");
        goto done;
    }

    bad = cJSON_GetObjectItemCaseSensitive(hdr, "nonce") != NULL
          || cJSON_GetObjectItemCaseSensitive(hdr, "crit") != NULL;

    kid = (char *) pki_json_str(hdr, "kid");
    url = (char *) pki_json_str(hdr, "url");
    nurl = pki_acme_url(a, "new-account");

    if (bad || kid == NULL || url == NULL || nurl == NULL
        || strcmp(url, nurl) != 0 || !pki_id_ok(kid))
    {
        free(nurl);
        pki_acme_problem(a, 400, "malformed", "externalAccountBinding "
                         "header must hold kid and the newAccount url, "
                         "no nonce");
        goto done;
    }
    free(nurl);

    /* the payload is the account key */
    pk = pki_jwk_parse((char *) pbuf, n, a->res);
    if (pk == NULL || !pki_jwk_thumbprint(pk, thumb)
        || strcmp(thumb, a->jws.thumb) != 0)
    {
        pki_acme_problem(a, 400, "malformed", "externalAccountBinding "
                         "payload must be the account key");
        goto done;
    }

    pki_key_name(key, sizeof(key), a->conf->redis, NULL, "eab", kid);

    reply = pki_acme_cmd(a->conf->redis, a->res, 2, "HGETALL", key);
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        pki_acme_fail(a, PKI_UNAVAILABLE, "externalAccountBinding");
        rc = PKI_UNAVAILABLE;
        goto done;
    }

    hm = NULL;
    {
        size_t       i;
        const char  *hmac = NULL, *status = NULL, *bound = NULL;

        for (i = 0; i + 1 < reply->elements; i += 2) {
            if (reply->element[i]->type != REDIS_REPLY_STRING
                || reply->element[i + 1]->type != REDIS_REPLY_STRING)
            {
                continue;
            }
            if (strcmp(reply->element[i]->str, "hmac") == 0) {
                hmac = reply->element[i + 1]->str;
            } else if (strcmp(reply->element[i]->str, "status") == 0) {
                status = reply->element[i + 1]->str;
            } else if (strcmp(reply->element[i]->str, "account") == 0) {
                bound = reply->element[i + 1]->str;
            }
        }

        if (hmac == NULL || status == NULL || strcmp(status, "active") != 0
            || (bound != NULL && bound[0] != '\0'
                && strcmp(bound, acct_id) != 0))
        {
            /* the client is told one thing for all; the operator why */
            pki_acme_problem(a, 403, "unauthorized", PKI_ACME_EAB_REFUSED);
            pki_log(a->res, "acme: EAB key %s %s", kid,
                    (hmac == NULL || status == NULL)
                    ? "is unknown (or its record is incomplete)"
                    : strcmp(status, "active") != 0
                    ? "is disabled (DELETE acme/eab)"
                    : "is bound to another account already (a key binds "
                      "one account)");
            goto done;
        }

        if (!pki_b64url_decode(hmac, strlen(hmac), &kbuf, &klen)) {
            pki_acme_problem(a, 500, "serverInternal", "bad EAB key");
            goto done;
        }
    }
    (void) hm;

    input = pki_strfmt("%s.%s", prot->valuestring, pay->valuestring);
    if (input == NULL
        || HMAC(md, kbuf, (int) klen, (unsigned char *) input,
                strlen(input), mac, &maclen) == NULL)
    {
        pki_acme_problem(a, 500, "serverInternal", "HMAC failed");
        goto done;
    }

    if (slen != maclen || CRYPTO_memcmp(mac, sbuf, maclen) != 0) {
        pki_acme_problem(a, 403, "unauthorized", PKI_ACME_EAB_REFUSED);
        pki_log(a->res, "acme: the binding's MAC does not verify under EAB "
                "key %s", kid);
        goto done;
    }

    /* the key is bound to the account by the newAccount script */
    (void) v;
    snprintf(kid_out, kid_size, "%s", kid);
    rc = PKI_OK;

done:

    if (reply != NULL) {
        freeReplyObject(reply);
    }
    cJSON_Delete(hdr);
    EVP_PKEY_free(pk);
    if (kbuf != NULL) {
        OPENSSL_cleanse(kbuf, klen);
    }
    free(kbuf);
    free(hbuf);
    free(pbuf);
    free(sbuf);
    free(input);

    return rc;
}


/* The bucket new accounts are counted in: an IPv4 address, an IPv6
 * address's /64 (one host is given a whole /64 as easily as one address),
 * "unknown" when the glue knows none. */
static void
pki_acme_client_bucket(const char *client, char *out, size_t size)
{
    unsigned char  a6[16];
    char           text[INET6_ADDRSTRLEN];

    if (client != NULL && inet_pton(AF_INET6, client, a6) == 1
        && !IN6_IS_ADDR_V4MAPPED((struct in6_addr *) a6))
    {
        memset(a6 + 8, 0, 8);
        if (inet_ntop(AF_INET6, a6, text, sizeof(text)) != NULL) {
            snprintf(out, size, "%s/64", text);
            return;
        }
    }

    snprintf(out, size, "%s", client != NULL && client[0] != '\0'
                              && strlen(client) < INET6_ADDRSTRLEN
                              ? client : "unknown");
}


/* newAccount for the key of an account made without a binding, at a
 * location that requires one: the request's binding (RFC 8555 7.3.4)
 * binds it in place, *acct then holding the bound account.  1 done (or no
 * binding given: the caller refuses), 0 refused (the problem set). */
static int
pki_acme_eab_bind(pki_acme_t *a, const char *id, cJSON **acct,
    const char *text)
{
    int           v;
    char          eab_kid[64], ekey[PKI_ACME_KEY_MAX], akey[PKI_ACME_KEY_MAX];
    char         *nt;
    cJSON        *eab;
    const char   *args[6];
    redisReply   *reply;

    eab = cJSON_GetObjectItemCaseSensitive(a->payload,
                                           "externalAccountBinding");
    if (eab == NULL) {
        return 1;
    }

    if (pki_acme_eab_check(a, eab, id, eab_kid, sizeof(eab_kid)) != PKI_OK) {
        return 0;
    }

    pki_json_set_str(*acct, "eab", eab_kid);
    pki_json_set_item(*acct, "eab_jws", cJSON_Duplicate(eab, 1));
    (void) pki_acme_account_rev(*acct, 1);

    nt = cJSON_PrintUnformatted(*acct);
    if (nt == NULL || text == NULL) {
        free(nt);
        pki_acme_problem(a, 500, "serverInternal", "out of memory");
        return 0;
    }

    pki_key_name(ekey, sizeof(ekey), a->conf->redis, NULL, "eab", eab_kid);
    pki_key_name(akey, sizeof(akey), a->conf->redis, id, "acct", NULL);
    args[0] = ekey;
    args[1] = akey;
    args[2] = id;
    args[3] = text;
    args[4] = nt;
    args[5] = pki_acme_account_mine(*acct);

    reply = pki_acme_eval(a->conf->redis, a->res, pki_lua_eab_bind, 2, 6,
                          args);
    v = reply != NULL && reply->type == REDIS_REPLY_INTEGER
        ? (int) reply->integer : -2;
    if (reply != NULL) {
        freeReplyObject(reply);
    }

    if (v == 1) {
        snprintf(a->res->log, sizeof(a->res->log), "acme: account %s "
                 "bound to EAB key %s", id, eab_kid);
        pki_acme_copy_failed(a, pki_acme_account_copy(a, id, nt));
    }
    free(nt);

    if (v == 1) {
        return 1;
    }

    if (v == 0) {
        pki_acme_problem(a, 403, "unauthorized", "the "
                         "externalAccountBinding key was used or disabled "
                         "meanwhile");
    } else if (v == -1) {
        pki_acme_account_resync(a, id);
        pki_acme_problem(a, 409, "malformed", "the account changed "
                         "meanwhile; retry");
    } else {
        pki_acme_account_resync(a, id);
        pki_acme_fail(a, PKI_UNAVAILABLE, "newAccount");
    }

    return 0;
}


/* newAccount for a key whose account is id (RFC 8555 7.3.1), found by the
 * key index or by losing the race to create one: the account is answered
 * only if it may be used here.  1 answered (or refused), 0 the account is
 * gone and nothing is answered. */
static int
pki_acme_account_existing(pki_acme_t *a, const char *id, int only)
{
    char          *text;
    cJSON         *acct;
    const char    *st;
    pki_status_t   rc;

    text = NULL;
    rc = pki_acme_account_load(a, id, &acct, &text);
    if (rc == PKI_NOT_FOUND) {
        return 0;
    }
    if (rc != PKI_OK) {
        pki_acme_fail(a, rc, "account");
        return 1;
    }

    /* the index read before a keyChange moved the account to another key:
     * the account is no longer this key's (its new key's holder alone may
     * read it), and the key is free */
    st = pki_json_str(acct, "thumb");
    if (st != NULL && strcmp(st, a->jws.thumb) != 0) {
        cJSON_Delete(acct);
        free(text);
        return 0;
    }

    /* RFC 8555 7.3.6: a deactivated account's key is refused, here as on
     * every other resource */
    st = pki_json_str(acct, "status");
    if (st != NULL && strcmp(st, "valid") != 0) {
        pki_acme_problem(a, 401, "unauthorized", "the account of this key "
                         "%s", pki_acme_not_valid(st));
        goto done;
    }

    if (a->conf->eab_required && pki_json_str(acct, "eab") == NULL
        && !only && !pki_acme_eab_bind(a, id, &acct, text))
    {
        goto done;
    }

    if (a->conf->eab_required && pki_json_str(acct, "eab") == NULL) {
        pki_acme_problem(a, 403, "externalAccountRequired", "the account of "
                         "this key has no external account binding, which "
                         "this location requires");
        goto done;
    }

    pki_acme_account_reply(a, 200, id, acct);

done:

    cJSON_Delete(acct);
    free(text);

    return 1;
}


static void
pki_acme_new_account(pki_acme_t *a)
{
    int          only;
    char         key[PKI_ACME_KEY_MAX], id[PKI_ACME_ID_MAX], eab_kid[64];
    cJSON       *acct, *c, *tos, *eab;
    redisReply  *reply;

    if (a->payload == NULL) {
        pki_acme_problem(a, 400, "malformed", "newAccount needs a payload");
        return;
    }

    c = cJSON_GetObjectItemCaseSensitive(a->payload, "onlyReturnExisting");
    if (c != NULL && !cJSON_IsBool(c)) {
        /* a lookup must never create (RFC 8555 7.3.1) */
        pki_acme_problem(a, 400, "malformed", "onlyReturnExisting must be a "
                         "boolean");
        return;
    }
    only = cJSON_IsTrue(c);

    pki_key_name(key, sizeof(key), a->conf->redis, NULL, "jwk",
                 a->jws.thumb);

    reply = pki_acme_cmd(a->conf->redis, a->res, 2, "GET", key);
    if (reply == NULL) {
        pki_acme_fail(a, PKI_UNAVAILABLE, "newAccount");
        return;
    }

    if (reply->type == REDIS_REPLY_STRING && pki_id_ok(reply->str)) {
        snprintf(id, sizeof(id), "%s", reply->str);
        freeReplyObject(reply);
        reply = NULL;

        if (pki_acme_account_existing(a, id, only)) {
            return;
        }

        /* an index whose account is gone: the key has no account, and
         * creating one replaces the index (pki_lua_new_account) */
        pki_result_init(a->res);
        pki_log(a->res, "acme: the key index names account %s, which is "
                "gone or has another key now", id);
        goto absent;
    }

    freeReplyObject(reply);

absent:

    if (only) {
        pki_acme_problem(a, 400, "accountDoesNotExist", "no account for "
                         "this key");
        return;
    }

    tos = cJSON_GetObjectItemCaseSensitive(a->payload, "termsOfServiceAgreed");
    if (tos != NULL && !cJSON_IsBool(tos)) {
        pki_acme_problem(a, 400, "malformed", "termsOfServiceAgreed must be "
                         "a boolean");
        return;
    }

    if (a->conf->tos != NULL && !cJSON_IsTrue(tos)) {
        /* RFC 8555 7.3.3: "instance" is where a human reads how to agree */
        a->instance = a->conf->tos;
        pki_acme_problem(a, 403, "userActionRequired", "the terms of "
                         "service must be agreed to");
        /* RFC 8555 7.3.3: the terms the client is to agree to */
        pki_acme_link(a->resp, a->conf->tos, "terms-of-service");
        return;
    }

    c = cJSON_GetObjectItemCaseSensitive(a->payload, "contact");
    if (c != NULL && !pki_acme_contact_ok(a, c)) {
        return;
    }

    if (!pki_random_id(id, sizeof(id), 12)) {
        pki_acme_problem(a, 500, "serverInternal", "no randomness");
        return;
    }

    eab_kid[0] = '\0';
    eab = cJSON_GetObjectItemCaseSensitive(a->payload,
                                           "externalAccountBinding");
    if (eab != NULL) {
        if (pki_acme_eab_check(a, eab, id, eab_kid, sizeof(eab_kid))
            != PKI_OK)
        {
            return;
        }

    } else if (a->conf->eab_required) {
        pki_acme_problem(a, 403, "externalAccountRequired", "this server "
                         "requires an external account binding");
        return;
    }

    acct = cJSON_CreateObject();
    if (acct == NULL) {
        pki_acme_problem(a, 500, "serverInternal", "out of memory");
        return;
    }

    cJSON_AddStringToObject(acct, "status", "valid");
    cJSON_AddStringToObject(acct, "key", a->jws.jwk_json);
    cJSON_AddStringToObject(acct, "thumb", a->jws.thumb);
    if (c != NULL) {
        cJSON_AddItemToObject(acct, "contact", cJSON_Duplicate(c, 1));
    }
    if (tos != NULL) {
        cJSON_AddBoolToObject(acct, "tos", cJSON_IsTrue(tos));
    }
    if (eab_kid[0] != '\0') {
        cJSON_AddStringToObject(acct, "eab", eab_kid);
        /* RFC 8555 7.3.4: the account object carries the binding as the
         * request had it (verified, so no bigger than a MAC'd JWK) */
        cJSON_AddItemToObject(acct, "eab_jws", cJSON_Duplicate(eab, 1));
    }
    cJSON_AddNumberToObject(acct, "created", (double) a->now);

    /* account, key index and EAB binding in one step: a crash leaves
     * all or nothing, and of two requests with one key exactly one
     * creates the account; the other answers with it */
    {
        char         akey[PKI_ACME_KEY_MAX], ekey[PKI_ACME_KEY_MAX];
        char         rkey[PKI_ACME_KEY_MAX], limit[24], who[INET6_ADDRSTRLEN + 4];
        int          n, nkeys;
        char         prefix[PKI_ACME_KEY_MAX], *text;
        const char  *args[10];
        redisReply  *reply;

        text = cJSON_PrintUnformatted(acct);
        if (text == NULL) {
            cJSON_Delete(acct);
            pki_acme_problem(a, 500, "serverInternal", "out of memory");
            return;
        }

        pki_key_name(akey, sizeof(akey), a->conf->redis, id, "acct", NULL);
        snprintf(prefix, sizeof(prefix), "%s{acme:",
                 pki_redis_ns(a->conf->redis));

        n = 0;
        args[n++] = key;
        args[n++] = akey;
        if (eab_kid[0] != '\0') {
            pki_key_name(ekey, sizeof(ekey), a->conf->redis, NULL, "eab",
                         eab_kid);
            args[n++] = ekey;
        }
        nkeys = n;
        args[n++] = id;
        args[n++] = text;
        args[n++] = prefix;
        args[n++] = "}:acct";

        rkey[0] = '\0';
        who[0] = '\0';
        if (a->conf->accounts_per_hour > 0) {
            size_t  len;

            pki_acme_client_bucket(a->req->client, who, sizeof(who));
            snprintf(limit, sizeof(limit), "%lld",
                     (long long) (a->now / 3600));
            pki_key_name(rkey, sizeof(rkey), a->conf->redis, NULL,
                         "newacct", limit);
            len = strlen(rkey);
            snprintf(rkey + len, sizeof(rkey) - len, ":%s", who);
        }
        snprintf(limit, sizeof(limit), "%ld", a->conf->accounts_per_hour);
        args[n++] = rkey;
        args[n++] = limit;

        reply = pki_acme_eval(a->conf->redis, a->res, pki_lua_new_account,
                              nkeys, n, args);

        free(text);

        if (reply == NULL || reply->type != REDIS_REPLY_STRING) {
            if (reply != NULL) {
                freeReplyObject(reply);
            }
            cJSON_Delete(acct);
            pki_acme_fail(a, PKI_UNAVAILABLE, "newAccount");
            return;
        }

        if (reply->len == 0) {
            freeReplyObject(reply);
            cJSON_Delete(acct);
            pki_acme_problem(a, 403, "unauthorized", "the "
                             "externalAccountBinding key was used or "
                             "disabled meanwhile");
            return;
        }

        if (strcmp(reply->str, "!") == 0) {
            freeReplyObject(reply);
            cJSON_Delete(acct);
            pki_acme_problem(a, 429, "rateLimited", "at most %ld new "
                             "accounts per client address and hour (%s)",
                             a->conf->accounts_per_hour, who);
            a->resp->retry_after = (int) (3600 - a->now % 3600);
            return;
        }

        if (strcmp(reply->str, id) != 0) {
            /* lost a race against the same key: the winner is answered
             * as if the index had named it at the start, with the same
             * refusals (deactivated since, or made without the binding
             * this location requires) */
            snprintf(id, sizeof(id), "%s", reply->str);
            freeReplyObject(reply);
            cJSON_Delete(acct);

            if (!pki_acme_account_existing(a, id, 0)) {
                /* the script saw it a moment ago */
                pki_acme_fail(a, PKI_NOT_FOUND, "account");
            }
            return;
        }

        freeReplyObject(reply);
    }

    snprintf(a->res->log, sizeof(a->res->log), "acme: new account %s", id);

    pki_acme_account_reply(a, 201, id, acct);
    cJSON_Delete(acct);
}


static void pki_acme_account_cancel(pki_redis_t *r, pki_redis_t *r2,
    pki_redis_t *const *state, size_t nstate, const char *acct, time_t now,
    const char *why, char *line, size_t size);


/*
 * RFC 8555 7.3.6: the open orders of a deactivated account go with it.
 * The account is the server's, not a location's: its client may have
 * ordered through any ACME location, each keeping its orders in its own
 * acme_redis (conf->acme_state) or in pki_redis (conf->redis), so every
 * one of those stores is walked, as the admin API's revocation does
 * (pki_acme_account_revoke).  Each store among all the account's orders
 * it lists: locations that share a store may differ in acme_order_ttl,
 * and the list is trimmed to the last writer's at each newOrder anyway.
 *
 * The caller has written the account's copies in every state store
 * (pki_acme_account_copy) before: else a location would take new orders
 * from the account until its copy expires, some of them after its store
 * was walked.
 */
static void
pki_acme_account_deactivated(pki_acme_t *a, const char *id)
{
    char  line[PKI_LOG_LEN];

    pki_acme_account_cancel(PKI_ACME_ST(a->conf), a->conf->redis,
                            a->conf->acme_state, a->conf->nacme_state, id,
                            a->now, "the account was deactivated", line,
                            sizeof(line));

    pki_log(a->res, "%s%s", a->res->log[0] ? "; " : "", line);
}


/* 1 when the durable account reads "deactivated" now */
static int
pki_acme_account_deactivated_now(pki_acme_t *a, const char *id)
{
    int           v;
    char          key[PKI_ACME_KEY_MAX];
    cJSON        *o;
    const char   *st;
    pki_result_t  tmp;

    pki_key_name(key, sizeof(key), a->conf->redis, id, "acct", NULL);
    pki_result_init(&tmp);
    o = NULL;

    if (pki_acme_load_text(a->conf->redis, key, &o, NULL, &tmp) != PKI_OK) {
        return 0;
    }

    st = pki_json_str(o, "status");
    v = st != NULL && strcmp(st, "deactivated") == 0;
    cJSON_Delete(o);

    return v;
}


static void
pki_acme_account(pki_acme_t *a, const char *id)
{
    cJSON        *c, *st;
    pki_status_t  rc;

    if (strcmp(id, a->acct) != 0) {
        pki_acme_problem(a, 403, "unauthorized", "the account is not the "
                         "signer's");
        return;
    }

    if (a->payload != NULL) {
        /* RFC 8555 7.3.2: any other status is ignored (a client may post
         * back the account object it read); only deactivation acts */
        st = cJSON_GetObjectItemCaseSensitive(a->payload, "status");
        if (st != NULL && !cJSON_IsString(st)) {
            pki_acme_problem(a, 400, "malformed", "\"status\" must be a "
                             "string");
            return;
        }
        if (st != NULL && strcmp(st->valuestring, "deactivated") != 0) {
            st = NULL;
        }

        c = cJSON_GetObjectItemCaseSensitive(a->payload, "contact");
        if (c != NULL) {
            if (!pki_acme_contact_ok(a, c)) {
                return;
            }
            pki_json_set_item(a->account, "contact", cJSON_Duplicate(c, 1));
        }

        if (st != NULL) {
            pki_json_set_str(a->account, "status", "deactivated");
        }

        /* compare-and-set: a concurrent keyChange is never undone */
        {
            int   v;
            char  key[PKI_ACME_KEY_MAX];

            pki_key_name(key, sizeof(key), a->conf->redis, id, "acct", NULL);
            char  *nt;

            (void) pki_acme_account_rev(a->account, 1);
            v = a->account_text == NULL ? -1
                : pki_acme_cas(a->conf->redis, key, a->account_text,
                               a->account, PKI_ACME_KEEP, &nt, a->res);
            if (v <= 0) {
                pki_acme_account_resync(a, id);

                /* a deactivation whose answer was lost (or that hiredis
                 * sent again, finding it done) stands: its open work goes
                 * with it now, as a retry would only be refused as from
                 * a deactivated account (RFC 8555 7.3.6) */
                if (st != NULL && pki_acme_account_deactivated_now(a, id)) {
                    pki_result_init(a->res);
                    pki_acme_account_deactivated(a, id);
                    pki_acme_account_reply(a, 200, id, a->account);
                    return;
                }
            }
            if (v < 0) {
                pki_acme_fail(a, PKI_UNAVAILABLE, "account update");
                return;
            }
            if (v == 0) {
                pki_acme_problem(a, 409, "malformed", "the account changed "
                                 "meanwhile; retry");
                return;
            }
            pki_acme_copy_failed(a, pki_acme_account_copy(a, id, nt));

            /* RFC 8555 7.3.6: its open orders go with it */
            if (st != NULL) {
                pki_acme_account_deactivated(a, id);
            }

            free(nt);
        }
        (void) rc;
    }

    pki_acme_account_reply(a, 200, id, a->account);
}


static void
pki_acme_key_change(pki_acme_t *a)
{
    char           key_new[PKI_ACME_KEY_MAX], key_old[PKI_ACME_KEY_MAX];
    char          *text, *loc;
    size_t         failed = 0;
    cJSON         *inner_payload = NULL, *old;
    EVP_PKEY      *oldpk = NULL;
    pki_jws_t      inner;
    const char    *acct_url, *old_thumb;
    pki_result_t   tmp;
    char           thumb[PKI_JWK_THUMB_LEN];

    memset(&inner, 0, sizeof(inner));

    if (a->payload == NULL) {
        pki_acme_problem(a, 400, "malformed", "keyChange needs a payload");
        return;
    }

    text = cJSON_PrintUnformatted(a->payload);
    if (text == NULL) {
        pki_acme_problem(a, 500, "serverInternal", "out of memory");
        return;
    }

    pki_result_init(&tmp);

    if (pki_jws_parse((unsigned char *) text, strlen(text), &inner, &tmp)
        != PKI_OK)
    {
        free(text);
        pki_acme_problem(a, 400, inner.problem ? inner.problem : "malformed",
                         "inner JWS: %s", tmp.detail);
        goto done;
    }
    free(text);

    /* RFC 8555 7.3.5: the inner JWS "MUST NOT contain a nonce header" */
    if (inner.nonce != NULL) {
        pki_acme_problem(a, 400, "malformed", "the inner JWS must not carry "
                         "\"nonce\"");
        goto done;
    }

    if (inner.jwk == NULL || inner.kid != NULL) {
        pki_acme_problem(a, 400, "malformed", "the inner JWS must carry "
                         "\"jwk\" and no \"kid\"");
        goto done;
    }

    if (strcmp(inner.url, a->jws.url) != 0) {
        pki_acme_problem(a, 400, "malformed", "inner and outer \"url\" "
                         "differ");
        goto done;
    }

    if (pki_jws_verify(&inner, inner.jwk, &tmp) != PKI_OK) {
        pki_acme_problem(a, 400, inner.problem ? inner.problem : "malformed",
                         "inner JWS: %s", tmp.detail);
        goto done;
    }

    inner_payload = pki_int_json_strict(inner.payload, inner.payload_len);
    acct_url = pki_json_str(inner_payload, "account");
    old = cJSON_GetObjectItemCaseSensitive(inner_payload, "oldKey");

    if (!cJSON_IsObject(inner_payload) || acct_url == NULL
        || !cJSON_IsObject(old))
    {
        pki_acme_problem(a, 400, "malformed", "inner payload needs "
                         "\"account\" and \"oldKey\"");
        goto done;
    }

    if (strcmp(acct_url, a->jws.kid) != 0) {
        pki_acme_problem(a, 400, "malformed", "inner \"account\" is not "
                         "the outer \"kid\"");
        goto done;
    }

    text = cJSON_PrintUnformatted(old);
    oldpk = text != NULL ? pki_jwk_parse(text, strlen(text), &tmp) : NULL;
    free(text);

    old_thumb = pki_json_str(a->account, "thumb");

    if (oldpk == NULL || !pki_jwk_thumbprint(oldpk, thumb)
        || old_thumb == NULL || strcmp(thumb, old_thumb) != 0)
    {
        pki_acme_problem(a, 400, "malformed", "\"oldKey\" is not the "
                         "account key");
        goto done;
    }

    /* RFC 8555 7.3.5: the new key must be no account's, this one's
     * included (a change to the same key would change nothing) */
    if (strcmp(inner.thumb, old_thumb) == 0) {
        pki_acme_problem(a, 409, "malformed", "the new key is already "
                         "the key of this account");
        a->resp->location = pki_acme_url(a, "acct/%s", a->acct);
        goto done;
    }

    pki_key_name(key_new, sizeof(key_new), a->conf->redis, NULL, "jwk",
                 inner.thumb);
    pki_key_name(key_old, sizeof(key_old), a->conf->redis, NULL, "jwk",
                 old_thumb);

    pki_json_set_str(a->account, "key", inner.jwk_json);
    pki_json_set_str(a->account, "thumb", inner.thumb);
    (void) pki_acme_account_rev(a->account, 1);

    /* the account, the new index and the old index in one step */
    {
        int          n;
        char         akey[PKI_ACME_KEY_MAX], prefix[PKI_ACME_KEY_MAX];
        char        *newtext;
        const char  *args[9];
        redisReply  *reply;

        newtext = cJSON_PrintUnformatted(a->account);
        if (newtext == NULL || a->account_text == NULL) {
            free(newtext);
            pki_acme_problem(a, 500, "serverInternal", "out of memory");
            goto done;
        }

        pki_key_name(akey, sizeof(akey), a->conf->redis, a->acct, "acct",
                     NULL);
        snprintf(prefix, sizeof(prefix), "%s{acme:",
                 pki_redis_ns(a->conf->redis));

        n = 0;
        args[n++] = key_new;
        args[n++] = key_old;
        args[n++] = akey;
        args[n++] = a->acct;
        args[n++] = a->account_text;
        args[n++] = newtext;
        args[n++] = prefix;
        args[n++] = "}:acct";
        args[n++] = pki_acme_account_mine(a->account);

        reply = pki_acme_eval(a->conf->redis, a->res, pki_lua_key_change, 3,
                              n, args);

        if (reply == NULL || reply->type != REDIS_REPLY_STRING) {
            if (reply != NULL) {
                freeReplyObject(reply);
            }
            free(newtext);
            pki_acme_account_resync(a, a->acct);
            pki_acme_fail(a, PKI_UNAVAILABLE, "keyChange");
            goto done;
        }

        if (reply->len == 0) {
            freeReplyObject(reply);
            free(newtext);
            pki_acme_account_resync(a, a->acct);
            pki_acme_problem(a, 409, "malformed", "the account changed "
                             "meanwhile; retry");
            goto done;
        }

        if (strcmp(reply->str, a->acct) != 0) {
            loc = pki_id_ok(reply->str) ? pki_acme_url(a, "acct/%s",
                                                       reply->str)
                                        : NULL;
            freeReplyObject(reply);
            free(newtext);
            pki_acme_problem(a, 409, "malformed", "the new key is already "
                             "in use by an account");
            a->resp->location = loc;
            goto done;
        }

        freeReplyObject(reply);
        failed = pki_acme_account_copy(a, a->acct, newtext);
        free(newtext);
    }

    snprintf(a->res->log, sizeof(a->res->log), "acme: account %s changed "
             "its key", a->acct);
    pki_acme_copy_failed(a, failed);

    pki_acme_account_reply(a, 200, a->acct, a->account);

done:

    cJSON_Delete(inner_payload);
    EVP_PKEY_free(oldpk);
    pki_jws_clear(&inner);
}


/* ---- identifiers ------------------------------------------------------------------- */

/* A span of seconds for a reader: "90d (7776000 s)", "7d 12h (648000
 * s)", "6h (21600 s)"; seconds only when not whole hours. */
static void
pki_acme_span(long secs, char *buf, size_t size)
{
    long  d, h;

    d = secs / 86400;
    h = secs % 86400 / 3600;

    if (secs <= 0 || secs % 3600 != 0) {
        snprintf(buf, size, "%ld s", secs);

    } else if (d == 0) {
        snprintf(buf, size, "%ldh (%ld s)", h, secs);

    } else if (h == 0) {
        snprintf(buf, size, "%ldd (%ld s)", d, secs);

    } else {
        snprintf(buf, size, "%ldd %ldh (%ld s)", d, h, secs);
    }
}


/* Lowercases and checks a DNS name (optional "*." prefix).  Returns 1;
 * 0 with *why (static text) saying what is wrong. */
static int
pki_acme_dns_ok(char *s, const char **why)
{
    size_t         i, len, label;
    char          *p;
    int            alldigits;
    unsigned char  bin[16];

    *why = NULL;
    len = strlen(s);
    p = s;

    if (len > 2 && p[0] == '*' && p[1] == '.') {
        p += 2;

        /* a wildcard is validated by dns-01 only, at
         * "_acme-challenge." and its base: a longer name could never
         * be looked up, and its order never be valid */
        if (strlen(p) > 253 - 16) {
            *why = "a wildcard whose dns-01 name would be longer than 253 "
                   "characters";
            return 0;
        }
    }

    if (inet_pton(AF_INET, p, bin) == 1 || inet_pton(AF_INET6, p, bin) == 1)
    {
        *why = pki_acme_dns_why_ip;
        return 0;
    }

    if (strlen(p) == 0) {
        *why = "an empty name";
        return 0;
    }

    if (strlen(p) > 253) {
        *why = "longer than 253 characters";
        return 0;
    }

    label = 0;
    alldigits = 1;

    for (i = 0; p[i] != '\0'; i++) {
        p[i] = (char) tolower((unsigned char) p[i]);

        if (p[i] == '.') {
            if (label == 0) {
                *why = "an empty label";
                return 0;
            }
            if (p[i - 1] == '-') {
                *why = "a label that ends with \"-\"";
                return 0;
            }
            *why = pki_int_dns_label_refused(p + i - label, label);
            if (*why != NULL) {
                return 0;
            }
            label = 0;
            continue;
        }

        if (!(isalnum((unsigned char) p[i]) || p[i] == '-')) {
            *why = p[i] == '*' ? "\"*\" other than as a whole first label"
                   : "a character other than a letter, a digit, \"-\" "
                     "or \".\"";
            return 0;
        }

        if (label == 0 && p[i] == '-') {
            *why = "a label that starts with \"-\"";
            return 0;
        }

        if (!isdigit((unsigned char) p[i])) {
            alldigits = 0;
        }

        if (++label > 63) {
            *why = "a label longer than 63 characters";
            return 0;
        }
    }

    if (label == 0) {
        *why = i == 1 ? "an empty label" : "a trailing dot (a name is "
               "written without it)";
        return 0;
    }

    if (p[i - 1] == '-') {
        *why = "a label that ends with \"-\"";
        return 0;
    }

    *why = pki_int_dns_label_refused(p + i - label, label);
    if (*why != NULL) {
        return 0;
    }

    /* "1.2.3" or "123" as a dns identifier */
    if (alldigits) {
        *why = "digits and dots only: no host name";
        return 0;
    }

    return 1;
}


/* Canonical text of an IP literal into out[64]; bin receives the octets. */
static int
pki_acme_ip_ok(const char *s, char out[64], unsigned char bin[16],
    int *binlen)
{
    if (inet_pton(AF_INET, s, bin) == 1) {
        *binlen = 4;
        return inet_ntop(AF_INET, bin, out, 64) != NULL;
    }

    if (inet_pton(AF_INET6, s, bin) == 1) {
        *binlen = 16;
        return inet_ntop(AF_INET6, bin, out, 64) != NULL;
    }

    return 0;
}


/* an IPv4-mapped (::ffff:a.b.c.d) or IPv4-compatible (::a.b.c.d) address */
static int
pki_acme_ip_v4_in_v6(const unsigned char bin[16])
{
    struct in6_addr  in6;

    memcpy(&in6, bin, sizeof(in6));

    return IN6_IS_ADDR_V4MAPPED(&in6) || IN6_IS_ADDR_V4COMPAT(&in6);
}


/* newOrder's answer to the identifiers it refuses (RFC 8555 6.7.1): one
 * problem with a subproblem for each (subs, nbad of them, taken over).
 * A single one keeps its own type and detail; several share the type when
 * they agree, else malformed (the request is wrong) wins over
 * rejectedIdentifier, as in the RFC's own example. */
static void
pki_acme_ids_refused(pki_acme_t *a, cJSON *subs, int nbad)
{
    char          type[32], detail[PKI_DETAIL_LEN], names[200];
    cJSON        *sub;
    const char   *t;
    const size_t  plen = sizeof(PKI_ACME_ERR) - 1;

    if (cJSON_GetArraySize(subs) != nbad) {
        cJSON_Delete(subs);
        pki_acme_problem(a, 500, "serverInternal", "out of memory");
        return;
    }

    type[0] = '\0';

    cJSON_ArrayForEach(sub, subs) {
        /* each one was made here from an RFC 8555 6.7 name */
        t = pki_json_str(sub, "type") + plen;

        if (type[0] == '\0') {
            snprintf(type, sizeof(type), "%s", t);

        } else if (strcmp(type, t) != 0) {
            snprintf(type, sizeof(type), "%s",
                     strcmp(type, "malformed") == 0
                     || strcmp(t, "malformed") == 0 ? "malformed"
                                                    : "rejectedIdentifier");
        }
    }

    if (nbad == 1) {
        snprintf(detail, sizeof(detail), "%s",
                 pki_json_str(subs->child, "detail"));
        pki_acme_problem_subs(a, 400, type, subs, "%s", detail);
        return;
    }

    pki_acme_subproblem_names(subs, names, sizeof(names));
    pki_acme_problem_subs(a, 400, type, subs, "%d identifiers are refused%s"
                          "%s", nbad, names[0] ? ": " : "", names);
}


/* Parses and normalises the identifiers of a newOrder into a new array of
 * {"type","value"}; NULL with the problem set, which names every refused
 * identifier.  tmpl: the template of the order's profile. */
static cJSON *
pki_acme_identifiers(pki_acme_t *a, const cJSON *ids,
    const pki_template_t *tmpl)
{
    int            n, nbad, binlen;
    char           buf[260], canon[64], why[160], detail[PKI_DETAIL_LEN];
    cJSON         *out, *item, *o, *prev, *subs;
    const char    *type, *value, *ptype, *dwhy;
    unsigned char  bin[16];

    if (!cJSON_IsArray(ids) || cJSON_GetArraySize(ids) == 0) {
        pki_acme_problem(a, 400, "malformed", "\"identifiers\" must be a "
                         "non-empty array");
        return NULL;
    }

    if (cJSON_GetArraySize(ids) > PKI_ACME_MAX_IDS) {
        pki_acme_problem(a, 400, "rejectedIdentifier", "too many "
                         "identifiers (at most %d)", PKI_ACME_MAX_IDS);
        return NULL;
    }

    out = cJSON_CreateArray();
    subs = cJSON_CreateArray();
    if (out == NULL || subs == NULL) {
        pki_acme_problem(a, 500, "serverInternal", "out of memory");
        goto failed;
    }

    nbad = 0;

    cJSON_ArrayForEach(item, ids) {
        type = pki_json_str(item, "type");
        value = pki_json_str(item, "value");
        ptype = "rejectedIdentifier";

        if (!cJSON_IsObject(item) || type == NULL || value == NULL) {
            ptype = "malformed";
            snprintf(detail, sizeof(detail), "an identifier needs "
                     "\"type\" and \"value\"");

        } else if (strlen(value) >= sizeof(buf) - 1) {
            snprintf(detail, sizeof(detail), "identifier too long");

        } else if (strcmp(type, "dns") == 0) {
            strcpy(buf, value);
            if (!pki_acme_dns_ok(buf, &dwhy)) {
                snprintf(detail, sizeof(detail), "invalid DNS name "
                         "\"%.64s\"%s%s", value,
                         dwhy == NULL ? ""
                         : dwhy == pki_acme_dns_why_ip ? "; " : ": ",
                         dwhy != NULL ? dwhy : "");
            } else {
                ptype = NULL;
            }

        } else if (strcmp(type, "ip") == 0) {
            if (!pki_acme_ip_ok(value, canon, bin, &binlen)) {
                snprintf(detail, sizeof(detail), "invalid IP address "
                         "\"%.64s\"", value);
            } else if (binlen == 16 && pki_acme_ip_v4_in_v6(bin)) {
                /* the IPv4 address it names, proven over IPv4, would
                 * go into the certificate as 16 octets */
                snprintf(detail, sizeof(detail), "\"%.64s\" is an IPv4 "
                         "address written as IPv6: use the IPv4 form",
                         value);
            } else {
                strcpy(buf, canon);
                ptype = NULL;
            }

        } else {
            ptype = "unsupportedIdentifier";
            snprintf(detail, sizeof(detail), "identifier type \"%.16s\" "
                     "is not supported", type);
        }

        /* what the template will not sign is refused now, not validated
         * first and refused at finalize as a badCSR */
        if (ptype == NULL && tmpl != NULL
            && !pki_int_template_san_ok(tmpl,
                                        type[0] == 'd' ? PKI_SAN_DNS
                                                       : PKI_SAN_IP,
                                        buf[0] == '*', why, sizeof(why)))
        {
            ptype = "rejectedIdentifier";
            snprintf(detail, sizeof(detail), "\"%.64s\": %s", value, why);
        }

        /* every refused one is named, not only the first */
        if (ptype != NULL) {
            nbad++;
            pki_acme_subproblem(subs, ptype, detail, type, value);
            continue;
        }

        /* drop duplicates */
        n = 0;
        cJSON_ArrayForEach(prev, out) {
            if (strcmp(pki_json_str(prev, "type"), type) == 0
                && strcmp(pki_json_str(prev, "value"), buf) == 0)
            {
                n = 1;
                break;
            }
        }

        if (n) {
            continue;
        }

        o = cJSON_CreateObject();
        if (o == NULL) {
            pki_acme_problem(a, 500, "serverInternal", "out of memory");
            goto failed;
        }
        cJSON_AddStringToObject(o, "type", type);
        cJSON_AddStringToObject(o, "value", buf);
        cJSON_AddItemToArray(out, o);
    }

    if (nbad > 0) {
        pki_acme_ids_refused(a, subs, nbad);
        cJSON_Delete(out);
        return NULL;
    }

    cJSON_Delete(subs);

    return out;

failed:

    cJSON_Delete(subs);
    cJSON_Delete(out);
    return NULL;
}


/* ---- authorizations ------------------------------------------------------------------ */

/* The policy's kind, not its every value: hosts of one fleet may differ
 * in their resolver or CAA names, and a rolling edit of those must not
 * orphan the orders in flight.  What makes a proof weaker (a lab's
 * resolve_to, private targets, other ports or resolver; no CAA check) or
 * an account looser (no EAB), and the CA that signs, do count. */
void
pki_acme_realm(pki_acme_conf_t *conf)
{
    int            n;
    char          *b, buf[512];
    unsigned char  md[32];

    const pki_acme_validate_conf_t  *v = &conf->validate;

    n = snprintf(buf, sizeof(buf), "ca=%s\neab=%d\nports=%d\nresolver=%d\n"
                 "resolve_to=%d\nprivate=%d\ncaa=%d\n",
                 conf->ca != NULL ? pki_ca_name(conf->ca) : "",
                 conf->eab_required ? 1 : 0,
                 v->http_port != 80 || v->tls_port != 443,
                 v->resolver != NULL && v->resolver[0] != '\0',
                 v->resolve_to != NULL && v->resolve_to[0] != '\0',
                 v->allow_private ? 1 : 0, v->caa ? 1 : 0);

    conf->realm[0] = '\0';

    if (n <= 0 || (size_t) n >= sizeof(buf)
        || EVP_Digest(buf, (size_t) n, md, NULL, EVP_sha256(), NULL) != 1)
    {
        return;
    }

    b = pki_b64url_encode(md, 16);
    if (b != NULL) {
        snprintf(conf->realm, sizeof(conf->realm), "%s", b);
        free(b);
    }
}


/* An order or authorization made under another location's policy (see
 * pki_acme_conf_t.realm); one without a realm (older) is everyone's. */
static int
pki_acme_foreign(const pki_acme_t *a, const cJSON *obj)
{
    const char  *realm;

    realm = pki_json_str(obj, "realm");

    return a->conf->realm[0] != '\0' && realm != NULL
           && strcmp(realm, a->conf->realm) != 0;
}


/* Loaded as *out (and *text): one of another policy is absent here. */
static pki_status_t
pki_acme_own(pki_acme_t *a, pki_status_t rc, const char *key, cJSON **out,
    char **text)
{
    if (rc != PKI_OK || !pki_acme_foreign(a, *out)) {
        return rc;
    }

    pki_log(a->res, "acme: %s was made under another ACME location's policy",
            key);

    cJSON_Delete(*out);
    *out = NULL;

    if (text != NULL) {
        free(*text);
        *text = NULL;
    }

    return PKI_NOT_FOUND;
}


static const char *
pki_acme_authz_status(pki_acme_t *a, const cJSON *authz)
{
    const char  *st;

    st = pki_json_str(authz, "status");
    if (st == NULL) {
        return "invalid";
    }

    if ((strcmp(st, "pending") == 0 || strcmp(st, "valid") == 0)
        && pki_json_num(authz, "expires") < (double) a->now)
    {
        return "expired";
    }

    return st;
}


/* A load of key served from what the redeem script read: PKI_OK,
 * PKI_NOT_FOUND, PKI_INTERNAL (corrupt), or PKI_ACME_MISS when the key was
 * not read (or was used already). */
static pki_status_t
pki_acme_prefetched(pki_acme_t *a, const char *key, cJSON **out, char **text)
{
    int  i;

    for (i = 0; i < a->npre; i++) {
        if (a->pre[i].used || strcmp(a->pre[i].key, key) != 0) {
            continue;
        }

        a->pre[i].used = 1;

        if (a->pre[i].text == NULL) {
            *out = NULL;                /* as pki_acme_load_text */
            if (text != NULL) {
                *text = NULL;
            }
            return PKI_NOT_FOUND;
        }

        *out = cJSON_Parse(a->pre[i].text);
        if (!cJSON_IsObject(*out)) {
            cJSON_Delete(*out);
            *out = NULL;
            pki_fail(a->res, PKI_INTERNAL, "corrupt ACME object");
            pki_log(a->res, "acme: %s does not hold a JSON object", key);
            return PKI_INTERNAL;
        }

        if (text != NULL) {
            *text = a->pre[i].text;
            a->pre[i].text = NULL;
        }

        return PKI_OK;
    }

    return PKI_ACME_MISS;
}


/* A prefetched value as it is (not JSON): PKI_OK with *text (malloc'd),
 * PKI_NOT_FOUND, or PKI_ACME_MISS when it was not read along. */
static pki_status_t
pki_acme_prefetched_raw(pki_acme_t *a, const char *key, char **text)
{
    int  i;

    for (i = 0; i < a->npre; i++) {
        if (a->pre[i].used || strcmp(a->pre[i].key, key) != 0) {
            continue;
        }

        a->pre[i].used = 1;

        if (a->pre[i].text == NULL) {
            return PKI_NOT_FOUND;
        }

        *text = a->pre[i].text;
        a->pre[i].text = NULL;

        return PKI_OK;
    }

    return PKI_ACME_MISS;
}


/* An authorization; text (may be NULL) receives its stored text, malloc'd,
 * for a compare-and-set (pki_acme_authz_cas). */
static pki_status_t
pki_acme_authz_load_text(pki_acme_t *a, const char *acct, const char *id,
    cJSON **out, char **text)
{
    char          key[PKI_ACME_KEY_MAX];
    pki_status_t  rc;

    if (text != NULL) {
        *text = NULL;
    }

    if (!pki_id_ok(id)) {
        *out = NULL;
        return PKI_NOT_FOUND;
    }

    pki_key_name(key, sizeof(key), PKI_ACME_ST(a->conf), acct, "authz", id);

    rc = pki_acme_prefetched(a, key, out, text);
    if (rc == PKI_ACME_MISS) {
        rc = pki_acme_load_text(PKI_ACME_ST(a->conf), key, out, text, a->res);
    }

    return pki_acme_own(a, rc, key, out, text);
}


static pki_status_t
pki_acme_authz_load(pki_acme_t *a, const char *acct, const char *id,
    cJSON **out)
{
    return pki_acme_authz_load_text(a, acct, id, out, NULL);
}


/* 1 when key was read along with the nonce and not used yet. */
static int
pki_acme_is_prefetched(const pki_acme_t *a, const char *key)
{
    int  i;

    for (i = 0; i < a->npre; i++) {
        if (!a->pre[i].used && strcmp(a->pre[i].key, key) == 0) {
            return 1;
        }
    }

    return 0;
}


/* The authorizations of an order read in one MGET (pki_acme_authz_batch):
 * slot[i] is where the i-th of the order's list is in reply, or -1 when it
 * is read otherwise; n items have a slot. */
typedef struct {
    redisReply  *reply;
    int         *slot;
    int          n;
} pki_acme_batch_t;


/*
 * The authorizations of an order that were not read along with the nonce,
 * in one MGET (they share the account's hash tag): a poll of an order of
 * 100 names costs one round trip for them, not 96.  The first
 * PKI_ACME_MAX_IDS only (an order has no more; a corrupt one reads the
 * rest one at a time), and none when memory is short.  PKI_OK or
 * PKI_UNAVAILABLE (nothing kept).
 */
static pki_status_t
pki_acme_authz_batch(pki_acme_t *a, const char *acct, const cJSON *authzs,
    pki_acme_batch_t *b)
{
    int            n, i, nk;
    char         (*keys)[PKI_ACME_KEY_MAX];
    size_t        *lens;
    cJSON         *item;
    const char   **argv;
    pki_status_t   rc;

    memset(b, 0, sizeof(*b));

    n = cJSON_GetArraySize(authzs);
    n = n < PKI_ACME_MAX_IDS ? n : PKI_ACME_MAX_IDS;
    if (n <= 0) {
        return PKI_OK;
    }

    rc = PKI_OK;
    keys = calloc(n, sizeof(*keys));
    argv = calloc(n + 1, sizeof(*argv));
    lens = calloc(n + 1, sizeof(*lens));
    b->slot = malloc(n * sizeof(int));

    if (keys == NULL || argv == NULL || lens == NULL || b->slot == NULL) {
        goto failed;
    }

    argv[0] = "MGET";
    lens[0] = 4;
    i = 0;
    nk = 0;

    cJSON_ArrayForEach(item, authzs) {
        if (i == n) {
            break;
        }

        b->slot[i] = -1;

        if (cJSON_IsString(item) && pki_id_ok(item->valuestring)) {
            pki_key_name(keys[nk], sizeof(keys[nk]), PKI_ACME_ST(a->conf),
                         acct, "authz", item->valuestring);

            if (!pki_acme_is_prefetched(a, keys[nk])) {
                argv[nk + 1] = keys[nk];
                lens[nk + 1] = strlen(keys[nk]);
                b->slot[i] = nk++;
            }
        }

        i++;
    }

    if (nk > 0) {
        b->reply = pki_int_redis_command(PKI_ACME_ST(a->conf), nk + 1, argv,
                                         lens, a->res);

        if (b->reply == NULL || b->reply->type != REDIS_REPLY_ARRAY
            || b->reply->elements != (size_t) nk)
        {
            if (b->reply != NULL) {
                freeReplyObject(b->reply);
                b->reply = NULL;
                pki_fail(a->res, PKI_UNAVAILABLE, "certificate store "
                         "unavailable");
            }
            rc = PKI_UNAVAILABLE;
            goto failed;
        }
    }

    b->n = n;

    free(keys);
    free(argv);
    free(lens);

    return PKI_OK;

failed:

    /* out of memory: each read one at a time (b->n 0) */
    free(b->slot);
    b->slot = NULL;
    free(keys);
    free(argv);
    free(lens);

    return rc;
}


static void
pki_acme_batch_free(pki_acme_batch_t *b)
{
    if (b->reply != NULL) {
        freeReplyObject(b->reply);
    }
    free(b->slot);
    memset(b, 0, sizeof(*b));
}


/* The i-th authorization of an order (id), from what
 * pki_acme_authz_batch() read, else as pki_acme_authz_load(). */
static pki_status_t
pki_acme_authz_take(pki_acme_t *a, const char *acct, const char *id,
    const pki_acme_batch_t *b, int i, cJSON **out)
{
    char          key[PKI_ACME_KEY_MAX];
    pki_status_t  rc;

    if (i >= b->n || b->slot[i] < 0) {
        return pki_acme_authz_load(a, acct, id, out);
    }

    /* slot[i] >= 0: the id is one (pki_id_ok) */
    pki_key_name(key, sizeof(key), PKI_ACME_ST(a->conf), acct, "authz", id);

    rc = pki_acme_value_json(b->reply->element[b->slot[i]], key, out, NULL,
                             a->res);

    return pki_acme_own(a, rc, key, out, NULL);
}


/* Compare-and-set of an authorization read as *text: on success *text is
 * the new text.  1, 0 (changed meanwhile) or -1 (Redis failed). */
static int
pki_acme_authz_cas(pki_acme_t *a, const char *acct, const char *id,
    char **text, const cJSON *authz)
{
    int    v;
    long   ttl;
    char   key[PKI_ACME_KEY_MAX], *nt;

    pki_key_name(key, sizeof(key), PKI_ACME_ST(a->conf), acct, "authz", id);

    ttl = (long) (pki_json_num(authz, "expires") - (double) a->now) + 86400;

    v = pki_acme_cas(PKI_ACME_ST(a->conf), key, *text, authz, ttl, &nt,
                     a->res);
    if (v == 1) {
        free(*text);
        *text = nt;
    }

    return v;
}


static cJSON *
pki_acme_challenge_find(const cJSON *authz, const char *type)
{
    cJSON       *ch;
    const char  *t;

    cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(authz,
                                                          "challenges"))
    {
        t = pki_json_str(ch, "type");
        if (t != NULL && strcmp(t, type) == 0) {
            return ch;
        }
    }

    return NULL;
}


/* 1: the challenge has been "processing" for longer than its job can take,
 * so the job was lost (the thread pool's queue was full, the worker died)
 * or never stored its result: it may be started again.  The job validates
 * and then reads CAA, each within acme_validation_timeout: PKI_ACME_STALE
 * s, or twice that timeout and 5 s when that is longer (a job still
 * running is never doubled). */
static int
pki_acme_challenge_stale(pki_acme_t *a, const cJSON *authz, const cJSON *ch)
{
    const char  *st;

    long         after;
    unsigned     t;

    st = pki_json_str(ch, "status");
    t = a->conf->validate.timeout_ms ? a->conf->validate.timeout_ms
                                     : PKI_ACME_VALIDATE_TIMEOUT;
    after = 2 * (long) (t / 1000) + 5;
    if (after < PKI_ACME_STALE) {
        after = PKI_ACME_STALE;
    }

    return st != NULL && strcmp(st, "processing") == 0
           && strcmp(pki_acme_authz_status(a, authz), "pending") == 0
           && pki_json_num(ch, "started") + after < (double) a->now;
}


/* Starts the validation of challenge "type" of *authz (read as *text): the
 * challenge becomes "processing" since now, stored with a compare-and-set
 * against *text, and a->resp->job validates it once the response is out.
 * When another request changed the authorization first (a concurrent
 * challenge POST, the validator's result), no job starts and *authz and
 * *text are what is stored now.  PKI_OK, or a status for pki_acme_fail();
 * the caller frees *authz and *text either way. */
static pki_status_t
pki_acme_validation_start(pki_acme_t *a, const char *acct, const char *aid,
    const char *type, cJSON **authz, char **text)
{
    int              v;
    cJSON           *ch;
    const char      *thumb;
    pki_acme_job_t  *job;

    ch = pki_acme_challenge_find(*authz, type);
    thumb = pki_json_str(a->account, "thumb");

    if (ch == NULL || pki_json_str(ch, "token") == NULL
        || pki_json_str(*authz, "type") == NULL
        || pki_json_str(*authz, "value") == NULL || thumb == NULL)
    {
        return pki_fail(a->res, PKI_INTERNAL, "challenge %s of %s: "
                        "incomplete", type, aid);
    }

    job = calloc(1, sizeof(pki_acme_job_t));
    if (job == NULL) {
        return pki_fail(a->res, PKI_INTERNAL, "out of memory");
    }

    job->started = a->now;
    snprintf(job->acct, sizeof(job->acct), "%s", acct);
    snprintf(job->authz, sizeof(job->authz), "%s", aid);
    snprintf(job->type, sizeof(job->type), "%s", type);
    snprintf(job->id_type, sizeof(job->id_type), "%s",
             pki_json_str(*authz, "type"));
    snprintf(job->identifier, sizeof(job->identifier), "%s",
             pki_json_str(*authz, "value"));
    snprintf(job->token, sizeof(job->token), "%s",
             pki_json_str(ch, "token"));
    snprintf(job->key_authz, sizeof(job->key_authz), "%s.%s",
             job->token, thumb);
    job->chall = strcmp(type, "http-01") == 0 ? PKI_ACME_HTTP01
                 : strcmp(type, "dns-01") == 0 ? PKI_ACME_DNS01
                 : PKI_ACME_TLSALPN01;
    job->wildcard = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(*authz,
                                                                  "wildcard"));
    if (a->conf->validate.caa) {
        job->account_url = pki_acme_url(a, "acct/%s", acct);
        if (job->account_url == NULL) {
            pki_acme_job_free(job);
            return pki_fail(a->res, PKI_INTERNAL, "out of memory");
        }
    }

    pki_json_set_str(ch, "status", "processing");
    pki_json_set_num(ch, "started", (double) a->now);

    /* only one request starts it: two challenge POSTs (or polls of a stale
     * one) read the same text, and the second swap finds it changed */
    v = *text != NULL ? pki_acme_authz_cas(a, acct, aid, text, *authz) : -1;

    if (v < 0) {
        pki_acme_job_free(job);
        cJSON_Delete(*authz);
        *authz = NULL;
        return *text == NULL ? pki_fail(a->res, PKI_INTERNAL, "no text")
                             : PKI_UNAVAILABLE;
    }

    if (v == 0) {
        pki_acme_job_free(job);
        cJSON_Delete(*authz);
        free(*text);
        return pki_acme_authz_load_text(a, acct, aid, authz, text);
    }

    /* the validator starts from the text stored here: it stores its
     * result only if the authorization is still exactly this (one round
     * trip, no read) */
    job->authz_text = *text;
    *text = NULL;

    a->resp->job = job;

    return PKI_OK;
}


/*
 * A challenge's status as shown: a validation still "processing" under an
 * authorization that is no longer pending (deactivated, by the client or
 * with its account, expired, or decided by another challenge) will never
 * store its result (the job finds the authorization changed), so it is
 * shown invalid rather than processing for ever.  NULL: as stored.
 */
static const char *
pki_acme_challenge_ended(pki_acme_t *a, const cJSON *authz, const cJSON *ch)
{
    const char  *st, *ast;

    st = pki_json_str(ch, "status");
    if (authz == NULL || st == NULL || strcmp(st, "processing") != 0) {
        return NULL;
    }

    ast = pki_acme_authz_status(a, authz);

    return strcmp(ast, "pending") != 0 ? ast : NULL;
}


static cJSON *
pki_acme_challenge_obj(pki_acme_t *a, const char *acct, const char *aid,
    const cJSON *authz, const cJSON *ch)
{
    cJSON        *o, *err;
    const char   *type, *ended;
    double        validated;
    char         *url;

    o = cJSON_CreateObject();
    if (o == NULL) {
        return NULL;
    }

    type = pki_json_str(ch, "type");
    cJSON_AddStringToObject(o, "type", type != NULL ? type : "");

    url = pki_acme_url(a, "chall/%s/%s/%s", acct, aid, type ? type : "");
    pki_json_url(a, o, "url", url);

    ended = pki_acme_challenge_ended(a, authz, ch);

    cJSON_AddStringToObject(o, "status", ended != NULL ? "invalid"
                                         : pki_json_str(ch, "status")
                                         ? pki_json_str(ch, "status")
                                         : "invalid");
    cJSON_AddStringToObject(o, "token", pki_json_str(ch, "token")
                                        ? pki_json_str(ch, "token") : "");

    validated = pki_json_num(ch, "validated");
    if (validated > 0) {
        pki_json_time(o, "validated", (time_t) validated);
    }

    err = cJSON_GetObjectItemCaseSensitive(ch, "error");
    if (cJSON_IsObject(err)) {
        cJSON_AddItemToObject(o, "error", cJSON_Duplicate(err, 1));

    } else if (ended != NULL) {
        err = cJSON_CreateObject();
        if (err != NULL) {
            cJSON_AddStringToObject(err, "type",
                                    "urn:ietf:params:acme:error:malformed");
            cJSON_AddStringToObject(err, "detail", "the validation did not "
                                    "complete: the authorization is no "
                                    "longer pending");
            cJSON_AddNumberToObject(err, "status", 400);
            cJSON_AddItemToObject(o, "error", err);
        }
    }

    return o;
}


static cJSON *
pki_acme_authz_obj(pki_acme_t *a, const char *acct, const char *aid,
    const cJSON *authz)
{
    cJSON        *o, *id, *chs, *ch, *arr;
    const char   *st;

    o = cJSON_CreateObject();
    if (o == NULL) {
        return NULL;
    }

    st = pki_acme_authz_status(a, authz);
    cJSON_AddStringToObject(o, "status", st);
    pki_json_time(o, "expires", (time_t) pki_json_num(authz, "expires"));

    id = cJSON_CreateObject();
    if (id != NULL) {
        cJSON_AddStringToObject(id, "type", pki_json_str(authz, "type"));
        cJSON_AddStringToObject(id, "value", pki_json_str(authz, "value"));
        cJSON_AddItemToObject(o, "identifier", id);
    }

    arr = cJSON_AddArrayToObject(o, "challenges");
    chs = cJSON_GetObjectItemCaseSensitive(authz, "challenges");

    cJSON_ArrayForEach(ch, chs) {
        /* a valid authorization shows only the challenge that passed */
        if (strcmp(st, "valid") == 0
            && strcmp(pki_json_str(ch, "status"), "valid") != 0)
        {
            continue;
        }
        cJSON_AddItemToArray(arr, pki_acme_challenge_obj(a, acct, aid,
                                                         authz, ch));
    }

    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(authz, "wildcard"))) {
        cJSON_AddBoolToObject(o, "wildcard", 1);
    }

    return o;
}


static cJSON *
pki_acme_new_challenge(const char *type)
{
    char    token[64];
    cJSON  *ch;

    if (!pki_random_id(token, sizeof(token), 32)) {
        return NULL;
    }

    ch = cJSON_CreateObject();
    if (ch == NULL) {
        return NULL;
    }

    cJSON_AddStringToObject(ch, "type", type);
    cJSON_AddStringToObject(ch, "status", "pending");
    cJSON_AddStringToObject(ch, "token", token);

    return ch;
}


/* The life a reused authorization must have left: an hour for the
 * client to finalize, or the order's whole life if shorter. */
static long
pki_acme_reuse_margin(const pki_acme_conf_t *conf)
{
    long  ttl;

    ttl = conf->order_ttl > 0 ? conf->order_ttl : 86400;

    return ttl < 3600 ? ttl : 3600;
}


/* How long a valid authorization of this account is reused for a new
 * order.  CAA is read when a name validates, so with CAA checks on a
 * reused dns authorization is at most PKI_ACME_CAA_REUSE old: a CAA record
 * set changed since then rules the next order within that time (the
 * CA/Browser Forum's eight hours). */
static long
pki_acme_reuse_window(pki_acme_t *a, const char *type)
{
    long  reuse;

    reuse = a->conf->authz_reuse;
    if (a->conf->validate.caa && strcmp(type, "dns") == 0
        && reuse > PKI_ACME_CAA_REUSE)
    {
        reuse = PKI_ACME_CAA_REUSE;
    }

    return reuse;
}


/* An authorization for one identifier: reused when a valid one exists
 * (*created NULL), else a new pending one expiring at *expires, not
 * stored yet (*created).  id_out receives its id.  A reused one that
 * expires sooner brings *expires, the order's, down to its own: the
 * order is invalid once an authorization of it expires (RFC 8555
 * 7.1.3: "expires" says when). */
static pki_status_t
pki_acme_authz_for(pki_acme_t *a, const char *type, const char *value,
    time_t *expires, char id_out[PKI_ACME_ID_MAX], cJSON **created)
{
    int           wildcard;
    char          key[PKI_ACME_KEY_MAX], idx[300], aid[PKI_ACME_ID_MAX];
    char         *text;
    cJSON        *authz, *chs, *ch;
    redisReply   *reply;
    const char   *bare;
    pki_status_t  pre;

    *created = NULL;
    wildcard = strncmp(value, "*.", 2) == 0;
    bare = wildcard ? value + 2 : value;

    snprintf(idx, sizeof(idx), "%s:%s", type, value);

    if (a->conf->authz_reuse > 0) {
        pki_acme_valid_key(key, sizeof(key), PKI_ACME_ST(a->conf), a->acct,
                           a->conf->realm, idx);

        aid[0] = '\0';
        pre = pki_acme_prefetched_raw(a, key, &text);

        if (pre == PKI_OK) {
            if (pki_id_ok(text)) {
                snprintf(aid, sizeof(aid), "%s", text);
            }
            free(text);

        } else if (pre == PKI_ACME_MISS) {
            reply = pki_acme_cmd(PKI_ACME_ST(a->conf), a->res, 2, "GET", key);
            if (reply == NULL) {
                return PKI_UNAVAILABLE;
            }

            if (reply->type == REDIS_REPLY_STRING && pki_id_ok(reply->str)) {
                snprintf(aid, sizeof(aid), "%s", reply->str);
            }
            freeReplyObject(reply);
        }

        if (aid[0] != '\0'
            && pki_acme_authz_load(a, a->acct, aid, &authz) == PKI_OK)
        {
            /* reused only while it leaves the client time to finalize:
             * the order turns invalid when an authorization of it
             * expires */
            if (strcmp(pki_acme_authz_status(a, authz), "valid") == 0
                /* one older than realms: unknown policy, not reused */
                && (a->conf->realm[0] == '\0'
                    || pki_json_str(authz, "realm") != NULL)
                && pki_json_num(authz, "expires")
                   > (double) (a->now + pki_acme_reuse_margin(a->conf))
                && pki_json_num(authz, "validated")
                   + (double) pki_acme_reuse_window(a, type) > (double) a->now)
            {
                if (pki_json_num(authz, "expires") < (double) *expires) {
                    *expires = (time_t) pki_json_num(authz, "expires");
                }
                cJSON_Delete(authz);
                memcpy(id_out, aid, sizeof(aid));
                return PKI_OK;
            }
            cJSON_Delete(authz);
        }
    }

    if (!pki_random_id(aid, sizeof(aid), 12)) {
        return pki_fail(a->res, PKI_INTERNAL, "no randomness");
    }

    authz = cJSON_CreateObject();
    chs = cJSON_CreateArray();
    if (authz == NULL || chs == NULL) {
        cJSON_Delete(authz);
        cJSON_Delete(chs);
        return pki_fail(a->res, PKI_INTERNAL, "out of memory");
    }

    cJSON_AddStringToObject(authz, "status", "pending");
    if (a->conf->realm[0] != '\0') {
        cJSON_AddStringToObject(authz, "realm", a->conf->realm);
    }
    cJSON_AddNumberToObject(authz, "expires", (double) *expires);
    cJSON_AddStringToObject(authz, "type", type);
    cJSON_AddStringToObject(authz, "value", bare);
    if (wildcard) {
        cJSON_AddBoolToObject(authz, "wildcard", 1);
    }

    /* RFC 8555 7.1.3: a wildcard is proven with dns-01 only; RFC 8738:
     * an IP address has no dns-01; nor has a name whose
     * "_acme-challenge." name would be over 253 characters, which no
     * lookup could ask (newOrder refuses such a wildcard) */

    if (!wildcard) {
        ch = pki_acme_new_challenge("http-01");
        cJSON_AddItemToArray(chs, ch);
    }

    if (strcmp(type, "dns") == 0 && strlen(bare) <= 253 - 16) {
        ch = pki_acme_new_challenge("dns-01");
        cJSON_AddItemToArray(chs, ch);
    }

    if (!wildcard) {
        ch = pki_acme_new_challenge("tls-alpn-01");
        cJSON_AddItemToArray(chs, ch);
    }

    cJSON_AddItemToObject(authz, "challenges", chs);

    /* stored by the caller with the order, in one step */
    *created = authz;
    memcpy(id_out, aid, sizeof(aid));

    return PKI_OK;
}


/* 1 deactivated (authz as read from *text, its status set), 0 changed
 * meanwhile, -1 Redis failed. */
static int
pki_acme_authz_deactivate(pki_acme_t *a, const char *acct, const char *aid,
    const char *text, const cJSON *authz)
{
    int          v;
    char         key[PKI_ACME_KEY_MAX], vkey[PKI_ACME_KEY_MAX], idx[300];
    char         pkey[PKI_ACME_KEY_MAX], ttl[24], *nt;
    const char  *args[7];

    snprintf(idx, sizeof(idx), "%s:%s%s", pki_json_str(authz, "type"),
             cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(authz, "wildcard"))
             ? "*." : "", pki_json_str(authz, "value"));
    pki_key_name(key, sizeof(key), PKI_ACME_ST(a->conf), acct, "authz", aid);
    pki_acme_valid_key(vkey, sizeof(vkey), PKI_ACME_ST(a->conf), acct,
                       pki_json_str(authz, "realm"), idx);
    snprintf(ttl, sizeof(ttl), "%ld",
             (long) (pki_json_num(authz, "expires") - (double) a->now)
             + 86400);

    nt = cJSON_PrintUnformatted(authz);
    if (nt == NULL || text == NULL) {
        free(nt);
        pki_fail(a->res, PKI_INTERNAL, "out of memory");
        return -1;
    }

    pki_key_name(pkey, sizeof(pkey), PKI_ACME_ST(a->conf), acct,
                 "pendauthz", NULL);

    args[0] = key;
    args[1] = vkey;
    args[2] = pkey;
    args[3] = text;
    args[4] = nt;
    args[5] = ttl;
    args[6] = aid;

    v = pki_acme_cmd_int(PKI_ACME_ST(a->conf), a->res,
                         pki_acme_eval(PKI_ACME_ST(a->conf), a->res,
                                       pki_lua_authz_deactivate, 3, 7, args));
    free(nt);

    return v;
}


static void
pki_acme_authz(pki_acme_t *a, const char *acct, const char *aid)
{
    int           v, tries;
    char         *text;
    cJSON        *authz, *o, *st, *ch;
    pki_status_t  rc;

    if (strcmp(acct, a->acct) != 0) {
        pki_acme_problem(a, 403, "unauthorized", "the authorization belongs "
                         "to another account");
        return;
    }

    tries = 0;

again:

    rc = pki_acme_authz_load_text(a, acct, aid, &authz, &text);
    if (rc != PKI_OK) {
        pki_acme_fail(a, rc, "authorization");
        return;
    }

    /* certbot and lego only poll the authorization: a poll starts again a
     * validation that was lost (its challenge "processing" for too long) */
    if (a->payload == NULL) {
        cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(authz,
                                                              "challenges"))
        {
            if (pki_acme_challenge_stale(a, authz, ch)
                && pki_json_str(ch, "type") != NULL)
            {
                char  type[16];

                /* *authz, which holds the type, is replaced when the
                 * swap loses */
                snprintf(type, sizeof(type), "%s", pki_json_str(ch, "type"));

                rc = pki_acme_validation_start(a, acct, aid, type, &authz,
                                               &text);
                if (rc != PKI_OK) {
                    cJSON_Delete(authz);
                    free(text);
                    pki_acme_fail(a, rc, "authorization");
                    return;
                }
                break;
            }
        }
    }

    if (a->payload != NULL) {
        st = cJSON_GetObjectItemCaseSensitive(a->payload, "status");

        if (!cJSON_IsString(st)
            || strcmp(st->valuestring, "deactivated") != 0)
        {
            cJSON_Delete(authz);
            free(text);
            pki_acme_problem(a, 400, "malformed", "a client may only set "
                             "status \"deactivated\"");
            return;
        }

        if (strcmp(pki_acme_authz_status(a, authz), "pending") != 0
            && strcmp(pki_acme_authz_status(a, authz), "valid") != 0)
        {
            cJSON_Delete(authz);
            free(text);
            pki_acme_problem(a, 400, "malformed", "only a pending or valid "
                             "authorization can be deactivated");
            return;
        }

        pki_json_set_str(authz, "status", "deactivated");

        v = pki_acme_authz_deactivate(a, acct, aid, text, authz);
        if (v != 1) {
            cJSON_Delete(authz);
            free(text);
            if (v == 0 && ++tries < 4) {
                goto again;         /* changed meanwhile: read it again */
            }
            if (v == 0) {
                pki_acme_problem(a, 409, "malformed", "the authorization "
                                 "kept changing while it was deactivated; "
                                 "retry");
                return;
            }
            pki_acme_fail(a, PKI_UNAVAILABLE, "authorization");
            return;
        }
    }

    free(text);

    o = pki_acme_authz_obj(a, acct, aid, authz);

    /* a validation is running: ask for a poll soon (lego waits 5 s
     * without a Retry-After) */
    if (strcmp(pki_acme_authz_status(a, authz), "pending") == 0) {
        cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(authz,
                                                              "challenges"))
        {
            if (pki_json_str(ch, "status") != NULL
                && strcmp(pki_json_str(ch, "status"), "processing") == 0)
            {
                a->resp->retry_after = 1;
            }
        }
    }

    cJSON_Delete(authz);

    pki_acme_json(a, 200, o);
    cJSON_Delete(o);
}


/* ---- challenges --------------------------------------------------------------------- */

static void
pki_acme_challenge(pki_acme_t *a, const char *acct, const char *aid,
    const char *type)
{
    cJSON         *authz, *found, *o;
    char          *up, *text;
    const char    *st;
    pki_status_t   rc;

    if (strcmp(acct, a->acct) != 0) {
        pki_acme_problem(a, 403, "unauthorized", "the challenge belongs to "
                         "another account");
        return;
    }

    rc = pki_acme_authz_load_text(a, acct, aid, &authz, &text);
    if (rc != PKI_OK) {
        pki_acme_fail(a, rc, "challenge");
        return;
    }

    found = pki_acme_challenge_find(authz, type);

    if (found == NULL) {
        goto not_found;
    }

    /* a POST starts a pending challenge; any request (a POST-as-GET too)
     * starts again one whose validation was lost */
    st = pki_json_str(found, "status");

    if ((a->payload != NULL && st != NULL && strcmp(st, "pending") == 0
         && strcmp(pki_acme_authz_status(a, authz), "pending") == 0)
        || pki_acme_challenge_stale(a, authz, found))
    {
        rc = pki_acme_validation_start(a, acct, aid, type, &authz, &text);
        if (rc != PKI_OK) {
            cJSON_Delete(authz);
            free(text);
            pki_acme_fail(a, rc, "challenge");
            return;
        }

        found = pki_acme_challenge_find(authz, type);

        if (found == NULL) {
            goto not_found;
        }
    }

    free(text);

    o = pki_acme_challenge_obj(a, acct, aid, authz, found);

    st = pki_json_str(found, "status");
    if (st != NULL && strcmp(st, "processing") == 0
        && pki_acme_challenge_ended(a, authz, found) == NULL)
    {
        a->resp->retry_after = 1;
    }

    cJSON_Delete(authz);

    pki_acme_json(a, 200, o);
    cJSON_Delete(o);

    up = pki_acme_url(a, "authz/%s/%s", acct, aid);
    if (up != NULL) {
        pki_acme_link(a->resp, up, "up");
        free(up);
    }

    return;

not_found:

    cJSON_Delete(authz);
    free(text);
    pki_acme_problem(a, 404, "malformed", "no such challenge");
}


/* ---- orders --------------------------------------------------------------------- */

/* An order; any: also one made under another location's policy. */
static pki_status_t
pki_acme_order_read(pki_acme_t *a, const char *acct, const char *oid,
    cJSON **out, char **text, int any)
{
    char          key[PKI_ACME_KEY_MAX];
    pki_status_t  rc;

    if (!pki_id_ok(oid)) {
        *out = NULL;
        if (text != NULL) {
            *text = NULL;
        }
        return PKI_NOT_FOUND;
    }

    pki_key_name(key, sizeof(key), PKI_ACME_ST(a->conf), acct, "order", oid);

    rc = pki_acme_prefetched(a, key, out, text);
    if (rc == PKI_ACME_MISS) {
        rc = pki_acme_load_text(PKI_ACME_ST(a->conf), key, out, text, a->res);
    }

    return any ? rc : pki_acme_own(a, rc, key, out, text);
}


static pki_status_t
pki_acme_order_load(pki_acme_t *a, const char *acct, const char *oid,
    cJSON **out, char **text)
{
    return pki_acme_order_read(a, acct, oid, out, text, 0);
}


static long
pki_acme_order_ttl(pki_acme_t *a, const cJSON *order)
{
    long  ttl;

    ttl = (long) (pki_json_num(order, "keep") - (double) a->now);

    return ttl < 86400 ? 86400 : ttl;
}


/* Compare-and-set of an order read as *text: on success *text is the new
 * text.  1, 0 (changed meanwhile) or -1 (Redis failed). */
static int
pki_acme_order_cas(pki_acme_t *a, const char *acct, const char *oid,
    char **text, const cJSON *order)
{
    int    v;
    char   key[PKI_ACME_KEY_MAX], *nt;

    pki_key_name(key, sizeof(key), PKI_ACME_ST(a->conf), acct, "order", oid);

    v = pki_acme_cas(PKI_ACME_ST(a->conf), key, *text, order,
                     pki_acme_order_ttl(a, order), &nt, a->res);
    if (v == 1) {
        free(*text);
        *text = nt;
    }

    return v;
}


/* Adds to subs what became of an authorization the order's identifier id
 * needs (RFC 8555 6.7.1): the error of its failed challenge when it has
 * one, else its status ast ("deactivated", "expired", "revoked"; NULL:
 * the authorization is gone). */
static void
pki_acme_authz_failure(cJSON *subs, const cJSON *authz, const char *ast,
    const cJSON *id)
{
    char         detail[64];
    cJSON       *ch, *err;
    const char  *type, *text;

    cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(authz,
                                                          "challenges"))
    {
        err = cJSON_GetObjectItemCaseSensitive(ch, "error");
        type = pki_json_str(err, "type");
        text = pki_json_str(err, "detail");

        if (type != NULL && text != NULL) {
            pki_acme_subproblem(subs, type, text, pki_json_str(id, "type"),
                                pki_json_str(id, "value"));
            return;
        }
    }

    snprintf(detail, sizeof(detail), "authorization %.16s",
             ast != NULL ? ast : "not found");
    pki_acme_subproblem(subs, "unauthorized", detail,
                        pki_json_str(id, "type"), pki_json_str(id, "value"));
}


/* The error of an order whose authorizations failed (RFC 8555 7.1.3),
 * from subs, a subproblem for each of the nfailed (taken over): one lends
 * the order its type, several make it "unauthorized", and the detail
 * names the identifiers.  NULL: out of memory. */
static cJSON *
pki_acme_order_error(cJSON *subs, int nfailed)
{
    char         detail[PKI_DETAIL_LEN], names[200];
    cJSON       *err, *sub;
    const char  *type, *v;

    sub = cJSON_GetArrayItem(subs, 0);
    if (sub == NULL) {
        cJSON_Delete(subs);
        return NULL;
    }

    if (nfailed == 1) {
        type = pki_json_str(sub, "type");
        v = pki_json_str(cJSON_GetObjectItemCaseSensitive(sub, "identifier"),
                         "value");
        snprintf(detail, sizeof(detail), "identifier \"%.64s\": %s",
                 v != NULL ? v : "?", pki_json_str(sub, "detail"));
        err = pki_acme_problem_new(type, detail, pki_acme_type_status(type));

    } else {
        pki_acme_subproblem_names(subs, names, sizeof(names));
        snprintf(detail, sizeof(detail), "the authorizations of %d "
                 "identifiers failed: %s", nfailed, names);
        err = pki_acme_problem_new("unauthorized", detail, 403);
    }

    if (err == NULL) {
        cJSON_Delete(subs);
        return NULL;
    }

    cJSON_AddItemToObject(err, "subproblems", subs);

    return err;
}


/* 1 when what became of an authorization fails the orders that need it
 * (RFC 8555 7.1.6): ast is its status (pki_acme_authz_status), NULL when
 * it is gone. */
static int
pki_acme_authz_fails(const char *ast)
{
    return ast == NULL || strcmp(ast, "invalid") == 0
           || strcmp(ast, "deactivated") == 0
           || strcmp(ast, "expired") == 0 || strcmp(ast, "revoked") == 0;
}


/* 1 for a valid dns authorization whose CAA was read (when it validated)
 * more than PKI_ACME_CAA_REUSE ago: finalize reads CAA again for it. */
static int
pki_acme_caa_stale(const pki_acme_t *a, const cJSON *authz)
{
    const char  *type;

    type = pki_json_str(authz, "type");

    return a->conf->validate.caa
           && type != NULL && strcmp(type, "dns") == 0
           && pki_json_str(authz, "value") != NULL
           && pki_json_num(authz, "validated")
              < (double) (a->now - PKI_ACME_CAA_REUSE);
}


/* The status of an order: stored for processing, valid and invalid; else
 * derived from the authorizations.  NULL: Redis failed.  When the order
 * is derived invalid and error is not NULL, *error gets the problem that
 * says why (RFC 8555 7.1.3; NULL when out of memory): only then are the
 * authorizations after the first failed one read, so a pending or ready
 * order costs what it did.  When the order is derived ready and stale is
 * not NULL, *stale gets its authorizations that pki_acme_caa_stale()
 * takes, in the order's order (an array, NULL for none): finalize reads
 * CAA again for them without reading them from Redis again.  NULL too
 * when memory for them is short: a CAA re-check is never skipped. */
static const char *
pki_acme_order_status(pki_acme_t *a, const char *acct, const cJSON *order,
    cJSON **error, cJSON **stale)
{
    int               all_valid, nfailed, i;
    char              at[32], detail[80];
    cJSON            *authzs, *item, *authz, *id, *subs, *keep;
    const char       *st, *ast;
    pki_status_t      rc;
    pki_acme_batch_t  batch;

    if (error != NULL) {
        *error = NULL;
    }

    if (stale != NULL) {
        *stale = NULL;
    }

    st = pki_json_str(order, "status");
    if (st == NULL) {
        return "invalid";
    }

    if (strcmp(st, "processing") == 0 || strcmp(st, "valid") == 0
        || strcmp(st, "invalid") == 0)
    {
        return st;
    }

    if (pki_json_num(order, "expires") < (double) a->now) {
        if (error != NULL) {
            (void) pki_format_rfc3339(
                       (time_t) pki_json_num(order, "expires"), at);
            snprintf(detail, sizeof(detail), "the order expired at %s", at);
            *error = pki_acme_problem_new("unauthorized", detail, 403);
        }
        return "invalid";
    }

    all_valid = 1;
    nfailed = 0;
    subs = NULL;
    keep = NULL;
    authzs = cJSON_GetObjectItemCaseSensitive(order, "authzs");

    /* the order's identifiers, one for each authorization in turn */
    id = cJSON_GetObjectItemCaseSensitive(order, "identifiers");
    id = cJSON_IsArray(id) ? id->child : NULL;

    if (pki_acme_authz_batch(a, acct, authzs, &batch) != PKI_OK) {
        return NULL;
    }

    i = 0;
    cJSON_ArrayForEach(item, authzs) {
        authz = NULL;
        ast = NULL;

        if (cJSON_IsString(item)) {
            rc = pki_acme_authz_take(a, acct, item->valuestring, &batch, i,
                                     &authz);
            if (rc != PKI_OK && rc != PKI_NOT_FOUND) {
                cJSON_Delete(subs);
                cJSON_Delete(keep);
                pki_acme_batch_free(&batch);
                return NULL;
            }
        }

        i++;

        if (authz != NULL) {
            ast = pki_acme_authz_status(a, authz);
        }

        if (pki_acme_authz_fails(ast)) {
            if (error == NULL) {
                cJSON_Delete(authz);
                cJSON_Delete(keep);
                pki_acme_batch_free(&batch);
                return "invalid";
            }

            if (nfailed++ == 0) {
                subs = cJSON_CreateArray();
            }
            pki_acme_authz_failure(subs, authz, ast, id);

        } else if (strcmp(ast, "valid") != 0) {
            all_valid = 0;

        } else if (stale != NULL && pki_acme_caa_stale(a, authz)) {
            if (keep == NULL) {
                keep = cJSON_CreateArray();
            }
            if (keep == NULL || !cJSON_AddItemToArray(keep, authz)) {
                cJSON_Delete(authz);
                cJSON_Delete(subs);
                cJSON_Delete(keep);
                pki_acme_batch_free(&batch);
                return NULL;
            }
            authz = NULL;
        }

        cJSON_Delete(authz);
        id = id != NULL ? id->next : NULL;
    }

    pki_acme_batch_free(&batch);

    if (nfailed > 0) {
        cJSON_Delete(keep);
        *error = pki_acme_order_error(subs, nfailed);
        return "invalid";
    }

    if (!all_valid) {
        cJSON_Delete(keep);
        return "pending";
    }

    if (stale != NULL) {
        *stale = keep;
    }

    return "ready";
}


/* The order as a client sees it; error is the problem of an order derived
 * invalid (pki_acme_order_status, taken over), or NULL for the one stored
 * with a failed finalization, if any. */
static cJSON *
pki_acme_order_obj(pki_acme_t *a, const char *acct, const char *oid,
    const cJSON *order, const char *status, cJSON *error)
{
    cJSON       *o, *arr, *item, *err;
    const char  *s;

    o = cJSON_CreateObject();
    if (o == NULL) {
        cJSON_Delete(error);
        return NULL;
    }

    cJSON_AddStringToObject(o, "status", status);
    pki_json_time(o, "expires", (time_t) pki_json_num(order, "expires"));

    item = cJSON_GetObjectItemCaseSensitive(order, "identifiers");
    cJSON_AddItemToObject(o, "identifiers", cJSON_Duplicate(item, 1));

    if (pki_json_num(order, "notBefore") > 0) {
        pki_json_time(o, "notBefore", (time_t) pki_json_num(order,
                                                            "notBefore"));
    }
    if (pki_json_num(order, "notAfter") > 0) {
        pki_json_time(o, "notAfter", (time_t) pki_json_num(order,
                                                           "notAfter"));
    }

    arr = cJSON_AddArrayToObject(o, "authorizations");
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(order,
                                                             "authzs"))
    {
        char  *url;

        url = pki_acme_url(a, "authz/%s/%s", acct, item->valuestring);
        if (url != NULL && arr != NULL) {
            cJSON_AddItemToArray(arr, cJSON_CreateString(url));
        }
        free(url);
    }

    pki_json_url(a, o, "finalize", pki_acme_url(a, "finalize/%s/%s", acct,
                                                oid));

    if (strcmp(status, "valid") == 0) {
        pki_json_url(a, o, "certificate", pki_acme_url(a, "cert/%s/%s", acct,
                                                       oid));
    }

    s = pki_json_str(order, "replaces");
    if (s != NULL) {
        cJSON_AddStringToObject(o, "replaces", s);
    }

    s = pki_json_str(order, "profile");
    if (s != NULL) {
        cJSON_AddStringToObject(o, "profile", s);
    }

    err = cJSON_GetObjectItemCaseSensitive(order, "error");
    if (error != NULL) {
        cJSON_AddItemToObject(o, "error", error);

    } else if (cJSON_IsObject(err)) {
        cJSON_AddItemToObject(o, "error", cJSON_Duplicate(err, 1));
    }

    return o;
}


#define PKI_ACME_AKI_MAX  64

/*
 * RFC 9773 certID -> serial (canonical hex) and the keyIdentifier it
 * names (at most PKI_ACME_AKI_MAX bytes); pki_acme_cert_id_ours() then
 * checks that keyIdentifier against the certificate the serial names.
 */
static int
pki_acme_parse_cert_id(const char *certid, char serial[41],
    unsigned char aki_out[PKI_ACME_AKI_MAX], size_t *aki_len)
{
    int             ok;
    char           *hex;
    size_t          alen, slen, i;
    const char     *dot;
    unsigned char  *aki = NULL, *ser = NULL;

    dot = strchr(certid, '.');
    if (dot == NULL || strlen(certid) > 256) {
        return 0;
    }

    ok = 0;

    if (!pki_b64url_decode(certid, (size_t) (dot - certid), &aki, &alen)
        || alen == 0 || alen > PKI_ACME_AKI_MAX
        || !pki_b64url_decode(dot + 1, strlen(dot + 1), &ser, &slen)
        || slen == 0 || slen > 21)
    {
        goto done;
    }

    /* the content octets of the DER serial (RFC 9773 4.1): one certificate,
     * one certID; no negative number, no redundant leading zero */
    if ((ser[0] & 0x80) || (slen > 1 && ser[0] == 0 && !(ser[1] & 0x80))) {
        goto done;
    }

    hex = malloc(slen * 2 + 1);
    if (hex == NULL) {
        goto done;
    }

    for (i = 0; i < slen; i++) {
        snprintf(hex + 2 * i, 3, "%02X", ser[i]);
    }

    ok = pki_serial_normalize(hex, serial);
    free(hex);

    if (ok) {
        memcpy(aki_out, aki, alen);
        *aki_len = alen;
    }

done:

    free(aki);
    free(ser);

    return ok;
}


/*
 * Whether a certID's keyIdentifier is the one of the certificate its
 * serial names (rec, recorded under this CA).  The certID is built from
 * the certificate's own authorityKeyIdentifier (RFC 9773 4.1): the CA's
 * subjectKeyIdentifier when it has one, the SHA-1 of its key when it
 * has none, or the identifier of an earlier certificate of the CA when
 * it was issued again with another one.  The CA's identifier is the fast
 * path; the recorded certificate settles the others.
 */
static int
pki_acme_cert_id_ours(const pki_acme_conf_t *conf, const pki_record_t *rec,
    const unsigned char *aki, size_t alen)
{
    int                        ok;
    X509                      *x;
    const unsigned char       *p;
    const ASN1_OCTET_STRING   *id;

    id = X509_get0_subject_key_id(pki_ca_cert(conf->ca));
    if (id != NULL && (size_t) ASN1_STRING_length(id) == alen
        && memcmp(ASN1_STRING_get0_data(id), aki, alen) == 0)
    {
        return 1;
    }

    if (rec->der == NULL || rec->der_len > LONG_MAX) {
        return 0;
    }

    p = rec->der;
    x = d2i_X509(NULL, &p, (long) rec->der_len);
    if (x == NULL) {
        return 0;
    }

    id = X509_get0_authority_key_id(x);
    ok = id != NULL && (size_t) ASN1_STRING_length(id) == alen
         && memcmp(ASN1_STRING_get0_data(id), aki, alen) == 0;

    X509_free(x);

    return ok;
}


/*
 * A new order in one step.  ARGV[1] n; KEYS[1..n] are SET to ARGV[2i], EX
 * ARGV[2i+1] (the new authorizations, then the order).  KEYS[n+1], the
 * account's order list (a zset): ZADD score ARGV[2n+2] (now) member
 * ARGV[2n+3], then ZREMRANGEBYSCORE -inf ARGV[2n+4], and the list expires
 * when its newest member leaves it (an idle account's list goes; never
 * sooner than another location's newOrder set).
 *
 * KEYS[n+2], the account's pending authorizations (a zset: id by expiry),
 * with ARGV[2n+5] their cap (0: none, and not kept), ARGV[2n+6] the
 * prefix of an authorization's key, ARGV[2n+7] m, ARGV[2n+8] a random
 * number, then m pairs (id, expiry) of the new ones.  A validation's
 * result and a deactivation take theirs out (pki_lua_job_store,
 * pki_lua_authz_deactivate); what leaves pending another way (expiry
 * aside) is found here: over the cap, the 32 that expire first and 32 from
 * a random place are read (through keys built from the prefix, which
 * share the account's hash tag), and those no longer pending leave the
 * set.  Still over it: nothing is written, and -1 - (the pending count)
 * is the answer.  An account that asks for names it never validates is so
 * held to a bounded amount of state.
 */
static const char  pki_lua_order_create[] =
    "local n = tonumber(ARGV[1]) "
    "local b = 2 * n + 4 "
    "local max, m, pk = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 3]), "
    "                   KEYS[n + 2] "
    "if max > 0 and m > 0 then "
    "  local ty = redis.call('TYPE', pk).ok "
    "  if ty ~= 'none' and ty ~= 'zset' then "
    "    return redis.error_reply('WRONGTYPE ' .. pk .. ' holds a ' .. ty) "
    "  end "
    "  redis.call('ZREMRANGEBYSCORE', pk, '-inf', ARGV[2 * n + 2]) "
    "  local c = redis.call('ZCARD', pk) "
    "  if c + m > max then "
    "    local seen = {} "
    "    local function look(lo) "
    "      for _, id in ipairs(redis.call('ZRANGE', pk, lo, lo + 31)) do "
    "        if not seen[id] then "
    "          seen[id] = true "
    "          local g = redis.pcall('GET', ARGV[b + 2] .. id) "
    "          local ok, d = pcall(cjson.decode, "
    "                              type(g) == 'string' and g or '') "
    "          if not ok or type(d) ~= 'table' "
    "             or d.status ~= 'pending' then "
    "            redis.call('ZREM', pk, id) "
    "            c = c - 1 "
    "          end "
    "        end "
    "      end "
    "    end "
    "    look(0) "
    "    if c + m > max and c > 0 then "
    "      look(tonumber(ARGV[b + 4]) % c) "
    "    end "
    "    if c + m > max then return -1 - c end "
    "  end "
    "end "
    "for i = 1, n do "
    "  redis.call('SET', KEYS[i], ARGV[2 * i], 'EX', ARGV[2 * i + 1]) "
    "end "
    "redis.call('ZADD', KEYS[n + 1], ARGV[2 * n + 2], ARGV[2 * n + 3]) "
    "redis.call('ZREMRANGEBYSCORE', KEYS[n + 1], '-inf', ARGV[2 * n + 4]) "
    "local ttl = tonumber(ARGV[2 * n + 2]) - tonumber(ARGV[2 * n + 4]) "
    "if ttl > redis.call('TTL', KEYS[n + 1]) then "
    "  redis.call('EXPIRE', KEYS[n + 1], ttl) "
    "end "
    "if max > 0 and m > 0 then "
    "  local hi = 0 "
    "  for j = 1, m do "
    "    local e = tonumber(ARGV[b + 4 + 2 * j]) "
    "    redis.call('ZADD', pk, e, ARGV[b + 3 + 2 * j]) "
    "    if e > hi then hi = e end "
    "  end "
    "  ttl = hi - tonumber(ARGV[2 * n + 2]) + 60 "
    "  if ttl > redis.call('TTL', pk) then redis.call('EXPIRE', pk, ttl) end "
    "end "
    "return 1";

/* Up to PKI_ACME_MAX_IDS authorizations and the order */
#define PKI_ACME_MSET_MAX  (PKI_ACME_MAX_IDS + 1)


/* The arguments of pki_lua_order_create past the objects: the order
 * list's and the pending authorizations'. */
typedef struct {
    const char   *zkey;         /* the account's order list */
    const char   *zscore;       /* now */
    const char   *zmember;      /* the order's id */
    const char   *zmin;         /* older entries leave the list */
    const char   *pkey;         /* the account's pending authorizations */
    const char   *aprefix;      /* an authorization's key, without its id */
    long          max;          /* their cap; 0: none */
    int           m;            /* new authorizations: ids[], exp[] */
    char        **ids;
    char        (*exp)[24];
    long long     pending;      /* out: refused, with this many pending */
} pki_acme_create_args_t;


/* n SETs (keys, texts, TTLs) and the lists' updates, all in one script
 * call; PKI_OK, PKI_UNAVAILABLE, PKI_INTERNAL, or PKI_CONFLICT: over the
 * cap of pending authorizations, nothing written (c->pending). */
static pki_status_t
pki_acme_order_store(pki_redis_t *r, pki_result_t *res, int n, char **keys,
    char **texts, char (*ttls)[24], pki_acme_create_args_t *c)
{
    int           i, nk, na;
    char          num[16], nks[16], max[24], ms[16], rnd[16];
    uint32_t      r32;
    size_t       *lens;
    const char  **argv;
    redisReply   *reply;
    pki_status_t  rc;

    if (n < 1 || n > PKI_ACME_MSET_MAX || c->m < 0 || c->m >= n) {
        return pki_fail(res, PKI_INTERNAL, "redis: too many objects");
    }

    /* EVAL, script, nkeys, n + 2 keys, n, 2n, 3 + 4 arguments, 2m: more
     * than pki_int_redis_cmd() takes, so the uncapped call below */
    argv = calloc((size_t) (3 * n + 2 * c->m + 16), sizeof(*argv));
    lens = calloc((size_t) (3 * n + 2 * c->m + 16), sizeof(*lens));
    if (argv == NULL || lens == NULL) {
        free(argv);
        free(lens);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    snprintf(num, sizeof(num), "%d", n);
    snprintf(max, sizeof(max), "%ld", c->max > 0 ? c->max : 0);
    snprintf(ms, sizeof(ms), "%d", c->m);
    if (RAND_bytes((unsigned char *) &r32, sizeof(r32)) != 1) {
        r32 = (uint32_t) time(NULL);
    }
    snprintf(rnd, sizeof(rnd), "%u", (unsigned) r32);

    argv[0] = "EVAL";
    argv[1] = pki_lua_order_create;
    nk = n + 2;
    snprintf(nks, sizeof(nks), "%d", nk);
    argv[2] = nks;
    na = 3;

    for (i = 0; i < n; i++) {
        argv[na++] = keys[i];
    }
    argv[na++] = c->zkey;
    argv[na++] = c->pkey;
    argv[na++] = num;
    for (i = 0; i < n; i++) {
        argv[na++] = texts[i];
        argv[na++] = ttls[i];
    }
    argv[na++] = c->zscore;
    argv[na++] = c->zmember;
    argv[na++] = c->zmin;
    argv[na++] = max;
    argv[na++] = c->aprefix;
    argv[na++] = ms;
    argv[na++] = rnd;
    for (i = 0; i < c->m; i++) {
        argv[na++] = c->ids[i];
        argv[na++] = c->exp[i];
    }

    for (i = 0; i < na; i++) {
        lens[i] = strlen(argv[i]);
    }

    reply = pki_int_redis_command(r, na, argv, lens, res);

    free(argv);
    free(lens);

    if (reply == NULL) {
        return PKI_UNAVAILABLE;
    }

    rc = PKI_OK;

    if (reply->type != REDIS_REPLY_INTEGER) {
        rc = pki_fail(res, PKI_UNAVAILABLE, "redis: unexpected answer to "
                      "the order's creation");

    } else if (reply->integer < 0) {
        c->pending = -1 - reply->integer;
        rc = PKI_CONFLICT;
    }

    freeReplyObject(reply);

    return rc;
}


/* Stores the new authorizations (newauthz: objects with their "id"), the
 * order and its entry in the account's order list, in one script call:
 * when Redis fails, no authorization is left without its order (they
 * used to go in batches of 8 before it). */
static pki_status_t
pki_acme_order_create(pki_acme_t *a, const char *oid, const cJSON *order,
    cJSON *newauthz, const char *score, const char *zmin)
{
    int                     n, i, total;
    long                    ttl;
    char                  **keys, **texts, **ids, (*ttls)[24], (*exp)[24];
    char                    zkey[PKI_ACME_KEY_MAX], pkey[PKI_ACME_KEY_MAX];
    char                    aprefix[PKI_ACME_KEY_MAX];
    cJSON                  *az, *id;
    pki_redis_t            *st;
    pki_status_t            rc;
    pki_acme_create_args_t  c;

    st = PKI_ACME_ST(a->conf);
    rc = PKI_OK;

    total = (newauthz != NULL ? cJSON_GetArraySize(newauthz) : 0) + 1;
    if (total > PKI_ACME_MSET_MAX) {
        return pki_fail(a->res, PKI_INTERNAL, "too many authorizations");
    }

    keys = calloc((size_t) total, sizeof(*keys));
    texts = calloc((size_t) total, sizeof(*texts));
    ttls = calloc((size_t) total, sizeof(*ttls));
    ids = calloc((size_t) total, sizeof(*ids));
    exp = calloc((size_t) total, sizeof(*exp));
    if (keys == NULL || texts == NULL || ttls == NULL || ids == NULL
        || exp == NULL)
    {
        rc = pki_fail(a->res, PKI_INTERNAL, "out of memory");
        goto done;
    }

    n = 0;

    cJSON_ArrayForEach(az, newauthz) {
        id = cJSON_DetachItemFromObjectCaseSensitive(az, "id");
        keys[n] = malloc(PKI_ACME_KEY_MAX);
        if (keys[n] != NULL && cJSON_IsString(id)) {
            pki_key_name(keys[n], PKI_ACME_KEY_MAX, st, a->acct, "authz",
                         id->valuestring);
            ids[n] = strdup(id->valuestring);
        }
        cJSON_Delete(id);
        texts[n] = cJSON_PrintUnformatted(az);
        ttl = (long) (pki_json_num(az, "expires") - (double) a->now)
              + 86400;
        snprintf(ttls[n], sizeof(ttls[n]), "%ld", ttl > 0 ? ttl : 1);
        snprintf(exp[n], sizeof(exp[n]), "%lld",
                 (long long) pki_json_num(az, "expires"));
        if (ids[n] == NULL) {
            rc = pki_fail(a->res, PKI_INTERNAL, "out of memory");
            n++;
            goto done;
        }
        n++;
    }

    keys[n] = malloc(PKI_ACME_KEY_MAX);
    if (keys[n] != NULL) {
        pki_key_name(keys[n], PKI_ACME_KEY_MAX, st, a->acct, "order", oid);
    }
    texts[n] = cJSON_PrintUnformatted(order);
    snprintf(ttls[n], sizeof(ttls[n]), "%ld", pki_acme_order_ttl(a, order));
    n++;

    for (i = 0; i < n; i++) {
        if (keys[i] == NULL || texts[i] == NULL) {
            rc = pki_fail(a->res, PKI_INTERNAL, "out of memory");
            goto done;
        }
    }

    pki_key_name(zkey, sizeof(zkey), st, a->acct, "orders", NULL);
    pki_key_name(pkey, sizeof(pkey), st, a->acct, "pendauthz", NULL);
    pki_key_name(aprefix, sizeof(aprefix), st, a->acct, "authz", "");

    memset(&c, 0, sizeof(c));
    c.zkey = zkey;
    c.zscore = score;
    c.zmember = oid;
    c.zmin = zmin;
    c.pkey = pkey;
    c.aprefix = aprefix;
    c.max = a->conf->pending_authz_max;
    c.m = n - 1;
    c.ids = ids;
    c.exp = exp;

    if (c.max > 0 && c.m > c.max) {
        /* never fits: no Retry-After */
        pki_acme_problem(a, 400, "malformed", "the order needs %d new "
                         "authorizations, more than the %ld this server "
                         "lets an account hold pending", c.m, c.max);
        rc = PKI_CONFLICT;
        goto done;
    }

    rc = pki_acme_order_store(st, a->res, n, keys, texts, ttls, &c);

    if (rc == PKI_CONFLICT) {
        pki_acme_problem(a, 429, "rateLimited", "the account has %lld "
                         "pending authorizations and may have at most %ld: "
                         "validate or deactivate some first, or wait for "
                         "them to expire", c.pending, c.max);
        a->resp->retry_after = PKI_ACME_PENDING_RETRY;
    }

done:

    for (i = 0; i < total; i++) {
        if (keys != NULL) {
            free(keys[i]);
        }
        if (texts != NULL) {
            cJSON_free(texts[i]);
        }
        if (ids != NULL) {
            free(ids[i]);
        }
    }
    free(keys);
    free(texts);
    free(ttls);
    free(ids);
    free(exp);

    return rc;
}


/* ---- RFC 9773 section 5: replaced certificates --------------------------------
 *
 * <ns>{acme:<ACCT>}:replaced:<CA>:<SERIAL> (pki_redis, the account's hash
 * tag) names the order that replaces the certificate: claimed with SET NX
 * at newOrder for the order's lifetime, once the order is stored (so a
 * holder's order is never missing while it is created), checked again by
 * finalize before anything is signed, and refreshed after issuance for
 * the replaced certificate's life (at least a year).  The value is the
 * holder's id ("OID"), locked by its finalizations just before the order
 * moves to processing ("!OID@:T1:T2", a token per finalization), or
 * issued ("=OID").  A newer order takes a plain mark over when its holder
 * is pending or ready (RFC 9773 5 refuses only what a finalized order
 * replaced: a client that lost its order renews again), a locked one when
 * its holder is invalid or gone, an issued one never; each takeover is a
 * compare-and-set on the value read, so of two racing orders one wins,
 * and of a takeover and the holder's finalization one wins.  Keyed on the
 * serial, not the certID text: every encoding of one certID is one mark.
 *
 * A finalization that fails after locking (before its move, or after it
 * with the order ready again) takes its own token back
 * (pki_lua_replaced_unlock); the last token gone, the mark is plain
 * again, and a newer order may take it over.  Another finalization of
 * the same order, between its own lock and its move, keeps its token, so
 * its lock is never undone.  A lock without tokens ("!OID", "!OID@TAG":
 * written by a version before them) holds as before; a finalization that
 * locks it again keeps it as the token "-", which nobody takes back.
 * The tokens follow an "@" (with or without a TAG): a version before
 * them cuts the order's id at the "@", and when that order is gone takes
 * the unknown tag for another location's store (the mark holds), rather
 * than reading a gone order "OID:T1" (taken over while locked).  A
 * finalization that dies between its lock and its move (a worker killed)
 * leaves its token: that lock holds until its order is finalized or
 * expires.
 *
 * The holder's order lives in its location's state store: a location with
 * an acme_redis of its own writes "OID@TAG" (TAG names that store, see
 * pki_acme_mark_value), one without writes "OID" (its orders are in
 * pki_redis, beside the mark).  A holder that cannot be found in this
 * location's store and was written for another one is not gone: it holds
 * the mark until it expires with its order.
 */

#define PKI_ACME_REPLACED_TTL  31536000L

static pki_status_t pki_acme_order_recover(pki_acme_t *a, const char *acct,
    const char *oid, cJSON **order, char **text);
static pki_status_t pki_acme_order_relink(pki_acme_t *a, const char *acct,
    const char *oid, cJSON **order, char **text);
static void pki_acme_order_fail(cJSON *order, const char *type, int status,
    const char *detail);


/* finalize: 1 when KEYS[1] names the order ARGV[3] or nothing (set to
 * ARGV[1], its mark value, EX ARGV[2]: with a token ARGV[4], locked as
 * "!", the value, "@" when it has none, ":" and the tokens of the lock
 * with ARGV[4] added; a lock there is kept as it is), or names it as
 * issued ("=", left so: with a state store of its own, an order that
 * lost its completion is finalized again, and completed from its link);
 * 0 when it names another order.  The order is compared by its id alone:
 * a store's tag depends on how a host writes its address, and order ids
 * are random.  A plain mark may be taken over by a newer order
 * (pki_acme_replaced_claim), a locked one only once its order is invalid
 * or gone: finalize locks it just before its order moves to processing,
 * so of an order taken over and its finalization one wins.  A lock
 * without tokens (an older version's) keeps "-" for its own: nobody
 * takes that back.  A token already there (this script run again after
 * its answer was lost) is not added twice. */
static const char  pki_lua_replaced_hold[] =
    "local cur = redis.call('GET', KEYS[1]) "
    "local c, toks = '', nil "
    "if cur then "
    "  c = string.sub(cur, 1, 1) "
    "  local id = (c == '=' or c == '!') and string.sub(cur, 2) or cur "
    "  local col = string.find(id, ':', 1, true) "
    "  if col then "
    "    toks = string.sub(id, col + 1) "
    "    id = string.sub(id, 1, col - 1) "
    "  end "
    "  local at = string.find(id, '@', 1, true) "
    "  if at then id = string.sub(id, 1, at - 1) end "
    "  if id ~= ARGV[3] then return 0 end "
    "  if c == '=' then return 1 end "
    "end "
    "if ARGV[4] ~= '' then "
    "  local v = ARGV[1] "
    "  if not string.find(v, '@', 1, true) then v = v .. '@' end "
    "  if c ~= '!' then "
    "    toks = ARGV[4] "
    "  elseif not toks then "
    "    toks = '-:' .. ARGV[4] "
    "  elseif not string.find(':' .. toks .. ':', ':' .. ARGV[4] .. ':', "
    "                         1, true) then "
    "    toks = toks .. ':' .. ARGV[4] "
    "  end "
    "  redis.call('SET', KEYS[1], '!' .. v .. ':' .. toks, 'EX', ARGV[2]) "
    "elseif c == '!' then "
    "  redis.call('SET', KEYS[1], cur, 'EX', ARGV[2]) "
    "else "
    "  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) "
    "end "
    "return 1";


/* A finalization that failed after it locked the mark KEYS[1] takes its
 * token ARGV[1] back: 1 when it did (the mark is plain again when no
 * token is left, with its TTL), 0 when the mark does not hold that token
 * (issued, taken over, or a lock without tokens). */
static const char  pki_lua_replaced_unlock[] =
    "local cur = redis.call('GET', KEYS[1]) "
    "if not cur or string.sub(cur, 1, 1) ~= '!' then return 0 end "
    "local col = string.find(cur, ':', 1, true) "
    "if not col then return 0 end "
    "local toks = ':' .. string.sub(cur, col + 1) .. ':' "
    "local s, e = string.find(toks, ':' .. ARGV[1] .. ':', 1, true) "
    "if not s then return 0 end "
    "toks = string.sub(toks, 1, s) .. string.sub(toks, e + 1) "
    "toks = string.sub(toks, 2, -2) "
    "local v = string.sub(cur, 2, col - 1) "
    "if toks ~= '' then "
    "  redis.call('SET', KEYS[1], '!' .. v .. ':' .. toks, 'KEEPTTL') "
    "else "
    "  if string.sub(v, -1) == '@' then v = string.sub(v, 1, -2) end "
    "  redis.call('SET', KEYS[1], v, 'KEEPTTL') "
    "end "
    "return 1";


/* The mark's value for the order oid of this location: "OID", or
 * "OID@TAG" with a state store of its own (TAG: 12 characters of the
 * SHA-256 of the store's address, database and namespace). */
static void
pki_acme_mark_value(pki_acme_t *a, const char *oid, char *val, size_t size)
{
    char           id[320], *b;
    unsigned char  md[32];

    if (a->conf->state_redis == NULL || a->conf->state_redis == a->conf->redis)
    {
        snprintf(val, size, "%s", oid);
        return;
    }

    pki_int_redis_id(a->conf->state_redis, id, sizeof(id));
    b = NULL;
    if (EVP_Digest(id, strlen(id), md, NULL, EVP_sha256(), NULL) == 1) {
        b = pki_b64url_encode(md, 9);
    }
    snprintf(val, size, "%s@%s", oid, b != NULL ? b : "?");
    free(b);
}



static void
pki_acme_replaced_key(pki_acme_t *a, const char *acct, const char *serial,
    char *key, size_t size)
{
    char  id[128];

    snprintf(id, sizeof(id), "%s:%s", pki_ca_name(a->conf->ca), serial);
    pki_key_name(key, size, a->conf->redis, acct, "replaced", id);
}


/* The serial an order replaces; 0 when it replaces nothing of this CA. */
static int
pki_acme_order_replaces(pki_acme_t *a, const cJSON *order, char serial[41])
{
    size_t          alen;
    const char     *s;
    unsigned char   aki[PKI_ACME_AKI_MAX];

    s = pki_json_str(order, "replacesSerial");
    if (s != NULL && pki_serial_normalize(s, serial)) {
        return 1;
    }

    /* an order created before the serial was kept */
    s = pki_json_str(order, "replaces");

    (void) a;

    /* (its keyIdentifier was checked when the order was made) */
    return s != NULL && pki_acme_parse_cert_id(s, serial, aki, &alen);
}


/* Whether the order ids (normalised by pki_acme_identifiers) share one
 * with a record's SANs ("DNS:a,IP:1.2.3.4,URI:x\,y,...").  */
static int
pki_acme_ids_shared(const cJSON *ids, const char *sans)
{
    size_t        n, plen;
    const char   *p, *e, *pfx, *value;
    const cJSON  *item;

    if (sans == NULL) {
        return 0;
    }

    cJSON_ArrayForEach(item, ids) {
        value = pki_json_str(item, "value");
        pfx = strcmp(pki_json_str(item, "type"), "ip") == 0 ? "IP:" : "DNS:";
        plen = strlen(pfx);
        n = strlen(value);

        for (p = sans; *p != '\0'; p = (*e == ',') ? e + 1 : e) {
            /* to the next comma that is not escaped (pki_sans_text) */
            for (e = p; *e != '\0' && *e != ','; e++) {
                if (*e == '\\' && e[1] != '\0') {
                    e++;
                }
            }

            if ((size_t) (e - p) == plen + n && strncmp(p, pfx, plen) == 0
                && strncasecmp(p + plen, value, n) == 0)
            {
                return 1;
            }
        }
    }

    return 0;
}


/* Whether the order holder of this account still holds a replacement: 1
 * while it is pending, ready (*open set for both), processing or valid
 * (*issued set when valid), 0 when it is invalid or gone (*gone set), -1
 * when Redis failed.  A finalization that died is recovered first, as a
 * read of the order would. */
static int
pki_acme_replaced_holds(pki_acme_t *a, const char *holder, int *issued,
    int *gone, int *open)
{
    int           v;
    char         *text;
    cJSON        *order;
    const char   *st;
    pki_status_t  rc;

    *issued = 0;
    *gone = 0;
    *open = 0;
    order = NULL;
    text = NULL;

    rc = pki_acme_order_read(a, a->acct, holder, &order, &text, 1);

    if (rc == PKI_OK && pki_acme_foreign(a, order)) {
        /* another location's order: its authorizations are none of this
         * location's to judge, so it holds the mark until it is invalid
         * or past its expiry as stored (or issued) */
        st = pki_json_str(order, "status");
        v = st == NULL || strcmp(st, "invalid") == 0 ? 0
            : strcmp(st, "valid") == 0 || strcmp(st, "processing") == 0 ? 1
            : pki_json_num(order, "expires") >= (double) a->now;
        *issued = st != NULL && strcmp(st, "valid") == 0;
        *open = v == 1 && (strcmp(st, "pending") == 0
                           || strcmp(st, "ready") == 0);
        cJSON_Delete(order);
        free(text);
        return v;
    }

    if (rc == PKI_OK) {
        rc = pki_acme_order_recover(a, a->acct, holder, &order, &text);
    }

    if (rc == PKI_NOT_FOUND) {
        v = 0;
        *gone = 1;

    } else if (rc != PKI_OK) {
        v = -1;

    } else {
        st = pki_acme_order_status(a, a->acct, order, NULL, NULL);

        if (st == NULL) {
            v = -1;
        } else if (strcmp(st, "invalid") == 0) {
            v = 0;
        } else {
            *issued = (strcmp(st, "valid") == 0);
            *open = (strcmp(st, "pending") == 0 || strcmp(st, "ready") == 0);
            v = 1;
        }
    }

    cJSON_Delete(order);
    free(text);

    return v;
}


/* newOrder: claims the mark key for the order oid (TTL ttl); with oid
 * NULL only checks that it could be claimed.  1: claimed (free), 0:
 * refused, -1: Redis failed (both with the problem set).
 *
 * RFC 9773 section 5 refuses a replacement of a certificate that an
 * order already replaced (finalized).  A holder that is only pending or
 * ready and whose mark is plain (its finalization has not locked it,
 * pki_lua_replaced_hold) is taken over: a client that lost its order (a
 * crash before finalize) can renew again, and the order that lost the
 * mark fails at its finalize with alreadyReplaced, having issued
 * nothing.  A locked mark ("!", with or without tokens) holds while its
 * order is not invalid or gone, an issued one ("=") always; a holder in
 * another location's store (which this one cannot read) holds until it
 * expires, as before.  The tokens of a lock (":...") and an empty tag
 * ("OID@") are not part of the holder's name. */
static int
pki_acme_replaced_claim(pki_acme_t *a, const char *key, const char *oid,
    long ttl)
{
    int           tries, v, issued, gone, away, open, locked;
    char          num[24], *holder, *at, cut;
    size_t        hlen, tlen;
    char          mine[PKI_ACME_ID_MAX + 24], tag[24];
    const char   *args[4];
    pki_redis_t  *r;
    redisReply   *reply;

    r = a->conf->redis;
    snprintf(num, sizeof(num), "%ld", ttl > 0 ? ttl : 1);
    pki_acme_mark_value(a, oid != NULL ? oid : "", mine, sizeof(mine));
    pki_acme_mark_value(a, "", tag, sizeof(tag));      /* "" or "@TAG" */

    for (tries = 0; tries < 4; tries++) {
        if (oid != NULL) {
            v = pki_acme_cmd_int(r, a->res, pki_acme_cmd(r, a->res, 6, "SET",
                                                         key, mine, "EX", num,
                                                         "NX"));
            if (v != 0) {
                goto claimed;
            }
        }

        reply = pki_acme_cmd(r, a->res, 2, "GET", key);
        if (reply == NULL) {
            goto failed;
        }

        if (reply->type == REDIS_REPLY_NIL) {
            freeReplyObject(reply);
            if (oid == NULL) {
                return 1;
            }
            continue;                       /* gone meanwhile */
        }

        if (reply->type != REDIS_REPLY_STRING) {
            freeReplyObject(reply);
            pki_fail(a->res, PKI_UNAVAILABLE, "certificate store "
                     "unavailable");
            goto failed;
        }

        holder = strndup(reply->str, reply->len);
        freeReplyObject(reply);
        if (holder == NULL) {
            pki_acme_problem(a, 500, "serverInternal", "out of memory");
            return -1;
        }

        /* [!=]OID[@TAG][:TOKENS]: hlen to the tag, tlen of the tag */
        tlen = strcspn(holder, ":");
        at = memchr(holder, '@', tlen);
        hlen = at != NULL ? (size_t) (at - holder) : tlen;
        tlen -= hlen;
        if (tlen == 1) {
            tlen = 0;                       /* "OID@": no tag */
        }
        locked = (holder[0] == '!');
        if (oid != NULL && holder[0] != '=' && strlen(oid) == hlen - locked
            && memcmp(holder + locked, oid, hlen - locked) == 0)
        {
            free(holder);
            return 1;           /* this order's own (in any store's tag) */
        }

        away = 0;

        if (holder[0] == '=') {
            /* issued (pki_acme_replaced_mark): whether or not its order
             * is still stored */
            issued = 1;
            v = 1;
        } else {
            cut = holder[hlen];
            holder[hlen] = '\0';
            v = pki_acme_replaced_holds(a, holder + locked, &issued, &gone,
                                        &open);
            holder[hlen] = cut;
            if (v > 0 && open && !locked) {
                /* pending or ready, its finalization not started: the
                 * newer order takes the mark (the CAS below fails if
                 * the finalization locks it meanwhile) */
                v = 0;
            }
            if (v == 0 && gone
                && (tlen != strlen(tag)
                    || (tlen > 0 && memcmp(at, tag, tlen) != 0)))
            {
                /* its order is kept in another location's store, where
                 * this one cannot judge it: it holds until the mark
                 * expires with that order */
                away = 1;
                v = 1;
            }
        }

        if (v != 0) {
            if (v > 0) {
                pki_acme_problem(a, 409, "alreadyReplaced", issued
                                 ? "the certificate was already replaced"
                                 : away ? "order %.*s of another ACME "
                                          "location already replaces the "
                                          "certificate"
                                 : "order %.*s already replaces the "
                                   "certificate",
                                 (int) (hlen - locked < 64 ? hlen - locked
                                                           : 64),
                                 holder + locked);
            }
            free(holder);
            if (v < 0) {
                goto failed;
            }
            return 0;
        }

        if (oid == NULL) {
            free(holder);
            return 1;
        }

        /* the holder is invalid or gone: take over what was read */
        args[0] = key;
        args[1] = holder;
        args[2] = mine;
        args[3] = num;

        v = pki_acme_cmd_int(r, a->res, pki_acme_eval(r, a->res, pki_lua_cas,
                                                      1, 4, args));
        free(holder);

        if (v != 0) {
            goto claimed;
        }
    }

    pki_acme_problem(a, 409, "alreadyReplaced", "another order is replacing "
                     "the certificate");
    return 0;

claimed:

    if (v > 0) {
        return 1;
    }

failed:

    pki_acme_fail(a, PKI_UNAVAILABLE, "newOrder");
    return -1;
}


/* newOrder: the stored order oid, whose claim of what it replaces was
 * refused (claimed 0) or failed (-1), fails.  When this cannot be stored,
 * the order stays pending: its finalize checks the mark again and issues
 * nothing while another order holds it. */
static void
pki_acme_order_withdraw(pki_acme_t *a, const char *oid, cJSON *order,
    int claimed)
{
    int           v;
    char          key[PKI_ACME_KEY_MAX], *text;
    pki_result_t  tmp;

    text = cJSON_PrintUnformatted(order);
    if (text == NULL) {
        return;
    }

    if (claimed == 0) {
        pki_acme_order_fail(order, "alreadyReplaced", 409, "another order "
                            "replaces the certificate");
    } else {
        pki_acme_order_fail(order, "serverInternal", 500, "the certificate "
                            "store failed while the order was made");
    }

    pki_result_init(&tmp);
    pki_key_name(key, sizeof(key), PKI_ACME_ST(a->conf), a->acct, "order",
                 oid);
    v = pki_acme_cas(PKI_ACME_ST(a->conf), key, text, order,
                     pki_acme_order_ttl(a, order), NULL, &tmp);
    free(text);

    if (v != 1) {
        return;         /* still pending: listed, so that a deactivation
                           of the account finds it */
    }

    /* no client was given it: the account's list does not show it */
    pki_key_name(key, sizeof(key), PKI_ACME_ST(a->conf), a->acct, "orders",
                 NULL);
    pki_result_init(&tmp);
    (void) pki_acme_cmd_int(PKI_ACME_ST(a->conf), &tmp,
                            pki_acme_cmd(PKI_ACME_ST(a->conf), &tmp, 3,
                                         "ZREM", key, oid));
}


/* finalize: 1 when the order oid still holds the mark of what it replaces
 * (or nothing holds it: claimed again), 0 when another order took it, -1
 * when Redis failed.  1 as well for an order that replaces nothing.  With
 * a token (NULL: none), the mark is locked with it
 * (pki_lua_replaced_hold): no newer order takes it over from then on;
 * finalize locks it just before the order moves to processing, and takes
 * the token back when it fails (pki_acme_replaced_unlock). */
static int
pki_acme_replaced_hold(pki_acme_t *a, const char *acct, const char *oid,
    const cJSON *order, const char *token)
{
    char         key[PKI_ACME_KEY_MAX], serial[41], num[24];
    char         val[PKI_ACME_ID_MAX + 24];
    const char  *args[5];

    if (!pki_acme_order_replaces(a, order, serial)) {
        return 1;
    }

    pki_acme_replaced_key(a, acct, serial, key, sizeof(key));
    snprintf(num, sizeof(num), "%ld", pki_acme_order_ttl(a, order));
    pki_acme_mark_value(a, oid, val, sizeof(val));

    args[0] = key;
    args[1] = val;
    args[2] = num;
    args[3] = oid;
    args[4] = token != NULL ? token : "";

    return pki_acme_cmd_int(a->conf->redis, a->res,
                            pki_acme_eval(a->conf->redis, a->res,
                                          pki_lua_replaced_hold, 1, 5,
                                          args));
}


/* A finalization that locked the mark with token and signs nothing (it
 * failed before its move, or after it with the order ready again, or
 * invalid) takes its token back (pki_lua_replaced_unlock): the last one
 * gone, a newer order may take the mark over.  Nothing else of the
 * request changes: when Redis fails here the lock stays, as it was before
 * tokens (until the order is finalized or expires). */
static void
pki_acme_replaced_unlock(pki_acme_t *a, const char *acct, const char *oid,
    const cJSON *order, const char *token)
{
    int           v;
    char          key[PKI_ACME_KEY_MAX], serial[41];
    const char   *args[2];
    pki_result_t  tmp;

    if (!pki_acme_order_replaces(a, order, serial)) {
        return;
    }

    pki_acme_replaced_key(a, acct, serial, key, sizeof(key));
    args[0] = key;
    args[1] = token;

    pki_result_init(&tmp);
    v = pki_acme_cmd_int(a->conf->redis, &tmp,
                         pki_acme_eval(a->conf->redis, &tmp,
                                       pki_lua_replaced_unlock, 1, 2, args));
    if (v < 0) {
        pki_log(a->res, "%sacme: account %s order %s: the lock of the "
                "replaced certificate's mark stays (%s)",
                a->res->log[0] ? "; " : "", acct, oid, tmp.detail);
    }
}


/* After issuance (finalize, or the recovery of one): the mark names the
 * order, as "=" and its id, for the replaced certificate's life, a year at
 * least.  The "=" says it issued: the order itself expires with its own
 * certificate, which may be long before the replaced one, and a mark
 * whose order is gone would otherwise be taken over (replaced twice). */
static void
pki_acme_replaced_mark(pki_acme_t *a, const char *acct, const char *oid,
    const cJSON *order)
{
    long   ttl;
    char   key[PKI_ACME_KEY_MAX], serial[41], num[24];
    char   own[PKI_ACME_ID_MAX + 24], val[PKI_ACME_ID_MAX + 25];

    if (!pki_acme_order_replaces(a, order, serial)) {
        return;
    }

    pki_acme_replaced_key(a, acct, serial, key, sizeof(key));

    ttl = (long) (pki_json_num(order, "replacesUntil") - (double) a->now)
          + 86400;
    if (ttl < PKI_ACME_REPLACED_TTL) {
        ttl = PKI_ACME_REPLACED_TTL;
    }
    snprintf(num, sizeof(num), "%ld", ttl);
    pki_acme_mark_value(a, oid, own, sizeof(own));
    snprintf(val, sizeof(val), "=%s", own);

    pki_acme_cmd_int(a->conf->redis, a->res,
                     pki_acme_cmd(a->conf->redis, a->res, 5, "SET", key, val,
                                  "EX", num));
}


/* An order that lost its replacement to another order before anything was
 * signed: invalid with alreadyReplaced (the problem is set too). */
static void
pki_acme_order_lost(pki_acme_t *a, const char *acct, const char *oid,
    cJSON *order, char **text)
{
    const char   *detail;

    detail = "another order replaces the certificate";

    pki_acme_order_fail(order, "alreadyReplaced", 409, detail);
    pki_acme_order_cas(a, acct, oid, text, order);

    pki_acme_problem(a, 409, "alreadyReplaced", "%s", detail);
}


/*
 * RFC 8555 7.4: the certificate has the dates an order asks for, or is not
 * issued.  NULL when a certificate from nb (0: issuance) to na (0: the end
 * of the template's validity from nb) can be issued now, else why not: it
 * would have expired by now, or it would span more than the validity.
 * RFC 5280 4.1.2.5: notBefore through notAfter, both included, is the
 * span (as pki_build counts it): na == start is one second, and the
 * validity's last second is start + validity - 1.
 */
static const char *
pki_acme_dates_why(time_t nb, time_t na, long validity, time_t now)
{
    time_t  start = nb > 0 ? nb : now;

    if ((na > 0 && (na < start || na <= now))
        || (nb > 0 && na == 0 && validity > 0
            && pki_int_validity_end(nb, validity) <= now))
    {
        return "the certificate it asks for (notBefore/notAfter) would "
               "have expired by now";
    }

    if (na > 0 && validity > 0 && na > pki_int_validity_end(start, validity))
    {
        return "its notBefore/notAfter span more than the profile's "
               "validity allows";
    }

    return NULL;
}


static void
pki_acme_new_order(pki_acme_t *a)
{
    int           v, stored, all_valid, has_nb, has_na, made;
    cJSON        *newauthz = NULL;
    long          validity;
    char          oid[PKI_ACME_ID_MAX], aid[PKI_ACME_ID_MAX];
    char          rkey[PKI_ACME_KEY_MAX];
    char          key[PKI_ACME_KEY_MAX], serial[41], num[24], *loc;
    char          mark[PKI_ACME_KEY_MAX];
    size_t        alen;
    time_t        until;
    cJSON        *ids, *order, *authzs, *item, *o;
    unsigned char aki[PKI_ACME_AKI_MAX];
    time_t        nb, na, expires;
    const char   *s, *replaces, *type, *value;
    pki_record_t  rec;
    pki_status_t  rc;

    const pki_template_t      *tmpl;
    const pki_acme_profile_t  *profile;

    if (a->payload == NULL) {
        pki_acme_problem(a, 400, "malformed", "newOrder needs a payload");
        return;
    }

    made = 0;
    rkey[0] = '\0';

    /* draft-ietf-acme-profiles: a profile the directory advertises, or
     * none (the default template); anything else is invalidProfile, and
     * what the client sent is echoed only cut and tamed */
    tmpl = a->conf->tmpl;
    profile = NULL;
    item = cJSON_GetObjectItemCaseSensitive(a->payload, "profile");
    if (item != NULL) {
        char  echo[PKI_ACME_PROFILE_LEN + 4];

        if (!cJSON_IsString(item)) {
            pki_acme_problem(a, 400, "invalidProfile", "\"profile\" must "
                             "be a string naming a profile of the "
                             "directory");
            return;
        }

        profile = pki_acme_profile_find(a->conf, item->valuestring);
        if (profile == NULL) {
            pki_acme_profile_echo(item->valuestring, echo);
            pki_acme_problem(a, 400, "invalidProfile", "profile \"%s\" is "
                             "not offered by this server (see the "
                             "directory's meta.profiles)", echo);
            return;
        }

        tmpl = profile->tmpl;
    }

    ids = pki_acme_identifiers(a, cJSON_GetObjectItemCaseSensitive(a->payload,
                                                              "identifiers"),
                               tmpl);
    if (ids == NULL) {
        return;
    }

    nb = 0;
    na = 0;
    validity = pki_template_validity(tmpl);

    /* a numeric offset is taken on purpose (flags 0): lego and Go's
     * x/crypto/acme send one such as +04:00 from a host not on UTC */
    item = cJSON_GetObjectItemCaseSensitive(a->payload, "notBefore");
    has_nb = item != NULL;
    if (item != NULL
        && (!cJSON_IsString(item)
            || !pki_parse_rfc3339(item->valuestring, 0, &nb)))
    {
        pki_acme_problem(a, 400, "malformed", "notBefore is not an RFC 3339 "
                         "date-time");
        goto done;
    }

    item = cJSON_GetObjectItemCaseSensitive(a->payload, "notAfter");
    has_na = item != NULL;
    if (item != NULL
        && (!cJSON_IsString(item)
            || !pki_parse_rfc3339(item->valuestring, 0, &na)))
    {
        pki_acme_problem(a, 400, "malformed", "notAfter is not an RFC 3339 "
                         "date-time");
        goto done;
    }

    /*
     * A notBefore within the day back but before the issuing CA
     * certificate's own start (a CA younger than a day) is moved to that
     * start, as pki_build moves the start of a certificate asked for
     * without one, and as most CAs do: no certificate starts before its
     * CA.  The order stores and shows the notBefore its certificate will
     * have, so the client sees it before it finalizes.  (RFC 5280 path
     * validation does not nest validity periods, stricter verifiers do;
     * a refusal instead made the day back unusable during a CA's first
     * day.)
     */
    if (has_nb && nb >= a->now - PKI_ACME_NB_BACK) {
        time_t  ca_nb = pki_int_asn1_time(
                            X509_get0_notBefore(pki_ca_cert(a->conf->ca)));

        if (ca_nb != (time_t) -1 && nb < ca_nb) {
            nb = ca_nb;
        }
    }

    /*
     * RFC 8555 7.4: the certificate is issued with the dates asked for or
     * not at all (but for a notBefore before its CA's start, moved
     * above).  It starts at notBefore (up to a day back, up to 30
     * days ahead), else at issuance; it ends at notAfter, not before its
     * start and after now, else when the profile's validity from its
     * start ends (notAfter included), which must also be after now (a
     * certificate expired when issued is none).  A date of 0 (1970) is a
     * date, refused as any other.
     */
    if ((has_nb && (nb < a->now - PKI_ACME_NB_BACK
                    || nb > a->now + PKI_ACME_NB_AHEAD))
        || (has_na && na <= a->now)
        || pki_acme_dates_why(has_nb ? nb : 0, has_na ? na : 0, validity,
                              a->now) != NULL)
    {
        char  span[64];

        pki_acme_span(validity, span, sizeof(span));
        pki_acme_problem(a, 400, "malformed", "notBefore/notAfter outside "
                         "what the profile allows (at most %s, starting "
                         "from a day ago at the earliest, ending after "
                         "now)", span);
        goto done;
    }

    if (has_na && !tmpl->beyond_ca_expiry) {
        /* the end of what the CA signs: its certificate's, or an earlier
         * one's above it in its chain (pki_ca_end), as finalize judges */
        time_t  ca_na = pki_ca_end(a->conf->ca);

        if (ca_na != (time_t) -1 && na > ca_na) {
            pki_acme_problem(a, 400, "malformed", "notAfter is after the "
                             "end of the issuing CA certificate or its "
                             "chain");
            goto done;
        }
    }

    replaces = NULL;
    until = 0;
    item = cJSON_GetObjectItemCaseSensitive(a->payload, "replaces");
    if (item != NULL) {
        if (!cJSON_IsString(item)
            || !pki_acme_parse_cert_id(item->valuestring, serial, aki,
                                       &alen))
        {
            pki_acme_problem(a, 400, "malformed", "\"replaces\" is not a "
                             "certificate identifier of this CA");
            goto done;
        }

        rc = pki_record_get(a->conf->redis, pki_ca_name(a->conf->ca), serial,
                            &rec, a->res);
        if (rc != PKI_OK) {
            if (rc == PKI_NOT_FOUND) {
                pki_acme_problem(a, 400, "malformed", "\"replaces\" names an "
                                 "unknown certificate");
            } else {
                pki_acme_fail(a, rc, "newOrder");
            }
            goto done;
        }

        /* a pending record (its issuance unfinished) or a withdrawn one
         * (revoked because no answer carried it) names no certificate a
         * client holds: unknown, as renewalInfo answers it */
        if (rec.status == PKI_CERT_PENDING || rec.withdrawn
            || !pki_acme_cert_id_ours(a->conf, &rec, aki, alen))
        {
            pki_record_clear(&rec);
            pki_acme_problem(a, 400, "malformed", "\"replaces\" names an "
                             "unknown certificate");
            goto done;
        }

        snprintf(key, sizeof(key), "acme:%s", a->acct);
        if (rec.requester == NULL || strcmp(rec.requester, key) != 0) {
            pki_record_clear(&rec);
            pki_acme_problem(a, 403, "unauthorized", "\"replaces\" names a "
                             "certificate of another account");
            goto done;
        }

        /* RFC 9773 section 5: at least one identifier in common */
        if (!pki_acme_ids_shared(ids, rec.sans)) {
            pki_record_clear(&rec);
            pki_acme_problem(a, 400, "malformed", "\"replaces\" names a "
                             "certificate that shares no identifier with "
                             "the order");
            goto done;
        }

        until = rec.not_after;
        pki_record_clear(&rec);

        /* a mark of the certID text, as kept before the serial was */
        pki_key_name(key, sizeof(key), a->conf->redis, a->acct, "replaced",
                     item->valuestring);
        stored = pki_acme_cmd_int(a->conf->redis, a->res,
                                  pki_acme_cmd(a->conf->redis, a->res, 2,
                                               "EXISTS", key));
        if (stored < 0) {
            pki_acme_fail(a, PKI_UNAVAILABLE, "newOrder");
            goto done;
        }
        if (stored > 0) {
            pki_acme_problem(a, 409, "alreadyReplaced", "the certificate "
                             "was already replaced");
            goto done;
        }

        /* refused here, before the rate limit counts the order; claimed
         * below, just before the order is stored */
        pki_acme_replaced_key(a, a->acct, serial, mark, sizeof(mark));
        if (pki_acme_replaced_claim(a, mark, NULL, 0) != 1) {
            goto done;
        }

        replaces = item->valuestring;
    }

    if (a->conf->orders_per_hour > 0) {
        long long   count;
        redisReply *reply;

        snprintf(num, sizeof(num), "%lld", (long long) (a->now / 3600));
        pki_key_name(key, sizeof(key), PKI_ACME_ST(a->conf), a->acct, "rate", num);

        /* the count and its expiry in one step: a failure in between
         * would leave a key that never goes */
        {
            const char  *args[1] = { key };

            reply = pki_acme_eval(PKI_ACME_ST(a->conf), a->res,
                                  pki_lua_count_hour, 1, 1, args);
        }
        if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
            if (reply != NULL) {
                freeReplyObject(reply);
            }
            pki_acme_fail(a, PKI_UNAVAILABLE, "newOrder");
            goto done;
        }
        count = reply->integer;
        freeReplyObject(reply);
        /* given back below unless an order is made: a refusal or a
         * failure from here on costs the account nothing */
        memcpy(rkey, key, sizeof(rkey));

        if (count > a->conf->orders_per_hour) {
            pki_acme_problem(a, 429, "rateLimited", "at most %ld new orders "
                             "per account and hour", a->conf->orders_per_hour);
            a->resp->retry_after = (int) (3600 - a->now % 3600);
            goto done;
        }
    }

    expires = a->now + (a->conf->order_ttl > 0 ? a->conf->order_ttl : 86400);

    authzs = cJSON_CreateArray();
    if (authzs == NULL) {
        pki_acme_problem(a, 500, "serverInternal", "out of memory");
        goto done;
    }

    newauthz = cJSON_CreateArray();
    if (newauthz == NULL) {
        cJSON_Delete(authzs);
        pki_acme_problem(a, 500, "serverInternal", "out of memory");
        goto done;
    }
    all_valid = 1;

    cJSON_ArrayForEach(item, ids) {
        cJSON  *created;

        type = pki_json_str(item, "type");
        value = pki_json_str(item, "value");

        rc = pki_acme_authz_for(a, type, value, &expires, aid, &created);
        if (rc != PKI_OK) {
            cJSON_Delete(authzs);
            pki_acme_fail(a, rc, "newOrder");
            goto done;
        }

        if (created != NULL) {
            cJSON_AddStringToObject(created, "id", aid);
            cJSON_AddItemToArray(newauthz, created);
            all_valid = 0;
        }

        cJSON_AddItemToArray(authzs, cJSON_CreateString(aid));
    }

    if (!pki_random_id(oid, sizeof(oid), 12)) {
        cJSON_Delete(authzs);
        pki_acme_problem(a, 500, "serverInternal", "no randomness");
        goto done;
    }

    order = cJSON_CreateObject();
    if (order == NULL) {
        cJSON_Delete(authzs);
        pki_acme_problem(a, 500, "serverInternal", "out of memory");
        goto done;
    }

    cJSON_AddStringToObject(order, "status", "pending");
    if (a->conf->realm[0] != '\0') {
        cJSON_AddStringToObject(order, "realm", a->conf->realm);
    }
    cJSON_AddNumberToObject(order, "expires", (double) expires);
    cJSON_AddNumberToObject(order, "keep", (double) expires + 86400);
    cJSON_AddItemToObject(order, "identifiers", ids);
    ids = NULL;
    cJSON_AddItemToObject(order, "authzs", authzs);
    if (profile != NULL) {
        cJSON_AddStringToObject(order, "profile", profile->name);
    }
    /* the template it is issued with wherever it is finalized: locations
     * of one realm share orders, not templates (pki_acme_order_bound) */
    cJSON_AddStringToObject(order, "template", pki_template_name(tmpl));
    if (nb) {
        cJSON_AddNumberToObject(order, "notBefore", (double) nb);
    }
    if (na) {
        cJSON_AddNumberToObject(order, "notAfter", (double) na);
    }
    if (replaces != NULL) {
        cJSON_AddStringToObject(order, "replaces", replaces);
        cJSON_AddStringToObject(order, "replacesSerial", serial);
        cJSON_AddNumberToObject(order, "replacesUntil", (double) until);
    }
    cJSON_AddNumberToObject(order, "created", (double) a->now);

    /* the new authorizations, the order and the account's order list in
     * one step */
    {
        char  old[24];

        int   i;
        long  lv, longest;

        /* an order is listed while it may live: its certificate's life
         * after the order's own, from a notBefore up to
         * PKI_ACME_NB_AHEAD later; the longest of every profile, as
         * orders of all of them share the list */
        longest = validity;
        for (i = 0; a->conf->profiles != NULL
                    && a->conf->profiles[i].name != NULL; i++)
        {
            lv = pki_template_validity(a->conf->profiles[i].tmpl);
            longest = lv > longest ? lv : longest;
        }
        if (a->conf->tmpl != NULL) {
            lv = pki_template_validity(a->conf->tmpl);
            longest = lv > longest ? lv : longest;
        }
        longest = a->conf->list_keep > longest ? a->conf->list_keep
                                               : longest;

        snprintf(old, sizeof(old), "%lld", (long long) (a->now
                 - (a->conf->order_ttl > 0 ? a->conf->order_ttl : 86400)
                 - (longest > 0 ? longest : 90L * 86400)
                 - PKI_ACME_NB_AHEAD - 86400));
        snprintf(num, sizeof(num), "%lld", (long long) a->now);

        rc = pki_acme_order_create(a, oid, order, newauthz, num, old);
        if (rc != PKI_OK) {
            cJSON_Delete(order);
            if (rc != PKI_CONFLICT) {
                /* PKI_CONFLICT: refused, the problem document made */
                pki_acme_fail(a, rc, "newOrder");
            }
            goto done;
        }
    }

    /* RFC 9773: the mark is claimed once the order is stored, so a racing
     * newOrder that reads this order as the holder finds it (a holder
     * that is gone is taken over).  A refused claim leaves an invalid
     * order that no list shows and no client was given. */
    if (replaces != NULL) {
        v = pki_acme_replaced_claim(a, mark, oid,
                                    pki_acme_order_ttl(a, order));
        if (v != 1) {
            pki_acme_order_withdraw(a, oid, order, v);
            cJSON_Delete(order);
            goto done;
        }
    }

    /* new authorizations are pending, reused ones valid */
    s = all_valid ? "ready" : "pending";
    o = pki_acme_order_obj(a, a->acct, oid, order, s, NULL);
    cJSON_Delete(order);

    pki_acme_json(a, 201, o);
    cJSON_Delete(o);
    made = 1;

    loc = pki_acme_url(a, "order/%s/%s", a->acct, oid);
    a->resp->location = loc;

done:

    if (!made && rkey[0] != '\0') {
        pki_result_t  tmp;
        const char   *args[1] = { rkey };

        pki_result_init(&tmp);
        (void) pki_acme_cmd_int(PKI_ACME_ST(a->conf), &tmp,
                                pki_acme_eval(PKI_ACME_ST(a->conf), &tmp,
                                              pki_lua_uncount, 1, 1, args));
    }

    cJSON_Delete(ids);
    cJSON_Delete(newauthz);
}


static void
pki_acme_order(pki_acme_t *a, const char *acct, const char *oid)
{
    int           processing;
    char         *text;
    cJSON        *order, *o, *err;
    const char   *st;
    pki_status_t  rc;

    if (strcmp(acct, a->acct) != 0) {
        pki_acme_problem(a, 403, "unauthorized", "the order belongs to "
                         "another account");
        return;
    }

    rc = pki_acme_order_load(a, acct, oid, &order, &text);
    if (rc != PKI_OK) {
        pki_acme_fail(a, rc, "order");
        return;
    }

    rc = pki_acme_order_recover(a, acct, oid, &order, &text);
    if (rc == PKI_OK
        && pki_acme_order_relink(a, acct, oid, &order, &text) != PKI_OK)
    {
        /* the certificate store failing: the order as stored (a poll
         * does not depend on pki_redis), unless it was reread and is
         * gone */
        pki_log(a->res, "acme: order %s: its link could not be read", oid);
        if (order == NULL) {
            rc = PKI_UNAVAILABLE;
        } else {
            a->res->status = PKI_OK;
            a->res->detail[0] = '\0';
        }
    }
    free(text);
    if (rc != PKI_OK) {
        cJSON_Delete(order);
        pki_acme_fail(a, rc, "order");
        return;
    }

    st = pki_acme_order_status(a, acct, order, &err, NULL);
    if (st == NULL) {
        cJSON_Delete(order);
        pki_acme_fail(a, PKI_UNAVAILABLE, "order");
        return;
    }

    /* st may point into order: use it before the order is freed */
    processing = (strcmp(st, "processing") == 0);

    o = pki_acme_order_obj(a, acct, oid, order, st, err);
    cJSON_Delete(order);

    pki_acme_json(a, 200, o);
    cJSON_Delete(o);

    if (processing) {
        a->resp->retry_after = 1;
    }
}


/* How an order of the orders list is judged (RFC 8555 7.1.2.1: pending
 * orders SHOULD be listed, invalid ones SHOULD NOT): by its stored status
 * and expiry, else by its authorizations, whose keys it adds to keys (at
 * most room of them, *added).  0: not listed (also a corrupt one), 1:
 * listed, 2: listed unless one of the authorizations added fails. */
static int
pki_acme_order_listing(pki_acme_t *a, const char *acct,
    const redisReply *text, char (*keys)[PKI_ACME_KEY_MAX], size_t room,
    size_t *added)
{
    int          n, listed;
    cJSON       *order, *item;
    const char  *st;

    *added = 0;

    if (text->type != REDIS_REPLY_STRING) {
        return 0;                   /* gone since the list was read */
    }

    order = cJSON_ParseWithLength(text->str, text->len);
    if (pki_acme_foreign(a, order)) {
        cJSON_Delete(order);
        return 0;                   /* another location's: no URL here */
    }

    st = pki_json_str(order, "status");

    /* as pki_acme_order_status decides, without reading the
     * authorizations one at a time */
    if (st == NULL || strcmp(st, "invalid") == 0
        || strcmp(st, "valid") == 0 || strcmp(st, "processing") == 0
        || pki_json_num(order, "expires") < (double) a->now)
    {
        listed = st != NULL && (strcmp(st, "valid") == 0
                                || strcmp(st, "processing") == 0);
        cJSON_Delete(order);
        return listed;
    }

    n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(order,
                                                            "authzs"));
    if (n <= 0 || n > PKI_ACME_MAX_IDS) {
        cJSON_Delete(order);
        return 0;
    }

    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(order,
                                                              "authzs"))
    {
        if (*added == room) {
            break;
        }

        /* an id that is not one can name no key: it reads as gone */
        pki_key_name(keys[*added], sizeof(keys[0]), PKI_ACME_ST(a->conf),
                     acct, "authz", cJSON_IsString(item)
                                    && pki_id_ok(item->valuestring)
                                    ? item->valuestring : "-");
        (*added)++;
    }

    cJSON_Delete(order);

    return 2;
}


/*
 * The account's orders, newest first, PKI_ACME_ORDER_PAGE of the index
 * per page: a page shows fewer when some of its orders are invalid or
 * gone, and "next" is there while the index holds more.  Three round
 * trips whatever the page holds: the index, its orders (one MGET), and the
 * authorizations of its pending orders (one MGET), of which at most
 * PKI_ACME_LIST_AUTHZ are read and parsed, newest order first: an order
 * past them is listed as its stored status and expiry say (pending), so a
 * page of 100 orders of 100 names costs what one of 3 names each does.
 */
static void
pki_acme_orders_list(pki_acme_t *a, const char *acct, const char *page)
{
    int           verdict[PKI_ACME_ORDER_PAGE], listed;
    long          n;
    size_t        i, k, shown, nk, na;
    size_t        first[PKI_ACME_ORDER_PAGE], count[PKI_ACME_ORDER_PAGE];
    char          key[PKI_ACME_KEY_MAX], last[24], *url, *end;
    char          start[24];
    char        (*okeys)[PKI_ACME_KEY_MAX], (*akeys)[PKI_ACME_KEY_MAX];
    cJSON        *o, *arr, *authz;
    size_t        lens[PKI_ACME_LIST_AUTHZ + 1];
    const char   *argv[PKI_ACME_LIST_AUTHZ + 1], *id;
    redisReply   *reply, *orders, *authzs, *v;

    /* page 1 is acct/ID/orders, page N > 1 acct/ID/orders/N: decimal,
     * no sign, no leading zero */
    n = 1;
    if (page != NULL) {
        errno = 0;
        n = (page[0] >= '1' && page[0] <= '9') ? strtol(page, &end, 10) : 0;
        if (n < 2 || n > PKI_ACME_ORDER_PAGES || errno != 0 || *end != '\0')
        {
            pki_acme_problem(a, 404, "malformed", "no such page of orders");
            return;
        }
    }

    if (strcmp(acct, a->acct) != 0) {
        pki_acme_problem(a, 403, "unauthorized", "the orders belong to "
                         "another account");
        return;
    }

    pki_key_name(key, sizeof(key), PKI_ACME_ST(a->conf), acct, "orders", NULL);

    /* newest first; one more than a page tells whether there is a next */
    snprintf(start, sizeof(start), "%ld", (n - 1) * PKI_ACME_ORDER_PAGE);
    snprintf(last, sizeof(last), "%ld", n * PKI_ACME_ORDER_PAGE);

    reply = pki_acme_cmd(PKI_ACME_ST(a->conf), a->res, 4, "ZREVRANGE", key,
                         start, last);
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        if (reply != NULL) {
            freeReplyObject(reply);
        }
        pki_acme_fail(a, PKI_UNAVAILABLE, "orders");
        return;
    }

    shown = reply->elements < PKI_ACME_ORDER_PAGE ? reply->elements
                                                  : PKI_ACME_ORDER_PAGE;

    /* the page's orders in one MGET */
    listed = 0;
    orders = NULL;
    authzs = NULL;
    o = NULL;
    okeys = calloc(shown + 1, sizeof(*okeys));
    akeys = calloc(PKI_ACME_LIST_AUTHZ, sizeof(*akeys));
    if (okeys == NULL || akeys == NULL) {
        pki_fail(a->res, PKI_INTERNAL, "out of memory");
        free(okeys);
        goto done;
    }

    argv[0] = "MGET";
    lens[0] = 4;
    nk = 0;
    for (i = 0; i < shown; i++) {
        id = reply->element[i]->type == REDIS_REPLY_STRING
             && pki_id_ok(reply->element[i]->str)
             ? reply->element[i]->str : "-";
        pki_key_name(okeys[i], sizeof(okeys[i]), PKI_ACME_ST(a->conf), acct,
                     "order", id);
        argv[++nk] = okeys[i];
        lens[nk] = strlen(okeys[i]);
    }

    if (nk > 0) {
        orders = pki_int_redis_command(PKI_ACME_ST(a->conf), (int) nk + 1,
                                       argv, lens, a->res);
    }
    free(okeys);

    if (nk > 0 && (orders == NULL || orders->type != REDIS_REPLY_ARRAY
                   || orders->elements != nk))
    {
        goto done;
    }

    /* each order by what it stores; the authorizations of the pending
     * ones, up to PKI_ACME_LIST_AUTHZ, in one MGET */
    na = 0;
    for (i = 0; i < shown; i++) {
        first[i] = na;
        count[i] = 0;

        if (reply->element[i]->type != REDIS_REPLY_STRING
            || !pki_id_ok(reply->element[i]->str))
        {
            verdict[i] = 0;
            continue;
        }

        verdict[i] = pki_acme_order_listing(a, acct, orders->element[i],
                                            akeys + na,
                                            PKI_ACME_LIST_AUTHZ - na,
                                            &count[i]);
        na += count[i];
    }

    if (na > 0) {
        for (k = 0; k < na; k++) {
            argv[k + 1] = akeys[k];
            lens[k + 1] = strlen(akeys[k]);
        }

        authzs = pki_int_redis_command(PKI_ACME_ST(a->conf), (int) na + 1,
                                       argv, lens, a->res);

        if (authzs == NULL || authzs->type != REDIS_REPLY_ARRAY
            || authzs->elements != na)
        {
            goto done;
        }
    }

    o = cJSON_CreateObject();
    arr = cJSON_AddArrayToObject(o, "orders");

    if (reply->elements > shown && n < PKI_ACME_ORDER_PAGES) {
        url = pki_acme_url(a, "acct/%s/orders/%ld", acct, n + 1);
        if (url != NULL) {
            pki_acme_link(a->resp, url, "next");
        }
        free(url);
    }

    for (i = 0; arr != NULL && i < shown; i++) {
        if (verdict[i] == 2) {
            /* the authorizations read for it (none past the budget) */
            verdict[i] = 1;
            for (k = first[i]; verdict[i] && k < first[i] + count[i]; k++) {
                v = authzs->element[k];
                authz = v->type == REDIS_REPLY_STRING
                        ? cJSON_ParseWithLength(v->str, v->len) : NULL;
                verdict[i] = cJSON_IsObject(authz)
                             && !pki_acme_authz_fails(
                                    pki_acme_authz_status(a, authz));
                cJSON_Delete(authz);
            }
        }

        if (verdict[i] == 0) {
            continue;
        }

        url = pki_acme_url(a, "order/%s/%s", acct, reply->element[i]->str);
        if (url != NULL) {
            cJSON_AddItemToArray(arr, cJSON_CreateString(url));
        }
        free(url);
    }

    pki_acme_json(a, 200, o);
    cJSON_Delete(o);
    listed = 1;

done:

    free(akeys);
    if (authzs != NULL) {
        freeReplyObject(authzs);
    }
    if (orders != NULL) {
        freeReplyObject(orders);
    }
    freeReplyObject(reply);

    if (!listed) {
        pki_acme_fail(a, a->res->status == PKI_INTERNAL ? PKI_INTERNAL
                                                        : PKI_UNAVAILABLE,
                      "orders");
    }
}


/* ---- finalize and certificates ------------------------------------------------------------ */

/* The first subject attribute other than CN that template t copies from
 * the request (copy or required), as the template names it, or NULL.  No
 * ACME challenge validates any of them, so a template for ACME copies
 * none: nginx -t refuses one (ngx_http_acme_module), and finalize refuses
 * a CSR that has one (pki_acme_csr_subject_ok), should a template that
 * does ever get here. */
PKI_API const char *
pki_acme_template_copies(const pki_template_t *t)
{
    int  i;

    for (i = 0; i < t->nsubject; i++) {
        if ((t->subject[i].rule == PKI_RULE_COPY
             || t->subject[i].rule == PKI_RULE_REQUIRED)
            && OBJ_obj2nid(t->subject[i].obj) != NID_commonName)
        {
            return t->subject[i].name;
        }
    }

    return NULL;
}


/* 1 when the CSR's subject holds no attribute other than CN that t would
 * copy into the certificate; else 0 with why set.  Attributes t fixes
 * (the template's value replaces the request's) or refuses are t's to
 * judge (pki_request_from_csr). */
static int
pki_acme_csr_subject_ok(X509_REQ *csr, const pki_template_t *t, char *why,
    size_t size)
{
    int                 i, j, n;
    const X509_NAME    *subj;
    const ASN1_OBJECT  *obj;

    subj = X509_REQ_get_subject_name(csr);
    n = subj != NULL ? X509_NAME_entry_count(subj) : 0;

    for (i = 0; i < n; i++) {
        obj = X509_NAME_ENTRY_get_object(X509_NAME_get_entry(subj, i));
        if (OBJ_obj2nid(obj) == NID_commonName) {
            continue;
        }

        for (j = 0; j < t->nsubject; j++) {
            if (OBJ_cmp(t->subject[j].obj, obj) == 0
                && (t->subject[j].rule == PKI_RULE_COPY
                    || t->subject[j].rule == PKI_RULE_REQUIRED))
            {
                snprintf(why, size, "the CSR's subject has %.64s: an ACME "
                         "certificate names what the challenges validated, "
                         "so a subject may hold only the CN",
                         t->subject[j].name);
                return 0;
            }
        }
    }

    return 1;
}


/* 1 when the CSR names (SANs and CN) are exactly the order's identifiers;
 * *in_sans then says whether every identifier is among the SANs (RFC 8555
 * 7.4 lets a dns one be in the CN alone). */
static int
pki_acme_csr_names_ok(X509_REQ *csr, const cJSON *ids, char *why,
    size_t size, int *in_sans)
{
    int                        i, n, nids, binlen, crit, found, len, noexts;
    char                       buf[260], canon[64];
    cJSON                     *item;
    X509_NAME                 *subj;
    GENERAL_NAME              *g;
    GENERAL_NAMES             *gens;
    const char                *type, *value;
    unsigned char              bin[16];
    const unsigned char       *d;
    X509_NAME_ENTRY           *e;
    ASN1_STRING               *cn;
    STACK_OF(X509_EXTENSION)  *exts;
    int                        seen[PKI_ACME_MAX_IDS];
    int                        san[PKI_ACME_MAX_IDS];

    nids = cJSON_GetArraySize(ids);
    memset(seen, 0, sizeof(seen));
    memset(san, 0, sizeof(san));
    *in_sans = 1;

    exts = X509_REQ_get_extensions(csr);
    noexts = exts == NULL;
    crit = -1;
    gens = exts != NULL ? X509V3_get_d2i(exts, NID_subject_alt_name, &crit,
                                         NULL)
                        : NULL;
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);

    /* what the template's own reading refuses is refused here too (a CN
     * alone would otherwise be taken for the whole request) */
    if (noexts
        && (X509_REQ_get_attr_by_NID(csr, NID_ext_req, -1) >= 0
            || X509_REQ_get_attr_by_NID(csr, NID_ms_ext_req, -1) >= 0))
    {
        ERR_clear_error();
        snprintf(why, size, "malformed extensionRequest attribute in the "
                 "CSR");
        goto failed;
    }
    if (gens == NULL && crit != -1) {
        ERR_clear_error();
        snprintf(why, size, crit == -2 ? "more than one subjectAltName "
                 "extension in the CSR" : "malformed subjectAltName "
                 "extension in the CSR");
        goto failed;
    }

    n = gens != NULL ? sk_GENERAL_NAME_num(gens) : 0;

    for (i = 0; i < n; i++) {
        g = sk_GENERAL_NAME_value(gens, i);
        found = -1;

        if (g->type == GEN_DNS) {
            d = ASN1_STRING_get0_data(g->d.dNSName);
            len = ASN1_STRING_length(g->d.dNSName);
            if (len <= 0 || len >= (int) sizeof(buf)
                || memchr(d, '\0', len) != NULL)
            {
                snprintf(why, size, "bad DNS name in the CSR");
                goto failed;
            }
            memcpy(buf, d, len);
            buf[len] = '\0';
            for (int k = 0; k < len; k++) {
                buf[k] = (char) tolower((unsigned char) buf[k]);
            }

            int j = 0;
            cJSON_ArrayForEach(item, ids) {
                type = pki_json_str(item, "type");
                value = pki_json_str(item, "value");
                if (strcmp(type, "dns") == 0 && strcmp(value, buf) == 0) {
                    found = j;
                }
                j++;
            }

            if (found < 0) {
                snprintf(why, size, "the CSR names \"%.64s\", which the "
                         "order does not", buf);
                goto failed;
            }

        } else if (g->type == GEN_IPADD) {
            len = ASN1_STRING_length(g->d.iPAddress);
            d = ASN1_STRING_get0_data(g->d.iPAddress);

            int j = 0;
            cJSON_ArrayForEach(item, ids) {
                type = pki_json_str(item, "type");
                value = pki_json_str(item, "value");
                if (strcmp(type, "ip") == 0
                    && pki_acme_ip_ok(value, canon, bin, &binlen)
                    && binlen == len && memcmp(bin, d, len) == 0)
                {
                    found = j;
                }
                j++;
            }

            if (found < 0) {
                snprintf(why, size, "the CSR names an IP address the order "
                         "does not");
                goto failed;
            }

        } else {
            snprintf(why, size, "the CSR has a SAN type ACME cannot "
                     "validate");
            goto failed;
        }

        if (found < PKI_ACME_MAX_IDS) {
            seen[found] = 1;
            san[found] = 1;
        }
    }

    /* a CN must be one of the identifiers too */

    subj = X509_REQ_get_subject_name(csr);
    for (i = 0; i < X509_NAME_entry_count(subj); i++) {
        e = X509_NAME_get_entry(subj, i);
        if (OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)) != NID_commonName) {
            continue;
        }

        /* compared byte for byte, so only a type whose bytes are its
         * characters, in ASCII (a BMPString "example.com\0" is six
         * other characters), and the whole of it */
        cn = X509_NAME_ENTRY_get_data(e);
        len = ASN1_STRING_length(cn);
        d = ASN1_STRING_get0_data(cn);
        if (len <= 0 || len >= (int) sizeof(buf)
            || (ASN1_STRING_type(cn) != V_ASN1_UTF8STRING
                && ASN1_STRING_type(cn) != V_ASN1_PRINTABLESTRING
                && ASN1_STRING_type(cn) != V_ASN1_IA5STRING))
        {
            snprintf(why, size, "bad CN in the CSR (it must be an "
                     "identifier of the order, as a UTF8String, "
                     "PrintableString or IA5String)");
            goto failed;
        }
        for (int k = 0; k < len; k++) {
            if (d[k] < 0x21 || d[k] > 0x7e) {
                snprintf(why, size, "the CSR's CN is not an identifier of "
                         "the order (it holds a byte that is no printable "
                         "ASCII)");
                goto failed;
            }
            buf[k] = (char) tolower(d[k]);
        }
        buf[len] = '\0';

        found = -1;
        int j = 0;
        cJSON_ArrayForEach(item, ids) {
            value = pki_json_str(item, "value");
            type = pki_json_str(item, "type");
            if (strcmp(value, buf) == 0
                || (strcmp(type, "ip") == 0
                    && pki_acme_ip_ok(buf, canon, bin, &binlen)
                    && strcmp(canon, value) == 0))
            {
                found = j;
            }
            j++;
        }

        if (found < 0) {
            snprintf(why, size, "the CSR's CN \"%.64s\" is not an identifier "
                     "of the order", buf);
            goto failed;
        }

        if (found < PKI_ACME_MAX_IDS) {
            seen[found] = 1;
        }
    }

    for (i = 0; i < nids && i < PKI_ACME_MAX_IDS; i++) {
        if (!san[i]) {
            *in_sans = 0;
        }
        if (!seen[i]) {
            item = cJSON_GetArrayItem(ids, i);
            snprintf(why, size, "the CSR lacks the identifier \"%.64s\"",
                     pki_json_str(item, "value"));
            goto failed;
        }
    }

    GENERAL_NAMES_free(gens);
    return 1;

failed:

    GENERAL_NAMES_free(gens);
    return 0;
}


/* A copy of the CSR whose subjectAltName holds every identifier of the
 * order (its other requested extensions kept), for a CSR that names some
 * in its CN alone: the certificate names each in a SAN, where clients look
 * (RFC 9525), and the template judges them all.  NULL when out of memory.
 * The copy's signature no longer covers it; it was checked on the CSR. */
static X509_REQ *
pki_acme_csr_with_ids(X509_REQ *csr, const cJSON *ids)
{
    int                        ok, i, ip, loc, binlen;
    char                       canon[64];
    cJSON                     *item;
    X509_REQ                  *dup;
    const char                *value;
    ASN1_STRING               *s;
    GENERAL_NAME              *g;
    GENERAL_NAMES             *gens;
    unsigned char              bin[16];
    X509_EXTENSION            *e;
    STACK_OF(X509_EXTENSION)  *exts, *keep;

    dup = X509_REQ_dup(csr);
    gens = GENERAL_NAMES_new();
    keep = sk_X509_EXTENSION_new_null();
    exts = X509_REQ_get_extensions(csr);
    ok = dup != NULL && gens != NULL && keep != NULL;

    cJSON_ArrayForEach(item, ids) {
        if (!ok) {
            break;
        }
        value = pki_json_str(item, "value");
        ip = strcmp(pki_json_str(item, "type"), "ip") == 0;
        g = GENERAL_NAME_new();
        s = ip ? ASN1_OCTET_STRING_new() : ASN1_IA5STRING_new();
        ok = g != NULL && s != NULL
             && (ip ? pki_acme_ip_ok(value, canon, bin, &binlen)
                      && ASN1_STRING_set(s, bin, binlen) == 1
                    : ASN1_STRING_set(s, value, -1) == 1);
        if (ok) {
            GENERAL_NAME_set0_value(g, ip ? GEN_IPADD : GEN_DNS, s);
            s = NULL;
        }
        ASN1_STRING_free(s);
        if (ok && sk_GENERAL_NAME_push(gens, g) > 0) {
            g = NULL;
        } else {
            ok = 0;
        }
        GENERAL_NAME_free(g);
    }

    for (i = 0; ok && i < sk_X509_EXTENSION_num(exts); i++) {
        e = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name)
        {
            continue;
        }
        e = X509_EXTENSION_dup(e);
        if (e == NULL || sk_X509_EXTENSION_push(keep, e) <= 0) {
            X509_EXTENSION_free(e);
            ok = 0;
        }
    }

    if (ok) {
        e = X509V3_EXT_i2d(NID_subject_alt_name, 0, gens);
        if (e == NULL || sk_X509_EXTENSION_push(keep, e) <= 0) {
            X509_EXTENSION_free(e);
            ok = 0;
        }
    }

    while (ok && ((loc = X509_REQ_get_attr_by_NID(dup, NID_ext_req, -1)) >= 0
                  || (loc = X509_REQ_get_attr_by_NID(dup, NID_ms_ext_req,
                                                     -1)) >= 0))
    {
        X509_ATTRIBUTE_free(X509_REQ_delete_attr(dup, loc));
    }

    ok = ok && X509_REQ_add_extensions(dup, keep) == 1;

    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    sk_X509_EXTENSION_pop_free(keep, X509_EXTENSION_free);
    GENERAL_NAMES_free(gens);

    if (!ok) {
        X509_REQ_free(dup);
        ERR_clear_error();
        return NULL;
    }

    return dup;
}


/* What a memory BIO holds as a string (malloc'd), NULL if out of memory;
 * frees the BIO. */
static char *
pki_acme_bio_text(BIO *bio)
{
    char     *out;
    BUF_MEM  *mem;

    BIO_get_mem_ptr(bio, &mem);
    out = malloc(mem->length + 1);
    if (out != NULL) {
        memcpy(out, mem->data, mem->length);
        out[mem->length] = '\0';
    }

    BIO_free(bio);

    return out;
}


/* DER as PEM text (malloc'd), without parsing it, NULL if out of memory. */
static char *
pki_acme_pem_der(const unsigned char *der, size_t len)
{
    BIO  *bio;

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        return NULL;
    }

    if (PEM_write_bio(bio, PEM_STRING_X509, "", der, (long) len) <= 0) {
        BIO_free(bio);
        return NULL;
    }

    return pki_acme_bio_text(bio);
}


/* The certificate (PEM text) followed by a chain: n 0, the CA's
 * certificate and the rest of its chain up to, not including, a
 * self-signed root; n > 0, alternate chain n as its file holds it. */
static char *
pki_acme_pem_chain(const pki_acme_conf_t *conf, const char *leaf, int n)
{
    int              i;
    BIO             *bio;
    X509            *x, *cacert;
    STACK_OF(X509)  *chain;

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        return NULL;
    }

    if (BIO_puts(bio, leaf) != (int) strlen(leaf)) {
        BIO_free(bio);
        return NULL;
    }

    if (n > 0) {
        chain = pki_ca_alt_chain(conf->ca, n - 1);

        for (i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
            if (!PEM_write_bio_X509(bio, sk_X509_value(chain, i))) {
                BIO_free(bio);
                return NULL;
            }
        }

        return pki_acme_bio_text(bio);
    }

    cacert = pki_ca_cert(conf->ca);
    chain = pki_ca_chain(conf->ca);

    if (!PEM_write_bio_X509(bio, cacert)) {
        BIO_free(bio);
        return NULL;
    }

    /* the rest of the chain, without the CA itself and self-signed roots */
    for (i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
        x = sk_X509_value(chain, i);
        if (X509_cmp(x, cacert) == 0
            || X509_NAME_cmp(X509_get_subject_name(x),
                             X509_get_issuer_name(x)) == 0)
        {
            continue;
        }
        PEM_write_bio_X509(bio, x);
    }

    return pki_acme_bio_text(bio);
}


/*
 * With its entry written by the log itself (carry=off: none rode in the
 * record's commit), an issuance's record is good before its entry is
 * durable: the finalization saves its order valid only after a sync
 * (pki_acme_finalize), and anything else that hands out a certificate
 * from its record (an order completed from it, a download through its
 * link) cannot know whether that finalization's entry ever reached the
 * disk (its worker may have died, another worker may not have written
 * it yet).  It first writes an entry of its own naming the certificate
 * ("acme-recover"), durable, so that no certificate leaves without one.
 * Carried entries are durable with the record: nothing to do.
 */
static int
pki_acme_unlogged(pki_acme_t *a)
{
    return pki_int_audit_stream(a->conf->redis, pki_ca_name(a->conf->ca))
           == NULL;
}


static pki_status_t
pki_acme_rec_logged(pki_acme_t *a, const char *acct, const pki_record_t *rec)
{
    char          requester[80];
    pki_status_t  st;
    pki_result_t  ares;

    if (!pki_acme_unlogged(a)) {
        return PKI_OK;
    }

    snprintf(requester, sizeof(requester), "acme:%s", acct);
    pki_event_set_actor("acme", requester, a->req->client);

    pki_result_init(&ares);
    st = pki_int_admin_audit("acme-recover", pki_ca_name(a->conf->ca),
                             rec->serial, rec->subject, "certificate handed "
                             "out from its record", &ares);
    pki_event_set_actor(NULL, NULL, NULL);

    if (st == PKI_OK) {
        st = pki_audit_sync(NULL, &ares);
    }

    if (st != PKI_OK) {
        /* the answer hands nothing out: it does not wait for the entry,
         * which the log writes once it can */
        (void) pki_audit_take_ticket();
        pki_log(a->res, "acme: certificate %s not handed out from its "
                "record: its transaction log entry is not durable: %s %s",
                rec->serial, ares.detail, ares.log);
        return PKI_UNAVAILABLE;
    }

    return PKI_OK;
}


/* Makes *order (read as *text) valid with the certificate of rec.  0 when
 * it cannot be built. */
static int
pki_acme_order_complete(pki_acme_t *a, const char *acct, cJSON *order,
    const pki_record_t *rec)
{
    char  requester[80], *pem;

    (void) a;

    snprintf(requester, sizeof(requester), "acme:%s", acct);

    if (rec->der == NULL || rec->requester == NULL
        || strcmp(rec->requester, requester) != 0)
    {
        return 0;
    }

    pem = pki_acme_pem_der(rec->der, rec->der_len);
    if (pem == NULL) {
        return 0;
    }

    pki_json_set_str(order, "status", "valid");
    pki_json_set_str(order, "leaf", pem);
    pki_json_set_str(order, "serial", rec->serial);
    pki_json_set_num(order, "keep", (double) rec->not_after);
    free(pem);

    return 1;
}


static void
pki_acme_order_fail(cJSON *order, const char *type, int status,
    const char *detail)
{
    pki_json_set_str(order, "status", "invalid");
    pki_json_set_item(order, "error",
                      pki_acme_problem_new(type, detail, status));
}


/* A finalization that cannot go on: the order fails with the problem, is
 * saved (compare-and-set against *text), and the answer is that problem. */
static void
pki_acme_order_refuse(pki_acme_t *a, const char *acct, const char *oid,
    char **text, cJSON *order, const char *type, int status, const char *why)
{
    pki_acme_order_fail(order, type, status, why);
    (void) pki_acme_order_cas(a, acct, oid, text, order);
    pki_acme_problem(a, status, type, "%s", why);
}


/* Saves an order a read recovered or completed (compare-and-set against
 * *text): PKI_OK with *saved 1, or 0 when someone else moved it on (*order
 * and *text are then what is stored now); PKI_UNAVAILABLE when Redis
 * failed.  An order saved valid gets its replaces mark (RFC 9773). */
static pki_status_t
pki_acme_order_settle(pki_acme_t *a, const char *acct, const char *oid,
    cJSON **order, char **text, int *saved)
{
    int          v;
    const char  *st;

    *saved = 0;

    v = pki_acme_order_cas(a, acct, oid, text, *order);
    if (v < 0) {
        return PKI_UNAVAILABLE;
    }

    if (v == 0) {
        /* someone else moved it on: read what is there now */
        cJSON_Delete(*order);
        free(*text);
        return pki_acme_order_load(a, acct, oid, order, text);
    }

    *saved = 1;

    st = pki_json_str(*order, "status");
    if (st != NULL && strcmp(st, "valid") == 0) {
        pki_acme_replaced_mark(a, acct, oid, *order);
    }

    return PKI_OK;
}


/* The order's finalization started PKI_ACME_FIN_STALE s ago or more, on
 * the clock of the state store (finStarted was read from it, so hosts
 * whose clocks differ agree): 1 yes, 0 no, -1 when Redis did not say
 * (a->res filled). */
static int
pki_acme_fin_stale(pki_acme_t *a, const cJSON *order)
{
    long long  now;

    now = pki_int_redis_time_ms(PKI_ACME_ST(a->conf), a->res);
    if (now < 0) {
        return -1;
    }

    return pki_json_num(order, "finStarted") + PKI_ACME_FIN_STALE
           <= (double) (now / 1000);
}


/*
 * A "processing" order whose finalization may have died (worker killed,
 * Redis or the key failing after the serial was reserved).  The order
 * names the serial finalize reserved ("finSerial", written before anything
 * was signed).  When that certificate is recorded, the order is completed
 * from the record at once (with carry=off, once an entry of its own
 * naming the certificate is durable, pki_acme_rec_logged: processing
 * until then).  When the finalization is older than
 * PKI_ACME_FIN_STALE seconds and recorded nothing, the pending record is
 * abandoned first (a late commit of a still running signer then fails and
 * hands nothing out) and the order becomes invalid with serverInternal.
 * So an order has at most one certificate, and it is always recorded.
 * *order and *text are replaced by what is stored afterwards.
 */
static pki_status_t
pki_acme_order_recover(pki_acme_t *a, const char *acct, const char *oid,
    cJSON **order, char **text)
{
    int            v, stale, done;
    char           serial[41];
    const char    *st, *s;
    pki_record_t   rec;
    pki_status_t   rc;

    st = pki_json_str(*order, "status");
    if (st == NULL || strcmp(st, "processing") != 0 || *text == NULL) {
        return PKI_OK;
    }

    s = pki_json_str(*order, "finSerial");
    done = 0;
    stale = 0;

    if (s != NULL && pki_serial_normalize(s, serial)) {
        rc = pki_record_get(a->conf->redis, pki_ca_name(a->conf->ca), serial,
                            &rec, a->res);
        if (rc == PKI_OK) {
            /* withdrawn: revoked because the finalization could not hand
             * it out (its transaction log entry refused): never the
             * order's certificate */
            if (rec.status != PKI_CERT_PENDING && !rec.withdrawn) {
                if (pki_acme_rec_logged(a, acct, &rec) != PKI_OK) {
                    /* processing until an entry naming it is durable */
                    pki_record_clear(&rec);
                    return PKI_OK;
                }
                done = pki_acme_order_complete(a, acct, *order, &rec) ? 1
                                                                      : -1;
            }
            pki_record_clear(&rec);

        } else if (rc != PKI_NOT_FOUND) {
            return rc;
        }

        if (done == 0) {
            stale = pki_acme_fin_stale(a, *order);
            if (stale < 0) {
                return PKI_UNAVAILABLE;
            }
        }

        if (done == 0 && stale) {
            /* no late commit after this */
            rc = pki_record_abandon(a->conf->redis, pki_ca_name(a->conf->ca),
                                    serial, a->res);
            if (rc != PKI_OK) {
                return rc;
            }

            rc = pki_record_get(a->conf->redis, pki_ca_name(a->conf->ca),
                                serial, &rec, a->res);
            if (rc == PKI_OK) {
                if (rec.status != PKI_CERT_PENDING && !rec.withdrawn) {
                    if (pki_acme_rec_logged(a, acct, &rec) != PKI_OK) {
                        pki_record_clear(&rec);
                        return PKI_OK;
                    }
                    done = pki_acme_order_complete(a, acct, *order, &rec)
                           ? 1 : -1;
                }
                pki_record_clear(&rec);

            } else if (rc != PKI_NOT_FOUND) {
                return rc;
            }
        }

    } else {
        stale = pki_acme_fin_stale(a, *order);
        if (stale <= 0) {
            return stale < 0 ? PKI_UNAVAILABLE : PKI_OK;
        }
    }

    if (done == 0 && !stale) {
        return PKI_OK;                      /* still running */
    }

    if (done <= 0) {
        pki_acme_order_fail(*order, "serverInternal", 500,
                            "the finalization did not complete and "
                            "no certificate was issued; create a new order");
    }

    rc = pki_acme_order_settle(a, acct, oid, order, text, &v);
    if (rc != PKI_OK || !v) {
        return rc;
    }

    snprintf(a->res->log, sizeof(a->res->log), "acme: account %s order %s "
             "recovered from an interrupted finalization: %s", acct, oid,
             done > 0 ? "certificate recorded, order valid" : "order invalid");

    return PKI_OK;
}


/* The finalize hook: runs in pki_issue() once the serial is reserved and
 * before anything is signed; moves the order from ready to processing and
 * records the serial on it, or refuses when the order changed. */
typedef struct {
    pki_acme_t  *a;
    const char  *acct;
    const char  *oid;
    cJSON       *order;
    char        *text;          /* the stored order, updated on success */
    char        *ready_text;    /* the order as it was while ready      */
    int          moved;         /* the order is processing with serial  */
    int          lost;          /* another order replaces its cert     */
    int          unauthorized;  /* an authorization is no longer valid */
    int          expired;       /* the order expired meanwhile         */
    int          unsure;        /* the move failed or lost its answer  */
    int          locked;        /* it locked the replaces mark         */
    char         serial[41];    /* the serial reserved for it          */
    char         token[24];     /* its token in the mark's lock        */
} pki_acme_fin_t;


/* pki_acme_replaced_unlock for a finalization that locked the mark. */
static void
pki_acme_fin_unlock(pki_acme_t *a, const char *acct, const char *oid,
    const cJSON *order, const pki_acme_fin_t *f)
{
    if (f->locked) {
        pki_acme_replaced_unlock(a, acct, oid, order, f->token);
    }
}


/* The move from ready to processing: the order's compare-and-set (KEYS[1]
 * from ARGV[1], TTL ARGV[3]), made only while every authorization of the
 * order (KEYS[2..]) is still valid at ARGV[4]: the order's status was
 * derived from them at the start of the finalization, and a client may
 * deactivate one meanwhile (the CAA re-check can take seconds), and while
 * the order itself (expires ARGV[5]) has not expired.  The new text is
 * ARGV[2] followed by the store's clock in seconds (the order's
 * finStarted, its last member) and "}": the clock hosts share, read in
 * the same round trip.  { 1, seconds }: moved, 0: the order changed, 2:
 * an authorization did, 3: the order expired (nothing stored). */
static const char  pki_lua_order_move[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
    "if tonumber(ARGV[5]) < tonumber(ARGV[4]) then return 3 end "
    "for i = 2, #KEYS do "
    "  local ok, az = pcall(cjson.decode, redis.call('GET', KEYS[i]) or '') "
    "  if not ok or type(az) ~= 'table' or az.status ~= 'valid' "
    "     or (tonumber(az.expires) or 0) < tonumber(ARGV[4]) then "
    "    return 2 "
    "  end "
    "end "
    "local secs = redis.call('TIME')[1] "
    "redis.call('SET', KEYS[1], ARGV[2] .. secs .. '}', 'EX', ARGV[3]) "
    "return { 1, secs }";


/* pki_lua_order_move for the hook's order: 1, 0, 2, 3 as the script, -1
 * when Redis failed.  On 1, f->text is the stored text and f->order has
 * its finStarted. */
static int
pki_acme_order_move(pki_acme_fin_t *f, pki_result_t *res)
{
    int           n, i, v;
    char        (*keys)[PKI_ACME_KEY_MAX], *nt, *stored, ttl[24], now[24];
    char          exp[24], nk[12];
    cJSON        *item;
    size_t        lens[PKI_ACME_MAX_IDS + 9], len;
    const char   *argv[PKI_ACME_MAX_IDS + 9];
    pki_redis_t  *st;
    redisReply   *reply, *secs;

    static const char  tail[] = "\"finStarted\":0}";

    st = PKI_ACME_ST(f->a->conf);
    n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(f->order,
                                                            "authzs"));

    /* finStarted last, as 0: the script puts the store's clock in its
     * place (the text up to the 0 goes, it appends the seconds and "}") */
    cJSON_DeleteItemFromObjectCaseSensitive(f->order, "finStarted");
    cJSON_AddItemToObject(f->order, "finStarted", cJSON_CreateNumber(0));

    keys = n <= PKI_ACME_MAX_IDS ? calloc(n + 1, sizeof(*keys)) : NULL;
    nt = cJSON_PrintUnformatted(f->order);
    len = nt != NULL ? strlen(nt) : 0;
    if (keys == NULL || nt == NULL || len < sizeof(tail) - 1
        || strcmp(nt + len - (sizeof(tail) - 1), tail) != 0)
    {
        free(keys);
        free(nt);
        pki_fail(res, PKI_INTERNAL, "out of memory");
        return -1;
    }
    nt[len - 2] = '\0';            /* up to the 0 */

    pki_key_name(keys[0], sizeof(keys[0]), st, f->acct, "order", f->oid);
    i = 1;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(f->order,
                                                              "authzs"))
    {
        /* an id that is not one names no key: it reads as gone */
        pki_key_name(keys[i], sizeof(keys[i]), st, f->acct, "authz",
                     cJSON_IsString(item) && pki_id_ok(item->valuestring)
                     ? item->valuestring : "-");
        i++;
    }

    snprintf(nk, sizeof(nk), "%d", n + 1);
    snprintf(ttl, sizeof(ttl), "%ld", pki_acme_order_ttl(f->a, f->order));
    /* the time of the move: the CAA re-check may have taken seconds */
    snprintf(now, sizeof(now), "%lld", (long long) time(NULL));
    /* an order without an expiry (none is stored so) never expires */
    snprintf(exp, sizeof(exp), "%.0f",
             pki_json_num(f->order, "expires") > 0
             ? pki_json_num(f->order, "expires") : 1e15);

    argv[0] = "EVAL";
    argv[1] = pki_lua_order_move;
    argv[2] = nk;
    for (i = 0; i <= n; i++) {
        argv[3 + i] = keys[i];
    }
    argv[4 + n] = f->text;
    argv[5 + n] = nt;
    argv[6 + n] = ttl;
    argv[7 + n] = now;
    argv[8 + n] = exp;
    for (i = 0; i < n + 9; i++) {
        lens[i] = strlen(argv[i]);
    }

    reply = pki_int_redis_command(st, n + 9, argv, lens, res);
    free(keys);

    v = -1;
    stored = NULL;

    if (reply != NULL && reply->type == REDIS_REPLY_INTEGER
        && (reply->integer == 0 || reply->integer == 2
            || reply->integer == 3))
    {
        v = (int) reply->integer;

    } else if (reply != NULL && reply->type == REDIS_REPLY_ARRAY
               && reply->elements == 2
               && reply->element[0]->type == REDIS_REPLY_INTEGER
               && reply->element[0]->integer == 1)
    {
        secs = reply->element[1];

        if (secs->type == REDIS_REPLY_STRING && secs->len > 0
            && secs->len < 16
            && strspn(secs->str, "0123456789") == secs->len)
        {
            stored = pki_strfmt("%s%s}", nt, secs->str);
            if (stored == NULL) {
                /* stored all the same: unsure, looked at again */
                pki_fail(res, PKI_INTERNAL, "out of memory");
            } else {
                pki_json_set_num(f->order, "finStarted",
                                 strtod(secs->str, NULL));
                v = 1;
            }

        } else {
            pki_fail(res, PKI_UNAVAILABLE, "certificate store unavailable");
        }

    } else if (reply != NULL) {
        pki_fail(res, PKI_UNAVAILABLE, "certificate store unavailable");
    }

    if (reply != NULL) {
        freeReplyObject(reply);
    }

    free(nt);

    if (v == 1) {
        free(f->text);
        f->text = stored;
    }

    return v;
}


static pki_status_t
pki_acme_fin_reserved(void *arg, const char *serial, pki_result_t *res)
{
    int              v;
    pki_acme_fin_t  *f = arg;

    /* RFC 9773: still the order that replaces the certificate (checked
     * before the move: a lost order stays as it was).  The lock may be
     * taken even when Redis fails to say so: finalize takes it back. */
    f->locked = 1;
    v = pki_acme_replaced_hold(f->a, f->acct, f->oid, f->order, f->token);
    if (v < 0) {
        return PKI_UNAVAILABLE;
    }

    if (v == 0) {
        f->lost = 1;
        return pki_fail(res, PKI_CONFLICT, "another order replaces the "
                        "certificate");
    }

    /* finStarted, the time of the move (not of the request: the CAA
     * re-check and the CSR's checks ran in between, and a poll takes an
     * order that looks PKI_ACME_FIN_STALE s old for one whose finalizer
     * died), is the store's clock read by the move itself */
    pki_json_set_str(f->order, "status", "processing");
    pki_json_set_str(f->order, "finSerial", serial);

    /* a move that fails, or seems to, may have run all the same (its
     * answer lost, the retry on a new connection finding the order
     * moved): finalize looks once the serial is abandoned */
    snprintf(f->serial, sizeof(f->serial), "%s", serial);

    v = pki_acme_order_move(f, res);
    if (v < 0) {
        f->unsure = 1;
        return PKI_UNAVAILABLE;
    }

    if (v == 2) {
        f->unauthorized = 1;
        return pki_fail(res, PKI_CONFLICT, "an authorization of the order "
                        "is no longer valid");
    }

    if (v == 3) {
        f->expired = 1;
        return pki_fail(res, PKI_CONFLICT, "the order expired");
    }

    if (v == 0) {
        f->unsure = 1;
        return pki_fail(res, PKI_CONFLICT, "the order is being finalized");
    }

    f->moved = 1;

    return PKI_OK;
}


/*
 * After a move whose answer was lost (or that ran on a retry): when the
 * order is processing with this finalization's serial, which pki_issue()
 * has abandoned, it goes back to what it was while ready.  1 when it did.
 * (Left processing, the order would turn invalid at the next poll after
 * PKI_ACME_FIN_STALE, with nothing issued.)
 */
static int
pki_acme_fin_unmove(pki_acme_t *a, const char *acct, const char *oid,
    pki_acme_fin_t *f)
{
    int           v;
    char         *text;
    cJSON        *order, *ready;
    const char   *st, *ser;

    if (pki_acme_order_load(a, acct, oid, &order, &text) != PKI_OK) {
        return 0;
    }

    st = pki_json_str(order, "status");
    ser = pki_json_str(order, "finSerial");
    v = 0;

    if (st != NULL && strcmp(st, "processing") == 0 && ser != NULL
        && strcmp(ser, f->serial) == 0)
    {
        ready = cJSON_Parse(f->ready_text);
        if (ready != NULL) {
            v = pki_acme_order_cas(a, acct, oid, &text, ready) == 1;
            cJSON_Delete(ready);
        }
    }

    cJSON_Delete(order);
    free(text);

    return v;
}


/* The key of an order's link in the certificate store
 * (pki_int_link_t): only with a state store of its own (acme_redis),
 * which may lose its last second of writes; 0 without one (or for an id
 * that names no order).  It carries the CA's hash tag: the reservation's
 * script writes it with the CA's record keys, in one slot of a Redis
 * Cluster.  (Versions before kept it under the account's tag; such a link
 * only mattered for an order finalized just before the upgrade whose state
 * store then lost its last second: that order is finalized again.) */
static int
pki_acme_link_key(pki_acme_t *a, const char *acct, const char *oid,
    char key[PKI_ACME_KEY_MAX])
{
    int  n;

    if (PKI_ACME_ST(a->conf) == a->conf->redis || !pki_id_ok(oid)) {
        return 0;
    }

    /* under the location's policy, as the order (pki_acme_foreign) */
    n = snprintf(key, PKI_ACME_KEY_MAX, "%s{ca:%s}:acmefin:%s:%s:%s",
                 pki_redis_ns(a->conf->redis), pki_ca_name(a->conf->ca),
                 acct, a->conf->realm, oid);

    return n > 0 && n < PKI_ACME_KEY_MAX;
}


/* The certificate an order's link names, as recorded (good or revoked) and
 * issued to this account: PKI_OK with *rec filled, PKI_NOT_FOUND when
 * there is none, or the store's failure. */
static pki_status_t
pki_acme_link_record(pki_acme_t *a, const char *acct, const char *key,
    pki_record_t *rec)
{
    char          serial[41], requester[80];
    pki_status_t  rc;

    rc = pki_int_link_serial(a->conf->redis, key, serial, a->res);
    if (rc == PKI_OK) {
        rc = pki_record_get(a->conf->redis, pki_ca_name(a->conf->ca), serial,
                            rec, a->res);
    }

    if (rc != PKI_OK) {
        return rc;
    }

    snprintf(requester, sizeof(requester), "acme:%s", acct);

    if (rec->status == PKI_CERT_PENDING || rec->withdrawn || rec->der == NULL
        || rec->requester == NULL || strcmp(rec->requester, requester) != 0)
    {
        pki_record_clear(rec);
        return PKI_NOT_FOUND;
    }

    /* every caller hands the certificate out */
    rc = pki_acme_rec_logged(a, acct, rec);
    if (rc != PKI_OK) {
        pki_record_clear(rec);
        return rc;
    }

    return PKI_OK;
}


/* 1 when the record's certificate holds this public key. */
static int
pki_acme_record_key_is(const pki_record_t *rec, EVP_PKEY *key)
{
    int                   eq;
    X509                 *x;
    const unsigned char  *p;

    p = rec->der;
    x = d2i_X509(NULL, &p, (long) rec->der_len);
    eq = x != NULL && key != NULL
         && EVP_PKEY_eq(X509_get0_pubkey(x), key) == 1;
    X509_free(x);

    return eq;
}


/*
 * An order that reads pending or ready in a state store of its own while
 * its link names a recorded certificate: the store lost the order's
 * completion (a crash that cost it its last second).  The order is
 * completed from the record and saved, so a client polling it sees it
 * valid.  PKI_OK (*order and *text replaced by what is stored now), or
 * the store's failure.
 */
static pki_status_t
pki_acme_order_relink(pki_acme_t *a, const char *acct, const char *oid,
    cJSON **order, char **text)
{
    int            v;
    char           lkey[PKI_ACME_KEY_MAX];
    cJSON         *done;
    const char    *st;
    pki_record_t   rec;
    pki_status_t   rc;

    st = pki_json_str(*order, "status");
    if (st == NULL || *text == NULL
        || (strcmp(st, "pending") != 0 && strcmp(st, "ready") != 0)
        || !pki_acme_link_key(a, acct, oid, lkey))
    {
        return PKI_OK;
    }

    rc = pki_acme_link_record(a, acct, lkey, &rec);
    if (rc != PKI_OK) {
        return rc == PKI_NOT_FOUND ? PKI_OK : rc;
    }

    /* completed in a copy: an order that cannot be saved is answered as
     * stored, not as it would have been */
    done = cJSON_Duplicate(*order, 1);
    v = done != NULL && pki_acme_order_complete(a, acct, done, &rec);
    pki_record_clear(&rec);
    if (!v) {
        cJSON_Delete(done);
        return PKI_INTERNAL;
    }

    rc = pki_acme_order_settle(a, acct, oid, &done, text, &v);
    if (rc != PKI_OK) {
        cJSON_Delete(done);
        return rc;
    }

    cJSON_Delete(*order);
    *order = done;

    if (!v) {
        return PKI_OK;                  /* moved on meanwhile: as stored */
    }

    pki_log(a->res, "acme: account %s order %s completed from the "
            "certificate store (its state store had lost the completion)",
            acct, oid);

    return PKI_OK;
}


/*
 * CAA is read when a name validates (pki_acme_job_run).  An order may be
 * finalized long after that (acme_order_ttl, a day by default), so with
 * CAA checks on, each dns authorization of the order validated more than
 * PKI_ACME_CAA_REUSE ago has its CAA records read again here, right before
 * issuance (the CA/Browser Forum's eight hours; Boulder does the same).
 * stale holds those authorizations as the order's status read them just
 * before (pki_acme_order_status): they are not read from Redis again.
 * Nothing here needs a fresher copy: a client may change one while the
 * lookups run, whichever copy they started from, and the move to
 * processing (pki_lua_order_move) checks every authorization again, in
 * Redis, after the lookups.  Returns 1 when issuance may go on, 0 when a
 * record set forbids it or cannot be read (the order is failed with that
 * problem and the answer set), -1 when the lookups could not run (the
 * answer set).  Runs on the pool thread, like the finalization: the DNS
 * queries never hold the event loop.  All the names of the order share
 * one validation timeout, so an order of 100 names with slow DNS holds
 * the thread no longer than one validation.
 */
static int
pki_acme_caa_reread(pki_acme_t *a, const char *acct, const char *oid,
    cJSON *order, const cJSON *stale, char **text)
{
    int                       ok;
    char                     *account_url;
    cJSON                    *authz, *ch;
    long long                 t0, left, limit;
    const char               *method, *value;
    pki_status_t              rc;
    struct timespec           ts;
    pki_acme_validate_out_t   out;
    pki_acme_validate_conf_t  vc;

    ok = 1;
    account_url = NULL;
    vc = a->conf->validate;
    limit = vc.timeout_ms ? vc.timeout_ms : PKI_ACME_VALIDATE_TIMEOUT;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t0 = (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;

    cJSON_ArrayForEach(authz, stale) {
        value = pki_json_str(authz, "value");

        /* the method that validated it, for RFC 8657 validationmethods */
        method = NULL;
        cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(authz,
                                                                "challenges"))
        {
            if (pki_json_str(ch, "status") != NULL
                && strcmp(pki_json_str(ch, "status"), "valid") == 0)
            {
                method = pki_json_str(ch, "type");
            }
        }

        if (account_url == NULL) {
            account_url = pki_acme_url(a, "acct/%s", acct);
            if (account_url == NULL) {
                pki_acme_problem(a, 500, "serverInternal", "out of memory");
                return -1;
            }
        }

        memset(&out, 0, sizeof(out));
        pki_result_init(&out.res);

        clock_gettime(CLOCK_MONOTONIC, &ts);
        left = limit
               - ((long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - t0);
        if (left <= 0) {
            rc = PKI_UNAVAILABLE;
            out.problem_type = "dns";
            snprintf(out.res.detail, sizeof(out.res.detail), "the CAA "
                     "re-check of the order's names took over %lld ms",
                     limit);
            goto refused;
        }
        vc.timeout_ms = (unsigned) left;
        rc = pki_acme_caa_check(&vc, value,
                                cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
                                    authz, "wildcard")),
                                account_url, method != NULL ? method : "",
                                &out);

        if (rc != PKI_OK && pki_acme_validate_stopping()) {
            /* cut short by a fast stop: no answer from DNS, no verdict
             * on the order */
            free(account_url);
            pki_acme_problem(a, 503, "serverInternal", "the server is "
                             "stopping; try again");
            a->resp->retry_after = 1;
            return -1;
        }

    refused:

        if (rc != PKI_OK) {
            char         why[PKI_DETAIL_LEN];
            int          status;
            const char  *type;

            type = out.problem_type != NULL ? out.problem_type : "caa";
            status = pki_acme_type_status(type);
            snprintf(why, sizeof(why), "CAA of \"%.64s%s\", read again at "
                     "finalization (validated over %d hours ago): %.100s",
                     cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(authz,
                                                                   "wildcard"))
                     ? "*." : "", value, PKI_ACME_CAA_REUSE / 3600,
                     out.res.detail);
            pki_acme_order_refuse(a, acct, oid, text, order, type, status,
                                  why);
            ok = 0;
            break;
        }
    }

    free(account_url);

    return ok;
}


/*
 * Finalize's CAA re-check holds its pool thread up to
 * acme_validation_timeout when name servers stall, so it takes one of the
 * slots the validation jobs take (pki_acme_outbound_take): however many
 * orders are finalized at once, lookups never hold more threads than that
 * budget, and enrollment, OCSP and ACME requests keep the rest.  With
 * every slot held the answer is 503 rateLimited with Retry-After (RFC 8555
 * 6.6: a request refused by a limit gets rateLimited, and Retry-After says
 * when to come back; nothing failed, so not serverInternal), and the order
 * stays ready: the client finalizes it again.
 */
static int
pki_acme_caa_recheck(pki_acme_t *a, const char *acct, const char *oid,
    cJSON *order, const cJSON *stale, char **text)
{
    int  v;

    /* only when the order's status (read just before) saw one */
    if (stale == NULL) {
        return 1;
    }

    if (!pki_acme_outbound_take()) {
        pki_acme_problem(a, 503, "rateLimited", "too many CAA lookups "
                         "under way on this server; finalize again "
                         "later");
        a->resp->retry_after = PKI_ACME_RETRY_AFTER;
        a->resp->busy = 1;
        pki_log(a->res, "acme: account %s order %s: finalize refused, "
                "every outbound lookup slot is held (acme_validation_jobs)",
                acct, oid);
        return -1;
    }

    v = pki_acme_caa_reread(a, acct, oid, order, stale, text);

    pki_acme_outbound_give();

    return v;
}


/*
 * Issuance and revocation by an account ask the durable account itself
 * (pki_redis), not the copy the request was checked against: a host whose
 * acme_redis is another Redis keeps a copy of its own, up to
 * PKI_ACME_ACCT_COPY_TTL s old, and would otherwise sign or revoke for an
 * account that was deactivated or revoked elsewhere, or with a key the
 * account replaced elsewhere (keyChange).  In the same round trip, for
 * finalize: no account has the CSR's key.  A key that is both a
 * certificate's and an account's makes a JWS signed with it ambiguous (an
 * account request or the certificate's own, revokeCert, RFC 8555 7.6) and
 * ties the account to whoever holds the certificate's key.  Every account
 * key is in the durable jwk index under its RFC 7638 thumbprint (a
 * keyChange moves it), deactivated and revoked accounts' too.
 * KEYS[1] the account, KEYS[2] the index entry of the key the request was
 * signed with, KEYS[3] that of the CSR's key; ARGV[1] the account id,
 * ARGV[2] and ARGV[3] "1": check KEYS[2], KEYS[3].  Returns "" (go on),
 * "csr" (an account has the CSR's key), or { why, the account's text }:
 * why "gone" (no account), "bad" (it does not parse), "key" (KEYS[2] is
 * no longer the account's key) or the account's status.
 */
static const char  pki_lua_acct_current[] =
    "local t = redis.call('GET', KEYS[1]) "
    "if not t then return { 'gone', '' } end "
    "local ok, o = pcall(cjson.decode, t) "
    "if not ok or type(o) ~= 'table' then return { 'bad', '' } end "
    "if o.status ~= 'valid' then return { tostring(o.status), t } end "
    "if ARGV[2] == '1' and redis.call('GET', KEYS[2]) ~= ARGV[1] then "
    "  return { 'key', t } "
    "end "
    "if ARGV[3] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then "
    "  return 'csr' "
    "end "
    "return ''";


/* what: "finalize" or "revokeCert"; csr_thumb: the CSR's key (finalize;
 * "" when it has no JWK form, so no account has it), else NULL.  1: go
 * on; 0: refused (the problem is set; a copy found stale is replaced by
 * the durable account in every state store); -1: Redis failed (res
 * filled). */
static int
pki_acme_account_current(pki_acme_t *a, const char *what,
    const char *csr_thumb)
{
    int           v;
    char          akey[PKI_ACME_KEY_MAX], skey[PKI_ACME_KEY_MAX];
    char          ckey[PKI_ACME_KEY_MAX];
    const char   *own, *args[6], *why, *text;
    redisReply   *reply, **e;

    own = pki_json_str(a->account, "thumb");

    pki_key_name(akey, sizeof(akey), a->conf->redis, a->acct, "acct", NULL);
    pki_key_name(skey, sizeof(skey), a->conf->redis, NULL, "jwk",
                 own != NULL ? own : "");
    pki_key_name(ckey, sizeof(ckey), a->conf->redis, NULL, "jwk",
                 csr_thumb != NULL ? csr_thumb : "");

    args[0] = akey;
    args[1] = skey;
    args[2] = ckey;
    args[3] = a->acct;
    args[4] = own != NULL ? "1" : "0";
    args[5] = csr_thumb != NULL && csr_thumb[0] != '\0' ? "1" : "0";

    reply = pki_acme_eval(a->conf->redis, a->res, pki_lua_acct_current, 3,
                          6, args);
    if (reply == NULL) {
        return -1;
    }

    if (reply->type == REDIS_REPLY_STRING && reply->len == 0) {
        v = 1;

    } else if (reply->type == REDIS_REPLY_STRING
               && strcmp(reply->str, "csr") == 0)
    {
        pki_log(a->res, "acme: finalize refused: the CSR's key is the key "
                "of an ACME account (thumbprint %s)", csr_thumb);
        pki_acme_problem(a, 400, "badCSR", "the CSR's key is an ACME "
                         "account key");
        v = 0;

    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
               && reply->element[0]->type == REDIS_REPLY_STRING
               && reply->element[1]->type == REDIS_REPLY_STRING)
    {
        e = reply->element;
        why = e[0]->str;
        text = e[1]->str;

        v = 0;

        if (strcmp(why, "bad") == 0) {
            pki_log(a->res, "acme: %s: account %s in pki_redis does not "
                    "parse", what, a->acct);
            pki_acme_problem(a, 500, "serverInternal", "the account "
                             "cannot be read");
            goto done;
        }

        pki_log(a->res, "acme: %s refused: account %s %s in pki_redis, "
                "this request was checked against an older copy",
                what, a->acct,
                strcmp(why, "gone") == 0 ? "is gone"
                : strcmp(why, "key") == 0 ? "has another key (keyChange)"
                : pki_acme_not_valid(why));

        /* the copies follow the durable account, the next request sees
         * it (a copy no longer "valid" stands, see pki_lua_acct_copy) */
        pki_acme_hint_put(a->acct, NULL);
        pki_acme_copy_failed(a, pki_acme_account_copy(a, a->acct,
                                                      text[0] != '\0'
                                                      ? text : NULL));

        if (strcmp(why, "gone") == 0) {
            pki_acme_problem(a, 400, "accountDoesNotExist", "no such "
                             "account");
        } else if (strcmp(why, "key") == 0) {
            pki_acme_problem(a, 401, "unauthorized", "the request is "
                             "signed with a key the account no longer has "
                             "(keyChange)");
        } else {
            pki_acme_problem(a, 401, "unauthorized", "the account %s",
                             pki_acme_not_valid(why));
        }

    } else {
        pki_fail(a->res, PKI_UNAVAILABLE, "certificate store unavailable");
        pki_log(a->res, "redis: unexpected reply type %d to the account "
                "check", reply->type);
        v = -1;
    }

done:

    freeReplyObject(reply);
    return v;
}


static void
pki_acme_finalize(pki_acme_t *a, const char *acct, const char *oid)
{
    int              v, in_sans;
    char             why[PKI_DETAIL_LEN], requester[80];
    char             serial[41], thumb[PKI_JWK_THUMB_LEN];
    cJSON           *order, *o, *ids, *err, *stale = NULL;
    X509            *cert = NULL;
    size_t           derlen;
    X509_REQ        *csr = NULL;
    const char      *st, *b64, *detail, *own;
    pki_record_t     rec;
    pki_request_t    req;
    unsigned char   *der = NULL;
    pki_status_t     rc;
    pki_acme_fin_t   fin;
    pki_template_t  *tmpl;
    pki_issue_ctx_t  ictx;
    pki_int_link_t   link;
    char             lkey[PKI_ACME_KEY_MAX], token[24];
    int              otherkey = 0;

    memset(&req, 0, sizeof(req));
    memset(&fin, 0, sizeof(fin));
    memset(&link, 0, sizeof(link));

    if (strcmp(acct, a->acct) != 0) {
        pki_acme_problem(a, 403, "unauthorized", "the order belongs to "
                         "another account");
        return;
    }

    rc = pki_acme_order_load(a, acct, oid, &order, &fin.text);
    if (rc != PKI_OK) {
        pki_acme_fail(a, rc, "order");
        return;
    }

    rc = pki_acme_order_recover(a, acct, oid, &order, &fin.text);
    if (rc != PKI_OK) {
        pki_acme_fail(a, rc, "finalize");
        goto done;
    }

    /* before anything may change the order: it stays as it is */
    if (!pki_acme_order_bound(a, oid, order)) {
        goto done;
    }

    /* the authorizations due a CAA re-check kept: read once */
    st = pki_acme_order_status(a, acct, order, &err, &stale);
    if (st == NULL) {
        pki_acme_fail(a, PKI_UNAVAILABLE, "finalize");
        goto done;
    }

    if (strcmp(st, "ready") != 0) {
        /* an order that failed says why here too */
        detail = pki_json_str(err != NULL ? err
                              : cJSON_GetObjectItemCaseSensitive(order,
                                                                 "error"),
                              "detail");
        pki_acme_problem(a, 403, "orderNotReady", "the order is %s, not "
                         "ready%s%.180s", st, detail != NULL ? ": " : "",
                         detail != NULL ? detail : "");
        cJSON_Delete(err);
        if (strcmp(st, "processing") == 0) {
            a->resp->retry_after = 1;
        }
        goto done;
    }

    /*
     * The order's profile was removed from the configuration since the
     * order was made: the order fails, nothing is issued.  403
     * "unauthorized", as Let's Encrypt answers a profile an account may
     * not use: the server no longer issues this kind of certificate, so
     * the client must not retry this order; a new order with a profile
     * of the directory (or none) goes through.  Not "badCSR" (a client
     * would make a new CSR for the same dead order), not
     * "serverInternal" (nothing failed, and a client would retry).
     */
    tmpl = pki_acme_order_tmpl(a->conf, order);
    if (tmpl == NULL) {
        char  echo[PKI_ACME_PROFILE_LEN + 4];

        pki_acme_profile_echo(pki_json_str(order, "profile"), echo);
        snprintf(why, sizeof(why), "profile \"%s\" of the order is no "
                 "longer offered by this server; make a new order", echo);
        pki_acme_order_refuse(a, acct, oid, &fin.text, order,
                              "unauthorized", 403, why);
        goto done;
    }

    /* RFC 8555 7.4: the dates the order asked for, or no certificate.
     * They may no longer make one: the certificate would have expired by
     * now, or the profile's validity (shortened by a reload) no longer
     * spans them.  The order fails, nothing is issued. */
    {
        const char  *dwhy;

        dwhy = pki_acme_dates_why((time_t) pki_json_num(order, "notBefore"),
                                  (time_t) pki_json_num(order, "notAfter"),
                                  pki_template_validity(tmpl), a->now);

        /* the day back newOrder allows counts from the issuance: an
         * order finalized days after it was made backdates no further */
        if (dwhy == NULL && pki_json_num(order, "notBefore") > 0
            && pki_json_num(order, "notBefore")
               < (double) (a->now - PKI_ACME_NB_BACK))
        {
            dwhy = "its notBefore is now more than a day back";
        }

        if (dwhy != NULL) {
            snprintf(why, sizeof(why), "%s: nothing was issued; make a "
                     "new order", dwhy);
            pki_acme_order_refuse(a, acct, oid, &fin.text, order,
                                  "orderNotReady", 403, why);
            goto done;
        }
    }

    b64 = pki_json_str(a->payload, "csr");
    if (b64 == NULL
        || !pki_b64url_decode(b64, strlen(b64), &der, &derlen))
    {
        pki_acme_problem(a, 400, "malformed", "finalize needs \"csr\" in "
                         "base64url");
        goto done;
    }

    rc = pki_csr_parse(der, derlen, &csr, a->res);
    if (rc == PKI_POLICY) {
        /* a key or a signature algorithm refused: the client's own, and
         * it needs the reason to make a good one */
        pki_acme_problem(a, 400, "badCSR", "%s", a->res->detail);
        goto done;
    }

    if (rc != PKI_OK) {
        pki_acme_problem(a, 400, "badCSR", "the CSR is malformed or its "
                         "signature does not verify");
        goto done;
    }

    /* The account's own key, by its thumbprint: EVP_PKEY_eq() would
     * export the CSR's key (a legacy EC_KEY from the fast reader) to the
     * provider on every finalize.  An account stored without its
     * thumbprint, or a CSR key with none (a kind JWK cannot hold), is
     * compared the slow way. */
    if (!pki_jwk_thumbprint(X509_REQ_get0_pubkey(csr), thumb)) {
        thumb[0] = '\0';
    }
    own = pki_json_str(a->account, "thumb");
    if (own != NULL && thumb[0] != '\0' ? strcmp(own, thumb) == 0
        : EVP_PKEY_eq(X509_REQ_get0_pubkey(csr), a->key) == 1)
    {
        pki_acme_problem(a, 400, "badCSR", "the CSR's key must not be the "
                         "account key");
        goto done;
    }

    ids = cJSON_GetObjectItemCaseSensitive(order, "identifiers");
    if (!pki_acme_csr_names_ok(csr, ids, why, sizeof(why), &in_sans)
        || !pki_acme_csr_subject_ok(csr, tmpl, why, sizeof(why)))
    {
        pki_acme_problem(a, 400, "badCSR", "%s", why);
        goto done;
    }

    if (!in_sans) {
        /* a name in the CN alone: the certificate names it in a SAN */
        X509_REQ  *full = pki_acme_csr_with_ids(csr, ids);

        if (full == NULL) {
            pki_acme_problem(a, 500, "serverInternal", "out of memory");
            goto done;
        }
        X509_REQ_free(csr);
        csr = full;
    }

    rc = pki_request_from_csr(tmpl, csr, &req, a->res);
    if (rc != PKI_OK) {
        if (rc == PKI_POLICY || rc == PKI_MALFORMED) {
            pki_acme_problem(a, 400, "badCSR", "%s", a->res->detail);
        } else {
            pki_acme_fail(a, rc, "finalize");
        }
        goto done;
    }

    /* Only a request whose CSR passed the checks above acts on the
     * order: a malformed one leaves it as it was (no CAA lookup, no
     * replaces mark, not failed for CAA) */
    v = pki_acme_caa_recheck(a, acct, oid, order, stale, &fin.text);
    if (v != 1) {
        goto done;
    }

    /* RFC 9773: an order that lost what it replaces to another order
     * fails before a serial is reserved (checked again once it is) */
    v = pki_acme_replaced_hold(a, acct, oid, order, NULL);
    if (v < 0) {
        pki_acme_fail(a, PKI_UNAVAILABLE, "finalize");
        goto done;
    }
    if (v == 0) {
        pki_acme_order_lost(a, acct, oid, order, &fin.text);
        goto done;
    }

    v = pki_acme_account_current(a, "finalize", thumb);
    if (v != 1) {
        if (v < 0) {
            pki_acme_fail(a, PKI_UNAVAILABLE, "finalize");
        }
        goto done;
    }

    req.not_before = (time_t) pki_json_num(order, "notBefore");
    req.not_after = (time_t) pki_json_num(order, "notAfter");

    /* The order moves to processing, with the serial, in pki_issue once
     * the serial is reserved and before anything is signed (one
     * finalization per order: the move is a compare-and-set). */
    fin.a = a;
    fin.acct = acct;
    fin.oid = oid;
    fin.order = order;
    fin.ready_text = strdup(fin.text);
    if (fin.ready_text == NULL) {
        pki_acme_problem(a, 500, "serverInternal", "out of memory");
        goto done;
    }

    if (!pki_random_id(fin.token, sizeof(fin.token), 12)) {
        pki_acme_problem(a, 500, "serverInternal", "no random bytes");
        goto done;
    }

    snprintf(requester, sizeof(requester), "acme:%s", acct);
    ictx.protocol = "acme";
    ictx.requester = requester;
    ictx.client = a->req->client;
    ictx.realm = a->conf->realm;
    ictx.committed = NULL;

    /* With a state store of its own, the reservation also links the
     * order to its serial in the certificate store: the order's
     * certificate is found there when the state store forgets it */
    if (pki_acme_link_key(a, acct, oid, lkey)) {
        if (!pki_random_id(token, sizeof(token), 12)) {
            pki_acme_problem(a, 500, "serverInternal", "no random bytes");
            goto done;
        }

        link.key = lkey;
        link.token = token;
        link.stale = PKI_ACME_FIN_STALE;
        pki_int_issue_link(&link);
    }

    pki_int_issue_on_reserved(pki_acme_fin_reserved, &fin);
    rc = pki_issue(a->conf->ca, tmpl, a->conf->redis, &req, &ictx,
                   &cert, a->res);

    if (rc != PKI_OK && link.found == 2) {
        /* the state store lost the order's completion (a crash that cost
         * it its last second): the order is completed from the record,
         * and nothing is signed again.  A CSR with another key than the
         * certificate's gets what a finalize of a valid order gets. */
        rc = pki_acme_link_record(a, acct, lkey, &rec);
        if (rc != PKI_OK) {
            pki_acme_fail(a, rc == PKI_NOT_FOUND ? PKI_UNAVAILABLE : rc,
                          "finalize");
            goto done;
        }

        otherkey = !pki_acme_record_key_is(&rec, X509_REQ_get0_pubkey(csr));
        v = pki_acme_order_complete(a, acct, order, &rec);
        snprintf(serial, sizeof(serial), "%s", rec.serial);
        pki_record_clear(&rec);

        if (!v) {
            pki_acme_problem(a, 500, "serverInternal", "out of memory");
            goto done;
        }

        pki_result_init(a->res);
        snprintf(a->res->log, sizeof(a->res->log), "the order's "
                 "certificate was recorded already (its state store had "
                 "lost the order's completion)%s", otherkey ? "; the CSR "
                 "has another key: refused" : "");
        goto complete;
    }

    if (rc != PKI_OK && link.found == 3) {
        /* the state store lost the order's move to processing */
        pki_acme_problem(a, 403, "orderNotReady", "the order is being "
                         "finalized");
        a->resp->retry_after = 1;
        goto done;
    }

    /*
     * A finalization that failed takes its lock of the replaces mark back
     * (another one's stays) once its order is settled: still or again
     * ready, or invalid, so that a newer order may take the mark over.
     * Not while the order may stay processing on a record whose state
     * Redis could not tell: that one may still be recovered as valid, and
     * a mark made plain again could be taken over by a claim that read
     * it before the lock.
     */
    if (rc != PKI_OK) {
        if (fin.lost) {
            /* nothing signed, the serial abandoned */
            pki_acme_fin_unlock(a, acct, oid, order, &fin);
            pki_acme_order_lost(a, acct, oid, order, &fin.text);
            goto done;
        }

        if (!fin.moved && fin.unsure
            && pki_acme_fin_unmove(a, acct, oid, &fin))
        {
            /* the move ran after all, with the serial now abandoned: the
             * order is ready again, and the client may retry */
            pki_acme_fin_unlock(a, acct, oid, order, &fin);
            pki_acme_fail(a, PKI_UNAVAILABLE, "finalize");
            goto done;
        }

        if (!fin.moved) {
            pki_acme_fin_unlock(a, acct, oid, order, &fin);

            /* nothing recorded on the order: it is still ready, or
             * invalid by an authorization */
            if (fin.unauthorized) {
                pki_acme_problem(a, 403, "orderNotReady", "an "
                                 "authorization of the order was "
                                 "deactivated or expired during its "
                                 "finalization: nothing was issued");
            } else if (fin.expired) {
                pki_acme_problem(a, 403, "orderNotReady", "the order "
                                 "expired during its finalization: "
                                 "nothing was issued");
            } else if (rc == PKI_CONFLICT) {
                pki_acme_problem(a, 403, "orderNotReady", "the order is "
                                 "being finalized");
            } else if (rc == PKI_POLICY || rc == PKI_MALFORMED) {
                pki_acme_problem(a, 400, "badCSR", "%s", a->res->detail);
            } else {
                pki_acme_fail(a, rc, "finalize");
            }
            goto done;
        }

        /* The serial is on the order.  When its record is certainly not
         * committed, the order goes back to ready for a retry; when it is
         * (the transaction log refused the certificate), the order ends
         * invalid; when Redis cannot tell, the order stays processing and
         * a later read recovers it. */
        {
            pki_result_t  tmp;
            pki_status_t  grc;

            pki_result_init(&tmp);
            snprintf(serial, sizeof(serial), "%s",
                     pki_json_str(order, "finSerial"));

            grc = pki_record_abandon(a->conf->redis, pki_ca_name(a->conf->ca),
                                     serial, &tmp);
            if (grc == PKI_OK) {
                grc = pki_record_get(a->conf->redis,
                                     pki_ca_name(a->conf->ca), serial, &rec,
                                     &tmp);
            }

            if (grc == PKI_NOT_FOUND || grc == PKI_OK) {
                pki_acme_fin_unlock(a, acct, oid, order, &fin);
            }

            if (grc == PKI_NOT_FOUND) {
                cJSON  *ready;

                ready = cJSON_Parse(fin.ready_text);
                if (ready != NULL) {
                    pki_acme_order_cas(a, acct, oid, &fin.text, ready);
                    cJSON_Delete(ready);
                }

            } else if (grc == PKI_OK) {
                pki_record_clear(&rec);
                pki_acme_order_fail(order, "serverInternal", 500,
                                    "the certificate could not be "
                                    "released");
                pki_acme_order_cas(a, acct, oid, &fin.text, order);
            }
        }

        if (rc == PKI_POLICY || rc == PKI_MALFORMED) {
            pki_acme_problem(a, 400, "badCSR", "%s", a->res->detail);
        } else {
            pki_acme_fail(a, rc, "finalize");
        }
        goto done;
    }

    /* With carry=off the entry is written (or queued) and not yet
     * durable: the order, which every poll and download reads, is saved
     * valid only once it is (pki_acme_rec_logged).  When the sync fails,
     * the order stays processing with its serial, and a later read
     * completes it after an entry of its own. */
    if (pki_acme_unlogged(a)) {
        pki_result_t  sres;

        pki_result_init(&sres);
        if (pki_audit_sync(NULL, &sres) != PKI_OK) {
            /* the 503 hands nothing out: it does not wait for the log
             * (whose syncer a failed sync here may leave asleep until
             * the next entry: a poll's recovery brings one) */
            (void) pki_audit_take_ticket();
            pki_log(a->res, "acme: account %s order %s left processing: "
                    "the transaction log did not sync: %s %s", acct, oid,
                    sres.detail, sres.log);
            pki_acme_fail(a, PKI_UNAVAILABLE, "finalize");
            a->resp->retry_after = 1;
            goto done;
        }
    }

    /* The order keeps the certificate (PEM), not its chain: the download
     * adds the CA's chain (orders live until the certificate's notAfter,
     * and a copy of the chain in each one cost the state store a kilobyte
     * or more per certificate for its whole life) */
    {
        int             len;
        char           *pem;
        unsigned char  *cder;

        cder = NULL;
        len = i2d_X509(cert, &cder);
        pem = len > 0 ? pki_acme_pem_der(cder, (size_t) len) : NULL;
        OPENSSL_free(cder);

        if (pem == NULL) {
            /* the certificate is recorded; the order recovers it */
            pki_acme_problem(a, 500, "serverInternal", "out of memory");
            goto done;
        }

        pki_json_set_str(order, "leaf", pem);
        free(pem);
    }

    pki_serial_to_hex(X509_get0_serialNumber(cert), serial);

    pki_json_set_str(order, "status", "valid");
    pki_json_set_str(order, "serial", serial);
    pki_json_set_num(order, "keep",
                     (double) pki_int_asn1_time(X509_get0_notAfter(cert)));

complete:

    v = pki_acme_order_cas(a, acct, oid, &fin.text, order);

    if (v != 1) {
        /* Redis failed (the order stays processing with its serial and a
         * later read completes it from the record), or a read completed
         * it already: answer with what is stored */
        cJSON_Delete(order);
        free(fin.text);
        order = NULL;
        fin.text = NULL;

        if (v < 0 || pki_acme_order_load(a, acct, oid, &order, &fin.text)
                     != PKI_OK
            || pki_acme_order_relink(a, acct, oid, &order, &fin.text)
               != PKI_OK)
        {
            pki_acme_fail(a, PKI_UNAVAILABLE, "finalize");
            a->resp->retry_after = 1;
            goto done;
        }
    }

    st = pki_json_str(order, "status");

    if (st != NULL && strcmp(st, "valid") == 0) {
        pki_acme_replaced_mark(a, acct, oid, order);
    }

    {
        /* what pki_issue() noted on the way (a commit whose answer was
         * lost) stays in the line */
        char  note[PKI_LOG_LEN / 2];

        snprintf(note, sizeof(note), "%.*s", (int) sizeof(note) - 1,
                 a->res->log);
        snprintf(a->res->log, sizeof(a->res->log), "acme: account %s order "
                 "%s issued serial %s%s%.400s", acct, oid, serial,
                 note[0] ? "; " : "", note);
    }

    if (otherkey) {
        pki_acme_problem(a, 403, "orderNotReady", "the order is valid, not "
                         "ready: it was finalized before, with a CSR of "
                         "another key; its certificate is at the order's "
                         "\"certificate\" URL");
        goto done;
    }

    o = pki_acme_order_obj(a, acct, oid, order, st != NULL ? st : "invalid",
                           NULL);
    pki_acme_json(a, 200, o);
    cJSON_Delete(o);

    a->resp->location = pki_acme_url(a, "order/%s/%s", acct, oid);

done:

    X509_free(cert);
    X509_REQ_free(csr);
    pki_request_clear(&req);
    free(der);
    free(fin.text);
    free(fin.ready_text);
    cJSON_Delete(stale);
    cJSON_Delete(order);
}


/* The n of "cert/<acct>/<id>/<n>": 1 to the CA's count of alternate
 * chains, in decimal without a leading zero; 0 for anything else. */
static int
pki_acme_alt_index(const pki_acme_conf_t *conf, const char *s)
{
    int  count;

    count = pki_ca_alt_chain_count(conf->ca);

    /* PKI_CA_MAX_ALT_CHAINS < 10: one digit */
    if (s[0] < '1' || s[0] > '9' || s[1] != '\0' || s[0] - '0' > count) {
        return 0;
    }

    return s[0] - '0';
}


/* RFC 8555 7.4.2: Link rel="alternate" to the certificate's other chains,
 * the default URL and alternates 1..count, all but chain n itself. */
static void
pki_acme_alt_links(pki_acme_t *a, const char *acct, const char *oid, int n)
{
    int    k, count;
    char  *url;

    count = pki_ca_alt_chain_count(a->conf->ca);

    for (k = 0; k <= count; k++) {
        if (k == n) {
            continue;
        }

        url = k == 0 ? pki_acme_url(a, "cert/%s/%s", acct, oid)
                     : pki_acme_url(a, "cert/%s/%s/%d", acct, oid, k);
        if (url != NULL) {
            pki_acme_link(a->resp, url, "alternate");
            free(url);
        }
    }
}


/* The first certificate of a stored PEM chain, malloc'd; NULL if none. */
static char *
pki_acme_pem_first(const char *pem)
{
    char        *s;
    size_t       len;
    const char  *e;

    e = strstr(pem, "-----END CERTIFICATE-----");
    if (e == NULL) {
        return NULL;
    }

    len = (size_t) (e - pem) + sizeof("-----END CERTIFICATE-----") - 1;

    s = malloc(len + 2);
    if (s == NULL) {
        return NULL;
    }

    memcpy(s, pem, len);
    s[len] = '\n';
    s[len + 1] = '\0';

    return s;
}


/* cert/<acct>/<oid>, or with alt, cert/<acct>/<oid>/<alt>: the leaf and
 * the default chain or alternate chain alt (RFC 8555 7.4.2). */
static void
pki_acme_certificate(pki_acme_t *a, const char *acct, const char *oid,
    const char *alt)
{
    int            n, gone, final;
    char          *chain, *text, *first, requester[80], hex[41];
    char           lkey[PKI_ACME_KEY_MAX];
    cJSON         *order;
    const char    *pem, *st, *serial, *leaf;
    pki_record_t   rec;
    pki_status_t   rc;

    if (strcmp(acct, a->acct) != 0) {
        pki_acme_problem(a, 403, "unauthorized", "the certificate belongs "
                         "to another account");
        return;
    }

    n = 0;
    if (alt != NULL) {
        n = pki_acme_alt_index(a->conf, alt);
        if (n == 0) {
            pki_acme_problem(a, 404, "malformed", "no such alternate chain");
            return;
        }
    }

    rc = pki_acme_order_load(a, acct, oid, &order, NULL);
    if (rc != PKI_OK && rc != PKI_NOT_FOUND) {
        pki_acme_fail(a, rc, "certificate");
        return;
    }

    st = order != NULL ? pki_json_str(order, "status") : NULL;
    serial = order != NULL ? pki_json_str(order, "serial") : NULL;

    if (st == NULL || strcmp(st, "valid") != 0 || serial == NULL) {
        gone = order == NULL;
        final = st != NULL && strcmp(st, "invalid") == 0;
        cJSON_Delete(order);

        /* the state store may have lost the order's completion, or the
         * whole order, in a crash: its link in the certificate store
         * still names the certificate.  Not for an invalid order: that
         * is a verdict (a certificate finalize withheld, for one) */
        if (!final && pki_acme_link_key(a, acct, oid, lkey)) {
            rc = pki_acme_link_record(a, acct, lkey, &rec);
            if (rc == PKI_OK) {
                text = pki_acme_pem_der(rec.der, rec.der_len);
                snprintf(a->res->log, sizeof(a->res->log), "acme: account "
                         "%s order %s: certificate %s served from the "
                         "certificate store (the state store has the order "
                         "%s)", acct, oid, rec.serial, gone ? "no longer"
                                                            : "unfinished");
                pki_record_clear(&rec);
                goto record;
            }

            if (rc != PKI_NOT_FOUND) {
                pki_acme_fail(a, rc, "certificate");
                return;
            }
        }

        if (gone) {
            pki_acme_fail(a, PKI_NOT_FOUND, "certificate");
        } else {
            pki_acme_problem(a, 404, "malformed", "no certificate yet");
        }
        return;
    }

    /* an order stored by an earlier version holds the chain itself */
    pem = pki_json_str(order, "cert");
    if (pem != NULL) {
        if (n == 0) {
            chain = strdup(pem);

        } else {
            first = pki_acme_pem_first(pem);
            chain = first != NULL ? pki_acme_pem_chain(a->conf, first, n)
                                  : NULL;
            free(first);
        }

        cJSON_Delete(order);
        goto send;
    }

    /* the order's copy of the certificate, else its record */
    leaf = pki_json_str(order, "leaf");
    if (leaf != NULL) {
        chain = pki_acme_pem_chain(a->conf, leaf, n);
        cJSON_Delete(order);
        goto send;
    }

    snprintf(hex, sizeof(hex), "%s", serial);
    cJSON_Delete(order);

    rc = pki_record_get(a->conf->redis, pki_ca_name(a->conf->ca), hex, &rec,
                        a->res);

    if (rc != PKI_OK) {
        if (rc == PKI_NOT_FOUND) {
            /* a valid order names a recorded certificate: never seen
             * unless the certificate store lost it */
            pki_acme_problem(a, 500, "serverInternal", "the order's "
                             "certificate is not in the certificate store");
            snprintf(a->res->log, sizeof(a->res->log), "acme: account %s "
                     "order %s: serial %s has no record", acct, oid, hex);
        } else {
            pki_acme_fail(a, rc, "certificate");
        }
        return;
    }

    snprintf(requester, sizeof(requester), "acme:%s", acct);
    text = NULL;
    if (rec.der != NULL && rec.requester != NULL
        && strcmp(rec.requester, requester) == 0)
    {
        text = pki_acme_pem_der(rec.der, rec.der_len);
    }
    pki_record_clear(&rec);

record:

    if (text == NULL) {
        pki_acme_problem(a, 500, "serverInternal", "the order's certificate "
                         "record does not hold its certificate");
        return;
    }

    chain = pki_acme_pem_chain(a->conf, text, n);
    free(text);

send:

    if (chain == NULL) {
        pki_acme_problem(a, 500, "serverInternal", "out of memory");
        return;
    }

    a->resp->http_status = 200;
    pki_acme_body(a->resp, chain, PKI_ACME_CT_PEM);
    pki_acme_alt_links(a, acct, oid, n);
}


/* ---- revocation ------------------------------------------------------------------- */

/* 1 when the account holds a valid, unexpired authorization for one
 * identifier ("dns:NAME" or "ip:ADDR" index), 0 when not, -1 when Redis
 * failed. */
static int
pki_acme_holds_authz(pki_acme_t *a, const char *idx)
{
    int           ok;
    char          key[2][PKI_ACME_KEY_MAX], aid[PKI_ACME_ID_MAX];
    cJSON        *authz;
    size_t        i;
    redisReply   *reply, *e;
    pki_status_t  rc;

    /* this policy's entry, then one written before the index was kept
     * per policy (its authorization counts if it is this policy's) */
    pki_acme_valid_key(key[0], sizeof(key[0]), PKI_ACME_ST(a->conf), a->acct,
                       a->conf->realm, idx);
    pki_acme_valid_key(key[1], sizeof(key[1]), PKI_ACME_ST(a->conf), a->acct,
                       NULL, idx);

    reply = pki_acme_cmd(PKI_ACME_ST(a->conf), a->res, 3, "MGET", key[0],
                         key[1]);
    if (reply == NULL) {
        return -1;
    }

    ok = 0;

    for (i = 0; ok == 0 && reply->type == REDIS_REPLY_ARRAY
                && i < reply->elements; i++)
    {
        e = reply->element[i];
        if (e->type != REDIS_REPLY_STRING || !pki_id_ok(e->str)) {
            continue;
        }
        snprintf(aid, sizeof(aid), "%s", e->str);

        rc = pki_acme_authz_load(a, a->acct, aid, &authz);
        if (rc == PKI_NOT_FOUND) {
            continue;
        }
        if (rc != PKI_OK) {
            ok = -1;
            break;
        }

        ok = strcmp(pki_acme_authz_status(a, authz), "valid") == 0;
        cJSON_Delete(authz);
    }

    freeReplyObject(reply);

    return ok;
}


/* RFC 8555 7.6, the third way to revoke: the account holds valid
 * authorizations for every identifier of the certificate (its dNSName and
 * iPAddress SANs; a wildcard name is covered by an authorization of the
 * wildcard or of its base name).  1 yes, 0 no, -1 Redis failed. */
static int
pki_acme_revoke_authorized(pki_acme_t *a, X509 *cert)
{
    int                        i, n, v, len;
    char                       idx[300], name[256], canon[64];
    GENERAL_NAME              *gen;
    GENERAL_NAMES             *gens;
    const unsigned char       *d;

    gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (gens == NULL) {
        return 0;
    }

    n = 0;
    v = 1;

    for (i = 0; v == 1 && i < sk_GENERAL_NAME_num(gens); i++) {
        gen = sk_GENERAL_NAME_value(gens, i);

        if (gen->type == GEN_DNS) {
            d = ASN1_STRING_get0_data(gen->d.dNSName);
            len = ASN1_STRING_length(gen->d.dNSName);
            if (len <= 0 || len >= (int) sizeof(name)
                || memchr(d, '\0', (size_t) len) != NULL)
            {
                v = 0;
                break;
            }
            memcpy(name, d, (size_t) len);
            name[len] = '\0';
            for (char *c = name; *c; c++) {
                *c = (char) tolower((unsigned char) *c);
            }

            snprintf(idx, sizeof(idx), "dns:%s", name);
            v = pki_acme_holds_authz(a, idx);
            if (v == 0 && strncmp(name, "*.", 2) == 0) {
                snprintf(idx, sizeof(idx), "dns:%s", name + 2);
                v = pki_acme_holds_authz(a, idx);
            }
            n++;

        } else if (gen->type == GEN_IPADD) {
            d = ASN1_STRING_get0_data(gen->d.iPAddress);
            len = ASN1_STRING_length(gen->d.iPAddress);
            if ((len != 4 && len != 16)
                || inet_ntop(len == 4 ? AF_INET : AF_INET6, d, canon,
                             sizeof(canon)) == NULL)
            {
                v = 0;
                break;
            }

            snprintf(idx, sizeof(idx), "ip:%s", canon);
            v = pki_acme_holds_authz(a, idx);
            n++;

        } else {
            v = 0;                  /* an identifier ACME cannot prove */
        }
    }

    GENERAL_NAMES_free(gens);

    return n > 0 ? v : 0;
}


static void
pki_acme_revoke(pki_acme_t *a)
{
    int                   v, reason;
    char                  requester[80];
    X509                 *cert = NULL;
    cJSON                *item;
    size_t                len;
    const char           *b64;
    pki_record_t          rec;
    pki_status_t          rc;
    unsigned char        *der = NULL;
    const unsigned char  *p;

    memset(&rec, 0, sizeof(rec));

    if (a->payload == NULL) {
        pki_acme_problem(a, 400, "malformed", "revokeCert needs a payload");
        return;
    }

    reason = 0;
    item = cJSON_GetObjectItemCaseSensitive(a->payload, "reason");
    if (item != NULL) {
        if (!cJSON_IsNumber(item) || item->valuedouble != (double)
                                                          item->valueint)
        {
            pki_acme_problem(a, 400, "badRevocationReason", "the reason "
                             "must be an integer: 0, 1, 3, 4 or 5");
            return;
        }
        reason = item->valueint;
        if (reason != 0 && reason != 1 && reason != 3 && reason != 4
            && reason != 5)
        {
            pki_acme_problem(a, 400, "badRevocationReason", "reason %d is "
                             "not allowed (0, 1, 3, 4, 5)", reason);
            return;
        }
    }

    b64 = pki_json_str(a->payload, "certificate");
    if (b64 == NULL || !pki_b64url_decode(b64, strlen(b64), &der, &len)
        || len == 0 || len > 65536)
    {
        pki_acme_problem(a, 400, "malformed", "revokeCert needs "
                         "\"certificate\" in base64url");
        goto done;
    }

    p = der;
    cert = d2i_X509(NULL, &p, (long) len);
    if (cert == NULL || p != der + len) {
        ERR_clear_error();
        pki_acme_problem(a, 400, "malformed", "the certificate does not "
                         "parse");
        goto done;
    }

    rc = pki_int_cert_record(a->conf->redis, a->conf->ca, cert, &rec, a->res);
    if (rc != PKI_OK) {
        if (rc == PKI_NOT_FOUND) {
            /* the log keeps why (a record of that serial that holds
             * another certificate: a CA key signing elsewhere) */
            pki_log(a->res, "%s%s", a->res->log[0] ? "; " : "",
                    a->res->detail);
            pki_acme_problem(a, 404, "malformed", "the certificate is not "
                             "one this CA issued");
        } else {
            pki_acme_fail(a, rc, "revokeCert");
        }
        goto done;
    }

    if (a->jws.jwk != NULL) {
        /* signed with the certificate's own key */
        if (EVP_PKEY_eq(a->jws.jwk, X509_get0_pubkey(cert)) != 1) {
            pki_acme_problem(a, 403, "unauthorized", "the request is signed "
                             "neither by the certificate's key nor by its "
                             "account");
            goto done;
        }

    } else {
        snprintf(requester, sizeof(requester), "acme:%s", a->acct);
        if (rec.requester == NULL || strcmp(rec.requester, requester) != 0) {
            /* authorizations prove names under this location's policy:
             * they count only for certificates issued under it (a name
             * proven at a lab proves nothing for what production, EST or
             * SCEP issued) */
            if (rec.realm[0] == '\0'
                || strcmp(rec.realm, a->conf->realm) != 0)
            {
                pki_acme_problem(a, 403, "unauthorized", "the certificate "
                                 "belongs to another account and was not "
                                 "issued under this ACME location's "
                                 "policy: authorizations here cannot "
                                 "revoke it");
                goto done;
            }
            v = pki_acme_revoke_authorized(a, cert);
            if (v < 0) {
                pki_acme_fail(a, PKI_UNAVAILABLE, "revokeCert");
                goto done;
            }
            if (v == 0) {
                pki_acme_problem(a, 403, "unauthorized", "the certificate "
                                 "belongs to another account, and this "
                                 "account holds no valid authorization here "
                                 "for each of its identifiers");
                goto done;
            }
        }

        v = pki_acme_account_current(a, "revokeCert", NULL);
        if (v != 1) {
            if (v < 0) {
                pki_acme_fail(a, PKI_UNAVAILABLE, "revokeCert");
            }
            goto done;
        }
    }

    /* a certificate on hold (reason 6) may still be revoked for good:
     * the store keeps the time of the hold */
    if (rec.status == PKI_CERT_REVOKED && rec.reason != 6) {
        pki_acme_problem(a, 400, "alreadyRevoked", "the certificate is "
                         "already revoked");
        goto done;
    }

    /* the audit record names the account, or the certificate's key */
    if (a->jws.jwk != NULL) {
        snprintf(requester, sizeof(requester), "certificate key");
    } else {
        snprintf(requester, sizeof(requester), "acme:%s", a->acct);
    }

    pki_event_set_actor("acme", requester, a->req->client);
    /* under the CA it is stored under (one of this CA's subject and key,
     * pki_int_cert_record) */
    rc = pki_record_revoke(a->conf->redis, rec.ca, rec.serial, reason,
                           a->now, 0, NULL, a->res);
    pki_event_set_actor(NULL, NULL, NULL);
    if (rc == PKI_CONFLICT) {
        pki_acme_problem(a, 400, "alreadyRevoked", "the certificate is "
                         "already revoked");
        goto done;
    }
    if (rc != PKI_OK) {
        pki_acme_fail(a, rc, "revokeCert");
        goto done;
    }

    snprintf(a->res->log, sizeof(a->res->log), "acme: revoked serial %s "
             "reason %d%s, by %s", rec.serial, reason,
             rec.status == PKI_CERT_REVOKED ? " (was on hold)" : "",
             requester);

    a->resp->http_status = 200;
    pki_acme_body(a->resp, NULL, NULL);

done:

    pki_record_clear(&rec);
    X509_free(cert);
    free(der);
}


/* ---- renewal information (RFC 9773) ---------------------------------------------------- */

PKI_API char *
pki_acme_cert_id(X509 *cert)
{
    int                     n;
    char                   *a = NULL, *b = NULL, *out = NULL;
    unsigned char          *der = NULL;
    const ASN1_OCTET_STRING *kid;

    if (cert == NULL) {
        return NULL;
    }

    kid = X509_get0_authority_key_id(cert);
    if (kid == NULL) {
        return NULL;
    }

    n = i2d_ASN1_INTEGER(X509_get0_serialNumber(cert), &der);
    if (n < 3 || der[1] >= 0x80) {
        OPENSSL_free(der);
        return NULL;
    }

    a = pki_b64url_encode(ASN1_STRING_get0_data(kid),
                          (size_t) ASN1_STRING_length(kid));
    b = pki_b64url_encode(der + 2, (size_t) n - 2);

    if (a != NULL && b != NULL) {
        out = pki_strfmt("%s.%s", a, b);
    }

    free(a);
    free(b);
    OPENSSL_free(der);

    return out;
}


static void
pki_acme_renewal_info(pki_acme_t *a, const char *certid)
{
    int           early;
    char          serial[41];
    cJSON        *o, *w;
    long          life;
    size_t        alen;
    time_t        start, end;
    pki_record_t  rec;
    pki_status_t  rc;
    unsigned char aki[PKI_ACME_AKI_MAX];

    if (!pki_acme_parse_cert_id(certid, serial, aki, &alen)) {
        pki_acme_problem(a, 404, "malformed", "not a certificate identifier "
                         "of this CA");
        return;
    }

    rc = pki_record_get(a->conf->redis, pki_ca_name(a->conf->ca), serial,
                        &rec, a->res);
    if (rc != PKI_OK || rec.status == PKI_CERT_PENDING || rec.withdrawn
        || !pki_acme_cert_id_ours(a->conf, &rec, aki, alen))
    {
        if (rc == PKI_OK) {
            pki_record_clear(&rec);
        }
        if (rc == PKI_OK || rc == PKI_NOT_FOUND) {
            pki_acme_problem(a, 404, "malformed", "unknown certificate");
        } else {
            pki_acme_fail(a, rc, "renewalInfo");
        }
        return;
    }

    /* the window is the last third of the template's validity, less its
     * last sixth: renew at 2/3 .. 5/6 of the lifetime, as an issuance of
     * this template would last.  The template is the one the record
     * names (a profile's), the default when this location no longer
     * issues with it. */

    /* the certificate's own span counts notAfter in (RFC 5280 4.1.2.5):
     * one of a template's full validity is that validity */
    life = pki_template_validity(pki_acme_record_tmpl(a->conf, &rec));
    if (life <= 0 || life > rec.not_after - rec.not_before + 1) {
        life = (long) (rec.not_after - rec.not_before + 1);
    }

    start = rec.not_after - life / 3;
    end = rec.not_after - life / 6;
    early = 1;

    /* a due plan is a revocation, carried out by worker 0 or not */
    (void) pki_record_at(&rec, a->now);

    if (rec.status == PKI_CERT_REVOKED) {
        /* renew now: a window in the past (RFC 9773 4.2) */
        end = a->now - 1;
        start = end - 3600;

    } else if (rec.revoke_planned != 0 && rec.revoke_planned < end) {
        /* to be revoked before the window closes (pki_record_plan_revoke):
         * renewed from now, in the first half of the time left */
        start = a->now;
        end = a->now + (rec.revoke_planned - a->now) / 2;
        if (end <= start) {
            end = start + 1;
        }

    } else {
        early = 0;
    }

    if (end <= start) {
        end = start + 1;            /* RFC 9773 4.2: end after start */
    }

    pki_record_clear(&rec);

    o = cJSON_CreateObject();
    w = cJSON_CreateObject();
    if (o == NULL || w == NULL) {
        cJSON_Delete(o);
        cJSON_Delete(w);
        pki_acme_problem(a, 500, "serverInternal", "out of memory");
        return;
    }

    pki_json_time(w, "start", start);
    pki_json_time(w, "end", end);
    cJSON_AddItemToObject(o, "suggestedWindow", w);

    /* RFC 9773 4.2: the operator's page on why a window moved earlier
     * (a revocation, a mass revocation planned) */
    if (early && a->conf->ari_explanation != NULL) {
        cJSON_AddStringToObject(o, "explanationURL",
                                a->conf->ari_explanation);
    }

    pki_acme_json(a, 200, o);
    cJSON_Delete(o);

    /* RFC 9773 7: a GET so that caches can serve it; as long as a client
     * waits before it asks again */
    a->resp->retry_after = PKI_ACME_ARI_RETRY;
    a->resp->max_age = PKI_ACME_ARI_RETRY;
}


/* ---- the request ---------------------------------------------------------------------- */

static int
pki_acme_split(pki_acme_t *a)
{
    char    *p, *s;
    size_t   len;

    len = strlen(a->req->path);
    if (len >= sizeof(a->pathbuf)) {
        return 0;
    }

    memcpy(a->pathbuf, a->req->path, len + 1);

    a->nseg = 0;
    s = a->pathbuf;

    while (s != NULL) {
        if (a->nseg == 5) {
            return 0;
        }
        p = strchr(s, '/');
        if (p != NULL) {
            *p++ = '\0';
        }
        a->seg[a->nseg++] = s;
        s = p;
    }

    return 1;
}


static int
pki_acme_is(pki_acme_t *a, const char *name, int nseg)
{
    return a->nseg == nseg && strcmp(a->seg[0], name) == 0;
}


/* The directory: the location's root, or "directory" under it. */
static int
pki_acme_is_directory(pki_acme_t *a)
{
    return a->nseg == 1 && (a->seg[0][0] == '\0'
                            || strcmp(a->seg[0], "directory") == 0);
}


/* The methods the resource of the path takes ("Allow"), NULL for none. */
static const char *
pki_acme_methods(pki_acme_t *a)
{
    if (pki_acme_is_directory(a) || pki_acme_is(a, "new-nonce", 1)) {
        return "GET, HEAD, POST";       /* POST-as-GET too (RFC 8555 6.3) */
    }

    if (pki_acme_is(a, "renewal-info", 2)) {
        return "GET, HEAD";
    }

    if (pki_acme_is(a, "new-account", 1) || pki_acme_is(a, "new-order", 1)
        || pki_acme_is(a, "revoke-cert", 1) || pki_acme_is(a, "key-change", 1)
        || pki_acme_is(a, "acct", 2)
        || ((pki_acme_is(a, "acct", 3) || pki_acme_is(a, "acct", 4))
            && strcmp(a->seg[2], "orders") == 0)
        || pki_acme_is(a, "order", 3)
        || pki_acme_is(a, "authz", 3) || pki_acme_is(a, "chall", 4)
        || pki_acme_is(a, "finalize", 3) || pki_acme_is(a, "cert", 3)
        || pki_acme_is(a, "cert", 4))
    {
        return "POST";
    }

    return NULL;
}


/* The hinted path of pki_acme_authenticate() for a kid-signed request:
 * returns 0 when it did not decide (no hint, the signature does not verify
 * against the hint's key, or the account is no longer the hint: the caller
 * takes the full path, nothing spent); else 1 (nonce spent), 2 (bad nonce)
 * or -1 (Redis failed), with a->account, a->account_text and a->key set as
 * the full path sets them. */
static int
pki_acme_auth_hinted(pki_acme_t *a)
{
    int           v;
    char         *hint;
    cJSON        *acct;
    EVP_PKEY     *key;
    const char   *keytext;
    pki_result_t  tmp;

    hint = pki_acme_hint_get(a->acct);
    if (hint == NULL) {
        return 0;
    }

    pki_result_init(&tmp);
    acct = cJSON_Parse(hint);
    keytext = pki_json_str(acct, "key");
    key = keytext != NULL ? pki_int_jwk_cached(keytext, strlen(keytext),
                                               &tmp)
                          : NULL;

    if (key == NULL || pki_jws_verify(&a->jws, key, &tmp) != PKI_OK) {
        /* perhaps signed with a newer key: the full path decides */
        a->jws.problem = NULL;
        goto undecided;
    }

    v = pki_acme_redeem(a, a->jws.nonce, hint);
    if (v == -2) {
        pki_acme_hint_put(a->acct, NULL);
        goto undecided;
    }

    if (v == 0) {
        /* a bad nonce, for the account as it is now: the full answer */
        v = 2;
    }

    a->account = acct;
    a->account_text = hint;
    a->key = key;

    return v;

undecided:

    EVP_PKEY_free(key);
    cJSON_Delete(acct);
    free(hint);

    return 0;
}


/* 1 when a Content-Type header is application/jose+json: the media type
 * alone, then parameters if any (RFC 9110 8.3.1), so that
 * "application/jose+json x" or "application/jose+jsonx" is another type. */
static int
pki_acme_jose_type(const char *ct)
{
    return pki_media_type_is(ct, PKI_ACME_CT_JOSE);
}


/* The JWS checks of RFC 8555 6.2-6.5 for a POST.  Returns 1 when the
 * request may proceed (a->payload, a->key, a->acct set). */
static int
pki_acme_authenticate(pki_acme_t *a, pki_acme_keyreq_t keyreq)
{
    int           v, reloads;
    char         *url, *prefix;
    size_t        plen;
    const char   *st, *keytext;
    pki_status_t  rc;

    reloads = 0;
    if (!pki_acme_jose_type(a->req->content_type)) {
        pki_acme_problem(a, 415, "malformed", "Content-Type must be "
                         PKI_ACME_CT_JOSE);
        return 0;
    }

    if (a->req->body_len > (a->conf->max_body ? a->conf->max_body
                                              : PKI_ACME_MAX_BODY))
    {
        pki_acme_problem(a, 413, "malformed", "request body too large");
        return 0;
    }

    rc = pki_jws_parse(a->req->body, a->req->body_len, &a->jws, a->res);
    if (rc != PKI_OK) {
        pki_acme_problem(a, 400, a->jws.problem ? a->jws.problem
                                                : "malformed",
                         "%s", a->res->detail);
        return 0;
    }

    url = pki_acme_url(a, "%s", a->req->path);
    if (url == NULL || strcmp(url, a->jws.url) != 0) {
        free(url);
        pki_acme_problem(a, 401, "unauthorized", "the JWS \"url\" is not "
                         "the request URL");
        return 0;
    }
    free(url);

    if (a->jws.nonce == NULL) {
        pki_acme_problem(a, 400, "badNonce", "the JWS has no nonce");
        return 0;
    }

    /* RFC 8555 6.5.2: a nonce that is no base64url is malformed, not
     * merely unknown */
    if (!pki_b64url_text_ok(a->jws.nonce)) {
        pki_acme_problem(a, 400, "malformed", "the JWS \"nonce\" is not "
                         "base64url");
        return 0;
    }

    if (keyreq == PKI_KEY_JWK && a->jws.jwk == NULL) {
        pki_acme_problem(a, 400, "malformed", "this request must be signed "
                         "with \"jwk\"");
        return 0;
    }

    if (keyreq == PKI_KEY_KID && a->jws.kid == NULL) {
        pki_acme_problem(a, 400, "malformed", "this request must be signed "
                         "with \"kid\"");
        return 0;
    }

    if (a->jws.jwk == NULL && a->jws.kid == NULL) {
        pki_acme_problem(a, 400, "malformed", "the JWS has neither \"jwk\" "
                         "nor \"kid\"");
        return 0;
    }

    if (a->jws.kid != NULL) {
        prefix = pki_acme_url(a, "acct/");
        if (prefix == NULL) {
            pki_acme_problem(a, 500, "serverInternal", "out of memory");
            return 0;
        }

        plen = strlen(prefix);
        if (strncmp(a->jws.kid, prefix, plen) != 0
            || !pki_id_ok(a->jws.kid + plen))
        {
            /* another location's account URL, most often: say which
             * URLs this one's are */
            pki_acme_problem(a, 400, "accountDoesNotExist", "\"kid\" is not "
                             "an account URL of this location (they start "
                             "with %.180s)", prefix);
            free(prefix);
            return 0;
        }

        snprintf(a->acct, sizeof(a->acct), "%s", a->jws.kid + plen);
        free(prefix);

        /* fast path: the signature verifies against the last account
         * text seen, and the redeem script spends the nonce only if the
         * account is still that text (one round trip instead of two) */
        v = pki_acme_auth_hinted(a);
        if (v != 0) {
            v = v == 2 ? 0 : v;
            goto redeemed;
        }

reload:

        rc = pki_acme_account_load(a, a->acct, &a->account,
                                   &a->account_text);
        if (rc == PKI_NOT_FOUND) {
            pki_acme_hint_put(a->acct, NULL);
            pki_acme_problem(a, 400, "accountDoesNotExist", "no such "
                             "account");
            return 0;
        }
        if (rc != PKI_OK) {
            pki_acme_fail(a, rc, "account");
            return 0;
        }

        keytext = pki_json_str(a->account, "key");
        a->key = keytext != NULL ? pki_int_jwk_cached(keytext,
                                                      strlen(keytext),
                                                      a->res)
                                 : NULL;
        if (a->key == NULL) {
            pki_acme_problem(a, 500, "serverInternal", "the account key "
                             "cannot be read");
            return 0;
        }

    } else {
        if (!EVP_PKEY_up_ref(a->jws.jwk)) {
            pki_acme_problem(a, 500, "serverInternal", "out of memory");
            return 0;
        }
        a->key = a->jws.jwk;
    }

    rc = pki_jws_verify(&a->jws, a->key, a->res);
    if (rc != PKI_OK) {
        pki_acme_problem(a, 400, a->jws.problem ? a->jws.problem
                                                : "malformed",
                         "%s", a->res->detail);
        return 0;
    }

    /* only now, with a good signature, is the nonce spent, and only
     * while the account is still what it was checked against (a
     * keyChange or deactivation may commit in between) */

    v = pki_acme_redeem(a, a->jws.nonce, a->account_text);
    if (v == 1 && a->account_text != NULL) {
        pki_acme_hint_put(a->acct, a->account_text);
    }

    if (v == -2) {
        pki_acme_hint_put(a->acct, NULL);
        cJSON_Delete(a->account);
        free(a->account_text);
        EVP_PKEY_free(a->key);
        a->account = NULL;
        a->account_text = NULL;
        a->key = NULL;

        if (++reloads < 3) {
            goto reload;
        }

        pki_acme_problem(a, 400, "badNonce", "the account changed while "
                         "the request was checked; retry");
        return 0;
    }

redeemed:

    if (v < 0) {
        pki_acme_fail(a, PKI_UNAVAILABLE, "nonce");
        return 0;
    }
    if (v == 0) {
        pki_acme_problem(a, 400, "badNonce", "the nonce is unknown, expired "
                         "or used");
        return 0;
    }

    if (a->account != NULL) {
        st = pki_json_str(a->account, "status");
        if (st == NULL || strcmp(st, "valid") != 0) {
            pki_acme_problem(a, 401, "unauthorized", "the account %s",
                             pki_acme_not_valid(st));
            return 0;
        }

        /* accounts are the server's: one made at a location without EAB
         * is no account of a location that requires it */
        if (a->conf->eab_required
            && pki_json_str(a->account, "eab") == NULL)
        {
            pki_acme_problem(a, 403, "unauthorized", "this account has no "
                             "external account binding, which this "
                             "location requires");
            return 0;
        }

        /* who asked, for the log: a valid account of this location
         * signed it and spent a fresh nonce, so naming a kid, or
         * replaying a signed request, is not enough to be named; and
         * the account is bound to an External Account Binding key the
         * operator issued: an account anyone can make is no identity
         * (its refusals would pass the log's refusal bucket) */
        if (pki_json_str(a->account, "eab") != NULL) {
            snprintf(a->resp->requester, sizeof(a->resp->requester),
                     "acme:%s", a->acct);
        }
    }

    if (a->jws.payload_len > 0) {
        a->payload = pki_int_json_strict(a->jws.payload, a->jws.payload_len);
        if (!cJSON_IsObject(a->payload)) {
            pki_acme_problem(a, 400, "malformed", "the payload is not a JSON "
                             "object (or repeats a member name, has text "
                             "after it, a NUL or bytes that are not "
                             "UTF-8)");
            return 0;
        }
    }

    return 1;
}


/* 1 when the authenticated request is a POST-as-GET, as a resource
 * that takes no other POST (what names it) asks: RFC 8555 6.3 has its
 * payload empty, and a payload (even "{}") is refused as malformed
 * rather than read as a fetch, so that a client that meant to change the
 * resource learns that nothing was changed. */
static int
pki_acme_fetch_only(pki_acme_t *a, const char *what)
{
    if (a->payload == NULL) {
        return 1;
    }

    pki_acme_problem(a, 400, "malformed", "a POST to %s is a POST-as-GET: "
                     "its payload must be empty (RFC 8555 6.3)", what);
    return 0;
}


/* An empty answer to req, and the state of its handling. */
static void
pki_acme_begin(pki_acme_t *a, const pki_acme_conf_t *conf,
    const pki_acme_req_t *req, pki_acme_resp_t *resp)
{
    memset(resp, 0, sizeof(pki_acme_resp_t));
    pki_result_init(&resp->res);

    memset(a, 0, sizeof(pki_acme_t));
    a->conf = conf;
    a->req = req;
    a->resp = resp;
    a->res = &resp->res;
    a->now = time(NULL);
}


/* RFC 8555 7.1: every answer links the directory (none without a base). */
static void
pki_acme_index(pki_acme_t *a)
{
    char  *dir;

    if (a->req == NULL || a->req->base_url == NULL) {
        return;
    }

    dir = pki_acme_url(a, "directory");
    if (dir != NULL) {
        pki_acme_link(a->resp, dir, "index");
        free(dir);
    }
}


PKI_API void
pki_acme_refuse(const pki_acme_conf_t *conf, const pki_acme_req_t *req,
    int status, const char *type, const char *detail, int nonce,
    pki_acme_resp_t *resp)
{
    pki_acme_t  a;

    if (resp == NULL) {
        return;
    }

    pki_acme_begin(&a, conf, req, resp);

    if (status < 400 || status > 599) {
        status = 500;
    }

    pki_acme_problem(&a, status, type ? type : "malformed", "%s",
                     detail ? detail : "");

    /* a failed nonce leaves the problem as it is, without one */
    if (nonce && conf != NULL && conf->redis != NULL) {
        pki_acme_nonce(&a);
    }

    pki_acme_index(&a);
}


PKI_API int
pki_acme_signs(const pki_acme_req_t *req)
{
    int          n;
    const char  *p;

    if (req == NULL || req->method == NULL || req->path == NULL
        || strcmp(req->method, "POST") != 0
        || strncmp(req->path, "finalize/", sizeof("finalize/") - 1) != 0)
    {
        return 0;
    }

    /* three segments, as pki_acme_handle() routes a finalize */
    n = 0;

    for (p = req->path; *p != '\0'; p++) {
        if (*p == '/') {
            n++;
        }
    }

    return n == 2;
}


PKI_API void
pki_acme_handle(const pki_acme_conf_t *conf, const pki_acme_req_t *req,
    pki_acme_resp_t *resp)
{
    int          post, dir;
    pki_acme_t   a;
    const char  *m;

    if (resp == NULL) {
        return;
    }

    pki_acme_begin(&a, conf, req, resp);

    if (conf == NULL || conf->ca == NULL || conf->tmpl == NULL
        || conf->redis == NULL || req == NULL || req->base_url == NULL
        || req->path == NULL || req->method == NULL)
    {
        pki_acme_problem(&a, 500, "serverInternal", "ACME is not "
                         "configured");
        return;
    }

    m = req->method;
    post = strcmp(m, "POST") == 0;

    if (!pki_acme_split(&a)) {
        pki_acme_problem(&a, 404, "malformed", "no such resource");
        goto refused;
    }

    if (strcmp(m, "OPTIONS") == 0) {
        /* a browser's CORS preflight (RFC 8555 6.1): the methods of the
         * resource; the CORS headers are the location's add_header */
        resp->allow = pki_acme_methods(&a);
        if (resp->allow == NULL) {
            pki_acme_problem(&a, 404, "malformed", "no such resource");
        } else {
            resp->http_status = 204;
            resp->no_store = 1;
        }
        goto index;
    }

    /* unauthenticated resources */

    dir = pki_acme_is_directory(&a);

    if (dir && !post) {
        if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0) {
            pki_acme_problem(&a, 405, "malformed", "method not allowed");
            resp->allow = "GET, HEAD, POST";
            goto refused;
        }
        pki_acme_directory(&a);
        return;
    }

    if (pki_acme_is(&a, "new-nonce", 1) && !post) {
        if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0) {
            pki_acme_problem(&a, 405, "malformed", "method not allowed");
            resp->allow = "GET, HEAD, POST";
            goto refused;
        }

        pki_acme_nonce(&a);
        if (resp->nonce[0] == '\0') {
            pki_acme_problem(&a, 503, "serverInternal", "no nonce: service "
                             "unavailable");
            goto index;
        }

        resp->http_status = strcmp(m, "HEAD") == 0 ? 200 : 204;
        resp->no_store = 1;
        goto index;
    }

    if (pki_acme_is(&a, "renewal-info", 2)) {
        if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0) {
            pki_acme_problem(&a, 405, "malformed", "method not allowed");
            resp->allow = "GET, HEAD";
            goto refused;
        }
        pki_acme_renewal_info(&a, a.seg[1]);
        goto index;
    }

    if (!post) {
        if (pki_acme_methods(&a) != NULL) {
            pki_acme_problem(&a, 405, "malformed", "use POST (or "
                             "POST-as-GET)");
            resp->allow = "POST";
        } else {
            pki_acme_problem(&a, 404, "malformed", "no such resource");
        }
        goto index;
    }

    /* POST: every response carries a fresh nonce */

    if (dir || pki_acme_is(&a, "new-nonce", 1)) {
        /* POST-as-GET, which RFC 8555 6.3 has the server take here too */
        if (pki_acme_authenticate(&a, PKI_KEY_KID)) {
            if (a.payload != NULL) {
                pki_acme_problem(&a, 400, "malformed", "a POST to the "
                                 "directory or newNonce is a POST-as-GET: "
                                 "its payload must be empty");
            } else if (dir) {
                pki_acme_directory(&a);
            } else {
                resp->http_status = 200;
                resp->no_store = 1;
            }
        }

    } else if (pki_acme_is(&a, "new-account", 1)) {
        if (pki_acme_authenticate(&a, PKI_KEY_JWK)) {
            pki_acme_new_account(&a);
        }

    } else if (pki_acme_is(&a, "revoke-cert", 1)) {
        if (pki_acme_authenticate(&a, PKI_KEY_ANY)) {
            pki_acme_revoke(&a);
        }

    } else if (pki_acme_is(&a, "key-change", 1)) {
        if (pki_acme_authenticate(&a, PKI_KEY_KID)) {
            pki_acme_key_change(&a);
        }

    } else if (pki_acme_is(&a, "new-order", 1)) {
        if (pki_acme_authenticate(&a, PKI_KEY_KID)) {
            pki_acme_new_order(&a);
        }

    } else if (pki_acme_is(&a, "acct", 2)) {
        if (pki_acme_authenticate(&a, PKI_KEY_KID)) {
            pki_acme_account(&a, a.seg[1]);
        }

    } else if ((pki_acme_is(&a, "acct", 3) || pki_acme_is(&a, "acct", 4))
               && strcmp(a.seg[2], "orders") == 0)
    {
        if (pki_acme_authenticate(&a, PKI_KEY_KID)
            && pki_acme_fetch_only(&a, "the orders list"))
        {
            pki_acme_orders_list(&a, a.seg[1], a.nseg == 4 ? a.seg[3] : NULL);
        }

    } else if (pki_acme_is(&a, "order", 3)) {
        if (pki_acme_authenticate(&a, PKI_KEY_KID)
            && pki_acme_fetch_only(&a, "an order"))
        {
            pki_acme_order(&a, a.seg[1], a.seg[2]);
        }

    } else if (pki_acme_is(&a, "authz", 3)) {
        if (pki_acme_authenticate(&a, PKI_KEY_KID)) {
            pki_acme_authz(&a, a.seg[1], a.seg[2]);
        }

    } else if (pki_acme_is(&a, "chall", 4)) {
        if (pki_acme_authenticate(&a, PKI_KEY_KID)) {
            pki_acme_challenge(&a, a.seg[1], a.seg[2], a.seg[3]);
        }

    } else if (pki_acme_is(&a, "finalize", 3)) {
        if (pki_acme_authenticate(&a, PKI_KEY_KID)) {
            if (a.payload == NULL) {
                pki_acme_problem(&a, 400, "malformed", "finalize needs a "
                                 "payload");
            } else {
                pki_acme_finalize(&a, a.seg[1], a.seg[2]);
            }
        }

    } else if (pki_acme_is(&a, "cert", 3) || pki_acme_is(&a, "cert", 4)) {
        if (pki_acme_authenticate(&a, PKI_KEY_KID)
            && pki_acme_fetch_only(&a, "a certificate"))
        {
            pki_acme_certificate(&a, a.seg[1], a.seg[2],
                                 a.nseg == 4 ? a.seg[3] : NULL);
        }

    } else {
        pki_acme_problem(&a, 404, "malformed", "no such resource");
    }

    if (resp->nonce[0] == '\0') {
        pki_acme_nonce(&a);         /* the redeem script did not run */
    }

    pki_jws_clear(&a.jws);
    for (int i = 0; i < a.npre; i++) {
        free(a.pre[i].text);
    }
    cJSON_Delete(a.account);
    free(a.account_text);
    cJSON_Delete(a.payload);
    EVP_PKEY_free(a.key);

    if (dir && resp->http_status == 200) {
        return;                 /* no index link on the directory (7.1) */
    }

    goto index;

refused:

    /* refused before the resources (RFC 8555 6.5: a POST's error answer
     * carries a nonce too) */
    if (post) {
        pki_acme_nonce(&a);
    }

index:

    pki_acme_index(&a);
}


PKI_API void
pki_acme_resp_free(pki_acme_resp_t *resp)
{
    int  i;

    if (resp == NULL) {
        return;
    }

    free(resp->body);
    free(resp->location);
    for (i = 0; i < PKI_ACME_MAX_LINKS; i++) {
        free(resp->links[i]);
        resp->links[i] = NULL;
    }

    resp->body = NULL;
    resp->body_len = 0;
    resp->location = NULL;

    /* the job is the glue's to run and free */
}


/* ---- validation jobs ------------------------------------------------------------------- */

PKI_API const char *
pki_acme_job_account(const pki_acme_job_t *job)
{
    return job->acct;
}


void
pki_acme_job_free(pki_acme_job_t *job)
{
    if (job != NULL) {
        cJSON_free(job->authz_text);
        free(job->account_url);
    }
    free(job);
}


/* The challenge of *authz this job validates, if it is still the attempt
 * the job was started for: the authorization pending, the challenge
 * processing since job->started (a poll that restarts a stale challenge
 * gives it a new "started" and a new job); NULL otherwise. */
static cJSON *
pki_acme_job_current(const cJSON *authz, const pki_acme_job_t *job)
{
    cJSON       *ch;
    const char  *st;

    ch = pki_acme_challenge_find(authz, job->type);
    if (ch == NULL) {
        return NULL;
    }

    st = pki_json_str(authz, "status");
    if (st == NULL || strcmp(st, "pending") != 0) {
        return NULL;
    }

    st = pki_json_str(ch, "status");
    if (st == NULL || strcmp(st, "processing") != 0
        || pki_json_num(ch, "started") != (double) job->started)
    {
        return NULL;
    }

    return ch;
}


/* The validator's store when it starts from the challenge's text: the
 * authorization and (when valid) its "valid" index, only if the stored
 * authorization is still exactly that text.  KEYS[1] authorization,
 * KEYS[2] the account's pending authorizations (pki_lua_order_create),
 * KEYS[3] index (may be absent); ARGV[1] expected, ARGV[2] new text,
 * ARGV[3] TTL, ARGV[4] the authorization's id when it is no longer
 * pending (it leaves KEYS[2]; pcall: a key of another type there costs
 * the cap's count, not the result) or "", ARGV[5] index value, ARGV[6]
 * index TTL.  1 stored, 0 the authorization changed meanwhile. */
static const char  pki_lua_job_store[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
    "redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) "
    "if #KEYS > 2 then "
    "  redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[6]) "
    "end "
    "if ARGV[4] ~= '' then redis.pcall('ZREM', KEYS[2], ARGV[4]) end "
    "return 1";


/* Runs pki_lua_job_store for the authorization of job: 1 stored, 0 the
 * authorization changed, -1 Redis failed (res filled).  done: the stored
 * text is no longer pending. */
static int
pki_acme_job_store(const pki_acme_conf_t *conf, const pki_acme_job_t *job,
    char **keys, int nkeys, const char *expected, const char *text,
    const char *ttl, int done, const char *ival, const char *ittl,
    pki_result_t *res)
{
    int          n;
    char         pkey[PKI_ACME_KEY_MAX];
    const char  *args[9];

    pki_key_name(pkey, sizeof(pkey), PKI_ACME_ST(conf), job->acct,
                 "pendauthz", NULL);

    n = 0;
    args[n++] = keys[0];
    args[n++] = pkey;
    if (nkeys > 1) {
        args[n++] = keys[1];
    }
    args[n++] = expected;
    args[n++] = text;
    args[n++] = ttl;
    args[n++] = done ? job->authz : "";
    if (nkeys > 1) {
        args[n++] = ival;
        args[n++] = ittl;
    }

    return pki_acme_cmd_int(PKI_ACME_ST(conf), res,
                            pki_acme_eval(PKI_ACME_ST(conf), res,
                                          pki_lua_job_store, nkeys + 1, n,
                                          args));
}


PKI_API void
pki_acme_job_run(const pki_acme_conf_t *conf, pki_acme_job_t *job,
    pki_result_t *res)
{
    int                      v, tries, expired;
    long                     keep;
    char                     key[PKI_ACME_KEY_MAX], idx[300], *reread;
    const char              *expected;
    cJSON                   *authz = NULL, *ch, *found, *err;
    time_t                   now;
    const char              *ptype;
    pki_result_t             local;
    pki_status_t             rc, vrc;
    pki_acme_validate_out_t  out;

    if (res == NULL) {
        pki_result_init(&local);
        res = &local;
    }

    if (conf == NULL || job == NULL) {
        pki_fail(res, PKI_INTERNAL, "bad arguments");
        return;
    }

    memset(&out, 0, sizeof(out));
    pki_result_init(&out.res);
    keep = 86400;
    v = 1;

    pki_key_name(key, sizeof(key), PKI_ACME_ST(conf), job->acct, "authz",
                 job->authz);

    /* A job that waited for a thread (a backlog of validations): when
     * its challenge is no longer processing since the time it was
     * started with (validated, restarted by a poll that took the job for
     * lost, deactivated, gone), nothing is fetched for it. */
    if (time(NULL) - job->started >= PKI_ACME_JOB_WAITED) {
        reread = NULL;
        rc = pki_acme_load_text(PKI_ACME_ST(conf), key, &authz, &reread,
                                res);
        v = rc == PKI_OK && pki_acme_job_current(authz, job) != NULL;
        cJSON_Delete(authz);
        authz = NULL;
        free(reread);

        if (rc != PKI_OK && rc != PKI_NOT_FOUND) {
            pki_fail(res, rc, "validation of %s %s: the authorization "
                     "cannot be read", job->type, job->identifier);
            return;
        }

        if (!v) {
            pki_fail(res, PKI_CONFLICT, "validation of %s %s skipped: its "
                     "challenge changed while the job waited %lds for a "
                     "thread", job->type, job->identifier,
                     (long) (time(NULL) - job->started));
            return;
        }
    }

    vrc = pki_acme_validate(&conf->validate, job->chall, job->id_type,
                            job->identifier, job->token, job->key_authz,
                            &out);

    /* CAA once the name is proven (RFC 8659: names only, not addresses) */
    if (vrc == PKI_OK && conf->validate.caa
        && strcmp(job->id_type, "dns") == 0)
    {
        vrc = pki_acme_caa_check(&conf->validate, job->identifier,
                                 job->wildcard, job->account_url, job->type,
                                 &out);
    }

    if (pki_acme_validate_stopping()) {
        /* cut short: not the target's answer, so nothing is stored; the
         * challenge stays processing and a poll restarts it */
        pki_fail(res, PKI_UNAVAILABLE, "validation of %s %s abandoned: "
                 "the server is stopping", job->type, job->identifier);
        return;
    }

    if (vrc == PKI_INTERNAL) {
        /* a fault of this server (out of memory, RAND_bytes() or
         * SSL_CTX_new() failed, an unusable resolver setting) says
         * nothing of the client's name: no "invalid" for it, nothing is
         * stored, as when the server stops; the challenge stays
         * processing and a poll restarts it once stale.  The caller logs
         * PKI_INTERNAL as an error. */
        pki_fail(res, PKI_INTERNAL, "validation of %s %s:%s not stored, a "
                 "fault of this server: %s", job->type, job->id_type,
                 job->identifier, out.res.detail);
        pki_log(res, "%s", out.res.log);
        return;
    }

    now = time(NULL);

    /* from the text the challenge stored, else read; every store below
     * checks the authorization is still the text it starts from */
    expected = job->authz_text;
    reread = NULL;
    tries = 0;

again:

    authz = NULL;
    if (expected != NULL) {
        authz = cJSON_Parse(expected);
        if (!cJSON_IsObject(authz)) {
            cJSON_Delete(authz);
            expected = NULL;
            goto again;
        }

    } else {
        free(reread);
        rc = pki_acme_load_text(PKI_ACME_ST(conf), key, &authz, &reread,
                                res);
        if (rc != PKI_OK) {
            pki_fail(res, rc, "validation of %s %s: authorization gone",
                     job->type, job->identifier);
            return;
        }
        expected = reread;
    }

    /* the same test as the one before the validation, on what is stored
     * now: a poll that took this job for lost restarted the challenge
     * (a new "started", a new job) while it ran, so its result, older
     * than the attempt that is running now, is not stored over it */
    found = pki_acme_job_current(authz, job);

    if (found == NULL) {
        ch = pki_acme_challenge_find(authz, job->type);
        if (ch != NULL
            && pki_json_num(ch, "started") != (double) job->started)
        {
            pki_fail(res, PKI_CONFLICT, "validation of %s %s: not stored, "
                     "its challenge was restarted (started %.0f, the "
                     "job's %lld)", job->type, job->identifier,
                     pki_json_num(ch, "started"), (long long) job->started);

        } else {
            pki_fail(res, PKI_CONFLICT, "validation of %s %s: no longer "
                     "processing", job->type, job->identifier);
        }

        cJSON_Delete(authz);
        free(reread);
        return;
    }

    expired = pki_json_num(authz, "expires") < (double) now;

    if (expired) {
        /* expired while it ran (RFC 8555 7.1.6: final), and so it stays (a
         * read shows it expired, nothing reuses it); the challenge ends,
         * saying why, so that no client polls it on */
        pki_json_set_str(found, "status", "invalid");
        err = pki_acme_problem_new("unauthorized", "the authorization "
                                   "expired while it was validated", 403);
        pki_json_set_item(found, "error", err);

    } else if (vrc == PKI_OK) {
        pki_json_set_str(found, "status", "valid");
        pki_json_set_num(found, "validated", (double) now);
        pki_json_set_str(authz, "status", "valid");
        pki_json_set_num(authz, "validated", (double) now);

        /* valid for an order's life, and past the reuse window by the
         * margin reuse leaves a new order */
        keep = conf->order_ttl > 0 ? conf->order_ttl : 86400;
        if (conf->authz_reuse > 0
            && conf->authz_reuse + pki_acme_reuse_margin(conf) > keep)
        {
            keep = conf->authz_reuse + pki_acme_reuse_margin(conf);
        }
        pki_json_set_num(authz, "expires", (double) (now + keep));

    } else {
        pki_json_set_str(found, "status", "invalid");
        pki_json_set_str(authz, "status", "invalid");

        ptype = out.problem_type != NULL ? out.problem_type
                                         : "incorrectResponse";
        err = pki_acme_problem_new(ptype, out.res.detail[0]
                                          ? out.res.detail
                                          : "validation failed",
                                   pki_acme_type_status(ptype));
        pki_json_set_item(found, "error", err);
    }

    /* the "valid" index serves authorization reuse and revocation by an
     * account that holds valid authorizations (RFC 8555 7.6); it lives as
     * long as the authorization and is written with it in one step */
    if (vrc == PKI_OK && !expired) {
        long   ttl;
        char   akey[PKI_ACME_KEY_MAX], vkey[PKI_ACME_KEY_MAX], *keys[2];
        char  *texts[2], ttls[2][24];

        snprintf(idx, sizeof(idx), "%s:%s%s", job->id_type,
                 cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(authz,
                                                              "wildcard"))
                 ? "*." : "", job->identifier);
        pki_key_name(akey, sizeof(akey), PKI_ACME_ST(conf), job->acct,
                     "authz", job->authz);
        /* not in key: a retry below reads the authorization again */
        pki_acme_valid_key(vkey, sizeof(vkey), PKI_ACME_ST(conf), job->acct,
                           pki_json_str(authz, "realm"), idx);

        ttl = (long) (pki_json_num(authz, "expires") - (double) now) + 86400;
        keys[0] = akey;
        texts[0] = cJSON_PrintUnformatted(authz);
        snprintf(ttls[0], sizeof(ttls[0]), "%ld", ttl > 0 ? ttl : 1);
        keys[1] = vkey;
        texts[1] = job->authz;
        snprintf(ttls[1], sizeof(ttls[1]), "%ld", keep);

        if (texts[0] == NULL) {
            rc = pki_fail(res, PKI_INTERNAL, "out of memory");

        } else {
            v = pki_acme_job_store(conf, job, keys, 2, expected, texts[0],
                                   ttls[0], 1, texts[1], ttls[1], res);
            rc = v < 0 ? PKI_UNAVAILABLE : PKI_OK;
        }
        cJSON_free(texts[0]);

    } else {
        long   t;
        char  *text, ttl[24], *keys[1];

        text = cJSON_PrintUnformatted(authz);
        t = (long) (pki_json_num(authz, "expires") - (double) now) + 86400;
        snprintf(ttl, sizeof(ttl), "%ld", t > 0 ? t : 1);
        keys[0] = key;
        v = text == NULL ? -1
            : pki_acme_job_store(conf, job, keys, 1, expected, text, ttl,
                                 strcmp(pki_json_str(authz, "status")
                                        ? pki_json_str(authz, "status")
                                        : "", "pending") != 0,
                                 NULL, NULL, res);
        rc = v < 0 ? (text == NULL ? PKI_INTERNAL : PKI_UNAVAILABLE)
                   : PKI_OK;
        cJSON_free(text);
    }

    cJSON_Delete(authz);

    if (rc == PKI_OK && v == 0) {
        /* the authorization changed since the text stored or read (a
         * stale restart, another challenge of it, a deactivation): decide
         * on what it is now, never over it with a plain SET */
        if (++tries < 8) {
            expected = NULL;
            goto again;
        }

        rc = pki_fail(res, PKI_CONFLICT, "validation of %s %s: the "
                      "authorization keeps changing", job->type,
                      job->identifier);
    }

    free(reread);

    if (rc != PKI_OK) {
        return;
    }

    if (expired) {
        pki_fail(res, PKI_CONFLICT, "validation of %s %s: the "
                 "authorization expired meanwhile (%s)", job->type,
                 job->identifier, vrc == PKI_OK ? "the answer was right"
                                                : out.res.detail);

    } else if (vrc == PKI_OK) {
        snprintf(res->log, sizeof(res->log), "acme: %s %s:%s valid",
                 job->type, job->id_type, job->identifier);
    } else {
        /* stored: the client did not prove the name, whatever the
         * validator's status (PKI_UNAVAILABLE for its closed port, its
         * NXDOMAIN, its TLS): not a fault of this server, which the
         * caller logs as an error (a store that failed, PKI_INTERNAL) */
        pki_fail(res, PKI_UNAUTHORIZED, "%s %s:%s invalid: %s", job->type,
                 job->id_type, job->identifier, out.res.detail);
        pki_log(res, "%s", out.res.log);
    }
}


/* ---- EAB keys (admin API) ----------------------------------------------------------------- */

/* An EAB key id or key that does not start with "-": operators paste them
 * into command lines, and certbot's and lego's option parsers take a value
 * "-..." for an option ("expected one argument").  One draw in 64 is made
 * again, which costs log2(64/63) bits of the key. */
static int
pki_acme_eab_random(char *buf, size_t size, size_t nbytes)
{
    int  i;

    for (i = 0; i < 64; i++) {
        if (!pki_random_id(buf, size, nbytes)) {
            return 0;
        }
        if (buf[0] != '-') {
            return 1;
        }
    }

    return 0;
}


/* KEYS[1] the key's hash, KEYS[2] the list; ARGV[1] HMAC key, ARGV[2]
 * created, ARGV[3] kid. */
static const char  pki_lua_eab_new[] =
    "redis.call('HSET', KEYS[1], 'hmac', ARGV[1], 'status', 'active', "
    "'created', ARGV[2]) "
    "redis.call('SADD', KEYS[2], ARGV[3]) "
    "return 1";


PKI_API pki_status_t
pki_acme_eab_new(pki_redis_t *r, char kid[32],
    char key[PKI_ACME_EAB_KEY_BUF], pki_result_t *res)
{
    int          v;
    char         rkey[PKI_ACME_KEY_MAX], num[24], set[PKI_ACME_KEY_MAX];
    const char  *args[5];

    if (!pki_acme_eab_random(kid, 32, 12)
        || !pki_acme_eab_random(key, PKI_ACME_EAB_KEY_BUF,
                                PKI_ACME_EAB_KEY_BYTES))
    {
        OPENSSL_cleanse(key, PKI_ACME_EAB_KEY_BUF);
        return pki_fail(res, PKI_INTERNAL, "no randomness");
    }

    pki_key_name(rkey, sizeof(rkey), r, NULL, "eab", kid);
    pki_key_name(set, sizeof(set), r, NULL, "eabs", NULL);
    snprintf(num, sizeof(num), "%lld", (long long) time(NULL));

    /* the key and its place in the list at once: a key the list does not
     * show could be neither seen nor disabled */
    args[0] = rkey;
    args[1] = set;
    args[2] = key;
    args[3] = num;
    args[4] = kid;

    v = pki_acme_cmd_int(r, res, pki_acme_eval(r, res, pki_lua_eab_new, 2, 5,
                                               args));
    if (v != 1) {
        OPENSSL_cleanse(key, PKI_ACME_EAB_KEY_BUF);
        return v < 0 ? PKI_UNAVAILABLE
                     : pki_fail(res, PKI_INTERNAL, "unexpected reply");
    }

    return PKI_OK;
}


/* A page of the list holds at most 10,000 kids of the set (the SSCAN
 * COUNT the caller asks, at most this), read 1,000 to a pipeline. */
#define PKI_ACME_EAB_LIST_MAX   10000
#define PKI_ACME_EAB_CHUNK      1000

/* One key's entry from its HMGET status created account (a nil: no
 * member; a key gone meanwhile: the kid alone).  0: out of memory. */
static int
pki_acme_eab_entry(cJSON *arr, const char *kid, const redisReply *h)
{
    char                t[32];
    cJSON              *o;
    const redisReply   *v;

    o = cJSON_CreateObject();
    if (o == NULL) {
        return 0;
    }

    if (!cJSON_AddItemToArray(arr, o)
        || cJSON_AddStringToObject(o, "kid", kid) == NULL)
    {
        return 0;
    }

    v = h->elements > 0 ? h->element[0] : NULL;
    if (v != NULL && v->type == REDIS_REPLY_STRING
        && cJSON_AddStringToObject(o, "status", v->str) == NULL)
    {
        return 0;
    }

    v = h->elements > 1 ? h->element[1] : NULL;
    if (v != NULL && v->type == REDIS_REPLY_STRING) {
        (void) pki_format_rfc3339((time_t) atoll(v->str), t);
        if (cJSON_AddStringToObject(o, "created", t) == NULL) {
            return 0;
        }
    }

    /* a key binds one account: "bound" once it has (status stays
     * "active" unless disabled, and a bound key serves that account's
     * newAccount again, never another's) */
    v = h->elements > 2 ? h->element[2] : NULL;
    if (v != NULL && v->type == REDIS_REPLY_STRING
        && cJSON_AddStringToObject(o, "account", v->str) == NULL)
    {
        return 0;
    }

    if (cJSON_GetObjectItemCaseSensitive(o, "status") != NULL
        && cJSON_AddBoolToObject(o, "bound", v != NULL
                                             && v->type == REDIS_REPLY_STRING
                                             && v->str[0] != '\0')
           == NULL)
    {
        return 0;
    }

    return 1;
}


PKI_API pki_status_t
pki_acme_eab_list(pki_redis_t *r, const char *cursor, size_t limit,
    char **json, char next[24], pki_result_t *res)
{
    size_t         i, j, k, n, total, *lens, *idx;
    char           set[PKI_ACME_KEY_MAX], *keys, *key, count[24];
    const char   **argv, **a;
    cJSON         *arr;
    redisReply    *page, *kids, **replies;
    pki_status_t   st;

    *json = NULL;
    snprintf(next, 24, "0");

    if (cursor == NULL || cursor[0] == '\0') {
        cursor = "0";
    }

    /* a Redis SCAN cursor is an unsigned 64-bit number: more is refused
     * here (400), not by Redis ("invalid cursor": a store failure) */
    if (strlen(cursor) > 20 || strspn(cursor, "0123456789")
                               != strlen(cursor)
        || (strlen(cursor) == 20 && strcmp(cursor, "18446744073709551615")
                                    > 0))
    {
        return pki_fail(res, PKI_MALFORMED, "bad cursor");
    }

    if (limit == 0 || limit > PKI_ACME_EAB_LIST_MAX) {
        limit = PKI_ACME_EAB_LIST_MAX;
    }

    pki_key_name(set, sizeof(set), r, NULL, "eabs", NULL);
    snprintf(count, sizeof(count), "%zu", limit);

    /* a page of the set (SSCAN: no O(N) SMEMBERS of every key ever made;
     * COUNT is a hint, a small set comes whole) */
    page = pki_acme_cmd(r, res, 5, "SSCAN", set, cursor, "COUNT", count);
    if (page == NULL || page->type != REDIS_REPLY_ARRAY
        || page->elements != 2
        || page->element[0]->type != REDIS_REPLY_STRING
        || page->element[0]->len >= 24
        || page->element[1]->type != REDIS_REPLY_ARRAY)
    {
        if (page != NULL) {
            freeReplyObject(page);
        }
        return pki_fail(res, PKI_UNAVAILABLE, "certificate store "
                        "unavailable");
    }

    snprintf(next, 24, "%s", page->element[0]->str);
    kids = page->element[1];

    total = kids->elements < PKI_ACME_EAB_LIST_MAX ? kids->elements
                                                   : PKI_ACME_EAB_LIST_MAX;

    /* the keys' fields but their HMAC keys, a chunk of HMGETs at a time
     * (single-key reads, as on a Redis Cluster) */
    arr = cJSON_CreateArray();
    argv = malloc(5 * PKI_ACME_EAB_CHUNK * sizeof(*argv));
    lens = malloc(5 * PKI_ACME_EAB_CHUNK * sizeof(*lens));
    keys = malloc(PKI_ACME_EAB_CHUNK * PKI_ACME_KEY_MAX);
    idx = malloc(PKI_ACME_EAB_CHUNK * sizeof(*idx));
    replies = calloc(PKI_ACME_EAB_CHUNK, sizeof(*replies));

    st = PKI_OK;

    if (arr == NULL || argv == NULL || lens == NULL || keys == NULL
        || idx == NULL || replies == NULL)
    {
        st = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto failed;
    }

    for (i = 0; i < total; i += PKI_ACME_EAB_CHUNK) {
        n = 0;

        for (j = i; j < total && j < i + PKI_ACME_EAB_CHUNK; j++) {
            if (kids->element[j]->type != REDIS_REPLY_STRING
                || !pki_id_ok(kids->element[j]->str))
            {
                continue;
            }

            key = keys + n * PKI_ACME_KEY_MAX;
            pki_key_name(key, PKI_ACME_KEY_MAX, r, NULL, "eab",
                         kids->element[j]->str);

            a = &argv[5 * n];
            a[0] = "HMGET";
            a[1] = key;
            a[2] = "status";
            a[3] = "created";
            a[4] = "account";
            for (k = 0; k < 5; k++) {
                lens[5 * n + k] = strlen(a[k]);
            }

            idx[n++] = j;
        }

        if (n == 0) {
            continue;
        }

        st = pki_int_redis_pipeline(r, n, 5, argv, lens, replies, "HMGET",
                                    1, res);
        if (st != PKI_OK) {
            goto failed;
        }

        for (k = 0; k < n; k++) {
            if (st == PKI_OK
                && !pki_acme_eab_entry(arr, kids->element[idx[k]]->str,
                                       replies[k]))
            {
                st = pki_fail(res, PKI_INTERNAL, "out of memory");
            }

            freeReplyObject(replies[k]);
            replies[k] = NULL;
        }

        if (st != PKI_OK) {
            goto failed;
        }
    }

    *json = cJSON_PrintUnformatted(arr);
    if (*json == NULL) {
        st = pki_fail(res, PKI_INTERNAL, "out of memory");
    }

failed:

    freeReplyObject(page);
    cJSON_Delete(arr);
    free(argv);
    free(lens);
    free(keys);
    free(idx);
    free(replies);

    return st;
}


pki_status_t
pki_int_acme_eab_disable(pki_redis_t *r, const char *kid, int *already,
    pki_result_t *res)
{
    int          v, was;
    char         rkey[PKI_ACME_KEY_MAX];
    redisReply  *reply;

    if (already != NULL) {
        *already = 0;
    }

    if (kid == NULL || !pki_id_ok(kid)) {
        return pki_fail(res, PKI_NOT_FOUND, "no such EAB key");
    }

    pki_key_name(rkey, sizeof(rkey), r, NULL, "eab", kid);

    /* in one step: a key deleted between a look and a write would come
     * back as a hash holding only its status; ARGV[1] "1": the change is
     * marked until its entry is logged (3: disabled, its entry missing) */
    reply = pki_acme_cmd(r, res, 5, "EVAL",
            "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end "
            "if redis.call('HGET', KEYS[1], 'status') == 'disabled' then "
            "  if ARGV[1] == '1' "
            "     and redis.call('HEXISTS', KEYS[1], 'unlogged') == 1 then "
            "    return 3 "
            "  end "
            "  return 2 "
            "end "
            "redis.call('HSET', KEYS[1], 'status', 'disabled') "
            "if ARGV[1] == '1' then "
            "  redis.call('HSET', KEYS[1], 'unlogged', '1') "
            "end "
            "return 1",
            "1", rkey, already != NULL ? "1" : "0");
    was = reply != NULL && reply->type == REDIS_REPLY_INTEGER
          && reply->integer == 2;
    v = pki_acme_cmd_int(r, res, reply);
    if (v < 0) {
        return PKI_UNAVAILABLE;
    }
    if (v == 0) {
        return pki_fail(res, PKI_NOT_FOUND, "no such EAB key");
    }

    if (already != NULL) {
        *already = was;
    }

    return PKI_OK;
}


void
pki_int_acme_eab_logged(pki_redis_t *r, const char *kid, pki_result_t *res)
{
    int           v;
    char          rkey[PKI_ACME_KEY_MAX];
    pki_result_t  lres;

    if (kid == NULL || !pki_id_ok(kid)) {
        return;
    }

    pki_key_name(rkey, sizeof(rkey), r, NULL, "eab", kid);

    pki_result_init(&lres);
    v = pki_acme_cmd_int(r, &lres, pki_acme_cmd(r, &lres, 3, "HDEL", rkey,
                                                "unlogged"));
    if (v < 0) {
        /* the key stays disabled and logged; a retry logs it again */
        pki_log(res, "%sredis: the mark of EAB key %s (not yet logged) "
                "stays: %s %s", res != NULL && res->log[0] != '\0' ? "; "
                : "", kid, lres.detail, lres.log);
    }
}


PKI_API pki_status_t
pki_acme_eab_disable(pki_redis_t *r, const char *kid, pki_result_t *res)
{
    return pki_int_acme_eab_disable(r, kid, NULL, res);
}



/* ---- an account's pending work, cancelled when it is deactivated --------- */

/*
 * RFC 8555 7.3.6: once an account is deactivated (by its client) or
 * revoked (by the operator), the server SHOULD cancel what its key set in
 * motion.  The account's pending authorizations become "deactivated" (RFC
 * 8555 7.5.2), and so their orders read "invalid" (the status of an open
 * order is derived, pki_acme_order_status); a ready order has no pending
 * authorization left to take away, so "invalid" is stored in it, with an
 * "unauthorized" problem.  Orders being finalized or done are left alone:
 * a certificate that is signed stays the operator's to revoke.
 *
 * Each write is a compare-and-set on the text read: a validation result
 * or a finalization that comes in between is read again and decided on,
 * never written over.  The validation job likewise drops its result when
 * the authorization is no longer pending (pki_acme_job_run).
 *
 * The order index keeps an order as long as its certificate lives: it is
 * walked newest first (the open orders are the young ones), a batch per
 * round trip, and at most PKI_ACME_CANCEL_MAX orders are read, so that an
 * account with a large history does not hold up the request; past the
 * cap are the oldest, those about to expire.
 */
#define PKI_ACME_CANCEL_MAX    4096
#define PKI_ACME_CANCEL_BATCH  32      /* one MGET: PKI_REDIS_ARGS_MAX 40 */
#define PKI_ACME_CANCEL_TRIES  8

typedef struct {
    long          orders;       /* read from the indexes */
    long          authzs;       /* pending authorizations deactivated */
    long          ready;        /* ready orders made invalid */
    int           capped;       /* stopped at PKI_ACME_CANCEL_MAX */
    int           failed;       /* a store failed: res says why */
    pki_result_t  res;
} pki_acme_cancel_t;


/* 1 for an order that is still open: stored "pending" (pending or ready)
 * and not expired. */
static int
pki_acme_order_open(const pki_acme_t *x, const cJSON *order)
{
    const char  *st;

    st = pki_json_str(order, "status");

    return st != NULL && strcmp(st, "pending") == 0
           && pki_json_num(order, "expires") >= (double) x->now;
}


/* Deactivates authorization aid when it is pending.  1: it is valid (its
 * order may be ready), 0: it is not (any more), -1: Redis failed. */
static int
pki_acme_cancel_authz(pki_acme_t *x, const char *acct, const char *aid,
    pki_acme_cancel_t *c)
{
    int           v, tries;
    char         *text;
    cJSON        *authz;
    const char   *st;
    pki_status_t  rc;

    for (tries = 0; tries < PKI_ACME_CANCEL_TRIES; tries++) {
        rc = pki_acme_authz_load_text(x, acct, aid, &authz, &text);
        if (rc == PKI_UNAVAILABLE) {
            return -1;
        }
        if (rc != PKI_OK) {
            /* gone or corrupt: nothing to cancel, and the order that
             * names it reads "invalid" anyway */
            pki_result_init(x->res);
            return 0;
        }

        st = pki_acme_authz_status(x, authz);

        if (strcmp(st, "pending") != 0) {
            v = (strcmp(st, "valid") == 0);
            cJSON_Delete(authz);
            free(text);
            return v;
        }

        pki_json_set_str(authz, "status", "deactivated");

        v = pki_acme_authz_cas(x, acct, aid, &text, authz);
        cJSON_Delete(authz);
        free(text);

        if (v < 0) {
            return -1;
        }

        if (v == 1) {
            c->authzs++;
            return 0;
        }

        /* a challenge started or its validation ended meanwhile: again
         * with what is stored now */
    }

    pki_fail(x->res, PKI_CONFLICT, "authorization %s keeps changing", aid);

    return -1;
}


/* Cancels order oid: its pending authorizations are deactivated, and when
 * they all are valid (the order is ready) the order is made invalid.  0,
 * or -1 when Redis failed. */
static int
pki_acme_cancel_order(pki_acme_t *x, const char *acct, const char *oid,
    const char *why, pki_acme_cancel_t *c)
{
    int           v, tries, ready, n;
    char         *text;
    cJSON        *order, *item;
    pki_status_t  rc;

    for (tries = 0; tries < PKI_ACME_CANCEL_TRIES; tries++) {
        rc = pki_acme_order_load(x, acct, oid, &order, &text);
        if (rc == PKI_UNAVAILABLE) {
            return -1;
        }
        if (rc != PKI_OK) {
            pki_result_init(x->res);
            return 0;
        }

        if (!pki_acme_order_open(x, order)) {
            cJSON_Delete(order);
            free(text);
            return 0;
        }

        ready = 1;
        n = 0;

        cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(order,
                                                                "authzs"))
        {
            v = cJSON_IsString(item)
                ? pki_acme_cancel_authz(x, acct, item->valuestring, c) : 0;
            if (v < 0) {
                cJSON_Delete(order);
                free(text);
                return -1;
            }

            ready &= v;
            n++;
        }

        if (!ready || n == 0) {
            /* derived invalid from now on */
            cJSON_Delete(order);
            free(text);
            return 0;
        }

        pki_acme_order_fail(order, "unauthorized", 403, why);

        v = pki_acme_order_cas(x, acct, oid, &text, order);
        cJSON_Delete(order);
        free(text);

        if (v < 0) {
            return -1;
        }

        if (v == 1) {
            c->ready++;
            return 0;
        }

        /* a finalization came first: read again (it is processing now,
         * and left alone) */
    }

    pki_fail(x->res, PKI_CONFLICT, "order %s keeps changing", oid);

    return -1;
}


/* The open orders of acct in store st.  c->failed with c->res when Redis
 * failed. */
static void
pki_acme_cancel_store(pki_redis_t *st, const char *acct, time_t now,
    const char *why, pki_acme_cancel_t *c)
{
    int               v, full;
    long              walked;
    char              zkey[PKI_ACME_KEY_MAX], off[24], num[24];
    char              keys[PKI_ACME_CANCEL_BATCH][PKI_ACME_KEY_MAX];
    cJSON            *order;
    size_t            i, k, want, lens[PKI_ACME_CANCEL_BATCH + 1];
    pki_acme_t        x;
    redisReply       *ids, *texts, *e;
    const char       *argv[PKI_ACME_CANCEL_BATCH + 1];
    const char       *oids[PKI_ACME_CANCEL_BATCH];
    pki_result_t      res;
    pki_acme_conf_t   conf;

    /* the engine's object helpers, on this store alone */
    memset(&conf, 0, sizeof(conf));
    conf.redis = st;

    /* a result of its own: skipping a corrupt object clears it, and an
     * earlier store's failure must stay in c->res */
    pki_result_init(&res);

    memset(&x, 0, sizeof(x));
    x.conf = &conf;
    x.res = &res;
    x.now = now;

    pki_key_name(zkey, sizeof(zkey), st, acct, "orders", NULL);

    walked = 0;
    full = 0;

    while (c->orders < PKI_ACME_CANCEL_MAX) {
        texts = NULL;

        want = PKI_ACME_CANCEL_MAX - c->orders;
        if (want > PKI_ACME_CANCEL_BATCH) {
            want = PKI_ACME_CANCEL_BATCH;
        }

        snprintf(off, sizeof(off), "%ld", walked);
        snprintf(num, sizeof(num), "%zu", want);

        ids = pki_acme_cmd(st, &res, 7, "ZREVRANGEBYSCORE", zkey, "+inf",
                           "-inf", "LIMIT", off, num);
        if (ids == NULL || ids->type != REDIS_REPLY_ARRAY) {
            goto failed;
        }

        /* the batch's orders in one round trip: most are done (valid
         * orders stay indexed) and need no more than that */
        argv[0] = "MGET";
        k = 0;

        for (i = 0; i < ids->elements && i < want; i++) {
            e = ids->element[i];
            if (e->type != REDIS_REPLY_STRING || !pki_id_ok(e->str)) {
                continue;
            }

            oids[k] = e->str;
            pki_key_name(keys[k], sizeof(keys[k]), st, acct, "order", e->str);
            argv[k + 1] = keys[k];
            k++;
        }

        if (k > 0) {
            for (i = 0; i < k + 1; i++) {
                lens[i] = strlen(argv[i]);
            }

            texts = pki_int_redis_cmd(st, (int) k + 1, argv, lens, &res);
            if (texts == NULL || texts->type != REDIS_REPLY_ARRAY
                || texts->elements != k)
            {
                goto failed;
            }
        }

        for (i = 0; i < k; i++) {
            e = texts->element[i];
            if (e->type != REDIS_REPLY_STRING) {
                continue;
            }

            order = cJSON_ParseWithLength(e->str, e->len);
            v = cJSON_IsObject(order) && pki_acme_order_open(&x, order);
            cJSON_Delete(order);

            if (v && pki_acme_cancel_order(&x, acct, oids[i], why, c) < 0) {
                goto failed;
            }
        }

        if (texts != NULL) {
            freeReplyObject(texts);
        }

        full = (ids->elements >= want);
        walked += (long) ids->elements;
        c->orders += (long) ids->elements;
        freeReplyObject(ids);

        if (!full) {
            return;
        }
    }

    c->capped = 1;

    return;

failed:

    if (texts != NULL) {
        freeReplyObject(texts);
    }

    if (ids != NULL) {
        freeReplyObject(ids);
    }

    if (res.status == PKI_OK) {
        pki_fail(&res, PKI_UNAVAILABLE, "redis: unexpected reply");
    }

    /* the first failure is the one told */
    if (!c->failed) {
        c->res = res;
        c->failed = 1;
    }
}


/* Cancels what account acct left open (above), in r, in r2 and in each of
 * the nstate state stores (NULL or repeated stores are skipped), among all
 * the orders each lists, newest first, up to the cap over all stores.  why
 * is the detail of a ready order's problem.  line receives what was done,
 * for the log: a store that failed is named there and nothing more, since
 * the account's new status is stored already and stands either way. */
static void
pki_acme_account_cancel(pki_redis_t *r, pki_redis_t *r2,
    pki_redis_t *const *state, size_t nstate, const char *acct, time_t now,
    const char *why, char *line, size_t size)
{
    size_t              i, j;
    pki_redis_t        *st, *prev, *head[2];
    pki_acme_cancel_t   c;

    memset(&c, 0, sizeof(c));
    pki_result_init(&c.res);

    head[0] = r;
    head[1] = r2;

    for (i = 0; i < 2 + nstate; i++) {
        st = (i < 2) ? head[i] : state[i - 2];

        for (j = 0; st != NULL && j < i; j++) {
            prev = (j < 2) ? head[j] : state[j - 2];
            if (prev == st) {
                st = NULL;
            }
        }

        if (st != NULL) {
            pki_acme_cancel_store(st, acct, now, why, &c);
        }
    }

    snprintf(line, size, "acme account %s: open work cancelled: %ld "
             "authorizations deactivated, %ld ready orders made invalid, "
             "%ld orders read%s%s%.200s%s%.400s", acct, c.authzs, c.ready,
             c.orders,
             c.capped ? " (the cap: older ones left)" : "",
             c.failed ? "; cancelling failed: " : "",
             c.failed ? c.res.detail : "",
             c.failed && c.res.log[0] ? " " : "",
             c.failed ? c.res.log : "");
}


/* ---- ACME accounts (the admin API's "acme/accounts" section) ------------- */

/* The admin's view of a stored account: nothing secret is in an account
 * (its public key, contacts, EAB kid), and only this is shown. */
static char *
pki_acme_account_view(const char *id, const cJSON *acct)
{
    char         t[32], *s;
    cJSON       *out, *c;
    const char  *v;

    out = cJSON_CreateObject();
    if (out == NULL) {
        return NULL;
    }

    cJSON_AddStringToObject(out, "id", id);
    v = pki_json_str(acct, "status");
    cJSON_AddStringToObject(out, "status", v != NULL ? v : "valid");

    c = cJSON_GetObjectItemCaseSensitive(acct, "contact");
    cJSON_AddItemToObject(out, "contact", cJSON_IsArray(c)
                                          ? cJSON_Duplicate(c, 1)
                                          : cJSON_CreateArray());

    c = cJSON_GetObjectItemCaseSensitive(acct, "created");
    if (cJSON_IsNumber(c) && c->valuedouble > 0) {
        (void) pki_format_rfc3339((time_t) c->valuedouble, t);
        cJSON_AddStringToObject(out, "createdAt", t);
    }

    c = cJSON_GetObjectItemCaseSensitive(acct, "tos");
    if (cJSON_IsBool(c)) {
        cJSON_AddBoolToObject(out, "termsOfServiceAgreed", cJSON_IsTrue(c));
    }

    v = pki_json_str(acct, "eab");
    if (v != NULL) {
        cJSON_AddStringToObject(out, "eab_kid", v);
    }

    v = pki_json_str(acct, "thumb");
    if (v != NULL) {
        cJSON_AddStringToObject(out, "thumbprint", v);
    }

    s = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);

    return s;
}


PKI_API pki_status_t
pki_acme_account_get(pki_redis_t *r, const char *id, char **json,
    pki_result_t *res)
{
    char          key[PKI_ACME_KEY_MAX];
    cJSON        *acct;
    pki_status_t  rc;

    *json = NULL;

    if (id == NULL || !pki_id_ok(id)) {
        return pki_fail(res, PKI_NOT_FOUND, "no such ACME account");
    }

    pki_key_name(key, sizeof(key), r, id, "acct", NULL);

    rc = pki_acme_load_text(r, key, &acct, NULL, res);
    if (rc == PKI_NOT_FOUND) {
        return pki_fail(res, PKI_NOT_FOUND, "no such ACME account");
    }
    if (rc != PKI_OK) {
        return rc;
    }

    *json = pki_acme_account_view(id, acct);
    cJSON_Delete(acct);

    if (*json == NULL) {
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    return PKI_OK;
}


/*
 * "revoked" (RFC 8555 7.1.6: the server's deactivation): a compare-and-set
 * of the durable account like the engine's own updates, retried when a
 * keyChange or an update came in between, so that neither is undone and
 * the revocation is never lost.  Every request of the account is then
 * refused (pki_acme_authenticate, newAccount): its kid from the next
 * request on, since the nonce redeem script checks the stored text, and
 * its key on newAccount.  Its open orders are then cancelled (RFC 8555
 * 7.3.6, pki_acme_account_cancel) in every store that may hold them.
 * The admin API does not know each location's acme_order_ttl, so the
 * whole order index is walked, newest first, up to the cap.  A failure
 * there is logged and leaves the revocation as it is.
 *
 * With acme_redis the state stores keep a copy of the account that the
 * redeem script checks instead: the revoked text is written there too
 * (pki_lua_acct_copy never replaces a revoked copy), else the account
 * would go on for up to PKI_ACME_ACCT_COPY_TTL seconds.  A store that
 * cannot be reached: PKI_UNAVAILABLE after the durable revocation; calling
 * again (already revoked: *changed 0, PKI_OK) writes the copies again.
 */
#define PKI_ACME_REVOKE_TRIES  8

PKI_API pki_status_t
pki_acme_account_revoke(pki_redis_t *r, pki_redis_t *const *state,
    size_t nstate, const char *id, int *changed, char **json,
    pki_result_t *res)
{
    int           v, tries;
    char          key[PKI_ACME_KEY_MAX], *text, *nt;
    cJSON        *acct;
    size_t        i;
    const char   *st;
    pki_status_t  rc;

    *json = NULL;
    *changed = 0;
    text = NULL;
    nt = NULL;
    acct = NULL;

    if (id == NULL || !pki_id_ok(id)) {
        return pki_fail(res, PKI_NOT_FOUND, "no such ACME account");
    }

    pki_key_name(key, sizeof(key), r, id, "acct", NULL);

    for (tries = 0; ; tries++) {
        rc = pki_acme_load_text(r, key, &acct, &text, res);
        if (rc == PKI_NOT_FOUND) {
            return pki_fail(res, PKI_NOT_FOUND, "no such ACME account");
        }
        if (rc != PKI_OK) {
            return rc;
        }

        st = pki_json_str(acct, "status");

        if (st != NULL && strcmp(st, "revoked") == 0) {
            /* done before: the copies are written again below; by a
             * request that gave up before Redis made it (still marked
             * unlogged), so that this caller writes its entry */
            if (cJSON_GetObjectItemCaseSensitive(acct, "unlogged")
                != NULL)
            {
                *changed = 1;
            }

            nt = text;
            text = NULL;
            break;
        }

        if (st != NULL && strcmp(st, "valid") != 0) {
            rc = pki_fail(res, PKI_CONFLICT, "the account is %s: only a "
                          "valid account can be revoked", st);
            goto failed;
        }

        /* the mark goes when the caller's entry is in the transaction
         * log (pki_int_acme_account_logged) */
        pki_json_set_str(acct, "status", "revoked");
        pki_json_set_str(acct, "unlogged", "revoked");
        (void) pki_acme_account_rev(acct, 1);

        v = pki_acme_cas(r, key, text, acct, PKI_ACME_KEEP, &nt, res);
        if (v < 0) {
            rc = PKI_UNAVAILABLE;
            goto failed;
        }
        if (v == 1) {
            *changed = 1;
            break;
        }

        /* changed meanwhile (keyChange, update): again with what is
         * stored now */
        cJSON_Delete(acct);
        free(text);
        acct = NULL;
        text = NULL;

        if (tries + 1 == PKI_ACME_REVOKE_TRIES) {
            return pki_fail(res, PKI_UNAVAILABLE, "the account keeps "
                            "changing, retry");
        }
    }

    rc = PKI_OK;

    for (i = 0; i < nstate; i++) {
        if (state[i] != NULL && pki_acme_copy_write(state[i], id, nt, 0, res)
                                < 0)
        {
            pki_fail(res, PKI_UNAVAILABLE, "the account is revoked in the "
                     "certificate store, but an ACME state store "
                     "(acme_redis) could not be told: retry");
            rc = PKI_UNAVAILABLE;
            goto failed;
        }
    }

    /* its open orders live in the state stores, or in r where an ACME
     * location has no acme_redis; a call again (above) goes over them
     * again and finds what a failed run left */
    {
        char  line[PKI_LOG_LEN];

        pki_acme_account_cancel(r, NULL, state, nstate, id, time(NULL),
                                "the account was revoked by the CA", line,
                                sizeof(line));

        /* the admin API appends its own line after this one */
        pki_log(res, "%s%s", line, *changed ? "; " : "");
    }

    *json = pki_acme_account_view(id, acct);
    if (*json == NULL) {
        rc = pki_fail(res, PKI_INTERNAL, "out of memory");
    }

failed:

    cJSON_Delete(acct);
    free(text);
    free(nt);

    return rc;
}


/* The revocation's transaction log entry is durable: the account's mark
 * (pki_acme_account_revoke) goes, by a compare-and-set as every change
 * of the durable account.  A failure leaves it: a retry of the
 * revocation then logs it once more. */
void
pki_int_acme_account_logged(pki_redis_t *r, const char *id,
    pki_result_t *res)
{
    int           v, tries;
    char          key[PKI_ACME_KEY_MAX], *text;
    cJSON        *acct;
    pki_status_t  rc;
    pki_result_t  lres;

    if (id == NULL || !pki_id_ok(id)) {
        return;
    }

    pki_key_name(key, sizeof(key), r, id, "acct", NULL);
    pki_result_init(&lres);

    for (tries = 0; tries < PKI_ACME_REVOKE_TRIES; tries++) {
        rc = pki_acme_load_text(r, key, &acct, &text, &lres);
        if (rc != PKI_OK) {
            break;
        }

        if (cJSON_GetObjectItemCaseSensitive(acct, "unlogged") == NULL) {
            cJSON_Delete(acct);
            free(text);
            return;
        }

        cJSON_DeleteItemFromObjectCaseSensitive(acct, "unlogged");
        (void) pki_acme_account_rev(acct, 1);

        v = pki_acme_cas(r, key, text, acct, PKI_ACME_KEEP, NULL, &lres);

        cJSON_Delete(acct);
        free(text);

        if (v == 1) {
            return;
        }

        if (v < 0) {
            break;
        }
    }

    pki_log(res, "%sredis: the mark of ACME account %s (not yet logged) "
            "stays: %s %s", res != NULL && res->log[0] != '\0' ? "; " : "",
            id, lres.detail, lres.log);
}
