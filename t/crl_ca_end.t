#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A CA whose certificate ends while nginx runs: its CRL ends with it
# (nextUpdate cut to the CA's notAfter), and once it has ended no CRL is
# signed, as no certificate is: the CRL location answers 503 with
# Retry-After and the error log says why.  Before, every check after the
# CA's end signed a CRL dated after it, of the full lifetime, which no
# relying party can validate (its signer's certificate has expired).

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
my $cadir = "$dir/shortca";
PKITest::openssl_ca_dir($cadir);

# a CA certificate ending 45 s from now (nginx -t only warns about it)
my $end = int(time) + 45;
PKITest::openssl_or_die('req', '-new', '-newkey', 'ec', '-pkeyopt',
    'ec_paramgen_curve:P-256', '-nodes', '-keyout', "$cadir/ca.key",
    '-subj', '/CN=Short-lived CA', '-out', "$cadir/ca.csr");
PKITest::openssl_ca_sign($cadir, 'ca', 'ca', $end - 3600, $end);

(my $conf = $t->render_conf) =~ s/(\n    pki_ca issuing \{)/
    pki_ca shortca {
        certificate $cadir\/ca.pem;
        key $cadir\/ca.key;
    }
$1/ or die 'no pki_ca issuing';
$t->start_nginx($conf);

my $url = 'http://127.0.0.1:' . $t->http_port . '/crl/shortca.crl';

sub crl_dates {
    my ($body) = @_;
    PKITest::spew("$dir/crl.der", $body);
    my ($rc, $out) = PKITest::run_cmd(['openssl', 'crl', '-inform', 'DER',
        '-in', "$dir/crl.der", '-noout', '-lastupdate', '-nextupdate']);
    require Time::Piece;
    my $fmt = '%b %d %H:%M:%S %Y GMT';
    my @d;
    for my $f (qw(lastUpdate nextUpdate)) {
        my ($v) = $out =~ /$f=(.+)/;
        return () if !$v;
        $v =~ s/\s+/ /g;
        push @d, Time::Piece->strptime($v, $fmt)->epoch;
    }
    return @d;
}

ok(time < $end - 2, 'nginx up before the CA ends')
    or $t->give_up('nginx took too long to start');

my $r = $t->curl('GET', $url, quiet => 1);
is($r->{code}, 200, 'the CRL of the CA before its end') or diag($r->{body});
my ($lu, $nu) = crl_dates($r->{body});
is($nu // -1, $end, '  its nextUpdate is the CA\'s notAfter');
my ($rc, $out, $err) = PKITest::run_cmd(['openssl', 'crl', '-inform', 'DER',
    '-in', "$dir/crl.der", '-CAfile', "$cadir/ca.pem", '-noout']);
like($out . $err, qr/verify OK/, '  openssl crl -CAfile: verify OK');

# past the CA's end (the worker's copy has ended with it)
sleep($end + 2 - time) if time < $end + 2;

my $off = length(PKITest::slurp($t->error_log) // '');
$r = $t->curl('GET', $url, quiet => 1);
is($r->{code}, 503, 'after the CA\'s end: 503, no CRL signed')
    or diag(join ' ', map { defined $_ ? $_ : '-' } crl_dates($r->{body}));
is($r->{headers}{'retry-after'}, '5', '  with Retry-After');
my $log = substr(PKITest::slurp($t->error_log) // '', $off);
like($log, qr/\[error\].*pki crl: "shortca":.*has expired: it signs nothing until it is renewed \(no CRL\)/,
     '  the error log says why');

# the issuing CA (not ended) is unaffected
$r = $t->curl('GET', 'http://127.0.0.1:' . $t->http_port
              . '/crl/issuing.crl', quiet => 1);
is($r->{code}, 200, 'the other CA\'s CRL: 200');

$t->stop_nginx;
done_testing();
