//! A logged request: what it captures when it starts (only when a log applies to it) and
//! the line it becomes when it ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Version, header};
use mesh_api::telemetry::filter::Attributes;
use mesh_proto::config::v1::access_log::Format;
use tokio::time::Instant;

use super::config::CompiledLog;
use super::format::{self, Entry};
use super::sink::Sink;
use crate::http::scan::RequestScan;
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
    captured: Captured,
    /// The trace id's hex digits: the tracer's, else a `traceparent` header's.
    trace_id: Option<[u8; 32]>,
    /// The headers the logs' filters read, log after log, in each filter's order.
    filter_headers: Vec<Option<HeaderValue>>,
    upstream: Option<Upstream>,
    /// When the proxy took the request up: the upstream service time counts from here, the
    /// request's duration from the head's first bytes.
    taken_up: Instant,
}

/// What the line needs of the request, taken when it starts.
enum Captured {
    /// One text log, the usual case: the line's request parts, written already. `line` is the
    /// request line up to `request_line`, the request's headers up to `headers`, then the
    /// downstream connection; the response's and the upstream's parts go between them.
    Text {
        line: Vec<u8>,
        request_line: usize,
        headers: usize,
    },
    /// JSON, or more than one log: the fields themselves.
    Fields(Box<RequestFields>),
}

struct RequestFields {
    start: SystemTime,
    method: Method,
    path: Option<PathAndQuery>,
    original_path: Option<HeaderValue>,
    version: Version,
    forwarded_for: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    authority: Option<HeaderValue>,
    downstream_local: Option<SocketAddr>,
    downstream_remote: SocketAddr,
    downstream_peer: Option<String>,
    sni: Option<String>,
}

/// The request headers a line shows, found in one pass.
#[derive(Default)]
struct Seen<'a> {
    original_path: Option<&'a HeaderValue>,
    forwarded_for: Option<&'a HeaderValue>,
    user_agent: Option<&'a HeaderValue>,
    request_id: Option<&'a HeaderValue>,
    traceparent: Option<&'a HeaderValue>,
    host: Option<&'a HeaderValue>,
}

impl<'a> Seen<'a> {
    /// Looks through the request's headers for the line's fields that `known` leaves open,
    /// and stops once it has all of them.
    fn scan(headers: &'a HeaderMap, known: &Known<'_>) -> Self {
        // Without the request's scan, any of them may be there.
        let may = |marked: fn(&RequestScan) -> bool| known.arrived_with.is_none_or(marked);
        let (forwarded_for, original_path, traceparent) = (
            may(|s| s.forwarded_for),
            // `x-envoy-original-path`.
            may(|s| s.envoy),
            may(|s| s.trace_context),
        );
        let want_host = known.authority.is_none();
        let want_request_id = may(|s| s.request_id) && known.made_request_id.is_none();
        let custom = forwarded_for || original_path || traceparent || want_request_id;
        let mut left = 1
            + usize::from(want_host)
            + usize::from(want_request_id)
            + usize::from(forwarded_for)
            + usize::from(original_path)
            + usize::from(traceparent);
        let mut seen = Seen::default();
        // One pass over the request's headers instead of a hashed lookup per field.
        for (name, value) in headers {
            // Standard names compare by their tag, without spelling the name out.
            let slot = if *name == header::USER_AGENT {
                &mut seen.user_agent
            } else if *name == header::HOST {
                if !want_host {
                    continue;
                }
                &mut seen.host
            } else if !custom {
                continue;
            } else {
                // Only the fields counted in `left`.
                match name.as_str() {
                    ORIGINAL_PATH if original_path => &mut seen.original_path,
                    FORWARDED_FOR if forwarded_for => &mut seen.forwarded_for,
                    REQUEST_ID if want_request_id => &mut seen.request_id,
                    TRACEPARENT if traceparent => &mut seen.traceparent,
                    _ => continue,
                }
            };
            // The first value, as `%REQ(...)%` takes it.
            if slot.is_none() {
                *slot = Some(value);
                left -= 1;
                if left == 0 {
                    break;
                }
            }
        }
        seen
    }
}

/// What the request path knows already when a logged request starts, so the capture looks
/// through its headers only for what may be there. `Known::default()` knows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Known<'a> {
    /// The request's authority (its URI's, else Host) as routing read it.
    pub authority: Option<&'a HeaderValue>,
    /// The `x-request-id` this proxy made for the request, which came without one.
    pub made_request_id: Option<&'a [u8]>,
    /// The pass over the request's headers when it arrived (which of the line's other
    /// headers it may carry); `None`: any of them.
    pub arrived_with: Option<&'a RequestScan>,
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
        known: &Known<'_>,
        began: Instant,
    ) -> Box<Pending> {
        // The line's start is when the request began (its head's first bytes, as Envoy's
        // START_TIME), on the wall clock: the clocks are read once each, as before.
        let taken_up = Instant::now();
        let now = SystemTime::now();
        let start = now
            .checked_sub(taken_up.saturating_duration_since(began))
            .unwrap_or(now);
        let headers = req.headers();
        let seen = Seen::scan(headers, known);
        let trace_id = seen.traceparent.and_then(|header| {
            let tp = std::str::from_utf8(header.as_bytes()).ok()?;
            self::trace_id(tp)?.as_bytes().try_into().ok()
        });
        let only_text = logs.len() == 1 && logs[0].format == Format::Text;
        let captured = if only_text {
            Self::text_parts(conn, req, &seen, known, start)
        } else {
            Self::fields(conn, req, &seen, known, start)
        };
        Box::new(Pending {
            logs: logs.clone(),
            sink: sink.clone(),
            captured,
            trace_id,
            filter_headers: filter_headers(logs, headers),
            upstream: None,
            taken_up,
        })
    }

    /// The text line's request parts, written now from the request as it is.
    fn text_parts<B>(
        conn: &ConnContext,
        req: &Request<B>,
        seen: &Seen<'_>,
        known: &Known<'_>,
        start: SystemTime,
    ) -> Captured {
        fn bytes(v: Option<&HeaderValue>) -> Option<&[u8]> {
            v.map(HeaderValue::as_bytes)
        }
        let path = req.uri().path_and_query().map(|p| p.as_str().as_bytes());
        let authority = match req.uri().authority() {
            Some(a) => Some(a.as_str().as_bytes()),
            None => bytes(known.authority.or(seen.host)),
        };
        let entry = Entry {
            start: Some(start),
            method: req.method().as_str(),
            path: bytes(seen.original_path).or(path),
            protocol: protocol(req.version()),
            forwarded_for: bytes(seen.forwarded_for),
            user_agent: bytes(seen.user_agent),
            request_id: known.made_request_id.or(bytes(seen.request_id)),
            authority,
            downstream_local: conn.original_dst,
            downstream_remote: Some(conn.peer),
            requested_server_name: conn.sni(),
            downstream_peer: conn.peer_identity.as_ref().map(|id| id.spiffe_id.as_str()),
            ..Entry::default()
        };
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        format::text_request_line(&mut line, &entry);
        let request_line = line.len();
        format::text_request_headers(&mut line, &entry);
        let headers = line.len();
        let downstream = conn.log_downstream.get_or_init(|| {
            let mut part = Vec::new();
            format::text_downstream(&mut part, &entry);
            part.into_boxed_slice()
        });
        line.extend_from_slice(downstream);
        Captured::Text {
            line,
            request_line,
            headers,
        }
    }

    fn fields<B>(
        conn: &ConnContext,
        req: &Request<B>,
        seen: &Seen<'_>,
        known: &Known<'_>,
        start: SystemTime,
    ) -> Captured {
        let authority = match req.uri().authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => known.authority.or(seen.host).cloned(),
        };
        let request_id = match known.made_request_id {
            Some(id) => HeaderValue::from_bytes(id).ok(),
            None => seen.request_id.cloned(),
        };
        Captured::Fields(Box::new(RequestFields {
            start,
            method: req.method().clone(),
            path: req.uri().path_and_query().cloned(),
            original_path: seen.original_path.cloned(),
            version: req.version(),
            forwarded_for: seen.forwarded_for.cloned(),
            user_agent: seen.user_agent.cloned(),
            request_id,
            authority,
            downstream_local: conn.original_dst,
            downstream_remote: conn.peer,
            downstream_peer: conn
                .peer_identity
                .as_ref()
                .map(|id| id.spiffe_id.as_str().to_owned()),
            sni: conn.sni().map(str::to_owned),
        }))
    }

    /// The tracer's trace id (hex), in place of one read from `traceparent`.
    pub fn trace_id(&mut self, hex: [u8; 32]) {
        self.trace_id = Some(hex);
    }

    /// How long since the proxy took the request up.
    pub fn since_taken_up(&self) -> Duration {
        self.taken_up.elapsed()
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
            let fields = match &self.captured {
                // One text log: its line's parts go straight into the output's buffer.
                Captured::Text {
                    line,
                    request_line,
                    headers,
                } => {
                    let e = self.ending(&end, Entry::default());
                    self.sink.send_with(|buf| {
                        buf.extend_from_slice(&line[..*request_line]);
                        format::text_response(buf, &e);
                        buf.extend_from_slice(&line[*request_line..*headers]);
                        format::text_upstream(buf, &e);
                        buf.extend_from_slice(&line[*headers..]);
                        format::text_end(buf, &e);
                    });
                    continue;
                }
                Captured::Fields(fields) => fields,
            };
            // Each format is made once, however many logs take it.
            let line = match log.format {
                Format::Text => text.get_or_insert_with(|| format::text(&self.entry(fields, &end))),
                Format::Json => {
                    json.get_or_insert_with(|| format::json(&self.entry(fields, &end)).into_bytes())
                }
            };
            self.sink.send(line);
        }
    }

    /// `request`'s entry with what the response, the upstream and the tracer said.
    fn ending<'s>(&'s self, end: &Finished, request: Entry<'s>) -> Entry<'s> {
        let up = self.upstream.as_ref();
        Entry {
            response_code: end.response_code,
            response_flags: end.flags,
            response_code_details: up.and_then(|u| u.host).map(|_| "via_upstream"),
            bytes_received: end.bytes_received,
            bytes_sent: end.bytes_sent,
            duration_ms: end.duration.as_millis() as u64,
            upstream_service_time_ms: up
                .filter(|u| u.host.is_some())
                .map(|u| u.service_time.as_millis() as u64),
            upstream_host: up.and_then(|u| u.host),
            upstream_cluster: up.and_then(|u| u.cluster.as_ref()).map(|c| c.name.as_str()),
            upstream_peer: up.and_then(|u| u.peer.as_deref()),
            trace_id: self.trace_id.as_ref().map(|h| &h[..]),
            ..request
        }
    }

    fn entry<'s>(&'s self, r: &'s RequestFields, end: &Finished) -> Entry<'s> {
        fn bytes(v: &Option<HeaderValue>) -> Option<&[u8]> {
            v.as_ref().map(HeaderValue::as_bytes)
        }
        let request = Entry {
            start: Some(r.start),
            method: r.method.as_str(),
            path: bytes(&r.original_path).or(r.path.as_ref().map(|p| p.as_str().as_bytes())),
            protocol: protocol(r.version),
            forwarded_for: bytes(&r.forwarded_for),
            user_agent: bytes(&r.user_agent),
            request_id: bytes(&r.request_id),
            authority: bytes(&r.authority),
            downstream_local: r.downstream_local,
            downstream_remote: Some(r.downstream_remote),
            requested_server_name: r.sni.as_deref(),
            downstream_peer: r.downstream_peer.as_deref(),
            ..Entry::default()
        };
        self.ending(end, request)
    }
}

/// Room for a usual line, so it is allocated once.
const LINE_CAPACITY: usize = 320;

fn filter_headers(logs: &[CompiledLog], headers: &HeaderMap) -> Vec<Option<HeaderValue>> {
    // The usual log has no filter, or one on the response code alone.
    if logs
        .iter()
        .all(|l| l.filter.as_ref().is_none_or(|f| f.headers().is_empty()))
    {
        return Vec::new();
    }
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

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for &(n, v) in pairs {
            h.append(
                http::HeaderName::from_static(n),
                HeaderValue::from_static(v),
            );
        }
        h
    }

    fn request_headers() -> HeaderMap {
        headers(&[
            ("host", "reviews:9080"),
            ("user-agent", "first"),
            ("user-agent", "second"),
            ("x-forwarded-for", "198.18.0.9"),
            ("x-request-id", "client-id"),
            ("accept", "*/*"),
        ])
    }

    fn text(v: Option<&HeaderValue>) -> Option<&str> {
        v.map(|v| v.to_str().unwrap())
    }

    #[test]
    fn the_scan_finds_every_field_it_is_not_told() {
        let h = request_headers();
        let seen = Seen::scan(&h, &Known::default());
        assert_eq!(text(seen.host), Some("reviews:9080"));
        assert_eq!(text(seen.user_agent), Some("first"));
        assert_eq!(text(seen.forwarded_for), Some("198.18.0.9"));
        assert_eq!(text(seen.request_id), Some("client-id"));
        assert_eq!(seen.traceparent, None);
    }

    /// A header the request was not marked as carrying neither fills its field nor ends
    /// the scan before the fields it is looking for.
    #[test]
    fn an_unmarked_header_does_not_end_the_scan_early() {
        let h = headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("x-forwarded-for", "198.18.0.9"),
            ("user-agent", "agent"),
        ]);
        let authority = HeaderValue::from_static("reviews:9080");
        let scan = RequestScan {
            forwarded_for: true,
            ..RequestScan::default()
        };
        let known = Known {
            authority: Some(&authority),
            made_request_id: Some(b"made-here"),
            arrived_with: Some(&scan),
        };
        let seen = Seen::scan(&h, &known);
        assert_eq!(seen.traceparent, None);
        assert_eq!(text(seen.forwarded_for), Some("198.18.0.9"));
        assert_eq!(text(seen.user_agent), Some("agent"));
    }

    #[test]
    fn the_scan_skips_what_is_known_and_what_the_request_did_not_carry() {
        let h = request_headers();
        let authority = HeaderValue::from_static("reviews:9080");
        let scan = RequestScan {
            forwarded_for: true,
            request_id: true,
            ..RequestScan::default()
        };
        let known = Known {
            authority: Some(&authority),
            made_request_id: Some(b"made-here"),
            arrived_with: Some(&scan),
        };
        let seen = Seen::scan(&h, &known);
        assert_eq!(seen.host, None, "routing's authority stands in");
        assert_eq!(seen.request_id, None, "the id made here stands in");
        assert_eq!(text(seen.user_agent), Some("first"));
        assert_eq!(text(seen.forwarded_for), Some("198.18.0.9"));
        let without_forwarded_for = RequestScan {
            forwarded_for: false,
            ..scan
        };
        let nothing_else = Known {
            arrived_with: Some(&without_forwarded_for),
            ..known
        };
        assert_eq!(Seen::scan(&h, &nothing_else).forwarded_for, None);
    }

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
