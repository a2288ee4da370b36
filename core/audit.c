/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The event hook (transaction log + metrics sink) and the tamper-evident,
 * append-only transaction log: hash-chained JSON lines, group-committed
 * fsync, size rotation, signed checkpoints, and the verifier behind
 * "pkictl audit verify".
 *
 * Concurrency: within a process one mutex serialises the appenders; across
 * processes (nginx workers, old and new generations during a reload) an
 * flock() on DIR/audit.lock does.  Each appender that holds both checks
 * that its descriptor still names DIR/audit.log (another process may have
 * rotated it) and that the file still ends where it last saw it (another
 * process may have appended); otherwise it re-reads the last entry to learn
 * seq and hash.  Durable appends then wait for one fdatasync() that covers
 * every line written before it started (group commit): one thread syncs,
 * the others wait on a condition variable and usually find their line
 * covered when it is done.
 *
 * Across processes, one fdatasync() at a time covers them all: it runs
 * under an OFD lock on the first byte of DIR/audit.lock, and the file's
 * first bytes record the inode and size its last successful fdatasync()
 * covered (the size was read before the sync began: every byte below it
 * was in the page cache by then).  A process whose lines end below that
 * size skips its own sync.  The record only ever errs low: a torn line cut
 * off, a new audit.log (rotation, a reused inode) lower it under the same
 * lock.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <hiredis.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "pki.h"
#include "audit_int.h"
#include "issue_int.h"
#include "redis_int.h"


#define PKI_AUDIT_LINE_MAX     16384
#define PKI_AUDIT_FIELD_MAX    1024
#define PKI_AUDIT_TAIL         65536
#define PKI_AUDIT_VERIFY_MAX   (1024 * 1024)
#define PKI_AUDIT_DEF_SIZE     (64UL * 1024 * 1024)
#define PKI_AUDIT_DEF_BACKLOG  (64UL * 1024 * 1024)
#define PKI_AUDIT_DEF_CKPT     1000
#define PKI_AUDIT_ACTOR_MAX    256
#define PKI_AUDIT_ZERO_HASH \
    "0000000000000000000000000000000000000000000000000000000000000000"
#define PKI_AUDIT_HASH_TAG     ",\"hash\":\""
#define PKI_AUDIT_CKPT_MAGIC   "nginx-pki audit checkpoint\n"
/* what a checkpoint's signature covers: v2 (seq, time, prev) since the
 * time counts for --max-unsigned-age; v1 (seq, prev: its time could be
 * moved without the key) is still verified in older logs */
#define PKI_AUDIT_CKPT_MAGIC2  "nginx-pki audit checkpoint v2\n"


typedef struct pki_audit_qent_s  pki_audit_qent_t;

/* A certificate store and CA whose issuance entries travel in the
 * record's commit (pki_audit_carry): the stream that holds them until
 * the file has them durably, and the stream the previous version named
 * after the host and the directory's path, "<host>-<dir hash>" (two
 * containers with one host name and one log path shared it): nothing new
 * goes there, the janitor takes over what an older process left in it. */
typedef struct {
    pki_redis_t          *r;
    pki_redis_t          *jr;          /* the janitor thread's copy of r,
                                          PKI_AUDIT_JANITOR_WAIT_MS at most
                                          per call (NULL: r) */
    char                  ca[64];
    char                  key[384];
    char                  lkey[384];
} pki_audit_carry_t;

#define PKI_AUDIT_CARRY_MAX    256
#define PKI_AUDIT_BATCH_MS     20      /* carried entries written after */
#define PKI_AUDIT_BATCH_MAX    256     /* ... or this many queued */
#define PKI_AUDIT_PEND_MS      1000    /* carried entries synced after */
#define PKI_AUDIT_PEND_MAX     16384   /* ... or this many */
#define PKI_AUDIT_ORPHAN_MS    30000   /* an entry of a live writer this
                                          old is orphaned */
#define PKI_AUDIT_LOOK_MS      1000    /* the janitor's period, and the
                                          age of a dead writer's orphan */
#define PKI_AUDIT_JANITOR_WAIT_MS 2000 /* a janitor's Redis call waits
                                          this long at most: a worker's
                                          exit waits for the call */
#define PKI_AUDIT_ID_LEN       16      /* hex digits of DIR/audit.id */
#define PKI_AUDIT_OPEN_WAIT_MS 3000    /* a log still opening: waited for
                                          until this long after its start
                                          (1 s gave enrollments 503 during
                                          reloads at load 12: t/reload.t) */

struct pki_audit_s {
    char                 *dir;
    char                 *path;        /* DIR/audit.log */
    size_t                max_size;
    pki_key_t            *key;
    char                  key_id[17];
    unsigned              ckpt_every;
    int                   no_fsync;

    pthread_mutex_t       lock;
    pthread_cond_t        cond;
    pthread_mutex_t       gate;        /* this process's side of the OFD
                                          lock on audit.lock (threads
                                          share that lock) */

    int                   fd;          /* audit.log, -1: not open */
    int                   lockfd;
    dev_t                 dev;
    ino_t                 ino;
    off_t                 end;         /* size after our last look */
    unsigned long long    first_seq;   /* of audit.log, 0: unknown */

    unsigned long long    seq;         /* of the last entry */
    char                  hash[65];    /* of the last entry */
    unsigned long long    since_ckpt;

    unsigned long long    written;     /* lines written by this process */
    unsigned long long    synced;      /* of those, known durable (read
                                          without the lock: atomic) */
    int                   syncing;

    /* the syncer thread (pki_audit_syncer_start) */
    pthread_t             syncer;
    pthread_cond_t        scond;       /* with qlock */
    int                   syncer_on;
    int                   syncer_stop; /* under qlock */

    /* entries queued for the syncer (deferred mode with a syncer): the
     * appending thread only formats its fields; the syncer writes a whole
     * batch with one flock, one catch-up, one write() and one sync */
    pthread_mutex_t       qlock;
    pki_audit_qent_t     *qhead;
    pki_audit_qent_t    **qtail;
    unsigned long long    qnext;       /* last ticket handed out */
    unsigned long long    qdone;       /* tickets up to it are durable
                                          (atomic) */
    int                   qmode;       /* tickets are queue tickets */
    int                   qsync;       /* a direct append wants a sync */
    pki_audit_qent_t     *retry;       /* a batch whose write failed
                                          (under lock): written first */
    int                   batching;    /* lines go to obuf (under lock) */
    char                 *obuf;
    size_t                olen;
    void                (*notify)(void *arg);
    void                 *notify_arg;

    /* carried entries (issue 7): durable in Redis with their record, so
     * the answer waits for their write only; the file is synced every
     * PKI_AUDIT_PEND_MS, then they leave the stream */
    pki_audit_carry_t    *carry;
    unsigned              ncarry;
    char                  logid[96];   /* "<host>-<DIR/audit.id>" */
    char                  llogid[96];  /* "<host>-<dir hash>" (previous
                                          version) */
    pki_audit_qent_t     *pend;        /* written, not synced (lock) */
    pki_audit_qent_t    **pendtail;
    unsigned              npend;       /* atomic */
    long long             pend_ms;     /* first of pend (atomic) */
    unsigned long long    qhi;         /* last ticket written (lock) */
    unsigned              qplain;      /* queued entries an answer waits
                                          for (qlock) */
    unsigned              qcarried;    /* queued carried ones (qlock) */
    long long             qfirst_ms;   /* when the first of them came */
    /* the janitor thread: every Redis call of the log (XDEL, orphans),
     * so that a stalled Redis never holds the syncer */
    pthread_t             janitor;
    pthread_mutex_t       jlock;
    pthread_cond_t        jcond;       /* with jlock */
    int                   jon;         /* jlock */
    int                   jstop;       /* jlock */
    pki_audit_qent_t     *xdel;        /* synced, to delete (jlock) */
    long long             orphan_ms;   /* an entry this old is orphaned */
    int                   closing;     /* no XDEL: the store may be gone */

    /* memory held for the file (atomic).  qbytes: the entries not
     * written yet (queued, or in a batch to retry), which only a file
     * that takes nothing makes grow: at max_backlog, issuance and
     * revocation are refused.  pbytes: the carried entries written and
     * waiting for their sync (pend); they are not refused for, they get
     * synced early (pki_audit_drain) */
    size_t                qbytes;
    size_t                pbytes;
    size_t                max_backlog;
    unsigned long long    refused;     /* by the cap (atomic) */
};


typedef struct {
    char                 *p;
    size_t                len;
    size_t                cap;
    int                   err;
} pki_jbuf_t;


/* a queued entry: its time and its fields, formatted by the appender */
struct pki_audit_qent_s {
    pki_audit_qent_t     *next;
    unsigned long long    ticket;
    const pki_audit_carry_t  *carry;   /* carried: its stream, else NULL */
    int                   legacy;      /* carried: from carry->lkey */
    char                  rid[48];     /* carried: its id in that stream */
    int                   held;        /* carried: a file of the log holds
                                          it (pki_audit_mark_held) */
    long long             qms;         /* carried: when it was queued
                                          (pki_audit_mono_ms) */
    /* where its line went when last written (a batch that failed part
     * way is retried without the lines that reached the file) */
    dev_t                 wdev;
    ino_t                 wino;
    off_t                 wend;        /* 0: not written */
    unsigned long long    wfirst;      /* first seq of that file */
    char                  whash[65];
    size_t                blen;
    char                  time[40];
    char                  body[1];
};


#define PKI_AUDIT_OBUF         65536


typedef struct {
    char                  protocol[PKI_AUDIT_ACTOR_MAX];
    char                  requester[PKI_AUDIT_ACTOR_MAX];
    char                  client[PKI_AUDIT_ACTOR_MAX];
    char                  operation[32];
} pki_actor_t;


static int                 pki_deferred;
static __thread unsigned long long  pki_ticket;
static pki_event_sink_pt   pki_sink;
static void               *pki_sink_arg;
static pki_audit_t        *pki_default_log;
static int                 pki_audit_required;  /* 2: the first open is
                                                   under way */
static pthread_mutex_t     pki_audit_open_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t      pki_audit_open_cond = PTHREAD_COND_INITIALIZER;
static struct timespec     pki_audit_open_until;
static __thread pki_actor_t  pki_actor;


static pki_audit_t *pki_audit_default(void);
static pki_audit_t *pki_audit_default_wait(void);
static void pki_audit_open_changed(void);
static void pki_audit_held(size_t *bytes, const pki_audit_qent_t *q,
    int in);
static long long pki_audit_time(const char *s);
static pki_status_t pki_audit_write_locked(pki_audit_t *a,
    const pki_event_t *ev, int checkpoint, pki_result_t *res);
static pki_status_t pki_audit_write_q(pki_audit_t *a,
    pki_audit_qent_t *q, const pki_event_t *ev, int checkpoint,
    pki_result_t *res);
static int pki_audit_enqueue(pki_audit_t *a, const pki_event_t *ev,
    unsigned long long *ticket, pki_status_t *st, pki_result_t *res);
static int pki_audit_oflush(pki_audit_t *a);
static pki_status_t pki_audit_commit(pki_audit_t *a, unsigned long long mine,
    pki_result_t *res);
static pki_status_t pki_audit_drain(pki_audit_t *a, int force,
    pki_result_t *res);
static void pki_audit_xdel(pki_audit_qent_t *list, int janitor);
static void pki_audit_janitor(pki_audit_t *a);
static void pki_audit_xdel_later(pki_audit_t *a, pki_audit_qent_t *done);
static long long pki_audit_ms(void);
static long long pki_audit_mono_ms(void);
static int pki_audit_gathered(pki_audit_t *a);
static int pki_audit_logid(pki_audit_t *a, pki_result_t *res);
static void pki_audit_srec_clamp(pki_audit_t *a, dev_t dev, ino_t ino,
    off_t size);
static int pki_audit_recover(pki_audit_t *a, pki_result_t *res);
static int pki_audit_shared_sync(pki_audit_t *a, int fd, dev_t dev,
    ino_t ino, off_t end);
static int pki_audit_catch_up(pki_audit_t *a, pki_result_t *res);
static int pki_audit_in_file(pki_audit_t *a, const pki_audit_qent_t *q);
static int pki_audit_mark_taken(pki_audit_t *a, pki_audit_qent_t *batch);


/* ---- the hook -------------------------------------------------------------- */

const char *
pki_outcome_class(pki_status_t st)
{
    switch (st) {

    case PKI_OK:
        return "success";

    case PKI_UNAUTHORIZED:
    case PKI_FORBIDDEN:
        return "auth";

    case PKI_POLICY:
    case PKI_CONFLICT:
        return "policy";

    case PKI_MALFORMED:
    case PKI_BAD_SIGNATURE:
    case PKI_TOO_LARGE:
    case PKI_UNSUPPORTED:
    case PKI_NOT_FOUND:
        return "malformed";

    default:
        return "backend";
    }
}


void
pki_event_set_sink(pki_event_sink_pt sink, void *arg)
{
    /* read by pool threads (pki_sink_get()): the argument first, so that
     * a sink seen is never paired with an older argument's NULL */
    __atomic_store_n(&pki_sink_arg, arg, __ATOMIC_RELEASE);
    __atomic_store_n(&pki_sink, sink, __ATOMIC_RELEASE);
}


/* The sink once, with its argument (NULL: none), for one call. */
static pki_event_sink_pt
pki_sink_get(void **arg)
{
    pki_event_sink_pt  sink;

    sink = __atomic_load_n(&pki_sink, __ATOMIC_ACQUIRE);
    *arg = __atomic_load_n(&pki_sink_arg, __ATOMIC_ACQUIRE);

    return sink;
}


static void
pki_copy(char *dst, size_t size, const char *src)
{
    size_t  n;

    if (src == NULL) {
        dst[0] = '\0';
        return;
    }

    n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}


void
pki_event_set_actor(const char *protocol, const char *requester,
    const char *client)
{
    pki_copy(pki_actor.protocol, sizeof(pki_actor.protocol), protocol);
    pki_copy(pki_actor.requester, sizeof(pki_actor.requester), requester);
    pki_copy(pki_actor.client, sizeof(pki_actor.client), client);
}


void
pki_event_set_operation(const char *operation)
{
    pki_copy(pki_actor.operation, sizeof(pki_actor.operation), operation);
}


/* getpid() is a system call each time: the value is kept, and forgotten
 * in a child after fork() */
static pid_t           pki_pid;
static pthread_once_t  pki_pid_once = PTHREAD_ONCE_INIT;


/* 0: not looked at yet, 1: SIGPIPE is ignored, 2: it is not (forgotten
 * in a child after fork() as the pid is: nginx's master may run a command
 * before it ignores SIGPIPE, its workers always run after) */
static int  pki_sigpipe_state;


static void
pki_pid_forget(void)
{
    pki_pid = 0;
    pki_sigpipe_state = 0;
}


static void
pki_pid_atfork(void)
{
    (void) pthread_atfork(NULL, NULL, pki_pid_forget);
}


pid_t
pki_int_pid(void)
{
    pid_t  p;

    (void) pthread_once(&pki_pid_once, pki_pid_atfork);

    p = __atomic_load_n(&pki_pid, __ATOMIC_RELAXED);
    if (p == 0) {
        p = getpid();
        __atomic_store_n(&pki_pid, p, __ATOMIC_RELAXED);
    }

    return p;
}


void
pki_int_sigpipe_block(pki_sigpipe_t *sp)
{
    int               st;
    sigset_t          set, pending;
    struct sigaction  sa;

    (void) pthread_once(&pki_pid_once, pki_pid_atfork);

    st = __atomic_load_n(&pki_sigpipe_state, __ATOMIC_RELAXED);
    if (st == 0) {
        st = (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
             ? 1 : 2;
        __atomic_store_n(&pki_sigpipe_state, st, __ATOMIC_RELAXED);
    }

    sp->active = (st == 2);
    sp->pending_before = 0;

    if (!sp->active) {
        return;
    }

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);

    sigpending(&pending);
    sp->pending_before = sigismember(&pending, SIGPIPE);

    pthread_sigmask(SIG_BLOCK, &set, &sp->old);
}


void
pki_int_sigpipe_restore(pki_sigpipe_t *sp)
{
    struct timespec  zero = { 0, 0 };
    sigset_t         set, pending;

    if (!sp->active) {
        return;
    }

    if (!sp->pending_before) {
        sigpending(&pending);

        if (sigismember(&pending, SIGPIPE)) {
            sigemptyset(&set);
            sigaddset(&set, SIGPIPE);
            while (sigtimedwait(&set, NULL, &zero) == -1 && errno == EINTR) {
                /* retry */
            }
        }
    }

    pthread_sigmask(SIG_SETMASK, &sp->old, NULL);
}


const char *
pki_int_peek_operation(void)
{
    return pki_actor.operation[0] != '\0' ? pki_actor.operation : "issue";
}


const char *
pki_int_take_operation(char buf[32])
{
    if (pki_actor.operation[0] == '\0') {
        return "issue";
    }

    memcpy(buf, pki_actor.operation, 32);
    pki_actor.operation[0] = '\0';

    return buf;
}


double
pki_int_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}


static __thread int  pki_observe_off;


void
pki_int_observe(pki_event_type_t type, double seconds, pki_status_t status,
    const char *what)
{
    void               *arg;
    pki_event_t         ev;
    pki_event_sink_pt   sink;

    sink = pki_sink_get(&arg);

    if (sink == NULL || pki_observe_off) {
        return;
    }

    memset(&ev, 0, sizeof(ev));
    ev.type = type;
    ev.status = status;
    ev.seconds = seconds;
    ev.operation = what;

    sink(arg, &ev);
}


const char *
pki_int_reason_name(int reason)
{
    static const char *const  names[11] = {
        "unspecified", "keyCompromise", "cACompromise", "affiliationChanged",
        "superseded", "cessationOfOperation", "certificateHold", NULL,
        "removeFromCRL", "privilegeWithdrawn", "aACompromise"
    };

    if (reason < 0 || reason > 10 || names[reason] == NULL) {
        return "unknown";
    }

    return names[reason];
}


/* ev with the thread's actor where it names none */
static void
pki_event_fill(pki_event_t *e, const pki_event_t *ev)
{
    *e = *ev;

    if (e->protocol == NULL) {
        e->protocol = pki_actor.protocol;
    }
    if (e->requester == NULL) {
        e->requester = pki_actor.requester;
    }
    if (e->client == NULL) {
        e->client = pki_actor.client;
    }
}


void
pki_int_event_sink(const pki_event_t *ev)
{
    void               *arg;
    pki_event_t         e;
    pki_event_sink_pt   sink;

    sink = pki_sink_get(&arg);

    if (sink != NULL) {
        pki_event_fill(&e, ev);
        sink(arg, &e);
    }
}


pki_status_t
pki_event_emit(const pki_event_t *ev, int durable, pki_result_t *res)
{
    void               *arg;
    pki_event_t         e;
    pki_status_t        st;
    pki_audit_t        *a;
    pki_event_sink_pt   sink;

    if (ev == NULL) {
        return PKI_OK;
    }

    pki_event_fill(&e, ev);

    st = PKI_OK;
    a = pki_audit_default();

    if (a == NULL && (e.type == PKI_EV_ISSUE || e.type == PKI_EV_REVOKE)) {
        a = pki_audit_default_wait();
    }

    if (a == NULL
        && __atomic_load_n(&pki_audit_required, __ATOMIC_ACQUIRE)
        && (e.type == PKI_EV_ISSUE || e.type == PKI_EV_REVOKE))
    {
        /* a log is configured but did not open: fail closed, nothing is
         * handed out that the log does not hold */
        st = pki_fail(res, PKI_UNAVAILABLE, "the transaction log is not "
                      "open");

    } else if (a != NULL && e.type != PKI_EV_SIGN && e.type != PKI_EV_REDIS) {
        int                 deferred;
        unsigned long long  t;

        deferred = __atomic_load_n(&pki_deferred, __ATOMIC_ACQUIRE);

        if (deferred && __atomic_load_n(&a->qmode, __ATOMIC_ACQUIRE)) {
            if (pki_audit_enqueue(a, &e, &t, &st, res)) {
                /* queued: the syncer thread writes and syncs it; the
                 * server answers once pki_audit_synced() reaches the
                 * ticket */
                pki_ticket = t;

            } else if (st == PKI_OK) {
                /* no syncer (any more): written and synced right here */
                st = pki_audit_append(a, &e, durable, res);
            }

        } else if (durable && deferred) {
            /* written now, made durable by pki_audit_sync() before the
             * server answers (the thread does not wait) */
            st = pki_audit_append(a, &e, 0, res);
            if (st == PKI_OK) {
                pki_ticket = pki_audit_written(a);
            }

        } else {
            st = pki_audit_append(a, &e, durable, res);
        }
    }

    sink = pki_sink_get(&arg);

    if (sink != NULL) {
        sink(arg, &e);
    }

    return st;
}


/* The default log, as published to every thread (it may open late: a
 * server's retry sets it while pool threads issue). */
static pki_audit_t *
pki_audit_default(void)
{
    return __atomic_load_n(&pki_default_log, __ATOMIC_ACQUIRE);
}


/*
 * The default log, waiting for it while a server's first open of it is
 * under way (pki_audit_set_required(2)): that open takes the log's lock
 * and reads its tail, in a thread of the server's pool, which normally
 * takes milliseconds.  A request that comes in meanwhile waits for it
 * rather than being refused, until PKI_AUDIT_OPEN_WAIT_MS after the open
 * began; past that (the lock is held elsewhere) nothing waits, the caller
 * refuses at once, so a stuck open holds no pool thread for long.  Pool
 * threads only: this blocks.
 */
static pki_audit_t *
pki_audit_default_wait(void)
{
    pki_audit_t  *a;

    a = pki_audit_default();

    if (a != NULL
        || __atomic_load_n(&pki_audit_required, __ATOMIC_ACQUIRE) != 2)
    {
        return a;
    }

    pthread_mutex_lock(&pki_audit_open_mutex);

    while ((a = pki_audit_default()) == NULL
           && __atomic_load_n(&pki_audit_required, __ATOMIC_ACQUIRE) == 2)
    {
        if (pthread_cond_timedwait(&pki_audit_open_cond, &pki_audit_open_mutex,
                                   &pki_audit_open_until)
            == ETIMEDOUT)
        {
            break;
        }
    }

    pthread_mutex_unlock(&pki_audit_open_mutex);

    return a;
}


/* the default log or the required state changed: wake the waiters */
static void
pki_audit_open_changed(void)
{
    pthread_mutex_lock(&pki_audit_open_mutex);
    pthread_cond_broadcast(&pki_audit_open_cond);
    pthread_mutex_unlock(&pki_audit_open_mutex);
}


void
pki_audit_set_default(pki_audit_t *a)
{
    __atomic_store_n(&pki_default_log, a, __ATOMIC_RELEASE);
    pki_audit_open_changed();
}


void
pki_audit_set_required(int on)
{
    struct timespec  until;

    if (on == 2) {
        (void) clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += PKI_AUDIT_OPEN_WAIT_MS / 1000;
        until.tv_nsec += (long) (PKI_AUDIT_OPEN_WAIT_MS % 1000) * 1000000L;

        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }

        pthread_mutex_lock(&pki_audit_open_mutex);
        pki_audit_open_until = until;
        pthread_mutex_unlock(&pki_audit_open_mutex);
    }

    __atomic_store_n(&pki_audit_required, on, __ATOMIC_RELEASE);
    pki_audit_open_changed();
}


int
pki_int_audit_ready(const char **why)
{
    pki_audit_t  *a;

    a = pki_audit_default_wait();

    if (a == NULL) {
        if (__atomic_load_n(&pki_audit_required, __ATOMIC_ACQUIRE)) {
            *why = "not open";
            return 0;
        }

        return 1;
    }

    if (__atomic_load_n(&a->qbytes, __ATOMIC_ACQUIRE) >= a->max_backlog) {
        /* the file has not taken what is held for it: no more */
        (void) __atomic_fetch_add(&a->refused, 1, __ATOMIC_RELAXED);
        *why = "the entries not yet written reached max_backlog";
        return 0;
    }

    return 1;
}


int
pki_audit_backlog(pki_audit_t *a, size_t *bytes, size_t *max,
    unsigned long long *refused)
{
    size_t  n;

    n = (a != NULL) ? __atomic_load_n(&a->qbytes, __ATOMIC_ACQUIRE) : 0;

    if (bytes != NULL) {
        *bytes = n;
    }

    if (max != NULL) {
        *max = (a != NULL) ? a->max_backlog : 0;
    }

    if (refused != NULL) {
        *refused = (a != NULL) ? __atomic_load_n(&a->refused,
                                                 __ATOMIC_RELAXED)
                               : 0;
    }

    return a != NULL && n >= a->max_backlog;
}


/* An entry comes into (in 1) or leaves (in 0) one of the counts of the
 * memory held for the file (a->qbytes or a->pbytes). */
static void
pki_audit_held(size_t *bytes, const pki_audit_qent_t *q, int in)
{
    size_t  n;

    n = sizeof(pki_audit_qent_t) + q->blen;

    if (in) {
        (void) __atomic_fetch_add(bytes, n, __ATOMIC_RELEASE);

    } else {
        (void) __atomic_fetch_sub(bytes, n, __ATOMIC_RELEASE);
    }
}


void
pki_audit_set_deferred(int on)
{
    __atomic_store_n(&pki_deferred, on, __ATOMIC_RELEASE);
}


unsigned long long
pki_audit_take_ticket(void)
{
    unsigned long long  t;

    t = pki_ticket;
    pki_ticket = 0;

    return t;
}


unsigned long long
pki_audit_written(pki_audit_t *a)
{
    unsigned long long  n;

    pthread_mutex_lock(&a->lock);
    n = a->written;
    pthread_mutex_unlock(&a->lock);

    return n;
}


unsigned long long
pki_audit_synced(pki_audit_t *a)
{
    if (a == NULL || a->no_fsync) {
        return ~0ULL;
    }

    /* no lock: the event loop asks, and an appender may hold the lock
     * while write() waits for a journal commit */
    if (__atomic_load_n(&a->qmode, __ATOMIC_ACQUIRE)) {
        return __atomic_load_n(&a->qdone, __ATOMIC_ACQUIRE);
    }

    return __atomic_load_n(&a->synced, __ATOMIC_ACQUIRE);
}


pki_status_t
pki_audit_sync(pki_audit_t *a, pki_result_t *res)
{
    void                (*notify)(void *arg);
    void                 *narg;
    pki_status_t          st;
    unsigned long long    mine;

    if (a == NULL) {
        a = pki_audit_default();
    }

    if (a == NULL || a->no_fsync) {
        return PKI_OK;
    }

    if (__atomic_load_n(&a->qmode, __ATOMIC_ACQUIRE)) {
        st = pki_audit_drain(a, 1, res);

        if (st == PKI_OK) {
            /* the drain took the syncer's queue: the answers of other
             * requests in it are durable now, and their event loop
             * hears of it here, as it does from the syncer (which found
             * its queue empty and sleeps) */
            pthread_mutex_lock(&a->qlock);
            notify = a->notify;
            narg = a->notify_arg;
            pthread_mutex_unlock(&a->qlock);

            if (notify != NULL) {
                notify(narg);
            }
        }

        return st;
    }

    pthread_mutex_lock(&a->lock);
    mine = a->written;
    st = pki_audit_commit(a, mine, res);
    pthread_mutex_unlock(&a->lock);

    return st;
}


/* ---- JSON line builder ----------------------------------------------------- */

static void
pki_jraw(pki_jbuf_t *b, const char *s, size_t n)
{
    if (b->err || b->len + n >= b->cap) {
        b->err = 1;
        return;
    }

    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}


static void
pki_jstr(pki_jbuf_t *b, const char *key, const char *v)
{
    static const char      hex[] = "0123456789abcdef";
    char                   esc[8];
    size_t                 i, n;
    const unsigned char   *s;

    if (v == NULL) {
        return;
    }

    pki_jraw(b, ",\"", 2);
    pki_jraw(b, key, strlen(key));
    pki_jraw(b, "\":\"", 3);

    s = (const unsigned char *) v;
    n = strnlen(v, PKI_AUDIT_FIELD_MAX);

    for (i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            esc[0] = '\\';
            esc[1] = (char) s[i];
            pki_jraw(b, esc, 2);

        } else if (s[i] < 0x20 || s[i] >= 0x7f) {
            /* bytes, not characters: deterministic, always valid JSON */
            esc[0] = '\\';
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[s[i] >> 4];
            esc[5] = hex[s[i] & 0xf];
            pki_jraw(b, esc, 6);

        } else {
            pki_jraw(b, (const char *) &s[i], 1);
        }
    }

    if (s[n] != '\0') {
        /* a reader must see that the value goes on */
        char  tail[80];
        int   m;

        m = snprintf(tail, sizeof(tail), "...[cut at %d of %zu bytes]",
                     PKI_AUDIT_FIELD_MAX, strlen(v));
        if (m > 0 && (size_t) m < sizeof(tail)) {
            pki_jraw(b, tail, (size_t) m);
        }
    }

    pki_jraw(b, "\"", 1);
}


static void
pki_jnum(pki_jbuf_t *b, const char *key, long long v)
{
    char  tmp[96];
    int   n;

    n = snprintf(tmp, sizeof(tmp), ",\"%s\":%lld", key, v);
    if (n > 0 && (size_t) n < sizeof(tmp)) {
        pki_jraw(b, tmp, (size_t) n);
    } else {
        b->err = 1;
    }
}


static void
pki_hex(const unsigned char *in, size_t n, char *out)
{
    static const char  hex[] = "0123456789abcdef";
    size_t             i;

    for (i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 0xf];
    }

    out[2 * n] = '\0';
}


static void
pki_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char  md[SHA256_DIGEST_LENGTH];

    SHA256(data, len, md);
    pki_hex(md, sizeof(md), out);
}


static const char *
pki_event_type_name(pki_event_type_t t)
{
    switch (t) {
    case PKI_EV_ISSUE:
        return "issue";
    case PKI_EV_REVOKE:
        return "revoke";
    case PKI_EV_REQUEST:
        return "request";
    default:
        return "other";
    }
}


/* ---- the log ----------------------------------------------------------------- */

static char *
pki_path(const char *dir, const char *name)
{
    size_t   n;
    char    *p;

    n = strlen(dir) + strlen(name) + 2;
    p = malloc(n);
    if (p != NULL) {
        snprintf(p, n, "%s/%s", dir, name);
    }

    return p;
}


static int
pki_write_all(int fd, const char *p, size_t n)
{
    ssize_t  w;

    while (n > 0) {
        w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return 0;
        }
        p += w;
        n -= (size_t) w;
    }

    return 1;
}


static void
pki_fsync_dir(const char *dir)
{
    int  fd;

    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void) fsync(fd);
        close(fd);
    }
}


/* Key id: hex of the first 8 bytes of SHA-256 over the SPKI DER. */
static int
pki_key_id(EVP_PKEY *pub, char out[17])
{
    int             len;
    unsigned char  *der, md[SHA256_DIGEST_LENGTH];

    der = NULL;
    len = i2d_PUBKEY(pub, &der);
    if (len <= 0) {
        return 0;
    }

    SHA256(der, (size_t) len, md);
    OPENSSL_free(der);
    pki_hex(md, 8, out);

    return 1;
}


/* DIR/audit-key-<ID>.pem, written once. */
static void
pki_audit_write_pubkey(pki_audit_t *a, EVP_PKEY *pub)
{
    int    fd;
    BIO   *bio;
    char   name[64], *path, *tmp;
    long   n;
    char  *data;

    snprintf(name, sizeof(name), "audit-key-%s.pem", a->key_id);
    path = pki_path(a->dir, name);
    if (path == NULL) {
        return;
    }

    if (access(path, F_OK) == 0) {
        free(path);
        return;
    }

    tmp = pki_path(a->dir, "audit-key.tmp");
    bio = BIO_new(BIO_s_mem());

    if (tmp != NULL && bio != NULL && PEM_write_bio_PUBKEY(bio, pub)) {
        n = BIO_get_mem_data(bio, &data);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                  0644);
        if (fd >= 0) {
            if (n > 0 && pki_write_all(fd, data, (size_t) n)
                && fsync(fd) == 0)
            {
                close(fd);
                (void) rename(tmp, path);
            } else {
                close(fd);
                (void) unlink(tmp);
            }
        }
    }

    BIO_free(bio);
    free(tmp);
    free(path);
}


pki_audit_t *
pki_audit_open(const pki_audit_conf_t *conf, pki_result_t *res)
{
    int             ok;
    char           *lockpath;
    EVP_PKEY       *pub;
    struct stat     st;
    pki_audit_t    *a;

    if (conf == NULL || conf->dir == NULL || conf->dir[0] == '\0') {
        pki_fail(res, PKI_INTERNAL, "no audit log directory");
        return NULL;
    }

    if (stat(conf->dir, &st) != 0) {
        char  who[160];
        int   err = errno;

        /* a worker whose user may not search a directory on the way
         * ("Permission denied") is not told that it is missing */
        pki_fail(res, PKI_INTERNAL, "audit log directory \"%s\": %s%s%s%s",
                 conf->dir, strerror(err),
                 err == EACCES ? " (" : "",
                 err == EACCES ? pki_process_user(who, sizeof(who)) : "",
                 err == EACCES ? ": that user needs search permission on "
                                 "the directories on its way)" : "");
        return NULL;
    }

    if (!S_ISDIR(st.st_mode)) {
        pki_fail(res, PKI_INTERNAL, "audit log directory \"%s\" is not a "
                 "directory", conf->dir);
        return NULL;
    }

    a = calloc(1, sizeof(pki_audit_t));
    if (a == NULL) {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        return NULL;
    }

    a->fd = -1;
    a->lockfd = -1;
    a->max_size = conf->max_size ? conf->max_size : PKI_AUDIT_DEF_SIZE;
    a->ckpt_every = conf->checkpoint_every ? conf->checkpoint_every
                                           : PKI_AUDIT_DEF_CKPT;
    a->no_fsync = conf->no_fsync;
    a->orphan_ms = conf->orphan_ms ? conf->orphan_ms : PKI_AUDIT_ORPHAN_MS;
    a->max_backlog = conf->max_backlog ? conf->max_backlog
                                       : PKI_AUDIT_DEF_BACKLOG;
    a->key = conf->key;
    memcpy(a->hash, PKI_AUDIT_ZERO_HASH, 65);

    pthread_mutex_init(&a->lock, NULL);
    pthread_mutex_init(&a->gate, NULL);
    pthread_mutex_init(&a->qlock, NULL);
    pthread_mutex_init(&a->jlock, NULL);
    pthread_cond_init(&a->jcond, NULL);
    a->qtail = &a->qhead;
    a->pendtail = &a->pend;
    pthread_cond_init(&a->cond, NULL);
    pthread_cond_init(&a->scond, NULL);

    a->dir = strdup(conf->dir);
    a->path = pki_path(conf->dir, "audit.log");
    lockpath = pki_path(conf->dir, "audit.lock");
    a->obuf = malloc(PKI_AUDIT_OBUF);

    if (a->dir == NULL || a->path == NULL || lockpath == NULL
        || a->obuf == NULL)
    {
        free(lockpath);
        pki_fail(res, PKI_INTERNAL, "out of memory");
        goto failed;
    }

    if (!pki_audit_logid(a, res)) {
        free(lockpath);
        goto failed;
    }

    a->lockfd = open(lockpath, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    free(lockpath);

    if (a->lockfd < 0) {
        pki_fail(res, PKI_INTERNAL, "cannot open %s/audit.lock: %s",
                 conf->dir, strerror(errno));
        goto failed;
    }

    if (a->key != NULL) {
        pub = pki_key_public(a->key);

        if (pub == NULL || !pki_key_id(pub, a->key_id)) {
            /* the log goes on, its checkpoints unsigned: a token that is
             * away must not stop issuance from being logged */
            a->key = NULL;
            pki_log(res, "%sthe audit key is not open: checkpoints are not "
                    "signed", (res && res->log[0]) ? "; " : "");

        } else {
            pki_audit_write_pubkey(a, pub);
        }
    }

    /* the first look at audit.log: a crash may have left a damaged tail */
    while (flock(a->lockfd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            pki_fail(res, PKI_INTERNAL, "flock(%s/audit.lock) failed: %s",
                     conf->dir, strerror(errno));
            goto failed;
        }
    }

    ok = pki_audit_recover(a, res);
    (void) flock(a->lockfd, LOCK_UN);

    if (!ok) {
        goto failed;
    }

    return a;

failed:

    pki_audit_close(a);
    return NULL;
}


static void
pki_audit_report_stderr(void *arg, int lost, const char *msg)
{
    (void) arg;
    (void) lost;

    fprintf(stderr, "pki_audit_log: %s\n", msg);
}


/* pki_audit_close(): the entries still in *list after the last try were
 * never written.  A carried one is in its stream (the janitor writes it
 * later); a plain one is nowhere else (its revocation is committed):
 * freed silently, it was lost without a word.  checked: a->lock and the
 * flock held, the file caught up with: a line that a write which failed
 * part way left whole in it is not reported. */
static void
pki_audit_report_lost(pki_audit_t *a, pki_audit_qent_t *list, int checked,
    unsigned *carried, pki_audit_report_pt report, void *arg)
{
    char               *msg;
    size_t              size;
    pki_audit_qent_t   *q;

    for (q = list; q != NULL; q = q->next) {
        if (q->carry != NULL) {
            (*carried)++;
            continue;
        }

        if (checked && q->wend > 0 && pki_audit_in_file(a, q)) {
            continue;
        }

        size = q->blen + 512;
        msg = malloc(size);
        if (msg == NULL) {
            report(arg, 1, "an entry the log could not take is lost "
                   "(out of memory to report it)");
            continue;
        }

        /* the body holds what the file would have (nothing secret) */
        snprintf(msg, size, "entry not written to %s%s, kept nowhere "
                 "else, restore it by hand: {\"time\":\"%s\"%.*s,"
                 "\"pid\":%ld}",
                 a->path != NULL ? a->path : "audit.log",
                 !checked && q->wend > 0 ? " (unless a write that failed "
                                           "part way left it whole)" : "",
                 q->time, (int) q->blen, q->body, (long) pki_int_pid());
        report(arg, 1, msg);
        free(msg);
    }
}


void
pki_audit_close(pki_audit_t *a)
{
    pki_audit_close_report(a, pki_audit_report_stderr, NULL);
}


void
pki_audit_close_report(pki_audit_t *a, pki_audit_report_pt report,
    void *arg)
{
    if (a == NULL) {
        return;
    }

    if (report == NULL) {
        report = pki_audit_report_stderr;
    }

    {
        pki_audit_t  *cur;

        cur = a;
        (void) __atomic_compare_exchange_n(&pki_default_log, &cur, NULL, 0,
                                           __ATOMIC_ACQ_REL,
                                           __ATOMIC_ACQUIRE);
    }

    pki_audit_syncer_stop(a);

    {
        pki_result_t       r;
        pki_audit_qent_t  *q;

        /* what is still queued (the syncer could not write it) */
        a->closing = 1;

        if (a->qhead != NULL || a->retry != NULL || a->pend != NULL) {
            pki_result_init(&r);
            (void) pki_audit_drain(a, 1, &r);
        }

        /* not written after that last try (the file fails to the
         * end): said, the plain ones one by one */
        if (a->retry != NULL || a->qhead != NULL) {
            int       checked;
            char      msg[600];
            unsigned  carried;

            checked = 0;
            carried = 0;

            pthread_mutex_lock(&a->lock);

            if (a->fd >= 0 && flock(a->lockfd, LOCK_EX) == 0) {
                pki_result_init(&r);
                checked = pki_audit_catch_up(a, &r);

                pki_audit_report_lost(a, a->retry, checked, &carried,
                                      report, arg);
                (void) flock(a->lockfd, LOCK_UN);

            } else {
                pki_audit_report_lost(a, a->retry, 0, &carried, report,
                                      arg);
            }

            pthread_mutex_unlock(&a->lock);

            pki_audit_report_lost(a, a->qhead, 0, &carried, report, arg);

            if (carried > 0) {
                snprintf(msg, sizeof(msg), "%u issuance entries not "
                         "written to %s: left in their Redis streams, "
                         "for a janitor to write", carried,
                         a->path != NULL ? a->path : "audit.log");
                report(arg, 0, msg);
            }
        }

        /* not synced: still in their stream, for the janitor */
        while ((q = a->pend) != NULL) {
            a->pend = q->next;
            free(q);
        }

        while ((q = a->retry) != NULL) {
            a->retry = q->next;
            free(q);
        }

        while ((q = a->qhead) != NULL) {
            a->qhead = q->next;
            free(q);
        }
    }

    if (a->fd >= 0) {
        if (!a->no_fsync) {
            (void) fdatasync(a->fd);
        }
        close(a->fd);
    }

    if (a->lockfd >= 0) {
        close(a->lockfd);
    }

    pthread_mutex_destroy(&a->lock);
    pthread_mutex_destroy(&a->gate);
    pthread_mutex_destroy(&a->qlock);
    pthread_mutex_destroy(&a->jlock);
    pthread_cond_destroy(&a->jcond);
    free(a->obuf);
    free(a->carry);
    pthread_cond_destroy(&a->cond);
    pthread_cond_destroy(&a->scond);
    free(a->dir);
    free(a->path);
    free(a);
}


/* The "seq" and "hash" of one line (NUL-terminated, no newline). */
static int
pki_line_seq_hash(const char *line, unsigned long long *seq, char hash[65])
{
    const char  *p, *q;
    char        *end;

    if (strncmp(line, "{\"seq\":", 7) != 0) {
        return 0;
    }

    *seq = strtoull(line + 7, &end, 10);
    if (end == line + 7 || *seq == 0) {
        return 0;
    }

    p = NULL;
    for (q = strstr(line, PKI_AUDIT_HASH_TAG); q != NULL;
         q = strstr(q + 1, PKI_AUDIT_HASH_TAG))
    {
        p = q;
    }

    if (p == NULL) {
        return 0;
    }

    p += sizeof(PKI_AUDIT_HASH_TAG) - 1;

    if (strlen(p) != 66 || strcmp(p + 64, "\"}") != 0) {
        return 0;
    }

    memcpy(hash, p, 64);
    hash[64] = '\0';

    return 1;
}


/* The last entry of fd (size bytes): seq, hash.  A torn last line (no
 * newline: a crash in the middle of a write that was never acknowledged)
 * is cut off.  Returns 1 with *seq 0 for an empty file. */
static int pki_audit_read_tail_w(int fd, off_t *size, unsigned long long *seq,
    char hash[65], int truncate, off_t window, pki_result_t *res);

static int
pki_audit_read_tail(int fd, off_t *size, unsigned long long *seq,
    char hash[65], int truncate, pki_result_t *res)
{
    int  rc;

    /* a line is about 400 bytes: a small read first (this runs under the
     * lock each time another process appended) */
    rc = pki_audit_read_tail_w(fd, size, seq, hash, truncate, 4096, res);

    if (rc < 0) {
        rc = pki_audit_read_tail_w(fd, size, seq, hash, truncate,
                                   PKI_AUDIT_TAIL, res);
    }

    return rc;
}


/* -1: the window holds no whole line; nothing was changed */
static int
pki_audit_read_tail_w(int fd, off_t *size, unsigned long long *seq,
    char hash[65], int truncate, off_t window, pki_result_t *res)
{
    off_t     from;
    char     *buf, *nl, *line;
    ssize_t   n;
    size_t    len;

    *seq = 0;

    if (*size == 0) {
        return 1;
    }

    from = *size > window ? *size - window : 0;
    len = (size_t) (*size - from);

    buf = malloc(len + 1);
    if (buf == NULL) {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        return 0;
    }

    n = pread(fd, buf, len, from);
    if (n != (ssize_t) len) {
        free(buf);
        pki_fail(res, PKI_UNAVAILABLE, "cannot read the audit log");
        return 0;
    }

    buf[len] = '\0';

    if (buf[len - 1] != '\n') {
        nl = memrchr(buf, '\n', len);

        if (nl == NULL && from > 0) {
            free(buf);
            if (window < PKI_AUDIT_TAIL) {
                return -1;
            }
            pki_fail(res, PKI_INTERNAL, "audit log tail is unreadable");
            return 0;
        }

        len = nl ? (size_t) (nl - buf) + 1 : 0;

        if (truncate) {
            if (ftruncate(fd, from + (off_t) len) != 0) {
                free(buf);
                pki_fail(res, PKI_UNAVAILABLE, "cannot cut a torn entry "
                         "off the audit log: %s", strerror(errno));
                return 0;
            }
            *size = from + (off_t) len;
        }

        buf[len] = '\0';

        if (len == 0) {
            free(buf);
            return 1;
        }
    }

    buf[len - 1] = '\0';
    nl = memrchr(buf, '\n', len - 1);
    line = nl ? nl + 1 : buf;

    if (nl == NULL && from > 0) {
        free(buf);
        if (window < PKI_AUDIT_TAIL) {
            /* a torn tail was cut off already: *size says where */
            return -1;
        }
        pki_fail(res, PKI_INTERNAL, "audit log entry too long");
        return 0;
    }

    if (!pki_line_seq_hash(line, seq, hash)) {
        free(buf);
        pki_fail(res, PKI_INTERNAL, "the last audit log entry is unreadable");
        return 0;
    }

    free(buf);
    return 1;
}


static int
pki_rotated_name(const char *name, unsigned long long *first)
{
    size_t  i;

    if (strlen(name) != 22 || strncmp(name, "audit-", 6) != 0
        || strcmp(name + 18, ".log") != 0)
    {
        return 0;
    }

    *first = 0;

    for (i = 6; i < 18; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return 0;
        }
        *first = *first * 10 + (unsigned long long) (name[i] - '0');
    }

    return 1;
}


/* The newest rotated file's last entry (audit.log is empty or absent). */
static int
pki_audit_last_rotated(pki_audit_t *a, pki_result_t *res)
{
    DIR                 *d;
    int                  fd, ok;
    off_t                size;
    char                 best[300], *path;
    struct stat          st;
    struct dirent       *de;
    unsigned long long   first, bestn, seq;

    d = opendir(a->dir);
    if (d == NULL) {
        pki_fail(res, PKI_UNAVAILABLE, "cannot read %s", a->dir);
        return 0;
    }

    bestn = 0;
    best[0] = '\0';

    while ((de = readdir(d)) != NULL) {
        if (pki_rotated_name(de->d_name, &first) && first >= bestn) {
            bestn = first;
            snprintf(best, sizeof(best), "%s", de->d_name);
        }
    }

    closedir(d);

    a->seq = 0;
    memcpy(a->hash, PKI_AUDIT_ZERO_HASH, 65);

    if (best[0] == '\0') {
        return 1;
    }

    path = pki_path(a->dir, best);
    if (path == NULL) {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        return 0;
    }

    fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);

    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        pki_fail(res, PKI_UNAVAILABLE, "cannot open %s/%s", a->dir, best);
        return 0;
    }

    size = st.st_size;
    ok = pki_audit_read_tail(fd, &size, &seq, a->hash, 0, res);
    close(fd);

    if (ok) {
        a->seq = seq;
    }

    return ok;
}


/* The log went back under a writer that knew it further on (seq, end:
 * what this process wrote or read last, and knows complete): entries were
 * cut off or the log replaced.  Going on would chain (and sign, at the
 * next checkpoint) over the cut, which no verifier could then see.  The
 * state stays the one known, so every later catch-up refuses too, until
 * the entries are back or the process starts again (it then takes the
 * log as it finds it). */
static int
pki_audit_went_back(pki_audit_t *a, unsigned long long seq, off_t end,
    const char *hash, const char *what, unsigned long long now_seq,
    long long now_size, pki_result_t *res)
{
    a->seq = seq;
    a->end = end;
    memcpy(a->hash, hash, 65);

    pki_fail(res, PKI_INTERNAL, "audit log %s went back (%s: seq %llu, "
             "%lld bytes; this process knew seq %llu, %lld bytes): entries "
             "were removed or the log replaced; nothing is appended until "
             "they are restored", a->dir, what, now_seq, now_size, seq,
             (long long) end);
    return 0;
}


/* With the locks held: fd names the current audit.log, seq and hash are
 * those of its last entry. */
static int
pki_audit_catch_up(pki_audit_t *a, pki_result_t *res)
{
    int                 fd, created, known;
    char                first[32], *end, khash[65];
    off_t               size, kend;
    struct stat         st, fst;
    unsigned long long  kseq;

    /* what this process knows of the log, unless its last write failed
     * (end -1: the file's real end is read again) */
    known = a->end >= 0 && a->seq > 0;
    kseq = a->seq;
    kend = a->end;
    memcpy(khash, a->hash, 65);

    if (a->fd >= 0 && stat(a->path, &st) == 0 && st.st_ino == a->ino
        && st.st_dev == a->dev)
    {
        if (fstat(a->fd, &fst) != 0) {
            pki_fail(res, PKI_UNAVAILABLE, "fstat(audit.log) failed");
            return 0;
        }

        if (fst.st_size == a->end) {
            return 1;
        }

        if (known && fst.st_size < kend) {
            return pki_audit_went_back(a, kseq, kend, khash, "audit.log "
                                       "shrank", kseq,
                                       (long long) fst.st_size, res);
        }

    } else {
        if (a->fd >= 0) {
            close(a->fd);
            a->fd = -1;
        }

        /* a file made here: its name is durable only once the directory
         * is synced (as after a rotation) */
        created = 1;
        fd = open(a->path, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC,
                  0640);

        if (fd < 0 && errno == EEXIST) {
            created = 0;
            fd = open(a->path, O_RDWR | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
        }

        if (fd < 0) {
            pki_fail(res, PKI_UNAVAILABLE, "cannot open %s: %s", a->path,
                     strerror(errno));
            return 0;
        }

        if (created && !a->no_fsync) {
            pki_fsync_dir(a->dir);
        }

        if (fstat(fd, &fst) != 0) {
            close(fd);
            pki_fail(res, PKI_UNAVAILABLE, "fstat(audit.log) failed");
            return 0;
        }

        a->fd = fd;
        a->dev = fst.st_dev;
        a->ino = fst.st_ino;
        a->first_seq = 0;

        /* a new file (or one that was cut) must not inherit the sync
         * record of an old one with the same inode number */
        pki_audit_srec_clamp(a, fst.st_dev, fst.st_ino, fst.st_size);
    }

    size = fst.st_size;

    if (!pki_audit_read_tail(a->fd, &size, &a->seq, a->hash, 1, res)) {
        return 0;
    }

    if (size < fst.st_size) {
        /* a torn line was cut off: a sync record covering it is about
         * bytes the next lines overwrite */
        pki_audit_srec_clamp(a, fst.st_dev, fst.st_ino, size);
    }

    a->end = size;

    if (a->seq == 0) {
        /* empty: the chain goes on from the newest rotated file */
        a->first_seq = 0;
        if (!pki_audit_last_rotated(a, res)) {
            return 0;
        }

        if (known && a->seq < kseq) {
            return pki_audit_went_back(a, kseq, kend, khash, "audit.log "
                                       "empty, the newest rotated file "
                                       "ends", a->seq, 0, res);
        }

        return 1;
    }

    if (known && a->seq < kseq) {
        return pki_audit_went_back(a, kseq, kend, khash, "its last entry",
                                   a->seq, (long long) size, res);
    }

    if (a->first_seq == 0) {
        memset(first, 0, sizeof(first));
        if (pread(a->fd, first, sizeof(first) - 1, 0) > 7
            && strncmp(first, "{\"seq\":", 7) == 0)
        {
            a->first_seq = strtoull(first + 7, &end, 10);
        }
    }

    return 1;
}


/* With the locks held: audit.log becomes audit-<FIRST>.log. */
static int
pki_audit_rotate(pki_audit_t *a, pki_result_t *res)
{
    int           fd;
    char          name[32], *path;
    pki_result_t  cres;

    if (a->key != NULL && a->since_ckpt > 0) {
        pki_result_init(&cres);

        if (pki_audit_write_locked(a, NULL, 1, &cres) != PKI_OK) {
            if (a->end < 0) {
                /* the write failed: the file's end is not known */
                pki_fail(res, cres.status, "%s", cres.detail);
                return 0;
            }

            /* not signed (a token away): the file rotates all the same,
             * ending in an unsigned stretch as a missing key leaves
             * one; refusing would refuse every later entry, each time
             * asking the key again */
            pki_log(res, "%sthe checkpoint at rotation is not signed: "
                    "%s", (res && res->log[0]) ? "; " : "", cres.detail);
        }
    }

    if (!pki_audit_oflush(a)) {
        pki_fail(res, PKI_UNAVAILABLE, "cannot write the audit log: %s",
                 strerror(errno));
        return 0;
    }

    if (a->first_seq == 0) {
        pki_fail(res, PKI_INTERNAL, "audit.log: first entry unreadable");
        return 0;
    }

    if (!a->no_fsync && fdatasync(a->fd) != 0) {
        pki_fail(res, PKI_UNAVAILABLE, "fdatasync(audit.log) failed: %s",
                 strerror(errno));
        return 0;
    }

    /* everything this process wrote so far is in the old file, now
     * durable */
    __atomic_store_n(&a->synced, a->written, __ATOMIC_RELEASE);

    snprintf(name, sizeof(name), "audit-%012llu.log", a->first_seq);
    path = pki_path(a->dir, name);
    if (path == NULL) {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        return 0;
    }

    if (access(path, F_OK) == 0 || rename(a->path, path) != 0) {
        pki_fail(res, PKI_UNAVAILABLE, "cannot rotate audit.log to %s",
                 name);
        free(path);
        return 0;
    }

    free(path);

    fd = open(a->path, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC,
              0640);
    if (fd < 0) {
        pki_fail(res, PKI_UNAVAILABLE, "cannot create %s: %s", a->path,
                 strerror(errno));
        return 0;
    }

    if (!a->no_fsync) {
        pki_fsync_dir(a->dir);
    }

    close(a->fd);
    a->fd = fd;
    a->end = 0;
    a->first_seq = 0;

    {
        struct stat  st;

        if (fstat(fd, &st) == 0) {
            a->dev = st.st_dev;
            a->ino = st.st_ino;
            pki_audit_srec_clamp(a, st.st_dev, st.st_ino, 0);
        }
    }

    return 1;
}


static void
pki_time_text(char *buf, size_t size)
{
    struct tm        tm;
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}


/* DIR/audit.head: a copy of the latest checkpoint, replaced atomically.
 * The verifier requires the log to still hold it, so that cutting entries
 * off the end, up to and including the last checkpoint, is seen too. */
static void
pki_audit_write_head(pki_audit_t *a, const char *line, size_t len)
{
    int    fd;
    char  *tmp, *path;

    tmp = pki_path(a->dir, "audit.head.tmp");
    path = pki_path(a->dir, "audit.head");

    if (tmp != NULL && path != NULL) {
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                  0640);
        if (fd >= 0) {
            if (pki_write_all(fd, line, len)
                && (a->no_fsync || fsync(fd) == 0))
            {
                close(fd);
                (void) rename(tmp, path);
            } else {
                close(fd);
                (void) unlink(tmp);
            }
        }
    }

    free(tmp);
    free(path);
}


static const EVP_MD *
pki_audit_md(pki_key_t *k)
{
    EVP_PKEY  *pub;

    pub = pki_key_public(k);

    if (pub != NULL && (EVP_PKEY_get_id(pub) == EVP_PKEY_ED25519
                        || EVP_PKEY_get_id(pub) == EVP_PKEY_ED448))
    {
        return NULL;
    }

    return EVP_sha256();
}


/* The fields of an event (after "time", before "pid"). */
static void
pki_audit_body(pki_jbuf_t *b, const pki_event_t *ev)
{
    pki_jstr(b, "type", pki_event_type_name(ev->type));
    pki_jstr(b, "protocol", ev->protocol);
    pki_jstr(b, "operation", ev->operation);
    pki_jstr(b, "ca", ev->ca);
    pki_jstr(b, "template", ev->template_name);
    pki_jstr(b, "serial", ev->serial);
    pki_jstr(b, "subject", ev->subject);
    pki_jstr(b, "requester", ev->requester);
    pki_jstr(b, "client", ev->client);
    pki_jstr(b, "outcome", pki_outcome_class(ev->status));
    if (ev->status != PKI_OK) {
        pki_jstr(b, "status", pki_status_name(ev->status));
    }
    pki_jstr(b, "reason", ev->reason);
}


/* room in a line around the fields: seq, time, pid, prev, hash */
#define PKI_AUDIT_FRAME        256

/* the longest fields of a carried entry: room for its "rid" (and, in the
 * previous version's stream, nothing more); room for its "stream" too
 * (a log id of 80 bytes at most) */
#define PKI_AUDIT_LEGACY_MAX   (PKI_AUDIT_LINE_MAX - 80 - PKI_AUDIT_FRAME - 64)
#define PKI_AUDIT_CARRIED_MAX  (PKI_AUDIT_LEGACY_MAX - 112)


static pki_status_t
pki_audit_write_locked(pki_audit_t *a, const pki_event_t *ev,
    int checkpoint, pki_result_t *res)
{
    return pki_audit_write_q(a, NULL, ev, checkpoint, res);
}


/* Lines go to the file, or to obuf while a batch is written. */
static int
pki_audit_out(pki_audit_t *a, const char *p, size_t n)
{
    if (!a->batching) {
        return pki_write_all(a->fd, p, n);
    }

    if (a->olen + n > PKI_AUDIT_OBUF) {
        if (!pki_audit_oflush(a)) {
            return 0;
        }
    }

    if (n > PKI_AUDIT_OBUF) {
        return pki_write_all(a->fd, p, n);
    }

    memcpy(a->obuf + a->olen, p, n);
    a->olen += n;

    return 1;
}


static int
pki_audit_oflush(pki_audit_t *a)
{
    size_t  n;

    n = a->olen;
    a->olen = 0;

    if (n == 0) {
        return 1;
    }

    if (!pki_write_all(a->fd, a->obuf, n)) {
        /* the buffered lines count as written: the next catch-up reads
         * the file's real end (and cuts a partial line off) */
        a->end = -1;
        return 0;
    }

    return 1;
}


/* With the locks held: one line (a queued entry q, an event ev, or a
 * checkpoint), rotating first when the file would grow over max_size. */
static pki_status_t
pki_audit_write_q(pki_audit_t *a, pki_audit_qent_t *q,
    const pki_event_t *ev, int checkpoint, pki_result_t *res)
{
    char            tbs[256], ts[80], hash[65], *sig64;
    size_t          siglen, n;
    pki_jbuf_t      b;
    pki_status_t    st;
    unsigned char  *sig;
    char            line[PKI_AUDIT_LINE_MAX];

    b.p = line;
    b.len = 0;
    b.cap = sizeof(line) - 80;   /* room for the hash and the newline */
    b.err = 0;

    if (q != NULL) {
        memcpy(ts, q->time, sizeof(q->time));
    } else {
        pki_time_text(ts, sizeof(ts));
    }

    {
        char  head[64];
        int   hn;

        hn = snprintf(head, sizeof(head), "{\"seq\":%llu", a->seq + 1);
        pki_jraw(&b, head, (size_t) hn);
    }

    pki_jstr(&b, "time", ts);

    if (checkpoint) {
        pki_jstr(&b, "type", "checkpoint");
        pki_jstr(&b, "key", a->key_id);

        snprintf(tbs, sizeof(tbs), PKI_AUDIT_CKPT_MAGIC2 "%llu\n%s\n%s\n",
                 a->seq + 1, ts, a->hash);

        sig = NULL;
        pki_observe_off = 1;
        st = pki_key_sign(a->key, pki_audit_md(a->key), (unsigned char *) tbs,
                          strlen(tbs), &sig, &siglen, res);
        pki_observe_off = 0;
        if (st != PKI_OK) {
            return st;
        }

        sig64 = pki_base64_encode(sig, siglen, 0, &n);
        free(sig);

        if (sig64 == NULL) {
            return pki_fail(res, PKI_INTERNAL, "out of memory");
        }

        pki_jstr(&b, "sig", sig64);
        free(sig64);

    } else if (q != NULL) {
        pki_jraw(&b, q->body, q->blen);
        if (q->rid[0] != '\0') {
            pki_jstr(&b, "rid", q->rid);

            /* the stream the id is of (ids are unique per stream only);
             * none: the previous version's, as its own lines have it */
            if (!q->legacy) {
                pki_jstr(&b, "stream", a->logid);
            }
        }

    } else {
        pki_audit_body(&b, ev);
    }

    pki_jnum(&b, "pid", (long long) pki_int_pid());
    pki_jstr(&b, "prev", a->hash);

    if (b.err) {
        return pki_fail(res, PKI_INTERNAL, "audit entry too long");
    }

    pki_sha256_hex(line, b.len, hash);

    b.cap = sizeof(line);
    pki_jraw(&b, PKI_AUDIT_HASH_TAG, sizeof(PKI_AUDIT_HASH_TAG) - 1);
    pki_jraw(&b, hash, 64);
    pki_jraw(&b, "\"}\n", 3);

    if (b.err) {
        return pki_fail(res, PKI_INTERNAL, "audit entry too long");
    }

    if (!checkpoint && a->end > 0
        && (size_t) a->end + b.len > a->max_size)
    {
        if (!pki_audit_rotate(a, res)) {
            return res ? res->status : PKI_UNAVAILABLE;
        }

        /* the chain (and seq) moved on if a checkpoint was written */
        return pki_audit_write_q(a, q, ev, 0, res);
    }

    if (!pki_audit_out(a, line, b.len)) {
        st = pki_fail(res, PKI_UNAVAILABLE, "cannot write the audit log: %s",
                      strerror(errno));
        /* a partial line is cut off by the next catch-up */
        a->end = -1;
        return st;
    }

    if (a->first_seq == 0 && a->end == 0) {
        a->first_seq = a->seq + 1;
    }

    a->end += (off_t) b.len;
    a->seq++;
    memcpy(a->hash, hash, 65);
    a->written++;

    if (q != NULL) {
        q->wdev = a->dev;
        q->wino = a->ino;
        q->wend = a->end;
        q->wfirst = a->first_seq;
        memcpy(q->whash, hash, 65);
    }

    if (checkpoint) {
        a->since_ckpt = 0;

        /* the head names a checkpoint the file holds durably: after a
         * power loss, a head ahead of the log is a false tamper alarm.
         * One more sync per checkpoint (the head stays at the previous
         * one when it fails; the line is written all the same) */
        if (!pki_audit_oflush(a)) {
            return pki_fail(res, PKI_UNAVAILABLE, "cannot write the audit "
                            "log: %s", strerror(errno));
        }

        if (a->no_fsync
            || pki_audit_shared_sync(a, a->fd, a->dev, a->ino, a->end) == 0)
        {
            pki_audit_write_head(a, line, b.len);
        }

    } else {
        a->since_ckpt++;
    }

    return PKI_OK;
}


static pki_status_t
pki_audit_locked_op(pki_audit_t *a, pki_audit_qent_t *q,
    const pki_event_t *ev, int checkpoint, unsigned long long *mine,
    pki_result_t *res)
{
    pki_status_t  st;

    while (flock(a->lockfd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            return pki_fail(res, PKI_UNAVAILABLE, "flock(audit.lock) failed");
        }
    }

    if (!pki_audit_catch_up(a, res)) {
        st = res ? res->status : PKI_UNAVAILABLE;
        if (st == PKI_OK) {
            st = PKI_UNAVAILABLE;
        }
        goto done;
    }

    if (checkpoint && a->since_ckpt == 0) {
        st = PKI_OK;
        goto done;
    }

    st = pki_audit_write_q(a, q, ev, checkpoint, res);

    if (st == PKI_OK && !checkpoint && a->key != NULL
        && a->since_ckpt >= a->ckpt_every)
    {
        pki_result_t  cres;

        pki_result_init(&cres);
        (void) pki_audit_write_locked(a, NULL, 1, &cres);
    }

done:

    *mine = a->written;
    (void) flock(a->lockfd, LOCK_UN);

    return st;
}


/* ---- one sync for all processes (the record in DIR/audit.lock) ---------- */

#define PKI_AUDIT_SYNC_MAGIC  0x31636e7973696b70ULL   /* "pkisync1" */

typedef struct {
    unsigned long long    magic;
    unsigned long long    dev;
    unsigned long long    ino;
    unsigned long long    size;        /* of ino, durable */
} pki_audit_srec_t;


static int
pki_audit_gate(pki_audit_t *a, int type)
{
    struct flock  fl;

    if (type != F_UNLCK) {
        pthread_mutex_lock(&a->gate);
    }

    memset(&fl, 0, sizeof(fl));
    fl.l_type = (short) type;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 1;

    while (fcntl(a->lockfd, F_OFD_SETLKW, &fl) != 0) {
        if (errno != EINTR) {
            if (type != F_UNLCK) {
                pthread_mutex_unlock(&a->gate);
            }
            return 0;
        }
    }

    if (type == F_UNLCK) {
        pthread_mutex_unlock(&a->gate);
    }

    return 1;
}


static int
pki_audit_srec_read(pki_audit_t *a, pki_audit_srec_t *r)
{
    if (pread(a->lockfd, r, sizeof(*r), 0) != (ssize_t) sizeof(*r)
        || r->magic != PKI_AUDIT_SYNC_MAGIC)
    {
        memset(r, 0, sizeof(*r));
        return 0;
    }

    return 1;
}


static void
pki_audit_srec_write(pki_audit_t *a, pki_audit_srec_t *r)
{
    r->magic = PKI_AUDIT_SYNC_MAGIC;

    if (pwrite(a->lockfd, r, sizeof(*r), 0) != (ssize_t) sizeof(*r)) {
        /* a stale record errs high: make it unusable */
        (void) ftruncate(a->lockfd, 0);
    }
}


/* dev/ino (the current audit.log) is size bytes long now, after a torn
 * line was cut off or when it was (re)opened: a record above that was
 * about other bytes (or another file with the same inode number) */
static void
pki_audit_srec_clamp(pki_audit_t *a, dev_t dev, ino_t ino, off_t size)
{
    pki_audit_srec_t  r;

    if (a->no_fsync || !pki_audit_gate(a, F_WRLCK)) {
        return;
    }

    if (pki_audit_srec_read(a, &r) && r.dev == (unsigned long long) dev
        && r.ino == (unsigned long long) ino
        && r.size > (unsigned long long) size)
    {
        r.size = (unsigned long long) size;
        pki_audit_srec_write(a, &r);
    }

    (void) pki_audit_gate(a, F_UNLCK);
}


/* One line of the log (p, len bytes, no newline): 1 when it is an entry
 * whose hash matches its content; its seq, hash and prev. */
static int
pki_audit_line_ok(const char *p, size_t len, unsigned long long *seq,
    char hash[65], char prev[65])
{
    size_t       plen;
    const char  *tag;
    char         calc[65], line[PKI_AUDIT_LINE_MAX + 1];
    static const char  ptag[] = ",\"prev\":\"";

    if (len == 0 || len > PKI_AUDIT_LINE_MAX || memchr(p, '\0', len) != NULL)
    {
        return 0;
    }

    memcpy(line, p, len);
    line[len] = '\0';

    if (!pki_line_seq_hash(line, seq, hash)) {
        return 0;
    }

    /* ...,"prev":"<64>","hash":"<64>"} */
    tag = line + len - 66 - (sizeof(PKI_AUDIT_HASH_TAG) - 1);
    plen = sizeof(ptag) - 1;

    if (tag < line + plen + 65
        || memcmp(tag - 65 - plen, ptag, plen) != 0 || tag[-1] != '"')
    {
        return 0;
    }

    memcpy(prev, tag - 65, 64);
    prev[64] = '\0';

    pki_sha256_hex(line, (size_t) (tag - line), calc);

    return strcmp(calc, hash) == 0;
}


/* With the flock held, once when the log is opened: a crash (a power loss
 * with blocks allocated but never written) may have left audit.log ending
 * in zeros, or in a fragment of a line that ends in a newline; a catch-up
 * only cuts a tail without one, and this one made every append fail.  The
 * file is cut back to the last line whose hash and prev check out.  What
 * the last sync covered (the record in audit.lock) is not cut: damage
 * there is no crash, and the log stays shut. */
static int
pki_audit_recover(pki_audit_t *a, pki_result_t *res)
{
    int                  fd, first, ok, synced, k;
    char                *map, hash[65], prev[65], last[65];
    const char          *p, *nl, *end, *bad;
    off_t                low, size, cut;
    struct stat          st;
    pki_audit_srec_t     r;
    unsigned long long   seq, lseq;

    fd = open(a->path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            return 1;
        }
        pki_fail(res, PKI_INTERNAL, "cannot open %s: %s", a->path,
                 strerror(errno));
        return 0;
    }

    if (fstat(fd, &st) != 0) {
        pki_fail(res, PKI_INTERNAL, "fstat(%s) failed", a->path);
        close(fd);
        return 0;
    }

    size = st.st_size;

    if (size == 0) {
        close(fd);
        return 1;
    }

    map = mmap(NULL, (size_t) size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        pki_fail(res, PKI_INTERNAL, "cannot map %s: %s", a->path,
                 strerror(errno));
        close(fd);
        return 0;
    }

    end = map + size;

    /* a tail without a newline: cut by the catch-up, as always */
    while (end > map && end[-1] != '\n') {
        end--;
    }

    if (end == map) {
        munmap(map, (size_t) size);
        close(fd);
        return 1;
    }

    /* what the last sync covered: a crash may have spoiled any line
     * above it, not only the last two (zeros in the middle of the tail
     * that a power loss left, good lines after them) */
    low = 0;
    synced = 0;

    if (!a->no_fsync && pki_audit_gate(a, F_WRLCK)) {
        if (pki_audit_srec_read(a, &r)
            && r.dev == (unsigned long long) st.st_dev
            && r.ino == (unsigned long long) st.st_ino
            && r.size <= (unsigned long long) size)
        {
            low = (off_t) r.size;
            synced = 1;
        }
        (void) pki_audit_gate(a, F_UNLCK);
    }

    /* no record of what was synced (no_fsync, or it is about another
     * file): the last line and the one before it checking out is taken
     * for a clean end; scanning from the start instead would cut at
     * damage anywhere in the file */
    ok = 0;
    if (!synced) {
        nl = end - 1;
        for (p = nl; p > map && p[-1] != '\n'; p--) {
            /* void */
        }

        if (pki_audit_line_ok(p, (size_t) (nl - p), &seq, hash, prev)) {
            if (p == map) {
                ok = 1;

            } else {
                nl = p - 1;
                for (p = nl; p > map && p[-1] != '\n'; p--) {
                    /* void */
                }
                ok = pki_audit_line_ok(p, (size_t) (nl - p), &lseq, last,
                                       hash)
                     && lseq + 1 == seq && strcmp(last, prev) == 0;
            }
        }
    }

    if (ok) {
        munmap(map, (size_t) size);
        close(fd);
        return 1;
    }

    /* scanned from two lines below the line holding the synced size:
     * damage in the last synced lines is no crash and keeps the log
     * shut; the first bad line above them is where the file is cut */
    p = map + low;
    for (k = 0; k < 3; k++) {
        if (k > 0 && p > map) {
            p--;
        }
        while (p > map && p[-1] != '\n') {
            p--;
        }
    }

    bad = NULL;
    first = 1;
    lseq = 0;

    while (p < end) {
        nl = memchr(p, '\n', (size_t) (end - p));

        if (!pki_audit_line_ok(p, (size_t) (nl - p), &seq, hash, prev)
            || (!first && (seq != lseq + 1 || strcmp(prev, last) != 0)))
        {
            bad = p;
            break;
        }

        first = 0;
        lseq = seq;
        memcpy(last, hash, 65);
        p = nl + 1;
    }

    if (bad == NULL) {
        munmap(map, (size_t) size);
        close(fd);
        return 1;
    }

    /* the first bad line ends below the synced size */
    if ((nl = memchr(bad, '\n', (size_t) (end - bad))) + 1 <= map + low) {
        munmap(map, (size_t) size);
        close(fd);
        pki_fail(res, PKI_INTERNAL, "%s is damaged below what was synced "
                 "(%lld bytes): not a crash, not cut", a->path,
                 (long long) low);
        return 0;
    }

    cut = (off_t) (bad - map);

    munmap(map, (size_t) size);

    if (ftruncate(fd, cut) != 0
        || (!a->no_fsync && fdatasync(fd) != 0))
    {
        pki_fail(res, PKI_INTERNAL, "cannot cut the damaged tail off %s: "
                 "%s", a->path, strerror(errno));
        close(fd);
        return 0;
    }

    close(fd);

    pki_audit_srec_clamp(a, st.st_dev, st.st_ino, cut);

    pki_log(res, "%s%s: cut %lld bytes of a damaged tail (a crash) at "
            "offset %lld of %lld", (res && res->log[0]) ? "; " : "",
            a->path, (long long) (size - cut), (long long) cut,
            (long long) size);

    return 1;
}


/* fdatasync(fd) unless another process's sync already covered the first
 * end bytes of dev/ino; one at a time across processes */
static int
pki_audit_shared_sync(pki_audit_t *a, int fd, dev_t dev, ino_t ino,
    off_t end)
{
    int                  rc, eno;
    struct stat          st;
    pki_audit_srec_t     r;

    if (end < 0 || !pki_audit_gate(a, F_WRLCK)) {
        return fdatasync(fd);
    }

    if (pki_audit_srec_read(a, &r) && r.dev == (unsigned long long) dev
        && r.ino == (unsigned long long) ino
        && r.size >= (unsigned long long) end)
    {
        (void) pki_audit_gate(a, F_UNLCK);
        return 0;
    }

    if (fstat(fd, &st) != 0 || st.st_dev != dev || st.st_ino != ino) {
        (void) pki_audit_gate(a, F_UNLCK);
        return fdatasync(fd);
    }

    rc = fdatasync(fd);
    eno = errno;

    if (rc == 0) {
        if (r.dev != (unsigned long long) dev
            || r.ino != (unsigned long long) ino)
        {
            r.dev = (unsigned long long) dev;
            r.ino = (unsigned long long) ino;
            r.size = 0;
        }

        if ((unsigned long long) st.st_size > r.size) {
            r.size = (unsigned long long) st.st_size;
            pki_audit_srec_write(a, &r);
        }
    }

    (void) pki_audit_gate(a, F_UNLCK);

    errno = eno;
    return rc;
}


/* Waits until every line this process wrote up to mine is durable. */
static pki_status_t
pki_audit_commit(pki_audit_t *a, unsigned long long mine, pki_result_t *res)
{
    int                  fd, rc, eno;
    off_t                end;
    dev_t                dev;
    ino_t                ino;
    unsigned long long   target;

    while (a->synced < mine) {

        if (a->syncing) {
            pthread_cond_wait(&a->cond, &a->lock);
            continue;
        }

        a->syncing = 1;
        target = a->written;
        fd = dup(a->fd);
        dev = a->dev;
        ino = a->ino;
        end = a->end;

        pthread_mutex_unlock(&a->lock);

        rc = (fd >= 0) ? pki_audit_shared_sync(a, fd, dev, ino, end) : -1;
        eno = errno;
        if (fd >= 0) {
            close(fd);
        }

        pthread_mutex_lock(&a->lock);

        a->syncing = 0;
        if (rc == 0 && target > a->synced) {
            __atomic_store_n(&a->synced, target, __ATOMIC_RELEASE);
        }
        pthread_cond_broadcast(&a->cond);

        if (rc != 0) {
            return pki_fail(res, PKI_UNAVAILABLE, "fdatasync(audit.log) "
                            "failed: %s", strerror(eno));
        }
    }

    return PKI_OK;
}


pki_status_t
pki_audit_append(pki_audit_t *a, const pki_event_t *ev, int durable,
    pki_result_t *res)
{
    pki_status_t         st;
    unsigned long long   mine;

    if (a == NULL || ev == NULL) {
        return PKI_OK;
    }

    pthread_mutex_lock(&a->lock);

    st = pki_audit_locked_op(a, NULL, ev, 0, &mine, res);

    if (st == PKI_OK && durable && !a->no_fsync) {
        st = pki_audit_commit(a, mine, res);

    } else if (st == PKI_OK && a->syncer_on) {
        /* the syncer thread makes it durable (group commit) */
        pthread_mutex_lock(&a->qlock);
        a->qsync = 1;
        pthread_cond_signal(&a->scond);
        pthread_mutex_unlock(&a->qlock);
    }

    pthread_mutex_unlock(&a->lock);

    return st;
}


/* ---- the syncer thread ------------------------------------------------------ */

/* The appending thread: the entry's time and fields, formatted now (a
 * field too long fails here, not in the syncer), then queued. */
static int
pki_audit_enqueue(pki_audit_t *a, const pki_event_t *ev,
    unsigned long long *ticket, pki_status_t *st, pki_result_t *res)
{
    pki_jbuf_t          b;
    pki_audit_qent_t   *q;
    char                body[PKI_AUDIT_LINE_MAX];

    *st = PKI_OK;

    if (ev->status != PKI_OK
        && __atomic_load_n(&a->qbytes, __ATOMIC_ACQUIRE) >= a->max_backlog)
    {
        /* a refusal, while the file takes nothing: not held (what passed
         * pki_int_audit_ready() is, a bounded few past the cap) */
        *st = pki_fail(res, PKI_UNAVAILABLE, "the transaction log's "
                       "entries not yet written reached max_backlog");
        return 0;
    }

    b.p = body;
    b.len = 0;
    b.cap = PKI_AUDIT_LINE_MAX - 80 - PKI_AUDIT_FRAME;
    b.err = 0;

    pki_audit_body(&b, ev);

    if (b.err) {
        *st = pki_fail(res, PKI_INTERNAL, "audit entry too long");
        return 0;
    }

    q = malloc(sizeof(pki_audit_qent_t) + b.len);
    if (q == NULL) {
        *st = pki_fail(res, PKI_INTERNAL, "out of memory");
        return 0;
    }

    memcpy(q->body, body, b.len + 1);
    q->blen = b.len;
    q->next = NULL;
    q->carry = NULL;
    q->legacy = 0;
    q->held = 0;
    q->qms = 0;
    q->wend = 0;
    q->rid[0] = '\0';

    pki_time_text(q->time, sizeof(q->time));

    pthread_mutex_lock(&a->qlock);

    if (!a->syncer_on || a->syncer_stop) {
        /* no syncer to write it: the caller writes it itself */
        pthread_mutex_unlock(&a->qlock);
        free(q);
        return 0;
    }

    q->ticket = ++a->qnext;
    *ticket = q->ticket;
    *a->qtail = q;
    a->qtail = &q->next;
    a->qplain++;
    pki_audit_held(&a->qbytes, q, 1);
    pthread_cond_signal(&a->scond);

    pthread_mutex_unlock(&a->qlock);

    return 1;
}


/* With the locks held, after the catch-up: whether the line q was last
 * written as is in the log (the hash it had, where it ended, in that
 * file: audit.log, or the file it was rotated to). */
static int
pki_audit_in_file(pki_audit_t *a, const pki_audit_qent_t *q)
{
    int          fd, in;
    char         name[32], *path, buf[64];
    struct stat  st;

    if (q->wdev == a->dev && q->wino == a->ino && a->fd >= 0) {
        return q->wend <= a->end && q->wend >= 67
               && pread(a->fd, buf, 64, q->wend - 67) == 64
               && memcmp(buf, q->whash, 64) == 0;
    }

    if (q->wfirst == 0) {
        return 0;
    }

    snprintf(name, sizeof(name), "audit-%012llu.log", q->wfirst);
    path = pki_path(a->dir, name);
    if (path == NULL) {
        return 0;
    }

    fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);

    if (fd < 0) {
        return 0;
    }

    in = fstat(fd, &st) == 0 && st.st_dev == q->wdev && st.st_ino == q->wino
         && q->wend <= st.st_size && q->wend >= 67
         && pread(fd, buf, 64, q->wend - 67) == 64
         && memcmp(buf, q->whash, 64) == 0;

    close(fd);

    return in;
}


/* a->lock held: makes durable every line this process wrote until now;
 * then the queue tickets written by then are done, and the carried
 * entries among them leave pend for the end of *done (their streams
 * lose them next).  The tickets are taken before the sync: the lock is
 * let go during it, and a batch another thread writes meanwhile may be
 * after what the sync covers. */
static pki_status_t
pki_audit_sync_pend(pki_audit_t *a, pki_audit_qent_t **done,
    pki_result_t *res)
{
    unsigned             n;
    pki_status_t         st;
    pki_audit_qent_t    *q, **last;
    unsigned long long   hi;

    hi = a->qhi;

    st = pki_audit_commit(a, a->written, res);
    if (st != PKI_OK) {
        return st;
    }

    if (hi > a->qdone) {
        __atomic_store_n(&a->qdone, hi, __ATOMIC_RELEASE);
    }

    for (last = done; *last != NULL; last = &(*last)->next) {
        /* void */
    }

    /* pend is in ticket order */
    n = 0;

    while ((q = a->pend) != NULL && q->ticket <= hi) {
        a->pend = q->next;
        q->next = NULL;
        pki_audit_held(&a->pbytes, q, 0);
        *last = q;
        last = &q->next;
        n++;
    }

    __atomic_store_n(&a->npend, a->npend - n, __ATOMIC_RELEASE);

    return PKI_OK;
}


/* Writes what is queued (after a batch that failed before) with one
 * flock and one write(), then makes everything this process wrote
 * durable when it is due: an answer waits for it, or the carried
 * entries written are old enough (PKI_AUDIT_PEND_MS) or many enough; the
 * queue tickets written advance qdone. */
static pki_status_t
pki_audit_drain(pki_audit_t *a, int force, pki_result_t *res)
{
    int                  need;
    long long            now;
    pki_status_t         st;
    pki_result_t         cres;
    pki_audit_qent_t    *batch, *q, **last, *durable;
    unsigned long long   hi;

    durable = NULL;

    pthread_mutex_lock(&a->lock);

    /* The carried entries written and not yet synced are bounded on
     * their own, at max_backlog bytes as the unwritten ones are: a disk
     * that writes but syncs slowly, or not at all, must not make them
     * grow without end, yet they are no reason to refuse issuance while
     * it syncs well.  Past the bound they are synced now, before more is
     * written, by the thread that writes (the syncer, or a pool thread
     * that asked for a sync; never the event loop).  While that sync
     * fails nothing more is written: what comes waits as not written,
     * where max_backlog refuses.  (The queued bytes count entries that
     * never go to pend too; their write needs a sync anyway.) */
    if (a->pend != NULL
        && __atomic_load_n(&a->pbytes, __ATOMIC_ACQUIRE)
           + __atomic_load_n(&a->qbytes, __ATOMIC_ACQUIRE) > a->max_backlog)
    {
        st = pki_audit_sync_pend(a, &durable, res);
        if (st != PKI_OK) {
            goto unlock;
        }
    }

    /* taken under lock: batches are written in ticket order */
    pthread_mutex_lock(&a->qlock);
    batch = a->qhead;
    a->qhead = NULL;
    a->qtail = &a->qhead;
    need = force || a->qsync;
    a->qsync = 0;
    a->qplain = 0;
    a->qcarried = 0;
    pthread_mutex_unlock(&a->qlock);

    if (a->retry != NULL) {
        for (last = &a->retry; *last != NULL; last = &(*last)->next) {
            /* void */
        }
        *last = batch;
        batch = a->retry;
        __atomic_store_n(&a->retry, NULL, __ATOMIC_RELEASE);
    }

    hi = 0;
    st = PKI_OK;

    if (batch != NULL) {
        while (flock(a->lockfd, LOCK_EX) != 0) {
            if (errno != EINTR) {
                st = pki_fail(res, PKI_UNAVAILABLE,
                              "flock(audit.lock) failed");
                break;
            }
        }

        if (st == PKI_OK) {
            if (!pki_audit_catch_up(a, res)) {
                st = (res && res->status != PKI_OK) ? res->status
                                                    : PKI_UNAVAILABLE;

            } else {
                a->batching = 1;
                a->olen = 0;

                if (!pki_audit_mark_taken(a, batch)) {
                    st = pki_fail(res, PKI_UNAVAILABLE, "fdatasync("
                                  "audit.log) failed: %s", strerror(errno));
                }

                for (q = batch; q != NULL && st == PKI_OK; q = q->next) {
                    if (q->wend > 0 && pki_audit_in_file(a, q)) {
                        /* written by a batch that failed after it (the
                         * catch-up cut off what was torn) */
                        continue;
                    }

                    if (q->held) {
                        /* written by a janitor while our writes failed
                         * (pki_audit_mark_taken) */
                        continue;
                    }

                    st = pki_audit_write_q(a, q, NULL, 0, res);

                    if (st == PKI_OK && a->key != NULL
                        && a->since_ckpt >= a->ckpt_every)
                    {
                        pki_result_init(&cres);

                        if (pki_audit_write_locked(a, NULL, 1, &cres)
                            != PKI_OK && a->end < 0)
                        {
                            /* the checkpoint flushed the batch's lines
                             * and the write failed: they are not in the
                             * file either (taken for written, they were
                             * synced and left their stream: lost) */
                            st = pki_fail(res, PKI_UNAVAILABLE, "cannot "
                                          "write the audit log: %s",
                                          cres.detail);
                        }
                    }
                }

                if (st == PKI_OK && !pki_audit_oflush(a)) {
                    st = pki_fail(res, PKI_UNAVAILABLE, "cannot write the "
                                  "audit log: %s", strerror(errno));
                }

                if (st != PKI_OK) {
                    /* nothing of the batch counts: the next catch-up
                     * reads where the file really ends */
                    a->olen = 0;
                    a->end = -1;
                }

                a->batching = 0;
            }

            (void) flock(a->lockfd, LOCK_UN);
        }

        if (st != PKI_OK) {
            /* fail closed: its answers wait; written first next time */
            __atomic_store_n(&a->retry, batch, __ATOMIC_RELEASE);
            goto unlock;
        }

        while ((q = batch) != NULL) {
            batch = q->next;
            hi = q->ticket;
            pki_audit_held(&a->qbytes, q, 0);

            if (q->carry == NULL) {
                need = 1;               /* its answer waits for the sync */
                free(q);
                continue;
            }

            /* durable in Redis already: synced with the next ones, then
             * taken out of the stream */
            q->next = NULL;
            if (a->pend == NULL) {
                a->pendtail = &a->pend;
                __atomic_store_n(&a->pend_ms, pki_audit_ms(), __ATOMIC_RELEASE);
            }
            *a->pendtail = q;
            a->pendtail = &q->next;
            pki_audit_held(&a->pbytes, q, 1);
            __atomic_store_n(&a->npend, a->npend + 1, __ATOMIC_RELEASE);
        }

        if (hi > a->qhi) {
            a->qhi = hi;
        }
    }

    if (a->pend != NULL && !need) {
        now = pki_audit_ms();
        need = a->npend >= PKI_AUDIT_PEND_MAX
               || __atomic_load_n(&a->pbytes, __ATOMIC_ACQUIRE)
                  >= a->max_backlog
               || now - a->pend_ms >= PKI_AUDIT_PEND_MS;
    }

    if (need) {
        st = pki_audit_sync_pend(a, &durable, res);

        if (st != PKI_OK) {
            /* the answers of what was written wait for a sync that
             * failed: it is due again (the syncer would otherwise sleep
             * until another entry comes, and they with it) */
            pthread_mutex_lock(&a->qlock);
            a->qsync = 1;
            /* called from another thread (pki_audit_sync), the syncer
             * may sleep without a timeout: woken, or the answers wait
             * for the next entry */
            pthread_cond_signal(&a->scond);
            pthread_mutex_unlock(&a->qlock);
        }
    }

unlock:

    pthread_mutex_unlock(&a->lock);

    /* in the file durably: out of the stream (a failure here leaves
     * them to the janitor, which finds them in the file; so does a log
     * closed after its store) */
    if (a->closing) {
        while ((q = durable) != NULL) {
            durable = q->next;
            free(q);
        }
    }

    pki_audit_xdel_later(a, durable);

    return st;
}


/* Sleeps on c (m held) for ms milliseconds at most. */
static void
pki_audit_timedwait(pthread_cond_t *c, pthread_mutex_t *m, long long ms)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }

    (void) pthread_cond_timedwait(c, m, &ts);
}


/* Whether the carried entries gathered for a batch hold half of
 * max_backlog: they are written now, not after PKI_AUDIT_BATCH_MS (what
 * waits for a batch is not written, and a small max_backlog would refuse
 * issuance for it under load). */
static int
pki_audit_gathered(pki_audit_t *a)
{
    return __atomic_load_n(&a->qbytes, __ATOMIC_ACQUIRE)
           >= a->max_backlog / 2;
}


/* The syncer, qlock held: sleeps until wake (ms), or a signal. */
static void
pki_audit_wait_until(pki_audit_t *a, long long now, long long wake)
{
    pki_audit_timedwait(&a->scond, &a->qlock, wake - now);
}


static void *
pki_audit_syncer(void *arg)
{
    pki_audit_t  *a = arg;

    void               (*notify)(void *arg);
    void                *narg;
    pki_status_t         st;
    pki_result_t         res;
    struct timespec      ts;
    unsigned             fails, npend;
    int                  retry, due;
    long long            now, wake;

    fails = 0;

    pthread_mutex_lock(&a->qlock);

    for ( ;; ) {

        retry = __atomic_load_n(&a->retry, __ATOMIC_ACQUIRE) != NULL;
        npend = __atomic_load_n(&a->npend, __ATOMIC_ACQUIRE);
        due = 0;

        if (a->qhead != NULL && a->qplain == 0 && !a->qsync && !retry
            && !a->syncer_stop && a->qcarried < PKI_AUDIT_BATCH_MAX
            && !pki_audit_gathered(a))
        {
            /* carried entries only: nobody waits, gather a batch */
            now = pki_audit_ms();
            wake = a->qfirst_ms + PKI_AUDIT_BATCH_MS;

            if (now < wake) {
                pki_audit_wait_until(a, now, wake);
                continue;
            }
        }

        if (a->qhead == NULL && !a->qsync && !retry && !a->syncer_stop) {

            if (npend == 0) {
                pthread_cond_wait(&a->scond, &a->qlock);
                continue;
            }

            /* carried entries to sync */
            now = pki_audit_ms();
            wake = __atomic_load_n(&a->pend_ms, __ATOMIC_ACQUIRE)
                   + PKI_AUDIT_PEND_MS;

            if (now < wake) {
                pki_audit_wait_until(a, now, wake);
                continue;
            }

            due = 1;
        }

        if (a->syncer_stop && a->qhead == NULL && !a->qsync
            && (!retry || fails > 0))
        {
            if (npend == 0 || fails > 0) {
                break;
            }

            due = 1;        /* the carried entries still to sync */
        }

        notify = a->notify;
        narg = a->notify_arg;

        pthread_mutex_unlock(&a->qlock);

        /* one write and one fdatasync for everything queued so far; what
         * is queued meanwhile is the next round.  Carried entries alone
         * are written now and synced together every PKI_AUDIT_PEND_MS. */
        pki_result_init(&res);
        st = pki_audit_drain(a, due, &res);

        if (st != PKI_OK) {
            /* fail closed: the answers wait; try again shortly */
            fails++;
            ts.tv_sec = 0;
            ts.tv_nsec = 50 * 1000 * 1000;
            nanosleep(&ts, NULL);

        } else {
            fails = 0;
            if (notify != NULL) {
                notify(narg);
            }
        }

        pthread_mutex_lock(&a->qlock);

        if (st != PKI_OK && a->syncer_stop) {
            break;
        }
    }

    pthread_mutex_unlock(&a->qlock);

    return NULL;
}


/* Synced carried entries: deleted from their streams by the janitor
 * thread (or here when there is none). */
static void
pki_audit_xdel_later(pki_audit_t *a, pki_audit_qent_t *done)
{
    pki_audit_qent_t  **last;

    if (done == NULL) {
        return;
    }

    pthread_mutex_lock(&a->jlock);

    if (a->jon && !a->jstop) {
        for (last = &done; *last != NULL; last = &(*last)->next) {
            /* void */
        }
        *last = a->xdel;
        a->xdel = done;
        pthread_cond_signal(&a->jcond);
        pthread_mutex_unlock(&a->jlock);
        return;
    }

    pthread_mutex_unlock(&a->jlock);

    pki_audit_xdel(done, 0);
}


/* The janitor thread's own copies of the stores (open), one per store,
 * whose calls wait PKI_AUDIT_JANITOR_WAIT_MS at most (or the store's own
 * timeout when shorter): a worker's exit joins the thread, and a call to
 * a Redis that does not answer held the exit for the store's timeout.  A
 * call that times out is done again at the next look.  Without a copy
 * (no memory), the store itself.  !open: frees them. */
static void
pki_audit_janitor_stores(pki_audit_t *a, int open)
{
    int            ms;
    unsigned       i, j;
    pki_result_t   res;

    for (i = 0; i < a->ncarry; i++) {
        for (j = 0; j < i; j++) {
            if (a->carry[j].r == a->carry[i].r) {
                break;
            }
        }

        if (!open) {
            if (j == i) {
                pki_redis_free(a->carry[i].jr);
            }
            a->carry[i].jr = NULL;
            continue;
        }

        if (j < i) {
            a->carry[i].jr = a->carry[j].jr;
            continue;
        }

        ms = pki_int_redis_timeout_ms(a->carry[i].r);
        if (ms <= 0 || ms > PKI_AUDIT_JANITOR_WAIT_MS) {
            ms = PKI_AUDIT_JANITOR_WAIT_MS;
        }

        pki_result_init(&res);
        a->carry[i].jr = pki_int_redis_dup(a->carry[i].r, ms, &res);
    }
}


static void *
pki_audit_janitor_thread(void *arg)
{
    pki_audit_t  *a = arg;

    int                  stop;
    long long            now, next;
    pki_audit_qent_t    *list;

    pki_audit_janitor_stores(a, 1);

    next = pki_audit_ms() + PKI_AUDIT_LOOK_MS;

    pthread_mutex_lock(&a->jlock);

    for ( ;; ) {
        if (a->xdel == NULL && !a->jstop) {
            now = pki_audit_ms();
            if (now < next) {
                pki_audit_timedwait(&a->jcond, &a->jlock, next - now);
                continue;
            }
        }

        list = a->xdel;
        a->xdel = NULL;
        stop = a->jstop;

        pthread_mutex_unlock(&a->jlock);

        pki_audit_xdel(list, 1);

        if (!stop && pki_audit_ms() >= next) {
            pki_audit_janitor(a);
            next = pki_audit_ms() + PKI_AUDIT_LOOK_MS;
        }

        pthread_mutex_lock(&a->jlock);

        if (stop && a->xdel == NULL) {
            break;
        }
    }

    pthread_mutex_unlock(&a->jlock);

    pki_audit_janitor_stores(a, 0);

    return NULL;
}


pki_status_t
pki_audit_syncer_start(pki_audit_t *a, void (*notify)(void *arg), void *arg,
    pki_result_t *res)
{
    int       rc;
    sigset_t  all, old;

    if (a == NULL || a->no_fsync) {
        return pki_fail(res, PKI_INTERNAL, "no log to sync");
    }

    pthread_mutex_lock(&a->lock);

    if (a->syncer_on) {
        pthread_mutex_unlock(&a->lock);
        return pki_fail(res, PKI_INTERNAL, "the syncer runs already");
    }

    a->notify = notify;
    a->notify_arg = arg;

    pthread_mutex_lock(&a->qlock);
    a->syncer_stop = 0;
    pthread_mutex_unlock(&a->qlock);

    /* signals stay with the server's main thread */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);

    rc = pthread_create(&a->syncer, NULL, pki_audit_syncer, a);
    if (rc == 0) {
        pthread_mutex_lock(&a->qlock);
        a->syncer_on = 1;
        pthread_mutex_unlock(&a->qlock);

        /* carried entries: the janitor thread (without it, the syncer's
         * deletions are done inline and orphans wait for another worker) */
        if (a->ncarry > 0) {
            pthread_mutex_lock(&a->jlock);
            a->jstop = 0;
            if (pthread_create(&a->janitor, NULL, pki_audit_janitor_thread,
                               a) == 0)
            {
                a->jon = 1;
            }
            pthread_mutex_unlock(&a->jlock);
        }

        /* from now on, deferred appends are queued and their tickets
         * count queue entries (pki_audit_synced() says so) */
        if (!a->qmode) {
            __atomic_store_n(&a->qdone, a->qnext, __ATOMIC_RELEASE);
            __atomic_store_n(&a->qmode, 1, __ATOMIC_RELEASE);
        }
    }

    pthread_sigmask(SIG_SETMASK, &old, NULL);

    pthread_mutex_unlock(&a->lock);

    if (rc != 0) {
        return pki_fail(res, PKI_INTERNAL, "pthread_create() failed: %s",
                        strerror(rc));
    }

    return PKI_OK;
}


void
pki_audit_syncer_stop(pki_audit_t *a)
{
    if (a == NULL) {
        return;
    }

    /* the thread writes what is queued, then ends */
    pthread_mutex_lock(&a->qlock);

    if (!a->syncer_on || a->syncer_stop) {
        pthread_mutex_unlock(&a->qlock);
        return;
    }

    a->syncer_stop = 1;
    pthread_cond_signal(&a->scond);
    pthread_mutex_unlock(&a->qlock);

    (void) pthread_join(a->syncer, NULL);

    pthread_mutex_lock(&a->qlock);
    a->syncer_on = 0;
    pthread_mutex_unlock(&a->qlock);

    /* then the janitor: it deletes what the syncer synced last */
    pthread_mutex_lock(&a->jlock);
    if (a->jon) {
        __atomic_store_n(&a->jstop, 1, __ATOMIC_RELAXED);
        pthread_cond_signal(&a->jcond);
        pthread_mutex_unlock(&a->jlock);

        (void) pthread_join(a->janitor, NULL);

        pthread_mutex_lock(&a->jlock);
        a->jon = 0;
    }
    pthread_mutex_unlock(&a->jlock);

    pthread_mutex_lock(&a->lock);
    a->notify = NULL;
    a->notify_arg = NULL;
    pthread_mutex_unlock(&a->lock);
}


/* ---- entries carried by the certificate store (issue 7) -------------------
 *
 * An issuance's entry goes into Redis in the same script that commits the
 * certificate's record (pki_int_record_commit_carry): it is durable exactly
 * when the record is, with no flush of its own, and the answer waits for
 * nothing more.  The syncer writes carried entries to the file in batches
 * (PKI_AUDIT_BATCH_MS), syncs the file every PKI_AUDIT_PEND_MS and hands
 * the synced entries to the janitor thread, which deletes them from their
 * stream (the syncer never waits for Redis).  An entry that stays in a
 * stream (its writer died before the write or before XDEL, or the machine
 * lost the file's page cache) is found by the janitor when its writer's
 * pid is gone, or after orphan_ms: it writes those the file lacks, then
 * deletes them.
 */

static long long
pki_audit_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);

    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* A local age's clock: a step of the wall clock (NTP, by hand) must not
 * make an entry look younger than it is (pki_audit_mark_taken). */
static long long
pki_audit_mono_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* DIR/audit.id made (mode 0644) with a new identity of 16 hex digits from
 * the CSPRNG, unless another process made it first; 1, or 0 with res
 * filled.  The id is written to a file of its own, synced, then linked to
 * audit.id: of processes opening DIR at once (nginx's master and workers,
 * pkictl) one wins (link() fails with EEXIST for the others, who read the
 * winner's), and no one reads a partial file. */
static int
pki_audit_make_id(const char *dir, const char *path, pki_result_t *res)
{
    int            fd, ok, err;
    char           hex[PKI_AUDIT_ID_LEN + 1], name[48], *tmp;
    unsigned char  rnd[PKI_AUDIT_ID_LEN / 2];

    tmp = NULL;

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        pki_fail(res, PKI_INTERNAL, "RAND_bytes() failed");
        goto failed;
    }

    pki_hex(rnd, sizeof(rnd), hex);

    /* named after its content: unique among the processes racing */
    snprintf(name, sizeof(name), "audit.id.%s.tmp", hex);
    tmp = pki_path(dir, name);
    if (tmp == NULL) {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        goto failed;
    }

    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        pki_fail(res, PKI_INTERNAL, "cannot create %s: %s", tmp,
                 strerror(errno));
        goto failed;
    }

    hex[PKI_AUDIT_ID_LEN] = '\n';
    ok = pki_write_all(fd, hex, PKI_AUDIT_ID_LEN + 1) && fsync(fd) == 0;
    err = errno;
    if (close(fd) != 0 && ok) {
        ok = 0;
        err = errno;
    }

    if (ok && link(tmp, path) != 0 && errno != EEXIST) {
        ok = 0;
        err = errno;
    }

    (void) unlink(tmp);

    if (!ok) {
        pki_fail(res, PKI_INTERNAL, "cannot make %s: %s", path,
                 strerror(err));
        goto failed;
    }

    free(tmp);
    pki_fsync_dir(dir);

    return 1;

failed:

    free(tmp);
    return 0;
}


/* The 16 hex digits of the id file path into buf: 1, -1 when there is no
 * such file, 0 with res filled when it cannot be read or is malformed. */
static int
pki_audit_read_id(const char *path, char *buf, pki_result_t *res)
{
    int      fd;
    size_t   n, i;
    ssize_t  got;

    fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 && errno == ENOENT) {
        return -1;
    }

    if (fd < 0) {
        pki_fail(res, PKI_INTERNAL, "cannot open %s: %s", path,
                 strerror(errno));
        return 0;
    }

    /* one byte more than an id and its newline: a longer file is not one */
    n = 0;
    while (n < PKI_AUDIT_ID_LEN + 2) {
        got = read(fd, buf + n, PKI_AUDIT_ID_LEN + 2 - n);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            pki_fail(res, PKI_INTERNAL, "cannot read %s: %s", path,
                     strerror(errno));
            close(fd);
            return 0;
        }
        if (got == 0) {
            break;
        }
        n += (size_t) got;
    }

    close(fd);

    if (n == PKI_AUDIT_ID_LEN + 1 && buf[PKI_AUDIT_ID_LEN] == '\n') {
        n--;
    }

    for (i = 0; i < n; i++) {
        if (!((buf[i] >= '0' && buf[i] <= '9')
              || (buf[i] >= 'a' && buf[i] <= 'f')))
        {
            break;
        }
    }

    if (n != PKI_AUDIT_ID_LEN || i != n) {
        pki_fail(res, PKI_INTERNAL, "%s is malformed (not 16 lowercase hex "
                 "digits and a newline)", path);
        return 0;
    }

    return 1;
}


pki_status_t
pki_audit_check_dir(const char *dir, pki_result_t *res)
{
    int    rc;
    char  *path, buf[PKI_AUDIT_ID_LEN + 2];

    path = pki_path(dir, "audit.id");
    if (path == NULL) {
        return pki_fail(res, PKI_INTERNAL, "out of memory");
    }

    rc = pki_audit_read_id(path, buf, res);
    free(path);

    if (rc == 0) {
        return res ? res->status : PKI_INTERNAL;
    }

    return PKI_OK;
}


/* This log's names in stream keys: "<host>-<id>", with the id of
 * DIR/audit.id (made when missing), and the previous version's
 * "<host>-<dir hash>" (the first 6 bytes of SHA-256 over the directory's
 * real path), which two containers with one host name and one log path
 * (different directories) shared.  A malformed audit.id is an error, not
 * replaced: a log whose identity changed would leave what is in its stream
 * to no one. */
static int
pki_audit_logid(pki_audit_t *a, pki_result_t *res)
{
    int            rc;
    char           host[64], *real, *path, buf[PKI_AUDIT_ID_LEN + 2], *p;
    const char    *d;
    unsigned char  md[SHA256_DIGEST_LENGTH];

    if (gethostname(host, sizeof(host)) != 0) {
        snprintf(host, sizeof(host), "localhost");
    }
    host[sizeof(host) - 1] = '\0';

    for (p = host; *p != '\0'; p++) {
        if (*p == '{' || *p == '}' || *p == ' ') {
            *p = '_';
        }
    }

    real = realpath(a->dir, NULL);
    d = real != NULL ? real : a->dir;
    SHA256((const unsigned char *) d, strlen(d), md);
    free(real);

    snprintf(a->llogid, sizeof(a->llogid), "%s-%02x%02x%02x%02x%02x%02x",
             host, md[0], md[1], md[2], md[3], md[4], md[5]);

    path = pki_path(a->dir, "audit.id");
    if (path == NULL) {
        pki_fail(res, PKI_INTERNAL, "out of memory");
        return 0;
    }

    rc = pki_audit_read_id(path, buf, res);

    if (rc < 0) {
        if (!pki_audit_make_id(a->dir, path, res)) {
            goto failed;
        }

        rc = pki_audit_read_id(path, buf, res);
    }

    if (rc <= 0) {
        if (rc < 0) {
            pki_fail(res, PKI_INTERNAL, "cannot open %s: %s", path,
                     strerror(ENOENT));
        }
        goto failed;
    }

    free(path);

    /* in a line of the log too: nothing there to escape */
    for (p = host; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\' || (unsigned char) *p < 0x20
            || *p == 0x7f)
        {
            *p = '_';
        }
    }

    snprintf(a->logid, sizeof(a->logid), "%s-%.*s", host,
             PKI_AUDIT_ID_LEN, buf);

    return 1;

failed:

    free(path);
    return 0;
}


pki_status_t
pki_audit_carry(pki_audit_t *a, pki_redis_t *r, const char *ca,
    pki_result_t *res)
{
    unsigned            i;
    int                 n;
    pki_audit_carry_t  *c;

    if (a == NULL || r == NULL || ca == NULL || ca[0] == '\0'
        || strlen(ca) >= sizeof(c->ca) || strpbrk(ca, "{}\"\\") != NULL)
    {
        return pki_fail(res, PKI_INTERNAL, "bad CA for the transaction log");
    }

    if (a->no_fsync) {
        return PKI_OK;              /* nothing is synced: nothing to carry */
    }

    for (i = 0; i < a->ncarry; i++) {
        if (a->carry[i].r == r && strcmp(a->carry[i].ca, ca) == 0) {
            return PKI_OK;
        }
    }

    if (a->carry == NULL) {
        /* one allocation: queued entries point into it */
        a->carry = calloc(PKI_AUDIT_CARRY_MAX, sizeof(pki_audit_carry_t));
        if (a->carry == NULL) {
            return pki_fail(res, PKI_INTERNAL, "out of memory");
        }
    }

    if (a->ncarry == PKI_AUDIT_CARRY_MAX) {
        return PKI_OK;              /* the rest is logged the usual way */
    }

    c = &a->carry[a->ncarry];
    c->r = r;
    memcpy(c->ca, ca, strlen(ca) + 1);

    n = snprintf(c->key, sizeof(c->key), "%s{ca:%s}:audit:%s",
                 pki_redis_ns(r), ca, a->logid);
    if (n < 0 || (size_t) n >= sizeof(c->key)) {
        return pki_fail(res, PKI_INTERNAL, "transaction log stream key too "
                        "long");
    }

    n = snprintf(c->lkey, sizeof(c->lkey), "%s{ca:%s}:audit:%s",
                 pki_redis_ns(r), ca, a->llogid);
    if (n < 0 || (size_t) n >= sizeof(c->lkey)) {
        return pki_fail(res, PKI_INTERNAL, "transaction log stream key too "
                        "long");
    }

    a->ncarry++;

    return PKI_OK;
}


const char *
pki_int_audit_stream(pki_redis_t *r, const char *ca)
{
    unsigned      i;
    pki_audit_t  *a;

    a = pki_audit_default();

    if (a == NULL || !__atomic_load_n(&pki_deferred, __ATOMIC_ACQUIRE)
        || a->ncarry == 0 || r == NULL
        || ca == NULL || !__atomic_load_n(&a->qmode, __ATOMIC_ACQUIRE))
    {
        return NULL;
    }

    for (i = 0; i < a->ncarry; i++) {
        if (a->carry[i].r == r && strcmp(a->carry[i].ca, ca) == 0) {
            return a->carry[i].key;
        }
    }

    return NULL;
}


int
pki_int_audit_entry(const pki_event_t *ev, char *body, size_t size,
    size_t *blen, char time[40])
{
    pki_jbuf_t   b;
    pki_event_t  e;

    pki_event_fill(&e, ev);

    b.p = body;
    b.len = 0;
    b.cap = size;
    if (b.cap > PKI_AUDIT_CARRIED_MAX) {
        b.cap = PKI_AUDIT_CARRIED_MAX;
    }
    b.err = 0;

    pki_audit_body(&b, &e);

    if (b.err) {
        return 0;
    }

    *blen = b.len;
    pki_time_text(time, 40);

    return 1;
}


void
pki_int_audit_carried(const char *stream, const char *time,
    const char *body, size_t blen, const char *rid)
{
    unsigned             i;
    pki_audit_t         *a;
    pki_result_t         res;
    pki_audit_qent_t    *q;
    unsigned long long   mine;

    a = pki_audit_default();
    if (a == NULL) {
        return;
    }

    q = malloc(sizeof(pki_audit_qent_t) + blen);
    if (q == NULL) {
        return;                     /* in its stream: the janitor's */
    }

    q->next = NULL;
    q->carry = NULL;
    q->legacy = 0;
    q->held = 0;
    q->qms = 0;
    q->wend = 0;
    for (i = 0; i < a->ncarry; i++) {
        if (a->carry[i].key == stream) {
            q->carry = &a->carry[i];
        }
    }
    snprintf(q->rid, sizeof(q->rid), "%s", rid);
    memcpy(q->time, time, sizeof(q->time));
    memcpy(q->body, body, blen);
    q->body[blen] = '\0';
    q->blen = blen;

    pthread_mutex_lock(&a->qlock);

    if (q->carry != NULL && a->syncer_on && !a->syncer_stop) {
        /* no answer waits for it: the syncer writes carried entries in
         * batches (PKI_AUDIT_BATCH_MS, PKI_AUDIT_BATCH_MAX) */
        q->ticket = ++a->qnext;
        q->qms = pki_audit_mono_ms();
        *a->qtail = q;
        a->qtail = &q->next;
        pki_audit_held(&a->qbytes, q, 1);

        if (a->qcarried++ == 0) {
            a->qfirst_ms = pki_audit_ms();
            pthread_cond_signal(&a->scond);

        } else if (a->qcarried == PKI_AUDIT_BATCH_MAX
                   || pki_audit_gathered(a))
        {
            pthread_cond_signal(&a->scond);
        }

        pthread_mutex_unlock(&a->qlock);
        return;
    }

    pthread_mutex_unlock(&a->qlock);

    /* no syncer (any more): written and synced right here */
    pki_result_init(&res);
    pthread_mutex_lock(&a->lock);
    if (pki_audit_locked_op(a, q, NULL, 0, &mine, &res) == PKI_OK
        && pki_audit_commit(a, mine, &res) == PKI_OK)
    {
        pthread_mutex_unlock(&a->lock);
        pki_audit_xdel(q, 0);
        return;
    }
    pthread_mutex_unlock(&a->lock);

    free(q);
}


int
pki_audit_ticket_done(pki_audit_t *a, unsigned long long ticket)
{
    if (ticket == 0 || a == NULL || a->no_fsync) {
        return 1;
    }

    return pki_audit_synced(a) >= ticket;
}


/* Takes the entries of list out of their streams; frees the list.  In
 * the janitor thread (janitor), through its copies of the stores. */
static void
pki_audit_xdel(pki_audit_qent_t *list, int janitor)
{
    size_t                    n, i, j, k;
    redisReply               *reply;
    pki_result_t              res;
    int                       lg;
    pki_audit_qent_t         *q, **v;
    const pki_audit_carry_t  *c;
    const char               *argv[258];
    size_t                    lens[258];

    n = 0;
    for (q = list; q != NULL; q = q->next) {
        n++;
    }

    v = (n > 0) ? malloc(n * sizeof(pki_audit_qent_t *)) : NULL;

    if (v != NULL) {
        for (i = 0, q = list; q != NULL; q = q->next) {
            v[i++] = q;
        }

        /* one XDEL per stream and up to 256 ids */
        for (i = 0; i < n; i++) {
            c = v[i]->carry;
            if (c == NULL) {
                continue;
            }

            lg = v[i]->legacy;

            argv[0] = "XDEL";
            argv[1] = lg ? c->lkey : c->key;
            k = 2;

            for (j = i; j < n && k < 258; j++) {
                if (v[j]->carry == c && v[j]->legacy == lg) {
                    argv[k++] = v[j]->rid;
                    v[j]->carry = NULL;
                }
            }

            for (j = 0; j < k; j++) {
                lens[j] = strlen(argv[j]);
            }

            /* a failure leaves them to the janitor, which finds them in
             * the file */
            pki_result_init(&res);
            reply = pki_int_redis_command((janitor && c->jr != NULL)
                                          ? c->jr : c->r,
                                          (int) k, argv, lens, &res);
            if (reply != NULL) {
                freeReplyObject(reply);
            }
        }

        free(v);
    }

    while ((q = list) != NULL) {
        list = q->next;
        free(q);
    }
}


/* Marks (q->held = 1) the carried entries of list whose (CA, stream,
 * stream id) the text of a log file holds: one pass over the text,
 * whatever the number of entries.  The stream is the "stream" right after
 * "rid" (the log's own, logid), or none (the previous version's: its
 * lines have none, and neither have those the janitor writes from its
 * stream).  The other entries of list (a syncer's batch has entries that
 * are not carried: no stream, no CA, no rid) are left as they are. */
static void
pki_audit_mark_held(const char *text, size_t len, const char *logid,
    pki_audit_qent_t *list)
{
    int                  legacy;
    size_t               cl, rl, sl;
    const char          *p, *end, *ls, *le, *r, *re, *c, *s;
    pki_audit_qent_t    *q;
    static const char    tag[] = ",\"rid\":\"";
    static const char    stag[] = ",\"stream\":\"";

    p = text;
    end = text + len;

    while (p < end
           && (p = memmem(p, (size_t) (end - p), tag, sizeof(tag) - 1))
              != NULL)
    {
        r = p + sizeof(tag) - 1;
        re = memchr(r, '"', (size_t) (end - r));
        if (re == NULL) {
            break;
        }
        rl = (size_t) (re - r);

        for (ls = p; ls > text && ls[-1] != '\n'; ls--) {
            /* void */
        }
        le = memchr(re, '\n', (size_t) (end - re));
        if (le == NULL) {
            le = end;
        }

        c = memmem(ls, (size_t) (le - ls), ",\"ca\":\"", 7);

        /* the line's stream: the previous version's (no "stream": 1),
         * ours (0), or another log's (-1: no entry of list) */
        s = re + 1;
        sl = strlen(logid);
        legacy = 1;

        if ((size_t) (le - s) >= sizeof(stag) - 1
            && memcmp(s, stag, sizeof(stag) - 1) == 0)
        {
            s += sizeof(stag) - 1;
            legacy = ((size_t) (le - s) > sl && memcmp(s, logid, sl) == 0
                      && s[sl] == '"') ? 0 : -1;
        }

        for (q = list; c != NULL && q != NULL; q = q->next) {
            if (q->carry == NULL || q->held || q->legacy != legacy
                || strlen(q->rid) != rl || memcmp(q->rid, r, rl) != 0)
            {
                continue;
            }

            cl = strlen(q->carry->ca);
            if ((size_t) (le - (c + 7)) > cl
                && memcmp(c + 7, q->carry->ca, cl) == 0 && c[7 + cl] == '"')
            {
                q->held = 1;
            }
        }

        p = le;
    }
}


/* DIR/NAME mapped read-only (munmap it), NULL if none or empty. */
static char *
pki_audit_map(const char *dir, const char *name, size_t *len)
{
    int           fd;
    char         *path;
    void         *p;
    struct stat   st;

    path = pki_path(dir, name);
    if (path == NULL) {
        return NULL;
    }

    fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);

    if (fd < 0) {
        return NULL;
    }

    if (fstat(fd, &st) != 0 || st.st_size <= 0) {
        close(fd);
        return NULL;
    }

    p = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);

    if (p == MAP_FAILED) {
        return NULL;
    }

    *len = (size_t) st.st_size;

    return p;
}


/* A file last written more than this before an entry's stream id (Redis's
 * clock) cannot hold the entry; the margin covers the skew between the
 * clocks of the Redis host and of this one. */
#define PKI_AUDIT_SKEW_MS  (10LL * 60 * 1000)


/* Marks the carried entries of list that a rotated file holds.  Only the
 * files written to since the oldest of them entered its stream are read
 * (an entry whose writer died an hour ago, with many rotations since, is
 * found as well as one from a second ago), each once. */
static void
pki_audit_mark_rotated(const char *dir, const char *logid,
    pki_audit_qent_t *list)
{
    DIR                 *d;
    char                *text, *path;
    size_t               len;
    long long            oldest, ms;
    struct stat          st;
    struct dirent       *de;
    pki_audit_qent_t    *q;
    unsigned long long   first;

    oldest = -1;
    for (q = list; q != NULL; q = q->next) {
        /* (an entry not carried has no stream id: strtoll("") is 0, and
         * every rotated file would be read for it) */
        if (q->carry != NULL && !q->held) {
            ms = strtoll(q->rid, NULL, 10);
            if (oldest < 0 || ms < oldest) {
                oldest = ms;
            }
        }
    }

    if (oldest < 0) {
        return;                 /* every carried entry is held already */
    }

    d = opendir(dir);
    if (d == NULL) {
        return;
    }

    while ((de = readdir(d)) != NULL) {
        if (!pki_rotated_name(de->d_name, &first)) {
            continue;
        }

        path = pki_path(dir, de->d_name);
        if (path == NULL) {
            continue;
        }

        if (stat(path, &st) != 0
            || (long long) st.st_mtime * 1000 + 1000 + PKI_AUDIT_SKEW_MS
               < oldest)
        {
            free(path);
            continue;
        }
        free(path);

        text = pki_audit_map(dir, de->d_name, &len);
        if (text != NULL) {
            pki_audit_mark_held(text, len, logid, list);
            munmap(text, len);
        }
    }

    closedir(d);
}


/* With the locks held, after the catch-up: marks (q->held) the carried
 * entries of the syncer's batch that a file of the log holds already; 0
 * if their lines cannot be made durable (the batch is retried).
 *
 * A janitor takes an entry left in its stream past orphan_ms even when
 * its writer lives (pki_audit_orphaned): when this process's writes fail
 * that long while another process's work, the other's janitor writes the
 * entry from the stream and deletes it, and this syncer, whose write
 * works again, would write it from its retry list a second time (two
 * lines with one rid; pki_audit_drop_queued keeps only this process's
 * own janitor off it).  The entries the file holds count as written: they
 * still go to pend, to be synced and deleted from their stream (an id
 * already gone is no error to XDEL).
 *
 * Only a batch with an entry queued long enough ago for a janitor to take
 * it maps the files: none of a batch written in time.  The janitors
 * measure the age from the stream id on the Redis server's clock, and
 * the entry came into the queue after its XADD: its age in the queue is
 * compared with the janitors' less a margin for the time in between. */
static int
pki_audit_mark_taken(pki_audit_t *a, pki_audit_qent_t *batch)
{
    int                  old, held, ok, eno;
    char                *cur;
    size_t               clen;
    long long            now, age;
    pki_audit_qent_t    *q;

    /* janitors read only entries PKI_AUDIT_LOOK_MS old (on the server's
     * clock) or more; the margin for the time between the XADD and the
     * queue is PKI_AUDIT_LOOK_MS, or half that age when it is shorter
     * (so that a short orphan_after does not read the file for every
     * batch written in time) */
    age = a->orphan_ms > PKI_AUDIT_LOOK_MS ? a->orphan_ms : PKI_AUDIT_LOOK_MS;
    age -= age / 2 < PKI_AUDIT_LOOK_MS ? age / 2 : PKI_AUDIT_LOOK_MS;

    now = pki_audit_mono_ms();
    old = 0;

    /* marks of a try that failed are not kept: the file is read anew */
    for (q = batch; q != NULL; q = q->next) {
        q->held = 0;
        old |= q->carry != NULL && now - q->qms >= age;
    }

    if (!old) {
        return 1;
    }

    clen = 0;
    cur = pki_audit_map(a->dir, "audit.log", &clen);
    held = 0;

    if (cur != NULL) {
        pki_audit_mark_held(cur, clen, a->logid, batch);

        for (q = batch; q != NULL; q = q->next) {
            held |= q->held;
        }
    }

    /* the janitor that wrote them syncs them before it deletes them from
     * their stream, but it may have died first, or not be there yet: they
     * leave the stream after this process's sync, which covers only what
     * it wrote itself (a rotated file was synced before its rename) */
    ok = 1;
    eno = 0;
    if (held && !a->no_fsync
        && pki_audit_shared_sync(a, a->fd, a->dev, a->ino, (off_t) clen)
           != 0)
    {
        ok = 0;
        eno = errno;
    }

    if (cur != NULL) {
        munmap(cur, clen);
    }

    if (ok) {
        pki_audit_mark_rotated(a->dir, a->logid, batch);
    }

    errno = eno;
    return ok;
}


/* Whether an entry written by process pid (0: unknown) at ms (its stream
 * id) is orphaned: its writer is gone, or it is older than age ms. */
static int
pki_audit_orphaned(long long pid, long long ms, long long now, long long age)
{
    if (now - ms >= age || pid <= 0) {
        return 1;
    }

    if ((pid_t) pid == pki_int_pid()) {
        return 0;               /* ours: in our queue, or being retried */
    }

    /* the stream is this host's: the pid is one of its processes; one
     * that is gone (kill -9, a crash) left it behind for good */
    return kill((pid_t) pid, 0) != 0 && errno == ESRCH;
}


/* A carried entry's body as pki_audit_body() writes it: members of a JSON
 * object (",\"type\":\"issue\",..."), strings or numbers, printable, none
 * named as a field of the line's own frame, not a checkpoint.  What else
 * a stream holds (written by another program, or by hand) would change
 * the line it goes into: a newline makes two lines, a "hash" member a
 * second hash, "}" ends the object early. */
static int
pki_audit_carried_ok(const char *p, size_t len)
{
    static const char *const  frame[] = {
        "seq", "time", "rid", "stream", "pid", "prev", "hash", "sig", "key",
        NULL
    };

    int            good;
    char           text[PKI_AUDIT_LINE_MAX];
    size_t         i;
    cJSON         *o, *e;
    const char    *end;

    if (len < 2 || len + 2 > sizeof(text) || p[0] != ',') {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if ((unsigned char) p[i] < 0x20 || p[i] == 0x7f) {
            return 0;
        }
    }

    text[0] = '{';
    memcpy(text + 1, p + 1, len - 1);
    text[len] = '}';
    text[len + 1] = '\0';

    end = NULL;
    o = cJSON_ParseWithOpts(text, &end, 1);
    if (o == NULL) {
        return 0;
    }

    good = cJSON_IsObject(o) && o->child != NULL;

    for (e = o->child; good && e != NULL; e = e->next) {
        good = e->string != NULL
               && (cJSON_IsString(e) || cJSON_IsNumber(e));

        for (i = 0; good && frame[i] != NULL; i++) {
            good = strcmp(e->string, frame[i]) != 0;
        }

        if (good && strcmp(e->string, "type") == 0) {
            good = cJSON_IsString(e)
                   && strcmp(e->valuestring, "checkpoint") != 0;
        }
    }

    cJSON_Delete(o);

    return good;
}


/* The body that stands for one pki_audit_carried_ok() refuses: the line
 * records that the stream held an entry under this id, its size and its
 * SHA-256, and nothing of its text. */
static size_t
pki_audit_unreadable(char *out, size_t size, const char *p, size_t len)
{
    char        hash[65];
    pki_jbuf_t  b;

    pki_sha256_hex(p, len, hash);

    b.p = out;
    b.len = 0;
    b.cap = size;
    b.err = 0;

    pki_jstr(&b, "type", "unreadable");
    pki_jnum(&b, "body_bytes", (long long) len);
    pki_jstr(&b, "body_sha256", hash);

    return b.err ? 0 : b.len;
}


/* The orphaned entries of one stream, c's own or (legacy) the previous
 * version's (pki_audit_orphaned; only those PKI_AUDIT_LOOK_MS old at
 * least), as queue entries (NULL: none, or Redis did not answer). */
static pki_audit_qent_t *
pki_audit_orphans(const pki_audit_carry_t *c, int legacy, long long age)
{
    int                  bad;
    size_t               i, j, tl, bl;
    long long            now, pid;
    char                 upto[32];
    char                 mark[256];
    const char          *argv[6], *tv, *bv;
    size_t               lens[6];
    redisReply          *reply, *e, *f;
    pki_redis_t         *r;
    pki_result_t         res;
    pki_audit_qent_t    *list, **last, *q;

    /* stream ids are the Redis server's clock: ages are measured on it
     * (with this host's clock, one ahead of the server's by orphan_ms
     * made every live writer's entry an orphan the moment it was added,
     * and the janitor wrote it before its writer did: a duplicate) */
    r = (c->jr != NULL) ? c->jr : c->r;

    pki_result_init(&res);
    now = pki_int_redis_time_ms(r, &res);
    if (now <= PKI_AUDIT_LOOK_MS) {
        return NULL;
    }

    snprintf(upto, sizeof(upto), "%lld", now - PKI_AUDIT_LOOK_MS);

    argv[0] = "XRANGE";
    argv[1] = legacy ? c->lkey : c->key;
    argv[2] = "-";
    argv[3] = upto;
    argv[4] = "COUNT";
    argv[5] = "512";

    for (i = 0; i < 6; i++) {
        lens[i] = strlen(argv[i]);
    }

    pki_result_init(&res);
    reply = pki_int_redis_command(r, 6, argv, lens, &res);
    if (reply == NULL) {
        return NULL;
    }

    list = NULL;
    last = &list;

    if (reply->type == REDIS_REPLY_ARRAY) {
        for (i = 0; i < reply->elements; i++) {
            e = reply->element[i];

            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
                || e->element[0]->type != REDIS_REPLY_STRING
                || e->element[0]->len >= sizeof(q->rid)
                || e->element[1]->type != REDIS_REPLY_ARRAY)
            {
                continue;
            }

            f = e->element[1];
            tv = bv = NULL;
            tl = bl = 0;
            pid = 0;

            for (j = 0; j + 1 < f->elements; j += 2) {
                if (f->element[j]->type != REDIS_REPLY_STRING
                    || f->element[j + 1]->type != REDIS_REPLY_STRING)
                {
                    continue;
                }
                if (strcmp(f->element[j]->str, "t") == 0) {
                    tv = f->element[j + 1]->str;
                    tl = f->element[j + 1]->len;
                } else if (strcmp(f->element[j]->str, "b") == 0) {
                    bv = f->element[j + 1]->str;
                    bl = f->element[j + 1]->len;
                } else if (strcmp(f->element[j]->str, "p") == 0) {
                    pid = strtoll(f->element[j + 1]->str, NULL, 10);
                }
            }

            if (!pki_audit_orphaned(pid, strtoll(e->element[0]->str, NULL,
                                                 10),
                                    now, age))
            {
                continue;
            }

            /* an entry this code did not write (no "t" or no "b", a "t"
             * too long for the field, a body over the size a line takes)
             * is an unreadable line as any other: skipped, it stayed in
             * the stream for good, and 512 of them at its head hid every
             * entry behind them from XRANGE ... COUNT 512 */
            bad = tv == NULL || bv == NULL || tl >= sizeof(q->time)
                  || bl > (legacy ? PKI_AUDIT_LEGACY_MAX
                                  : PKI_AUDIT_CARRIED_MAX);

            if (tv == NULL || tl >= sizeof(q->time)) {
                tv = "";                /* the writer's clock, below */
                tl = 0;
            }

            if (bad || !pki_audit_carried_ok(bv, bl)) {
                bl = pki_audit_unreadable(mark, sizeof(mark),
                                          bv != NULL ? bv : "", bl);
                bv = mark;
                if (bl == 0) {
                    continue;
                }
            }

            q = malloc(sizeof(pki_audit_qent_t) + bl);
            if (q == NULL) {
                break;
            }

            q->next = NULL;
            q->ticket = 0;
            q->carry = c;
            q->legacy = legacy;
            q->held = 0;
            q->qms = 0;
            q->wend = 0;
            memcpy(q->rid, e->element[0]->str, e->element[0]->len);
            q->rid[e->element[0]->len] = '\0';
            memcpy(q->time, tv, tl);
            q->time[tl] = '\0';

            if (pki_audit_time(q->time) < 0) {
                /* not the writer's text (an edited stream): the file
                 * takes only its own, or it would not verify */
                pki_time_text(q->time, sizeof(q->time));
            }
            memcpy(q->body, bv, bl);
            q->body[bl] = '\0';
            q->blen = bl;

            *last = q;
            last = &q->next;
        }
    }

    freeReplyObject(reply);

    return list;
}


/* a->lock held: takes out of *list (frees) the orphans that are still in
 * this process's queue or retry list.  An entry of ours older than
 * orphan_ms whose batch write keeps failing (or waits behind a stalled
 * flock) is not lost: the syncer writes it when it can; the janitor
 * writing it too made a duplicate line (same rid twice) and deleted it
 * from the stream before the syncer's copy was durable. */
static void
pki_audit_drop_queued(pki_audit_t *a, pki_audit_qent_t **list)
{
    int                  held;
    pki_audit_qent_t    *q, *o, **pq;

    pthread_mutex_lock(&a->qlock);

    for (pq = list; (o = *pq) != NULL; ) {
        held = 0;

        /* (queued entries are never the previous version's: an id of
         * its stream is another entry than the same id of ours) */
        for (q = a->retry; !held && q != NULL; q = q->next) {
            held = q->carry == o->carry && q->legacy == o->legacy
                   && strcmp(q->rid, o->rid) == 0;
        }
        for (q = a->qhead; !held && q != NULL; q = q->next) {
            held = q->carry == o->carry && q->legacy == o->legacy
                   && strcmp(q->rid, o->rid) == 0;
        }

        if (held) {
            *pq = o->next;
            free(o);

        } else {
            pq = &o->next;
        }
    }

    pthread_mutex_unlock(&a->qlock);
}


/* Entries left in a stream past PKI_AUDIT_ORPHAN_MS: the file gets those
 * it lacks (synced), then the stream loses them all.  Each carry's own
 * stream, then the previous version's (an upgrade loses nothing that an
 * older process left there). */
static void
pki_audit_janitor(pki_audit_t *a)
{
    int                  ok, held;
    char                *cur;
    size_t               clen;
    unsigned             i;
    pki_result_t         res, cres;
    pki_audit_qent_t    *list, *q;
    unsigned long long   mine;

    for (i = 0; i < 2 * a->ncarry; i++) {

        if (__atomic_load_n(&a->jstop, __ATOMIC_RELAXED)) {
            return;                 /* the exit does not wait for more */
        }

        list = pki_audit_orphans(&a->carry[i / 2], (int) (i % 2),
                                 a->orphan_ms);
        if (list == NULL) {
            continue;
        }

        pki_result_init(&res);
        ok = 1;

        pthread_mutex_lock(&a->lock);

        pki_audit_drop_queued(a, &list);
        if (list == NULL) {
            pthread_mutex_unlock(&a->lock);
            continue;
        }

        while (flock(a->lockfd, LOCK_EX) != 0) {
            if (errno != EINTR) {
                ok = 0;
                break;
            }
        }

        if (ok) {
            ok = pki_audit_catch_up(a, &res);

            clen = 0;
            /* the file this process just caught up with, and the rotated
             * ones written to since the oldest orphan was added */
            cur = ok ? pki_audit_map(a->dir, "audit.log", &clen) : NULL;

            held = 0;

            if (cur != NULL) {
                pki_audit_mark_held(cur, clen, a->logid, list);

                for (q = list; q != NULL; q = q->next) {
                    held |= q->held;
                }
            }
            if (ok) {
                pki_audit_mark_rotated(a->dir, a->logid, list);
            }

            for (q = list; ok && q != NULL; q = q->next) {
                if (q->held) {
                    continue;           /* the file has it */
                }

                ok = pki_audit_write_q(a, q, NULL, 0, &res) == PKI_OK;

                if (ok && a->key != NULL && a->since_ckpt >= a->ckpt_every) {
                    pki_result_init(&cres);
                    (void) pki_audit_write_locked(a, NULL, 1, &cres);
                }
            }

            /* lines the file has that another process wrote and did not
             * live to sync (killed within its group commit): durable
             * before their stream entries go, as this process's own */
            if (ok && held && !a->no_fsync
                && pki_audit_shared_sync(a, a->fd, a->dev, a->ino,
                                         (off_t) clen) != 0)
            {
                pki_fail(&res, PKI_UNAVAILABLE, "fdatasync(audit.log) "
                         "failed: %s", strerror(errno));
                ok = 0;
            }

            if (cur != NULL) {
                munmap(cur, clen);
            }
            mine = a->written;
            (void) flock(a->lockfd, LOCK_UN);

            if (ok) {
                ok = pki_audit_commit(a, mine, &res) == PKI_OK;
            }
        }

        pthread_mutex_unlock(&a->lock);

        if (ok) {
            pki_audit_xdel(list, 1);

        } else {
            while ((q = list) != NULL) {
                list = q->next;
                free(q);
            }
        }
    }
}


pki_status_t
pki_audit_checkpoint(pki_audit_t *a, pki_result_t *res)
{
    pki_status_t         st;
    unsigned long long   mine;

    if (a == NULL || a->key == NULL) {
        return PKI_OK;
    }

    pthread_mutex_lock(&a->lock);

    st = pki_audit_locked_op(a, NULL, NULL, 1, &mine, res);

    if (st == PKI_OK && !a->no_fsync) {
        st = pki_audit_commit(a, mine, res);
    }

    pthread_mutex_unlock(&a->lock);

    return st;
}


/* ---- verification ---------------------------------------------------------- */

typedef struct {
    char                 name[300];
    unsigned long long   first;      /* 0: audit.log */
} pki_vfile_t;


static int
pki_vfile_cmp(const void *x, const void *y)
{
    const pki_vfile_t *a = x, *b = y;

    if (a->first == 0 || b->first == 0) {
        return (a->first == 0) - (b->first == 0);
    }

    return a->first < b->first ? -1 : a->first > b->first;
}


/* audit.lock is there, but this reader cannot op it (err) */
static pki_status_t
pki_audit_vsnap_nolock(const char *dir, const char *op, int err,
    pki_result_t *res)
{
    return pki_fail(res, PKI_UNAVAILABLE, "cannot %s %s/audit.lock: %s "
                    "(run as a user that may read it, or --no-lock: "
                    "unlocked, a rotation meanwhile shows as a gap)", op,
                    dir, strerror(err));
}


/* What pki_audit_verify_limits() takes of a log in use at one moment. */
typedef struct {
    pki_vfile_t         *files;     /* sorted, audit.log last */
    size_t               nfiles;
    int                  logfd;     /* audit.log, or -1 */
    int                  logerr;    /* errno of its open, or 0 */
    off_t                logsize;   /* its size then, -1: not a file */
    pki_audit_srec_t     srec;      /* of audit.lock, if it is audit.log's */
    char                *head;      /* audit.head's first line */
    ssize_t              headlen;
    int                  headfound;
    int                  headerr;   /* errno of audit.head's open or read */
    const char          *headop;
} pki_vsnap_t;


/* Under a shared flock on DIR/audit.lock (every writer holds it exclusive
 * across an append, a checkpoint or a rotation): the files are listed,
 * audit.log opened and its size taken, audit.head read, and the record
 * of the last sync read.  No rotation falls between the listing and the
 * open, and no line is half written; rotated files never change.  The
 * lock is held for that only, never while the log is read and hashed, so
 * writers wait for no more than a directory listing.  Without audit.lock
 * (a copy of the log), or with no_lock, the files are taken as they are
 * (a rotation meanwhile may then show as a gap).  An audit.lock that is
 * there but cannot be opened or locked (the reader may not read it) is
 * said, not read around: a gap it would show is no tampering. */
static pki_status_t
pki_audit_vsnap(const char *dir, unsigned long long wait_ms, int no_lock,
    pki_vsnap_t *vs, pki_result_t *res)
{
    int                  lfd, tries;
    unsigned long long   waited;
    DIR                 *d;
    pki_status_t         rc;
    FILE                *f;
    char                *path;
    size_t               cap;
    struct stat          sb;
    pki_vfile_t         *tmp;
    pki_audit_srec_t     again;
    struct dirent       *de;
    unsigned long long   first;

    memset(vs, 0, sizeof(*vs));
    memset(&sb, 0, sizeof(sb));
    vs->logfd = -1;

    lfd = -1;

    if (!no_lock) {
        path = pki_path(dir, "audit.lock");
        if (path == NULL) {
            return pki_fail(res, PKI_INTERNAL, "out of memory");
        }

        lfd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        free(path);

        if (lfd < 0 && errno != ENOENT) {
            return pki_audit_vsnap_nolock(dir, "open", errno, res);
        }
    }

    /* a writer holds the lock across one append or sync; one stuck (in
     * a checkpoint signature on a hung token, on a hung disk) must not
     * hang the monitoring that runs verify: it is told, not waited for */
    waited = 0;

    while (lfd >= 0 && flock(lfd, LOCK_SH | LOCK_NB) != 0) {
        if (errno == EINTR) {
            continue;
        }

        if (errno != EWOULDBLOCK) {
            rc = pki_audit_vsnap_nolock(dir, "lock", errno, res);
            close(lfd);
            return rc;
        }

        if (waited >= wait_ms) {
            close(lfd);
            return pki_fail(res, PKI_UNAVAILABLE, "%s/audit.lock held by "
                            "another process for %llu ms (a writer stuck "
                            "in a sync or a checkpoint signature?)",
                            dir, waited);
        }

        (void) usleep(20000);
        waited += 20;
    }

    d = opendir(dir);
    if (d == NULL) {
        rc = pki_fail(res, PKI_NOT_FOUND, "cannot open directory %s", dir);
        goto failed;
    }

    cap = 0;

    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, "audit.log") == 0) {
            first = 0;
        } else if (!pki_rotated_name(de->d_name, &first) || first == 0) {
            continue;
        }

        if (vs->nfiles == cap) {
            cap = cap ? cap * 2 : 16;
            tmp = realloc(vs->files, cap * sizeof(pki_vfile_t));
            if (tmp == NULL) {
                closedir(d);
                rc = pki_fail(res, PKI_INTERNAL, "out of memory");
                goto failed;
            }
            vs->files = tmp;
        }

        snprintf(vs->files[vs->nfiles].name, sizeof(vs->files[0].name),
                 "%s", de->d_name);
        vs->files[vs->nfiles].first = first;
        vs->nfiles++;
    }

    closedir(d);

    if (vs->nfiles == 0) {
        rc = pki_fail(res, PKI_NOT_FOUND, "no audit log in %s", dir);
        goto failed;
    }

    qsort(vs->files, vs->nfiles, sizeof(pki_vfile_t), pki_vfile_cmp);

    if (vs->files[vs->nfiles - 1].first == 0) {
        path = pki_path(dir, "audit.log");
        vs->logfd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        vs->logerr = path ? errno : ENOMEM;
        free(path);

        if (vs->logfd >= 0) {
            if (fstat(vs->logfd, &sb) != 0) {
                vs->logerr = errno;
                close(vs->logfd);
                vs->logfd = -1;

            } else {
                /* not a file: read to where the read fails */
                vs->logerr = 0;
                vs->logsize = S_ISREG(sb.st_mode) ? sb.st_size : -1;
            }
        }
    }

    path = pki_path(dir, "audit.head");
    f = path ? fopen(path, "r") : NULL;
    free(path);

    if (f == NULL) {
        if (errno != ENOENT) {
            vs->headerr = errno;
            vs->headop = "open";
        }

    } else {
        cap = 0;
        vs->headfound = 1;
        vs->headlen = getline(&vs->head, &cap, f);

        if (vs->headlen < 0 && ferror(f)) {
            vs->headerr = errno;
            vs->headop = "read";
        }

        fclose(f);
    }

    if (lfd >= 0 && vs->logfd >= 0) {
        /* written under an OFD lock on its first byte, which a sync
         * holds across its fdatasync: not waited for (writers wait for
         * the flock meanwhile); read until two reads agree, else none
         * (a torn last line then counts as not synced) */
        memset(&again, 0, sizeof(again));

        for (tries = 0; tries < 5; tries++) {
            if (pread(lfd, &vs->srec, sizeof(vs->srec), 0)
                    != (ssize_t) sizeof(vs->srec)
                || pread(lfd, &again, sizeof(again), 0)
                   != (ssize_t) sizeof(again)
                || memcmp(&vs->srec, &again, sizeof(again)) == 0)
            {
                break;
            }
        }

        if (tries == 5 || vs->srec.magic != PKI_AUDIT_SYNC_MAGIC
            || memcmp(&vs->srec, &again, sizeof(again)) != 0
            || vs->srec.dev != (unsigned long long) sb.st_dev
            || vs->srec.ino != (unsigned long long) sb.st_ino)
        {
            memset(&vs->srec, 0, sizeof(vs->srec));
        }
    }

    if (lfd >= 0) {
        close(lfd);
    }

    return PKI_OK;

failed:

    if (lfd >= 0) {
        close(lfd);
    }

    free(vs->files);
    vs->files = NULL;

    return rc;
}


static void
pki_audit_vsnap_free(pki_vsnap_t *vs)
{
    if (vs->logfd >= 0) {
        close(vs->logfd);
        vs->logfd = -1;
    }

    free(vs->files);
    free(vs->head);
    vs->files = NULL;
    vs->head = NULL;
}


static EVP_PKEY *
pki_load_pubkey(const char *dir, const char *key_id)
{
    FILE      *f;
    char       name[64], *path;
    EVP_PKEY  *pk;

    if (strlen(key_id) != 16 || strspn(key_id, "0123456789abcdef") != 16) {
        return NULL;
    }

    snprintf(name, sizeof(name), "audit-key-%s.pem", key_id);
    path = pki_path(dir, name);
    if (path == NULL) {
        return NULL;
    }

    f = fopen(path, "r");
    free(path);
    if (f == NULL) {
        return NULL;
    }

    pk = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    fclose(f);

    return pk;
}


static int
pki_check_sig(EVP_PKEY *pub, const char *tbs, const char *sig64)
{
    int             ok;
    size_t          siglen;
    EVP_MD_CTX     *md;
    const EVP_MD   *dg;
    unsigned char  *sig;
    pki_result_t    r;

    pki_result_init(&r);
    if (pki_base64_decode((const unsigned char *) sig64, strlen(sig64), &sig,
                          &siglen, &r)
        != PKI_OK)
    {
        return 0;
    }

    md = EVP_MD_CTX_new();
    dg = (EVP_PKEY_get_id(pub) == EVP_PKEY_ED25519
          || EVP_PKEY_get_id(pub) == EVP_PKEY_ED448) ? NULL : EVP_sha256();

    ok = md != NULL
         && EVP_DigestVerifyInit(md, NULL, dg, NULL, pub) == 1
         && EVP_DigestVerify(md, sig, siglen, (const unsigned char *) tbs,
                             strlen(tbs)) == 1;

    EVP_MD_CTX_free(md);
    free(sig);
    ERR_clear_error();

    return ok;
}


#define pki_bad(rep, ...)                                                    \
    do {                                                                     \
        snprintf((rep)->bad, sizeof((rep)->bad), __VA_ARGS__);               \
        goto bad;                                                            \
    } while (0)

/* A file of the log that cannot be opened or read: an I/O problem (the
 * status is PKI_UNAVAILABLE), which the operator must not take for
 * tampering.  io is pki_audit_verify_limits()'s. */
#define pki_bad_io(rep, ...)                                                 \
    do {                                                                     \
        io = 1;                                                              \
        pki_bad(rep, __VA_ARGS__);                                           \
    } while (0)


/* An entry's "time" as seconds since the epoch, -1 if it is not exactly
 * what the writer writes (pki_time_text(): UTC to the millisecond): an
 * offset, another precision or a lower-case letter is not its text. */
static long long
pki_audit_time(const char *s)
{
    size_t  i;
    time_t  t;

    static const char  form[] = "dddd-dd-ddTdd:dd:dd.dddZ";

    for (i = 0; form[i] != '\0'; i++) {
        if (form[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != form[i]) {
            return -1;
        }
    }

    if (s[i] != '\0' || !pki_parse_rfc3339(s, PKI_RFC3339_UTC, &t)) {
        return -1;
    }

    return (long long) t;
}


pki_status_t
pki_audit_verify(const char *dir, EVP_PKEY *pub, pki_audit_report_t *rep,
    pki_result_t *res)
{
    return pki_audit_verify_limits(dir, pub, NULL, rep, res);
}


pki_status_t
pki_audit_verify_limits(const char *dir, EVP_PKEY *pub,
    const pki_audit_limits_t *lim, pki_audit_report_t *rep,
    pki_result_t *res)
{
    return pki_audit_verify_keys(dir, pub != NULL ? &pub : NULL,
                                 pub != NULL ? 1 : 0, lim, rep, res);
}


pki_status_t
pki_audit_verify_keys(const char *dir, EVP_PKEY *const *pubs, size_t npubs,
    const pki_audit_limits_t *lim, pki_audit_report_t *rep,
    pki_result_t *res)
{
    int                  io;
    FILE                *f;
    char                *line, *path, hash[65], prev[65], calc[65], *tag;
    char                 tbs[256], tbs1[128];
    off_t                off, limit;
    cJSON               *j, *it;
    size_t               cap, nfiles, i, len, lineno;
    ssize_t              n;
    EVP_PKEY            *kp;
    pki_vsnap_t          vs;
    pki_vfile_t         *files;
    pki_status_t         st;
    char                 head_hash[65];
    long long            tm, ck_time, tail_time, first_time;
    unsigned long long   expect, seq, head_seq, ck_seq, max_tail;
    unsigned long long   max_secs;
    const char          *type, *pv, *sig, *kid;
    char                 ids[PKI_AUDIT_MAX_PUBKEYS][17];
    size_t               k;

    memset(rep, 0, sizeof(*rep));
    io = 0;

    if (npubs > PKI_AUDIT_MAX_PUBKEYS) {
        return pki_fail(res, PKI_INTERNAL, "more than %d checkpoint keys",
                        PKI_AUDIT_MAX_PUBKEYS);
    }

    /* each checkpoint names its key by id: with keys given (the key
     * replaced, old and new workers signing during a reload), each is
     * checked with the given key of its id */
    for (k = 0; k < npubs; k++) {
        if (pubs[k] == NULL || !pki_key_id(pubs[k], ids[k])) {
            return pki_fail(res, PKI_INTERNAL, "checkpoint key %zu: no "
                            "public key", k + 1);
        }
    }

    /* with the auditor's key and limits: entries after the last signed
     * checkpoint are bounded in number and in time (a log cut back to an
     * earlier checkpoint, audit.head replaced by it, with entries added).
     * No default: a healthy log's tail depends on the workers, the
     * checkpoint setting and how quiet the CA is (no checkpoint is
     * written without entries), which only the operator knows. */
    max_tail = lim != NULL ? lim->max_unsigned : 0;
    max_secs = lim != NULL ? lim->max_unsigned_seconds : 0;
    ck_time = -1;
    tail_time = -1;
    first_time = -1;
    ck_seq = 0;

    st = pki_audit_vsnap(dir, lim != NULL && lim->lock_wait_ms != 0
                              ? lim->lock_wait_ms : PKI_AUDIT_LOCK_WAIT_MS,
                         lim != NULL && lim->no_lock, &vs, res);
    if (st != PKI_OK) {
        return st;
    }

    files = vs.files;
    nfiles = vs.nfiles;

    /* the signed head, if any: the log must still hold it */
    head_seq = 0;
    line = NULL;
    j = NULL;
    f = NULL;

    if (vs.headerr != 0) {
        pki_bad_io(rep, "audit.head: cannot %s: %s", vs.headop,
                   strerror(vs.headerr));
    }

    if (vs.headfound) {
        n = vs.headlen;

        if (n > 0 && vs.head[n - 1] == '\n') {
            vs.head[n - 1] = '\0';
        }

        if (n <= 0 || !pki_line_seq_hash(vs.head, &head_seq, head_hash)) {
            pki_bad(rep, "audit.head is not a checkpoint entry (edited)");
        }
    }

    memcpy(prev, PKI_AUDIT_ZERO_HASH, 65);
    expect = 1;
    line = NULL;
    cap = 0;
    f = NULL;
    j = NULL;
    lineno = 0;
    i = 0;

    for (i = 0; i < nfiles; i++) {
        limit = -1;

        if (files[i].first == 0) {
            /* audit.log as it was listed: up to its size then */
            f = vs.logfd >= 0 ? fdopen(vs.logfd, "r") : NULL;
            if (f == NULL) {
                pki_bad_io(rep, "%s: cannot open: %s", files[i].name,
                           strerror(vs.logfd >= 0 ? errno : vs.logerr));
            }
            vs.logfd = -1;
            limit = vs.logsize;

        } else {
            path = pki_path(dir, files[i].name);
            f = path ? fopen(path, "r") : NULL;
            free(path);

            if (f == NULL) {
                pki_bad_io(rep, "%s: cannot open: %s", files[i].name,
                           strerror(errno));
            }
        }

        lineno = 0;
        off = 0;

        while (limit < 0 || off < limit) {
            n = getline(&line, &cap, f);

            if (n < 0) {
                if (ferror(f)) {
                    pki_bad_io(rep, "%s: cannot read after line %zu: %s",
                               files[i].name, lineno, strerror(errno));
                }
                break;
            }

            if (limit >= 0 && n > limit - off) {
                /* the rest was written after the listing */
                n = (ssize_t) (limit - off);
            }

            off += n;
            lineno++;
            len = (size_t) n;

            if (len > PKI_AUDIT_VERIFY_MAX) {
                pki_bad(rep, "%s line %zu: entry too long", files[i].name,
                        lineno);
            }

            if (len == 0 || line[len - 1] != '\n') {
                /* audit.log's last line torn by a crash or a failed
                 * write (writers append under the flock: none was under
                 * way), which the next writer cuts off; unless all of
                 * it was synced, which no line being written is */
                if (files[i].first == 0
                    && vs.srec.size < (unsigned long long) off)
                {
                    rep->partial = len;
                    break;
                }

                pki_bad(rep, "%s line %zu: incomplete entry (no newline)",
                        files[i].name, lineno);
            }

            line[--len] = '\0';

            if (strlen(line) != len || !pki_line_seq_hash(line, &seq, hash)) {
                pki_bad(rep, "%s line %zu: not an audit entry (edited)",
                        files[i].name, lineno);
            }

            tag = strstr(line, PKI_AUDIT_HASH_TAG);
            while (tag != NULL && strstr(tag + 1, PKI_AUDIT_HASH_TAG)) {
                tag = strstr(tag + 1, PKI_AUDIT_HASH_TAG);
            }

            pki_sha256_hex(line, (size_t) (tag - line), calc);

            if (strcmp(calc, hash) != 0) {
                pki_bad(rep, "%s line %zu: entry seq %llu was edited (its "
                        "hash does not match its content)", files[i].name,
                        lineno, seq);
            }

            j = cJSON_Parse(line);
            if (j == NULL) {
                pki_bad(rep, "%s line %zu: entry seq %llu is not JSON",
                        files[i].name, lineno, seq);
            }

            it = cJSON_GetObjectItemCaseSensitive(j, "prev");
            pv = cJSON_IsString(it) ? it->valuestring : "";
            it = cJSON_GetObjectItemCaseSensitive(j, "type");
            type = cJSON_IsString(it) ? it->valuestring : "";
            it = cJSON_GetObjectItemCaseSensitive(j, "time");
            tm = cJSON_IsString(it) ? pki_audit_time(it->valuestring) : -1;

            if (lineno == 1 && files[i].first != 0
                && files[i].first != seq)
            {
                pki_bad(rep, "%s line 1: entry seq %llu does not match the "
                        "file name (file renamed or entries removed)",
                        files[i].name, seq);
            }

            if (seq != expect) {
                if (seq > expect) {
                    pki_bad(rep, "%s line %zu: entry seq %llu follows seq "
                            "%llu: %llu entr%s removed or reordered",
                            files[i].name, lineno, seq, expect - 1,
                            seq - expect, seq - expect == 1 ? "y" : "ies");
                }

                pki_bad(rep, "%s line %zu: entry seq %llu out of order "
                        "(expected seq %llu): entries reordered or "
                        "duplicated", files[i].name, lineno, seq, expect);
            }

            if (strcmp(pv, prev) != 0) {
                pki_bad(rep, "%s line %zu: entry seq %llu does not chain to "
                        "entry seq %llu (that one was edited or replaced)",
                        files[i].name, lineno, seq, seq - 1);
            }

            if (tm < 0) {
                /* the age bound (--max-unsigned-age) cannot skip it */
                pki_bad(rep, "%s line %zu: entry seq %llu: its time is not "
                        "the log's own (YYYY-MM-DDThh:mm:ss.mmmZ): edited",
                        files[i].name, lineno, seq);
            }

            if (seq == head_seq && strcmp(hash, head_hash) != 0) {
                pki_bad(rep, "%s line %zu: entry seq %llu differs from the "
                        "checkpoint in audit.head", files[i].name, lineno,
                        seq);
            }

            if (strcmp(type, "checkpoint") == 0) {
                it = cJSON_GetObjectItemCaseSensitive(j, "sig");
                sig = cJSON_IsString(it) ? it->valuestring : "";
                it = cJSON_GetObjectItemCaseSensitive(j, "key");
                kid = cJSON_IsString(it) ? it->valuestring : "";

                it = cJSON_GetObjectItemCaseSensitive(j, "time");
                snprintf(tbs, sizeof(tbs), PKI_AUDIT_CKPT_MAGIC2
                         "%llu\n%.80s\n%s\n", seq,
                         cJSON_IsString(it) ? it->valuestring : "", prev);
                snprintf(tbs1, sizeof(tbs1), PKI_AUDIT_CKPT_MAGIC
                         "%llu\n%s\n", seq, prev);

                kp = NULL;

                if (npubs > 0) {
                    for (k = 0; k < npubs; k++) {
                        if (strcmp(ids[k], kid) == 0) {
                            kp = pubs[k];
                            break;
                        }
                    }

                    if (kp == NULL) {
                        pki_bad(rep, "%s line %zu: checkpoint seq %llu: "
                                "signed by a key not given (%s): its "
                                "signature cannot be checked",
                                files[i].name, lineno, seq,
                                strlen(kid) == 16
                                && strspn(kid, "0123456789abcdef") == 16
                                ? kid : "no key id");
                    }

                } else {
                    kp = pki_load_pubkey(dir, kid);
                }

                if (kp != NULL) {
                    if (!pki_check_sig(kp, tbs, sig)
                        && !pki_check_sig(kp, tbs1, sig))
                    {
                        if (npubs == 0) {
                            EVP_PKEY_free(kp);
                        }
                        pki_bad(rep, "%s line %zu: checkpoint seq %llu: bad "
                                "signature", files[i].name, lineno, seq);
                    }

                    if (npubs == 0) {
                        EVP_PKEY_free(kp);
                    }

                    rep->checkpoints++;
                    rep->unsigned_tail = 0;
                    ck_time = tm;
                    ck_seq = seq;
                    tail_time = -1;

                } else {
                    rep->unsigned_tail++;
                }

            } else {
                rep->unsigned_tail++;
                if (tm > tail_time) {
                    tail_time = tm;
                }
            }

            if (first_time < 0 && tm >= 0) {
                first_time = tm;
            }

            cJSON_Delete(j);
            j = NULL;

            memcpy(prev, hash, 65);
            expect = seq + 1;
            rep->entries++;
            rep->last_seq = seq;
        }

        fclose(f);
        f = NULL;
    }

    if (head_seq > rep->last_seq) {
        pki_bad(rep, "entries seq %llu..%llu were removed from the end "
                "(audit.head names checkpoint seq %llu)", rep->last_seq + 1,
                head_seq, head_seq);
    }

    free(line);
    line = NULL;

    if (npubs > 0 && rep->entries > 0) {
        if (max_tail > 0 && rep->unsigned_tail > max_tail) {
            pki_bad(rep, "%llu entries after the last signed checkpoint "
                    "(seq %llu), more than %llu: cut back to an earlier "
                    "checkpoint and entries added?", rep->unsigned_tail,
                    ck_seq, max_tail);
        }

        if (max_secs > 0 && ck_time >= 0 && tail_time > ck_time
            && (unsigned long long) (tail_time - ck_time) > max_secs)
        {
            pki_bad(rep, "entries after the last signed checkpoint (seq "
                    "%llu) run %llu s past it, more than %llu s: cut back "
                    "to an earlier checkpoint and entries added?", ck_seq,
                    (unsigned long long) (tail_time - ck_time), max_secs);
        }

        /* no checkpoint signed by that key at all: the whole log is the
         * unsigned tail, measured from its first entry (a writer signs
         * one within a minute of that) */
        if (max_secs > 0 && ck_time < 0 && first_time >= 0
            && tail_time > first_time
            && (unsigned long long) (tail_time - first_time) > max_secs)
        {
            pki_bad(rep, "no checkpoint signed by the key, and the entries "
                    "run %llu s past the first one, more than %llu s: the "
                    "log written again without the key?",
                    (unsigned long long) (tail_time - first_time), max_secs);
        }
    }

    pki_audit_vsnap_free(&vs);

    return PKI_OK;

bad:

    cJSON_Delete(j);
    if (f != NULL) {
        fclose(f);
    }
    free(line);
    pki_audit_vsnap_free(&vs);

    return pki_fail(res, io ? PKI_UNAVAILABLE : PKI_MALFORMED, "%s",
                    rep->bad);
}
