#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A delegated OCSP responder certificate that expires before the answer's
# nextUpdate would otherwise come: the answer it signs ends (nextUpdate,
# Cache-Control max-age, Expires) no later than the certificate's notAfter,
# and the response cache does not serve it past then.  The responder
# certificate is made with `openssl ca -enddate` some 15 s ahead (45 s on
# a machine too slow to make the first requests 5 s before that); requests
# keep the cache busy until it expired, and then the answers (for the same
# cacheable GET request) are new ones, signed by the CA key, that `openssl
# ocsp` verifies.  Before, the answer said nextUpdate = now + 1 h, and the
# cache served it, signed by an expired responder, until then.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(sleep);
use Time::Piece;
use PKITest;

my $t = PKITest->new;
$t->start_redis;
$t->start_nginx;
my $pki = $t->pki;
my $dir = $t->dir;
my $url = 'http://127.0.0.1:' . $t->http_port . '/ocsp';
my @trust = ('-CAfile', "$pki/root.pem", '-verify_other', "$pki/issuing.pem");

sub ocsp { return $t->openssl_ocsp(@_) }

# "Dec  1 04:15:00 2026 GMT" as seconds since the epoch
sub gmt {
    my ($s) = @_;
    $s =~ s/\s+/ /g;
    return Time::Piece->strptime($s, '%b %d %H:%M:%S %Y GMT')->epoch;
}

# an HTTP date as seconds since the epoch
sub http_date {
    my ($s) = @_;
    return Time::Piece->strptime($s, '%a, %d %b %Y %H:%M:%S GMT')->epoch;
}

my ($csr) = $t->make_csr('exp-a', subj => '/CN=exp-a');
my $r = $t->est_post('simpleenroll', $csr);
is($r->{code}, 200, 'enrolled') or diag($r->{body});
my $a = $t->save_first_cert($t->p7_to_pem($r->{body}) // '', 'exp-a');
$t->give_up('enrollment failed') if !$a;

# --- the responder certificate: notAfter 15 s from now ----------------------

# The test waits for the notAfter, and the first requests must come more
# than 5 s before it: a short validity, and a longer one (a new
# certificate, nginx restarted) when this machine was too slow for it (a
# sanitizer build on a loaded runner).
my ($na, $end, $enc, $g1, $g1_t0, $g2, $left);
for my $try (1 .. 2) {
    my $secs = $try == 1 ? 15 : 45;
    $na = time + $secs;
    $t->responder_cert("resp$try", 'OCSP responder soon expired',
                       time - 3600, $na);
    ($end) = $t->x509_text("$dir/resp$try.pem")
        =~ /Not After\s*:\s*(.*?GMT)/;
    is(gmt($end // ''), $na, "its notAfter: $end ($secs s ahead)");

    my $conf = $t->render_conf;
    my $ind = ' ' x 12;
    my $add = "\n${ind}ocsp_responder_signer issuing $dir/resp$try.pem "
              . "$dir/resp$try.key;\n${ind}ocsp_responder_cache_header on;";
    $conf =~ s{(ocsp_responder issuing;)}{$1$add}
        or die 'no ocsp_responder in the config';
    $t->stop_nginx;
    $t->start_nginx($conf);

    # a cacheable GET request (no nonce)
    my $reqf = "$dir/req.der";
    my ($rc, $o) = ocsp('-issuer', "$pki/issuing.pem", '-cert', $a,
                        '-no_nonce', '-reqout', $reqf);
    is($rc, 0, 'request written') or diag($o);
    ($enc = encode_base64(slurp($reqf), ''))
        =~ s{([/+=])}{sprintf('%%%02X', ord($1))}ge;

    # the first two requests, checked below
    $g1_t0 = Time::HiRes::time();
    $g1 = $t->curl('GET', "$url/$enc");
    $g2 = $t->curl('GET', "$url/$enc");
    $left = $na - time;
    last if $left > 5;
    note(sprintf('the first requests came %.1f s before notAfter: again, '
                 . 'with a longer validity', $left));
}

sub check {
    my ($body) = @_;
    my $f = "$dir/resp-" . int(rand(1e9)) . '.der';
    spew($f, $body);
    my ($rc, $out) = ocsp('-respin', $f, '-issuer', "$pki/issuing.pem",
                          '-cert', $a, @trust, '-resp_text');
    return $out;
}

# --- before notAfter: signed by the responder, ends at its notAfter ----------

ok($left > 5, sprintf('requests made %.1f s before the responder expires',
                      $left))
    or $t->give_up('too slow to test: the responder expired already');
is($g1->{code}, 200, 'GET: 200');
my $out = check($g1->{body});
like($out, qr/\Q$a\E: good/, 'good') or diag($out);
like($out, qr/Response verify OK/, 'verifies');
like($out, qr/CN\s*=\s*OCSP responder soon expired/,
     'signed by the delegated responder (its certificate included)');
my ($next) = $out =~ /Next Update: (.*?GMT)/;
ok(defined $next && gmt($next) <= $na,
   'nextUpdate no later than the responder\'s notAfter ('
   . ($next // 'none') . " <= $end)") or diag($out);
# from the time the request was sent (the answer was made later), not the
# time of this check: on a loaded machine the checks before took more
# than the second of slack
my ($age) = ($g1->{headers}{'cache-control'} // '') =~ /max-age=(\d+)/;
ok(defined $age && $g1_t0 + $age <= $na + 1,
   'Cache-Control max-age ends by the responder\'s notAfter ('
   . ($age // 'none') . ' s)') or diag($g1->{head});
ok(http_date($g1->{headers}{expires} // 'Thu, 01 Jan 1970 00:00:00 GMT')
   <= $na, 'Expires no later than the responder\'s notAfter ('
   . ($g1->{headers}{expires} // 'none') . ')') or diag($g1->{head});
is($g2->{headers}{'x-ocsp-cache'}, 'HIT', 'the answer is cached meanwhile')
    or diag($g2->{head});

# --- after notAfter: not from the cache, signed by the CA key ----------------

# requests keep coming until then, so the zone's view of the revocations
# stays fresh (after an idle spell a request reads it anew and is answered
# fresh anyway) and the entry would be served for as long as it lives;
# then three requests made a second or more after notAfter
my ($hits, @late) = (0);
my $stop = $na + 30;
while (@late < 3 && time < $stop) {
    my $t0 = time;
    my $g = $t->curl('GET', "$url/$enc");
    $hits++ if ($g->{headers}{'x-ocsp-cache'} // '') eq 'HIT';
    push @late, $g if $t0 >= $na + 1;
    sleep 0.3;
}
note("$hits answers from the cache while waiting; " . scalar(@late)
     . ' requests after the responder expired');
ok(@late >= 2, 'requests made after the responder expired');

my $i = 0;
for my $g (@late) {
    $i++;
    is($g->{code}, 200, "after the responder expired, $i: 200");
    ok($g->{body} ne $g1->{body},
       "after the responder expired, $i: not the answer it signed ("
       . ($g->{headers}{'x-ocsp-cache'} // 'no cache header') . ')');
    $out = check($g->{body});
    like($out, qr/\Q$a\E: good/, "after the responder expired, $i: good")
        or diag($out);
    like($out, qr/Response verify OK/,
         "after the responder expired, $i: the answer verifies (CA key)")
        or diag($out);
    unlike($out, qr/CN\s*=\s*OCSP responder soon expired/,
           "after the responder expired, $i: its certificate left out");
}

$t->stop_nginx;
my $log = slurp($t->error_log) // '';
unlike($log, qr/\[(?:alert|crit|emerg)\]/, 'no alert/crit in the error log')
    or diag($log);

done_testing();
