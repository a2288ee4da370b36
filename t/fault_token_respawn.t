#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# The PKCS#11 token is away when workers start.  The master closes the keys
# before fork and each worker opens its own in init_process; workers
# respawned (kill -9) while SoftHSM's token directory is renamed away
# cannot open the CA key.  What must hold:
#  - the error log says the key did not open;
#  - enrollment answers 503 with Retry-After, and OCSP tryLater for a
#    request it must sign (a nonce): before, such a worker answered 500
#    ("signing key is not open") and internalError until the next reload;
#  - once the token is back, the same workers (no reload) enroll
#    certificates that verify and answer OCSP good;
#  - the error log never holds the PIN.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use PKITest;

my $t = PKITest->new;
$t->start_redis;
$t->start_nginx;
my $master = $t->{children}{nginx};

my $pin = PKITest::slurp($t->pki . '/hsm/pin') // '';
$pin =~ s/\s+//g;
ok(length $pin >= 8, 'read the PIN file');

my ($tokendir) = (PKITest::slurp($t->softhsm_conf) // '')
    =~ /^\s*directories\.tokendir\s*=\s*(\S+)\s*$/m;
ok($tokendir && -d $tokendir, "token directory $tokendir")
    or BAIL_OUT('no tokendir in ' . $t->softhsm_conf);

# what is moved away must come back whatever happens (the temp dir cleanup)
my $away_now;
END { rename($away_now->[1], $away_now->[0]) if $away_now; }

my ($csr) = $t->make_csr('respawn', subj => '/CN=token-respawn');

# simpleenroll: (code, Retry-After, 1 if a 200's certificate verifies)
my $n = 0;
sub enroll {
    my $r = $t->est_post('simpleenroll', $csr, max_time => 15, quiet => 1);
    my $verified = 0;
    if ($r->{code} == 200) {
        my $pem = $t->p7_to_pem($r->{body});
        my $f = $pem ? $t->save_first_cert($pem, 'respawn-' . ++$n) : undef;
        ($verified) = $f ? $t->verify_chain($f) : (0);
        return ($r->{code}, '', $verified ? 1 : 0, $f);
    }
    return ($r->{code}, $r->{headers}{'retry-after'} // '', 0, undef);
}

# OCSP with a nonce (never from the response cache): the status line
sub ocsp {
    my ($cert) = @_;
    my ($rc, $out, $err) = PKITest::run_cmd(['openssl', 'ocsp', '-issuer',
        $t->pki . '/issuing.pem', '-cert', $cert, '-url',
        'http://127.0.0.1:' . $t->http_port . '/ocsp', '-CAfile',
        $t->pki . '/root.pem', '-timeout', '10'], timeout => 20);
    my $s = "$out $err";
    return $1 if $s =~ /:\s*(good|revoked|unknown)\b/;
    return $1 if $s =~ /Responder Error:\s*(\S+)/;
    $s =~ s/\s+/ /g;
    return 'error: ' . substr($s, 0, 200);
}

my ($code, $ra, $verified, $cert) = enroll();
is($code, 200, 'enrollment with the token present');
ok($verified, 'its certificate verifies');
is(ocsp($cert), 'good', 'OCSP good');

# --- the token goes away, the workers are respawned -------------------------

my @w0 = $t->workers_of($master, 'worker');
is(scalar @w0, 2, "two workers (@w0)");

$away_now = [$tokendir, "$tokendir.away"];
ok(rename($tokendir, "$tokendir.away"), 'token directory moved away');

my $off = length(PKITest::slurp($t->error_log) // '');
kill 'KILL', @w0;

my @w1;
my $deadline = time + 20;
while (time < $deadline) {
    @w1 = $t->workers_of($master, 'worker');
    my %old = map { $_ => 1 } @w0;
    last if @w1 == 2 && !grep { $old{$_} } @w1;
    sleep 0.2;
}
my %old = map { $_ => 1 } @w0;
ok(@w1 == 2 && !grep({ $old{$_} } @w1), "two new workers (@w1)");

ok($t->wait_log(qr/key "pkcs11:[^"]*" did not open/, 20),
   'the error log says the key did not open');

my %codes;
my ($ra_seen, $bad_ra) = (0, 0);
for my $i (1 .. 6) {
    my ($c, $r) = enroll();
    $codes{$c}++;
    if ($c == 503) {
        $ra_seen++ if $r =~ /^\d+$/;
        $bad_ra++ if $r !~ /^\d+$/;
    }
}
is_deeply(\%codes, { 503 => 6 }, 'token away: enrollment 503, never 500 '
          . '(' . join(', ', map { "$_ x $codes{$_}" } sort keys %codes)
          . ')');
is($bad_ra, 0, "each 503 with a Retry-After ($ra_seen)");
is(ocsp($cert), 'trylater', 'OCSP tryLater');

# --- the token comes back ---------------------------------------------------

ok(rename("$tokendir.away", $tokendir), 'token directory back');
$away_now = undef;

my $back = time;
my ($got, $f);
$deadline = $back + 15;
while (time < $deadline) {
    ($got, undef, $verified, $f) = enroll();
    last if $got == 200;
    sleep 0.2;
}
is($got, 200, sprintf('the same workers enroll again by themselves '
   . '(%.1f s)', time - $back));
ok($verified, 'its certificate verifies');
# each worker reopens the key by itself: the one that answers OCSP may not
# be the one that enrolled, so it gets the same time to come back
my $st;
$deadline = $back + 15;
while (time < $deadline) {
    $st = ocsp($cert);
    last if $st eq 'good';
    sleep 0.2;
}
is($st, 'good', sprintf('OCSP good again (%.1f s)', time - $back));

my @w2 = $t->workers_of($master, 'worker');
is("@w2", "@w1", 'no worker restarted');

my $log = substr(PKITest::slurp($t->error_log) // '', $off);
unlike($log, qr/\Q$pin\E/, 'the PIN is not in the error log');
unlike($log, qr/signing key is not open/, 'no "signing key is not open"');

$t->stop_all;
done_testing();
