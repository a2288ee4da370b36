#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Runs every core unit-test binary (build/test_*) under TAP, with a private
# Redis (PKI_TEST_REDIS_SOCK) and a SoftHSM token holding an EC and an RSA
# key (PKI_TEST_SOFTHSM_CONF, PKI_TEST_P11_MODULE, PKI_TEST_TOKEN,
# PKI_TEST_PIN_FILE, PKI_TEST_KEY_URI_EC, PKI_TEST_KEY_URI_RSA).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use PKITest;

my @bins = sort grep { -x $_ && !/\.(?:o|c|d)$/ } glob("$PKITest::BUILD/test_*");
# PKI_CORE_TESTS="key_login issue" runs only those binaries (while working on one)
if (my $only = $ENV{PKI_CORE_TESTS}) {
    my %want = map { ("test_$_" => 1) } split ' ', $only;
    @bins = grep { $want{ s{.*/}{}r } } @bins;
}
plan(skip_all => "no core test binaries in $PKITest::BUILD") if !@bins;

my $t = PKITest->new(rsa_key => 1, token => 'pki-core-test',
                     no_nginx_needed => 1);
$t->start_redis;

my %env = $t->core_test_env;

for my $bin (@bins) {
    my $name = $bin =~ s{.*/}{}r;
    subtest $name => sub {
        my ($rc, $out, $err, $status) = run_cmd([$bin], env => \%env,
                                                timeout => 300);
        my ($n, $plan) = (0, undef);
        for my $line (split /\n/, $out) {
            if ($line =~ /^1\.\.(\d+)\s*$/) {
                $plan = $1;
            } elsif ($line =~ /^1\.\.0\s*#\s*SKIP\s*(.*)/i) {
                plan(skip_all => $1);
            } elsif ($line =~ /^(not )?ok \d+\s*-?\s*(.*)$/) {
                ok(!$1, $2);
                $n++;
            } elsif ($line =~ /^#\s?(.*)/) {
                note($1);
            }
        }
        ok($n > 0, "$name ran tests");
        # done_testing() prints the plan last: a binary that stopped early
        # (an exit() on the way) has none, or one its checks do not reach
        ok(defined $plan && $plan == $n, "$name: ran to its end ("
           . ($plan // 'no plan') . " planned, $n run)");
        is($rc, 0, "$name exit status") or diag($err);
        # a binary killed by a signal (SIGSEGV, SIGPIPE) exits "0": the
        # checks it never reached would go unseen
        is($status & 127, 0, "$name: not killed by a signal") or diag($err);
        unlike($err, qr/AddressSanitizer|LeakSanitizer|runtime error:/,
               "$name: no sanitizer report") or diag($err);
        done_testing();
    };
}

done_testing();
