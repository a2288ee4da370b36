#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# max_backlog (here 4k, the least) counts what the file has not taken:
# on a healthy disk a burst of issuances whose entries are far more than
# 4k within the second they wait for their sync is answered in full (the
# entries written and not yet synced are bounded on their own: synced at
# once past 4k).  A file that writes but does not sync (fdatasync() fails
# with EIO through an LD_PRELOAD shim switched by a flag file) stops at
# both bounds: 503, memory does not grow, and once it syncs again every
# answered issuance is in the log.
#
# A transaction log file that cannot be written (every write() to
# audit.log fails with ENOSPC, through the same shim and another flag
# file): the entries wait in the worker's memory, up to max_backlog
# and no further.  At the cap, issuance and revocation answer
# 503, said in the error log once a second at most (not once per
# request); memory does not grow.  When the disk takes writes again the
# entries held are written, none lost: every issuance answered during the
# outage is in the log, issuance resumes (a [notice] says so) and the log
# verifies.  A checkpoint is due after every entry (checkpoint=1): a
# checkpoint whose write failed once made its batch pass for written, and
# the batch's entries were dropped.

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
my $flag = $t->dir . '/disk-full';
my $sflag = $t->dir . '/no-sync';

# write() to a file named audit.log fails while $flag exists, fdatasync()
# of it while $sflag does
my @defs = ("-DFLAG=\"$flag\"", "-DSFLAG=\"$sflag\"");
my ($shim, $cerr) = $t->build_shim('diskfull', <<'C', @defs);
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/syscall.h>

static int
is_log(int fd, const char *flag)
{
    char         link[64], path[4096];
    size_t       len;
    ssize_t      l;
    struct stat  st;

    if (fd <= 2 || stat(flag, &st) != 0) {
        return 0;
    }

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    l = readlink(link, path, sizeof(path) - 1);
    if (l <= 0) {
        return 0;
    }

    path[l] = '\0';
    len = strlen(path);

    return len >= 10 && strcmp(path + len - 10, "/audit.log") == 0;
}

ssize_t
write(int fd, const void *buf, size_t n)
{
    if (is_log(fd, FLAG)) {
        errno = ENOSPC;
        return -1;
    }

    return (ssize_t) syscall(SYS_write, fd, buf, n);
}

int
fdatasync(int fd)
{
    if (is_log(fd, SFLAG)) {
        errno = EIO;
        return -1;
    }

    return (int) syscall(SYS_fdatasync, fd);
}
C
ok($shim, 'write() and fdatasync() shim built') or diag($cerr);

my $master = $t->start_nginx($t->render_conf('--workers', 1, '--audit-params',
                                             'max_backlog=4k checkpoint=1'),
                             preload => [$shim]);
my @w0 = $t->workers_of($master);

# one CSR for every enrollment: up to 300 of them, no key made for each
my ($csr) = $t->make_csr('backlog', subj => '/CN=backlog');

sub enroll {
    my ($name) = @_;
    return $t->enroll_serial($name, csr => $csr, max_time => 10);
}

sub revoke { return $t->admin_revoke($_[0], quiet => 1) }

my ($r, $s0) = enroll('before');
is($r->{code}, 200, 'a healthy log: enrollment works');

# --- a healthy disk under load ------------------------------------------------

# each issuance's entry (about 450 bytes held) is written at once and
# synced with the others about once a second: 40 of them, 20 a second
# from one curl, are twice 4k within that second, and none of them is
# refused for it.  (Paced: with a signed checkpoint after every entry
# the file takes a few hundred entries a second, and what it has not
# taken yet is what max_backlog counts.)
my $nburst = 40;
require MIME::Base64;
my $b64 = $t->dir . '/burst.b64';
spew($b64, MIME::Base64::encode_base64($csr));
my @targets = map { ('-o', $t->dir . "/burst-$_.p7",
                      $t->est_url('simpleenroll')) } 1 .. $nburst;
my $tb = time;
my ($brc, $bout, $berr) = run_cmd(
    ['curl', '-sS', '--rate', '20/s', '--max-time', '20',
     '--cacert', $t->pki . '/root.pem', '-u', 'demo:demo',
     '-H', 'Content-Type: application/pkcs10', '--data-binary', "\@$b64",
     '-w', '%{http_code}\n', @targets], timeout => 60);
my $bsecs = time - $tb;
my @burst = $bout =~ /^(\d{3})$/mg;
my @bserials;
for my $i (1 .. $nburst) {
    my $pem = $t->p7_to_pem(slurp($t->dir . "/burst-$i.p7"));
    my $f = $pem ? $t->save_first_cert($pem, "burst-$i") : undef;
    push @bserials, $t->x509_field($f, 'serial') if $f;
}
ok(@burst == $nburst && !(grep { $_ != 200 } @burst)
   && @bserials == $nburst,
   sprintf('a healthy disk: %d enrollments in %.1f s under '
           . 'max_backlog=4k, every one answered', $nburst, $bsecs))
    or diag("curl $brc: @burst $berr");
my $elog = slurp($t->error_log) // '';
unlike($elog, qr/wait for a log file that takes none/,
       '  and no backlog is said');

# --- the disk writes, but does not sync ---------------------------------------

# the entries written wait for a sync that fails: past 4k no more are
# written, the rest wait unwritten up to 4k, and then 503 (memory stays
# bounded); when the file syncs again every answered issuance is in it
spew($sflag, '');
my (@nosync, @scodes, $s503);
for my $i (1 .. 300) {
    my ($r, $s) = enroll("nosync-$i");
    push @scodes, $r->{code};
    push @nosync, $s if $r->{code} == 200 && $s;
    if ($r->{code} == 503) {
        $s503 = $i;
        last;
    }
    last if $r->{code} != 200;
}
ok($s503, 'fdatasync() failing: 503 after ' . scalar(@nosync)
   . ' issuances (the entries written and not synced are bounded too)')
    or diag("codes: @scodes");
ok(@nosync >= 2 && @nosync <= 24,
   '  up to about 4k written and 4k unwritten were held ('
   . scalar(@nosync) . ' entries of about 450 bytes)');

unlink $sflag;
my $sok;
my $ts = time;
while (time - $ts < 20) {
    ($r) = enroll('synced');
    $sok = $r->{code} == 200;
    last if $sok;
    sleep 0.1;
}
ok($sok, sprintf('the file syncs again: enrollment works (%.1f s)',
                 time - $ts));
# the worker's timer says the end of it; what follows is another outage's
my $resumed = qr/\[notice\].*pki_audit_log: the log file takes entries.*resume/;
my $elog2;
for (1 .. 100) {
    $elog2 = slurp($t->error_log) // '';
    last if $elog2 =~ $resumed;
    sleep 0.1;
}
like($elog2, $resumed, '  and says so: [notice]');
my $elen = length($elog2);

# --- the disk is full ---------------------------------------------------------

spew($flag, '');
my (@answered, @codes, $first503);
my $t0 = time;
for my $i (1 .. 300) {
    my ($r, $s) = enroll("full-$i");
    push @codes, $r->{code};
    push @answered, $s if $r->{code} == 200 && $s;
    if ($r->{code} == 503) {
        $first503 = $i;
        last;
    }
    last if $r->{code} != 200;
}
ok($first503, "at the cap: 503 (after " . scalar(@answered)
   . " issuances held for the file)")
    or diag("codes: @codes");
ok(@answered >= 2, '  the entries below the cap were held, the answers '
   . 'went out');
is(scalar(grep { $_ != 200 && $_ != 503 } @codes), 0, '  nothing else');

my @more;
my $t1 = time;
for my $i (1 .. 15) {
    my ($r) = enroll("refused-$i");
    push @more, $r->{code};
}
is(scalar(grep { $_ == 503 } @more), 15, 'every further enrollment: 503')
    or diag("@more");
$r = revoke($s0 // '00');
is($r->{code}, 503, 'a revocation: 503 too') or diag($r->{body});

my $log = substr(slurp($t->error_log) // '', $elen);
my $why = 'transaction log unavailable \(transaction log: the entries not '
          . 'yet written reached max_backlog\)';
like($log, qr/est: simpleenroll from \S+ failed: $why/,
     'the refusal names the cause');
my $full = 'pki_audit_log: (\d+) bytes of entries wait for a log file that '
           . 'takes none \(max_backlog 4096\)';
my @said = $log =~ /\[error\].*$full/g;
ok(@said >= 1, 'the worker says the log is full: [error] line');
my $secs = time - $t1 + 1;
ok(@said <= $secs + 2, scalar(@said) . " such lines in about "
   . sprintf('%.0f', $secs) . ' s: at most one a second, not one per '
   . 'request');
ok(!(grep { $_ > 4096 + 4096 } @said),
   '  the bytes held stay near the cap (' . join(', ', @said) . ')');

# --- the disk takes writes again -----------------------------------------------

unlink $flag;
my $ok;
my $t2 = time;
while (time - $t2 < 20) {
    ($r) = enroll('after');
    $ok = $r->{code} == 200;
    last if $ok;
    sleep 0.1;
}
ok($ok, sprintf('the file takes the entries: enrollment works again '
                . '(%.1f s)', time - $t2));

my $el;
for (1 .. 100) {
    $el = substr(slurp($t->error_log) // '', $elen);
    last if $el =~ $resumed;
    sleep 0.1;
}
my $n = () = $el =~ /$resumed/g;
is($n, 1, '  and says so once: [notice]');

# every issuance answered while the file took nothing is in it now (the
# file has them, none dropped; the stream is not what the test reads)
my %logged;
for (1 .. 100) {
    %logged = map { ($_->{serial} // '') => 1 }
              grep { $_->{type} eq 'issue' && $_->{outcome} eq 'success' }
              $t->audit_entries;
    last if !grep { !$logged{$_} } @answered;
    sleep 0.1;
}
my @lost = grep { !$logged{$_} } @answered;
is(scalar @lost, 0, 'every issuance answered during the outage ('
   . scalar(@answered) . ') is in the log') or diag("@lost");
@lost = grep { !$logged{$_} } @bserials, @nosync;
is(scalar @lost, 0, '  and every one of the burst and of the sync outage ('
   . scalar(@bserials) . ' + ' . scalar(@nosync) . ')') or diag("@lost");

$r = revoke($s0 // '00');
is($r->{code}, 200, 'revocation works again') or diag($r->{body});

is_deeply([$t->workers_of($master)], \@w0, 'the worker survived');
$t->stop_nginx;

my ($vrc, $vout, $verr) = run_cmd(["$PKITest::BUILD/pkictl", 'audit',
                                   'verify', "$pki/audit", '--pubkey',
                                   "$pki/audit-pub.pem"]);
is($vrc, 0, 'the log verifies') or diag("$vout$verr");

done_testing();
