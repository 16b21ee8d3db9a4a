//! The shipper: uploads the blocks Prometheus finished writing to object storage, as Thanos's
//! sidecar does, and remembers what it shipped in `thanos.shipper.json` in the data directory
//! (Thanos's format, `{"version": 1, "uploaded": [...]}`), so a restart ships nothing twice.
//!
//! Every [`SYNC_INTERVAL`] (and at start) the data directory is scanned for `ULID/` folders
//! with a `meta.json` (folders being written, `*.tmp*`, `wal/` and `chunks_head/` are never
//! ULIDs and so never looked at). Compacted blocks (level > 1) are shipped only with
//! `--shipper.upload-compacted`, empty blocks never. A block already in the bucket is recorded,
//! not uploaded again; the others go up oldest first through
//! [`crate::objstore::blocks::upload_block`], files first and `meta.json` last, with the
//! `thanos` section (Prometheus's external labels, source `sidecar`, files with sizes). Like
//! Thanos, the upload reads hard links under `thanos/upload/ULID/` in the data directory,
//! removed afterwards, so retention deleting the block meanwhile cannot cut it short.
//!
//! Invariants: blocks are shipped only with external labels (without them blocks from
//! different Prometheus servers cannot be told apart in the bucket); local blocks are never
//! modified; a failure is logged with what to do and retried at the next sync, and never
//! stops the sidecar.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{Gauge, IntCounter};
use serde::{Deserialize, Serialize};

use crate::objstore::Bucket;
use crate::objstore::blocks::{self, LocalBlock, is_ulid};
use crate::query::store::Store;
use crate::shutdown::Shutdown;

/// Name of the state file in the Prometheus data directory (Thanos's default).
pub const STATE_FILE: &str = "thanos.shipper.json";
/// The only version of [`STATE_FILE`].
pub const STATE_VERSION: u32 = 1;
/// The `thanos.source` of shipped blocks.
pub const SOURCE: &str = "sidecar";
/// How often the data directory is scanned for new blocks.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(30);
/// Where blocks are hard-linked while they upload, relative to the data directory (Thanos's).
pub const STAGING_DIR: &str = "thanos/upload";
/// How soon to try again when Prometheus did not say its external labels.
const LABELS_RETRY: Duration = Duration::from_secs(2);

/// Metrics of the shipper.
#[derive(Debug)]
pub struct ShipperMetrics {
    /// `gauntlet_shipper_uploads_total`: blocks uploaded.
    pub uploads: IntCounter,
    /// `gauntlet_shipper_upload_failures_total`: blocks whose upload failed.
    pub upload_failures: IntCounter,
    /// `gauntlet_shipper_dir_syncs_total`: scans of the data directory.
    pub dir_syncs: IntCounter,
    /// `gauntlet_shipper_dir_sync_failures_total`: scans with at least one block not shipped.
    pub dir_sync_failures: IntCounter,
    /// `gauntlet_shipper_last_successful_upload_time`: Unix time of the last block uploaded.
    pub last_successful_upload: Gauge,
}

// The metric definitions are constants prometheus accepts; only an edit to an invalid name
// could reach this, and the unit tests would catch it.
#[allow(clippy::panic)]
fn invalid_metric(name: &str) -> ! {
    panic!("invalid metric definition {name}")
}

/// The shipper metrics, registered on first use.
pub fn shipper_metrics() -> &'static ShipperMetrics {
    static METRICS: OnceLock<ShipperMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let counter = |name: &str, help: &str| {
            IntCounter::new(name, help).unwrap_or_else(|_| invalid_metric(name))
        };
        let metrics = ShipperMetrics {
            uploads: counter(
                "gauntlet_shipper_uploads_total",
                "Blocks uploaded to object storage by the shipper.",
            ),
            upload_failures: counter(
                "gauntlet_shipper_upload_failures_total",
                "Blocks whose upload to object storage failed (retried at the next sync).",
            ),
            dir_syncs: counter(
                "gauntlet_shipper_dir_syncs_total",
                "Scans of the Prometheus data directory for blocks to ship.",
            ),
            dir_sync_failures: counter(
                "gauntlet_shipper_dir_sync_failures_total",
                "Scans of the Prometheus data directory that left a block unshipped.",
            ),
            last_successful_upload: Gauge::new(
                "gauntlet_shipper_last_successful_upload_time",
                "Unix time in seconds of the last block uploaded to object storage.",
            )
            .unwrap_or_else(|_| invalid_metric("gauntlet_shipper_last_successful_upload_time")),
        };
        let registry = crate::metrics::registry();
        for counter in [
            &metrics.uploads,
            &metrics.upload_failures,
            &metrics.dir_syncs,
            &metrics.dir_sync_failures,
        ] {
            let _ = registry.register(Box::new(counter.clone()));
        }
        let _ = registry.register(Box::new(metrics.last_successful_upload.clone()));
        metrics
    })
}

/// Contents of [`STATE_FILE`]: the blocks shipped (or found already in the bucket).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipperState {
    /// Always [`STATE_VERSION`].
    pub version: u32,
    /// ULIDs of the blocks in the bucket, oldest first.
    pub uploaded: Vec<String>,
}

impl ShipperState {
    /// Reads the state of `data_dir`. A missing file is an empty state; an unreadable one is
    /// logged and treated as empty too (blocks already in the bucket are then only recorded
    /// again, not uploaded).
    pub fn read(data_dir: &Path) -> Self {
        let path = data_dir.join(STATE_FILE);
        let parsed = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Self>(&bytes).map_err(|e| e.to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Self::empty(),
            Err(e) => Err(e.to_string()),
        };
        match parsed {
            Ok(state) if state.version == STATE_VERSION => state,
            Ok(state) => {
                tracing::warn!(
                    file = %path.display(),
                    version = state.version,
                    "unknown shipper state version; starting afresh (blocks already in the bucket are not uploaded again)"
                );
                Self::empty()
            }
            Err(error) => {
                tracing::warn!(
                    file = %path.display(),
                    %error,
                    "cannot read the shipper state; starting afresh (blocks already in the bucket are not uploaded again)"
                );
                Self::empty()
            }
        }
    }

    /// Writes the state to `data_dir` atomically: a temporary file, synced, renamed over
    /// [`STATE_FILE`].
    pub fn write(&self, data_dir: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let path = data_dir.join(STATE_FILE);
        let temporary = data_dir.join(format!("{STATE_FILE}.tmp"));
        let mut text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        text.push(b'\n');
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&text)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, &path)?;
        // Make the rename durable; some filesystems cannot sync a directory.
        if let Ok(dir) = std::fs::File::open(data_dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    fn empty() -> Self {
        Self {
            version: STATE_VERSION,
            uploaded: Vec::new(),
        }
    }
}

/// Why nothing was shipped.
#[derive(Debug, thiserror::Error)]
pub enum ShipperError {
    /// Prometheus has no external labels.
    #[error(
        "Prometheus has no external labels, so blocks are not shipped: blocks without them \
         cannot be told apart from other Prometheus servers' in the bucket. Set \
         `global.external_labels` in prometheus.yml (for example cluster and replica) and \
         reload Prometheus"
    )]
    NoExternalLabels,
    /// The data directory cannot be listed.
    #[error(
        "cannot list the Prometheus data directory {dir}: {reason} (check --tsdb.path and that \
         the sidecar may read it)"
    )]
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncSummary {
    /// Blocks uploaded.
    pub uploaded: usize,
    /// Blocks found already in the bucket and recorded.
    pub already_in_bucket: usize,
    /// Blocks that could not be read or uploaded (tried again at the next sync).
    pub failed: usize,
}

/// Ships the blocks of one Prometheus data directory to a bucket.
#[derive(Debug, Clone)]
pub struct Shipper {
    /// The Prometheus data directory (`--tsdb.path`).
    pub data_dir: PathBuf,
    /// Where blocks go.
    pub bucket: Bucket,
    /// Ship compacted blocks (level > 1) too (`--shipper.upload-compacted`).
    pub upload_compacted: bool,
}

impl Shipper {
    /// Scans the data directory once and ships every new block with `labels` (the external
    /// labels of Prometheus), then writes the state file. Failures of single blocks are logged
    /// and counted in the summary.
    pub async fn sync(&self, labels: &[(String, String)]) -> Result<SyncSummary, ShipperError> {
        if labels.is_empty() {
            return Err(ShipperError::NoExternalLabels);
        }
        let metrics = shipper_metrics();
        let dir = self.data_dir.clone();
        let (found, unreadable) = tokio::task::spawn_blocking(move || scan(&dir))
            .await
            .map_err(|e| ShipperError::DataDir {
                dir: self.data_dir.clone(),
                reason: e.to_string(),
            })??;
        let previous = ShipperState::read(&self.data_dir);
        let mut state = ShipperState::empty();
        let mut summary = SyncSummary {
            failed: unreadable,
            ..SyncSummary::default()
        };
        for block in &found {
            let meta = &block.meta;
            let ulid = meta.ulid.as_str();
            if meta.compaction.level > 1 && !self.upload_compacted {
                continue;
            }
            if previous.uploaded.iter().any(|u| u == ulid) {
                state.uploaded.push(ulid.to_owned());
                continue;
            }
            if meta.stats.num_samples == 0 {
                tracing::debug!(block = ulid, "not shipping an empty block");
                continue;
            }
            match self.bucket.exists(&format!("{ulid}/meta.json")).await {
                Ok(true) => {
                    tracing::info!(block = ulid, "block already in the bucket; recorded");
                    state.uploaded.push(ulid.to_owned());
                    summary.already_in_bucket += 1;
                    continue;
                }
                Ok(false) => {}
                Err(error) => {
                    self.failed(ulid, &error.to_string());
                    summary.failed += 1;
                    continue;
                }
            }
            let started = std::time::Instant::now();
            match self.upload(block, labels).await {
                Ok(bytes) => {
                    tracing::info!(
                        block = ulid,
                        bytes,
                        seconds = started.elapsed().as_secs_f64(),
                        bucket = self.bucket.location(),
                        "shipped block"
                    );
                    metrics.uploads.inc();
                    metrics
                        .last_successful_upload
                        .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
                    state.uploaded.push(ulid.to_owned());
                    summary.uploaded += 1;
                }
                Err(error) => {
                    self.failed(ulid, &error);
                    summary.failed += 1;
                }
            }
        }
        if state != previous {
            let dir = self.data_dir.clone();
            let written = tokio::task::spawn_blocking(move || state.write(&dir))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r);
            if let Err(error) = written {
                tracing::error!(
                    file = %self.data_dir.join(STATE_FILE).display(),
                    %error,
                    "cannot write the shipper state: make the Prometheus data directory writable by the sidecar (until then, blocks found in the bucket after a restart are recorded again, not uploaded)"
                );
            }
        }
        metrics.dir_syncs.inc();
        if summary.failed > 0 {
            metrics.dir_sync_failures.inc();
        }
        Ok(summary)
    }

    /// Uploads `block` from hard links under `thanos/upload/ULID/` in the data directory, as
    /// Thanos does, so that Prometheus deleting the block meanwhile (retention) cannot cut
    /// the upload short; from the block itself when links cannot be made.
    async fn upload(&self, block: &LocalBlock, labels: &[(String, String)]) -> Result<u64, String> {
        let staging = self
            .data_dir
            .join(STAGING_DIR)
            .join(block.meta.ulid.as_str());
        let linked = {
            let (block, staging) = (block.clone(), staging.clone());
            tokio::task::spawn_blocking(move || link_block(&block, &staging))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
        };
        let source = match linked {
            Ok(linked) => linked,
            Err(error) => {
                tracing::warn!(
                    block = block.meta.ulid.as_str(),
                    staging = %staging.display(),
                    %error,
                    "cannot hard-link the block for upload; uploading it in place"
                );
                block.clone()
            }
        };
        let result = blocks::upload_block(&self.bucket, &source, labels, SOURCE, &|_| {})
            .await
            .map_err(|e| e.to_string());
        if source.dir != block.dir {
            let _ = tokio::fs::remove_dir_all(&source.dir).await;
        }
        result
    }

    fn failed(&self, ulid: &str, error: &str) {
        shipper_metrics().upload_failures.inc();
        tracing::error!(
            block = ulid,
            bucket = self.bucket.location(),
            error,
            "shipping the block failed; it is tried again at the next sync (check that the bucket is reachable and writable with these credentials)"
        );
    }

    /// Syncs at start and every `interval` until shutdown, with the external labels `store`
    /// (the sidecar plugin) reports for Prometheus.
    pub async fn run(self, store: Arc<dyn Store>, interval: Duration, shutdown: Shutdown) {
        // Exported from the start, at zero, so that alerts on them work before any upload.
        shipper_metrics();
        let mut refused = false;
        loop {
            let wait = match external_labels(store.as_ref()).await {
                Err(error) => {
                    tracing::debug!(%error, "shipper: external labels not known yet");
                    LABELS_RETRY
                }
                Ok(labels) => match self.sync(&labels).await {
                    Ok(summary) => {
                        refused = false;
                        if summary != SyncSummary::default() {
                            tracing::info!(
                                uploaded = summary.uploaded,
                                already_in_bucket = summary.already_in_bucket,
                                failed = summary.failed,
                                "shipper sync done"
                            );
                        }
                        interval
                    }
                    Err(error @ ShipperError::NoExternalLabels) => {
                        if !refused {
                            tracing::error!("{error}");
                            refused = true;
                        }
                        interval
                    }
                    Err(error) => {
                        shipper_metrics().dir_syncs.inc();
                        shipper_metrics().dir_sync_failures.inc();
                        tracing::error!("{error}; tried again at the next sync");
                        interval
                    }
                },
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.clone().requested() => return,
            }
        }
    }
}

/// Hard-links the files of `block` into `staging` (emptied first).
fn link_block(block: &LocalBlock, staging: &Path) -> std::io::Result<LocalBlock> {
    match std::fs::remove_dir_all(staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let result = (|| {
        for (rel, _) in &block.files {
            let target = staging.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::hard_link(block.dir.join(rel), &target)?;
        }
        Ok(LocalBlock {
            dir: staging.to_owned(),
            ..block.clone()
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(staging);
    }
    result
}

/// The external labels in the first label set `store` reports, sorted by name.
async fn external_labels(store: &dyn Store) -> Result<Vec<(String, String)>, String> {
    let info = store.info().await.map_err(|e| e.to_string())?;
    let mut labels: Vec<(String, String)> = info
        .label_sets
        .first()
        .map(|set| {
            set.labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    labels.sort();
    Ok(labels)
}

/// The complete blocks in `dir`, oldest first, and how many block folders could not be read.
fn scan(dir: &Path) -> Result<(Vec<LocalBlock>, usize), ShipperError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ShipperError::DataDir {
        dir: dir.to_owned(),
        reason: e.to_string(),
    })?;
    let mut found = Vec::new();
    let mut unreadable = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let named_like_a_block = entry.file_name().to_str().is_some_and(is_ulid);
        // Without meta.json Prometheus is still writing the block (or deleting it).
        if !named_like_a_block || !path.join("meta.json").is_file() {
            continue;
        }
        match blocks::read_local_block(&path) {
            Ok(block) => found.push(block),
            Err(error) => {
                shipper_metrics().upload_failures.inc();
                tracing::error!(
                    block = %path.display(),
                    %error,
                    "cannot read the block, so it is not shipped; tried again at the next sync"
                );
                unreadable += 1;
            }
        }
    }
    found.sort_by(|a, b| (a.meta.min_time, &a.meta.ulid).cmp(&(b.meta.min_time, &b.meta.ulid)));
    Ok((found, unreadable))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write_block(data: &Path, ulid: &str, min_time: i64, level: u32, samples: u64) {
        let block = data.join(ulid);
        std::fs::create_dir_all(block.join("chunks")).unwrap();
        std::fs::write(block.join("index"), b"index!").unwrap();
        std::fs::write(block.join("chunks/000001"), b"chunks").unwrap();
        std::fs::write(block.join("tombstones"), b"t").unwrap();
        let meta = format!(
            r#"{{"ulid":"{ulid}","minTime":{min_time},"maxTime":{},"stats":{{"numSamples":{samples},"numSeries":1}},"compaction":{{"level":{level},"sources":["{ulid}"]}},"version":1}}"#,
            min_time + 7_200_000
        );
        std::fs::write(block.join("meta.json"), meta).unwrap();
    }

    fn shipper(data: &Path, bucket_dir: &Path) -> Shipper {
        let store = object_store::local::LocalFileSystem::new_with_prefix(bucket_dir).unwrap();
        Shipper {
            data_dir: data.to_owned(),
            bucket: Bucket::new(Arc::new(store), "test"),
            upload_compacted: false,
        }
    }

    const A: &str = "01JDQ7Y3Z5X1A2B3C4D5E6F7G8";
    const B: &str = "01JDQ7Y3Z5X1A2B3C4D5E6F7G9";
    const COMPACTED: &str = "01JDQ7Y3Z5X1A2B3C4D5E6F7GA";
    const EMPTY: &str = "01JDQ7Y3Z5X1A2B3C4D5E6F7GB";

    fn labels() -> Vec<(String, String)> {
        vec![("cluster".to_owned(), "eu1".to_owned())]
    }

    #[tokio::test]
    async fn ships_new_level_one_blocks_once_and_records_them() {
        let data = tempfile::tempdir().unwrap();
        let bucket_dir = tempfile::tempdir().unwrap();
        write_block(data.path(), B, 7_200_000, 1, 10);
        write_block(data.path(), A, 0, 1, 10);
        write_block(data.path(), COMPACTED, 0, 2, 10);
        write_block(data.path(), EMPTY, 0, 1, 0);
        std::fs::create_dir_all(data.path().join(format!("{A}.tmp-for-creation"))).unwrap();
        std::fs::create_dir_all(data.path().join("wal")).unwrap();
        std::fs::create_dir_all(data.path().join("chunks_head")).unwrap();
        // Still being written: no meta.json yet.
        std::fs::create_dir_all(data.path().join("01JDQ7Y3Z5X1A2B3C4D5E6F7GC/chunks")).unwrap();
        let shipper = shipper(data.path(), bucket_dir.path());

        let summary = shipper.sync(&labels()).await.unwrap();
        assert_eq!(
            summary,
            SyncSummary {
                uploaded: 2,
                already_in_bucket: 0,
                failed: 0
            }
        );
        let state = ShipperState::read(data.path());
        assert_eq!(state.version, 1);
        assert_eq!(state.uploaded, [A, B]);
        let text = std::fs::read_to_string(data.path().join(STATE_FILE)).unwrap();
        assert!(text.contains("\"uploaded\""), "{text}");
        let meta = gauntlet_tsdb::block::meta::BlockMeta::parse(
            &std::fs::read(bucket_dir.path().join(A).join("meta.json")).unwrap(),
        )
        .unwrap();
        let thanos = meta.thanos.unwrap();
        assert_eq!(thanos.source, "sidecar");
        assert_eq!(thanos.labels["cluster"], "eu1");
        assert_eq!(thanos.segment_files, ["000001"]);
        assert!(!bucket_dir.path().join(COMPACTED).exists());
        assert!(!bucket_dir.path().join(EMPTY).exists());
        // The hard links made for the upload are gone; the blocks are untouched.
        let staging = data.path().join(STAGING_DIR);
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
        assert!(data.path().join(A).join("index").is_file());
        assert_eq!(
            std::fs::read(bucket_dir.path().join(A).join("index")).unwrap(),
            b"index!"
        );

        // Nothing new: nothing uploaded, the state unchanged.
        let again = shipper.sync(&labels()).await.unwrap();
        assert_eq!(again, SyncSummary::default());
        assert_eq!(ShipperState::read(data.path()).uploaded, [A, B]);

        // Lost state: blocks in the bucket are recorded, not uploaded.
        std::fs::remove_file(data.path().join(STATE_FILE)).unwrap();
        let recorded = shipper.sync(&labels()).await.unwrap();
        assert_eq!((recorded.uploaded, recorded.already_in_bucket), (0, 2));
        assert_eq!(ShipperState::read(data.path()).uploaded, [A, B]);

        // With --shipper.upload-compacted the level-2 block goes too.
        let compacted = Shipper {
            upload_compacted: true,
            ..shipper
        };
        let summary = compacted.sync(&labels()).await.unwrap();
        assert_eq!(summary.uploaded, 1);
        assert!(
            bucket_dir
                .path()
                .join(COMPACTED)
                .join("meta.json")
                .is_file()
        );
    }

    #[tokio::test]
    async fn refuses_without_external_labels_and_survives_a_bad_state_file() {
        let data = tempfile::tempdir().unwrap();
        let bucket_dir = tempfile::tempdir().unwrap();
        write_block(data.path(), A, 0, 1, 10);
        let shipper = shipper(data.path(), bucket_dir.path());
        let error = shipper.sync(&[]).await.unwrap_err().to_string();
        assert!(error.contains("external_labels"), "{error}");
        assert!(!bucket_dir.path().join(A).exists());

        std::fs::write(data.path().join(STATE_FILE), b"{not json").unwrap();
        let summary = shipper.sync(&labels()).await.unwrap();
        assert_eq!(summary.uploaded, 1);
        assert_eq!(ShipperState::read(data.path()).uploaded, [A]);
    }

    #[tokio::test]
    async fn a_failed_upload_is_counted_and_not_recorded() {
        let data = tempfile::tempdir().unwrap();
        let bucket_dir = tempfile::tempdir().unwrap();
        write_block(data.path(), A, 0, 1, 10);
        // A file where the bucket wants a folder: every write fails.
        let bucket_file = bucket_dir.path().join("file");
        std::fs::write(&bucket_file, b"x").unwrap();
        let store =
            object_store::local::LocalFileSystem::new_with_prefix(bucket_dir.path()).unwrap();
        let shipper = Shipper {
            data_dir: data.path().to_owned(),
            bucket: Bucket::new(
                Arc::new(object_store::prefix::PrefixStore::new(store, "file")),
                "test",
            ),
            upload_compacted: false,
        };
        let summary = shipper.sync(&labels()).await.unwrap();
        assert_eq!((summary.uploaded, summary.failed), (0, 1));
        assert!(ShipperState::read(data.path()).uploaded.is_empty());
    }
}
