#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Reads of the revocation generation that come back out of order keep the
# OCSP cache.  Every miss reads the revgens in the thread pool, after it
# was posted: a miss posted earlier may read later, after a revocation,
# and come back before one posted later that read before it.  The later
# one's lower sum is not the store going back (only the refresh, one at a
# time, may take the view down): the zone keeps its entries.
#
# The order is made in a Redis proxy (t/lib/redis_drop_proxy.py, "HOLD
# NAME"): miss A's revgen read waits there; miss B, posted after it, reads
# the revgen and then its record lookup waits; a certificate is revoked;
# A goes on (it reads the new generation, its answer is cached), then B.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX ();
use PKITest;

plan(skip_all => 'python3 not installed') if !-x '/usr/bin/python3';

my $t = PKITest->new;
$t->start_redis;
my $arm = $t->dir . '/arm';
my $proxy = $t->start_redis_proxy($arm);

# the held commands wait longer than the default timeout of 1 s
my $conf = $t->render_conf('--redis-timeout', '10s');
$conf =~ s{(ocsp_responder_cache zone=ocsp:\S+;)}
          {$1\n            ocsp_responder_cache_header on;
            ocsp_responder_revgen_check 30s;}
    or die 'no cached ocsp location in the config';
my $sock = $t->redis_sock;
$conf =~ s{\Q$sock\E}{$proxy}g or die 'no Redis socket in the config';
$t->start_nginx($conf);

my $dir = $t->dir;
my $url = 'http://127.0.0.1:' . $t->http_port . '/ocsp';
my $admin = 'https://127.0.0.1:' . $t->https_port . '/pki/admin';
my $revgen = 'pki:{ca:issuing}:revgen';

sub post { return $t->ocsp_post($url, $_[0]) }

sub cache_of { return $_[0]{headers}{'x-ocsp-cache'} // 'none' }

# POST f in a child; its X-OCSP-Cache header lands in f.out
sub post_bg {
    my ($f) = @_;
    unlink("$f.out");
    my $pid = fork() // die "fork: $!";
    if (!$pid) {
        $t->{curl_n} = $$ * 1000;    # curl's files apart from the parent's
        my $r = post($f);
        PKITest::spew("$f.body", $r->{body} // '');
        PKITest::spew("$f.out.tmp", ($r->{code} // 0) . ' ' . cache_of($r));
        rename("$f.out.tmp", "$f.out");
        POSIX::_exit(0);
    }
    return $pid;
}

sub wait_file {
    my ($f, $secs) = @_;
    my $t0 = time;
    sleep 0.05 while !-e $f && time - $t0 < $secs;
    return -e $f;
}

sub record_key {
    my ($cert) = @_;
    my $serial = $t->x509_field($cert, 'serial');
    my ($k) = grep { /:cert:0*\Q$serial\E$/i }
        $t->redis_keys('pki:{ca:issuing}:cert:*');
    return $k;
}

my $x = $t->enroll_cn('race-x');
my $a = $t->enroll_cn('race-a');
my $b = $t->enroll_cn('race-b');
my $c = $t->enroll_cn('race-c');
$t->give_up('enrollment failed') if !$x || !$a || !$b || !$c;
my ($fx, $fa, $fb) = map { $t->ocsp_reqfile($_->[0], $_->[1]) }
    [$x, 'req-x'], [$a, 'req-a'], [$b, 'req-b'];
my $kb = record_key($b);
ok($kb, "b's record: $kb");

# the view is read (a refresh) and x's answer cached
post($fx);
is(cache_of(post($fx)), 'HIT', 'x: cached');
my $g0 = ($t->redis_raw('GET', $revgen) =~ s/\s+//gr) || 0;

# A: a miss whose revgen read waits in the proxy
PKITest::spew($arm, "HOLD a\nGET\r\n\$" . length($revgen) . "\r\n$revgen\r\n");
my $pa = post_bg($fa);
for (1 .. 100) { last if !-e $arm; sleep 0.05 }
ok(!-e $arm, "A: its revgen read held");

# B, posted later: reads the revgen, then its record lookup waits
sleep 0.3;
PKITest::spew($arm, "HOLD b\n$kb\n");
my $pb = post_bg($fb);
for (1 .. 100) { last if !-e $arm; sleep 0.05 }
ok(!-e $arm, "B: its record lookup held, the revgen read before it");

# a revocation moves the generation on
my $r = $t->curl('POST', "$admin/revoke", user => 'admin:admin',
                 data => '{"serial":"' . $t->x509_field($c, 'serial')
                         . '","reason":"keyCompromise"}',
                 headers => ['Content-Type: application/json']);
is($r->{code}, 200, 'c revoked through the admin API') or diag($r->{body});
my $g1 = $t->redis_raw('GET', $revgen) =~ s/\s+//gr;
ok($g1 > $g0, "the generation moved on ($g0 -> $g1)");

# A comes back first (the new generation), then B (the old one)
PKITest::spew("$arm.release.a", '');
ok(wait_file("$fa.out", 10), 'A answered');
is(PKITest::slurp("$fa.out"), '200 MISS', 'A: a miss');
PKITest::spew("$arm.release.b", '');
ok(wait_file("$fb.out", 10), 'B answered');
is(PKITest::slurp("$fb.out"), '200 MISS', 'B: a miss');
waitpid($pa, 0);
waitpid($pb, 0);

# B's lower sum, read before A's, did not empty the zone
is(cache_of(post($fa)), 'HIT', "A's answer, of the new generation, still "
   . 'cached after B came back');
is(cache_of(post($fa)), 'HIT', '... and again');
unlike(PKITest::slurp($t->error_log) // '', qr/\[(alert|emerg|crit)\]/,
       'no alert in the error log');

$t->stop_nginx;
done_testing();
