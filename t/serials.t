#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# 10,000 issuances through nginx over keep-alive TLS connections (several
# client processes): no duplicate serial.  Distinct serials in Redis ==
# number of 200 responses == 10,000.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::SSL;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(time);
use PKITest;

my $TOTAL = $ENV{PKI_SERIALS_TOTAL} || 10000;
my $CLIENTS = 4;

my $t = PKITest->new;
$t->start_redis;
$t->start_nginx;

my ($csr) = $t->make_csr('dev', subj => '/CN=serials',
                         san => 'DNS:serials.example.com');
my $body = encode_base64($csr);
my $auth = encode_base64('demo:demo', '');
my $port = $t->https_port;
my $req = "POST /.well-known/est/simpleenroll HTTP/1.1\r\n"
        . "Host: localhost\r\nAuthorization: Basic $auth\r\n"
        . "Content-Type: application/pkcs10\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n$body";

sub connect_tls {
    my $s = IO::Socket::SSL->new(
        PeerHost => '127.0.0.1', PeerPort => $port, Timeout => 20,
        SSL_verify_mode => SSL_VERIFY_PEER,
        SSL_ca_file => $t->pki . '/root.pem', SSL_hostname => "localhost");
    die "connect: $SSL_ERROR" if !$s;
    return $s;
}

# one HTTP/1.1 request/response on a keep-alive connection
sub roundtrip {
    my ($s) = @_;
    (print {$s} $req) or return (0, 1);
    my $head = '';
    while ($head !~ /\r\n\r\n/) {
        my $n = sysread($s, my $buf, 16384);
        return (0, 1) if !$n;
        $head .= $buf;
    }
    my ($h, $rest) = split /\r\n\r\n/, $head, 2;
    my ($code) = $h =~ m{^HTTP/1\.1 (\d{3})};
    my ($len) = $h =~ /^Content-Length:\s*(\d+)/mi;
    my $close = $h =~ /^Connection:\s*close/mi;
    return ($code, 1) if !defined $len;
    while (length($rest) < $len) {
        my $n = sysread($s, my $buf, $len - length($rest));
        return ($code, 1) if !$n;
        $rest .= $buf;
    }
    return ($code, $close);
}

my $t0 = time;
my @kids;
for my $c (0 .. $CLIENTS - 1) {
    my $n = int($TOTAL / $CLIENTS) + ($c < $TOTAL % $CLIENTS ? 1 : 0);
    my $out = $t->dir . "/client-$c.out";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        my %codes;
        my $s = connect_tls();
        my $conns = 1;
        for (1 .. $n) {
            my ($code, $close) = roundtrip($s);
            $codes{$code || 0}++;
            if ($close) {
                close $s;
                $s = connect_tls();
                $conns++;
            }
        }
        close $s;
        open(my $fh, '>', $out) or POSIX::_exit(1);
        print $fh join(' ', map { "$_=$codes{$_}" } sort keys %codes),
                  " conns=$conns\n";
        close $fh;
        POSIX::_exit(0);
    }
    push @kids, [$pid, $out];
}

my %codes;
my $conns = 0;
for my $k (@kids) {
    waitpid($k->[0], 0);
    is($? >> 8, 0, "client $k->[0] finished");
    my $line = slurp($k->[1]) // '';
    $conns += $1 if $line =~ /conns=(\d+)/;
    $codes{$1} += $2 while $line =~ /\b(\d{1,3})=(\d+)/g;
}
my $dt = time - $t0;
diag(sprintf("%d requests in %.1f s (%.0f/s) on %d connections; codes: %s",
             $TOTAL, $dt, $TOTAL / ($dt || 1), $conns,
             join(' ', map { "$_=$codes{$_}" } sort keys %codes)));

my $ok200 = $codes{200} // 0;
is($ok200, $TOTAL, "$TOTAL responses were 200");
cmp_ok($conns, '<=', $CLIENTS * 2, 'connections were kept alive');

my @keys = $t->redis_keys('pki:{ca:issuing}:cert:*');
my %serials = map { (/:cert:([0-9A-Fa-f]+)$/ ? ($1 => 1) : ()) } @keys;
is(scalar(keys %serials), scalar(@keys), 'every cert key names a serial');
is(scalar(keys %serials), $ok200, 'distinct serials in Redis == 200 responses');
is(scalar(keys %serials), $TOTAL, "distinct serials == $TOTAL");

my @bad = grep { length($_) > 40 || length($_) < 16 || length($_) % 2 || /[a-f]/ } keys %serials;
is(scalar @bad, 0, 'serials: canonical uppercase hex, 8..20 octets')
    or diag("e.g. @bad[0 .. ($#bad < 4 ? $#bad : 4)]");

my @res = $t->redis_keys('pki:{ca:issuing}:serial:*');
is(scalar @res, $TOTAL, 'one serial reservation per certificate');

$t->stop_nginx;
done_testing();
