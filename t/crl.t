#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# CRLs served by location /crl/ { pki_crl; } in the shared config: fetched
# from each certificate's own CDP, verified with openssl crl -CAfile and
# openssl verify -crl_check, refreshed after a revocation, coalesced
# rebuilds, cache headers, 404s (also for a CA whose keyUsage lacks
# cRLSign: it has no CRL), and Redis down with a CRL in memory or
# only in the local copy on disk (new workers).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep);
use PKITest;

my $t = PKITest->new;
$t->start_redis;

# beside the issuing CA, one whose keyUsage lacks cRLSign (no crl_url, as
# nginx -t requires): a CRL it signed would verify nowhere, so it has none
my $nd = $t->dir;
openssl_or_die('req', '-x509', '-newkey', 'ec', '-pkeyopt',
    'ec_paramgen_curve:P-256', '-nodes', '-keyout', "$nd/nocrl.key",
    '-subj', '/CN=CA without cRLSign', '-days', '30',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign',
    '-out', "$nd/nocrl.pem");
(my $conf = $t->render_conf) =~ s/(\n    pki_ca issuing \{)/
    pki_ca nocrl {
        certificate $nd\/nocrl.pem;
        key $nd\/nocrl.key;
    }
$1/ or die 'no pki_ca issuing';
# /crl/ at 2h, a second CRL location of a longer lifetime, and a location
# nested in /crl/ (it inherits pki_crl, serves something else) with a
# short one: every CRL of a CA is one object, of the shortest lifetime of
# the pki_crl locations (here /crl/'s 2h); neither the nested one nor the
# demo's SCEP location (GetCRL, at the default 1h) counts
$conf =~ s{(\n\s*location /crl/ \{\n\s*pki_crl;)}{
        location /crl-long/ {
            pki_crl;
            pki_crl_next_update 1d;
        }
$1
            pki_crl_next_update 2h;
            location /crl/nested/ {
                pki_crl_next_update 1m;
                return 204;
            }}
    or die 'no location /crl/';
$t->start_nginx($conf);

my $admin = 'https://127.0.0.1:' . $t->https_port . '/pki/admin';
my $pki = $t->pki;
my $dir = $t->dir;
my $json = JSON::PP->new->canonical;

sub enroll {
    my ($name) = @_;
    my ($r, $serial, $f) = $t->enroll_serial($name);
    is($r->{code}, 200, "enrolled $name") or diag($r->{body});
    return ($f, $serial // '');
}

sub revoke {
    my ($serial) = @_;
    my $r = $t->curl('POST', "$admin/revoke", user => 'admin:admin',
                     headers => ['Content-Type: application/json'],
                     data => $json->encode({ serial => $serial,
                                             reason => 'keyCompromise' }),
                     quiet => 1);
    return $r->{code};
}

sub fetch {
    my ($url, %o) = @_;
    my $r = $t->curl('GET', $url, %o, quiet => 1);
    PKITest::spew("$dir/crl.der", $r->{body}) if $r->{code} == 200;
    return $r;
}

sub crl_number {
    my ($file) = @_;
    no warnings 'portable';     # numbers from Redis's clock, > 32 bits
    my ($rc, $out) = PKITest::run_cmd(['openssl', 'crl', '-inform', 'DER',
        '-in', $file // "$dir/crl.der", '-noout', '-crlnumber']);
    return $out =~ /crlNumber=(?:0x)?([0-9A-Fa-f]+)/ ? hex($1) : -1;
}

sub to_pem {
    my ($rc) = PKITest::run_cmd(['openssl', 'crl', '-inform', 'DER', '-in',
        "$dir/crl.der", '-out', "$dir/crl.pem"]);
    return $rc == 0;
}

sub verify {
    my ($cert) = @_;
    my ($rc, $out, $err) = PKITest::run_cmd(['openssl', 'verify',
        '-crl_check', '-CAfile', "$pki/root.pem", '-untrusted',
        "$pki/issuing.pem", '-CRLfile', "$dir/crl.pem", $cert]);
    return ($rc, $out . $err);
}

my ($good, $gserial) = enroll('crlgood');
my ($bad, $bserial) = enroll('crlbad');

# the URL from the certificate's own CDP
my ($rc, $cdp) = PKITest::run_cmd(['openssl', 'x509', '-in', $good, '-noout',
                                   '-ext', 'crlDistributionPoints']);
my ($url) = $cdp =~ m{URI:(http://\S+)};
ok($url, "CDP names $url") or $t->give_up("no CDP");
like($url, qr{^http://127\.0\.0\.1:\d+/crl/issuing\.crl$}, '  demo URL');

# the lifetime: /crl/'s 2h, also when the 1d location asks first
sub lifetime {
    my ($rc, $out) = PKITest::run_cmd(['openssl', 'crl', '-inform', 'DER',
        '-in', "$dir/crl.der", '-noout', '-lastupdate', '-nextupdate']);
    my ($lu) = $out =~ /lastUpdate=(.+)/;
    my ($nu) = $out =~ /nextUpdate=(.+)/;
    return -1 if !$lu || !$nu;
    require Time::Piece;
    my $fmt = '%b %d %H:%M:%S %Y GMT';
    $_ =~ s/\s+/ /g for $lu, $nu;
    return Time::Piece->strptime($nu, $fmt)->epoch
           - Time::Piece->strptime($lu, $fmt)->epoch;
}
my $r = fetch('http://127.0.0.1:' . $t->http_port . '/crl-long/issuing.crl');
is($r->{code}, 200, 'the CRL from the 1d location');
my $life = lifetime();
ok($life > 6600 && $life <= 7200, "  of 2h ($life s): not 1d, nor the "
   . "nested location's 1m, nor the SCEP location's 1h");
my $nlong = crl_number();

$r = fetch($url);
is($r->{code}, 200, 'CRL fetched') or diag($r->{body});
is($r->{headers}{'content-type'}, 'application/pkix-crl', '  content type');
like($r->{headers}{'cache-control'},
     qr/^max-age=\d+, public, no-transform, must-revalidate$/,
     '  Cache-Control');
ok($r->{headers}{etag}, "  ETag $r->{headers}{etag}");
ok($r->{headers}{'last-modified'}, '  Last-Modified');
my $n0 = crl_number();
ok($n0 > 0, "  CRL number $n0");
is($n0, $nlong, '  the one the 1d location served');
$life = lifetime();
ok($life > 6600 && $life <= 7200, "  of 2h ($life s)");


($rc, my $out, my $err) = PKITest::run_cmd(['openssl', 'crl', '-inform',
    'DER', '-in', "$dir/crl.der", '-CAfile', "$pki/chain.pem", '-noout']);
like($out . $err, qr/verify OK/, '  openssl crl -CAfile: verify OK');

my $etag = $r->{headers}{etag};
$r = $t->curl('GET', $url, headers => ["If-None-Match: $etag"], quiet => 1);
is($r->{code}, 304, 'If-None-Match: 304');

# revoke one: the CRL lists it within ~2 s
is(revoke($bserial), 200, "revoked $bserial");
my $n1 = $n0;
for (1 .. 40) {
    sleep 0.1;
    $r = fetch($url);
    next if $r->{code} != 200;
    $n1 = crl_number();
    last if $n1 > $n0;
}
ok($n1 > $n0, "new CRL $n1 after the revocation");
ok(to_pem(), '  converted to PEM');
my ($vrc, $vout) = verify($bad);
ok($vrc != 0 && $vout =~ /certificate revoked/,
   'openssl verify -crl_check rejects the revoked one') or diag($vout);
($vrc, $vout) = verify($good);
is($vrc, 0, 'openssl verify -crl_check accepts the good one') or diag($vout);

# unknown CA, bad names
is(fetch('http://127.0.0.1:' . $t->http_port . '/crl/nosuch.crl')->{code},
   404, 'unknown CA: 404');
is(fetch('http://127.0.0.1:' . $t->http_port . '/crl/issuing')->{code},
   404, 'no .crl suffix: 404');
$r = fetch('http://127.0.0.1:' . $t->http_port . '/crl/nocrl.crl');
is($r->{code}, 404, 'a CA whose keyUsage lacks cRLSign: 404, no CRL');
$r = $t->curl('POST', $url, data => 'x', quiet => 1);
is($r->{code}, 405, 'POST: 405');
is($r->{headers}{allow}, 'GET, HEAD', '  with Allow (RFC 9110 15.5.6)');
is($r->{body}, "use GET or HEAD\n", '  text/plain, not nginx\'s HTML page');

# coalescing: 10 quick revocations, then fetches
my @serials;
for my $i (1 .. 10) {
    my ($f, $s) = enroll("burst$i");
    push @serials, $s;
}
$r = fetch($url);
my $before = crl_number();
my $t0 = time;
is(revoke($_), 200, "burst revoke $_") for @serials;
my $last = $before;
my %seen;
for (1 .. 30) {
    $r = fetch($url);
    if ($r->{code} == 200) {
        $last = crl_number();
        $seen{$last} = 1;
    }
    sleep 0.1;
}
ok($last > $before, "CRL moved on ($before -> $last)");
# (the numbers follow Redis's clock: count the CRLs, not the numbers)
ok(keys %seen <= 3, '  only a few CRLs built for 10 revocations ('
   . join(' ', sort keys %seen) . ')');
my ($c) = PKITest::run_cmd(['sh', '-c', "openssl crl -inform DER -in "
    . "$dir/crl.der -noout -text | grep -c 'Serial Number'"]);
$c = (PKITest::run_cmd(['sh', '-c', "openssl crl -inform DER -in "
    . "$dir/crl.der -noout -text | grep -c 'Serial Number'"]))[1];
chomp $c;
is($c, 11, '  all 11 revoked serials listed');

# without any CRL request, worker 0 rebuilds after a revocation (the
# refresher checks every 10 s): the stored CRL's number moves by itself
sub stored_number {
    my ($k) = $t->redis_keys('*{ca:issuing}:crl_meta');
    return -1 unless $k;
    my $m = $t->redis_raw('GET', $k);
    return $m =~ /^\d+ \d+ (\d+) / ? $1 : -1;
}
my $s0 = stored_number();
ok($s0 >= $last, "stored CRL number $s0");
my ($quiet, $qserial) = enroll('quiet');
is(revoke($qserial), 200, 'revoked one more, then no CRL request');
my $s1 = $s0;
for (1 .. 70) {
    sleep 0.25;
    $s1 = stored_number();
    last if $s1 > $s0;
}
ok($s1 > $s0, "the refresher rebuilt the CRL by itself ($s0 -> $s1)");
ok(!$t->redis_keys('*{ca:nocrl}:crl*')
   && !-e $t->prefix . '/pki_crl_cache/nocrl.crl',
   '  and built none for the CA without cRLSign');

# Redis down with a CRL in memory: still served
$t->stop_redis;
my $codes = '';
for (1 .. 6) {
    $r = fetch($url, max_time => 10);
    $codes .= "$r->{code} ";
    sleep 0.3;
}
unlike($codes, qr/\b(?!200)\d{3}\b/, "Redis down: served from memory ($codes)");

# Redis still down, and new workers with no CRL in memory (a reload; a
# worker replaced after a crash alike): the copy that worker 0 keeps on
# disk is served, checked first
my $copy = $t->prefix . '/pki_crl_cache/issuing.crl';
ok(-s $copy, 'worker 0 keeps a copy of the CRL on disk');
is(crl_number($copy), $s1, '  the last one built');

sub new_workers {
    my $master = $t->{children}{nginx};
    my %old = map { $_ => 1 } $t->workers_of($master);
    my $n = () = (PKITest::slurp($t->error_log) // '') =~ /reconfiguring/g;
    kill('HUP', $master);
    my $t0 = time;
    while (time - $t0 < 20) {
        my @w = $t->workers_of($master);
        my $log = PKITest::slurp($t->error_log) // '';
        my $m = () = $log =~ /reconfiguring/g;
        last if $m > $n && @w && !grep { $old{$_} } @w;
        sleep 0.1;
    }
}

new_workers();
$codes = '';
for (1 .. 4) {
    $r = fetch($url, max_time => 10);
    $codes .= "$r->{code} ";
}
unlike($codes, qr/\b(?!200)\d{3}\b/,
       "Redis down, new workers: served from the local copy ($codes)");
is(crl_number(), $s1, '  that CRL');
like(PKITest::slurp($t->error_log) // '',
     qr/serving CRL \d+ from the local copy/, '  logged');

# a copy that is not this CA's (here: cut short) is not served
my $der = PKITest::slurp($copy);
PKITest::spew($copy, substr($der, 0, length($der) - 10));
new_workers();
$r = fetch($url, max_time => 10);
is($r->{code}, 503, 'a damaged local copy: 503, not served');
like(PKITest::slurp($t->error_log) // '',
     qr/local copy: CRL copy: unusable/, '  logged');

$t->stop_all;
done_testing();
