//! One access-log line from a finished request: Envoy's default text format as Istio
//! configures it, or a JSON object with Istio's default JSON keys. Both end with the fields
//! Istio users add for a mesh: the peers' identities and the trace id.
//!
//! Text (one line; `-` for an absent value, as Envoy prints it):
//!
//! ```text
//! [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
//! %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
//! "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
//! %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
//! "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
//! %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
//! %REQUESTED_SERVER_NAME% %ROUTE_NAME% "%DOWNSTREAM_PEER_URI_SAN%" "%UPSTREAM_PEER_URI_SAN%"
//! %TRACE_ID%
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::telemetry::ResponseFlags;

/// A finished request as a log line shows it.
#[derive(Debug, Clone, Default)]
pub struct Entry<'a> {
    pub start: Option<SystemTime>,
    pub method: &'a str,
    /// `x-envoy-original-path` when a route rewrote it, else the path with its query.
    pub path: Option<&'a [u8]>,
    pub protocol: &'static str,
    /// 0 when no response was made.
    pub response_code: u16,
    pub response_flags: ResponseFlags,
    /// `via_upstream` when the upstream answered; the proxy's own replies have none.
    pub response_code_details: Option<&'static str>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub upstream_service_time_ms: Option<u64>,
    pub forwarded_for: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub request_id: Option<&'a [u8]>,
    pub authority: Option<&'a [u8]>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<&'a str>,
    pub downstream_local: Option<SocketAddr>,
    pub downstream_remote: Option<SocketAddr>,
    pub requested_server_name: Option<&'a str>,
    /// `spiffe://...` of the client's certificate, on an mTLS connection.
    pub downstream_peer: Option<&'a str>,
    /// `spiffe://...` the upstream's certificate was checked against, on mesh mTLS.
    pub upstream_peer: Option<&'a str>,
    pub trace_id: Option<&'a [u8]>,
}

/// Envoy's text line, with its newline. Written straight into one buffer: no field is
/// formatted into a string of its own. Header values are written as they came (as Envoy
/// does), so the line is bytes, not necessarily UTF-8.
pub fn text(e: &Entry<'_>) -> Vec<u8> {
    let mut s = Vec::with_capacity(384);
    text_into(&mut s, e);
    s
}

/// [`text`], appended to `s`.
pub fn text_into(s: &mut Vec<u8>, e: &Entry<'_>) {
    text_request_line(s, e);
    text_response(s, e);
    text_request_headers(s, e);
    text_upstream(s, e);
    text_downstream(s, e);
    text_end(s, e);
}

// The line in six parts, so the parts known when a request starts (the request line, its
// headers, the downstream connection) can be written then and the rest when it ends.

/// `[START] "METHOD PATH PROTOCOL" `
pub fn text_request_line(s: &mut Vec<u8>, e: &Entry<'_>) {
    s.push(b'[');
    push_start_time(s, e.start);
    s.extend_from_slice(b"] \"");
    s.extend_from_slice(e.method.as_bytes());
    s.push(b' ');
    push_or_dash(s, e.path);
    s.push(b' ');
    s.extend_from_slice(e.protocol.as_bytes());
    s.extend_from_slice(b"\" ");
}

/// `CODE FLAGS DETAILS - "-" RECEIVED SENT DURATION SERVICE_TIME`
pub fn text_response(s: &mut Vec<u8>, e: &Entry<'_>) {
    match e.response_code {
        // Every real status has three digits.
        code @ 100..=999 => s.extend_from_slice(&[
            b'0' + (code / 100) as u8,
            b'0' + (code / 10 % 10) as u8,
            b'0' + (code % 10) as u8,
            b' ',
        ]),
        code => {
            push_u64(s, u64::from(code));
            s.push(b' ');
        }
    }
    if e.response_flags.is_empty() {
        s.push(b'-');
    } else {
        // Writing to a Vec cannot fail.
        let _ = write!(s, "{}", e.response_flags);
    }
    s.push(b' ');
    s.extend_from_slice(e.response_code_details.unwrap_or("-").as_bytes());
    s.extend_from_slice(b" - \"-\" ");
    push_u64(s, e.bytes_received);
    s.push(b' ');
    push_u64(s, e.bytes_sent);
    s.push(b' ');
    push_u64(s, e.duration_ms);
    s.push(b' ');
    match e.upstream_service_time_ms {
        Some(t) => push_u64(s, t),
        None => s.push(b'-'),
    }
}

/// ` "X-FORWARDED-FOR" "USER-AGENT" "X-REQUEST-ID" "AUTHORITY"`
pub fn text_request_headers(s: &mut Vec<u8>, e: &Entry<'_>) {
    s.extend_from_slice(b" \"");
    push_or_dash(s, e.forwarded_for);
    for quoted in [e.user_agent, e.request_id, e.authority] {
        s.extend_from_slice(b"\" \"");
        push_or_dash(s, quoted);
    }
    s.push(b'"');
}

/// ` "UPSTREAM_HOST" UPSTREAM_CLUSTER`
pub fn text_upstream(s: &mut Vec<u8>, e: &Entry<'_>) {
    let key = (e.upstream_host, e.upstream_cluster);
    LAST_UPSTREAM.with_borrow_mut(|part| {
        if !part.made_from(key.0, key.1) {
            part.text.clear();
            part.text.extend_from_slice(b" \"");
            push_addr(&mut part.text, e.upstream_host);
            part.text.extend_from_slice(b"\" ");
            push_or_dash(&mut part.text, e.upstream_cluster.map(str::as_bytes));
            part.keep(key.0, key.1);
        }
        s.extend_from_slice(&part.text);
    });
}

/// ` - DOWNSTREAM_LOCAL DOWNSTREAM_REMOTE SNI - "DOWNSTREAM_PEER`: the same for every line of
/// a connection (its caller keeps it with the connection).
pub fn text_downstream(s: &mut Vec<u8>, e: &Entry<'_>) {
    s.extend_from_slice(b" - ");
    push_addr(s, e.downstream_local);
    s.push(b' ');
    push_addr(s, e.downstream_remote);
    s.push(b' ');
    push_or_dash(s, e.requested_server_name.map(str::as_bytes));
    s.extend_from_slice(b" - \"");
    push_or_dash(s, e.downstream_peer.map(str::as_bytes));
}

thread_local! {
    /// The upstream part of the last line made on this thread, with what it was made from:
    /// the requests to one endpoint share it, and comparing the inputs costs less than
    /// formatting the address again.
    static LAST_UPSTREAM: std::cell::RefCell<MadePart> = std::cell::RefCell::default();
}

/// A part of a line and the values it was made from.
#[derive(Default)]
struct MadePart {
    made: bool,
    host: Option<SocketAddr>,
    cluster: Option<String>,
    text: Vec<u8>,
}

impl MadePart {
    fn made_from(&self, host: Option<SocketAddr>, cluster: Option<&str>) -> bool {
        self.made && self.host == host && self.cluster.as_deref() == cluster
    }

    fn keep(&mut self, host: Option<SocketAddr>, cluster: Option<&str>) {
        self.made = true;
        self.host = host;
        self.cluster = cluster.map(str::to_owned);
    }
}

/// `" "UPSTREAM_PEER" TRACE_ID` and the newline.
pub fn text_end(s: &mut Vec<u8>, e: &Entry<'_>) {
    s.extend_from_slice(b"\" \"");
    push_or_dash(s, e.upstream_peer.map(str::as_bytes));
    s.extend_from_slice(b"\" ");
    push_or_dash(s, e.trace_id);
    s.push(b'\n');
}

fn push_or_dash(s: &mut Vec<u8>, v: Option<&[u8]>) {
    s.extend_from_slice(v.filter(|v| !v.is_empty()).unwrap_or(b"-"));
}

fn push_u64(s: &mut Vec<u8>, n: u64) {
    // Zero bytes and milliseconds are common enough to spare the formatter.
    if n < 10 {
        s.push(b'0' + n as u8);
        return;
    }
    s.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn push_addr(s: &mut Vec<u8>, a: Option<SocketAddr>) {
    match a {
        Some(SocketAddr::V4(v4)) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    s.push(b'.');
                }
                push_octet(s, octet);
            }
            s.push(b':');
            push_u64(s, u64::from(v4.port()));
        }
        // Writing to a Vec cannot fail.
        Some(a) => {
            let _ = write!(s, "{a}");
        }
        None => s.push(b'-'),
    }
}

/// An address byte in decimal: divisions by constants, no formatter.
fn push_octet(s: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        s.push(b'0' + n / 100);
    }
    if n >= 10 {
        s.push(b'0' + n / 10 % 10);
    }
    s.push(b'0' + n % 10);
}

/// `n` in `width` digits, zero-padded (the parts of a timestamp).
fn push_padded(s: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n);
    for _ in digits.len()..width {
        s.push(b'0');
    }
    s.extend_from_slice(digits.as_bytes());
}

/// Istio's JSON line (keys as Istio's default JSON format names them; absent values are
/// `null`), with its newline.
pub fn json(e: &Entry<'_>) -> String {
    let str_or_null = |v: Option<&str>| {
        v.filter(|v| !v.is_empty())
            .map_or(Value::Null, |v| json!(v))
    };
    let bytes_or_null = |v: Option<&[u8]>| {
        v.filter(|v| !v.is_empty())
            .map_or(Value::Null, |v| json!(String::from_utf8_lossy(v)))
    };
    let addr = |a: Option<SocketAddr>| a.map_or(Value::Null, |a| json!(a.to_string()));
    let mut m = Map::with_capacity(28);
    m.insert("start_time".into(), json!(start_time(e.start)));
    m.insert("route_name".into(), Value::Null);
    m.insert("method".into(), json!(e.method));
    m.insert("path".into(), bytes_or_null(e.path));
    m.insert("protocol".into(), json!(e.protocol));
    m.insert("response_code".into(), json!(e.response_code));
    m.insert("response_flags".into(), json!(e.response_flags.to_string()));
    m.insert(
        "response_code_details".into(),
        str_or_null(e.response_code_details),
    );
    m.insert("connection_termination_details".into(), Value::Null);
    m.insert("upstream_transport_failure_reason".into(), Value::Null);
    m.insert("bytes_received".into(), json!(e.bytes_received));
    m.insert("bytes_sent".into(), json!(e.bytes_sent));
    m.insert("duration".into(), json!(e.duration_ms));
    m.insert(
        "upstream_service_time".into(),
        e.upstream_service_time_ms
            .map_or(Value::Null, |t| json!(t.to_string())),
    );
    m.insert("x_forwarded_for".into(), bytes_or_null(e.forwarded_for));
    m.insert("user_agent".into(), bytes_or_null(e.user_agent));
    m.insert("request_id".into(), bytes_or_null(e.request_id));
    m.insert("authority".into(), bytes_or_null(e.authority));
    m.insert("upstream_host".into(), addr(e.upstream_host));
    m.insert("upstream_cluster".into(), str_or_null(e.upstream_cluster));
    m.insert("upstream_local_address".into(), Value::Null);
    m.insert("downstream_local_address".into(), addr(e.downstream_local));
    m.insert(
        "downstream_remote_address".into(),
        addr(e.downstream_remote),
    );
    m.insert(
        "requested_server_name".into(),
        str_or_null(e.requested_server_name),
    );
    m.insert(
        "downstream_peer_uri_san".into(),
        str_or_null(e.downstream_peer),
    );
    m.insert("upstream_peer_uri_san".into(), str_or_null(e.upstream_peer));
    m.insert("trace_id".into(), bytes_or_null(e.trace_id));
    let mut s = Value::Object(m).to_string();
    s.push('\n');
    s
}

/// Envoy's `%START_TIME%`: RFC 3339 in UTC with milliseconds, `2016-04-15T20:17:00.310Z`.
pub fn start_time(t: Option<SystemTime>) -> String {
    let mut s = Vec::with_capacity(24);
    push_start_time(&mut s, t);
    String::from_utf8(s).expect("digits and separators")
}

/// `2016-04-15T20:17:00.310Z`, Envoy's `%START_TIME%` in UTC; `-` when unknown.
fn push_start_time(s: &mut Vec<u8>, t: Option<SystemTime>) {
    let Some(since) = t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) else {
        s.push(b'-');
        return;
    };
    let secs = since.as_secs();
    // Lines of one second share their date and time up to the seconds: made once per
    // second per thread.
    let (at, mut prefix) = SECOND.get();
    if at != secs {
        prefix = second_prefix(secs);
        SECOND.set((secs, prefix));
    }
    s.extend_from_slice(&prefix);
    // Always under 1000.
    let ms = since.subsec_millis();
    s.extend_from_slice(&[
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
}

/// `YYYY-MM-DDTHH:MM:SS.`: 20 bytes for the years 0 to 9999.
type SecondPrefix = [u8; 20];

thread_local! {
    /// The last second a line started in, and its prefix (`u64::MAX`: none yet).
    static SECOND: std::cell::Cell<(u64, SecondPrefix)> =
        const { std::cell::Cell::new((u64::MAX, [0; 20])) };
}

fn second_prefix(secs: u64) -> SecondPrefix {
    let mut v = Vec::with_capacity(20);
    push_second(&mut v, secs);
    // Years past 9999 do not fit: their lines show the last representable second.
    v.try_into().unwrap_or(*b"9999-12-31T23:59:59.")
}

/// `YYYY-MM-DDTHH:MM:SS.` of a second since the epoch.
fn push_second(s: &mut Vec<u8>, secs: u64) {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    push_padded(s, y.max(0) as u64, 4);
    s.push(b'-');
    push_padded(s, u64::from(m), 2);
    s.push(b'-');
    push_padded(s, u64::from(d), 2);
    s.push(b'T');
    push_padded(s, rem / 3600, 2);
    s.push(b':');
    push_padded(s, rem / 60 % 60, 2);
    s.push(b':');
    push_padded(s, rem % 60, 2);
    s.push(b'.');
}

/// The calendar date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::telemetry::ResponseFlag;

    fn line(e: &Entry<'_>) -> String {
        String::from_utf8(text(e)).unwrap()
    }

    fn entry() -> Entry<'static> {
        Entry {
            start: Some(UNIX_EPOCH + Duration::from_millis(1_460_751_420_310)),
            method: "POST",
            path: Some("/api/v1/locations?x=1".as_bytes()),
            protocol: "HTTP/2",
            response_code: 204,
            response_code_details: Some("via_upstream"),
            bytes_received: 154,
            bytes_sent: 0,
            duration_ms: 226,
            upstream_service_time_ms: Some(100),
            forwarded_for: Some("10.0.35.28".as_bytes()),
            user_agent: Some("nsq2http".as_bytes()),
            request_id: Some("cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2".as_bytes()),
            authority: Some("locations".as_bytes()),
            upstream_host: Some("198.18.0.5:8080".parse().unwrap()),
            upstream_cluster: Some("outbound|8080||locations.default.svc.cluster.local"),
            downstream_local: Some("127.0.0.1:15001".parse().unwrap()),
            downstream_remote: Some("127.0.0.1:40000".parse().unwrap()),
            downstream_peer: None,
            upstream_peer: Some("spiffe://cluster.local/ns/default/sa/locations"),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".as_bytes()),
            ..Default::default()
        }
    }

    /// The upstream part kept from the last line is used only for the very values it was
    /// made from: lines of different upstreams interleave correctly.
    #[test]
    fn kept_parts_never_stand_in_for_other_values() {
        let first = entry();
        let mut other = entry();
        other.downstream_remote = Some("127.0.0.1:40001".parse().unwrap());
        other.downstream_peer = Some("spiffe://cluster.local/ns/a/sa/b");
        other.requested_server_name = Some("outbound_.80_._.b");
        other.upstream_host = Some("198.18.0.6:8080".parse().unwrap());
        let mut same_addresses_other_peer = other.clone();
        same_addresses_other_peer.downstream_peer = Some("spiffe://cluster.local/ns/a/sa/c");
        same_addresses_other_peer.upstream_cluster = Some("outbound|8080|v2|locations");
        let expected = |e: &Entry<'_>| {
            // Made without the kept parts.
            LAST_UPSTREAM.with_borrow_mut(|last| *last = MadePart::default());
            line(e)
        };
        let (a, b, c) = (
            expected(&first),
            expected(&other),
            expected(&same_addresses_other_peer),
        );
        assert!(a != b && b != c);
        for e in [
            &first,
            &other,
            &first,
            &same_addresses_other_peer,
            &other,
            &first,
        ] {
            let want = if std::ptr::eq(e, &first) {
                &a
            } else if std::ptr::eq(e, &other) {
                &b
            } else {
                &c
            };
            assert_eq!(&line(e), want);
        }
    }

    #[test]
    fn text_is_envoys_default_format_as_istio_sets_it() {
        assert_eq!(
            line(&entry()),
            "[2016-04-15T20:17:00.310Z] \"POST /api/v1/locations?x=1 HTTP/2\" 204 - via_upstream - \"-\" 154 0 226 100 \"10.0.35.28\" \"nsq2http\" \"cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2\" \"locations\" \"198.18.0.5:8080\" outbound|8080||locations.default.svc.cluster.local - 127.0.0.1:15001 127.0.0.1:40000 - - \"-\" \"spiffe://cluster.local/ns/default/sa/locations\" 4bf92f3577b34da6a3ce929d0e0e4736\n"
        );
    }

    #[test]
    fn a_local_reply_prints_dashes_where_nothing_is_known() {
        let e = Entry {
            start: Some(UNIX_EPOCH),
            method: "GET",
            path: Some("/".as_bytes()),
            protocol: "HTTP/1.1",
            response_code: 503,
            response_flags: ResponseFlags::of(ResponseFlag::NoHealthyUpstream),
            ..Default::default()
        };
        assert_eq!(
            line(&e),
            "[1970-01-01T00:00:00.000Z] \"GET / HTTP/1.1\" 503 UH - - \"-\" 0 0 0 - \"-\" \"-\" \"-\" \"-\" \"-\" - - - - - - \"-\" \"-\" -\n"
        );
    }

    #[test]
    fn json_has_istios_keys_and_types() {
        let line = json(&entry());
        assert!(line.ends_with('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["start_time"], "2016-04-15T20:17:00.310Z");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/api/v1/locations?x=1");
        assert_eq!(v["protocol"], "HTTP/2");
        assert_eq!(v["response_code"], 204);
        assert_eq!(v["response_flags"], "-");
        assert_eq!(v["bytes_received"], 154);
        assert_eq!(v["bytes_sent"], 0);
        assert_eq!(v["duration"], 226);
        assert_eq!(v["upstream_service_time"], "100");
        assert_eq!(v["x_forwarded_for"], "10.0.35.28");
        assert_eq!(v["user_agent"], "nsq2http");
        assert_eq!(v["request_id"], "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2");
        assert_eq!(v["authority"], "locations");
        assert_eq!(v["upstream_host"], "198.18.0.5:8080");
        assert_eq!(
            v["upstream_cluster"],
            "outbound|8080||locations.default.svc.cluster.local"
        );
        assert_eq!(v["downstream_remote_address"], "127.0.0.1:40000");
        assert_eq!(v["downstream_peer_uri_san"], Value::Null);
        assert_eq!(
            v["upstream_peer_uri_san"],
            "spiffe://cluster.local/ns/default/sa/locations"
        );
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["route_name"], Value::Null);
    }

    #[test]
    fn json_escapes_what_a_client_sends() {
        let e = Entry {
            user_agent: Some("evil\" \\ agent".as_bytes()),
            ..entry()
        };
        let v: Value = serde_json::from_str(&json(&e)).unwrap();
        assert_eq!(v["user_agent"], "evil\" \\ agent");
    }

    #[test]
    fn addresses_at_their_bounds() {
        let addr = |a: &str| {
            let mut s = Vec::new();
            push_addr(&mut s, Some(a.parse().unwrap()));
            String::from_utf8(s).unwrap()
        };
        assert_eq!(addr("0.0.0.0:0"), "0.0.0.0:0");
        assert_eq!(addr("255.255.255.255:65535"), "255.255.255.255:65535");
        assert_eq!(addr("198.18.10.9:80"), "198.18.10.9:80");
        assert_eq!(addr("[::1]:8080"), "[::1]:8080");
    }

    #[test]
    fn start_times_across_leap_years() {
        let at = |ms: u64| start_time(Some(UNIX_EPOCH + Duration::from_millis(ms)));
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
        assert_eq!(start_time(None), "-");
        // The cached second changes with the clock.
        assert_eq!(at(1_709_251_199_001), "2024-02-29T23:59:59.001Z");
        assert_eq!(at(1_709_251_200_000), "2024-03-01T00:00:00.000Z");
        assert_eq!(at(1_709_251_199_500), "2024-02-29T23:59:59.500Z");
    }
}
