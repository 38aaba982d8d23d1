//! Envoy's override headers (`x-envoy-*`) and `grpc-timeout` on a request from the local
//! application. Input: one header per line, `name: value`.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use mesh_proxy::retry::{Overrides, RetryPolicy, grpc_timeout};

const OVERRIDES: [&str; 6] = [
    mesh_proxy::retry::overrides::UPSTREAM_RQ_TIMEOUT_MS,
    mesh_proxy::retry::overrides::UPSTREAM_RQ_PER_TRY_TIMEOUT_MS,
    mesh_proxy::retry::overrides::MAX_RETRIES,
    mesh_proxy::retry::overrides::RETRY_ON,
    mesh_proxy::retry::overrides::RETRY_GRPC_ON,
    mesh_proxy::retry::overrides::RETRIABLE_STATUS_CODES,
];

pub fn run(data: &[u8]) {
    let headers = header_map(data);
    let overrides_sent = OVERRIDES
        .iter()
        .filter(|n| headers.contains_key(**n))
        .count();

    for honour in [true, false] {
        let mut left = headers.clone();
        let o = Overrides::take(&mut left, honour);
        // The headers never reach the upstream, honoured or not; nothing else is touched.
        for name in OVERRIDES {
            assert!(!left.contains_key(name), "{name} left in place");
        }
        let removed: usize = OVERRIDES
            .iter()
            .map(|n| headers.get_all(*n).iter().count())
            .sum();
        assert_eq!(left.len() + removed, headers.len());
        if !honour || overrides_sent == 0 {
            assert_eq!(o, Overrides::default(), "nothing to honour");
        }
        for route in [RetryPolicy::none(), RetryPolicy::istio_default()] {
            let merged = o.apply_to_retry(route.clone());
            // Overrides add to the route's conditions, never take one away.
            assert!(merged.retry_on.contains(route.retry_on));
            assert!(merged.status_codes.len() >= route.status_codes.len());
        }
        let route_timeout = Some(Duration::from_secs(3));
        if o.timeout.is_none() {
            assert_eq!(o.apply_to_timeout(route_timeout), route_timeout);
        }
    }
    if let Some(t) = grpc_timeout(&headers) {
        // At most 8 digits of hours.
        assert!(t <= Duration::from_secs(99_999_999 * 3600));
    }
}

fn header_map(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in crate::lines(data) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii_start();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}
