//! One sampled request's span: what is known when the request arrives, and the OTLP span it
//! becomes when the response ends, with Envoy's and Istio's span name and attributes.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderValue, Method};
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::export::Reporter;
use super::propagate::Outgoing;
use crate::telemetry::ResponseFlags;
use crate::telemetry::labels::PeerLabels;
use crate::telemetry::peer::UNKNOWN;

/// Envoy's default limit on the `http.url` tag's path (`max_path_tag_length`).
const MAX_PATH_TAG: usize = 256;

/// The caller's proxy reports a client span, the callee's a server span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Client,
    Server,
}

/// What a sampled request's span knows when the request arrives.
pub struct ActiveSpan {
    pub(super) context: Outgoing,
    pub(super) kind: Kind,
    pub(super) start: SystemTime,
    pub(super) method: Method,
    pub(super) scheme: &'static str,
    pub(super) authority: HeaderValue,
    pub(super) path: String,
    /// The port the request was addressed to, when the authority names none.
    pub(super) port: u16,
    pub(super) user_agent: Option<HeaderValue>,
    pub(super) request_id: Option<HeaderValue>,
    pub(super) protocol: &'static str,
    pub(super) peer: SocketAddr,
    /// Custom tags resolved from the request.
    pub(super) tags: Vec<KeyValue>,
    pub(super) reporter: Arc<Reporter>,
}

/// What the response adds.
pub struct Finish<'a> {
    pub status: u16,
    pub grpc_status: Option<u32>,
    pub flags: ResponseFlags,
    pub cluster: Option<&'a str>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub source: &'a PeerLabels,
    pub destination: &'a PeerLabels,
}

impl ActiveSpan {
    /// Ends the span and hands it to the exporter (dropped and counted if its queue is full).
    pub fn end(self, finish: Finish<'_>) {
        let reporter = self.reporter.clone();
        reporter.submit(self.into_data(finish, SystemTime::now()));
    }

    fn into_data(self, f: Finish<'_>, end: SystemTime) -> SpanData {
        let name = operation_name(&self.authority, self.port, f.cluster, self.kind);
        let mut attributes = Vec::with_capacity(24 + self.tags.len());
        attributes.push(KeyValue::new("node_id", self.reporter.node_id.clone()));
        attributes.push(KeyValue::new("component", "proxy"));
        attributes.extend(self.reporter.local_tags.iter().cloned());
        if let Some(id) = self.request_id.as_ref().and_then(|v| v.to_str().ok()) {
            attributes.push(KeyValue::new("guid:x-request-id", id.to_owned()));
        }
        attributes.push(KeyValue::new(
            "http.method",
            self.method.as_str().to_owned(),
        ));
        attributes.push(KeyValue::new("http.url", self.url()));
        attributes.push(KeyValue::new("http.protocol", self.protocol));
        if let Some(ua) = self.user_agent.as_ref().and_then(|v| v.to_str().ok()) {
            attributes.push(KeyValue::new("user_agent", ua.to_owned()));
        }
        attributes.push(KeyValue::new("peer.address", self.peer.to_string()));
        attributes.push(KeyValue::new("downstream_cluster", "-"));
        attributes.push(KeyValue::new("request_size", f.request_bytes as i64));
        attributes.push(KeyValue::new("response_size", f.response_bytes as i64));
        if let Some(cluster) = f.cluster {
            attributes.push(KeyValue::new("upstream_cluster", cluster.to_owned()));
            attributes.push(KeyValue::new("upstream_cluster.name", cluster.to_owned()));
        }
        attributes.push(KeyValue::new("http.status_code", i64::from(f.status)));
        if let Some(g) = f.grpc_status {
            attributes.push(KeyValue::new("grpc.status_code", i64::from(g)));
        }
        attributes.push(if f.flags.is_empty() {
            KeyValue::new("response_flags", "-")
        } else {
            KeyValue::new("response_flags", f.flags.to_string())
        });
        peer_attributes(&mut attributes, Side::Source, f.source);
        peer_attributes(&mut attributes, Side::Destination, f.destination);
        let error = f.status == 0 || f.status >= 500;
        if error {
            attributes.push(KeyValue::new("error", true));
        }
        attributes.extend(self.tags);

        let flags = if self.context.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanData {
            span_context: SpanContext::new(
                opentelemetry::trace::TraceId::from(self.context.trace_id.0),
                opentelemetry::trace::SpanId::from(self.context.span_id.0),
                flags,
                false,
                TraceState::NONE,
            ),
            parent_span_id: self
                .context
                .parent
                .map_or(opentelemetry::trace::SpanId::INVALID, |p| p.0.into()),
            parent_span_is_remote: self.context.parent.is_some(),
            span_kind: match self.kind {
                Kind::Client => SpanKind::Client,
                Kind::Server => SpanKind::Server,
            },
            name: Cow::Owned(name),
            start_time: self.start,
            end_time: end.max(self.start),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if error {
                Status::error("")
            } else {
                Status::Unset
            },
            instrumentation_scope: self.reporter.scope.clone(),
        }
    }

    /// Envoy's `http.url`: scheme, host and path, the path cut at 256 bytes.
    fn url(&self) -> String {
        let authority = self.authority.to_str().unwrap_or("");
        let mut cut = self.path.len().min(MAX_PATH_TAG);
        while !self.path.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut url = String::with_capacity(self.scheme.len() + 3 + authority.len() + cut);
        url.push_str(self.scheme);
        url.push_str("://");
        url.push_str(authority);
        url.push_str(&self.path[..cut]);
        url
    }
}

/// Which side of the call a peer's attributes describe.
#[derive(Debug, Clone, Copy)]
enum Side {
    Source,
    Destination,
}

impl Side {
    /// `istio.{side}.workload`, `.namespace`, `.canonical_service`, `.principal`: names made
    /// at compile time, not formatted per span.
    fn keys(self) -> [&'static str; 4] {
        match self {
            Side::Source => [
                "istio.source.workload",
                "istio.source.namespace",
                "istio.source.canonical_service",
                "istio.source.principal",
            ],
            Side::Destination => [
                "istio.destination.workload",
                "istio.destination.namespace",
                "istio.destination.canonical_service",
                "istio.destination.principal",
            ],
        }
    }
}

/// The identities of one side, where the peer metadata exchange or the certificate told us.
fn peer_attributes(out: &mut Vec<KeyValue>, side: Side, peer: &PeerLabels) {
    let w = peer.workload();
    let [workload, namespace, service, principal] = side.keys();
    for (key, value) in [
        (workload, &w.name),
        (namespace, &w.namespace),
        (service, &w.app),
    ] {
        if value != UNKNOWN && !value.is_empty() {
            out.push(KeyValue::new(key, value.clone()));
        }
    }
    if peer.principal() != UNKNOWN {
        out.push(KeyValue::new(principal, peer.principal().to_owned()));
    }
}

/// Istio's span name (the route decorator's operation): `{host}:{port}/*`. A client span
/// takes host and port from its cluster, `outbound|{port}|{subset}|{host}`, as Istio does;
/// otherwise (a server span, a passthrough) from the request's authority and port.
pub fn operation_name(
    authority: &HeaderValue,
    port: u16,
    cluster: Option<&str>,
    kind: Kind,
) -> String {
    if kind == Kind::Client
        && let Some(c) = cluster
    {
        let mut parts = c.split('|');
        if let (Some("outbound"), Some(p), Some(_), Some(host), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) && !host.is_empty()
            && p.parse::<u16>().is_ok()
        {
            return format!("{host}:{p}/*");
        }
    }
    let authority = authority.to_str().unwrap_or("");
    match authority.parse::<http::uri::Authority>() {
        Ok(a) => format!("{}:{}/*", a.host(), a.port_u16().unwrap_or(port)),
        Err(_) => format!("{authority}:{port}/*"),
    }
}

pub(super) fn protocol_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// The scope every span is reported under.
pub(super) fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("mesh-proxy")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        s.parse().unwrap()
    }

    #[test]
    fn client_spans_are_named_by_their_cluster() {
        assert_eq!(
            operation_name(
                &hv("reviews:9080"),
                15001,
                Some("outbound|9080|v1|reviews.default.svc.cluster.local"),
                Kind::Client
            ),
            "reviews.default.svc.cluster.local:9080/*"
        );
        assert_eq!(
            operation_name(
                &hv("example.com"),
                80,
                Some("PassthroughCluster"),
                Kind::Client
            ),
            "example.com:80/*"
        );
    }

    #[test]
    fn server_spans_are_named_by_the_request() {
        assert_eq!(
            operation_name(&hv("reviews:9080"), 8000, Some("inbound|app"), Kind::Server),
            "reviews:9080/*"
        );
        assert_eq!(
            operation_name(&hv("reviews"), 9080, None, Kind::Server),
            "reviews:9080/*"
        );
    }
}
