#!/usr/bin/env bash
#
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Creates a two-level PKI whose CA keys live in a SoftHSM2 token.
# Shared by the demo (./build.sh demo), the tests (t/) and bench/.
#
#   scripts/mkpki.sh DIR
#
# Environment:
#   PKI_BUILD        build dir holding pkictl            (default: ./build)
#   PKI_TOKEN        token label                         (default: nginx-pki)
#   PKI_P11_MODULE   PKCS#11 module                      (default: SoftHSM2)
#   PKI_MKPKI_RSA=1  also generate an RSA-2048 key "rsa" (id 03) in the token
#   PKI_MKPKI_QUIET=1  less output
#
# Creates:
#   DIR/hsm/softhsm2.conf, DIR/hsm/tokens/   the token
#   DIR/hsm/pin                              user PIN (random, mode 0600)
#   token keys: "root" (id 01), "issuing" (id 02), EC P-256, never extractable
#   DIR/root.pem      self-signed root CA, 10 years
#   DIR/issuing.pem   issuing CA (pathlen 0), 5 years, signed by root
#   DIR/chain.pem     issuing + root
#   DIR/server.key, DIR/server.pem   TLS server cert for localhost / 127.0.0.1
#                     (server.pem: the leaf followed by the issuing CA)
#   DIR/htpasswd      user demo, password demo
#   DIR/htpasswd-admin  user admin, password admin (the admin API)
#   DIR/ra.key, DIR/ra.pem   SCEP RA: RSA-2048 key (file) and certificate
#                     issued by the issuing CA (SCEP key transport is RSA)
#   DIR/scep-challenge  the demo's static SCEP challenge: "demo"
#   DIR/altroot.pem, DIR/altroot.key   a second root, "nginx-pki Alt Root CA"
#                     (key in a file), and DIR/alt-chain.pem: the issuing CA
#                     cross-signed by it, the ACME alternate chain
#                     (scripts/mkpki-altchain.sh)
#   DIR/matter/        with PKI_MKPKI_MATTER=1: Matter PAA -> PAI and RCAC ->
#                      ICAC, keys in the token (scripts/mkpki-matter.sh)
#
set -euo pipefail

die() { echo "mkpki.sh: error: $*" >&2; exit 1; }
say() { [ "${PKI_MKPKI_QUIET:-0}" = 1 ] || echo "mkpki.sh: $*" >&2; }

[ $# -eq 1 ] || die "usage: scripts/mkpki.sh DIR"

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${PKI_BUILD:-$TOP/build}
PKICTL=$BUILD/pkictl
TOKEN=${PKI_TOKEN:-nginx-pki}
MOD=${PKI_P11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

[ -x "$PKICTL" ] || die "$PKICTL not found: run ./build.sh first"
[ -e "$MOD" ] || die "PKCS#11 module $MOD not found (package softhsm2)"
for c in softhsm2-util pkcs11-tool openssl; do
    command -v "$c" >/dev/null || die "$c not found"
done

mkdir -p "$1"
D=$(cd "$1" && pwd)
H=$D/hsm
[ -e "$H/softhsm2.conf" ] && die "$H/softhsm2.conf exists: refusing to overwrite a PKI"

umask 077
mkdir -p "$H/tokens"
cat > "$H/softhsm2.conf" <<CONF
directories.tokendir = $H/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
export SOFTHSM2_CONF=$H/softhsm2.conf

PIN=$(openssl rand -hex 12)
SOPIN=$(openssl rand -hex 12)
printf '%s\n' "$PIN" > "$H/pin"
chmod 600 "$H/pin"

say "initialising token \"$TOKEN\" in $H"
softhsm2-util --init-token --free --label "$TOKEN" --so-pin "$SOPIN" \
    --pin "$PIN" >/dev/null || die "softhsm2-util --init-token failed"

p11() {
    pkcs11-tool --module "$MOD" --token-label "$TOKEN" --login --pin "$PIN" "$@" \
        >/dev/null 2>"$H/pkcs11-tool.err" \
        || { cat "$H/pkcs11-tool.err" >&2; die "pkcs11-tool $* failed"; }
}

say "generating EC P-256 keys root (01) and issuing (02) in the token"
p11 --keypairgen --key-type EC:prime256v1 --label root --id 01
p11 --keypairgen --key-type EC:prime256v1 --label issuing --id 02
if [ "${PKI_MKPKI_RSA:-0}" = 1 ]; then
    say "generating RSA-2048 key rsa (03) in the token"
    p11 --keypairgen --key-type rsa:2048 --label rsa --id 03
fi
rm -f "$H/pkcs11-tool.err"

VAULT=(--module "$MOD" --token "$TOKEN" --pin-file "$H/pin")
ROOT_KEY="pkcs11:token=$TOKEN;object=root;type=private"
ISS_KEY="pkcs11:token=$TOKEN;object=issuing;type=private"

umask 022

say "root CA"
"$PKICTL" selfsign --key "$ROOT_KEY" --subject "/O=nginx-pki/CN=nginx-pki Root CA" \
    --days 3650 --out "$D/root.pem" "${VAULT[@]}" || die "pkictl selfsign failed"

say "issuing CA"
"$PKICTL" issue --ca-cert "$D/root.pem" --ca-key "$ROOT_KEY" \
    --pubkey-of "$ISS_KEY" --profile ca --pathlen 0 \
    --subject "/O=nginx-pki/CN=nginx-pki Issuing CA" --days 1825 \
    --out "$D/issuing.pem" "${VAULT[@]}" || die "pkictl issue (issuing CA) failed"

cat "$D/issuing.pem" "$D/root.pem" > "$D/chain.pem"

say "TLS server certificate for localhost / 127.0.0.1"
(umask 077; openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$D/server.key" 2>/dev/null) || die "openssl genpkey failed"
openssl req -new -key "$D/server.key" -subj "/CN=localhost" -out "$D/server.csr" \
    || die "openssl req failed"
"$PKICTL" issue --ca-cert "$D/issuing.pem" --ca-key "$ISS_KEY" \
    --csr "$D/server.csr" --profile server --subject "/CN=localhost" \
    --dns localhost --ip 127.0.0.1 --days 365 --out "$D/server.pem" "${VAULT[@]}" \
    || die "pkictl issue (server) failed"
rm -f "$D/server.csr"

openssl verify -CAfile "$D/root.pem" -untrusted "$D/issuing.pem" "$D/server.pem" \
    >/dev/null || die "the new server certificate does not verify"
# nginx sends the whole file: the leaf, then the issuing CA
cat "$D/issuing.pem" >> "$D/server.pem"

# --- SCEP RA (RFC 8894): an RSA key that decrypts requests and signs
# CertReps; its certificate comes from the issuing CA
say "SCEP RA certificate (RSA-2048)"
(umask 077; openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
    -out "$D/ra.key" 2>/dev/null) || die "openssl genpkey (RA) failed"
openssl req -new -key "$D/ra.key" -subj "/O=nginx-pki/CN=nginx-pki SCEP RA" \
    -out "$D/ra.csr" || die "openssl req (RA) failed"
"$PKICTL" issue --ca-cert "$D/issuing.pem" --ca-key "$ISS_KEY" \
    --csr "$D/ra.csr" --profile client \
    --subject "/O=nginx-pki/CN=nginx-pki SCEP RA" --days 365 \
    --out "$D/ra.pem" "${VAULT[@]}" || die "pkictl issue (SCEP RA) failed"
rm -f "$D/ra.csr"
printf 'demo\n' > "$D/scep-challenge"
# --- end SCEP

printf 'demo:%s\n' "$(openssl passwd -apr1 demo)" > "$D/htpasswd"
printf 'admin:%s\n' "$(openssl passwd -apr1 admin)" > "$D/htpasswd-admin"

# the transaction log's checkpoint key (pki_audit_log key=) and the
# public half an auditor verifies with (pkictl audit verify --pubkey)
(umask 077; openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$D/audit.key" 2>/dev/null) || die "openssl genpkey (audit key) failed"
openssl pkey -in "$D/audit.key" -pubout -out "$D/audit-pub.pem" 2>/dev/null \
    || die "openssl pkey (audit key) failed"

# the alternate chain: the issuing CA cross-signed by a second root
PKI_BUILD="$BUILD" PKI_TOKEN="$TOKEN" PKI_P11_MODULE="$MOD" \
    PKI_MKPKI_QUIET="${PKI_MKPKI_QUIET:-0}" "$TOP/scripts/mkpki-altchain.sh" "$D" \
    || die "the alternate chain failed (scripts/mkpki-altchain.sh)"

# Matter hierarchies (issue 6): scripts/mkpki-matter.sh (the demo, t/matter.t
# and bench/matter.sh add them; other tests run without the Matter CAs)
if [ "${PKI_MKPKI_MATTER:-0}" = 1 ]; then
    PKI_BUILD="$BUILD" PKI_TOKEN="$TOKEN" PKI_P11_MODULE="$MOD" \
        "$TOP/scripts/mkpki-matter.sh" "$D" || die "Matter hierarchies failed"
fi

say "done: $D"
