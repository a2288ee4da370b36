#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# OCSP response cache (ocsp_responder_cache): a repeated request without a
# nonce is served from the shared-memory cache (identical bytes, X-OCSP-Cache
# HIT), POST and GET share the entry, a signed request stuffed with
# certificates gets its answer and a key, nonce requests are never cached, a
# revocation through the admin API invalidates it within 1.5 s on this
# nginx and on a second nginx sharing the Redis and the PKI, and with Redis
# down a cached good is still served while an uncached request gets
# tryLater.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(time sleep);
use PKITest;
use POSIX ();

my $t = PKITest->new;
$t->start_redis;

sub with_cache {
    my ($conf) = @_;
    # the shared config already caches (ocsp_responder_cache); add the
    # HIT/MISS header and an explicit check interval
    $conf =~ s{(ocsp_responder_cache zone=ocsp:\S+;)}
              {$1\n            ocsp_responder_cache_header on;\n            ocsp_responder_revgen_check 1s;}
        or die 'no cached ocsp location in the config';
    return $conf;
}

$t->start_nginx(with_cache($t->render_conf));

my $pki = $t->pki;
my $dir = $t->dir;
my $url = 'http://127.0.0.1:' . $t->http_port . '/ocsp';

sub enroll { return $t->enroll_cn(@_) }

sub ocsp { return $t->openssl_ocsp(@_) }

sub reqfile {
    my ($cert, $name, @extra) = @_;
    my $f = "$dir/$name.der";
    my ($rc, $out) = ocsp('-issuer', "$pki/issuing.pem", @$cert, @extra,
                          '-reqout', $f);
    is($rc, 0, "$name: request written") or diag($out);
    return $f;
}

sub post {
    my ($u, $f) = @_;
    return $t->curl('POST', $u, data => PKITest::slurp($f),
                    headers => ['Content-Type: application/ocsp-request']);
}

sub status_of {
    my ($body, $cert) = @_;
    my $f = "$dir/resp-" . int(rand(1e9)) . '.der';
    PKITest::spew($f, $body);
    my ($rc, $out) = ocsp('-respin', $f, '-issuer', "$pki/issuing.pem",
                          @$cert, '-CAfile', "$pki/root.pem",
                          '-verify_other', "$pki/issuing.pem");
    return $out;
}

my $a = enroll('cache-a');
my $b = enroll('cache-b');
my $c = enroll('cache-c');
$t->give_up('enrollment failed') if !$a || !$b || !$c;
my $bserial = $t->x509_field($b, 'serial');

# --- hit: same bytes, POST and GET share the entry ----------------------------

my $reqa = reqfile(['-cert', $a], 'req-a', '-no_nonce');
# back to back: a check by openssl in between may outlast revgen_check
my $r1 = post($url, $reqa);
my $r2 = post($url, $reqa);
is($r1->{code}, 200, 'first request: 200');
is($r1->{headers}{'x-ocsp-cache'}, 'MISS', 'first request: MISS');
like(status_of($r1->{body}, ['-cert', $a]), qr/: good/, 'first: good');
is($r2->{headers}{'x-ocsp-cache'}, 'HIT', 'second request: HIT')
    or diag($r2->{head});
ok($r2->{body} eq $r1->{body},
   'second request: identical bytes (ECDSA: a fresh one would differ)');
like(status_of($r2->{body}, ['-cert', $a]), qr/Response verify OK/,
     'cached response verifies');

(my $enc = encode_base64(PKITest::slurp($reqa), ''))
    =~ s{([/+=])}{sprintf('%%%02X', ord($1))}ge;
my $g = $t->curl('GET', "$url/$enc");
# The GET comes after the openssl check above; when that took longer than
# revgen_check (a loaded machine), the GET carries the zone's revgen
# refresh by design and is answered fresh.  Then the entry it stored must
# serve the POST form: the sharing is shown the other way round.
my ($hit, $first) = ($g, $r1);
if (($g->{headers}{'x-ocsp-cache'} // '') eq 'MISS') {
    diag('GET carried the revgen refresh; checking POST after GET');
    ($hit, $first) = (post($url, $reqa), $g);
}
is($hit->{headers}{'x-ocsp-cache'}, 'HIT', 'GET and POST forms: same entry, HIT');
ok($hit->{body} eq $first->{body}, 'GET and POST forms: identical bytes');
like($g->{headers}{'cache-control'} // '', qr/^max-age=\d+, public/,
     'GET hit: Cache-Control');
like($g->{headers}{etag} // '', qr/^"[0-9a-f]{40}"$/, 'GET hit: ETag');

# --- a signed request stuffed with certificates ------------------------------
#
# The responder ignores request signatures (RFC 6960 4.1.2); the cache key
# is computed on the event loop, and the certificates of the signature are
# not decoded there (core/test/test_ocsp.c shows that structurally).  Such
# a request, near the 64 KB cap, gets the proper answer of its CertID and
# a cache key (the X-OCSP-Cache header is only set for a request that has
# one).

my ($src) = PKITest::run_cmd(['openssl', 'req', '-x509', '-newkey', 'ec',
    '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
    '-subj', '/CN=ocsp request signer', '-keyout', "$dir/rsign.key",
    '-out', "$dir/rsign.pem"]);
is($src, 0, 'request signer made');
PKITest::spew("$dir/rsign-others.pem",
              PKITest::slurp("$dir/rsign.pem") x 120);
my $reqs = reqfile(['-cert', $a], 'req-signed', '-no_nonce', '-signer',
                   "$dir/rsign.pem", '-signkey', "$dir/rsign.key",
                   '-sign_other', "$dir/rsign-others.pem");
my $slen = -s $reqs;
ok($slen > 40000 && $slen <= 65536,
   "signed request with 121 certificates: $slen bytes");
my $sr = post($url, $reqs);
is($sr->{code}, 200, 'signed request: 200');
like($sr->{headers}{'x-ocsp-cache'} // '', qr/^(HIT|MISS)$/,
     'signed request: has a cache key (X-OCSP-Cache '
     . ($sr->{headers}{'x-ocsp-cache'} // 'none') . ')');
my $sst = status_of($sr->{body}, ['-cert', $a]);
like($sst, qr/: good/, 'signed request: good');
like($sst, qr/Response verify OK/, 'signed request: response verifies');

# --- nonce: never from the cache ----------------------------------------------

my $reqn = reqfile(['-cert', $a], 'req-nonce');
my $n1 = post($url, $reqn);
my $n2 = post($url, $reqn);
ok(($n1->{headers}{'x-ocsp-cache'} // '') ne 'HIT'
   && ($n2->{headers}{'x-ocsp-cache'} // '') ne 'HIT',
   'nonce requests: not served from the cache');
ok($n1->{body} ne $n2->{body}, 'nonce requests: signed fresh each time');
my ($rc, $out) = ocsp('-issuer', "$pki/issuing.pem", '-cert', $a,
                      '-url', $url, '-CAfile', "$pki/root.pem",
                      '-verify_other', "$pki/issuing.pem");
like($out, qr/: good/, 'openssl ocsp with a nonce: good') or diag($out);
unlike($out, qr/nonce/i, 'fresh nonce echoed');

# --- second nginx: same Redis, same PKI ---------------------------------------

my $t2 = $t->second_nginx(\&with_cache);
my $url2 = 'http://127.0.0.1:' . $t2->http_port . '/ocsp';

my $reqb = reqfile(['-cert', $b], 'req-b', '-no_nonce');
my %good;
for my $u ($url, $url2) {
    post($u, $reqb);
    my $r = post($u, $reqb);
    is($r->{headers}{'x-ocsp-cache'}, 'HIT', "$u: b cached");
    like(status_of($r->{body}, ['-cert', $b]), qr/: good/, "$u: b good");
    $good{$u} = $r->{body};
}

# --- revocation invalidates the cache, here and on the other nginx -------------

my $rv = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
                  . '/pki/admin/revoke', user => 'admin:admin',
                  data => qq({"serial":"$bserial","reason":"keyCompromise"}),
                  headers => ['Content-Type: application/json']);
my $t0 = time;
is($rv->{code}, 200, 'revoked through the admin API') or diag($rv->{body});

# both servers polled in turn from the same start, each answer compared
# with the cached good bytes (openssl, slow on a loaded machine, checks the
# first other answer once); bound: revgen_check (1 s), then the answer
# after the background refresh it started
my (%seen, %last);
while (time - $t0 < 4 && keys %seen < 2) {
    for my $u (grep { !$seen{$_} } $url, $url2) {
        my $r = post($u, $reqb);
        next if ($r->{body} // '') eq $good{$u};
        $seen{$u} = time - $t0;
        $last{$u} = $r->{body};
    }
    sleep 0.05;
}
for my $u ($url, $url2) {
    ok(defined $seen{$u} && $seen{$u} <= 2
       && status_of($last{$u}, ['-cert', $b]) =~ /: revoked/,
       "$u: revocation seen after " . (defined $seen{$u}
                                       ? sprintf('%.2f s', $seen{$u})
                                       : 'never'));
}

$t2->stop_nginx;

# --- a refresh claim whose request is shed is dropped -------------------------
#
# One worker, one pool thread, max_queue=1.  The view is due (idle past
# revgen_check), Redis is paused and two nonce requests hold the thread and
# the queue, so the request that claims the refresh cannot be posted
# (tryLater).
# Its claim must go with it: once Redis answers again, the next request
# refreshes the view and a revocation is seen within revgen_check, not
# once the claim counts as stuck (5 s) or the view passes revgen_check +
# revgen_stale (here 1 s + 10 s).

{
    $t->stop_nginx;
    my $conf = with_cache($t->render_conf('--workers', 1, '--threads', 1));
    $conf =~ s/max_queue=\d+/max_queue=1/ or die 'no max_queue';
    $conf =~ s{(ocsp_responder_revgen_check 1s;)}
              {$1 ocsp_responder_revgen_stale 10s;} or die;
    $t->start_nginx($conf);

    my $reqc = reqfile(['-cert', $c], 'req-c', '-no_nonce');
    post($url, $reqc);
    my $good = post($url, $reqc);
    is($good->{headers}{'x-ocsp-cache'}, 'HIT', 'c: cached');
    sleep 1.3;                  # the view is due, no refresh going on

    $t->redis('CLIENT', 'PAUSE', '1500', 'ALL');
    my $paused = time;
    my @bg;
    for (1 .. 2) {
        my $pid = fork() // die "fork: $!";
        if ($pid == 0) {
            exec('curl', '-s', '-o', '/dev/null', '--max-time', '10',
                 '-H', 'Content-Type: application/ocsp-request',
                 '--data-binary', "\@$reqn", $url)
                or POSIX::_exit(127);
        }
        push @bg, $pid;
    }
    sleep 0.3;
    my $shed = post($url, $reqc);
    is($shed->{code}, 200, 'the request that claims the refresh is shed '
       . '(pool full)') or diag($shed->{head});
    is(unpack('H*', $shed->{body} // ''), '30030a0103',
       'the shed request: tryLater, with Retry-After')
        or diag($shed->{head});
    is($shed->{headers}{'retry-after'} // '', '5', 'shed: Retry-After: 5');
    waitpid($_, 0) for @bg;
    sleep 0.1 while time - $paused < 1.6;

    my $cserial = $t->x509_field($c, 'serial');
    my $rv = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
                      . '/pki/admin/revoke', user => 'admin:admin',
                      data => qq({"serial":"$cserial","reason":"superseded"}),
                      headers => ['Content-Type: application/json']);
    my $t0 = time;
    is($rv->{code}, 200, 'c revoked') or diag($rv->{body});

    my ($seen, $last);
    while (time - $t0 < 6) {
        my $r = post($url, $reqc);
        if (($r->{body} // '') ne $good->{body} && $r->{code} == 200) {
            ($seen, $last) = (time - $t0, $r->{body});
            last;
        }
        sleep 0.05;
    }
    ok(defined $seen && $seen <= 1.5
       && status_of($last, ['-cert', $c]) =~ /: revoked/,
       'after a shed refresh claim, a revocation is seen within '
       . 'revgen_check: ' . (defined $seen ? sprintf('%.2f s', $seen)
                                           : 'never'));

    $t->stop_nginx;
    $t->start_nginx(with_cache($t->render_conf));
}

# --- Redis down ------------------------------------------------------------------

post($url, $reqa);
my $h = post($url, $reqa);
is($h->{headers}{'x-ocsp-cache'}, 'HIT', 'a: cached before Redis stops');
$t->stop_redis;
sleep 1.2;                      # the view is due for a refresh, which fails
for my $i (1 .. 3) {
    my $r = post($url, $reqa);
    like(status_of($r->{body}, ['-cert', $a]), qr/: good/,
         "Redis down: cached good still served ($i)");
}
my $requ = reqfile(['-serial', '0x4321'], 'req-u', '-no_nonce');
my $u = post($url, $requ);
like(status_of($u->{body}, ['-serial', '0x4321']), qr/trylater/i,
     'Redis down: uncached request -> tryLater');

# A reload while Redis is down (a config push, a certificate rotation
# elsewhere) keeps the cached answers of a location it did not change:
# the keys are salted with what the answers depend on, not the cycle.  A
# location whose answers would differ (here its nextUpdate) gets none.
sub reload_with {
    my ($conf, $what) = @_;
    $t->write_conf($conf);
    # the old workers hand over and leave
    ok($t->reload_nginx, "reloaded ($what)");
}
reload_with(with_cache($t->render_conf), 'same configuration');
for my $i (1 .. 2) {
    my $r = post($url, $reqa);
    like(status_of($r->{body}, ['-cert', $a]), qr/: good/,
         "Redis down, after a reload: cached good still served ($i)");
}
(my $changed = with_cache($t->render_conf)) =~
    s{(ocsp_responder_cache_header on;)}
     {$1\n            ocsp_responder_next_update 2h;}
    or die 'no cache header line';
reload_with($changed, 'another nextUpdate');
$u = post($url, $reqa);
like(status_of($u->{body}, ['-cert', $a]), qr/trylater/i,
     'Redis down, after a reload that changed the location: its old '
     . 'entry is not served (tryLater)');

$t->stop_nginx;
done_testing();
