#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A worker with a valid CRL in memory answers from it while its check of
# Redis is out: the request that posts the check waits for it 100 ms at
# most (stale-while-revalidate), not for the Redis timeout.  Played as the
# review did: one worker, pki_redis timeout=1s, Redis asleep (DEBUG SLEEP
# on the test's own connection, whose +OK marks the wake-up):
#  - GETs of the CRL 1.2 s apart (each more than the 1 s check interval
#    after the one before, so each may post the next check): each 200 with
#    the CRL of before the stall, in well under the 1 s Redis timeout
#    (each waited for that timeout, about 1.1 s, before the change), all
#    while Redis still sleeps;
#  - after the stall the short wait keeps what a check answers quickly: a
#    revocation whose CRL worker 0 has stored is in the first GET more
#    than a second after it (one Redis round trip, within the 100 ms).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use Time::HiRes qw(sleep time);
use PKITest;

my $STALL = 14;         # seconds Redis sleeps: the probes below (about 7 s,
                        # 11.2 s on the old code) end before it wakes
my $PROBES = 5;
my $GAP = 1.2;          # between an answer and the next GET
my $BOUND = 0.5;        # generous: the Redis timeout is 1 s

my $t = PKITest->new;
$t->start_redis_with('--enable-debug-command', 'local');
my $dir = $t->dir;
$t->start_nginx($t->render_conf('--workers', 1, '--redis-timeout', '1s'));

sub stored_number {
    my ($k) = $t->redis_keys('*{ca:issuing}:crl_meta');
    return -1 unless $k;
    my $m = $t->redis_raw('GET', $k);
    return $m =~ /^\d+ \d+ (\d+) / ? $1 : -1;
}

# one GET of the CRL on a connection of its own: (status, body, seconds);
# the 5 s limit only ends a wait that would otherwise hang the test
sub get_crl {
    my $t0 = time;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $t->http_port, Timeout => 5)
        or return (0, '', time - $t0);
    print $s "GET /crl/issuing.crl HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        . "Connection: close\r\n\r\n";
    my $buf = '';
    my $sel = IO::Select->new($s);
    while (time < $t0 + 5 && $sel->can_read($t0 + 5 - time)) {
        my $n = sysread($s, my $b, 65536);
        last if !$n;
        $buf .= $b;
    }
    my $secs = time - $t0;
    close $s;
    my ($status) = $buf =~ m{^HTTP/1\.1 (\d{3})};
    (my $body = $buf) =~ s/^.*?\r\n\r\n//s;
    return ($status // 0, $body, $secs);
}

# the serials a CRL (DER) lists, upper case hex
sub listed {
    my ($der) = @_;
    spew("$dir/listed.der", $der);
    my ($rc, $out) = run_cmd(['openssl', 'crl', '-inform', 'DER', '-in',
                              "$dir/listed.der", '-noout', '-text']);
    return map { uc } $out =~ /Serial Number: *([0-9A-Fa-f]+)/g;
}

# worker 0 builds the first CRL by itself after start
ok(wait_until(10, sub { stored_number() > 0 }), 'a CRL is stored');

my ($status, $crl, $secs) = get_crl();
is($status, 200, 'the CRL, Redis awake: 200');
$t->give_up('no CRL to serve') if $status != 200;
my ($rc, $out, $err) = run_cmd(['sh', '-c', 'openssl crl -inform DER -noout '
    . "-CAfile '" . $t->pki . "/chain.pem'"], stdin => $crl);
like($out . $err, qr/verify OK/, '  openssl crl -CAfile: verify OK');

# --- the stall --------------------------------------------------------------

my $sleeper = IO::Socket::UNIX->new(Peer => $t->redis_sock)
    or die "Redis connection: $!";
syswrite($sleeper, "DEBUG SLEEP $STALL\r\n");
my $stall0 = time;

my @secs;
my $same = 0;
for my $i (1 .. $PROBES) {
    # more than the worker's 1 s between checks since the last answer (the
    # check that answer posted, or the fetch above, came back before it)
    sleep $GAP;
    my ($st, $body, $s) = get_crl();
    push @secs, $s;
    $same++ if $st == 200 && $body eq $crl;
    diag(sprintf('GET %d during the stall: %s in %.3f s', $i, $st, $s));
}
my $asleep = !IO::Select->new($sleeper)->can_read(0);
ok($asleep, sprintf('Redis still asleep after the GETs (%.1f s into the '
                    . 'stall)', time - $stall0));
is($same, $PROBES, "each GET during the stall: 200 with the CRL in memory");
is(scalar(grep { $_ < $BOUND } @secs), $PROBES,
   "  each in under $BOUND s, not the 1 s Redis timeout ("
   . join(' ', map { sprintf('%.3f', $_) } @secs) . ')');

# Redis wakes up: the +OK of DEBUG SLEEP
my $woke = '';
if (IO::Select->new($sleeper)->can_read($STALL + 10)) {
    sysread($sleeper, $woke, 64);
}
like($woke, qr/^\+OK/, 'DEBUG SLEEP ran, Redis woke up');
close $sleeper;

# --- after the stall: a revocation, once stored, in the first GET -----------

my ($r, $serial) = $t->enroll_serial('crlstale');
is($r->{code}, 200, 'enrolled one') or diag($r->{body});
my $n0 = stored_number();
is($t->admin_revoke($serial, quiet => 1)->{code}, 200, "revoked $serial");
# no CRL request meanwhile: worker 0's refresher (every 10 s) stores it
ok(wait_until(25, sub { stored_number() > $n0 }, 0.2),
   'worker 0 stored a new CRL by itself');
# the worker's last check more than a second ago: the next GET posts one,
# which reads the stored CRL (one round trip) within its 100 ms
sleep 1.2;
($status, my $after, $secs) = get_crl();
is($status, 200, sprintf('the first GET after that: 200 (%.3f s)', $secs));
ok((grep { $_ eq uc $serial } listed($after)),
   '  the new CRL, listing the revocation');

unlike(slurp($t->error_log) // '', qr/\[alert\]|exited on signal/,
       'no alert, no crashed worker');

$t->stop_all;
done_testing();
