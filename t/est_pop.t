#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# EST proof-of-possession linking (RFC 7030 section 3.5, est_pop_linking on):
# the CSR's challengePassword must be the base64 of the TLS channel binding
# of the connection that carries the request: tls-unique (RFC 5929, the
# first Finished message) with TLS 1.2, tls-exporter (RFC 9266) with
# TLS 1.3.  The client here computes the binding itself on one TLS
# connection, makes the CSR with the openssl CLI and sends simpleenroll
# on that same connection.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::SSL;
use IO::Select;
use Net::SSLeay;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(time);
use PKITest;

my $t = PKITest->new;
$t->start_redis;

# the shared config with est_pop_linking on, plus a second EST location
# (/nopop/.well-known/est/) without it
my $conf = $t->render_conf('--pop-linking', 'on');
my $nopop = <<"LOC";
        location /nopop/.well-known/est/ {
            est issuing device;
            est_pop_linking off;
            auth_basic "EST";
            auth_basic_user_file ${\ $t->pki}/htpasswd;
        }

LOC
$conf =~ s{^(\s*location / \{)}{$nopop$1}m
    or BAIL_OUT('cannot add the /nopop/ location to the config');
# nginx 1.22 enables TLS 1.3 only when asked; a session cache so that a
# TLS 1.2 session can be resumed
$conf =~ s{^(\s*ssl_verify_depth .*\n)}
          {$1        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_session_cache shared:pop:1m;\n}m
    or BAIL_OUT('cannot add ssl_protocols to the config');
like($conf, qr/est_pop_linking on;/, 'config has est_pop_linking on');
$t->start_nginx($conf);

my $port = $t->https_port;
my $dir = $t->dir;
my $n = 0;

sub tls_connect {
    my ($version, %o) = @_;
    my $s = IO::Socket::SSL->new(
        PeerHost => '127.0.0.1',
        PeerPort => $port,
        Timeout => 10,
        SSL_version => $version,
        SSL_ca_file => $t->pki . '/root.pem',
        SSL_verify_mode => SSL_VERIFY_PEER,
        SSL_verifycn_name => 'localhost',
        SSL_verifycn_scheme => 'http',
        SSL_hostname => 'localhost',
        %o,
    ) or die "TLS connect ($version) failed: $SSL_ERROR";
    return $s;
}

# the channel binding as the client sees it
sub binding {
    my ($s) = @_;
    my $ssl = $s->_get_ssl_object;
    if ($s->get_sslversion eq 'TLSv1_3') {
        # RFC 9266: 32 bytes, label EXPORTER-Channel-Binding, no context
        my $b = Net::SSLeay::export_keying_material($ssl, 32,
                                                    'EXPORTER-Channel-Binding');
        die 'export_keying_material failed' if !defined $b || length $b != 32;
        return $b;
    }
    # RFC 5929 tls-unique: the first Finished of the handshake, the
    # client's own in a full handshake, the server's in a resumed one
    my $buf = '';
    my $len = $s->get_session_reused
        ? Net::SSLeay::get_peer_finished($ssl, $buf)
        : Net::SSLeay::get_finished($ssl, $buf);
    die 'no Finished message' if !$len;
    return substr($buf, 0, $len);
}

# a P-256 CSR; $cp: challengePassword (undef: none). Returns the DER.
# (the subject is in the config: with -subj, openssl 3.0 req drops the
# config's attributes)
# $mask: the string_mask (MASK:0x800: the challengePassword, and the CN,
# as BMPStrings)
sub csr_with_cp {
    my ($name, $cp, $mask) = @_;
    $n++;
    my $cnf = "$dir/pop-$n.cnf";
    my $c = "[req]\nprompt = no\ndistinguished_name = dn\n";
    $c .= "string_mask = $mask\n" if $mask;
    $c .= "attributes = attrs\n" if defined $cp;
    $c .= "[dn]\nCN = $name\n";
    $c .= "[attrs]\nchallengePassword = $cp\n" if defined $cp;
    spew($cnf, $c);
    my $csr = "$dir/pop-$n.csr.der";
    my ($rc, $out, $err) = run_cmd(['openssl', 'req', '-new', '-config', $cnf,
        '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', "$dir/pop-$n.key", '-outform', 'DER',
        '-out', $csr]);
    die "openssl req failed: $err" if $rc != 0;
    if (defined $cp) {
        my ($rc2, $txt) = run_cmd(['openssl', 'req', '-inform', 'DER', '-in',
                                   $csr, '-noout', '-text']);
        die "the CSR has no challengePassword" if $txt !~ /challengePassword/;
    }
    return slurp($csr);
}

sub read_timeout {
    my ($s, $deadline) = @_;
    my $buf = '';
    while (1) {
        # data already decrypted inside the TLS layer first
        my $got = $s->sysread($buf, 65536);
        return $buf if defined $got && $got > 0;
        return '' if defined $got && $got == 0;
        die "read: $!" if !$!{EWOULDBLOCK} && !$!{EAGAIN}
                          && $SSL_ERROR != SSL_WANT_READ
                          && $SSL_ERROR != SSL_WANT_WRITE;
        my $left = $deadline - time;
        die "timeout reading the response" if $left <= 0;
        IO::Select->new($s)->can_read($left);
    }
}

# one HTTP/1.1 request on an open TLS connection; returns
# { code, headers, body }
sub http_post {
    my ($s, $path, $body, %o) = @_;
    my $auth = encode_base64('demo:demo', '');
    my $req = "POST $path HTTP/1.1\r\nHost: localhost\r\n"
            . "Authorization: Basic $auth\r\n"
            . "Content-Type: application/pkcs10\r\n"
            . "Content-Length: " . length($body) . "\r\n\r\n" . $body;
    $s->blocking(1);
    my $off = 0;
    while ($off < length $req) {
        my $w = $s->syswrite($req, length($req) - $off, $off);
        die "write: $SSL_ERROR" if !defined $w || $w <= 0;
        $off += $w;
    }
    $s->blocking(0);
    my $deadline = time + ($o{timeout} || 20);
    my $data = '';
    my ($code, %h, $hlen);
    while (1) {
        if (!defined $hlen && $data =~ /\r\n\r\n/) {
            $hlen = $+[0];
            my $head = substr($data, 0, $hlen);
            ($code) = $head =~ m{^HTTP/1\.[01] (\d{3})} or die "bad status line";
            for my $l (split /\r\n/, $head) {
                $h{lc $1} = $2 if $l =~ /^([^:\s]+):\s*(.*?)\s*$/;
            }
        }
        if (defined $hlen) {
            my $rest = substr($data, $hlen);
            if (defined $h{'content-length'}) {
                if (length $rest >= $h{'content-length'}) {
                    return { code => $code + 0, headers => \%h,
                             body => substr($rest, 0, $h{'content-length'}) };
                }
            } elsif (($h{'transfer-encoding'} // '') =~ /chunked/i) {
                if ($rest =~ /(?:^|\r\n)0\r\n\r\n\z/) {
                    my $b = '';
                    while ($rest =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
                        my $len = hex $1;
                        last if $len == 0;
                        $b .= substr($rest, 0, $len, '');
                        $rest =~ s/^\r\n//;
                    }
                    return { code => $code + 0, headers => \%h, body => $b };
                }
            }
        }
        my $chunk = read_timeout($s, $deadline);
        if ($chunk eq '') {
            die 'connection closed before the response ended' if !defined $hlen;
            return { code => $code + 0, headers => \%h,
                     body => substr($data, $hlen) };
        }
        $data .= $chunk;
    }
}

sub enroll {
    my ($s, $der, $path) = @_;
    return http_post($s, $path // '/.well-known/est/simpleenroll',
                     encode_base64($der));
}

sub cert_ok {
    my ($name, $r) = @_;
    is($r->{code}, 200, "$name: 200") or diag($r->{body}), return;
    my $pem = $t->p7_to_pem($r->{body});
    ok($pem, "$name: a certs-only PKCS#7") or return;
    my $f = $t->save_first_cert($pem, "cert-$name" =~ s/\W/_/gr);
    my ($ok, $out) = $t->verify_chain($f);
    ok($ok, "$name: openssl verify accepts the certificate") or diag($out);
}

# --- TLS 1.2 (tls-unique) ----------------------------------------------------

my $a = tls_connect('TLSv1_2');
is($a->get_sslversion, 'TLSv1_2', 'connection A is TLS 1.2');
ok(!$a->get_session_reused, 'A: full handshake');
my $ba = binding($a);
is(length $ba, 12, 'tls-unique of A is 12 bytes');
# SSL_get_extms_support (SSL_CTRL_GET_EXTMS_SUPPORT 122)
is(Net::SSLeay::ctrl($a->_get_ssl_object, 122, 0, 0), 1,
   'A has the Extended Master Secret');

# correct binding
my $r = enroll($a, csr_with_cp('pop-tls12', encode_base64($ba, '')));
cert_ok('TLS 1.2, correct binding', $r);

# the binding of another connection, sent on B
my $b = tls_connect('TLSv1_2');
my $bb = binding($b);
isnt($bb, $ba, 'B has another tls-unique');
$r = enroll($b, csr_with_cp('pop-wrong', encode_base64($ba, '')));
is($r->{code}, 400, 'TLS 1.2, binding of another connection: 400')
    or diag($r->{body});
like($r->{body}, qr/challengePassword|binding/i, 'the error says why');

# the same connection still works with its own binding (keep-alive)
$r = enroll($b, csr_with_cp('pop-b', encode_base64($bb, '')));
cert_ok('TLS 1.2, B after a refusal, own binding', $r);

# no challengePassword at all
$r = enroll($a, csr_with_cp('pop-none', undef));
is($r->{code}, 400, 'TLS 1.2, no challengePassword: 400') or diag($r->{body});

# the binding as raw bytes or hex instead of base64
$r = enroll($a, csr_with_cp('pop-hex', unpack('H*', $ba)));
is($r->{code}, 400, 'TLS 1.2, hex instead of base64: 400');

# the server's Finished (second one of a full handshake) is not tls-unique
my ($sfin, $l) = ('');
$l = Net::SSLeay::get_peer_finished($a->_get_ssl_object, $sfin);
$r = enroll($a, csr_with_cp('pop-sfin', encode_base64(substr($sfin, 0, $l), '')));
is($r->{code}, 400, 'TLS 1.2, the server Finished instead of the client one: 400');
close $a;
close $b;

# --- TLS 1.2 without the Extended Master Secret -------------------------------

# tls-unique binds only with EMS (RFC 7627, the triple handshake): a
# client that turns it off (SSL_OP_NO_EXTENDED_MASTER_SECRET) is refused
# linking, even with the right binding; the connections above had it
{
    my $ne = tls_connect('TLSv1_2', SSL_create_ctx_callback => sub {
        Net::SSLeay::CTX_set_options($_[0], 1);     # NO_EXTENDED_MASTER_SECRET
    });
    is(Net::SSLeay::ctrl($ne->_get_ssl_object, 122, 0, 0), 0,
       'TLS 1.2 connection without the Extended Master Secret');
    $r = enroll($ne, csr_with_cp('pop-noems', encode_base64(binding($ne), '')));
    is($r->{code}, 400, 'TLS 1.2 without EMS, its own tls-unique: 400')
        or diag($r->{body});
    like($r->{body}, qr/Extended Master Secret/, 'the error says why');
    $r = enroll($ne, csr_with_cp('nopop-noems', undef),
                '/nopop/.well-known/est/simpleenroll');
    is($r->{code}, 200, 'without EMS where linking is off: 200');
    close $ne;
}

# --- TLS 1.2 resumed session: tls-unique is the server's Finished ------------

{
    my %cache = (SSL_session_cache => IO::Socket::SSL::Session_Cache->new(4),
                 SSL_session_key => 'pop');
    my $c1 = tls_connect('TLSv1_2', %cache);
    $r = enroll($c1, csr_with_cp('pop-c1', encode_base64(binding($c1), '')));
    is($r->{code}, 200, 'TLS 1.2, first connection of a session: 200');
    close $c1;
    my $c2 = tls_connect('TLSv1_2', %cache);
    # the config has a session cache and the client offers the session:
    # a full handshake here is a failure, not a reason to skip (after a
    # full handshake the client-Finished check below fails too)
    ok($c2->get_session_reused, 'second connection resumed the session');
    $r = enroll($c2, csr_with_cp('pop-c2', encode_base64(binding($c2), '')));
    is($r->{code}, 200, 'TLS 1.2 resumed, server Finished as binding: 200')
        or diag($r->{body});
    # in a full handshake the client's Finished is tls-unique (200), in a
    # resumed one it is not
    my ($cfin, $cl) = ('');
    $cl = Net::SSLeay::get_finished($c2->_get_ssl_object, $cfin);
    $r = enroll($c2, csr_with_cp('pop-c2-cfin',
                                 encode_base64(substr($cfin, 0, $cl), '')));
    is($r->{code}, 400, 'TLS 1.2 resumed, the client Finished: 400');
    close $c2;
}

# --- TLS 1.3 (tls-exporter) -------------------------------------------------

my $c = tls_connect('TLSv1_3');
is($c->get_sslversion, 'TLSv1_3', 'connection C is TLS 1.3');
my $bc = binding($c);
$r = enroll($c, csr_with_cp('pop-tls13', encode_base64($bc, '')));
cert_ok('TLS 1.3, correct binding', $r);

my $d = tls_connect('TLSv1_3');
my $bd = binding($d);
isnt($bd, $bc, 'D has another tls-exporter value');
$r = enroll($d, csr_with_cp('pop-13-wrong', encode_base64($bc, '')));
is($r->{code}, 400, 'TLS 1.3, binding of another connection: 400')
    or diag($r->{body});

# an exporter value with a wrong label
my $wrong = Net::SSLeay::export_keying_material($d->_get_ssl_object, 32,
                                                'EXPORTER-Wrong-Label');
$r = enroll($d, csr_with_cp('pop-13-label', encode_base64($wrong, '')));
is($r->{code}, 400, 'TLS 1.3, exporter with another label: 400');

$r = enroll($d, csr_with_cp('pop-13-none', undef));
is($r->{code}, 400, 'TLS 1.3, no challengePassword: 400');
close $c;
close $d;

# --- the challengePassword as a BMPString (RFC 2985 DirectoryString) ---------

{
    my $g = tls_connect('TLSv1_3');
    my $bg = encode_base64(binding($g), '');
    my $cder = csr_with_cp('pop-bmp', $bg, 'MASK:0x800');
    spew("$dir/pop-bmp.der", $cder);
    my ($rc, $p) = run_cmd(['openssl', 'asn1parse', '-inform', 'DER', '-in',
                            "$dir/pop-bmp.der"]);
    like($p, qr/:challengePassword\s*\n.*SET\s*\n.*BMPSTRING/,
         'BMPString: openssl req made one');
    $r = enroll($g, $cder);
    cert_ok('TLS 1.3, the binding as a BMPString', $r);
    $r = enroll($g, csr_with_cp('pop-bmp-wrong', encode_base64($bc, ''),
                                 'MASK:0x800'));
    is($r->{code}, 400, 'TLS 1.3, another binding as a BMPString: 400')
        or diag($r->{body});
    like($r->{body}, qr/does not match the TLS channel binding/,
         '... a binding that does not match, not a malformed attribute');
    close $g;
}

# --- a location without est_pop_linking -------------------------------------

my $e = tls_connect('TLSv1_2');
$r = enroll($e, csr_with_cp('nopop-12', undef), '/nopop/.well-known/est/simpleenroll');
cert_ok('no est_pop_linking, TLS 1.2, no challengePassword', $r);
close $e;
my $f = tls_connect('TLSv1_3');
$r = enroll($f, csr_with_cp('nopop-13', undef), '/nopop/.well-known/est/simpleenroll');
cert_ok('no est_pop_linking, TLS 1.3, no challengePassword', $r);
close $f;

# without est_pop_linking a CSR that carries a challengePassword is still
# verified under TLS 1.2 (RFC 7030 3.5): another connection's tls-unique
# gets 400 and changes nothing, the connection's own is issued; TLS 1.2
# without EMS has no binding that binds and TLS 1.3 no tls-unique (libest
# puts its client Finished there): not judged, as before
{
    my $o = tls_connect('TLSv1_2');
    my $other = tls_connect('TLSv1_2');
    my @k0 = $t->state_keys;
    $r = enroll($o, csr_with_cp('nopop-other',
                                encode_base64(binding($other), '')),
                '/nopop/.well-known/est/simpleenroll');
    is($r->{code}, 400, "no est_pop_linking, TLS 1.2, another connection's "
       . 'tls-unique: 400') or diag($r->{body});
    like($r->{body}, qr/does not match the TLS channel binding/,
         '  the error says why');
    is(join(' ', $t->state_keys), join(' ', @k0), '  nothing written');
    $r = enroll($o, csr_with_cp('nopop-own', encode_base64(binding($o), '')),
                '/nopop/.well-known/est/simpleenroll');
    cert_ok('no est_pop_linking, TLS 1.2, its own tls-unique', $r);
    close $o;
    close $other;

    my $h = tls_connect('TLSv1_3');
    my ($fin, $len) = ('');
    $len = Net::SSLeay::get_finished($h->_get_ssl_object, $fin);
    $r = enroll($h, csr_with_cp('nopop-13-fin',
                                encode_base64(substr($fin, 0, $len), '')),
                '/nopop/.well-known/est/simpleenroll');
    cert_ok('no est_pop_linking, TLS 1.3, the client Finished (libest)', $r);
    close $h;
}
{
    my $ne = tls_connect('TLSv1_2', SSL_create_ctx_callback => sub {
        Net::SSLeay::CTX_set_options($_[0], 1);     # NO_EXTENDED_MASTER_SECRET
    });
    $r = enroll($ne, csr_with_cp('nopop-noems-cp', 'not-a-binding'),
                '/nopop/.well-known/est/simpleenroll');
    is($r->{code}, 200, 'no est_pop_linking, without EMS, any '
       . 'challengePassword: 200 (nothing binds)') or diag($r->{body});
    close $ne;
}

# the shared helper (curl, new connection per request) on the pop location
my ($csr) = $t->make_csr('curl-nopw', subj => '/CN=curl-nopw');
$r = $t->est_post('simpleenroll', $csr);
is($r->{code}, 400, 'curl without challengePassword on the pop location: 400');

$t->stop_nginx;
done_testing;
