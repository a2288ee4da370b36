#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Two delegated responders for one CA (ocsp_responder_signer twice): an
# expiring responder certificate and its replacement, configured side by
# side.  The first one valid at the time signs: here the first configured
# has expired, so the second one signs (its certificate included, the
# answer verifies), not the CA key.  Before, only the first configured
# signer of a CA was looked at: expired, the CA key signed and the second
# one was never used.  Responder certificates made with `openssl ca
# -startdate/-enddate`, as in t/ocsp_responder_expiry.t.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(strftime);
use PKITest;

my $t = PKITest->new;
$t->start_redis;
$t->start_nginx;
my $pki = $t->pki;
my $dir = $t->dir;
my $url = 'http://127.0.0.1:' . $t->http_port . '/ocsp';

my $a = $t->enroll_cn('repl-a');
BAIL_OUT('enrollment failed') if !$a;

my $tok = $t->token;
my $pin = slurp("$pki/hsm/pin") // '';
chomp $pin;

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

# a responder certificate valid from $from to $to (seconds from now)
sub responder {
    my ($name, $cn, $from, $to) = @_;
    my ($rc, $o, $e) = run_cmd(['openssl', 'req', '-new', '-newkey', 'ec',
        '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', "$dir/$name.key", '-subj', "/CN=$cn",
        '-out', "$dir/$name.csr"]);
    is($rc, 0, "$name: key and CSR") or diag($e);
    ($rc, $o, $e) = run_cmd(['openssl', 'ca', '-batch', '-config',
        "$dir/tca.cnf", '-engine', 'pkcs11', '-keyform', 'engine',
        '-keyfile',
        "pkcs11:token=$tok;object=issuing;type=private;pin-value=$pin",
        '-cert', "$pki/issuing.pem", '-in', "$dir/$name.csr",
        '-startdate', strftime('%y%m%d%H%M%SZ', gmtime(time + $from)),
        '-enddate', strftime('%y%m%d%H%M%SZ', gmtime(time + $to)),
        '-extensions', 'ext', '-notext', '-out', "$dir/$name.pem"],
        env => { SOFTHSM2_CONF => $t->softhsm_conf }, timeout => 60);
    is($rc, 0, "$name: certificate issued (openssl ca)") or diag("$o$e");
}

responder('old', 'OCSP responder expired', -7200, -3600);
responder('new', 'OCSP responder replacement', -3600, 86400);

my $conf = $t->render_conf;
my $ind = ' ' x 12;
my $add = "\n${ind}ocsp_responder_signer issuing $dir/old.pem $dir/old.key;"
          . "\n${ind}ocsp_responder_signer issuing $dir/new.pem $dir/new.key;";
$conf =~ s{(ocsp_responder issuing;)}{$1$add}
    or die 'no ocsp_responder in the config';
$t->stop_nginx;
$t->start_nginx($conf);

my ($rc, $out) = $t->openssl_ocsp('-issuer', "$pki/issuing.pem",
    '-cert', $a, '-url', $url, '-CAfile', "$pki/root.pem",
    '-verify_other', "$pki/issuing.pem", '-resp_text');
like($out, qr/\Q$a\E: good/, 'good') or diag($out);
like($out, qr/Response verify OK/, 'the answer verifies') or diag($out);
like($out, qr/Subject: CN\s*=\s*OCSP responder replacement/,
     'signed by the second responder, the one valid now (its certificate included)') or diag($out);
unlike($out, qr/CN\s*=\s*OCSP responder expired/,
       'the expired one left out');

$t->stop_nginx;
my $log = slurp($t->error_log) // '';
unlike($log, qr/the delegated OCSP responder certificate/,
       'no line about an invalid responder (a valid one signs)');

done_testing();
