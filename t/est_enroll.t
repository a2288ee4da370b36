#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# EST (RFC 7030) happy paths through nginx: cacerts, simpleenroll (P-256,
# RSA-2048), csrattrs, serverkeygen, simplereenroll over mTLS and a label.
# The oracle is the openssl CLI; the Redis record is read with redis-cli.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 qw(decode_base64);
use PKITest;

my $t = PKITest->new;
$t->start_redis;
$t->start_nginx;
my $pki = $t->pki;

sub checkend {
    my ($file, $secs) = @_;
    my ($rc) = run_cmd(['openssl', 'x509', '-in', $file, '-noout',
                        '-checkend', $secs]);
    return $rc == 0;    # 0: still valid after $secs
}

sub enroll_ok {
    my ($name, $r) = @_;
    is($r->{code}, 200, "$name: 200") or diag("$r->{head}\n$r->{body}");
    like($r->{headers}{'content-type'} // '',
         qr{^application/pkcs7-mime}i, "$name: pkcs7-mime");
    my $pem = $t->p7_to_pem($r->{body});
    ok($pem, "$name: body is a base64 certs-only PKCS#7") or return undef;
    return $t->save_first_cert($pem, $name);
}

sub record_ok {
    my ($name, $cert) = @_;
    my $serial = $t->x509_field($cert, 'serial');
    like($serial, qr/^[0-9A-F]+$/, "$name: serial $serial");
    my $h = $t->redis_hash("pki:{ca:issuing}:cert:$serial");
    is($h->{status}, 'good', "$name: Redis record status good");
    my $der = $t->x509_der($cert);
    my $stored = $h->{der} // '';
    ok($stored eq $der || $stored eq unpack('H*', $der)
       || uc($stored) eq uc(unpack('H*', $der))
       || (decode_base64($stored) // '') eq $der,
       "$name: Redis record holds the certificate DER")
        or diag("fields: " . join(',', sort keys %$h));
    return $serial;
}

# --- cacerts ---------------------------------------------------------------

my $r = $t->curl('GET', $t->est_url('cacerts'));
is($r->{code}, 200, 'cacerts: 200');
like($r->{headers}{'content-type'} // '', qr{^application/pkcs7-mime}i,
     'cacerts: pkcs7-mime');
my $ca_pem = $t->p7_to_pem($r->{body}) // '';
like($ca_pem, qr/subject=.*nginx-pki Issuing CA/, 'cacerts: has the issuing CA');

# HEAD: the GET answer's status and header, no body (RFC 9110 9.3.2)
for my $op ('cacerts', 'csrattrs') {
    my $g = $t->curl('GET', $t->est_url($op), user => 'demo:demo');
    my $h = $t->curl('HEAD', $t->est_url($op), user => 'demo:demo',
                     extra => ['--head']);
    is($h->{code}, $g->{code}, "$op HEAD: $g->{code} as GET")
        or diag("$h->{head}\n$h->{body}");
    is($h->{headers}{'content-type'}, $g->{headers}{'content-type'},
       "$op HEAD: the Content-Type of GET");
    is($h->{headers}{'content-length'} // 0, length($g->{body}),
       "$op HEAD: the Content-Length of GET");
}

# and no body on the wire: a HEAD then a GET on one connection, the GET's
# status line right after the HEAD's header
{
    require IO::Socket::SSL;
    my $s = IO::Socket::SSL->new(PeerHost => '127.0.0.1',
        PeerPort => $t->https_port, SSL_ca_file => "$pki/root.pem",
        SSL_verifycn_name => '127.0.0.1', Timeout => 20);
    ok($s, 'raw TLS connection') or diag(IO::Socket::SSL::errstr());
    if ($s) {
        my $auth = 'Authorization: Basic '
                   . MIME::Base64::encode_base64('demo:demo', '');
        my $host = 'Host: 127.0.0.1:' . $t->https_port;
        print $s "HEAD /.well-known/est/csrattrs HTTP/1.1\r\n$host\r\n"
                 . "$auth\r\n\r\n"
                 . "GET /.well-known/est/cacerts HTTP/1.1\r\n$host\r\n"
                 . "Connection: close\r\n\r\n";
        local $/;
        my $all = <$s> // '';
        close $s;
        my @lines = split /\r\n/, $all;
        # 200 with a Content-Length: a body the server must not send
        like($lines[0] // '', qr{^HTTP/1\.1 200 }, 'HEAD csrattrs first');
        my ($i) = grep { $lines[$_] eq '' } 0 .. $#lines;
        like($lines[$i + 1] // '', qr{^HTTP/1\.1 200 },
             '  the GET answer right after its header: no body sent')
            or diag($all);
    }
}

# --- simpleenroll P-256 ------------------------------------------------------

my ($csr, $eckey) = $t->make_csr('ec1', subj => '/CN=device-ec',
    san => 'DNS:device-ec.example.com,IP:10.0.0.7');
$r = $t->est_post('simpleenroll', $csr);
my $ec = enroll_ok('simpleenroll P-256', $r);
my ($ec_serial, $ectext);
SKIP: {
    skip 'no certificate', 11 if !$ec;
    my ($ok, $out) = $t->verify_chain($ec);
    ok($ok, 'P-256 cert verifies to the root') or diag($out);
    $ectext = $t->x509_text($ec);
    like($ectext, qr/Subject:.*CN\s*=\s*device-ec/, 'P-256 subject CN copied');
    like($ectext, qr/DNS:device-ec\.example\.com/, 'DNS SAN copied');
    like($ectext, qr/IP Address:10\.0\.0\.7/, 'IP SAN copied');
    like($ectext, qr/TLS Web Client Authentication/, 'EKU clientAuth');
    unlike($ectext, qr/CA:TRUE/, 'not a CA');
    like($ectext, qr/ASN1 OID: prime256v1/, 'P-256 public key');
    ok(checkend($ec, 29 * 86400) && !checkend($ec, 31 * 86400),
       'validity 30 days');
    # RFC 5280 4.1.2.5: valid through notAfter, so 30 days from notBefore
    # end a second before notBefore + 30 days (it was 30 days and 1 s)
    my ($nb, $na) = $t->x509_dates($ec);
    is(defined $na ? $na - $nb : undef, 30 * 86400 - 1,
       'template of 30 days: notAfter - notBefore = 30 days - 1 s');
    is($t->pubkey_of_cert($ec), $t->pubkey_of_key($eckey),
       'certificate carries the CSR key');
    $ec_serial = record_ok('P-256', $ec);
}

# --- simpleenroll RSA-2048 -----------------------------------------------

my ($rcsr, $rsakey) = $t->make_csr('rsa1', type => 'rsa', bits => 2048,
    subj => '/CN=device-rsa', san => 'DNS:device-rsa.example.com');
$r = $t->est_post('simpleenroll', $rcsr);
my $rsa = enroll_ok('simpleenroll RSA-2048', $r);
SKIP: {
    skip 'no certificate', 5 if !$rsa;
    my ($ok, $out) = $t->verify_chain($rsa);
    ok($ok, 'RSA cert verifies to the root') or diag($out);
    my $txt = $t->x509_text($rsa);
    like($txt, qr/Public-Key: \(2048 bit\)/, 'RSA-2048 key');
    like($txt, qr/CN\s*=\s*device-rsa/, 'RSA subject');
    like($txt, qr/DNS:device-rsa\.example\.com/, 'RSA SAN');
    my $s = record_ok('RSA', $rsa);
    isnt($s, $ec_serial, 'distinct serials');
}

# --- csrattrs --------------------------------------------------------------

# the device template allows EC P-256 and P-384 and RSA keys: attributes to
# list, so 200 (204 is only for a template that asks for nothing)
$r = $t->curl('GET', $t->est_url('csrattrs'), user => 'demo:demo');
is($r->{code}, 200, 'csrattrs: 200') or diag($r->{body});
{
    my $der = decode_base64($r->{body});
    my ($rc, $out, $err) = run_cmd(['openssl', 'asn1parse', '-inform', 'DER'],
                                   stdin => $der);
    is($rc, 0, 'csrattrs: DER parses') or diag($err);
    like($out, qr/id-ecPublicKey.*prime256v1.*secp384r1.*rsaEncryption/s,
         'csrattrs: the template\'s key types') or diag($out);
}

# --- serverkeygen -------------------------------------------------------------

my ($kcsr) = $t->make_csr('skg', subj => '/CN=device-skg',
                          san => 'DNS:skg.example.com');
$r = $t->est_post('serverkeygen', $kcsr);
is($r->{code}, 200, 'serverkeygen: 200') or diag("$r->{head}\n$r->{body}");
my ($boundary) = ($r->{headers}{'content-type'} // '')
    =~ m{^multipart/mixed\s*;.*boundary="?([^";]+)"?}i;
ok($boundary, 'serverkeygen: multipart/mixed with a boundary');
SKIP: {
    skip 'no multipart', 5 if !$boundary;
    my %parts;
    for my $p (split /\r?\n?--\Q$boundary\E(?:--)?\r?\n?/, $r->{body}) {
        my ($hd, $bd) = split /\r?\n\r?\n/, $p, 2;
        next if !defined $bd;
        my ($ct) = $hd =~ /Content-Type:\s*([^;\r\n]+)/i;
        $parts{lc $ct} = $bd if $ct;
    }
    ok($parts{'application/pkcs8'}, 'serverkeygen: application/pkcs8 part');
    ok($parts{'application/pkcs7-mime'}, 'serverkeygen: pkcs7-mime part');
    my $keyf = $t->dir . '/skg-server.key.der';
    spew($keyf, decode_base64($parts{'application/pkcs8'} // ''));
    my ($rc, $kpub) = run_cmd(['openssl', 'pkey', '-inform', 'DER', '-in',
                               $keyf, '-pubout']);
    is($rc, 0, 'serverkeygen: the key is PKCS#8 DER');
    my $pem = $t->p7_to_pem($parts{'application/pkcs7-mime'});
    my $c = $pem ? $t->save_first_cert($pem, 'skg') : undef;
    ok($c && $kpub eq ($t->pubkey_of_cert($c) // 'x'),
       'serverkeygen: key matches the certificate');
    if ($c) {
        my ($ok, $out) = $t->verify_chain($c);
        ok($ok, 'serverkeygen cert verifies') or diag($out);
    }
}

# --- simplereenroll over mTLS -----------------------------------------------

SKIP: {
    skip 'no first certificate', 14 if !$ec;
    my $csr2f = $t->dir . '/re.csr.der';
    my ($rc, $o, $e) = run_cmd(['openssl', 'req', '-new', '-key', $eckey,
        '-subj', '/CN=device-ec', '-addext',
        'subjectAltName=DNS:device-ec.example.com,IP:10.0.0.7',
        '-outform', 'DER', '-out', $csr2f]);
    is($rc, 0, 'renewal CSR') or diag($e);
    my $csr2 = slurp($csr2f);

    $r = $t->est_post('simplereenroll', $csr2, user => undef,
                      cert => $ec, key => $eckey);
    my $re = enroll_ok('simplereenroll', $r);
    if ($re) {
        my $txt = $t->x509_text($re);
        like($txt, qr/CN\s*=\s*device-ec/, 'reenroll: same subject');
        like($txt, qr/DNS:device-ec\.example\.com/, 'reenroll: same DNS');
        like($txt, qr/IP Address:10\.0\.0\.7/, 'reenroll: same IP');
        isnt($t->x509_field($re, 'serial'), $ec_serial, 'reenroll: new serial');
        my ($ok, $out) = $t->verify_chain($re);
        ok($ok, 'reenroll cert verifies') or diag($out);
    }

    $r = $t->est_post('simplereenroll', $csr2, user => undef);
    is($r->{code}, 403, 'reenroll without a client cert: 403');

    # a certificate from another CA (self-signed by openssl)
    my $fk = $t->dir . '/foreign.key';
    my $fc = $t->dir . '/foreign.pem';
    ($rc) = run_cmd(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
        'ec_paramgen_curve:P-256', '-nodes', '-keyout', $fk, '-out', $fc,
        '-subj', '/CN=device-ec', '-days', '2']);
    $r = $t->est_post('simplereenroll', $csr2, user => undef,
                      cert => $fc, key => $fk, quiet => 1);
    # ssl_verify_client optional: nginx itself refuses a certificate that
    # does not verify, 400 before the EST handler runs
    is($r->{code}, 400, 'reenroll with a foreign cert: 400')
        or diag($r->{body});
    like($r->{body}, qr/SSL certificate error/,
         '  nginx\'s page for a certificate that does not verify');

    # the record of the client certificate unreadable: the store's fault,
    # not the client's: 500, and the error log says what is wrong
    my $key = "pki:{ca:issuing}:cert:$ec_serial";
    $t->redis('HSET', $key, 'status', 'bogus');
    $r = $t->est_post('simplereenroll', $csr2, user => undef,
                      cert => $ec, key => $eckey, quiet => 1);
    is($r->{code}, 500, 'reenroll, the record corrupt: 500');
    like(slurp($t->error_log) // '', qr/corrupt certificate record/,
         '  the error log says the record is corrupt');
    $t->redis('HSET', $key, 'status', 'good');

    # the record of its serial holds another certificate (the renewal's):
    # 403, and the error log says so, with the serial
    my $orig = $t->redis_hash($key)->{der};
    my $other = $t->x509_der($re // $ec);
    my $put = sub {
        my ($rc) = run_cmd(['redis-cli', '-s', $t->redis_sock, '-x', 'HSET',
                            $key, 'der'], stdin => $_[0]);
        return $rc == 0;
    };
    ok($put->($other), '  the record now holds another certificate');
    $r = $t->est_post('simplereenroll', $csr2, user => undef,
                      cert => $ec, key => $eckey, quiet => 1);
    is($r->{code}, 403, 'reenroll, the record of another certificate: 403');
    like(slurp($t->error_log) // '',
         qr/record of serial 0*\Q$ec_serial\E holds another certificate/i,
         '  the error log says so, with the serial');
    ok($put->($orig), '  the record restored');
}

# --- label -> second template ------------------------------------------------

my ($lcsr) = $t->make_csr('lbl', subj => '/CN=srv.example.com',
                          san => 'DNS:srv.example.com');
$r = $t->est_post('simpleenroll', $lcsr, label => 'server');
my $lc = enroll_ok('label server', $r);
SKIP: {
    skip 'no certificate', 3 if !$lc;
    my $txt = $t->x509_text($lc);
    like($txt, qr/TLS Web Server Authentication/, 'label: template server (EKU)');
    ok(checkend($lc, 6 * 86400) && !checkend($lc, 8 * 86400),
       'label: template server (7 days)');
    record_ok('label', $lc);
}

# --- a client certificate as the authentication of simpleenroll -------------
# An operator who serves EST to mTLS clients only (no auth_basic): a
# client certificate of the CA authenticates simpleenroll under its own
# template only.  The device certificate gets a device certificate, not a
# server certificate for any name through the "server" label.
SKIP: {
    skip 'no device certificate', 3 if !$ec;
    my $conf = $t->render_conf;
    $conf =~ s{\n\s*auth_basic "EST";\n\s*auth_basic_user_file [^\n]*\n}{\n}
        or die 'no EST auth_basic';
    $t->stop_nginx;
    $t->start_nginx($conf);
    my ($csr3) = $t->make_csr('bank', subj => '/CN=www.bank.example',
                              san => 'DNS:www.bank.example');
    $r = $t->est_post('simpleenroll', $csr3, label => 'server', user => undef,
                      cert => $ec, key => $eckey);
    is($r->{code}, 401, 'mTLS only: a device certificate for the server '
       . 'label: 401');
    $r = $t->est_post('simpleenroll', $csr3, label => 'server',
                      user => undef);
    is($r->{code}, 401, '... no certificate: 401');
    my ($csr4) = $t->make_csr('dev2', subj => '/CN=device-2',
                              san => 'DNS:device-2.example.com');
    $r = $t->est_post('simpleenroll', $csr4, user => undef,
                      cert => $ec, key => $eckey);
    is($r->{code}, 200, '... for its own template: 200') or diag($r->{body});
}

$t->stop_nginx;
done_testing();
