//! ROUND_ROBIN: a precomputed weighted schedule walked by one atomic cursor.
//!
//! The schedule is built once per endpoint list, so a pick is one `fetch_add` and an index:
//! no lock, no allocation, exact shares over every cycle from any number of threads.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::exclude::Exclude;

/// Bounds the schedule's memory when weights are large and coprime; shares are then rounded to
/// 1/16384 of the traffic, with every endpoint keeping at least one slot.
const MAX_SCHEDULE: u64 = 1 << 14;

pub(super) struct RoundRobin {
    schedule: Vec<u32>,
    cursor: AtomicUsize,
}

impl RoundRobin {
    /// `start` offsets the cursor so proxies that share a list do not all hit its first endpoint.
    pub(super) fn new(weights: &[u64], start: usize) -> Self {
        let schedule = schedule(&reduce(weights));
        let cursor = AtomicUsize::new(start % schedule.len().max(1));
        Self { schedule, cursor }
    }

    #[cfg(test)]
    pub(super) fn cycle_len(&self) -> usize {
        self.schedule.len()
    }

    pub(super) fn pick(&self, exclude: Exclude<'_>) -> usize {
        let len = self.schedule.len();
        let at = self.cursor.fetch_add(1, Ordering::Relaxed);
        // A retry takes the next allowed slot without advancing the shared cursor further.
        (0..len)
            .map(|step| self.schedule[at.wrapping_add(step) % len] as usize)
            .find(|&i| !exclude.contains(i))
            .unwrap_or(self.schedule[at % len] as usize)
    }
}

/// Divides the weights by their gcd (equal weights give a schedule of one slot per endpoint)
/// and scales them down past `MAX_SCHEDULE`.
fn reduce(weights: &[u64]) -> Vec<u64> {
    let g = weights.iter().fold(0, |g, &w| gcd(g, w.max(1)));
    let reduced: Vec<u64> = weights.iter().map(|&w| w.max(1) / g).collect();
    let total: u64 = reduced.iter().sum();
    let cap = MAX_SCHEDULE.max(weights.len() as u64);
    if total <= cap {
        return reduced;
    }
    reduced
        .iter()
        .map(|&w| ((u128::from(w) * u128::from(cap) / u128::from(total)) as u64).max(1))
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Earliest-deadline-first over one cycle: the k-th turn of an endpoint of weight w is due at
/// (k - 1/2) / w. Each endpoint gets exactly w slots, spread evenly instead of in bursts.
fn schedule(weights: &[u64]) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    let mut heap: BinaryHeap<Reverse<Turn>> = (0..weights.len())
        .map(|i| Reverse(Turn::first(i, weights[i])))
        .collect();
    let mut schedule = Vec::with_capacity(total as usize);
    while schedule.len() < total as usize {
        let Some(Reverse(turn)) = heap.pop() else {
            break;
        };
        schedule.push(u32::try_from(turn.endpoint).expect("fewer than 2^32 endpoints"));
        heap.push(Reverse(turn.next()));
    }
    schedule
}

/// A due time (2k - 1) / (2w), compared exactly as a fraction.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Turn {
    numerator: u64,
    denominator: u64,
    endpoint: usize,
}

impl Turn {
    fn first(endpoint: usize, weight: u64) -> Self {
        Self {
            numerator: 1,
            denominator: 2 * weight,
            endpoint,
        }
    }

    fn next(self) -> Self {
        Self {
            numerator: self.numerator + 2,
            ..self
        }
    }
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        let lhs = u128::from(self.numerator) * u128::from(other.denominator);
        let rhs = u128::from(other.numerator) * u128::from(self.denominator);
        lhs.cmp(&rhs).then(self.endpoint.cmp(&other.endpoint))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(rr: &RoundRobin, count: usize) -> Vec<usize> {
        (0..count).map(|_| rr.pick(Exclude::new(&[], 0))).collect()
    }

    fn counts(picks: &[usize], n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| picks.iter().filter(|&&p| p == i).count())
            .collect()
    }

    #[test]
    fn equal_weights_visit_each_endpoint_once_per_cycle() {
        let rr = RoundRobin::new(&[1, 1, 1, 1], 0);
        assert_eq!(rr.cycle_len(), 4);
        assert_eq!(picks(&rr, 8), [0, 1, 2, 3, 0, 1, 2, 3]);
        // Large equal weights reduce to the same schedule.
        assert_eq!(RoundRobin::new(&[100, 100, 100], 0).cycle_len(), 3);
    }

    #[test]
    fn start_offsets_the_cycle() {
        let rr = RoundRobin::new(&[1, 1, 1], 5);
        assert_eq!(picks(&rr, 3), [2, 0, 1]);
    }

    #[test]
    fn weights_give_exact_shares_per_cycle() {
        let rr = RoundRobin::new(&[1, 3], 0);
        assert_eq!(rr.cycle_len(), 4);
        assert_eq!(counts(&picks(&rr, 400), 2), [100, 300]);

        let rr = RoundRobin::new(&[5, 2, 3], 1);
        assert_eq!(counts(&picks(&rr, 10 * 7), 3), [35, 14, 21]);
    }

    #[test]
    fn weighted_turns_are_interleaved() {
        // 2:1 alternates instead of bursting.
        assert_eq!(schedule(&[2, 1]), [0, 1, 0]);
        assert_eq!(schedule(&[1, 3]), [1, 0, 1, 1]);
        // Every prefix of the cycle stays within one turn of the exact share.
        let weights = [7, 3, 1, 5];
        let s = schedule(&weights);
        let total: u64 = weights.iter().sum();
        for len in 1..=s.len() {
            for (i, &w) in weights.iter().enumerate() {
                let got = s[..len].iter().filter(|&&p| p as usize == i).count() as f64;
                let exact = len as f64 * w as f64 / total as f64;
                assert!(
                    (got - exact).abs() <= 1.0,
                    "endpoint {i} after {len}: {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn huge_coprime_weights_are_scaled_into_a_bounded_schedule() {
        let rr = RoundRobin::new(&[1_000_003, 3_000_017, 1], 0);
        assert!(rr.cycle_len() as u64 <= MAX_SCHEDULE + 3);
        let c = counts(&picks(&rr, rr.cycle_len()), 3);
        assert!(c[2] >= 1, "every endpoint keeps a slot: {c:?}");
        let share = c[1] as f64 / (c[0] + c[1]) as f64;
        assert!((share - 0.75).abs() < 0.001, "{c:?}");
    }

    #[test]
    fn retries_take_the_next_allowed_slot() {
        let rr = RoundRobin::new(&[1, 1, 1], 0);
        let tried = [0, 1];
        for _ in 0..6 {
            assert_eq!(rr.pick(Exclude::new(&tried, 3)), 2);
        }
    }
}
