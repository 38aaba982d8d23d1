//! Distributed tracing, as Envoy does it for Istio: every proxy of a call reports one span
//! per request (a client span at the caller's proxy, a server span at the callee's), named
//! and tagged as Istio's, and exported by OTLP gRPC.
//!
//! - [`context`]: reading W3C and B3 trace headers;
//! - [`sampling`]: whether a request is traced;
//! - [`propagate`]: writing this proxy's span into the request passed on;
//! - [`span`]: a sampled request's span and its attributes;
//! - [`otlp`]: OTLP's protobuf messages, written directly;
//! - [`export`]: the bounded queue and the batch export task.
//!
//! Without a collector endpoint nothing here runs: trace headers pass through untouched.
//! With one, every request gets a span id and carries it on (with the sampling decision);
//! only a sampled request builds a span.

pub mod context;
pub mod export;
pub mod otlp;
pub mod propagate;
pub mod sampling;
pub mod span;

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use http::{HeaderName, Request, header};
use mesh_proto::config::v1 as pb;
use prometheus_client::registry::Registry;

pub use context::{Incoming, SpanId, TraceId};
pub use export::{ExportError, ExportOptions};
pub use span::{ActiveSpan, Finish, Kind, Tag};

use super::WorkloadMetadata;
use crate::http::scan::RequestScan;
use crate::listener::ConnContext;
use export::{Reporter, SpanCounters};
use propagate::Outgoing;
pub use propagate::TraceHeaders;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The proxy's tracer: off until [`Tracer::start_export`].
#[derive(Default)]
pub struct Tracer {
    reporter: OnceLock<Arc<Reporter>>,
    counters: SpanCounters,
}

impl Tracer {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "spans_exported",
            "Spans the collector accepted",
            self.counters.exported.clone(),
        );
        registry.register(
            "spans_dropped",
            "Spans dropped: the export queue was full or the collector failed their batch",
            self.counters.dropped.clone(),
        );
    }

    /// Starts exporting spans (inside a tokio runtime). `workload` names the service the
    /// spans are reported under and gives Istio's `istio.*` tags.
    pub fn start_export(
        &self,
        opts: &ExportOptions,
        workload: Option<&WorkloadMetadata>,
    ) -> Result<(), ExportError> {
        if self.reporter.get().is_some() {
            return Err(ExportError::AlreadyStarted);
        }
        let (service, tags) = match workload {
            Some(w) => (
                format!("{}.{}", w.app, w.namespace),
                vec![
                    ("istio.canonical_service", w.app.clone()),
                    ("istio.canonical_revision", w.version.clone()),
                    ("istio.namespace", w.namespace.clone()),
                    ("istio.cluster_id", w.cluster.clone()),
                ],
            ),
            None => ("mesh-proxy".to_owned(), Vec::new()),
        };
        let reporter = export::start(opts, &service, &tags, self.counters.clone())?;
        self.reporter
            .set(Arc::new(reporter))
            .map_err(|_| ExportError::AlreadyStarted)
    }

    pub fn is_exporting(&self) -> bool {
        self.reporter.get().is_some()
    }

    /// Spans dropped so far.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.get()
    }

    /// Continues (or starts) the request's trace: decides whether it is sampled, writes this
    /// proxy's span into its headers for the next hop, and, when sampled and reported,
    /// returns the span to end when the response does. `None` when no collector is set.
    pub fn begin<B>(
        &self,
        conn: &ConnContext,
        req: &Request<B>,
        scan: &RequestScan,
        cfg: Option<&pb::Tracing>,
    ) -> Option<Begun> {
        let reporter = self.reporter.get()?;
        let incoming = if scan.trace_context {
            Incoming::read(req.headers())
        } else {
            Incoming::default()
        };
        let span_id = SpanId::random();
        // The span id is random: its top 53 bits are the sampling roll, uniform in [0, 100).
        let roll = (span_id.0 >> 11) as f64 / (1u64 << 53) as f64 * 100.0;
        let sampled = sampling::sampled(&incoming, sampling::percentage(cfg), roll);
        let out = Outgoing {
            trace_id: incoming.parent.map_or_else(TraceId::random, |p| p.trace_id),
            span_id,
            parent: incoming.parent.map(|p| p.span_id),
            sampled,
        };
        let trace = TraceHeaders::new(&incoming, &out);
        let kind = if conn.listener.is_inbound() {
            Kind::Server
        } else {
            Kind::Client
        };
        if !sampled || !reports(cfg, kind) {
            return Some(Begun { trace, span: None });
        }
        let headers = req.headers();
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let authority = match req.uri().authority() {
            Some(a) => http::HeaderValue::from_str(a.as_str()).ok(),
            None => headers.get(header::HOST).cloned(),
        }
        .unwrap_or_else(|| http::HeaderValue::from_static(""));
        let span = Box::new(ActiveSpan {
            context: out,
            kind,
            start: SystemTime::now(),
            method: req.method().clone(),
            scheme: conn.listener.scheme(),
            authority,
            path,
            port: conn
                .original_dst
                .map_or(conn.destination_port, |a| a.port()),
            user_agent: headers.get(header::USER_AGENT).cloned(),
            request_id: headers.get(REQUEST_ID).cloned(),
            protocol: span::protocol_name(req.version()),
            peer: conn.peer,
            tags: custom_tags(cfg, headers),
            reporter: reporter.clone(),
        });
        Some(Begun {
            trace,
            span: Some(span),
        })
    }
}

/// A request's place in its trace, from [`Tracer::begin`].
pub struct Begun {
    /// The trace headers the request carries on (written when it goes upstream), with the
    /// trace id the access log shows.
    pub trace: TraceHeaders,
    /// This proxy's span, when the request is sampled and its side reports.
    pub span: Option<Box<ActiveSpan>>,
}

/// Whether spans of this kind are reported under the config.
fn reports(cfg: Option<&pb::Tracing>, kind: Kind) -> bool {
    let Some(cfg) = cfg else { return true };
    if cfg.disable_span_reporting {
        return false;
    }
    match cfg.mode() {
        pb::TracingMode::ClientAndServer => true,
        pb::TracingMode::Client => kind == Kind::Client,
        pb::TracingMode::Server => kind == Kind::Server,
    }
}

/// The config's custom tags for one request.
fn custom_tags(cfg: Option<&pb::Tracing>, headers: &http::HeaderMap) -> Vec<Tag> {
    use pb::tracing_custom_tag::Type;
    let Some(cfg) = cfg else { return Vec::new() };
    cfg.custom_tags
        .iter()
        .filter_map(|tag| {
            let value = match tag.r#type.as_ref()? {
                Type::Literal(l) => l.value.clone(),
                Type::Environment(e) => {
                    std::env::var(&e.name).unwrap_or_else(|_| e.default_value.clone())
                }
                Type::Header(h) => headers
                    .get(h.name.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map_or_else(|| h.default_value.clone(), str::to_owned),
            };
            Some((tag.name.clone(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reporting_follows_the_mode() {
        assert!(reports(None, Kind::Client));
        let cfg = |mode: pb::TracingMode, disable: bool| pb::Tracing {
            mode: mode as i32,
            disable_span_reporting: disable,
            ..Default::default()
        };
        let client = cfg(pb::TracingMode::Client, false);
        assert!(reports(Some(&client), Kind::Client));
        assert!(!reports(Some(&client), Kind::Server));
        let server = cfg(pb::TracingMode::Server, false);
        assert!(!reports(Some(&server), Kind::Client));
        assert!(reports(Some(&server), Kind::Server));
        let off = cfg(pb::TracingMode::ClientAndServer, true);
        assert!(!reports(Some(&off), Kind::Server));
    }

    #[test]
    fn custom_tags_take_literals_headers_and_the_environment() {
        use pb::tracing_custom_tag::Type;
        let tag = |name: &str, t: Type| pb::TracingCustomTag {
            name: name.into(),
            r#type: Some(t),
        };
        let cfg = pb::Tracing {
            custom_tags: vec![
                tag(
                    "team",
                    Type::Literal(pb::TracingLiteral {
                        value: "payments".into(),
                    }),
                ),
                tag(
                    "tenant",
                    Type::Header(pb::TracingRequestHeader {
                        name: "x-tenant".into(),
                        default_value: "none".into(),
                    }),
                ),
                tag(
                    "missing",
                    Type::Header(pb::TracingRequestHeader {
                        name: "x-absent".into(),
                        default_value: "none".into(),
                    }),
                ),
                tag(
                    "env",
                    Type::Environment(pb::TracingEnvironment {
                        name: "MESH_TRACE_TEST_SURELY_UNSET".into(),
                        default_value: "dflt".into(),
                    }),
                ),
            ],
            ..Default::default()
        };
        let mut h = http::HeaderMap::new();
        h.insert("x-tenant", "acme".parse().unwrap());
        let tags = custom_tags(Some(&cfg), &h);
        let pairs: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("team", "payments"),
                ("tenant", "acme"),
                ("missing", "none"),
                ("env", "dflt")
            ]
        );
    }
}
