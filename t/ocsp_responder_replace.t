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
use PKITest;

my $t = PKITest->new;
$t->start_redis;
$t->start_nginx;
my $pki = $t->pki;
my $dir = $t->dir;
my $url = 'http://127.0.0.1:' . $t->http_port . '/ocsp';

my $a = $t->enroll_cn('repl-a');
$t->give_up('enrollment failed') if !$a;

$t->responder_cert('old', 'OCSP responder expired', time - 7200,
                   time - 3600);
$t->responder_cert('new', 'OCSP responder replacement', time - 3600,
                   time + 86400);

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
