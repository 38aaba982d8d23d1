//! The service registry: services, their instances and the workloads that run proxies,
//! derived from Istio resources (ServiceEntry + WorkloadEntry now; Kubernetes Services,
//! EndpointSlices and Pods later feed the same model).

mod model;
mod service_entry;

use std::collections::{BTreeMap, HashMap};

pub use model::{
    Endpoint, Location, Protocol, Resolution, Service, ServiceOrigin, ServicePort, TLS_MODE_LABEL,
    Workload, export_visible, has_sidecar, labels_match, spiffe_id,
};

/// Trust domain of SPIFFE identities unless told otherwise (Istio's default).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Namespace of an object that names none, as `kubectl apply` would use.
pub const DEFAULT_NAMESPACE: &str = "default";

/// An immutable snapshot of the mesh's services and workloads; rebuilt on every config change.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    /// Sorted by (hostname, namespace).
    services: Vec<Service>,
    by_host: HashMap<String, Vec<usize>>,
    workloads: BTreeMap<(String, String), Workload>,
    trust_domain: String,
    warnings: Vec<String>,
}

impl Registry {
    /// Builds the registry with the default trust domain `cluster.local`.
    pub fn build(resources: &[mesh_api::Resource]) -> Registry {
        Registry::build_with_trust_domain(resources, DEFAULT_TRUST_DOMAIN)
    }

    pub fn build_with_trust_domain(
        resources: &[mesh_api::Resource],
        trust_domain: &str,
    ) -> Registry {
        let built = service_entry::from_resources(resources, trust_domain);
        let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in built.services.iter().enumerate() {
            by_host.entry(s.hostname.clone()).or_default().push(i);
        }
        Registry {
            services: built.services,
            by_host,
            workloads: built.workloads,
            trust_domain: trust_domain.to_string(),
            warnings: built.warnings,
        }
    }

    /// Every service, sorted by hostname then namespace.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Services declared for exactly this hostname (one per declaring namespace).
    pub fn services_for_host<'a>(&'a self, hostname: &str) -> impl Iterator<Item = &'a Service> {
        self.by_host
            .get(hostname)
            .into_iter()
            .flatten()
            .map(|&i| &self.services[i])
    }

    /// The workload a proxy runs for: a WorkloadEntry by name and namespace.
    pub fn workload(&self, name: &str, namespace: &str) -> Option<&Workload> {
        self.workloads
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Every workload, sorted by namespace then name.
    pub fn workloads(&self) -> impl Iterator<Item = &Workload> {
        self.workloads.values()
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Inconsistencies found while building (e.g. a host declared twice in one namespace).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}
