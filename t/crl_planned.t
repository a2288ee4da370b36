#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A planned revocation (admin API, "at") and the CRL.  Before its time the
# CRL served ends (nextUpdate) no later than the planned time, so that no
# relying party keeps calling the certificate good past it; right after it
# the CRL lists the serial, dated at the planned time with the planned
# reason, whether or not worker 0 has carried the plan out yet; worker 0
# publishes that CRL by itself within a second or two of the time, with no
# CRL request in between; once carried out the serial is listed once, with
# the same date.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep time);
use Time::Piece;
use PKITest;

my $t = PKITest->new;
$t->start_redis;
$t->start_nginx;

my $dir = $t->dir;
my $url = 'http://127.0.0.1:' . $t->http_port . '/crl/issuing.crl';

sub enroll {
    my ($name) = @_;
    my ($r, $serial) = $t->enroll_serial($name);
    is($r->{code}, 200, "enrolled $name") or diag($r->{body});
    $serial //= '';
    like($serial, qr/^[0-9A-F]+$/, "  serial $serial");
    return $serial;
}

sub rfc3339 {
    my @g = gmtime($_[0]);
    return sprintf('%04d-%02d-%02dT%02d:%02d:%02dZ', $g[5] + 1900, $g[4] + 1,
                   @g[3, 2, 1, 0]);
}

sub plan_revocation {
    my ($serial, $reason, $at) = @_;
    my $r = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
                             . '/pki/admin/revoke',
                     user => 'admin:admin',
                     headers => ['Content-Type: application/json'],
                     data => encode_json({ serial => $serial,
                                           reason => $reason,
                                           at => rfc3339($at) }));
    is($r->{code}, 200, "revocation of $serial planned at " . rfc3339($at))
        or diag($r->{body});
}

# "Nov  3 10:00:08 2026 GMT" (openssl's dates) -> epoch
sub epoch {
    my ($s) = @_;
    return 0 unless $s && $s =~ /^(\w+ +\d+ [\d:]+ \d+) GMT/;
    return Time::Piece->strptime($1 =~ s/ +/ /gr, '%b %d %H:%M:%S %Y')
                      ->epoch;
}

# the CRL as openssl crl -text shows it, from a file or fetched
sub crl_text {
    my ($file) = @_;
    my ($rc, $out, $err) = PKITest::run_cmd(['openssl', 'crl', '-inform',
        'DER', '-in', $file, '-noout', '-text']);
    return $rc == 0 ? $out : '';
}

sub fetch {
    my $r = $t->curl('GET', $url, quiet => 1);
    return '' if $r->{code} != 200;
    PKITest::spew("$dir/crl.der", $r->{body});
    return crl_text("$dir/crl.der");
}

# (only compared for a change: a string, as the numbers pass 2^53)
sub crl_number {
    my ($text) = @_;
    return $text =~ /X509v3 CRL Number:\s*\n\s*(\S+)/ ? $1 : '';
}

sub next_update { epoch(($_[0] =~ /Next Update: (.*)/)[0]) }
sub this_update { epoch(($_[0] =~ /Last Update: (.*)/)[0]) }

# the entry of a serial: (revocation date, reason text) or ()
sub entry {
    my ($text, $serial) = @_;
    my @e = split /(?=\n\s+Serial Number: )/, $text;
    $serial =~ s/^0+//;
    for my $e (@e) {
        next unless $e =~ /Serial Number: 0*\Q$serial\E\b/i;
        my ($date) = $e =~ /Revocation Date: (.*)/;
        my ($reason) = $e =~ /CRL Reason Code:\s*\n\s*(.+)/;
        return (epoch($date), $reason // '');
    }
    return ();
}

# the CRL worker 0 stored in Redis (binary safe, through Redis.pm)
sub stored_der {
    require Redis;
    my $r = Redis->new(sock => $t->redis_sock, reconnect => 0);
    # the meta "REVGEN NEXTUPDATE NUMBER THISUPDATE" names the DER's key
    my $meta = $r->get('pki:{ca:issuing}:crl_meta') // '';
    my (undef, undef, $n) = split / /, $meta;
    my $der = defined $n ? $r->get("pki:{ca:issuing}:crl:$n") : undef;
    $r->quit;
    return $der // '';
}

sub status_of {
    my ($serial) = @_;
    return $t->redis_hash("pki:{ca:issuing}:cert:$serial")->{status} // '';
}

my $serial = enroll('crlplan');
my $text = fetch();
my $n0 = crl_number($text);
ok($n0 ne '', "a CRL first ($n0), nextUpdate "
   . (next_update($text) - this_update($text)) . ' s after thisUpdate');

# far enough ahead for the checks before it on a loaded machine
my $due = int(time) + 6;
plan_revocation($serial, 'cessationOfOperation', $due);

# the next CRL fetched: rebuilt, cut to the planned time (a worker asks
# Redis at most once a second)
my $n1 = $n0;
for (1 .. 30) {
    $text = fetch();
    $n1 = crl_number($text);
    last if $n1 ne $n0;
    sleep 0.1;
}
ok($n1 ne '' && $n1 ne $n0, "before the planned time: a new CRL ($n1)");
my $nu = next_update($text);
ok($nu > 0 && $nu <= $due, "  its nextUpdate is no later than the planned "
   . "time (" . ($nu - $due) . ' s)') or diag($text);
ok(time < $due, '  checked before the planned time');
ok(!entry($text, $serial), '  the certificate is not listed yet');

# just after: listed, at the planned time, for the planned reason
sleep($due - time + 0.05) if time < $due + 0.05;
my (@e, $st, $when);
while (time < $due + 3) {
    $text = fetch();
    $st = status_of($serial);
    @e = entry($text, $serial);
    $when = time - $due;
    last if @e;
    sleep 0.1;
}
ok(@e, sprintf('after the planned time: the CRL lists it (%.1f s after; '
   . 'the record said %s)', $when, $st)) or diag($text);
is($e[0] // 0, $due, '  revocation date: the planned time');
like($e[1] // '', qr/Cessation Of Operation/, '  the planned reason');
my $nt = next_update($text);
ok($nt - this_update($text) >= 3000, '  nextUpdate an hour away again');

# worker 0 alone: a second plan, no CRL request until after its time; the
# CRL stored in Redis lists it within a second or two.  Worker 0 learns of
# a plan at its regular check (every 10 s; a request would tell it sooner),
# so this one is made further ahead than that.
my $serial2 = enroll('crlplan2');
my $due2 = int(time) + 13;
plan_revocation($serial2, 'superseded', $due2);
sleep($due2 - time + 0.05) if time < $due2 + 0.05;
my ($stored, $tu, $got) = ('', 0, 0);
while (time < $due2 + 2.5) {
    my $der = stored_der();
    if (length $der) {
        PKITest::spew("$dir/stored.der", $der);
        $stored = crl_text("$dir/stored.der");
        $tu = this_update($stored);
        if ($tu >= $due2) {
            $got = time - $due2;
            last;
        }
    }
    sleep 0.1;
}
ok($tu >= $due2, sprintf('without a request, worker 0 built a new CRL '
   . '%.1f s after the planned time', $got)) or diag($stored);
@e = entry($stored, $serial2);
ok(@e && $e[0] == $due2 && $e[1] =~ /Superseded/,
   '  it lists the second one, at its planned time, superseded')
    or diag($stored);
ok(entry($stored, $serial), '  and the first one still');

# carried out by worker 0 (within 10 s): the CRL lists each once, with the
# same date
my $done = 0;
for (1 .. 120) {
    $done = status_of($serial) eq 'revoked' && status_of($serial2) eq 'revoked';
    last if $done;
    sleep 0.1;
}
ok($done, 'worker 0 carried both plans out');
$text = '';
for (1 .. 30) {
    $text = fetch();
    last if $text && entry($text, $serial2);
    sleep 0.1;
}
my $bare = $serial =~ s/^0+//r;
my $count = () = $text =~ /Serial Number: 0*\Q$bare\E\b/gi;
is($count, 1, '  the CRL lists the first one once');
@e = entry($text, $serial);
is($e[0] // 0, $due, '  still dated at the planned time');
my $h = $t->redis_hash("pki:{ca:issuing}:cert:$serial");
is($h->{revoked_at} // 0, $due, '  so is the record');

$t->stop_nginx;
done_testing();
