#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# The OCSP cache during a Redis stall with SPARSE traffic: requests further
# apart than ocsp_responder_revgen_check (1 s), as IoT verifiers send them.
# Redis is stopped with SIGSTOP (connections accepted, no answer) under one
# nginx worker with pki_redis ... timeout=1s, revgen_stale 5s and
# revgen_outage 14s.  The requests come 4 s apart: a request that waits
# for Redis waits for two Redis timeouts (the revgens, then the record),
# and 4 s is more than that + revgen_check, so each refresh has failed
# and come back more than revgen_check before the next request (which the
# old code took for an idle spell), and less than revgen_check +
# revgen_stale (6 s, the staleness bound):
#  (a) once a refresh has failed, every cached answer comes back fast (well
#      under the 1 s Redis timeout), HIT and good: a failed last refresh
#      means Redis failing, not an idle spell, so the request posts a
#      detached refresh instead of carrying it (the old code waited for
#      the Redis timeout on every such request, which these checks catch);
#      the first request of the stall still carries one (the last refresh
#      had succeeded: an idle spell) and is answered from the cache after
#      the timeout;
#  (b) a revocation made before the stall (and read by a refresh) stays
#      visible: the revoked certificate's cached good is never served;
#  (c) no cached good once the last successful read of the revgens is
#      revgen_outage old (tryLater instead);
#  (d) Redis back: good again; after a short second stall whose last
#      refresh failed, a revocation made right after Redis answers again is
#      in every answer from revgen_check + revgen_stale after it on.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use IO::Select;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(time sleep);
use PKITest;

my $GAP = 4;            # s between requests: > 2 Redis timeouts +
                        # revgen_check (3 s), < revgen_check + revgen_stale
my $FAST = 0.5;         # s: "well under the 1 s Redis timeout"
my $OUTAGE = 14;        # s: ocsp_responder_revgen_outage
my $BOUND = 6;          # s: revgen_check + revgen_stale

my $t = PKITest->new;
$t->start_redis;
my $rpid = $t->{children}{redis};
# a failing check must not leave Redis stopped (stop_all would wait on it)
END { kill 'CONT', $rpid if $rpid }

my $conf = $t->render_conf('--workers', 1, '--redis-timeout', '1s');
$conf =~ s{(ocsp_responder_cache zone=ocsp:\S+;)}
          {$1
            ocsp_responder_cache_header on;
            ocsp_responder_revgen_check 1s;
            ocsp_responder_revgen_stale 5s;
            ocsp_responder_revgen_outage ${OUTAGE}s;}
    or die 'no cached OCSP location in the config';
$t->start_nginx($conf);

my $pki = $t->pki;
my $dir = $t->dir;
my %cert = (a => $t->enroll_cn('sparse-a'), b => $t->enroll_cn('sparse-b'));
$t->give_up('enrollment failed') if grep { !$_ } values %cert;

# GET form (RFC 5019), no nonce: cacheable
my %req;
for my $k (sort keys %cert) {
    my $f = $t->ocsp_reqfile($cert{$k}, "req-$k");
    (my $enc = encode_base64(slurp($f) // '', ''))
        =~ s{([/+=])}{sprintf('%%%02X', ord($1))}ge;
    $req{$k} = "GET /ocsp/$enc HTTP/1.1\r\nHost: localhost\r\n\r\n";
}

# one keep-alive connection: the time of a probe is the server's
my $hc = IO::Socket::INET->new(PeerHost => '127.0.0.1',
                               PeerPort => $t->http_port, Timeout => 5)
    or $t->give_up("HTTP connect: $!");

sub http_req {
    my ($req) = @_;
    print {$hc} $req or return (0, {}, 'write failed');
    my $deadline = time + 10;
    my ($in, $buf) = ('', '');
    my $sel = IO::Select->new($hc);
    while ($in !~ /\r\n\r\n/) {
        return (0, {}, 'timeout in head') if time > $deadline;
        next if !$sel->can_read(0.1);
        sysread($hc, $buf, 16384) or return (0, {}, 'eof in head');
        $in .= $buf;
    }
    my ($h, $body) = split /\r\n\r\n/, $in, 2;
    my ($code) = $h =~ m{^HTTP/1\.1 (\d{3})};
    my %h;
    $h{lc $1} = $2 while $h =~ /^([^:\s]+):\s*(.*?)\r?$/mg;
    my $len = $h{'content-length'} // return (0, \%h, 'no length');
    while (length $body < $len) {
        return (0, \%h, 'timeout in body') if time > $deadline;
        next if !$sel->can_read(0.1);
        sysread($hc, $buf, 16384) or return (0, \%h, 'eof in body');
        $body .= $buf;
    }
    return ($code // 0, \%h, $body);
}

# good / revoked / trylater / other, by openssl (an independent parser)
sub status_of {
    my ($k, $body) = @_;
    my $f = "$dir/resp-" . int(rand(1e9)) . '.der';
    spew($f, $body);
    my (undef, $o) = $t->openssl_ocsp('-respin', $f, '-issuer',
                                      "$pki/issuing.pem", '-cert', $cert{$k},
                                      '-CAfile', "$pki/root.pem",
                                      '-verify_other', "$pki/issuing.pem");
    unlink $f;
    return $1 if $o =~ /:\s*(good|revoked)\b/;
    return 'trylater' if $o =~ /trylater/i;
    $o =~ s/\s+/ /g;
    return 'other: ' . substr($o, 0, 200);
}

# one request for certificate $k: {sent, s (seconds it took), code,
# cache (X-OCSP-Cache), st (status)}
sub probe {
    my ($k) = @_;
    my $t0 = time;
    my ($code, $h, $body) = http_req($req{$k});
    my $p = { k => $k, sent => $t0, s => time - $t0, code => $code,
              cache => $h->{'x-ocsp-cache'} // '-' };
    $p->{st} = $code == 200 ? status_of($k, $body) : "HTTP $code $body";
    return $p;
}

sub show {
    my ($p, $from) = @_;
    return sprintf('%s at %+.2f s: %d %s %s (%.3f s)', $p->{k},
                   $p->{sent} - $from, $p->{code}, $p->{cache}, $p->{st},
                   $p->{s});
}

# sleeps until $at (an absolute time)
sub until_t {
    my ($at) = @_;
    my $w = $at - time;
    sleep $w if $w > 0;
}

# --- Redis answers, sparse traffic ------------------------------------------

probe($_) for qw(a b);
my @pre = (probe('a'), probe('b'));
is(join(' ', map { "$_->{cache} $_->{st}" } @pre), 'HIT good HIT good',
   'Redis up: both answers cached, good')
    or diag(join("\n", map { show($_, $pre[0]{sent}) } @pre));

# b revoked before the stall; a's next request (after an idle spell: it
# reads the revgens itself) takes the view past the revocation, and b's
# cached good is outdated without b being asked
my $rv = $t->admin_revoke($t->x509_field($cert{b}, 'serial'));
is($rv->{code}, 200, 'b revoked through the admin API') or diag($rv->{body});
my $next = time + $GAP;
until_t($next);
my $p0 = probe('a');
is($p0->{st}, 'good', 'a after the revocation of b: good')
    or diag(show($p0, $p0->{sent}));
# $p0 read the revgens: the last successful read before the stall began
# at its start or later (read_ok), at its end at the latest
my $read_ok = $p0->{sent} + $p0->{s};

# --- the stall (SIGSTOP), past revgen_outage -------------------------------

sleep 0.2;
kill 'STOP', $rpid;
# one request for a every $GAP s; b right after a's in slots 2 to 5 (b
# goes to the pool, which posts no refresh while a's detached one is in
# flight: a's requests stay $GAP s apart from the last refresh's claim).
# Not after slot 1, whose a carries the refresh (its end would be b's
# start, a refresh claimed then: the next a would see it come back less
# than revgen_check before)
my @slots;
for my $i (1 .. 5) {
    until_t($p0->{sent} + $i * $GAP);
    push @slots, [probe('a'), $i > 1 ? probe('b') : ()];
}
kill 'CONT', $rpid;
note(join("\n", map { show($_, $p0->{sent}) } map { @$_ } @slots));
my @as = map { $_->[0] } @slots;
my @bs = map { $_->[1] // () } @slots;

# (a) slot 1 carries the refresh (the last one had succeeded $GAP s before:
# an idle spell); it fails, and every later request within revgen_outage
# is answered from the cache at once, a detached refresh posted
my $first = $as[0];
is("$first->{code} $first->{st}", '200 good',
   'stall, first request: good (from the cache once its read failed)')
    or diag(show($first, $p0->{sent}));
my @within = grep { $_->{sent} < $read_ok + $OUTAGE - 0.5 }
             @as[1 .. $#as];
cmp_ok(scalar @within, '>=', 2, scalar(@within) . ' sparse requests for a'
       . ' within revgen_outage after the first');
my @slow = grep { $_->{code} != 200 || $_->{cache} ne 'HIT'
                  || $_->{st} ne 'good' || $_->{s} >= $FAST } @within;
is(scalar @slow, 0, 'every one of them: 200 HIT good in less than '
   . "$FAST s (Redis timeout 1 s, requests $GAP s apart)")
    or diag(join("\n", map { show($_, $p0->{sent}) } @slow));

# (b) b, revoked before the stall: never good
my @bbad = grep { $_->{st} !~ /^(revoked|trylater)$/ } @bs;
is(scalar @bbad, 0, 'b (revoked before the stall) during it: revoked or '
   . 'tryLater, never good')
    or diag(join("\n", map { show($_, $p0->{sent}) } @bbad));

# (c) revgen_outage after the last successful read: no cached good
my @after = grep { $_->{sent} >= $read_ok + $OUTAGE } @as, @bs;
cmp_ok(scalar @after, '>=', 2, scalar(@after) . ' requests past '
       . 'revgen_outage');
my @late = grep { $_->{st} ne 'trylater' } @after;
is(scalar @late, 0, "past revgen_outage ($OUTAGE s): tryLater, never a "
   . 'cached good')
    or diag(join("\n", map { show($_, $p0->{sent}) } @late));

# --- Redis back --------------------------------------------------------------

my $back;
for (1 .. 40) {
    my $p = probe('a');
    if ($p->{st} eq 'good') {
        $back = $p;
        last;
    }
    sleep 0.25;
}
ok($back, 'Redis back: a good again');

# (d) a second, short stall: its last refresh fails and comes back, then
# Redis answers again (R) and a is revoked right away (T, after R): the
# cache may answer good a little longer (the view was confirmed by the
# failed read, which started before R), but every answer from revgen_check
# + revgen_stale after T on says revoked
my $s0 = time + $GAP;
until_t($s0);
kill 'STOP', $rpid;
my @short = (probe('a'));                   # carries the refresh: fails
until_t($s0 + $GAP);
push @short, probe('a');                    # cached, a detached refresh
sleep 1.5;                                  # that fails meanwhile
kill 'CONT', $rpid;
is(join(' ', map { "$_->{cache} $_->{st}" } @short), 'HIT good HIT good',
   'short stall, sparse requests: HIT good')
    or diag(join("\n", map { show($_, $s0) } @short));
ok($short[1]{s} < $FAST, sprintf('the second answered in %.3f s (< %s s)',
                                 $short[1]{s}, $FAST));
$rv = $t->admin_revoke($t->x509_field($cert{a}, 'serial'));
my $T = time;
is($rv->{code}, 200, 'a revoked right after the stall') or diag($rv->{body});
my @post;
while (time < $T + $BOUND + 3) {
    push @post, probe('a');
    sleep 1.2;
}
note(join("\n", map { show($_, $T) } @post));
my @seen = grep { $_->{sent} >= $T + $BOUND } @post;
cmp_ok(scalar @seen, '>=', 2, scalar(@seen) . ' requests from revgen_check'
       . ' + revgen_stale after the revocation');
my @stale = grep { $_->{st} ne 'revoked' } @seen;
is(scalar @stale, 0, 'each of them: revoked')
    or diag(join("\n", map { show($_, $T) } @stale));

my $log = slurp($t->error_log) // '';
unlike($log, qr/\[alert\]|\[crit\]|\[emerg\]|exited on signal/,
       'no alert, crit or crash in the log');

close $hc;
$t->stop_nginx;
done_testing();
