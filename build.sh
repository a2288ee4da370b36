#!/usr/bin/env bash
#
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# nginx-pki build driver.
#
#   ./build.sh                     build core, pkictl and the nginx modules into build/
#   ./build.sh test [--sanitize] [t/X.t ...]
#                                  build, then run the test suite (prove -j2 -r
#                                  t/; PKI_TEST_JOBS=N: N files at once), or only
#                                  the files named
#   ./build.sh demo                build, then start the demo PKI under demo/
#   ./build.sh demo stop           stop the demo
#   ./build.sh fuzz [TARGET|all] [SECONDS]
#                                  libFuzzer (clang, ASan+UBSan) on fuzz/ targets
#   ./build.sh fuzz replay         replay fuzz/corpus/* (gcc, ASan+UBSan)
#   ./build.sh valgrind            build, then the core unit tests under
#                                  Valgrind memcheck (t/valgrind_core.t)
#
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$TOP"

NGX_SRC=/usr/share/nginx/src

PACKAGES=(nginx nginx-dev libp11-dev libengine-pkcs11-openssl softhsm2 opensc
          libcryptx-perl
          libhiredis-dev libcjson-dev libssl-dev libidn2-dev redis-server wrk
          libp11-kit-dev
          build-essential pkg-config curl
          libio-socket-ssl-perl libjson-pp-perl libredis-perl libipc-run-perl
          # ACME clients and peer: t/acme_clients.t, bench/acme.sh
          pebble certbot lego python3 uacme dehydrated acme-tiny
          golang-go golang-golang-x-crypto-dev golang-github-mholt-acmez-dev
          ruby-acme-client lacme lacme-accountd libcrypt-openssl-rsa-perl acmetool
          scep
          # HTTP/2 streams, DATA frames without content-length: t/http2.t
          python3-h2
          # ss(8): when nginx has read a request (t/acme_proto.t)
          iproute2
          # memcheck of the core unit tests: ./build.sh valgrind (CI); the
          # fuzz targets' fake Redis runs the core's Lua scripts (Lua 5.1)
          valgrind liblua5.1-0-dev)

die() {
    echo "build.sh: error: $*" >&2
    exit 1
}

note() {
    echo "build.sh: $*" >&2
}

# --- packages ----------------------------------------------------------------

ensure_packages() {
    local missing=() p installed

    # one dpkg query for all (dpkg -s per package is slow)
    installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${PACKAGES[@]}" \
                    2>/dev/null | awk '$NF == "installed" { print $1 }' || true)
    for p in "${PACKAGES[@]}"; do
        if ! grep -qx -- "$p" <<< "$installed"; then
            missing+=("$p")
        fi
    done

    [ ${#missing[@]} -eq 0 ] && return 0

    if [ "$(id -u)" -ne 0 ]; then
        die "missing Debian packages: ${missing[*]}
  install them as root:  apt-get install -y --no-install-recommends ${missing[*]}"
    fi

    note "installing missing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
        apt-get update || die "apt-get update failed"
        apt-get install -y --no-install-recommends "${missing[@]}" \
            || die "apt-get install failed for: ${missing[*]}"
    fi
}

# --- build -------------------------------------------------------------------

# build_all BUILD_DIR SANITIZE(0|1)
build_all() {
    local bdir=$1 san=$2 cc_opt ld_opt stamp want

    mkdir -p "$bdir" || die "cannot create $bdir"

    note "building core and pkictl into $bdir"
    if [ "$san" = 1 ]; then
        make -C core BUILD="$bdir" SAN=1 -j"$(nproc)" \
            || die "core build failed (make -C core BUILD=$bdir SAN=1)"
    else
        make -C core BUILD="$bdir" -j"$(nproc)" \
            || die "core build failed (make -C core BUILD=$bdir)"
    fi
    [ -f "$bdir/libpkicore.so" ] || die "core build produced no $bdir/libpkicore.so"

    [ -f "$TOP/config" ] || die "no top-level nginx module 'config' in $TOP"
    [ -d "$NGX_SRC" ] || die "$NGX_SRC missing (package nginx-dev)"

    # shellcheck disable=SC1091
    . "$NGX_SRC/conf_flags"

    cc_opt="$(dpkg-buildflags --get CFLAGS) -fPIC $(dpkg-buildflags --get CPPFLAGS)"
    ld_opt="$(dpkg-buildflags --get LDFLAGS) -fPIC"
    if [ "$san" = 1 ]; then
        cc_opt="$cc_opt -fsanitize=address,undefined -fno-omit-frame-pointer"
        ld_opt="$ld_opt -fsanitize=address,undefined"
    fi

    # Re-run configure only when its inputs changed (flags, config files,
    # nginx version, list of module sources).
    want=$( {
        echo "$cc_opt|$ld_opt|${NGX_CONF_FLAGS[*]}|$bdir"
        nginx -v 2>&1
        cat "$TOP/config" "$TOP"/ngx_*_module/config 2>/dev/null || true
        ls "$TOP"/ngx_*_module/ 2>/dev/null || true
    } | sha256sum | cut -d' ' -f1)
    stamp="$bdir/nginx/.configured"

    if [ ! -f "$bdir/nginx/Makefile" ] || [ ! -f "$stamp" ] \
       || [ "$(cat "$stamp")" != "$want" ]
    then
        note "configuring nginx modules (builddir $bdir/nginx)"
        rm -rf "$bdir/nginx"
        mkdir -p "$bdir/nginx"
        (
            cd "$NGX_SRC"
            PKI_BUILD="$bdir" ./configure \
                --with-cc-opt="$cc_opt" \
                --with-ld-opt="$ld_opt" \
                "${NGX_CONF_FLAGS[@]}" \
                --add-dynamic-module="$TOP" \
                --builddir="$bdir/nginx"
        ) > "$bdir/nginx-configure.log" 2>&1 \
            || { tail -n 30 "$bdir/nginx-configure.log" >&2;
                 die "nginx configure failed (log: $bdir/nginx-configure.log)"; }
        echo "$want" > "$stamp"
    fi

    note "building nginx modules"
    (cd "$NGX_SRC" && PKI_BUILD="$bdir" make -f "$bdir/nginx/Makefile" modules) \
        || die "nginx module build failed"

    local so n=0
    for so in "$bdir"/nginx/*.so; do
        [ -e "$so" ] || continue
        install -m 755 "$so" "$bdir/.$(basename "$so").$$" && mv -f "$bdir/.$(basename "$so").$$" "$bdir/$(basename "$so")" || die "cannot copy $so"
        n=$((n + 1))
    done
    [ "$n" -gt 0 ] || die "nginx module build produced no .so in $bdir/nginx"
    note "built: $(cd "$bdir" && ls ./*.so pkictl | tr '\n' ' ')"
}

# --- test --------------------------------------------------------------------

run_tests() {
    local san=0 bdir="$TOP/build" files=() jobs

    while [ $# -gt 0 ]; do
        case $1 in
            --sanitize) san=1; bdir="$TOP/build-san" ;;
            t/*.t) [ -f "$1" ] || die "no test file $1"; files+=("$1") ;;
            *) die "unknown test option: $1" ;;
        esac
        shift
    done
    [ ${#files[@]} -gt 0 ] || files=(-r t/)

    ensure_packages
    build_all "$bdir" "$san"

    # Two files at once by default: most of a file's time is spent waiting
    # (timeouts, outages, polls), so on two cores two files take half the
    # wall time; every file has its own temp dir, Redis, token and ports.
    jobs=${PKI_TEST_JOBS:-2}
    case $jobs in
        [1-9]|[1-9][0-9]) ;;
        *) die "PKI_TEST_JOBS must be a number 1..99, not '$jobs'" ;;
    esac
    note "running tests (PKI_BUILD=$bdir, PKI_SANITIZE=$san, $jobs at once)"
    PKI_BUILD="$bdir" PKI_SANITIZE="$san" prove -j"$jobs" --timer \
        "${files[@]}" || die "test suite failed"
}

# --- demo --------------------------------------------------------------------

demo_stop() {
    local d="$TOP/demo" pid

    if [ -f "$d/nginx/logs/nginx.pid" ]; then
        pid=$(cat "$d/nginx/logs/nginx.pid" 2>/dev/null || true)
        # only the demo's own nginx: a pid file left by an nginx that died
        # (kill -9, a reboot) may name another process by now
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
            && ! tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null \
                | grep -q -- "-p $d/nginx/"
        then
            note "stale pid file: process $pid is not the demo's nginx," \
                 "left alone"
            pid=""
        fi
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            note "stopping nginx (pid $pid)"
            kill -QUIT "$pid" 2>/dev/null || true
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null || true
        fi
        rm -f "$d/nginx/logs/nginx.pid"
    fi

    if [ -S "$d/redis.sock" ]; then
        note "stopping redis"
        redis-cli -s "$d/redis.sock" shutdown >/dev/null 2>&1 || true
    fi
    if [ -f "$d/redis.pid" ]; then
        pid=$(cat "$d/redis.pid" 2>/dev/null || true)
        for _ in $(seq 50); do
            [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        rm -f "$d/redis.pid"
    fi
}

demo_start() {
    local d="$TOP/demo" b="$TOP/build" envs

    ensure_packages
    build_all "$b" 0

    demo_stop

    if [ ! -f "$d/root.pem" ] || [ ! -f "$d/hsm/softhsm2.conf" ]; then
        note "creating the demo PKI under $d"
        rm -rf "$d"
        PKI_BUILD="$b" "$TOP/scripts/mkpki.sh" "$d" \
            || die "PKI setup failed (scripts/mkpki.sh)"
    fi

    # a demo PKI made by an earlier version keeps its keys; files added
    # since are filled in
    if [ ! -f "$d/htpasswd-admin" ]; then
        printf 'admin:%s\n' "$(openssl passwd -apr1 admin)" > "$d/htpasswd-admin"
    fi
    # transaction log (demo/audit/) and its checkpoint key
    if [ ! -f "$d/audit.key" ]; then
        (umask 077; openssl genpkey -algorithm EC \
            -pkeyopt ec_paramgen_curve:P-256 -out "$d/audit.key" 2>/dev/null)
        openssl pkey -in "$d/audit.key" -pubout -out "$d/audit-pub.pem" 2>/dev/null
    fi
    # SCEP RA (scripts/mkpki.sh makes it for a new PKI)
    if [ ! -f "$d/ra.pem" ] || [ ! -f "$d/ra.key" ]; then
        note "adding the SCEP RA certificate to the demo PKI"
        (umask 077; openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
            -out "$d/ra.key" 2>/dev/null) || die "openssl genpkey (RA) failed"
        openssl req -new -key "$d/ra.key" -subj "/O=nginx-pki/CN=nginx-pki SCEP RA" \
            -out "$d/ra.csr" || die "openssl req (RA) failed"
        SOFTHSM2_CONF="$d/hsm/softhsm2.conf" "$b/pkictl" issue \
            --ca-cert "$d/issuing.pem" \
            --ca-key "pkcs11:token=${PKI_TOKEN:-nginx-pki};object=issuing;type=private" \
            --csr "$d/ra.csr" --profile client \
            --subject "/O=nginx-pki/CN=nginx-pki SCEP RA" --days 365 \
            --out "$d/ra.pem" --module "${PKI_P11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}" \
            --token "${PKI_TOKEN:-nginx-pki}" --pin-file "$d/hsm/pin" \
            || die "pkictl issue (SCEP RA) failed"
        rm -f "$d/ra.csr"
    fi
    [ -f "$d/scep-challenge" ] || printf 'demo\n' > "$d/scep-challenge"
    # the ACME alternate chain (scripts/mkpki.sh makes it for a new PKI)
    if [ ! -f "$d/alt-chain.pem" ]; then
        note "adding the alternate root and cross certificate to the demo PKI"
        PKI_BUILD="$b" "$TOP/scripts/mkpki-altchain.sh" "$d" \
            || die "the alternate chain failed (scripts/mkpki-altchain.sh)"
    fi
    if [ ! -f "$d/matter/pai.pem" ]; then
        PKI_BUILD="$b" "$TOP/scripts/mkpki-matter.sh" "$d" \
            || die "Matter hierarchies failed (scripts/mkpki-matter.sh)"
    fi

    mkdir -p "$d/redis" "$d/nginx/conf" "$d/nginx/logs" "$d/nginx/tmp"

    note "starting redis on $d/redis.sock"
    redis-server --port 0 --unixsocket "$d/redis.sock" --unixsocketperm 700 \
        --dir "$d/redis" --appendonly yes --appendfsync always --save "" \
        --daemonize yes --pidfile "$d/redis.pid" --logfile "$d/redis/redis.log" \
        || die "redis-server failed to start (log: $d/redis/redis.log)"
    for _ in $(seq 50); do
        redis-cli -s "$d/redis.sock" ping 2>/dev/null | grep -q PONG && break
        sleep 0.1
    done
    redis-cli -s "$d/redis.sock" ping 2>/dev/null | grep -q PONG \
        || die "redis did not answer on $d/redis.sock"

    "$TOP/scripts/nginx-conf.sh" \
        --build "$b" --pki "$d" --prefix "$d/nginx" --redis "$d/redis.sock" \
        --https 8443 --http 8080 --daemon on --log-level info \
        --sign-threads 4 > "$d/nginx/conf/nginx.conf" \
        || die "cannot render nginx.conf"

    note "checking nginx config"
    SOFTHSM2_CONF="$d/hsm/softhsm2.conf" \
        nginx -p "$d/nginx/" -c conf/nginx.conf -t -q \
        || die "nginx -t failed for $d/nginx/conf/nginx.conf"

    note "starting nginx (prefix $d/nginx)"
    SOFTHSM2_CONF="$d/hsm/softhsm2.conf" \
        nginx -p "$d/nginx/" -c conf/nginx.conf \
        || die "nginx failed to start (log: $d/nginx/logs/error.log)"

    local up=0
    for _ in $(seq 100); do
        if curl -sS -o /dev/null --max-time 2 --cacert "$d/root.pem" \
               https://127.0.0.1:8443/.well-known/est/cacerts 2>/dev/null \
           && curl -sS -o /dev/null --max-time 2 http://127.0.0.1:8080/ 2>/dev/null
        then
            up=1
            break
        fi
        sleep 0.1
    done
    [ "$up" = 1 ] || { tail -n 20 "$d/nginx/logs/error.log" >&2 || true;
                       die "the demo endpoints do not answer (log: $d/nginx/logs/error.log)"; }

    cat <<EOF

nginx-pki demo is running.

  EST base URL   https://127.0.0.1:8443/.well-known/est/
                 (cacerts, simpleenroll, simplereenroll, csrattrs, serverkeygen)
  HTTP page      http://127.0.0.1:8080/
  credentials    demo / demo   (HTTP Basic; simplereenroll uses the TLS client certificate)
  OCSP           http://127.0.0.1:8080/ocsp
  CRL            http://127.0.0.1:8080/crl/issuing.crl
  CA certificate http://127.0.0.1:8080/ca/issuing.crt   (AIA CA Issuers of every certificate)
  admin API      https://127.0.0.1:8443/pki/admin/   (HTTP Basic admin / admin;
                 POST revoke {"serial", "reason"}, with "at": RFC 3339 to plan it,
                 which moves the certificate's ACME renewalInfo window before it;
                 GET acme/accounts/<id>, POST {"status":"revoked"} cuts an ACME account off)
  ACME           https://127.0.0.1:8443/acme/directory   (lab: http-01 on 5002, tls-alpn-01 on 5001)
                 90-day serverAuth template, OCSP Must-Staple on request: certbot --must-staple
                 alternate chain to $d/altroot.pem: certbot --preferred-chain "nginx-pki Alt Root CA"
                 profile "shortlived" (7-day serverAuth) for a newOrder that names it
  metrics        https://127.0.0.1:8443/pki/metrics   (Prometheus; admin / admin)
  dashboard      https://127.0.0.1:8443/pki/dashboard (admin / admin)
  audit log      $d/audit/  (check: build/pkictl audit verify $d/audit --pubkey $d/audit-pub.pem)
  SCEP           http://127.0.0.1:8080/scep   (challenge "demo"; RA $d/ra.pem;
                 one-time challenges: POST /pki/admin/scep/challenges)
  Matter         DACs: https://127.0.0.1:8443/.well-known/est/matter-dac/  (demo / demo)
                 batch: https://127.0.0.1:8443/matter/dac/batch  NOC: https://127.0.0.1:8443/matter/noc
                 PAA/PAI/RCAC/ICAC: $d/matter/*.pem (keys in the token)
  trust anchor   $d/root.pem
  CA keys        inside the SoftHSM2 token "nginx-pki" under $d/hsm/
                 (the alternate root that cross-signs the issuing CA: $d/altroot.key)
  Redis          unix socket $d/redis.sock  (redis-cli -s $d/redis.sock)
  logs           $d/nginx/logs/error.log

Enroll a device:

  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\
      -keyout dev.key -subj "/CN=device-1" -outform DER -out dev.csr
  base64 -w 64 dev.csr | curl -sS --cacert $d/root.pem -u demo:demo \\
      -H 'Content-Type: application/pkcs10' --data-binary @- \\
      https://127.0.0.1:8443/.well-known/est/simpleenroll \\
    | base64 -d | openssl pkcs7 -inform DER -print_certs -out dev.pem
  openssl verify -CAfile $d/root.pem -untrusted $d/issuing.pem dev.pem

Stop it with: ./build.sh demo stop
EOF
}

# --- fuzzing (fuzz/, docs/RELIABILITY.md) ---------------------------------------

# clang's libFuzzer runtime; only `./build.sh fuzz` needs it (the replay
# build that the test suite runs uses gcc)
FUZZ_PACKAGES=(clang libclang-rt-14-dev)

fuzz_run() {
    local target=${1:-all} secs=${2:-180} t rc=0 log

    case $target in
        replay)
            ensure_packages
            make -C fuzz -j"$(nproc)" replay >/dev/null \
                || die "fuzz replay build failed (make -C fuzz replay)"
            for t in $(make -s -C fuzz list); do
                "fuzz/build-replay/replay_$t" "fuzz/corpus/$t" \
                    || die "replay of fuzz/corpus/$t failed"
            done
            return 0
            ;;
    esac

    [[ $secs =~ ^[0-9]+$ ]] || die "usage: ./build.sh fuzz [TARGET|all|replay] [SECONDS]"
    PACKAGES+=("${FUZZ_PACKAGES[@]}")
    ensure_packages
    make -C fuzz -j"$(nproc)" libfuzzer >/dev/null \
        || die "fuzz build failed (make -C fuzz libfuzzer)"

    if [ "$target" = all ]; then
        target=$(make -s -C fuzz list)
    fi

    mkdir -p fuzz/work fuzz/artifacts
    # one target at a time, at the lowest priority: the machine is shared
    for t in $target; do
        [ -x "fuzz/build-libfuzzer/fuzz_$t" ] || die "no fuzz target '$t' ($(make -s -C fuzz list))"
        mkdir -p "fuzz/work/$t"
        log="fuzz/work/$t.log"
        note "fuzzing $t for ${secs}s (log $log, new inputs in fuzz/work/$t)"
        if nice -n 19 "fuzz/build-libfuzzer/fuzz_$t" -max_total_time="$secs" \
               -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
               -artifact_prefix="fuzz/artifacts/$t-" \
               "fuzz/work/$t" "fuzz/corpus/$t" > "$log" 2>&1
        then
            note "$t: $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') executions, clean"
        else
            rc=1
            tail -n 40 "$log" >&2
            note "$t: FAILED (artifacts in fuzz/artifacts/)"
        fi
    done

    [ "$rc" = 0 ] || die "fuzzing found a problem"
}

# --- Valgrind (t/valgrind_core.t, docs/RELIABILITY.md) -------------------------

run_valgrind() {
    [ $# -eq 0 ] || die "usage: ./build.sh valgrind"
    ensure_packages
    build_all "$TOP/build" 0

    note "core unit tests under Valgrind memcheck (PKI_BUILD=$TOP/build)"
    PKI_BUILD="$TOP/build" PKI_SANITIZE=0 PKI_VALGRIND=1 \
        prove -v t/valgrind_core.t || die "Valgrind run failed"
}

# --- main --------------------------------------------------------------------

cmd=${1:-build}
[ $# -gt 0 ] && shift

case $cmd in
    build)
        [ $# -eq 0 ] || die "usage: ./build.sh [build]"
        ensure_packages
        build_all "$TOP/build" 0
        ;;
    test)
        run_tests "$@"
        ;;
    demo)
        case ${1:-start} in
            start) demo_start ;;
            stop)  demo_stop; note "demo stopped" ;;
            *)     die "usage: ./build.sh demo [stop]" ;;
        esac
        ;;
    fuzz)
        fuzz_run "$@"
        ;;
    valgrind)
        run_valgrind "$@"
        ;;
    -h|--help|help)
        sed -n '7,19p' "$0"
        ;;
    *)
        die "unknown command '$cmd' (use: build, test [--sanitize], demo [stop], fuzz, valgrind)"
        ;;
esac
