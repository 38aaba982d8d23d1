#!/usr/bin/env bash
# The soak run: a local mesh (meshctl up, STRICT mTLS) under a steady mixed load while
# everything that happens in production happens to it, then a table of what broke and what
# leaked. Loopback only; bounded by --seconds.
#
#   bench/soak.sh                 10 minutes
#   bench/soak.sh --seconds 120   shorter
#
# During the run:
#   - load: soak-load at SOAK_RATE req/s (default 1000) through the client's outbound
#     listener, 40 % HTTP/1.1, 30 % HTTP/2, 30 % gRPC, to a 3-replica HTTP service and a
#     2-replica gRPC service;
#   - every 5 s the VirtualService's weights change;
#   - certificates live 60 s (proxies renew at half-life);
#   - every 120 s pilot is killed (SIGKILL) and meshctl starts it again;
#   - every 60 s one endpoint's app (web v3) is killed and started again a second later;
#   - every 90 s a config file is made invalid, and fixed 10 s later.
# Reports: requests sent and failed per protocol, failures by kind and second, RSS and open
# file descriptors of every process at the start and the end, and config NACKs of every proxy.
# The table also goes into docs/benchmarks.md (between the soak:begin/soak:end markers) unless
# SOAK_UPDATE_DOCS=0. SOAK_PROFILE=debug runs the debug binaries (no release build; for looking
# into a failure at a lower SOAK_RATE, never for the figures).
set -euo pipefail

SECONDS_TOTAL=600
while [[ $# -gt 0 ]]; do
    case $1 in
        --seconds) SECONDS_TOTAL=$2; shift 2 ;;
        *) echo "usage: $0 [--seconds N]" >&2; exit 2 ;;
    esac
done
RATE=${SOAK_RATE:-1000}
UPDATE_DOCS=${SOAK_UPDATE_DOCS:-1}
# Below the ephemeral port range (32768+), so no client socket of this machine holds one, and
# apart from the ports of examples/ (15xxx, 18xxx, 19xxx, 29xxx).
PORT_BASE=${SOAK_PORT_BASE:-24000}
PROFILE=${SOAK_PROFILE:-release}
[[ $PROFILE == release || $PROFILE == debug ]] || { echo "SOAK_PROFILE: release or debug" >&2; exit 2; }

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_DIR/target}
DOC=$REPO_DIR/docs/benchmarks.md
# shellcheck source=bench/local-mesh.sh
source "$BENCH_DIR/local-mesh.sh"
WORK=$(mktemp -d /tmp/mesh-soak.XXXXXX)
CONFIG=$WORK/config
LOG=$WORK/meshctl.log
# Kept after the run: the events with their times, the load's whole failure timeline and
# meshctl's log, to line failures up against what happened.
KEEP=$TARGET_DIR/soak
mkdir -p "$KEEP"
: >"$KEEP/events.log"

log() { printf '[soak %s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$KEEP/events.log" >&2; }
die() {
    printf '[soak] error: %s\n' "$*" >&2
    exit 1
}

MESHCTL_PID=""
LOAD_PID=""
cleanup() {
    local rc=$?
    [[ -n $LOAD_PID ]] && kill "$LOAD_PID" 2>/dev/null || true
    if [[ -n $MESHCTL_PID ]]; then
        kill -TERM "$MESHCTL_PID" 2>/dev/null || true
        wait "$MESHCTL_PID" 2>/dev/null || true
    fi
    [[ -f $LOG ]] && cp "$LOG" "$KEEP/meshctl.log"
    [[ -f $WORK/load.out ]] && cp "$WORK/load.out" "$KEEP/load.out"
    if [[ $rc -ne 0 && -f $LOG ]]; then
        echo "last lines of meshctl up's log:" >&2
        tail -n 30 "$LOG" >&2 || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building ($PROFILE)"
if [[ $PROFILE == release ]]; then
    cargo build --release --bins --manifest-path "$REPO_DIR/Cargo.toml" >&2
else
    cargo build --bins --manifest-path "$REPO_DIR/Cargo.toml" >&2
    UPDATE_DOCS=0
fi
MESHCTL=$TARGET_DIR/$PROFILE/meshctl
SOAK_LOAD=$TARGET_DIR/$PROFILE/soak-load

# ---------------------------------------------------------------------------------------------
# The mesh: a client with an outbound listener, web (HTTP, v1-v3), grpc-echo (gRPC, v1-v2)
# ---------------------------------------------------------------------------------------------

P_GRPC=$((PORT_BASE + 10))
P_HTTP=$((PORT_BASE + 14))
P_CA=$((PORT_BASE + 12))
P_OUT=$((PORT_BASE + 1))
mkdir -p "$CONFIG"

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
    - { name: v3, labels: { version: v3 } }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: istio-system }
spec:
  mtls: { mode: STRICT }
EOF
    mesh_workload client client v1 http $((PORT_BASE + 180)) $((PORT_BASE + 80)) $((PORT_BASE + 100)) "$P_OUT"
    mesh_workload web-v1 web v1 http $((PORT_BASE + 181)) $((PORT_BASE + 81)) $((PORT_BASE + 101))
    mesh_workload web-v2 web v2 http $((PORT_BASE + 182)) $((PORT_BASE + 82)) $((PORT_BASE + 102))
    mesh_workload web-v3 web v3 http $((PORT_BASE + 183)) $((PORT_BASE + 83)) $((PORT_BASE + 103))
    mesh_workload grpc-v1 grpc-echo v1 grpc $((PORT_BASE + 191)) $((PORT_BASE + 91)) $((PORT_BASE + 111))
    mesh_workload grpc-v2 grpc-echo v2 grpc $((PORT_BASE + 192)) $((PORT_BASE + 92)) $((PORT_BASE + 112))
} >"$CONFIG/mesh.yaml"
ADMIN_PORTS=($((PORT_BASE + 100)) $((PORT_BASE + 101)) $((PORT_BASE + 102)) $((PORT_BASE + 103)) $((PORT_BASE + 111)) $((PORT_BASE + 112)))
KILLED_APP="127.0.0.1:$((PORT_BASE + 83))"

# put NAME: stdin becomes config file NAME, written beside the directory and renamed in (pilot
# never reads half a file).
put() { cat >"$WORK/$1.tmp" && mv "$WORK/$1.tmp" "$CONFIG/$1"; }
# route_weights A B C: the web VirtualService.
route_weights() {
    put virtual-service.yaml <<EOF
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web, namespace: default }
spec:
  hosts: [web]
  http:
    - route:
        - { destination: { host: web, subset: v1 }, weight: $1 }
        - { destination: { host: web, subset: v2 }, weight: $2 }
        - { destination: { host: web, subset: v3 }, weight: $3 }
EOF
}
# An invalid VirtualService (weights that do not add up to 100): pilot refuses the object and
# keeps serving the last good config.
break_config() {
    put grpc-echo.yaml <<EOF
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: grpc-echo, namespace: default }
spec:
  hosts: [grpc-echo]
  http:
    - route:
        - { destination: { host: grpc-echo }, weight: 30 }
        - { destination: { host: grpc-echo }, weight: 30 }
EOF
}
fix_config() {
    put grpc-echo.yaml <<EOF
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: grpc-echo, namespace: default }
spec:
  hosts: [grpc-echo]
  http:
    - route:
        - { destination: { host: grpc-echo } }
EOF
}
route_weights 50 30 20
fix_config

log "starting the mesh (meshctl up --restart --cert-ttl 60) in $WORK"
start_local_mesh "$LOG" 60 "$MESHCTL" up "$CONFIG" --restart --cert-ttl 60 --state-dir "$WORK/state" \
    --grpc-addr "127.0.0.1:$P_GRPC" --http-addr "127.0.0.1:$P_HTTP" --ca-addr "127.0.0.1:$P_CA"
# Until the client reaches both services.
deadline=$((SECONDS + 30))
until [[ $(curl -s -o /dev/null -w '%{http_code}' -H 'Host: web:9080' "http://127.0.0.1:$P_OUT/" || true) == 200 ]]; do
    ((SECONDS < deadline)) || die "web is not reachable through the client's proxy"
    sleep 0.5
done

# ---------------------------------------------------------------------------------------------
# Process figures
# ---------------------------------------------------------------------------------------------

# label PID: which part of the mesh a child of meshctl is.
label() {
    local args
    args=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
    case $args in
        *mesh-pilot*) echo "pilot" ;;
        *mesh-citadel*) echo "citadel" ;;
        *mesh-proxy*) echo "proxy $(sed -E 's/.*--workload ([^ ]+).*/\1/' <<<"$args")" ;;
        *mesh-echo*) echo "app $(sed -E 's/.*--addr ([^ ]+).*--name ([^ ]+).*--version ([^ ]+).*/\2-\3/' <<<"$args")" ;;
        *) echo "other $1" ;;
    esac
}
# sockets PID: a proxy's open connections by its own count (downstream open plus upstream open,
# pooled ones included), so its file descriptors can be told from a leak; "-" for the rest.
sockets() {
    local admin
    admin=$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | awk 'p { print; exit } $0 == "--admin-addr" { p = 1 }')
    if [[ -z $admin ]]; then
        echo "-"
        return
    fi
    curl -s --max-time 2 "http://$admin/stats/prometheus" |
        awk '/^mesh_proxy_(downstream|upstream)_connections_active\{/ { s += $NF } END { print s + 0 }'
}
# snapshot FILE: "label pid rss_kb fds sockets" of every child of meshctl.
snapshot() {
    local pid
    : >"$1"
    for pid in $(ps --ppid "$MESHCTL_PID" -o pid= 2>/dev/null); do
        local l rss fds
        l=$(label "$pid") || continue
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
        fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
        printf '%s|%s|%s|%s|%s\n' "$l" "$pid" "$rss" "$fds" "$(sockets "$pid")" >>"$1"
    done
    sort -o "$1" "$1"
}
# nacks: config updates every proxy refused, summed.
nacks() {
    local total=0 port n
    for port in "${ADMIN_PORTS[@]}"; do
        n=$(curl -s --max-time 2 "http://127.0.0.1:$port/stats/prometheus" |
            awk '/^mesh_proxy_config_updates_total\{.*result="(rejected|nack)/ { s += $NF } END { print s + 0 }')
        total=$((total + ${n:-0}))
    done
    echo "$total"
}

# Warm up, then the figures at the start.
curl -s -o /dev/null -H 'Host: web:9080' "http://127.0.0.1:$P_OUT/" || true
snapshot "$WORK/start"
NACKS_START=$(nacks)

# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

log "load: ${RATE} req/s for ${SECONDS_TOTAL}s"
"$SOAK_LOAD" --addr "127.0.0.1:$P_OUT" --http-host web:9080 --grpc-authority grpc-echo:9090 \
    --rate "$RATE" --seconds "$SECONDS_TOTAL" >"$WORK/load.out" 2>"$WORK/load.err" &
LOAD_PID=$!

ROUTE_CHANGES=0 PILOT_KILLS=0 APP_KILLS=0 BREAKS=0
start=$SECONDS
flip=0
broken_at=-1
while kill -0 "$LOAD_PID" 2>/dev/null; do
    sleep 5
    t=$((SECONDS - start))
    ((t < SECONDS_TOTAL)) || break
    if ((flip == 0)); then route_weights 20 30 50; flip=1; else route_weights 50 30 20; flip=0; fi
    ROUTE_CHANGES=$((ROUTE_CHANGES + 1))
    if ((t % 120 < 5 && t >= 120)); then
        pkill -KILL -f "mesh-pilot --config-dir $CONFIG" && PILOT_KILLS=$((PILOT_KILLS + 1))
        log "t=${t}s: pilot killed"
    fi
    if ((t % 60 < 5 && t >= 60)); then
        pkill -KILL -f "mesh-echo --addr $KILLED_APP" && APP_KILLS=$((APP_KILLS + 1))
        log "t=${t}s: web v3's app killed"
    fi
    if ((t % 90 < 5 && t >= 90)); then
        break_config
        BREAKS=$((BREAKS + 1))
        broken_at=$t
        log "t=${t}s: grpc-echo.yaml made invalid"
    elif ((broken_at >= 0 && t - broken_at >= 10)); then
        fix_config
        broken_at=-1
        log "t=${t}s: grpc-echo.yaml fixed"
    fi
done
wait "$LOAD_PID" || die "soak-load failed: $(tail -n 5 "$WORK/load.err")"
LOAD_PID=""
[[ $broken_at -ge 0 ]] && fix_config
snapshot "$WORK/end"
NACKS_END=$(nacks)
REJECTED=$(grep -c "config rejected" "$LOG" || true)

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
SENT=0 FAILED=0
LOAD_TABLE=$(
    echo "| protocol | sent | failed | failed % | failures by kind |"
    echo "|---|---:|---:|---:|---|"
    while read -r line; do
        [[ $line == protocol=* ]] || continue
        s=$(field "$line" sent) f=$(field "$line" failed)
        printf '| %s | %s | %s | %s | %s |\n' "$(field "$line" protocol)" "$s" "$f" \
            "$(awk -v f="$f" -v s="$s" 'BEGIN { if (s > 0) printf "%.3f", 100 * f / s; else print "-" }')" \
            "$(field "$line" kinds)"
    done <"$WORK/load.out"
)
while read -r line; do
    [[ $line == protocol=* ]] || continue
    SENT=$((SENT + $(field "$line" sent)))
    FAILED=$((FAILED + $(field "$line" failed)))
done <"$WORK/load.out"
FAILED_PCT=$(awk -v f="$FAILED" -v s="$SENT" 'BEGIN { if (s > 0) printf "%.3f", 100 * f / s; else print "-" }')
FAILURE_SECONDS=$(grep -c '^failures ' "$WORK/load.out" || true)

PROCESS_TABLE=$(
    echo "| process | RSS start MB | RSS end MB | fds start | fds end | open connections start | open connections end |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    join -t'|' -a 1 -a 2 -e '-' -o '0,1.3,2.3,1.4,2.4,1.2,2.2,1.5,2.5' "$WORK/start" "$WORK/end" |
        while IFS='|' read -r name rs re fs fe ps pe cs ce; do
            note=""
            [[ $ps != "$pe" ]] && note=" (restarted)"
            printf '| %s%s | %s | %s | %s | %s | %s | %s |\n' "$name" "$note" \
                "$(awk -v k="$rs" 'BEGIN { if (k == "-") print "-"; else printf "%.1f", k * 1024 / 1e6 }')" \
                "$(awk -v k="$re" 'BEGIN { if (k == "-") print "-"; else printf "%.1f", k * 1024 / 1e6 }')" \
                "$fs" "$fe" "$cs" "$ce"
        done
)

RESULT=$(
    echo "<!-- soak:begin (written by bench/soak.sh; edits inside are overwritten) -->"
    echo "### Last soak run"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); ${SECONDS_TOTAL}s at ${RATE} req/s (40 % HTTP/1.1, 30 % HTTP/2, 30 % gRPC) through the client's proxy, STRICT mTLS, certificates of 60 s"
    echo "- events: ${ROUTE_CHANGES} route changes, ${PILOT_KILLS} pilot kills, ${APP_KILLS} endpoint kills (web v3's app), ${BREAKS} invalid config files (each fixed 10 s later; pilot logged ${REJECTED} rejections)"
    echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work shares the machine)"
    echo
    echo "$LOAD_TABLE"
    echo
    echo "| figure | value |"
    echo "|---|---:|"
    echo "| requests failed, all protocols | ${FAILED} of ${SENT} (${FAILED_PCT} %) |"
    echo "| seconds with at least one failure | ${FAILURE_SECONDS} |"
    echo "| config updates refused by proxies (NACKs) during the run | $((NACKS_END - NACKS_START)) |"
    echo
    echo "$PROCESS_TABLE"
    echo
    echo "A proxy's open connections are its own count (downstream open plus upstream open, pooled ones included): each is a file descriptor, so fds end minus open connections end, against the same at the start, shows whether descriptors leak."
    echo "<!-- soak:end -->"
)
echo "$RESULT"
grep '^sample ' "$WORK/load.out" >&2 || true
log "every second with failures: $KEEP/load.out; events: $KEEP/events.log; meshctl's log: $KEEP/meshctl.log"

if [[ $UPDATE_DOCS == 1 ]]; then
    if grep -q '<!-- soak:begin' "$DOC"; then
        python3 - "$DOC" "$RESULT" <<'EOF'
import re, sys
path, result = sys.argv[1], sys.argv[2]
text = open(path).read()
text = re.sub(r"<!-- soak:begin.*?<!-- soak:end -->", lambda _: result, text, flags=re.S)
open(path, "w").write(text)
EOF
    else
        printf '\n## Soak\n\n%s\n' "$RESULT" >>"$DOC"
    fi
    log "wrote the table into $DOC"
fi
