#!/usr/bin/env bash
#
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Adds an alternate chain (RFC 8555 7.4.2) to a PKI made by scripts/mkpki.sh:
# a second root, as an operator migrating to a new root has, and the
# issuing CA cross-signed by it (its subject and token key, "issuing",
# certified by the new root), so that every certificate of the issuing CA
# also chains to the new root.
#
#   DIR/altroot.key   the alternate root's key (EC P-256, a file, mode 0600)
#   DIR/altroot.pem   "nginx-pki Alt Root CA", self-signed, 10 years
#   DIR/alt-chain.pem the cross certificate: the issuing CA's subject and
#                     key, issued by the alternate root (pathlen 0), 5 years
#                     (what follows a leaf in the alternate path: the
#                     pki_ca line "alternate_chain")
#
#   scripts/mkpki-altchain.sh DIR
#
# Environment as for scripts/mkpki.sh (PKI_BUILD, PKI_TOKEN,
# PKI_P11_MODULE, PKI_MKPKI_QUIET).
#
set -euo pipefail

ME=mkpki-altchain.sh
. "$(dirname "${BASH_SOURCE[0]}")/mkpki-add.sh" "$@"

[ -f "$D/issuing.pem" ] || die "$D has no issuing CA (scripts/mkpki.sh)"
[ -e "$D/alt-chain.pem" ] && die "$D/alt-chain.pem exists: refusing to overwrite"
ISS_KEY="pkcs11:token=$TOKEN;object=issuing;type=private"

say "alternate root CA (key in $D/altroot.key)"
(umask 077; openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$D/altroot.key" 2>/dev/null) || die "openssl genpkey (alt root) failed"
"$PKICTL" selfsign --key "$D/altroot.key" \
    --subject "/O=nginx-pki/CN=nginx-pki Alt Root CA" --days 3650 \
    --out "$D/altroot.pem" || die "pkictl selfsign (alt root) failed"

# OpenSSL 3.0's `x509 -CA` re-signs only self-signed input, so the cross
# certificate is issued like the issuing CA itself: its subject, the
# token's public key, the same profile; the key identifiers then match
say "issuing CA cross-signed by the alternate root"
SUBJ=$(openssl x509 -in "$D/issuing.pem" -noout -subject -nameopt compat) \
    || die "cannot read the issuing CA subject"
"$PKICTL" issue --ca-cert "$D/altroot.pem" --ca-key "$D/altroot.key" \
    --pubkey-of "$ISS_KEY" --profile ca --pathlen 0 \
    --subject "${SUBJ#subject=}" --days 1825 \
    --out "$D/alt-chain.pem.tmp" "${VAULT[@]}" \
    || die "pkictl issue (cross certificate) failed"

# the cross certificate certifies exactly what the issuing CA signs
same() {
    [ "$(openssl x509 -in "$D/issuing.pem" -noout "$@" 2>&1)" \
      = "$(openssl x509 -in "$D/alt-chain.pem.tmp" -noout "$@" 2>&1)" ]
}
same -subject || die "the cross certificate's subject differs"
same -pubkey || die "the cross certificate's key differs"
same -ext subjectKeyIdentifier \
    || die "the cross certificate's subjectKeyIdentifier differs"
openssl verify -CAfile "$D/altroot.pem" "$D/alt-chain.pem.tmp" >/dev/null \
    || die "the cross certificate does not verify under the alternate root"
if [ -f "$D/server.pem" ]; then
    openssl verify -CAfile "$D/altroot.pem" -untrusted "$D/alt-chain.pem.tmp" \
        "$D/server.pem" >/dev/null \
        || die "a leaf of the issuing CA does not chain to the alternate root"
fi
mv "$D/alt-chain.pem.tmp" "$D/alt-chain.pem"

say "done: $D/altroot.pem, $D/alt-chain.pem"
