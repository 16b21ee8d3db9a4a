//! The engine's only window onto data: the [`Queryable`] trait, the [`Selection`] it is asked
//! for, the [`SeriesSet`] it answers with, and [`MemoryQueryable`], an in-memory implementation
//! for tests and the conformance harness that stores XOR chunks so the chunk path is exercised.
//!
//! Implementations must return every series matching all matchers that has data in
//! `[start, end]`; they may return more data than asked (the engine filters by time) but never
//! series that do not match. Nothing here may block a thread.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use gauntlet_tsdb::chunkenc::{XorChunk, decode_xor_into};
use gauntlet_tsdb::{Labels, Sample};
use regex::Regex;

use super::error::StorageError;
use super::value::Point;

/// How a matcher compares a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchKind {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (fully anchored)
    RegexMatch,
    /// `!~` (fully anchored)
    RegexNoMatch,
}

/// A label matcher. A missing label matches as the empty string, as in Prometheus.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Value or regular expression source (unanchored, as written in the query).
    pub value: String,
    /// Comparison.
    pub kind: MatchKind,
    regex: Option<Regex>,
}

/// Compiled regular expressions kept for reuse, the longest source kept, and the most memory a
/// kept one may take: its program, and each lazy DFA cache it grows (past that it matches
/// more slowly, never wrongly). Larger ones are compiled for each use with the regex crate's
/// default limits, so queries cannot pin more than a few tens of MiB here.
const REGEX_CACHE_ENTRIES: usize = 256;
const REGEX_CACHE_LONGEST: usize = 4096;
const CACHED_REGEX_PROGRAM: usize = 256 * 1024;
const CACHED_REGEX_DFA: usize = 64 * 1024;

/// Kept regexes by source, each with when it was last used (a counter).
#[derive(Default)]
struct RegexCache {
    entries: HashMap<String, (Regex, u64)>,
    uses: u64,
}

static REGEX_CACHE: LazyLock<Mutex<RegexCache>> = LazyLock::new(Mutex::default);

/// `re` compiled fully anchored, with `.` matching newlines (`^(?s:re)$`), as Prometheus
/// matches label values. A query's regex is compiled where it is parsed, planned and fanned
/// out (and again by every query of a dashboard that refreshes), and compiling one costs more
/// than a small query: the [`REGEX_CACHE_ENTRIES`] most recently used are kept.
pub(crate) fn anchored_regex(re: &str) -> Result<Regex, regex::Error> {
    let anchored = || format!("^(?s:{re})$");
    if re.len() > REGEX_CACHE_LONGEST {
        return Regex::new(&anchored());
    }
    if let Ok(mut cache) = REGEX_CACHE.lock() {
        cache.uses += 1;
        let now = cache.uses;
        if let Some((regex, used)) = cache.entries.get_mut(re) {
            *used = now;
            return Ok(regex.clone());
        }
    }
    let anchored = anchored();
    let small = regex::RegexBuilder::new(&anchored)
        .size_limit(CACHED_REGEX_PROGRAM)
        .dfa_size_limit(CACHED_REGEX_DFA)
        .build();
    let regex = match small {
        Ok(regex) => regex,
        Err(regex::Error::CompiledTooBig(_)) => return Regex::new(&anchored),
        Err(error) => return Err(error),
    };
    if let Ok(mut cache) = REGEX_CACHE.lock() {
        if cache.entries.len() >= REGEX_CACHE_ENTRIES
            && let Some(oldest) = cache
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(source, _)| source.clone())
        {
            cache.entries.remove(&oldest);
        }
        let now = cache.uses;
        cache.entries.insert(re.to_owned(), (regex.clone(), now));
    }
    Ok(regex)
}

impl Matcher {
    /// Builds a matcher; regular expressions are anchored (`^(?s:re)$`).
    pub fn new(kind: MatchKind, name: &str, value: &str) -> Result<Self, StorageError> {
        let regex = match kind {
            MatchKind::RegexMatch | MatchKind::RegexNoMatch => {
                Some(anchored_regex(value).map_err(|e| {
                    StorageError(format!("invalid regular expression {value:?}: {e}"))
                })?)
            }
            _ => None,
        };
        Ok(Self {
            name: name.to_string(),
            value: value.to_string(),
            kind,
            regex,
        })
    }

    /// Builds an `=` or `!=` matcher (regex kinds fall back to a never-failing literal match).
    pub fn with_kind(kind: MatchKind, name: &str, value: &str) -> Self {
        match Self::new(kind, name, value) {
            Ok(m) => m,
            Err(_) => Self {
                name: name.to_string(),
                value: value.to_string(),
                kind,
                regex: None,
            },
        }
    }

    pub(crate) fn with_regex(kind: MatchKind, name: &str, value: &str, regex: Regex) -> Self {
        Self {
            name: name.to_string(),
            value: value.to_string(),
            kind,
            regex: Some(regex),
        }
    }

    /// True when a label value (empty when the label is missing) matches.
    pub fn matches(&self, v: &str) -> bool {
        match self.kind {
            MatchKind::Equal => v == self.value,
            MatchKind::NotEqual => v != self.value,
            MatchKind::RegexMatch => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
            MatchKind::RegexNoMatch => !self.regex.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    /// True when this matcher matches the label set.
    pub fn matches_labels(&self, labels: &Labels) -> bool {
        self.matches(labels.get(&self.name).unwrap_or(""))
    }
}

/// Hints about how the engine will use a selection, like Prometheus's `SelectHints`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectHints {
    /// Query step in ms (0 for instant queries).
    pub step_ms: i64,
    /// Range of the enclosing matrix selector in ms (0 for instant selectors).
    pub range_ms: i64,
    /// Name of the function the selector is an argument of, if any.
    pub func: Option<String>,
    /// Grouping labels of the enclosing aggregation, if any.
    pub grouping: Vec<String>,
    /// True for `by`, false for `without`.
    pub by: bool,
}

/// What the engine asks storage for: series matching all `matchers` with data in
/// `[start_ms, end_ms]` (inclusive).
#[derive(Debug, Clone)]
pub struct Selection {
    /// All must match.
    pub matchers: Vec<Matcher>,
    /// Earliest timestamp needed (ms, inclusive).
    pub start_ms: i64,
    /// Latest timestamp needed (ms, inclusive).
    pub end_ms: i64,
    /// Usage hints.
    pub hints: SelectHints,
}

/// One XOR chunk with the time range it covers.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// First sample's timestamp.
    pub min_time: i64,
    /// Last sample's timestamp.
    pub max_time: i64,
    /// Prometheus XOR-encoded bytes (2-byte header included).
    pub data: Bytes,
}

/// A series' data: compressed chunks (decoded lazily by the engine), decoded samples, or
/// samples produced only when the engine reads the series.
#[derive(Debug, Clone)]
pub enum SeriesData {
    /// XOR chunks in time order, possibly overlapping (overlaps are merged, first wins).
    Chunks(Vec<Chunk>),
    /// Float samples in time order.
    Samples(Vec<Sample>),
    /// Float and native histogram samples in time order.
    Points(Arc<[Point]>),
    /// Samples computed on demand (e.g. HA replicas merged as they are read), so they are
    /// produced straight into the engine's buffer instead of being held for every series.
    Deferred(Arc<dyn DeferredSamples>),
}

/// Series data computed when the engine reads it.
pub trait DeferredSamples: std::fmt::Debug + Send + Sync {
    /// Appends the samples within `[mint, maxt]` to `out`, in time order, one per timestamp.
    fn decode_into(&self, mint: i64, maxt: i64, out: &mut Vec<Point>) -> Result<(), StorageError>;
}

/// One series of a [`SeriesSet`].
#[derive(Debug, Clone)]
pub struct StoredSeries {
    /// Labels, unique within the set.
    pub labels: Labels,
    /// Data.
    pub data: SeriesData,
}

impl StoredSeries {
    /// Appends this series' samples within `[mint, maxt]` to `out` in time order (duplicated
    /// timestamps keep the first value).
    pub fn decode_into(
        &self,
        mint: i64,
        maxt: i64,
        out: &mut Vec<Point>,
    ) -> Result<(), StorageError> {
        match &self.data {
            SeriesData::Samples(s) => {
                let from = s.partition_point(|x| x.t < mint);
                out.extend(
                    s[from..]
                        .iter()
                        .take_while(|x| x.t <= maxt)
                        .map(|x| Point::float(x.t, x.v)),
                );
            }
            SeriesData::Points(s) => {
                let from = s.partition_point(|x| x.t < mint);
                out.extend(s[from..].iter().take_while(|x| x.t <= maxt).cloned());
            }
            SeriesData::Deferred(d) => d.decode_into(mint, maxt, out)?,
            SeriesData::Chunks(chunks) => decode_chunks(
                chunks.iter().map(|c| (c, ())),
                (mint, maxt),
                out,
                |c, (), raw| {
                    decode_xor_into(&c.data, mint, maxt, raw)
                        .map_err(|e| StorageError(format!("decoding chunk: {e}")))
                },
            )?,
        }
        Ok(())
    }
}

/// Appends the samples within `[mint, maxt]` of XOR chunks in time order (possibly
/// overlapping) to `out`, in time order, the first sample of a timestamp kept. Each chunk
/// that overlaps the window goes through `decode` (with what came with it), which writes its
/// samples in the window as `(t, v)` pairs. On an error `out` is left as it was.
pub(crate) fn decode_chunks<'c, X>(
    chunks: impl IntoIterator<Item = (&'c Chunk, X)>,
    (mint, maxt): (i64, i64),
    out: &mut Vec<Point>,
    mut decode: impl FnMut(&Chunk, X, &mut Vec<(i64, f64)>) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let start = out.len();
    let mut sorted = true;
    let mut raw: Vec<(i64, f64)> = Vec::new();
    for (chunk, with) in chunks {
        if chunk.max_time < mint || chunk.min_time > maxt {
            continue;
        }
        raw.clear();
        if let Err(e) = decode(chunk, with, &mut raw) {
            out.truncate(start);
            return Err(e);
        }
        let before = out.len();
        out.extend(raw.iter().map(|&(t, v)| Point::float(t, v)));
        if before > start && out.len() > before && out[before].t <= out[before - 1].t {
            sorted = false;
        }
    }
    if !sorted {
        merge_sorted_runs(out, start);
    }
    Ok(())
}

/// Puts `out[start..]` (runs of samples each in time order, e.g. one per chunk) in time order;
/// of equal timestamps the first one appended is kept.
fn merge_sorted_runs(out: &mut Vec<Point>, start: usize) {
    out[start..].sort_by_key(|x| x.t);
    let mut w = start;
    for r in start..out.len() {
        if w > start && out[w - 1].t == out[r].t {
            continue;
        }
        out.swap(w, r);
        w += 1;
    }
    out.truncate(w);
}

/// The answer to a [`Selection`].
#[derive(Debug, Clone, Default)]
pub struct SeriesSet {
    /// Matching series, each label set at most once.
    pub series: Vec<StoredSeries>,
    /// Non-fatal problems (e.g. a store that did not answer), reported as query warnings.
    pub warnings: Vec<String>,
}

/// A source of series for the engine. The querier (fan-out + dedup) implements this.
#[async_trait]
pub trait Queryable: Send + Sync {
    /// Returns all series matching `selection.matchers` with data in the selection's range.
    async fn select(&self, selection: &Selection) -> Result<SeriesSet, StorageError>;
}

/// An in-memory [`Queryable`]: series are kept as XOR chunks of up to 120 samples.
#[derive(Debug, Clone, Default)]
pub struct MemoryQueryable {
    /// Series by metric name ("" for none), each set sorted by labels so selections come back
    /// in Prometheus's series order.
    by_name: std::collections::HashMap<String, std::collections::BTreeMap<Labels, StoredSeries>>,
}

const SAMPLES_PER_CHUNK: usize = 120;

impl MemoryQueryable {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds float samples to a series (merged with any samples already stored for the same
    /// labels).
    pub fn add_series(&mut self, labels: Labels, samples: &[Sample]) -> Result<(), StorageError> {
        let points: Vec<Point> = samples.iter().map(|s| Point::float(s.t, s.v)).collect();
        self.add_points(labels, &points)
    }

    /// Adds float and histogram samples to a series (merged with any samples already stored
    /// for the same labels; later writes win on equal timestamps). Series with only floats
    /// are kept as XOR chunks, others as decoded points.
    pub fn add_points(&mut self, labels: Labels, points: &[Point]) -> Result<(), StorageError> {
        let mut all: Vec<Point> = Vec::new();
        let name = labels.metric_name().unwrap_or("").to_string();
        if let Some(s) = self.by_name.get(&name).and_then(|m| m.get(&labels)) {
            s.decode_into(i64::MIN, i64::MAX, &mut all)?;
        }
        all.extend_from_slice(points);
        all.sort_by_key(|x| x.t);
        let mut dedup: Vec<Point> = Vec::with_capacity(all.len());
        for x in all {
            match dedup.last_mut() {
                Some(l) if l.t == x.t => *l = x,
                _ => dedup.push(x),
            }
        }
        let data = if dedup.iter().any(|p| p.h.is_some()) {
            SeriesData::Points(dedup.into())
        } else {
            let mut chunks = Vec::new();
            for part in dedup.chunks(SAMPLES_PER_CHUNK) {
                let mut c = XorChunk::new();
                for p in part {
                    c.append(p.t, p.v)
                        .map_err(|e| StorageError(e.to_string()))?;
                }
                let (Some(first), Some(last)) = (part.first(), part.last()) else {
                    continue;
                };
                chunks.push(Chunk {
                    min_time: first.t,
                    max_time: last.t,
                    data: Bytes::from(c.into_bytes()),
                });
            }
            SeriesData::Chunks(chunks)
        };
        let s = StoredSeries {
            labels: labels.clone(),
            data,
        };
        self.by_name.entry(name).or_default().insert(labels, s);
        Ok(())
    }

    /// Removes all series.
    pub fn clear(&mut self) {
        self.by_name.clear();
    }

    /// Number of series stored.
    pub fn len(&self) -> usize {
        self.by_name
            .values()
            .map(std::collections::BTreeMap::len)
            .sum()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.by_name
            .values()
            .all(std::collections::BTreeMap::is_empty)
    }

    fn select_sync(&self, sel: &Selection) -> SeriesSet {
        let name = sel
            .matchers
            .iter()
            .find(|m| m.kind == MatchKind::Equal && m.name == gauntlet_tsdb::labels::METRIC_NAME)
            .map(|m| m.value.as_str());
        let candidates: Box<dyn Iterator<Item = &StoredSeries> + '_> = match name {
            Some(n) => Box::new(self.by_name.get(n).into_iter().flat_map(|m| m.values())),
            None => Box::new(self.by_name.values().flat_map(|m| m.values())),
        };
        let mut series: Vec<StoredSeries> = candidates
            .filter(|s| sel.matchers.iter().all(|m| m.matches_labels(&s.labels)))
            .filter_map(|s| match &s.data {
                SeriesData::Chunks(cs) => {
                    let cs: Vec<Chunk> = cs
                        .iter()
                        .filter(|c| c.max_time >= sel.start_ms && c.min_time <= sel.end_ms)
                        .cloned()
                        .collect();
                    (!cs.is_empty()).then(|| StoredSeries {
                        labels: s.labels.clone(),
                        data: SeriesData::Chunks(cs),
                    })
                }
                SeriesData::Samples(_) | SeriesData::Points(_) | SeriesData::Deferred(_) => {
                    Some(s.clone())
                }
            })
            .collect();
        if name.is_none() {
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
        }
        SeriesSet {
            series,
            warnings: Vec::new(),
        }
    }
}

#[async_trait]
impl Queryable for MemoryQueryable {
    async fn select(&self, selection: &Selection) -> Result<SeriesSet, StorageError> {
        Ok(self.select_sync(selection))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn regexes_are_anchored_match_newlines_and_are_kept_within_bounds() {
        let re = anchored_regex("a.c|x").unwrap();
        assert!(re.is_match("abc") && re.is_match("a\nc") && re.is_match("x"));
        assert!(!re.is_match("zabc") && !re.is_match("abcz") && !re.is_match("xx"));
        // Kept: the second compile is the same program.
        let again = anchored_regex("a.c|x").unwrap();
        assert_eq!(again.as_str(), re.as_str());
        assert!(anchored_regex("(").is_err());
        // The most recently used stay when others push the cache past its size.
        for i in 0..REGEX_CACHE_ENTRIES + 100 {
            anchored_regex(&format!("bound-{i}")).unwrap();
            anchored_regex("a.c|x").unwrap();
        }
        // Too large to keep: compiled with the default limits, and still correct.
        let large = anchored_regex("\\w{20}").unwrap();
        assert!(large.is_match(&"é".repeat(20)) && !large.is_match(&"a".repeat(19)));
        let kept = REGEX_CACHE.lock().unwrap();
        assert!(
            kept.entries.len() <= REGEX_CACHE_ENTRIES,
            "{} kept",
            kept.entries.len()
        );
        assert!(kept.entries.contains_key("a.c|x"));
        assert!(!kept.entries.contains_key("("));
        assert!(!kept.entries.contains_key("\\w{20}"));
    }

    fn chunk(samples: &[(i64, f64)]) -> Chunk {
        let mut c = XorChunk::new();
        for &(t, v) in samples {
            c.append(t, v).unwrap();
        }
        Chunk {
            min_time: samples[0].0,
            max_time: samples[samples.len() - 1].0,
            data: Bytes::from(c.into_bytes()),
        }
    }

    #[test]
    fn overlapping_chunks_merge_in_time_order_first_wins() {
        let s = StoredSeries {
            labels: Labels::from_pairs(&[("__name__", "m")]),
            data: SeriesData::Chunks(vec![
                chunk(&[(10, 1.0), (30, 3.0), (50, 5.0)]),
                chunk(&[(20, 2.0), (30, 99.0), (40, 4.0)]),
            ]),
        };
        let mut out = Vec::new();
        s.decode_into(0, 45, &mut out).unwrap();
        let got: Vec<(i64, f64)> = out.iter().map(|p| (p.t, p.v)).collect();
        assert_eq!(got, vec![(10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0)]);
    }

    #[test]
    fn corrupt_chunk_is_an_error() {
        let s = StoredSeries {
            labels: Labels::empty(),
            data: SeriesData::Chunks(vec![Chunk {
                min_time: 0,
                max_time: 10,
                data: Bytes::from_static(&[0, 5, 1]),
            }]),
        };
        assert!(s.decode_into(0, 10, &mut Vec::new()).is_err());
    }

    #[test]
    fn regex_matchers_are_anchored() {
        let m = Matcher::new(MatchKind::RegexMatch, "job", "api|web").unwrap();
        assert!(m.matches("api") && !m.matches("apix"));
        let m = Matcher::new(MatchKind::RegexNoMatch, "job", "").unwrap();
        assert!(m.matches("x") && !m.matches(""));
        assert!(Matcher::new(MatchKind::RegexMatch, "a", "(").is_err());
    }
}
