/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A minimal TAP producer for the core unit tests (run by prove through
 * t/00-core.t).  Each test binary calls ok()/is_status() any number of times
 * and returns done_testing() from main().
 */

#ifndef PKI_UNIT_H
#define PKI_UNIT_H

#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/time.h>

static int unit_n, unit_failed;

static __attribute__((unused)) int
ok(int cond, const char *fmt, ...)
{
    va_list  ap;

    unit_n++;
    printf("%s %d - ", cond ? "ok" : "not ok", unit_n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!cond) {
        unit_failed++;
    }
    fflush(stdout);
    return cond;
}

static __attribute__((unused)) void
diag(const char *fmt, ...)
{
    va_list  ap;

    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static __attribute__((unused)) void
skip_all(const char *why)
{
    printf("1..0 # SKIP %s\n", why);
    exit(0);
}

/* Wall-clock seconds, for the timing checks. */
static __attribute__((unused)) double
unit_now(void)
{
    struct timeval  tv;

    gettimeofday(&tv, NULL);
    return tv.tv_sec + tv.tv_usec / 1e6;
}

static __attribute__((unused)) int
done_testing(void)
{
    printf("1..%d\n", unit_n);
    return unit_failed ? 1 : 0;
}

static __attribute__((unused)) int
unit_is_status(int got, int want, const char *name)
{
    return ok(got == want, "%s (got %s, want %s)", name,
              pki_status_name((pki_status_t) got),
              pki_status_name((pki_status_t) want));
}

/* Evaluates each argument once. */
#define is_status(got, want, name)  unit_is_status((int) (got), (int) (want), name)

#endif /* PKI_UNIT_H */
