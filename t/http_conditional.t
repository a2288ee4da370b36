#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Conditional request headers on answers that carry no validators (no
# ETag, no Last-Modified): every module's answer is sent whole.  nginx's
# not-modified filter, left alone, answers If-None-Match: * with a
# bodiless 304 and If-Match or If-Unmodified-Since with 412, whatever the
# handler did (an ACME POST may have changed state, an OCSP client gets no
# OCSP answer).  The CRL, which has an ETag and a Last-Modified, keeps
# HTTP's rules: If-None-Match with its ETag gets 304.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use PKITest;

my $t = PKITest->new;
$t->start_redis;
$t->start_nginx($t->render_conf);

my $https = 'https://127.0.0.1:' . $t->https_port;
my $http = 'http://127.0.0.1:' . $t->http_port;
my @cond = ('If-None-Match: *', 'If-Match: "x"',
            'If-Unmodified-Since: Thu, 01 Jan 2026 00:00:00 GMT');

my @answers = (
    [ 'ACME directory', 'GET', "$https/acme/directory", qr/"newNonce"/ ],
    [ 'EST cacerts', 'GET', "$https/.well-known/est/cacerts", qr/\S/ ],
    [ 'SCEP GetCACaps', 'GET', "$http/scep?operation=GetCACaps",
      qr/SCEPStandard/ ],
    [ 'admin (JSON)', 'GET', "$https/pki/admin/certificates?limit=1",
      qr/^[\[{]/, 'admin:admin' ],
    [ 'metrics', 'GET', "$https/pki/metrics", qr/^pki_/m, 'admin:admin' ],
);

for my $a (@answers) {
    my ($what, $method, $url, $body, $user) = @$a;
    my $plain = $t->curl($method, $url, $user ? (user => $user) : ());
    is($plain->{code}, 200, "$what: 200") or diag($plain->{body});
    for my $h (@cond) {
        my $r = $t->curl($method, $url, headers => [$h],
                         $user ? (user => $user) : ());
        ok($r->{code} == 200 && ($r->{body} // '') =~ $body,
           "$what with $h: 200 and the whole answer")
            or diag("$r->{code}: " . substr($r->{body} // '', 0, 200));
    }
}

# newNonce: 200 for HEAD (RFC 8555 7.2; 204 is GET's) with its
# Replay-Nonce, not a 304
my $n = $t->curl('HEAD', "$https/acme/new-nonce",
                 headers => ['If-None-Match: *']);
ok($n->{code} == 200 && ($n->{headers}{'replay-nonce'} // '') ne '',
   "newNonce with If-None-Match: *: 200 with a Replay-Nonce")
    or diag($n->{head});

# the CRL keeps its validators and HTTP's rules
my $crl = $t->curl('GET', "$http/crl/issuing.crl");
is($crl->{code}, 200, 'CRL: 200');
my $etag = $crl->{headers}{etag} // '';
ok($etag ne '', "CRL: an ETag ($etag)");
is($t->curl('GET', "$http/crl/issuing.crl",
            headers => ["If-None-Match: $etag"])->{code}, 304,
   'CRL with If-None-Match its ETag: 304');

$t->stop_nginx;
done_testing();
