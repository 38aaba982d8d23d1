//! Connection pools of one cluster: HTTP/1.1 connections reused one request at a time, and one
//! multiplexed HTTP/2 connection per endpoint.

use crate::fast_map::FastMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::Notify;

use super::connect::{ConnectError, ConnectionStats, Counted, Keepalive, connect};
use super::h1::{self, Connection, Failed, H1Error};
use super::limits::{Admission, Held, Limits, Overflow, StreamHeld, Thresholds};
use super::transport::{Alpn, Transport, Upstream};
use crate::http::body::{BoxError, UpstreamBody};

/// Why a request could not be sent or got no response headers.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("upstream handshake failed: {0}")]
    Handshake(hyper::Error),
    #[error("upstream reset: {0}")]
    Request(hyper::Error),
    #[error("upstream reset: {0}")]
    Http1(H1Error),
    /// The connection failed before any of the request was written on it.
    #[error("upstream reset before the request: {0}")]
    Http1Unsent(H1Error),
    /// A circuit breaker refused the request.
    #[error("upstream overflow: {0}")]
    Overflow(#[from] Overflow),
}

impl SendError {
    /// An HTTP/2 stream the server refused before processing (safe to retry anywhere).
    pub fn is_refused_stream(&self) -> bool {
        let Self::Request(e) = self else { return false };
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(h2) = s.downcast_ref::<h2::Error>() {
                return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            }
            source = s.source();
        }
        false
    }

    /// The connection was lost before the request was written on it: nothing of it reached
    /// the upstream.
    pub fn is_before_request(&self) -> bool {
        match self {
            Self::Request(e) => e.is_canceled(),
            Self::Http1Unsent(_) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Connections older than this take no new requests (Envoy's `max_connection_duration`).
    pub max_connection_duration: Option<Duration>,
    /// Streams in flight on one HTTP/2 connection; past it another connection is opened, or
    /// the request waits for a stream (`maxConcurrentStreams`).
    pub max_concurrent_streams: Option<usize>,
    pub keepalive: Option<Keepalive>,
    pub thresholds: Thresholds,
}

struct IdleH1 {
    conn: Box<Connection>,
    since: Instant,
}

struct H2Conn {
    sender: http2::SendRequest<UpstreamBody>,
    last_used: Instant,
    uses: u32,
    born: Instant,
    /// Streams in flight, counted only under `maxConcurrentStreams`.
    in_flight: Arc<AtomicUsize>,
}

type H2Sender = http2::SendRequest<UpstreamBody>;
type H2Slot = Arc<tokio::sync::Mutex<Vec<H2Conn>>>;

/// Connections are kept per endpoint address and [`Transport::key`]: a plaintext connection
/// never serves a request meant for TLS, nor a TLS one checked for other identities.
type Key = (SocketAddr, u64);

pub struct Pool {
    settings: PoolSettings,
    stats: ConnectionStats,
    limits: Arc<Limits>,
    h1_idle: Mutex<FastMap<Key, Vec<IdleH1>>>,
    /// Per endpoint, behind an async lock so concurrent first requests share one handshake:
    /// one connection, or more under `maxConcurrentStreams`.
    h2: Mutex<FastMap<Key, H2Slot>>,
    /// Woken when a stream under `maxConcurrentStreams` ends.
    stream_freed: Arc<Notify>,
}

/// Upper bound on idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

impl Pool {
    pub fn new(settings: PoolSettings, stats: ConnectionStats) -> Arc<Self> {
        let pool = Self::unswept(settings, stats);
        spawn_sweeper(Arc::downgrade(&pool), sweep_period(&settings));
        pool
    }

    /// A pool without the idle sweeper: for configs that are only checked, never used.
    pub fn unswept(settings: PoolSettings, stats: ConnectionStats) -> Arc<Self> {
        let limits = Limits::new(
            settings.thresholds,
            stats.overflow.clone(),
            stats.retry_overflow.clone(),
        );
        Arc::new(Self {
            settings,
            stats,
            limits,
            h1_idle: Mutex::new(FastMap::default()),
            h2: Mutex::new(FastMap::default()),
            stream_freed: Arc::new(Notify::new()),
        })
    }

    pub fn settings(&self) -> PoolSettings {
        self.settings
    }

    pub fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    /// The cluster's circuit breakers; they live as long as the pool, across config updates
    /// that keep it.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// A plaintext connection.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Counted, ConnectError> {
        connect(
            addr,
            self.settings.connect_timeout,
            self.settings.keepalive,
            &self.stats,
        )
        .await
    }

    /// Whether a connection opened at `born` that has carried `uses` requests may carry
    /// another.
    fn reusable(&self, uses: u32, born: Instant) -> bool {
        self.settings
            .thresholds
            .max_requests_per_connection
            .is_none_or(|max| uses < max)
            && self.young(born)
    }

    /// Whether a connection opened at `born` is under `max_connection_duration`.
    fn young(&self, born: Instant) -> bool {
        self.settings
            .max_connection_duration
            .is_none_or(|max| born.elapsed() < max)
    }

    /// Room for one more connection under `maxConnections`, held for the connection's life
    /// (by the task that drives it). At the limit, an idle HTTP/1.1 connection is closed to make
    /// room, or the caller waits for a close, up to the connect timeout. `key`'s own idle
    /// connections (when given) are handed back instead when one turns up meanwhile.
    async fn connection_room(&self, key: Option<Key>) -> Result<Room, SendError> {
        if self.settings.thresholds.max_connections.is_none() {
            return Ok(Room::New(None));
        }
        let deadline = tokio::time::Instant::now() + self.settings.connect_timeout;
        loop {
            let freed = self.limits.connection_freed();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(idle) = key.and_then(|k| self.checkout_h1(k)) {
                return Ok(Room::Idle(idle));
            }
            if let Some(held) = self.limits.try_connection() {
                return Ok(Room::New(Some(held)));
            }
            self.close_one_idle();
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(self.limits.overflowed(Overflow::Connections).into());
            }
        }
    }

    /// Drops one idle HTTP/1.1 connection of any endpoint; its close frees its room.
    fn close_one_idle(&self) {
        let mut idle = self.h1_idle.lock().expect("pool lock");
        if let Some(list) = idle.values_mut().find(|l| !l.is_empty()) {
            list.pop();
        }
    }

    /// A connection secured as `transport` says; the connect timeout covers the TLS handshake.
    pub async fn connect_with(
        &self,
        addr: SocketAddr,
        transport: &Transport,
        alpn: Alpn,
    ) -> Result<Upstream, ConnectError> {
        let Transport::Tls(tls) = transport else {
            return self.connect(addr).await.map(Upstream::Plain);
        };
        let timeout = self.settings.connect_timeout;
        let handshake = async {
            let tcp = self.connect(addr).await?;
            tls.connect(tcp, alpn, addr)
                .await
                .map_err(|source| ConnectError::Tls { addr, source })
        };
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(stream)) => Ok(Upstream::Tls(stream)),
            Ok(Err(e)) => {
                if matches!(e, ConnectError::Tls { .. }) {
                    self.stats.connect_failures.inc();
                }
                Err(e)
            }
            Err(_) => Err(ConnectError::Timeout(addr)),
        }
    }

    /// A connection of its own (TCP proxying, `Upgrade` streams) counted under
    /// `maxConnections` while open; at the limit it is refused at once, as Envoy's TCP proxy.
    pub async fn connect_own(
        &self,
        addr: SocketAddr,
        transport: &Transport,
        alpn: Alpn,
    ) -> Result<Upstream, ConnectError> {
        let room = match self.settings.thresholds.max_connections {
            None => None,
            Some(_) => match self.limits.try_connection() {
                Some(room) => Some(room),
                None => {
                    self.limits.overflowed(Overflow::Connections);
                    return Err(ConnectError::Overflow);
                }
            },
        };
        let mut upstream = self.connect_with(addr, transport, alpn).await?;
        if let Some(room) = room {
            upstream.tcp_mut().hold(room);
        }
        Ok(upstream)
    }

    /// Sends an HTTP/1.1 request on an idle connection, or a new one. The connection goes
    /// with the response, and back to the pool when its body has been read (see
    /// [`h1::ResponseBody`]).
    pub async fn send_h1(
        self: &Arc<Self>,
        addr: SocketAddr,
        transport: &Transport,
        head: &h1::RequestHead<'_>,
        mut body: UpstreamBody,
    ) -> Result<Sent, SendError> {
        let key = (addr, transport.key());
        let mut next = self.checkout_h1(key).map(Room::Idle);
        loop {
            let room = match next.take() {
                Some(room) => room,
                None => self.connection_room(Some(key)).await?,
            };
            let conn = match room {
                Room::Idle(conn) => conn,
                Room::New(held) => {
                    // Boxed, as in `push_h2`: a new connection is the rare path, and inline its
                    // state would be part of every request's future.
                    let mut io = Box::pin(self.connect_with(addr, transport, Alpn::Http1)).await?;
                    if let Some(held) = held {
                        io.tcp_mut().hold(held);
                    }
                    Connection::new(io, Home::new(self, key))
                }
            };
            let reused = conn.uses > 0;
            match conn.send(head, body).await {
                Ok(response) => {
                    return Ok(Sent {
                        response: response.map(Received::Http1),
                    });
                }
                // A reused connection the server closed meanwhile: the request goes out on
                // the next one.
                Err(Failed {
                    unsent: Some(unsent),
                    ..
                }) if reused => {
                    body = unsent;
                    next = self.checkout_h1(key).map(Room::Idle);
                }
                Err(Failed { error, unsent }) => {
                    return Err(match unsent {
                        Some(_) => SendError::Http1Unsent(error),
                        None => SendError::Http1(error),
                    });
                }
            }
        }
    }

    /// An idle connection to `key` that is still open and may carry another request.
    fn checkout_h1(&self, key: Key) -> Option<Box<Connection>> {
        let mut idle = self.h1_idle.lock().expect("pool lock");
        let list = idle.get_mut(&key)?;
        while let Some(mut entry) = list.pop() {
            if entry.since.elapsed() < self.settings.idle_timeout
                && self.young(entry.conn.born)
                && entry.conn.is_open()
            {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Sends an HTTP/2 request on the endpoint's shared connection, opening it if needed.
    /// Under `maxConcurrentStreams` the request's stream is counted on its connection for as
    /// long as `admission` lives.
    pub async fn send_h2(
        &self,
        addr: SocketAddr,
        transport: &Transport,
        req: Request<UpstreamBody>,
        admission: &mut Admission,
    ) -> Result<Sent, SendError> {
        let slot = self
            .h2
            .lock()
            .expect("pool lock")
            .entry((addr, transport.key()))
            .or_default()
            .clone();
        let mut sender = match self.settings.max_concurrent_streams {
            None => self.h2_shared(&slot, addr, transport).await?,
            Some(max) => {
                self.h2_limited(&slot, max, addr, transport, admission)
                    .await?
            }
        };
        sender.ready().await.map_err(SendError::Request)?;
        let response = sender.send_request(req).await.map_err(SendError::Request)?;
        Ok(Sent {
            response: response.map(Received::Http2),
        })
    }

    /// The endpoint's one connection, opened if needed.
    async fn h2_shared(
        &self,
        slot: &H2Slot,
        addr: SocketAddr,
        transport: &Transport,
    ) -> Result<H2Sender, SendError> {
        let mut conns = slot.lock().await;
        // Past maxConnectionDuration a new connection is opened; the old one closes when its
        // streams end (its last sender is dropped here).
        conns.retain(|c| !c.sender.is_closed() && self.young(c.born));
        let i = if conns.is_empty() {
            self.push_h2(&mut conns, addr, transport, None).await?
        } else {
            0
        };
        Ok(self.use_h2(&mut conns, i))
    }

    /// A connection with a stream free under `max`, holding that stream in `admission`. With
    /// every connection full and no room for another, the request waits for a stream or a
    /// connection, counted as pending, up to the connect timeout.
    async fn h2_limited(
        &self,
        slot: &H2Slot,
        max: usize,
        addr: SocketAddr,
        transport: &Transport,
        admission: &mut Admission,
    ) -> Result<H2Sender, SendError> {
        let mut _pending = None;
        let deadline = tokio::time::Instant::now() + self.settings.connect_timeout;
        loop {
            let stream_freed = self.stream_freed.notified();
            let connection_freed = self.limits.connection_freed();
            tokio::pin!(stream_freed, connection_freed);
            stream_freed.as_mut().enable();
            connection_freed.as_mut().enable();
            {
                let mut conns = slot.lock().await;
                conns.retain(|c| !c.sender.is_closed() && self.young(c.born));
                if let Some((i, stream)) = self.h2_stream(&mut conns, max, addr, transport).await? {
                    if let Some(stream) = stream {
                        admission.hold_stream(stream);
                    }
                    return Ok(self.use_h2(&mut conns, i));
                }
            }
            if _pending.is_none() {
                _pending = Some(self.limits.try_pending()?);
            }
            self.close_one_idle();
            let freed = async {
                tokio::select! {
                    () = stream_freed => {}
                    () = connection_freed => {}
                }
            };
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(self.limits.overflowed(Overflow::Connections).into());
            }
        }
    }

    /// Counts one more request on `conns[i]` and returns its sender.
    fn use_h2(&self, conns: &mut Vec<H2Conn>, i: usize) -> H2Sender {
        let c = &mut conns[i];
        c.last_used = Instant::now();
        c.uses += 1;
        let sender = c.sender.clone();
        // Past maxRequestsPerConnection the next request opens a new one; this one closes
        // when its streams end.
        if !self.reusable(c.uses, c.born) {
            conns.swap_remove(i);
        }
        sender
    }

    /// A stream under `max` on one of `conns`: on a connection with room, else on a new one
    /// within `maxConnections`; None when both are full.
    async fn h2_stream(
        &self,
        conns: &mut Vec<H2Conn>,
        max: usize,
        addr: SocketAddr,
        transport: &Transport,
    ) -> Result<Option<(usize, Option<StreamHeld>)>, SendError> {
        for (i, c) in conns.iter().enumerate() {
            if let Some(s) = StreamHeld::try_take(&c.in_flight, max, &self.stream_freed) {
                return Ok(Some((i, Some(s))));
            }
        }
        let room = match self.settings.thresholds.max_connections {
            None => Some(None),
            Some(_) => self.limits.try_connection().map(Some),
        };
        let Some(room) = room else {
            return Ok(None);
        };
        let i = self.push_h2(conns, addr, transport, Some(room)).await?;
        let s = StreamHeld::try_take(&conns[i].in_flight, max, &self.stream_freed);
        Ok(Some((i, s)))
    }

    /// Opens a connection (with `room` under `maxConnections` when already taken) and adds
    /// it to `conns`; returns its index.
    async fn push_h2(
        &self,
        conns: &mut Vec<H2Conn>,
        addr: SocketAddr,
        transport: &Transport,
        room: Option<Option<Held>>,
    ) -> Result<usize, SendError> {
        // Boxed: opening a connection is the rare path, and inline its state would be part
        // of every request's future (which is moved as a whole).
        let sender = Box::pin(self.open_h2(addr, transport, room)).await?;
        let born = Instant::now();
        conns.push(H2Conn {
            sender,
            last_used: born,
            uses: 0,
            born,
            in_flight: Arc::default(),
        });
        Ok(conns.len() - 1)
    }

    async fn open_h2(
        &self,
        addr: SocketAddr,
        transport: &Transport,
        room: Option<Option<Held>>,
    ) -> Result<http2::SendRequest<UpstreamBody>, SendError> {
        let held = match room {
            Some(held) => held,
            None => {
                let Room::New(held) = self.connection_room(None).await? else {
                    unreachable!("no idle connection is asked for")
                };
                held
            }
        };
        let io = self.connect_with(addr, transport, Alpn::Http2).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(SendError::Handshake)?;
        tokio::spawn(async move {
            let _room = held;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream http/2 connection ended");
            }
        });
        Ok(sender)
    }

    /// Closes connections idle for longer than the idle timeout, and idle ones past the
    /// maximum connection duration.
    fn sweep(&self) {
        let timeout = self.settings.idle_timeout;
        self.h1_idle.lock().expect("pool lock").retain(|_, list| {
            list.retain_mut(|e| {
                e.since.elapsed() < timeout && self.young(e.conn.born) && e.conn.is_open()
            });
            !list.is_empty()
        });
        self.h2.lock().expect("pool lock").retain(|_, slot| {
            // A slot being connected right now is busy, not idle.
            let Ok(mut conns) = slot.try_lock() else {
                return true;
            };
            conns.retain(|c| {
                !c.sender.is_closed() && c.last_used.elapsed() < timeout && self.young(c.born)
            });
            !conns.is_empty()
        });
    }
}

/// A response, its body still to be read from the connection it came on.
pub struct Sent {
    pub response: Response<Received>,
}

/// A response body as the upstream sends it.
pub enum Received {
    /// Read from its own HTTP/1.1 connection, which goes back to the pool at the body's end.
    Http1(h1::ResponseBody),
    Http2(Incoming),
}

impl Body for Received {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Http1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Http2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Http1(b) => b.is_end_stream(),
            Self::Http2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Http1(b) => b.size_hint(),
            Self::Http2(b) => b.size_hint(),
        }
    }
}

/// The pool an HTTP/1.1 connection belongs to, and its place there.
pub struct Home {
    pool: Weak<Pool>,
    key: Key,
}

impl Home {
    fn new(pool: &Arc<Pool>, key: Key) -> Self {
        Self {
            pool: Arc::downgrade(pool),
            key,
        }
    }

    /// Returns a connection whose last response ended cleanly to its pool; one past
    /// maxRequestsPerConnection or maxConnectionDuration (or of a pool gone) is closed.
    pub fn give_back(conn: Box<Connection>) {
        let Some(pool) = conn.home().pool.upgrade() else {
            return;
        };
        if !pool.reusable(conn.uses, conn.born) {
            return;
        }
        {
            let mut idle = pool.h1_idle.lock().expect("pool lock");
            let list = idle.entry(conn.home().key).or_default();
            if list.len() < MAX_IDLE_PER_ENDPOINT {
                list.push(IdleH1 {
                    conn,
                    since: Instant::now(),
                });
            }
        }
        // A request waiting for room under maxConnections may take this one.
        pool.limits.wake_connection_waiters();
    }
}

/// Where a request under `maxConnections` goes: an idle connection, or a new one with room.
enum Room {
    Idle(Box<Connection>),
    New(Option<Held>),
}

/// How often idle connections are looked at: often enough to close them near their idle
/// timeout and their maximum duration.
fn sweep_period(settings: &PoolSettings) -> Duration {
    let shortest = settings
        .max_connection_duration
        .map_or(settings.idle_timeout, |d| d.min(settings.idle_timeout));
    (shortest / 2).clamp(Duration::from_millis(50), Duration::from_secs(30))
}

fn spawn_sweeper(pool: Weak<Pool>, period: Duration) {
    // Pools are also built outside a runtime in unit tests of config compilation.
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tick.tick().await;
            match pool.upgrade() {
                Some(p) => p.sweep(),
                None => return,
            }
        }
    });
}
