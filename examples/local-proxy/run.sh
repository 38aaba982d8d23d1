#!/usr/bin/env bash
# Runs the sample app (reviews v1 and v2) behind mesh-proxy on this machine.
# Send requests with:  curl -x http://127.0.0.1:15001 http://reviews:9080/
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
cargo build --quiet -p mesh-proxy -p mesh-echo --bins
bin="${CARGO_TARGET_DIR:-$root/target}/debug"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$bin/mesh-echo" --addr 127.0.0.1:19081 --name reviews --version v1 & pids+=($!)
"$bin/mesh-echo" --addr 127.0.0.1:19082 --name reviews --version v2 & pids+=($!)

cat <<MSG
mesh-proxy: outbound listener 127.0.0.1:15001, admin 127.0.0.1:15000
  curl -x http://127.0.0.1:15001 http://reviews:9080/                  # 80% v1, 20% v2
  curl -x http://127.0.0.1:15001 -H 'end-user: jason' http://reviews:9080/   # always v2
  curl http://127.0.0.1:15000/config_dump ; curl http://127.0.0.1:15000/stats/prometheus
Edit $here/config.yaml to change the routes live. Ctrl-C stops everything.
MSG
"$bin/mesh-proxy" --config "$here/config.yaml" --admin-addr 127.0.0.1:15000 & pids+=($!)
wait "${pids[-1]}"
