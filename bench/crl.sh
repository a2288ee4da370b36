#!/usr/bin/env bash
#
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# CRL build time for a CA with many revoked certificates (not a test).
# Builds bench/crl_bench.c against build/libpkicore.so, starts a private
# redis-server on a unix socket, makes a P-256 CA, fills its revoked hash
# with N entries and times pki_crl_build (best of RUNS).  Goal on the
# 2-core box: 100,000 entries in under 2 s.
#
#   bench/crl.sh              (after ./build.sh)
#   BENCH_CRL_N=100000 BENCH_CRL_RUNS=3 bench/crl.sh
#
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${PKI_BUILD:-$TOP/build}
N=${BENCH_CRL_N:-100000}
RUNS=${BENCH_CRL_RUNS:-3}

die() { echo "bench/crl.sh: error: $*" >&2; exit 1; }

[ -e "$BUILD/libpkicore.so" ] || die "$BUILD/libpkicore.so missing: run ./build.sh first"
for c in redis-server openssl cc pkg-config; do
    command -v "$c" >/dev/null || die "$c not found"
done

W=$(mktemp -d /tmp/pki-crlbench.XXXXXX)
REDIS_PID=

cleanup() {
    set +e
    if [ -n "$REDIS_PID" ] && kill -0 "$REDIS_PID" 2>/dev/null; then
        kill -TERM "$REDIS_PID"
        wait "$REDIS_PID" 2>/dev/null
    fi
    rm -rf "$W"
}
trap cleanup EXIT INT TERM

cc -O2 -std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$TOP/core" \
    $(pkg-config --cflags hiredis libcrypto) \
    -o "$W/crl_bench" "$TOP/bench/crl_bench.c" \
    -L"$BUILD" -lpkicore -Wl,-rpath,"$BUILD" \
    $(pkg-config --libs hiredis libcrypto)

redis-server --port 0 --unixsocket "$W/redis.sock" --unixsocketperm 700 \
    --dir "$W" --save '' --appendonly no --loglevel warning \
    >"$W/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 50); do [ -S "$W/redis.sock" ] && break; sleep 0.1; done
[ -S "$W/redis.sock" ] || die "redis-server did not start"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$W/ca.key" -out "$W/ca.pem" -days 30 -subj "/O=Bench/CN=Bench CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

echo "bench/crl.sh: $N revoked entries, $(nproc) cores, $(openssl version)"
"$W/crl_bench" "$W/redis.sock" "$W/ca.pem" "$W/ca.key" "$N" "$RUNS" "$W/crl.der"

# The oracle: the last CRL verifies and lists every entry.
openssl crl -inform DER -in "$W/crl.der" -CAfile "$W/ca.pem" -noout 2>&1 \
    | grep -q 'verify OK' || die "openssl crl: the CRL does not verify"
got=$(openssl crl -inform DER -in "$W/crl.der" -noout -text | grep -c 'Serial Number:')
[ "$got" = "$N" ] || die "openssl crl lists $got entries, want $N"
echo "openssl crl -CAfile: verify OK, $got entries"
