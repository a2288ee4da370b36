#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# EST authentication by a client certificate whose planned revocation
# (admin API, "at") has come: refused at once, not only once the
# refresher (every few seconds) has carried the revocation out.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep time);
use PKITest;

my $t = PKITest->new;
$t->start_redis;
$t->start_nginx;

my ($csr, $key) = $t->make_csr('pl', subj => '/CN=planned');
my $r = $t->est_post('simpleenroll', $csr);
is($r->{code}, 200, 'enrolled') or diag($r->{body});
my $pem = $t->p7_to_pem($r->{body});
my $cert = $pem ? $t->save_first_cert($pem, 'pl') : undef;
my $serial = $cert ? $t->x509_field($cert, 'serial') : '';
like($serial, qr/^[0-9A-F]+$/, "serial $serial");

# plan the revocation a few seconds ahead
my $due = int(time) + 3;
my @at = gmtime($due);
my $at = sprintf('%04d-%02d-%02dT%02d:%02d:%02dZ', $at[5] + 1900, $at[4] + 1,
                 @at[3, 2, 1, 0]);
$r = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
                      . '/pki/admin/revoke',
              user => 'admin:admin',
              headers => ['Content-Type: application/json'],
              data => encode_json({ serial => $serial,
                                    reason => 'superseded', at => $at }));
is($r->{code}, 200, "revocation planned at $at") or diag($r->{body});

# before it is due the certificate still renews
$r = $t->est_post('simplereenroll', $csr, user => undef,
                  cert => $cert, key => $key);
is($r->{code}, 200, 'before the planned time: simplereenroll 200')
    or diag($r->{body});

# just after: refused, though the record may still say good
sleep($due - time + 0.05) if time < $due + 0.05;
$r = $t->est_post('simplereenroll', $csr, user => undef,
                  cert => $cert, key => $key);
my $st = $t->redis_hash("pki:{ca:issuing}:cert:$serial")->{status} // '';
is($r->{code}, 403, "after the planned time: simplereenroll 403 "
   . "(record: $st)") or diag($r->{body});
like($r->{body}, qr/revoked/, '  the body says revoked');

$t->stop_nginx;
done_testing();
