#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# SCEP at the CMS level with our own client (t/lib/scepmsg.c, OpenSSL
# only): the happy paths with each cipher and the GET form, then every
# hostile input of issue 5 section 4: oversized, malformed, missing
# attributes, bad signature, bad digest, weak algorithms, unknown and
# UpdateReq message types, wrong or replayed or mis-bound challenges, a CSR
# the template forbids, a stale signingTime, a foreign or revoked renewal
# signer, wrong recipient.  Each gets its failInfo (or 400/413), a line in
# the error log, and no certificate is issued.  GetCert, GetCRL, CertPoll.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep);
use JSON::PP;
use MIME::Base64 ();
use PKITest;
use SCEPMsg;

my $t = PKITest->new;
my $pki = $t->pki;
my $dir = $t->dir;

# a location without scep_accept_des, without a static challenge
my $conf = $t->render_conf;
my $strict = <<"EOF";
        location /scep-strict {
            scep issuing scep;
            scep_ra $pki/ra.pem $pki/ra.key;
            scep_dynamic_challenges on;
        }

        location /scep-small {
            scep issuing scep;
            scep_ra $pki/ra.pem $pki/ra.key;
            scep_challenge file=$pki/scep-challenge;
            scep_max_body_size 3000;
        }

        location /scep {
EOF
$conf =~ s/        location \/scep \{\n/$strict/ or die 'no /scep location';
my ($base, $admin, $k1, $k2, $tool) = scep_setup($t, $conf);
my $ra = "$pki/ra.pem";
my ($f, $r, $h);

# --- happy paths -------------------------------------------------------------

$f = req(cn => 'ok-aes128', challenge => 'demo');
$r = send_msg($f);
is($r->{code}, 200, 'PKCSReq AES-128: 200');
is($r->{headers}{'content-type'}, 'application/x-pki-message',
   'CertRep content type');
$h = rep($r, $f);
is($h->{status}, 0, 'PKCSReq AES-128: SUCCESS') or diag($h->{raw});
is($h->{sig}, 'ok', 'CertRep signature verifies with the RA certificate');
is($h->{nonce}, 'ok', 'recipientNonce = senderNonce');
is($h->{tid}, 'ok', 'transactionID echoed');
is($h->{cipher}, 'AES-128-CBC', 'reply encrypted with AES-128');
is($h->{kt}, 'rsaEncryption', 'reply key transport PKCS#1 v1.5, as the '
   . 'request\'s');
my ($vok, $vout) = $t->verify_chain($h->{file} // '/nonexistent');
ok($vok, 'issued certificate verifies') or diag($vout);
my $issued = $h->{file};
my $issued_serial = $t->x509_field($issued, 'serial');

$f = req(cn => 'ok-aes256', challenge => 'demo', cipher => 'aes256');
$h = rep(send_msg($f), $f);
is($h->{status}, 0, 'AES-256 request: SUCCESS');
is($h->{cipher}, 'AES-256-CBC', 'AES-256 request: AES-256 reply');

# the digests of a CertRep (its SignedData's digestAlgorithms and its
# SignerInfo's digestAlgorithm), as openssl cms prints them
sub rep_digests {
    my ($r) = @_;
    spew("$dir/rep-md.der", $r->{body} // '');
    my (undef, $p) = run_cmd(['openssl', 'cms', '-cmsout', '-print',
                              '-inform', 'DER', '-in', "$dir/rep-md.der"]);
    my @d = $p =~ /digestAlgorithms?:\s*(?:algorithm:\s*)?(\w+)/g;
    return join ',', @d;
}

$f = req(cn => 'ok-3des', challenge => 'demo', cipher => 'des3',
         digest => 'sha1');
$r = send_msg($f);
$h = rep($r, $f);
is($h->{status}, 0, '3DES + SHA-1 request: SUCCESS');
is($h->{cipher}, 'DES-EDE3-CBC', '3DES request: 3DES reply (nothing better)');
is(rep_digests($r), 'sha1,sha1', '  its CertRep signed with SHA-1, as the '
   . 'request (RFC 8894 3.5.2; it was SHA-256)');

$f = req(cn => 'ok-sha512', challenge => 'demo', digest => 'sha512');
$r = send_msg($f);
$h = rep($r, $f);
is($h->{status}, 0, 'SHA-512 request: SUCCESS');
is(rep_digests($r), 'sha512,sha512', '  its CertRep signed with SHA-512');
$f = req(cn => 'ok-sha256', challenge => 'demo');
$r = send_msg($f);
is(rep_digests($r), 'sha256,sha256', 'SHA-256 request: CertRep in SHA-256');

# GET form
$f = "$dir/get.b64";
{
    run_cmd([$tool, 'req', '--rcpt', $ra, '--key', $k1, '--out', $f,
             '--cn', 'ok-get', '--challenge', 'demo', '--b64']);
    $r = $t->curl('GET', "$base/scep?operation=PKIOperation",
                  extra => ['-G', '--data-urlencode', "message\@$f"]);
    is($r->{code}, 200, 'GET PKIOperation: 200');
    my $reqder = "$dir/get.der";
    spew($reqder, MIME::Base64::decode_base64(slurp($f)));
    $h = rep($r, $reqder);
    is($h->{status}, 0, 'GET PKIOperation: SUCCESS') or diag($h->{raw});

    # a broken escape in message= is refused, not dropped and decoded
    # around (nginx's own decoder would skip it and go on)
    (my $enc = slurp($f)) =~ s/\s+//g;
    $enc =~ s/([^A-Za-z0-9])/sprintf('%%%02X', ord $1)/ge;
    my $before = records();
    for my $bad (['%4', 'a "%4" at its end'], ['%ZZ', 'a "%ZZ" inside']) {
        my $m = $bad->[0] eq '%4' ? "$enc%4"
                                  : substr($enc, 0, 40) . '%ZZ'
                                    . substr($enc, 40);
        $r = $t->curl('GET', "$base/scep?operation=PKIOperation&message=$m");
        is($r->{code}, 400, "GET PKIOperation, $bad->[1]: 400");
        is($r->{body}, "message= holds a broken percent-escape\n",
           '  saying so');
    }
    is(records(), $before, '  nothing issued');
    like(slurp($t->error_log) // '',
         qr/\[info\].*scep: broken percent-escape in message= from/,
         '  the error log says why');
}

# GET: scep_max_body_size caps the message's DER, as for POST, not its
# base64 (4/3 of it): a 2.3k message passes a 3000-byte cap by GET too
{
    my $m = "$dir/cap.der";
    run_cmd([$tool, 'req', '--rcpt', $ra, '--key', $k1, '--out', $m,
             '--cn', 'c', '--challenge', 'demo']);
    my $len = -s $m;
    ok($len > 3000 * 3 / 4 && $len <= 3000, "GET cap: a $len-byte message, "
       . 'between 3/4 of the cap and the cap');
    my $b = "$dir/cap.b64";
    spew($b, MIME::Base64::encode_base64(slurp($m), ''));
    $r = $t->curl('GET', "$base/scep-small?operation=PKIOperation",
                  extra => ['-G', '--data-urlencode', "message\@$b"]);
    is($r->{code}, 200, 'GET cap: 200') or diag($r->{body});
    is(rep($r, $m)->{status}, 0, 'GET cap: SUCCESS');
    my $k4 = key('k4096', 4096);
    run_cmd([$tool, 'req', '--rcpt', $ra, '--key', $k4, '--out', $m,
             '--cn', 'c', '--challenge', 'demo']);
    spew($b, MIME::Base64::encode_base64(slurp($m), ''));
    ok(-s $m > 3000, 'GET cap: a message over the cap (' . (-s $m) . ')');
    my $before = records();
    $r = $t->curl('GET', "$base/scep-small?operation=PKIOperation",
                  extra => ['-G', '--data-urlencode', "message\@$b"]);
    is($r->{code}, 413, '... by GET: 413');
    is($r->{body}, "message too large\n", '... the SCEP text error');
    $r = send_msg($m, '/scep-small');
    is($r->{code}, 413, '... by POST: 413');
    is(records(), $before, '... nothing issued');
}

# --- replays: a copy of a message taken once changes nothing -----------------

# the keys of the messages' replay records, and the TTL of the one added
my %seen = map { $_ => 1 } $t->redis_keys('pki:scep:seen:*');
sub new_seen_ttl {
    my @new = grep { !$seen{$_}++ } $t->redis_keys('pki:scep:seen:*');
    return @new == 1 ? $t->redis_raw('TTL', $new[0]) =~ s/\s+//r : "@new";
}
{
    $f = req(cn => 'replay-1', challenge => 'demo');
    $h = rep(send_msg($f), $f);
    is($h->{status}, 0, 'replay: a PKCSReq (static challenge) enrolls');
    my $ttl = new_seen_ttl();
    ok($ttl > 86400 && $ttl <= 86400 + 300, 'replay: the message is '
       . 'remembered while its signingTime passes (1 d + 300 s)')
        or diag($ttl);
    # a copy of a PKCSReq is its client's resend after a lost CertRep:
    # the same certificate again, nothing issued, no challenge judged
    my $serial = $t->x509_field($h->{file}, 'serial');
    my $before = records();
    my $ch = rep(send_msg($f), $f);
    is($ch->{status}, 0, 'replay: the same PKCSReq sent again (a CertRep '
       . 'lost): SUCCESS') or diag($ch->{raw});
    is($t->x509_field($ch->{file} // '/nonexistent', 'serial'), $serial,
       '... with the same certificate');
    is(records(), $before, '... nothing issued');
    # what a resend is compared by is the CSR's hash: no record keeps the
    # CSR, whose challengePassword is the static challenge
    my @pend = map { $t->redis_hash($_) } $t->redis_keys('pki:scep:pend:*');
    ok(@pend && !(grep { exists $_->{csr} } @pend)
       && !(grep { ($_->{csrsha256} // '') !~ /^[0-9a-f]{64}\z/ } @pend),
       'replay: the record keeps the CSR\'s SHA-256, not the CSR with the '
       . 'static challenge (' . scalar(@pend) . ' records)');
    my $rf = req(type => 17, key => $k2, cn => 'replay-1',
                 cert => $h->{file}, signkey => $k1);
    my $rh = rep(send_msg($rf), $rf, $k1, $h->{file});
    is($rh->{status}, 0, 'replay: a RenewalReq renews') or diag($rh->{raw});
    $ttl = new_seen_ttl();
    ok($ttl > 86400 && $ttl <= 86400 + 300, 'replay: ... remembered too')
        or diag($ttl);
    fails('replay: the same RenewalReq sent again', $rf, 2, key => $k1,
          cert => $h->{file});
    # the GET form of a message taken by POST is the same message
    my $b = "$dir/replay.b64";
    spew($b, MIME::Base64::encode_base64(slurp($f), ''));
    $before = records();
    $r = $t->curl('GET', "$base/scep?operation=PKIOperation",
                  extra => ['-G', '--data-urlencode', "message\@$b"]);
    $ch = rep($r, $f);
    is($t->x509_field($ch->{file} // '/nonexistent', 'serial'), $serial,
       'replay: the PKCSReq again by GET: the same certificate');
    is(records(), $before, '... nothing issued');
    # another request of that key with the static challenge is a new one
    $f = req(cn => 'replay-1b', challenge => 'demo');
    $ch = rep(send_msg($f), $f);
    is($ch->{status}, 0, 'replay: another CSR of that key enrolls');
    isnt($t->x509_field($ch->{file} // '/nonexistent', 'serial'), $serial,
         '... with a new certificate');
    new_seen_ttl();

    # no signingTime: nothing ends the message's life, it is remembered
    # for twice the window, and at least 7 days (here 2 days)
    $f = req(cn => 'replay-2', challenge => 'demo',
             flags => ['no-signing-time']);
    $h = rep(send_msg($f), $f);
    is($h->{status}, 0, 'replay: a PKCSReq without signingTime enrolls');
    $ttl = new_seen_ttl();
    ok($ttl > 7 * 86400 && $ttl <= 7 * 86400 + 300, 'replay: ... '
       . 'remembered for 7 days, more than twice scep_clock_skew')
        or diag($ttl);
    $before = records();
    is(rep(send_msg($f), $f)->{status}, 0, 'replay: the same PKCSReq '
       . 'without signingTime again: SUCCESS (its certificate)');
    is(records(), $before, '... nothing issued');
}

# --- HTTP-level refusals (no CertRep can be built) ---------------------------

http_fails('garbage body', undef, 400, data => 'not a pkcs7 at all');
{
    my $trunc = "$dir/trunc.der";
    my $d = slurp(req(challenge => 'demo'));
    spew($trunc, substr($d, 0, length($d) - 40));
    http_fails('truncated DER', $trunc, 400);
    my $big = "$dir/big.der";
    spew($big, 'x' x (257 * 1024));
    http_fails('body over 256 KiB', $big, 413);
}

# over the cap each way: SCEP's own text/plain 413, never nginx's HTML
# page, and the connection ends with it (what follows the body is never
# taken for a request)
for my $case (['chunked, over the cap in a later read', pause => 0.5],
              ['chunked, over the cap at once'],
              ['Content-Length over the cap', length => 300 * 1024]) {
    my ($name, %o) = @$case;
    my $a = $t->over_cap_post(tls => 0, path => '/scep?operation=PKIOperation',
        headers => ['Content-Type: application/x-pki-message'], chunks => 20,
        after => "GET /scep?operation=GetCACaps HTTP/1.1\r\n"
                 . "Host: 127.0.0.1\r\n\r\n", %o);
    is($a->{status}, 413, "$name: 413") or diag(explain($a));
    like($a->{headers}{'content-type'} // '', qr{^text/plain}i,
         '  text/plain');
    is($a->{body}, "message too large\n", '  the SCEP text error');
    is(lc($a->{headers}{connection} // ''), 'close', '  Connection: close');
    next if $o{length};
    ok($a->{closed}, '  the server closed the connection');
    unlike($a->{after} // '', qr{HTTP/1\.1}, '  nothing after it answered');
}
http_fails('no transactionID', req(challenge => 'demo', flags => ['no-tid']),
           400);
http_fails('no senderNonce', req(challenge => 'demo', flags => ['no-nonce']),
           400);
http_fails('no messageType', req(challenge => 'demo',
                                 flags => ['no-msgtype']), 400);
http_fails('messageType not a number', req(challenge => 'demo',
                                           'msgtype-str' => '1x'), 400);

# certificates in the message: counted before it is read (every one of
# them would have its key decoded); the signer's with a chain is read
$f = req(cn => 'chain9', challenge => 'demo', 'extra-certs' => 9);
$h = rep(send_msg($f), $f);
is($h->{status}, 0, 'PKCSReq with 9 more certificates: SUCCESS')
    or diag($h->{raw});
for my $case ([19, 10, 'PKCSReq'], [20, 500, 'CertPoll']) {
    my ($type, $n, $name) = @$case;
    my $before = records();
    $f = req(challenge => 'demo', type => $type, 'extra-certs' => $n);
    $r = send_msg($f);
    is($r->{code}, 400, "$name with $n more certificates: 400");
    like($r->{body}, qr/carries ${\($n + 1)} certificates and 0 CRLs/,
         "$name with $n more certificates: refused by their count");
    is(records(), $before, "$name with $n more certificates: nothing "
       . 'issued');
}
$r = $t->curl('PUT', "$base/scep?operation=PKIOperation", data => 'x');
is($r->{code}, 405, 'PUT: 405');
# RFC 9110 15.5.6: a 405 names the methods the resource supports
is($r->{headers}{allow}, 'GET, HEAD, POST', '  Allow: GET, HEAD, POST');
# RFC 8894 4.1: only PKIOperation is POSTed; the others exist for GET
$r = $t->curl('POST', "$base/scep?operation=GetCACert", data => 'x');
is($r->{code}, 405, 'POST GetCACert: 405');
is($r->{headers}{allow}, 'GET, HEAD', '  Allow: GET, HEAD');
like($r->{body}, qr/use GET/, '  saying to use GET');
$r = $t->curl('POST', "$base/scep?operation=GetCACaps", data => 'x');
is($r->{code}, 405, 'POST GetCACaps: 405');
$r = $t->curl('POST', "$base/scep?operation=Nope", data => 'x');
is($r->{code}, 400, 'POST of an unknown operation: 400');
$t->no_continue('PUT', "$base/scep?operation=PKIOperation", 405, 'PUT');
$t->no_continue('POST', "$base/scep?operation=GetCACert", 405,
                'POST GetCACert');

# a percent-encoded operation is the operation
$r = $t->curl('GET', "$base/scep?operation=Get%43A%43aps");
is($r->{code}, 200, 'operation=Get%43A%43aps: GetCACaps');
like($r->{body}, qr/POSTPKIOperation/, '  its capabilities');
for my $bad ('Get%4', 'GetCACaps%', 'GetCACaps%4', 'GetCA%4ZCaps',
             'GetCACaps%00') {
    $r = $t->curl('GET', "$base/scep?operation=$bad");
    is($r->{code}, 400, "operation=$bad (a broken or foreign escape): 400");
}
# an escaped line break reaches the log as sent: no line of its own
$r = $t->curl('GET', "$base/scep?operation=x%0A2026/01/01%2000:00:00%20"
                     . '%5Bemerg%5D%20forged');
is($r->{code}, 400, 'operation with an escaped line break: 400');
unlike(slurp($t->error_log) // '', qr/^2026\/01\/01 00:00:00 \[emerg\] forged/m,
       '  no forged line in the error log');
like(slurp($t->error_log) // '', qr/unknown operation "x%0A2026/,
     '  the operation logged as sent');

# --- CertRep FAILUREs --------------------------------------------------------

fails('bad signature', req(challenge => 'demo', corrupt => 'sig'), 1,
      log => qr/badMessageCheck.*signature does not verify/);
fails('messageDigest mismatch', req(challenge => 'demo',
                                    corrupt => 'digest'), 1);
fails('corrupt ciphertext', req(challenge => 'demo', corrupt => 'content'),
      1, log => qr/cannot decrypt messageData/);
fails('MD5 digest', req(challenge => 'demo', digest => 'md5'), 0,
      log => qr/badAlg.*digest algorithm/);
fails('single DES where not accepted', req(challenge => 'x', cipher => 'des'),
      0, path => '/scep-strict', log => qr/single DES/);
fails('unknown messageType 99', req(challenge => 'demo', type => 99), 2,
      log => qr/messageType 99 is not supported/);
fails('UpdateReq (18) is not served', req(challenge => 'demo', type => 18),
      2);
fails('wrong challenge', req(challenge => 'nope'), 2,
      log => qr/wrong.*challenge/);
fails('no challenge', req(), 2, log => qr/no challengePassword/);
fails('transactionID not the key hash', req(challenge => 'demo',
                                            tid => 'chosen-by-me'), 2,
      log => qr/not a hash of the request's public key/);
fails('signingTime three days old', req(challenge => 'demo',
                                        'signing-time' => -3 * 86400), 3,
      log => qr/badTime/);
{
    my $k1024 = key('k1024', 1024);
    fails('RSA-1024 key (template forbids)',
          req(key => $k1024, challenge => 'demo'), 2, key => $k1024);
}
fails('PKCSReq signer holds another key',
      req(challenge => 'demo', signkey => $k2), 1, key => $k2);
fails('PKCSReq signed with a CA-issued (not self-signed) certificate',
      req(challenge => 'demo', cert => $issued, signkey => $k1), 2,
      cert => $issued);
{
    # encrypted to another RSA certificate than the RA's
    my $other = "$dir/other.pem";
    run_cmd(['openssl', 'req', '-x509', '-key', $k2, '-subj', '/CN=other',
             '-days', '1', '-out', $other]);
    fails('not encrypted to the RA', req(challenge => 'demo', rcpt => $other),
          1, log => qr/not encrypted to the RA/);
}

# one-time challenges
my $once = challenge('{"ttl": 120}');
$f = req(cn => 'once-1', challenge => $once);
$h = rep(send_msg($f, '/scep-strict'), $f);
is($h->{status}, 0, 'one-time challenge: first use enrolls');
fails('one-time challenge replayed', req(cn => 'once-2', challenge => $once),
      2, path => '/scep-strict', log => qr/wrong, expired or used/);

my $bound = challenge('{"ttl": 120, "cn": "bound-dev", '
                      . '"template": "scep"}');
fails('challenge bound to another CN',
      req(cn => 'other-dev', challenge => $bound), 2, path => '/scep-strict',
      log => qr/bound to another subject CN/);
$f = req(cn => 'bound-dev', challenge => $bound);
$h = rep(send_msg($f, '/scep-strict'), $f);
is($h->{status}, 0, 'bound challenge: kept after the refusal, then used');
# a CSR of our own (openssl req): subject lines, challenge, optional SAN
# ($mask: the string_mask, e.g. MASK:0x800 for BMPStrings)
sub csr_file {
    my ($name, $key, $dn, $pw, $san, $mask) = @_;
    my $cfg = "$dir/$name.cnf";
    spew($cfg, "[req]\ndistinguished_name=dn\nattributes=at\nprompt=no\n"
         . ($mask ? "string_mask=$mask\n" : '')
         . ($san ? "req_extensions=ext\n[ext]\nsubjectAltName=$san\n" : '')
         . "[dn]\n$dn\n[at]\nchallengePassword=$pw\n");
    my ($rc, $o, $e) = run_cmd(['openssl', 'req', '-new', '-key', $key,
        '-config', $cfg, '-outform', 'DER', '-out', "$dir/$name.csr"]);
    die "openssl req: $e" if $rc;
    return "$dir/$name.csr";
}

# bound to a CN: a second CN is refused (it would be in the certificate,
# and some verifiers read the last one); bound to SANs: exactly those
{
    my $kb = key('kbind');
    my $c = challenge('{"ttl": 120, "cn": "bound2-dev"}');
    fails('challenge bound to a CN, the CSR has a second CN',
          req(key => $kb, csr => csr_file('twocn', $kb,
              "0.CN=bound2-dev\n1.CN=evil.example.com", $c)), 2,
          key => $kb, path => '/scep-strict',
          log => qr/bound to another subject CN/);
    $c = challenge('{"ttl": 120, "san": "DNS:dev1.example.com"}');
    fails('challenge bound to a SAN, the CSR names another one too',
          req(key => $kb, csr => csr_file('xsan', $kb, 'CN=dev1', $c,
              'DNS:dev1.example.com,DNS:www.bank.example')), 2,
          key => $kb, path => '/scep-strict',
          log => qr/names SANs the challenge is not bound to/);
    # a binding that names one SAN twice binds just that one
    my $c2 = challenge('{"ttl": 120, "san": "DNS:dev1.example.com,'
                       . 'DNS:DEV1.example.com"}');
    fails('challenge bound to a SAN twice, the CSR names another one too',
          req(key => $kb, csr => csr_file('xsan2', $kb, 'CN=dev1', $c2,
              'DNS:dev1.example.com,DNS:www.bank.example')), 2,
          key => $kb, path => '/scep-strict',
          log => qr/names SANs the challenge is not bound to/);
    $f = req(key => $kb, csr => csr_file('oksan2', $kb, 'CN=dev1', $c2,
                                         'DNS:dev1.example.com'));
    $h = rep(send_msg($f, '/scep-strict'), $f, $kb);
    is($h->{status}, 0, '... and with just that SAN: enrolled');
    $f = req(key => $kb, csr => csr_file('oksan', $kb, 'CN=dev1', $c,
                                         'DNS:dev1.example.com'));
    $h = rep(send_msg($f, '/scep-strict'), $f, $kb);
    is($h->{status}, 0, '... with exactly the bound SAN: enrolled');
}

# --- Windows and NDES-era clients --------------------------------------------

# RSAES-OAEP key transport (Intune/MDM clients on Windows), the envelope
# made by openssl cms: default parameters (SHA-1, MGF1-SHA1) and SHA-256;
# the CertRep's envelope comes back with RSAES-OAEP and the same hashes
# (a client that chose OAEP may not be able to use v1.5), read by openssl
# cms: the EnvelopedData out of the SignedData, printed, decrypted
{
    my $ko = key('koaep');
    my $n = 0;
    my $env = sub {
        my ($csr, @keyopt) = @_;
        my $out = "$dir/oaep-" . ++$n . '.env';
        my ($rc, $o, $e) = run_cmd(['openssl', 'cms', '-encrypt', '-binary',
            '-in', $csr, '-outform', 'DER', '-out', $out, '-aes128',
            '-recip', $ra, map { ('-keyopt', $_) } @keyopt]);
        die "openssl cms: $e" if $rc;
        return $out;
    };
    # (a broken RSA block gets a random content key, RFC 3218 2.3.2: its
    # content decrypts to garbage with a valid CBC padding about one time
    # in 256, and the garbage is then no CSR; either is one line)
    my $garbled = qr/cannot decrypt messageData|CSR is not a DER PKCS#10/;
    my $mal = sub { scalar(() = (slurp($t->error_log) // '')
                               =~ /$garbled/g) };
    # (its print, the certificates in it or the error)
    my $reply_env = sub {
        my ($r, $key) = @_;
        my ($rf, $ef, $if) = map { "$dir/oaep-rep-$n.$_" } qw(der env in);
        spew($rf, $r->{body});
        my ($rc, $o, $e) = run_cmd(['openssl', 'cms', '-verify', '-noverify',
            '-binary', '-inform', 'DER', '-in', $rf, '-out', $ef]);
        return ('', "cms -verify: $e") if $rc;
        my (undef, $p) = run_cmd(['openssl', 'cms', '-cmsout', '-print',
                                  '-inform', 'DER', '-in', $ef]);
        ($rc, $o, $e) = run_cmd(['openssl', 'cms', '-decrypt', '-binary',
            '-inform', 'DER', '-in', $ef, '-inkey', $key, '-out', $if]);
        return ($p, "cms -decrypt: $e") if $rc;
        ($rc, $o, $e) = run_cmd(['openssl', 'pkcs7', '-inform', 'DER',
                                 '-in', $if, '-print_certs']);
        return ($p, $rc ? "pkcs7: $e" : $o);
    };
    my @oaep = (['OAEP SHA-1', 'rsa_padding_mode:oaep'],
                ['OAEP SHA-256', 'rsa_padding_mode:oaep',
                 'rsa_oaep_md:sha256', 'rsa_mgf1_md:sha256']);
    for my $o (@oaep) {
        my ($name, @ko) = @$o;
        my $csr = csr_file('oaep' . ++$n, $ko, "CN=oaep-$n", 'demo');
        my $cn = "oaep-$n";
        my $e = $env->($csr, @ko);
        my ($rc, $p) = run_cmd(['openssl', 'cms', '-cmsout', '-print',
                                '-inform', 'DER', '-in', $e]);
        like($p, qr/algorithm: rsaesOaep/, "$name: openssl cms made an "
             . 'OAEP envelope');
        if ($name =~ /256/) {
            like($p, qr/OBJECT\s+:sha256.*:mgf1.*OBJECT\s+:sha256/s,
                 "$name: hash and MGF1 hash SHA-256");
        } else {
            unlike($p, qr/:sha\d/, "$name: the default hashes");
        }
        $f = req(key => $ko, csr => $csr, envelope => $e);
        $r = send_msg($f);
        $h = rep($r, $f, $ko);
        is($h->{status}, 0, "$name key transport: SUCCESS")
            or diag($h->{raw});
        my ($vok, $vout) = $t->verify_chain($h->{file} // '/nonexistent');
        ok($vok, "$name: the certificate verifies") or diag($vout);
        is($h->{kt}, 'RSAES-OAEP', "$name: the reply's key transport is "
           . 'RSAES-OAEP too') or diag($h->{raw});
        my ($rp, $rcerts) = $reply_env->($r, $ko);
        like($rp, qr/algorithm: rsaesOaep/, "$name: openssl cms reads an "
             . 'OAEP RecipientInfo in the reply');
        unlike($rp, qr/rsaEncryption/, "$name: ... and no v1.5 one");
        if ($name =~ /256/) {
            like($rp, qr/OBJECT\s+:sha256.*:mgf1.*OBJECT\s+:sha256/s,
                 "$name: the reply's hash and MGF1 hash SHA-256");
        } else {
            unlike($rp, qr/:sha\d/, "$name: the reply's default hashes");
        }
        like($rcerts, qr/subject=.*CN\s*=\s*$cn\n/, "$name: openssl cms "
             . 'decrypts the reply to the issued certificate')
            or diag($rcerts);

        # a broken OAEP block fails as a broken PKCS#1 v1.5 one does
        my $before = $mal->();
        $csr = csr_file('oaep' . ++$n, $ko, "CN=oaep-$n", 'demo');
        fails("$name, a broken RSA block",
              req(key => $ko, csr => $csr, envelope => $env->($csr, @ko),
                  corrupt => 'key'), 1, key => $ko);
        is($mal->(), $before + 1, "$name, a broken RSA block: logged as "
           . 'a content that does not decrypt');
    }
    my $before = $mal->();
    fails('PKCS#1 v1.5, a broken RSA block',
          req(key => $ko, csr => csr_file('oaep' . ++$n, $ko, "CN=oaep-$n",
              'demo'), corrupt => 'key'), 1, key => $ko);
    is($mal->(), $before + 1, 'PKCS#1 v1.5, a broken RSA block: logged the '
       . 'same way');

    my $csr = csr_file('oaep' . ++$n, $ko, "CN=oaep-$n", 'demo');
    fails('OAEP with a label',
          req(key => $ko, csr => $csr,
              envelope => $env->($csr, 'rsa_padding_mode:oaep',
                                 'rsa_oaep_label:6c6162656c')), 0,
          key => $ko, log => qr/badAlg.*RSAES-OAEP label not supported/);
    fails('OAEP with SHA-224',
          req(key => $ko, csr => $csr,
              envelope => $env->($csr, 'rsa_padding_mode:oaep',
                                 'rsa_oaep_md:sha224')), 0,
          key => $ko, log => qr/badAlg.*unsupported RSAES-OAEP hash/);
}

# a challengePassword as a BMPString (openssl req, string_mask): the
# static and a one-time challenge enroll; another one is a wrong
# challenge, not a malformed one
{
    my $kb = key('kbmp');
    my $bmp = 'MASK:0x800';
    my $csr = csr_file('bmp1', $kb, 'CN=bmp-dev', 'demo', undef, $bmp);
    my ($rc, $p) = run_cmd(['openssl', 'asn1parse', '-inform', 'DER', '-in',
                            $csr]);
    like($p, qr/:challengePassword\s*\n.*SET\s*\n.*BMPSTRING/,
         'BMPString challenge: openssl req made one');
    $f = req(key => $kb, csr => $csr);
    $h = rep(send_msg($f), $f, $kb);
    is($h->{status}, 0, 'the static challenge as a BMPString: SUCCESS')
        or diag($h->{raw});
    my $once = challenge('{"ttl": 120}');
    $f = req(key => $kb, csr => csr_file('bmp2', $kb, 'CN=bmp-dev2', $once,
                                         undef, $bmp));
    $h = rep(send_msg($f, '/scep-strict'), $f, $kb);
    is($h->{status}, 0, 'a one-time challenge as a BMPString: SUCCESS')
        or diag($h->{raw});
    my $count = sub { my ($re) = @_;
                      scalar(() = (slurp($t->error_log) // '') =~ /$re/g) };
    my ($mal, $wrong) = (qr/malformed challengePassword/,
                         qr/\(badRequest\): wrong[^\n]*challenge/);
    my @before = ($count->($mal), $count->($wrong));
    fails('another challenge as a BMPString',
          req(key => $kb, csr => csr_file('bmp3', $kb, 'CN=bmp-dev3',
                                          'nope', undef, $bmp)), 2,
          key => $kb);
    is($count->($wrong), $before[1] + 1, '... logged as a wrong challenge');
    is($count->($mal), $before[0], '... not as a malformed one');
}

# a dNSName with an "xn--" label that is no IDNA2008 A-label (RFC 5891
# 4.2.3.1), as ACME newOrder and EST refuse it: badRequest; a valid
# A-label enrolls
{
    my $ki = key('kidna');
    fails('dNSName with a bogus xn-- label',
          req(key => $ki, csr => csr_file('idna', $ki, 'CN=idn-dev', 'demo',
              'DNS:xn--zz.example.com')), 2,
          key => $ki, log => qr/"xn--zz\.example\.com": an "xn--" label that/);
    $f = req(key => $ki, csr => csr_file('idnaok', $ki, 'CN=idn-dev',
                                         'demo', 'DNS:xn--bcher-kva.example'));
    $h = rep(send_msg($f), $f, $ki);
    is($h->{status}, 0, '... a valid A-label: enrolled') or diag($h->{raw});
}

# a one-time challenge taken by a request that then issues nothing (the
# issuing key's token is away: 503) is given back, so the client's retry
# enrolls with it
{
    my ($tokendir) = (slurp($t->softhsm_conf) // '')
        =~ /^\s*directories\.tokendir\s*=\s*(\S+)\s*$/m;
    my $c = challenge('{"ttl": 120}');
    $f = req(cn => 'give-dev', challenge => $c);
    my $before = records();
    rename($tokendir, "$tokendir.away") or die "rename: $!";
    $r = send_msg($f, '/scep-strict');
    rename("$tokendir.away", $tokendir) or die "rename back: $!";
    is($r->{code}, 503, 'one-time challenge, the token away: 503');
    is(records(), $before, '... nothing issued');
    like(slurp($t->error_log) // '', qr/given back for a retry/,
         '... the challenge given back (error log)');
    # the core reopens the token by itself: after a failed reopen it
    # answers 503 at once for a short backoff, then reopens
    $h = {};
    for (1 .. 30) {
        my $rr = send_msg($f, '/scep-strict');
        if ($rr->{code} == 200) {
            $h = rep($rr, $f);
            last;
        }
        sleep 0.5;
    }
    is($h->{status}, 0, '... the retry enrolls with the same challenge')
        or diag($h->{raw});
}

# HEAD would issue a certificate nobody sees: 405
{
    my $before = records();
    my $m = "$dir/head.b64";
    run_cmd([$tool, 'req', '--rcpt', "$pki/ra.pem", '--key', $k1, '--out',
             $m, '--cn', 'head-dev', '--challenge', 'demo', '--b64']);
    $r = $t->curl('HEAD', "$base/scep?operation=PKIOperation",
                  extra => ['-G', '--data-urlencode', "message\@$m", '-I']);
    is($r->{code}, 405, 'HEAD of PKIOperation: 405');
    is($r->{headers}{allow}, 'GET, POST', '  Allow: GET, POST');
    is(records(), $before, '... nothing issued');
}

my $tbound = challenge('{"ttl": 120, "template": "server"}');
fails('challenge bound to another template',
      req(cn => 'x', challenge => $tbound), 2, path => '/scep-strict');
$r = $t->curl('POST', "$admin/scep/challenges", user => 'admin:admin',
              data => '{"ttl": "x"}');
is($r->{code}, 400, 'admin: bad ttl: 400');
$r = $t->curl('POST', "$admin/scep/challenges", data => '{}');
is($r->{code}, 401, 'admin: no credentials: 401');

$t->stop_all;
done_testing();
