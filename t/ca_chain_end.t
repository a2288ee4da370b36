#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A CA whose issuer (an intermediate between it and the root, in its
# "chain" file) ends while nginx runs, the CA certificate itself valid for
# a year: what it signs ends with the intermediate (the OCSP answer's and
# the CRL's nextUpdate), and once the intermediate has ended nothing is
# signed: OCSP tryLater, the CRL location 503 with Retry-After, and the
# error log names the chain file's certificate.  Before, only the CA
# certificate's own notAfter was checked when signing: answers and CRLs
# were signed after the intermediate's end, an hour long, which no relying
# party can validate (the next start refuses the chain).
#
# Then nginx -t on a CA two intermediates down: the upper one expired or
# not valid yet is an [emerg] naming it (before: nginx -t passed, with a
# warning "expires in -1 day(s)" or nothing, and the CA signed nothing).

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
my $cadir = "$dir/hier";
PKITest::openssl_ca_dir($cadir,
    "basicConstraints = critical,CA:TRUE\n" .
    "keyUsage = critical,keyCertSign,cRLSign\n" .
    "subjectKeyIdentifier = hash\n" .
    "authorityKeyIdentifier = keyid:always\n");

sub key_csr {
    my ($name, $cn) = @_;
    PKITest::openssl_or_die('req', '-new', '-newkey', 'ec', '-pkeyopt',
        'ec_paramgen_curve:P-256', '-nodes', '-keyout', "$cadir/$name.key",
        '-subj', "/CN=$cn", '-out', "$cadir/$name.csr");
}

# root (10 years) > mid (ends 45 s from now) > low (a year)
my $now = int(time);
my $end = $now + 45;
key_csr('root', 'Chain End Root');
PKITest::openssl_ca_sign($cadir, 'root', 'root', $now - 3600,
                         $now + 86400 * 3650);
key_csr('mid', 'Chain End Mid');
PKITest::openssl_ca_sign($cadir, 'mid', 'root', $now - 3600, $end);
key_csr('low', 'Chain End Low');
PKITest::openssl_ca_sign($cadir, 'low', 'mid', $now - 3600,
                         $now + 86400 * 365);
PKITest::spew("$cadir/chain.pem", PKITest::slurp("$cadir/mid.pem")
              . PKITest::slurp("$cadir/root.pem"));
PKITest::spew("$cadir/verify.pem", PKITest::slurp("$cadir/low.pem")
              . PKITest::slurp("$cadir/mid.pem"));

(my $conf = $t->render_conf) =~ s/(\n    pki_ca issuing \{)/
    pki_ca low {
        certificate $cadir\/low.pem;
        chain $cadir\/chain.pem;
        key $cadir\/low.key;
        templates device;
    }
$1/ or die 'no pki_ca issuing';
$conf =~ s{(\n\s*est_label server issuing server;)}{$1
            est_label low low device;} or die 'no est_label server';
$conf =~ s{(\n        location /ocsp \{)}{
        location /ocsp-low {
            ocsp_responder low;
            ocsp_responder_cache zone=ocsplow:1m;
        }
$1} or die 'no location /ocsp';
$t->start_nginx($conf);

my $url = 'http://127.0.0.1:' . $t->http_port . '/ocsp-low';
my $crl = 'http://127.0.0.1:' . $t->http_port . '/crl/low.crl';

my $reqf = "$dir/req.der";
my ($rc, $out) = $t->openssl_ocsp('-issuer', "$cadir/low.pem", '-serial',
                                  '0x4242', '-no_nonce', '-reqout', $reqf);
is($rc, 0, 'request written') or diag($out);

sub check {
    my ($body) = @_;
    my $f = "$dir/resp-" . int(rand(1e9)) . '.der';
    PKITest::spew($f, $body);
    my (undef, $o) = $t->openssl_ocsp('-respin', $f, '-issuer',
        "$cadir/low.pem", '-serial', '0x4242', '-CAfile',
        "$cadir/root.pem", '-verify_other', "$cadir/verify.pem");
    return $o;
}

ok(time < $end - 2, 'nginx up before the intermediate ends')
    or $t->give_up('nginx took too long to start');

my $r = $t->ocsp_post($url, $reqf);
is($r->{code}, 200, 'OCSP before the intermediate\'s end: 200');
$out = check($r->{body});
like($out, qr/Response verify OK/, '  openssl ocsp: verifies') or diag($out);
my ($next) = $out =~ /Next Update: (.*?GMT)/;
is(PKITest::gmt_epoch($next // 'Jan 01 00:00:00 1970 GMT'), $end,
   '  its nextUpdate is the intermediate\'s notAfter') or diag($out);

$r = $t->curl('GET', $crl, quiet => 1);
is($r->{code}, 200, 'CRL before the intermediate\'s end: 200');
PKITest::spew("$dir/crl.der", $r->{body});
my (undef, $cout) = PKITest::run_cmd(['openssl', 'crl', '-inform', 'DER',
    '-in', "$dir/crl.der", '-noout', '-nextupdate']);
my ($cnext) = $cout =~ /nextUpdate=(.+)/;
is(PKITest::gmt_epoch($cnext // 'Jan 01 00:00:00 1970 GMT'), $end,
   '  its nextUpdate is the intermediate\'s notAfter') or diag($cout);

my ($lcsr) = $t->make_csr('chain-low', subj => '/CN=chain-low');
$r = $t->est_post('simpleenroll', $lcsr, label => 'low');
is($r->{code}, 200, 'EST enrollment under low before the end: 200')
    or diag($r->{body});

# past the intermediate's end (low has a year left)
sleep($end + 2 - time) if time < $end + 2;

my $off = length(PKITest::slurp($t->error_log) // '');
$r = $t->ocsp_post($url, $reqf);
is($r->{code}, 200, 'OCSP after the intermediate\'s end: 200');
$out = check($r->{body});
like($out, qr/Responder Error: trylater \(3\)/,
     '  tryLater, no answer signed') or diag($out);
$r = $t->curl('GET', $crl, quiet => 1);
is($r->{code}, 503, 'CRL after it: 503, no CRL signed');
is($r->{headers}{'retry-after'}, '5', '  with Retry-After');
my $log = substr(PKITest::slurp($t->error_log) // '', $off);
like($log, qr/\[error\].*ocsp:.*certificate 1 of the CA chain above the CA certificate of "low" has expired.*chain\.pem.*Chain End Mid/,
     '  the error log names the intermediate (OCSP)') or diag($log);
like($log, qr/\[error\].*pki crl: "low":.*certificate 1 of the CA chain/,
     '  and the CRL refusal') or diag($log);

# an enrollment is not the client's fault either: 503 with Retry-After
# (it was 500), nothing issued
($lcsr) = $t->make_csr('chain-low2', subj => '/CN=chain-low2');
$r = $t->est_post('simpleenroll', $lcsr, label => 'low');
is($r->{code}, 503, 'EST enrollment under low after it: 503')
    or diag($r->{body});
ok(($r->{headers}{'retry-after'} // 0) > 0, '  with Retry-After');
$log = substr(PKITest::slurp($t->error_log) // '', $off);
like($log, qr/\[error\].*est.*certificate 1 of the CA chain above the CA certificate of "low" has expired/,
     '  the error log names the intermediate (EST)') or diag($log);

# the issuing CA is unaffected
my ($csr) = $t->make_csr('chain-a', subj => '/CN=chain-a');
$r = $t->est_post('simpleenroll', $csr);
is($r->{code}, 200, 'the other CA still issues') or diag($r->{body});

$t->stop_nginx;

# nginx -t judges the whole path, not the CA's issuer only: "deep" under
# "Deep Mid" (a year) under "Deep Top" under the root.  Top expired (or
# not valid yet): [emerg] naming it, with file and line (before: nginx -t
# passed silently, and the CA signed nothing); Top with 10 days left: a
# warning naming it; Top re-issued with its key beside the expired one:
# taken.
$now = int(time);
key_csr('deep', 'Chain Deep Low');
key_csr('dmid', 'Chain Deep Mid');
key_csr('dtop', 'Chain Deep Top');
PKITest::openssl_ca_sign($cadir, 'dtop', 'root', $now - 86400 * 400,
                         $now - 86400);
PKITest::openssl_ca_sign($cadir, 'dmid', 'dtop', $now - 86400 * 300,
                         $now + 86400 * 365);
PKITest::openssl_ca_sign($cadir, 'deep', 'dmid', $now - 3600,
                         $now + 86400 * 200);
rename("$cadir/dtop.pem", "$cadir/dtop-old.pem") or die "rename: $!";
PKITest::openssl_ca_sign($cadir, 'dtop', 'root', $now + 86400,
                         $now + 86400 * 3000);
rename("$cadir/dtop.pem", "$cadir/dtop-future.pem") or die "rename: $!";
PKITest::openssl_ca_sign($cadir, 'dtop', 'root', $now - 3600,
                         $now + 86400 * 10);
rename("$cadir/dtop.pem", "$cadir/dtop-10d.pem") or die "rename: $!";
PKITest::openssl_ca_sign($cadir, 'dtop', 'root', $now - 3600,
                         $now + 86400 * 3000);
my $root = PKITest::slurp("$cadir/root.pem");
my $mid = PKITest::slurp("$cadir/dmid.pem");
for my $c (['old', 'dtop-old'], ['future', 'dtop-future'],
           ['10d', 'dtop-10d'], ['renewed', 'dtop-old', 'dtop'])
{
    my ($n, @tops) = @$c;
    PKITest::spew("$cadir/deep-$n.pem", $mid
        . join('', map { PKITest::slurp("$cadir/$_.pem") } @tops) . $root);
}

sub deep_test {
    my ($n) = @_;
    (my $c = $t->render_conf) =~ s/(\n    pki_ca issuing \{)/
    pki_ca deep {
        certificate $cadir\/deep.pem;
        chain $cadir\/deep-$n.pem;
        key $cadir\/deep.key;
        templates device;
    }
$1/ or die 'no pki_ca issuing';
    return $t->nginx_test($t->write_conf($c, "deep-$n.conf"));
}

my ($ok, $tout) = deep_test('old');
ok(!$ok, 'a certificate above the issuer expired: nginx -t fails')
    or diag($tout);
like($tout, qr/\[emerg\].*pki_ca "deep".*certificate 2 of CA chain "\S+deep-old\.pem" \(\/CN=Chain Deep Top\), above the CA certificate's issuer, has expired \(notAfter \d{4}-\d\d-\d\dT[\d:]+Z\).* in \S+deep-old\.conf:\d+/,
     '  [emerg] names it, its subject and date, with file and line')
    or diag($tout);

($ok, $tout) = deep_test('future');
ok(!$ok && $tout =~ /\[emerg\].*certificate 2 of CA chain \S+ \(\/CN=Chain Deep Top\), above the CA certificate's issuer, is not valid yet \(notBefore .* in \S+deep-future\.conf:\d+/,
   'one above the issuer not valid yet: [emerg] names it') or diag($tout);

($ok, $tout) = deep_test('10d');
ok($ok, 'one above the issuer with 10 days left: nginx -t passes')
    or diag($tout);
like($tout, qr/\[warn\].*pki_ca "deep": its certificate expires in (?:9|10) day\(s\), at [^;]+ \(certificate 2 of its chain, \/CN=Chain Deep Top, does\); .* in \S+deep-10d\.conf:\d+/,
     '  with a warning naming it') or diag($tout);

($ok, $tout) = deep_test('renewed');
ok($ok, 'the expired one beside it re-issued with its key: passes')
    or diag($tout);
unlike($tout, qr/pki_ca "deep": its certificate expires/,
       '  no warning') or diag($tout);

done_testing();
