//! The demo's data as TSDB blocks in a filesystem bucket, and the warehouse's export files
//! beside them ([`files`]): written once per generation, with progress on stderr, then reused
//! by later starts while it still reaches the present.
//!
//! A generation is written into a temporary folder and renamed into place, so a concurrent
//! start never sees half of one; older generations are removed only once they are a day old,
//! so a demo still serving one is never pulled out from under.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context;
use gauntlet_tsdb::block::{BlockWriterOptions, ThanosMeta, write_block_dir};

use super::data::{self, DemoShape};
use super::files;
use super::{Generation, REPLICA_LABEL};

/// A generation whose newest sample is at most this old is reused: queries at "now" still find
/// its last samples within Prometheus's 5-minute lookback.
pub const REUSE_WITHIN_MS: i64 = 4 * 60_000;
/// Generations older than this are deleted.
pub const DELETE_AFTER_MS: i64 = 24 * 3_600_000;
/// Block length, as Prometheus cuts blocks from its head.
pub const BLOCK_MS: i64 = 2 * 3_600_000;

/// The store name of a simulated Prometheus: `prometheus-<cluster>-<replica>`.
pub fn store_name(external_labels: &gauntlet_tsdb::labels::Labels) -> String {
    format!(
        "prometheus-{}-{}",
        external_labels.get("cluster").unwrap_or("unknown"),
        external_labels.get(REPLICA_LABEL).unwrap_or("0")
    )
}

/// Returns a generation of demo data ending close to `now`: the newest under `data_dir` when
/// recent enough, otherwise a new one written now.
pub fn prepare(data_dir: &Path, now: i64) -> anyhow::Result<Generation> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the demo data directory {}", data_dir.display()))?;
    let generations = list_generations(data_dir)?;
    if let Some((end, dir)) = generations.last()
        && now - end <= REUSE_WITHIN_MS
        && let Ok(generation) = read_generation(dir)
    {
        eprintln!("demo: reusing the blocks in {}", dir.display());
        return Ok(generation);
    }
    for (end, dir) in &generations {
        if now - end > DELETE_AFTER_MS {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    write_generation(data_dir, now)
}

fn list_generations(data_dir: &Path) -> anyhow::Result<Vec<(i64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in
        std::fs::read_dir(data_dir).with_context(|| format!("reading {}", data_dir.display()))?
    {
        let entry = entry?;
        if let Some(end) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i64>().ok())
        {
            out.push((end, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

const SUMMARY_FILE: &str = "demo.json";

fn read_generation(dir: &Path) -> anyhow::Result<Generation> {
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(SUMMARY_FILE))?)?;
    let names = summary["stores"]
        .as_array()
        .context("no stores")?
        .iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    let series = summary["series"].as_u64().unwrap_or(0);
    // A generation written before the warehouse files existed is not reused.
    let file_series = summary["file_series"]
        .as_u64()
        .context("no warehouse files")?;
    Ok(Generation {
        dir: dir.to_path_buf(),
        names,
        series: usize::try_from(series).unwrap_or(usize::MAX),
        file_series: usize::try_from(file_series).unwrap_or(usize::MAX),
    })
}

/// Writes the six hours up to `end` as 2-hour blocks, one bucket prefix per simulated
/// Prometheus.
fn write_generation(data_dir: &Path, end: i64) -> anyhow::Result<Generation> {
    let final_dir = data_dir.join(end.to_string());
    let tmp = data_dir.join(format!("{end}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let bucket = tmp.join("bucket");
    let shape = DemoShape::six_hours_until(end);
    let replicas = data::generate(shape);
    let mut names = Vec::with_capacity(replicas.len());
    let mut series_total = 0;
    let first_block = (end - shape.span).div_euclid(BLOCK_MS) * BLOCK_MS;
    let windows: Vec<(i64, i64)> = (0..)
        .map(|i| first_block + i * BLOCK_MS)
        .take_while(|s| *s <= end)
        .map(|s| (s, s + BLOCK_MS))
        .collect();
    let mut stderr = std::io::stderr();
    let terminal = stderr.is_terminal();
    for replica in replicas {
        let name = store_name(&replica.external_labels);
        let dir = bucket.join(&name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut series = replica.series;
        series.sort_by(|a, b| a.0.cmp(&b.0));
        series_total += series.len();
        let mut written = 0;
        for (i, (from, to)) in windows.iter().enumerate() {
            if terminal {
                let _ = write!(
                    stderr,
                    "\rdemo: writing blocks for {name}: {}/{} ",
                    i + 1,
                    windows.len()
                );
            }
            let parts: Vec<(&gauntlet_tsdb::labels::Labels, &[(i64, f64)])> = series
                .iter()
                .filter_map(|(labels, samples)| {
                    let lo = samples.partition_point(|s| s.0 < *from);
                    let hi = samples.partition_point(|s| s.0 < *to);
                    (lo < hi).then(|| (labels, &samples[lo..hi]))
                })
                .collect();
            if parts.is_empty() {
                continue;
            }
            let options = BlockWriterOptions {
                thanos: Some(ThanosMeta {
                    labels: replica
                        .external_labels
                        .iter()
                        .map(|l| (l.name.clone(), l.value.clone()))
                        .collect(),
                    source: "demo".to_owned(),
                    ..ThanosMeta::default()
                }),
                ..BlockWriterOptions::default()
            };
            write_block_dir(&dir, options, parts)
                .with_context(|| format!("writing a demo block for {name}"))?;
            written += 1;
        }
        if terminal {
            let _ = writeln!(stderr, "done");
        } else {
            let _ = writeln!(stderr, "demo: wrote {written} blocks for {name}");
        }
        names.push(name);
    }
    let file_series = write_files(&bucket, end)?;
    let summary = serde_json::json!({
        "stores": names,
        "series": series_total,
        "file_series": file_series,
        "end": end,
    });
    std::fs::write(tmp.join(SUMMARY_FILE), summary.to_string())?;
    match std::fs::rename(&tmp, &final_dir) {
        Ok(()) => {}
        // Another start wrote the same generation first: use that one.
        Err(_) if final_dir.join(SUMMARY_FILE).is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(error) => {
            return Err(error).with_context(|| format!("renaming into {}", final_dir.display()));
        }
    }
    eprintln!(
        "demo: {series_total} series written to {}, and {file_series} series of warehouse exports to {}",
        final_dir.display(),
        final_dir.join("bucket").join(files::PREFIX).display()
    );
    Ok(Generation {
        dir: final_dir,
        names,
        series: series_total,
        file_series,
    })
}

/// Writes the warehouse's export files under their prefix of `bucket`; returns their series.
fn write_files(bucket: &Path, end: i64) -> anyhow::Result<usize> {
    let dir = bucket.join(files::PREFIX);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (data_files, series) = files::generate(end);
    for file in data_files {
        let path = dir.join(file.name);
        std::fs::write(&path, file.contents)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "demo: wrote {series} series of warehouse exports to {}",
        dir.display()
    );
    Ok(series)
}
