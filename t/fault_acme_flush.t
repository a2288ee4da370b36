#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Fault matrix (issue 8): Redis flushed (FLUSHALL) with ACME traffic
# running.  Two ACME clients (t/lib/ACMELoad.pm) issue all along; a third
# holds a nonce taken before the flush.
#  - nonces fail closed: the nonce from before the flush is refused with
#    badNonce (400) and a fresh Replay-Nonce, and the client's retry with
#    that fresh nonce gets past the nonce check (RFC 8555 section 6.5);
#  - the flushed accounts and orders are gone: the clients get ACME problems
#    (accountDoesNotExist, malformed/404, ...), never a 5xx without
#    Retry-After and never a timeout; they register again and issuance
#    resumes by itself;
#  - nothing is issued without its record: every certificate whose finalize
#    was sent after the flush has its complete record and OCSP says good;
#    every reserved serial is a complete record or a pending intent that no
#    client holds.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use PKITest;
use ACMELoad;

plan(skip_all => 'CryptX / HTTP::Tiny not installed')
    if !ACMELoad::available();

my $t = PKITest->new;
$t->start_redis;
my $hport = PKITest::free_port();
$t->start_nginx($t->render_conf('--acme-http-port', $hport,
                                '--acme-tls-port', PKITest::free_port()));
my $www = $t->dir . '/www';
mkdir $www;
ACMELoad::start_http01($t, $hport, $www);
my $base = 'https://127.0.0.1:' . $t->https_port . '/acme';

sub issued_after {
    my ($when) = @_;
    return grep { $_->{code} == 200 && $_->{t0} > $when }
           $t->load_results('acme');
}

# the probe: a client that registers only after the flush, with a nonce
# taken before it (new-account is signed with the key itself: no account
# lookup stands before the nonce check)
my $probe = ACMELoad->new(t => $t, base => $base, www => $www);

$t->start_load('acme', 2, ACMELoad::loader($t, base => $base, www => $www),
               max => 150);
ok(wait_until(60, sub { issued_after(0) >= 2 }), 'ACME issuance runs');

my $old_nonce = $probe->_fresh_nonce;
like($old_nonce // '', qr/^[\w-]{16,}$/, 'a nonce taken before the flush');

# --- flush ------------------------------------------------------------------------

my $tflush0 = time;
like($t->redis('FLUSHALL'), qr/OK/, 'FLUSHALL');
my $tflush = time;          # the flush ran between $tflush0 and this

$probe->{nonce} = $old_nonce;
$probe->{bad_nonce} = 0;
my $acct = $probe->account;
is($probe->{bad_nonce}, 1, 'the nonce from before the flush: badNonce');
ok($acct->{ok}, 'the retry with the fresh nonce of that answer registers '
   . 'the account (RFC 8555 6.5)') or diag(explain($acct));

ok(wait_until(60, sub { issued_after($tflush) >= 2 }),
   'issuance resumed by itself');
my ($first) = sort { $a->{t1} <=> $b->{t1} } issued_after($tflush);
ok($t->stop_load('acme'), 'clients stopped');

# --- what the clients saw -----------------------------------------------------------

my @all = $t->load_results('acme');
my @got = grep { $_->{code} == 200 } @all;
my @failed = grep { $_->{code} != 200 } @all;
my ($bn) = sort { $b <=> $a } map { $_->{bad_nonce} // 0 } @all;
diag(sprintf('%d issuances tried: %d certificates, %d failed; first '
             . 'certificate %.1f s after the flush', scalar @all,
             scalar @got, scalar @failed,
             $first ? $first->{t1} - $tflush : -1));
my %kinds;
my @wrong;
for my $f (@failed) {
    my $k = "$f->{step}: $f->{status} " . ($f->{problem} || '-');
    $kinds{$k}++;
    push @wrong, "$k ($f->{err})"
        if $f->{status} == 599 || $f->{status} == 0
        || ($f->{status} >= 500 && $f->{retry_after} !~ /^\d+$/
            && $f->{problem} ne 'serverInternal')
        || ($f->{status} < 500 && !$f->{problem});
}
diag('failures seen: ' . join('; ', map { "$_ x$kinds{$_}" } sort keys %kinds));
is(scalar @wrong, 0, 'every failure is an ACME problem (or 503 + '
   . 'Retry-After), none a timeout') or diag(join("\n", @wrong));
cmp_ok(scalar(grep { $_->{t1} > $tflush0 } @failed),
       '>=', 1, 'issuances failed after the flush (their account is gone)');
my ($maxreq) = sort { $b <=> $a } map { $_->{max_req} // 0 } @all;
cmp_ok($maxreq // 99, '<', 15, sprintf('slowest request %.2f s',
                                       $maxreq // 99));

# --- records ------------------------------------------------------------------------

my @after = grep { ($_->{fin_t0} // 0) > $tflush } @got;
my @before = grep { ($_->{fin_t0} // 0) <= $tflush } @got;
my @lost_after;
cmp_ok(scalar @after, '>=', 2, scalar(@after) . ' certificates finalized '
       . 'after the flush');
my ($norec, $notgood) = $t->check_held('issuing', @after);
is(scalar @$norec, 0, 'each has its complete record')
    or diag(join("\n", @$norec));
is(scalar @$notgood, 0, 'OCSP answers good for each')
    or diag(join("\n", @$notgood));
my @lost = grep { !keys %{ $t->redis_hash("pki:{ca:issuing}:cert:"
                                          . $_->{serial}) } } @before;
diag(scalar(@before) . ' certificates finalized before the flush, '
     . scalar(@lost) . ' of them lost with the flushed data (the operator\'s '
     . 'FLUSHALL: they stay valid until they expire, OCSP says unknown)');

my %held = map { $_->{serial} => 1 } @got;
my ($bad, $n, $reserved) = $t->check_reserved('issuing', \%held);
diag('reserved serials after the flush: ' . scalar(@$reserved) . ' ('
     . join(', ', map { "$_ $n->{$_}" } sort keys %$n) . ')');
is(scalar @$bad, 0, 'every serial reserved after the flush is a complete '
   . 'record or a pending intent no client holds')
    or diag(join("\n", @$bad));

my $log = slurp($t->error_log) // '';
unlike($log, qr/exited on signal|\[alert\]/, 'no crash in the log');

$t->stop_all;
done_testing();
