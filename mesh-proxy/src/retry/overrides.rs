//! Envoy's request override headers, sent by applications written for Istio.
//!
//! They are honoured on outbound requests from the local application only, and always removed
//! before a request leaves the proxy. An unparsable value is ignored, never fatal.

use std::time::Duration;

use http::header::AsHeaderName;
use http::{HeaderMap, HeaderName};

use super::policy::{RetryOn, RetryPolicy};

pub const UPSTREAM_RQ_TIMEOUT_MS: &str = "x-envoy-upstream-rq-timeout-ms";
pub const UPSTREAM_RQ_PER_TRY_TIMEOUT_MS: &str = "x-envoy-upstream-rq-per-try-timeout-ms";
pub const MAX_RETRIES: &str = "x-envoy-max-retries";
pub const RETRY_ON: &str = "x-envoy-retry-on";
pub const RETRY_GRPC_ON: &str = "x-envoy-retry-grpc-on";
pub const RETRIABLE_STATUS_CODES: &str = "x-envoy-retriable-status-codes";
/// Response header names that make an attempt retriable under `retriable-headers`.
pub const RETRIABLE_HEADER_NAMES: &str = "x-envoy-retriable-header-names";
/// Set upstream: the time the caller expects the request to complete in.
pub const EXPECTED_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
/// Set upstream: 1 for the first attempt, 2 for the first retry, ...
pub const ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");

const ALL: [&str; 7] = [
    UPSTREAM_RQ_TIMEOUT_MS,
    UPSTREAM_RQ_PER_TRY_TIMEOUT_MS,
    MAX_RETRIES,
    RETRY_ON,
    RETRY_GRPC_ON,
    RETRIABLE_STATUS_CODES,
    RETRIABLE_HEADER_NAMES,
];

/// What the override headers of one request asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Overrides {
    /// `Some(None)`: the header set the timeout to 0, which disables it.
    pub timeout: Option<Option<Duration>>,
    pub per_try_timeout: Option<Duration>,
    pub max_retries: Option<u32>,
    pub retry_on: RetryOn,
    pub status_codes: Vec<u16>,
    pub retriable_headers: Vec<HeaderName>,
}

impl Overrides {
    /// Reads the override headers (when `honour`) and removes them from `headers` either way.
    pub fn take(headers: &mut HeaderMap, honour: bool) -> Self {
        let mut o = Self::default();
        // Most requests carry none of them: one pass over the names, no lookups.
        if !headers.keys().any(|k| k.as_str().starts_with("x-envoy-")) {
            return o;
        }
        if honour {
            o.timeout = number::<u64>(headers, UPSTREAM_RQ_TIMEOUT_MS)
                .map(|ms| (ms > 0).then(|| Duration::from_millis(ms)));
            o.per_try_timeout = number::<u64>(headers, UPSTREAM_RQ_PER_TRY_TIMEOUT_MS)
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis);
            o.max_retries = number(headers, MAX_RETRIES);
            for name in [RETRY_ON, RETRY_GRPC_ON] {
                if let Some(v) = text(headers, name) {
                    // Unknown tokens are ignored, as Envoy does for these headers.
                    let (on, codes, _unknown) = RetryOn::parse(v);
                    o.retry_on = o.retry_on.union(on);
                    o.status_codes.extend(codes);
                }
            }
            if let Some(v) = text(headers, RETRIABLE_STATUS_CODES) {
                o.status_codes
                    .extend(v.split(',').filter_map(|c| c.trim().parse::<u16>().ok()));
            }
            if let Some(v) = text(headers, RETRIABLE_HEADER_NAMES) {
                o.retriable_headers.extend(v.split(',').filter_map(|n| {
                    HeaderName::from_bytes(n.trim().to_ascii_lowercase().as_bytes()).ok()
                }));
            }
        }
        for name in ALL {
            headers.remove(name);
        }
        o
    }

    /// The route's policy with these overrides merged the way Envoy merges them: conditions and
    /// codes are added to the route's, and `x-envoy-max-retries` counts only when some
    /// condition is set.
    pub fn apply_to_retry(&self, mut policy: RetryPolicy) -> RetryPolicy {
        policy.retry_on = policy.retry_on.union(self.retry_on);
        policy.status_codes.extend_from_slice(&self.status_codes);
        policy
            .retriable_headers
            .extend_from_slice(&self.retriable_headers);
        if let Some(n) = self.max_retries
            && !policy.retry_on.is_empty()
        {
            policy.num_retries = n;
        }
        if let Some(t) = self.per_try_timeout {
            policy.per_try_timeout = Some(t);
        }
        policy
    }

    /// The route timeout after the override header.
    pub fn apply_to_timeout(&self, route_timeout: Option<Duration>) -> Option<Duration> {
        self.timeout.unwrap_or(route_timeout)
    }
}

fn text(headers: &HeaderMap, name: impl AsHeaderName) -> Option<&str> {
    headers.get(name)?.to_str().ok()
}

fn number<T: std::str::FromStr>(headers: &HeaderMap, name: impl AsHeaderName) -> Option<T> {
    text(headers, name)?.trim().parse().ok()
}

/// Parses gRPC's `grpc-timeout` (`1-8 digits` + `H|M|S|m|u|n`).
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = text(headers, crate::http::headers::GRPC_TIMEOUT)?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::policy::Outcome;
    use super::*;

    use crate::test_headers::header_map as headers;

    #[test]
    fn honoured_and_removed() {
        let mut h = headers(&[
            (UPSTREAM_RQ_TIMEOUT_MS, "1500"),
            (UPSTREAM_RQ_PER_TRY_TIMEOUT_MS, "200"),
            (MAX_RETRIES, "5"),
            (RETRY_ON, "5xx,bogus"),
            (RETRY_GRPC_ON, "unavailable"),
            (RETRIABLE_STATUS_CODES, "418, x, 425"),
            ("x-keep", "1"),
        ]);
        let o = Overrides::take(&mut h, true);
        assert_eq!(o.timeout, Some(Some(Duration::from_millis(1500))));
        assert_eq!(o.per_try_timeout, Some(Duration::from_millis(200)));
        assert_eq!(o.max_retries, Some(5));
        assert!(o.retry_on.contains(RetryOn::FIVE_XX));
        assert!(o.retry_on.contains(RetryOn::GRPC_UNAVAILABLE));
        assert_eq!(o.status_codes, vec![418, 425]);
        assert_eq!(h.len(), 1, "only x-keep is left: {h:?}");
    }

    #[test]
    fn not_honoured_but_still_removed() {
        let mut h = headers(&[(MAX_RETRIES, "5"), (UPSTREAM_RQ_TIMEOUT_MS, "10")]);
        assert_eq!(Overrides::take(&mut h, false), Overrides::default());
        assert!(h.is_empty());
    }

    #[test]
    fn unparsable_values_are_ignored() {
        let mut h = headers(&[(UPSTREAM_RQ_TIMEOUT_MS, "soon"), (MAX_RETRIES, "-1")]);
        let o = Overrides::take(&mut h, true);
        assert_eq!(o.timeout, None);
        assert_eq!(o.max_retries, None);
        assert_eq!(
            o.apply_to_timeout(Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn zero_timeout_disables_the_route_timeout() {
        let mut h = headers(&[(UPSTREAM_RQ_TIMEOUT_MS, "0")]);
        let o = Overrides::take(&mut h, true);
        assert_eq!(o.apply_to_timeout(Some(Duration::from_secs(3))), None);
    }

    #[test]
    fn merge_with_route_policy_like_envoy() {
        let route = RetryPolicy::none();
        // max-retries alone does nothing without a condition.
        let mut h = headers(&[(MAX_RETRIES, "4")]);
        let p = Overrides::take(&mut h, true).apply_to_retry(route.clone());
        assert_eq!(p.num_retries, 0);
        let mut h = headers(&[(MAX_RETRIES, "4"), (RETRY_ON, "5xx")]);
        let p = Overrides::take(&mut h, true).apply_to_retry(route);
        assert_eq!(p.num_retries, 4);
        assert!(p.retriable(&p.response_outcome(503, &HeaderMap::new())));
        // Route conditions stay.
        let mut h = headers(&[(RETRY_ON, "retriable-4xx")]);
        let p = Overrides::take(&mut h, true).apply_to_retry(RetryPolicy::istio_default());
        assert!(p.retriable(&Outcome::ConnectFailure));
        assert!(p.retriable(&p.response_outcome(409, &HeaderMap::new())));
    }

    #[test]
    fn retriable_header_names() {
        let mut h = headers(&[
            (RETRY_ON, "retriable-headers"),
            (RETRIABLE_HEADER_NAMES, "X-Upstream-Busy, bad name"),
        ]);
        let p = Overrides::take(&mut h, true).apply_to_retry(RetryPolicy::none());
        assert!(h.is_empty());
        assert_eq!(p.retriable_headers, ["x-upstream-busy"]);
        let busy = headers(&[("x-upstream-busy", "1")]);
        assert!(p.retriable(&p.response_outcome(200, &busy)));
        assert!(!p.retriable(&p.response_outcome(200, &HeaderMap::new())));
    }

    #[test]
    fn grpc_timeout_units() {
        let t = |v: &str| grpc_timeout(&headers(&[("grpc-timeout", v)]));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("150m"), Some(Duration::from_millis(150)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("5u"), Some(Duration::from_micros(5)));
        assert_eq!(t("10"), None);
        assert_eq!(t("123456789S"), None, "more than 8 digits");
        assert_eq!(t("x"), None);
    }
}
