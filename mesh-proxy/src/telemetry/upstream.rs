//! What the forwarding code tells the recorder about the upstream side of a request: the
//! destination service, and, when the connection was mesh mTLS, the destination's workload
//! from its peer metadata and its principal from the identities its certificate was checked
//! against. Carried as a response extension.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use http::{HeaderMap, HeaderValue};

use super::labels::{PeerLabels, ServiceLabels};
use super::{PEER_METADATA, Telemetry, peer};
use crate::upstream::{Cluster, Transport};

#[derive(Debug, Clone, Default)]
pub struct UpstreamInfo {
    pub service: Option<Arc<ServiceLabels>>,
    /// The cluster, whose name the request's span and access log show (shared, not copied).
    pub cluster: Option<Arc<Cluster>>,
    /// The destination as labels; `None` unless the connection was mesh mTLS.
    pub peer: Option<Arc<PeerLabels>>,
    /// Request body bytes read from the downstream, counted as they flow.
    pub request_bytes: Option<Arc<AtomicU64>>,
    /// gRPC messages read from the downstream, counted as they flow.
    pub request_messages: Option<Arc<AtomicU64>>,
    /// The endpoint of the attempt that answered (or failed last).
    pub host: Option<SocketAddr>,
}

impl Telemetry {
    /// Adds this proxy's metadata to a request about to go upstream, on mesh mTLS only: a
    /// plaintext or TLS-originated upstream is outside the mesh and learns nothing.
    pub fn announce(&self, headers: &mut HeaderMap, transport: &Transport) {
        if let Some(v) = self.announcement(transport) {
            headers.insert(PEER_METADATA, v);
        }
    }

    /// The peer metadata header value [`Self::announce`] writes, if any.
    pub fn announcement(&self, transport: &Transport) -> Option<HeaderValue> {
        transport.mesh_identities()?;
        self.local_header()
    }

    /// Strips the peer metadata from an upstream response, and reads it only when the
    /// connection was mesh mTLS. The principal is the identity the certificate was checked
    /// against when the endpoint has exactly one.
    pub fn upstream_peer(
        &self,
        headers: &mut HeaderMap,
        transport: &Transport,
    ) -> Option<Arc<PeerLabels>> {
        let header = peer::take(headers);
        if !self.is_enabled() {
            return None;
        }
        let identities = transport.mesh_identities()?;
        let principal = match identities {
            [one] => one.as_str(),
            _ => peer::UNKNOWN,
        };
        Some(self.peer(header.as_ref(), principal))
    }
}

/// Adds what the forwarding code learned to the response's [`UpstreamInfo`].
pub fn note<B>(resp: &mut http::Response<B>, edit: impl FnOnce(&mut UpstreamInfo)) {
    match resp.extensions_mut().get_mut::<UpstreamInfo>() {
        Some(info) => edit(info),
        None => {
            let mut info = UpstreamInfo::default();
            edit(&mut info);
            resp.extensions_mut().insert(info);
        }
    }
}
