//! One accepted connection's context: the listener it came in on, who the client is, where it
//! was going, and what the config snapshot read once at accept says about it (security and how
//! it is forwarded, with the target's cluster held, not named).

use crate::telemetry::overrides::SideOverrides;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use mesh_proto::config::v1 as pb;
use tokio::net::TcpStream;

use super::l4::{Forward, classify};
use super::secure::PeerIdentity;
use crate::config::{ListenerSecurity, Snapshot};
use crate::upstream::Cluster;

/// A listener's settings as its connections read them, taken from its spec once per bind.
#[derive(Debug)]
pub struct ListenerSpec {
    pub name: String,
    pub direction: pb::Direction,
    pub protocol: pb::ListenerProtocol,
    pub route_table: String,
    /// A TCP connection no route took goes here ("" for none).
    pub tcp_cluster: String,
    pub transparent: bool,
    pub outbound_policy: pb::OutboundTrafficPolicy,
    /// A gateway listener that terminates TLS: its HTTP requests arrived over HTTPS.
    pub terminates_tls: bool,
}

impl ListenerSpec {
    pub fn new(spec: &pb::Listener) -> Self {
        Self {
            name: spec.name.clone(),
            direction: spec.direction(),
            protocol: spec.protocol(),
            route_table: spec.route_table.clone(),
            tcp_cluster: spec.tcp_cluster.clone(),
            transparent: spec.transparent,
            outbound_policy: spec.outbound_traffic_policy(),
            terminates_tls: spec.downstream_tls.is_some(),
        }
    }

    pub fn is_inbound(&self) -> bool {
        self.direction == pb::Direction::Inbound
    }

    /// A standalone gateway's listener: every client is outside the mesh.
    pub fn is_gateway(&self) -> bool {
        self.direction == pb::Direction::Gateway
    }

    /// The scheme clients used to reach this listener.
    pub fn scheme(&self) -> &'static str {
        if self.terminates_tls { "https" } else { "http" }
    }
}

/// One downstream connection.
#[derive(Debug, Clone)]
pub struct ConnContext {
    pub listener: Arc<ListenerSpec>,
    pub peer: SocketAddr,
    /// Where a redirected connection was going, when iptables redirected it.
    pub original_dst: Option<SocketAddr>,
    /// The client's verified identity, on an mTLS connection.
    pub peer_identity: Option<PeerIdentity>,
    /// The workload port the client connected to (for policy).
    pub destination_port: u16,
    /// The downstream part of this connection's text access-log lines, made with its first
    /// logged request: every line of the connection shares it.
    pub log_downstream: OnceLock<Box<[u8]>>,
}

impl ConnContext {
    /// The client's SPIFFE ID as policies name it, without `spiffe://`.
    pub fn principal(&self) -> Option<&str> {
        Some(self.peer_identity.as_ref()?.spiffe_id.principal())
    }

    /// The TLS server name the client sent, on an mTLS connection.
    pub fn sni(&self) -> Option<&str> {
        self.peer_identity.as_ref()?.sni.as_deref()
    }
}

/// What one snapshot says about a new connection.
pub struct ConnConfig {
    /// PeerAuthentication and AuthorizationPolicy of an inbound listener; `None` outbound.
    pub security: Option<Arc<ListenerSecurity>>,
    pub forward: Forward,
    /// The metrics overrides of the listener's side, for a TCP connection's metrics.
    pub tcp_metrics: Option<Arc<SideOverrides>>,
}

/// Reads everything a connection needs from `snapshot`, the one the accept took: the
/// listener's security and the connection's classification with its resolved target. Peeks
/// at the stream (server name, HTTP or not) without reading from it.
pub async fn read_config(
    stream: &TcpStream,
    listener: &ListenerSpec,
    snapshot: &Snapshot,
    passthrough: &Arc<Cluster>,
    dst: SocketAddr,
    original_dst: Option<SocketAddr>,
) -> ConnConfig {
    // Inbound listeners, and gateway listeners that terminate mesh mTLS (the only gateway
    // listeners with security).
    let security = if listener.is_inbound() || listener.is_gateway() {
        snapshot.listener_security.get(&listener.name).cloned()
    } else {
        None
    };
    let forward = classify(stream, listener, snapshot, passthrough, dst, original_dst).await;
    let tcp_metrics = match forward {
        Forward::Tcp(_) => snapshot
            .metrics_overrides
            .for_direction(listener.direction)
            .cloned(),
        Forward::Http => None,
    };
    ConnConfig {
        security,
        forward,
        tcp_metrics,
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;
    use crate::identity::IdentitySlot;
    use crate::metrics::Metrics;
    use crate::upstream::passthrough_cluster;

    /// An inbound TCP listener to cluster "app" whose endpoint is `app`.
    fn snapshot(app: &str) -> Snapshot {
        let cfg = serde_json::from_value(serde_json::json!({
            "listeners": [{
                "name": "in", "address": "127.0.0.1:0", "direction": "INBOUND",
                "protocol": "TCP", "tcpCluster": "app"
            }],
            "clusters": [{ "name": "app", "endpoints": [{ "address": app }] }],
        }))
        .unwrap();
        let identity = Arc::new(IdentitySlot::default());
        Snapshot::compile(cfg, None, &Metrics::default(), &identity).unwrap()
    }

    #[tokio::test]
    async fn security_and_target_come_from_the_snapshot_read_at_accept() {
        let accepted = snapshot("127.0.0.1:1001");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let spec = ListenerSpec::new(&accepted.source.listeners[0]);
        let passthrough = passthrough_cluster(&Metrics::default());
        let config = read_config(&stream, &spec, &accepted, &passthrough, addr, None).await;
        // A newer config arriving now changes nothing for this connection.
        let newer = snapshot("127.0.0.1:1002");
        let security = config.security.expect("inbound listeners have security");
        assert!(Arc::ptr_eq(&security, &accepted.listener_security["in"]));
        assert!(!Arc::ptr_eq(&security, &newer.listener_security["in"]));
        let Forward::Tcp(Some(target)) = config.forward else {
            panic!("a TCP listener forwards to its cluster");
        };
        assert!(Arc::ptr_eq(&target.cluster, &accepted.clusters["app"]));
        let picked = target.pick(None, &[]).unwrap();
        assert_eq!(picked.endpoint().address.port(), 1001);
    }
}
