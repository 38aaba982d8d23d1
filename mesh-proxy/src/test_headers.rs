//! A header map from name/value pairs, for the unit tests of every module that reads headers.

use http::{HeaderMap, HeaderName};

/// The pairs in order; a repeated name keeps every value.
pub fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("a valid header name"),
            v.parse().expect("a valid header value"),
        );
    }
    h
}
