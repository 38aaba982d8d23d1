//! The gateways of a local mesh: WorkloadEntries annotated `local.mesh.dev/gateway-ports` run
//! as `mesh-proxy --gateway` (no app), and pilot gives each the listeners of the Gateways whose
//! selector matches its labels. A Gateway server's port (80) is the port clients use in
//! Kubernetes; the annotation maps it to a port of this machine (`80=18080`), since binding
//! 80 needs root.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use mesh_api::Resource;

use super::workloads::ADMIN_PORT;

pub const GATEWAY_PORTS: &str = "local.mesh.dev/gateway-ports";

/// One gateway proxy to run locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalGateway {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    /// The entry's address: server ports without a mapping bind here, at their own number.
    pub address: IpAddr,
    /// Gateway server port -> where its listener binds.
    pub ports: BTreeMap<u32, SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// `namespace/name` of the Gateways that select it.
    pub gateways: Vec<String>,
}

/// `80=18080,443=18443` -> {80: ip:18080, 443: ip:18443}.
fn parse_ports(value: &str, ip: IpAddr) -> Result<BTreeMap<u32, SocketAddr>, String> {
    let mut out = BTreeMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parsed = pair.split_once('=').and_then(|(server, local)| {
            Some((server.parse::<u16>().ok()?, local.parse::<u16>().ok()?))
        });
        let Some((server, local)) = parsed else {
            return Err(format!("{pair:?} is not SERVER_PORT=LOCAL_PORT"));
        };
        out.insert(u32::from(server), SocketAddr::new(ip, local));
    }
    if out.is_empty() {
        return Err("names no port".to_owned());
    }
    Ok(out)
}

/// The gateway workloads of `resources`, and a warning for every Gateway no local gateway
/// serves and every server port left without a mapping.
pub fn local_gateways(resources: &[Resource]) -> Result<(Vec<LocalGateway>, Vec<String>), String> {
    let mut out = Vec::new();
    let mut labels_of = Vec::new();
    for r in resources {
        let Resource::WorkloadEntry(we) = r else {
            continue;
        };
        let Some(ports) = we.metadata.annotations.get(GATEWAY_PORTS) else {
            continue;
        };
        let namespace = r.namespace().unwrap_or("default");
        let at = |what: &str| format!("WorkloadEntry {namespace}/{}: {what}", r.name());
        let ip: IpAddr = we
            .spec
            .address
            .parse()
            .map_err(|_| at("spec.address must be an IP address for a local gateway"))?;
        let admin = we
            .metadata
            .annotations
            .get(ADMIN_PORT)
            .map(|v| {
                v.parse::<u16>()
                    .map(|p| SocketAddr::new([127, 0, 0, 1].into(), p))
                    .map_err(|_| at(&format!("annotation {ADMIN_PORT}: {v:?} is not a port")))
            })
            .transpose()?;
        out.push(LocalGateway {
            name: r.name().to_string(),
            namespace: namespace.to_string(),
            service_account: we
                .spec
                .service_account
                .clone()
                .filter(|sa| !sa.is_empty())
                .unwrap_or_else(|| "default".into()),
            address: ip,
            ports: parse_ports(ports, ip)
                .map_err(|e| at(&format!("annotation {GATEWAY_PORTS}: {e}")))?,
            admin,
            gateways: Vec::new(),
        });
        labels_of.push(we.spec.labels.clone());
    }
    let mut warnings = Vec::new();
    for r in resources {
        let Resource::Gateway(gw) = r else {
            continue;
        };
        let reference = format!("{}/{}", r.namespace().unwrap_or("default"), r.name());
        let selects = |labels: &BTreeMap<String, String>| {
            gw.spec
                .selector
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        };
        let mut served = false;
        for (g, labels) in out.iter_mut().zip(&labels_of) {
            if !selects(labels) {
                continue;
            }
            served = true;
            g.gateways.push(reference.clone());
            for port in gw.spec.servers.iter().filter_map(|s| s.port.as_ref()) {
                if !g.ports.contains_key(&port.number) {
                    warnings.push(format!(
                        "Gateway {reference}: port {} is not in {GATEWAY_PORTS} of {}; it listens on {}:{}",
                        port.number, g.name, g.address, port.number
                    ));
                }
            }
        }
        if !served {
            warnings.push(format!(
                "Gateway {reference}: no WorkloadEntry with {GATEWAY_PORTS} has the labels of its selector; no gateway runs for it"
            ));
        }
    }
    Ok((out, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: istio-ingressgateway
  namespace: istio-system
  annotations: { local.mesh.dev/gateway-ports: "80=18080", local.mesh.dev/admin-port: "15110" }
spec:
  address: 127.0.0.1
  labels: { istio: ingressgateway }
  serviceAccount: istio-ingressgateway
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: bookinfo-gateway, namespace: default }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: 80, name: http, protocol: HTTP }
    hosts: ['*']
  - port: { number: 8443, name: https, protocol: HTTPS }
    hosts: ['*']
    tls: { mode: SIMPLE, serverCertificate: /c.pem, privateKey: /c.key }
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: egress, namespace: default }
spec:
  selector: { istio: egressgateway }
  servers:
  - port: { number: 80, name: http, protocol: HTTP }
    hosts: ['*']
"#;

    #[test]
    fn gateways_come_from_annotated_entries_and_unserved_gateways_are_named() {
        let (resources, errors) = mesh_api::load_str("g.yaml", YAML);
        assert!(errors.is_empty(), "{errors:?}");
        let (gateways, warnings) = local_gateways(&resources).unwrap();
        assert_eq!(gateways.len(), 1);
        let g = &gateways[0];
        assert_eq!(
            (g.name.as_str(), g.namespace.as_str()),
            ("istio-ingressgateway", "istio-system")
        );
        assert_eq!(g.service_account, "istio-ingressgateway");
        assert_eq!(g.ports[&80], "127.0.0.1:18080".parse().unwrap());
        assert_eq!(g.admin, Some("127.0.0.1:15110".parse().unwrap()));
        assert_eq!(g.gateways, ["default/bookinfo-gateway"]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("port 8443") && warnings[0].contains("127.0.0.1:8443"));
        assert!(warnings[1].starts_with("Gateway default/egress: no WorkloadEntry"));
    }

    #[test]
    fn port_mappings_are_checked() {
        let ip: IpAddr = [127, 0, 0, 1].into();
        assert_eq!(parse_ports("80=18080, 443=18443", ip).unwrap().len(), 2);
        assert!(parse_ports("80", ip).is_err());
        assert!(parse_ports("80=http", ip).is_err());
        assert!(parse_ports("", ip).is_err());
    }
}
