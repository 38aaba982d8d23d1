//! Span export by OTLP gRPC, off the request path: a request's span goes into a bounded
//! queue without waiting; one task takes batches off it and sends them to the collector.
//! When the queue is full (the collector slow or away) a span is dropped and counted, and so
//! is every span of a batch the collector did not take.

use std::time::Duration;

use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio::time::Instant;

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
    #[error("tracing endpoint {endpoint:?}: {source}")]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("tracing endpoint {0:?}: expected http://HOST:PORT or https://HOST:PORT")]
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
    pub(super) node_id: String,
    /// Istio's own tags (`istio.canonical_service`, `istio.namespace`, ...).
    pub(super) local_tags: Vec<KeyValue>,
    pub(super) scope: InstrumentationScope,
    queue: mpsc::Sender<SpanData>,
    counters: SpanCounters,
}

impl Reporter {
    /// Queues a finished span, never waiting: a full queue drops it.
    pub fn submit(&self, span: SpanData) {
        if self.queue.try_send(span).is_err() {
            self.counters.dropped.inc();
        }
    }
}

/// Starts the export task (inside a tokio runtime) and returns the reporter that feeds it.
pub fn start(
    opts: &ExportOptions,
    service_name: String,
    local_tags: Vec<KeyValue>,
    counters: SpanCounters,
) -> Result<Reporter, ExportError> {
    let uri: http::Uri = opts
        .endpoint
        .parse()
        .map_err(|_| ExportError::Endpoint(opts.endpoint.clone()))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(ExportError::Endpoint(opts.endpoint.clone()));
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(opts.endpoint.clone())
        .with_timeout(opts.timeout)
        .build()
        .map_err(|source| ExportError::Exporter {
            endpoint: opts.endpoint.clone(),
            source,
        })?;
    exporter.set_resource(
        &Resource::builder_empty()
            .with_service_name(service_name)
            .build(),
    );
    let (queue, rx) = mpsc::channel(opts.queue.max(1));
    tokio::spawn(batch_loop(rx, exporter, counters.clone(), opts.batch_delay));
    Ok(Reporter {
        node_id: opts.node_id.clone(),
        local_tags,
        scope: super::span::scope(),
        queue,
        counters,
    })
}

/// Sends batches until every reporter is gone: a batch leaves when it is full or when its
/// first span has waited `delay`.
async fn batch_loop(
    mut rx: mpsc::Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
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
        let sent = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        match exporter.export(sent).await {
            Ok(()) => {
                counters.exported.inc_by(n);
            }
            Err(error) => {
                counters.dropped.inc_by(n);
                tracing::debug!(%error, spans = n, "span export failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_must_be_an_http_url() {
        for bad in [
            "127.0.0.1:4317",
            "grpc://collector:4317",
            "http://",
            "not a url",
        ] {
            let opts = ExportOptions::new(bad, "node");
            let err = start(&opts, "svc".into(), Vec::new(), SpanCounters::default());
            assert!(
                matches!(err, Err(ExportError::Endpoint(_))),
                "{bad}: {:?}",
                err.err()
            );
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let counters = SpanCounters::default();
        let (queue, _rx) = mpsc::channel(2);
        let reporter = Reporter {
            node_id: String::new(),
            local_tags: Vec::new(),
            scope: super::super::span::scope(),
            queue,
            counters: counters.clone(),
        };
        let span = || SpanData {
            span_context: opentelemetry::trace::SpanContext::empty_context(),
            parent_span_id: opentelemetry::trace::SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: opentelemetry::trace::SpanKind::Client,
            name: "s".into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: opentelemetry::trace::Status::Unset,
            instrumentation_scope: Default::default(),
        };
        for _ in 0..5 {
            reporter.submit(span());
        }
        assert_eq!(counters.dropped.get(), 3);
    }
}
