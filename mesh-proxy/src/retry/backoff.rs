//! The proxy's one backoff: exponential growth from a base up to a cap, with a choice of
//! jitter. Used between retries of a request (Envoy's 25 ms base, 250 ms cap, full jitter),
//! between discovery reconnects and between certificate requests to citadel. Pure: the caller
//! supplies the attempt number and a uniform roll.

use std::time::Duration;

/// How a wait is drawn below the attempt's ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the ceiling.
    None,
    /// Uniform in `[0, ceiling]` (Envoy's retry backoff).
    Full,
    /// Uniform in `[ceiling / 2, ceiling]`: spread out, yet never much sooner than planned.
    Equal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first wait.
    pub base: Duration,
    /// No ceiling exceeds this.
    pub cap: Duration,
    pub jitter: Jitter,
}

impl Backoff {
    /// Between attempts of a request: Envoy's 25 ms base, capped at 250 ms, full jitter.
    pub const RETRY: Self = Self::new(
        Duration::from_millis(25),
        Duration::from_millis(250),
        Jitter::Full,
    );

    pub const fn new(base: Duration, cap: Duration, jitter: Jitter) -> Self {
        Self { base, cap, jitter }
    }

    /// The ceiling of wait number `attempt` (1 for the first): `base * 2^(attempt-1)`, capped.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        self.base.saturating_mul(1 << exp).min(self.cap)
    }

    /// Wait number `attempt` (1 for the first), from a uniform `roll` in `[0, 1)`.
    pub fn delay(&self, attempt: u32, roll: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let roll = roll.clamp(0.0, 1.0);
        match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => ceiling.mul_f64(roll),
            Jitter::Equal => ceiling.mul_f64(0.5 + roll / 2.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn retry_backoff_grows_exponentially_then_caps() {
        let b = Backoff::RETRY;
        assert_eq!(b.delay(1, 1.0), 25 * MS);
        assert_eq!(b.delay(2, 1.0), 50 * MS);
        assert_eq!(b.delay(3, 1.0), 100 * MS);
        assert_eq!(b.delay(4, 1.0), 200 * MS);
        assert_eq!(b.delay(5, 1.0), 250 * MS);
        assert_eq!(b.delay(60, 1.0), 250 * MS);
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        assert_eq!(Backoff::RETRY.delay(3, 0.0), Duration::ZERO);
        assert_eq!(Backoff::RETRY.delay(3, 0.5), 50 * MS);
    }

    #[test]
    fn equal_jitter_spans_half_to_whole_ceiling() {
        let b = Backoff::new(200 * MS, 5000 * MS, Jitter::Equal);
        assert_eq!(b.delay(1, 0.0), 100 * MS);
        assert_eq!(b.delay(1, 1.0), 200 * MS);
        assert_eq!(b.delay(7, 1.0), 5000 * MS);
    }

    #[test]
    fn without_jitter_it_doubles_up_to_the_cap() {
        let b = Backoff::new(100 * MS, 500 * MS, Jitter::None);
        let got: Vec<_> = (1..=5).map(|n| b.delay(n, 0.3).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 500, 500]);
    }
}
