#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Replays every fuzz corpus (fuzz/corpus/<target>/: seeds and regression
# inputs of earlier findings) through its target's replay binary: gcc with
# ASan + UBSan + LeakSanitizer, no fuzzer runtime.  Any sanitizer report, a
# non-zero exit or an input not replayed fails.  The binaries are built
# once into fuzz/build-replay/ (make is incremental), the same for
# `./build.sh test` and `./build.sh test --sanitize`.

use strict;
use warnings;
use Fcntl qw(:flock);
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use PKITest;

my $fuzz = "$PKITest::TOP/fuzz";
plan(skip_all => "no fuzz/ directory") if !-f "$fuzz/Makefile";

# one build at a time (a concurrent prove of the same tree waits)
open(my $lock, '>', "$fuzz/.replay-build.lock") or die "lock: $!";
flock($lock, LOCK_EX) or die "flock: $!";
my ($rc, $out, $err) = run_cmd(['make', '-s', '-C', $fuzz, '-j2', 'replay'],
                               timeout => 600);
close($lock);
is($rc, 0, 'replay binaries build (make -C fuzz replay)')
    or BAIL_OUT("fuzz replay build failed (rc $rc):\n$out\n$err");

($rc, $out) = run_cmd(['make', '-s', '-C', $fuzz, 'list']);
my @targets = split ' ', $out;
ok(@targets >= 5, "fuzz targets: @targets");

# the sanitizers' own defaults, except that the first report stops the
# process and UBSan prints where; leaks are checked (the suite's nginx
# runs turn that off, not here)
my %env = (
    ASAN_OPTIONS  => 'detect_leaks=1:halt_on_error=1:abort_on_error=0',
    UBSAN_OPTIONS => 'print_stacktrace=1:halt_on_error=1',
    LSAN_OPTIONS  => '',
);

for my $t (@targets) {
    my $dir = "$fuzz/corpus/$t";
    my @files = grep { -f $_ } glob("$dir/*");
    ok(@files > 0, "$t: corpus has inputs") or next;

    my $bin = "$fuzz/build-replay/replay_$t";
    ($rc, $out, $err) = run_cmd([$bin, $dir], env => \%env, timeout => 60);
    is($rc, 0, "$t: replay exit status") or diag($err);
    like($out, qr/^replayed ${\ scalar @files} inputs$/m,
         "$t: all " . scalar(@files) . " inputs replayed");
    unlike($err, qr/AddressSanitizer|LeakSanitizer|runtime error:|
                    UndefinedBehaviorSanitizer/x,
           "$t: no sanitizer report") or diag($err);
}

done_testing();
