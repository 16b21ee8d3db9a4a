//! The store gateway: [`BucketStore`] serves the blocks in an object storage bucket through
//! the [`Store`] trait.
//!
//! Blocks are discovered by listing `ULID/meta.json` at start and every sync period; blocks
//! still being uploaded (no `meta.json`), marked for deletion (`deletion-mark.json`) or
//! downsampled (not decoded yet) are never served, and blocks that vanish are dropped. Each
//! block keeps a small index-header on local disk ([`header`]); postings, series and chunks are
//! read with range requests on demand and cached in byte-bounded LRU caches. A block whose
//! files are corrupt or unreadable fails alone: its error becomes a warning (partial response)
//! or the request's error when partial response is disabled. Nothing here panics on bucket
//! contents.

pub mod block;
pub mod cache;
pub mod fetch;
pub mod header;
pub mod metrics;
pub mod parse;

use std::collections::{BTreeMap, BTreeSet, HashSet};
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
    /// Bytes of chunks kept in memory.
    pub chunk_cache_bytes: u64,
    /// Most series one request may select (0: unlimited).
    pub series_limit: u64,
    /// Most samples one request may return (0: unlimited).
    pub samples_limit: u64,
}

impl BucketStoreConfig {
    /// Defaults as `gauntlet store` has them, with index-headers under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            min_time: None,
            max_time: None,
            index_cache_bytes: 250 << 20,
            chunk_cache_bytes: 2 << 30,
            series_limit: 0,
            samples_limit: 0,
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
    index_cache: LruCache,
    chunk_cache: LruCache,
}

impl BucketStore {
    /// A store over `bucket` with no blocks loaded yet: call [`Self::sync`].
    pub fn new(bucket: Arc<dyn ObjectStore>, config: BucketStoreConfig) -> Self {
        let index_cache = LruCache::new("index", config.index_cache_bytes);
        let chunk_cache = LruCache::new("chunks", config.chunk_cache_bytes);
        Self {
            bucket,
            config,
            blocks: RwLock::new(BTreeMap::new()),
            index_cache,
            chunk_cache,
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
            match BucketBlock::load(self.bucket.clone(), id, meta, &self.config.data_dir).await {
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
        let dropped: Vec<Ulid> = {
            let mut blocks = self
                .blocks
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let gone: Vec<Ulid> = blocks
                .keys()
                .filter(|id| !present.contains(id))
                .copied()
                .collect();
            for id in &gone {
                blocks.remove(id);
            }
            // Several stores may share the process (the demo has one per simulated
            // Prometheus): the gauge is their total.
            let added = i64::try_from(summary.added).unwrap_or(i64::MAX);
            let dropped = i64::try_from(gone.len()).unwrap_or(i64::MAX);
            BucketMetrics::get().blocks_loaded.add(added - dropped);
            gone
        };
        for id in dropped {
            summary.dropped += 1;
            self.index_cache.forget_block(id.0);
            self.chunk_cache.forget_block(id.0);
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

    /// The series of one block matching `matchers`, with chunks in `[min_time, max_time]`
    /// (none when `skip_chunks`); series without such chunks are left out.
    async fn block_series(
        &self,
        block: &BucketBlock,
        matchers: &[Matcher],
        min_time: i64,
        max_time: i64,
        skip_chunks: bool,
        budget: &SeriesBudget,
    ) -> Result<Vec<(Labels, Vec<AggrChunk>)>, BlockFailure> {
        let fail = |error: ReadError| BlockFailure::Read(format!("block {}: {error}", block.id));
        let refs = block
            .select(matchers, &self.index_cache)
            .await
            .map_err(fail)?;
        // As Thanos does, the series limit bounds what the postings select, before any
        // series entry is read.
        budget.check_selected(refs.len())?;
        let entries: Vec<SeriesEntry> =
            block.series(&refs, &self.index_cache).await.map_err(fail)?;
        let mut out = Vec::with_capacity(entries.len());
        let mut wanted = Vec::new();
        let mut owners = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let before = wanted.len();
            wanted.extend(
                entry
                    .chunks
                    .iter()
                    .filter(|c| c.max_time >= min_time && c.min_time <= max_time),
            );
            if wanted.len() == before {
                continue;
            }
            budget.add_series()?;
            owners.push((i, before..wanted.len()));
        }
        if skip_chunks {
            for (i, _) in owners {
                out.push((entries[i].labels.clone(), Vec::new()));
            }
            return Ok(out);
        }
        let chunks = block
            .chunks(&wanted, &self.chunk_cache)
            .await
            .map_err(fail)?;
        for (i, range) in owners {
            let mut aggr = Vec::with_capacity(range.len());
            for c in &chunks[range] {
                let samples = c
                    .data
                    .get(..2)
                    .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                budget.add_samples(u64::from(samples))?;
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
            out.push((entries[i].labels.clone(), aggr));
        }
        Ok(out)
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

    /// Label names or values of series matching `matchers` in the time range, from series
    /// entries (no chunk is read).
    async fn matching_labels(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> (Vec<Vec<Labels>>, Vec<BlockFailure>) {
        let blocks = self.selected(matchers, start, end);
        let budget = SeriesBudget::new(self.config.series_limit, 0);
        self.over_blocks(blocks, |block, m| {
            let budget = &budget;
            async move {
                let series = self
                    .block_series(&block, &m, i64::MIN, i64::MAX, true, budget)
                    .await?;
                Ok(series.into_iter().map(|(l, _)| l).collect())
            }
        })
        .await
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

/// Merges identical series from several blocks: chunks in time order, exact duplicates (the
/// same chunk in overlapping blocks) once.
fn merge_series(parts: Vec<Vec<(Labels, Vec<AggrChunk>)>>) -> BTreeMap<Labels, Vec<AggrChunk>> {
    let mut merged: BTreeMap<Labels, Vec<AggrChunk>> = BTreeMap::new();
    let single = parts.len() == 1;
    for part in parts {
        for (labels, chunks) in part {
            merged.entry(labels).or_default().extend(chunks);
        }
    }
    if !single {
        for chunks in merged.values_mut() {
            chunks.sort_by_key(|c| (c.min_time, c.max_time));
            chunks.dedup_by(|a, b| {
                a.min_time == b.min_time && a.max_time == b.max_time && a.raw == b.raw
            });
        }
    }
    merged
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
        let (parts, failures) = self
            .over_blocks(blocks, |block, m| {
                let budget = &budget;
                async move {
                    self.block_series(&block, &m, min_time, max_time, request.skip_chunks, budget)
                        .await
                }
            })
            .await;
        let warnings = warnings(failures, request.partial_response_disabled)?;
        let merged = merge_series(parts);
        let frames = warnings
            .into_iter()
            .map(|w| {
                Ok(SeriesResponse {
                    result: Some(Frame::Warning(w)),
                })
            })
            .chain(merged.into_iter().map(|(labels, chunks)| {
                Ok(SeriesResponse {
                    result: Some(Frame::Series(Series {
                        labels: labels_to_proto(&labels),
                        chunks,
                    })),
                })
            }))
            .collect::<Vec<_>>();
        Ok(Box::pin(futures::stream::iter(frames)))
    }

    async fn label_names(
        &self,
        request: LabelNamesRequest,
    ) -> Result<LabelNamesResponse, StoreError> {
        let matchers = compile_matchers(&request.matchers)?.0;
        let mut names = BTreeSet::new();
        let mut failures = Vec::new();
        let mut by_series = Vec::new();
        for (block, m) in self.selected(&matchers, request.start, request.end) {
            if m.is_empty() {
                names.extend(block.label_names().map(str::to_owned));
            } else {
                by_series.push((block, m));
            }
        }
        if !by_series.is_empty() {
            let (found, failed) = self
                .over_blocks(by_series, |block, m| async move {
                    let budget = SeriesBudget::new(self.config.series_limit, 0);
                    let series = self
                        .block_series(&block, &m, i64::MIN, i64::MAX, true, &budget)
                        .await?;
                    Ok(series.into_iter().map(|(l, _)| l).collect::<Vec<_>>())
                })
                .await;
            failures = failed;
            for labels in found.into_iter().flatten() {
                names.extend(labels.iter().map(|l| l.name.clone()));
            }
        }
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
        let mut by_series = false;
        for (block, m) in self.selected(&matchers, request.start, request.end) {
            if m.is_empty() {
                values.extend(
                    block
                        .label_values(&request.label)
                        .into_iter()
                        .map(str::to_owned),
                );
            } else {
                by_series = true;
            }
        }
        let mut failures = Vec::new();
        if by_series {
            let (found, failed) = self
                .matching_labels(&matchers, request.start, request.end)
                .await;
            failures = failed;
            for labels in found.into_iter().flatten() {
                if let Some(v) = labels.get(&request.label) {
                    values.insert(v.to_owned());
                }
            }
        }
        let warnings = warnings(failures, request.partial_response_disabled)?;
        Ok(LabelValuesResponse {
            values: values.into_iter().collect(),
            warnings,
            ..LabelValuesResponse::default()
        })
    }
}
