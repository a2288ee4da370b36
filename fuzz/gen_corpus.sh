#!/usr/bin/env bash
#
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Regenerates the seed corpora under fuzz/corpus/<target>/ with the openssl
# CLI: small valid and near-valid inputs.  Files named seed-* are rewritten;
# regression inputs (crash-*, regress-*) are kept.  The OCSP seeds name the
# fuzz fixture's CAs: their keys are the fixed test keys in fuzz_fixture.c.
#
#   fuzz/gen_corpus.sh
#
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
C=corpus
T=$(mktemp -d /tmp/pki-fuzz-seeds.XXXXXX)
trap 'rm -rf "$T"' EXIT

for t in base64 csr est ocsp admin conf redis jws matter scep acme matter_json \
         matter_cd; do
    mkdir -p "$C/$t"
    rm -f "$C/$t"/seed-*
done

# seed FILE TARGET NAME [PREFIX-BYTE-HEX]
seed() {
    local src=$1 target=$2 name=$3 pre=${4:-}
    if [ -n "$pre" ]; then
        { printf "\\x$pre"; cat "$src"; } > "$C/$target/seed-$name"
    else
        cp "$src" "$C/$target/seed-$name"
    fi
}

# ---- keys of the fixture (PEM strings in fuzz_fixture.c) --------------------
extract_key() {   # NAME [FILE] -> PEM on stdout
    sed -n "/static const char  pki_fuzz_$1_pem\[\] =/,/;/p" "${2:-fuzz_fixture.c}" \
        | sed -n 's/^ *"\(.*\)\\n";\{0,1\}$/\1/p'
}
extract_key root > "$T/root.key"
extract_key ca > "$T/ca.key"

# ---- CSRs ------------------------------------------------------------------
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/p256.key" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$T/p384.key" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/rsa.key" 2>/dev/null
openssl genpkey -algorithm ED25519 -out "$T/ed.key" 2>/dev/null
openssl ecparam -name prime256v1 -param_enc explicit -genkey -noout -out "$T/explicit.key" 2>/dev/null

csr() {   # NAME KEY SUBJ [ -addext ... ]
    local name=$1 key=$2 subj=$3
    shift 3
    openssl req -new -key "$T/$key.key" -subj "$subj" -outform DER \
        -out "$T/$name.csr" "$@" 2>/dev/null
}
csr p256 p256 "/CN=device-1" -addext "subjectAltName=DNS:device-1.example.com"
csr p384 p384 "/CN=device-2/O=Example"
csr rsa rsa "/CN=device-3" -addext "subjectAltName=DNS:a.example.com,DNS:b.example.com"
csr ed ed "/CN=device-4"
csr explicit explicit "/CN=device-5"
csr strict p256 "/CN=srv/O=Example/OU=ops/emailAddress=ops@example.com" \
    -addext "subjectAltName=DNS:*.example.com,IP:192.0.2.1,IP:2001:db8::1,email:a@example.com,URI:https://example.com/"
csr forbidden p256 "/C=XX/CN=dev/ST=Nowhere"
csr challenge p256 "/CN=device-6" -addext "subjectAltName=DNS:device-6"
# a CSR carrying challengePassword (PoP linking input)
printf '[req]\ndistinguished_name=dn\nattributes=attr\nprompt=no\n[dn]\nCN=device-7\n[attr]\nchallengePassword=MDEyMzQ1Njc4OWFiY2RlZg==\n' > "$T/pop.cnf"
openssl req -new -key "$T/p256.key" -config "$T/pop.cnf" -outform DER -out "$T/pop.csr" 2>/dev/null
# extensions the template refuses or that are odd
csr exts p256 "/CN=device-8" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=keyCertSign" -addext "1.2.3.4=DER:0500"
csr empty p256 "/"

for n in p256 p384 rsa ed explicit strict forbidden pop exts empty; do
    seed "$T/$n.csr" csr "$n"
done
# subject values of each string type, CNs read as host names, a U+202E
# CN, compressed and hybrid P-256 points (gen_csr_seeds.c: the CLI makes
# none of them)
cc -o "$T/gen_csr_seeds" gen_csr_seeds.c -lcrypto
"$T/gen_csr_seeds" "$C/csr"
# near-valid: truncated, one trailing byte, a flipped signature byte
head -c 100 "$T/p256.csr" > "$T/trunc.csr"; seed "$T/trunc.csr" csr truncated
{ cat "$T/p256.csr"; printf '\0'; } > "$T/trail.csr"; seed "$T/trail.csr" csr trailing
cp "$T/p256.csr" "$T/flip.csr"
printf '\xff' | dd of="$T/flip.csr" bs=1 seek=$(( $(stat -c %s "$T/p256.csr") - 3 )) conv=notrunc 2>/dev/null
seed "$T/flip.csr" csr badsig

# ---- EST bodies: mode byte + base64 ------------------------------------------
b64() { base64 -w 64 "$1" > "$1.b64"; }
for n in p256 p384 rsa ed strict pop flip trunc; do b64 "$T/$n.csr"; done
seed "$T/p256.csr.b64" est enroll-p256 00
seed "$T/rsa.csr.b64" est enroll-rsa 00
seed "$T/ed.csr.b64" est enroll-ed25519 00
seed "$T/p384.csr.b64" est enroll-p384-ctparam 04
seed "$T/p256.csr.b64" est enroll-clientcert 08
seed "$T/p256.csr.b64" est keygen-p256 01
seed "$T/p384.csr.b64" est keygen-p384 01
seed "$T/ed.csr.b64" est keygen-ed25519 01
seed "$T/rsa.csr.b64" est keygen-rsa-refused 01
seed "$T/p256.csr.b64" est reenroll 02
seed "$T/pop.csr.b64" est pop 03
seed "$T/p256.csr.b64" est pop-missing 03
seed "$T/p256.csr.b64" est get 10
seed "$T/flip.csr.b64" est badsig 00
seed "$T/trunc.csr.b64" est truncated 00
base64 -w 0 "$T/p256.csr" > "$T/oneline.b64"; seed "$T/oneline.b64" est oneline 00
printf 'MIIB====\n' > "$T/badpad"; seed "$T/badpad" est badpad 00

# ---- base64 ------------------------------------------------------------------
printf '' > "$T/e"; seed "$T/e" base64 empty
printf 'TWFu' > "$T/a"; seed "$T/a" base64 man
printf 'TWE=' > "$T/a"; seed "$T/a" base64 pad1
printf 'TQ==' > "$T/a"; seed "$T/a" base64 pad2
printf 'TQ=' > "$T/a"; seed "$T/a" base64 shortpad
printf 'T Q\r\n=\t=' > "$T/a"; seed "$T/a" base64 spaces
printf 'TWFu=TWFu' > "$T/a"; seed "$T/a" base64 midpad
printf 'TW-u' > "$T/a"; seed "$T/a" base64 urlsafe
printf '0x00FF' > "$T/a"; seed "$T/a" base64 serial-hex
head -c 300 "$T/p256.csr.b64" > "$T/a"; seed "$T/a" base64 wrapped

# ---- OCSP ------------------------------------------------------------------------
# issuer certificates with the fixture's names and keys (self-signed: a
# CertID only hashes the issuer's name and public key)
openssl req -x509 -new -key "$T/ca.key" -subj "/CN=Fuzz Issuing CA" -days 1 -out "$T/ca.pem" 2>/dev/null
openssl req -x509 -new -key "$T/root.key" -subj "/CN=Fuzz Root" -days 1 -out "$T/root.pem" 2>/dev/null
openssl req -x509 -new -key "$T/p256.key" -subj "/CN=Somebody Else" -days 1 -out "$T/other.pem" 2>/dev/null
ocsp() {   # NAME ISSUER ARGS...
    local name=$1 issuer=$2
    shift 2
    openssl ocsp -issuer "$T/$issuer.pem" "$@" -reqout "$T/$name.ocsp" >/dev/null 2>&1
}
ocsp one ca -serial 0x0A1B2C -no_nonce
ocsp nonce ca -serial 0x0A1B2C -nonce
ocsp sha256 ca -sha256 -serial 0x0A1B2C -no_nonce
ocsp two ca -serial 0x01 -serial 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF -no_nonce
ocsp root root -serial 0x05 -no_nonce
ocsp other other -serial 0x05 -no_nonce
seed "$T/one.ocsp" ocsp post 00
seed "$T/nonce.ocsp" ocsp post-nonce 00
seed "$T/sha256.ocsp" ocsp post-sha256 00
seed "$T/two.ocsp" ocsp post-two 02
seed "$T/root.ocsp" ocsp post-root 10
seed "$T/other.ocsp" ocsp post-unauthorized 00
seed "$T/one.ocsp" ocsp post-noct 04
seed "$T/one.ocsp" ocsp post-badct 08
base64 -w 0 "$T/one.ocsp" > "$T/get"; seed "$T/get" ocsp get 01
base64 -w 0 "$T/nonce.ocsp" > "$T/get"; seed "$T/get" ocsp get-nonce 01
head -c 40 "$T/one.ocsp" > "$T/tr"; seed "$T/tr" ocsp truncated 00
{ cat "$T/one.ocsp"; printf '\0\0'; } > "$T/tr"; seed "$T/tr" ocsp trailing 00

# ---- admin -------------------------------------------------------------------------
adm() { printf '%b' "$3" > "$T/adm"; seed "$T/adm" admin "$1" "$2"; }
adm revoke 10 '{"serial": "0A1B2C", "reason": "keyCompromise"}'
adm revoke-hold 10 '{"serial": "0x000a1b2c", "reason": "certificateHold", "ca": "issuing"}'
adm revoke-date 10 '{"serial": "0A1B2C", "reason": "superseded", "invalidity_date": "2026-11-01T10:00:00Z"}'
adm revoke-offset 10 '{"serial": "0A1B2C", "invalidity_date": "2026-11-01T10:00:00.5+02:00"}'
adm revoke-badjson 10 '{"serial": "0A1B2C", "reason": '
adm revoke-types 10 '{"serial": 12, "reason": ["x"], "ca": null}'
adm revoke-small 18 '{"serial": "0A1B2C", "reason": "keyCompromise", "pad": "xxxxxxxxxxxxxxxxxxxxxxxx"}'
adm list 20 'status=revoked&limit=10'
adm list-all 20 'status=good&subject=dev%20ice&expires_before=2027-01-01T00:00:00Z&ca=issuing&cursor=0&limit=1000'
adm list-bad 20 'limit=0&status=maybe&cursor=%zz'
adm get 30 '0A1B2C'
adm get-bad 30 'zz/..'
adm raw-get 00 'certificates/0A1B2C\nca=root\n'
adm raw-revoke 01 'revoke\n\n{"serial":"01"}'
adm raw-noid 05 'revoke\n\n{"serial":"01"}'
adm raw-404 00 'nothing/here\n\n'
adm raw-head 02 'certificates\nlimit=5\n'

# ---- conf (template, CA and URI lines) ------------------------------------------------
cnf() { printf '%b' "$2" > "$T/cnf"; seed "$T/cnf" conf "$1"; }
cnf device 'key_types ec:P-256 ec:P-384 rsa:2048-4096 ed25519\nsubject CN required\nsan dns copy\nvalidity 7d\nserver_keygen on\nextended_key_usage clientAuth\n'
cnf strict 'key_types ec:P-256\nsubject CN required\nsubject O fixed Example\nsubject C forbidden\nsan dns copy wildcard\nsan ip copy\nsan email required\nsan uri forbidden\nvalidity 1d\nkey_usage digitalSignature keyAgreement\n'
cnf wide 'key_types ec:P-256 ec:P-521 ed448\nsubject CN copy\nsubject DC copy\nsubject serialNumber copy\nsubject UID copy\nsubject 2.5.4.46 copy\nsubject 2.5.4.12 copy\nsubject 2.5.4.65 copy\nsan dns copy wildcard\nextended_key_usage serverAuth\n'
cnf nodns 'subject CN copy\nsubject C copy\nsan dns forbidden\nsan dns copy wildcard\nvalidity 1d\n'
cnf ca-tmpl 'subject CN copy\nbasic_constraints ca:true pathlen:0\nvalidity 3650d\nbeyond_ca_expiry off\n'
cnf extension 'extension 1.3.6.1.4.1.99999.1 critical 0403010203\nextension 2.5.29.19 noncritical 3000\n'
cnf bad 'key_types ec:P-999 rsa:4096-2048\nvalidity 0d\nvalidity 99999999999d\nsubject XX copy\nsan dns\n'
cnf ca 'ca templates device server device\nca max_validity 365d\nca crl_url http://127.0.0.1:8080/crl/issuing.crl\nca ocsp_url http://127.0.0.1:8080/ocsp\nca key /tmp/x.key\n'
cnf uri 'uri pkcs11:token=nginx-pki;object=issuing;type=private\nuri pkcs11:token=a%20b;id=%01%02;pin-value=1234\nuri pkcs11:object=\nop simpleenroll\nop cacerts\n'

# ---- hostile Redis: op byte + RESP reply stream -------------------------------------------
red() { printf '%b' "$3" > "$T/red"; seed "$T/red" redis "$1" "$2"; }
rec='*14\r\n$6\r\nstatus\r\n$4\r\ngood\r\n$2\r\nca\r\n$7\r\nissuing\r\n$8\r\ntemplate\r\n$6\r\ndevice\r\n$7\r\nsubject\r\n$7\r\nCN=fuzz\r\n$3\r\nder\r\n$2\r\n0\x00\r\n$9\r\nnot_after\r\n$10\r\n1800000000\r\n$6\r\nreason\r\n$1\r\n0\r\n'
red get 00 "$rec"
red get-empty 00 '*0\r\n'
red get-odd 00 '*3\r\n$6\r\nstatus\r\n$4\r\ngood\r\n$1\r\nx\r\n'
red get-nil 00 '*2\r\n$-1\r\n$4\r\ngood\r\n'
red get-error 00 '-ERR boom\r\n'
red revoked 01 '*2\r\n$1\r\n0\r\n*4\r\n$4\r\n0A1B\r\n$14\r\n1 1700000000 0\r\n$2\r\nFF\r\n$23\r\n6 1700000000 1699990000\r\n'
red revoked-more 01 '*2\r\n$2\r\n17\r\n*2\r\n$2\r\n01\r\n$5\r\n9 1 2\r\n*2\r\n$1\r\n0\r\n*0\r\n'
red revgen 02 '$1\r\n5\r\n'
red revgen-int 02 ':5\r\n'
red crlnumber 03 ':7\r\n'
red list 04 "*2\r\n\$1\r\n0\r\n*1\r\n\$21\r\nfz:{ca:issuing}:cert:0A\r\n$rec"
red crl-read 05 '*3\r\n$1\r\n3\r\n$28\r\n3 1700003600 9 1700000000 xx\r\n$2\r\n0\x00\r\n'
red crl-read-ok 05 '*3\r\n$1\r\n3\r\n$25\r\n3 1700003600 9 1700000000\r\n$2\r\n0\x00\r\n'
red crl-read-meta 05 '*3\r\n$1\r\n3\r\n$25\r\n3 1700003600 9 1700000000\r\n$-1\r\n'
red crl-put 06 ':1\r\n'
red crl-lock 07 '+OK\r\n:1\r\n'
red crl-lock-nil 07 '$-1\r\n:0\r\n'
red revoke 08 ":1\r\n"
red revoke-out 48 ":1\r\n$rec"
red revoke-conflict 08 ':-3\r\n'
red issue 09 ':1\r\n:1\r\n:1\r\n'
red ping 0a '+PONG\r\n'
red status 0b "$rec"
red crl-build 0c '*2\r\n$1\r\n0\r\n*2\r\n$4\r\n0A1B\r\n$14\r\n1 1700000000 0\r\n:12\r\n'
red ocsp-good 0d "$rec"
red ocsp-unknown 1d '*0\r\n'
red est-enroll 0e ':1\r\n:1\r\n'
red est-reenroll 1e "$rec"
red admin-revoke 1f ":1\r\n$rec"
red admin-get 2f "$rec"
red admin-list 0f "*2\r\n\$1\r\n0\r\n*1\r\n\$21\r\nfz:{ca:issuing}:cert:0A\r\n$rec"

# ---- Matter: TLV (byte 0 = 00) and DER (01) certificates of the test vectors
V=../t/vectors/matter
for f in "$V"/operational/*.chip "$V"/operational/invalid/*.chip; do
    [ -f "$f" ] && seed "$f" matter "tlv-$(basename "$f" .chip)" 00
done
for f in "$V"/operational/TestCert-Root02.der "$V"/operational/TestCert-Node01_01.der \
         $(ls "$V"/attestation/*.der 2>/dev/null | head -4); do
    [ -f "$f" ] && seed "$f" matter "der-$(basename "$f" .der)" 01
done
head -c 60 "$V"/operational/TestCert-Node01_01.chip > "$T/tr"; seed "$T/tr" matter tlv-truncated 00

# ---- JWS / JWK / base64url (ACME) ----------------------------------------------------
perl - "$C/jws" <<'PERL'
use strict;
use warnings;
use Crypt::PK::ECC;
use Crypt::PK::RSA;
use Crypt::PK::Ed25519;
use JSON::PP;
use MIME::Base64 qw(encode_base64url);
my $dir = shift;
my $J = JSON::PP->new->canonical;
sub out { my ($n, $s) = @_; open(my $f, '>', "$dir/seed-$n") or die; print $f $s; close $f }
sub jwk { my $h = $_[0]->export_key_jwk('public', 1);
          return { map { $_ => $h->{$_} } grep { /^(kty|crv|x|y|n|e)$/ } keys %$h } }
my $ec = Crypt::PK::ECC->new; $ec->generate_key('secp256r1');
my $p384 = Crypt::PK::ECC->new; $p384->generate_key('secp384r1');
my $rsa = Crypt::PK::RSA->new; $rsa->generate_key(256, 65537);
my $ed = Crypt::PK::Ed25519->new; $ed->generate_key;
sub jws {
    my ($k, $alg, $hdr, $payload, $sign) = @_;
    my $p64 = encode_base64url($J->encode($hdr));
    my $pl = defined $payload ? encode_base64url($payload) : '';
    my $sig = $sign->("$p64.$pl");
    return $J->encode({ protected => $p64, payload => $pl, signature => encode_base64url($sig) });
}
my $url = 'https://127.0.0.1:8443/acme/new-account';
out('ec-jwk', jws($ec, 'ES256', { alg => 'ES256', jwk => jwk($ec), nonce => 'AAAAAAAAAAAAAAAAAAAAAA', url => $url },
    '{"termsOfServiceAgreed":true,"contact":["mailto:a@example.com"]}',
    sub { $ec->sign_message_rfc7518($_[0], 'SHA256') }));
out('ec-kid', jws($ec, 'ES256', { alg => 'ES256', kid => 'https://127.0.0.1:8443/acme/acct/1', nonce => 'n', url => $url },
    '{"identifiers":[{"type":"dns","value":"a.example"}]}', sub { $ec->sign_message_rfc7518($_[0], 'SHA256') }));
out('ec-post-as-get', jws($ec, 'ES256', { alg => 'ES256', kid => 'k', nonce => 'n', url => $url }, undef,
    sub { $ec->sign_message_rfc7518($_[0], 'SHA256') }));
out('p384', jws($p384, 'ES384', { alg => 'ES384', jwk => jwk($p384), nonce => 'n', url => $url }, '{}',
    sub { $p384->sign_message_rfc7518($_[0], 'SHA384') }));
out('rsa', jws($rsa, 'RS256', { alg => 'RS256', jwk => jwk($rsa), nonce => 'n', url => $url }, '{}',
    sub { $rsa->sign_message($_[0], 'SHA256', 'v1.5') }));
out('ps256', jws($rsa, 'PS256', { alg => 'PS256', jwk => jwk($rsa), nonce => 'n', url => $url }, '{}',
    sub { $rsa->sign_message($_[0], 'SHA256', 'pss', 32) }));
out('ed25519', jws($ed, 'EdDSA', { alg => 'EdDSA', jwk => jwk($ed), nonce => 'n', url => $url }, '{}',
    sub { $ed->sign_message($_[0]) }));
out('badsig', jws($ec, 'ES256', { alg => 'ES256', jwk => jwk($ec), nonce => 'n', url => $url }, '{}', sub { 'x' x 64 }));
out('crit', jws($ec, 'ES256', { alg => 'ES256', crit => ['b64'], b64 => JSON::PP::false, jwk => jwk($ec), url => $url }, '{}', sub { 'x' }));
out('none', jws($ec, 'none', { alg => 'none', jwk => jwk($ec), url => $url }, '{}', sub { '' }));
out('jwk-ec', $J->encode(jwk($ec)));
out('jwk-rsa', $J->encode(jwk($rsa)));
out('jwk-ed25519', $J->encode(jwk($ed)));
out('jwk-private', $J->encode({ %{ jwk($ec) }, d => 'AAAA' }));
out('b64url', 'SGVsbG8sIHdvcmxkIQ');
out('b64url-pad', 'SGVsbG8=');
PERL

# ---- SCEP: byte 0 = shape (see fuzz_scep.c), rest = PKIOperation message ---------
# made by the tests' own SCEP client, encrypted to the fixed RA of fuzz_scep.c
extract_key ra_key fuzz_scep.c > "$T/ra.key"
extract_key ra_cert fuzz_scep.c > "$T/ra.pem"
cc -o "$T/scepmsg" ../t/lib/scepmsg.c -lcrypto -lpthread
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/dev.key" 2>/dev/null
scep() {   # NAME MODE ARGS...
    local name=$1 mode=$2
    shift 2
    "$T/scepmsg" req --rcpt "$T/ra.pem" --key "$T/dev.key" --out "$T/scep.msg" "$@" >/dev/null
    seed "$T/scep.msg" scep "$name" "$mode"
}
scep pkcsreq 00 --challenge s3cret --cn device-1
scep pkcsreq-aes256 00 --challenge s3cret --cn device-1 --cipher aes256
scep pkcsreq-des3 00 --challenge s3cret --cn device-1 --cipher des3
scep pkcsreq-des-refused 00 --challenge s3cret --cn device-1 --cipher des
scep pkcsreq-des-accepted 02 --challenge s3cret --cn device-1 --cipher des
scep pkcsreq-get 01 --challenge s3cret --cn device-1 --b64
scep pkcsreq-manual 04 --challenge s3cret --cn device-1
scep pkcsreq-tid-any 08 --challenge s3cret --cn device-1 --tid free-form-id
scep wrong-challenge 00 --challenge nope --cn device-1
scep no-challenge 00 --cn device-1
scep renewal 00 --type 17 --cn device-1
scep certpoll 00 --certpoll --issuer "$T/ca.pem" --cn device-1
scep getcert 00 --getcert 0A1B2C --issuer "$T/ca.pem"
scep getcrl 00 --type 22 --getcert 0A1B2C --issuer "$T/ca.pem"
scep bad-sig 00 --challenge s3cret --cn device-1 --corrupt sig
scep bad-content 00 --challenge s3cret --cn device-1 --corrupt content
scep bad-digest 00 --challenge s3cret --cn device-1 --corrupt digest
scep no-tid 00 --challenge s3cret --cn device-1 --no-tid
scep msgtype-99 00 --challenge s3cret --cn device-1 --msgtype-str 99
scep stale 40 --challenge s3cret --cn device-1 --signing-time -1000000
scep md5 00 --challenge s3cret --cn device-1 --digest md5
printf '' > "$T/e"; seed "$T/e" scep getcacaps 10; seed "$T/e" scep getcacert 20
# build mode (byte 0 bit 7): descriptions the target signs and encrypts
./gen_scep_seeds.sh "$C/scep"

# ---- acme: "MODE PATH\nPROTECTED\nPAYLOAD"; $NAMEs are filled in by the
# target from the state it built (see fuzz_acme.c) --------------------------
A=$C/acme
KID='{"alg":"ES256","nonce":"$NONCE","url":"$URL","kid":"$KID"}'
JWKA='{"alg":"ES256","nonce":"$NONCE","url":"$URL","jwk":$JWK}'
JWKB='{"alg":"ES256","nonce":"$NONCE","url":"$URL","jwk":$JWKB}'
acme() { printf '%s\n%s\n%s' "$2" "$3" "$4" > "$A/seed-$1"; }
printf 'g directory\n' > "$A/seed-directory"
printf 'h new-nonce\n' > "$A/seed-new-nonce-head"
printf 'g renewal-info/$CERTID\n' > "$A/seed-ari"
acme account-existing 'a new-account' "$JWKA" '{"termsOfServiceAgreed":true}'
acme account-new 'b new-account' "$JWKB" '{"termsOfServiceAgreed":true,"contact":["mailto:a@b.example","mailto:c@d.example"]}'
acme account-eab 'b new-account' "$JWKB" '{"termsOfServiceAgreed":true,"externalAccountBinding":$EAB}'
acme account-only-existing 'b new-account' "$JWKB" '{"onlyReturnExisting":true}'
acme account-update 'a acct/$ACCT' "$KID" '{"contact":["mailto:new@acme.fuzz"]}'
acme account-deactivate 'a acct/$ACCT' "$KID" '{"status":"deactivated"}'
acme orders-list 'a acct/$ACCT/orders' "$KID" ''
acme new-order 'a new-order' "$KID" '{"identifiers":[{"type":"dns","value":"www.fuzz.example"},{"type":"dns","value":"*.fuzz.example"},{"type":"ip","value":"2001:db8::1"}],"notBefore":"2026-11-28T00:00:00Z","notAfter":"2026-12-28T00:00:00Z"}'
acme new-order-replaces 'a new-order' "$KID" '{"identifiers":[{"type":"dns","value":"fuzz.example"}],"replaces":"$CERTID"}'
acme order-get 'a order/$ACCT/$O1' "$KID" ''
acme authz-get 'a authz/$ACCT/$Z1' "$KID" ''
acme authz-deactivate 'a authz/$ACCT/$Z1' "$KID" '{"status":"deactivated"}'
acme challenge 'a chall/$ACCT/$Z1/$C1' "$KID" '{}'
acme finalize 'a finalize/$ACCT/$O2' "$KID" '{"csr":"$CSR"}'
acme finalize-not-ready 'a finalize/$ACCT/$O1' "$KID" '{"csr":"$CSR"}'
acme cert 'a cert/$ACCT/$O3' "$KID" ''
acme revoke-kid 'a revoke-cert' "$KID" '{"certificate":"$CERT","reason":4}'
acme revoke-certkey 'b revoke-cert' "$JWKB" '{"certificate":"$CERT"}'
acme key-change 'k key-change' "$KID" '{"alg":"ES256","url":"$URL","jwk":$JWKB}
{"account":"$KID","oldKey":$JWK}'
printf 'r new-order\n{"protected":"eyJhbGciOiJFUzI1NiJ9","payload":"","signature":"AAAA"}' > "$A/seed-raw"
acme bad-nonce 'a new-order' '{"alg":"ES256","nonce":"bad","url":"$URL","kid":"$KID"}' '{}'

# ---- matter_json: byte 0 selects (see fuzz_matter_json.c), rest JSON -------
mj() { { printf "\\x$2"; printf '%s' "$3"; } > "$C/matter_json/seed-$1"; }
mj dac-csr 00 '{"csrs":["$CSR"]}'
mj dac-csrs-redis 04 '{"csrs":["$CSR","$CSR2"]}'
mj dac-nopid 02 '{"csrs":["$CSR"]}'
mj dac-keygen 00 '{"count":2}'
mj dac-keygen-redis 04 '{"count":1}'
mj dac-bad-items 00 '{"csrs":["AAAA", 5, "$CSR"]}'
mj dac-count-frac 00 '{"count":1.5}'
mj noc 01 '{"csr":"$CSR","node_id":"DEDEDEDE00010001","fabric_id":"FAB000000000001D"}'
mj noc-cats-redis 05 '{"csr":"$CSR","node_id":"DEDEDEDE00010001","fabric_id":"FAB000000000001D","cats":["ABCD0001","12340002"]}'
mj noc-rcac 03 '{"csr":"$CSR2","node_id":"0000000000000001","fabric_id":"FAB000000000001D"}'
mj noc-bad-ids 01 '{"csr":"$CSR","node_id":"FFFFFFFFFFFFFFFF","fabric_id":"0000000000000000","cats":["00000000"]}'
mj noc-no-node 01 '{"csr":"$CSR","fabric_id":"FAB000000000001D"}'
mj get 09 '{"csrs":["$CSR"]}'
mj no-user 10 '{"csrs":["$CSR"]}'
mj text-plain 20 '{"csrs":["$CSR"]}'
mj array 00 '[]'
# bit 6 (0x40): a full batch of 8 (the engine's signing threads)
mj dac-full-batch 40 '{"csrs":["$CSR","$CSR2","$CSR","$CSR2","$CSR","$CSR2","$CSR","$CSR2"]}'
mj dac-full-keygen-redis 44 '{"count":8}'

# ---- matter_cd: byte 0 selects (see fuzz_matter_cd.c), rest the CD TLV ------
# (DAC VID FFF1 PID 8000; 294C...5CC2 is the SKID of the fixture's fixed PAA
# key).  The seed-raw-* CMS messages are signed by the replay binary.
cdhex() { printf '%s' "$2" | tr -d ' ' | xxd -r -p > "$C/matter_cd/seed-$1"; }
CID=2C0413$(printf 'ZIG20142ZB330003-24' | xxd -p)
CD="240001 2501F1FF 3602 050080 050180 18 260316000000 $CID 240500 25060000 25070100 240800"
cdhex cd "00 15 $CD 18"
cdhex cd-attrs "08 15 $CD 18"
cdhex cd-origin "00 15 $CD 2509F1FF 250A0080 18"
cdhex cd-paa-list "00 15 $CD 360B 1014 294C7215FCA16E374D9200E7EE2FEC4738D75CC2 18 18"
cdhex cd-paa-other "00 15 $CD 360B 1014 0000000000000000000000000000000000000000 18 18"
cdhex cd-basic-pid "02 FFF1 8001 15 $CD 18"
# a whole CD of another vendor (0xF002): reaches the vendor check
cdhex cd-vid-other "00 15 ${CD/2501F1FF/250102F0} 18"
if [ -x build-replay/replay_matter_cd ]; then
    for s in cd cd-attrs cd-origin; do
        PKI_FUZZ_VERBOSE=1 PKI_FUZZ_CD_OUT="$C/matter_cd/seed-raw-$s" \
            build-replay/replay_matter_cd "$C/matter_cd/seed-$s" >/dev/null 2>&1
    done
else
    echo "gen_corpus: no build-replay/replay_matter_cd: raw CD seeds not made" >&2
fi

for t in base64 csr est ocsp admin conf redis jws matter scep acme matter_json \
         matter_cd; do
    printf '%-8s %3d files %6d bytes\n' "$t" "$(ls "$C/$t" | wc -l)" \
        "$(cat "$C/$t"/* | wc -c)"
done
