#!/usr/bin/env bash
# One benchmark run: mesh-proxy side by side with a direct connection, HAProxy (one thread) and
# nginx (one worker) as reverse proxies in front of the same upstream (nginx answering a fixed
# 1 KiB body), HTTP/1.1 keep-alive, loopback only; two proxies in a row in plaintext and with
# mTLS (certificates from a mesh-citadel of the run); new mTLS connections per second; citadel
# signings per second on one core. Prints the tables and records them, with the machine and the
# targets, in docs/benchmarks.md (between the bench:begin/bench:end markers).
#
# Placement: every proxy under test on core 1, the load generator and the upstream on core 0.
#
# Knobs (environment):
#   BENCH_DURATION=10       seconds of each load phase
#   BENCH_RATE_DURATION=6   seconds of each fixed-rate latency phase
#   BENCH_ROUNDS=5          rounds of fixed-rate latency phases (targets interleaved; the table
#                           gives the median of the rounds' percentiles)
#   BENCH_RT=1              (as root) during the fixed-rate phases, run the proxies, the upstream
#                           and the load generator SCHED_FIFO, so that builds sharing the
#                           machine do not decide the latency percentiles; 0 leaves them at
#                           BENCH_NICE. The load is light then (1000 req/s), far from a core.
#   BENCH_LATENCY_CORRECTION=0  1 passes --latency-correction to oha (latency counted from the
#                           scheduled send time, which adds the load generator's timer lateness)
#   BENCH_WARMUP=2          seconds of warm-up load before each full-load phase
#   BENCH_LOAD_CONNS=32     connections of the full-load (wrk) phases
#   BENCH_RATE=1000         requests/s of the fixed-rate latency phases
#   BENCH_RATE_CONNS=16     connections of the fixed-rate latency phases
#   BENCH_CG_SMALL=2000     requests of the short callgrind run
#   BENCH_CG_LARGE=8000     requests of the long callgrind run
#   BENCH_PORT_BASE=28000   first of the loopback ports used (base+0 .. base+99)
#   BENCH_CONNECT_SECONDS=5 seconds of the new-mTLS-connections phase
#   BENCH_IDLE_CONNS=3000   keep-alive connections held idle in the idle-connections phase
#   BENCH_IDLE_HOLD=12      seconds they are held before the proxy's memory is read: past
#                           mesh-proxy's 1 s park delay and its allocator's 5 s decay time
#   BENCH_UPDATE_DOCS=1     0 leaves docs/benchmarks.md alone
#   BENCH_SKIP_BUILD=0      1 uses the release binaries already built
#   BENCH_PGO=1             mesh-proxy built by bench/pgo.sh (profile-guided: the build the
#                           sidecar image ships); 0 measures the plain release build instead
#   BENCH_NICE=-20          nice level of every process of the run (as root; 0 otherwise), so
#                           that other work on the machine disturbs the measurements less
#   CARGO_TARGET_DIR        where cargo builds (default: target/ of this checkout)
set -euo pipefail

# The idle-connections phase holds thousands of sockets in one client and in each proxy.
hard_nofile=$(ulimit -Hn)
if [[ $hard_nofile == unlimited || $hard_nofile -gt 65536 ]]; then hard_nofile=65536; fi
ulimit -n "$hard_nofile"

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_DIR/target}
DOC=$REPO_DIR/docs/benchmarks.md

DURATION=${BENCH_DURATION:-10}
RATE_DURATION=${BENCH_RATE_DURATION:-6}
ROUNDS=${BENCH_ROUNDS:-5}
LATENCY_CORRECTION=()
if [[ ${BENCH_LATENCY_CORRECTION:-0} == 1 ]]; then LATENCY_CORRECTION=(--latency-correction); fi
WARMUP=${BENCH_WARMUP:-2}
LOAD_CONNS=${BENCH_LOAD_CONNS:-32}
RATE=${BENCH_RATE:-1000}
RATE_CONNS=${BENCH_RATE_CONNS:-16}
CG_SMALL=${BENCH_CG_SMALL:-2000}
CG_LARGE=${BENCH_CG_LARGE:-8000}
PORT_BASE=${BENCH_PORT_BASE:-28000}
UPDATE_DOCS=${BENCH_UPDATE_DOCS:-1}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
PGO=${BENCH_PGO:-1}
if [[ $(id -u) -eq 0 ]]; then
    NICE=${BENCH_NICE:--20}
    RT=${BENCH_RT:-1}
else
    NICE=${BENCH_NICE:-0}
    RT=0
fi
RT_PRIO=10

PROXY_CORE=1
LOAD_CORE=0

# Ports, all on 127.0.0.1.
P_UPSTREAM=$((PORT_BASE + 80))
P_MESH=$((PORT_BASE + 1))
P_MESH_ADMIN=$((PORT_BASE + 0))
P_CHAIN_OUT=$((PORT_BASE + 11))
P_CHAIN_OUT_ADMIN=$((PORT_BASE + 10))
P_CHAIN_IN=$((PORT_BASE + 16))
P_CHAIN_IN_ADMIN=$((PORT_BASE + 15))
P_HAPROXY=$((PORT_BASE + 21))
P_NGINX=$((PORT_BASE + 31))
P_NGINX_CHAIN_IN=$((PORT_BASE + 32))
P_NGINX_CHAIN_OUT=$((PORT_BASE + 33))
P_CG_MESH=$((PORT_BASE + 41))
P_CG_MESH_ADMIN=$((PORT_BASE + 40))
P_CG_HAPROXY=$((PORT_BASE + 42))
P_CG_NGINX=$((PORT_BASE + 43))
P_OTLP=$((PORT_BASE + 44))
P_CITADEL=$((PORT_BASE + 50))
P_TLS_IN=$((PORT_BASE + 56))
P_TLS_IN_ADMIN=$((PORT_BASE + 55))
P_TLS_OUT=$((PORT_BASE + 61))
P_TLS_OUT_ADMIN=$((PORT_BASE + 60))
P_GW=$((PORT_BASE + 66))
P_GW_ADMIN=$((PORT_BASE + 65))
P_GW_TLS=$((PORT_BASE + 71))
P_GW_TLS_ADMIN=$((PORT_BASE + 70))
CONNECT_SECONDS=${BENCH_CONNECT_SECONDS:-5}
IDLE_CONNS=${BENCH_IDLE_CONNS:-3000}
IDLE_HOLD=${BENCH_IDLE_HOLD:-12}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    printf '[bench] error: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "not root and no sudo: install haproxy nginx wrk valgrind procps jq curl by hand"
    SUDO=(sudo)
fi

install_apt() {
    local pkgs=() created_policy=0
    command -v haproxy >/dev/null || pkgs+=(haproxy)
    command -v nginx >/dev/null || pkgs+=(nginx)
    command -v wrk >/dev/null || pkgs+=(wrk)
    command -v valgrind >/dev/null || pkgs+=(valgrind)
    command -v callgrind_annotate >/dev/null || pkgs+=(valgrind)
    command -v pgrep >/dev/null || pkgs+=(procps)
    command -v taskset >/dev/null || pkgs+=(util-linux)
    command -v jq >/dev/null || pkgs+=(jq)
    command -v curl >/dev/null || pkgs+=(curl)
    [[ ${#pkgs[@]} -eq 0 ]] && return 0
    log "installing with apt-get: ${pkgs[*]}"
    # Installing nginx or haproxy must not start their system services: policy-rc.d forbids it
    # for the duration of the install (only if no policy is in place already).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    local rc=0
    {
        "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq &&
            "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
                install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    } || rc=$?
    if [[ $created_policy -eq 1 ]]; then
        "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
    fi
    [[ $rc -eq 0 ]] || die "apt-get install ${pkgs[*]} failed"
}

OHA=""
install_oha() {
    if command -v oha >/dev/null; then
        OHA=$(command -v oha)
    elif [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/oha ]]; then
        OHA=${CARGO_HOME:-$HOME/.cargo}/bin/oha
    else
        log "installing oha (cargo install oha --locked; a few minutes, once)"
        cargo install oha --locked >&2 || die "cargo install oha failed"
        OHA=${CARGO_HOME:-$HOME/.cargo}/bin/oha
    fi
    "$OHA" --help | grep -q -- '--output-format' ||
        die "$OHA lacks --output-format json; update it with: cargo install oha --locked --force"
}

install_apt
install_oha

if [[ $SKIP_BUILD != 1 ]]; then
    log "building release binaries into $TARGET_DIR"
    (cd "$REPO_DIR" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p mesh-proxy -p mesh-echo \
        -p mesh-citadel -p mesh-bench >&2) || die "cargo build --release failed"
    if [[ $PGO == 1 ]]; then
        log "building mesh-proxy profile-guided (bench/pgo.sh)"
        CARGO_TARGET_DIR=$TARGET_DIR "$BENCH_DIR/pgo.sh" --out "$TARGET_DIR/pgo/mesh-proxy" ||
            die "bench/pgo.sh failed"
    fi
fi
if [[ $PGO == 1 ]]; then
    MESH_PROXY=$TARGET_DIR/pgo/mesh-proxy
    BUILD_NOTE="mesh-proxy profile-guided (bench/pgo.sh), as the sidecar image builds it"
else
    MESH_PROXY=$TARGET_DIR/release/mesh-proxy
    BUILD_NOTE="mesh-proxy plain release build (BENCH_PGO=0)"
fi
MESH_CITADEL=$TARGET_DIR/release/mesh-citadel
CITADEL_BENCH=$TARGET_DIR/release/citadel-bench
MTLS_CONNECT=$TARGET_DIR/release/mtls-connect
IDLE_CONNS_BIN=$TARGET_DIR/release/idle-conns
OTLP_SINK=$TARGET_DIR/release/otlp-sink
for b in "$MESH_PROXY" "$MESH_CITADEL" "$CITADEL_BENCH" "$MTLS_CONNECT" "$IDLE_CONNS_BIN" "$OTLP_SINK"; do
    [[ -x $b ]] || die "$b not built"
done

# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------

WORK=$(mktemp -d /tmp/mesh-bench.XXXXXX)
CG_KEEP=$TARGET_DIR/bench
mkdir -p "$CG_KEEP"
PIDS=()

cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for p in "$P_UPSTREAM" "$P_MESH" "$P_MESH_ADMIN" "$P_CHAIN_OUT" "$P_CHAIN_OUT_ADMIN" "$P_CHAIN_IN" \
    "$P_CHAIN_IN_ADMIN" "$P_HAPROXY" "$P_NGINX" "$P_CG_MESH" "$P_CG_MESH_ADMIN" "$P_CG_HAPROXY" \
    "$P_CG_NGINX" "$P_OTLP" "$P_CITADEL" "$P_TLS_IN" "$P_TLS_IN_ADMIN" "$P_TLS_OUT" "$P_TLS_OUT_ADMIN" \
    "$P_GW" "$P_GW_ADMIN" "$P_GW_TLS" "$P_GW_TLS_ADMIN"; do
    if port_busy "$p"; then
        die "port 127.0.0.1:$p is in use; pick another range with BENCH_PORT_BASE"
    fi
done

# pinned CORE CMD...: runs CMD on CORE at the run's nice level.
pinned() {
    local core=$1
    shift
    nice -n "$NICE" taskset -c "$core" "$@"
}

# rate_pinned CORE CMD...: as pinned, SCHED_FIFO when BENCH_RT=1.
rate_pinned() {
    local core=$1
    shift
    if [[ $RT == 1 ]]; then
        chrt -f "$RT_PRIO" taskset -c "$core" "$@"
    else
        pinned "$core" "$@"
    fi
}

# start NAME CORE CMD...: starts CMD pinned to CORE, output in $WORK/NAME.log; sets STARTED_PID.
STARTED_PID=""
start() {
    local name=$1 core=$2
    shift 2
    nice -n "$NICE" taskset -c "$core" "$@" >"$WORK/$name.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}

# stop PID: SIGTERM, wait for the exit (callgrind writes its profile then).
stop() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# wait_ok NAME PID URL TIMEOUT_S: waits until URL answers 200 with a 1024-byte body.
wait_ok() {
    local name=$1 pid=$2 url=$3 timeout=$4 deadline out
    deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || {
            tail -n 20 "$WORK/$name.log" >&2 || true
            die "$name exited during start-up (log above)"
        }
        out=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' --max-time 2 "$url" || true)
        [[ $out == "200 1024" ]] && return 0
        sleep 0.2
    done
    tail -n 20 "$WORK/$name.log" >&2 || true
    die "$name did not answer 200 with 1024 bytes on $url within ${timeout}s (last: '${out:-none}')"
}

BODY=$(printf '%01024d' 0 | tr 0 x)

upstream_conf() {
    cat >"$WORK/upstream.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/upstream.pid;
error_log $WORK/upstream.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path $WORK/ub; proxy_temp_path $WORK/up; fastcgi_temp_path $WORK/uf;
    uwsgi_temp_path $WORK/uu; scgi_temp_path $WORK/us;
    server {
        listen 127.0.0.1:$P_UPSTREAM;
        location / { default_type text/plain; return 200 "$BODY"; }
    }
}
EOF
}

nginx_conf() { # nginx_conf NAME PORT [TARGET_PORT]
    cat >"$WORK/$1.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/$1.pid;
error_log $WORK/$1.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path $WORK/$1-b; proxy_temp_path $WORK/$1-p; fastcgi_temp_path $WORK/$1-f;
    uwsgi_temp_path $WORK/$1-u; scgi_temp_path $WORK/$1-s;
    upstream app { server 127.0.0.1:${3:-$P_UPSTREAM}; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$2;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

haproxy_conf() { # haproxy_conf NAME PORT
    cat >"$WORK/$1.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend fe
    bind 127.0.0.1:$2
    default_backend app
backend app
    http-reuse always
    server up 127.0.0.1:$P_UPSTREAM
EOF
}

mesh_conf() { # mesh_conf NAME LISTEN_PORT DIRECTION TARGET_PORT
    cat >"$WORK/$1.yaml" <<EOF
version: "bench"
listeners:
  - { name: l, address: "127.0.0.1:$2", direction: $3, protocol: HTTP, routeTable: rt }
routeTables:
  - name: rt
    virtualHosts:
      - name: all
        domains: ["*"]
        routes:
          - route: { clusters: [{ cluster: next, weight: 100 }] }
clusters:
  - { name: next, lbPolicy: ROUND_ROBIN, protocol: HTTP1, endpoints: [{ address: "127.0.0.1:$4" }] }
EOF
}

# The mTLS pair: the inbound side is STRICT, the outbound side originates mesh mTLS and
# expects the inbound proxy's SPIFFE ID.
TRUST_DOMAIN=cluster.local
spiffe_of() { echo "spiffe://$TRUST_DOMAIN/ns/bench/sa/$1"; }
mesh_tls_conf() { # mesh_tls_conf NAME LISTEN_PORT DIRECTION TARGET_PORT [SERVER_NAME]
    local listener_tls="" cluster_tls="" endpoint_tls=""
    if [[ $3 == INBOUND ]]; then
        listener_tls=", mtlsMode: MTLS_MODE_STRICT"
    else
        cluster_tls=", tls: { mode: ISTIO_MUTUAL }"
        endpoint_tls=", identities: [\"$(spiffe_of "$5")\"], sidecar: true"
    fi
    cat >"$WORK/$1.yaml" <<EOF
version: "bench"
listeners:
  - { name: l, address: "127.0.0.1:$2", direction: $3, protocol: HTTP, routeTable: rt$listener_tls }
routeTables:
  - name: rt
    virtualHosts:
      - name: all
        domains: ["*"]
        routes:
          - route: { clusters: [{ cluster: next, weight: 100 }] }
clusters:
  - { name: next, lbPolicy: ROUND_ROBIN, protocol: HTTP1$cluster_tls, endpoints: [{ address: "127.0.0.1:$4"$endpoint_tls }] }
EOF
}

# The plain proxy with DestinationRule-style connection limits (Envoy's defaults, never reached
# here) and outlier detection (never tripping: every answer is a 200).
mesh_resilience_conf() { # mesh_resilience_conf NAME LISTEN_PORT TARGET_PORT
    mesh_conf "$1" "$2" OUTBOUND "$3"
    cat >>"$WORK/$1.yaml" <<EOF
  - name: guarded
    lbPolicy: ROUND_ROBIN
    protocol: HTTP1
    endpoints: [{ address: "127.0.0.1:$3" }]
    circuitBreakers: { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3 }
    outlierDetection: { consecutive5xx: 5, consecutiveGatewayErrors: 5, intervalMs: 10000, baseEjectionTimeMs: 30000, maxEjectionPercent: 100 }
EOF
    sed -i 's/cluster: next, weight: 100/cluster: guarded, weight: 100/' "$WORK/$1.yaml"
}

# The plain proxy with every request mirrored (Istio's default mirror share) to a second
# cluster on the same upstream.
mesh_mirror_conf() { # mesh_mirror_conf NAME LISTEN_PORT TARGET_PORT
    mesh_conf "$1" "$2" OUTBOUND "$3"
    cat >>"$WORK/$1.yaml" <<EOF
  - { name: shadow, lbPolicy: ROUND_ROBIN, protocol: HTTP1, endpoints: [{ address: "127.0.0.1:$3" }] }
EOF
    sed -i 's/route: { clusters: \[{ cluster: next, weight: 100 }\] }/route: { clusters: [{ cluster: next, weight: 100 }], mirrors: [{ cluster: shadow, percentage: 100 }] }/' "$WORK/$1.yaml"
    grep -q 'mirrors:' "$WORK/$1.yaml" || die "mirror config for $1 not written"
}

# A gateway listener (Istio's ingress gateway: headers from outside stripped) to TARGET_PORT:
# over mesh mTLS to the proxy SERVER_NAME when given, else in plaintext; with TLS_CERT the
# listener terminates TLS for gw.bench with TLS_CERT.pem and TLS_CERT.key.
gateway_conf() { # gateway_conf NAME LISTEN_PORT TARGET_PORT [SERVER_NAME] [TLS_CERT]
    local cluster_tls="" endpoint_tls="" listener_tls=""
    if [[ -n ${4:-} ]]; then
        cluster_tls=", tls: { mode: ISTIO_MUTUAL }"
        endpoint_tls=", identities: [\"$(spiffe_of "$4")\"], sidecar: true"
    fi
    if [[ -n ${5:-} ]]; then
        listener_tls=", downstreamTls: { certificates: [{ sniHosts: [gw.bench], certificateChain: \"$5.pem\", privateKey: \"$5.key\" }] }"
    fi
    cat >"$WORK/$1.yaml" <<EOF
version: "bench"
listeners:
  - { name: gw, address: "127.0.0.1:$2", direction: GATEWAY, protocol: HTTP, routeTable: rt$listener_tls }
routeTables:
  - name: rt
    virtualHosts:
      - name: all
        domains: ["*"]
        routes:
          - route: { clusters: [{ cluster: next, weight: 100 }] }
clusters:
  - { name: next, lbPolicy: ROUND_ROBIN, protocol: HTTP1$cluster_tls, endpoints: [{ address: "127.0.0.1:$3"$endpoint_tls }] }
EOF
}

# A CA and a certificate for gw.bench signed by it: the gateway's HTTPS server certificate.
gateway_certificate() { # gateway_certificate PREFIX
    local p=$1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=bench gateway CA" -keyout "$p-ca.key" -out "$p-ca.pem" 2>/dev/null ||
        die "openssl: gateway CA"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=gw.bench" \
        -keyout "$p.key" -out "$p.csr" 2>/dev/null || die "openssl: gateway key"
    printf 'subjectAltName=DNS:gw.bench\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$p.ext"
    openssl x509 -req -in "$p.csr" -CA "$p-ca.pem" -CAkey "$p-ca.key" -CAcreateserial -days 2 \
        -extfile "$p.ext" -out "$p.pem" 2>/dev/null || die "openssl: gateway certificate"
}

# start_mesh_tls NAME CORE ADMIN_PORT: a proxy whose certificate comes from the run's citadel.
start_mesh_tls() {
    local name=$1 core=$2 admin=$3 token
    token=$("$MESH_CITADEL" token --tokens "$WORK/tokens" --namespace bench --service-account "$name") ||
        die "no token for $name"
    start "$name" "$core" env MESH_PROXY_WORKERS=1 "$MESH_PROXY" --config "$WORK/$name.yaml" \
        --admin-addr "127.0.0.1:$admin" --ca-addr "https://127.0.0.1:$P_CITADEL" \
        --root-cert-file "$WORK/ca/root-cert.pem" --token-file "$token" --trust-domain "$TRUST_DOMAIN"
}

start_mesh() { # start_mesh NAME CORE ADMIN_PORT [valgrind args...]
    local name=$1 core=$2 admin=$3
    shift 3
    start "$name" "$core" env MESH_PROXY_WORKERS=1 "$@" "$MESH_PROXY" --config "$WORK/$name.yaml" \
        --admin-addr "127.0.0.1:$admin"
}

# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # utime + stime of all threads of PID, in clock ticks
    local s f
    s=$(<"/proc/$1/stat")
    s=${s##*) }
    read -r -a f <<<"$s"
    echo $((f[11] + f[12]))
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# Samples VmRSS of the given PIDs (summed) every 0.5 s into FILE until stopped.
SAMPLER_PID=""
sampler_start() {
    local file=$1
    shift
    (
        while :; do
            t=0
            for p in "$@"; do t=$((t + $(rss_kb "$p"))); done
            echo "$t" >>"$file"
            sleep 0.5
        done
    ) &
    SAMPLER_PID=$!
    PIDS+=("$SAMPLER_PID")
}
sampler_stop() {
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
}

declare -A RPS CPU_FULL CPU_RATE IR P50 P90 P99 RSS_IDLE RSS_LOAD

# full_load KEY URL PID...: wrk at full load; requests/s, CPU us/request of the PIDs.
full_load() {
    local key=$1 url=$2 out reqs t0 t1 p non2xx
    shift 2
    pinned "$LOAD_CORE" wrk -t1 -c"$LOAD_CONNS" -d"${WARMUP}s" "$url" >/dev/null
    t0=0
    for p in "$@"; do t0=$((t0 + $(cpu_ticks "$p"))); done
    if [[ $# -gt 0 ]]; then sampler_start "$WORK/rss.$key.full" "$@"; fi
    out=$(pinned "$LOAD_CORE" wrk -t1 -c"$LOAD_CONNS" -d"${DURATION}s" "$url")
    if [[ $# -gt 0 ]]; then sampler_stop; fi
    t1=0
    for p in "$@"; do t1=$((t1 + $(cpu_ticks "$p"))); done
    echo "$out" >"$WORK/wrk.$key.txt"
    reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
    non2xx=$(awk '/Non-2xx/ { print $NF }' <<<"$out")
    [[ -n $reqs && $reqs -gt 0 ]] || die "wrk against $key completed no request: $out"
    [[ -z $non2xx ]] || die "wrk against $key got $non2xx non-2xx answers"
    RPS[$key]=$(awk '/Requests\/sec/ { printf "%.0f", $2 }' <<<"$out")
    if [[ $# -gt 0 ]]; then
        CPU_FULL[$key]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$reqs" \
            'BEGIN { printf "%.1f", d / hz * 1e6 / n }')
    fi
}

# fixed_rate KEY URL PID...: one phase of oha at RATE req/s over RATE_CONNS connections. Adds
# the phase's latency percentiles to LAT_*[KEY], the CPU ticks of the PIDs and the requests
# answered to RATE_TICKS[KEY] and RATE_N[KEY], and samples their RSS.
declare -A LAT_P50 LAT_P90 LAT_P99 RATE_TICKS RATE_N
fixed_rate() {
    local key=$1 url=$2 json t0 t1 p n ok rps
    shift 2
    t0=0
    for p in "$@"; do t0=$((t0 + $(cpu_ticks "$p"))); done
    if [[ $# -gt 0 ]]; then sampler_start "$WORK/rss.$key.rate" "$@"; fi
    json=$WORK/oha.$key.json
    rate_pinned "$LOAD_CORE" "$OHA" --no-tui --output-format json "${LATENCY_CORRECTION[@]}" \
        -q "$RATE" -c "$RATE_CONNS" -z "${RATE_DURATION}s" "$url" >"$json" ||
        die "oha against $key failed"
    if [[ $# -gt 0 ]]; then sampler_stop; fi
    t1=0
    for p in "$@"; do t1=$((t1 + $(cpu_ticks "$p"))); done
    n=$(jq '[.statusCodeDistribution[]] | add // 0' "$json")
    ok=$(jq '.statusCodeDistribution["200"] // 0' "$json")
    [[ $n -gt 0 && $n -eq $ok ]] || die "oha against $key: $ok of $n answers were 200 ($json)"
    # Requests still in flight when the phase ends are reported as aborted; nothing else may fail.
    [[ $(jq '[.errorDistribution | to_entries[] | select(.key != "aborted due to deadline") | .value] | add // 0' "$json") -eq 0 ]] ||
        die "oha against $key saw errors: $(jq -c .errorDistribution "$json")"
    rps=$(jq '.summary.requestsPerSec' "$json")
    awk -v r="$rps" -v want="$RATE" 'BEGIN { exit !(r > want * 0.95) }' ||
        die "oha held only $rps req/s against $key (wanted $RATE)"
    LAT_P50[$key]+=" $(jq '.latencyPercentiles.p50 * 1e6 | round' "$json")"
    LAT_P90[$key]+=" $(jq '.latencyPercentiles.p90 * 1e6 | round' "$json")"
    LAT_P99[$key]+=" $(jq '.latencyPercentiles.p99 * 1e6 | round' "$json")"
    RATE_TICKS[$key]=$((${RATE_TICKS[$key]:-0} + t1 - t0))
    RATE_N[$key]=$((${RATE_N[$key]:-0} + n))
}

# median_ms "US US ...": the median of microsecond values, in milliseconds.
median_ms() {
    tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n |
        awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.3f", m / 1000 }'
}

# rate_summary KEY: the table's latency and fixed-rate CPU cells from the rounds.
rate_summary() {
    local key=$1
    P50[$key]=$(median_ms "${LAT_P50[$key]}")
    P90[$key]=$(median_ms "${LAT_P90[$key]}")
    P99[$key]=$(median_ms "${LAT_P99[$key]}")
    if [[ ${RATE_TICKS[$key]:-0} -gt 0 ]]; then
        CPU_RATE[$key]=$(awk -v d="${RATE_TICKS[$key]}" -v hz="$CLK_TCK" -v n="${RATE_N[$key]}" \
            'BEGIN { printf "%.1f", d / hz * 1e6 / n }')
    fi
}

# callgrind_total NAME PORT START_FN REQUESTS: sets CG_TOTAL to the instructions of a proxy run
# under callgrind that served REQUESTS sequential requests on one connection.
CG_TOTAL=""
callgrind_total() {
    local name=$1 port=$2 starter=$3 n=$4 out pid total
    out=$WORK/callgrind.$name.$n.out
    "$starter" "$name" valgrind --tool=callgrind --callgrind-out-file="$out"
    pid=$STARTED_PID
    wait_ok "$name" "$pid" "http://127.0.0.1:$port/" 120
    pinned "$LOAD_CORE" "$OHA" --no-tui --output-format json -n "$n" -c 1 \
        "http://127.0.0.1:$port/" >"$WORK/oha.cg.$name.$n.json" || die "oha against callgrind $name failed"
    [[ $(jq '.statusCodeDistribution["200"] // 0' "$WORK/oha.cg.$name.$n.json") -eq $n ]] ||
        die "callgrind $name: not all of $n requests answered 200"
    stop "$pid"
    total=$(awk '/^(summary|totals):/ { print $2; exit }' "$out" 2>/dev/null || true)
    [[ -n $total ]] || die "no callgrind totals for $name ($out); log: $(tail -n 5 "$WORK/$name.log")"
    cp "$out" "$CG_KEEP/callgrind.$name.$n.out"
    CG_TOTAL=$total
}
instructions_per_request() { # KEY NAME PORT START_FN
    local key=$1 name=$2 port=$3 starter=$4 small large
    log "callgrind: $key, $CG_SMALL then $CG_LARGE requests"
    callgrind_total "$name" "$port" "$starter" "$CG_SMALL"
    small=$CG_TOTAL
    callgrind_total "$name" "$port" "$starter" "$CG_LARGE"
    large=$CG_TOTAL
    IR[$key]=$(awk -v a="$small" -v b="$large" -v n="$CG_SMALL" -v m="$CG_LARGE" \
        'BEGIN { printf "%.0f", (b - a) / (m - n) }')
}

cg_start_mesh() { # NAME valgrind...
    local name=$1
    shift
    start_mesh "$name" "$PROXY_CORE" "$P_CG_MESH_ADMIN" "$@"
}
# The same proxy with Istio's standard metrics (and the peer metadata exchange) off.
cg_start_mesh_metrics_off() { # NAME valgrind...
    local name=$1
    shift
    start "$name" "$PROXY_CORE" env MESH_PROXY_WORKERS=1 MESH_STANDARD_METRICS=false "$@" \
        "$MESH_PROXY" --config "$WORK/$name.yaml" --admin-addr "127.0.0.1:$P_CG_MESH_ADMIN"
}
# The same proxy with tracing (its config samples 1 %) to the run's OTLP sink and access logs
# (its config logs every request) to a file.
cg_start_mesh_telemetry() { # NAME valgrind...
    local name=$1
    shift
    start "$name" "$PROXY_CORE" env MESH_PROXY_WORKERS=1 \
        MESH_TRACING_OTLP_ENDPOINT="http://127.0.0.1:$P_OTLP" MESH_ACCESS_LOG_FILE="$WORK/access.log" \
        "$@" "$MESH_PROXY" --config "$WORK/$name.yaml" --admin-addr "127.0.0.1:$P_CG_MESH_ADMIN"
}
cg_start_haproxy() {
    local name=$1
    shift
    start "$name" "$PROXY_CORE" "$@" haproxy -db -f "$WORK/$name.cfg"
}
cg_start_nginx() {
    local name=$1
    shift
    start "$name" "$PROXY_CORE" "$@" nginx -p "$WORK" -e "$WORK/$name.err" -c "$WORK/$name.conf"
}

# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
RUN_START=$SECONDS

upstream_conf
start upstream "$LOAD_CORE" nginx -p "$WORK" -e "$WORK/upstream.err" -c "$WORK/upstream.conf"
PID_UPSTREAM=$STARTED_PID
wait_ok upstream "$PID_UPSTREAM" "http://127.0.0.1:$P_UPSTREAM/" 20

mesh_conf mesh "$P_MESH" OUTBOUND "$P_UPSTREAM"
start_mesh mesh "$PROXY_CORE" "$P_MESH_ADMIN"
PID_MESH=$STARTED_PID
mesh_conf chain-in "$P_CHAIN_IN" INBOUND "$P_UPSTREAM"
start_mesh chain-in "$PROXY_CORE" "$P_CHAIN_IN_ADMIN"
PID_CHAIN_IN=$STARTED_PID
mesh_conf chain-out "$P_CHAIN_OUT" OUTBOUND "$P_CHAIN_IN"
start_mesh chain-out "$PROXY_CORE" "$P_CHAIN_OUT_ADMIN"
PID_CHAIN_OUT=$STARTED_PID
start citadel "$LOAD_CORE" "$MESH_CITADEL" --dir "$WORK/ca" --tokens "$WORK/tokens" \
    --grpc-addr "127.0.0.1:$P_CITADEL" --trust-domain "$TRUST_DOMAIN"
PID_CITADEL=$STARTED_PID
deadline=$((SECONDS + 20))
until [[ -f $WORK/ca/root-cert.pem ]] && port_busy "$P_CITADEL"; do
    ((SECONDS < deadline)) || die "mesh-citadel did not start: $(tail -n 5 "$WORK/citadel.log")"
    sleep 0.2
done
mesh_tls_conf tls-in "$P_TLS_IN" INBOUND "$P_UPSTREAM"
start_mesh_tls tls-in "$PROXY_CORE" "$P_TLS_IN_ADMIN"
PID_TLS_IN=$STARTED_PID
mesh_tls_conf tls-out "$P_TLS_OUT" OUTBOUND "$P_TLS_IN" tls-in
start_mesh_tls tls-out "$PROXY_CORE" "$P_TLS_OUT_ADMIN"
PID_TLS_OUT=$STARTED_PID
# The gateway path: client -> gateway -> sidecar (tls-in, STRICT) -> app, the gateway with its
# own mesh identity; and a gateway HTTPS server for new TLS connections from outside.
gateway_conf gw "$P_GW" "$P_TLS_IN" tls-in
start_mesh_tls gw "$PROXY_CORE" "$P_GW_ADMIN"
PID_GW=$STARTED_PID
gateway_certificate "$WORK/gw-cert"
gateway_conf gw-tls "$P_GW_TLS" "$P_UPSTREAM" "" "$WORK/gw-cert"
start_mesh gw-tls "$PROXY_CORE" "$P_GW_TLS_ADMIN"
PID_GW_TLS=$STARTED_PID
haproxy_conf haproxy "$P_HAPROXY"
start haproxy "$PROXY_CORE" haproxy -db -f "$WORK/haproxy.cfg"
PID_HAPROXY=$STARTED_PID
nginx_conf nginx "$P_NGINX"
cg_start_nginx nginx
PID_NGINX=$STARTED_PID
# Two nginx in a row: what two proxies in a row add on this machine at best.
nginx_conf nginx-chain-in "$P_NGINX_CHAIN_IN"
cg_start_nginx nginx-chain-in
PID_NGINX_CHAIN_IN=$STARTED_PID
nginx_conf nginx-chain-out "$P_NGINX_CHAIN_OUT" "$P_NGINX_CHAIN_IN"
cg_start_nginx nginx-chain-out
PID_NGINX_CHAIN_OUT=$STARTED_PID

for a in "$P_MESH_ADMIN" "$P_CHAIN_IN_ADMIN" "$P_CHAIN_OUT_ADMIN" "$P_TLS_IN_ADMIN" "$P_TLS_OUT_ADMIN" \
    "$P_GW_ADMIN" "$P_GW_TLS_ADMIN"; do
    deadline=$((SECONDS + 20))
    until [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$a/ready" || true) == 200 ]]; do
        ((SECONDS < deadline)) || die "mesh-proxy admin 127.0.0.1:$a never became ready"
        sleep 0.2
    done
done
# Idle resident memory: started, configured, no traffic yet.
RSS_IDLE[mesh]=$(rss_kb "$PID_MESH")
RSS_IDLE[haproxy]=$(rss_kb "$PID_HAPROXY")
RSS_IDLE[nginx]=$(rss_kb "$PID_NGINX")
wait_ok mesh "$PID_MESH" "http://127.0.0.1:$P_MESH/" 20
wait_ok chain-out "$PID_CHAIN_OUT" "http://127.0.0.1:$P_CHAIN_OUT/" 20
wait_ok tls-out "$PID_TLS_OUT" "http://127.0.0.1:$P_TLS_OUT/" 20
wait_ok gw "$PID_GW" "http://127.0.0.1:$P_GW/" 20
wait_ok haproxy "$PID_HAPROXY" "http://127.0.0.1:$P_HAPROXY/" 20
wait_ok nginx "$PID_NGINX" "http://127.0.0.1:$P_NGINX/" 20
wait_ok nginx-chain-out "$PID_NGINX_CHAIN_OUT" "http://127.0.0.1:$P_NGINX_CHAIN_OUT/" 20

log "full load: wrk, ${LOAD_CONNS} connections, ${DURATION}s per target"
full_load direct "http://127.0.0.1:$P_UPSTREAM/"
full_load mesh "http://127.0.0.1:$P_MESH/" "$PID_MESH"
full_load haproxy "http://127.0.0.1:$P_HAPROXY/" "$PID_HAPROXY"
full_load nginx "http://127.0.0.1:$P_NGINX/" "$PID_NGINX"
for k in direct mesh haproxy nginx; do
    log "  $k: ${RPS[$k]} req/s, ${CPU_FULL[$k]:--} us/req"
done
# Two mesh proxies in a row: warm their pools (they take no part in the full-load phases).
pinned "$LOAD_CORE" wrk -t1 -c"$RATE_CONNS" -d"${WARMUP}s" "http://127.0.0.1:$P_CHAIN_OUT/" >/dev/null
pinned "$LOAD_CORE" wrk -t1 -c"$RATE_CONNS" -d"${WARMUP}s" "http://127.0.0.1:$P_TLS_OUT/" >/dev/null
pinned "$LOAD_CORE" wrk -t1 -c"$RATE_CONNS" -d"${WARMUP}s" "http://127.0.0.1:$P_GW/" >/dev/null
pinned "$LOAD_CORE" wrk -t1 -c"$RATE_CONNS" -d"${WARMUP}s" "http://127.0.0.1:$P_NGINX_CHAIN_OUT/" >/dev/null
# Every process of the fixed-rate phases (SCHED_FIFO during them when BENCH_RT=1).
RATE_PIDS=("$PID_UPSTREAM" "$PID_MESH" "$PID_CHAIN_IN" "$PID_CHAIN_OUT" "$PID_TLS_IN" "$PID_TLS_OUT" "$PID_GW" "$PID_HAPROXY" "$PID_NGINX" "$PID_NGINX_CHAIN_IN" "$PID_NGINX_CHAIN_OUT")
if [[ $RT == 1 ]]; then
    for pid in "${RATE_PIDS[@]}"; do
        chrt -a -f -p "$RT_PRIO" "$pid" >/dev/null || die "chrt -f on $pid failed (BENCH_RT=0 skips it)"
    done
fi
for round in $(seq "$ROUNDS"); do
    log "fixed rate, round $round of $ROUNDS: oha, ${RATE} req/s over ${RATE_CONNS} connections, ${RATE_DURATION}s per target"
    fixed_rate direct "http://127.0.0.1:$P_UPSTREAM/"
    fixed_rate mesh "http://127.0.0.1:$P_MESH/" "$PID_MESH"
    fixed_rate chain "http://127.0.0.1:$P_CHAIN_OUT/" "$PID_CHAIN_OUT" "$PID_CHAIN_IN"
    fixed_rate chain-mtls "http://127.0.0.1:$P_TLS_OUT/" "$PID_TLS_OUT" "$PID_TLS_IN"
    fixed_rate gateway "http://127.0.0.1:$P_GW/" "$PID_GW" "$PID_TLS_IN"
    fixed_rate haproxy "http://127.0.0.1:$P_HAPROXY/" "$PID_HAPROXY"
    fixed_rate nginx "http://127.0.0.1:$P_NGINX/" "$PID_NGINX"
    fixed_rate nginx-chain "http://127.0.0.1:$P_NGINX_CHAIN_OUT/" "$PID_NGINX_CHAIN_OUT" "$PID_NGINX_CHAIN_IN"
done
if [[ $RT == 1 ]]; then
    for pid in "${RATE_PIDS[@]}"; do
        chrt -a -o -p 0 "$pid" >/dev/null || true
    done
fi
for k in direct mesh chain chain-mtls gateway haproxy nginx nginx-chain; do
    rate_summary "$k"
    log "  $k: p50/p90/p99 ${P50[$k]}/${P90[$k]}/${P99[$k]} ms (p99 of the rounds:${LAT_P99[$k]} us)"
done

for k in mesh haproxy nginx; do
    RSS_LOAD[$k]=$(cat "$WORK/rss.$k.full" "$WORK/rss.$k.rate" | sort -n | tail -n 1)
done

# Idle keep-alive connections: one request each, then held open; what each costs the proxy
# and whether the memory comes back after they close.
log "idle connections: ${IDLE_CONNS} keep-alive connections held, then closed"
declare -A IDLE_LINE
for k in mesh haproxy nginx; do
    case $k in
        mesh) port=$P_MESH pid=$PID_MESH ;;
        haproxy) port=$P_HAPROXY pid=$PID_HAPROXY ;;
        nginx) port=$P_NGINX pid=$PID_NGINX ;;
    esac
    IDLE_LINE[$k]=$(pinned "$LOAD_CORE" "$IDLE_CONNS_BIN" --addr "127.0.0.1:$port" --pid "$pid" \
        --conns "$IDLE_CONNS" --hold "$IDLE_HOLD" --settle 15) || die "idle-conns against $k failed"
    log "  $k: ${IDLE_LINE[$k]}"
done
for pid in "$PID_MESH" "$PID_CHAIN_IN" "$PID_CHAIN_OUT" "$PID_TLS_OUT" "$PID_GW" "$PID_HAPROXY" "$PID_NGINX" "$PID_NGINX_CHAIN_IN" "$PID_NGINX_CHAIN_OUT"; do stop "$pid"; done

# New mTLS connections: handshake with a mesh certificate, one request, close; the inbound
# proxy alone on its core.
log "new mTLS connections to the STRICT inbound proxy, ${CONNECT_SECONDS}s"
CONNECT_LINE=$(pinned "$LOAD_CORE" "$MTLS_CONNECT" --addr "127.0.0.1:$P_TLS_IN" --ca-dir "$WORK/ca" \
    --trust-domain "$TRUST_DOMAIN" --server-id "$(spiffe_of tls-in)" --seconds "$CONNECT_SECONDS") ||
    die "mtls-connect failed"
log "  $CONNECT_LINE"
field() { tr ' ' '\n' <<<"$CONNECT_LINE" | awk -F= -v k="$1" '$1 == k { print $2 }'; }
CONNECT_RATE=$(field conns_per_sec)
CONNECT_P50=$(field p50_ms)
CONNECT_P99=$(field p99_ms)
CONNECT_ERRORS=$(field errors)
stop "$PID_TLS_IN"
stop "$PID_CITADEL"

# New TLS connections from outside the mesh to the gateway's HTTPS server (server
# certificate only, as a browser or curl connects).
log "new TLS connections to the gateway's HTTPS server, ${CONNECT_SECONDS}s"
GW_CONNECT_LINE=$(pinned "$LOAD_CORE" "$MTLS_CONNECT" --addr "127.0.0.1:$P_GW_TLS" \
    --server-ca "$WORK/gw-cert-ca.pem" --sni gw.bench --host gw.bench --seconds "$CONNECT_SECONDS") ||
    die "mtls-connect against the gateway failed"
log "  $GW_CONNECT_LINE"
gw_field() { tr ' ' '\n' <<<"$GW_CONNECT_LINE" | awk -F= -v k="$1" '$1 == k { print $2 }'; }
GW_CONNECT_RATE=$(gw_field conns_per_sec)
GW_CONNECT_P50=$(gw_field p50_ms)
GW_CONNECT_P99=$(gw_field p99_ms)
GW_CONNECT_ERRORS=$(gw_field errors)
stop "$PID_GW_TLS"

log "citadel signings on one core"
SIGN_LINE=$(pinned "$PROXY_CORE" "$CITADEL_BENCH" --seconds 3 2>&1 | tail -n 1)
# The last column: certificates per CPU second of the signing thread.
SIGN_RATE=$(awk -F'|' '{ v = $(NF - 1); gsub(/ /, "", v); print v }' <<<"$SIGN_LINE")
log "  $SIGN_LINE"

mesh_conf cg-mesh "$P_CG_MESH" OUTBOUND "$P_UPSTREAM"
haproxy_conf cg-haproxy "$P_CG_HAPROXY"
nginx_conf cg-nginx "$P_CG_NGINX"
instructions_per_request mesh cg-mesh "$P_CG_MESH" cg_start_mesh
instructions_per_request mesh-metrics-off cg-mesh "$P_CG_MESH" cg_start_mesh_metrics_off
mesh_conf cg-mesh-telemetry "$P_CG_MESH" OUTBOUND "$P_UPSTREAM"
cat >>"$WORK/cg-mesh-telemetry.yaml" <<EOF
telemetry:
  accessLogging: { logs: [{ name: envoy, format: TEXT, mode: CLIENT_AND_SERVER }] }
  tracing: { randomSamplingPercentage: 1 }
EOF
start otlp-sink "$LOAD_CORE" "$OTLP_SINK" --addr "127.0.0.1:$P_OTLP"
OTLP_PID=$STARTED_PID
instructions_per_request mesh-telemetry cg-mesh-telemetry "$P_CG_MESH" cg_start_mesh_telemetry
stop "$OTLP_PID"
SPANS=$(grep -o 'spans=[0-9]*' "$WORK/otlp-sink.log" | cut -d= -f2)
LOG_LINES=$(wc -l <"$WORK/access.log")
[[ ${SPANS:-0} -gt 0 ]] || die "the OTLP sink got no span from the traced proxy"
log "  traced proxy: $SPANS spans exported, $LOG_LINES access log lines"
mesh_resilience_conf cg-mesh-resilience "$P_CG_MESH" "$P_UPSTREAM"
instructions_per_request mesh-resilience cg-mesh-resilience "$P_CG_MESH" cg_start_mesh
mesh_mirror_conf cg-mesh-mirror "$P_CG_MESH" "$P_UPSTREAM"
instructions_per_request mesh-mirror cg-mesh-mirror "$P_CG_MESH" cg_start_mesh
gateway_conf cg-gateway "$P_CG_MESH" "$P_UPSTREAM"
instructions_per_request gateway cg-gateway "$P_CG_MESH" cg_start_mesh
instructions_per_request haproxy cg-haproxy "$P_CG_HAPROXY" cg_start_haproxy
instructions_per_request nginx cg-nginx "$P_CG_NGINX" cg_start_nginx

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$((SECONDS - RUN_START))

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

mb() { awk -v k="${1:-}" 'BEGIN { if (k == "") print "-"; else printf "%.1f", k * 1024 / 1e6 }'; }
v() { if [[ -n ${1:-} ]]; then printf '%s' "$1"; else printf -- '-'; fi; }

row() { # KEY LABEL
    local k=$1
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" \
        "$(v "${RPS[$k]:-}")" "$(v "${CPU_FULL[$k]:-}")" "$(v "${CPU_RATE[$k]:-}")" "$(v "${IR[$k]:-}")" \
        "$(v "${P50[$k]:-}")" "$(v "${P90[$k]:-}")" "$(v "${P99[$k]:-}")" \
        "$(mb "${RSS_IDLE[$k]:-}")" "$(mb "${RSS_LOAD[$k]:-}")"
}

TABLE=$(
    echo "| target | req/s (full load) | CPU us/req (full load) | CPU us/req (${RATE} req/s) | instructions/req | p50 ms | p90 ms | p99 ms | RSS idle MB | RSS load MB |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    row direct direct
    row mesh mesh-proxy
    row mesh-metrics-off "mesh-proxy, standard metrics off"
    row mesh-telemetry "mesh-proxy, tracing 1 % to an OTLP collector + access log to a file"
    row chain "mesh-proxy x2 (in a row)"
    row chain-mtls "mesh-proxy x2 (in a row, mTLS)"
    row mesh-resilience "mesh-proxy, connection limits + outlier detection (not tripping)"
    row mesh-mirror "mesh-proxy, every request mirrored to a second cluster"
    row gateway "gateway -> sidecar (mTLS) -> app (instructions: the gateway alone, plaintext upstream)"
    row haproxy "haproxy (nbthread 1)"
    row nginx "nginx (1 worker)"
    row nginx-chain "nginx x2 (in a row)"
)

# verdict VALUE LIMIT UNIT: "met (X under)" / "missed by X (Y%)"
verdict() {
    awk -v v="$1" -v l="$2" -v u="$3" 'BEGIN {
        if (v <= l) printf "met (%s %s, limit %s %s)", v, u, l, u;
        else printf "**missed** by %.3g %s (%s vs %s %s, +%.0f%%)", v - l, u, v, l, u, (v - l) / l * 100 }'
}
# cost KEY BASE: how many percent more instructions per request KEY takes than BASE.
cost() { awk -v a="${IR[$1]}" -v b="${IR[$2]}" 'BEGIN { printf "%.1f", (a - b) / b * 100 }'; }
added_p99() { awk -v a="${P99[$1]}" -v b="${P99[direct]}" 'BEGIN { printf "%.3f", a - b }'; }
idle_field() { tr ' ' '\n' <<<"${IDLE_LINE[$1]:-}" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
idle_row() { # KEY LABEL
    printf '| %s | %s | %s | %s | %s |\n' "$2" "$(mb "$(idle_field "$1" before)")" \
        "$(mb "$(idle_field "$1" held)")" "$(v "$(idle_field "$1" per_conn)")" "$(mb "$(idle_field "$1" after)")"
}
IDLE_TABLE=$(
    echo "| target | RSS before MB | RSS with ${IDLE_CONNS} idle connections MB | KB per idle connection | RSS 15 s after they closed MB |"
    echo "|---|---:|---:|---:|---:|"
    idle_row mesh mesh-proxy
    idle_row haproxy "haproxy (nbthread 1)"
    idle_row nginx "nginx (1 worker)"
)
IDLE_GROWTH_MB=$(awk -v h="$(idle_field mesh held)" -v b="$(idle_field mesh before)" 'BEGIN { printf "%.1f", (h - b) * 1024 / 1e6 }')
IDLE_LEFT_MB=$(awk -v a="$(idle_field mesh after)" -v b="$(idle_field mesh before)" 'BEGIN { printf "%.1f", (a - b) * 1024 / 1e6 }')

TARGETS=$(
    echo "| target | verdict |"
    echo "|---|---|"
    echo "| CPU per request at or under HAProxy's (full load) | $(verdict "${CPU_FULL[mesh]}" "${CPU_FULL[haproxy]}" us) |"
    echo "| instructions per request at or under HAProxy's | $(verdict "${IR[mesh]}" "${IR[haproxy]}" instructions) |"
    echo "| CPU per request at or under nginx's (full load) | $(verdict "${CPU_FULL[mesh]}" "${CPU_FULL[nginx]}" us) |"
    echo "| instructions per request at or under nginx's | $(verdict "${IR[mesh]}" "${IR[nginx]}" instructions) |"
    echo "| standard metrics cost under 5 % instructions per request | $(verdict "$(cost mesh mesh-metrics-off)" 5 %) |"
    echo "| tracing at 1 % plus access logs cost under 10 % | $(verdict "$(cost mesh-telemetry mesh)" 10 %) |"
    echo "| connection limits and outlier detection cost under 3 % | $(verdict "$(cost mesh-resilience mesh)" 3 %) |"
    echo "| added p99 through two proxies under 0.3 ms | $(verdict "$(added_p99 chain)" 0.3 ms) (p99 ${P99[chain]} ms vs direct ${P99[direct]} ms; two nginx in a row add $(added_p99 nginx-chain) ms) |"
    echo "| added p99 through two proxies with mTLS under 0.3 ms | $(verdict "$(added_p99 chain-mtls)" 0.3 ms) (p99 ${P99[chain-mtls]} ms) |"
    echo "| resident memory under load under 12 MB | $(verdict "$(mb "${RSS_LOAD[mesh]}")" 12 MB) |"
    echo "| resident memory idle under 8 MB | $(verdict "$(mb "${RSS_IDLE[mesh]}")" 8 MB) |"
    echo "| ${IDLE_CONNS} idle keep-alive connections add under 24 MB | $(verdict "$IDLE_GROWTH_MB" 24 MB) |"
    echo "| memory back to within 5 MB of the start after they close | $(verdict "$IDLE_LEFT_MB" 5 MB) |"
    echo "| citadel signings per second on one core, 5000 or more | $(awk -v r="${SIGN_RATE:-0}" 'BEGIN { if (r >= 5000) printf "met (%s/s)", r; else printf "**missed** (%s/s)", r }') |"
)
SECURITY=$(
    echo "| mTLS figure | value |"
    echo "|---|---:|"
    echo "| added p50 / p99 of mTLS over plaintext, two proxies at ${RATE} req/s | $(awk -v a="${P50[chain-mtls]}" -v b="${P50[chain]}" 'BEGIN { printf "%.3f", a - b }') / $(awk -v a="${P99[chain-mtls]}" -v b="${P99[chain]}" 'BEGIN { printf "%.3f", a - b }') ms |"
    echo "| new mTLS connections per second (handshake + one request + close, ${CONNECT_SECONDS}s, 4 in flight) | ${CONNECT_RATE:-?} (p50 ${CONNECT_P50:-?} ms, p99 ${CONNECT_P99:-?} ms, ${CONNECT_ERRORS:-?} errors) |"
    echo "| new TLS connections per second to a gateway HTTPS server (handshake + one request + close, ${CONNECT_SECONDS}s, 4 in flight) | ${GW_CONNECT_RATE:-?} (p50 ${GW_CONNECT_P50:-?} ms, p99 ${GW_CONNECT_P99:-?} ms, ${GW_CONNECT_ERRORS:-?} errors) |"
    echo "| citadel certificates signed per second, one core (citadel-bench) | ${SIGN_RATE:-?} |"
)

MACHINE=$(
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- nproc: $(nproc); CPU: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); memory: $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- kernel: $(uname -sr)"
    echo "- load average before/after the run (other work shares the machine): $LOAD_BEFORE / $LOAD_AFTER; run took ${ELAPSED}s"
    echo "- build: $BUILD_NOTE"
    echo "- tools: $(haproxy -v | head -n 1 | awk '{ print $1, $2, $3 }'), $(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -n 1 | awk '{ print $1, $2 }'), $("$OHA" --version), $(valgrind --version), $(rustc --version | awk '{ print $1, $2 }')"
)

METHOD="Full load: wrk -t1 -c${LOAD_CONNS} -d${DURATION}s after a ${WARMUP}s warm-up; fixed rate: oha -q ${RATE} -c ${RATE_CONNS} -z ${RATE_DURATION}s ${LATENCY_CORRECTION[*]:-(no latency correction)}, ${ROUNDS} rounds with the targets interleaved, median of the rounds' percentiles$([[ $RT == 1 ]] && echo ", proxies, upstream and oha SCHED_FIFO"); instructions: callgrind, (Ir of ${CG_LARGE} requests - Ir of ${CG_SMALL} requests) / $((CG_LARGE - CG_SMALL)), one connection, sequential. Proxies on core ${PROXY_CORE}; load generator and upstream (nginx, fixed 1024-byte body) on core ${LOAD_CORE}. RSS load = highest VmRSS sampled every 0.5 s during both load phases; MB = 10^6 bytes. Idle connections: idle-conns opens ${IDLE_CONNS} keep-alive connections (64 at a time), one GET each, holds them ${IDLE_HOLD} s, closes them; VmRSS of the proxy before, at the end of the hold, and 15 s after the close. mesh-proxy lets go of an idle HTTP/1.1 connection's HTTP state after 1 s, and its allocator returns freed memory within its 5 s decay time: the hold outlasts both, so the figure is what an idle connection costs, not the burst of opening them."

RESULT=$(
    echo "<!-- bench:begin (written by bench/run.sh; edits inside are overwritten) -->"
    echo "### Last run"
    echo
    echo "$MACHINE"
    echo
    echo "$TABLE"
    echo
    echo "$SECURITY"
    echo
    echo "$IDLE_TABLE"
    echo
    echo "$METHOD"
    echo
    echo "Targets (mesh-proxy):"
    echo
    echo "$TARGETS"
    echo "<!-- bench:end -->"
)

echo
echo "$TABLE"
echo
echo "$SECURITY"
echo
echo "$TARGETS"
echo
echo "$METHOD"
echo "callgrind profiles of the long runs: $CG_KEEP/callgrind.cg-*.$CG_LARGE.out (callgrind_annotate FILE)"

if [[ $UPDATE_DOCS == 1 ]]; then
    mkdir -p "$(dirname "$DOC")"
    if [[ -f $DOC ]] && grep -q '^<!-- bench:begin' "$DOC"; then
        BLOCK=$RESULT awk '
            /^<!-- bench:begin/ { print ENVIRON["BLOCK"]; skip = 1; next }
            /^<!-- bench:end/ { skip = 0; next }
            !skip { print }' "$DOC" >"$DOC.tmp"
        mv "$DOC.tmp" "$DOC"
    else
        { [[ -f $DOC ]] && cat "$DOC" && echo; echo "$RESULT"; } >"$DOC.tmp"
        mv "$DOC.tmp" "$DOC"
    fi
    log "results written to $DOC"
fi
