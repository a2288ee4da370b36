#!/usr/bin/perl
#
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A poll parked while its validation runs (ngx_http_acme_park) whose
# connection the worker's shutdown timeout closes: the request is
# terminated only once the park lets it go, and the worker does not touch
# the freed park (it crashed with SIGSEGV: r->pool, which holds the park
# and its timer, was destroyed by the termination while both were still
# linked).  MALLOC_PERTURB_ makes a use after free show.
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

$ENV{MALLOC_PERTURB_} = 85 unless defined $ENV{NO_PERTURB};
my $t = PKITest->new;
$t->start_redis;
my $hport = PKITest::free_port();
my $conf = $t->render_conf('--acme-http-port', $hport,
                           '--acme-tls-port', PKITest::free_port(),
                           '--workers', 1);
$conf =~ s/^(worker_processes .*)$/$1\nworker_shutdown_timeout 100ms;/m;
my $master = $t->start_nginx($conf);
my $www = $t->dir . '/www';
mkdir $www;
ACMELoad::start_http01($t, $hport, $www, concurrent => 1);

my $base = 'https://127.0.0.1:' . $t->https_port . '/acme';
my $c = ACMELoad->new(t => $t, base => $base, www => $www, timeout => 30);
ok($c->account->{ok}, 'an account');
my $thumb = $c->{key}->export_key_jwk_thumbprint('SHA256');

my $r = $c->_post("$base/new-order",
                  { identifiers => [{ type => 'dns', value => 'x.example.test' }] });
my $az = $r->{json}{authorizations}[0] // '';
my $a = $c->_post($az, undef);
my ($h) = grep { $_->{type} eq 'http-01' } @{ $a->{json}{challenges} || [] };
spew("$www/$h->{token}", "$h->{token}.$thumb");
spew("$www/$h->{token}.delay", 'hold');
$r = $c->_post($h->{url}, {});
is($r->{status}, 200, 'challenge posted (held)');

my $pid = fork() // die;
if ($pid == 0) {
    my $k = ACMELoad->new(t => $t, base => $base, www => $www, timeout => 5);
    $k->{key} = $c->{key};
    $k->{kid} = $c->{kid};
    $k->_post($az, undef);
    POSIX::_exit(0);
}
sleep 0.15;                     # the poll is parked now
kill 'QUIT', $master;           # graceful stop: shutdown timer at 100 ms
sleep 1.5;
ACMELoad::release_http01($www, $h->{token});
waitpid($pid, 0);
sleep 1;
my $log = slurp($t->error_log) // '';
unlike($log, qr/exited on signal|\[alert\]/, 'no crash') or diag($log =~ /(.*(?:signal|alert).*)/g);
$t->stop_all;
done_testing();
