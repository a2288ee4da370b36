#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# The transaction log's checkpoint key on the PKCS#11 token
# (pki_audit_log key=pkcs11:..., here the root's key) and small files
# (max_size=4096, max_backlog=4k):
#  - a worker that exits (nginx -s quit) signs its exit checkpoint before
#    the key vaults close: the log ends in a checkpoint that
#    `pkictl audit verify --pubkey` accepts;
#  - the token taken away: a rotation whose checkpoint cannot be signed
#    rotates all the same (it refused, and asked the token again, on every
#    later entry, so that revocations answered 503 once max_backlog
#    filled); every revocation is answered and logged, the log verifies
#    with an unsigned stretch, and once the token is back the exit
#    checkpoint is signed again.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use PKITest;

my $t = PKITest->new;
$t->start_redis;

my $pki = $t->pki;
my $tok = $t->token;
my $dir = $t->dir . '/audit-p11';
mkdir $dir or die "mkdir $dir: $!";
my $pkictl = "$PKITest::BUILD/pkictl";
my $json = JSON::PP->new;

my $pub = $t->dir . '/root-pub.pem';
spew($pub, $t->pubkey_of_cert("$pki/root.pem") // '');
ok(-s $pub, "the root's public key (the checkpoint key's)");

my ($tokendir) = (slurp($t->softhsm_conf) // '')
    =~ /^\s*directories\.tokendir\s*=\s*(\S+)\s*$/m;
ok($tokendir && -d $tokendir, "token directory $tokendir")
    or BAIL_OUT('no tokendir in ' . $t->softhsm_conf);

# what is moved away comes back whatever happens (the temp dir cleanup)
my $away;
END { rename($away, $tokendir) if $away; }

# the log after the vault it takes its key from
(my $conf = $t->render_conf('--workers', 1, '--audit', 'off')) =~
    s{^(\s*pki_key_vault\s+demo\s*\{.*?^\s*\}\n)}
     {$1    pki_audit_log $dir "key=pkcs11:token=$tok;object=root;type=private"\n        max_size=4096 max_backlog=4k;\n}ms
    or BAIL_OUT('no pki_key_vault in the config');

sub verify {
    return run_cmd([$pkictl, 'audit', 'verify', $dir, '--pubkey', $pub,
                    @_]);
}

sub last_entry {
    my @l = split /\n/, (slurp("$dir/audit.log") // '');
    return @l ? eval { $json->decode($l[-1]) } // {} : {};
}

# --- the exit checkpoint -------------------------------------------------------

# the PKCS#11 module's loads, by pid: a worker loads it once; the exit
# checkpoint signed after the vaults closed (they unload it) loaded it
# again to log into the token after shutdown
my $loads = $t->dir . '/p11-loads';
my ($shim, $cerr) = $t->build_shim('p11loads', <<'C', qq(-DLOADS="$loads"));
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void *
dlopen(const char *file, int mode)
{
    int    fd, n;
    char   line[256];
    static void  *(*real)(const char *, int);

    if (real == NULL) {
        real = (void *(*)(const char *, int)) dlsym(RTLD_NEXT, "dlopen");
    }

    if (file != NULL && strstr(file, "softhsm") != NULL) {
        fd = open(LOADS, O_WRONLY | O_APPEND | O_CREAT, 0600);
        if (fd >= 0) {
            n = snprintf(line, sizeof(line), "%d %.200s\n", (int) getpid(),
                         file);
            (void) write(fd, line, (size_t) n);
            close(fd);
        }
    }

    return real(file, mode);
}
C
ok($shim, 'dlopen() shim built') or diag($cerr);

my $master = $t->start_nginx($conf, preload => [$shim]);
my ($worker) = $t->workers_of($master, 'worker');

my @serials;
for my $i (1 .. 2) {
    my ($r, $s) = $t->enroll_serial("tok-audit$i");
    is($r->{code}, 200, "enrolled tok-audit$i");
    push @serials, $s;
}

sub worker_loads {
    return scalar grep { /^$worker / } split /\n/, (slurp($loads) // '');
}

my $nload0 = worker_loads();
ok($nload0 >= 1, "the worker ($worker) loaded the PKCS#11 module ($nload0)")
    or diag(slurp($loads));
$t->stop_nginx;

my $last = last_entry();
is($last->{type} // '', 'checkpoint', 'after nginx -s quit the log ends in '
   . 'a checkpoint');
ok($last->{sig}, '  signed');
my ($rc, $out, $err) = verify();
is($rc, 0, '  pkictl audit verify --pubkey accepts it') or diag("$out$err");
like($out, qr/\b[1-9]\d* signed checkpoints, 0 entries after/,
     '  nothing unsigned after it') or diag("$out$err");
unlike(slurp($t->error_log) // '', qr/no checkpoint at exit/,
       '  no [error] about it');
my $nload = worker_loads() - $nload0;
is($nload, 0, "  signed before the vaults closed: the exiting worker did "
   . "not load the PKCS#11 module again ($nload)")
    or diag(slurp($loads));

# --- the token away: rotation without a signed checkpoint -------------------

$t->start_nginx($conf);

my ($r, $s) = $t->enroll_serial('tok-audit3');
is($r->{code}, 200, 'enrolled tok-audit3 with the token present');
push @serials, $s;

my @rot0 = glob("$dir/audit-0*.log");
rename($tokendir, "$tokendir.away") or die "rename $tokendir: $!";
$away = "$tokendir.away";

# about 400 bytes each: many rotations of 4 KB files, and max_backlog
# (4 KB) filled many times over if nothing were written
my (%codes, $n503);
$n503 = 0;
for my $k (1 .. 40) {
    my $rr = $t->admin_revoke($serials[$k % @serials], quiet => 1);
    $codes{$rr->{code}}++;
    if ($rr->{code} == 503) {
        $n503++;
        sleep 0.05;
    }
}
is($n503, 0, 'the token away: 40 revocations, none refused (503) ('
   . join(', ', map { "$_: $codes{$_}" } sort keys %codes) . ')');

my @rot1 = glob("$dir/audit-0*.log");
ok(@rot1 >= @rot0 + 2, 'the log rotated meanwhile (' . scalar(@rot0)
   . ' rotated files before, ' . scalar(@rot1) . ' after)');

my $deadline = time + 10;
my $revokes;
while (time < $deadline) {
    $revokes = grep { ($_->{type} // '') eq 'revoke' }
               $t->audit_entries($dir);
    last if $revokes >= 40;
    sleep 0.2;
}
is($revokes, 40, 'every revocation is in the log');

($rc, $out, $err) = verify();
is($rc, 0, 'it verifies (an unsigned stretch)') or diag("$out$err");

# the token back: the exit checkpoint is signed again
rename($away, $tokendir) or die "rename back: $!";
undef $away;

# once the vault opened again (after its backoff): an issuance signs
$deadline = time + 20;
do {
    ($r, $s) = $t->enroll_serial('tok-audit4');
    sleep 0.5 if $r->{code} != 200;
} while ($r->{code} != 200 && time < $deadline);
is($r->{code}, 200, 'the token back: issuance again');

$t->stop_nginx;

$last = last_entry();
is($last->{type} // '', 'checkpoint', 'the token back: the log ends in a '
   . 'checkpoint at exit');
($rc, $out, $err) = verify();
like($out, qr/^OK: .*, 0 entries after the last checkpoint/,
     '  signed: nothing unsigned after it') or diag("$out$err");

$t->stop_all;
done_testing();
