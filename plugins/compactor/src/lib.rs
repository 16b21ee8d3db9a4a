//! The Gauntlet compactor plugin (world `compactor`): merges the blocks in its bucket prefix
//! into larger ones, as Thanos's compactor does, reaching storage only through the host's
//! `bucket` import.
//!
//! - `plan`: lists `ULID/meta.json` objects, skips blocks with `deletion-mark.json` or
//!   `no-compact-mark.json`, groups the rest by external labels and resolution, and proposes
//!   at most one `compact` job per group (see [`plan`] for the rules). A group with
//!   overlapping blocks is logged and skipped: vertical compaction is not implemented.
//! - `run`: reads each source's `index` and chunk segments (one object per call), merges them
//!   ([`merge`]), uploads the new block's files with `meta.json` last, then writes Thanos's
//!   `deletion-mark.json` for each source. A source that is missing, marked or corrupt fails
//!   the job before anything is written, with an error naming the block.
//!
//! Configuration (`[config]` of the manifest): `ranges`, the compaction ranges as a
//! comma-separated list of durations (default `2h,8h,2d,14d`). Unit tests run natively:
//! `cargo test --manifest-path plugins/Cargo.toml -p compactor --lib`.

pub mod merge;
pub mod plan;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use gauntlet_plugin_sdk::bucket::{self, BucketError};
use gauntlet_plugin_sdk::log::Level;
use gauntlet_plugin_sdk::{PluginError, TimeRange, clock, log};
use gauntlet_tsdb::block::BlockMeta;

wit_bindgen::generate!({
    path: "../../wit",
    world: "compactor",
    with: {
        "gauntlet:plugin/types@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::types,
        "gauntlet:plugin/log@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::log,
        "gauntlet:plugin/metrics@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::metrics,
        "gauntlet:plugin/clock@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::clock,
        "gauntlet:plugin/bucket@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::bucket,
        "gauntlet:plugin/http@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::http,
        "gauntlet:plugin/query@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::query,
        "gauntlet:plugin/alerts@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::alerts,
    },
});

use exports::gauntlet::plugin::compaction::{Job, Outcome};
use exports::gauntlet::plugin::{compaction, lifecycle};

/// The kind of job this plugin proposes and runs.
pub const KIND_COMPACT: &str = "compact";

thread_local! {
    static RANGES: RefCell<Vec<i64>> = RefCell::new(plan::DEFAULT_RANGES.to_vec());
}

/// Parses `2h`, `90m`, `2d`, `1w` (or plain milliseconds) into milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().ok()?;
    let unit_ms = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms).filter(|ms| *ms > 0)
}

/// Parses the `ranges` setting: increasing durations, at least two.
pub fn parse_ranges(text: &str) -> Result<Vec<i64>, String> {
    let ranges = text
        .split(',')
        .map(|p| parse_duration_ms(p).ok_or_else(|| format!("{p:?} is not a duration like 2h")))
        .collect::<Result<Vec<_>, _>>()?;
    if ranges.len() < 2 || ranges.windows(2).any(|w| w[1] <= w[0]) {
        return Err(format!(
            "{text:?}: give at least two increasing durations, such as 2h,8h,2d,14d"
        ));
    }
    Ok(ranges)
}

fn internal(message: String) -> PluginError {
    PluginError::Internal(message)
}

/// A bucket error while reading block `ulid`, naming it.
fn read_error(ulid: &str, error: BucketError) -> PluginError {
    match error {
        BucketError::NotFound(key) => internal(format!("block {ulid}: {key} is missing")),
        other => {
            let e: PluginError = other.into();
            match e {
                PluginError::Unavailable(m) => {
                    PluginError::Unavailable(format!("block {ulid}: {m}"))
                }
                PluginError::ResourceExhausted(m) => {
                    PluginError::ResourceExhausted(format!("block {ulid}: {m}"))
                }
                other => other,
            }
        }
    }
}

/// Blocks in the bucket that may be compacted, with how many were skipped for marks.
fn compactable_blocks() -> Result<(Vec<BlockMeta>, usize), PluginError> {
    let objects = bucket::list_objects("")?;
    let mut metas = BTreeSet::new();
    let mut marked = BTreeSet::new();
    for o in &objects {
        let Some((dir, file)) = o.key.split_once('/') else {
            continue;
        };
        if gauntlet_tsdb::block::Ulid::parse(dir).is_err() {
            continue;
        }
        match file {
            "meta.json" => {
                metas.insert(dir);
            }
            "deletion-mark.json" | "no-compact-mark.json" => {
                marked.insert(dir);
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for ulid in metas.difference(&marked) {
        let key = format!("{ulid}/meta.json");
        let bytes = match bucket::get(&key) {
            Ok(b) => b,
            // Deleted since the listing.
            Err(BucketError::NotFound(_)) => continue,
            Err(e) => return Err(read_error(ulid, e)),
        };
        match BlockMeta::parse(&bytes) {
            Ok(meta) if meta.ulid == *ulid => out.push(meta),
            Ok(meta) => log::log(
                Level::Warn,
                &format!("skipping block {ulid}: its meta.json names {}", meta.ulid),
            ),
            Err(e) => log::log(Level::Warn, &format!("skipping block {ulid}: {e}")),
        }
    }
    let skipped = metas.intersection(&marked).count();
    Ok((out, skipped))
}

/// Reads one source block whole: meta, index and chunk segments.
fn read_block(ulid: &str) -> Result<merge::SourceBlock, PluginError> {
    if bucket::head(&format!("{ulid}/deletion-mark.json")).is_ok() {
        return Err(PluginError::InvalidArgument(format!(
            "block {ulid} is marked for deletion"
        )));
    }
    let meta_bytes = bucket::get(&format!("{ulid}/meta.json")).map_err(|e| read_error(ulid, e))?;
    let meta = BlockMeta::parse(&meta_bytes).map_err(|e| internal(format!("block {ulid}: {e}")))?;
    let index = bucket::get(&format!("{ulid}/index")).map_err(|e| read_error(ulid, e))?;
    let mut segment_keys: Vec<String> = meta
        .thanos
        .as_ref()
        .map(|t| {
            t.segment_files
                .iter()
                .map(|f| format!("{ulid}/chunks/{f}"))
                .collect()
        })
        .unwrap_or_default();
    if segment_keys.is_empty() {
        segment_keys = bucket::list_objects(&format!("{ulid}/chunks/"))
            .map_err(|e| read_error(ulid, e))?
            .into_iter()
            .map(|o| o.key)
            .collect();
        segment_keys.sort();
    }
    let mut segments = Vec::with_capacity(segment_keys.len());
    for key in &segment_keys {
        segments.push(bucket::get(key).map_err(|e| read_error(ulid, e))?);
    }
    Ok(merge::SourceBlock {
        meta,
        index,
        segments,
    })
}

fn put(key: &str, data: Vec<u8>) -> Result<(), PluginError> {
    bucket::put(key, &data).map_err(|e| {
        let e: PluginError = e.into();
        internal(format!("uploading {key}: {e:?}"))
    })
}

/// Thanos's `deletion-mark.json`.
fn deletion_mark(ulid: &str, now_seconds: i64) -> Vec<u8> {
    let mut text = serde_json::json!({
        "id": ulid,
        "deletion_time": now_seconds,
        "version": 1,
    })
    .to_string();
    text.push('\n');
    text.into_bytes()
}

struct Compactor;

impl lifecycle::Guest for Compactor {
    fn init(config: Vec<(String, String)>) -> Result<(), PluginError> {
        let mut ranges = plan::DEFAULT_RANGES.to_vec();
        for (key, value) in config {
            match key.as_str() {
                "ranges" => {
                    ranges = parse_ranges(&value)
                        .map_err(|m| PluginError::InvalidArgument(format!("config.ranges: {m}")))?;
                }
                other => {
                    return Err(PluginError::InvalidArgument(format!(
                        "config.{other}: unknown setting (known: ranges)"
                    )));
                }
            }
        }
        RANGES.with(|r| *r.borrow_mut() = ranges);
        Ok(())
    }
}

impl compaction::Guest for Compactor {
    fn plan() -> Result<Vec<Job>, PluginError> {
        let (blocks, marked) = compactable_blocks()?;
        let ranges = RANGES.with(|r| r.borrow().clone());
        let plan = plan::plan(&blocks, &ranges);
        for group in &plan.overlapping {
            log::log(
                Level::Warn,
                &format!(
                    "group {group} has overlapping blocks; skipped: vertical compaction is not implemented"
                ),
            );
        }
        log::log(
            Level::Debug,
            &format!(
                "{} blocks, {marked} marked, {} jobs",
                blocks.len(),
                plan.proposals.len()
            ),
        );
        Ok(plan
            .proposals
            .into_iter()
            .map(|p| Job {
                id: p.group,
                sources: p.sources,
                range: TimeRange {
                    min_time: p.min_time,
                    max_time: p.max_time - 1,
                },
                kind: KIND_COMPACT.to_owned(),
            })
            .collect())
    }

    fn run(job: Job) -> Result<Outcome, PluginError> {
        if job.kind != KIND_COMPACT {
            return Err(PluginError::InvalidArgument(format!(
                "job kind {:?} is not implemented (only {KIND_COMPACT:?})",
                job.kind
            )));
        }
        if job.sources.len() < 2 {
            return Err(PluginError::InvalidArgument(
                "a compact job needs at least two source blocks".to_owned(),
            ));
        }
        let mut seen = BTreeMap::new();
        let mut sources = Vec::with_capacity(job.sources.len());
        for ulid in &job.sources {
            if gauntlet_tsdb::block::Ulid::parse(ulid).is_err() || seen.insert(ulid, ()).is_some() {
                return Err(PluginError::InvalidArgument(format!(
                    "source {ulid:?} is not a ULID or is repeated"
                )));
            }
            let block = read_block(ulid)?;
            let group = plan::group_key(&block.meta);
            if group != job.id {
                return Err(PluginError::InvalidArgument(format!(
                    "block {ulid} belongs to group {group}, not {}",
                    job.id
                )));
            }
            sources.push(block);
        }
        sources.sort_by_key(|s| s.meta.min_time);
        if let Some(w) = sources
            .windows(2)
            .find(|w| w[1].meta.min_time < w[0].meta.max_time)
        {
            return Err(PluginError::InvalidArgument(format!(
                "blocks {} and {} overlap: vertical compaction is not implemented",
                w[0].meta.ulid, w[1].meta.ulid
            )));
        }
        let merged = merge::merge(&sources).map_err(|e| internal(e.0))?;
        drop(sources);
        let ulid = merged.meta.ulid.clone();
        let mut meta_json = None;
        for (path, data) in merged.files {
            if path == "meta.json" {
                meta_json = Some(data);
            } else {
                put(&format!("{ulid}/{path}"), data)?;
            }
        }
        let meta_json =
            meta_json.ok_or_else(|| internal("the new block has no meta.json".to_owned()))?;
        put(&format!("{ulid}/meta.json"), meta_json)?;
        let now_seconds = clock::now_millis().div_euclid(1000);
        for source in &job.sources {
            put(
                &format!("{source}/deletion-mark.json"),
                deletion_mark(source, now_seconds),
            )?;
        }
        log::log(
            Level::Info,
            &format!(
                "compacted {} blocks of {} into {ulid} ({} series, {} samples)",
                job.sources.len(),
                job.id,
                merged.meta.stats.num_series,
                merged.meta.stats.num_samples
            ),
        );
        Ok(Outcome {
            created: vec![ulid],
            deleted: job.sources,
        })
    }
}

export!(Compactor);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        assert_eq!(
            parse_ranges("2h,8h,2d,14d").expect("ranges"),
            plan::DEFAULT_RANGES.to_vec()
        );
        assert!(parse_ranges("8h,2h").is_err());
        assert!(parse_ranges("2h").is_err());
        assert!(parse_ranges("2x,4h").is_err());
    }

    #[test]
    fn deletion_marks_are_thanos_shaped() {
        let mark: serde_json::Value =
            serde_json::from_slice(&deletion_mark("01ARZ3NDEKTSV4RRFFQ69G5FAV", 17)).expect("json");
        assert_eq!(
            mark,
            serde_json::json!({"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "deletion_time": 17, "version": 1})
        );
    }
}
