#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Fault matrix (issue 8): 50 concurrent SCEP PKCSReq messages carry the
# same one-time challenge (made by the admin API).  Exactly one wins: one
# SUCCESS CertRep with a certificate that verifies, 49 FAILURE badRequest
# CertReps, one certificate record more in Redis, and the challenge is
# gone.  The 50 requests leave in one curl process (--parallel, 50
# connections at once), so they reach both workers and the thread pool
# together.  Messages are built with t/lib/scepmsg.c (t/lib/SCEPMsg.pm).
# Done with 50 different subjects, and (PKI_FAULT_LONG) with 50 copies of one
# subject under two keys (the same CN must not make two certificates either;
# a copy of the winner's own message that arrives after its issuance is a
# resend and gets the winner's certificate).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time);
use PKITest;
use SCEPMsg;

my $N = 50;

my $t = PKITest->new;
my $dir = $t->dir;
my ($base, $admin, $k1, $k2, $tool) = scep_setup($t, $t->render_conf);

sub race {
    my ($label, $cn_of) = @_;
    my $chal = challenge('{"ttl": 120}');
    like($chal, qr/^[0-9a-f]{32}$/, "$label: one-time challenge made");

    my $tb = time;
    my @f = map { req(cn => $cn_of->($_), challenge => $chal,
                      key => $_ % 2 ? $k1 : $k2) } 0 .. $N - 1;
    diag(sprintf("%s: %d messages built in %.1f s", $label, $N, time - $tb));
    my $before = records();

    # one curl, 50 transfers in parallel, each with its own body and output
    my @a = ('curl', '-sS', '--parallel', '--parallel-immediate',
             '--parallel-max', $N);
    for my $i (0 .. $N - 1) {
        push @a, '--next' if $i;
        push @a, '--max-time', '30', '-X', 'POST',
             '-H', 'Content-Type: application/x-pki-message',
             '--data-binary', "\@$f[$i]", '-o', "$dir/race-$label-$i.out",
             '-w', "$i %{http_code}\\n",
             "$base/scep?operation=PKIOperation";
    }
    my $t0 = time;
    my ($rc, $out, $err) = run_cmd(\@a, timeout => 60);
    my $dt = time - $t0;
    is($rc, 0, "$label: curl ran the $N transfers") or diag($err);
    my %code = map { /^(\d+) (\d+)$/ ? ($1 => $2) : () } split /\n/, $out;
    is(scalar(grep { $_ == 200 } values %code), $N,
       sprintf('%s: %d HTTP 200 CertReps in %.2f s', $label, $N, $dt))
        or diag($out);

    my (@win, @badreq, @other);
    for my $i (0 .. $N - 1) {
        my $h = rep({ body => slurp("$dir/race-$label-$i.out") // '' },
                    $f[$i], $i % 2 ? $k1 : $k2);
        if (($h->{status} // '') eq '0') {
            push @win, [$i, $h];
        } elsif (($h->{status} // '') eq '2' && ($h->{failinfo} // '') eq '2'
                 && ($h->{sig} // '') eq 'ok') {
            push @badreq, $i;
        } else {
            push @other, "$i: $h->{raw}";
        }
    }
    if ($label eq 'distinct') {
        is(scalar @win, 1, "$label: exactly one SUCCESS")
            or diag(join(' ', map { $_->[0] } @win));
        is(scalar @badreq, $N - 1, "$label: the other " . ($N - 1)
           . ' are FAILURE badRequest, signed by the RA');
    } else {
        # copies of one key share the transactionID and the CSR: once the
        # winner is issued, a later copy of its message is a resend (a
        # lost CertRep) and gets the same certificate; every other copy
        # is refused.  Still one certificate.
        my %key = map { $_->[0] % 2 => 1 } @win;
        my %pem = map { (slurp($_->[1]{file} // '/none') // '') => 1 } @win;
        ok(@win >= 1 && keys %key == 1 && keys %pem == 1
           && !exists $pem{''},
           "$label: every SUCCESS (" . scalar(@win) . ') is a copy of the'
           . ' winner\'s message and carries the same certificate')
            or diag(join(' ', map { $_->[0] } @win));
        is(scalar @badreq, $N - @win, "$label: the other " . ($N - @win)
           . ' are FAILURE badRequest, signed by the RA');
    }
    is(scalar @other, 0, "$label: no other answer")
        or diag(join("\n", @other));
    if (@win) {
        my ($ok, $vout) = $t->verify_chain($win[0][1]{file} // '/none');
        ok($ok, "$label: the winner's certificate verifies")
            or diag("$vout $win[0][1]{raw}");
    } else {
        fail("$label: no winner's certificate to verify");
    }
    is(records(), $before + 1, "$label: exactly one certificate record more");
    my @left = grep { /\Q$chal\E/ } $t->redis_keys('*');
    is(scalar @left, 0, "$label: the challenge is gone from Redis");
    return scalar @badreq;
}

my $refused = race('distinct', sub { "race-dev-$_[0]" });
# the same subject 50 times (PKI_FAULT_LONG: CI runs it)
$refused += race('same-cn', sub { 'race-same' }) if $ENV{PKI_FAULT_LONG};

my $log = slurp($t->error_log) // '';
my $used = () = $log =~ /wrong, expired or used|already used/g;
cmp_ok($used, ">=", $refused,
       "the error log names each refused use ($used lines)");
unlike($log, qr/\[alert\]|exited on signal/, 'no crash in the log');

$t->stop_all;
done_testing();
