#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# OCSP never answers good for a serial the CA did not issue (DESIGN.md
# invariant 3), even when a record of it sits under the CA's name: `pkictl
# issue --redis --ca-name issuing` with another CA's certificate and key,
# and with a key that replaced the CA's under the same subject (a re-key).
# The CertID names the configured "issuing" CA and the serial of such a
# record: the answer is unknown, as for a serial never issued, from the
# signer and from the response cache alike, and the error log names it.
# A certificate of the issuing CA's own key is the CA's, though, even when
# its authorityKeyIdentifier is not the subjectKeyIdentifier of the
# configured issuing.pem: issued under a certificate of the same subject
# and key with another SKI method (RFC 7093's), it is good, then revoked.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw(sha256);
use PKITest;

my $t = PKITest->new;
my $pkictl = "$PKITest::BUILD/pkictl";
$t->start_redis;
$t->start_nginx;
my $pki = $t->pki;
my $dir = $t->dir;
my $url = 'http://127.0.0.1:' . $t->http_port . '/ocsp';
my $sock = $t->redis_sock;

# the OCSP status of SERIAL (hex) for the configured issuing CA
sub status_of {
    my ($serial) = @_;
    my ($rc, $out, $err) = run_cmd(['openssl', 'ocsp', '-issuer',
        "$pki/issuing.pem", '-serial', "0x$serial", '-url', $url,
        '-CAfile', "$pki/root.pem", '-verify_other', "$pki/issuing.pem",
        '-no_nonce', '-timeout', '10'], timeout => 20);
    return $1 if $out =~ /0x\Q$serial\E:\s*(good|revoked|unknown)\b/i;
    return "error: $out $err";
}

# a certificate CA (cert, key) issues and records under "issuing"; ARGS
# go to pkictl issue (the vault of a token key)
sub issue_as_issuing {
    my ($name, $cacert, $cakey, @args) = @_;
    my $k = new_p256_key("$dir/$name-ee.key");
    openssl_or_die('req', '-new', '-key', $k, '-subj', "/CN=$name",
                   '-out', "$dir/$name.csr");
    my ($rc, undef, $err) = run_cmd([$pkictl, 'issue', '--ca-cert', $cacert,
        '--ca-key', $cakey, '--profile', 'client', '--csr', "$dir/$name.csr",
        '--days', '5', '--out', "$dir/$name.pem", '--redis', "unix:$sock",
        '--ca-name', 'issuing', '--audit-log', $t->pki . '/audit', @args],
        env => { SOFTHSM2_CONF => $t->softhsm_conf });
    is($rc, 0, "$name: pkictl issue --redis --ca-name issuing") or diag($err);
    my ($serial) = openssl_or_die('x509', '-in', "$dir/$name.pem", '-noout',
                                  '-serial') =~ /serial=(\w+)/;
    like($t->redis('HGET', "pki:{ca:issuing}:cert:$serial", 'status'), qr/good/,
       "$name: its record is good under {ca:issuing}");
    return $serial;
}

# control: a certificate the issuing CA did issue is good
my $own = $t->enroll_cn('ocsp-own');
$t->give_up('enrollment failed') if !$own;
is($t->ocsp_status($own), 'good', 'certificate of the issuing CA: good');

# another CA
new_p256_key("$dir/alt.key");
my ($rc, undef, $err) = run_cmd([$pkictl, 'selfsign', '--key',
    "$dir/alt.key", '--subject', '/O=t/CN=alt root', '--days', '30',
    '--out', "$dir/alt.pem"]);
is($rc, 0, 'another CA') or diag($err);

my $alt = issue_as_issuing('alt-leaf', "$dir/alt.pem", "$dir/alt.key");
is(status_of($alt), 'unknown', 'another CA\'s certificate: unknown');
is(status_of($alt), 'unknown', 'asked again (response cache): unknown');

# the issuing CA's subject with a new key: a re-key under the same name
my ($subj) = openssl_or_die('x509', '-in', "$pki/issuing.pem", '-noout',
                            '-subject', '-nameopt', 'compat')
    =~ /^subject=(\S.*?)\s*$/m;
new_p256_key("$dir/rekey.key");
($rc, undef, $err) = run_cmd([$pkictl, 'selfsign', '--key',
    "$dir/rekey.key", '--subject', $subj, '--days', '30',
    '--out', "$dir/rekey.pem"]);
is($rc, 0, "the issuing CA's subject ($subj) with a new key") or diag($err);

my $rk = issue_as_issuing('rekey-leaf', "$dir/rekey.pem", "$dir/rekey.key");
is(status_of($rk), 'unknown', 'same issuer name, other key: unknown');

# the issuing CA's subject and token key certified again with another
# subjectKeyIdentifier: RFC 7093 method 1 (SHA-256 of the key, leftmost 160
# bits) where pkictl's is SHA-1.  A certificate issued under it by the
# issuing key carries that identifier as its AKI, which the configured
# issuing.pem's SKI is not: the signature decides, and it is the CA's own
sub ski_of {
    my ($cert) = @_;
    my ($hex) = openssl_or_die('x509', '-in', $cert, '-noout', '-ext',
                               'subjectKeyIdentifier')
        =~ /Identifier:\s*\n\s*([0-9A-F:]+)/;
    return $hex // 'none';
}

sub aki_of {
    my ($cert) = @_;
    my ($hex) = openssl_or_die('x509', '-in', $cert, '-noout', '-ext',
                               'authorityKeyIdentifier')
        =~ /Identifier:\s*\n\s*(?:keyid:)?([0-9A-F:]+)/;
    return $hex // 'none';
}

spew("$dir/issuing.pub", openssl_or_die('x509', '-in', "$pki/issuing.pem",
                                        '-noout', '-pubkey'));
my $spki = openssl_or_die('pkey', '-pubin', '-in', "$dir/issuing.pub",
                          '-outform', 'DER');
# the subjectPublicKey BIT STRING's value: a P-256 point, 65 octets, last
my $ski = join ':', map { sprintf('%02X', $_) }
    unpack('C20', sha256(substr($spki, -65)));
spew("$dir/ski.ext", "basicConstraints = critical, CA:TRUE, pathlen:0\n"
     . "keyUsage = critical, keyCertSign, cRLSign\n"
     . "subjectKeyIdentifier = $ski\n");
openssl_or_die('x509', '-new', '-subj', $subj, '-force_pubkey',
               "$dir/issuing.pub", '-CA', "$dir/alt.pem", '-CAkey',
               "$dir/alt.key", '-days', '30', '-extfile', "$dir/ski.ext",
               '-out', "$dir/ski.pem");
is(ski_of("$dir/ski.pem"), $ski, 'the issuing CA\'s key with another SKI');
isnt($ski, ski_of("$pki/issuing.pem"), '  not the SKI of issuing.pem');

my @vault = ('--module', $PKITest::P11, '--token', $t->token,
             '--pin-file', "$pki/hsm/pin");
my $ca_key = 'pkcs11:token=' . $t->token . ';object=issuing;type=private';
my @ski = map { issue_as_issuing("ski-leaf$_", "$dir/ski.pem", $ca_key,
                                 @vault) } (1, 2);
is(aki_of("$dir/ski-leaf1.pem"), $ski, 'its certificate\'s AKI: that SKI');
is(status_of($ski[0]), 'good', 'AKI not the CA\'s SKI, the CA\'s key: good');
is(status_of($ski[0]), 'good', 'asked again (response cache): good');

my $rv = $t->admin_revoke($ski[1]);
is($rv->{code}, 200, 'another one revoked through the admin API');
my $st;
for (1 .. 20) {
    $st = status_of($ski[1]);
    last if $st eq 'revoked';
    select(undef, undef, undef, 0.25);
}
is($st, 'revoked', 'AKI not the CA\'s SKI, the CA\'s key, revoked: revoked');

# revoked under the same name: still not this CA's serial
my $r = $t->admin_revoke($alt);
is($r->{code}, 200, 'the other CA\'s record revoked through the admin API');
select(undef, undef, undef, 1.5);
is(status_of($alt), 'unknown', 'its revoked record: unknown, not revoked');

ok($t->wait_log(qr/under CA "issuing" holds a certificate that CA did not /
                . qr/issue/, 10), 'the error log names the record');

is($t->ocsp_status($own), 'good', 'the issuing CA\'s own: still good');

$t->stop_nginx;
done_testing();
