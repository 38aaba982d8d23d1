//! Serving one accepted connection: HTTP (HTTP/1.1 or HTTP/2 by preface) or raw TCP.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::authorize::authorize;
use super::l4::TcpTarget;
use crate::config::ListenerSecurity;
use crate::http::{ConnInfo, Proxy};
use crate::upstream::{Alpn, HashInput, Target};

/// A connection's stream once PeerAuthentication let it in: a socket or a TLS session.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// What serving one accepted connection needs.
pub struct Serve {
    pub proxy: Arc<Proxy>,
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    pub drain: CancellationToken,
    /// `Some` for a connection forwarded as TCP (a TCP listener's, one a layer 4 route
    /// took, or a transparent listener's non-HTTP one); `None` for HTTP.
    pub tcp: Option<TcpTarget>,
    /// Inbound listeners only.
    pub security: Option<Arc<ListenerSecurity>>,
}

impl Serve {
    pub async fn run(mut self, io: impl Io, conn: ConnInfo) {
        if let Some(target) = self.tcp.take() {
            if let Some(security) = &self.security
                && !tcp_allowed(security, &conn)
            {
                return;
            }
            return serve_tcp(io, conn, self.proxy, target).await;
        }
        serve_http(io, conn, self.proxy, self.builder, self.drain).await
    }
}

/// AuthorizationPolicy for a TCP connection: a denied one is closed before any upstream
/// connection is made.
fn tcp_allowed(security: &ListenerSecurity, conn: &ConnInfo) -> bool {
    authorize(security, conn, None).is_ok()
}

/// Largest request head (request line and headers) accepted; larger gets 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The HTTP server settings shared by every downstream connection. A client must send its
/// request headers within `header_read_timeout`, or it is cut off.
pub fn http_builder(header_read_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(1024)
        .keep_alive_interval(Some(Duration::from_secs(60)));
    b
}

pub async fn serve_http(
    stream: impl Io,
    conn: ConnInfo,
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: CancellationToken,
) {
    let conn = Arc::new(conn);
    let peer = conn.peer;
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(proxy.handle(&conn, req).await) }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        r = connection.as_mut() => r,
        _ = drain.cancelled() => {
            // Finish what is in flight, refuse new requests (HTTP/2 GOAWAY, HTTP/1.1 close).
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "downstream connection ended with an error");
    }
}

/// Connects to `target` (with the cluster's load balancing and upstream TLS policy) and
/// splices the two connections. The endpoint counts the connection in flight while it lasts.
pub async fn serve_tcp(mut stream: impl Io, conn: ConnInfo, proxy: Arc<Proxy>, target: TcpTarget) {
    let snapshot = proxy.state.load_full();
    let upstream = match &target {
        TcpTarget::OriginalDst(dst) => {
            Some(Target::original_dst(proxy.passthrough().clone(), *dst))
        }
        TcpTarget::Cluster { cluster, subset } => snapshot
            .clusters
            .get(cluster)
            .map(|c| Target::subset(c.clone(), subset.as_str())),
        TcpTarget::Close => None,
    };
    drop(snapshot);
    let hash = upstream.as_ref().and_then(|t| {
        t.cluster.hash_key(&HashInput {
            headers: &http::HeaderMap::new(),
            query: None,
            source_ip: conn.peer.ip(),
        })
    });
    let Some(picked) = upstream.as_ref().and_then(|t| t.pick(hash, &[])) else {
        tracing::debug!(peer = %conn.peer, ?target, "tcp: no upstream, closing");
        return;
    };
    let endpoint = picked.endpoint();
    let pool = &upstream.as_ref().expect("picked from it").cluster.pool;
    let mut upstream = match pool
        .connect_with(endpoint.address, &endpoint.transport, Alpn::None)
        .await
    {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "tcp: upstream connect failed");
            return;
        }
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await {
        tracing::debug!(error = %e, "tcp: stream ended");
    }
}
