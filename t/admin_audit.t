#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# The admin API's state changes other than a revocation now are in the
# transaction log as entries of their own, written and synced before the
# answer: an ACME EAB key made or disabled (its kid, never its HMAC key),
# a one-time SCEP challenge (its id, never the password), a SCEP request
# approved or rejected (its transaction id), a planned revocation (CA,
# serial, reason, planned time); then pkictl audit verify passes.  While
# the log cannot take an entry (its audit.lock is a directory, as in
# t/audit_reopen.t) each of them answers 503 and changes nothing in
# Redis, as a revocation does.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Digest::SHA qw(sha256_hex);
use PKITest;

my $t = PKITest->new;
$t->start_redis;
my $pki = $t->pki;
my $json = JSON::PP->new->canonical;

sub api {
    my ($method, $path, $data) = @_;
    my $r = $t->curl($method, 'https://127.0.0.1:' . $t->https_port
                     . "/pki/admin/$path", user => 'admin:admin',
                     data => defined $data ? $json->encode($data) : undef,
                     headers => defined $data
                                ? ['Content-Type: application/json'] : [],
                     quiet => 1);
    $r->{json} = eval { decode_json($r->{body}) } if length $r->{body};
    return $r;
}

sub enroll {
    my ($name) = @_;
    my ($r, $serial) = $t->enroll_serial($name);
    is($r->{code}, 200, "enrolled $name") or diag($r->{body});
    return $serial // '';
}

# a SCEP request waiting for the admin's decision, as core/scep.c keeps it
sub pending {
    my ($tid) = @_;
    my $k = 'pki:scep:pend:' . sha256_hex($tid);
    $t->redis('HSET', $k, 'status', 'pending', 'tid', $tid, 'subject',
              "CN=$tid", 'created', time);
    return $k;
}

sub keys_listed {
    my $r = api('GET', 'acme/eab');
    return { map { $_->{kid} => $_->{status} } @{ $r->{json}{keys} || [] } };
}

sub chal_keys { return scalar $t->redis_keys('pki:scep:chal:*') }

# ---- the log takes entries ----------------------------------------------

$t->start_nginx($t->render_conf('--workers', 1));

my $s1 = enroll('plan-1');
my $s2 = enroll('plan-2');
my $from = $t->audit_last_seq;

sub entry {
    my ($op, $field, $re) = @_;
    my ($e) = grep { ($_->{seq} // 0) > $from && $_->{type} eq 'request'
                     && ($_->{protocol} // '') eq 'admin'
                     && ($_->{requester} // '') eq 'admin'
                     && ($_->{operation} // '') eq $op
                     && ($_->{$field} // '') =~ $re }
              $t->audit_entries;
    return $e;
}

my $r = api('POST', 'acme/eab');
is($r->{code}, 201, 'EAB key made') or diag($r->{body});
my $kid = $r->{json}{kid} // '';
my $hmac = $r->{json}{hmac_key} // '';
my $e = entry('acme-eab-create', 'subject', qr/^\Q$kid\E\z/);
ok($e, '  its entry names the kid, as the admin\'s');
is($e->{outcome} // '', 'success', '  a success');

$r = api('POST', 'acme/eab');
is($r->{code}, 201, 'a second EAB key made');
my $kid2 = $r->{json}{kid} // '';

$r = api('DELETE', "acme/eab/$kid");
is($r->{code}, 200, 'EAB key disabled') or diag($r->{body});
ok(entry('acme-eab-disable', 'subject', qr/^\Q$kid\E\z/),
   '  its entry names the kid');

$r = api('POST', 'scep/challenges', { ttl => 300, cn => 'dev-a' });
is($r->{code}, 201, 'SCEP challenge made') or diag($r->{body});
my $pw = $r->{json}{challenge} // '';
my $id = $r->{json}{id} // '';
is($id, substr(sha256_hex($pw), 0, 16),
   '  its id: the start of the SHA-256 of the password');
$e = entry('scep-challenge-create', 'reason', qr/\Q$id\E/);
ok($e, '  its entry names the id');
is($e->{subject} // '', 'dev-a', '  and the cn');

pending('TID-OK');
$r = api('POST', 'scep/approve', { transaction_id => 'TID-OK' });
is($r->{code}, 200, 'SCEP request approved') or diag($r->{body});
ok(entry('scep-approve', 'reason', qr/\bTID-OK approved\z/),
   '  its entry names the transaction id and the decision');

pending('TID-NO');
$r = api('POST', 'scep/reject', { transaction_id => 'TID-NO' });
is($r->{code}, 200, 'SCEP request rejected') or diag($r->{body});
ok(entry('scep-reject', 'reason', qr/\bTID-NO rejected\z/),
   '  its entry names the transaction id and the decision');

my @at = gmtime(time + 7200);
my $at = sprintf('%04d-%02d-%02dT%02d:%02d:%02dZ', $at[5] + 1900, $at[4] + 1,
                 @at[3, 2, 1, 0]);
$r = api('POST', 'revoke', { serial => $s1, reason => 'superseded',
                             at => $at });
is($r->{code}, 200, 'revocation planned') or diag($r->{body});
$e = entry('revoke-plan', 'serial', qr/^\Q$s1\E\z/);
ok($e, '  its entry names the serial');
is($e->{ca} // '', 'issuing', '  the CA');
is($e->{reason} // '', "superseded, planned for $at",
   '  the reason and the planned time');

my $text = join '', map { slurp($_) // '' } glob("$pki/audit/audit*.log");
ok(length($hmac) && index($text, $hmac) < 0, 'no HMAC key in the log');
ok(length($pw) && index($text, $pw) < 0, 'no challenge password in the log');

$t->stop_nginx;

my ($rc, $out, $err) = run_cmd(["$PKITest::BUILD/pkictl", 'audit', 'verify',
                                "$pki/audit", '--pubkey',
                                "$pki/audit-pub.pem"]);
is($rc, 0, 'the log verifies') or diag("$out$err");

# ---- the log takes nothing: 503, nothing changed --------------------------

my $dir = $t->dir . '/audit-broken';
mkdir $dir or die "mkdir $dir: $!";
mkdir "$dir/audit.lock" or die "mkdir $dir/audit.lock: $!";
$t->start_nginx($t->render_conf('--workers', 1, '--audit', $dir));

my $before = keys_listed();
$r = api('POST', 'acme/eab');
is($r->{code}, 503, 'log unavailable: no EAB key made (503)')
    or diag($r->{body});
ok(!defined $r->{json}{hmac_key}, '  no HMAC key shown');
is_deeply(keys_listed(), $before, '  the keys are as they were');

$r = api('DELETE', "acme/eab/$kid2");
is($r->{code}, 503, 'no EAB key disabled (503)') or diag($r->{body});
is(keys_listed()->{$kid2}, 'active', '  still active');

my $nchal = chal_keys();
$r = api('POST', 'scep/challenges', { ttl => 300, cn => 'dev-b' });
is($r->{code}, 503, 'no SCEP challenge made (503)') or diag($r->{body});
ok(!defined $r->{json}{challenge}, '  no password shown');
is(chal_keys(), $nchal, '  no challenge in Redis');

my $pk = pending('TID-WAIT');
$r = api('POST', 'scep/approve', { transaction_id => 'TID-WAIT' });
is($r->{code}, 503, 'no SCEP approval (503)') or diag($r->{body});
is($t->redis_raw('HGET', $pk, 'status'), "pending\n", '  still pending');
$pk = pending('TID-WAIT-2');
$r = api('POST', 'scep/reject', { transaction_id => 'TID-WAIT-2' });
is($r->{code}, 503, 'no SCEP rejection (503)') or diag($r->{body});
is($t->redis_raw('HGET', $pk, 'status'), "pending\n", '  still pending');

my $gen = $t->redis_raw('GET', 'pki:{ca:issuing}:revgen');
$r = api('POST', 'revoke', { serial => $s2, reason => 'superseded',
                             at => $at });
is($r->{code}, 503, 'no revocation planned (503)') or diag($r->{body});
my $h = $t->redis_hash("pki:{ca:issuing}:cert:$s2");
ok(!defined $h->{plan_at}, '  no plan in the record');
is($t->redis_raw('ZSCORE', 'pki:{ca:issuing}:revplan', $s2), "\n",
   '  none in the CA\'s plan');
is($t->redis_raw('GET', 'pki:{ca:issuing}:revgen'), $gen,
   '  the revocation generation as it was');
is($h->{status}, 'good', '  the certificate good');

$t->stop_nginx;

done_testing();
