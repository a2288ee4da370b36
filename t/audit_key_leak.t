#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# The transaction log's checkpoint key (pki_audit_log key=FILE) is freed
# with the configuration that made it.  The master parses the
# configuration again at each reload (and nginx -t once): each parse made
# a key object that nothing freed, one more leaked per reload.  Only the
# sanitized build can see that: LeakSanitizer is turned on for nginx here
# (PKITest runs it off), reports go to files, and after three reloads and
# a stop the master reports no leak made by pki_key_new() (nginx -t, which exits without freeing its configuration,
# leaks it with the rest: its report is not looked at; nor does a leak
# change an exit code here).  The plain build skips the test.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use PKITest;

plan(skip_all => 'needs the sanitized build (./build.sh test --sanitize)')
    if !$PKITest::SANITIZE;

my $t = PKITest->new;
$t->start_redis;

my $lsan = $t->dir . '/lsan';
$t->{asan_options} = "detect_leaks=1:detect_odr_violation=0:exitcode=0:"
                     . "log_path=$lsan";

my $conf = $t->render_conf('--workers', 1);
like($conf, qr/pki_audit_log \S+ key=\S+/, 'the log has a checkpoint key');

# libpkicore.so preloaded stays mapped when the master unloads the
# modules at exit, so that the report can name pki_key_new()
my $master = $t->start_nginx($conf,
                             preload => ["$PKITest::BUILD/libpkicore.so"]);

sub reconfigured {
    return scalar(() = (slurp($t->error_log) // '')
                       =~ /^\S+ \S+ \[notice\] \d+#\d+: reconfiguring$/mg);
}

for my $i (1 .. 3) {
    ok(kill('HUP', $master), "reload $i");
    my $t0 = time;
    sleep 0.05 while reconfigured() < $i && time - $t0 < 30;
    is(reconfigured(), $i, "  reconfigured ($i)");
}

# the new workers answer
my $r = $t->curl('GET', $t->est_url('cacerts'), max_time => 10);
is($r->{code}, 200, 'cacerts after the reloads');

$t->stop_nginx;
ok(!kill(0, $master), 'the master is gone');

my $all = join "\n", map { slurp($_) // '' } glob("$lsan.*");
unlike($all, qr/ERROR: AddressSanitizer|runtime error:/,
       'no other sanitizer report');

my $rep = slurp("$lsan.$master");
ok(defined $rep, "the master's leak report") or diag(join ' ', glob("$lsan.*"));
$rep //= '';
unlike($rep, qr/LeakSanitizer has encountered a fatal error/,
       'LeakSanitizer could run');

# (the module that called it is unloaded by then: no name for that
# frame; the keys of pki_ca and the like have always been freed)
my @leaks = grep { /pki_key_new/ }
            split /\n(?=(?:Direct|Indirect) leak of )/, $rep;
is(scalar @leaks, 0, 'no checkpoint key leaked (pki_key_new for '
   . 'pki_audit_log)') or diag(join "\n", @leaks[0 .. ($#leaks > 2 ? 2
                                                                    : $#leaks)]);

done_testing();
