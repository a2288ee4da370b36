#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A one-time SCEP challenge whose take Redis runs but whose answer is lost
# (the proxy of t/fault_lost_reply.t drops it and closes the connection;
# hiredis sends the command again on a new one): the resent take answers
# as the first did, so the enrollment that took the challenge goes on
# (it was refused as "already used", the challenge lost to it).  Another
# request with the same challenge is still refused: one winner.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep);
use PKITest;
use SCEPMsg;

plan(skip_all => 'python3 not installed') if !-x '/usr/bin/python3';

my $t = PKITest->new;
my $pki = $t->pki;
my $arm = $t->dir . '/arm';
# the proxy connects to Redis only when nginx connects to it
my $proxy = $t->start_redis_proxy($arm);

my $conf = $t->render_conf;
my $strict = <<"EOF2";
        location /scep-strict {
            scep issuing scep;
            scep_ra $pki/ra.pem $pki/ra.key;
            scep_dynamic_challenges on;
        }

        location /scep {
EOF2
$conf =~ s/        location \/scep \{\n/$strict/ or die 'no /scep location';
my $sock = $t->redis_sock;
$conf =~ s{\Q$sock\E}{$proxy}g or die 'no Redis socket in the config';
scep_setup($t, $conf);

my $once = challenge('{"ttl": 120}');
ok($once ne '', 'a one-time challenge');

# the take's answer lost: the take's script is the only one with PTTL
PKITest::spew($arm, "'PTTL'");
my $f = req(cn => 'lost-1', challenge => $once);
my $h = rep(send_msg($f, '/scep-strict'), $f);
is($h->{status}, 0, 'the enrollment whose take lost its answer: SUCCESS')
    or diag($h->{raw});
ok(!-e $arm, 'the proxy dropped that answer');
like(PKITest::slurp($t->dir . '/proxy.log') // '', qr/answer dropped/,
     '... and closed the connection');

fails('the same challenge again, another request',
      req(cn => 'lost-2', challenge => $once), 2, path => '/scep-strict',
      log => qr/wrong, expired or used/);

$t->stop_nginx;
done_testing();
