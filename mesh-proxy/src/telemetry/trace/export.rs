//! Span export by OTLP gRPC, off the request path: a request's span goes into a bounded
//! queue without waiting; one task takes batches off it and sends them to the collector.
//! When the queue is full (the collector slow or away) a span is dropped and counted, and so
//! is every span of a batch the collector did not take.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use super::otlp::{self, Message, Value};

/// The collector's export method.
const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Where and how spans are exported.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The collector's OTLP gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// Envoy's `node_id` tag, e.g. `sidecar~10.0.0.1~reviews-v1.default~default.svc.cluster.local`.
    pub node_id: String,
    /// Spans waiting for export; more are dropped.
    pub queue: usize,
    /// How long a batch waits to fill before it is sent.
    pub batch_delay: Duration,
    /// One export call's limit.
    pub timeout: Duration,
}

/// The OpenTelemetry SDK's batch defaults.
pub const DEFAULT_QUEUE: usize = 2048;
pub const MAX_BATCH: usize = 512;

impl ExportOptions {
    pub fn new(endpoint: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            node_id: node_id.into(),
            queue: DEFAULT_QUEUE,
            batch_delay: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("tracing endpoint {0:?}: expected http://HOST:PORT (OTLP gRPC in plaintext)")]
    Endpoint(String),
    #[error("span export is already running")]
    AlreadyStarted,
}

/// Counts of what became of finished spans.
#[derive(Debug, Clone, Default)]
pub struct SpanCounters {
    pub exported: Counter,
    pub dropped: Counter,
}

/// What every span of this proxy carries, and the queue to the export task.
pub struct Reporter {
    /// `node_id`, `component` and Istio's own tags (`istio.canonical_service`, ...),
    /// encoded once as span attributes.
    pub(super) common: Message,
    queue: mpsc::Sender<Message>,
    counters: SpanCounters,
}

impl Reporter {
    pub(super) fn new(
        node_id: &str,
        local_tags: &[(&str, String)],
        queue: mpsc::Sender<Message>,
        counters: SpanCounters,
    ) -> Self {
        let mut common = Message::default();
        let mut attr = |key: &str, value: &str| {
            common.attribute(otlp::span::ATTRIBUTES, key, Value::Str(value));
        };
        attr("node_id", node_id);
        attr("component", "proxy");
        for (key, value) in local_tags {
            attr(key, value);
        }
        Self {
            common,
            queue,
            counters,
        }
    }

    /// Queues a finished span, never waiting: a full queue drops it.
    pub fn submit(&self, span: Message) {
        if self.queue.try_send(span).is_err() {
            self.counters.dropped.inc();
        }
    }
}

/// Starts the export task (inside a tokio runtime) and returns the reporter that feeds it.
/// `local_tags` are attributes every span carries.
pub fn start(
    opts: &ExportOptions,
    service_name: &str,
    local_tags: &[(&str, String)],
    counters: SpanCounters,
) -> Result<Reporter, ExportError> {
    let bad_endpoint = || ExportError::Endpoint(opts.endpoint.clone());
    let uri: http::Uri = opts.endpoint.parse().map_err(|_| bad_endpoint())?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(bad_endpoint());
    }
    let channel = Endpoint::from(uri)
        .connect_timeout(opts.timeout)
        .timeout(opts.timeout)
        .connect_lazy();
    let collector = Collector {
        grpc: tonic::client::Grpc::new(channel),
        resource: resource(service_name),
        scope: scope(),
    };
    let (queue, rx) = mpsc::channel(opts.queue.max(1));
    tokio::spawn(batch_loop(
        rx,
        collector,
        counters.clone(),
        opts.batch_delay,
    ));
    Ok(Reporter::new(&opts.node_id, local_tags, queue, counters))
}

/// The resource every span is reported under: the service's name.
fn resource(service_name: &str) -> Message {
    let mut resource = Message::default();
    resource.attribute(
        otlp::RESOURCE_ATTRIBUTES,
        "service.name",
        Value::Str(service_name),
    );
    resource
}

/// The instrumentation scope every span is reported under.
fn scope() -> Message {
    let mut scope = Message::default();
    scope.string(otlp::scope::NAME, "mesh-proxy");
    scope.string(otlp::scope::VERSION, env!("CARGO_PKG_VERSION"));
    scope
}

/// The collector's connection and what each batch is wrapped in.
struct Collector {
    grpc: tonic::client::Grpc<Channel>,
    resource: Message,
    scope: Message,
}

impl Collector {
    async fn export(&mut self, spans: &[Message]) -> Result<(), tonic::Status> {
        let request = otlp::export_request(&self.resource, &self.scope, spans);
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        self.grpc
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(EXPORT),
                Encoded,
            )
            .await
            .map(drop)
    }
}

/// Sends batches until every reporter is gone: a batch leaves when it is full or when its
/// first span has waited `delay`.
async fn batch_loop(
    mut rx: mpsc::Receiver<Message>,
    mut collector: Collector,
    counters: SpanCounters,
    delay: Duration,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let deadline = Instant::now() + delay;
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let n = batch.len() as u64;
        match collector.export(&batch).await {
            Ok(()) => {
                counters.exported.inc_by(n);
            }
            Err(error) => {
                counters.dropped.inc_by(n);
                tracing::debug!(%error, spans = n, "span export failed");
            }
        }
        batch.clear();
    }
}

/// gRPC codec of a request already encoded (see [`otlp`]); the collector's reply (an
/// `ExportTraceServiceResponse`, whose partial-success details are not acted on) is skipped.
#[derive(Debug, Clone, Copy)]
struct Encoded;

impl Codec for Encoded {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = Encoded;
    type Decoder = Encoded;

    fn encoder(&mut self) -> Self::Encoder {
        Encoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        Encoded
    }
}

impl Encoder for Encoded {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Encoded {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_endpoint_must_be_a_plaintext_http_url() {
        for bad in [
            "127.0.0.1:4317",
            "grpc://collector:4317",
            "https://collector:4317",
            "http://",
            "not a url",
        ] {
            let opts = ExportOptions::new(bad, "node");
            let err = start(&opts, "svc", &[], SpanCounters::default());
            assert!(
                matches!(err, Err(ExportError::Endpoint(_))),
                "{bad}: {:?}",
                err.err()
            );
        }
        let opts = ExportOptions::new("http://127.0.0.1:4317", "node");
        assert!(start(&opts, "svc", &[], SpanCounters::default()).is_ok());
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let counters = SpanCounters::default();
        let (queue, _rx) = mpsc::channel(2);
        let reporter = Reporter::new("node", &[], queue, counters.clone());
        for _ in 0..5 {
            reporter.submit(Message::default());
        }
        assert_eq!(counters.dropped.get(), 3);
    }
}
