//! Weighted sampling over the endpoint list, shared by RANDOM and LEAST_REQUEST.

use super::rng::{Rng, below};

/// Plain draws tried before the linear pass when some endpoints are excluded.
const QUICK_DRAWS: usize = 4;

/// Prefix sums of the endpoint weights: a draw is a binary search, with no allocation.
pub(super) struct Weights {
    /// `cumulative[i]` is the sum of the weights of endpoints `0..=i`.
    cumulative: Vec<u64>,
    /// Equal weights skip the search.
    uniform: bool,
}

impl Weights {
    pub(super) fn new(weights: impl IntoIterator<Item = u64>) -> Self {
        let mut sum = 0;
        let cumulative: Vec<u64> = weights
            .into_iter()
            .map(|w| {
                sum += w.max(1);
                sum
            })
            .collect();
        let uniform = cumulative
            .iter()
            .enumerate()
            .all(|(i, &c)| c == cumulative[0] * (i as u64 + 1));
        Self {
            cumulative,
            uniform,
        }
    }

    fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    fn start(&self, i: usize) -> u64 {
        if i == 0 { 0 } else { self.cumulative[i - 1] }
    }

    pub(super) fn weight(&self, i: usize) -> u64 {
        self.cumulative[i] - self.start(i)
    }

    /// The endpoint owning point `x` of `0..total`.
    fn owner(&self, x: u64) -> usize {
        self.cumulative.partition_point(|&c| c <= x)
    }

    /// An index drawn in proportion to weight; needs at least one endpoint.
    pub(super) fn sample(&self, r: u64) -> usize {
        let n = self.cumulative.len() as u64;
        if self.uniform {
            return below(r, n) as usize;
        }
        self.owner(below(r, self.total()))
    }

    /// Like `sample`, but never `skip`: draws over the total without its weight and steps over
    /// its range, so it stays exact and O(log n). Needs at least two endpoints.
    pub(super) fn sample_skipping(&self, r: u64, skip: usize) -> usize {
        let x = below(r, self.total() - self.weight(skip));
        if x < self.start(skip) {
            self.owner(x)
        } else {
            self.owner(x + self.weight(skip))
        }
    }

    /// Like `sample`, among the indexes `skip` allows; None when it allows none. A few plain
    /// draws usually land on an allowed index; the linear pass runs only when they all miss.
    /// Both follow the weights of the allowed indexes, so their mix does too.
    pub(super) fn sample_where(&self, rng: &Rng, skip: impl Fn(usize) -> bool) -> Option<usize> {
        for _ in 0..QUICK_DRAWS {
            let i = self.sample(rng.next_u64());
            if !skip(i) {
                return Some(i);
            }
        }
        self.sample_filtered(rng.next_u64(), skip)
    }

    /// The exact linear draw among the allowed indexes.
    fn sample_filtered(&self, r: u64, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let allowed = (0..self.cumulative.len()).filter(|&i| !skip(i));
        let total: u64 = allowed.clone().map(|i| self.weight(i)).sum();
        if total == 0 {
            return None;
        }
        let mut x = below(r, total);
        for i in allowed {
            let w = self.weight(i);
            if x < w {
                return Some(i);
            }
            x -= w;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The draw `r` that lands on point `x` of `0..total`.
    fn at(x: u64, total: u64) -> u64 {
        ((u128::from(x) << 64).div_ceil(u128::from(total))) as u64
    }

    #[test]
    fn sample_maps_each_point_to_its_owner() {
        let w = Weights::new([1, 3, 2]);
        assert!(!w.uniform);
        let owners: Vec<usize> = (0..6).map(|x| w.sample(at(x, 6))).collect();
        assert_eq!(owners, [0, 1, 1, 1, 2, 2]);
        assert_eq!(w.sample(u64::MAX), 2);
    }

    #[test]
    fn zero_weights_count_as_one_and_equal_weights_are_uniform() {
        let w = Weights::new([0, 1, 1]);
        assert!(w.uniform);
        assert_eq!(w.weight(0), 1);
        assert_eq!(
            (0..3).map(|x| w.sample(at(x, 3))).collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }

    #[test]
    fn sample_skipping_never_returns_the_skipped_index() {
        let w = Weights::new([1, 3, 2]);
        // Without endpoint 1 the points are 0 (weight 1) then 2 (weight 2).
        let owners: Vec<usize> = (0..3).map(|x| w.sample_skipping(at(x, 3), 1)).collect();
        assert_eq!(owners, [0, 2, 2]);
        let owners: Vec<usize> = (0..5).map(|x| w.sample_skipping(at(x, 5), 0)).collect();
        assert_eq!(owners, [1, 1, 1, 2, 2]);
        let owners: Vec<usize> = (0..4).map(|x| w.sample_skipping(at(x, 4), 2)).collect();
        assert_eq!(owners, [0, 1, 1, 1]);
    }

    #[test]
    fn sample_filtered_keeps_the_weights_of_the_allowed() {
        let w = Weights::new([1, 3, 2]);
        let owners: Vec<_> = (0..3)
            .map(|x| w.sample_filtered(at(x, 3), |i| i == 1))
            .collect();
        assert_eq!(owners, [Some(0), Some(2), Some(2)]);
        assert_eq!(w.sample_filtered(0, |_| true), None);
    }

    #[test]
    fn sample_where_follows_the_weights_of_the_allowed() {
        let w = Weights::new([1, 3, 2, 1_000]);
        let rng = Rng::new(9);
        let mut counts = [0usize; 4];
        for _ in 0..30_000 {
            // The heavy endpoint makes most quick draws miss, so both paths are exercised.
            counts[w.sample_where(&rng, |i| i == 3).unwrap()] += 1;
        }
        assert_eq!(counts[3], 0);
        assert!((4_000..6_000).contains(&counts[0]), "{counts:?}");
        assert!((8_500..11_500).contains(&counts[2]), "{counts:?}");
        assert_eq!(w.sample_where(&rng, |_| true), None);
    }
}
