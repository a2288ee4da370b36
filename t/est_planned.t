#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A planned revocation (admin API, "at") counts from its time on, not only
# once the refresher (every few seconds) has carried it out: EST
# authentication by that client certificate is refused, and OCSP answers
# revoked (superseded, at the planned time).  Before it, OCSP's good answer
# ends (nextUpdate) no later than the planned time.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep time);
use Time::Piece;
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

# a good answer in the OCSP cache from before the plan: the plan drops
# it (revgen), so the answer after the plan ends at the planned time
my ($orc0, $oout0) = $t->_ocsp($cert);
like($oout0, qr/: good/, 'before the plan: OCSP good') or diag($oout0);

# plan the revocation a few seconds ahead
# far enough ahead for the checks before it on a loaded machine
my $due = int(time) + 9;
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

# before it is due: good, but only until then.  The cached answer from
# before the plan goes within the cache's revgen check + stale bound
# (1 s + 3 s here), as for a revocation; before the fix it stayed until
# worker 0 carried the plan out, after the planned time.
my ($orc, $oout, $nu, $nut);
while (1) {
    ($orc, $oout) = $t->_ocsp($cert);
    ($nu) = $oout =~ /Next Update: (\w+ +\d+ [\d:]+ \d+) GMT/;
    $nut = $nu ? Time::Piece->strptime($nu =~ s/ +/ /gr,
                                       '%b %d %H:%M:%S %Y')->epoch : 0;
    last if ($nut > 0 && $nut <= $due) || time > $due - 3;
    sleep(0.5);
}
like($oout, qr/: good/, 'before the planned time: OCSP good') or diag($oout);
ok($nut > 0 && $nut <= $due, "  its nextUpdate ($nu) is no later than the "
   . 'planned time') or diag($oout);

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

($orc, $oout) = $t->_ocsp($cert);
$st = $t->redis_hash("pki:{ca:issuing}:cert:$serial")->{status} // '';
like($oout, qr/: revoked/, "after the planned time: OCSP revoked (record: "
     . "$st)") or diag($oout);
like($oout, qr/Reason: superseded/, '  for the planned reason');

$t->stop_nginx;
done_testing();
