//! One pass over a request's headers when it arrives, for the steps that read or remove
//! headers: the metrics (protocol, request size), peer metadata, Envoy's override headers,
//! hop-by-hop removal, the request id, the trace context and the access log's capture. Each
//! of them looks into the map only when the pass saw its headers: most requests carry none
//! of them, and a hashed lookup of an absent name costs more than this pass does for all of
//! them.
//!
//! What the pass saw is what the request arrived with: a step that removes a header leaves
//! its mark set, so a mark means "look", never "it is there".

use http::{HeaderMap, header};

use super::headers::Present;
use crate::telemetry::trace::context::is_trace_header;

/// What a request's headers held when it arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestScan {
    /// `content-type` is gRPC's.
    pub grpc: bool,
    /// `content-length`, when it is a number.
    pub content_length: Option<u64>,
    /// The hop-by-hop headers.
    pub hop_by_hop: Present,
    /// Some `x-envoy-*` header (overrides, Istio's peer metadata).
    pub envoy: bool,
    /// Some peer metadata header (ours or Istio's).
    pub peer_metadata: bool,
    /// `x-request-id`.
    pub request_id: bool,
    /// `x-forwarded-for`.
    pub forwarded_for: bool,
    /// Some header that carries or steers a trace.
    pub trace_context: bool,
}

impl RequestScan {
    pub fn of(headers: &HeaderMap) -> Self {
        let mut scan = Self::default();
        for (name, value) in headers {
            if *name == header::CONTENT_TYPE {
                scan.grpc |= value.as_bytes().starts_with(b"application/grpc");
                continue;
            }
            if *name == header::CONTENT_LENGTH {
                // The first, as a lookup would read it.
                if scan.content_length.is_none() {
                    scan.content_length = value.to_str().ok().and_then(|v| v.parse().ok());
                }
                continue;
            }
            let name = name.as_str();
            scan.hop_by_hop = scan.hop_by_hop.with_str(name);
            if let Some(rest) = name.strip_prefix("x-") {
                scan.envoy |= rest.starts_with("envoy-");
                scan.peer_metadata |= crate::telemetry::peer::is_peer_metadata_name(name);
                scan.request_id |= rest == "request-id";
                scan.forwarded_for |= rest == "forwarded-for";
            }
            scan.trace_context |= is_trace_header(name);
        }
        scan
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderName, HeaderValue};

    use super::*;

    fn scan(pairs: &[(&'static str, &'static str)]) -> RequestScan {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        RequestScan::of(&h)
    }

    #[test]
    fn a_plain_request_has_nothing_to_look_for() {
        let s = scan(&[("host", "a"), ("user-agent", "x"), ("accept", "*/*")]);
        assert_eq!(s, RequestScan::default());
    }

    #[test]
    fn each_kind_of_header_is_seen() {
        let s = scan(&[("content-type", "application/grpc+proto")]);
        assert!(s.grpc);
        assert!(!scan(&[("content-type", "text/plain")]).grpc);
        let s = scan(&[("content-length", "12"), ("content-length", "13")]);
        assert_eq!(s.content_length, Some(12));
        assert_eq!(scan(&[("content-length", "x")]).content_length, None);
        assert!(scan(&[("upgrade", "websocket")]).hop_by_hop.upgrade());
        assert!(scan(&[("x-envoy-max-retries", "1")]).envoy);
        let s = scan(&[("x-envoy-peer-metadata", "m")]);
        assert!(s.envoy && s.peer_metadata);
        assert!(scan(&[("x-mesh-peer-metadata", "m")]).peer_metadata);
        assert!(scan(&[("x-request-id", "r")]).request_id);
        assert!(scan(&[("x-forwarded-for", "198.18.0.9")]).forwarded_for);
        for name in [
            "traceparent",
            "tracestate",
            "b3",
            "x-b3-sampled",
            "x-client-trace-id",
        ] {
            assert!(scan(&[(name, "1")]).trace_context, "{name}");
        }
        let s = scan(&[("x-requested-with", "r"), ("x-envoyish", "e")]);
        assert_eq!(s, RequestScan::default());
    }
}
