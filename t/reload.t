#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Operational robustness with the CA key in SoftHSM:
#  - 10 reloads (SIGHUP, 0.5 s apart) while two clients keep enrolling:
#    the master survives, no request fails, old workers go away;
#  - kill -9 of a worker: the master respawns it, enrollment still works;
#  - SIGHUP with a config whose PIN file holds a wrong PIN: the new config
#    is refused, the old one keeps serving, the error log names the PIN.

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
my $conf = $t->render_conf;
$t->start_nginx($conf);

my $master = $t->{children}{nginx};
my $dir = $t->dir;
my $log = $t->error_log;

sub workers {
    my $out = `ps -o pid= --ppid $master 2>/dev/null`;
    return sort { $a <=> $b } map { /(\d+)/ ? $1 : () } split /\n/, $out;
}

sub log_from {
    my ($off) = @_;
    my $l = slurp($log) // '';
    return substr($l, $off);
}

my ($csr) = $t->make_csr('reload', subj => '/CN=reload-dev');

sub enroll_code {
    my $r = $t->est_post('simpleenroll', $csr, max_time => 15, quiet => 1);
    return $r;
}

is(enroll_code()->{code}, 200, 'enrollment before the reloads');
my @w0 = workers();
is(scalar @w0, 2, "two workers (@w0)");
is(slurp($t->prefix . '/logs/nginx.pid') =~ s/\s+//gr, $master,
   'pid file names the master');

# --- background enrollments -------------------------------------------------

my $stop = "$dir/stop-clients";
my @clients;
for my $k (1 .. 2) {
    my $res = "$dir/client-$k.txt";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $t->{curl_n} = 100000 * $k;   # own curl temp file names
        open(my $fh, '>>', $res) or POSIX::_exit(2);
        $fh->autoflush(1);
        my $i = 0;
        while (!-e $stop) {
            $i++;
            my $t0 = time;
            my $r = enroll_code();
            my $err = $r->{err} // '';
            $err =~ s/\s+/ /g;
            printf $fh "%d\t%d\t%.3f\t%s\t%s\n", $i, $r->{code}, time - $t0,
                $r->{rc}, $r->{code} == 200 ? '' : substr("$err $r->{body}",
                                                          0, 300);
        }
        close $fh;
        POSIX::_exit(0);
    }
    push @clients, [$pid, $res];
}

sleep 0.5;
my $off = length(slurp($log) // '');

# Each reload waits until the master has logged it before the next one
# (at least 0.5 s apart): a sanitized build reconfigures more slowly, and
# signals sent while the master is busy merge into one reload.
sub reconfigured {
    my $l = log_from($off);
    return scalar(() = $l =~ /^\S+ \S+ \[notice\] \d+#\d+: reconfiguring$/mg);
}

for my $i (1 .. 10) {
    ok(kill('HUP', $master), "reload $i sent") or last;
    my $t0 = time;
    sleep 0.05 while reconfigured() < $i && time - $t0 < 15;
    sleep 0.5;
}
sleep 1;    # some more requests on the last workers
# a loaded machine enrolls slowly: keep the clients going (bounded) until
# they made 20 enrollments between them
sub client_lines {
    return scalar map { split /\n/, (slurp($_->[1]) // '') } @clients;
}
wait_until(30, sub { client_lines() >= 20 });

spew($stop, '');
for my $c (@clients) {
    my $deadline = time + 30;
    while (waitpid($c->[0], WNOHANG) != $c->[0]) {
        if (time > $deadline) {
            kill 'KILL', $c->[0];
            waitpid($c->[0], 0);
            fail("client $c->[0] did not stop");
            last;
        }
        sleep 0.1;
    }
}

my @lines = map { split /\n/, (slurp($_->[1]) // '') } @clients;
my @bad = grep { (split /\t/)[1] != 200 } @lines;
cmp_ok(scalar @lines, '>=', 20, scalar(@lines) . ' enrollments during the '
       . 'reloads');
# A request whose signing task is in the thread pool has a guard timer, so
# a gracefully exiting old worker waits for it instead of dropping it.
is(scalar @bad, 0, 'every enrollment during the reloads got 200')
    or diag(join("\n", @bad[0 .. ($#bad < 19 ? $#bad : 19)]));

ok(kill(0, $master), 'the master is alive');
is($t->{children}{nginx}, $master, 'the master pid is unchanged');
ok(waitpid($master, WNOHANG) == 0, 'the master has not exited');
is(slurp($t->prefix . '/logs/nginx.pid') =~ s/\s+//gr, $master,
   'pid file still names the master');

my %old = map { $_ => 1 } @w0;
ok(wait_until(10, sub { my @w = workers(); @w == 2 && !grep { $old{$_} } @w }),
   'old workers gone, two new workers: ' . join(' ', workers()));

my $l = log_from($off);
my $reconf = () = $l =~ /^\S+ \S+ \[notice\] \d+#\d+: reconfiguring$/mg;
is($reconf, 10, 'the master reconfigured 10 times');
unlike($l, qr/exited on signal|\[emerg\]|\[crit\]/,
       'no crash, crit or emerg in the log during the reloads')
    or diag(join("\n", grep { /exited on signal|\[emerg\]|\[crit\]/ }
                      split /\n/, $l));
ok($l !~ /\[alert\]/, 'no alert ("open socket left", "aborting")')
    or diag(join("\n", grep { /\[alert\]/ } split /\n/, $l));

is(enroll_code()->{code}, 200, 'enrollment after the reloads');

# --- kill -9 of a worker ------------------------------------------------------

my @w1 = workers();
my $victim = $w1[0];
ok(kill('KILL', $victim), "kill -9 worker $victim");
my %w1 = map { $_ => 1 } @w1;
ok(wait_until(10, sub { my @w = workers();
                      @w == 2 && !grep { $_ == $victim } @w }),
   'the master respawned the worker: ' . join(' ', workers()));
my $code = 0;
wait_until(10, sub { $code = enroll_code()->{code}; $code == 200 });
is($code, 200, 'enrollment after the worker was killed');
# both workers sign (each opened its own PKCS#11 session): a few requests
my @codes = map { enroll_code()->{code} } 1 .. 6;
is_deeply(\@codes, [(200) x 6], 'six more enrollments: all 200');
ok(kill(0, $master), 'the master is alive after the worker kill');

# --- reload with a wrong PIN ----------------------------------------------------

my $wrongpin = "$dir/wrong.pin";
spew($wrongpin, "000000000000000000000000\n");
chmod 0600, $wrongpin;
my $pinfile = $t->pki . '/hsm/pin';
(my $bad = $conf) =~ s{pin_file \Q$pinfile\E;}{pin_file $wrongpin;}
    or BAIL_OUT('pin_file not found in the config');
$t->write_conf($bad);

my @w2 = workers();
$off = length(slurp($log) // '');
ok(kill('HUP', $master), 'reload with a wrong PIN sent');
ok(wait_until(15, sub { log_from($off) =~ /\[emerg\]/ }),
   'the master logged an emerg');
$l = log_from($off);
like($l, qr/PIN/, 'the error log names the PIN problem')
    or diag($l);
my $realpin = slurp($pinfile) // '';
$realpin =~ s/\s+//g;
unlike($l, qr/\Q$realpin\E/, 'the PIN itself is not logged')
    if length $realpin;
unlike($l, qr/000000000000000000000000/, 'the wrong PIN is not logged');
sleep 0.5;
ok(kill(0, $master), 'the master is alive after the refused reload');
is_deeply([workers()], \@w2, 'the old workers keep running');
@codes = map { enroll_code()->{code} } 1 .. 4;
is_deeply(\@codes, [(200) x 4], 'enrollments with the old config: all 200');

# back to the good config: a reload works again
$t->write_conf($conf);
$off = length(slurp($log) // '');
kill 'HUP', $master;
ok(wait_until(10, sub { my @w = workers(); my %o = map { $_ => 1 } @w2;
                      @w == 2 && !grep { $o{$_} } @w }),
   'reload with the good config again: new workers');
$code = 0;
wait_until(10, sub { $code = enroll_code()->{code}; $code == 200 });
is($code, 200, 'enrollment after the good reload');
unlike(log_from($off), qr/exited on signal|\[alert\]|\[emerg\]/,
       'no crash or emerg after the good reload');

$t->stop_nginx;
done_testing;
