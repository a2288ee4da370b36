#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# The OCSP cache after the store goes back.  A cached answer is served
# while its revocation generation equals the zone's view, the sum of the
# CAs' revgens.  When revgen moves back (a restore from a backup, a
# failover that lost writes, pki_redis pointed at another server) and
# later changes bring it up to a value old entries carry, a cached "good"
# of a certificate revoked since must not come back to life:
#  - a revocation moves revgen on to a value it never held (Redis's clock
#    in microseconds), not to the old value + 1 as INCR did;
#  - a view that goes down drops every entry of the zone, so none comes
#    back even when the view returns to its generation exactly.
# Redis is changed with redis-cli (SET revgen) as a restore would.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use PKITest;

my $t = PKITest->new;
$t->start_redis;

my $conf = $t->render_conf;
$conf =~ s{(ocsp_responder_cache zone=ocsp:\S+;)}
          {$1\n            ocsp_responder_cache_header on;\n            ocsp_responder_revgen_check 1s;}
    or die 'no cached ocsp location in the config';
$t->start_nginx($conf);

my $pki = $t->pki;
my $dir = $t->dir;
my $url = 'http://127.0.0.1:' . $t->http_port . '/ocsp';
my $admin = 'https://127.0.0.1:' . $t->https_port . '/pki/admin';
my $gen = 'pki:{ca:issuing}:revgen';

sub revgen {
    my $v = $t->redis_raw('GET', $gen);
    $v =~ s/\s+//g;
    return $v eq '' ? 0 : $v;
}

sub post { return $t->ocsp_post($url, $_[0]) }

sub status_of {
    my ($body, $cert) = @_;
    my $f = "$dir/resp-" . int(rand(1e9)) . '.der';
    PKITest::spew($f, $body);
    my ($rc, $out) = $t->openssl_ocsp('-respin', $f, '-issuer',
                                      "$pki/issuing.pem", '-cert', $cert,
                                      '-CAfile', "$pki/root.pem",
                                      '-verify_other', "$pki/issuing.pem");
    return $out =~ /: (good|revoked|unknown)/ ? $1 : 'none';
}

sub cached_good {
    my ($cert, $f, $name) = @_;
    post($f);
    my $r = post($f);
    is($r->{headers}{'x-ocsp-cache'}, 'HIT', "$name: cached");
    is(status_of($r->{body}, $cert), 'good', "$name: good");
}

sub revoke {
    my ($cert, $name) = @_;
    my $serial = $t->x509_field($cert, 'serial');
    my $r = $t->curl('POST', "$admin/revoke", user => 'admin:admin',
                     data => qq({"serial":"$serial","reason":"keyCompromise"}),
                     headers => ['Content-Type: application/json']);
    is($r->{code}, 200, "$name: revoked through the admin API")
        or diag($r->{body});
}

# the answer within 4 s (revgen_check 1 s + the background refresh):
# 'revoked', or the last status seen
sub seen_revoked {
    my ($cert, $f) = @_;
    my ($t0, $st, $body, $last) = (time, 'none', '', '');
    while (time - $t0 < 4) {
        my $r = post($f);
        if (($r->{body} // '') ne $last) {
            $last = $r->{body} // '';
            $st = status_of($last, $cert);
            return $st if $st eq 'revoked';
        }
        sleep 0.1;
    }
    return $st;
}

my $a = $t->enroll_cn('restore-a');
my $b = $t->enroll_cn('restore-b');
my $c = $t->enroll_cn('restore-c');
$t->give_up('enrollment failed') if !$a || !$b || !$c;
my $fa = $t->ocsp_reqfile($a, 'req-a');
my $fb = $t->ocsp_reqfile($b, 'req-b');
my $fc = $t->ocsp_reqfile($c, 'req-c');

# --- revgen set back, then a revocation: never the old value again ----------

cached_good($a, $fa, 'a');
my $g = revgen();
# the store goes back by one change (no OCSP request meanwhile: the view
# is not refreshed in between)
$t->redis('SET', $gen, $g - 1);
revoke($a, 'a');
my $g2 = revgen();
isnt($g2, $g, "revgen after the revocation ($g2) is not the value the "
     . "cached answer carries ($g)");
is(seen_revoked($a, $fa), 'revoked',
   'a: revoked, not the cached good of the old generation');

# --- the view goes down: the zone's entries are dropped ----------------------

cached_good($b, $fb, 'b');
cached_good($c, $fc, 'c');
my $v = revgen();
$t->redis('SET', $gen, $v - 1000);
sleep 1.2;
# requests for b only: the view is refreshed and goes down (c is not looked
# up: its entry would stay in a cache that only compares generations)
my ($t0, $miss) = (time, 0);
while (time - $t0 < 4 && !$miss) {
    my $r = post($fb);
    $miss = ($r->{headers}{'x-ocsp-cache'} // '') eq 'MISS';
    sleep 0.1 if !$miss;
}
ok($miss, 'b: a miss once the view went down');
revoke($c, 'c');
# the store comes back to the value of the time c's good was cached
# (pki_redis pointed back at the first server, say)
$t->redis('SET', $gen, $v);
# after an idle spell a request reads the revgens itself: one for b
# refreshes the view (back to c's entry's generation), then c is looked up
sleep 1.2;
post($fb);
is(seen_revoked($c, $fc), 'revoked',
   'c: revoked, not the good cached before the view went down');

# the cache works again
my $r1 = post($fc);
my $r2 = post($fc);
is($r2->{headers}{'x-ocsp-cache'}, 'HIT', 'c: the revoked answer is cached');
is(status_of($r2->{body}, $c), 'revoked', 'c: revoked from the cache');

$t->stop_nginx;
done_testing();
