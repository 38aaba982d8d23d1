//! Deciding, per accepted connection, how it is forwarded: by a layer 4 route, as HTTP, or
//! as TCP to the listener's fallback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::config::v1 as pb;
use tokio::net::TcpStream;

use super::context::ListenerSpec;
use super::http_sniff::sends_non_http;
use crate::config::Snapshot;
use crate::tcp_route::{MAX_HELLO_BYTES, PASSTHROUGH, peek_sni};
use crate::tls::SNIFF_TIMEOUT;
use crate::upstream::{Cluster, Target};

/// How long a connection whose route depends on its server name may take to send its
/// ClientHello (Envoy's default listener filter timeout is 15 s; clients send it at once);
/// then it is routed as one without a server name, so a silent client never holds a task
/// forever.
pub const SNI_PEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a transparent HTTP listener waits for a client's first bytes to tell HTTP from
/// other protocols; a client silent that long is served as HTTP.
pub const HTTP_SNIFF_TIMEOUT: Duration = SNIFF_TIMEOUT;

/// How a connection is forwarded.
#[derive(Debug)]
pub enum Forward {
    Http,
    /// As TCP to this target; `None` (no route, no fallback, REGISTRY_ONLY, a cluster the
    /// snapshot lacks): the connection is closed.
    Tcp(Option<Target>),
}

/// How the connection on `stream` to `dst` (its original destination when redirected) is
/// forwarded, by `snapshot`: a cluster target holds the snapshot's `Arc` of the cluster, an
/// original destination goes through `passthrough`. Reads nothing from the stream: it only
/// peeks.
pub async fn classify(
    stream: &TcpStream,
    listener: &ListenerSpec,
    snapshot: &Snapshot,
    passthrough: &Arc<Cluster>,
    dst: SocketAddr,
    original_dst: Option<SocketAddr>,
) -> Forward {
    let to_original = || original_dst.map(|d| Target::original_dst(passthrough.clone(), d));
    let to_cluster = |cluster: &str, subset: &str| {
        let target = snapshot
            .clusters
            .get(cluster)
            .map(|c| Target::route_to(c, subset, original_dst));
        Forward::Tcp(target)
    };
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
            if d.cluster == PASSTHROUGH {
                return Forward::Tcp(to_original());
            }
            return to_cluster(&d.cluster, &d.subset);
        }
    }
    let fallback = || match fallback(listener, original_dst) {
        Fallback::Cluster => to_cluster(&listener.tcp_cluster, ""),
        Fallback::OriginalDst => Forward::Tcp(to_original()),
        Fallback::Close => Forward::Tcp(None),
    };
    match listener.protocol {
        pb::ListenerProtocol::Tcp => fallback(),
        _ if listener.transparent
            && listener.direction == pb::Direction::Outbound
            && original_dst.is_some() =>
        {
            match sends_non_http(stream, HTTP_SNIFF_TIMEOUT).await {
                Ok(false) => Forward::Http,
                Ok(true) => fallback(),
                Err(_) => Forward::Tcp(None),
            }
        }
        _ => Forward::Http,
    }
}

enum Fallback {
    Cluster,
    OriginalDst,
    Close,
}

/// A TCP connection no route took: the listener's `tcp_cluster`, else its original
/// destination unless outbound traffic is limited to the registry.
fn fallback(listener: &ListenerSpec, original_dst: Option<SocketAddr>) -> Fallback {
    if !listener.tcp_cluster.is_empty() {
        return Fallback::Cluster;
    }
    let registry_only = listener.direction == pb::Direction::Outbound
        && listener.outbound_policy == pb::OutboundTrafficPolicy::RegistryOnly;
    match original_dst {
        Some(_) if !registry_only => Fallback::OriginalDst,
        _ => Fallback::Close,
    }
}

#[cfg(test)]
mod tests {
    //! The transparent path needs an iptables redirect to get an original destination from
    //! the kernel; here the original destination is given, the connection is a real one.

    use std::sync::Arc;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::identity::IdentitySlot;
    use crate::metrics::Metrics;
    use crate::upstream::Endpoints;

    fn snapshot(listener: serde_json::Value) -> Snapshot {
        let cfg = serde_json::from_value(serde_json::json!({
            "listeners": [listener],
            "routeTables": [{ "name": "out" }],
            "clusters": [{ "name": "db", "endpoints": [{ "address": "127.0.0.1:1" }] }],
        }))
        .unwrap();
        Snapshot::compile(
            cfg,
            None,
            &Metrics::default(),
            &Arc::new(IdentitySlot::default()),
        )
        .unwrap()
    }

    fn transparent_http(policy: &str) -> serde_json::Value {
        serde_json::json!({
            "name": "outbound", "address": "127.0.0.1:0", "direction": "OUTBOUND",
            "protocol": "HTTP", "routeTable": "out", "transparent": true,
            "outboundTrafficPolicy": policy,
            "tcpRoutes": [{
                "name": "shop/db",
                "matches": [{ "destinationPort": 5432, "destinationSubnets": ["198.18.10.1"] }],
                "clusters": [{ "cluster": "db", "weight": 100 }]
            }, {
                "name": "external-mongo",
                "matches": [{ "destinationSubnets": ["198.18.200.0/24"] }],
                "clusters": [{ "cluster": "PassthroughCluster", "weight": 100 }]
            }]
        })
    }

    /// A forwarding decision by names, for assertions.
    #[derive(Debug, PartialEq, Eq)]
    enum TcpTarget {
        Cluster { cluster: String, subset: String },
        OriginalDst(SocketAddr),
        Close,
    }

    /// Classifies a real connection whose client first sends `first` (nothing when empty),
    /// as if redirected from `original_dst`.
    async fn classify_with(snap: &Snapshot, first: &[u8], original_dst: &str) -> Forward {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        if !first.is_empty() {
            client.write_all(first).await.unwrap();
        }
        let (stream, _) = listener.accept().await.unwrap();
        let spec = ListenerSpec::new(&snap.source.listeners[0]);
        let dst: SocketAddr = original_dst.parse().unwrap();
        let passthrough = crate::upstream::passthrough_cluster(&Metrics::default());
        classify(&stream, &spec, snap, &passthrough, dst, Some(dst)).await
    }

    fn target(f: Forward) -> Option<TcpTarget> {
        match f {
            Forward::Http => None,
            Forward::Tcp(None) => Some(TcpTarget::Close),
            Forward::Tcp(Some(t)) => Some(match t.endpoints {
                Endpoints::Subset(subset) => TcpTarget::Cluster {
                    cluster: t.cluster.name.clone(),
                    subset,
                },
                Endpoints::OriginalDst(e) => TcpTarget::OriginalDst(e.address),
            }),
        }
    }

    #[tokio::test]
    async fn a_cluster_target_holds_the_classifying_snapshots_cluster() {
        let snap = snapshot(transparent_http("ALLOW_ANY"));
        let Forward::Tcp(Some(t)) = classify_with(&snap, b"\x00", "198.18.10.1:5432").await else {
            panic!("the route to db takes the connection");
        };
        assert!(Arc::ptr_eq(&t.cluster, &snap.clusters["db"]));
    }
    #[tokio::test]
    async fn transparent_listener_routes_by_original_destination_then_sniffs() {
        let snap = snapshot(transparent_http("ALLOW_ANY"));
        let db = TcpTarget::Cluster {
            cluster: "db".into(),
            subset: String::new(),
        };
        // A route takes the connection before any sniffing, whatever it sends.
        let routed = classify_with(&snap, b"GET / HTTP/1.1\r\n", "198.18.10.1:5432").await;
        assert_eq!(target(routed), Some(db));
        // No route: HTTP stays HTTP.
        let http = classify_with(&snap, b"GET / HTTP/1.1\r\n", "198.18.10.2:5432").await;
        assert_eq!(target(http), None);
        // Not HTTP: forwarded as TCP to where it was going.
        let binary = classify_with(
            &snap,
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
            "198.18.10.2:5432",
        );
        assert_eq!(
            target(binary.await),
            Some(TcpTarget::OriginalDst("198.18.10.2:5432".parse().unwrap()))
        );
        // A route to the passthrough cluster: the original destination, sniffing skipped.
        let external = classify_with(&snap, b"GET / HTTP/1.1\r\n", "198.18.200.7:27017").await;
        assert_eq!(
            target(external),
            Some(TcpTarget::OriginalDst(
                "198.18.200.7:27017".parse().unwrap()
            ))
        );
        // A client that sends nothing at first stays HTTP (a slow HTTP client keeps its
        // routing and mTLS); server-first protocols need a declared TCP port, as in Istio.
        let silent = classify_with(&snap, b"", "198.18.10.3:3306").await;
        assert_eq!(target(silent), None);
        // A client that sends something other than a request line is TCP.
        let long = classify_with(&snap, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", "198.18.10.3:3306").await;
        assert_eq!(
            target(long),
            Some(TcpTarget::OriginalDst("198.18.10.3:3306".parse().unwrap()))
        );
    }

    #[tokio::test]
    async fn registry_only_closes_unknown_tcp() {
        let snap = snapshot(transparent_http("REGISTRY_ONLY"));
        let unknown = classify_with(&snap, b"\x16\x03\x01\x00\x05", "198.18.10.2:443").await;
        assert_eq!(target(unknown), Some(TcpTarget::Close));
        // The registry's own TCP service is still reached.
        let known = classify_with(&snap, b"\x00", "198.18.10.1:5432").await;
        assert!(matches!(target(known), Some(TcpTarget::Cluster { .. })));
    }
}
