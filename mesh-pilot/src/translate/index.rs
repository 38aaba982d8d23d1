//! `MeshIndex`: the resources of one config generation, indexed for per-proxy translation,
//! with the outbound config memoised per [`ScopeKey`].

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use mesh_api::networking::{DestinationRule, VirtualService};
use mesh_api::{Object, Resource};

use super::gateway::GatewayEntry;
use super::hosts;
use super::l4::is_l4;
use super::outbound::{self, Outbound};
use super::scope::{ScopeKey, SidecarEntry, select_sidecar};
use crate::registry::{DEFAULT_NAMESPACE, Registry, Workload, labels_match};

/// A label selector a proxy may or may not satisfy; `namespace` limits it to one namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Selector {
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub(super) struct VsEntry {
    pub namespace: String,
    pub name: String,
    pub created: String,
    /// Hosts resolved against the VirtualService's namespace.
    pub hosts: Vec<String>,
    pub spec: VirtualService,
}

#[derive(Clone, Debug)]
pub(super) struct DrEntry {
    pub namespace: String,
    pub name: String,
    pub created: String,
    pub host: String,
    pub spec: DestinationRule,
    /// Index into `MeshIndex::selectors` for a DestinationRule with a `workloadSelector`.
    pub selector: Option<usize>,
    /// The `networking.mesh.dev/retry-budget` annotation.
    pub retry_budget: Option<String>,
}

/// The resources of one config generation, indexed. Build once per change, share across
/// proxies; [`MeshIndex::outbound`] caches what proxies of the same scope share.
#[derive(Debug)]
pub struct MeshIndex {
    pub(super) registry: Arc<Registry>,
    /// Sorted by (created, namespace, name): Istio's precedence among conflicting configs.
    pub(super) virtual_services: Vec<VsEntry>,
    /// VirtualServices bound to gateways (not only `mesh`), in the same order.
    pub(super) gateway_virtual_services: Vec<VsEntry>,
    /// Sorted by (created, namespace, name).
    pub(super) gateways: Vec<GatewayEntry>,
    pub(super) destination_rules: Vec<DrEntry>,
    /// DestinationRules by (namespace, exact host), and wildcard ones by namespace; indices
    /// into `destination_rules`, oldest first.
    pub(super) dr_exact: HashMap<(String, String), Vec<usize>>,
    pub(super) dr_wildcard: HashMap<String, Vec<usize>>,
    pub(super) sidecars: Vec<SidecarEntry>,
    pub(super) selectors: Vec<Selector>,
    pub(super) selector_ids: HashMap<Selector, usize>,
    /// The PeerAuthentications and AuthorizationPolicies, for each proxy's inbound side.
    pub(super) security: Vec<Resource>,
    /// The Telemetry resources, resolved per proxy.
    pub(super) telemetry: Vec<Resource>,
    /// The LocalRateLimits, selected per proxy for its inbound listener.
    pub(super) rate_limits: Vec<Resource>,
    pub(super) warnings: Vec<String>,
    /// Per workload (namespace, name): its ports that serve a non-HTTP service port, and
    /// those that also serve an HTTP one (left to HTTP).
    inbound_ports: HashMap<(String, String), InboundPorts>,
    cache: Mutex<HashMap<ScopeKey, Arc<Outbound>>>,
}

/// The workload ports behind service ports, by how the services declare them.
#[derive(Debug, Default)]
struct InboundPorts {
    tcp: BTreeSet<u32>,
    http: BTreeSet<u32>,
    /// The hosts of the services the workload is an endpoint of.
    services: BTreeSet<String>,
}

fn ns_of<T>(o: &Object<T>) -> String {
    o.metadata
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

fn created_of<T>(o: &Object<T>) -> String {
    o.metadata.creation_timestamp.clone().unwrap_or_default()
}

impl MeshIndex {
    pub fn new<R: Borrow<Resource>>(resources: &[R], registry: Arc<Registry>) -> MeshIndex {
        let mut index = MeshIndex {
            registry,
            virtual_services: Vec::new(),
            gateway_virtual_services: Vec::new(),
            gateways: Vec::new(),
            destination_rules: Vec::new(),
            dr_exact: HashMap::new(),
            dr_wildcard: HashMap::new(),
            sidecars: Vec::new(),
            selectors: Vec::new(),
            selector_ids: HashMap::new(),
            security: Vec::new(),
            telemetry: Vec::new(),
            rate_limits: Vec::new(),
            warnings: Vec::new(),
            inbound_ports: HashMap::new(),
            cache: Mutex::new(HashMap::new()),
        };
        for r in resources {
            ignored_fields(r.borrow(), &mut index.warnings);
            match r.borrow() {
                Resource::VirtualService(vs) => {
                    let ns = ns_of(vs);
                    // Only VirtualServices bound to the mesh (no gateways, or `mesh`) apply to sidecars.
                    let spec = &vs.spec;
                    let entry = VsEntry {
                        hosts: spec.hosts.iter().map(|h| hosts::resolve(h, &ns)).collect(),
                        namespace: ns,
                        name: vs.metadata.name.clone(),
                        created: created_of(vs),
                        spec: spec.clone(),
                    };
                    if spec.gateways.iter().any(|g| g != "mesh") {
                        index.gateway_virtual_services.push(entry.clone());
                    }
                    if !spec.gateways.is_empty() && !spec.gateways.iter().any(|g| g == "mesh") {
                        continue;
                    }
                    index.virtual_services.push(entry);
                }
                Resource::DestinationRule(dr) => {
                    let ns = ns_of(dr);
                    let selector = dr
                        .spec
                        .workload_selector
                        .as_ref()
                        .filter(|s| !s.labels.is_empty())
                        .map(|s| {
                            index.selector(Selector {
                                namespace: Some(ns.clone()),
                                labels: s.labels.clone(),
                            })
                        });
                    index.destination_rules.push(DrEntry {
                        host: hosts::resolve(&dr.spec.host, &ns),
                        namespace: ns,
                        name: dr.metadata.name.clone(),
                        created: created_of(dr),
                        spec: dr.spec.clone(),
                        selector,
                        retry_budget: dr
                            .metadata
                            .annotations
                            .get(super::resilience::RETRY_BUDGET_ANNOTATION)
                            .cloned(),
                    });
                }
                Resource::Gateway(gw) => index.gateways.push(GatewayEntry {
                    namespace: ns_of(gw),
                    name: gw.metadata.name.clone(),
                    created: created_of(gw),
                    spec: gw.spec.clone(),
                }),
                Resource::Sidecar(sc) => {
                    let ns = ns_of(sc);
                    let entry = SidecarEntry::new(
                        &ns,
                        &sc.metadata.name,
                        &created_of(sc),
                        &sc.spec,
                        &mut index.warnings,
                    );
                    index.sidecars.push(entry);
                }
                Resource::PeerAuthentication(_)
                | Resource::AuthorizationPolicy(_)
                | Resource::RequestAuthentication(_) => {
                    index.security.push(r.borrow().clone());
                }
                Resource::Telemetry(_) => index.telemetry.push(r.borrow().clone()),
                Resource::LocalRateLimit(_) => index.rate_limits.push(r.borrow().clone()),
                _ => {}
            }
        }
        index
            .warnings
            .extend(crate::authz::warnings(&index.security));
        index
            .warnings
            .extend(crate::request_authn::warnings(&index.security));
        index.warnings.extend(crate::telemetry::warnings(
            &index.telemetry,
            super::ROOT_NAMESPACE,
        ));
        // Roots take their delegates' routes before anything reads them.
        let delegates = super::delegate::Delegates::of(&index.virtual_services);
        for root in index
            .virtual_services
            .iter_mut()
            .chain(index.gateway_virtual_services.iter_mut())
        {
            delegates.merge_into(root, &mut index.warnings);
        }
        index.virtual_services.sort_by(|a, b| {
            (&a.created, &a.namespace, &a.name).cmp(&(&b.created, &b.namespace, &b.name))
        });
        index.gateway_virtual_services.sort_by(|a, b| {
            (&a.created, &a.namespace, &a.name).cmp(&(&b.created, &b.namespace, &b.name))
        });
        index.gateways.sort_by(|a, b| {
            (&a.created, &a.namespace, &a.name).cmp(&(&b.created, &b.namespace, &b.name))
        });
        index.destination_rules.sort_by(|a, b| {
            (&a.created, &a.namespace, &a.name).cmp(&(&b.created, &b.namespace, &b.name))
        });
        for (i, dr) in index.destination_rules.iter().enumerate() {
            if dr.host.starts_with('*') {
                index
                    .dr_wildcard
                    .entry(dr.namespace.clone())
                    .or_default()
                    .push(i);
            } else {
                let key = (dr.namespace.clone(), dr.host.clone());
                index.dr_exact.entry(key).or_default().push(i);
            }
        }
        index.sidecars.sort_by(|a, b| {
            (&a.created, &a.namespace, &a.name).cmp(&(&b.created, &b.namespace, &b.name))
        });
        let source_labels: Vec<BTreeMap<String, String>> = index
            .virtual_services
            .iter()
            .flat_map(|vs| {
                let http = vs.spec.http.iter().flat_map(|r| &r.matches);
                let tls = vs.spec.tls.iter().flat_map(|r| &r.matches);
                let tcp = vs.spec.tcp.iter().flat_map(|r| &r.matches);
                http.map(|m| &m.source_labels)
                    .chain(tls.map(|m| &m.source_labels))
                    .chain(tcp.map(|m| &m.source_labels))
            })
            .filter(|labels| !labels.is_empty())
            .cloned()
            .collect();
        for labels in source_labels {
            index.selector(Selector {
                namespace: None,
                labels,
            });
        }
        index.inbound_ports = inbound_ports(&index.registry);
        index
            .warnings
            .extend(index.registry.warnings().iter().cloned());
        index.warnings.sort();
        index.warnings.dedup();
        index
    }

    fn selector(&mut self, s: Selector) -> usize {
        if let Some(&i) = self.selector_ids.get(&s) {
            return i;
        }
        self.selectors.push(s.clone());
        self.selector_ids.insert(s, self.selectors.len() - 1);
        self.selectors.len() - 1
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Problems found in the resources themselves (the registry's included), independent of
    /// any proxy.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The scope of a proxy running for `workload`: its namespace, Sidecar and the selectors
    /// its labels satisfy. Cheap: no allocation beyond the key.
    pub fn scope(&self, workload: &Workload) -> ScopeKey {
        let selected = self
            .selectors
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.namespace
                    .as_ref()
                    .is_none_or(|ns| *ns == workload.namespace)
                    && labels_match(&s.labels, &workload.labels)
            })
            .map(|(i, _)| i)
            .collect();
        ScopeKey {
            namespace: workload.namespace.clone(),
            sidecar: select_sidecar(&self.sidecars, &workload.namespace, &workload.labels),
            selected,
        }
    }

    /// The ports of `workload` that serve declared non-HTTP service ports (TCP, TLS, ...), its
    /// inbound listener forwards them as TCP; and those also declared HTTP by another
    /// service, which stay HTTP.
    pub fn inbound_tcp_ports(&self, workload: &Workload) -> (Vec<u32>, Vec<u32>) {
        let key = (workload.namespace.clone(), workload.name.clone());
        let Some(ports) = self.inbound_ports.get(&key) else {
            return (Vec::new(), Vec::new());
        };
        ports.tcp.iter().partition(|p| !ports.http.contains(p))
    }

    /// The hosts of the services `workload` is an endpoint of, sorted.
    pub fn inbound_services(&self, workload: &Workload) -> Vec<String> {
        let key = (workload.namespace.clone(), workload.name.clone());
        self.inbound_ports
            .get(&key)
            .map(|p| p.services.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether the Sidecar of a scope declares egress listeners the proxy binds explicitly.
    pub fn has_egress_ports(&self, scope: &ScopeKey) -> bool {
        scope
            .sidecar
            .is_some_and(|i| !self.sidecars[i].egress_ports.is_empty())
    }

    /// The outbound route table and clusters of a scope, built on first use and then shared.
    pub fn outbound(&self, scope: &ScopeKey) -> Arc<Outbound> {
        if let Some(hit) = self.cache.lock().expect("scope cache").get(scope) {
            return hit.clone();
        }
        // Built outside the lock: two proxies of a new scope may both build it; equal results.
        let built = outbound::build(self, scope);
        let mut cache = self.cache.lock().expect("scope cache");
        if let Some(hit) = cache.get(scope) {
            return hit.clone();
        }
        // Scopes of different namespaces mostly translate alike; equal configs share one copy
        // (at 1000 services one copy is megabytes, and a generation holds a scope per namespace).
        let shared = cache
            .values()
            .find(|other| ***other == built)
            .cloned()
            .unwrap_or_else(|| Arc::new(built));
        cache.insert(scope.clone(), shared.clone());
        shared
    }

    /// Every scope's outbound config built so far.
    pub(super) fn cached_outbounds(&self) -> Vec<(ScopeKey, Arc<Outbound>)> {
        let cache = self.cache.lock().expect("scope cache");
        cache.iter().map(|(k, o)| (k.clone(), o.clone())).collect()
    }

    /// Sets a scope's outbound config ahead of its first use (see `carry`).
    pub(super) fn seed_outbound(&self, scope: ScopeKey, outbound: Arc<Outbound>) {
        self.cache
            .lock()
            .expect("scope cache")
            .insert(scope, outbound);
    }

    /// How many scopes have an outbound config cached.
    pub fn cached_scopes(&self) -> usize {
        self.cache.lock().expect("scope cache").len()
    }
}

/// Which workload ports serve which kind of service port, from every service's endpoints.
fn inbound_ports(registry: &Registry) -> HashMap<(String, String), InboundPorts> {
    let mut out: HashMap<(String, String), InboundPorts> = HashMap::new();
    for svc in registry.services() {
        for e in &svc.endpoints {
            let Some(workload) = &e.workload else {
                continue;
            };
            out.entry(workload.clone())
                .or_default()
                .services
                .insert(svc.hostname.clone());
            for port in &svc.ports {
                let target = e.ports.get(&port.number).copied().unwrap_or(port.number);
                let entry = out.entry(workload.clone()).or_default();
                if is_l4(port.protocol) {
                    entry.tcp.insert(target);
                } else if port.protocol != crate::registry::Protocol::Udp {
                    entry.http.insert(target);
                }
            }
        }
    }
    out
}

/// The fields of a networking object that validate but that the mesh does not act on (what
/// `meshctl validate` warns about), as pilot's warnings. Gateways, security kinds and
/// Telemetry report theirs elsewhere.
fn ignored_fields(r: &Resource, warnings: &mut Vec<String>) {
    if !matches!(
        r,
        Resource::VirtualService(_)
            | Resource::DestinationRule(_)
            | Resource::ServiceEntry(_)
            | Resource::WorkloadEntry(_)
            | Resource::WorkloadGroup(_)
            | Resource::Sidecar(_)
    ) {
        return;
    }
    for w in mesh_api::validate::warnings(r) {
        warnings.push(format!(
            "{} {}/{}: {}: {}",
            r.kind(),
            r.namespace().unwrap_or("default"),
            r.name(),
            w.field,
            w.reason
        ));
    }
}
