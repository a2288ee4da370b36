#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# serverkeygen leaves no copy of the private key it sent in the worker's
# memory: after each answer (HTTP/1.1 over TLS), no 64-column base64 line
# of the key part is found in the writable memory of any worker.  nginx's
# TLS send buffer (c->ssl->buf), freed without wiping, held one until the
# module sent that answer unbuffered.  The same for a Matter keygen batch
# (three DACs with their PKCS#8 keys in one JSON answer).  gzip is on for
# both answers' types and the clients accept it: the answers go out
# uncompressed, since deflate's window, freed unwiped, would keep the key.
# Reads /proc/PID/mem of the workers (children of a child of this test:
# root, or ptrace allowed).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep);
use JSON::PP;
use PKITest;

my $t = PKITest->new;
$t->make_matter_pki($t->pki);
$t->start_redis;
my $conf = $t->render_conf;
$conf =~ s{(\nhttp \{\n)}{$1    gzip on;\n    gzip_min_length 1;\n}
    or die 'no http block';
$conf =~ s{(\nhttp \{\n)}
          {$1    gzip_types multipart/mixed application/json;\n};
$t->start_nginx($conf);
# curl asks for gzip and inflates what comes so
my @gzip = ('--compressed');

my @workers = $t->workers_of($t->{children}{nginx}, 'worker');
ok(@workers > 0, 'nginx has workers');

# how often the strings of @$needles are found in the writable mappings
# of process $pid; undef if its memory cannot be read
sub hits {
    my ($pid, $needles) = @_;
    no warnings 'portable';              # 64-bit addresses with hex()
    open(my $maps, '<', "/proc/$pid/maps") or return undef;
    open(my $mem, '<:raw', "/proc/$pid/mem") or return undef;
    my ($n, $read) = (0, 0);
    while (my $l = <$maps>) {
        my ($from, $to, $perm) = $l =~ /^([0-9a-f]+)-([0-9a-f]+) (\S+)/
            or next;
        next if $perm !~ /^rw/;
        my ($s, $e) = (hex $from, hex $to);
        next if $e - $s > 1 << 30;       # the sanitizers' shadow memory
        sysseek($mem, $s, 0) or next;
        my $got = sysread($mem, my $buf, $e - $s) or next;
        $read += $got;
        for my $x (@$needles) {
            my $pos = 0;
            while (($pos = index($buf, $x, $pos)) >= 0) {
                $n++;
                $pos++;
            }
        }
    }
    return $read ? $n : undef;
}

SKIP: {
    skip "cannot read the workers' memory (/proc/PID/mem)", 20
        if !defined hits($workers[0], ['x']);

    # gzip does work on this server: a JSON answer without a secret
    my $r = $t->curl('GET', 'https://127.0.0.1:' . $t->https_port
                     . '/pki/admin/certificates?limit=5',
                     user => 'admin:admin',
                     extra => \@gzip);
    is($r->{headers}{'content-encoding'} // '', 'gzip',
       'gzip on: a JSON answer without a key is compressed');

    for my $i (1 .. 3) {
        my ($csr) = $t->make_csr("kg$i", subj => "/CN=kg$i");
        my $r = $t->est_post('serverkeygen', $csr, extra => \@gzip);
        is($r->{code}, 200, "serverkeygen $i: 200") or diag($r->{body});
        ok(!exists $r->{headers}{'content-encoding'}, '  not compressed');
        my ($part) = $r->{body}
            =~ m{application/pkcs8\r\n[^\r]*base64\r\n\r\n(.*?)\r\n--}s;
        my @lines = grep { length == 64 } split /\r\n/, $part // '';
        ok(@lines >= 2, "  the key part has full lines");
        # the answer was sent and its request freed (curl has closed)
        sleep 0.5;
        my $n = 0;
        $n += hits($_, \@lines) // 0 for @workers;
        is($n, 0, '  no line of the key in any worker\'s memory');
    }

    for my $i (1 .. 2) {
        my $r = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
                         . '/matter/dac/batch', data => '{"count":3}',
                         user => 'demo:demo',
                         headers => ['Content-Type: application/json'],
                         extra => \@gzip,
                         max_time => 60);
        is($r->{code}, 200, "Matter keygen batch $i: 200")
            or diag($r->{body});
        ok(!exists $r->{headers}{'content-encoding'}, '  not compressed');
        my $keys = eval { decode_json($r->{body})->{keys} } || [];
        is(scalar @$keys, 3, '  three keys');
        # one 64-character run from inside each key's base64
        my @runs = map { substr($_, 40, 64) } @$keys;
        sleep 0.5;
        my $n = 0;
        $n += hits($_, \@runs) // 0 for @workers;
        is($n, 0, '  no part of a key in any worker\'s memory');
    }
}

$t->stop_nginx;
done_testing;
