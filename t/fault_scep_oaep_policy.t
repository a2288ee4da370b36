#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A SCEP RA key on a token whose policy forbids raw RSA (CKM_RSA_X_509),
# as many HSMs are set up.  RSAES-OAEP key transport needs that operation
# on a token key (libp11 does raw RSA, OpenSSL checks the OAEP padding),
# PKCS#1 v1.5 does not (CKM_RSA_PKCS).  SoftHSM allows raw RSA, so the
# vault's module is build/p11shim.so (core/test/p11_shim.c) over SoftHSM
# with PKI_P11SHIM_DENY_RAW_RSA=1: its C_DecryptInit answers
# CKR_KEY_FUNCTION_NOT_PERMITTED (0x68) to CKM_RSA_X_509, and it writes
# each C_Initialize and C_DecryptInit to an events file.
#  - a PKCSReq in an OAEP envelope (openssl cms) gets HTTP 503 with
#    Retry-After, not a badMessageCheck CertRep; the error log names the
#    CKR and the reason; nothing is issued or remembered (Redis state as
#    before), and the vault is not reopened (no C_Initialize after the
#    workers' first), however many such requests come;
#  - a PKCS#1 v1.5 envelope to the same key enrolls before and after,
#    through CKM_RSA_PKCS.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use PKITest;
use SCEPMsg;

my $shim = "$PKITest::BUILD/p11shim.so";
plan(skip_all => "$shim not built (run ./build.sh)") if !-e $shim;

my $t = PKITest->new(rsa_key => 1);
my $pki = $t->pki;
my $dir = $t->dir;
my $tok = $t->token;
my $events = "$dir/p11shim.events";
my $rakey = "pkcs11:token=$tok;object=rsa;type=private";
my $racert = "$dir/ra-token.pem";

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

# the vault's module is the shim; nginx passes its settings to workers
$ENV{PKI_P11SHIM_MODULE} = $PKITest::P11;
$ENV{PKI_P11SHIM_DENY_RAW_RSA} = 1;
$ENV{PKI_P11SHIM_EVENTS} = $events;

my $conf = $t->render_conf;
$conf =~ s/^(\s*module\s+)\Q$PKITest::P11\E;/$1$shim;/m
    or die 'no vault module line';
$conf =~ s/^env SOFTHSM2_CONF;$/env SOFTHSM2_CONF;\nenv PKI_P11SHIM_MODULE;
env PKI_P11SHIM_DENY_RAW_RSA;\nenv PKI_P11SHIM_EVENTS;/m
    or die 'no env line';
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

sub events { grep { length } split /\n/, (slurp($events) // '') }
sub inits { scalar grep { /^init / } events() }
sub decrypts {
    my ($mech, $rv) = @_;
    return scalar grep { /^decrypt_init mech=$mech rv=$rv / } events();
}

# the CertRep: signed by the token RA (scepmsg rep, its certificate)
sub rep_token {
    my ($r, $reqf, $key) = @_;
    my $in = "$dir/rt-" . int(rand(1e9)) . '.der';
    my $out = "$in.pem";
    spew($in, $r->{body});
    my ($rc, $o, $e) = run_cmd([$tool, 'rep', '--in', $in, '--rcpt',
        $racert, '--key', $key, '--req', $reqf, '--out', $out]);
    my %h = map { split /=/, $_, 2 } split ' ', $o;
    $h{file} = $out if -s $out;
    $h{raw} = $o . $e;
    return \%h;
}

my $n = 0;
sub csr {
    my ($key) = @_;
    $n++;
    my $cfg = "$dir/tok$n.cnf";
    spew($cfg, "[req]\ndistinguished_name=dn\nattributes=at\nprompt=no\n"
         . "[dn]\nCN=token-oaep-$n\n[at]\nchallengePassword=demo\n");
    my ($rc, $o, $e) = run_cmd(['openssl', 'req', '-new', '-key', $key,
        '-config', $cfg, '-outform', 'DER', '-out', "$dir/tok$n.csr"]);
    die "openssl req: $e" if $rc;
    return "$dir/tok$n.csr";
}

sub oaep_env {
    my ($csr, @keyopt) = @_;
    my $out = "$csr.env";
    my ($rc, $o, $e) = run_cmd(['openssl', 'cms', '-encrypt', '-binary',
        '-in', $csr, '-outform', 'DER', '-out', $out, '-aes128',
        '-recip', $racert, map { ('-keyopt', $_) } @keyopt]);
    die "openssl cms: $e" if $rc;
    return $out;
}

my $ko = key('kpolicy');

# PKCS#1 v1.5 to the token RA: enrolls (CKM_RSA_PKCS is allowed)
sub v15_enrolls {
    my ($name) = @_;
    my $before = decrypts('0x1', '0x0');
    my $f = req(key => $ko, rcpt => $racert, csr => csr($ko));
    my $r = send_msg($f, '/scep-token');
    is($r->{code}, 200, "$name: PKCS#1 v1.5 envelope: 200");
    my $h = rep_token($r, $f, $ko);
    is($h->{status}, 0, "$name: PKCS#1 v1.5 envelope: SUCCESS")
        or diag($h->{raw});
    is($h->{sig}, 'ok', "$name: CertRep signed by the token RA");
    my ($vok, $vout) = $t->verify_chain($h->{file} // '/nonexistent');
    ok($vok, "$name: the certificate verifies") or diag($vout);
    cmp_ok(decrypts('0x1', '0x0'), '>', $before,
           "$name: decrypted by the token with CKM_RSA_PKCS (0x1)");
}

v15_enrolls('before');
is(decrypts('0x3', '0x[0-9a-f]+'), 0, 'v1.5 never asked for CKM_RSA_X_509');

my $inits = inits();
cmp_ok($inits, '>=', 1, "the shim was initialised ($inits C_Initialize)");
my $log_off = length(slurp($t->error_log) // '');
my @state = $t->state_keys;
my $records = records();

my @oaep = (['OAEP SHA-1', 'rsa_padding_mode:oaep'],
            ['OAEP SHA-256', 'rsa_padding_mode:oaep', 'rsa_oaep_md:sha256',
             'rsa_mgf1_md:sha256']);
for my $i (1 .. 3) {
    for my $o (@oaep) {
        my ($name, @ko) = @$o;
        $name .= " #$i";
        my $denied = decrypts('0x3', '0x68');
        my $csr = csr($ko);
        my $f = req(key => $ko, rcpt => $racert, csr => $csr,
                    envelope => oaep_env($csr, @ko));
        my $r = send_msg($f, '/scep-token');
        is($r->{code}, 503, "$name: 503, not a CertRep")
            or diag(substr($r->{body} // '', 0, 200));
        like($r->{headers}{'retry-after'} // '', qr/^\d+$/,
             "$name: Retry-After");
        is(decrypts('0x3', '0x68'), $denied + 1, "$name: the token was "
           . 'asked for CKM_RSA_X_509 once and refused it (0x68)');
    }
}

is(inits(), $inits, 'no C_Initialize after the refusals: the vault was '
   . 'not reopened');
is(records(), $records, 'nothing issued');
is_deeply([$t->state_keys], \@state, 'Redis state as before (no replay '
          . 'record, no transaction)');

my $l = substr(slurp($t->error_log) // '', $log_off);
my $why = qr/the token refuses to decrypt with this key \(CKR 0x68: /
          . qr/RSAES-OAEP needs raw RSA \(CKM_RSA_X_509\) allowed on the key/;
my $ckr = () = $l =~ /$why/g;
is($ckr, 6, 'the error log names the CKR and the reason, once per request');
unlike($l, qr/cannot decrypt messageData|badMessageCheck/,
       'not logged as a bad ciphertext');
unlike($l, qr/reopen|\[alert\]|\[emerg\]|exited on signal/,
       'no reopen, no crash in the log');

v15_enrolls('after');
is(inits(), $inits, 'still no C_Initialize');

$t->stop_all;
done_testing();
