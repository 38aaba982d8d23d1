//! A bounded map from a name to shared labels: each distinct name is parsed once, and the
//! number of distinct label values (so of series) has a ceiling.

use std::sync::{Arc, RwLock};

use crate::fast_map::FastMap;

#[derive(Debug)]
pub struct Interner<T> {
    map: RwLock<FastMap<Box<str>, Arc<T>>>,
    capacity: usize,
}

impl<T> Interner<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: RwLock::new(FastMap::default()),
            capacity,
        }
    }

    /// The labels of `key`, made by `make` the first time; `None` once `capacity` distinct
    /// keys are held and `key` is not one of them.
    pub fn get_or_insert(&self, key: &str, make: impl FnOnce() -> T) -> Option<Arc<T>> {
        // A poisoned lock only means a panic elsewhere while inserting; the map is intact.
        if let Some(v) = self.map.read().unwrap_or_else(|e| e.into_inner()).get(key) {
            return Some(v.clone());
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = map.get(key) {
            return Some(v.clone());
        }
        if map.len() >= self.capacity {
            return None;
        }
        let v = Arc::new(make());
        map.insert(key.into(), v.clone());
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_once_and_stops_at_capacity() {
        let i = Interner::new(2);
        let a = i.get_or_insert("a", || 1).unwrap();
        assert!(Arc::ptr_eq(&a, &i.get_or_insert("a", || 9).unwrap()));
        assert_eq!(*i.get_or_insert("b", || 2).unwrap(), 2);
        assert!(i.get_or_insert("c", || 3).is_none());
        assert_eq!(*i.get_or_insert("b", || 0).unwrap(), 2);
    }
}
