#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# The metrics stay bounded and true (metrics reviewer):
#  1. SCEP messages naming 45 different digest algorithms (OIDs an
#     anonymous client picks) make at most 33 pki_failures_total series
#     for scep: the reason label drops the algorithm's name, and a
#     protocol's reasons past 32 count as reason="other" (they made a
#     series each, for ever: in a small zone the table filled and later
#     issuances went uncounted).  The error log still names each one.
#  2. pki_certificates{state="expiring_*"} leaves revoked certificates
#     out (they were counted while valid was not): 2 issued, 1 revoked,
#     expiring as the certificates' notAfter (openssl x509) says.
#  3. after a reload that removes a pki_ca, its gauges leave the scrape
#     and the dashboard's JSON (the zone outlives the reload: they stayed
#     frozen there for ever).
#  4. pki_thread_tasks_in_flight with 9 workers (more than the zone's 8
#     slots) is the number of requests stuck on the token (the shim's hang
#     file), then 0 (workers 0 and 8 shared a slot, each overwriting the
#     other's count).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use POSIX ();
use MIME::Base64 ();
use PKITest;
use SCEPMsg;

my $t = PKITest->new;
my $dir = $t->dir;

sub conf {
    my (@extra) = @_;
    my $c = $t->render_conf(@extra);
    $c =~ s/(pki_thread_pool pki;)/$1\n    pki_metrics_interval 1s;/
        or die 'no pki_thread_pool line';
    return $c;
}

sub scrape_body {
    my ($path) = @_;
    my $r = $t->curl('GET', 'https://127.0.0.1:' . $t->https_port . $path,
                     user => 'admin:admin', quiet => 1);
    return $r->{body} // '';
}

# --- 1. SCEP failure reasons ------------------------------------------------

my ($base) = scep_setup($t, conf());

# known digest-less OIDs (names OpenSSL has): each a different short name
my @oids = grep { !/^2\.16\.840\.1\.101\.3\.4\.2\./ && !/^1\.2\.840\.113549\.2\./ }
           map { /, ([0-9]+(?:\.[0-9]+)+)$/ ? $1 : () }
           split /\n/, `openssl list -objects 2>/dev/null`;
splice(@oids, 45) if @oids > 45;
cmp_ok(scalar @oids, '>=', 40, 'OIDs to name as digests: ' . scalar @oids);

my %code;
for my $oid (@oids) {
    my $f = req('digest-oid' => $oid);
    my $r = send_msg($f);
    $code{$r->{code}}++;
}
diag('answers: ' . join(', ', map { "$_ x$code{$_}" } sort keys %code));

my @scep = grep { /^pki_failures_total\{protocol="scep"/ }
           split /\n/, scrape_body('/pki/metrics');
# 32 reasons and "other" at most (1 here: the name is cut)
cmp_ok(scalar @scep, '<=', 33, 'scep failure series: at most 33 ('
       . scalar(@scep) . ')') or diag(join "\n", @scep[0 .. 9]);
ok((grep { /reason="unsupported digest algorithm"\}/ } @scep),
   'the reason without the algorithm name') or diag(join "\n", @scep);
my $log = slurp($t->error_log) // '';
my @named = $log =~ /unsupported digest algorithm (\S+)/g;
my %named = map { $_ => 1 } @named;
cmp_ok(scalar keys %named, '>=', 20,
       'the error log names each algorithm (' . scalar(keys %named) . ')');

my (undef, $s) = $t->enroll_serial('after-scep');
ok($s, 'an EST issuance after the SCEP flood');
my $m = $t->metrics_scrape;
is($m->{pki_metrics_series_dropped_total}, 0, 'no series dropped');
$t->stop_nginx;

# --- 2. expiring counts leave revoked certificates out ----------------------

$t->redis('FLUSHALL');
$t->start_nginx(conf());

my (@serial, @file);
for my $i (1 .. 2) {
    my (undef, $sn, $f) = $t->enroll_serial("exp$i");
    push @serial, $sn;
    push @file, $f;
}
ok($serial[0] && $serial[1], 'two certificates issued');
my $rv = $t->admin_revoke($serial[0], quiet => 1);
is($rv->{code}, 200, 'one revoked') or diag($rv->{body});

# the oracle: the unrevoked one's notAfter as openssl reads it
my ($rc, $end) = run_cmd(['openssl', 'x509', '-in', $file[1], '-noout',
                          '-enddate']);
my ($na) = $end =~ /notAfter=(.+)/;
my $left = `date -d "$na" +%s` - time;
my $want7 = $left <= 7 * 86400 ? 1 : 0;
my $want30 = $left <= 30 * 86400 ? 1 : 0;
diag("valid for " . int($left / 86400) . " more days");

my $ca = 'pki_certificates{ca="issuing",state=';
for (1 .. 40) {
    $m = $t->metrics_scrape;
    last if ($m->{$ca . '"revoked"}'} // 0) == 1;
    sleep 0.5;
}
is($m->{$ca . '"revoked"}'}, 1, 'revoked 1');
is($m->{$ca . '"valid"}'}, 1, 'valid 1');
is($m->{$ca . '"expiring_7d"}'}, $want7, "expiring_7d $want7");
is($m->{$ca . '"expiring_30d"}'}, $want30, "expiring_30d $want30");
cmp_ok($m->{$ca . '"expiring_30d"}'}, '<=', $m->{$ca . '"valid"}'},
       'expiring_30d within valid');
$t->stop_nginx;

# --- 3. the gauges of a CA a reload removed ---------------------------------

my $c2 = conf();
my ($block) = $c2 =~ /(    pki_ca issuing \{.*?\n    \}\n)/s
    or die 'no pki_ca issuing block';
(my $old = $block) =~ s/pki_ca issuing/pki_ca old-ca/;
$old =~ s/\n\s*templates [^\n]*;//g;
$old =~ s/\n\s*(?:ocsp_url|crl_url|ca_issuers_url)[^\n]*//g;
(my $c1 = $c2) =~ s/(    pki_ca issuing \{)/$old\n$1/;

$t->start_nginx($c1);
my $gauge = qr/^pki_(?:ca_not_after_timestamp_seconds|certificates)\{ca="old-ca"/;
my @g;
for (1 .. 40) {
    @g = grep { /$gauge/ } split /\n/, scrape_body('/pki/metrics');
    last if grep { /^pki_certificates/ } @g;
    sleep 0.5;
}
ok((grep { /^pki_ca_not_after/ } @g), 'old-ca: notAfter gauge');
ok((grep { /^pki_certificates/ } @g), 'old-ca: certificate gauges');

$t->write_conf($c2);
$t->reload_nginx;
sleep 2.5;                  # the new workers' ticks
@g = grep { /$gauge/ } split /\n/, scrape_body('/pki/metrics');
is(scalar @g, 0, 'after the reload: no old-ca gauge in the scrape')
    or diag(join "\n", @g);
my $json = scrape_body('/pki/dashboard?format=json');
unlike($json, qr/ca=\\"old-ca\\"/, 'nor in the dashboard JSON');
like($json, qr/pki_ca_not_after_timestamp_seconds\{ca=\\"issuing\\"\}/,
     'the CA kept still has its gauge');
$t->stop_nginx;

# --- 4. tasks in flight with 9 workers --------------------------------------

my $shim = "$PKITest::BUILD/p11shim.so";
my $hang = "$dir/hang";
$ENV{PKI_P11SHIM_MODULE} = $PKITest::P11;
$ENV{PKI_P11SHIM_HANG_FILE} = $hang;

my $K = 18;
my $c4 = conf('--workers', 9, '--threads', 4);
my $mod = quotemeta $PKITest::P11;
$c4 =~ s{^(\s*)module\s+$mod;}{${1}module $shim;\n${1}call_timeout 60s;}m
    or die 'no module line';
$c4 =~ s{^env SOFTHSM2_CONF;}
        {env SOFTHSM2_CONF;\nenv PKI_P11SHIM_MODULE;\nenv PKI_P11SHIM_HANG_FILE;}m
    or die 'no env line';
$c4 =~ s/(listen 127\.0\.0\.1:\d+ ssl);/$1 reuseport;/g;

$t->start_nginx($c4);
my ($csr) = $t->make_csr('hang', subj => '/CN=hang');
spew("$dir/csr.b64", MIME::Base64::encode_base64($csr));
spew($hang, "x\n");

my @pids;
for (1 .. $K) {
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open(STDOUT, '>', '/dev/null');
        open(STDERR, '>&', \*STDOUT);
        exec('curl', '-s', '-o', '/dev/null', '--max-time', '50',
             '--cacert', $t->pki . '/root.pem', '-u', 'demo:demo',
             '-H', 'Content-Type: application/pkcs10', '--data-binary',
             "\@$dir/csr.b64", $t->est_url('simpleenroll'))
            or POSIX::_exit(127);
    }
    push @pids, $pid;
}

my $n = -1;
for (1 .. 40) {
    $n = $t->metrics_scrape->{pki_thread_tasks_in_flight} // -1;
    last if $n == $K;
    sleep 0.25;
}
is($n, $K, "9 workers: $K tasks in flight, stuck on the token");

unlink $hang;
waitpid($_, 0) for @pids;
for (1 .. 40) {
    $n = $t->metrics_scrape->{pki_thread_tasks_in_flight} // -1;
    last if $n == 0;
    sleep 0.25;
}
is($n, 0, '9 workers: 0 in flight once they are done');
$t->stop_nginx;

done_testing();
