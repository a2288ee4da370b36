#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A PKCS#11 token whose C_Sign does not return (build/p11shim.so over
# SoftHSM, PKI_P11SHIM_HANG_FILE; pki_key_vault { call_timeout 1s; }), as
# in t/fault_token_hang.t, for ACME, OCSP and Matter.  One worker, a pool
# of 4 threads, and 4 EST enrollments hung in the token: no thread is
# left, so a request posted to the pool would wait until the token
# answers.  Once the vault is hung, each module refuses on the event loop
# before it posts a request that its hung key would sign:
#  - an ACME finalize of a ready order: 503 serverInternal with
#    Retry-After within 1.5 s, and the order stays ready (finalized once
#    the token answers, with a certificate that verifies);
#  - an OCSP request that misses the response cache: the unsigned
#    tryLater (RFC 6960 4.2.1) with Retry-After within 1.5 s, while a
#    cache hit is still answered;
#  - a Matter DAC batch: 503 JSON with Retry-After within 1.5 s.
# The hung enrollments finish once the token answers; one error line for
# the hang, one notice for its end, no alert.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use MIME::Base64 qw(encode_base64url);
use JSON::PP;
use PKITest;
use ACMELoad;

my $shim = "$PKITest::BUILD/p11shim.so";
plan(skip_all => "$shim not built") if !-e $shim;
plan(skip_all => 'ngx_http_matter_module.so not built')
    if !-f "$PKITest::BUILD/ngx_http_matter_module.so";
plan(skip_all => 'CryptX / HTTP::Tiny not installed')
    if !ACMELoad::available();

my $t = PKITest->new;
my $dir = $t->dir;
my $pki = $t->pki;
my $hang = "$dir/token-hangs";
END { unlink $hang if $hang; }

$t->make_matter_pki($pki);

$ENV{PKI_P11SHIM_MODULE} = $PKITest::P11;
$ENV{PKI_P11SHIM_HANG_FILE} = $hang;

my $hport = PKITest::free_port();
my $conf = $t->render_conf('--workers', 1, '--threads', 4,
                           '--acme-http-port', $hport,
                           '--acme-tls-port', PKITest::free_port());
my $mod = quotemeta $PKITest::P11;
ok($conf =~ s{^(\s*)module\s+$mod;}{${1}module $shim;\n${1}call_timeout 1s;}m,
   'the vault uses the shim, with call_timeout 1s');
ok($conf =~ s{^env SOFTHSM2_CONF;}{env SOFTHSM2_CONF;
env PKI_P11SHIM_MODULE;
env PKI_P11SHIM_HANG_FILE;}m, "the shim's environment for the workers");
# the revgens read at most every 10 s: a cached answer stays a hit for
# the whole hang.  With every pool thread in the token, a cached request
# whose view is due for a read (after an idle revgen_check) would wait for
# a thread to read the revgens (t/ocsp_token_hang_cache.t: with threads
# left, it is a hit)
ok($conf =~ s{^(\s*)(ocsp_responder_cache zone=\S+;)}
                {$1$2\n$1ocsp_responder_cache_header on;
$1ocsp_responder_revgen_check 10s;}m,
   'X-OCSP-Cache on, revgen_check 10s');

$t->start_redis;
$t->start_nginx($conf);
my $log = $t->error_log;

my $www = "$dir/www";
mkdir $www;
ACMELoad::start_http01($t, $hport, $www);
my $acme = ACMELoad->new(t => $t, www => $www, timeout => 15,
                         base => 'https://127.0.0.1:' . $t->https_port
                                 . '/acme');
ok($acme->account->{ok}, 'an ACME account');

my ($csr) = $t->make_csr('hang', subj => '/CN=token-hang2');
my $ocsp_url = 'http://127.0.0.1:' . $t->http_port . '/ocsp';
my $try_later = "\x30\x03\x0a\x01\x03";

sub enroll {
    my ($max) = @_;
    my $r = $t->est_post('simpleenroll', $csr, max_time => $max, quiet => 1);
    return $r->{code};
}

# an OCSP request of the issuing CA for SERIAL (hex), POSTed:
# { code, body, ra, cache, dt }
sub ocsp_ask {
    my ($serial, $max) = @_;
    my $f = "$dir/ocsp-$serial.der";
    if (!-e $f) {
        my ($rc, $out) = $t->openssl_ocsp('-issuer', "$pki/issuing.pem",
                                          '-serial', "0x$serial",
                                          '-no_nonce', '-reqout', $f);
        die "openssl ocsp -reqout: $out" if $rc != 0;
    }
    my $t0 = time;
    my $r = $t->curl('POST', $ocsp_url, data => slurp($f), quiet => 1,
                     max_time => $max,
                     headers => ['Content-Type: application/ocsp-request']);
    return { code => $r->{code}, body => $r->{body}, dt => time - $t0,
             ra => $r->{headers}{'retry-after'} // '',
             cache => $r->{headers}{'x-ocsp-cache'} // '' };
}

# a Matter DAC batch of one server-generated key: { code, json, ra, dt }
sub matter_batch {
    my ($max) = @_;
    my $t0 = time;
    my $r = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
                     . '/matter/dac/batch', data => '{"count": 1}',
                     user => 'demo:demo', quiet => 1, max_time => $max,
                     headers => ['Content-Type: application/json']);
    return { code => $r->{code}, dt => time - $t0,
             json => scalar(eval { decode_json($r->{body}) }),
             ra => $r->{headers}{'retry-after'} // '' };
}

sub finalize {
    my ($url, $max) = @_;
    my ($der) = $t->make_csr('acme-hang', subj => '/',
                             san => 'DNS:hang.example');
    $acme->{http}->timeout($max);
    my $t0 = time;
    my $r = $acme->_post($url, { csr => encode_base64url($der) });
    $r->{dt} = time - $t0;
    $acme->{http}->timeout(15);
    return $r;
}

# --- before the hang -----------------------------------------------------

is(enroll(15), 200, 'EST enrollment while the token answers');

my $o = $acme->ready('hang.example');
my $order = $o->{headers}{location} // '';
my $fin = $o->{json}{finalize} // '';
is($o->{ready}{json}{status} // '', 'ready', 'an ACME order is ready');

my $m = matter_batch(30);
is($m->{code}, 200, 'a Matter DAC batch while the token answers');

# the answer for serial 01 is cached (signed), the next one is a hit
my $a = ocsp_ask('01', 15);
is($a->{cache}, 'MISS', 'OCSP: the first answer is signed (MISS)');
$a = ocsp_ask('01', 15);
is($a->{cache}, 'HIT', 'and then cached (HIT)');

# --- the token hangs with every thread of the pool in it ------------------

spew($hang, "hang\n");

my @bg;
for my $k (1 .. 4) {
    my $res = "$dir/bg-$k.txt";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $t->{owner} = -1;               # the parent stops the servers
        $t->{curl_n} = 100000 * $k;
        spew($res, enroll(40) . "\n");
        POSIX::_exit(0);
    }
    push @bg, [$pid, $res];
}

ok($t->wait_log(qr/a call has not returned for/, 10),
   'the watchdog logged the hang');
sleep 0.2;
ok(!waitpid($_->[0], WNOHANG), 'an enrollment waits in the token') for @bg;

# a cache hit is answered on the event loop
$a = ocsp_ask('01', 3);
ok($a->{code} == 200 && $a->{cache} eq 'HIT',
   'OCSP: a cached answer is still served (HIT)')
    or diag("$a->{code} '$a->{cache}'");

# OCSP: a miss would be signed by the hung CA key
$a = ocsp_ask('0BADC0DE', 3);
is($a->{code}, 200, 'OCSP: a cache miss is answered');
ok($a->{body} eq $try_later, 'with tryLater')
    or diag(unpack('H*', $a->{body}));
cmp_ok($a->{dt}, '<', 1.5, 'within 1.5 s');
like($a->{ra}, qr/^\d+$/, 'with Retry-After');

# ACME finalize: signed with the hung CA key
my $f = finalize($fin, 3);
is($f->{status}, 503, 'ACME finalize: 503');
is($f->{json}{type} // '', 'urn:ietf:params:acme:error:serverInternal',
   'serverInternal');
cmp_ok($f->{dt}, '<', 1.5, 'within 1.5 s');
like($f->{headers}{'retry-after'} // '', qr/^\d+$/, 'with Retry-After');

# Matter: DACs signed with the hung PAI key
$m = matter_batch(3);
is($m->{code}, 503, 'Matter DAC batch: 503');
is(($m->{json} || {})->{error} // '', 'busy, retry later',
   'the JSON error of the API');
cmp_ok($m->{dt}, '<', 1.5, 'within 1.5 s');
like($m->{ra}, qr/^\d+$/, 'with Retry-After');

# --- the token answers again ----------------------------------------------

unlink $hang;
for my $b (@bg) {
    waitpid($b->[0], 0);
    is((slurp($b->[1]) // '') =~ s/\s+//gr, '200',
       'a hung enrollment finished after the token answered');
}
ok($t->wait_log(qr/answers again after \d+ s/, 5),
   'the watchdog logged the end of the hang');

# the refused finalize changed nothing: the order is still ready
my $g = $acme->_post($order, undef);
is($g->{json}{status} // '', 'ready', 'the ACME order is still ready');

$f = finalize($fin, 15);
is($f->{status}, 200, 'ACME finalize works again');
if (($f->{json}{status} // '') ne 'valid') {
    $f = $acme->_poll($order, 'valid');
}
is($f->{json}{status} // '', 'valid', 'the order is valid');
my $cr = $acme->_post($f->{json}{certificate} // $order, undef);
my $cf = $cr->{status} == 200 ? $t->save_first_cert($cr->{content}, 'acme')
                              : undef;
ok($cf && ($t->verify_chain($cf))[0], 'its certificate verifies');

$a = ocsp_ask('0BADC0DE', 15);
ok($a->{code} == 200 && $a->{body} ne $try_later
   && $a->{cache} eq 'MISS', 'OCSP: the miss is signed again');

$m = matter_batch(30);
is($m->{code}, 200, 'Matter DAC batch works again');

my $all = slurp($log) // '';
my @h = $all =~ /(a call has not returned for \d+ s; its keys answer)/g;
is(scalar @h, 1, 'one hang line');
my @b = $all =~ /(answers again after \d+ s)/g;
is(scalar @b, 1, 'one line for its end');
unlike($all, qr/\[(?:alert|emerg|crit)\]/, 'no alert, crit or emerg');

$t->stop_nginx;

done_testing();
