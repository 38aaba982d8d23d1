//! The workloads of a local mesh: annotated WorkloadEntries, each run as a sample app and a proxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use mesh_api::Resource;
use mesh_api::networking::WorkloadSelector;

use super::app_mode::{AppMode, app_mode};
use super::egress::{EgressListener, egress_listeners};

/// One workload to run locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalWorkload {
    pub name: String,
    pub namespace: String,
    /// The name the sample app reports, and prefixes its TCP answers with:
    /// `local.mesh.dev/app-name`, else the `app` label, else the entry's name.
    pub app: String,
    pub version: String,
    /// The protocol of the service port the workload serves decides the sample app's mode.
    pub app_mode: AppMode,
    /// The workload's identity: `spec.serviceAccount`, else `default` as in Kubernetes.
    pub service_account: String,
    pub inbound: SocketAddr,
    pub app_addr: SocketAddr,
    pub outbound: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// Listeners pilot opens on the proxy for the workload's Sidecar egress ports.
    pub egress: Vec<EgressListener>,
}

pub const APP_PORT: &str = "local.mesh.dev/app-port";
const OUTBOUND_PORT: &str = "local.mesh.dev/outbound-port";
pub(super) const ADMIN_PORT: &str = "local.mesh.dev/admin-port";
const APP_NAME: &str = "local.mesh.dev/app-name";

/// Whether a non-empty `workloadSelector` selects a workload with `labels`.
pub(super) fn selected_by(
    selector: Option<&WorkloadSelector>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.is_some_and(|s| {
        !s.labels.is_empty() && s.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    })
}

/// The workloads of `resources` that describe a local process.
pub fn local_workloads(resources: &[Resource]) -> Result<Vec<LocalWorkload>, String> {
    let mut out = Vec::new();
    for r in resources {
        let Resource::WorkloadEntry(we) = r else {
            continue;
        };
        let annotations = &we.metadata.annotations;
        let Some(app_port) = annotations.get(APP_PORT) else {
            continue;
        };
        let at = |what: &str| {
            format!(
                "WorkloadEntry {}/{}: {what}",
                r.namespace().unwrap_or("default"),
                r.name()
            )
        };
        let port = |key: &str, value: &str| -> Result<u16, String> {
            value
                .parse()
                .map_err(|_| at(&format!("annotation {key}: {value:?} is not a port")))
        };
        let ip: std::net::IpAddr = we
            .spec
            .address
            .parse()
            .map_err(|_| at("spec.address must be an IP address for a local workload"))?;
        let (port_name, inbound_port) = we
            .spec
            .ports
            .iter()
            .next()
            .ok_or_else(|| at("spec.ports must name the proxy's inbound port"))?;
        let namespace = r.namespace().unwrap_or("default");
        let label = |k: &str| {
            we.spec
                .labels
                .get(k)
                .cloned()
                .unwrap_or_else(|| r.name().to_string())
        };
        out.push(LocalWorkload {
            name: r.name().to_string(),
            namespace: namespace.to_string(),
            app: annotations
                .get(APP_NAME)
                .cloned()
                .unwrap_or_else(|| label("app")),
            version: we
                .spec
                .labels
                .get("version")
                .cloned()
                .unwrap_or_else(|| "v1".into()),
            service_account: we
                .spec
                .service_account
                .clone()
                .filter(|sa| !sa.is_empty())
                .unwrap_or_else(|| "default".into()),
            app_mode: app_mode(resources, namespace, &we.spec.labels, port_name),
            inbound: SocketAddr::new(ip, *inbound_port as u16),
            app_addr: SocketAddr::new(ip, port(APP_PORT, app_port)?),
            outbound: annotations
                .get(OUTBOUND_PORT)
                .map(|v| port(OUTBOUND_PORT, v).map(|p| SocketAddr::new(ip, p)))
                .transpose()?,
            admin: annotations
                .get(ADMIN_PORT)
                .map(|v| port(ADMIN_PORT, v).map(|p| SocketAddr::new([127, 0, 0, 1].into(), p)))
                .transpose()?,
            egress: egress_listeners(resources, namespace, &we.spec.labels),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_workloads_come_from_annotated_workload_entries() {
        let (resources, errors) = mesh_api::load_str(
            "w.yaml",
            r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v2
  namespace: default
  annotations: { local.mesh.dev/app-port: "29083", local.mesh.dev/outbound-port: "15002" }
spec:
  address: 127.0.0.1
  ports: { http: 19083 }
  labels: { app: reviews, version: v2 }
  serviceAccount: bookinfo-reviews
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: elsewhere, namespace: default }
spec: { address: 127.0.0.1, ports: { http: 1 } }
"#,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let w = local_workloads(&resources).unwrap();
        assert_eq!(w.len(), 1, "only annotated entries run locally");
        assert_eq!(w[0].app, "reviews");
        assert_eq!(w[0].version, "v2");
        assert_eq!(w[0].inbound, "127.0.0.1:19083".parse().unwrap());
        assert_eq!(w[0].app_addr, "127.0.0.1:29083".parse().unwrap());
        assert_eq!(w[0].outbound, Some("127.0.0.1:15002".parse().unwrap()));
        assert_eq!(w[0].admin, None);
        assert_eq!(w[0].service_account, "bookinfo-reviews");
    }

    const TCP_ECHO: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: tcp-echo, namespace: default }
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9000, name: tcp }]
  workloadSelector: { labels: { app: tcp-echo } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: sleep, namespace: default }
spec:
  hosts: [sleep.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 80, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: sleep } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: tcp-echo-v2
  namespace: default
  annotations: { local.mesh.dev/app-port: "29191", local.mesh.dev/app-name: two }
spec:
  address: 127.0.0.1
  ports: { tcp: 19191 }
  labels: { app: tcp-echo, version: v2 }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: sleep
  namespace: default
  annotations: { local.mesh.dev/app-port: "29192" }
spec:
  address: 127.0.0.1
  ports: { http: 19192 }
  labels: { app: sleep, version: v1 }
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: sleep, namespace: default }
spec:
  workloadSelector: { labels: { app: sleep } }
  egress:
  - port: { number: 9000, name: tcp-echo, protocol: TCP }
    captureMode: NONE
    hosts: [./tcp-echo.default.svc.cluster.local]
  - port: { number: 9001, name: tcp-captured, protocol: TCP }
    hosts: [./tcp-echo.default.svc.cluster.local]
  - hosts: ['./*']
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: default, namespace: default }
spec:
  egress:
  - port: { number: 9100, name: tcp, protocol: TCP }
    captureMode: NONE
    hosts: ['./*']
"#;

    #[test]
    fn a_tcp_service_port_runs_the_app_in_tcp_mode_under_its_app_name() {
        let (resources, errors) = mesh_api::load_str("tcp-echo.yaml", TCP_ECHO);
        assert!(errors.is_empty(), "{errors:?}");
        let w = local_workloads(&resources).unwrap();
        let echo = w.iter().find(|w| w.name == "tcp-echo-v2").unwrap();
        assert_eq!(echo.app_mode, AppMode::TcpLines, "port `tcp` of tcp-echo");
        assert_eq!(
            echo.app, "two",
            "local.mesh.dev/app-name is the answer prefix"
        );
        let sleep = w.iter().find(|w| w.name == "sleep").unwrap();
        assert_eq!(sleep.app_mode, AppMode::Http);
        assert_eq!(sleep.app, "sleep", "the app label by default");
    }

    #[test]
    fn http_and_unselected_ports_keep_the_http_app() {
        // Same entry, but the ServiceEntry declares the port HTTP, then selects other labels.
        let http = TCP_ECHO.replace(
            "{ number: 9000, name: tcp }",
            "{ number: 9000, name: tcp, protocol: HTTP }",
        );
        let (resources, _) = mesh_api::load_str("a.yaml", &http);
        let w = local_workloads(&resources).unwrap();
        assert_eq!(
            w[0].app_mode,
            AppMode::Http,
            "the protocol field wins over the name"
        );
        let other = TCP_ECHO.replace("labels: { app: tcp-echo } }", "labels: { app: other } }");
        let (resources, _) = mesh_api::load_str("b.yaml", &other);
        let w = local_workloads(&resources).unwrap();
        assert_eq!(
            w[0].app_mode,
            AppMode::Http,
            "no ServiceEntry selects the workload"
        );
    }

    #[test]
    fn egress_listeners_come_from_the_sidecar_that_selects_the_workload() {
        let (resources, _) = mesh_api::load_str("tcp-echo.yaml", TCP_ECHO);
        let w = local_workloads(&resources).unwrap();
        let sleep = w.iter().find(|w| w.name == "sleep").unwrap();
        // The captured port 9001 gets no listener of its own (routed by the outbound one),
        // the hosts-only listener neither, and the namespace default does not apply.
        assert_eq!(
            sleep.egress,
            vec![EgressListener {
                addr: "127.0.0.1:9000".parse().unwrap(),
                protocol: "TCP".into(),
                hosts: vec!["./tcp-echo.default.svc.cluster.local".into()],
            }]
        );
        // tcp-echo-v2 has no selecting Sidecar: the namespace's default one applies.
        let echo = w.iter().find(|w| w.name == "tcp-echo-v2").unwrap();
        assert_eq!(echo.egress.len(), 1);
        assert_eq!(echo.egress[0].addr, "127.0.0.1:9100".parse().unwrap());
    }
}
