//! One sampled request's span: what is known when the request arrives, and the OTLP span it
//! becomes when the response ends, with Envoy's and Istio's span name and attributes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method};

use super::export::Reporter;
use super::otlp::{self, Message, Value};
use super::propagate::Outgoing;
use crate::telemetry::ResponseFlags;
use crate::telemetry::labels::PeerLabels;
use crate::telemetry::peer::UNKNOWN;

/// Envoy's default limit on the `http.url` tag's path (`max_path_tag_length`).
const MAX_PATH_TAG: usize = 256;

/// The W3C trace flag of a sampled trace.
const SAMPLED: u32 = 1;

/// The caller's proxy reports a client span, the callee's a server span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Client,
    Server,
}

/// A custom tag's name and the value this request gave it.
pub type Tag = (String, String);

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
    pub(super) tags: Vec<Tag>,
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
        reporter.submit(self.encode(finish, SystemTime::now()));
    }

    /// The OTLP `Span` this becomes, in the protobuf bytes that are exported.
    fn encode(self, f: Finish<'_>, end: SystemTime) -> Message {
        use otlp::span::*;
        let mut span = Message::with_capacity(1024);
        span.bytes(TRACE_ID, &self.context.trace_id.0.to_be_bytes());
        span.bytes(SPAN_ID, &self.context.span_id.0.to_be_bytes());
        if let Some(parent) = self.context.parent {
            span.bytes(PARENT_SPAN_ID, &parent.0.to_be_bytes());
        }
        span.string(
            NAME,
            &operation_name(&self.authority, self.port, f.cluster, self.kind),
        );
        span.uint(
            KIND,
            match self.kind {
                Kind::Client => KIND_CLIENT,
                Kind::Server => KIND_SERVER,
            },
        );
        span.fixed64(START_TIME_UNIX_NANO, unix_nanos(self.start));
        span.fixed64(END_TIME_UNIX_NANO, unix_nanos(end.max(self.start)));

        let attr = |span: &mut Message, key: &str, value: Value<'_>| {
            span.attribute(ATTRIBUTES, key, value)
        };
        span.extend(&self.reporter.common);
        if let Some(id) = self.request_id.as_ref().and_then(|v| v.to_str().ok()) {
            attr(&mut span, "guid:x-request-id", Value::Str(id));
        }
        attr(&mut span, "http.method", Value::Str(self.method.as_str()));
        attr(&mut span, "http.url", Value::Str(&self.url()));
        attr(&mut span, "http.protocol", Value::Str(self.protocol));
        if let Some(ua) = self.user_agent.as_ref().and_then(|v| v.to_str().ok()) {
            attr(&mut span, "user_agent", Value::Str(ua));
        }
        attr(
            &mut span,
            "peer.address",
            Value::Str(&self.peer.to_string()),
        );
        attr(&mut span, "downstream_cluster", Value::Str("-"));
        attr(
            &mut span,
            "request_size",
            Value::Int(f.request_bytes as i64),
        );
        attr(
            &mut span,
            "response_size",
            Value::Int(f.response_bytes as i64),
        );
        if let Some(cluster) = f.cluster {
            attr(&mut span, "upstream_cluster", Value::Str(cluster));
            attr(&mut span, "upstream_cluster.name", Value::Str(cluster));
        }
        attr(
            &mut span,
            "http.status_code",
            Value::Int(i64::from(f.status)),
        );
        if let Some(g) = f.grpc_status {
            attr(&mut span, "grpc.status_code", Value::Int(i64::from(g)));
        }
        if f.flags.is_empty() {
            attr(&mut span, "response_flags", Value::Str("-"));
        } else {
            attr(
                &mut span,
                "response_flags",
                Value::Str(&f.flags.to_string()),
            );
        }
        peer_attributes(&mut span, Side::Source, f.source);
        peer_attributes(&mut span, Side::Destination, f.destination);
        let error = f.status == 0 || f.status >= 500;
        if error {
            attr(&mut span, "error", Value::Bool(true));
            let mut status = Message::default();
            status.uint(otlp::status::CODE, otlp::status::CODE_ERROR);
            span.message(STATUS, &status);
        }
        for (key, value) in &self.tags {
            attr(&mut span, key, Value::Str(value));
        }

        let sampled = if self.context.sampled { SAMPLED } else { 0 };
        let remote = if self.context.parent.is_some() {
            FLAGS_CONTEXT_IS_REMOTE
        } else {
            0
        };
        span.fixed32(FLAGS, sampled | FLAGS_CONTEXT_HAS_IS_REMOTE | remote);
        span
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
fn peer_attributes(span: &mut Message, side: Side, peer: &PeerLabels) {
    let w = peer.workload();
    let [workload, namespace, service, principal] = side.keys();
    for (key, value) in [
        (workload, &w.name),
        (namespace, &w.namespace),
        (service, &w.app),
    ] {
        if value != UNKNOWN && !value.is_empty() {
            span.attribute(otlp::span::ATTRIBUTES, key, Value::Str(value));
        }
    }
    if peer.principal() != UNKNOWN {
        span.attribute(
            otlp::span::ATTRIBUTES,
            principal,
            Value::Str(peer.principal()),
        );
    }
}

/// OTLP's time: nanoseconds since the Unix epoch (0 for a clock set before it).
fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::ResponseFlag;
    use crate::telemetry::trace::{SpanId, TraceId};
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message as _;
    use std::time::Duration;

    fn hv(s: &str) -> HeaderValue {
        s.parse().unwrap()
    }

    fn active(parent: Option<SpanId>, tags: Vec<Tag>) -> ActiveSpan {
        let (queue, _) = tokio::sync::mpsc::channel(1);
        let reporter = Reporter::new(
            "sidecar~198.18.0.1~reviews-v1.default~default.svc.cluster.local",
            &[("istio.namespace", "default".into())],
            queue,
            Default::default(),
        );
        ActiveSpan {
            context: Outgoing {
                trace_id: TraceId(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
                span_id: SpanId(0x1112_1314_1516_1718),
                parent,
                sampled: true,
            },
            kind: Kind::Client,
            start: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            method: Method::POST,
            scheme: "http",
            authority: hv("reviews:9080"),
            path: "/r".into(),
            port: 9080,
            user_agent: None,
            request_id: Some(hv("req-1")),
            protocol: "HTTP/1.1",
            peer: "198.18.0.2:40000".parse().unwrap(),
            tags,
            reporter: Arc::new(reporter),
        }
    }

    fn finish<'a>(status: u16, flags: ResponseFlags, unknown: &'a PeerLabels) -> Finish<'a> {
        Finish {
            status,
            grpc_status: Some(14),
            flags,
            cluster: Some("outbound|9080||reviews.default.svc.cluster.local"),
            request_bytes: 3,
            response_bytes: 19,
            source: unknown,
            destination: unknown,
        }
    }

    fn attributes(span: &Span) -> Vec<(String, Any)> {
        span.attributes
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone().unwrap().value.unwrap()))
            .collect()
    }

    /// The OTLP span as the collector decodes it: ids in big-endian bytes (the order of the
    /// trace headers' hex), Unix-nanosecond times, W3C flags with the parent's remoteness,
    /// an error status and `error` tag on a 5xx, custom tags last.
    #[test]
    fn a_failed_calls_span_reads_back_from_its_otlp_bytes() {
        let unknown = PeerLabels::unknown();
        let parent = SpanId(0x2122_2324_2526_2728);
        let tags = vec![("team".to_owned(), "payments".to_owned())];
        let span = active(Some(parent), tags);
        let end = span.start + Duration::from_millis(5);
        let flags = ResponseFlags::of(ResponseFlag::UpstreamConnectionFailure);
        let bytes = span.encode(finish(503, flags, &unknown), end);
        let decoded = Span::decode(bytes.as_bytes()).unwrap();

        assert_eq!(decoded.trace_id, (1..=16).collect::<Vec<u8>>());
        assert_eq!(decoded.span_id, (0x11..=0x18).collect::<Vec<u8>>());
        assert_eq!(decoded.parent_span_id, (0x21..=0x28).collect::<Vec<u8>>());
        assert_eq!(decoded.name, "reviews.default.svc.cluster.local:9080/*");
        assert_eq!(decoded.kind, 3);
        assert_eq!(decoded.start_time_unix_nano, 1_700_000_000_123_456_789);
        assert_eq!(decoded.end_time_unix_nano, 1_700_000_000_128_456_789);
        assert_eq!(decoded.flags, 0x301);
        assert_eq!(decoded.status.as_ref().unwrap().code, 2);
        let s = |v: &str| Any::StringValue(v.into());
        let cluster = "outbound|9080||reviews.default.svc.cluster.local";
        assert_eq!(
            attributes(&decoded),
            [
                (
                    "node_id".into(),
                    s("sidecar~198.18.0.1~reviews-v1.default~default.svc.cluster.local")
                ),
                ("component".into(), s("proxy")),
                ("istio.namespace".into(), s("default")),
                ("guid:x-request-id".into(), s("req-1")),
                ("http.method".into(), s("POST")),
                ("http.url".into(), s("http://reviews:9080/r")),
                ("http.protocol".into(), s("HTTP/1.1")),
                ("peer.address".into(), s("198.18.0.2:40000")),
                ("downstream_cluster".into(), s("-")),
                ("request_size".into(), Any::IntValue(3)),
                ("response_size".into(), Any::IntValue(19)),
                ("upstream_cluster".into(), s(cluster)),
                ("upstream_cluster.name".into(), s(cluster)),
                ("http.status_code".into(), Any::IntValue(503)),
                ("grpc.status_code".into(), Any::IntValue(14)),
                ("response_flags".into(), s("UF")),
                ("error".into(), Any::BoolValue(true)),
                ("team".into(), s("payments")),
            ]
        );
    }

    /// A root span has no parent id and no error status; an end before the start (a clock
    /// stepped back) is reported as the start.
    #[test]
    fn a_root_spans_otlp_bytes_have_no_parent_and_no_status() {
        let unknown = PeerLabels::unknown();
        let span = active(None, Vec::new());
        let end = span.start - Duration::from_secs(1);
        let bytes = span.encode(finish(200, ResponseFlags::default(), &unknown), end);
        let decoded = Span::decode(bytes.as_bytes()).unwrap();
        assert!(decoded.parent_span_id.is_empty());
        assert_eq!(decoded.flags, 0x101);
        assert!(decoded.status.is_none());
        assert_eq!(decoded.end_time_unix_nano, decoded.start_time_unix_nano);
        let attrs = attributes(&decoded);
        assert!(attrs.iter().all(|(k, _)| k != "error"), "{attrs:?}");
        assert!(attrs.contains(&("response_flags".into(), Any::StringValue("-".into()))));
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
