#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Fault matrix (issue 8): kill -9 of the nginx workers in the middle of an
# issuance, under EST load.
#
# Landing a kill between "intent recorded" and "certificate recorded" by
# chance is rare (the window is a signature, a few ms), so the test makes
# it certain: nginx talks to Redis through a small proxy (a unix socket in
# front of the real one).  When armed, the proxy holds the next commit
# script (the one that turns the pending record into the certificate
# record: the certificate is signed by then), kills the worker that sent it
# with SIGKILL (SO_PEERCRED names it) and drops the connection.  A few
# plain kills at random moments follow.  Then:
#  - every intent the kills cut off stays a pending record (it expires by
#    itself, PKI_PENDING_TTL) and its serial stays reserved (never reused);
#    no client holds a certificate with that serial;
#  - every certificate a client received has its complete record (status
#    good, DER equal to what the client got) and OCSP answers good for it:
#    never a certificate in a client's hands that OCSP calls unknown;
#  - every reserved serial is a complete record or such a pending intent;
#  - the master respawns the workers and service continues.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use IO::Socket::UNIX;
use Socket qw(SOL_SOCKET SO_PEERCRED);
use MIME::Base64 qw(decode_base64);
use Time::HiRes qw(time sleep);
use PKITest;

my $KILLS = $ENV{PKI_FAULT_LONG} ? 8 : 4;      # intent-then-kill rounds
my $RANDOM = $ENV{PKI_FAULT_LONG} ? 6 : 3;     # kills at random moments

my $t = PKITest->new;
$t->start_redis;
my $dir = $t->dir;
my $ca = 'pki:{ca:issuing}';
my $psock = "$dir/proxy.sock";
my $rs = $t->redis_sock;
start_proxy();
my $conf = $t->render_conf;
$conf =~ s/pki_redis unix:\Q$rs\E /pki_redis unix:$psock / or die 'no pki_redis';
my $master = $t->start_nginx($conf);

# --- the proxy --------------------------------------------------------------------

# relays every connection to Redis; while DIR/arm exists, the first command
# that carries the commit script (it PERSISTs the record) is not relayed:
# its sender is killed, the serial appended to DIR/cut, DIR/arm removed
sub start_proxy {
    my $srv = IO::Socket::UNIX->new(Local => $psock, Listen => 64)
        or die "proxy listen: $!";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $SIG{TERM} = sub { POSIX::_exit(0) };
        $SIG{PIPE} = 'IGNORE';  # a worker killed while its reply is in
                                # flight: drop that pair, keep relaying
        my $sel = IO::Select->new($srv);
        my (%peer, %pid);
        while (1) {
            for my $fh ($sel->can_read(1)) {
                if ($fh == $srv) {
                    my $c = $srv->accept or next;
                    my $u = IO::Socket::UNIX->new(Peer => $rs) or do {
                        close $c;
                        next;
                    };
                    my $cred = getsockopt($c, SOL_SOCKET, SO_PEERCRED);
                    $pid{$c} = $cred ? (unpack('lll', $cred))[0] : 0;
                    @peer{$c, $u} = ($u, $c);
                    $sel->add($c, $u);
                    next;
                }
                my $other = $peer{$fh} or next;
                my $n = sysread($fh, my $buf, 65536);
                my $cut = 0;
                if ($n && exists $pid{$fh} && -e "$dir/arm"
                    && $buf =~ /PERSIST/ && $buf =~ /:cert:([0-9A-F]+)/)
                {
                    my $serial = $1;
                    kill 'KILL', $pid{$fh};
                    unlink "$dir/arm";
                    open(my $o, '>>', "$dir/cut");
                    print $o "$serial $pid{$fh}\n";
                    close $o;
                    $cut = 1;
                }
                if (!$n || $cut || !defined syswrite($other, $buf)) {
                    $sel->remove($fh, $other);
                    delete @peer{$fh, $other};
                    delete @pid{$fh, $other};
                    close $fh;
                    close $other;
                }
            }
        }
    }
    close $srv;
    $t->{children}{proxy} = $pid;
}


my ($csr) = $t->make_csr('k9', subj => '/CN=kill-nine');

# --- load: three EST clients, each keeps what it received -------------------

$t->start_load('est', 3, sub {
    my ($k, $i) = @_;
    my $x = $t->est_post('simpleenroll', $csr, max_time => 15, quiet => 1);
    my %o = (code => $x->{code});
    if ($x->{code} == 200) {
        my $pem = $t->p7_to_pem($x->{body});
        my $f = $pem ? $t->save_first_cert($pem, "got-$k-$i") : undef;
        $o{cert} = $f;
        $o{serial} = $f ? uc $t->x509_field($f, 'serial') : '';
    } else {
        $o{err} = substr("$x->{err}", 0, 120);
    }
    return \%o;
}, max => 120);

sub ok200 { scalar grep { $_->{code} == 200 } $t->load_results('est') }

ok(wait_until(30, sub { ok200() >= 3 }), 'load is running');

# --- a kill between intent and commit --------------------------------------------

my $kills = 0;
for my $round (1 .. $KILLS) {
    my @w = $t->workers_of($master);
    spew("$dir/arm", '');
    my $hit = wait_until(30, sub { !-e "$dir/arm" });
    ok($hit, "round $round: the proxy held a commit and killed its worker");
    last if !$hit;
    $kills++;
    my %old = map { $_ => 1 } @w;
    ok(wait_until(20, sub {
        my @n = $t->workers_of($master);
        return @n == 2 && grep { !$old{$_} } @n;
    }), "round $round: the master respawned the worker");
    my $before = ok200();
    ok(wait_until(20, sub { ok200() > $before }),
       "round $round: enrollments succeed again");
}
my @cut = map { (split)[0] } grep { length } split /\n/,
          (slurp("$dir/cut") // '');
is(scalar @cut, $KILLS, "$KILLS issuances cut between intent and commit");

for my $round (1 .. $RANDOM) {
    sleep 0.2 + rand(0.6);
    my @w = $t->workers_of($master);
    kill 'KILL', @w;
    $kills += @w;
    ok(wait_until(20, sub { $t->workers_of($master) == 2 }),
       "random kill $round: workers respawned");
}
is(waitpid($t->{children}{proxy}, POSIX::WNOHANG()), 0,
   "the test's Redis proxy is still relaying");
my $before = ok200();
ok(wait_until(20, sub { ok200() >= $before + 3 }), 'service continues');
ok($t->stop_load('est'), 'clients stopped');

# --- the records -------------------------------------------------------------------

my @res = $t->load_results('est');
my @got = grep { $_->{code} == 200 } @res;
my %got = map { $_->{serial} => $_ } @got;
my @failed = grep { $_->{code} != 200 } @res;
diag(sprintf('%d enrollments: %d x 200, %d failed (cut by %d worker '
             . 'kills)', scalar @res, scalar @got, scalar @failed, $kills));
is(scalar(grep { !$_->{cert} || !$_->{serial} } @got), 0,
   'every 200 carried a certificate');
my @odd = grep { $_->{code} != 0 && $_->{code} != 200 && $_->{code} != 502
                 && $_->{code} != 503 } @failed;
is(scalar @odd, 0, 'failures are cut connections (or 503), nothing else')
    or diag(join("\n", map { "$_->{code} $_->{err}" } @odd));

my @reserved = map { /:serial:([0-9A-F]+)$/ ? $1 : () }
               $t->redis_keys("$ca:serial:*");
my (%state, @bad);
for my $s (@reserved) {
    my $h = $t->redis_hash("$ca:cert:$s");
    my $st = $h->{status} // 'absent';
    $state{$st}++;
    if ($st eq 'good') {
        push @bad, "$s: good record without DER" if !length($h->{der} // '');
    } elsif ($st eq 'pending') {
        my $ttl = $t->redis_raw('TTL', "$ca:cert:$s") + 0;
        push @bad, "$s: pending without expiry (ttl $ttl)"
            if $ttl <= 0 || $ttl > 300;
        push @bad, "$s: pending, but a client holds its certificate"
            if $got{$s};
    } else {
        push @bad, "$s: reserved serial with a $st record";
    }
}
diag('reserved serials: ' . scalar(@reserved) . ' ('
     . join(', ', map { "$_ $state{$_}" } sort keys %state) . ')');
is(scalar @bad, 0, 'every reserved serial is a complete record or a '
   . 'pending intent that expires and that no client holds')
    or diag(join("\n", @bad));
my %cutst = map { $_ => ($t->redis_hash("$ca:cert:$_")->{status} // 'none')
                      . ($got{$_} ? ' held' : '') } @cut;
diag('intents cut: ' . join(', ', map { "$_ $cutst{$_}" } @cut));
my @cutp = grep { $cutst{$_} eq 'pending' } @cut;
is(scalar @cutp, scalar @cut, 'each issuance cut after its signature is a '
   . 'pending record (intent kept, certificate never handed out)');

# every certificate a client holds: its record, then OCSP
my (@norec, @notgood);
for my $g (@got) {
    my $h = $t->redis_hash("$ca:cert:$g->{serial}");
    my $der = $t->x509_der($g->{cert});
    push @norec, "$g->{serial}: " . ($h->{status} // 'no record')
        if ($h->{status} // '') ne 'good' || ($h->{der} // '') ne $der;
    my $o = $t->ocsp_status($g->{cert});
    push @notgood, "$g->{serial}: $o" if $o ne 'good';
}
is(scalar @norec, 0, scalar(@got) . ' certificates in clients\' hands: '
   . 'each has its complete record (good, same DER)')
    or diag(join("\n", @norec));
is(scalar @notgood, 0, 'OCSP answers good for each of them (none unknown)')
    or diag(join("\n", @notgood));
my %rsv = map { $_ => 1 } @reserved;
is(scalar(grep { !$rsv{$_->{serial}} } @got), 0,
   'each of their serials is reserved');

my $log = slurp($t->error_log) // '';
my $sig = () = $log =~ /exited on signal 9/g;
cmp_ok($sig, '>=', $kills, "the master saw $sig workers killed by signal 9");
unlike($log, qr/exited on signal (?!9)\d+/, 'no other crash');

$t->stop_all;
done_testing();
