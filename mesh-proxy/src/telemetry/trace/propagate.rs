//! Writing this proxy's span into the request it passes on, in W3C and B3 form: the next hop
//! (and the app) sees this proxy's span as its parent, with the sampling decision.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::upstream::h1::HeadFields;

use super::context::{
    B3, B3_FLAGS, B3_PARENT_SPAN_ID, B3_SAMPLED, B3_SPAN_ID, B3_TRACE_ID, Format, Incoming, SpanId,
    TRACEPARENT, TRACESTATE, TraceId, hex_into,
};

/// The span a request carries on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub sampled: bool,
}

// Names made at compile time: `from_static` at run time would parse them per request.
const TRACEPARENT_NAME: HeaderName = HeaderName::from_static(TRACEPARENT);
const B3_NAME: HeaderName = HeaderName::from_static(B3);
const B3_TRACE_ID_NAME: HeaderName = HeaderName::from_static(B3_TRACE_ID);
const B3_SPAN_ID_NAME: HeaderName = HeaderName::from_static(B3_SPAN_ID);
const B3_PARENT_SPAN_ID_NAME: HeaderName = HeaderName::from_static(B3_PARENT_SPAN_ID);
const B3_SAMPLED_NAME: HeaderName = HeaderName::from_static(B3_SAMPLED);

fn value(bytes: Bytes) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes).expect("hex and dashes are a valid header value")
}

// Offsets in the one buffer every W3C and B3 multi value is a slice of:
// `00-{trace}-{span}-0{flag}{parent}`.
const TRACE: std::ops::Range<usize> = 3..35;
const SPAN: std::ops::Range<usize> = 36..52;
const TRACEPARENT_LEN: usize = 55;
const PARENT: std::ops::Range<usize> = 55..71;

/// The trace headers a request carries on, kept beside it rather than put into its header
/// map: the HTTP/1.1 client writes them straight into the request head (as Envoy injects the
/// context when the request goes upstream), HTTP/2 and upgrades put them into the map.
#[derive(Debug, Clone, Copy)]
pub struct TraceHeaders {
    /// `00-{trace}-{span}-0{flag}{parent}`.
    buf: [u8; PARENT.end],
    has_parent: bool,
    sampled: bool,
    /// The parent came by `traceparent`: its `tracestate` goes on with it.
    keeps_tracestate: bool,
    /// A `b3` single header came in: it is rewritten.
    b3_single: bool,
    /// The request's map may hold trace headers (some came in, or a route's header edits
    /// set some): only then is there anything to replace or drop.
    had_any: bool,
}

impl TraceHeaders {
    /// The headers for `span`, continuing what `incoming` carried.
    pub fn new(incoming: &Incoming, span: &Outgoing) -> Self {
        let mut buf = [b'-'; PARENT.end];
        buf[..2].copy_from_slice(b"00");
        hex_into(&span.trace_id.0.to_be_bytes(), &mut buf[TRACE]);
        hex_into(&span.span_id.0.to_be_bytes(), &mut buf[SPAN]);
        buf[53] = b'0';
        buf[54] = if span.sampled { b'1' } else { b'0' };
        if let Some(p) = span.parent {
            hex_into(&p.0.to_be_bytes(), &mut buf[PARENT]);
        }
        Self {
            buf,
            has_parent: span.parent.is_some(),
            sampled: span.sampled,
            keeps_tracestate: incoming.parent.map(|p| p.format) == Some(Format::W3c),
            b3_single: incoming.had_b3_single,
            had_any: incoming.any,
        }
    }

    /// The trace id's hex digits.
    pub fn trace_hex(&self) -> [u8; 32] {
        self.buf[TRACE].try_into().expect("32 hex digits")
    }

    /// These headers for a request whose map a route's header edits may have given trace
    /// headers after its context was read.
    pub fn after_header_edits(&self) -> Self {
        Self {
            had_any: true,
            ..*self
        }
    }

    /// Whether a request header of this name is replaced by these (or dropped: a parent span
    /// or `x-b3-flags` that no longer apply, a `tracestate` of another trace).
    pub fn replaces(&self, name: &str) -> bool {
        if !self.had_any {
            return false;
        }
        match name {
            TRACESTATE => !self.keeps_tracestate,
            TRACEPARENT | B3 | B3_TRACE_ID | B3_SPAN_ID | B3_PARENT_SPAN_ID | B3_SAMPLED
            | B3_FLAGS => true,
            _ => false,
        }
    }

    fn sampled_digit(&self) -> &'static [u8] {
        if self.sampled { b"1" } else { b"0" }
    }

    /// Appends the headers to an HTTP/1.1 head being written. Every piece has a length known
    /// when this is compiled, so each is a few moves rather than a copy call.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"traceparent: ");
        out.extend_from_slice(
            self.buf
                .first_chunk::<TRACEPARENT_LEN>()
                .expect("the buffer starts with it"),
        );
        out.extend_from_slice(b"\r\nx-b3-traceid: ");
        out.extend_from_slice(self.hex::<32>(TRACE));
        out.extend_from_slice(b"\r\nx-b3-spanid: ");
        out.extend_from_slice(self.hex::<16>(SPAN));
        if self.has_parent {
            out.extend_from_slice(b"\r\nx-b3-parentspanid: ");
            out.extend_from_slice(self.hex::<16>(PARENT));
        }
        out.extend_from_slice(if self.sampled {
            b"\r\nx-b3-sampled: 1\r\n"
        } else {
            b"\r\nx-b3-sampled: 0\r\n"
        });
        if self.b3_single {
            let (b3, len) = self.b3_value();
            out.extend_from_slice(B3.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(&b3[..len]);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The `N` hex digits at `at` in the buffer.
    fn hex<const N: usize>(&self, at: std::ops::Range<usize>) -> &[u8; N] {
        self.buf[at]
            .first_chunk::<N>()
            .expect("the range holds N digits")
    }

    /// `{trace}-{span}-{sampled}[-{parent}]`.
    fn b3_value(&self) -> ([u8; 68], usize) {
        let mut b3 = [b'-'; 68];
        b3[..32].copy_from_slice(&self.buf[TRACE]);
        b3[33..49].copy_from_slice(&self.buf[SPAN]);
        b3[50] = self.sampled_digit()[0];
        if !self.has_parent {
            return (b3, 51);
        }
        b3[52..68].copy_from_slice(&self.buf[PARENT]);
        (b3, 68)
    }

    /// Replaces the request's trace headers in a header map with these.
    pub fn write_into(&self, headers: &mut HeaderMap) {
        let len = if self.has_parent {
            PARENT.end
        } else {
            TRACEPARENT_LEN
        };
        let buf = Bytes::copy_from_slice(&self.buf[..len]);
        headers.insert(TRACEPARENT_NAME, value(buf.slice(..TRACEPARENT_LEN)));
        if self.had_any && !self.keeps_tracestate {
            headers.remove(TRACESTATE);
        }
        headers.insert(B3_TRACE_ID_NAME, value(buf.slice(TRACE)));
        headers.insert(B3_SPAN_ID_NAME, value(buf.slice(SPAN)));
        if self.has_parent {
            headers.insert(B3_PARENT_SPAN_ID_NAME, value(buf.slice(PARENT)));
        } else if self.had_any {
            headers.remove(B3_PARENT_SPAN_ID);
        }
        headers.insert(
            B3_SAMPLED_NAME,
            HeaderValue::from_static(if self.sampled { "1" } else { "0" }),
        );
        if self.had_any {
            headers.remove(B3_FLAGS);
        }
        if self.b3_single {
            let (b3, len) = self.b3_value();
            headers.insert(B3_NAME, value(Bytes::copy_from_slice(&b3[..len])));
        }
    }
}

impl HeadFields for TraceHeaders {
    fn replaces(&self, name: &str) -> bool {
        TraceHeaders::replaces(self, name)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        TraceHeaders::encode(self, out);
    }
}

#[cfg(test)]
mod tests {
    use super::super::context::{Parent, parse_b3_single, parse_traceparent};
    use super::*;

    /// Replaces the request's trace headers with `span`'s: `tracestate` stays only when the
    /// parent came by `traceparent` (it belongs to that trace); a `b3` single header is
    /// rewritten when one came in.
    fn write(headers: &mut HeaderMap, incoming: &Incoming, span: &Outgoing) {
        TraceHeaders::new(incoming, span).write_into(headers);
    }

    fn span(parent: Option<u64>, sampled: bool) -> Outgoing {
        Outgoing {
            trace_id: TraceId(0x4bf92f3577b34da6a3ce929d0e0e4736),
            span_id: SpanId(0x00f067aa0ba902b7),
            parent: parent.map(SpanId),
            sampled,
        }
    }

    #[test]
    fn names_are_looked_at_only_when_the_map_may_hold_trace_headers() {
        let fresh = TraceHeaders::new(&Incoming::default(), &span(None, false));
        assert!(!fresh.replaces(TRACEPARENT));
        let edited = fresh.after_header_edits();
        assert!(edited.replaces(TRACEPARENT) && edited.replaces(B3_SAMPLED));
        assert!(!edited.replaces("x-app"));
    }

    #[test]
    fn every_form_carries_the_span() {
        let mut h = HeaderMap::new();
        write(&mut h, &Incoming::default(), &span(Some(0x1111), true));
        assert_eq!(
            h["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(h["x-b3-traceid"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(h["x-b3-spanid"], "00f067aa0ba902b7");
        assert_eq!(h["x-b3-parentspanid"], "0000000000001111");
        assert_eq!(h["x-b3-sampled"], "1");
        assert!(!h.contains_key("b3"), "the single form is not created");
        // What is written reads back.
        let back = Incoming::read(&h);
        assert_eq!(back.parent.unwrap().span_id, SpanId(0x00f067aa0ba902b7));
        assert_eq!(back.sampled, Some(true));
    }

    #[test]
    fn an_unsampled_decision_is_carried() {
        let mut h = HeaderMap::new();
        write(&mut h, &Incoming::default(), &span(None, false));
        assert!(h["traceparent"].to_str().unwrap().ends_with("-00"));
        assert_eq!(h["x-b3-sampled"], "0");
        assert!(!h.contains_key("x-b3-parentspanid"));
        assert!(
            !parse_traceparent(h["traceparent"].to_str().unwrap())
                .unwrap()
                .1
        );
    }

    #[test]
    fn a_b3_single_header_is_rewritten() {
        let mut h = HeaderMap::new();
        h.insert("b3", "0".parse().unwrap());
        let incoming = Incoming::read(&h);
        write(&mut h, &incoming, &span(Some(0x2222), true));
        let b3 = parse_b3_single(h["b3"].to_str().unwrap()).unwrap();
        assert_eq!(b3.sampled, Some(true));
        assert_eq!(b3.parent.unwrap().span_id, SpanId(0x00f067aa0ba902b7));
        assert_eq!(
            h["b3"],
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1-0000000000002222"
        );
    }

    /// The head an HTTP/1.1 request is written with carries what the map form carries.
    #[test]
    fn the_encoded_form_is_the_map_form() {
        for (incoming_headers, parent) in [
            (vec![], None),
            (vec![("b3", "0")], Some(0x2222)),
            (
                vec![
                    (
                        "traceparent",
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01",
                    ),
                    ("tracestate", "vendor=opaque"),
                    ("x-b3-flags", "1"),
                ],
                Some(0x1111111111111111),
            ),
        ] {
            let mut h = HeaderMap::new();
            for (n, v) in &incoming_headers {
                h.insert(HeaderName::from_static(n), v.parse().unwrap());
            }
            let incoming = Incoming::read(&h);
            let trace = TraceHeaders::new(&incoming, &span(parent, true));
            // The map form.
            let mut mapped = h.clone();
            trace.write_into(&mut mapped);
            // The encoded form: the incoming headers it does not replace, then its own.
            let mut out = Vec::new();
            for (n, v) in &h {
                if !trace.replaces(n.as_str()) {
                    out.extend_from_slice(format!("{}: {}\r\n", n, v.to_str().unwrap()).as_bytes());
                }
            }
            trace.encode(&mut out);
            out.extend_from_slice(b"\r\n");
            let mut slots = [httparse::EMPTY_HEADER; 16];
            let httparse::Status::Complete((_, fields)) =
                httparse::parse_headers(&out, &mut slots).unwrap()
            else {
                panic!("complete")
            };
            let mut encoded = HeaderMap::new();
            for f in fields {
                encoded.append(
                    HeaderName::from_bytes(f.name.as_bytes()).unwrap(),
                    HeaderValue::from_bytes(f.value).unwrap(),
                );
            }
            assert_eq!(encoded, mapped, "incoming {incoming_headers:?}");
        }
    }

    #[test]
    fn tracestate_stays_with_its_traceparent() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"
                .parse()
                .unwrap(),
        );
        h.insert("tracestate", "vendor=opaque".parse().unwrap());
        let incoming = Incoming::read(&h);
        write(&mut h, &incoming, &span(Some(0x1111111111111111), true));
        assert_eq!(h["tracestate"], "vendor=opaque");

        // A tracestate without a valid traceparent belongs to no trace we continue.
        let mut h = HeaderMap::new();
        h.insert("traceparent", "bogus".parse().unwrap());
        h.insert("tracestate", "vendor=opaque".parse().unwrap());
        let incoming = Incoming::read(&h);
        assert_eq!(incoming.parent, None::<Parent>);
        write(&mut h, &incoming, &span(None, true));
        assert!(!h.contains_key("tracestate"));
    }
}
