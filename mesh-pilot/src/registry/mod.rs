//! The service registry: services, their instances and the workloads that run proxies,
//! derived from Istio resources (ServiceEntry + WorkloadEntry now; Kubernetes Services,
//! EndpointSlices and Pods later feed the same model).

mod model;
#[cfg(test)]
mod next_tests;
mod selection;
mod service_entry;

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

pub use model::{
    Endpoint, Location, Protocol, Resolution, Service, ServiceOrigin, ServicePort, TLS_MODE_LABEL,
    Workload, export_visible, has_sidecar, labels_match, spiffe_id,
};

/// Trust domain of SPIFFE identities unless told otherwise (Istio's default).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Namespace of an object that names none, as `kubectl apply` would use.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Services and workloads of a platform registry (Kubernetes Services, EndpointSlices, Pods),
/// merged with the ServiceEntry registry by [`Registry::build_merged`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Platform {
    pub services: Vec<Service>,
    pub workloads: Vec<Workload>,
}

/// An immutable snapshot of the mesh's services and workloads, made anew on every config
/// change ([`Registry::next`] reuses what did not change).
#[derive(Clone, Debug, Default)]
pub struct Registry {
    /// Sorted by (hostname, namespace); shared with the generations that did not change them.
    services: Vec<Arc<Service>>,
    by_host: HashMap<String, Vec<usize>>,
    /// ServiceEntry `subjectAltNames` by (hostname, namespace).
    subject_alt_names: BTreeMap<(String, String), Vec<String>>,
    workloads: BTreeMap<(String, String), Arc<Workload>>,
    trust_domain: String,
    warnings: Vec<String>,
    /// What the ServiceEntry part was built from, for the next generation.
    sources: Arc<service_entry::Sources>,
}

impl Registry {
    /// Builds the registry with the default trust domain `cluster.local`.
    pub fn build<R: Borrow<mesh_api::Resource>>(resources: &[R]) -> Registry {
        Registry::build_with_trust_domain(resources, DEFAULT_TRUST_DOMAIN)
    }

    pub fn build_with_trust_domain<R: Borrow<mesh_api::Resource>>(
        resources: &[R],
        trust_domain: &str,
    ) -> Registry {
        Registry::build_merged(resources, trust_domain, &Platform::default())
    }

    /// ServiceEntry + WorkloadEntry merged with a platform registry (Kubernetes). A platform
    /// service wins over a ServiceEntry of the same host and namespace (as in Istio); a
    /// WorkloadEntry wins over a platform workload of the same name and namespace.
    pub fn build_merged<R: Borrow<mesh_api::Resource>>(
        resources: &[R],
        trust_domain: &str,
        platform: &Platform,
    ) -> Registry {
        let shared: Vec<Arc<mesh_api::Resource>> = resources
            .iter()
            .map(|r| Arc::new(r.borrow().clone()))
            .collect();
        Registry::next(None, &shared, trust_domain, platform)
    }

    /// [`Registry::build_merged`] from shared resources, reusing from `previous` the services
    /// of every ServiceEntry that did not change and whose selected workloads did not either
    /// (resources the store did not re-read are the same `Arc`s, so most are recognised
    /// without comparing them).
    pub fn next(
        previous: Option<&Registry>,
        resources: &[Arc<mesh_api::Resource>],
        trust_domain: &str,
        platform: &Platform,
    ) -> Registry {
        let mut built =
            service_entry::from_resources(resources, trust_domain, previous.map(|p| &*p.sources));
        let mut workloads = built.sources.workloads.map().clone();
        merge_platform(&mut built, &mut workloads, platform);
        built
            .warnings
            .extend(pods_a_selector_misses(resources, platform));
        let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in built.services.iter().enumerate() {
            by_host.entry(s.hostname.clone()).or_default().push(i);
        }
        Registry {
            services: built.services,
            by_host,
            subject_alt_names: built.subject_alt_names,
            workloads,
            trust_domain: trust_domain.to_string(),
            warnings: built.warnings,
            sources: Arc::new(built.sources),
        }
    }

    /// Every service, sorted by hostname then namespace.
    pub fn services(&self) -> impl ExactSizeIterator<Item = &Service> {
        self.services.iter().map(|s| &**s)
    }

    /// Services declared for exactly this hostname (one per declaring namespace).
    pub fn services_for_host<'a>(&'a self, hostname: &str) -> impl Iterator<Item = &'a Service> {
        self.by_host
            .get(hostname)
            .into_iter()
            .flatten()
            .map(|&i| &*self.services[i])
    }

    /// The names a mesh mTLS peer serving `service` may present besides each endpoint's own
    /// identity: the ServiceEntry's `subjectAltNames` (Istio verifies ISTIO_MUTUAL connections
    /// against them together with the endpoints' service accounts).
    pub fn subject_alt_names(&self, service: &Service) -> &[String] {
        self.subject_alt_names
            .get(&(service.hostname.clone(), service.namespace.clone()))
            .map_or(&[], Vec::as_slice)
    }

    /// The workload a proxy runs for: a WorkloadEntry by name and namespace.
    pub fn workload(&self, name: &str, namespace: &str) -> Option<&Workload> {
        self.workloads
            .get(&(namespace.to_string(), name.to_string()))
            .map(|w| &**w)
    }

    /// Every workload, sorted by namespace then name.
    pub fn workloads(&self) -> impl Iterator<Item = &Workload> {
        self.workloads.values().map(|w| &**w)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Inconsistencies found while building (e.g. a host declared twice in one namespace).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The hostnames whose endpoints differ from `previous`, when nothing else about any
    /// service does (same services, ports, addresses, policy-relevant fields, subjectAltNames,
    /// and no service gaining its first or losing its last endpoint); `None` otherwise.
    pub fn endpoint_changes(&self, previous: &Registry) -> Option<HashSet<String>> {
        if self.services.len() != previous.services.len()
            || self.subject_alt_names != previous.subject_alt_names
            || self.trust_domain != previous.trust_domain
        {
            return None;
        }
        let mut changed = HashSet::new();
        for (now, before) in self.services.iter().zip(&previous.services) {
            if Arc::ptr_eq(now, before) {
                continue;
            }
            if !same_but_endpoints(now, before)
                || now.endpoints.is_empty() != before.endpoints.is_empty()
            {
                return None;
            }
            if now.endpoints != before.endpoints {
                changed.insert(now.hostname.clone());
            }
        }
        Some(changed)
    }
}

/// Every field but the endpoints equal. Destructured in full, so a new field of `Service`
/// cannot be forgotten here.
fn same_but_endpoints(a: &Service, b: &Service) -> bool {
    let Service {
        hostname,
        namespace,
        ports,
        export_to,
        resolution,
        location,
        endpoints: _,
        origin,
        created,
        addresses,
    } = a;
    *hostname == b.hostname
        && *namespace == b.namespace
        && *ports == b.ports
        && *export_to == b.export_to
        && *resolution == b.resolution
        && *location == b.location
        && *origin == b.origin
        && *created == b.created
        && *addresses == b.addresses
}

/// A ServiceEntry's `workloadSelector` selects WorkloadEntries only: said for each entry whose
/// selector matches Kubernetes Pods, which Istio would also make its endpoints.
fn pods_a_selector_misses(
    resources: &[Arc<mesh_api::Resource>],
    platform: &Platform,
) -> Vec<String> {
    if platform.workloads.is_empty() {
        return Vec::new();
    }
    resources
        .iter()
        .filter_map(|r| match &**r {
            mesh_api::Resource::ServiceEntry(se) => Some(se),
            _ => None,
        })
        .filter_map(|se| {
            let selector = &se.spec.workload_selector.as_ref()?.labels;
            let ns = se.metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
            let pods: Vec<&str> = platform
                .workloads
                .iter()
                .filter(|w| w.namespace == ns && labels_match(selector, &w.labels))
                .map(|w| w.name.as_str())
                .collect();
            let first = pods.first()?;
            Some(format!(
                "ServiceEntry {ns}/{}: spec.workloadSelector matches Pod {ns}/{first}{}; Pods are not endpoints of a ServiceEntry here (WorkloadEntries only)",
                se.metadata.name,
                match pods.len() {
                    1 => String::new(),
                    n => format!(" and {} more", n - 1),
                }
            ))
        })
        .collect()
}

/// Adds a platform registry's services and workloads; see [`Registry::build_merged`].
fn merge_platform(
    built: &mut service_entry::Built,
    workloads: &mut BTreeMap<(String, String), Arc<Workload>>,
    platform: &Platform,
) {
    let platform_hosts: std::collections::HashSet<(&str, &str)> = platform
        .services
        .iter()
        .map(|s| (s.hostname.as_str(), s.namespace.as_str()))
        .collect();
    let warnings = &mut built.warnings;
    built.services.retain(|s| {
        let shadowed = platform_hosts.contains(&(s.hostname.as_str(), s.namespace.as_str()));
        if shadowed {
            warnings.push(format!(
                "{} {}/{}: host {} is also a Kubernetes Service of that namespace; the Service is used",
                s.origin.kind, s.namespace, s.origin.name, s.hostname
            ));
        }
        !shadowed
    });
    built
        .services
        .extend(platform.services.iter().cloned().map(Arc::new));
    built
        .services
        .sort_by(|a, b| (&a.hostname, &a.namespace).cmp(&(&b.hostname, &b.namespace)));
    for w in &platform.workloads {
        let key = (w.namespace.clone(), w.name.clone());
        match workloads.entry(key) {
            std::collections::btree_map::Entry::Occupied(_) => built.warnings.push(format!(
                "Pod {}/{}: a WorkloadEntry of the same name is used for its proxy",
                w.namespace, w.name
            )),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(Arc::new(w.clone()));
            }
        }
    }
}
