//! The store gateway: [`BucketStore`] serves the blocks in an object storage bucket through
//! the [`Store`] trait.
//!
//! Blocks are discovered by listing `ULID/meta.json` at start and every sync period; blocks
//! still being uploaded (no `meta.json`), marked for deletion (`deletion-mark.json`) or
//! downsampled (not decoded yet) are never served, and blocks that vanish are dropped. Each
//! block keeps a small index-header on local disk ([`header`]); postings, series and chunks are
//! read with range requests on demand, postings and series entries cached in a byte-bounded LRU
//! cache (chunks too when a chunk cache is configured). A Series answer never exists whole: each
//! block's postings are resolved when the request arrives (series references only), then series
//! entries and chunks are read one batch per block at a time as the frames are taken, so the
//! gRPC stream's flow control bounds the memory a request holds. A block whose
//! files are corrupt or unreadable fails alone: its error becomes a warning (partial response)
//! or the request's error when partial response is disabled. Nothing here panics on bucket
//! contents.

pub mod block;
pub mod cache;
pub mod fetch;
pub mod header;
pub mod metrics;
pub mod parse;
pub mod postings_table;

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use gauntlet_proto::thanos::chunk::Encoding;
use gauntlet_proto::thanos::info::{InfoResponse, StoreInfo};
use gauntlet_proto::thanos::series_response::Result as Frame;
use gauntlet_proto::thanos::{
    AggrChunk, Chunk, LabelNamesRequest, LabelNamesResponse, LabelValuesRequest,
    LabelValuesResponse, Series, SeriesRequest, SeriesResponse, ZLabelSet,
};
use gauntlet_tsdb::block::{BlockMeta, SeriesEntry, Ulid};
use gauntlet_tsdb::labels::Labels;
use object_store::ObjectStore;
use object_store::path::Path;

use self::block::{BucketBlock, ReadError};
use self::cache::LruCache;
use self::metrics::BucketMetrics;
use crate::promql::Matcher;
use crate::query::endpoints::labels_to_proto;
use crate::query::matchers::compile_matchers;
use crate::query::store::{SeriesStream, Store, StoreError};

/// Series read per block and batch by default: a request's postings are resolved at once (4
/// bytes a series), its series entries and chunks one batch at a time as the answer is consumed.
pub const SERIES_BATCH_SIZE: usize = 4096;

/// A Series answer that read at least this many bytes of chunks hands the memory back to the
/// operating system when it ends.
const RELEASE_MEMORY_AFTER_BYTES: u64 = 8 << 20;

/// Settings of a [`BucketStore`].
#[derive(Debug, Clone)]
pub struct BucketStoreConfig {
    /// Where index-headers are kept.
    pub data_dir: PathBuf,
    /// Serve only blocks ending after this time (ms).
    pub min_time: Option<i64>,
    /// Serve only blocks starting before this time (ms).
    pub max_time: Option<i64>,
    /// Bytes of postings and series entries kept in memory.
    pub index_cache_bytes: u64,
    /// Bytes of chunks kept in memory by the chunk cache (0: no chunk cache).
    pub chunk_cache_bytes: u64,
    /// Most bytes of chunks the Series requests in flight hold at once.
    pub chunk_pool_bytes: u64,
    /// Most series one request may select (0: unlimited).
    pub series_limit: u64,
    /// Most samples one request may return (0: unlimited).
    pub samples_limit: u64,
    /// Series whose entries and chunks are read, and answered, at a time per block.
    pub series_batch_size: usize,
    /// One postings offset table value in this many is kept in memory per label name.
    pub postings_offsets_sampling: usize,
}

impl BucketStoreConfig {
    /// Defaults as `gauntlet store` has them, with index-headers under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            min_time: None,
            max_time: None,
            index_cache_bytes: 250 << 20,
            chunk_cache_bytes: 0,
            chunk_pool_bytes: 2 << 30,
            series_limit: 0,
            samples_limit: 0,
            series_batch_size: SERIES_BATCH_SIZE,
            postings_offsets_sampling: postings_table::DEFAULT_SAMPLING,
        }
    }
}

/// What one sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncSummary {
    /// Blocks added.
    pub added: usize,
    /// Blocks dropped (deleted, marked for deletion, or outside the time range).
    pub dropped: usize,
    /// Blocks that could not be loaded (retried at the next sync).
    pub failed: usize,
    /// Index-headers built from the bucket (the others came from the local disk).
    pub headers_built: usize,
}

/// Blocks in a bucket served over the StoreAPI.
pub struct BucketStore {
    bucket: Arc<dyn ObjectStore>,
    config: BucketStoreConfig,
    blocks: RwLock<BTreeMap<Ulid, Arc<BucketBlock>>>,
    index_cache: Arc<LruCache>,
    chunk_cache: Arc<LruCache>,
    chunk_pool: Arc<ChunkPool>,
}

impl BucketStore {
    /// A store over `bucket` with no blocks loaded yet: call [`Self::sync`].
    pub fn new(bucket: Arc<dyn ObjectStore>, config: BucketStoreConfig) -> Self {
        let index_cache = Arc::new(LruCache::new("index", config.index_cache_bytes));
        let chunk_cache = Arc::new(LruCache::new("chunks", config.chunk_cache_bytes));
        let chunk_pool = Arc::new(ChunkPool::new(config.chunk_pool_bytes));
        Self {
            bucket,
            config,
            blocks: RwLock::new(BTreeMap::new()),
            index_cache,
            chunk_cache,
            chunk_pool,
        }
    }

    /// The blocks served now.
    pub fn blocks(&self) -> Vec<Arc<BucketBlock>> {
        self.blocks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn in_time_range(&self, meta: &BlockMeta) -> bool {
        self.config.min_time.is_none_or(|t| meta.max_time > t)
            && self.config.max_time.is_none_or(|t| meta.min_time < t)
    }

    /// Looks for new, deleted and deletion-marked blocks and updates the served set. Only a
    /// failure to list the bucket is an error; a block that fails to load is logged, counted
    /// and tried again next time.
    pub async fn sync(&self) -> Result<SyncSummary, fetch::FetchError> {
        let mut summary = SyncSummary::default();
        let dirs = fetch::list_top_level(self.bucket.as_ref()).await?;
        let mut present: HashSet<Ulid> = HashSet::new();
        let known: HashSet<Ulid> = self
            .blocks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        for dir in dirs {
            let Ok(id) = Ulid::parse(&dir) else {
                continue;
            };
            let marked = fetch::exists(
                self.bucket.as_ref(),
                &Path::from(format!("{dir}/deletion-mark.json")),
            )
            .await?;
            if marked {
                continue;
            }
            if known.contains(&id) {
                present.insert(id);
                continue;
            }
            let meta = match fetch::get(
                self.bucket.as_ref(),
                &Path::from(format!("{dir}/meta.json")),
            )
            .await
            {
                Ok(bytes) => bytes,
                Err(fetch::FetchError::NotFound(_)) => continue,
                Err(error) => {
                    tracing::warn!(block = %dir, %error, "cannot read meta.json");
                    summary.failed += 1;
                    BucketMetrics::get()
                        .block_load_failures
                        .with_label_values(&["meta"])
                        .inc();
                    continue;
                }
            };
            let meta = match BlockMeta::parse(&meta) {
                Ok(meta) => meta,
                Err(error) => {
                    tracing::warn!(block = %dir, %error, "invalid meta.json; block skipped");
                    summary.failed += 1;
                    BucketMetrics::get()
                        .block_load_failures
                        .with_label_values(&["meta"])
                        .inc();
                    continue;
                }
            };
            if !self.in_time_range(&meta) {
                continue;
            }
            if meta.resolution() != 0 {
                // Downsampled chunks are Thanos aggregates this store does not decode yet.
                tracing::debug!(block = %dir, resolution = meta.resolution(), "downsampled block not served");
                continue;
            }
            let loaded = BucketBlock::load(
                self.bucket.clone(),
                id,
                meta,
                &self.config.data_dir,
                self.config.postings_offsets_sampling,
            )
            .await;
            match loaded {
                Ok((block, built)) => {
                    summary.added += 1;
                    summary.headers_built += usize::from(built);
                    present.insert(id);
                    self.blocks
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(id, Arc::new(block));
                }
                Err(error) => {
                    tracing::warn!(block = %dir, %error, "cannot load block; retrying at the next sync");
                    summary.failed += 1;
                    BucketMetrics::get()
                        .block_load_failures
                        .with_label_values(&["index"])
                        .inc();
                }
            }
        }
        let dropped: Vec<(Ulid, u64)> = {
            let mut blocks = self
                .blocks
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let gone: Vec<(Ulid, u64)> = blocks
                .iter()
                .filter(|(id, _)| !present.contains(*id))
                .map(|(id, block)| (*id, block.cache_id()))
                .collect();
            for (id, _) in &gone {
                blocks.remove(id);
            }
            // Several stores may share the process (the demo has one per simulated
            // Prometheus): the gauge is their total.
            let added = i64::try_from(summary.added).unwrap_or(i64::MAX);
            let dropped = i64::try_from(gone.len()).unwrap_or(i64::MAX);
            BucketMetrics::get().blocks_loaded.add(added - dropped);
            gone
        };
        for (id, cache_id) in dropped {
            summary.dropped += 1;
            self.index_cache.forget_block(cache_id);
            self.chunk_cache.forget_block(cache_id);
            let _ = tokio::fs::remove_dir_all(self.config.data_dir.join(id.to_string())).await;
            tracing::info!(block = %id, "block dropped");
        }
        if summary.added > 0 || summary.dropped > 0 {
            tracing::info!(
                added = summary.added,
                dropped = summary.dropped,
                failed = summary.failed,
                "blocks synced"
            );
        }
        Ok(summary)
    }

    /// Blocks overlapping `[min_time, max_time]` whose external labels can match, each with
    /// the matchers left for its index.
    fn selected(
        &self,
        matchers: &[Matcher],
        min_time: i64,
        max_time: i64,
    ) -> Vec<(Arc<BucketBlock>, Vec<Matcher>)> {
        self.blocks()
            .into_iter()
            .filter(|b| b.overlaps(min_time, max_time))
            .filter_map(|b| {
                let m = b.index_matchers(matchers)?;
                Some((b, m))
            })
            .collect()
    }

    /// Resolves the postings of `blocks` concurrently (series references only, 4 bytes a
    /// series) and returns a cursor per block that reads its series batch by batch, with the
    /// failures of the blocks that could not.
    async fn cursors(
        &self,
        blocks: Vec<(Arc<BucketBlock>, Vec<Matcher>)>,
        budget: &SeriesBudget,
    ) -> (Vec<BlockCursor>, Vec<BlockFailure>) {
        let batch = self.config.series_batch_size.max(1);
        self.over_blocks(blocks, |block, m| async move {
            let refs = block
                .select(&m, &self.index_cache)
                .await
                .map_err(|error| BlockFailure::read(&block, &error))?;
            // As Thanos does, the series limit bounds what the postings select, before any
            // series entry is read.
            budget.check_selected(refs.len())?;
            Ok(BlockCursor::new(block, refs, batch))
        })
        .await
    }

    /// How a request with this time range reads series.
    fn series_read(
        &self,
        min_time: i64,
        max_time: i64,
        skip_chunks: bool,
        budget: SeriesBudget,
    ) -> SeriesRead {
        SeriesRead {
            index_cache: self.index_cache.clone(),
            chunk_cache: self.chunk_cache.clone(),
            chunk_pool: self.chunk_pool.clone(),
            min_time,
            max_time,
            skip_chunks,
            budget,
            chunk_bytes: 0.into(),
        }
    }

    /// Runs `each` over every selected block concurrently, collecting answers and failures.
    async fn over_blocks<T, F, Fut>(
        &self,
        blocks: Vec<(Arc<BucketBlock>, Vec<Matcher>)>,
        each: F,
    ) -> (Vec<T>, Vec<BlockFailure>)
    where
        F: Fn(Arc<BucketBlock>, Vec<Matcher>) -> Fut,
        Fut: std::future::Future<Output = Result<T, BlockFailure>>,
    {
        let results = futures::future::join_all(blocks.into_iter().map(|(b, m)| each(b, m))).await;
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        for r in results {
            match r {
                Ok(v) => ok.push(v),
                Err(e) => failed.push(e),
            }
        }
        (ok, failed)
    }

    /// Calls `each` with the labels of every series of `blocks` matching their matchers (no
    /// chunk is read), one block and one batch at a time; returns the failures.
    async fn matching_labels(
        &self,
        blocks: Vec<(Arc<BucketBlock>, Vec<Matcher>)>,
        mut each: impl FnMut(&Labels) + Send,
    ) -> Vec<BlockFailure> {
        let budget = SeriesBudget::new(self.config.series_limit, 0);
        let (cursors, mut failures) = self.cursors(blocks, &budget).await;
        let read = self.series_read(i64::MIN, i64::MAX, true, budget);
        for mut cursor in cursors {
            while !cursor.is_done() {
                if let Err(failure) = cursor.fill(&read).await {
                    let limit = matches!(failure, BlockFailure::Limit(_));
                    failures.push(failure);
                    if limit {
                        return failures;
                    }
                    break;
                }
                for (labels, _) in cursor.pending.drain(..) {
                    each(&labels);
                }
            }
        }
        failures
    }
}

impl Drop for BucketStore {
    fn drop(&mut self) {
        let loaded = self
            .blocks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        BucketMetrics::get()
            .blocks_loaded
            .sub(i64::try_from(loaded).unwrap_or(i64::MAX));
    }
}

/// Why a block could not answer.
#[derive(Debug, Clone)]
enum BlockFailure {
    /// The block's files are unreadable or corrupt: a warning under partial response.
    Read(String),
    /// The request exceeded a limit: always an error.
    Limit(StoreError),
}

impl BlockFailure {
    fn read(block: &BucketBlock, error: &ReadError) -> Self {
        Self::Read(format!("block {}: {error}", block.id))
    }

    fn into_warning(self) -> Result<String, StoreError> {
        match self {
            Self::Read(message) => Ok(message),
            Self::Limit(error) => Err(error),
        }
    }
}

/// Counts series and samples of one request against the limits.
struct SeriesBudget {
    series_limit: u64,
    samples_limit: u64,
    series: std::sync::atomic::AtomicU64,
    samples: std::sync::atomic::AtomicU64,
}

impl SeriesBudget {
    fn new(series_limit: u64, samples_limit: u64) -> Self {
        Self {
            series_limit,
            samples_limit,
            series: 0.into(),
            samples: 0.into(),
        }
    }

    fn check_selected(&self, selected: usize) -> Result<(), BlockFailure> {
        if self.series_limit > 0 && selected as u64 > self.series_limit {
            return Err(self.series_error());
        }
        Ok(())
    }

    fn series_error(&self) -> BlockFailure {
        BlockFailure::Limit(StoreError::ResourceExhausted(format!(
            "exceeded series limit of {}: narrow the matchers or raise --store.limits.request-series",
            self.series_limit
        )))
    }

    fn add_series(&self) -> Result<(), BlockFailure> {
        let n = self
            .series
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if self.series_limit > 0 && n > self.series_limit {
            return Err(self.series_error());
        }
        Ok(())
    }

    fn add_samples(&self, samples: u64) -> Result<(), BlockFailure> {
        let n = self
            .samples
            .fetch_add(samples, std::sync::atomic::Ordering::Relaxed)
            + samples;
        if self.samples_limit > 0 && n > self.samples_limit {
            return Err(BlockFailure::Limit(StoreError::ResourceExhausted(format!(
                "exceeded samples limit of {}: narrow the matchers or the time range, or raise --store.limits.request-samples",
                self.samples_limit
            ))));
        }
        Ok(())
    }
}

/// Splits failures into warnings, or the error to return: a limit always, a block failure
/// when partial response is disabled.
fn warnings(
    failures: Vec<BlockFailure>,
    partial_response_disabled: bool,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::with_capacity(failures.len());
    for f in failures {
        let message = f.into_warning()?;
        if partial_response_disabled {
            return Err(StoreError::Internal(message));
        }
        out.push(message);
    }
    Ok(out)
}

/// How one request reads series: the caches, its time range and its limits.
struct SeriesRead {
    index_cache: Arc<LruCache>,
    chunk_cache: Arc<LruCache>,
    chunk_pool: Arc<ChunkPool>,
    min_time: i64,
    max_time: i64,
    skip_chunks: bool,
    budget: SeriesBudget,
    /// Bytes of chunks read so far.
    chunk_bytes: std::sync::atomic::AtomicU64,
}

impl SeriesRead {
    /// The series `refs` of `block`, in the order of `refs`, with their chunks in the time
    /// range (none when `skip_chunks`); series without such chunks are left out.
    async fn batch(
        &self,
        block: &BucketBlock,
        refs: &[u32],
    ) -> Result<(Vec<(Labels, Vec<AggrChunk>)>, Option<PoolLease>), BlockFailure> {
        let fail = |error: ReadError| BlockFailure::read(block, &error);
        let entries: Vec<SeriesEntry> =
            block.series(refs, &self.index_cache).await.map_err(fail)?;
        let mut wanted = Vec::new();
        let mut owners = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let before = wanted.len();
            wanted.extend(
                entry
                    .chunks
                    .iter()
                    .filter(|c| c.max_time >= self.min_time && c.min_time <= self.max_time),
            );
            if wanted.len() == before {
                continue;
            }
            self.budget.add_series()?;
            owners.push((i, before..wanted.len()));
        }
        let mut entries: Vec<Option<SeriesEntry>> = entries.into_iter().map(Some).collect();
        let mut out = Vec::with_capacity(owners.len());
        if self.skip_chunks {
            for (i, _) in owners {
                if let Some(entry) = entries[i].take() {
                    out.push((entry.labels, Vec::new()));
                }
            }
            return Ok((out, None));
        }
        let chunks = block
            .chunks(&wanted, &self.chunk_cache)
            .await
            .map_err(fail)?;
        drop(wanted);
        let bytes = chunks.iter().map(|c| c.data.len() as u64).sum();
        self.chunk_bytes
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        let lease = self.chunk_pool.lease(bytes)?;
        for (i, range) in owners {
            let mut aggr = Vec::with_capacity(range.len());
            for c in &chunks[range] {
                let samples = c
                    .data
                    .get(..2)
                    .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                self.budget.add_samples(u64::from(samples))?;
                let encoding = match c.encoding {
                    2 => Encoding::Histogram,
                    3 => Encoding::FloatHistogram,
                    _ => Encoding::Xor,
                };
                aggr.push(AggrChunk {
                    min_time: c.meta.min_time,
                    max_time: c.meta.max_time,
                    raw: Some(Chunk {
                        r#type: encoding as i32,
                        data: c.data.clone(),
                        hash: 0,
                    }),
                    ..AggrChunk::default()
                });
            }
            if let Some(entry) = entries[i].take() {
                out.push((entry.labels, aggr));
            }
        }
        Ok((out, Some(lease)))
    }
}

/// The chunk bytes held by the Series requests in flight, bounded by `--chunk-pool-size`:
/// each block's batch of chunks holds a lease until its last series is handed out.
struct ChunkPool {
    capacity: u64,
    used: std::sync::atomic::AtomicU64,
}

impl ChunkPool {
    fn new(capacity: u64) -> Self {
        Self {
            capacity,
            used: 0.into(),
        }
    }

    /// Counts `bytes` as held until the lease is dropped, or fails when that would pass the
    /// pool's capacity.
    fn lease(self: &Arc<Self>, bytes: u64) -> Result<PoolLease, BlockFailure> {
        use std::sync::atomic::Ordering;
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.saturating_add(bytes);
            if next > self.capacity {
                return Err(BlockFailure::Limit(StoreError::ResourceExhausted(format!(
                    "chunk pool exhausted: {bytes} bytes of chunks wanted with {used} of {} in use; retry later or raise --chunk-pool-size",
                    self.capacity
                ))));
            }
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Ok(PoolLease {
                        pool: self.clone(),
                        bytes,
                    });
                }
                Err(now) => used = now,
            }
        }
    }
}

/// Bytes of a [`ChunkPool`] in use until dropped.
struct PoolLease {
    pool: Arc<ChunkPool>,
    bytes: u64,
}

impl Drop for PoolLease {
    fn drop(&mut self) {
        self.pool
            .used
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

/// One block's part of a request: the series references its postings selected, and the
/// series read from them but not answered yet (at most one batch).
struct BlockCursor {
    block: Arc<BucketBlock>,
    refs: Vec<u32>,
    /// The references before this position have been read.
    next: usize,
    /// References read at a time.
    batch: usize,
    pending: VecDeque<(Labels, Vec<AggrChunk>)>,
    /// The chunk pool's bytes held for `pending`.
    lease: Option<PoolLease>,
}

impl BlockCursor {
    fn new(block: Arc<BucketBlock>, refs: Vec<u32>, batch: usize) -> Self {
        // Series come out of an index in label order, and adding the same external labels to
        // each keeps that order, unless an external label's name is also in the index (its
        // value then replaces the series' own): such a block is read at once and sorted.
        let batch = if block.external_labels_in_index() {
            usize::MAX
        } else {
            batch
        };
        Self {
            block,
            refs,
            next: 0,
            batch,
            pending: VecDeque::new(),
            lease: None,
        }
    }

    /// Whether every selected series has been read and handed out.
    fn is_done(&self) -> bool {
        self.pending.is_empty() && self.next >= self.refs.len()
    }

    /// Reads batches until one holds series (some may have no chunk in the time range) or
    /// the references run out.
    async fn fill(&mut self, read: &SeriesRead) -> Result<(), BlockFailure> {
        while self.pending.is_empty() && self.next < self.refs.len() {
            // The previous batch has been handed out: its chunks are the caller's now.
            self.lease = None;
            let end = self.next.saturating_add(self.batch).min(self.refs.len());
            let (mut series, lease) = read.batch(&self.block, &self.refs[self.next..end]).await?;
            self.lease = lease;
            self.next = end;
            if self.batch == usize::MAX {
                series = sorted_unique(series);
            }
            self.pending.extend(series);
        }
        if self.next >= self.refs.len() {
            self.refs = Vec::new();
            self.next = 0;
        }
        Ok(())
    }

    /// Gives up the rest of the block (after a failure under partial response).
    fn abandon(&mut self) {
        self.refs = Vec::new();
        self.next = 0;
        self.pending.clear();
        self.lease = None;
    }
}

/// The frames of one Series answer: warnings first, then the blocks' series merged in label
/// order (a series in several blocks once, its chunks in time order), reading one batch per
/// block at a time as the frames are consumed, so the gRPC stream's flow control bounds
/// what is in memory.
struct SeriesMerge {
    read: SeriesRead,
    cursors: Vec<BlockCursor>,
    warnings: VecDeque<String>,
    partial_response_disabled: bool,
    ended: bool,
}

impl SeriesMerge {
    /// The next frame; `None` after the last one or after an error.
    async fn next_frame(&mut self) -> Option<Result<SeriesResponse, StoreError>> {
        loop {
            if let Some(warning) = self.warnings.pop_front() {
                return Some(Ok(SeriesResponse {
                    result: Some(Frame::Warning(warning)),
                }));
            }
            if self.ended {
                return None;
            }
            let read = &self.read;
            let failures: Vec<(usize, BlockFailure)> = futures::future::join_all(
                self.cursors
                    .iter_mut()
                    .enumerate()
                    .filter(|(_, c)| c.pending.is_empty() && !c.is_done())
                    .map(|(i, c)| async move { c.fill(read).await.err().map(|e| (i, e)) }),
            )
            .await
            .into_iter()
            .flatten()
            .collect();
            for (i, failure) in failures {
                match failure.into_warning() {
                    Err(error) => {
                        self.ended = true;
                        return Some(Err(error));
                    }
                    Ok(message) if self.partial_response_disabled => {
                        self.ended = true;
                        return Some(Err(StoreError::Internal(message)));
                    }
                    Ok(message) => {
                        self.cursors[i].abandon();
                        self.warnings.push_back(message);
                    }
                }
            }
            self.cursors.retain(|c| !c.is_done());
            if !self.warnings.is_empty() {
                continue;
            }
            let Some(first) = self
                .cursors
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.pending.front().map(|(labels, _)| (i, labels)))
                .min_by(|a, b| a.1.cmp(b.1))
                .map(|(i, _)| i)
            else {
                self.ended = true;
                return None;
            };
            let (labels, mut chunks) = self.cursors[first].pending.pop_front()?;
            let mut merged = false;
            for cursor in &mut self.cursors {
                if cursor.pending.front().is_some_and(|(l, _)| *l == labels)
                    && let Some((_, more)) = cursor.pending.pop_front()
                {
                    chunks.extend(more);
                    merged = true;
                }
            }
            if merged {
                merge_chunks(&mut chunks);
            }
            return Some(Ok(SeriesResponse {
                result: Some(Frame::Series(Series {
                    labels: labels_to_proto(&labels),
                    chunks,
                })),
            }));
        }
    }
}

impl Drop for SeriesMerge {
    fn drop(&mut self) {
        // The answer's batches are freed now; after a large one, the allocator is asked to
        // give the memory back rather than keep it for the next.
        let read = self
            .read
            .chunk_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        if read >= RELEASE_MEMORY_AFTER_BYTES {
            self.cursors.clear();
            crate::allocator::release_free_memory();
        }
    }
}

/// Chunks of one series from several blocks in time order, exact duplicates (the same chunk
/// in overlapping blocks) once.
fn merge_chunks(chunks: &mut Vec<AggrChunk>) {
    chunks.sort_by_key(|c| (c.min_time, c.max_time));
    chunks.dedup_by(|a, b| a.min_time == b.min_time && a.max_time == b.max_time && a.raw == b.raw);
}

/// `series` sorted by labels, identical label sets as one.
fn sorted_unique(mut series: Vec<(Labels, Vec<AggrChunk>)>) -> Vec<(Labels, Vec<AggrChunk>)> {
    series.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(Labels, Vec<AggrChunk>)> = Vec::with_capacity(series.len());
    for (labels, chunks) in series {
        match out.last_mut() {
            Some((last, existing)) if *last == labels => {
                existing.extend(chunks);
                merge_chunks(existing);
            }
            _ => out.push((labels, chunks)),
        }
    }
    out
}

#[async_trait]
impl Store for BucketStore {
    async fn info(&self) -> Result<InfoResponse, StoreError> {
        let blocks = self.blocks();
        let min_time = blocks
            .iter()
            .map(|b| b.meta.min_time)
            .min()
            .unwrap_or(i64::MAX);
        let max_time = blocks
            .iter()
            .map(|b| b.meta.max_time)
            .max()
            .unwrap_or(i64::MIN);
        let sets: BTreeSet<Labels> = blocks.iter().map(|b| b.external_labels.clone()).collect();
        Ok(InfoResponse {
            label_sets: sets
                .iter()
                .map(|l| ZLabelSet {
                    labels: labels_to_proto(l),
                })
                .collect(),
            component_type: "store".to_owned(),
            store: Some(StoreInfo {
                min_time,
                max_time,
                supports_without_replica_labels: false,
                ..StoreInfo::default()
            }),
            ..InfoResponse::default()
        })
    }

    async fn series(&self, request: SeriesRequest) -> Result<SeriesStream, StoreError> {
        if request.min_time > request.max_time {
            return Err(StoreError::InvalidArgument(format!(
                "min_time {} after max_time {}",
                request.min_time, request.max_time
            )));
        }
        let matchers = compile_matchers(&request.matchers)?.0;
        let (min_time, max_time) = (request.min_time, request.max_time);
        let blocks = self.selected(&matchers, min_time, max_time);
        let budget = SeriesBudget::new(self.config.series_limit, self.config.samples_limit);
        let (cursors, failures) = self.cursors(blocks, &budget).await;
        let warnings = warnings(failures, request.partial_response_disabled)?;
        let merge = SeriesMerge {
            read: self.series_read(min_time, max_time, request.skip_chunks, budget),
            cursors,
            warnings: warnings.into(),
            partial_response_disabled: request.partial_response_disabled,
            ended: false,
        };
        Ok(Box::pin(futures::stream::unfold(
            merge,
            |mut merge| async move {
                let frame = merge.next_frame().await?;
                Some((frame, merge))
            },
        )))
    }

    async fn label_names(
        &self,
        request: LabelNamesRequest,
    ) -> Result<LabelNamesResponse, StoreError> {
        let matchers = compile_matchers(&request.matchers)?.0;
        let mut names = BTreeSet::new();
        let mut by_series = Vec::new();
        for (block, m) in self.selected(&matchers, request.start, request.end) {
            if m.is_empty() {
                names.extend(block.label_names().map(str::to_owned));
            } else {
                by_series.push((block, m));
            }
        }
        let failures = self
            .matching_labels(by_series, |labels| {
                for l in labels.iter() {
                    if !names.contains(l.name.as_str()) {
                        names.insert(l.name.clone());
                    }
                }
            })
            .await;
        let warnings = warnings(failures, request.partial_response_disabled)?;
        Ok(LabelNamesResponse {
            names: names.into_iter().collect(),
            warnings,
            ..LabelNamesResponse::default()
        })
    }

    async fn label_values(
        &self,
        request: LabelValuesRequest,
    ) -> Result<LabelValuesResponse, StoreError> {
        let matchers = compile_matchers(&request.matchers)?.0;
        let mut values = BTreeSet::new();
        let mut by_series = Vec::new();
        let mut failures = Vec::new();
        for (block, m) in self.selected(&matchers, request.start, request.end) {
            if !m.is_empty() {
                by_series.push((block, m));
                continue;
            }
            match block.label_values(&request.label) {
                Ok(found) => values.extend(found),
                Err(error) => failures.push(BlockFailure::read(&block, &error)),
            }
        }
        let label = request.label.as_str();
        let mut by_series_failures = self
            .matching_labels(by_series, |labels| {
                if let Some(v) = labels.get(label)
                    && !values.contains(v)
                {
                    values.insert(v.to_owned());
                }
            })
            .await;
        failures.append(&mut by_series_failures);
        let warnings = warnings(failures, request.partial_response_disabled)?;
        Ok(LabelValuesResponse {
            values: values.into_iter().collect(),
            warnings,
            ..LabelValuesResponse::default()
        })
    }
}
