#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A Matter DAC batch whose Redis stalls right after the batch's commit ran
# (nginx talks to Redis through t/lib/redis_drop_proxy.py, in its "STALL"
# mode, with pki_redis timeout=200ms): the commit and its first read-back
# get no answer, the abandons of the batch's reservations and the
# withdrawals of its DACs stop at the first with none, and the batch
# answers 503 in about a second (each used to wait the whole timeout: 60
# DACs, over 24 s; 1000 at the default 1 s, over half an hour of a pool
# thread).  The DACs are recorded good and delivered to no one: every
# serial is in the error log at [error], in lines cut between serials,
# for the operator to revoke.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use PKITest;

plan(skip_all => 'ngx_http_matter_module.so not built')
    if !-f "$PKITest::BUILD/ngx_http_matter_module.so";
plan(skip_all => 'python3 not installed') if !-x '/usr/bin/python3';

my $t = PKITest->new;
$t->make_matter_pki($t->pki);
$t->start_redis;

my $arm = $t->dir . '/arm';
my $proxy = $t->start_redis_proxy($arm);

my $conf = $t->render_conf('--redis-timeout', '200ms');
my $sock = $t->redis_sock;
$conf =~ s{\Q$sock\E}{$proxy}g or die 'no Redis socket in the config';
$t->start_nginx($conf);

# the batch commit's script (pki_lua_commit_batch), nothing else
PKITest::spew($arm, "STALL\nlocal late = false\n");

my $t0 = time;
my $r = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
                 . '/matter/dac/batch', data => '{"count": 60}',
                 user => 'demo:demo',
                 headers => [ 'Content-Type: application/json' ],
                 max_time => 120);
my $dt = time - $t0;

ok(!-e $arm, 'the proxy stalled Redis after the batch commit');
is($r->{code}, 503, 'the batch answers 503') or diag($r->{body});
ok($dt < 10, sprintf('... in %.1f s (< 10; a timeout per abandon and per '
                     . 'withdrawal: over 24)', $dt));

# Redis answers again: the commit ran, every DAC is good
PKITest::spew("$arm.release", '');
my @serials = map { /:cert:([0-9A-F]+)$/ ? $1 : () }
              split /\n/, $t->redis_raw('KEYS', 'pki:{ca:matter-pai}:cert:*');
my $good = grep { $t->redis_raw('HGET', "pki:{ca:matter-pai}:cert:$_",
                                'status') =~ /^good/ } @serials;
is(scalar @serials, 60, '60 records');
is($good, 60, '... all good, delivered to no one');

my $el = '';
for (1 .. 50) {
    $el = PKITest::slurp($t->error_log) // '';
    last if $el =~ /matter: \(continued\)/;
    sleep 0.1;
}
my @lines = grep { /matter: (?:CA "matter-pai": |\(continued\))/ }
            split /\n/, $el;
my $head = 'matter: CA "matter-pai": 60 certificate(s) issued, maybe recorded '
           . 'good, delivered to no one and not withdrawn (Redis did not '
           . 'answer one, twice): revoke each';
ok(($lines[0] // '') =~ /\[error\]/ && index($lines[0], $head) >= 0,
   'the error log lists them for the operator, at error')
    or diag($lines[0] // '(none)');
ok(@lines >= 2 && !grep({ !/\[error\]/ || length > 2048 } @lines),
   scalar(@lines) . ' lines, each at [error], under the line size');
my $listed = join ' ', map { /(?:serials:|\(continued\))((?: [0-9A-F]+)+)/
                             ? $1 : () } @lines;
my %in = map { $_ => 1 } split ' ', $listed;
is(scalar(grep { $in{$_} } @serials), 60,
   'every serial listed whole (cut between serials)')
    or diag(join "\n", @lines);

$t->stop_all;
done_testing();
