#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# No count of the Redis history is lost when workers go, and none is added
# twice.  The oracle: the requests sent (each cacerts 200 is one
# req:est:success), which Prometheus counts too; the history is the sum of
# the minute buckets in Redis.
#  - a reload from 4 workers to 2 while Redis is down (every flush
#    refused, the deltas kept in the zone per worker slot): the new
#    workers take the slots of workers 2 and 3 too (those deltas never
#    reached the history).

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

# --- a reload from 4 workers to 2 while Redis is down ----------------------

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
my ($h, $p) = settle(40);
is($p, 40, 'fewer workers: Prometheus counts 40');
is($h, 40, 'fewer workers: the history has the 40 (the slots of workers '
   . '2 and 3 too)');
sleep 2.5;
is(history(), 40, 'fewer workers: nothing comes late');
$t->stop_nginx;

done_testing();
