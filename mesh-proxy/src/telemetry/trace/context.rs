//! Reading a request's trace context: W3C `traceparent`/`tracestate`, B3's single `b3`
//! header and its multi-header form (`x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled`,
//! `x-b3-flags`). Pure parsing into fixed-size ids: nothing is allocated, and a malformed
//! header is ignored as if absent.

use http::HeaderMap;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
pub const B3: &str = "b3";
pub const B3_TRACE_ID: &str = "x-b3-traceid";
pub const B3_SPAN_ID: &str = "x-b3-spanid";
pub const B3_PARENT_SPAN_ID: &str = "x-b3-parentspanid";
pub const B3_SAMPLED: &str = "x-b3-sampled";
pub const B3_FLAGS: &str = "x-b3-flags";
/// Envoy's: a client asking for its request to be traced.
pub const CLIENT_TRACE_ID: &str = "x-client-trace-id";

/// A 128-bit trace id; never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub u128);

/// A 64-bit span id; never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub u64);

impl TraceId {
    pub fn random() -> Self {
        Self(crate::fast_rand::u128().max(1))
    }
}

/// Lowercase hex of `bytes` into `out` (twice as long): a byte's two digits at a time.
pub(crate) fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
}

/// The two lowercase hex digits of every byte.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    pairs
};

impl SpanId {
    pub fn random() -> Self {
        Self(crate::fast_rand::u64().max(1))
    }
}

/// Which header the context came in, so the answer goes out in the same form too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    W3c,
    B3Single,
    B3Multi,
}

/// The caller's span, from the request's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub format: Format,
}

/// What a request says about its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Incoming {
    pub parent: Option<Parent>,
    /// The caller's sampling decision, when it made one.
    pub sampled: Option<bool>,
    /// `x-client-trace-id` is present: the client forces tracing.
    pub forced: bool,
    /// A `b3` single header came in (rewritten on the way out, not created).
    pub had_b3_single: bool,
    /// Some trace header came in, so the way out has old ones to replace or remove.
    pub any: bool,
}

impl Incoming {
    /// Reads the context: `traceparent` first, then `b3`, then the `x-b3-*` headers.
    pub fn read(headers: &HeaderMap) -> Self {
        // One pass over the names instead of seven hashed lookups, for the common request
        // that carries no trace context at all (every first hop).
        if !headers.keys().any(|k| is_trace_header(k.as_str())) {
            return Self::default();
        }
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let forced = headers.contains_key(CLIENT_TRACE_ID);
        let b3_single = text(B3).and_then(parse_b3_single);
        let had_b3_single = headers.contains_key(B3);
        if let Some((parent, sampled)) = text(TRACEPARENT).and_then(parse_traceparent) {
            return Self {
                parent: Some(parent),
                sampled: Some(sampled),
                forced,
                had_b3_single,
                any: true,
            };
        }
        if let Some(b3) = b3_single {
            return Self {
                parent: b3.parent,
                sampled: b3.sampled,
                forced,
                had_b3_single,
                any: true,
            };
        }
        let parent = match (
            text(B3_TRACE_ID).and_then(parse_trace_id),
            text(B3_SPAN_ID).and_then(parse_span_id),
        ) {
            (Some(trace_id), Some(span_id)) => Some(Parent {
                trace_id,
                span_id,
                format: Format::B3Multi,
            }),
            _ => None,
        };
        let debug = text(B3_FLAGS) == Some("1");
        let sampled = if debug {
            Some(true)
        } else {
            text(B3_SAMPLED).and_then(parse_b3_sampled)
        };
        Self {
            parent,
            sampled,
            forced,
            had_b3_single,
            any: true,
        }
    }
}

/// The headers that carry or steer a trace.
pub fn is_trace_header(name: &str) -> bool {
    matches!(name, TRACEPARENT | TRACESTATE | B3 | CLIENT_TRACE_ID) || name.starts_with("x-b3-")
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`. A later version may append
/// fields after the flags, which are ignored; version `ff` and all-zero ids are invalid.
pub fn parse_traceparent(s: &str) -> Option<(Parent, bool)> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let version = hex_u8(&s[0..2])?;
    if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    let trace_id = parse_trace_id_exact(&s[3..35])?;
    let span_id = parse_span_id(&s[36..52])?;
    let flags = hex_u8(&s[53..55])?;
    let parent = Parent {
        trace_id,
        span_id,
        format: Format::W3c,
    };
    Some((parent, flags & 1 == 1))
}

/// A `b3` single header: `{trace}-{span}[-{sampling}[-{parent}]]`, or a decision alone
/// (`0`, `1`, `d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct B3Single {
    pub parent: Option<Parent>,
    pub sampled: Option<bool>,
}

pub fn parse_b3_single(s: &str) -> Option<B3Single> {
    let s = s.trim();
    let mut fields = s.split('-');
    let first = fields.next()?;
    let Some(span) = fields.next() else {
        return Some(B3Single {
            parent: None,
            sampled: Some(parse_b3_decision(first)?),
        });
    };
    let parent = Parent {
        trace_id: parse_trace_id(first)?,
        span_id: parse_span_id(span)?,
        format: Format::B3Single,
    };
    let sampled = match fields.next() {
        None => None,
        Some(d) => Some(parse_b3_decision(d)?),
    };
    if let Some(p) = fields.next() {
        parse_span_id(p)?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(B3Single {
        parent: Some(parent),
        sampled,
    })
}

fn parse_b3_decision(s: &str) -> Option<bool> {
    match s {
        "1" | "d" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

/// `x-b3-sampled`: `1` or `0`; old tracers send `true` / `false`.
fn parse_b3_sampled(s: &str) -> Option<bool> {
    match s {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// 16 or 32 lowercase hex digits (B3 allows 64-bit trace ids), not all zero.
pub fn parse_trace_id(s: &str) -> Option<TraceId> {
    match s.len() {
        16 => Some(TraceId(u128::from(parse_span_id(s)?.0))),
        _ => parse_trace_id_exact(s),
    }
}

fn parse_trace_id_exact(s: &str) -> Option<TraceId> {
    if s.len() != 32 || !is_lower_hex(s) {
        return None;
    }
    let v = u128::from_str_radix(s, 16).ok()?;
    (v != 0).then_some(TraceId(v))
}

/// 16 lowercase hex digits, not all zero.
pub fn parse_span_id(s: &str) -> Option<SpanId> {
    if s.len() != 16 || !is_lower_hex(s) {
        return None;
    }
    let v = u64::from_str_radix(s, 16).ok()?;
    (v != 0).then_some(SpanId(v))
}

fn hex_u8(s: &str) -> Option<u8> {
    if s.len() != 2 || !is_lower_hex(s) {
        return None;
    }
    u8::from_str_radix(s, 16).ok()
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_headers::header_map as headers;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn w3c_traceparent_is_read() {
        let tp = format!("00-{TRACE}-{SPAN}-01");
        let i = Incoming::read(&headers(&[("traceparent", &tp)]));
        let p = i.parent.unwrap();
        assert_eq!(p.trace_id.0, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(p.span_id.0, 0x00f067aa0ba902b7);
        assert_eq!(p.format, Format::W3c);
        assert_eq!(i.sampled, Some(true));
        let tp = format!("00-{TRACE}-{SPAN}-00");
        assert!(!parse_traceparent(&tp).unwrap().1);
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for bad in [
            format!("00-{TRACE}-{SPAN}"),
            format!("00-{}-{SPAN}-01", "0".repeat(32)),
            format!("00-{TRACE}-{}-01", "0".repeat(16)),
            format!("ff-{TRACE}-{SPAN}-01"),
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
            format!("00-{TRACE}-{SPAN}-01-extra"),
            format!("00_{TRACE}-{SPAN}-01"),
            format!("00-{TRACE}-{SPAN}-zz"),
            "garbage".to_string(),
        ] {
            assert_eq!(parse_traceparent(&bad), None, "{bad}");
            let i = Incoming::read(&headers(&[("traceparent", &bad)]));
            assert_eq!(i.parent, None, "{bad}");
            assert_eq!(i.sampled, None, "{bad}");
        }
        // A later version may carry more fields.
        assert!(parse_traceparent(&format!("01-{TRACE}-{SPAN}-01-more")).is_some());
    }

    #[test]
    fn b3_multi_headers_are_read() {
        let i = Incoming::read(&headers(&[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-parentspanid", "0000000000000001"),
            ("x-b3-sampled", "1"),
        ]));
        assert_eq!(i.parent.unwrap().format, Format::B3Multi);
        assert_eq!(
            i.parent.unwrap().trace_id.0,
            0x4bf92f3577b34da6a3ce929d0e0e4736
        );
        assert_eq!(i.sampled, Some(true));
        // A 64-bit trace id is widened.
        let i = Incoming::read(&headers(&[("x-b3-traceid", SPAN), ("x-b3-spanid", SPAN)]));
        assert_eq!(i.parent.unwrap().trace_id.0, 0x00f067aa0ba902b7);
        assert_eq!(i.sampled, None);
        // A decision alone, and the debug flag.
        let i = Incoming::read(&headers(&[("x-b3-sampled", "0")]));
        assert_eq!((i.parent, i.sampled), (None, Some(false)));
        let i = Incoming::read(&headers(&[("x-b3-flags", "1"), ("x-b3-sampled", "0")]));
        assert_eq!(i.sampled, Some(true));
    }

    #[test]
    fn invalid_b3_multi_headers_are_ignored() {
        for (trace, span) in [
            ("xyz", SPAN),
            (TRACE, "short"),
            (TRACE, "0000000000000000"),
            ("00000000000000000000000000000000", SPAN),
        ] {
            let i = Incoming::read(&headers(&[("x-b3-traceid", trace), ("x-b3-spanid", span)]));
            assert_eq!(i.parent, None, "{trace} {span}");
        }
        let i = Incoming::read(&headers(&[("x-b3-sampled", "maybe")]));
        assert_eq!(i.sampled, None);
    }

    #[test]
    fn b3_single_header_is_read() {
        let i = Incoming::read(&headers(&[("b3", &format!("{TRACE}-{SPAN}-1-{SPAN}"))]));
        assert_eq!(i.parent.unwrap().format, Format::B3Single);
        assert_eq!(i.sampled, Some(true));
        assert!(i.had_b3_single);
        let b = parse_b3_single(&format!("{TRACE}-{SPAN}")).unwrap();
        assert_eq!(b.sampled, None);
        assert!(b.parent.is_some());
        assert_eq!(
            parse_b3_single(&format!("{TRACE}-{SPAN}-d"))
                .unwrap()
                .sampled,
            Some(true)
        );
        assert_eq!(
            parse_b3_single("0"),
            Some(B3Single {
                parent: None,
                sampled: Some(false)
            })
        );
    }

    #[test]
    fn invalid_b3_single_headers_are_ignored() {
        for bad in [
            "x".to_string(),
            format!("{TRACE}-{SPAN}-2"),
            format!("{TRACE}-nope"),
            format!("{TRACE}-{SPAN}-1-{SPAN}-extra"),
            format!("{TRACE}-{SPAN}-1-bad"),
        ] {
            assert_eq!(parse_b3_single(&bad), None, "{bad}");
        }
        // An invalid `b3` falls back to the multi headers.
        let i = Incoming::read(&headers(&[
            ("b3", "junk"),
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
        ]));
        assert_eq!(i.parent.unwrap().format, Format::B3Multi);
    }

    #[test]
    fn traceparent_wins_over_b3() {
        let i = Incoming::read(&headers(&[
            ("traceparent", &format!("00-{TRACE}-{SPAN}-00")),
            ("x-b3-traceid", "11111111111111111111111111111111"),
            ("x-b3-spanid", "2222222222222222"),
            ("x-b3-sampled", "1"),
        ]));
        assert_eq!(i.parent.unwrap().format, Format::W3c);
        assert_eq!(i.sampled, Some(false));
    }

    #[test]
    fn client_trace_id_forces() {
        assert!(Incoming::read(&headers(&[("x-client-trace-id", "abc")])).forced);
        assert!(!Incoming::read(&HeaderMap::new()).forced);
    }
}
