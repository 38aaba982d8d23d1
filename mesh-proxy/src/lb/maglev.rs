//! MAGLEV: Google's Maglev lookup table (Envoy's default size 65537, a prime), weighted.
//!
//! Every endpoint walks its own permutation of the slots, `offset + j * skip`, derived from its
//! address; endpoints take turns claiming their next free slot, a heavier endpoint more turns
//! per round. A lookup is one index. Removing an endpoint frees its slots and shifts only a
//! few others, so a little more than its own keys move, unlike a ring where none do.

use std::sync::Arc;

use super::endpoint::Endpoint;
use super::exclude::Exclude;
use super::hash::hash_seeded;

/// Envoy's default table size; must be prime so every skip walks all slots.
const TABLE_SIZE: u64 = 65_537;
const EMPTY: u32 = u32::MAX;

pub(super) struct Maglev {
    table: Vec<u32>,
}

/// One endpoint's progress through its permutation while the table fills.
struct Builder {
    endpoint: u32,
    weight: u64,
    offset: u64,
    skip: u64,
    next: u64,
    /// Turns are taken while `round * weight` has reached this (Envoy's target_weight).
    target: u64,
}

impl Builder {
    fn slot(&self) -> usize {
        ((self.offset + self.skip * self.next) % TABLE_SIZE) as usize
    }
}

impl Maglev {
    pub(super) fn new(endpoints: &[Arc<Endpoint>]) -> Self {
        let mut builders: Vec<Builder> = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let name = e.address.to_string();
                Builder {
                    endpoint: u32::try_from(i).expect("fewer than 2^32 endpoints"),
                    weight: e.effective_weight(),
                    offset: hash_seeded(name.as_bytes(), 0) % TABLE_SIZE,
                    skip: hash_seeded(name.as_bytes(), 1) % (TABLE_SIZE - 1) + 1,
                    next: 0,
                    target: 0,
                }
            })
            .collect();
        // Turn order by address, so the table does not depend on the list's order.
        builders.sort_by_key(|b| endpoints[b.endpoint as usize].address);
        let max_weight = builders.iter().map(|b| b.weight).max().unwrap_or(1);

        let mut table = vec![EMPTY; TABLE_SIZE as usize];
        let mut filled = 0;
        // The heaviest endpoint takes a turn every round, so each round fills at least one slot.
        let mut round = 1u64;
        while filled < table.len() && !builders.is_empty() {
            for b in &mut builders {
                if filled == table.len() {
                    break;
                }
                if round * b.weight < b.target {
                    continue;
                }
                b.target += max_weight;
                while table[b.slot()] != EMPTY {
                    b.next += 1;
                }
                table[b.slot()] = b.endpoint;
                b.next += 1;
                filled += 1;
            }
            round += 1;
        }
        Self { table }
    }

    /// Needs at least one endpoint, and one that `exclude` allows.
    pub(super) fn pick(&self, hash: u64, exclude: Exclude<'_>) -> usize {
        let len = self.table.len();
        let at = (hash % len as u64) as usize;
        // A retry walks on to the next slot of another allowed endpoint; slots interleave
        // endpoints, so the walk is short.
        (0..len)
            .map(|step| self.table[(at + step) % len] as usize)
            .find(|&i| !exclude.contains(i))
            .unwrap_or(self.table[at] as usize)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::super::hash::hash_key;
    use super::super::test_util::endpoints;
    use super::*;

    fn keys() -> impl Iterator<Item = u64> {
        (0..10_000).map(|i| hash_key(format!("session-{i}").as_bytes()))
    }

    fn owners(eps: &[Arc<Endpoint>]) -> Vec<SocketAddr> {
        let maglev = Maglev::new(eps);
        keys()
            .map(|k| eps[maglev.pick(k, Exclude::new(&[], eps.len()))].address)
            .collect()
    }

    fn slots(maglev: &Maglev, endpoint: usize) -> usize {
        maglev
            .table
            .iter()
            .filter(|&&e| e as usize == endpoint)
            .count()
    }

    #[test]
    fn equal_weights_share_the_table_within_one_slot() {
        let eps = endpoints(&[1; 7]);
        let maglev = Maglev::new(&eps);
        assert_eq!(maglev.table.len(), 65_537);
        assert!(!maglev.table.contains(&EMPTY));
        let counts: Vec<usize> = (0..7).map(|i| slots(&maglev, i)).collect();
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 1, "{counts:?}");
    }

    #[test]
    fn weights_scale_the_share_of_the_table() {
        let maglev = Maglev::new(&endpoints(&[1, 3]));
        let light = slots(&maglev, 0) as f64 / 65_537.0;
        assert!((light - 0.25).abs() < 0.01, "{light}");
    }

    #[test]
    fn the_same_key_always_maps_to_the_same_endpoint() {
        let eps = endpoints(&[1; 5]);
        assert_eq!(owners(&eps), owners(&eps));
        let mut reversed = eps.clone();
        reversed.reverse();
        assert_eq!(owners(&eps), owners(&reversed));
    }

    #[test]
    fn removing_an_endpoint_moves_few_other_keys() {
        let eps = endpoints(&[1; 10]);
        let before = owners(&eps);
        let removed = eps[3].address;
        let after = owners(&[&eps[..3], &eps[4..]].concat());
        let (mut own, mut others) = (0, 0);
        for (b, a) in before.iter().zip(&after) {
            if *b == removed {
                own += 1;
            } else if a != b {
                others += 1;
            }
        }
        assert!(
            (700..1_300).contains(&own),
            "{own} keys were on the removed endpoint"
        );
        // Maglev trades a little disruption for balance: some other keys move (about 0.3% here).
        assert!(
            others * 100 < (10_000 - own) * 3,
            "{others} of {} other keys moved",
            10_000 - own
        );
    }

    #[test]
    fn retries_walk_to_the_next_distinct_endpoint() {
        let eps = endpoints(&[1; 4]);
        let maglev = Maglev::new(&eps);
        for key in keys().take(1_000) {
            let first = maglev.pick(key, Exclude::new(&[], 4));
            let second = maglev.pick(key, Exclude::new(&[first], 4));
            assert_ne!(first, second);
            let third = maglev.pick(key, Exclude::new(&[first, second], 4));
            assert!(third != first && third != second);
            assert_eq!(maglev.pick(key, Exclude::new(&[3, 2, 1, 0], 4)), first);
        }
    }
}
