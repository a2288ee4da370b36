#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A Matter batch whose client is gone when the answer is ready: the DACs
# stay issued (recorded before the answer, each in the transaction log),
# and the error log says the answer holding them was not delivered, so
# the operator knows a retry will issue others beside them.  The client
# sends a server-keygen batch over TLS and resets the connection (linger
# 0) before the answer comes; another takes the header of a large answer,
# stops reading, then resets.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::SSL;
use IO::Socket::UNIX;
use MIME::Base64 qw(encode_base64);
use IO::Socket::INET;
use Socket qw(AF_INET SOCK_STREAM SOL_SOCKET SO_LINGER SO_RCVBUF
              pack_sockaddr_in inet_aton);
use PKITest;

my $t = PKITest->new;
my $pki = $t->pki;
$t->make_matter_pki($pki);
$t->start_redis_with('--enable-debug-command', 'local');
# a small send buffer: the large answer below cannot all go into the
# kernel at once (on loopback it would: the whole answer then counts as
# sent, and what becomes of it is the kernel's)
my $conf = $t->render_conf;
$conf =~ s/(listen 127\.0\.0\.1:\d+ ssl)/$1 sndbuf=32k/
    or die 'no TLS listen line';
$t->start_nginx($conf);

my $n0 = scalar $t->redis_keys('pki:{ca:*}:cert:*');
my $body = '{"count": 40}';
# Redis sleeps 0.6 s (within pki_redis's 1 s timeout) and the reset comes
# 0.3 s after the request: nginx has read it by then (reset at once, a
# loaded nginx had not, and the kernel dropped it with the connection),
# and the batch cannot have answered yet
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
# gone with a reset: the answer's write fails
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
like($log, qr/\[error\].*matter: the answer to \S+ could not be sent/,
     'the error log says the issued batch was not delivered');
like($log, qr/could not be sent: the certificates it holds stay issued/,
     '  and that its certificates stay issued');
is(scalar $t->redis_keys('pki:{ca:*}:cert:*') - $n0, 40,
   'the 40 DACs stay recorded');

# An answer too big to go out at once (400 DACs with their keys) to a
# client that takes the header, then stops reading, then resets: nginx
# sends the rest later, from its writer, and the write that fails there
# is said too.
my $log0 = length(PKITest::slurp($t->error_log) // '');
my $raw = IO::Socket::INET->new;
$raw->socket(AF_INET, SOCK_STREAM, 0) or die "socket: $!";
setsockopt($raw, SOL_SOCKET, SO_RCVBUF, pack('i', 2048));
$raw->connect(pack_sockaddr_in($t->https_port, inet_aton('127.0.0.1')))
    or die "connect: $!";
my $c = IO::Socket::SSL->start_SSL($raw, SSL_ca_file => "$pki/root.pem",
                                   SSL_verifycn_name => '127.0.0.1',
                                   Timeout => 20);
ok($c, 'TLS connection with a small receive buffer')
    or diag(IO::Socket::SSL::errstr());
$body = '{"count": 400}';
$n0 = scalar $t->redis_keys('pki:{ca:*}:cert:*');
print $c "POST /matter/dac/batch HTTP/1.1\r\n"
       . 'Host: 127.0.0.1:' . $t->https_port . "\r\n"
       . 'Authorization: Basic ' . encode_base64('demo:demo', '') . "\r\n"
       . "Content-Type: application/json\r\n"
       . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
my $head = '';
while ($head !~ /\r\n\r\n/) {
    my $n = sysread($c, my $buf, 200);
    last unless $n;
    $head .= $buf;
}
like($head, qr{^HTTP/1\.1 200 }, 'the header of the answer came');
$t0 = time;
sleep 0.2 while time - $t0 < 60
    && scalar $t->redis_keys('pki:{ca:*}:cert:*') - $n0 < 400;
is(scalar $t->redis_keys('pki:{ca:*}:cert:*') - $n0, 400,
   'the 400 DACs recorded before the answer');
sleep 1;
$log = substr(PKITest::slurp($t->error_log) // '', $log0);
unlike($log, qr/could not be sent/, 'not said while the answer is going');
setsockopt($raw, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0));
$c->close(SSL_no_shutdown => 1);
$t0 = time;
while (time - $t0 < 30) {
    $log = substr(PKITest::slurp($t->error_log) // '', $log0);
    last if $log =~ /could not be sent/;
    sleep 0.2;
}
like($log, qr/\[error\].*matter: the answer to \S+ could not be sent: the /,
     'the reset of the answer half-sent is said in the error log');

$t->stop_nginx;
done_testing();
