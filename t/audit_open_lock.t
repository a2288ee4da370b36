#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A worker opens its transaction log in a thread-pool task, never on its
# event loop: pki_audit_open() waits for an flock on DIR/audit.lock (held
# by an appender of another process, the janitor across an fdatasync, a
# checkpoint) and reads the file's tail.  It did the first open in
# init_process, so a new worker served nothing while another process held
# the lock: after a reload a CRL waited for the lock (6 s).  Here a shell
# holds audit.lock for 7 s (flock(1)) across a reload: the new worker
# answers a CRL GET at once, refuses an enrollment meanwhile (503: nothing
# is issued unlogged), and once the lock is free opens the log by itself
# and issues, with the entry in a log that verifies.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use PKITest;

plan(skip_all => 'no flock(1)') if !which('flock');

my $t = PKITest->new;
$t->start_redis;
my $master = $t->start_nginx($t->render_conf('--workers', 1));

my $pki = $t->pki;
my $dir = "$pki/audit";
my $hold = 7;

sub enroll { return $t->enroll_serial(@_) }

sub crl {
    my $t0 = time;
    my $r = $t->curl('GET', 'http://127.0.0.1:' . $t->http_port
                     . '/crl/issuing.crl', max_time => 15, quiet => 1);
    return ($r, time - $t0);
}

sub reconfigured {
    return scalar(() = (slurp($t->error_log) // '')
                       =~ /^\S+ \S+ \[notice\] \d+#\d+: reconfiguring$/mg);
}

my ($r, $s) = enroll('lock-0');
is($r->{code}, 200, 'enrolled before the reload');
my ($c, $secs) = crl();
is($c->{code}, 200, 'CRL before the reload');

# the lock, held by another process for $hold seconds
my $held = $t->dir . '/held';
my $t_hold = time;
$t->spawn('flock', 'flock', "$dir/audit.lock", 'sh', '-c',
          "touch $held; sleep $hold");
for (1 .. 100) {
    last if -e $held;
    sleep 0.02;
}
ok(-e $held, 'audit.lock is held by another process');
my ($lrc) = run_cmd(['flock', '-n', "$dir/audit.lock", 'true']);
isnt($lrc, 0, '  (flock -n cannot take it)');

# the new worker by its pid: it takes the title "worker process" only
# once its init_process is done
my %old = map { $_ => 1 } $t->workers_of($master);
ok(kill('HUP', $master), 'reload');
my $new;
for (1 .. 200) {
    ($new) = grep { !$old{$_} } $t->workers_of($master);
    last if $new && reconfigured() >= 1;
    sleep 0.02;
}
ok($new, 'a new worker is forked') or $t->give_up('no new worker');
# the old worker closes its listening sockets on the master's QUIT
sleep 0.3;

($c, $secs) = crl();
is($c->{code}, 200, 'CRL while audit.lock is held');
cmp_ok($secs, '<', 1, sprintf('  answered at once (%.2f s; the lock is held '
                              . 'for %d s)', $secs, $hold));
cmp_ok(time - $t_hold, '<', $hold - 1, '  (and the lock was still held)');

my $t0 = time;
($r, $s) = enroll('lock-1', max_time => 15);
is($r->{code}, 503, 'enrollment while the log is not open: 503');
ok(!$s, '  no certificate');
cmp_ok(time - $t0, '<', $hold - 1, sprintf('  not held until the lock is '
                                           . 'free (%.2f s)', time - $t0));

# the lock is released: the worker's open completes by itself
my $ok;
my $deadline = $t_hold + $hold + 20;
while (time < $deadline) {
    ($r, $s) = enroll('lock-2', max_time => 15);
    $ok = $r->{code} == 200;
    last if $ok;
    sleep 0.2;
}
ok($ok, sprintf('enrollment works once the lock is free (%.1f s after it '
                . 'was taken)', time - $t_hold)) or diag("$r->{code} $r->{body}");
ok($s, '  a certificate');

my $iss;
for (1 .. 100) {
    ($iss) = grep { $_->{type} eq 'issue' && ($_->{serial} // '') eq ($s // '-')
                    && $_->{outcome} eq 'success' } $t->audit_entries($dir);
    last if $iss;
    sleep 0.05;
}
ok($iss, '  its issuance is in the log');

my $log = slurp($t->error_log) // '';
unlike($log, qr/\[alert\].*pki_audit_log/, 'no [alert]: the open waited, it '
       . 'did not fail');
unlike($log, qr/exited on signal/, 'no process died');

$t->stop_nginx;

my ($rc, $out, $err) = run_cmd(["$PKITest::BUILD/pkictl", 'audit', 'verify',
                                $dir, '--pubkey', "$pki/audit-pub.pem"]);
is($rc, 0, 'the log verifies') or diag("$out$err");

done_testing();
