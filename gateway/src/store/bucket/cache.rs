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

/// A cache key: the block's cache id (see [`next_block_id`]), the kind and the offset or
/// reference, in 16 bytes (the cache holds tens of thousands of small entries: every byte of
/// bookkeeping counts twice, in the map and in the age index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Block id shifted left by two, kind in the low two bits.
    block_and_kind: u64,
    at: u64,
}

impl CacheKey {
    /// The key of one item of block `block`.
    pub fn new(block: u64, kind: ItemKind, at: u64) -> Self {
        let kind_bits = match kind {
            ItemKind::Postings => 0,
            ItemKind::Series => 1,
            ItemKind::Chunk => 2,
        };
        Self {
            block_and_kind: (block << 2) | kind_bits,
            at,
        }
    }

    fn block(self) -> u64 {
        self.block_and_kind >> 2
    }

    fn kind(self) -> ItemKind {
        match self.block_and_kind & 3 {
            0 => ItemKind::Postings,
            1 => ItemKind::Series,
            _ => ItemKind::Chunk,
        }
    }
}

/// A process-wide id for a loaded block's cache entries: never reused (2^62 loads), so a block
/// dropped and loaded again never sees the entries of its earlier copy.
pub fn next_block_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

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
            .with_label_values(&[self.name, key.kind().label(), outcome])
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
    pub fn forget_block(&self, block: u64) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let keys: Vec<(CacheKey, u64)> = inner
            .entries
            .iter()
            .filter(|(k, _)| k.block() == block)
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
        cache.put(
            CacheKey::new(1, ItemKind::Series, 1),
            Bytes::from_static(b"aaaa"),
        );
        cache.put(
            CacheKey::new(1, ItemKind::Series, 2),
            Bytes::from_static(b"bbbb"),
        );
        assert!(cache.get(&CacheKey::new(1, ItemKind::Series, 1)).is_some());
        cache.put(
            CacheKey::new(1, ItemKind::Series, 3),
            Bytes::from_static(b"cccc"),
        );
        assert_eq!(cache.size(), 8);
        assert!(cache.get(&CacheKey::new(1, ItemKind::Series, 2)).is_none());
        assert!(cache.get(&CacheKey::new(1, ItemKind::Series, 1)).is_some());
        cache.put(
            CacheKey::new(1, ItemKind::Series, 4),
            Bytes::from(vec![0; 11]),
        );
        assert!(cache.get(&CacheKey::new(1, ItemKind::Series, 4)).is_none());
        cache.forget_block(1);
        assert_eq!(cache.size(), 0);
    }
}
