//! Envoy's response flags, the `response_flags` label: why the proxy, not the upstream,
//! shaped a response. Set by the code that made the reply, carried to the one place that
//! records the request as a response extension.

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// One flag, by Envoy's short name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ResponseFlag {
    /// No healthy upstream host (or none at all) for the cluster.
    NoHealthyUpstream = 1,
    /// Connecting to the upstream failed.
    UpstreamConnectionFailure = 1 << 1,
    /// No route for the request.
    NoRouteFound = 1 << 2,
    /// The request failed on every attempt its retry policy allowed.
    UpstreamRetryLimitExceeded = 1 << 3,
    /// The route or per-try timeout fired.
    UpstreamRequestTimeout = 1 << 4,
    /// The downstream went away before the response was complete.
    DownstreamConnectionTermination = 1 << 5,
    /// The upstream connection closed or reset before the response.
    UpstreamConnectionTermination = 1 << 6,
    /// A fault injection aborted the request.
    FaultInjected = 1 << 7,
    /// A fault injection delayed the request.
    DelayInjected = 1 << 8,
    /// The route named a cluster the config lacks.
    NoClusterFound = 1 << 9,
    /// A circuit breaker of the cluster refused the request or connection.
    UpstreamOverflow = 1 << 10,
    /// A local rate limit refused the request.
    RateLimited = 1 << 11,
}

/// Envoy's spelling, in the order of Envoy's flag enum (the order it prints them in).
const NAMES: [(ResponseFlag, &str); 12] = [
    (ResponseFlag::NoHealthyUpstream, "UH"),
    (ResponseFlag::UpstreamRequestTimeout, "UT"),
    (ResponseFlag::UpstreamConnectionFailure, "UF"),
    (ResponseFlag::UpstreamConnectionTermination, "UC"),
    (ResponseFlag::UpstreamOverflow, "UO"),
    (ResponseFlag::NoRouteFound, "NR"),
    (ResponseFlag::DelayInjected, "DI"),
    (ResponseFlag::FaultInjected, "FI"),
    (ResponseFlag::RateLimited, "RL"),
    (ResponseFlag::DownstreamConnectionTermination, "DC"),
    (ResponseFlag::UpstreamRetryLimitExceeded, "URX"),
    (ResponseFlag::NoClusterFound, "NC"),
];

/// A set of flags; empty prints `-` as Envoy does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u16);

impl ResponseFlags {
    pub fn of(flag: ResponseFlag) -> Self {
        Self(flag as u16)
    }

    pub fn with(self, flag: ResponseFlag) -> Self {
        Self(self.0 | flag as u16)
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn contains(self, flag: ResponseFlag) -> bool {
        self.0 & flag as u16 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl EncodeLabelValue for ResponseFlags {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        write!(encoder, "{self}")
    }
}

/// Marks a response with a flag (adding to any already there).
pub fn mark<B>(resp: &mut http::Response<B>, flag: ResponseFlag) {
    let flags = resp
        .extensions()
        .get::<ResponseFlags>()
        .copied()
        .unwrap_or_default();
    resp.extensions_mut().insert(flags.with(flag));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_as_envoy() {
        assert_eq!(ResponseFlags::default().to_string(), "-");
        let f = ResponseFlags::of(ResponseFlag::DownstreamConnectionTermination)
            .with(ResponseFlag::UpstreamConnectionFailure)
            .with(ResponseFlag::UpstreamRetryLimitExceeded);
        assert_eq!(f.to_string(), "UF,DC,URX");
    }

    #[test]
    fn mark_adds_to_the_response() {
        let mut resp = http::Response::new(());
        mark(&mut resp, ResponseFlag::UpstreamRequestTimeout);
        mark(&mut resp, ResponseFlag::UpstreamRetryLimitExceeded);
        assert_eq!(
            resp.extensions()
                .get::<ResponseFlags>()
                .unwrap()
                .to_string(),
            "UT,URX"
        );
    }
}
