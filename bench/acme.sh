#!/usr/bin/env bash
#
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# ACME full-issuance throughput (not a test): our server against pebble in
# the same run.
#
# Builds bench/acme_bench.c (OpenSSL + cJSON), then for each server: one
# account (ES256), W workers each looping newOrder -> authorization ->
# http-01 challenge (answered by the load client's own responder) -> poll
# -> finalize (fresh P-256 CSR) -> poll -> certificate download, over
# keep-alive TLS, for BENCH_SECONDS.
#
#   ours:   nginx from scripts/nginx-conf.sh (the demo config: SoftHSM2
#           issuing key, 2 workers, thread pool), run in the modes of
#           BENCH_MODES (default "always split"):
#             always    everything in one Redis with appendfsync always (an
#                       fsync before every reply: all state durable)
#             split     the two durability classes: certificate records,
#                       serial reservations, revocations and accounts in
#                       that Redis (appendfsync always), nonces, orders,
#                       authorizations and challenges in a second Redis with
#                       appendfsync everysec (acme_redis)
#             everysec  everything in one Redis with appendfsync everysec
#           (two nginx instances side by side: one without, one with
#           acme_redis)
#   pebble: pebble (Debian) with PEBBLE_VA_NOSLEEP=1 and
#           pebble-challtestsrv as its DNS (every name is 127.0.0.1)
#
#   flock /tmp/pki-bench.lock bench/acme.sh            (after ./build.sh)
#   BENCH_SECONDS=6 BENCH_ROUNDS=2 BENCH_WORKERS=4 BENCH_MODES="split" \
#       flock /tmp/pki-bench.lock bench/acme.sh
#
# The servers run side by side and the runs alternate (ours in each mode,
# pebble, ours, pebble, ...) in BENCH_ROUNDS rounds of BENCH_SECONDS each,
# so a change in the load of a shared machine hits both alike; the rates
# are the sums.
#
# Prints the rates, the ratios, Redis commands per issuance (per store) and
# the load average before and after.
#
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${PKI_BUILD:-$TOP/build}
SECS=${BENCH_SECONDS:-6}                 # per run
ROUNDS=${BENCH_ROUNDS:-2}
WORKERS=${BENCH_WORKERS:-4}
# our configurations (see above); BENCH_REDIS_FSYNC is the old name
MODES=${BENCH_MODES:-${BENCH_REDIS_FSYNC:-always split}}

die() { echo "bench/acme.sh: error: $*" >&2; exit 1; }

for f in pkictl libpkicore.so ngx_http_pki_module.so ngx_http_acme_module.so; do
    [ -e "$BUILD/$f" ] || die "$BUILD/$f missing: run ./build.sh first"
done
for c in redis-server nginx openssl curl pebble pebble-challtestsrv cc \
         pkg-config; do
    command -v "$c" >/dev/null || die "$c not found (apt-get install pebble)"
done

mkdir -p "$TOP/bench/tmp"
W=$(mktemp -d "$TOP/bench/tmp/acme-XXXXXX")
NGINX_PID= NGINX2_PID= REDIS_PID= REDIS2_PID= PEBBLE_PID= CTS_PID=

stop_pid() {
    local pid=$1 sig=$2
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    set +e
    stop_pid "$NGINX_PID" QUIT
    stop_pid "$NGINX2_PID" QUIT
    stop_pid "$PEBBLE_PID" TERM
    stop_pid "$CTS_PID" TERM
    stop_pid "$REDIS_PID" TERM
    stop_pid "$REDIS2_PID" TERM
    [ "${BENCH_KEEP:-0}" = 1 ] || { rm -rf "$W"; rmdir "$TOP/bench/tmp" 2>/dev/null; }
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_url() {
    local url=$1 ca=$2
    for _ in $(seq 100); do
        curl -s -o /dev/null --max-time 2 --cacert "$ca" "$url" && return 0
        sleep 0.1
    done
    return 1
}

echo "building the load client ..." >&2
# shellcheck disable=SC2046
cc -O2 -std=c99 -D_GNU_SOURCE -Wall -Wextra -o "$W/acme_bench" \
    "$TOP/bench/acme_bench.c" \
    $(pkg-config --cflags --libs libssl libcrypto libcjson) -lpthread \
    || die "cannot build bench/acme_bench.c"

HTTPS=$(free_port)
HTTP=$(free_port)
HTTPS2=$(free_port)
HTTP2=$(free_port)
CHALL=$(free_port)              # http-01 responder of the load client
PEB=$(free_port)
PEBM=$(free_port)
DNS=$(free_port)
DNSM=$(free_port)

# --- ours ----------------------------------------------------------------------

echo "setting up nginx-pki in $W ..." >&2
PKI_BUILD="$BUILD" PKI_MKPKI_QUIET=1 "$TOP/scripts/mkpki.sh" "$W/pki"
export SOFTHSM2_CONF=$W/pki/hsm/softhsm2.conf

start_redis() {     # NAME FSYNC -> pid in $!
    mkdir -p "$W/$1"
    redis-server --port 0 --unixsocket "$W/$1.sock" --unixsocketperm 700 \
        --dir "$W/$1" --save "" --appendonly yes --appendfsync "$2" \
        --daemonize no --logfile "$W/$1/redis.log" &
}
# the durable store (pki_redis) and the replay-safe ACME state (acme_redis)
start_redis redis always
REDIS_PID=$!
start_redis state everysec
REDIS2_PID=$!
for s in redis state; do
    for _ in $(seq 50); do
        redis-cli -s "$W/$s.sock" ping 2>/dev/null | grep -q PONG && break
        sleep 0.1
    done
done

start_nginx() {     # DIR HTTPS HTTP [nginx-conf.sh options]
    local p=$1 https=$2 http=$3
    shift 3
    mkdir -p "$p/conf" "$p/logs" "$p/tmp"
    "$TOP/scripts/nginx-conf.sh" --build "$BUILD" --pki "$W/pki" --prefix "$p" \
        --redis "$W/redis.sock" --https "$https" --http "$http" --daemon off \
        --log-level warn --workers 2 --threads "${BENCH_POOL_THREADS:-8}" \
        --acme-http-port "$CHALL" "$@" > "$p/conf/nginx.conf"
    nginx -p "$p/" -c conf/nginx.conf -t -q || die "nginx -t failed ($p)"
    nginx -p "$p/" -c conf/nginx.conf 2>>"$p/logs/stderr.log" &
}
P=$W/nginx
start_nginx "$P" "$HTTPS" "$HTTP"
NGINX_PID=$!
start_nginx "$W/nginx-split" "$HTTPS2" "$HTTP2" \
    --acme-redis "unix:$W/state.sock"
NGINX2_PID=$!
wait_url "https://127.0.0.1:$HTTPS/acme/directory" "$W/pki/root.pem" \
    || die "our ACME directory does not answer (see $P/logs/error.log)"
wait_url "https://127.0.0.1:$HTTPS2/acme/directory" "$W/pki/root.pem" \
    || die "our split ACME directory does not answer"

# --- pebble --------------------------------------------------------------------

echo "setting up pebble ..." >&2
C=$W/pebble
mkdir -p "$C"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=bench minica" -keyout "$C/ca.key" -out "$C/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=localhost" -keyout "$C/tls.key" -out "$C/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' \
    > "$C/ext"
openssl x509 -req -in "$C/tls.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" \
    -CAcreateserial -days 30 -extfile "$C/ext" -out "$C/tls.pem" 2>/dev/null
cat > "$C/pebble.json" <<EOF
{"pebble": {"listenAddress": "127.0.0.1:$PEB",
            "managementListenAddress": "127.0.0.1:$PEBM",
            "certificate": "$C/tls.pem", "privateKey": "$C/tls.key",
            "httpPort": $CHALL, "tlsPort": $(free_port),
            "ocspResponderURL": "", "externalAccountBindingRequired": false}}
EOF

pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
    -dns01 "127.0.0.1:$DNS" -http01 "" -https01 "" -tlsalpn01 "" \
    -management "127.0.0.1:$DNSM" > "$C/challtestsrv.log" 2>&1 &
CTS_PID=$!
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 \
    pebble -config "$C/pebble.json" -dnsserver "127.0.0.1:$DNS" \
    > "$C/pebble.log" 2>&1 &
PEBBLE_PID=$!
wait_url "https://127.0.0.1:$PEB/dir" "$C/ca.pem" || die "pebble does not answer"

# --- runs: ours and pebble alternate, so that a change in the load of the
# shared machine hits both alike ---------------------------------------------

run_one() {     # LABEL URL CA -> appends its RESULT line to $W/res-LABEL
    local label=$1 url=$2 ca=$3 line
    line=$("$W/acme_bench" -d "$url" -c "$ca" -p "$CHALL" -w "$WORKERS" \
               -t "$SECS" -l "$label" | grep '^RESULT') \
        || { tail -n 5 "$P/logs/error.log" "$C/pebble.log" >&2 2>/dev/null;
             die "the run $label failed"; }
    echo "$line" >&2
    echo "$line" >> "$W/res-$label"
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

rcmds() {           # SOCK -> commands since the last resetstat
    redis-cli -s "$1" info commandstats \
        | awk -F'[=,:]' '/^cmdstat_/ && $1 !~ /cmdstat_(info|ping|config)$/ {
                             n += $3 } END { print n + 0 }'
}

for r in $(seq "$ROUNDS"); do
    for m in $MODES; do
        case $m in
            always|split) fs=always ;;
            everysec) fs=everysec ;;
            *) die "unknown mode $m (always, split, everysec)" ;;
        esac
        url="https://127.0.0.1:$HTTPS/acme/directory"
        [ "$m" = split ] && url="https://127.0.0.1:$HTTPS2/acme/directory"
        redis-cli -s "$W/redis.sock" config set appendfsync "$fs" | grep -q OK \
            || die "redis: cannot set appendfsync $fs"
        redis-cli -s "$W/redis.sock" config resetstat > /dev/null
        redis-cli -s "$W/state.sock" config resetstat > /dev/null
        echo "round $r: ours ($m), $WORKERS workers, ${SECS}s ..." >&2
        run_one "nginx-pki-$m" "$url" "$W/pki/root.pem"
        echo "$(rcmds "$W/redis.sock") $(rcmds "$W/state.sock")" \
            >> "$W/rcmds-$m"
    done
    redis-cli -s "$W/redis.sock" config set appendfsync always > /dev/null
    echo "round $r: pebble, $WORKERS workers, ${SECS}s ..." >&2
    run_one pebble "https://127.0.0.1:$PEB/dir" "$C/ca.pem"
done

LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report --------------------------------------------------------------------

# sums of the rounds: "issued failed seconds requests rate"
total() {
    awk '{ for (i = 3; i <= NF; i++) { split($i, kv, "="); v[kv[1]] += kv[2] } }
         END { printf "%d %d %.1f %d %.1f\n", v["issued"], v["failed"],
               v["seconds"], v["requests"], v["issued"] / v["seconds"] }' "$1"
}
row() {
    local t
    t=$(total "$W/res-$2")
    set -- "$1" $t
    printf '  %-36s %-8s %-8s %-9s %-13s %s\n' "$1" "$2" "$3" "$4" "$6" "$5"
}
label() {
    case $1 in
        always) echo "nginx-pki, all durable (always)" ;;
        split) echo "nginx-pki, split (always+everysec)" ;;
        everysec) echo "nginx-pki, all everysec" ;;
    esac
}
PR=$(total "$W/res-pebble" | awk '{ print $5 }')
{
    echo
    echo "ACME full issuances (newOrder, http-01, finalize, download), one account, ES256,"
    echo "$WORKERS workers on keep-alive TLS, $ROUNDS alternating rounds of ${SECS}s,"
    echo "$(nproc) cores shared by the client and the servers"
    echo "load average (1 5 15 min): $LOAD0 before, $LOAD1 after"
    echo
    printf '  %-36s %-8s %-8s %-9s %-13s %s\n' server issued failed seconds \
        issuances/s requests
    for m in $MODES; do
        row "$(label "$m")" "nginx-pki-$m"
    done
    row "pebble 2.4, VA_NOSLEEP" pebble
    echo
    for m in $MODES; do
        OR=$(total "$W/res-nginx-pki-$m" | awk '{ print $5 }')
        OI=$(total "$W/res-nginx-pki-$m" | awk '{ print $1 }')
        RD=$(awk '{ n += $1 } END { print n }' "$W/rcmds-$m")
        RS=$(awk '{ n += $2 } END { print n }' "$W/rcmds-$m")
        printf '  ratio %s / pebble: %s   (Redis commands per issuance: %s durable + %s state)\n' \
            "$m" "$(awk -v a="$OR" -v b="$PR" 'BEGIN { printf "%.2fx", a / b }')" \
            "$(awk -v c="$RD" -v n="$OI" 'BEGIN { printf "%.1f", n ? c / n : 0 }')" \
            "$(awk -v c="$RS" -v n="$OI" 'BEGIN { printf "%.1f", n ? c / n : 0 }')"
    done
}
