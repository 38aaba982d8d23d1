//! Kubelet probes through the proxy. With STRICT mTLS the kubelet's plain-text probes would be
//! refused by the inbound listener, so (as Istio does) each HTTP probe of an app container is
//! pointed at the proxy's health port, `GET :15021/app-health/<container>/<livez|readyz|startupz>`,
//! and the original probe is handed to the proxy in the env variable [`PROBERS_ENV`]: a JSON
//! object from that path to `{"httpGet": {...}, "timeoutSeconds": N}` with the port resolved
//! to a number. The proxy answers the kubelet by running the original probe against the app
//! over loopback, which capture exempts.
//!
//! TCP, gRPC and exec probes are left as they are: exec runs inside the container and never
//! crosses the network; TCP and gRPC probes reach the app's port through inbound capture, which
//! only sees a connection (TCP) or would need a gRPC health client in the proxy (not there yet).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

/// Proxy env variable that carries the original probes (Istio's `ISTIO_KUBE_APP_PROBERS`).
pub const PROBERS_ENV: &str = "MESH_KUBE_APP_PROBERS";
/// The proxy's health port.
pub const HEALTH_PORT: i32 = 15021;

/// Rewrites the HTTP probes of the app containers and of restartable init containers (native
/// sidecars of the app); returns the probers for the proxy, keyed by path.
pub fn rewrite(spec: &mut PodSpec, skip: &[&str]) -> BTreeMap<String, Value> {
    let mut probers = BTreeMap::new();
    let init = spec
        .init_containers
        .iter_mut()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    for c in spec.containers.iter_mut().chain(init) {
        if skip.contains(&c.name.as_str()) {
            continue;
        }
        rewrite_container(c, &mut probers);
    }
    probers
}

fn rewrite_container(c: &mut Container, probers: &mut BTreeMap<String, Value>) {
    let name = c.name.clone();
    let ports = c.ports.clone().unwrap_or_default();
    let resolve = |port: &IntOrString| match port {
        IntOrString::Int(p) => Some(*p),
        IntOrString::String(s) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(s.as_str()))
            .map(|p| p.container_port)
            .or_else(|| s.parse().ok()),
    };
    for (probe, kind) in [
        (&mut c.liveness_probe, "livez"),
        (&mut c.readiness_probe, "readyz"),
        (&mut c.startup_probe, "startupz"),
    ] {
        let Some(p) = probe else { continue };
        let Some(get) = &p.http_get else { continue };
        let Some(port) = resolve(&get.port) else {
            continue;
        };
        let path = format!("/app-health/{name}/{kind}");
        let original = HTTPGetAction {
            port: IntOrString::Int(port),
            ..get.clone()
        };
        let mut prober = json!({ "httpGet": original });
        if let Some(t) = p.timeout_seconds {
            prober["timeoutSeconds"] = json!(t);
        }
        probers.insert(path.clone(), prober);
        *p = Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path),
                port: IntOrString::Int(HEALTH_PORT),
                ..Default::default()
            }),
            ..p.clone()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, ExecAction, TCPSocketAction};

    fn http(port: IntOrString) -> Option<Probe> {
        Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/health".into()),
                port,
                scheme: Some("HTTPS".into()),
                ..Default::default()
            }),
            timeout_seconds: Some(4),
            period_seconds: Some(7),
            ..Default::default()
        })
    }

    #[test]
    fn http_probes_go_through_the_proxy_others_stay() {
        let mut spec = PodSpec {
            containers: vec![Container {
                name: "app".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: 8080,
                    ..Default::default()
                }]),
                liveness_probe: http(IntOrString::String("http".into())),
                readiness_probe: Some(Probe {
                    tcp_socket: Some(TCPSocketAction {
                        port: IntOrString::Int(8080),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                startup_probe: Some(Probe {
                    exec: Some(ExecAction {
                        command: Some(vec!["true".into()]),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let before = spec.containers[0].clone();
        let probers = rewrite(&mut spec, &[]);
        let c = &spec.containers[0];
        let live = c.liveness_probe.as_ref().unwrap();
        let get = live.http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some("/app-health/app/livez"));
        assert_eq!(get.port, IntOrString::Int(15021));
        assert_eq!(get.scheme, None);
        assert_eq!(live.period_seconds, Some(7));
        assert_eq!(c.readiness_probe, before.readiness_probe);
        assert_eq!(c.startup_probe, before.startup_probe);
        assert_eq!(
            serde_json::to_value(&probers).unwrap(),
            json!({"/app-health/app/livez": {
                "httpGet": {"path": "/health", "port": 8080, "scheme": "HTTPS"},
                "timeoutSeconds": 4}})
        );
    }

    #[test]
    fn unresolvable_named_port_and_skipped_containers_are_untouched() {
        let mut spec = PodSpec {
            containers: vec![
                Container {
                    name: "app".into(),
                    liveness_probe: http(IntOrString::String("nope".into())),
                    ..Default::default()
                },
                Container {
                    name: "mesh-proxy".into(),
                    readiness_probe: http(IntOrString::Int(15021)),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let before = spec.clone();
        assert!(rewrite(&mut spec, &["mesh-proxy"]).is_empty());
        assert_eq!(spec, before);
    }
}
