//! `gauntlet compact`: runs the compactor WebAssembly plugin (`plugins/compactor`, world
//! `compactor`) over the blocks of one bucket: plan, run each job, plan again until nothing is
//! left; with `--wait`, again every `--wait-interval`.
//!
//! The plugin is the built-in component `compactor.wasm` (found like the sidecar's, see
//! [`crate::sidecar::builtin_candidates`]) or the one `--plugin` names. The built-in plugin is
//! granted the whole bucket (through [`RootBucket`]) and nothing else, with a generous memory
//! limit and deadline. This module never touches blocks itself: everything it knows about
//! them comes from the plugin's jobs and outcomes. A failed job halts compaction (Thanos's
//! behaviour): without `--wait` the command exits 1, with `--wait` it keeps serving
//! `/metrics` with `gauntlet_compactor_halted` at 1 until it is stopped.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use async_trait::async_trait;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use crate::cli::CompactArgs;
use crate::http::{self, Readiness};
use crate::objstore::{Bucket as Objstore, ClientTuning};
use crate::plugin::bucket::{Bucket, BucketError, ObjectInfo, ObjectStoreBucket, Upload};
use crate::plugin::instance::Job;
use crate::plugin::manifest::sha256_hex;
use crate::plugin::{HostConfig, HostServices, LoadedPlugin, PluginHost, World};
use crate::shutdown::Shutdown;

/// File name of the built-in compactor component.
pub const COMPONENT_FILE: &str = "compactor.wasm";
/// The prefix under which [`RootBucket`] shows the whole bucket to the built-in plugin.
pub const ROOT_ALIAS: &str = "bucket/";
/// Memory of one compactor instance: the source blocks and the new block are held in it.
pub const MEMORY_LIMIT: &str = "2GiB";
/// Deadline of one `plan` or `run` call.
pub const TIME_PER_CALL: &str = "30m";

/// Metrics of the compact role.
#[derive(Debug)]
pub struct CompactorMetrics {
    /// `gauntlet_compactor_passes_total`: plan-and-run passes started.
    pub passes: IntCounter,
    /// `gauntlet_compactor_jobs_total{result}`: jobs run, by result (`success`, `error`).
    pub jobs: IntCounterVec,
    /// `gauntlet_compactor_blocks_created_total`: blocks the plugin wrote.
    pub blocks_created: IntCounter,
    /// `gauntlet_compactor_blocks_marked_for_deletion_total`: source blocks marked.
    pub blocks_marked: IntCounter,
    /// `gauntlet_compactor_halted`: 1 once a job failed and compaction stopped.
    pub halted: IntGauge,
    /// `gauntlet_compactor_last_success_timestamp_seconds`: end of the last complete pass.
    pub last_success: IntGauge,
}

// The metric definitions are constants prometheus accepts; only an edit to an invalid name
// could reach this, and the role's tests would catch it.
#[allow(clippy::panic)]
fn invalid_metric(name: &str) -> ! {
    panic!("invalid metric definition {name}")
}

/// The compactor metrics, registered on first use.
pub fn compactor_metrics() -> &'static CompactorMetrics {
    static METRICS: OnceLock<CompactorMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let counter = |name: &str, help: &str| {
            IntCounter::new(name, help).unwrap_or_else(|_| invalid_metric(name))
        };
        let gauge = |name: &str, help: &str| {
            IntGauge::new(name, help).unwrap_or_else(|_| invalid_metric(name))
        };
        let metrics = CompactorMetrics {
            passes: counter(
                "gauntlet_compactor_passes_total",
                "Compaction passes (plan, run every job, until nothing is left) started.",
            ),
            jobs: IntCounterVec::new(
                Opts::new(
                    "gauntlet_compactor_jobs_total",
                    "Compaction jobs run by the compactor plugin, by result.",
                ),
                &["result"],
            )
            .unwrap_or_else(|_| invalid_metric("gauntlet_compactor_jobs_total")),
            blocks_created: counter(
                "gauntlet_compactor_blocks_created_total",
                "Blocks written to the bucket by compaction.",
            ),
            blocks_marked: counter(
                "gauntlet_compactor_blocks_marked_for_deletion_total",
                "Source blocks marked for deletion after they were compacted.",
            ),
            halted: gauge(
                "gauntlet_compactor_halted",
                "1 when a compaction job failed and the compactor stopped compacting.",
            ),
            last_success: gauge(
                "gauntlet_compactor_last_success_timestamp_seconds",
                "Unix time at which the last complete compaction pass ended.",
            ),
        };
        let registry = crate::metrics::registry();
        let _ = registry.register(Box::new(metrics.passes.clone()));
        let _ = registry.register(Box::new(metrics.jobs.clone()));
        let _ = registry.register(Box::new(metrics.blocks_created.clone()));
        let _ = registry.register(Box::new(metrics.blocks_marked.clone()));
        let _ = registry.register(Box::new(metrics.halted.clone()));
        let _ = registry.register(Box::new(metrics.last_success.clone()));
        metrics
    })
}

/// The whole of `inner` under the folder [`ROOT_ALIAS`], so a manifest can grant all of it
/// (manifests only grant folders): `bucket/a/b` is `a/b` in `inner`.
#[derive(Debug)]
pub struct RootBucket {
    inner: Arc<dyn Bucket>,
}

impl RootBucket {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Bucket>) -> Self {
        Self { inner }
    }

    fn inner_key(key: &str) -> Result<&str, BucketError> {
        key.strip_prefix(ROOT_ALIAS)
            .ok_or_else(|| BucketError::InvalidKey(format!("{key:?} is outside {ROOT_ALIAS}")))
    }

    fn outer(mut info: ObjectInfo) -> ObjectInfo {
        info.key = format!("{ROOT_ALIAS}{}", info.key);
        info
    }
}

#[async_trait]
impl Bucket for RootBucket {
    async fn get(&self, key: &str) -> Result<Vec<u8>, BucketError> {
        self.inner.get(Self::inner_key(key)?).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, BucketError> {
        self.inner.get_range(Self::inner_key(key)?, range).await
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, BucketError> {
        self.inner
            .head(Self::inner_key(key)?)
            .await
            .map(Self::outer)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BucketError> {
        let inner_prefix = Self::inner_key(prefix)?;
        Ok(self
            .inner
            .list(inner_prefix)
            .await?
            .into_iter()
            .map(Self::outer)
            .collect())
    }

    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), BucketError> {
        self.inner.put(Self::inner_key(key)?, data).await
    }

    async fn delete(&self, key: &str) -> Result<(), BucketError> {
        self.inner.delete(Self::inner_key(key)?).await
    }

    async fn start_upload(&self, key: &str) -> Result<Box<dyn Upload>, BucketError> {
        self.inner.start_upload(Self::inner_key(key)?).await
    }
}

/// The manifest of the built-in compactor: the whole bucket, generous limits.
pub fn builtin_manifest(component: &Path, sha256: &str) -> String {
    let path = toml::Value::String(component.display().to_string()).to_string();
    format!(
        "name = \"compactor\"\nversion = \"{}\"\nworld = \"compactor\"\npath = {path}\nsha256 = \"{sha256}\"\nfailure_policy = \"fail-closed\"\n\n[capabilities]\nbucket_prefix = \"{ROOT_ALIAS}\"\n\n[limits]\nmemory = \"{MEMORY_LIMIT}\"\ntime_per_call = \"{TIME_PER_CALL}\"\nhost_calls_per_call = 10000000\n",
        crate::build_info::VERSION,
    )
}

/// Loads the compactor plugin: the `--plugin` manifest (its `bucket_prefix` is a folder of
/// the bucket), or the built-in component granted the whole bucket, its manifest written to
/// the data directory.
async fn load_plugin(args: &CompactArgs, bucket: &Objstore) -> anyhow::Result<Arc<LoadedPlugin>> {
    let objects: Arc<dyn Bucket> = Arc::new(ObjectStoreBucket::from_objstore(bucket));
    let root: Arc<dyn Bucket> = match &args.plugin {
        Some(_) => objects,
        None => Arc::new(RootBucket::new(objects)),
    };
    let host = PluginHost::new(
        HostConfig {
            cache_dir: crate::sidecar::compiled_cache_dir(),
            max_memory_per_instance: 2 << 30,
            max_instances: 4,
            max_idle_per_plugin: 0,
            ..HostConfig::default()
        },
        HostServices {
            bucket: Some(root),
            ..HostServices::default()
        },
    )?;
    let manifest = match &args.plugin {
        Some(manifest) => manifest.clone(),
        None => {
            let component = crate::sidecar::locate_builtin(COMPONENT_FILE, "compactor")?;
            let bytes = tokio::fs::read(&component)
                .await
                .with_context(|| format!("reading {}", component.display()))?;
            let path = args.data_dir.join("compactor.toml");
            tokio::fs::write(&path, builtin_manifest(&component, &sha256_hex(&bytes)))
                .await
                .with_context(|| format!("writing {}", path.display()))?;
            path
        }
    };
    let plugin = host.load_async(&manifest).await?;
    let world = plugin.manifest().world;
    if world != World::Compactor {
        anyhow::bail!(
            "--plugin {}: world is {world}, but `gauntlet compact` runs compactor plugins",
            manifest.display()
        );
    }
    Ok(plugin)
}

/// `2h`, `8h`, `2d` for a block length in milliseconds; lengths over an hour are rounded up
/// to whole hours (blocks made from samples end just after their last sample).
fn format_length(ms: i64) -> String {
    const H: i64 = 3_600_000;
    let ms = if ms > H { (ms + H - 1) / H * H } else { ms };
    if ms > 0 && ms % (24 * H) == 0 {
        format!("{}d", ms / (24 * H))
    } else if ms > 0 && ms % H == 0 {
        format!("{}h", ms / H)
    } else if ms > 0 && ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{ms}ms")
    }
}

/// The progress line for one job, e.g. `compacting 4 blocks of {cluster="eu1"} into 8h block
/// [0, 28800000)`.
pub fn describe(job: &Job) -> String {
    let group = job
        .id
        .split_once('@')
        .map_or(job.id.as_str(), |(_, labels)| labels);
    let length = job
        .range
        .max_time
        .saturating_sub(job.range.min_time)
        .saturating_add(1);
    format!(
        "{} {} blocks of {group} into {} block [{}, {})",
        if job.kind == "compact" {
            "compacting"
        } else {
            job.kind.as_str()
        },
        job.sources.len(),
        format_length(length),
        job.range.min_time,
        job.range.max_time.saturating_add(1),
    )
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// A plan or job failed; compaction halts.
    #[error("{0}")]
    Halt(String),
}

/// One pass: plan, run every job, plan again until the plugin proposes nothing. Returns the
/// number of jobs run.
pub async fn pass(plugin: &Arc<LoadedPlugin>) -> Result<usize, PassError> {
    let metrics = compactor_metrics();
    metrics.passes.inc();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut jobs_run = 0;
    loop {
        let p = plugin.clone();
        let jobs = tokio::task::spawn_blocking(move || p.compaction_plan())
            .await
            .map_err(|e| PassError::Halt(format!("planning: {e}")))?
            .map_err(|e| {
                PassError::Halt(format!(
                    "planning failed: {e}. Check that the bucket is reachable and its blocks readable, then run gauntlet compact again."
                ))
            })?;
        if jobs.is_empty() {
            return Ok(jobs_run);
        }
        for job in jobs {
            if let Some(again) = job.sources.iter().find(|s| done.contains(*s)) {
                return Err(PassError::Halt(format!(
                    "the plugin proposed block {again} again after compacting it; stopping so that no block is compacted twice"
                )));
            }
            eprintln!("{}", describe(&job));
            tracing::info!(group = %job.id, sources = ?job.sources, kind = %job.kind, "running compaction job");
            let p = plugin.clone();
            let run_job = job.clone();
            let outcome = tokio::task::spawn_blocking(move || p.compaction_run(&run_job))
                .await
                .map_err(|e| PassError::Halt(format!("running a job: {e}")))?;
            match outcome {
                Ok(outcome) => {
                    metrics.jobs.with_label_values(&["success"]).inc();
                    metrics.blocks_created.inc_by(outcome.created.len() as u64);
                    metrics.blocks_marked.inc_by(outcome.deleted.len() as u64);
                    eprintln!(
                        "created {}; marked {} for deletion",
                        outcome.created.join(", "),
                        outcome.deleted.join(", ")
                    );
                    done.extend(job.sources.iter().cloned());
                    jobs_run += 1;
                }
                Err(e) => {
                    metrics.jobs.with_label_values(&["error"]).inc();
                    return Err(PassError::Halt(format!(
                        "compaction of {} (blocks {}) failed: {e}. The source blocks are kept. Inspect the block the error names (gauntlet tools bucket inspect); to skip it, put a no-compact-mark.json in its folder, or delete it; then run gauntlet compact again.",
                        job.id,
                        job.sources.join(", ")
                    )));
                }
            }
        }
    }
}

/// `gauntlet compact`.
pub async fn run(args: &CompactArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    let bucket = Objstore::from_flags(
        args.objstore.objstore_config_file.as_deref(),
        args.objstore.objstore_config.as_deref(),
        &ClientTuning::default(),
    )?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("--data-dir {}: cannot create it", args.data_dir.display()))?;
    let metrics = compactor_metrics();
    metrics.halted.set(0);
    let server = if args.wait {
        let listener = http::bind(args.http_address, "--http-address").await?;
        let readiness = Readiness::default();
        readiness.set_ready(true);
        Some(tokio::spawn(http::serve(
            listener,
            http::common_routes(readiness),
            shutdown.clone(),
        )))
    } else {
        None
    };
    let plugin = load_plugin(args, &bucket).await?;
    tracing::info!(
        bucket = %bucket.location(),
        plugin = %plugin.manifest().component_path.display(),
        "starting compactor"
    );
    loop {
        match pass(&plugin).await {
            Ok(n) => {
                metrics.last_success.set(chrono::Utc::now().timestamp());
                eprintln!(
                    "compaction pass done: {n} job{} run",
                    if n == 1 { "" } else { "s" }
                );
            }
            Err(PassError::Halt(message)) => {
                metrics.halted.set(1);
                if let Some(server) = server {
                    tracing::error!(error = %message, "compaction halted; serving metrics until stopped");
                    eprintln!("gauntlet compact: halted: {message}");
                    shutdown.clone().requested().await;
                    server.await??;
                    return Ok(());
                }
                anyhow::bail!("compaction halted: {message}");
            }
        }
        if !args.wait {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(args.wait_interval) => {}
            () = shutdown.clone().requested() => break,
        }
    }
    if let Some(server) = server {
        server.await??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::bindings::host::gauntlet::plugin::types::TimeRange;

    #[test]
    fn progress_lines_name_the_group_and_length() {
        let job = Job {
            id: "0@{cluster=\"eu1\"}".to_owned(),
            sources: vec!["A".into(), "B".into(), "C".into(), "D".into()],
            range: TimeRange {
                min_time: 0,
                max_time: 8 * 3_600_000 - 1,
            },
            kind: "compact".to_owned(),
        };
        assert_eq!(
            describe(&job),
            "compacting 4 blocks of {cluster=\"eu1\"} into 8h block [0, 28800000)"
        );
        assert_eq!(format_length(8 * 3_600_000 - 29_999), "8h");
        assert_eq!(format_length(48 * 3_600_000), "2d");
        assert_eq!(format_length(90_000), "90000ms");
    }

    #[tokio::test]
    async fn the_root_alias_maps_onto_the_whole_bucket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner: Arc<dyn Bucket> =
            Arc::new(ObjectStoreBucket::local(dir.path()).expect("bucket"));
        inner.put("a/b", b"x".to_vec()).await.expect("put");
        let root = RootBucket::new(inner);
        assert_eq!(root.get("bucket/a/b").await.expect("get"), b"x");
        let listed = root.list("bucket/").await.expect("list");
        assert_eq!(listed[0].key, "bucket/a/b");
        assert!(root.get("a/b").await.is_err());
    }
}
