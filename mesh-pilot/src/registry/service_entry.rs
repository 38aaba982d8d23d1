//! ServiceEntry + WorkloadEntry into services, endpoints and workloads, with Istio's rules.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mesh_api::networking::{self, ServiceEntry, WorkloadEntry};
use mesh_api::{Object, Resource};

use super::DEFAULT_NAMESPACE;
use super::model::{
    Endpoint, Location, Protocol, Resolution, Service, ServiceOrigin, ServicePort, Workload,
    has_sidecar, labels_match, spiffe_id,
};
use super::selection::WorkloadIndex;

/// Service account of a workload that names none (Kubernetes' default account).
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

pub(super) struct Built {
    pub services: Vec<Arc<Service>>,
    /// ServiceEntry `subjectAltNames` by (hostname, namespace), where set.
    pub subject_alt_names: BTreeMap<(String, String), Vec<String>>,
    /// What this was built from, for the next build.
    pub sources: Sources,
    pub warnings: Vec<String>,
}

/// A ServiceEntry and the services it gave, one per host.
type BuiltEntry = (Arc<Resource>, Vec<Arc<Service>>);

/// A workload that appeared, changed or went: its namespace and (old or new) labels.
type Moved = (String, BTreeMap<String, String>);

/// The objects a ServiceEntry registry was built from and what each gave, so that the next
/// build reuses the services of every ServiceEntry that is unchanged and whose selection no
/// changed WorkloadEntry enters or leaves. At 1000 entries over 10000 WorkloadEntries that
/// turns a rebuild of every service into a rebuild of the changed ones.
#[derive(Clone, Debug, Default)]
pub(super) struct Sources {
    trust_domain: String,
    /// WorkloadEntries by (namespace, name).
    workload_entries: HashMap<(String, String), Arc<Resource>>,
    /// ServiceEntries by (namespace, name), with their services, one per host.
    service_entries: HashMap<(String, String), BuiltEntry>,
    /// The workloads of the WorkloadEntries.
    pub workloads: WorkloadIndex,
}

fn namespace_of<T>(o: &Object<T>) -> String {
    o.metadata
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

fn created_of<T>(o: &Object<T>) -> String {
    o.metadata.creation_timestamp.clone().unwrap_or_default()
}

/// The same object, wherever it was read from (see `Resource::same_content`).
fn same(a: &Arc<Resource>, b: &Arc<Resource>) -> bool {
    Arc::ptr_eq(a, b) || a.same_content(b)
}

/// The services and workloads of `resources`, reusing from `previous` what did not change.
pub(super) fn from_resources(
    resources: &[Arc<Resource>],
    trust_domain: &str,
    previous: Option<&Sources>,
) -> Built {
    let previous = previous.filter(|p| p.trust_domain == trust_domain);
    let mut workload_entries = HashMap::new();
    let mut entries = Vec::new();
    for r in resources {
        match &**r {
            Resource::WorkloadEntry(we) => {
                workload_entries.insert((namespace_of(we), we.metadata.name.clone()), r.clone());
            }
            Resource::ServiceEntry(se) => entries.push((r, se.as_ref())),
            _ => {}
        }
    }
    let (workloads, moved) = workloads_of(&workload_entries, trust_domain, previous);
    // Istio resolves a host declared twice in a namespace in favour of the oldest entry.
    entries.sort_by_key(|(_, se)| (created_of(se), namespace_of(se), se.metadata.name.clone()));

    let mut warnings = Vec::new();
    let mut services: BTreeMap<(String, String), Arc<Service>> = BTreeMap::new();
    let mut subject_alt_names = BTreeMap::new();
    let mut service_entries = HashMap::new();
    for (r, se) in entries {
        let ns = namespace_of(se);
        let key = (ns.clone(), se.metadata.name.clone());
        let reused = previous
            .and_then(|p| p.service_entries.get(&key))
            .filter(|(before, _)| same(before, r) && !selection_moved(se, &ns, &moved))
            .map(|(_, built)| built.clone());
        let built = reused.unwrap_or_else(|| {
            se.spec
                .hosts
                .iter()
                .map(|host| Arc::new(service(se, host, &ns, &workloads, trust_domain)))
                .collect()
        });
        for (host, svc) in se.spec.hosts.iter().zip(&built) {
            let host_key = (host.clone(), ns.clone());
            if let Some(first) = services.get(&host_key) {
                warnings.push(format!(
                    "ServiceEntry {ns}/{}: host {host} is already declared by ServiceEntry {ns}/{}; ignored",
                    se.metadata.name, first.origin.name
                ));
                continue;
            }
            if !se.spec.subject_alt_names.is_empty() {
                subject_alt_names.insert(host_key.clone(), se.spec.subject_alt_names.clone());
            }
            services.insert(host_key, svc.clone());
        }
        service_entries.insert(key, (r.clone(), built));
    }
    Built {
        services: services.into_values().collect(),
        subject_alt_names,
        sources: Sources {
            trust_domain: trust_domain.to_string(),
            workload_entries,
            service_entries,
            workloads,
        },
        warnings,
    }
}

/// The workloads of `entries`, from `previous`'s where the WorkloadEntry is unchanged, and the
/// (namespace, labels) of every workload that appeared, changed or went (old and new labels).
fn workloads_of(
    entries: &HashMap<(String, String), Arc<Resource>>,
    trust_domain: &str,
    previous: Option<&Sources>,
) -> (WorkloadIndex, Vec<Moved>) {
    let Some(previous) = previous else {
        let mut index = WorkloadIndex::default();
        for r in entries.values() {
            if let Resource::WorkloadEntry(we) = &**r {
                index.insert(workload(we, trust_domain));
            }
        }
        return (index, Vec::new());
    };
    let mut index = previous.workloads.clone();
    let mut moved = Vec::new();
    for key in previous.workload_entries.keys() {
        if !entries.contains_key(key)
            && let Some(gone) = index.remove(key)
        {
            moved.push((gone.namespace.clone(), gone.labels.clone()));
        }
    }
    for (key, r) in entries {
        if previous
            .workload_entries
            .get(key)
            .is_some_and(|before| same(before, r))
        {
            continue;
        }
        if let Some(before) = index.remove(key) {
            moved.push((before.namespace.clone(), before.labels.clone()));
        }
        if let Resource::WorkloadEntry(we) = &**r {
            let w = workload(we, trust_domain);
            moved.push((w.namespace.clone(), w.labels.clone()));
            index.insert(w);
        }
    }
    (index, moved)
}

/// Whether a workload that appeared, changed or went is (or was) selected by `se`.
fn selection_moved(se: &Object<ServiceEntry>, namespace: &str, moved: &[Moved]) -> bool {
    se.spec.workload_selector.as_ref().is_some_and(|sel| {
        moved
            .iter()
            .any(|(ns, labels)| ns == namespace && labels_match(&sel.labels, labels))
    })
}

fn workload(we: &Object<WorkloadEntry>, trust_domain: &str) -> Workload {
    let ns = namespace_of(we);
    let sa = service_account(&we.spec);
    Workload {
        name: we.metadata.name.clone(),
        identity: spiffe_id(trust_domain, &ns, &sa),
        namespace: ns,
        labels: we.spec.labels.clone(),
        service_account: sa,
        address: we.spec.address.clone(),
        ports: we.spec.ports.clone(),
        locality: we.spec.locality.clone(),
        network: we.spec.network.clone(),
        weight: we.spec.weight.filter(|w| *w > 0).unwrap_or(1),
    }
}

fn service_account(we: &WorkloadEntry) -> String {
    we.service_account
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_string())
}

fn service(
    se: &Object<ServiceEntry>,
    host: &str,
    ns: &str,
    workloads: &WorkloadIndex,
    trust_domain: &str,
) -> Service {
    let spec = &se.spec;
    let mut ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .map(|p| ServicePort {
            name: p.name.clone(),
            number: p.number,
            protocol: Protocol::from_canonical(p.resolved_protocol()),
            target_port: p.target_port,
        })
        .collect();
    ports.sort_by_key(|p| p.number);
    let resolution = match spec.resolution {
        networking::Resolution::None => Resolution::Passthrough,
        networking::Resolution::Static => Resolution::Static,
        networking::Resolution::Dns => Resolution::Dns,
        networking::Resolution::DnsRoundRobin => Resolution::DnsRoundRobin,
    };

    let mut endpoints: Vec<Endpoint> = match &spec.workload_selector {
        // A selector picks WorkloadEntries of the entry's own namespace; inline endpoints
        // are then not used (Istio's validation forbids both).
        Some(sel) => workloads
            .select(ns, &sel.labels)
            .map(|w| Endpoint {
                address: w.address.clone(),
                ports: endpoint_ports(&ports, &w.ports),
                labels: w.labels.clone(),
                service_account: w.service_account.clone(),
                identity: w.identity.clone(),
                locality: w.locality.clone(),
                network: w.network.clone(),
                weight: w.weight,
                sidecar: has_sidecar(&w.labels, true),
                workload: Some((w.namespace.clone(), w.name.clone())),
            })
            .collect(),
        None => spec
            .endpoints
            .iter()
            .map(|e| {
                // An inline endpoint names its identity or has none (Istio gives it no
                // service account): a default one would let any workload running as
                // `default` pass for it.
                let sa = e.service_account.clone().unwrap_or_default();
                Endpoint {
                    address: e.address.clone(),
                    ports: endpoint_ports(&ports, &e.ports),
                    labels: e.labels.clone(),
                    identity: if sa.is_empty() {
                        String::new()
                    } else {
                        spiffe_id(trust_domain, ns, &sa)
                    },
                    service_account: sa,
                    locality: e.locality.clone(),
                    network: e.network.clone(),
                    weight: e.weight.filter(|w| *w > 0).unwrap_or(1),
                    sidecar: has_sidecar(&e.labels, false),
                    workload: None,
                }
            })
            .collect(),
    };
    // A DNS entry without endpoints is reached at its own name (not a wildcard).
    if endpoints.is_empty()
        && spec.workload_selector.is_none()
        && matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
        && !host.starts_with('*')
    {
        endpoints.push(Endpoint {
            address: host.to_string(),
            ports: endpoint_ports(&ports, &BTreeMap::new()),
            weight: 1,
            ..Default::default()
        });
    }
    endpoints.sort_by(|a, b| (&a.address, &a.workload).cmp(&(&b.address, &b.workload)));

    Service {
        hostname: host.to_string(),
        namespace: ns.to_string(),
        addresses: spec.addresses.clone(),
        ports,
        export_to: spec.export_to.clone(),
        resolution,
        location: match spec.location.unwrap_or_default() {
            networking::Location::MeshExternal => Location::MeshExternal,
            networking::Location::MeshInternal => Location::MeshInternal,
        },
        endpoints,
        origin: ServiceOrigin {
            kind: "ServiceEntry",
            namespace: ns.to_string(),
            name: se.metadata.name.clone(),
        },
        created: created_of(se),
    }
}

/// Istio's endpoint port for each service port: the endpoint's `ports[portName]`, else the
/// port's `targetPort`, else the port number itself.
fn endpoint_ports(ports: &[ServicePort], named: &BTreeMap<String, u32>) -> BTreeMap<u32, u32> {
    ports
        .iter()
        .map(|p| {
            let port = named
                .get(&p.name)
                .copied()
                .or(p.target_port)
                .unwrap_or(p.number);
            (p.number, port)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::registry::{Protocol, Registry, Resolution};

    fn load(yaml: &str) -> Vec<mesh_api::Resource> {
        let (r, errors) = mesh_api::load_str("test.yaml", yaml);
        assert!(errors.is_empty(), "{errors:?}");
        r
    }

    const SELECTED: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP, targetPort: 9090}
  - {number: 9443, name: grpc-admin}
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: bookinfo}
spec:
  address: 198.18.0.11
  labels: {app: reviews, version: v1}
  serviceAccount: bookinfo-reviews
  ports: {http: 19081}
  locality: us-east/zone-a
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: bookinfo}
spec:
  address: 198.18.0.12
  labels: {app: reviews, version: v2, security.istio.io/tlsMode: disabled}
  weight: 3
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-other, namespace: other}
spec:
  address: 198.18.0.13
  labels: {app: reviews}
";

    #[test]
    fn selector_picks_workload_entries_of_the_same_namespace() {
        let reg = Registry::build(&load(SELECTED));
        let svc = reg
            .services_for_host("reviews.bookinfo.svc.cluster.local")
            .next()
            .unwrap();
        assert_eq!(svc.namespace, "bookinfo");
        assert_eq!(svc.resolution, Resolution::Static);
        assert_eq!(svc.ports[0].protocol, Protocol::Http);
        assert_eq!(svc.ports[1].protocol, Protocol::Grpc);
        let addrs: Vec<_> = svc.endpoints.iter().map(|e| e.address.as_str()).collect();
        assert_eq!(addrs, ["198.18.0.11", "198.18.0.12"]);

        let v1 = &svc.endpoints[0];
        // ports[name] wins over targetPort; targetPort over the number.
        assert_eq!(v1.ports[&9080], 19081);
        assert_eq!(v1.ports[&9443], 9443);
        assert_eq!(
            v1.identity,
            "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"
        );
        assert_eq!(v1.locality.as_deref(), Some("us-east/zone-a"));
        assert!(v1.sidecar);
        assert_eq!(v1.weight, 1);

        let v2 = &svc.endpoints[1];
        assert_eq!(v2.ports[&9080], 9090);
        assert_eq!(v2.service_account, "default");
        assert!(
            !v2.sidecar,
            "tlsMode label other than istio means no sidecar"
        );
        assert_eq!(v2.weight, 3);
    }

    #[test]
    fn workloads_are_proxy_identities() {
        let reg = Registry::build_with_trust_domain(&load(SELECTED), "example.org");
        let w = reg.workload("reviews-v1", "bookinfo").unwrap();
        assert_eq!(w.address, "198.18.0.11");
        assert_eq!(w.labels["version"], "v1");
        assert_eq!(w.ports["http"], 19081);
        assert_eq!(
            w.identity,
            "spiffe://example.org/ns/bookinfo/sa/bookinfo-reviews"
        );
        assert!(reg.workload("reviews-v1", "other").is_none());
        assert_eq!(reg.workloads().count(), 3);
    }

    #[test]
    fn inline_endpoints_and_dns() {
        let reg = Registry::build(&load(
            "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  resolution: DNS
  ports: [{number: 443, name: https, protocol: HTTPS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.internal]
  resolution: STATIC
  exportTo: [.]
  ports: [{number: 5432, name: tcp, protocol: TCP, targetPort: 6432}]
  endpoints:
  - {address: 198.18.1.2, labels: {security.istio.io/tlsMode: istio}, serviceAccount: db}
  - {address: 198.18.1.1, ports: {tcp: 7000}}
",
        ));
        let ext = reg.services_for_host("api.example.com").next().unwrap();
        assert_eq!(ext.namespace, "default");
        assert_eq!(ext.endpoints.len(), 1);
        assert_eq!(ext.endpoints[0].address, "api.example.com");
        assert_eq!(ext.endpoints[0].ports[&443], 443);

        let db = reg.services_for_host("db.internal").next().unwrap();
        assert_eq!(db.export_to, ["."]);
        assert_eq!(db.endpoints[0].address, "198.18.1.1");
        assert_eq!(db.endpoints[0].ports[&5432], 7000);
        assert!(!db.endpoints[0].sidecar);
        assert_eq!(
            db.endpoints[0].identity, "",
            "no serviceAccount, no identity"
        );
        assert_eq!(db.endpoints[1].ports[&5432], 6432);
        assert!(db.endpoints[1].sidecar);
        assert_eq!(
            db.endpoints[1].identity,
            "spiffe://cluster.local/ns/default/sa/db"
        );
    }

    #[test]
    fn duplicate_host_in_a_namespace_keeps_the_oldest() {
        let reg = Registry::build(&load(
            "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b, creationTimestamp: '2024-01-02T00:00:00Z'}
spec:
  hosts: [x.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a, creationTimestamp: '2024-01-03T00:00:00Z'}
spec:
  hosts: [x.example.com]
  ports: [{number: 81, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: c, namespace: other}
spec:
  hosts: [x.example.com]
  ports: [{number: 82, name: http, protocol: HTTP}]
",
        ));
        let all: Vec<_> = reg.services_for_host("x.example.com").collect();
        assert_eq!(all.len(), 2);
        let def = all.iter().find(|s| s.namespace == "default").unwrap();
        assert_eq!(def.origin.name, "b");
        assert_eq!(def.ports[0].number, 80);
        assert_eq!(reg.warnings().len(), 1);
    }
}
