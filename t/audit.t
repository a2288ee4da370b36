#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# The transaction log (pki_audit_log) through nginx: EST issuance, refusals
# (nginx's auth_basic, the template's policy) and an admin revocation are
# logged with who, what and when; the log verifies with the auditor's public
# key (pkictl audit verify); an edited, a removed and a reordered entry are
# each caught and named; nothing secret is in it; and kill -9 of the worker
# right after a response leaves that issuance in the log.  Issuance entries
# travel in their record's Redis commit (carry=on, the default): they reach
# the file before the answer, leave their stream once synced, and the
# janitor writes an entry left in its stream that the file lacks, once.
# Without the syncer thread (its wake-up pipe cannot be made: pipe2()
# fails in nginx, through an LD_PRELOAD shim), answers wait for a sync task
# in the pool; when the pool's queue refuses it, they wait for a retry (a
# warning says so), never for a sync on the event loop, and every answered
# issuance is in the log.  Two instances with one host name whose log
# directories have one path (mount namespaces, as two containers) keep
# their logs apart (DIR/audit.id names their streams).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use File::Copy qw(copy);
use File::Temp ();
use Time::HiRes qw(time);
use Time::Local qw(timegm);
use Digest::SHA qw(sha256_hex);
use PKITest;

my $t = PKITest->new;
$t->start_redis;
# orphan_after=1s: an entry of a live writer is the janitor's after 1 s
# (default 30 s); one of a writer that is gone, after the janitor's 1 s
my @conf = ('--workers', 1, '--audit-params', 'orphan_after=1s');
$t->start_nginx($t->render_conf(@conf));

my $pki = $t->pki;
my $dir = "$pki/audit";
my $pkictl = "$PKITest::BUILD/pkictl";
my $json = JSON::PP->new;

sub entries {
    my @e;
    for my $f (sort glob("$dir/audit-0*.log"), "$dir/audit.log") {
        next if !-e $f;
        open my $fh, '<', $f or next;
        while (my $l = <$fh>) {
            chomp $l;
            my $j = eval { $json->decode($l) } or next;
            push @e, $j;
        }
        close $fh;
    }
    return @e;
}

sub verify {
    my ($d, @extra) = @_;
    return run_cmd([$pkictl, 'audit', 'verify', $d, @extra]);
}

sub enroll { return $t->enroll_serial(@_) }

# --- issuance, refusals, revocation ---------------------------------------

my @serials;
for my $i (1 .. 3) {
    my ($r, $s) = enroll("audit-dev$i");
    is($r->{code}, 200, "enrolled audit-dev$i");
    push @serials, $s;
}

my ($csr) = $t->make_csr('badpw', subj => '/CN=badpw');
my $r = $t->est_post('simpleenroll', $csr, user => 'demo:wrong', quiet => 1);
is($r->{code}, 401, 'wrong password: 401 from auth_basic');

($r) = enroll('audit-p521', curve => 'P-521');
ok($r->{code} >= 400 && $r->{code} < 500, "P-521 refused by the template "
   . "($r->{code})");

$r = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
              . '/pki/admin/revoke', user => 'admin:admin',
              headers => ['Content-Type: application/json'],
              data => qq({"serial":"$serials[0]","reason":"keyCompromise"}));
is($r->{code}, 200, 'revoked through the admin API') or diag($r->{body});

# refusals and admin actions are written by a thread-pool task after the
# response: wait for the last one
my @e;
for (1 .. 100) {
    @e = entries();
    last if grep { $_->{type} eq 'request' && $_->{protocol} eq 'admin' } @e;
    select(undef, undef, undef, 0.05);
}

for my $s (@serials) {
    my ($iss) = grep { $_->{type} eq 'issue' && ($_->{serial} // '') eq $s }
                @e;
    ok($iss, "issuance $s logged") or next;
    is($iss->{outcome}, 'success', '  outcome success');
    is($iss->{protocol}, 'est', '  protocol est');
    is($iss->{requester}, 'demo', '  requester: the authenticated user');
    is($iss->{client}, '127.0.0.1', '  client address');
    is($iss->{ca}, 'issuing', '  CA');
    is($iss->{template}, 'device', '  template');
    like($iss->{subject} // '', qr/CN=audit-dev/, '  subject');
    like($iss->{time} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
         '  time');
}

# --- entries carried by the records' commits ---------------------------------

for my $s (@serials) {
    my ($iss) = grep { $_->{type} eq 'issue' && ($_->{serial} // '') eq $s }
                @e;
    like($iss->{rid} // '', qr/^\d+-\d+$/,
         "issuance $s came through its record's commit (rid)");
}

my ($stream) = grep { length } split /\n/,
               $t->redis_raw('--scan', '--pattern', '*{ca:issuing}:audit:*');
ok($stream, "the CA's log stream: " . ($stream // 'none'));

sub xlen { return 0 + $t->redis_raw('XLEN', $stream) }
sub wait_empty {
    for (1 .. 100) {
        return 1 if xlen() == 0;
        select(undef, undef, undef, 0.05);
    }
    return 0;
}
ok(wait_empty(), 'synced entries have left the stream');

# an entry the file holds already, back in the stream as if its writer died
# before removing it (a stream never takes an id below its last one: the
# key is made anew), and one the file lacks (its writer died before writing;
# no "p": no writer known, an orphan once a second old)
my ($had) = grep { $_->{type} eq 'issue' && ($_->{serial} // '') eq $serials[1] }
            @e;
my $orphan_body = ',"type":"issue","protocol":"est","operation":"issue",'
    . '"ca":"issuing","template":"device","serial":"0A0B0C0D0E0F",'
    . '"subject":"CN=audit-orphan","requester":"demo","client":"127.0.0.1",'
    . '"outcome":"success"';
$t->redis_raw('DEL', $stream);
my $hid = $t->redis_raw('XADD', $stream, $had->{rid}, 't', $had->{time}, 'b',
                        'x');
my $oid = $t->redis_raw('XADD', $stream, '*', 't', '2026-11-29T00:00:00.000Z',
                        'b', $orphan_body);
chomp $hid;
chomp $oid;
# what XADD answered, not XLEN: the janitor may take the first one out at
# once (the file has it), before a count could see it
is($hid, $had->{rid}, 'the entry the file has: back in the stream');
like($oid, qr/^\d+-\d+$/, 'one the file lacks: in the stream');

my @o;
for (1 .. 100) {
    @o = grep { ($_->{serial} // '') eq '0A0B0C0D0E0F' } entries();
    last if @o && xlen() == 0;
    select(undef, undef, undef, 0.05);
}
is(scalar @o, 1, 'the janitor wrote the entry the file lacked, once');
is($o[0]{rid} // '', $oid, '  with its stream id');
is($o[0]{subject} // '', 'CN=audit-orphan', '  and its fields');
is(xlen(), 0, '  and emptied the stream');
is(scalar(grep { ($_->{rid} // '') eq $had->{rid} } entries()), 1,
   'the entry the file had is not written twice');

my ($rc_j, $out_j, $err_j) = verify($dir, '--pubkey', "$pki/audit-pub.pem");
is($rc_j, 0, 'the log verifies with the janitor\'s entry') or diag("$out_j$err_j");

# 600 entries this code never writes at the head of the stream (no "t", no
# "b", a body over the size a line takes, a "t" too long for the field),
# then an orphan like the one above: each of the 600 becomes an unreadable
# line and leaves the stream.  They were skipped and stayed, so XRANGE ...
# COUNT 512 saw only them and the orphan behind never reached the file.
{
    require Redis;
    my $rd = Redis->new(sock => $t->redis_sock, reconnect => 0);
    my $big = 'x' x 16000;
    my $long_t = '2026-11-29T00:00:00.000Z' . ('0' x 40);
    my @kinds = (['b', $orphan_body],
                 ['t', '2026-11-29T00:00:00.000Z'],
                 ['t', '2026-11-29T00:00:00.000Z', 'b', $big],
                 ['t', $long_t, 'b', $orphan_body]);
    my %bad;
    for my $k (0 .. 599) {
        my $f = $kinds[$k % 4];
        my $id = $rd->xadd($stream, '*', @$f);
        my %h = @$f;
        $bad{$id} = $h{b} // '';
    }
    (my $good_body = $orphan_body) =~ s/0A0B0C0D0E0F/0B0B0C0D0E0F/;
    my $gid = $rd->xadd($stream, '*', 't', '2026-11-29T00:00:02.000Z',
                        'b', $good_body);
    $rd->quit;
    is(scalar(keys %bad), 600, '600 malformed entries at the stream\'s head');

    my (@g, @u);
    for (1 .. 200) {
        my @all = entries();
        @g = grep { ($_->{serial} // '') eq '0B0B0C0D0E0F' } @all;
        @u = grep { $_->{type} eq 'unreadable' && exists $bad{$_->{rid} // ''} }
             @all;
        last if @g && @u >= 600 && xlen() == 0;
        select(undef, undef, undef, 0.05);
    }
    is(scalar @g, 1, 'the orphan behind them is written, once');
    is($g[0]{rid} // '', $gid, '  with its stream id');
    my %seen;
    $seen{$_->{rid}}++ for @u;
    is(scalar(keys %seen), 600, 'each malformed entry is an unreadable line');
    is(scalar(grep { $_ != 1 } values %seen), 0, '  once');
    is(scalar(grep { exists $_->{subject} || exists $_->{serial} } @u), 0,
       '  with none of its text');
    is(scalar(grep { $_->{body_sha256} ne sha256_hex($bad{$_->{rid}})
                     || $_->{body_bytes} != length $bad{$_->{rid}} } @u), 0,
       '  and the size and SHA-256 of its body ("" when it had none)');
    is(scalar(grep { ($_->{time} // '')
                     !~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/ } @u),
       0, '  each with a time in the writer\'s form');
    is(xlen(), 0, 'the stream is empty again');
    $t->redis_raw('DEL', $stream) if xlen();    # (the tests below need it)
    my ($rc_u, $out_u, $err_u) = verify($dir, '--pubkey',
                                        "$pki/audit-pub.pem");
    is($rc_u, 0, 'the log verifies with the unreadable lines')
        or diag("$out_u$err_u");
}

my ($rev) = grep { $_->{type} eq 'revoke' } @e;
ok($rev && $rev->{serial} eq $serials[0]
   && $rev->{reason} eq 'keyCompromise' && $rev->{requester} eq 'admin'
   && $rev->{protocol} eq 'admin', 'revocation logged with the admin '
   . 'identity and reason');

ok((grep { $_->{type} eq 'request' && $_->{protocol} eq 'est'
           && $_->{outcome} eq 'auth' } @e),
   'auth_basic refusal logged');
ok((grep { $_->{type} eq 'request' && $_->{protocol} eq 'est'
           && $_->{outcome} eq 'policy' } @e),
   'policy refusal logged');
ok((grep { $_->{type} eq 'request' && $_->{protocol} eq 'admin'
           && ($_->{operation} // '') =~ m{^POST /pki/admin/revoke} } @e),
   'admin action logged');

# nothing secret: the token PIN, the audit key, any private key
my $all = join '', map { slurp($_) // '' } glob("$dir/audit*.log");
my $pin = slurp("$pki/hsm/pin") // 'no-pin';
chomp $pin;
unlike($all, qr/\Q$pin\E/, 'the PIN is not in the log') if length $pin >= 4;
unlike($all, qr/PRIVATE KEY/, 'no private key in the log');
unlike($all, qr/wrong/, 'no password in the log');

# --- verification -----------------------------------------------------------

# (with the auditor's key only once a checkpoint is signed: a worker
# writes one within 60 s of an entry, and at a graceful stop)
my ($rc, $out, $err) = verify($dir);
is($rc, 0, 'pkictl audit verify: intact') or diag("$out$err");

# graceful stop writes a signed checkpoint
$t->stop_nginx;
($rc, $out, $err) = verify($dir, '--pubkey', "$pki/audit-pub.pem");
is($rc, 0, 'intact after a graceful stop');
like($out, qr/[1-9]\d* signed checkpoints, 0 entries after/,
     'a signed checkpoint covers every entry') or diag($out);

# an auditor who may read the log but not audit.lock (0600, the workers'
# user): verify read around the lock, where a rotation meanwhile shows as
# a gap (exit 1, tampering); now exit 2, naming the lock and --no-lock,
# which reads it unlocked
SKIP: {
    skip 'needs root, setpriv and the user nobody', 6
        if $> != 0 || !-x '/usr/bin/setpriv' || !defined getpwnam('nobody');
    my $ro = File::Temp::tempdir('/tmp/pki-audit-ro-XXXXXX', CLEANUP => 1);
    copy($_, $ro) for glob("$dir/audit*");
    chmod 0755, $ro;
    chmod 0644, glob("$ro/audit*");
    chmod 0600, "$ro/audit.lock";
    my @nobody = ('/usr/bin/setpriv', '--reuid=nobody', '--regid=nogroup',
                  '--clear-groups', $pkictl, 'audit', 'verify', $ro);
    ($rc, $out, $err) = run_cmd([@nobody]);
    is($rc, 2, 'audit.lock unreadable: exit 2, not verified') or diag($out);
    like($err, qr/cannot open \Q$ro\E\/audit\.lock: Permission denied/,
         '  names audit.lock and the error') or diag($err);
    like($err, qr/--no-lock/, '  and says --no-lock') or diag($err);
    unlike($out, qr/^OK/m, '  no OK');
    ($rc, $out, $err) = run_cmd([@nobody, '--no-lock']);
    is($rc, 0, '--no-lock: read unlocked, intact') or diag("$out$err");
    like($out, qr/^OK: [1-9]/, '  OK with its entries') or diag($out);
}

# a checkpoint signed by another key is refused
system("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
       . "-out $pki/other.key 2>/dev/null && openssl pkey -in $pki/other.key"
       . " -pubout -out $pki/other.pem 2>/dev/null");
($rc, $out) = verify($dir, '--pubkey', "$pki/other.pem");
is($rc, 1, 'wrong auditor key: checkpoint signature refused (exit 1)');
like($out, qr/signed by a key not given \([0-9a-f]{16}\)/,
     '  says so, naming the key id of the checkpoint');
# with the server's key given too (the key replaced): each checkpoint is
# checked with the key of its id, and the log passes
($rc, $out) = verify($dir, '--pubkey', "$pki/other.pem", '--pubkey',
                     "$pki/audit-pub.pem");
is($rc, 0, 'two auditor keys, one of them the signer: OK') or diag($out);

my $n = 0;
sub tampered {
    my ($what, $code) = @_;
    my $d = $t->dir . "/tamper" . ++$n;
    mkdir $d;
    copy($_, $d) for glob("$dir/audit*");
    my @lines = split /(?<=\n)/, slurp("$d/audit.log");
    $code->(\@lines);
    spew("$d/audit.log", join '', @lines);
    my ($rc, $out) = verify($d, '--pubkey', "$pki/audit-pub.pem");
    isnt($rc, 0, "$what: verify fails");
    return $out;
}

my $edited;
$out = tampered('edited entry', sub {
    for my $i (0 .. $#{ $_[0] }) {
        if ($_[0][$i] =~ s/audit-dev2/audit-xxx2/) { $edited = $i + 1; last }
    }
});
like($out, qr/audit\.log line $edited: entry seq \d+ was edited/,
     "  names the edited entry (line $edited)") or diag($out);

$out = tampered('removed entry', sub { splice(@{ $_[0] }, 1, 1) });
like($out, qr/audit\.log line 2: entry seq \d+ follows seq \d+: 1 entry/,
     '  names the entry after the gap') or diag($out);

$out = tampered('reordered entries',
                sub { @{ $_[0] }[1, 2] = @{ $_[0] }[2, 1] });
like($out, qr/audit\.log line 2: entry seq/, '  names the first moved entry')
    or diag($out);

$out = tampered('entries cut off the end', sub { pop @{ $_[0] } });
like($out, qr/removed from the end/, '  names the missing tail') or diag($out);

# a log cut back to a signed checkpoint (audit.head replaced by it, here
# the last one) with entries added by someone without the key: refused
# when they run past the period given (--max-unsigned-age) or number more
# than allowed (--max-unsigned); a few, close to it, pass (README)
our $ts_form = '%04d-%02d-%02dT%02d:%02d:%02d.000Z';
sub forged {
    my ($secs, $count, @extra) = @_;
    my $d = $t->dir . "/tamper" . ++$n;
    mkdir $d;
    copy($_, $d) for glob("$dir/audit*");
    my @lines = split /(?<=\n)/, slurp("$d/audit.log");
    my $last = $json->decode($lines[-1]);
    my @tm = reverse($last->{time} =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)/);
    $tm[4]--;
    my $t0 = timegm(@tm);
    my ($seq, $prev) = ($last->{seq}, $last->{hash});
    for my $k (1 .. $count) {
        my @g = gmtime($t0 + $secs);
        my $ts = sprintf($ts_form, $g[5] + 1900,
                         $g[4] + 1, @g[3, 2, 1, 0]);
        $seq++;
        my $pre = qq({"seq":$seq,"time":"$ts","type":"issue","protocol":)
                  . qq("est","ca":"issuing","serial":"F0F0$k","outcome":)
                  . qq("success","pid":1,"prev":"$prev");
        $prev = sha256_hex($pre);
        push @lines, qq($pre,"hash":"$prev"}\n);
    }
    spew("$d/audit.log", join '', @lines);
    return verify($d, '--pubkey', "$pki/audit-pub.pem", @extra);
}

like($json->decode((split /\n/, slurp("$dir/audit.log"))[-1])->{type},
     qr/^checkpoint$/, 'the log ends in a signed checkpoint');
($rc, $out) = forged(600, 1);
is($rc, 0, 'an entry 10 min after the last checkpoint, no bound given: '
   . 'intact (a quiet CA writes no checkpoint meanwhile)') or diag($out);
($rc, $out) = forged(600, 1, '--max-unsigned-age', 120);
isnt($rc, 0, 'with --max-unsigned-age 120: refused');
like($out, qr/run 600 s past it/, '  says so') or diag($out);
($rc, $out) = forged(1, 3, '--max-unsigned', 2);
isnt($rc, 0, 'three entries added, two allowed: refused');
like($out, qr/3 entries after the last signed checkpoint/, '  says so')
    or diag($out);
($rc, $out) = forged(1, 3, '--max-unsigned', 5, '--max-unsigned-age', 120);
is($rc, 0, 'three added within the bounds pass (the documented limit)')
    or diag($out);

# an added entry whose time the writer never writes (an offset, another
# precision) was left out of the age bound: it fails verification, named
for my $form ('%04d-%02d-%02dT%02d:%02d:%02d.000+00:00',
              '%04d-%02d-%02dT%02d:%02d:%02dZ') {
    local $ts_form = $form;
    ($rc, $out) = forged(600, 1, '--max-unsigned-age', 120);
    isnt($rc, 0, "an added entry's time in another form ($form): refused");
    like($out, qr/audit\.log line \d+: entry seq \d+: its time is not the /,
         '  names the entry') or diag($out);
}

# --- kill -9 right after a response ------------------------------------------

# the default orphan_after (30 s) from here: an entry is taken over early
# only because its writer is gone
$t->start_nginx($t->render_conf('--workers', 1));

my ($r9, $s9) = enroll('audit-kill9');
is($r9->{code}, 200, 'enrolled audit-kill9');

my $master = $t->{children}{nginx};
my @workers = grep { /^\d+$/ }
              split /\s+/, `ps -o pid= --ppid $master`;
ok(@workers, 'worker found: ' . join(',', @workers));
kill 'KILL', @workers;

# its entry is durable in Redis with the record; the file has it at once,
# or (killed within the syncer's 5 ms batch) from the janitor of the new
# worker, which sees that the writer's pid is gone
my $t9 = time;
my $in9;
for (1 .. 200) {
    $in9 = grep { $_->{type} eq 'issue' && ($_->{serial} // '') eq ($s9 // 'x') }
           entries();
    last if $in9;
    select(undef, undef, undef, 0.05);
}
ok($in9, 'the issuance answered before kill -9 is in the log ('
   . sprintf('%.1f', time - $t9) . ' s after the kill)');

# the master starts a new worker: the chain goes on from the file
my $ok = 0;
for (1 .. 50) {
    my ($r) = enroll("audit-after$_");
    if ($r->{code} == 200) { $ok = 1; last }
    select(undef, undef, undef, 0.1);
}
ok($ok, 'enrollment works with the new worker');

# whatever the killed worker left in the stream is cleared, not doubled
ok(wait_empty(), 'the stream is empty again after the crash');
is(scalar(grep { $_->{type} eq 'issue' && ($_->{serial} // '') eq ($s9 // 'x') }
          entries()), 1, 'the issuance before kill -9 is in the log once');

# an entry whose writer process is gone is written within seconds; one of a
# live process (this test) is left to it until orphan_after (30 s)
my $dead = fork();
exit 0 if $dead == 0;
waitpid($dead, 0);
(my $body_dead = $orphan_body) =~ s/0A0B0C0D0E0F/0DEAD0DEAD01/;
(my $body_live = $orphan_body) =~ s/0A0B0C0D0E0F/0A11FE0A11FE/;
$t->redis_raw('XADD', $stream, '*', 't', '2026-11-29T00:00:01.000Z',
              'b', $body_dead, 'p', $dead);
my $live_id = $t->redis_raw('XADD', $stream, '*', 't',
                            '2026-11-29T00:00:02.000Z', 'b', $body_live,
                            'p', $$);
chomp $live_id;
my $td = time;
my @d;
for (1 .. 160) {
    @d = grep { ($_->{serial} // '') eq '0DEAD0DEAD01' } entries();
    last if @d;
    select(undef, undef, undef, 0.05);
}
is(scalar @d, 1, 'an entry of a process that is gone: written once ('
   . sprintf('%.1f', time - $td) . ' s)');
ok(!(grep { ($_->{serial} // '') eq '0A11FE0A11FE' } entries()),
   'an entry of a live writer, younger than orphan_after: left to it');
is(xlen(), 1, '  and still in the stream');
$t->redis_raw('XDEL', $stream, $live_id);

($rc, $out, $err) = verify($dir, '--pubkey', "$pki/audit-pub.pem");
is($rc, 0, 'log intact across the crash') or diag("$out$err");

$t->stop_nginx;

# --- without the syncer thread: sync tasks in a full pool -------------------

# pipe2(O_NONBLOCK|O_CLOEXEC) fails in nginx (only the syncer's pipe asks
# for it): the worker syncs with thread-pool tasks
my ($shim, $cerr) = $t->build_shim('nopipe2', <<'C');
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/syscall.h>

int
pipe2(int fd[2], int flags)
{
    if (flags == (O_NONBLOCK | O_CLOEXEC)) {
        errno = EMFILE;
        return -1;
    }

    return (int) syscall(SYS_pipe2, fd, flags);
}
C
ok($shim, 'pipe2() shim built') or diag($cerr);

# one thread, a queue of one: the sync task often finds it full
my $conf = $t->render_conf('--workers', 1, '--threads', 1);
$conf =~ s/(thread_pool pki threads=1) max_queue=\d+;/$1 max_queue=1;/
    or die 'no thread_pool line';
$master = $t->start_nginx($conf, preload => [$shim]);
my @w0 = $t->workers_of($master);
like(slurp($t->error_log) // '', qr/pipe2\(\) failed, syncing in the pool/,
     'no syncer thread: synced by pool tasks');

# 24 clients until the queue refused a sync task, and 5 s more (answers
# after the refusal: 2 s were not always enough on a loaded machine)
my ($dcsr) = $t->make_csr('nosyncer', subj => '/CN=nosyncer');
$t->start_load('nosyncer', 24, sub {
    my $r = $t->est_post('simpleenroll', $dcsr, quiet => 1);
    return { code => $r->{code}, body => $r->{code} == 200 ? $r->{body} : '' };
});
my $t0 = time;
my $refused;
while (time - $t0 < 60) {
    select(undef, undef, undef, 0.2);
    $refused //= time
        if (slurp($t->error_log) // '') =~ /sync task not queued/;
    last if $refused && time - $refused > 5;
}
$t->stop_load('nosyncer');
my @res = $t->load_results('nosyncer');
my @ok = grep { $_->{code} == 200 } @res;
my @bad = grep { $_->{code} != 200 && $_->{code} != 503 } @res;

ok($refused, 'the full queue refused a sync task: warned ('
   . sprintf('%.1f', ($refused // time) - $t0) . ' s)');
is(scalar @bad, 0, scalar(@ok) . ' x 200, '
   . (@res - @ok - @bad) . ' x 503 (shed), nothing else')
    or diag(join ', ', map { $_->{code} } @bad);
ok((grep { $_->{t0} > ($refused // 9e9) } @ok),
   'answers after the refusal (the retry posted the sync)');

my %logged = map { ($_->{serial} // '') => 1 }
             grep { $_->{type} eq 'issue' } $t->audit_entries;
my @unlogged;
for my $g (@ok) {
    my $pem = $t->p7_to_pem($g->{body});
    my $f = $pem ? $t->save_first_cert($pem, "nosyncer-$g->{k}-$g->{i}")
                 : undef;
    my $s = $f ? $t->x509_field($f, 'serial') : 'no certificate';
    push @unlogged, $s if !$logged{$s};
}
is(scalar @unlogged, 0, 'every answered issuance is in the log')
    or diag("@unlogged");
is_deeply([$t->workers_of($master)], \@w0, 'the worker survived');

# the retry timer does not hold the worker at exit
my $ts = time;
$t->stop_nginx;
ok(time - $ts < 10, sprintf('graceful stop in %.1f s', time - $ts));

($rc, $out, $err) = verify($dir, '--pubkey', "$pki/audit-pub.pem");
is($rc, 0, 'log intact') or diag("$out$err");

# --- two containers: one host name, one log path, two directories -----------

# Two instances on this host (one host name) sharing Redis, each in a mount
# namespace of its own where another real directory is bind-mounted on the
# same log path.  Their streams were one ("<host>-<hash of the path>"): each
# janitor took the other's entries.  With DIR/audit.id they are two.  One
# instance's worker is stopped (SIGSTOP) right after an answer, its entry
# still in its stream: past orphan_after (1 s), the other's janitor took it
# when the stream was shared; now it is left to its own writer.
SKIP: {
    my ($urc, undef, $uerr) = run_cmd(['unshare', '-m', 'sh', '-c',
                                       'mount -t tmpfs none /mnt']);
    skip "no mount namespaces here: $uerr", 14 if $urc != 0;

    my $shared = $t->dir . '/ns-audit';
    mkdir $shared;
    my %san = PKITest::san_env();
    my %in;

    for my $n (qw(a b)) {
        my $i = $in{$n} = {
            real => $t->dir . "/ns-real-$n",
            prefix => $t->dir . "/ns-nginx-$n",
            https => PKITest::free_port(),
            http => PKITest::free_port(),
        };
        mkdir $i->{real};
        mkdir $i->{prefix};
        mkdir "$i->{prefix}/$_" for qw(conf logs tmp);

        my ($rc, $conf, $err) = run_cmd([
            "$PKITest::TOP/scripts/nginx-conf.sh", '--build', $PKITest::BUILD,
            '--pki', $pki, '--prefix', $i->{prefix},
            '--redis', $t->redis_sock, '--https', $i->{https},
            '--http', $i->{http}, '--daemon', 'off', '--log-level', 'info',
            '--token', $t->token, '--workers', 1, '--audit', $shared,
            '--audit-params', 'orphan_after=1s']);
        die "nginx-conf.sh failed: $err" if $rc != 0;
        spew("$i->{prefix}/conf/nginx.conf", $conf);

        my $pid = fork() // die "fork: $!";
        if ($pid == 0) {
            $ENV{SOFTHSM2_CONF} = $t->softhsm_conf;
            open(STDOUT, '>>', "$i->{prefix}/logs/stderr.log");
            open(STDERR, '>&', \*STDOUT);
            # the sanitizer runtime (if any) for nginx only
            exec('unshare', '-m', 'sh', '-c',
                 'mount --bind "$1" "$2" && shift 2 && exec env "$@"', 'sh',
                 $i->{real}, $shared, (map { "$_=$san{$_}" } sort keys %san),
                 'nginx', '-p', "$i->{prefix}/", '-c',
                 "$i->{prefix}/conf/nginx.conf")
                or POSIX::_exit(127);
        }
        $i->{pid} = $pid;
        $t->{children}{"ns-nginx-$n"} = $pid;     # stopped at exit

        my $up;
        for (1 .. 300) {
            last if waitpid($pid, POSIX::WNOHANG()) == $pid;
            $up = $t->curl('GET', "http://127.0.0.1:$i->{http}/",
                           max_time => 2, quiet => 1)->{code} == 200;
            last if $up;
            select(undef, undef, undef, 0.1);
        }
        ok($up, "instance $n up, its log at $shared in its namespace")
            or diag(slurp("$i->{prefix}/logs/error.log") // '');
    }

    my @ids = map { slurp("$in{$_}{real}/audit.id") // '' } qw(a b);
    like($ids[0], qr/^[0-9a-f]{16}\n\z/, 'instance a made its audit.id');
    ok($ids[1] =~ /^[0-9a-f]{16}\n\z/ && $ids[1] ne $ids[0],
       '  b one of its own');
    ok(!-e "$shared/audit.id", '  both in their own directory');

    my %ser = (a => [], b => []);
    for my $k (1 .. 3) {
        for my $n (qw(a b)) {
            local $t->{https} = $in{$n}{https};
            my ($r, $s) = enroll("ns-$n-$k");
            push @{ $ser{$n} }, $s if $r->{code} == 200 && $s;
        }
    }
    is(scalar(@{ $ser{a} }) + scalar(@{ $ser{b} }), 6,
       'three issuances through each');

    # b's worker stopped right after an answer: its entry is in its stream
    my ($wb) = $t->workers_of($in{b}{pid});
    {
        local $t->{https} = $in{b}{https};
        my ($r, $s) = enroll('ns-b-stopped');
        kill 'STOP', $wb if $wb;
        is($r->{code}, 200, 'one more through b, whose worker then stops');
        push @{ $ser{b} }, $s if $s;
    }
    sleep 3;

    sub ns_serials {
        my ($d) = @_;
        my %s;
        for my $f (sort(glob("$d/audit-0*.log")), "$d/audit.log") {
            open my $fh, '<', $f or next;
            while (my $l = <$fh>) {
                my $j = eval { $json->decode($l) } or next;
                $s{ $j->{serial} }++ if $j->{type} eq 'issue' && $j->{serial};
            }
            close $fh;
        }
        return \%s;
    }

    my $sa = ns_serials($in{a}{real});
    is(scalar(grep { $sa->{$_} } @{ $ser{b} }), 0,
       "a's log has none of b's entries, not the stopped writer's either");
    kill 'CONT', $wb if $wb;

    my $done;
    for (1 .. 100) {
        my $sb = ns_serials($in{b}{real});
        my @keys = grep { length } split /\n/,
                   $t->redis_raw('--scan', '--pattern',
                                 '*{ca:issuing}:audit:*');
        $done = !(grep { !$sb->{$_} } @{ $ser{b} })
                && !(grep { 0 + $t->redis_raw('XLEN', $_) } @keys);
        last if $done;
        select(undef, undef, undef, 0.1);
    }
    ok($done, "b wrote its entries itself once resumed; the streams are "
       . "empty");

    $sa = ns_serials($in{a}{real});
    my $sb = ns_serials($in{b}{real});
    is(join(',', map { $sa->{$_} // 0 } @{ $ser{a} }), '1,1,1',
       "a's log: each of a's issuances once");
    is(join(',', map { $sb->{$_} // 0 } @{ $ser{b} }), '1,1,1,1',
       "b's log: each of b's issuances once");
    is(scalar(grep { $sb->{$_} } @{ $ser{a} }), 0,
       "b's log: none of a's");
    is(scalar(keys %$sa) + scalar(keys %$sb), 7, '  and nothing else');

    for my $n (qw(a b)) {
        my $pid = delete $t->{children}{"ns-nginx-$n"};
        kill 'QUIT', $pid;
        waitpid($pid, 0);
    }
    my ($rca, $outa) = verify($in{a}{real}, '--pubkey', "$pki/audit-pub.pem");
    my ($rcb, $outb) = verify($in{b}{real}, '--pubkey', "$pki/audit-pub.pem");
    ok($rca == 0 && $rcb == 0, 'both logs verify') or diag("$outa$outb");
}

# --- a log that does not open: fail closed -----------------------------------

# A worker whose log does not open (here audit.lock cannot be opened, which
# nginx -t does not see) answers issuance and revocation with 503: no
# certificate is signed or returned that the log does not hold.  A
# malformed audit.id is refused by nginx -t already, and by a worker that
# starts with one (respawned after it was spoiled) as above.
{
    my $fc = $t->dir . '/audit-closed';
    mkdir $fc;
    mkdir "$fc/audit.lock";
    $t->start_nginx($t->render_conf('--workers', 1, '--audit', $fc));

    my ($r, $s) = enroll('audit-closed1');
    is($r->{code}, 503, 'log not open: enrollment answers 503');
    ok(!$s, '  no certificate returned');
    ok(!-e "$fc/audit.log" || !(grep { $_->{type} eq 'issue' }
                                 map { eval { $json->decode($_) } || () }
                                 split /\n/, slurp("$fc/audit.log") // ''),
       '  nothing logged');
    my $el = slurp($t->error_log) // '';
    like($el, qr/\[alert\].*pki_audit_log .*audit\.lock.*refused/,
         '  the worker said why at start');

    $r = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
                  . '/pki/admin/revoke', user => 'admin:admin',
                  headers => ['Content-Type: application/json'],
                  data => qq({"serial":"$serials[1]","reason":"superseded"}));
    is($r->{code}, 503, '  revocation answers 503 too') or diag($r->{body});
    $t->stop_nginx;

    # nginx -t refuses a malformed audit.id
    rmdir "$fc/audit.lock";
    spew("$fc/audit.id", "not-an-id\n");
    my ($tok, $tout) = $t->nginx_test($t->write_conf(
        $t->render_conf('--workers', 1, '--audit', $fc), 'badid.conf'));
    ok(!$tok, 'nginx -t refuses a malformed audit.id');
    like($tout, qr/\[emerg\].*audit\.id is malformed/, '  and says so')
        or diag($tout);

    # a worker that starts with one (spoiled after nginx -t): 503
    unlink "$fc/audit.id";
    $t->start_nginx($t->render_conf('--workers', 1, '--audit', $fc));
    ($r) = enroll('audit-closed2');
    is($r->{code}, 200, 'a good log: enrollment works');
    spew("$fc/audit.id", "not-an-id\n");
    my $m = $t->{children}{nginx};
    my @w = $t->workers_of($m);
    kill 'KILL', @w;
    my $up;
    for (1 .. 100) {
        my @n = $t->workers_of($m);
        $up = @n && $n[0] != $w[0];
        last if $up;
        select(undef, undef, undef, 0.05);
    }
    ok($up, '  the worker is respawned');
    my $before = scalar(grep { $_->{type} eq 'issue' }
                        map { eval { $json->decode($_) } || () }
                        split /\n/, slurp("$fc/audit.log") // '');
    ($r, $s) = enroll('audit-closed3');
    is($r->{code}, 503, 'malformed audit.id at worker start: 503');
    ok(!$s, '  no certificate returned');
    select(undef, undef, undef, 0.5);
    is(scalar(grep { $_->{type} eq 'issue' }
              map { eval { $json->decode($_) } || () }
              split /\n/, slurp("$fc/audit.log") // ''), $before,
       '  and nothing more in the log');
    $t->stop_nginx;
}

done_testing();
