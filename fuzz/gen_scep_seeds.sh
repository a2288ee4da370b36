#!/usr/bin/env bash
#
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Writes the build-mode seeds of the scep target (fuzz/corpus/scep/
# seed-build-*): byte 0 with bit 7 set, then the description that
# fuzz_scep.c turns into a signed and encrypted PKIOperation message (see
# the comment at its top).  The CSRs hold the target's fixed device key,
# so that its self-signed certificate signs for them.  Run by
# gen_corpus.sh; on its own it rewrites only these seeds.
#
#   fuzz/gen_scep_seeds.sh [DIR]       (default fuzz/corpus/scep)
#
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
D=${1:-corpus/scep}
T=$(mktemp -d /tmp/pki-scep-seeds.XXXXXX)
trap 'rm -rf "$T"' EXIT

mkdir -p "$D"
rm -f "$D"/seed-build-*

sed -n '/static const char  pki_fuzz_device_key_pem\[\] =/,/;/p' fuzz_scep.c \
    | sed -n 's/^ *"\(.*\)\\n";\{0,1\}$/\1/p' > "$T/dev.key"

# CSRs of the device key: challengePassword s3cret (the target's static
# challenge), a wrong one, none
csr() {   # NAME KEY CN CHALLENGE(or -)
    {
        printf '[req]\ndistinguished_name=dn\nprompt=no\n'
        [ "$4" = - ] || printf 'attributes=attr\n[attr]\nchallengePassword=%s\n' "$4"
        printf '[dn]\nCN=%s\n[ext]\nsubjectAltName=DNS:%s.example.com\n' "$3" "$3"
    } > "$T/$1.cnf"
    openssl req -new -key "$T/$2.key" -config "$T/$1.cnf" -reqexts ext \
        -outform DER -out "$T/$1.der" 2>/dev/null
}
csr good dev device-1 s3cret
csr bad dev device-1 nope
csr none dev device-1 -
# store mode: the one-time challenges of the target's state
csr once-any dev device-1 once-any
csr once-bound dev device-1 once-bound
csr once-other dev device-1 once-other
# another CSR of the device key: not C1's request (that one is the same DER
# as the target's, so "good" under C1's transactionID is its resend)
csr fresh dev device-3 s3cret
# a CSR of another key (the signer's key is not the CSR's)
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/other.key" 2>/dev/null
csr other other device-2 s3cret

# IssuerAndSerialNumber / IssuerAndSubject naming the fixture's issuing CA
asn1() {   # NAME GENCONF
    printf '%s\n' "$2" > "$T/$1.cnf"
    openssl asn1parse -genconf "$T/$1.cnf" -noout -out "$T/$1.der" >/dev/null
}
NAME='[ca]
rdn=SET:carnd
[carnd]
cn=SEQUENCE:cacn
[cacn]
oid=OID:commonName
v=UTF8String:Fuzz Issuing CA
[dev]
rdn=SET:devrnd
[devrnd]
cn=SEQUENCE:devcn
[devcn]
oid=OID:commonName
v=UTF8String:device-1'
asn1 ias "asn1=SEQUENCE:ias
[ias]
issuer=SEQUENCE:ca
serial=INTEGER:0x0A1B2C
$NAME"
asn1 ias-other "asn1=SEQUENCE:ias
[ias]
issuer=SEQUENCE:dev
serial=INTEGER:0x0A1B2C
$NAME"
asn1 isub "asn1=SEQUENCE:isub
[isub]
issuer=SEQUENCE:ca
subject=SEQUENCE:dev
$NAME"
printf 'not an envelope' > "$T/junk.der"
: > "$T/empty.der"

# bseed NAME MODE B1 B2 B3 MESSAGETYPE TRANSACTIONID INNER
#   MODE, B1, B2, B3: hex bytes; the senderNonce is 16 fixed octets
bseed() {
    local name=$1 mode=$2 b1=$3 b2=$4 b3=$5 type=$6 tid=$7 inner=$8
    local nonce=0123456789abcdef
    {
        printf "\\x$mode\\x$b1\\x$b2\\x$b3"
        printf "\\x$(printf %02x ${#type})%s" "$type"
        printf "\\x$(printf %02x ${#tid})%s" "$tid"
        printf "\\x$(printf %02x ${#nonce})%s" "$nonce"
        cat "$T/$inner.der"
    } > "$D/seed-build-$name"
}

# sseed NAME MODE B1 B2 B3 B4 MESSAGETYPE TRANSACTIONID INNER
#   store mode (B3 bit 2): B4 follows B3
sseed() {
    local name=$1 mode=$2 b1=$3 b2=$4 b3=$5 b4=$6 type=$7 tid=$8 inner=$9
    local nonce=0123456789abcdef
    {
        printf "\\x$mode\\x$b1\\x$b2\\x$b3\\x$b4"
        printf "\\x$(printf %02x ${#type})%s" "$type"
        printf "\\x$(printf %02x ${#tid})%s" "$tid"
        printf "\\x$(printf %02x ${#nonce})%s" "$nonce"
        cat "$T/$inner.der"
    } > "$D/seed-build-$name"
}

# B1: signer bits 0-1, cipher 2-3, digest 4-5, OAEP 6, re-sign CSR 7
# B2: signingTime 0-1, auto transactionID 2, no nonce/tid/type 3/4/5,
#     bare messageData 6, UTF8String 7
# B3: no store 0 (the challenge and the template run), attributes twice 1,
#     store mode 2 (the fake Redis with the target's state; B4 follows)
bseed pkcsreq              80 00 04 01 19 ''  good
bseed pkcsreq-badchallenge 80 00 04 01 19 ''  bad
bseed pkcsreq-nochallenge  80 00 04 01 19 ''  none
bseed pkcsreq-redis        80 00 04 00 19 ''  good
bseed pkcsreq-aes256-sha1  80 14 04 01 19 ''  good
bseed pkcsreq-des3-sha512  80 28 04 01 19 ''  good
bseed pkcsreq-des          82 0c 04 01 19 ''  good
bseed pkcsreq-des-refused  80 0c 04 01 19 ''  good
bseed pkcsreq-oaep         80 40 04 01 19 ''  good
bseed pkcsreq-oaep256      80 44 04 01 19 ''  good
bseed pkcsreq-get          81 00 04 01 19 ''  good
bseed pkcsreq-manual       84 00 04 00 19 ''  good
bseed pkcsreq-time         c0 00 05 01 19 ''  good
bseed pkcsreq-stale        c0 00 06 01 19 ''  good
bseed pkcsreq-badtid       80 00 00 01 19 'not-the-key-hash' good
bseed pkcsreq-tid-any      88 00 00 01 19 'free-form-id' good
bseed pkcsreq-otherkey     80 00 04 01 19 ''  other
bseed pkcsreq-resign       80 80 04 01 19 ''  other
bseed pkcsreq-forged       80 03 04 01 19 ''  good
bseed pkcsreq-ec-signer    80 02 04 01 19 ''  good
bseed pkcsreq-md5          80 30 04 01 19 ''  good
bseed pkcsreq-no-nonce     80 00 0c 01 19 ''  good
bseed pkcsreq-utf8         80 00 84 01 19 ''  good
bseed pkcsreq-twice        80 00 04 03 19 ''  good
bseed renewal              80 01 04 00 17 ''  good
bseed renewal-selfsigned   80 00 04 00 17 ''  good
bseed pkcsreq-ra-signer    80 01 04 00 19 ''  good
bseed getcert              80 00 00 00 21 'get-1' ias
bseed getcert-other-ca     80 00 00 00 21 'get-2' ias-other
bseed getcrl               80 00 00 00 22 'crl-1' ias
bseed certpoll             80 00 00 00 20 'poll-1' isub
bseed certpoll-csr         80 00 04 00 20 ''  good
bseed badtype              80 00 04 01 99 ''  good
bseed badtype-text         80 00 04 01 x1 ''  good
bseed bare-envelope        80 00 40 01 19 'bare-1' junk
bseed empty-inner          80 00 00 01 19 't' empty

# Store mode.  B4: the state's transactionID bits 0-2 (1 issued C1,
# 2 pending, 3 approved, 4 claim given up, 5 claim of C1 committed,
# 6 rejected, 7 claim of C2 revoked), inner content 3-4 (1 C1's CSR,
# 2 IssuerAndSerialNumber of C1, 3 of C2), signer 5-6 (1 C1, 2 C2 revoked,
# 3 C3 of another template), one-time challenges 7.  An empty
# transactionID with B2 bit 2: the hash of the CSR's key (that of C1's
# request: "good" is C1's CSR, a resend; "fresh" a new request)
sseed store-pkcsreq-same         80 00 04 04 00 19 ''  good
sseed store-pkcsreq              80 00 04 04 00 19 ''  fresh
sseed store-pkcsreq-tid-any      88 00 00 04 00 19 'fresh-1' good
sseed store-pkcsreq-resend       80 00 00 04 09 19 ''  empty
sseed store-pkcsreq-resend-get   81 00 00 04 09 19 ''  empty
sseed store-pkcsreq-manual       84 00 04 04 00 19 ''  fresh
sseed store-pkcsreq-manual-resend 84 00 00 04 0a 19 '' empty
sseed store-pkcsreq-approved     84 00 00 04 0b 19 ''  empty
sseed store-pkcsreq-rejected     84 00 00 04 0e 19 ''  empty
sseed store-pkcsreq-aes256-sha1  80 14 04 04 00 19 ''  fresh
sseed store-pkcsreq-des3-sha512  80 28 04 04 00 19 ''  fresh
sseed store-pkcsreq-des          82 0c 04 04 00 19 ''  fresh
sseed store-pkcsreq-oaep         80 40 04 04 00 19 ''  fresh
sseed store-pkcsreq-oaep256      80 44 04 04 00 19 ''  fresh
sseed store-pkcsreq-time         c0 00 05 04 00 19 ''  fresh
sseed store-pkcsreq-forged       80 03 04 04 00 19 ''  good
sseed store-pkcsreq-ra-signer    80 01 04 04 00 19 ''  good
sseed store-pkcsreq-by-issued    80 00 04 04 20 19 ''  good
sseed store-pkcsreq-badchallenge 80 00 04 04 00 19 ''  bad
sseed store-once-bound           80 00 04 04 80 19 ''  once-bound
sseed store-once-any             80 00 04 04 80 19 ''  once-any
sseed store-once-other           80 00 04 04 80 19 ''  once-other
sseed store-once-unknown         80 00 04 04 80 19 ''  bad
sseed store-renewal              80 00 04 04 20 17 ''  good
sseed store-renewal-revoked      80 00 04 04 40 17 ''  good
sseed store-renewal-template     80 00 04 04 60 17 ''  good
sseed store-renewal-device       80 00 04 04 00 17 ''  good
sseed store-certpoll-issued      80 00 00 04 01 20 ''  isub
sseed store-certpoll-pending     80 00 00 04 02 20 ''  isub
sseed store-certpoll-approved    80 00 00 04 03 20 ''  isub
sseed store-certpoll-claim       80 00 00 04 04 20 ''  isub
sseed store-certpoll-claimed     80 00 00 04 05 20 ''  isub
sseed store-certpoll-rejected    80 00 00 04 06 20 ''  isub
sseed store-certpoll-revoked     80 00 00 04 07 20 ''  isub
sseed store-certpoll-unknown     80 00 00 04 00 20 'poll-1' isub
sseed store-certpoll-other-key   80 01 00 04 02 20 ''  isub
sseed store-getcert              80 00 00 04 10 21 'get-1' empty
sseed store-getcert-revoked      80 00 00 04 18 21 'get-2' empty
sseed store-getcert-unknown      80 00 00 04 00 21 'get-3' ias
sseed store-getcrl               80 00 00 04 10 22 'crl-1' empty
sseed store-getcrl-unknown       80 00 00 04 00 22 'crl-2' ias
