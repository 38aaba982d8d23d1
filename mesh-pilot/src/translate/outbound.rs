//! The outbound config shared by every proxy of one scope: the `outbound` route table (one
//! virtual host per visible service HTTP port), the clusters (per port and per subset), and
//! the layer 4 routes of the other ports (see [`super::l4`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use mesh_api::networking::{self as api, HttpMatchRequest, OutboundMode, Subset};
use mesh_proto::config::v1::cluster::Discovery;
use mesh_proto::config::v1::{
    Cluster, Endpoint, OutboundTrafficPolicy, RouteTable, TcpRoute, VirtualHost,
};

use super::index::{DrEntry, MeshIndex, Selector, VsEntry};
use super::l4::{self, EgressListener};
use super::routes::{self, RouteEnv};
use super::scope::{ROOT_NAMESPACE, ScopeKey, SidecarEntry};
use super::{hosts, policy, resilience};
use crate::authz::MtlsDisabled;
use crate::registry::{Protocol, Resolution, Service, ServicePort, export_visible, labels_match};

/// Name of the outbound route table and listener.
pub const OUTBOUND: &str = "outbound";

/// What every proxy of a scope shares.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outbound {
    pub route_table: RouteTable,
    /// Sorted by name.
    pub clusters: Vec<Cluster>,
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Layer 4 routes of the transparent outbound listener, for every visible non-HTTP port.
    pub tcp_routes: Vec<TcpRoute>,
    /// The Sidecar's egress listeners bound explicitly, sorted by address.
    pub egress_listeners: Vec<EgressListener>,
    /// Sorted, without duplicates.
    pub warnings: Vec<String>,
}

/// Istio's cluster name `outbound|PORT|SUBSET|HOST`.
pub fn cluster_name(port: u32, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// A DestinationRule in force for one host, after Istio's merge of same-host rules.
struct DrView<'a> {
    top: Option<&'a api::TrafficPolicy>,
    subsets: Vec<&'a Subset>,
    /// The retry budget annotation: (DestinationRule "ns/name", value).
    retry_budget: Option<(String, &'a str)>,
}

pub(super) struct Builder<'a> {
    registry: &'a crate::registry::Registry,
    pub(super) scope: &'a ScopeKey,
    selector_ids: &'a HashMap<Selector, usize>,
    pub(super) sidecar: Option<&'a SidecarEntry>,
    /// Visible services by hostname (one per host).
    pub(super) services: BTreeMap<&'a str, &'a Service>,
    /// Visible VirtualServices in Istio's order for this namespace.
    virtual_services: Vec<&'a VsEntry>,
    /// The DestinationRule in force for each visible service.
    drs: HashMap<&'a str, DrView<'a>>,
    /// Visible VirtualServices by exact host (the first wins), and the wildcard hosts.
    vs_exact: HashMap<&'a str, &'a VsEntry>,
    vs_wildcard: Vec<(&'a str, &'a VsEntry)>,
    /// Which workloads take plaintext only, when a PeerAuthentication sets DISABLE.
    mtls_disabled: Option<MtlsDisabled<'a>>,
    pub(super) warnings: Vec<String>,
}

impl<'a> Builder<'a> {
    pub(super) fn new(index: &'a MeshIndex, scope: &'a ScopeKey) -> Builder<'a> {
        let sidecar = scope.sidecar.map(|i| &index.sidecars[i]);
        let ns = scope.namespace.as_str();
        let imports = |svc_ns: &str, host: &str| sidecar.is_none_or(|s| s.imports(svc_ns, host));

        // One service per hostname: the proxy's own namespace first, else the oldest.
        let mut services: BTreeMap<&str, &Service> = BTreeMap::new();
        for svc in index.registry.services() {
            if !svc.visible_from(ns) || !imports(&svc.namespace, &svc.hostname) {
                continue;
            }
            let better = |old: &Service| {
                old.namespace != ns
                    && (svc.namespace == ns
                        || (&svc.created, &svc.namespace) < (&old.created, &old.namespace))
            };
            match services.get(svc.hostname.as_str()) {
                Some(old) if !better(old) => {}
                _ => {
                    services.insert(&svc.hostname, svc);
                }
            }
        }

        // Istio's VirtualServicesForGateway order: exported privately to this namespace, then
        // to it by name, then public; by age within each group.
        let group = |vs: &VsEntry| {
            let e = &vs.spec.export_to;
            if e.is_empty() || e.iter().any(|x| x == "*") {
                2
            } else if vs.namespace == ns {
                0
            } else {
                1
            }
        };
        let mut virtual_services: Vec<&VsEntry> = index
            .virtual_services
            .iter()
            .filter(|vs| export_visible(&vs.spec.export_to, &vs.namespace, ns))
            .filter(|vs| vs.hosts.iter().any(|h| imports(&vs.namespace, h)))
            .collect();
        virtual_services.sort_by_key(|vs| group(vs)); // stable: age order kept within groups
        let mut vs_exact = HashMap::new();
        let mut vs_wildcard = Vec::new();
        for vs in &virtual_services {
            for h in &vs.hosts {
                if h.starts_with('*') {
                    vs_wildcard.push((h.as_str(), *vs));
                } else {
                    vs_exact.entry(h.as_str()).or_insert(*vs);
                }
            }
        }
        let drs = services
            .iter()
            .filter_map(|(host, svc)| Some((*host, Self::find_dr(index, scope, svc)?)))
            .collect();
        Builder {
            registry: &index.registry,
            scope,
            selector_ids: &index.selector_ids,
            sidecar,
            services,
            virtual_services,
            drs,
            vs_exact,
            vs_wildcard,
            mtls_disabled: MtlsDisabled::new(&index.security, ROOT_NAMESPACE),
            warnings: Vec::new(),
        }
    }

    /// The VirtualService for a host: the first with the exact host, else the first with the
    /// most specific wildcard covering it.
    pub(super) fn virtual_service(&self, host: &str) -> Option<&'a VsEntry> {
        if let Some(vs) = self.vs_exact.get(host) {
            return Some(vs);
        }
        let mut best: Option<(usize, &VsEntry)> = None;
        for (h, vs) in &self.vs_wildcard {
            let s = hosts::specificity(h);
            if hosts::covers(h, host) && best.is_none_or(|(b, _)| s > b) {
                best = Some((s, vs));
            }
        }
        best.map(|(_, vs)| vs)
    }

    /// Istio's DestinationRule lookup for a service: the proxy's namespace, then the
    /// service's, then the root namespace; the most specific host within a namespace, a
    /// rule selecting this workload before one without selector; same-host rules merge
    /// (subsets of later rules are added, the first traffic policy wins).
    fn find_dr(index: &'a MeshIndex, scope: &ScopeKey, svc: &Service) -> Option<DrView<'a>> {
        let ns = scope.namespace.as_str();
        let applies = |dr: &DrEntry| {
            export_visible(&dr.spec.export_to, &dr.namespace, ns)
                && dr.selector.is_none_or(|i| scope.selected.contains(&i))
                && hosts::covers(&dr.host, &svc.hostname)
        };
        for candidate_ns in [ns, svc.namespace.as_str(), ROOT_NAMESPACE] {
            let exact = index
                .dr_exact
                .get(&(candidate_ns.to_string(), svc.hostname.clone()));
            let wild = index.dr_wildcard.get(candidate_ns);
            let mut ids: Vec<usize> = exact.into_iter().chain(wild).flatten().copied().collect();
            ids.sort_unstable();
            let rules: Vec<&DrEntry> = ids
                .into_iter()
                .map(|i| &index.destination_rules[i])
                .filter(|dr| applies(dr))
                .collect();
            let Some(best) = rules
                .iter()
                .map(|dr| (hosts::specificity(&dr.host), dr.selector.is_some()))
                .max()
            else {
                continue;
            };
            let chosen: Vec<&DrEntry> = rules
                .into_iter()
                .filter(|dr| (hosts::specificity(&dr.host), dr.selector.is_some()) == best)
                .collect();
            let mut subsets: Vec<&Subset> = Vec::new();
            for dr in &chosen {
                for s in &dr.spec.subsets {
                    if !subsets.iter().any(|x| x.name == s.name) {
                        subsets.push(s);
                    }
                }
            }
            return Some(DrView {
                top: chosen.iter().find_map(|dr| dr.spec.traffic_policy.as_ref()),
                subsets,
                retry_budget: chosen.iter().find_map(|dr| {
                    let value = dr.retry_budget.as_deref()?;
                    Some((format!("{}/{}", dr.namespace, dr.name), value))
                }),
            });
        }
        None
    }

    /// Ports routed by HTTP attributes: HTTP protocols, and Unknown (Istio sniffs those).
    pub(super) fn routable(port: &ServicePort) -> bool {
        port.protocol.is_http() || port.protocol == Protocol::Unknown
    }

    /// Ports with clusters: every one the proxy carries (all but UDP).
    fn has_clusters(port: &ServicePort) -> bool {
        port.protocol != Protocol::Udp
    }

    /// The cluster of a VirtualService destination: its host resolved in `vs_namespace`, its
    /// port, else the service's only port, else `port`; with the port's protocol.
    pub(super) fn destination(
        &self,
        dest: &api::Destination,
        vs_namespace: &str,
        port: u32,
    ) -> Result<(String, Protocol), String> {
        let host = hosts::resolve(&dest.host, vs_namespace);
        let svc = self
            .services
            .get(host.as_str())
            .ok_or_else(|| format!("destination host {host} is not a service visible here"))?;
        let port = match &dest.port {
            Some(p) => p.number,
            None if svc.ports.len() == 1 => svc.ports[0].number,
            None => port,
        };
        let sp = svc
            .port(port)
            .ok_or_else(|| format!("destination {host} has no port {port}"))?;
        if !Self::has_clusters(sp) {
            return Err(format!(
                "destination {host} port {port} is UDP, not proxied"
            ));
        }
        let subset = dest.subset.as_deref().unwrap_or("");
        if !subset.is_empty() {
            let dr = self.drs.get(svc.hostname.as_str());
            if !dr.is_some_and(|d| d.subsets.iter().any(|s| s.name == subset)) {
                return Err(format!(
                    "subset {subset} of {host} is not defined by a DestinationRule visible here"
                ));
            }
        }
        Ok((cluster_name(port, subset, &svc.hostname), sp.protocol))
    }

    /// Whether a route match's source conditions hold for the proxies of this scope: only the
    /// `mesh` gateway, the proxy's namespace, the proxy's labels.
    pub(super) fn source_applies(
        &self,
        gateways: &[String],
        source_namespace: Option<&String>,
        source_labels: &BTreeMap<String, String>,
    ) -> bool {
        if !gateways.is_empty() && !gateways.iter().any(|g| g == "mesh") {
            return false;
        }
        if source_namespace.is_some_and(|ns| *ns != self.scope.namespace) {
            return false;
        }
        if source_labels.is_empty() {
            return true;
        }
        let sel = Selector {
            namespace: None,
            labels: source_labels.clone(),
        };
        self.selector_ids
            .get(&sel)
            .is_some_and(|i| self.scope.selected.contains(i))
    }

    pub(super) fn clusters_of(&mut self, svc: &'a Service, out: &mut Vec<Cluster>) {
        let dr = self
            .drs
            .get(svc.hostname.as_str())
            .map(|d| (d.top, d.subsets.clone(), d.retry_budget.clone()));
        for port in svc.ports.iter().filter(|p| Self::has_clusters(p)) {
            let (top, subsets, budget) = match &dr {
                Some((top, subsets, budget)) => (*top, subsets.as_slice(), budget.as_ref()),
                None => (None, &[][..], None),
            };
            let add = |subset: Option<&Subset>, warnings: &mut Vec<String>| {
                let name = cluster_name(port.number, subset.map_or("", |s| &s.name), &svc.hostname);
                let sans = self.registry.subject_alt_names(svc);
                let mut cluster = Cluster {
                    name: name.clone(),
                    endpoints: endpoints(
                        svc,
                        sans,
                        port,
                        subset.map(|s| &s.labels),
                        self.mtls_disabled.as_ref(),
                        &name,
                        warnings,
                    ),
                    discovery: discovery(svc) as i32,
                    ..Default::default()
                };
                let effective = policy::merge(
                    top,
                    subset.and_then(|s| s.traffic_policy.as_ref()),
                    port.number,
                );
                policy::apply(&mut cluster, &effective, port.protocol, &name, warnings);
                policy::auto_sni(&mut cluster, &svc.hostname);
                if let Some((origin, value)) = budget {
                    cluster.retry_budget =
                        resilience::retry_budget(value, &format!("{origin} ({name})"), warnings);
                }
                cluster
            };
            out.push(add(None, &mut self.warnings));
            for s in subsets {
                out.push(add(Some(s), &mut self.warnings));
            }
        }
    }

    fn virtual_hosts_of(&mut self, svc: &'a Service, out: &mut Vec<VirtualHost>) {
        let http_ports: Vec<&ServicePort> =
            svc.ports.iter().filter(|p| Self::routable(p)).collect();
        for p in svc.ports.iter().filter(|p| !Self::has_clusters(p)) {
            self.warnings.push(format!(
                "{} {}/{}: port {} ({}) of {}: UDP is not proxied; skipped",
                svc.origin.kind,
                svc.origin.namespace,
                svc.origin.name,
                p.number,
                p.protocol.as_str(),
                svc.hostname
            ));
        }
        let vs = self.virtual_service(&svc.hostname);
        for port in &http_ports {
            let bare = port.number == 80 || http_ports.len() == 1;
            let routes = match vs {
                Some(vs) => {
                    let env = Env {
                        b: self,
                        vs,
                        port: port.number,
                        origin: format!("VirtualService {}/{}", vs.namespace, vs.name),
                    };
                    let mut w = Vec::new();
                    let r = routes::http_routes(&vs.spec.http, &env, &mut w);
                    self.warnings.extend(w);
                    r
                }
                None => vec![routes::default_route(cluster_name(
                    port.number,
                    "",
                    &svc.hostname,
                ))],
            };
            let mut domains =
                hosts::domains(&svc.hostname, port.number, &self.scope.namespace, bare);
            domains.extend(hosts::address_domains(&svc.addresses, port.number));
            out.push(VirtualHost {
                name: format!("{}:{}", svc.hostname, port.number),
                domains,
                routes,
            });
        }
    }
}

/// The route environment of one VirtualService at one port.
struct Env<'b, 'a> {
    b: &'b Builder<'a>,
    vs: &'a VsEntry,
    port: u32,
    origin: String,
}

impl RouteEnv for Env<'_, '_> {
    fn cluster(&self, dest: &api::Destination) -> Result<String, String> {
        let (cluster, protocol) = self.b.destination(dest, &self.vs.namespace, self.port)?;
        // An HTTPS port takes HTTP routes too: the DestinationRule's TLS (ISTIO_MUTUAL to an
        // egress gateway's HTTPS server, or SIMPLE origination) carries the requests.
        if !(protocol.is_http() || matches!(protocol, Protocol::Unknown | Protocol::Https)) {
            let port = cluster.split('|').nth(1).unwrap_or_default();
            return Err(format!(
                "destination {} port {port} is {}, not HTTP",
                hosts::resolve(&dest.host, &self.vs.namespace),
                protocol.as_str()
            ));
        }
        Ok(cluster)
    }

    fn applies(&self, m: &HttpMatchRequest) -> bool {
        self.b
            .source_applies(&m.gateways, m.source_namespace.as_ref(), &m.source_labels)
    }

    fn port(&self) -> u32 {
        self.port
    }

    fn origin(&self) -> &str {
        &self.origin
    }
}

/// `HOST:PORT`, with brackets for IPv6.
pub fn socket_addr(host: &str, port: u32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[allow(clippy::too_many_arguments)]
fn endpoints(
    svc: &Service,
    subject_alt_names: &[String],
    port: &ServicePort,
    subset: Option<&BTreeMap<String, String>>,
    mtls_disabled: Option<&MtlsDisabled<'_>>,
    cluster: &str,
    warnings: &mut Vec<String>,
) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = svc
        .endpoints
        .iter()
        .filter(|e| subset.is_none_or(|s| labels_match(s, &e.labels)))
        .filter_map(|e| {
            if e.address.starts_with("unix://") {
                warnings.push(format!(
                    "{cluster}: unix socket endpoint {} is not supported; skipped",
                    e.address
                ));
                return None;
            }
            // Names are resolved by the proxy in DNS clusters only; elsewhere a name would
            // make it refuse the whole config: leave it out and say so.
            let host = e.address.trim_start_matches('[').trim_end_matches(']');
            if !resolves_names(svc) && host.parse::<std::net::IpAddr>().is_err() {
                warnings.push(format!(
                    "{cluster}: endpoint {} is a DNS name, but the service's resolution is not DNS; skipped",
                    e.address
                ));
                return None;
            }
            let p = e.ports.get(&port.number).copied().unwrap_or(port.number);
            // A workload whose PeerAuthentication is DISABLE on this port accepts plaintext
            // only: its callers' auto mTLS must not start TLS (Istio's `mtlsChecker`).
            let namespace = e.workload.as_ref().map_or(&svc.namespace, |(ns, _)| ns);
            let plaintext_only = mtls_disabled.is_some_and(|d| d.on(namespace, &e.labels, p));
            Some(Endpoint {
                address: socket_addr(&e.address, p),
                labels: e
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                weight: e.weight,
                identities: identities(e, subject_alt_names),
                sidecar: e.sidecar && !plaintext_only,
            })
        })
        .collect();
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out
}

/// Whether the proxy resolves the endpoint names of `svc` (ServiceEntry `resolution: DNS`
/// or `DNS_ROUND_ROBIN`, a Kubernetes ExternalName).
fn resolves_names(svc: &Service) -> bool {
    matches!(svc.resolution, Resolution::Dns | Resolution::DnsRoundRobin)
}

/// Envoy's cluster type for a service's resolution: STRICT_DNS for `DNS`, LOGICAL_DNS for
/// `DNS_ROUND_ROBIN`, ORIGINAL_DST for `NONE` without endpoints (Istio's), static addresses
/// otherwise.
fn discovery(svc: &Service) -> Discovery {
    match svc.resolution {
        Resolution::Dns => Discovery::StrictDns,
        Resolution::DnsRoundRobin => Discovery::LogicalDns,
        Resolution::Passthrough if svc.endpoints.is_empty() => Discovery::OriginalDst,
        Resolution::Static | Resolution::Passthrough => Discovery::Static,
    }
}

/// The names a mesh mTLS peer at `e` may present: its workload's identity, then the
/// service's ServiceEntry `subjectAltNames` as written, without duplicates.
fn identities(e: &crate::registry::Endpoint, subject_alt_names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(1 + subject_alt_names.len());
    for id in std::iter::once(&e.identity).chain(subject_alt_names) {
        if !id.is_empty() && !out.contains(id) {
            out.push(id.clone());
        }
    }
    out
}

/// Builds the outbound config of `scope`.
pub(super) fn build(index: &MeshIndex, scope: &ScopeKey) -> Outbound {
    let mut b = Builder::new(index, scope);
    let services: Vec<&Service> = b.services.values().copied().collect();
    let mut clusters = Vec::new();
    let mut vhosts = Vec::new();
    for svc in services {
        b.clusters_of(svc, &mut clusters);
        b.virtual_hosts_of(svc, &mut vhosts);
    }
    let (tcp_routes, egress_listeners, blackhole) = l4::build(&mut b);
    clusters.extend(blackhole);
    for vs in &b.virtual_services {
        for h in &vs.hosts {
            if !h.starts_with('*') && !b.services.contains_key(h.as_str()) {
                b.warnings.push(format!(
                    "VirtualService {}/{}: host {h} is not a service visible here; ignored for it",
                    vs.namespace, vs.name
                ));
            }
        }
    }
    vhosts.sort_by(|a, b| a.name.cmp(&b.name));
    // A domain belongs to the first virtual host that claims it (short forms may collide).
    let mut claimed = HashSet::new();
    for vh in &mut vhosts {
        vh.domains.retain(|d| claimed.insert(d.clone()));
    }
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    let mut warnings = b.warnings;
    warnings.sort();
    warnings.dedup();
    Outbound {
        route_table: RouteTable {
            name: OUTBOUND.to_string(),
            virtual_hosts: vhosts,
        },
        clusters,
        outbound_traffic_policy: match b.sidecar.map(|s| s.mode).unwrap_or_default() {
            OutboundMode::AllowAny => OutboundTrafficPolicy::AllowAny,
            OutboundMode::RegistryOnly => OutboundTrafficPolicy::RegistryOnly,
        },
        tcp_routes,
        egress_listeners,
        warnings,
    }
}
