#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A CA whose certificate ends while nginx runs, answered by an OCSP
# responder: its answers end with it (nextUpdate, and the cache's entry),
# and once it has ended no answer is signed: tryLater (RFC 6960 2.3), for
# POST and for the GET whose answer was cached before, and the error log
# says why.  Before, every answer after the CA's end was signed, dated
# after it, with a nextUpdate an hour on, which no relying party can
# validate (its signer's certificate has expired).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use MIME::Base64 qw(encode_base64);
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
$conf =~ s{(\n        location /ocsp \{)}{
        location /ocsp-short {
            ocsp_responder shortca;
            ocsp_responder_cache zone=ocspshort:1m;
            ocsp_responder_cache_header on;
        }
$1} or die 'no location /ocsp';
$t->start_nginx($conf);

my $url = 'http://127.0.0.1:' . $t->http_port . '/ocsp-short';

# a request for a serial the CA never issued (answered unknown, signed)
my $reqf = "$dir/req.der";
my ($rc, $out) = $t->openssl_ocsp('-issuer', "$cadir/ca.pem", '-serial',
                                  '0x4242', '-no_nonce', '-reqout', $reqf);
is($rc, 0, 'request written') or diag($out);
(my $enc = encode_base64(PKITest::slurp($reqf), ''))
    =~ s{([/+=])}{sprintf('%%%02X', ord($1))}ge;

# openssl ocsp on an answer: its text
sub check {
    my ($body) = @_;
    my $f = "$dir/resp-" . int(rand(1e9)) . '.der';
    PKITest::spew($f, $body);
    my (undef, $o) = $t->openssl_ocsp('-respin', $f, '-issuer',
        "$cadir/ca.pem", '-serial', '0x4242', '-CAfile', "$cadir/ca.pem",
        '-resp_text');
    return $o;
}

ok(time < $end - 2, 'nginx up before the CA ends')
    or $t->give_up('nginx took too long to start');

my $r = $t->ocsp_post($url, $reqf);
is($r->{code}, 200, 'POST before the CA\'s end: 200');
$out = check($r->{body});
like($out, qr/Response verify OK/, '  openssl ocsp: verifies') or diag($out);
like($out, qr/0x4242: unknown/, '  unknown');
my ($next) = $out =~ /Next Update: (.*?GMT)/;
is(PKITest::gmt_epoch($next // 'Jan 01 00:00:00 1970 GMT'), $end,
   '  its nextUpdate is the CA\'s notAfter');

# a cacheable GET, cached until the CA's end
$r = $t->curl('GET', "$url/$enc");
is($r->{code}, 200, 'GET before the CA\'s end: 200');
$r = $t->curl('GET', "$url/$enc");
is($r->{headers}{'x-ocsp-cache'}, 'HIT', '  then from the cache')
    or diag($r->{head});

# past the CA's end
sleep($end + 2 - time) if time < $end + 2;

my $off = length(PKITest::slurp($t->error_log) // '');
$r = $t->ocsp_post($url, $reqf);
is($r->{code}, 200, 'POST after the CA\'s end: 200');
$out = check($r->{body});
like($out, qr/Responder Error: trylater \(3\)/,
     '  tryLater, no answer signed') or diag($out);
$r = $t->curl('GET', "$url/$enc");
$out = check($r->{body});
like($out, qr/Responder Error: trylater \(3\)/,
     '  the cached GET: tryLater too (its answer ended with the CA)')
    or diag($out);
isnt($r->{headers}{'x-ocsp-cache'} // '', 'HIT', '  not from the cache');
# more clients meanwhile: every one tryLater, but not an error line each
my $n503 = 0;
for (1 .. 8) {
    $r = $t->ocsp_post($url, $reqf);
    $n503++ if check($r->{body}) =~ /Responder Error: trylater \(3\)/;
}
is($n503, 8, '  8 more requests: tryLater each');
my $log = substr(PKITest::slurp($t->error_log) // '', $off);
like($log, qr/\[error\].*ocsp:.*the CA certificate of "shortca" has expired/,
     '  the error log says why');
# one worker answers all of them on this test's config; at most one error
# line per 10 s per worker, the others at info
my $errs = () = $log =~ /\[error\].*has expired/g;
my $infos = () = $log =~ /\[info\].*has expired/g;
ok($errs >= 1 && $errs <= 2 && $infos >= 8,
   "  at most one error line per 10 s per worker ($errs errors, $infos "
   . 'info lines)');

# the issuing CA (not ended) is unaffected
my ($csr) = $t->make_csr('end-a', subj => '/CN=end-a');
$r = $t->est_post('simpleenroll', $csr);
is($r->{code}, 200, 'the other CA still issues') or diag($r->{body});

$t->stop_nginx;
done_testing();
