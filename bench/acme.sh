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
#           issuing key, 2 workers, thread pool; BENCH_CA_KEY=file: an
#           issuing CA whose key is a PEM file, scripts/mkpki-filekey.sh,
#           as pebble signs with a key in memory), run in the modes of
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
# so a change in the load of a shared machine hits both alike.
# BENCH_WORKERS (default "1 2 4") is the client's concurrency (one keep-alive
# connection per worker; from 3 on, pebble 2.4 can deadlock: see broken());
# a list such as "1 2 4" runs the rounds at each in turn (same servers, same
# Redis) and ends with the median ratios side by side: on a small machine
# shared by the client and the server, the ratio depends on the concurrency.
# BENCH_CONF_SED='sed script' edits both of our nginx.conf files before the
# start (A/B runs of nginx settings, e.g. worker_cpu_affinity).
#
# Prints, per round and server: issuances, failures, seconds, rate and the
# server's CPU time per issuance (user+system from /proc/PID/stat: nginx
# master+workers+Redis, pebble+pebble-challtestsrv), which is robust to the
# load of a shared machine, and the same processes' context switches per
# issuance (every thread's, /proc/PID/task/*/status).  A run with failures
# or one that lasted well past BENCH_SECONDS (a request hit the client's
# 10 s timeout) is flagged BROKEN and its round is left out of the ratios.
# Then the per-round ratios ours/pebble (rate, and CPU per issuance) with
# their medians, Redis commands per issuance (per store), our nginx
# workers' resident memory after each run, the client's ms per step and the
# load average before and after.
#
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${PKI_BUILD:-$TOP/build}
SECS=${BENCH_SECONDS:-6}                 # per run
ROUNDS=${BENCH_ROUNDS:-2}
# one concurrency, or a list of them ("1 2 4"): each is a whole run of
# alternating rounds, then a summary of the medians by concurrency
WORKER_LIST=${BENCH_WORKERS:-1 2 4}
for n in $WORKER_LIST; do
    case $n in
        ''|*[!0-9]*) echo "bench/acme.sh: error: BENCH_WORKERS: \"$n\" is not a number" >&2
                     exit 1 ;;
    esac
done
WORKERS=
# our configurations (see above); BENCH_REDIS_FSYNC is the old name
MODES=${BENCH_MODES:-${BENCH_REDIS_FSYNC:-always split}}
CA_KEY=${BENCH_CA_KEY:-token}
case $CA_KEY in
    token|file) ;;
    *) echo "bench/acme.sh: error: BENCH_CA_KEY: \"$CA_KEY\" is not token or file" >&2
       exit 1 ;;
esac

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

# N distinct free ports: all bound at once, so no two are the same (one at a
# time, a port just handed out could come back for the next one)
free_ports() {
    python3 -c 'import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
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

# CHALL: the http-01 responder of the load client; PEBTLS: pebble's
# tls-alpn-01 port (unused)
read -r HTTPS HTTP HTTPS2 HTTP2 CHALL PEB PEBM DNS DNSM PEBTLS \
    <<< "$(free_ports 10)"

# --- ours ----------------------------------------------------------------------

echo "setting up nginx-pki in $W ..." >&2
PKI_BUILD="$BUILD" PKI_MKPKI_QUIET=1 "$TOP/scripts/mkpki.sh" "$W/pki"
export SOFTHSM2_CONF=$W/pki/hsm/softhsm2.conf
# the PKI our nginx serves: the token's issuing CA, or one with a file key
OURS=(--pki "$W/pki")
if [ "$CA_KEY" = file ]; then
    PKI_BUILD="$BUILD" "$TOP/scripts/mkpki-filekey.sh" "$W/pki" "$W/pki-file" \
        || die "scripts/mkpki-filekey.sh failed"
    OURS=(--pki "$W/pki-file" --ca-key "$W/pki-file/issuing.key")
fi

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
    "$TOP/scripts/nginx-conf.sh" --build "$BUILD" "${OURS[@]}" --prefix "$p" \
        --redis "$W/redis.sock" --https "$https" --http "$http" --daemon off \
        --log-level warn --workers 2 --threads "${BENCH_POOL_THREADS:-8}" \
        --acme-http-port "$CHALL" "$@" > "$p/conf/nginx.conf"
    [ -z "${BENCH_CONF_SED:-}" ] || sed -i "$BENCH_CONF_SED" "$p/conf/nginx.conf"
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
            "httpPort": $CHALL, "tlsPort": $PEBTLS,
            "ocspResponderURL": "", "externalAccountBindingRequired": false}}
EOF

pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
    -dns01 "127.0.0.1:$DNS" -http01 "" -https01 "" -tlsalpn01 "" \
    -management "127.0.0.1:$DNSM" > "$C/challtestsrv.log" 2>&1 &
CTS_PID=$!
start_pebble() {
    PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 \
        pebble -config "$C/pebble.json" -dnsserver "127.0.0.1:$DNS" \
        >> "$C/pebble.log" 2>&1 &
    PEBBLE_PID=$!
    wait_url "https://127.0.0.1:$PEB/dir" "$C/ca.pem" \
        || die "pebble does not answer"
}
start_pebble

# --- runs: ours and pebble alternate, so that a change in the load of the
# shared machine hits both alike ---------------------------------------------

run_one() {     # LABEL URL CA ROUND PIDS... -> appends "round RESULT... cpu_ms=C"
    local label=$1 url=$2 ca=$3 round=$4 line c0 c1 s0 s1
    shift 4
    c0=$(cpu_ms "$@")
    s0=$(ctx_switches "$@")
    line=$("$W/acme_bench" -d "$url" -c "$ca" -p "$CHALL" -w "$WORKERS" \
               -t "$SECS" -l "$label" 2>"$W/client.err" | grep '^RESULT') \
        || { cat "$W/client.err" >&2;
             tail -n 5 "$P/logs/error.log" "$C/pebble.log" >&2 2>/dev/null;
             die "the run $label failed"; }
    c1=$(cpu_ms "$@")
    s1=$(ctx_switches "$@")
    grep -v '^RESULT' "$W/client.err" | tail -n 3 | sed 's/^/    /' >&2
    # the client's "ms per issuance" line, kept for the report
    grep 'ms per issuance' "$W/client.err" | sed "s/^/round $round /" \
        >> "$W/steps-$label" || true
    echo "$line cpu_ms=$((c1 - c0)) cs=$((s1 - s0))" >&2
    echo "$round $line cpu_ms=$((c1 - c0)) cs=$((s1 - s0))" >> "$W/res-$label"
}

# CPU time (ms, user + system, all threads) of the given processes, from
# /proc/PID/stat: steadier than the rate on a machine shared with other work
cpu_ms() {
    local t=0 p v
    for p in "$@"; do
        v=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
        t=$((t + v))
    done
    echo $((t * 1000 / $(getconf CLK_TCK)))
}

# Context switches (voluntary + involuntary, every thread) of the given
# processes, from /proc/PID/task/*/status.  Ours pays one for each handoff
# between the event loop, a pool thread and Redis; pebble's Go runtime
# parks and wakes its threads.  A thread that ends during the run takes its
# count with it (neither server's threads do).
ctx_switches() {
    local p
    for p in "$@"; do
        cat /proc/"$p"/task/*/status 2>/dev/null
    done | awk '/^(non)?voluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}

# Resident memory (MB, VmRSS) of the given processes together: our workers'
# after each run, so that a leak shows as growth from run to run (a long
# single run: BENCH_SECONDS=600 BENCH_ROUNDS=1 BENCH_MODES=split)
rss_mb() {
    local p
    for p in "$@"; do
        cat /proc/"$p"/status 2>/dev/null
    done | awk '/^VmRSS:/ { n += $2 } END { printf "%.1f\n", n / 1024 }'
}

# nginx master + its workers (the current ones: a worker can be respawned)
nginx_pids() { echo "$1 $(pgrep -P "$1" | tr '\n' ' ')"; }

# A run is broken when requests failed or it lasted well past BENCH_SECONDS
# (a request hit the client's 10 s I/O timeout).  Its rate says nothing about
# the server's speed, so it is flagged and left out of the medians.  Pebble
# 2.4 deadlocks for good under concurrent orders (seen in its goroutine dump,
# SIGQUIT): a newOrder scans every authorization (FindValidAuthorization,
# whatever PEBBLE_AUTHZREUSE says) holding its store's read lock and waits
# for the lock of an authorization that an authz poll holds for writing; the
# poll waits for the store's read lock, which Go's RWMutex holds back behind
# a third request waiting to write (another newOrder adding its challenges,
# a finalize adding its certificate); every request then waits on the store.
# It takes 3 workers or more; at 8, 6 to 15 s of load often hit it.
# res line: ROUND RESULT LABEL issued=N failed=F seconds=S rate=R
#           requests=Q workers=W cpu_ms=C
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }
broken() {          # RES-LINE -> 0 when broken
    awk -v secs="$SECS" '{ for (i = 3; i <= NF; i++) { split($i, kv, "=");
                                                     v[kv[1]] = kv[2] } }
         END { exit !(v["failed"] > 0 || v["seconds"] > secs * 1.5 ||
                      v["issued"] == 0) }' <<< "$1"
}

rcmds() {           # SOCK -> commands since the last resetstat
    redis-cli -s "$1" info commandstats \
        | awk -F'[=,:]' '/^cmdstat_/ && $1 !~ /cmdstat_(info|ping|config)($|\|)/ {
                             n += $3 } END { print n + 0 }'
}

run_rounds() {
    LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
    for r in $(seq "$ROUNDS"); do
        for m in $MODES; do
            case $m in
                always|split) fs=always ;;
                everysec) fs=everysec ;;
                *) die "unknown mode $m (always, split, everysec)" ;;
            esac
            url="https://127.0.0.1:$HTTPS/acme/directory"
            npid=$NGINX_PID
            if [ "$m" = split ]; then
                url="https://127.0.0.1:$HTTPS2/acme/directory"
                npid=$NGINX2_PID
            fi
            redis-cli -s "$W/redis.sock" config set appendfsync "$fs" | grep -q OK \
                || die "redis: cannot set appendfsync $fs"
            redis-cli -s "$W/redis.sock" config resetstat > /dev/null
            redis-cli -s "$W/state.sock" config resetstat > /dev/null
            echo "round $r: ours ($m), $WORKERS workers, ${SECS}s ..." >&2
            # shellcheck disable=SC2046
            run_one "nginx-pki-$m" "$url" "$W/pki/root.pem" "$r" \
                $(nginx_pids "$npid") "$REDIS_PID" "$REDIS2_PID"
            echo "$(rcmds "$W/redis.sock") $(rcmds "$W/state.sock")" \
                >> "$W/rcmds-$m"
            # shellcheck disable=SC2046
            rss_mb $(pgrep -P "$npid") >> "$W/rss-$m"
            for s in redis state; do
                redis-cli -s "$W/$s.sock" info commandstats \
                    > "$W/cstats-$m-$s"
            done
        done
        redis-cli -s "$W/redis.sock" config set appendfsync always > /dev/null
        echo "round $r: pebble, $WORKERS workers, ${SECS}s ..." >&2
        run_one pebble "https://127.0.0.1:$PEB/dir" "$C/ca.pem" "$r" \
            "$PEBBLE_PID" "$CTS_PID"
        if broken "$(tail -n 1 "$W/res-pebble")"; then
            # pebble 2.4 can stay stalled after concurrent orders: a fresh one
            # for the next round or concurrency (this round is left out of the
            # ratios)
            echo "round $r: pebble's run is broken; restarting pebble" >&2
            stop_pid "$PEBBLE_PID" KILL
            start_pebble
        fi
    done

    LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
}

# --- report --------------------------------------------------------------------

median() {          # numbers on stdin -> median, or "-"
    sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) { print "-"; exit }
                   m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
                   printf "%.2f\n", m }'
}
rline() { awk -v r="$2" '$1 == r' "$W/res-$1"; }   # LABEL ROUND -> line
per_iss() {         # FIELD FORMAT RES-LINE -> FIELD per issuance, or "-"
    awk -v f="$1" -v fmt="$2" \
        '{ for (i = 3; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
         END { if (v["issued"] > 0 && v[f] != "") printf fmt, v[f] / v["issued"];
               else print "-" }' <<< "$3"
}
cpu_per() { per_iss cpu_ms %.2f "$1"; }   # RES-LINE -> server CPU ms per issuance
cs_per() { per_iss cs %.1f "$1"; }        # RES-LINE -> server context switches
label() {
    case $1 in
        always) echo "nginx-pki, all durable (always)" ;;
        split) echo "nginx-pki, split (always+everysec)" ;;
        everysec) echo "nginx-pki, all everysec" ;;
        pebble) echo "pebble 2.4, VA_NOSLEEP" ;;
    esac
}
report() {
    echo
    echo "ACME full issuances (newOrder, http-01, finalize, download), one account, ES256,"
    echo "$WORKERS client workers on keep-alive TLS, $ROUNDS alternating rounds of ${SECS}s,"
    echo "$(nproc) cores shared by the client and the servers; our issuing CA's key:"
    if [ "$CA_KEY" = file ]; then echo "a PEM file (BENCH_CA_KEY=file)"; else echo "in SoftHSM2"; fi
    echo "load average (1 5 15 min): $LOAD0 before, $LOAD1 after"
    echo "server CPU = user+system of nginx master+workers+both Redis, or of"
    echo "pebble+pebble-challtestsrv (/proc/PID/stat), per issued certificate;"
    echo "cs/iss = their context switches (all threads, /proc/PID/task/*/status)"
    echo
    printf '  %-5s %-36s %7s %6s %7s %9s %9s %7s\n' round server issued failed \
        seconds issuance/s "CPU ms/iss" cs/iss
    for r in $(seq "$ROUNDS"); do
        for m in $MODES pebble; do
            lb=$m
            [ "$m" = pebble ] || lb=nginx-pki-$m
            l=$(rline "$lb" "$r")
            flag=
            broken "$l" && flag="  BROKEN RUN (failures or timeouts): not counted"
            printf '  %-5s %-36s %7s %6s %7s %9s %9s %7s%s\n' "$r" "$(label "$m")" \
                "$(field issued <<< "$l")" "$(field failed <<< "$l")" \
                "$(field seconds <<< "$l")" "$(field rate <<< "$l")" \
                "$(cpu_per "$l")" "$(cs_per "$l")" "$flag"
        done
    done
    echo
    echo "  per-round ratios (ours / pebble of the same round; a round with a"
    echo "  broken run on either side is left out):"
    for m in $MODES; do
        : > "$W/ratios-$m"
        : > "$W/cratios-$m"
        rs=
        for r in $(seq "$ROUNDS"); do
            lo=$(rline "nginx-pki-$m" "$r")
            lp=$(rline pebble "$r")
            if broken "$lo" || broken "$lp"; then
                rs="$rs  r$r: broken"
                continue
            fi
            x=$(awk -v a="$(field rate <<< "$lo")" -v b="$(field rate <<< "$lp")" \
                    'BEGIN { printf "%.2f", a / b }')
            c=$(awk -v a="$(cpu_per "$lo")" -v b="$(cpu_per "$lp")" \
                    'BEGIN { if (a > 0) printf "%.2f", b / a; else print 0 }')
            echo "$x" >> "$W/ratios-$m"
            echo "$c" >> "$W/cratios-$m"
            rs="$rs  r$r: ${x}x (CPU ${c}x)"
        done
        printf '  %-9s%s\n' "$m" "$rs"
        printf '  %-9s median rate ratio %sx, median CPU-per-issuance ratio %sx\n' \
            "" "$(median < "$W/ratios-$m")" "$(median < "$W/cratios-$m")"
        echo "$WORKERS $m $(median < "$W/ratios-$m") $(median < "$W/cratios-$m")" \
            >> "$W/summary"
    done
    echo
    echo "  Redis commands per issuance (commandstats, incl. Lua-internal calls):"
    for m in $MODES; do
        OI=$(awk '{ n += 0 + substr($4, 8) } END { print n }' "$W/res-nginx-pki-$m")
        RD=$(awk '{ n += $1 } END { print n }' "$W/rcmds-$m")
        RS=$(awk '{ n += $2 } END { print n }' "$W/rcmds-$m")
        printf '  %-9s %s durable + %s state\n' "$m" \
            "$(awk -v c="$RD" -v n="$OI" 'BEGIN { printf "%.1f", n ? c / n : 0 }')" \
            "$(awk -v c="$RS" -v n="$OI" 'BEGIN { printf "%.1f", n ? c / n : 0 }')"
    done
    echo
    echo "  Redis commands of the last round, per issuance (commands a script"
    echo "  runs count too), with Redis's own microseconds per call (commandstats):"
    for m in $MODES; do
        OI=$(awk 'END { print 0 + substr($4, 8) }' "$W/res-nginx-pki-$m")
        for s in redis state; do
            awk -F'[=,:]' -v n="$OI" -v lb="$m $s" \
                '/^cmdstat_/ && $1 !~ /cmdstat_(info|ping|config)($|\|)/ && n > 0 {
                     printf "    %-18s %-14s %5.2f calls  %7.1f us/call\n", lb,
                            substr($1, 9), $3 / n, $7 }' "$W/cstats-$m-$s" \
                | sort -k4,4gr
        done
    done
    echo
    echo "  our nginx workers' resident memory after each run (MB, VmRSS):"
    for m in $MODES; do
        printf '    %-9s %s\n' "$m" "$(tr '\n' ' ' < "$W/rss-$m")"
    done
    echo
    echo "  client ms per issuance by step:"
    for m in $MODES pebble; do
        lb=$m
        [ "$m" = pebble ] || lb=nginx-pki-$m
        sed "s/^/    /" "$W/steps-$lb" 2>/dev/null || true
    done
}

: > "$W/summary"
for WORKERS in $WORKER_LIST; do
    rm -f "$W"/res-* "$W"/steps-* "$W"/rcmds-* "$W"/cstats-* "$W"/ratios-* \
          "$W"/cratios-* "$W"/rss-*
    run_rounds
    report
done

# with several concurrencies: the medians side by side
if [ "$(wc -w <<< "$WORKER_LIST")" -gt 1 ]; then
    echo
    echo "  median ratios ours / pebble by client concurrency (rate; server CPU"
    echo "  per issuance, pebble's over ours), each from its own alternating rounds:"
    printf '  %-9s' mode
    for n in $WORKER_LIST; do printf " %19s" "$n worker(s)"; done
    echo
    for m in $MODES; do
        printf '  %-9s' "$m"
        for n in $WORKER_LIST; do
            awk -v n="$n" -v m="$m" '$1 == n && $2 == m {
                    printf " %19s", $3 "x (CPU " $4 "x)" }' "$W/summary"
        done
        echo
    done
fi
