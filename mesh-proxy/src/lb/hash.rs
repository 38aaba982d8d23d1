//! The hash of request keys and of endpoint names on the ring and the Maglev table.
//!
//! It must never change between releases or differ between processes: a client stays on its
//! endpoint only if every proxy, before and after a restart, hashes its key the same way.
//! FNV-1a reads the bytes; a murmur3 finalizer spreads every input bit over all output bits,
//! which FNV alone does poorly for short keys that differ only in their last byte.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hash of a request key (header value, cookie, query parameter, source IP) as used by pick().
pub fn hash_key(bytes: &[u8]) -> u64 {
    hash_seeded(bytes, 0)
}

/// Independent hash functions for the same bytes (Maglev needs two per endpoint).
pub(super) fn hash_seeded(bytes: &[u8], seed: u64) -> u64 {
    let mut h = FNV_OFFSET ^ mix(seed);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    mix(h)
}

/// murmur3's fmix64: a bijection with full avalanche.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_stable_across_releases() {
        // Pinned values: changing them remaps every consistent-hash client in a fleet.
        assert_eq!(hash_key(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(hash_key(b"alice"), 0x3507_d047_a67c_08f4);
    }

    #[test]
    fn seeds_give_independent_hashes() {
        assert_eq!(hash_seeded(b"x", 0), hash_key(b"x"));
        assert_ne!(hash_seeded(b"x", 1), hash_key(b"x"));
        assert_ne!(hash_key(b"user-1"), hash_key(b"user-2"));
    }

    #[test]
    fn spreads_similar_keys_evenly() {
        // Keys that differ only in their last characters must still fill every bucket, in the
        // high bits (ring order) and the low bits (table slot) alike.
        let mut high = [0u32; 16];
        let mut low = [0u32; 16];
        for i in 0..16_000 {
            let h = hash_key(format!("user-{i}").as_bytes());
            high[(h >> 60) as usize] += 1;
            low[(h & 15) as usize] += 1;
        }
        for count in high.iter().chain(&low) {
            assert!((800..1200).contains(count), "{high:?} {low:?}");
        }
    }
}
