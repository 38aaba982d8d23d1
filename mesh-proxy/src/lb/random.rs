//! RANDOM: a weighted random draw.

use super::exclude::Exclude;
use super::rng::Rng;
use super::weights::Weights;

/// Needs at least one endpoint that `exclude` allows.
pub(super) fn pick(weights: &Weights, rng: &Rng, exclude: Exclude<'_>) -> usize {
    if exclude.is_empty() {
        return weights.sample(rng.next_u64());
    }
    weights
        .sample_where(rng, |i| exclude.contains(i))
        .unwrap_or_else(|| weights.sample(rng.next_u64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(weights: &[u64], exclude: &[usize], picks: usize) -> Vec<usize> {
        let w = Weights::new(weights.iter().copied());
        let rng = Rng::new(11);
        let mut counts = vec![0; weights.len()];
        for _ in 0..picks {
            counts[pick(&w, &rng, Exclude::new(exclude, weights.len()))] += 1;
        }
        counts
    }

    #[test]
    fn equal_weights_are_roughly_uniform() {
        let c = counts(&[1, 1, 1, 1, 1], &[], 50_000);
        assert!(c.iter().all(|n| (9_000..11_000).contains(n)), "{c:?}");
    }

    #[test]
    fn weights_1_to_3_split_a_quarter_three_quarters() {
        let c = counts(&[1, 3], &[], 40_000);
        assert!((9_000..11_000).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn excluded_endpoints_are_never_drawn() {
        let c = counts(&[1, 3, 2], &[1], 30_000);
        assert_eq!(c[1], 0);
        assert!(
            (8_500..11_500).contains(&c[0]),
            "weights 1:2 among the rest: {c:?}"
        );
    }
}
