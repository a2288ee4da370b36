#!/usr/bin/env bash
#
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# OCSP responder throughput (not a test; issue 3 section 6).  Starts a
# private setup like the demo (scripts/mkpki.sh + scripts/nginx-conf.sh) with
# the issuing CA key in a PEM file (the same key `openssl ocsp` uses, so both
# sign the same way), enrolls one certificate and runs wrk (-t2 -c32, Lua
# POST of a fixed DER request, with wrk.resolve overridden: RECIPES 5) in
# one run against:
#
#   cached      our responder, ocsp_responder_cache on, request without nonce
#   cached GET  the same as GET /ocsp/<base64>
#   nonce       our responder, a pool of requests with different nonces
#               (signed fresh on the thread pool each time)
#   return 200  nginx `location = /ret { return 200 "ok"; }`, same nginx
#   openssl     `openssl ocsp -port` (single process, fresh per run, inside
#               `unshare -n` with wrk; killed by process group: RECIPES 3.4)
#
# then a long cached run (BENCH_LONG, default 60s) with the workers' RSS
# before and after.
#
#   bench/ocsp.sh            (after ./build.sh; needs root for unshare -n)
#   BENCH_DURATION=5s BENCH_CONNS=32 BENCH_THREADS=2 BENCH_NONCES=256 \
#   BENCH_LONG=60s bench/ocsp.sh
#
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${PKI_BUILD:-$TOP/build}
DUR=${BENCH_DURATION:-5s}
CONNS=${BENCH_CONNS:-32}
THREADS=${BENCH_THREADS:-2}
NNONCE=${BENCH_NONCES:-256}
LONG=${BENCH_LONG:-60s}

die() { echo "bench/ocsp.sh: error: $*" >&2; exit 1; }

for f in pkictl libpkicore.so ngx_http_pki_module.so ngx_http_ocsp_module.so; do
    [ -e "$BUILD/$f" ] || die "$BUILD/$f missing: run ./build.sh first"
done
for c in wrk redis-server nginx openssl curl unshare ip setsid; do
    command -v "$c" >/dev/null || die "$c not found"
done

mkdir -p "$TOP/bench/tmp"
W=$(mktemp -d "$TOP/bench/tmp/ocsp-XXXXXX")
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
PKI_BUILD="$BUILD" PKI_MKPKI_QUIET=1 "$TOP/scripts/mkpki.sh" "$W/pki" >/dev/null
export SOFTHSM2_CONF=$W/pki/hsm/softhsm2.conf

# issuing CA with a PEM key, beside the same root (as bench/est.sh)
F=$W/pki-file
PKI_BUILD="$BUILD" "$TOP/scripts/mkpki-filekey.sh" "$W/pki" "$F" \
    || die "scripts/mkpki-filekey.sh failed"

mkdir -p "$W/redis"
redis-server --port 0 --unixsocket "$W/redis.sock" --unixsocketperm 700 \
    --dir "$W/redis" --save "" --appendonly no --daemonize no \
    --logfile "$W/redis/redis.log" &
REDIS_PID=$!
for _ in $(seq 50); do
    redis-cli -s "$W/redis.sock" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
done

HTTPS=$(free_port)
HTTP=$(free_port)
P=$W/nginx
mkdir -p "$P/conf" "$P/logs" "$P/tmp"
"$TOP/scripts/nginx-conf.sh" --build "$BUILD" --pki "$F" --prefix "$P" \
    --redis "$W/redis.sock" --https "$HTTPS" --http "$HTTP" --daemon off \
    --log-level warn --workers 2 --ca-key "$F/issuing.key" \
  | sed -e 's|ocsp_responder_cache zone=ocsp:[0-9]*m;|ocsp_responder_cache zone=ocsp:32m;|' \
        -e 's|^\( *\)location /ocsp {|\1location = /ret { return 200 "ok"; }\n&|' \
  > "$P/conf/nginx.conf"
grep -q 'ocsp_responder_cache zone' "$P/conf/nginx.conf" || die "config edit failed"
nginx -p "$P/" -c conf/nginx.conf -t -q || die "nginx -t failed"
nginx -p "$P/" -c conf/nginx.conf 2>>"$P/logs/stderr.log" &
NGINX_PID=$!
for _ in $(seq 100); do
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$HTTP/ret" && break
    sleep 0.1
done

# one certificate through EST
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$W/leaf.key" -subj "/CN=bench-ocsp" -outform DER -out "$W/leaf.csr" 2>/dev/null
base64 -w 64 "$W/leaf.csr" | curl -sS --max-time 10 --cacert "$W/pki/root.pem" \
    -u demo:demo -H 'Content-Type: application/pkcs10' --data-binary @- \
    "https://127.0.0.1:$HTTPS/.well-known/est/simpleenroll" > "$W/leaf.p7.b64"
base64 -d "$W/leaf.p7.b64" | openssl pkcs7 -inform DER -print_certs -out "$W/leaf.pem" \
    || die "enrollment failed (see $P/logs/error.log)"

ISS=$F/issuing.pem
openssl ocsp -issuer "$ISS" -cert "$W/leaf.pem" -no_nonce -reqout "$W/req.der" >/dev/null 2>&1
echo "making $NNONCE requests with nonces ..." >&2
mkdir -p "$W/nonce"
for i in $(seq "$NNONCE"); do
    openssl ocsp -issuer "$ISS" -cert "$W/leaf.pem" -reqout "$W/nonce/$i.der" >/dev/null 2>&1
done

URL=http://127.0.0.1:$HTTP/ocsp
out=$(openssl ocsp -issuer "$ISS" -cert "$W/leaf.pem" -url "$URL" \
          -CAfile "$W/pki/root.pem" -verify_other "$ISS" 2>&1) || true
echo "$out" | grep -q ': good' || die "our responder does not say good: $out"
curl -s --data-binary @"$W/req.der" -H 'Content-Type: application/ocsp-request' "$URL" -o "$W/r1.der"
curl -s --data-binary @"$W/req.der" -H 'Content-Type: application/ocsp-request' "$URL" -o "$W/r2.der"
cmp -s "$W/r1.der" "$W/r2.der" || die "the second request was not served from the cache"

GETPATH=$(openssl base64 -A -in "$W/req.der" | sed 's#/#%2F#g;s#+#%2B#g;s#=#%3D#g')

cat > "$W/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/ocsp-request"
local f = assert(io.open("$W/req.der", "rb"))
wrk.body = f:read("*a")
f:close()
function wrk.resolve(host, service) wrk.addrs = wrk.lookup(host, service) end
LUA
cat > "$W/get.lua" <<LUA
function wrk.resolve(host, service) wrk.addrs = wrk.lookup(host, service) end
LUA
cat > "$W/nonce.lua" <<LUA
wrk.headers["Content-Type"] = "application/ocsp-request"
local reqs = {}
-- in init: wrk.host (the Host header) is not known at load time
init = function(args)
  for i = 1, $NNONCE do
    local f = assert(io.open("$W/nonce/" .. i .. ".der", "rb"))
    reqs[i] = wrk.format("POST", nil, nil, f:read("*a"))
    f:close()
  end
end
local n = 0
request = function()
  n = n + 1
  return reqs[(n % #reqs) + 1]
end
function wrk.resolve(host, service) wrk.addrs = wrk.lookup(host, service) end
LUA

# bench LABEL URL SCRIPT: prints "req/s non2xx"
bench() {
    local label=$1 url=$2 script=$3 out rate bad
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DUR" -s "$script" "$url")
    echo "$out" > "$W/wrk-$label.txt"
    rate=$(echo "$out" | awk '/^Requests\/sec:/ { printf "%.0f", $2 }')
    bad=$(echo "$out" | sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\)/\1/p')
    echo "${rate:-0} ${bad:-0}"
}

echo "wrk -t$THREADS -c$CONNS -d$DUR ..." >&2
read -r R_RET B_RET <<< "$(bench ret "http://127.0.0.1:$HTTP/ret" "$W/get.lua")"
read -r R_CACHED B_CACHED <<< "$(bench cached "$URL" "$W/post.lua")"
read -r R_GET B_GET <<< "$(bench get "$URL/$GETPATH" "$W/get.lua")"
read -r R_NONCE B_NONCE <<< "$(bench nonce "$URL" "$W/nonce.lua")"

# openssl ocsp -port: binds *:PORT, so in its own network namespace, with wrk
idx=$W/index.txt
serial=$(openssl x509 -in "$W/leaf.pem" -noout -serial | cut -d= -f2)
exp=$(date -u -d "$(openssl x509 -in "$W/leaf.pem" -noout -enddate | cut -d= -f2)" +%y%m%d%H%M%SZ)
printf 'V\t%s\t\t%s\tunknown\t/CN=bench-ocsp\n' "$exp" "$serial" > "$idx"
cat > "$W/openssl-run.sh" <<SH
set -e
ip link set lo up
setsid openssl ocsp -index "$idx" -port 8888 -rsigner "$ISS" -rkey "$F/issuing.key" \
    -CA "$ISS" -ignore_err -nmin 60 > "$W/openssl-ocsp.log" 2>&1 &
pid=\$!
for _ in \$(seq 50); do
    openssl ocsp -issuer "$ISS" -cert "$W/leaf.pem" -url http://127.0.0.1:8888/ \
        -noverify -timeout 2 2>/dev/null | grep -q ': good' && break
    sleep 0.1
done
kill -KILL -- -\$pid 2>/dev/null || true
# fresh responder for the measurement (the probe above may have left it spinning)
setsid openssl ocsp -index "$idx" -port 8888 -rsigner "$ISS" -rkey "$F/issuing.key" \
    -CA "$ISS" -ignore_err -nmin 60 >> "$W/openssl-ocsp.log" 2>&1 &
pid=\$!
sleep 0.5
wrk -t$THREADS -c$CONNS -d$DUR -s "$W/post.lua" http://127.0.0.1:8888/ > "$W/wrk-openssl.txt" || true
kill -KILL -- -\$pid 2>/dev/null || true
SH
unshare -n bash "$W/openssl-run.sh"
R_OSSL=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$W/wrk-openssl.txt")
B_OSSL=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\)/\1/p' "$W/wrk-openssl.txt")

rss() {
    local s=0 pid
    for pid in $(pgrep -P "$NGINX_PID"); do
        s=$((s + $(ps -o rss= -p "$pid" 2>/dev/null || echo 0)))
    done
    echo "$s"
}
workers=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')
RSS0=$(rss)
echo "long cached run: wrk -t$THREADS -c$CONNS -d$LONG ..." >&2
wrk -t"$THREADS" -c"$CONNS" -d"$LONG" -s "$W/post.lua" "$URL" > "$W/wrk-long.txt"
LONG_N=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$W/wrk-long.txt")
RSS1=$(rss)
# then the same number of fresh (nonce) signatures, briefly
wrk -t"$THREADS" -c"$CONNS" -d10s -s "$W/nonce.lua" "$URL" > "$W/wrk-long-nonce.txt"
NONCE_N=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$W/wrk-long-nonce.txt")
RSS2=$(rss)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

cat <<EOF

OCSP, wrk -t$THREADS -c$CONNS -d$DUR (keep-alive), $(nproc) cores shared by wrk and the server,
nginx 2 workers, issuing CA EC P-256 key in a PEM file (openssl ocsp signs with the same key)

  target                                   req/s      non-2xx
  nginx return 200 (same nginx)            $(printf '%-10s %s' "$R_RET" "$B_RET")
  our responder, cached, POST              $(printf '%-10s %s' "$R_CACHED" "$B_CACHED")
  our responder, cached, GET               $(printf '%-10s %s' "$R_GET" "$B_GET")
  our responder, nonce (fresh signature)   $(printf '%-10s %s' "$R_NONCE" "$B_NONCE")
  openssl ocsp -port (fresh signature)     $(printf '%-10s %s' "${R_OSSL:-0}" "${B_OSSL:-0}")

  cached POST / return 200     $(ratio "$R_CACHED" "$R_RET")   (goal >= 0.7)
  cached GET  / return 200     $(ratio "$R_GET" "$R_RET")
  nonce / openssl ocsp         $(ratio "$R_NONCE" "${R_OSSL:-0}")   (goal >= 1.5)

  worker RSS (sum of workers $workers):
    before                     $RSS0 KB
    after $LONG_N cached requests ($LONG)   $RSS1 KB
    after $NONCE_N more nonce requests (10s)  $RSS2 KB
EOF
