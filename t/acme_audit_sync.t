#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# ACME with carry=off: an issuance's entry is written by the transaction
# log itself, after its record is committed good, and is durable only at
# the log's next sync.  The finalization saved its order valid before its
# answer waited for that sync, so a poll of the order (another connection)
# read the certificate while its entry was not durable, and a crash then
# left a certificate out without its entry.  Now, while no sync of
# audit.log succeeds (fdatasync() fails with EIO through an LD_PRELOAD
# shim switched by a flag file):
#  - a poll of the order being finalized and a download of its
#    certificate hand out nothing (the order is never read valid);
#  - once the log syncs again, the order is valid, its certificate
#    downloads, and the log holds an entry naming its serial.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 qw(encode_base64url);
use POSIX ();
use Time::HiRes qw(time sleep);
use PKITest;
use ACMELoad;

plan(skip_all => 'CryptX / HTTP::Tiny not installed')
    if !ACMELoad::available();

my $t = PKITest->new;
$t->start_redis;

my $sflag = $t->dir . '/no-sync';

# fdatasync() of a file named audit.log fails while $sflag exists
my ($shim, $cerr) = $t->build_shim('nosync', <<'C', "-DSFLAG=\"$sflag\"");
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/syscall.h>

int
fdatasync(int fd)
{
    char         link[64], path[4096];
    size_t       len;
    ssize_t      l;
    struct stat  st;

    if (fd > 2 && stat(SFLAG, &st) == 0) {
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        l = readlink(link, path, sizeof(path) - 1);
        if (l > 0) {
            path[l] = '\0';
            len = strlen(path);
            if (len >= 10 && strcmp(path + len - 10, "/audit.log") == 0) {
                errno = EIO;
                return -1;
            }
        }
    }

    return (int) syscall(SYS_fdatasync, fd);
}
C
ok($shim, 'fdatasync() shim built') or diag($cerr);

my $hport = PKITest::free_port();
my $conf = $t->render_conf('--workers', 1, '--audit-params', 'carry=off',
                           '--acme-http-port', $hport,
                           '--acme-tls-port', PKITest::free_port());
$t->start_nginx($conf, preload => [$shim]);

my $www = $t->dir . '/www';
mkdir $www;
ACMELoad::start_http01($t, $hport, $www);
my $base = 'https://127.0.0.1:' . $t->https_port . '/acme';
my $c = ACMELoad->new(t => $t, www => $www, timeout => 30, base => $base);
ok($c->account->{ok}, 'an account');

my $name = 'sync.example';
my $r = $c->ready($name);
is($r->{ready}{json}{status} // '', 'ready', 'an order ready');
my $ourl = $r->{headers}{location} // '';
my $furl = $r->{json}{finalize} // '';
my ($acct, $oid) = $ourl =~ m{/order/([\w-]+)/([\w-]+)$};
my $curl = "$base/cert/" . ($acct // '') . '/' . ($oid // '');

my $csr = $t->dir . '/sync.csr';
PKITest::openssl_or_die('req', '-new', '-newkey', 'ec', '-pkeyopt',
    'ec_paramgen_curve:P-256', '-nodes', '-keyout', $t->dir . '/sync.key',
    '-subj', "/CN=$name", '-addext', "subjectAltName=DNS:$name",
    '-outform', 'DER', '-out', $csr);
my $der = PKITest::slurp($csr);

# no sync of audit.log succeeds from now on
PKITest::spew($sflag, '1');

# the finalization, on a connection of its own, in a child
my $out = $t->dir . '/finalize.status';
my $pid = fork();
die "fork: $!" if !defined $pid;
if ($pid == 0) {
    $c->{http} = HTTP::Tiny->new(verify_SSL => 1, keep_alive => 0,
        timeout => 30,
        SSL_options => { SSL_ca_file => $t->pki . '/root.pem' });
    $c->{nonce} = undef;
    my $f = $c->_post($furl, { csr => encode_base64url($der) });
    PKITest::spew($out, ($f->{status} // 0) . ' '
                        . ($f->{json}{status} // $f->{problem} // ''));
    POSIX::_exit(0);
}

# the certificate is recorded good (its entry written, not durable)
my $good = 0;
for (1 .. 100) {
    for my $k ($t->redis_keys('pki:{ca:issuing}:cert:*')) {
        $good = 1 if $t->redis('HGET', $k, 'status') =~ /good/;
    }
    last if $good;
    sleep 0.1;
}
ok($good, 'the certificate is recorded good while the log cannot sync');
sleep 0.5;

# another connection of the client, while the entry is not durable
$c->{http} = HTTP::Tiny->new(verify_SSL => 1, keep_alive => 0,
    timeout => 30, SSL_options => { SSL_ca_file => $t->pki . '/root.pem' });
$c->{nonce} = undef;
my $p = $c->_post($ourl, undef);
is($p->{json}{status} // '', 'processing', 'a poll of the order is '
   . 'processing before the entry is durable') or diag($p->{content});
ok(!defined $p->{json}{certificate}, '... and names no certificate');
my $d = $c->_post($curl, undef);
isnt($d->{status}, 200, 'the certificate does not download before the '
     . 'entry is durable') or diag($d->{content});
unlike($d->{content} // '', qr/BEGIN CERTIFICATE/, '... no certificate');
my $early = -e $out ? PKITest::slurp($out) : '';
like($early, qr/^(|503 .*)$/, 'the finalization has not answered, or '
     . 'answered 503 (its sync failed: the order stays processing)')
    or diag($early);

# the log syncs again: a poll completes the order, after an entry of its
# own when the finalization's sync failed
unlink $sflag;
$p = $c->_poll($ourl, 'valid', 10);
is($p->{json}{status} // '', 'valid', 'the order is then valid')
    or diag($p->{content});
my $dl = time + 30;
sleep 0.1 while waitpid($pid, POSIX::WNOHANG()) == 0 && time < $dl;
my $fin = -e $out ? PKITest::slurp($out) : 'none';
like($fin, qr/^(200 valid|503 )/, 'the finalization answered: valid, or '
     . '503') or diag($fin);
$d = $c->_post($p->{json}{certificate} // $curl, undef);
is($d->{status}, 200, 'its certificate downloads');
my $leaf = $d->{status} == 200
           ? $t->save_first_cert($d->{content}, 'sync') : undef;
my $serial = $leaf ? uc $t->x509_field($leaf, 'serial') : 'none';
$serial =~ s/^0+//;
my @named = grep { uc(($_->{serial} // '') =~ s/^0+//r) eq $serial }
            $t->audit_entries;
ok(@named >= 1, 'the transaction log names its serial')
    or diag(scalar(@named) . " entries for $serial");

$t->stop_all;
done_testing();
