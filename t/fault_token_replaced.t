#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A SCEP RA key on the token replaced under its label while nginx runs:
# the key pair "rsa" is deleted and another one made under the same label
# (pkcs11-tool, another process), so the RA certificate no longer matches
# the key that answers to the label.  Before, the workers fetched the new
# key as the RA key: the decryption of a client's envelope failed as the
# client's fault ("cannot decrypt messageData"), and the answer was a 503
# only because the CertRep's signature then failed, with a log line that
# named neither the label nor the certificate.  What must hold:
#  - a PKCS#1 v1.5 PKCSReq to the token RA enrolls before the change;
#  - after it, PKCSReqs get 503 with Retry-After, nothing is issued, and
#    the error log says that the key under label "rsa" no longer matches
#    its certificate, not that the client's message cannot be decrypted;
#  - the PIN is never in the log.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use PKITest;
use SCEPMsg;

my $p11tool = `command -v pkcs11-tool 2>/dev/null`;
chomp $p11tool;
plan(skip_all => 'no pkcs11-tool (package opensc)') if !$p11tool;

my $t = PKITest->new(rsa_key => 1);
my $pki = $t->pki;
my $dir = $t->dir;
my $tok = $t->token;
my $rakey = "pkcs11:token=$tok;object=rsa;type=private";
my $racert = "$dir/ra-token.pem";
my $pin = slurp("$pki/hsm/pin");
$pin =~ s/\s+$//;

# the RA certificate of the token's RSA key, from the issuing CA
{
    my ($rc, $o, $e) = run_cmd(["$PKITest::BUILD/pkictl", 'issue',
        '--ca-cert', "$pki/issuing.pem",
        '--ca-key', "pkcs11:token=$tok;object=issuing;type=private",
        '--pubkey-of', $rakey, '--profile', 'client',
        '--subject', '/O=nginx-pki/CN=nginx-pki SCEP RA (token)',
        '--days', '30', '--out', $racert, '--module', $PKITest::P11,
        '--token', $tok, '--pin-file', "$pki/hsm/pin"],
        env => { SOFTHSM2_CONF => $t->softhsm_conf }, timeout => 60);
    BAIL_OUT("pkictl issue (token RA): $e") if $rc;
}

my $conf = $t->render_conf;
my $loc = <<"EOF";
        location /scep-token {
            scep issuing scep;
            scep_ra $racert "$rakey";
            scep_challenge file=$pki/scep-challenge;
        }

        location /scep {
EOF
$conf =~ s/        location \/scep \{\n/$loc/ or die 'no /scep location';

my ($base, $admin, $k1, $k2, $tool) = scep_setup($t, $conf);

sub p11 {
    my (@args) = @_;
    my ($rc, $o, $e) = run_cmd([$p11tool, '--module', $PKITest::P11,
        '--token-label', $tok, '--login', '--pin', $pin, @args],
        env => { SOFTHSM2_CONF => $t->softhsm_conf }, timeout => 120);
    return ($rc, $o . $e);
}

my $n = 0;
my $ko = key('kreplaced');

sub csr {
    $n++;
    my $cfg = "$dir/repl$n.cnf";
    spew($cfg, "[req]\ndistinguished_name=dn\nattributes=at\nprompt=no\n"
         . "[dn]\nCN=token-replaced-$n\n[at]\nchallengePassword=demo\n");
    my ($rc, $o, $e) = run_cmd(['openssl', 'req', '-new', '-key', $ko,
        '-config', $cfg, '-outform', 'DER', '-out', "$dir/repl$n.csr"]);
    die "openssl req: $e" if $rc;
    return "$dir/repl$n.csr";
}

sub pkcsreq {
    my $f = req(key => $ko, rcpt => $racert, csr => csr());
    return send_msg($f, '/scep-token');
}

# before: the token RA enrolls
{
    my $r = pkcsreq();
    is($r->{code}, 200, 'before: PKCS#1 v1.5 envelope to the token RA: 200')
        or diag(substr($r->{body} // '', 0, 200));
}

# another key pair under the label, made by another process
for my $type (qw(privkey pubkey)) {
    my ($rc, $out) = p11('--delete-object', '--type', $type, '--label',
                         'rsa');
    is($rc, 0, "the RA key's $type deleted from the token") or diag($out);
}
{
    my ($rc, $out) = p11('--keypairgen', '--key-type', 'rsa:2048',
                         '--label', 'rsa', '--id', 'e1', '--usage-sign',
                         '--usage-decrypt');
    is($rc, 0, 'another RSA key pair made under the label "rsa"')
        or diag($out);
}

my $log_off = length(slurp($t->error_log) // '');
my $records = records();

for my $i (1 .. 3) {
    my $r = pkcsreq();
    is($r->{code}, 503, "after #$i: 503, not a CertRep")
        or diag(substr($r->{body} // '', 0, 200));
    like($r->{headers}{'retry-after'} // '', qr/^\d+$/,
         "after #$i: Retry-After");
}

is(records(), $records, 'nothing issued');

my $l = substr(slurp($t->error_log) // '', $log_off);
like($l, qr/no longer matches its certificate: the key under label "rsa"/,
     'the error log names the label and says the key no longer matches '
     . 'its certificate') or diag($l);
unlike($l, qr/cannot decrypt messageData|badMessageCheck/,
       'not logged as the client\'s bad ciphertext');
unlike($l, qr/\Q$pin\E/, 'the PIN is not in the log') if length $pin >= 4;
unlike($l, qr/\[alert\]|\[emerg\]|exited on signal/, 'no crash in the log');

$t->stop_all;
done_testing();
