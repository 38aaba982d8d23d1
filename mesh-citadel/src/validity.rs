//! How long an issued certificate lives: a pure decision, apart from the signing code.

use std::time::Duration;

/// Istio's defaults: a day when the caller does not ask, at most 90 days whatever it asks.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(24 * 3600);
pub const MAX_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidityPolicy {
    pub default: Duration,
    pub max: Duration,
}

impl Default for ValidityPolicy {
    fn default() -> Self {
        Self {
            default: DEFAULT_VALIDITY,
            max: MAX_VALIDITY,
        }
    }
}

impl ValidityPolicy {
    /// The lifetime to issue: the default when none (or zero) is asked, capped at the maximum.
    pub fn effective(&self, requested: Option<Duration>) -> Duration {
        match requested {
            Some(d) if !d.is_zero() => d.min(self.max),
            _ => self.default.min(self.max),
        }
    }
}

/// The proto carries seconds as `int64`; zero or negative means "the CA's default".
pub fn from_proto_seconds(seconds: i64) -> Option<Duration> {
    u64::try_from(seconds)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_caps() {
        let p = ValidityPolicy::default();
        assert_eq!(p.effective(None), DEFAULT_VALIDITY);
        assert_eq!(p.effective(Some(Duration::ZERO)), DEFAULT_VALIDITY);
        assert_eq!(
            p.effective(Some(Duration::from_secs(3600))),
            Duration::from_secs(3600)
        );
        assert_eq!(
            p.effective(Some(Duration::from_secs(365 * 24 * 3600))),
            MAX_VALIDITY
        );
    }

    #[test]
    fn proto_seconds() {
        assert_eq!(from_proto_seconds(0), None);
        assert_eq!(from_proto_seconds(-5), None);
        assert_eq!(from_proto_seconds(60), Some(Duration::from_secs(60)));
    }
}
