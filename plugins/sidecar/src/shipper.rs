//! The shipper, run by `tick`: uploads the blocks Prometheus finished writing to object
//! storage, as Thanos's sidecar does, and remembers what it shipped in a state file so a
//! restart ships nothing twice.
//!
//! Every sync interval (and at the first tick) the TSDB folder, granted read-only, is scanned
//! for `ULID/` folders with a `meta.json` (folders being written, `*.tmp*`, `wal/` and
//! `chunks_head/` are never ULIDs and so never looked at). Compacted blocks (level > 1) are
//! shipped only with `upload_compacted`, empty blocks never. A block already in the bucket is
//! recorded, not uploaded again; the others go up oldest first, files first and `meta.json`
//! last, with the `thanos` section (Prometheus's external labels, source `sidecar`, files with
//! sizes). Every file of a block is opened before the first byte is sent, so Prometheus
//! deleting the block meanwhile (retention) cannot cut the upload short. Files go up in parts
//! through the bucket's `upload` resource, never as one buffer.
//!
//! The state is Thanos's format (`{"version": 1, "uploaded": [...]}`) in
//! `thanos.shipper.json` of the state folder, the only folder the shipper may write (the host
//! grants `<tsdb>/thanos/`). A state file Thanos (or an older Gauntlet) left in the TSDB folder
//! itself is read when the state folder has none.
//!
//! Invariants: blocks are shipped only with external labels (without them blocks from
//! different Prometheus servers cannot be told apart in the bucket); local blocks are never
//! modified; a failure is logged with what to do and retried at the next sync, and never
//! stops the sidecar.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use gauntlet_plugin_sdk::log::Level;
use gauntlet_tsdb::block::meta::BlockMeta;
use serde::{Deserialize, Serialize};

use crate::outside::Outside;

/// Name of the state file (Thanos's).
pub const STATE_FILE: &str = "thanos.shipper.json";
/// The only version of [`STATE_FILE`].
pub const STATE_VERSION: u32 = 1;
/// The `thanos.source` of shipped blocks.
pub const SOURCE: &str = "sidecar";

/// Counters and gauges the shipper reports.
const METRICS: [&str; 4] = [
    "shipper_uploads",
    "shipper_upload_failures",
    "shipper_dir_syncs",
    "shipper_dir_sync_failures",
];

/// What the shipper works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipperSettings {
    /// The Prometheus data folder (read-only).
    pub tsdb: PathBuf,
    /// Where the state file is kept (writable); none: the state is not kept.
    pub state_dir: Option<PathBuf>,
    /// Ship compacted blocks (level > 1) too.
    pub upload_compacted: bool,
    /// Prepended to every object key (the folder of the bucket grant).
    pub key_prefix: String,
    /// Milliseconds between syncs.
    pub sync_interval_ms: i64,
    /// A sync starts no new block after this many milliseconds in one tick; the rest follow
    /// at the next tick.
    pub tick_budget_ms: i64,
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
    fn empty() -> Self {
        Self {
            version: STATE_VERSION,
            uploaded: Vec::new(),
        }
    }
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
    /// Blocks left for the next tick because this one used its time.
    pub deferred: usize,
}

/// A complete block in the TSDB folder.
#[derive(Debug, Clone)]
struct LocalBlock {
    dir: PathBuf,
    meta: BlockMeta,
    /// Files other than `meta.json`, relative with `/`, sorted.
    files: Vec<String>,
}

/// The message logged (once) while Prometheus has no external labels.
pub const NO_EXTERNAL_LABELS: &str = "Prometheus has no external labels, so blocks are not shipped: blocks without them cannot be told apart from other Prometheus servers' in the bucket. Set `global.external_labels` in prometheus.yml (for example cluster and replica) and reload Prometheus";

/// The shipper's state between ticks.
#[derive(Debug, Clone)]
pub struct Shipper {
    settings: ShipperSettings,
    next_sync_ms: i64,
    refused: bool,
}

impl Shipper {
    /// A shipper that syncs at its first tick.
    pub fn new(settings: ShipperSettings) -> Self {
        Self {
            settings,
            next_sync_ms: i64::MIN,
            refused: false,
        }
    }

    /// Exports the shipper's metrics at zero, so alerts on them work before any upload.
    pub fn export_metrics(outside: &dyn Outside) {
        for name in METRICS {
            outside.count(name, 0.0);
        }
    }

    /// Syncs when one is due at `now`, with `labels` (Prometheus's external labels, sorted).
    pub fn tick(&mut self, outside: &dyn Outside, now: i64, labels: &[(String, String)]) {
        if now < self.next_sync_ms {
            return;
        }
        self.next_sync_ms = now.saturating_add(self.settings.sync_interval_ms);
        if labels.is_empty() {
            if !self.refused {
                outside.log(Level::Error, NO_EXTERNAL_LABELS);
                self.refused = true;
            }
            return;
        }
        self.refused = false;
        match self.sync(outside, labels) {
            Ok(summary) => {
                if summary.deferred > 0 {
                    // Continue at the next tick.
                    self.next_sync_ms = now;
                }
                if summary != SyncSummary::default() {
                    outside.log(
                        Level::Info,
                        &format!(
                            "shipper sync done: uploaded {}, already in the bucket {}, failed {}, left for the next tick {}",
                            summary.uploaded,
                            summary.already_in_bucket,
                            summary.failed,
                            summary.deferred
                        ),
                    );
                }
            }
            Err(error) => {
                outside.count("shipper_dir_syncs", 1.0);
                outside.count("shipper_dir_sync_failures", 1.0);
                outside.log(
                    Level::Error,
                    &format!("{error}; tried again at the next sync"),
                );
            }
        }
    }

    /// Scans the TSDB folder once and ships every new block with `labels`, then writes the
    /// state file. Failures of single blocks are logged and counted in the summary; `Err`
    /// when the folder cannot be listed.
    pub fn sync(
        &self,
        outside: &dyn Outside,
        labels: &[(String, String)],
    ) -> Result<SyncSummary, String> {
        let started = outside.now_ms();
        let (found, unreadable) = scan(outside, &self.settings.tsdb)?;
        let (previous, from_legacy) = self.read_state(outside);
        let mut state = ShipperState::empty();
        let mut summary = SyncSummary {
            failed: unreadable,
            ..SyncSummary::default()
        };
        for block in &found {
            let meta = &block.meta;
            let ulid = meta.ulid.as_str();
            if meta.compaction.level > 1 && !self.settings.upload_compacted {
                continue;
            }
            if previous.uploaded.iter().any(|u| u == ulid) {
                state.uploaded.push(ulid.to_owned());
                continue;
            }
            if meta.stats.num_samples == 0 {
                continue;
            }
            if outside.now_ms().saturating_sub(started) >= self.settings.tick_budget_ms {
                summary.deferred += 1;
                continue;
            }
            let meta_key = format!("{}{ulid}/meta.json", self.settings.key_prefix);
            match outside.exists(&meta_key) {
                Ok(true) => {
                    outside.log(
                        Level::Info,
                        &format!("block {ulid} already in the bucket; recorded"),
                    );
                    state.uploaded.push(ulid.to_owned());
                    summary.already_in_bucket += 1;
                    continue;
                }
                Ok(false) => {}
                Err(error) => {
                    self.failed(outside, ulid, &error);
                    summary.failed += 1;
                    continue;
                }
            }
            let began = outside.now_ms();
            match self.upload(outside, block, labels) {
                Ok(bytes) => {
                    let done = outside.now_ms();
                    outside.log(
                        Level::Info,
                        &format!(
                            "shipped block {ulid}: {bytes} bytes in {:.3}s",
                            (done - began) as f64 / 1000.0
                        ),
                    );
                    outside.count("shipper_uploads", 1.0);
                    outside.gauge("shipper_last_successful_upload_time", done as f64 / 1000.0);
                    state.uploaded.push(ulid.to_owned());
                    summary.uploaded += 1;
                }
                Err(error) => {
                    self.failed(outside, ulid, &error);
                    summary.failed += 1;
                }
            }
        }
        if (state != previous || from_legacy)
            && let Err(error) = self.write_state(&state)
        {
            outside.log(
                    Level::Error,
                    &format!(
                        "cannot write the shipper state: {error} (make the state folder writable by the sidecar; until then, blocks found in the bucket after a restart are recorded again, not uploaded)"
                    ),
                );
        }
        outside.count("shipper_dir_syncs", 1.0);
        if summary.failed > 0 {
            outside.count("shipper_dir_sync_failures", 1.0);
        }
        Ok(summary)
    }

    fn failed(&self, outside: &dyn Outside, ulid: &str, error: &str) {
        outside.count("shipper_upload_failures", 1.0);
        outside.log(
            Level::Error,
            &format!(
                "shipping block {ulid} failed: {error}; it is tried again at the next sync (check that the bucket is reachable and writable with these credentials)"
            ),
        );
    }

    /// The state: from the state folder, else the TSDB folder's own (Thanos's place; `true`
    /// then, so it is written to the state folder), else empty. An unreadable state is
    /// logged and treated as empty (blocks already in the bucket are then only recorded
    /// again, not uploaded).
    fn read_state(&self, outside: &dyn Outside) -> (ShipperState, bool) {
        let own = self.settings.state_dir.as_ref().map(|d| d.join(STATE_FILE));
        let legacy = self.settings.tsdb.join(STATE_FILE);
        for (path, from_legacy) in own.iter().map(|p| (p, false)).chain([(&legacy, true)]) {
            let bytes = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    let problem = format!("cannot read the shipper state {}: {e}", path.display());
                    return start_afresh(outside, &problem);
                }
            };
            return match serde_json::from_slice::<ShipperState>(&bytes) {
                Ok(state) if state.version == STATE_VERSION => (state, from_legacy),
                Ok(state) => {
                    let problem = format!(
                        "{}: unknown shipper state version {}",
                        path.display(),
                        state.version
                    );
                    start_afresh(outside, &problem)
                }
                Err(e) => {
                    let problem = format!("cannot read the shipper state {}: {e}", path.display());
                    start_afresh(outside, &problem)
                }
            };
        }
        (ShipperState::empty(), false)
    }

    /// Writes the state atomically: a temporary file, synced, renamed over [`STATE_FILE`].
    fn write_state(&self, state: &ShipperState) -> Result<(), String> {
        use std::io::Write;
        let Some(dir) = &self.settings.state_dir else {
            return Err("no state folder is granted".to_owned());
        };
        let path = dir.join(STATE_FILE);
        let temporary = dir.join(format!("{STATE_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut text = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
            text.push(b'\n');
            let mut file = File::create(&temporary)?;
            file.write_all(&text)?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&temporary, &path)
        };
        write().map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Uploads one block: every file opened first, then sent in parts, `meta.json` (with the
    /// `thanos` section) last. Returns the bytes sent, `meta.json` excluded.
    fn upload(
        &self,
        outside: &dyn Outside,
        block: &LocalBlock,
        labels: &[(String, String)],
    ) -> Result<u64, String> {
        let ulid = block.meta.ulid.as_str();
        let mut opened = Vec::with_capacity(block.files.len());
        for rel in &block.files {
            let path = block.dir.join(rel);
            let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let size = file
                .metadata()
                .map_err(|e| format!("{}: {e}", path.display()))?
                .len();
            opened.push((rel, file, size));
        }
        let sizes: Vec<(String, u64)> = opened
            .iter()
            .map(|(rel, _, size)| ((*rel).clone(), *size))
            .collect();
        let mut sent = 0u64;
        for (rel, mut file, size) in opened {
            let key = format!("{}{ulid}/{rel}", self.settings.key_prefix);
            let written = outside
                .upload(&key, &mut (&mut file).take(size))
                .map_err(|e| format!("uploading {key}: {e}"))?;
            if written != size {
                return Err(format!(
                    "{}: read {written} bytes of {size}; the file changed while it was uploaded",
                    block.dir.join(rel).display()
                ));
            }
            sent += written;
        }
        let meta = block.meta.for_upload(&sizes, labels, SOURCE);
        let key = format!("{}{ulid}/meta.json", self.settings.key_prefix);
        outside
            .put(&key, meta.to_json())
            .map_err(|e| format!("uploading {key}: {e}"))?;
        Ok(sent)
    }
}

/// Whether `name` is a ULID.
pub use gauntlet_tsdb::block::ulid::is_ulid;

/// The complete blocks in `dir`, oldest first, and how many block folders could not be read
/// (each logged and counted as an upload failure).
fn scan(outside: &dyn Outside, dir: &Path) -> Result<(Vec<LocalBlock>, usize), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "cannot list the Prometheus data folder {}: {e} (check --tsdb.path and that the sidecar may read it)",
            dir.display()
        )
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
        match read_block(&path) {
            Ok(block) => found.push(block),
            Err(error) => {
                outside.count("shipper_upload_failures", 1.0);
                outside.log(
                    Level::Error,
                    &format!(
                        "cannot read the block {}: {error}, so it is not shipped; tried again at the next sync",
                        path.display()
                    ),
                );
                unreadable += 1;
            }
        }
    }
    found.sort_by(|a, b| (a.meta.min_time, &a.meta.ulid).cmp(&(b.meta.min_time, &b.meta.ulid)));
    Ok((found, unreadable))
}

/// One block folder: `meta.json` readable and naming the folder, `index` and `chunks/`
/// present.
fn read_block(dir: &Path) -> Result<LocalBlock, String> {
    let meta_path = dir.join("meta.json");
    let bytes = std::fs::read(&meta_path).map_err(|e| format!("meta.json: {e}"))?;
    let meta = BlockMeta::parse(&bytes).map_err(|e| format!("meta.json: {e}"))?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name != meta.ulid {
        return Err(format!(
            "meta.json names block {} but the folder is {name}",
            meta.ulid
        ));
    }
    if !dir.join("index").is_file() {
        return Err("no index file".to_owned());
    }
    if !dir.join("chunks").is_dir() {
        return Err("no chunks/ folder".to_owned());
    }
    let files = gauntlet_tsdb::block::block_files(dir)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(rel, _)| rel)
        .collect();
    Ok(LocalBlock {
        dir: dir.to_owned(),
        meta,
        files,
    })
}

/// An unusable shipper state is logged and replaced by an empty one.
fn start_afresh(outside: &dyn Outside, problem: &str) -> (ShipperState, bool) {
    outside.log(
        Level::Warn,
        &format!(
            "{problem}; starting afresh (blocks already in the bucket are not uploaded again)"
        ),
    );
    (ShipperState::empty(), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outside::tests::{Recorder, scratch};

    fn write_block(data: &Path, ulid: &str, min_time: i64, level: u32, samples: u64) {
        let block = data.join(ulid);
        std::fs::create_dir_all(block.join("chunks")).expect("test setup");
        std::fs::write(block.join("index"), b"index!").expect("test setup");
        std::fs::write(block.join("chunks/000001"), b"chunks").expect("test setup");
        std::fs::write(block.join("tombstones"), b"t").expect("test setup");
        let meta = format!(
            r#"{{"ulid":"{ulid}","minTime":{min_time},"maxTime":{},"stats":{{"numSamples":{samples},"numSeries":1}},"compaction":{{"level":{level},"sources":["{ulid}"]}},"version":1}}"#,
            min_time + 7_200_000
        );
        std::fs::write(block.join("meta.json"), meta).expect("test setup");
    }

    const A: &str = "01JDQ7Y3Z5X1A2B3C4D5E6F7G8";
    const B: &str = "01JDQ7Y3Z5X1A2B3C4D5E6F7G9";
    const COMPACTED: &str = "01JDQ7Y3Z5X1A2B3C4D5E6F7GA";
    const EMPTY: &str = "01JDQ7Y3Z5X1A2B3C4D5E6F7GB";

    fn labels() -> Vec<(String, String)> {
        vec![("cluster".to_owned(), "eu1".to_owned())]
    }

    fn settings(data: &Path) -> ShipperSettings {
        ShipperSettings {
            tsdb: data.to_owned(),
            state_dir: Some(data.join("thanos")),
            upload_compacted: false,
            key_prefix: "bucket/".to_owned(),
            sync_interval_ms: 30_000,
            tick_budget_ms: 20_000,
        }
    }

    fn state(data: &Path) -> ShipperState {
        serde_json::from_slice(
            &std::fs::read(data.join("thanos").join(STATE_FILE)).expect("state file"),
        )
        .expect("state json")
    }

    #[test]
    fn ships_new_level_one_blocks_once_meta_last_and_records_them() {
        let data = scratch("shipper");
        std::fs::create_dir_all(data.join("thanos")).expect("test setup");
        write_block(&data, B, 7_200_000, 1, 10);
        write_block(&data, A, 0, 1, 10);
        write_block(&data, COMPACTED, 0, 2, 10);
        write_block(&data, EMPTY, 0, 1, 0);
        std::fs::create_dir_all(data.join(format!("{A}.tmp-for-creation"))).expect("test setup");
        std::fs::create_dir_all(data.join("wal")).expect("test setup");
        // Still being written: no meta.json yet.
        std::fs::create_dir_all(data.join("01JDQ7Y3Z5X1A2B3C4D5E6F7GC/chunks"))
            .expect("test setup");
        let outside = Recorder::default();
        let shipper = Shipper::new(settings(&data));

        let summary = shipper.sync(&outside, &labels()).expect("sync");
        assert_eq!((summary.uploaded, summary.failed), (2, 0));
        assert_eq!(state(&data).uploaded, [A, B]);
        // Files first, meta.json last, oldest block first.
        let written = outside.written.borrow().clone();
        assert_eq!(
            written,
            [
                format!("bucket/{A}/chunks/000001"),
                format!("bucket/{A}/index"),
                format!("bucket/{A}/tombstones"),
                format!("bucket/{A}/meta.json"),
                format!("bucket/{B}/chunks/000001"),
                format!("bucket/{B}/index"),
                format!("bucket/{B}/tombstones"),
                format!("bucket/{B}/meta.json"),
            ]
        );
        let meta = BlockMeta::parse(&outside.objects.borrow()[&format!("bucket/{A}/meta.json")])
            .expect("meta");
        let thanos = meta.thanos.expect("thanos section");
        assert_eq!(thanos.source, "sidecar");
        assert_eq!(thanos.labels["cluster"], "eu1");
        assert_eq!(thanos.segment_files, ["000001"]);
        let sizes: Vec<(String, u64)> = thanos
            .files
            .iter()
            .map(|f| (f.rel_path.clone(), f.size_bytes))
            .collect();
        assert_eq!(
            sizes,
            [
                ("chunks/000001".to_owned(), 6),
                ("index".to_owned(), 6),
                ("meta.json".to_owned(), 0),
                ("tombstones".to_owned(), 1)
            ]
        );
        assert_eq!(outside.counter("shipper_uploads"), 2.0);
        // The local block is untouched.
        assert!(
            !String::from_utf8_lossy(&std::fs::read(data.join(A).join("meta.json")).expect("meta"))
                .contains("thanos")
        );

        // Nothing new: nothing uploaded.
        let again = shipper.sync(&outside, &labels()).expect("sync");
        assert_eq!(again, SyncSummary::default());
        assert_eq!(outside.written.borrow().len(), 8);

        // Lost state: blocks in the bucket are recorded, not uploaded.
        std::fs::remove_file(data.join("thanos").join(STATE_FILE)).expect("test setup");
        let recorded = shipper.sync(&outside, &labels()).expect("sync");
        assert_eq!((recorded.uploaded, recorded.already_in_bucket), (0, 2));
        assert_eq!(state(&data).uploaded, [A, B]);

        // With upload_compacted the level-2 block goes too.
        let compacted = Shipper::new(ShipperSettings {
            upload_compacted: true,
            ..settings(&data)
        });
        assert_eq!(
            compacted.sync(&outside, &labels()).expect("sync").uploaded,
            1
        );
        assert!(
            outside
                .objects
                .borrow()
                .contains_key(&format!("bucket/{COMPACTED}/meta.json"))
        );
        assert!(!outside.objects.borrow().keys().any(|k| k.contains(EMPTY)));
        let _ = std::fs::remove_dir_all(&data);
    }

    #[test]
    fn refuses_without_labels_reads_thanos_state_and_survives_failures() {
        let data = scratch("shipper-state");
        std::fs::create_dir_all(data.join("thanos")).expect("test setup");
        write_block(&data, A, 0, 1, 10);
        write_block(&data, B, 7_200_000, 1, 10);
        let outside = Recorder::default();
        let mut shipper = Shipper::new(settings(&data));

        // No external labels: nothing shipped, refused once in the log.
        shipper.tick(&outside, 0, &[]);
        shipper.tick(&outside, 60_000, &[]);
        assert!(outside.objects.borrow().is_empty());
        let refusals = outside
            .logs
            .borrow()
            .iter()
            .filter(|(_, m)| m.contains("global.external_labels"))
            .count();
        assert_eq!(refusals, 1);

        // Thanos's state in the TSDB folder counts: A is not uploaded again.
        std::fs::write(
            data.join(STATE_FILE),
            format!(r#"{{"version":1,"uploaded":["{A}"]}}"#),
        )
        .expect("test setup");
        let summary = shipper.sync(&outside, &labels()).expect("sync");
        assert_eq!(summary.uploaded, 1);
        assert!(
            !outside
                .objects
                .borrow()
                .contains_key(&format!("bucket/{A}/meta.json"))
        );
        assert_eq!(state(&data).uploaded, [A, B]);

        // A bucket that fails: counted, not recorded, tried again.
        let failing = Recorder::default();
        failing.failing_bucket.set(true);
        write_block(&data, COMPACTED, 9_000_000, 1, 10);
        let summary = shipper.sync(&failing, &labels()).expect("sync");
        assert_eq!((summary.uploaded, summary.failed), (0, 1));
        assert_eq!(failing.counter("shipper_upload_failures"), 1.0);
        assert_eq!(failing.counter("shipper_dir_sync_failures"), 1.0);
        assert_eq!(state(&data).uploaded, [A, B]);

        // A corrupt state file: starting afresh, blocks in the bucket only recorded.
        std::fs::write(data.join("thanos").join(STATE_FILE), b"{not json").expect("test setup");
        let summary = shipper.sync(&outside, &labels()).expect("sync");
        // A was never uploaded to this bucket; COMPACTED failed before; B is there.
        assert_eq!((summary.uploaded, summary.already_in_bucket), (2, 1));
        let _ = std::fs::remove_dir_all(&data);
    }

    #[test]
    fn a_missing_tsdb_folder_is_an_error_naming_it() {
        let data = scratch("shipper-missing").join("nope");
        let outside = Recorder::default();
        let error = Shipper::new(settings(&data))
            .sync(&outside, &labels())
            .expect_err("must fail");
        assert!(error.contains("nope"), "{error}");
    }
}
