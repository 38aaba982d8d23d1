//! One proxied TCP connection's standard metrics: opened and closed counts, and the bytes
//! each way counted as they flow (a long connection shows its bytes before it ends).
//! Over mesh mTLS the two proxies exchange peer metadata in a frame before the payload
//! ([`crate::tls::peer_exchange`]), so each side labels the other's workload; without it
//! (plaintext, or a peer not offering the exchange) a peer is known by its certificate's
//! principal only.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::custom::{ChangedLabels, TcpKey};
use super::flags::{ResponseFlag, ResponseFlags};
use super::labels::{
    CallLabels, Reporter, RequestLabels, RequestProtocol, SecurityPolicy, TcpLabels,
};
use super::overrides::{Metric, Rule, SideOverrides};
use super::{Telemetry, peer};
use crate::listener::ConnContext;
use crate::upstream::{Cluster, Transport};

/// A TCP connection being proxied; counted closed when dropped. A metric that the
/// Telemetry overrides disable has no series here.
pub struct TcpRecord {
    telemetry: Arc<Telemetry>,
    closed: Option<TcpKey>,
    sent: Option<Counter>,
    received: Option<Counter>,
}

impl Telemetry {
    /// Counts a TCP connection from `conn` opened toward `cluster`, whose upstream connection
    /// used `transport` (`None`: no upstream connection was made, see `flag`) and whose
    /// upstream proxy announced `upstream_metadata` in the exchange. The downstream proxy's
    /// metadata, on an inbound connection, is in `conn`'s peer identity. `overrides` are the
    /// metrics overrides of the listener's side, if any.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_open(
        self: &Arc<Self>,
        conn: &ConnContext,
        cluster: &Cluster,
        transport: Option<&Transport>,
        upstream_metadata: Option<&HeaderValue>,
        flag: Option<ResponseFlag>,
        overrides: Option<&Arc<SideOverrides>>,
    ) -> TcpRecord {
        let call = if conn.listener.is_inbound() {
            let (source, destination, security) = match &conn.peer_identity {
                Some(id) => (
                    self.peer(id.metadata.as_ref(), id.spiffe_id.as_str()),
                    self.local_labels(true),
                    SecurityPolicy::MutualTls,
                ),
                None => (
                    self.unknown_peer.clone(),
                    self.local_labels(false),
                    SecurityPolicy::None,
                ),
            };
            CallLabels {
                reporter: Reporter::Destination,
                source,
                destination,
                service: self.inbound_service(None),
                response_flags: ResponseFlags::default(),
                security,
            }
        } else {
            let mtls = transport.and_then(Transport::mesh_identities);
            let (destination, security) = match mtls {
                Some(ids) => {
                    let principal = match ids {
                        [one] => one.as_str(),
                        _ => peer::UNKNOWN,
                    };
                    (
                        self.peer(upstream_metadata, principal),
                        SecurityPolicy::MutualTls,
                    )
                }
                None => (self.unknown_peer.clone(), SecurityPolicy::None),
            };
            CallLabels {
                reporter: Reporter::Source,
                source: self.local_labels(mtls.is_some()),
                destination,
                service: self.cluster_service(&cluster.name),
                response_flags: ResponseFlags::default(),
                security,
            }
        };
        let mut labels = TcpLabels(call);
        if let Some(flag) = flag {
            labels.0.response_flags = ResponseFlags::of(flag);
        }
        let key = |metric: Metric| tcp_key(&labels, overrides, metric);
        if let Some(k) = key(Metric::TcpOpened) {
            self.tcp_opened.get_or_create(&k).inc();
        }
        TcpRecord {
            sent: key(Metric::TcpSent).map(|k| self.tcp_sent.get_or_create(&k).clone()),
            received: key(Metric::TcpReceived).map(|k| self.tcp_received.get_or_create(&k).clone()),
            closed: key(Metric::TcpClosed),
            telemetry: self.clone(),
        }
    }
}

/// The series of one TCP metric under the side's overrides; `None` when they disable it.
fn tcp_key(
    labels: &TcpLabels,
    overrides: Option<&Arc<SideOverrides>>,
    metric: Metric,
) -> Option<TcpKey> {
    let Some(side) = overrides else {
        return Some(TcpKey::Standard(labels.clone()));
    };
    match side.rule(metric) {
        Rule::Standard => Some(TcpKey::Standard(labels.clone())),
        Rule::Disabled => None,
        Rule::Changed(rule) => Some(TcpKey::Changed(ChangedLabels {
            labels: RequestLabels {
                call: labels.0.clone(),
                protocol: RequestProtocol::Tcp,
                // Not among the TCP metrics' labels: a rule for them never reads these.
                response_code: 0,
                grpc_status: None,
            },
            rule: rule.clone(),
            captured: side.tcp_captures().clone(),
        })),
    }
}

impl TcpRecord {
    fn count_received(&self, n: u64) {
        if let Some(c) = &self.received {
            c.inc_by(n);
        }
    }

    fn count_sent(&self, n: u64) {
        if let Some(c) = &self.sent {
            c.inc_by(n);
        }
    }
}

impl Drop for TcpRecord {
    fn drop(&mut self) {
        if let Some(k) = &self.closed {
            self.telemetry.tcp_closed.get_or_create(k).inc();
        }
    }
}

type OpenRecord = Box<dyn FnOnce(Option<&HeaderValue>) -> TcpRecord + Send>;

/// The record of a connection whose labels wait for the upstream proxy's metadata frame,
/// which arrives while the payload already flows: bytes counted before it are held and added
/// when it opens. Opened without metadata if the frame never came.
pub struct DeferredRecord(Mutex<Deferred>);

enum Deferred {
    Pending {
        open: OpenRecord,
        received: u64,
        sent: u64,
    },
    Open(TcpRecord),
    /// Only while `open` runs.
    Opening,
}

impl DeferredRecord {
    /// `open` makes the record from the upstream proxy's metadata, once.
    pub fn new(open: impl FnOnce(Option<&HeaderValue>) -> TcpRecord + Send + 'static) -> Arc<Self> {
        Arc::new(Self(Mutex::new(Deferred::Pending {
            open: Box::new(open),
            received: 0,
            sent: 0,
        })))
    }

    /// The upstream proxy's frame has come: the record opens with the bytes held so far.
    pub fn open(&self, metadata: Option<&HeaderValue>) {
        let mut state = self.0.lock().expect("deferred record lock");
        if !matches!(*state, Deferred::Pending { .. }) {
            return;
        }
        let Deferred::Pending {
            open,
            received,
            sent,
        } = std::mem::replace(&mut *state, Deferred::Opening)
        else {
            unreachable!("checked pending above");
        };
        let record = open(metadata);
        record.count_received(received);
        record.count_sent(sent);
        *state = Deferred::Open(record);
    }

    fn count(&self, received: u64, sent: u64) {
        match &mut *self.0.lock().expect("deferred record lock") {
            Deferred::Open(record) => {
                record.count_received(received);
                record.count_sent(sent);
            }
            Deferred::Pending {
                received: r,
                sent: s,
                ..
            } => {
                *r += received;
                *s += sent;
            }
            Deferred::Opening => {}
        }
    }
}

impl Drop for DeferredRecord {
    fn drop(&mut self) {
        // Never opened (the frame did not come): counted opened and closed, unlabelled.
        self.open(None);
    }
}

/// What a [`CountedStream`] counts into.
enum Counting {
    Open(TcpRecord),
    Deferred(Arc<DeferredRecord>),
}

impl Counting {
    fn received(&self, n: u64) {
        match self {
            Self::Open(record) => record.count_received(n),
            Self::Deferred(record) => record.count(n, 0),
        }
    }

    fn sent(&self, n: u64) {
        match self {
            Self::Open(record) => record.count_sent(n),
            Self::Deferred(record) => record.count(0, n),
        }
    }
}

/// The downstream stream of a TCP connection, counting what it reads (received) and
/// writes (sent).
pub struct CountedStream<S> {
    inner: S,
    record: Counting,
}

impl<S> CountedStream<S> {
    pub fn new(inner: S, record: TcpRecord) -> Self {
        Self {
            inner,
            record: Counting::Open(record),
        }
    }

    /// Counting into a record that opens later (see [`DeferredRecord`]).
    pub fn deferred(inner: S, record: Arc<DeferredRecord>) -> Self {
        Self {
            inner,
            record: Counting::Deferred(record),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.record.received((buf.filled().len() - before) as u64);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.record.sent(n as u64);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
