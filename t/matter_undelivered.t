#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A Matter batch whose client is gone when the answer is ready: the DACs
# stay issued (recorded before the answer, each in the transaction log),
# and the error log says the answer holding them was not delivered, so
# the operator knows a retry will issue others beside them.  The client
# sends a server-keygen batch over TLS and resets the connection (linger
# 0) before the answer comes.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::SSL;
use MIME::Base64 qw(encode_base64);
use Socket qw(SOL_SOCKET SO_LINGER);
use PKITest;

my $t = PKITest->new;
my $pki = $t->pki;
$t->make_matter_pki($pki);
$t->start_redis;
$t->start_nginx($t->render_conf);

my $n0 = scalar $t->redis_keys('pki:{ca:*}:cert:*');
my $body = '{"count": 40}';
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
# gone at once, with a reset: the answer's write fails
setsockopt($s, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0));
$s->close(SSL_no_shutdown => 1);

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

$t->stop_nginx;
done_testing();
