#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Cached OCSP answers during a Redis stall (DEBUG SLEEP 9, pki_redis ...
# timeout=1s) under uncached load: one worker, a pki pool of 8 threads,
# 32 clients POSTing OCSP requests with a nonce (never cached: each task
# holds a thread for a Redis timeout) as fast as they are answered, and a
# cached GET probe every 0.15 s.  The refresh of the revocation view is a
# pool task; in the FIFO queue it waited behind the uncached tasks, and a
# failed refresh confirmed the view as of its claim, before that wait, so
# once the view passed revgen_check + revgen_stale the probes queued with
# the uncached tasks (5-6 s each).  Now the refresh is read by the next
# OCSP task to start in the pool, and confirms the view as of that start:
# every probe is a HIT within 0.5 s through the stall.  After the stall a
# revocation still reaches the cached answer within revgen_check +
# revgen_stale.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use MIME::Base64 qw(encode_base64);
use POSIX ();
use Time::HiRes qw(time sleep);
use PKITest;

my $STALL = 9;
my $CLIENTS = 32;

my $t = PKITest->new;
$t->start_redis_with('--enable-debug-command', 'local');
my $dir = $t->dir;
my $pki = $t->pki;
my $conf = $t->render_conf('--workers', 1, '--threads', 8,
                           '--redis-timeout', '1s');
ok($conf =~ s{^(\s*)(ocsp_responder_cache zone=\S+;)}
                {$1$2\n$1ocsp_responder_cache_header on;}m,
   'X-OCSP-Cache on');
$t->start_nginx($conf);

my $port = $t->http_port;

my $cert = $t->enroll_cn('stall-load');
$t->give_up('enrollment failed') if !$cert;
my $plain = $t->ocsp_reqfile($cert, 'req-plain');
my ($rc, $out) = $t->openssl_ocsp('-issuer', "$pki/issuing.pem",
                                  '-cert', $cert, '-reqout',
                                  "$dir/req-nonce.der");
die "openssl ocsp -reqout: $out" if $rc != 0;
my $nonce = slurp("$dir/req-nonce.der");
my $path = '/ocsp/' . encode_base64(slurp($plain), '');
my $get = "http://127.0.0.1:$port$path";

# one GET on a connection of its own, without a curl process (the
# machine is loaded): { code, dt, cache }
sub probe {
    my $t0 = time;
    my ($code, $cache) = (0, '');
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Timeout => 15);
    if ($s) {
        print $s "GET $path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        local $/;
        my $all = <$s> // '';
        close $s;
        $code = $1 if $all =~ m{^HTTP/1\.1 (\d+)};
        $cache = $1 if $all =~ /\r\nX-OCSP-Cache: (\w+)/i;
    }
    return { code => $code, dt => time - $t0, cache => $cache };
}

my $p = probe();
is($p->{cache}, 'MISS', 'the probe is signed first');
$p = probe();
is($p->{cache}, 'HIT', 'then cached');

# --- uncached load -----------------------------------------------------------

my $stop = "$dir/stop-load";

# one client: POSTs the nonce request on a kept-alive connection until
# the stop file exists
sub client {
    my $s;
    while (!-e $stop) {
        $s ||= IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $port, Timeout => 20)
            or do { sleep 0.1; next };
        print $s "POST /ocsp HTTP/1.1\r\nHost: x\r\n"
            . "Content-Type: application/ocsp-request\r\n"
            . 'Content-Length: ' . length($nonce) . "\r\n\r\n" . $nonce;
        my ($head, $buf) = ('', '');
        while ($head !~ /\r\n\r\n/) {
            my $n = sysread($s, $buf, 4096);
            last if !$n;
            $head .= $buf;
        }
        my ($len) = $head =~ /Content-Length:\s*(\d+)/i;
        my ($hdr, $body) = split /\r\n\r\n/, $head, 2;
        $body //= '';
        while (defined $len && length($body) < $len) {
            my $n = sysread($s, $buf, $len - length($body));
            last if !$n;
            $body .= $buf;
        }
        if (!defined $len || $head =~ /Connection: close/i) {
            close $s;
            undef $s;
        }
    }
}

my @kids;
for my $k (1 .. $CLIENTS) {
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $t->{owner} = -1;               # the parent stops the servers
        client();
        POSIX::_exit(0);
    }
    push @kids, $pid;
}

# --- the stall, 1.5 s into the probes ----------------------------------------

my ($sleeper, @slow, $n, $worst, $t0);
my $tp = time;
$worst = 0;
while (!$t0 || time - $t0 < $STALL - 0.5) {
    if (!$t0 && time - $tp >= 1.5) {
        $sleeper = fork() // die "fork: $!";
        if ($sleeper == 0) {
            open(STDOUT, '>', '/dev/null');
            exec('redis-cli', '-s', $t->redis_sock, 'DEBUG', 'SLEEP', $STALL)
                or POSIX::_exit(127);
        }
        $t0 = time;
        sleep 0.2;
    }
    $p = probe();
    $n++;
    $worst = $p->{dt} if $p->{dt} > $worst;
    my $line = sprintf('%.1fs: %s %s %.2fs', time - $tp, $p->{code},
                       $p->{cache}, $p->{dt});
    note($line);
    # before the stall, the first probe may carry the refresh (MISS)
    push @slow, $line
        if !($p->{code} == 200
             && (($p->{cache} eq 'HIT' && $p->{dt} < 0.5)
                 || (!$t0 && $n == 1)));
    sleep 0.15;
}
waitpid($sleeper, 0);
ok(!@slow, "$n cached probes, through the ${STALL} s stall: HITs within "
   . sprintf('0.5 s (slowest %.2f s)', $worst))
    or diag(join("\n", @slow[0 .. ($#slow < 15 ? $#slow : 15)]));

spew($stop, "stop\n");
waitpid($_, 0) for @kids;

# --- after the stall: the staleness bound --------------------------------------

my $serial = $t->x509_field($cert, 'serial');
my $rv = $t->admin_revoke($serial, quiet => 1);
is($rv->{code}, 200, 'revoked through the admin API') or diag($rv->{body});
my ($seen, $tr) = (0, time);
while (time - $tr < 6) {
    my $r = $t->curl('GET', $get, quiet => 1, max_time => 5);
    my $f = "$dir/resp.der";
    spew($f, $r->{body} // '');
    my ($orc, $txt) = $t->openssl_ocsp('-respin', $f, '-resp_text',
                                       '-noverify');
    if ($txt =~ /Cert Status: revoked/) {
        $seen = time - $tr;
        last;
    }
    sleep 0.2;
}
ok($seen && $seen < 4.5, sprintf('the revocation reaches the cached answer '
                                 . 'in %.2f s', $seen));

$t->stop_nginx;

done_testing();
