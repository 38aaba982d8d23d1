//! Serving one accepted connection: HTTP (HTTP/1.1 or HTTP/2 by preface) or raw TCP.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::l4::TcpTarget;
use crate::authz::{Attributes, Decision};
use crate::config::ListenerSecurity;
use crate::http::{ConnInfo, Proxy};
use crate::upstream::{Alpn, HashInput};

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
    let authz = &security.authorizer;
    if authz.is_empty() {
        return true;
    }
    let attrs = Attributes {
        source_principal: conn.principal(),
        source_namespace: None,
        source_ip: conn.peer.ip(),
        remote_ip: conn.peer.ip(),
        destination_ip: conn.original_dst.map(|a| a.ip()),
        destination_port: conn.destination_port,
        sni: conn.sni(),
        http: None,
    };
    if authz.has_audit() {
        let audited = authz.audited(&attrs);
        if !audited.is_empty() {
            tracing::info!(
                listener = %conn.listener.name,
                peer = %conn.peer,
                policies = ?audited,
                "tcp connection audited"
            );
        }
    }
    match authz.check(&attrs) {
        Decision::Allow => true,
        Decision::Deny { policy } => {
            tracing::debug!(
                listener = %conn.listener.name,
                peer = %conn.peer,
                %policy,
                "tcp connection denied by authorization policy"
            );
            false
        }
    }
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
/// splices the two connections.
pub async fn serve_tcp(mut stream: impl Io, conn: ConnInfo, proxy: Arc<Proxy>, target: TcpTarget) {
    let snapshot = proxy.state.load_full();
    let upstream = match &target {
        TcpTarget::OriginalDst(dst) => {
            let plain = crate::upstream::Transport::Plain;
            Some((proxy.passthrough_pool().clone(), *dst, plain))
        }
        TcpTarget::Cluster { cluster, subset } => snapshot.clusters.get(cluster).and_then(|c| {
            let balancer = c.balancer(subset)?;
            let hash = c.hash_key(&HashInput {
                headers: &http::HeaderMap::new(),
                query: None,
                source_ip: conn.peer.ip(),
            });
            let index = balancer.pick(hash, &[])?;
            let endpoint = &balancer.endpoints()[index];
            Some((c.pool.clone(), endpoint.address, endpoint.transport.clone()))
        }),
        TcpTarget::Close => None,
    };
    drop(snapshot);
    let Some((pool, addr, transport)) = upstream else {
        tracing::debug!(peer = %conn.peer, ?target, "tcp: no upstream, closing");
        return;
    };
    let mut upstream = match pool.connect_with(addr, &transport, Alpn::None).await {
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
