#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# The Redis history adds each request once when a flush's answer is lost:
# Redis busy for 3 s (a slow script of another client, as a BGSAVE fork or
# a failover would make it) is past pki_redis's 1 s timeout, so a worker's
# flush times out and Redis runs it later anyway; the worker sends the same
# batch (sender, sequence number) again and Redis adds it once.  The
# oracle: the buckets grow by the number of requests sent, which
# Prometheus counts too.  The worker's mark (pki:{metrics}:f:SOURCE) has a
# TTL.
#
# The valid certificate gauge is never negative: a cached count with more
# revoked than unexpired certificates (the walk is not one instant) shows
# valid 0, not 2^64 - 2.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use POSIX ();
use PKITest;

my $t = PKITest->new;
my $conf = $t->render_conf;
# a fast timer: history flush every 1 s, certificate counts every 6 s
$conf =~ s/(pki_thread_pool pki;)/$1\n    pki_metrics_interval 1s;/
    or die 'no pki_thread_pool line';
$t->start_redis;

# counted by another worker of the fleet, not at one instant: 3 revoked of
# 1 unexpired (the workers read this instead of counting)
$t->redis('SET', 'pki:{ca:issuing}:counts', '1 3 0 0', 'PX', '30000');

$t->start_nginx($conf);
my $base = 'https://127.0.0.1:' . $t->https_port;

my $m;
for (1 .. 40) {
    $m = $t->metrics_scrape;
    last if defined $m->{'pki_certificates{ca="issuing",state="revoked"}'};
    sleep 0.25;
}
is($m->{'pki_certificates{ca="issuing",state="revoked"}'}, 3,
   'the cached count is read: revoked 3');
is($m->{'pki_certificates{ca="issuing",state="valid"}'}, 0,
   'valid: 0, not below');

sub history {
    my $n = 0;
    for my $k ($t->redis_keys('pki:{metrics}:m:*')) {
        $n += $t->redis_hash($k)->{'req:est:success'} // 0;
    }
    return $n;
}

sub prom {
    my $mm = $t->metrics_scrape;
    return $mm->{'pki_requests_total{protocol="est",ca="issuing",'
                 . 'template="device",outcome="success"}'} // 0;
}

sub cacerts {
    return $t->curl('GET', $t->est_url('cacerts'), quiet => 1)->{code};
}

is(cacerts(), 200, "cacerts $_") for 1 .. 3;

# every worker's deltas in the buckets
my ($h0, $p0);
for (1 .. 40) {
    ($h0, $p0) = (history(), prom());
    last if $h0 == $p0 && $h0 >= 3;
    sleep 0.25;
}
is($h0, $p0, "before: the history has what Prometheus counts ($p0)");

my $errors0 = $t->metrics_scrape->{'pki_metrics_flush_errors_total'} // 0;

# Redis busy for 3 s
my $pid = fork() // die "fork: $!";
if ($pid == 0) {
    open(STDOUT, '>', '/dev/null');
    open(STDERR, '>', '/dev/null');
    exec('redis-cli', '-s', $t->redis_sock, 'EVAL',
         "local s = tonumber(redis.call('TIME')[1]) "
         . "while tonumber(redis.call('TIME')[1]) - s < 3 do end return 1",
         '0') or POSIX::_exit(127);
}
sleep 0.2;
my $ok = 0;
for (1 .. 20) {
    $ok++ if cacerts() == 200;
}
is($ok, 20, '20 cacerts while Redis is busy');
waitpid($pid, 0);

# the timed out batches sent again, and the new deltas after them
my ($h1, $p1);
for (1 .. 40) {
    sleep 0.25;
    ($h1, $p1) = (history(), prom());
    last if $h1 == $p1 && $h1 >= $h0 + 20;
}
is($p1 - $p0, 20, 'Prometheus: 20 more');
is($h1 - $h0, 20, 'the history: 20 more, each once');

# the history stays there (nothing comes late)
sleep 2.5;
is(history(), $h1, 'the history does not grow later');

cmp_ok($t->metrics_scrape->{'pki_metrics_flush_errors_total'} // 0, '>',
       $errors0, 'a flush did time out');

my @marks = $t->redis_keys('pki:{metrics}:f:*');
ok(@marks >= 1, 'a mark per sending worker (' . scalar(@marks) . ')');
my $pttl = @marks ? $t->redis_raw('PTTL', $marks[0]) : -1;
chomp $pttl;
ok($pttl > 0 && $pttl <= 900000, "the mark expires ($pttl ms)");

$t->stop_nginx;
done_testing();
