//! Serving one accepted connection: HTTP (HTTP/1.1 or HTTP/2 by preface) or raw TCP.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::pin::{Pin, pin};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::activity::{Expired, Timeouts};
use super::authorize::authorize;
use super::context::{ConnConfig, ConnContext};
use super::h1;
use super::idle::{TrackedBody, TrackedIo, Tracker};
use super::l4::Forward;
use super::on_wake::OnWake;
use super::rewind::Rewind;
use super::splice::{self, Ended, SpliceLimits};
use crate::http::Proxy;
use crate::http::body::RequestBody;
use crate::telemetry::RecordedBody;
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
    pub builder: Arc<HttpServers>,
    pub drain: CancellationToken,
    pub timeouts: Timeouts,
    /// Counts this listener's parked connections.
    pub parked: Gauge,
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
                // Boxed, as HTTP/2 below: the future of this connection is then the size of
                // what it serves, not of the largest protocol.
                Box::pin(serve_tcp(io, &conn, target, metrics)).await
            }
            Forward::Http => {
                let serving = Serving {
                    proxy: self.proxy,
                    builder: self.builder,
                    drain: self.drain,
                    timeouts: self.timeouts,
                    parked: self.parked,
                };
                serve_http(io, conn, serving).await
            }
        }
    }
}

/// Largest request head (request line and headers) accepted; larger gets 431.
pub(super) const MAX_HEADER_BYTES: usize = 64 * 1024;
/// What a client speaking HTTP/2 with prior knowledge sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The HTTP server settings shared by every downstream connection.
pub struct HttpServers {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

/// Hyper's header-read timeout is off: it would also cut idle keep-alive connections;
/// [`Tracker`] times both.
pub fn http_builder() -> HttpServers {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(1024)
        .keep_alive_interval(Some(Duration::from_secs(60)));
    HttpServers { h1, h2 }
}

/// What serving HTTP on a connection needs.
pub struct Serving {
    pub proxy: Arc<Proxy>,
    pub builder: Arc<HttpServers>,
    pub drain: CancellationToken,
    pub timeouts: Timeouts,
    /// Counts this listener's parked connections.
    pub parked: Gauge,
}

/// HTTP/2 (by its preface) or HTTP/1.1 on one downstream connection.
pub async fn serve_http(stream: impl Io, conn: ConnContext, serving: Serving) {
    let Serving {
        proxy,
        builder,
        drain,
        timeouts,
        parked,
    } = serving;
    let peer = conn.peer;
    let tracker = Tracker::new(timeouts);
    let service = Downstream {
        proxy,
        conn: Arc::new(conn),
        tracker: tracker.clone(),
    };
    let mut io = TrackedIo::new(stream, tracker.clone());
    let sniffed = tokio::select! {
        s = sniff(&mut io) => s,
        _ = tracker.expired() => return,
        _ = drain.cancelled() => return,
    };
    let (h2, first) = match sniffed {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "downstream connection ended before a request");
            return;
        }
    };
    let ended = if h2 {
        let io = TokioIo::new(Rewind::new(io, first));
        let connection = builder.h2.serve_connection(io, service);
        // Boxed: an HTTP/2 connection's state is large, and an HTTP/1.1 connection (parked
        // for most of its life) would otherwise carry its size.
        Box::pin(serve_h2(connection, peer, &tracker, &drain)).await
    } else {
        let parking = Parking {
            peer,
            builder: &builder.h1,
            tracker: &tracker,
            drain: &drain,
            parked: &parked,
        };
        serve_h1(io, first, service, parking).await
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "downstream connection ended with an error");
    }
}

type Io1<S> = TokioIo<Rewind<TrackedIo<S>>>;
type Http1Connection<S> = http1::UpgradeableConnection<Io1<S>, Downstream>;
type Http2Connection<S> = http2::Connection<Io1<S>, Downstream, TokioExecutor>;
pub(super) type Handled =
    Pin<Box<dyn Future<Output = Result<Response<TrackedBody<RecordedBody>>, Infallible>> + Send>>;

/// The requests of one downstream connection, handed to the proxy.
#[derive(Clone)]
pub(super) struct Downstream {
    proxy: Arc<Proxy>,
    conn: Arc<ConnContext>,
    tracker: Tracker,
}

impl Service<Request<Incoming>> for Downstream {
    type Response = Response<TrackedBody<RecordedBody>>;
    type Error = Infallible;
    type Future = Handled;

    fn call(&self, req: Request<Incoming>) -> Handled {
        let parkable = leaves_nothing_unread(&req);
        self.begin(req.map(RequestBody::from), parkable)
    }
}

impl Downstream {
    /// Starts handling a request; `parkable` when the connection may be parked once idle
    /// after it.
    pub(super) fn begin(&self, req: Request<RequestBody>, parkable: bool) -> Handled {
        let proxy = self.proxy.clone();
        let conn = self.conn.clone();
        let (in_flight, began) = self.tracker.request(parkable);
        // Boxed: a connection keeps a slot of its future's size, idle or not (hyper moves
        // the future into it per request). A request's state lives on the heap only while
        // the request does.
        Box::pin(async move {
            let resp = proxy.handle(&conn, req, began).await;
            Ok(resp.map(|body| TrackedBody::new(body, in_flight)))
        })
    }
}

/// After an HTTP/1.x request with no body, nothing of it can still be unread when its
/// response is done, so the connection's HTTP state may be let go while it idles. (An
/// upgrade that happens ends the HTTP connection, so there is nothing to park; one that is
/// refused leaves an ordinary connection.)
fn leaves_nothing_unread(req: &Request<Incoming>) -> bool {
    req.version() <= Version::HTTP_11 && req.body().is_end_stream()
}

/// Reads until the first bytes tell HTTP/2's preface from anything else. `None`: the client
/// closed before sending a byte.
async fn sniff(io: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<(bool, Bytes)>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    loop {
        let read = io.read(&mut buf[n..]).await?;
        if read == 0 {
            return Ok((n > 0).then(|| (false, Bytes::copy_from_slice(&buf[..n]))));
        }
        n += read;
        let h2_so_far = buf[..n] == H2_PREFACE[..n];
        if !h2_so_far || n == H2_PREFACE.len() {
            return Ok(Some((h2_so_far, Bytes::copy_from_slice(&buf[..n]))));
        }
    }
}

/// Says why a connection is closed for doing nothing.
pub(super) fn log_expiry(peer: SocketAddr, why: Expired) {
    match why {
        Expired::Idle => tracing::debug!(%peer, "downstream connection idle, closing"),
        Expired::HeaderRead => {
            tracing::debug!(%peer, "downstream request headers too slow, closing")
        }
        Expired::Park => {}
    }
}

async fn serve_h2<S: Io>(
    connection: Http2Connection<S>,
    peer: SocketAddr,
    tracker: &Tracker,
    drain: &CancellationToken,
) -> hyper::Result<()> {
    tokio::pin!(connection);
    loop {
        let watch = pin!(alarm(tracker, drain));
        let mut alarm = OnWake::new(watch);
        let fired = tokio::select! {
            r = connection.as_mut() => return r,
            fired = &mut alarm => fired,
        };
        match fired {
            // Nothing in flight: a graceful close (GOAWAY) loses nothing.
            Some(why @ Expired::Idle) => {
                log_expiry(peer, why);
                connection.as_mut().graceful_shutdown();
                return connection.await;
            }
            Some(why @ Expired::HeaderRead) => {
                log_expiry(peer, why);
                return Ok(());
            }
            // Never asked for: HTTP/2 requests do not make a connection parkable.
            Some(Expired::Park) => tracker.parked(),
            None => {
                // Finish what is in flight, refuse new requests.
                connection.as_mut().graceful_shutdown();
                return connection.await;
            }
        }
    }
}

/// What an HTTP/1.1 connection needs to park and come back.
struct Parking<'a> {
    peer: SocketAddr,
    builder: &'a http1::Builder,
    tracker: &'a Tracker,
    drain: &'a CancellationToken,
    parked: &'a Gauge,
}

/// How one stretch of an HTTP/1.1 connection's life with HTTP state ended.
enum Stretch<S: Io> {
    Ended(hyper::Result<()>),
    /// Idle: the stream back, with what was read of the next request.
    Parked(TrackedIo<S>, Bytes),
}

/// Serves HTTP/1.1 requests: with the connection's own codec ([`h1`]) while they are of the
/// shape it serves, with hyper's otherwise. A connection idle for
/// [`PARK_AFTER`](super::activity::PARK_AFTER) after a request that left nothing unread is
/// parked: its HTTP state (hyper's read and write buffers and state, about 24 KB, or the
/// codec's buffers) is dropped, and the stream waits for its next bytes with none of it;
/// they start the codec again. Pipelined bytes hyper had read come back with the stream, so
/// nothing is lost.
async fn serve_h1<S: Io>(
    mut io: TrackedIo<S>,
    mut first: Bytes,
    service: Downstream,
    parking: Parking<'_>,
) -> hyper::Result<()> {
    let Parking {
        peer,
        builder,
        tracker,
        drain,
        parked,
    } = parking;
    let serving = h1::Serving {
        peer,
        downstream: &service,
        tracker,
        drain,
        parked,
    };
    loop {
        match h1::serve(&mut io, first, &serving).await {
            h1::Ended::Closed => return Ok(()),
            h1::Ended::Handoff(read) => first = read,
        }
        let connection = builder
            .serve_connection(TokioIo::new(Rewind::new(io, first)), service.clone())
            .with_upgrades();
        // Boxed, so a parked connection's future does not keep its size.
        match run_h1(Box::pin(connection), peer, tracker, drain).await {
            Stretch::Ended(r) => return r,
            Stretch::Parked(back, read) => (io, first) = (back, read),
        }
    }
}

async fn run_h1<S: Io>(
    mut connection: Pin<Box<Http1Connection<S>>>,
    peer: SocketAddr,
    tracker: &Tracker,
    drain: &CancellationToken,
) -> Stretch<S> {
    loop {
        let watch = pin!(alarm(tracker, drain));
        let mut alarm = OnWake::new(watch);
        let fired = tokio::select! {
            r = connection.as_mut() => return Stretch::Ended(r),
            fired = &mut alarm => fired,
        };
        let Some(why) = fired else {
            // Draining: finish what is in flight, then close.
            connection.as_mut().graceful_shutdown();
            return Stretch::Ended(connection.await);
        };
        match why {
            Expired::Idle => {
                log_expiry(peer, why);
                connection.as_mut().graceful_shutdown();
                return Stretch::Ended(connection.await);
            }
            Expired::HeaderRead => {
                log_expiry(peer, why);
                return Stretch::Ended(Ok(()));
            }
            Expired::Park => {
                tracker.parked();
                // A response still being written (a client not reading) keeps its state.
                if !tracker.flushed() {
                    continue;
                }
                let Some(parts) = Pin::into_inner(connection).into_parts() else {
                    // Upgraded: the connection belongs to the upgrade now.
                    return Stretch::Ended(Ok(()));
                };
                let (io, unread) = parts.io.into_inner().into_parts();
                let read = match (unread.is_empty(), parts.read_buf.is_empty()) {
                    (_, true) => unread,
                    (true, false) => parts.read_buf,
                    (false, false) => [unread, parts.read_buf].concat().into(),
                };
                return Stretch::Parked(io, read);
            }
        }
    }
}

/// The connection's expiry (`Some`) or the proxy's drain (`None`), whichever comes first.
/// Wrapped in [`OnWake`] beside a connection: polled only when one of them woke it.
pub(super) async fn alarm(tracker: &Tracker, drain: &CancellationToken) -> Option<Expired> {
    tokio::select! {
        why = tracker.expired() => Some(why),
        _ = drain.cancelled() => None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn sniffing_tells_the_http2_preface_from_http1_and_keeps_the_bytes() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let sniffing = tokio::spawn(async move { sniff(&mut server).await.unwrap() });
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(&H2_PREFACE[10..]).await.unwrap();
        let (h2, first) = sniffing.await.unwrap().unwrap();
        assert!(h2, "the preface split over two reads");
        assert_eq!(&first[..], &H2_PREFACE[..]);

        let post = b"POST /upload HTTP/1.1\r\nhost: svc\r\n\r\n";
        let (h2, first) = sniff(&mut &post[..]).await.unwrap().unwrap();
        assert!(!h2, "24 bytes of a request are not the preface");
        assert_eq!(&first[..], &post[..24]);

        let (h2, first) = sniff(&mut &b"PRX"[..]).await.unwrap().unwrap();
        assert!(!h2);
        assert_eq!(&first[..], b"PRX");
        assert!(sniff(&mut &b""[..]).await.unwrap().is_none());
    }
}
