//! What one proxy may see: its Sidecar (egress hosts, outbound traffic policy) and the
//! `exportTo` of services and configs. Proxies with an equal [`ScopeKey`] see the same
//! outbound config, so it is built once per key.

use std::collections::BTreeMap;

use mesh_api::networking::{CaptureMode, OutboundMode, Sidecar};

use super::hosts;
use crate::registry::{Protocol, labels_match};

/// Namespace whose namespace-wide Sidecar applies where a namespace has none (Istio's root).
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Everything the outbound config of a proxy depends on. Equal keys give equal configs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeKey {
    pub namespace: String,
    /// Index of the Sidecar in force in [`super::MeshIndex`], if any.
    pub sidecar: Option<usize>,
    /// Indices of the label selectors (VirtualService `sourceLabels`, DestinationRule
    /// `workloadSelector`) the proxy's labels satisfy.
    pub selected: Vec<usize>,
}

/// A Sidecar resource with its egress hosts parsed.
#[derive(Clone, Debug)]
pub struct SidecarEntry {
    pub namespace: String,
    pub name: String,
    pub created: String,
    pub selector: Option<BTreeMap<String, String>>,
    pub egress: Vec<EgressHost>,
    /// Egress listeners with a port that the proxy listens on explicitly.
    pub egress_ports: Vec<EgressPort>,
    pub mode: OutboundMode,
}

/// A Sidecar egress listener with a `port`, bound explicitly: with `bind`, or with
/// `captureMode: NONE` on 127.0.0.1 (Istio's default bind for NONE).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressPort {
    pub number: u32,
    pub protocol: Protocol,
    pub bind: String,
    /// The hosts this listener imports; services outside them are not reachable through it.
    pub hosts: Vec<EgressHost>,
}

/// One `namespace/host` of a Sidecar's egress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressHost {
    /// `*` for any namespace, `~` for none; `.` is resolved to the Sidecar's namespace.
    pub namespace: String,
    pub host: String,
}

impl SidecarEntry {
    pub fn new(
        namespace: &str,
        name: &str,
        created: &str,
        spec: &Sidecar,
        warnings: &mut Vec<String>,
    ) -> SidecarEntry {
        let mut egress = Vec::new();
        let mut egress_ports = Vec::new();
        for l in &spec.egress {
            let hosts: Vec<EgressHost> = l
                .hosts
                .iter()
                .map(|h| {
                    let (ns, host) = h.split_once('/').unwrap_or(("*", h));
                    let ns = if ns == "." { namespace } else { ns };
                    EgressHost {
                        namespace: ns.to_string(),
                        host: host.to_string(),
                    }
                })
                .collect();
            egress.extend(hosts.iter().cloned());
            let Some(port) = &l.port else {
                if l.bind.is_some() {
                    warnings.push(format!(
                        "Sidecar {namespace}/{name}: an egress listener with bind but no port is not supported; its hosts are imported, nothing listens on {}",
                        l.bind.as_deref().unwrap_or_default()
                    ));
                }
                continue;
            };
            let bind = match (&l.bind, l.capture_mode) {
                (Some(b), _) if b.starts_with("unix://") => {
                    warnings.push(format!(
                        "Sidecar {namespace}/{name}: egress port {}: unix domain socket bind {b} is not supported; no listener",
                        port.number
                    ));
                    continue;
                }
                (Some(b), _) => b.clone(),
                (None, CaptureMode::None) => "127.0.0.1".to_string(),
                (None, _) => {
                    // Captured traffic reaches the transparent outbound listener, which routes
                    // it by its original destination; a separate socket would never see it.
                    warnings.push(format!(
                        "Sidecar {namespace}/{name}: egress port {} without bind and with traffic capture: routed by the outbound listener; no separate listener (set bind or captureMode: NONE for one)",
                        port.number
                    ));
                    continue;
                }
            };
            egress_ports.push(EgressPort {
                number: port.number,
                protocol: Protocol::from_canonical(port.resolved_protocol()),
                bind,
                hosts,
            });
        }
        // A Sidecar without egress listeners imports everything, as Istio's default.
        if spec.egress.is_empty() {
            egress.push(EgressHost {
                namespace: "*".into(),
                host: "*".into(),
            });
        }
        SidecarEntry {
            namespace: namespace.to_string(),
            name: name.to_string(),
            created: created.to_string(),
            selector: spec
                .workload_selector
                .as_ref()
                .map(|s| s.labels.clone())
                .filter(|l| !l.is_empty()),
            egress,
            egress_ports,
            mode: spec
                .outbound_traffic_policy
                .as_ref()
                .map(|p| p.mode)
                .unwrap_or_default(),
        }
    }

    /// Whether a host declared in `namespace` is imported by the egress hosts.
    pub fn imports(&self, namespace: &str, host: &str) -> bool {
        imported(&self.egress, namespace, host)
    }
}

impl EgressPort {
    /// Whether this listener's hosts import a host declared in `namespace`.
    pub fn imports(&self, namespace: &str, host: &str) -> bool {
        imported(&self.hosts, namespace, host)
    }
}

fn imported(egress: &[EgressHost], namespace: &str, host: &str) -> bool {
    egress.iter().any(|e| {
        e.namespace != "~"
            && (e.namespace == "*" || e.namespace == namespace)
            && (hosts::covers(&e.host, host) || hosts::covers(host, &e.host))
    })
}

/// Istio's choice of Sidecar: one in the proxy's namespace whose selector matches its labels,
/// else the namespace's one without selector, else the root namespace's one without selector.
/// Ties go to the oldest, then by name. `sidecars` must be sorted by (created, namespace, name).
pub fn select_sidecar(
    sidecars: &[SidecarEntry],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<usize> {
    let find = |ns: &str, selected: bool| {
        sidecars.iter().position(|s| {
            s.namespace == ns
                && match &s.selector {
                    Some(sel) => selected && labels_match(sel, labels),
                    None => !selected,
                }
        })
    };
    find(namespace, true)
        .or_else(|| find(namespace, false))
        .or_else(|| find(ROOT_NAMESPACE, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sidecar(ns: &str, name: &str, yaml_spec: &str) -> SidecarEntry {
        let yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{yaml_spec}"
        );
        let (r, e) = mesh_api::load_str("s.yaml", &yaml);
        assert!(e.is_empty(), "{e:?}");
        let mesh_api::Resource::Sidecar(s) = &r[0] else {
            panic!()
        };
        SidecarEntry::new(ns, name, "", &s.spec, &mut Vec::new())
    }

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn egress_hosts() {
        let s = sidecar(
            "shop",
            "s",
            "  egress:\n  - hosts: [./*, istio-system/*, db/*.internal, ext/api.example.com]\n",
        );
        assert!(s.imports("shop", "cart.shop.svc.cluster.local"));
        assert!(s.imports("istio-system", "anything"));
        assert!(s.imports("db", "pg.internal"));
        assert!(!s.imports("db", "pg.example.com"));
        assert!(s.imports("ext", "api.example.com"));
        assert!(!s.imports("ext", "other.example.com"));
        assert!(!s.imports("other", "cart.shop.svc.cluster.local"));
        let all = sidecar("shop", "s", "  egress:\n  - hosts: ['*/*']\n");
        assert!(all.imports("x", "y.z"));
        let none = sidecar("shop", "s", "  egress:\n  - hosts: ['~/*']\n");
        assert!(!none.imports("x", "y.z"));
    }

    #[test]
    fn sidecar_precedence() {
        let sidecars = vec![
            sidecar(ROOT_NAMESPACE, "root", "  egress:\n  - hosts: ['*/*']\n"),
            sidecar("shop", "ns-wide", "  egress:\n  - hosts: ['./*']\n"),
            sidecar(
                "shop",
                "cart",
                "  workloadSelector: {labels: {app: cart}}\n  egress:\n  - hosts: ['./*']\n",
            ),
        ];
        assert_eq!(
            select_sidecar(&sidecars, "shop", &labels(&[("app", "cart")])),
            Some(2)
        );
        assert_eq!(
            select_sidecar(&sidecars, "shop", &labels(&[("app", "web")])),
            Some(1)
        );
        assert_eq!(select_sidecar(&sidecars, "other", &labels(&[])), Some(0));
        assert_eq!(select_sidecar(&sidecars[1..], "other", &labels(&[])), None);
    }

    #[test]
    fn egress_ports_bind_explicitly_or_are_left_to_capture() {
        let mut warnings = Vec::new();
        let yaml = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s, namespace: shop}\nspec:\n  egress:\n  - port: {number: 5432, name: tcp-db}\n    captureMode: NONE\n    hosts: [./db.shop.svc.cluster.local]\n  - port: {number: 9080, protocol: HTTP, name: web}\n    bind: 127.0.0.5\n    hosts: ['*/*']\n  - port: {number: 6379, name: redis}\n    hosts: ['./*']\n";
        let (r, e) = mesh_api::load_str("s.yaml", yaml);
        assert!(e.is_empty(), "{e:?}");
        let mesh_api::Resource::Sidecar(sc) = &r[0] else {
            panic!()
        };
        let s = SidecarEntry::new("shop", "s", "", &sc.spec, &mut warnings);
        assert_eq!(s.egress_ports.len(), 2);
        let db = &s.egress_ports[0];
        assert_eq!(
            (db.number, db.protocol, db.bind.as_str()),
            (5432, Protocol::Tcp, "127.0.0.1")
        );
        assert!(db.imports("shop", "db.shop.svc.cluster.local"));
        assert!(!db.imports("shop", "web.shop.svc.cluster.local"));
        let web = &s.egress_ports[1];
        assert_eq!(
            (web.number, web.protocol, web.bind.as_str()),
            (9080, Protocol::Http, "127.0.0.5")
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("egress port 6379 without bind"),
            "{warnings:?}"
        );
        // Every listener's hosts are imported for the proxy as a whole.
        assert!(s.imports("shop", "cache.shop.svc.cluster.local"));
    }

    #[test]
    fn outbound_mode() {
        let s = sidecar(
            "shop",
            "s",
            "  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
        );
        assert_eq!(s.mode, OutboundMode::RegistryOnly);
        assert!(s.imports("any", "thing"), "no egress imports everything");
    }
}
