#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# An OCSP request of many CertIDs reads its records in one Redis round
# trip, not one per CertID.  The oracle is Redis's own count of the read
# events it served (INFO stats total_reads_processed: a pipelined batch
# arrives in one read, a command sent after the previous answer in one
# read each), taken around one `openssl ocsp` request of 100 CertIDs (a
# good certificate, a revoked one, 98 serials never issued): the fewest
# reads over a few tries (other traffic of nginx's timers only adds) must
# stay far below 100.  The answers are checked too (good, revoked with its
# reason, unknown), and a Redis that fails makes the whole answer tryLater.

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
my @trust = ('-CAfile', "$pki/root.pem", '-verify_other', "$pki/issuing.pem");

sub enroll { return $t->enroll_cn(@_) }

sub ocsp { return $t->openssl_ocsp(@_) }

sub stats {
    my %s = $t->redis_raw('INFO', 'stats') =~ /^(\w+):(\d+)\r?$/mg;
    return \%s;
}

my $a = enroll('batch-a');
my $b = enroll('batch-b');
$t->give_up('enrollment failed') if !$a || !$b;
my $bserial = $t->x509_field($b, 'serial');

my $rv = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
                  . '/pki/admin/revoke', user => 'admin:admin',
                  data => qq({"serial":"$bserial","reason":"keyCompromise"}),
                  headers => ['Content-Type: application/json']);
is($rv->{code}, 200, 'b revoked (admin API)') or diag($rv->{body});

my @serials = map { sprintf('0x%x', 0x7000 + $_) } 1 .. 98;
my @ids = ('-cert', $a, '-cert', $b, map { ('-serial', $_) } @serials);
my $n = 2 + @serials;

# each try: a request with a nonce (never answered from the cache)
my ($best, $out);
for my $try (1 .. 3) {
    my $s0 = stats();
    my ($rc, $o) = ocsp('-issuer', "$pki/issuing.pem", @ids, '-url', $url,
                        @trust);
    my $s1 = stats();
    is($rc, 0, "try $try: openssl ocsp exit 0") or diag($o);
    my $reads = $s1->{total_reads_processed} - $s0->{total_reads_processed};
    my $cmds = $s1->{total_commands_processed}
               - $s0->{total_commands_processed};
    note("try $try: $n CertIDs: $reads Redis read events, $cmds commands "
         . '(with the INFO that measures)');
    $best = $reads if !defined $best || $reads < $best;
    $out = $o;
}

ok($best < 10, "$n CertIDs: the records are read in one round trip "
   . "(fewest Redis read events over 3 tries: $best, one per CertID "
   . "would be $n or more)");

like($out, qr/Response verify OK/, "$n CertIDs: response verifies")
    or diag($out);
like($out, qr/\Q$a\E: good/, "$n CertIDs: the good certificate is good");
like($out, qr/\Q$b\E: revoked.*?Reason: keyCompromise/s,
     "$n CertIDs: the revoked one is revoked, with its reason");
my $unknown = () = $out =~ /^0x7[0-9a-f]{3}: unknown$/mg;
is($unknown, 98, "$n CertIDs: the 98 serials never issued are unknown");
unlike($out, qr/^0x7[0-9a-f]{3}: (?:good|revoked)/m,
       "$n CertIDs: no serial never issued is good or revoked");

# one record the store cannot read (not a hash) fails the whole request
# as a Redis failure: tryLater, no partial answer
$t->redis('SET', 'pki:{ca:issuing}:cert:' . uc(substr($serials[50], 2)),
          'x');
my ($rc, $o) = ocsp('-issuer', "$pki/issuing.pem", @ids, '-url', $url,
                    @trust);
like($o, qr/trylater/i, 'a record Redis refuses to read: tryLater')
    or diag($o);
unlike($o, qr/: (?:good|revoked|unknown)/, '... and no status at all');
$t->redis('DEL', 'pki:{ca:issuing}:cert:' . uc(substr($serials[50], 2)));

($rc, $o) = ocsp('-issuer', "$pki/issuing.pem", @ids, '-url', $url, @trust);
like($o, qr/\Q$a\E: good/, 'after the key is gone: good again') or diag($o);

$t->stop_redis;
($rc, $o) = ocsp('-issuer', "$pki/issuing.pem", @ids, '-url', $url, @trust);
like($o, qr/trylater/i, 'Redis down: tryLater') or diag($o);
unlike($o, qr/: good/, 'Redis down: never good');

$t->stop_nginx;
my $log = slurp($t->error_log) // '';
unlike($log, qr/\[(?:alert|crit|emerg)\]/, 'no alert/crit in the error log')
    or diag($log);

done_testing();
