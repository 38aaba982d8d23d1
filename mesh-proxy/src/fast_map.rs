//! The map type for lookups made on every request or connection (clusters and route tables
//! by name, hosts, pooled connections, label sets). Its keys come from config or from the
//! proxy itself, so foldhash, seeded per process and a fraction of SipHash's instructions,
//! is enough.

pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// An empty map with room for `capacity` entries.
pub fn with_capacity<K, V>(capacity: usize) -> FastMap<K, V> {
    FastMap::with_capacity_and_hasher(capacity, Default::default())
}
