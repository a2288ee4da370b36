#!/usr/bin/env bash
#
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Beside a PKI made by scripts/mkpki.sh, a second one whose issuing CA key
# is a PEM file (under the same root, which stays in the token): for the
# benchmarks' like-for-like lines, where the peers sign with a key in memory.
#
#   scripts/mkpki-filekey.sh SRC DST
#
# Environment: PKI_BUILD (build dir holding pkictl, default ./build).
#
# Creates DST with:
#   DST/issuing.key   EC P-256 issuing CA key (PEM file, mode 0600)
#   DST/issuing.pem   its certificate, signed by SRC's root, 1 year
#   DST/chain.pem     issuing + root
#   DST/ra.pem        SRC's SCEP RA key certified by this CA
# and links to SRC's root, TLS server certificate, password files, token,
# RA key, SCEP challenge, transaction-log key and Matter PKI.  No alternate
# chain: SRC's cross-signs SRC's issuing CA.  Then, for nginx-conf.sh:
#   --pki DST --ca-key DST/issuing.key
#
set -euo pipefail

die() { echo "mkpki-filekey.sh: error: $*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: scripts/mkpki-filekey.sh SRC DST"
SRC=$(cd "$1" && pwd) || die "no directory $1"
DST=$2
BUILD=${PKI_BUILD:-./build}
[ -x "$BUILD/pkictl" ] || die "no $BUILD/pkictl (run ./build.sh build)"
if [ ! -f "$SRC/root.pem" ] || [ ! -f "$SRC/hsm/pin" ]; then
    die "$SRC is not a PKI made by scripts/mkpki.sh"
fi
export SOFTHSM2_CONF=$SRC/hsm/softhsm2.conf
TOKEN=${PKI_TOKEN:-nginx-pki}

mkdir -p "$DST"
DST=$(cd "$DST" && pwd)
for x in root.pem server.pem server.key htpasswd htpasswd-admin hsm ra.key \
         scep-challenge audit.key matter; do
    if [ -e "$SRC/$x" ] && [ ! -e "$DST/$x" ]; then
        ln -s "$SRC/$x" "$DST/$x"
    fi
done

(umask 077; openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$DST/issuing.key" 2>/dev/null) || die "openssl genpkey failed"
"$BUILD/pkictl" issue --ca-cert "$SRC/root.pem" \
    --ca-key "pkcs11:token=$TOKEN;object=root;type=private" \
    --pubkey-of "$DST/issuing.key" --profile ca --pathlen 0 \
    --subject "/O=nginx-pki/CN=nginx-pki Issuing CA (file key)" \
    --days 365 --out "$DST/issuing.pem" --pin-file "$SRC/hsm/pin" \
    >/dev/null || die "pkictl issue (file-key issuing CA) failed"
cat "$DST/issuing.pem" "$SRC/root.pem" > "$DST/chain.pem"

if [ -f "$SRC/ra.key" ]; then
    openssl req -new -key "$SRC/ra.key" -out "$DST/ra.csr" \
        -subj "/O=nginx-pki/CN=nginx-pki SCEP RA (file CA)" \
        || die "openssl req (RA) failed"
    "$BUILD/pkictl" issue --ca-cert "$DST/issuing.pem" \
        --ca-key "$DST/issuing.key" --csr "$DST/ra.csr" --profile client \
        --days 365 --subject "/O=nginx-pki/CN=nginx-pki SCEP RA (file CA)" \
        --out "$DST/ra.pem" >/dev/null \
        || die "pkictl issue (RA of the file-key CA) failed"
    rm -f "$DST/ra.csr"
fi
