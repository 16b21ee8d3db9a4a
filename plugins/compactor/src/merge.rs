//! Merging blocks held in memory into one new block, without any I/O.
//!
//! Series are read from each source's index in label order and merged k-way: a series present
//! in several sources gets the chunks of all of them, in time order. Chunks are copied as
//! they are stored (never decoded and re-encoded). The sources must not overlap in time; a
//! chunk that overlaps the previous one of its series is an error, never silently dropped.

use std::cmp::Ordering;

use gauntlet_tsdb::Labels;
use gauntlet_tsdb::block::meta::{BlockCompaction, BlockDesc, Downsample};
use gauntlet_tsdb::block::writer::{BlockWriter, BlockWriterOptions, EncodedChunk, MemorySink};
use gauntlet_tsdb::block::{BlockMeta, ChunksReader, IndexReader, SeriesEntry, ThanosMeta};

/// One source block: its meta, its index and its chunk segments, in order.
pub struct SourceBlock {
    /// Its `meta.json`.
    pub meta: BlockMeta,
    /// The `index` file.
    pub index: Vec<u8>,
    /// `chunks/000001`, `chunks/000002`, ...
    pub segments: Vec<Vec<u8>>,
}

/// Why a merge failed; the message names the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeError(pub String);

impl std::fmt::Display for MergeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The merged block: its meta (level, sources and parents set) and its files by path
/// relative to the block folder, `meta.json` included.
pub struct MergedBlock {
    /// The new block's meta.
    pub meta: BlockMeta,
    /// Every file of the block, `meta.json` with the final meta.
    pub files: std::collections::BTreeMap<String, Vec<u8>>,
}

/// A source's cursor over its series in label order.
struct Cursor<'a> {
    ulid: &'a str,
    index: IndexReader<'a>,
    chunks: ChunksReader<'a>,
    postings: Vec<u32>,
    next: usize,
    current: Option<SeriesEntry>,
}

impl Cursor<'_> {
    fn advance(&mut self) -> Result<(), MergeError> {
        self.current = match self.postings.get(self.next) {
            Some(&r) => Some(
                self.index
                    .series(r)
                    .map_err(|e| MergeError(format!("block {}: {e}", self.ulid)))?,
            ),
            None => None,
        };
        self.next += 1;
        Ok(())
    }
}

/// Merges `sources` (sorted by time, not overlapping, one group) into a new block whose
/// `thanos` section carries the group's labels and resolution and source `compactor`.
pub fn merge(sources: &[SourceBlock]) -> Result<MergedBlock, MergeError> {
    let first = sources
        .first()
        .ok_or_else(|| MergeError("a merge needs at least one source block".to_owned()))?;
    let mut cursors = Vec::with_capacity(sources.len());
    for s in sources {
        let ulid = s.meta.ulid.as_str();
        let index =
            IndexReader::new(&s.index).map_err(|e| MergeError(format!("block {ulid}: {e}")))?;
        let chunks = ChunksReader::new(s.segments.iter().map(Vec::as_slice).collect())
            .map_err(|e| MergeError(format!("block {ulid}: {e}")))?;
        let postings = index
            .all_postings()
            .map_err(|e| MergeError(format!("block {ulid}: {e}")))?;
        let mut cursor = Cursor {
            ulid,
            index,
            chunks,
            postings,
            next: 0,
            current: None,
        };
        cursor.advance()?;
        cursors.push(cursor);
    }

    let min_time = sources.iter().map(|s| s.meta.min_time).min().unwrap_or(0);
    let max_time = sources.iter().map(|s| s.meta.max_time).max().unwrap_or(0);
    let thanos = ThanosMeta {
        labels: first.meta.external_labels(),
        downsample: Downsample {
            resolution: first.meta.resolution(),
        },
        source: "compactor".to_owned(),
        ..ThanosMeta::default()
    };
    let mut writer = BlockWriter::new(
        MemorySink::default(),
        BlockWriterOptions {
            time_range: Some((min_time, max_time)),
            thanos: Some(thanos),
            ..BlockWriterOptions::default()
        },
    )
    .map_err(|e| MergeError(format!("new block: {e}")))?;

    loop {
        // The smallest label set among the cursors' current series.
        let mut smallest: Option<Labels> = None;
        for c in &cursors {
            if let Some(entry) = &c.current
                && smallest
                    .as_ref()
                    .is_none_or(|s| entry.labels.compare(s) == Ordering::Less)
            {
                smallest = Some(entry.labels.clone());
            }
        }
        let Some(labels) = smallest else { break };
        // Chunks of that series from every source, sources in time order.
        let mut raw: Vec<(i64, i64, u8, &[u8], &str)> = Vec::new();
        for c in &mut cursors {
            let Some(entry) = &c.current else { continue };
            if entry.labels.compare(&labels) != Ordering::Equal {
                continue;
            }
            for meta in &entry.chunks {
                let chunk = c
                    .chunks
                    .chunk(meta.chunk_ref)
                    .map_err(|e| MergeError(format!("block {}: series {labels}: {e}", c.ulid)))?;
                raw.push((
                    meta.min_time,
                    meta.max_time,
                    chunk.encoding,
                    chunk.data,
                    c.ulid,
                ));
            }
            c.advance()?;
        }
        raw.sort_by_key(|r| (r.0, r.1));
        if let Some(w) = raw.windows(2).find(|w| w[1].0 <= w[0].1) {
            return Err(MergeError(format!(
                "series {labels}: chunks of blocks {} and {} overlap (vertical compaction is not implemented)",
                w[0].4, w[1].4
            )));
        }
        let chunks: Vec<EncodedChunk<'_>> = raw
            .iter()
            .map(|&(min_time, max_time, encoding, data, _)| EncodedChunk {
                min_time,
                max_time,
                encoding,
                data,
            })
            .collect();
        if chunks.is_empty() {
            continue;
        }
        writer
            .add_chunks(&labels, &chunks)
            .map_err(|e| MergeError(format!("writing series {labels}: {e}")))?;
    }

    let (mut meta, sink) = writer
        .finish()
        .map_err(|e| MergeError(format!("finishing the new block: {e}")))?;
    let mut all_sources: Vec<String> = sources
        .iter()
        .flat_map(|s| {
            if s.meta.compaction.sources.is_empty() {
                vec![s.meta.ulid.clone()]
            } else {
                s.meta.compaction.sources.clone()
            }
        })
        .collect();
    all_sources.sort();
    all_sources.dedup();
    meta.compaction = BlockCompaction {
        level: sources
            .iter()
            .map(|s| s.meta.compaction.level)
            .max()
            .unwrap_or(0)
            .max(1)
            + 1,
        sources: all_sources,
        parents: sources
            .iter()
            .map(|s| BlockDesc {
                ulid: s.meta.ulid.clone(),
                min_time: s.meta.min_time,
                max_time: s.meta.max_time,
            })
            .collect(),
        ..BlockCompaction::default()
    };
    let mut files = sink.files;
    files.insert("meta.json".to_owned(), meta.to_json());
    Ok(MergedBlock { meta, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn source(min: i64, series: &[(&str, i64)]) -> SourceBlock {
        let mut w = BlockWriter::new(
            MemorySink::default(),
            BlockWriterOptions {
                time_range: Some((min, min + 2 * H)),
                thanos: Some(ThanosMeta {
                    labels: [("cluster".to_owned(), "eu1".to_owned())].into(),
                    source: "sidecar".to_owned(),
                    ..ThanosMeta::default()
                }),
                ..BlockWriterOptions::default()
            },
        )
        .expect("writer");
        for (name, step) in series {
            let samples: Vec<(i64, f64)> = (0..(2 * H / step))
                .map(|i| (min + i * step, (min + i) as f64))
                .collect();
            w.add_samples(&Labels::from_pairs(&[("__name__", *name)]), &samples)
                .expect("add");
        }
        let (meta, sink) = w.finish().expect("finish");
        let segments = sink
            .files
            .iter()
            .filter(|(k, _)| k.starts_with("chunks/"))
            .map(|(_, v)| v.clone())
            .collect();
        SourceBlock {
            meta,
            index: sink.files["index"].clone(),
            segments,
        }
    }

    fn samples(block: &MergedBlock) -> Vec<(String, Vec<(i64, f64)>)> {
        let index = IndexReader::new(&block.files["index"]).expect("index");
        let segments: Vec<&[u8]> = block
            .files
            .iter()
            .filter(|(k, _)| k.starts_with("chunks/"))
            .map(|(_, v)| v.as_slice())
            .collect();
        let chunks = ChunksReader::new(segments).expect("chunks");
        let mut out = Vec::new();
        for r in index.all_postings().expect("postings") {
            let s = index.series(r).expect("series");
            let mut all = Vec::new();
            for c in &s.chunks {
                all.extend(
                    chunks
                        .chunk(c.chunk_ref)
                        .expect("chunk")
                        .float_samples()
                        .expect("xor"),
                );
            }
            out.push((s.labels.to_string(), all));
        }
        out
    }

    #[test]
    fn merges_series_across_blocks_in_label_and_time_order() {
        let a = source(0, &[("a", 15_000), ("b", 60_000)]);
        let b = source(2 * H, &[("b", 60_000), ("c", 30_000)]);
        let merged = merge(&[a, b]).expect("merge");
        assert_eq!(merged.meta.min_time, 0);
        assert_eq!(merged.meta.max_time, 4 * H);
        assert_eq!(merged.meta.compaction.level, 2);
        assert_eq!(merged.meta.compaction.parents.len(), 2);
        assert_eq!(merged.meta.compaction.sources.len(), 2);
        let thanos = merged.meta.thanos.as_ref().expect("thanos");
        assert_eq!(thanos.source, "compactor");
        assert_eq!(thanos.labels["cluster"], "eu1");
        let got = samples(&merged);
        let names: Vec<&str> = got.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            names,
            ["{__name__=\"a\"}", "{__name__=\"b\"}", "{__name__=\"c\"}"]
        );
        assert_eq!(got[0].1.len(), 480);
        assert_eq!(got[1].1.len(), 240);
        assert!(got[1].1.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(got[2].1.len(), 240);
        assert_eq!(merged.meta.stats.num_samples, 960);
        let parsed = BlockMeta::parse(&merged.files["meta.json"]).expect("meta.json");
        assert_eq!(parsed, merged.meta);
    }

    #[test]
    fn a_corrupt_index_names_the_block() {
        let a = source(0, &[("a", 15_000)]);
        let mut b = source(2 * H, &[("a", 15_000)]);
        let n = b.index.len();
        b.index.truncate(n / 2);
        let ulid = b.meta.ulid.clone();
        let error = merge(&[a, b]).err().expect("fails");
        assert!(error.0.contains(&ulid), "{error}");
    }
}
