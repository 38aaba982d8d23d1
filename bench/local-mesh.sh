# Pieces of a local mesh for the scripts of bench/ (sourced, not run): the sample services'
# Istio YAML, their workloads, and `meshctl up` started and waited for. The caller defines
# `die MESSAGE`.

# mesh_services: ServiceEntries for web (HTTP, 9080) and grpc-echo (gRPC, 9090) in namespace
# default, each selecting its workloads by their app label.
mesh_services() {
    cat <<EOF
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: web, namespace: default }
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: web } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: grpc-echo, namespace: default }
spec:
  hosts: [grpc-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9090, name: grpc, protocol: GRPC }]
  workloadSelector: { labels: { app: grpc-echo } }
EOF
}

# mesh_workload NAME APP VERSION PORT_NAME INBOUND APP_PORT ADMIN [OUTBOUND]: a WorkloadEntry
# in namespace default that `meshctl up` runs as a sample app (on APP_PORT) behind a sidecar
# (inbound on INBOUND, admin on ADMIN, an outbound listener on OUTBOUND when given).
mesh_workload() {
    local outbound=""
    [[ -n ${8:-} ]] && outbound="    local.mesh.dev/outbound-port: \"$8\""
    cat <<EOF
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: $1
  namespace: default
  annotations:
    local.mesh.dev/app-port: "$6"
    local.mesh.dev/admin-port: "$7"
$outbound
spec:
  address: 127.0.0.1
  ports: { $4: $5 }
  labels: { app: $2, version: $3 }
  serviceAccount: $2
EOF
}

# start_local_mesh LOG TIMEOUT_S MESHCTL up DIR [ARGS...]: runs the command in the background,
# its output in LOG, and returns once it says the mesh is up; sets MESHCTL_PID.
start_local_mesh() {
    local log=$1 timeout=$2 deadline
    shift 2
    "$@" >"$log" 2>&1 &
    MESHCTL_PID=$!
    deadline=$((SECONDS + timeout))
    until grep -q "local mesh up" "$log"; do
        kill -0 "$MESHCTL_PID" 2>/dev/null || die "meshctl up exited"
        ((SECONDS < deadline)) || die "the mesh did not come up within $timeout s"
        sleep 0.5
    done
}
