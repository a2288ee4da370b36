#!/usr/bin/env bash
#
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Matter factory DAC throughput (not a test).  Starts a private setup like
# the demo (scripts/mkpki.sh with the Matter hierarchies, the PAI key in
# SoftHSM2, scripts/nginx-conf.sh) on free loopback ports, posts batches
# of 1000 CSRs to /matter/dac/batch (BENCH_CLIENTS at once, for about
# BENCH_SECONDS) and prints DACs/s next to the raw SoftHSM2 P-256 signing
# rate of the same PAI key measured in the same run (bench/p11sign.c:
# C_SignInit + C_Sign on a 32-byte digest, one session per thread).
#
# The comparison is at the same parallelism: the server signs with
# BENCH_CLIENTS batches in flight, each split over matter_batch_threads
# (BENCH_BATCH_THREADS) threads, so P = CLIENTS x BATCH_THREADS threads call
# C_Sign at once; the raw rate is measured with 1 thread and with P
# threads, and the ratio is DACs/s over the P-thread raw rate (the 1-thread
# ratio is printed too).  The load average is printed with the numbers.
#
# bench/matter_inproc.c measures the same batch inside the core (no nginx,
# TLS or curl) and pki_key_sign_x509 alone, to see where the time goes.
#
#   flock /tmp/pki-bench.lock bench/matter.sh      (after ./build.sh)
#   BENCH_SECONDS=10 BENCH_CLIENTS=2 BENCH_BATCH=1000 BENCH_BATCH_THREADS=2 \
#       bench/matter.sh
#
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${PKI_BUILD:-$TOP/build}
SECS=${BENCH_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-2}
BATCH=${BENCH_BATCH:-1000}
BT=${BENCH_BATCH_THREADS:-2}
P=$(( CLIENTS * BT ))
MOD=${PKI_P11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

die() { echo "bench/matter.sh: error: $*" >&2; exit 1; }

for f in pkictl libpkicore.so ngx_http_pki_module.so ngx_http_matter_module.so; do
    [ -e "$BUILD/$f" ] || die "$BUILD/$f missing: run ./build.sh first"
done
for c in redis-server nginx openssl curl cc; do
    command -v "$c" >/dev/null || die "$c not found"
done

mkdir -p "$TOP/bench/tmp"
W=$(mktemp -d "$TOP/bench/tmp/matter-XXXXXX")
NGINX_PID=
REDIS_PID=

cleanup() {
    set +e
    if [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2>/dev/null; then
        kill -QUIT "$NGINX_PID"
        for _ in $(seq 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NGINX_PID" 2>/dev/null
        wait "$NGINX_PID" 2>/dev/null
    fi
    if [ -n "$REDIS_PID" ] && kill -0 "$REDIS_PID" 2>/dev/null; then
        kill -TERM "$REDIS_PID"
        wait "$REDIS_PID" 2>/dev/null
    fi
    [ "${BENCH_KEEP:-0}" = 1 ] || { rm -rf "$W"; rmdir "$TOP/bench/tmp" 2>/dev/null; }
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

echo "setting up in $W ..." >&2
PKI_BUILD="$BUILD" PKI_MKPKI_QUIET=1 PKI_MKPKI_MATTER=1 "$TOP/scripts/mkpki.sh" "$W/pki"
export SOFTHSM2_CONF=$W/pki/hsm/softhsm2.conf
[ -f "$W/pki/matter/pai.pem" ] || die "no Matter hierarchy in $W/pki"

cc -O2 -I/usr/include/p11-kit-1 -o "$W/p11sign" "$TOP/bench/p11sign.c" \
    -ldl -lpthread || die "cannot build bench/p11sign.c"

# The batch body: BATCH CSRs, each of its own key (a batch with two CSRs of
# one key is refused: one DAC per device key).
echo "making the batch of $BATCH CSRs ..." >&2
for i in $(seq "$BATCH"); do
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout /dev/null -subj "/CN=line-1 unit $i" -outform DER 2>/dev/null \
        | base64 -w 0
    echo
done > "$W/csrs.txt"
awk -v n="$BATCH" '{ c[NR] = $0 } END {
    printf "{\"csrs\":[";
    for (i = 0; i < n; i++) printf "%s\"%s\"", (i ? "," : ""), c[(i % NR) + 1];
    printf "]}" }' "$W/csrs.txt" > "$W/batch.json"

mkdir -p "$W/redis"
redis-server --port 0 --unixsocket "$W/redis.sock" --unixsocketperm 700 \
    --dir "$W/redis" --save "" --appendonly yes --appendfsync always \
    --daemonize no --logfile "$W/redis/redis.log" &
REDIS_PID=$!
for _ in $(seq 50); do
    redis-cli -s "$W/redis.sock" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
done

HTTPS=$(free_port)
HTTP=$(free_port)
NP=$W/nginx
mkdir -p "$NP/conf" "$NP/logs" "$NP/tmp"
"$TOP/scripts/nginx-conf.sh" --build "$BUILD" --pki "$W/pki" --prefix "$NP" \
    --redis "$W/redis.sock" --https "$HTTPS" --http "$HTTP" --daemon off \
    --log-level warn --workers 2 --threads "${BENCH_POOL_THREADS:-8}" \
    | sed "s|matter_dac_batch matter-pai matter-dac;|&\\n            matter_batch_threads $BT;|" \
    > "$NP/conf/nginx.conf"
grep -q "matter_batch_threads $BT;" "$NP/conf/nginx.conf" \
    || die "cannot set matter_batch_threads in the generated nginx.conf"
nginx -p "$NP/" -c conf/nginx.conf -t -q || die "nginx -t failed"
nginx -p "$NP/" -c conf/nginx.conf 2>>"$NP/logs/stderr.log" &
NGINX_PID=$!
for _ in $(seq 100); do
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$HTTP/" && break
    sleep 0.1
done

URL=https://127.0.0.1:$HTTPS/matter/dac/batch
post() {
    curl -sS --max-time 120 --cacert "$W/pki/root.pem" -u demo:demo \
        -H 'Content-Type: application/json' --data-binary "@$W/batch.json" \
        -o "$1" -w '%{http_code}' "$URL"
}

# one batch must work before measuring (and warms up every worker)
[ "$(post "$W/warm.json")" = 200 ] \
    || { head -c 300 "$W/warm.json" >&2; echo >&2;
         die "the batch endpoint does not work: see $NP/logs/error.log"; }

# raw_rate THREADS -> signatures/s (3 s)
raw_rate() { "$W/p11sign" "$MOD" nginx-pki matter-pai "$W/pki/hsm/pin" "$1" 3; }

client() {
    local c=$1 k=0 end=$2
    while [ "$(date +%s)" -lt "$end" ]; do
        code=$(post "$W/out-$c.json")
        [ "$code" = 200 ] || { echo "batch answered $code" >&2; break; }
        k=$((k + 1))
    done
    echo "$k" > "$W/count-$c"
}

# CPU ticks (user + system, all threads) of the given processes
cpu_ticks() {
    local p t=0
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        t=$(( t + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }') ))
    done
    echo "$t"
}
NGINX_ALL() { echo "$NGINX_PID" $(pgrep -P "$NGINX_PID"); }
HZ=$(getconf CLK_TCK)

# run_batches FSYNC -> "DACs seconds rate nginx-us-per-DAC redis-us-per-DAC"
# (CPU time of nginx and Redis per DAC: robust to the machine's load)
run_batches() {
    local t0 t1 end n=0 pids=() c ng0 ng1 rd0 rd1
    redis-cli -s "$W/redis.sock" config set appendfsync "$1" >/dev/null
    echo "batches of $BATCH, $CLIENTS clients, about ${SECS}s, Redis appendfsync $1 ..." >&2
    ng0=$(cpu_ticks $(NGINX_ALL))
    rd0=$(cpu_ticks "$REDIS_PID")
    t0=$(date +%s.%N)
    end=$(( $(date +%s) + SECS ))
    for c in $(seq "$CLIENTS"); do client "$c" "$end" & pids+=($!); done
    wait "${pids[@]}"
    t1=$(date +%s.%N)
    ng1=$(cpu_ticks $(NGINX_ALL))
    rd1=$(cpu_ticks "$REDIS_PID")
    for c in $(seq "$CLIENTS"); do n=$(( n + $(cat "$W/count-$c") * BATCH )); done
    awk -v n="$n" -v a="$t0" -v b="$t1" -v ng=$((ng1 - ng0)) -v rd=$((rd1 - rd0)) \
        -v hz="$HZ" 'BEGIN { printf "%d %.1f %.0f %.0f %.0f\n", n, b - a, n / (b - a),
                              ng * 1e6 / hz / n, rd * 1e6 / hz / n }'
}

# raw rates and batches interleaved, so that a change of the machine's
# load hits both sides: raw(1), raw(P), always, raw(P), everysec, raw(1)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "raw SoftHSM2 C_Sign with the PAI key (1 and $P threads, 3 s each) ..." >&2
RAW1A=$(raw_rate 1)
RAWPA=$(raw_rate "$P")
read -r N_ALW S_ALW R_ALW C_ALW D_ALW < <(run_batches always)
RAWPB=$(raw_rate "$P")
read -r N_SEC S_SEC R_SEC C_SEC D_SEC < <(run_batches everysec)
RAW1B=$(raw_rate 1)
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
RAW1=$(( (RAW1A + RAW1B) / 2 ))
RAWP=$(( (RAWPA + RAWPB) / 2 ))
RECORDS=$(redis-cli -s "$W/redis.sock" --scan --pattern 'pki:{ca:matter-pai}:cert:*' | wc -l)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

cat <<EOF

Matter DAC batch issuance, $(nproc) cores, PAI key in SoftHSM2 ($MOD)
  command: BENCH_SECONDS=$SECS BENCH_CLIENTS=$CLIENTS BENCH_BATCH=$BATCH BENCH_BATCH_THREADS=$BT bench/matter.sh
  load average before: $LOAD0   after: $LOAD1
  raw SoftHSM2 P-256 C_Sign, PAI key:  1 thread $RAW1/s ($RAW1A, $RAW1B)   $P threads $RAWP/s ($RAWPA, $RAWPB)
  batch endpoint ($BATCH CSRs per request, $CLIENTS clients x $BT batch threads = $P signing threads), $RECORDS records in Redis:
    Redis appendfsync always:    $N_ALW DACs in $S_ALW s = $R_ALW DACs/s   ratio $(ratio "$R_ALW" "$RAWP") (vs 1 thread $(ratio "$R_ALW" "$RAW1"))
    Redis appendfsync everysec:  $N_SEC DACs in $S_SEC s = $R_SEC DACs/s   ratio $(ratio "$R_SEC" "$RAWP") (vs 1 thread $(ratio "$R_SEC" "$RAW1"))
  (ratio: DACs/s over the raw rate at the same parallelism, $P threads: $RAWP/s)
  CPU per DAC (user + system, robust to load): nginx $C_ALW us, Redis $D_ALW us (always);
    nginx $C_SEC us, Redis $D_SEC us (everysec); one raw C_Sign at 1 thread costs $(awk -v r="$RAW1" 'BEGIN { printf "%.0f", 1e6 / r }') us of wall time

(each DAC: CSR parsed and its signature verified, serial reserved in Redis
 with its intent (one round trip per batch), signed in SoftHSM2, signature
 verified, Matter profile checked, record committed (one round trip per
 batch) and its audit event emitted before the answer; nginx, Redis and
 curl share the same cores)
EOF
