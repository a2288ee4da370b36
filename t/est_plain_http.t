#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# EST in a server without TLS (RFC 7030 3.3: HTTPS MUST be used): every
# request is refused with 403 and an error-log line, before anything is
# read or written, so that serverkeygen never sends a private key and no
# client its Basic password in the clear.  est_plain_http on (TLS ends in
# a proxy in front of nginx) serves it.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 qw(encode_base64);
use PKITest;

my $t = PKITest->new;
$t->start_redis;

my $pki = $t->pki;

# EST locations in the plain HTTP server (the second "location / {" of
# the rendered config), shaped as the demo's: auth_basic in a nested
# location, so est_plain_http is inherited there
sub est_loc {
    my ($prefix, $extra) = @_;
    return <<"LOC";
        location $prefix/.well-known/est/ {
            est issuing device;
            $extra
            location ~ ^$prefix/\\.well-known/est/(?:simpleenroll|serverkeygen)\$ {
                auth_basic "EST";
                auth_basic_user_file $pki/htpasswd;
            }
        }

LOC
}

sub conf_with {
    my ($locs) = @_;
    my $conf = $t->render_conf;
    my $n = 0;
    $conf =~ s{^(\s*location / \{)}{++$n == 2 ? "$locs$1" : $1}gme;
    $n == 2 or BAIL_OUT('no plain HTTP server in the config');
    return $conf;
}

my $http;

sub post {
    my ($url, $der) = @_;
    return $t->curl('POST', $url, data => encode_base64($der),
                    headers => ['Content-Type: application/pkcs10'],
                    user => 'demo:demo');
}

# --- without est_plain_http: refused ----------------------------------------

$t->start_nginx(conf_with(est_loc('', '')));
$http = 'http://127.0.0.1:' . $t->http_port;

my @keys0 = $t->state_keys;
my @certs0 = $t->redis_keys('pki:*cert:*');

my ($csr) = $t->make_csr('plain', subj => '/CN=plain');
my $r = post("$http/.well-known/est/simpleenroll", $csr);
is($r->{code}, 403, 'simpleenroll over plain HTTP: 403')
    or diag("$r->{head}\n$r->{body}");
is($r->{body}, "EST requires HTTPS\n", '  the reason, as text');
like($r->{headers}{'content-type'} // '', qr{^text/plain}, '  text/plain');

$r = post("$http/.well-known/est/serverkeygen", $csr);
is($r->{code}, 403, 'serverkeygen over plain HTTP: 403');
unlike($r->{body}, qr/PRIVATE|pkcs8|multipart/i, '  no key in the answer');

$r = $t->curl('GET', "$http/.well-known/est/cacerts");
is($r->{code}, 403, 'cacerts over plain HTTP: 403');
$t->no_continue('POST', "$http/.well-known/est/simpleenroll", 403,
                'simpleenroll over plain HTTP (its body not read)',
                user => 'demo:demo');

is_deeply([$t->state_keys], \@keys0, 'Redis unchanged');
is_deeply([sort $t->redis_keys('pki:*cert:*')], [sort @certs0],
          'no certificate recorded');

my $log = slurp($t->error_log) // '';
my $want = quotemeta('est: simpleenroll from 127.0.0.1 refused: the '
                     . 'connection has no TLS (RFC 7030 3.3');
like($log, qr/\[error\].*$want/,
     'the refusal is in the error log, naming the rule');
like($log, qr/est_plain_http on/, '  and the way out');

# the same over HTTPS still works
$r = $t->est_post('simpleenroll', $csr);
is($r->{code}, 200, 'simpleenroll over HTTPS: 200') or diag($r->{body});

$t->stop_nginx;

# --- est_plain_http on: served -------------------------------------------------

$t->start_nginx(conf_with(est_loc('/proxied', 'est_plain_http on;')
                          . est_loc('', '')));

@certs0 = $t->redis_keys('pki:*cert:*');
my ($csr2) = $t->make_csr('proxied', subj => '/CN=proxied');
$r = post("$http/proxied/.well-known/est/simpleenroll", $csr2);
is($r->{code}, 200, 'est_plain_http on: simpleenroll over HTTP: 200')
    or diag("$r->{head}\n$r->{body}");
my $pem = $t->p7_to_pem($r->{body});
my $f = $pem ? $t->save_first_cert($pem, 'proxied') : undef;
ok($f && ($t->verify_chain($f))[0], '  a certificate that verifies');
is(scalar($t->redis_keys('pki:*cert:*')), @certs0 + 1, '  recorded');

$r = $t->curl('POST', "$http/proxied/.well-known/est/simpleenroll",
              data => encode_base64($csr2),
              headers => ['Content-Type: application/pkcs10']);
is($r->{code}, 401, '  the nested auth_basic still applies');

$r = post("$http/.well-known/est/simpleenroll", $csr2);
is($r->{code}, 403, 'the location without it: still 403');

$t->stop_nginx;
done_testing;
