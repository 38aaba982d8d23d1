//! The vocabulary of `HTTPRetry.retryOn`: Envoy's retry conditions (HTTP and gRPC) and bare
//! status codes. Validation accepts exactly these, and the proxy maps each one to its
//! behaviour with an exhaustive match, so a condition cannot be accepted by one and refused
//! by the other.

/// One retry condition, by its Envoy name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryCondition {
    FiveXx,
    GatewayError,
    Reset,
    ResetBeforeRequest,
    ConnectFailure,
    EnvoyRateLimited,
    Retriable4xx,
    RefusedStream,
    RetriableStatusCodes,
    RetriableHeaders,
    Http3PostConnectFailure,
    Cancelled,
    DeadlineExceeded,
    Internal,
    ResourceExhausted,
    Unavailable,
}

impl RetryCondition {
    pub const ALL: [RetryCondition; 16] = [
        Self::FiveXx,
        Self::GatewayError,
        Self::Reset,
        Self::ResetBeforeRequest,
        Self::ConnectFailure,
        Self::EnvoyRateLimited,
        Self::Retriable4xx,
        Self::RefusedStream,
        Self::RetriableStatusCodes,
        Self::RetriableHeaders,
        Self::Http3PostConnectFailure,
        Self::Cancelled,
        Self::DeadlineExceeded,
        Self::Internal,
        Self::ResourceExhausted,
        Self::Unavailable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::FiveXx => "5xx",
            Self::GatewayError => "gateway-error",
            Self::Reset => "reset",
            Self::ResetBeforeRequest => "reset-before-request",
            Self::ConnectFailure => "connect-failure",
            Self::EnvoyRateLimited => "envoy-ratelimited",
            Self::Retriable4xx => "retriable-4xx",
            Self::RefusedStream => "refused-stream",
            Self::RetriableStatusCodes => "retriable-status-codes",
            Self::RetriableHeaders => "retriable-headers",
            Self::Http3PostConnectFailure => "http3-post-connect-failure",
            Self::Cancelled => "cancelled",
            Self::DeadlineExceeded => "deadline-exceeded",
            Self::Internal => "internal",
            Self::ResourceExhausted => "resource-exhausted",
            Self::Unavailable => "unavailable",
        }
    }

    pub fn parse(name: &str) -> Option<RetryCondition> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// One comma-separated entry of `retryOn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryOnEntry {
    Condition(RetryCondition),
    /// A bare status code (100..=599): retried as `retriable-status-codes` with that code.
    StatusCode(u16),
}

impl RetryOnEntry {
    /// `None` for anything Istio's validation refuses.
    pub fn parse(entry: &str) -> Option<RetryOnEntry> {
        if let Some(c) = RetryCondition::parse(entry) {
            return Some(Self::Condition(c));
        }
        entry
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .map(Self::StatusCode)
    }
}

/// The entries of a `retryOn` list, trimmed, empty ones skipped; each is parsed or returned
/// as the text that is not a known entry.
pub fn entries(list: &str) -> impl Iterator<Item = Result<RetryOnEntry, &str>> {
    list.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| RetryOnEntry::parse(t).ok_or(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in RetryCondition::ALL {
            assert_eq!(RetryCondition::parse(c.name()), Some(c));
        }
        assert_eq!(RetryCondition::parse("sometimes"), None);
    }

    #[test]
    fn entries_and_codes() {
        let got: Vec<_> = entries("5xx, 503,,nope,600").collect();
        assert_eq!(
            got,
            [
                Ok(RetryOnEntry::Condition(RetryCondition::FiveXx)),
                Ok(RetryOnEntry::StatusCode(503)),
                Err("nope"),
                Err("600"),
            ]
        );
    }
}
