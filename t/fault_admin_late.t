#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# An admin change that Redis makes after the admin was told 503 (nginx
# talks to Redis through t/lib/redis_drop_proxy.py in its "HOLD" mode: the
# change's script waits in the proxy past timeout=, then reaches Redis)
# is not lost to the transaction log: the change is marked not yet logged
# until its entry is durable, and a retry that finds it made and marked
# answers 200 and writes the missing entry (it was 409 "already revoked",
# or 200 with no entry, and the log never had the change):
#  - a certificate's revocation;
#  - an ACME EAB key's disabling;
#  - an ACME account's revocation;
#  - a hold (the revocation's script) and a SCEP request's approval.
# Each time exactly one success entry, and a further retry changes and
# logs nothing more.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(sleep time);
use PKITest;

plan(skip_all => 'python3 not installed') if !-x '/usr/bin/python3';

my $t = PKITest->new;
$t->start_redis;
my $arm = $t->dir . '/arm';
my $proxy = $t->start_redis_proxy($arm);

my $conf = $t->render_conf('--workers', 1, '--redis-timeout', '1s');
my $sock = $t->redis_sock;
$conf =~ s{\Q$sock\E}{$proxy}g or die 'no Redis socket in the config';
$t->start_nginx($conf);

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

# the success entries after seq FROM that match CODE
sub entries {
    my ($from, $code) = @_;
    return grep { ($_->{seq} // 0) > $from
                  && ($_->{outcome} // '') eq 'success' && $code->($_) }
           $t->audit_entries;
}

# the admin's request, its script held in the proxy until the admin has
# given up; then the script is let through and has run
sub late {
    my ($what, $pattern, $method, $path, $data, $done) = @_;
    unlink "$arm.release";
    PKITest::spew($arm, join("\n", 'HOLD', @$pattern) . "\n");
    my $t0 = time;
    my $r = api($method, $path, $data);
    is($r->{code}, 503, "$what: held past timeout=, the admin gets 503")
        or diag($r->{body});
    is($r->{headers}{'retry-after'} // '', '5',
       "$what: ... with Retry-After: 5");
    ok(!-e $arm, "$what: ... the proxy held the change");
    PKITest::spew("$arm.release", '');
    my $ok = 0;
    for (1 .. 100) { last if $ok = $done->(); sleep 0.05 }
    ok($ok, "$what: ... which Redis made later");
    unlink "$arm.release";
}

my ($r, $from);

# --- a certificate's revocation ----------------------------------------------

{
    my ($er, $serial) = $t->enroll_serial('late-revoke');
    is($er->{code}, 200, 'enrolled') or diag($er->{body});
    $serial //= '';
    my $key = "pki:{ca:issuing}:cert:$serial";
    $from = $t->audit_last_seq;
    late('revoke', ['rev_req', $serial], 'POST', 'revoke',
         { serial => $serial, reason => 'keyCompromise' },
         sub { ($t->redis_hash($key)->{status} // '') eq 'revoked' });
    is(scalar(entries($from, sub { ($_[0]{type} // '') eq 'revoke'
                                   && ($_[0]{serial} // '') eq $serial })),
       0, 'revoke: no success entry yet');
    ok($t->redis_hash($key)->{rev_unlogged}, '... the record is marked');

    $r = api('POST', 'revoke', { serial => $serial,
                                 reason => 'keyCompromise' });
    is($r->{code}, 200, 'revoke: the retry answers 200 (not 409)')
        or diag($r->{body});
    is($r->{json}{reason} // '', 'keyCompromise', '... keyCompromise');
    my @e = entries($from, sub { ($_[0]{type} // '') eq 'revoke'
                                 && ($_[0]{serial} // '') eq $serial });
    is(scalar @e, 1, '... and the log has its one success entry')
        or diag(explain(\@e));
    ok(!exists $t->redis_hash($key)->{rev_unlogged}, '... the mark gone');

    $r = api('POST', 'revoke', { serial => $serial,
                                 reason => 'keyCompromise' });
    is($r->{code}, 409, 'revoke: once more: 409 already revoked');
    is(scalar(entries($from, sub { ($_[0]{type} // '') eq 'revoke'
                                   && ($_[0]{serial} // '') eq $serial })),
       1, '... no second entry');
}

# --- a hold (the same script as a revocation) --------------------------------

{
    my ($er, $serial) = $t->enroll_serial('late-hold');
    is($er->{code}, 200, 'enrolled') or diag($er->{body});
    $serial //= '';
    my $key = "pki:{ca:issuing}:cert:$serial";
    my $held = sub { ($_[0]{type} // '') eq 'revoke'
                     && ($_[0]{serial} // '') eq $serial };
    $from = $t->audit_last_seq;
    late('hold', ['rev_req', $serial], 'POST', 'revoke',
         { serial => $serial, reason => 'certificateHold' },
         sub { ($t->redis_hash($key)->{reason} // '') eq '6' });
    $r = api('POST', 'revoke', { serial => $serial,
                                 reason => 'certificateHold' });
    is($r->{code}, 200, 'hold: the retry answers 200 (not 409)')
        or diag($r->{body});
    is(scalar(entries($from, $held)), 1, '... and writes the one entry');
}

# --- an EAB key's disabling ---------------------------------------------------

{
    $r = api('POST', 'acme/eab');
    is($r->{code}, 201, 'EAB key made') or diag($r->{body});
    my $kid = $r->{json}{kid} // '';
    my $key = "pki:acme:eab:$kid";
    $from = $t->audit_last_seq;
    my $dis = sub { $_[0]->{type} eq 'request'
                    && ($_[0]{operation} // '') eq 'acme-eab-disable'
                    && ($_[0]{subject} // '') eq $kid };
    late('EAB disable', ["'disabled'", $kid], 'DELETE', "acme/eab/$kid",
         undef,
         sub { ($t->redis_hash($key)->{status} // '') eq 'disabled' });
    is(scalar(entries($from, $dis)), 0, 'EAB disable: no entry yet');

    $r = api('DELETE', "acme/eab/$kid");
    is($r->{code}, 200, 'EAB disable: the retry answers 200')
        or diag($r->{body});
    is(scalar(entries($from, $dis)), 1, '... and writes the one entry');
    ok(!exists $t->redis_hash($key)->{unlogged}, '... the mark gone');

    $r = api('DELETE', "acme/eab/$kid");
    is($r->{code}, 200, 'EAB disable: once more: 200 (disabled already)');
    is(scalar(entries($from, $dis)), 1, '... no second entry');
}

# --- an ACME account's revocation ---------------------------------------------

{
    my $id = 'lateAcct0123456789';
    my $key = "pki:{acme:$id}:acct";
    $t->redis('SET', $key, $json->encode({ status => 'valid',
              contact => [], created => time, rev => 1 }));
    $from = $t->audit_last_seq;
    my $rev = sub { $_[0]->{type} eq 'request'
                    && ($_[0]{operation} // '') eq 'acme-account-revoke'
                    && ($_[0]{subject} // '') eq $id };
    late('account revoke', ['"status":"revoked"', $id], 'POST',
         "acme/accounts/$id", { status => 'revoked' },
         sub { ($t->redis_raw('GET', $key) // '') =~ /"status":"revoked"/ });
    is(scalar(entries($from, $rev)), 0, 'account revoke: no entry yet');

    $r = api('POST', "acme/accounts/$id", { status => 'revoked' });
    is($r->{code}, 200, 'account revoke: the retry answers 200')
        or diag($r->{body});
    is($r->{json}{status} // '', 'revoked', '... revoked');
    is(scalar(entries($from, $rev)), 1, '... and writes the one entry');
    unlike($t->redis_raw('GET', $key) // '', qr/unlogged/,
           '... the mark gone');

    $r = api('POST', "acme/accounts/$id", { status => 'revoked' });
    is($r->{code}, 200, 'account revoke: once more: 200');
    is(scalar(entries($from, $rev)), 1, '... no second entry');
}

# --- a SCEP request's approval -----------------------------------------------

{
    my $tid = 'TID-LATE';
    my $key = 'pki:scep:pend:' . sha256_hex($tid);
    $t->redis('HSET', $key, 'status', 'pending', 'tid', $tid, 'subject',
              "CN=$tid", 'created', time);
    $from = $t->audit_last_seq;
    my $ap = sub { $_[0]->{type} eq 'request'
                   && ($_[0]{operation} // '') eq 'scep-approve'
                   && ($_[0]{reason} // '') =~ /\bTID-LATE approved\z/ };
    late('SCEP approve', [sha256_hex($tid), 'approved'], 'POST',
         'scep/approve', { transaction_id => $tid },
         sub { ($t->redis_hash($key)->{status} // '') eq 'approved' });
    is(scalar(entries($from, $ap)), 0, 'SCEP approve: no entry yet');

    $r = api('POST', 'scep/approve', { transaction_id => $tid });
    is($r->{code}, 200, 'SCEP approve: the retry answers 200 (not 409)')
        or diag($r->{body});
    is(scalar(entries($from, $ap)), 1, '... and writes the one entry');
    ok(!exists $t->redis_hash($key)->{unlogged}, '... the mark gone');

    $r = api('POST', 'scep/approve', { transaction_id => $tid });
    # (409 no longer pending for a real request; this hand-made record
    # has no CSR, which the look that says so finds corrupt)
    isnt($r->{code}, 200, 'SCEP approve: once more: refused');
    is(scalar(entries($from, $ap)), 1, '... no second entry');
}

unlike(PKITest::slurp($t->error_log) // '',
       qr/\[(alert|crit|emerg)\]|exited on signal/,
       'no alert in the error log');

$t->stop_all;
done_testing();
