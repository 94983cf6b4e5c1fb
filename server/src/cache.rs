//! Bounded LRU caches of encoder vectors, so a repeated photo or text is never encoded twice.

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::metrics as m;

/// A bounded, shared map from a key to an encoder vector.
pub struct VectorCache<K: Hash + Eq> {
    name: &'static str,
    inner: Option<Mutex<LruCache<K, Arc<Vec<f32>>>>>,
}

impl<K: Hash + Eq> VectorCache<K> {
    /// A cache of at most `capacity` vectors (0 = no cache).
    pub fn new(name: &'static str, capacity: usize) -> Self {
        VectorCache { name, inner: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))) }
    }

    pub fn get(&self, key: &K) -> Option<Arc<Vec<f32>>> {
        let found = self.inner.as_ref().and_then(|c| c.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned());
        let outcome = if found.is_some() { "hit" } else { "miss" };
        metrics::counter!(m::CACHE, "cache" => self.name, "outcome" => outcome).increment(1);
        found
    }

    /// Whether `key` is cached (not counted as a lookup, does not refresh it).
    pub fn contains(&self, key: &K) -> bool {
        self.inner.as_ref().is_some_and(|c| c.lock().unwrap_or_else(|e| e.into_inner()).contains(key))
    }

    pub fn insert(&self, key: K, value: Arc<Vec<f32>>) {
        if let Some(c) = &self.inner {
            c.lock().unwrap_or_else(|e| e.into_inner()).put(key, value);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |c| c.lock().unwrap_or_else(|e| e.into_inner()).len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_capacity_and_evicts_the_least_recent() {
        let c = VectorCache::new("t", 2);
        c.insert(1, Arc::new(vec![1.0]));
        c.insert(2, Arc::new(vec![2.0]));
        assert!(c.get(&1).is_some());
        c.insert(3, Arc::new(vec![3.0]));
        assert_eq!(c.len(), 2);
        assert!(c.get(&2).is_none(), "2 was least recently used");
        assert!(c.get(&1).is_some() && c.get(&3).is_some());
        let off: VectorCache<i32> = VectorCache::new("off", 0);
        off.insert(1, Arc::new(vec![]));
        assert!(off.get(&1).is_none());
    }
}
