//! Retry policy: Envoy's `retry_on` conditions and the decision whether an attempt is retried.
//!
//! The conditions are Istio's `retryOn` vocabulary ([`RetryCondition`], shared with
//! validation); [`RetryOn::flag`] maps every one of them to what the proxy does, so a
//! condition that validates is always one the proxy enforces.

use std::time::Duration;

use http::{HeaderMap, HeaderName};
use mesh_api::networking::retry_on::{self, RetryCondition, RetryOnEntry};
use mesh_proto::config::v1 as pb;

use crate::config::FieldError;

/// Set by a rate limiter on a response it limited (Envoy's `envoy-ratelimited` condition).
pub const ENVOY_RATELIMITED: HeaderName = HeaderName::from_static("x-envoy-ratelimited");

/// A set of Envoy retry conditions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    pub const FIVE_XX: Self = Self(1);
    pub const GATEWAY_ERROR: Self = Self(1 << 1);
    pub const RESET: Self = Self(1 << 2);
    pub const CONNECT_FAILURE: Self = Self(1 << 3);
    pub const RETRIABLE_4XX: Self = Self(1 << 4);
    pub const REFUSED_STREAM: Self = Self(1 << 5);
    pub const RETRIABLE_STATUS_CODES: Self = Self(1 << 6);
    pub const GRPC_CANCELLED: Self = Self(1 << 7);
    pub const GRPC_DEADLINE_EXCEEDED: Self = Self(1 << 8);
    pub const GRPC_INTERNAL: Self = Self(1 << 9);
    pub const GRPC_RESOURCE_EXHAUSTED: Self = Self(1 << 10);
    pub const GRPC_UNAVAILABLE: Self = Self(1 << 11);
    pub const RESET_BEFORE_REQUEST: Self = Self(1 << 12);
    pub const ENVOY_RATELIMITED: Self = Self(1 << 13);
    pub const RETRIABLE_HEADERS: Self = Self(1 << 14);

    /// What the proxy does for each condition Istio accepts.
    pub fn flag(c: RetryCondition) -> Self {
        match c {
            RetryCondition::FiveXx => Self::FIVE_XX,
            RetryCondition::GatewayError => Self::GATEWAY_ERROR,
            RetryCondition::Reset => Self::RESET,
            RetryCondition::ResetBeforeRequest => Self::RESET_BEFORE_REQUEST,
            RetryCondition::ConnectFailure => Self::CONNECT_FAILURE,
            RetryCondition::EnvoyRateLimited => Self::ENVOY_RATELIMITED,
            RetryCondition::Retriable4xx => Self::RETRIABLE_4XX,
            RetryCondition::RefusedStream => Self::REFUSED_STREAM,
            RetryCondition::RetriableStatusCodes => Self::RETRIABLE_STATUS_CODES,
            RetryCondition::RetriableHeaders => Self::RETRIABLE_HEADERS,
            // Accepted and never applies: the proxy has no HTTP/3 upstreams, so no attempt
            // can fail after an HTTP/3 connection was made.
            RetryCondition::Http3PostConnectFailure => Self::default(),
            RetryCondition::Cancelled => Self::GRPC_CANCELLED,
            RetryCondition::DeadlineExceeded => Self::GRPC_DEADLINE_EXCEEDED,
            RetryCondition::Internal => Self::GRPC_INTERNAL,
            RetryCondition::ResourceExhausted => Self::GRPC_RESOURCE_EXHAUSTED,
            RetryCondition::Unavailable => Self::GRPC_UNAVAILABLE,
        }
    }

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses a comma-separated list; bare numbers are status codes (as Istio's `retryOn`
    /// allows). Returns the conditions, the codes, and the tokens it did not know.
    pub fn parse(list: &str) -> (Self, Vec<u16>, Vec<String>) {
        let mut on = Self::default();
        let mut codes = Vec::new();
        let mut unknown = Vec::new();
        for entry in retry_on::entries(list) {
            match entry {
                Ok(RetryOnEntry::Condition(c)) => on = on.union(Self::flag(c)),
                Ok(RetryOnEntry::StatusCode(code)) => {
                    on = on.union(Self::RETRIABLE_STATUS_CODES);
                    codes.push(code);
                }
                Err(token) => unknown.push(token.to_string()),
            }
        }
        (on, codes, unknown)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub retry_on: RetryOn,
    pub status_codes: Vec<u16>,
    /// Response headers that make an attempt retriable under `retriable-headers` (Envoy's
    /// `x-envoy-retriable-header-names` request header).
    pub retriable_headers: Vec<HeaderName>,
}

impl RetryPolicy {
    /// Istio's default when a route says nothing: 2 retries on connect-failure,
    /// refused-stream, unavailable, cancelled and retriable-status-codes, the code being 503
    /// (Istio's `DefaultPolicy`).
    pub fn istio_default() -> Self {
        Self {
            num_retries: 2,
            per_try_timeout: None,
            retry_on: RetryOn::CONNECT_FAILURE
                .union(RetryOn::REFUSED_STREAM)
                .union(RetryOn::GRPC_UNAVAILABLE)
                .union(RetryOn::GRPC_CANCELLED)
                .union(RetryOn::RETRIABLE_STATUS_CODES),
            status_codes: vec![503],
            retriable_headers: Vec::new(),
        }
    }

    pub fn none() -> Self {
        Self {
            num_retries: 0,
            per_try_timeout: None,
            retry_on: RetryOn::default(),
            status_codes: Vec::new(),
            retriable_headers: Vec::new(),
        }
    }

    /// Fields of errors are relative to the retry policy.
    pub fn compile(p: &pb::RetryPolicy) -> Result<Self, FieldError> {
        let (retry_on, mut status_codes, unknown) = RetryOn::parse(&p.retry_on);
        if !unknown.is_empty() {
            return Err(FieldError::new(
                "retryOn",
                format!("unknown retry condition(s): {}", unknown.join(", ")),
            ));
        }
        for (i, code) in p.retriable_status_codes.iter().enumerate() {
            let code = u16::try_from(*code)
                .ok()
                .filter(|c| (100..600).contains(c))
                .ok_or_else(|| {
                    FieldError::new(
                        format!("retriableStatusCodes[{i}]"),
                        format!("{code} is not a status code"),
                    )
                })?;
            status_codes.push(code);
        }
        Ok(Self {
            num_retries: p.num_retries,
            per_try_timeout: (p.per_try_timeout_ms > 0)
                .then(|| Duration::from_millis(p.per_try_timeout_ms)),
            retry_on,
            status_codes,
            retriable_headers: Vec::new(),
        })
    }

    /// How an attempt that got response headers ended, as far as this policy cares.
    pub fn response_outcome(&self, status: u16, headers: &HeaderMap) -> Outcome {
        Outcome::Response {
            status,
            grpc_status: headers
                .get(crate::http::headers::GRPC_STATUS)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            rate_limited: headers.contains_key(ENVOY_RATELIMITED),
            retriable_header: self
                .retriable_headers
                .iter()
                .any(|h| headers.contains_key(h)),
        }
    }

    /// Whether an attempt that ended with `outcome` may be retried under this policy.
    pub fn retriable(&self, outcome: &Outcome) -> bool {
        let on = self.retry_on;
        // Envoy counts every kind of reset (connect failure and refused stream included)
        // under reset, 5xx and gateway-error.
        let any_reset = on.contains(RetryOn::RESET)
            || on.contains(RetryOn::FIVE_XX)
            || on.contains(RetryOn::GATEWAY_ERROR);
        match *outcome {
            Outcome::ConnectFailure
            | Outcome::RefusedStream
            | Outcome::Reset
            | Outcome::ResetBeforeRequest
                if any_reset =>
            {
                true
            }
            // Nothing of the request reached the upstream: safe to retry for this condition.
            Outcome::ConnectFailure | Outcome::RefusedStream | Outcome::ResetBeforeRequest
                if on.contains(RetryOn::RESET_BEFORE_REQUEST) =>
            {
                true
            }
            Outcome::ConnectFailure => on.contains(RetryOn::CONNECT_FAILURE),
            Outcome::RefusedStream => on.contains(RetryOn::REFUSED_STREAM),
            Outcome::Reset | Outcome::ResetBeforeRequest => false,
            // A per-try timeout answers 504, so it counts as a gateway error.
            Outcome::PerTryTimeout => {
                on.contains(RetryOn::FIVE_XX) || on.contains(RetryOn::GATEWAY_ERROR)
            }
            Outcome::Response {
                status,
                grpc_status,
                rate_limited,
                retriable_header,
            } => {
                let by_status = (on.contains(RetryOn::FIVE_XX) && status >= 500)
                    || (on.contains(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
                    || (on.contains(RetryOn::RETRIABLE_4XX) && status == 409)
                    || (on.contains(RetryOn::RETRIABLE_STATUS_CODES)
                        && self.status_codes.contains(&status));
                let by_grpc = match grpc_status {
                    Some(1) => on.contains(RetryOn::GRPC_CANCELLED),
                    Some(4) => on.contains(RetryOn::GRPC_DEADLINE_EXCEEDED),
                    Some(8) => on.contains(RetryOn::GRPC_RESOURCE_EXHAUSTED),
                    Some(13) => on.contains(RetryOn::GRPC_INTERNAL),
                    Some(14) => on.contains(RetryOn::GRPC_UNAVAILABLE),
                    _ => false,
                };
                let by_headers = (rate_limited && on.contains(RetryOn::ENVOY_RATELIMITED))
                    || (retriable_header && on.contains(RetryOn::RETRIABLE_HEADERS));
                by_status || by_grpc || by_headers
            }
        }
    }
}

/// How one upstream attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    ConnectFailure,
    RefusedStream,
    /// The upstream reset or closed after the request (or part of it) was sent.
    Reset,
    /// The connection was lost before the request was sent on it.
    ResetBeforeRequest,
    PerTryTimeout,
    /// Response headers arrived; see [`RetryPolicy::response_outcome`].
    Response {
        status: u16,
        /// Set for a trailers-only gRPC reply.
        grpc_status: Option<u32>,
        /// The response carries `x-envoy-ratelimited`.
        rate_limited: bool,
        /// The response carries one of the policy's retriable headers.
        retriable_header: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retry_on: &str) -> RetryPolicy {
        RetryPolicy::compile(&pb::RetryPolicy {
            num_retries: 3,
            retry_on: retry_on.into(),
            ..Default::default()
        })
        .unwrap()
    }

    fn response(status: u16) -> Outcome {
        policy("").response_outcome(status, &HeaderMap::new())
    }

    fn grpc(code: u32) -> Outcome {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", code.into());
        policy("").response_outcome(200, &headers)
    }

    #[test]
    fn http_conditions() {
        assert!(policy("5xx").retriable(&response(500)));
        assert!(policy("5xx").retriable(&Outcome::Reset));
        assert!(policy("5xx").retriable(&Outcome::ConnectFailure));
        assert!(!policy("5xx").retriable(&response(404)));
        assert!(policy("gateway-error").retriable(&response(503)));
        assert!(!policy("gateway-error").retriable(&response(500)));
        assert!(policy("gateway-error").retriable(&Outcome::PerTryTimeout));
        assert!(policy("reset").retriable(&Outcome::Reset));
        assert!(!policy("reset").retriable(&response(503)));
        assert!(policy("connect-failure").retriable(&Outcome::ConnectFailure));
        assert!(!policy("connect-failure").retriable(&Outcome::Reset));
        assert!(policy("retriable-4xx").retriable(&response(409)));
        assert!(!policy("retriable-4xx").retriable(&response(404)));
        assert!(policy("refused-stream").retriable(&Outcome::RefusedStream));
        assert!(!policy("refused-stream").retriable(&Outcome::Reset));
        assert!(policy("reset").retriable(&Outcome::ConnectFailure));
        assert!(policy("gateway-error").retriable(&Outcome::Reset));
        assert!(policy("503").retriable(&response(503)));
        assert!(!policy("503").retriable(&response(502)));
        let p = RetryPolicy::compile(&pb::RetryPolicy {
            retry_on: "retriable-status-codes".into(),
            retriable_status_codes: vec![418],
            ..Default::default()
        })
        .unwrap();
        assert!(p.retriable(&response(418)));
        assert!(!p.retriable(&response(500)));
    }

    #[test]
    fn grpc_conditions() {
        let all = policy("cancelled,deadline-exceeded,internal,resource-exhausted,unavailable");
        for code in [1, 4, 8, 13, 14] {
            assert!(all.retriable(&grpc(code)), "grpc {code}");
        }
        assert!(!all.retriable(&grpc(0)));
        assert!(!all.retriable(&grpc(5)));
        assert!(!policy("unavailable").retriable(&grpc(13)));
    }

    #[test]
    fn istio_default() {
        let d = RetryPolicy::istio_default();
        assert_eq!(d.num_retries, 2);
        assert!(d.retriable(&Outcome::ConnectFailure));
        assert!(d.retriable(&Outcome::RefusedStream));
        assert!(d.retriable(&grpc(14)));
        assert!(d.retriable(&grpc(1)));
        assert!(d.retriable(&response(503)), "503 is Istio's retriable code");
        assert!(
            !d.retriable(&response(500)),
            "5xx is not in Istio's default"
        );
        assert!(!d.retriable(&Outcome::Reset));
    }

    #[test]
    fn unknown_conditions_are_rejected_in_config() {
        let err = RetryPolicy::compile(&pb::RetryPolicy {
            retry_on: "5xx,sometimes".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.field, "retryOn");
        assert!(err.reason.contains("sometimes"), "{err}");
    }

    #[test]
    fn every_condition_istio_accepts_compiles() {
        for c in RetryCondition::ALL {
            let p = RetryPolicy::compile(&pb::RetryPolicy {
                num_retries: 1,
                retry_on: c.name().into(),
                ..Default::default()
            });
            assert!(p.is_ok(), "{}: {p:?}", c.name());
        }
    }

    #[test]
    fn reset_before_request() {
        let p = policy("reset-before-request");
        assert!(p.retriable(&Outcome::ResetBeforeRequest));
        assert!(p.retriable(&Outcome::ConnectFailure));
        assert!(p.retriable(&Outcome::RefusedStream));
        assert!(
            !p.retriable(&Outcome::Reset),
            "the request may have reached the upstream"
        );
        assert!(!p.retriable(&response(503)));
        assert!(policy("reset").retriable(&Outcome::ResetBeforeRequest));
        assert!(!policy("connect-failure").retriable(&Outcome::ResetBeforeRequest));
    }

    #[test]
    fn envoy_ratelimited() {
        let p = policy("envoy-ratelimited");
        let mut limited = HeaderMap::new();
        limited.insert(ENVOY_RATELIMITED, "true".parse().unwrap());
        assert!(p.retriable(&p.response_outcome(429, &limited)));
        assert!(!p.retriable(&p.response_outcome(429, &HeaderMap::new())));
        assert!(!policy("5xx").retriable(&p.response_outcome(429, &limited)));
    }

    #[test]
    fn retriable_headers() {
        let mut p = policy("retriable-headers");
        p.retriable_headers = vec![HeaderName::from_static("x-try-again")];
        let mut hit = HeaderMap::new();
        hit.insert("x-try-again", "1".parse().unwrap());
        assert!(p.retriable(&p.response_outcome(200, &hit)));
        assert!(!p.retriable(&p.response_outcome(200, &HeaderMap::new())));
        // Without the condition, the header names alone do nothing.
        let mut off = policy("5xx");
        off.retriable_headers = p.retriable_headers.clone();
        assert!(!off.retriable(&off.response_outcome(200, &hit)));
    }

    #[test]
    fn http3_post_connect_failure_never_applies() {
        let p = policy("http3-post-connect-failure");
        assert!(p.retry_on.is_empty());
        for o in [
            Outcome::ConnectFailure,
            Outcome::Reset,
            Outcome::ResetBeforeRequest,
            Outcome::PerTryTimeout,
            response(503),
        ] {
            assert!(!p.retriable(&o), "{o:?}");
        }
    }
}
