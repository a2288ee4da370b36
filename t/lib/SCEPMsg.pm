# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Helpers of the SCEP CMS-level tests: builds t/lib/scepmsg.c (an
# OpenSSL-only SCEP client) and drives it.

package SCEPMsg;

use strict;
use warnings;
use Test::More;
use JSON::PP;
use PKITest;
use Exporter 'import';

our @EXPORT = qw(scep_setup key req send_msg rep records fails http_fails
                 challenge);

my ($t, $dir, $pki, $tool, $base, $ra, $admin, $k1, $k2);
my $n = 0;

# scep_setup($t, $conf) after PKITest->new: builds the tool, starts Redis
# and nginx; returns ($base, $admin, $k1, $k2, $tool)
sub scep_setup {
    my ($tt, $conf) = @_;
    $t = $tt;
    $dir = $t->dir;
    $pki = $t->pki;
    $tool = "$dir/scepmsg";
    my ($crc, $cout, $cerr) = run_cmd(['cc', '-O1', '-o', $tool,
        "$PKITest::TOP/t/lib/scepmsg.c", '-lcrypto', '-lpthread']);
    BAIL_OUT("cannot build scepmsg: $cerr") if $crc != 0;
    $t->start_redis;
    $t->start_nginx($conf);
    $base = 'http://127.0.0.1:' . $t->http_port;
    $ra = "$pki/ra.pem";
    $admin = 'https://127.0.0.1:' . $t->https_port . '/pki/admin';
    $k1 = key('k1');
    $k2 = key('k2');
    return ($base, $admin, $k1, $k2, $tool);
}

sub key {
    my ($name, $bits) = @_;
    my $f = "$dir/$name.key";
    my ($rc, $o, $e) = run_cmd(['openssl', 'genpkey', '-algorithm', 'RSA',
        '-pkeyopt', 'rsa_keygen_bits:' . ($bits || 2048), '-out', $f]);
    die "genpkey: $e" if $rc;
    return $f;
}

# req(%o): builds a message; returns its file
sub req {
    my (%o) = @_;
    my $f = "$dir/m" . ++$n . '.der';
    my @a = ($tool, 'req', '--rcpt', $o{rcpt} || $ra, '--key', $o{key} || $k1,
             '--out', $f);
    for my $k (qw(type cn challenge cert signkey inner cipher digest tid
                  corrupt issuer getcert signing-time msgtype-str csr
                  extra-certs envelope digest-oid)) {
        push @a, "--$k", $o{$k} if defined $o{$k};
    }
    push @a, "--$_" for @{ $o{flags} || [] };
    my ($rc, $out, $err) = run_cmd(\@a);
    die "scepmsg req: $err" if $rc;
    return $f;
}

# send(file, path) -> curl result
sub send_msg {
    my ($f, $path) = @_;
    return $t->curl('POST', $base . ($path || '/scep')
                    . '?operation=PKIOperation', data_file => $f,
                    headers => ['Content-Type: application/x-pki-message']);
}

# rep(result, reqfile, key, [signer cert]) -> {status, failinfo, ...}
sub rep {
    my ($r, $reqf, $key, $cert) = @_;
    my $in = "$dir/r" . ++$n . '.der';
    my $out = "$dir/c$n.pem";
    spew($in, $r->{body});
    my @a = ($tool, 'rep', '--in', $in, '--rcpt', $ra, '--key', $key || $k1,
             '--req', $reqf, '--out', $out);
    push @a, '--cert', $cert if $cert;
    my ($rc, $o, $e) = run_cmd(\@a);
    my %h = map { split /=/, $_, 2 } split ' ', $o;
    $h{file} = $out if -s $out;
    $h{raw} = $o . $e;
    return \%h;
}

sub records {
    return scalar grep { /:cert:/ } $t->redis_keys('pki:{ca:issuing}:cert:*');
}

# expect a FAILURE CertRep with failInfo $fi
sub fails {
    my ($name, $f, $fi, %o) = @_;
    my $before = records();
    my $r = send_msg($f, $o{path});
    is($r->{code}, 200, "$name: 200 (a CertRep)") or diag($r->{body});
    my $h = rep($r, $f, $o{key}, $o{cert});
    is($h->{status}, 2, "$name: pkiStatus FAILURE") or diag($h->{raw});
    is($h->{failinfo}, $fi, "$name: failInfo $fi");
    is($h->{sig}, 'ok', "$name: CertRep signed by the RA");
    is($h->{nonce}, 'ok', "$name: senderNonce echoed");
    is(records(), $before, "$name: no certificate issued");
    like(slurp($t->error_log) // '', $o{log}, "$name: error log")
        if $o{log};
}

sub http_fails {
    my ($name, $f, $code, %o) = @_;
    my $before = records();
    my $r = $o{data} ? $t->curl('POST', "$base/scep?operation=PKIOperation",
                                data => $o{data})
                     : send_msg($f);
    is($r->{code}, $code, "$name: HTTP $code");
    is(records(), $before, "$name: no certificate issued");
}


sub challenge {
    my ($json) = @_;
    my $r = $t->curl('POST', "$admin/scep/challenges", user => 'admin:admin',
                     data => $json,
                     headers => ['Content-Type: application/json']);
    is($r->{code}, 201, "admin: challenge $json") or diag($r->{body});
    return eval { decode_json($r->{body})->{challenge} } // '';
}


1;
