#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# The endpoints whose directive sets a location's content handler
# (ocsp_responder, matter_*, pki_admin) answer inside an if block and for
# the methods a limit_except block restricts: nginx switches to the
# block's configuration, which has no handler of its own, and answered
# those with the static module's HTML 404.  With Matter built, a Matter
# directive and another content handler in one location fail nginx -t.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use PKITest;

my $t = PKITest->new;
my $pki = $t->pki;
my $dir = $t->dir;
my $matter = -f "$PKITest::BUILD/ngx_http_matter_module.so";

$t->make_matter_pki($pki) if $matter;
$t->start_redis;

my $conf = $t->render_conf;
$conf =~ s{(\n(\s*)location /ocsp \{\n)}{
$2location /ocsp-le {
$2    ocsp_responder issuing;
$2    limit_except GET {
$2        allow all;
$2    }
$2}

$2location /ocsp-if {
$2    ocsp_responder issuing;
$2    if (\$arg_tag) {
$2        set \$tag \$arg_tag;
$2    }
$2}
$1} or die 'no OCSP location';
$conf =~ s{(\n(\s*)location /pki/admin/ \{\n)}{
$2location /pki/admin-le/ {
$2    pki_admin;
$2    auth_basic "PKI admin";
$2    auth_basic_user_file $pki/htpasswd-admin;
$2    limit_except GET {
$2        allow all;
$2    }
$2}
$1} or die 'no admin location';
if ($matter) {
    $conf =~ s{(\n(\s*)location = /matter/noc \{\n)}{
$2location = /matter/noc-if {
$2    matter_noc matter-icac matter-noc;
$2    auth_basic "Matter";
$2    auth_basic_user_file $pki/htpasswd;
$2    if (\$arg_tag) {
$2        set \$tag \$arg_tag;
$2    }
$2}

$2location = /matter/batch-le {
$2    matter_dac_batch matter-pai matter-dac;
$2    auth_basic "Matter";
$2    auth_basic_user_file $pki/htpasswd;
$2    limit_except GET {
$2        allow all;
$2    }
$2}
$1} or die 'no Matter location';
}
$t->start_nginx($conf);

my $http = 'http://127.0.0.1:' . $t->http_port;
my $https = 'https://127.0.0.1:' . $t->https_port;

# an OCSP request for a serial never issued: "unknown", in a successful
# OCSP answer
my $req = "$dir/req.der";
my ($rc, $out) = $t->openssl_ocsp('-issuer', "$pki/issuing.pem",
                                  '-serial', '0x7e57ab1e', '-no_nonce',
                                  '-reqout', $req);
$t->give_up("openssl ocsp -reqout: $out") if $rc != 0;

for my $c (['/ocsp-le', 'a POST limit_except restricts'],
           ['/ocsp-if?tag=x', 'a POST inside an if block']) {
    my $r = $t->curl('POST', "$http$c->[0]", data_file => $req,
                     headers => ['Content-Type: application/ocsp-request']);
    is($r->{code}, 200, "OCSP, $c->[1]: 200") or diag($r->{body});
    is($r->{headers}{'content-type'} // '', 'application/ocsp-response',
       '  an OCSP answer');
    my $f = "$dir/resp.der";
    spew($f, $r->{body});
    my (undef, $txt) = $t->openssl_ocsp('-respin', $f, '-resp_text',
                                        '-noverify');
    like($txt, qr/OCSP Response Status: successful/, '  successful')
        or diag($txt);
}

{
    my $r = $t->curl('POST', "$https/pki/admin-le/acme/eab",
                     user => 'admin:admin');
    is($r->{code}, 201, 'pki_admin, a POST limit_except restricts: 201')
        or diag($r->{body});
    like($r->{body}, qr/^\{/, '  the admin API\'s JSON');
    $r = $t->curl('POST', "$https/pki/admin-le/acme/eab");
    is($r->{code}, 401, '  without credentials: 401 (auth_basic holds)');
}

SKIP: {
    skip 'ngx_http_matter_module.so not built', 11 if !$matter;

    my $json = JSON::PP->new;
    for my $c (['/matter/noc-if?tag=x', 'matter_noc inside an if block'],
               ['/matter/batch-le', 'matter_dac_batch, a POST limit_except '
                . 'restricts']) {
        my $r = $t->curl('POST', "$https$c->[0]", data => '{"csrs": [',
                         user => 'demo:demo',
                         headers => ['Content-Type: application/json']);
        is($r->{code}, 400, "$c->[1]: broken JSON, 400") or diag($r->{body});
        my $j = eval { $json->decode($r->{body}) };
        ok($j && $j->{error}, '  the module\'s JSON error')
            or diag($r->{body});
    }
    my $r = $t->curl('GET', "$https/matter/noc-if?tag=x", user => 'demo:demo');
    is($r->{code}, 405, 'matter_noc inside an if block: GET, 405');

    # one content handler per location, whatever the order
    my $base = $t->render_conf;
    for my $c (['matter_noc, then ocsp_responder',
                sub { s/(matter_noc [^;]*;)/$1\n            ocsp_responder issuing;/ },
                qr/"ocsp_responder": this location already has a content handler \("matter_noc" in /],
               ['ocsp_responder, then matter_dac_batch',
                sub { s/(matter_dac_batch [^;]*;)/ocsp_responder issuing;\n            $1/ },
                qr/"matter_dac_batch": this location already has a content handler \("ocsp_responder" in /],
               ['proxy_pass, then matter_dac_batch',
                sub { s/(matter_dac_batch [^;]*;)/proxy_pass http:\/\/127.0.0.1:9;\n            $1/ },
                qr/"matter_dac_batch": this location already has a content handler \(another module's directive: proxy_pass/],
               ['matter_noc, then proxy_pass',
                sub { s/(matter_noc [^;]*;)/$1\n            proxy_pass http:\/\/127.0.0.1:9;/ },
                qr/"matter_noc": this location already has a content handler \(another module's directive: proxy_pass/]) {
        local $_ = $base;
        $c->[1]->();
        my ($ok, $out) = $t->nginx_test($t->write_conf($_, 'conflict.conf'));
        ok(!$ok && $out =~ $c->[2], "$c->[0] in one location: nginx -t "
           . 'fails, naming both') or diag($out);
    }
}

unlike(slurp($t->error_log) // '', qr/\[alert\]|exited on signal/,
       'no alert, no crashed worker');

$t->stop_all;
done_testing();
