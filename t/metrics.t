#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# /pki/metrics and /pki/dashboard: the counters move by exactly the traffic
# this test sends (successes and each failure class: auth, policy,
# malformed, backend), histogram buckets are cumulative and monotonic, the
# certificate gauges and the Redis history buckets follow, and the
# dashboard page, loaded in headless Chromium, shows the same numbers.
# Every 503 (history with Redis down, pki_metrics_zone off) carries
# Retry-After; a reload that turns counting off leaves no worker using the
# old cycle's zone.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep time);
use Time::Local qw(timegm);
use MIME::Base64 qw(encode_base64 encode_base64url);
use PKITest;
use SCEPMsg;

my $t = PKITest->new;

# the Matter hierarchies (PAI, ICAC in the token) when the module is built
my $matter = -f "$PKITest::BUILD/ngx_http_matter_module.so";
if ($matter) {
    $t->make_matter_pki($t->pki);
}
my $acme = eval { require Crypt::PK::ECC; 1 };

my $conf = $t->render_conf;
# a fast timer: history flush every 1 s, certificate counts every 6 s
$conf =~ s/(pki_thread_pool pki;)/$1\n    pki_metrics_interval 1s;/
    or die 'no pki_thread_pool line';
# starts Redis and nginx, builds the SCEP message tool (t/lib/scepmsg.c)
my ($scep) = scep_setup($t, $conf);

my $base = 'https://127.0.0.1:' . $t->https_port;
my $json = JSON::PP->new;

# the header compiled into the module is the page in the tree
{
    my ($rc, $out) = run_cmd(['perl', "$PKITest::TOP/scripts/embed-dashboard.pl"]);
    is($out, slurp("$PKITest::TOP/ngx_pki_module/ngx_http_pki_dashboard.h"),
       'ngx_http_pki_dashboard.h is current (scripts/embed-dashboard.pl)');
}

sub delta {
    my ($a, $b, $k) = @_;
    return ($b->{$k} // 0) - ($a->{$k} // 0);
}

sub sum_match {
    my ($m, $re) = @_;
    my $s = 0;
    $s += $m->{$_} for grep { /$re/ } keys %$m;
    return $s;
}

my $r = $t->curl('GET', "$base/pki/metrics", quiet => 1);
is($r->{code}, 401, 'metrics need the admin credentials');

# read only: 405 with Allow (RFC 9110 15.5.6)
for my $p ('/pki/metrics', '/pki/dashboard') {
    $r = $t->curl('POST', "$base$p", user => 'admin:admin', data => 'x',
                  quiet => 1);
    is($r->{code}, 405, "POST $p: 405");
    is($r->{headers}{allow}, 'GET, HEAD', '  with Allow');
    is($r->{body}, "use GET or HEAD\n", '  as text/plain, not HTML');
}

my ($m0, $r0) = $t->metrics_scrape;
like($r0->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4},
     'Prometheus text format');

# --- traffic ----------------------------------------------------------------

# first (a restarted test Redis is empty): a backend failure
my ($csr) = $t->make_csr('mauth', subj => '/CN=metrics-auth');
$t->stop_redis;
$r = $t->est_post('simpleenroll', $csr, quiet => 1, max_time => 10);
is($r->{code}, 503, 'Redis down: 503');
# the dashboard's history reads Redis: 503 with Retry-After, as every 503
$r = $t->curl('GET', "$base/pki/dashboard?history=minute&n=10",
              user => 'admin:admin', quiet => 1, max_time => 10);
is($r->{code}, 503, 'Redis down: history 503');
is($r->{headers}{'retry-after'}, 5, '  with Retry-After: 5');
$t->start_redis;

my @serials;
for my $i (1 .. 3) {
    my ($csr) = $t->make_csr("m$i", subj => "/CN=metrics-$i");
    my $r = $t->est_post('simpleenroll', $csr, quiet => 1);
    is($r->{code}, 200, "enroll m$i");
    my $pem = $t->p7_to_pem($r->{body});
    my $f = $pem ? $t->save_first_cert($pem, "m$i") : undef;
    push @serials, $f ? $t->x509_field($f, 'serial') : '';
}

$r = $t->curl('GET', $t->est_url('cacerts'), quiet => 1);
is($r->{code}, 200, 'cacerts');

for (1 .. 2) {
    $r = $t->est_post('simpleenroll', $csr, user => 'demo:nope', quiet => 1);
    is($r->{code}, 401, "auth failure $_");
}

my ($bad) = $t->make_csr('mpol', subj => '/CN=metrics-pol', curve => 'P-521');
$r = $t->est_post('simpleenroll', $bad, quiet => 1);
ok($r->{code} >= 400 && $r->{code} < 500, "policy failure ($r->{code})");

$r = $t->est_post('simpleenroll', 'not a csr', raw => "!!!!", quiet => 1);
ok($r->{code} >= 400 && $r->{code} < 500, "malformed ($r->{code})");


$r = $t->curl('POST', "$base/pki/admin/revoke", user => 'admin:admin',
              headers => ['Content-Type: application/json'],
              data => qq({"serial":"$serials[0]","reason":"keyCompromise",)
                      . qq("invalidity_date":"2026-01-01T00:00:00Z"}),
              quiet => 1);
is($r->{code}, 200, 'revoked one (with an invalidity date)');

# --- ACME, SCEP, Matter: successes and failure classes ----------------------

my %sent;   # protocol -> outcome -> requests this test sent

# ACME: a minimal JWS client (ES256, CryptX)
my $abase = $base . '/acme';
my $aj = JSON::PP->new->canonical;

sub acme_nonce {
    my $r = $t->curl('GET', "$abase/new-nonce", quiet => 1);
    $sent{acme}{success}++;
    return $r->{headers}{'replay-nonce'} // '';
}

sub acme_post {
    my ($key, $url, $payload, %o) = @_;
    my %h = (alg => 'ES256', url => $o{url} // $url, nonce => acme_nonce());
    if ($o{kid}) {
        $h{kid} = $o{kid};
    } else {
        my $j = $key->export_key_jwk('public', 1);
        $h{jwk} = { map { $_ => $j->{$_} } qw(kty crv x y) };
    }
    my $p64 = encode_base64url($aj->encode(\%h));
    my $pl64 = encode_base64url($aj->encode($payload));
    my $sig = $key->sign_message_rfc7518("$p64.$pl64", 'SHA256');
    return $t->curl('POST', $url, quiet => 1,
                    headers => ['Content-Type: application/jose+json'],
                    data => $aj->encode({ protected => $p64,
                                          payload => $pl64,
                                          signature => encode_base64url($sig)
                                        }));
}

SKIP: {
    skip 'no CryptX (Crypt::PK::ECC)', 9 if !$acme;

    $r = $t->curl('GET', "$abase/directory", quiet => 1);
    is($r->{code}, 200, 'acme: directory');
    $sent{acme}{success}++;

    my $key = Crypt::PK::ECC->new;
    $key->generate_key('secp256r1');
    $r = acme_post($key, "$abase/new-account",
                   { termsOfServiceAgreed => JSON::PP::true });
    is($r->{code}, 201, 'acme: newAccount');
    $sent{acme}{success}++;
    my $kid = $r->{headers}{location} // '';

    my $stranger = Crypt::PK::ECC->new;
    $stranger->generate_key('secp256r1');
    $r = acme_post($stranger, "$abase/new-account",
                   { onlyReturnExisting => JSON::PP::true });
    is($r->{code}, 400, 'acme: unknown account (accountDoesNotExist)');
    $sent{acme}{auth}++;

    $r = acme_post($key, "$abase/new-order", { identifiers => [] },
                   kid => $kid, url => "$abase/new-account");
    is($r->{code}, 401, 'acme: JWS url is not the request URL (unauthorized)');
    $sent{acme}{auth}++;

    $r = acme_post($key, "$abase/new-order", { identifiers => [
        { type => 'email', value => 'a@example.com' } ] }, kid => $kid);
    is($r->{code}, 400, 'acme: unsupportedIdentifier');
    $sent{acme}{policy}++;

    $r = acme_post($key, "$abase/new-order", { identifiers => [
        { type => 'dns', value => 'bad..name' } ] }, kid => $kid);
    is($r->{code}, 400, 'acme: rejectedIdentifier');
    $sent{acme}{policy}++;

    # client text with quotes and UTF-8 of its own, cut at the label's
    # length: none of it may reach a label (checked after the scrape)
    for my $v ("a\"ATTACKER_x", "ab\"" . ("\xc3\xa9" x 40)) {
        $r = acme_post($key, "$abase/new-order", { identifiers => [
            { type => 'dns', value => $v } ] }, kid => $kid);
        is($r->{code}, 400, 'acme: rejectedIdentifier with a quote in it');
        $sent{acme}{policy}++;
    }

    $r = $t->curl('POST', "$abase/new-account", data => '{}', quiet => 1,
                  headers => ['Content-Type: application/json']);
    is($r->{code}, 415, 'acme: wrong content type');
    $sent{acme}{malformed}++;

    $r = $t->curl('POST', "$abase/new-account", data => '{not json',
                  quiet => 1,
                  headers => ['Content-Type: application/jose+json']);
    is($r->{code}, 400, 'acme: not a JWS');
    $sent{acme}{malformed}++;

    $r = $t->curl('GET', "$abase/no-such-thing", quiet => 1);
    is($r->{code}, 404, 'acme: unknown resource');
    $sent{acme}{malformed}++;
}

# SCEP (t/lib/SCEPMsg.pm builds the CMS messages)
{
    $r = $t->curl('GET', "$scep/scep?operation=GetCACaps", quiet => 1);
    is($r->{code}, 200, 'scep: GetCACaps');
    $r = $t->curl('GET', "$scep/scep?operation=GetCACert", quiet => 1);
    is($r->{code}, 200, 'scep: GetCACert');
    my $f = req(cn => 'metrics-scep', challenge => 'demo');
    my $h = rep(send_msg($f), $f);
    is($h->{status}, 0, 'scep: PKCSReq SUCCESS') or diag($h->{raw});
    $sent{scep}{success} += 3;

    $f = req(cn => 'metrics-scep2', challenge => 'wrong');
    $h = rep(send_msg($f), $f);
    is($h->{status}, 2, 'scep: wrong challenge FAILURE');
    $sent{scep}{auth}++;

    $f = req(cn => 'metrics-scep3', challenge => 'demo',
             'signing-time' => -3 * 86400);
    $h = rep(send_msg($f), $f);
    is($h->{status}, 2, 'scep: signingTime three days old FAILURE');
    $sent{scep}{policy}++;

    $r = $t->curl('POST', "$scep/scep?operation=PKIOperation",
                  data => 'not a pkcs7 at all', quiet => 1);
    is($r->{code}, 400, 'scep: garbage');
    $sent{scep}{malformed}++;
}

# Matter: the DAC batch endpoint
my $dacs = 0;
SKIP: {
    skip 'ngx_http_matter_module.so not built', 4 if !$matter;

    my $post = sub {
        my ($body, %o) = @_;
        return $t->curl('POST', "$base/matter/dac/batch", data => $body,
                        user => exists $o{user} ? $o{user} : 'demo:demo',
                        headers => ['Content-Type: application/json'],
                        quiet => 1, max_time => 60);
    };
    my @csrs = map { encode_base64(($t->make_csr("md$_",
                         subj => "/CN=metrics unit $_"))[0], '') } 1 .. 2;
    $r = $post->($json->encode({ csrs => \@csrs }));
    is($r->{code}, 200, 'matter: batch of 2') or diag($r->{body});
    $sent{matter}{success}++;
    $dacs = 2;

    my ($c384) = $t->make_csr('md384', curve => 'P-384');
    $r = $post->($json->encode({ csrs => [ encode_base64($c384, '') ] }));
    is($r->{code}, 400, 'matter: a P-384 CSR (policy)');
    $sent{matter}{policy}++;

    $r = $post->('{"csrs": [');
    is($r->{code}, 400, 'matter: broken JSON');
    $sent{matter}{malformed}++;

    $r = $post->($json->encode({ csrs => \@csrs }), user => undef);
    is($r->{code}, 401, 'matter: no credentials (auth_basic)');
    $sent{matter}{auth}++;
}

sleep 0.3;
my ($m1) = $t->metrics_scrape;

# --- counters ------------------------------------------------------------------

my $L = 'protocol="est",ca="issuing",template="device"';
is(delta($m0, $m1, qq(pki_requests_total{$L,outcome="success"})), 4,
   'est success requests +4 (3 enrollments + cacerts)');
is(delta($m0, $m1, qq(pki_requests_total{$L,outcome="policy"})), 1,
   'est policy failures +1');
is(delta($m0, $m1, qq(pki_requests_total{$L,outcome="malformed"})), 1,
   'est malformed +1');
is(delta($m0, $m1, qq(pki_requests_total{$L,outcome="backend"})), 1,
   'est backend failures +1');
is(delta($m0, $m1,
         'pki_requests_total{protocol="est",ca="",template="",outcome="auth"}'),
   2, 'est auth failures (refused by auth_basic) +2');
is(sum_match($m1, qr/^pki_requests_total\{protocol="est"/)
   - sum_match($m0, qr/^pki_requests_total\{protocol="est"/), 9,
   'est requests +9 in all');

is(delta($m0, $m1, qq(pki_issuance_total{$L,outcome="success"})), 3,
   'issuance success +3');
is(delta($m0, $m1, qq(pki_issuance_total{$L,outcome="backend"})), 1,
   'issuance backend failure +1 (the core hook)');
is(delta($m0, $m1, 'pki_revocations_total{ca="issuing",reason="keyCompromise",'
                   . 'outcome="success"}'), 1, 'revocations +1 by reason');
ok(!(grep { /invalid since/ } keys %$m1),
   '  the invalidity date in no label (one series per date filled the zone)');
is(delta($m0, $m1, 'pki_requests_total{protocol="admin",ca="",template="",'
                   . 'outcome="success"}'), 1, 'admin requests +1');
is(delta($m0, $m1, 'pki_sign_duration_seconds_count{what="certificate"}'),
   3 + 1 + $dacs, 'certificate signatures: 3 EST + 1 SCEP + the DACs');
ok(delta($m0, $m1, 'pki_redis_errors_total') >= 1, 'Redis errors counted');
ok(delta($m0, $m1, 'pki_redis_duration_seconds_count') >= 6,
   'Redis commands timed');
is(sum_match($m1, qr/^pki_failures_total\{protocol="est"/)
   - sum_match($m0, qr/^pki_failures_total\{protocol="est"/), 5,
   'failure reasons: 5 est failures');
ok((grep { /^pki_failures_total\{protocol="est",outcome="policy",reason="[^"]+"\}/ }
    keys %$m1), 'a policy failure reason label');
ok(!(grep { /ATTACKER|[^\x20-\x7e]/ } keys %$m1),
   'no client text and no byte outside printable ASCII in any label');
ok(exists $m1->{'pki_thread_tasks_in_flight'}, 'thread tasks gauge');

# each CA certificate's notAfter as Unix time, as openssl reads it
for my $ca (['issuing', 'issuing.pem'], ['matter-pai', 'matter/pai.pem'],
            ['matter-icac', 'matter/icac.pem'])
{
    my ($rc, $end) = run_cmd(['openssl', 'x509', '-noout', '-enddate',
                              '-dateopt', 'iso_8601', '-in',
                              $t->pki . "/$ca->[1]"]);
    chomp $end;
    my ($y, $mo, $d, $h, $mi, $sec) =
        $end =~ /notAfter=(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)Z/;
    my $want = defined $y ? timegm($sec, $mi, $h, $d, $mo - 1, $y) : -1;
    is($m1->{qq(pki_ca_not_after_timestamp_seconds{ca="$ca->[0]"})}, $want,
       "CA $ca->[0]: its certificate's $end");
}

# ACME, SCEP, Matter: each outcome class by exactly what was sent
for my $p (qw(acme scep matter)) {
    for my $o (qw(success auth policy malformed backend)) {
        my $re = qr/^pki_requests_total\{protocol="$p",.*outcome="$o"\}$/;
        is(sum_match($m1, $re) - sum_match($m0, $re), $sent{$p}{$o} // 0,
           "$p $o requests +" . ($sent{$p}{$o} // 0));
    }
    my $re = qr/^pki_request_duration_seconds_count\{protocol="$p"\}$/;
    my $all = 0;
    $all += $_ for values %{ $sent{$p} || {} };
    is(sum_match($m1, $re) - sum_match($m0, $re), $all,
       "$p latency observed once per request ($all)");
}
SKIP: {
    skip 'no CryptX', 1 if !$acme;
    is(delta($m0, $m1, 'pki_requests_total{protocol="acme",ca="issuing",'
                       . 'template="acme",outcome="success"}'),
       $sent{acme}{success}, 'acme requests labelled with CA and template');
}
is(delta($m0, $m1, 'pki_requests_total{protocol="scep",ca="issuing",'
                   . 'template="scep",outcome="policy"}'), 1,
   'scep requests labelled with CA and template');
is(delta($m0, $m1, 'pki_issuance_total{protocol="scep",ca="issuing",'
                   . 'template="scep",outcome="success"}'), 1,
   'scep issuance +1');
SKIP: {
    skip 'no matter module', 2 if !$matter;
    is(delta($m0, $m1, 'pki_requests_total{protocol="matter",ca="matter-pai",'
                       . 'template="matter-dac",outcome="malformed"}'), 1,
       'matter requests labelled with CA and template');
    is(delta($m0, $m1, 'pki_issuance_total{protocol="matter",ca="matter-pai",'
                       . 'template="matter-dac",outcome="success"}'), 2,
       'matter issuance +2');
}

# histograms: cumulative, monotonic, +Inf == count
for my $h (qw(pki_request_duration_seconds{protocol="est"
              pki_sign_duration_seconds{what="certificate"
              pki_redis_duration_seconds)) {
    my ($name, $lab) = $h =~ /^([^{]+)(?:\{(.*))?$/;
    $lab = defined $lab ? "$lab," : '{';
    $lab = "{$lab" if $lab !~ /^\{/;
    my @b;
    for my $le (qw(0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1
                   2.5 5 +Inf)) {
        push @b, $m1->{"${name}_bucket$lab" . qq(le="$le"}) } // -1;
    }
    my $mono = !grep { $b[$_] < $b[$_ - 1] || $b[$_] < 0 } 1 .. $#b;
    ok($mono, "$name buckets monotonic (@b)");
    my $suffix = $lab eq '{' ? '' : substr($lab, 0, -1) . '}';
    is($b[-1], $m1->{"${name}_count$suffix"}, "$name +Inf bucket == count");
}
is(delta($m0, $m1, 'pki_request_duration_seconds_count{protocol="est"}'), 9,
   'latency observed once per est request');

# --- certificate gauges and the Redis history (timer, thread pool) --------

my $m2;
my $deadline = time + 15;
while (time < $deadline) {
    ($m2) = $t->metrics_scrape;
    # the gauges are refreshed by a timer: wait for one refresh that has
    # seen all of this test's issuances and the revocation, not just a
    # valid count that an older refresh can show too
    last if ($m2->{'pki_certificates{ca="issuing",state="valid"}'} // -1) == 3
        && ($m2->{'pki_certificates{ca="issuing",state="revoked"}'} // -1) == 1
        && ($m2->{'pki_certificates{ca="issuing",state="expiring_30d"}'} // -1)
           == 4;
    sleep 0.5;
}
is($m2->{'pki_certificates{ca="issuing",state="valid"}'}, 3,
   'valid certificates: 3 EST + 1 SCEP issued - 1 revoked');
is($m2->{'pki_certificates{ca="issuing",state="revoked"}'}, 1, 'revoked 1');
is($m2->{'pki_certificates{ca="issuing",state="expiring_30d"}'}, 3,
   'expiring within 30 days: 3 (30 d templates; the revoked one left out)');
is($m2->{'pki_certificates{ca="issuing",state="expiring_7d"}'}, 0,
   'expiring within 7 days: 0');

# one worker of the fleet counts a CA per period (6 s here) and keeps the
# result in Redis for the others, for a tick less than the period; the
# revoked hash is walked in pages (HSCAN), never with HKEYS in one script
# (that blocked Redis ~1 s per run at 500k revoked certificates)
# (its time to live read first: the key may expire between the two reads,
# and a count that is there was there when the PTTL was read)
my ($cached, $pttl) = ('', -2);
$deadline = time + 10;
while (time < $deadline) {
    $pttl = $t->redis_raw('PTTL', 'pki:{ca:issuing}:counts');
    $cached = $t->redis_raw('GET', 'pki:{ca:issuing}:counts');
    chomp($pttl, $cached);
    last if $pttl > 0 && $cached =~ /^\d+ \d+ \d+ \d+$/;
    sleep 0.2;
}
is($cached, '4 1 0 3',
   'the count kept in Redis: 4 unexpired, 1 revoked, 0 in 7 d, 3 in 30 d');
ok($pttl > 0 && $pttl <= 5000, "... for at most 5 ticks of 1 s ($pttl ms)");
unlike($t->redis_raw('INFO', 'commandstats'), qr/^cmdstat_hkeys:/m,
       'no HKEYS: the revoked hash is walked in HSCAN pages');

my ($hist, $sum);
$deadline = time + 10;
while (time < $deadline) {
    $r = $t->curl('GET', "$base/pki/dashboard?history=minute&n=10",
                  user => 'admin:admin', quiet => 1);
    $hist = eval { $json->decode($r->{body}) } if $r->{code} == 200;
    $sum = 0;
    for my $b (@{ $hist->{buckets} || [] }) {
        $sum += $b->{v}{'iss:issuing:success'} // 0;
    }
    last if $sum == 4;
    sleep 0.5;
}
is($sum, 4, 'history (Redis minute buckets): 4 issued (3 EST + 1 SCEP)');

# the page's data is for the page: another site's <img> or fetch() (its
# Sec-Fetch-Site, or an Origin of another host) gets 403, the page
# itself still loads, and the page's own same-origin fetch is served
for my $q ('history=minute&n=10', 'format=json') {
    for my $h (['Sec-Fetch-Site: cross-site', 'cross-site'],
               ['Origin: https://evil.example', 'a foreign Origin']) {
        $r = $t->curl('GET', "$base/pki/dashboard?$q", user => 'admin:admin',
                      headers => [$h->[0]], quiet => 1);
        is($r->{code}, 403, "dashboard ?$q, $h->[1]: 403");
    }
    $r = $t->curl('GET', "$base/pki/dashboard?$q", user => 'admin:admin',
                  headers => ['Sec-Fetch-Site: same-origin'], quiet => 1);
    is($r->{code}, 200, "dashboard ?$q, same-origin: 200");
}
$r = $t->curl('GET', "$base/pki/dashboard", user => 'admin:admin',
              headers => ['Sec-Fetch-Site: cross-site'], quiet => 1);
is($r->{code}, 200, 'the page itself, linked from another site: 200');
like($r->{headers}{'content-security-policy'} // '',
     qr/frame-ancestors 'none'/, '  no other site may frame it');
is($r->{headers}{'x-content-type-options'} // '', 'nosniff',
   '  nosniff: a browser keeps its type');
# the curl helper keeps one value of a header given twice: counted in the
# header block as sent, once on each answer of ours here (HEAD, 405 too)
for my $c (['GET', '/pki/dashboard'], ['GET', '/pki/metrics'],
           ['GET', '/pki/dashboard?format=json'], ['HEAD', '/pki/metrics'],
           ['POST', '/pki/metrics'])
{
    $r = $t->curl($c->[0], "$base$c->[1]", user => 'admin:admin',
                  headers => ['Sec-Fetch-Site: same-origin'], quiet => 1,
                  $c->[0] eq 'HEAD' ? (extra => ['-I']) : ());
    my $n = () = $r->{head} =~ /^X-Content-Type-Options:/mgi;
    is($n, 1, "  $c->[0] $c->[1] ($r->{code}): nosniff sent once");
}

# A reload keeps the zone's counts; the new workers must not add them to
# the history a second time (each reload did, before the history's share
# of each count was kept in the zone)
sub history_sum {
    my $rr = $t->curl('GET', "$base/pki/dashboard?history=minute&n=10",
                      user => 'admin:admin', quiet => 1);
    my $hh = $rr->{code} == 200 ? eval { $json->decode($rr->{body}) } : undef;
    return undef if !$hh;
    my $n = 0;
    $n += $_->{v}{'iss:issuing:success'} // 0 for @{ $hh->{buckets} || [] };
    return $n;
}
for my $round (1, 2) {
    my $nre = () = (slurp($t->error_log) // '') =~ /reconfiguring/g;
    kill('HUP', $t->{children}{nginx});
    my $t0 = time;
    sleep 0.05 while time - $t0 < 15
        && (() = (slurp($t->error_log) // '') =~ /reconfiguring/g) <= $nre;
    sleep 3.5;                      # three flushes of the new workers
    is(history_sum(), 4, "history after reload $round: still 4");
}
is($hist->{step}, 60, 'minute buckets');
my @mk = $t->redis_keys('pki:{metrics}:m:*');
ok(@mk >= 1, 'minute bucket keys in Redis');
my $ttl = $mk[0] ? $t->redis_raw('TTL', $mk[0]) : 0;
ok($ttl > 47 * 3600 && $ttl <= 48 * 3600 + 120, "minute bucket TTL ~48 h ($ttl)");
my @hk = $t->redis_keys('pki:{metrics}:h:*');
$ttl = $hk[0] ? $t->redis_raw('TTL', $hk[0]) : 0;
ok($ttl > 89 * 86400 && $ttl <= 90 * 86400 + 7200, "hour bucket TTL ~90 d ($ttl)");
$r = $t->curl('GET', "$base/pki/dashboard?history=hour&n=3",
              user => 'admin:admin', quiet => 1);
is(eval { $json->decode($r->{body})->{step} }, 3600, 'hour buckets');
$r = $t->curl('GET', "$base/pki/dashboard?history=week",
              user => 'admin:admin', quiet => 1);
is($r->{code}, 400, 'bad history argument: 400');

# --- the dashboard in headless Chromium ------------------------------------

$r = $t->curl('GET', "$base/pki/dashboard", user => 'admin:admin', quiet => 1);
is($r->{code}, 200, 'dashboard page');
unlike($r->{body}, qr{(?:src|href)\s*=\s*["']?(?:https?:)?//}i,
       'no outside script, style or link');

SKIP: {
    my $chromium = -x '/usr/bin/chromium' ? '/usr/bin/chromium' : undef;
    skip 'no chromium', 12 if !$chromium;

    my ($m3) = $t->metrics_scrape;
    my $ud = $t->dir . '/chromium';
    mkdir $ud;
    my ($rc, $dom, $err) = run_cmd([$chromium, '--headless', '--no-sandbox',
        '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update',
        '--disable-sync', "--user-data-dir=$ud", '--ignore-certificate-errors',
        '--virtual-time-budget=5000', '--dump-dom',
        'https://admin:admin@127.0.0.1:' . $t->https_port . '/pki/dashboard'],
        timeout => 40);
    ok($dom =~ /data-protocol="est"/, 'chromium rendered the page')
        or diag("rc $rc: $err\n" . substr($dom, 0, 2000));

    my %shown;
    $shown{$1} = $2
        while $dom =~ /data-metric="([\w-]+)">([^<]*)</g;
    my ($est) = $dom =~ /data-protocol="est">(.*?)<\/tr>/s;
    my ($est_req) = ($est // '') =~ /data-metric="requests">([^<]*)</;
    my ($ca) = $dom =~ /data-ca="issuing">(.*?)<\/tr>/s;
    my ($ca_valid) = ($ca // '') =~ /data-metric="valid">([^<]*)</;
    my ($ca_iss) = ($ca // '') =~ /data-metric="issued">([^<]*)</;
    s/\s//g for grep { defined } values %shown, $est_req, $ca_valid, $ca_iss;

    my $iss = sum_match($m3, qr/^pki_issuance_total\{.*outcome="success"/);
    is($shown{'issued-total'}, $iss, "issued total matches ($iss)");
    my $fail = sum_match($m3, qr/^pki_requests_total\{/)
               - sum_match($m3, qr/^pki_requests_total\{.*outcome="success"/);
    is($shown{'failures-total'}, $fail, "failed requests match ($fail)");
    is($shown{'revoked-total'}, 1, 'revoked matches');
    is($est_req, sum_match($m3, qr/^pki_requests_total\{protocol="est"/),
       'est requests match');
    is($ca_valid, 3, 'CA valid certificates match');
    is($ca_iss, 4, 'CA issued matches');

    # the per-protocol table has a row for ACME, SCEP and Matter
    for my $p (qw(acme scep matter)) {
        my ($row) = $dom =~ /data-protocol="$p">(.*?)<\/tr>/s;
        my ($req) = ($row // '') =~ /data-metric="requests">([^<]*)</;
        my ($bad) = ($row // '') =~ /data-metric="failed">([^<]*)</;
        s/\s//g for grep { defined } $req, $bad;
        my $want = sum_match($m3, qr/^pki_requests_total\{protocol="$p"/);
        my $fails = $want - sum_match($m3,
            qr/^pki_requests_total\{protocol="$p",.*outcome="success"/);
        SKIP: {
            skip "no $p traffic", 2 if !$want;
            is($req, $want, "dashboard: $p requests match ($want)");
            is($bad, $fails, "dashboard: $p failed requests match ($fails)");
        }
    }
}

$t->stop_nginx;

# --- more workers than the zone's 8 slots: two workers share each slot,
# and each count still reaches the history once -------------------------

{
    (my $many = $conf) =~ s/worker_processes \S+;/worker_processes 16;/
        or die "no worker_processes in the config";
    $t->start_nginx($many);
    my $before = history_sum() // -1;
    for my $i (1 .. 4) {
        my ($csr) = $t->make_csr("w$i", subj => "/CN=workers-$i");
        my $rr = $t->est_post('simpleenroll', $csr, quiet => 1);
        is($rr->{code}, 200, "16 workers: enroll w$i");
    }
    my ($got, $t0) = (undef, time);
    while (time - $t0 < 10) {
        $got = history_sum();
        last if defined $got && $got >= $before + 4;
        sleep 0.5;
    }
    sleep 3;                        # more flushes, by every worker
    is(history_sum(), $before + 4,
       '16 workers: 4 issuances add 4 to the history');
    $t->stop_nginx;
}

# --- counting off (pki_metrics_zone off): 503 until a reload turns it on --

sub metrics_off {
    my ($how) = @_;
    for my $p ('/pki/metrics', '/pki/dashboard',
               '/pki/dashboard?history=hour') {
        $r = $t->curl('GET', "$base$p", user => 'admin:admin', quiet => 1,
                      max_time => 10);
        is($r->{code}, 503, "metrics off ($how): $p 503");
        is($r->{headers}{'retry-after'}, 3600, '  with Retry-After: 3600');
    }
}

$t->start_nginx($t->render_conf('--metrics', 'off'));
metrics_off('from the start');
$t->stop_nginx;

# on, then a reload turns counting off: the new workers must not use the
# old cycle's zone (unmapped by the master at the reload)
$t->start_nginx($conf);
$t->write_conf($t->render_conf('--metrics', 'off'));
$t->reload_nginx;
metrics_off('by a reload');
$r = $t->curl('GET', $t->est_url('cacerts'), quiet => 1, max_time => 10);
is($r->{code}, 200, 'metrics off by a reload: cacerts 200');
unlike(slurp($t->error_log) // '', qr/exited on signal/,
       'metrics off by a reload: no worker died');
$t->stop_nginx;
done_testing();
