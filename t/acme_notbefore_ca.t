#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# An ACME order may ask for a notBefore up to a day back.  Under a CA
# younger than that (this test's, made moments ago; a fresh deployment's),
# such a notBefore lies before the CA certificate's own start, and the
# certificate certified a span its CA did not cover.  A refusal made the
# day back unusable during a CA's first day; now the notBefore is moved to
# the CA's start, as a certificate asked for without one already is (and
# as most CAs do), and the order shows it from newOrder on:
#  - notBefore 10 minutes before the CA's start: the order says the CA's
#    notBefore, and so does the certificate, which ends the template's 90
#    days (less 1 s) after it and verifies;
#  - with a notAfter two days ahead as well: that notAfter is kept;
#  - a notBefore after the CA's start is kept to the second;
#  - a notBefore more than a day back is still refused (400 malformed).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 qw(encode_base64url);
use POSIX qw(strftime);
use PKITest;
use ACMELoad;

plan(skip_all => 'CryptX / HTTP::Tiny not installed')
    if !ACMELoad::available();

my $t = PKITest->new;
$t->start_redis;
my $hport = PKITest::free_port();
$t->start_nginx($t->render_conf('--acme-http-port', $hport,
                                '--acme-tls-port', PKITest::free_port()));
my $c = ACMELoad::lab($t, $hport);
my $base = $c->{base};

my ($ca_nb) = $t->x509_dates($t->pki . '/issuing.pem');
ok($ca_nb, 'the issuing CA\'s notBefore') or BAIL_OUT('no CA dates');
my $now = time;
plan(skip_all => 'the test CA is not young enough')
    if $ca_nb - 600 < $now - 86400 + 120;

sub iso { return strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($_[0])) }

my $n = 0;
sub csr_der {
    my ($name) = @_;
    $n++;
    my $csr = $t->dir . "/c$n.csr";
    PKITest::openssl_or_die('req', '-new', '-newkey', 'ec', '-pkeyopt',
        'ec_paramgen_curve:P-256', '-nodes', '-keyout', $t->dir . "/c$n.key",
        '-subj', "/CN=$name", '-addext', "subjectAltName=DNS:$name",
        '-outform', 'DER', '-out', $csr);
    return PKITest::slurp($csr);
}

# the name's authorization, made valid once and reused by the orders below
my $r = $c->ready('nb.example');
is($r->{ready}{json}{status} // '', 'ready', 'an authorization for the name');

# newOrder with DATES; finalized: (the newOrder answer, certificate file)
sub order_cert {
    my ($what, %dates) = @_;
    my $o = $c->_post("$base/new-order", {
        identifiers => [ { type => 'dns', value => 'nb.example' } ],
        map { ($_ => iso($dates{$_})) } keys %dates });
    is($o->{status}, 201, "$what: 201") or diag($o->{content});
    return ($o, undef) if $o->{status} != 201;
    my $f = $c->_post($o->{json}{finalize},
                      { csr => encode_base64url(csr_der('nb.example')) });
    is($f->{status}, 200, "$what: finalized") or diag($f->{content});
    my $v = $c->_poll($o->{headers}{location}, 'valid');
    my $cu = $v->{json}{certificate} or return ($o, undef);
    my $cr = $c->_post($cu, undef);
    return ($o, $cr->{status} == 200
                ? $t->save_first_cert($cr->{content}, "nb$n") : undef);
}

my ($o, $cert) = order_cert('a notBefore 10 minutes before the CA\'s start',
                            notBefore => $ca_nb - 600);
is($o->{json}{notBefore} // '', iso($ca_nb),
   '... the order shows the CA\'s notBefore');
SKIP: {
    skip 'no certificate', 4 if !$cert;
    my ($nb, $na) = $t->x509_dates($cert);
    is($nb, $ca_nb, '... the certificate starts with its CA');
    is($na - $nb, 90 * 86400 - 1, '... for the template\'s 90 days');
    my ($ok, $out) = $t->verify_chain($cert);
    ok($ok, '... and verifies') or diag($out);
    is($o->{json}{notBefore} // '', iso($nb), '... as the order said');
}

my $na_req = $now + 2 * 86400;
($o, $cert) = order_cert('a notBefore before the CA\'s start and a notAfter',
                         notBefore => $ca_nb - 600, notAfter => $na_req);
is($o->{json}{notBefore} // '', iso($ca_nb), '... notBefore moved');
is($o->{json}{notAfter} // '', iso($na_req), '... notAfter kept');
SKIP: {
    skip 'no certificate', 2 if !$cert;
    my ($nb, $na) = $t->x509_dates($cert);
    is($nb, $ca_nb, '... the certificate starts with its CA');
    is($na, $na_req, '... and ends at the notAfter asked for');
}

($o, $cert) = order_cert('a notBefore after the CA\'s start',
                         notBefore => $ca_nb + 5);
is($o->{json}{notBefore} // '', iso($ca_nb + 5), '... kept');
SKIP: {
    skip 'no certificate', 1 if !$cert;
    my ($nb) = $t->x509_dates($cert);
    is($nb, $ca_nb + 5, '... in the certificate to the second');
}

$r = $c->_post("$base/new-order", {
    identifiers => [ { type => 'dns', value => 'nb.example' } ],
    notBefore => iso(time - 86400 - 60) });
is($r->{status}, 400, 'a notBefore more than a day back: 400');
is($r->{problem}, 'malformed', '... malformed');

$t->stop_all;
done_testing();
