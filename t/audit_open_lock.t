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
# holds audit.lock (flock(1)) across a reload until the test lets it go:
# the new worker is up and answers a CRL GET while the lock is still held,
# refuses an enrollment meanwhile (503: nothing is issued unlogged), and
# once the lock is free opens the log by itself and issues, with the entry
# in a log that verifies.  Not timed: each answer must come while the lock
# is held, which a worker waiting for it could not do.

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
$t->start_nginx($t->render_conf('--workers', 1));

my $pki = $t->pki;
my $dir = "$pki/audit";

sub enroll { return $t->enroll_serial(@_) }

sub crl {
    return $t->curl('GET', 'http://127.0.0.1:' . $t->http_port
                    . '/crl/issuing.crl', max_time => 15, quiet => 1);
}

# 1 while another process holds audit.lock
sub lock_held {
    my ($rc) = run_cmd(['flock', '-n', "$dir/audit.lock", 'true']);
    return $rc != 0;
}

my ($r, $s) = enroll('lock-0');
is($r->{code}, 200, 'enrolled before the reload');
my $c = crl();
is($c->{code}, 200, 'CRL before the reload');

# the lock, held by another process until unspawn() below (a day at most)
my $held = $t->dir . '/held';
$t->spawn('flock', 'flock', "$dir/audit.lock", 'sh', '-c',
          "touch $held; sleep 86400");
for (1 .. 500) {
    last if -e $held;
    sleep 0.02;
}
ok(-e $held, 'audit.lock is held by another process');
ok(lock_held(), '  (flock -n cannot take it)');

# reload_nginx waits until the new worker runs (it takes the title "worker
# process" only once its init_process is done; that waited for the lock
# before) and the old one has closed its listening sockets; it dies after
# 30 s without them
# (the lock stays held until unspawn() below: a worker that waited for
# it would never come up, nor answer what follows)
$t->reload_nginx(keep_old => 1);
note('reloaded: the new worker is up while the lock is held');

$c = crl();
is($c->{code}, 200, 'CRL while audit.lock is held');

($r, $s) = enroll('lock-1', max_time => 15);
is($r->{code}, 503, 'enrollment while the log is not open: 503');
ok(!$s, '  no certificate');

# the lock is released: the worker's open completes by itself
# (the TERM reaches flock, sh and sleep, which share the lock; waitpid
# reaps flock only, and the worker's waiting open takes the lock for a
# moment as soon as it is free: so poll for a free moment)
$t->unspawn('flock');
my $free;
for (1 .. 500) {
    last if ($free = !lock_held());
    sleep 0.01;
}
ok($free, 'the lock is free');
my $t_free = time;
my $ok;
my $deadline = $t_free + 20;
while (time < $deadline) {
    ($r, $s) = enroll('lock-2', max_time => 15);
    $ok = $r->{code} == 200;
    last if $ok;
    sleep 0.2;
}
ok($ok, sprintf('enrollment works once the lock is free (%.1f s after)',
                time - $t_free)) or diag("$r->{code} $r->{body}");
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
