#!/usr/bin/env bash
#
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# SCEP PKIOperation enrollments per second (not a test): our nginx module
# against micromdm's scepserver (package scep) in the same run.
#
# The load client is t/lib/scepmsg.c (OpenSSL only): it pre-builds N
# PKCSReq messages (RSA-2048 requester keys, distinct subjects, AES-128
# envelopes, challenge password) for each server, then POSTs them over C
# keep-alive connections and counts the CertReps with pkiStatus SUCCESS
# (read from the bytes: no RSA and no certificate decoding in the client
# while the clock runs).  Only the posting is timed; only successful
# enrollments count, for both servers, and the client prints why the others
# failed (HTTP status, failInfo, lost connections).  Besides the rate, the
# server's own CPU time per successful enrollment is printed (from
# /proc/PID/stat: nginx master and workers plus Redis; scepserver): on a
# machine shared with other work it is steadier than the rate.
# scepserver binds every address and has no bind option, so it runs in a
# private network namespace (unshare -n, as root) together with its client.
#
# micromdm's failures (failInfo badRequest) are its own: its file depot
# reads the serial file while a concurrent request rewrites it ("failed to
# sign CSR" with "could not convert  to serial number", "open
# depot/serial: file exists" or "... no such file or directory" in its
# log); they are fast answers, not timeouts.  The count is printed.
#
#   flock /tmp/pki-bench.lock bench/scep.sh          (after ./build.sh)
#   BENCH_N=400 BENCH_CONC=8 flock /tmp/pki-bench.lock bench/scep.sh
#
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${PKI_BUILD:-$TOP/build}
N=${BENCH_N:-400}
CONC=${BENCH_CONC:-8}

die() { echo "bench/scep.sh: error: $*" >&2; exit 1; }

for f in pkictl libpkicore.so ngx_http_pki_module.so ngx_http_scep_module.so; do
    [ -e "$BUILD/$f" ] || die "$BUILD/$f missing: run ./build.sh first"
done
for c in redis-server nginx openssl curl cc scepserver unshare ip; do
    command -v "$c" >/dev/null || die "$c not found"
done
[ "$(id -u)" -eq 0 ] || die "scepserver needs unshare -n: run as root"

mkdir -p "$TOP/bench/tmp"
W=$(mktemp -d "$TOP/bench/tmp/scep-XXXXXX")
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
cc -O2 -o "$W/scepmsg" "$TOP/t/lib/scepmsg.c" -lcrypto -lpthread \
    || die "cannot build t/lib/scepmsg.c"
PKI_BUILD="$BUILD" PKI_MKPKI_QUIET=1 "$TOP/scripts/mkpki.sh" "$W/pki"
export SOFTHSM2_CONF=$W/pki/hsm/softhsm2.conf

# --- ours ----------------------------------------------------------------------

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
P=$W/nginx
mkdir -p "$P/conf" "$P/logs" "$P/tmp"
"$TOP/scripts/nginx-conf.sh" --build "$BUILD" --pki "$W/pki" --prefix "$P" \
    --redis "$W/redis.sock" --https "$HTTPS" --http "$HTTP" --daemon off \
    --log-level warn --workers 2 --threads "${BENCH_POOL_THREADS:-8}" \
    > "$P/conf/nginx.conf"
nginx -p "$P/" -c conf/nginx.conf -t -q || die "nginx -t failed"
nginx -p "$P/" -c conf/nginx.conf 2>>"$P/logs/stderr.log" &
NGINX_PID=$!
for _ in $(seq 100); do
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$HTTP/" && break
    sleep 0.1
done

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "ours: $N PKCSReq, $CONC connections ..." >&2
PIDS="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ') $REDIS_PID"
C0=$(cpu_ms $PIDS)
OURS=$("$W/scepmsg" bench --url "http://127.0.0.1:$HTTP/scep" \
           --rcpt "$W/pki/ra.pem" --challenge demo --n "$N" --conc "$CONC" \
           --tag ours) || { tail -n 5 "$P/logs/error.log" >&2;
                            die "our run had failures: $OURS"; }
C1=$(cpu_ms $PIDS)
OK_OURS=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<< "$OURS")
CPU_OURS=$(awk -v c=$((C1 - C0)) -v n="$OK_OURS" 'BEGIN { if (n > 0) printf "%.2f", c / n; else print "-" }')

kill -QUIT "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true
NGINX_PID=

# --- micromdm scepserver (unshare -n) --------------------------------------------

echo "micromdm scepserver: $N PKCSReq, $CONC connections ..." >&2
mkdir -p "$W/mdm"
cat > "$W/mdm/run.sh" <<'EOF'
set -eu
cd "$1"
ip link set lo up
scepserver ca -init -depot depot -keySize 2048 >/dev/null 2>&1
scepserver -depot depot -port 2016 -challenge secret123 -crtvalid 30 \
    > server.log 2>&1 &
SRV=$!
for _ in $(seq 100); do
    curl -s -o /dev/null --max-time 1 \
        "http://127.0.0.1:2016/scep?operation=GetCACaps" && break
    sleep 0.1
done
cpu() { awk '{ print $14 + $15 }' "/proc/$SRV/stat"; }
C0=$(cpu)
"$2" bench --url http://127.0.0.1:2016/scep --rcpt depot/ca.pem \
    --challenge secret123 --n "$3" --conc "$4" --tag mdm || true
C1=$(cpu)
echo "cpu_ms=$(( (C1 - C0) * 1000 / $(getconf CLK_TCK) ))"
echo "serial_race=$(grep -c 'failed to sign CSR.*serial' server.log || true)"
kill "$SRV"
wait "$SRV" 2>/dev/null || true
EOF
MDM_ALL=$(unshare -n bash "$W/mdm/run.sh" "$W/mdm" "$W/scepmsg" "$N" "$CONC") \
    || die "the scepserver run failed"
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
MDM=$(grep '^n=' <<< "$MDM_ALL")
OK_MDM=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<< "$MDM")
CPU_MDM=$(awk -v c="$(sed -n 's/^cpu_ms=//p' <<< "$MDM_ALL")" -v n="$OK_MDM" 'BEGIN { if (n > 0) printf "%.2f", c / n; else print "-" }')
RACE=$(sed -n 's/^serial_race=//p' <<< "$MDM_ALL")

rate() { sed -n 's/.*rate=\([0-9.]*\).*/\1/p' <<< "$1"; }
R_OURS=$(rate "$OURS")
R_MDM=$(rate "$MDM")
RATIO=$(awk -v a="$R_OURS" -v b="$R_MDM" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "inf" }')
CRATIO=$(awk -v a="$CPU_OURS" -v b="$CPU_MDM" 'BEGIN { if (a > 0) printf "%.1f", b / a; else print "-" }')

cat <<EOF

SCEP PKIOperation (PKCSReq, RSA-2048 requester, AES-128 envelope), $N requests,
$CONC keep-alive connections, $(nproc) cores shared by server and client
  nginx-pki (2 workers, RA key in a file, CA key in SoftHSM2,
             Redis appendfsync always):   $OURS
      server CPU per successful enrollment: ${CPU_OURS} ms (nginx + Redis)
  micromdm scepserver 2.1.0 (file depot): $MDM
      server CPU per successful enrollment: ${CPU_MDM} ms
      its failures: ${RACE:-0} x "failed to sign CSR: ... serial ..." in its
      log (its file depot's serial file race under concurrency)
  ratio (enrollments/s): ${RATIO}x    ratio (CPU per enrollment): ${CRATIO}x
  load average: before $LOAD0, after $LOAD1
EOF
