//! Full-jitter exponential backoff between retries (Envoy: 25 ms base; capped at 250 ms).

use std::time::Duration;

pub const BASE: Duration = Duration::from_millis(25);
pub const CAP: Duration = Duration::from_millis(250);

/// The wait before retry number `retry` (1 for the first retry): uniformly random in
/// `[0, min(CAP, BASE * 2^(retry-1))]`, from a caller-supplied uniform `roll` in `[0, 1)`.
pub fn delay(retry: u32, roll: f64) -> Duration {
    let exp = retry.saturating_sub(1).min(16);
    let ceiling = BASE.saturating_mul(1 << exp).min(CAP);
    ceiling.mul_f64(roll.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_then_caps() {
        assert_eq!(delay(1, 1.0), Duration::from_millis(25));
        assert_eq!(delay(2, 1.0), Duration::from_millis(50));
        assert_eq!(delay(3, 1.0), Duration::from_millis(100));
        assert_eq!(delay(4, 1.0), Duration::from_millis(200));
        assert_eq!(delay(5, 1.0), CAP);
        assert_eq!(delay(60, 1.0), CAP);
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        assert_eq!(delay(3, 0.0), Duration::ZERO);
        assert_eq!(delay(3, 0.5), Duration::from_millis(50));
    }
}
