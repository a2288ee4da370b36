#!/usr/bin/env bash
#
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# EST enrollment throughput (not a test).  Starts a private setup like the
# demo (scripts/mkpki.sh + scripts/nginx-conf.sh) on free loopback ports,
# makes a pool of CSRs and runs wrk (keep-alive TLS, -t2 -c32 -d10s, a Lua
# script cycling through the pool) against simpleenroll, first with the
# issuing CA key in a PEM file, then in SoftHSM2.  Prints enrollments/s
# beside `openssl speed ecdsap256` from the same run and the ratio to the
# crypto limit: 2 cores x 1 / (1/sign + 2/verify) per second (one CSR
# verification + one signature + its verification per enrollment).
#
#   bench/est.sh            (after ./build.sh)
#   BENCH_DURATION=10s BENCH_CONNS=32 BENCH_THREADS=2 BENCH_CSRS=64 bench/est.sh
#
# The SoftHSM2 run has the metrics and the transaction log on (as the demo);
# it is repeated with both off (pki_metrics_zone off, no pki_audit_log),
# BENCH_METRICS_ROUNDS times in alternation (default 1; the order swaps
# every round), and each round (with its cost: the two runs of a round are
# back to back), the medians and the median of the per-round costs are
# printed.  BENCH_SKIP_FILE=1 skips the PEM-file run.  Redis's automatic
# AOF rewrite is off: a background rewrite landing in one side's run would
# distort it.
#
# BENCH_HOOK='CMD' runs CMD (bash -c) in the background while wrk runs,
# with LABEL (hsm, hsm-off, file), PIDS (the server's pids, comma-separated)
# and OUT (a file prefix in the run directory) in its environment; e.g.
#   BENCH_KEEP=1 BENCH_HOOK='perf stat -p $PIDS -o $OUT.stat -- sleep 4' ...
# BENCH_AUDIT_PARAMS='fsync=off' adds parameters to pki_audit_log (the
# "on" runs; to split the log's cost into writing and syncing).
#   BENCH_KEEP=1 BENCH_HOOK='strace -c -f -p ${PIDS//,/ -p } -o $OUT.strace & sleep 4; kill %1' ...
#
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${PKI_BUILD:-$TOP/build}
DUR=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNS:-32}
THREADS=${BENCH_THREADS:-2}
NCSR=${BENCH_CSRS:-64}

die() { echo "bench/est.sh: error: $*" >&2; exit 1; }

for f in pkictl libpkicore.so ngx_http_pki_module.so ngx_http_est_module.so; do
    [ -e "$BUILD/$f" ] || die "$BUILD/$f missing: run ./build.sh first"
done
for c in wrk redis-server nginx openssl curl; do
    command -v "$c" >/dev/null || die "$c not found"
done

mkdir -p "$TOP/bench/tmp"
W=$(mktemp -d "$TOP/bench/tmp/run-XXXXXX")
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

# CPU time (ms, user + system, all threads) of the given processes
cpu_ms() {
    local t=0 p v
    for p in "$@"; do
        v=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
        t=$((t + v))
    done
    echo $((t * 1000 / $(getconf CLK_TCK)))
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

echo "setting up in $W ..." >&2
PKI_BUILD="$BUILD" PKI_MKPKI_QUIET=1 "$TOP/scripts/mkpki.sh" "$W/pki"
export SOFTHSM2_CONF=$W/pki/hsm/softhsm2.conf

# HTTP Basic demo/demo with a salted SHA-1 entry ({SSHA}) instead of the
# demo's apr1 (1,000 MD5 rounds per request, about 10% of the CPU here):
# the benchmark measures the CA, not the password hash an operator picks.
SALT=$(openssl rand -hex 4)   # printable salt bytes
printf 'demo:{SSHA}%s\n' "$( { printf 'demo%s' "$SALT" | openssl sha1 -binary;
                               printf '%s' "$SALT"; } | base64 -w 0)" \
    > "$W/pki/htpasswd"

# A second issuing CA whose key is a PEM file, beside the same root.
F=$W/pki-file
PKI_BUILD="$BUILD" "$TOP/scripts/mkpki-filekey.sh" "$W/pki" "$F" \
    || die "scripts/mkpki-filekey.sh failed"

# CSR pool -> Lua script
echo "making $NCSR CSRs ..." >&2
{
    echo 'local csrs = {'
    for i in $(seq "$NCSR"); do
        printf '  "%s",\n' "$(openssl req -new -newkey ec \
            -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
            -subj "/CN=bench-$i" -addext "subjectAltName=DNS:bench-$i.example.com" \
            -outform DER 2>/dev/null | base64 -w 0)"
    done
    echo '}'
    cat <<'LUA'
local auth = "Basic ZGVtbzpkZW1v"   -- demo:demo
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/pkcs10"
wrk.headers["Authorization"] = auth

request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, csrs[(n % #csrs) + 1])
end
LUA
} > "$W/est.lua"

mkdir -p "$W/redis"
redis-server --port 0 --unixsocket "$W/redis.sock" --unixsocketperm 700 \
    --dir "$W/redis" --save "" --appendonly yes --appendfsync always \
    --auto-aof-rewrite-percentage 0 --daemonize no \
    --logfile "$W/redis/redis.log" &
REDIS_PID=$!
for _ in $(seq 50); do
    redis-cli -s "$W/redis.sock" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
done

HTTPS=$(free_port)
HTTP=$(free_port)

# run_one LABEL PKI_DIR [nginx-conf options]
#   -> $W/result-LABEL: "enrollments/s ok non-200 seconds cpu-ms/enrollment"
run_one() {
    local label=$1 pki=$2 p=$W/nginx-$1 out ok total secs non2xx rate
    local pids c0 c1 cpu
    shift 2
    mkdir -p "$p/conf" "$p/logs" "$p/tmp"
    "$TOP/scripts/nginx-conf.sh" --build "$BUILD" --pki "$pki" --prefix "$p" \
        --redis "$W/redis.sock" --https "$HTTPS" --http "$HTTP" --daemon off \
        --log-level warn --workers 2 --threads "${BENCH_POOL_THREADS:-8}" \
        "$@" > "$p/conf/nginx.conf"
    # experiments: BENCH_AUDIT_PARAMS="fsync=off" is added to pki_audit_log
    if [ -n "${BENCH_AUDIT_PARAMS:-}" ]; then
        sed -i "s|^\( *pki_audit_log [^;]*\);|\1 $BENCH_AUDIT_PARAMS;|" "$p/conf/nginx.conf"
    fi
    [ -z "${BENCH_CONF_SED:-}" ] || sed -i "$BENCH_CONF_SED" "$p/conf/nginx.conf"
    # A/B of two "on" variants: BENCH_OFF_ARGS='--audit DIR' makes the
    # "off" runs another "on" (with BENCH_CONF_SED_OFF applied)
    if [ "$label" = hsm-off ] && [ -n "${BENCH_CONF_SED_OFF:-}" ]; then
        sed -i "$BENCH_CONF_SED_OFF" "$p/conf/nginx.conf"
    fi
    nginx -p "$p/" -c conf/nginx.conf -t -q || die "nginx -t failed ($label)"
    nginx -p "$p/" -c conf/nginx.conf 2>>"$p/logs/stderr.log" &
    NGINX_PID=$!
    for _ in $(seq 100); do
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$HTTP/" && break
        sleep 0.1
    done
    # one enrollment must work before measuring
    curl -sS --max-time 10 --cacert "$W/pki/root.pem" -u demo:demo \
        -H 'Content-Type: application/pkcs10' \
        --data-binary "$(sed -n 2p "$W/est.lua" | tr -d ' ",')" \
        -o /dev/null -w '%{http_code}' \
        "https://127.0.0.1:$HTTPS/.well-known/est/simpleenroll" | grep -q 200 \
        || { tail -n 5 "$p/logs/error.log" >&2;
             die "enrollment does not work ($label): see $p/logs/error.log"; }

    # every run starts from the same disk state: the previous run's
    # writeback (Redis AOF, the log) must not land on this one
    sync -f "$W/redis" 2>/dev/null || sync
    sleep 1

    pids="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ') $REDIS_PID"
    hook=
    if [ -n "${BENCH_HOOK:-}" ]; then
        LABEL=$label PIDS=$(echo $pids | tr ' ' ,) OUT=$W/hook-$label-$(date +%s) \
            bash -c "$BENCH_HOOK" > "$W/hook-$label.log" 2>&1 &
        hook=$!
    fi
    c0=$(cpu_ms $pids)
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DUR" -s "$W/est.lua" \
              "https://127.0.0.1:$HTTPS/.well-known/est/simpleenroll")
    c1=$(cpu_ms $pids)
    [ -z "$hook" ] || wait "$hook" || true
    echo "$out" > "$W/wrk-$label.txt"
    total=$(echo "$out" | sed -n 's/^ *\([0-9]*\) requests in \([0-9.]*\)\([a-z]*\).*/\1/p')
    secs=$(echo "$out" | sed -n 's/^ *[0-9]* requests in \([0-9.]*\)\([a-z]*\).*/\1 \2/p' \
           | awk '{ v=$1; if ($2=="ms") v/=1000; if ($2=="m") v*=60; print v }')
    non2xx=$(echo "$out" | sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\)/\1/p')
    non2xx=${non2xx:-0}
    ok=$((total - non2xx))
    rate=$(awk -v o="$ok" -v s="$secs" 'BEGIN { printf "%.0f", o / s }')
    cpu=$(awk -v c=$((c1 - c0)) -v n="$ok" 'BEGIN { if (n > 0) printf "%.3f", c / n; else print "-" }')

    kill -QUIT "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true
    NGINX_PID=

    printf '%s %s %s %s %s\n' "$rate" "$ok" "$non2xx" "$secs" "$cpu" \
        > "$W/result-$label"
}

FILE_RATE=- FILE_OK=- FILE_BAD=-
if [ "${BENCH_SKIP_FILE:-0}" != 1 ]; then
    echo "wrk -t$THREADS -c$CONNS -d$DUR, CA key in a PEM file ..." >&2
    run_one file "$F" --ca-key "$F/issuing.key" --audit "$W/audit-file"
    read -r FILE_RATE FILE_OK FILE_BAD FILE_S < "$W/result-file"
fi

# metrics + transaction log off / on, alternating, the order swapped every
# round (off on, on off, ...) so that a drift (Redis growing, other load)
# does not favour one side; every round is printed, then the medians
ROUNDS=${BENCH_METRICS_ROUNDS:-1}
ON_ALL= OFF_ALL= ON_CPU= OFF_CPU= PAIR_RATE= PAIR_CPU=
: > "$W/rounds.txt"
for i in $(seq "$ROUNDS"); do
    if [ $((i % 2)) = 1 ]; then order="off on"; else order="on off"; fi
    for v in $order; do
        echo "wrk -t$THREADS -c$CONNS -d$DUR, SoftHSM2, metrics + audit $v ($i/$ROUNDS) ..." >&2
        if [ "$v" = off ]; then
            # shellcheck disable=SC2086
            run_one hsm-off "$W/pki" ${BENCH_OFF_ARGS:---audit off --metrics off}
            read -r OFF_RATE _ _ _ OFF_C < "$W/result-hsm-off"
            OFF_ALL="$OFF_ALL $OFF_RATE"
            OFF_CPU="$OFF_CPU $OFF_C"
        else
            run_one hsm "$W/pki" --audit "$W/audit"
            read -r HSM_RATE HSM_OK HSM_BAD HSM_S HSM_C < "$W/result-hsm"
            ON_ALL="$ON_ALL $HSM_RATE"
            ON_CPU="$ON_CPU $HSM_C"
        fi
    done
    # the cost within the round (both runs back to back): the drift of a
    # shared machine between rounds cancels out
    pr=$(awk -v a="$HSM_RATE" -v b="$OFF_RATE" 'BEGIN { printf "%.1f", 100 * (b - a) / b }')
    pc=$(awk -v a="$HSM_C" -v b="$OFF_C" 'BEGIN { if (b > 0) printf "%.1f", 100 * (a - b) / b; else print 0 }')
    PAIR_RATE="$PAIR_RATE $pr"
    PAIR_CPU="$PAIR_CPU $pc"
    printf '    round %d: off %s (%s ms CPU)  on %s (%s ms CPU)  cost %s%% (CPU %s%%)  (load average %s)\n' \
        "$i" "$OFF_RATE" "$OFF_C" "$HSM_RATE" "$HSM_C" "$pr" "$pc" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$W/rounds.txt"
done
median() { tr ' ' '\n' | grep . | sort -n | awk -v f="${1:-%.0f}" '{ a[NR] = $1 } END { if (NR % 2) printf f "\n", a[(NR + 1) / 2]; else printf f "\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
OFF_MED=$(echo "$OFF_ALL" | median)
ON_MED=$(echo "$ON_ALL" | median)
OFF_CMED=$(echo "$OFF_CPU" | median %.3f)
ON_CMED=$(echo "$ON_CPU" | median %.3f)
AUDIT_ENTRIES=$(cat "$W"/audit/audit*.log 2>/dev/null | wc -l || true)
"$BUILD/pkictl" audit verify "$W/audit" --pubkey "$W/pki/audit-pub.pem" \
    > "$W/audit-verify.txt" 2>&1 || true

echo "openssl speed -seconds 3 ecdsap256 ..." >&2
SPEED=$(openssl speed -seconds 3 ecdsap256 2>/dev/null | grep -E 'ecdsa \(nistp256\)' | tail -1)
SIGN=$(echo "$SPEED" | awk '{ print $(NF-1) }')
VERIFY=$(echo "$SPEED" | awk '{ print $NF }')
LIMIT=$(awk -v s="$SIGN" -v v="$VERIFY" 'BEGIN { printf "%.0f", 2 / (1/s + 2/v) }')

ratio() { awk -v a="$1" -v b="$LIMIT" 'BEGIN { printf "%.1f%%", 100 * a / b }'; }

cat <<EOF

EST simpleenroll, EC P-256 CSRs, wrk -t$THREADS -c$CONNS -d$DUR (keep-alive TLS), $(nproc) cores
  openssl speed ecdsap256 (1 core):  sign $SIGN/s  verify $VERIFY/s
  crypto limit (2 cores x 1/(1/sign + 2/verify)):  $LIMIT enrollments/s

  CA key       enrollments/s   ok       non-200   ratio to crypto limit
  PEM file     $(printf '%-15s %-8s %-9s %s' "$FILE_RATE" "$FILE_OK" "$FILE_BAD" "$( [ "$FILE_RATE" = - ] && echo - || ratio "$FILE_RATE")")
  SoftHSM2     $(printf '%-15s %-8s %-9s %s' "$HSM_RATE" "$HSM_OK" "$HSM_BAD" "$(ratio "$HSM_RATE")")

  metrics + transaction log (SoftHSM2, $ROUNDS alternating round(s), enrollments/s):
$(cat "$W/rounds.txt")
    median: off $OFF_MED   on $ON_MED   cost $(awk -v a="$ON_MED" -v b="$OFF_MED" 'BEGIN { printf "%.1f%%", 100 * (b - a) / b }')
    server CPU per enrollment (nginx + Redis, median): off $OFF_CMED ms   on $ON_CMED ms   cost $(awk -v a="$ON_CMED" -v b="$OFF_CMED" 'BEGIN { if (b > 0) printf "%.1f%%", 100 * (a - b) / b; else print "-" }')
    median of the per-round costs: rate $(echo "$PAIR_RATE" | median %.1f)%   CPU per enrollment $(echo "$PAIR_CPU" | median %.1f)%
    audit log: $AUDIT_ENTRIES lines, $(cat "$W/audit-verify.txt")

(wrk, nginx, Redis and TLS share the same cores; Redis appendonly with appendfsync always:
 every record is on disk before its certificate is returned)
EOF
