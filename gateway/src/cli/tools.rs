//! `gauntlet tools bucket ls|inspect|upload`: blocks in object storage from the command line.
//! Results go to stdout, progress and notes to stderr (one updating line on a terminal, plain
//! lines otherwise). Never changes a block that is already in the bucket.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;

use super::{BucketArgs, BucketCommand, InspectOutput, RunError, ToolsCommand};
use crate::objstore::blocks::{self, BucketBlock, UploadEvent};
use crate::objstore::{Bucket, ClientTuning, ObjstoreError};

/// Runs one `gauntlet tools ...` command.
pub async fn run(command: ToolsCommand) -> Result<(), RunError> {
    let ToolsCommand::Bucket(command) = command;
    match command {
        BucketCommand::Ls(args) => ls(&args).await,
        BucketCommand::Inspect { bucket, output } => inspect(&bucket, output).await,
        BucketCommand::Upload {
            bucket,
            dir,
            labels,
        } => upload(&bucket, &dir, &labels).await,
    }
}

/// The bucket the flags describe; an unusable configuration is a usage error (exit 2).
fn open(args: &BucketArgs) -> Result<Bucket, RunError> {
    let tuning = ClientTuning {
        max_retries: Some(3),
        retry_timeout: Duration::from_secs(30),
        ..ClientTuning::default()
    };
    Bucket::from_flags(
        args.objstore.objstore_config_file.as_deref(),
        args.objstore.objstore_config.as_deref(),
        &tuning,
    )
    .map_err(|error| match error {
        ObjstoreError::Config { .. } => RunError::Usage(error.to_string()),
        other => RunError::Failed(other.into()),
    })
}

fn note_skipped(skipped: &[String]) {
    if !skipped.is_empty() {
        eprintln!(
            "note: skipped {} folder(s) without meta.json (partial uploads or deletions in \
             progress): {}",
            skipped.len(),
            skipped.join(", ")
        );
    }
}

async fn ls(args: &BucketArgs) -> Result<(), RunError> {
    let bucket = open(args)?;
    let (ulids, skipped) = blocks::list_blocks(&bucket)
        .await
        .context("listing blocks")?;
    let mut out = std::io::stdout().lock();
    for ulid in &ulids {
        writeln!(out, "{ulid}").context("writing to stdout")?;
    }
    note_skipped(&skipped);
    Ok(())
}

async fn inspect(args: &BucketArgs, output: InspectOutput) -> Result<(), RunError> {
    let bucket = open(args)?;
    let (found, skipped) = blocks::inspect_blocks(&bucket)
        .await
        .context("inspecting blocks")?;
    let text = match output {
        InspectOutput::Json => {
            let rows: Vec<serde_json::Value> = found.iter().map(json_row).collect();
            serde_json::to_string_pretty(&rows).context("encoding JSON")? + "\n"
        }
        InspectOutput::Table | InspectOutput::Tsv => {
            let mut rows = vec![
                [
                    "ULID",
                    "FROM",
                    "UNTIL",
                    "RANGE",
                    "SERIES",
                    "SAMPLES",
                    "CHUNKS",
                    "LEVEL",
                    "RESOLUTION",
                    "SOURCE",
                    "LABELS",
                    "DELETION",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            rows.extend(found.iter().map(table_row));
            if output == InspectOutput::Tsv {
                rows.iter().map(|r| r.join("\t") + "\n").collect()
            } else {
                align(&rows)
            }
        }
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("writing to stdout")?;
    note_skipped(&skipped);
    Ok(())
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

fn millis(ms: i64) -> String {
    crate::duration::format(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

fn labels_text(block: &BucketBlock) -> String {
    let labels = block.meta.external_labels();
    if labels.is_empty() {
        return "-".to_owned();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn source(block: &BucketBlock) -> String {
    block
        .meta
        .thanos
        .as_ref()
        .map(|t| t.source.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

fn table_row(block: &BucketBlock) -> Vec<String> {
    let m = &block.meta;
    vec![
        m.ulid.clone(),
        time(m.min_time),
        time(m.max_time),
        millis(m.max_time - m.min_time),
        m.stats.num_series.to_string(),
        m.stats.num_samples.to_string(),
        m.stats.num_chunks.to_string(),
        m.compaction.level.to_string(),
        millis(m.resolution()),
        source(block),
        labels_text(block),
        if block.deletion_marked {
            "marked".to_owned()
        } else {
            "-".to_owned()
        },
    ]
}

fn json_row(block: &BucketBlock) -> serde_json::Value {
    let m = &block.meta;
    serde_json::json!({
        "ulid": m.ulid,
        "minTime": m.min_time,
        "maxTime": m.max_time,
        "series": m.stats.num_series,
        "samples": m.stats.num_samples,
        "chunks": m.stats.num_chunks,
        "level": m.compaction.level,
        "resolution": m.resolution(),
        "source": m.thanos.as_ref().map(|t| t.source.clone()).unwrap_or_default(),
        "labels": m.external_labels(),
        "deletionMarked": block.deletion_marked,
    })
}

/// Columns padded to their widest cell, two spaces apart.
fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn size(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let b = bytes as f64;
    if b >= MIB {
        format!("{:.1} MiB", b / MIB)
    } else if bytes >= 1024 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// Progress on stderr: one rewritten line on a terminal, a line per block otherwise.
struct ProgressDisplay {
    tty: bool,
    current: Mutex<(usize, usize, u64)>,
}

impl ProgressDisplay {
    fn show(&self, event: &UploadEvent<'_>) {
        let mut stderr = std::io::stderr().lock();
        let Ok(mut current) = self.current.lock() else {
            return;
        };
        match *event {
            UploadEvent::Started {
                ulid,
                index,
                total,
                bytes,
            } => {
                *current = (index, total, bytes);
                if !self.tty {
                    let _ = writeln!(
                        stderr,
                        "uploading block {ulid} ({index}/{total}, {})",
                        size(bytes)
                    );
                }
            }
            UploadEvent::Progress { ulid, sent } => {
                if self.tty {
                    let (index, total, bytes) = *current;
                    let _ = write!(
                        stderr,
                        "\r\x1b[2Kblock {index}/{total} {ulid}: {} / {}",
                        size(sent),
                        size(bytes)
                    );
                    let _ = stderr.flush();
                }
            }
            UploadEvent::Uploaded { ulid, bytes } => {
                if self.tty {
                    let _ = write!(stderr, "\r\x1b[2K");
                }
                let _ = writeln!(stderr, "uploaded block {ulid} ({})", size(bytes));
            }
            UploadEvent::Skipped { ulid } => {
                if self.tty {
                    let _ = write!(stderr, "\r\x1b[2K");
                }
                let _ = writeln!(stderr, "skipped block {ulid}: already in the bucket");
            }
        }
    }
}

async fn upload(
    args: &BucketArgs,
    dir: &std::path::Path,
    labels: &[(String, String)],
) -> Result<(), RunError> {
    let local = blocks::find_local_blocks(dir).context("refusing to upload")?;
    let bucket = open(args)?;
    if labels.is_empty() {
        eprintln!(
            "note: no --label given: the blocks carry no external labels, so queriers cannot \
             tell their source apart from others"
        );
    }
    let display = ProgressDisplay {
        tty: std::io::stderr().is_terminal(),
        current: Mutex::new((0, 0, 0)),
    };
    let summary = blocks::upload_blocks(&bucket, &local, labels, &|event| display.show(&event))
        .await
        .with_context(|| format!("uploading to {}", bucket.location()))?;
    println!(
        "uploaded {} block(s) ({}), skipped {} already in the bucket",
        summary.uploaded,
        size(summary.bytes),
        summary.skipped
    );
    Ok(())
}
