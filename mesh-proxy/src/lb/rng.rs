//! A small lock-free random generator, one per balancer.
//!
//! wyrand over an atomic counter: every pick through `&self` from any thread advances the state
//! with one `fetch_add`, so there is no lock and no thread-local setup, and a fixed seed makes
//! tests reproducible.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fast_rand::{INCREMENT, mix, step};

pub(super) struct Rng {
    state: AtomicU64,
}

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// A per-process random seed, so proxies do not all start in step.
    pub(super) fn entropy_seed() -> u64 {
        RandomState::new().hash_one(0x6c62_u32)
    }

    pub(super) fn next_u64(&self) -> u64 {
        let before = self.state.fetch_add(INCREMENT, Ordering::Relaxed);
        mix(step(before))
    }
}

/// Maps a uniform `r` onto `0..bound` by multiplication: no division, bias below 2^-32.
pub(super) fn below(r: u64, bound: u64) -> u64 {
    ((u128::from(r) * u128::from(bound)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let a = Rng::new(42);
        let b = Rng::new(42);
        let c = Rng::new(43);
        let seq: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        assert_eq!(seq, (0..8).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(seq, (0..8).map(|_| c.next_u64()).collect::<Vec<_>>());
    }

    #[test]
    fn below_stays_in_range_and_is_uniform() {
        let rng = Rng::new(7);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            let v = below(rng.next_u64(), 10);
            counts[v as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        assert_eq!(below(u64::MAX, 10), 9);
        assert_eq!(below(0, 10), 0);
    }
}
