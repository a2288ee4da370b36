#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Redis goes away mid-test: enrollment answers 503 with Retry-After quickly
# (no hang); Redis comes back on the same socket: enrollment works again
# without restarting nginx.
# Durability: pki_redis runs with its append-only file (README); a worker
# whose new connection finds it off (INFO persistence, aof_enabled:0) logs
# one warning, and one only; with it on there is none.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use PKITest;

my $AOFTEXT = ': Redis runs without its append-only file (appendonly no): '
    . 'certificate records and serial reservations written since the last '
    . 'snapshot are lost if Redis restarts; run it with appendonly yes and '
    . 'appendfsync always';
my $AOFWARN =
    qr/^\S+ \S+ \[warn\] (\d+)#\d+: pki_redis "unix:[^"]+"\Q$AOFTEXT\E$/m;

my $t = PKITest->new;
# as the README says to run it
$t->start_redis_with('--appendonly', 'yes', '--appendfsync', 'always');
$t->start_nginx;

my ($csr) = $t->make_csr('dev', subj => '/CN=redis-down');

my $r = $t->est_post('simpleenroll', $csr);
is($r->{code}, 200, 'enrollment with Redis up') or diag($r->{body});
$r = $t->est_post('simpleenroll', $csr);
unlike(slurp($t->error_log) // '', qr/append-only/,
       'Redis with its append-only file: no warning');

$t->stop_redis;
ok(!-e $t->redis_sock, 'Redis is down');

for my $i (1 .. 3) {
    my $t0 = time;
    $r = $t->est_post('simpleenroll', $csr, max_time => 15);
    my $dt = time - $t0;
    is($r->{code}, 503, "Redis down, attempt $i: 503") or diag($r->{body});
    like($r->{headers}{'retry-after'} // '', qr/^\d+$/,
         "attempt $i: Retry-After");
    cmp_ok($dt, '<', 5, sprintf("attempt %d: answered in %.2f s", $i, $dt));
}

my $sock = $t->redis_sock;
like(slurp($t->error_log) // '',
     qr/redis: connect: No such file or directory \(unix socket "\Q$sock\E"\)/,
     'the error log names the socket Redis was asked on');

# cacerts needs no Redis
$r = $t->curl('GET', $t->est_url('cacerts'));
is($r->{code}, 200, 'cacerts still served while Redis is down');

$t->start_redis;

my ($code, $tries) = (0, 0);
my $t0 = time;
while (time - $t0 < 10) {
    $tries++;
    $r = $t->est_post('simpleenroll', $csr);
    $code = $r->{code};
    last if $code == 200;
    sleep 0.2;
}
is($code, 200, "enrollment works again after Redis restart ($tries tries)");
cmp_ok($tries, '<=', 3, 'recovers within a few requests');

# and every later request succeeds
my @bad;
for (1 .. 10) {
    $r = $t->est_post('simpleenroll', $csr);
    push @bad, "$r->{code} $r->{body}" if $r->{code} != 200;
}
is(scalar @bad, 0, '10 more enrollments succeed') or diag(join("\n", @bad));

my @keys = $t->redis_keys('pki:{ca:issuing}:cert:*');
is(scalar @keys, 1 + 10 - @bad, 'the new Redis holds one record per 200');

$t->stop_nginx;

# The restarted Redis runs without its append-only file (start_redis):
# a new nginx warns, each worker at most once whatever the traffic.
$t->start_nginx;
for (1 .. 6) {
    $r = $t->est_post('simpleenroll', $csr);
}
is($r->{code}, 200, 'Redis without its append-only file: still issues');
my $dl = time + 15;
my $log = '';
while (time < $dl) {
    $log = slurp($t->error_log) // '';
    last if $log =~ $AOFWARN;
    sleep 0.2;
}
$r = $t->est_post('simpleenroll', $csr) for 1 .. 4;
$log = slurp($t->error_log) // '';
my @pids = $log =~ /$AOFWARN/g;
my %per;
$per{$_}++ for @pids;
ok(@pids >= 1 && @pids <= 2, scalar(@pids) . ' warning(s) from 2 workers '
   . 'about Redis without its append-only file') or diag($log);
is(scalar(grep { $_ > 1 } values %per), 0, 'at most one per worker')
    or diag($log);
unlike($log, qr/\[(?:error|crit|alert|emerg)\].*append-only/,
       'a warning, not an error');

$t->stop_nginx;

# With the append-only file but without appendfsync always (everysec: a
# crash of the host loses the last second of answered issuances), INFO
# says aof_enabled:1 and nothing was said; now each worker warns once
my $LAZYTEXT = ': Redis writes its append-only file without appendfsync '
    . 'always: certificate records and serial reservations answered in the '
    . 'last second or more are lost if its host crashes; run it with '
    . 'appendfsync always';
my $LAZYWARN =
    qr/^\S+ \S+ \[warn\] (\d+)#\d+: pki_redis "unix:[^"]+"\Q$LAZYTEXT\E$/m;
$t->stop_redis;
$t->start_redis_with('--appendonly', 'yes', '--appendfsync', 'everysec');
truncate($t->error_log, 0);
$t->start_nginx;
$r = $t->est_post('simpleenroll', $csr) for 1 .. 6;
is($r->{code}, 200, 'appendfsync everysec: still issues');
$dl = time + 15;
while (time < $dl) {
    $log = slurp($t->error_log) // '';
    last if $log =~ $LAZYWARN;
    sleep 0.2;
}
$r = $t->est_post('simpleenroll', $csr) for 1 .. 4;
$log = slurp($t->error_log) // '';
@pids = $log =~ /$LAZYWARN/g;
%per = ();
$per{$_}++ for @pids;
ok(@pids >= 1 && @pids <= 2, scalar(@pids) . ' warning(s) from 2 workers '
   . 'about appendfsync everysec') or diag($log);
is(scalar(grep { $_ > 1 } values %per), 0, 'at most one per worker')
    or diag($log);
unlike($log, qr/without its append-only file/,
       'appendfsync everysec: not said to run without the file');

$t->stop_nginx;
done_testing();
