//! Envoy's token bucket as pure logic: the caller passes the time, so the arithmetic is
//! tested without a clock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a bucket fills: it starts full with `max_tokens`, and every `fill_interval`
/// `tokens_per_fill` tokens are added, never above `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BucketSpec {
    pub max_tokens: u32,
    pub tokens_per_fill: u32,
    pub fill_interval: Duration,
}

/// What one request got from a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The bucket's size, Envoy's `x-ratelimit-limit`.
    pub limit: u32,
    /// Tokens left after this request.
    pub remaining: u32,
    /// Time until the next fill.
    pub reset: Duration,
}

impl Verdict {
    /// `x-ratelimit-reset` in whole seconds, rounded up (a fill 300 ms away is 1 s away).
    pub fn reset_seconds(&self) -> u64 {
        let d = self.reset;
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

/// A bucket's state: its tokens and how many fills it has had since `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    epoch: Instant,
    fills: u64,
    tokens: u32,
}

impl BucketState {
    /// A full bucket, its fill clock starting at `now`.
    pub fn full(spec: &BucketSpec, now: Instant) -> Self {
        Self {
            epoch: now,
            fills: 0,
            tokens: spec.max_tokens,
        }
    }

    /// Adds the fills due by `now`, then takes one token if there is one.
    pub fn take(&mut self, spec: &BucketSpec, now: Instant) -> Verdict {
        let interval = spec.fill_interval.max(Duration::from_millis(1));
        let elapsed = now.saturating_duration_since(self.epoch);
        let due = u64::try_from(elapsed.as_nanos() / interval.as_nanos()).unwrap_or(u64::MAX);
        if due > self.fills {
            let added = (due - self.fills).saturating_mul(u64::from(spec.tokens_per_fill));
            let tokens = u64::from(self.tokens).saturating_add(added);
            self.tokens = u32::try_from(tokens.min(u64::from(spec.max_tokens))).unwrap_or(u32::MAX);
            self.fills = due;
        }
        let allowed = self.tokens > 0;
        if allowed {
            self.tokens -= 1;
        }
        let next_fill = interval
            .checked_mul(u32::try_from(self.fills + 1).unwrap_or(u32::MAX))
            .map(|d| self.epoch + d);
        Verdict {
            allowed,
            limit: spec.max_tokens,
            remaining: self.tokens,
            reset: next_fill.map_or(interval, |t| t.saturating_duration_since(now)),
        }
    }
}

/// A bucket shared by every connection of the proxy. The lock is held for a few arithmetic
/// operations only.
#[derive(Debug)]
pub struct Bucket {
    pub spec: BucketSpec,
    state: Mutex<BucketState>,
}

impl Bucket {
    pub fn new(spec: BucketSpec, now: Instant) -> Self {
        Self {
            state: Mutex::new(BucketState::full(&spec, now)),
            spec,
        }
    }

    pub fn take(&self, now: Instant) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.take(&self.spec, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max: u32, per_fill: u32, ms: u64) -> BucketSpec {
        BucketSpec {
            max_tokens: max,
            tokens_per_fill: per_fill,
            fill_interval: Duration::from_millis(ms),
        }
    }

    #[test]
    fn a_full_bucket_lets_the_burst_through_then_refuses() {
        let s = spec(3, 1, 1000);
        let t0 = Instant::now();
        let mut b = BucketState::full(&s, t0);
        let remaining: Vec<u32> = (0..3).map(|_| b.take(&s, t0).remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = b.take(&s, t0 + Duration::from_millis(250));
        assert!(!refused.allowed);
        assert_eq!(refused.limit, 3);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.reset, Duration::from_millis(750));
        assert_eq!(refused.reset_seconds(), 1);
    }

    #[test]
    fn each_fill_adds_its_tokens_up_to_the_size() {
        let s = spec(5, 2, 100);
        let t0 = Instant::now();
        let mut b = BucketState::full(&s, t0);
        for _ in 0..5 {
            assert!(b.take(&s, t0).allowed);
        }
        assert!(!b.take(&s, t0 + Duration::from_millis(99)).allowed);
        // One fill: two tokens.
        let at = t0 + Duration::from_millis(100);
        assert!(b.take(&s, at).allowed);
        assert!(b.take(&s, at).allowed);
        assert!(!b.take(&s, at).allowed);
        // Ten quiet fills: full again, never above the size.
        let later = t0 + Duration::from_millis(1100);
        let v = b.take(&s, later);
        assert!(v.allowed);
        assert_eq!(v.remaining, 4);
        assert_eq!(v.reset, Duration::from_millis(100));
    }

    #[test]
    fn fills_follow_the_interval_grid_not_the_last_request() {
        let s = spec(1, 1, 1000);
        let t0 = Instant::now();
        let mut b = BucketState::full(&s, t0);
        assert!(b.take(&s, t0 + Duration::from_millis(900)).allowed);
        // The next fill is at 1 s, 100 ms later, not 1 s after the last request.
        let v = b.take(&s, t0 + Duration::from_millis(950));
        assert!(!v.allowed);
        assert_eq!(v.reset, Duration::from_millis(50));
        assert!(b.take(&s, t0 + Duration::from_millis(1000)).allowed);
    }

    #[test]
    fn a_clock_that_goes_back_fills_nothing() {
        let s = spec(1, 1, 10);
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = BucketState::full(&s, t0);
        assert!(b.take(&s, t0).allowed);
        assert!(!b.take(&s, t0 - Duration::from_secs(5)).allowed);
    }

    #[test]
    fn a_shared_bucket_counts_across_callers() {
        let b = std::sync::Arc::new(Bucket::new(spec(100, 1, 3_600_000), Instant::now()));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    (0..50).filter(|_| b.take(Instant::now()).allowed).count()
                })
            })
            .collect();
        let allowed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(allowed, 100);
    }
}
