#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# TLS 1.3 early data (0-RTT) with ssl_early_data on: a request sent with
# the ClientHello can be replayed, so an enrollment (EST simpleenroll,
# Matter NOC, a SCEP PKIOperation over HTTPS) that arrives in early data
# is answered 425 Too Early (RFC 8470) and issues nothing, however often
# it is sent; a GET (cacerts) is served.
#
# The client is openssl s_client, as a reviewer used it: a session from a
# first connection (-sess_out), then the same request as early data on
# that session (-sess_in -early_data), three times.  s_client completes
# the handshake, and on loopback its Finished can reach nginx with the
# early data, before the request is acted on; the request is then safe
# (no replay completes a handshake) and served.  So these connections go
# through a relay that holds the server's answers back 0.5 s, the round
# trip of a real network: nginx acts on the early data before the client
# can finish.  Then the first flight the relay saw (ClientHello and early
# data) is replayed as it is, by a client that cannot finish at all.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use IO::Socket::IP;
use MIME::Base64 qw(encode_base64);
use POSIX ();
use Time::HiRes qw(time);
use PKITest;

my $MATTER = -f "$PKITest::BUILD/ngx_http_matter_module.so";
my $DELAY = 0.5;

my $t = PKITest->new;
$t->make_matter_pki($t->pki) if $MATTER;
$t->start_redis;

my $conf = $t->render_conf;
my $pkidir = $t->pki;
$conf =~ s{^(\s*ssl_verify_depth .*\n)}{$1        ssl_early_data on;
        location /scep-tls {
            scep issuing scep;
            scep_ra $pkidir/ra.pem $pkidir/ra.key;
            scep_challenge file=$pkidir/scep-challenge;
        }\n}m
    or BAIL_OUT('cannot add ssl_early_data to the config');
$t->start_nginx($conf);

my $port = $t->https_port;
my $dir = $t->dir;
my $sess = "$dir/sess.pem";
my $n = 0;

# The relay (a child process): each connection to it goes on to nginx;
# what nginx sends back is held $DELAY seconds.  What the client sent
# before the first answer reached it (its first flight) is saved in
# DIR/flight-K.bin, K counting the relay's connections from 1.
my $relay = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0,
                                Listen => 8, ReuseAddr => 1)
    or die "relay: $!";
my $rport = $relay->sockport;
my $rpid = fork() // die "fork: $!";
if ($rpid == 0) {
    $SIG{PIPE} = 'IGNORE';
    $SIG{$_} = 'DEFAULT' for qw(TERM INT HUP);
    my $k = 0;
    while (my $c = $relay->accept) {
        my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1',
                                    PeerPort => $port) or last;
        my ($flight, $answered, $s_eof, @held) = ('', 0, 0);
        my $sel = IO::Select->new($c, $s);
        while (1) {
            my $now = time;
            while (@held && $held[0][0] <= $now) {
                $answered = 1;
                my $d = (shift @held)->[1];
                syswrite($c, $d) // last;
            }
            last if $s_eof && !@held;
            my $wait = @held ? $held[0][0] - $now : 5;
            for my $h ($sel->can_read($wait > 0 ? $wait : 0)) {
                my $got = sysread($h, my $buf, 65536);
                if ($h == $c) {
                    if (!$got) {
                        shutdown($s, 1);
                        $sel->remove($c);
                        next;
                    }
                    $flight .= $buf if !$answered;
                    syswrite($s, $buf);
                } elsif (!$got) {
                    $s_eof = 1;
                    $sel->remove($s);
                } else {
                    push @held, [time + $DELAY, $buf];
                }
            }
            last if !$sel->count && !@held;
        }
        spew("$dir/flight-" . ++$k . '.bin', $flight);
        close $s;
        close $c;
    }
    POSIX::_exit(0);
}
close $relay;
$t->{children}{relay} = $rpid;
my $nrelay = 0;

# s_client with TLS 1.3, through the relay ('relay => 1') or straight to
# nginx; returns its output (the handshake report and the answer)
sub s_client {
    my ($stdin, %o) = @_;
    my $to = $o{relay} ? $rport : $port;
    $nrelay++ if $o{relay};
    my ($rc, $out, $err) = run_cmd(['openssl', 's_client', '-connect',
        "127.0.0.1:$to", '-servername', 'localhost', '-tls1_3',
        '-CAfile', $t->pki . '/root.pem', '-ign_eof',
        @{ $o{args} || [] }], stdin => $stdin, timeout => 30);
    return "$out\n$err";
}

sub http_req {
    my ($method, $path, %o) = @_;
    my $body = $o{body} // '';
    my $h = "$method $path HTTP/1.1\r\nHost: localhost\r\n"
            . "Connection: close\r\n";
    $h .= 'Authorization: Basic '
          . encode_base64($o{user} // 'demo:demo', '') . "\r\n";
    $h .= "Content-Type: $o{ctype}\r\n" if $o{ctype};
    $h .= 'Content-Length: ' . length($body) . "\r\n" if length $body;
    return "$h\r\n$body";
}

# the request sent as early data on the saved session, through the
# relay: (was the early data accepted, HTTP status, whole output)
sub early {
    my ($req) = @_;
    my $f = "$dir/early-" . ++$n . '.txt';
    spew($f, $req);
    my $out = s_client('', relay => 1,
                       args => ['-sess_in', $sess, '-early_data', $f]);
    my ($code) = $out =~ m{^HTTP/1\.1 (\d{3})}m;
    return ($out =~ /Early data was accepted/ ? 1 : 0, $code // 0, $out);
}

# the first flight of the relay's last connection, sent again to nginx by
# a client that has no keys: it reads until nginx closes (or 10 s)
sub replay {
    my $f = "$dir/flight-$nrelay.bin";
    for (1 .. 50) {
        last if -e $f;
        Time::HiRes::sleep(0.1);
    }
    my $flight = slurp($f) // '';
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port)
        or return 0;
    syswrite($s, $flight);
    my $deadline = time + 10;
    while (time < $deadline) {
        IO::Select->new($s)->can_read($deadline - time) or last;
        sysread($s, my $buf, 65536) or last;
    }
    close $s;
    return length $flight;
}

sub cert_count {
    my ($ca) = @_;
    return scalar(my @k = $t->redis_keys("pki:{ca:$ca}:cert:*"));
}

sub log_count {
    my ($re) = @_;
    return scalar(my @l = grep { /$re/ } split /\n/,
                                             slurp($t->error_log) // '');
}

# a session that allows early data
my $out = s_client(http_req('GET', '/.well-known/est/cacerts'),
                   args => ['-sess_out', $sess]);
like($out, qr{^HTTP/1\.1 200}m, 'a first connection (cacerts: 200)');
my ($rc, $stext) = run_cmd(['openssl', 'sess_id', '-in', $sess, '-noout',
                            '-text']);
like($stext, qr/Max Early Data: [1-9]/, 'its session allows early data')
    or diag($stext);

# a GET in early data is served (it changes nothing)
my ($acc, $code, $all) = early(http_req('GET', '/.well-known/est/cacerts'));
ok($acc, 'cacerts in early data: accepted by TLS') or diag($all);
is($code, 200, 'cacerts in early data: 200');

# an enrollment in early data, three times, and its first flight
# replayed three times
my ($csr) = $t->make_csr('early', subj => '/CN=early');
my $post = http_req('POST', '/.well-known/est/simpleenroll',
                    ctype => 'application/pkcs10',
                    body => encode_base64($csr));
my $c0 = cert_count('issuing');
my $refused = qr/\[info\].*est: simpleenroll from \S+ refused: /
              . qr/sent in TLS 1\.3 early data/;
for my $i (1 .. 3) {
    ($acc, $code, $all) = early($post);
    ok($acc, "simpleenroll in early data ($i): accepted by TLS")
        or diag($all);
    is($code, 425, '  425 Too Early') or diag($all);
    like($all, qr{^HTTP/1\.1 425 Too Early\r?$}m, '  with its reason phrase')
        if $i == 1;
}
ok(replay() > 0, 'its first flight was seen');
replay() for 1 .. 2;
is(cert_count('issuing'), $c0, 'no certificate recorded');
is(log_count($refused), 6, 'the six refusals are logged (info)');

# the same request after the handshake is served
my $r = $t->est_post('simpleenroll', $csr);
is($r->{code}, 200, 'the same simpleenroll, no early data: 200')
    or diag($r->{body});
is(cert_count('issuing'), $c0 + 1, '  and recorded');

SKIP: {
    skip 'ngx_http_matter_module.so not built', 7 if !$MATTER;

    my ($nocsr) = $t->make_csr('nocsr', subj => '/O=CSR/OU=CSA');
    my $json = '{"csr":"' . encode_base64($nocsr, '') . '",'
               . '"node_id":"DEDEDEDE00010001",'
               . '"fabric_id":"FAB000000000001D"}';
    my $noc = http_req('POST', '/matter/noc', ctype => 'application/json',
                       body => $json);
    my $m0 = cert_count('matter-icac');
    ($acc, $code, $all) = early($noc);
    ok($acc, 'Matter NOC in early data: accepted by TLS') or diag($all);
    is($code, 425, '  425 Too Early') or diag($all);
    like($all, qr/"error":"too early/, '  a JSON error');
    replay() for 1 .. 2;
    is(cert_count('matter-icac'), $m0, '  no NOC recorded, nor by replays');
    is(log_count(qr/\[info\].*matter: request from \S+ refused: /
                 . qr/sent in TLS 1\.3 early data/), 3,
       '  the refusals are logged');

    $r = $t->curl('POST', "https://127.0.0.1:$port/matter/noc",
                  data => $json, user => 'demo:demo',
                  headers => ['Content-Type: application/json']);
    is($r->{code}, 200, 'the same NOC request, no early data: 200')
        or diag($r->{body});
    is(cert_count('matter-icac'), $m0 + 1, '  and recorded');
}

# a SCEP PKIOperation (PKCSReq) over HTTPS in early data: 425, nothing
# issued, nor by replays (it was taken and issued); after the handshake:
# issued
{
    my $tool = "$dir/scepmsg";
    my ($crc, undef, $cerr) = run_cmd(['cc', '-O1', '-o', $tool,
        "$PKITest::TOP/t/lib/scepmsg.c", '-lcrypto', '-lpthread']);
    is($crc, 0, 'scepmsg built') or diag($cerr);
    my ($krc) = run_cmd(['openssl', 'genpkey', '-algorithm', 'RSA',
                         '-pkeyopt', 'rsa_keygen_bits:2048', '-out',
                         "$dir/scep.key"]);
    my ($mrc, undef, $merr) = run_cmd([$tool, 'req', '--rcpt',
        "$pkidir/ra.pem", '--key', "$dir/scep.key", '--out',
        "$dir/pkcsreq.der", '--cn', 'early-scep', '--challenge', 'demo']);
    is($krc + $mrc, 0, 'a PKCSReq') or diag($merr);
    my $msg = slurp("$dir/pkcsreq.der") // '';
    my $req = http_req('POST', '/scep-tls?operation=PKIOperation',
                       ctype => 'application/x-pki-message', body => $msg);
    my $s0 = cert_count('issuing');
    ($acc, $code, $all) = early($req);
    ok($acc, 'SCEP PKIOperation in early data: accepted by TLS')
        or diag($all);
    is($code, 425, '  425 Too Early') or diag($all);
    replay() for 1 .. 2;
    is(cert_count('issuing'), $s0, '  nothing issued, nor by replays');
    is(log_count(qr/\[info\].*scep: PKIOperation from \S+ refused: /
                 . qr/sent in TLS 1\.3 early data/), 3,
       '  the refusals are logged');
    $r = $t->curl('POST', "https://127.0.0.1:$port/scep-tls"
                  . '?operation=PKIOperation', data_file => "$dir/pkcsreq.der",
                  headers => ['Content-Type: application/x-pki-message']);
    is($r->{code}, 200, 'the same PKIOperation after the handshake: 200')
        or diag($r->{body});
    is(cert_count('issuing'), $s0 + 1, '  and issued');
}

# an admin revocation in early data: 425, the record stays good (nor do
# replays of its first flight revoke it); after the handshake: 200
{
    my ($key) = $t->redis_keys('pki:{ca:issuing}:cert:*');
    my ($serial) = ($key // '') =~ /:cert:([0-9A-F]+)$/;
    ok($serial, "a certificate to revoke ($serial)");
    my $rev = http_req('POST', '/pki/admin/revoke', user => 'admin:admin',
                       ctype => 'application/json',
                       body => qq({"serial":"$serial","reason":"superseded"}));
    ($acc, $code, $all) = early($rev);
    ok($acc, 'admin revoke in early data: accepted by TLS') or diag($all);
    is($code, 425, '  425 Too Early') or diag($all);
    like($all, qr/"error":"sent in TLS early data/, '  a JSON error');
    replay() for 1 .. 2;
    is($t->redis_hash($key)->{status}, 'good', '  the record stays good');
    is(log_count(qr/\[info\].*pki admin: POST in TLS early data refused/),
       3, '  the refusals are logged');
    $r = $t->admin_revoke($serial);
    is($r->{code}, 200, 'the same revocation after the handshake: 200')
        or diag($r->{body});
    is($t->redis_hash($key)->{status}, 'revoked', '  revoked');
}

$t->stop_nginx;
done_testing;
