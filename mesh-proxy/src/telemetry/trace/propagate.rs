//! Writing this proxy's span into the request it passes on, in W3C and B3 form: the next hop
//! (and the app) sees this proxy's span as its parent, with the sampling decision.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

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

fn span_hex(id: SpanId) -> [u8; 16] {
    let mut out = [0u8; 16];
    hex_into(&id.0.to_be_bytes(), &mut out);
    out
}

// Offsets in the one buffer every W3C and B3 multi value is a slice of:
// `00-{trace}-{span}-0{flag}{parent}`.
const TRACE: std::ops::Range<usize> = 3..35;
const SPAN: std::ops::Range<usize> = 36..52;
const TRACEPARENT_LEN: usize = 55;
const PARENT: std::ops::Range<usize> = 55..71;

/// Replaces the request's trace headers with `span`'s. `tracestate` stays only when the
/// parent came by `traceparent` (it belongs to that trace); a `b3` single header is
/// rewritten when one came in. Returns the trace id's hex digits.
pub fn write(headers: &mut HeaderMap, incoming: &Incoming, span: &Outgoing) -> [u8; 32] {
    let trace = span.trace_id.hex();
    let id = span_hex(span.span_id);
    let flag = if span.sampled { b'1' } else { b'0' };

    let mut buf = Vec::with_capacity(PARENT.end);
    buf.extend_from_slice(b"00-");
    buf.extend_from_slice(&trace);
    buf.push(b'-');
    buf.extend_from_slice(&id);
    buf.extend_from_slice(b"-0");
    buf.push(flag);
    if let Some(p) = span.parent {
        buf.extend_from_slice(&span_hex(p));
    }
    let buf = Bytes::from(buf);
    let sampled = HeaderValue::from_static(if span.sampled { "1" } else { "0" });

    headers.insert(TRACEPARENT_NAME, value(buf.slice(..TRACEPARENT_LEN)));
    if incoming.any && incoming.parent.map(|p| p.format) != Some(Format::W3c) {
        headers.remove(TRACESTATE);
    }

    headers.insert(B3_TRACE_ID_NAME, value(buf.slice(TRACE)));
    headers.insert(B3_SPAN_ID_NAME, value(buf.slice(SPAN)));
    match span.parent {
        Some(_) => {
            headers.insert(B3_PARENT_SPAN_ID_NAME, value(buf.slice(PARENT)));
        }
        None if incoming.any => {
            headers.remove(B3_PARENT_SPAN_ID);
        }
        None => {}
    }
    headers.insert(B3_SAMPLED_NAME, sampled);
    if incoming.any {
        headers.remove(B3_FLAGS);
    }

    if incoming.had_b3_single {
        // {trace}-{span}-{sampled}[-{parent}]
        let mut b3 = Vec::with_capacity(32 + 1 + 16 + 2 + 17);
        b3.extend_from_slice(&trace);
        b3.push(b'-');
        b3.extend_from_slice(&id);
        b3.push(b'-');
        b3.push(flag);
        if let Some(p) = span.parent {
            b3.push(b'-');
            b3.extend_from_slice(&span_hex(p));
        }
        headers.insert(B3_NAME, value(Bytes::from(b3)));
    }
    trace
}

#[cfg(test)]
mod tests {
    use super::super::context::{Parent, parse_b3_single, parse_traceparent};
    use super::*;

    fn span(parent: Option<u64>, sampled: bool) -> Outgoing {
        Outgoing {
            trace_id: TraceId(0x4bf92f3577b34da6a3ce929d0e0e4736),
            span_id: SpanId(0x00f067aa0ba902b7),
            parent: parent.map(SpanId),
            sampled,
        }
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
