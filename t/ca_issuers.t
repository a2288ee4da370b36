#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# The Authority Information Access caIssuers URL (RFC 5280 4.2.2.1):
# ca_issuers_url in pki_ca puts it beside the OCSP URL in the one AIA
# extension of what the CA issues, and location = /ca/issuing.crt
# { pki_ca_certificate issuing; } in the shared config serves the CA's
# certificate there as DER (application/pkix-cert): fetched from the
# certificate's own AIA, read by openssl x509 -inform DER, the CA's own,
# a chain built from it; cache headers, 304, HEAD, other methods 405;
# an unknown CA or a bad URL refused at nginx -t with file and line; a CA
# without ca_issuers_url issues no caIssuers entry.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use PKITest;

my $t = PKITest->new;
$t->start_redis;

# the Matter hierarchies, for the DAC at the end (when the module is built)
my $matter = -f "$PKITest::BUILD/ngx_http_matter_module.so";
$t->make_matter_pki($t->pki) if $matter;

my $base = $t->render_conf;
my $pki = $t->pki;
my $dir = $t->dir;
my $port = $t->http_port;

like($base, qr{\n\s*ca_issuers_url http://127\.0\.0\.1:$port/ca/issuing\.crt;},
     'the demo config: ca_issuers_url in pki_ca issuing');

$t->start_nginx($base);

# the AIA of the extensions, as openssl prints them: one extension
sub aia_text {
    my ($file) = @_;
    my $text = $t->x509_text($file) // '';
    my @n = $text =~ /Authority Information Access:/g;
    my ($aia) = $text
        =~ /Authority Information Access:\s*\n((?:\s{16,}\S.*\n)+)/;
    return (scalar @n, $aia // '', $text);
}

my $cert = $t->enroll_cn('aia-est') or $t->give_up('enrollment failed');

my ($n, $aia, $text) = aia_text($cert);
is($n, 1, 'one AIA extension') or diag($text);
like($aia, qr{OCSP - URI:http://127\.0\.0\.1:$port/ocsp\n},
     '  with the OCSP URL');
like($aia, qr{CA Issuers - URI:http://127\.0\.0\.1:$port/ca/issuing\.crt\n},
     '  and the CA Issuers URL');
like($aia, qr{OCSP - URI:.*\n.*CA Issuers - URI:}s, '  OCSP first');
my ($rc, $crit) = PKITest::run_cmd(['openssl', 'x509', '-in', $cert,
    '-noout', '-ext', 'authorityInfoAccess']);
unlike($crit, qr/critical/, '  not critical');

# the URL from the certificate's own AIA
my ($url) = $aia =~ m{CA Issuers - URI:(http://\S+)};
ok($url, "caIssuers names $url") or $t->give_up('no caIssuers URL');

my $ca_der = $t->x509_der("$pki/issuing.pem");
ok(length $ca_der > 100, 'the CA certificate as DER (openssl x509)');

my $r = $t->curl('GET', $url);
is($r->{code}, 200, 'GET: 200') or diag($r->{body});
is($r->{headers}{'content-type'}, 'application/pkix-cert',
   '  Content-Type application/pkix-cert');
is($r->{headers}{'content-length'}, length $ca_der, '  Content-Length');
like($r->{headers}{'cache-control'} // '',
     qr/^max-age=(\d+), public, no-transform$/, '  Cache-Control');
my ($age) = ($r->{headers}{'cache-control'} // '') =~ /max-age=(\d+)/;
ok(defined $age && $age > 0 && $age <= 86400, "  max-age $age: a day at "
   . 'most');
like($r->{headers}{etag} // '', qr/^"[0-9a-f]{32}"$/, '  ETag');
ok($r->{headers}{'last-modified'}, '  Last-Modified');
is($r->{headers}{'x-content-type-options'}, 'nosniff', '  nosniff');
spew("$dir/fetched.der", $r->{body});
my ($xrc, $xout, $xerr) = PKITest::run_cmd(['openssl', 'x509', '-inform',
    'DER', '-in', "$dir/fetched.der", '-noout', '-subject']);
is($xrc, 0, '  openssl x509 -inform DER reads it') or diag($xerr);
ok($r->{body} eq $ca_der, '  the issuing CA\'s certificate, byte for byte');

# an independent check of its use: the chain of the leaf built with the
# fetched certificate as the intermediate
($xrc, $xout, $xerr) = PKITest::run_cmd(['openssl', 'x509', '-inform',
    'DER', '-in', "$dir/fetched.der", '-out', "$dir/fetched.pem"]);
($xrc, $xout, $xerr) = PKITest::run_cmd(['openssl', 'verify', '-CAfile',
    "$pki/root.pem", '-untrusted', "$dir/fetched.pem", $cert]);
is($xrc, 0, '  openssl verify of the leaf through it: OK')
    or diag("$xout$xerr");

# the validators: the same again, and a 304 on them
my $r2 = $t->curl('GET', $url);
is($r2->{headers}{etag}, $r->{headers}{etag}, 'the ETag is stable');
is($r2->{headers}{'last-modified'}, $r->{headers}{'last-modified'},
   'Last-Modified is stable');
my $etag = $r->{headers}{etag} // '"none"';
$r2 = $t->curl('GET', $url, headers => ["If-None-Match: $etag"]);
is($r2->{code}, 304, 'If-None-Match: 304');
is($r2->{body}, '', '  no body');
$r2 = $t->curl('GET', $url, headers => ['If-None-Match: "other"']);
is($r2->{code}, 200, 'If-None-Match of another ETag: 200');
$r2 = $t->curl('GET', $url, headers => ['If-Modified-Since: '
                                         . $r->{headers}{'last-modified'}]);
is($r2->{code}, 304, 'If-Modified-Since: 304');

# HEAD: the same header, no body
$r2 = $t->curl('HEAD', $url, extra => ['--head']);
is($r2->{code}, 200, 'HEAD: 200');
is($r2->{headers}{'content-type'}, 'application/pkix-cert',
   '  Content-Type');
is($r2->{headers}{'content-length'}, length $ca_der, '  Content-Length');
is($r2->{headers}{etag}, $r->{headers}{etag}, '  ETag');
# (curl --head writes the header where the body goes)
(my $rest = $r2->{body}) =~ s/^HTTP\/.*?\r\n\r\n//s;
is($rest, '', '  no body');

# other methods: 405 with Allow, the module's text
for my $m ('POST', 'PUT', 'DELETE') {
    $r2 = $t->curl($m, $url, data => 'x', quiet => 1);
    is($r2->{code}, 405, "$m: 405");
    is($r2->{headers}{allow}, 'GET, HEAD', '  Allow: GET, HEAD');
    is($r2->{body}, "use GET or HEAD\n", '  text/plain, not nginx\'s page');
}

# the query string is ignored, another path under /ca/ is not served
$r2 = $t->curl('GET', "$url?x=1");
is($r2->{code}, 200, 'with a query string: 200');
$r2 = $t->curl('GET', "http://127.0.0.1:$port/ca/other.crt", quiet => 1);
is($r2->{code}, 404, 'another name under /ca/: 404');

# the plain HTTP server's other URLs are as before
is($t->curl('GET', "http://127.0.0.1:$port/crl/issuing.crl")->{code}, 200,
   '/crl/issuing.crl still 200');

# --- configuration errors at nginx -t --------------------------------------

sub conf_rejected {
    my ($name, $conf, $re) = @_;
    $re = qr/$re/ if !ref $re;          # qr// . qr//: a string
    my $file = $t->write_conf($conf, "$name.conf");
    my ($ok, $out) = $t->nginx_test($file);
    ok(!$ok, "$name: nginx -t fails");
    like($out, $re, "  [emerg] names it") or diag($out);
    like($out, qr/\[emerg\].* in \Q$file\E:\d+/, '  with file and line')
        or diag($out);
}

{
    (my $c = $base) =~ s/pki_ca_certificate issuing;/pki_ca_certificate nosuch;/
        or die 'no pki_ca_certificate';
    conf_rejected('unknown-ca', $c,
                  qr/\[emerg\] \d+#\d+: unknown CA "nosuch" \(declare /);
}
{
    (my $c = $base) =~ s{(pki_ca_certificate issuing;)}{$1\n            $1}
        or die 'no pki_ca_certificate';
    conf_rejected('duplicate', $c,
                  qr/\[emerg\] \d+#\d+: "pki_ca_certificate" directive is /
                  . qr/duplicate/);
}
{
    (my $c = $base)
        =~ s{(pki_ca_certificate issuing;)}{$1\n            pki_crl;}
        or die 'no pki_ca_certificate';
    conf_rejected('two-handlers', $c,
                  qr/\[emerg\] \d+#\d+: "pki_crl": this location already /
                  . qr/has a content handler \("pki_ca_certificate" in /);
}
{
    (my $c = $base) =~ s{pki_ca_certificate issuing;}{pki_ca_certificate;}
        or die 'no pki_ca_certificate';
    conf_rejected('no-argument', $c,
                  qr/\[emerg\] \d+#\d+: invalid number of arguments in /
                  . qr/"pki_ca_certificate"/);
}
{
    (my $c = $base) =~ s{ca_issuers_url http://\S+;}
                         {ca_issuers_url ftp://127.0.0.1/ca/issuing.crt;}
        or die 'no ca_issuers_url';
    conf_rejected('ftp-url', $c,
                  qr/\[emerg\] \d+#\d+: "ca_issuers_url" in pki_ca: /
                  . qr/invalid URL "ftp:\/\/127\.0\.0\.1\/ca\/issuing\.crt" /
                  . qr/in "ca_issuers_url"/);
}
{
    (my $c = $base) =~ s{(ca_issuers_url http://\S+;)}{$1\n        $1}
        or die 'no ca_issuers_url';
    conf_rejected('duplicate-url', $c,
                  qr/\[emerg\] \d+#\d+: "ca_issuers_url" in pki_ca: /
                  . qr/"ca_issuers_url" is duplicate/);
}

# --- a CA without ca_issuers_url: no caIssuers entry -------------------------

{
    $t->stop_nginx;
    (my $c = $base) =~ s{\n\s*ca_issuers_url http://\S+;}{}
        or die 'no ca_issuers_url';
    # an if block in the location is answered by it too
    $c =~ s{(pki_ca_certificate issuing;)}
           {$1\n            if (\$arg_x) { add_header X-If 1 always; }}
        or die 'no pki_ca_certificate';
    $t->start_nginx($c);
    my $r = $t->curl('GET', "$url?x=1");
    ok($r->{code} == 200 && ($r->{headers}{'x-if'} // '') eq '1'
       && $r->{body} eq $ca_der, 'an if block of the location: the '
       . 'certificate') or diag("$r->{code} $r->{head}");
    my $plain = $t->enroll_cn('aia-plain');
    my ($n, $aia, $text) = aia_text($plain // '/nonexistent');
    is($n, 1, 'without ca_issuers_url: one AIA extension') or diag($text);
    like($aia, qr{OCSP - URI:http://127\.0\.0\.1:$port/ocsp},
         '  with the OCSP URL');
    unlike($text, qr/CA Issuers/, '  no CA Issuers entry');
    # the location still serves the certificate (it needs no URL)
    is($t->curl('GET', $url)->{code}, 200,
       '  /ca/issuing.crt still served');
}

# --- neither URL: no AIA at all ---------------------------------------------

{
    $t->stop_nginx;
    (my $c = $base) =~ s{\n\s*(?:ca_issuers|ocsp)_url http://\S+;}{}g;
    $t->start_nginx($c);
    my $bare = $t->enroll_cn('aia-none');
    my ($n, $aia, $text) = aia_text($bare // '/nonexistent');
    is($n, 0, 'neither URL: no AIA extension') or diag($text);
    like($text, qr/CRL Distribution Points/, '  (the CRL DP still there)');
}

# --- Matter: a DAC carries the AIA too ---------------------------------------

# The Matter DAC profile allows an AIA (not critical): with the PAI's
# ca_issuers_url the DAC has it, passes the attestation checks and stays
# under the Matter DER size limit (600 bytes).  With the OCSP URL as well
# this DAC would be larger than that: refused before signing, naming the
# rule (as with a long CRL URL, t/matter.t).
SKIP: {
    skip 'ngx_http_matter_module.so not built', 11 if !$matter;
    $t->stop_nginx;
    my $m = $t->pki . '/matter';
    (my $c = $base) =~ s{(\n\s*templates matter-dac;)}
        {$1
        ca_issuers_url http://127.0.0.1:$port/ca/matter-pai.crt;}
        or die 'no matter-pai';
    my $loc = "location = /ca/matter-pai.crt "
              . "{ pki_ca_certificate matter-pai; }";
    $c =~ s{(\n(\s*)location = /ca/issuing\.crt )}{\n$2$loc\n$1}
        or die 'no /ca/issuing.crt';
    $t->start_nginx($c);
    my ($csr) = $t->make_csr('aia-dac', subj => '/CN=aia dac');
    my $r = $t->est_post('simpleenroll', $csr, label => 'matter-dac');
    is($r->{code}, 200, 'Matter DAC through EST: 200') or diag($r->{body});
    my $pem = $t->p7_to_pem($r->{body});
    my $dac = $pem ? $t->save_first_cert($pem, 'aia-dac') : '/nonexistent';
    my ($n, $aia, $text) = aia_text($dac);
    is($n, 1, '  one AIA extension') or diag($text);
    like($aia, qr{^\s+CA\ Issuers\ -\ URI:http://127\.0\.0\.1:$port
                  /ca/matter-pai\.crt\n$}x,
         '  the PAI\'s CA Issuers URL alone');
    ok(length($t->x509_der($dac)) <= 600, '  within 600 bytes of DER');
    my ($rc, $out, $err) = PKITest::run_cmd(["$PKITest::BUILD/pkictl",
        'matter', 'verify-attestation', '--dac', $dac, '--pai', "$m/pai.pem",
        '--paa', "$m/paa.pem"]);
    is($rc, 0, '  pkictl matter verify-attestation') or diag("$out$err");
    ($rc, $out, $err) = PKITest::run_cmd(['openssl', 'verify', '-x509_strict',
        '-CAfile', "$m/paa.pem", '-untrusted', "$m/pai.pem", $dac]);
    is($rc, 0, '  openssl verify -x509_strict') or diag("$out$err");
    $r = $t->curl('GET', "http://127.0.0.1:$port/ca/matter-pai.crt");
    is($r->{code}, 200, '  the PAI at its URL: 200');
    ok($r->{body} eq $t->x509_der("$m/pai.pem"), '  the PAI\'s certificate');

    # with the OCSP URL too: over the size limit, refused before signing
    # (a device key of its own: the key above has its DAC, which a retry
    # of its CSR is answered with)
    ($csr) = $t->make_csr('aia-dac2', subj => '/CN=aia dac');
    $t->stop_nginx;
    $c =~ s{(\n\s*templates matter-dac;)}
        {$1\n        ocsp_url http://127.0.0.1:$port/ocsp;} or die;
    $t->start_nginx($c);
    my @before = $t->state_keys;
    $r = $t->est_post('simpleenroll', $csr, label => 'matter-dac',
                      quiet => 1);
    is($r->{code}, 400, 'a DAC with both URLs over 600 bytes: 400');
    like(slurp($t->error_log) // '', qr/larger than 600 bytes once signed/,
         '  the error log names the rule');
    is_deeply([ $t->state_keys ], \@before, '  nothing recorded');
}

$t->stop_nginx;

done_testing();
