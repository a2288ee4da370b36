#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Fault matrix (issue 8): nginx binary upgrade under load, the documented
# sequence (nginx docs, "Upgrading Executable on the Fly"):
#   kill -USR2 old master  -> a new master (the same binary, exec'd again
#                              from its absolute path) with its workers;
#                              nginx.pid -> nginx.pid.oldbin
#   kill -WINCH old master -> the old workers finish gracefully
#   kill -QUIT old master  -> the old master exits
# while two EST clients enroll (TLS, a new connection each) and one OCSP
# client asks about a certificate (plain HTTP) all along.  Zero failed
# requests: every answer is 200, every EST certificate verifies, every
# OCSP answer says good; both generations of workers answered.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use PKITest;

# nginx ignores USR2 while its parent is the process that started it
# ("the changing binary signal is ignored"), so it runs daemonized here: its
# masters are not our children; they are stopped by pid (END below too).
my @masters;
END { for my $p (@masters) { kill 'QUIT', $p if $p > 1 } }

my $BIN = '/usr/sbin/nginx';
plan(skip_all => "$BIN not found") if !-x $BIN;

my $t = PKITest->new;
$t->start_redis;
my $dir = $t->dir;
my $prefix = $t->prefix;
my $pidfile = "$prefix/logs/nginx.pid";

# the new binary gets only the environment named by "env" directives: the
# sanitizer runtime must be named too, or the new master cannot load the
# sanitized modules
my $conf = $t->render_conf('--daemon', 'on');
if ($PKITest::SANITIZE) {
    my $envs = "env SOFTHSM2_CONF;\nenv LD_PRELOAD;\nenv ASAN_OPTIONS;\n"
               . "env UBSAN_OPTIONS;";
    $conf =~ s/^env SOFTHSM2_CONF;$/$envs/m or die 'no env line';
}
my $file = $t->write_conf($conf);
my ($tok, $tout) = $t->nginx_test($file);
ok($tok, 'nginx -t') or diag($tout);

# start nginx by its absolute path (USR2 exec()s argv[0])
my ($src, $sout, $serr) = run_cmd([$BIN, '-p', "$prefix/", '-c', $file],
    env => { SOFTHSM2_CONF => $t->softhsm_conf, PKITest::san_env() },
    timeout => 60);
is($src, 0, "$BIN started (daemon)") or diag("$sout$serr");
my $old = (slurp($pidfile) // '') =~ /(\d+)/ ? $1 : 0;
push @masters, $old;
ok($old > 1 && kill(0, $old), "old master $old runs");
sub up {
    my $r = $t->curl('GET', 'http://127.0.0.1:' . $t->http_port . '/',
                     max_time => 2, quiet => 1);
    return $r->{code} == 200;
}
my $dl = time + 30;
sleep 0.1 while !up() && time < $dl;
ok(up(), 'nginx answers');
my @wold = $t->workers_of($old);
is(scalar @wold, 2, "old master $old with two workers");

# --- load --------------------------------------------------------------------

my ($csr) = $t->make_csr('up', subj => '/CN=upgrade');
my $r = $t->est_post('simpleenroll', $csr);
is($r->{code}, 200, 'an enrollment before the upgrade');
my $cert = $t->save_first_cert($t->p7_to_pem($r->{body}) // '', 'up0');
ok($cert, 'its certificate');
my $ocspreq = "$dir/ocsp.req";
my ($orc, $oo, $oe) = run_cmd(['openssl', 'ocsp', '-issuer',
    $t->pki . '/issuing.pem', '-cert', $cert, '-no_nonce',
    '-reqout', $ocspreq]);
is($orc, 0, 'an OCSP request for it') or diag($oe);

$t->start_load('est', 2, sub {
    my ($k, $i) = @_;
    my $x = $t->est_post('simpleenroll', $csr, max_time => 15, quiet => 1);
    my %o = (code => $x->{code}, err => substr("$x->{err}", 0, 200));
    if ($x->{code} == 200) {
        my $pem = $t->p7_to_pem($x->{body});
        my $f = $pem ? $t->save_first_cert($pem, "est-$k-$i") : undef;
        my ($ok, $out) = $f ? $t->verify_chain($f) : (0, 'no certificate');
        $o{verified} = $ok ? 1 : 0;
        $o{err} = substr($out, 0, 300) if !$ok;
        unlink $f if $f && $ok;
    }
    return \%o;
}, max => 90);
$t->start_load('ocsp', 1, sub {
    my $x = $t->curl('POST', 'http://127.0.0.1:' . $t->http_port . '/ocsp',
                     data_file => $ocspreq, max_time => 15, quiet => 1,
                     headers => ['Content-Type: application/ocsp-request']);
    my %o = (code => $x->{code}, err => substr("$x->{err}", 0, 200));
    if ($x->{code} == 200) {
        my $f = "$dir/ocsp-$_[1].der";
        spew($f, $x->{body});
        my ($rc, $out, $err) = run_cmd(['openssl', 'ocsp', '-respin', $f,
            '-issuer', $t->pki . '/issuing.pem', '-cert', $cert,
            '-CAfile', $t->pki . '/root.pem']);
        $o{status} = $out =~ /:\s*(good|revoked|unknown)\b/ ? $1 : 'bad';
        $o{err} = substr("$rc $out $err", 0, 300) if $o{status} ne 'good';
        unlink $f if $o{status} eq 'good';
    }
    return \%o;
}, max => 90);

sub answered_after {
    my ($when) = @_;
    return scalar grep { $_->{t0} > $when } $t->load_results('est');
}

ok(wait_until(20, sub { answered_after(0) >= 4 }), 'load is running');

# 1. USR2: a new master
my $tu = time;
ok(kill('USR2', $old), 'USR2 to the old master');
my $new;
ok(wait_until(30, sub {
    return 0 if !-e "$pidfile.oldbin";
    my $p = slurp($pidfile) // '';
    ($new) = $p =~ /(\d+)/;
    return $new && $new != $old && $t->workers_of($new) == 2;
}), 'new master up with two workers; nginx.pid.oldbin written');
$new //= 0;
is((slurp("$pidfile.oldbin") // '') =~ /(\d+)/ ? $1 : 0, $old,
   'nginx.pid.oldbin names the old master');
my @wnew = $t->workers_of($new);
my $tnew = time;
ok(wait_until(20, sub { answered_after($tnew) >= 4 }),
   'both generations serve for a while');

# 2. WINCH: the old workers finish gracefully
my $twinch = time;
ok(kill('WINCH', $old), 'WINCH to the old master');
# the new master is a child of the old one too
ok(wait_until(30, sub { !grep { $_ != $new } $t->workers_of($old) }),
   'the old workers have exited');
ok(wait_until(20, sub { answered_after($twinch) >= 4 }),
   'the new workers alone serve');

# 3. QUIT: the old master exits
my $tquit = time;
ok(kill('QUIT', $old), 'QUIT to the old master');
ok(wait_until(20, sub { !kill(0, $old) }), 'the old master exited');
push @masters, $new;
ok(!-e "$pidfile.oldbin", 'nginx.pid.oldbin removed');
ok(wait_until(20, sub { answered_after($tquit) >= 4 }),
   'service goes on after the old master left');

ok($t->stop_load('est') && $t->stop_load('ocsp'), 'clients stopped');
my $tend = time;

# --- what the clients saw --------------------------------------------------------

my @est = $t->load_results('est');
my @ocsp = $t->load_results('ocsp');
diag(sprintf('%d enrollments and %d OCSP requests over %.1f s; USR2 at '
             . '+%.1f s, new master ready +%.1f s, WINCH +%.1f s, QUIT '
             . '+%.1f s', scalar @est, scalar @ocsp,
             $tend - $est[0]{t0}, $tu - $est[0]{t0}, $tnew - $est[0]{t0},
             $twinch - $est[0]{t0}, $tquit - $est[0]{t0}));
my @bad = grep { $_->{code} != 200 || !$_->{verified} } @est;
is(scalar @bad, 0, scalar(@est) . ' enrollments across the upgrade: every '
   . 'one 200 with a certificate that verifies')
    or diag(join("\n", map { "$_->{code} $_->{err}" } @bad));
@bad = grep { $_->{code} != 200 || ($_->{status} // '') ne 'good' } @ocsp;
is(scalar @bad, 0, scalar(@ocsp) . ' OCSP requests across the upgrade: '
   . 'every one 200 and good')
    or diag(join("\n", map { "$_->{code} $_->{err}" } @bad));
cmp_ok(scalar(grep { $_->{t0} > $tu && $_->{t1} < $tquit } @est), '>=', 8,
       'enrollments were answered during the upgrade');
my ($slow) = sort { $b <=> $a } map { $_->{t1} - $_->{t0} } @est, @ocsp;
diag(sprintf('slowest answer: %.2f s', $slow // 0));

# the new generation serves alone and is a different process tree
$r = $t->est_post('simpleenroll', $csr);
is($r->{code}, 200, 'an enrollment after the upgrade');
ok($new > 1 && kill(0, $new), 'the new master runs');
isnt($new, $old, 'it is another process');

my $log = slurp($t->error_log) // '';
unlike($log, qr/exited on signal|\[alert\]|\[emerg\]/,
       'no crash, alert or emerg in the log');

kill 'QUIT', $new;
ok(wait_until(20, sub { !kill(0, $new) }), 'new master stopped by QUIT');
@masters = ();
$t->check_sanitizer_file($t->error_log, 'nginx error log');
$t->stop_all;
done_testing();
