//! Label sets: the identity of a series.
//!
//! A [`Labels`] value is a list of name/value pairs sorted by name with unique names, shared
//! behind an `Arc` so cloning is cheap. It offers the operations the query engine needs
//! (lookup, fingerprint, keep/drop subsets, a builder) and must never allow an unsorted or
//! duplicated label list to be observed.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// One label: a name and its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    /// Label name.
    pub name: String,
    /// Label value.
    pub value: String,
}

impl Label {
    /// Creates a label.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A sorted set of labels with unique names. Cloning shares the underlying storage.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Labels(Arc<[Label]>);

impl Default for Labels {
    fn default() -> Self {
        Self::empty()
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const SEP: u8 = 0xff;

#[inline]
fn fnv_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

#[inline]
fn fnv_label(h: u64, l: &Label) -> u64 {
    let h = fnv_bytes(h, l.name.as_bytes());
    let h = fnv_bytes(h, &[SEP]);
    let h = fnv_bytes(h, l.value.as_bytes());
    fnv_bytes(h, &[SEP])
}

impl Labels {
    /// The empty label set.
    pub fn empty() -> Self {
        Self(Arc::from(Vec::new()))
    }

    /// Builds a label set from arbitrary labels: sorts by name; on duplicate names the last wins.
    /// Labels with empty values are dropped (an empty value means "absent" in Prometheus).
    pub fn new(mut labels: Vec<Label>) -> Self {
        labels.retain(|l| !l.value.is_empty());
        // Stable sort keeps insertion order among duplicates so "last wins" holds.
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        // `dedup_by` removes the later of two equal neighbours: swap first, so the last wins.
        labels.dedup_by(|later, kept| {
            let same = later.name == kept.name;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        Self(Arc::from(labels))
    }

    /// Builds a label set from name/value pairs.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(pairs: &[(N, V)]) -> Self {
        Self::new(
            pairs
                .iter()
                .map(|(n, v)| Label::new(n.as_ref(), v.as_ref()))
                .collect(),
        )
    }

    /// Wraps labels that the caller guarantees are sorted and unique (checked in debug builds);
    /// falls back to [`Labels::new`] when they are not.
    pub fn from_sorted(labels: Vec<Label>) -> Self {
        let ok = labels.windows(2).all(|w| w[0].name < w[1].name)
            && labels.iter().all(|l| !l.value.is_empty());
        if ok {
            Self(Arc::from(labels))
        } else {
            Self::new(labels)
        }
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The labels as a sorted slice.
    pub fn as_slice(&self) -> &[Label] {
        &self.0
    }

    /// Iterates over the labels in name order.
    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    /// The value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].value.as_str())
    }

    /// True when label `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The metric name, if any.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// A stable 64-bit fingerprint of the whole label set.
    pub fn fingerprint(&self) -> u64 {
        self.0.iter().fold(FNV_OFFSET, fnv_label)
    }

    /// Prometheus's `labels.Hash()`: xxHash64 of every name and value, each followed by a
    /// 0xff byte. Functions whose results depend on the hash (`limit_ratio`) use it so that
    /// they pick the same series as Prometheus.
    pub fn prometheus_hash(&self) -> u64 {
        let mut hasher = xxhash_rust::xxh64::Xxh64::new(0);
        for label in self.0.iter() {
            hasher.update(label.name.as_bytes());
            hasher.update(&[0xff]);
            hasher.update(label.value.as_bytes());
            hasher.update(&[0xff]);
        }
        hasher.digest()
    }

    /// Fingerprint of only the labels named in `names` (which need not be sorted).
    pub fn fingerprint_with(&self, names: &[String]) -> u64 {
        self.0
            .iter()
            .filter(|l| names.contains(&l.name))
            .fold(FNV_OFFSET, fnv_label)
    }

    /// Fingerprint of every label except those named in `names` and the metric name.
    pub fn fingerprint_without(&self, names: &[String]) -> u64 {
        self.0
            .iter()
            .filter(|l| l.name != METRIC_NAME && !names.contains(&l.name))
            .fold(FNV_OFFSET, fnv_label)
    }

    /// A label set keeping only the labels named in `names`.
    pub fn keep(&self, names: &[String]) -> Labels {
        let v: Vec<Label> = self
            .0
            .iter()
            .filter(|l| names.contains(&l.name))
            .cloned()
            .collect();
        Labels(Arc::from(v))
    }

    /// A label set without the labels named in `names` (the metric name is kept unless listed).
    pub fn without(&self, names: &[&str]) -> Labels {
        if !self.0.iter().any(|l| names.contains(&l.name.as_str())) {
            return self.clone();
        }
        let v: Vec<Label> = self
            .0
            .iter()
            .filter(|l| !names.contains(&l.name.as_str()))
            .cloned()
            .collect();
        Labels(Arc::from(v))
    }

    /// A label set without the metric name.
    pub fn without_metric_name(&self) -> Labels {
        self.without(&[METRIC_NAME])
    }

    /// A label set without the metric name and the labels named in `names`.
    pub fn drop_names(&self, names: &[String]) -> Labels {
        let v: Vec<Label> = self
            .0
            .iter()
            .filter(|l| l.name != METRIC_NAME && !names.contains(&l.name))
            .cloned()
            .collect();
        Labels(Arc::from(v))
    }

    /// A builder initialised with these labels.
    pub fn builder(&self) -> LabelsBuilder {
        LabelsBuilder {
            labels: self.0.to_vec(),
        }
    }

    /// Compares two label sets the way Prometheus orders series (label by label, name then value).
    pub fn compare(&self, other: &Labels) -> Ordering {
        let n = self.0.len().min(other.0.len());
        for i in 0..n {
            let (a, b) = (&self.0[i], &other.0[i]);
            match a.name.cmp(&b.name) {
                Ordering::Equal => {}
                o => return o,
            }
            match a.value.cmp(&b.value) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        self.0.len().cmp(&other.0.len())
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Labels {
    fn cmp(&self, other: &Self) -> Ordering {
        self.compare(other)
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Mutable construction of a label set; `build` sorts and removes empty values.
#[derive(Debug, Clone, Default)]
pub struct LabelsBuilder {
    labels: Vec<Label>,
}

impl LabelsBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`; an empty value deletes the label.
    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        if let Some(l) = self.labels.iter_mut().find(|l| l.name == name) {
            value.clone_into(&mut l.value);
        } else {
            self.labels.push(Label::new(name, value));
        }
        self
    }

    /// Removes `name`.
    pub fn del(&mut self, name: &str) -> &mut Self {
        self.labels.retain(|l| l.name != name);
        self
    }

    /// The current value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }

    /// Finishes the label set.
    pub fn build(&self) -> Labels {
        Labels::new(self.labels.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sorted_unique_and_lookup() {
        let l = Labels::from_pairs(&[("b", "2"), ("a", "1"), ("b", "3"), ("c", "")]);
        assert_eq!(l.len(), 2);
        assert_eq!(l.get("a"), Some("1"));
        assert_eq!(l.get("b"), Some("3"));
        assert_eq!(l.get("c"), None);
        assert_eq!(l.to_string(), "{a=\"1\", b=\"3\"}");
        // Three of a name, not adjacent before sorting: the last given wins.
        let l = Labels::from_pairs(&[("b", "1"), ("a", "x"), ("b", "2"), ("c", "y"), ("b", "3")]);
        assert_eq!(l.to_string(), "{a=\"x\", b=\"3\", c=\"y\"}");
    }

    #[test]
    fn fingerprints_and_subsets() {
        let l = Labels::from_pairs(&[("__name__", "m"), ("job", "x"), ("instance", "i")]);
        let k = l.keep(&["job".to_string()]);
        assert_eq!(k, Labels::from_pairs(&[("job", "x")]));
        assert_eq!(l.fingerprint_with(&["job".to_string()]), k.fingerprint());
        let w = l.drop_names(&["instance".to_string()]);
        assert_eq!(w, Labels::from_pairs(&[("job", "x")]));
        assert_eq!(
            l.fingerprint_without(&["instance".to_string()]),
            w.fingerprint()
        );
        assert_ne!(l.fingerprint(), w.fingerprint());
        let mut b = l.builder();
        b.set("job", "y").del("instance");
        assert_eq!(
            b.build(),
            Labels::from_pairs(&[("__name__", "m"), ("job", "y")])
        );
    }

    #[test]
    fn prometheus_hash_is_xxhash64_of_names_and_values_with_separators() {
        let l = Labels::from_pairs(&[("__name__", "up"), ("job", "node")]);
        assert_eq!(
            l.prometheus_hash(),
            xxhash_rust::xxh64::xxh64(b"__name__\xffup\xffjob\xffnode\xff", 0)
        );
        // xxHash64 reference vector: the empty input with seed 0.
        assert_eq!(
            Labels::from_pairs::<&str, &str>(&[]).prometheus_hash(),
            0xef46_db37_51d8_e999
        );
    }

    #[test]
    fn ordering() {
        let a = Labels::from_pairs(&[("a", "1")]);
        let b = Labels::from_pairs(&[("a", "1"), ("b", "1")]);
        let c = Labels::from_pairs(&[("a", "2")]);
        assert!(a < b && b < c);
    }
}
