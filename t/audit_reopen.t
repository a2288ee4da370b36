#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A worker whose transaction log did not open at start (here audit.lock
# cannot be opened: a directory is in its place) refuses issuance and
# revocation with 503, and tries the open again by itself from a
# thread-pool task with a backoff (1 s doubling): each failed try is one
# [error] line, the open that works one [notice] line; from then on it
# issues and revokes, with the entries in the log and the log intact.
# No reload is needed.  nginx's cache manager and loader (proxy_cache_path)
# arm no such timer: they do not die.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use PKITest;

my $t = PKITest->new;
$t->start_redis;

my $pki = $t->pki;
my $dir = $t->dir . '/audit-late';
mkdir $dir or die "mkdir $dir: $!";
mkdir "$dir/audit.lock" or die "mkdir $dir/audit.lock: $!";

sub entries { return $t->audit_entries($dir) }

sub enroll { return $t->enroll_serial(@_) }

sub revoke { return $t->admin_revoke(@_) }

(my $conf = $t->render_conf('--workers', 1, '--audit', $dir)) =~
    s{^(\s*http\s*\{)}{$1\n    proxy_cache_path $dir/../cache keys_zone=pkiaudit:1m;}m
    or BAIL_OUT('no http block in the config');
my $master = $t->start_nginx($conf);
# the worker processes only, not proxy_cache_path's cache manager and
# loader
my @w0 = $t->workers_of($master, 'worker');

my ($r, $s) = enroll('late-1');
is($r->{code}, 503, 'log not open: enrollment answers 503');
ok(!$s, '  no certificate returned');
like(slurp($t->error_log) // '',
     qr/\[alert\].*pki_audit_log .*audit\.lock.*refused/,
     '  the worker said why at start');

# the retries (1 s after the start, then 2 s after that) fail the same
# way, one [error] line each
my $el = $t->wait_log(qr/\[error\].*pki_audit_log .*audit\.lock
                         .*still\ refused .*next\ try\ in\ 2000\ ms/x, 15);
ok($el, 'a retry failed: one [error] line') or diag(slurp($t->error_log));
($r, $s) = enroll('late-2');
is($r->{code}, 503, '  still 503 meanwhile');
$el = $t->wait_log(qr/next try in 4000 ms/, 15);
ok($el, 'the next one 2 s later, then the wait doubles')
    or diag(slurp($t->error_log));

# the directory becomes usable: the worker opens the log by itself
rmdir "$dir/audit.lock" or die "rmdir: $!";
my $t0 = time;
$el = $t->wait_log(
    qr/\[notice\].*pki_audit_log .*opened \(try \d+\).*resume/, 40);
ok($el, sprintf('the log opened without a reload (%.1f s): [notice] line',
                time - $t0)) or diag(slurp($t->error_log));

my $fails = () = ($el // '') =~ /still refused/g;
ok($fails >= 2 && $fails <= 4, "one [error] line per failed try ($fails), "
   . 'not a flood');

my $ok;
for (1 .. 50) {
    ($r, $s) = enroll('late-3');
    $ok = $r->{code} == 200;
    last if $ok;
    sleep 0.1;
}
ok($ok, 'enrollment works again') or diag("$r->{code} $r->{body}");
ok($s, '  a certificate returned');

$r = revoke($s // '00');
is($r->{code}, 200, 'revocation works again') or diag($r->{body});

my ($iss, $rev);
for (1 .. 100) {
    my @e = entries();
    ($iss) = grep { $_->{type} eq 'issue' && ($_->{serial} // '') eq ($s // '')
                    && $_->{outcome} eq 'success' } @e;
    ($rev) = grep { $_->{type} eq 'revoke' && ($_->{serial} // '') eq ($s // '')
                  } @e;
    last if $iss && $rev;
    sleep 0.05;
}
ok($iss, '  the issuance is in the log');
ok($rev, '  the revocation is in the log');

ok(@w0 == 1, 'one worker');
is_deeply([$t->workers_of($master, 'worker')], \@w0,
          'the same worker, no respawn');
unlike(slurp($t->error_log) // '', qr/exited on signal/,
       'no process died (cache manager, loader)');

$t->stop_nginx;

my ($rc, $out, $err) = run_cmd(["$PKITest::BUILD/pkictl", 'audit', 'verify',
                                $dir, '--pubkey', "$pki/audit-pub.pem"]);
is($rc, 0, 'the log verifies') or diag("$out$err");

done_testing();
