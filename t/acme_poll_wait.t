#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A poll that comes while its validation runs waits for it (in the worker's
# event loop, not in a pool thread), so the client learns the outcome in
# one poll instead of "pending" and a retry.  One worker, an http-01
# responder that answers after a delay or holds its answer:
#  - a POST-as-GET of the authorization sent right after the challenge
#    (validation answered after 0.3 s): "valid" in that one answer;
#  - the same for a POST-as-GET of the challenge;
#  - a held validation: the poll waits 0.5 s at most and says "pending"
#    (the challenge "processing"), and a POST with a payload (deactivation)
#    is served at once, not held;
#  - nine polls at once of one held validation: eight wait, the ninth is
#    answered at once;
#  - a poll of an authorization whose validation is done is not held.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX ();
use PKITest;
use ACMELoad;

plan(skip_all => 'CryptX / HTTP::Tiny not installed')
    if !ACMELoad::available();

my $t = PKITest->new;
$t->start_redis;
my $hport = PKITest::free_port();
$t->start_nginx($t->render_conf('--acme-http-port', $hport,
                                '--acme-tls-port', PKITest::free_port(),
                                '--workers', 1));
my $www = $t->dir . '/www';
mkdir $www;
ACMELoad::start_http01($t, $hport, $www, concurrent => 1);

my $base = 'https://127.0.0.1:' . $t->https_port . '/acme';
my $c = ACMELoad->new(t => $t, base => $base, www => $www, timeout => 30);
ok($c->account->{ok}, 'an account');
my $thumb = $c->{key}->export_key_jwk_thumbprint('SHA256');

# a new order for NAME: (authorization URL, its http-01 challenge), the
# responder's answer for it delayed by DELAY ("hold": until released)
sub authz {
    my ($name, $delay) = @_;
    my $r = $c->_post("$base/new-order",
                      { identifiers => [{ type => 'dns', value => $name }] });
    my $az = $r->{json}{authorizations}[0] // '';
    my $a = $c->_post($az, undef);
    my ($h) = grep { $_->{type} eq 'http-01' }
              @{ $a->{json}{challenges} || [] };
    $h //= { token => 'none', url => '' };
    spew("$www/$h->{token}", "$h->{token}.$thumb");
    spew("$www/$h->{token}.delay", $delay) if defined $delay;
    return ($az, $h);
}

# --- 1. the authorization's poll right after the challenge -----------------

my ($az, $h) = authz('wait1.example.test', 0.3);
my $r = $c->_post($h->{url}, {});
is($r->{status}, 200, 'challenge posted');
my $t0 = time;
$r = $c->_post($az, undef);
my $dt = time - $t0;
is($r->{json}{status} // '', 'valid', 'the first poll of the authorization '
   . 'says "valid"') or diag($r->{content});
ok($dt >= 0.2 && $dt < 5, sprintf('... it waited for the validation '
   . '(%.2f s)', $dt));

# --- 2. the challenge's poll --------------------------------------------------

($az, $h) = authz('wait2.example.test', 0.3);
$r = $c->_post($h->{url}, {});
is($r->{status}, 200, 'challenge posted');
$r = $c->_post($h->{url}, undef);
is($r->{json}{status} // '', 'valid', 'the first poll of the challenge says '
   . '"valid"') or diag($r->{content});

# --- 3. a held validation: bounded wait; a deactivation is not held -----------

($az, $h) = authz('wait3.example.test', 'hold');
$r = $c->_post($h->{url}, {});
is($r->{status}, 200, 'challenge posted (its answer held)');
$t0 = time;
$r = $c->_post($az, undef);
$dt = time - $t0;
is($r->{json}{status} // '', 'pending', 'a poll while the answer is held: '
   . 'pending') or diag($r->{content});
ok($dt >= 0.4 && $dt < 2, sprintf('... after waiting at most about 0.5 s '
   . '(%.2f s)', $dt));

# nine polls at once (connections of their own): eight wait, one does not
my @kids;
for my $i (1 .. 9) {
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        my $k = ACMELoad->new(t => $t, base => $base, www => $www,
                              timeout => 30);
        $k->{key} = $c->{key};
        $k->{kid} = $c->{kid};
        my $s = time;
        my $p = $k->_post($az, undef);
        spew($t->dir . "/poll$i", sprintf("%d %.3f",
                                          $p->{status}, time - $s));
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
waitpid($_, 0) for @kids;
my @took = map { [split / /, slurp($t->dir . "/poll$_") // '0 0'] } 1 .. 9;
is(scalar(grep { $_->[0] == 200 } @took), 9, 'nine concurrent polls: 200');
my $quick = grep { $_->[1] < 0.35 } @took;
cmp_ok($quick, '>=', 1, "... at least one answered at once ($quick)");
cmp_ok($quick, '<=', 3, '... most of them waited')
    or diag(join ' ', map { $_->[1] } @took);

$t0 = time;
$r = $c->_post($az, { status => 'deactivated' });
$dt = time - $t0;
is($r->{json}{status} // '', 'deactivated', 'a deactivation while the '
   . 'answer is held') or diag($r->{content});
ok($dt < 0.4, sprintf('... served at once (%.2f s)', $dt));
ACMELoad::release_http01($www, $h->{token});

# --- 4. nothing runs: not held ------------------------------------------------

($az, $h) = authz('wait4.example.test');
$r = $c->_post($h->{url}, {});
$r = $c->_poll($az, 'valid', 10);
is($r->{json}{status} // '', 'valid', 'a validated authorization');
$t0 = time;
$r = $c->_post($az, undef);
$dt = time - $t0;
ok($dt < 0.3, sprintf('... its next poll is not held (%.2f s)', $dt));

my $log = slurp($t->error_log) // '';
unlike($log, qr/\[alert\]|\[crit\]|exited on signal/, 'no crash in the log');

$t->stop_all;
done_testing();
