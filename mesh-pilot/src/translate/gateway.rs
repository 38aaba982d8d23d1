//! A standalone gateway's listeners and route tables (Istio's ingress gateway), from the
//! `Gateway` resources whose selector matches the gateway workload's labels.
//!
//! One listener per server port, named `gateway-PORT` with route table `gateway-PORT`:
//! - HTTP servers: a virtual host per host shared by the server and a VirtualService bound
//!   to the Gateway (`gateways: [ns/name]` or `[name]`, a route's match `gateways` narrowing
//!   it); `tls.httpsRedirect` answers every request of the server's hosts with 301 to https.
//! - HTTPS servers (SIMPLE, MUTUAL, OPTIONAL_MUTUAL): the same routes behind TLS terminated
//!   with the server's certificate files, picked by SNI among the port's servers.
//! - PASSTHROUGH servers: the VirtualServices' `tls` routes by SNI, as layer 4 routes of the
//!   listener (the client's TLS reaches the service untouched, inside mesh mTLS).
//!
//! Clusters are the outbound ones of the gateway's scope, so traffic into the mesh goes over
//! mTLS with the gateway's own identity, as a sidecar's outbound.
//! Whatever is not implemented is skipped with a warning that names the field.

use std::collections::BTreeMap;

use mesh_api::networking::{self as api, Gateway, HttpMatchRequest, ServerTlsMode, parse_protocol};
use mesh_proto::config::v1::{
    Direction, DownstreamTls, Listener, ListenerProtocol, MtlsMode, Redirect, RouteTable,
    ServerCertificate, TcpMatch, TcpRoute, VirtualHost, WeightedCluster, route,
};
use mesh_proto::discovery::v1::GatewayAddresses;

use super::hosts;
use super::index::{MeshIndex, VsEntry};
use super::outbound::{Builder, socket_addr};
use super::routes::{self, RouteEnv};
use crate::registry::{Protocol, Workload, labels_match};

/// Prefix of a gateway's listener and route table names: `gateway-80`.
pub const GATEWAY: &str = "gateway";

#[derive(Clone, Debug)]
pub(crate) struct GatewayEntry {
    pub namespace: String,
    pub name: String,
    pub created: String,
    pub spec: Gateway,
}

impl GatewayEntry {
    /// `namespace/name`, as VirtualServices name it.
    fn reference(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A gateway proxy's own part of its config.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GatewayConfig {
    /// Sorted by name.
    pub listeners: Vec<Listener>,
    /// Sorted by name.
    pub route_tables: Vec<RouteTable>,
    pub warnings: Vec<String>,
}

/// How a server's connections are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerKind {
    Http {
        https_redirect: bool,
    },
    /// TLS terminated by the gateway, then HTTP.
    Https,
    /// TLS routed by SNI without terminating it.
    Passthrough,
    /// Mesh mTLS terminated with the gateway's own identity (`ISTIO_MUTUAL`), then HTTP:
    /// sidecars reach an egress gateway this way.
    MeshMutual,
}

impl ServerKind {
    /// What a socket serving this kind speaks first: servers of one port must agree.
    fn socket(self) -> &'static str {
        match self {
            ServerKind::Http { .. } => "plaintext HTTP",
            ServerKind::Https | ServerKind::Passthrough => "TLS",
            ServerKind::MeshMutual => "mesh mTLS",
        }
    }
}

/// One server of one Gateway.
struct ServerRef<'a> {
    gateway: &'a GatewayEntry,
    server: &'a api::Server,
    kind: ServerKind,
}

/// What a server is, or why it is skipped (the warning is the API's, see
/// `mesh_api::validate::gateway_warnings`).
fn kind_of(server: &api::Server) -> Option<ServerKind> {
    let protocol = parse_protocol(&server.port.as_ref()?.protocol)?;
    if server
        .bind
        .as_deref()
        .is_some_and(|b| b.starts_with("unix://"))
    {
        return None;
    }
    let tls = server.tls.as_ref();
    match protocol {
        "HTTP" | "HTTP2" | "GRPC" => Some(ServerKind::Http {
            https_redirect: tls.is_some_and(|t| t.https_redirect == Some(true)),
        }),
        "HTTPS" | "TLS" => {
            let t = tls?;
            match t.mode {
                ServerTlsMode::Passthrough => Some(ServerKind::Passthrough),
                ServerTlsMode::IstioMutual if protocol == "HTTPS" => Some(ServerKind::MeshMutual),
                ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
                    if protocol == "HTTPS"
                        && (t.credential_secret().is_some()
                            || t.server_certificate.is_some() && t.private_key.is_some()) =>
                {
                    Some(ServerKind::Https)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The config of the gateway proxy `proxy_id` for `workload`, its listeners placed by
/// `addresses`. `builder` is the outbound builder of the workload's scope (destinations).
pub(super) fn build(
    index: &MeshIndex,
    builder: &Builder<'_>,
    workload: &Workload,
    addresses: &GatewayAddresses,
    proxy_id: &str,
) -> GatewayConfig {
    let mut out = GatewayConfig::default();
    let selected: Vec<&GatewayEntry> = index
        .gateways
        .iter()
        .filter(|g| labels_match(&g.spec.selector, &workload.labels))
        .collect();
    if selected.is_empty() {
        out.warnings.push(format!(
            "proxy {proxy_id}: a gateway, but no Gateway selects its labels; no listener"
        ));
    }
    let mut by_port: BTreeMap<u32, Vec<ServerRef>> = BTreeMap::new();
    for gw in &selected {
        for (field, reason) in mesh_api::validate::gateway_warnings(&gw.spec) {
            out.warnings.push(format!(
                "Gateway {}/{}: {field}: {reason}",
                gw.namespace, gw.name
            ));
        }
        for (i, server) in gw.spec.servers.iter().enumerate() {
            let (Some(port), Some(kind)) = (&server.port, kind_of(server)) else {
                continue;
            };
            let servers = by_port.entry(port.number).or_default();
            // Plaintext HTTP, TLS and mesh mTLS cannot share a socket.
            if let Some(first) = servers.first()
                && first.kind.socket() != kind.socket()
            {
                out.warnings.push(format!(
                    "Gateway {}/{} servers[{i}]: port {} already serves {} on this gateway; the server is skipped",
                    gw.namespace,
                    gw.name,
                    port.number,
                    first.kind.socket(),
                ));
                continue;
            }
            servers.push(ServerRef {
                gateway: gw,
                server,
                kind,
            });
        }
    }
    for (port, servers) in &by_port {
        let name = format!("{GATEWAY}-{port}");
        let bind = servers.iter().find_map(|s| s.server.bind.as_deref());
        let address = match addresses.ports.get(port) {
            Some(a) => a.clone(),
            None => {
                let host = bind.unwrap_or(if addresses.bind_host.is_empty() {
                    "0.0.0.0"
                } else {
                    &addresses.bind_host
                });
                socket_addr(host, *port)
            }
        };
        let mut table = TableBuilder::default();
        let mut certificates = Vec::new();
        let mut tcp_routes = Vec::new();
        for s in servers {
            match s.kind {
                ServerKind::Http { https_redirect } => table.add_server(
                    index,
                    builder,
                    workload,
                    s,
                    *port,
                    https_redirect,
                    &mut out.warnings,
                ),
                ServerKind::MeshMutual => {
                    table.add_server(index, builder, workload, s, *port, false, &mut out.warnings)
                }
                ServerKind::Https => {
                    certificates.push(certificate(s));
                    table.add_server(index, builder, workload, s, *port, false, &mut out.warnings);
                }
                ServerKind::Passthrough => tcp_routes.extend(passthrough_routes(
                    index,
                    builder,
                    workload,
                    s,
                    *port,
                    &mut out.warnings,
                )),
            }
        }
        out.listeners.push(Listener {
            name: name.clone(),
            address,
            direction: Direction::Gateway as i32,
            protocol: ListenerProtocol::Http as i32,
            route_table: name.clone(),
            tcp_routes,
            downstream_tls: (!certificates.is_empty()).then_some(DownstreamTls { certificates }),
            mtls_mode: if servers.iter().any(|s| s.kind == ServerKind::MeshMutual) {
                MtlsMode::Strict as i32
            } else {
                MtlsMode::Unset as i32
            },
            ..Default::default()
        });
        out.route_tables.push(RouteTable {
            name,
            virtual_hosts: table.finish(),
        });
    }
    out.listeners.sort_by(|a, b| a.name.cmp(&b.name));
    out.route_tables.sort_by(|a, b| a.name.cmp(&b.name));
    out.warnings.sort();
    out.warnings.dedup();
    out
}

/// A server host without its namespace part: `ns/host` -> `host`.
fn bare_host(h: &str) -> &str {
    h.split_once('/').map_or(h, |(_, host)| host)
}

/// Whether a server host `ns/host` lets VirtualServices of `vs_namespace` bind: `*/` or no
/// namespace any, `./` the Gateway's own namespace, else the one named.
fn namespace_allows(server_host: &str, gateway_ns: &str, vs_namespace: &str) -> bool {
    match server_host.split_once('/') {
        None | Some(("*", _)) => true,
        Some((".", _)) => vs_namespace == gateway_ns,
        Some((ns, _)) => vs_namespace == ns,
    }
}

/// Whether `vs` is bound to `gateway`: its `gateways` names it as `ns/name`, or as `name` in
/// the VirtualService's own namespace.
fn binds(vs: &VsEntry, gateway: &GatewayEntry) -> bool {
    bound_by(&vs.spec.gateways, &vs.namespace, gateway)
}

fn bound_by(gateways: &[String], vs_namespace: &str, gateway: &GatewayEntry) -> bool {
    gateways.iter().any(|g| match g.split_once('/') {
        Some((ns, name)) => ns == gateway.namespace && name == gateway.name,
        None => vs_namespace == gateway.namespace && g == &gateway.name,
    })
}

/// The hosts both a server and a VirtualService name: the narrower of each matching pair
/// (Istio's virtual host names at a gateway).
fn shared_hosts(server: &api::Server, gateway_ns: &str, vs: &VsEntry) -> Vec<String> {
    let mut out = Vec::new();
    for sh in &server.hosts {
        if !namespace_allows(sh, gateway_ns, &vs.namespace) {
            continue;
        }
        let sh = bare_host(sh);
        for vh in &vs.hosts {
            let host = if hosts::covers(sh, vh) {
                vh.as_str()
            } else if hosts::covers(vh, sh) {
                sh
            } else {
                continue;
            };
            if !out.iter().any(|h| h == host) {
                out.push(host.to_string());
            }
        }
    }
    out
}

/// The virtual hosts of one port, merged by host in VirtualService order, as Istio merges
/// the routes of every VirtualService bound to a gateway host.
#[derive(Default)]
struct TableBuilder {
    hosts: Vec<VirtualHost>,
    /// Hosts whose server redirects to https: no routes are added to them.
    redirected: Vec<String>,
}

impl TableBuilder {
    #[allow(clippy::too_many_arguments)]
    fn add_server(
        &mut self,
        index: &MeshIndex,
        builder: &Builder<'_>,
        workload: &Workload,
        s: &ServerRef<'_>,
        port: u32,
        https_redirect: bool,
        warnings: &mut Vec<String>,
    ) {
        let gw = s.gateway;
        let reference = gw.reference();
        for vs in index
            .gateway_virtual_services
            .iter()
            .filter(|vs| binds(vs, gw))
        {
            let hosts = shared_hosts(s.server, &gw.namespace, vs);
            if hosts.is_empty() {
                continue;
            }
            let routes = if https_redirect {
                vec![https_redirect_route()]
            } else {
                let env = GatewayEnv {
                    builder,
                    workload,
                    vs,
                    gateway: gw,
                    port,
                    origin: format!(
                        "VirtualService {}/{} (gateway {reference})",
                        vs.namespace, vs.name
                    ),
                };
                routes::http_routes(&vs.spec.http, &env, warnings)
            };
            for host in hosts {
                self.add(host, port, https_redirect, routes.clone());
            }
        }
    }

    fn add(
        &mut self,
        host: String,
        port: u32,
        redirect: bool,
        routes: Vec<mesh_proto::config::v1::Route>,
    ) {
        if self.redirected.contains(&host) {
            return;
        }
        if redirect {
            self.redirected.push(host.clone());
        }
        match self.hosts.iter_mut().find(|vh| vh.name == host) {
            Some(vh) if redirect => vh.routes = routes,
            Some(vh) => vh.routes.extend(routes),
            None => {
                let domains = if host == "*" {
                    vec![host.clone()]
                } else {
                    vec![host.clone(), format!("{host}:{port}")]
                };
                self.hosts.push(VirtualHost {
                    name: host,
                    domains,
                    routes,
                });
            }
        }
    }

    fn finish(mut self) -> Vec<VirtualHost> {
        self.hosts.sort_by(|a, b| a.name.cmp(&b.name));
        self.hosts
    }
}

/// `httpsRedirect`: every request gets 301 to the same URL with `https`.
fn https_redirect_route() -> mesh_proto::config::v1::Route {
    mesh_proto::config::v1::Route {
        name: "https-redirect".to_string(),
        r#match: Some(mesh_proto::config::v1::RouteMatch {
            path: Some(mesh_proto::config::v1::StringMatch {
                kind: Some(mesh_proto::config::v1::string_match::Kind::Prefix(
                    "/".into(),
                )),
            }),
            ..Default::default()
        }),
        action: Some(route::Action::Redirect(Redirect {
            scheme: "https".to_string(),
            response_code: 301,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The certificate entry of an HTTPS server: its hosts are the SNI names it answers. A
/// server with a credential (a Secret) sends its name only: the gateway reads the files from
/// its own credential directory, so no key passes through pilot.
fn certificate(s: &ServerRef<'_>) -> ServerCertificate {
    let tls = s.server.tls.clone().unwrap_or_default();
    let sni_hosts = s
        .server
        .hosts
        .iter()
        .map(|h| bare_host(h).to_string())
        .collect();
    let mutual = matches!(
        tls.mode,
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    if let Some(secret) = tls.credential_secret() {
        return ServerCertificate {
            sni_hosts,
            credential_name: secret.to_string(),
            credential_client_ca: mutual,
            require_client_certificate: tls.mode == ServerTlsMode::Mutual,
            ..Default::default()
        };
    }
    ServerCertificate {
        sni_hosts,
        certificate_chain: tls.server_certificate.unwrap_or_default(),
        private_key: tls.private_key.unwrap_or_default(),
        ca_certificates: match tls.mode {
            ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
                tls.ca_certificates.unwrap_or_default()
            }
            _ => String::new(),
        },
        require_client_certificate: tls.mode == ServerTlsMode::Mutual,
        ..Default::default()
    }
}

/// The `tls` routes of the VirtualServices bound to a PASSTHROUGH server: by SNI (within
/// the server's hosts) to their destination, the client's TLS untouched.
fn passthrough_routes(
    index: &MeshIndex,
    builder: &Builder<'_>,
    workload: &Workload,
    s: &ServerRef<'_>,
    port: u32,
    warnings: &mut Vec<String>,
) -> Vec<TcpRoute> {
    let gw = s.gateway;
    let mut out = Vec::new();
    for vs in index
        .gateway_virtual_services
        .iter()
        .filter(|vs| binds(vs, gw))
    {
        if shared_hosts(s.server, &gw.namespace, vs).is_empty() {
            continue;
        }
        let origin = format!("VirtualService {}/{}", vs.namespace, vs.name);
        for (i, r) in vs.spec.tls.iter().enumerate() {
            let matches: Vec<TcpMatch> = r
                .matches
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == port))
                .filter(|m| m.gateways.is_empty() || bound_by(&m.gateways, &vs.namespace, gw))
                .filter(|m| {
                    source_applies(workload, m.source_namespace.as_ref(), &m.source_labels)
                })
                .filter(|m| {
                    if m.destination_subnets.is_empty() {
                        return true;
                    }
                    warnings.push(format!(
                        "{origin}: tls[{i}]: destinationSubnets is not supported at a gateway; that match is dropped"
                    ));
                    false
                })
                .map(|m| TcpMatch {
                    sni_hosts: m
                        .sni_hosts
                        .iter()
                        .filter(|h| {
                            s.server.hosts.iter().any(|sh| {
                                hosts::covers(bare_host(sh), h) || hosts::covers(h, bare_host(sh))
                            })
                        })
                        .cloned()
                        .collect(),
                    ..Default::default()
                })
                .filter(|m| !m.sni_hosts.is_empty())
                .collect();
            if matches.is_empty() {
                continue;
            }
            let mut clusters = Vec::new();
            for d in &r.route {
                match builder.destination(&d.destination, &vs.namespace, port) {
                    Ok((cluster, _)) => clusters.push(WeightedCluster {
                        cluster,
                        subset: String::new(),
                        weight: if r.route.len() == 1 {
                            100
                        } else {
                            d.weight.max(0) as u32
                        },
                        ..Default::default()
                    }),
                    Err(reason) => {
                        warnings.push(format!("{origin}: tls[{i}]: {reason}; route skipped"))
                    }
                }
            }
            if clusters.iter().all(|c| c.weight == 0) {
                continue;
            }
            out.push(TcpRoute {
                name: origin.clone(),
                matches,
                clusters,
            });
        }
    }
    out
}

/// Whether a match's source conditions hold at the gateway: the source is the gateway itself.
fn source_applies(
    workload: &Workload,
    source_namespace: Option<&String>,
    source_labels: &BTreeMap<String, String>,
) -> bool {
    source_namespace.is_none_or(|ns| *ns == workload.namespace)
        && labels_match(source_labels, &workload.labels)
}

/// The route environment of one VirtualService at one gateway port.
struct GatewayEnv<'b, 'a> {
    builder: &'b Builder<'a>,
    /// The gateway's own workload: `sourceLabels` and `sourceNamespace` name it.
    workload: &'b Workload,
    vs: &'b VsEntry,
    gateway: &'b GatewayEntry,
    port: u32,
    origin: String,
}

impl RouteEnv for GatewayEnv<'_, '_> {
    fn cluster(&self, dest: &api::Destination) -> Result<String, String> {
        let (cluster, protocol) = self
            .builder
            .destination(dest, &self.vs.namespace, self.port)?;
        if !(protocol.is_http() || protocol == Protocol::Unknown) {
            return Err(format!(
                "destination {} is {}, not HTTP",
                hosts::resolve(&dest.host, &self.vs.namespace),
                protocol.as_str()
            ));
        }
        Ok(cluster)
    }

    /// A match naming gateways applies only at those it names; `sourceLabels` and
    /// `sourceNamespace` must be the gateway workload's.
    fn applies(&self, m: &HttpMatchRequest) -> bool {
        (m.gateways.is_empty() || bound_by(&m.gateways, &self.vs.namespace, self.gateway))
            && source_applies(self.workload, m.source_namespace.as_ref(), &m.source_labels)
    }

    fn port(&self) -> u32 {
        self.port
    }

    fn origin(&self) -> &str {
        &self.origin
    }
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
