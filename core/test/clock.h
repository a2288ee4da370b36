/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A host clock that is off for the core unit tests: time() as the core
 * sees it (libpkicore.so binds to the test binary's, which is why it is
 * visible), clock_ahead seconds from the real clock, as a host whose
 * clock is not the store's.  Include it once, in the test's .c file.
 */

#ifndef PKI_TEST_CLOCK_H
#define PKI_TEST_CLOCK_H

#include <time.h>


static long  clock_ahead;       /* this host's clock vs real time */


__attribute__((visibility("default"))) time_t
time(time_t *t)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += clock_ahead;
    if (t != NULL) {
        *t = ts.tv_sec;
    }

    return ts.tv_sec;
}

#endif /* PKI_TEST_CLOCK_H */
