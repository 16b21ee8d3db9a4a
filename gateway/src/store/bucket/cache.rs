//! A byte-bounded least-recently-used cache of immutable byte strings (postings lists, series
//! entries, chunks), keyed by block and offset.
//!
//! It never holds more than its capacity in values (an entry larger than the whole capacity is
//! not stored), and every lookup is counted as a hit or a miss on `/metrics`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;

use super::metrics::BucketMetrics;

/// What an entry is: the metrics label and part of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// A postings list, keyed by its offset in the index.
    Postings,
    /// A series entry, keyed by its reference.
    Series,
    /// A chunk, keyed by its packed reference.
    Chunk,
}

impl ItemKind {
    /// The `item_type` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Postings => "Postings",
            Self::Series => "Series",
            Self::Chunk => "Chunk",
        }
    }
}

/// A cache key: block ULID, kind and offset or reference.
pub type CacheKey = (u128, ItemKind, u64);

#[derive(Default)]
struct Inner {
    entries: HashMap<CacheKey, (Bytes, u64)>,
    by_age: BTreeMap<u64, CacheKey>,
    clock: u64,
    size: u64,
}

/// The cache.
pub struct LruCache {
    name: &'static str,
    capacity: u64,
    inner: Mutex<Inner>,
}

impl LruCache {
    /// A cache holding at most `capacity` bytes; `name` labels its metrics (`index`, `chunks`).
    pub fn new(name: &'static str, capacity: u64) -> Self {
        Self {
            name,
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The value under `key`, marking it recently used.
    pub fn get(&self, key: &CacheKey) -> Option<Bytes> {
        let found = {
            let mut inner = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            inner.clock += 1;
            let now = inner.clock;
            let Inner {
                entries, by_age, ..
            } = &mut *inner;
            entries.get_mut(key).map(|(value, age)| {
                by_age.remove(age);
                *age = now;
                by_age.insert(now, *key);
                value.clone()
            })
        };
        let m = BucketMetrics::get();
        let outcome = if found.is_some() { "hit" } else { "miss" };
        m.cache_requests
            .with_label_values(&[self.name, key.1.label(), outcome])
            .inc();
        found
    }

    /// Stores `value` under `key`, evicting the least recently used entries to make room.
    pub fn put(&self, key: CacheKey, value: Bytes) {
        let len = value.len() as u64;
        if len > self.capacity {
            return;
        }
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.clock += 1;
        let now = inner.clock;
        if let Some((old, age)) = inner.entries.remove(&key) {
            inner.by_age.remove(&age);
            inner.size -= old.len() as u64;
        }
        while inner.size + len > self.capacity {
            let Some((_, evicted)) = inner.by_age.pop_first() else {
                break;
            };
            if let Some((old, _)) = inner.entries.remove(&evicted) {
                inner.size -= old.len() as u64;
            }
        }
        inner.size += len;
        inner.entries.insert(key, (value, now));
        inner.by_age.insert(now, key);
        BucketMetrics::get()
            .cache_bytes
            .with_label_values(&[self.name])
            .set(i64::try_from(inner.size).unwrap_or(i64::MAX));
    }

    /// Whether the cache can hold anything (a capacity of 0 disables it).
    pub fn is_enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Bytes held.
    pub fn size(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .size
    }

    /// Drops every entry of one block.
    pub fn forget_block(&self, block: u128) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let keys: Vec<(CacheKey, u64)> = inner
            .entries
            .iter()
            .filter(|(k, _)| k.0 == block)
            .map(|(k, (_, age))| (*k, *age))
            .collect();
        for (key, age) in keys {
            inner.by_age.remove(&age);
            if let Some((old, _)) = inner.entries.remove(&key) {
                inner.size -= old.len() as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_capacity() {
        let cache = LruCache::new("test", 10);
        cache.put((1, ItemKind::Series, 1), Bytes::from_static(b"aaaa"));
        cache.put((1, ItemKind::Series, 2), Bytes::from_static(b"bbbb"));
        assert!(cache.get(&(1, ItemKind::Series, 1)).is_some());
        cache.put((1, ItemKind::Series, 3), Bytes::from_static(b"cccc"));
        assert_eq!(cache.size(), 8);
        assert!(cache.get(&(1, ItemKind::Series, 2)).is_none());
        assert!(cache.get(&(1, ItemKind::Series, 1)).is_some());
        cache.put((1, ItemKind::Series, 4), Bytes::from(vec![0; 11]));
        assert!(cache.get(&(1, ItemKind::Series, 4)).is_none());
        cache.forget_block(1);
        assert_eq!(cache.size(), 0);
    }
}
