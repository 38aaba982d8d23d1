//! The inbound side: the mesh's requests to the local application, with the workload's
//! PeerAuthentication mode, RequestAuthentication rules and AuthorizationPolicies on its
//! listener.

use mesh_proto::config::v1::{
    AuthorizationPolicy, Cluster, Direction, Endpoint, JwtRule, LbPolicy, Listener,
    ListenerProtocol, MtlsMode, PortMtls, RetryPolicy, Route, RouteAction, RouteMatch, RouteTable,
    StringMatch, TcpMatch, TcpRoute, UpstreamProtocol, VirtualHost, WeightedCluster, route,
    string_match,
};

use super::index::MeshIndex;
use super::scope::ROOT_NAMESPACE;
use crate::authz;
use crate::registry::Workload;

/// The security of a workload's inbound listener, resolved with Istio's precedence.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InboundSecurity {
    pub authorization_policies: Vec<AuthorizationPolicy>,
    /// Never UNSET: PERMISSIVE when no PeerAuthentication applies.
    pub mtls_mode: MtlsMode,
    /// By workload (target) port, sorted.
    pub port_mtls: Vec<PortMtls>,
    /// RequestAuthentication rules, checked before the AuthorizationPolicies.
    pub jwt_rules: Vec<JwtRule>,
}

/// The AuthorizationPolicies and PeerAuthentication mode that apply to `workload`.
pub fn security(mesh: &MeshIndex, workload: &Workload) -> InboundSecurity {
    let (mtls_mode, port_mtls) = authz::mtls_for(
        &mesh.security,
        &workload.namespace,
        &workload.labels,
        ROOT_NAMESPACE,
    );
    InboundSecurity {
        authorization_policies: authz::policies_for(
            &mesh.security,
            &workload.namespace,
            &workload.labels,
            ROOT_NAMESPACE,
        ),
        mtls_mode,
        port_mtls,
        jwt_rules: crate::request_authn::jwt_rules_for(
            &mesh.security,
            &workload.namespace,
            &workload.labels,
            ROOT_NAMESPACE,
        ),
    }
}

/// Name of the inbound listener and route table.
pub const INBOUND: &str = "inbound";
/// The cluster of the local application.
pub const INBOUND_CLUSTER: &str = "inbound|app";

/// Connections to the workload's ports of declared non-HTTP services (`tcp_ports`: the port
/// the client was going to when redirected, else the listener's own) go to the application
/// as TCP, after mTLS as for HTTP; everything else is HTTP. As in Istio, the port's declared
/// protocol decides, not the first bytes, so HTTP handling cannot be bypassed. A redirected
/// connection goes on to its original destination (the application's port it was sent to);
/// an explicit listener's to the application address.
fn tcp_route(tcp_ports: &[u32], transparent: bool) -> Vec<TcpRoute> {
    if tcp_ports.is_empty() {
        return Vec::new();
    }
    vec![TcpRoute {
        name: "inbound|tcp".to_string(),
        matches: tcp_ports
            .iter()
            .map(|p| TcpMatch {
                destination_port: *p,
                ..Default::default()
            })
            .collect(),
        clusters: vec![WeightedCluster {
            cluster: if transparent {
                super::l4::PASSTHROUGH
            } else {
                INBOUND_CLUSTER
            }
            .to_string(),
            weight: 100,
            ..Default::default()
        }],
    }]
}

/// Listener on `address` carrying `security`, one virtual host `*` to the application at
/// `application`, which speaks whatever the caller spoke. No retries: the caller's proxy already retries, and
/// retrying twice multiplies attempts (Istio's inbound routes have none either).
pub fn build(
    address: &str,
    application: &str,
    transparent: bool,
    security: InboundSecurity,
    tcp_ports: &[u32],
) -> (Listener, RouteTable, Cluster) {
    let listener = Listener {
        name: INBOUND.to_string(),
        address: address.to_string(),
        direction: Direction::Inbound as i32,
        protocol: ListenerProtocol::Http as i32,
        route_table: INBOUND.to_string(),
        tcp_cluster: String::new(),
        outbound_traffic_policy: 0,
        transparent,
        authorization_policies: security.authorization_policies,
        mtls_mode: security.mtls_mode as i32,
        port_mtls: security.port_mtls,
        tcp_routes: tcp_route(tcp_ports, transparent),
        jwt_rules: security.jwt_rules,
        downstream_tls: None,
        // The workload's services are the index's to tell; see `translate_shared`.
        services: Vec::new(),
        // Selected from the LocalRateLimits in `translate_shared`.
        local_rate_limits: Vec::new(),
    };
    let table = RouteTable {
        name: INBOUND.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: INBOUND_CLUSTER.to_string(),
            domains: vec!["*".to_string()],
            routes: vec![Route {
                name: "default".to_string(),
                r#match: Some(RouteMatch {
                    path: Some(StringMatch {
                        kind: Some(string_match::Kind::Prefix("/".to_string())),
                    }),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    clusters: vec![WeightedCluster {
                        cluster: INBOUND_CLUSTER.to_string(),
                        weight: 100,
                        ..Default::default()
                    }],
                    retry_policy: Some(RetryPolicy::default()),
                    ..Default::default()
                })),
                ..Default::default()
            }],
        }],
    };
    let cluster = Cluster {
        name: INBOUND_CLUSTER.to_string(),
        lb_policy: LbPolicy::LeastRequest as i32,
        protocol: UpstreamProtocol::SameAsDownstream as i32,
        endpoints: vec![Endpoint {
            address: application.to_string(),
            weight: 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    (listener, table, cluster)
}
