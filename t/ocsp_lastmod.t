#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# OCSP GET validators: Last-Modified (thisUpdate) has one-second
# granularity, so a "good" and a "revoked" answer for one CertID produced
# in the same second share it.  A client that revalidates its "good" copy
# with If-Modified-Since alone must get the new answer (200, revoked),
# never 304; If-None-Match with the ETag (a hash of the DER) still gets
# 304 for an unchanged answer.  A location without the response cache
# answers from Redis at once, so the revocation lands within the second.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use MIME::Base64 qw(encode_base64);
use PKITest;

my $t = PKITest->new;
my $conf = $t->render_conf;
$conf =~ s{(\n(\s*)location /ocsp \{)}
          {\n$2location /ocsp-nc/ {\n$2    ocsp_responder issuing;\n$2}\n$1}
    or die 'no location /ocsp in the config';
$t->start_redis;
$t->start_nginx($conf);
my $pki = $t->pki;
my $dir = $t->dir;
my $base = 'http://127.0.0.1:' . $t->http_port;

sub get_url {
    my ($cert, $path) = @_;
    my $f = "$dir/req-" . int(rand(1e9)) . '.der';
    my ($rc, $out) = $t->openssl_ocsp('-issuer', "$pki/issuing.pem", '-cert',
                                      $cert, '-no_nonce', '-reqout', $f);
    die "openssl ocsp -reqout: $out" if $rc != 0;
    my $b64 = encode_base64(slurp($f), '');
    $b64 =~ s/([+\/=])/sprintf('%%%02X', ord $1)/ge;
    return "$base$path$b64";
}

sub status_in {
    my ($body) = @_;
    my $f = "$dir/resp-" . int(rand(1e9)) . '.der';
    spew($f, $body);
    my (undef, $out) = $t->openssl_ocsp('-respin', $f, '-resp_text',
                                        '-noverify');
    return $out =~ /Cert Status:\s*(\w+)/ ? $1 : 'none';
}

my ($same, $ok) = (0, 1);

for my $try (1 .. 3) {
    my $cert = $t->enroll_cn("lastmod-$try");
    $t->give_up('enrollment failed') if !$cert;
    my $serial = $t->x509_field($cert, 'serial');
    my $url = get_url($cert, '/ocsp-nc/');

    # at the start of a second: good, revoked, revalidated in that second
    sleep(1 - (time - int(time)) + 0.02);
    my $a = $t->curl('GET', $url);
    $t->redis('HSET', "pki:{ca:issuing}:cert:$serial", 'status', 'revoked',
              'reason', '1', 'revoked_at', int(time) - 60);
    my $lm = $a->{headers}{'last-modified'} // '';
    my $b = $t->curl('GET', $url, headers => ["If-Modified-Since: $lm"]);

    $ok &&= is($a->{code} . ' ' . status_in($a->{body}), '200 good',
               "try $try: first answer good");
    $ok &&= is($b->{code}, 200,
               "try $try: If-Modified-Since of the good answer: 200");
    $ok &&= is(status_in($b->{body}), 'revoked', "try $try: and revoked");

    if (($b->{headers}{'last-modified'} // '') eq $lm) {
        $same = 1;
        last;
    }
}

ok($same, 'the revoked answer had the good one\'s Last-Modified (the same '
   . 'second) at least once');

# an unchanged answer (the response cache gives the same DER; a new
# signature differs, ECDSA is randomized): If-None-Match with its ETag
# gets 304, If-Modified-Since alone the whole answer
my $cert = $t->enroll_cn('lastmod-etag');
my $url = get_url($cert, '/ocsp/');
my $a = $t->curl('GET', $url);
my $etag = $a->{headers}{etag} // '';
my $lm = $a->{headers}{'last-modified'} // '';
like($etag, qr/^"[0-9a-f]{40}"$/, 'ETag: a hash of the DER');
my $b = $t->curl('GET', $url, headers => ["If-None-Match: $etag"]);
is($b->{code}, 304, 'cached answer, If-None-Match its ETag: 304');
$b = $t->curl('GET', $url, headers => ["If-None-Match: $etag",
                                       "If-Modified-Since: $lm"]);
is($b->{code}, 304, 'and with its If-Modified-Since too: 304');
$b = $t->curl('GET', $url, headers => ["If-Modified-Since: $lm"]);
is($b->{code} . ' ' . status_in($b->{body}), '200 good',
   'If-Modified-Since alone: the whole answer');
is($b->{headers}{etag} // '', $etag, 'the same answer (ETag)');

# a POST (no validators: answered Cache-Control no-store) is answered
# whole whatever conditional headers come with it: nginx would take
# If-None-Match: * for a match (304, no body), and If-Match or
# If-Unmodified-Since without an ETag or Last-Modified for a failed one
# (412)
{
    my $f = "$dir/post-cond.der";
    my ($rc, $out) = $t->openssl_ocsp('-issuer', "$pki/issuing.pem",
                                      '-cert', $cert, '-no_nonce',
                                      '-reqout', $f);
    is($rc, 0, 'POST request written') or diag($out);
    for my $h ('If-None-Match: *', 'If-Match: "x"',
               'If-Unmodified-Since: Thu, 01 Jan 2026 00:00:00 GMT',
               "If-Modified-Since: $lm")
    {
        my $r = $t->curl('POST', "$base/ocsp", data_file => $f,
                         headers => ['Content-Type: application/ocsp-request',
                                     $h]);
        is($r->{code} . ' ' . status_in($r->{body}), '200 good',
           "POST with $h: the whole answer");
    }
}

$t->stop_nginx;
done_testing();
