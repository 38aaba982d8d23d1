#!/usr/bin/env bash
# The release build of mesh-proxy, profile-guided: the build the sidecar image ships and
# bench/run.sh measures.
#
#   bench/pgo.sh                                   host target, into target/pgo/mesh-proxy
#   bench/pgo.sh --target x86_64-unknown-linux-musl --out /mesh-proxy
#
# 1. The mesh's other binaries (meshctl, pilot, citadel, mesh-echo, soak-load, otlp-sink),
#    release, for this machine.
# 2. mesh-proxy for TARGET built instrumented (-Cprofile-generate).
# 3. Training: a local mesh of its own (`meshctl up`, ports from PGO_PORT_BASE) run with the
#    instrumented proxy: STRICT mTLS between sidecars, HTTP/1.1, HTTP/2 and gRPC through a
#    client's outbound listener, HTTP/1.1 through an ingress gateway, standard metrics, an
#    access log and tracing at 1 % to an OTLP receiver; beside it one proxy configured from a
#    file (explicit listeners, as outside Kubernetes) with connection limits, outlier detection
#    and a mirror. Then everything is stopped (SIGTERM), and each proxy writes its profile as
#    it exits.
# 4. The profiles merged (llvm-profdata of the toolchain's llvm-tools component).
# 5. mesh-proxy for TARGET built again with -Cprofile-use and copied to OUT. When the
#    toolchain's lld links it and valgrind is installed, it is linked once
#    more with the functions that build runs from start to ready (callgrind's list, std and C
#    included; a file-configured proxy, a sidecar and a gateway configured by pilot) laid
#    first in their sections, so an idle proxy touches fewer pages of its binary. (The list
#    comes from the optimized build itself: the instrumented one inlines differently.)
#
# Why: the same source measured 22 % fewer instructions per request (30.7k -> 23.9k) and about
# half the resident memory at idle (11.3 -> 6.2 MB) built this way (docs/benchmarks.md): the
# optimizer inlines and lays out by the paths requests take, and the code no request runs is
# kept apart from the code they do.
# An `--target` is always passed, so the profiling flags never reach build scripts. The
# optimized proxy is linked with the toolchain's lld (rustc's own choice on
# x86_64-unknown-linux-gnu; for a musl target, which rustc links through `cc` and so GNU ld,
# `cc` is pointed at it), which keeps the hot and the never-run code apart when told to
# (`-z keep-text-section-prefix`) and can lay out functions in a given order. Code run once
# (start-up) counts as cold, so it lies among the code never run: the start-up order of step 5
# gathers it (idle RSS about 9 -> 6.3 MB, measured). Relative relocations are packed
# (`-z pack-relative-relocs`) where the C library reads them.
#
# Knobs (environment): PGO_SECONDS=25 (training load), PGO_RATE=1500 (req/s through the
# client; the gateway and the file-configured proxy get a third of it each), PGO_PORT_BASE=25000 (ports base+0 .. base+199, all
# on 127.0.0.1), CARGO_TARGET_DIR (default target/ of this checkout; the two proxy builds go
# to its pgo/ folder, apart from the ordinary release build).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_DIR/target}
HOST=$(rustc -vV | sed -n 's/^host: //p')
TARGET=$HOST
OUT=$TARGET_DIR/pgo/mesh-proxy
while [[ $# -gt 0 ]]; do
    case $1 in
        --target) TARGET=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        *) echo "usage: $0 [--target TRIPLE] [--out PATH]" >&2; exit 2 ;;
    esac
done
SECONDS_LOAD=${PGO_SECONDS:-25}
RATE=${PGO_RATE:-1500}
PORT_BASE=${PGO_PORT_BASE:-25000}
PGO_DIR=$TARGET_DIR/pgo
PROFILES=$PGO_DIR/profiles
MERGED=$PGO_DIR/merged.profdata
ORDER=$PGO_DIR/symbol-order.txt

# shellcheck source=bench/local-mesh.sh
source "$BENCH_DIR/local-mesh.sh"

log() { printf '[pgo %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    printf '[pgo] error: %s\n' "$*" >&2
    exit 1
}

SYSROOT=$(rustc --print sysroot)

# The linker of the optimized proxy: rustc links x86_64-unknown-linux-gnu with the toolchain's
# lld itself; a musl target's `cc` is given the same lld (`gcc-ld/ld.lld`, the wrapper rustc
# uses) in place of GNU ld, which has no symbol ordering.
LLD_DIR=$SYSROOT/lib/rustlib/$HOST/bin/gcc-ld
LINK_FLAGS=""
case $TARGET in
    x86_64-unknown-linux-gnu) LINKS_WITH_LLD=1 ;;
    *-linux-musl)
        if [[ -x $LLD_DIR/ld.lld ]]; then
            LINK_FLAGS="-Clink-arg=-fuse-ld=lld -Clink-arg=-B$LLD_DIR"
            LINKS_WITH_LLD=1
        else
            LINKS_WITH_LLD=0
        fi ;;
    *) LINKS_WITH_LLD=0 ;;
esac

# lld's symbol ordering, from a callgrind run of start-up.
ORDERED_LINK=0
if [[ $LINKS_WITH_LLD == 1 ]]; then
    if command -v valgrind >/dev/null; then
        ORDERED_LINK=1
    else
        log "valgrind not installed: start-up code not gathered (idle RSS about 3 MB higher)"
    fi
fi

PROFDATA=$SYSROOT/lib/rustlib/$HOST/bin/llvm-profdata
if [[ ! -x $PROFDATA ]]; then
    log "adding the llvm-tools component (llvm-profdata)"
    rustup component add llvm-tools >&2 || die "rustup component add llvm-tools failed"
fi
[[ -x $PROFDATA ]] || die "$PROFDATA missing"

# ---------------------------------------------------------------------------------------------
# Builds
# ---------------------------------------------------------------------------------------------

log "building the mesh's other binaries (release, $HOST)"
(cd "$REPO_DIR" && cargo build --release --locked -p meshctl -p mesh-pilot -p mesh-citadel \
    -p mesh-echo -p mesh-bench >&2) || die "cargo build --release failed"

# glibc_at_least MAJOR MINOR: whether this machine's C library is glibc of that version or later.
glibc_at_least() {
    local v major minor
    v=$(getconf GNU_LIBC_VERSION 2>/dev/null) || return 1
    IFS=. read -r major minor <<<"${v#glibc }"
    ((major > $1 || (major == $1 && minor >= $2)))
}

# build_proxy TARGET_SUBDIR EXTRA_RUSTFLAGS [RUSTC_ARGS...]: mesh-proxy for TARGET into
# PGO_DIR/TARGET_SUBDIR; RUSTC_ARGS go to the binary crate's compile (and link) alone.
build_proxy() {
    local subdir=$1 flags=$2
    shift 2
    (cd "$REPO_DIR" && CARGO_TARGET_DIR=$PGO_DIR/$subdir RUSTFLAGS="${RUSTFLAGS:-} $flags" \
        cargo rustc --release --locked -p mesh-proxy --bin mesh-proxy --target "$TARGET" -- "$@" >&2)
}

log "building mesh-proxy instrumented ($TARGET)"
rm -rf "$PROFILES"
mkdir -p "$PROFILES"
build_proxy generate "-Cprofile-generate=$PROFILES" || die "instrumented build failed"
INSTRUMENTED=$PGO_DIR/generate/$TARGET/release/mesh-proxy
USE_FLAGS="-Cprofile-use=$MERGED $LINK_FLAGS"
if [[ $LINKS_WITH_LLD == 1 ]]; then
    USE_FLAGS+=" -Clink-arg=-Wl,-z,keep-text-section-prefix"
fi
# Relative relocations packed (DT_RELR): the loader reads some 10 KB of them at start instead
# of about 0.5 MB, which stayed resident (idle RSS -0.35 to -0.7 MB). Read by glibc 2.36+ and
# by musl 1.2.4+ (a static musl binary relocates itself; Rust's musl targets ship 1.2.5).
if [[ $TARGET == *-linux-musl ]] || glibc_at_least 2 36; then
    USE_FLAGS+=" -Clink-arg=-Wl,-z,pack-relative-relocs"
fi

# ---------------------------------------------------------------------------------------------
# Training: a local mesh with the instrumented proxy
# ---------------------------------------------------------------------------------------------

WORK=$(mktemp -d /tmp/mesh-pgo.XXXXXX)
BIN=$WORK/bin
CONFIG=$WORK/config
LOG=$WORK/meshctl.log
mkdir -p "$BIN" "$CONFIG"
RELEASE=$TARGET_DIR/release
# meshctl starts the binaries beside its own executable.
for b in meshctl mesh-pilot mesh-citadel mesh-echo; do cp "$RELEASE/$b" "$BIN/"; done
cp "$INSTRUMENTED" "$BIN/"

MESHCTL_PID="" SINK_PID="" STATIC_PID="" STARTUP_PID=""
cleanup() {
    local rc=$?
    for pid in $MESHCTL_PID $SINK_PID $STATIC_PID $STARTUP_PID; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in $MESHCTL_PID $SINK_PID $STATIC_PID $STARTUP_PID; do wait "$pid" 2>/dev/null || true; done
    if [[ $rc -ne 0 && -f $LOG ]]; then
        echo "last lines of meshctl up's log:" >&2
        tail -n 30 "$LOG" >&2 || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

P_OUT=$((PORT_BASE + 1))
P_GATEWAY=$((PORT_BASE + 2))
P_OTLP=$((PORT_BASE + 3))
P_STATIC=$((PORT_BASE + 4))
P_STATIC_ADMIN=$((PORT_BASE + 5))
P_STARTUP=$((PORT_BASE + 6))
P_STARTUP_ADMIN=$((PORT_BASE + 7))
P_GRPC=$((PORT_BASE + 10))
P_CA=$((PORT_BASE + 12))
P_HTTP=$((PORT_BASE + 14))

{
    mesh_services
    cat <<EOF
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: web, namespace: default }
spec:
  host: web
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web, namespace: default }
spec:
  hosts: [web]
  http:
    - retries: { attempts: 2, perTryTimeout: 2s }
      route:
        - { destination: { host: web, subset: v1 }, weight: 70 }
        - { destination: { host: web, subset: v2 }, weight: 30 }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: istio-system }
spec:
  mtls: { mode: STRICT }
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: mesh-default, namespace: istio-system }
spec:
  accessLogging: [{ providers: [{ name: envoy }] }]
  tracing: [{ randomSamplingPercentage: 1.0 }]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: web-gateway, namespace: default }
spec:
  selector: { istio: ingressgateway }
  servers: [{ port: { number: 80, name: http, protocol: HTTP }, hosts: ["*"] }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web-from-outside, namespace: default }
spec:
  hosts: ["*"]
  gateways: [web-gateway]
  http:
    - route: [{ destination: { host: web.default.svc.cluster.local, port: { number: 9080 } } }]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: ingress
  namespace: istio-system
  annotations:
    local.mesh.dev/gateway-ports: "80=$P_GATEWAY"
    local.mesh.dev/admin-port: "$((PORT_BASE + 120))"
spec:
  address: 127.0.0.1
  labels: { istio: ingressgateway }
  serviceAccount: istio-ingressgateway
EOF
    mesh_workload client client v1 http $((PORT_BASE + 180)) $((PORT_BASE + 80)) $((PORT_BASE + 100)) "$P_OUT"
    mesh_workload web-v1 web v1 http $((PORT_BASE + 181)) $((PORT_BASE + 81)) $((PORT_BASE + 101))
    mesh_workload web-v2 web v2 http $((PORT_BASE + 182)) $((PORT_BASE + 82)) $((PORT_BASE + 102))
    mesh_workload grpc-v1 grpc-echo v1 grpc $((PORT_BASE + 191)) $((PORT_BASE + 91)) $((PORT_BASE + 111))
} >"$CONFIG/mesh.yaml"

"$RELEASE/otlp-sink" --addr "127.0.0.1:$P_OTLP" >/dev/null 2>&1 &
SINK_PID=$!

# mesh_up: the training mesh, with whatever $BIN/mesh-proxy is at the time.
mesh_up() {
    start_local_mesh "$LOG" 90 "$BIN/meshctl" up "$CONFIG" --state-dir "$WORK/state" \
        --grpc-addr "127.0.0.1:$P_GRPC" --http-addr "127.0.0.1:$P_HTTP" --ca-addr "127.0.0.1:$P_CA" \
        --tracing-otlp-endpoint "http://127.0.0.1:$P_OTLP"
}

log "training: a local mesh with the instrumented proxy ($WORK)"
mesh_up
# reachable URL [HOST]: until URL answers 200 (with Host: HOST when given).
reachable() {
    local deadline=$((SECONDS + 30)) host=()
    [[ -n ${2:-} ]] && host=(-H "Host: $2")
    until [[ $(curl -s -o /dev/null -w '%{http_code}' "${host[@]}" "$1" || true) == 200 ]]; do
        ((SECONDS < deadline)) || die "$1 (Host: ${2:-}) does not answer 200"
        sleep 0.5
    done
}
reachable "http://127.0.0.1:$P_OUT/" web:9080
reachable "http://127.0.0.1:$P_GATEWAY/"

# The proxy configured from a file, in front of the web apps.
cat >"$WORK/static.yaml" <<EOF
version: "pgo"
listeners:
  - { name: out, address: "127.0.0.1:$P_STATIC", direction: OUTBOUND, protocol: HTTP, routeTable: rt }
routeTables:
  - name: rt
    virtualHosts:
      - name: all
        domains: ["*"]
        routes:
          - route: { clusters: [{ cluster: web, weight: 100 }], mirrors: [{ cluster: shadow, percentage: 5 }] }
clusters:
  - name: web
    lbPolicy: LEAST_REQUEST
    protocol: HTTP1
    endpoints: [{ address: "127.0.0.1:$((PORT_BASE + 81))" }, { address: "127.0.0.1:$((PORT_BASE + 82))" }]
    circuitBreakers: { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3 }
    outlierDetection: { consecutive5xx: 5, consecutiveGatewayErrors: 5, intervalMs: 10000, baseEjectionTimeMs: 30000, maxEjectionPercent: 100 }
  - { name: shadow, lbPolicy: ROUND_ROBIN, protocol: HTTP1, endpoints: [{ address: "127.0.0.1:$((PORT_BASE + 81))" }] }
EOF
"$BIN/mesh-proxy" --config "$WORK/static.yaml" --admin-addr "127.0.0.1:$P_STATIC_ADMIN" \
    >"$WORK/static.log" 2>&1 &
STATIC_PID=$!
reachable "http://127.0.0.1:$P_STATIC/"

log "training load: ${RATE} req/s through the client (HTTP/1.1, HTTP/2, gRPC), $((RATE / 3)) req/s each through the gateway and the file-configured proxy, ${SECONDS_LOAD}s"
"$RELEASE/soak-load" --addr "127.0.0.1:$P_OUT" --http-host web:9080 --grpc-authority grpc-echo:9090 \
    --rate "$RATE" --seconds "$SECONDS_LOAD" >"$WORK/client.out" 2>&1 &
client_load=$!
"$RELEASE/soak-load" --addr "127.0.0.1:$P_GATEWAY" --http-host web.example:80 \
    --grpc-authority unused:80 --mix 100,0,0 --rate $((RATE / 3)) --seconds "$SECONDS_LOAD" \
    >"$WORK/gateway.out" 2>&1 &
gateway_load=$!
"$RELEASE/soak-load" --addr "127.0.0.1:$P_STATIC" --http-host web.example:80 \
    --grpc-authority unused:80 --mix 100,0,0 --rate $((RATE / 3)) --seconds "$SECONDS_LOAD" \
    >"$WORK/static.out" 2>&1 &
static_load=$!
wait "$client_load" || die "training load through the client failed: $(cat "$WORK/client.out")"
wait "$gateway_load" || die "training load through the gateway failed: $(cat "$WORK/gateway.out")"
wait "$static_load" || die "training load through the file-configured proxy failed: $(cat "$WORK/static.out")"
# The load's own summary, one line per protocol: a training run that mostly failed trains the
# error paths.
cat "$WORK/client.out" "$WORK/gateway.out" "$WORK/static.out" | grep '^protocol=' >&2 || true
# A protocol that was sent and never answered 200 would leave its path untrained.
if ! awk '/^protocol=/ { sent = $2; ok = $3; sub("sent=", "", sent); sub("ok=", "", ok)
                         if (sent > 0 && ok == 0) bad = 1 }
          END { exit bad }' "$WORK/client.out" "$WORK/gateway.out" "$WORK/static.out"; then
    die "a protocol of the training load had no successful request"
fi

# meshctl stops the mesh with SIGTERM: every proxy drains and writes its profile as it exits.
log "stopping the mesh"
kill -TERM "$STATIC_PID"
wait "$STATIC_PID" || die "the file-configured proxy exited with $?: $(tail -n 5 "$WORK/static.log")"
STATIC_PID=""
kill -TERM "$MESHCTL_PID"
wait "$MESHCTL_PID" || true
MESHCTL_PID=""
if pgrep -f "^$BIN/mesh-proxy" >/dev/null; then die "proxies still running after meshctl stopped"; fi

compgen -G "$PROFILES/*.profraw" >/dev/null || die "no profile written in $PROFILES"
"$PROFDATA" merge -o "$MERGED" "$PROFILES"/*.profraw || die "llvm-profdata merge failed"
log "profile: $(du -h "$MERGED" | cut -f1) from $(ls "$PROFILES" | wc -l) file(s)"

# ---------------------------------------------------------------------------------------------
# The optimized build
# ---------------------------------------------------------------------------------------------

log "building mesh-proxy with the profile ($TARGET)"
# Whether cargo watches the profile file is not documented: the proxy is always built again.
(cd "$REPO_DIR" && CARGO_TARGET_DIR=$PGO_DIR/use cargo clean --release -p mesh-proxy \
    --target "$TARGET" >/dev/null 2>&1) || true
build_proxy use "$USE_FLAGS" || die "profile-guided build failed"
OPTIMIZED=$PGO_DIR/use/$TARGET/release/mesh-proxy

# Start-up under callgrind, each proxy started, ready, idle for a second and stopped: a
# file-configured proxy, then the training mesh once more with the optimized proxy, its
# client's sidecar and its gateway under callgrind (configs from pilot, certificates from
# citadel). The functions they ran (mangled, as the linker knows them), in that order, are the
# order of the link that follows. Only the binary crate is built again (same flags, so the
# same symbols).
if [[ $ORDERED_LINK == 1 ]]; then
    CALLGRIND=(valgrind --tool=callgrind --demangle=no --compress-strings=no)
    sed -e "s/127.0.0.1:$P_STATIC/127.0.0.1:$P_STARTUP/" "$WORK/static.yaml" >"$WORK/startup.yaml"
    "${CALLGRIND[@]}" --callgrind-out-file="$WORK/startup.1-file.callgrind" "$OPTIMIZED" \
        --config "$WORK/startup.yaml" --admin-addr "127.0.0.1:$P_STARTUP_ADMIN" \
        >"$WORK/startup.log" 2>&1 &
    STARTUP_PID=$!
    reachable "http://127.0.0.1:$P_STARTUP_ADMIN/ready"
    sleep 1
    kill -TERM "$STARTUP_PID"
    wait "$STARTUP_PID" || die "the start-up proxy exited with $?: $(tail -n 5 "$WORK/startup.log")"
    STARTUP_PID=""

    cp "$OPTIMIZED" "$BIN/mesh-proxy.optimized"
    rm -f "$BIN/mesh-proxy"
    cat >"$BIN/mesh-proxy" <<EOF
#!/bin/sh
case " \$* " in
    *" --workload client.default "*|*" --gateway "*)
        exec ${CALLGRIND[*]} --callgrind-out-file="$WORK/startup.2-xds.%p.callgrind" \
            "$BIN/mesh-proxy.optimized" "\$@" ;;
esac
exec "$BIN/mesh-proxy.optimized" "\$@"
EOF
    chmod +x "$BIN/mesh-proxy"
    mesh_up
    reachable "http://127.0.0.1:$((PORT_BASE + 100))/ready"
    reachable "http://127.0.0.1:$((PORT_BASE + 120))/ready"
    sleep 1
    kill -TERM "$MESHCTL_PID"
    wait "$MESHCTL_PID" || true
    MESHCTL_PID=""
    compgen -G "$WORK/startup.2-xds.*.callgrind" >/dev/null || die "no callgrind output of the sidecar's start-up"

    cat "$WORK"/startup.*.callgrind | sed -n 's/^fn=//p' | awk '!seen[$0]++' >"$ORDER"
    log "linking again with $(wc -l <"$ORDER") start-up functions first"
    build_proxy use "$USE_FLAGS" "-Clink-arg=-Wl,--symbol-ordering-file=$ORDER" \
        -Clink-arg=-Wl,--no-warn-symbol-ordering || die "ordered link failed"
fi
mkdir -p "$(dirname "$OUT")"
cp "$OPTIMIZED" "$OUT"
log "built $OUT"
