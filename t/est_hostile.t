#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# EST with hostile or wrong input: every request gets the protocol's error
# and no state changes in Redis.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 qw(encode_base64);
use PKITest;

my $t = PKITest->new;
$t->start_redis;
$t->start_nginx;

# one good enrollment first, so Redis holds a baseline
my ($good) = $t->make_csr('good', subj => '/CN=baseline');
my $r = $t->est_post('simpleenroll', $good);
is($r->{code}, 200, 'baseline enrollment') or diag($r->{body});

my @keys0 = $t->state_keys;
my @certs0 = $t->redis_keys('pki:*cert:*');

sub err_ok {
    my ($name, $r, $code, $re) = @_;
    is($r->{code}, $code, "$name: $code") or diag("$r->{head}\n$r->{body}");
    if ($code == 400 || $code == 413 || $code == 415) {
        ok(length($r->{body}) > 0 && length($r->{body}) < 512,
           "$name: short text body") or diag($r->{body});
        like($r->{headers}{'content-type'} // '', qr{^text/plain}i,
             "$name: text/plain");
        unlike($r->{body}, qr/BEGIN|PRIVATE|<html/i, "$name: plain text");
    }
    unlike($r->{body}, qr/BEGIN|PRIVATE|pkcs11:|pin/i, "$name: no secrets");
    like($r->{body}, $re, "$name: body names the rule") if $re;
}

err_ok('wrong Content-Type',
       $t->est_post('simpleenroll', $good, ctype => 'text/plain'), 415);
err_ok('bad base64',
       $t->est_post('simpleenroll', '', raw => "!!!not*base64\$\$\$\n"), 400);
err_ok('bad DER',
       $t->est_post('simpleenroll', "\x30\x82\x01\x00garbage-that-is-not-der"),
       400);

# a CSR whose signature is broken (last byte of the signature flipped)
my $bad = $good;
substr($bad, -1, 1) = chr(ord(substr($bad, -1, 1)) ^ 0x01);
err_ok('broken CSR signature', $t->est_post('simpleenroll', $bad), 400);

# over 64 KiB (Content-Length): the module's text error, not nginx's
# HTML page, and the connection is not kept
$r = $t->est_post('simpleenroll', '', raw => ('QUFB' x 17000) . "\n");
err_ok('body over 64 KiB', $r, 413, qr/larger than 65536 bytes/);
is(lc($r->{headers}{connection} // ''), 'close', '  Connection: close');

my ($weak) = $t->make_csr('weak', type => 'rsa', bits => 1024,
                          subj => '/CN=weak');
err_ok('RSA-1024', $t->est_post('simpleenroll', $weak), 400,
       qr/key|RSA|1024/i);

# RFC 5480: a P-256 key with explicit curve parameters is refused
{
    my $k = $t->dir . '/explicit.key';
    my $c = $t->dir . '/explicit.csr.der';
    my ($rc1) = run_cmd(['openssl', 'ecparam', '-name', 'prime256v1',
                         '-param_enc', 'explicit', '-genkey', '-noout',
                         '-out', $k]);
    my ($rc2) = run_cmd(['openssl', 'req', '-new', '-key', $k,
                         '-subj', '/CN=explicit', '-outform', 'DER',
                         '-out', $c]);
    ok($rc1 == 0 && $rc2 == 0, 'CSR with explicit EC parameters made');
    err_ok('explicit EC parameters', $t->est_post('simpleenroll', slurp($c)),
           400, qr/explicit/i);
}

my ($org) = $t->make_csr('org', subj => '/CN=dev/O=Evil Corp');
err_ok('forbidden subject attribute', $t->est_post('simpleenroll', $org), 400,
       qr/subject|O\b|organization/i);

my ($mail) = $t->make_csr('mail', subj => '/CN=dev',
                          san => 'email:dev@example.com');
err_ok('email SAN', $t->est_post('simpleenroll', $mail), 400,
       qr/email|SAN|rfc822/i);

# serverkeygen asking for its key encrypted (RFC 7030 4.4.1.1, 4.4.1.2):
# the server cannot, so it MUST end the request with an error, before a
# certificate is issued (the old answer was the key in the clear).  The
# CSRs are built here (DER by hand, signed with CryptX), since openssl req
# writes attributes as strings only.
sub tlv {
    my ($tag, $c) = @_;
    my $n = length $c;
    my $len = $n < 0x80 ? chr($n)
            : $n < 0x100 ? "\x81" . chr($n) : "\x82" . pack('n', $n);
    return chr($tag) . $len . $c;
}

sub csr_with_attr {
    my ($cn, $oid) = @_;
    require Crypt::PK::ECC;
    my $k = Crypt::PK::ECC->new;
    $k->generate_key('secp256r1');
    my $name = tlv(0x30, tlv(0x31, tlv(0x30, "\x06\x03\x55\x04\x03"
                                            . tlv(0x0c, $cn))));
    # Attribute { OID, SET { OCTET STRING (a key identifier) } }
    my $attr = tlv(0x30, $oid . tlv(0x31, tlv(0x04, 'kid-1')));
    my $cri = tlv(0x30, "\x02\x01\x00" . $name
                        . $k->export_key_der('public_short')
                        . tlv(0xa0, $attr));
    my $alg = tlv(0x30, "\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02");
    return tlv(0x30, $cri . $alg
                     . tlv(0x03, "\x00" . $k->sign_message($cri, 'SHA256')));
}

for my $case (
    ['DecryptKeyIdentifier', '1.2.840.113549.1.9.16.2.37',
     "\x06\x0b\x2a\x86\x48\x86\xf7\x0d\x01\x09\x10\x02\x25"],
    ['AsymmetricDecryptKeyIdentifier', '1.2.840.113549.1.9.16.2.54',
     "\x06\x0b\x2a\x86\x48\x86\xf7\x0d\x01\x09\x10\x02\x36"],
) {
    my ($name, $dotted, $oid) = @$case;
    my $csr = csr_with_attr("skg-$name", $oid);
    my ($rc, $out, $err) = run_cmd(['openssl', 'req', '-inform', 'DER',
                                    '-verify', '-noout', '-text'],
                                   stdin => $csr);
    ok($rc == 0 && "$out$err" =~ /verify OK/ && $out =~ /\Q$dotted\E/,
       "$name: the CSR verifies and carries $dotted") or diag("$out$err");
    my @c0 = $t->redis_keys('pki:*cert:*');
    $r = $t->est_post('serverkeygen', $csr);
    is($r->{code}, 501, "serverkeygen with $name: 501")
        or diag("$r->{head}\n$r->{body}");
    like($r->{headers}{'content-type'} // '', qr{^text/plain}i,
         "  text/plain");
    like($r->{body}, qr/encrypt.*not supported/i, '  says why');
    unlike($r->{body}, qr/PRIVATE|BEGIN|<html/i, '  no key, no HTML');
    is_deeply([sort $t->redis_keys('pki:*cert:*')], [sort @c0],
              '  no certificate recorded');
}
like(slurp($t->error_log) // '',
     qr/\[info\].*est: serverkeygen from \S+ failed: encryption of the/,
     'the refusal is logged (info)');

# authentication
$r = $t->est_post('simpleenroll', $good, user => undef);
is($r->{code}, 401, 'no credentials: 401');
like($r->{headers}{'www-authenticate'} // '', qr/^Basic/i,
     'no credentials: WWW-Authenticate');
is($r->{headers}{'content-length'}, '0', 'no credentials: Content-Length 0');
is($r->{body}, '', 'no credentials: empty body');

$r = $t->est_post('simpleenroll', $good, user => 'demo:wrong');
is($r->{code}, 401, 'wrong password: 401');
is($r->{body}, '', 'wrong password: empty body');

# methods, unknown operations and labels
$r = $t->curl('GET', $t->est_url('simpleenroll'), user => 'demo:demo');
is($r->{code}, 405, 'GET simpleenroll: 405');
# RFC 9110 15.5.6: a 405 MUST name the methods the resource supports
is($r->{headers}{allow}, 'POST', '  Allow: POST');
like($r->{headers}{'content-type'} // '', qr{^text/plain}i, '  text/plain');
for my $case (['POST', 'cacerts'], ['PUT', 'csrattrs']) {
    my ($m, $op) = @$case;
    $r = $t->curl($m, $t->est_url($op), user => 'demo:demo', data => 'x');
    is($r->{code}, 405, "$m $op: 405");
    is($r->{headers}{allow}, 'GET, HEAD', '  Allow: GET, HEAD');
}
$r = $t->curl('HEAD', $t->est_url('serverkeygen'), user => 'demo:demo',
              extra => ['--head']);
is($r->{code}, 405, 'HEAD serverkeygen: 405');
is($r->{headers}{allow}, 'POST', '  Allow: POST');

$r = $t->curl('GET', $t->est_url('nosuchop'), user => 'demo:demo');
is($r->{code}, 404, 'unknown operation: 404');
$t->no_continue('POST', $t->est_url('nosuchop'), 404,
                'a body to an unknown operation', user => 'demo:demo');
$r = $t->est_post('simpleenroll', $good, label => 'nosuchlabel');
is($r->{code}, 404, 'unknown label: 404');

# A CN is what TLS clients match when there is no dNSName: a wildcard CN
# under a template without "san dns ... wildcard", and a DNS-name CN of a
# server certificate, go through the template's DNS rules
my ($wcn) = $t->make_csr('wildcn', subj => '/CN=*.example.com');
err_ok('wildcard CN, no SAN, server label',
       $t->est_post('simpleenroll', $wcn, label => 'server'), 400,
       qr/CN "\*\.example\.com".*wildcard/);
err_ok('wildcard CN, no SAN, device template',
       $t->est_post('simpleenroll', $wcn), 400, qr/wildcard/);

# a CSR whose subject is the RDNs given, [OID content, string tag, bytes]
# each (DER by hand: openssl req picks the string types itself)
sub csr_with_subject {
    my @rdn = @_;
    require Crypt::PK::ECC;
    my $k = Crypt::PK::ECC->new;
    $k->generate_key('secp256r1');
    my $name = tlv(0x30, join('', map {
        tlv(0x31, tlv(0x30, tlv(0x06, $_->[0]) . tlv($_->[1], $_->[2])))
    } @rdn));
    my $cri = tlv(0x30, "\x02\x01\x00" . $name
                        . $k->export_key_der('public_short') . "\xa0\x00");
    my $alg = tlv(0x30, "\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02");
    return tlv(0x30, $cri . $alg
                     . tlv(0x03, "\x00" . $k->sign_message($cri, 'SHA256')));
}

my $CN = "\x55\x04\x03";
my $EMAIL = "\x2a\x86\x48\x86\xf7\x0d\x01\x09\x01";

# a CN that shows as "dev1exe.jpg" (U+202E reverses what follows)
err_ok('CN with U+202E',
       $t->est_post('simpleenroll', csr_with_subject(
           [$CN, 0x0c, "dev\xe2\x80\xae1gpj.exe"])),
       400, qr/CN has an invalid value/);

# a dNSName, or a server certificate's CN, with an "xn--" label that is
# no IDNA2008 A-label (RFC 5891 4.2.3.1), as ACME newOrder refuses them;
# a DNS-name CN with white space at an end,
# which name comparison drops (RFC 4518 2.6.1), or with U+FF0E for a dot,
# which IDNA takes for one, or with letters IDNA maps to ASCII ones
my ($idn) = $t->make_csr('idnsan', subj => '/CN=idn-dev',
                         san => 'DNS:xn--zz.example.com');
err_ok('dNSName with a bogus xn-- label',
       $t->est_post('simpleenroll', $idn), 400,
       qr/"xn--zz\.example\.com": an "xn--" label that is not a valid/);
($idn) = $t->make_csr('idncn', subj => '/CN=www.XN--ZZ.example');
err_ok('server CN with a bogus xn-- label',
       $t->est_post('simpleenroll', $idn, label => 'server'), 400,
       qr/CN "www\.XN--ZZ\.example".*IDNA2008/);
err_ok('server CN with a trailing space',
       $t->est_post('simpleenroll', csr_with_subject(
           [$CN, 0x0c, 'login.bank.example ']), label => 'server'),
       400, qr/white space/);
err_ok('server CN with a leading U+00A0',
       $t->est_post('simpleenroll', csr_with_subject(
           [$CN, 0x0c, "\xc2\xa0login.bank.example"]), label => 'server'),
       400, qr/white space/);
err_ok('server CN with U+FF0E for its dots',
       $t->est_post('simpleenroll', csr_with_subject(
           [$CN, 0x0c, "login\xef\xbc\x8ebank\xef\xbc\x8eexample"]),
           label => 'server'),
       400, qr/full stop IDNA takes for '\.'/);
err_ok('server CN with fullwidth letters (UTS #46 maps them to ASCII)',
       $t->est_post('simpleenroll', csr_with_subject(
           [$CN, 0x0c, "\xef\xbd\x8c\xef\xbd\x8f\xef\xbd\x87\xef\xbd\x89"
                       . "\xef\xbd\x8e.bank.example"]), label => 'server'),
       400, qr/is the DNS name "login\.bank\.example" once IDNA maps/);

# nothing was written
is(join(' ', $t->state_keys), join(' ', @keys0),
   'no Redis key added or removed');
is_deeply([sort $t->redis_keys('pki:*cert:*')], [sort @certs0],
          'no new certificate keys in Redis');

# nginx still serves
$r = $t->est_post('simpleenroll', $good);
is($r->{code}, 200, 'still enrolls after the hostile requests');

# a valid A-label, in any case, is issued as it came, and so is another
# label of the reserved "??--" form (private names such as db--primary:
# only ACME's newOrder refuses those)
{
    my ($ok) = $t->make_csr('idnok', subj => '/CN=idn-ok',
                            san => 'DNS:xn--bcher-kva.example,'
                                   . 'DNS:XN--80AK6AA92E.example,'
                                   . 'DNS:db--primary.example');
    $r = $t->est_post('simpleenroll', $ok);
    is($r->{code}, 200, 'dNSNames with valid A-labels: 200')
        or diag($r->{body});
    my ($rc, $out) = run_cmd(['openssl', 'x509', '-noout', '-ext',
                              'subjectAltName'],
                             stdin => $t->p7_to_pem($r->{body}) // '');
    like($out, qr/DNS:xn--bcher-kva\.example,\ DNS:XN--80AK6AA92E\.example,
                  \ DNS:db--primary\.example/x,
         '  issued with them') or diag($out);
}

# a template that copies emailAddress: a BMPString or T61String one that
# an IA5String cannot hold is the client's error (400), not the server's
# (it was a 500, "cannot copy subject attribute"); and URI SANs: an
# "xn--" label in a URI's host must be an IDNA2008 A-label
{
    require Encode;
    my $conf = $t->render_conf;
    $conf =~ s{(pki_template device \{\n)}
              {$1        subject emailAddress copy;\n        san uri copy;\n}
        or die 'no device template';
    $t->stop_nginx;
    $t->start_nginx($conf);
    my @k0 = $t->state_keys;
    my @c0 = $t->redis_keys('pki:*cert:*');
    my $cn = [$CN, 0x0c, 'mail-dev'];
    for my $c (['BMPString', 0x1e,
                Encode::encode('UTF-16BE', "d\x{e9}\@x.example")],
               ['T61String', 0x14, "d\xe9\@x.example"]) {
        err_ok("$c->[0] emailAddress with U+00E9",
               $t->est_post('simpleenroll',
                            csr_with_subject($cn, [$EMAIL, $c->[1], $c->[2]])),
               400, qr/emailAddress has an invalid value/);
    }
    my ($uri) = $t->make_csr('urisan', subj => '/CN=uri-dev',
                             san => 'URI:https://api.xn--zz.example/v1');
    err_ok('URI SAN whose host has a bogus xn-- label',
           $t->est_post('simpleenroll', $uri), 400,
           qr/"https:\/\/api\.xn--zz\.example\/v1": its host has an "xn--"/);
    is(join(' ', $t->state_keys), join(' ', @k0), '  no Redis key added');
    is_deeply([sort $t->redis_keys('pki:*cert:*')], [sort @c0],
              '  no certificate recorded');
    unlike(slurp($t->error_log) // '', qr/cannot copy subject attribute/,
           '  no internal error logged');

    # ASCII in a BMPString: issued as an IA5String (RFC 5280)
    $r = $t->est_post('simpleenroll', csr_with_subject(
        $cn, [$EMAIL, 0x1e, Encode::encode('UTF-16BE', 'dev@x.example')]));
    is($r->{code}, 200, 'BMPString emailAddress of ASCII: 200')
        or diag($r->{body});
    my $pem = $t->p7_to_pem($r->{body});
    my ($rc, $out) = run_cmd(['openssl', 'x509', '-noout', '-subject',
                              '-nameopt', 'RFC2253,show_type'],
                             stdin => $pem // '');
    like($out, qr/emailAddress=IA5STRING:dev\@x\.example/,
         '  issued as an IA5String') or diag($out);

    # a valid A-label in a URI's host, and one only in its path: issued
    ($uri) = $t->make_csr('uriok', subj => '/CN=uri-ok',
                          san => 'URI:https://api.xn--bcher-kva.example'
                                 . '/xn--zz');
    $r = $t->est_post('simpleenroll', $uri);
    is($r->{code}, 200, 'URI SAN with a valid A-label: 200')
        or diag($r->{body});
    ($rc, $out) = run_cmd(['openssl', 'x509', '-noout', '-ext',
                           'subjectAltName'],
                          stdin => $t->p7_to_pem($r->{body}) // '');
    like($out, qr{URI:https://api\.xn--bcher-kva\.example/xn--zz},
         '  issued with it') or diag($out);
}

$t->stop_nginx;
done_testing();
