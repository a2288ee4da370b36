# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Sourced (not run) by the scripts that add to a PKI made by
# scripts/mkpki.sh (mkpki-matter.sh, mkpki-altchain.sh), with their
# arguments, after they set ME to their name:
#
#   ME=mkpki-x.sh; . "$(dirname "${BASH_SOURCE[0]}")/mkpki-add.sh" "$@"
#
# Checks the one argument DIR, the PKI directory, and sets die, say, TOP,
# BUILD, PKICTL, TOKEN, MOD, D (DIR, absolute), VAULT (pkictl's token
# options) and exports SOFTHSM2_CONF.  Environment as for scripts/mkpki.sh
# (PKI_BUILD, PKI_TOKEN, PKI_P11_MODULE, PKI_MKPKI_QUIET).

die() { echo "$ME: error: $*" >&2; exit 1; }
say() { [ "${PKI_MKPKI_QUIET:-0}" = 1 ] || echo "$ME: $*" >&2; }

[ $# -eq 1 ] || die "usage: scripts/$ME DIR"

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${PKI_BUILD:-$TOP/build}
PKICTL=$BUILD/pkictl
TOKEN=${PKI_TOKEN:-nginx-pki}
MOD=${PKI_P11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

D=$(cd "$1" && pwd)
[ -f "$D/hsm/softhsm2.conf" ] || die "$D is not a PKI made by scripts/mkpki.sh"
export SOFTHSM2_CONF=$D/hsm/softhsm2.conf
VAULT=(--module "$MOD" --token "$TOKEN" --pin-file "$D/hsm/pin")
