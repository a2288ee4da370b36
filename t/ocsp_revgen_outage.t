#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# OCSP cache on a host cut off from Redis (ocsp_responder_revgen_outage):
# other hosts sharing the Redis may revoke meanwhile, so a cached good is
# served only while the revocation generations were read less than
# revgen_outage ago.  Redis stopped with a cached good: it is served at
# first, then the answer turns to tryLater (RFC 6960 2.3) and stays so;
# Redis back (same data): good again, from the cache.  nginx -t refuses a
# revgen_outage shorter than revgen_check.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use PKITest;

my $t = PKITest->new;
$t->start_redis;

my $OUTAGE = 4;                 # s; revgen_check 500 ms

sub with_cache {
    my ($conf, $extra) = @_;
    $extra //= "ocsp_responder_revgen_outage ${OUTAGE}s;";
    $conf =~ s{(ocsp_responder_cache zone=ocsp:\S+;)}
              {$1\n            ocsp_responder_cache_header on;\n            ocsp_responder_revgen_check 500ms;\n            $extra}
        or die 'no cached ocsp location in the config';
    return $conf;
}

# the directive's bound is checked at nginx -t
{
    my $bad = with_cache($t->render_conf,
                         'ocsp_responder_revgen_outage 100ms;');
    my ($okt, $out) = $t->nginx_test($t->write_conf($bad, 'bad.conf'));
    ok(!$okt && $out =~ /\[emerg\].*ocsp_responder_revgen_outage must not be shorter than ocsp_responder_revgen_check.*bad\.conf:\d+/,
       'nginx -t: revgen_outage below revgen_check refused, with file '
       . 'and line') or diag($out);
}

$t->start_nginx(with_cache($t->render_conf));

my $pki = $t->pki;
my $dir = $t->dir;
my $url = 'http://127.0.0.1:' . $t->http_port . '/ocsp';

my $a = $t->enroll_cn('outage-a');
$t->give_up('enrollment failed') if !$a;

my ($rc, $out) = $t->openssl_ocsp('-issuer', "$pki/issuing.pem",
                                  '-cert', $a, '-no_nonce',
                                  '-reqout', "$dir/req-a.der");
is($rc, 0, 'request written') or diag($out);
my $req = PKITest::slurp("$dir/req-a.der");

sub post {
    return $t->curl('POST', $url, data => $req, max_time => 20,
                    headers => ['Content-Type: application/ocsp-request']);
}

# good / trylater / other, from the OCSP answer (openssl, an independent
# parser)
sub status_of {
    my ($r) = @_;
    return 'none' if ($r->{code} // 0) != 200 || !defined $r->{body};
    my $f = "$dir/resp-" . int(rand(1e9)) . '.der';
    PKITest::spew($f, $r->{body});
    my (undef, $o) = $t->openssl_ocsp('-respin', $f, '-issuer',
                                      "$pki/issuing.pem", '-cert', $a,
                                      '-CAfile', "$pki/root.pem",
                                      '-verify_other', "$pki/issuing.pem");
    unlink $f;
    return 'good' if $o =~ /: good/;
    return 'trylater' if $o =~ /trylater/i;
    $o =~ s/\s+/ /g;
    return "other: $o";
}

post();
my $h = post();
is($h->{headers}{'x-ocsp-cache'}, 'HIT', 'cached while Redis is up');
is(status_of($h), 'good', 'cached answer: good');

# Redis goes away, its data kept for the restart
$t->redis('SAVE');
$t->stop_redis;
my $t0 = time;

my $first = post();
is(status_of($first), 'good',
   'Redis just stopped: the cached good is still served');

# then, once the revgens have gone unread for revgen_outage, tryLater
my ($seen, $last) = (undef, undef);
while (time - $t0 < 30) {
    my $r = post();
    my $s = status_of($r);
    if ($s eq 'trylater') {
        $seen = time - $t0;
        last;
    }
    $last = $s;
    sleep 0.25;
}
ok(defined $seen, 'Redis still down: the answer turns to tryLater after '
   . (defined $seen ? sprintf('%.1f s', $seen)
                    : 'never (last: ' . ($last // '') . ')')
   . " (revgen_outage ${OUTAGE} s)");

my $tl = 0;
for my $i (1 .. 3) {
    my $r = post();
    $tl++ if status_of($r) eq 'trylater'
             && ($r->{headers}{'x-ocsp-cache'} // '') ne 'HIT';
}
is($tl, 3, 'and stays tryLater, never a cached HIT, while Redis is down');

# Redis back with the same data: the entry's generation is the view's
$t->start_redis;
my ($back, $bs);
my $t1 = time;
while (time - $t1 < 30) {
    my $r = post();
    $bs = status_of($r);
    if ($bs eq 'good') {
        $back = $r;
        last;
    }
    sleep 0.25;
}
ok(defined $back, 'Redis back: good again (last: ' . ($bs // '') . ')');
my $hit;
for (1 .. 20) {
    my $r = post();
    if (($r->{headers}{'x-ocsp-cache'} // '') eq 'HIT') {
        $hit = $r;
        last;
    }
    sleep 0.1;
}
ok($hit && status_of($hit) eq 'good',
   'Redis back: the cached good is served again (HIT)');

$t->stop_nginx;
done_testing();
