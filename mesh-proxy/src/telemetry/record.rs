//! One HTTP request's standard metrics, recorded once: when its response body ends, or when
//! the downstream leaves first (flagged `DC`, response code 0 if no response was made).
//!
//! The peer metadata exchange happens here too: an inbound request's metadata header is
//! taken off before anything else sees it and believed only from a verified mTLS peer, and
//! such a peer gets this proxy's metadata on the response; an outbound request's header (the
//! app's, which proves nothing) is dropped, and the upstream's answer is stripped before the
//! response goes back to the app.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::custom::{ChangedLabels, RequestKey};
use super::flags::{ResponseFlag, ResponseFlags};
use super::grpc::MessageCounter;
use super::labels::{
    CallLabels, PeerLabels, Reporter, RequestLabels, RequestProtocol, SecurityPolicy, ServiceLabels,
};
use super::overrides::{Metric, Rule, SideOverrides};
use super::trace::{ActiveSpan, Finish};
use super::upstream::UpstreamInfo;
use super::{PEER_METADATA, Telemetry, peer};
use crate::access_log::entry::{Finished, Upstream};
use crate::access_log::{CompiledLog, Known, Pending, Sink};
use crate::http::body::{BoxError, ResponseBody};
use crate::http::scan::RequestScan;
use crate::listener::ConnContext;
use crate::upstream::Cluster;

/// A request being served; records itself when dropped unfinished (the downstream left).
pub struct RequestRecord {
    telemetry: Arc<Telemetry>,
    start: Instant,
    reporter: Reporter,
    source: Arc<PeerLabels>,
    destination: Arc<PeerLabels>,
    service: Arc<ServiceLabels>,
    security: SecurityPolicy,
    protocol: RequestProtocol,
    flags: ResponseFlags,
    response_code: u16,
    grpc_status: Option<u32>,
    /// From Content-Length until the forwarding code's count replaces it.
    request_bytes: u64,
    counted_request_bytes: Option<Arc<std::sync::atomic::AtomicU64>>,
    request_messages: Option<Arc<std::sync::atomic::AtomicU64>>,
    response_bytes: u64,
    /// gRPC only.
    response_messages: Option<MessageCounter>,
    /// An inbound request from a verified peer that announced itself: it gets our metadata.
    answer_peer: bool,
    /// Whether the standard metrics record this request.
    metrics: bool,
    /// The metrics overrides of the request's side, with the request values they use.
    overrides: Option<Applied>,
    /// Set when an access log applies to the request.
    access: Option<Box<Pending>>,
    recorded: bool,
    /// The request's span, when it is traced; ended with the record.
    span: Option<Box<ActiveSpan>>,
    /// The upstream cluster, for the span.
    cluster: Option<Arc<Cluster>>,
}

impl Telemetry {
    /// Starts recording a request that arrived on `conn`, taking the peer metadata header off
    /// it.
    pub fn start<B>(
        self: &Arc<Self>,
        conn: &ConnContext,
        req: &mut Request<B>,
        scan: &RequestScan,
        began: Option<Instant>,
    ) -> RequestRecord {
        let header = if scan.peer_metadata {
            peer::take(req.headers_mut())
        } else {
            None
        };
        let enabled = self.is_enabled();
        let protocol = if scan.grpc {
            RequestProtocol::Grpc
        } else {
            RequestProtocol::Http
        };
        let request_bytes = scan.content_length.unwrap_or(0);
        let mut record = RequestRecord {
            telemetry: self.clone(),
            // From the head's first bytes when they are known: a slow head is part of the
            // request's duration.
            start: began.unwrap_or_else(Instant::now),
            reporter: Reporter::Source,
            source: self.local_labels(false),
            destination: self.unknown_peer.clone(),
            service: self.unknown_service.clone(),
            security: SecurityPolicy::None,
            protocol,
            flags: ResponseFlags::default(),
            response_code: 0,
            grpc_status: None,
            request_bytes,
            counted_request_bytes: None,
            request_messages: None,
            response_bytes: 0,
            response_messages: (protocol == RequestProtocol::Grpc).then(MessageCounter::default),
            answer_peer: false,
            metrics: enabled,
            overrides: None,
            access: None,
            recorded: false,
            span: None,
            cluster: None,
        };
        if enabled && conn.listener.is_inbound() {
            record.reporter = Reporter::Destination;
            record.service = self.inbound_service(host_of(req).as_deref());
            match &conn.peer_identity {
                Some(id) => {
                    record.security = SecurityPolicy::MutualTls;
                    record.source = self.peer(header.as_ref(), id.spiffe_id.as_str());
                    record.destination = self.local_labels(true);
                    record.answer_peer = header.is_some() && self.local_header().is_some();
                }
                // Plaintext: whatever the client claims is ignored.
                None => {
                    record.source = self.unknown_peer.clone();
                    record.destination = self.local_labels(false);
                }
            }
        }
        record
    }
}

impl RequestRecord {
    /// Logs the request when it ends, when `logs` (those of its config and side) are some.
    /// Without logs this is one branch. Called before the tracer adds its headers (fewer to
    /// look through); its trace id comes with [`Self::trace`].
    #[inline]
    pub fn access_log<B>(
        &mut self,
        logs: Option<&Arc<[CompiledLog]>>,
        sink: &Arc<Sink>,
        conn: &ConnContext,
        req: &Request<B>,
        known: &Known<'_>,
    ) {
        if let Some(logs) = logs {
            let began = self.start;
            self.access = Some(Pending::capture(logs, sink, conn, req, known, began));
        }
    }

    /// Records the request's metrics as `overrides` (those of its config and side) change
    /// them, when they are some. Without overrides this is one branch.
    #[inline]
    pub fn metric_overrides<B>(
        &mut self,
        overrides: Option<&Arc<SideOverrides>>,
        req: &Request<B>,
    ) {
        if let Some(side) = overrides
            && self.metrics
        {
            if side.all_disabled() {
                self.metrics = false;
                return;
            }
            self.overrides = Some(Applied {
                captured: side.capture_values(req),
                side: side.clone(),
            });
        }
    }

    /// Takes the response's telemetry (flags, upstream) and returns it with a body that
    /// records the request when it ends.
    pub fn respond(mut self, resp: Response<ResponseBody>) -> Response<RecordedBody> {
        let (mut parts, body) = resp.into_parts();
        if let Some(flags) = parts.extensions.remove::<ResponseFlags>() {
            self.flags = self.flags.union(flags);
        }
        match parts.extensions.remove::<UpstreamInfo>() {
            // From the forwarding code, which took the metadata off the upstream's response
            // (an upstream proxy's answer, or an app's forgery) already.
            Some(info) => {
                if let Some(access) = &mut self.access {
                    let service_time = access.since_taken_up();
                    access.upstream(Upstream {
                        host: info.host,
                        cluster: info.cluster.clone(),
                        peer: info
                            .peer
                            .as_ref()
                            .map(|p| p.principal())
                            .filter(|p| *p != peer::UNKNOWN)
                            .map(str::to_owned),
                        service_time,
                    });
                }
                self.upstream(info)
            }
            // An upgrade's response, or a local reply: never passed on as it came.
            None => {
                peer::take(&mut parts.headers);
            }
        }
        if self.answer_peer
            && let Some(v) = self.telemetry.local_header()
        {
            parts.headers.insert(PEER_METADATA, v);
        }
        self.response_code = parts.status.as_u16();
        self.grpc_status = grpc_status(&parts.headers);
        Response::from_parts(
            parts,
            RecordedBody {
                inner: body,
                record: self,
            },
        )
    }

    /// The request's span, ended when the request is recorded.
    /// The request's place in its trace: its span (when sampled and reported) and the trace
    /// id its access-log line shows.
    pub fn trace(&mut self, span: Option<Box<ActiveSpan>>, trace_id: [u8; 32]) {
        self.span = span;
        if let Some(access) = &mut self.access {
            access.trace_id(trace_id);
        }
    }

    fn upstream(&mut self, info: UpstreamInfo) {
        self.cluster = info.cluster;
        if let Some(bytes) = info.request_bytes {
            self.counted_request_bytes = Some(bytes);
        }
        self.request_messages = info.request_messages;
        if self.reporter != Reporter::Source {
            return;
        }
        if let Some(service) = info.service {
            self.service = service;
        }
        if let Some(peer) = info.peer {
            self.destination = peer;
            self.security = SecurityPolicy::MutualTls;
            self.source = self.telemetry.local_labels(true);
        }
    }

    fn record(&mut self) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let request_bytes = self
            .counted_request_bytes
            .as_ref()
            .map_or(self.request_bytes, |c| c.load(Ordering::Relaxed));
        if self.access.is_none() && !self.metrics {
            return;
        }
        // One clock read for the log's duration and the duration histogram.
        let elapsed = self.start.elapsed();
        if let Some(access) = self.access.take() {
            access.finish(Finished {
                response_code: self.response_code,
                flags: self.flags,
                bytes_received: request_bytes,
                bytes_sent: self.response_bytes,
                duration: elapsed,
            });
        }
        if !self.metrics {
            return;
        }
        let t = &self.telemetry;
        let labels = RequestLabels {
            call: CallLabels {
                reporter: self.reporter,
                source: self.source.clone(),
                destination: self.destination.clone(),
                service: self.service.clone(),
                response_flags: self.flags,
                security: self.security,
            },
            protocol: self.protocol,
            response_code: self.response_code,
            grpc_status: self.grpc_status,
        };
        let ms = elapsed.as_secs_f64() * 1000.0;
        if let Some(applied) = &self.overrides {
            self.record_changed(applied, labels, ms, request_bytes);
            return;
        }
        let series = t.request_series(&labels);
        series.requests.inc();
        series.duration.observe(ms);
        series.request_bytes.observe(request_bytes as f64);
        series.response_bytes.observe(self.response_bytes as f64);
        if let Some(counter) = &self.response_messages {
            let sent = self
                .request_messages
                .as_ref()
                .map_or(0, |c| c.load(Ordering::Relaxed));
            let key = RequestKey::Standard(labels);
            t.request_messages.get_or_create(&key).inc_by(sent);
            t.response_messages
                .get_or_create(&key)
                .inc_by(counter.messages);
        }
    }

    /// Each metric as its rule says: Istio's labels, not at all, or changed labels.
    fn record_changed(
        &self,
        applied: &Applied,
        labels: RequestLabels,
        ms: f64,
        request_bytes: u64,
    ) {
        let t = &self.telemetry;
        let key = |metric: Metric| match applied.side.rule(metric) {
            Rule::Standard => Some(RequestKey::Standard(labels.clone())),
            Rule::Disabled => None,
            Rule::Changed(rule) => Some(RequestKey::Changed(ChangedLabels {
                labels: labels.clone(),
                rule: rule.clone(),
                captured: applied.captured.clone(),
            })),
        };
        if let Some(k) = key(Metric::Requests) {
            t.requests.get_or_create(&k).inc();
        }
        if let Some(k) = key(Metric::Duration) {
            t.duration.get_or_create(&k).observe(ms);
        }
        if let Some(k) = key(Metric::RequestBytes) {
            t.request_bytes
                .get_or_create(&k)
                .observe(request_bytes as f64);
        }
        if let Some(k) = key(Metric::ResponseBytes) {
            t.response_bytes
                .get_or_create(&k)
                .observe(self.response_bytes as f64);
        }
        if let Some(counter) = &self.response_messages {
            if let Some(k) = key(Metric::RequestMessages) {
                let sent = self
                    .request_messages
                    .as_ref()
                    .map_or(0, |c| c.load(Ordering::Relaxed));
                t.request_messages.get_or_create(&k).inc_by(sent);
            }
            if let Some(k) = key(Metric::ResponseMessages) {
                t.response_messages
                    .get_or_create(&k)
                    .inc_by(counter.messages);
            }
        }
    }
}

/// A request's side overrides and the request values they label with.
struct Applied {
    side: Arc<SideOverrides>,
    captured: Arc<[Arc<String>]>,
}

impl RequestRecord {
    fn end_span(&mut self) {
        let Some(span) = self.span.take() else {
            return;
        };
        let request_bytes = self
            .counted_request_bytes
            .as_ref()
            .map_or(self.request_bytes, |c| c.load(Ordering::Relaxed));
        span.end(Finish {
            status: self.response_code,
            grpc_status: self.grpc_status,
            flags: self.flags,
            cluster: self.cluster.as_ref().map(|c| c.name.as_str()),
            request_bytes,
            response_bytes: self.response_bytes,
            source: &self.source,
            destination: &self.destination,
        });
    }
}

impl Drop for RequestRecord {
    /// Dropped before a response body ended: the downstream went away.
    fn drop(&mut self) {
        if !self.recorded || self.span.is_some() {
            self.flags = self
                .flags
                .with(ResponseFlag::DownstreamConnectionTermination);
            self.record();
            self.end_span();
        }
    }
}

/// The response body, counting its bytes and reading gRPC's status from the trailers; the
/// request is recorded when it ends.
pub struct RecordedBody {
    inner: ResponseBody,
    record: RequestRecord,
}

impl RecordedBody {
    fn end(&mut self) {
        self.record.record();
        self.record.end_span();
    }
}

impl Body for RecordedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    this.record.response_bytes += data.len() as u64;
                    if let Some(counter) = &mut this.record.response_messages {
                        counter.feed(data);
                    }
                } else if let Some(trailers) = f.trailers_ref()
                    && let Some(status) = grpc_status(trailers)
                {
                    this.record.grpc_status = Some(status);
                }
                if this.inner.is_end_stream() {
                    this.end();
                }
            }
            Some(Err(_)) => {
                this.record.flags = this
                    .record
                    .flags
                    .with(ResponseFlag::UpstreamConnectionTermination);
                this.end();
            }
            None => this.end(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RecordedBody {
    fn drop(&mut self) {
        // A body that had nothing left to send ended normally even if it was never polled
        // (HEAD, 204, an empty local reply); otherwise the record's own drop flags DC.
        if self.inner.is_end_stream() {
            self.end();
        }
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(crate::http::headers::GRPC_STATUS)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The request's host without port, lowercased, when it is a plausible DNS name.
fn host_of<B>(req: &Request<B>) -> Option<String> {
    let authority = match req.uri().authority() {
        Some(a) => a.host().to_owned(),
        None => {
            let h = req.headers().get(header::HOST)?.to_str().ok()?;
            h.parse::<http::uri::Authority>().ok()?.host().to_owned()
        }
    };
    let ok = !authority.is_empty()
        && authority.len() <= 253
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    ok.then(|| authority.to_ascii_lowercase())
}
