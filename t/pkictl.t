#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# pkictl issue, offline, with file keys: a CSR, and the --subject / --dns /
# --ip of the command line, go through the template's subject and SAN
# rules as a network request does; a refusal exits nonzero with the rule
# on stderr and writes nothing.  The output file is written through a
# fresh temporary file, never through a symlink in its way.  `pkictl matter
# hierarchy` on a token that holds its keys already refuses to make a
# second key of a label.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp qw(tempdir);
use PKITest;

my $pkictl = "$PKITest::BUILD/pkictl";
plan(skip_all => 'pkictl not built') if !-x $pkictl;

my $d = tempdir(CLEANUP => 1);

sub ossl {
    my ($rc, $out, $err) = run_cmd(['openssl', @_]);
    die "openssl @_: $err" if $rc != 0;
    return $out;
}

sub key {
    my ($f) = @_;
    ossl('genpkey', '-algorithm', 'EC', '-pkeyopt',
         'ec_paramgen_curve:P-256', '-out', $f);
    return $f;
}

sub csr {
    my ($name, $subj, @ext) = @_;
    my $f = "$d/$name.csr";
    ossl('req', '-new', '-key', "$d/ee.key", '-subj', $subj,
         (map { ('-addext', $_) } @ext), '-out', $f);
    return $f;
}

key("$d/ca.key");
key("$d/ee.key");

my ($rc, $out, $err) = run_cmd([$pkictl, 'selfsign', '--key', "$d/ca.key",
                                '--subject', '/O=t/CN=t root', '--days', '30',
                                '--out', "$d/ca.pem"]);
is($rc, 0, 'selfsign') or diag($err);

sub issue {
    my ($out, @a) = @_;
    unlink($out);
    return run_cmd([$pkictl, 'issue', '--ca-cert', "$d/ca.pem",
                    '--ca-key', "$d/ca.key", '--days', '10',
                    '--out', $out, @a]);
}

sub refused {
    my ($name, $re, @a) = @_;
    my $o = "$d/refused.pem";
    my ($rc, undef, $err) = issue($o, @a);
    isnt($rc, 0, "$name: refused");
    like($err, $re, "$name: the rule on stderr");
    ok(!-e $o && !glob("$d/refused.pem.*"), "$name: nothing written");
}

# --- a CSR goes through the subject and SAN rules -----------------------

refused('CSR subject DC, UID', qr/subject attribute DC is not allowed/,
        '--profile', 'server',
        '--csr', csr('dc', '/CN=ok/DC=evil/UID=root'));

refused('CSR SAN URI', qr/SAN type uri is not allowed/,
        '--profile', 'server',
        '--csr', csr('uri', '/CN=ok',
                     'subjectAltName=URI:https://evil.example/,'
                     . 'email:root@evil.example,'
                     . 'otherName:1.3.6.1.4.1.311.20.2.3;UTF8:root@corp'));

refused('CSR SAN email', qr/SAN type email is not allowed/,
        '--profile', 'client',
        '--csr', csr('email', '/CN=ok',
                     'subjectAltName=email:root@evil.example'));

refused('CSR SAN otherName UPN', qr/SAN type otherName is not allowed/,
        '--profile', 'server',
        '--csr', csr('upn', '/CN=ok',
                     'subjectAltName=otherName:1.3.6.1.4.1.311.20.2.3;'
                     . 'UTF8:root@corp'));

refused('CSR bad DNS name', qr/invalid DNS name in SAN/,
        '--profile', 'server',
        '--csr', csr('baddns', '/CN=ok', 'subjectAltName=DNS:a..b'));

refused('CA profile, CSR with a SAN', qr/SAN type dns is not allowed/,
        '--profile', 'ca',
        '--csr', csr('casan', '/CN=sub CA', 'subjectAltName=DNS:a.example'));

# --- so do the command line's overrides ----------------------------------

refused('--subject UID', qr/subject attribute UID is not allowed/,
        '--profile', 'server', '--subject', '/CN=ok/UID=root',
        '--csr', csr('plain', '/CN=ok'));

refused('--subject with a control character',
        qr/subject attribute CN has an invalid value/,
        '--profile', 'server', '--subject', "/CN=a\tb",
        '--csr', csr('plain', '/CN=ok'));

refused('--dns bad name', qr/invalid DNS name in SAN/,
        '--profile', 'server', '--dns', 'bad..name',
        '--csr', csr('plain', '/CN=ok'));

refused('--subject keeps the CSR URI SAN', qr/SAN type uri is not allowed/,
        '--profile', 'server', '--subject', '/CN=ok',
        '--csr', csr('uri2', '/CN=x', 'subjectAltName=URI:https://e.x/'));

refused('--pubkey-of --subject DC', qr/subject attribute DC is not allowed/,
        '--profile', 'ca', '--pubkey-of', "$d/ee.key",
        '--subject', '/DC=evil/CN=sub CA');

# --- what the rules allow is issued, the subject in its order -------------

sub text {
    my ($f) = @_;
    return ossl('x509', '-in', $f, '-noout', '-subject', '-ext',
                'subjectAltName', '-nameopt', 'compat');
}

($rc, undef, $err) = issue("$d/srv.pem", '--profile', 'server',
                           '--csr', csr('good', '/O=org/CN=good',
                                        'subjectAltName=DNS:good.example,'
                                        . 'IP:192.0.2.1'));
is($rc, 0, 'CSR within the rules: issued') or diag($err);
$out = -e "$d/srv.pem" ? text("$d/srv.pem") : '';
like($out, qr{subject=/O=org/CN=good}, 'CSR: the subject as asked');
like($out, qr/DNS:good\.example, IP Address:192\.0\.2\.1/, 'CSR: the SANs');

($rc, undef, $err) = issue("$d/srv2.pem", '--profile', 'server',
                           '--csr', csr('plain', '/CN=ok'),
                           '--subject', '/CN=localhost',
                           '--dns', 'localhost', '--ip', '127.0.0.1');
is($rc, 0, '--subject --dns --ip: issued') or diag($err);
$out = -e "$d/srv2.pem" ? text("$d/srv2.pem") : '';
like($out, qr{subject=/CN=localhost}, 'overrides: the subject');
like($out, qr/DNS:localhost, IP Address:127\.0\.0\.1/, 'overrides: the SANs');

($rc, undef, $err) = issue("$d/sub.pem", '--profile', 'ca', '--pathlen', '0',
                           '--pubkey-of', "$d/ee.key",
                           '--subject', '/O=t/CN=t sub CA');
is($rc, 0, '--pubkey-of, CA profile: issued') or diag($err);
$out = -e "$d/sub.pem" ? text("$d/sub.pem") : '';
like($out, qr{subject=/O=t/CN=t sub CA}, 'CA: the subject as asked');

# --- outputs: a fresh temporary file beside the target, renamed over it -

spew("$d/victim", "victim\n");
symlink("$d/victim", "$d/out.pem.tmp") or die "symlink: $!";
($rc, undef, $err) = issue("$d/out.pem", '--profile', 'server',
                           '--csr', csr('plain', '/CN=ok'));
is($rc, 0, 'issue with a symlink at OUT.tmp') or diag($err);
is(slurp("$d/victim"), "victim\n", 'OUT.tmp symlink: its target untouched');
ok(-f "$d/out.pem" && !-l "$d/out.pem"
   && slurp("$d/out.pem") =~ /^-----BEGIN CERTIFICATE-----/,
   'OUT.tmp symlink: the certificate in OUT');
is((stat("$d/out.pem"))[2] & 07777, 0644 & ~umask(), 'OUT: mode 0644');

unlink("$d/out.pem", "$d/out.pem.tmp");
spew("$d/victim", "victim\n");
symlink("$d/victim", "$d/out.pem") or die "symlink: $!";
($rc, undef, $err) = run_cmd([$pkictl, 'selfsign', '--key', "$d/ca.key", '--subject',
               '/CN=x', '--days', '1', '--out', "$d/out.pem"]);
is($rc, 0, 'selfsign with a symlink at OUT') or diag($err);
is(slurp("$d/victim"), "victim\n", 'OUT symlink: its target untouched');
ok(-f "$d/out.pem" && !-l "$d/out.pem", 'OUT symlink: replaced by a file');

my $vec = "$FindBin::Bin/vectors/matter/operational";
for my $c (['to-tlv', 'Chip-Test-Root01-Cert.der', 'root.chip'],
           ['to-der', 'Chip-Test-Root01-Cert.chip', 'root.der'])
{
    my ($cmd, $in, $o) = @$c;
    spew("$d/victim-$cmd", "victim\n");
    symlink("$d/victim-$cmd", "$d/$o") or die "symlink: $!";
    ($rc, undef, $err) = run_cmd([$pkictl, 'matter', $cmd, "$vec/$in",
                                  "$d/$o"]);
    is($rc, 0, "matter $cmd with a symlink at OUT") or diag($err);
    is(slurp("$d/victim-$cmd"), "victim\n",
       "matter $cmd: the symlink's target untouched");
    ok(-f "$d/$o" && !-l "$d/$o", "matter $cmd: OUT replaced by a file");
    my $want = $cmd eq 'to-tlv' ? 'Chip-Test-Root01-Cert.chip'
                                : 'Chip-Test-Root01-Cert.der';
    ok(slurp("$d/$o") eq slurp("$vec/$want"), "matter $cmd: the output");
}

my @left = grep { !/\.(csr|key|pem|chip|der)$/ && !/victim/ } glob("$d/*");
is("@left", '', 'no temporary file left');

# --- matter hierarchy on a token that holds its keys already --------------

SKIP: {
    skip("no SoftHSM2 module at $PKITest::P11", 8) if !-e $PKITest::P11;

    # a token with the root and issuing keys (scripts/mkpki.sh, through
    # pkictl issue) and the Matter hierarchies (scripts/mkpki-matter.sh)
    my $t = PKITest->new(no_nginx_needed => 1);
    my $pki = $t->pki;
    $t->make_matter_pki($pki);

    my @vault = ('--module', $PKITest::P11, '--token', $t->token,
                 '--pin-file', "$pki/hsm/pin");
    my %env = (env => { SOFTHSM2_CONF => $t->softhsm_conf });
    my %args = (attestation => [ '--vid', 'FFF1', '--pid', '8000' ],
                operational => [ '--rcac-id', 'CACACACA00000001',
                                 '--icac-id', 'CACACACA00000002' ]);

    for my $kind (qw(attestation operational)) {
        my $root = $kind eq 'attestation' ? 'paa' : 'rcac';
        my $o = $t->dir . "/again-$kind";
        mkdir $o;
        ($rc, undef, $err) = run_cmd([$pkictl, 'matter', 'hierarchy', $kind,
                                      '--dir', $o, @{ $args{$kind} },
                                      @vault], %env);
        isnt($rc, 0, "hierarchy $kind again: refused");
        like($err, qr/already holds an object labelled "matter-$root"/,
             "hierarchy $kind again: the label on stderr");
        ok(!-e "$o/$root.pem", "hierarchy $kind again: nothing written");

        # one key per label still: the keys there sign
        ($rc, undef, $err) = run_cmd([$pkictl, 'matter', 'hierarchy', $kind,
                                      '--dir', $o, '--keygen', 'off',
                                      @{ $args{$kind} }, @vault], %env);
        is($rc, 0, "hierarchy $kind --keygen off: the keys there sign")
            or diag($err);
    }
}

done_testing();
