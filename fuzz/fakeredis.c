/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A tiny in-process Redis for the fuzz targets that need state (ACME,
 * Matter, SCEP): one thread serves a unix socket in the fixture's temporary
 * directory with an in-memory key space, so the engines run their real
 * store code (pki_redis_t, hiredis, RESP) against answers that make sense.
 *
 * The key space is restored from a snapshot before each input
 * (pki_fuzz_kv_reset), so every input sees the same state and a crash
 * reproduces.  Strings, hashes, sets and sorted sets (scores kept as text,
 * ranges, also by score, in insertion order; ZREMRANGEBYLEX compares the
 * members' bytes); TTLs are ignored.  EVAL
 * runs the core's Lua scripts with Lua 5.1 (Redis's version) and
 * redis.call bound to the same
 * key space, with Redis's conversion rules between RESP and Lua values
 * (and cjson.decode of Redis's libraries),
 * so reservations, commits, compare-and-set, the ACME account scripts and
 * SCEP's pending-request and challenge scripts really change the state.
 * (pki_fuzz_kv_eval_reply can force a fixed answer instead.)
 *
 * Speed: a round trip to a server thread costs two context switches, and
 * on a loaded machine each wake-up waits for a time slice (150 exec/s).
 * So the two hiredis calls that send a command, redisCommandArgv and
 * redisAppendCommandArgv, are interposed (this object defines them; the
 * executable's definition wins over libhiredis.so): on a connection to the
 * fake socket they run the command in the calling thread and feed the RESP
 * reply to the context's own reader (hiredis still parses every reply);
 * any other connection goes to the real functions (dlsym RTLD_NEXT).  The
 * thread still accepts and serves, for any other hiredis call.
 *
 * Bounded: at most PKI_KV_MAX_KEYS keys and PKI_KV_MAX_FIELDS members per
 * key, requests of at most PKI_KV_MAX_REQ bytes; beyond that it answers
 * an error reply.
 */

#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <cjson/cJSON.h>

#include "fuzz.h"


#define PKI_KV_MAX_KEYS    512
#define PKI_KV_MAX_FIELDS  1024
/* newOrder's one EVAL for 100 authorizations and the order: 311 */
#define PKI_KV_MAX_ARGS    512
#define PKI_KV_MAX_REQ     (4 * 1024 * 1024)
#define PKI_KV_MAX_CONNS   8

enum { KV_STRING = 1, KV_HASH, KV_SET, KV_ZSET };

typedef struct {
    char    *f;           /* field / member (NULL for a string)   */
    size_t   flen;
    char    *v;           /* value / score                        */
    size_t   vlen;
} kv_pair_t;

typedef struct {
    char       *key;
    size_t      klen;
    int         type;
    kv_pair_t  *p;
    size_t      n, cap;
} kv_ent_t;

typedef struct {
    kv_ent_t  e[PKI_KV_MAX_KEYS];
    size_t    n;
} kv_space_t;

typedef struct {
    int      fd;
    char    *buf;
    size_t   len, cap;
} kv_conn_t;


static pthread_mutex_t  kv_lock = PTHREAD_MUTEX_INITIALIZER;
static kv_space_t       kv_live, kv_snap;
static int              kv_listen = -1;
static kv_conn_t        kv_conns[PKI_KV_MAX_CONNS];
static char             kv_path[100];
static pki_redis_t     *kv_redis;
static char             kv_eval_reply[64];      /* "" : run the script */
static lua_State       *kv_lua;


/* ---- memory ---------------------------------------------------------------- */

static void *
kv_dup(const void *p, size_t n)
{
    char  *d;

    d = malloc(n + 1);
    if (d == NULL) {
        abort();
    }
    if (n) {
        memcpy(d, p, n);
    }
    d[n] = '\0';

    return d;
}


static void
kv_ent_free(kv_ent_t *e)
{
    size_t  i;

    for (i = 0; i < e->n; i++) {
        free(e->p[i].f);
        free(e->p[i].v);
    }
    free(e->p);
    free(e->key);
    memset(e, 0, sizeof(*e));
}


static void
kv_space_clear(kv_space_t *s)
{
    size_t  i;

    for (i = 0; i < s->n; i++) {
        kv_ent_free(&s->e[i]);
    }
    s->n = 0;
}


static void
kv_space_copy(kv_space_t *dst, const kv_space_t *src)
{
    size_t           i, j;
    kv_ent_t        *d;
    const kv_ent_t  *e;

    kv_space_clear(dst);

    for (i = 0; i < src->n; i++) {
        e = &src->e[i];
        d = &dst->e[i];
        d->key = kv_dup(e->key, e->klen);
        d->klen = e->klen;
        d->type = e->type;
        d->n = e->n;
        d->cap = e->n ? e->n : 1;
        d->p = calloc(d->cap, sizeof(kv_pair_t));
        if (d->p == NULL) {
            abort();
        }
        for (j = 0; j < e->n; j++) {
            d->p[j].f = e->p[j].f ? kv_dup(e->p[j].f, e->p[j].flen) : NULL;
            d->p[j].flen = e->p[j].flen;
            d->p[j].v = kv_dup(e->p[j].v, e->p[j].vlen);
            d->p[j].vlen = e->p[j].vlen;
        }
    }
    dst->n = src->n;
}


/* ---- key space ------------------------------------------------------------ */

static kv_ent_t *
kv_find(const char *key, size_t klen)
{
    size_t  i;

    for (i = 0; i < kv_live.n; i++) {
        if (kv_live.e[i].klen == klen
            && memcmp(kv_live.e[i].key, key, klen) == 0)
        {
            return &kv_live.e[i];
        }
    }

    return NULL;
}


static int
kv_del(const char *key, size_t klen)
{
    kv_ent_t  *e;

    e = kv_find(key, klen);
    if (e == NULL) {
        return 0;
    }

    kv_ent_free(e);
    *e = kv_live.e[--kv_live.n];
    memset(&kv_live.e[kv_live.n], 0, sizeof(kv_ent_t));

    return 1;
}


/* The entry of key with type (created when absent).  NULL: full, or
 * *wrongtype set when the key holds another type. */
static kv_ent_t *
kv_get(const char *key, size_t klen, int type, int create, int *wrongtype)
{
    kv_ent_t  *e;

    *wrongtype = 0;
    e = kv_find(key, klen);

    if (e != NULL) {
        if (e->type != type) {
            *wrongtype = 1;
            return NULL;
        }
        return e;
    }

    if (!create || kv_live.n == PKI_KV_MAX_KEYS) {
        return NULL;
    }

    e = &kv_live.e[kv_live.n++];
    memset(e, 0, sizeof(*e));
    e->key = kv_dup(key, klen);
    e->klen = klen;
    e->type = type;

    return e;
}


static kv_pair_t *
kv_field(kv_ent_t *e, const char *f, size_t flen)
{
    size_t  i;

    for (i = 0; i < e->n; i++) {
        if (e->p[i].flen == flen && memcmp(e->p[i].f, f, flen) == 0) {
            return &e->p[i];
        }
    }

    return NULL;
}


/* Sets field f (NULL: the string value) to v.  1 new, 0 replaced, -1 full */
static int
kv_put(kv_ent_t *e, const char *f, size_t flen, const char *v, size_t vlen)
{
    kv_pair_t  *p;

    p = f != NULL ? kv_field(e, f, flen) : (e->n ? &e->p[0] : NULL);
    if (p != NULL) {
        free(p->v);
        p->v = kv_dup(v, vlen);
        p->vlen = vlen;
        return 0;
    }

    if (e->n == PKI_KV_MAX_FIELDS) {
        return -1;
    }

    if (e->n == e->cap) {
        e->cap = e->cap * 2 + 4;
        e->p = realloc(e->p, e->cap * sizeof(kv_pair_t));
        if (e->p == NULL) {
            abort();
        }
    }

    p = &e->p[e->n++];
    p->f = f != NULL ? kv_dup(f, flen) : NULL;
    p->flen = flen;
    p->v = kv_dup(v, vlen);
    p->vlen = vlen;

    return 1;
}


static int
kv_unput(kv_ent_t *e, const char *f, size_t flen)
{
    kv_pair_t  *p;

    p = kv_field(e, f, flen);
    if (p == NULL) {
        return 0;
    }

    free(p->f);
    free(p->v);
    *p = e->p[--e->n];
    memset(&e->p[e->n], 0, sizeof(kv_pair_t));

    return 1;
}


/* ---- replies ------------------------------------------------------------------- */

typedef struct {
    char    *b;
    size_t   len, cap;
} kv_out_t;


static void
kv_emit(kv_out_t *o, const void *p, size_t n)
{
    if (o->len + n > o->cap) {
        o->cap = (o->len + n) * 2 + 256;
        o->b = realloc(o->b, o->cap);
        if (o->b == NULL) {
            abort();
        }
    }
    memcpy(o->b + o->len, p, n);
    o->len += n;
}


static void
kv_fmt(kv_out_t *o, const char *fmt, long long v)
{
    char  buf[64];
    int   n;

    n = snprintf(buf, sizeof(buf), fmt, v);
    kv_emit(o, buf, (size_t) n);
}


static void
kv_bulk(kv_out_t *o, const char *p, size_t n)
{
    kv_fmt(o, "$%lld\r\n", (long long) n);
    kv_emit(o, p, n);
    kv_emit(o, "\r\n", 2);
}


#define kv_str(o, s)    kv_emit(o, s, sizeof(s) - 1)
#define kv_int(o, v)    kv_fmt(o, ":%lld\r\n", (long long) (v))
#define kv_nil(o)       kv_str(o, "$-1\r\n")
#define kv_ok(o)        kv_str(o, "+OK\r\n")
#define kv_wrong(o)     kv_str(o, "-WRONGTYPE Operation against a key " \
                               "holding the wrong kind of value\r\n")
#define kv_full(o)      kv_str(o, "-ERR fuzz key space full\r\n")
#define kv_arity(o)     kv_str(o, "-ERR wrong number of arguments\r\n")


/* ---- commands ------------------------------------------------------------------ */

static void kv_exec(int argc, char **arg, size_t *len, kv_out_t *o);
static void kv_eval(int argc, char **arg, size_t *len, kv_out_t *o);


/* A score bound of ZCOUNT / ZREMRANGEBYSCORE: "-inf", "+inf", "(x", x */
static int
kv_score_in(const char *score, const char *min, const char *max)
{
    double  v, lo, hi;
    int     xlo, xhi;

    v = strtod(score, NULL);
    xlo = min[0] == '(';
    xhi = max[0] == '(';
    lo = strcmp(min, "-inf") == 0 ? -1e308 : strtod(min + xlo, NULL);
    hi = strcmp(max, "+inf") == 0 || strcmp(max, "inf") == 0
         ? 1e308 : strtod(max + xhi, NULL);

    return (xlo ? v > lo : v >= lo) && (xhi ? v < hi : v <= hi);
}

/* A member against the bounds of ZREMRANGEBYLEX: "-", "+", "[x", "(x" */
static int
kv_lex_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int  c;

    c = memcmp(a, b, alen < blen ? alen : blen);

    return c != 0 ? c : (alen > blen) - (alen < blen);
}


static int
kv_lex_in(const char *m, size_t mlen, const char *min, size_t minlen,
    const char *max, size_t maxlen)
{
    int  c;

    if (minlen == 0 || maxlen == 0) {
        return 0;
    }

    if (!(minlen == 1 && min[0] == '-')) {
        if (min[0] != '[' && min[0] != '(') {
            return 0;
        }
        c = kv_lex_cmp(m, mlen, min + 1, minlen - 1);
        if (c < 0 || (c == 0 && min[0] == '(')) {
            return 0;
        }
    }

    if (!(maxlen == 1 && max[0] == '+')) {
        if (max[0] != '[' && max[0] != '(') {
            return 0;
        }
        c = kv_lex_cmp(m, mlen, max + 1, maxlen - 1);
        if (c > 0 || (c == 0 && max[0] == '(')) {
            return 0;
        }
    }

    return 1;
}

#define IS(i, name)  (len[i] == sizeof(name) - 1 \
                      && strncasecmp(arg[i], name, sizeof(name) - 1) == 0)


static void
kv_exec(int argc, char **arg, size_t *len, kv_out_t *o)
{
    int         i, wt, r, nx, xx;
    long long   n;
    kv_ent_t   *e;
    kv_pair_t  *p;
    char        num[32];

    if (IS(0, "PING")) {
        kv_str(o, "+PONG\r\n");

    } else if (IS(0, "AUTH") || IS(0, "SELECT")) {
        kv_ok(o);

    } else if (IS(0, "EVAL") && kv_eval_reply[0] == '\0') {
        kv_eval(argc, arg, len, o);

    } else if (IS(0, "EVAL") || IS(0, "EVALSHA")) {
        kv_emit(o, kv_eval_reply, strlen(kv_eval_reply));

    } else if (IS(0, "TIME")) {
        r = snprintf(num, sizeof(num), "%lld", (long long) time(NULL));
        kv_fmt(o, "*%lld\r\n", 2);
        kv_bulk(o, num, (size_t) r);
        kv_bulk(o, "0", 1);

    } else if (argc < 2) {
        kv_arity(o);

    } else if (IS(0, "GET")) {
        e = kv_get(arg[1], len[1], KV_STRING, 0, &wt);
        if (wt) {
            kv_wrong(o);
        } else if (e == NULL || e->n == 0) {
            kv_nil(o);
        } else {
            kv_bulk(o, e->p[0].v, e->p[0].vlen);
        }

    } else if (IS(0, "MGET")) {
        /* a key of another type reads as nil, as in Redis */
        kv_fmt(o, "*%lld\r\n", (long long) (argc - 1));
        for (i = 1; i < argc; i++) {
            e = kv_get(arg[i], len[i], KV_STRING, 0, &wt);
            if (wt || e == NULL || e->n == 0) {
                kv_nil(o);
            } else {
                kv_bulk(o, e->p[0].v, e->p[0].vlen);
            }
        }

    } else if (IS(0, "GETDEL")) {
        e = kv_get(arg[1], len[1], KV_STRING, 0, &wt);
        if (wt) {
            kv_wrong(o);
        } else if (e == NULL || e->n == 0) {
            kv_nil(o);
        } else {
            kv_bulk(o, e->p[0].v, e->p[0].vlen);
            kv_del(arg[1], len[1]);
        }

    } else if (IS(0, "HINCRBY")) {
        if (argc < 4) {
            kv_arity(o);
            return;
        }
        e = kv_get(arg[1], len[1], KV_HASH, 1, &wt);
        if (e == NULL) {
            if (wt) {
                kv_wrong(o);
            } else {
                kv_full(o);
            }
            return;
        }
        p = kv_field(e, arg[2], len[2]);
        n = (p ? strtoll(p->v, NULL, 10) : 0) + strtoll(arg[3], NULL, 10);
        r = snprintf(num, sizeof(num), "%lld", n);
        if (kv_put(e, arg[2], len[2], num, (size_t) r) < 0) {
            kv_full(o);
            return;
        }
        kv_int(o, n);

    } else if (IS(0, "ZSCORE")) {
        if (argc < 3) {
            kv_arity(o);
            return;
        }
        e = kv_get(arg[1], len[1], KV_ZSET, 0, &wt);
        p = e ? kv_field(e, arg[2], len[2]) : NULL;
        if (wt) {
            kv_wrong(o);
        } else if (p == NULL) {
            kv_nil(o);
        } else {
            kv_bulk(o, p->v, p->vlen);
        }

    } else if (IS(0, "ZCOUNT") || IS(0, "ZREMRANGEBYSCORE")
               || IS(0, "ZREMRANGEBYLEX"))
    {
        int     in;
        size_t  k;

        if (argc < 4) {
            kv_arity(o);
            return;
        }
        e = kv_get(arg[1], len[1], KV_ZSET, 0, &wt);
        if (wt) {
            kv_wrong(o);
            return;
        }
        for (n = 0, k = 0; e != NULL && k < e->n; ) {
            /* ZREMRANGEBYLEX compares the members' bytes */
            in = IS(0, "ZREMRANGEBYLEX")
                 ? kv_lex_in(e->p[k].f, e->p[k].flen, arg[2], len[2],
                             arg[3], len[3])
                 : kv_score_in(e->p[k].v, arg[2], arg[3]);
            if (in) {
                n++;
                if (!IS(0, "ZCOUNT")) {
                    kv_unput(e, e->p[k].f, e->p[k].flen);
                    continue;
                }
            }
            k++;
        }
        kv_int(o, n);

    } else if (IS(0, "SET")) {
        if (argc < 3) {
            kv_arity(o);
            return;
        }
        nx = xx = 0;
        for (i = 3; i < argc; i++) {
            nx |= IS(i, "NX");
            xx |= IS(i, "XX");
        }
        e = kv_find(arg[1], len[1]);
        if ((nx && e != NULL) || (xx && e == NULL)) {
            kv_nil(o);
            return;
        }
        kv_del(arg[1], len[1]);
        e = kv_get(arg[1], len[1], KV_STRING, 1, &wt);
        if (e == NULL) {
            kv_full(o);
            return;
        }
        kv_put(e, NULL, 0, arg[2], len[2]);
        kv_ok(o);

    } else if (IS(0, "DEL") || IS(0, "UNLINK")) {
        for (n = 0, i = 1; i < argc; i++) {
            n += kv_del(arg[i], len[i]);
        }
        kv_int(o, n);

    } else if (IS(0, "TYPE")) {
        if (argc != 2) {
            kv_arity(o);
            return;
        }
        e = kv_find(arg[1], len[1]);
        if (e == NULL) {
            kv_str(o, "+none\r\n");
        } else if (e->type == KV_STRING) {
            kv_str(o, "+string\r\n");
        } else if (e->type == KV_HASH) {
            kv_str(o, "+hash\r\n");
        } else if (e->type == KV_SET) {
            kv_str(o, "+set\r\n");
        } else {
            kv_str(o, "+zset\r\n");
        }

    } else if (IS(0, "EXISTS")) {
        for (n = 0, i = 1; i < argc; i++) {
            n += kv_find(arg[i], len[i]) != NULL;
        }
        kv_int(o, n);

    } else if (IS(0, "EXPIRE") || IS(0, "PEXPIRE") || IS(0, "PERSIST")) {
        kv_int(o, kv_find(arg[1], len[1]) != NULL);

    } else if (IS(0, "TTL") || IS(0, "PTTL")) {
        /* TTLs are ignored: a key lives for ever (-1), none is -2 */
        kv_int(o, kv_find(arg[1], len[1]) != NULL ? -1 : -2);

    } else if (IS(0, "INCR") || IS(0, "INCRBY")) {
        e = kv_get(arg[1], len[1], KV_STRING, 1, &wt);
        if (e == NULL) {
            if (wt) {
                kv_wrong(o);
            } else {
                kv_full(o);
            }
            return;
        }
        n = e->n ? strtoll(e->p[0].v, NULL, 10) : 0;
        n += (IS(0, "INCRBY") && argc > 2) ? strtoll(arg[2], NULL, 10) : 1;
        r = snprintf(num, sizeof(num), "%lld", n);
        kv_put(e, NULL, 0, num, (size_t) r);
        kv_int(o, n);

    } else if (IS(0, "HSET") || IS(0, "HSETNX") || IS(0, "SADD")
               || IS(0, "ZADD"))
    {
        int  type = IS(0, "SADD") ? KV_SET : IS(0, "ZADD") ? KV_ZSET
                                                           : KV_HASH;
        int  step = type == KV_SET ? 1 : 2;

        if (argc < 2 + step || (argc - 2) % step != 0) {
            kv_arity(o);
            return;
        }
        e = kv_get(arg[1], len[1], type, 1, &wt);
        if (e == NULL) {
            if (wt) {
                kv_wrong(o);
            } else {
                kv_full(o);
            }
            return;
        }
        for (n = 0, i = 2; i + step <= argc; i += step) {
            if (type == KV_ZSET) {          /* ZADD key score member */
                r = kv_put(e, arg[i + 1], len[i + 1], arg[i], len[i]);
            } else if (type == KV_SET) {
                r = kv_field(e, arg[i], len[i]) ? 0
                    : kv_put(e, arg[i], len[i], "", 0);
            } else if (IS(0, "HSETNX") && kv_field(e, arg[i], len[i])) {
                r = 0;
            } else {
                r = kv_put(e, arg[i], len[i], arg[i + 1], len[i + 1]);
            }
            if (r < 0) {
                kv_full(o);
                return;
            }
            n += r;
        }
        kv_int(o, n);

    } else if (IS(0, "HGET")) {
        if (argc < 3) {
            kv_arity(o);
            return;
        }
        e = kv_get(arg[1], len[1], KV_HASH, 0, &wt);
        p = e ? kv_field(e, arg[2], len[2]) : NULL;
        if (wt) {
            kv_wrong(o);
        } else if (p == NULL) {
            kv_nil(o);
        } else {
            kv_bulk(o, p->v, p->vlen);
        }

    } else if (IS(0, "HDEL") || IS(0, "SREM") || IS(0, "ZREM")) {
        int  type = IS(0, "HDEL") ? KV_HASH : IS(0, "SREM") ? KV_SET
                                                            : KV_ZSET;

        e = kv_get(arg[1], len[1], type, 0, &wt);
        for (n = 0, i = 2; e != NULL && i < argc; i++) {
            n += kv_unput(e, arg[i], len[i]);
        }
        if (wt) {
            kv_wrong(o);
        } else {
            kv_int(o, n);
        }

    } else if (IS(0, "HGETALL") || IS(0, "SMEMBERS") || IS(0, "HKEYS")) {
        int  type = IS(0, "SMEMBERS") ? KV_SET : KV_HASH;
        int  both = IS(0, "HGETALL");
        size_t  k;

        e = kv_get(arg[1], len[1], type, 0, &wt);
        if (wt) {
            kv_wrong(o);
            return;
        }
        kv_fmt(o, "*%lld\r\n", e ? (long long) e->n * (both ? 2 : 1) : 0);
        for (k = 0; e != NULL && k < e->n; k++) {
            kv_bulk(o, e->p[k].f, e->p[k].flen);
            if (both) {
                kv_bulk(o, e->p[k].v, e->p[k].vlen);
            }
        }

    } else if (IS(0, "HLEN") || IS(0, "SCARD") || IS(0, "ZCARD")) {
        e = kv_find(arg[1], len[1]);
        kv_int(o, e ? (long long) e->n : 0);

    } else if (IS(0, "ZRANGE") || IS(0, "ZREVRANGE")) {
        long long  start, stop, cnt, k, idx;
        int        scores = argc > 4 && IS(argc - 1, "WITHSCORES");

        if (argc < 4) {
            kv_arity(o);
            return;
        }
        e = kv_get(arg[1], len[1], KV_ZSET, 0, &wt);
        if (wt) {
            kv_wrong(o);
            return;
        }
        cnt = e ? (long long) e->n : 0;
        start = strtoll(arg[2], NULL, 10);
        stop = strtoll(arg[3], NULL, 10);
        if (start < 0) {
            start += cnt;
        }
        if (stop < 0) {
            stop += cnt;
        }
        if (start < 0) {
            start = 0;
        }
        if (stop >= cnt) {
            stop = cnt - 1;
        }
        n = stop >= start ? stop - start + 1 : 0;
        kv_fmt(o, "*%lld\r\n", n * (scores ? 2 : 1));
        for (k = start; k <= stop && e != NULL; k++) {
            idx = IS(0, "ZREVRANGE") ? cnt - 1 - k : k;
            kv_bulk(o, e->p[idx].f, e->p[idx].flen);
            if (scores) {
                kv_bulk(o, e->p[idx].v, e->p[idx].vlen);
            }
        }

    } else if (IS(0, "ZRANGEBYSCORE")) {
        /* in insertion order, as ZRANGE here: the CRL's plan reads */
        long long  off, cnt, k, m;
        int        scores;
        size_t     j;

        if (argc < 4) {
            kv_arity(o);
            return;
        }
        e = kv_get(arg[1], len[1], KV_ZSET, 0, &wt);
        if (wt) {
            kv_wrong(o);
            return;
        }
        scores = 0;
        off = 0;
        cnt = -1;
        for (i = 4; i < argc; i++) {
            if (IS(i, "WITHSCORES")) {
                scores = 1;
            } else if (IS(i, "LIMIT") && i + 2 < argc) {
                off = strtoll(arg[i + 1], NULL, 10);
                cnt = strtoll(arg[i + 2], NULL, 10);
                i += 2;
            }
        }
        for (m = 0, k = 0, j = 0; e != NULL && j < e->n; j++) {
            if (kv_score_in(e->p[j].v, arg[2], arg[3])
                && k++ >= off && (cnt < 0 || m < cnt))
            {
                m++;
            }
        }
        kv_fmt(o, "*%lld\r\n", m * (scores ? 2 : 1));
        for (n = 0, k = 0, j = 0; e != NULL && j < e->n && n < m; j++) {
            if (kv_score_in(e->p[j].v, arg[2], arg[3]) && k++ >= off) {
                kv_bulk(o, e->p[j].f, e->p[j].flen);
                if (scores) {
                    kv_bulk(o, e->p[j].v, e->p[j].vlen);
                }
                n++;
            }
        }

    } else if (IS(0, "SCAN") || IS(0, "HSCAN")) {
        kv_str(o, "*2\r\n$1\r\n0\r\n*0\r\n");

    } else if (IS(0, "HMGET") || IS(0, "HEXISTS")) {
        /* SCEP's pending records and one-time challenges, revocation */
        if (argc < 3) {
            kv_arity(o);
            return;
        }
        e = kv_get(arg[1], len[1], KV_HASH, 0, &wt);
        if (wt) {
            kv_wrong(o);
            return;
        }
        if (IS(0, "HEXISTS")) {
            kv_int(o, e != NULL && kv_field(e, arg[2], len[2]) != NULL);
            return;
        }
        kv_fmt(o, "*%lld\r\n", (long long) (argc - 2));
        for (i = 2; i < argc; i++) {
            p = e ? kv_field(e, arg[i], len[i]) : NULL;
            if (p == NULL) {
                kv_nil(o);
            } else {
                kv_bulk(o, p->v, p->vlen);
            }
        }

    } else if (IS(0, "STRLEN")) {
        e = kv_get(arg[1], len[1], KV_STRING, 0, &wt);
        if (wt) {
            kv_wrong(o);
        } else {
            kv_int(o, e != NULL && e->n ? (long long) e->p[0].vlen : 0);
        }

    } else if (IS(0, "GETRANGE")) {
        long long  from, to, vlen;

        if (argc < 4) {
            kv_arity(o);
            return;
        }
        e = kv_get(arg[1], len[1], KV_STRING, 0, &wt);
        if (wt) {
            kv_wrong(o);
            return;
        }
        vlen = e != NULL && e->n ? (long long) e->p[0].vlen : 0;
        from = strtoll(arg[2], NULL, 10);
        to = strtoll(arg[3], NULL, 10);
        if (from < 0) {
            from = from + vlen < 0 ? 0 : from + vlen;
        }
        if (to < 0) {
            to += vlen;
        }
        if (to >= vlen) {
            to = vlen - 1;
        }
        if (vlen == 0 || from > to) {
            kv_str(o, "$0\r\n\r\n");
        } else {
            kv_bulk(o, e->p[0].v + from, (size_t) (to - from + 1));
        }

    } else {
        kv_str(o, "-ERR unknown command (fuzz kv)\r\n");
    }
}


/* ---- Lua (EVAL) ------------------------------------------------------------------- */

/* RESP text at *pp -> one Lua value (Redis's rules: integer -> number,
 * bulk -> string, nil -> false, array -> table, status -> {ok=}, error ->
 * {err=}).  Returns 0 on malformed text. */
static int
kv_resp_to_lua(lua_State *L, const char **pp, const char *end)
{
    long long    n, i;
    const char  *p, *nl;

    p = *pp;
    if (p >= end || (nl = memchr(p, '\n', (size_t) (end - p))) == NULL) {
        return 0;
    }

    switch (*p) {
    case '+':
    case '-':
        lua_newtable(L);
        lua_pushlstring(L, p + 1, (size_t) (nl - 1 - (p + 1)));
        lua_setfield(L, -2, *p == '+' ? "ok" : "err");
        *pp = nl + 1;
        return 1;

    case ':':
        lua_pushnumber(L, (lua_Number) strtoll(p + 1, NULL, 10));
        *pp = nl + 1;
        return 1;

    case '$':
        n = strtoll(p + 1, NULL, 10);
        if (n < 0) {
            lua_pushboolean(L, 0);
            *pp = nl + 1;
            return 1;
        }
        if (end - (nl + 1) < n + 2) {
            return 0;
        }
        lua_pushlstring(L, nl + 1, (size_t) n);
        *pp = nl + 1 + n + 2;
        return 1;

    case '*':
        n = strtoll(p + 1, NULL, 10);
        *pp = nl + 1;
        if (n < 0) {
            lua_pushboolean(L, 0);
            return 1;
        }
        lua_newtable(L);
        for (i = 1; i <= n; i++) {
            if (!kv_resp_to_lua(L, pp, end)) {
                return 0;
            }
            lua_rawseti(L, -2, (int) i);
        }
        return 1;
    }

    return 0;
}


/* redis.call / redis.pcall: runs the command on the key space (kv_lock is
 * held: EVAL runs inside kv_exec). */
static int
kv_lua_cmd(lua_State *L, int raise)
{
    int           i, argc;
    char         *arg[PKI_KV_MAX_ARGS];
    size_t        len[PKI_KV_MAX_ARGS];
    kv_out_t      out;
    const char   *p;

    argc = lua_gettop(L);
    if (argc < 1 || argc > PKI_KV_MAX_ARGS) {
        return luaL_error(L, "wrong number of arguments to redis.call");
    }

    for (i = 0; i < argc; i++) {
        if (lua_type(L, i + 1) != LUA_TSTRING
            && lua_type(L, i + 1) != LUA_TNUMBER)
        {
            return luaL_error(L, "redis.call arguments must be strings or "
                              "integers");
        }
        arg[i] = (char *) lua_tolstring(L, i + 1, &len[i]);
    }

    memset(&out, 0, sizeof(out));
    if (IS(0, "EVAL") || IS(0, "EVALSHA")) {
        kv_str(&out, "-ERR not from a script\r\n");
    } else {
        kv_exec(argc, arg, len, &out);
    }

    p = out.b;
    i = out.b != NULL && kv_resp_to_lua(L, &p, out.b + out.len);
    free(out.b);
    if (!i) {
        return luaL_error(L, "fuzz kv: bad reply");
    }

    if (raise && lua_istable(L, -1)) {
        lua_getfield(L, -1, "err");
        if (lua_isstring(L, -1)) {
            return lua_error(L);
        }
        lua_pop(L, 1);
    }

    return 1;
}


static int
kv_lua_call(lua_State *L)
{
    return kv_lua_cmd(L, 1);
}


/* redis.error_reply(msg): the table {err = msg}, which a script returns
 * as its error */
static int
kv_lua_error_reply(lua_State *L)
{
    luaL_checkstring(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "err");

    return 1;
}


static int
kv_lua_pcall(lua_State *L)
{
    return kv_lua_cmd(L, 0);
}


/* The script's result -> RESP (Redis's rules: number -> integer, string
 * -> bulk, true -> 1, false/nil -> nil, {ok=} -> status, {err=} -> error,
 * other tables -> array up to the first nil). */
static void
kv_lua_to_resp(lua_State *L, int idx, kv_out_t *o, int depth)
{
    int          n, i;
    size_t       len;
    const char  *s;

    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        kv_int(o, (long long) lua_tonumber(L, idx));
        return;

    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        kv_bulk(o, s, len);
        return;

    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx)) {
            kv_int(o, 1);
        } else {
            kv_nil(o);
        }
        return;

    case LUA_TTABLE:
        if (depth > 8) {
            kv_nil(o);
            return;
        }
        lua_getfield(L, idx, "ok");
        if (lua_isstring(L, -1)) {
            s = lua_tolstring(L, -1, &len);
            kv_emit(o, "+", 1);
            kv_emit(o, s, len);
            kv_emit(o, "\r\n", 2);
            lua_pop(L, 1);
            return;
        }
        lua_pop(L, 1);
        lua_getfield(L, idx, "err");
        if (lua_isstring(L, -1)) {
            s = lua_tolstring(L, -1, &len);
            kv_emit(o, "-", 1);
            kv_emit(o, s, len);
            kv_emit(o, "\r\n", 2);
            lua_pop(L, 1);
            return;
        }
        lua_pop(L, 1);

        for (n = 0; ; n++) {
            lua_rawgeti(L, idx, n + 1);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                break;
            }
            lua_pop(L, 1);
        }
        kv_fmt(o, "*%lld\r\n", (long long) n);
        for (i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, i);
            kv_lua_to_resp(L, lua_gettop(L), o, depth + 1);
            lua_pop(L, 1);
        }
        return;

    default:
        kv_nil(o);
        return;
    }
}


static void
kv_lua_error(kv_out_t *o, const char *msg)
{
    char  buf[256], *q;

    snprintf(buf, sizeof(buf), "-ERR %s", msg ? msg : "script error");
    for (q = buf; *q; q++) {
        if (*q == '\r' || *q == '\n') {
            *q = ' ';
        }
    }
    kv_emit(o, buf, strlen(buf));
    kv_emit(o, "\r\n", 2);
}


/* Redis's cjson library, decode only: JSON -> Lua (objects and arrays as
 * tables, null as nil). */
static void
kv_json_to_lua(lua_State *L, const cJSON *j, int depth)
{
    int           i;
    const cJSON  *e;

    if (depth > 32) {
        lua_pushnil(L);
    } else if (cJSON_IsString(j)) {
        lua_pushstring(L, j->valuestring);
    } else if (cJSON_IsNumber(j)) {
        lua_pushnumber(L, j->valuedouble);
    } else if (cJSON_IsBool(j)) {
        lua_pushboolean(L, cJSON_IsTrue(j));
    } else if (cJSON_IsArray(j)) {
        lua_newtable(L);
        i = 1;
        cJSON_ArrayForEach(e, j) {
            kv_json_to_lua(L, e, depth + 1);
            lua_rawseti(L, -2, i++);
        }
    } else if (cJSON_IsObject(j)) {
        lua_newtable(L);
        cJSON_ArrayForEach(e, j) {
            kv_json_to_lua(L, e, depth + 1);
            lua_setfield(L, -2, e->string);
        }
    } else {
        lua_pushnil(L);
    }
}


static int
kv_lua_json_decode(lua_State *L)
{
    size_t       len;
    cJSON       *j;
    const char  *s;

    s = luaL_checklstring(L, 1, &len);
    j = cJSON_ParseWithLength(s, len);
    if (j == NULL) {
        return luaL_error(L, "Expected value but found invalid token");
    }
    kv_json_to_lua(L, j, 0);
    cJSON_Delete(j);

    return 1;
}


/* Everything a script allocated is freed before EVAL returns: libFuzzer
 * runs a full leak check after every input whose mallocs and frees do not
 * balance, which made the targets 10x slower. */
static void
kv_lua_clean(lua_State *L)
{
    lua_settop(L, 0);
    lua_pushnil(L);
    lua_setglobal(L, "KEYS");
    lua_pushnil(L);
    lua_setglobal(L, "ARGV");
    lua_gc(L, LUA_GCCOLLECT, 0);
}


/* EVAL script numkeys key... arg... */
static void
kv_eval(int argc, char **arg, size_t *len, kv_out_t *o)
{
    int         i, nkeys;
    lua_State  *L;

    if (argc < 3) {
        kv_arity(o);
        return;
    }

    nkeys = atoi(arg[2]);
    if (nkeys < 0 || nkeys > argc - 3) {
        kv_str(o, "-ERR Number of keys can't be greater than number of "
               "args\r\n");
        return;
    }

    if (kv_lua == NULL) {
        kv_lua = luaL_newstate();
        if (kv_lua == NULL) {
            abort();
        }
        luaL_openlibs(kv_lua);
        lua_newtable(kv_lua);
        lua_pushcfunction(kv_lua, kv_lua_call);
        lua_setfield(kv_lua, -2, "call");
        lua_pushcfunction(kv_lua, kv_lua_pcall);
        lua_setfield(kv_lua, -2, "pcall");
        lua_pushcfunction(kv_lua, kv_lua_error_reply);
        lua_setfield(kv_lua, -2, "error_reply");
        lua_setglobal(kv_lua, "redis");
        lua_newtable(kv_lua);
        lua_pushcfunction(kv_lua, kv_lua_json_decode);
        lua_setfield(kv_lua, -2, "decode");
        lua_setglobal(kv_lua, "cjson");
        lua_newtable(kv_lua);
        lua_setfield(kv_lua, LUA_REGISTRYINDEX, "fuzz_kv_scripts");
    }
    L = kv_lua;
    lua_settop(L, 0);

    /* compiled once per script text */
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz_kv_scripts");
    lua_pushlstring(L, arg[1], len[1]);
    lua_rawget(L, -2);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        if (luaL_loadbuffer(L, arg[1], len[1], "@user_script") != 0) {
            kv_lua_error(o, lua_tostring(L, -1));
            kv_lua_clean(L);
            return;
        }
        lua_pushlstring(L, arg[1], len[1]);
        lua_pushvalue(L, -2);
        lua_rawset(L, -4);
    }

    lua_newtable(L);
    for (i = 0; i < nkeys; i++) {
        lua_pushlstring(L, arg[3 + i], len[3 + i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "KEYS");

    lua_newtable(L);
    for (i = 3 + nkeys; i < argc; i++) {
        lua_pushlstring(L, arg[i], len[i]);
        lua_rawseti(L, -2, i - 2 - nkeys);
    }
    lua_setglobal(L, "ARGV");

    if (lua_pcall(L, 0, 1, 0) != 0) {
        kv_lua_error(o, lua_tostring(L, -1));
        kv_lua_clean(L);
        return;
    }

    kv_lua_to_resp(L, lua_gettop(L), o, 0);
    kv_lua_clean(L);
}


/* ---- RESP requests ----------------------------------------------------------------- */

/* Parses "$<n>\r\n" or "*<n>\r\n" at p; returns the byte after it, NULL if
 * incomplete; *bad when it is not that. */
static const char *
kv_header(const char *p, const char *end, char type, long long *n, int *bad)
{
    const char  *nl;
    char        *q;

    if (p >= end) {
        return NULL;
    }
    if (*p != type) {
        *bad = 1;
        return NULL;
    }
    nl = memchr(p, '\n', (size_t) (end - p));
    if (nl == NULL) {
        if (end - p > 32) {
            *bad = 1;
        }
        return NULL;
    }
    *n = strtoll(p + 1, &q, 10);
    if (q != nl - 1 || *q != '\r') {
        *bad = 1;
        return NULL;
    }

    return nl + 1;
}


/* Runs every complete request in c's buffer.  -1: close the connection. */
static int
kv_serve(kv_conn_t *c)
{
    int           argc, bad;
    char         *arg[PKI_KV_MAX_ARGS];
    size_t        len[PKI_KV_MAX_ARGS], used, off;
    ssize_t       w;
    kv_out_t      out;
    long long     n, blen;
    const char   *p, *end;

    memset(&out, 0, sizeof(out));
    used = 0;

    for ( ;; ) {
        p = c->buf + used;
        end = c->buf + c->len;
        bad = 0;

        p = kv_header(p, end, '*', &n, &bad);
        if (p == NULL) {
            break;
        }
        if (n < 1 || n > PKI_KV_MAX_ARGS) {
            bad = 1;
            break;
        }

        for (argc = 0; argc < n; argc++) {
            p = kv_header(p, end, '$', &blen, &bad);
            if (p == NULL) {
                break;
            }
            if (blen < 0 || blen > PKI_KV_MAX_REQ) {
                bad = 1;
                p = NULL;
                break;
            }
            if (end - p < blen + 2) {
                p = NULL;
                break;
            }
            arg[argc] = (char *) p;
            len[argc] = (size_t) blen;
            p += blen + 2;
        }
        if (p == NULL) {
            break;
        }

        pthread_mutex_lock(&kv_lock);
        kv_exec(argc, arg, len, &out);
        pthread_mutex_unlock(&kv_lock);

        used = (size_t) (p - c->buf);
    }

    for (off = 0; off < out.len; off += (size_t) w) {
        w = write(c->fd, out.b + off, out.len - off);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) {
                w = 0;
                continue;
            }
            bad = 1;
            break;
        }
    }
    free(out.b);

    memmove(c->buf, c->buf + used, c->len - used);
    c->len -= used;

    return bad ? -1 : 0;
}


static void
kv_close(kv_conn_t *c)
{
    close(c->fd);
    free(c->buf);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}


static void *
kv_thread(void *arg)
{
    int            i, k, fd;
    ssize_t        r;
    kv_conn_t     *c;
    struct pollfd  pfd[PKI_KV_MAX_CONNS + 1];

    (void) arg;

    for ( ;; ) {
        pfd[0].fd = kv_listen;
        pfd[0].events = POLLIN;
        for (i = 0; i < PKI_KV_MAX_CONNS; i++) {
            pfd[i + 1].fd = kv_conns[i].fd;
            pfd[i + 1].events = POLLIN;
        }

        if (poll(pfd, PKI_KV_MAX_CONNS + 1, -1) < 0) {
            continue;
        }

        if (pfd[0].revents & POLLIN) {
            fd = accept(kv_listen, NULL, NULL);
            for (k = 0; fd >= 0 && k < PKI_KV_MAX_CONNS; k++) {
                if (kv_conns[k].fd < 0) {
                    kv_conns[k].fd = fd;
                    break;
                }
            }
            if (fd >= 0 && k == PKI_KV_MAX_CONNS) {
                close(fd);
            }
        }

        for (i = 0; i < PKI_KV_MAX_CONNS; i++) {
            c = &kv_conns[i];
            if (c->fd < 0 || !(pfd[i + 1].revents & (POLLIN | POLLHUP
                                                      | POLLERR)))
            {
                continue;
            }

            if (c->cap - c->len < 65536) {
                if (c->cap > PKI_KV_MAX_REQ + 65536) {
                    kv_close(c);
                    continue;
                }
                c->cap = c->cap * 2 + 65536;
                c->buf = realloc(c->buf, c->cap);
                if (c->buf == NULL) {
                    abort();
                }
            }

            r = read(c->fd, c->buf + c->len, c->cap - c->len);
            if (r <= 0) {
                if (r < 0 && errno == EINTR) {
                    continue;
                }
                kv_close(c);
                continue;
            }
            c->len += (size_t) r;

            if (kv_serve(c) < 0) {
                kv_close(c);
            }
        }
    }

    return NULL;
}


/* ---- in-thread commands (interposed hiredis calls) ---------------------------- */

static int
kv_is(const redisContext *c)
{
    return c != NULL && kv_path[0] != '\0'
           && c->connection_type == REDIS_CONN_UNIX
           && c->unix_sock.path != NULL
           && strcmp(c->unix_sock.path, kv_path) == 0;
}


int
redisAppendCommandArgv(redisContext *c, int argc, const char **argv,
    const size_t *argvlen)
{
    int        i;
    char      *arg[PKI_KV_MAX_ARGS];
    size_t     len[PKI_KV_MAX_ARGS];
    kv_out_t   out;

    static int  (*real)(redisContext *, int, const char **, const size_t *);

    if (!kv_is(c)) {
        if (real == NULL) {
            *(void **) &real = dlsym(RTLD_NEXT, "redisAppendCommandArgv");
            if (real == NULL) {
                abort();
            }
        }
        return real(c, argc, argv, argvlen);
    }

    memset(&out, 0, sizeof(out));

    if (argc < 1 || argc > PKI_KV_MAX_ARGS) {
        kv_str(&out, "-ERR too many arguments (fuzz kv)\r\n");

    } else {
        for (i = 0; i < argc; i++) {
            arg[i] = (char *) argv[i];
            len[i] = argvlen != NULL ? argvlen[i] : strlen(argv[i]);
        }

        pthread_mutex_lock(&kv_lock);
        kv_exec(argc, arg, len, &out);
        pthread_mutex_unlock(&kv_lock);
    }

    i = redisReaderFeed(c->reader, out.b, out.len);
    free(out.b);

    return i == REDIS_OK ? REDIS_OK : REDIS_ERR;
}


void *
redisCommandArgv(redisContext *c, int argc, const char **argv,
    const size_t *argvlen)
{
    void  *reply;

    static void  *(*real)(redisContext *, int, const char **,
                          const size_t *);

    if (!kv_is(c)) {
        if (real == NULL) {
            *(void **) &real = dlsym(RTLD_NEXT, "redisCommandArgv");
            if (real == NULL) {
                abort();
            }
        }
        return real(c, argc, argv, argvlen);
    }

    if (redisAppendCommandArgv(c, argc, argv, argvlen) != REDIS_OK) {
        return NULL;
    }

    reply = NULL;
    if (redisGetReplyFromReader(c, &reply) != REDIS_OK) {
        return NULL;
    }

    return reply;
}


/* ---- API --------------------------------------------------------------------- */

pki_redis_t *
pki_fuzz_kv_redis(void)
{
    int                  i;
    pthread_t            tid;
    pki_result_t         res;
    pki_redis_conf_t     rconf;
    struct sockaddr_un   sa;

    if (kv_redis != NULL) {
        return kv_redis;
    }

    for (i = 0; i < PKI_KV_MAX_CONNS; i++) {
        kv_conns[i].fd = -1;
    }

    pki_fuzz_fixture();
    snprintf(kv_path, sizeof(kv_path), "%s/kv.sock", pki_fuzz_dir());

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", kv_path);

    kv_listen = socket(AF_UNIX, SOCK_STREAM, 0);
    if (kv_listen < 0
        || bind(kv_listen, (struct sockaddr *) &sa, sizeof(sa)) != 0
        || listen(kv_listen, 8) != 0
        || pthread_create(&tid, NULL, kv_thread, NULL) != 0)
    {
        fprintf(stderr, "fuzz kv: cannot listen on %s\n", kv_path);
        exit(1);
    }
    pthread_detach(tid);

    memset(&rconf, 0, sizeof(rconf));
    rconf.unix_path = kv_path;
    rconf.ns = "fz:";
    rconf.timeout_ms = 5000;
    pki_result_init(&res);
    kv_redis = pki_redis_new(&rconf, &res);
    if (kv_redis == NULL) {
        fprintf(stderr, "fuzz kv: pki_redis_new: %s\n", res.detail);
        exit(1);
    }

    return kv_redis;
}


void
pki_fuzz_kv_snapshot(void)
{
    pthread_mutex_lock(&kv_lock);
    kv_space_copy(&kv_snap, &kv_live);
    pthread_mutex_unlock(&kv_lock);
}


void
pki_fuzz_kv_reset(void)
{
    pthread_mutex_lock(&kv_lock);
    kv_space_copy(&kv_live, &kv_snap);
    pthread_mutex_unlock(&kv_lock);
}


void
pki_fuzz_kv_eval_reply(const char *resp)
{
    pthread_mutex_lock(&kv_lock);
    snprintf(kv_eval_reply, sizeof(kv_eval_reply), "%s", resp);
    pthread_mutex_unlock(&kv_lock);
}


char *
pki_fuzz_kv_get(const char *key)
{
    int        wt;
    char      *v;
    kv_ent_t  *e;

    pthread_mutex_lock(&kv_lock);
    e = kv_get(key, strlen(key), KV_STRING, 0, &wt);
    v = (e != NULL && e->n) ? kv_dup(e->p[0].v, e->p[0].vlen) : NULL;
    pthread_mutex_unlock(&kv_lock);

    return v;
}


void
pki_fuzz_kv_set(const char *key, const char *value)
{
    int        wt;
    kv_ent_t  *e;

    pthread_mutex_lock(&kv_lock);
    kv_del(key, strlen(key));
    e = kv_get(key, strlen(key), KV_STRING, 1, &wt);
    if (e == NULL) {
        abort();
    }
    kv_put(e, NULL, 0, value, strlen(value));
    pthread_mutex_unlock(&kv_lock);
}


void
pki_fuzz_kv_hset(const char *key, const char *field, const char *value,
    size_t vlen)
{
    int        wt;
    kv_ent_t  *e;

    pthread_mutex_lock(&kv_lock);
    e = kv_get(key, strlen(key), KV_HASH, 1, &wt);
    if (e == NULL || kv_put(e, field, strlen(field), value, vlen) < 0) {
        abort();
    }
    pthread_mutex_unlock(&kv_lock);
}


/* Calls fn for each string key that starts with prefix (under the lock:
 * fn must not call back into the kv). */
void
pki_fuzz_kv_each(const char *prefix, void (*fn)(void *arg, const char *key,
    const char *value), void *arg)
{
    size_t     i, plen;
    kv_ent_t  *e;

    plen = strlen(prefix);

    pthread_mutex_lock(&kv_lock);
    for (i = 0; i < kv_live.n; i++) {
        e = &kv_live.e[i];
        if (e->type == KV_STRING && e->n && e->klen >= plen
            && memcmp(e->key, prefix, plen) == 0)
        {
            fn(arg, e->key, e->p[0].v);
        }
    }
    pthread_mutex_unlock(&kv_lock);
}
