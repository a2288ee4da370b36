#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A scripted, bounded fuzz of our directives' argument parsing in nginx
# (the glue side; the core side of template/CA lines is the libFuzzer
# target fuzz/fuzz_conf.c).  `nginx -t` costs a few hundred milliseconds,
# too slow for libFuzzer, so this draws a fixed number of mutations of the
# shared config with a fixed seed: an argument of one of our directives
# replaced by a hostile value, an argument dropped or added, the line
# duplicated or deleted.  Each mutated config must either pass `nginx -t`
# ("test is successful") or be refused with an [emerg] line naming the
# file; never a crash, a hang or a sanitizer report (nginx_test checks the
# latter).  PKI_FUZZ_CONFIG_CASES and PKI_FUZZ_CONFIG_SEED change the draw.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use PKITest;

my $cases = $ENV{PKI_FUZZ_CONFIG_CASES} || 40;
my $seed = $ENV{PKI_FUZZ_CONFIG_SEED} || 20261128;

my $t = PKITest->new;
my $base = $t->render_conf;
my $pki = $t->pki;

my ($ok, $out) = $t->nginx_test($t->write_conf($base, 'good.conf'));
ok($ok, 'the shared config passes nginx -t') or BAIL_OUT($out);

# our directives (http, blocks and locations); not nginx's own
my $ours = qr/^(\s*)(pki_\w+|est\w*|ocsp_responder\w*|acme\w*|scep\w*|matter\w*|key_types|subject|san
                   |validity|key_usage|extended_key_usage|basic_constraints
                   |extension|server_keygen|beyond_ca_expiry|certificate|chain
                   |alternate_chain
                   |key|templates|max_validity|crl_url|ocsp_url|module|token
                   |pin_file)((?:\s+[^;{}]*)?)\s*(;|\{)\s*$/x;

my @hostile = (
    '""', "''", 'x' x 4100, '-1', '0', '1', '99999999999999999999', '0x10',
    '1e9', '1.5', 'on', 'off', 'none', '%00', 'unix:', 'unix:/nonexistent/r.sock',
    'db=', 'db=-1', 'db=99999999999', 'timeout=0', 'timeout=-1s',
    'timeout=99999999999d', 'namespace=' . ('n' x 300), 'namespace=',
    'password_file=/nonexistent', 'zone=', 'zone=x:0', 'zone=x:1k',
    'zone=:16m', 'threads=0', '$request_uri', 'ec:P-256:', 'ec:', 'rsa:0-99999999',
    'rsa:4096-1024', 'rsa:', 'ed448', 'pkcs11:', 'pkcs11:token=',
    'pkcs11:token=nginx-pki;object=issuing;pin-value=1',
    'pkcs11:token=nginx-pki;object=%zz', 'ca:true', 'pathlen:-1',
    'pathlen:99999999999', '2.5.29.19', '1.2.3', '1.2.3.4.5 critical',
    'critical', 'zz', '0' x 5001, "\xc3\xa9", 'http://', 'https://[::1',
    '-', '*', 'CN', 'dns', 'copy', 'fixed', 'required', '999999d', '0s',
    "$pki/no-such-file", '/dev/null', '/', 'demo', 'issuing', 'device',
);

my @lines = split /\n/, $base;
my @idx = grep { $lines[$_] =~ $ours && $lines[$_] !~ /^\s*(?:ssl_|load_module)/ }
          0 .. $#lines;
ok(@idx >= 15, scalar(@idx) . ' lines of our directives to mutate');

srand($seed);
my (%seen, $crash);
for my $n (1 .. $cases) {
    my @l = @lines;
    my $i = $idx[int(rand(@idx))];
    my ($ind, $name, $args, $end) = $l[$i] =~ $ours;
    my @a = split ' ', $args;
    my $op = int(rand(5));
    my $v = $hostile[int(rand(@hostile))];
    my $what;

    if ($op == 0 && @a) {                       # replace an argument
        my $k = int(rand(@a));
        $what = "replace arg $k of $name";
        $a[$k] = $v;
    } elsif ($op == 1 && @a) {                  # drop the last argument
        $what = "drop the last arg of $name";
        pop @a;
    } elsif ($op == 2) {                        # add an argument
        $what = "add an arg to $name";
        push @a, $v;
    } elsif ($op == 3 && $end eq ';') {         # duplicate the line
        $what = "duplicate $name";
    } else {                                    # replace the first argument
        $what = "set $name to one hostile arg";
        @a = ($v);
    }

    my $line = $ind . join(' ', $name, @a) . " $end";
    if ($op == 3 && $end eq ';') {
        $l[$i] = "$l[$i]\n$l[$i]";
    } else {
        $l[$i] = $line;
    }

    my $conf = join("\n", @l) . "\n";
    next if $seen{$conf}++;

    my $file = $t->write_conf($conf, 'fuzz.conf');
    my ($pass, $o) = $t->nginx_test($file);
    my $short = length($what) > 60 ? substr($what, 0, 60) : $what;
    if ($pass) {
        like($o, qr/test is successful/, "case $n ($short): passes cleanly")
            or do { $crash = 1; diag($o) };
    } else {
        like($o, qr/\[emerg\].* in \Q$file\E:\d+/,
             "case $n ($short): refused with [emerg] file:line")
            or do { $crash = 1; diag("config line: $line\n$o") };
    }
    unlike($o, qr/Segmentation|core dumped|Aborted|signal \d+|\[alert\]/,
           "case $n: no crash") or $crash = 1;
}

$t->stop_all;
done_testing();
