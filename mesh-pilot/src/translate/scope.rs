//! What one proxy may see: its Sidecar (egress hosts, outbound traffic policy) and the
//! `exportTo` of services and configs. Proxies with an equal [`ScopeKey`] see the same
//! outbound config, so it is built once per key.

use std::collections::BTreeMap;

use mesh_api::networking::{OutboundMode, Sidecar};

use super::hosts;
use crate::registry::labels_match;

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
    pub mode: OutboundMode,
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
        for l in &spec.egress {
            if l.port.is_some() || l.bind.is_some() {
                warnings.push(format!(
                    "Sidecar {namespace}/{name}: egress listeners with a port or bind are not supported yet; only their hosts are used"
                ));
            }
            for h in &l.hosts {
                let (ns, host) = h.split_once('/').unwrap_or(("*", h));
                let ns = if ns == "." { namespace } else { ns };
                egress.push(EgressHost {
                    namespace: ns.to_string(),
                    host: host.to_string(),
                });
            }
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
            mode: spec
                .outbound_traffic_policy
                .as_ref()
                .map(|p| p.mode)
                .unwrap_or_default(),
        }
    }

    /// Whether a host declared in `namespace` is imported by the egress hosts.
    pub fn imports(&self, namespace: &str, host: &str) -> bool {
        self.egress.iter().any(|e| {
            e.namespace != "~"
                && (e.namespace == "*" || e.namespace == namespace)
                && (hosts::covers(&e.host, host) || hosts::covers(host, &e.host))
        })
    }
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
