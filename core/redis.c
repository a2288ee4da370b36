/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The certificate store in Redis (hiredis 0.14.1, synchronous API).
 *
 * One connection per thread per pki_redis_t, kept in thread-specific data
 * and opened lazily; any connection, timeout or protocol error frees it so
 * that the next call reconnects.  Every command goes through
 * redisCommandArgv() with explicit lengths: user data is never formatted
 * into a command string.  Multi-key updates are Lua scripts (EVAL) whose
 * keys all carry the CA's hash tag, so they stay valid on a Redis Cluster.
 */

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netdb.h>

#include <hiredis.h>
#include <sds.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "pki.h"
#include "audit_int.h"
#include "issue_int.h"
#include "redis_int.h"


#define PKI_REDIS_NS_MAX     64
#define PKI_REDIS_KEY_MAX    256
#define PKI_REDIS_ARGS_MAX   48
#define PKI_REDIS_FIELD_MAX  (1024 * 1024)


struct pki_redis_s {
    char           *host;
    int             port;
    char           *unix_path;
    char           *password;
    int             db;
    char           *ns;
    int             timeout_ms;
    pthread_key_t   tkey;
    long long       policy_at;      /* ms: the last good policy check */
    int             aof;            /* pki_redis_aof(): 1, 2, 0, -1    */
};


/* A new connection asks the maxmemory-policy at most this often per store
 * (pki_redis_policy_ok): connections live long, a check is one INFO. */
#define PKI_REDIS_POLICY_MS  60000

/* The most a reply may take before it is whole (bytes read and not yet
 * parsed into a reply): the largest legitimate ones are CRL pieces of
 * 1 MiB and pipelined batches of a few MiB. */
#define PKI_REDIS_REPLY_MAX  (32 << 20)

/* the addresses of a host name tried in turn when connecting */
#define PKI_REDIS_ADDRS      4


/*
 * KEYS[1] serial reservation, KEYS[2] record; ARGV[1] reservation value,
 * ARGV[2..] field/value pairs of the pending record.
 *
 * The pending record expires after PKI_PENDING_TTL seconds unless a commit
 * makes it permanent.  A pending record never had its certificate handed
 * out (that happens only after the commit), so one whose issuance died
 * (Redis stalled past the client's timeout and ran the reservation later,
 * a worker killed mid-signature) removes itself instead of lingering as a
 * half-written record.  The serial reservation never expires: a serial is
 * never reused.
 */
#define PKI_PENDING_TTL  "300"

/*
 * Redis's clock in milliseconds, as the local "now" of a script.  A
 * reservation answers it (pki_int_rsv_t): a commit then carries a
 * deadline in that clock and writes nothing when run past it.  Redis >= 5
 * replicates a script's effects, so TIME may come before its writes.
 */
#define PKI_LUA_NOW                                                           \
    "local tm = redis.call('TIME') "                                          \
    "local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000) "

/*
 * "now" in seconds for a script that must not undo a planned revocation
 * that is due: the later of the caller's clock (argument a) and the
 * store's.  The hosts of a fleet share the store's clock, not each
 * other's, and from its time on every reader answers the plan revoked
 * (pki_record_at): a host whose clock is behind must not move it or
 * replace it then, which would make a published revocation good again.
 * (Carrying a plan out, pki_lua_plan_due, goes by the worker's clock: a
 * host ahead does it as early as its readers say revoked.)
 */
#define PKI_LUA_SECS(a)                                                       \
    "local now = math.max(tonumber(" a "), "                                  \
    "tonumber(redis.call('TIME')[1])) "

/*
 * A script that writes more than one key first checks that none of them
 * holds another type (another application, or an operator, writing under
 * the namespace): a command refused half-way through a script keeps the
 * writes before it (Lua scripts are not rolled back), e.g. a revocation
 * in the record but not in the hash CRLs are built from, or a record good
 * but missing from the expiry index.  k is a key (Lua), t the type TYPE
 * names; an absent key is fine.
 */
#define PKI_LUA_WANT(k, t)                                                    \
    "do local ty = redis.call('TYPE', " k ").ok "                             \
    "if ty ~= 'none' and ty ~= '" t "' then "                                 \
    "return redis.error_reply('WRONGTYPE ' .. " k " .. ' holds a ' .. ty "    \
    ".. ', not a " t "') end end "

/* k, a counter INCR moves on: absent, or an integer as Redis writes one
 * (no leading zero, no "-0": INCR refuses "01") */
#define PKI_LUA_WANT_COUNT(k)                                                 \
    PKI_LUA_WANT(k, "string")                                                 \
    "do local c = redis.call('GET', " k ") "                                  \
    "if c and c ~= '0' and (not string.match(c, '^%-?[1-9]%d*$') "            \
    "or #c > 18) then "                                                       \
    "return redis.error_reply('ERR ' .. " k " .. ' is not a counter') "       \
    "end end "

/*
 * Moves the counter k (checked by PKI_LUA_WANT_COUNT) on to a value it
 * never held: one more, or Redis's clock in microseconds when that is
 * greater.  A plain INCR repeats values after the store goes back (a
 * restore from a backup, a failover that lost writes, pki_redis pointed at
 * another server), and a reader comparing a value it saw before with the
 * current one (the OCSP cache's view, a stored CRL's revgen) takes a
 * changed store for an unchanged one; the clock does not go back with the
 * store.  As crlNumber does (pki_lua_crlnumber).  The clock is written
 * as its digits (seconds, then 6 of microseconds), 16 of the counter's
 * 18; Lua compares it exactly with the counter until the year 2255.  A
 * value at or past the clock (only one set by hand) is INCR'd, exact too.
 */
#define PKI_LUA_BUMP(k)                                                       \
    "do local tb = redis.call('TIME') "                                       \
    "local us = tb[1] .. string.format('%06d', tonumber(tb[2])) "             \
    "local c = tonumber(redis.call('GET', " k ") or '0') "                    \
    "if c < tonumber(us) then redis.call('SET', " k ", us) "                  \
    "else redis.call('INCR', " k ") end end "

/* Answers the reservation's time (Redis's milliseconds), 0: serial taken. */
static const char  pki_lua_reserve[] =
    PKI_LUA_NOW
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX') then "
    "  redis.call('DEL', KEYS[2]) "
    "  redis.call('HSET', KEYS[2], unpack(ARGV, 2)) "
    "  redis.call('EXPIRE', KEYS[2], " PKI_PENDING_TTL ") "
    "  return now "
    "end "
    "return 0";

/*
 * pki_lua_reserve for an ACME order whose state lives in another Redis
 * (acme_redis, which may lose its last second in a crash): KEYS[3] is the
 * order's link in this store, a hash naming the serial (s) last reserved
 * for the order, by which finalization (t) and when (a).  So the order's
 * certificate is found here even when the order forgot it.  ARGV[1]
 * reservation value, ARGV[2] serial, ARGV[3] the finalization's token,
 * ARGV[4] seconds after which another finalization's pending record is
 * taken for dead, ARGV[5] the link's TTL, ARGV[6] the prefix of record
 * keys, ARGV[7..] field/value pairs of the pending record.  A link's age
 * is on this Redis's clock (TIME), never the caller's: hosts whose clocks
 * differ judge another finalization alike.
 *
 * The time (Redis's milliseconds, > 3): reserved (or was, by this very
 * call run twice: its answer was lost), 0: serial taken, 2: the linked
 * certificate is recorded (good or
 * revoked), 3: another finalization's record is pending and fresh.  A
 * pending record of this finalization or a dead one is deleted, so a late
 * commit of it fails and hands nothing out.
 */
static const char  pki_lua_reserve_link[] =
    PKI_LUA_NOW
    "local secs = math.floor(now / 1000) "
    "local l = redis.call('HMGET', KEYS[3], 's', 't', 'a') "
    "if l[1] then "
    "  if l[1] == ARGV[2] and l[2] == ARGV[3] then return now end "
    "  local st = redis.call('HGET', ARGV[6] .. l[1], 'status') "
    "  if st and st ~= 'pending' then return 2 end "
    "  if st and l[2] ~= ARGV[3] and (tonumber(l[3]) or 0) "
    "     + tonumber(ARGV[4]) > secs then "
    "    return 3 "
    "  end "
    "  if st then redis.call('DEL', ARGV[6] .. l[1]) end "
    "end "
    "if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end "
    "redis.call('DEL', KEYS[2]) "
    "redis.call('HSET', KEYS[2], unpack(ARGV, 7)) "
    "redis.call('EXPIRE', KEYS[2], " PKI_PENDING_TTL ") "
    "redis.call('DEL', KEYS[3]) "
    "redis.call('HSET', KEYS[3], 's', ARGV[2], 't', ARGV[3], 'a', secs) "
    "redis.call('EXPIRE', KEYS[3], ARGV[5]) "
    "return now";

/*
 * pki_lua_reserve with an entry in an index of the caller's (a Matter
 * PAI's index of the device keys it certified), as pki_lua_reserve_batch_ix
 * does for a batch: KEYS[3] the entry, ARGV[1] reservation value, ARGV[2]
 * the claim the caller holds on the entry, ARGV[3] the serial, ARGV[4..]
 * field/value pairs.  A record reserved sets the entry to "s:<serial>"
 * (no TTL) in the same script.  The time (Redis's milliseconds): reserved
 * (or was, by this very call run twice: the entry names its serial), 0:
 * serial taken, -1: the entry is not the claim (lost, or another's):
 * nothing written.
 */
static const char  pki_lua_reserve_ix[] =
    PKI_LUA_NOW
    "local v = redis.call('GET', KEYS[3]) "
    "if v == 's:' .. ARGV[3] then return now end "
    "if v ~= ARGV[2] then return -1 end "
    "if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end "
    "redis.call('DEL', KEYS[2]) "
    "redis.call('HSET', KEYS[2], unpack(ARGV, 4)) "
    "redis.call('EXPIRE', KEYS[2], " PKI_PENDING_TTL ") "
    "redis.call('SET', KEYS[3], 's:' .. ARGV[3]) "
    "return now";

/* KEYS[1] record, KEYS[2] expiry index; ARGV[1] notAfter, ARGV[2] serial,
 * ARGV[3] deadline (Redis's milliseconds, 0: none), ARGV[4..] field/value
 * pairs.  0: no record, -1: not pending, -2: too late (Redis ran it past
 * the deadline: its client gave up on the answer), nothing written.  The
 * state is looked at before the clock: a commit that landed and is run
 * again (its answer lost) says "not pending", never "too late". */
#define PKI_LUA_LATE(d)                                                       \
    "if tonumber(" d ") > 0 then "                                            \
    PKI_LUA_NOW                                                               \
    "  if now > tonumber(" d ") then return -2 end "                          \
    "end "

static const char  pki_lua_commit[] =
    PKI_LUA_WANT("KEYS[2]", "zset")
    "local st = redis.call('HGET', KEYS[1], 'status') "
    "if not st then return 0 end "
    "if st ~= 'pending' then return -1 end "
    PKI_LUA_LATE("ARGV[3]")
    "redis.call('HSET', KEYS[1], unpack(ARGV, 4)) "
    "redis.call('PERSIST', KEYS[1]) "
    "redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2]) "
    "return 1";

/* The same, carrying the transaction-log entry of the issuance (issue 7):
 * KEYS[3] the log's stream; ARGV[3] the entry's time, ARGV[4] its fields,
 * ARGV[5] the writer's pid (the janitor's hint), ARGV[6] the deadline,
 * ARGV[7..] field/value pairs.  The entry is appended in the same script,
 * so it is exactly as durable as the record.  The stream id on success.
 * XADD runs first: a script that fails half-way keeps its earlier writes
 * (Lua scripts are not rolled back), and an XADD refused after the HSET
 * (a key of the wrong type) left a record committed as good for an
 * issuance reported as failed, with no log entry. */
static const char  pki_lua_commit_carry[] =
    PKI_LUA_WANT("KEYS[2]", "zset")
    PKI_LUA_WANT("KEYS[3]", "stream")
    "local st = redis.call('HGET', KEYS[1], 'status') "
    "if not st then return 0 end "
    "if st ~= 'pending' then return -1 end "
    PKI_LUA_LATE("ARGV[6]")
    "local id = redis.call('XADD', KEYS[3], '*', 't', ARGV[3], "
    "'b', ARGV[4], 'p', ARGV[5]) "
    "redis.call('HSET', KEYS[1], unpack(ARGV, 7)) "
    "redis.call('PERSIST', KEYS[1]) "
    "redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2]) "
    "return id";

/* KEYS[1] record. */
static const char  pki_lua_abandon[] =
    "if redis.call('HGET', KEYS[1], 'status') == 'pending' then "
    "  redis.call('DEL', KEYS[1]) "
    "  return 1 "
    "end "
    "return 0";

/* The same for a record reserved with an index entry (pki_lua_reserve_batch_
 * ix): KEYS[2] the entry, ARGV[1] "s:<serial>".  A record still pending
 * (or gone) is deleted and the entry, while it names it, dropped: the key
 * is free at once.  One committed meanwhile (its commit's answer lost)
 * keeps both. */
static const char  pki_lua_abandon_ix[] =
    "local st = redis.call('HGET', KEYS[1], 'status') "
    "if st and st ~= 'pending' then return 0 end "
    "if st then redis.call('DEL', KEYS[1]) end "
    "if redis.call('GET', KEYS[2]) == ARGV[1] then "
    "  redis.call('DEL', KEYS[2]) "
    "end "
    "return 1";


/* ---- connections -------------------------------------------------------- */

static void
pki_redis_ctx_free(void *p)
{
    if (p != NULL) {
        redisFree(p);
    }
}


static pki_status_t
pki_redis_unavailable(pki_result_t *res, const char *what, const char *err)
{
    pki_fail(res, PKI_UNAVAILABLE, "certificate store unavailable");

    /* a retry appends to the first attempt's text: keep them apart */
    pki_log(res, "%sredis: %s: %s",
            (res != NULL && res->log[0] != '\0') ? "; " : "",
            what, err != NULL ? err : "error");
    return PKI_UNAVAILABLE;
}


static void
pki_redis_drop(pki_redis_t *r)
{
    redisContext  *c;

    c = pthread_getspecific(r->tkey);
    if (c != NULL) {
        pthread_setspecific(r->tkey, NULL);
        redisFree(c);
    }
}


/*
 * An error reply: PKI_UNAVAILABLE with res filled.  An error that speaks of
 * the node rather than the command (a replica since a failover, a node
 * loading its data or without a master, a Cluster redirect) also drops the
 * thread's connection, whose reply is read in full: the next command
 * connects afresh, and reaches the new master behind a proxy or a name.
 * Redis keeps a demoted node's clients connected, so a kept connection
 * would fail every write until nginx restarts.
 */
static pki_status_t
pki_redis_error(pki_redis_t *r, const char *what, const char *err,
    pki_result_t *res)
{
    size_t              i, n;
    const char         *inner;
    static const char  *node[] = {
        "READONLY", "MASTERDOWN", "LOADING", "MOVED", "ASK", "CLUSTERDOWN",
        "TRYAGAIN", "NOAUTH"
    };

    /* before Redis 7 a script's error came wrapped: "ERR Error running
     * script (call to f_...): @user_script:1: -READONLY You can't ..." */
    inner = err != NULL && strncmp(err, "ERR Error running script", 24) == 0
            ? strstr(err, ": -") : NULL;

    for (i = 0; err != NULL && i < sizeof(node) / sizeof(node[0]); i++) {
        n = strlen(node[i]);
        if ((strncmp(err, node[i], n) == 0 && (err[n] == ' ' || !err[n]))
            || (inner != NULL && strncmp(inner + 3, node[i], n) == 0
                && (inner[3 + n] == ' ' || !inner[3 + n])))
        {
            pki_redis_drop(r);
            break;
        }
    }

    return pki_redis_unavailable(res, what, err);
}


static struct timeval
pki_redis_tv(const pki_redis_t *r)
{
    struct timeval  tv;

    tv.tv_sec = r->timeout_ms / 1000;
    tv.tv_usec = (r->timeout_ms % 1000) * 1000;
    return tv;
}


/* Checks a reply to a setup command; frees it. */
static int
pki_redis_setup_ok(redisContext *c, redisReply *reply, const char *what,
    pki_result_t *res)
{
    int  rc;

    if (reply == NULL) {
        pki_redis_unavailable(res, what, c->errstr);
        return 0;
    }

    rc = reply->type != REDIS_REPLY_ERROR;

    if (!rc) {
        pki_redis_unavailable(res, what, reply->str);
    }

    freeReplyObject(reply);
    return rc;
}



/* hiredis's own reply builders, wrapped so that an announced array size is
 * checked before anything is allocated for it */
static redisReplyObjectFunctions  pki_redis_default_fn;
static redisReplyObjectFunctions  pki_redis_limited_fn;
static pthread_mutex_t            pki_redis_fn_lock = PTHREAD_MUTEX_INITIALIZER;
static int                        pki_redis_fn_ready;


/* Elements announced by the arrays of the reply being read, per thread (a
 * reply is parsed by the thread that sent the command): nested headers
 * ("*1000000" 300 times, 3 KB) would otherwise allocate a table each, 2.4 GB
 * in all (found by fuzz_redis after the per-array limit). */
static __thread size_t  pki_redis_elements;


static void *
pki_redis_create_array(const redisReadTask *task, int elements)
{
    if (task->parent == NULL) {
        pki_redis_elements = 0;         /* the outermost array of a reply */
    }

    if (elements < 0
        || (size_t) elements > PKI_REDIS_MAX_ELEMENTS - pki_redis_elements)
    {
        return NULL;            /* the reader reports it and the reply fails */
    }

    pki_redis_elements += (size_t) elements;

    return pki_redis_default_fn.createArray(task, elements);
}


void
pki_int_redis_limit_reader(redisContext *c)
{
    if (c == NULL || c->reader == NULL || c->reader->fn == NULL
        || c->reader->fn == &pki_redis_limited_fn
        || c->reader->fn->createArray == NULL)
    {
        return;
    }

    /* every context starts with hiredis's one static table: the first
     * seeds the copy, later ones are simply switched to the limited one */
    pthread_mutex_lock(&pki_redis_fn_lock);

    if (!pki_redis_fn_ready) {
        pki_redis_default_fn = *c->reader->fn;
        pki_redis_limited_fn = pki_redis_default_fn;
        pki_redis_limited_fn.createArray = pki_redis_create_array;
        pki_redis_fn_ready = 1;
    }

    pthread_mutex_unlock(&pki_redis_fn_lock);

    c->reader->fn = &pki_redis_limited_fn;
}


/*
 * The server's maxmemory-policy, from INFO memory (which managed services
 * that disable CONFIG still answer): 1 fine or unknown (INFO refused or
 * renamed away), 0 any policy but noeviction (res says why), -1 no
 * answer.  An allkeys-* policy evicts any key once Redis is full:
 * certificate records, serial reservations, revocations, with nothing
 * written anywhere.  A volatile-* policy evicts keys with a TTL, and some
 * of those are marks of something used: a spent ACME nonce, a SCEP
 * message seen, an order's finalization link.  A mark gone lets the same
 * request in again (a replayed JWS or SCEP message would be taken), so
 * it is refused too.
 *
 * The same answer carries aof_enabled (INFO persistence), kept in r->aof
 * for pki_redis_aof(): one "INFO memory persistence" (Redis >= 7), or the
 * default sections, which hold both, from a server that takes one section
 * only (Redis 6: a syntax error).
 */
static int pki_redis_get_reply(pki_redis_t *r, redisContext *c,
    double deadline, redisReply **out, int *written);


/* One command of a new connection's setup, answered by deadline: the
 * reply, or NULL (c->errstr says why). */
static redisReply *
pki_redis_setup_cmd(pki_redis_t *r, redisContext *c, int argc,
    const char **argv, const size_t *lens, double deadline)
{
    redisReply  *reply;

    reply = NULL;
    if (redisAppendCommandArgv(c, argc, argv, lens) == REDIS_OK) {
        (void) pki_redis_get_reply(r, c, deadline, &reply, NULL);
    }

    return reply;
}

/* With the append-only file on: 1 when each write is synced before its
 * answer (appendfsync always) or when that cannot be told (CONFIG renamed
 * away or refused), 2 when not (everysec, no: a crash of the host loses
 * up to a second or more of answered issuances).  INFO has no field for
 * it. */
static int
pki_redis_fsync_always(pki_redis_t *r, redisContext *c, double deadline)
{
    int           rc;
    size_t        lens[3];
    const char   *argv[3];
    redisReply   *reply, *v;

    argv[0] = "CONFIG";
    argv[1] = "GET";
    argv[2] = "appendfsync";
    lens[0] = 6;
    lens[1] = 3;
    lens[2] = 11;

    reply = pki_redis_setup_cmd(r, c, 3, argv, lens, deadline);
    rc = 1;

    /* ["appendfsync", value] */
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY
        && reply->elements == 2)
    {
        v = reply->element[1];
        if (v != NULL && v->type == REDIS_REPLY_STRING && v->str != NULL
            && strcasecmp(v->str, "always") != 0)
        {
            rc = 2;
        }
    }

    freeReplyObject(reply);
    return rc;
}


static int
pki_redis_policy_ok(pki_redis_t *r, redisContext *c, double deadline,
    pki_result_t *res)
{
    int          rc;
    char         pol[32];
    size_t       i, n, lens[3];
    const char  *argv[3], *p, *e;
    redisReply  *reply;

    argv[0] = "INFO";
    argv[1] = "memory";
    argv[2] = "persistence";
    lens[0] = 4;
    lens[1] = 6;
    lens[2] = 11;

    /* within the setup's deadline (an answer of about a kilobyte a few
     * bytes at a time would otherwise hold the thread) */
    reply = pki_redis_setup_cmd(r, c, 3, argv, lens, deadline);

    if (reply != NULL && reply->type == REDIS_REPLY_ERROR
        && reply->str != NULL && strncmp(reply->str, "ERR syntax", 10) == 0)
    {
        freeReplyObject(reply);
        reply = pki_redis_setup_cmd(r, c, 1, argv, lens, deadline);
    }

    if (reply == NULL) {
        pki_redis_unavailable(res, "INFO", c->err ? c->errstr
                                                  : "no answer in time");
        return -1;
    }

    rc = 1;
    p = NULL;

    if (reply->type == REDIS_REPLY_STRING && reply->str != NULL) {
        p = strstr(reply->str, "\naof_enabled:");
        if (p != NULL) {
            p += sizeof("\naof_enabled:") - 1;
            __atomic_store_n(&r->aof,
                             *p == '0' ? 0 : pki_redis_fsync_always(r, c,
                                                                    deadline),
                             __ATOMIC_RELAXED);
        }

        p = strstr(reply->str, "\nmaxmemory_policy:");
    }

    if (p != NULL) {
        p += sizeof("\nmaxmemory_policy:") - 1;
        e = p + strcspn(p, "\r\n");
        n = (size_t) (e - p) < sizeof(pol) - 1 ? (size_t) (e - p)
                                               : sizeof(pol) - 1;
        memcpy(pol, p, n);
        pol[n] = '\0';
        for (i = 0; i < n; i++) {
            if (!(isalnum((unsigned char) pol[i]) || pol[i] == '-')) {
                pol[i] = '?';
            }
        }

        if (strcmp(pol, "noeviction") != 0) {
            pki_fail(res, PKI_UNAVAILABLE, "certificate store unavailable");
            pki_log(res, "%sredis: maxmemory-policy %s evicts %s once Redis "
                    "is full: not used; set maxmemory-policy noeviction",
                    res != NULL && res->log[0] != '\0' ? "; " : "", pol,
                    strncmp(pol, "volatile-", 9) == 0
                    ? "keys with a TTL, the marks of spent ACME nonces "
                      "and seen SCEP messages among them (a replay would "
                      "pass),"
                    : "any key, certificate records and serial "
                      "reservations too,");
            rc = 0;
        }
    }

    freeReplyObject(reply);
    return rc;
}


/* The cause of a failed connect, write or read, from hiredis's text for
 * it (strerror() of the errno, or pki_redis_get_reply's own). */
static pki_redis_probe_t
pki_redis_io_why(const redisContext *c)
{
    const char  *err;

    err = c->errstr;

    if (c->err != REDIS_ERR_IO) {
        return PKI_REDIS_PROBE_OTHER;
    }

    if (strstr(err, "within the timeout") != NULL) {
        return PKI_REDIS_PROBE_TIMEOUT;
    }

    if (strcmp(err, strerror(ENOENT)) == 0) {
        return PKI_REDIS_PROBE_NO_SOCKET;
    }

    if (strcmp(err, strerror(EACCES)) == 0
        || strcmp(err, strerror(EPERM)) == 0)
    {
        return PKI_REDIS_PROBE_DENIED;
    }

    if (strcmp(err, strerror(ECONNREFUSED)) == 0) {
        return PKI_REDIS_PROBE_REFUSED;
    }

    if (strcmp(err, strerror(ETIMEDOUT)) == 0
        || strcmp(err, strerror(EAGAIN)) == 0
        || strcmp(err, strerror(EINPROGRESS)) == 0)
    {
        return PKI_REDIS_PROBE_TIMEOUT;
    }

    return PKI_REDIS_PROBE_OTHER;
}


/* The cause of a setup command's failure (reply NULL: no answer). */
static pki_redis_probe_t
pki_redis_reply_why(const redisContext *c, const redisReply *reply,
    pki_redis_probe_t refused)
{
    if (reply == NULL) {
        return pki_redis_io_why(c);
    }

    if (reply->type == REDIS_REPLY_ERROR && reply->str != NULL
        && strncmp(reply->str, "NOAUTH", 6) == 0)
    {
        return PKI_REDIS_PROBE_AUTH;
    }

    return refused;
}


/* AUTH and SELECT on a new connection, and the server's maxmemory-policy
 * (pki_redis_policy_ok) unless checked good in the last
 * PKI_REDIS_POLICY_MS: 1 done, 0 failed (res says why, and *why if not
 * NULL).  All of it within one store timeout: answers trickled a byte at a
 * time, each within the socket's timeout, held the thread for as long as
 * the server liked. */
static int
pki_redis_setup(pki_redis_t *r, redisContext *c, pki_redis_probe_t *why,
    pki_result_t *res)
{
    int                 ok;
    char                db[16];
    size_t              lens[2];
    double              deadline;
    long long           now, at;
    redisReply         *reply;
    const char         *argv[2];
    pki_redis_probe_t   w;

    deadline = pki_int_now() + r->timeout_ms / 1000.0;

    if (r->password != NULL) {
        argv[0] = "AUTH";
        argv[1] = r->password;
        lens[0] = 4;
        lens[1] = strlen(r->password);

        reply = pki_redis_setup_cmd(r, c, 2, argv, lens, deadline);
        w = pki_redis_reply_why(c, reply, PKI_REDIS_PROBE_AUTH);

        if (!pki_redis_setup_ok(c, reply, "AUTH", res)) {
            goto failed;
        }
    }

    if (r->db != 0) {
        snprintf(db, sizeof(db), "%d", r->db);
        argv[0] = "SELECT";
        argv[1] = db;
        lens[0] = 6;
        lens[1] = strlen(db);

        reply = pki_redis_setup_cmd(r, c, 2, argv, lens, deadline);
        w = pki_redis_reply_why(c, reply, PKI_REDIS_PROBE_SELECT);

        if (!pki_redis_setup_ok(c, reply, "SELECT", res)) {
            goto failed;
        }
    }

    now = (long long) (pki_int_now() * 1000);
    at = __atomic_load_n(&r->policy_at, __ATOMIC_RELAXED);
    if (at != 0 && now - at >= 0 && now - at < PKI_REDIS_POLICY_MS) {
        return 1;
    }

    ok = pki_redis_policy_ok(r, c, deadline, res);

    /* a bad policy is asked again by every new connection */
    __atomic_store_n(&r->policy_at, ok == 1 ? now : 0, __ATOMIC_RELAXED);

    if (ok == 1) {
        return 1;
    }

    w = ok == 0 ? PKI_REDIS_PROBE_EVICTS : pki_redis_io_why(c);

failed:

    if (why != NULL) {
        *why = w;
    }

    return 0;
}


/*
 * The host's addresses, looked up within the store's timeout.  hiredis
 * calls getaddrinfo() itself, which waits as long as the resolver is told
 * to (resolv.conf: 5 s per try, two tries, A and AAAA): a pool thread
 * opening a connection while DNS is out held on for 10 s or more whatever
 * the timeout.  The lookup runs in glibc's getaddrinfo_a() helper thread;
 * this thread waits for it at most timeout_ms.  A lookup given up on is
 * left to finish there: the request and its answer are freed by whoever
 * lets go of them last, this thread or the completion (refs).
 */
typedef struct {
    struct gaicb      cb;
    struct addrinfo   hints;
    int               refs;
    char              port[8];
    char              host[];
} pki_redis_lookup_t;


static void
pki_redis_lookup_put(pki_redis_lookup_t *l, int n)
{
    if (__atomic_sub_fetch(&l->refs, n, __ATOMIC_ACQ_REL) == 0) {
        if (l->cb.ar_result != NULL) {
            freeaddrinfo(l->cb.ar_result);
        }
        free(l);
    }
}


static void
pki_redis_lookup_done(union sigval v)
{
    pki_redis_lookup_put(v.sival_ptr, 1);
}


/* Fills addrs with up to n numeric addresses of r->host; their number,
 * or -1 (res set). */
static int
pki_redis_lookup(pki_redis_t *r, char (*addrs)[INET6_ADDRSTRLEN], int n,
    pki_result_t *res)
{
    int                  i, rc;
    double               deadline, left;
    size_t               hlen;
    struct timespec      ts;
    struct sigevent      sev;
    struct addrinfo     *ai;
    struct gaicb        *list[1];
    pki_redis_lookup_t  *l;
    unsigned char        bin[16];

    if (inet_pton(AF_INET, r->host, bin) == 1
        || inet_pton(AF_INET6, r->host, bin) == 1)
    {
        snprintf(addrs[0], INET6_ADDRSTRLEN, "%s", r->host);
        return 1;
    }

    hlen = strlen(r->host);
    l = calloc(1, sizeof(pki_redis_lookup_t) + hlen + 1);
    if (l == NULL) {
        pki_redis_unavailable(res, "connect", "out of memory");
        return -1;
    }

    memcpy(l->host, r->host, hlen + 1);
    snprintf(l->port, sizeof(l->port), "%d", r->port);
    l->hints.ai_family = AF_UNSPEC;
    l->hints.ai_socktype = SOCK_STREAM;
    l->cb.ar_name = l->host;
    l->cb.ar_service = l->port;
    l->cb.ar_request = &l->hints;
    l->refs = 2;                        /* this thread, the completion */

    memset(&sev, 0, sizeof(sev));
    sev.sigev_notify = SIGEV_THREAD;
    sev.sigev_notify_function = pki_redis_lookup_done;
    sev.sigev_value.sival_ptr = l;

    list[0] = &l->cb;
    rc = getaddrinfo_a(GAI_NOWAIT, list, 1, &sev);
    if (rc != 0) {
        /* not queued: no completion will come */
        pki_redis_lookup_put(l, 2);
        pki_redis_unavailable(res, "host lookup", gai_strerror(rc));
        return -1;
    }

    deadline = pki_int_now() + r->timeout_ms / 1000.0;

    for ( ;; ) {
        rc = gai_error(&l->cb);
        if (rc != EAI_INPROGRESS) {
            break;
        }

        left = deadline - pki_int_now();
        if (left <= 0) {
            break;
        }

        ts.tv_sec = (time_t) left;
        ts.tv_nsec = (long) ((left - (double) ts.tv_sec) * 1e9);
        (void) gai_suspend((const struct gaicb * const *) list, 1, &ts);
    }

    if (rc == EAI_INPROGRESS) {
        /* taken off the queue before it started: no completion comes */
        if (gai_cancel(&l->cb) == EAI_CANCELED) {
            pki_redis_lookup_put(l, 2);
        } else {
            pki_redis_lookup_put(l, 1);
        }

        pki_fail(res, PKI_UNAVAILABLE, "certificate store unavailable");
        pki_log(res, "%sredis: the lookup of \"%s\" took more than the "
                "timeout (%d ms): is DNS reachable?",
                (res != NULL && res->log[0] != '\0') ? "; " : "", r->host, r->timeout_ms);
        return -1;
    }

    if (rc != 0) {
        pki_redis_lookup_put(l, 1);
        pki_fail(res, PKI_UNAVAILABLE, "certificate store unavailable");
        pki_log(res, "%sredis: cannot look up \"%s\": %s",
                (res != NULL && res->log[0] != '\0') ? "; " : "", r->host,
                gai_strerror(rc));
        return -1;
    }

    i = 0;
    for (ai = l->cb.ar_result; ai != NULL && i < n; ai = ai->ai_next) {
        if (getnameinfo(ai->ai_addr, ai->ai_addrlen, addrs[i],
                        INET6_ADDRSTRLEN, NULL, 0, NI_NUMERICHOST)
            == 0)
        {
            i++;
        }
    }

    pki_redis_lookup_put(l, 1);

    if (i == 0) {
        pki_fail(res, PKI_UNAVAILABLE, "certificate store unavailable");
        pki_log(res, "%sredis: \"%s\" has no address",
                (res != NULL && res->log[0] != '\0') ? "; " : "", r->host);
        return -1;
    }

    return i;
}


/* A new connection to r's server, set up (pki_redis_setup), not kept
 * anywhere: NULL with res filled (and *why if not NULL) on failure. */
static redisContext *
pki_redis_open(pki_redis_t *r, pki_redis_probe_t *why, pki_result_t *res)
{
    int              ok;
    redisContext    *c;
    pki_sigpipe_t    sp;
    struct timeval   tv;

    if (why != NULL) {
        *why = PKI_REDIS_PROBE_OTHER;
    }

    tv = pki_redis_tv(r);

    if (r->unix_path != NULL) {
        c = redisConnectUnixWithTimeout(r->unix_path, tv);

    } else {
        /* each address in turn (hiredis's own lookup of a numeric one
         * asks no resolver), as hiredis would have tried them */
        char  addrs[PKI_REDIS_ADDRS][INET6_ADDRSTRLEN];
        int   i, n;

        n = pki_redis_lookup(r, addrs, PKI_REDIS_ADDRS, res);
        if (n < 0) {
            return NULL;
        }

        c = NULL;
        for (i = 0; i < n; i++) {
            if (c != NULL) {
                redisFree(c);
            }
            c = redisConnectWithTimeout(addrs[i], r->port, tv);
            if (c == NULL || !c->err) {
                break;
            }
        }
    }

    if (c == NULL) {
        pki_redis_unavailable(res, "connect", "out of memory");
        return NULL;
    }

    if (c->err) {
        pki_redis_unavailable(res, "connect", c->errstr);

        if (why != NULL) {
            *why = pki_redis_io_why(c);
        }

        /* where: a mistyped socket path or port shows in the log; the
         * socket file's permissions, or a directory on its way, keep
         * this process's user out: say which user that is */
        if (r->unix_path == NULL) {
            pki_log(res, " (%s port %d)", r->host, r->port);

        } else if (c->err == REDIS_ERR_IO
                   && (strcmp(c->errstr, strerror(EACCES)) == 0
                       || strcmp(c->errstr, strerror(EPERM)) == 0))
        {
            char  who[160];

            pki_log(res, " (unix socket \"%s\"; %s: that user needs "
                    "search permission on its directories and write "
                    "permission on the socket)", r->unix_path,
                    pki_process_user(who, sizeof(who)));

        } else {
            pki_log(res, " (unix socket \"%s\")", r->unix_path);
        }

        redisFree(c);
        return NULL;
    }

    pki_int_redis_limit_reader(c);

    if (redisSetTimeout(c, tv) != REDIS_OK) {
        pki_redis_unavailable(res, "set timeout", c->errstr);
        redisFree(c);
        return NULL;
    }

    /* a server that closes at once (maxclients, a restart) must not kill
     * a process that does not ignore SIGPIPE (pkictl) */
    pki_int_sigpipe_block(&sp);
    ok = pki_redis_setup(r, c, why, res);
    pki_int_sigpipe_restore(&sp);

    if (!ok) {
        redisFree(c);
        return NULL;
    }

    if (why != NULL) {
        *why = PKI_REDIS_PROBE_OK;
    }

    return c;
}


static redisContext *
pki_redis_conn(pki_redis_t *r, int *reused, pki_result_t *res)
{
    redisContext  *c;

    c = pthread_getspecific(r->tkey);
    *reused = (c != NULL);
    if (c != NULL) {
        return c;
    }

    c = pki_redis_open(r, NULL, res);
    if (c == NULL) {
        return NULL;
    }

    if (pthread_setspecific(r->tkey, c) != 0) {
        redisFree(c);
        pki_fail(res, PKI_INTERNAL, "pthread_setspecific() failed");
        return NULL;
    }

    return c;
}


/* hiredis write()s to the socket: around a command SIGPIPE is kept from
 * the thread (pki_int_sigpipe_block(), a no-op where it is ignored). */


/* The socket's timeout cut to what is left until deadline when that is
 * less than most of the store's timeout (*shrunk then set; a tenth of the
 * timeout's slack spares a command's first read or write the system
 * call): REDIS_OK, or REDIS_ERR with c->err set (errstr what) once the
 * deadline has passed. */
static int
pki_redis_time_left(pki_redis_t *r, redisContext *c, double deadline,
    const char *what, int *shrunk)
{
    double          left;
    struct timeval  tv;

    left = deadline - pki_int_now();
    if (left <= 0) {
        c->err = REDIS_ERR_IO;
        snprintf(c->errstr, sizeof(c->errstr), "%s", what);
        errno = ETIMEDOUT;
        return REDIS_ERR;
    }

    if (left < r->timeout_ms / 1000.0 * 0.9) {
        tv.tv_sec = (time_t) left;
        tv.tv_usec = (suseconds_t) ((left - (double) tv.tv_sec) * 1e6);
        if (tv.tv_sec == 0 && tv.tv_usec == 0) {
            tv.tv_usec = 1;
        }

        if (redisSetTimeout(c, tv) != REDIS_OK) {
            return REDIS_ERR;
        }
        *shrunk = 1;
    }

    return REDIS_OK;
}


/*
 * What redisBufferWrite() does (c's output buffer written whole), by
 * deadline: PKI_REDIS_WRITE_PIECE bytes per write(), each piece after
 * the first within the time left.  redisBufferWrite()'s one write() of
 * the whole buffer had no bound: on a unix socket it waits up to the
 * socket's timeout for each bit the peer takes, and a server that took a
 * large command (a CRL, a batch's commit) a few kilobytes at a time held
 * the thread for as long as it kept reading (the answer's deadline had
 * passed by then anyway).  A command left unwritten never runs.
 * REDIS_ERR with c->err set (errno kept) on failure.
 */
#define PKI_REDIS_WRITE_PIECE  (64 * 1024)

static int
pki_redis_write(pki_redis_t *r, redisContext *c, double deadline,
    int *shrunk)
{
    int      rc, eno;
    sds      e;
    size_t   len, off, n;
    ssize_t  w;

    if (c->err) {
        return REDIS_ERR;
    }

    len = sdslen(c->obuf);
    off = 0;
    rc = REDIS_OK;

    while (off < len) {
        /* the first piece with the socket's timeout, as before */
        if (off > 0
            && pki_redis_time_left(r, c, deadline, "the command was not "
                                   "written whole within the timeout",
                                   shrunk)
               != REDIS_OK)
        {
            rc = REDIS_ERR;
            break;
        }

        n = len - off < PKI_REDIS_WRITE_PIECE ? len - off
                                              : PKI_REDIS_WRITE_PIECE;
        w = write(c->fd, c->obuf + off, n);

        if (w < 0) {
            eno = errno;
            if (eno == EINTR) {
                continue;
            }

            /* as hiredis says it (pki_redis_io_why reads the text) */
            c->err = REDIS_ERR_IO;
            snprintf(c->errstr, sizeof(c->errstr), "%s", strerror(eno));
            errno = eno;
            rc = REDIS_ERR;
            break;
        }

        off += (size_t) w;
    }

    /* one move of what is left, not one per piece; a buffer written
     * whole is given back, as hiredis does (a CRL's would otherwise stay
     * with the connection) */
    if (off == len) {
        e = sdsempty();
        if (e != NULL) {
            sdsfree(c->obuf);
            c->obuf = e;
        } else {
            sdsclear(c->obuf);
        }

    } else if (off > 0) {
        sdsrange(c->obuf, (ssize_t) off, -1);
    }

    return rc;
}


/*
 * redisGetReply() with a deadline (pki_int_now()'s clock) for the whole
 * answer.  The socket's timeout bounds each read, so an answer that came a
 * few bytes at a time (a degraded link, a proxy) held the pool thread for
 * as long as bytes kept coming; here a read after one that left the answer
 * incomplete waits only for the time left.  REDIS_ERR with c->err set and
 * errno kept from the failing read (the caller's retry looks at it).
 * *written (if not NULL) is set to 1 once the commands were written whole.
 */
static int
pki_redis_get_reply(pki_redis_t *r, redisContext *c, double deadline,
    redisReply **out, int *written)
{
    int    shrunk, rc, eno;
    void  *aux;

    *out = NULL;
    aux = NULL;
    shrunk = 0;
    rc = REDIS_ERR;

    if (redisGetReplyFromReader(c, &aux) == REDIS_ERR) {
        return REDIS_ERR;
    }

    if (aux == NULL) {
        /* the command written within the deadline too */
        if (pki_redis_write(r, c, deadline, &shrunk) != REDIS_OK) {
            goto done;
        }

        /* the command is whole in the socket: Redis may run it even if
         * its answer never comes */
        if (written != NULL) {
            *written = 1;
        }

        for ( ;; ) {
            /* each read waits at most for the time left */
            if (pki_redis_time_left(r, c, deadline, "the answer did not "
                                    "come whole within the timeout",
                                    &shrunk)
                != REDIS_OK)
            {
                goto done;
            }

            if (redisBufferRead(c) == REDIS_ERR
                || redisGetReplyFromReader(c, &aux) == REDIS_ERR)
            {
                goto done;
            }

            if (aux != NULL) {
                break;
            }

            /* hiredis holds a bulk string whole before it hands it on:
             * one huge value (a record's der set to 300 MB by anyone who
             * can write under the namespace, or a hostile server) cost
             * every thread that read it as much memory */
            if (c->reader->len - c->reader->pos > PKI_REDIS_REPLY_MAX) {
                c->err = REDIS_ERR_PROTOCOL;
                snprintf(c->errstr, sizeof(c->errstr), "an answer of more "
                         "than %d MiB", PKI_REDIS_REPLY_MAX >> 20);
                errno = EMSGSIZE;
                goto done;
            }
        }
    }

    *out = aux;
    rc = REDIS_OK;

done:

    if (shrunk) {
        eno = errno;
        (void) redisSetTimeout(c, pki_redis_tv(r));
        errno = eno;
    }

    return rc;
}


/* Runs one command.  Returns the reply (caller frees), or NULL with res
 * filled; an error reply is turned into NULL too.  *sent (if not NULL) is
 * set to 1 when a failed command was written whole on some attempt, so
 * that Redis may have run it (a timeout, a connection lost before the
 * answer); it stays 0 when no attempt reached Redis whole (no connection,
 * a failed write) and for an error reply on the only attempt.
 *
 * A thread's connection can sit idle for a long time; when Redis restarted
 * meanwhile, the first write or read on it finds the peer gone.  Such a
 * failure on a reused connection is retried once on a fresh one, although
 * the first attempt may have run (Redis ran it and closed before its
 * answer came): every command the core sends is safe to repeat.  A
 * reservation that did land the first time answers "taken" and the caller
 * draws a new serial, a commit that landed answers "not pending" and the
 * caller fails closed, a metrics history batch carries its sender and
 * sequence number and is added once (core/metrics.c), an ACME script
 * that finds its own write done answers "done" (the account's revision
 * makes its text unique: core/acme.c, pki_lua_cas); reads are reads. */
static redisReply *
pki_redis_cmd_sent(pki_redis_t *r, int argc, const char **argv,
    const size_t *lens, int *sent, pki_result_t *res)
{
    int             reused, attempt, err, eno, written;
    double          t0;
    redisContext   *c;
    redisReply     *reply;
    pki_sigpipe_t   sp;

    for (attempt = 0; ; attempt++) {
        c = pki_redis_conn(r, &reused, res);
        if (c == NULL) {
            pki_int_observe(PKI_EV_REDIS, -1, PKI_UNAVAILABLE, NULL);
            return NULL;
        }

        pki_int_sigpipe_block(&sp);
        t0 = pki_int_now();
        reply = NULL;
        written = 0;
        if (redisAppendCommandArgv(c, argc, argv, lens) == REDIS_OK) {
            (void) pki_redis_get_reply(r, c, t0 + r->timeout_ms / 1000.0,
                                       &reply, &written);
        }
        eno = errno;

        if (reply == NULL && written && sent != NULL) {
            *sent = 1;
        }
        pki_int_observe(PKI_EV_REDIS, pki_int_now() - t0,
                        reply ? PKI_OK : PKI_UNAVAILABLE, NULL);
        pki_int_sigpipe_restore(&sp);

        if (reply != NULL) {
            if (attempt > 0 && res != NULL) {
                res->status = PKI_OK;       /* the retry mended it */
                res->detail[0] = '\0';
            }
            break;
        }

        err = c->err;
        pki_redis_unavailable(res, argv[0], c->errstr);
        pki_redis_drop(r);

        if (!reused || attempt > 0
            || !(err == REDIS_ERR_EOF
                 || (err == REDIS_ERR_IO
                     && (eno == EPIPE || eno == ECONNRESET))))
        {
            return NULL;
        }

        if (res != NULL) {
            pki_log(res, "; retrying on a new connection");
        }
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        pki_redis_error(r, argv[0], reply->str, res);
        freeReplyObject(reply);
        return NULL;
    }

    return reply;
}


static redisReply *
pki_redis_cmd(pki_redis_t *r, int argc, const char **argv,
    const size_t *lens, pki_result_t *res)
{
    return pki_redis_cmd_sent(r, argc, argv, lens, NULL, res);
}


/* ---- objects ------------------------------------------------------------ */

PKI_API pki_redis_t *
pki_redis_new(const pki_redis_conf_t *conf, pki_result_t *res)
{
    pki_redis_t  *r;
    const char   *ns;

    if (conf == NULL
        || (conf->unix_path == NULL && (conf->host == NULL
                                        || *conf->host == '\0')))
    {
        pki_fail(res, PKI_INTERNAL, "redis: a host or a unix socket is "
                 "required");
        return NULL;
    }

    ns = conf->ns != NULL ? conf->ns : "pki:";

    if (strlen(ns) > PKI_REDIS_NS_MAX || strpbrk(ns, "{}") != NULL) {
        pki_fail(res, PKI_INTERNAL, "redis: namespace \"%.64s\" is too long "
                 "or contains \"{\" or \"}\"", ns);
        return NULL;
    }

    if (conf->port < 0 || conf->port > 65535 || conf->db < 0
        || conf->timeout_ms < 0)
    {
        pki_fail(res, PKI_INTERNAL, "redis: bad port, db or timeout");
        return NULL;
    }

    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        return NULL;
    }

    r->port = conf->port != 0 ? conf->port : 6379;
    r->db = conf->db;
    r->timeout_ms = conf->timeout_ms != 0 ? conf->timeout_ms : 1000;
    r->aof = -1;

    if (conf->unix_path != NULL) {
        r->unix_path = strdup(conf->unix_path);
        if (r->unix_path == NULL) {
            goto nomem;
        }

    } else {
        r->host = strdup(conf->host);
        if (r->host == NULL) {
            goto nomem;
        }
    }

    if (conf->password != NULL) {
        r->password = strdup(conf->password);
        if (r->password == NULL) {
            goto nomem;
        }
    }

    r->ns = strdup(ns);
    if (r->ns == NULL) {
        goto nomem;
    }

    if (pthread_key_create(&r->tkey, pki_redis_ctx_free) != 0) {
        pki_fail(res, PKI_INTERNAL, "pthread_key_create() failed");
        goto failed;
    }

    return r;

nomem:

    pki_fail(res, PKI_INTERNAL, "out of memory");

failed:

    free(r->host);
    free(r->unix_path);
    free(r->password);
    free(r->ns);
    free(r);
    return NULL;
}


PKI_API void
pki_redis_free(pki_redis_t *r)
{
    if (r == NULL) {
        return;
    }

    /* Only this thread's connection can be reached; pool threads free
     * theirs on exit (the key's destructor) while the key exists. */
    pki_redis_drop(r);
    pthread_key_delete(r->tkey);

    free(r->host);
    free(r->unix_path);

    if (r->password != NULL) {
        OPENSSL_cleanse(r->password, strlen(r->password));
        free(r->password);
    }

    free(r->ns);
    free(r);
}


PKI_API void
pki_redis_disconnect(pki_redis_t *r)
{
    if (r != NULL) {
        pki_redis_drop(r);
        /* afresh: the next connection asks the policy again */
        __atomic_store_n(&r->policy_at, 0, __ATOMIC_RELAXED);
    }
}


void
pki_int_redis_id(const pki_redis_t *r, char *buf, size_t size)
{
    if (r == NULL) {
        snprintf(buf, size, "-");
    } else if (r->unix_path != NULL) {
        snprintf(buf, size, "%s %d %s", r->unix_path, r->db,
                 r->ns ? r->ns : "");
    } else {
        snprintf(buf, size, "%s:%d %d %s", r->host ? r->host : "", r->port,
                 r->db, r->ns ? r->ns : "");
    }
}


PKI_API int
pki_redis_literal(const pki_redis_t *r)
{
    unsigned char  addr[16];

    if (r == NULL) {
        return 0;
    }

    if (r->unix_path != NULL) {
        return 1;
    }

    return r->host != NULL
           && (inet_pton(AF_INET, r->host, addr) == 1
               || inet_pton(AF_INET6, r->host, addr) == 1);
}


PKI_API int
pki_redis_aof(const pki_redis_t *r)
{
    return __atomic_load_n(&r->aof, __ATOMIC_RELAXED);
}


const char *
pki_redis_ns(const pki_redis_t *r)
{
    return r != NULL ? r->ns : NULL;
}


/* The store's command timeout in milliseconds (issue.c: the deadline of a
 * failed batch's cleanup). */
int
pki_int_redis_timeout_ms(const pki_redis_t *r)
{
    return r != NULL ? r->timeout_ms : 0;
}


PKI_API pki_status_t
pki_redis_ping(pki_redis_t *r, pki_result_t *res)
{
    redisReply  *reply;
    const char  *argv[1] = { "PING" };
    size_t       lens[1] = { 4 };
    int          good;

    reply = pki_redis_cmd(r, 1, argv, lens, res);
    if (reply == NULL) {
        return res != NULL ? res->status : PKI_UNAVAILABLE;
    }

    good = reply->type == REDIS_REPLY_STATUS && reply->str != NULL
           && strcmp(reply->str, "PONG") == 0;
    freeReplyObject(reply);

    if (!good) {
        pki_redis_drop(r);
        return pki_redis_unavailable(res, "PING", "unexpected reply");
    }

    return PKI_OK;
}


/* the cause of a failed probe in words, before the details res->log has */
static const char *
pki_redis_probe_words(const pki_redis_t *r, pki_redis_probe_t why)
{
    switch (why) {
    case PKI_REDIS_PROBE_NO_SOCKET:
        return "no such socket";
    case PKI_REDIS_PROBE_DENIED:
        return "permission denied";
    case PKI_REDIS_PROBE_REFUSED:
        return "connection refused";
    case PKI_REDIS_PROBE_TIMEOUT:
        return "timed out";
    case PKI_REDIS_PROBE_AUTH:
        return r->password != NULL ? "authentication failed"
                                   : "authentication required (no password "
                                     "configured)";
    case PKI_REDIS_PROBE_SELECT:
        return "SELECT failed";
    case PKI_REDIS_PROBE_EVICTS:
        return "a maxmemory-policy that evicts";
    default:
        return "no answer";
    }
}


PKI_API pki_redis_probe_t
pki_redis_probe(pki_redis_t *r, int timeout_ms, pki_result_t *res)
{
    int                 tm, phases;
    char                more[64];
    double              deadline;
    size_t              lens[1];
    const char         *argv[1];
    redisReply         *reply;
    pki_redis_t        *d;
    redisContext       *c;
    pki_result_t        tmp;
    pki_sigpipe_t       sp;
    pki_redis_probe_t   why;

    if (r == NULL || timeout_ms <= 0) {
        pki_fail(res, PKI_INTERNAL, "redis: nothing to probe");
        return PKI_REDIS_PROBE_OTHER;
    }

    /*
     * The whole probe within tm: a name lookup, the connect, the setup
     * (AUTH, SELECT, INFO: one deadline) and the PING each wait at most
     * their share of it.
     */
    tm = timeout_ms < r->timeout_ms ? timeout_ms : r->timeout_ms;
    phases = pki_redis_literal(r) ? 3 : 4;
    tm = tm / phases > 0 ? tm / phases : 1;

    d = pki_int_redis_dup(r, tm, res);
    if (d == NULL) {
        return PKI_REDIS_PROBE_OTHER;
    }

    /* a new connection of its own asks the policy whatever r saw */
    d->policy_at = 0;
    d->aof = -1;

    pki_result_init(&tmp);
    why = PKI_REDIS_PROBE_OK;

    c = pki_redis_open(d, &why, &tmp);

    if (c != NULL) {
        argv[0] = "PING";
        lens[0] = 4;
        deadline = pki_int_now() + tm / 1000.0;

        pki_int_sigpipe_block(&sp);
        reply = pki_redis_setup_cmd(d, c, 1, argv, lens, deadline);
        pki_int_sigpipe_restore(&sp);

        /* NOAUTH: a server with a password that the INFO of a store
         * without one did not refuse as such (INFO refused is taken) */
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            why = pki_redis_reply_why(c, reply, PKI_REDIS_PROBE_OTHER);
            (void) pki_redis_setup_ok(c, reply, "PING", &tmp);

        } else {
            freeReplyObject(reply);
            __atomic_store_n(&r->aof,
                             __atomic_load_n(&d->aof, __ATOMIC_RELAXED),
                             __ATOMIC_RELAXED);
        }

        redisFree(c);

    } else if (why == PKI_REDIS_PROBE_OK) {
        why = PKI_REDIS_PROBE_OTHER;
    }

    pki_redis_free(d);

    if (why != PKI_REDIS_PROBE_OK) {
        if (why == PKI_REDIS_PROBE_TIMEOUT) {
            snprintf(more, sizeof(more), " (the check waits %d ms at most)",
                     tm * phases);
        } else {
            more[0] = '\0';
        }

        pki_fail(res, PKI_UNAVAILABLE, "certificate store unavailable");
        pki_log(res, "%s%s%s: %s",
                res != NULL && res->log[0] != '\0' ? "; " : "",
                pki_redis_probe_words(r, why), more, tmp.log);
    }

    return why;
}


/* Whether user uid (of the groups given) may do want (S_IXOTH: search,
 * S_IWOTH: write) on a file of st, by its mode bits (an ACL aside). */
static int
pki_redis_may(const struct stat *st, uid_t uid, const gid_t *groups,
    int ngroups, mode_t want)
{
    int  i;

    if (st->st_uid == uid) {
        return (st->st_mode & (want << 6)) != 0;
    }

    for (i = 0; i < ngroups; i++) {
        if (st->st_gid == groups[i]) {
            return (st->st_mode & (want << 3)) != 0;
        }
    }

    return (st->st_mode & want) != 0;
}


/* The first directory on path (each one before a "/") that uid may not
 * search, said in bad: 0; all searchable (or not to be judged: not
 * there, a stat that fails): 1. */
static int
pki_redis_dirs_ok(const char *path, uid_t uid, const gid_t *groups,
    int ngroups, char *bad, size_t size)
{
    char         dir[PATH_MAX];
    size_t       i, n, len;
    struct stat  st;

    n = strlen(path);

    if (path[0] != '/' && stat(".", &st) == 0
        && !pki_redis_may(&st, uid, groups, ngroups, S_IXOTH))
    {
        snprintf(bad, size, "no search permission on the working "
                 "directory");
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (path[i] != '/') {
            continue;
        }

        len = (i == 0) ? 1 : i;     /* "/" itself, else up to this "/" */
        if (len >= sizeof(dir)) {
            return 1;
        }

        memcpy(dir, path, len);
        dir[len] = '\0';

        if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)
            && !pki_redis_may(&st, uid, groups, ngroups, S_IXOTH))
        {
            snprintf(bad, size, "no search permission on directory "
                     "\"%.1024s\" "
                     "(mode %04o, uid %lu, gid %lu)", dir,
                     (unsigned) (st.st_mode & 07777),
                     (unsigned long) st.st_uid, (unsigned long) st.st_gid);
            return 0;
        }
    }

    return 1;
}


PKI_API pki_redis_probe_t
pki_redis_probe_user(pki_redis_t *r, int timeout_ms, const char *user,
    unsigned long uid, unsigned long gid, pki_result_t *res)
{
    int                 ngroups;
    char                bad[1280], real[PATH_MAX];
    gid_t               groups[1024];
    struct stat         st;
    pki_redis_probe_t   why;

    why = pki_redis_probe(r, timeout_ms, res);

    /* root connects to any socket; the workers, as user, may not: what
     * they meet is judged here, by the files' modes */
    if (why != PKI_REDIS_PROBE_OK || r->unix_path == NULL
        || geteuid() != 0 || uid == 0 || user == NULL)
    {
        return why;
    }

    ngroups = (int) (sizeof(groups) / sizeof(groups[0]));
    if (getgrouplist(user, (gid_t) gid, groups, &ngroups) == -1) {
        return why;     /* more groups than that: not judged */
    }

    bad[0] = '\0';

    if (!pki_redis_dirs_ok(r->unix_path, (uid_t) uid, groups, ngroups, bad,
                           sizeof(bad))
        || (realpath(r->unix_path, real) != NULL
            && !pki_redis_dirs_ok(real, (uid_t) uid, groups, ngroups, bad,
                                  sizeof(bad))))
    {
        /* bad says which */

    } else if (stat(r->unix_path, &st) == 0
               && !pki_redis_may(&st, (uid_t) uid, groups, ngroups, S_IWOTH))
    {
        snprintf(bad, sizeof(bad), "no write permission on the socket "
                 "(mode %04o, uid %lu, gid %lu)",
                 (unsigned) (st.st_mode & 07777), (unsigned long) st.st_uid,
                 (unsigned long) st.st_gid);

    } else {
        return why;
    }

    if (res != NULL) {
        pki_result_init(res);
    }

    pki_fail(res, PKI_UNAVAILABLE, "certificate store unavailable");
    pki_log(res, "%s: unix socket \"%s\": the workers run as %s (uid %lu, "
            "gid %lu), which may not connect to it (root, running this "
            "check, may): %s",
            pki_redis_probe_words(r, PKI_REDIS_PROBE_DENIED), r->unix_path,
            user, uid, gid, bad);

    return PKI_REDIS_PROBE_DENIED;
}


PKI_API int
pki_redis_same(const pki_redis_t *a, const pki_redis_t *b)
{
#define pki_redis_same_str(x, y)                                              \
    ((x) == NULL ? (y) == NULL : (y) != NULL && strcmp(x, y) == 0)

    return a != NULL && b != NULL
           && pki_redis_same_str(a->unix_path, b->unix_path)
           && pki_redis_same_str(a->host, b->host)
           && (a->unix_path != NULL || a->port == b->port)
           && a->db == b->db
           && pki_redis_same_str(a->password, b->password);

#undef pki_redis_same_str
}


/* ---- keys --------------------------------------------------------------- */

/* Validates ca and serial and builds "<ns>{ca:CA}:<what>[SERIAL]".
 * serial_out (41 bytes) receives the canonical serial if not NULL. */
static int
pki_redis_key(const pki_redis_t *r, const char *ca, const char *what,
    const char *serial, char *buf, size_t size, char *serial_out,
    pki_result_t *res)
{
    char  canon[41];
    int   n;

    if (ca == NULL || *ca == '\0' || strlen(ca) >= 64
        || strpbrk(ca, "{}") != NULL)
    {
        pki_fail(res, PKI_INTERNAL, "redis: bad CA name");
        return 0;
    }

    canon[0] = '\0';

    if (serial != NULL) {
        if (!pki_serial_normalize(serial, canon)) {
            pki_fail(res, PKI_MALFORMED, "bad serial number");
            return 0;
        }
        if (serial_out != NULL) {
            memcpy(serial_out, canon, sizeof(canon));
        }
    }

    n = snprintf(buf, size, "%s{ca:%s}:%s%s", r->ns, ca, what, canon);
    if (n < 0 || (size_t) n >= size) {
        pki_fail(res, PKI_INTERNAL, "redis: key too long");
        return 0;
    }

    return 1;
}


typedef struct {
    int          argc;
    const char  *argv[PKI_REDIS_ARGS_MAX];
    size_t       lens[PKI_REDIS_ARGS_MAX];
    char         nums[12][24];
    int          nnums;
} pki_args_t;


static void
pki_args_add(pki_args_t *a, const char *s, size_t len)
{
    if (a->argc < PKI_REDIS_ARGS_MAX) {
        a->argv[a->argc] = s != NULL ? s : "";
        a->lens[a->argc] = s != NULL ? len : 0;
        a->argc++;
    }
}


static void
pki_args_str(pki_args_t *a, const char *s)
{
    pki_args_add(a, s, s != NULL ? strlen(s) : 0);
}


static void
pki_args_num(pki_args_t *a, long long v)
{
    char  *p;

    if (a->nnums >= (int) (sizeof(a->nums) / sizeof(a->nums[0]))) {
        a->argc = PKI_REDIS_ARGS_MAX;   /* broken: never sent */
        return;
    }

    p = a->nums[a->nnums++];
    snprintf(p, sizeof(a->nums[0]), "%lld", v);
    pki_args_str(a, p);
}


static void
pki_args_field(pki_args_t *a, const char *name, const char *value)
{
    pki_args_str(a, name);
    pki_args_str(a, value);
}


/* Runs a script that returns an integer. */
static pki_status_t
pki_redis_eval(pki_redis_t *r, pki_args_t *a, long long *out,
    pki_result_t *res)
{
    redisReply  *reply;

    if (a->argc >= PKI_REDIS_ARGS_MAX) {
        return pki_fail(res, PKI_INTERNAL, "redis: too many arguments");
    }

    reply = pki_redis_cmd(r, a->argc, a->argv, a->lens, res);
    if (reply == NULL) {
        return res != NULL ? res->status : PKI_UNAVAILABLE;
    }

    if (reply->type != REDIS_REPLY_INTEGER) {
        freeReplyObject(reply);
        pki_redis_drop(r);
        return pki_redis_unavailable(res, "EVAL", "unexpected reply type");
    }

    *out = reply->integer;
    freeReplyObject(reply);

    return PKI_OK;
}


static int
pki_record_strings_ok(const pki_record_t *rec, pki_result_t *res)
{
    const char  *s[4];
    int          i;

    s[0] = rec->subject;
    s[1] = rec->sans;
    s[2] = rec->requester;
    s[3] = rec->client;

    for (i = 0; i < 4; i++) {
        if (s[i] != NULL && strlen(s[i]) > PKI_REDIS_FIELD_MAX) {
            pki_fail(res, PKI_TOO_LARGE, "certificate record too large");
            return 0;
        }
    }

    if (rec->der_len > PKI_REDIS_FIELD_MAX) {
        pki_fail(res, PKI_TOO_LARGE, "certificate record too large");
        return 0;
    }

    return 1;
}


/* ---- records ------------------------------------------------------------ */

PKI_API pki_status_t
pki_record_reserve(pki_redis_t *r, const pki_record_t *rec,
    pki_result_t *res)
{
    return pki_int_record_reserve_link(r, rec, NULL, NULL, res);
}


/* The reservation's time from its script's answer (see pki_int_rsv_t). */
static void
pki_rsv_set(pki_int_rsv_t *rsv, long long ms)
{
    if (rsv != NULL) {
        rsv->redis_ms = ms > 3 ? ms : 0;    /* 1: an older script's yes */
        rsv->local = pki_int_now();
        rsv->late = 0;
    }
}


/* The commit's deadline in Redis's clock (0: none): Redis's time now is at
 * least the reservation's plus ours since its answer came (the answer's
 * transit makes it an underestimate, which the commit's own answer needs
 * back), and the client waits for the answer the store's timeout. */
static long long
pki_rsv_deadline(const pki_redis_t *r, const pki_int_rsv_t *rsv)
{
    double  dt;

    if (rsv == NULL || rsv->redis_ms <= 0) {
        return 0;
    }

    dt = pki_int_now() - rsv->local;
    if (dt < 0) {
        dt = 0;
    }

    return rsv->redis_ms + (long long) (dt * 1000) + r->timeout_ms;
}


static pki_status_t pki_record_reserve_any(pki_redis_t *r,
    const pki_record_t *rec, pki_int_link_t *link, const char *claim,
    const char *ixkey, int *lost, pki_int_rsv_t *rsv, pki_result_t *res);


pki_status_t
pki_int_record_reserve_link(pki_redis_t *r, const pki_record_t *rec,
    pki_int_link_t *link, pki_int_rsv_t *rsv, pki_result_t *res)
{
    return pki_record_reserve_any(r, rec, link, NULL, NULL, NULL, rsv, res);
}


pki_status_t
pki_int_record_reserve_ix(pki_redis_t *r, const pki_record_t *rec,
    const char *claim, const char *ixkey, int *lost, pki_int_rsv_t *rsv,
    pki_result_t *res)
{
    *lost = 0;

    if (claim == NULL || ixkey == NULL
        || strlen(ixkey) >= PKI_REDIS_KEY_MAX)
    {
        return pki_fail(res, PKI_INTERNAL, "redis: bad index key");
    }

    return pki_record_reserve_any(r, rec, NULL, claim, ixkey, lost, rsv,
                                  res);
}


static pki_status_t
pki_record_reserve_any(pki_redis_t *r, const pki_record_t *rec,
    pki_int_link_t *link, const char *claim, const char *ixkey, int *lost,
    pki_int_rsv_t *rsv, pki_result_t *res)
{
    pki_args_t    a;
    pki_status_t  st;
    long long     rc, ttl;
    time_t        created;
    char          kserial[PKI_REDIS_KEY_MAX], kcert[PKI_REDIS_KEY_MAX];
    char          kprefix[PKI_REDIS_KEY_MAX], serial[41];

    if (r == NULL || rec == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store or record");
    }

    if (!pki_redis_key(r, rec->ca, "serial:", rec->serial, kserial,
                       sizeof(kserial), serial, res)
        || !pki_redis_key(r, rec->ca, "cert:", rec->serial, kcert,
                          sizeof(kcert), NULL, res)
        || !pki_redis_key(r, rec->ca, "cert:", NULL, kprefix,
                          sizeof(kprefix), NULL, res)
        || !pki_record_strings_ok(rec, res))
    {
        return res != NULL ? res->status : PKI_INTERNAL;
    }

    created = rec->created != 0 ? rec->created : time(NULL);

    memset(&a, 0, sizeof(a));
    pki_args_str(&a, "EVAL");

    if (ixkey != NULL) {
        pki_args_str(&a, pki_lua_reserve_ix);
        pki_args_str(&a, "3");
        pki_args_str(&a, kserial);
        pki_args_str(&a, kcert);
        pki_args_str(&a, ixkey);
        pki_args_num(&a, (long long) created);
        pki_args_str(&a, claim);
        pki_args_str(&a, serial);

    } else if (link == NULL) {
        pki_args_str(&a, pki_lua_reserve);
        pki_args_str(&a, "2");
        pki_args_str(&a, kserial);
        pki_args_str(&a, kcert);
        pki_args_num(&a, (long long) created);

    } else {
        /* the link lives as long as the order may be asked for its
         * certificate: until the certificate's end, and a day */
        ttl = (long long) rec->not_after - (long long) created + 86400;
        link->found = 0;

        pki_args_str(&a, pki_lua_reserve_link);
        pki_args_str(&a, "3");
        pki_args_str(&a, kserial);
        pki_args_str(&a, kcert);
        pki_args_str(&a, link->key);
        pki_args_num(&a, (long long) created);
        pki_args_str(&a, serial);
        pki_args_str(&a, link->token);
        pki_args_num(&a, link->stale);
        pki_args_num(&a, ttl > 86400 ? ttl : 86400);
        pki_args_str(&a, kprefix);
    }

    pki_args_field(&a, "serial", serial);
    pki_args_field(&a, "ca", rec->ca);
    pki_args_field(&a, "template", rec->template_name);
    pki_args_field(&a, "subject", rec->subject);
    pki_args_field(&a, "sans", rec->sans);
    pki_args_field(&a, "requester", rec->requester);
    pki_args_field(&a, "client", rec->client);
    pki_args_field(&a, "protocol", rec->protocol);
    if (rec->realm[0] != '\0') {
        pki_args_field(&a, "realm", rec->realm);
    }
    pki_args_field(&a, "status", "pending");
    pki_args_str(&a, "reason");
    pki_args_num(&a, 0);
    pki_args_str(&a, "revoked_at");
    pki_args_num(&a, 0);
    pki_args_str(&a, "not_before");
    pki_args_num(&a, (long long) rec->not_before);
    pki_args_str(&a, "not_after");
    pki_args_num(&a, (long long) rec->not_after);
    pki_args_str(&a, "created");
    pki_args_num(&a, (long long) created);

    st = pki_redis_eval(r, &a, &rc, res);
    if (st != PKI_OK) {
        return st;
    }

    if (link != NULL && (rc == 2 || rc == 3)) {
        link->found = (int) rc;
        return pki_fail(res, PKI_CONFLICT, rc == 2
                        ? "the order's certificate is already recorded"
                        : "another finalization of the order is running");
    }

    if (ixkey != NULL && rc == -1) {
        *lost = 1;
        return pki_fail(res, PKI_CONFLICT, "the key's index entry is not "
                        "this issuance's claim (lost, or taken): not "
                        "reserved");
    }

    if (rc != 1 && rc <= 3) {
        return pki_fail(res, PKI_CONFLICT, "serial number already used");
    }

    pki_rsv_set(rsv, rc);

    return PKI_OK;
}


/* The serial an order's link names (pki_int_record_reserve_link): PKI_OK
 * with serial filled, PKI_NOT_FOUND, or PKI_UNAVAILABLE. */
pki_status_t
pki_int_link_serial(pki_redis_t *r, const char *key, char serial[41],
    pki_result_t *res)
{
    redisReply    *reply;
    pki_status_t   st;
    const char    *argv[3];
    size_t         lens[3];

    argv[0] = "HGET";
    argv[1] = key;
    argv[2] = "s";
    lens[0] = 4;
    lens[1] = strlen(key);
    lens[2] = 1;

    reply = pki_redis_cmd(r, 3, argv, lens, res);
    if (reply == NULL) {
        return res != NULL ? res->status : PKI_UNAVAILABLE;
    }

    st = PKI_NOT_FOUND;
    if (reply->type == REDIS_REPLY_STRING
        && pki_serial_normalize(reply->str, serial))
    {
        st = PKI_OK;
    }

    freeReplyObject(reply);

    return st;
}


PKI_API pki_status_t
pki_record_commit(pki_redis_t *r, const pki_record_t *rec,
    pki_result_t *res)
{
    return pki_int_record_commit_by(r, rec, NULL, NULL, NULL, NULL, 0, NULL,
                                    0, res);
}


pki_status_t
pki_int_record_commit_carry(pki_redis_t *r, const pki_record_t *rec,
    const char *stream, const char *time, const char *body, size_t blen,
    char *rid, size_t ridsize, pki_result_t *res)
{
    return pki_int_record_commit_by(r, rec, NULL, stream, time, body, blen,
                                    rid, ridsize, res);
}


pki_status_t
pki_int_record_commit_by(pki_redis_t *r, const pki_record_t *rec,
    pki_int_rsv_t *rsv, const char *stream, const char *time,
    const char *body, size_t blen, char *rid, size_t ridsize,
    pki_result_t *res)
{
    pki_args_t    a;
    pki_status_t  st;
    long long     rc;
    redisReply   *reply;
    char          kcert[PKI_REDIS_KEY_MAX], kexp[PKI_REDIS_KEY_MAX];
    char          serial[41];

    if (r == NULL || rec == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store or record");
    }

    if (rec->der == NULL || rec->der_len == 0) {
        return pki_fail(res, PKI_INTERNAL, "redis: commit without a "
                        "certificate");
    }

    if (!pki_redis_key(r, rec->ca, "cert:", rec->serial, kcert,
                       sizeof(kcert), serial, res)
        || !pki_redis_key(r, rec->ca, "expiry", NULL, kexp, sizeof(kexp),
                          NULL, res)
        || !pki_record_strings_ok(rec, res))
    {
        return res != NULL ? res->status : PKI_INTERNAL;
    }

    memset(&a, 0, sizeof(a));
    pki_args_str(&a, "EVAL");
    pki_args_str(&a, stream != NULL ? pki_lua_commit_carry : pki_lua_commit);
    pki_args_str(&a, stream != NULL ? "3" : "2");
    pki_args_str(&a, kcert);
    pki_args_str(&a, kexp);
    if (stream != NULL) {
        pki_args_str(&a, stream);
    }
    pki_args_num(&a, (long long) rec->not_after);
    pki_args_str(&a, serial);
    if (stream != NULL) {
        pki_args_str(&a, time);
        pki_args_add(&a, body, blen);
        pki_args_num(&a, (long long) pki_int_pid());
    }

    if (rsv != NULL) {
        rsv->late = 0;
    }

    /* last: the later it is taken, the more time the commit has */
    pki_args_num(&a, pki_rsv_deadline(r, rsv));

    pki_args_str(&a, "der");
    pki_args_add(&a, (const char *) rec->der, rec->der_len);
    pki_args_field(&a, "status", "good");
    pki_args_str(&a, "not_before");
    pki_args_num(&a, (long long) rec->not_before);
    pki_args_str(&a, "not_after");
    pki_args_num(&a, (long long) rec->not_after);

    if (rec->subject != NULL) {
        pki_args_field(&a, "subject", rec->subject);
    }

    if (rec->sans != NULL) {
        pki_args_field(&a, "sans", rec->sans);
    }

    if (stream == NULL) {
        st = pki_redis_eval(r, &a, &rc, res);
        if (st != PKI_OK) {
            return st;
        }

    } else {
        if (a.argc >= PKI_REDIS_ARGS_MAX) {
            return pki_fail(res, PKI_INTERNAL, "redis: too many arguments");
        }

        reply = pki_redis_cmd(r, a.argc, a.argv, a.lens, res);
        if (reply == NULL) {
            return res != NULL ? res->status : PKI_UNAVAILABLE;
        }

        if (reply->type == REDIS_REPLY_STRING && reply->len > 0
            && reply->len < ridsize)
        {
            memcpy(rid, reply->str, reply->len);
            rid[reply->len] = '\0';
            rc = 1;

        } else if (reply->type == REDIS_REPLY_INTEGER
                   && reply->integer != 1)
        {
            rc = reply->integer;

        } else {
            freeReplyObject(reply);
            pki_redis_drop(r);
            return pki_redis_unavailable(res, "EVAL",
                                         "unexpected reply type");
        }

        freeReplyObject(reply);
    }

    if (rc == 0) {
        pki_fail(res, PKI_UNAVAILABLE, "record vanished");
        pki_log(res, "%sredis: record %s of CA \"%s\" is gone (flushed?)",
                (res != NULL && res->log[0] != '\0') ? "; " : "", serial,
                rec->ca);
        return PKI_UNAVAILABLE;
    }

    if (rc == -2) {
        if (rsv != NULL) {
            rsv->late = 1;
        }
        pki_fail(res, PKI_UNAVAILABLE, "certificate store too slow");
        pki_log(res, "%sredis: the commit of record %s of CA \"%s\" ran "
                "past its deadline: not committed",
                (res != NULL && res->log[0] != '\0') ? "; " : "", serial,
                rec->ca);
        return PKI_UNAVAILABLE;
    }

    if (rc != 1) {
        pki_fail(res, PKI_CONFLICT, "record is not pending");
        pki_log(res, "%sredis: record %s of CA \"%s\" is not pending",
                (res != NULL && res->log[0] != '\0') ? "; " : "", serial,
                rec->ca);
        return PKI_CONFLICT;
    }

    return PKI_OK;
}


PKI_API pki_status_t
pki_record_abandon(pki_redis_t *r, const char *ca, const char *serial,
    pki_result_t *res)
{
    pki_args_t  a;
    long long   rc;
    char        kcert[PKI_REDIS_KEY_MAX];

    if (r == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store");
    }

    if (serial == NULL
        || !pki_redis_key(r, ca, "cert:", serial, kcert, sizeof(kcert),
                          NULL, res))
    {
        return pki_fail(res, PKI_INTERNAL, "redis: bad CA or serial");
    }

    memset(&a, 0, sizeof(a));
    pki_args_str(&a, "EVAL");
    pki_args_str(&a, pki_lua_abandon);
    pki_args_str(&a, "1");
    pki_args_str(&a, kcert);

    return pki_redis_eval(r, &a, &rc, res);
}


pki_status_t
pki_int_record_abandon_ix(pki_redis_t *r, const char *ca,
    const char *serial, const char *ixkey, pki_result_t *res)
{
    pki_args_t  a;
    long long   rc;
    char        kcert[PKI_REDIS_KEY_MAX], canon[41], sv[2 + 41];

    if (r == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store");
    }

    if (ixkey == NULL) {
        return pki_record_abandon(r, ca, serial, res);
    }

    if (serial == NULL
        || !pki_redis_key(r, ca, "cert:", serial, kcert, sizeof(kcert),
                          canon, res))
    {
        return pki_fail(res, PKI_INTERNAL, "redis: bad CA or serial");
    }

    snprintf(sv, sizeof(sv), "s:%s", canon);

    memset(&a, 0, sizeof(a));
    pki_args_str(&a, "EVAL");
    pki_args_str(&a, pki_lua_abandon_ix);
    pki_args_str(&a, "2");
    pki_args_str(&a, kcert);
    pki_args_str(&a, ixkey);
    pki_args_str(&a, sv);

    return pki_redis_eval(r, &a, &rc, res);
}


PKI_API void
pki_record_clear(pki_record_t *rec)
{
    if (rec == NULL) {
        return;
    }

    free(rec->subject);
    free(rec->sans);
    free(rec->requester);
    free(rec->client);
    free(rec->der);
    memset(rec, 0, sizeof(*rec));
}


static int
pki_parse_time(const redisReply *v, time_t *out)
{
    char       buf[24], *end;
    long long  n;

    if (v->len == 0 || v->len >= sizeof(buf)) {
        return 0;
    }

    memcpy(buf, v->str, v->len);
    buf[v->len] = '\0';

    errno = 0;
    n = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0' || n < 0) {
        return 0;
    }

    *out = (time_t) n;
    return 1;
}


static char *
pki_reply_strdup(const redisReply *v)
{
    char  *s;

    if (memchr(v->str, '\0', v->len) != NULL) {
        return NULL;
    }

    s = malloc(v->len + 1);
    if (s != NULL) {
        memcpy(s, v->str, v->len);
        s[v->len] = '\0';
    }

    return s;
}


/* Copies into a fixed buffer; 0 if it does not fit. */
static int
pki_reply_copy(const redisReply *v, char *buf, size_t size)
{
    if (v->len >= size || memchr(v->str, '\0', v->len) != NULL) {
        return 0;
    }

    memcpy(buf, v->str, v->len);
    buf[v->len] = '\0';
    return 1;
}


static int
pki_record_field(pki_record_t *out, const redisReply *k, const redisReply *v)
{
    time_t  t;
    char   *s, **sp;

#define PKI_FIELD(name)  (k->len == sizeof(name) - 1                          \
                          && memcmp(k->str, name, sizeof(name) - 1) == 0)

    if (PKI_FIELD("der")) {
        /* a field twice (a hostile or broken store): the last one counts */
        free(out->der);
        out->der = NULL;
        out->der_len = 0;

        if (v->len == 0) {
            return 1;
        }
        out->der = malloc(v->len);
        if (out->der == NULL) {
            return 0;
        }
        memcpy(out->der, v->str, v->len);
        out->der_len = v->len;
        return 1;
    }

    if (PKI_FIELD("ca")) {
        return pki_reply_copy(v, out->ca, sizeof(out->ca));
    }

    if (PKI_FIELD("template")) {
        return pki_reply_copy(v, out->template_name,
                              sizeof(out->template_name));
    }

    if (PKI_FIELD("protocol")) {
        return pki_reply_copy(v, out->protocol, sizeof(out->protocol));
    }

    if (PKI_FIELD("realm")) {
        return pki_reply_copy(v, out->realm, sizeof(out->realm));
    }

    if (PKI_FIELD("status")) {
        if (v->len == 7 && memcmp(v->str, "pending", 7) == 0) {
            out->status = PKI_CERT_PENDING;
        } else if (v->len == 4 && memcmp(v->str, "good", 4) == 0) {
            out->status = PKI_CERT_GOOD;
        } else if (v->len == 7 && memcmp(v->str, "revoked", 7) == 0) {
            out->status = PKI_CERT_REVOKED;
        } else {
            return 0;
        }
        return 1;
    }

    if (PKI_FIELD("reason")) {
        if (!pki_parse_time(v, &t) || t > 10) {
            return 0;
        }
        out->reason = (int) t;
        return 1;
    }

    if (PKI_FIELD("revoked_at")) {
        return pki_parse_time(v, &out->revoked_at);
    }

    if (PKI_FIELD("invalidity_date")) {
        return pki_parse_time(v, &out->invalidity_date);
    }

    if (PKI_FIELD("plan_at")) {
        return pki_parse_time(v, &out->revoke_planned);
    }

    if (PKI_FIELD("plan_reason")) {
        if (!pki_parse_time(v, &t) || t > 10) {
            return 0;
        }
        out->planned_reason = (int) t;
        return 1;
    }

    if (PKI_FIELD("not_before")) {
        return pki_parse_time(v, &out->not_before);
    }

    if (PKI_FIELD("not_after")) {
        return pki_parse_time(v, &out->not_after);
    }

    if (PKI_FIELD("created")) {
        return pki_parse_time(v, &out->created);
    }

    if (PKI_FIELD("withdrawn")) {
        out->withdrawn = v->len == 1 && v->str[0] == '1';
        return 1;
    }

    sp = NULL;

    if (PKI_FIELD("subject")) {
        sp = &out->subject;
    } else if (PKI_FIELD("sans")) {
        sp = &out->sans;
    } else if (PKI_FIELD("requester")) {
        sp = &out->requester;
    } else if (PKI_FIELD("client")) {
        sp = &out->client;
    }

#undef PKI_FIELD

    if (sp == NULL) {
        return 1;                /* serial, or a field of a later version */
    }

    s = pki_reply_strdup(v);
    if (s == NULL) {
        return 0;
    }

    free(*sp);
    *sp = s;
    return 1;
}


/* Fills out from an HGETALL reply of the record of (ca, canon).
 * PKI_NOT_FOUND for an empty reply. */
static pki_status_t
pki_record_from_reply(const redisReply *reply, const char *ca,
    const char *canon, pki_record_t *out, pki_result_t *res)
{
    const redisReply   *k, *v;
    size_t              i;
    char              **sp[4];
    int                 j;

    memset(out, 0, sizeof(*out));

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 0) {
        return pki_redis_unavailable(res, "HGETALL", "unexpected reply");
    }

    if (reply->elements == 0) {
        return pki_fail(res, PKI_NOT_FOUND, "no such certificate");
    }

    snprintf(out->serial, sizeof(out->serial), "%s", canon);
    snprintf(out->ca, sizeof(out->ca), "%s", ca);

    for (i = 0; i < reply->elements; i += 2) {
        k = reply->element[i];
        v = reply->element[i + 1];

        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING
            || !pki_record_field(out, k, v))
        {
            pki_record_clear(out);
            return pki_fail(res, PKI_INTERNAL, "corrupt certificate record");
        }
    }

    /* Never hand out NULL strings. */
    sp[0] = &out->subject;
    sp[1] = &out->sans;
    sp[2] = &out->requester;
    sp[3] = &out->client;

    for (j = 0; j < 4; j++) {
        if (*sp[j] == NULL) {
            *sp[j] = strdup("");
            if (*sp[j] == NULL) {
                pki_record_clear(out);
                return pki_fail(res, PKI_INTERNAL, "out of memory");
            }
        }
    }

    if (out->status != PKI_CERT_PENDING && out->der == NULL) {
        pki_record_clear(out);
        return pki_fail(res, PKI_INTERNAL, "corrupt certificate record");
    }

    return PKI_OK;
}


PKI_API pki_status_t
pki_record_get(pki_redis_t *r, const char *ca, const char *serial,
    pki_record_t *out, pki_result_t *res)
{
    redisReply    *reply;
    pki_status_t   st;
    const char    *argv[2];
    size_t         lens[2];
    char           kcert[PKI_REDIS_KEY_MAX], canon[41];

    if (out == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no record");
    }

    memset(out, 0, sizeof(*out));

    if (r == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store");
    }

    if (serial == NULL
        || !pki_redis_key(r, ca, "cert:", serial, kcert, sizeof(kcert),
                          canon, res))
    {
        return res != NULL && res->status != PKI_OK ? res->status
               : pki_fail(res, PKI_MALFORMED, "bad serial number");
    }

    argv[0] = "HGETALL";
    argv[1] = kcert;
    lens[0] = 7;
    lens[1] = strlen(kcert);

    reply = pki_redis_cmd(r, 2, argv, lens, res);
    if (reply == NULL) {
        return res != NULL ? res->status : PKI_UNAVAILABLE;
    }

    st = pki_record_from_reply(reply, ca, canon, out, res);
    freeReplyObject(reply);

    if (st == PKI_UNAVAILABLE) {
        pki_redis_drop(r);
    }

    return st;
}


/* ---- revocation --------------------------------------------------------- */

/*
 * KEYS[1] record, KEYS[2] revoked hash, KEYS[3] revgen, KEYS[4] the CA's
 * plan; ARGV[1] serial, ARGV[2] reason, ARGV[3] revocation time, ARGV[4]
 * invalidity date, ARGV[5] the request's id (random), ARGV[6] the
 * caller's clock (now: the later of it and the store's, PKI_LUA_SECS).
 * A good record whose planned revocation is due (plan_at <= now) is
 * revoked already, as every reader has said since the planned time
 * (pki_record_at): only the plan's own carry-out (that reason at that
 * time, by worker 0, which also logs it) writes it; any other request is
 * one on a revoked certificate (-1, nothing written: a hold, another
 * reason or time must not undo or move a revocation that OCSP and the
 * CRL have published).  The carry-out leaves revgen alone: it changes no
 * answer (a good OCSP answer ends at the plan, the CRLs built since list
 * it, with this date and reason), and a bump would rebuild the CRL after
 * every batch of carry-outs, each build reading all the plans still due.
 * Returns 1 revoked (or hold changed), 2 hold released, 0 no record (or
 * pending), -1 already revoked, -2 removeFromCRL without a hold, -3 hold on
 * a hold, 16 * AT + R a hold released after the time AT of its planned
 * revocation (reason R), which is carried out instead.  Changing a hold
 * into a final reason keeps the time the hold was placed (the certificate
 * has been unusable since then), and the hold's invalidity date unless
 * the change brings one.
 *
 * A hold is temporary: it keeps a plan (plan_at, plan_reason stay in the
 * record; pki_lua_plan_due drops the serial from the CA's plan if the
 * plan comes due during the hold), and its release puts the plan back,
 * or, when the plan's time has come, revokes the certificate as the
 * plan's carry-out would have (that reason, dated at the planned time)
 * rather than make it good: a hold and a release must not cancel a
 * planned revocation.  That release bumps revgen (the hold's entry
 * changes).  A final revocation drops the plan.
 *
 * The change stores the request's id (rev_req): the same request run
 * again (its answer was lost, hiredis sent it anew) finds it and answers
 * what it answered the first time, not "already revoked" or "not on hold"
 * for a change that it made itself.
 *
 * Each change also leaves a mark, rev_unlogged ("ID REASON INVALIDITY"),
 * which its caller removes once the change's transaction log entry is
 * durable (pki_lua_revoke_logged).  A change that Redis made after its
 * caller gave up (the store stalled past timeout=: the client was told
 * 503) keeps it, and so has no entry.  A later request for the same
 * change (reason and invalidity date) takes such a change as its own,
 * as the same request run again would (the mark then holds its id): it
 * answers success and its caller writes the missing entry.  Two such
 * requests at once may both log it: the log says a change twice rather
 * than never.
 */
static const char  pki_lua_revoke[] =
    PKI_LUA_WANT("KEYS[2]", "hash")
    PKI_LUA_WANT_COUNT("KEYS[3]")
    PKI_LUA_WANT("KEYS[4]", "zset")
    "local st = redis.call('HGET', KEYS[1], 'status') "
    "if not st or st == 'pending' then return 0 end "
    "local um = ARGV[2] .. ' ' .. ARGV[4] "
    "local mark = ARGV[5] .. ' ' .. um "
    "local mine = redis.call('HGET', KEYS[1], 'rev_req') == ARGV[5] "
    "local m = redis.call('HGET', KEYS[1], 'rev_unlogged') "
    "if not mine and m and string.sub(m, 34) == um "
    "   and (st == 'revoked' or ARGV[2] == '8') then "
    "  redis.call('HSET', KEYS[1], 'rev_unlogged', mark) "
    "  mine = true "
    "end "
    "if mine then "
    "  if ARGV[2] ~= '8' then return 1 end "
    "  if st == 'good' then return 2 end "
    "  local f = redis.call('HMGET', KEYS[1], 'revoked_at', 'reason') "
    "  return tonumber(f[1]) * 16 + tonumber(f[2]) "
    "end "
    PKI_LUA_SECS("ARGV[6]")
    "local at, inv, carry = ARGV[3], ARGV[4], false "
    "local p = redis.call('HMGET', KEYS[1], 'plan_at', 'plan_reason') "
    "if (p[1] and not tonumber(p[1])) or (p[2] and not tonumber(p[2])) "
    "then return redis.error_reply('the plan of the record is not a "
    "number') end "
    "if st == 'good' then "
    "  if p[1] and tonumber(p[1]) <= now then "
    "    if p[1] ~= ARGV[3] or p[2] ~= ARGV[2] then return -1 end "
    "    carry = true "
    "  end "
    "end "
    "if st == 'revoked' then "
    "  if redis.call('HGET', KEYS[1], 'reason') ~= '6' then return -1 end "
    "  if ARGV[2] == '8' then "
    "    redis.call('HDEL', KEYS[2], ARGV[1]) "
    "    " PKI_LUA_BUMP("KEYS[3]")
    "    if not (p[1] and p[2]) then "
    "      redis.call('HSET', KEYS[1], 'status', 'good', 'reason', '0', "
    "                 'revoked_at', '0', 'invalidity_date', '0', "
    "                 'rev_req', ARGV[5], 'rev_unlogged', mark) "
    "      return 2 "
    "    end "
    "    if tonumber(p[1]) > now then "
    "      redis.call('HSET', KEYS[1], 'status', 'good', 'reason', '0', "
    "                 'revoked_at', '0', 'invalidity_date', '0', "
    "                 'rev_req', ARGV[5], 'rev_unlogged', mark) "
    "      redis.call('ZADD', KEYS[4], p[1], ARGV[1]) "
    "      return 2 "
    "    end "
    "    redis.call('HSET', KEYS[1], 'status', 'revoked', 'reason', p[2], "
    "               'revoked_at', p[1], 'invalidity_date', '0', "
    "               'rev_req', ARGV[5], 'rev_unlogged', mark) "
    "    redis.call('HDEL', KEYS[1], 'plan_at', 'plan_reason', 'plan_by') "
    "    redis.call('HSET', KEYS[2], ARGV[1], p[2] .. ' ' .. p[1] .. ' 0') "
    "    redis.call('ZREM', KEYS[4], ARGV[1]) "
    "    return tonumber(p[1]) * 16 + tonumber(p[2]) "
    "  end "
    "  if ARGV[2] == '6' then return -3 end "
    "  at = redis.call('HGET', KEYS[1], 'revoked_at') or ARGV[3] "
    "  if inv == '0' then "
    "    inv = redis.call('HGET', KEYS[1], 'invalidity_date') or '0' "
    "  end "
    "elseif st ~= 'good' then "
    "  return -1 "
    "elseif ARGV[2] == '8' then "
    "  return -2 "
    "end "
    "redis.call('HSET', KEYS[1], 'status', 'revoked', 'reason', ARGV[2], "
    "           'revoked_at', at, 'invalidity_date', inv, 'rev_req', ARGV[5], "
    "           'rev_unlogged', mark) "
    "if ARGV[2] ~= '6' then "
    "  redis.call('HDEL', KEYS[1], 'plan_at', 'plan_reason', 'plan_by') "
    "  redis.call('ZREM', KEYS[4], ARGV[1]) "
    "end "
    "redis.call('HSET', KEYS[2], ARGV[1], "
    "           ARGV[2] .. ' ' .. at .. ' ' .. inv) "
    "if not carry then " PKI_LUA_BUMP("KEYS[3]") "end "
    "return 1";


static pki_status_t
pki_record_revoke_do(pki_redis_t *r, const char *ca, const char *serial,
    int reason, time_t when, time_t invalidity_date, pki_record_t *out,
    int *done, char *rid, pki_result_t *res);
static void pki_record_revoke_logged(pki_redis_t *r, const char *ca,
    const char *serial, const char *rid, pki_result_t *res);


/* The audit hook (core/audit.c): every revocation change is logged and
 * counted here, whoever asked (admin API, ACME revokeCert, ...).  A miss
 * (PKI_NOT_FOUND: callers probe CA after CA) is not an event. */
static pki_status_t pki_record_revoke_gated(pki_redis_t *r, const char *ca,
    const char *serial, int reason, time_t when, time_t invalidity_date,
    pki_record_t *out, int gate, pki_result_t *res);


PKI_API pki_status_t
pki_record_revoke(pki_redis_t *r, const char *ca, const char *serial,
    int reason, time_t when, time_t invalidity_date, pki_record_t *out,
    pki_result_t *res)
{
    return pki_record_revoke_gated(r, ca, serial, reason, when,
                                   invalidity_date, out, 1, res);
}


/*
 * The withdrawal of a certificate recorded good but not handed out
 * (pki_int_issue_withdraw): revoked, cessationOfOperation, also while the
 * transaction log takes nothing, which is often why it is withdrawn (its
 * issuance entry was refused, the backlog is full).  It only lowers
 * trust, so it does not wait for the log; its entry is logged when the
 * log can take it, else the refusal is said in res.
 */
pki_status_t
pki_int_record_withdraw(pki_redis_t *r, const char *ca, const char *serial,
    pki_result_t *res)
{
    return pki_record_revoke_gated(r, ca, serial, 5, 0, 0, NULL, 0, res);
}


static pki_status_t
pki_record_revoke_gated(pki_redis_t *r, const char *ca, const char *serial,
    int reason, time_t when, time_t invalidity_date, pki_record_t *out,
    int gate, pki_result_t *res)
{
    int           done;
    char          canon[41], why_buf[96], when_buf[PKI_RFC3339_LEN];
    char          rid[33];
    const char   *why;
    pki_event_t   ev;
    pki_status_t  st;
    pki_result_t  ares;

    done = reason;
    rid[0] = '\0';

    if (!gate || pki_int_audit_ready(&why)) {
        st = pki_record_revoke_do(r, ca, serial, reason, when,
                                  invalidity_date, out, &done, rid, res);

    } else {
        /* a transaction log is configured and not open, or full (see
         * pki_issue): no change that it could not hold */
        st = pki_fail(res, PKI_UNAVAILABLE, "transaction log unavailable");
        pki_log(res, "transaction log: %s", why);
    }

    if (st == PKI_NOT_FOUND) {
        return st;
    }

    memset(&ev, 0, sizeof(ev));
    ev.type = PKI_EV_REVOKE;
    ev.status = st;
    ev.operation = reason == 8 ? "release" : "revoke";
    ev.ca = ca;
    ev.serial = (serial && pki_serial_normalize(serial, canon)) ? canon
                                                                : serial;
    ev.reason = st == PKI_OK ? pki_int_reason_name(reason)
                             : (res ? res->detail : NULL);

    if (st == PKI_OK && done != reason) {
        /* a release after the time of the certificate's planned
         * revocation revoked it (pki_lua_revoke): said as what it did */
        snprintf(why_buf, sizeof(why_buf), "planned %s, due",
                 pki_int_reason_name(done));
        ev.reason = why_buf;

    } else if (st == PKI_OK && invalidity_date > 0 && reason != 8
               && pki_format_rfc3339(invalidity_date, when_buf))
    {
        /* the claim of since when the key is compromised (RFC 5280
         * 5.3.2), which may be backdated, is in the log with the rest */
        snprintf(why_buf, sizeof(why_buf), "%s, invalid since %s",
                 pki_int_reason_name(reason), when_buf);
        ev.reason = why_buf;
        ev.reason_label = pki_int_reason_name(reason);
    }

    pki_result_init(&ares);

    if (pki_event_emit(&ev, st == PKI_OK, &ares) != PKI_OK) {
        if (st == PKI_OK) {
            /* the record keeps its mark: a retry writes the entry */
            pki_log(res, "%stransaction log: %s %s", res && res->log[0]
                    ? "; " : "", ares.detail, ares.log);
        }

    } else if (st == PKI_OK && rid[0] != '\0') {
        pki_record_revoke_logged(r, ca, ev.serial, rid, res);
    }

    return st;
}


/* The change of request rid is in the transaction log: its record's mark
 * goes (pki_lua_revoke), unless a later change has put its own there.
 * KEYS[1] record, ARGV[1] the request's id. */
static const char  pki_lua_revoke_logged[] =
    "local m = redis.call('HGET', KEYS[1], 'rev_unlogged') "
    "if m and string.sub(m, 1, 32) == ARGV[1] then "
    "  redis.call('HDEL', KEYS[1], 'rev_unlogged') "
    "  return 1 "
    "end "
    "return 0";


static void
pki_record_revoke_logged(pki_redis_t *r, const char *ca, const char *serial,
    const char *rid, pki_result_t *res)
{
    long long     rc;
    pki_args_t    a;
    pki_result_t  lres;
    char          kcert[PKI_REDIS_KEY_MAX];

    pki_result_init(&lres);

    if (!pki_redis_key(r, ca, "cert:", serial, kcert, sizeof(kcert), NULL,
                       &lres))
    {
        return;
    }

    memset(&a, 0, sizeof(a));
    pki_args_str(&a, "EVAL");
    pki_args_str(&a, pki_lua_revoke_logged);
    pki_args_str(&a, "1");
    pki_args_str(&a, kcert);
    pki_args_str(&a, rid);

    if (pki_redis_eval(r, &a, &rc, &lres) != PKI_OK) {
        /* the change and its entry stand; a retry logs it once more */
        pki_log(res, "%sredis: the mark of %s (not yet logged) stays: %s "
                "%s", res != NULL && res->log[0] != '\0' ? "; " : "",
                serial, lres.detail, lres.log);
    }
}


static pki_status_t
pki_record_revoke_do(pki_redis_t *r, const char *ca, const char *serial,
    int reason, time_t when, time_t invalidity_date, pki_record_t *out,
    int *done, char *rid, pki_result_t *res)
{
    size_t         i;
    pki_args_t     a;
    pki_status_t   st;
    long long      rc;
    pki_result_t   gres;
    unsigned char  rnd[16];
    char           kcert[PKI_REDIS_KEY_MAX], krev[PKI_REDIS_KEY_MAX];
    char           kgen[PKI_REDIS_KEY_MAX], kplan[PKI_REDIS_KEY_MAX];
    char           canon[41];

    if (out != NULL) {
        memset(out, 0, sizeof(*out));
    }

    if (r == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store");
    }

    if (reason < 0 || reason > 10 || reason == 7) {
        return pki_fail(res, PKI_MALFORMED, "bad revocation reason");
    }

    if (when < 0 || invalidity_date < 0) {
        return pki_fail(res, PKI_MALFORMED, "bad revocation time");
    }

    if (serial == NULL
        || !pki_redis_key(r, ca, "cert:", serial, kcert, sizeof(kcert),
                          canon, res)
        || !pki_redis_key(r, ca, "revoked", NULL, krev, sizeof(krev), NULL,
                          res)
        || !pki_redis_key(r, ca, "revgen", NULL, kgen, sizeof(kgen), NULL,
                          res)
        || !pki_redis_key(r, ca, "revplan", NULL, kplan, sizeof(kplan), NULL,
                          res))
    {
        return res != NULL && res->status != PKI_OK ? res->status
               : pki_fail(res, PKI_MALFORMED, "bad serial number");
    }

    if (when == 0) {
        when = time(NULL);
    }

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return pki_fail(res, PKI_INTERNAL, "cannot make a request id");
    }

    for (i = 0; i < sizeof(rnd); i++) {
        snprintf(rid + 2 * i, 3, "%02x", rnd[i]);
    }

    memset(&a, 0, sizeof(a));
    pki_args_str(&a, "EVAL");
    pki_args_str(&a, pki_lua_revoke);
    pki_args_str(&a, "4");
    pki_args_str(&a, kcert);
    pki_args_str(&a, krev);
    pki_args_str(&a, kgen);
    pki_args_str(&a, kplan);
    pki_args_str(&a, canon);
    pki_args_num(&a, reason);
    pki_args_num(&a, (long long) when);
    pki_args_num(&a, (long long) invalidity_date);
    pki_args_str(&a, rid);
    pki_args_num(&a, (long long) time(NULL));

    st = pki_redis_eval(r, &a, &rc, res);
    if (st != PKI_OK) {
        return st;
    }

    if (rc >= 16) {
        /* released after its plan's time: revoked by the plan instead */
        reason = (int) (rc % 16);
        when = (time_t) (rc / 16);
        invalidity_date = 0;
        rc = 1;

    } else if (rc == 2) {
        reason = 8;
    }

    if (done != NULL) {
        *done = reason;
    }

    switch (rc) {
    case 1:
    case 2:
        break;
    case 0:
        return pki_fail(res, PKI_NOT_FOUND, "no such certificate");
    case -2:
        return pki_fail(res, PKI_CONFLICT, "certificate is not on hold");
    case -3:
        return pki_fail(res, PKI_CONFLICT, "certificate is already on hold");
    default:
        return pki_fail(res, PKI_CONFLICT, "certificate is already revoked");
    }

    if (out == NULL) {
        return PKI_OK;
    }

    /* The change is made: a record that cannot be read now does not make
     * it a failure.  The caller gets what the change set. */
    pki_result_init(&gres);
    if (pki_record_get(r, ca, canon, out, &gres) != PKI_OK) {
        pki_log(res, "%sredis: %s of CA \"%s\" is %s, but its record "
                "could not be read: %s %s", (res != NULL
                && res->log[0] != '\0') ? "; " : "", canon, ca,
                rc == 2 ? "released" : "revoked", gres.detail, gres.log);

        pki_record_clear(out);
        memset(out, 0, sizeof(*out));
        snprintf(out->serial, sizeof(out->serial), "%s", canon);
        snprintf(out->ca, sizeof(out->ca), "%s", ca);
        out->status = rc == 2 ? PKI_CERT_GOOD : PKI_CERT_REVOKED;
        out->reason = rc == 2 ? 0 : reason;
        out->revoked_at = rc == 2 ? 0 : when;
        out->invalidity_date = rc == 2 ? 0 : invalidity_date;
    }

    return PKI_OK;
}


/* Planned revocation.  KEYS[1] cert record, KEYS[2] the CA's plan (sorted
 * set: serial by time), KEYS[3] revgen; ARGV[1] serial, ARGV[2] reason,
 * ARGV[3] time, ARGV[4] who planned it, ARGV[5] the caller's clock (now:
 * the later of it and the store's, PKI_LUA_SECS).  1 planned, 0 no
 * record, -1 not good (also: a plan of it is due, so it is revoked for
 * every reader; a new plan must not undo that). */
static const char  pki_lua_plan[] =
    PKI_LUA_WANT("KEYS[2]", "zset")
    PKI_LUA_WANT_COUNT("KEYS[3]")
    "local st = redis.call('HGET', KEYS[1], 'status') "
    "if not st or st == 'pending' then return 0 end "
    "if st ~= 'good' then return -1 end "
    PKI_LUA_SECS("ARGV[5]")
    "local pa = redis.call('HGET', KEYS[1], 'plan_at') "
    "if pa and tonumber(pa) <= now then return -1 end "
    "redis.call('HSET', KEYS[1], 'plan_at', ARGV[3], 'plan_reason', "
    "           ARGV[2], 'plan_by', ARGV[4]) "
    "redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) "
    PKI_LUA_BUMP("KEYS[3]")
    "return 1";


PKI_API pki_status_t
pki_record_plan_revoke(pki_redis_t *r, const char *ca, const char *serial,
    int reason, time_t at, const char *by, pki_record_t *out,
    pki_result_t *res)
{
    pki_args_t    a;
    pki_status_t  st;
    long long     rc;
    pki_result_t  gres;
    char          kcert[PKI_REDIS_KEY_MAX], kplan[PKI_REDIS_KEY_MAX];
    char          kgen[PKI_REDIS_KEY_MAX], canon[41];
    char          when[PKI_RFC3339_LEN], why[96];

    if (out != NULL) {
        memset(out, 0, sizeof(*out));
    }

    if (r == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store");
    }

    /* audited as a revocation is, by the thread's actor (the admin API
     * sets it): not while the log cannot take the entry; a plan is a
     * revocation that needs no later write to take effect (OCSP and the
     * CRL say revoked from its time on, pki_record_at) */
    if (!pki_int_admin_ready(res)) {
        return res != NULL ? res->status : PKI_UNAVAILABLE;
    }

    /* a hold is not planned; a release has nothing to release */
    if (reason < 0 || reason > 10 || reason == 7 || reason == 6
        || reason == 8)
    {
        return pki_fail(res, PKI_MALFORMED, "bad reason for a planned "
                        "revocation");
    }

    if (at <= 0) {
        return pki_fail(res, PKI_MALFORMED, "bad planned revocation time");
    }

    if (serial == NULL
        || !pki_redis_key(r, ca, "cert:", serial, kcert, sizeof(kcert),
                          canon, res)
        || !pki_redis_key(r, ca, "revplan", NULL, kplan, sizeof(kplan), NULL,
                          res)
        || !pki_redis_key(r, ca, "revgen", NULL, kgen, sizeof(kgen), NULL,
                          res))
    {
        return res != NULL && res->status != PKI_OK ? res->status
               : pki_fail(res, PKI_MALFORMED, "bad serial number");
    }

    /* a plan changes what a status answer says (its nextUpdate ends at
     * the plan), so it bumps the revocation generation: cached OCSP
     * answers made before it are dropped fleet-wide, not served "good"
     * with a lifetime that runs past the planned time */
    memset(&a, 0, sizeof(a));
    pki_args_str(&a, "EVAL");
    pki_args_str(&a, pki_lua_plan);
    pki_args_str(&a, "3");
    pki_args_str(&a, kcert);
    pki_args_str(&a, kplan);
    pki_args_str(&a, kgen);
    pki_args_str(&a, canon);
    pki_args_num(&a, reason);
    pki_args_num(&a, (long long) at);
    pki_args_str(&a, by != NULL ? by : "");
    pki_args_num(&a, (long long) time(NULL));

    st = pki_redis_eval(r, &a, &rc, res);
    if (st != PKI_OK) {
        return st;
    }

    if (rc == 0) {
        return pki_fail(res, PKI_NOT_FOUND, "no such certificate");
    }

    if (rc != 1) {
        return pki_fail(res, PKI_CONFLICT, "certificate is not good (a "
                        "revocation is planned only for a good one)");
    }

    /* an entry that could not be written is said in res->log, as a
     * revocation's (pki_record_revoke_gated): the plan stands */
    if (!pki_format_rfc3339(at, when)) {
        snprintf(when, sizeof(when), "%lld", (long long) at);
    }
    snprintf(why, sizeof(why), "%s, planned for %s",
             pki_int_reason_name(reason), when);
    (void) pki_int_admin_audit("revoke-plan", ca, canon, NULL, why, res);

    /* The plan is made (and logged): a record that cannot be read now
     * does not make it a failure, which a retry would plan and log
     * again.  The caller gets what the plan set. */
    pki_result_init(&gres);
    if (out != NULL && pki_record_get(r, ca, canon, out, &gres) != PKI_OK) {
        pki_log(res, "%sredis: %s of CA \"%s\" is planned for revocation, "
                "but its record could not be read: %s %s",
                (res != NULL && res->log[0] != '\0') ? "; " : "", canon, ca,
                gres.detail, gres.log);

        pki_record_clear(out);
        memset(out, 0, sizeof(*out));
        snprintf(out->serial, sizeof(out->serial), "%s", canon);
        snprintf(out->ca, sizeof(out->ca), "%s", ca);
        out->status = PKI_CERT_GOOD;
        out->revoke_planned = at;
        out->planned_reason = reason;
    }

    return PKI_OK;
}


/* One due serial: KEYS[1] plan, KEYS[2] cert record; ARGV[1] serial,
 * ARGV[2] now.  "REASON AT WHO" (the planned time, who planned it) when
 * the record is good with a plan due by now; else "" and the serial leaves
 * the plan unless a later plan replaced this one.  A certificate on hold
 * keeps its plan in its record: the release of the hold puts it back, or
 * carries it out when due (pki_lua_revoke); kept here, such serials would
 * fill the batches of due plans. */
static const char  pki_lua_plan_due[] =
    "local f = redis.call('HMGET', KEYS[2], 'status', 'plan_at', "
    "                     'plan_reason', 'plan_by') "
    "if f[1] == 'good' and tonumber(f[2]) and tonumber(f[3]) then "
    "  if tonumber(f[2]) <= tonumber(ARGV[2]) then "
    "    return f[3] .. ' ' .. f[2] .. ' ' .. (f[4] or '') "
    "  end "
    "  redis.call('ZADD', KEYS[1], f[2], ARGV[1]) "
    "  return '' "
    "end "
    "redis.call('ZREM', KEYS[1], ARGV[1]) "
    "return ''";


/* ZREM of one member of a CA's revplan: 0 when Redis did not answer. */
static int
pki_redis_plan_drop(pki_redis_t *r, const char *kplan, const char *member,
    size_t len, pki_result_t *res)
{
    const char  *argv[3];
    size_t       lens[3];
    redisReply  *reply;

    argv[0] = "ZREM";
    argv[1] = kplan;
    argv[2] = member;
    lens[0] = 4;
    lens[1] = strlen(kplan);
    lens[2] = len;

    reply = pki_redis_cmd(r, 3, argv, lens, res);
    if (reply == NULL) {
        return 0;
    }

    freeReplyObject(reply);
    return 1;
}


PKI_API pki_status_t
pki_record_revoke_due(pki_redis_t *r, const char *ca, time_t now,
    unsigned max, unsigned *done, pki_result_t *res)
{
    int           ok;
    size_t        i, k;
    char          kplan[PKI_REDIS_KEY_MAX], kcert[PKI_REDIS_KEY_MAX];
    char          canon[41], num[24], lim[24], *end, by[160];
    long          reason;
    long long     at;
    redisReply   *due, *take;
    const char   *argv[8];
    size_t        lens[8];
    pki_status_t  st;
    pki_result_t  one;

    if (done != NULL) {
        *done = 0;
    }

    if (r == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store");
    }

    if (!pki_redis_key(r, ca, "revplan", NULL, kplan, sizeof(kplan), NULL,
                       res))
    {
        return res != NULL && res->status != PKI_OK ? res->status
               : pki_fail(res, PKI_MALFORMED, "bad CA name");
    }

    snprintf(num, sizeof(num), "%lld", (long long) now);
    snprintf(lim, sizeof(lim), "%u", max != 0 ? max : 256);

    argv[0] = "ZRANGEBYSCORE";
    argv[1] = kplan;
    argv[2] = "-inf";
    argv[3] = num;
    argv[4] = "LIMIT";
    argv[5] = "0";
    argv[6] = lim;
    for (i = 0; i < 7; i++) {
        lens[i] = strlen(argv[i]);
    }

    due = pki_redis_cmd(r, 7, argv, lens, res);
    if (due == NULL) {
        return PKI_UNAVAILABLE;
    }

    st = PKI_OK;

    for (i = 0; due->type == REDIS_REPLY_ARRAY && i < due->elements; i++) {

        if (due->element[i]->type != REDIS_REPLY_STRING) {
            continue;
        }

        /* a member that is no serial (written by hand, or damaged) is
         * dropped: left, a batch of them at the head of the plan would
         * come back first on every pass and keep the real plans behind
         * them from being carried out */
        pki_result_init(&one);
        /* (a NUL byte would make it the serial before it, whose ZREM
         * never removed this member) */
        ok = due->element[i]->len < sizeof(canon)
             && memchr(due->element[i]->str, '\0', due->element[i]->len)
                == NULL;
        if (ok) {
            memcpy(canon, due->element[i]->str, due->element[i]->len);
            canon[due->element[i]->len] = '\0';
            ok = pki_redis_key(r, ca, "cert:", canon, kcert, sizeof(kcert),
                               NULL, &one);
        }

        if (!ok) {
            if (!pki_redis_plan_drop(r, kplan, due->element[i]->str,
                                     due->element[i]->len, res))
            {
                st = PKI_UNAVAILABLE;
                break;
            }
            continue;
        }

        argv[0] = "EVAL";
        argv[1] = pki_lua_plan_due;
        argv[2] = "2";
        argv[3] = kplan;
        argv[4] = kcert;
        argv[5] = canon;
        argv[6] = num;
        for (k = 0; k < 7; k++) {
            lens[k] = strlen(argv[k]);
        }

        take = pki_redis_cmd(r, 7, argv, lens, res);
        if (take == NULL) {
            st = PKI_UNAVAILABLE;
            break;
        }

        reason = -1;
        at = 0;
        if (take->type == REDIS_REPLY_STRING && take->len > 0) {
            reason = strtol(take->str, &end, 10);
            if (*end == ' ') {
                at = strtoll(end + 1, &end, 10);
            }
            if (*end == ' ' && at > 0 && at <= (long long) now) {
                /* audited as a revocation by who planned it */
                snprintf(by, sizeof(by), "planned by %s", end + 1);
            } else {
                reason = -1;
            }
        }
        freeReplyObject(take);

        if (reason < 0) {
            continue;         /* revoked, gone or planned later meanwhile */
        }

        /* dated at the planned time: OCSP and the CRL have said so since
         * then (pki_record_at), and the date must not move now */
        pki_result_init(&one);
        pki_event_set_actor("admin", by, NULL);
        one.status = pki_record_revoke(r, ca, canon, (int) reason,
                                       (time_t) at, 0, NULL, &one);
        pki_event_set_actor(NULL, NULL, NULL);

        if (one.status == PKI_UNAVAILABLE || one.status == PKI_INTERNAL) {
            /* still planned: the next pass tries again */
            st = pki_fail(res, one.status, "%s", one.detail);
            break;
        }

        if (one.status == PKI_OK && done != NULL) {
            (*done)++;
        }

        /* revoked now or before: off the plan (a crash before this is
         * cleaned up by the next pass, which finds it revoked) */
        if (!pki_redis_plan_drop(r, kplan, canon, strlen(canon), res)) {
            st = PKI_UNAVAILABLE;
            break;
        }
    }

    freeReplyObject(due);

    return st;
}


PKI_API int
pki_record_at(pki_record_t *rec, time_t now)
{
    if (rec == NULL || rec->status != PKI_CERT_GOOD
        || rec->revoke_planned <= 0 || rec->revoke_planned > now)
    {
        return 0;
    }

    /* the record as pki_record_revoke_due() leaves it */
    rec->status = PKI_CERT_REVOKED;
    rec->reason = rec->planned_reason;
    rec->revoked_at = rec->revoke_planned;
    rec->invalidity_date = 0;
    rec->revoke_planned = 0;
    rec->planned_reason = 0;

    return 1;
}


int
pki_int_redis_numbers(const redisReply *v, long long *out, size_t n)
{
    char    buf[128], *p, *end;
    size_t  i;

    if (v == NULL || v->type != REDIS_REPLY_STRING || n == 0
        || v->len == 0 || v->len >= sizeof(buf)
        || memchr(v->str, '\0', v->len) != NULL)
    {
        return 0;
    }

    memcpy(buf, v->str, v->len);
    buf[v->len] = '\0';
    p = buf;

    for (i = 0; i < n; i++) {
        if (*p < '0' || *p > '9') {
            return 0;
        }

        errno = 0;
        out[i] = strtoll(p, &end, 10);

        if (errno != 0 || *end != (i + 1 < n ? ' ' : '\0')) {
            return 0;
        }

        p = end + 1;
    }

    return 1;
}


/* Parses "REASON REVOKED_AT INVALIDITY_DATE". */
static int
pki_revoked_parse(const redisReply *v, int *reason, time_t *at,
    time_t *inv)
{
    long long  n[3];

    if (!pki_int_redis_numbers(v, n, 3)
        || n[0] > 10 || n[0] == 7 || n[0] == 8)
    {
        return 0;
    }

    *reason = (int) n[0];
    *at = (time_t) n[1];
    *inv = (time_t) n[2];
    return 1;
}


/* Checks a SCAN / HSCAN reply: [cursor, [items]]; copies the cursor. */
static const redisReply *
pki_scan_reply(const redisReply *reply, char *cursor, size_t size)
{
    const redisReply  *c, *items;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        return NULL;
    }

    c = reply->element[0];
    items = reply->element[1];

    if (c->type != REDIS_REPLY_STRING || items->type != REDIS_REPLY_ARRAY
        || !pki_reply_copy(c, cursor, size))
    {
        return NULL;
    }

    return items;
}


pki_status_t
pki_int_redis_zmscore(pki_redis_t *r, const char *key, const char **argv,
    size_t *lens, size_t n, double *out, pki_result_t *res)
{
    char              *end;
    size_t             i;
    redisReply        *reply;
    const redisReply  *v;

    argv[0] = "ZMSCORE";
    argv[1] = key;
    lens[0] = sizeof("ZMSCORE") - 1;
    lens[1] = strlen(key);

    reply = pki_redis_cmd(r, (int) (n + 2), argv, lens, res);
    if (reply == NULL) {
        return res != NULL ? res->status : PKI_UNAVAILABLE;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != n) {
        freeReplyObject(reply);
        pki_redis_drop(r);
        return pki_redis_unavailable(res, "ZMSCORE", "unexpected reply");
    }

    for (i = 0; i < n; i++) {
        v = reply->element[i];
        out[i] = -1;

        if (v->type != REDIS_REPLY_STRING || v->len == 0
            || memchr(v->str, '\0', v->len) != NULL)
        {
            continue;
        }

        out[i] = strtod(v->str, &end);

        if (end != v->str + v->len || !(out[i] >= 0)) {
            out[i] = -1;
        }
    }

    freeReplyObject(reply);

    return PKI_OK;
}


#define PKI_REVOKED_PAGE  1000      /* HSCAN COUNT, members per ZMSCORE */
#define PKI_REVOKED_ROUNDS 100000   /* HSCAN pages of one walk at most: a
                                       store whose cursor never comes back
                                       to 0 holds no pool thread forever */


/* A page of the revoked hash (items: serial, entry, ...): each entry to
 * cb, with its certificate's notAfter when kexp is given (else 0). */
static pki_status_t
pki_revoked_page(pki_redis_t *r, const char *kexp, const redisReply *items,
    pki_revoked_exp_cb cb, void *arg, int *stop, pki_result_t *res)
{
    int                reason;
    char               serial[41], canon[41];
    time_t             at, inv, na;
    size_t             i, j, n, lens[PKI_REVOKED_PAGE + 2];
    double             exp[PKI_REVOKED_PAGE];
    const char        *argv[PKI_REVOKED_PAGE + 2];
    pki_status_t       st;
    const redisReply  *k;

    for (i = 0; i < items->elements && !*stop; i += 2 * n) {
        n = (items->elements - i) / 2;
        if (n > PKI_REVOKED_PAGE) {
            n = PKI_REVOKED_PAGE;
        }

        for (j = 0; j < n; j++) {
            k = items->element[i + 2 * j];

            if (k->type != REDIS_REPLY_STRING) {
                return pki_fail(res, PKI_INTERNAL,
                                "corrupt revocation entry");
            }

            argv[2 + j] = k->str;
            lens[2 + j] = k->len;
        }

        if (kexp != NULL) {
            st = pki_int_redis_zmscore(r, kexp, argv, lens, n, exp, res);
            if (st != PKI_OK) {
                return st;
            }
        }

        for (j = 0; j < n && !*stop; j++) {
            k = items->element[i + 2 * j];

            /* a serial that cannot be read may be a revoked certificate
             * that a list without it would call good: no list */
            if (!pki_reply_copy(k, serial, sizeof(serial))
                || !pki_serial_normalize(serial, canon))
            {
                return pki_fail(res, PKI_INTERNAL,
                                "corrupt revocation entry");
            }

            /* a value that cannot be read still names a revoked
             * certificate: listed without its reason and dates (reason
             * -1: the caller's default), not a failed list */
            if (!pki_revoked_parse(items->element[i + 2 * j + 1], &reason,
                                   &at, &inv))
            {
                reason = -1;
                at = 0;
                inv = 0;
            }

            na = 0;
            if (kexp != NULL && exp[j] >= 0 && exp[j] < 1e15) {
                na = (time_t) exp[j];
            }

            *stop = !cb(arg, canon, reason, at, inv, na);
        }
    }

    return PKI_OK;
}


static pki_status_t
pki_revoked_walk(pki_redis_t *r, const char *ca, int with_exp,
    pki_revoked_exp_cb cb, void *arg, pki_result_t *res)
{
    int                stop;
    char               krev[PKI_REDIS_KEY_MAX], kexp[PKI_REDIS_KEY_MAX];
    char               cursor[32];
    unsigned long      rounds;
    size_t             lens[5], i;
    redisReply        *reply;
    const char        *argv[5];
    pki_status_t       st;
    const redisReply  *items;

    if (r == NULL || cb == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store or callback");
    }

    if (!pki_redis_key(r, ca, "revoked", NULL, krev, sizeof(krev), NULL,
                       res)
        || !pki_redis_key(r, ca, "expiry", NULL, kexp, sizeof(kexp), NULL,
                          res))
    {
        return res != NULL ? res->status : PKI_INTERNAL;
    }

    strcpy(cursor, "0");
    stop = 0;
    rounds = 0;

    do {
        if (rounds++ == PKI_REVOKED_ROUNDS) {
            return pki_fail(res, PKI_TOO_LARGE, "revoked hash: over %u HSCAN "
                            "pages, the scan did not end",
                            (unsigned) PKI_REVOKED_ROUNDS);
        }

        argv[0] = "HSCAN";
        argv[1] = krev;
        argv[2] = cursor;
        argv[3] = "COUNT";
        argv[4] = "1000";
        for (i = 0; i < 5; i++) {
            lens[i] = strlen(argv[i]);
        }

        reply = pki_redis_cmd(r, 5, argv, lens, res);
        if (reply == NULL) {
            return res != NULL ? res->status : PKI_UNAVAILABLE;
        }

        items = pki_scan_reply(reply, cursor, sizeof(cursor));
        if (items == NULL || items->elements % 2 != 0) {
            freeReplyObject(reply);
            pki_redis_drop(r);
            return pki_redis_unavailable(res, "HSCAN", "unexpected reply");
        }

        st = pki_revoked_page(r, with_exp ? kexp : NULL, items, cb, arg,
                              &stop, res);

        freeReplyObject(reply);

        if (st != PKI_OK) {
            return st;
        }

    } while (!stop && strcmp(cursor, "0") != 0);

    return PKI_OK;
}


typedef struct {
    pki_revoked_cb   cb;
    void            *arg;
} pki_revoked_each_t;


static int
pki_revoked_each_cb(void *arg, const char *serial, int reason,
    time_t revoked_at, time_t invalidity_date, time_t not_after)
{
    pki_revoked_each_t  *e = arg;

    (void) not_after;

    return e->cb(e->arg, serial, reason, revoked_at, invalidity_date);
}


PKI_API pki_status_t
pki_record_revoked_each(pki_redis_t *r, const char *ca, pki_revoked_cb cb,
    void *arg, pki_result_t *res)
{
    pki_revoked_each_t  e;

    if (cb == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store or callback");
    }

    e.cb = cb;
    e.arg = arg;

    return pki_revoked_walk(r, ca, 0, pki_revoked_each_cb, &e, res);
}


PKI_API pki_status_t
pki_record_revoked_walk(pki_redis_t *r, const char *ca,
    pki_revoked_exp_cb cb, void *arg, pki_result_t *res)
{
    return pki_revoked_walk(r, ca, 1, cb, arg, res);
}


/* Runs a command on one key that answers an integer (or nil: 0). */
static pki_status_t
pki_redis_int(pki_redis_t *r, const char *cmd, const char *key,
    long long *out, pki_result_t *res)
{
    redisReply  *reply;
    const char  *argv[2];
    size_t       lens[2];
    char         buf[32], *end;
    int          good;

    argv[0] = cmd;
    argv[1] = key;
    lens[0] = strlen(cmd);
    lens[1] = strlen(key);

    reply = pki_redis_cmd(r, 2, argv, lens, res);
    if (reply == NULL) {
        return res != NULL ? res->status : PKI_UNAVAILABLE;
    }

    good = 1;

    if (reply->type == REDIS_REPLY_INTEGER) {
        *out = reply->integer;

    } else if (reply->type == REDIS_REPLY_NIL) {
        *out = 0;

    } else if (reply->type == REDIS_REPLY_STRING
               && pki_reply_copy(reply, buf, sizeof(buf)))
    {
        errno = 0;
        *out = strtoll(buf, &end, 10);
        good = errno == 0 && end != buf && *end == '\0';

    } else {
        good = 0;
    }

    freeReplyObject(reply);

    if (!good) {
        pki_redis_drop(r);
        return pki_redis_unavailable(res, cmd, "unexpected reply");
    }

    return PKI_OK;
}


PKI_API pki_status_t
pki_record_revgen(pki_redis_t *r, const char *ca, long long *gen,
    pki_result_t *res)
{
    char  key[PKI_REDIS_KEY_MAX];

    if (r == NULL || gen == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store");
    }

    if (!pki_redis_key(r, ca, "revgen", NULL, key, sizeof(key), NULL, res)) {
        return res != NULL ? res->status : PKI_INTERNAL;
    }

    return pki_redis_int(r, "GET", key, gen, res);
}


/*
 * The next CRL number: the last one + 1, or Redis's clock in microseconds
 * when that is greater.  CRL numbers must only grow (RFC 5280 5.2.3), and
 * a counter alone repeats numbers after the store is restored from a
 * backup; the clock does not go back with it.  (Microseconds fit a Lua
 * number exactly until the year 2255, and 7 octets of the 20 allowed.)
 */
static const char  pki_lua_crlnumber[] =
    "local c = redis.call('GET', KEYS[1]) or '0' "
    "local n = tonumber(c) "
    "if not n or n ~= math.floor(n) or n < 0 then "
    "  return redis.error_reply('crlnumber is not a number') end "
    "local t = redis.call('TIME') "
    "local us = tonumber(t[1]) * 1000000 + tonumber(t[2]) "
    "n = n + 1 "
    "if us > n then n = us end "
    "redis.call('SET', KEYS[1], string.format('%d', n)) "
    "return n";


PKI_API pki_status_t
pki_record_next_crlnumber(pki_redis_t *r, const char *ca,
    long long *number, pki_result_t *res)
{
    char        key[PKI_REDIS_KEY_MAX];
    pki_args_t  a;

    if (r == NULL || number == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store");
    }

    if (!pki_redis_key(r, ca, "crlnumber", NULL, key, sizeof(key), NULL,
                       res))
    {
        return res != NULL ? res->status : PKI_INTERNAL;
    }

    memset(&a, 0, sizeof(a));
    pki_args_str(&a, "EVAL");
    pki_args_str(&a, pki_lua_crlnumber);
    pki_args_str(&a, "1");
    pki_args_str(&a, key);

    return pki_redis_eval(r, &a, number, res);
}


#define PKI_LIST_MAX        1000
#define PKI_LIST_SCORE_MAX  9000000000000000000LL
#define PKI_LIST_SKIP_MAX   999999999999999999LL     /* 18 digits */

/*
 * A page of the CA's records walks the CA's own expiry index (a sorted
 * set of its committed serials by notAfter), never the keyspace: a page
 * costs one script and one HGETALL per serial whatever else the database
 * holds.  The cursor is "<notAfter>_<SERIAL>" of the page's last serial;
 * the next page starts after that member's rank (exactly once, however
 * many members share its score), or, if it was removed meanwhile, at the
 * first member of its score (a repeat, never a gap).
 *
 * A member that is no serial of ours (data of something else) can never
 * be a cursor.  A full page of them ends with "<W>~<K>" instead: W the
 * last member's score rounded down, K how many members from the first of
 * score W on the page went up to, itself included; the next page starts
 * K members past the first of score W.  A change among the members of
 * that one second meanwhile may repeat or pass over as many as changed.
 *
 * KEYS[1] expiry index; ARGV[1] score ("" to start), ARGV[2] member (""
 * for none), ARGV[3] count, ARGV[4] K (when ARGV[2] names no member).
 * Members and scores, as ZRANGE WITHSCORES, then W and K of the last
 * member of a full page (0 and 0 for a page that is not full).
 */
static const char  pki_lua_list[] =
    "local start = 0 "
    "if ARGV[1] ~= '' then "
    "  local r = ARGV[2] ~= '' and redis.call('ZRANK', KEYS[1], ARGV[2]) "
    "  if r then "
    "    start = r + 1 "
    "  else "
    "    start = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[1]) "
    "            + tonumber(ARGV[4]) "
    "  end "
    "end "
    "local n = tonumber(ARGV[3]) "
    "local page = redis.call('ZRANGE', KEYS[1], start, start + n - 1, "
    "                        'WITHSCORES') "
    "local w, k = 0, 0 "
    "if #page == 2 * n then "
    "  w = math.floor(math.max(-9e18, "
    "                          math.min(9e18, tonumber(page[#page])))) "
    "  k = start + n - redis.call('ZCOUNT', KEYS[1], '-inf', "
    "                             '(' .. string.format('%.17g', w)) "
    "end "
    "page[#page + 1] = w "
    "page[#page + 1] = k "
    "return page";


/* Splits a list cursor: "0" (the start), "<notAfter>_<SERIAL>" (after
 * that serial) or "<W>~<K>" (K members past the first of score W). */
static int
pki_list_cursor(const char *cursor, char *score, size_t size, char *serial,
    char *skip, size_t skip_size)
{
    const char  *sep, *p;
    char         canon[41];
    size_t       len;

    score[0] = '\0';
    serial[0] = '\0';
    strcpy(skip, "0");

    if (strcmp(cursor, "0") == 0) {
        return 1;
    }

    sep = cursor + strcspn(cursor, "_~");
    if (*sep == '\0') {
        return 0;          /* a keyspace SCAN cursor of older versions */
    }

    p = cursor + (*cursor == '-');
    len = (size_t) (sep - p);

    if (len == 0 || len > 19 || strspn(p, "0123456789") != len
        || (size_t) (sep - cursor) >= size)
    {
        return 0;
    }

    if (*sep == '~') {
        len = strlen(sep + 1);

        if (len == 0 || len > 9 || len >= skip_size
            || strspn(sep + 1, "0123456789") != len)
        {
            return 0;
        }

        strcpy(skip, sep + 1);

    } else {
        if (strlen(sep + 1) >= sizeof(canon)
            || !pki_serial_normalize(sep + 1, canon)
            || strcmp(sep + 1, canon) != 0)
        {
            return 0;
        }

        strcpy(serial, canon);
    }

    memcpy(score, cursor, (size_t) (sep - cursor));
    score[sep - cursor] = '\0';

    return 1;
}


/* defined after pki_redis_pipeline, which it sends its command through */
static redisReply *pki_record_list_get(pki_redis_t *r, const char *key,
    int *skip, pki_result_t *res);


PKI_API pki_status_t
pki_record_list(pki_redis_t *r, const char *ca, const char *cursor,
    size_t max, pki_record_t **out, size_t *n, char *next,
    pki_result_t *res)
{
    int                skip;
    redisReply        *reply, *rec_reply;
    const redisReply  *m, *s;
    pki_record_t      *recs;
    pki_status_t       st;
    size_t             i, count, serials, mark;
    double             score;
    long long          whole, last_w, last_k;
    char               kexp[PKI_REDIS_KEY_MAX], key[PKI_REDIS_KEY_MAX];
    char               cur_score[24], cur_serial[41], cur_skip[24];
    char               num[24], serial[41], canon[41], sc[64], *endp;
    pki_args_t         a;

    if (out == NULL || n == NULL || next == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: bad list arguments");
    }

    *out = NULL;
    *n = 0;
    strcpy(next, "0");

    if (r == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store");
    }

    if (cursor == NULL || *cursor == '\0') {
        cursor = "0";
    }

    if (strlen(cursor) >= PKI_RECORD_CURSOR_MAX
        || !pki_list_cursor(cursor, cur_score, sizeof(cur_score),
                            cur_serial, cur_skip, sizeof(cur_skip)))
    {
        return pki_fail(res, PKI_MALFORMED, "bad cursor");
    }

    if (max == 0) {
        max = 1;
    } else if (max > PKI_LIST_MAX) {
        max = PKI_LIST_MAX;
    }

    if (!pki_redis_key(r, ca, "expiry", NULL, kexp, sizeof(kexp), NULL,
                       res))
    {
        return res != NULL ? res->status : PKI_INTERNAL;
    }

    snprintf(num, sizeof(num), "%zu", max);

    memset(&a, 0, sizeof(a));
    pki_args_str(&a, "EVAL");
    pki_args_str(&a, pki_lua_list);
    pki_args_str(&a, "1");
    pki_args_str(&a, kexp);
    pki_args_str(&a, cur_score);
    pki_args_str(&a, cur_serial);
    pki_args_str(&a, num);
    pki_args_str(&a, cur_skip);

    reply = pki_redis_cmd(r, a.argc, a.argv, a.lens, res);
    if (reply == NULL) {
        return res != NULL ? res->status : PKI_UNAVAILABLE;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2
        || reply->elements % 2 != 0 || (reply->elements - 2) / 2 > max
        || reply->element[reply->elements - 2]->type != REDIS_REPLY_INTEGER
        || reply->element[reply->elements - 1]->type != REDIS_REPLY_INTEGER)
    {
        freeReplyObject(reply);
        pki_redis_drop(r);
        return pki_redis_unavailable(res, "EVAL", "unexpected reply");
    }

    count = (reply->elements - 2) / 2;
    last_w = reply->element[reply->elements - 2]->integer;
    last_k = reply->element[reply->elements - 1]->integer;

    if (count == max
        && (last_w < -PKI_LIST_SCORE_MAX || last_w > PKI_LIST_SCORE_MAX
            || last_k < 1 || last_k > PKI_LIST_SKIP_MAX))
    {
        freeReplyObject(reply);
        pki_redis_drop(r);
        return pki_redis_unavailable(res, "EVAL", "unexpected reply");
    }

    serials = 0;
    recs = NULL;

    if (count > 0) {
        recs = calloc(count, sizeof(*recs));
        if (recs == NULL) {
            freeReplyObject(reply);
            return pki_fail(res, PKI_INTERNAL, "out of memory");
        }
    }

    for (i = 0; i < count; i++) {
        m = reply->element[2 * i];
        s = reply->element[2 * i + 1];

        if (m->type != REDIS_REPLY_STRING || s->type != REDIS_REPLY_STRING
            || !pki_reply_copy(s, sc, sizeof(sc)))
        {
            freeReplyObject(reply);
            pki_redis_drop(r);
            st = pki_redis_unavailable(res, "EVAL", "unexpected reply");
            goto failed;
        }

        /* the next page starts after the last member, listed or not */
        score = strtod(sc, &endp);
        if (endp == sc || *endp != '\0' || score != score) {
            score = 0;
        } else if (score < -9e18) {
            score = -9e18;
        } else if (score > 9e18) {
            score = 9e18;
        }

        if (!pki_reply_copy(m, serial, sizeof(serial))
            || !pki_serial_normalize(serial, canon)
            || strcmp(serial, canon) != 0)
        {
            continue;      /* not a serial of ours: never a cursor */
        }

        serials++;

        if (count == max) {
            /* rounded down: a vanished member's page restarts early */
            whole = (long long) score;
            whole -= (double) whole > score;
            snprintf(next, PKI_RECORD_CURSOR_MAX, "%lld_%s", whole, canon);
        }

        if (!pki_redis_key(r, ca, "cert:", canon, key, sizeof(key), NULL,
                           res))
        {
            freeReplyObject(reply);
            st = res != NULL ? res->status : PKI_INTERNAL;
            goto failed;
        }

        rec_reply = pki_record_list_get(r, key, &skip, res);
        if (rec_reply == NULL) {
            if (skip) {
                continue;       /* another type: said in res's log */
            }

            freeReplyObject(reply);
            st = res != NULL ? res->status : PKI_UNAVAILABLE;
            goto failed;
        }

        mark = res != NULL ? strlen(res->log) : 0;

        st = pki_record_from_reply(rec_reply, ca, canon, &recs[*n], res);
        freeReplyObject(rec_reply);

        if (st == PKI_OK && recs[*n].status == PKI_CERT_PENDING) {
            pki_record_clear(&recs[*n]);
            continue;
        }

        if (st == PKI_NOT_FOUND || st == PKI_INTERNAL) {
            /* gone meanwhile, or corrupt: not this page's business (the
             * notes of the keys passed over before it stay) */
            if (res != NULL) {
                res->status = PKI_OK;
                res->detail[0] = '\0';
                res->log[mark] = '\0';
            }
            continue;
        }

        if (st != PKI_OK) {
            freeReplyObject(reply);
            goto failed;
        }

        (*n)++;
    }

    freeReplyObject(reply);

    if (count == max && serials == 0) {
        /* a page of members that are no serials is not the end */
        snprintf(next, PKI_RECORD_CURSOR_MAX, "%lld~%lld", last_w, last_k);
    }

    if (*n == 0) {
        free(recs);
        recs = NULL;
    }

    *out = recs;
    return PKI_OK;

failed:

    for (i = 0; i < *n; i++) {
        pki_record_clear(&recs[i]);
    }

    free(recs);
    *n = 0;
    strcpy(next, "0");
    return st;
}


/* ---- the shared CRL ------------------------------------------------------ */

/*
 * A CRL's DER is stored under its own number, <ns>{ca:CA}:crl:<NUMBER>,
 * written and read back in PKI_CRL_CHUNK pieces (SET, then SETRANGE; read
 * with GETRANGE), each one command within the store's timeout: a CA with
 * hundreds of thousands of revocations has a CRL of tens of megabytes, and
 * such a value passed into or out of a Lua script held Redis for most of a
 * second (every other client of the fleet waiting).  A stored DER never
 * changes, so a reader that reads it in pieces reads one CRL; the one it
 * replaces expires a minute later (readers still at it finish).  The
 * legacy key <ns>{ca:CA}:crl (one DER for all numbers) is deleted when a
 * CRL is stored: an older version's reader then finds none and builds.
 */

#define PKI_CRL_CHUNK        (1024L * 1024)
#define PKI_CRL_NEW_TTL_MS   "600000"   /* a DER whose meta never came */
#define PKI_CRL_OLD_TTL_MS   "60000"    /* the replaced DER, for readers */

/* KEYS: revgen, crl_meta, revplan, the legacy crl, crl_group.  ARGV: the
 * caller's CRL number, the DER keys' prefix ("<ns>{ca:CA}:crl:").  Returns
 * {revgen, meta or nil, the stored DER's length (0: none, or the number is
 * the caller's; negative: only the legacy key holds a DER, of that
 * length), plan or nil, group or nil}: plan, the time of the earliest
 * planned revocation after the stored CRL's thisUpdate (those up to it
 * are in it); group, the stored CRL's sum of the revgens of the CAs with
 * this one's subject and key (pki_crl_info_t.group).  An older
 * version stores meta and DER in one script, its DER under the legacy
 * key: a meta without crl:<N> was written by it, with its DER there (in
 * a fleet being upgraded this reads it instead of building again). */
static const char  pki_lua_crl_read[] =
    "local g = redis.call('GET', KEYS[1]) or '0' "
    "local m = redis.call('GET', KEYS[2]) "
    "local d, p = 0, false "
    "if m then "
    "  local n = string.match(m, '^%S+ %S+ (%d+)') "
    "  local t = string.match(m, '^%S+ %S+ %S+ (%d+)$') "
    "  if n and n ~= ARGV[1] then "
    "    d = redis.call('STRLEN', ARGV[2] .. n) "
    "    if d == 0 then d = -redis.call('STRLEN', KEYS[4]) end "
    "  end "
    "  if t then "
    "    local z = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. t, '+inf', "
    "                         'WITHSCORES', 'LIMIT', 0, 1) "
    "    if z[2] then p = z[2] end "
    "  end "
    "end "
    "return {g, m or false, d, p, redis.call('GET', KEYS[5]) or false}";

/* KEYS: crl:<NUMBER>.  ARGV: offset, piece, TTL (ms).  Writes a piece of
 * a DER after its first only while the key its first piece made lives (a
 * SETRANGE on a key that expired meanwhile would make one with zeroes and
 * no TTL), and gives it its TTL again.  The length, or -1: gone. */
static const char  pki_lua_crl_piece[] =
    "if redis.call('PEXPIRE', KEYS[1], ARGV[3]) == 1 then "
    "  return redis.call('SETRANGE', KEYS[1], ARGV[1], ARGV[2]) "
    "end "
    "return -1";

/* KEYS: crl_meta, crl:<NUMBER> (the DER, written just before), the legacy
 * crl, crl_group, crl_lock.  ARGV: meta, number, the DER keys' prefix, the
 * replaced DER's TTL, the group value (0: none, the key is deleted), the
 * builder's lock token.
 * 1 stored; 0 older: a lower number, or a snapshot of an older revocation
 * generation (a builder that outlived its lock took its number after a
 * newer build: its CRL would drop the revocations the stored one lists);
 * -1 the lock is no longer the builder's: another may have built from a
 * newer snapshot (of this CA, or of one that shares its subject and key)
 * meanwhile, which a higher number from this one would hide.  A refused
 * one's DER is deleted. */
static const char  pki_lua_crl_put[] =
    "local m = redis.call('GET', KEYS[1]) "
    "if redis.call('GET', KEYS[5]) ~= ARGV[6] then "
    "  if not (m and string.match(m, '^%S+ %S+ (%S+)') == ARGV[2]) then "
    "    redis.call('DEL', KEYS[2]) end "
    "  return -1 "
    "end "
    "if m then "
    "  local g, n = string.match(m, '^(%S+) %S+ (%S+)') "
    "  local mine = tonumber(string.match(ARGV[1], '^(%S+)')) "
    "  if (tonumber(n) and tonumber(n) >= tonumber(ARGV[2])) "
    "     or (tonumber(g) and mine and tonumber(g) > mine) then "
    "    if tonumber(n) ~= tonumber(ARGV[2]) then "
    "      redis.call('DEL', KEYS[2]) end "
    "    return 0 "
    "  end "
    "  if tonumber(n) then "
    "    redis.call('PEXPIRE', ARGV[3] .. n, ARGV[4]) end "
    "end "
    "redis.call('PERSIST', KEYS[2]) "
    "redis.call('DEL', KEYS[3]) "
    "redis.call('SET', KEYS[1], ARGV[1]) "
    "if ARGV[5] == '0' then redis.call('DEL', KEYS[4]) "
    "else redis.call('SET', KEYS[4], ARGV[5]) end "
    "return 1";

/* KEYS: crl_lock.  ARGV: token, TTL (ms).  1: extended; 0: not the
 * token's (another builder's, or expired: never taken again here, since
 * another may have built and stored meanwhile). */
static const char  pki_lua_crl_renew[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "  return redis.call('PEXPIRE', KEYS[1], ARGV[2]) "
    "end "
    "return 0";

/* KEYS: crl_lock.  ARGV: token. */
static const char  pki_lua_crl_unlock[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "  return redis.call('DEL', KEYS[1]) "
    "end "
    "return 0";


#define PKI_CRL_DER_MAX  (512L * 1024 * 1024)


static int
pki_crl_meta_parse(const redisReply *v, pki_crl_info_t *out)
{
    char       buf[128];
    long long  gen, next, number, this;
    char       tail;

    if (!pki_reply_copy(v, buf, sizeof(buf))) {
        return 0;
    }

    if (sscanf(buf, "%lld %lld %lld %lld%c", &gen, &next, &number, &this,
               &tail) != 4
        || gen < 0 || next <= 0 || number <= 0 || this <= 0)
    {
        return 0;
    }

    out->revgen = gen;
    out->next_update = (time_t) next;
    out->number = number;
    out->this_update = (time_t) this;

    return 1;
}


/* A plan's score that ZRANGEBYSCORE found after t: a time in whole
 * seconds (a fraction is dropped, the time stays after t).  One naming no
 * time (only a broken or hostile store has one) is left out (0): a CRL it
 * made stale would be rebuilt on every look. */
static time_t
pki_plan_time(const redisReply *v, time_t t)
{
    char    buf[32], *end;
    double  d;

    if (v->len == 0 || v->len >= sizeof(buf)) {
        return 0;
    }

    memcpy(buf, v->str, v->len);
    buf[v->len] = '\0';
    d = strtod(buf, &end);

    if (*end != '\0' || !(d > (double) t) || d >= 253402300800.0) {
        return 0;
    }

    return (time_t) d > t ? (time_t) d : t + 1;
}


/* KEYS: revgen, revplan; ARGV: a time.  Returns {revgen, the time of the
 * earliest plan after it or nil}. */
static const char  pki_lua_revgen_plan[] =
    "local g = redis.call('GET', KEYS[1]) or '0' "
    "local z = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], "
    "                     '+inf', 'WITHSCORES', 'LIMIT', 0, 1) "
    "return {g, z[2] or false}";


PKI_API pki_status_t
pki_record_revgen_plan(pki_redis_t *r, const char *ca, time_t after,
    long long *gen, time_t *plan, pki_result_t *res)
{
    char         kg[PKI_REDIS_KEY_MAX], kp[PKI_REDIS_KEY_MAX], *end;
    redisReply  *reply, *e;
    pki_args_t   a;
    int          good;

    if (r == NULL || gen == NULL || plan == NULL || after < 0) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store");
    }

    if (!pki_redis_key(r, ca, "revgen", NULL, kg, sizeof(kg), NULL, res)
        || !pki_redis_key(r, ca, "revplan", NULL, kp, sizeof(kp), NULL, res))
    {
        return res != NULL ? res->status : PKI_INTERNAL;
    }

    memset(&a, 0, sizeof(a));
    pki_args_str(&a, "EVAL");
    pki_args_str(&a, pki_lua_revgen_plan);
    pki_args_str(&a, "2");
    pki_args_str(&a, kg);
    pki_args_str(&a, kp);
    pki_args_num(&a, (long long) after);

    reply = pki_redis_cmd(r, a.argc, a.argv, a.lens, res);
    if (reply == NULL) {
        return res != NULL ? res->status : PKI_UNAVAILABLE;
    }

    *gen = 0;
    *plan = 0;
    good = reply->type == REDIS_REPLY_ARRAY && reply->elements == 2;

    if (good) {
        e = reply->element[0];
        good = e->type == REDIS_REPLY_STRING && e->len > 0 && e->len < 24;
        if (good) {
            errno = 0;
            *gen = strtoll(e->str, &end, 10);
            good = errno == 0 && end == e->str + e->len && *gen >= 0;
        }
    }

    if (good && reply->element[1]->type == REDIS_REPLY_STRING) {
        *plan = pki_plan_time(reply->element[1], after);
    }

    freeReplyObject(reply);

    if (!good) {
        *gen = 0;
        return pki_fail(res, PKI_UNAVAILABLE, "redis: bad revgen of CA "
                        "\"%s\"", ca);
    }

    return PKI_OK;
}


/* The DER keys' prefix "<ns>{ca:CA}:crl:" into buf. */
static int
pki_crl_der_prefix(pki_redis_t *r, const char *ca, char *buf, size_t size,
    pki_result_t *res)
{
    size_t  n;

    if (!pki_redis_key(r, ca, "crl:", NULL, buf, size, NULL, res)) {
        return 0;
    }

    n = strlen(buf);

    return n + 24 < size ? 1 : (pki_fail(res, PKI_INTERNAL,
                                         "redis: key too long"), 0);
}


/* Reads len bytes of the DER key in PKI_CRL_CHUNK pieces into out->der.
 * 1 read; 0 the key changed length or went (replaced meanwhile and its
 * grace over: the caller reads again), with res unset; -1 failed. */
static int
pki_crl_der_read(pki_redis_t *r, const char *key, size_t len,
    pki_crl_info_t *out, pki_result_t *res)
{
    char          from[24], to[24];
    size_t        off, n, lens[4];
    redisReply   *reply;
    const char   *argv[4];

    out->der = malloc(len);
    if (out->der == NULL) {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        return -1;
    }

    for (off = 0; off < len; off += n) {
        n = len - off < (size_t) PKI_CRL_CHUNK ? len - off
                                               : (size_t) PKI_CRL_CHUNK;

        snprintf(from, sizeof(from), "%zu", off);
        snprintf(to, sizeof(to), "%zu", off + n - 1);

        argv[0] = "GETRANGE";
        argv[1] = key;
        argv[2] = from;
        argv[3] = to;
        lens[0] = sizeof("GETRANGE") - 1;
        lens[1] = strlen(key);
        lens[2] = strlen(from);
        lens[3] = strlen(to);

        reply = pki_redis_cmd(r, 4, argv, lens, res);
        if (reply == NULL) {
            free(out->der);
            out->der = NULL;
            return -1;
        }

        if (reply->type != REDIS_REPLY_STRING || reply->len != n) {
            freeReplyObject(reply);
            free(out->der);
            out->der = NULL;
            return 0;
        }

        memcpy(out->der + off, reply->str, n);
        freeReplyObject(reply);
    }

    out->len = len;

    return 1;
}


PKI_API pki_status_t
pki_crl_store_read(pki_redis_t *r, const char *ca, long long have_number,
    long long *revgen, pki_crl_info_t *out, pki_result_t *res)
{
    char         kg[PKI_REDIS_KEY_MAX], km[PKI_REDIS_KEY_MAX],
                 kd[PKI_REDIS_KEY_MAX + 24], kp[PKI_REDIS_KEY_MAX],
                 kl[PKI_REDIS_KEY_MAX], kq[PKI_REDIS_KEY_MAX], *end;
    size_t       plen;
    long long    dlen;
    redisReply  *reply, *e;
    pki_args_t   a;
    int          good, tries, got, legacy;

    if (r == NULL || revgen == NULL || out == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store");
    }

    if (!pki_redis_key(r, ca, "revgen", NULL, kg, sizeof(kg), NULL, res)
        || !pki_redis_key(r, ca, "crl_meta", NULL, km, sizeof(km), NULL, res)
        || !pki_redis_key(r, ca, "revplan", NULL, kp, sizeof(kp), NULL, res)
        || !pki_redis_key(r, ca, "crl", NULL, kl, sizeof(kl), NULL, res)
        || !pki_redis_key(r, ca, "crl_group", NULL, kq, sizeof(kq), NULL,
                          res)
        || !pki_crl_der_prefix(r, ca, kd, sizeof(kd), res))
    {
        return res != NULL ? res->status : PKI_INTERNAL;
    }

    plen = strlen(kd);

    for (tries = 0; ; tries++) {
        memset(out, 0, sizeof(*out));
        kd[plen] = '\0';

        memset(&a, 0, sizeof(a));
        pki_args_str(&a, "EVAL");
        pki_args_str(&a, pki_lua_crl_read);
        pki_args_str(&a, "5");
        pki_args_str(&a, kg);
        pki_args_str(&a, km);
        pki_args_str(&a, kp);
        pki_args_str(&a, kl);
        pki_args_str(&a, kq);
        pki_args_num(&a, have_number);
        pki_args_str(&a, kd);

        reply = pki_redis_cmd(r, a.argc, a.argv, a.lens, res);
        if (reply == NULL) {
            return res != NULL ? res->status : PKI_UNAVAILABLE;
        }

        good = reply->type == REDIS_REPLY_ARRAY && reply->elements == 5
               && reply->element[2]->type == REDIS_REPLY_INTEGER;
        dlen = 0;

        if (good) {
            e = reply->element[0];
            *revgen = 0;
            dlen = reply->element[2]->integer;

            if (e->type == REDIS_REPLY_STRING && e->len > 0 && e->len < 24) {
                errno = 0;
                *revgen = strtoll(e->str, &end, 10);
                good = errno == 0 && end == e->str + e->len;

            } else {
                good = 0;
            }
        }

        if (good && reply->element[1]->type == REDIS_REPLY_STRING) {
            if (!pki_crl_meta_parse(reply->element[1], out)) {
                /* a damaged meta: as if nothing were stored, it is
                 * rebuilt */
                memset(out, 0, sizeof(*out));
                pki_log(res, "CRL: bad crl_meta in Redis ignored");
                dlen = 0;

            } else {
                /* pki_crl_current: whether a plan ends it before its
                 * nextUpdate */
                e = reply->element[3];
                if (e->type == REDIS_REPLY_STRING) {
                    out->planned = pki_plan_time(e, out->this_update);
                }

                /* a group value that does not parse: none, so the CRL of
                 * a CA with others is built again */
                e = reply->element[4];
                if (e->type == REDIS_REPLY_STRING && e->len > 0
                    && e->len < 24)
                {
                    errno = 0;
                    out->group = strtoll(e->str, &end, 10);
                    if (errno != 0 || end != e->str + e->len
                        || out->group < 0)
                    {
                        out->group = 0;
                    }
                }
            }
        }

        freeReplyObject(reply);

        if (!good) {
            pki_redis_drop(r);
            return pki_redis_unavailable(res, "EVAL", "unexpected reply");
        }

        if (out->number == 0 || out->number == have_number
            || have_number < 0)
        {
            return PKI_OK;
        }

        legacy = dlen < 0;
        if (legacy) {
            dlen = -dlen;
        }

        if (dlen == 0 || dlen > PKI_CRL_DER_MAX) {
            /* meta without its DER: as if nothing were stored */
            if (dlen > PKI_CRL_DER_MAX) {
                pki_log(res, "CRL: the stored CRL is over %ld bytes",
                        (long) PKI_CRL_DER_MAX);
            }
            memset(out, 0, sizeof(*out));
            return PKI_OK;
        }

        snprintf(kd + plen, sizeof(kd) - plen, "%lld", out->number);

        /* (the legacy key may change while it is read: a mixed DER fails
         * the caller's signature check, and the CRL is built again) */
        got = pki_crl_der_read(r, legacy ? kl : kd, (size_t) dlen, out,
                               res);
        if (got == 1) {
            return PKI_OK;
        }

        if (got < 0) {
            memset(out, 0, sizeof(*out));
            return res != NULL ? res->status : PKI_UNAVAILABLE;
        }

        if (tries == 2) {
            /* replaced three times while being read: none for now */
            memset(out, 0, sizeof(*out));
            return pki_fail(res, PKI_UNAVAILABLE, "CRL: the stored CRL "
                            "kept changing while it was read");
        }
    }
}


PKI_API pki_status_t
pki_crl_store_put(pki_redis_t *r, const char *ca, const pki_crl_info_t *crl,
    const char *token, int *stored, pki_result_t *res)
{
    char          km[PKI_REDIS_KEY_MAX], kl[PKI_REDIS_KEY_MAX], meta[128];
    char          kd[PKI_REDIS_KEY_MAX + 24], prefix[PKI_REDIS_KEY_MAX];
    char          kq[PKI_REDIS_KEY_MAX], kk[PKI_REDIS_KEY_MAX];
    size_t        lens[5], off, n;
    long long     v;
    pki_args_t    a;
    redisReply   *reply;
    const char   *argv[5];
    pki_status_t  st;

    if (r == NULL || crl == NULL || crl->der == NULL || crl->len == 0
        || crl->number <= 0 || token == NULL)
    {
        return pki_fail(res, PKI_INTERNAL, "redis: no CRL to store");
    }

    /* what pki_crl_store_read would not take back: stored, it would be
     * taken for none and built again by every reader */
    if (crl->len > (size_t) PKI_CRL_DER_MAX) {
        return pki_fail(res, PKI_TOO_LARGE, "CRL of CA \"%s\": %zu bytes, "
                        "over the %ld a stored CRL may have", ca, crl->len,
                        (long) PKI_CRL_DER_MAX);
    }

    if (!pki_redis_key(r, ca, "crl_meta", NULL, km, sizeof(km), NULL, res)
        || !pki_redis_key(r, ca, "crl", NULL, kl, sizeof(kl), NULL, res)
        || !pki_redis_key(r, ca, "crl_group", NULL, kq, sizeof(kq), NULL,
                          res)
        || !pki_redis_key(r, ca, "crl_lock", NULL, kk, sizeof(kk), NULL,
                          res)
        || !pki_crl_der_prefix(r, ca, prefix, sizeof(prefix), res))
    {
        return res != NULL ? res->status : PKI_INTERNAL;
    }

    snprintf(kd, sizeof(kd), "%s%lld", prefix, crl->number);

    /* the DER first, plainly (no script holds Redis while it is copied),
     * expiring unless the meta names it; in pieces, each a command within
     * the timeout (a CRL of tens of MB did not fit one) */
    n = crl->len < (size_t) PKI_CRL_CHUNK ? crl->len : PKI_CRL_CHUNK;

    argv[0] = "SET";
    argv[1] = kd;
    argv[2] = (const char *) crl->der;
    argv[3] = "PX";
    argv[4] = PKI_CRL_NEW_TTL_MS;
    lens[0] = 3;
    lens[1] = strlen(kd);
    lens[2] = n;
    lens[3] = 2;
    lens[4] = strlen(argv[4]);

    reply = pki_redis_cmd(r, 5, argv, lens, res);
    if (reply == NULL) {
        return res != NULL ? res->status : PKI_UNAVAILABLE;
    }

    v = reply->type == REDIS_REPLY_STATUS;
    freeReplyObject(reply);

    if (!v) {
        pki_redis_drop(r);
        return pki_redis_unavailable(res, "SET", "unexpected reply");
    }

    for (off = n; off < crl->len; off += n) {
        n = crl->len - off < (size_t) PKI_CRL_CHUNK ? crl->len - off
                                                    : PKI_CRL_CHUNK;

        memset(&a, 0, sizeof(a));
        pki_args_str(&a, "EVAL");
        pki_args_str(&a, pki_lua_crl_piece);
        pki_args_str(&a, "1");
        pki_args_str(&a, kd);
        pki_args_num(&a, (long long) off);
        pki_args_add(&a, (const char *) crl->der + off, n);
        pki_args_str(&a, PKI_CRL_NEW_TTL_MS);

        st = pki_redis_eval(r, &a, &v, res);
        if (st != PKI_OK) {
            return st;
        }

        if (v != (long long) (off + n)) {
            return pki_redis_unavailable(res, "SETRANGE", "the CRL's "
                                         "stored part expired while it "
                                         "was written");
        }
    }

    snprintf(meta, sizeof(meta), "%lld %lld %lld %lld", crl->revgen,
             (long long) crl->next_update, crl->number,
             (long long) crl->this_update);

    memset(&a, 0, sizeof(a));
    pki_args_str(&a, "EVAL");
    pki_args_str(&a, pki_lua_crl_put);
    pki_args_str(&a, "5");
    pki_args_str(&a, km);
    pki_args_str(&a, kd);
    pki_args_str(&a, kl);
    pki_args_str(&a, kq);
    pki_args_str(&a, kk);
    pki_args_str(&a, meta);
    pki_args_num(&a, crl->number);
    pki_args_str(&a, prefix);
    pki_args_str(&a, PKI_CRL_OLD_TTL_MS);
    pki_args_num(&a, crl->group > 0 ? crl->group : 0);
    pki_args_str(&a, token);

    st = pki_redis_eval(r, &a, &v, res);
    if (st == PKI_OK && stored != NULL) {
        *stored = v == 1 ? 1 : (v == -1 ? -1 : 0);
    }

    return st;
}


PKI_API pki_status_t
pki_crl_lock(pki_redis_t *r, const char *ca, const char *token, long ttl_ms,
    int *won, pki_result_t *res)
{
    char          key[PKI_REDIS_KEY_MAX], ttl[24];
    const char   *argv[6];
    size_t        lens[6];
    redisReply   *reply;
    int           i;

    if (r == NULL || token == NULL || won == NULL || strlen(token) > 63
        || ttl_ms <= 0)
    {
        return pki_fail(res, PKI_INTERNAL, "redis: bad CRL lock");
    }

    if (!pki_redis_key(r, ca, "crl_lock", NULL, key, sizeof(key), NULL,
                       res))
    {
        return res != NULL ? res->status : PKI_INTERNAL;
    }

    snprintf(ttl, sizeof(ttl), "%ld", ttl_ms);

    argv[0] = "SET";
    argv[1] = key;
    argv[2] = token;
    argv[3] = "NX";
    argv[4] = "PX";
    argv[5] = ttl;

    for (i = 0; i < 6; i++) {
        lens[i] = strlen(argv[i]);
    }

    reply = pki_redis_cmd(r, 6, argv, lens, res);
    if (reply == NULL) {
        return res != NULL ? res->status : PKI_UNAVAILABLE;
    }

    *won = reply->type == REDIS_REPLY_STATUS;
    freeReplyObject(reply);

    if (*won) {
        return PKI_OK;
    }

    /* Refused: or taken by this very SET, whose answer was lost with its
     * connection and which pki_redis_cmd() sent again (the second one is
     * refused by the first).  The token is this caller's own. */
    argv[0] = "GET";
    lens[0] = 3;

    reply = pki_redis_cmd(r, 2, argv, lens, res);
    if (reply == NULL) {
        return res != NULL ? res->status : PKI_UNAVAILABLE;
    }

    *won = reply->type == REDIS_REPLY_STRING
           && reply->len == lens[2]
           && memcmp(reply->str, token, lens[2]) == 0;
    freeReplyObject(reply);

    return PKI_OK;
}


PKI_API pki_status_t
pki_crl_lock_renew(pki_redis_t *r, const char *ca, const char *token,
    long ttl_ms, int *held, pki_result_t *res)
{
    char          key[PKI_REDIS_KEY_MAX];
    long long     v;
    pki_args_t    a;
    pki_status_t  st;

    if (r == NULL || token == NULL || held == NULL || ttl_ms <= 0) {
        return pki_fail(res, PKI_INTERNAL, "redis: bad CRL lock");
    }

    if (!pki_redis_key(r, ca, "crl_lock", NULL, key, sizeof(key), NULL,
                       res))
    {
        return res != NULL ? res->status : PKI_INTERNAL;
    }

    memset(&a, 0, sizeof(a));
    pki_args_str(&a, "EVAL");
    pki_args_str(&a, pki_lua_crl_renew);
    pki_args_str(&a, "1");
    pki_args_str(&a, key);
    pki_args_str(&a, token);
    pki_args_num(&a, ttl_ms);

    st = pki_redis_eval(r, &a, &v, res);
    if (st == PKI_OK) {
        *held = v == 1;
    }

    return st;
}


PKI_API pki_status_t
pki_crl_unlock(pki_redis_t *r, const char *ca, const char *token,
    pki_result_t *res)
{
    char        key[PKI_REDIS_KEY_MAX];
    long long   v;
    pki_args_t  a;

    if (r == NULL || token == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: bad CRL lock");
    }

    if (!pki_redis_key(r, ca, "crl_lock", NULL, key, sizeof(key), NULL,
                       res))
    {
        return res != NULL ? res->status : PKI_INTERNAL;
    }

    memset(&a, 0, sizeof(a));
    pki_args_str(&a, "EVAL");
    pki_args_str(&a, pki_lua_crl_unlock);
    pki_args_str(&a, "1");
    pki_args_str(&a, key);
    pki_args_str(&a, token);

    return pki_redis_eval(r, &a, &v, res);
}


/* ---- generic commands for the protocol engines (acme.c) ----------------- */

/* One command with the connection handling above (acme_int.h). */
redisReply *
pki_int_redis_cmd(pki_redis_t *r, int argc, const char **argv,
    const size_t *lens, pki_result_t *res)
{
    if (r == NULL || argc <= 0 || argc > PKI_REDIS_ARGS_MAX) {
        pki_fail(res, PKI_INTERNAL, "redis: bad command");
        return NULL;
    }

    return pki_redis_cmd(r, argc, argv, lens, res);
}


/* ---- for core/metrics.c ----------------------------------------------------- */

/* The command wrapper above without an argument cap (a metrics flush
 * carries up to 256 fields); a redisReply *, the caller frees it with
 * freeReplyObject. */
void *
pki_int_redis_command(pki_redis_t *r, int argc, const char **argv,
    const size_t *lens, pki_result_t *res)
{
    return pki_int_redis_command_sent(r, argc, argv, lens, NULL, res);
}


/* The Redis server's clock in milliseconds since the epoch, -1 with res
 * filled when it cannot be read: times that hosts compare with each other
 * are taken from the one clock they share. */
long long
pki_int_redis_time_ms(pki_redis_t *r, pki_result_t *res)
{
    long long    t[2];
    const char  *argv[1] = { "TIME" };
    size_t       lens[1] = { 4 };
    redisReply  *reply;

    reply = pki_int_redis_command(r, 1, argv, lens, res);
    if (reply == NULL) {
        return -1;
    }

    t[0] = t[1] = -1;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
        || !pki_int_redis_numbers(reply->element[0], &t[0], 1)
        || !pki_int_redis_numbers(reply->element[1], &t[1], 1)
        || t[0] > LLONG_MAX / 1000 - 1)
    {
        freeReplyObject(reply);
        pki_int_redis_drop(r);
        pki_fail(res, PKI_UNAVAILABLE, "redis: unexpected reply to TIME");
        return -1;
    }
    freeReplyObject(reply);

    return t[0] * 1000 + t[1] / 1000;
}


/* The same, telling a command that may have run without an answer
 * (*sent, see pki_redis_cmd_sent) from one that surely did not. */
void *
pki_int_redis_command_sent(pki_redis_t *r, int argc, const char **argv,
    const size_t *lens, int *sent, pki_result_t *res)
{
    if (r == NULL || argc <= 0) {
        pki_fail(res, PKI_INTERNAL, "redis: bad command");
        return NULL;
    }

    return pki_redis_cmd_sent(r, argc, argv, lens, sent, res);
}


/* A store like r (server, password, database, namespace) whose connect
 * and each command wait at most timeout_ms: a worker's last history flush
 * at exit, which must not hold the exit up for the store's own timeout.
 * Its connections are its own; pki_redis_free() it. */
pki_redis_t *
pki_int_redis_dup(const pki_redis_t *r, int timeout_ms, pki_result_t *res)
{
    pki_redis_t      *d;
    pki_redis_conf_t  conf;

    if (r == NULL || timeout_ms <= 0) {
        pki_fail(res, PKI_INTERNAL, "redis: nothing to copy");
        return NULL;
    }

    memset(&conf, 0, sizeof(conf));
    conf.host = r->host;
    conf.port = r->port;
    conf.unix_path = r->unix_path;
    conf.password = r->password;
    conf.db = r->db;
    conf.ns = r->ns;
    conf.timeout_ms = timeout_ms;

    d = pki_redis_new(&conf, res);
    if (d != NULL) {
        /* the same server: a policy found good is not asked again */
        d->policy_at = __atomic_load_n(&r->policy_at, __ATOMIC_RELAXED);
        d->aof = __atomic_load_n(&r->aof, __ATOMIC_RELAXED);
    }

    return d;
}


/* Drops this thread's connection after a reply it did not expect. */
void
pki_int_redis_drop(pki_redis_t *r)
{
    if (r != NULL) {
        pki_redis_drop(r);
    }
}


/* ---- the withdrawal marker (issue.c writes it, scep.c reads it) ---------- */

/* pki_int_issue_withdraw marks the record of the certificate it revoked
 * ("withdrawn" 1): SCEP CertPoll issues the request of an interrupted
 * issuance anew after a withdrawal, never after an operator revoked its
 * certificate (whatever the reason).  ARGV[1] "1" marks a revoked record
 * (0: not revoked); else 1 if it is marked, 0 if not. */
static const char  pki_lua_withdrawn[] =
    "if ARGV[1] == '1' then "
    "if redis.call('HGET', KEYS[1], 'status') ~= 'revoked' then "
    "return 0 end "
    "redis.call('HSET', KEYS[1], 'withdrawn', '1') "
    "return 1 end "
    "if redis.call('HGET', KEYS[1], 'withdrawn') == '1' then return 1 end "
    "return 0";


/* mark: marks serial's record; else reads the mark.  *yes: 1 marked. */
pki_status_t
pki_int_record_withdrawn(pki_redis_t *r, const char *ca, const char *serial,
    int mark, int *yes, pki_result_t *res)
{
    long long     v;
    pki_args_t    a;
    pki_status_t  st;
    char          kcert[PKI_REDIS_KEY_MAX];

    *yes = 0;

    if (r == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store");
    }

    if (serial == NULL
        || !pki_redis_key(r, ca, "cert:", serial, kcert, sizeof(kcert),
                          NULL, res))
    {
        return res != NULL && res->status != PKI_OK ? res->status
               : pki_fail(res, PKI_MALFORMED, "bad serial number");
    }

    memset(&a, 0, sizeof(a));
    pki_args_str(&a, "EVAL");
    pki_args_str(&a, pki_lua_withdrawn);
    pki_args_str(&a, "1");
    pki_args_str(&a, kcert);
    pki_args_str(&a, mark ? "1" : "0");

    st = pki_redis_eval(r, &a, &v, res);
    if (st == PKI_OK) {
        *yes = v == 1;
    }

    return st;
}


/* ---- batch reservation and commit (pki_issue_batch) -----------------------
 *
 * The same two steps as pki_record_reserve/pki_record_commit, for many
 * records in one round trip each: the records go in chunks of
 * PKI_BATCH_CHUNK per EVAL (so one script never blocks Redis for long), and
 * all chunks of a step are pipelined (written at once, replies read after).
 * Redis runs them in one or a few event-loop turns, so under appendfsync
 * always a batch costs one or a few fsyncs instead of one per record.  Per
 * record, the scripts do exactly what the single ones do.
 */

#define PKI_BATCH_CHUNK      128
#define PKI_RESERVE_FIELDS   28      /* field/value args per record */
#define PKI_COMMIT_FIELDS    14      /* notAfter, serial + 6 pairs */

/* KEYS: serial key, record key per record; ARGV[1] reservation value,
 * ARGV[2] arguments per record, then each record's field/value pairs.
 * Per record 1 reserved, 0 taken; then Redis's time (milliseconds). */
static const char  pki_lua_reserve_batch[] =
    PKI_LUA_NOW
    "local f = tonumber(ARGV[2]) "
    "local out = {} "
    "for i = 1, #KEYS / 2 do "
    "  local b = 3 + (i - 1) * f "
    "  if redis.call('SET', KEYS[2 * i - 1], ARGV[1], 'NX') then "
    "    redis.call('DEL', KEYS[2 * i]) "
    "    redis.call('HSET', KEYS[2 * i], unpack(ARGV, b, b + f - 1)) "
    "    redis.call('EXPIRE', KEYS[2 * i], " PKI_PENDING_TTL ") "
    "    out[i] = 1 "
    "  else "
    "    out[i] = 0 "
    "  end "
    "end "
    "out[#KEYS / 2 + 1] = now "
    "return out";

/*
 * The same, each record's key also named in an index of the caller's (a
 * Matter PAI's index of the device keys it certified, matter_api.c) in
 * the reservation's step: KEYS: serial key, record key, index entry per
 * record; ARGV[1] reservation value, ARGV[2] arguments per record, ARGV[3]
 * the claim the batch holds on each entry, then each record's field/value
 * pairs (the first pair is "serial" and the record's serial).  A record
 * reserved sets its entry to "s:<serial>" (no TTL): from then on the entry
 * names a pending record (the key busy), then the committed one, or one
 * that is gone (abandoned, or expired after a worker died: the key free),
 * so no step after the commit is needed to index it.  Nothing is written
 * unless every entry of the chunk is still the claim.  Per record 1
 * reserved, 0 taken, -1 its entry is not the claim (lost or taken), -2
 * not tried (another's was not); then Redis's time.  Run twice (its answer
 * lost, sent again on a new connection), a record whose entry already
 * names it is reserved.
 */
static const char  pki_lua_reserve_batch_ix[] =
    PKI_LUA_NOW
    "local f = tonumber(ARGV[2]) "
    "local out = {} "
    "local lost = false "
    "for i = 1, #KEYS / 3 do "
    "  local v = redis.call('GET', KEYS[3 * i]) "
    "  if v ~= ARGV[3] and v ~= 's:' .. ARGV[5 + (i - 1) * f] then "
    "    out[i] = -1 "
    "    lost = true "
    "  end "
    "end "
    "for i = 1, #KEYS / 3 do "
    "  local b = 4 + (i - 1) * f "
    "  if lost then "
    "    if not out[i] then out[i] = -2 end "
    "  elseif redis.call('GET', KEYS[3 * i]) ~= ARGV[3] then "
    "    out[i] = 1 "
    "  elseif redis.call('SET', KEYS[3 * i - 2], ARGV[1], 'NX') then "
    "    redis.call('DEL', KEYS[3 * i - 1]) "
    "    redis.call('HSET', KEYS[3 * i - 1], unpack(ARGV, b, b + f - 1)) "
    "    redis.call('EXPIRE', KEYS[3 * i - 1], " PKI_PENDING_TTL ") "
    "    redis.call('SET', KEYS[3 * i], 's:' .. ARGV[b + 1]) "
    "    out[i] = 1 "
    "  else "
    "    out[i] = 0 "
    "  end "
    "end "
    "out[#KEYS / 3 + 1] = now "
    "return out";

/* KEYS[1] expiry index, KEYS[1 + i] record i; ARGV[1] arguments per
 * record, ARGV[2] the deadline (as pki_lua_commit's), then per record:
 * notAfter, serial, field/value pairs.  Per record 1, 0: no record, -1:
 * not pending, -2: too late (not written). */
static const char  pki_lua_commit_batch[] =
    PKI_LUA_WANT("KEYS[1]", "zset")
    "local f = tonumber(ARGV[1]) "
    "local late = false "
    "if tonumber(ARGV[2]) > 0 then "
    PKI_LUA_NOW
    "  late = now > tonumber(ARGV[2]) "
    "end "
    "local out = {} "
    "for i = 1, #KEYS - 1 do "
    "  local b = 3 + (i - 1) * f "
    "  local st = redis.call('HGET', KEYS[1 + i], 'status') "
    "  if not st then "
    "    out[i] = 0 "
    "  elseif st ~= 'pending' then "
    "    out[i] = -1 "
    "  elseif late then "
    "    out[i] = -2 "
    "  else "
    "    redis.call('HSET', KEYS[1 + i], unpack(ARGV, b + 2, b + f - 1)) "
    "    redis.call('PERSIST', KEYS[1 + i]) "
    "    redis.call('ZADD', KEYS[1], ARGV[b], ARGV[b + 1]) "
    "    out[i] = 1 "
    "  end "
    "end "
    "return out";


/* One command of a pipeline: argument vectors sized up front, numbers
 * and keys stored in the command's own buffer (never moved). */
typedef struct {
    int           argc;
    int           cap;
    const char  **argv;
    size_t       *lens;
    char         *store;
    size_t        used;
    size_t        size;
} pki_pcmd_t;


static int
pki_pcmd_init(pki_pcmd_t *c, int cap, size_t store)
{
    memset(c, 0, sizeof(*c));

    c->argv = malloc((size_t) cap * sizeof(char *));
    c->lens = malloc((size_t) cap * sizeof(size_t));
    c->store = malloc(store);

    if (c->argv == NULL || c->lens == NULL || c->store == NULL) {
        free(c->argv);
        free(c->lens);
        free(c->store);
        memset(c, 0, sizeof(*c));
        return 0;
    }

    c->cap = cap;
    c->size = store;

    return 1;
}


static void
pki_pcmd_free(pki_pcmd_t *c)
{
    free(c->argv);
    free(c->lens);
    free(c->store);
    memset(c, 0, sizeof(*c));
}


static void
pki_pcmd_add(pki_pcmd_t *c, const char *s, size_t len)
{
    if (c->argc < c->cap) {
        c->argv[c->argc] = s != NULL ? s : "";
        c->lens[c->argc] = s != NULL ? len : 0;
        c->argc++;
    }
}


static void
pki_pcmd_str(pki_pcmd_t *c, const char *s)
{
    pki_pcmd_add(c, s, s != NULL ? strlen(s) : 0);
}


/* A copy of s in the command's buffer (keys, numbers). */
static void
pki_pcmd_copy(pki_pcmd_t *c, const char *s)
{
    size_t  len = strlen(s);

    if (c->used + len + 1 > c->size) {
        c->argc = c->cap + 1;             /* marks the command broken */
        return;
    }

    memcpy(c->store + c->used, s, len + 1);
    pki_pcmd_add(c, c->store + c->used, len);
    c->used += len + 1;
}


static void
pki_pcmd_num(pki_pcmd_t *c, long long v)
{
    char  buf[24];

    snprintf(buf, sizeof(buf), "%lld", v);
    pki_pcmd_copy(c, buf);
}


/* Sends ncmd commands at once and reads their replies (caller frees each
 * reply).  Connection failures fail the whole pipeline (every command of
 * the batch steps and of the record reads is safe to repeat, as in
 * pki_redis_cmd: the retry on a reused connection that died is the same).
 * With arrays set, so do error replies and replies other than arrays;
 * otherwise the caller checks each reply.  what names the commands in
 * res. */
static pki_status_t
pki_redis_pipeline(pki_redis_t *r, pki_pcmd_t *cmds, size_t ncmd,
    redisReply **replies, const char *what, int arrays, pki_result_t *res)
{
    int             reused, attempt, err, eno;
    size_t          i, got;
    double          t0, dt;
    redisContext   *c;
    redisReply     *reply;
    pki_sigpipe_t   sp;

    for (i = 0; i < ncmd; i++) {
        replies[i] = NULL;
        if (cmds[i].argc > cmds[i].cap) {
            return pki_fail(res, PKI_INTERNAL, "redis: batch command too "
                            "large");
        }
    }

    for (attempt = 0; ; attempt++) {
        c = pki_redis_conn(r, &reused, res);
        if (c == NULL) {
            pki_int_observe(PKI_EV_REDIS, -1, PKI_UNAVAILABLE, NULL);
            return PKI_UNAVAILABLE;
        }

        pki_int_sigpipe_block(&sp);
        t0 = pki_int_now();

        err = REDIS_OK;
        for (i = 0; i < ncmd && err == REDIS_OK; i++) {
            err = redisAppendCommandArgv(c, cmds[i].argc, cmds[i].argv,
                                         cmds[i].lens);
        }

        got = 0;
        eno = 0;

        if (err == REDIS_OK) {
            /* the whole batch within the timeout: Redis answers one in
             * a few milliseconds */
            for (got = 0; got < ncmd; got++) {
                reply = NULL;
                if (pki_redis_get_reply(r, c, t0 + r->timeout_ms / 1000.0,
                                        &reply, NULL) != REDIS_OK
                    || reply == NULL)
                {
                    eno = errno;
                    break;
                }
                replies[got] = reply;
            }
        }

        dt = pki_int_now() - t0;
        for (i = 0; i < ncmd; i++) {
            pki_int_observe(PKI_EV_REDIS, dt,
                            got == ncmd ? PKI_OK : PKI_UNAVAILABLE, NULL);
        }
        pki_int_sigpipe_restore(&sp);

        if (got == ncmd) {
            if (attempt > 0 && res != NULL) {
                res->status = PKI_OK;       /* the retry mended it */
                res->detail[0] = '\0';
            }
            break;
        }

        for (i = 0; i < got; i++) {
            freeReplyObject(replies[i]);
            replies[i] = NULL;
        }

        err = c->err;
        pki_redis_unavailable(res, what, c->errstr);
        pki_redis_drop(r);

        if (!reused || attempt > 0 || got > 0
            || !(err == REDIS_ERR_EOF
                 || (err == REDIS_ERR_IO
                     && (eno == EPIPE || eno == ECONNRESET))))
        {
            return PKI_UNAVAILABLE;
        }

        if (res != NULL) {
            pki_log(res, "; retrying on a new connection");
        }
    }

    for (i = 0; arrays && i < ncmd; i++) {
        reply = replies[i];

        if (reply->type == REDIS_REPLY_ERROR) {
            pki_redis_error(r, what, reply->str, res);
            goto failed;
        }

        if (reply->type != REDIS_REPLY_ARRAY) {
            pki_redis_unavailable(res, what, "unexpected reply type");
            pki_redis_drop(r);
            goto failed;
        }
    }

    return PKI_OK;

failed:

    for (i = 0; i < ncmd; i++) {
        freeReplyObject(replies[i]);
        replies[i] = NULL;
    }

    return PKI_UNAVAILABLE;
}


/*
 * One record of a page (pki_record_list): the reply of HGETALL key, or
 * NULL with res filled.  A key of another type (WRONGTYPE: only something
 * else writing under the namespace makes one) is no failure of the store:
 * NULL with *skip set and a note in res's log, and the page goes on
 * without it, as past a corrupt record.  Any other error (connection,
 * timeout, READONLY, NOPERM) still fails the page.  The command goes as a
 * pipeline of one, which hands its error reply back (pki_redis_cmd makes
 * every error reply NULL): one round trip, one command, as before.
 */
static redisReply *
pki_record_list_get(pki_redis_t *r, const char *key, int *skip,
    pki_result_t *res)
{
    size_t        lens[2];
    const char   *argv[2];
    pki_pcmd_t    cmd;
    redisReply   *reply;

    *skip = 0;

    argv[0] = "HGETALL";
    argv[1] = key;
    lens[0] = 7;
    lens[1] = strlen(key);

    memset(&cmd, 0, sizeof(cmd));
    cmd.argc = 2;
    cmd.cap = 2;
    cmd.argv = argv;
    cmd.lens = lens;

    if (pki_redis_pipeline(r, &cmd, 1, &reply, "HGETALL", 0, res) != PKI_OK)
    {
        return NULL;
    }

    if (reply->type != REDIS_REPLY_ERROR) {
        return reply;
    }

    if (reply->len >= 9 && memcmp(reply->str, "WRONGTYPE", 9) == 0
        && (reply->len == 9 || reply->str[9] == ' '))
    {
        *skip = 1;
        pki_log(res, "%sredis: %s is not a hash (WRONGTYPE): not listed",
                (res != NULL && res->log[0] != '\0') ? "; " : "", key);

    } else {
        pki_redis_error(r, "HGETALL", reply->str, res);
    }

    freeReplyObject(reply);
    return NULL;
}


/* Runs the chunks and maps each record's integer answer into out[]; with
 * extra set, each chunk's answer ends with one more integer, the largest
 * of which goes to *extra. */
static pki_status_t
pki_redis_batch_run(pki_redis_t *r, pki_pcmd_t *cmds, size_t nchunks,
    size_t n, long long *out, long long *extra, pki_result_t *res)
{
    size_t         k, j, base, cnt;
    redisReply   **replies, *e;
    pki_status_t   st;

    replies = calloc(nchunks, sizeof(redisReply *));
    if (replies == NULL) {
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    st = pki_redis_pipeline(r, cmds, nchunks, replies, "EVAL (batch)", 1,
                            res);
    if (st != PKI_OK) {
        free(replies);
        return st;
    }

    for (k = 0; k < nchunks; k++) {
        base = k * PKI_BATCH_CHUNK;
        cnt = n - base < PKI_BATCH_CHUNK ? n - base : PKI_BATCH_CHUNK;

        if (replies[k]->elements != cnt + (extra != NULL)) {
            st = pki_redis_unavailable(res, "EVAL (batch)",
                                       "unexpected reply length");
            pki_redis_drop(r);
            break;
        }

        for (j = 0; j < cnt; j++) {
            e = replies[k]->element[j];
            if (e == NULL || e->type != REDIS_REPLY_INTEGER) {
                st = pki_redis_unavailable(res, "EVAL (batch)",
                                           "unexpected reply type");
                pki_redis_drop(r);
                break;
            }
            out[base + j] = e->integer;
        }

        if (st != PKI_OK) {
            break;
        }

        if (extra != NULL) {
            e = replies[k]->element[cnt];
            if (e == NULL || e->type != REDIS_REPLY_INTEGER) {
                st = pki_redis_unavailable(res, "EVAL (batch)",
                                           "unexpected reply type");
                pki_redis_drop(r);
                break;
            }

            if (k == 0 || e->integer > *extra) {
                *extra = e->integer;
            }
        }
    }

    for (k = 0; k < nchunks; k++) {
        freeReplyObject(replies[k]);
    }
    free(replies);

    return st;
}


PKI_API pki_status_t
pki_record_reserve_batch(pki_redis_t *r, const pki_record_t *recs,
    size_t n, int *taken, pki_result_t *res)
{
    return pki_int_record_reserve_batch(r, recs, n, taken, NULL, NULL, NULL,
                                        res);
}


pki_status_t
pki_int_record_reserve_batch(pki_redis_t *r, const pki_record_t *recs,
    size_t n, int *taken, pki_int_rsv_t *rsv, const char *claim,
    const char *const *ixkeys, pki_result_t *res)
{
    int                  per;
    size_t               i, k, nchunks, cnt;
    time_t               created;
    long long           *out, now;
    pki_pcmd_t          *cmds;
    pki_status_t         st;
    const pki_record_t  *rec;
    char                 key[PKI_REDIS_KEY_MAX], serial[41];

    if (r == NULL || recs == NULL || taken == NULL || n == 0) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store or records");
    }

    /* an index: every record has its entry, and the claim */
    per = ixkeys != NULL ? 3 : 2;

    for (i = 0; ixkeys != NULL && i < n; i++) {
        if (claim == NULL || ixkeys[i] == NULL
            || strlen(ixkeys[i]) >= PKI_REDIS_KEY_MAX)
        {
            return pki_fail(res, PKI_INTERNAL, "redis: bad index key");
        }
    }

    nchunks = (n + PKI_BATCH_CHUNK - 1) / PKI_BATCH_CHUNK;
    cmds = calloc(nchunks, sizeof(pki_pcmd_t));
    out = calloc(n, sizeof(long long));
    if (cmds == NULL || out == NULL) {
        free(cmds);
        free(out);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    created = time(NULL);
    st = PKI_OK;

    for (k = 0; k < nchunks && st == PKI_OK; k++) {
        cnt = n - k * PKI_BATCH_CHUNK;
        if (cnt > PKI_BATCH_CHUNK) {
            cnt = PKI_BATCH_CHUNK;
        }

        if (!pki_pcmd_init(&cmds[k],
                           (int) (6 + cnt * (per + PKI_RESERVE_FIELDS)),
                           cnt * (3 * PKI_REDIS_KEY_MAX + 8 * 24) + 64))
        {
            st = pki_fail(res, PKI_INTERNAL, "out of memory");
            break;
        }

        pki_pcmd_str(&cmds[k], "EVAL");
        pki_pcmd_str(&cmds[k], ixkeys != NULL ? pki_lua_reserve_batch_ix
                                              : pki_lua_reserve_batch);
        pki_pcmd_num(&cmds[k], (long long) (per * cnt));

        for (i = k * PKI_BATCH_CHUNK; i < k * PKI_BATCH_CHUNK + cnt; i++) {
            rec = &recs[i];

            if (!pki_redis_key(r, rec->ca, "serial:", rec->serial, key,
                               sizeof(key), serial, res))
            {
                st = res != NULL ? res->status : PKI_INTERNAL;
                break;
            }
            pki_pcmd_copy(&cmds[k], key);

            if (!pki_redis_key(r, rec->ca, "cert:", rec->serial, key,
                               sizeof(key), NULL, res)
                || !pki_record_strings_ok(rec, res))
            {
                st = res != NULL ? res->status : PKI_INTERNAL;
                break;
            }
            pki_pcmd_copy(&cmds[k], key);

            if (ixkeys != NULL) {
                pki_pcmd_copy(&cmds[k], ixkeys[i]);
            }
        }

        pki_pcmd_num(&cmds[k], (long long) created);
        pki_pcmd_num(&cmds[k], PKI_RESERVE_FIELDS);

        if (ixkeys != NULL) {
            pki_pcmd_str(&cmds[k], claim);
        }

        for (i = k * PKI_BATCH_CHUNK;
             st == PKI_OK && i < k * PKI_BATCH_CHUNK + cnt; i++)
        {
            rec = &recs[i];

            (void) pki_serial_normalize(rec->serial, serial);
            pki_pcmd_str(&cmds[k], "serial");
            pki_pcmd_copy(&cmds[k], serial);
            pki_pcmd_str(&cmds[k], "ca");
            pki_pcmd_str(&cmds[k], rec->ca);
            pki_pcmd_str(&cmds[k], "template");
            pki_pcmd_str(&cmds[k], rec->template_name);
            pki_pcmd_str(&cmds[k], "subject");
            pki_pcmd_str(&cmds[k], rec->subject);
            pki_pcmd_str(&cmds[k], "sans");
            pki_pcmd_str(&cmds[k], rec->sans);
            pki_pcmd_str(&cmds[k], "requester");
            pki_pcmd_str(&cmds[k], rec->requester);
            pki_pcmd_str(&cmds[k], "client");
            pki_pcmd_str(&cmds[k], rec->client);
            pki_pcmd_str(&cmds[k], "protocol");
            pki_pcmd_str(&cmds[k], rec->protocol);
            pki_pcmd_str(&cmds[k], "status");
            pki_pcmd_str(&cmds[k], "pending");
            pki_pcmd_str(&cmds[k], "reason");
            pki_pcmd_str(&cmds[k], "0");
            pki_pcmd_str(&cmds[k], "revoked_at");
            pki_pcmd_str(&cmds[k], "0");
            pki_pcmd_str(&cmds[k], "not_before");
            pki_pcmd_num(&cmds[k], (long long) rec->not_before);
            pki_pcmd_str(&cmds[k], "not_after");
            pki_pcmd_num(&cmds[k], (long long) rec->not_after);
            pki_pcmd_str(&cmds[k], "created");
            pki_pcmd_num(&cmds[k], (long long) (rec->created != 0
                                                ? rec->created : created));
        }
    }

    now = 0;

    if (st == PKI_OK) {
        st = pki_redis_batch_run(r, cmds, nchunks, n, out, &now, res);
    }

    if (st == PKI_OK) {
        for (i = 0; i < n; i++) {
            taken[i] = out[i] == 1 ? 0 : out[i] < 0 ? (int) out[i] : 1;
        }

        /* the chunks ran in one pipeline: the latest time is the best
         * lower bound of Redis's clock */
        pki_rsv_set(rsv, now);
    }

    for (k = 0; k < nchunks; k++) {
        pki_pcmd_free(&cmds[k]);
    }
    free(cmds);
    free(out);

    return st;
}


PKI_API pki_status_t
pki_record_commit_batch(pki_redis_t *r, const pki_record_t *recs,
    size_t n, pki_status_t *status, pki_result_t *res)
{
    return pki_int_record_commit_batch(r, recs, n, status, NULL, NULL, res);
}


pki_status_t
pki_int_record_commit_batch(pki_redis_t *r, const pki_record_t *recs,
    size_t n, pki_status_t *status, const pki_int_rsv_t *rsv, int *late,
    pki_result_t *res)
{
    size_t               i, k, nchunks, cnt;
    long long           *out, deadline;
    pki_pcmd_t          *cmds;
    pki_status_t         st;
    const pki_record_t  *rec;
    char                 key[PKI_REDIS_KEY_MAX], serial[41];

    if (r == NULL || recs == NULL || status == NULL || n == 0) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store or records");
    }

    for (i = 0; i < n; i++) {
        if (recs[i].der == NULL || recs[i].der_len == 0) {
            return pki_fail(res, PKI_INTERNAL, "redis: commit without a "
                            "certificate");
        }
    }

    nchunks = (n + PKI_BATCH_CHUNK - 1) / PKI_BATCH_CHUNK;
    cmds = calloc(nchunks, sizeof(pki_pcmd_t));
    out = calloc(n, sizeof(long long));
    if (cmds == NULL || out == NULL) {
        free(cmds);
        free(out);
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    st = PKI_OK;
    deadline = pki_rsv_deadline(r, rsv);

    for (k = 0; k < nchunks && st == PKI_OK; k++) {
        cnt = n - k * PKI_BATCH_CHUNK;
        if (cnt > PKI_BATCH_CHUNK) {
            cnt = PKI_BATCH_CHUNK;
        }

        if (!pki_pcmd_init(&cmds[k], (int) (6 + cnt * (1 + PKI_COMMIT_FIELDS)),
                           cnt * (PKI_REDIS_KEY_MAX + 5 * 24 + 41)
                           + PKI_REDIS_KEY_MAX + 64))
        {
            st = pki_fail(res, PKI_INTERNAL, "out of memory");
            break;
        }

        pki_pcmd_str(&cmds[k], "EVAL");
        pki_pcmd_str(&cmds[k], pki_lua_commit_batch);
        pki_pcmd_num(&cmds[k], (long long) (1 + cnt));

        if (!pki_redis_key(r, recs[k * PKI_BATCH_CHUNK].ca, "expiry", NULL,
                           key, sizeof(key), NULL, res))
        {
            st = res != NULL ? res->status : PKI_INTERNAL;
            break;
        }
        pki_pcmd_copy(&cmds[k], key);

        for (i = k * PKI_BATCH_CHUNK; i < k * PKI_BATCH_CHUNK + cnt; i++) {
            rec = &recs[i];

            if (strcmp(rec->ca, recs[0].ca) != 0
                || !pki_redis_key(r, rec->ca, "cert:", rec->serial, key,
                                  sizeof(key), NULL, res)
                || !pki_record_strings_ok(rec, res))
            {
                st = res != NULL && res->status != PKI_OK ? res->status
                     : pki_fail(res, PKI_INTERNAL, "redis: one CA per "
                                "batch");
                break;
            }
            pki_pcmd_copy(&cmds[k], key);
        }

        pki_pcmd_num(&cmds[k], PKI_COMMIT_FIELDS);
        pki_pcmd_num(&cmds[k], deadline);

        for (i = k * PKI_BATCH_CHUNK;
             st == PKI_OK && i < k * PKI_BATCH_CHUNK + cnt; i++)
        {
            rec = &recs[i];

            (void) pki_serial_normalize(rec->serial, serial);
            pki_pcmd_num(&cmds[k], (long long) rec->not_after);
            pki_pcmd_copy(&cmds[k], serial);
            pki_pcmd_str(&cmds[k], "der");
            pki_pcmd_add(&cmds[k], (const char *) rec->der, rec->der_len);
            pki_pcmd_str(&cmds[k], "status");
            pki_pcmd_str(&cmds[k], "good");
            pki_pcmd_str(&cmds[k], "not_before");
            pki_pcmd_num(&cmds[k], (long long) rec->not_before);
            pki_pcmd_str(&cmds[k], "not_after");
            pki_pcmd_num(&cmds[k], (long long) rec->not_after);
            pki_pcmd_str(&cmds[k], "subject");
            pki_pcmd_str(&cmds[k], rec->subject != NULL ? rec->subject : "");
            pki_pcmd_str(&cmds[k], "sans");
            pki_pcmd_str(&cmds[k], rec->sans != NULL ? rec->sans : "");
        }
    }

    if (st == PKI_OK) {
        st = pki_redis_batch_run(r, cmds, nchunks, n, out, NULL, res);
    }

    if (st == PKI_OK) {
        for (i = 0; i < n; i++) {
            status[i] = out[i] == 1 ? PKI_OK
                        : (out[i] == 0 || out[i] == -2) ? PKI_UNAVAILABLE
                        : PKI_CONFLICT;
            if (late != NULL) {
                late[i] = out[i] == -2;
            }
        }
    }

    for (k = 0; k < nchunks; k++) {
        pki_pcmd_free(&cmds[k]);
    }
    free(cmds);
    free(out);

    return st;
}


/* ---- records read in one round trip (pki_ocsp_handle) ---------------------
 *
 * The HGETALLs of pki_record_get for many (CA, serial) pairs, pipelined:
 * written at once, the replies read after, so that an OCSP request naming
 * 100 certificates costs one round trip instead of 100 (a pool thread
 * waits for each).  Every command is a single-key read, so the pairs may
 * name several CAs (hash tags) and stay valid on a Redis Cluster.  Each
 * record is then taken from its reply exactly as pki_record_get takes it.
 */

struct pki_int_records_s {
    pki_redis_t         *r;
    size_t               n;
    const char *const   *cas;           /* borrowed */
    const char *const   *serials;       /* borrowed */
    redisReply         **replies;       /* NULL: bad key, not sent */
};


pki_status_t
pki_int_records_fetch(pki_redis_t *r, const char *const *cas,
    const char *const *serials, size_t n, pki_int_records_t **out,
    pki_result_t *res)
{
    char                *keys, *key;
    size_t               i, ncmd, *lens, *idx, m;
    const char         **argv;
    pki_status_t         st;
    pki_result_t         kres;
    pki_pcmd_t          *cmds;
    redisReply         **replies;
    pki_int_records_t   *b;

    *out = NULL;

    if (r == NULL || (n > 0 && (cas == NULL || serials == NULL))) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store");
    }

    m = n > 0 ? n : 1;
    st = PKI_OK;

    b = calloc(1, sizeof(*b));
    cmds = calloc(m, sizeof(*cmds));
    argv = malloc(2 * m * sizeof(*argv));
    lens = malloc(2 * m * sizeof(*lens));
    idx = malloc(m * sizeof(*idx));
    keys = malloc(m * PKI_REDIS_KEY_MAX);
    replies = calloc(m, sizeof(*replies));

    if (b == NULL || cmds == NULL || argv == NULL || lens == NULL
        || idx == NULL || keys == NULL || replies == NULL
        || (b->replies = calloc(m, sizeof(*b->replies))) == NULL)
    {
        st = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto failed;
    }

    b->r = r;
    b->n = n;
    b->cas = cas;
    b->serials = serials;

    /* a pair whose key cannot be built is not sent: pki_int_records_get()
     * builds it again and fails as pki_record_get() does */
    ncmd = 0;

    for (i = 0; i < n; i++) {
        key = keys + ncmd * PKI_REDIS_KEY_MAX;
        pki_result_init(&kres);

        if (serials[i] == NULL
            || !pki_redis_key(r, cas[i], "cert:", serials[i], key,
                              PKI_REDIS_KEY_MAX, NULL, &kres))
        {
            continue;
        }

        argv[2 * ncmd] = "HGETALL";
        lens[2 * ncmd] = 7;
        argv[2 * ncmd + 1] = key;
        lens[2 * ncmd + 1] = strlen(key);

        cmds[ncmd].argc = 2;
        cmds[ncmd].cap = 2;
        cmds[ncmd].argv = &argv[2 * ncmd];
        cmds[ncmd].lens = &lens[2 * ncmd];
        idx[ncmd] = i;
        ncmd++;
    }

    if (ncmd > 0) {
        st = pki_redis_pipeline(r, cmds, ncmd, replies, "HGETALL", 0, res);
        if (st != PKI_OK) {
            goto failed;
        }
    }

    for (i = 0; i < ncmd; i++) {
        b->replies[idx[i]] = replies[i];
    }

    *out = b;
    b = NULL;

failed:

    pki_int_records_free(b);
    free(cmds);
    free(argv);
    free(lens);
    free(idx);
    free(keys);
    free(replies);

    return st;
}


pki_status_t
pki_int_records_get(pki_int_records_t *b, size_t i, pki_record_t *rec,
    pki_result_t *res)
{
    redisReply    *reply;
    pki_status_t   st;
    char           kcert[PKI_REDIS_KEY_MAX], canon[41];

    if (rec == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no record");
    }

    memset(rec, 0, sizeof(*rec));

    if (b == NULL || i >= b->n) {
        return pki_fail(res, PKI_INTERNAL, "redis: no such pair");
    }

    if (b->serials[i] == NULL
        || !pki_redis_key(b->r, b->cas[i], "cert:", b->serials[i], kcert,
                          sizeof(kcert), canon, res))
    {
        return res != NULL && res->status != PKI_OK ? res->status
               : pki_fail(res, PKI_MALFORMED, "bad serial number");
    }

    reply = b->replies[i];
    if (reply == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no reply");
    }

    /* what pki_redis_cmd and pki_record_get make of the reply */
    if (reply->type == REDIS_REPLY_ERROR) {
        return pki_redis_error(b->r, "HGETALL", reply->str, res);
    }

    st = pki_record_from_reply(reply, b->cas[i], canon, rec, res);

    if (st == PKI_UNAVAILABLE) {
        pki_redis_drop(b->r);
    }

    return st;
}


void
pki_int_records_free(pki_int_records_t *b)
{
    size_t  i;

    if (b == NULL) {
        return;
    }

    for (i = 0; b->replies != NULL && i < b->n; i++) {
        if (b->replies[i] != NULL) {
            freeReplyObject(b->replies[i]);
        }
    }

    free(b->replies);
    free(b);
}


/* ---- pipelined commands for the protocol engines (acme.c) --------------- */

/* ncmd commands of argc arguments each (argv and lens: ncmd * argc
 * entries, command after command) through pki_redis_pipeline: one round
 * trip, replies[i] the reply of command i (acme_int.h). */
pki_status_t
pki_int_redis_pipeline(pki_redis_t *r, size_t ncmd, int argc,
    const char **argv, size_t *lens, redisReply **replies, const char *what,
    int arrays, pki_result_t *res)
{
    size_t         i;
    pki_pcmd_t    *cmds;
    pki_status_t   st;

    if (r == NULL || ncmd == 0 || argc <= 0 || argc > PKI_REDIS_ARGS_MAX) {
        return pki_fail(res, PKI_INTERNAL, "redis: bad command");
    }

    cmds = calloc(ncmd, sizeof(*cmds));
    if (cmds == NULL) {
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    for (i = 0; i < ncmd; i++) {
        cmds[i].argc = argc;
        cmds[i].cap = argc;
        cmds[i].argv = &argv[i * (size_t) argc];
        cmds[i].lens = &lens[i * (size_t) argc];
    }

    st = pki_redis_pipeline(r, cmds, ncmd, replies, what, arrays, res);

    free(cmds);

    return st;
}


/* ---- plans due, for the CRL (pki_record_plans_due) ------------------------
 *
 * Worker 0 carries due plans out every few seconds, 256 at a time, so a
 * CRL built meanwhile finds them in the plan, not in the revoked hash.
 * The plan (one key) names the serials; their records are read in chunks
 * of pipelined HMGETs, each a single-key read as on a Redis Cluster.
 */

#define PKI_PLANS_CHUNK  512


/* The record's status and plan from an HMGET status plan_at plan_reason
 * reply; 0 when it is not a good record with a plan. */
static int
pki_plan_reply(const redisReply *reply, pki_record_t *rec)
{
    time_t             t;
    const redisReply  *f;

    memset(rec, 0, sizeof(*rec));

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) {
        return 0;
    }

    f = reply->element[0];
    if (f->type != REDIS_REPLY_STRING || f->len != 4
        || memcmp(f->str, "good", 4) != 0)
    {
        return 0;
    }
    rec->status = PKI_CERT_GOOD;

    f = reply->element[1];
    if (f->type != REDIS_REPLY_STRING
        || !pki_parse_time(f, &rec->revoke_planned))
    {
        return 0;
    }

    f = reply->element[2];
    if (f->type != REDIS_REPLY_STRING || !pki_parse_time(f, &t) || t > 10) {
        return 0;
    }
    rec->planned_reason = (int) t;

    return 1;
}


/* The time of the earliest plan after now (0: none). */
static pki_status_t
pki_plan_next(pki_redis_t *r, const char *kplan, time_t now, time_t *next,
    pki_result_t *res)
{
    char         after[32];
    size_t       i, lens[8];
    const char  *argv[8];
    redisReply  *reply;

    *next = 0;

    snprintf(after, sizeof(after), "(%lld", (long long) now);

    argv[0] = "ZRANGEBYSCORE";
    argv[1] = kplan;
    argv[2] = after;
    argv[3] = "+inf";
    argv[4] = "WITHSCORES";
    argv[5] = "LIMIT";
    argv[6] = "0";
    argv[7] = "1";
    for (i = 0; i < 8; i++) {
        lens[i] = strlen(argv[i]);
    }

    reply = pki_redis_cmd(r, 8, argv, lens, res);
    if (reply == NULL) {
        return res != NULL ? res->status : PKI_UNAVAILABLE;
    }

    if (reply->type != REDIS_REPLY_ARRAY
        || (reply->elements != 0 && reply->elements != 2))
    {
        freeReplyObject(reply);
        pki_redis_drop(r);
        return pki_redis_unavailable(res, "ZRANGEBYSCORE",
                                     "unexpected reply");
    }

    if (reply->elements == 2
        && reply->element[1]->type == REDIS_REPLY_STRING)
    {
        *next = pki_plan_time(reply->element[1], now);
    }

    freeReplyObject(reply);

    return PKI_OK;
}


PKI_API pki_status_t
pki_record_plans_due(pki_redis_t *r, const char *ca, time_t now,
    pki_revoked_cb cb, void *arg, time_t *next, pki_result_t *res)
{
    int            stop;
    char           kplan[PKI_REDIS_KEY_MAX], num[24], serial[41];
    char          *keys, *canons;
    size_t         i, j, k, n, lens[4], *alens;
    const char    *argv[4], **aargv;
    redisReply    *due, **replies;
    pki_pcmd_t    *cmds;
    pki_record_t   rec;
    pki_status_t   st;
    pki_result_t   kres;

    if (next != NULL) {
        *next = 0;
    }

    if (r == NULL || cb == NULL) {
        return pki_fail(res, PKI_INTERNAL, "redis: no store or callback");
    }

    if (!pki_redis_key(r, ca, "revplan", NULL, kplan, sizeof(kplan), NULL,
                       res))
    {
        return res != NULL ? res->status : PKI_INTERNAL;
    }

    if (next != NULL) {
        st = pki_plan_next(r, kplan, now, next, res);
        if (st != PKI_OK) {
            return st;
        }
    }

    snprintf(num, sizeof(num), "%lld", (long long) now);

    argv[0] = "ZRANGEBYSCORE";
    argv[1] = kplan;
    argv[2] = "-inf";
    argv[3] = num;
    for (i = 0; i < 4; i++) {
        lens[i] = strlen(argv[i]);
    }

    due = pki_redis_cmd(r, 4, argv, lens, res);
    if (due == NULL) {
        return res != NULL ? res->status : PKI_UNAVAILABLE;
    }

    if (due->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(due);
        pki_redis_drop(r);
        return pki_redis_unavailable(res, "ZRANGEBYSCORE",
                                     "unexpected reply");
    }

    if (due->elements == 0) {
        freeReplyObject(due);
        return PKI_OK;
    }

    cmds = calloc(PKI_PLANS_CHUNK, sizeof(*cmds));
    aargv = malloc(5 * PKI_PLANS_CHUNK * sizeof(*aargv));
    alens = malloc(5 * PKI_PLANS_CHUNK * sizeof(*alens));
    keys = malloc(PKI_PLANS_CHUNK * PKI_REDIS_KEY_MAX);
    canons = malloc(PKI_PLANS_CHUNK * 41);
    replies = calloc(PKI_PLANS_CHUNK, sizeof(*replies));

    if (cmds == NULL || aargv == NULL || alens == NULL || keys == NULL
        || canons == NULL || replies == NULL)
    {
        st = pki_fail(res, PKI_INTERNAL, "out of memory");
        goto done;
    }

    st = PKI_OK;
    stop = 0;

    for (i = 0; i < due->elements && !stop; i += PKI_PLANS_CHUNK) {

        /* a member that names no serial is no plan of a certificate */
        n = 0;

        for (j = i; j < due->elements && j < i + PKI_PLANS_CHUNK; j++) {
            pki_result_init(&kres);

            if (due->element[j]->type != REDIS_REPLY_STRING
                || !pki_reply_copy(due->element[j], serial, sizeof(serial))
                || !pki_redis_key(r, ca, "cert:", serial,
                                  keys + n * PKI_REDIS_KEY_MAX,
                                  PKI_REDIS_KEY_MAX, canons + n * 41, &kres))
            {
                continue;
            }

            aargv[5 * n] = "HMGET";
            aargv[5 * n + 1] = keys + n * PKI_REDIS_KEY_MAX;
            aargv[5 * n + 2] = "status";
            aargv[5 * n + 3] = "plan_at";
            aargv[5 * n + 4] = "plan_reason";
            for (k = 0; k < 5; k++) {
                alens[5 * n + k] = strlen(aargv[5 * n + k]);
            }

            cmds[n].argc = 5;
            cmds[n].cap = 5;
            cmds[n].argv = &aargv[5 * n];
            cmds[n].lens = &alens[5 * n];
            n++;
        }

        if (n == 0) {
            continue;
        }

        st = pki_redis_pipeline(r, cmds, n, replies, "HMGET", 1, res);
        if (st != PKI_OK) {
            break;
        }

        for (k = 0; k < n; k++) {
            if (!stop && pki_plan_reply(replies[k], &rec)
                && pki_record_at(&rec, now))
            {
                stop = !cb(arg, canons + k * 41, rec.reason, rec.revoked_at,
                           rec.invalidity_date);
            }

            freeReplyObject(replies[k]);
            replies[k] = NULL;
        }
    }

done:

    freeReplyObject(due);
    free(cmds);
    free(aargv);
    free(alens);
    free(keys);
    free(canons);
    free(replies);

    return st;
}
