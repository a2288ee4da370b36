#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Real ACME clients against our ACME server (nginx + ngx_http_acme_module,
# configured by scripts/nginx-conf.sh with the lab settings: every name is
# 127.0.0.1, http-01 and tls-alpn-01 on free ports, dns-01 answered by
# pebble-challtestsrv as the validation resolver).
#
#   certbot: standalone http-01, webroot (a tiny python3 http.server),
#            renew, revoke, P-384, --must-staple, update_account, revoke
#            signed with the certificate's key, unregister, the default
#            and the alternate chain (--preferred-chain), External
#            Account Binding
#   lego:    http-01, tls-alpn-01, dns-01 (+ wildcard), renew, revoke,
#            the alternate chain (--preferred-chain), External Account
#            Binding, CAA records (RFC 8659) refusing and allowing issuance
#
# Each client trusts only the test root (REQUESTS_CA_BUNDLE,
# LEGO_CA_CERTIFICATES).  The oracles are the openssl CLI (chain, names)
# and our OCSP responder, asked with `openssl ocsp`, for revocations.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use JSON::PP ();
use Time::HiRes qw(time sleep);
use PKITest;

sub which {
    my ($cmd) = @_;
    for my $d (split /:/, $ENV{PATH} // '') {
        return "$d/$cmd" if -x "$d/$cmd";
    }
    return undef;
}

my @missing = grep { !which($_) } qw(certbot lego pebble-challtestsrv);
plan(skip_all => "ACME clients not installed: @missing "
               . "(apt-get install certbot lego pebble)") if @missing;
plan(skip_all => "ngx_http_acme_module not built")
    if !-e "$PKITest::BUILD/ngx_http_acme_module.so";

my $PY = -x '/usr/bin/python3' ? '/usr/bin/python3' : which('python3');
my $T0 = time;

my $t = PKITest->new;
$t->start_redis;

my $dir = $t->dir;
my $pki = $t->pki;
my $http01 = PKITest::free_port();
my $tls01 = PKITest::free_port();
my $dns = PKITest::free_port();
my $mgmt = PKITest::free_port();

my $conf = $t->render_conf('--acme-http-port', $http01,
                           '--acme-tls-port', $tls01);
$conf =~ s/^(\s*)(acme_validation_timeout\s[^;]*;)/$1$2\n$1acme_validation_resolver 127.0.0.1:$dns;/m
    or BAIL_OUT('no acme location in scripts/nginx-conf.sh output');
$t->start_nginx($conf);

my $https = $t->https_port;
my $ocsp_url = 'http://127.0.0.1:' . $t->http_port . '/ocsp';
my $server = "https://127.0.0.1:$https/acme/directory";
my %cenv = (REQUESTS_CA_BUNDLE => "$pki/root.pem",
            LEGO_CA_CERTIFICATES => "$pki/root.pem");

# a child process we own, stopped by PKITest at the end
sub spawn {
    my ($name, @argv) = @_;
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        POSIX::setsid();
        open(STDOUT, '>>', "$dir/$name.log");
        open(STDERR, '>&', \*STDOUT);
        exec(@argv) or POSIX::_exit(127);
    }
    $t->{children}{$name} = $pid;
    return $pid;
}

sub unspawn {
    my ($name) = @_;
    my $pid = delete $t->{children}{$name} or return;
    kill 'TERM', $pid;
    waitpid($pid, 0);
}

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

# the fake DNS for dns-01 (A queries answer 127.0.0.1; TXT as set through
# the management API)
spawn('challtestsrv', 'pebble-challtestsrv', '-defaultIPv4', '127.0.0.1',
      '-defaultIPv6', '', '-dns01', "127.0.0.1:$dns", '-http01', '',
      '-https01', '', '-tlsalpn01', '', '-management', "127.0.0.1:$mgmt");
ok(wait_port($mgmt), 'pebble-challtestsrv is up');

# --- oracles -----------------------------------------------------------------

# checks a PEM certificate file: chain to our root, SANs, serverAuth
sub cert_ok {
    my ($name, $file, @names) = @_;
    ok(-s $file, "$name: certificate written") or return;
    my ($ok, $out) = $t->verify_chain($file);
    ok($ok, "$name: chains to the test root") or diag($out);
    my $text = $t->x509_text($file) // '';
    for my $n (@names) {
        like($text, qr/DNS:\Q$n\E(?:,|\s|$)/, "$name: SAN $n");
    }
    like($text, qr/TLS Web Server Authentication/, "$name: serverAuth");
}

sub ocsp_status {
    my ($file) = @_;
    my ($rc, $out, $err) = run_cmd(['openssl', 'ocsp', '-issuer',
        "$pki/issuing.pem", '-cert', $file, '-url', $ocsp_url,
        '-CAfile', "$pki/root.pem", '-no_nonce', '-timeout', '10'],
        timeout => 20);
    return $1 if $out =~ /:\s*(good|revoked|unknown)\b/;
    diag("openssl ocsp: $out $err");
    return 'error';
}

# the responder sees a revocation within ocsp_responder_revgen_check (1 s)
sub ocsp_revoked {
    my ($file) = @_;
    my $st;
    for (1 .. 15) {
        $st = ocsp_status($file);
        return $st if $st eq 'revoked';
        sleep 0.25;
    }
    return $st;
}

sub run_client {
    my ($name, $argv, %env) = @_;
    my $t1 = time;
    my ($rc, $out, $err) = run_cmd($argv, env => { %cenv, %env },
                                   timeout => 60);
    ok($rc == 0, sprintf("%s: exit 0 (%.1f s)", $name, time - $t1))
        or diag("$out\n$err\n" . (PKITest::slurp($t->error_log) // ''));
    return $rc == 0;
}

# --- certbot -------------------------------------------------------------------

my @cb = ('certbot', '--non-interactive', '--config-dir', "$dir/cb/config",
          '--work-dir', "$dir/cb/work", '--logs-dir', "$dir/cb/logs",
          '--server', $server);
my $live = "$dir/cb/config/live";

run_client('certbot standalone http-01',
    [@cb, 'certonly', '--standalone', '--agree-tos',
     '--register-unsafely-without-email', '--http-01-port', $http01,
     '--http-01-address', '127.0.0.1', '--key-type', 'ecdsa',
     '-d', 'cb1.example.com', '-d', 'www.cb1.example.com']);
cert_ok('certbot standalone', "$live/cb1.example.com/cert.pem",
        'cb1.example.com', 'www.cb1.example.com');

SKIP: {
    skip 'no python3 for the webroot server', 6 if !$PY;
    mkdir "$dir/webroot";
    spawn('webroot', $PY, '-m', 'http.server', '--bind', '127.0.0.1',
          '--directory', "$dir/webroot", $http01);
    ok(wait_port($http01), 'webroot server is up');
    run_client('certbot webroot',
        [@cb, 'certonly', '--webroot', '-w', "$dir/webroot",
         '--key-type', 'rsa', '--rsa-key-size', '2048',
         '-d', 'cb2.example.com']);
    unspawn('webroot');
    cert_ok('certbot webroot', "$live/cb2.example.com/cert.pem",
            'cb2.example.com');
    like(PKITest::slurp("$dir/webroot.log") // '',
         qr{GET /\.well-known/acme-challenge/\S+ HTTP/1\.1" 200},
         'the validator fetched the token from the webroot');
}

my $old = $t->x509_field("$live/cb1.example.com/cert.pem", 'serial');
run_client('certbot renew',
    [@cb, 'renew', '--force-renewal', '--no-random-sleep-on-renew',
     '--cert-name', 'cb1.example.com']);
my $new = $t->x509_field("$live/cb1.example.com/cert.pem", 'serial');
ok($new && $old && $new ne $old, "certbot renew: new serial ($old -> $new)");
cert_ok('certbot renewed', "$live/cb1.example.com/cert.pem",
        'cb1.example.com', 'www.cb1.example.com');

is(ocsp_status("$live/cb1.example.com/cert.pem"), 'good',
   'OCSP: certbot certificate good before revocation');
run_client('certbot revoke',
    [@cb, 'revoke', '--cert-name', 'cb1.example.com', '--reason',
     'keycompromise', '--no-delete-after-revoke']);
is(ocsp_revoked("$live/cb1.example.com/cert.pem"), 'revoked',
   'OCSP: certbot certificate revoked');

# OCSP revocation reason of a certificate file ('' when good or unknown)
sub ocsp_reason {
    my ($file) = @_;
    my ($rc, $out) = run_cmd(['openssl', 'ocsp', '-issuer',
        "$pki/issuing.pem", '-cert', $file, '-url', $ocsp_url,
        '-CAfile', "$pki/root.pem", '-no_nonce', '-timeout', '10'],
        timeout => 20);
    return $out =~ /Reason:\s*(\S+)/ ? $1 : '';
}

# the stored account (JSON) behind an account URL
sub account_of {
    my ($url) = @_;
    my ($id) = ($url // '') =~ m{/acct/([\w-]+)$} or return {};
    my ($key) = grep { /\{acme:\Q$id\E\}:acct$/ } $t->redis_keys('*:acct');
    return {} if !$key;
    my $text = $t->redis_raw('GET', $key);
    return eval { JSON::PP::decode_json($text) } || {};
}

# certbot's account URL (regr.json of its only account)
sub certbot_account_url {
    my ($cfg) = @_;
    my @f = glob("$cfg/accounts/*/*/*/*/regr.json");
    @f = glob("$cfg/accounts/*/*/*/regr.json") if !@f;
    return undef if @f != 1;
    my $regr = eval { JSON::PP::decode_json(PKITest::slurp($f[0])) } || {};
    return $regr->{uri};
}

# P-384, an account update, a revocation signed with the certificate's own
# key by a client that holds no account (RFC 8555 section 7.6), and the
# account's deactivation
run_client('certbot P-384',
    [@cb, 'certonly', '--standalone', '--http-01-port', $http01,
     '--http-01-address', '127.0.0.1', '--key-type', 'ecdsa',
     '--elliptic-curve', 'secp384r1', '-d', 'cb3.example.com']);
cert_ok('certbot P-384', "$live/cb3.example.com/cert.pem", 'cb3.example.com');
like($t->x509_text("$live/cb3.example.com/cert.pem") // '',
     qr/NIST CURVE: P-384|secp384r1/, 'certbot P-384: a P-384 key');

# --must-staple: the ACME template has must_staple on
run_client('certbot --must-staple',
    [@cb, 'certonly', '--standalone', '--http-01-port', $http01,
     '--http-01-address', '127.0.0.1', '--must-staple',
     '-d', 'cb4.example.com']);
cert_ok('certbot --must-staple', "$live/cb4.example.com/cert.pem",
        'cb4.example.com');
like($t->x509_text("$live/cb4.example.com/cert.pem") // '',
     qr/TLS Feature:\s*\n\s*status_request/,
     'certbot --must-staple: the certificate carries status_request');
unlike($t->x509_text("$live/cb3.example.com/cert.pem") // '',
       qr/TLS Feature/, 'without --must-staple: no TLS feature');

my $cb_acct = certbot_account_url("$dir/cb/config");
ok($cb_acct, 'certbot: its account URL') or diag(`ls -R $dir/cb/config/accounts`);
run_client('certbot update_account',
    [@cb, 'update_account', '-m', 'ops@example.com']);
is_deeply(account_of($cb_acct)->{contact}, ['mailto:ops@example.com'],
          'certbot update_account: the stored contact changed');

run_client('certbot revoke with the certificate key (no account)',
    ['certbot', '--non-interactive', '--config-dir', "$dir/cb0/config",
     '--work-dir', "$dir/cb0/work", '--logs-dir', "$dir/cb0/logs",
     '--server', $server, 'revoke',
     '--cert-path', "$live/cb3.example.com/cert.pem",
     '--key-path', "$live/cb3.example.com/privkey.pem",
     '--reason', 'superseded', '--no-delete-after-revoke']);
is(ocsp_revoked("$live/cb3.example.com/cert.pem"), 'revoked',
   'OCSP: revoked with the certificate key');
is(ocsp_reason("$live/cb3.example.com/cert.pem"), 'superseded',
   'OCSP: with the reason certbot gave');
ok(!glob("$dir/cb0/config/accounts/*"),
   'the revocation by certificate key made no account');

run_client('certbot unregister', [@cb, 'unregister']);
is(account_of($cb_acct)->{status}, 'deactivated',
   'certbot unregister: the account is deactivated');

# --- lego ----------------------------------------------------------------------

my @lego = ('lego', '--server', $server, '--email', 'lego@example.com',
            '--accept-tos', '--path', "$dir/lego", '--key-type', 'ec256');
my $lc = "$dir/lego/certificates";

run_client('lego http-01',
    [@lego, '--domains', 'lg1.example.com', '--http', '--http.port',
     "127.0.0.1:$http01", 'run']);
cert_ok('lego http-01', "$lc/lg1.example.com.crt", 'lg1.example.com');

run_client('lego tls-alpn-01',
    [@lego, '--domains', 'lg2.example.com', '--tls', '--tls.port',
     "127.0.0.1:$tls01", 'run']);
cert_ok('lego tls-alpn-01', "$lc/lg2.example.com.crt", 'lg2.example.com');

# lego's exec DNS provider: "present|cleanup FQDN VALUE"
my $hook = "$dir/dns-hook.sh";
PKITest::spew($hook, <<"SH");
#!/bin/sh
case "\$1" in
present) exec curl -sS --max-time 5 -d "{\\"host\\":\\"\$2\\",\\"value\\":\\"\$3\\"}" http://127.0.0.1:$mgmt/set-txt ;;
cleanup) exec curl -sS --max-time 5 -d "{\\"host\\":\\"\$2\\"}" http://127.0.0.1:$mgmt/clear-txt ;;
esac
SH
chmod 0755, $hook;
run_client('lego dns-01 (name and wildcard)',
    [@lego, '--domains', 'lg3.example.com', '--domains', '*.lg3.example.com',
     '--dns', 'exec', '--dns.disable-cp', '--dns.resolvers',
     "127.0.0.1:$dns", 'run'],
    EXEC_PATH => $hook, EXEC_POLLING_INTERVAL => 1,
    EXEC_PROPAGATION_TIMEOUT => 10, EXEC_SEQUENCE_INTERVAL => 1);
cert_ok('lego dns-01', "$lc/lg3.example.com.crt", 'lg3.example.com',
        '*.lg3.example.com');

is(ocsp_status("$lc/lg1.example.com.crt"), 'good',
   'OCSP: lego certificate good before revocation');
run_client('lego revoke',
    [@lego, '--domains', 'lg1.example.com', 'revoke', '--keep',
     '--reason', '4']);
is(ocsp_revoked("$lc/lg1.example.com.crt"), 'revoked',
   'OCSP: lego certificate revoked');

# CAA is read when a name validates: with CAA checks on, an authorization
# validated over 8 hours ago is not reused, so a CAA record set changed
# since then rules the next order.  lg1's authorization is made 9 hours
# old, then its CAA names another CA.
{
    my $aged = 0;
    for my $k ($t->redis_keys('*:authz:*')) {
        my $text = $t->redis_raw('GET', $k);
        chomp $text;
        my $az = eval { JSON::PP::decode_json($text) } or next;
        next if ($az->{value} // '') ne 'lg1.example.com'
                || ($az->{status} // '') ne 'valid';
        $az->{validated} -= 9 * 3600;
        $t->redis_raw('SET', $k, JSON::PP::encode_json($az), 'KEEPTTL');
        $aged++;
    }
    ok($aged >= 1, "lg1's valid authorization made 9 h old ($aged)");
    add_caa('lg1.example.com', ['issue', 'ca.example.net']);
    my ($rc, $out, $err) = run_cmd(
        [@lego, '--domains', 'lg1.example.com', '--http', '--http.port',
         "127.0.0.1:$http01", 'run'],
        env => \%cenv, timeout => 60);
    isnt($rc, 0, 'an aged authorization is validated again: the new CAA '
         . 'refuses');
    like("$out$err", qr/caa/i, '... and lego says CAA') or diag("$out$err");
}

# CAA (RFC 8659): the lab's resolver is pebble-challtestsrv, so the
# validator asks it; the demo names itself nginx-pki.test
sub add_caa {
    my ($host, @pol) = @_;
    my $body = JSON::PP::encode_json({ host => "$host.",
        policies => [ map { { tag => $_->[0], value => $_->[1] } } @pol ] });
    my ($rc, $out, $err) = run_cmd(['curl', '-sS', '--max-time', '5', '-d',
                                    $body, "http://127.0.0.1:$mgmt/add-caa"]);
    ok($rc == 0, "challtestsrv: CAA for $host") or diag("$out $err");
}

add_caa('caa-other.example.com', ['issue', 'ca.example.net']);
{
    my ($rc, $out, $err) = run_cmd(
        [@lego, '--domains', 'caa-other.example.com', '--http',
         '--http.port', "127.0.0.1:$http01", 'run'],
        env => \%cenv, timeout => 60);
    isnt($rc, 0, 'lego: CAA naming another CA refuses issuance');
    like("$out$err", qr/caa.*do not allow this CA \(nginx-pki\.test\)/s,
         'lego: told it is CAA') or diag("$out$err");
}
ok(!-e "$lc/caa-other.example.com.crt", 'lego: no certificate under CAA');

add_caa('caa-ours.example.com',
        ['issue', 'nginx-pki.test; validationmethods=http-01'],
        ['iodef', 'mailto:sec@example.com']);
run_client('lego, CAA naming this CA',
    [@lego, '--domains', 'caa-ours.example.com', '--http', '--http.port',
     "127.0.0.1:$http01", 'run']);
cert_ok('lego under CAA', "$lc/caa-ours.example.com.crt",
        'caa-ours.example.com');
like(PKITest::slurp($t->error_log) // '', qr/caa-other\.example\.com/,
     'the CAA refusal is in the error log');

# lego renew (a new key and serial)
my $lg_old = $t->x509_field("$lc/lg2.example.com.crt", 'serial');
run_client('lego renew',
    [@lego, '--domains', 'lg2.example.com', '--tls', '--tls.port',
     "127.0.0.1:$tls01", 'renew', '--days', '3650', '--no-random-sleep']);
my $lg_new = $t->x509_field("$lc/lg2.example.com.crt", 'serial');
ok($lg_new && $lg_old && $lg_new ne $lg_old,
   "lego renew: new serial ($lg_old -> $lg_new)");
cert_ok('lego renewed', "$lc/lg2.example.com.crt", 'lg2.example.com');

# --- alternate chains (RFC 8555 7.4.2) ----------------------------------------
# the issuing CA has `alternate_chain alt-chain.pem` (scripts/nginx-conf.sh):
# the issuing CA cross-signed by a second root.  Both clients choose a
# chain by the issuer CN of its topmost certificate (--preferred-chain);
# without one they keep the default chain to the test root.

my $altcn = 'nginx-pki Alt Root CA';
my $ntop = 0;

# the last certificate of a PEM bundle, in a file of its own
sub top_cert {
    my ($file) = @_;
    my @pem = (PKITest::slurp($file) // '')
        =~ /(-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----)/sg;
    return undef if !@pem;
    my $top = "$dir/top-" . ++$ntop . '.pem';
    PKITest::spew($top, "$pem[-1]\n");
    return $top;
}

# openssl verify of a leaf with the chain file as untrusted certificates,
# trusting only $anchor
sub verify_with {
    my ($anchor, $chain, $cert) = @_;
    my ($rc, $out, $err) = run_cmd(['openssl', 'verify', '-CAfile', $anchor,
                                    '-untrusted', $chain, $cert]);
    return ($rc == 0 && $out =~ /: OK/, "$out$err");
}

# chain: the topmost certificate is the cross certificate, issued by the
# alternate root, and cert verifies with the alternate root alone
sub alt_chain_ok {
    my ($name, $chain, $cert) = @_;
    my $top = top_cert($chain);
    ok($top, "$name: a chain") or return;
    like($t->x509_field($top, 'issuer'), qr/^CN=\Q$altcn\E,/,
         "$name: its top certificate is issued by $altcn");
    is($t->x509_field($top, 'fingerprint'),
       $t->x509_field("$pki/alt-chain.pem", 'fingerprint'),
       "$name: ... and is the cross certificate");
    my ($ok, $out) = verify_with("$pki/altroot.pem", $chain, $cert);
    ok($ok, "$name: openssl verify -CAfile altroot.pem -untrusted chain")
        or diag($out);
}

my @cba = map { s{/cb/}{/cba/}r } @cb;
my $alive = "$dir/cba/config/live";

run_client('certbot, default chain',
    [@cba, 'certonly', '--standalone', '--agree-tos',
     '--register-unsafely-without-email', '--http-01-port', $http01,
     '--http-01-address', '127.0.0.1', '-d', 'cba1.example.com']);
cert_ok('certbot default chain', "$alive/cba1.example.com/cert.pem",
        'cba1.example.com');
{
    my $top = top_cert("$alive/cba1.example.com/chain.pem");
    like($top ? $t->x509_field($top, 'issuer') : '',
         qr/^CN=nginx-pki Root CA,/,
         'certbot default chain: the top certificate is issued by the root');
    my ($ok, $out) = verify_with("$pki/root.pem",
        "$alive/cba1.example.com/chain.pem", "$alive/cba1.example.com/cert.pem");
    ok($ok, 'certbot default chain: verifies with the test root') or diag($out);
    ($ok) = verify_with("$pki/altroot.pem",
        "$alive/cba1.example.com/chain.pem", "$alive/cba1.example.com/cert.pem");
    ok(!$ok, 'certbot default chain: not with the alternate root');
}

run_client('certbot --preferred-chain',
    [@cba, 'certonly', '--standalone', '--http-01-port', $http01,
     '--http-01-address', '127.0.0.1', '--preferred-chain', $altcn,
     '-d', 'cba2.example.com']);
cert_ok('certbot --preferred-chain', "$alive/cba2.example.com/cert.pem",
        'cba2.example.com');
alt_chain_ok('certbot --preferred-chain', "$alive/cba2.example.com/chain.pem",
             "$alive/cba2.example.com/cert.pem");

run_client('lego --preferred-chain',
    [@lego, '--domains', 'lga.example.com', '--http', '--http.port',
     "127.0.0.1:$http01", 'run', '--preferred-chain', $altcn]);
cert_ok('lego --preferred-chain', "$lc/lga.example.com.crt",
        'lga.example.com');
alt_chain_ok('lego --preferred-chain', "$lc/lga.example.com.issuer.crt",
             "$lc/lga.example.com.crt");

# --- External Account Binding with both clients -------------------------------
# the same server with acme_eab_required on: keys come from the admin API

$t->stop_nginx;
$conf = $t->render_conf('--acme-http-port', $http01, '--acme-tls-port',
                        $tls01, '--acme-eab', 'on');
$t->start_nginx($conf);
$https = $t->https_port;
$server = "https://127.0.0.1:$https/acme/directory";
s{^https://127\.0\.0\.1:\d+/acme/directory$}{$server} for @cb, @lego;

sub eab_key {
    my $r = $t->curl('POST', "https://127.0.0.1:$https/pki/admin/acme/eab",
                     user => 'admin:admin');
    is($r->{code}, 201, 'admin API: an EAB key') or diag($r->{body});
    my $k = eval { JSON::PP::decode_json($r->{body}) } || {};
    return ($k->{kid} // '', $k->{hmac_key} // '');
}

my @cbe = map { s{/cb/}{/cbe/}r } @cb;
my ($kid, $hmac) = eab_key();
{
    my ($rc, $out, $err) = run_cmd(
        [@cbe, 'register', '--agree-tos', '--register-unsafely-without-email'],
        env => \%cenv, timeout => 60);
    isnt($rc, 0, 'certbot without EAB: refused');
    like("$out$err", qr/externalAccountRequired|external account/i,
         'certbot without EAB: told why');
}
run_client('certbot with EAB',
    [@cbe, 'certonly', '--standalone', '--agree-tos',
     '--register-unsafely-without-email', '--eab-kid', $kid,
     '--eab-hmac-key', $hmac, '--http-01-port', $http01,
     '--http-01-address', '127.0.0.1', '-d', 'cbe.example.com']);
cert_ok('certbot with EAB', "$dir/cbe/config/live/cbe.example.com/cert.pem",
        'cbe.example.com');
{
    # a used key binds no second account
    my ($rc, $out, $err) = run_cmd(
        ['certbot', '--non-interactive', '--config-dir', "$dir/cbe2/config",
         '--work-dir', "$dir/cbe2/work", '--logs-dir', "$dir/cbe2/logs",
         '--server', $server, 'register', '--agree-tos',
         '--register-unsafely-without-email', '--eab-kid', $kid,
         '--eab-hmac-key', $hmac],
        env => \%cenv, timeout => 60);
    isnt($rc, 0, 'certbot: an EAB key already bound is refused');
    like("$out$err", qr/used externalAccountBinding key/,
         'certbot: told the key is used');
}

my ($lkid, $lhmac) = eab_key();
my @lego_e = map { s{/lego$}{/lego-eab}r } @lego;
run_client('lego with EAB',
    [@lego_e, '--eab', '--kid', $lkid, '--hmac', $lhmac,
     '--domains', 'lge.example.com', '--http', '--http.port',
     "127.0.0.1:$http01", 'run']);
cert_ok('lego with EAB', "$dir/lego-eab/certificates/lge.example.com.crt",
        'lge.example.com');

unspawn('challtestsrv');
$t->stop_nginx;
my $log = PKITest::slurp($t->error_log) // '';
unlike($log, qr/\[(?:alert|crit|emerg)\]/, 'no alert/crit in error.log');
diag(sprintf('acme_clients.t: %.1f s', time - $T0));

done_testing();
