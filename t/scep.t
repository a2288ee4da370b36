#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# SCEP (RFC 8894) with micromdm's scepclient (package scep): GetCACaps
# (DES3 and SHA-1 listed, DES not), GetCACert (RA + CA chain), enrollment
# with the static challenge, a wrong challenge refused, renewal signed by
# the issued certificate, a one-time challenge from the admin API used
# once.  Oracles: the openssl CLI and
# the Redis record.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use PKITest;

plan(skip_all => 'scepclient not installed (package scep)')
    if !-x '/usr/bin/scepclient';

my $t = PKITest->new;
$t->start_redis;
$t->start_nginx;
my $pki = $t->pki;
my $url = 'http://127.0.0.1:' . $t->http_port . '/scep';

# --- GetCACaps / GetCACert ---------------------------------------------------

my $r = $t->curl('GET', "$url?operation=GetCACaps");
is($r->{code}, 200, 'GetCACaps: 200');
my %caps = map { $_ => 1 } split /\r?\n/, $r->{body};
ok($caps{$_}, "GetCACaps: $_") for qw(POSTPKIOperation SHA-256 SHA-512 AES
                                      SCEPStandard Renewal DES3 SHA-1);
# DES3 and SHA-1 are accepted (t/scep_hostile.t): listed, so that jscep
# does not fall back to single DES; single DES is not listed even where
# scep_accept_des is on (this location)
ok(!$caps{DES}, 'GetCACaps: no DES');

$r = $t->curl('GET', "$url?operation=GetCACert");
is($r->{code}, 200, 'GetCACert: 200');
is($r->{headers}{'content-type'}, 'application/x-x509-ca-ra-cert',
   'GetCACert: RA content type');
my ($rc, $out) = run_cmd(['openssl', 'pkcs7', '-inform', 'DER',
                          '-print_certs', '-noout'], stdin => $r->{body});
like($out, qr/subject=.*nginx-pki SCEP RA/, 'GetCACert: RA certificate');
like($out, qr/subject=.*nginx-pki Issuing CA/, 'GetCACert: issuing CA');

$r = $t->curl('GET', "$url?operation=Nope");
is($r->{code}, 400, 'unknown operation: 400');

# --- scepclient --------------------------------------------------------------

my $ra_fp = do {
    my ($rc, $o) = run_cmd(['openssl', 'x509', '-in', "$pki/ra.pem",
                            '-noout', '-fingerprint', '-sha256']);
    $o =~ /=([0-9A-F:]+)/ ? lc($1 =~ s/://gr) : '';
};

# scepclient caches csr.pem/self.pem in its cwd: one directory per client
sub scepclient {
    my ($name, %o) = @_;
    my $d = $t->dir . "/sc-$name";
    mkdir $d;
    my @a = ('scepclient', '-server-url', $o{url} || $url,
             '-private-key', "$d/key.pem", '-certificate', "$d/cert.pem",
             '-cn', $o{cn} || $name, '-ca-fingerprint', $ra_fp);
    push @a, '-challenge', $o{challenge} if defined $o{challenge};
    my ($rc, $out, $err) = run_cmd(['sh', '-c', 'cd "$0" && exec "$@"', $d,
                                    @a], timeout => 30);
    return ($rc, $out . $err, $d);
}

my ($ok, $log, $d) = scepclient('dev1', challenge => 'demo');
is($ok, 0, 'scepclient enrolls with the static challenge') or diag($log);
my $cert = "$d/cert.pem";
ok(-s $cert, 'scepclient wrote the certificate');
my ($vok, $vout) = $t->verify_chain($cert);
ok($vok, 'issued certificate verifies to the root') or diag($vout);
my $text = $t->x509_text($cert) // '';
like($text, qr/Subject:.*CN\s*=\s*dev1/, 'subject CN');
like($text, qr/TLS Web Client Authentication/, 'template EKU');
# RFC 5280 4.1.2.5: notAfter is part of the validity, so the template's 30
# days end a second before notBefore + 30 days
my ($nb, $na) = $t->x509_dates($cert);
is(defined $na ? $na - $nb : undef, 30 * 86400 - 1,
   'template of 30 days: notAfter - notBefore = 30 days - 1 s');
my $serial = $t->x509_field($cert, 'serial');
my $h = $t->redis_hash("pki:{ca:issuing}:cert:$serial");
is($h->{status}, 'good', 'Redis record good');
is($h->{protocol}, 'scep', 'Redis record protocol scep');

# wrong challenge
($ok, $log) = scepclient('dev2', challenge => 'wrong');
isnt($ok, 0, 'wrong challenge refused');
like($log, qr/badRequest/, 'wrong challenge: failInfo badRequest')
    or diag($log);
like(slurp($t->error_log) // '', qr/scep: .*badRequest.*wrong/,
     'wrong challenge: error log line');

# renewal: scepclient signs a RenewalReq with the issued certificate when
# -certificate names an existing file
my $old_serial = $serial;
($ok, $log) = scepclient('dev1');
is($ok, 0, 'scepclient renews with the issued certificate') or diag($log);
my $new_serial = $t->x509_field($cert, 'serial');
isnt($new_serial, $old_serial, 'renewal: a new certificate');
like(slurp($t->error_log) // '', qr/messageType 17 .*SUCCESS/,
     'renewal: logged as RenewalReq (17)');
($vok) = $t->verify_chain($cert);
ok($vok, 'renewed certificate verifies');

# one-time challenge through the admin API
$r = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
              . '/pki/admin/scep/challenges', user => 'admin:admin',
              data => '{"ttl": 300, "cn": "dev3"}',
              headers => ['Content-Type: application/json']);
is($r->{code}, 201, 'admin: one-time challenge created') or diag($r->{body});
my $chal = eval { decode_json($r->{body})->{challenge} } // '';
like($chal, qr/^[0-9a-f]{32}$/, 'admin: challenge is 128 random bits');
($ok, $log) = scepclient('dev3', challenge => $chal);
is($ok, 0, 'one-time challenge enrolls') or diag($log);
($ok, $log) = scepclient('dev3b', cn => 'dev3', challenge => $chal);
isnt($ok, 0, 'one-time challenge reuse refused');
like($log, qr/badRequest/, 'reuse: badRequest');

$t->stop_all;
done_testing();
