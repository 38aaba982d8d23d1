//! Writing this proxy's span into the request it passes on, in W3C and B3 form: the next hop
//! (and the app) sees this proxy's span as its parent, with the sampling decision.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::context::{
    B3, B3_FLAGS, B3_PARENT_SPAN_ID, B3_SAMPLED, B3_SPAN_ID, B3_TRACE_ID, Format, Incoming, SpanId,
    TRACEPARENT, TRACESTATE, TraceId,
};

/// The span a request carries on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub sampled: bool,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex<const N: usize>(v: u128, out: &mut [u8; N]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((v >> ((N - 1 - i) * 4)) & 0xf) as usize];
    }
}

fn value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).expect("hex and dashes are a valid header value")
}

fn trace_hex(id: TraceId) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex(id.0, &mut out);
    out
}

fn span_hex(id: SpanId) -> [u8; 16] {
    let mut out = [0u8; 16];
    hex(u128::from(id.0), &mut out);
    out
}

/// Replaces the request's trace headers with `span`'s. `tracestate` stays only when the
/// parent came by `traceparent` (it belongs to that trace); a `b3` single header is
/// rewritten when one came in.
pub fn write(headers: &mut HeaderMap, incoming: &Incoming, span: &Outgoing) {
    let trace = trace_hex(span.trace_id);
    let id = span_hex(span.span_id);
    let flag = if span.sampled { b'1' } else { b'0' };

    let mut tp = [0u8; 55];
    tp[..3].copy_from_slice(b"00-");
    tp[3..35].copy_from_slice(&trace);
    tp[35] = b'-';
    tp[36..52].copy_from_slice(&id);
    tp[52..54].copy_from_slice(b"-0");
    tp[54] = flag;
    headers.insert(HeaderName::from_static(TRACEPARENT), value(&tp));
    if incoming.any && incoming.parent.map(|p| p.format) != Some(Format::W3c) {
        headers.remove(TRACESTATE);
    }

    headers.insert(HeaderName::from_static(B3_TRACE_ID), value(&trace));
    headers.insert(HeaderName::from_static(B3_SPAN_ID), value(&id));
    match span.parent {
        Some(p) => {
            headers.insert(
                HeaderName::from_static(B3_PARENT_SPAN_ID),
                value(&span_hex(p)),
            );
        }
        None if incoming.any => {
            headers.remove(B3_PARENT_SPAN_ID);
        }
        None => {}
    }
    headers.insert(HeaderName::from_static(B3_SAMPLED), value(&[flag]));
    if incoming.any {
        headers.remove(B3_FLAGS);
    }

    if incoming.had_b3_single {
        // {trace}-{span}-{sampled}[-{parent}]
        let mut b3 = [0u8; 32 + 1 + 16 + 2 + 17];
        b3[..32].copy_from_slice(&trace);
        b3[32] = b'-';
        b3[33..49].copy_from_slice(&id);
        b3[49] = b'-';
        b3[50] = flag;
        let len = match span.parent {
            Some(p) => {
                b3[51] = b'-';
                b3[52..68].copy_from_slice(&span_hex(p));
                68
            }
            None => 51,
        };
        headers.insert(HeaderName::from_static(B3), value(&b3[..len]));
    }
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
