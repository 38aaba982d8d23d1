//! The `Balancer` contract, for every policy.

use std::sync::Arc;
use std::thread;

use super::test_util::endpoints;
use super::*;

const ALL: [Policy; 5] = [
    Policy::RoundRobin,
    Policy::LeastRequest,
    Policy::Random,
    Policy::RingHash,
    Policy::Maglev,
];

fn balancer(policy: Policy, weights: &[u32]) -> Balancer {
    Balancer::with_seed(policy, endpoints(weights), 0x5eed)
}

#[test]
fn no_endpoints_gives_none() {
    for policy in ALL {
        let b = Balancer::new(policy, Vec::new());
        assert_eq!(b.pick(None, &[]), None, "{policy:?}");
        assert_eq!(b.pick(Some(7), &[0]), None, "{policy:?}");
    }
}

#[test]
fn a_single_endpoint_is_always_picked() {
    for policy in ALL {
        let b = Balancer::new(policy, endpoints(&[5]));
        for key in [None, Some(1), Some(u64::MAX)] {
            assert_eq!(b.pick(key, &[]), Some(0), "{policy:?}");
            assert_eq!(
                b.pick(key, &[0]),
                Some(0),
                "{policy:?} with its only endpoint tried"
            );
        }
    }
}

#[test]
fn exclusion_is_honoured_until_every_endpoint_is_tried() {
    for policy in ALL {
        let b = balancer(policy, &[1, 2, 1]);
        for i in 0..1_000u64 {
            let key = Some(hash_key(&i.to_le_bytes()));
            assert_eq!(b.pick(key, &[0, 1]), Some(2), "{policy:?}");
            assert_eq!(b.pick(None, &[2, 0]), Some(1), "{policy:?}");
            let p = b.pick(key, &[1]).unwrap();
            assert_ne!(p, 1, "{policy:?}");
            // Everything tried (repeats included, stray indexes ignored): still an endpoint.
            assert!(b.pick(key, &[0, 1, 2, 1, 9]).unwrap() < 3, "{policy:?}");
        }
    }
}

#[test]
fn hash_policies_are_sticky_and_fall_back_to_random_without_a_key() {
    for policy in [Policy::RingHash, Policy::Maglev] {
        let b = balancer(policy, &[1; 4]);
        let key = Some(hash_key(b"user-42"));
        let first = b.pick(key, &[]);
        assert!((0..100).all(|_| b.pick(key, &[]) == first), "{policy:?}");
        let mut seen = [0usize; 4];
        for _ in 0..4_000 {
            seen[b.pick(None, &[]).unwrap()] += 1;
        }
        assert!(
            seen.iter().all(|&n| (700..1_300).contains(&n)),
            "{policy:?}: {seen:?}"
        );
    }
}

#[test]
fn every_policy_follows_weights_1_to_3() {
    for policy in ALL {
        let b = balancer(policy, &[1, 3]);
        let mut light = 0;
        for i in 0..40_000u64 {
            // Distinct keys for the hash policies; the others ignore them.
            if b.pick(Some(hash_key(&i.to_le_bytes())), &[]) == Some(0) {
                light += 1;
            }
        }
        let share = f64::from(light) / 40_000.0;
        assert!((share - 0.25).abs() < 0.03, "{policy:?}: {share}");
    }
}

#[test]
fn a_new_balancer_starts_round_robin_anywhere() {
    // Proxies sharing a list must not all send their first request to its first endpoint.
    let first: Vec<usize> = (0..64)
        .map(|_| {
            Balancer::new(Policy::RoundRobin, endpoints(&[1; 8]))
                .pick(None, &[])
                .unwrap()
        })
        .collect();
    assert!(first.iter().any(|&i| i != first[0]), "{first:?}");
}

#[test]
fn concurrent_round_robin_picks_keep_exact_shares() {
    let b = Arc::new(balancer(Policy::RoundRobin, &[1, 2, 1]));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let b = Arc::clone(&b);
            thread::spawn(move || {
                let mut counts = [0usize; 3];
                for _ in 0..10_000 {
                    counts[b.pick(None, &[]).unwrap()] += 1;
                }
                counts
            })
        })
        .collect();
    let mut total = [0usize; 3];
    for t in threads {
        for (sum, n) in total.iter_mut().zip(t.join().unwrap()) {
            *sum += n;
        }
    }
    // 40,000 picks are exactly 10,000 cycles of the 4-slot schedule, whatever the interleaving.
    assert_eq!(total, [10_000, 20_000, 10_000]);
}

#[test]
fn concurrent_picks_with_requests_in_flight() {
    for policy in ALL {
        let b = Arc::new(balancer(policy, &[1, 1, 2, 1]));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let b = Arc::clone(&b);
                thread::spawn(move || {
                    let mut guards = Vec::new();
                    for i in 0..5_000u64 {
                        let key = Some(hash_key(&(t * 5_000 + i).to_le_bytes()));
                        let index = b.pick(key, &[]).unwrap();
                        guards.push(b.endpoints()[index].start_request());
                        if guards.len() > 8 {
                            drop(guards.remove(0));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            b.endpoints().iter().all(|e| e.active_requests() == 0),
            "{policy:?}"
        );
    }
}

#[test]
fn least_request_prefers_the_idle_endpoint() {
    let b = balancer(Policy::LeastRequest, &[1, 1]);
    let _busy: Vec<_> = (0..10).map(|_| b.endpoints()[0].start_request()).collect();
    assert!((0..1_000).all(|_| b.pick(None, &[]) == Some(1)));
}
