//! Serving one accepted connection: HTTP (HTTP/1.1 or HTTP/2 by preface) or raw TCP.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::activity::{Expired, Timeouts};
use super::authorize::authorize;
use super::context::{ConnConfig, ConnContext};
use super::idle::{TrackedBody, TrackedIo, Tracker};
use super::l4::Forward;
use super::splice::{self, Ended, SpliceLimits};
use crate::http::Proxy;
use crate::telemetry::overrides::SideOverrides;
use crate::telemetry::tcp::{CountedStream, DeferredRecord};
use crate::telemetry::{ResponseFlag, Telemetry};
use crate::tls::peer_exchange::{self, FrameReader};
use crate::upstream::connect::ConnectError;
use crate::upstream::{Alpn, HashInput, Target};

/// A connection's stream once PeerAuthentication let it in: a socket or a TLS session.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// What serving one accepted connection needs.
pub struct Serve {
    pub proxy: Arc<Proxy>,
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    pub drain: CancellationToken,
    pub timeouts: Timeouts,
    /// What the snapshot read at accept says about this connection.
    pub config: ConnConfig,
}

impl Serve {
    pub async fn run(self, io: impl Io, conn: ConnContext) {
        match self.config.forward {
            Forward::Tcp(target) => {
                // AuthorizationPolicy for a TCP connection: a denied one is closed before any
                // upstream connection is made.
                if let Some(security) = &self.config.security
                    && authorize(security, &conn, None).is_err()
                {
                    return;
                }
                let metrics = TcpMetrics {
                    telemetry: &self.proxy.metrics().istio,
                    overrides: self.config.tcp_metrics,
                };
                serve_tcp(io, &conn, target, metrics).await
            }
            Forward::Http => {
                let serving = Serving {
                    proxy: self.proxy,
                    builder: self.builder,
                    drain: self.drain,
                    timeouts: self.timeouts,
                };
                serve_http(io, conn, serving).await
            }
        }
    }
}

/// Largest request head (request line and headers) accepted; larger gets 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The HTTP server settings shared by every downstream connection. Hyper's header-read
/// timeout is off: it would also cut idle keep-alive connections; [`Tracker`] times both.
pub fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(1024)
        .keep_alive_interval(Some(Duration::from_secs(60)));
    b
}

/// What serving HTTP on a connection needs.
pub struct Serving {
    pub proxy: Arc<Proxy>,
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    pub drain: CancellationToken,
    pub timeouts: Timeouts,
}

pub async fn serve_http(stream: impl Io, conn: ConnContext, serving: Serving) {
    let Serving {
        proxy,
        builder,
        drain,
        timeouts,
    } = serving;
    let conn = Arc::new(conn);
    let peer = conn.peer;
    let tracker = Tracker::new(timeouts);
    let requests = tracker.clone();
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        let conn = conn.clone();
        let in_flight = requests.request();
        // Boxed: hyper keeps a slot of the service future's size for every connection, idle
        // or not, and moves the future into it per request. A request's state lives on the
        // heap only while the request does.
        Box::pin(async move {
            let resp = proxy.handle(&conn, req).await;
            Ok::<_, Infallible>(resp.map(|body| TrackedBody::new(body, in_flight)))
        })
    });
    let io = TrackedIo::new(stream, tracker.clone());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        r = connection.as_mut() => r,
        why = tracker.expired() => {
            match why {
                // Nothing in flight: a graceful close (HTTP/2 GOAWAY) loses nothing.
                Expired::Idle => {
                    tracing::debug!(%peer, "downstream connection idle, closing");
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
                Expired::HeaderRead => {
                    tracing::debug!(%peer, "downstream request headers too slow, closing");
                    Ok(())
                }
            }
        }
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

/// Where a TCP connection's standard metrics go, and how the Telemetry overrides of its
/// side change them.
pub struct TcpMetrics<'a> {
    pub telemetry: &'a Arc<Telemetry>,
    pub overrides: Option<Arc<SideOverrides>>,
}

/// Connects to an endpoint of `target` (with the cluster's load balancing and upstream TLS
/// policy) and splices the two connections. The endpoint counts the connection in flight
/// while it lasts.
pub async fn serve_tcp(
    stream: impl Io,
    conn: &ConnContext,
    target: Option<Target>,
    metrics: TcpMetrics<'_>,
) {
    let TcpMetrics {
        telemetry,
        overrides,
    } = metrics;
    let overrides_ref = overrides.as_ref();
    let Some(target) = target else {
        tracing::debug!(peer = %conn.peer, listener = %conn.listener.name, "tcp: no upstream, closing");
        return;
    };
    let hash = target.cluster.hash_key(&HashInput {
        headers: &http::HeaderMap::new(),
        query: None,
        source_ip: conn.peer.ip(),
    });
    if let Some(first_answers) = target.first_answers() {
        Box::pin(first_answers).await;
    }
    let Some(picked) = target.pick(hash, &[]) else {
        tracing::debug!(peer = %conn.peer, cluster = %target.cluster.name, "tcp: no endpoint, closing");
        let flag = Some(ResponseFlag::NoHealthyUpstream);
        drop(telemetry.tcp_open(conn, &target.cluster, None, None, flag, overrides_ref));
        return;
    };
    let endpoint = picked.endpoint();
    let mut upstream = match target
        .cluster
        .pool
        .connect_own(endpoint.address, &endpoint.transport, Alpn::Tcp)
        .await
    {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "tcp: upstream connect failed");
            let flag = Some(match e {
                ConnectError::Overflow => ResponseFlag::UpstreamOverflow,
                _ => ResponseFlag::UpstreamConnectionFailure,
            });
            let transport = Some(&endpoint.transport);
            drop(telemetry.tcp_open(conn, &target.cluster, transport, None, flag, overrides_ref));
            return;
        }
    };
    let transport = &endpoint.transport;
    let limits = SpliceLimits {
        idle: target.cluster.tcp_idle_timeout,
        max_duration: target.cluster.max_connection_duration,
    };
    if !upstream.exchanges_peer_metadata() {
        let record = telemetry.tcp_open(
            conn,
            &target.cluster,
            Some(transport),
            None,
            None,
            overrides_ref,
        );
        splice(CountedStream::new(stream, record), upstream, limits).await;
        return;
    }
    // The upstream proxy agreed to exchange metadata: ours goes first, theirs is read off the
    // front of what it sends while the client's bytes already flow.
    if let Err(e) = peer_exchange::write(&mut upstream, telemetry.local_header().as_ref()).await {
        tracing::debug!(error = %e, "tcp: metadata to the upstream proxy not sent");
        let flag = Some(ResponseFlag::UpstreamConnectionFailure);
        drop(telemetry.tcp_open(
            conn,
            &target.cluster,
            Some(transport),
            None,
            flag,
            overrides_ref,
        ));
        return;
    }
    let record = DeferredRecord::new({
        let (telemetry, conn) = (telemetry.clone(), conn.clone());
        let (cluster, transport) = (target.cluster.clone(), transport.clone());
        let overrides = overrides.clone();
        move |metadata| {
            let overrides = overrides.as_ref();
            telemetry.tcp_open(&conn, &cluster, Some(&transport), metadata, None, overrides)
        }
    });
    let opens = record.clone();
    let upstream = FrameReader::new(upstream, move |metadata| opens.open(metadata.as_ref()));
    splice(CountedStream::deferred(stream, record), upstream, limits).await;
}

async fn splice(downstream: impl Io, upstream: impl Io, limits: SpliceLimits) {
    let ended = splice::splice(downstream, upstream, limits).await;
    if ended != Ended::Closed {
        tracing::debug!(?ended, "tcp: connection closed by the proxy");
    }
}
