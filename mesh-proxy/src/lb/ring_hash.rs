//! RING_HASH: Karger's consistent hash ring (Envoy's ketama-style ring, minimum size 1024).
//!
//! Each endpoint owns points `hash("<address>_<k>")`; a key belongs to the first point at or
//! after its hash. An endpoint's point count depends only on its own weight and on a power of
//! two derived from the total weight, so removing an endpoint (while that power stays put, as
//! it does for 10 -> 9 equal endpoints) drops its points and moves no other key.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use super::endpoint::Endpoint;
use super::exclude::Exclude;
use super::hash::hash_key;

/// Envoy's default minimum_ring_size.
const MIN_RING_SIZE: u64 = 1024;
/// Envoy allows 8M; a smaller cap bounds memory per subset (12 bytes a point).
const MAX_RING_SIZE: u64 = 1 << 20;

pub(super) struct Ring {
    /// Sorted point hashes, searched apart from their owners to keep the search cache-dense.
    hashes: Vec<u64>,
    owners: Vec<u32>,
}

impl Ring {
    pub(super) fn new(endpoints: &[Arc<Endpoint>]) -> Self {
        let weights: Vec<u64> = endpoints.iter().map(|e| e.effective_weight()).collect();
        let total: u64 = weights.iter().sum();
        let mut points: Vec<(u64, SocketAddr, u32)> = Vec::new();
        let mut name = String::new();
        for (i, (e, &w)) in endpoints.iter().zip(&weights).enumerate() {
            let owner = u32::try_from(i).expect("fewer than 2^32 endpoints");
            for k in 0..point_count(w, total) {
                name.clear();
                let _ = write!(name, "{}_{k}", e.address);
                points.push((hash_key(name.as_bytes()), e.address, owner));
            }
        }
        // The address breaks hash ties so the ring does not depend on the list's order.
        points.sort_unstable();
        Self {
            hashes: points.iter().map(|p| p.0).collect(),
            owners: points.iter().map(|p| p.2).collect(),
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Needs at least one endpoint that `exclude` allows.
    pub(super) fn pick(&self, hash: u64, exclude: Exclude<'_>) -> usize {
        let len = self.hashes.len();
        let at = self.hashes.partition_point(|&h| h < hash) % len;
        // A retry walks on to the next distinct allowed endpoint, the same one for every retry
        // of the same key.
        (0..len)
            .map(|step| self.owners[(at + step) % len] as usize)
            .find(|&i| !exclude.contains(i))
            .unwrap_or(self.owners[at] as usize)
    }
}

/// Points of an endpoint of weight `w` out of `total`: `w` times a power of two, chosen so the
/// ring has at least MIN_RING_SIZE points and at most about MAX_RING_SIZE; at least one.
fn point_count(w: u64, total: u64) -> u64 {
    if total >= MAX_RING_SIZE {
        let shift = (total / MAX_RING_SIZE).ilog2() + 1;
        return w.div_ceil(1 << shift).max(1);
    }
    w * MIN_RING_SIZE.div_ceil(total).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::super::hash::hash_key;
    use super::super::test_util::endpoints;
    use super::*;

    fn keys() -> impl Iterator<Item = u64> {
        (0..10_000).map(|i| hash_key(format!("session-{i}").as_bytes()))
    }

    fn owners(eps: &[Arc<Endpoint>]) -> Vec<SocketAddr> {
        let ring = Ring::new(eps);
        keys()
            .map(|k| eps[ring.pick(k, Exclude::new(&[], eps.len()))].address)
            .collect()
    }

    #[test]
    fn ring_has_at_least_the_minimum_size_scaled_by_weight() {
        assert_eq!(Ring::new(&endpoints(&[1; 10])).len(), 10 * 128);
        assert_eq!(Ring::new(&endpoints(&[1, 3])).len(), 1024);
        assert_eq!(Ring::new(&endpoints(&[1; 3000])).len(), 3000);
        assert_eq!(point_count(5, 3 * MAX_RING_SIZE), 2);
        assert_eq!(point_count(1, 3 * MAX_RING_SIZE), 1);
    }

    #[test]
    fn the_same_key_always_maps_to_the_same_endpoint() {
        let eps = endpoints(&[1; 5]);
        assert_eq!(owners(&eps), owners(&eps));
        // The list's order does not matter, only the addresses.
        let mut reversed = eps.clone();
        reversed.reverse();
        assert_eq!(owners(&eps), owners(&reversed));
    }

    #[test]
    fn keys_spread_over_endpoints_by_weight() {
        let eps = endpoints(&[1; 10]);
        let owners = owners(&eps);
        for e in &eps {
            let n = owners.iter().filter(|&&a| a == e.address).count();
            assert!((700..1_300).contains(&n), "{}: {n}", e.address);
        }
        let eps = endpoints(&[1, 3]);
        let light = self::owners(&eps)
            .iter()
            .filter(|&&a| a == eps[0].address)
            .count();
        assert!((2_000..3_000).contains(&light), "{light}");
    }

    #[test]
    fn removing_an_endpoint_only_moves_its_own_keys() {
        let eps = endpoints(&[1; 10]);
        let before = owners(&eps);
        let removed = eps[3].address;
        let after = owners(&[&eps[..3], &eps[4..]].concat());
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if *b == removed {
                moved += 1;
            } else {
                assert_eq!(a, b, "a key that was not on the removed endpoint moved");
            }
        }
        assert!((500..1_500).contains(&moved), "{moved} of 10000 keys moved");
    }

    #[test]
    fn retries_walk_to_the_next_distinct_endpoint() {
        let eps = endpoints(&[1; 4]);
        let ring = Ring::new(&eps);
        for key in keys().take(1_000) {
            let first = ring.pick(key, Exclude::new(&[], 4));
            let second = ring.pick(key, Exclude::new(&[first], 4));
            assert_ne!(first, second);
            assert_eq!(
                second,
                ring.pick(key, Exclude::new(&[first], 4)),
                "retries are sticky too"
            );
            let third = ring.pick(key, Exclude::new(&[first, second], 4));
            assert!(third != first && third != second);
            // Once all are tried the key's own endpoint comes back.
            assert_eq!(ring.pick(key, Exclude::new(&[0, 1, 2, 3], 4)), first);
        }
    }
}
