//! Random numbers for per-request draws and ids (route weights, fault and mirror rolls,
//! request, trace and span ids): wyrand over a per-thread state seeded from the OS, a few
//! instructions a number where `rand`'s thread generator (a ChaCha block cipher behind a
//! reference-counted thread local) took about a hundred. Unpredictable enough to spread
//! load and sample traces; never for secrets or keys.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};

/// wyrand's state increment.
pub const INCREMENT: u64 = 0xa076_1d64_78bd_642f;
const MIX: u64 = 0xe703_7ed1_a0b4_28db;

thread_local! {
    // RandomState's keys come from the OS once per thread, then step: every thread starts
    // somewhere else.
    static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0x6d65_7368_u64));
}

/// wyrand's output function for the state `s`.
pub fn mix(s: u64) -> u64 {
    let t = u128::from(s) * u128::from(s ^ MIX);
    ((t >> 64) as u64) ^ (t as u64)
}

/// The next step of a wyrand state.
pub const fn step(s: u64) -> u64 {
    s.wrapping_add(INCREMENT)
}

pub fn u64() -> u64 {
    STATE.with(|state| {
        let s = step(state.get());
        state.set(s);
        mix(s)
    })
}

pub fn u32() -> u32 {
    (u64() >> 32) as u32
}

pub fn u128() -> u128 {
    (u128::from(u64()) << 64) | u128::from(u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_differ_and_fill_their_range() {
        let draws: Vec<u64> = (0..1000).map(|_| u64()).collect();
        let mut unique = draws.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), draws.len());
        // Each of the 64 bits is set in about half the draws.
        for bit in 0..64 {
            let set = draws.iter().filter(|d| *d >> bit & 1 == 1).count();
            assert!(
                (400..600).contains(&set),
                "bit {bit} set {set} times of 1000"
            );
        }
    }

    #[test]
    fn threads_start_apart() {
        let here = u64();
        let there = std::thread::spawn(u64).join().unwrap();
        assert_ne!(here, there);
    }
}
