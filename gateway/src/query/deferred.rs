//! Chunk bodies checked as the engine decodes them instead of when a store answers.
//!
//! A store that cannot trust its data (a store plugin) checks every XOR chunk it returns. For
//! a PromQL query that costs a second full decode of every chunk, since the engine decodes it
//! again. Within a query's [`DeferredChecks::scope`], such a store may leave the chunk bytes
//! unread and register the chunks with [`DeferredChecks::defer`]; the querier then hands
//! those series to the engine as [`CheckedChunks`], whose decode checks each sample it reads
//! (inside the chunk's declared range, strictly increasing, bytes well formed, at least one)
//! and reports a failure through the store's [`ChunkOrigin`], which names the store and counts
//! it.
//!
//! Without partial response a store's failure fails the query, so a failure found late means
//! the same as one found early. With partial response a failing store must become a warning
//! instead, which a failure found halfway through evaluation cannot: there the checks are
//! [`DeferredChecks::provisional`], a late failure only fails the attempt, and the caller runs
//! the query again with every answer checked up front (see
//! [`crate::query::queryable::StoreQueryable::retrying_late_checks`]). Series merged from
//! several replicas are checked in full when the selection is built ([`DeferredChecks::check_now`]).
//! Outside a scope nothing changes: every answer served to another querier or tool is checked
//! in full when it is produced. Bytes the engine never reads (chunks outside the queried range,
//! the tail of a chunk after it) never reach an answer and are not decoded.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gauntlet_proto::thanos::AggrChunk;
use gauntlet_proto::thanos::chunk::Encoding;
use gauntlet_tsdb::Labels;
use gauntlet_tsdb::chunkenc::XorIterator;

use crate::promql::{Chunk, DeferredSamples, Point, SeriesData, StorageError, decode_chunks};

/// The store a deferred chunk came from: turns a failed check into the store's error.
pub trait ChunkOrigin: std::fmt::Debug + Send + Sync {
    /// Records that `message` is wrong with a chunk of `series` (metrics) and returns the
    /// error the query fails with.
    fn refuse(&self, series: &Labels, message: &str) -> StorageError;
}

tokio::task_local! {
    static CURRENT: Arc<DeferredChecks>;
}

/// Hashes the (address, length) keys: they are not chosen by anyone, so a multiply spreads
/// them well enough, for a fraction of the default hasher's cost.
#[derive(Debug, Default, Clone, Copy)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The chunks whose bodies the engine's decode checks, for one selection.
///
/// Chunks are known by the address and length of their bytes. A registered chunk is alive
/// until the selection is built (its answer is kept whole, or the selection fails), and two
/// live chunks never share an address: a registered chunk is always found. (Another store's
/// chunk could only share the key of a registered chunk dropped before, e.g. as a duplicate;
/// it would then merely be checked too.)
#[derive(Debug, Default)]
pub struct DeferredChecks {
    chunks: Mutex<Registry>,
    failures: Failures,
}

/// The deferred chunks, each with the index of its store among `origins`: a chunk costs a
/// map entry, not a reference count on its store.
#[derive(Debug, Default)]
struct Registry {
    chunks: ByAddress,
    origins: Vec<Arc<dyn ChunkOrigin>>,
    /// `origins` as shared with the series built from them; rebuilt when an origin is added.
    shared: Option<Origins>,
}

/// The stores chunks were deferred by, in registration order.
type Origins = Arc<[Arc<dyn ChunkOrigin>]>;

impl Registry {
    fn shared(&mut self) -> Origins {
        self.shared
            .get_or_insert_with(|| self.origins.iter().cloned().collect())
            .clone()
    }
}

/// How a failed check of a deferred chunk is reported.
#[derive(Debug, Clone, Default)]
enum Failures {
    /// To the chunk's store (which counts it), failing the query.
    #[default]
    Final,
    /// Only noted in the flag: the query is run again with every answer checked up front,
    /// where the store's failure is reported (and counted) once.
    Provisional(Arc<AtomicBool>),
}

impl Failures {
    fn refuse(&self, origin: &dyn ChunkOrigin, series: &Labels, message: &str) -> StorageError {
        match self {
            Self::Final => origin.refuse(series, message),
            Self::Provisional(failed) => {
                failed.store(true, Ordering::Relaxed);
                StorageError(format!(
                    "series {series}: a chunk failed its check at decode: {message}"
                ))
            }
        }
    }
}

/// Index of the origin by chunk (address, length).
type ByAddress = HashMap<(usize, usize), u32, BuildHasherDefault<AddressHasher>>;

fn key(data: &Bytes) -> (usize, usize) {
    (data.as_ptr() as usize, data.len())
}

/// What [`DeferredChecks::series_data`] made of a series' chunks.
#[derive(Debug)]
pub enum Deferral {
    /// Some chunks' bodies are checked as the engine decodes them.
    Checked(SeriesData),
    /// None are: the chunks, handed back.
    Plain(Vec<AggrChunk>),
}

impl DeferredChecks {
    /// Checks for a query with partial response: a failed check sets `failed` and fails the
    /// query without being reported to the store; the caller then runs the query again
    /// without deferred checks.
    pub fn provisional(failed: Arc<AtomicBool>) -> Self {
        Self {
            chunks: Mutex::default(),
            failures: Failures::Provisional(failed),
        }
    }

    /// Runs `f` (a fan-out) with deferred checks allowed for the stores it asks, when there
    /// are `checks`.
    pub async fn scope<F: Future>(checks: Option<&Arc<Self>>, f: F) -> F::Output {
        match checks {
            Some(checks) => CURRENT.scope(checks.clone(), f).await,
            None => f.await,
        }
    }

    /// The checks of the fan-out being run, when deferred checks are allowed. Call it from
    /// the store's async `series` (not from another task or thread).
    pub fn current() -> Option<Arc<Self>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    /// Registers XOR chunks whose bytes the store left unchecked and the engine's decode is
    /// to check, with the store they came from.
    pub fn defer<'a>(
        &self,
        origin: &Arc<dyn ChunkOrigin>,
        data: impl Iterator<Item = &'a Bytes> + Clone,
    ) {
        let Ok(mut registry) = self.chunks.lock() else {
            return;
        };
        let index = match registry.origins.iter().position(|o| Arc::ptr_eq(o, origin)) {
            Some(index) => index,
            None => {
                registry.origins.push(origin.clone());
                registry.shared = None;
                registry.origins.len() - 1
            }
        };
        let Ok(index) = u32::try_from(index) else {
            return;
        };
        // Room for the whole batch at once: growing the map entry by entry cost more than
        // the inserts.
        registry.chunks.reserve(data.clone().count());
        for data in data {
            registry.chunks.insert(key(data), index);
        }
    }

    /// Whether any store deferred a check (when none did, the selection is built as if there
    /// were no scope).
    pub fn any(&self) -> bool {
        self.chunks
            .lock()
            .is_ok_and(|registry| !registry.chunks.is_empty())
    }

    /// The engine's view of a series when some of its chunks were deferred: [`CheckedChunks`].
    /// A series that also holds native histogram chunks (merged from another store) is
    /// decoded eagerly by the querier: its deferred chunks are checked here in full, and the
    /// chunks handed back.
    pub fn series_data(
        &self,
        labels: &Labels,
        chunks: Vec<AggrChunk>,
    ) -> Result<Deferral, StorageError> {
        let Some((origins, indexes)) = self.origins(&chunks) else {
            return Ok(Deferral::Plain(chunks));
        };
        let xor_only = chunks.iter().all(|c| {
            c.raw
                .as_ref()
                .is_none_or(|raw| raw.r#type == Encoding::Xor as i32)
        });
        if !xor_only {
            self.check_all(labels, &chunks, &origins, &indexes)?;
            return Ok(Deferral::Plain(chunks));
        }
        let chunks = chunks
            .into_iter()
            .zip(indexes)
            .filter_map(|(chunk, origin)| {
                let raw = chunk.raw?;
                let chunk = Chunk {
                    min_time: chunk.min_time,
                    max_time: chunk.max_time,
                    data: raw.data,
                };
                Some((chunk, origin))
            })
            .collect();
        Ok(Deferral::Checked(SeriesData::Deferred(Arc::new(
            CheckedChunks {
                labels: labels.clone(),
                chunks,
                origins,
                failures: self.failures.clone(),
            },
        ))))
    }

    /// Checks the bodies of the deferred chunks among `chunks` in full, now: for series the
    /// querier decodes by other means (replicas merged, native histograms).
    pub fn check_now(&self, labels: &Labels, chunks: &[AggrChunk]) -> Result<(), StorageError> {
        match self.origins(chunks) {
            Some((origins, indexes)) => self.check_all(labels, chunks, &origins, &indexes),
            None => Ok(()),
        }
    }

    /// The stores chunks were deferred by, and the index among them of the store each of
    /// `chunks` was deferred by; `None` when none was.
    fn origins(&self, chunks: &[AggrChunk]) -> Option<(Origins, Vec<Option<u32>>)> {
        let mut registry = self.chunks.lock().ok()?;
        if registry.chunks.is_empty() {
            return None;
        }
        let indexes: Vec<Option<u32>> = chunks
            .iter()
            .map(|c| {
                c.raw
                    .as_ref()
                    .and_then(|raw| registry.chunks.get(&key(&raw.data)).copied())
            })
            .collect();
        indexes
            .iter()
            .any(Option::is_some)
            .then(|| (registry.shared(), indexes))
    }

    fn check_all(
        &self,
        labels: &Labels,
        chunks: &[AggrChunk],
        origins: &[Arc<dyn ChunkOrigin>],
        indexes: &[Option<u32>],
    ) -> Result<(), StorageError> {
        let mut scratch = Vec::new();
        for (chunk, index) in chunks.iter().zip(indexes) {
            let origin = index.and_then(|i| origins.get(i as usize));
            if let (Some(origin), Some(raw)) = (origin, &chunk.raw) {
                scratch.clear();
                let declared = (chunk.min_time, chunk.max_time);
                decode_checked(&raw.data, declared, (i64::MIN, i64::MAX), &mut scratch)
                    .map_err(|message| self.failures.refuse(origin.as_ref(), labels, &message))?;
            }
        }
        Ok(())
    }
}

/// A float series' XOR chunks, some from a store whose chunk bodies are checked as they are
/// decoded. Decodes as [`SeriesData::Chunks`] does (overlaps merged, first sample wins).
#[derive(Debug)]
pub struct CheckedChunks {
    labels: Labels,
    /// Each chunk with the index among `origins` of the store that deferred it, if one did.
    chunks: Vec<(Chunk, Option<u32>)>,
    origins: Origins,
    failures: Failures,
}

/// Reads the samples of an XOR chunk declared to span `[lo, hi]`, handing each to `keep`
/// until it returns false, and checks every sample read: the first against both ends, the
/// others against their predecessor (strictly increasing), and the last one read against the
/// end; so one comparison per sample. The error says what is wrong with the chunk. Shared by
/// the deferred checks and a plugin answer's up-front checks (`plugin::validate`).
pub(crate) fn read_checked(
    mut it: XorIterator<'_>,
    (lo, hi): (i64, i64),
    mut keep: impl FnMut(i64, f64) -> bool,
) -> Result<(), String> {
    let corrupt = |e: gauntlet_tsdb::chunkenc::ChunkError| format!("corrupt XOR chunk: {e}");
    let outside = |t: i64| format!("sample at {t} outside the chunk's range {lo}..={hi}");
    let Some((first, v)) = it.next_sample().map_err(corrupt)? else {
        return Ok(());
    };
    if first < lo || first > hi {
        return Err(outside(first));
    }
    if !keep(first, v) {
        return Ok(());
    }
    let mut last = first;
    let mut disorder = false;
    it.for_each_sample(|t, v| {
        if t <= last {
            disorder = true;
            return false;
        }
        last = t;
        keep(t, v)
    })
    .map_err(corrupt)?;
    if disorder {
        return Err(format!("samples out of order after {last}"));
    }
    if last > hi {
        return Err(outside(last));
    }
    Ok(())
}

/// Opens the XOR chunk `data` for [`read_checked`]: its header must be readable and declare at
/// least one sample. Shared like [`read_checked`].
pub(crate) fn open_checked(data: &[u8]) -> Result<XorIterator<'_>, String> {
    let it = XorIterator::new(data).map_err(|e| format!("corrupt XOR chunk: {e}"))?;
    if it.num_samples() == 0 {
        return Err("empty XOR chunk".to_owned());
    }
    Ok(it)
}

/// Decodes the samples within `[mint, maxt]` of the XOR chunk `data`, declared to span
/// `declared`, into `out` as `(t, v)` pairs (as the unchecked decode writes them), checking
/// it as [`open_checked`] and [`read_checked`] do: the store checked none of its bytes.
fn decode_checked(
    data: &[u8],
    declared: (i64, i64),
    (mint, maxt): (i64, i64),
    out: &mut Vec<(i64, f64)>,
) -> Result<(), String> {
    let it = open_checked(data)?;
    // The header is untrusted: never reserve more than the bits left could hold.
    out.reserve(it.num_samples().min(data.len() * 8));
    read_checked(it, declared, |t, v| {
        if t > maxt {
            return false;
        }
        if t >= mint {
            out.push((t, v));
        }
        true
    })
}

impl DeferredSamples for CheckedChunks {
    fn decode_into(&self, mint: i64, maxt: i64, out: &mut Vec<Point>) -> Result<(), StorageError> {
        let chunks = self
            .chunks
            .iter()
            .map(|(chunk, index)| (chunk, index.and_then(|i| self.origins.get(i as usize))));
        decode_chunks(
            chunks,
            (mint, maxt),
            out,
            |chunk, origin, raw| match origin {
                Some(origin) => {
                    let declared = (chunk.min_time, chunk.max_time);
                    decode_checked(&chunk.data, declared, (mint, maxt), raw).map_err(|message| {
                        self.failures
                            .refuse(origin.as_ref(), &self.labels, &message)
                    })
                }
                None => gauntlet_tsdb::chunkenc::decode_xor_into(&chunk.data, mint, maxt, raw)
                    .map_err(|e| StorageError(format!("decoding chunk: {e}"))),
            },
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use gauntlet_tsdb::chunkenc::XorChunk;

    #[derive(Debug)]
    struct Named;

    impl ChunkOrigin for Named {
        fn refuse(&self, series: &Labels, message: &str) -> StorageError {
            StorageError(format!("origin: series {series}: {message}"))
        }
    }

    fn xor(samples: &[(i64, f64)]) -> AggrChunk {
        let mut c = XorChunk::new();
        for &(t, v) in samples {
            c.append(t, v).unwrap();
        }
        AggrChunk {
            min_time: samples[0].0,
            max_time: samples[samples.len() - 1].0,
            raw: Some(gauntlet_proto::thanos::Chunk {
                r#type: Encoding::Xor as i32,
                data: c.into_bytes().into(),
                hash: 0,
            }),
            ..AggrChunk::default()
        }
    }

    /// Registers the chunks as deferred by `origin`.
    fn defer_all<'a>(
        checks: &DeferredChecks,
        origin: &Arc<dyn ChunkOrigin>,
        chunks: impl IntoIterator<Item = &'a AggrChunk, IntoIter: Clone>,
    ) {
        checks.defer(
            origin,
            chunks
                .into_iter()
                .filter_map(|c| c.raw.as_ref())
                .map(|r| &r.data),
        );
    }

    fn deferred(chunks: &[AggrChunk]) -> SeriesData {
        let checks = DeferredChecks::default();
        let origin: Arc<dyn ChunkOrigin> = Arc::new(Named);
        defer_all(&checks, &origin, chunks.iter());
        let labels = Labels::from_pairs(&[("__name__", "m")]);
        match checks.series_data(&labels, chunks.to_vec()).unwrap() {
            Deferral::Checked(data) => data,
            Deferral::Plain(_) => panic!("not deferred"),
        }
    }

    fn decode(data: &SeriesData, mint: i64, maxt: i64) -> Result<Vec<(i64, f64)>, StorageError> {
        let SeriesData::Deferred(d) = data else {
            panic!("not deferred")
        };
        let mut out = Vec::new();
        d.decode_into(mint, maxt, &mut out)?;
        Ok(out.iter().map(|p| (p.t, p.v)).collect())
    }

    #[test]
    fn decodes_like_chunks_overlaps_merged_first_wins() {
        let data = deferred(&[
            xor(&[(10, 1.0), (30, 3.0), (50, 5.0)]),
            xor(&[(20, 2.0), (30, 99.0), (40, 4.0)]),
        ]);
        assert_eq!(
            decode(&data, 0, 45).unwrap(),
            vec![(10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0)]
        );
    }

    #[test]
    fn undeferred_chunks_stay_plain() {
        let checks = DeferredChecks::default();
        let labels = Labels::from_pairs(&[("__name__", "m")]);
        assert!(matches!(
            checks.series_data(&labels, vec![xor(&[(1, 1.0)])]).unwrap(),
            Deferral::Plain(_)
        ));
    }

    #[test]
    fn series_with_histograms_have_their_deferred_chunks_checked_at_once() {
        let checks = DeferredChecks::default();
        let origin: Arc<dyn ChunkOrigin> = Arc::new(Named);
        let good = xor(&[(1, 1.0), (2, 2.0)]);
        let mut corrupt = xor(&[(3, 1.0), (4, 2.0)]);
        if let Some(raw) = corrupt.raw.as_mut() {
            raw.data = bytes::Bytes::from_static(&[0, 200, 1, 2, 3]);
        }
        defer_all(&checks, &origin, [&good, &corrupt]);
        let histogram = AggrChunk {
            min_time: 10,
            max_time: 20,
            raw: Some(gauntlet_proto::thanos::Chunk {
                r#type: Encoding::Histogram as i32,
                data: bytes::Bytes::from_static(&[0, 1]),
                hash: 0,
            }),
            ..AggrChunk::default()
        };
        let labels = Labels::from_pairs(&[("__name__", "m")]);
        let with_good = vec![good, histogram.clone()];
        assert!(matches!(
            checks.series_data(&labels, with_good).unwrap(),
            Deferral::Plain(_)
        ));
        let err = checks
            .series_data(&labels, vec![corrupt, histogram])
            .unwrap_err();
        assert!(err.0.contains("corrupt XOR chunk"), "{err}");
    }

    #[test]
    fn corrupt_and_lying_chunks_are_refused_by_their_origin() {
        let mut corrupt = xor(&[(1, 1.0), (2, 2.0)]);
        if let Some(raw) = corrupt.raw.as_mut() {
            raw.data = bytes::Bytes::from_static(&[0, 200, 1, 2, 3]);
        }
        let err = decode(&deferred(&[corrupt]), 0, 10).unwrap_err();
        assert!(
            err.0
                .starts_with("origin: series {__name__=\"m\"}: corrupt XOR chunk"),
            "{err}"
        );
        let mut lying = xor(&[(100, 1.0), (200, 1.0)]);
        lying.max_time = 150;
        let err = decode(&deferred(&[lying]), 0, 1000).unwrap_err();
        assert!(
            err.0
                .contains("sample at 200 outside the chunk's range 100..=150"),
            "{err}"
        );
    }

    /// The store reads none of a deferred chunk's bytes, so the decode also refuses what the
    /// store's own check would have: no header, a first sample outside the declared range, no
    /// samples at all.
    #[test]
    fn chunks_the_store_left_unread_are_checked_from_their_header_on() {
        let with_bytes = |data: &'static [u8]| {
            let mut chunk = xor(&[(1, 1.0)]);
            if let Some(raw) = chunk.raw.as_mut() {
                raw.data = bytes::Bytes::from_static(data);
            }
            chunk
        };
        let err = decode(&deferred(&[with_bytes(&[7])]), 0, 10).unwrap_err();
        assert!(err.0.contains("corrupt XOR chunk"), "{err}");
        let err = decode(&deferred(&[with_bytes(&[0, 0])]), 0, 10).unwrap_err();
        assert!(err.0.contains("empty XOR chunk"), "{err}");
        let mut early = xor(&[(5, 1.0), (6, 1.0)]);
        early.min_time = 6;
        let err = decode(&deferred(&[early]), 0, 10).unwrap_err();
        assert!(
            err.0
                .contains("sample at 5 outside the chunk's range 6..=6"),
            "{err}"
        );
    }

    /// An origin that counts its refusals.
    #[derive(Debug, Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    impl ChunkOrigin for Counting {
        fn refuse(&self, series: &Labels, message: &str) -> StorageError {
            self.0.fetch_add(1, Ordering::Relaxed);
            StorageError(format!("counted: series {series}: {message}"))
        }
    }

    /// The chunk with bytes of its own that are not a chunk.
    fn corrupt(mut chunk: AggrChunk) -> AggrChunk {
        if let Some(raw) = chunk.raw.as_mut() {
            raw.data = bytes::Bytes::from(vec![0, 200, 1, 2, 3]);
        }
        chunk
    }

    #[test]
    fn provisional_failures_flag_the_query_and_leave_the_store_alone() {
        let failed = Arc::new(AtomicBool::new(false));
        let checks = DeferredChecks::provisional(failed.clone());
        let counting = Arc::new(Counting::default());
        let origin: Arc<dyn ChunkOrigin> = counting.clone();
        let good = xor(&[(1, 1.0), (2, 2.0)]);
        let bad = corrupt(xor(&[(3, 1.0), (4, 2.0)]));
        defer_all(&checks, &origin, [&good, &bad]);
        let labels = Labels::from_pairs(&[("__name__", "m")]);
        // A good series decodes and flags nothing.
        let Deferral::Checked(data) = checks.series_data(&labels, vec![good]).unwrap() else {
            panic!("not deferred")
        };
        assert_eq!(decode(&data, 0, 10).unwrap(), vec![(1, 1.0), (2, 2.0)]);
        assert!(!failed.load(Ordering::Relaxed));
        // A bad one fails the attempt, is flagged, and is not reported to its store.
        let Deferral::Checked(data) = checks.series_data(&labels, vec![bad]).unwrap() else {
            panic!("not deferred")
        };
        let err = decode(&data, 0, 10).unwrap_err();
        assert!(
            err.0
                .contains("failed its check at decode: corrupt XOR chunk"),
            "{err}"
        );
        assert!(failed.load(Ordering::Relaxed));
        assert_eq!(counting.0.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn merged_replicas_are_checked_now() {
        let checks = DeferredChecks::default();
        let counting = Arc::new(Counting::default());
        let origin: Arc<dyn ChunkOrigin> = counting.clone();
        let good = xor(&[(1, 1.0), (2, 2.0)]);
        let mut lying = xor(&[(100, 1.0), (200, 1.0)]);
        lying.max_time = 150;
        let bad = corrupt(xor(&[(3, 1.0), (4, 2.0)]));
        let never_deferred = corrupt(xor(&[(5, 1.0)]));
        defer_all(&checks, &origin, [&good, &lying, &bad]);
        let labels = Labels::from_pairs(&[("__name__", "m")]);
        checks.check_now(&labels, &[good]).unwrap();
        // Chunks no store deferred are not this check's business.
        checks.check_now(&labels, &[never_deferred]).unwrap();
        let err = checks.check_now(&labels, &[lying]).unwrap_err();
        assert!(
            err.0.contains("outside the chunk's range 100..=150"),
            "{err}"
        );
        let err = checks.check_now(&labels, &[bad]).unwrap_err();
        assert!(err.0.starts_with("counted: series"), "{err}");
        assert_eq!(counting.0.load(Ordering::Relaxed), 2);
    }
}
