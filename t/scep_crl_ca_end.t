#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# SCEP GetCRL of a CA whose certificate ends while nginx runs: before its
# end a SUCCESS CertRep carries the CRL, which ends at the CA's notAfter
# and verifies; after it no CRL is signed (as at the CRL location), and
# GetCRL answers HTTP 503 with Retry-After, as the CRL location does (it
# was 500), the error log saying why.  A CertRep FAILURE would blame the
# request (every failInfo does) and be one more signature by the expired
# CA key.  Our CMS client (t/lib/scepmsg.c) builds the messages.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use PKITest;
use SCEPMsg;

my $t = PKITest->new;
my $dir = $t->dir;
my $cadir = "$dir/shortca";
PKITest::openssl_ca_dir($cadir,
    "basicConstraints = critical,CA:TRUE\n" .
    "keyUsage = critical,keyCertSign,cRLSign,digitalSignature,"
    . "keyEncipherment\n" .
    "subjectKeyIdentifier = hash\n");

# an RSA CA (SCEP's CA mode decrypts with it) ending 50 s from now
my $end = int(time) + 50;
PKITest::openssl_or_die('req', '-new', '-newkey', 'rsa:2048', '-nodes',
    '-keyout', "$cadir/ca.key", '-subj', '/CN=Short-lived SCEP CA',
    '-out', "$cadir/ca.csr");
PKITest::openssl_ca_sign($cadir, 'ca', 'ca', $end - 3600, $end);

(my $conf = $t->render_conf) =~ s/(\n    pki_ca issuing \{)/
    pki_ca shortca {
        certificate $cadir\/ca.pem;
        key $cadir\/ca.key;
        templates scep;
    }
$1/ or die 'no pki_ca issuing';
$conf =~ s/(\n        location \/scep \{)/
        location \/scep-short {
            scep shortca scep;
        }
$1/ or die 'no \/scep location';

my ($base, undef, $k1, undef, $tool) = scep_setup($t, $conf);
my $ca = "$cadir/ca.pem";
my $cas = $t->x509_field($ca, 'serial');

ok(time < $end - 5, 'nginx up before the CA ends')
    or BAIL_OUT('nginx took too long to start');

# GetCRL naming the CA certificate (its subject and serial, as sscep does)
sub getcrl {
    return req(type => 22, getcert => $cas, issuer => $ca, rcpt => $ca);
}

my $f = getcrl();
my $r = send_msg($f, '/scep-short');
is($r->{code}, 200, 'GetCRL before the CA\'s end: 200') or diag($r->{body});
spew("$dir/rep1.der", $r->{body} // '');
my ($rc, $o, $e) = run_cmd([$tool, 'rep', '--in', "$dir/rep1.der", '--rcpt',
    $ca, '--key', $k1, '--req', $f, '--out', "$dir/crl1.pem"]);
like($o, qr/status=0/, '  SUCCESS') or diag($o . $e);
($rc, $o, $e) = run_cmd(['openssl', 'crl', '-in', "$dir/crl1.pem", '-noout',
                         '-nextupdate', '-CAfile', $ca]);
like($o . $e, qr/verify OK/, '  its CRL verifies with the CA');
require Time::Piece;
my ($nu) = ($o // '') =~ /nextUpdate=(.+)/;
$nu =~ s/\s+/ /g if defined $nu;
is(defined $nu ? Time::Piece->strptime($nu, '%b %d %H:%M:%S %Y GMT')->epoch
               : -1, $end, '  and ends at the CA\'s notAfter');

# past the CA's end
sleep($end + 2 - time) if time < $end + 2;

my $off = length(slurp($t->error_log) // '');
$f = getcrl();
$r = send_msg($f, '/scep-short');
is($r->{code}, 503, 'GetCRL after the CA\'s end: 503 (no CRL is signed)')
    or diag($r->{body});
like($r->{headers}{'retry-after'} // '', qr/^\d+$/, '  with Retry-After');
like($r->{headers}{'content-type'} // '', qr{^text/plain},
     '  a text/plain reason, not a CertRep');
my $log = substr(slurp($t->error_log) // '', $off);
like($log, qr/shortca.*has expired: it signs nothing until it is renewed \(no CRL\)/,
     '  the error log says why');

# the issuing CA (not ended) still answers GetCRL
$f = req(type => 22,
         getcert => $t->x509_field($t->pki . '/issuing.pem', 'serial'),
         issuer => $t->pki . '/issuing.pem');
$r = send_msg($f);
is($r->{code}, 200, 'GetCRL of the issuing CA at /scep: 200');
my $h = rep($r, $f);
is($h->{status}, 0, '  SUCCESS') or diag($h->{raw});

$t->stop_nginx;
done_testing();
