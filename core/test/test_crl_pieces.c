/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A stored CRL is written in pieces, each within the store's timeout: a
 * CRL larger than what the link carries within one timeout is stored and
 * read back whole.  Needs PKI_TEST_REDIS_SOCK (a running redis-server's
 * unix socket).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "pki.h"
#include "test/unit.h"
#include "test/fixture.h"
#include "test/proxy.h"


#define CRL_LEN  (4L * 1024 * 1024 + 12345)


static pki_status_t
put(pki_redis_t *r, const char *ca, const pki_crl_info_t *c, int *stored,
    pki_result_t *res)
{
    int           won;
    pki_status_t  st;
    pki_result_t  ures;

    st = pki_crl_lock(r, ca, "pieces", 10000, &won, res);
    if (st != PKI_OK || !won) {
        return st != PKI_OK ? st : pki_fail(res, PKI_INTERNAL, "locked");
    }

    st = pki_crl_store_put(r, ca, c, "pieces", stored, res);

    pki_result_init(&ures);
    (void) pki_crl_unlock(r, ca, "pieces", &ures);

    return st;
}


int
main(void)
{
    int             stored;
    char            dir[64], ns[64];
    double          t0, dt;
    proxy_t         px;
    long long       revgen;
    const char     *sock;
    pki_redis_t    *slow, *fast;
    pki_result_t    res;
    pki_status_t    st;
    pki_crl_info_t  c, back;

    sock = getenv("PKI_TEST_REDIS_SOCK");
    if (sock == NULL || sock[0] == '\0') {
        skip_all("PKI_TEST_REDIS_SOCK not set");
    }

    pki_init();

    snprintf(dir, sizeof(dir), "/tmp/crlpieces.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        skip_all("mkdtemp failed");
    }
    snprintf(ns, sizeof(ns), "crlpieces%ld:", (long) getpid());

    if (!ok(proxy_start(&px, sock, dir, "px.sock"), "proxy started")) {
        return done_testing();
    }

    /* 2 MB a second to Redis: a 4 MB SET takes 2 s, a 1 MB piece 0.5 s */
    proxy_rate(&px, 2048);

    slow = fx_redis(px.path, ns, 1000, &res);
    fast = fx_redis(sock, ns, 1000, &res);
    if (!ok(slow != NULL && fast != NULL, "stores")) {
        return done_testing();
    }

    memset(&c, 0, sizeof(c));
    c.len = CRL_LEN;
    c.der = malloc(c.len);
    c.number = 7;
    c.revgen = 3;
    c.this_update = time(NULL);
    c.next_update = c.this_update + 3600;
    if (c.der == NULL || RAND_bytes(c.der, (int) c.len) != 1) {
        free(c.der);
        ok(0, "no memory");
        return done_testing();
    }

    pki_result_init(&res);
    stored = 0;
    t0 = unit_now();
    st = put(slow, "big", &c, &stored, &res);
    dt = unit_now() - t0;
    ok(st == PKI_OK && stored == 1, "a 4 MB CRL stored over a link that "
       "carries 2 MB within the 1 s timeout (%.2f s) [%s %s]", dt,
       res.detail, res.log);

    memset(&back, 0, sizeof(back));
    pki_result_init(&res);
    st = pki_crl_store_read(fast, "big", 0, &revgen, &back, &res);
    ok(st == PKI_OK && back.number == 7 && back.len == c.len
       && back.der != NULL && memcmp(back.der, c.der, c.len) == 0,
       "read back whole, byte for byte (%zu of %zu bytes) [%s]", back.len,
       c.len, res.detail);
    free(back.der);

    /* a smaller one replaces it in one piece */
    c.len = 1000;
    c.number = 8;
    c.revgen = 4;
    pki_result_init(&res);
    st = put(slow, "big", &c, &stored, &res);
    memset(&back, 0, sizeof(back));
    pki_result_init(&res);
    if (st == PKI_OK) {
        st = pki_crl_store_read(fast, "big", 0, &revgen, &back, &res);
    }
    ok(st == PKI_OK && back.number == 8 && back.len == 1000
       && memcmp(back.der, c.der, 1000) == 0, "a one-piece CRL replaces "
       "it [%s]", res.detail);
    free(back.der);

    free(c.der);
    pki_redis_free(slow);
    pki_redis_free(fast);

    unlink(px.path);
    rmdir(dir);

    return done_testing();
}
