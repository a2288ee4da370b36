/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A proxy between a store and the test Redis (unix sockets) for the core
 * unit tests, armed to lose the answer to one command: the first command
 * whose bytes contain marker reaches Redis (which runs it), then its
 * answer is swallowed (but PX_NOSEND).  Per mode:
 *
 *   PX_DROP   the client's connection closed at once (hiredis sees EOF and
 *             sends the command again on a new connection);
 *   PX_HOLD   closed after hold_ms (the client times out first);
 *   PX_CUT    closed at once, and every later connection refused (Redis is
 *             gone for the client);
 *   PX_STALL  Redis stalls: from then on nothing is answered and no other
 *             command reaches it, on any connection (old or new, which are
 *             accepted), until proxy_arm() again;
 *   PX_SLOW   Redis slows down: from then on every answer, on any
 *             connection, comes hold_ms late, until proxy_arm() again;
 *   PX_NOSEND the client's connection closed before the command reaches
 *             Redis (it never runs; hiredis sends it again).
 *
 * proxy_rate() limits what reaches Redis to a number of KB a second (a
 * slow link), on every connection, until proxy_rate(p, 0).
 *
 * Include after test/unit.h.
 */

#ifndef PKI_TEST_PROXY_H
#define PKI_TEST_PROXY_H

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>


enum { PX_DROP = 1, PX_HOLD, PX_CUT, PX_STALL, PX_SLOW, PX_NOSEND };

typedef struct {
    char             path[108];
    const char      *up;
    int              lfd;
    pthread_mutex_t  lock;
    char             marker[64];
    int              mode;
    int              hold_ms;
    int              fired;
    int              down;
    int              stalled;     /* PX_STALL fired */
    int              slow_ms;     /* PX_SLOW fired */
    int              rate_kbs;    /* proxy_rate() */
} proxy_t;

typedef struct {
    proxy_t  *p;
    int       cfd;
} proxy_conn_t;


static int
unix_connect(const char *path)
{
    int                 fd;
    struct sockaddr_un  sa;

    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);

    if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }

    return fd;
}


static void *
proxy_conn(void *arg)
{
    int            ufd, cfd, armed, mine, stalled, slow;
    char           buf[65536];
    ssize_t        n;
    proxy_t       *p;
    struct pollfd  pf[2];

    p = ((proxy_conn_t *) arg)->p;
    cfd = ((proxy_conn_t *) arg)->cfd;
    free(arg);
    armed = 0;
    mine = 0;

    ufd = unix_connect(p->up);
    if (ufd < 0) {
        close(cfd);
        return NULL;
    }

    for ( ;; ) {
        pf[0].fd = cfd;
        pf[0].events = POLLIN;
        pf[1].fd = ufd;
        pf[1].events = POLLIN;

        if (poll(pf, 2, -1) < 0) {
            break;
        }

        if (pf[0].revents) {
            n = read(cfd, buf, sizeof(buf));
            if (n <= 0) {
                break;
            }

            pthread_mutex_lock(&p->lock);
            if (p->marker[0] != '\0'
                && memmem(buf, (size_t) n, p->marker, strlen(p->marker))
                   != NULL)
            {
                p->marker[0] = '\0';
                p->fired = 1;

                if (p->mode == PX_NOSEND) {
                    pthread_mutex_unlock(&p->lock);
                    break;              /* closed before Redis saw it */
                }
                if (p->mode == PX_STALL) {
                    p->stalled = 1;
                    mine = 1;           /* the rest of the command too */

                } else if (p->mode == PX_SLOW) {
                    p->slow_ms = p->hold_ms;

                } else {
                    armed = p->mode;
                }
            }
            stalled = p->stalled;
            pthread_mutex_unlock(&p->lock);

            if (stalled && !mine) {
                continue;               /* never reaches Redis */
            }

            if (write(ufd, buf, (size_t) n) != n) {
                break;
            }

            pthread_mutex_lock(&p->lock);
            slow = p->rate_kbs;
            pthread_mutex_unlock(&p->lock);

            if (slow) {
                usleep((useconds_t) (n * 1000000LL / (slow * 1024LL)));
            }
        }

        if (pf[1].revents) {
            n = read(ufd, buf, sizeof(buf));
            if (n <= 0) {
                break;
            }

            if (armed) {
                if (armed == PX_HOLD) {
                    usleep(p->hold_ms * 1000);
                }
                if (armed == PX_CUT) {
                    p->down = 1;
                }
                break;
            }

            pthread_mutex_lock(&p->lock);
            stalled = p->stalled;
            slow = p->slow_ms;
            pthread_mutex_unlock(&p->lock);

            if (stalled) {
                continue;               /* never answered */
            }

            if (slow) {
                usleep(slow * 1000);
            }

            if (write(cfd, buf, (size_t) n) != n) {
                break;
            }
        }
    }

    close(ufd);
    close(cfd);

    return NULL;
}


static void *
proxy_main(void *arg)
{
    int            fd;
    proxy_t       *p = arg;
    pthread_t      tid;
    proxy_conn_t  *c;

    for ( ;; ) {
        fd = accept(p->lfd, NULL, NULL);
        if (fd < 0) {
            return NULL;
        }

        if (p->down) {
            close(fd);
            continue;
        }

        c = malloc(sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->p = p;
        c->cfd = fd;

        if (pthread_create(&tid, NULL, proxy_conn, c) != 0) {
            free(c);
            close(fd);
            continue;
        }
        pthread_detach(tid);
    }
}


/* Starts a proxy to the Redis at up, listening at dir/name. */
static __attribute__((unused)) int
proxy_start(proxy_t *p, const char *up, const char *dir, const char *name)
{
    pthread_t           tid;
    struct sockaddr_un  sa;

    memset(p, 0, sizeof(*p));
    p->up = up;
    pthread_mutex_init(&p->lock, NULL);
    snprintf(p->path, sizeof(p->path), "%s/%s", dir, name);

    p->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p->path);
    unlink(p->path);

    if (p->lfd < 0
        || bind(p->lfd, (struct sockaddr *) &sa, sizeof(sa)) != 0
        || listen(p->lfd, 64) != 0
        || pthread_create(&tid, NULL, proxy_main, p) != 0)
    {
        return 0;
    }

    pthread_detach(tid);

    return 1;
}


/* Arms p (marker "": disarmed); ends a stall or a slowdown. */
static __attribute__((unused)) void
proxy_arm(proxy_t *p, const char *marker, int mode, int hold_ms)
{
    pthread_mutex_lock(&p->lock);
    snprintf(p->marker, sizeof(p->marker), "%s", marker);
    p->mode = mode;
    p->hold_ms = hold_ms;
    p->fired = 0;
    p->down = 0;
    p->stalled = 0;
    p->slow_ms = 0;
    pthread_mutex_unlock(&p->lock);
}


/* Limits what reaches Redis to kbs KB a second (0: no limit). */
static __attribute__((unused)) void
proxy_rate(proxy_t *p, int kbs)
{
    pthread_mutex_lock(&p->lock);
    p->rate_kbs = kbs;
    pthread_mutex_unlock(&p->lock);
}


#endif /* PKI_TEST_PROXY_H */
