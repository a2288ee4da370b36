#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Three more ACME clients of Debian 12 against our ACME server, in the lab
# of t/acme_clients.t (scripts/nginx-conf.sh; every name is 127.0.0.1,
# http-01 on a free port, dns-01 answered by pebble-challtestsrv):
#
#   ruby-acme-client (the acme-client gem 2.0.9 of GitLab and Rails apps),
#       driven by t/ruby/acme_client.rb: account with contact and ToS,
#       http-01 (the script serves the key authorizations itself) for two
#       names, dns-01 for a name and its wildcard, finalize with the gem's
#       CertificateRequest (a version 2 CSR, which the server takes as Let's
#       Encrypt does), revoke with a reason, contact update, keyChange,
#       deactivate, and External Account Binding (built by hand: 2.0.9
#       has no EAB argument; renewalInfo (ARI) came later still)
#   lacme (Perl, privilege-separated, with lacme-accountd): its own http-01
#       webserver on the lab port, register, issue, contact update, revoke
#       by the account and by the certificate's key
#   acmetool (Go): "listen" mode on the lab port, one certificate; its
#       `revoke` only marks the certificate (acmetool 0.2 never sends it:
#       processPendingRevocations is commented out), so no revocation here
#
# Oracles: the openssl CLI (chain to the test root, SANs), our OCSP
# responder asked with `openssl ocsp`, and the accounts stored in Redis.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time);
use PKITest;

my $APT = 'apt-get install ruby-acme-client lacme lacme-accountd '
        . 'libcrypt-openssl-rsa-perl acmetool pebble';
plan(skip_all => "pebble-challtestsrv not installed ($APT)")
    if !which('pebble-challtestsrv');
plan(skip_all => "ngx_http_acme_module not built")
    if !-e "$PKITest::BUILD/ngx_http_acme_module.so";

my $RUBY = which('ruby')
    && (run_cmd(['ruby', '-e', 'require "acme-client"']))[0] == 0;
my $LACME = which('lacme') && which('lacme-accountd')
    && -x '/usr/libexec/lacme/client'
    && (run_cmd(['perl', '-MCrypt::OpenSSL::RSA', '-e', '1']))[0] == 0;
my $ACMETOOL = which('acmetool');
plan(skip_all => "no ACME client of this test installed ($APT)")
    if !$RUBY && !$LACME && !$ACMETOOL;

my $T0 = time;
my $t = PKITest->new;
$t->start_redis;

my $dir = $t->dir;
my $pki = $t->pki;
my ($http01, undef, $dns, $mgmt) = $t->acme_lab;

sub lab_conf {
    return $t->acme_lab_conf($dns, '--acme-http-port', $http01, @_);
}

$t->start_nginx(lab_conf());
my $server = 'https://127.0.0.1:' . $t->https_port . '/acme/directory';
my $errlog = '';

ok($t->start_challtestsrv($dns, $mgmt), 'pebble-challtestsrv is up');

# --- oracles -----------------------------------------------------------------

# the chain the client saved (leaf first) verifies with only the test root
sub chain_ok {
    my ($name, $file) = @_;
    my ($leaf, @rest) = PKITest::pem_certs($file);
    ok(@rest >= 1, "$name: the saved chain has the issuing CA") or return;
    PKITest::spew("$file.leaf", $leaf // '');
    PKITest::spew("$file.rest", join('', @rest));
    my ($rc, $out, $err) = run_cmd(['openssl', 'verify', '-CAfile',
        "$pki/root.pem", '-untrusted', "$file.rest", "$file.leaf"]);
    ok($rc == 0, "$name: the saved chain verifies with the test root")
        or diag("$out$err");
}

# --- ruby-acme-client ----------------------------------------------------------

my $rbdir = "$dir/rb";
my %rbenv = (ACME_DIRECTORY => $server, ACME_CA_FILE => "$pki/root.pem",
             HTTP01_PORT => $http01,
             CHALLTESTSRV => "http://127.0.0.1:$mgmt");

# one step of t/ruby/acme_client.rb: (exit status, { key => value },
# { key => count }, output)
sub rb {
    my ($name, @args) = @_;
    my $t1 = time;
    my ($rc, $out, $err) = run_cmd(
        ['ruby', "$FindBin::Bin/ruby/acme_client.rb", $rbdir, @args],
        env => \%rbenv, timeout => 60);
    my (%kv, %n);
    for (split /\n/, $out) {
        my ($k, $v) = /^(\w+) ?(.*)$/ or next;
        $kv{$k} = $v;
        $n{$k}++;
    }
    $t->exit_ok($name, $rc, $t1, "$out\n$err");
    return (\%kv, \%n, $out);
}

SKIP: {
    skip "ruby-acme-client not installed ($APT)", 44 if !$RUBY;

    my ($kv, $n) = rb('gem new_account', 'register', 'rb@example.com');
    like($kv->{kid} // '', qr{^https://127\.0\.0\.1:\d+/acme/acct/[\w-]+$},
         'gem new_account: an account URL');
    my $acct = $t->acme_account_with_contact('rb@example.com');
    is($acct->{status} // '', 'valid',
       'gem new_account: the stored account has the contact');
    ok($acct->{tos}, 'gem new_account: the stored account agreed to the ToS');

    ($kv, $n) = rb('gem http-01 (two names)', 'issue', 'http-01',
                   "$rbdir/rb1.pem", 'rb1.example.com',
                   'www.rb1.example.com');
    is($n->{served} // 0, 2,
       'gem http-01: the validator fetched both tokens from the script');
    $t->cert_ok_sans('gem http-01', "$rbdir/rb1.pem", 'rb1.example.com',
                     'www.rb1.example.com');
    chain_ok('gem http-01', "$rbdir/rb1.pem");
    is($t->pubkey_of_cert("$rbdir/rb1.pem"),
       $t->pubkey_of_key("$rbdir/rb1.pem.key"),
       'gem http-01: the certificate has the CSR key');

    ($kv, $n) = rb('gem dns-01 (name and wildcard)', 'issue', 'dns-01',
                   "$rbdir/rb2.pem", 'rb2.example.com', '*.rb2.example.com');
    is($n->{authz} // 0, 2, 'gem dns-01: two authorizations');
    $t->cert_ok_sans('gem dns-01', "$rbdir/rb2.pem", 'rb2.example.com',
                     '*.rb2.example.com');

    is($t->ocsp_status("$rbdir/rb1.pem"), 'good',
       'OCSP: gem certificate good before revocation');
    rb('gem revoke (keyCompromise)', 'revoke', "$rbdir/rb1.pem", 1);
    is($t->ocsp_revoked("$rbdir/rb1.pem"), 'revoked',
       'OCSP: gem certificate revoked');
    is($t->ocsp_reason("$rbdir/rb1.pem"), 'keyCompromise',
       'OCSP: with the reason the gem gave');
    is($t->ocsp_status("$rbdir/rb2.pem"), 'good',
       'OCSP: the other gem certificate still good');

    rb('gem account update', 'update', 'rb-ops@example.com');
    is($t->acme_account_with_contact('rb-ops@example.com')->{status} // '',
       'valid', 'gem account update: the stored contact changed');
    ok(!%{ $t->acme_account_with_contact('rb@example.com') },
       'gem account update: the old contact is gone');

    ($kv) = rb('gem account_key_change', 'keychange');
    like($kv->{short_key} // '',
         qr/^Malformed: .*must have 32 octets each on P-256 \(RFC 7518/,
         'gem keyChange to a key it sends with a short coordinate: refused');
    is($kv->{short_key_kid} // '', $kv->{changed} // 'none',
       '... and the account still has its old key');
    is($kv->{new_key_kid} // '', $kv->{changed} // 'none',
       'gem keyChange: the new key finds the same account');
    is($kv->{old_key} // '', 'AccountDoesNotExist',
       'gem keyChange: the old key no longer does');
    rb('gem issue with the new key', 'issue', 'http-01', "$rbdir/rb3.pem",
       'rb3.example.com');
    $t->cert_ok_sans('gem after keyChange', "$rbdir/rb3.pem",
                     'rb3.example.com');

    ($kv) = rb('gem account_deactivate', 'deactivate');
    is($t->acme_account_with_contact('rb-ops@example.com')->{status} // '',
       'deactivated', 'gem deactivate: the stored account is deactivated');
    is($kv->{order_after} // '', 'Unauthorized',
       'gem deactivate: a new order is refused');
}

# --- lacme ---------------------------------------------------------------------
# lacme spawns lacme-accountd (the account key, RSA only), its ACME client
# and its http-01 webserver, each of which would drop privileges to its own
# user: user/group empty keep them as they are.  The client takes no CA
# option (only SSL_verify, SSL_version, SSL_cipher_list) and starts with a
# clean environment, so its command runs through env(1) with
# PERL_LWP_SSL_CA_FILE (LWP's CA file) set to the test root.

my $la = "$dir/lacme";
mkdir $la, 0700;
sub lacme_conf {
    my ($file, %o) = @_;
    my $cmd = $o{no_ca} ? '/usr/libexec/lacme/client'
            : "/usr/bin/env PERL_LWP_SSL_CA_FILE=$pki/root.pem "
              . '/usr/libexec/lacme/client';
    PKITest::spew("$la/$file.accountd", "privkey = file:$o{key}\n");
    PKITest::spew("$la/$file", <<"CFG");
[client]
server = $server
user =
group =
command = $cmd
[webserver]
listen = 127.0.0.1:$http01
user =
group =
[accountd]
config = $la/$file.accountd
CFG
    return "$la/$file";
}

sub lacme_certs {
    my ($sect, $key, @names) = @_;
    PKITest::spew("$la/$sect.conf", <<"CFG");
[$sect]
certificate = $la/$sect.pem
certificate-chain = $la/$sect-chain.pem
certificate-key = $key
subject = /CN=$names[0]
subjectAltName = @{[ join ',', map { "DNS:$_" } @names ]}
CAfile = $pki/root.pem
CFG
    return "$la/$sect.conf";
}

SKIP: {
    skip "lacme not installed ($APT)", 24 if !$LACME;

    run_cmd(['openssl', 'genpkey', '-algorithm', 'RSA', '-pkeyopt',
             'rsa_keygen_bits:2048', '-out', "$la/account.key"]);
    run_cmd(['openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt',
             'ec_paramgen_curve:P-256', '-out', "$la/la1.key"]);
    run_cmd(['openssl', 'genpkey', '-algorithm', 'RSA', '-pkeyopt',
             'rsa_keygen_bits:2048', '-out', "$la/la2.key"]);
    my $conf = lacme_conf('lacme.conf', key => "$la/account.key");
    my @lacme = ('lacme', "--config=$conf");

    {
        my $noca = lacme_conf('noca.conf', key => "$la/account.key",
                              no_ca => 1);
        my ($rc, $out, $err) = run_cmd(['lacme', "--config=$noca",
            'account', '--register', '--tos-agreed',
            'mailto:la@example.com'], timeout => 60);
        isnt($rc, 0, 'lacme without the test root: refused');
        like("$out$err", qr/certificate verify failed/,
             '... because it does not trust our server') or diag("$out$err");
    }

    my (undef, $out) = $t->run_ok('lacme account --register',
        [@lacme, 'account', '--register', '--tos-agreed',
         'mailto:la@example.com']);
    like($out, qr{Key ID: https://127\.0\.0\.1:\d+/acme/acct/},
         'lacme: the account URL');
    is($t->acme_account_with_contact('la@example.com')->{status} // '',
       'valid', 'lacme: the stored account has the contact');

    $t->run_ok('lacme newOrder (two names)',
        [@lacme, 'newOrder', '--config-certs='
         . lacme_certs('la1', "$la/la1.key", 'la1.example.com',
                       'www.la1.example.com')]);
    $t->cert_ok_sans('lacme', "$la/la1.pem", 'la1.example.com',
                     'www.la1.example.com');
    chain_ok('lacme', "$la/la1-chain.pem");
    is($t->pubkey_of_cert("$la/la1.pem"), $t->pubkey_of_key("$la/la1.key"),
       'lacme: the certificate has the configured key');

    $t->run_ok('lacme newOrder (RSA certificate key)',
        [@lacme, 'newOrder', '--config-certs='
         . lacme_certs('la2', "$la/la2.key", 'la2.example.com')]);
    $t->cert_ok_sans('lacme RSA key', "$la/la2.pem", 'la2.example.com');

    $t->run_ok('lacme account (contact update)',
               [@lacme, 'account', 'mailto:la-ops@example.com']);
    is($t->acme_account_with_contact('la-ops@example.com')->{status} // '',
       'valid', 'lacme: the stored contact changed');

    is($t->ocsp_status("$la/la1.pem"), 'good', 'OCSP: lacme certificate good');
    $t->run_ok('lacme revokeCert', [@lacme, 'revokeCert', "$la/la1.pem"]);
    is($t->ocsp_revoked("$la/la1.pem"), 'revoked',
       'OCSP: lacme certificate revoked');

    # RFC 8555 7.6: lacme-accountd holding the certificate's own key
    my $ck = lacme_conf('certkey.conf', key => "$la/la2.key");
    $t->run_ok('lacme revokeCert signed with the certificate key',
               ['lacme', "--config=$ck", 'revokeCert', "$la/la2.pem"]);
    is($t->ocsp_revoked("$la/la2.pem"), 'revoked',
       'OCSP: revoked with the certificate key');
}

# --- acmetool ------------------------------------------------------------------
# Its state directory and response file make it non-interactive; Go's
# crypto/x509 takes SSL_CERT_FILE as the only root.  "listen" mode answers
# http-01 itself on the ports of http-ports (it also tries :80, :402 and
# :4402, and goes on when it cannot bind them).  acmetool 0.2 polls an
# authorization 10 s after loading it when the server gives no
# Retry-After, so one certificate takes about 10 s.

SKIP: {
    skip "acmetool not installed ($APT)", 9 if !$ACMETOOL;

    my $at = "$dir/acmetool";
    mkdir $at;
    mkdir "$at/state";
    mkdir "$at/state/conf";
    mkdir "$at/hooks";
    mkdir "$at/webroot";
    PKITest::spew("$at/state/conf/target", <<"YML");
request:
  provider: $server
  key:
    type: ecdsa
  challenge:
    http-ports:
      - 127.0.0.1:$http01
    http-self-test: false
    webroot-paths:
      - $at/webroot
YML
    PKITest::spew("$at/responses", <<"YML");
"acme-enter-email": "at\@example.com"
"acme-agreement:$server": true
"acmetool-quickstart-choose-method": listen
YML
    # acmetool writes its tokens to /var/run/acme/acme-challenge besides the
    # webroot-paths given: in a mount namespace of its own (as uacme in
    # t/acme_clients.t) an empty tmpfs over /run keeps them off the machine
    my @ns = (run_cmd(['unshare', '-m', 'true']))[0] == 0
        ? ('unshare', '-m', 'sh', '-c',
           'mount -t tmpfs acmetool /run && exec "$@"', 'acmetool')
        : ();
    my @at = (@ns, 'acmetool', "--state=$at/state", "--hooks=$at/hooks",
              '--batch', "--response-file=$at/responses");
    my %atenv = (env => { SSL_CERT_FILE => "$pki/root.pem" });

    # another root only (Go takes any certificate of the file as an anchor,
    # so not our issuing CA either)
    run_cmd(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
             'ec_paramgen_curve:P-256', '-nodes', '-keyout',
             "$at/other.key", '-subj', '/CN=other root', '-days', '2',
             '-out', "$at/other.pem"]);
    {
        my ($rc, $out, $err) = run_cmd([@at, 'want', 'at0.example.com'],
            env => { SSL_CERT_FILE => "$at/other.pem" }, timeout => 60);
        ok($rc != 0 || !-e "$at/state/live/at0.example.com/cert",
           'acmetool trusting another root: no certificate');
        like("$out$err", qr/certificate|x509/i, '... a TLS error')
            or diag("$out$err");
        run_cmd([@at, 'unwant', 'at0.example.com'], %atenv);
    }

    $t->run_ok('acmetool want (listen mode)',
               [@at, 'want', 'at1.example.com', 'www.at1.example.com'], %atenv);
    my $live = "$at/state/live/at1.example.com";
    $t->cert_ok_sans('acmetool', "$live/cert", 'at1.example.com',
                     'www.at1.example.com');
    chain_ok('acmetool', "$live/fullchain");
    is($t->acme_account_with_contact('at@example.com')->{status} // '',
       'valid',
       'acmetool: the stored account has the contact of the response file');
}

# --- External Account Binding (the gem) ----------------------------------------

SKIP: {
    skip "ruby-acme-client not installed ($APT)", 8 if !$RUBY;

    $t->stop_nginx;
    $errlog .= PKITest::slurp($t->error_log) // '';
    $t->start_nginx(lab_conf('--acme-eab', 'on'));
    $rbenv{ACME_DIRECTORY} = $server;
    $rbdir = "$dir/rb-eab";

    my ($kid, $hmac) = $t->eab_key;

    my ($kv) = rb('gem with EAB', 'eab', $kid, $hmac, 'rb-eab@example.com');
    is($kv->{eab_required}, 1,
       'gem: the directory says externalAccountRequired');
    is($kv->{without_eab} // '', 'ExternalAccountRequired',
       'gem without EAB: refused');
    is($t->acme_account_with_contact('rb-eab@example.com')->{status} // '',
       'valid', 'gem with EAB: the account is stored');
    rb('gem issue under EAB', 'issue', 'http-01', "$rbdir/rbe.pem",
       'rbe.example.com');
    ok(-s "$rbdir/rbe.pem" && $t->verify_chain("$rbdir/rbe.pem"),
       'gem under EAB: a certificate that chains to the test root');
}

$t->stop_nginx;
$errlog .= PKITest::slurp($t->error_log) // '';
unlike($errlog, qr/\[(?:alert|crit|emerg)\]/, 'no alert/crit in error.log');
diag(sprintf('acme_clients2.t: %.1f s', time - $T0));

done_testing();
