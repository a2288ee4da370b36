#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# No count of the Redis history is lost when a worker exits, and none is
# added twice.  The oracle: the requests sent (each cacerts 200 is one
# req:est:success), which Prometheus counts too; the history is the sum of
# the minute buckets in Redis.
#  1. nginx stopped (QUIT) between two ticks: the deltas since the last
#     tick reach the history (they were lost with the worker).
#  2. a reload while Redis answers nothing (stopped, then replaced by a
#     new one that never got those writes): the old workers' batches
#     sent without an answer, at their last tick and again at exit, are
#     left in the zone and the new workers send them again under the old
#     names, added once (they were lost with the old workers).
#  3. a reload from 4 workers to 2 while Redis is down (every flush
#     refused, the deltas kept in the zone per worker slot): the new
#     workers take the slots of workers 2 and 3 too (those deltas never
#     reached the history).
#  4. nginx stopped while Redis answers nothing: the workers' last flush
#     gives up after its own short timeout, and the stop is quick.
#  5. the room for parked batches comes on top of pki_metrics_zone: the
#     smallest zone (64k) still holds the series of a request to each
#     protocol, none dropped (the parked batches took half of it).
#  6. a reload from 4 workers to 2 while requests wait on Redis: once
#     idle, pki_thread_tasks_in_flight is 0 again (the slots of workers 2
#     and 3 kept the count they last wrote, in flight, for ever).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use PKITest;

my $t = PKITest->new;
$t->start_redis;

sub conf {
    my ($interval, @extra) = @_;
    my $c = $t->render_conf(@extra);
    $c =~ s/(pki_thread_pool pki;)/$1\n    pki_metrics_interval $interval;/
        or die 'no pki_thread_pool line';
    return $c;
}

sub history {
    my $n = 0;
    for my $k ($t->redis_keys('pki:{metrics}:m:*')) {
        $n += $t->redis_hash($k)->{'req:est:success'} // 0;
    }
    return $n;
}

sub prom {
    my $m = $t->metrics_scrape;
    return $m->{'pki_requests_total{protocol="est",ca="issuing",'
                . 'template="device",outcome="success"}'} // 0;
}

sub cacerts {
    my ($n) = @_;
    my $ok = 0;
    for (1 .. $n) {
        $ok++ if $t->curl('GET', $t->est_url('cacerts'), quiet => 1)->{code}
                 == 200;
    }
    return $ok;
}

# HUP with conf, then wait until the old workers are gone
sub reload {
    my ($conf, $label) = @_;
    my $master = $t->{children}{nginx};
    my @old = $t->workers_of($master, 'worker');
    $t->write_conf($conf);
    kill('HUP', $master);
    my $deadline = time + 20;
    sleep 0.1 while time < $deadline && grep { kill(0, $_) } @old;
    ok(!(grep { kill(0, $_) } @old), "$label: the old workers exited");
}

# until the history has what Prometheus counts, at least want
sub settle {
    my ($want) = @_;
    my ($h, $p);
    for (1 .. 60) {
        ($h, $p) = (history(), prom());
        last if $h == $p && $h >= $want;
        sleep 0.25;
    }
    return ($h, $p);
}

# until the one worker's first tick has run (1-2 s after its start, later
# on a loaded machine): that tick counts the certificates, so
# pki:{ca:issuing}:counts appears in Redis, and the same handler claimed
# the deltas before it sent the count.  Requests from then on wait for the
# next tick (a minute away) or the exit.  The key must not exist before
# (a cached count is read, not written).
sub first_tick {
    for (1 .. 300) {
        return 1 if $t->redis_keys('pki:{ca:issuing}:counts');
        sleep 0.1;
    }
    return 0;
}

# the master logged its own exit after FROM in the error log: it ended on
# QUIT, not by stop_nginx's KILL 15 s later
sub exited_by_itself {
    my ($from) = @_;
    my $m = $t->{children}{nginx};
    $t->stop_nginx;
    return substr(slurp($t->error_log) // '', $from)
           =~ /\[notice\] $m#\d+: exit$/m;
}

# --- 1. stopped between two ticks -------------------------------------------

# one worker: its first tick is the one to wait for, then none for a minute
$t->start_nginx(conf('60s', '--workers', 1));
ok(first_tick(), 'stop: the first tick ran');
is(cacerts(7), 7, 'stop: 7 cacerts after the first tick');
my $t0 = time;
ok(exited_by_itself(0), 'stop: nginx exited on QUIT, not killed');
note(sprintf('stop: nginx stopped in %.1f s', time - $t0));
is(history(), 7, 'stop: the history has the 7 (the workers sent them at '
   . 'exit)');

# --- 2. a reload while Redis answers nothing ------------------------------

# Redis stopped (SIGSTOP: connections accepted, no answer), pki_redis
# timeout 300 ms: the workers' flushes time out, and so do the old
# workers' last ones at exit.  Then that Redis dies before it ran them (a
# failover losing the unanswered writes) and a new one starts: what was
# sent without an answer must be sent again.
$t->redis('FLUSHALL');
my $c1 = conf('1s', '--redis-timeout', '300ms');
$t->start_nginx($c1);
sleep 2.5;
is(history(), 0, 'silent reload: an empty history to start with');

my $rpid = $t->{children}{redis};
kill('STOP', $rpid);
is(cacerts(10), 10, 'silent reload: 10 cacerts while Redis is silent');
sleep 2.5;                  # a tick claims them and gets no answer
reload($c1, 'silent reload');
like(slurp($t->error_log) // '',
     qr/history batch \d+ of \d+ fields unanswered at exit: left in/,
     'silent reload: an unanswered batch left in the zone at exit');
kill('KILL', $rpid);
$t->stop_redis;
$t->start_redis;

my ($h, $p) = settle(10);
is($p, 10, 'silent reload: Prometheus counts 10');
is($h, 10, 'silent reload: the history has the 10, each once');
sleep 2.5;
is(history(), 10, 'silent reload: nothing comes late');
like(slurp($t->error_log) // '',
     qr/history batch \d+ of the exited worker \S+ in Redis/,
     'silent reload: a new worker sent it again');
$t->stop_nginx;

# --- 3. a reload from 4 workers to 2 while Redis is down --------------------

$t->redis('FLUSHALL');
# one listening socket per worker, so that the kernel spreads the
# connections over all four (else one worker may take them all)
my $c4 = conf('1s', '--workers', 4);
$c4 =~ s/(listen 127\.0\.0\.1:\d+(?: ssl)?);/$1 reuseport;/g
    or die 'no listen line';
my $c2 = conf('1s', '--workers', 2);
$c2 =~ s/(listen 127\.0\.0\.1:\d+(?: ssl)?);/$1 reuseport;/g;
$t->start_nginx($c4);
is(scalar($t->workers_of($t->{children}{nginx}, 'worker')), 4,
   'fewer workers: 4 to start with');
sleep 2.5;
$t->stop_redis;
is(cacerts(40), 40, 'fewer workers: 40 cacerts (40 connections) with '
   . 'Redis down');
sleep 1.5;                  # ticks refused: the deltas stay in the slots
reload($c2, 'fewer workers');
is(scalar($t->workers_of($t->{children}{nginx}, 'worker')), 2,
   'fewer workers: 2 after the reload');
$t->start_redis;
($h, $p) = settle(40);
is($p, 40, 'fewer workers: Prometheus counts 40');
is($h, 40, 'fewer workers: the history has the 40 (the slots of workers '
   . '2 and 3 too)');
sleep 2.5;
is(history(), 40, 'fewer workers: nothing comes late');
$t->stop_nginx;

# --- 4. stopped while Redis does not answer --------------------------------

# Redis stopped (SIGSTOP: connections accepted, no answer) right before
# nginx is: the workers' last flush gives up within its own 250 ms, not
# after the pki_redis timeout; nothing else was waiting on Redis.  That
# timeout (60 s) is longer than stop_nginx waits before its KILL (15 s):
# a flush held for it gets the master killed, which then logs no exit.
# One worker, its first tick passed: the 3 requests are left for the exit.
# With the transaction log: its janitor thread asks Redis every second,
# and a worker's exit joins that thread.  The 1.5 s after the stop make
# sure one of its calls is in flight at the QUIT: the janitor's calls wait
# 2 s at most, not the store's 60 s (they did, and held the exit).
$t->redis('DEL', 'pki:{ca:issuing}:counts');
$t->start_nginx(conf('60s', '--redis-timeout', '60s', '--workers', 1));
ok(first_tick(), 'silent stop: the first tick ran');
is(cacerts(3), 3, 'silent stop: 3 cacerts');
$rpid = $t->{children}{redis};
kill('STOP', $rpid);
sleep 1.5;
my $t1 = time;
my $log1 = length(slurp($t->error_log) // '');
my $quit = exited_by_itself($log1);
my $dt1 = time - $t1;
kill('CONT', $rpid);
ok($quit, sprintf('silent stop: nginx exited on QUIT (in %.2f s), not '
       . 'held for the 60 s Redis timeout', $dt1))
    or diag(slurp($t->error_log));
like(slurp($t->error_log) // '', qr/unanswered at exit/,
     'silent stop: the last flush gave up');

# --- 5. the smallest zone holds a request to each protocol ------------------

my $cz = conf('1s');
$cz =~ s/(pki_thread_pool pki;)/$1\n    pki_metrics_zone 64k;/
    or die 'no pki_thread_pool line';
$t->start_nginx($cz);
sleep 2.5;
my $https = 'https://127.0.0.1:' . $t->https_port;
my $http = 'http://127.0.0.1:' . $t->{http};
for my $r (['GET', $t->est_url('cacerts')], ['GET', $t->est_url('nosuch')],
           ['POST', $t->est_url('simpleenroll')],
           ['GET', $t->est_url('csrattrs')],
           ['GET', "$https/acme/directory"],
           ['HEAD', "$https/acme/new-nonce"],
           ['POST', "$https/acme/new-account"],
           ['GET', "$http/ocsp/garbage"], ['POST', "$http/ocsp"],
           ['GET', "$http/scep?operation=GetCACaps"],
           ['GET', "$http/scep?operation=GetCACert"],
           ['GET', "$http/scep?operation=Bogus"],
           ['GET', "$http/crl/issuing.crl"],
           ['POST', "$https/matter/noc"],
           ['POST', "$https/matter/dac/batch"],
           ['GET', "$https/pki/admin/certs"])
{
    $t->curl($r->[0], $r->[1], quiet => 1, user => 'demo:demo');
}
sleep 1.5;
my $m = $t->metrics_scrape;
ok(scalar(grep { /^pki_requests_total\{protocol="scep"/ } keys %$m),
   'zone 64k: the SCEP requests counted');
is($m->{pki_metrics_series_dropped_total} // 0, 0,
   'zone 64k: no series dropped');
$t->stop_nginx;

# --- 6. the in-flight gauge after a reload to fewer workers -----------------

# Redis stopped (SIGSTOP), pki_redis timeout 2 s: each ACME request holds
# a thread task until then.  16 connections over 4 workers (reuseport):
# workers 2 and 3 get some, their timers count them in flight, then the
# reload to 2 workers stops those timers before the tasks end.
sub in_flight {
    return $t->metrics_scrape->{pki_thread_tasks_in_flight} // -1;
}

$t->redis('FLUSHALL');
my $cf4 = conf('1s', '--workers', 4, '--redis-timeout', '2s');
$cf4 =~ s/(listen 127\.0\.0\.1:\d+(?: ssl)?);/$1 reuseport;/g
    or die 'no listen line';
my $cf2 = conf('1s', '--workers', 2, '--redis-timeout', '2s');
$cf2 =~ s/(listen 127\.0\.0\.1:\d+(?: ssl)?);/$1 reuseport;/g;
$t->start_nginx($cf4);
sleep 1.5;
is(in_flight(), 0, 'in flight: 0 to start with');

$rpid = $t->{children}{redis};
kill('STOP', $rpid);
my @curls;
for (1 .. 16) {
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open(STDOUT, '>', '/dev/null');
        open(STDERR, '>&', \*STDOUT);
        exec('curl', '-sS', '--max-time', '30', '--cacert',
             $t->pki . '/root.pem', '-I', "$https/acme/new-nonce")
            or POSIX::_exit(127);
    }
    push @curls, $pid;
}
sleep 1.5;                  # a tick of each worker counts its tasks
cmp_ok(in_flight(), '>', 0, 'in flight: requests waiting on Redis');
reload($cf2, 'in flight');
kill('CONT', $rpid);
waitpid($_, 0) for @curls;

my $n = -1;
for (1 .. 20) {
    $n = in_flight();
    last if $n == 0;
    sleep 0.25;
}
is($n, 0, 'in flight: 0 once idle after the reload to 2 workers');
$t->stop_nginx;

done_testing();
