//! One block in the bucket as the store gateway serves it: its `meta.json`, its local
//! index-header, and the reads that resolve matchers to series and series to chunks.
//!
//! Postings lists, series entries and chunks are read on demand with range requests, nearby
//! ranges coalesced, and kept in the shared caches. Lengths that the index does not record
//! (series entries, chunks) are estimated and checked: a short read is completed with one
//! exact request. Corrupt bytes are a [`ReadError`] for this block only, never a panic.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use gauntlet_tsdb::block::chunks::{MAX_CHUNK_LEN_FIELD, segment_file_name};
use gauntlet_tsdb::block::index::{SERIES_ALIGNMENT, decode_series_with_len, series_entry_len};
use gauntlet_tsdb::block::postings::{intersect, subtract, union};
use gauntlet_tsdb::block::{
    BlockError, BlockMeta, ChunkMeta, ChunkRef, SeriesEntry, Ulid, decode_chunk, decode_postings,
};
use gauntlet_tsdb::labels::Labels;
use object_store::ObjectStore;
use object_store::path::Path;

use super::cache::{CacheKey, ItemKind, LruCache, next_block_id};
use super::fetch;
use super::header::IndexHeader;
pub use super::header::ReadError;
use crate::promql::{MatchKind, Matcher};

/// Estimated size of a chunk whose end is unknown (as Thanos estimates it).
pub const CHUNK_SIZE_ESTIMATE: u64 = 16_000;
/// Estimated size of a series entry when `meta.json` does not record the largest one.
pub const SERIES_SIZE_ESTIMATE: u64 = 1024;

/// A chunk as the store passes it on: encoding (1 XOR, 2 histogram, 3 float histogram) and
/// bytes, untouched.
#[derive(Debug, Clone)]
pub struct FetchedChunk {
    /// The chunk's time range and reference, from the index.
    pub meta: ChunkMeta,
    /// The encoding byte of the segment file.
    pub encoding: u8,
    /// The encoded chunk.
    pub data: Bytes,
}

/// A block the store gateway serves.
pub struct BucketBlock {
    /// The block's ULID.
    pub id: Ulid,
    /// Its entries' id in the caches (unique to this load).
    cache_id: u64,
    /// Its `meta.json`.
    pub meta: BlockMeta,
    /// Its external labels (`thanos.labels`).
    pub external_labels: Labels,
    header: IndexHeader,
    bucket: Arc<dyn ObjectStore>,
    index_path: Path,
    /// Segment files in order with their sizes.
    segments: Vec<(Path, u64)>,
}

impl BucketBlock {
    /// Loads a block: its index-header (from `data_dir/<ULID>/index-header`, or built from the
    /// bucket) and the list of its chunk segment files. Returns whether the header was built
    /// from the bucket.
    pub async fn load(
        bucket: Arc<dyn ObjectStore>,
        id: Ulid,
        meta: BlockMeta,
        data_dir: &FsPath,
        postings_sampling: usize,
    ) -> Result<(Self, bool), ReadError> {
        let prefix = id.to_string();
        let index_path = Path::from(format!("{prefix}/index"));
        let local = data_dir.join(&prefix).join("index-header");
        let (header, built) =
            IndexHeader::load_or_build(bucket.as_ref(), &index_path, &local, postings_sampling)
                .await?;
        let segments = list_segments(bucket.as_ref(), &prefix, &meta).await?;
        let external_labels = Labels::from_pairs(
            &meta
                .external_labels()
                .into_iter()
                .collect::<Vec<(String, String)>>(),
        );
        Ok((
            Self {
                id,
                cache_id: next_block_id(),
                meta,
                external_labels,
                header,
                bucket,
                index_path,
                segments,
            },
            built,
        ))
    }

    fn key(&self, kind: ItemKind, at: u64) -> CacheKey {
        CacheKey::new(self.cache_id, kind, at)
    }

    /// The id its cache entries are kept under.
    pub fn cache_id(&self) -> u64 {
        self.cache_id
    }

    /// Size of the local index-header file.
    pub fn header_size(&self) -> u64 {
        self.header.file_size
    }

    /// Size of the remote index.
    pub fn index_size(&self) -> u64 {
        self.header.index_size
    }

    /// Whether the block holds samples in `[min_time, max_time]` (its `maxTime` is exclusive).
    pub fn overlaps(&self, min_time: i64, max_time: i64) -> bool {
        self.meta.min_time <= max_time && self.meta.max_time > min_time
    }

    /// The matchers left to apply to this block's index after its external labels: a matcher
    /// on an external label that accepts its value is dropped; one that rejects it rules the
    /// block out (`None`).
    pub fn index_matchers(&self, matchers: &[Matcher]) -> Option<Vec<Matcher>> {
        let mut out = Vec::with_capacity(matchers.len());
        for m in matchers {
            match self.external_labels.get(&m.name) {
                Some(value) if m.matches(value) => {}
                Some(_) => return None,
                None => out.push(m.clone()),
            }
        }
        Some(out)
    }

    /// Whether one of the block's external labels is also a label name in its index.
    pub fn external_labels_in_index(&self) -> bool {
        self.external_labels
            .iter()
            .any(|l| self.header.postings.label_names().any(|n| n == l.name))
    }

    /// Label names in the index (external labels added), without reading the bucket.
    pub fn label_names(&self) -> impl Iterator<Item = &str> {
        self.header
            .postings
            .label_names()
            .chain(self.external_labels.iter().map(|l| l.name.as_str()))
    }

    /// Values of `name` in the index (or the external label's value), without reading the
    /// bucket.
    pub fn label_values(&self, name: &str) -> Result<Vec<String>, ReadError> {
        if let Some(value) = self.external_labels.get(name) {
            return Ok(vec![value.to_owned()]);
        }
        self.header.postings.label_values(name)
    }

    /// References of the series selected by `matchers` (already reduced by
    /// [`Self::index_matchers`]), in order: intersect what must match, subtract what must
    /// not, as Prometheus does.
    pub async fn select(
        &self,
        matchers: &[Matcher],
        cache: &LruCache,
    ) -> Result<Vec<u32>, ReadError> {
        let table = &self.header.postings;
        // Per matcher: is it subtracted, and the postings ranges it needs.
        let mut plan: Vec<(bool, Vec<Range<u64>>)> = Vec::with_capacity(matchers.len() + 1);
        let mut any_positive = false;
        for m in matchers {
            if m.matches("") {
                let ranges = table.ranges_matching(&m.name, |v| !m.matches(v))?;
                if !ranges.is_empty() {
                    plan.push((true, ranges));
                }
            } else {
                let ranges: Vec<Range<u64>> = if m.kind == MatchKind::Equal {
                    table.range(&m.name, &m.value)?.into_iter().collect()
                } else {
                    table.ranges_matching(&m.name, |v| m.matches(v))?
                };
                if ranges.is_empty() {
                    return Ok(Vec::new());
                }
                any_positive = true;
                plan.push((false, ranges));
            }
        }
        if !any_positive {
            match table.all_postings_range()? {
                Some(r) => plan.push((false, vec![r])),
                None => return Ok(Vec::new()),
            }
        }
        let wanted: Vec<Range<u64>> = plan.iter().flat_map(|(_, r)| r.iter().cloned()).collect();
        let lists = self.postings(&wanted, cache).await?;
        let mut lists = lists.into_iter();
        let mut positive = Vec::new();
        let mut negative = Vec::new();
        for (subtracted, ranges) in &plan {
            let group: Vec<Vec<u32>> = lists.by_ref().take(ranges.len()).collect();
            if *subtracted {
                negative.push(union(group));
            } else {
                positive.push(union(group));
            }
        }
        let base = intersect(positive);
        Ok(negative.into_iter().fold(base, |acc, n| subtract(&acc, &n)))
    }

    /// The postings lists at `ranges`, from the cache or the bucket.
    async fn postings(
        &self,
        ranges: &[Range<u64>],
        cache: &LruCache,
    ) -> Result<Vec<Vec<u32>>, ReadError> {
        let mut raw: Vec<Option<Bytes>> = ranges
            .iter()
            .map(|r| cache.get(&self.key(ItemKind::Postings, r.start)))
            .collect();
        let missing: Vec<usize> = (0..ranges.len()).filter(|&i| raw[i].is_none()).collect();
        if !missing.is_empty() {
            let want: Vec<Range<u64>> = missing.iter().map(|&i| ranges[i].clone()).collect();
            let got = fetch::get_ranges(&self.bucket, &self.index_path, &want).await?;
            for (i, bytes) in missing.into_iter().zip(got) {
                // The cache keeps a copy of just the list, never the coalesced read it was cut
                // from; this request decodes from the read, freed with it.
                if cache.is_enabled() {
                    cache.put(
                        self.key(ItemKind::Postings, ranges[i].start),
                        Bytes::copy_from_slice(&bytes),
                    );
                }
                raw[i] = Some(bytes);
            }
        }
        raw.into_iter()
            .map(|b| {
                let b = b.unwrap_or_default();
                Ok(decode_postings(&b)?.to_vec()?)
            })
            .collect()
    }

    /// The series entries of `refs`, in order, labels extended by the external labels.
    pub async fn series(
        &self,
        refs: &[u32],
        cache: &LruCache,
    ) -> Result<Vec<SeriesEntry>, ReadError> {
        let series_start = self.header.toc.series;
        let series_end = self.header.series_end();
        let mut raw: Vec<Option<Bytes>> = refs
            .iter()
            .map(|&r| cache.get(&self.key(ItemKind::Series, u64::from(r))))
            .collect();
        let missing: Vec<usize> = (0..refs.len()).filter(|&i| raw[i].is_none()).collect();
        if !missing.is_empty() {
            let estimate = self
                .meta
                .thanos
                .as_ref()
                .and_then(|t| t.index_stats)
                .map_or(SERIES_SIZE_ESTIMATE, |s| {
                    if s.series_max_size == 0 {
                        SERIES_SIZE_ESTIMATE
                    } else {
                        s.series_max_size
                    }
                })
                .clamp(16, 1 << 20);
            let mut want = Vec::with_capacity(missing.len());
            for &i in &missing {
                let start = u64::from(refs[i]) * SERIES_ALIGNMENT;
                if start < series_start || start >= series_end {
                    return Err(BlockError::invalid(
                        "index",
                        "series",
                        format!("series reference {} outside the series section", refs[i]),
                    )
                    .into());
                }
                want.push(start..(start + estimate).min(series_end));
            }
            let got = fetch::get_ranges(&self.bucket, &self.index_path, &want).await?;
            for (&i, (bytes, range)) in missing.iter().zip(got.into_iter().zip(want)) {
                let len = series_entry_len(&bytes)?;
                let exact = if len <= bytes.len() as u64 {
                    bytes.slice(..usize::try_from(len).unwrap_or(bytes.len()))
                } else {
                    let end = range.start.saturating_add(len).min(series_end);
                    fetch::get_range(self.bucket.as_ref(), &self.index_path, range.start..end)
                        .await?
                };
                if cache.is_enabled() {
                    cache.put(
                        self.key(ItemKind::Series, u64::from(refs[i])),
                        Bytes::copy_from_slice(&exact),
                    );
                }
                raw[i] = Some(exact);
            }
        }
        raw.into_iter()
            .map(|b| {
                let b = b.unwrap_or_default();
                let (mut entry, _) = decode_series_with_len(&b, &self.header.symbols)?;
                if !self.external_labels.is_empty() {
                    let mut builder = entry.labels.builder();
                    for l in self.external_labels.iter() {
                        builder.set(&l.name, &l.value);
                    }
                    entry.labels = builder.build();
                }
                Ok(entry)
            })
            .collect()
    }

    /// The chunks `metas` point at, in the same order, from the cache or the bucket.
    pub async fn chunks(
        &self,
        metas: &[ChunkMeta],
        cache: &LruCache,
    ) -> Result<Vec<FetchedChunk>, ReadError> {
        let mut raw: Vec<Option<Bytes>> = metas
            .iter()
            .map(|m| cache.get(&self.key(ItemKind::Chunk, m.chunk_ref)))
            .collect();
        // Missing chunks by segment: (index in metas, estimated range).
        let mut by_segment: BTreeMap<u32, Vec<(usize, Range<u64>)>> = BTreeMap::new();
        for (i, m) in metas.iter().enumerate() {
            if raw[i].is_some() {
                continue;
            }
            let r = ChunkRef::from_u64(m.chunk_ref);
            let size = self.segment(r.segment)?.1;
            let start = u64::from(r.offset);
            // The next chunk of the same series usually follows this one directly.
            let next = metas
                .get(i + 1)
                .map(|n| ChunkRef::from_u64(n.chunk_ref))
                .filter(|n| n.segment == r.segment && u64::from(n.offset) > start)
                .map(|n| u64::from(n.offset));
            let end = next
                .unwrap_or(start + CHUNK_SIZE_ESTIMATE)
                .min(start + CHUNK_SIZE_ESTIMATE)
                .min(size);
            by_segment
                .entry(r.segment)
                .or_default()
                .push((i, start..end));
        }
        for (segment, wanted) in by_segment {
            let path = self.segment(segment)?.0.clone();
            let ranges: Vec<Range<u64>> = wanted.iter().map(|(_, r)| r.clone()).collect();
            let got = fetch::get_ranges(&self.bucket, &path, &ranges).await?;
            for ((i, range), bytes) in wanted.into_iter().zip(got) {
                let exact = self
                    .exact_chunk(segment, &path, range.start, bytes, cache.is_enabled())
                    .await?;
                cache.put(self.key(ItemKind::Chunk, metas[i].chunk_ref), exact.clone());
                raw[i] = Some(exact);
            }
        }
        raw.into_iter()
            .zip(metas)
            .map(|(b, meta)| {
                let b = b.unwrap_or_default();
                let r = ChunkRef::from_u64(meta.chunk_ref);
                let (chunk, _) = decode_chunk(&b, u64::from(r.offset), r.segment, r.offset)?;
                let encoding = chunk.encoding;
                let start = b.len() - 4 - chunk.data.len();
                Ok(FetchedChunk {
                    meta: *meta,
                    encoding,
                    data: b.slice(start..b.len() - 4),
                })
            })
            .collect()
    }

    /// The bytes of the chunk at `offset`, given what an estimated read returned: cut to the
    /// chunk's length, or completed with an exact read when the estimate was short.
    async fn exact_chunk(
        &self,
        segment: u32,
        path: &Path,
        offset: u64,
        bytes: Bytes,
        cached: bool,
    ) -> Result<Bytes, ReadError> {
        let Ok(offset32) = u32::try_from(offset) else {
            return Err(BlockError::invalid(
                segment_file_name(segment),
                "chunk reference",
                "offset past 4 GiB",
            )
            .into());
        };
        match decode_chunk(&bytes, offset, segment, offset32) {
            // A cached chunk must not pin the coalesced read it was cut from; an uncached one
            // is dropped with its batch, the read with it.
            Ok((_, total)) if cached => Ok(Bytes::copy_from_slice(&bytes[..total])),
            Ok((_, total)) => Ok(bytes.slice(..total)),
            Err(e) if e.is_truncated() && bytes.len() >= MAX_CHUNK_LEN_FIELD => {
                let total = chunk_total_len(&bytes).ok_or(e)?;
                let full =
                    fetch::get_range(self.bucket.as_ref(), path, offset..offset + total).await?;
                decode_chunk(&full, offset, segment, offset32)?;
                Ok(full)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn segment(&self, segment: u32) -> Result<&(Path, u64), BlockError> {
        usize::try_from(segment)
            .ok()
            .and_then(|i| self.segments.get(i))
            .ok_or_else(|| {
                BlockError::invalid(
                    "chunks",
                    "chunk reference",
                    format!(
                        "segment {segment} of {} does not exist",
                        self.segments.len()
                    ),
                )
            })
    }
}

/// Total bytes of a chunk (length prefix, encoding, data, CRC) from its first bytes.
fn chunk_total_len(first: &[u8]) -> Option<u64> {
    let mut len: u64 = 0;
    for (i, &b) in first.iter().take(MAX_CHUNK_LEN_FIELD).enumerate() {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some(i as u64 + 1 + 1 + len + 4);
        }
    }
    None
}

/// The block's chunk segment files with their sizes: from `meta.json` when it lists them,
/// otherwise by listing `chunks/`.
async fn list_segments(
    bucket: &dyn ObjectStore,
    prefix: &str,
    meta: &BlockMeta,
) -> Result<Vec<(Path, u64)>, ReadError> {
    if let Some(thanos) = &meta.thanos {
        let mut from_meta: Vec<(Path, u64)> = thanos
            .files
            .iter()
            .filter(|f| f.rel_path.starts_with("chunks/") && f.size_bytes > 0)
            .map(|f| (Path::from(format!("{prefix}/{}", f.rel_path)), f.size_bytes))
            .collect();
        if !from_meta.is_empty() {
            from_meta.sort_by(|a, b| a.0.cmp(&b.0));
            return Ok(from_meta);
        }
    }
    let dir = Path::from(format!("{prefix}/chunks"));
    let listed = fetch::list(bucket, &dir).await?;
    let mut segments: Vec<(Path, u64)> = listed
        .into_iter()
        .filter(|(p, _)| {
            p.filename()
                .is_some_and(|n| n.len() == 6 && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    segments.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(segments)
}
