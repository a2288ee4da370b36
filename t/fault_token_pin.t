#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# The PIN file and the processes that log in to the token.
#  - nginx -t warns (does not refuse) when the PIN file is writable by
#    group or others, readable by others or by a group other than that of
#    nginx's user, or owned by another non-root user; a 0600 file owned by
#    root, or 0640 in the workers' group, gets no warning;
#  - only worker processes open the token: nginx's cache manager and cache
#    loader (proxy_cache_path) run the modules' init_process too, and must
#    not load the PKCS#11 module nor log in (checked in /proc/PID/maps);
#  - two vaults on one PKCS#11 module are accepted without a warning: each
#    logs in again by itself after a lost login (core test_key_relogin).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use PKITest;

my $t = PKITest->new;
$t->start_redis;
my $dir = $t->dir;
# no transaction log, no metrics zone: their timer in nginx's cache helpers
# (which have no thread pool) is not this test's subject
my $conf = $t->render_conf('--audit', 'off', '--metrics', 'off');
my $pinfile = $t->pki . '/hsm/pin';
my $pin = slurp($pinfile) // '';

# --- PIN file warnings at nginx -t --------------------------------------------

my $f = "$dir/pin.test";
spew($f, $pin);
(my $c = $conf) =~ s{pin_file \Q$pinfile\E;}{pin_file $f;}
    or BAIL_OUT('pin_file not found in the config');
my $file = $t->write_conf($c, 'pin.conf');

sub check {
    my ($mode, $uid, $gid) = @_;
    chmod $mode, $f;
    chown $uid, $gid // 0, $f;
    return $t->nginx_test($file);
}

my ($ok, $out) = check(0600, 0);
ok($ok, 'nginx -t: 0600 root PIN file accepted');
unlike($out, qr/PIN file/, 'and no warning about it') or diag($out);

SKIP: {
    skip 'the config runs nginx as root only when the test is root', 2
        if $> != 0 || $conf !~ /^\s*user\s+root\s*;/m;
    ($ok, $out) = check(0640, 0, 0);
    ok($ok, 'nginx -t: 0640 PIN file of the workers\' group accepted');
    unlike($out, qr/PIN file/, 'and not warned about') or diag($out);
}

($ok, $out) = check(0640, 0, 65534);
ok($ok, 'nginx -t: group-readable PIN file accepted (not refused)');
like($out, qr/\[warn\].*pki_key_vault "\S+": PIN file "\Q$f\E" is readable by group or others \(mode 0640\).* in \S+pin\.conf:\d+/,
     'with a warning naming the mode, file and line') or diag($out);

($ok, $out) = check(0604, 0);
like($out, qr/\[warn\].*readable by group or others \(mode 0604\)/,
     'world-readable: warned') or diag($out);

($ok, $out) = check(0622, 0);
ok($ok, 'nginx -t: group/other-writable PIN file accepted');
like($out, qr/\[warn\].*PIN file "\Q$f\E" is writable by group or others \(mode 0622\)/,
     'with a warning that it is writable') or diag($out);

SKIP: {
    skip 'chown needs root', 2 if $> != 0;
    ($ok, $out) = check(0600, 65534);
    ok($ok, 'nginx -t: PIN file owned by another user accepted');
    like($out, qr/\[warn\].*PIN file "\Q$f\E" is owned by uid 65534, neither root nor/,
         'with a warning about its owner') or diag($out);
}
chown 0, 0, $f;
chmod 0600, $f;

# --- two vaults on one PKCS#11 module -------------------------------------------

unlike($out, qr/uses the PKCS#11 module/, 'one vault: no warning about it');
my $second = "\n\n    pki_key_vault second {\n        module $PKITest::P11;\n"
    . "        token " . $t->token . ";\n        pin_file $pinfile;\n    }";
(my $two = $conf) =~ s/(pki_key_vault\s+\S+\s*\{[^}]*\})/$1$second/
    or BAIL_OUT('no pki_key_vault block in the config');
($ok, $out) = $t->nginx_test($t->write_conf($two, 'two.conf'));
# key URIs name the token, and the first vault of a token takes them: a
# second vault of the same token would never sign (two vaults on one
# module, each of its own token, are taken: each recovers a lost login by
# itself)
ok(!$ok && $out =~ /\[emerg\].*pki_key_vault "second": token "\Q@{[ $t->token ]}\E" is pki_key_vault "\S+"'s already.* in \S+two\.conf:\d+/,
   'nginx -t: a second vault of the same token is refused, naming both')
    or diag($out);

my $s = $pin =~ s/\s+//gr;
unlike($out, qr/\Q$s\E/, 'the PIN is in no nginx -t output') if length $s;

# --- only workers open the token -------------------------------------------------

(my $cc = $conf) =~ s{^(\s*http\s*\{)}{$1\n    proxy_cache_path $dir/cache keys_zone=pkitest:1m;}m
    or BAIL_OUT('no http block in the config');
my $master = $t->start_nginx($cc);

sub children {
    my %p;
    for (split /\n/, `ps -o pid=,args= --ppid $master 2>/dev/null`) {
        $p{$1} = $2 if /^\s*(\d+)\s+(.*?)\s*$/;
    }
    return %p;
}

sub has_module {
    my ($pid) = @_;
    my $maps = slurp("/proc/$pid/maps") // '';
    my $mod = $PKITest::P11 =~ s{.*/}{}r;
    return $maps =~ /\Q$mod\E/ ? 1 : 0;
}

my %kids;
my $deadline = time + 10;
while (time < $deadline) {
    %kids = children();
    last if grep { /cache loader/ } values %kids;
    sleep 0.05;
}
my $helpers_up = time;
sleep 0.5;    # init_process of every child is done by then

my @workers = grep { $kids{$_} =~ /worker process/ } keys %kids;
my @helpers = grep { $kids{$_} =~ /cache (?:manager|loader)/ } keys %kids;
ok(@workers >= 1, 'nginx runs ' . scalar(@workers) . ' worker(s)');
is(scalar(@helpers), 2, 'and a cache manager and a cache loader')
    or diag(explain(\%kids));
is(scalar(grep { has_module($_) } @workers), scalar(@workers),
   'every worker loaded the PKCS#11 module');
is(scalar(grep { has_module($_) } @helpers), 0,
   'no cache helper loaded it (no C_Initialize, no login)')
    or diag(join "\n", map { "$_ $kids{$_}" } grep { has_module($_) } @helpers);

my $r = $t->est_post('simpleenroll', ($t->make_csr('pin', subj => '/CN=pin-test'))[0],
                     max_time => 15, quiet => 1);
is($r->{code}, 200, 'the workers enroll');

# past the helpers' first timers: 3 s of their life
sleep($helpers_up + 3 - time) if time < $helpers_up + 3;
my $log = slurp($t->error_log) // '';
unlike($log, qr/\[(?:emerg|alert|crit)\]/, 'no emerg/alert/crit in the error log')
    or diag($log);

$t->stop_nginx;

# --- the same with the transaction log and the metrics zone -------------------

# their timers used to run in the cache helpers too, which have no thread
# pool: the helpers died (signal 11) a second or two after the start
(my $full = $t->render_conf) =~
    s{^(\s*http\s*\{)}{$1\n    proxy_cache_path $dir/cache2 keys_zone=pkitest2:1m;}m
    or BAIL_OUT('no http block in the config');
$t->start_nginx($full);
sleep 3;
$log = slurp($t->error_log) // '';
unlike($log, qr/exited on signal|\[(?:emerg|alert|crit)\]/,
       'with the transaction log and metrics: no helper dies, no '
       . 'emerg/alert/crit') or diag($log);
$t->stop_nginx;

done_testing();
