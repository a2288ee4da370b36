#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Cached OCSP answers while the CA key's PKCS#11 token is hung
# (build/p11shim.so over SoftHSM, PKI_P11SHIM_HANG_FILE; call_timeout 1s),
# with the default revgen_check (1 s) and Redis healthy.  The hang is
# started by an OCSP cache miss (its signature does not return).  A
# request whose view of the revgens is too old to serve from the event
# loop, or that claims the refresh, would go to the pool; its key is hung,
# so it reads the revgens alone there and is answered from the cache
# (before: tryLater, and the refresh it claimed was dropped, so with
# requests more than revgen_check apart, or revgen_stale 0, every cached
# request got tryLater for the whole hang).  Checked for /ocsp (revgen_stale
# 3s) with requests 1.5 s apart and back to back, and for /ocsp0
# (revgen_stale 0) with requests 1.5 s and 0.2 s apart.  A miss still gets
# tryLater at once; once the token answers, the miss is signed again.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Time::HiRes qw(time sleep);
use PKITest;

my $shim = "$PKITest::BUILD/p11shim.so";
plan(skip_all => "$shim not built") if !-e $shim;

my $t = PKITest->new;
my $dir = $t->dir;
my $pki = $t->pki;
my $hang = "$dir/token-hangs";
END { unlink $hang if $hang; }

$ENV{PKI_P11SHIM_MODULE} = $PKITest::P11;
$ENV{PKI_P11SHIM_HANG_FILE} = $hang;

my $conf = $t->render_conf('--workers', 1, '--threads', 4);
my $mod = quotemeta $PKITest::P11;
ok($conf =~ s{^(\s*)module\s+$mod;}{${1}module $shim;\n${1}call_timeout 1s;}m,
   'the vault uses the shim, with call_timeout 1s');
ok($conf =~ s{^env SOFTHSM2_CONF;}{env SOFTHSM2_CONF;
env PKI_P11SHIM_MODULE;
env PKI_P11SHIM_HANG_FILE;}m, "the shim's environment for the workers");
my $ocsp0 = 'location /ocsp0 { ocsp_responder issuing; '
    . 'ocsp_responder_cache zone=ocsp0:1m; ocsp_responder_revgen_stale 0; '
    . 'ocsp_responder_cache_header on; }';
ok($conf =~ s{^(\s*)(ocsp_responder_cache zone=\S+;)(\n\s*\}\n)}
                {$1$2\n$1ocsp_responder_cache_header on;$3\n$1$ocsp0\n}m,
   'X-OCSP-Cache on; /ocsp0 with revgen_stale 0');

$t->start_redis;
$t->start_nginx($conf);
my $log = $t->error_log;

my $base = 'http://127.0.0.1:' . $t->http_port;
my $try_later = "\x30\x03\x0a\x01\x03";

# an OCSP request of the issuing CA for SERIAL (hex), POSTed to LOC:
# { code, body, cache, dt }
sub ocsp_ask {
    my ($loc, $serial, $max) = @_;
    my $f = "$dir/ocsp-$serial.der";
    if (!-e $f) {
        my ($rc, $out) = $t->openssl_ocsp('-issuer', "$pki/issuing.pem",
                                          '-serial', "0x$serial",
                                          '-no_nonce', '-reqout', $f);
        die "openssl ocsp -reqout: $out" if $rc != 0;
    }
    my $t0 = time;
    my $r = $t->curl('POST', "$base$loc", data => slurp($f), quiet => 1,
                     max_time => $max,
                     headers => ['Content-Type: application/ocsp-request']);
    return { code => $r->{code}, body => $r->{body} // '', dt => time - $t0,
             cache => $r->{headers}{'x-ocsp-cache'} // '' };
}

sub what {
    my ($a) = @_;
    return $a->{body} eq $try_later ? 'tryLater'
         : "$a->{code} '$a->{cache}'" . sprintf(' %.2fs', $a->{dt});
}

# HIT for each of N requests GAP s apart on LOC
sub hits {
    my ($loc, $n, $gap, $name) = @_;
    my @bad;
    for my $i (1 .. $n) {
        sleep $gap if $gap;
        my $a = ocsp_ask($loc, '01', 3);
        push @bad, "#$i: " . what($a)
            if !($a->{code} == 200 && $a->{cache} eq 'HIT'
                 && $a->{dt} < 1.5);
    }
    ok(!@bad, $name) or diag(join(', ', @bad));
}

# --- before the hang -----------------------------------------------------

for my $loc ('/ocsp', '/ocsp0') {
    my $a = ocsp_ask($loc, '01', 15);
    is($a->{cache}, 'MISS', "$loc: the first answer is signed (MISS)");
    $a = ocsp_ask($loc, '01', 15);
    is($a->{cache}, 'HIT', "$loc: then cached (HIT)");
}

# --- an OCSP miss hangs in the token ---------------------------------------

spew($hang, "hang\n");

my $pid = fork() // die "fork: $!";
if ($pid == 0) {
    $t->{owner} = -1;                   # the parent stops the servers
    $t->{curl_n} = 100000;
    ocsp_ask('/ocsp', '0A11', 40);
    POSIX::_exit(0);
}

ok($t->wait_log(qr/a call has not returned for/, 10),
   'the watchdog logged the hang');

my $a = ocsp_ask('/ocsp', '0BADC0DE', 3);
ok($a->{body} eq $try_later && $a->{dt} < 1.5,
   'a miss gets tryLater at once') or diag(what($a));

hits('/ocsp', 5, 1.5, '/ocsp: cached answers 1.5 s apart are hits');
hits('/ocsp', 10, 0, '/ocsp: back to back, hits');
hits('/ocsp0', 4, 1.5, '/ocsp0 (revgen_stale 0): 1.5 s apart, hits');
hits('/ocsp0', 18, 0.2, '/ocsp0 (revgen_stale 0): 0.2 s apart, hits');

# a revocation is still seen while the token hangs: the revgens are read
my $rv = $t->redis('INCR', 'pki:{ca:issuing}:revgen');
like($rv // '', qr/\d+/, 'a revocation moves the revgen on');
sleep 1.2;
$a = ocsp_ask('/ocsp0', '01', 3);
ok($a->{body} eq $try_later, '/ocsp0: the outdated entry is not served')
    or diag(what($a));

# --- the token answers again ----------------------------------------------

unlink $hang;
waitpid($pid, 0);
ok($t->wait_log(qr/answers again after \d+ s/, 5),
   'the watchdog logged the end of the hang');

$a = ocsp_ask('/ocsp', '0BADC0DE', 15);
ok($a->{code} == 200 && $a->{body} ne $try_later && $a->{cache} eq 'MISS',
   'the miss is signed again') or diag(what($a));

my $all = slurp($log) // '';
unlike($all, qr/\[(?:alert|emerg|crit)\]/, 'no alert, crit or emerg');

$t->stop_nginx;

done_testing();
