#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A worker that signs nothing after a burst gives its idle PKCS#11 sessions
# back.  An EC key signs on a pool of sessions that grows with its
# concurrent signers; a pooled session idle 30 s used to be closed only
# when another one of its key came back (a signature), so a worker that
# signed nothing more kept its whole pool until it signed again or exited,
# and on an HSM with a small session limit (YubiHSM 2: 16 for all
# processes) the other workers found none (503).  Now the worker looks
# every 5 s and closes them in a pool thread.
# The token is SoftHSM behind the test PKCS#11 shim, which writes each
# change of its count of open sessions, with the process id, to an events
# file (the count lives in the worker: no other way to read it from here).
# One worker, 4 pool threads, each C_Sign 100 ms: a burst of concurrent EST
# enrollments grows the worker's pool; then nothing signs, and within 30 s
# + 5 s + a margin the worker's open sessions are back to what they were
# before the burst.
# Takes about 40 s.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Time::HiRes qw(time sleep);
use PKITest;

my $shim = "$PKITest::BUILD/p11shim.so";
plan(skip_all => "$shim not built") if !-e $shim;

my $t = PKITest->new;
my $dir = $t->dir;
my $events = "$dir/p11shim.events";

$ENV{PKI_P11SHIM_MODULE} = $PKITest::P11;
$ENV{PKI_P11SHIM_EVENTS} = $events;
$ENV{PKI_P11SHIM_SIGN_DELAY_MS} = 100;  # concurrent signers: a pool

my $conf = $t->render_conf('--workers', 1, '--threads', 4);
my $mod = quotemeta $PKITest::P11;
ok($conf =~ s{^(\s*)module\s+$mod;}{${1}module $shim;}m,
   'the vault uses the shim');
ok($conf =~ s{^env SOFTHSM2_CONF;}{env SOFTHSM2_CONF;
env PKI_P11SHIM_MODULE;
env PKI_P11SHIM_EVENTS;
env PKI_P11SHIM_SIGN_DELAY_MS;}m, "the shim's environment for the worker");

$t->start_redis;
$t->start_nginx($conf);

my $master = $t->{children}{nginx};
my ($worker) = $t->workers_of($master, 'worker');
ok($worker, "one worker ($worker)") or BAIL_OUT('no worker');

# the worker's sessions open now: the count of its last line, and the
# number of its lines (a line per change)
sub sessions {
    my ($open, $n) = (0, 0);
    for (split /\n/, (slurp($events) // '')) {
        next if !/ pid=$worker$/;
        $n++;
        $open = 0 if /^init /;
        $open = $1 if / open=(\d+) /;
    }
    return wantarray ? ($open, $n) : $open;
}

my ($csr) = $t->make_csr('trim', subj => '/CN=idle-trim');

my $e = $t->est_enroll_timed($csr, 'before', 15);
is($e->{code}, 200, 'an enrollment before the burst');
ok($e->{verified}, '  its certificate verifies');

my $before = sessions();
diag("the worker holds $before session(s) before the burst");

# --- the burst: concurrent enrollments, the pool grows ----------------------

my $burst = 0;
for my $round (1 .. 3) {
    my @bg;
    for my $k (1 .. 16) {
        my $res = "$dir/bg-$round-$k.txt";
        my $pid = fork() // die "fork: $!";
        if ($pid == 0) {
            $t->{owner} = -1;           # the parent stops the servers
            $t->{curl_n} = 100000 * $k + 1000 * $round;
            my $r = $t->est_post('simpleenroll', $csr, max_time => 30,
                                 quiet => 1);
            spew($res, "$r->{code}\n");
            POSIX::_exit(0);
        }
        push @bg, [$pid, $res];
    }
    my $good = 0;
    for my $b (@bg) {
        waitpid($b->[0], 0);
        $good++ if (slurp($b->[1]) // '') =~ /^200/;
    }
    is($good, 16, "burst $round: 16 concurrent enrollments answered 200");
    $burst = sessions();
    last if $burst > $before;
}

my $t0 = time;
my (undef, $lines) = sessions();
diag("after the burst: $burst session(s) open");
cmp_ok($burst, '>', $before, 'the burst left more sessions pooled');

# --- nothing signs: the idle ones go back -----------------------------------

ok(wait_until(50, sub { sessions() <= $before }, 0.5),
   'with no signature the worker closed its idle sessions: '
   . sessions() . " open, as before the burst ($before)");
my $dt = time - $t0;
diag(sprintf('waited %.1f s', $dt));
cmp_ok($dt, '>=', 25, '  not before they were idle 30 s');

my @mine = grep { / pid=$worker$/ } split /\n/, (slurp($events) // '');
my @opened = grep { /^open_session / } @mine[$lines .. $#mine];
is(scalar @opened, 0, '  and no session was opened meanwhile (no signing)');

$e = $t->est_enroll_timed($csr, 'after', 15);
is($e->{code}, 200, 'an enrollment after the trim');
ok($e->{verified}, '  its certificate verifies');

unlike(slurp($t->error_log) // '', qr/\[alert\]|\[emerg\]|exited on signal/,
       'no alert, no crash in the error log');

$t->stop_nginx;

done_testing();
