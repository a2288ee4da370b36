#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A PKCS#11 token that stops answering: its C_Sign does not return.
# PKCS#11 cannot cancel a call, so the threads already in it wait; the
# vault's watchdog (pki_key_vault { call_timeout 1s; }) must keep the rest
# of the server alive.  The token is build/p11shim.so over SoftHSM: while
# the file PKI_P11SHIM_HANG_FILE exists, every C_Sign waits for it to go.
# One worker, a pool of 4 threads; two enrollments hang in the token, then
#  (a) once the call has been in flight for call_timeout, every new
#      enrollment is answered 503 with Retry-After at once (< 1.5 s each),
#      without taking a thread: six of them, more than the pool has left;
#      SCEP PKCSReq alike;
#  (b) a request that needs a pool thread but not the token (ACME
#      newNonce, Redis) and one that needs neither (EST cacerts) are
#      still answered;
#  (c) once the token answers, the two hung enrollments finish with
#      certificates that verify, and enrollment works again;
# with one error line for the hang and one notice when it ends.  Then it
# hangs again with all 4 threads in the token: enrollments are still 503
# at once, refused before they are posted (no thread would run a check).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use PKITest;
use SCEPMsg;

my $shim = "$PKITest::BUILD/p11shim.so";
plan(skip_all => "$shim not built") if !-e $shim;

my $t = PKITest->new;
my $dir = $t->dir;
my $hang = "$dir/token-hangs";
END { unlink $hang if $hang; }

# the master opens the vault at configuration time, the workers again:
# both need the shim's environment (nginx keeps it for the workers with
# "env")
$ENV{PKI_P11SHIM_MODULE} = $PKITest::P11;
$ENV{PKI_P11SHIM_HANG_FILE} = $hang;

my $conf = $t->render_conf('--workers', 1, '--threads', 4);
my $mod = quotemeta $PKITest::P11;
ok($conf =~ s{^(\s*)module\s+$mod;}{${1}module $shim;\n${1}call_timeout 1s;}m,
   'the vault uses the shim, with call_timeout 1s');
ok($conf =~ s{^env SOFTHSM2_CONF;}{env SOFTHSM2_CONF;
env PKI_P11SHIM_MODULE;
env PKI_P11SHIM_HANG_FILE;}m, "the shim's environment for the workers");

scep_setup($t, $conf);                  # Redis, nginx, the SCEP client
my $log = $t->error_log;

my ($csr) = $t->make_csr('hang', subj => '/CN=token-hang');

# enroll once: { code, dt, ra, verified }
sub enroll { return $t->est_enroll_timed($csr, @_) }

my $e = enroll('before', 15);
is($e->{code}, 200, 'enrollment while the token answers');
ok($e->{verified}, 'its certificate verifies');

# --- the token hangs: two enrollments wait in C_Sign --------------------------

spew($hang, "hang\n");
my $hung_t0 = time;

my @bg;
for my $k (1 .. 2) {
    my $res = "$dir/bg-$k.txt";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $t->{owner} = -1;               # the parent stops the servers
        $t->{curl_n} = 100000 * $k;
        my $o = enroll("bg-$k", 40);
        spew($res, join("\t", $o->{code}, sprintf('%.3f', $o->{dt}),
                        $o->{verified}) . "\n");
        POSIX::_exit(0);
    }
    push @bg, [$pid, $res];
}

my $line = $t->wait_log(qr/a call has not returned for/, 10);
ok($line, 'the watchdog logged the hang');
my $hang_re = 'token "[^"]+" of vault "demo": a call has not returned for '
              . '\d+ s; its keys answer 503 until it does';
like($line // '', qr/$hang_re/, 'the hang line names the token and the vault');
cmp_ok(time - $hung_t0, '>=', 0.9, 'not before call_timeout');

# (a) new enrollments fail fast
my @fast;
for my $i (1 .. 6) {
    push @fast, enroll("fast-$i", 3);
}
is(scalar(grep { $_->{code} == 503 } @fast), 6,
   'six enrollments while the token hangs: 503 each')
    or diag(join ' ', map { "$_->{code}/" . sprintf('%.2f', $_->{dt}) } @fast);
is(scalar(grep { $_->{dt} < 1.5 } @fast), 6, 'each within 1.5 s')
    or diag(join ' ', map { sprintf('%.3f', $_->{dt}) } @fast);
is(scalar(grep { $_->{ra} =~ /^\d+$/ } @fast), 6, 'each with Retry-After');

# SCEP PKCSReq (the CA signs the certificate)
sub scep_try {
    my ($cn) = @_;
    my $f = req(cn => $cn, challenge => 'demo');
    my $t0 = time;
    my $r = send_msg($f);
    return ($r, time - $t0, $f);
}
my ($sr, $sdt) = scep_try('scep-hung');
is($sr->{code}, 503, 'SCEP PKCSReq while the token hangs: 503');
cmp_ok($sdt, '<', 1.5, 'within 1.5 s');

# (b) the rest of the server answers
my $base = 'https://127.0.0.1:' . $t->https_port . '/acme';
my $t0 = time;
my $n = $t->curl('HEAD', "$base/new-nonce", max_time => 5, quiet => 1,
                 extra => ['-I']);
ok($n->{code} == 200 || $n->{code} == 204,
   "ACME newNonce (a pool thread, Redis) answered: $n->{code}");
ok(($n->{headers}{'replay-nonce'} // '') ne '', 'with a Replay-Nonce');
cmp_ok(time - $t0, '<', 2, 'newNonce within 2 s');

my $c = $t->curl('GET', $t->est_url('cacerts'), max_time => 5, quiet => 1);
is($c->{code}, 200, 'EST cacerts answered');

ok(!waitpid($_->[0], WNOHANG), 'a hung enrollment still waits') for @bg;

# --- the token answers again ----------------------------------------------

unlink $hang;
my $back_t0 = time;

for my $b (@bg) {
    waitpid($b->[0], 0);
    my ($code, $dt, $ver) = split /\t/, (slurp($b->[1]) // "0\t0\t0");
    is($code, 200, "hung enrollment finished after the token answered");
    ok($ver, 'its certificate verifies');
}

$line = $t->wait_log(qr/answers again after \d+ s/, 5);
ok($line, 'the watchdog logged the end of the hang');
like($line // '', qr/token "[^"]+" of vault "demo" answers again after \d+ s/,
     'the end line names the token and the vault');

$e = enroll('after', 15);
is($e->{code}, 200, 'enrollment works again');
ok($e->{verified}, 'its certificate verifies');

my ($sf);
($sr, $sdt, $sf) = scep_try('scep-back');
is($sr->{code}, 200, 'SCEP PKCSReq works again');
is(rep($sr, $sf)->{status}, 0, 'its CertRep is SUCCESS');

# --- it hangs again with every thread of the pool in it --------------------
# Four enrollments enter the token before call_timeout: no thread is left.
# The new enrollments are refused on the event loop before they are posted
# (a check in a pool thread would never run: they would queue behind the
# four until the token answers).

my $off = length(slurp($log) // '');
spew($hang, "hang\n");
@bg = ();
for my $k (1 .. 4) {
    my $res = "$dir/bg2-$k.txt";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $t->{owner} = -1;
        $t->{curl_n} = 200000 + 1000 * $k;
        my $o = enroll("bg2-$k", 40);
        spew($res, join("\t", $o->{code}, sprintf('%.3f', $o->{dt}),
                        $o->{verified}) . "\n");
        POSIX::_exit(0);
    }
    push @bg, [$pid, $res];
}

my $again;
for (1 .. 200) {
    $again = substr(slurp($log) // '', $off);
    last if $again =~ /a call has not returned for/;
    sleep 0.05;
}
like($again, qr/a call has not returned for/, 'the second hang is logged');

@fast = ();
for my $i (1 .. 4) {
    push @fast, enroll("full-$i", 3);
}
is(scalar(grep { $_->{code} == 503 && $_->{dt} < 1.5 } @fast), 4,
   'every thread in the token: enrollments still 503 within 1.5 s')
    or diag(join ' ', map { "$_->{code}/" . sprintf('%.2f', $_->{dt}) } @fast);
($sr, $sdt) = scep_try('scep-full');
ok($sr->{code} == 503 && $sdt < 1.5,
   'and a SCEP PKCSReq is 503 within 1.5 s')
    or diag("$sr->{code} " . sprintf('%.2f', $sdt));

unlink $hang;
for my $b (@bg) {
    waitpid($b->[0], 0);
    my ($code, $dt, $ver) = split /\t/, (slurp($b->[1]) // "0\t0\t0");
    ok($code == 200 && $ver, 'a hung enrollment of the full pool finished '
       . 'with a certificate that verifies');
}

ok($t->wait_log(qr/answers again after \d+ s(?s:.*)answers again after/, 5),
   'the end of the second hang is logged');
$e = enroll('after2', 15);
is($e->{code}, 200, 'enrollment works again after the second hang');

my $all = slurp($log) // '';
my @h = $all =~ /(a call has not returned for \d+ s; its keys answer)/g;
is(scalar @h, 2, 'one hang line for each of the two hangs');
my @b = $all =~ /(answers again after \d+ s)/g;
is(scalar @b, 2, 'one line for the end of each');
unlike($all, qr/\[(?:alert|emerg|crit)\]/, 'no alert, crit or emerg');

$t->stop_nginx;

done_testing();
