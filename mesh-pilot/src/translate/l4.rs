//! Layer 4 routes of the outbound side: VirtualService `tls` and `tcp` routes and the default
//! route of every non-HTTP service port, for the transparent outbound listener and for the
//! Sidecar's explicit egress listeners.
//!
//! Istio's semantics, per service port (`buildSidecarOutboundTLSFilterChainOpts` and
//! `...TCPFilterChainOpts`):
//! - TLS and HTTPS ports try the VirtualService's `tls` routes (by `sniHosts`), then its
//!   `tcp` routes; other ports only `tcp` routes. A match applies when its `port` is unset or
//!   the listener's, `gateways` is empty or has `mesh`, and `sourceLabels` /
//!   `sourceNamespace` fit the proxy (each proxy gets its own scope, so they are decided here).
//! - A `tcp` route without a match, or with an applying match without `destinationSubnets`,
//!   takes every connection left: later routes and the default are not added. Otherwise the
//!   default route to the service's own cluster comes last.
//! - On the transparent listener, connections are matched by the service's addresses (its
//!   VIPs) and port; `destinationSubnets` replace the addresses. A service without addresses
//!   is matched by port alone (Istio's `0.0.0.0:port` listener): there, TLS ports match by
//!   SNI (the service's host), and among plain TCP services of one port the oldest service
//!   wins, as in Istio. Routes with addresses come before port-only ones, as Envoy prefers
//!   the most specific destination. A port-only route on a port that an HTTP service also
//!   uses is left out (the HTTP service keeps its traffic), with a warning.
//! - On an explicit egress listener the client connects to the bind address, so routes match
//!   by port only, and TLS ports by SNI.
//! - A ServiceEntry with `resolution: NONE` and no endpoints is reached at the connection's
//!   original destination (Istio's ORIGINAL_DST cluster): its routes go to the proxy's
//!   `PassthroughCluster`. Through an explicit listener there is no original destination.

use std::collections::{HashMap, HashSet};

use mesh_api::networking::{self as api, RouteDestination};
use mesh_proto::config::v1::{Cluster, TcpMatch, TcpRoute, WeightedCluster};

use super::hosts;
use super::outbound::{Builder, cluster_name, socket_addr};
use crate::registry::{Protocol, Resolution, Service, ServicePort};

/// Cluster without endpoints for routes whose destination does not exist: their connections
/// are closed, as Envoy does for an unknown cluster, instead of falling to a later route.
pub const BLACKHOLE: &str = "BlackHoleCluster";

/// The proxy's name for the original destination of a redirected connection.
pub const PASSTHROUGH: &str = "PassthroughCluster";

/// A service whose connections go where the client sent them: `resolution: NONE` with no
/// endpoints to pick from.
fn passthrough(svc: &Service) -> bool {
    svc.resolution == Resolution::Passthrough && svc.endpoints.is_empty()
}

/// A Sidecar egress listener with a port, as the proxy binds it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EgressListener {
    /// `egress|BIND:PORT`.
    pub name: String,
    /// `BIND:PORT`.
    pub address: String,
    /// HTTP ports use the outbound route table; the others `tcp_routes`.
    pub http: bool,
    pub tcp_routes: Vec<TcpRoute>,
}

/// Ports forwarded as raw TCP: every protocol Istio does not route by HTTP attributes, except
/// UDP (not proxied) and Unknown (Istio sniffs it; HTTP-routed here as before).
pub fn is_l4(protocol: Protocol) -> bool {
    !protocol.is_http() && !matches!(protocol, Protocol::Unknown | Protocol::Udp)
}

fn sni_routed(protocol: Protocol) -> bool {
    matches!(protocol, Protocol::Tls | Protocol::Https)
}

/// Where a route list is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listen {
    Transparent,
    Egress,
}

/// What building the routes of one service port found.
struct PortRoutes {
    routes: Vec<TcpRoute>,
    /// Matched by addresses (specific) rather than by port alone.
    by_address: bool,
    /// Takes every connection to its port, whatever the address and server name.
    port_wide: bool,
}

/// The routes of the transparent listener, the egress listeners, and the black hole cluster
/// when a route needs it.
pub(super) fn build(b: &mut Builder) -> (Vec<TcpRoute>, Vec<EgressListener>, Option<Cluster>) {
    let mut blackhole = false;
    let transparent = transparent_routes(b, &mut blackhole);
    let egress = egress_listeners(b, &mut blackhole);
    let cluster = blackhole.then(|| Cluster {
        name: BLACKHOLE.to_string(),
        ..Default::default()
    });
    (transparent, egress, cluster)
}

/// Visible services, oldest first (Istio's winner among services sharing a port).
fn by_age<'a>(b: &Builder<'a>) -> Vec<&'a Service> {
    let mut services: Vec<&Service> = b.services.values().copied().collect();
    services.sort_by(|x, y| (&x.created, &x.hostname).cmp(&(&y.created, &y.hostname)));
    services
}

fn transparent_routes(b: &mut Builder, blackhole: &mut bool) -> Vec<TcpRoute> {
    let services = by_age(b);
    let http_ports: HashSet<u32> = services
        .iter()
        .flat_map(|s| s.ports.iter())
        .filter(|p| Builder::routable(p))
        .map(|p| p.number)
        .collect();
    let mut specific = Vec::new();
    let mut port_only = Vec::new();
    // Port-wide routes so far, by port: later plain TCP services of that port are shadowed.
    let mut port_owner: HashMap<u32, &str> = HashMap::new();
    for svc in services {
        unknown_port_warnings(b, svc);
        for port in svc.ports.iter().filter(|p| is_l4(p.protocol)) {
            let built = port_routes(b, svc, port, port.number, Listen::Transparent, blackhole);
            if built.by_address {
                specific.extend(built.routes);
                continue;
            }
            if http_ports.contains(&port.number) {
                b.warnings.push(format!(
                    "{} {}/{}: port {} ({}) of {} has no address and an HTTP service uses the same port: not reachable through the transparent listener (give the service an address)",
                    svc.origin.kind,
                    svc.origin.namespace,
                    svc.origin.name,
                    port.number,
                    port.protocol.as_str(),
                    svc.hostname
                ));
                continue;
            }
            if let Some(owner) = port_owner.get(&port.number) {
                b.warnings.push(format!(
                    "{} {}/{}: port {} ({}) of {} has no address and {owner} already takes every connection to port {} without an address: not reachable through the transparent listener",
                    svc.origin.kind,
                    svc.origin.namespace,
                    svc.origin.name,
                    port.number,
                    port.protocol.as_str(),
                    svc.hostname,
                    port.number
                ));
                continue;
            }
            if built.port_wide {
                port_owner.insert(port.number, &svc.hostname);
            }
            port_only.extend(built.routes);
        }
    }
    specific.extend(port_only);
    specific
}

/// Istio sniffs ports of unknown protocol and applies `tcp` routes to what is not HTTP; here
/// such ports are routed as HTTP, so say which layer 4 routes do not reach them.
fn unknown_port_warnings(b: &mut Builder, svc: &Service) {
    let Some(vs) = b.virtual_service(&svc.hostname) else {
        return;
    };
    if vs.spec.tcp.is_empty() && vs.spec.tls.is_empty() {
        return;
    }
    for port in svc.ports.iter().filter(|p| p.protocol == Protocol::Unknown) {
        b.warnings.push(format!(
            "VirtualService {}/{}: tcp and tls routes do not apply to port {} of {}: its protocol is not declared, so it is routed as HTTP (name the port tcp-*, tls-*, ... or set its protocol)",
            vs.namespace, vs.name, port.number, svc.hostname
        ));
    }
}

fn egress_listeners(b: &mut Builder, blackhole: &mut bool) -> Vec<EgressListener> {
    let Some(sidecar) = b.sidecar else {
        return Vec::new();
    };
    let services = by_age(b);
    let mut out: Vec<EgressListener> = Vec::new();
    for ep in &sidecar.egress_ports {
        let address = socket_addr(&ep.bind, ep.number);
        let name = format!("egress|{address}");
        if out.iter().any(|l| l.address == address) {
            b.warnings.push(format!(
                "Sidecar {}/{}: two egress listeners on {address}; the first is used",
                sidecar.namespace, sidecar.name
            ));
            continue;
        }
        if ep.protocol.is_http() || ep.protocol == Protocol::Unknown {
            for svc in services
                .iter()
                .filter(|s| passthrough(s) && ep.imports(&s.namespace, &s.hostname))
            {
                let port = svc
                    .port(ep.number)
                    .or_else(|| (svc.ports.len() == 1).then(|| &svc.ports[0]));
                if port.is_some_and(|p| p.protocol.is_http() || p.protocol == Protocol::Unknown) {
                    b.warnings.push(format!(
                        "Sidecar {}/{}: egress listener {address}: {} has resolution NONE and no endpoints; an explicit listener has no original destination to forward to, so its requests get 503",
                        sidecar.namespace, sidecar.name, svc.hostname
                    ));
                }
            }
            out.push(EgressListener {
                name,
                address,
                http: true,
                tcp_routes: Vec::new(),
            });
            continue;
        }
        let mut routes = Vec::new();
        let mut owner: Option<&str> = None;
        for svc in services
            .iter()
            .filter(|s| ep.imports(&s.namespace, &s.hostname))
        {
            // The service's port of the listener's number; a one-port service is reached on
            // any listener port (Istio's rule for user-defined egress ports).
            let Some(port) = svc
                .port(ep.number)
                .or_else(|| (svc.ports.len() == 1).then(|| &svc.ports[0]))
            else {
                continue;
            };
            if !is_l4(port.protocol) && port.protocol != Protocol::Unknown {
                continue;
            }
            if passthrough(svc) {
                b.warnings.push(format!(
                    "Sidecar {}/{}: egress listener {address}: {} has resolution NONE and no endpoints; an explicit listener has no original destination to forward to, so it is not reachable through it",
                    sidecar.namespace, sidecar.name, svc.hostname
                ));
                continue;
            }
            if let Some(first) = owner {
                b.warnings.push(format!(
                    "Sidecar {}/{}: egress listener {address}: {first} already takes every connection; {} is not reachable through it",
                    sidecar.namespace, sidecar.name, svc.hostname
                ));
                continue;
            }
            // Unknown ports of a TCP listener are forwarded as TCP too.
            let port = ServicePort {
                protocol: if is_l4(port.protocol) {
                    port.protocol
                } else {
                    ep.protocol
                },
                ..port.clone()
            };
            let built = port_routes(b, svc, &port, ep.number, Listen::Egress, blackhole);
            if built.port_wide {
                owner = Some(&svc.hostname);
            }
            routes.extend(built.routes);
        }
        if routes.is_empty() {
            b.warnings.push(format!(
                "Sidecar {}/{}: egress listener {address} ({}): no imported service has this port; no listener",
                sidecar.namespace,
                sidecar.name,
                ep.protocol.as_str()
            ));
            continue;
        }
        out.push(EgressListener {
            name,
            address,
            http: false,
            tcp_routes: routes,
        });
    }
    out.sort_by(|x, y| x.address.cmp(&y.address));
    out
}

/// The routes of one service port, on a listener of port `listen_port`.
fn port_routes(
    b: &mut Builder,
    svc: &Service,
    port: &ServicePort,
    listen_port: u32,
    listen: Listen,
    blackhole: &mut bool,
) -> PortRoutes {
    let addresses: Vec<String> = match listen {
        Listen::Transparent => valid_addresses(b, svc),
        Listen::Egress => Vec::new(),
    };
    // Without addresses, TLS is told apart by its server name (Istio: SNI for wildcard and
    // user-defined listeners).
    let default_sni = sni_routed(port.protocol) && addresses.is_empty();
    let tcp_match = |subnets: &[String], sni: Vec<String>| TcpMatch {
        destination_port: listen_port,
        destination_subnets: if subnets.is_empty() {
            addresses.clone()
        } else {
            subnets.to_vec()
        },
        sni_hosts: sni,
    };
    let mut routes = Vec::new();
    let mut catch_all = false;
    if let Some(vs) = b.virtual_service(&svc.hostname) {
        let origin = format!("{}/{}", vs.namespace, vs.name);
        if sni_routed(port.protocol) {
            for (i, r) in vs.spec.tls.iter().enumerate() {
                let matches: Vec<TcpMatch> = r
                    .matches
                    .iter()
                    .filter(|m| m.port.is_none_or(|p| p == listen_port))
                    .filter(|m| {
                        b.source_applies(&m.gateways, m.source_namespace.as_ref(), &m.source_labels)
                    })
                    .map(|m| tcp_match(&m.destination_subnets, lower(&m.sni_hosts)))
                    .collect();
                if matches.is_empty() {
                    continue;
                }
                let what = format!("VirtualService {origin}: tls[{i}]");
                if let Some(clusters) =
                    weighted(b, &r.route, &vs.namespace, port.number, &what, blackhole)
                {
                    routes.push(TcpRoute {
                        name: origin.clone(),
                        matches,
                        clusters,
                    });
                }
            }
        }
        for (i, r) in vs.spec.tcp.iter().enumerate() {
            let applying: Vec<&api::L4MatchAttributes> = r
                .matches
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == listen_port))
                .filter(|m| {
                    b.source_applies(&m.gateways, m.source_namespace.as_ref(), &m.source_labels)
                })
                .collect();
            if !r.matches.is_empty() && applying.is_empty() {
                continue;
            }
            // No match, or an applying one without subnets: every connection to the port.
            catch_all =
                r.matches.is_empty() || applying.iter().any(|m| m.destination_subnets.is_empty());
            let matches = if catch_all {
                vec![tcp_match(&[], Vec::new())]
            } else {
                applying
                    .iter()
                    .map(|m| tcp_match(&m.destination_subnets, Vec::new()))
                    .collect()
            };
            let what = format!("VirtualService {origin}: tcp[{i}]");
            if let Some(clusters) =
                weighted(b, &r.route, &vs.namespace, port.number, &what, blackhole)
            {
                routes.push(TcpRoute {
                    name: origin.clone(),
                    matches,
                    clusters,
                });
            }
            if catch_all {
                break;
            }
        }
    }
    if !catch_all {
        let sni = if default_sni {
            vec![svc.hostname.to_ascii_lowercase()]
        } else {
            Vec::new()
        };
        catch_all = sni.is_empty();
        routes.push(TcpRoute {
            name: svc.hostname.clone(),
            matches: vec![tcp_match(&[], sni)],
            clusters: vec![WeightedCluster {
                cluster: if passthrough(svc) {
                    PASSTHROUGH.to_string()
                } else {
                    cluster_name(port.number, "", &svc.hostname)
                },
                weight: 100,
                ..Default::default()
            }],
        });
    }
    PortRoutes {
        routes,
        by_address: !addresses.is_empty(),
        port_wide: catch_all && addresses.is_empty(),
    }
}

fn lower(hosts: &[String]) -> Vec<String> {
    hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
}

/// The service's addresses the proxy can match on (IPs and CIDR blocks); others are reported.
fn valid_addresses(b: &mut Builder, svc: &Service) -> Vec<String> {
    let mut out = Vec::new();
    for a in &svc.addresses {
        if is_ip_or_cidr(a) {
            out.push(a.clone());
        } else {
            b.warnings.push(format!(
                "{} {}/{}: address {a:?} of {} is not an IP address or CIDR block; ignored",
                svc.origin.kind, svc.origin.namespace, svc.origin.name, svc.hostname
            ));
        }
    }
    out
}

fn is_ip_or_cidr(s: &str) -> bool {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (s, None),
    };
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    len.is_none_or(|l| l.parse::<u8>().is_ok_and(|l| l <= max))
}

/// A route's destinations as weighted clusters; a destination that does not exist goes to
/// the black hole (with a warning). `None` (with a warning) when nothing can be routed.
fn weighted(
    b: &mut Builder,
    route: &[RouteDestination],
    vs_namespace: &str,
    port: u32,
    what: &str,
    blackhole: &mut bool,
) -> Option<Vec<WeightedCluster>> {
    if route.is_empty() {
        b.warnings
            .push(format!("{what}: no route destination; skipped"));
        return None;
    }
    let lone = route.len() == 1;
    let mut out = Vec::with_capacity(route.len());
    for d in route {
        let host = hosts::resolve(&d.destination.host, vs_namespace);
        let cluster = match b.destination(&d.destination, vs_namespace, port) {
            Ok(_)
                if b.services
                    .get(host.as_str())
                    .is_some_and(|s| passthrough(s)) =>
            {
                PASSTHROUGH.to_string()
            }
            Ok((cluster, _)) => cluster,
            Err(reason) => {
                b.warnings
                    .push(format!("{what}: {reason}; its connections are closed"));
                *blackhole = true;
                BLACKHOLE.to_string()
            }
        };
        let weight = if lone { 100 } else { d.weight.max(0) as u32 };
        out.push(WeightedCluster {
            cluster,
            weight,
            ..Default::default()
        });
    }
    if out.iter().all(|c| c.weight == 0) {
        b.warnings
            .push(format!("{what}: every weight is 0; skipped"));
        return None;
    }
    Some(out)
}
