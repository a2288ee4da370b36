#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# "nginx -s reload|reopen|quit" parses the whole configuration in the
# signaller process before it signals the master.  With the CA key on the
# token (SoftHSM behind build/p11shim.so, which appends a line per
# C_Initialize to PKI_P11SHIM_EVENTS), and the transaction log's
# checkpoint key there as well:
#  - "-s reload" without SOFTHSM2_CONF in its environment (a systemd
#    ExecReload) exits 0 without [emerg], and the master reloads: new
#    workers, which enroll and answer OCSP;
#  - the signaller loads no PKCS#11 module (no C_Initialize, so no login),
#    also with SOFTHSM2_CONF set;
#  - "nginx -t" still opens the token: it fails without SOFTHSM2_CONF;
#  - "-s reopen" likewise, and "-s quit" without the variable stops nginx.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use PKITest;

my $shim = "$PKITest::BUILD/p11shim.so";
plan(skip_all => "$shim not built") if !-e $shim;

delete $ENV{SOFTHSM2_CONF};

my $t = PKITest->new;
my $dir = $t->dir;
my $events = "$dir/events-server";
my $sigev = "$dir/events-signaller";

# the master and its workers load the shim with these (nginx keeps them
# for the workers with "env")
$ENV{PKI_P11SHIM_MODULE} = $PKITest::P11;
$ENV{PKI_P11SHIM_EVENTS} = $events;

$t->start_redis;
# the transaction log signs its checkpoints with a key on the token too
my $audit = "$dir/audit";
mkdir $audit or die "mkdir $audit: $!";
my $tok = $t->token;
my $akey = "key=pkcs11:token=$tok;object=root;type=private";
my $conf = $t->render_conf('--workers', 2, '--audit', 'off');
ok($conf =~ s{^(\s*pki_key_vault\s+demo\s*\{.*?^\s*\}\n)}
             {$1    pki_audit_log $audit "$akey";\n}ms,
   'the audit log with its checkpoint key on the token');
my $mod = quotemeta $PKITest::P11;
ok($conf =~ s{^(\s*)module\s+$mod;}{${1}module $shim;}m,
   'the vault uses the shim');
ok($conf =~ s{^env SOFTHSM2_CONF;}{env SOFTHSM2_CONF;
env PKI_P11SHIM_MODULE;
env PKI_P11SHIM_EVENTS;}m, "the shim's environment for the workers");
$t->start_nginx($conf);

my $master = $t->{children}{nginx};
my $log = $t->error_log;
my $prefix = $t->prefix . '/';

sub workers { return $t->workers_of($master, 'worker'); }

sub log_from {
    my ($off) = @_;
    return substr(slurp($log) // '', $off);
}

sub inits {
    my ($file) = @_;
    return scalar grep { /^init / } split /\n/, (slurp($file) // '');
}

# nginx -s SIG as an operator (or systemd) runs it: the test's environment
# without SOFTHSM2_CONF, unless given; the shim logs to its own file
sub signal {
    my ($sig, %env) = @_;
    my ($rc, $out, $err) = run_cmd(
        ['nginx', '-p', $prefix, '-c', 'conf/nginx.conf', '-s', $sig],
        env => { PKITest::san_env(), PKI_P11SHIM_EVENTS => $sigev, %env },
        timeout => 60);
    $t->check_sanitizer_text($out . $err, "nginx -s $sig");
    return ($rc, $out . $err);
}

my ($csr) = $t->make_csr('signal', subj => '/CN=signal-dev');
my $first;

sub enroll {
    my $r = $t->est_post('simpleenroll', $csr, max_time => 15, quiet => 1);
    $first //= $r->{body} if $r->{code} == 200;
    return $r->{code};
}

# OCSP (openssl ocsp, the answer verified) for the first certificate
sub ocsp_good {
    my $pem = $t->p7_to_pem($first // return 0) // return 0;
    my $f = $t->save_first_cert($pem, 'leaf');
    my $pki = $t->pki;
    my ($rc, $out) = $t->openssl_ocsp(
        '-issuer', "$pki/issuing.pem", '-cert', $f,
        '-url', 'http://127.0.0.1:' . $t->http_port . '/ocsp',
        '-CAfile', "$pki/root.pem", '-verify_other', "$pki/issuing.pem");
    diag($out) if $out !~ /: good/;
    return $rc == 0 && $out =~ /\Q$f\E: good/ ? 1 : 0;
}

is(enroll(), 200, 'enrollment before the signals');
my @w0 = workers();
is(scalar @w0, 2, "two workers (@w0)");
cmp_ok(inits($events), '>=', 3, 'the master and both workers loaded the '
       . 'shim (' . inits($events) . ' C_Initialize)');

# --- nginx -t still opens the token --------------------------------------

my ($rc, $out, $err) = run_cmd(
    ['nginx', '-p', $prefix, '-c', 'conf/nginx.conf', '-t'],
    env => { PKITest::san_env(), PKI_P11SHIM_EVENTS => "$dir/events-t" },
    timeout => 60);
isnt($rc, 0, 'nginx -t without SOFTHSM2_CONF fails');
like($out . $err, qr/\[emerg\].*pki_key_vault/,
     'nginx -t names the vault it could not open');
cmp_ok(inits("$dir/events-t"), '>=', 1, 'nginx -t loaded the module');

# --- -s reload without SOFTHSM2_CONF -------------------------------------

my $off = length(slurp($log) // '');
my $out1;
($rc, $out1) = signal('reload');
is($rc, 0, 'nginx -s reload without SOFTHSM2_CONF exits 0');
unlike($out1, qr/\[emerg\]/, 'no [emerg] from the signaller') or diag($out1);
unlike($out1, qr/\[(warn|error|crit|alert)\]/,
       'the signaller logs nothing of ours') or diag($out1);
is(inits($sigev), 0, 'the signaller loaded no PKCS#11 module (no '
   . 'C_Initialize, no C_Login)');

my %old = map { $_ => 1 } @w0;
ok(wait_until(20, sub { my @w = workers(); @w == 2 && !grep { $old{$_} } @w }),
   'the master reloaded: two new workers (' . join(' ', workers()) . ')');
like(log_from($off), qr/\[notice\] \d+#\d+: reconfiguring$/m,
     'the master logged the reload');

my $code = 0;
wait_until(15, sub { $code = enroll(); $code == 200 });
is($code, 200, 'enrollment after the reload');
ok(ocsp_good(), 'OCSP answers good for it after the reload');

# --- -s reload with SOFTHSM2_CONF: still no token ------------------------

my @w1 = workers();
$off = length(slurp($log) // '');
($rc, $out) = signal('reload', SOFTHSM2_CONF => $t->softhsm_conf);
is($rc, 0, 'nginx -s reload with SOFTHSM2_CONF exits 0');
is(inits($sigev), 0, 'no C_Initialize in that signaller either');
%old = map { $_ => 1 } @w1;
ok(wait_until(20, sub { my @w = workers(); @w == 2 && !grep { $old{$_} } @w }),
   'the master reloaded again');

# --- -s reopen -------------------------------------------------------------

my @w2 = workers();
($rc, $out) = signal('reopen');
is($rc, 0, 'nginx -s reopen without SOFTHSM2_CONF exits 0');
unlike($out, qr/\[emerg\]/, 'no [emerg] from it') or diag($out);
ok(wait_until(10, sub { log_from($off) =~ /reopening logs/ }),
   'the master reopened the logs');
$code = 0;
wait_until(15, sub { $code = enroll(); $code == 200 });
is($code, 200, 'enrollment after the reopen');
is_deeply([workers()], \@w2, 'the same workers');

# --- -s quit ---------------------------------------------------------------

($rc, $out) = signal('quit');
is($rc, 0, 'nginx -s quit without SOFTHSM2_CONF exits 0');
unlike($out, qr/\[emerg\]/, 'no [emerg] from it') or diag($out);
if (ok(wait_until(20, sub { waitpid($master, WNOHANG) == $master }),
       'the master exited'))
{
    delete $t->{children}{nginx};
    $t->check_sanitizer_file($log, 'nginx error log');
    $t->check_sanitizer_file($t->prefix . '/logs/stderr.log',
                             'nginx stderr');
} else {
    $t->stop_nginx;                 # with the same sanitizer checks
}
is(inits($sigev), 0, 'no signaller loaded the PKCS#11 module');

my $l = slurp($log) // '';
unlike($l, qr/exited on signal|\[alert\]|\[emerg\]|\[crit\]/,
       'no crash, alert, emerg or crit in the error log')
    or diag(join("\n", grep { /exited on signal|\[(alert|emerg|crit)\]/ }
                      split /\n/, $l));

done_testing;
