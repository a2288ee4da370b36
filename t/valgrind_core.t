#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Every core unit-test binary (build/test_*) once under Valgrind's memcheck
# (issue 8, sanitizers: "zero reports"): invalid reads/writes, uses of
# uninitialised values, bad frees, and definite or indirect leaks all fail.
# Same environment as t/00-core.t (private Redis, SoftHSM token).
#
# Slow (the crypto runs 20-50x slower), so it runs only when asked:
# `./build.sh valgrind` (CI: .ci/run), or PKI_VALGRIND=1 prove t/valgrind_core.t.
# Never on a sanitized build (ASan binaries do not run under Valgrind).
# Suppressions: t/valgrind.supp (third-party one-time allocations only,
# each with its reason).  PKI_VALGRIND_ONLY=test_x,test_y narrows the run;
# PKI_VALGRIND_SKIP=test_x,... leaves some out (default: none).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Time::HiRes qw(time);
use PKITest;

plan(skip_all => "Valgrind run: ./build.sh valgrind (PKI_VALGRIND=1)")
    if !$ENV{PKI_VALGRIND};
plan(skip_all => "sanitized build: ASan binaries do not run under Valgrind")
    if $ENV{PKI_SANITIZE};

my ($vg) = grep { -x $_ } map { "$_/valgrind" } split /:/, $ENV{PATH};
plan(skip_all => "valgrind is not installed") if !$vg;

my @bins = sort grep { -x $_ && !/\.(?:o|c|d)$/ } glob("$PKITest::BUILD/test_*");
plan(skip_all => "no core test binaries in $PKITest::BUILD") if !@bins;

if ($ENV{PKI_VALGRIND_ONLY}) {
    my %only = map { $_ => 1 } split /,/, $ENV{PKI_VALGRIND_ONLY};
    @bins = grep { $only{ s{.*/}{}r } } @bins;
}

# test_key and test_scep used to be left out: they generated RSA
# 2048/3072-bit keys and signed with them hundreds of times, 10-15 minutes
# each under memcheck.  Under PKI_TEST_VALGRIND they now read pre-generated
# test-only RSA keys (PKI_TEST_KEYS: core/test/keys, see its README) and
# run their signing loops a few times instead of 20-50 (the loops' load is
# the suite runs' business; memcheck checks memory), so they run here too.
my %skip = map { $_ => 1 } split /,/, $ENV{PKI_VALGRIND_SKIP} // '';
for my $bin (grep { $skip{ s{.*/}{}r } } @bins) {
    note(($bin =~ s{.*/}{}r) . ": skipped (PKI_VALGRIND_SKIP)");
}
@bins = grep { !$skip{ s{.*/}{}r } } @bins;
plan(skip_all => "every binary skipped") if !@bins;

# Two lanes (the machine's two cores), each with its own Redis and SoftHSM
# token, each running its share of the binaries one after the other: the
# heaviest under Valgrind first, spread over both (CPU seconds measured on
# the shared machine; an unknown binary counts as light).
my %weight = (test_key => 10, test_scep => 8, test_crl => 5, test_issue => 5,
              test_ocsp => 4, test_jws => 3, test_audit => 2, test_est => 2,
              test_acme_validate => 2, test_acme => 2);
my @lanes = ([], []);
my @load = (0, 0);
for my $bin (sort { ($weight{ $b =~ s{.*/}{}r } // 1)
                    <=> ($weight{ $a =~ s{.*/}{}r } // 1) || $a cmp $b } @bins)
{
    my $l = $load[0] <= $load[1] ? 0 : 1;
    push @{ $lanes[$l] }, $bin;
    $load[$l] += $weight{ $bin =~ s{.*/}{}r } // 1;
}

my @vg = ($vg, '--tool=memcheck', '--error-exitcode=99',
          '--leak-check=full', '--show-leak-kinds=definite,indirect',
          '--errors-for-leak-kinds=definite,indirect',
          '--track-origins=no', '--num-callers=30',
          "--suppressions=$FindBin::Bin/valgrind.supp");

my (@t, @kids);
my $t0all = time;

for my $l (0, 1) {
    next if !@{ $lanes[$l] };
    my $t = PKITest->new(rsa_key => 1, token => "pki-core-vg$l",
                         no_nginx_needed => 1);
    $t->start_redis;
    push @t, $t;

    my %env = (
        $t->core_test_env,
        # the few time bounds of the unit tests are not Valgrind's business
        PKI_TEST_VALGRIND     => 1,
        PKI_TEST_KEYS         => "$FindBin::Bin/../core/test/keys",
    );

    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        for my $bin (@{ $lanes[$l] }) {
            my $name = $bin =~ s{.*/}{}r;
            my $t0 = time;
            my ($rc, $out, $err, $st) = run_cmd([@vg, $bin], env => \%env,
                                                timeout => 900);
            # killed by a signal (valgrind passes its guest's on): not 0
            $rc = 128 + ($st & 127) if $st & 127;
            open(my $f, '>', $t->dir . "/vg-$name.res") or die;
            print $f join("\0", $rc, time - $t0, $out, $err);
            close $f;
        }
        POSIX::_exit(0);
    }
    push @kids, [$pid, $t, $lanes[$l]];
}

my $cpu = 0;

for my $k (@kids) {
    my ($pid, $t, $lane) = @$k;
    waitpid($pid, 0);

    for my $bin (@$lane) {
        my $name = $bin =~ s{.*/}{}r;
        my ($rc, $secs, $out, $err) = (255, 0, '', 'no result');
        if (open(my $f, '<', $t->dir . "/vg-$name.res")) {
            local $/;
            ($rc, $secs, $out, $err) = split /\0/, <$f>, 4;
            close $f;
        }

        my ($errors) = $err =~ /ERROR SUMMARY: (\d+) errors/;
        my $nok = () = $out =~ /^ok \d+/mg;
        my $nnot = () = $out =~ /^not ok \d+/mg;

        ok(defined $errors && $errors == 0 && $rc == 0,
           sprintf("%s: memcheck clean (%d tests, %.0f s)", $name, $nok,
                   $secs))
            or diag("rc $rc, ", $errors // 'no', " errors, $nnot failed ",
                    "tests\n", $err =~ /(==\d+==.*)/s ? $1 : $err);
        is($nnot, 0, "$name: its own tests pass under Valgrind")
            or diag(join "\n", grep { /^not ok/ } split /\n/, $out);
    }
}

note(sprintf("valgrind: %d binaries in %d lanes, %.0f s", scalar @bins,
             scalar @kids, time - $t0all));

done_testing();
