#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Redis stalls (DEBUG SLEEP 6) under a single nginx worker with
# pki_redis ... timeout=1s.  Nothing here is timed: every claim is an
# order of events.  The test's own Redis connection sent the DEBUG SLEEP,
# so its +OK arrives exactly when Redis wakes ("Redis still asleep" = no
# +OK yet), and an enrollment stuck on Redis is answered 503 only when
# nginx's 1 s Redis timeout fires:
#  (a) simpleenroll answers 503 + Retry-After while Redis is still asleep
#      (each client sends a PING on its own Redis connection first and
#      has no PONG yet when its 503 arrives): the 1 s timeout sheds it,
#      not the end of the stall;
#  (b) GET cacerts (event loop, no Redis), a static file and a cached OCSP
#      answer (GET, no nonce) on the same worker are answered during the
#      stall, each before Redis wakes and before the 503 of an enrollment
#      sent just before it (a marker whose Redis call began first): the
#      answer waited neither for Redis nor for a Redis timeout, so the
#      event loop never blocks on Redis, and the OCSP cache answers from
#      its revocation view while the view's refresh is stuck on Redis
#      (ocsp_responder_revgen_stale, stale-while-revalidate;
#      PKI_FAULT_OCSP_STALE=0 turns it off and the OCSP probes then wait
#      for Redis: the broken variant, which fails these checks);
#  (c) after Redis wakes, no certificate record is half-written: a pending
#      record (a reservation Redis executed after the client had given up)
#      carries no certificate, and every record that holds one was returned
#      with a 200;
#  (d) enrollment works again right after the stall, without a restart;
#  (e) after the stall a revocation reaches the cached OCSP answer within
#      revgen_check + revgen_stale (the staleness bound).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::SSL;
use IO::Socket::INET;
use IO::Socket::UNIX;
use IO::Select;
use MIME::Base64 qw(encode_base64);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use PKITest;

my $STALL = 6;          # seconds Redis sleeps: long enough that the rounds
                        # and waves below (about 3.2 s of 1 s Redis
                        # timeouts) end well before Redis wakes; only the
                        # order of events is checked, never a duration
my $ROUNDS = 3;         # marker + probe rounds during the stall
my $WAVE = 3;           # parallel enrollments per wave (< pki threads)

my $t = PKITest->new;
$t->start_redis_with('--enable-debug-command', 'local');
my $dir = $t->dir;
# one worker: the enrollments and the probes share its event loop
my $conf = $t->render_conf('--workers', 1, '--redis-timeout', '1s');
my $stale = $ENV{PKI_FAULT_OCSP_STALE};
$conf =~ s{(ocsp_responder_cache zone=ocsp:\S+;)}
          {$1\n            ocsp_responder_cache_header on;\n            ocsp_responder_revgen_check 1s;}
    or die 'no cached OCSP location in the config';
$conf =~ s{(ocsp_responder_revgen_check 1s;)}
          {$1\n            ocsp_responder_revgen_stale $stale;}
    if defined $stale && $stale =~ /^\w+$/;
$conf =~ s{(\n(\s*)location /ocsp \{)}
          {\n$2location /static/ {\n$2    alias $dir/static/;\n$2}\n$1}
    or die 'no OCSP location in the config';
mkdir "$dir/static";
spew("$dir/static/probe.txt", "static content\n" x 64);
$t->start_nginx($conf);
my $master = $t->{children}{nginx};
my $CERTS = 'pki:{ca:issuing}:cert:*';

sub workers {
    my $out = `ps -o pid= --ppid $master 2>/dev/null`;
    return sort { $a <=> $b } map { /(\d+)/ ? $1 : () } split /\n/, $out;
}

my ($csr) = $t->make_csr('slow', subj => '/CN=redis-slow');
my $n200 = 0;

sub enroll_verified {
    my ($name) = @_;
    my $r = $t->est_post('simpleenroll', $csr, max_time => 15, quiet => 1);
    return ($r, 0) if $r->{code} != 200;
    $n200++;
    my $pem = $t->p7_to_pem($r->{body}) or return ($r, 0);
    my $f = $t->save_first_cert($pem, $name) or return ($r, 0);
    my ($ok) = $t->verify_chain($f);
    return ($r, $ok, $f);
}

# warm up: the pool threads hold Redis connections
my $ocsp_cert;
for my $i (1 .. 3) {
    my ($r, $ok, $f) = enroll_verified("warm$i");
    is($r->{code}, 200, "warm-up enrollment $i: 200") or diag($r->{body});
    $ocsp_cert //= $f;
}
$t->give_up('no certificate for the OCSP probes') if !$ocsp_cert;
my @w0 = workers();
is(scalar @w0, 1, "one worker (@w0)");
my $before = scalar $t->redis_keys($CERTS);
is($before, $n200, 'one record per warm-up enrollment');

# --- HTTP on prepared TLS connections ---------------------------------------------
#
# The clients connect (TCP + TLS) before the stall and only send their
# request during it, so that their start-up and handshakes are over while
# Redis is still awake.  Nothing is timed: the checks order the answers
# against two events, Redis waking up and a marker enrollment's 503.

# a TLS connection, undef if it fails ($SSL_ERROR says why)
sub tls_connect {
    return IO::Socket::SSL->new(
        PeerHost => '127.0.0.1', PeerPort => $t->https_port,
        SSL_ca_file => $t->pki . '/root.pem', SSL_verifycn_name => 'localhost',
        SSL_verifycn_scheme => 'http', Timeout => 5);
}

# true if $s (TLS, TCP or unix) has something to read (or EOF) within
# $wait seconds (0: now): the events below are ordered with this
sub readable {
    my ($s, $wait) = @_;
    return 1 if $s->can('pending') && $s->pending;
    return scalar IO::Select->new($s)->can_read($wait // 0);
}

# a raw connection to Redis (the unix socket), for PINGs and DEBUG SLEEP
sub redis_conn {
    return IO::Socket::UNIX->new(Peer => $t->redis_sock)
        || die "Redis connection: $!";
}

# one request on a connection; returns (status, {headers}, body, seconds);
# $limit (default 5 s) only ends a wait that would otherwise hang the test
sub http_on {
    my ($s, $req, $limit) = @_;
    my $t0 = time;
    print {$s} $req or return (0, {}, 'write failed', time - $t0);
    return http_read($s, $limit, $t0);
}

# reads what the server sent on a TLS connection without a request (TLS
# 1.3 session tickets), so that readable() then means an HTTP answer
sub drain_tls {
    my ($s) = @_;
    $s->blocking(0);
    # one record per sysread without SSL_MODE_AUTO_RETRY (undef, "wants a
    # read", after each ticket): read while the socket has something
    for (1 .. 20) {
        last if !readable($s);
        sysread($s, my $buf, 16384);
    }
    $s->blocking(1);
}

# the answer to a request already sent on $s
sub http_read {
    my ($s, $limit, $t0) = @_;
    $t0 //= time;
    my $deadline = time + ($limit || 5);
    my ($in, $buf) = ('', '');
    while ($in !~ /\r\n\r\n/) {
        return (0, {}, 'timeout/eof in head', time - $t0)
            if time > $deadline;
        next if !readable($s, 0.1);
        my $n = sysread($s, $buf, 16384);
        return (0, {}, 'eof in head', time - $t0) if !$n;
        $in .= $buf;
    }
    my ($h, $body) = split /\r\n\r\n/, $in, 2;
    my ($code) = $h =~ m{^HTTP/1\.1 (\d{3})};
    my %h;
    $h{lc $1} = $2 while $h =~ /^([^:\s]+):\s*(.*?)\r?$/mg;
    my $len = $h{'content-length'};
    return (0, \%h, 'no content-length', time - $t0) if !defined $len;
    while (length $body < $len) {
        return (0, \%h, 'timeout in body', time - $t0) if time > $deadline;
        next if !readable($s, 0.1);
        my $n = sysread($s, $buf, 16384);
        return (0, \%h, 'eof in body', time - $t0) if !$n;
        $body .= $buf;
    }
    return ($code // 0, \%h, $body, time - $t0);
}

my $enroll_req = do {
    require MIME::Base64;
    my $b = MIME::Base64::encode_base64($csr);
    "POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\n"
    . 'Authorization: Basic ' . MIME::Base64::encode_base64('demo:demo', '')
    . "\r\nContent-Type: application/pkcs10\r\nContent-Length: "
    . length($b) . "\r\n\r\n$b";
};

# An enrollment client in a child process: connected now, sends $at
# seconds after the stall began (the parent writes that time to DIR/go once
# it has seen Redis asleep; the time only spreads the clients over the
# stall, nothing is measured with it).  Right before its request it sends a
# PING on its own Redis connection and, when its answer arrives, notes
# whether the PONG is there already: no PONG = answered while Redis was
# still asleep.  The result goes to a file.
my @kids;

sub enroll_at {
    my ($tag, $at) = @_;
    my $res = "$dir/bg-$tag.txt";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $t->{owner} = -1;                     # the parent stops the servers
        my $s = tls_connect();
        if (!$s) {
            # a result the parent's checks refuse (status 0)
            spew($res, "0\t0\t\tawake\tTLS connect: $SSL_ERROR");
            POSIX::_exit(0);
        }
        my $rc = IO::Socket::UNIX->new(Peer => $t->redis_sock);
        if (!$rc) {
            spew($res, "0\t0\t\tawake\tRedis connect: $!");
            POSIX::_exit(0);
        }
        my $dl = time + 30;
        sleep 0.005 while !-s "$dir/go" && time < $dl;
        my $w = (slurp("$dir/go") // 0) + $at - time;
        sleep $w if $w > 0;
        syswrite($rc, "PING\r\n");
        my ($code, $h, $body, $dt) = http_on($s, $enroll_req, 15);
        my $redis = readable($rc) ? 'awake' : 'asleep';
        spew($res, join("\t", $code, sprintf('%.3f', $dt),
                        $h->{'retry-after'} // '', $redis,
                        substr($body, 0, 200) =~ s/\s+/ /gr));
        POSIX::_exit(0);
    }
    push @kids, [$pid, $res, $tag];
}

sub reap_kids {
    for my $k (@kids) {
        my $deadline = time + 30;
        while (waitpid($k->[0], WNOHANG) != $k->[0]) {
            if (time > $deadline) {
                kill 'KILL', $k->[0];
                waitpid($k->[0], 0);
                last;
            }
            sleep 0.05;
        }
    }
}

my $ka = tls_connect() or $t->give_up("TLS connect: $SSL_ERROR");
my $cacerts_req = "GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost"
                  . "\r\n\r\n";

sub cacerts_probe {
    my ($code, $h, $body, $dt) = http_on($ka, $cacerts_req, 5);
    return ($code, $dt);
}

my ($c0) = cacerts_probe();
is($c0, 200, 'cacerts probe before the stall: 200');

# cached OCSP (GET form, no nonce) and a static file, on one plain HTTP
# keep-alive connection to the same worker
my $pki = $t->pki;
my $ocsp_der = "$dir/ocsp-req.der";
{
    my ($rc, $out, $err) = run_cmd(['openssl', 'ocsp', '-issuer',
                                    "$pki/issuing.pem", '-cert', $ocsp_cert,
                                    '-no_nonce', '-reqout', $ocsp_der],
                                   timeout => 30);
    is($rc, 0, 'OCSP request written') or diag($err);
}
(my $ocsp_enc = encode_base64(slurp($ocsp_der) // '', ''))
    =~ s{([/+=])}{sprintf('%%%02X', ord($1))}ge;
my $ocsp_req = "GET /ocsp/$ocsp_enc HTTP/1.1\r\nHost: localhost\r\n\r\n";
my $static_req = "GET /static/probe.txt HTTP/1.1\r\nHost: localhost\r\n\r\n";
my $hc = IO::Socket::INET->new(PeerHost => '127.0.0.1',
                               PeerPort => $t->http_port, Timeout => 5)
    or $t->give_up("HTTP connect: $!");

sub ocsp_status_of {
    my ($body) = @_;
    my $f = "$dir/ocsp-resp-" . int(rand(1e9)) . '.der';
    spew($f, $body);
    my ($rc, $out, $err) = run_cmd(['openssl', 'ocsp', '-respin', $f,
                                    '-issuer', "$pki/issuing.pem", '-cert',
                                    $ocsp_cert, '-CAfile', "$pki/root.pem",
                                    '-verify_other', "$pki/issuing.pem"],
                                   timeout => 30);
    return "$out\n$err";
}

my ($oc, $oh, $ocsp_body) = http_on($hc, $ocsp_req, 5);
is($oc, 200, 'OCSP before the stall: 200');
($oc, $oh, $ocsp_body) = http_on($hc, $ocsp_req, 5)
    if ($oh->{'x-ocsp-cache'} // '') ne 'HIT';
is($oh->{'x-ocsp-cache'}, 'HIT', 'OCSP before the stall: cached (HIT)');
like(ocsp_status_of($ocsp_body), qr/: good/, 'the cached OCSP answer: good');
my ($sc, $sh, $static_body) = http_on($hc, $static_req, 5);
is($sc, 200, 'static file before the stall: 200');

sub ocsp_probe {
    my ($code, $h, $body, $dt) = http_on($hc, $ocsp_req, 5);
    return ($code, $dt, ($h->{'x-ocsp-cache'} // '-')
            . ($body eq $ocsp_body ? '' : ' (other bytes)'));
}

sub static_probe {
    my ($code, $h, $body, $dt) = http_on($hc, $static_req, 5);
    return ($code, $dt, $body eq $static_body ? '' : 'other bytes');
}

# keep the OCSP cache's revocation view fresh up to the stall, as traffic
# would (a view older than revgen_check + revgen_stale is not served)
for (1 .. 5) {
    ocsp_probe();
    sleep 0.1;
}

# --- the stall -----------------------------------------------------------------------

my $log_off = length(slurp($t->error_log) // '');
# The clients connect first (TLS handshakes before the stall) and send
# 0.2 s and 1.2 s into the stall: each wave's 503 (1 s Redis timeout) is
# due long before Redis wakes at 6 s.  The waves, like the rounds below,
# start once Redis is seen asleep (a PING on another connection stops
# being answered), not at the DEBUG SLEEP.
enroll_at("a$_", 0.2) for 1 .. $WAVE;
enroll_at("b$_", 1.2) for 1 .. $WAVE;
# one prepared TLS connection per round for its marker enrollment
my @markers = map { tls_connect()
                    or $t->give_up("TLS connect: $SSL_ERROR") } 1 .. $ROUNDS;
# the clients' TLS handshakes; OCSP traffic goes on meanwhile (a cached
# answer after an idle spell longer than revgen_check waits for one Redis
# round trip by design: the revocation bound after idleness)
for (1 .. 10) {
    ocsp_probe();
    sleep 0.1;
}
# The stall: DEBUG SLEEP sent on our own connection, whose +OK is then the
# wake-up signal (Redis writes its replies only after the command, so no
# reply on $sleeper = Redis has not woken yet).
my $sleeper = redis_conn();
my $stall0 = time;
syswrite($sleeper, "DEBUG SLEEP $STALL\r\n");
{
    # asleep once a PING on another connection gets no answer in 100 ms
    # (the rounds need it asleep before they start, and a PONG that is
    # just late would make a round's checks fail, never pass wrongly)
    my $ping = redis_conn();
    my $dl = time + 10;
    while (time < $dl && !readable($sleeper)) {
        syswrite($ping, "PING\r\n");
        last if !readable($ping, 0.1);
        sysread($ping, my $pong, 64);
        ocsp_probe();
        sleep 0.02;
    }
    $stall0 = time - 0.1;
    spew("$dir/go.tmp", sprintf('%.3f', $stall0));
    rename("$dir/go.tmp", "$dir/go");
    close $ping;
}

# The rounds.  Each sends an enrollment (the marker: its Redis call hangs
# until nginx's 1 s Redis timeout, then it is answered 503), then one
# cacerts, one static and one cached OCSP probe on the same worker.  Each
# probe must be answered before the marker's 503 and before Redis wakes:
# a probe that waited for Redis (for it to wake, or for a Redis timeout,
# which for the probe began after the marker's) would be answered after
# one of the two.  The OCSP probe goes last, after the marker's Redis call
# had the most time to begin.  Every round starts a Redis timeout after the
# previous one, so the rounds cover three revgen_check periods of the
# stall: the OCSP view's refresh is due, and stuck, during them.
my (@probes, @mk);
for my $i (0 .. $ROUNDS - 1) {
    last if readable($sleeper);            # Redis awake: reported below
    my $m = $markers[$i];
    drain_tls($m);
    die "round $i: the marker connection has something to read before its "
        . 'request' if readable($m);
    my $m0 = time;
    print {$m} $enroll_req;
    for my $p (['cacerts', \&cacerts_probe], ['static file', \&static_probe],
               ['cached OCSP', \&ocsp_probe]) {
        my ($code, $dt, $what) = $p->[1]->();
        push @probes, { what => $p->[0], round => $i + 1, code => $code,
                        ms => $dt * 1000, tag => $what // '',
                        marker => readable($m) ? 'answered' : 'pending',
                        redis => readable($sleeper) ? 'awake' : 'asleep' };
    }
    # OCSP traffic goes on until the marker's answer, as it would on a
    # responder (a gap of more than revgen_check, here the marker's 1 s
    # wait, after a refresh that failed no longer makes a cached answer
    # carry the next one: t/fault_ocsp_sparse.t checks sparse traffic)
    my $dl = time + 15;
    ocsp_probe() while !readable($m, 0.1) && time < $dl;
    my ($code, $h, $body, $dt) = http_read($m, 15, $m0);
    push @mk, { tag => 'round ' . ($i + 1), code => $code,
                ra => $h->{'retry-after'},
                redis => readable($sleeper) ? 'awake' : 'asleep',
                body => substr($body, 0, 200) =~ s/\s+/ /gr,
                ms => $dt * 1000 };
}
reap_kids();

# Redis wakes up: the +OK of DEBUG SLEEP (the wait is bounded only so that
# a hung Redis fails the test instead of hanging it)
my $woke = readable($sleeper, $STALL + 30);
sysread($sleeper, my $sleep_ok, 64) if $woke;
like($sleep_ok // '', qr/^\+OK/, 'DEBUG SLEEP ran, Redis woke up');
my $stall_end = time;
close $sleeper;

# (b) the event loop did not block: the probes in every round were
# answered during the stall, before the round's marker 503 and before
# Redis woke, each with the expected answer (the cached OCSP bytes, HIT)
is(scalar(@mk), $ROUNDS, "$ROUNDS rounds of probes while Redis was asleep");
for my $set (['cacerts', ''], ['static file', ''], ['cached OCSP', 'HIT']) {
    my ($what, $want) = @$set;
    my @p = grep { $_->{what} eq $what } @probes;
    my @bad = grep { $_->{code} != 200 || $_->{tag} ne $want
                     || $_->{marker} ne 'pending' || $_->{redis} ne 'asleep' }
              @p;
    is(scalar @bad, 0, sprintf('every %s probe during the stall (%d): 200%s,'
                               . ' before the marker 503 and before Redis'
                               . ' woke', $what, scalar @p,
                               $want ? " $want" : ''))
        or diag(join("\n", map { sprintf('round %d: %d %s, marker %s, Redis'
                                         . ' %s (%.1f ms)', @$_{qw(round code
                                         tag marker redis ms)}) } @bad));
    # for the log only, nothing is asserted on it
    note("$what probe ms: "
         . join(' ', map { sprintf('%.1f', $_->{ms}) } @p));
}

# (a) enrollments during the stall: 503 + Retry-After, while Redis was
# still asleep (the Redis timeout shed them, not the end of the stall)
my $n503 = 0;
my @answers = ((map { [$_->{tag} . ' marker', $_->{code}, $_->{ms} / 1000,
                       $_->{ra}, $_->{redis}, $_->{body}] } @mk),
               (map { my $line = slurp($_->[1]) // '';
                      [$_->[2], split(/\t/, $line, 5)] } @kids));
for my $r (@answers) {
    my ($tag, $code, $dt, $ra, $redis, $body) = @$r;
    $code ||= 0;
    $n503++ if $code == 503;
    is($code, 503, "enrollment $tag during the stall: 503")
        or diag($body // '');
    like($ra // '', qr/^\d+$/, "enrollment $tag: Retry-After");
    is($redis // '', 'asleep', "enrollment $tag: answered before Redis woke"
       . sprintf(' (after %.2f s; Redis timeout 1 s, stall %d s)',
                 $dt || 0, $STALL));
}

# (d) enrollment works again at once, same processes
my @bad;
for my $i (1 .. 5) {
    my ($r, $ok) = enroll_verified("after$i");
    push @bad, "$i: $r->{code} " . ($ok ? '' : 'chain does not verify ')
        . substr($r->{body}, 0, 200) if $r->{code} != 200 || !$ok;
}
is(scalar @bad, 0, '5 enrollments after the stall: 200, chains verify')
    or diag(join("\n", @bad));
is($t->{children}{nginx}, $master, 'same nginx master');
ok(waitpid($master, WNOHANG) == 0, 'the master has not exited');
is_deeply([workers()], \@w0, 'same worker (no crash, no restart)');

# (c) what the stall left in Redis
my (@pending, @good, @other);
for my $key ($t->redis_keys($CERTS)) {
    my $h = $t->redis_hash($key);
    my $st = $h->{status} // '';
    if ($st eq 'pending') {
        push @pending, [$key, $h];
    } elsif ($st eq 'good') {
        push @good, [$key, $h];
    } else {
        push @other, [$key, $h];
    }
}
is(scalar @other, 0, 'no record in a status other than good or pending')
    or diag(join("\n", map { "$_->[0]: " . ($_->[1]{status} // 'none') }
                      @other));
is(scalar(grep { !length($_->[1]{der} // '') } @good), 0,
   'every good record holds its certificate');
is(scalar @good, $n200, "good records (" . scalar(@good) . ") = 200 "
   . "answers ($n200): no certificate stored that no client got");
is(scalar(grep { length($_->[1]{der} // '') } @pending), 0,
   'no pending record holds a certificate (nothing half-written)');
cmp_ok(scalar @pending, '<=', $n503, scalar(@pending) . ' pending record(s)'
       . " left, at most one per 503 ($n503)");
my @late = grep { ($_->[1]{created} // 0) < $stall0 - 1
                  || ($_->[1]{created} // 0) > $stall_end + 1 } @pending;
is(scalar @late, 0, 'every pending record was created during the stall');
# A reservation sent before the timeout is executed by Redis when it
# wakes; the core never learns that it landed.  Such an intent record
# never got a certificate out (all those requests got 503), and it
# expires by itself (the core gives pending records a TTL that the commit
# removes), so nothing half-written stays behind; its serial stays
# reserved for good.
diag(scalar(@pending) . " pending intent record(s) left by the stall "
     . "(reservations executed after the client's timeout)");
for my $p (@pending) {
    my $serial = $p->[1]{serial} // '';
    my $res = $t->redis_raw('EXISTS', "pki:{ca:issuing}:serial:$serial");
    ok($res =~ /^1/, "pending $serial keeps its serial reserved");
    my $ttl = $t->redis_raw('TTL', $p->[0]);
    ok($ttl =~ /^(\d+)/ && $1 > 0 && $1 <= 300,
       "pending $serial expires by itself (TTL $ttl)");
}
for my $g (@good) {
    my $ttl = $t->redis_raw('TTL', $g->[0]);
    is($ttl =~ s/\s+//gr, '-1', 'a good record never expires') or last;
}

# the error log
my $log = substr(slurp($t->error_log) // '', $log_off);
like($log, qr/certificate store unavailable|redis/i,
     'the error log names the Redis problem');
unlike($log, qr/\[alert\]|\[crit\]|\[emerg\]|exited on signal/,
       'no alert, crit or crash in the log')
    or diag(join("\n", grep { /\[(alert|crit|emerg)\]|signal/ }
                      split /\n/, $log));

# (e) the staleness bound: after the stall a revocation reaches the
# cached answer within revgen_check (1 s) + revgen_stale (default 3 s)
{
    my $serial = $t->x509_field($ocsp_cert, 'serial');
    my $rv = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
                      . '/pki/admin/revoke', user => 'admin:admin',
                      data => qq({"serial":"$serial","reason":"keyCompromise"}),
                      headers => ['Content-Type: application/json']);
    my $t0 = time;
    is($rv->{code}, 200, 'revoked through the admin API') or diag($rv->{body});
    my ($seen, $code, $h, $body);
    while (time - $t0 < 6) {
        ($code, $h, $body) = http_on($hc, $ocsp_req, 5);
        if ($code == 200 && $body ne $ocsp_body) {
            $seen = time - $t0;
            last;
        }
        sleep 0.05;
    }
    ok(defined $seen && $seen <= 4.5, 'cached OCSP answer replaced '
       . (defined $seen ? sprintf('%.2f s', $seen) : 'never')
       . ' after the revocation (bound: revgen_check + revgen_stale)');
    like(ocsp_status_of($body // ''), qr/: revoked/,
         'and the new answer says revoked');
}

close $ka;
close $hc;
$t->stop_nginx;
done_testing();
