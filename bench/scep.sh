#!/usr/bin/env bash
#
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# SCEP PKIOperation enrollments per second (not a test): our nginx module
# against micromdm's scepserver (package scep) in the same run.
#
# The load client is t/lib/scepmsg.c (OpenSSL only): for every run it
# pre-builds a pool of PKCSReq messages (RSA-2048 requester keys, distinct
# subjects, AES-128 envelopes, challenge password) on every core before the
# clock, then POSTs them over C keep-alive connections for BENCH_SECONDS
# and counts the CertReps with pkiStatus SUCCESS (read from the bytes: no
# RSA and no certificate decoding in the client while the clock runs).
# Only successful enrollments count, for both servers, and the client
# prints why the others failed (HTTP status, failInfo, lost connections)
# and its own CPU time per request (it must not be the bottleneck).
#
# Servers, all up for the whole run (one network namespace):
#   ours-hsm   nginx-pki as the demo: CA key (P-256) in SoftHSM2, RA key
#              (RSA-2048) in a file, Redis appendfsync always, audit log
#   ours-file  the same with the issuing CA key in a PEM file (as
#              micromdm keeps its CA key); BENCH_SKIP_FILE=1 skips it
#   micromdm   scepserver 2.1.0, file depot, CA key RSA-2048 in a file
# BENCH_ROUNDS rounds; in each, every server gets one run (the order
# alternates between rounds).  Per run: enrollments/s and the server's CPU
# time per successful enrollment (from /proc/PID/stat: nginx master and
# workers, and Redis, for ours; scepserver for micromdm).  At the end the
# medians and the per-round ratios.  On a machine shared with other work
# the CPU ratio is much steadier than the rate ratio.
#
# scepserver binds every address and has no bind option: the whole bench
# re-executes itself in a private network namespace (unshare -n, as root).
#
# micromdm's failures (failInfo badRequest) are its own: its file depot
# reads the serial file while a concurrent request rewrites it ("failed to
# sign CSR" with "could not convert  to serial number", "open
# depot/serial: file exists" or "... no such file or directory" in its
# log); they are fast answers, not timeouts.  The count is printed.
#
#   flock /tmp/pki-bench.lock bench/scep.sh          (after ./build.sh)
#   BENCH_SECONDS=5 BENCH_ROUNDS=3 BENCH_CONC=8 flock /tmp/pki-bench.lock bench/scep.sh
#   BENCH_BASE_BUILD=DIR adds "base-hsm", ours-hsm built from DIR (A/B).
#   BENCH_PERF=DIR: perf record -g of ours-hsm's nginx during round 1
#   (DIR/perf.data) and of its Redis (DIR/perf-redis.data); that run is
#   slowed by perf: for profiles, not numbers.  BENCH_ONLY=ours-hsm runs
#   only the named servers; BENCH_PERF_OPTS="--call-graph dwarf -F 400"
#   replaces -g.
#
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${PKI_BUILD:-$TOP/build}
SECS=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
CONC=${BENCH_CONC:-8}

die() { echo "bench/scep.sh: error: $*" >&2; exit 1; }

for f in pkictl libpkicore.so ngx_http_pki_module.so ngx_http_scep_module.so; do
    [ -e "$BUILD/$f" ] || die "$BUILD/$f missing: run ./build.sh first"
done
for c in redis-server nginx openssl curl cc scepserver unshare ip python3; do
    command -v "$c" >/dev/null || die "$c not found"
done
[ "$(id -u)" -eq 0 ] || die "scepserver needs unshare -n: run as root"

if [ "${PKI_SCEP_BENCH_NETNS:-}" != 1 ]; then
    exec unshare -n env PKI_SCEP_BENCH_NETNS=1 bash "$0" "$@"
fi
ip link set lo up

mkdir -p "$TOP/bench/tmp"
W=$(mktemp -d "$TOP/bench/tmp/scep-XXXXXX")
PIDS_TO_STOP=()     # nginx: QUIT; the rest: TERM
NGINX_PIDS=" "

cleanup() {
    set +e
    local p
    for p in "${PIDS_TO_STOP[@]}"; do
        kill -0 "$p" 2>/dev/null || continue
        case $NGINX_PIDS in
            *" $p "*) kill -QUIT "$p" 2>/dev/null ;;
            *) kill -TERM "$p" 2>/dev/null ;;
        esac
    done
    for p in "${PIDS_TO_STOP[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
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

median() { tr ' ' '\n' | grep -v '^-*$' | sort -g | awk '{ v[NR] = $1 }
    END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
          else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "setting up in $W ..." >&2
cc -O2 -o "$W/scepmsg" "$TOP/t/lib/scepmsg.c" -lcrypto -lpthread \
    || die "cannot build t/lib/scepmsg.c"
PKI_BUILD="$BUILD" PKI_MKPKI_QUIET=1 "$TOP/scripts/mkpki.sh" "$W/pki"
export SOFTHSM2_CONF=$W/pki/hsm/softhsm2.conf

# A second issuing CA whose key is a PEM file, beside the same root (as
# bench/est.sh does), for the like-for-like line.
F=$W/pki-file
if [ "${BENCH_SKIP_FILE:-0}" != 1 ]; then
    # (the same RA key, certified by that CA)
    PKI_BUILD="$BUILD" "$TOP/scripts/mkpki-filekey.sh" "$W/pki" "$F" \
        || die "scripts/mkpki-filekey.sh failed"
fi

# --- our servers ------------------------------------------------------------------

declare -A URL RCPT CHAL SPIDS NGPIDS RDPIDS POOL

# start_ours NAME BUILD_DIR PKI_DIR [nginx-conf options]
start_ours() {
    local name=$1 build=$2 pki=$3 d=$W/$1 http https ngx rds
    shift 3
    mkdir -p "$d/redis" "$d/nginx/conf" "$d/nginx/logs" "$d/nginx/tmp"
    redis-server --port 0 --unixsocket "$d/redis.sock" --unixsocketperm 700 \
        --dir "$d/redis" --save "" --appendonly yes --appendfsync always \
        --daemonize no --logfile "$d/redis/redis.log" &
    rds=$!
    PIDS_TO_STOP+=("$rds")
    for _ in $(seq 50); do
        redis-cli -s "$d/redis.sock" ping 2>/dev/null | grep -q PONG && break
        sleep 0.1
    done
    https=$(free_port)
    http=$(free_port)
    "$TOP/scripts/nginx-conf.sh" --build "$build" --pki "$pki" \
        --prefix "$d/nginx" --redis "$d/redis.sock" --https "$https" \
        --http "$http" --daemon off --log-level warn --workers 2 \
        --threads "${BENCH_POOL_THREADS:-8}" --audit "$d/audit" "$@" \
        > "$d/nginx/conf/nginx.conf"
    nginx -p "$d/nginx/" -c conf/nginx.conf -t -q || die "nginx -t failed ($name)"
    nginx -p "$d/nginx/" -c conf/nginx.conf 2>>"$d/nginx/logs/stderr.log" &
    ngx=$!
    PIDS_TO_STOP=("$ngx" "${PIDS_TO_STOP[@]}")
    NGINX_PIDS="$NGINX_PIDS$ngx "
    for _ in $(seq 100); do
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$http/" && break
        sleep 0.1
    done
    sleep 0.5
    NGPIDS[$name]="$ngx $(pgrep -P "$ngx" | tr '\n' ' ')"
    RDPIDS[$name]=$rds
    SPIDS[$name]="${NGPIDS[$name]} $rds"
    URL[$name]="http://127.0.0.1:$http/scep"
    RCPT[$name]=$pki/ra.pem
    CHAL[$name]=demo
}

SERVERS="ours-hsm"
start_ours ours-hsm "$BUILD" "$W/pki"
if [ "${BENCH_SKIP_FILE:-0}" != 1 ]; then
    start_ours ours-file "$BUILD" "$F" --ca-key "$F/issuing.key"
    SERVERS="$SERVERS ours-file"
fi
# BENCH_BASE_BUILD=DIR: the same as ours-hsm from another build (an A/B
# of a change in the same run: "base-hsm")
if [ -n "${BENCH_BASE_BUILD:-}" ]; then
    start_ours base-hsm "$BENCH_BASE_BUILD" "$W/pki"
    SERVERS="$SERVERS base-hsm"
fi

# --- micromdm scepserver ------------------------------------------------------------

# start_mdm N: a scepserver with a fresh depot in $W/mdm-N.  Its file depot
# scans its whole index.txt on every enrollment (HasCN), so its cost grows
# with the certificates it has issued: every round starts it afresh (as a
# run of a few hundred requests on a new depot does) unless BENCH_MDM_KEEP=1.
start_mdm() {
    local d=$W/mdm-$1
    if [ -n "${MDM_PID:-}" ]; then
        kill -TERM "$MDM_PID" 2>/dev/null
        wait "$MDM_PID" 2>/dev/null || true
    fi
    mkdir -p "$d"
    ( cd "$d" && scepserver ca -init -depot depot -keySize 2048 >/dev/null 2>&1 ) \
        || die "scepserver ca -init failed"
    ( cd "$d" && exec scepserver -depot depot -port 2016 -challenge secret123 \
          -crtvalid 30 > server.log 2>&1 ) &
    # the subshell exec'd scepserver: MDM_PID is the server itself
    MDM_PID=$!
    PIDS_TO_STOP+=("$MDM_PID")
    for _ in $(seq 100); do
        curl -s -o /dev/null --max-time 1 \
            "http://127.0.0.1:2016/scep?operation=GetCACaps" && break
        sleep 0.1
    done
    SPIDS[micromdm]=$MDM_PID
    RCPT[micromdm]=$d/depot/ca.pem
    MDM_DIR=$d
}

MDM_PID=
start_mdm 0
URL[micromdm]=http://127.0.0.1:2016/scep
CHAL[micromdm]=secret123
SERVERS="$SERVERS micromdm"
# BENCH_ONLY="ours-hsm ...": run only these (profiling)
[ -n "${BENCH_ONLY:-}" ] && SERVERS=$BENCH_ONLY

# first pool sizes (messages pre-built per run); later rounds size the
# pool from the rate seen (1.5x BENCH_SECONDS of it)
for s in $SERVERS; do
    case $s in
        micromdm) POOL[$s]=$((SECS * ${BENCH_GUESS_MDM:-700})) ;;
        *) POOL[$s]=$((SECS * ${BENCH_GUESS_OURS:-1500})) ;;
    esac
done

# every server must enroll before the clock
for s in $SERVERS; do
    out=$("$W/scepmsg" bench --url "${URL[$s]}" --rcpt "${RCPT[$s]}" \
              --challenge "${CHAL[$s]}" --n 4 --conc 1 --keys 1 --tag "warm-$s") \
        || die "$s does not enroll: $out"
done

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
RES=$W/results
: > "$RES"

# run ROUND SERVER -> a line in $RES:
#   round server rate ok sent secs cpu_per_enroll_ms nginx_ms redis_ms
#   client_cpu_per_req_ms exhausted "details"
run() {
    local r=$1 s=$2 out c0 c1 n0 n1 ok rate sent secs cpe ngx rds ccpu exh perf=
    sync -f "$W" 2>/dev/null || sync
    sleep 0.5
    if [ -n "${BENCH_PERF:-}" ] && [ "$r" = 1 ] && [ "$s" = ours-hsm ]; then
        mkdir -p "$BENCH_PERF"
        perf record ${BENCH_PERF_OPTS:--g} -o "$BENCH_PERF/perf.data" \
            -p "$(echo ${NGPIDS[$s]} | tr ' ' ',')" >/dev/null 2>&1 &
        perf="$!"
        perf record ${BENCH_PERF_OPTS:--g} -o "$BENCH_PERF/perf-redis.data" \
            -p "${RDPIDS[$s]}" >/dev/null 2>&1 &
        perf="$perf $!"
        sleep 1
    fi
    c0=$(cpu_ms ${SPIDS[$s]})
    n0=$([ "$s" = micromdm ] && echo 0 || cpu_ms ${NGPIDS[$s]})
    out=$("$W/scepmsg" bench --url "${URL[$s]}" --rcpt "${RCPT[$s]}" \
              --challenge "${CHAL[$s]}" --n "${POOL[$s]}" --conc "$CONC" \
              --secs "$SECS" --tag "$s-$r") || true
    c1=$(cpu_ms ${SPIDS[$s]})
    n1=$([ "$s" = micromdm ] && echo 0 || cpu_ms ${NGPIDS[$s]})
    if [ -n "$perf" ]; then
        kill -INT $perf
        wait $perf 2>/dev/null || true
    fi
    ok=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<< "$out")
    sent=$(sed -n 's/^n=\([0-9]*\).*/\1/p' <<< "$out")
    rate=$(sed -n 's/.* rate=\([0-9.]*\).*/\1/p' <<< "$out")
    secs=$(sed -n 's/.* secs=\([0-9.]*\).*/\1/p' <<< "$out")
    ccpu=$(sed -n 's/.* client_cpu_per_req_ms=\([0-9.]*\).*/\1/p' <<< "$out")
    exh=$(sed -n 's/.* exhausted=\([01]\).*/\1/p' <<< "$out")
    [ -n "$ok" ] && [ -n "$rate" ] || die "$s: no result: $out"
    cpe=$(awk -v c=$((c1 - c0)) -v n="$ok" 'BEGIN { if (n > 0) printf "%.2f", c / n; else print "-" }')
    if [ "$s" = micromdm ]; then
        ngx=- rds=-
    else
        ngx=$(awk -v c=$((n1 - n0)) -v n="$ok" 'BEGIN { if (n > 0) printf "%.2f", c / n; else print "-" }')
        rds=$(awk -v t="$cpe" -v g="$ngx" 'BEGIN { if (t != "-") printf "%.2f", t - g; else print "-" }')
    fi
    echo "$r $s $rate $ok $sent $secs $cpe $ngx $rds $ccpu $exh $(cut -d' ' -f5- <<< "$out" | sed 's/client_cpu[^ ]* //g; s/pool=[0-9]* //; s/exhausted=[01] *//')" >> "$RES"
    printf '  round %s %-9s %7s/s  ok %5s of %5s in %5ss  CPU/enroll %5s ms (nginx %s, Redis %s)  client %s ms/req%s  %s\n' \
        "$r" "$s" "$rate" "$ok" "$sent" "$secs" "$cpe" "$ngx" "$rds" "$ccpu" \
        "$([ "$exh" = 1 ] && echo '  POOL EXHAUSTED')" "$(cut -d' ' -f5- <<< "$out" | sed 's/client_cpu[^ ]* //g; s/pool=[0-9]* //; s/exhausted=[01] *//')" >&2
    # the next pool: 1.5x what this rate needs, at least 200
    POOL[$s]=$(awk -v r="$rate" -v s="$SECS" -v p="${POOL[$s]}" -v e="$exh" 'BEGIN {
        n = int(r * s * 1.5) + 200; if (e == 1 && n < 2 * p) n = 2 * p; print n }')
}

echo "$ROUNDS rounds x ${SECS}s per server, $CONC connections ..." >&2
for r in $(seq "$ROUNDS"); do
    order=$SERVERS
    [ $((r % 2)) = 0 ] && order=$(tr ' ' '\n' <<< "$SERVERS" | tac | tr '\n' ' ')
    for s in $order; do
        if [ "$s" = micromdm ] && [ "${BENCH_MDM_KEEP:-0}" != 1 ]; then
            start_mdm "$r"
        fi
        run "$r" "$s"
        if [ "$s" = micromdm ]; then
            MDM_ISSUED=$(wc -l < "$MDM_DIR/depot/index.txt" 2>/dev/null || echo 0)
        fi
    done
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
RACE=$(cat "$W"/mdm-*/server.log | grep -c 'failed to sign CSR.*serial' || true)

col() { awk -v s="$1" -v c="$2" '$2 == s { printf "%s ", $c }' "$RES"; }

echo
echo "SCEP PKIOperation (PKCSReq, RSA-2048 requester, AES-128 envelope),"
echo "$ROUNDS rounds x ${SECS}s per server, $CONC keep-alive connections,"
echo "$(nproc) cores shared by the servers and the client"
echo "  ours-hsm:  nginx-pki, 2 workers x ${BENCH_POOL_THREADS:-8} threads, RA key (RSA-2048) in a file,"
echo "             CA key (P-256) in SoftHSM2, Redis appendfsync always, audit log"
[ "${BENCH_SKIP_FILE:-0}" != 1 ] && \
echo "  ours-file: the same with the CA key (P-256) in a PEM file"
echo "  micromdm:  scepserver 2.1.0, file depot, CA key (RSA-2048) in a file,"
if [ "${BENCH_MDM_KEEP:-0}" != 1 ]; then
echo "             a fresh depot each round (its index.txt is scanned per request)"
else
echo "             one depot for all rounds (BENCH_MDM_KEEP=1): $MDM_ISSUED certificates at the end"
fi
[ -n "${BENCH_BASE_BUILD:-}" ] && \
echo "  base-hsm:  ours-hsm built from $BENCH_BASE_BUILD"
echo
printf '  %-9s %10s %14s %14s %12s %10s\n' server "enroll/s" "CPU/enroll ms" "(nginx/Redis)" "client ms/rq" "failures"
for s in $SERVERS; do
    rates=$(col "$s" 3)
    cpus=$(col "$s" 7)
    fails=$(awk -v s="$s" '$2 == s { f += $5 - $4 } END { print f + 0 }' "$RES")
    sent=$(awk -v s="$s" '$2 == s { f += $5 } END { print f + 0 }' "$RES")
    printf '  %-9s %10s %14s %14s %12s %10s   rounds: %s\n' "$s" \
        "$(median <<< "$rates")" "$(median <<< "$cpus")" \
        "$(median <<< "$(col "$s" 8)")/$(median <<< "$(col "$s" 9)")" \
        "$(median <<< "$(col "$s" 10)")" "$fails/$sent" "$rates"
done
echo "  (medians over the rounds; CPU/enroll = server CPU time / successful enrollments)"
echo "  micromdm's failures: ${RACE:-0} x \"failed to sign CSR: ... serial ...\" in its log"
echo "  (its file depot's serial file race under concurrency)"
echo
for s in $SERVERS; do
    [ "$s" = micromdm ] && continue
    rr=$(awk -v s="$s" '$2 == s { r[$1] = $3 } $2 == "micromdm" { m[$1] = $3 }
        END { for (i in r) if (m[i] > 0) printf "%.2f ", r[i] / m[i] }' "$RES")
    cr=$(awk -v s="$s" '$2 == s { r[$1] = $7 } $2 == "micromdm" { m[$1] = $7 }
        END { for (i in r) if (r[i] > 0 && m[i] != "-") printf "%.2f ", m[i] / r[i] }' "$RES")
    printf '  %-9s vs micromdm: rate ratio median %sx (rounds %s)\n' "$s" \
        "$(median <<< "$rr")" "$rr"
    printf '  %-9s                CPU ratio  median %sx (rounds %s)\n' "" \
        "$(median <<< "$cr")" "$cr"
done
if [ -n "${BENCH_BASE_BUILD:-}" ]; then
    cr=$(awk '$2 == "ours-hsm" { r[$1] = $7 } $2 == "base-hsm" { m[$1] = $7 }
        END { for (i in r) if (r[i] > 0 && m[i] > 0) printf "%.3f ", m[i] / r[i] }' "$RES")
    printf '  ours-hsm vs base-hsm: CPU per enrollment base/ours median %s (rounds %s)\n' \
        "$(median <<< "$cr")" "$cr"
fi
echo "  load average: before $LOAD0, after $LOAD1"
if awk '$11 == 1' "$RES" | grep -q .; then
    echo "  WARNING: a run used up its message pool before ${SECS}s (its time is shorter)"
fi
