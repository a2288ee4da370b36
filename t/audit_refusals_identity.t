#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# ACME refusals of an account bound to an External Account Binding key
# are each logged with that identity, as EST's of an auth_basic user are;
# anonymous ones go through the refusal bucket (t/audit_refusals.t).
# Before, the ACME glue gave the log no identity: every refusal was
# anonymous, and past the bucket only counted in a summary.  Here, under
# refusal_burst=3 and refusal_rate=1r/m, with anonymous garbage POSTs
# keeping the bucket empty: 6 newOrders of an EAB-bound account the policy
# refuses are 6 entries with requester "acme:ID"; the same newOrders of an
# account made without a binding (anyone can make one: no identity),
# signed with another key under the EAB account's kid, or naming an
# account that does not exist, carry no identity.  SCEP refusals stay
# anonymous, whatever the challenge (a shared secret; a refused message
# can be sent again unchanged by whoever saw it): PKCSReqs with the right
# challenge and a key the template refuses, a wrong challenge (a copy of
# an enrolled message is a resend, answered, not refused).  The anonymous
# ones are summarized.  The log verifies.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use PKITest;
use SCEPMsg;
use ACMELoad;

BEGIN {
    for my $m (qw(Crypt::PK::ECC HTTP::Tiny)) {
        eval "require $m; 1" or plan(skip_all => "$m not installed");
    }
}

my $t = PKITest->new;
my $pki = $t->pki;
my $dir = "$pki/audit";

my $conf = $t->render_conf('--workers', 1, '--audit-params',
                           'refusal_rate=1r/m refusal_burst=3');
my ($sbase) = scep_setup($t, $conf);
my $base = 'https://127.0.0.1:' . $t->https_port;
my $n_flood = 0;


# N garbage POSTs through one curl: their status codes
sub flood {
    my ($n, $url, $ctype) = @_;
    my $cfg = $t->dir . '/flood-' . ++$n_flood . '.cfg';
    my $body = $t->dir . "/flood-$n_flood.body";
    spew($body, 'abc');
    my $c = "silent\nwrite-out = \"%{http_code}\\n\"\n"
          . "cacert = \"$pki/root.pem\"\n"
          . "header = \"Content-Type: $ctype\"\n"
          . "data-binary = \"\@$body\"\n";
    $c .= "url = \"$url\"\noutput = \"/dev/null\"\n" x $n;
    spew($cfg, $c);
    my ($rc, $out, $err) = run_cmd(['curl', '-K', $cfg], timeout => 120);
    diag("curl: $err") if $rc != 0;
    return split /\n/, $out;
}

sub acme_garbage {
    return scalar flood($_[0], "$base/acme/new-order",
                        'application/jose+json');
}

sub scep_garbage {
    return scalar flood($_[0], "$sbase/scep?operation=PKIOperation",
                        'application/x-pki-message');
}

sub summary_count {
    my ($e) = @_;
    return ($e->{reason} // '')
           =~ /^(\d+) refusals not logged individually since / ? $1 : 0;
}


# waits until the entries and summaries of $p after $from count $n
sub wait_count {
    my ($from, $p, $n) = @_;
    my $deadline = time + 30;
    while (time < $deadline) {
        my ($one, $sum) = $t->audit_requests($dir, $from, $p);
        my $k = @$one;
        $k += summary_count($_) for @$sum;
        return 1 if $k >= $n;
        sleep 0.25;
    }
    return 0;
}

my ($r) = $t->enroll_serial('identity-0');
is($r->{code}, 200, 'enrolled: the log is open');

# the bucket's 3 go to garbage first
my $seq0 = $t->audit_last_seq($dir);
is(acme_garbage(10), 10, '10 garbage ACME POSTs: the bucket is empty');

# --- ACME ----------------------------------------------------------------

my $c = ACMELoad->new(t => $t, base => "$base/acme", timeout => 30);
ok($c->account($t->eab_key)->{ok}, 'an ACME account bound to an EAB key');
my ($id) = ($c->{kid} // '') =~ m{/acct/([\w-]+)$};
ok($id, "its id: $id");
# an account anyone can make: no binding
my $plain = ACMELoad->new(t => $t, base => "$base/acme", timeout => 30);
ok($plain->account->{ok}, 'an ACME account without a binding');

# another key under the account's kid: the signature does not verify
my $forger = ACMELoad->new(t => $t, base => "$base/acme", timeout => 30);
$forger->{kid} = $c->{kid};
# an account that does not exist
my $ghost = ACMELoad->new(t => $t, base => "$base/acme", timeout => 30);
$ghost->{kid} = "$base/acme/acct/nosuchaccount0000";

my $order = { identifiers => [{ type => 'dns', value => 'bad_name.example' }] };
for my $i (1 .. 6) {
    my $a = $c->_post("$base/acme/new-order", $order);
    ok($a->{status} >= 400 && $a->{status} < 500,
       "newOrder $i of the account refused: $a->{status} $a->{problem}");
    $a = $forger->_post("$base/acme/new-order", $order);
    ok($a->{status} >= 400 && $a->{status} < 500,
       "  signed with another key under its kid: $a->{status} "
       . $a->{problem});
    $a = $ghost->_post("$base/acme/new-order", $order);
    is($a->{problem}, 'accountDoesNotExist', '  no such account');
    $a = $plain->_post("$base/acme/new-order", $order);
    ok($a->{status} >= 400 && $a->{status} < 500,
       "  of the account without a binding: $a->{status} $a->{problem}");
    acme_garbage(5);
}

# --- SCEP ----------------------------------------------------------------

my $seq1 = $t->audit_last_seq($dir);
my $k1024 = key('k1024', 1024);
my $n_scep = 0;
for my $i (1 .. 5) {
    my $f = req(key => $k1024, challenge => 'demo', cn => "small-$i");
    my $s = send_msg($f);
    my $h = rep($s, $f, $k1024);
    is($h->{status}, 2, "PKCSReq $i, a key the template refuses: FAILURE")
        or diag($h->{raw});
    $f = req(challenge => 'nope', cn => "wrong-$i");
    $h = rep(send_msg($f), $f);
    is($h->{status}, 2, '  a wrong challenge: FAILURE');
    scep_garbage(5);
    $n_scep += 7;
}

# a copy of a message taken before: the resend of a lost CertRep, the
# same certificate again, no refusal
my $f = req(challenge => 'demo', cn => 'replayed');
my $h = rep(send_msg($f), $f);
is($h->{status}, 0, 'PKCSReq: SUCCESS') or diag($h->{raw});
$h = rep(send_msg($f), $f);
is($h->{status}, 0, '  the same message again: SUCCESS (a resend), no '
   . 'refusal') or diag($h->{raw});

# --- the summaries ------------------------------------------------------

# both protocols' anonymous refusals went to the bucket's counts since the
# first ACME garbage: one wait for the summary timer (10 s) covers both

ok(wait_count($seq0, 'acme', 10 + 6 * 9), 'ACME: every refusal accounted '
   . 'for (entries and summaries)');
my ($one, $sum) = $t->audit_requests($dir, $seq0, 'acme');
my @mine = grep { ($_->{requester} // '') eq "acme:$id" } @$one;
is(scalar @mine, 6, "the 6 refusals of the account: 6 entries with "
   . "requester acme:$id") or diag(explain($one));
is(scalar(grep { ($_->{operation} // '') eq 'POST /acme/new-order'
                 && ($_->{client} // '') eq '127.0.0.1'
                 && ($_->{ca} // '') eq 'issuing' } @mine), 6,
   '  with what was asked, the client and the CA');
is(scalar(grep { defined $_->{requester} && $_->{requester} ne ''
                 && $_->{requester} ne "acme:$id" } @$one), 0,
   '  no other requester (not the account without a binding, not the '
   . 'forged kid, not the missing account)');
my $anon_one = @$one - @mine;
my $anon_sum = 0;
$anon_sum += summary_count($_) for @$sum;
ok(@$sum >= 1, sprintf('the anonymous ones summarized: %d one by one, %d '
                       . 'in summaries', $anon_one, $anon_sum));
is($anon_one + $anon_sum, 10 + 6 * 8, '  every anonymous ACME refusal');
cmp_ok($anon_one, '<=', 5, '  one by one: the burst (3), and 1 a minute');

ok(wait_count($seq1, 'scep', $n_scep), 'SCEP: every refusal accounted for');
($one, $sum) = $t->audit_requests($dir, $seq1, 'scep');
is(scalar(grep { defined $_->{requester} && $_->{requester} ne '' } @$one),
   0, 'no SCEP refusal names a requester (not the right challenge either)')
    or diag(explain($one));
$anon_one = @$one;
$anon_sum = 0;
$anon_sum += summary_count($_) for @$sum;
ok(@$sum >= 1, sprintf('the anonymous ones summarized: %d one by one, %d '
                       . 'in summaries', $anon_one, $anon_sum));
cmp_ok($anon_one, '<=', 2, '  one by one: 1 a minute at most');
is($anon_one + $anon_sum, $n_scep, '  every SCEP refusal (the refused '
   . 'keys, the wrong challenges, the garbage)');

$t->stop_nginx;
my ($rc, $out, $err) = run_cmd(["$PKITest::BUILD/pkictl", 'audit', 'verify',
                                $dir, '--pubkey', "$pki/audit-pub.pem"]);
is($rc, 0, 'the log verifies') or diag("$out$err");

done_testing();
