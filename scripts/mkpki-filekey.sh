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
#   DST/alt-chain.pem when SRC has an alternate root (altroot.key): this CA
#                     cross-signed by it, as SRC's issuing CA is
# and links to SRC's root, TLS server certificate, password files, token,
# RA key, SCEP challenge, transaction-log key and Matter PKI, so that DST
# differs from SRC in the issuing CA's key only.  Then, for nginx-conf.sh:
#   --pki DST --ca-key DST/issuing.key
#
set -euo pipefail

die() { echo "mkpki-filekey.sh: error: $*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: scripts/mkpki-filekey.sh SRC DST"
SRC=$(cd -- "$1" >/dev/null && pwd) || die "no directory $1"
DST=$2
BUILD=${PKI_BUILD:-./build}
[ -x "$BUILD/pkictl" ] || die "no $BUILD/pkictl (run ./build.sh build)"
if [ ! -f "$SRC/root.pem" ] || [ ! -f "$SRC/hsm/pin" ]; then
    die "$SRC is not a PKI made by scripts/mkpki.sh"
fi
export SOFTHSM2_CONF=$SRC/hsm/softhsm2.conf
TOKEN=${PKI_TOKEN:-nginx-pki}

mkdir -p "$DST"
DST=$(cd -- "$DST" >/dev/null && pwd)
for x in root.pem server.pem server.key htpasswd htpasswd-admin hsm ra.key \
         scep-challenge audit.key matter; do
    if [ -e "$SRC/$x" ]; then
        ln -sfn "$SRC/$x" "$DST/$x"
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

if [ -f "$SRC/altroot.key" ] && [ -f "$SRC/altroot.pem" ]; then
    SUBJ=$(openssl x509 -in "$DST/issuing.pem" -noout -subject -nameopt compat) \
        || die "cannot read the issuing CA subject"
    "$BUILD/pkictl" issue --ca-cert "$SRC/altroot.pem" \
        --ca-key "$SRC/altroot.key" --pubkey-of "$DST/issuing.key" \
        --profile ca --pathlen 0 --subject "${SUBJ#subject=}" --days 365 \
        --out "$DST/alt-chain.pem" >/dev/null \
        || die "pkictl issue (cross certificate) failed"
    openssl verify -CAfile "$SRC/altroot.pem" "$DST/alt-chain.pem" >/dev/null \
        || die "the cross certificate does not verify under the alternate root"
fi
