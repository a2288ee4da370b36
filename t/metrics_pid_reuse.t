#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# pki_thread_tasks_in_flight when a dead worker's pid is taken by another
# process.  A worker of the old generation, shutting down after a reload
# with requests waiting on Redis, is killed (SIGKILL: the OOM killer, an
# operator): its entry keeps its count, and the new worker took another
# one.  The entry's process was judged alive by kill(pid, 0) alone, so
# once any process got that pid (here one of ours, through
# /proc/sys/kernel/ns_last_pid) the dead worker's count stayed in the
# gauge for as long as that process ran.  Now the entry also holds its
# process's start time (/proc/PID/stat), which the new process does not
# share.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use POSIX ();
use PKITest;

plan(skip_all => 'needs root (/proc/sys/kernel/ns_last_pid)')
    if $> != 0 || !-w '/proc/sys/kernel/ns_last_pid';

my $t = PKITest->new;
$t->start_redis;

my $conf = $t->render_conf('--workers', 1, '--redis-timeout', '30s');
$conf =~ s/(pki_thread_pool pki;)/$1\n    pki_metrics_interval 1s;/
    or die 'no pki_thread_pool line';
$t->start_nginx($conf);
my $master = $t->{children}{nginx};
my ($old) = $t->workers_of($master, 'worker');
my $https = 'https://127.0.0.1:' . $t->https_port;

sub in_flight {
    return $t->metrics_scrape->{pki_thread_tasks_in_flight} // -1;
}

# a request for an ACME nonce in a child of ours (its pid): with Redis
# stopped, it holds a thread task until Redis answers
sub nonce_curl {
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open(STDOUT, '>', '/dev/null');
        open(STDERR, '>&', \*STDOUT);
        exec('curl', '-sS', '--max-time', '60', '--cacert',
             $t->pki . '/root.pem', '-I', "$https/acme/new-nonce")
            or POSIX::_exit(127);
    }
    return $pid;
}

is(in_flight(), 0, 'idle: 0 in flight');

# Redis stopped: each request holds a thread task of the old worker
my $rpid = $t->{children}{redis};
kill('STOP', $rpid);
my @curls = map { nonce_curl() } 1 .. 4;
ok(PKITest::wait_until(10, sub { in_flight() == 4 }),
   'four requests waiting on Redis: 4 in flight');

# a reload: the old worker shuts down (its requests still waiting), the
# new one takes another entry; then the old one is killed
$t->reload_nginx(keep_old => 1);
my ($new) = grep { $_ != $old } $t->workers_of($master, 'worker');
ok($new, "reloaded: a new worker ($new) beside the old one ($old)");
kill('KILL', $old);
ok(PKITest::wait_until(10, sub { !-e "/proc/$old" }),
   "the old worker $old killed and reaped");
kill('CONT', $rpid);
waitpid($_, 0) for @curls;

ok(PKITest::wait_until(10, sub { in_flight() == 0 }),
   'its pid free: its count is not in the gauge');

# a process of ours gets the dead worker's pid
my $holder;
for (1 .. 300) {
    last if -e "/proc/$old";
    if (open(my $f, '>', '/proc/sys/kernel/ns_last_pid')) {
        print $f $old - 1;
        close $f;
    }
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        sleep 60;
        POSIX::_exit(0);
    }
    if ($pid == $old) {
        $holder = $pid;
        last;
    }
    kill('KILL', $pid);
    waitpid($pid, 0);
}

SKIP: {
    skip "another process took pid $old first", 2 if !$holder;

    my $n = -1;
    for (1 .. 12) {
        $n = in_flight();
        last if $n != 0;
        sleep 0.25;
    }
    is($n, 0, "pid $old now another process's: still 0 in flight "
              . '(the dead worker\'s 4 stayed)');
    ok(-e "/proc/$old", '  that process still runs');

    kill('KILL', $holder);
    waitpid($holder, 0);
}

# the new worker counts its own tasks as before
kill('STOP', $rpid);
my $c = nonce_curl();
ok(PKITest::wait_until(10, sub { in_flight() == 1 }),
   'the new worker: its request in flight counted');
kill('CONT', $rpid);
waitpid($c, 0);
ok(PKITest::wait_until(10, sub { in_flight() == 0 }), '  and back to 0');

$t->stop_nginx;

done_testing();
