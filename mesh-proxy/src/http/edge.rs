//! The mesh's edge: a gateway treats every client as outside the mesh, so nothing a client
//! sends may pass for what only the mesh's own proxies set (Envoy's `x-envoy-*` overrides and
//! internal headers, the client identity header, peer metadata).

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::tls::XFCC;

/// Envoy's and Istio's internal header prefix: overrides (`x-envoy-max-retries`, ...), attempt
/// counts, peer metadata (`x-envoy-peer-metadata`, `x-envoy-peer-metadata-id`).
const ENVOY_PREFIX: &str = "x-envoy-";
/// Istio's older peer attributes header.
static ISTIO_ATTRIBUTES: HeaderName = HeaderName::from_static("x-istio-attributes");
static FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Chosen by the edge, as Envoy does for external requests (`preserve_external_request_id`
/// is off by default): a client cannot pick the id that joins traces and logs.
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Removes what a client outside the mesh may not set, and records the scheme it used.
pub fn sanitize_external(headers: &mut HeaderMap, scheme: &'static str) {
    let internal: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(ENVOY_PREFIX))
        .cloned()
        .collect();
    for name in internal {
        headers.remove(name);
    }
    headers.remove(XFCC);
    headers.remove(&ISTIO_ATTRIBUTES);
    headers.remove(&REQUEST_ID);
    headers.insert(FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_headers_from_outside_are_removed() {
        let mut h = HeaderMap::new();
        for name in [
            "x-envoy-max-retries",
            "x-envoy-upstream-rq-timeout-ms",
            "x-envoy-peer-metadata",
            "x-envoy-peer-metadata-id",
            "x-envoy-original-path",
            "x-forwarded-client-cert",
            "x-istio-attributes",
            "x-request-id",
        ] {
            h.append(name, "spoofed".parse().unwrap());
        }
        h.append("x-forwarded-proto", "https".parse().unwrap());
        h.append("x-app", "kept".parse().unwrap());
        h.append("envoy-like-but-not", "kept".parse().unwrap());
        sanitize_external(&mut h, "http");
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["envoy-like-but-not", "x-app", "x-forwarded-proto"]);
        assert_eq!(h["x-forwarded-proto"], "http");
    }
}
