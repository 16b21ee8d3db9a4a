//! `meta.json`: a block's identity, time range, statistics and compaction history as Prometheus
//! writes it, plus the `thanos` section (external labels, downsampling resolution, source, files)
//! that Thanos components add before a block goes to object storage.
//!
//! Field names and `omitempty` behaviour follow Prometheus's `BlockMeta` and Thanos's
//! `metadata.Thanos`; fields this crate does not know are kept and written back unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The only `meta.json` version Prometheus writes and reads.
pub const META_VERSION: u32 = 1;

/// Largest `meta.json` accepted (real ones are a few KiB; compacted blocks list their sources).
pub const MAX_META_BYTES: usize = 16 << 20;

/// Contents of a block's `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockMeta {
    /// The block's ULID, which is also its directory name.
    pub ulid: String,
    /// Inclusive lower bound of the samples' timestamps, milliseconds.
    #[serde(rename = "minTime")]
    pub min_time: i64,
    /// Exclusive upper bound of the samples' timestamps, milliseconds.
    #[serde(rename = "maxTime")]
    pub max_time: i64,
    /// Counts of what the block holds.
    #[serde(default)]
    pub stats: BlockStats,
    /// Compaction level and the blocks this one was made from.
    #[serde(default)]
    pub compaction: BlockCompaction,
    /// Format version; always [`META_VERSION`].
    pub version: u32,
    /// Thanos's section; absent in blocks Prometheus wrote and nobody shipped yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thanos: Option<ThanosMeta>,
    /// Fields this crate does not interpret, kept for round trips.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Counts of what a block holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockStats {
    /// All samples, float and histogram.
    #[serde(rename = "numSamples", default, skip_serializing_if = "is_zero")]
    pub num_samples: u64,
    /// Float samples.
    #[serde(rename = "numFloatSamples", default, skip_serializing_if = "is_zero")]
    pub num_float_samples: u64,
    /// Native histogram samples.
    #[serde(
        rename = "numHistogramSamples",
        default,
        skip_serializing_if = "is_zero"
    )]
    pub num_histogram_samples: u64,
    /// Series.
    #[serde(rename = "numSeries", default, skip_serializing_if = "is_zero")]
    pub num_series: u64,
    /// Chunks.
    #[serde(rename = "numChunks", default, skip_serializing_if = "is_zero")]
    pub num_chunks: u64,
    /// Tombstone intervals.
    #[serde(rename = "numTombstones", default, skip_serializing_if = "is_zero")]
    pub num_tombstones: u64,
}

/// Compaction history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCompaction {
    /// 1 for a block cut from the head; one more for each compaction.
    #[serde(default)]
    pub level: u32,
    /// ULIDs of the level-1 blocks this block's data came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// Set when a compaction decided the block holds nothing worth keeping.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deletable: bool,
    /// The blocks compacted into this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<BlockDesc>,
    /// Set when compacting this block failed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed: bool,
    /// Free-form hints from the compactor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}

/// A parent block in [`BlockCompaction::parents`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDesc {
    /// The parent's ULID.
    pub ulid: String,
    /// Its lower time bound, milliseconds.
    #[serde(rename = "minTime")]
    pub min_time: i64,
    /// Its upper time bound, milliseconds.
    #[serde(rename = "maxTime")]
    pub max_time: i64,
}

/// Thanos's section of `meta.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThanosMeta {
    /// External labels of the Prometheus (or receiver) that produced the data.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Downsampling resolution.
    #[serde(default)]
    pub downsample: Downsample,
    /// Which component made the block: `sidecar`, `receive`, `compactor`, `bucket.upload`, ...
    #[serde(default)]
    pub source: String,
    /// Names of the chunk segment files under `chunks/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segment_files: Vec<String>,
    /// Every file of the block with its size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<BlockFile>,
    /// Sizes the store gateway uses to bound its reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_stats: Option<IndexStats>,
    /// Fields this crate does not interpret (e.g. `extensions`), kept for round trips.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Downsampling resolution of a block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downsample {
    /// Milliseconds between aggregated samples; 0 for raw data.
    #[serde(default)]
    pub resolution: i64,
}

/// One file of a block in [`ThanosMeta::files`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockFile {
    /// Path relative to the block directory, e.g. `chunks/000001`.
    pub rel_path: String,
    /// Size in bytes (omitted for `meta.json` itself).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size_bytes: u64,
    /// Content hash, when the producer computed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<serde_json::Value>,
}

/// Largest series and chunk entries in a block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStats {
    /// Largest series entry in the index, bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub series_max_size: u64,
    /// Largest chunk, bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunk_max_size: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why a `meta.json` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// Larger than [`MAX_META_BYTES`].
    #[error("meta.json is {0} bytes, more than the {MAX_META_BYTES} accepted")]
    TooLarge(usize),
    /// Not JSON of the expected shape.
    #[error("meta.json is not valid: {0}")]
    Invalid(#[from] serde_json::Error),
    /// A version other than 1.
    #[error("meta.json has version {0}; only version {META_VERSION} is supported")]
    Version(u32),
    /// `minTime` after `maxTime`, or an empty ULID.
    #[error("meta.json is inconsistent: {0}")]
    Inconsistent(String),
}

impl BlockMeta {
    /// Parses and checks a `meta.json`.
    pub fn parse(bytes: &[u8]) -> Result<Self, MetaError> {
        if bytes.len() > MAX_META_BYTES {
            return Err(MetaError::TooLarge(bytes.len()));
        }
        let meta: BlockMeta = serde_json::from_slice(bytes)?;
        if meta.version != META_VERSION {
            return Err(MetaError::Version(meta.version));
        }
        if meta.ulid.is_empty() {
            return Err(MetaError::Inconsistent("empty ulid".to_owned()));
        }
        if meta.min_time > meta.max_time {
            return Err(MetaError::Inconsistent(format!(
                "minTime {} is after maxTime {}",
                meta.min_time, meta.max_time
            )));
        }
        Ok(meta)
    }

    /// The JSON Prometheus and Thanos write: tab-indented, fields in the order above.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
        // Serializing plain structs, maps and numbers into memory cannot fail.
        let _ = self.serialize(&mut serializer);
        out
    }

    /// External labels from the `thanos` section (empty when there is none).
    pub fn external_labels(&self) -> BTreeMap<String, String> {
        self.thanos
            .as_ref()
            .map(|t| t.labels.clone())
            .unwrap_or_default()
    }

    /// Downsampling resolution in milliseconds (0 for raw blocks).
    pub fn resolution(&self) -> i64 {
        self.thanos.as_ref().map_or(0, |t| t.downsample.resolution)
    }

    /// The `meta.json` to upload with this block: a copy with the `thanos` section set —
    /// `labels` merged into its labels (the given ones win), `source`, every file of `files`
    /// (relative path, size) plus `meta.json` itself, sorted, and the chunk segment files.
    pub fn for_upload(
        &self,
        files: &[(String, u64)],
        labels: &[(String, String)],
        source: &str,
    ) -> BlockMeta {
        let mut meta = self.clone();
        let thanos = meta.thanos.take().unwrap_or_default();
        let mut merged = thanos.labels.clone();
        for (name, value) in labels {
            merged.insert(name.clone(), value.clone());
        }
        let mut listed: Vec<BlockFile> = files
            .iter()
            .map(|(rel, size)| BlockFile {
                rel_path: rel.clone(),
                size_bytes: *size,
                hash: None,
            })
            .collect();
        listed.push(BlockFile {
            rel_path: "meta.json".to_owned(),
            size_bytes: 0,
            hash: None,
        });
        listed.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
        meta.thanos = Some(ThanosMeta {
            labels: merged,
            source: source.to_owned(),
            segment_files: files
                .iter()
                .filter_map(|(rel, _)| rel.strip_prefix("chunks/").map(str::to_owned))
                .collect(),
            files: listed,
            ..thanos
        });
        meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMETHEUS: &str = r#"{
	"ulid": "01JDQ7Y3Z5X1A2B3C4D5E6F7G8",
	"minTime": 1732500000000,
	"maxTime": 1732507200000,
	"stats": {
		"numSamples": 480,
		"numSeries": 2,
		"numChunks": 4
	},
	"compaction": {
		"level": 1,
		"sources": [
			"01JDQ7Y3Z5X1A2B3C4D5E6F7G8"
		]
	},
	"version": 1
}"#;

    #[test]
    fn reads_a_prometheus_meta() {
        let meta = BlockMeta::parse(PROMETHEUS.as_bytes()).unwrap();
        assert_eq!(meta.stats.num_samples, 480);
        assert_eq!(meta.stats.num_series, 2);
        assert_eq!(meta.compaction.level, 1);
        assert_eq!(meta.compaction.sources.len(), 1);
        assert!(meta.thanos.is_none());
        assert!(meta.external_labels().is_empty());
        assert_eq!(meta.resolution(), 0);
    }

    #[test]
    fn thanos_section_round_trips_with_unknown_fields() {
        let mut meta = BlockMeta::parse(PROMETHEUS.as_bytes()).unwrap();
        let mut thanos = ThanosMeta {
            labels: BTreeMap::from([("cluster".to_owned(), "eu1".to_owned())]),
            source: "sidecar".to_owned(),
            files: vec![BlockFile {
                rel_path: "index".to_owned(),
                size_bytes: 1234,
                hash: None,
            }],
            ..ThanosMeta::default()
        };
        thanos
            .extra
            .insert("extensions".to_owned(), serde_json::json!({"tenant": "a"}));
        meta.thanos = Some(thanos);
        let json = meta.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"rel_path\": \"index\""), "{text}");
        assert!(text.contains("\"downsample\""), "{text}");
        assert!(!text.contains("numTombstones"), "{text}");
        let back = BlockMeta::parse(&json).unwrap();
        assert_eq!(back, meta);
        assert_eq!(back.external_labels()["cluster"], "eu1");
    }

    #[test]
    fn rejects_bad_metas() {
        assert!(matches!(BlockMeta::parse(b"{"), Err(MetaError::Invalid(_))));
        let v2 = PROMETHEUS.replace("\"version\": 1", "\"version\": 2");
        assert!(matches!(
            BlockMeta::parse(v2.as_bytes()),
            Err(MetaError::Version(2))
        ));
        let inverted = PROMETHEUS.replace("1732507200000", "1");
        assert!(matches!(
            BlockMeta::parse(inverted.as_bytes()),
            Err(MetaError::Inconsistent(_))
        ));
        let huge = vec![b' '; MAX_META_BYTES + 1];
        assert!(matches!(
            BlockMeta::parse(&huge),
            Err(MetaError::TooLarge(_))
        ));
    }
}
