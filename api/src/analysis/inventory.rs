//! What the analysis checks references against: the mesh's services and workloads. Built from
//! ServiceEntries and WorkloadEntries (files), or sent by a running pilot from its registry
//! (which also holds Kubernetes Services and Pods).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::hosts;
use crate::resource::Resource;

/// Label that tells whether a workload's traffic is mTLS-capable (Istio's name and values).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Fully qualified, as the registry holds it (`reviews.default.svc.cluster.local`).
    pub hostname: String,
    pub namespace: String,
    pub ports: Vec<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadInfo {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// A mesh proxy runs beside it.
    pub sidecar: bool,
    /// Hostnames of the services it is an instance of.
    pub services: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub services: Vec<ServiceInfo>,
    pub workloads: Vec<WorkloadInfo>,
}

/// Whether a workload runs a proxy: `security.istio.io/tlsMode` decides when set (`istio`
/// yes); without it a WorkloadEntry has one (in this mesh it describes a workload that runs
/// `mesh-proxy --workload`), as pilot's registry reads it.
pub fn has_sidecar(labels: &BTreeMap<String, String>) -> bool {
    labels.get(TLS_MODE_LABEL).is_none_or(|m| m == "istio")
}

/// Every `selector` label present with the same value; an empty selector selects all.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Inventory {
    /// The services of every ServiceEntry and the workloads of every WorkloadEntry, each
    /// workload an instance of the ServiceEntries of its namespace whose selector it matches.
    pub fn from_resources(resources: &[Resource]) -> Self {
        let mut services = Vec::new();
        let mut selectors = Vec::new();
        for r in resources {
            let Resource::ServiceEntry(se) = r else {
                continue;
            };
            let ns = super::namespace_of(r);
            let hostnames: Vec<String> = se
                .spec
                .hosts
                .iter()
                .map(|h| hosts::resolve(h, ns))
                .collect();
            for hostname in &hostnames {
                services.push(ServiceInfo {
                    hostname: hostname.clone(),
                    namespace: ns.to_owned(),
                    ports: se.spec.ports.iter().map(|p| p.number).collect(),
                });
            }
            if let Some(sel) = &se.spec.workload_selector {
                selectors.push((ns.to_owned(), sel.labels.clone(), hostnames));
            }
        }
        let workloads = resources
            .iter()
            .filter_map(|r| match r {
                Resource::WorkloadEntry(we) => Some((r, we)),
                _ => None,
            })
            .map(|(r, we)| {
                let ns = super::namespace_of(r);
                let services = selectors
                    .iter()
                    .filter(|(sel_ns, sel, _)| sel_ns == ns && selects(sel, &we.spec.labels))
                    .flat_map(|(_, _, hosts)| hosts.iter().cloned())
                    .collect();
                WorkloadInfo {
                    name: r.name().to_owned(),
                    namespace: ns.to_owned(),
                    labels: we.spec.labels.clone(),
                    service_account: we.spec.service_account.clone().unwrap_or_default(),
                    sidecar: has_sidecar(&we.spec.labels),
                    services,
                }
            })
            .collect();
        Self {
            services,
            workloads,
        }
    }

    /// Whether some service's hostname is covered by `host` (an FQDN or wildcard).
    pub fn knows_host(&self, host: &str) -> bool {
        self.services
            .iter()
            .any(|s| hosts::overlap(host, &s.hostname))
    }

    /// Workloads whose labels `selector` matches, in `namespace` or (None) anywhere.
    pub fn matching<'a>(
        &'a self,
        namespace: Option<&'a str>,
        selector: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a WorkloadInfo> + 'a {
        self.workloads.iter().filter(move |w| {
            namespace.is_none_or(|ns| w.namespace == ns) && selects(selector, &w.labels)
        })
    }

    pub fn workload(&self, namespace: &str, name: &str) -> Option<&WorkloadInfo> {
        self.workloads
            .iter()
            .find(|w| w.namespace == namespace && w.name == name)
    }

    /// Namespaces that hold a service or workload.
    pub fn namespaces(&self) -> BTreeSet<&str> {
        self.services
            .iter()
            .map(|s| s.namespace.as_str())
            .chain(self.workloads.iter().map(|w| w.namespace.as_str()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_entries_are_instances_of_the_service_entries_that_select_them() {
        let (resources, errors) = crate::load_str(
            "mesh.yaml",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: reviews, namespace: default}\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 9080, name: http}]\n  workloadSelector: {labels: {app: reviews}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: reviews-v1, namespace: default}\nspec: {address: 127.0.0.1, labels: {app: reviews, version: v1}, serviceAccount: reviews}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: legacy, namespace: default}\nspec: {address: 127.0.0.2, labels: {app: legacy, security.istio.io/tlsMode: disabled}}\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let inv = Inventory::from_resources(&resources);
        assert!(inv.knows_host("reviews.default.svc.cluster.local"));
        assert!(inv.knows_host("*.svc.cluster.local"));
        assert!(!inv.knows_host("ratings.default.svc.cluster.local"));
        let reviews = inv.workload("default", "reviews-v1").unwrap();
        assert_eq!(reviews.services, ["reviews.default.svc.cluster.local"]);
        assert!(reviews.sidecar);
        assert_eq!(reviews.service_account, "reviews");
        let legacy = inv.workload("default", "legacy").unwrap();
        assert!(!legacy.sidecar);
        assert!(legacy.services.is_empty());
        let app: BTreeMap<String, String> = [("app".into(), "reviews".into())].into();
        assert_eq!(inv.matching(Some("default"), &app).count(), 1);
        assert_eq!(inv.matching(Some("other"), &app).count(), 0);
    }
}
