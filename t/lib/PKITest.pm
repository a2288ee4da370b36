# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Test harness for nginx-pki (Test::Nginx is not packaged in Debian).
#
# Each test gets a private temp dir with its own SoftHSM token and PKI
# (scripts/mkpki.sh), a Redis server on a unix socket and nginx on free
# 127.0.0.1 ports, run as child processes and stopped at the end (also on
# failure).  Results are checked with curl and the openssl CLI.
#
# Environment: PKI_BUILD (build dir, default ../build), PKI_SANITIZE=1 (run
# nginx with the ASan/UBSan runtime preloaded and fail on any report).

package PKITest;

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use IO::Socket::IP;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);
use Test::More;
use Exporter 'import';

our @EXPORT = qw(run_cmd slurp spew which wait_port wait_until
                 openssl_or_die new_p256_key);

our $TOP = abs_path(dirname(__FILE__) . '/../..');
our $BUILD = abs_path($ENV{PKI_BUILD} || "$TOP/build");
our $SANITIZE = ($ENV{PKI_SANITIZE} || 0) eq '1';
our $P11 = $ENV{PKI_P11_MODULE} || '/usr/lib/softhsm/libsofthsm2.so';

my @LIVE;   # objects to stop at exit

sub slurp {
    my ($f) = @_;
    open(my $fh, '<:raw', $f) or return undef;
    local $/;
    my $d = <$fh>;
    close $fh;
    return $d;
}

sub spew {
    my ($f, $data) = @_;
    open(my $fh, '>:raw', $f) or die "cannot write $f: $!";
    print $fh $data;
    close $fh or die "cannot write $f: $!";
}

# run_cmd(\@argv, stdin => DATA, env => {...}, timeout => S)
#   returns (exit code, stdout, stderr, wait status); the exit code of a
#   command killed by a signal is 0: look at the wait status's low bits
sub run_cmd {
    my ($argv, %o) = @_;
    require IPC::Run;
    my ($in, $out, $err) = (defined $o{stdin} ? $o{stdin} : '', '', '');
    local %ENV = (%ENV, %{ $o{env} || {} });
    my $ok = eval {
        IPC::Run::run($argv, \$in, \$out, \$err,
                      IPC::Run::timeout($o{timeout} || 60));
        1;
    };
    if (!$ok) {
        return (255, $out, "$err\n$@", 255 << 8);
    }
    return ($? >> 8, $out, $err, $?);
}

# openssl_or_die(ARGS): `openssl ARGS`, its stdout; dies with its stderr if
# it exits nonzero (a test's own setup step, not a check)
sub openssl_or_die {
    my ($rc, $out, $err) = run_cmd(['openssl', @_]);
    die "openssl @_: $err" if $rc != 0;
    return $out;
}

# openssl_ca_dir(DIR, EXT): makes DIR an `openssl ca` directory (an empty
# index, serial 01, DIR/ca.cnf whose section [ext] holds the lines EXT,
# by default those of a CA certificate): for tests that make CA
# certificates with dates of their own (-startdate/-enddate)
sub openssl_ca_dir {
    my ($cadir, $ext) = @_;
    $ext //= "basicConstraints = critical,CA:TRUE\n"
           . "keyUsage = critical,keyCertSign,cRLSign\n"
           . "subjectKeyIdentifier = hash\n";
    mkdir $cadir or die "mkdir $cadir: $!";
    spew("$cadir/index.txt", '');
    spew("$cadir/serial", "01\n");
    spew("$cadir/ca.cnf", <<"EOF" . $ext);
[ca]
default_ca = d
[d]
database = $cadir/index.txt
new_certs_dir = $cadir
serial = $cadir/serial
default_md = sha256
policy = p
unique_subject = no
[p]
commonName = supplied
[ext]
EOF
}

# openssl_ca_sign(DIR, NAME, ISSUER, FROM, TO): DIR/NAME.csr signed in the
# openssl_ca_dir DIR with the [ext] extensions by DIR/ISSUER (its .key
# and, unless ISSUER is NAME, its .pem: NAME then signs itself), valid from
# FROM to TO (Unix times), into DIR/NAME.pem
sub openssl_ca_sign {
    my ($cadir, $name, $issuer, $from, $to) = @_;
    require POSIX;
    my $t = sub { POSIX::strftime('%y%m%d%H%M%SZ', gmtime($_[0])) };
    openssl_or_die('ca', '-batch', '-config', "$cadir/ca.cnf",
        $issuer eq $name ? ('-selfsign')
                         : ('-cert', "$cadir/$issuer.pem"),
        '-keyfile', "$cadir/$issuer.key", '-in', "$cadir/$name.csr",
        '-startdate', $t->($from), '-enddate', $t->($to),
        '-extensions', 'ext', '-notext', '-out', "$cadir/$name.pem");
}

# gmt_epoch(TEXT): the Unix time of an OpenSSL date ("Dec  7 23:17:52 2026
# GMT", as openssl ocsp and openssl crl print them)
sub gmt_epoch {
    my ($s) = @_;
    require Time::Piece;
    $s =~ s/\s+/ /g;
    return Time::Piece->strptime($s, '%b %d %H:%M:%S %Y GMT')->epoch;
}

# new_p256_key(FILE): a new EC P-256 private key written to FILE (PEM);
# returns FILE
sub new_p256_key {
    my ($f) = @_;
    openssl_or_die('genpkey', '-algorithm', 'EC', '-pkeyopt',
                   'ec_paramgen_curve:P-256', '-out', $f);
    return $f;
}

# A port nobody listens on now, never one this process handed out before:
# the kernel may give the same ephemeral port to two binds in a row, and a
# test that asked for an HTTP and an HTTPS port then got one port for both
# (t/crl.t under ASan: "nginx did not answer").
my %handed_out;

sub free_port {
    for (1 .. 50) {
        my $s = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0,
                                    Proto => 'tcp', Listen => 1,
                                    ReuseAddr => 0) or next;
        my $p = $s->sockport;
        close $s;
        next if $handed_out{$p}++;
        return $p;
    }
    die "no free port";
}

# --- construction ----------------------------------------------------------

# PKITest->new(%opts)
#   token => LABEL (default nginx-pki), rsa_key => 1 (also an RSA token key)
sub new {
    my ($class, %o) = @_;

    for my $f ("$BUILD/pkictl", "$BUILD/ngx_http_pki_module.so",
               "$BUILD/ngx_http_est_module.so")
    {
        plan(skip_all => "$f not built (run ./build.sh)") if !-e $f
            && !$o{no_nginx_needed};
    }

    my $base = "$TOP/t/tmp";
    mkdir $base;
    my $dir = tempdir('t-XXXXXX', DIR => $base,
                      CLEANUP => !$ENV{PKI_KEEP_TMP});
    my $self = bless {
        dir => $dir,
        pki => "$dir/pki",
        token => $o{token} || 'nginx-pki',
        children => {},
        owner => $$,
    }, $class;
    push @LIVE, $self;

    mkdir "$dir/nginx";
    mkdir "$dir/nginx/$_" for qw(conf logs tmp);

    $self->mkpki($self->{pki}, rsa_key => $o{rsa_key});

    return $self;
}

sub dir { $_[0]{dir} }
sub pki { $_[0]{pki} }
sub token { $_[0]{token} }

sub san_env {
    return () if !$SANITIZE;
    my $asan = `gcc -print-file-name=libasan.so`;
    my $ubsan = `gcc -print-file-name=libubsan.so`;
    chomp($asan, $ubsan);
    return (LD_PRELOAD => "$asan $ubsan",
            # every nginx dynamic module defines ngx_module_order etc.:
            # an ODR "violation" by design of nginx, not ours
            ASAN_OPTIONS => 'detect_leaks=0:detect_odr_violation=0',
            UBSAN_OPTIONS => 'print_stacktrace=1');
}

sub mkpki {
    my ($self, $dir, %o) = @_;
    my ($rc, $out, $err) = run_cmd(["$TOP/scripts/mkpki.sh", $dir],
        env => { PKI_BUILD => $BUILD, PKI_TOKEN => $self->{token},
                 PKI_MKPKI_QUIET => 1,
                 PKI_MKPKI_RSA => $o{rsa_key} ? 1 : 0 },
        timeout => 120);
    if ($rc != 0) {
        BAIL_OUT("scripts/mkpki.sh failed: $err");
    }
    return $dir;
}

sub softhsm_conf { "$_[0]{pki}/hsm/softhsm2.conf" }

# The environment of the core unit-test binaries (core/test): this test's
# Redis (start_redis first), its SoftHSM token with the EC key "issuing"
# and the RSA key "rsa" (new with rsa_key), its PKI and temp directories.
sub core_test_env {
    my ($self) = @_;
    my $tok = $self->token;
    return (
        PKI_TEST_REDIS_SOCK   => $self->redis_sock,
        PKI_TEST_SOFTHSM_CONF => $self->softhsm_conf,
        SOFTHSM2_CONF         => $self->softhsm_conf,
        PKI_TEST_P11_MODULE   => $P11,
        PKI_TEST_TOKEN        => $tok,
        PKI_TEST_PIN_FILE     => $self->pki . '/hsm/pin',
        PKI_TEST_KEY_URI_EC   =>
            "pkcs11:token=$tok;object=issuing;type=private",
        PKI_TEST_KEY_URI_RSA  => "pkcs11:token=$tok;object=rsa;type=private",
        PKI_TEST_PKI_DIR      => $self->pki,
        PKI_TEST_TMPDIR       => $self->dir,
    );
}

# --- redis ------------------------------------------------------------------

sub redis_sock { "$_[0]{dir}/redis.sock" }

sub start_redis {
    my ($self) = @_;
    return $self->start_redis_with();
}

sub stop_redis {
    my ($self) = @_;
    my $pid = delete $self->{children}{redis} or return;
    kill 'TERM', $pid;
    _reap($pid, 10);
    unlink $self->redis_sock;
}

sub redis {
    my ($self, @cmd) = @_;
    my ($rc, $out, $err) = run_cmd(['redis-cli', '-s', $self->redis_sock,
                                    '--no-raw', @cmd], timeout => 20);
    die "redis-cli @cmd failed: $err" if $rc != 0;
    return $out;
}

# raw output (no quoting), one value per line
sub redis_raw {
    my ($self, @cmd) = @_;
    my ($rc, $out, $err) = run_cmd(['redis-cli', '-s', $self->redis_sock,
                                    '--raw', @cmd], timeout => 60);
    die "redis-cli @cmd failed: $err" if $rc != 0;
    return $out;
}

# HGETALL as a perl hash (binary safe, through Redis.pm)
sub redis_hash {
    my ($self, $key) = @_;
    require Redis;
    my $r = Redis->new(sock => $self->redis_sock, reconnect => 0);
    my %h = $r->hgetall($key);
    $r->quit;
    return \%h;
}

sub redis_keys {
    my ($self, $pattern) = @_;
    my $out = $self->redis_raw('--scan', '--pattern', $pattern);
    return grep { length } split /\n/, $out;
}

# the keys that requests may change, sorted: everything but the CRLs, which
# worker 0 rebuilds by itself in the background (crl, crl_meta, crl_lock,
# crlnumber).  A hostile request must leave this list as it was.
sub state_keys {
    my ($self) = @_;
    # without the CRL keys worker 0 rebuilds, the metrics history buckets
    # (pki:{metrics}:..., written by a timer for any traffic) and the
    # certificate counts a metrics timer keeps for the fleet
    # (pki:{ca:CA}:counts)
    return sort grep { !/\}:crl/ && !/\{metrics\}/ && !/\}:counts$/ }
        $self->redis_keys('*');
}

# --- nginx -------------------------------------------------------------------

sub https_port { $_[0]{https} }
sub http_port { $_[0]{http} }
sub prefix { "$_[0]{dir}/nginx" }
sub error_log { "$_[0]{dir}/nginx/logs/error.log" }

# Renders the shared config (scripts/nginx-conf.sh); extra options are
# passed through (e.g. '--ca-key', $file).
sub render_conf {
    my ($self, @extra) = @_;
    $self->{https} ||= free_port();
    $self->{http} ||= free_port();
    my ($rc, $out, $err) = run_cmd([
        "$TOP/scripts/nginx-conf.sh", '--build', $BUILD,
        '--pki', $self->{pki}, '--prefix', $self->prefix,
        '--redis', $self->redis_sock, '--https', $self->{https},
        '--http', $self->{http}, '--daemon', 'off', '--log-level', 'info',
        '--token', $self->{token}, @extra]);
    die "nginx-conf.sh failed: $err" if $rc != 0;
    return $out;
}

sub write_conf {
    my ($self, $conf, $name) = @_;
    my $f = $self->prefix . '/conf/' . ($name || 'nginx.conf');
    spew($f, $conf);
    return $f;
}

# san_env() with the shims of start_nginx(CONF, preload => [...]) added to
# LD_PRELOAD after the sanitizer runtime, which must be loaded first; a
# test that sets $t->{asan_options} runs nginx (and nginx -t) with those
# ASAN_OPTIONS instead (e.g. LeakSanitizer on, reports to files)
sub _nginx_env {
    my ($self) = @_;
    my %e = san_env();
    $e{ASAN_OPTIONS} = $self->{asan_options}
        if $SANITIZE && $self->{asan_options};
    my @so = @{ $self->{preload} || [] };
    $e{LD_PRELOAD} = join ' ', grep { defined && length } $e{LD_PRELOAD}, @so
        if @so;
    return %e;
}

# nginx -t on a config file; returns (ok, output)
sub nginx_test {
    my ($self, $file) = @_;
    my ($rc, $out, $err) = run_cmd(
        ['nginx', '-p', $self->prefix . '/', '-c', $file, '-t'],
        env => { SOFTHSM2_CONF => $self->softhsm_conf, $self->_nginx_env },
        timeout => 60);
    my $all = $out . $err;
    $self->check_sanitizer_text($all, 'nginx -t');
    return ($rc == 0, $all);
}

# start_nginx(CONF, preload => [SO, ...]): nginx -t, then nginx as a child
# of the test, on CONF (default: render_conf); the shared objects
# (build_shim) are preloaded into these two only, not into a later
# nginx -t.  Returns the master's pid.
sub start_nginx {
    my ($self, $conf, %o) = @_;
    local $self->{preload} = $o{preload};
    $conf //= $self->render_conf;
    my $file = $self->write_conf($conf);
    unlink $self->error_log;

    my ($ok, $out) = $self->nginx_test($file);
    if (!$ok) {
        diag($out);
        die "nginx -t failed";
    }

    my $stderr = $self->prefix . '/logs/stderr.log';
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        %ENV = (%ENV, SOFTHSM2_CONF => $self->softhsm_conf,
                $self->_nginx_env);
        open(STDOUT, '>>', $stderr);
        open(STDERR, '>&', \*STDOUT);
        exec('nginx', '-p', $self->prefix . '/', '-c', $file)
            or POSIX::_exit(127);
    }
    $self->{children}{nginx} = $pid;
    my ($nw) = $conf =~ /^\s*worker_processes\s+(\d+)\s*;/m;
    $self->wait_nginx(workers => $nw);
    return $pid;
}

# wait_nginx(workers => N): until nginx answers on the plain port and,
# with N, all N worker processes run (the first may answer before the
# master has forked the last)
sub wait_nginx {
    my ($self, %o) = @_;
    my $deadline = time + 30;
    while (time < $deadline) {
        my $pid = $self->{children}{nginx};
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $self->{children}{nginx};
            diag(slurp($self->error_log) // '');
            die "nginx exited at startup";
        }
        my $r = $self->curl('GET', "http://127.0.0.1:$self->{http}/",
                            max_time => 2, quiet => 1);
        if ($r->{code} == 200) {
            # every worker must have survived init_process
            my $log = slurp($self->error_log) // '';
            if ($log =~ /exited with fatal code|\[emerg\]/) {
                diag($log);
                die "an nginx worker failed at startup";
            }
            return 1 if !$o{workers}
                        || $self->workers_of($pid, 'worker') >= $o{workers};
        }
        sleep 0.02;
    }
    diag(slurp($self->error_log) // '');
    die "nginx did not answer on port $self->{http}";
}

sub stop_nginx {
    my ($self) = @_;
    my $pid = delete $self->{children}{nginx} or return;
    kill 'QUIT', $pid;
    _reap($pid, 15);
    $self->check_sanitizer_file($self->error_log, 'nginx error log');
    $self->check_sanitizer_file($self->prefix . '/logs/stderr.log',
                                'nginx stderr');
}

sub check_sanitizer_text {
    my ($self, $text, $what) = @_;
    return 1 if !defined $text;
    if ($text =~ /AddressSanitizer|runtime error:|LeakSanitizer/) {
        fail("sanitizer report in $what");
        diag($text);
        return 0;
    }
    return 1;
}

sub check_sanitizer_file {
    my ($self, $file, $what) = @_;
    my $t = slurp($file);
    return 1 if !defined $t;
    return $self->check_sanitizer_text($t, $what) && ok(1, "no sanitizer "
                                                         . "report in $what");
}

sub _reap {
    my ($pid, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        return 1 if waitpid($pid, WNOHANG) == $pid;
        sleep 0.02;
    }
    _signal('KILL', $pid);
    waitpid($pid, 0);
    return 0;
}

# _signal(SIG, PID): SIG to a child of ours, to its whole process group
# when it leads one (spawn()'s setsid), so that what it started (flock's
# `sh -c 'sleep N'`) goes too; only to itself otherwise, as the other
# children (nginx, Redis, load clients) are in the test's own group
sub _signal {
    my ($sig, $pid) = @_;
    my $pg = getpgrp($pid);
    return kill($sig, defined $pg && $pg == $pid ? -$pid : $pid);
}

sub stop_all {
    my ($self) = @_;
    return if $self->{owner} != $$;
    $self->stop_nginx;
    $self->stop_redis;
    for my $k (keys %{ $self->{children} }) {
        my $pid = delete $self->{children}{$k};
        _signal('TERM', $pid);
        _reap($pid, 5);
    }
}

# give_up(WHY): this test file cannot go on (its own setup failed: no
# certificate to test with, say): a failing check WHY, every server of the
# file stopped (with their sanitizer checks, which must come before the
# plan), the plan closed and exit 1.  BAIL_OUT would stop the whole prove
# run: keep it for the shared infrastructure (mkpki.sh, the build).
sub give_up {
    my ($self, $why) = @_;
    fail($why);
    $_->stop_all for @LIVE;
    @LIVE = ();
    done_testing() if !Test::More->builder->has_plan;
    exit 1;
}

# a signal (Ctrl-C, a closed pipe, prove's timeout) must still stop the
# servers: turn it into exit() so that END runs
$SIG{$_} = sub { exit 1 } for qw(INT TERM HUP PIPE);

END {
    my $rc = $?;
    $_->stop_all for @LIVE;
    @LIVE = ();
    $? = $rc;
}

# --- HTTP ---------------------------------------------------------------

# curl(METHOD, URL, %o): o = data_file, data, headers => [..], user => 'u:p',
# cert, key, cacert (default: pki/root.pem), max_time
# returns { code, headers => {lc name => value}, head, body, err, rc }
sub curl {
    my ($self, $method, $url, %o) = @_;
    # named by PID and counter: a test's forked children share the
    # counter's value, never a file
    my $n = $$ . '-' . ++$self->{curl_n};
    my $bf = "$self->{dir}/curl-$n.body";
    my $hf = "$self->{dir}/curl-$n.head";
    my @a = ('curl', '-sS', '-X', $method, '--max-time', $o{max_time} || 20,
             '-o', $bf, '-D', $hf, '-w', '%{http_code}');
    if ($url =~ /^https/) {
        push @a, '--cacert', $o{cacert} || "$self->{pki}/root.pem";
    }
    push @a, '-u', $o{user} if $o{user};
    push @a, '--cert', $o{cert}, '--key', $o{key} if $o{cert};
    push @a, '-H', $_ for @{ $o{headers} || [] };
    my $stdin;
    if (defined $o{data_file}) {
        push @a, '--data-binary', '@' . $o{data_file};
    } elsif (defined $o{data}) {
        push @a, '--data-binary', '@-';
        $stdin = $o{data};
    }
    push @a, @{ $o{extra} || [] };
    push @a, $url;
    my ($rc, $out, $err) = run_cmd(\@a, stdin => $stdin,
                                   timeout => ($o{max_time} || 20) + 10);
    diag("curl $method $url: $err") if $rc != 0 && !$o{quiet};
    my $head = slurp($hf) // '';
    my $body = slurp($bf) // '';
    unlink $bf, $hf;
    # the last header block (after any 100 Continue)
    my @blocks = split /\r?\n\r?\n/, $head;
    @blocks = grep { /^HTTP\// } @blocks;
    my $last = @blocks ? $blocks[-1] : '';
    my %h;
    for my $l (split /\r?\n/, $last) {
        $h{lc $1} = $2 if $l =~ /^([^:\s]+):\s*(.*?)\s*$/;
    }
    return { code => ($out =~ /(\d{3})/ ? $1 + 0 : 0), headers => \%h,
             head => $last, heads => $head, body => $body, err => $err,
             rc => $rc };
}

# second_nginx(FILTER): another nginx on this test's Redis and PKI, in
# DIR/n2 with ports of its own; FILTER (may be undef) edits its rendered
# config.  Returns its PKITest object (error_log, http_port, ...).
sub second_nginx {
    my ($self, $filter) = @_;
    my $dir = $self->{dir};
    my $t2 = bless { %$self, dir => "$dir/n2", children => {},
                     https => undef, http => undef, curl_n => 1000 },
                   'PKITest';
    mkdir "$dir/n2";
    mkdir "$dir/n2/nginx";
    mkdir "$dir/n2/nginx/$_" for qw(conf logs tmp);
    my $sock = $self->redis_sock;
    my $conf = $t2->render_conf;
    $conf = $filter->($conf) if $filter;
    $conf =~ s{\Q$dir/n2/redis.sock\E}{$sock}g;
    # stopped at exit too, when the test dies or gives up before it stops
    # this nginx itself (its master would outlive the test)
    push @LIVE, $t2;
    $t2->start_nginx($conf);
    return $t2;
}

# responder_cert(NAME, CN, FROM, TO): an OCSP responder's P-256 key and
# certificate (EKU OCSPSigning, id-pkix-ocsp-nocheck) signed with the
# issuing CA's key on this test's token by `openssl ca`, valid from FROM to
# TO (seconds since the epoch); DIR/NAME.key and DIR/NAME.pem.  Two checks.
sub responder_cert {
    my ($self, $name, $cn, $from, $to) = @_;
    my ($dir, $pki) = ($self->{dir}, $self->pki);
    if (!-e "$dir/tca.cnf") {
        mkdir "$dir/tca";
        spew("$dir/tca/index.txt", '');
        spew("$dir/tca/serial", "4245\n");
        spew("$dir/tca.cnf", <<"EOF");
[ ca ]
default_ca = tca
[ tca ]
database = $dir/tca/index.txt
new_certs_dir = $dir/tca
serial = $dir/tca/serial
default_md = sha256
policy = pol
unique_subject = no
[ pol ]
commonName = supplied
[ ext ]
extendedKeyUsage = critical,OCSPSigning
keyUsage = critical,digitalSignature
noCheck = ignored
EOF
    }
    my $pin = slurp("$pki/hsm/pin") // '';
    chomp $pin;
    my $tok = $self->token;
    my ($rc, $o, $e) = run_cmd(['openssl', 'req', '-new', '-newkey', 'ec',
        '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', "$dir/$name.key", '-subj', "/CN=$cn",
        '-out', "$dir/$name.csr"]);
    is($rc, 0, "$name: responder key and CSR") or diag($e);
    my $fmt = sub { POSIX::strftime('%y%m%d%H%M%SZ', gmtime($_[0])) };
    ($rc, $o, $e) = run_cmd(['openssl', 'ca', '-batch', '-config',
        "$dir/tca.cnf", '-engine', 'pkcs11', '-keyform', 'engine',
        '-keyfile',
        "pkcs11:token=$tok;object=issuing;type=private;pin-value=$pin",
        '-cert', "$pki/issuing.pem", '-in', "$dir/$name.csr",
        '-startdate', $fmt->($from), '-enddate', $fmt->($to),
        '-extensions', 'ext', '-notext', '-out', "$dir/$name.pem"],
        env => { SOFTHSM2_CONF => $self->softhsm_conf }, timeout => 60);
    is($rc, 0, "$name: responder certificate issued (openssl ca)")
        or diag("$o$e");
    return ("$dir/$name.pem", "$dir/$name.key");
}

# no_continue(METHOD, URL, WANT, WHAT, %o): a 20 KB body sent with
# "Expect: 100-continue" (curl waits up to 5 s for the 100) to a request
# the server answers without its body: WANT at once, and no "100
# Continue" before it (RFC 9110 10.1.1); o as for curl.  Returns the answer.
sub no_continue {
    my ($self, $method, $url, $want, $what, %o) = @_;
    my $f = "$self->{dir}/continue.body";
    spew($f, 'x' x 20000) if !-e $f;
    my $r = $self->curl($method, $url, %o, data_file => $f,
        headers => [@{ $o{headers} || [] }, 'Expect: 100-continue'],
        extra => [@{ $o{extra} || [] }, '--expect100-timeout', '5']);
    is($r->{code}, $want, "$what, Expect: 100-continue: $want");
    unlike($r->{heads}, qr{^HTTP/\S+ 100}m, '  no 100 Continue before it');
    return $r;
}

# The demo's Matter hierarchies (scripts/mkpki-matter.sh: PAA, PAI,
# RCAC, ICAC, their keys in this test's token) under the PKI dir $pki;
# bails out when the script fails.
sub make_matter_pki {
    my ($self, $pki) = @_;
    my ($rc, $out, $err) = run_cmd(["$TOP/scripts/mkpki-matter.sh", $pki],
        env => { PKI_BUILD => $BUILD, PKI_TOKEN => $self->token,
                 PKI_MKPKI_QUIET => 1 },
        timeout => 60);
    Test::More::BAIL_OUT("scripts/mkpki-matter.sh failed: $err")
        if $rc != 0;
}

# The status line, headers and Content-Length body of an HTTP/1.1 answer
# read from socket $s into the hash %$a (status, headers => {lc name =>
# value}, body).
sub read_http_answer {
    my ($s, $a) = @_;
    my $line = $s->getline // '';
    ($a->{status}) = $line =~ m{^HTTP/1\.1 (\d+)};
    while (defined(my $l = $s->getline)) {
        last if $l =~ /^\r?\n$/;
        $a->{headers}{lc $1} = $2 if $l =~ /^([^:]+):\s*(.*?)\r?\n$/;
    }
    my $want = $a->{headers}{'content-length'} // 0;
    while (length($a->{body}) < $want) {
        $s->read(my $buf, $want - length($a->{body})) or last;
        $a->{body} .= $buf;
    }
}

# over_cap_post(%o): a raw HTTP/1.1 POST whose body goes over a cap, to
# see the module's own 413 (or protocol error) and what happens to the
# connection.  o = path, tls (default 1: the HTTPS port, else the HTTP
# one), headers => [...], user => 'u:p'; length => N announces N bytes and
# sends none; pause => S sends a first chunk under the cap, then after S
# seconds the rest (the cap is crossed in a later read); otherwise the
# whole chunked body at once (crossed in the first read, as a rule).
# chunk (default 'QUFB' x 4096) and chunks (default 6) shape the body;
# after => a request sent right behind the body on the same connection
# (a server that kept the connection would answer it).  Returns
# { status, headers => {lc name => value}, body, closed, after => bytes
# that came after the answer (chunked cases: read until the close), err }.
sub over_cap_post {
    my ($self, %o) = @_;
    require IO::Socket::SSL;
    require IO::Socket::INET;
    require MIME::Base64;
    require Time::HiRes;
    my $tls = $o{tls} // 1;
    my $port = $tls ? $self->https_port : $self->http_port;
    my $s = $tls
        ? IO::Socket::SSL->new(PeerHost => '127.0.0.1', PeerPort => $port,
              SSL_ca_file => "$self->{pki}/root.pem",
              SSL_verifycn_name => '127.0.0.1', Timeout => 20)
        : IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
              Timeout => 20);
    return { status => 0, err => "connect: $!" } if !$s;
    my %a = (status => 0, headers => {}, body => '', closed => 0);
    my $piece = $o{chunk} // ('QUFB' x 4096);
    my $n = $o{chunks} // 6;
    local $SIG{PIPE} = 'IGNORE';
    local $SIG{ALRM} = sub { die "timeout\n" };
    alarm 30;
    eval {
        my $head = "POST $o{path} HTTP/1.1\r\nHost: 127.0.0.1:$port\r\n";
        $head .= 'Authorization: Basic '
            . MIME::Base64::encode_base64($o{user}, '') . "\r\n"
            if $o{user};
        $head .= "$_\r\n" for @{ $o{headers} || [] };
        my $chunk = sub { sprintf("%x\r\n%s\r\n", length $_[0], $_[0]) };
        my $after = $o{after} // '';
        if ($o{length}) {
            print $s $head . "Content-Length: $o{length}\r\n\r\n";
        } elsif ($o{pause}) {
            print $s $head . "Transfer-Encoding: chunked\r\n\r\n"
                . $chunk->(substr($piece, 0, 1024));
            Time::HiRes::sleep($o{pause});
            print $s $chunk->($piece) for 1 .. $n;
            print $s "0\r\n\r\n" . $after;
        } else {
            print $s $head . "Transfer-Encoding: chunked\r\n\r\n"
                . join('', map { $chunk->($piece) } 1 .. $n)
                . "0\r\n\r\n" . $after;
        }
        read_http_answer($s, \%a);
        # then the server closes (a lingering close reads what still
        # comes); with a Content-Length, only after lingering_timeout of
        # waiting for the body, so not waited for here
        return if $o{length};
        my $rest = '';
        while (1) {
            my $got = $s->sysread(my $buf, 65536);
            last if !$got;
            $rest .= $buf;
        }
        $a{closed} = 1;
        $a{after} = $rest;
    };
    alarm 0;
    $a{err} = $@ if $@;
    close $s;
    return \%a;
}

sub est_url {
    my ($self, $op, $label) = @_;
    return "https://127.0.0.1:$self->{https}/.well-known/est/"
           . (defined $label ? "$label/" : '') . $op;
}

# POST a DER file base64-encoded to an EST operation (extra: more curl
# arguments).
sub est_post {
    my ($self, $op, $der, %o) = @_;
    require MIME::Base64;
    my $b64 = MIME::Base64::encode_base64($der);
    my $ct = exists $o{ctype} ? $o{ctype} : 'application/pkcs10';
    my @h = defined $ct ? ("Content-Type: $ct") : ();
    push @h, @{ $o{headers} || [] };
    return $self->curl('POST', $self->est_url($op, $o{label}),
                       data => $o{raw} // $b64, headers => \@h,
                       user => exists $o{user} ? $o{user} : 'demo:demo',
                       cert => $o{cert}, key => $o{key}, quiet => $o{quiet},
                       max_time => $o{max_time}, extra => $o{extra});
}

# --- openssl oracle --------------------------------------------------------

# make_csr(name, type => 'ec'|'rsa', bits => 2048, curve => 'P-256',
#          subj => '/CN=x/1.2.3.4=y', san => 'DNS:a,IP:1.2.3.4')
#   returns (der bytes, key file)
sub make_csr {
    my ($self, $name, %o) = @_;
    my $key = "$self->{dir}/$name.key";
    my $csr = "$self->{dir}/$name.csr.der";
    my @new = ($o{type} || 'ec') eq 'rsa'
        ? ('-newkey', 'rsa:' . ($o{bits} || 2048))
        : ('-newkey', 'ec', '-pkeyopt',
           'ec_paramgen_curve:' . ($o{curve} || 'P-256'));
    my $subj = $o{subj} || "/CN=$name";
    # openssl req skips an attribute given by a dotted OID in -subj (with
    # a warning): such attributes get names from an oid_section
    my (%oid, @cfg);
    $subj =~ s{(?<=/)(\d+(?:\.\d+)+)=}
              {($oid{$1} //= 'pkiAttr' . scalar(keys %oid)) . '='}ge;
    if (%oid) {
        my $cnf = "$self->{dir}/$name.req.cnf";
        spew($cnf, "oid_section = oids\n[oids]\n"
             . join('', map { "$oid{$_} = $_\n" } sort keys %oid)
             . "[req]\ndistinguished_name = dn\n[dn]\n");
        @cfg = ('-config', $cnf);
    }
    my @a = ('openssl', 'req', '-new', @cfg, @new, '-nodes', '-keyout',
             $key, '-subj', $subj, '-outform', 'DER', '-out', $csr);
    push @a, '-addext', "subjectAltName=$o{san}" if $o{san};
    my ($rc, $out, $err) = run_cmd(\@a);
    die "openssl req failed: $err" if $rc != 0;
    return (slurp($csr), $key);
}

# certs-only PKCS#7 in base64 -> PEM text of its certificates
sub p7_to_pem {
    my ($self, $b64) = @_;
    require MIME::Base64;
    my $der = MIME::Base64::decode_base64($b64 // '');
    my ($rc, $out, $err) = run_cmd(['openssl', 'pkcs7', '-inform', 'DER',
                                    '-print_certs'], stdin => $der);
    return undef if $rc != 0 || $out !~ /BEGIN CERTIFICATE/;
    return $out;
}

# simpleenroll of a fresh key for CN=NAME (one test: 200): the
# certificate's file, or undef
sub enroll_cn {
    my ($self, $name) = @_;
    my ($csr) = $self->make_csr($name, subj => "/CN=$name");
    my $r = $self->est_post('simpleenroll', $csr);
    is($r->{code}, 200, "$name: enrolled") or diag($r->{body});
    my $pem = $self->p7_to_pem($r->{body}) or return undef;
    return $self->save_first_cert($pem, $name);
}

# enroll_serial(NAME, csr => DER, max_time => S, make_csr options): a
# quiet simpleenroll (demo:demo) of DER, or else of a fresh key for
# CN=NAME; no test of its own, the caller judges the answer.  Returns (the
# curl result, the certificate's serial or undef, its file or undef); the
# certificate is saved as DIR/NAME.pem.
sub enroll_serial {
    my ($self, $name, %o) = @_;
    my $csr = delete $o{csr};
    my $max_time = delete $o{max_time};
    ($csr) = $self->make_csr($name, subj => "/CN=$name", %o)
        if !defined $csr;
    my $r = $self->est_post('simpleenroll', $csr, quiet => 1,
                            max_time => $max_time);
    return ($r, undef) if $r->{code} != 200;
    my $pem = $self->p7_to_pem($r->{body});
    my $f = $pem ? $self->save_first_cert($pem, $name) : undef;
    return ($r, $f ? $self->x509_field($f, 'serial') : undef, $f);
}

# admin_revoke(SERIAL, quiet => 1): revocation (superseded) through the
# admin API as admin:admin, 10 s at most; the curl result
sub admin_revoke {
    my ($self, $serial, %o) = @_;
    return $self->curl('POST', "https://127.0.0.1:$self->{https}"
                       . '/pki/admin/revoke', user => 'admin:admin',
                       headers => ['Content-Type: application/json'],
                       data => qq({"serial":"$serial","reason":"superseded"}),
                       max_time => 10, quiet => $o{quiet});
}

# openssl ocsp ARGS: (exit code, its stdout and stderr together)
sub openssl_ocsp {
    my ($self, @args) = @_;
    my ($rc, $out, $err) = run_cmd(['openssl', 'ocsp', @args], timeout => 60);
    return ($rc, "$out\n$err");
}

# ocsp_reqfile(CERT, NAME): an OCSP request (no nonce) for CERT, of the
# issuing CA, written to DIR/NAME.der (one check); returns the path
sub ocsp_reqfile {
    my ($self, $cert, $name) = @_;
    my $f = "$self->{dir}/$name.der";
    my ($rc, $out) = $self->openssl_ocsp('-issuer', "$self->{pki}/issuing.pem",
                                         '-cert', $cert, '-no_nonce',
                                         '-reqout', $f);
    is($rc, 0, "$name: request written") or diag($out);
    return $f;
}

# ocsp_post(URL, FILE): the request in FILE POSTed to URL (curl's answer)
sub ocsp_post {
    my ($self, $url, $f) = @_;
    return $self->curl('POST', $url, data => slurp($f),
                       headers => ['Content-Type: application/ocsp-request']);
}

# start_redis_proxy(ARM): t/lib/redis_drop_proxy.py on DIR/proxy.sock in
# front of this test's Redis, armed by the file ARM (one check: it
# listens); returns the socket's path
sub start_redis_proxy {
    my ($self, $arm) = @_;
    my $proxy = "$self->{dir}/proxy.sock";
    $self->spawn('proxy', '/usr/bin/python3',
                 "$TOP/t/lib/redis_drop_proxy.py", $proxy,
                 $self->redis_sock, $arm);
    for (1 .. 50) { last if -S $proxy; sleep 0.1 }
    ok(-S $proxy, 'the proxy listens');
    return $proxy;
}

# first certificate of a PEM text, written to a file; returns the path
sub save_first_cert {
    my ($self, $pem, $name) = @_;
    my ($c) = $pem =~ /(-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?)/s;
    return undef if !$c;
    my $f = "$self->{dir}/$name.pem";
    spew($f, $c);
    return $f;
}

sub x509_text {
    my ($self, $file) = @_;
    my ($rc, $out, $err) = run_cmd(['openssl', 'x509', '-in', $file,
                                    '-noout', '-text']);
    return $rc == 0 ? $out : undef;
}

sub x509_field {
    my ($self, $file, $opt) = @_;
    my ($rc, $out) = run_cmd(['openssl', 'x509', '-in', $file, '-noout',
                              "-$opt", '-nameopt', 'RFC2253']);
    chomp $out;
    $out =~ s/^\w+=//;
    return $out;
}

# (notBefore, notAfter) of a certificate file in seconds since the epoch, as
# the openssl CLI reads them.  RFC 5280 4.1.2.5 counts notAfter in: a full
# validity of v seconds has notAfter - notBefore = v - 1.
sub x509_dates {
    my ($self, $file) = @_;
    my ($rc, $out) = run_cmd(['openssl', 'x509', '-in', $file, '-noout',
                              '-startdate', '-enddate', '-dateopt',
                              'iso_8601']);
    require Time::Local;
    my @t;
    for my $f ('notBefore', 'notAfter') {
        return () if $rc != 0
            || $out !~ /^$f=(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)Z?$/m;
        push @t, Time::Local::timegm($6, $5, $4, $3, $2 - 1, $1);
    }
    return @t;
}

sub x509_der {
    my ($self, $file) = @_;
    my ($rc, $out) = run_cmd(['openssl', 'x509', '-in', $file,
                              '-outform', 'DER']);
    return $out;
}

sub verify_chain {
    my ($self, $file) = @_;
    my ($rc, $out, $err) = run_cmd(['openssl', 'verify', '-CAfile',
        "$self->{pki}/root.pem", '-untrusted', "$self->{pki}/issuing.pem",
        $file]);
    return ($rc == 0 && $out =~ /: OK/, $out . $err);
}

# one EST simpleenroll of the CSR file, timed, within max_time s:
# { code, dt, ra (Retry-After), verified (the certificate, saved as
# NAME, verifies against the demo chain) }
sub est_enroll_timed {
    my ($self, $csr, $name, $max) = @_;
    my $t0 = Time::HiRes::time();
    my $r = $self->est_post('simpleenroll', $csr, max_time => $max,
                            quiet => 1);
    my %o = (code => $r->{code}, dt => Time::HiRes::time() - $t0,
             ra => $r->{headers}{'retry-after'} // '', verified => 0);
    if ($r->{code} == 200) {
        my $pem = $self->p7_to_pem($r->{body});
        my $f = $pem ? $self->save_first_cert($pem, $name) : undef;
        $o{verified} = $f && ($self->verify_chain($f))[0] ? 1 : 0;
    }
    return \%o;
}

# public key PEM of a private key file or a certificate file
sub pubkey_of_key {
    my ($self, $file) = @_;
    my ($rc, $out) = run_cmd(['openssl', 'pkey', '-in', $file, '-pubout']);
    return $rc == 0 ? $out : undef;
}

sub pubkey_of_cert {
    my ($self, $file) = @_;
    my ($rc, $out) = run_cmd(['openssl', 'x509', '-in', $file, '-noout',
                              '-pubkey']);
    return $rc == 0 ? $out : undef;
}


# --- fault injection (t/fault_*.t) -----------------------------------------

# build_shim(NAME, C_SOURCE, CC_ARGS): C_SOURCE (a libc call that fails on
# demand, say) written to DIR/NAME.c and built into DIR/NAME.so for
# start_nginx(CONF, preload => [...]); CC_ARGS go before the file names
# ('-DFLAG="..."').  Returns (the .so's path, undef if gcc failed; gcc's
# stderr).
sub build_shim {
    my ($self, $name, $src, @cc) = @_;
    my $c = "$self->{dir}/$name.c";
    my $so = "$self->{dir}/$name.so";
    spew($c, $src);
    my ($rc, $out, $err) = run_cmd(['gcc', '-shared', '-fPIC', @cc,
                                    '-o', $so, $c]);
    return ($rc == 0 ? $so : undef, $err);
}

# ssl_write_fail_shim(NAME, NEEDLE, FLAG, SEEN): an LD_PRELOAD shim (see
# build_shim) whose SSL_write() fails with EPIPE, writing nothing, for a
# buffer that holds the JSON member name NEEDLE ("hmac_key" finds
# '"hmac_key"') while the file FLAG exists; with SEEN, what it would have
# sent is appended to that file (the test's view of the lost answer).
# Returns (path of the .so or undef, compiler errors).
sub ssl_write_fail_shim {
    my ($self, $name, $needle, $flag, $seen) = @_;
    my $n = length($needle) + 2;
    my $keep = defined $seen ? <<"K" : '';
        int  fd = open("$seen", O_WRONLY | O_CREAT | O_APPEND, 0600);

        if (fd >= 0) {
            (void) !write(fd, buf, num);
            close(fd);
        }

K
    return $self->build_shim($name, <<"C", '-ldl');
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

typedef struct ssl_st  SSL;

int
SSL_write(SSL *s, const void *buf, int num)
{
    static int  (*real)(SSL *, const void *, int);

    if (num > 0 && memmem(buf, num, "\\"$needle\\"", $n) != NULL
        && access("$flag", F_OK) == 0)
    {
$keep        errno = EPIPE;
        return -1;
    }

    if (real == NULL) {
        real = (int (*)(SSL *, const void *, int)) dlsym(RTLD_NEXT,
                                                         "SSL_write");
    }

    return real(s, buf, num);
}
C
}

# start_redis_with(@extra): start_redis with extra redis-server arguments,
# e.g. ('--enable-debug-command', 'local') for DEBUG SLEEP (Redis 7 refuses
# DEBUG by default and the option cannot be changed at run time).
sub start_redis_with {
    my ($self, @extra) = @_;
    my $d = "$self->{dir}/redis";
    mkdir $d;
    my $sock = $self->redis_sock;
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open(STDOUT, '>>', "$d/redis.out");
        open(STDERR, '>&', \*STDOUT);
        exec('redis-server', '--port', '0', '--unixsocket', $sock,
             '--unixsocketperm', '700', '--dir', $d, '--save', '',
             '--appendonly', 'no', '--daemonize', 'no',
             '--logfile', "$d/redis.log", @extra) or POSIX::_exit(127);
    }
    $self->{children}{redis} = $pid;
    my $deadline = time + 10;
    while (time < $deadline) {
        # the socket first (no redis-cli to start while it is not there)
        if (-S $sock) {
            my ($rc, $out) = run_cmd(['redis-cli', '-s', $sock, 'ping'],
                                     timeout => 5);
            return $pid if $rc == 0 && $out =~ /PONG/;
        }
        sleep 0.02;
    }
    die "redis did not start on $sock";
}


# --- fault matrix helpers (t/fault_*.t, issue 8 section 2) -------------------

# start_load(NAME, N, SUB): forks N clients that call SUB->($k, $i) in a
# loop until stop_load(NAME); SUB returns a hash ref with at least code; the
# client adds k, i, t0, t1 and writes one JSON line per call.  A load is
# bounded by its own deadline too (max => seconds, default 120).
sub start_load {
    my ($self, $name, $n, $sub, %o) = @_;
    require JSON::PP;
    my $stop = "$self->{dir}/load-$name.stop";
    unlink $stop;
    my $deadline = time + ($o{max} || 120);
    my @c;
    for my $k (1 .. $n) {
        my $res = "$self->{dir}/load-$name-$k.jsonl";
        my $pid = fork() // die "fork: $!";
        if ($pid == 0) {
            $self->{owner} = -1;          # the parent stops the servers
            @LIVE = ();
            srand($$ ^ time);
            open(my $fh, '>>', $res) or POSIX::_exit(2);
            $fh->autoflush(1);
            my $i = 0;
            while (!-e $stop && time < $deadline) {
                $i++;
                my $t0 = time;
                my $r = eval { $sub->($k, $i) }
                        // { code => -1, err => "died: $@" };
                $r->{k} = $k;
                $r->{i} = $i;
                $r->{t0} = $t0;
                $r->{t1} = time;
                print $fh JSON::PP->new->canonical->encode($r), "\n";
            }
            close $fh;
            POSIX::_exit(0);
        }
        push @c, [$pid, $res];
    }
    $self->{loads}{$name} = \@c;
    $self->{children}{"load-$name-$_"} = $c[$_ - 1][0] for 1 .. $n;
    return scalar @c;
}

# every result line so far of load NAME (array of hash refs)
sub load_results {
    my ($self, $name) = @_;
    require JSON::PP;
    my @r;
    for my $c (@{ $self->{loads}{$name} || [] }) {
        for my $l (split /\n/, (slurp($c->[1]) // '')) {
            my $h = eval { JSON::PP::decode_json($l) } or next;
            push @r, $h;
        }
    }
    return @r;
}

# stops the clients of load NAME (each finishes its call, bounded by 60 s)
sub stop_load {
    my ($self, $name) = @_;
    spew("$self->{dir}/load-$name.stop", '');
    my $ok = 1;
    my $n = 0;
    for my $c (@{ $self->{loads}{$name} || [] }) {
        $n++;
        delete $self->{children}{"load-$name-$n"};
        $ok = 0 if !_reap($c->[0], 60);
    }
    return $ok;
}

# the pids of an nginx master's children, sorted; workers_of(MASTER,
# 'worker') only its worker processes, not the cache manager and loader
# of a proxy_cache_path (the loader exits a minute after the start)
sub workers_of {
    my ($self, $master, $only) = @_;
    my @w;
    if (($only // '') eq 'worker') {
        my $out = `ps -o pid=,args= --ppid $master 2>/dev/null`;
        @w = map { /^\s*(\d+)\s+.*worker process/ ? $1 : () }
             split /\n/, $out;
    } else {
        my $out = `ps -o pid= --ppid $master 2>/dev/null`;
        @w = map { /(\d+)/ ? $1 : () } split /\n/, $out;
    }
    @w = sort { $a <=> $b } @w;
    return wantarray ? @w : scalar @w;
}

# reload_nginx(keep_old => 1, workers => N): SIGHUP to the master, then
# polls (every 20 ms, 30 s at most, then dies) until the reload took
# effect: N (default: as many as before) new worker processes run and
# every old one is gone, or with keep_old (an old worker still finishing
# a request) at least shutting down, its listening sockets closed, so
# that new connections go to the new workers.  Instead of a fixed sleep
# after the signal.
sub reload_nginx {
    my ($self, %o) = @_;
    my $master = $self->{children}{nginx} or die 'nginx is not running';
    my %old = map { $_ => 1 } $self->workers_of($master, 'worker');
    my $want = $o{workers} // scalar(keys %old);
    kill 'HUP', $master or die "SIGHUP: $!";
    my $deadline = time + 30;
    while (time < $deadline) {
        my ($new, $left) = (0, 0);
        for (split /\n/, `ps -o pid=,args= --ppid $master 2>/dev/null`) {
            /^\s*(\d+)\s+.*worker process(.*)$/ or next;
            if (!$old{$1}) {
                $new++;
            } elsif (!$o{keep_old} || $2 !~ /shutting down/) {
                $left++;
            }
        }
        return 1 if $new >= $want && !$left;
        sleep 0.02;
    }
    diag(slurp($self->error_log) // '');
    die 'nginx did not reload within 30 s';
}

# wait_until(SECS, COND, [STEP]): 1 once COND->() returns true, asked
# every STEP s (default 0.1) for SECS s and once more at the end; else 0
sub wait_until {
    my ($secs, $cond, $step) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        return 1 if $cond->();
        sleep($step // 0.1);
    }
    return $cond->() ? 1 : 0;
}

# wait_log(RE, SECS): the error log's text once it matches RE, polled every
# 0.05 s; undef if it did not within SECS
sub wait_log {
    my ($self, $re, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        my $l = slurp($self->error_log) // '';
        return $l if $l =~ $re;
        sleep 0.05;
    }
    return undef;
}

# resident set size (kB) and its high-water mark of a process
sub rss_of {
    my ($self, $pid) = @_;
    my $s = slurp("/proc/$pid/status") // '';
    my ($rss) = $s =~ /^VmRSS:\s+(\d+)/m;
    my ($hwm) = $s =~ /^VmHWM:\s+(\d+)/m;
    return ($rss // 0, $hwm // 0);
}

# OCSP status of a certificate file from our responder (openssl ocsp):
# 'good', 'revoked', 'unknown' or 'error: ...'
sub ocsp_status {
    my ($self, $cert) = @_;
    my ($rc, $out, $err) = $self->_ocsp($cert);
    return $1 if $rc == 0 && $out =~ /:\s*(good|revoked|unknown)\b/;
    my $e = "$out $err";
    $e =~ s/\s+/ /g;
    return 'error: ' . substr($e, 0, 200);
}

# openssl ocsp of a certificate file (the first of a PEM bundle):
# (exit code, stdout, stderr)
sub _ocsp {
    my ($self, $cert) = @_;
    return run_cmd(['openssl', 'ocsp', '-issuer',
        "$self->{pki}/issuing.pem", '-cert', $cert, '-url',
        "http://127.0.0.1:$self->{http}/ocsp", '-CAfile',
        "$self->{pki}/root.pem", '-no_nonce', '-timeout', '10'],
        timeout => 20);
}

# the revocation reason our responder gives ('' when good or unknown)
sub ocsp_reason {
    my ($self, $cert) = @_;
    my (undef, $out) = $self->_ocsp($cert);
    return $out =~ /Reason:\s*(\S+)/ ? $1 : '';
}

# ocsp_status once the responder sees a revocation, which it does within
# ocsp_responder_revgen_check (1 s): 'revoked' or the last status (asked
# every 0.1 s, for 8 s at most)
sub ocsp_revoked {
    my ($self, $cert) = @_;
    my $st;
    my $deadline = time + 8;
    while (1) {
        $st = $self->ocsp_status($cert);
        return $st if $st eq 'revoked' || time > $deadline;
        sleep 0.1;
    }
}

# check_reserved(CA, \%held): every reserved serial of CA (the serial:
# keys, never removed) must be a complete record (status good or revoked,
# with DER) or a pending intent that expires (0 < TTL <= 300) and whose
# certificate no client holds (%held: serial => anything).  Returns
# (\@problems, \%count_per_state, \@serials).
sub check_reserved {
    my ($self, $ca, $held) = @_;
    my $p = "pki:{ca:$ca}";
    my @s = map { /:serial:([0-9A-Fa-f]+)$/ ? uc $1 : () }
            $self->redis_keys("$p:serial:*");
    my (@bad, %n);
    for my $s (@s) {
        my $h = $self->redis_hash("$p:cert:$s");
        my $st = $h->{status} // 'absent';
        $n{$st}++;
        if ($st eq 'good' || $st eq 'revoked') {
            push @bad, "$s: $st record without DER" if !length($h->{der} // '');
        } elsif ($st eq 'pending') {
            my $ttl = $self->redis_raw('TTL', "$p:cert:$s") + 0;
            push @bad, "$s: pending without expiry (ttl $ttl)"
                if $ttl <= 0 || $ttl > 300;
            push @bad, "$s: pending, but a client holds its certificate"
                if $held->{$s};
        } else {
            push @bad, "$s: reserved serial with a $st record";
        }
    }
    return (\@bad, \%n, \@s);
}

# check_held(CA, @results): each result with a cert file and serial must
# have its complete record (status good, the same DER) and OCSP must say
# good.  Returns (\@no_record, \@not_good).
sub check_held {
    my ($self, $ca, @got) = @_;
    my (@norec, @notgood);
    for my $g (@got) {
        my $h = $self->redis_hash("pki:{ca:$ca}:cert:$g->{serial}");
        my $der = $self->x509_der($g->{cert});
        push @norec, "$g->{serial}: " . ($h->{status} // 'no record')
            if ($h->{status} // '') ne 'good' || ($h->{der} // '') ne $der;
        my $o = $self->ocsp_status($g->{cert});
        push @notgood, "$g->{serial}: $o" if $o ne 'good';
    }
    return (\@norec, \@notgood);
}

# RFC 9773 certID of a certificate file: base64url(AKI keyIdentifier) "."
# base64url(DER serial content octets)
sub cert_id {
    my ($self, $file) = @_;
    require MIME::Base64;
    my $txt = $self->x509_text($file);
    my ($aki) = $txt =~ /Authority Key Identifier:\s*\n\s*(?:keyid:)?([0-9A-F:]+)/;
    my $serial = $self->x509_field($file, 'serial');
    $aki =~ s/://g;
    $serial = "0$serial" if length($serial) % 2;
    my $sbin = pack('H*', $serial);
    $sbin = "\0$sbin" if ord($sbin) & 0x80;
    return MIME::Base64::encode_base64url(pack('H*', $aki)) . '.'
        . MIME::Base64::encode_base64url($sbin);
}

# the transaction log's entries, oldest first, from DIR (default: PKI/audit,
# the pki_audit_log of nginx-conf.sh); lines that are not JSON are skipped
sub audit_entries {
    my ($self, $dir) = @_;
    require JSON::PP;
    my $d = $dir // "$self->{pki}/audit";
    my @e;
    for my $f (sort(glob("$d/audit-0*.log")), "$d/audit.log") {
        for my $l (split /\n/, (slurp($f) // '')) {
            my $j = eval { JSON::PP::decode_json($l) } or next;
            push @e, $j;
        }
    }
    return @e;
}


# the highest seq of the transaction log in DIR (0: none)
sub audit_last_seq {
    my ($self, $dir) = @_;
    my $s = 0;
    for ($self->audit_entries($dir)) {
        $s = $_->{seq} if ($_->{seq} // 0) > $s;
    }
    return $s;
}

# the request entries of protocol P after seq FROM in DIR: (those logged
# one by one, the summaries of the refusal bucket), array refs
sub audit_requests {
    my ($self, $dir, $from, $p) = @_;
    my @e = grep { ($_->{seq} // 0) > $from && $_->{type} eq 'request'
                   && ($_->{protocol} // '') eq $p }
            $self->audit_entries($dir);
    return ([grep { ($_->{operation} // '') ne 'summary' } @e],
            [grep { ($_->{operation} // '') eq 'summary' } @e]);
}

# GET /pki/metrics (the admin login of nginx-conf.sh): { series => value },
# and in list context the answer too; dies unless 200 with only
# "series value" lines
sub metrics_scrape {
    my ($self) = @_;
    my $r = $self->curl('GET', "https://127.0.0.1:$self->{https}"
                        . '/pki/metrics', user => 'admin:admin',
                        quiet => 1);
    die "metrics: $r->{code}" if $r->{code} != 200;
    my %m;
    for (split /\n/, $r->{body}) {
        next if /^#/ || !/\S/;
        /^(\S.*) (\S+)$/ or die "bad line: $_";
        $m{$1} = $2;
    }
    return wantarray ? (\%m, $r) : \%m;
}

# --- the ACME lab (t/acme_clients.t, t/acme_clients2.t, t/acme_go.t,
# t/acme_proto.t) ---------------------------------------------------------------

# the path of a command in $PATH, or undef
sub which {
    my ($cmd) = @_;
    for my $d (split /:/, $ENV{PATH} // '') {
        return "$d/$cmd" if -x "$d/$cmd";
    }
    return undef;
}

# wait_port(PORT): 1 once something accepts on 127.0.0.1:PORT (5 s at most)
sub wait_port {
    my ($port) = @_;
    for (1 .. 100) {
        my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1',
                                    PeerPort => $port, Timeout => 1);
        return 1 if $s;
        sleep 0.05;
    }
    return 0;
}

# spawn(NAME, ARGV...): a child process of ours in a session of its own,
# its output in DIR/NAME.log; stopped with its process group at the end or
# by unspawn(NAME)
sub spawn {
    my ($self, $name, @argv) = @_;
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        POSIX::setsid();
        open(STDOUT, '>>', "$self->{dir}/$name.log");
        open(STDERR, '>&', \*STDOUT);
        exec(@argv) or POSIX::_exit(127);
    }
    $self->{children}{$name} = $pid;
    return $pid;
}

sub unspawn {
    my ($self, $name) = @_;
    my $pid = delete $self->{children}{$name} or return;
    _signal('TERM', $pid);
    waitpid($pid, 0);
}

# acme_lab(): the free ports of the ACME lab, (http-01, tls-alpn-01, the
# fake DNS, its management API), the same on every call
sub acme_lab {
    my ($self) = @_;
    $self->{lab} ||= [ map { free_port() } 1 .. 4 ];
    return @{ $self->{lab} };
}

# render_conf(@extra) with acme_validation_resolver 127.0.0.1:DNS in the
# ACME location (the lab's names all resolve through pebble-challtestsrv)
sub acme_lab_conf {
    my ($self, $dns, @extra) = @_;
    my $conf = $self->render_conf(@extra);
    $conf =~ s/^(\s*)(acme_validation_timeout\s[^;]*;)/$1$2\n$1acme_validation_resolver 127.0.0.1:$dns;/m
        or BAIL_OUT('no acme location in scripts/nginx-conf.sh output');
    return $conf;
}

# start_challtestsrv(DNS, MGMT): pebble-challtestsrv as the fake DNS (A
# queries answer 127.0.0.1; TXT and CAA records set through its management
# API on MGMT), its log in DIR/challtestsrv.log; 1 once it is up
sub start_challtestsrv {
    my ($self, $dns, $mgmt) = @_;
    $self->{challtestsrv} = "http://127.0.0.1:$mgmt";
    $self->spawn('challtestsrv', 'pebble-challtestsrv',
        '-defaultIPv4', '127.0.0.1', '-defaultIPv6', '',
        '-dns01', "127.0.0.1:$dns", '-http01', '', '-https01', '',
        '-tlsalpn01', '', '-management', "127.0.0.1:$mgmt");
    return wait_port($mgmt);
}

# the management API's URL
sub challtestsrv_url { $_[0]{challtestsrv} }

# add_caa(HOST, [TAG, VALUE], ...): CAA records (RFC 8659) for HOST;
# returns (ok, status and answer)
sub add_caa {
    my ($self, $host, @pol) = @_;
    require HTTP::Tiny;
    require JSON::PP;
    my $r = HTTP::Tiny->new(timeout => 5)->post(
        "$self->{challtestsrv}/add-caa", { content => JSON::PP::encode_json({
            host => "$host.", policies => [
                map { { tag => $_->[0], value => $_->[1] } } @pol ] }) });
    return ($r->{success}, "$r->{status} $r->{content}");
}

# exit_ok(NAME, RC, T0, TEXT): the check "NAME: exit 0 (N s)" of a client
# started at T0; its TEXT and the error log on failure
sub exit_ok {
    my ($self, $name, $rc, $t0, $text) = @_;
    ok($rc == 0, sprintf('%s: exit 0 (%.1f s)', $name, time - $t0))
        or diag("$text\n" . (slurp($self->error_log) // ''));
    return $rc == 0;
}

# run_ok(NAME, \@ARGV, run_cmd options): runs a client (60 s at most) with
# exit_ok; (exit code, output) in list context, else whether it exited 0
sub run_ok {
    my ($self, $name, $argv, %o) = @_;
    my $t0 = time;
    my ($rc, $out, $err) = run_cmd($argv, timeout => 60, %o);
    $self->exit_ok($name, $rc, $t0, "$out\n$err");
    return wantarray ? ($rc, "$out$err") : $rc == 0;
}

# the checks of an issued certificate (the leaf first in FILE): written,
# chains to the test root, serverAuth; between them cert_ok checks each DNS
# name of NAMES, cert_ok_sans that the SANs are exactly NAMES
sub cert_ok {
    my ($self, $name, $file, @names) = @_;
    my $text = $self->_cert_chains($name, $file) // return;
    for my $n (@names) {
        like($text, qr/DNS:\Q$n\E(?:,|\s|$)/, "$name: SAN $n");
    }
    like($text, qr/TLS Web Server Authentication/, "$name: serverAuth");
}

sub cert_ok_sans {
    my ($self, $name, $file, @names) = @_;
    my $text = $self->_cert_chains($name, $file) // return;
    my %want = map { $_ => 1 } @names;
    my %got = map { $_ => 1 } $text =~ /DNS:([^,\s]+)/g;
    is_deeply(\%got, \%want, "$name: SANs @names");
    like($text, qr/TLS Web Server Authentication/, "$name: serverAuth");
}

sub _cert_chains {
    my ($self, $name, $file) = @_;
    ok(-s $file, "$name: certificate written") or return undef;
    my ($ok, $out) = $self->verify_chain($file);
    ok($ok, "$name: chains to the test root") or diag($out);
    return $self->x509_text($file) // '';
}

# the certificates of a PEM file, in order, each a PEM text
sub pem_certs {
    my ($file) = @_;
    return map { "$_\n" } (slurp($file) // '')
        =~ /(-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----)/sg;
}

# a new External Account Binding key from the admin API (checked: 201):
# (kid, hmac_key)
sub eab_key {
    my ($self) = @_;
    require JSON::PP;
    my $r = $self->curl('POST', "https://127.0.0.1:$self->{https}"
                        . '/pki/admin/acme/eab', user => 'admin:admin');
    is($r->{code}, 201, 'admin API: an EAB key') or diag($r->{body});
    my $k = eval { JSON::PP::decode_json($r->{body}) } || {};
    return ($k->{kid} // '', $k->{hmac_key} // '');
}

# the stored ACME account (JSON) behind an account URL, or {}
sub acme_account {
    my ($self, $url) = @_;
    require JSON::PP;
    my ($id) = ($url // '') =~ m{/acct/([\w-]+)$} or return {};
    my ($key) = grep { /\{acme:\Q$id\E\}:acct$/ } $self->redis_keys('*:acct');
    return {} if !$key;
    return eval { JSON::PP::decode_json($self->redis_raw('GET', $key)) }
           || {};
}

# the stored ACME account whose contact is mailto:MAIL, or {}
sub acme_account_with_contact {
    my ($self, $mail) = @_;
    require JSON::PP;
    for my $k ($self->redis_keys('*:acct')) {
        my $a = eval { JSON::PP::decode_json($self->redis_raw('GET', $k)) }
            or next;
        return $a if grep { $_ eq "mailto:$mail" } @{ $a->{contact} // [] };
    }
    return {};
}

1;
