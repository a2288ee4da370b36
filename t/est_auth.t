#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# EST authentication through auth_request + est_identity (a 401 always
# carries a challenge), the body cap on chunked uploads (no
# Content-Length), bodies kept in memory under client_body_in_file_only,
# and directive order.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use PKITest;

my $t = PKITest->new;
$t->start_redis;

# /ar/.well-known/est/: authorised by an auth_request subrequest that
# checks a token and names the user in a response header.
# The subrequest goes to a small "auth service" on the plain HTTP server,
# which answers 204 with X-User for the right token, as an SSO or device
# registry behind auth_request would.
my $conf = $t->render_conf;
my $http = $t->http_port;
my $cbt = $t->dir . '/cbt';
my $ar = <<"LOC";
        location = /auth {
            internal;
            proxy_pass http://127.0.0.1:$http/authsvc;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }

        location /ar/.well-known/est/ {
            est_label lab issuing device;
            est issuing device;
            auth_request /auth;
            auth_request_set \$est_user \$upstream_http_x_user;
            est_identity \$est_user;
            # nginx's save filter would write each body to a file here,
            # on the event loop, and keep it
            client_body_in_file_only on;
            client_body_temp_path $cbt;
        }

        location /small/.well-known/est/ {
            est issuing device;
            auth_request /auth;
            auth_request_set \$est_user \$upstream_http_x_user;
            est_identity \$est_user;
            client_max_body_size 1k;
        }

LOC
my $svc = <<'LOC';
        location = /authsvc {
            if ($http_x_token = "s3cret") {
                add_header X-User tokenuser;
                return 204;
            }
            if ($http_x_token = "sso") {
                add_header WWW-Authenticate 'Bearer realm="sso"' always;
                return 401;
            }
            return 401;
        }

LOC
$conf =~ s{^(\s*location / \{)}{$ar$1}m
    or BAIL_OUT('cannot add the /ar/ location to the config');
# the second "location / {" is the plain HTTP server's
my $n = 0;
$conf =~ s{^(\s*location / \{)}{++$n == 2 ? "$svc$1" : $1}gme;
$n == 2 or BAIL_OUT('cannot add the auth service to the config');
$t->start_nginx($conf);

my $url = 'https://127.0.0.1:' . $t->https_port
          . '/ar/.well-known/est/simpleenroll';
my ($csr) = $t->make_csr('ar', subj => '/CN=ar-device');
require MIME::Base64;
my $b64 = MIME::Base64::encode_base64($csr);

my $r = $t->curl('POST', $url, data => $b64,
                 headers => ['Content-Type: application/pkcs10']);
is($r->{code}, 401, 'auth_request refuses without the token');
is($r->{body}, '', '  401 has an empty body');
is($r->{headers}{'content-length'}, '0', '  Content-Length: 0');
# RFC 9110 11.6.1: a 401 carries a challenge; the auth service sent none
is($r->{headers}{'www-authenticate'}, 'Basic realm="EST"',
   '  WWW-Authenticate: EST\'s Basic challenge');

# the auth service's own challenge goes out, alone
$r = $t->curl('POST', $url, data => $b64,
              headers => ['Content-Type: application/pkcs10',
                          'X-Token: sso']);
is($r->{code}, 401, 'auth_request refuses with the service\'s challenge');
is(join('|', $r->{head} =~ /^WWW-Authenticate:\s*(.*?)\s*$/mgi),
   'Bearer realm="sso"', '  that challenge, and no other');

$r = $t->curl('POST', $url, data => $b64,
              headers => ['Content-Type: application/pkcs10',
                          'X-Token: s3cret']);
is($r->{code}, 200, 'auth_request + est_identity: enrolled')
    or diag($r->{body});
my $pem = $t->p7_to_pem($r->{body});
ok($pem, '  a certificate came back');
if ($pem) {
    my $f = $t->save_first_cert($pem, 'ar');
    my ($rc, $out) = run_cmd(['openssl', 'x509', '-in', $f, '-noout',
                              '-serial']);
    my ($serial) = $out =~ /serial=([0-9A-F]+)/;
    my $h = $t->redis_hash("pki:{ca:issuing}:cert:$serial");
    is($h->{requester}, 'tokenuser',
       '  the record names the identity auth_request vouched for');
}
my @files = grep { -f } glob("$cbt/*"), glob("$cbt/*/*"), glob("$cbt/*/*/*");
is(scalar @files, 0, '  client_body_in_file_only: the body never went to '
   . 'a file') or diag("@files");

# the label declared before "est" in the same location works
$r = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
                      . '/ar/.well-known/est/lab/simpleenroll',
              data => $b64, headers => ['Content-Type: application/pkcs10',
                                        'X-Token: s3cret']);
is($r->{code}, 200, 'est_label before est in one location');

# a chunked body over the cap is refused while it arrives (413): nginx
# stops reading at the EST cap, not at client_max_body_size
my $big = $t->dir . '/big.b64';
spew($big, 'QUFB' x (300 * 1024 / 4));
my $n0 = () = glob($t->prefix . '/tmp/body/*');
$r = $t->curl('POST', $t->est_url('simpleenroll'), data_file => $big,
              user => 'demo:demo',
              headers => ['Content-Type: application/pkcs10',
                          'Transfer-Encoding: chunked']);
is($r->{code}, 413, 'chunked 300 KiB body: 413');
unlike($r->{body}, qr/QUFB/, '  nothing of the body echoed');
like($r->{headers}{'content-type'} // '', qr{^text/plain}i,
     '  text/plain, as the module\'s other errors');
like($r->{body}, qr/^request body is larger than 65536 bytes\n\z/,
     '  the EST text error, no HTML page') or diag($r->{body});
is(lc($r->{headers}{connection} // ''), 'close',
   '  Connection: close (the rest of the body is not read)');
my $log = slurp($t->error_log) // '';
like($log, qr/client sent too large body: more than 65536 bytes/,
     '  the error log names the cap');

# each way of going over the cap gets the module's text/plain 413, not
# nginx's HTML page, and the connection ends after it
sub raw_413 {
    return $t->over_cap_post(path => '/.well-known/est/simpleenroll',
        user => 'demo:demo', headers => ['Content-Type: application/pkcs10'],
        @_);
}

for my $case (
    ['chunked, over the cap in a later read', pause => 0.5],
    ['chunked, over the cap at once'],
    ['Content-Length over the cap', length => 70000],
    ['Content-Length over client_max_body_size (1m)', length => 2000000],
) {
    my ($name, %o) = @$case;
    my $a = raw_413(%o);
    is($a->{status}, 413, "$name: 413") or diag(explain($a));
    like($a->{headers}{'content-type'} // '', qr{^text/plain}i,
         '  text/plain');
    is($a->{body}, "request body is larger than 65536 bytes\n",
       '  the EST text error');
    is(lc($a->{headers}{connection} // ''), 'close', '  Connection: close');
    ok($a->{closed}, '  the server closed the connection') if !$o{length};
}

# an operator's client_max_body_size below the EST cap: the module
# applies it, so a body over it gets the EST text error too, not nginx's
# HTML page; a CSR within it enrolls
for my $case (
    ['Content-Length over client_max_body_size 1k', length => 2000],
    ['chunked, over client_max_body_size 1k at once', chunk => 'QUFB' x 512,
     chunks => 1],
) {
    my ($name, %o) = @$case;
    my $a = $t->over_cap_post(path => '/small/.well-known/est/simpleenroll',
        headers => ['Content-Type: application/pkcs10', 'X-Token: s3cret'],
        %o);
    is($a->{status}, 413, "$name: 413") or diag(explain($a));
    like($a->{headers}{'content-type'} // '', qr{^text/plain}i,
         '  text/plain, not nginx\'s page');
    is($a->{body}, "request body is larger than 1024 bytes\n",
       '  the EST text error naming that limit');
}
ok(length($b64) < 1024, 'a CSR of ' . length($b64) . ' bytes (base64)');
$r = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
                      . '/small/.well-known/est/simpleenroll',
              data => $b64, headers => ['Content-Type: application/pkcs10',
                                        'X-Token: s3cret']);
is($r->{code}, 200, '  enrolls under client_max_body_size 1k')
    or diag($r->{body});

# enrollment still works on the same server
my ($again) = $t->make_csr('again', subj => '/CN=after-413');
$r = $t->est_post('simpleenroll', $again);
is($r->{code}, 200, 'enrollment after the 413');

# directive conflicts fail nginx -t
for my $case (
    ['est off with est_label',
     "est_label x issuing device;\n            est off;",
     qr/off cannot be combined with "est_label"/],
    ['est_label after est off',
     "est off;\n            est_label x issuing device;",
     qr/"est_label" cannot be combined with "est off"/],
) {
    my ($name, $dirs, $re) = @$case;
    my $c = $t->render_conf;
    $c =~ s{^(\s*location / \{)}
           {        location /bad/.well-known/est/ {\n            $dirs\n        }\n\n$1}m;
    my ($ok, $out) = $t->nginx_test($t->write_conf($c, "bad-$name.conf"
                                                   =~ s/\W/_/gr));
    ok(!$ok, "$name: nginx -t fails");
    like($out, $re, "$name: message") or diag($out);
}

$t->stop_all;
done_testing();
