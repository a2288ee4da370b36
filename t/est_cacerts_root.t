#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# EST /cacerts and the trust anchor (RFC 7030 4.1.3: the chain up to and
# including the root where it is known).  /cacerts serves the CA
# certificate and its "chain" file; a chain file that stops below the root
# (no root anywhere in the CA's configuration) leaves clients that take
# their trust from /cacerts without one, and nginx -t now says so, once
# per CA, naming the issuer missing.  A chain that reaches a root (in any
# order, through an intermediate) is served whole and draws no warning.
# SCEP GetCACert with "scep_ca_chain on" serves the same and is warned
# about the same way (pki_ca_anchor_missing in core).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use PKITest;

my $t = PKITest->new;
$t->start_redis;

my $dir = $t->dir;
my $x = "$dir/three";
mkdir $x or die "mkdir $x: $!";

# a root, an intermediate under it and an issuing CA under that (file keys)
PKITest::spew("$x/ext.cnf", <<'EOF');
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
PKITest::openssl_or_die('req', '-x509', '-newkey', 'ec', '-pkeyopt',
    'ec_paramgen_curve:P-256', '-nodes', '-keyout', "$x/root.key",
    '-subj', '/CN=Three Root', '-days', '30', '-out', "$x/root.pem",
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
for my $c (['mid', 'Three Mid', 'root'], ['ca', 'Three Issuing', 'mid']) {
    my ($n, $cn, $up) = @$c;
    PKITest::openssl_or_die('req', '-new', '-newkey', 'ec', '-pkeyopt',
        'ec_paramgen_curve:P-256', '-nodes', '-keyout', "$x/$n.key",
        '-subj', "/CN=$cn", '-out', "$x/$n.csr");
    PKITest::openssl_or_die('x509', '-req', '-in', "$x/$n.csr", '-CA',
        "$x/$up.pem", '-CAkey', "$x/$up.key", '-CAcreateserial', '-days',
        '20', '-extfile', "$x/ext.cnf", '-extensions', 'ca', '-out',
        "$x/$n.pem");
}
PKITest::spew("$x/mid-only.pem", PKITest::slurp("$x/mid.pem"));
# the root first: the file may hold them in any order
PKITest::spew("$x/mid-root.pem",
              PKITest::slurp("$x/root.pem") . PKITest::slurp("$x/mid.pem"));

# CONF with CA "three" (chain FILE) served under the label "three", a
# second label on the same CA, and "issuing" with its chain line or not
sub conf {
    my ($chain, $issuing_chain) = @_;
    (my $c = $t->render_conf) =~ s/(\n    pki_ca issuing \{)/
    pki_ca three {
        certificate $x\/ca.pem;
        chain $chain;
        key $x\/ca.key;
        templates device;
    }
$1/ or die 'no pki_ca issuing';
    $c =~ s/(\n\s*est issuing device;)/$1
            est_label three three device;
            est_label three-again three device;/ or die 'no est issuing';
    if (!$issuing_chain) {
        $c =~ s/\n\s*chain \S+\/chain\.pem;// or die 'no issuing chain';
    }
    return $c;
}

sub nginx_t {
    my ($conf) = @_;
    my $f = $t->write_conf($conf, 'test.conf');
    return $t->nginx_test($f);
}

sub cacerts_subjects {
    my ($label) = @_;
    my $r = $t->curl('GET', $t->est_url('cacerts', $label));
    return ($r->{code}, join ',', sort
            map { /subject=.*?CN\s*=\s*([^,\n]+)/ ? $1 : () }
            split /\n/, $t->p7_to_pem($r->{body}) // '');
}

my $warn = qr/\[warn\].*est: CA "([^"]+)": its chain does not reach a root/;

# 1. the chain file stops at the intermediate
my ($ok, $out) = nginx_t(conf("$x/mid-only.pem", 1));
ok($ok, 'nginx -t: a chain without its root is accepted') or diag($out);
my @w = $out =~ /$warn/g;
is_deeply(\@w, ['three'], '  one warning, for CA "three" (two labels use '
          . 'it), none for "issuing"') or diag($out);
like($out, qr/no certificate of "\/CN=Three Root".*RFC 7030 4\.1\.3/,
     '  naming the issuer missing and the RFC') or diag($out);
like($out, qr/\[warn\].*its chain does not reach a root.* in \S+test\.conf:\d+/,
     '  with the file and line') or diag($out);

$t->start_nginx(conf("$x/mid-only.pem", 1));
my ($code, $subj) = cacerts_subjects('three');
is($code, 200, '/cacerts: 200 all the same');
is($subj, 'Three Issuing,Three Mid', '  the CA and its intermediate');
($code, $subj) = cacerts_subjects();
is($code, 200, '/cacerts of "issuing" (chain: issuing + root): 200');
like($subj, qr/^nginx-pki Issuing CA,.*Root/i, '  it carries the root');
$t->stop_nginx;

# 2. the chain reaches the root (root first in the file): no warning, and
# /cacerts verifies up to it
($ok, $out) = nginx_t(conf("$x/mid-root.pem", 1));
ok($ok, 'nginx -t: chain with the root');
unlike($out, $warn, '  no warning') or diag($out);
$t->start_nginx(conf("$x/mid-root.pem", 1));
($code, $subj) = cacerts_subjects('three');
is($subj, 'Three Issuing,Three Mid,Three Root', '/cacerts: CA, intermediate '
   . 'and root');
my $r = $t->curl('GET', $t->est_url('cacerts', 'three'));
PKITest::spew("$dir/cacerts.pem", $t->p7_to_pem($r->{body}) // '');
my ($rc, $vout, $verr) = run_cmd(['openssl', 'verify', '-CAfile',
    "$x/root.pem", '-untrusted', "$dir/cacerts.pem", "$x/ca.pem"]);
like($vout . $verr, qr/: OK/, '  the CA verifies up to the root it carries');
$t->stop_nginx;

# 3. a CA under a root with no chain file at all ("issuing" without its
# chain line): warned too
($ok, $out) = nginx_t(conf("$x/mid-root.pem", 0));
ok($ok, 'nginx -t: "issuing" without a chain file');
@w = $out =~ /$warn/g;
is_deeply(\@w, ['issuing'], '  one warning, for "issuing"') or diag($out);

# 4. SCEP GetCACert with "scep_ca_chain on" (no RA) serves the CA and its
# chain file the same way: an RSA CA under the intermediate (SCEP without
# an RA needs an RSA CA), used by two locations
PKITest::openssl_or_die('req', '-new', '-newkey', 'rsa:2048', '-nodes',
    '-keyout', "$x/scep.key", '-subj', '/CN=Three SCEP',
    '-out', "$x/scep.csr");
PKITest::openssl_or_die('x509', '-req', '-in', "$x/scep.csr", '-CA',
    "$x/mid.pem", '-CAkey', "$x/mid.key", '-CAcreateserial', '-days', '20',
    '-extfile', "$x/ext.cnf", '-extensions', 'ca', '-out', "$x/scep.pem");

sub scep_conf {
    my ($chain, $flag) = @_;
    my $pki = $t->pki;
    (my $c = $t->render_conf) =~ s/(\n    pki_ca issuing \{)/
    pki_ca threescep {
        certificate $x\/scep.pem;
        chain $chain;
        key $x\/scep.key;
        templates scep;
    }
$1/ or die 'no pki_ca issuing';
    my $loc = '';
    for my $l ('/scep-three', '/scep-three-again') {
        $loc .= "
        location $l {
            scep threescep scep;
            scep_ca_chain $flag;
            scep_challenge file=$pki\/scep-challenge;
        }
";
    }
    $c =~ s/(\n        location \/scep \{)/\n$loc$1/ or die 'no location /scep';
    return $c;
}

sub getcacert {
    my $r = $t->curl('GET', 'http://127.0.0.1:' . $t->http_port
                     . '/scep-three?operation=GetCACert');
    my ($rc, $out) = run_cmd(['openssl', 'pkcs7', '-inform', 'DER',
                              '-print_certs'], stdin => $r->{body});
    return ($r->{code}, $r->{headers}{'content-type'} // '', join ',', sort
            map { /subject=.*?CN\s*=\s*([^,\n]+)/ ? $1 : () }
            split /\n/, $out // '');
}

my $swarn = qr/\[warn\].*scep: CA "([^"]+)": its chain does not reach a root/;

my $sc = scep_conf("$x/mid-only.pem", 'on');
my ($sline) = grep { (split /\n/, $sc)[$_ - 1] =~ /scep threescep scep;/ }
              1 .. scalar(split /\n/, $sc);
($ok, $out) = nginx_t($sc);
ok($ok, 'nginx -t: scep_ca_chain on, a chain without its root: accepted')
    or diag($out);
@w = $out =~ /$swarn/g;
is_deeply(\@w, ['threescep'], '  one SCEP warning, for "threescep" (two '
          . 'locations use it)') or diag($out);
like($out, qr/scep: .*no certificate of "\/CN=Three Root".*GetCACert/,
     '  naming the issuer missing and GetCACert') or diag($out);
like($out, qr/$swarn.* in \S+test\.conf:$sline\n/,
     "  with the file and the first scep directive's line ($sline)")
    or diag($out);
$t->start_nginx(scep_conf("$x/mid-only.pem", 'on'));
my $ct;
($code, $ct, $subj) = getcacert();
is($code, 200, 'GetCACert: 200 all the same');
is($subj, 'Three Mid,Three SCEP', '  the CA and its intermediate, no root');
is($ct, 'application/x-x509-ca-ra-cert', '  as a certificates-only SignedData');
$t->stop_nginx;

($ok, $out) = nginx_t(scep_conf("$x/mid-root.pem", 'on'));
ok($ok, 'nginx -t: scep_ca_chain on, the chain with the root');
unlike($out, $swarn, '  no SCEP warning') or diag($out);
$t->start_nginx(scep_conf("$x/mid-root.pem", 'on'));
($code, $ct, $subj) = getcacert();
is($subj, 'Three Mid,Three Root,Three SCEP', 'GetCACert: CA, intermediate '
   . 'and root');
$t->stop_nginx;

# scep_ca_chain off: GetCACert is the CA certificate alone by choice
($ok, $out) = nginx_t(scep_conf("$x/mid-only.pem", 'off'));
ok($ok, 'nginx -t: scep_ca_chain off');
unlike($out, $swarn, '  no SCEP warning') or diag($out);

done_testing();
