//! Pilot's HTTP endpoint: readiness, per-proxy sync status, config dumps and metrics.
//! `/debug/syncz` and `/debug/configz` are what `meshctl proxy-status`, `analyze` and
//! `describe` read.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;

use mesh_api::analysis::{ConfigDump, Inventory, ServiceInfo, WorkloadInfo, has_sidecar};

use crate::discovery::Discovery;
use crate::registry::Registry as ServiceRegistry;

pub struct DebugState {
    pub discovery: Arc<Discovery>,
    pub registry: Registry,
}

pub async fn serve(listener: TcpListener, state: Arc<DebugState>) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    while let Ok((stream, _)) = listener.accept().await {
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, &req)) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn handle(state: &DebugState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
    }
    match req.uri().path() {
        "/ready" => reply(StatusCode::OK, "text/plain", "ready\n".into()),
        "/debug/syncz" => json_reply(syncz(&state.discovery)),
        "/debug/configz" => json_reply(configz(&state.discovery)),
        "/debug/config_dump" => {
            let query: HashMap<_, _> = req
                .uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .filter_map(|p| p.split_once('='))
                .collect();
            let Some(id) = query.get("proxy") else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "missing ?proxy=ID\n".into(),
                );
            };
            match state.discovery.connection(id) {
                Some(conn) => {
                    let sent = conn
                        .state
                        .lock()
                        .expect("connection lock")
                        .last_sent
                        .clone();
                    // Decoded on demand: connections keep only the shared encoding.
                    let config = sent.map(|s| s.config());
                    json_reply(serde_json::to_value(config).unwrap_or_default())
                }
                None => reply(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    format!("no connected proxy {id:?}\n"),
                ),
            }
        }
        "/metrics" => {
            let mut out = String::new();
            match prometheus_client::encoding::text::encode(&mut out, &state.registry) {
                Ok(()) => reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    out,
                ),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e}\n"),
                ),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Every connected proxy with the versions it was sent and acknowledged, or its NACK.
pub fn syncz(discovery: &Discovery) -> serde_json::Value {
    let mesh = discovery.mesh();
    let proxies: Vec<_> = discovery
        .connections()
        .into_iter()
        .map(|(_, c)| {
            let s = c.state.lock().expect("connection lock");
            json!({
                "id": c.node.id,
                "workload": c.node.workload,
                "namespace": c.node.namespace,
                // Reported by the proxy; loopback, so usable from the proxy's host only.
                "admin": c.node.admin,
                "connected_at": c.connected_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default(),
                "generation": s.generation,
                "synced": s.generation == mesh.generation && s.config.in_sync() && s.endpoints.in_sync(),
                "config": s.config,
                "endpoints": s.endpoints,
                "problems": &*s.problems,
            })
        })
        .collect();
    let (encoded_configs, encoded_bytes) = discovery.encoded_scopes();
    json!({
        "generation": mesh.generation,
        "resources": mesh.resource_count,
        // Distinct encoded outbound configs alive, shared by the proxies of equal scopes.
        "encoded_outbound_configs": encoded_configs,
        "encoded_outbound_bytes": encoded_bytes,
        "proxies": proxies,
    })
}

/// The current generation's routing and policy resources (with file and lines) and the
/// registry's services and workloads: the input of `meshctl analyze` and `describe`.
pub fn configz(discovery: &Discovery) -> serde_json::Value {
    let mesh = discovery.mesh();
    let dump = ConfigDump::new(
        mesh.config_resources().iter().map(|r| &**r),
        inventory(mesh.index.registry()),
    );
    serde_json::to_value(dump).unwrap_or_default()
}

/// The registry as the analysis sees it. A workload's services are those with an endpoint of
/// it (by WorkloadEntry, else by address in its namespace); it has a sidecar when those
/// endpoints say so, or by its labels when it backs no service.
pub fn inventory(registry: &ServiceRegistry) -> Inventory {
    let services = registry
        .services()
        .map(|s| ServiceInfo {
            hostname: s.hostname.clone(),
            namespace: s.namespace.clone(),
            ports: s.ports.iter().map(|p| p.number).collect(),
        })
        .collect();
    // One pass over the endpoints (a registry holds thousands): by WorkloadEntry, and by
    // (namespace, address) for endpoints that name none (Kubernetes Pods).
    let mut by_workload: HashMap<(&str, &str), (Vec<String>, bool)> = HashMap::new();
    let mut by_address: HashMap<(&str, &str), (Vec<String>, bool)> = HashMap::new();
    for s in registry.services() {
        for e in &s.endpoints {
            let entry = match &e.workload {
                Some((ns, name)) => by_workload.entry((ns, name)).or_default(),
                None => by_address.entry((&s.namespace, &e.address)).or_default(),
            };
            if entry.0.last() != Some(&s.hostname) {
                entry.0.push(s.hostname.clone());
            }
            entry.1 |= e.sidecar;
        }
    }
    let workloads = registry
        .workloads()
        .map(|w| {
            let found = by_workload
                .get(&(w.namespace.as_str(), w.name.as_str()))
                .or_else(|| by_address.get(&(w.namespace.as_str(), w.address.as_str())));
            WorkloadInfo {
                name: w.name.clone(),
                namespace: w.namespace.clone(),
                labels: w.labels.clone(),
                service_account: w.service_account.clone(),
                sidecar: found.map_or_else(|| has_sidecar(&w.labels), |(_, sidecar)| *sidecar),
                services: found.map(|(hosts, _)| hosts.clone()).unwrap_or_default(),
            }
        })
        .collect();
    Inventory {
        services,
        workloads,
    }
}

fn json_reply(value: serde_json::Value) -> Response<Full<Bytes>> {
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    reply(StatusCode::OK, "application/json", text)
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Mesh;
    use crate::metrics::PilotMetrics;

    const MESH: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 127.0.0.1, ports: {http: 19082}, labels: {app: reviews, version: v1}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: legacy, namespace: default}
spec: {address: 127.0.0.2, labels: {app: legacy, security.istio.io/tlsMode: disabled}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v9}
";

    #[test]
    fn configz_serves_the_config_with_lines_and_the_registry_for_analysis() {
        let (resources, errors) = mesh_api::load_str("mesh.yaml", MESH);
        assert!(errors.is_empty(), "{errors:?}");
        let mesh = Mesh::new(
            1,
            std::time::Instant::now(),
            resources.into_iter().map(Arc::new).collect(),
        );
        let discovery = Discovery::new(mesh, Arc::new(PilotMetrics::default()));
        let dump: ConfigDump = serde_json::from_value(configz(&discovery)).unwrap();
        let (resources, inventory) = dump.into_parts();
        assert_eq!(resources.len(), 1, "routing and policy only");
        let reviews = inventory.workload("default", "reviews-v1").unwrap();
        assert_eq!(reviews.services, ["reviews.default.svc.cluster.local"]);
        assert!(reviews.sidecar);
        assert_eq!(reviews.service_account, "reviews");
        assert!(!inventory.workload("default", "legacy").unwrap().sidecar);
        assert_eq!(inventory.services[0].ports, [9080]);
        let found = mesh_api::analysis::analyze(&resources, &inventory);
        assert_eq!(
            found[0].to_string(),
            "Error [IST0101] (VirtualService default/reviews mesh.yaml:28) Referenced host+subset in destinationrule not found: \"reviews+v9\""
        );
    }
}
