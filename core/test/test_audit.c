/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests: the transaction log (core/audit.c): chain, group commit from
 * many threads, two writers on one directory, rotation, checkpoints, the
 * verifier against edited, removed, reordered and torn entries, hostile
 * field values, the event hook (sink), and what a close while the file
 * takes nothing reports of the entries it never wrote.
 */

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/sha.h>

#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include "pki.h"
#include "unit.h"


/* fsync() of this binary comes first: the directory syncs are counted */
static int  dir_syncs;

__attribute__((visibility("default"))) int
fsync(int fd)
{
    struct stat  sb;

    if (fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        __atomic_add_fetch(&dir_syncs, 1, __ATOMIC_RELAXED);
    }

    return (int) syscall(SYS_fsync, fd);
}


/* fdatasync() and rename() too: audit.head must not be put in place
 * before the checkpoint it names is durable in audit.log (the file's
 * whole size synced when the head is renamed into place) */
#define NSYNCED  64

static struct {
    ino_t  ino;
    off_t  size;
}                    synced[NSYNCED];
static pthread_mutex_t  synced_lock = PTHREAD_MUTEX_INITIALIZER;
static int           heads, heads_early;
static int           sync_fails;       /* the next ones of a file: EIO */
static int           sync_slow_ms;     /* each one of a file this long */
static int           in_sync;          /* one of them is in progress */


__attribute__((visibility("default"))) int
fdatasync(int fd)
{
    int          i, rc;
    struct stat  sb;

    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        return (int) syscall(SYS_fdatasync, fd);
    }

    if (__atomic_load_n(&sync_fails, __ATOMIC_ACQUIRE) > 0) {
        __atomic_sub_fetch(&sync_fails, 1, __ATOMIC_ACQ_REL);
        errno = EIO;
        return -1;
    }

    if (__atomic_load_n(&sync_slow_ms, __ATOMIC_ACQUIRE) > 0) {
        __atomic_add_fetch(&in_sync, 1, __ATOMIC_ACQ_REL);
        usleep(1000 * __atomic_load_n(&sync_slow_ms, __ATOMIC_ACQUIRE));
        rc = (int) syscall(SYS_fdatasync, fd);
        __atomic_sub_fetch(&in_sync, 1, __ATOMIC_ACQ_REL);

    } else {
        rc = (int) syscall(SYS_fdatasync, fd);
    }

    if (rc == 0) {
        pthread_mutex_lock(&synced_lock);
        for (i = 0; i < NSYNCED - 1; i++) {
            if (synced[i].ino == sb.st_ino || synced[i].ino == 0) {
                break;
            }
        }
        if (synced[i].ino != sb.st_ino || synced[i].size < sb.st_size) {
            synced[i].ino = sb.st_ino;
            synced[i].size = sb.st_size;
        }
        pthread_mutex_unlock(&synced_lock);
    }

    return rc;
}


__attribute__((visibility("default"))) int
rename(const char *from, const char *to)
{
    int          i, early;
    char         log[600];
    size_t       n;
    struct stat  sb;

    n = strlen(to);

    if (n > 11 && strcmp(to + n - 11, "/audit.head") == 0) {
        snprintf(log, sizeof(log), "%.*s/audit.log", (int) (n - 11), to);
        early = 1;

        pthread_mutex_lock(&synced_lock);
        if (stat(log, &sb) == 0) {
            for (i = 0; i < NSYNCED; i++) {
                if (synced[i].ino == sb.st_ino
                    && synced[i].size >= sb.st_size)
                {
                    early = 0;
                }
            }
        }
        heads++;
        heads_early += early;
        pthread_mutex_unlock(&synced_lock);
    }

    return (int) syscall(SYS_rename, from, to);
}


/* the messages of pki_audit_close(_report): what the file never took */
static char          reported[8192];
static int           reported_n;


static void
reported_add(const char *msg)
{
    size_t  n;

    n = strlen(reported);
    snprintf(reported + n, sizeof(reported) - n, "%s\n", msg);
    reported_n++;
}


static void
reported_add_cb(void *arg, int lost, const char *msg)
{
    (void) arg;

    if (lost) {
        reported_add(msg);
    }
}


#define NTHREADS   4
#define PER_THREAD 25


static char          tdir[256];
static pki_audit_t  *shared_log;
static int           sink_issue, sink_sign;
static int           notify_count;


static void
notified(void *arg)
{
    __atomic_add_fetch((int *) arg, 1, __ATOMIC_RELEASE);
}


static void
sink(void *arg, const pki_event_t *ev)
{
    (void) arg;

    if (ev->type == PKI_EV_ISSUE) {
        __sync_fetch_and_add(&sink_issue, 1);
    } else if (ev->type == PKI_EV_SIGN) {
        __sync_fetch_and_add(&sink_sign, 1);
    }
}


static pki_status_t
append(pki_audit_t *a, const char *serial, int durable)
{
    pki_event_t   ev;
    pki_result_t  res;

    memset(&ev, 0, sizeof(ev));
    ev.type = PKI_EV_ISSUE;
    ev.status = PKI_OK;
    ev.protocol = "est";
    ev.operation = "enroll";
    ev.ca = "ca1";
    ev.template_name = "device";
    ev.serial = serial;
    ev.subject = "CN=device-1,O=Example";
    ev.requester = "alice";
    ev.client = "127.0.0.1";

    pki_result_init(&res);
    return pki_audit_append(a, &ev, durable, &res);
}


static void *
worker(void *arg)
{
    int   i, id, *fails;
    char  serial[41];

    id = (int) (long) arg;
    fails = calloc(1, sizeof(int));

    for (i = 0; i < PER_THREAD; i++) {
        snprintf(serial, sizeof(serial), "%02X%04X", id, i);
        if (append(shared_log, serial, 1) != PKI_OK) {
            (*fails)++;
        }
    }

    return fails;
}


/* deferred emits from one thread; returns its last ticket */
static void *
qworker(void *arg)
{
    int                  i, id;
    char                 serial[41];
    pki_event_t          ev;
    pki_result_t         res;
    unsigned long long  *t, tk;

    id = (int) (long) arg;
    t = calloc(1, sizeof(*t));

    memset(&ev, 0, sizeof(ev));
    ev.type = PKI_EV_ISSUE;
    ev.status = PKI_OK;
    ev.ca = "ca1";
    ev.serial = serial;

    for (i = 0; i < PER_THREAD; i++) {
        snprintf(serial, sizeof(serial), "Q%02X%04X", id, i);
        pki_result_init(&res);
        if (pki_event_emit(&ev, 1, &res) == PKI_OK) {
            tk = pki_audit_take_ticket();
            if (t != NULL && tk > *t) {
                *t = tk;
            }
        }
    }

    return t;
}


static int
run(const char *cmd)
{
    int  rc;

    rc = system(cmd);
    return rc;
}


static pki_status_t
verify(const char *dir, pki_audit_report_t *rep)
{
    pki_result_t  res;

    pki_result_init(&res);
    return pki_audit_verify(dir, NULL, rep, &res);
}


static pki_key_t *make_key(const char *path);


/*
 * The checkpoint key replaced (key= changed, a reload where old and new
 * workers both sign): one log holds checkpoints of two keys.  Given both,
 * each checkpoint is checked with the key of its id; given one, the other
 * key's checkpoints fail naming their key id, not as a bad signature.
 */
static void
test_verify_two_keys(void)
{
    int                  i;
    char                 dir[300], path[400], serial[16], want[64];
    char                 id[2][17];
    EVP_PKEY            *pub[2];
    pki_key_t           *k[2];
    pki_status_t         st;
    pki_result_t         res;
    pki_audit_t         *a;
    pki_audit_conf_t     c;
    pki_audit_report_t   rep;

    snprintf(dir, sizeof(dir), "%s/twokeys", tdir);
    mkdir(dir, 0700);

    for (i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/key%d.pem", tdir, i + 1);
        k[i] = make_key(path);
        pub[i] = k[i] ? pki_key_public(k[i]) : NULL;
    }

    ok(pub[0] != NULL && pub[1] != NULL, "two keys: made");
    if (pub[0] == NULL || pub[1] == NULL) {
        goto done;
    }

    for (i = 0; i < 2; i++) {
        unsigned char  *der, md[SHA256_DIGEST_LENGTH];
        int             len, b;

        der = NULL;
        len = i2d_PUBKEY(pub[i], &der);
        SHA256(der, (size_t) (len > 0 ? len : 0), md);
        OPENSSL_free(der);
        for (b = 0; b < 8; b++) {
            snprintf(id[i] + 2 * b, 3, "%02x", md[b]);
        }
    }

    /* 10 entries signed every 3 by k1, then 10 by k2 */
    memset(&c, 0, sizeof(c));
    c.dir = dir;
    c.checkpoint_every = 3;
    a = NULL;

    for (i = 0; i < 20; i++) {
        if (i % 10 == 0) {
            c.key = k[i / 10];
            pki_result_init(&res);
            a = pki_audit_open(&c, &res);
            if (a == NULL) {
                break;
            }
        }
        snprintf(serial, sizeof(serial), "2B%02d", i);
        if (append(a, serial, 1) != PKI_OK) {
            break;
        }
        if (i % 10 == 9) {
            pki_result_init(&res);
            (void) pki_audit_checkpoint(a, &res);
            pki_audit_close(a);
        }
    }
    ok(i == 20, "two keys: 10 entries under k1, 10 under k2");

    pki_result_init(&res);
    st = pki_audit_verify_keys(dir, pub, 2, NULL, &rep, &res);
    ok(st == PKI_OK && rep.checkpoints >= 6,
       "two keys: both given: OK, %llu signed checkpoints (%s)",
       rep.checkpoints, rep.bad);

    pki_result_init(&res);
    st = pki_audit_verify_keys(dir, &pub[1], 1, NULL, &rep, &res);
    snprintf(want, sizeof(want), "signed by a key not given (%s)", id[0]);
    ok(st == PKI_MALFORMED && strstr(rep.bad, want) != NULL,
       "two keys: k2 alone fails naming k1: %s", rep.bad);

    pki_result_init(&res);
    st = pki_audit_verify_keys(dir, pub, 1, NULL, &rep, &res);
    snprintf(want, sizeof(want), "signed by a key not given (%s)", id[1]);
    ok(st == PKI_MALFORMED && strstr(rep.bad, want) != NULL,
       "two keys: k1 alone fails naming k2: %s", rep.bad);

    pki_result_init(&res);
    st = pki_audit_verify_limits(dir, pub[0], NULL, &rep, &res);
    ok(st == PKI_MALFORMED && strstr(rep.bad, want) != NULL,
       "two keys: the same through pki_audit_verify_limits: %s", rep.bad);

    pki_result_init(&res);
    st = pki_audit_verify(dir, NULL, &rep, &res);
    ok(st == PKI_OK, "two keys: without keys (the directory's copies): OK "
       "(%s)", rep.bad);

done:

    for (i = 0; i < 2; i++) {
        if (k[i] != NULL) {
            pki_key_free(k[i]);
        }
    }
}


/*
 * pkictl audit verify of a log in use: writers in two handles (two
 * processes' worth of flocks) append, rotate at a small max_size and sign
 * checkpoints while verify runs again and again.  Every run must pass:
 * a rotation between the listing and the open of audit.log, or a line
 * read half written, is no tampering (exit 1 is the monitoring alarm).
 */
#define LIVE_WRITERS  4

static pki_audit_t  *live_log[2];
static int           live_stop;


static void *
live_writer(void *arg)
{
    int            id, i, *fails;
    char           serial[41];
    pki_audit_t   *a;

    id = (int) (long) arg;
    a = live_log[id % 2];
    fails = calloc(1, sizeof(int));

    for (i = 0; i < 500 && !__atomic_load_n(&live_stop, __ATOMIC_ACQUIRE);
         i++)
    {
        snprintf(serial, sizeof(serial), "1E%02X%06X", id, i);
        if (append(a, serial, i % 8 == 0) != PKI_OK && fails != NULL) {
            (*fails)++;
        }
        usleep(1000);
    }

    return fails;
}


static void
test_verify_live(pki_key_t *key)
{
    int                  i, bad, io, runs, *wf, wfails;
    char                 dir[300], first[512];
    pthread_t            th[LIVE_WRITERS];
    pki_status_t         st;
    pki_result_t         res;
    pki_audit_conf_t     c;
    pki_audit_report_t   rep;

    /* not under Valgrind (3.19): its fcntl(F_OFD_SETLKW) keeps its own
     * lock on the process's threads, so one writer waiting for the sync
     * lock that another holds stalls them all (see test_audit_carry.c);
     * the writers of two handles in one process meet there */
    if (getenv("PKI_TEST_VALGRIND") != NULL) {
        ok(1, "live: skipped under Valgrind");
        return;
    }

    snprintf(dir, sizeof(dir), "%s/live", tdir);
    mkdir(dir, 0700);

    memset(&c, 0, sizeof(c));
    c.dir = dir;
    c.key = key;
    c.max_size = 8192;
    c.checkpoint_every = 50;

    for (i = 0; i < 2; i++) {
        pki_result_init(&res);
        live_log[i] = pki_audit_open(&c, &res);
    }
    ok(live_log[0] != NULL && live_log[1] != NULL,
       "live: two writers' logs open on one directory");
    if (live_log[0] == NULL || live_log[1] == NULL) {
        pki_audit_close(live_log[0]);
        pki_audit_close(live_log[1]);
        return;
    }

    ok(append(live_log[0], "1E00", 1) == PKI_OK, "live: a first entry");

    __atomic_store_n(&live_stop, 0, __ATOMIC_RELEASE);
    for (i = 0; i < LIVE_WRITERS; i++) {
        pthread_create(&th[i], NULL, live_writer, (void *) (long) i);
    }

    bad = 0;
    io = 0;
    first[0] = '\0';

    for (runs = 0; runs < 40; runs++) {
        st = verify(dir, &rep);
        if (st != PKI_OK) {
            if (st == PKI_UNAVAILABLE) {
                io++;
            } else {
                bad++;
            }
            if (first[0] == '\0') {
                snprintf(first, sizeof(first), "%s", rep.bad);
            }
        }
        usleep(10000);
    }

    __atomic_store_n(&live_stop, 1, __ATOMIC_RELEASE);
    wfails = 0;
    for (i = 0; i < LIVE_WRITERS; i++) {
        wf = NULL;
        pthread_join(th[i], (void **) &wf);
        if (wf != NULL) {
            wfails += *wf;
            free(wf);
        }
    }

    ok(wfails == 0, "live: every append worked (%d failed)", wfails);
    ok(bad == 0 && io == 0, "live: %d verify runs alongside the writers, "
       "%d reported tampering, %d an I/O problem (first: %s)", runs, bad,
       io, first);

    st = verify(dir, &rep);
    ok(st == PKI_OK && rep.last_seq > 500 && rep.checkpoints > 5,
       "live: the log verifies at rest: %llu entries, %llu checkpoints, "
       "rotated (%s)", rep.entries, rep.checkpoints, rep.bad);

    pki_audit_close(live_log[0]);
    pki_audit_close(live_log[1]);
}


static pki_key_t *
make_key(const char *path)
{
    FILE          *f;
    EVP_PKEY      *pk;
    pki_key_t     *k;
    pki_result_t   res;

    pk = EVP_EC_gen("P-256");
    f = fopen(path, "w");
    if (pk == NULL || f == NULL) {
        return NULL;
    }

    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    EVP_PKEY_free(pk);

    pki_result_init(&res);
    k = pki_key_new(path, NULL, &res);
    if (k == NULL || pki_key_open(k, &res) != PKI_OK) {
        return NULL;
    }

    return k;
}


/* Copies the log into DIR/name and runs cmd (a shell line with %s for
 * the copy) on it; returns the verifier's report. */
static pki_status_t
tamper(const char *name, const char *sh, pki_audit_report_t *rep)
{
    char  copy[300], cmd[4096];

    snprintf(copy, sizeof(copy), "%s/%s", tdir, name);
    snprintf(cmd, sizeof(cmd), "rm -rf %s && mkdir -p %s && "
             "cp %s/log/audit* %s/ && cd %s && %s", copy, copy, tdir, copy,
             copy, sh);

    if (run(cmd) != 0) {
        diag("tamper command failed: %s", cmd);
    }

    return verify(copy, rep);
}


/*
 * A log cut back (or replaced by an older copy) under a running writer:
 * the writer refuses to append (PKI_INTERNAL, "went back") rather than
 * chain and sign over the cut, which no verifier could see afterwards
 * (audit.head rewritten to match, the next checkpoint signed over the
 * shorter chain).  Once the entries are back, it appends again.
 */
static void
test_rollback(pki_key_t *key)
{
    int                  n;
    char                 d[300], cmd[1400];
    pki_status_t         st;
    pki_result_t         res;
    pki_audit_t         *a;
    pki_audit_conf_t     conf;
    pki_audit_report_t   rep;

    snprintf(d, sizeof(d), "%s/rollback", tdir);
    mkdir(d, 0700);

    memset(&conf, 0, sizeof(conf));
    conf.dir = d;
    conf.key = key;
    conf.checkpoint_every = 2;

    pki_result_init(&res);
    a = pki_audit_open(&conf, &res);
    if (!ok(a != NULL, "rollback: log opened (%s)", res.detail)) {
        return;
    }

    /* seq 1, 2, checkpoint 3, 4, 5, checkpoint 6 */
    n = 0;
    n += append(a, "R1", 1) == PKI_OK;
    n += append(a, "R2", 1) == PKI_OK;
    n += append(a, "R3", 1) == PKI_OK;
    n += append(a, "R4", 1) == PKI_OK;
    ok(n == 4, "rollback: 4 entries written");

    /* cut back to checkpoint 3 in place (same file), head to match */
    snprintf(cmd, sizeof(cmd), "cd %s && cp audit.log full.log && "
             "head -n 3 full.log > cut.log && cat cut.log > audit.log && "
             "sed -n 3p full.log > audit.head", d);
    ok(system(cmd) == 0, "rollback: audit.log cut back to seq 3");

    st = append(a, "R5", 1);
    ok(st != PKI_OK, "rollback: the writer refuses to append after the "
       "cut (%s)", pki_status_name(st));
    snprintf(cmd, sizeof(cmd), "test $(wc -l < %s/audit.log) -eq 3", d);
    ok(system(cmd) == 0, "rollback: ... nothing written over it");
    st = append(a, "R6", 1);
    ok(st != PKI_OK, "rollback: ... and again (%s)", pki_status_name(st));

    /* the entries back: the writer goes on */
    snprintf(cmd, sizeof(cmd), "cd %s && cat full.log > audit.log", d);
    ok(system(cmd) == 0, "rollback: the entries restored");
    st = append(a, "R7", 1);
    ok(st == PKI_OK, "rollback: ... appends again (%s)",
       pki_status_name(st));
    st = verify(d, &rep);
    ok(st == PKI_OK && rep.entries >= 7, "rollback: ... and the log "
       "verifies (%llu entries) %s", rep.entries, rep.bad);

    /* an older copy put in its place (another file) */
    snprintf(cmd, sizeof(cmd), "cd %s && mv cut.log audit.log", d);
    ok(system(cmd) == 0, "rollback: audit.log replaced by an older copy");
    st = append(a, "R8", 1);
    ok(st != PKI_OK, "rollback: the writer refuses to append to it (%s)",
       pki_status_name(st));

    pki_audit_close(a);
}


/*
 * A log that cannot be read is no log that fails verification: the status
 * is PKI_UNAVAILABLE (pkictl: exit 2, an I/O problem), not PKI_MALFORMED
 * (exit 1, tampering).  As root, modes do not stop a read: audit.log a
 * dangling symlink (fopen() fails), a directory (getline() fails: it
 * read as an empty, intact log), audit.head a directory.
 */
static void
test_verify_io(void)
{
    int                  i;
    char                 d[300], p[400];
    FILE                *f;
    pki_status_t         st;
    pki_result_t         res;
    pki_audit_report_t   rep;

    static const struct {
        const char  *name;
        const char  *bad;
    } cases[] = {
        { "audit.log a dangling symlink", "audit.log: cannot open" },
        { "audit.log a directory", "audit.log: cannot read" },
        { "audit.head a directory", "audit.head: cannot read" },
    };

    for (i = 0; i < 3; i++) {
        snprintf(d, sizeof(d), "%s/io%d", tdir, i);
        mkdir(d, 0700);
        snprintf(p, sizeof(p), "%s/audit.log", d);

        if (i == 0) {
            if (symlink("/nonexistent/audit.log", p) != 0) {
                diag("symlink %s failed", p);
            }
        } else if (i == 1) {
            mkdir(p, 0700);
        } else {
            f = fopen(p, "w");
            if (f != NULL) {
                fclose(f);
            }
            snprintf(p, sizeof(p), "%s/audit.head", d);
            mkdir(p, 0700);
        }

        pki_result_init(&res);
        st = pki_audit_verify(d, NULL, &rep, &res);
        ok(st == PKI_UNAVAILABLE, "verify, %s: %s (not malformed)",
           cases[i].name, pki_status_name(st));
        ok(strstr(rep.bad, cases[i].bad) != NULL
           && strcmp(res.detail, rep.bad) == 0, "  says \"%s\"", rep.bad);
    }

    /* audit.lock there but not to be opened (a link: O_NOFOLLOW; as
     * for a reader without read access): said, not read around, where a
     * rotation meanwhile would show as a gap; no_lock reads unlocked */
    snprintf(d, sizeof(d), "%s/io-lock", tdir);
    mkdir(d, 0700);
    snprintf(p, sizeof(p), "%s/audit.log", d);
    f = fopen(p, "w");
    if (f != NULL) {
        fclose(f);
    }
    snprintf(p, sizeof(p), "%s/audit.lock", d);
    if (symlink("/nonexistent/audit.lock", p) != 0) {
        diag("symlink %s failed", p);
    }

    {
        pki_audit_limits_t  lim;

        memset(&lim, 0, sizeof(lim));
        pki_result_init(&res);
        st = pki_audit_verify_limits(d, NULL, &lim, &rep, &res);
        ok(st == PKI_UNAVAILABLE
           && strstr(res.detail, "audit.lock: ") != NULL
           && strstr(res.detail, "--no-lock") != NULL,
           "verify, audit.lock not to be opened: %s: %s",
           pki_status_name(st), res.detail);

        lim.no_lock = 1;
        pki_result_init(&res);
        st = pki_audit_verify_limits(d, NULL, &lim, &rep, &res);
        ok(st == PKI_OK && rep.entries == 0,
           "  no_lock: read unlocked: %s %s", pki_status_name(st),
           res.detail);
    }
}


/* A writer running as root (pkictl) never writes through a symlink that
 * whoever can write the log's directory put at audit.log or audit.lock:
 * the open fails, and the file the link names is untouched. */
/* A log in tdir/name with its syncer, the default and deferred, and ev a
 * revocation entry for it; NULL if it did not open. */
static pki_audit_t *
synced_log(const char *name, void (*notify)(void *arg), pki_event_t *ev)
{
    char               dir[300];
    pki_audit_t       *x;
    pki_result_t       res;
    pki_audit_conf_t   c;

    snprintf(dir, sizeof(dir), "%s/%s", tdir, name);
    mkdir(dir, 0700);
    memset(&c, 0, sizeof(c));
    c.dir = dir;
    pki_result_init(&res);
    x = pki_audit_open(&c, &res);
    pki_result_init(&res);
    ok(x != NULL && pki_audit_syncer_start(x, notify, NULL, &res) == PKI_OK,
       "%s: a log with its syncer", name);
    if (x == NULL) {
        return NULL;
    }

    pki_audit_set_default(x);
    pki_audit_set_deferred(1);

    memset(ev, 0, sizeof(*ev));
    ev->type = PKI_EV_REVOKE;
    ev->status = PKI_OK;
    ev->ca = "ca1";

    return x;
}


static void
synced_log_close(pki_audit_t *x)
{
    pki_audit_set_deferred(0);
    pki_audit_set_default(NULL);
    pki_audit_close(x);
}


/* The qdone each notification of the syncer saw (the event loop then
 * reads which tickets are durable). */
static pki_audit_t         *seen_log;
static unsigned long long   seen_done;
static int                  seen_n;

static void
seen_notify(void *arg)
{
    (void) arg;
    __atomic_store_n(&seen_done, pki_audit_synced(seen_log),
                     __ATOMIC_RELEASE);
    __atomic_add_fetch(&seen_n, 1, __ATOMIC_ACQ_REL);
}


/* A pool thread's pki_audit_sync() (a detached task that left a ticket)
 * may drain the syncer's queue while the syncer is in a sync: another
 * request's entry is made durable by that thread, and its event loop must
 * be told so, or the answer waits for the next entry of the worker. */
static void
test_sync_notify(void)
{
    int                  n;
    pki_event_t          ev;
    pki_audit_t         *x;
    pki_result_t         res;
    unsigned long long   r;

    x = synced_log("notify", seen_notify, &ev);
    seen_log = x;
    if (x == NULL) {
        return;
    }

    ev.serial = "E0";

    /* the syncer in a slow sync of a first entry */
    __atomic_store_n(&sync_slow_ms, 300, __ATOMIC_RELEASE);
    pki_result_init(&res);
    (void) pki_event_emit(&ev, 1, &res);
    (void) pki_audit_take_ticket();
    for (n = 0; n < 200 && !__atomic_load_n(&in_sync, __ATOMIC_ACQUIRE);
         n++)
    {
        usleep(5000);
    }
    ok(n < 200, "sync notify: the syncer is in a sync");

    /* request R's entry, then a pool thread's sync takes it */
    ev.serial = "E1";
    pki_result_init(&res);
    (void) pki_event_emit(&ev, 1, &res);
    r = pki_audit_take_ticket();
    pki_result_init(&res);
    ok(pki_audit_sync(x, &res) == PKI_OK && pki_audit_ticket_done(x, r),
       "sync notify: the pool thread's sync made R durable");
    __atomic_store_n(&sync_slow_ms, 0, __ATOMIC_RELEASE);

    for (n = 0; n < 100 && __atomic_load_n(&seen_done, __ATOMIC_ACQUIRE) < r;
         n++)
    {
        usleep(10000);
    }
    ok(__atomic_load_n(&seen_done, __ATOMIC_ACQUIRE) >= r,
       "sync notify: the event loop was told (%d notifications, the last "
       "saw %llu of ticket %llu)", __atomic_load_n(&seen_n, __ATOMIC_ACQUIRE),
       __atomic_load_n(&seen_done, __ATOMIC_ACQUIRE), r);

    synced_log_close(x);
}


/* A sync that fails once is tried again by the syncer: the answer
 * waiting for it leaves once the disk syncs, without waiting for another
 * entry to come (the syncer slept until one did). */
static void
test_sync_retry(void)
{
    int                  n, done_fail;
    pki_event_t          ev;
    pki_audit_t         *x;
    pki_result_t         res;
    unsigned long long   ticket;

    x = synced_log("retry", NULL, &ev);
    if (x == NULL) {
        return;
    }

    ev.serial = "5EC0";

    __atomic_store_n(&sync_fails, 1, __ATOMIC_RELEASE);
    pki_result_init(&res);
    (void) pki_event_emit(&ev, 1, &res);
    ticket = pki_audit_take_ticket();

    for (n = 0; n < 100 && __atomic_load_n(&sync_fails, __ATOMIC_ACQUIRE);
         n++)
    {
        usleep(10000);
    }
    done_fail = pki_audit_ticket_done(x, ticket);
    ok(n < 100 && !done_fail, "sync retry: the first fdatasync failed, "
       "the entry is not taken for durable");

    /* nothing else is logged: only a retry can make it durable */
    for (n = 0; n < 300 && !pki_audit_ticket_done(x, ticket); n++) {
        usleep(10000);
    }
    ok(pki_audit_ticket_done(x, ticket), "sync retry: durable %d ms after "
       "the failure, with no other entry", n * 10);

    synced_log_close(x);
    __atomic_store_n(&sync_fails, 0, __ATOMIC_RELEASE);
}


static void
test_symlinks(void)
{
    int                i;
    char               dir[400], victim[400], link[500], buf[64];
    FILE              *f;
    pki_audit_t       *a;
    pki_result_t       res;
    pki_audit_conf_t   conf;
    static const char *names[] = { "audit.log", "audit.lock" };

    for (i = 0; i < 2; i++) {
        snprintf(dir, sizeof(dir), "%s/links%d", tdir, i);
        snprintf(victim, sizeof(victim), "%s/victim%d", tdir, i);
        snprintf(link, sizeof(link), "%s/%s", dir, names[i]);
        mkdir(dir, 0700);
        f = fopen(victim, "w");
        if (f == NULL || fputs("victim\n", f) < 0 || fclose(f) != 0
            || symlink(victim, link) != 0)
        {
            ok(0, "%s a symlink: set up", names[i]);
            continue;
        }

        memset(&conf, 0, sizeof(conf));
        conf.dir = dir;
        conf.no_fsync = 1;
        pki_result_init(&res);
        a = pki_audit_open(&conf, &res);
        if (a != NULL) {
            pki_event_t  ev;

            memset(&ev, 0, sizeof(ev));
            ev.type = PKI_EV_REQUEST;
            ev.operation = "symlink-test";
            pki_result_init(&res);
            (void) pki_audit_append(a, &ev, 1, &res);
            pki_audit_close(a);
        }

        f = fopen(victim, "r");
        buf[0] = '\0';
        if (f != NULL) {
            if (fgets(buf, sizeof(buf), f) == NULL) {
                buf[0] = '\0';
            }
            if (fgetc(f) != EOF) {
                buf[0] = '\0';
            }
            fclose(f);
        }
        ok(strcmp(buf, "victim\n") == 0, "%s a symlink: the file it names "
           "is untouched (%s)", names[i], a != NULL ? "opened" : res.detail);
    }
}


int
main(void)
{
    int                  i, total, *fails;
    char                 logdir[300], keyfile[300], cmd[1024], buf[64];
    FILE                *f;
    pki_key_t           *key;
    pthread_t            th[NTHREADS];
    pki_status_t         st;
    pki_result_t         res;
    pki_event_t          ev;
    pki_audit_t         *a, *b;
    pki_audit_conf_t     conf;
    pki_audit_report_t   rep;

    if (!pki_init()) {
        skip_all("pki_init failed");
    }

    snprintf(tdir, sizeof(tdir), "/tmp/test_audit.XXXXXX");
    if (mkdtemp(tdir) == NULL) {
        skip_all("mkdtemp failed");
    }

    snprintf(logdir, sizeof(logdir), "%s/log", tdir);
    snprintf(keyfile, sizeof(keyfile), "%s/audit.key", tdir);
    mkdir(logdir, 0700);

    key = make_key(keyfile);
    ok(key != NULL, "audit key made and opened");

    /* bad configuration */
    memset(&conf, 0, sizeof(conf));
    conf.dir = "/nonexistent/dir";
    pki_result_init(&res);
    ok(pki_audit_open(&conf, &res) == NULL && res.status != PKI_OK
       && strstr(res.detail, strerror(ENOENT)) != NULL,
       "a missing directory is refused, with the cause: %s", res.detail);

    /* a file where the directory should be: said so (it was "does not
     * exist", as was a directory the process may not reach) */
    conf.dir = keyfile;
    pki_result_init(&res);
    ok(pki_audit_open(&conf, &res) == NULL
       && strstr(res.detail, "is not a directory") != NULL,
       "a file for the directory is refused as one: %s", res.detail);

    pki_result_init(&res);
    ok(pki_audit_verify(logdir, NULL, &rep, &res) == PKI_NOT_FOUND,
       "verify of an empty directory: not found");

    test_verify_io();
    test_sync_retry();
    test_sync_notify();
    test_symlinks();
    test_rollback(key);
    test_verify_live(key);
    test_verify_two_keys();

    /* many threads, group commit, rotation, checkpoints */
    memset(&conf, 0, sizeof(conf));
    conf.dir = logdir;
    conf.key = key;
    conf.max_size = 4096;
    conf.checkpoint_every = 7;

    pki_result_init(&res);
    shared_log = pki_audit_open(&conf, &res);
    ok(shared_log != NULL, "log opened (%s)", res.detail);
    if (shared_log == NULL) {
        return done_testing();
    }

    total = 0;
    for (i = 0; i < NTHREADS; i++) {
        pthread_create(&th[i], NULL, worker, (void *) (long) i);
    }
    for (i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], (void **) &fails);
        total += *fails;
        free(fails);
    }

    ok(total == 0, "%d threads x %d durable appends, %d failures", NTHREADS,
       PER_THREAD, total);

    /* a second writer on the same directory (as another worker) */
    pki_result_init(&res);
    b = pki_audit_open(&conf, &res);
    ok(b != NULL, "second writer opened");

    for (i = 0; i < 10; i++) {
        append(i % 2 ? b : shared_log, "AB", 0);
    }

    pki_result_init(&res);
    ok(pki_audit_checkpoint(b, &res) == PKI_OK, "explicit checkpoint");

    st = verify(logdir, &rep);
    ok(st == PKI_OK, "interleaved log verifies (%s)", rep.bad);
    ok(rep.entries >= NTHREADS * PER_THREAD + 10, "%llu entries",
       rep.entries);
    ok(rep.checkpoints >= (NTHREADS * PER_THREAD + 10) / 7,
       "%llu signed checkpoints", rep.checkpoints);
    ok(rep.unsigned_tail == 0, "nothing after the last checkpoint");
    ok(heads > 0 && heads_early == 0, "audit.head renamed into place %d "
       "times, %d before its checkpoint was synced", heads, heads_early);

    snprintf(cmd, sizeof(cmd), "test $(ls %s/audit-0*.log | wc -l) -ge 3",
             logdir);
    ok(run(cmd) == 0, "the log rotated into several files");

    /* hostile values stay on one line and verify */
    memset(&ev, 0, sizeof(ev));
    ev.type = PKI_EV_REQUEST;
    ev.status = PKI_MALFORMED;
    ev.protocol = "est";
    ev.reason = "quote\" backslash\\ newline\n nul-less \x01\xff\xc3\xa9 "
                ",\"hash\":\"0000";
    ev.requester = "}{\"seq\":999";
    pki_result_init(&res);
    ok(pki_audit_append(b, &ev, 1, &res) == PKI_OK, "hostile entry written");

    st = verify(logdir, &rep);
    ok(st == PKI_OK, "log with a hostile entry verifies (%s)", rep.bad);

    snprintf(cmd, sizeof(cmd), "test $(grep -c '' %s/audit.log) -ge 1 && "
             "! grep -q 'newline$' %s/audit.log", logdir, logdir);
    ok(run(cmd) == 0, "no raw newline from a field");

    /* tampering, each on a copy */
    st = tamper("edit", "sed -i '3s/alice/mallory/' $(ls audit-0*.log | head -1)", &rep);
    ok(st == PKI_MALFORMED && strstr(rep.bad, "edited"),
       "edited entry caught: %s", rep.bad);

    st = tamper("remove", "sed -i '2d' $(ls audit-0*.log | head -1)", &rep);
    ok(st == PKI_MALFORMED && strstr(rep.bad, "removed"),
       "removed entry caught: %s", rep.bad);

    st = tamper("reorder", "sed -i '2{h;d};3G' $(ls audit-0*.log | head -1)", &rep);
    ok(st == PKI_MALFORMED && strstr(rep.bad, "line 2"),
       "reordered entries caught: %s", rep.bad);

    st = tamper("rmfile", "rm $(ls audit-0*.log | sed -n 2p)", &rep);
    ok(st == PKI_MALFORMED, "removed rotated file caught: %s", rep.bad);

    st = tamper("rmfirst", "sed -i '1d' $(ls audit-0*.log | head -1)",
                &rep);
    ok(st == PKI_MALFORMED, "removed first entry caught: %s", rep.bad);

    /* an edit with a recomputed hash: the next entry names it */
    st = tamper("rehash",
                "perl -MDigest::SHA=sha256_hex -i -pe 'if ($. == 2) { chomp; "
                "s/alice/mallory/; s/,\"hash\":\"[0-9a-f]{64}\"\\}$//; "
                "$_ .= \",\\\"hash\\\":\\\"\" . sha256_hex($_) . \"\\\"}\\n\" }'"
                " $(ls audit-0*.log | head -1)", &rep);
    ok(st == PKI_MALFORMED && strstr(rep.bad, "line 3"),
       "edited entry with a recomputed hash caught at the next: %s",
       rep.bad);

    /* a forged checkpoint signature */
    st = tamper("sig", "perl -MDigest::SHA=sha256_hex -i -pe "
                "'if (/checkpoint/ && !$done++) { chomp; s/\"sig\":\"..../"
                "\"sig\":\"AAAA/; s/,\"hash\":\"[0-9a-f]{64}\"\\}$//; "
                "$_ .= \",\\\"hash\\\":\\\"\" . sha256_hex($_) . \"\\\"}\\n\" }'"
                " $(ls audit-0*.log | head -1)", &rep);
    ok(st == PKI_MALFORMED && strstr(rep.bad, "signature"), "forged checkpoint caught: %s", rep.bad);

    /* a torn last line (crash mid-write, or a write that failed), not
     * synced: the next writer cuts it off, so it is no failure; reported
     * as not checked */
    ok(append(shared_log, "CC", 0) == PKI_OK, "an entry, not synced");
    snprintf(cmd, sizeof(cmd), "printf '{\"seq\":9999,\"time\"' >> "
             "%s/audit.log", logdir);
    run(cmd);
    st = verify(logdir, &rep);
    ok(st == PKI_OK && rep.partial == 18,
       "unsynced torn tail: not a failure, %llu bytes reported (%s)",
       rep.partial, rep.bad);

    /* a torn line that a sync covered (the record in audit.lock): no
     * write under way left it */
    {
        int                  fd;
        struct stat          sb;
        unsigned long long   rec[4];

        snprintf(cmd, sizeof(cmd), "%s/audit.log", logdir);
        memset(&sb, 0, sizeof(sb));
        stat(cmd, &sb);
        rec[0] = 0x31636e7973696b70ULL;
        rec[1] = (unsigned long long) sb.st_dev;
        rec[2] = (unsigned long long) sb.st_ino;
        rec[3] = (unsigned long long) sb.st_size;
        snprintf(cmd, sizeof(cmd), "%s/audit.lock", logdir);
        fd = open(cmd, O_WRONLY);
        ok(fd >= 0 && pwrite(fd, rec, sizeof(rec), 0) == sizeof(rec),
           "the sync record covers the torn bytes");
        if (fd >= 0) {
            close(fd);
        }
    }
    st = verify(logdir, &rep);
    ok(st == PKI_MALFORMED && strstr(rep.bad, "incomplete"),
       "synced torn tail reported: %s", rep.bad);

    ok(append(shared_log, "CD", 1) == PKI_OK, "append after a torn tail");
    st = verify(logdir, &rep);
    ok(st == PKI_OK && rep.partial == 0,
       "torn tail cut off, log verifies (%s)", rep.bad);

    /* the event hook: default log + sink */
    pki_event_set_sink(sink, NULL);
    pki_audit_set_default(shared_log);
    pki_event_set_actor("testproto", "bob", "10.0.0.1");

    memset(&ev, 0, sizeof(ev));
    ev.type = PKI_EV_ISSUE;
    ev.status = PKI_POLICY;
    ev.ca = "ca1";
    ev.reason = "key type not allowed";
    pki_result_init(&res);
    ok(pki_event_emit(&ev, 1, &res) == PKI_OK && sink_issue == 1,
       "pki_event_emit logs and reaches the sink");

    snprintf(cmd, sizeof(cmd), "tail -n 3 %s/audit.log | grep -q "
             "'\"protocol\":\"testproto\",.*\"requester\":\"bob\",\"client\":"
             "\"10.0.0.1\",\"outcome\":\"policy\"'", logdir);
    ok(run(cmd) == 0, "actor of the thread in the entry");

    memset(&ev, 0, sizeof(ev));
    ev.type = PKI_EV_SIGN;
    ev.seconds = 0.001;
    pki_event_emit(&ev, 0, NULL);
    ok(sink_sign == 1, "counted-only event reaches the sink");

    snprintf(buf, sizeof(buf), "%s", pki_outcome_class(PKI_UNAUTHORIZED));
    ok(strcmp(buf, "auth") == 0
       && strcmp(pki_outcome_class(PKI_UNAVAILABLE), "backend") == 0
       && strcmp(pki_outcome_class(PKI_OK), "success") == 0
       && strcmp(pki_outcome_class(PKI_MALFORMED), "malformed") == 0
       && strcmp(pki_outcome_class(PKI_POLICY), "policy") == 0,
       "outcome classes");

    /* a pki_issue without Redis (offline): logged through the hook */
    pki_audit_set_default(NULL);
    pki_event_set_sink(NULL, NULL);

    /* the public key file is there and verifies with --pubkey too */
    snprintf(cmd, sizeof(cmd), "ls %s/audit-key-*.pem > /dev/null", logdir);
    ok(run(cmd) == 0, "public checkpoint key written");

    {
        EVP_PKEY  *other;

        other = EVP_EC_gen("P-256");
        pki_result_init(&res);
        st = pki_audit_verify(logdir, other, &rep, &res);
        ok(st == PKI_MALFORMED && strstr(rep.bad, "signature"),
           "checkpoints checked against the given key: %s", rep.bad);
        EVP_PKEY_free(other);

        f = fopen(keyfile, "r");
        other = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
        if (f) {
            fclose(f);
        }
        pki_result_init(&res);
        st = pki_audit_verify(logdir, other, &rep, &res);
        ok(st == PKI_OK, "and pass with the right key");
        EVP_PKEY_free(other);
    }

    /* a last line longer than the first tail read (4 KiB): the other
     * writer still finds seq and hash */
    {
        char  big[1001];

        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';

        memset(&ev, 0, sizeof(ev));
        ev.type = PKI_EV_ISSUE;
        ev.status = PKI_OK;
        ev.protocol = big;
        ev.operation = big;
        ev.ca = big;
        ev.template_name = big;
        ev.subject = big;
        ev.requester = big;
        ev.client = big;
        pki_result_init(&res);
        ok(pki_audit_append(shared_log, &ev, 1, &res) == PKI_OK,
           "a 7 KiB entry");
        ok(append(b, "EF", 1) == PKI_OK, "the other writer appends after it");
        st = verify(logdir, &rep);
        ok(st == PKI_OK, "and the chain holds (%s)", rep.bad);
    }

    /* the syncer thread: deferred appends become durable without the
     * appending thread waiting, and the notify callback says so */
    {
        int                 n;
        unsigned long long  ticket;

        pki_result_init(&res);
        ok(pki_audit_syncer_start(shared_log, notified, &notify_count, &res)
           == PKI_OK, "syncer started");
        pki_result_init(&res);
        ok(pki_audit_syncer_start(shared_log, notified, &notify_count, &res)
           != PKI_OK, "a second syncer is refused");

        pki_audit_set_default(shared_log);
        pki_audit_set_deferred(1);

        memset(&ev, 0, sizeof(ev));
        ev.type = PKI_EV_ISSUE;
        ev.status = PKI_OK;
        ev.ca = "ca1";
        ev.serial = "5EED";
        pki_result_init(&res);
        st = pki_event_emit(&ev, 1, &res);
        ticket = pki_audit_take_ticket();
        ok(st == PKI_OK && ticket > 0, "deferred append leaves a ticket");

        for (n = 0; n < 500 && pki_audit_synced(shared_log) < ticket; n++) {
            usleep(10000);
        }

        ok(pki_audit_synced(shared_log) >= ticket, "the syncer synced it");
        for (n = 0; n < 500 && __atomic_load_n(&notify_count,
                                                __ATOMIC_ACQUIRE) == 0; n++)
        {
            usleep(10000);
        }
        ok(__atomic_load_n(&notify_count, __ATOMIC_ACQUIRE) > 0,
           "and notified");

        /* many threads queue at once (rotation and checkpoints fall
         * inside the batches: max_size 4096, checkpoint every 7) */
        {
            int                 i;
            pthread_t           th[NTHREADS];
            unsigned long long  hi, *t;

            hi = 0;
            for (i = 0; i < NTHREADS; i++) {
                pthread_create(&th[i], NULL, qworker, (void *) (long) i);
            }
            for (i = 0; i < NTHREADS; i++) {
                pthread_join(th[i], (void **) &t);
                if (*t > hi) {
                    hi = *t;
                }
                free(t);
            }

            ok(hi >= ticket + NTHREADS * PER_THREAD,
               "%d queued entries, tickets up to %llu", NTHREADS * PER_THREAD,
               hi);
            for (n = 0; n < 500 && pki_audit_synced(shared_log) < hi; n++) {
                usleep(10000);
            }
            ok(pki_audit_synced(shared_log) >= hi, "all synced");
            st = verify(logdir, &rep);
            ok(st == PKI_OK, "the chain holds (%s)", rep.bad);
        }

        /* a log that cannot be written holds the answers back (fail
         * closed), and the queued entry is written once it can be */
        {
            char  p1[600], p2[600];

            snprintf(p1, sizeof(p1), "%s/audit.log", logdir);
            snprintf(p2, sizeof(p2), "%s/audit.away", logdir);
            ok(rename(p1, p2) == 0 && mkdir(p1, 0700) == 0,
               "audit.log is a directory now");

            ev.serial = "FA11ED";
            pki_result_init(&res);
            st = pki_event_emit(&ev, 1, &res);
            ticket = pki_audit_take_ticket();
            ok(st == PKI_OK && ticket > 0, "queued");
            usleep(300000);
            ok(pki_audit_synced(shared_log) < ticket,
               "not durable: its answer waits");

            ok(rmdir(p1) == 0 && rename(p2, p1) == 0, "audit.log is back");
            for (n = 0; n < 500 && pki_audit_synced(shared_log) < ticket;
                 n++)
            {
                usleep(10000);
            }
            ok(pki_audit_synced(shared_log) >= ticket,
               "the syncer wrote it after all");
            st = verify(logdir, &rep);
            ok(st == PKI_OK, "the chain holds (%s)", rep.bad);
        }

        /* stopping the syncer writes what is queued */
        {
            unsigned long long  before;

            st = verify(logdir, &rep);
            before = rep.last_seq;
            ev.serial = "5709";
            pki_result_init(&res);
            st = pki_event_emit(&ev, 1, &res);
            (void) pki_audit_take_ticket();
            pki_audit_set_deferred(0);
            pki_audit_set_default(NULL);
            pki_audit_syncer_stop(shared_log);
            st = verify(logdir, &rep);
            ok(st == PKI_OK && rep.last_seq > before,
               "the syncer wrote the queue before it stopped");
        }

        pki_audit_syncer_stop(shared_log);
        ok(1, "syncer stopped (twice is harmless)");
    }

    /* one sync for all writers: DIR/audit.lock records the inode and the
     * size the last fdatasync covered; a torn line cut off lowers it */
    {
        int                  fd;
        char                 dir2[300], path[400], *lines, *last;
        FILE                *f;
        size_t               n;
        pki_audit_t         *x, *y;
        struct stat          st;
        unsigned long long   rec[4];
        pki_audit_conf_t     c2;

        snprintf(dir2, sizeof(dir2), "%s/log2", tdir);
        mkdir(dir2, 0700);
        memset(&c2, 0, sizeof(c2));
        c2.dir = dir2;
        pki_result_init(&res);
        x = pki_audit_open(&c2, &res);
        pki_result_init(&res);
        y = pki_audit_open(&c2, &res);
        ok(x != NULL && y != NULL, "two writers on a new directory");

#define READ_REC()                                                          \
        do {                                                                \
            memset(rec, 0, sizeof(rec));                                    \
            snprintf(path, sizeof(path), "%s/audit.lock", dir2);            \
            f = fopen(path, "r");                                           \
            if (f != NULL) {                                                \
                n = fread(rec, 1, sizeof(rec), f);                          \
                (void) n;                                                   \
                fclose(f);                                                  \
            }                                                               \
            snprintf(path, sizeof(path), "%s/audit.log", dir2);             \
            memset(&st, 0, sizeof(st));                                     \
            stat(path, &st);                                                \
        } while (0)

        __atomic_store_n(&dir_syncs, 0, __ATOMIC_RELAXED);
        ok(append(x, "5A", 1) == PKI_OK, "a durable append");
        ok(__atomic_load_n(&dir_syncs, __ATOMIC_RELAXED) > 0,
           "audit.log made: its directory synced");
        __atomic_store_n(&dir_syncs, 0, __ATOMIC_RELAXED);
        ok(append(y, "5A0", 1) == PKI_OK
           && __atomic_load_n(&dir_syncs, __ATOMIC_RELAXED) == 0,
           "  not again by a writer that finds it");
        READ_REC();
        ok(rec[0] == 0x31636e7973696b70ULL
           && rec[2] == (unsigned long long) st.st_ino
           && rec[3] == (unsigned long long) st.st_size,
           "the sync record names audit.log and its synced size");

        ok(append(y, "5B", 0) == PKI_OK && append(x, "5C", 0) == PKI_OK,
           "both write");
        pki_result_init(&res);
        ok(pki_audit_sync(x, &res) == PKI_OK, "one syncs");
        READ_REC();
        ok(rec[3] == (unsigned long long) st.st_size,
           "its sync covers the other's line too");
        pki_result_init(&res);
        ok(pki_audit_sync(y, &res) == PKI_OK, "the other's sync is covered");

        /* a writer died in the middle of a line, and a sync covered the
         * torn bytes */
        ok(append(x, "5D", 0) == PKI_OK, "a line");
        fd = open(path, O_WRONLY | O_APPEND);
        ok(fd >= 0 && write(fd, "{\"seq\":99999,\"torn", 18) == 18,
           "a torn line");
        if (fd >= 0) {
            close(fd);
        }
        pki_result_init(&res);
        ok(pki_audit_sync(x, &res) == PKI_OK, "a sync");
        READ_REC();
        ok(rec[3] == (unsigned long long) st.st_size,
           "the record covers the torn bytes");

        ok(append(y, "5E", 0) == PKI_OK, "the next writer cuts them off");
        READ_REC();
        lines = NULL;
        f = fopen(path, "r");
        last = NULL;
        n = 0;
        if (f != NULL) {
            char  *l = NULL;
            size_t cap = 0;

            while (getline(&l, &cap, f) > 0) {
                free(last);
                last = strdup(l);
            }
            free(l);
            fclose(f);
        }
        ok(last != NULL && strstr(last, "\"5E\"") != NULL
           && rec[3] + strlen(last) <= (unsigned long long) st.st_size,
           "and the record no longer covers where its line went");
        free(last);
        free(lines);

        ok(append(y, "5F", 1) == PKI_OK, "a durable append after it");
        READ_REC();
        ok(rec[3] == (unsigned long long) st.st_size, "is covered");
        ok(verify(dir2, &rep) == PKI_OK, "and the log verifies (%s)",
           rep.bad);

#undef READ_REC
        pki_audit_close(x);
        pki_audit_close(y);
    }

    /* a batch whose write fails part way (the disk fills: a file size
     * limit) leaves its first lines in the file: the retry writes the
     * rest only, each entry once */
    {
        int                  lfd, n, dups, missing;
        char                 dir6[300], path[400], ser[64], *l, pad[200];
        size_t               cap;
        FILE                *lf;
        struct stat          sb;
        struct rlimit        rl, old;
        pki_audit_t         *x;
        pki_audit_conf_t     c6;
        unsigned long long   last;
        static unsigned char seen[1000];

        signal(SIGXFSZ, SIG_IGN);
        snprintf(dir6, sizeof(dir6), "%s/log6", tdir);
        mkdir(dir6, 0700);
        memset(&c6, 0, sizeof(c6));
        c6.dir = dir6;
        pki_result_init(&res);
        x = pki_audit_open(&c6, &res);
        pki_result_init(&res);
        ok(x != NULL && pki_audit_syncer_start(x, NULL, NULL, &res)
           == PKI_OK, "a log with its syncer");
        pki_audit_set_default(x);
        pki_audit_set_deferred(1);

        memset(pad, 'p', sizeof(pad) - 1);
        pad[sizeof(pad) - 1] = '\0';
        memset(&ev, 0, sizeof(ev));
        ev.type = PKI_EV_REVOKE;
        ev.status = PKI_OK;
        ev.ca = "ca1";
        ev.subject = pad;
        ev.serial = "first";
        pki_result_init(&res);
        (void) pki_event_emit(&ev, 1, &res);
        last = pki_audit_take_ticket();
        for (n = 0; n < 500 && !pki_audit_ticket_done(x, last); n++) {
            usleep(10000);
        }

        /* another process holds the log while 1000 entries queue */
        snprintf(path, sizeof(path), "%s/audit.lock", dir6);
        lfd = open(path, O_RDWR);
        ok(lfd >= 0 && flock(lfd, LOCK_EX) == 0, "the log held");
        for (n = 0; n < 1000; n++) {
            snprintf(ser, sizeof(ser), "D%04d", n);
            ev.serial = ser;
            pki_result_init(&res);
            (void) pki_event_emit(&ev, 1, &res);
            last = pki_audit_take_ticket();
        }
        usleep(100000);

        snprintf(path, sizeof(path), "%s/audit.log", dir6);
        stat(path, &sb);
        getrlimit(RLIMIT_FSIZE, &old);
        rl = old;
        rl.rlim_cur = (rlim_t) sb.st_size + 100000;
        setrlimit(RLIMIT_FSIZE, &rl);
        flock(lfd, LOCK_UN);
        close(lfd);
        usleep(500000);
        ok(!pki_audit_ticket_done(x, last), "the disk is full: not done");

        setrlimit(RLIMIT_FSIZE, &old);
        for (n = 0; n < 500 && !pki_audit_ticket_done(x, last); n++) {
            usleep(10000);
        }
        ok(pki_audit_ticket_done(x, last), "space again: done");

        pki_audit_set_deferred(0);
        pki_audit_set_default(NULL);
        pki_audit_close(x);

        memset(seen, 0, sizeof(seen));
        dups = 0;
        lf = fopen(path, "r");
        l = NULL;
        cap = 0;
        while (lf != NULL && getline(&l, &cap, lf) > 0) {
            char  *p = strstr(l, "\"serial\":\"D");

            if (p != NULL) {
                n = atoi(p + 11);
                if (n >= 0 && n < 1000 && seen[n]++) {
                    dups++;
                }
            }
        }
        free(l);
        if (lf != NULL) {
            fclose(lf);
        }
        for (missing = 0, n = 0; n < 1000; n++) {
            missing += !seen[n];
        }
        ok(dups == 0 && missing == 0, "each entry once: %d written twice, "
           "%d missing", dups, missing);
        st = verify(dir6, &rep);
        ok(st == PKI_OK && rep.entries == 1001,
           "the log verifies, %llu entries (%s)", rep.entries, rep.bad);
    }

    /* with the auditor's key and limits: entries after the last signed
     * checkpoint are bounded (a log cut back to an earlier checkpoint
     * with entries added, by a writer without the key) */
    {
        char          dir5[300];
        EVP_PKEY     *pk;
        pki_audit_t  *x;
        pki_audit_limits_t  lim;
        pki_audit_conf_t    c5;

        f = fopen(keyfile, "r");
        pk = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
        if (f) {
            fclose(f);
        }

        snprintf(dir5, sizeof(dir5), "%s/log5", tdir);
        mkdir(dir5, 0700);
        memset(&c5, 0, sizeof(c5));
        c5.dir = dir5;

        /* no key: entries, no checkpoint */
        pki_result_init(&res);
        x = pki_audit_open(&c5, &res);
        ok(x != NULL && append(x, "5101", 1) == PKI_OK
           && append(x, "5102", 1) == PKI_OK, "two entries, unsigned");
        pki_audit_close(x);

        pki_result_init(&res);
        ok(pki_audit_verify(dir5, NULL, &rep, &res) == PKI_OK,
           "without the key: intact");
        pki_result_init(&res);
        st = pki_audit_verify(dir5, pk, &rep, &res);
        ok(st == PKI_OK, "with it and no limits: intact, nothing signed "
           "yet (%s)", rep.bad);
        memset(&lim, 0, sizeof(lim));
        lim.max_unsigned = 1;
        pki_result_init(&res);
        st = pki_audit_verify_limits(dir5, pk, &lim, &rep, &res);
        ok(st == PKI_MALFORMED, "with at most 1 unsigned: refused (%s)",
           rep.bad);

        /* a checkpoint, then three entries of a writer without the key */
        c5.key = key;
        pki_result_init(&res);
        x = pki_audit_open(&c5, &res);
        ok(x != NULL && append(x, "5103", 1) == PKI_OK
           && pki_audit_checkpoint(x, &res) == PKI_OK, "a signed checkpoint");
        pki_audit_close(x);

        c5.key = NULL;
        pki_result_init(&res);
        x = pki_audit_open(&c5, &res);
        ok(x != NULL && append(x, "F001", 1) == PKI_OK
           && append(x, "F002", 1) == PKI_OK
           && append(x, "F003", 1) == PKI_OK, "three entries after it");
        pki_audit_close(x);

        pki_result_init(&res);
        ok(pki_audit_verify(dir5, pk, &rep, &res) == PKI_OK
           && rep.unsigned_tail == 3, "without limits: intact, 3 unsigned "
           "(%s)", rep.bad);

        memset(&lim, 0, sizeof(lim));
        lim.max_unsigned = 2;
        pki_result_init(&res);
        st = pki_audit_verify_limits(dir5, pk, &lim, &rep, &res);
        ok(st == PKI_MALFORMED && strstr(rep.bad, "3 entries after the "
                                         "last signed checkpoint") != NULL,
           "more than allowed: refused (%s)", rep.bad);

        lim.max_unsigned = 0;
        lim.max_unsigned_seconds = 1;
        sleep(2);
        c5.key = NULL;
        pki_result_init(&res);
        x = pki_audit_open(&c5, &res);
        ok(x != NULL && append(x, "F004", 1) == PKI_OK, "one more, 2 s on");
        pki_audit_close(x);
        pki_result_init(&res);
        st = pki_audit_verify_limits(dir5, pk, &lim, &rep, &res);
        ok(st == PKI_MALFORMED && strstr(rep.bad, "s past it") != NULL,
           "past the period: refused (%s)", rep.bad);

        /* the log cut back to that checkpoint, its time moved to now and
         * its hash made again (no key needed), audit.head to match: the
         * signature covers the time, so the age bound is not fooled (it
         * covered seq and prev alone: the log passed) */
        {
            FILE       *f;
            char        path5[400], line[4096], ck[4096], now[40], *t, *h;
            char        hex[65];
            size_t      k;
            time_t      tnow;
            struct tm   tm;
            unsigned char  md[32];

            snprintf(path5, sizeof(path5), "%s/audit.log", dir5);
            ck[0] = '\0';
            f = fopen(path5, "r");
            while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
                if (strstr(line, "\"type\":\"checkpoint\"") != NULL) {
                    snprintf(ck, sizeof(ck), "%s", line);
                }
            }
            if (f != NULL) {
                fclose(f);
            }

            tnow = time(NULL);
            gmtime_r(&tnow, &tm);
            strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%S.000Z", &tm);
            t = strstr(ck, "\"time\":\"");
            h = strstr(ck, ",\"hash\":\"");
            if (ok(t != NULL && h != NULL && strlen(h) > 11 + 64,
                   "the signed checkpoint's line")) {
                memcpy(t + 8, now, strlen(now));
                SHA256((unsigned char *) ck, (size_t) (h - ck), md);
                for (k = 0; k < 32; k++) {
                    snprintf(hex + 2 * k, 3, "%02x", md[k]);
                }
                memcpy(h + 9, hex, 64);

                f = fopen(path5, "r");
                {
                    FILE  *o;
                    char   tmp[420];

                    snprintf(tmp, sizeof(tmp), "%s.new", path5);
                    o = fopen(tmp, "w");
                    while (f != NULL && o != NULL
                           && fgets(line, sizeof(line), f) != NULL)
                    {
                        if (strstr(line, "\"type\":\"checkpoint\"") != NULL
                            && strncmp(line, ck, 12) == 0)
                        {
                            fputs(ck, o);
                            break;
                        }
                        fputs(line, o);
                    }
                    if (o != NULL) {
                        fclose(o);
                    }
                    if (f != NULL) {
                        fclose(f);
                    }
                    ok(rename(tmp, path5) == 0, "log cut back to it, its "
                       "time now %s", now);
                }

                snprintf(line, sizeof(line), "%s/audit.head", dir5);
                f = fopen(line, "w");
                if (f != NULL) {
                    fputs(ck, f);
                    fclose(f);
                }

                pki_result_init(&res);
                st = pki_audit_verify_limits(dir5, pk, &lim, &rep, &res);
                ok(st == PKI_MALFORMED
                   && strstr(rep.bad, "bad signature") != NULL,
                   "its time moved: bad signature (%s)", rep.bad);
            }
        }

        /* a log written again without the key (no checkpoint at all,
         * audit.head gone): the age bound counts from its first entry (it
         * did not count at all: the log passed) */
        {
            char  dir6[300];

            snprintf(dir6, sizeof(dir6), "%s/log6", tdir);
            mkdir(dir6, 0700);
            c5.dir = dir6;
            c5.key = NULL;
            pki_result_init(&res);
            x = pki_audit_open(&c5, &res);
            ok(x != NULL && append(x, "F601", 1) == PKI_OK,
               "unsigned log: an entry");
            sleep(2);
            ok(x != NULL && append(x, "F602", 1) == PKI_OK,
               "unsigned log: another, 2 s on");
            pki_audit_close(x);

            pki_result_init(&res);
            st = pki_audit_verify_limits(dir6, pk, &lim, &rep, &res);
            ok(st == PKI_MALFORMED
               && strstr(rep.bad, "no checkpoint signed by the key") != NULL,
               "unsigned log past the period: refused (%s)", rep.bad);
            c5.dir = dir5;
        }

        EVP_PKEY_free(pk);
    }

    /* a crash left zeros and a fragment that ends in a newline: the next
     * open cuts back to the last good line and says so; damage below what
     * was synced is not a crash and is not cut */
    {
        int           fd;
        char          dir4[300], path[400], zeros[512], want[64];
        struct stat   sb;
        pki_audit_t  *x, *y;
        pki_audit_conf_t  c4;
        static const char  frag[] = "\"serial\":\"AB\",\"hash\":\"00\"}\n";

        snprintf(dir4, sizeof(dir4), "%s/log4", tdir);
        mkdir(dir4, 0700);
        snprintf(path, sizeof(path), "%s/audit.log", dir4);
        memset(&c4, 0, sizeof(c4));
        c4.dir = dir4;

        pki_result_init(&res);
        x = pki_audit_open(&c4, &res);
        ok(x != NULL && append(x, "7A01", 1) == PKI_OK
           && append(x, "7A02", 1) == PKI_OK
           && append(x, "7A03", 1) == PKI_OK, "three durable entries");
        pki_audit_close(x);

        memset(zeros, 0, sizeof(zeros));
        fd = open(path, O_WRONLY | O_APPEND);
        ok(fd >= 0 && write(fd, zeros, sizeof(zeros)) == sizeof(zeros)
           && write(fd, frag, sizeof(frag) - 1) == sizeof(frag) - 1,
           "a crash tail: zeros and a fragment ending in a newline");
        if (fd >= 0) {
            close(fd);
        }

        pki_result_init(&res);
        y = pki_audit_open(&c4, &res);
        snprintf(want, sizeof(want), "cut %zu bytes",
                 sizeof(zeros) + sizeof(frag) - 1);
        ok(y != NULL && strstr(res.log, want) != NULL,
           "the next open cuts it off and says so: %s", res.log);
        ok(y != NULL && append(y, "7A04", 1) == PKI_OK,
           "appends work again");
        st = verify(dir4, &rep);
        ok(st == PKI_OK && rep.entries == 4, "the log verifies, 4 entries "
           "(%s)", rep.bad);
        pki_audit_close(y);

        /* the last line spoiled in place, below the synced size */
        memset(&sb, 0, sizeof(sb));
        stat(path, &sb);
        fd = open(path, O_WRONLY);
        ok(fd >= 0 && pwrite(fd, "XX", 2, sb.st_size - 20) == 2,
           "the last synced line spoiled");
        if (fd >= 0) {
            close(fd);
        }
        pki_result_init(&res);
        y = pki_audit_open(&c4, &res);
        ok(y == NULL && strstr(res.detail, "below what was synced") != NULL,
           "damage below the synced size: not opened (%s)", res.detail);
        pki_audit_close(y);
        {
            struct stat  sb2;

            ok(stat(path, &sb2) == 0 && sb2.st_size == sb.st_size,
               "  and nothing cut");
        }
    }

    /* a crash spoiled a line in the middle of the unsynced tail (zeros
     * where a power loss left a block unwritten), good lines after it:
     * the open scans from the synced size, not only the last two lines,
     * and cuts back to the line before the damage */
    {
        int                  fd, i;
        char                 dir6[300], path[400], serial[16], *buf;
        FILE                *f;
        size_t               n, off[11];
        pki_audit_t         *x;
        struct stat          sb;
        unsigned long long   rec[4];
        pki_audit_conf_t     c6;

        snprintf(dir6, sizeof(dir6), "%s/logmid", tdir);
        mkdir(dir6, 0700);
        snprintf(path, sizeof(path), "%s/audit.log", dir6);
        memset(&c6, 0, sizeof(c6));
        c6.dir = dir6;

        pki_result_init(&res);
        x = pki_audit_open(&c6, &res);
        for (i = 0; x != NULL && i < 10; i++) {
            snprintf(serial, sizeof(serial), "7C%02d", i);
            if (append(x, serial, i < 5) != PKI_OK) {
                break;
            }
        }
        ok(i == 10, "ten entries, the first five durable");
        pki_audit_close(x);

        buf = malloc(65536);
        n = 0;
        f = fopen(path, "r");
        if (f != NULL && buf != NULL) {
            n = fread(buf, 1, 65535, f);
        }
        if (f != NULL) {
            fclose(f);
        }
        off[0] = 0;
        for (i = 0; buf != NULL && i < 10; i++) {
            char  *nl = memchr(buf + off[i], '\n', n - off[i]);

            off[i + 1] = nl ? (size_t) (nl - buf) + 1 : n;
        }

        /* the record of the last sync: the first five lines, nothing
         * after them */
        memset(rec, 0, sizeof(rec));
        memset(&sb, 0, sizeof(sb));
        stat(path, &sb);
        rec[0] = 0x31636e7973696b70ULL;
        rec[1] = (unsigned long long) sb.st_dev;
        rec[2] = (unsigned long long) sb.st_ino;
        rec[3] = (unsigned long long) off[5];
        snprintf(path, sizeof(path), "%s/audit.lock", dir6);
        fd = open(path, O_WRONLY);
        ok(fd >= 0 && pwrite(fd, rec, sizeof(rec), 0) == sizeof(rec),
           "the sync record covers lines 1-5");
        if (fd >= 0) {
            close(fd);
        }

        snprintf(path, sizeof(path), "%s/audit.log", dir6);
        fd = open(path, O_WRONLY);
        if (buf != NULL) {
            memset(buf, 0, off[7] - off[6]);
        }
        ok(fd >= 0 && buf != NULL && n == (size_t) sb.st_size
           && pwrite(fd, buf, off[7] - off[6], (off_t) off[6])
              == (ssize_t) (off[7] - off[6]),
           "line 7 of 10 zeroed (its newline too), lines 8-10 intact");
        if (fd >= 0) {
            close(fd);
        }

        pki_result_init(&res);
        x = pki_audit_open(&c6, &res);
        memset(&sb, 0, sizeof(sb));
        stat(path, &sb);
        ok(x != NULL && (size_t) sb.st_size == off[6]
           && strstr(res.log, "damaged tail") != NULL,
           "the next open cuts back to 6 lines (%lld bytes, want %zu): %s",
           (long long) sb.st_size, off[6], res.log);
        st = verify(dir6, &rep);
        ok(st == PKI_OK && rep.entries == 6, "the log verifies, 6 entries "
           "(%s)", rep.bad);
        ok(x != NULL && append(x, "7C10", 1) == PKI_OK
           && verify(dir6, &rep) == PKI_OK && rep.entries == 7,
           "an append chains on from line 6 (%s)", rep.bad);
        pki_audit_close(x);
        free(buf);
    }

    /* a log that is configured but does not open fails closed: issuance
     * and revocation events are refused, the sink still counts them */
    {
        int          before;
        char         dir3[300], path[400];
        FILE        *f;
        pki_key_t   *shut;
        pki_audit_t *z;
        pki_audit_conf_t  c3;

        snprintf(dir3, sizeof(dir3), "%s/log3", tdir);
        mkdir(dir3, 0700);
        snprintf(path, sizeof(path), "%s/audit.lock", dir3);
        mkdir(path, 0700);

        memset(&c3, 0, sizeof(c3));
        c3.dir = dir3;
        pki_result_init(&res);
        z = pki_audit_open(&c3, &res);
        ok(z == NULL, "audit.lock not openable: the log does not open (%s)",
           res.detail);

        pki_audit_set_required(1);
        pki_event_set_sink(sink, NULL);
        before = sink_issue;

        memset(&ev, 0, sizeof(ev));
        ev.type = PKI_EV_ISSUE;
        ev.status = PKI_OK;
        ev.ca = "ca1";
        ev.serial = "0DEAD1";
        pki_result_init(&res);
        st = pki_event_emit(&ev, 1, &res);
        ok(st == PKI_UNAVAILABLE, "required log not open: issuance refused "
           "(%s)", res.detail);
        ok(sink_issue == before + 1, "  and still counted");

        ev.type = PKI_EV_REVOKE;
        pki_result_init(&res);
        ok(pki_event_emit(&ev, 1, &res) == PKI_UNAVAILABLE,
           "  revocation refused");

        ev.type = PKI_EV_REQUEST;
        ev.status = PKI_UNAUTHORIZED;
        pki_result_init(&res);
        ok(pki_event_emit(&ev, 1, &res) == PKI_OK,
           "  a refused request is not");

        pki_event_set_sink(NULL, NULL);
        pki_audit_set_required(0);

        ev.type = PKI_EV_ISSUE;
        ev.status = PKI_OK;
        pki_result_init(&res);
        ok(pki_event_emit(&ev, 1, &res) == PKI_OK,
           "no log required: nothing refused");

        /* a checkpoint key that did not open: the log opens, unsigned */
        rmdir(path);
        pki_result_init(&res);
        shut = pki_key_new(keyfile, NULL, &res);
        c3.key = shut;
        pki_result_init(&res);
        z = pki_audit_open(&c3, &res);
        ok(z != NULL && res.status == PKI_OK
           && strstr(res.log, "not signed") != NULL,
           "a checkpoint key not open: the log opens all the same (%s)",
           res.log);
        ok(z != NULL && append(z, "0C0FFE", 1) == PKI_OK
           && pki_audit_checkpoint(z, &res) == PKI_OK,
           "  appends, a checkpoint is no error");
        st = verify(dir3, &rep);
        ok(st == PKI_OK && rep.entries == 1 && rep.checkpoints == 0,
           "  nothing signed (%s)", rep.bad);
        pki_audit_close(z);
        pki_key_free(shut);

        /* audit.id checked without opening the log (nginx -t) */
        pki_result_init(&res);
        ok(pki_audit_check_dir(dir3, &res) == PKI_OK, "a good audit.id");
        snprintf(path, sizeof(path), "%s/audit.id", dir3);
        f = fopen(path, "w");
        if (f != NULL) {
            fputs("not-an-id\n", f);
            fclose(f);
        }
        pki_result_init(&res);
        ok(pki_audit_check_dir(dir3, &res) != PKI_OK
           && strstr(res.detail, "malformed") != NULL,
           "a malformed one: %s", res.detail);
        unlink(path);
        pki_result_init(&res);
        ok(pki_audit_check_dir(dir3, &res) == PKI_OK, "none (made later)");
    }

    /* a checkpoint after every entry while the disk is full: the batch's
     * checkpoint flushed its lines and failed, the batch was taken for
     * written (nothing left to flush), synced, and its entries dropped;
     * now the batch fails and every entry reaches the file once there is
     * room again */
    {
        int                  n, lines;
        char                 dir8[300], path8[400], ser8[16], *l;
        FILE                *lf;
        size_t               cap;
        pki_audit_t         *y;
        struct stat          sb8;
        struct rlimit        rl8, old8;
        pki_audit_conf_t     c8;
        unsigned long long   last8;

        signal(SIGXFSZ, SIG_IGN);
        snprintf(dir8, sizeof(dir8), "%s/log8", tdir);
        mkdir(dir8, 0700);
        memset(&c8, 0, sizeof(c8));
        c8.dir = dir8;
        c8.key = key;
        c8.checkpoint_every = 1;
        pki_result_init(&res);
        y = pki_audit_open(&c8, &res);
        pki_result_init(&res);
        ok(y != NULL && pki_audit_syncer_start(y, NULL, NULL, &res)
           == PKI_OK, "a log with a checkpoint after every entry");
        pki_audit_set_default(y);
        pki_audit_set_deferred(1);

        memset(&ev, 0, sizeof(ev));
        ev.type = PKI_EV_REVOKE;
        ev.status = PKI_OK;
        ev.ca = "ca1";
        ev.serial = "C000";
        pki_result_init(&res);
        (void) pki_event_emit(&ev, 1, &res);
        last8 = pki_audit_take_ticket();
        for (n = 0; n < 500 && !pki_audit_ticket_done(y, last8); n++) {
            usleep(10000);
        }

        /* the file may not grow: every write fails (EFBIG) */
        snprintf(path8, sizeof(path8), "%s/audit.log", dir8);
        stat(path8, &sb8);
        getrlimit(RLIMIT_FSIZE, &old8);
        rl8 = old8;
        rl8.rlim_cur = (rlim_t) sb8.st_size;
        setrlimit(RLIMIT_FSIZE, &rl8);

        for (n = 1; n <= 5; n++) {
            snprintf(ser8, sizeof(ser8), "C%03d", n);
            ev.serial = ser8;
            pki_result_init(&res);
            (void) pki_event_emit(&ev, 1, &res);
            last8 = pki_audit_take_ticket();
        }
        usleep(300000);
        ok(!pki_audit_ticket_done(y, last8), "  the disk is full: not done");

        setrlimit(RLIMIT_FSIZE, &old8);
        for (n = 0; n < 500 && !pki_audit_ticket_done(y, last8); n++) {
            usleep(10000);
        }
        ok(pki_audit_ticket_done(y, last8), "  room again: done");

        pki_audit_set_deferred(0);
        pki_audit_set_default(NULL);
        pki_audit_close(y);

        lf = fopen(path8, "r");
        l = NULL;
        cap = 0;
        lines = 0;
        while (lf != NULL && getline(&l, &cap, lf) > 0) {
            lines += strstr(l, "\"serial\":\"C") != NULL;
        }
        free(l);
        if (lf != NULL) {
            fclose(lf);
        }
        ok(lines == 6, "  every entry is in the file (%d of 6)", lines);
        st = verify(dir8, &rep);
        ok(st == PKI_OK, "  and the chain holds (%s)", rep.bad);
    }

    /* the backlog cap: the entries held for a file that takes nothing
     * (another process holds its lock) stop at max_backlog; a refusal's
     * entry is not held past it; everything held reaches the file */
    {
        int                  n, k, lfd7, full, lines;
        char                 dir7[300], path7[400], ser7[16], *l;
        FILE                *lf;
        size_t               bytes, held, max, cap;
        pki_audit_t         *y;
        pki_audit_conf_t     c7;
        unsigned long long   refused, last7;

        snprintf(dir7, sizeof(dir7), "%s/log7", tdir);
        mkdir(dir7, 0700);
        memset(&c7, 0, sizeof(c7));
        c7.dir = dir7;
        c7.max_backlog = 4096;
        pki_result_init(&res);
        y = pki_audit_open(&c7, &res);
        pki_result_init(&res);
        ok(y != NULL && pki_audit_syncer_start(y, NULL, NULL, &res)
           == PKI_OK, "a log with a 4k backlog cap");
        pki_audit_set_default(y);
        pki_audit_set_deferred(1);

        ok(!pki_audit_backlog(y, &bytes, &max, &refused) && bytes == 0
           && max == 4096 && refused == 0, "  nothing held");

        snprintf(path7, sizeof(path7), "%s/audit.lock", dir7);
        lfd7 = open(path7, O_RDWR);
        ok(lfd7 >= 0 && flock(lfd7, LOCK_EX) == 0, "  the log held");

        memset(&ev, 0, sizeof(ev));
        ev.type = PKI_EV_REVOKE;
        ev.status = PKI_OK;
        ev.ca = "ca1";
        last7 = 0;

        for (n = 0; n < 100 && !pki_audit_backlog(y, NULL, NULL, NULL); n++)
        {
            snprintf(ser7, sizeof(ser7), "B%03d", n);
            ev.serial = ser7;
            pki_result_init(&res);
            (void) pki_event_emit(&ev, 1, &res);
            last7 = pki_audit_take_ticket();
        }

        full = pki_audit_backlog(y, &bytes, NULL, NULL);
        ok(full && n < 100 && bytes >= 4096 && bytes < 4096 + 1024,
           "  full after %d entries (%zu bytes held)", n, bytes);

        ev.status = PKI_UNAVAILABLE;
        ev.serial = "refused";
        pki_result_init(&res);
        st = pki_event_emit(&ev, 0, &res);
        (void) pki_audit_backlog(y, &held, NULL, NULL);
        ok(st == PKI_UNAVAILABLE && pki_audit_take_ticket() == 0
           && held == bytes, "  a refusal's entry is not held (%s)",
           res.detail);

        flock(lfd7, LOCK_UN);
        close(lfd7);

        for (k = 0; k < 500 && !pki_audit_ticket_done(y, last7); k++) {
            usleep(10000);
        }
        full = pki_audit_backlog(y, &bytes, NULL, NULL);
        ok(pki_audit_ticket_done(y, last7) && !full && bytes == 0,
           "the file took them: nothing held (%zu)", bytes);

        pki_audit_set_deferred(0);
        pki_audit_set_default(NULL);
        pki_audit_close(y);

        snprintf(path7, sizeof(path7), "%s/audit.log", dir7);
        lf = fopen(path7, "r");
        l = NULL;
        cap = 0;
        lines = 0;
        while (lf != NULL && getline(&l, &cap, lf) > 0) {
            lines += strstr(l, "\"serial\":\"B") != NULL;
        }
        free(l);
        if (lf != NULL) {
            fclose(lf);
        }
        ok(lines == n, "  every entry held is in the file (%d of %d)",
           lines, n);
    }

    /* the checkpoint key fails after a signed checkpoint (a token away):
     * the checkpoint at rotation is not signed, the file rotates all the
     * same and every later entry is written (each was refused, the size
     * asking for a rotation again) */
    {
        int                n, fails9, said9;
        char               dir9[300], key9[300], ser9[16];
        pki_key_t         *k9;
        pki_audit_t       *x;
        pki_audit_conf_t   c9;

        snprintf(dir9, sizeof(dir9), "%s/log9", tdir);
        snprintf(key9, sizeof(key9), "%s/audit9.key", tdir);
        mkdir(dir9, 0700);
        k9 = make_key(key9);

        memset(&c9, 0, sizeof(c9));
        c9.dir = dir9;
        c9.key = k9;
        c9.max_size = 4096;
        pki_result_init(&res);
        x = (k9 != NULL) ? pki_audit_open(&c9, &res) : NULL;
        ok(x != NULL, "a log of 4096-byte files (%s)", res.detail);

        for (n = 0; x != NULL && n < 3; n++) {
            snprintf(ser9, sizeof(ser9), "D%04X", n);
            (void) append(x, ser9, 1);
        }

        pki_result_init(&res);
        ok(x != NULL && pki_audit_checkpoint(x, &res) == PKI_OK,
           "  3 entries and a signed checkpoint");

        pki_key_close(k9);

        fails9 = 0;
        said9 = 0;
        for (n = 3; x != NULL && n < 40; n++) {
            snprintf(ser9, sizeof(ser9), "D%04X", n);
            memset(&ev, 0, sizeof(ev));
            ev.type = PKI_EV_ISSUE;
            ev.status = PKI_OK;
            ev.protocol = "est";
            ev.operation = "enroll";
            ev.ca = "ca1";
            ev.serial = ser9;
            ev.subject = "CN=device-1,O=Example";
            ev.requester = "alice";
            pki_result_init(&res);
            if (pki_audit_append(x, &ev, 1, &res) != PKI_OK) {
                fails9++;
                diag("entry %d: %s", n + 1, res.detail);
            }
            said9 += strstr(res.log, "not signed") != NULL;
        }

        ok(fails9 == 0, "  the key closed: 37 more entries, %d refused",
           fails9);
        ok(said9 > 0, "  the unsigned rotation said so (%d times)", said9);
        pki_audit_close(x);

        snprintf(cmd, sizeof(cmd), "test $(ls %s/audit-0*.log | wc -l) "
                 "-ge 2", dir9);
        ok(run(cmd) == 0, "  the log rotated");

        st = verify(dir9, &rep);
        ok(st == PKI_OK && rep.entries == 41 && rep.checkpoints == 1
           && rep.unsigned_tail == 37,
           "  it verifies: %llu entries, %llu signed checkpoint(s), "
           "%llu after it (%s)", rep.entries, rep.checkpoints,
           rep.unsigned_tail, rep.bad);
        pki_key_free(k9);
    }

    /* a worker that exits while the file takes nothing (disk full):
     * its revocations' entries, in no Redis stream, were freed at close
     * without a word (their revocations committed); now each is told,
     * with its text, on stderr (pki_audit_close) or to the caller's
     * report (pki_audit_close_report); with room for a line and a part
     * (a write that fails part way), the line the file has whole is not
     * told, the others are */
    {
        int                  n, k, efd, pfd[2], said, whole, infile;
        char                 dir10[300], path10[400], ser10[32], *l, *p;
        char                 buf[4096];
        FILE                *lf;
        size_t               cap;
        ssize_t              got;
        pki_audit_t         *y;
        struct stat          sb10;
        struct rlimit        rl10, old10;
        pki_audit_conf_t     c10;
        unsigned long long   last10;

        static const char  *how[] = { "stderr", "report", "part written" };

        signal(SIGXFSZ, SIG_IGN);

        for (k = 0; k < 3; k++) {
            snprintf(dir10, sizeof(dir10), "%s/log10-%d", tdir, k);
            mkdir(dir10, 0700);
            memset(&c10, 0, sizeof(c10));
            c10.dir = dir10;
            pki_result_init(&res);
            y = pki_audit_open(&c10, &res);
            pki_result_init(&res);
            ok(y != NULL && pki_audit_syncer_start(y, NULL, NULL, &res)
               == PKI_OK, "exit with a full disk (%s)", how[k]);
            pki_audit_set_default(y);
            pki_audit_set_deferred(1);

            memset(&ev, 0, sizeof(ev));
            ev.type = PKI_EV_REVOKE;
            ev.status = PKI_OK;
            ev.ca = "ca1";
            ev.serial = "E000";
            pki_result_init(&res);
            (void) pki_event_emit(&ev, 1, &res);
            last10 = pki_audit_take_ticket();
            for (n = 0; n < 500 && !pki_audit_ticket_done(y, last10); n++) {
                usleep(10000);
            }

            snprintf(path10, sizeof(path10), "%s/audit.log", dir10);
            stat(path10, &sb10);
            getrlimit(RLIMIT_FSIZE, &old10);
            rl10 = old10;
            /* a line is about 300 bytes */
            rl10.rlim_cur = (rlim_t) sb10.st_size + (k == 2 ? 450 : 0);
            setrlimit(RLIMIT_FSIZE, &rl10);

            for (n = 1; n <= 3; n++) {
                snprintf(ser10, sizeof(ser10), "E%03d", n);
                ev.serial = ser10;
                pki_result_init(&res);
                (void) pki_event_emit(&ev, 1, &res);
                last10 = pki_audit_take_ticket();
            }
            usleep(200000);
            ok(!pki_audit_ticket_done(y, last10), "  not written");

            pki_audit_set_deferred(0);
            pki_audit_set_default(NULL);

            reported_n = 0;
            reported[0] = '\0';
            if (k == 0) {
                /* a pipe: a file would not grow either (RLIMIT_FSIZE) */
                fflush(stderr);
                efd = dup(2);
                if (pipe(pfd) != 0) {
                    pfd[0] = pfd[1] = -1;
                }
                dup2(pfd[1], 2);
                close(pfd[1]);
                pki_audit_close(y);
                fflush(stderr);
                dup2(efd, 2);
                close(efd);

                got = read(pfd[0], buf, sizeof(buf) - 1);
                buf[got > 0 ? got : 0] = '\0';
                close(pfd[0]);
                for (l = strtok(buf, "\n"); l != NULL;
                     l = strtok(NULL, "\n"))
                {
                    reported_add(l);
                }

            } else {
                pki_audit_close_report(y, reported_add_cb, NULL);
            }
            setrlimit(RLIMIT_FSIZE, &old10);

            /* the file as it is now */
            lf = fopen(path10, "r");
            l = NULL;
            cap = 0;
            buf[0] = '\0';
            while (lf != NULL && getline(&l, &cap, lf) > 0) {
                if (strlen(buf) + strlen(l) < sizeof(buf)) {
                    strcat(buf, l);
                }
            }
            free(l);
            if (lf != NULL) {
                fclose(lf);
            }

            said = 0;
            whole = 0;
            infile = 0;
            for (n = 1; n <= 3; n++) {
                snprintf(ser10, sizeof(ser10), "\"serial\":\"E%03d\"", n);
                p = strstr(reported, ser10);
                said += p != NULL;
                infile += strstr(buf, ser10) != NULL;
                if (p != NULL && strstr(buf, ser10) != NULL) {
                    said += 100;        /* both */
                }
            }
            for (p = reported; (p = strstr(p, "{\"time\":\"")) != NULL;
                 p++)
            {
                whole += strstr(p, "\"type\":\"revoke\"") != NULL
                         && strstr(p, ",\"pid\":") != NULL;
            }
            if (k < 2) {
                ok(said == 3 && reported_n == 3 && whole == 3,
                   "  close told each unwritten revocation with its text "
                   "(%d of 3, %d messages): %.200s", said, reported_n,
                   reported);
            } else {
                ok(infile >= 1 && said == 3 - infile
                   && reported_n == said && whole == said,
                   "  %d in the file, the %d others told, none twice "
                   "(%d messages)", infile, said, reported_n);
            }
            ok(strstr(reported, "E000") == NULL,
               "  not the one the file had");

            st = verify(dir10, &rep);
            ok(st == PKI_OK && rep.entries == (unsigned) (1 + infile),
               "  the log verifies: %llu entries (%s)", rep.entries,
               rep.bad);
        }
    }

    /* a field over 1024 bytes: cut, and the cut said in the value */
    {
        char          dir11[320], path11[340], *big, *l = NULL, *want;
        size_t        cap = 0;
        FILE         *lf;
        pki_audit_t  *z;
        int           found = 0;

        snprintf(dir11, sizeof(dir11), "%s/log11", tdir);
        mkdir(dir11, 0700);
        snprintf(path11, sizeof(path11), "%s/audit.log", dir11);

        memset(&conf, 0, sizeof(conf));
        conf.dir = dir11;
        pki_result_init(&res);
        z = pki_audit_open(&conf, &res);

        big = malloc(2001);
        want = malloc(1100);
        memset(big, 'A', 2000);
        big[2000] = '\0';
        memset(want, 'A', 1024);
        snprintf(want + 1024, 76, "...[cut at 1024 of 2000 bytes]\",");

        memset(&ev, 0, sizeof(ev));
        ev.type = PKI_EV_ISSUE;
        ev.status = PKI_OK;
        ev.protocol = "est";
        ev.operation = "enroll";
        ev.ca = "ca1";
        ev.serial = "CC11";
        ev.subject = big;
        pki_result_init(&res);
        ok(z != NULL && pki_audit_append(z, &ev, 1, &res) == PKI_OK,
           "an entry with a subject of 2000 bytes appended (%s)",
           res.detail);
        pki_audit_close(z);

        lf = fopen(path11, "r");
        while (lf != NULL && getline(&l, &cap, lf) > 0) {
            found |= strstr(l, "\"CC11\"") != NULL
                     && strstr(l, want) != NULL
                     && strstr(l, "AAAAA...[cut") - strstr(l, "AAAAA")
                        == 1024 - 5;
        }
        if (lf != NULL) {
            fclose(lf);
        }
        ok(found, "  its first 1024 bytes are logged, then \"...[cut at "
           "1024 of 2000 bytes]\"");
        st = verify(dir11, &rep);
        ok(st == PKI_OK, "  the log verifies (%s)", rep.bad);

        free(l);
        free(big);
        free(want);
    }

    a = shared_log;
    pki_audit_close(a);
    pki_audit_close(b);
    pki_key_free(key);

    snprintf(cmd, sizeof(cmd), "rm -rf %s", tdir);
    run(cmd);

    return done_testing();
}
