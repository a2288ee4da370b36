#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# OCSP responder (RFC 6960, RFC 5019 GET) through nginx with the real
# `openssl ocsp` client: good, revoked with reason, a serial never issued is
# unknown, nonce echoed, SHA-256 CertIDs, two CertIDs in one request, the
# GET form and its cache headers, unknown issuer -> unauthorized, garbage
# -> malformedRequest, Redis down -> tryLater.  Certificates are enrolled
# via EST and carry the demo's AIA (OCSP URL) and CDP.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 qw(encode_base64);
use Time::Piece;
use PKITest;

my $t = PKITest->new;
$t->start_redis;
$t->start_nginx;
my $pki = $t->pki;
my $dir = $t->dir;
my $port = $t->http_port;
my $url = "http://127.0.0.1:$port/ocsp";
my @trust = ('-CAfile', "$pki/root.pem", '-verify_other', "$pki/issuing.pem");

sub enroll { return $t->enroll_cn(@_) }

sub ocsp { return $t->openssl_ocsp(@_) }

sub post_der {
    my ($der, %o) = @_;
    return $t->curl('POST', $url, data => $der,
                    headers => [ 'Content-Type: '
                                 . ($o{ctype} // 'application/ocsp-request') ]);
}

# DER: a TLV, and the content of the TLV at the start of a string
sub der_tlv {
    my ($tag, $c) = @_;
    my $n = length $c;
    my $l = '';
    if ($n < 128) {
        $l = chr($n);
    } else {
        while ($n) {
            $l = chr($n & 255) . $l;
            $n >>= 8;
        }
        $l = chr(0x80 | length $l) . $l;
    }
    return chr($tag) . $l . $c;
}

sub der_inner {
    my ($d) = @_;
    my ($off, $n) = (2, ord(substr($d, 1, 1)));
    if ($n & 0x80) {
        my $k = $n & 0x7f;
        $n = 0;
        $n = ($n << 8) | ord(substr($d, 2 + $_, 1)) for 0 .. $k - 1;
        $off += $k;
    }
    return substr($d, $off, $n);
}

sub resp_text {
    my ($der, @extra) = @_;
    my $f = "$dir/resp-" . int(rand(1e9)) . '.der';
    spew($f, $der);
    my ($rc, $out) = ocsp('-respin', $f, '-resp_text', '-noverify', @extra);
    return $out;
}

my $a = enroll('ocsp-a');
my $b = enroll('ocsp-b');
$t->give_up('enrollment failed') if !$a || !$b;

my $atext = $t->x509_text($a);
like($atext, qr{OCSP - URI:http://127\.0\.0\.1:$port/ocsp},
     'certificate carries the OCSP URL (AIA)');
like($atext, qr{URI:http://127\.0\.0\.1:$port/crl/issuing\.crl},
     'certificate carries the CRL distribution point');

my $aserial = $t->x509_field($a, 'serial');
my $bserial = $t->x509_field($b, 'serial');

# --- good, nonce ---------------------------------------------------------------

my ($rc, $out) = ocsp('-issuer', "$pki/issuing.pem", '-cert', $a, '-url', $url,
                      @trust);
is($rc, 0, 'openssl ocsp exit 0') or diag($out);
like($out, qr/Response verify OK/, 'response verifies (CA-signed)');
like($out, qr/\Q$a\E: good/, 'fresh certificate: good');
unlike($out, qr/nonce/i, 'nonce echoed (no nonce warning)');
like($out, qr/Next Update:/, 'nextUpdate present');

($rc, $out) = ocsp('-sha256', '-issuer', "$pki/issuing.pem", '-cert', $a,
                   '-url', $url, @trust);
like($out, qr/\Q$a\E: good/, 'SHA-256 CertID: good') or diag($out);
like($out, qr/Response verify OK/, 'SHA-256 CertID: verifies');
for my $md (qw(sha384 sha512 sha224)) {
    ($rc, $out) = ocsp("-$md", '-issuer', "$pki/issuing.pem", '-cert', $a,
                       '-url', $url, @trust);
    like($out, qr/\Q$a\E: good/, "\U$md\E CertID: good") or diag($out);
}

# --- two CertIDs -------------------------------------------------------------------

($rc, $out) = ocsp('-issuer', "$pki/issuing.pem", '-cert', $a, '-cert', $b,
                   '-url', $url, @trust);
like($out, qr/\Q$a\E: good/, 'two CertIDs: first good') or diag($out);
like($out, qr/\Q$b\E: good/, 'two CertIDs: second good');

# --- serial never issued --------------------------------------------------------

($rc, $out) = ocsp('-issuer', "$pki/issuing.pem", '-serial', '0x1234',
                   '-url', $url, @trust);
like($out, qr/0x1234: unknown/, 'serial never issued: unknown') or diag($out);
unlike($out, qr/: good/, 'serial never issued: never good');

# a pending record (reserved, not signed) is not good either
$t->redis('HSET', "pki:{ca:issuing}:cert:5678", 'status', 'pending',
          'serial', '5678', 'ca', 'issuing');
($rc, $out) = ocsp('-issuer', "$pki/issuing.pem", '-serial', '0x5678',
                   '-url', $url, @trust);
like($out, qr/0x5678: unknown/, 'pending record: unknown') or diag($out);

# --- revoked ------------------------------------------------------------------------

my $when = time - 60;
my $admin = $t->curl('POST', "https://127.0.0.1:" . $t->https_port
                     . "/pki/admin/revoke", user => 'admin:admin',
                     data => qq({"serial":"$bserial","reason":"keyCompromise"}),
                     headers => ['Content-Type: application/json'],
                     quiet => 1);
if ($admin->{code} != 200) {
    note("admin API not available ($admin->{code}): writing the record");
    $t->redis('HSET', "pki:{ca:issuing}:cert:$bserial", 'status', 'revoked',
              'reason', '1', 'revoked_at', $when);
}
($rc, $out) = ocsp('-issuer', "$pki/issuing.pem", '-cert', $b, '-url', $url,
                   @trust);
like($out, qr/\Q$b\E: revoked/, 'revoked certificate: revoked') or diag($out);
like($out, qr/Reason: keyCompromise/, 'revocation reason keyCompromise');
like($out, qr/Revocation Time:/, 'revocation time present');
like($out, qr/Response verify OK/, 'revoked response verifies');

# --- GET (RFC 5019) -----------------------------------------------------------------

my $reqf = "$dir/get-req.der";
($rc, $out) = ocsp('-issuer', "$pki/issuing.pem", '-cert', $a, '-no_nonce',
                   '-reqout', $reqf);
is($rc, 0, 'request written') or diag($out);
my $b64 = encode_base64(slurp($reqf), '');
(my $enc = $b64) =~ s{([/+=])}{sprintf('%%%02X', ord($1))}ge;
my $r = $t->curl('GET', "$url/$enc");
is($r->{code}, 200, 'GET: 200');
is($r->{headers}{'content-type'}, 'application/ocsp-response',
   'GET: content type');
like($r->{headers}{'cache-control'} // '',
     qr/^max-age=(\d+), public, no-transform, must-revalidate$/,
     'GET: Cache-Control') or diag($r->{head});
my ($age) = ($r->{headers}{'cache-control'} // '') =~ /max-age=(\d+)/;
ok(defined $age && $age > 3000 && $age <= 3600, 'GET: max-age up to nextUpdate');
like($r->{headers}{etag} // '', qr/^"[0-9a-f]{40}"$/, 'GET: ETag');
like($r->{headers}{'last-modified'} // '', qr/GMT$/, 'GET: Last-Modified');
my $respf = "$dir/get-resp.der";
spew($respf, $r->{body});
($rc, $out) = ocsp('-respin', $respf, '-issuer', "$pki/issuing.pem",
                   '-cert', $a, @trust);
like($out, qr/\Q$a\E: good/, 'GET: good') or diag($out);
# RFC 5019 6.2: Expires is nextUpdate
{
    my ($mon, $d, $hms, $y) =
        $out =~ /Next Update: (\w{3}) +(\d+) (\d\d:\d\d:\d\d) (\d{4}) GMT/;
    my $want = defined $y ? sprintf('%02d %s %s %s GMT', $d, $mon, $y, $hms)
                          : 'no nextUpdate';
    like($r->{headers}{expires} // '', qr/^\w{3}, \Q$want\E$/,
         'GET: Expires = nextUpdate') or diag($r->{head});
}
like($out, qr/Response verify OK/, 'GET: verifies');

# unescaped base64 in the path ('/' and '//' as they come): raw URI decoding
$r = $t->curl('GET', "$url/$b64");
is($r->{code}, 200, 'GET unescaped: 200');
like(resp_text($r->{body}), qr/Cert Status: good/, 'GET unescaped: good');

# HEAD of a GET URL: the GET's status and header, no body (RFC 9110 9.3.2)
{
    my $g = $t->curl('GET', "$url/$enc");
    my $h = $t->curl('HEAD', "$url/$enc", extra => ['--head']);
    is($h->{code}, 200, 'HEAD: 200');
    is($h->{headers}{'content-length'} // '', length($g->{body}),
       'HEAD: the GET answer\'s Content-Length');
    is($h->{headers}{'content-type'} // '', 'application/ocsp-response',
       'HEAD: its content type');
    # (with --head curl writes the header where the body would go)
    ok(index($h->{body} // '', $g->{body}) < 0, 'HEAD: no body');
}

# a client that appends '/' to an AIA URL ending in one: "/ocsp//MEow..."
$r = $t->curl('GET', "$url//$enc");
is($r->{code}, 200, 'GET after a doubled slash: 200');
like(resp_text($r->{body}), qr/Cert Status: good/,
     'GET after a doubled slash: good') or diag(resp_text($r->{body}));

# a critical request extension this responder does not understand (RFC
# 6960 4.4): malformedRequest, POST and GET, also while the same CertID's
# answer is in the response cache; a non-critical one is ignored
{
    my $tbs = der_inner(der_inner(slurp($reqf)));   # TBSRequest's content
    for my $crit (1, 0) {
        my $ext = der_tlv(0x30, der_tlv(0x06, "\x2a\x03\x04\x05")
                                . ($crit ? "\x01\x01\xff" : '')
                                . der_tlv(0x04, "\x05\x00"));
        my $x = der_tlv(0x30, der_tlv(0x30, $tbs
                        . der_tlv(0xa2, der_tlv(0x30, $ext))));
        my $what = $crit ? 'critical' : 'non-critical';
        my $want = $crit ? qr/malformedrequest/i : qr/Cert Status: good/;
        like(resp_text(post_der($x)->{body}), $want,
             "POST, $what unknown requestExtension");
        (my $e = encode_base64($x, '')) =~ s{([/+=])}{sprintf('%%%02X', ord($1))}ge;
        like(resp_text($t->curl('GET', "$url/$e")->{body}), $want,
             "GET, $what unknown requestExtension");
    }
}

# a bad or truncated %-escape: nginx's URI parser refuses the request line
# (400, its own page) before the responder sees it
$r = $t->curl('GET', "$url/%%%");
is($r->{code}, 400, 'GET bad escape: 400 (nginx)');
like($r->{body}, qr/400 Bad Request/, '  nginx\'s page');
$r = $t->curl('GET', "$url/MEIw%2");
is($r->{code}, 400, 'GET truncated escape: 400 (nginx)');
like($r->{body}, qr/400 Bad Request/, '  nginx\'s page');
# 3000 bytes fit nginx's header buffers: the responder's own answer
$r = $t->curl('GET', "$url/" . ('A' x 3000));
is($r->{code}, 200, 'GET long garbage: 200');
like(resp_text($r->{body}), qr/malformedrequest/i,
     '  malformedRequest');
$r = $t->curl('GET', "$url/");
like(resp_text($r->{body}), qr/malformedrequest/i, 'GET empty: malformedRequest');

# POST responses are not cached
$r = post_der(slurp($reqf));
is($r->{code}, 200, 'POST: 200');
is($r->{headers}{'cache-control'}, 'no-store', 'POST: Cache-Control no-store');
ok(!defined $r->{headers}{expires}, 'POST: no Expires');

# --- hostile ------------------------------------------------------------------------

$r = post_der("\x30\x82\x01\x00garbage");
is($r->{code}, 200, 'garbage: HTTP 200');
like(resp_text($r->{body}), qr/malformedrequest/i, 'garbage: malformedRequest');

$r = post_der(substr(slurp($reqf), 0, 20));
like(resp_text($r->{body}), qr/malformedrequest/i, 'truncated: malformedRequest');

$r = post_der(slurp($reqf) . "\x00", );
like(resp_text($r->{body}), qr/malformedrequest/i, 'trailing byte: malformedRequest');

$r = post_der(slurp($reqf), ctype => 'text/plain');
like(resp_text($r->{body}), qr/malformedrequest/i,
     'wrong content type: malformedRequest');
# the media type is the whole type, parameters aside, in any case
$r = post_der(slurp($reqf), ctype => 'application/ocsp-requestX');
like(resp_text($r->{body}), qr/malformedrequest/i,
     'application/ocsp-requestX (a longer type): malformedRequest');
$r = post_der(slurp($reqf), ctype => 'Application/OCSP-Request; x=1');
like(resp_text($r->{body}), qr/Cert Status: good/i,
     'Application/OCSP-Request with a parameter: answered');

$r = post_der('x' x 70000);
is($r->{code}, 200, 'oversized body: an OCSP answer, not an HTTP error');
like(resp_text($r->{body}), qr/malformedrequest/i,
     '  malformedRequest');

# chunked over the cap, at once and in a later read: the same, and the
# connection ends with it
for my $case (['at once'], ['in a later read', pause => 0.5]) {
    my ($name, %o) = @$case;
    my $a = $t->over_cap_post(tls => 0, path => '/ocsp',
        headers => ['Content-Type: application/ocsp-request'],
        after => "GET /ocsp/MAA= HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", %o);
    is($a->{status}, 200, "chunked body over the cap $name: 200")
        or diag(explain($a));
    is(unpack('H*', $a->{body}), '30030a0101', '  malformedRequest');
    ok($a->{closed}, '  the server closed the connection');
    unlike($a->{after} // '', qr{HTTP/1\.1}, '  nothing after it answered');
}

# hundreds of CertIDs
{
    my @certs;
    push @certs, '-serial', sprintf('0x%x', 0x1000 + $_) for 1 .. 150;
    ($rc, $out) = ocsp('-issuer', "$pki/issuing.pem", @certs, '-reqout',
                       "$dir/many.der");
    $r = post_der(slurp("$dir/many.der"));
    like(resp_text($r->{body}), qr/malformedrequest/i,
         '150 CertIDs: malformedRequest');
}

$r = $t->curl('PUT', $url, data => 'x');
is($r->{code}, 405, 'PUT: 405');
$t->no_continue('PUT', $url, 405, 'PUT');

# unknown issuer: the root is not served at /ocsp
($rc, $out) = ocsp('-issuer', "$pki/root.pem", '-serial', '0x1234',
                   '-url', $url, @trust);
like($out, qr/unauthorized/i, 'unknown issuer: unauthorized') or diag($out);

# --- delegated responder (ocsp_responder_signer) ---------------------------------

SKIP: {
    my $tok = $t->token;
    my $pin = slurp("$pki/hsm/pin") // '';
    chomp $pin;
    my ($rc1) = run_cmd(['openssl', 'req', '-new', '-newkey', 'ec',
        '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', "$dir/resp.key", '-subj', '/CN=OCSP responder',
        '-out', "$dir/resp.csr"]);
    spew("$dir/resp.ext", "extendedKeyUsage=critical,OCSPSigning\n"
         . "keyUsage=critical,digitalSignature\nnoCheck=ignored\n");
    my ($rc2, $o2, $e2) = run_cmd(['openssl', 'x509', '-req',
        '-in', "$dir/resp.csr", '-CA', "$pki/issuing.pem", '-engine',
        'pkcs11', '-CAkeyform', 'engine', '-CAkey',
        "pkcs11:token=$tok;object=issuing;type=private;pin-value=$pin",
        '-days', '1', '-set_serial', '4242', '-extfile', "$dir/resp.ext",
        '-out', "$dir/resp.pem"],
        env => { SOFTHSM2_CONF => $t->softhsm_conf });
    skip 'cannot sign a responder certificate with the pkcs11 engine', 11
        if $rc1 != 0 || $rc2 != 0;

    # a certificate without OCSPSigning is refused at configuration time
    my $conf = $t->render_conf;
    (my $bad = $conf) =~ s{(ocsp_responder issuing;)}
        {$1\n            ocsp_responder_signer issuing $pki/server.pem $pki/server.key;};
    my ($okt, $tout) = $t->nginx_test($t->write_conf($bad, 'bad.conf'));
    ok(!$okt && $tout =~ /OCSPSigning/,
       'signer without OCSPSigning refused by nginx -t') or diag($tout);

    # ... and one without id-pkix-ocsp-nocheck: its own status could not
    # be asked here (no record of it)
    spew("$dir/resp2.ext", "extendedKeyUsage=critical,OCSPSigning\n"
         . "keyUsage=critical,digitalSignature\n");
    run_cmd(['openssl', 'x509', '-req', '-in', "$dir/resp.csr", '-CA',
        "$pki/issuing.pem", '-engine', 'pkcs11', '-CAkeyform', 'engine',
        '-CAkey', "pkcs11:token=$tok;object=issuing;type=private;"
        . "pin-value=$pin", '-days', '1', '-set_serial', '4243',
        '-extfile', "$dir/resp2.ext", '-out', "$dir/resp2.pem"],
        env => { SOFTHSM2_CONF => $t->softhsm_conf });
    ($bad = $conf) =~ s{(ocsp_responder issuing;)}
        {$1\n            ocsp_responder_signer issuing $dir/resp2.pem $dir/resp.key;};
    ($okt, $tout) = $t->nginx_test($t->write_conf($bad, 'bad2.conf'));
    ok($okt && $tout =~ /\[warn\].*ocsp-nocheck/,
       'signer without id-pkix-ocsp-nocheck: nginx -t warns (a reload '
       . 'that failed would stop every module)') or diag($tout);

    (my $good = $conf) =~ s{(ocsp_responder issuing;)}
        {$1\n            ocsp_responder_signer issuing $dir/resp.pem $dir/resp.key;};
    $t->stop_nginx;
    $t->start_nginx($good);

    my ($rc3, $o3) = ocsp('-issuer', "$pki/issuing.pem", '-cert', $a,
                          '-url', $url, @trust, '-resp_text');
    like($o3, qr/\Q$a\E: good/, 'delegated: good') or diag($o3);
    like($o3, qr/Response verify OK/, 'delegated: verifies');
    like($o3, qr/Responder Id: .*[0-9A-F]{40}/s, 'delegated: ResponderID by key');
    like($o3, qr/CN\s*=\s*OCSP responder/, 'delegated: certificate included');
    ($rc3, $o3) = ocsp('-issuer', "$pki/issuing.pem", '-cert', $b,
                       '-url', $url, @trust);
    like($o3, qr/\Q$b\E: revoked/, 'delegated: revoked') or diag($o3);

    # a responder certificate that has expired (nginx -t only warns): the
    # CA key signs instead, so responses still verify, and the error log
    # names the certificate
    run_cmd(['openssl', 'x509', '-req', '-in', "$dir/resp.csr", '-CA',
        "$pki/issuing.pem", '-engine', 'pkcs11', '-CAkeyform', 'engine',
        '-CAkey', "pkcs11:token=$tok;object=issuing;type=private;"
        . "pin-value=$pin", '-days', '-1', '-set_serial', '4244',
        '-extfile', "$dir/resp.ext", '-out', "$dir/resp-exp.pem"],
        env => { SOFTHSM2_CONF => $t->softhsm_conf });
    (my $exp = $conf) =~ s{(ocsp_responder issuing;)}
        {$1\n            ocsp_responder_signer issuing $dir/resp-exp.pem $dir/resp.key;};
    $t->stop_nginx;
    $t->start_nginx($exp);
    ($rc3, $o3) = ocsp('-issuer', "$pki/issuing.pem", '-cert', $a,
                       '-url', $url, @trust, '-resp_text');
    like($o3, qr/\Q$a\E: good/, 'expired delegated responder: good')
        or diag($o3);
    like($o3, qr/Response verify OK/,
         'expired delegated responder: verifies (signed by the CA key)');
    unlike($o3, qr/CN\s*=\s*OCSP responder/,
           'expired delegated responder: its certificate left out');
    my $named = qr/\[error\].*delegated OCSP responder certificate /
                . qr/"[^"]*OCSP responder" \(serial 1094\) of CA "issuing" /
                . qr/is expired/;
    like(slurp($t->error_log) // '', qr/$named/,
         'expired delegated responder: the error log names it');
}

# --- delegated responder whose key lives in the token --------------------------------

SKIP: {
    my $tok = $t->token;
    my $pin = slurp("$pki/hsm/pin") // '';
    chomp $pin;
    my %env = (SOFTHSM2_CONF => $t->softhsm_conf);
    my $mod = '/usr/lib/softhsm/libsofthsm2.so';
    my $uri = "pkcs11:token=$tok;object=ocspresp;type=private";
    my ($rc1, $o1, $e1) = run_cmd(['pkcs11-tool', '--module', $mod,
        '--token-label', $tok, '--login', '--pin', $pin, '--keypairgen',
        '--key-type', 'EC:prime256v1', '--label', 'ocspresp', '--id', '4f'],
        env => \%env);
    my ($rc2, $o2, $e2) = run_cmd(['openssl', 'req', '-new', '-engine',
        'pkcs11', '-keyform', 'engine', '-key', "$uri;pin-value=$pin",
        '-subj', '/CN=OCSP responder HSM', '-out', "$dir/hsmresp.csr"],
        env => \%env);
    my ($rc3) = run_cmd(['openssl', 'x509', '-req',
        '-in', "$dir/hsmresp.csr", '-CA', "$pki/issuing.pem", '-engine',
        'pkcs11', '-CAkeyform', 'engine', '-CAkey',
        "pkcs11:token=$tok;object=issuing;type=private;pin-value=$pin",
        '-days', '1', '-set_serial', '4243', '-extfile', "$dir/resp.ext",
        '-out', "$dir/hsmresp.pem"], env => \%env);
    skip "cannot make a token responder key: $e1 $e2", 4
        if $rc1 != 0 || $rc2 != 0 || $rc3 != 0;

    my $conf = $t->render_conf;
    (my $hsm = $conf) =~ s{(ocsp_responder issuing;)}
        {$1\n            ocsp_responder_signer issuing $dir/hsmresp.pem "$uri";};
    (my $nov = $conf) =~ s{(ocsp_responder issuing;)}
        {$1\n            ocsp_responder_signer issuing $dir/hsmresp.pem "pkcs11:token=nosuch;object=x;type=private";};
    my ($okt, $tout) = $t->nginx_test($t->write_conf($nov, 'nov.conf'));
    ok(!$okt && $tout =~ /no pki_key_vault for token/,
       'token responder key without a vault refused by nginx -t')
        or diag($tout);

    $t->stop_nginx;
    $t->start_nginx($hsm);
    my ($rc4, $o4) = ocsp('-issuer', "$pki/issuing.pem", '-cert', $a,
                          '-url', $url, @trust, '-resp_text');
    like($o4, qr/\Q$a\E: good/, 'token responder key: good') or diag($o4);
    like($o4, qr/Response verify OK/, 'token responder key: verifies');
    like($o4, qr/CN\s*=\s*OCSP responder HSM/,
         'token responder key: its certificate included');
}

# --- two CAs with one subject and key (a re-certified CA) ---------------------
#
# issuing-old and issuing: the same certificate and key, so a CertID names
# both.  Each serial is looked up under both: a good record of the second
# CA is good (not "unknown", here shown as revoked/certificateHold), a
# revoked one wins over a good one of the first CA.

{
    my $conf = $t->render_conf;
    my ($ca) = $conf =~ m{(    pki_ca issuing \{.*?\n    \}\n)}s
        or die 'no pki_ca issuing block';
    (my $old = $ca) =~ s/pki_ca issuing \{/pki_ca issuing-old {/;
    $old =~ s/\n\s*templates[^\n]*//g;
    $conf =~ s/\Q$ca\E/$ca$old/;
    my $ind = ' ' x 12;
    $conf =~ s{ocsp_responder issuing;}
              {ocsp_responder issuing-old issuing;\n${ind}ocsp_responder_unknown revoked;}
        or die 'no ocsp_responder';
    $t->stop_nginx;
    $t->start_nginx($conf);

    # $b's record under issuing-old too, but good there
    my ($bkey) = grep { /:cert:0*\Q$bserial\E$/i }
        $t->redis_keys('pki:{ca:issuing}:cert:*');
    ok($bkey, 'record of b found') or diag($bserial);
    my %rec = %{ $t->redis_hash($bkey) };
    $rec{status} = 'good';
    delete @rec{qw(reason revoked_at invalidity_date)};
    require Redis;
    (my $oldkey = $bkey) =~ s/\{ca:issuing\}/{ca:issuing-old}/;
    Redis->new(sock => $t->redis_sock, reconnect => 0)->hset($oldkey, %rec);

    ($rc, $out) = ocsp('-issuer', "$pki/issuing.pem", '-cert', $a,
                       '-url', $url, @trust);
    like($out, qr/\Q$a\E: good/, 'same-key CAs: good certificate of the '
         . 'second CA is good') or diag($out);
    like($out, qr/Response verify OK/, 'same-key CAs: verifies');

    ($rc, $out) = ocsp('-issuer', "$pki/issuing.pem", '-cert', $b,
                       '-url', $url, @trust);
    like($out, qr/\Q$b\E: revoked/, 'same-key CAs: revoked under one, good '
         . 'under the other: revoked') or diag($out);
    like($out, qr/Reason: keyCompromise/, 'same-key CAs: its reason');

    # one CRL issuer to relying parties: the CRL of each lists $b, revoked
    # under issuing only
    for my $name (qw(issuing-old issuing)) {
        my $g = $t->curl('GET', "http://127.0.0.1:$port/crl/$name.crl");
        my $f = $t->prefix . "/same-$name.crl";
        open(my $fh, '>:raw', $f) or die "$f: $!";
        print $fh $g->{body};
        close $fh;
        my $text = `openssl crl -inform DER -in $f -noout -text 2>&1`;
        (my $bs = $bserial) =~ s/^0+//;
        is($g->{code}, 200, "same-key CAs: $name.crl served");
        like($text, qr/Serial Number: 0*\Q$bs\E\s/i,
             "same-key CAs: $name.crl lists the revocation under issuing")
            or diag($text);
    }

    ($rc, $out) = ocsp('-issuer', "$pki/issuing.pem", '-cert', $a, '-cert',
                       $b, '-serial', '0x1234', '-url', $url, @trust);
    like($out, qr/\Q$a\E: good.*\Q$b\E: revoked.*0x1234: revoked/s,
         'same-key CAs: three CertIDs in one request') or diag($out);
    like($out, qr/Reason: certificateHold/,
         'same-key CAs: a serial neither has: unknown (certificateHold)');
    like($out, qr/Response verify OK/, 'same-key CAs: verifies');

    # $a good under both, a revocation planned under one of them only
    # (first the one looked up second, then the other): the answer ends
    # at the plan either way, not an hour later (nonce requests: the
    # records are changed behind the cache's back)
    my ($akey) = grep { /:cert:0*\Q$aserial\E$/i }
        $t->redis_keys('pki:{ca:issuing}:cert:*');
    ok($akey, 'record of a found') or diag($aserial);
    (my $aold = $akey) =~ s/\{ca:issuing\}/{ca:issuing-old}/;
    my $rd = Redis->new(sock => $t->redis_sock, reconnect => 0);
    $rd->hset($aold, %{ $t->redis_hash($akey) });
    for my $k ($akey, $aold) {
        my $plan = time + 600;
        $rd->hset($k, plan_at => $plan, plan_reason => 1);
        ($rc, $out) = ocsp('-issuer', "$pki/issuing.pem", '-cert', $a,
                           '-url', $url, @trust, '-resp_text');
        my ($nu) = $out =~ /Next Update: (.*?GMT)/;
        my $nut = defined $nu
            ? Time::Piece->strptime($nu =~ s/\s+/ /gr,
                                    '%b %d %H:%M:%S %Y GMT')->epoch
            : 0;
        like($out, qr/\Q$a\E: good/, "same-key CAs, plan under $k: good")
            or diag($out);
        ok($nut > 0 && $nut <= $plan,
           "same-key CAs, plan under $k: nextUpdate ("
           . ($nu // 'none') . ') no later than the plan') or diag($out);
        $rd->hdel($k, 'plan_at', 'plan_reason');
    }
}

# --- GET after a rewrite; a regex location ---------------------------------------------

# The GET request is what follows the location's prefix in the raw URI;
# after a rewrite it is read from the rewritten URI.  In a regex location
# there is no prefix: nginx -t warns that only POST works there.  A "//"
# of the base64 (an encoded %2F%2F) is merged in the URI a rewrite reads
# unless merge_slashes is off (as documented): off here, else the test
# fails whenever the random certificate's request has one.
{
    my $conf = $t->render_conf;
    my $ind = ' ' x 8;
    $conf =~ s{(\n\s*location /ocsp \{)}
              {\n${ind}merge_slashes off;\n${ind}location /status/ {\n$ind    rewrite ^/status/(.*)\$ /ocsp/\$1 last;\n$ind}$1}
        or die 'no location /ocsp';
    $t->stop_nginx;
    $t->start_nginx($conf);
    my $g = $t->curl('GET', "http://127.0.0.1:$port/status/$enc");
    is($g->{code}, 200, 'GET through a rewrite: 200');
    like(resp_text($g->{body}), qr/Cert Status: good/,
         'GET through a rewrite: good (read from the rewritten URI)');

    my $rxloc = "location ~ ^/ocsp-rx/ {\n$ind    ocsp_responder "
                . "issuing;\n$ind}\n${ind}location /status/ {";
    (my $rx = $conf) =~ s!location /status/ \{!$rxloc!;
    my ($okt, $tout) = $t->nginx_test($t->write_conf($rx, 'rx.conf'));
    ok($okt && $tout =~ /\[warn\].*regex location.*only POST/,
       'ocsp_responder in a regex location: nginx -t warns that GET cannot '
       . 'work there') or diag($tout);
}

# --- Redis down -> tryLater -----------------------------------------------------------

$t->stop_redis;
($rc, $out) = ocsp('-issuer', "$pki/issuing.pem", '-cert', $a, '-url', $url,
                   @trust);
like($out, qr/trylater/i, 'Redis down: tryLater') or diag($out);
unlike($out, qr/: good/, 'Redis down: never good');

$t->stop_nginx;
my $log = slurp($t->error_log) // '';
unlike($log, qr/\[(?:alert|crit|emerg)\]/, 'no alert/crit in the error log')
    or diag($log);

done_testing();
