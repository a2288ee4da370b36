#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A worker stopped while its thread pool's queue is full: nginx skips the
# pool's exit (it cannot post its exit task), so a pool thread still runs
# a task (here an enrollment waiting on a stopped Redis) after the module's
# one-second wait for the threads.  Returning to nginx then would free the
# keys, CAs, Redis handles and the pool itself under that task (nginx
# destroys the cycle's pool, then OPENSSL_cleanup runs at exit).  The
# worker instead writes the log's queued entries and its checkpoint, says
# so ([notice]) and ends there: the master sees an exit, not a signal,
# and starts another worker, which enrolls once Redis answers again; the
# log verifies.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use PKITest;

my $t = PKITest->new;
$t->start_redis;

# one pool thread, one queued task: the second enrollment fills the queue
my $conf = $t->render_conf('--workers', 1, '--threads', 1,
                           '--redis-timeout', '5s');
$conf =~ s/max_queue=4096/max_queue=1/
    or $t->give_up('no max_queue in the config');
my $master = $t->start_nginx($conf);
my ($w) = $t->workers_of($master);
ok($w, "one worker ($w)");

my ($r, $s) = $t->enroll_serial('before');
is($r->{code}, 200, 'an enrollment before');

# Redis stopped: the first enrollment's task waits on it in the one
# thread, the second waits in the queue, a third is shed
my $rpid = $t->{children}{redis};
my ($csr) = $t->make_csr('held', subj => '/CN=held');
require MIME::Base64;
my $b64 = $t->dir . '/held.b64';
spew($b64, MIME::Base64::encode_base64($csr));
# Redis stopped, two enrollments held in the one thread
# and the queue; the third is shed
sub fill_queue {
    my ($what, @names) = @_;
    kill('STOP', $rpid);
    for my $n (@names) {
        $t->spawn("curl$n", 'curl', '-sk', '-m', '60', '-u', 'demo:demo',
                  '-H', 'Content-Type: application/pkcs10',
                  '--data-binary', "\@$b64",
                  '-o', $t->dir . "/held$n.out", $t->est_url('simpleenroll'));
        sleep 0.3;
    }
    my $r = $t->curl('POST', $t->est_url('simpleenroll'),
                     user => 'demo:demo', data_file => $b64,
                     headers => ['Content-Type: application/pkcs10'],
                     max_time => 20, quiet => 1);
    is($r->{code}, 503, "$what: a third enrollment is shed: the queue is full")
        or diag($r->{body});
}
fill_queue('workers', 1, 2);

# the worker told to stop at once: its pool's exit cannot be posted
ok(kill('TERM', $w), 'SIGTERM to the worker');
# (the log's janitor thread is stopped first: it waits for its own Redis
# call, up to the 5 s timeout)
my $log = $t->wait_log(qr/pki: exit with pool threads still running/, 60);
like($log // '', qr/\[warn\].*pki: worker threads still running at exit/,
     'the module found a pool thread still running after its wait');
like($log // '', qr/\[notice\].*pki: exit with pool threads still running/,
     'and ended the process itself ([notice])');
my $gone;
for (1 .. 100) {
    $gone = !kill(0, $w);
    last if $gone;
    sleep 0.1;
}
ok($gone, 'the worker is gone');

kill('CONT', $rpid);
my ($w2, $ok);
for (1 .. 100) {
    ($w2) = grep { $_ != $w } $t->workers_of($master);
    last if $w2;
    sleep 0.1;
}
ok($w2, 'the master started another worker');
my $deadline = time + 20;
while (time < $deadline) {
    ($r) = $t->enroll_serial('after', max_time => 10);
    $ok = $r->{code} == 200;
    last if $ok;
    sleep 0.2;
}
ok($ok, 'it enrolls once Redis answers again');

$t->unspawn("curl$_") for 1 .. 2;
$t->stop_nginx;
$log = slurp($t->error_log) // '';
unlike($log, qr/exited on signal/, 'no process died of a signal');

my ($rc, $out, $err) = run_cmd(["$PKITest::BUILD/pkictl", 'audit', 'verify',
                                $t->pki . '/audit', '--pubkey',
                                $t->pki . '/audit-pub.pem']);
is($rc, 0, 'the log verifies') or diag("$out$err");

# The same with master_process off: the one process is told to stop.
# nginx's own exit would free the same pool under the task; the module
# removes the pid file and the listening sockets itself and ends there.
$conf =~ s/^\s*worker_processes\s+\d+\s*;\n//m
    and $conf =~ s/^(\s*)master_process\s+on\s*;/$1master_process off;/m
    or $t->give_up('no worker_processes or master_process in the config');
my $single = $t->start_nginx($conf);
my $pidfile = $t->prefix . '/logs/nginx.pid';
ok(-e $pidfile, "one process ($single), its pid file");
($r) = $t->enroll_serial('single');
is($r->{code}, 200, 'it enrolls');

# nginx runs no init_process after a reload in this mode: the new cycle's
# keys, Redis and pool threads would never start.  The reload is refused
# with its reason, and the running configuration still enrolls
ok(kill('HUP', $single), 'SIGHUP (reload) to the one process');
my $said;
for (1 .. 100) {
    last if ($said = (slurp($t->error_log) // '')
             =~ /\[emerg\].*pki: a reload with "master_process off"/);
    sleep 0.1;
}
ok($said, '  refused, with the reason, in the error log');
($r) = $t->enroll_serial('after reload');
is($r->{code}, 200, '  the running configuration still enrolls');
fill_queue('master_process off', 3, 4);
ok(kill('TERM', $single), 'SIGTERM to nginx');
my $status;
for (1 .. 600) {
    last if waitpid($single, POSIX::WNOHANG()) == $single
            && defined($status = $?);
    sleep 0.1;
}
delete $t->{children}{nginx};
kill('CONT', $rpid);
$t->unspawn("curl$_") for 3 .. 4;
ok(defined $status, 'nginx ended');
is($status // -1, 0, 'with exit code 0, not a signal');
$log = slurp($t->error_log) // '';
like($log, qr/\[notice\].*pki: exit with pool threads still running/,
     'through the module\'s exit');
ok(!-e $pidfile, 'the pid file is removed');
$t->check_sanitizer_file($t->error_log, 'nginx error log');

done_testing();
