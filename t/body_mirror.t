#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Where a protocol module answers, nginx's client_max_body_size check is
# turned off (the module refuses a body over its cap in its own form); a
# module that reads the body before it (mirror here, whose
# mirror_request_body is on by default) is still held to that limit, as
# nginx would hold it:
#  - an OCSP location with "client_max_body_size 1m; mirror ...", as the
#    review had it, and one with nginx's default (1m): a 50 MB POST with
#    Content-Length gets nginx's 413 before its body is read (it went to
#    a temp file whole, then the 64k cap refused it), a 3 MB chunked one
#    413 once past 1m; a request is still answered, and a body between
#    the cap and the limit gets the protocol's own refusal;
#  - without mirror nothing changes: a body over 1m gets malformedRequest.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use PKITest;

my $t = PKITest->new;
my $pki = $t->pki;
my $dir = $t->dir;
$t->start_redis;

my $conf = $t->render_conf('--workers', 1);
$conf =~ s{(\n(\s*)location /ocsp \{\n)}{
$2location = /mirror {
$2    internal;
$2    return 204;
$2}

$2location /ocsp-limit {
$2    ocsp_responder issuing;
$2    client_max_body_size 1m;
$2    mirror /mirror;
$2}

$2location /ocsp-default {
$2    ocsp_responder issuing;
$2    mirror /mirror;
$2}
$1} or die 'no OCSP location';
$t->start_nginx($conf);

my $HTTP = 'http://127.0.0.1:' . $t->http_port;
my $MB = 1024 * 1024;

# a POST of $o{total} body bytes on a connection of its own, sent as fast
# as the server takes them, with Content-Length or chunked; stops when
# the answer is in.  Returns { status, body, sent: body bytes sent when
# the first byte of the answer came (undef: none came) }.
sub big_post {
    my ($path, %o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $t->http_port, Timeout => 10)
        or return { status => 0, err => "connect: $!" };
    local $SIG{PIPE} = 'IGNORE';
    my $total = $o{total};
    my $head = "POST $path HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        . "Content-Type: application/ocsp-request\r\n"
        . ($o{chunked} ? "Transfer-Encoding: chunked\r\n"
                       : "Content-Length: $total\r\n") . "\r\n";
    my $out = $head;
    my ($sent, $piece, $in, $at) = (0, 'A' x 65536, '', undef);
    $s->blocking(0);
    my $deadline = time + 60;
    while (time < $deadline) {
        my $rs = IO::Select->new($s);
        my $ws = (length $out || $sent < $total) ? IO::Select->new($s)
                                                  : undef;
        my ($r, $w) = IO::Select->select($rs, $ws, undef, 1);
        if ($r && @$r) {
            my $n = sysread($s, my $b, 65536);
            last if !$n;
            $at //= $sent;
            $in .= $b;
            if ($in =~ /^(.*?)\r\n\r\n/s) {
                my ($cl) = $1 =~ /\r\nContent-Length: *(\d+)/i;
                last if defined $cl
                        && length($in) - length($1) - 4 >= $cl;
            }
            next;
        }
        next if !($w && @$w);
        if (!length $out && $sent < $total) {
            my $n = $total - $sent < 65536 ? $total - $sent : 65536;
            my $data = substr($piece, 0, $n);
            $out = $o{chunked} ? sprintf("%x\r\n%s\r\n", $n, $data) : $data;
            $sent += $n;
            $out .= "0\r\n\r\n" if $o{chunked} && $sent >= $total;
        }
        my $n = syswrite($s, $out);
        last if !defined $n && !$!{EAGAIN};
        substr($out, 0, $n, '') if $n;
    }
    close $s;
    my ($status) = $in =~ m{^HTTP/1\.1 (\d{3})};
    (my $body = $in) =~ s/^.*?\r\n\r\n//s;
    return { status => $status // 0, body => $body, sent => $at };
}

sub log_since { substr(slurp($t->error_log) // '', $_[0]) }
sub log_pos { length(slurp($t->error_log) // '') }

# a real request first: mirror reads its body, the responder answers
my ($r, $serial, $cert) = $t->enroll_serial('mirrored');
is($r->{code}, 200, 'enrolled') or diag($r->{body});
my ($rc, $out, $err) = run_cmd(['openssl', 'ocsp', '-issuer',
    "$pki/issuing.pem", '-cert', $cert, '-no_nonce', '-reqout',
    "$dir/req.der"]);
is($rc, 0, 'an OCSP request') or diag($err);

for my $loc ('/ocsp-limit', '/ocsp-default') {
    $r = $t->curl('POST', "$HTTP$loc", data_file => "$dir/req.der",
                  headers => ['Content-Type: application/ocsp-request'],
                  quiet => 1);
    is($r->{code}, 200, "$loc: a request read by mirror first: 200");
    spew("$dir/resp.der", $r->{body});
    ($rc, $out) = run_cmd(['openssl', 'ocsp', '-respin', "$dir/resp.der",
        '-resp_text', '-noverify']);
    like($out, qr/Cert Status: good/, '  good');

    # between the responder's cap (64k) and the limit: its own refusal
    $r = $t->curl('POST', "$HTTP$loc", data => 'x' x 200000,
                  headers => ['Content-Type: application/ocsp-request'],
                  quiet => 1);
    is($r->{code}, 200, "$loc: 200k: an OCSP answer");
    is(unpack('H*', $r->{body}), '30030a0101', '  malformedRequest');

    # over the limit by Content-Length: nginx's 413, the body not read
    my $pos = log_pos();
    my $a = big_post($loc, total => 50 * $MB);
    is($a->{status}, 413, "$loc: 50 MB announced: 413");
    ok(defined $a->{sent} && $a->{sent} < 8 * $MB,
       sprintf('  before the body was sent (%.1f MB of it were)',
               ($a->{sent} // -1) / $MB));
    # (the request's line, not its mirror subrequest's: nginx's own
    # check refuses that one in the mirror location, to no effect)
    my $req = qr/"POST \Q$loc\E HTTP\/1\.1", host:/;
    like(log_since($pos), qr/too large body: 52428800 bytes, [^\n]*$req/,
         '  the error log says so');

    # chunked: 413 once the bytes pass 1m
    $pos = log_pos();
    $a = big_post($loc, total => 3 * $MB, chunked => 1);
    is($a->{status}, 413, "$loc: 3 MB chunked: 413");
    like(log_since($pos),
         qr/client intended to send too large body: more than 1048576 bytes/,
         '  the error log says so');
}

# without mirror nothing changes: the protocol's own refusal over 1m too
my $a = big_post('/ocsp', total => 2 * $MB);
is($a->{status}, 200, '/ocsp (no mirror): 2 MB announced: an OCSP answer');
is(unpack('H*', $a->{body} // ''), '30030a0101', '  malformedRequest');

$r = $t->curl('POST', "$HTTP/ocsp-limit", data_file => "$dir/req.der",
              headers => ['Content-Type: application/ocsp-request'],
              quiet => 1);
is($r->{code}, 200, 'a request after all that: 200');
unlike(slurp($t->error_log) // '', qr/\[alert\]|exited on signal/,
       'no alert, no crashed worker');

$t->stop_all;
done_testing();
