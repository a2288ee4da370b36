#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A Matter DAC batch whose nginx worker dies (SIGKILL) right after the
# batch's commit ran in Redis: nginx talks to Redis through
# t/lib/redis_drop_proxy.py, which stalls Redis once the commit script has
# reached it (the worker waits for its answer, pki_redis timeout=30s), and
# the workers are killed then.  The DACs are recorded good and delivered
# to no one.  Once the claims the batch made are gone (they expire after
# 300 s; deleted here) the station retries the same CSRs: it gets the DACs
# committed, byte for byte in their records, and no second DAC is made
# for a key; the answers verify against the PAA.  Before, the index named
# the serials only in a step after the commit: the keys' DACs were good
# and unindexed, and the retry issued 4 more.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use MIME::Base64 qw(encode_base64 decode_base64);
use JSON::PP;
use PKITest;

plan(skip_all => 'ngx_http_matter_module.so not built')
    if !-f "$PKITest::BUILD/ngx_http_matter_module.so";
plan(skip_all => 'python3 not installed') if !-x '/usr/bin/python3';

my $t = PKITest->new;
my $pki = $t->pki;
$t->make_matter_pki($pki);
$t->start_redis;

my $dir = $t->dir;
my $arm = "$dir/arm";
my $proxy = $t->start_redis_proxy($arm);

my $conf = $t->render_conf('--redis-timeout', '30s');
my $sock = $t->redis_sock;
$conf =~ s{\Q$sock\E}{$proxy}g or die 'no Redis socket in the config';
my $master = $t->start_nginx($conf);
my ($nw) = $conf =~ /^\s*worker_processes\s+(\d+)\s*;/m;

my $json = JSON::PP->new->canonical;
my $url = 'https://127.0.0.1:' . $t->https_port . '/matter/dac/batch';
my $ca = 'pki:{ca:matter-pai}';

sub batch {
    my ($csrs, $max) = @_;
    my $r = $t->curl('POST', $url, data => $json->encode({ csrs => $csrs }),
                     user => 'demo:demo', max_time => $max // 60,
                     headers => [ 'Content-Type: application/json' ]);
    $r->{json} = eval { $json->decode($r->{body}) } if $r->{body} =~ /^\{/;
    return $r;
}

sub good_serials {
    my @s = map { /:cert:([0-9A-F]+)$/ ? $1 : () }
            $t->redis_keys("$ca:cert:*");
    return grep { $t->redis_raw('HGET', "$ca:cert:$_", 'status')
                  =~ /^good/ } @s;
}

sub serial_of {
    my ($b64) = @_;
    my ($rc, $out) = run_cmd(['openssl', 'x509', '-inform', 'DER', '-noout',
                              '-serial'], stdin => decode_base64($b64));
    return $out =~ /serial=(\S+)/ ? $1 : '';
}

my (@csrs, @keys);
for my $i (1 .. 4) {
    my ($csr, $key) = $t->make_csr("k$i", subj => "/CN=line-9 unit $i");
    push @csrs, encode_base64($csr, '');
    push @keys, $key;
}

# the batch commit's script (pki_lua_commit_batch), nothing else
PKITest::spew($arm, "STALL\nlocal late = false\n");

my $pid = fork // die "fork: $!";
if ($pid == 0) {
    my $r = batch(\@csrs, 90);
    PKITest::spew("$dir/first", "$r->{code}\n");
    exit 0;
}

my $t0 = time;
sleep 0.05 while -e $arm && time - $t0 < 60;
ok(!-e $arm, 'the batch commit reached Redis (the proxy stalls it)');

# the worker that sent it waits for the answer: every worker killed
my @w = $t->workers_of($master, 'worker');
is(kill('KILL', @w), scalar @w, 'the workers killed (SIGKILL): ' . "@w");
PKITest::spew("$arm.release", '');
waitpid($pid, 0);
isnt(PKITest::slurp("$dir/first") // '', "200\n",
     'the station got no answer');

# the master respawns them
$t0 = time;
my @nw;
while (time - $t0 < 30) {
    @nw = $t->workers_of($master, 'worker');
    last if @nw == $nw && !grep { my $o = $_; grep { $_ == $o } @w } @nw;
    sleep 0.1;
}
is(scalar @nw, $nw, 'the master respawned the workers');

my @good = good_serials();
is(scalar @good, 4, 'the commit ran: 4 DACs recorded good');

# the claims a batch makes expire after 300 s: those standing deleted
my ($claims, $named) = (0, 0);
my %gs = map { $_ => 1 } @good;
for my $k ($t->redis_keys("$ca:matterdac:*")) {
    my $v = $t->redis_raw('GET', $k);
    if ($v =~ /^c:/) {
        $t->redis_raw('DEL', $k);
        $claims++;
    }
    $named++ if $v =~ /^s:([0-9A-F]+)$/ && $gs{$1};
}
note("$claims claim(s) deleted");
is($named, 4, 'each key\'s index entry names its DAC, with no step after '
   . 'the commit');

# the station's retry
my $r;
$t0 = time;
while (time - $t0 < 20) {
    $r = batch(\@csrs);
    last if $r->{code} == 200;
    sleep 0.5;
}
is($r->{code}, 200, 'the retry: 200') or diag($r->{body});
my @c = @{ $r->{json}{certificates} || [] };
my %g = map { $_ => 1 } @good;
is(scalar(grep { $g{ serial_of($_) } } @c), 4,
   '  each answered DAC is one the killed batch committed');
is(scalar good_serials(), 4, '  no second DAC for a key (4 records good)');
my $ok = 0;
for my $i (0 .. $#c) {
    my $f = "$dir/dac$i.pem";
    PKITest::spew("$dir/dac$i.der", decode_base64($c[$i]));
    run_cmd(['openssl', 'x509', '-inform', 'DER', '-in', "$dir/dac$i.der",
             '-out', $f]);
    my ($rc1, $p1) = run_cmd(['openssl', 'x509', '-in', $f, '-noout',
                              '-pubkey']);
    my ($rc2, $p2) = run_cmd(['openssl', 'pkey', '-in', $keys[$i],
                              '-pubout']);
    my ($rc3, $v) = run_cmd(['openssl', 'verify', '-x509_strict',
                             '-CAfile', "$pki/matter/paa.pem", '-untrusted',
                             "$pki/matter/pai.pem", $f]);
    $ok++ if $rc1 == 0 && $p1 eq $p2 && $rc3 == 0 && $v =~ /: OK/;
}
is($ok, 4, '  each for its own key, in order, verifying against the PAA');
my $h = $t->redis_hash("$ca:cert:" . serial_of($c[0] // ''));
ok(defined $h->{der} && @c && $h->{der} eq decode_base64($c[0]),
   '  byte for byte the record\'s DER');

$t->stop_all;
done_testing();
