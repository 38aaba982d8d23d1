//! When to renew: pure functions of time, tested alone.

use std::time::{Duration, SystemTime};

/// Renewal falls between these fractions of the lifetime, so that proxies started together do
/// not all call citadel at the same instant.
const JITTER: std::ops::Range<f64> = 0.45..0.55;

/// How long to wait before renewing a certificate that expires at `not_after`, seen at `now`
/// (right after it arrived): `fraction` of what is left. The remaining time, not
/// `notAfter - notBefore`, because citadel backdates `notBefore` by a minute.
pub fn renewal_delay(not_after: SystemTime, now: SystemTime, fraction: f64) -> Duration {
    not_after
        .duration_since(now)
        .unwrap_or_default()
        .mul_f64(fraction.clamp(0.0, 1.0))
}

/// [`renewal_delay`] at a random fraction between 45 % and 55 %.
pub fn jittered_renewal(not_after: SystemTime, now: SystemTime) -> Duration {
    renewal_delay(not_after, now, rand::random_range(JITTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn renews_at_the_fraction_of_what_is_left() {
        let now = SystemTime::UNIX_EPOCH + 1000 * S;
        assert_eq!(renewal_delay(now + 100 * S, now, 0.5), 50 * S);
        assert_eq!(renewal_delay(now - S, now, 0.5), Duration::ZERO);
        for _ in 0..100 {
            let d = jittered_renewal(now + 100 * S, now);
            assert!((45 * S..=55 * S).contains(&d), "{d:?}");
        }
    }
}
