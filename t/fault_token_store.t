#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Fault matrix (issue 8): the PKCS#11 token's object store is damaged
# under load, in the two ways t/fault_token.t (the token directory renamed
# away) does not cover.  SoftHSM2 with its file store, two EST clients
# enrolling all along:
#   1. the issuing key's object file disappears (moved away; the token's
#      generation counter bumped, as another process's change would), then
#      comes back;
#   2. token.object (the token's own record: its label and the PIN-wrapped
#      key blobs every login unwraps) is replaced by garbage, and nginx is
#      reloaded (SIGHUP) meanwhile: the new configuration must open the
#      vault and log in, which it cannot; then the file is restored and
#      nginx reloaded again.
# What the test proves:
#  - the running workers keep their logged-in session and the key they
#    found: they go on signing (SoftHSM holds the objects in memory), and
#    every certificate of the run verifies (never a bad signature); any
#    answer that is not 200 is 503 + Retry-After, none times out;
#  - the reload with the damaged token is refused by the master (the old
#    workers keep serving, the log names the vault), and the reload after
#    the repair is taken (new workers, which enroll);
#  - the PIN is never logged.
# Measured finding: a damaged object store does not stop a running nginx
# (it shows at the next reload or start, which refuse); a token that
# disappears (t/fault_token.t) gives 503s and recovers by itself.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Copy qw(copy);
use Time::HiRes qw(time sleep);
use PKITest;

my $t = PKITest->new;
$t->start_redis;
my $master = $t->start_nginx;
my $dir = $t->dir;
my $log = $t->error_log;

my $pin = slurp($t->pki . '/hsm/pin') // '';
$pin =~ s/\s+//g;
my ($tokendir) = (slurp($t->softhsm_conf) // '')
    =~ /^\s*directories\.tokendir\s*=\s*(\S+)\s*$/m;
opendir(my $dh, $tokendir) or die "$tokendir: $!";
my ($sub) = grep { !/^\./ && -d "$tokendir/$_" } readdir $dh;
closedir $dh;
my $tok = "$tokendir/$sub";
ok(-f "$tok/token.object", "token directory $tok");

# the issuing private key: the largest object file that names "issuing"
my ($keyobj) = sort { -s $b <=> -s $a }
               grep { index(slurp($_) // '', 'issuing') >= 0 }
               glob("$tok/*.object");
ok($keyobj && $keyobj !~ /token\.object$/, "issuing key object: $keyobj");

# SoftHSM keeps what it read in memory and looks at the files again only
# when the token's generation counter (an 8-byte big-endian number in
# DIR/generation) moves: each change here bumps it, as SoftHSM itself
# does when another process (softhsm2-util, pkcs11-tool) changes the token
sub bump {
    my $g = "$tok/generation";
    my ($hi, $lo) = unpack('NN', slurp($g) // "\0" x 8);
    $lo++;
    if ($lo > 0xffffffff) { $lo = 0; $hi++ }
    spew("$g.new", pack('NN', $hi, $lo));
    rename("$g.new", $g) or die "rename: $!";
}

# what is moved or broken must come back whatever happens
my @restore;
END { for (@restore) { rename($_->[1], $_->[0]) if -e $_->[1] } }

my ($csr) = $t->make_csr('tok', subj => '/CN=token-store');
my @w0 = $t->workers_of($master);

$t->start_load('est', 2, sub {
    my ($k, $i) = @_;
    my $x = $t->est_post('simpleenroll', $csr, max_time => 15, quiet => 1);
    my %o = (code => $x->{code}, ra => $x->{headers}{'retry-after'} // '');
    if ($x->{code} == 200) {
        my $pem = $t->p7_to_pem($x->{body});
        my $f = $pem ? $t->save_first_cert($pem, "s-$k-$i") : undef;
        my ($ok, $out) = $f ? $t->verify_chain($f) : (0, 'no certificate');
        $o{verified} = $ok ? 1 : 0;
        $o{err} = substr($out, 0, 200) if !$ok;
        unlink $f if $f && $ok;
    } else {
        $o{err} = substr("$x->{err} $x->{body}", 0, 200);
    }
    return \%o;
}, max => 120);

sub results { $t->load_results('est') }

ok(wait_until(30, sub { grep { $_->{code} == 200 } results() }),
   'load is running');

# break(), wait for 4 enrollments sent after it, repair(), wait (bounded)
# for a 200 sent after that.  Returns [gone, back, recovered].
sub outage {
    my ($what, $break, $repair) = @_;
    $break->();
    my $gone = time;
    ok(wait_until(30, sub {
        grep({ $_->{t0} > $gone + 0.5 } results()) >= 4 }),
       "$what: enrollments answered meanwhile");
    $repair->();
    my $back = time;
    my $rec = 0;
    wait_until(20, sub {
        my ($f) = grep { $_->{t0} > $back && $_->{code} == 200 } results();
        $rec = $f->{t1} if $f;
        return $f;
    });
    sleep 1;
    return [$what, $gone, $back, $rec];
}

my @o;
push @o, outage('key object gone', sub {
    push @restore, [$keyobj, "$keyobj.away"];
    rename($keyobj, "$keyobj.away") or die "rename: $!";
    bump();
}, sub {
    rename("$keyobj.away", $keyobj) or die "rename back: $!";
    bump();
    @restore = ();
});

# token.object garbage, then a reload
my $f = "$tok/token.object";
push @restore, [$f, "$f.away"];
rename($f, "$f.away") or die "rename: $!";
spew($f, 'x' x 320);                       # garbage of the same size
bump();
my $off = length(slurp($log) // '');
my $tbad = time;
ok(kill('HUP', $master), 'reload (SIGHUP) with token.object damaged');
ok(wait_until(30, sub { substr(slurp($log) // '', $off) =~ /\[emerg\]/ }),
   'the master refused the new configuration ([emerg])');
my $refused = substr(slurp($log) // '', $off);
like($refused, qr/vault "demo"/, 'the refusal names the vault')
    or diag($refused);
ok(wait_until(30, sub {
    grep({ $_->{t0} > $tbad + 0.5 && $_->{code} == 200 } results()) >= 3 }),
   'the old workers keep enrolling');
is_deeply([$t->workers_of($master)], \@w0, 'the same workers serve');

rename("$f.away", $f) or die "rename back: $!";
bump();
@restore = ();
$off = length(slurp($log) // '');
ok(kill('HUP', $master), 'reload after the repair');
my @w1;
ok(wait_until(30, sub {
    @w1 = $t->workers_of($master);
    return @w1 == 2 && !grep { my $x = $_; grep { $_ == $x } @w0 } @w1;
}), 'the reload was taken: new workers');
my $tgood = time;
ok(wait_until(30, sub {
    grep({ $_->{t0} > $tgood && $_->{code} == 200 } results()) >= 2 }),
   'the new workers enroll');
unlike(substr(slurp($log) // '', $off), qr/\[emerg\]/,
       'no emerg for the repaired token');

ok($t->stop_load('est'), 'clients stopped');

# --- what the clients saw ---------------------------------------------------------

my @all = results();
my @ok200 = grep { $_->{code} == 200 } @all;
diag(sprintf('%d enrollments, %d x 200', scalar @all, scalar @ok200));
my @unv = grep { !$_->{verified} } @ok200;
is(scalar @unv, 0, 'every 200 of the run carries a certificate that '
   . 'verifies') or diag(join("\n", map { $_->{err} // '' } @unv));
my @odd = grep { $_->{code} != 200 && $_->{code} != 503 } @all;
is(scalar @odd, 0, 'every answer is 200 or 503 (no timeout, no 500)')
    or diag(join("\n", map { "$_->{code} $_->{err}" } @odd));
my ($max) = sort { $b <=> $a } map { $_->{t1} - $_->{t0} } @all;
cmp_ok($max // 99, '<', 12, sprintf('slowest answer %.2f s', $max // 99));

for my $x (@o) {
    my ($what, $gone, $back, $rec) = @$x;
    my @during = grep { $_->{t0} > $gone + 0.5 && $_->{t1} < $back } @all;
    my @d503 = grep { $_->{code} == 503 } @during;
    diag(sprintf('%s (%.1f s): %d answers, %d x 200 (verified), %d x 503',
                 $what, $back - $gone, scalar @during,
                 scalar(@during) - @d503, scalar @d503));
    is(scalar(grep { $_->{ra} !~ /^\d+$/ } @d503), 0,
       "$what: any 503 has Retry-After");
    ok($rec, sprintf('%s: enrollment after the repair in %.2f s', $what,
                     $rec ? $rec - $back : -1));
}

my $l = slurp($log) // '';
unlike($l, qr/exited on signal|\[alert\]/, 'no crash in the log');
ok(index($l, $pin) < 0, 'the PIN is not in the error log');
my @errs = grep { /\[error\]/ } split /\n/, $l;
my %seen;
@errs = grep { !$seen{$_}++ } map { s/^.*?\[error\] \d+#\d+: (?:\*\d+ )?//r
                                      =~ s/, client:.*//r } @errs;
diag("error log: $_") for @errs[0 .. ($#errs < 3 ? $#errs : 3)];

$t->stop_all;
done_testing();
