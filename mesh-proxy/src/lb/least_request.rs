//! LEAST_REQUEST: power of two choices (Envoy's default choice_count 2).
//!
//! Two distinct endpoints are drawn in proportion to weight and the one with fewer requests in
//! flight per unit of weight wins; a tie keeps the first draw. Envoy's weight / (active + 1)
//! would hand every tie between idle endpoints to the heavier one, so a quiet cluster with
//! weights 1:3 would send it all its traffic; comparing active / weight and letting the weighted
//! draw break ties keeps idle traffic proportional to weight and busy traffic load-aware.

use std::sync::Arc;

use super::endpoint::Endpoint;
use super::exclude::Exclude;
use super::rng::Rng;
use super::weights::Weights;

/// Needs at least two endpoints, and at least one that `exclude` allows.
pub(super) fn pick(
    endpoints: &[Arc<Endpoint>],
    weights: &Weights,
    rng: &Rng,
    exclude: Exclude<'_>,
) -> usize {
    let (first, second) = if exclude.is_empty() {
        let first = weights.sample(rng.next_u64());
        (first, Some(weights.sample_skipping(rng.next_u64(), first)))
    } else {
        let first = weights
            .sample_where(rng, |i| exclude.contains(i))
            .unwrap_or_else(|| weights.sample(rng.next_u64()));
        let second = weights.sample_where(rng, |i| i == first || exclude.contains(i));
        (first, second)
    };
    match second {
        Some(second) if less_loaded(weights, endpoints, second, first) => second,
        _ => first,
    }
}

/// Whether `a` carries strictly fewer requests per unit of weight than `b`.
fn less_loaded(weights: &Weights, endpoints: &[Arc<Endpoint>], a: usize, b: usize) -> bool {
    let load = |i: usize, other: usize| {
        u128::from(endpoints[i].active_requests() as u64) * u128::from(weights.weight(other))
    };
    load(a, b) < load(b, a)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::endpoints;
    use super::*;

    fn setup(w: &[u32]) -> (Vec<Arc<Endpoint>>, Weights) {
        let eps = endpoints(w);
        let weights = Weights::new(eps.iter().map(|e| e.effective_weight()));
        (eps, weights)
    }

    fn counts(eps: &[Arc<Endpoint>], weights: &Weights, rng: &Rng, picks: usize) -> Vec<usize> {
        let mut counts = vec![0; eps.len()];
        for _ in 0..picks {
            counts[pick(eps, weights, rng, Exclude::new(&[], eps.len()))] += 1;
        }
        counts
    }

    #[test]
    fn two_endpoints_always_pick_the_idle_one() {
        // The two choices are distinct, so with two endpoints both are always compared.
        let (eps, weights) = setup(&[1, 1]);
        let _busy: Vec<_> = (0..10).map(|_| eps[0].start_request()).collect();
        assert_eq!(counts(&eps, &weights, &Rng::new(1), 10_000), [0, 10_000]);
    }

    #[test]
    fn the_idle_endpoint_wins_every_pair_it_is_drawn_in() {
        // One idle among four busy endpoints is in 1 - C(3,2)/C(4,2) = 1/2 of the pairs, and the
        // busiest endpoint loses every pair, so it is never chosen.
        let (eps, weights) = setup(&[1, 1, 1, 1]);
        let mut guards = Vec::new();
        for (i, load) in [(0, 5), (1, 5), (2, 9)] {
            guards.extend((0..load).map(|_| eps[i].start_request()));
        }
        let c = counts(&eps, &weights, &Rng::new(2), 40_000);
        assert_eq!(c[2], 0, "{c:?}");
        assert!((19_000..21_000).contains(&c[3]), "{c:?}");
    }

    #[test]
    fn idle_endpoints_share_traffic_by_weight() {
        let (eps, weights) = setup(&[1, 3]);
        let c = counts(&eps, &weights, &Rng::new(3), 40_000);
        assert!((9_000..11_000).contains(&c[0]), "{c:?}");

        let (eps, weights) = setup(&[1, 1, 1]);
        let c = counts(&eps, &weights, &Rng::new(4), 30_000);
        assert!(c.iter().all(|n| (9_000..11_000).contains(n)), "{c:?}");
    }

    #[test]
    fn load_is_compared_per_unit_of_weight() {
        // 2 in flight on weight 4 is a lighter load than 1 on weight 1.
        let (eps, weights) = setup(&[4, 1]);
        let _a: Vec<_> = (0..2).map(|_| eps[0].start_request()).collect();
        let _b = eps[1].start_request();
        assert_eq!(counts(&eps, &weights, &Rng::new(5), 1_000), [1_000, 0]);
    }

    #[test]
    fn excluded_endpoints_are_not_drawn() {
        let (eps, weights) = setup(&[1, 1, 1]);
        let _busy: Vec<_> = (0..3).map(|_| eps[2].start_request()).collect();
        let rng = Rng::new(6);
        for _ in 0..1_000 {
            // Only the busy endpoint is left, so it is chosen.
            assert_eq!(pick(&eps, &weights, &rng, Exclude::new(&[0, 1], 3)), 2);
            assert_ne!(pick(&eps, &weights, &rng, Exclude::new(&[1], 3)), 1);
        }
    }
}
