#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# One DAC per device key across Matter batches, through nginx: a factory
# station whose answer was lost (its connection reset before the answer)
# sends the same CSRs again and gets the DACs already issued, byte for
# byte, with no second record; a batch mixing old and new keys gets the
# old DACs and new ones; two stations sending one batch at once never get
# two DACs for a key (one may be told 503 with Retry-After); the answers
# pass openssl verify against the PAA.  Before, each retry issued a
# second good DAC for every key.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::SSL;
use IO::Socket::UNIX;
use MIME::Base64 qw(encode_base64 decode_base64);
use JSON::PP;
use Socket qw(SOL_SOCKET SO_LINGER);
use PKITest;

plan(skip_all => 'ngx_http_matter_module.so not built')
    if !-f "$PKITest::BUILD/ngx_http_matter_module.so";

my $t = PKITest->new;
my $pki = $t->pki;
$t->make_matter_pki($pki);
$t->start_redis_with('--enable-debug-command', 'local');
$t->start_nginx;

my $json = JSON::PP->new->canonical;
my $dir = $t->dir;
my $url = 'https://127.0.0.1:' . $t->https_port . '/matter/dac/batch';

sub batch {
    my ($csrs) = @_;
    my $r = $t->curl('POST', $url, data => $json->encode({ csrs => $csrs }),
                     user => 'demo:demo', max_time => 60,
                     headers => [ 'Content-Type: application/json' ]);
    $r->{json} = eval { $json->decode($r->{body}) } if $r->{body} =~ /^\{/;
    return $r;
}

sub records { scalar $t->redis_keys('pki:{ca:matter-pai}:cert:*') }

sub serial_of {
    my ($b64) = @_;
    my ($rc, $out) = run_cmd(['openssl', 'x509', '-inform', 'DER', '-noout',
                              '-serial'], stdin => decode_base64($b64));
    return $out =~ /serial=(\S+)/ ? $1 : '';
}

my (@csrs, @keys);
for my $i (1 .. 12) {
    my ($csr, $key) = $t->make_csr("r$i", subj => "/CN=line-7 unit $i");
    push @csrs, encode_base64($csr, '');
    push @keys, $key;
}

# 1. an answer lost: the station resets its connection before the answer.
# Redis sleeps meanwhile (0.6 s, within pki_redis's 1 s timeout), so that
# the reset comes after nginx has read the request (0.3 s) and before the
# batch can answer: reset at once, a loaded machine's nginx had not read
# it yet and the kernel dropped it with the connection.
my $n0 = records();
my $body = $json->encode({ csrs => [ @csrs[0 .. 5] ] });
my $sleeper = IO::Socket::UNIX->new(Peer => $t->redis_sock)
    or die "Redis connection: $!";
syswrite($sleeper, "DEBUG SLEEP 0.6\r\n");
my $s = IO::Socket::SSL->new(PeerHost => '127.0.0.1',
                             PeerPort => $t->https_port,
                             SSL_ca_file => "$pki/root.pem",
                             SSL_verifycn_name => '127.0.0.1',
                             Timeout => 20);
ok($s, 'TLS connection') or diag(IO::Socket::SSL::errstr());
print $s "POST /matter/dac/batch HTTP/1.1\r\n"
       . 'Host: 127.0.0.1:' . $t->https_port . "\r\n"
       . 'Authorization: Basic ' . encode_base64('demo:demo', '') . "\r\n"
       . "Content-Type: application/json\r\n"
       . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
sleep 0.3;
setsockopt($s, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0));
$s->close(SSL_no_shutdown => 1);
my $slept = <$sleeper> // '';
close($sleeper);
is($slept, "+OK\r\n", 'Redis slept through the batch (DEBUG SLEEP)');

my ($t0, $log) = (time, '');
while (time - $t0 < 60) {
    $log = PKITest::slurp($t->error_log) // '';
    last if $log =~ /could not be sent/;
    sleep 0.2;
}
like($log, qr/could not be sent: .* a retry of its CSRs gets them again/,
     'the lost answer is in the error log, with the retry contract');
is(records() - $n0, 6, 'the 6 DACs of the lost answer are recorded');

# 2. the retry: the same DACs, nothing more recorded
my $r = batch([ @csrs[0 .. 5] ]);
is($r->{code}, 200, 'the retry: 200') or diag($r->{body});
my @first = @{ $r->{json}{certificates} || [] };
is(scalar @first, 6, '  6 certificates');
is(records() - $n0, 6, '  no record made by the retry');
my %rec = map { s/.*:cert://r => 1 } $t->redis_keys('pki:{ca:matter-pai}:cert:*');
is(scalar(grep { $rec{ serial_of($_) } } @first), 6,
   '  each answered DAC is one of the recorded ones');
my $good = 0;
for my $i (0 .. $#first) {
    my $f = "$dir/retry$i.pem";
    PKITest::spew("$dir/retry$i.der", decode_base64($first[$i]));
    run_cmd(['openssl', 'x509', '-inform', 'DER', '-in', "$dir/retry$i.der",
             '-out', $f]);
    my ($rc1, $p1) = run_cmd(['openssl', 'x509', '-in', $f, '-noout',
                              '-pubkey']);
    my ($rc2, $p2) = run_cmd(['openssl', 'pkey', '-in', $keys[$i],
                              '-pubout']);
    my ($rc3, $v) = run_cmd(['openssl', 'verify', '-x509_strict',
                             '-CAfile', "$pki/matter/paa.pem", '-untrusted',
                             "$pki/matter/pai.pem", $f]);
    $good++ if $rc1 == 0 && $p1 eq $p2 && $rc3 == 0 && $v =~ /: OK/;
}
is($good, 6, '  each for its own key, in order, verifying against the PAA');

# 3. the same batch again, and one mixing old and new keys
$r = batch([ @csrs[0 .. 5] ]);
is_deeply($r->{json}{certificates}, \@first,
          'the batch again: the same 6 DACs, byte for byte');
$r = batch([ $csrs[6], $csrs[2], $csrs[7] ]);
my $c = $r->{json}{certificates} || [];
ok($r->{code} == 200 && @$c == 3 && $c->[1] eq $first[2]
   && $c->[0] ne $first[2], 'old and new keys: the old DAC and two new')
    or diag($r->{body});
is(records() - $n0, 8, '  two records more');

# 4. two stations, one batch, at once
my @pids;
for my $k (1, 2) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my $x = batch([ @csrs[8 .. 11] ]);
        PKITest::spew("$dir/conc$k", "$x->{code}\n"
                      . ($x->{headers}{'retry-after'} // '') . "\n"
                      . $x->{body});
        exit 0;
    }
    push @pids, $pid;
}
waitpid($_, 0) for @pids;
my @res = map {
    my ($code, $ra, $b) = split /\n/, PKITest::slurp("$dir/conc$_") // '', 3;
    { code => $code, ra => $ra, body => $b }
} 1, 2;
my @ok = grep { $_->{code} == 200 } @res;
# (a 503 is the other batch's claim, or, on a loaded machine, a shed
# request; either way with Retry-After: the records below say that one
# key was signed once)
ok(@ok >= 1 && !grep({ $_->{code} != 200
                       && !($_->{code} == 503 && $_->{ra}) } @res),
   "two at once: $res[0]{code} and $res[1]{code} (a 503 with Retry-After)")
    or diag(join "\n", map { $_->{body} } @res);
is(records() - $n0, 12, '  4 records more, not 8');
$r = batch([ @csrs[8 .. 11] ]);
ok($r->{code} == 200
   && !grep({ (eval { $json->decode($_->{body})->{certificates}[0] } // '')
              ne ($r->{json}{certificates}[0] // '-') } @ok),
   '  its retry: 200, the DACs the 200 gave');
is(records() - $n0, 12, '  still 12 records');

$t->stop_nginx;
done_testing();
