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
#   uacme:   (the C client of routers; ualpn for tls-alpn-01) http-01,
#            tls-alpn-01, an IP identifier, --must-staple, keyChange,
#            update, revoke by account and by certificate key, a revoked
#            certificate reissued after uacme asked our OCSP responder,
#            deactivate, External Account Binding
#   dehydrated: issue and revoke;  acme-tiny: issue with an RSA account
#
# Each client trusts only the test root (REQUESTS_CA_BUNDLE,
# LEGO_CA_CERTIFICATES).  The oracles are the openssl CLI (chain, names)
# and our OCSP responder, asked with `openssl ocsp`, for revocations.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP ();
use Time::HiRes qw(time);
use PKITest;

my @missing = grep { !which($_) } qw(certbot lego pebble-challtestsrv uacme ualpn
                                         dehydrated acme-tiny unshare);
plan(skip_all => "ACME clients not installed: @missing "
               . "(apt-get install certbot lego pebble uacme dehydrated acme-tiny)") if @missing;
plan(skip_all => "ngx_http_acme_module not built")
    if !-e "$PKITest::BUILD/ngx_http_acme_module.so";

my $PY = -x '/usr/bin/python3' ? '/usr/bin/python3' : which('python3');
my $T0 = time;

my $t = PKITest->new;
$t->start_redis;

my $dir = $t->dir;
my $pki = $t->pki;
my ($http01, $tls01, $dns, $mgmt) = $t->acme_lab;

my $conf = $t->acme_lab_conf($dns, '--acme-http-port', $http01,
                             '--acme-tls-port', $tls01);
$t->start_nginx($conf);

my $https = $t->https_port;
my $server = "https://127.0.0.1:$https/acme/directory";
my %cenv = (REQUESTS_CA_BUNDLE => "$pki/root.pem",
            LEGO_CA_CERTIFICATES => "$pki/root.pem");

# the fake DNS for dns-01 (A queries answer 127.0.0.1; TXT as set through
# the management API)
ok($t->start_challtestsrv($dns, $mgmt), 'pebble-challtestsrv is up');

# --- oracles -----------------------------------------------------------------

# a client's check "NAME: exit 0", with the clients' environment
sub run_client {
    my ($name, $argv, %env) = @_;
    return $t->run_ok($name, $argv, env => { %cenv, %env });
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
$t->cert_ok('certbot standalone', "$live/cb1.example.com/cert.pem",
            'cb1.example.com', 'www.cb1.example.com');

SKIP: {
    skip 'no python3 for the webroot server', 6 if !$PY;
    mkdir "$dir/webroot";
    $t->spawn('webroot', $PY, '-m', 'http.server', '--bind', '127.0.0.1',
              '--directory', "$dir/webroot", $http01);
    ok(wait_port($http01), 'webroot server is up');
    run_client('certbot webroot',
        [@cb, 'certonly', '--webroot', '-w', "$dir/webroot",
         '--key-type', 'rsa', '--rsa-key-size', '2048',
         '-d', 'cb2.example.com']);
    $t->unspawn('webroot');
    $t->cert_ok('certbot webroot', "$live/cb2.example.com/cert.pem",
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
$t->cert_ok('certbot renewed', "$live/cb1.example.com/cert.pem",
            'cb1.example.com', 'www.cb1.example.com');

is($t->ocsp_status("$live/cb1.example.com/cert.pem"), 'good',
   'OCSP: certbot certificate good before revocation');
run_client('certbot revoke',
    [@cb, 'revoke', '--cert-name', 'cb1.example.com', '--reason',
     'keycompromise', '--no-delete-after-revoke']);
is($t->ocsp_revoked("$live/cb1.example.com/cert.pem"), 'revoked',
   'OCSP: certbot certificate revoked');

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
$t->cert_ok('certbot P-384', "$live/cb3.example.com/cert.pem",
            'cb3.example.com');
like($t->x509_text("$live/cb3.example.com/cert.pem") // '',
     qr/NIST CURVE: P-384|secp384r1/, 'certbot P-384: a P-384 key');

# --must-staple: the ACME template has must_staple on
run_client('certbot --must-staple',
    [@cb, 'certonly', '--standalone', '--http-01-port', $http01,
     '--http-01-address', '127.0.0.1', '--must-staple',
     '-d', 'cb4.example.com']);
$t->cert_ok('certbot --must-staple', "$live/cb4.example.com/cert.pem",
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
is_deeply($t->acme_account($cb_acct)->{contact}, ['mailto:ops@example.com'],
          'certbot update_account: the stored contact changed');

run_client('certbot revoke with the certificate key (no account)',
    ['certbot', '--non-interactive', '--config-dir', "$dir/cb0/config",
     '--work-dir', "$dir/cb0/work", '--logs-dir', "$dir/cb0/logs",
     '--server', $server, 'revoke',
     '--cert-path', "$live/cb3.example.com/cert.pem",
     '--key-path', "$live/cb3.example.com/privkey.pem",
     '--reason', 'superseded', '--no-delete-after-revoke']);
is($t->ocsp_revoked("$live/cb3.example.com/cert.pem"), 'revoked',
   'OCSP: revoked with the certificate key');
is($t->ocsp_reason("$live/cb3.example.com/cert.pem"), 'superseded',
   'OCSP: with the reason certbot gave');
ok(!glob("$dir/cb0/config/accounts/*"),
   'the revocation by certificate key made no account');

run_client('certbot unregister', [@cb, 'unregister']);
is($t->acme_account($cb_acct)->{status}, 'deactivated',
   'certbot unregister: the account is deactivated');

# --- lego ----------------------------------------------------------------------

my @lego = ('lego', '--server', $server, '--email', 'lego@example.com',
            '--accept-tos', '--path', "$dir/lego", '--key-type', 'ec256');
my $lc = "$dir/lego/certificates";

run_client('lego http-01',
    [@lego, '--domains', 'lg1.example.com', '--http', '--http.port',
     "127.0.0.1:$http01", 'run']);
$t->cert_ok('lego http-01', "$lc/lg1.example.com.crt", 'lg1.example.com');

run_client('lego tls-alpn-01',
    [@lego, '--domains', 'lg2.example.com', '--tls', '--tls.port',
     "127.0.0.1:$tls01", 'run']);
$t->cert_ok('lego tls-alpn-01', "$lc/lg2.example.com.crt", 'lg2.example.com');

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
$t->cert_ok('lego dns-01', "$lc/lg3.example.com.crt", 'lg3.example.com',
            '*.lg3.example.com');

is($t->ocsp_status("$lc/lg1.example.com.crt"), 'good',
   'OCSP: lego certificate good before revocation');
run_client('lego revoke',
    [@lego, '--domains', 'lg1.example.com', 'revoke', '--keep',
     '--reason', '4']);
is($t->ocsp_revoked("$lc/lg1.example.com.crt"), 'revoked',
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
    my ($ok, $why) = $t->add_caa($host, @pol);
    ok($ok, "challtestsrv: CAA for $host") or diag($why);
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
$t->cert_ok('lego under CAA', "$lc/caa-ours.example.com.crt",
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
$t->cert_ok('lego renewed', "$lc/lg2.example.com.crt", 'lg2.example.com');

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
    my @pem = PKITest::pem_certs($file);
    return undef if !@pem;
    my $top = "$dir/top-" . ++$ntop . '.pem';
    PKITest::spew($top, $pem[-1]);
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
$t->cert_ok('certbot default chain', "$alive/cba1.example.com/cert.pem",
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
$t->cert_ok('certbot --preferred-chain', "$alive/cba2.example.com/cert.pem",
            'cba2.example.com');
alt_chain_ok('certbot --preferred-chain', "$alive/cba2.example.com/chain.pem",
             "$alive/cba2.example.com/cert.pem");

run_client('lego --preferred-chain',
    [@lego, '--domains', 'lga.example.com', '--http', '--http.port',
     "127.0.0.1:$http01", 'run', '--preferred-chain', $altcn]);
$t->cert_ok('lego --preferred-chain', "$lc/lga.example.com.crt",
            'lga.example.com');
alt_chain_ok('lego --preferred-chain', "$lc/lga.example.com.issuer.crt",
             "$lc/lga.example.com.crt");

# --- the small clients: uacme (+ ualpn), dehydrated, acme-tiny ----------------
# The clients of routers and devices: uacme is plain C on libcurl and GnuTLS
# (OpenWrt ships it), ualpn its tls-alpn-01 responder, dehydrated a shell
# script on curl and openssl, acme-tiny a 200-line Python client with an
# RSA account key (RS256).  uacme also asks the OCSP responder named in a
# certificate before it renews: a revoked certificate is reissued at once.
#
# uacme has no CA option: libcurl-gnutls reads the system bundle only, so
# uacme runs in a mount namespace of its own where the test root is bind-
# mounted over /etc/ssl/certs/ca-certificates.crt (nothing outside changes).

# uacme's exit status and output (it prints what it does with -v)
sub uacme {
    my ($cdir, @args) = @_;
    my ($rc, $out, $err) = run_cmd(
        ['unshare', '-m', 'sh', '-c',
         'mount --bind "$0" /etc/ssl/certs/ca-certificates.crt && exec "$@"',
         "$pki/root.pem", 'uacme', '-v', '-a', $server, '-c', $cdir,
         '-h', "$dir/uacme-hook.sh", '-t', 'EC', @args],
        env => { UACME_CHALLENGE => $ENV{UACME_CHALLENGE} // 'http-01' },
        timeout => 60);
    return ($rc, "$out$err");
}

sub uacme_ok {
    my ($name, $cdir, @args) = @_;
    my $t0 = time;
    my ($rc, $out) = uacme($cdir, @args);
    $t->exit_ok($name, $rc, $t0, $out);
    return $out;
}

mkdir "$dir/webroot";
$t->spawn('webroot2', $PY, '-m', 'http.server', '--bind', '127.0.0.1',
          '--directory', "$dir/webroot", $http01);
ok(wait_port($http01), 'webroot server is up (small clients)');
my $ualpn_sock = "$dir/ualpn.sock";
# ualpn proxies what is not a tls-alpn-01 handshake to port 9 (discard)
$t->spawn('ualpn', 'ualpn', '-b', "127.0.0.1\@$tls01", '-c', '127.0.0.1@9',
          '-s', $ualpn_sock, '-p', "$dir/ualpn.pid", '-P', '0', '-n', '1',
          '-v');
ok(wait_port($tls01), 'ualpn is up');

# uacme's hook: METHOD TYPE IDENT TOKEN AUTH; it accepts the challenge type
# of $UACME_CHALLENGE and declines the others
my $wk = "$dir/webroot/.well-known/acme-challenge";
PKITest::spew("$dir/uacme-hook.sh", <<"SH");
#!/bin/sh
[ "\$2" = "\$UACME_CHALLENGE" ] || exit 1
case "\$1:\$2" in
begin:http-01) mkdir -p $wk && printf '%s' "\$5" > "$wk/\$4" ;;
done:http-01|failed:http-01) rm -f "$wk/\$4" ;;
begin:tls-alpn-01) echo "auth \$3 \$5" | ualpn -s $ualpn_sock | grep -q '^OK' ;;
done:tls-alpn-01|failed:tls-alpn-01) echo "unauth \$3" | ualpn -s $ualpn_sock ;;
*) exit 1 ;;
esac
SH
chmod 0755, "$dir/uacme-hook.sh";

my $ud = "$dir/uacme";
my $un_ok = -e '/etc/ssl/certs/ca-certificates.crt'
    && (run_cmd(['unshare', '-m', 'true']))[0] == 0;
SKIP: {
    skip 'uacme: no mount namespace here (unshare -m) or no system CA '
         . 'bundle to bind-mount over', 40 if !$un_ok;

    uacme_ok('uacme new', $ud, '-y', 'new', 'uacme@example.com');
    is($t->acme_account_with_contact('uacme@example.com')->{status} // '',
       'valid', 'uacme new: the account is stored with its contact');

    uacme_ok('uacme http-01', $ud, 'issue', 'u1.example.com',
             'www.u1.example.com');
    $t->cert_ok('uacme http-01', "$ud/u1.example.com/cert.pem",
                'u1.example.com', 'www.u1.example.com');
    like(PKITest::slurp("$dir/webroot2.log") // '',
         qr{GET /\.well-known/acme-challenge/\S+ HTTP/1\.1" 200},
         'uacme http-01: the validator fetched the token');

    {
        local $ENV{UACME_CHALLENGE} = 'tls-alpn-01';
        uacme_ok('uacme tls-alpn-01 (ualpn)', $ud, 'issue', 'u2.example.com');
    }
    $t->cert_ok('uacme tls-alpn-01', "$ud/u2.example.com/cert.pem",
                'u2.example.com');
    like(PKITest::slurp("$dir/ualpn.log") // '',
         qr/acme-tls\/1 handshake .* for u2\.example\.com completed/,
         'ualpn answered our tls-alpn-01 handshake');

    # RFC 8738: an IP address identifier, validated over http-01
    uacme_ok('uacme IP identifier', $ud, 'issue', '127.0.0.1');
    ok($t->verify_chain("$ud/127.0.0.1/cert.pem"),
       'uacme IP identifier: chains to the test root');
    like($t->x509_text("$ud/127.0.0.1/cert.pem") // '',
         qr/IP Address:127\.0\.0\.1/, 'uacme IP identifier: an iPAddress SAN');

    uacme_ok('uacme --must-staple', $ud, '-m', 'issue', 'u3.example.com');
    like($t->x509_text("$ud/u3.example.com/cert.pem") // '',
         qr/TLS Feature:\s*\n\s*status_request/,
         'uacme --must-staple: status_request');

    # a current certificate is kept, after uacme asked our OCSP responder
    my ($rc, $out) = uacme($ud, 'issue', 'u1.example.com',
                           'www.u1.example.com');
    is($rc, 1, 'uacme: a current certificate is not reissued (exit 1)');
    like($out, qr/OCSP certificate status is GOOD/,
         'uacme: our OCSP responder said good') or diag($out);

    # revoked by the account (reason superseded); uacme moves the file
    # aside, it is put back to see what uacme does with a revoked one
    my $u1 = "$ud/u1.example.com/cert.pem";
    my $u1_serial = $t->x509_field($u1, 'serial');
    PKITest::spew("$dir/u1-keep.pem", PKITest::slurp($u1));
    uacme_ok('uacme revoke (account)', $ud, '-r', '4', 'revoke', $u1);
    is($t->ocsp_revoked("$dir/u1-keep.pem"), 'revoked',
       'OCSP: uacme certificate revoked');
    is($t->ocsp_reason("$dir/u1-keep.pem"), 'superseded',
       'OCSP: with the reason uacme gave');
    PKITest::spew($u1, PKITest::slurp("$dir/u1-keep.pem"));
    $out = uacme_ok('uacme issue of a revoked certificate', $ud, 'issue',
                    'u1.example.com', 'www.u1.example.com');
    like($out, qr/OCSP certificate status is REVOKED/,
         'uacme: our OCSP responder said revoked');
    my $u1_new = $t->x509_field($u1, 'serial');
    ok($u1_new && $u1_new ne $u1_serial,
       "uacme: reissued at once ($u1_serial -> " . ($u1_new // '') . ')');

    # keyChange (RFC 8555 7.3.5) with a real client: the new key works, the
    # old one no longer finds the account
    uacme_ok('uacme newkey (keyChange)', $ud, 'newkey');
    my ($oldkey) = glob("$ud/private/key-*.pem");
    ok($oldkey, 'uacme kept its old key');
    uacme_ok('uacme issue with the new key', $ud, '-f', 'issue',
             'u3.example.com');
    mkdir "$dir/uacme-old";
    mkdir "$dir/uacme-old/private";
    PKITest::spew("$dir/uacme-old/private/key.pem", PKITest::slurp($oldkey));
    ($rc, $out) = uacme("$dir/uacme-old", '-n', 'update',
                        'old@example.com');
    isnt($rc, 0, 'uacme: the old key no longer reaches the account');
    like($out, qr/accountDoesNotExist|does not exist|no account/i,
         '... the server said why') or diag($out);

    uacme_ok('uacme update', $ud, 'update', 'ops-u@example.com');
    is($t->acme_account_with_contact('ops-u@example.com')->{status} // '',
       'valid', 'uacme update: the stored contact changed');

    # a revocation signed with the certificate's key, from no account
    uacme_ok('uacme revoke (certificate key)', "$dir/uacme-none", 'revoke',
             "$ud/u2.example.com/cert.pem",
             "$ud/private/u2.example.com/key.pem");
    my ($u2rev) = glob("$ud/u2.example.com/revoked-*.pem");
    is($u2rev ? $t->ocsp_revoked($u2rev) : 'no file', 'revoked',
       'OCSP: revoked with the certificate key');

    uacme_ok('uacme deactivate', $ud, '-y', 'deactivate');
    is($t->acme_account_with_contact('ops-u@example.com')->{status} // '',
       'deactivated', 'uacme deactivate: the account is deactivated');
    ($rc, $out) = uacme($ud, '-f', 'issue', 'u4.example.com');
    isnt($rc, 0, 'uacme: a deactivated account issues nothing');
}

# dehydrated: curl (CURL_CA_BUNDLE) and openssl
my $dh = "$dir/dehydrated";
mkdir $dh;
PKITest::spew("$dh/config", <<"CFG");
CA="$server"
CHALLENGETYPE="http-01"
WELLKNOWN="$wk"
BASEDIR="$dh"
KEYSIZE=2048
KEY_ALGO=prime256v1
CONTACT_EMAIL="dh\@example.com"
CFG
mkdir "$dir/webroot/.well-known";
mkdir $wk;
my @dh = ('dehydrated', '--config', "$dh/config");
run_client('dehydrated register', [@dh, '--register', '--accept-terms'],
           CURL_CA_BUNDLE => "$pki/root.pem");
run_client('dehydrated issue',
    [@dh, '--cron', '-d', 'dh1.example.com', '-d', 'www.dh1.example.com'],
    CURL_CA_BUNDLE => "$pki/root.pem");
$t->cert_ok('dehydrated', "$dh/certs/dh1.example.com/cert.pem",
            'dh1.example.com', 'www.dh1.example.com');
PKITest::spew("$dir/dh-keep.pem",
              PKITest::slurp("$dh/certs/dh1.example.com/cert.pem"));
run_client('dehydrated revoke',
    [@dh, '--revoke', "$dh/certs/dh1.example.com/cert.pem"],
    CURL_CA_BUNDLE => "$pki/root.pem");
ok(glob("$dh/certs/dh1.example.com/cert-*.pem-revoked"),
   'dehydrated: the revoked certificate renamed');
is($t->ocsp_revoked("$dir/dh-keep.pem"), 'revoked',
   'OCSP: dehydrated certificate revoked');

# acme-tiny: an RSA account key (RS256) and a CSR of ours
run_cmd(['openssl', 'genrsa', '-out', "$dir/tiny-acct.key", '2048']);
run_cmd(['openssl', 'req', '-new', '-newkey', 'ec', '-pkeyopt',
         'ec_paramgen_curve:P-256', '-nodes', '-keyout', "$dir/tiny.key",
         '-subj', '/CN=tiny.example.com', '-addext',
         'subjectAltName=DNS:tiny.example.com', '-out', "$dir/tiny.csr"]);
{
    my ($rc, $out, $err) = run_cmd(
        ['acme-tiny', '--account-key', "$dir/tiny-acct.key", '--csr',
         "$dir/tiny.csr", '--acme-dir', $wk, '--directory-url', $server,
         '--disable-check', '--contact', 'mailto:tiny@example.com'],
        env => { SSL_CERT_FILE => "$pki/root.pem" }, timeout => 60);
    ok($rc == 0, 'acme-tiny (RSA account key, RS256): exit 0')
        or diag("$err\n" . (PKITest::slurp($t->error_log) // ''));
    PKITest::spew("$dir/tiny.pem", $out);
}
$t->cert_ok('acme-tiny', "$dir/tiny.pem", 'tiny.example.com');
$t->unspawn('webroot2');
$t->unspawn('ualpn');

# --- External Account Binding with both clients -------------------------------
# the same server with acme_eab_required on: keys come from the admin API

$t->stop_nginx;
$conf = $t->render_conf('--acme-http-port', $http01, '--acme-tls-port',
                        $tls01, '--acme-eab', 'on');
$t->start_nginx($conf);
$https = $t->https_port;
$server = "https://127.0.0.1:$https/acme/directory";
s{^https://127\.0\.0\.1:\d+/acme/directory$}{$server} for @cb, @lego;

# EAB keys are base64url and one in 64 starts with "-": given as a separate
# argument, certbot's (and lego's) option parser takes it for an option, so
# every key goes in the --opt=VALUE form
my @cbe = map { s{/cb/}{/cbe/}r } @cb;
my ($kid, $hmac) = $t->eab_key();
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
     '--register-unsafely-without-email', "--eab-kid=$kid",
     "--eab-hmac-key=$hmac", '--http-01-port', $http01,
     '--http-01-address', '127.0.0.1', '-d', 'cbe.example.com']);
$t->cert_ok('certbot with EAB', "$dir/cbe/config/live/cbe.example.com/cert.pem",
            'cbe.example.com');
{
    # a used key binds no second account
    my ($rc, $out, $err) = run_cmd(
        ['certbot', '--non-interactive', '--config-dir', "$dir/cbe2/config",
         '--work-dir', "$dir/cbe2/work", '--logs-dir', "$dir/cbe2/logs",
         '--server', $server, 'register', '--agree-tos',
         '--register-unsafely-without-email', "--eab-kid=$kid",
         "--eab-hmac-key=$hmac"],
        env => \%cenv, timeout => 60);
    isnt($rc, 0, 'certbot: an EAB key already bound is refused');
    like("$out$err",
         qr/externalAccountBinding refused: unknown, disabled or used key/,
         'certbot: told the key is used');
}

my ($lkid, $lhmac) = $t->eab_key();
my @lego_e = map { s{/lego$}{/lego-eab}r } @lego;
run_client('lego with EAB',
    [@lego_e, '--eab', "--kid=$lkid", "--hmac=$lhmac",
     '--domains', 'lge.example.com', '--http', '--http.port',
     "127.0.0.1:$http01", 'run']);
$t->cert_ok('lego with EAB', "$dir/lego-eab/certificates/lge.example.com.crt",
            'lge.example.com');

SKIP: {
    skip 'uacme: no mount namespace here', 4 if !$un_ok;
    my ($rc, $out) = uacme("$dir/uacme-eab", '-y', 'new');
    isnt($rc, 0, 'uacme without EAB: refused');
    like($out, qr/externalAccountRequired|requires external credentials/,
         'uacme without EAB: told why (the directory says so)')
        or diag($out);
    my ($ukid, $uhmac) = $t->eab_key();
    uacme_ok('uacme with EAB', "$dir/uacme-eab", '-y', '-e', "$ukid:$uhmac",
             'new');
}

$t->unspawn('challtestsrv');
$t->stop_nginx;
my $log = PKITest::slurp($t->error_log) // '';
unlike($log, qr/\[(?:alert|crit|emerg)\]/, 'no alert/crit in error.log');
diag(sprintf('acme_clients.t: %.1f s', time - $T0));

done_testing();
