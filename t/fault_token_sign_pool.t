#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# pki_sign_thread_pool: the requests that sign run in a pool of their own,
# so that a token that stops answering holds only that pool's threads.
# Until call_timeout passes nothing refuses a signing request (the token
# may be slow, not gone), and each one takes a thread into the token;
# with one shared pool a burst of them takes every thread, and all the
# Redis work (ACME newNonce, newOrder, ...) then waits for the token too.
# Here: the pki pool has 4 threads, the signing pool 2, call_timeout 60s
# (never reached): six EST enrollments go into the hung token (two in its
# threads, four queued), and meanwhile
#  - ACME newNonce and an ACME account (Redis, the pki pool) are answered
#    at once, and so is EST cacerts;
#  - once the token answers, the six enrollments finish with certificates
#    that verify, and a new one works.
# Then nginx -t refuses a signing pool that is not declared, and one that
# is the pool of pki_thread_pool.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use PKITest;

my $shim = "$PKITest::BUILD/p11shim.so";
plan(skip_all => "$shim not built") if !-e $shim;

my $t = PKITest->new;
my $dir = $t->dir;
my $hang = "$dir/token-hangs";
END { unlink $hang if $hang; }

$ENV{PKI_P11SHIM_MODULE} = $PKITest::P11;
$ENV{PKI_P11SHIM_HANG_FILE} = $hang;

my $conf = $t->render_conf('--workers', 1, '--threads', 4,
                           '--sign-threads', 2);
my $mod = quotemeta $PKITest::P11;
ok($conf =~ s{^(\s*)module\s+$mod;}{${1}module $shim;\n${1}call_timeout 60s;}m,
   'the vault uses the shim, with call_timeout 60s');
ok($conf =~ s{^env SOFTHSM2_CONF;}{env SOFTHSM2_CONF;
env PKI_P11SHIM_MODULE;
env PKI_P11SHIM_HANG_FILE;}m, "the shim's environment for the workers");
like($conf, qr/^thread_pool pki_sign threads=2 /m,
     'a signing pool of 2 threads');
like($conf, qr/^\s*pki_sign_thread_pool pki_sign;/m,
     'pki_sign_thread_pool names it');

$t->start_redis;
$t->start_nginx($conf);

my ($csr) = $t->make_csr('pool', subj => '/CN=sign-pool');

# enroll once: { code, dt, ra, verified }
sub enroll { return $t->est_enroll_timed($csr, @_) }

my $e = enroll('before', 15);
is($e->{code}, 200, 'enrollment while the token answers');
ok($e->{verified}, 'its certificate verifies');

# --- the token hangs: six enrollments, more than the signing pool has ----

spew($hang, "hang\n");

my @bg;
for my $k (1 .. 6) {
    my $res = "$dir/bg-$k.txt";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $t->{owner} = -1;               # the parent stops the servers
        $t->{curl_n} = 100000 * $k;
        my $o = enroll("bg-$k", 60);
        spew($res, join("\t", $o->{code}, sprintf('%.3f', $o->{dt}),
                        $o->{verified}) . "\n");
        POSIX::_exit(0);
    }
    push @bg, [$pid, $res];
}

sleep 1.5;                              # all six are in or queued
ok(!waitpid($_->[0], WNOHANG), 'an enrollment waits for the token') for @bg;

my $base = 'https://127.0.0.1:' . $t->https_port . '/acme';
for my $i (1 .. 3) {
    my $t0 = time;
    my $n = $t->curl('HEAD', "$base/new-nonce", max_time => 5, quiet => 1,
                     extra => ['-I']);
    my $dt = time - $t0;
    ok(($n->{code} == 200 || $n->{code} == 204)
       && ($n->{headers}{'replay-nonce'} // '') ne '',
       "ACME newNonce #$i (Redis, the pki pool) answered: $n->{code}");
    cmp_ok($dt, '<', 1.5, "  within 1.5 s (the client's limit is 5 s)");
}

my $t0 = time;
my $c = $t->curl('GET', $t->est_url('cacerts'), max_time => 5, quiet => 1);
is($c->{code}, 200, 'EST cacerts answered');
cmp_ok(time - $t0, '<', 1.5, '  within 1.5 s');

ok(!waitpid($_->[0], WNOHANG), 'the enrollment still waits') for @bg;

# --- the token answers again -----------------------------------------------

unlink $hang;

for my $b (@bg) {
    waitpid($b->[0], 0);
    my ($code, $dt, $ver) = split /\t/, (slurp($b->[1]) // "0\t0\t0");
    is($code, 200, 'a waiting enrollment finished once the token answered');
    ok($ver, '  its certificate verifies');
}

$e = enroll('after', 15);
is($e->{code}, 200, 'enrollment works again');
ok($e->{verified}, 'its certificate verifies');

unlike(slurp($t->error_log) // '', qr/\[alert\]|\[emerg\]|exited on signal/,
       'no alert, no crash in the error log');

# --- a signing pool that is not declared -----------------------------------

my $bad = $conf;
$bad =~ s{^thread_pool pki_sign [^\n]*\n}{}m;
my ($ok, $out) = $t->nginx_test($t->write_conf($bad, "no-sign-pool.conf"));
ok(!$ok, 'nginx -t refuses pki_sign_thread_pool naming no thread_pool');
like($out // '', qr/pki_sign/, '  and names it');

# --- a signing pool that is the main pool -----------------------------------

$bad = $conf;
ok($bad =~ s{^(\s*pki_sign_thread_pool) pki_sign;}{$1 pki;}m,
   'pki_sign_thread_pool naming the pool of pki_thread_pool');
($ok, $out) = $t->nginx_test($t->write_conf($bad, "same-pool.conf"));
ok(!$ok, 'nginx -t refuses it (one queue: no isolation from the token)');
like($out // '',
     qr/"pki_sign_thread_pool" names the pool of "pki_thread_pool"/,
     '  and says why');

$t->stop_nginx;

done_testing();
