//! Retry policy: Envoy's `retry_on` conditions and the decision whether an attempt is retried.

use std::time::Duration;

use mesh_proto::config::v1 as pb;

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

    const NAMES: [(&'static str, Self); 12] = [
        ("5xx", Self::FIVE_XX),
        ("gateway-error", Self::GATEWAY_ERROR),
        ("reset", Self::RESET),
        ("connect-failure", Self::CONNECT_FAILURE),
        ("retriable-4xx", Self::RETRIABLE_4XX),
        ("refused-stream", Self::REFUSED_STREAM),
        ("retriable-status-codes", Self::RETRIABLE_STATUS_CODES),
        ("cancelled", Self::GRPC_CANCELLED),
        ("deadline-exceeded", Self::GRPC_DEADLINE_EXCEEDED),
        ("internal", Self::GRPC_INTERNAL),
        ("resource-exhausted", Self::GRPC_RESOURCE_EXHAUSTED),
        ("unavailable", Self::GRPC_UNAVAILABLE),
    ];

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
        for token in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if let Some((_, flag)) = Self::NAMES.iter().find(|(n, _)| *n == token) {
                on = on.union(*flag);
            } else if let Some(code) = token.parse::<u16>().ok().filter(|c| (100..600).contains(c))
            {
                on = on.union(Self::RETRIABLE_STATUS_CODES);
                codes.push(code);
            } else {
                unknown.push(token.to_string());
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
        }
    }

    pub fn none() -> Self {
        Self {
            num_retries: 0,
            per_try_timeout: None,
            retry_on: RetryOn::default(),
            status_codes: Vec::new(),
        }
    }

    pub fn compile(p: &pb::RetryPolicy) -> Result<Self, String> {
        let (retry_on, mut status_codes, unknown) = RetryOn::parse(&p.retry_on);
        if !unknown.is_empty() {
            return Err(format!(
                "unknown retry condition(s): {}",
                unknown.join(", ")
            ));
        }
        for code in &p.retriable_status_codes {
            let code = u16::try_from(*code)
                .ok()
                .filter(|c| (100..600).contains(c))
                .ok_or_else(|| format!("{code} is not a status code"))?;
            status_codes.push(code);
        }
        Ok(Self {
            num_retries: p.num_retries,
            per_try_timeout: (p.per_try_timeout_ms > 0)
                .then(|| Duration::from_millis(p.per_try_timeout_ms)),
            retry_on,
            status_codes,
        })
    }

    /// Whether an attempt that ended with `outcome` may be retried under this policy.
    pub fn retriable(&self, outcome: &Outcome) -> bool {
        let on = self.retry_on;
        match *outcome {
            // Envoy counts every kind of reset (connect failure and refused stream included)
            // under reset, 5xx and gateway-error.
            Outcome::ConnectFailure | Outcome::RefusedStream | Outcome::Reset
                if on.contains(RetryOn::RESET)
                    || on.contains(RetryOn::FIVE_XX)
                    || on.contains(RetryOn::GATEWAY_ERROR) =>
            {
                true
            }
            Outcome::ConnectFailure => on.contains(RetryOn::CONNECT_FAILURE),
            Outcome::RefusedStream => on.contains(RetryOn::REFUSED_STREAM),
            Outcome::Reset => false,
            // A per-try timeout answers 504, so it counts as a gateway error.
            Outcome::PerTryTimeout => {
                on.contains(RetryOn::FIVE_XX) || on.contains(RetryOn::GATEWAY_ERROR)
            }
            Outcome::Response {
                status,
                grpc_status,
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
                by_status || by_grpc
            }
        }
    }
}

/// How one upstream attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    ConnectFailure,
    RefusedStream,
    Reset,
    PerTryTimeout,
    /// Response headers arrived; `grpc_status` is set for a trailers-only gRPC reply.
    Response {
        status: u16,
        grpc_status: Option<u32>,
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
        Outcome::Response {
            status,
            grpc_status: None,
        }
    }

    fn grpc(code: u32) -> Outcome {
        Outcome::Response {
            status: 200,
            grpc_status: Some(code),
        }
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
        assert!(err.contains("sometimes"), "{err}");
    }
}
