//! Serving one accepted connection: HTTP (HTTP/1.1 or HTTP/2 by preface) or raw TCP.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::http::{ConnInfo, Proxy};
use crate::upstream::HashInput;

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
    stream: TcpStream,
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

pub async fn serve_tcp(
    mut stream: TcpStream,
    conn: ConnInfo,
    proxy: Arc<Proxy>,
    tcp_cluster: String,
) {
    let snapshot = proxy.state.load_full();
    let target = if tcp_cluster.is_empty() {
        conn.original_dst
            .map(|dst| (proxy.passthrough_pool().clone(), dst))
    } else {
        snapshot.clusters.get(&tcp_cluster).and_then(|c| {
            let balancer = c.balancer("")?;
            let hash = c.hash_key(&HashInput {
                headers: &http::HeaderMap::new(),
                query: None,
                source_ip: conn.peer.ip(),
            });
            let index = balancer.pick(hash, &[])?;
            Some((c.pool.clone(), balancer.endpoints()[index].address))
        })
    };
    let Some((pool, addr)) = target else {
        tracing::debug!(peer = %conn.peer, "tcp: no upstream, closing");
        return;
    };
    let mut upstream = match pool.connect(addr).await {
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
