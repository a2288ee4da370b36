#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# /pki/metrics and /pki/dashboard: the counters move by exactly the traffic
# this test sends (successes and each failure class: auth, policy,
# malformed, backend), histogram buckets are cumulative and monotonic, the
# certificate gauges and the Redis history buckets follow, and the
# dashboard page, loaded in headless Chromium, shows the same numbers.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep time);
use PKITest;

my $t = PKITest->new;
$t->start_redis;

my $conf = $t->render_conf;
# a fast timer: history flush every 1 s, certificate counts every 6 s
$conf =~ s/(pki_thread_pool pki;)/$1\n    pki_metrics_interval 1s;/
    or die 'no pki_thread_pool line';
$t->start_nginx($conf);

my $base = 'https://127.0.0.1:' . $t->https_port;
my $json = JSON::PP->new;

# the header compiled into the module is the page in the tree
{
    my ($rc, $out) = run_cmd(['perl', "$PKITest::TOP/scripts/embed-dashboard.pl"]);
    is($out, slurp("$PKITest::TOP/ngx_pki_module/ngx_http_pki_dashboard.h"),
       'ngx_http_pki_dashboard.h is current (scripts/embed-dashboard.pl)');
}

sub scrape {
    my $r = $t->curl('GET', "$base/pki/metrics", user => 'admin:admin',
                     quiet => 1);
    die "metrics: $r->{code}" if $r->{code} != 200;
    my %m;
    for (split /\n/, $r->{body}) {
        next if /^#/ || !/\S/;
        /^(\S.*) (\S+)$/ or die "bad line: $_";
        $m{$1} = $2;
    }
    return (\%m, $r);
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

my ($m0, $r0) = scrape();
like($r0->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4},
     'Prometheus text format');

# --- traffic ----------------------------------------------------------------

# first (a restarted test Redis is empty): a backend failure
my ($csr) = $t->make_csr('mauth', subj => '/CN=metrics-auth');
$t->stop_redis;
$r = $t->est_post('simpleenroll', $csr, quiet => 1, max_time => 10);
is($r->{code}, 503, 'Redis down: 503');
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
              data => qq({"serial":"$serials[0]","reason":"keyCompromise"}),
              quiet => 1);
is($r->{code}, 200, 'revoked one');

sleep 0.3;
my ($m1) = scrape();

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
is(delta($m0, $m1, 'pki_requests_total{protocol="admin",ca="",template="",'
                   . 'outcome="success"}'), 1, 'admin requests +1');
is(delta($m0, $m1, 'pki_sign_duration_seconds_count{what="certificate"}'), 3,
   'certificate signatures +3');
ok(delta($m0, $m1, 'pki_redis_errors_total') >= 1, 'Redis errors counted');
ok(delta($m0, $m1, 'pki_redis_duration_seconds_count') >= 6,
   'Redis commands timed');
is(sum_match($m1, qr/^pki_failures_total\{protocol="est"/)
   - sum_match($m0, qr/^pki_failures_total\{protocol="est"/), 5,
   'failure reasons: 5 est failures');
ok((grep { /^pki_failures_total\{protocol="est",outcome="policy",reason="[^"]+"\}/ }
    keys %$m1), 'a policy failure reason label');
ok(exists $m1->{'pki_thread_tasks_in_flight'}, 'thread tasks gauge');

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
    ($m2) = scrape();
    last if ($m2->{'pki_certificates{ca="issuing",state="valid"}'} // -1) == 2;
    sleep 0.5;
}
is($m2->{'pki_certificates{ca="issuing",state="valid"}'}, 2,
   'valid certificates: 3 issued - 1 revoked');
is($m2->{'pki_certificates{ca="issuing",state="revoked"}'}, 1, 'revoked 1');
is($m2->{'pki_certificates{ca="issuing",state="expiring_30d"}'}, 3,
   'expiring within 30 days: 3 (30 d template)');
is($m2->{'pki_certificates{ca="issuing",state="expiring_7d"}'}, 0,
   'expiring within 7 days: 0');

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
    last if $sum == 3;
    sleep 0.5;
}
is($sum, 3, 'history (Redis minute buckets): 3 issued');
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
    skip 'no chromium', 6 if !$chromium;

    my ($m3) = scrape();
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
    is($ca_valid, 2, 'CA valid certificates match');
    is($ca_iss, 3, 'CA issued matches');
}

$t->stop_nginx;
done_testing();
