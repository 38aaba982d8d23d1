//! Deciding, per accepted connection, how it is forwarded: by a layer 4 route, as HTTP, or
//! as TCP to the listener's fallback.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_proto::config::v1 as pb;
use tokio::net::TcpStream;

use super::http_sniff::sniff_http;
use crate::config::Snapshot;
use crate::tcp_route::{MAX_HELLO_BYTES, peek_sni};
use crate::tls::SNIFF_TIMEOUT;

/// How long a connection whose route depends on its server name may take to send its
/// ClientHello (Envoy's listener filter timeout is 15 s, Istio's TLS inspector 5 s); then it
/// is routed as one without a server name.
pub const SNI_PEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a transparent HTTP listener waits for a client's first bytes before forwarding
/// the connection as TCP (a server-first protocol sends nothing until the server speaks).
pub const HTTP_SNIFF_TIMEOUT: Duration = SNIFF_TIMEOUT;

/// The parts of a listener's spec that decide how its connections are forwarded.
#[derive(Debug)]
pub struct L4Listener {
    pub name: String,
    pub protocol: pb::ListenerProtocol,
    pub direction: pb::Direction,
    pub tcp_cluster: String,
    pub transparent: bool,
    pub outbound_policy: pb::OutboundTrafficPolicy,
}

impl L4Listener {
    pub fn new(spec: &pb::Listener) -> Self {
        Self {
            name: spec.name.clone(),
            protocol: spec.protocol(),
            direction: spec.direction(),
            tcp_cluster: spec.tcp_cluster.clone(),
            transparent: spec.transparent,
            outbound_policy: spec.outbound_traffic_policy(),
        }
    }
}

pub enum Forward {
    Http,
    Tcp(TcpTarget),
}

/// Where a TCP connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpTarget {
    Cluster {
        cluster: String,
        subset: String,
    },
    OriginalDst(SocketAddr),
    /// No route, no fallback, or REGISTRY_ONLY: the connection is closed.
    Close,
}

/// How the connection on `stream` to `dst` (its original destination when redirected) is
/// forwarded. Reads nothing from the stream: it only peeks.
pub async fn classify(
    stream: &TcpStream,
    listener: &L4Listener,
    snapshot: &Snapshot,
    dst: SocketAddr,
    original_dst: Option<SocketAddr>,
) -> Forward {
    if let Some(routes) = snapshot.tcp_routes.get(&listener.name) {
        let sni = if routes.needs_sni(dst) {
            peek_sni(stream, MAX_HELLO_BYTES, SNI_PEEK_TIMEOUT)
                .await
                .ok()
                .flatten()
        } else {
            None
        };
        if let Some(route) = routes.select(dst, sni.as_deref()) {
            let d = route.pick(rand::random());
            tracing::debug!(
                listener = %listener.name,
                route = %route.name,
                %dst,
                sni = sni.as_deref().unwrap_or(""),
                cluster = %d.cluster,
                subset = %d.subset,
                "tcp route"
            );
            return Forward::Tcp(TcpTarget::Cluster {
                cluster: d.cluster.clone(),
                subset: d.subset.clone(),
            });
        }
    }
    match listener.protocol {
        pb::ListenerProtocol::Tcp => Forward::Tcp(fallback(listener, original_dst)),
        _ if listener.transparent
            && listener.direction == pb::Direction::Outbound
            && original_dst.is_some() =>
        {
            match sniff_http(stream, HTTP_SNIFF_TIMEOUT).await {
                Ok(true) => Forward::Http,
                Ok(false) => Forward::Tcp(fallback(listener, original_dst)),
                Err(_) => Forward::Tcp(TcpTarget::Close),
            }
        }
        _ => Forward::Http,
    }
}

/// A TCP connection no route took: the listener's `tcp_cluster`, else its original
/// destination unless outbound traffic is limited to the registry.
fn fallback(listener: &L4Listener, original_dst: Option<SocketAddr>) -> TcpTarget {
    if !listener.tcp_cluster.is_empty() {
        return TcpTarget::Cluster {
            cluster: listener.tcp_cluster.clone(),
            subset: String::new(),
        };
    }
    let registry_only = listener.direction == pb::Direction::Outbound
        && listener.outbound_policy == pb::OutboundTrafficPolicy::RegistryOnly;
    match original_dst {
        Some(dst) if !registry_only => TcpTarget::OriginalDst(dst),
        _ => TcpTarget::Close,
    }
}
