#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Fault matrix (issue 8): Redis killed (SIGKILL) with ACME traffic running,
# then restarted on its append-only file (appendfsync always, the
# durability the design asks for certificate records).  Two ACME clients
# (t/lib/ACMELoad.pm: a real account each, newOrder -> http-01 -> finalize
# -> download, fresh P-256 key per certificate) and one EST client issue
# all along.
#  - while Redis is gone every failed request is 503 with Retry-After, or
#    the ACME problem RFC 8555 names (serverInternal 500, badNonce 400);
#    EST answers 503 with Retry-After;
#    none waits past the client's 15 s timeout (no 599), no request hangs;
#  - issuance resumes by itself when Redis returns (no nginx restart);
#  - every certificate a client received has its complete record (good, same
#    DER), OCSP answers good for it, and the transaction log holds its
#    issuance; every reserved serial is a complete record or a pending
#    intent that expires and that no client holds (nothing half-written).

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

my $DOWN = $ENV{PKI_FAULT_LONG} ? 8 : 4;     # seconds without Redis
my @AOF = ('--appendonly', 'yes', '--appendfsync', 'always');

my $t = PKITest->new;
$t->start_redis_with(@AOF);
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

$t->start_load('acme', 2, ACMELoad::loader($t, base => $base, www => $www),
               max => 150);
my ($csr) = $t->make_csr('est', subj => '/CN=redis-kill');
$t->start_load('est', 1, sub {
    my ($k, $i) = @_;
    my $x = $t->est_post('simpleenroll', $csr, max_time => 15, quiet => 1);
    my %o = (code => $x->{code}, ra => $x->{headers}{'retry-after'} // '');
    if ($x->{code} == 200) {
        my $pem = $t->p7_to_pem($x->{body});
        my $f = $pem ? $t->save_first_cert($pem, "est-$i") : undef;
        $o{cert} = $f;
        $o{serial} = $f ? uc $t->x509_field($f, 'serial') : '';
    } else {
        $o{err} = substr("$x->{err} $x->{body}", 0, 200);
        sleep 0.3;
    }
    return \%o;
}, max => 150);
ok(wait_until(60, sub { issued_after(0) >= 2 }), 'ACME issuance runs');

# --- kill Redis -------------------------------------------------------------------

my $rpid = delete $t->{children}{redis};
my $tkill = time;
ok(kill('KILL', $rpid), "Redis ($rpid) killed with SIGKILL");
waitpid($rpid, 0);
sleep $DOWN;
my $tback = time;
$t->start_redis_with(@AOF);
note(sprintf('Redis restarted on its append-only file after %.1f s',
             $tback - $tkill));

ok(wait_until(60, sub { issued_after($tback) >= 2 }),
   'issuance resumed by itself');
my ($first) = sort { $a->{t1} <=> $b->{t1} } issued_after($tback);
ok(wait_until(30, sub { grep { $_->{code} == 200 && $_->{t0} > $tback }
                        $t->load_results('est') }),
   'EST enrollment resumed by itself');
ok($t->stop_load('acme') && $t->stop_load('est'), 'clients stopped');

# --- what the clients saw -----------------------------------------------------------

my @all = $t->load_results('acme');
my @got = grep { $_->{code} == 200 } @all;
my @failed = grep { $_->{code} != 200 } @all;
my ($maxreq) = sort { $b <=> $a } map { $_->{max_req} // 0 } @all;
diag(sprintf('%d issuances tried: %d certificates, %d failed; Redis down '
             . '%.1f s; first certificate %.1f s after it returned; '
             . 'slowest request %.2f s', scalar @all, scalar @got,
             scalar @failed, $tback - $tkill,
             $first ? $first->{t1} - $tback : -1, $maxreq // 0));

my @during = grep { $_->{t1} > $tkill && $_->{t0} < $tback } @all;
cmp_ok(scalar(grep { $_->{code} != 200 } @during), '>=', 2,
       'issuances failed while Redis was gone');
my %kinds;
my @wrong;
for my $f (@failed) {
    my $k = "$f->{step}: $f->{status} " . ($f->{problem} || '-')
            . ($f->{retry_after} ne '' ? " Retry-After $f->{retry_after}"
                                       : '');
    $kinds{$k}++;
    my $okish = ($f->{status} == 503 && $f->{retry_after} =~ /^\d+$/)
        || ($f->{status} == 500 && $f->{problem} eq 'serverInternal')
        || ($f->{status} == 400 && $f->{problem} eq 'badNonce');
    push @wrong, "$k ($f->{err})" if !$okish;
}
diag("failures seen: " . join('; ', map { "$_ x$kinds{$_}" }
                              sort keys %kinds));
is(scalar @wrong, 0, 'every failure is 503 + Retry-After, serverInternal '
   . 'or badNonce (no timeout, no other error)')
    or diag(join("\n", @wrong));
cmp_ok($maxreq // 99, '<', 15, 'no request waited for its 15 s timeout');
my @late = grep { $_->{t0} > $tback + 10 && $_->{code} != 200 } @all;
is(scalar @late, 0, 'no failure later than 10 s after Redis returned');

my @est = $t->load_results('est');
my @est_got = grep { $_->{code} == 200 } @est;
my @est_bad = grep { $_->{code} != 200
                     && !($_->{code} == 503 && $_->{ra} =~ /^\d+$/) } @est;
my ($est_max) = sort { $b <=> $a } map { $_->{t1} - $_->{t0} } @est;
diag(sprintf('EST: %d enrollments, %d x 200, %d x 503; slowest %.2f s',
             scalar @est, scalar @est_got,
             scalar(grep { $_->{code} == 503 } @est), $est_max // 0));
cmp_ok(scalar(grep { $_->{code} == 503 && $_->{t0} > $tkill
                     && $_->{t1} < $tback } @est), '>=', 1,
       'EST: 503 while Redis was gone');
is(scalar @est_bad, 0, 'EST: every answer is 200 or 503 + Retry-After')
    or diag(join("\n", map { "$_->{code} $_->{err}" } @est_bad));
cmp_ok($est_max // 99, '<', 15, 'EST: no answer waited for the timeout');

# --- records, OCSP, transaction log ---------------------------------------------------

push @got, @est_got;
my %held = map { $_->{serial} => 1 } @got;
my ($bad, $n, $reserved) = $t->check_reserved('issuing', \%held);
diag('reserved serials: ' . scalar(@$reserved) . ' ('
     . join(', ', map { "$_ $n->{$_}" } sort keys %$n) . ')');
is(scalar @$bad, 0, 'every reserved serial is a complete record or a '
   . 'pending intent no client holds') or diag(join("\n", @$bad));
my ($norec, $notgood) = $t->check_held('issuing', @got);
is(scalar @$norec, 0, scalar(@got) . ' certificates received: each has '
   . 'its complete record') or diag(join("\n", @$norec));
is(scalar @$notgood, 0, 'OCSP answers good for each')
    or diag(join("\n", @$notgood));

my %logged;
ok(wait_until(10, sub {
    %logged = map { uc($_->{serial} // '') => $_ }
              grep { ($_->{type} // '') eq 'issue' } $t->audit_entries;
    return !grep { !$logged{$_} } keys %held;
}), 'the transaction log holds every issuance a client received');
my @unlogged = grep { !$logged{$_} } sort keys %held;
is(scalar @unlogged, 0, 'none missing from the transaction log')
    or diag(join(' ', @unlogged));
my %proto = map { $_->{serial} => ($_->{order} ? 'acme' : 'est') } @got;
is(scalar(grep { ($logged{$_}{protocol} // '') ne ($proto{$_} // 'acme') }
          keys %held), 0, 'logged as ACME or EST issuances as they were');

my $log = slurp($t->error_log) // '';
unlike($log, qr/exited on signal|\[alert\]/, 'no crash in the log');

$t->stop_all;
done_testing();
