#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Challenge validations and the shared thread pool.  A validation job holds
# a pool thread while its target answers (up to twice
# acme_validation_timeout), and every PKI request of the worker needs the
# same pool.  With one worker, a pool of 2 threads and
# acme_validation_jobs 1, against an http-01 responder that holds each
# answer until the test lets it go (one process per connection):
#  - four challenges posted at once run one after the other: the second
#    one is not fetched while the first is;
#  - a newOrder sent meanwhile is answered at once (it does not wait
#    behind validations for a thread);
#  - a challenge whose authorization is deactivated while its job waits is
#    never fetched, and the error log says the job was skipped;
#  - the others end valid, and no validation is dropped;
#  - accounts take turns: one account's four challenges, then another
#    account's one: that one is fetched third, not fifth;
#  - a reload waits for a running validation idle; a fast stop (SIGTERM)
#    cuts it short at once and stores nothing.
# Then the configuration: acme_validation_jobs 0, a timeout over 5 min and
# a resolver that is no address are refused by nginx -t.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX ();
use IO::Socket::IP;
use JSON::PP ();
use MIME::Base64 ();
use PKITest;
use ACMELoad;

plan(skip_all => 'CryptX / HTTP::Tiny not installed')
    if !ACMELoad::available();

my $t = PKITest->new;
$t->start_redis;
my $hport = PKITest::free_port();
# the name server of /acme-caa/: this test's (below)
my $dport = PKITest::free_port();
my $conf = $t->render_conf('--acme-http-port', $hport,
                           '--acme-tls-port', PKITest::free_port(),
                           '--workers', 1, '--threads', 2);
$conf =~ s{(\nhttp \{\n)}{$1    acme_validation_jobs 1;\n}
    or die 'no http block';
$conf =~ s{(\n(\s*)location /acme/ \{)}{
$2location /acme-caa/ {
$2    acme issuing acme;
$2    acme_caa_identities nginx-pki.test;
$2    acme_caa_check on;
$2    acme_validation_resolver 127.0.0.1:$dport;
$2    acme_validation_resolve_to 127.0.0.1;
$2    acme_validation_allow_private on;
$2    acme_validation_http_port $hport;
$2    acme_validation_timeout 3s;
$2}
$1} or die 'no ACME location in the config';
$t->start_nginx($conf);
my $www = $t->dir . '/www';
mkdir $www;

# the http-01 responder: a process per connection; each fetch is counted
# (TOKEN.hits) and held until release() when hold() came before it
ACMELoad::start_http01($t, $hport, $www, concurrent => 1);

sub hits {
    my @l = (slurp("$www/$_[0].hits") // '') =~ /\n/g;
    return scalar @l;
}

# the time of TOKEN's first fetch, 0 if none
sub fetched_at {
    return (slurp("$www/$_[0].hits") // '') =~ /^([\d.]+)/ ? $1 : 0;
}

sub hold { ACMELoad::hold_http01($www, $_[0]) }

# the held answer for TOKEN goes out; returns the time
sub release {
    my $t0 = time;
    ACMELoad::release_http01($www, $_[0]);
    return $t0;
}

# 1 once TOKEN was fetched (10 s at most)
sub wait_fetched {
    my ($tok) = @_;
    for (1 .. 200) { return 1 if hits($tok); sleep 0.05 }
    return 0;
}

my $base = 'https://127.0.0.1:' . $t->https_port . '/acme';
my $c = ACMELoad->new(t => $t, base => $base, www => $www, timeout => 30);
ok($c->account->{ok}, 'an account');

my @names = map { "job$_.example.test" } 1 .. 4;
my $r = $c->_post("$base/new-order", { identifiers => [
    map { { type => 'dns', value => $_ } } @names ] });
is($r->{status}, 201, 'an order for four names') or diag($r->{content});

my $thumb = $c->{key}->export_key_jwk_thumbprint('SHA256');
my (@az, @ch);
for my $url (@{ $r->{json}{authorizations} || [] }) {
    my $a = $c->_post($url, undef);
    my ($h) = grep { $_->{type} eq 'http-01' }
              @{ $a->{json}{challenges} || [] };
    spew("$www/$h->{token}", "$h->{token}.$thumb");
    hold($h->{token});
    push @az, $url;
    push @ch, $h;
}
is(scalar @ch, 4, 'four http-01 challenges');

# the first job runs; the responder holds its answer
$r = $c->_post($ch[0]{url}, {});
is($r->{status}, 200, 'challenge 1 posted');
ok(wait_fetched($ch[0]{token}), '... and fetched');
my $held = time;

# three more while it runs: they wait for the job slot, not in the pool
for my $i (1 .. 3) {
    $r = $c->_post($ch[$i]{url}, {});
    is($r->{status}, 200, 'challenge ' . ($i + 1) . ' posted');
    is($r->{json}{status} // '', 'processing', '... processing');
}
my $posted4 = time;

$r = $c->_post("$base/new-order", { identifiers => [
    { type => 'dns', value => 'other.example.test' } ] });
is($r->{status}, 201, 'a newOrder while validations are held');
# a validation holds its thread until its answer: a newOrder that waited
# for a thread would be answered only once challenge 1's fetch (held until
# release() below) timed out, the challenge then invalid.  Not timed: it
# must come while that validation still runs.
my $c1 = $c->_post($ch[0]{url}, undef);
is($c1->{json}{status} // '', 'processing', '... answered while challenge '
   . '1 is still held (processing)') or diag($c1->{content});
is(hits($ch[1]{token}), 0, 'challenge 2 is not fetched while challenge 1 '
   . 'is (acme_validation_jobs 1)');

# the last one's authorization is deactivated while its job waits
$r = $c->_post($az[3], { status => 'deactivated' });
is($r->{json}{status} // '', 'deactivated', 'authorization 4 deactivated '
   . 'while its validation waits');

# in turn: each held at least 0.5 s, the next one not fetched meanwhile;
# each fetch starts once the one before is answered.  The third is held
# until the fourth job has waited 2 s: a job that waited that long for
# its turn reads its authorization again before it fetches anything
# (PKI_ACME_JOB_WAITED in core/acme.c); one that did not fetches, and
# its result is not stored.
my @rel;
for my $i (0 .. 2) {
    sleep($held + 0.5 - time) if time < $held + 0.5;
    sleep($posted4 + 2.2 - time) if $i == 2 && time < $posted4 + 2.2;
    is(hits($ch[$i + 1]{token}), 0, 'challenge ' . ($i + 2) . ' is not '
       . 'fetched while challenge ' . ($i + 1) . ' is held') if $i < 2;
    $rel[$i] = release($ch[$i]{token});
    next if $i == 2;
    ok(wait_fetched($ch[$i + 1]{token}), 'then challenge ' . ($i + 2)
       . ' is fetched');
    $held = time;
}

for my $i (0 .. 2) {
    my $a = $c->_poll($az[$i], 'valid', 20);
    is($a->{json}{status} // '', 'valid', 'authorization ' . ($i + 1)
       . ' valid') or diag($a->{content});
}

my @at = map { fetched_at($ch[$_]{token}) } 0 .. 2;
ok($at[1] >= $rel[0] && $at[2] >= $rel[1],
   sprintf('one validation at a time (fetches %.2f s, %.2f s after the '
           . 'answer before)', $at[1] - $rel[0], $at[2] - $rel[1]));
release($ch[3]{token});

# the fourth job's turn: its line in the error log
my $log = '';
for (1 .. 100) {
    $log = slurp($t->error_log) // '';
    last if $log =~ /validation of http-01 job4\.example\.test skipped/;
    sleep 0.1;
}
is(hits($ch[3]{token}), 0, 'the deactivated authorization is never '
   . 'fetched');
like($log, qr/validation of http-01 job4\.example\.test skipped: its /,
     '... the error log says its job was skipped');
unlike($log, qr/not started/, 'no validation was dropped');
unlike($log, qr/exited on signal|\[alert\]/, 'no crash in the log');

# --- accounts take turns ------------------------------------------------------------

# Account A posts four challenges (each answer held until all five are
# posted, then let go as it comes), then account B one: B's is fetched
# third (after A's first, which runs, and A's second, whose turn came
# first), not after all of A's.
{
    my $post_all = sub {
        my ($cl, $tag, $n) = @_;
        my $o = $cl->_post("$base/new-order", { identifiers => [
            map { { type => 'dns', value => "$tag$_.example.test" } } 1 .. $n ]});
        my $th = $cl->{key}->export_key_jwk_thumbprint('SHA256');
        my @c;
        for my $url (@{ $o->{json}{authorizations} || [] }) {
            my $a = $cl->_post($url, undef);
            my ($h) = grep { $_->{type} eq 'http-01' }
                      @{ $a->{json}{challenges} || [] };
            spew("$www/$h->{token}", "$h->{token}.$th");
            hold($h->{token});
            push @c, [$h, $a->{json}{identifier}{value}];
        }
        return @c;
    };
    my $c2 = ACMELoad->new(t => $t, base => $base, www => $www,
                           timeout => 30);
    ok($c2->account->{ok}, 'turns: a second account');
    my @a = $post_all->($c, 'fair-a', 4);
    my @bc = $post_all->($c2, 'fair-b', 1);
    $c->_post($_->[0]{url}, {}) for @a;
    $c2->_post($_->[0]{url}, {}) for @bc;
    my @all = (@a, @bc);
    my %at;
    for (1 .. 400) {
        %at = map { my $f = fetched_at($_->[0]{token});
                    $f ? ($_->[1] => $f) : () } @all;
        release($_->[0]{token}) for grep { hits($_->[0]{token}) } @all;
        last if keys %at == @all;
        sleep 0.05;
    }
    is(scalar keys %at, 5, 'turns: all five fetched');
    my @order = sort { $at{$a} <=> $at{$b} } keys %at;
    is($order[2] // '', 'fair-b1.example.test',
       "turns: the other account's validation is the third ("
       . join(', ', map { s/\.example\.test//r } @order) . ')');
}

# --- finalize's CAA re-check takes a slot of acme_validation_jobs -----------------

# A name server that logs each query's name (dns.log) and answers it with
# no records (no CAA: any CA may issue), or, while the file "mute" exists,
# leaves those for stall.example.test unanswered.
my $dnslog = $t->dir . '/dns.log';
my $mute = $t->dir . '/mute';
{
    my $u = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => $dport,
                                Proto => 'udp') or die "udp $dport: $!";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $SIG{TERM} = sub { POSIX::_exit(0) };
        while (1) {
            my $peer = $u->recv(my $q, 512) // next;
            next if length($q) < 17;
            my ($i, @l) = (12);
            while ((my $n = ord(substr($q, $i, 1) // "\0")) > 0) {
                push @l, substr($q, $i + 1, $n);
                $i += $n + 1;
            }
            my $name = join('.', @l);
            my $m = -e $mute && $name =~ /^stall\.example\.test$/i;
            if (open(my $h, '>>', $dnslog)) {
                print $h ($m ? 'muted ' : 'answered ') . "$name\n";
                close $h;
            }
            next if $m;
            # the header with QR, RD, RA and NOERROR, one question (its
            # name, type and class), no answer
            $u->send(pack('n6', unpack('n', $q), 0x8180, 1, 0, 0, 0)
                     . substr($q, 12, $i + 5 - 12), 0, $peer);
        }
    }
    close $u;
    $t->{children}{dns} = $pid;
}

# One worker, 2 pool threads, acme_validation_jobs 1.  Two orders of one
# name are ready (the second by reuse), their authorization validated 9
# hours ago, so finalize reads CAA again; the name server stops answering
# for that name.
# The first finalize's re-check holds the worker's one slot for the 3 s
# timeout.  Meanwhile: a challenge posted waits for the slot (it is not
# fetched), a second finalize is refused at once with 503 rateLimited and
# Retry-After and its order stays ready, and the directory is served at
# once (before, each finalize took a pool thread for the timeout: the
# second one too, and requests waited behind them).  Then the name server
# answers again: the waiting validation runs, and the second order is
# finalized.
{
    my $cbase = 'https://127.0.0.1:' . $t->https_port . '/acme-caa';
    my $cc = ACMELoad->new(t => $t, base => $cbase, www => $www,
                           timeout => 30);
    ok($cc->account->{ok}, 'CAA: an account');
    my $cthumb = $cc->{key}->export_key_jwk_thumbprint('SHA256');
    my $r1 = $cc->ready('stall.example.test');
    is($r1->{ready}{json}{status} // '', 'ready', 'CAA: an order ready')
        or diag($r1->{ready}{content});
    my $r2 = $cc->_post("$cbase/new-order", { identifiers => [
        { type => 'dns', value => 'stall.example.test' } ] });
    is($r2->{json}{status} // '', 'ready', 'CAA: a second order of the '
       . 'name, ready by reuse') or diag($r2->{content});

    my ($acct, $aid) = ($r1->{json}{authorizations}[0] // '')
                       =~ m{/authz/([\w-]+)/([\w-]+)$};
    my $akey = "pki:{acme:$acct}:authz:$aid";
    my $az = JSON::PP::decode_json($t->redis_raw('GET', $akey));
    $az->{validated} -= 9 * 3600;
    $t->redis('SET', $akey, JSON::PP::encode_json($az), 'KEEPTTL');

    my $r3 = $cc->_post("$cbase/new-order", { identifiers => [
        { type => 'dns', value => 'waits.example.test' } ] });
    my $az3 = $r3->{json}{authorizations}[0] // '';
    my ($h3) = grep { $_->{type} eq 'http-01' }
               @{ $cc->_post($az3, undef)->{json}{challenges} || [] };
    spew("$www/$h3->{token}", "$h3->{token}.$cthumb");

    my ($der1) = $t->make_csr('stall1', subj => '/',
                              san => 'DNS:stall.example.test');
    my ($der2) = $t->make_csr('stall2', subj => '/',
                              san => 'DNS:stall.example.test');
    # the first finalize's re-check ended: nginx logs its failure (the
    # lookup timed out) before it answers that finalize, in the one worker
    my $recheck_done = sub {
        return (slurp($t->error_log) // '')
               =~ /CAA of "stall\.example\.test", read again at final/;
    };
    # a finalize on a connection of its own, in a process of its own: its
    # status, problem type, Retry-After and time taken go to FILE, and
    # whether the first re-check was still held right after the answer
    my $bg_finalize = sub {
        my ($url, $der, $file) = @_;
        my $pid = fork() // die "fork: $!";
        return $pid if $pid;
        $cc->{http} = HTTP::Tiny->new(verify_SSL => 1, timeout => 30,
            SSL_options => { SSL_ca_file => $t->pki . '/root.pem' });
        delete $cc->{nonce};
        my $t0 = time;
        my $f = $cc->_post($url,
                           { csr => MIME::Base64::encode_base64url($der) });
        my $dt = time - $t0;
        my $held = $recheck_done->() ? 'over' : 'held';
        spew($file, sprintf("%s %s %s %.2f %s", $f->{status}, $f->{problem},
                            $f->{headers}{'retry-after'} // '-', $dt,
                            $held));
        POSIX::_exit(0);
    };

    spew($mute, '');
    my ($fin1, $fin2) = map { $t->dir . "/fin$_" } 1, 2;
    my $pid1 = $bg_finalize->($r1->{ready}{json}{finalize}, $der1, $fin1);
    my $asked = 0;
    for (1 .. 100) {
        $asked = (slurp($dnslog) // '') =~ /^muted .*stall\.example\.test/m
            and last;
        sleep 0.05;
    }
    ok($asked, 'CAA: the first finalize reads CAA, the name server holds '
       . 'it');

    my $r = $cc->_post($h3->{url}, {});
    is($r->{json}{status} // '', 'processing', 'CAA: a challenge posted '
       . 'meanwhile: processing');

    # The second finalize, and the directory meanwhile.  Not
    # timed: each must be answered while the first finalize's re-check is
    # still held, its timeout (3 s on) not yet logged; a request waiting
    # for that thread would be answered only after the log line.
    my $pid2 = $bg_finalize->($r2->{json}{finalize}, $der2, $fin2);
    my $d = HTTP::Tiny->new(verify_SSL => 1, timeout => 30,
        SSL_options => { SSL_ca_file => $t->pki . '/root.pem' })
        ->get("$base/directory");
    my $over = $recheck_done->();
    is($d->{status}, 200, 'CAA: the directory is served meanwhile');
    ok(!$over, '... while the first re-check is still held');
    waitpid($pid2, 0);
    my ($st, $prob, $ra, $took, $held) = split ' ', (slurp($fin2) // '');
    is($st, 503, 'CAA: a second finalize while the slot is held: 503');
    is($prob, 'rateLimited', '... rateLimited');
    like($ra, qr/^[1-9]\d*$/, '... with Retry-After');
    is($held // '', 'held', sprintf('... at once: answered while the first '
       . 're-check is still held (%s s)', $took // '?'));
    my $o2 = $cc->_post($r2->{headers}{location}, undef);
    is($o2->{json}{status} // '', 'ready', '... and its order stays ready');
    like(slurp($t->error_log) // '',
         qr/\[warn\] .*too many CAA lookups.*outbound lookup slot is held/,
         '... logged as a warning (load, not a failure)');

    is(hits($h3->{token}), 0, 'CAA: the challenge is not fetched while the '
       . 're-check holds the one slot');

    waitpid($pid1, 0);
    unlink $mute;
    like(slurp($fin1) // '', qr/^400 dns /, 'CAA: the first finalize fails '
         . 'with dns after the timeout');

    my $v = $cc->_poll($az3, 'valid', 20);
    is($v->{json}{status} // '', 'valid', 'CAA: then the waiting validation '
       . 'runs, and its name validates');
    my $f3 = $cc->_post($r2->{json}{finalize},
                        { csr => MIME::Base64::encode_base64url($der2) });
    is($f3->{status}, 200, 'CAA: the second order finalized again, the '
       . 'name server answering: 200') or diag($f3->{content});
    is($f3->{json}{status} // '', 'valid', '... valid');
}

# --- a reload while a validation runs ----------------------------------------------

# A validation of NAME under way, its target holding the answer until
# release(): returns (authorization URL, 1 when the target was reached,
# the token).
sub held_validation {
    my ($name) = @_;
    my $o = $c->_post("$base/new-order", { identifiers => [
        { type => 'dns', value => $name } ] });
    my $az = $o->{json}{authorizations}[0] // '';
    my $a = $c->_post($az, undef);
    my ($h) = grep { $_->{type} eq 'http-01' }
              @{ $a->{json}{challenges} || [] };
    spew("$www/$h->{token}", "$h->{token}.$thumb");
    hold($h->{token});
    $c->_post($h->{url}, {});
    return ($az, wait_fetched($h->{token}), $h->{token});
}

# 1 once process PID is gone (or a zombie), within SECS seconds
sub gone {
    my ($pid, $secs) = @_;
    for (1 .. $secs * 20) {
        return 1 if !-e "/proc/$pid"
                    || (slurp("/proc/$pid/stat") // '') =~ /\) Z /;
        sleep 0.05;
    }
    return 0;
}

# The old worker waits for its validation idle in its event loop, then
# logs the result and exits.  (It went on to exit at once, where nginx's
# thread pool teardown spun a CPU until the pool thread was free, and the
# result was never logged.)
{
    my $master = $t->{children}{nginx};
    my @old = $t->workers_of($master);
    my ($az, $ok, $tok) = held_validation('reload.example.test');
    ok($ok, 'reload: the validation is under way');
    kill 'HUP', $master;
    sleep 1;
    my $cpu = sub {
        my @f = split ' ', (slurp("/proc/$old[0]/stat") // '');
        return @f ? $f[13] + $f[14] : 0;
    };
    my ($c0, $t0) = ($cpu->(), time);
    sleep 1.5;
    my $ticks = $cpu->() - $c0;
    my $hz = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;
    ok(-e "/proc/$old[0]" && $ticks < 0.2 * $hz * (time - $t0),
       "reload: the old worker waits idle ($ticks ticks in 1.5 s)");
    release($tok);
    my $v = $c->_poll($az, 'valid', 20);
    is($v->{json}{status} // '', 'valid', 'reload: the validation ends '
       . 'valid');
    ok(gone($old[0], 10), 'reload: then the old worker exits');
    like(slurp($t->error_log) // '',
         qr/acme: validation: ok .*reload\.example\.test/,
         'reload: its result is logged');
}

# --- a fast stop while a validation runs -----------------------------------------

# SIGTERM to the worker: the validation is cut short at once (nginx's thread
# pool teardown spun a CPU until the target answered), nothing is stored
# for it, the error log says so, and the challenge stays processing for a
# poll to restart.  The master starts a new worker.
{
    my $master = $t->{children}{nginx};
    my @w;
    for (1 .. 100) { @w = $t->workers_of($master); last if @w == 1; sleep 0.1 }
    my ($az, $ok, $tok) = held_validation('stop.example.test');
    ok($ok, 'stop: the validation is under way');
    my $t0 = time;
    kill 'TERM', $w[0];
    my $gone = gone($w[0], 5);
    my $dt = time - $t0;
    ok($gone && $dt < 1.5,
       sprintf('stop: the worker exits at once (%.2f s; the target holds '
               . 'its answer)', $dt));
    like(slurp($t->error_log) // '',
         qr/acme: the worker stops: 1 running validation\(s\) cut short/,
         'stop: the error log says the validation was cut short');
    for (1 .. 100) { last if $t->workers_of($master) == 1; sleep 0.1 }
    my $a = $c->_post($az, undef);
    is($a->{json}{status} // '', 'pending',
       'stop: the authorization is still pending (nothing stored)');
    my ($h2) = grep { $_->{type} eq 'http-01' }
               @{ $a->{json}{challenges} || [] };
    is($h2->{status} // '', 'processing',
       'stop: its challenge is still processing');
    release($tok);
}

# --- configuration --------------------------------------------------------------

sub refused {
    my ($name, $re, $fix) = @_;
    my $bad = $t->render_conf('--acme-http-port', $hport);
    $fix->(\$bad);
    my ($okc, $out) = $t->nginx_test($t->write_conf($bad, 'bad.conf'));
    ok(!$okc, "$name: nginx -t refuses it");
    like($out, $re, "$name: and says why") or diag($out);
}

refused('acme_validation_jobs 0',
        qr/"acme_validation_jobs" directive must be 1\.\.1024 in \S+:\d+/,
        sub { ${ $_[0] } =~ s{(\nhttp \{\n)}{$1    acme_validation_jobs 0;\n} });
refused('acme_validation_timeout 6m',
        qr/acme_validation_timeout must be 1ms\.\.300s/,
        sub { ${ $_[0] } =~ s{acme_validation_timeout \S+;}
                             {acme_validation_timeout 6m;} });
refused('acme_validation_resolver dns.example',
        qr/resolver is not an IP address/,
        sub { ${ $_[0] } =~ s{(acme_validation_timeout \S+;)}
                             {$1 acme_validation_resolver dns.example;} });

$t->stop_all;
done_testing();
