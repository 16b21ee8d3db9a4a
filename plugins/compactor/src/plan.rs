//! Planning, without any I/O: which blocks of a bucket to merge next.
//!
//! Blocks are grouped as Thanos groups them: by external labels and downsampling resolution.
//! Within a group, blocks are split into windows aligned to each compaction range after the
//! first (8h, 2d, 14d by default, as Prometheus and Thanos do); a window with at least two
//! blocks is merged when it is complete (its blocks reach from its first 2h slot into its
//! last one) or when a newer block of the group starts after it (no more data will arrive
//! for it). Unlike Thanos, the
//! group's newest block is not held back. Groups with overlapping blocks need vertical
//! compaction, which this planner does not do: they are reported and left alone.

use std::collections::BTreeMap;

use gauntlet_tsdb::block::BlockMeta;

/// Prometheus's and Thanos's default compaction ranges: 2h, 8h, 2d, 14d (milliseconds).
pub const DEFAULT_RANGES: [i64; 4] = [
    2 * 3_600_000,
    8 * 3_600_000,
    48 * 3_600_000,
    14 * 24 * 3_600_000,
];

/// A group's key: resolution and external labels, e.g. `0@{cluster="eu1"}`.
pub fn group_key(meta: &BlockMeta) -> String {
    let labels: Vec<String> = meta
        .external_labels()
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{}@{{{}}}", meta.resolution(), labels.join(","))
}

/// One proposed merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The group's key.
    pub group: String,
    /// ULIDs of the blocks to merge, oldest first.
    pub sources: Vec<String>,
    /// Lower bound of the merged block, milliseconds (inclusive).
    pub min_time: i64,
    /// Upper bound of the merged block, milliseconds (exclusive).
    pub max_time: i64,
    /// The compaction range whose window the blocks fall in.
    pub range: i64,
}

/// What planning found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// At most one merge per group, in group key order.
    pub proposals: Vec<Proposal>,
    /// Groups left alone because some of their blocks overlap (vertical compaction).
    pub overlapping: Vec<String>,
}

/// Plans over the blocks that may be compacted (marked blocks already removed).
pub fn plan(blocks: &[BlockMeta], ranges: &[i64]) -> Plan {
    let mut groups: BTreeMap<String, Vec<&BlockMeta>> = BTreeMap::new();
    for meta in blocks {
        groups.entry(group_key(meta)).or_default().push(meta);
    }
    let mut out = Plan::default();
    for (key, mut metas) in groups {
        metas.sort_by(|a, b| a.min_time.cmp(&b.min_time).then(a.ulid.cmp(&b.ulid)));
        if metas.windows(2).any(|w| w[1].min_time < w[0].max_time) {
            out.overlapping.push(key);
            continue;
        }
        if let Some((range, part)) = select(&metas, ranges) {
            out.proposals.push(Proposal {
                group: key,
                sources: part.iter().map(|m| m.ulid.clone()).collect(),
                min_time: part[0].min_time,
                max_time: part[part.len() - 1].max_time,
                range,
            });
        }
    }
    out
}

/// The first window worth merging, smallest range first (Prometheus's `selectDirs`).
fn select<'a>(metas: &[&'a BlockMeta], ranges: &[i64]) -> Option<(i64, Vec<&'a BlockMeta>)> {
    let newest_start = metas.last()?.min_time;
    let slot = ranges.first().copied().unwrap_or(1).max(1);
    for &range in ranges.iter().skip(1) {
        for part in split_by_range(metas, range) {
            if part.len() < 2 {
                continue;
            }
            let min = part[0].min_time;
            let max = part[part.len() - 1].max_time;
            let window_start = min - min.rem_euclid(range);
            // Complete: the blocks reach from the window's first slot of the smallest range
            // into its last one (Prometheus's head cuts blocks at the slot's end; blocks made
            // by `promtool tsdb create-blocks-from` end one millisecond after their last sample).
            let complete = max - min == range
                || (min < window_start + slot && max > window_start + range - slot);
            if complete || max <= newest_start {
                return Some((range, part));
            }
        }
    }
    None
}

/// Blocks (sorted by start) grouped by the window of `range` they fall in entirely; a block
/// crossing a window boundary belongs to none (Prometheus's `splitByRange`).
fn split_by_range<'a>(metas: &[&'a BlockMeta], range: i64) -> Vec<Vec<&'a BlockMeta>> {
    let mut out: Vec<Vec<&BlockMeta>> = Vec::new();
    let mut current: Option<(i64, Vec<&BlockMeta>)> = None;
    for meta in metas {
        let start = meta.min_time - meta.min_time.rem_euclid(range);
        if meta.max_time > start + range {
            continue;
        }
        match &mut current {
            Some((s, part)) if *s == start => part.push(meta),
            _ => {
                if let Some((_, part)) = current.take() {
                    out.push(part);
                }
                current = Some((start, vec![meta]));
            }
        }
    }
    if let Some((_, part)) = current {
        out.push(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn block(ulid: &str, min: i64, max: i64, cluster: &str) -> BlockMeta {
        let json = format!(
            r#"{{"ulid":"{ulid}","minTime":{min},"maxTime":{max},"version":1,
                "compaction":{{"level":1,"sources":["{ulid}"]}},
                "thanos":{{"labels":{{"cluster":"{cluster}"}},"downsample":{{"resolution":0}},"source":"sidecar"}}}}"#
        );
        BlockMeta::parse(json.as_bytes()).expect("meta")
    }

    #[test]
    fn four_adjacent_2h_blocks_make_one_8h_job_per_group() {
        let mut blocks = Vec::new();
        for (i, cluster) in ["eu1", "us1"].iter().enumerate() {
            for k in 0..4 {
                blocks.push(block(
                    &format!("B{i}{k}"),
                    k * 2 * H,
                    (k + 1) * 2 * H,
                    cluster,
                ));
            }
        }
        let plan = plan(&blocks, &DEFAULT_RANGES);
        assert!(plan.overlapping.is_empty());
        assert_eq!(plan.proposals.len(), 2);
        assert_eq!(plan.proposals[0].group, "0@{cluster=\"eu1\"}");
        assert_eq!(plan.proposals[0].sources, ["B00", "B01", "B02", "B03"]);
        assert_eq!(plan.proposals[0].range, 8 * H);
        assert_eq!(
            (plan.proposals[0].min_time, plan.proposals[0].max_time),
            (0, 8 * H)
        );
    }

    #[test]
    fn six_8h_blocks_make_a_2d_job() {
        let blocks: Vec<BlockMeta> = (0..6)
            .map(|k| block(&format!("L{k}"), k * 8 * H, (k + 1) * 8 * H, "a"))
            .collect();
        let plan = plan(&blocks, &DEFAULT_RANGES);
        assert_eq!(plan.proposals[0].range, 48 * H);
        assert_eq!(plan.proposals[0].sources.len(), 6);
    }

    #[test]
    fn an_incomplete_newest_window_waits() {
        let blocks = [block("A", 0, 2 * H, "a"), block("B", 2 * H, 4 * H, "a")];
        assert!(plan(&blocks, &DEFAULT_RANGES).proposals.is_empty());
        // A newer block closes the window.
        let blocks = [
            block("A", 0, 2 * H, "a"),
            block("B", 2 * H, 4 * H, "a"),
            block("C", 8 * H, 10 * H, "a"),
        ];
        let plan = plan(&blocks, &DEFAULT_RANGES);
        assert_eq!(plan.proposals[0].sources, ["A", "B"]);
    }

    #[test]
    fn a_compacted_block_alone_is_left_alone_and_overlaps_are_reported() {
        assert!(
            plan(&[block("A", 0, 8 * H, "a")], &DEFAULT_RANGES)
                .proposals
                .is_empty()
        );
        let blocks = [block("A", 0, 2 * H, "a"), block("B", H, 3 * H, "a")];
        let plan = plan(&blocks, &DEFAULT_RANGES);
        assert!(plan.proposals.is_empty());
        assert_eq!(plan.overlapping, ["0@{cluster=\"a\"}"]);
    }

    #[test]
    fn blocks_ending_after_their_last_sample_complete_a_window() {
        let blocks: Vec<BlockMeta> = (0..4)
            .map(|k| {
                block(
                    &format!("P{k}"),
                    k * 2 * H,
                    (k + 1) * 2 * H - 30_000 + 1,
                    "a",
                )
            })
            .collect();
        let plan = plan(&blocks, &DEFAULT_RANGES);
        assert_eq!(plan.proposals[0].sources, ["P0", "P1", "P2", "P3"]);
        // Three of four slots: not complete yet.
        assert!(plan_of(&blocks[..3]).is_empty());
    }

    fn plan_of(blocks: &[BlockMeta]) -> Vec<Proposal> {
        plan(blocks, &DEFAULT_RANGES).proposals
    }

    #[test]
    fn blocks_crossing_a_window_are_not_merged_into_it() {
        let blocks = [
            block("A", 7 * H, 9 * H, "a"),
            block("B", 9 * H, 11 * H, "a"),
        ];
        assert!(plan(&blocks, &DEFAULT_RANGES).proposals.is_empty());
    }
}
