//! The workloads of a local mesh: annotated WorkloadEntries, each run as a sample app and a proxy.

use std::net::SocketAddr;

use mesh_api::Resource;

/// One workload to run locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalWorkload {
    pub name: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
    /// The workload's identity: `spec.serviceAccount`, else `default` as in Kubernetes.
    pub service_account: String,
    pub inbound: SocketAddr,
    pub app_addr: SocketAddr,
    pub outbound: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

pub const APP_PORT: &str = "local.mesh.dev/app-port";
const OUTBOUND_PORT: &str = "local.mesh.dev/outbound-port";
const ADMIN_PORT: &str = "local.mesh.dev/admin-port";

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
        let inbound_port = we
            .spec
            .ports
            .values()
            .next()
            .copied()
            .ok_or_else(|| at("spec.ports must name the proxy's inbound port"))?;
        let label = |k: &str| {
            we.spec
                .labels
                .get(k)
                .cloned()
                .unwrap_or_else(|| r.name().to_string())
        };
        out.push(LocalWorkload {
            name: r.name().to_string(),
            namespace: r.namespace().unwrap_or("default").to_string(),
            app: label("app"),
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
            inbound: SocketAddr::new(ip, inbound_port as u16),
            app_addr: SocketAddr::new(ip, port(APP_PORT, app_port)?),
            outbound: annotations
                .get(OUTBOUND_PORT)
                .map(|v| port(OUTBOUND_PORT, v).map(|p| SocketAddr::new(ip, p)))
                .transpose()?,
            admin: annotations
                .get(ADMIN_PORT)
                .map(|v| port(ADMIN_PORT, v).map(|p| SocketAddr::new([127, 0, 0, 1].into(), p)))
                .transpose()?,
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
}
