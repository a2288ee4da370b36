#!/usr/bin/env bash
#
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Adds the Matter test hierarchies to a PKI made by scripts/mkpki.sh, with
# every key generated inside its SoftHSM2 token (pkictl matter hierarchy):
#
#   DIR/matter/paa.pem   PAA  (VID FFF1), key "matter-paa"
#   DIR/matter/pai.pem   PAI  (VID FFF1, PID 8000), key "matter-pai"
#   DIR/matter/pai-chain.pem   PAI + PAA
#   DIR/matter/rcac.pem  RCAC (rcac-id CACACACA00000001, fabric-id
#                        FAB000000000001D), key "matter-rcac"
#   DIR/matter/icac.pem  ICAC (icac-id CACACACA00000002, no fabric-id), key
#                        "matter-icac"
#   DIR/matter/icac-chain.pem  ICAC + RCAC
#
#   scripts/mkpki-matter.sh DIR
#
# Environment as for scripts/mkpki.sh (PKI_BUILD, PKI_TOKEN,
# PKI_P11_MODULE, PKI_MKPKI_QUIET).
#
set -euo pipefail

ME=mkpki-matter.sh
. "$(dirname "${BASH_SOURCE[0]}")/mkpki-add.sh" "$@"

[ -e "$D/matter/pai.pem" ] && die "$D/matter exists: refusing to overwrite"
mkdir -p "$D/matter"

say "Matter PAA (VID FFF1) -> PAI (VID FFF1, PID 8000), keys in the token"
"$PKICTL" matter hierarchy attestation --dir "$D/matter" --vid FFF1 \
    --pid 8000 --cn "nginx-pki Matter" "${VAULT[@]}" \
    || die "pkictl matter hierarchy attestation failed"

say "Matter RCAC -> ICAC (fabric FAB000000000001D), keys in the token"
"$PKICTL" matter hierarchy operational --dir "$D/matter" \
    --rcac-id CACACACA00000001 --icac-id CACACACA00000002 \
    --fabric-id FAB000000000001D "${VAULT[@]}" \
    || die "pkictl matter hierarchy operational failed"

# the ICAC carries no fabric-id (the RCAC does): a NOC with 3 CATs then
# stays under the 600-byte DER limit

cat "$D/matter/pai.pem" "$D/matter/paa.pem" > "$D/matter/pai-chain.pem"
cat "$D/matter/icac.pem" "$D/matter/rcac.pem" > "$D/matter/icac-chain.pem"

openssl verify -x509_strict -CAfile "$D/matter/paa.pem" "$D/matter/pai.pem" \
    >/dev/null || die "the PAI does not verify"
openssl verify -x509_strict -CAfile "$D/matter/rcac.pem" "$D/matter/icac.pem" \
    >/dev/null || die "the ICAC does not verify"

say "done: $D/matter"
