#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A worker's exit waits for the pool threads that ran a task of the
# modules (their hiredis connections and OpenSSL state are freed by their
# thread-specific destructors), not for every thread of the process.  A
# PKCS#11 library may keep a thread of its own for the whole life of the
# process; counting it made every worker's exit, at each reload, wait a
# second, warn, and end through _exit() (skipping the metrics history's
# last flush and the exit hooks of modules loaded later).  Here a
# preloaded shim starts such a thread in every process nginx forks.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep);
use PKITest;

my $t = PKITest->new;
$t->start_redis;

my $mark = $t->dir . '/foreign';
my ($shim, $err) = $t->build_shim('foreign_thread', <<"C", '-pthread');
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static void *
idle(void *arg)
{
    char   path[512];
    FILE  *f;

    (void) arg;
    snprintf(path, sizeof(path), "$mark.%d", (int) getpid());
    f = fopen(path, "w");
    if (f != NULL) {
        fclose(f);
    }
    for ( ;; ) {
        pause();
    }
    return NULL;
}

static void
child(void)
{
    pthread_t       t;
    pthread_attr_t  a;

    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    (void) pthread_create(&t, &a, idle, NULL);
    pthread_attr_destroy(&a);
}

__attribute__((constructor)) static void
init(void)
{
    pthread_atfork(NULL, NULL, child);
}
C
ok($shim, 'the shim builds') or $t->give_up("gcc: $err");

my $conf = $t->render_conf('--workers', 1, '--threads', 2);
my $master = $t->start_nginx($conf, preload => [$shim]);
my ($w) = $t->workers_of($master, 'worker');
ok($w, "one worker ($w)");

# pool threads run tasks of the module (they are waited for at the exit)
my @r;
for my $i (1 .. 6) {
    my ($r) = $t->enroll_serial("e$i");
    push @r, $r->{code};
}
is_deeply(\@r, [(200) x 6], 'six enrollments');
ok(-e "$mark.$w", 'the worker runs a thread of its own (the shim\'s)');
my $n = () = glob("/proc/$w/task/*");
cmp_ok($n, '>=', 3, "the worker has $n threads: main, pool, foreign");

$t->reload_nginx;
# (its exit may take a while: LeakSanitizer runs there under --sanitize;
# a wait for the foreign thread would show in the log, checked below)
my $gone;
for (1 .. 200) {
    last if ($gone = !kill(0, $w));
    sleep 0.05;
}
ok($gone, 'the old worker is gone after the reload');
my ($w2) = $t->workers_of($master, 'worker');
ok($w2 && $w2 != $w, "a new worker ($w2)");
ok(-e "$mark.$w2", 'which runs the foreign thread too');

my ($r) = $t->enroll_serial('after');
is($r->{code}, 200, 'the new worker enrolls');

my $log = $t->wait_log(qr/worker process $w exited/, 10) // '';
like($log, qr/worker process $w exited with code 0/,
     'the old worker exited with code 0 (an _exit(0) too: the two checks '
     . 'below tell them apart)');
unlike($log, qr/pki: worker threads still running at exit/,
       'no wait for the foreign thread');
unlike($log, qr/pki: exit with pool threads still running/,
       'the exit went the whole way (no _exit)');

$t->stop_nginx;
$log = slurp($t->error_log) // '';
unlike($log, qr/pki: worker threads still running at exit/,
       'at the stop neither');
unlike($log, qr/exited on signal/, 'no process died of a signal');

done_testing();
