#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# The PKCS#11 token goes away under load and comes back.  SoftHSM2 with
# its file store: the token directory (directories.tokendir of the test's
# softhsm2.conf) is renamed away while two clients keep enrolling, then
# renamed back.
#  - while it is gone, enrollment answers 503 with Retry-After within a
#    bounded time (curl --max-time 15 never fires), never a 200 whose
#    certificate does not verify (every 200 of the run is verified);
#  - the workers stay alive (same pids);
#  - once it is back, enrollment recovers by itself (the core reopens the
#    vault with bounded retries), no nginx restart;
#  - the error log names the token problem and never holds the PIN.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use PKITest;

my $t = PKITest->new;
$t->start_redis;
$t->start_nginx;
my $dir = $t->dir;
my $master = $t->{children}{nginx};
my $log = $t->error_log;

my $pin = slurp($t->pki . '/hsm/pin') // '';
$pin =~ s/\s+//g;
ok(length $pin >= 8, 'read the PIN file');

my ($tokendir) = (slurp($t->softhsm_conf) // '')
    =~ /^\s*directories\.tokendir\s*=\s*(\S+)\s*$/m;
ok($tokendir && -d $tokendir, "token directory $tokendir")
    or BAIL_OUT('no tokendir in ' . $t->softhsm_conf);

# what is moved away must come back whatever happens (the temp dir cleanup)
my $away_now;
END { rename($away_now->[1], $away_now->[0]) if $away_now; }

sub workers {
    my $out = `ps -o pid= --ppid $master 2>/dev/null`;
    return sort { $a <=> $b } map { /(\d+)/ ? $1 : () } split /\n/, $out;
}

my ($csr) = $t->make_csr('tok', subj => '/CN=token-fault');

# enroll once; returns { code, dt, ra, verified, err, t0, t1 }
sub enroll {
    my ($name) = @_;
    my $t0 = time;
    my $r = $t->est_post('simpleenroll', $csr, max_time => 15, quiet => 1);
    my %o = (code => $r->{code}, t0 => $t0, t1 => time,
             ra => $r->{headers}{'retry-after'} // '', verified => 0,
             err => '');
    $o{dt} = $o{t1} - $t0;
    if ($r->{code} == 200) {
        my $pem = $t->p7_to_pem($r->{body});
        my $f = $pem ? $t->save_first_cert($pem, $name) : undef;
        if ($f) {
            my ($ok, $out) = $t->verify_chain($f);
            $o{verified} = $ok ? 1 : 0;
            $o{err} = $out if !$ok;
        } else {
            $o{err} = 'no certificate in the 200';
        }
    } else {
        $o{err} = "$r->{err} $r->{body}";
    }
    $o{err} =~ s/\s+/ /g;
    $o{err} = substr($o{err}, 0, 200);
    return \%o;
}

my $e = enroll('before');
is($e->{code}, 200, 'enrollment with the token present');
ok($e->{verified}, 'its certificate verifies');
my @w0 = workers();
is(scalar @w0, 2, "two workers (@w0)");

# --- load -----------------------------------------------------------------------

my $stop = "$dir/stop-clients";
my @clients;
for my $k (1 .. 2) {
    my $res = "$dir/client-$k.txt";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $t->{owner} = -1;               # the parent stops the servers
        $t->{curl_n} = 100000 * $k;
        open(my $fh, '>>', $res) or POSIX::_exit(2);
        $fh->autoflush(1);
        my $i = 0;
        while (!-e $stop) {
            $i++;
            my $o = enroll("c$k-$i");
            print $fh join("\t", $k, $i, $o->{code}, sprintf('%.3f', $o->{t0}),
                           sprintf('%.3f', $o->{t1}), $o->{ra},
                           $o->{verified}, $o->{err}), "\n";
        }
        close $fh;
        POSIX::_exit(0);
    }
    push @clients, [$pid, $res];
}

sub results {
    return map { [split /\t/, $_, 8] }
           map { split /\n/, (slurp($_->[1]) // '') } @clients;
}

sleep 1.5;
my $off = length(slurp($log) // '');

# One outage: rename $from to $to, wait until 4 enrollments sent after the
# move were answered, rename it back, wait (up to 15 s) for a 200 sent
# after that.  Returns [gone, back, recovered] times.
sub outage {
    my ($from, $to) = @_;
    $away_now = [$from, $to];
    ok(rename($from, $to), "moved $from away");
    my $gone = time;
    my $deadline = time + 20;
    while (time < $deadline) {
        last if grep({ $_->[3] > $gone + 0.5 } results()) >= 4;
        sleep 0.2;
    }
    ok(rename($to, $from), "moved $from back");
    $away_now = undef;
    my $back = time;
    my $recovered = 0;
    $deadline = $back + 15;
    while (time < $deadline) {
        if (grep { $_->[3] > $back && $_->[2] == 200 } results()) {
            $recovered = time;
            last;
        }
        sleep 0.1;
    }
    sleep 1;        # a few more after the recovery
    return [$gone, $back, $recovered];
}

# 1. the whole token store: SoftHSM's C_Initialize itself fails
my $o1 = outage($tokendir, "$tokendir.away");

# 2. only the token's own directory: the module loads, the token is gone
opendir(my $dh, $tokendir) or die "$tokendir: $!";
my ($sub) = grep { !/^\./ && -d "$tokendir/$_" } readdir $dh;
closedir $dh;
ok($sub, "the token's directory: $sub");
my $o2 = outage("$tokendir/$sub", "$tokendir.$sub.away");

spew($stop, '');
for my $c (@clients) {
    my $dl = time + 30;
    while (waitpid($c->[0], WNOHANG) != $c->[0]) {
        if (time > $dl) {
            kill 'KILL', $c->[0];
            waitpid($c->[0], 0);
            fail("client $c->[0] did not stop");
            last;
        }
        sleep 0.1;
    }
}

# --- what the clients saw ----------------------------------------------------------------

my @all = results();
my @ok200 = grep { $_->[2] == 200 } @all;
diag(sprintf('%d enrollments, %d x 200', scalar @all, scalar @ok200));

my @unverified = grep { !$_->[6] } @ok200;
is(scalar @unverified, 0, 'every 200 of the run carries a certificate '
   . 'that verifies') or diag(join("\n", map { join(' ', @$_) } @unverified));

my @odd = grep { $_->[2] != 200 && $_->[2] != 503 } @all;
is(scalar @odd, 0, 'every answer is 200 or 503 (no timeout, no 500)')
    or diag(join("\n", map { join(' ', @$_) } @odd));

my @slow = grep { $_->[4] - $_->[3] > 12 } @all;
is(scalar @slow, 0, 'every answer came within 12 s')
    or diag(join("\n", map { join(' ', @$_) } @slow));
my ($max) = sort { $b <=> $a } map { $_->[4] - $_->[3] } @all;
diag(sprintf('slowest answer: %.2f s', $max // 0));

for my $o (['token store', $o1], ['token directory', $o2]) {
    my ($what, $gone, $back, $recovered) = ($o->[0], @{ $o->[1] });
    my @during = grep { $_->[3] > $gone + 0.5 && $_->[4] < $back } @all;
    cmp_ok(scalar @during, '>=', 4, sprintf('%s gone %.1f s: %d enrollments '
           . 'sent and answered meanwhile', $what, $back - $gone,
           scalar @during));
    my @d200 = grep { $_->[2] == 200 } @during;
    is(scalar @d200, 0, "$what gone: no 200")
        or diag(join("\n", map { join(' ', @$_) } @d200));
    my @d503 = grep { $_->[2] == 503 } @during;
    is(scalar @d503, scalar @during, "$what gone: all 503");
    is(scalar(grep { $_->[5] !~ /^\d+$/ } @d503), 0,
       "$what gone: each 503 has Retry-After");
    ok($recovered, sprintf('%s back: enrollment recovered by itself in '
                           . '%.2f s', $what, $recovered ? $recovered - $back
                                                         : -1));
}

my @after = grep { $_->[3] > ($o2->[2] || $o2->[1]) } @all;
my @after_bad = grep { $_->[2] != 200 } @after;
is(scalar @after_bad, 0, scalar(@after) . ' enrollments after the last '
   . 'recovery: all 200')
    or diag(join("\n", map { join(' ', @$_) } @after_bad));

$e = enroll('final');
is($e->{code}, 200, 'a final enrollment: 200');
ok($e->{verified}, 'its certificate verifies');

is($t->{children}{nginx}, $master, 'same nginx master');
ok(waitpid($master, WNOHANG) == 0, 'the master has not exited');
is_deeply([workers()], \@w0, 'same workers: none crashed or was restarted');

my $l = substr(slurp($log) // '', $off);
like($l, qr/signing key unavailable/, 'the error log says the signing key '
     . 'is unavailable');
like($l, qr/vault "demo": token "nginx-pki" not found/,
     'token directory gone: the error log names the missing token');
like($l, qr/vault "demo": cannot load or initialise PKCS#11 module/,
     'token store gone: the error log names the vault and its module');
unlike($l, qr/could not load the shared library/,
       'no misleading "could not load the shared library"');
unlike($l, qr/failederror:|EVP libvault|\.so"vault/, 'log parts are separated');
unlike($l, qr/exited on signal|\[alert\]|\[emerg\]/, 'no crash in the log');
my $whole = slurp($log) // '';
ok(index($whole, $pin) < 0, 'the PIN is not in the error log');
my $stderr = slurp($t->prefix . '/logs/stderr.log') // '';
ok(index($stderr, $pin) < 0, 'the PIN is not on nginx stderr');

$t->stop_nginx;

# --- the token and the Redis socket closed to the workers' user --------------
# Started as root with "user nobody nogroup" (a stock Debian nginx runs its
# workers as www-data): the master reads the configuration as root, but
# each worker opens the token itself and connects to Redis itself.  The
# SoftHSM directory (token directory and SOFTHSM2_CONF) is 0700 root and
# the Redis socket 0700 (start_redis): the workers reach neither.  Each
# error line names the workers' user and says what that user needs; the
# Redis one is logged once (per change of state), not per request or per
# retry; no PIN.
SKIP: {
    skip 'needs root (nginx switching to the user nobody)', 9
        if $> != 0 || !defined getpwnam('nobody')
           || !defined getgrnam('nogroup');

    my $hsm = $t->pki . '/hsm';
    chmod 0755, $dir, $t->pki;
    chmod 0700, $hsm;
    my $who = 'the worker runs as nobody:nogroup (uid 65534, gid 65534)';
    $t->start_nginx($t->render_conf('--user', 'nobody nogroup'));

    for my $i (1 .. 3) {
        my $r = $t->est_post('simpleenroll', $csr, max_time => 15);
        isnt($r->{code}, 200, "worker as nobody, enrollment $i: refused "
             . "($r->{code})");
    }

    # the CRL refresh of worker 0 connects at start and every 10 s
    my $rl = qr/pki crl: refresh of "issuing": .*redis: connect: Permission/;
    my $dl = time + 30;
    my $text = '';
    while (time < $dl) {
        $text = slurp($log) // '';
        last if $text =~ $rl;
        sleep 0.2;
    }
    my @vault = $text =~ /^(.*pki_key_vault "demo" did not open: .*)$/mg;
    is(scalar @vault, 2, 'each of the 2 workers logs the vault once')
        or diag($text);
    like($vault[0] // '', qr/\Q($who, not as the user that read the \E
        \Qconfiguration; it opens the token itself: that user must be able \E
        \Qto read the token's files (SoftHSM: the token directory and \E
        \QSOFTHSM2_CONF))\E$/x,
         'the vault line names the worker user and what it needs');
    # the RA's key file (0600 root) is closed to the workers too: its line
    # names the user, and has no empty "()" where the key gave no detail
    my @ra = $text =~ /^(.*key "[^"]*ra\.key" did not open: .*)$/mg;
    ok(@ra && !grep({ /\(\)/ || !/\Q($who, not as the user that read \E
                                    \Qthe configuration)\E$/x } @ra),
       'the key file line names the worker user, no empty "()"')
        or diag(join("\n", @ra));
    my @redis = $text =~ /^(.*$rl.*)$/mg;
    my $sock = $t->redis_sock;
    like($redis[0] // '', qr/\Qredis: connect: Permission denied (unix \E
        \Qsocket "$sock"; $who: that user needs search permission on its \E
        \Qdirectories and write permission on the socket)\E$/x,
         'the Redis line names the socket, the worker user, the cause')
        or diag($text);
    # the next refresh (10 s on) fails the same way: not logged again
    sleep 11;
    $text = slurp($log) // '';
    @redis = $text =~ /^(.*$rl.*)$/mg;
    is(scalar @redis, 1, 'the refresh failure is logged once, not per try')
        or diag($text);
    ok(index($text, $pin) < 0, 'the PIN is not in the error log');
    $t->stop_nginx;
    chmod 0700, $dir;
}

done_testing();
