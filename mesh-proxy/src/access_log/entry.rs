//! A logged request: what it captures when it starts (only when a log applies to it) and
//! the line it becomes when it ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Version};
use mesh_api::telemetry::filter::Attributes;
use mesh_proto::config::v1::access_log::Format;

use super::config::CompiledLog;
use super::format::{self, Entry};
use super::sink::Sink;
use crate::listener::ConnContext;
use crate::telemetry::ResponseFlags;
use crate::upstream::Cluster;

const ORIGINAL_PATH: &str = "x-envoy-original-path";
const FORWARDED_FOR: &str = "x-forwarded-for";
const REQUEST_ID: &str = "x-request-id";
const TRACEPARENT: &str = "traceparent";

/// Filters read at most this many header values of one request (more are absent).
const MAX_FILTER_HEADERS: usize = 16;

/// A request being logged, from its start.
pub struct Pending {
    logs: Arc<[CompiledLog]>,
    sink: Arc<Sink>,
    start: SystemTime,
    method: Method,
    path: Option<PathAndQuery>,
    original_path: Option<HeaderValue>,
    version: Version,
    forwarded_for: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    authority: Option<HeaderValue>,
    /// The trace id's hex digits: the tracer's, else a `traceparent` header's.
    trace_id: Option<[u8; 32]>,
    /// The headers the logs' filters read, log after log, in each filter's order.
    filter_headers: Vec<Option<HeaderValue>>,
    downstream_local: Option<SocketAddr>,
    downstream_remote: SocketAddr,
    downstream_peer: Option<String>,
    sni: Option<String>,
    upstream: Option<Upstream>,
}

/// The request headers a line shows, found in one pass.
#[derive(Default)]
struct Captured {
    original_path: Option<HeaderValue>,
    forwarded_for: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
    host: Option<HeaderValue>,
}

/// What the response says about the upstream that answered.
pub struct Upstream {
    pub host: Option<SocketAddr>,
    pub cluster: Option<Arc<Cluster>>,
    pub peer: Option<String>,
    /// From the request's start to the upstream's response headers.
    pub service_time: Duration,
}

/// How the request ended.
pub struct Finished {
    pub response_code: u16,
    pub flags: ResponseFlags,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: Duration,
}

impl Pending {
    pub fn capture<B>(
        logs: &Arc<[CompiledLog]>,
        sink: &Arc<Sink>,
        conn: &ConnContext,
        req: &Request<B>,
    ) -> Box<Pending> {
        let headers = req.headers();
        let mut seen = Captured::default();
        // One pass over the request's headers instead of a hashed lookup per field.
        for (name, value) in headers {
            let slot = match name.as_str() {
                ORIGINAL_PATH => &mut seen.original_path,
                FORWARDED_FOR => &mut seen.forwarded_for,
                "user-agent" => &mut seen.user_agent,
                REQUEST_ID => &mut seen.request_id,
                TRACEPARENT => &mut seen.traceparent,
                "host" => &mut seen.host,
                _ => continue,
            };
            // The first value, as `%REQ(...)%` takes it.
            if slot.is_none() {
                *slot = Some(value.clone());
            }
        }
        let authority = match req.uri().authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => seen.host,
        };
        Box::new(Pending {
            logs: logs.clone(),
            sink: sink.clone(),
            start: SystemTime::now(),
            method: req.method().clone(),
            path: req.uri().path_and_query().cloned(),
            original_path: seen.original_path,
            version: req.version(),
            forwarded_for: seen.forwarded_for,
            user_agent: seen.user_agent,
            request_id: seen.request_id,
            authority,
            trace_id: seen.traceparent.and_then(|header| {
                let tp = std::str::from_utf8(header.as_bytes()).ok()?;
                self::trace_id(tp)?.as_bytes().try_into().ok()
            }),
            filter_headers: filter_headers(logs, headers),
            downstream_local: conn.original_dst,
            downstream_remote: conn.peer,
            downstream_peer: conn
                .peer_identity
                .as_ref()
                .map(|id| id.spiffe_id.as_str().to_owned()),
            sni: conn.sni().map(str::to_owned),
            upstream: None,
        })
    }

    /// The tracer's trace id (hex), in place of one read from `traceparent`.
    pub fn trace_id(&mut self, hex: [u8; 32]) {
        self.trace_id = Some(hex);
    }

    pub fn upstream(&mut self, upstream: Upstream) {
        self.upstream = Some(upstream);
    }

    /// Writes a line to every log whose filter takes the request.
    pub fn finish(self, end: Finished) {
        let mut offset = 0;
        let mut text = None;
        let mut json = None;
        for log in self.logs.iter() {
            if let Some(filter) = &log.filter {
                let n = filter.headers().len();
                let values = self.filter_headers.get(offset..offset + n).unwrap_or(&[]);
                offset += n;
                let mut strs = [None; MAX_FILTER_HEADERS];
                for (slot, v) in strs.iter_mut().zip(values) {
                    *slot = v.as_ref().and_then(|v| v.to_str().ok());
                }
                let attrs = Attributes {
                    response_code: end.response_code,
                    headers: &strs[..n.min(MAX_FILTER_HEADERS)],
                };
                if !filter.matches(&attrs) {
                    continue;
                }
            }
            // One text log (the usual case) formats straight into the output's buffer.
            if self.logs.len() == 1 && log.format == Format::Text {
                self.sink
                    .send_with(|buf| format::text_into(buf, &self.entry(&end)));
                continue;
            }
            // Each format is made once, however many logs take it.
            let line = match log.format {
                Format::Text => text.get_or_insert_with(|| format::text(&self.entry(&end))),
                Format::Json => {
                    json.get_or_insert_with(|| format::json(&self.entry(&end)).into_bytes())
                }
            };
            self.sink.send(line);
        }
    }

    fn entry(&self, end: &Finished) -> Entry<'_> {
        fn bytes(v: &Option<HeaderValue>) -> Option<&[u8]> {
            v.as_ref().map(HeaderValue::as_bytes)
        }
        let up = self.upstream.as_ref();
        Entry {
            start: Some(self.start),
            method: self.method.as_str(),
            path: bytes(&self.original_path).or(self.path.as_ref().map(|p| p.as_str().as_bytes())),
            protocol: protocol(self.version),
            response_code: end.response_code,
            response_flags: end.flags,
            response_code_details: up.and_then(|u| u.host).map(|_| "via_upstream"),
            bytes_received: end.bytes_received,
            bytes_sent: end.bytes_sent,
            duration_ms: end.duration.as_millis() as u64,
            upstream_service_time_ms: up
                .filter(|u| u.host.is_some())
                .map(|u| u.service_time.as_millis() as u64),
            forwarded_for: bytes(&self.forwarded_for),
            user_agent: bytes(&self.user_agent),
            request_id: bytes(&self.request_id),
            authority: bytes(&self.authority),
            upstream_host: up.and_then(|u| u.host),
            upstream_cluster: up.and_then(|u| u.cluster.as_ref()).map(|c| c.name.as_str()),
            downstream_local: self.downstream_local,
            downstream_remote: Some(self.downstream_remote),
            requested_server_name: self.sni.as_deref(),
            downstream_peer: self.downstream_peer.as_deref(),
            upstream_peer: up.and_then(|u| u.peer.as_deref()),
            trace_id: self.trace_id.as_ref().map(|h| &h[..]),
        }
    }
}

fn filter_headers(logs: &[CompiledLog], headers: &HeaderMap) -> Vec<Option<HeaderValue>> {
    logs.iter()
        .filter_map(|l| l.filter.as_ref())
        .flat_map(|f| f.headers())
        .map(|name| headers.get(name.as_str()).cloned())
        .collect()
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, later versions may
/// append `-...`); an all-zero or malformed one has none. Checked at fixed offsets.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let tp = traceparent.trim().as_bytes();
    let dashes = [2, 35, 52];
    let shaped = tp.len() >= 55
        && dashes.iter().all(|&i| tp[i] == b'-')
        && (tp.len() == 55 || tp[55] == b'-');
    if !shaped {
        return None;
    }
    let hex = |r: std::ops::Range<usize>| tp[r].iter().all(u8::is_ascii_hexdigit);
    let id = &tp[3..35];
    let ok = hex(0..2)
        && &tp[0..2] != b"ff"
        && hex(3..35)
        && id.iter().any(|&b| b != b'0')
        && hex(36..52)
        && hex(53..55);
    // Hex digits are ASCII, so the id is a str boundary of the trimmed input.
    ok.then(|| &traceparent.trim()[3..35])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id("00-4bf92f35-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id("garbage"), None);
        assert_eq!(
            trace_id(" 01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later "),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"),
            None
        );
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"),
            None
        );
    }
}
