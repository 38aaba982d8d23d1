//! When a name is resolved again: pure timing decisions, apart from the resolver.

use std::time::Duration;

/// How names are re-resolved and how long a request may wait for a first answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The shortest time between two lookups of a name, whatever the TTL says.
    pub floor: Duration,
    /// The longest time an answer is kept before asking again.
    pub ceiling: Duration,
    /// The longest wait between two attempts after failed lookups.
    pub failure_backoff_cap: Duration,
    /// One lookup (every attempt and server of the resolver) ends after this.
    pub query_timeout: Duration,
    /// A request to a cluster whose names have no answer yet waits this long for one.
    pub first_answer_wait: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            floor: Duration::from_secs(1),
            ceiling: Duration::from_secs(300),
            failure_backoff_cap: Duration::from_secs(30),
            query_timeout: Duration::from_secs(5),
            first_answer_wait: Duration::from_secs(5),
        }
    }
}

impl Timing {
    /// The wait after an answer whose records live for `ttl`.
    pub fn after_answer(&self, ttl: Duration) -> Duration {
        ttl.clamp(self.floor, self.ceiling.max(self.floor))
    }

    /// The wait after the `in_a_row`-th failed lookup in a row (1 for the first): doubling
    /// from the floor up to the backoff cap, so a server that is down is not hammered and
    /// one that comes back is asked again soon.
    pub fn after_failure(&self, in_a_row: u32) -> Duration {
        let factor = 1u32 << in_a_row.saturating_sub(1).min(16);
        self.floor
            .saturating_mul(factor)
            .min(self.failure_backoff_cap.max(self.floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_is_kept_within_floor_and_ceiling() {
        let t = Timing::default();
        assert_eq!(t.after_answer(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(
            t.after_answer(Duration::from_secs(42)),
            Duration::from_secs(42)
        );
        assert_eq!(
            t.after_answer(Duration::from_secs(86400)),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn failures_back_off_up_to_the_cap() {
        let t = Timing::default();
        let waits: Vec<u64> = (1..=7).map(|n| t.after_failure(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(t.after_failure(u32::MAX), Duration::from_secs(30));
    }
}
