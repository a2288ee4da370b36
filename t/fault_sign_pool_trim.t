#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# The idle-session trim posts to the signing pool, and its queue being full
# must shed signing requests only, never the other traffic.
#
# Each worker looks every 5 s for pooled PKCS#11 sessions idle 30 s and
# closes them in a task of pki_sign_thread_pool.  That task used to go by
# the counts of pki_thread_pool: a trim refused by a full signing queue
# marked the main pool full, and for a second every ACME, admin and
# validation request of the worker was shed with 503, although its queue
# was empty (once per trim round, so about 1 s in 5 under a signing
# overload).
#
# Here: 1 worker, a signing pool of 2 threads and a queue of 1, Redis
# timeout 60 s.  Enrollments leave pooled sessions; 24 s later Redis is
# paused (CLIENT PAUSE) and three enrollments fill the signing pool (two
# threads waiting for Redis, one queued) while the sessions become due;
# ACME newNonce, which takes a thread of the main pool and no Redis once
# the worker has its nonce key, is asked every 100 ms through the trim
# rounds that find the signing queue full: every answer is 200.  Then the
# enrollments finish once Redis answers.  (Takes about 45 s.)

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use PKITest;

my $t = PKITest->new;
my $dir = $t->dir;

my $conf = $t->render_conf('--workers', 1, '--threads', 4,
                           '--sign-threads', 2, '--redis-timeout', '60s');
ok($conf =~ s{^(thread_pool pki_sign threads=2) max_queue=\d+;}
              {$1 max_queue=1;}m,
   'a signing pool of 2 threads and a queue of 1');
like($conf, qr/^\s*pki_sign_thread_pool pki_sign;/m,
     'pki_sign_thread_pool names it');
like($conf, qr/^\s*pki_key_vault /m, 'the CA key is in a token vault');

$t->start_redis;
$t->start_nginx($conf);

my ($csr) = $t->make_csr('trim', subj => '/CN=sign-pool-trim');

# enrollments in the background: [pid, result file]
sub enroll_bg {
    my ($tag, $n, $max) = @_;
    my @bg;
    for my $k (1 .. $n) {
        my $res = "$dir/$tag-$k.txt";
        my $pid = fork() // die "fork: $!";
        if ($pid == 0) {
            $t->{owner} = -1;           # the parent stops the servers
            $t->{curl_n} = 100000 * $k + ($tag eq 'warm' ? 0 : 50000);
            my $o = $t->est_enroll_timed($csr, "$tag-$k", $max);
            spew($res, join("\t", $o->{code}, sprintf('%.3f', $o->{dt}),
                            $o->{verified}) . "\n");
            POSIX::_exit(0);
        }
        push @bg, [$pid, $res];
    }
    return @bg;
}

sub results {
    my @r;
    for my $b (@_) {
        waitpid($b->[0], 0);
        push @r, [split /\t/, (slurp($b->[1]) // "0\t0\t0")];
    }
    return @r;
}

# --- pooled sessions: concurrent signers -----------------------------------

for my $round (1 .. 3) {
    my @r = results(enroll_bg('warm', 2, 20));
    is(scalar(grep { $_->[0] == 200 && $_->[2] } @r), 2,
       "warm-up round $round: two concurrent enrollments, certificates "
       . 'that verify');
}
my $warm = time;                        # the sessions are idle from here

# the worker loads the nonce key from Redis once; nonces then cost Redis
# nothing until they are redeemed
my $base = 'https://127.0.0.1:' . $t->https_port . '/acme';
sub nonce {
    my $t0 = time;
    my $r = $t->curl('HEAD', "$base/new-nonce", max_time => 5, quiet => 1,
                     extra => ['-I']);
    return ($r->{code}, time - $t0);
}
is((nonce())[0], 200, 'newNonce before the pause: 200');

# --- the signing pool full while the sessions become due -------------------

sleep(24 - (time - $warm)) if time - $warm < 24;

like($t->redis('CLIENT', 'PAUSE', '16000', 'ALL'), qr/OK/,
     'Redis paused for 16 s');
my $paused = time;

my @bg = enroll_bg('full', 3, 45);
sleep 1;
ok(!waitpid($_->[0], WNOHANG), 'an enrollment waits for Redis') for @bg;

my ($n, %codes, $slow) = (0);
while (time - $warm < 38) {
    my ($code, $dt) = nonce();
    $n++;
    $codes{$code}++;
    $slow++ if $dt > 1.5;
    sleep 0.1;
}
my $other = join(', ', map { "$_: $codes{$_}" }
                       grep { $_ != 200 } sort keys %codes);
is($codes{200} // 0, $n, "all $n newNonce requests answered 200 while the "
   . 'signing queue was full' . ($other ? " (others: $other)" : ''));
ok(!$slow, '  each within 1.5 s');

my $log = slurp($t->error_log) // '';
like($log, qr/thread pool "pki_sign" queue overflow/,
     'a trim round found the signing queue full (nginx says so)');
unlike($log, qr/thread pool queue full \(max_queue\).*new-nonce/,
       'no newNonce was shed');

# --- Redis answers again -----------------------------------------------------

$t->redis('CLIENT', 'UNPAUSE');
my @r = results(@bg);
is(scalar(grep { $_->[0] == 200 && $_->[2] } @r), 3,
   'the three enrollments finished with certificates that verify, once '
   . 'Redis answered');

$log = slurp($t->error_log) // '';
unlike($log, qr/\[alert\]|\[emerg\]|exited on signal/,
       'no alert, no crash in the error log');

$t->stop_nginx;

done_testing();
