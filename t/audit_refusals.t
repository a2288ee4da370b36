#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# What anonymous refusals can write to the transaction log is bounded.
# Every refused request of a PKI location was one entry (about 380 bytes),
# also nginx's own 401s and malformed anonymous OCSP POSTs: any client could
# grow the log as fast as it sent requests, until the disk was full and
# issuance and revocation failed closed.  Now a refusal that did not reach
# the CA with an authenticated identity passes a token bucket per worker
# (pki_audit_log refusal_rate, default 1r/s, refusal_burst, default 100);
# past it it is counted, and the counts are written as one summary entry
# per protocol, CA and status ("N refusals not logged individually since
# T") within 10 s.  Here 3000 malformed OCSP POSTs and 500 EST POSTs
# without credentials (auth_basic's 401) add a few dozen kilobytes to the
# log, the entries plus the summaries' counts add up to what was sent,
# the metrics still count every refusal; refusals of an authenticated
# client that reached the CA (a policy refusal of demo's enrollment) are
# each logged while the bucket is empty; a worker that exits writes the
# summary of what it counted; the log verifies; the parameters are
# checked at nginx -t.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use Time::Local qw(timegm);
use PKITest;

my $t = PKITest->new;
$t->start_redis;

# the parameters: checked at nginx -t
for my $bad ('refusal_rate=5', 'refusal_rate=5r/h', 'refusal_rate=-1r/s',
             'refusal_rate=1001r/s', 'refusal_burst=x',
             'refusal_burst=100001')
{
    my $f = $t->write_conf($t->render_conf('--audit-params', $bad),
                           'bad.conf');
    my ($ok, $out) = $t->nginx_test($f);
    ok(!$ok && $out =~ /\[emerg\].*invalid parameter "\Q$bad\E"/,
       "nginx -t refuses $bad") or diag($out);
}
{
    my $f = $t->write_conf($t->render_conf('--audit-params',
                                           'refusal_rate=30r/m '
                                           . 'refusal_burst=0'), 'ok.conf');
    my ($ok, $out) = $t->nginx_test($f);
    ok($ok, 'nginx -t takes refusal_rate=30r/m refusal_burst=0')
        or diag($out);
}

my $master = $t->start_nginx($t->render_conf('--workers', 1));

my $pki = $t->pki;
my $dir = "$pki/audit";
my $base = 'https://127.0.0.1:' . $t->https_port;
my $ocsp = 'http://127.0.0.1:' . $t->http_port . '/ocsp';
my $n_flood = 0;


sub log_bytes {
    my $n = 0;
    $n += -s $_ for glob("$dir/audit*.log");
    return $n;
}

# N requests through one curl (kept-alive connections): their status codes
sub flood {
    my ($n, $url, %o) = @_;
    my $cfg = $t->dir . '/flood-' . ++$n_flood . '.cfg';
    my $body = $t->dir . "/flood-$n_flood.body";
    spew($body, $o{data} // '');
    my $c = "silent\nwrite-out = \"%{http_code}\\n\"\n"
          . "cacert = \"$pki/root.pem\"\n"
          . "header = \"Content-Type: " . ($o{ctype} // 'text/plain') . "\"\n"
          . "data-binary = \"\@$body\"\n";
    $c .= "url = \"$url\"\noutput = \"/dev/null\"\n" x $n;
    spew($cfg, $c);
    my ($rc, $out, $err) = run_cmd(['curl', '-K', $cfg], timeout => 300);
    diag("curl: $err") if $rc != 0;
    return split /\n/, $out;
}


sub sum_match {
    my ($m, $re) = @_;
    my $s = 0;
    $s += $m->{$_} for grep { /$re/ } keys %$m;
    return $s;
}

sub summary_count {
    my ($e) = @_;
    my $re = '^(\d+) refusals not logged individually since '
             . '(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z$';
    return ($e->{reason} // '') =~ /$re/
        ? ($1, timegm($7, $6, $5, $4, $3 - 1, $2)) : ();
}


# the summaries come within 10 s of the first refusal counted
sub wait_summaries {
    my ($from, %want) = @_;
    my $deadline = time + 25;
    while (time < $deadline) {
        my $ok = 1;
        for my $p (keys %want) {
            my ($one, $sum) = $t->audit_requests($dir, $from, $p);
            my $n = @$one;
            $n += (summary_count($_))[0] // 0 for @$sum;
            $ok = 0 if $n < $want{$p};
        }
        return 1 if $ok;
        sleep 0.25;
    }
    return 0;
}

my ($r) = $t->enroll_serial('refusals-0');
is($r->{code}, 200, 'enrolled: the log is open');

# --- a flood of anonymous refusals -------------------------------------

sleep 0.5;
my $seq0 = $t->audit_last_seq($dir);
my $b0 = log_bytes();
my $m0 = $t->metrics_scrape;

my $t0 = time;
my @c = flood(3000, $ocsp, data => 'abc',
              ctype => 'application/ocsp-request');
is(scalar @c, 3000, '3000 malformed OCSP POSTs answered');
my %codes;
$codes{$_}++ for @c;
note('OCSP answers: ' . join ', ', map { "$_ x$codes{$_}" } sort keys %codes);
@c = flood(500, "$base/.well-known/est/simpleenroll", data => 'abc',
           ctype => 'application/pkcs10');
is(scalar(grep { $_ == 401 } @c), 500, '500 EST POSTs without credentials: '
   . '401 from auth_basic');
my $secs = time - $t0;
note(sprintf('the flood took %.1f s', $secs));

ok(wait_summaries($seq0, ocsp => 3000, est => 500),
   'the summary entries came');

my ($one_o, $sum_o) = $t->audit_requests($dir, $seq0, 'ocsp');
my ($one_e, $sum_e) = $t->audit_requests($dir, $seq0, 'est');
my $s_o = 0;
$s_o += (summary_count($_))[0] // 0 for @$sum_o;
my $s_e = 0;
$s_e += (summary_count($_))[0] // 0 for @$sum_e;

is(@$one_o + $s_o, 3000, sprintf('OCSP: %d entries and %d in summaries: '
                                 . 'every refusal', scalar @$one_o, $s_o));
is(@$one_e + $s_e, 500, sprintf('EST 401: %d entries and %d in summaries: '
                                . 'every refusal', scalar @$one_e, $s_e));
my $one = @$one_o + @$one_e;
cmp_ok($one, '<=', 100 + int($secs + 2),
       "$one entries one by one: the burst (100) and 1 a second");
cmp_ok($one, '>=', 100, '  the burst was logged one by one');
ok(@$sum_o >= 1 && @$sum_e >= 1, 'a summary entry for OCSP and one for EST');

for my $s (@$sum_o, @$sum_e) {
    my ($n, $since) = summary_count($s);
    ok($n && $since >= int($t0) - 1 && $since <= time,
       "summary: \"$s->{reason}\"") or diag(explain($s));
}
is($sum_o->[0]{outcome}, 'malformed', '  OCSP: outcome malformed');
is($sum_e->[0]{outcome}, 'auth', '  EST: outcome auth');
is($sum_e->[0]{status}, 'unauthorized', '  EST: status unauthorized');
ok(!defined $sum_o->[0]{client} && !defined $sum_o->[0]{requester},
   '  no client nor requester in a summary');

my $grown = log_bytes() - $b0;
cmp_ok($grown, '<', 100_000, "the log grew by $grown bytes (3500 entries "
       . 'would be about 1.3 MB)');

# the metrics count every refusal, and the ones not logged
my $m1 = $t->metrics_scrape;
is(sum_match($m1, qr/^pki_requests_total\{protocol="ocsp"/)
   - sum_match($m0, qr/^pki_requests_total\{protocol="ocsp"/), 3000,
   'pki_requests_total: every OCSP refusal');
is(sum_match($m1, qr/^pki_failures_total\{protocol="est",outcome="auth"/)
   - sum_match($m0, qr/^pki_failures_total\{protocol="est",outcome="auth"/),
   500, 'pki_failures_total: every EST 401');
is(($m1->{'pki_audit_refusals_unlogged_total{protocol="ocsp"}'} // 0)
   + ($m1->{'pki_audit_refusals_unlogged_total{protocol="est"}'} // 0),
   $s_o + $s_e, 'pki_audit_refusals_unlogged_total: the ones in summaries');

# --- an authenticated client's refusals: each one logged ----------------

# the bucket is empty; each refused enrollment of demo comes between more
# anonymous refusals, which keep it so
my $seq1 = $t->audit_last_seq($dir);
my ($csr) = $t->make_csr('refused-p521', subj => '/CN=refused-p521',
                         curve => 'P-521');
my $n_anon = 0;
for my $i (1 .. 5) {
    $n_anon += flood(50, $ocsp, data => 'abc',
                     ctype => 'application/ocsp-request');
    ($r) = $t->enroll_serial("refused-$i", csr => $csr);
    ok($r->{code} >= 400 && $r->{code} < 500,
       "demo's enrollment $i refused by the template ($r->{code})");
}
$n_anon += flood(50, $ocsp, data => 'abc',
                 ctype => 'application/ocsp-request');

ok(wait_summaries($seq1, ocsp => $n_anon), 'its summary came');
($one_e) = $t->audit_requests($dir, $seq1, 'est');
my @pol = grep { $_->{outcome} eq 'policy' && ($_->{requester} // '') eq 'demo'
                 && ($_->{client} // '') eq '127.0.0.1' } @$one_e;
is(scalar @pol, 5, 'the 5 refusals of the authenticated client: 5 entries')
    or diag(explain($one_e));
is($pol[0]{ca} // '', 'issuing', '  with the CA');
($one_o, $sum_o) = $t->audit_requests($dir, $seq1, 'ocsp');
ok(@$sum_o >= 1 && @$one_o < $n_anon,
   sprintf('  while anonymous ones went to a summary (%d of %d one by one)',
           scalar @$one_o, $n_anon));

# the counts of a worker that exits are written as it exits
my $seq2 = $t->audit_last_seq($dir);
my $n_last = flood(40, $ocsp, data => 'abc',
                   ctype => 'application/ocsp-request');
$t->stop_nginx;
($one_o, $sum_o) = $t->audit_requests($dir, $seq2, 'ocsp');
my $s_last = 0;
$s_last += (summary_count($_))[0] // 0 for @$sum_o;
ok(@$sum_o == 1 && $s_last > 0, "stop: the last summary ($s_last) written "
   . 'at the exit');
is(@$one_o + $s_last, $n_last, '  every refusal accounted for');

my ($rc, $out, $err) = run_cmd(["$PKITest::BUILD/pkictl", 'audit', 'verify',
                                $dir, '--pubkey', "$pki/audit-pub.pem"]);
is($rc, 0, 'the log verifies') or diag("$out$err");

done_testing();
