#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# The Go ACME clients against our ACME server, in the lab setup of
# t/acme_clients.t (every name is 127.0.0.1, http-01 and tls-alpn-01 on
# free ports, dns-01 through pebble-challtestsrv as validation resolver).
#
#   xacme (t/go/xacme): golang.org/x/crypto/acme, the client of
#       cert-manager: Register (existing account looked up with GetReg),
#       UpdateReg, AuthorizeOrder / GetAuthorization / Accept /
#       WaitAuthorization / GetChallenge / WaitOrder / CreateOrderCert /
#       GetOrder, ListCertAlternates + FetchCert, http-01, tls-alpn-01
#       (TLSALPN01ChallengeCert), dns-01 with a wildcard, RevokeCert by the
#       account with a reason, AccountKeyRollover then an issuance with the
#       new key, DeactivateReg, EAB
#   acmez (t/go/acmez): github.com/mholt/acmez, the client of Caddy:
#       NewAccount / GetAccount, ObtainCertificate with its Solver
#       interface for the three challenge types, GetCertificateChain with
#       the alternate chain, RevokeCertificate by account and by the
#       certificate's key, AccountKeyRollover, an RSA account, EAB
#
# Both programs are built here, offline, against Debian's packages (GOPATH
# mode, GOCACHE in the temp dir); what they share is the package
# t/go/src/acmetest.  The oracles are the openssl CLI (chain,
# names), our OCSP responder asked with `openssl ocsp`, the account records
# in Redis and JWK thumbprints computed with CryptX.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time);
use PKITest;

my $GOPATH = '/usr/share/gocode';
my @missing = grep { !which($_) } qw(go pebble-challtestsrv);
push @missing, grep { !-d "$GOPATH/src/$_" }
    qw(golang.org/x/crypto/acme github.com/mholt/acmez go.uber.org/zap);
plan(skip_all => "Go ACME libraries not installed: @missing (apt-get install "
    . "golang-go golang-golang-x-crypto-dev golang-github-mholt-acmez-dev "
    . "pebble)") if @missing;
plan(skip_all => "ngx_http_acme_module not built")
    if !-e "$PKITest::BUILD/ngx_http_acme_module.so";

my $T0 = time;
my $t = PKITest->new;
my $dir = $t->dir;
my $pki = $t->pki;

# --- the two programs, built offline ------------------------------------------

# GOPATH mode: our package acmetest (t/go/src/acmetest), then Debian's
my %goenv = (GOPATH => "$PKITest::TOP/t/go:$GOPATH", GO111MODULE => 'off',
             GOFLAGS => '', GOPROXY => 'off', GOENV => 'off',
             GOTOOLCHAIN => 'local', GOCACHE => "$dir/go/cache",
             HOME => "$dir/go", CGO_ENABLED => 0);
mkdir "$dir/go";
for my $p (qw(xacme acmez)) {
    my $t1 = time;
    my ($rc, $out, $err) = run_cmd(['go', 'build', '-o', "$dir/go/$p",
                                    "$PKITest::TOP/t/go/$p/main.go"],
                                   env => \%goenv, timeout => 180);
    ok($rc == 0 && -x "$dir/go/$p",
       sprintf('go build %s (%.1f s)', $p, time - $t1))
        or BAIL_OUT("go build $p: $out$err");
}

$t->start_redis;
my ($http01, $tls01, $dns, $mgmt) = $t->acme_lab;

sub conf {
    return $t->acme_lab_conf($dns, '--acme-http-port', $http01,
                             '--acme-tls-port', $tls01, @_);
}
$t->start_nginx(conf());

my $server = 'https://127.0.0.1:' . $t->https_port . '/acme/directory';

# the fake DNS for dns-01 (A queries answer 127.0.0.1; TXT records set by
# the clients through the management API)
ok($t->start_challtestsrv($dns, $mgmt), 'pebble-challtestsrv is up');

# --- running a client ---------------------------------------------------------

# go(PROGRAM, KEYFILE, COMMAND, FLAGS...): (exit code, {name => value}, text)
sub go {
    my ($prog, $key, $cmd, @flags) = @_;
    my ($rc, $out, $err) = run_cmd(
        ["$dir/go/$prog", '-dir', $server, '-ca', "$pki/root.pem",
         '-key', $key, '-http', "127.0.0.1:$http01",
         '-tls', "127.0.0.1:$tls01", '-dns-mgmt', $t->challtestsrv_url,
         @flags, $cmd],
        timeout => 90);
    my %r = $out =~ /^([\w-]+): (.*)$/mg;
    return ($rc, \%r, "$out$err");
}

sub go_ok {
    my ($name, @args) = @_;
    my $t0 = time;
    my ($rc, $r, $text) = go(@args);
    $t->exit_ok($name, $rc, $t0, $text);
    return $r;
}

# the client published two TXT records (name and wildcard) through the
# management API and removed them afterwards
sub dns_published {
    my ($name, $host) = @_;
    my $log = PKITest::slurp("$dir/challtestsrv.log") // '';
    my $h = qr/TXT challenge for Host "_acme-challenge\.\Q$host\E\."/;
    my $n = () = $log =~ /Added DNS-01 $h/g;
    is($n, 2, "$name dns-01: two TXT records published for $host");
    like($log, qr/Removed DNS-01 $h/, "$name dns-01: and removed");
}

# --- oracles ------------------------------------------------------------------

my $ntop = 0;

# the certificates of a PEM bundle, each in a file of its own
sub split_chain {
    my ($file) = @_;
    my @f;
    for my $p (PKITest::pem_certs($file)) {
        push @f, "$dir/part-" . ++$ntop . '.pem';
        PKITest::spew($f[-1], $p);
    }
    return @f;
}

# openssl verify of the leaf of a chain file with the rest as untrusted
# certificates, trusting only $anchor
sub verify_with {
    my ($anchor, $file) = @_;
    my ($leaf, @rest) = split_chain($file);
    return (0, 'no certificate') if !$leaf;
    my $untrusted = "$dir/untrusted-$ntop.pem";
    PKITest::spew($untrusted, join('', map { PKITest::slurp($_) } @rest));
    my ($rc, $out, $err) = run_cmd(['openssl', 'verify', '-CAfile', $anchor,
        (@rest ? ('-untrusted', $untrusted) : ()), $leaf]);
    return ($rc == 0 && $out =~ /: OK/, "$out$err");
}

# the default chain ends below the test root; the alternate one (RFC 8555
# 7.4.2; the issuing CA has `alternate_chain`) carries the cross
# certificate on top and verifies with the alternate root alone
my $altcn = 'nginx-pki Alt Root CA';
sub chains_ok {
    my ($name, $main, $alt) = @_;
    my @m = split_chain($main);
    like(@m ? $t->x509_field($m[-1], 'issuer') : '',
         qr/^CN=nginx-pki Root CA,/,
         "$name: the default chain's top certificate is issued by the root");
    my ($ok, $out) = verify_with("$pki/altroot.pem", $main);
    ok(!$ok, "$name: the default chain does not verify with the alt root");
    my @a = split_chain($alt);
    ok(@a >= 2, "$name: an alternate chain") or return;
    is($t->x509_field($a[0], 'fingerprint'),
       $t->x509_field($m[0], 'fingerprint'),
       "$name: the alternate chain starts with the same leaf");
    is($t->x509_field($a[-1], 'fingerprint'),
       $t->x509_field("$pki/alt-chain.pem", 'fingerprint'),
       "$name: its top certificate is the cross certificate ($altcn)");
    ($ok, $out) = verify_with("$pki/altroot.pem", $alt);
    ok($ok, "$name: the alternate chain verifies with the alternate root")
        or diag($out);
}

# status and reason once the responder sees the revocation
sub revocation {
    my ($file) = @_;
    return ($t->ocsp_revoked($file), $t->ocsp_reason($file));
}

# RFC 7638 thumbprint of a key file, computed by CryptX
sub thumb {
    my ($file) = @_;
    require Crypt::PK::ECC;
    require Crypt::PK::RSA;
    my $pem = PKITest::slurp($file) // return '';
    my $k = eval { Crypt::PK::ECC->new(\$pem) }
         || eval { Crypt::PK::RSA->new(\$pem) } or return '';
    return $k->export_key_jwk_thumbprint('SHA256');
}

# the account record of a key: its thumbprint, its key, its status
sub account_ok {
    my ($name, $url, $keyfile, %want) = @_;
    my $a = $t->acme_account($url);
    is($a->{status} // '', $want{status} // 'valid', "$name: stored status");
    is($a->{thumb} // '', thumb($keyfile),
       "$name: stored key is the client's (JWK thumbprint)");
    is_deeply($a->{contact}, $want{contact}, "$name: stored contact")
        if $want{contact};
    return $a;
}

# --- cert-manager's client: golang.org/x/crypto/acme --------------------------

my $xk = "$dir/xacme-acct.pem";
my $r = go_ok('xacme register', 'xacme', $xk, 'register',
              '-contact', 'mailto:cm@example.com');
my $xacct = $r->{account};
like($xacct // '', qr{^https://127\.0\.0\.1:\d+/acme/acct/[\w-]+$},
     'xacme register: an account URL');
account_ok('xacme register', $xacct, $xk, contact => ['mailto:cm@example.com']);
like(PKITest::slurp($xk) // '', qr/BEGIN PRIVATE KEY/, 'xacme: its key file');
like(`openssl pkey -in $xk -noout -text 2>&1`, qr/P-256|prime256v1/,
     'xacme: a P-256 account key');

# cert-manager registers on every sync: an existing account is looked up
$r = go_ok('xacme register again', 'xacme', $xk, 'register',
           '-contact', 'mailto:cm@example.com');
is($r->{existing} // '', 'yes', 'xacme: told the account exists');
is($r->{account} // '', $xacct, 'xacme: GetReg found the same account');

go_ok('xacme UpdateReg', 'xacme', $xk, 'update', '-contact',
      'mailto:ops-cm@example.com');
is_deeply($t->acme_account($xacct)->{contact}, ['mailto:ops-cm@example.com'],
          'xacme UpdateReg: the stored contact changed');

$r = go_ok('xacme http-01', 'xacme', $xk, 'issue', '-challenge', 'http-01',
           '-names', 'cm1.example.com,www.cm1.example.com',
           '-out', "$dir/cm1");
$t->cert_ok('xacme http-01', "$dir/cm1.pem", 'cm1.example.com',
            'www.cm1.example.com');
ok(($r->{'solver-requests'} // 0) >= 2,
   'xacme http-01: the validator fetched both tokens from the client');
is($r->{alternates} // '', 1, 'xacme: ListCertAlternates lists one');
chains_ok('xacme FetchCert', "$dir/cm1.pem", "$dir/cm1-alt1.pem");
is($t->pubkey_of_cert("$dir/cm1.pem"), $t->pubkey_of_key("$dir/cm1.key"),
   'xacme: the certificate carries the CSR key');

$r = go_ok('xacme tls-alpn-01', 'xacme', $xk, 'issue', '-challenge',
           'tls-alpn-01', '-names', 'cm2.example.com', '-out', "$dir/cm2");
$t->cert_ok('xacme tls-alpn-01', "$dir/cm2.pem", 'cm2.example.com');
ok(($r->{'solver-requests'} // 0) >= 1,
   'xacme tls-alpn-01: the validator made the acme-tls/1 handshake');

go_ok('xacme dns-01 (name and wildcard)', 'xacme', $xk, 'issue',
      '-challenge', 'dns-01', '-names', 'cm3.example.com,*.cm3.example.com',
      '-out', "$dir/cm3");
$t->cert_ok('xacme dns-01', "$dir/cm3.pem", 'cm3.example.com',
            '*.cm3.example.com');
dns_published('xacme', 'cm3.example.com');

# notAfter from a host on another zone: x/crypto/acme writes the time with
# its offset (+05:30 here, RFC 3339); the certificate ends at that instant
$r = go_ok('xacme notAfter written at +05:30', 'xacme', $xk, 'issue',
           '-challenge', 'http-01', '-names', 'cm6.example.com',
           '-out', "$dir/cm6", '-not-after', '720h', '-tz', 330);
{
    require Time::Local;
    my ($rc, $out) = PKITest::run_cmd(['openssl', 'x509', '-in',
        "$dir/cm6.pem", '-noout', '-enddate', '-dateopt', 'iso_8601']);
    my @f = ($out // '') =~ /=(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)/;
    my $end = @f ? Time::Local::timegm($f[5], $f[4], $f[3], $f[2],
                                       $f[1] - 1, $f[0]) : 0;
    ok($r->{'not-after'}, 'xacme: it asked for a notAfter');
    is($end, $r->{'not-after'} // -1,
       'xacme notAfter at +05:30: the certificate ends at that instant');
}

is($t->ocsp_status("$dir/cm1.pem"), 'good', 'OCSP: xacme certificate good');
go_ok('xacme RevokeCert (account, keyCompromise)', 'xacme', $xk, 'revoke',
      '-cert', "$dir/cm1.pem", '-reason', 1);
is_deeply([revocation("$dir/cm1.pem")], ['revoked', 'keyCompromise'],
          'OCSP: xacme certificate revoked, reason keyCompromise');
is($t->ocsp_status("$dir/cm2.pem"), 'good', 'OCSP: the other one still good');

# keyChange (RFC 8555 7.3.5): the record holds the new key, the old key
# finds no account, the new one issues
my $xk2 = "$dir/xacme-acct2.pem";
go_ok('xacme AccountKeyRollover', 'xacme', $xk, 'rollover', '-newkey', $xk2);
isnt(thumb($xk2), thumb($xk), 'xacme: a new key');
account_ok('xacme after rollover', $xacct, $xk2);
{
    my ($th, $th2) = (thumb($xk), thumb($xk2));
    my @idx = $t->redis_keys('*jwk*');
    ok(!grep({ /\Q$th\E$/ } @idx),
       'xacme: the old key is no longer indexed in Redis');
    ok(grep({ /\Q$th2\E$/ } @idx), 'xacme: the new key is')
        or diag("@idx");
    my ($rc, undef, $text) = go('xacme', $xk, 'account');
    isnt($rc, 0, 'xacme: GetReg with the old key finds no account');
    like($text, qr/account does not exist/,
         '... the server said so (accountDoesNotExist)')
        or diag($text);
}
$r = go_ok('xacme GetReg (new key)', 'xacme', $xk2, 'account');
is($r->{account} // '', $xacct, 'xacme GetReg: the same account URL');
is($r->{status} // '', 'valid', 'xacme GetReg: valid');
go_ok('xacme issue with the new key', 'xacme', $xk2, 'issue', '-challenge',
      'http-01', '-names', 'cm4.example.com', '-out', "$dir/cm4");
$t->cert_ok('xacme after rollover', "$dir/cm4.pem", 'cm4.example.com');

go_ok('xacme DeactivateReg', 'xacme', $xk2, 'deactivate');
is($t->acme_account($xacct)->{status} // '', 'deactivated',
   'xacme DeactivateReg: the stored account is deactivated');
{
    my ($rc, undef, $text) = go('xacme', $xk2, 'issue', '-challenge',
        'http-01', '-names', 'cm5.example.com', '-out', "$dir/cm5");
    isnt($rc, 0, 'xacme: a deactivated account issues nothing');
    ok(!-e "$dir/cm5.pem", 'xacme: no certificate written');
    # x/crypto drops the answer of its account lookup and signs newOrder
    # with the bare key, so the account's status shows on GetReg only
    ($rc, undef, $text) = go('xacme', $xk2, 'account');
    isnt($rc, 0, 'xacme GetReg of a deactivated account: refused');
    like($text, qr/401 urn:ietf:params:acme:error:unauthorized: .*deactivated/,
         '... the server said why') or diag($text);
}

# --- Caddy's client: github.com/mholt/acmez -----------------------------------

my $zk = "$dir/acmez-acct.pem";
$r = go_ok('acmez NewAccount', 'acmez', $zk, 'register', '-contact',
           'mailto:caddy@example.com');
my $zacct = $r->{account};
like($zacct // '', qr{/acme/acct/[\w-]+$}, 'acmez: an account URL');
isnt($zacct // '', $xacct // '', 'acmez: an account of its own');
account_ok('acmez NewAccount', $zacct, $zk,
           contact => ['mailto:caddy@example.com']);
$r = go_ok('acmez GetAccount', 'acmez', $zk, 'account');
is($r->{account} // '', $zacct, 'acmez GetAccount: the same account');

$r = go_ok('acmez http-01', 'acmez', $zk, 'issue', '-challenge', 'http-01',
           '-names', 'cd1.example.com,www.cd1.example.com',
           '-out', "$dir/cd1");
$t->cert_ok('acmez http-01', "$dir/cd1.pem", 'cd1.example.com',
            'www.cd1.example.com');
is($r->{chains} // '', 2, 'acmez: GetCertificateChain got both chains');
chains_ok('acmez chains', "$dir/cd1.pem", "$dir/cd1-alt1.pem");
ok(($r->{'solver-requests'} // 0) >= 2,
   'acmez http-01: the validator fetched both tokens from the client');

$r = go_ok('acmez tls-alpn-01', 'acmez', $zk, 'issue', '-challenge',
           'tls-alpn-01', '-names', 'cd2.example.com', '-out', "$dir/cd2");
$t->cert_ok('acmez tls-alpn-01', "$dir/cd2.pem", 'cd2.example.com');
ok(($r->{'solver-requests'} // 0) >= 1,
   'acmez tls-alpn-01: the validator made the acme-tls/1 handshake');

go_ok('acmez dns-01 (name and wildcard)', 'acmez', $zk, 'issue',
      '-challenge', 'dns-01', '-names', 'cd3.example.com,*.cd3.example.com',
      '-out', "$dir/cd3");
$t->cert_ok('acmez dns-01', "$dir/cd3.pem", 'cd3.example.com',
            '*.cd3.example.com');
dns_published('acmez', 'cd3.example.com');

go_ok('acmez RevokeCertificate (account, superseded)', 'acmez', $zk,
      'revoke', '-cert', "$dir/cd1.pem", '-reason', 4);
is_deeply([revocation("$dir/cd1.pem")], ['revoked', 'superseded'],
          'OCSP: acmez certificate revoked, reason superseded');
go_ok('acmez RevokeCertificate (certificate key, cessationOfOperation)',
      'acmez', $zk, 'revoke', '-cert', "$dir/cd2.pem", '-certkey',
      "$dir/cd2.key", '-reason', 5);
is_deeply([revocation("$dir/cd2.pem")], ['revoked', 'cessationOfOperation'],
          'OCSP: revoked with the certificate key, reason '
          . 'cessationOfOperation');
is($t->ocsp_status("$dir/cd3.pem"), 'good', 'OCSP: the dns-01 one still good');

my $zk2 = "$dir/acmez-acct2.pem";
go_ok('acmez AccountKeyRollover', 'acmez', $zk, 'rollover', '-newkey', $zk2);
account_ok('acmez after rollover', $zacct, $zk2);
go_ok('acmez issue with the new key', 'acmez', $zk2, 'issue', '-challenge',
      'http-01', '-names', 'cd4.example.com', '-out', "$dir/cd4");
$t->cert_ok('acmez after rollover', "$dir/cd4.pem", 'cd4.example.com');
{
    my ($rc, undef, $text) = go('acmez', $zk, 'account');
    isnt($rc, 0, 'acmez: the old key finds no account');
}

# an RSA account key (RS256)
my $zr = "$dir/acmez-rsa.pem";
$r = go_ok('acmez NewAccount (RSA)', 'acmez', $zr, 'register', '-keytype',
           'rsa', '-contact', 'mailto:caddy-rsa@example.com');
my $ra = account_ok('acmez RSA account', $r->{account}, $zr);
like($ra->{key} // '', qr/"kty"\s*:\s*"RSA"/, 'acmez: the stored key is RSA');
go_ok('acmez http-01 (RSA account)', 'acmez', $zr, 'issue', '-challenge',
      'http-01', '-names', 'cd5.example.com', '-out', "$dir/cd5");
$t->cert_ok('acmez RSA account', "$dir/cd5.pem", 'cd5.example.com');

# --- External Account Binding -------------------------------------------------
# the same server with acme_eab_required on: keys come from the admin API

$t->stop_nginx;
$t->start_nginx(conf('--acme-eab', 'on'));
$server = 'https://127.0.0.1:' . $t->https_port . '/acme/directory';

{
    my ($rc, undef, $text) = go('xacme', "$dir/xacme-eab.pem", 'register');
    isnt($rc, 0, 'xacme without EAB: refused');
    like($text, qr/externalAccountRequired/, 'xacme without EAB: told why')
        or diag($text);
}
my ($kid, $hmac) = $t->eab_key();
$r = go_ok('xacme with EAB', 'xacme', "$dir/xacme-eab.pem", 'register',
           "-eab-kid=$kid", "-eab-hmac=$hmac");
account_ok('xacme with EAB', $r->{account}, "$dir/xacme-eab.pem");
go_ok('xacme with EAB: issue', 'xacme', "$dir/xacme-eab.pem", 'issue',
      '-challenge', 'http-01', '-names', 'cme.example.com',
      '-out', "$dir/cme");
$t->cert_ok('xacme with EAB', "$dir/cme.pem", 'cme.example.com');
{
    my ($rc, undef, $text) = go('acmez', "$dir/acmez-eab-used.pem",
        'register', "-eab-kid=$kid", "-eab-hmac=$hmac");
    isnt($rc, 0, 'acmez: an EAB key already bound is refused');
    like($text,
         qr/externalAccountBinding refused: unknown, disabled or used key/,
         'acmez: told the key is used') or diag($text);
}
my ($zkid, $zhmac) = $t->eab_key();
$r = go_ok('acmez with EAB (RSA key)', 'acmez', "$dir/acmez-eab.pem",
           'register', '-keytype', 'rsa', "-eab-kid=$zkid",
           "-eab-hmac=$zhmac");
account_ok('acmez with EAB', $r->{account}, "$dir/acmez-eab.pem");
go_ok('acmez with EAB: issue', 'acmez', "$dir/acmez-eab.pem", 'issue',
      '-challenge', 'tls-alpn-01', '-names', 'cde.example.com',
      '-out', "$dir/cde");
$t->cert_ok('acmez with EAB', "$dir/cde.pem", 'cde.example.com');

$t->stop_nginx;
my $log = PKITest::slurp($t->error_log) // '';
unlike($log, qr/\[(?:alert|crit|emerg)\]/, 'no alert/crit in error.log');
diag(sprintf('acme_go.t: %.1f s', time - $T0));

done_testing();
