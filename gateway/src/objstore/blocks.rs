//! Prometheus blocks in a bucket: finding them (`ULID/` folders with a `meta.json`), reading
//! their metadata with deletion marks, and uploading block directories from local disk. Backs
//! `gauntlet tools bucket ls|inspect|upload`.
//!
//! Invariants of an upload: every block is checked before anything is sent (a block directory
//! without `meta.json`, `index` or `chunks/` refuses the whole upload); a block whose
//! `meta.json` is already in the bucket is skipped; `meta.json` goes last, so a block becomes
//! visible only when all its files are there. Local block directories are never modified.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use gauntlet_tsdb::block::meta::BlockMeta;

use super::{Bucket, ObjstoreError};

/// The `thanos.source` written into blocks uploaded by `gauntlet tools bucket upload`.
pub const UPLOAD_SOURCE: &str = "bucket.upload";

/// Name of the file that marks a block for deletion.
pub const DELETION_MARK: &str = "deletion-mark.json";

/// How many blocks are looked at concurrently.
const CONCURRENCY: usize = 16;

/// Why a block operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The bucket failed.
    #[error(transparent)]
    Bucket(#[from] ObjstoreError),
    /// A `meta.json` in the bucket cannot be parsed.
    #[error("{ulid}/meta.json in the bucket is not valid: {reason}")]
    BadMeta {
        /// The block.
        ulid: String,
        /// Why.
        reason: String,
    },
    /// A local directory is not a block or a directory of blocks.
    #[error("{0}")]
    Local(String),
}

/// Whether `name` is a ULID.
pub use gauntlet_tsdb::block::ulid::is_ulid;

/// ULIDs of the blocks in the bucket (top-level `ULID/` folders holding a `meta.json`), sorted;
/// and the ULID folders without one (partial uploads, or blocks being deleted).
pub async fn list_blocks(bucket: &Bucket) -> Result<(Vec<String>, Vec<String>), BlockError> {
    let listing = bucket.list_dir("").await?;
    let candidates: Vec<String> = listing
        .prefixes
        .iter()
        .map(|p| p.trim_end_matches('/').to_owned())
        .filter(|p| is_ulid(p))
        .collect();
    let checked: Vec<(String, bool)> = futures::stream::iter(candidates)
        .map(|ulid| async move {
            let exists = bucket.exists(&format!("{ulid}/meta.json")).await?;
            Ok::<_, ObjstoreError>((ulid, exists))
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    let (with, without): (Vec<_>, Vec<_>) = checked.into_iter().partition(|(_, e)| *e);
    Ok((
        with.into_iter().map(|(u, _)| u).collect(),
        without.into_iter().map(|(u, _)| u).collect(),
    ))
}

/// A block in the bucket with its metadata.
#[derive(Debug, Clone)]
pub struct BucketBlock {
    /// The parsed `meta.json`.
    pub meta: BlockMeta,
    /// Whether `deletion-mark.json` is present.
    pub deletion_marked: bool,
}

/// Every block in the bucket with its `meta.json` and deletion mark, sorted by start time
/// then ULID; and the ULID folders skipped for lacking a `meta.json`.
pub async fn inspect_blocks(
    bucket: &Bucket,
) -> Result<(Vec<BucketBlock>, Vec<String>), BlockError> {
    let (ulids, skipped) = list_blocks(bucket).await?;
    let mut blocks: Vec<BucketBlock> = futures::stream::iter(ulids)
        .map(|ulid| async move {
            let bytes = match bucket.get(&format!("{ulid}/meta.json")).await {
                Ok(bytes) => bytes,
                // Deleted between the listing and now.
                Err(ObjstoreError::NotFound { .. }) => return Ok(None),
                Err(other) => return Err(BlockError::from(other)),
            };
            let meta = BlockMeta::parse(&bytes).map_err(|e| BlockError::BadMeta {
                ulid: ulid.clone(),
                reason: e.to_string(),
            })?;
            let deletion_marked = bucket.exists(&format!("{ulid}/{DELETION_MARK}")).await?;
            Ok(Some(BucketBlock {
                meta,
                deletion_marked,
            }))
        })
        .buffered(CONCURRENCY)
        .try_filter_map(|block| async move { Ok(block) })
        .try_collect()
        .await?;
    blocks.sort_by(|a, b| (a.meta.min_time, &a.meta.ulid).cmp(&(b.meta.min_time, &b.meta.ulid)));
    Ok((blocks, skipped))
}

/// A block directory on local disk, checked and ready to upload.
#[derive(Debug, Clone)]
pub struct LocalBlock {
    /// The block's directory.
    pub dir: PathBuf,
    /// Its `meta.json`.
    pub meta: BlockMeta,
    /// Files other than `meta.json`, relative to `dir` with `/` separators, with sizes.
    pub files: Vec<(String, u64)>,
}

impl LocalBlock {
    /// Bytes of all files, `meta.json` excluded.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|(_, size)| size).sum()
    }
}

/// The blocks under `dir`: `dir` itself when it holds a `meta.json` or is named like a block,
/// else its `ULID/` subdirectories (other entries, such as `wal/`, are ignored). Every block is
/// checked; the first problem refuses them all.
pub fn find_local_blocks(dir: &Path) -> Result<Vec<LocalBlock>, BlockError> {
    let metadata = std::fs::metadata(dir).map_err(|e| {
        BlockError::Local(format!(
            "cannot read {}: {e} (pass a Prometheus data directory or a block directory)",
            dir.display()
        ))
    })?;
    if !metadata.is_dir() {
        return Err(BlockError::Local(format!(
            "{} is not a directory (pass a Prometheus data directory or a block directory)",
            dir.display()
        )));
    }
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if dir.join("meta.json").exists() || is_ulid(name) {
        return Ok(vec![check_local_block(dir)?]);
    }
    let mut block_dirs = Vec::new();
    for entry in std::fs::read_dir(dir)
        .map_err(|e| BlockError::Local(format!("cannot list {}: {e}", dir.display())))?
    {
        let entry =
            entry.map_err(|e| BlockError::Local(format!("cannot list {}: {e}", dir.display())))?;
        let path = entry.path();
        let is_block = entry.file_name().to_str().is_some_and(is_ulid) && path.is_dir();
        if is_block {
            block_dirs.push(path);
        }
    }
    block_dirs.sort();
    if block_dirs.is_empty() {
        return Err(BlockError::Local(format!(
            "no blocks in {}: expected ULID-named block directories (each with meta.json, \
             index, chunks/) or a single block directory",
            dir.display()
        )));
    }
    block_dirs.iter().map(|d| check_local_block(d)).collect()
}

fn check_local_block(dir: &Path) -> Result<LocalBlock, BlockError> {
    let shown = dir.display();
    let meta_path = dir.join("meta.json");
    let bytes = std::fs::read(&meta_path).map_err(|e| {
        BlockError::Local(if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{shown} has no meta.json, so it is not a complete block (Prometheus may still \
                 be writing it, or the copy is partial): finish or remove it, then upload again"
            )
        } else {
            format!("cannot read {}: {e}", meta_path.display())
        })
    })?;
    let meta = BlockMeta::parse(&bytes)
        .map_err(|e| BlockError::Local(format!("{}: {e}", meta_path.display())))?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if is_ulid(name) && name != meta.ulid {
        return Err(BlockError::Local(format!(
            "{shown}: meta.json names block {} but the directory is {name}: rename the \
             directory to its ULID",
            meta.ulid
        )));
    }
    if !is_ulid(&meta.ulid) {
        return Err(BlockError::Local(format!(
            "{}: ulid {:?} is not a ULID",
            meta_path.display(),
            meta.ulid
        )));
    }
    if !dir.join("index").is_file() {
        return Err(BlockError::Local(format!(
            "{shown} has no index file: not a complete block; remove it or copy it again"
        )));
    }
    if !dir.join("chunks").is_dir() {
        return Err(BlockError::Local(format!(
            "{shown} has no chunks/ directory: not a complete block; remove it or copy it again"
        )));
    }
    let files =
        gauntlet_tsdb::block::block_files(dir).map_err(|e| BlockError::Local(e.to_string()))?;
    Ok(LocalBlock {
        dir: dir.to_owned(),
        meta,
        files,
    })
}

/// The `meta.json` uploaded for `block`: its own, with the `thanos` section set (labels
/// merged, later ones win; source [`UPLOAD_SOURCE`]; the files with their sizes).
pub fn upload_meta(block: &LocalBlock, labels: &[(String, String)]) -> BlockMeta {
    upload_meta_from(block, labels, UPLOAD_SOURCE)
}

/// [`upload_meta`] with another `thanos.source` (e.g. `sidecar`).
pub fn upload_meta_from(
    block: &LocalBlock,
    labels: &[(String, String)],
    source: &str,
) -> BlockMeta {
    block.meta.for_upload(&block.files, labels, source)
}

/// What happened to one block during an upload, for progress displays.
#[derive(Debug, Clone)]
pub enum UploadEvent<'a> {
    /// A block starts uploading (`index` counts from 1).
    Started {
        /// The block.
        ulid: &'a str,
        /// Its position.
        index: usize,
        /// Blocks in this upload.
        total: usize,
        /// Its size in bytes.
        bytes: u64,
    },
    /// Bytes of the current block sent so far (all files).
    Progress {
        /// The block.
        ulid: &'a str,
        /// Bytes sent.
        sent: u64,
    },
    /// A block is complete (its `meta.json` written).
    Uploaded {
        /// The block.
        ulid: &'a str,
        /// Its size in bytes.
        bytes: u64,
    },
    /// A block was already in the bucket.
    Skipped {
        /// The block.
        ulid: &'a str,
    },
}

/// Totals of an upload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadSummary {
    /// Blocks uploaded.
    pub uploaded: usize,
    /// Blocks already in the bucket.
    pub skipped: usize,
    /// Bytes sent.
    pub bytes: u64,
}

/// Uploads `blocks` (from [`find_local_blocks`]) with `labels` added to their Thanos section:
/// each block's files first, `meta.json` last; blocks already in the bucket are skipped.
pub async fn upload_blocks(
    bucket: &Bucket,
    blocks: &[LocalBlock],
    labels: &[(String, String)],
    events: &(dyn Fn(UploadEvent<'_>) + Send + Sync),
) -> Result<UploadSummary, BlockError> {
    let mut summary = UploadSummary::default();
    let total = blocks.len();
    for (i, block) in blocks.iter().enumerate() {
        let ulid = block.meta.ulid.as_str();
        if bucket.exists(&format!("{ulid}/meta.json")).await? {
            events(UploadEvent::Skipped { ulid });
            summary.skipped += 1;
            continue;
        }
        let bytes = block.size();
        events(UploadEvent::Started {
            ulid,
            index: i + 1,
            total,
            bytes,
        });
        upload_block(bucket, block, labels, UPLOAD_SOURCE, &|sent| {
            events(UploadEvent::Progress { ulid, sent });
        })
        .await?;
        events(UploadEvent::Uploaded { ulid, bytes });
        summary.uploaded += 1;
        summary.bytes += bytes;
    }
    Ok(summary)
}

/// Uploads one block whether or not it is already in the bucket: its files first, then its
/// `meta.json` from [`upload_meta_from`] with `labels` and `source`. `progress` gets the bytes
/// of the block sent so far; returns the bytes sent, `meta.json` excluded.
pub async fn upload_block(
    bucket: &Bucket,
    block: &LocalBlock,
    labels: &[(String, String)],
    source: &str,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<u64, BlockError> {
    let ulid = block.meta.ulid.as_str();
    let mut done = 0u64;
    for (rel, _) in &block.files {
        let local = block.dir.join(rel);
        let before = done;
        let sent = bucket
            .upload_file(&format!("{ulid}/{rel}"), &local, &|sent| {
                progress(before + sent);
            })
            .await?;
        done += sent;
    }
    let meta = upload_meta_from(block, labels, source);
    bucket
        .put(&format!("{ulid}/meta.json"), Bytes::from(meta.to_json()))
        .await?;
    Ok(done)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ULID: &str = "01JDQ7Y3Z5X1A2B3C4D5E6F7G8";

    fn write_block(dir: &Path, ulid: &str, meta_ulid: &str) {
        let block = dir.join(ulid);
        std::fs::create_dir_all(block.join("chunks")).unwrap();
        std::fs::write(block.join("index"), b"index!").unwrap();
        std::fs::write(block.join("chunks/000001"), b"chunks").unwrap();
        std::fs::write(block.join("tombstones"), b"t").unwrap();
        let meta = format!(
            r#"{{"ulid":"{meta_ulid}","minTime":0,"maxTime":7200000,"stats":{{"numSeries":2}},
               "compaction":{{"level":1}},"version":1,
               "thanos":{{"labels":{{"cluster":"old","keep":"yes"}},"source":"sidecar","downsample":{{"resolution":300000}}}}}}"#
        );
        std::fs::write(block.join("meta.json"), meta).unwrap();
    }

    #[test]
    fn finds_blocks_in_a_data_directory_or_one_block() {
        let dir = tempfile::tempdir().unwrap();
        write_block(dir.path(), ULID, ULID);
        std::fs::create_dir_all(dir.path().join("wal")).unwrap();
        std::fs::write(dir.path().join("queries.active"), b"").unwrap();
        let found = find_local_blocks(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].files,
            [
                ("chunks/000001".to_owned(), 6),
                ("index".to_owned(), 6),
                ("tombstones".to_owned(), 1)
            ]
        );
        assert_eq!(found[0].size(), 13);
        let single = find_local_blocks(&dir.path().join(ULID)).unwrap();
        assert_eq!(single[0].meta.ulid, ULID);

        let empty = tempfile::tempdir().unwrap();
        let error = find_local_blocks(empty.path()).unwrap_err().to_string();
        assert!(error.contains("no blocks in"), "{error}");
    }

    #[test]
    fn incomplete_or_misnamed_blocks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_block(dir.path(), ULID, "01JDQ7Y3Z5X1A2B3C4D5E6F7G9");
        let error = find_local_blocks(dir.path()).unwrap_err().to_string();
        assert!(error.contains("rename the directory"), "{error}");

        let dir = tempfile::tempdir().unwrap();
        write_block(dir.path(), ULID, ULID);
        std::fs::remove_file(dir.path().join(ULID).join("index")).unwrap();
        let error = find_local_blocks(dir.path()).unwrap_err().to_string();
        assert!(error.contains("has no index file"), "{error}");

        std::fs::remove_file(dir.path().join(ULID).join("meta.json")).unwrap();
        let error = find_local_blocks(dir.path()).unwrap_err().to_string();
        assert!(error.contains("has no meta.json"), "{error}");
    }

    #[test]
    fn upload_meta_sets_the_thanos_section() {
        let dir = tempfile::tempdir().unwrap();
        write_block(dir.path(), ULID, ULID);
        let block = &find_local_blocks(dir.path()).unwrap()[0];
        let meta = upload_meta(block, &[("cluster".to_owned(), "eu1".to_owned())]);
        let thanos = meta.thanos.unwrap();
        assert_eq!(thanos.labels["cluster"], "eu1");
        assert_eq!(thanos.labels["keep"], "yes");
        assert_eq!(thanos.source, UPLOAD_SOURCE);
        assert_eq!(thanos.downsample.resolution, 300_000);
        assert_eq!(thanos.segment_files, ["000001"]);
        let files: Vec<(&str, u64)> = thanos
            .files
            .iter()
            .map(|f| (f.rel_path.as_str(), f.size_bytes))
            .collect();
        assert_eq!(
            files,
            [
                ("chunks/000001", 6),
                ("index", 6),
                ("meta.json", 0),
                ("tombstones", 1)
            ]
        );
    }

    #[tokio::test]
    async fn upload_lists_inspects_and_skips_blocks_already_present() {
        let dir = tempfile::tempdir().unwrap();
        write_block(dir.path(), ULID, ULID);
        let blocks = find_local_blocks(dir.path()).unwrap();
        let root = tempfile::tempdir().unwrap();
        let store = object_store::local::LocalFileSystem::new_with_prefix(root.path()).unwrap();
        let bucket = Bucket::new(std::sync::Arc::new(store), "test");
        let order = std::sync::Mutex::new(Vec::new());
        let summary = upload_blocks(&bucket, &blocks, &[], &|event| {
            if let UploadEvent::Uploaded { ulid, .. } = event {
                order.lock().unwrap().push(ulid.to_owned());
            }
        })
        .await
        .unwrap();
        assert_eq!(summary.uploaded, 1);
        assert_eq!(summary.bytes, 13);
        assert_eq!(order.into_inner().unwrap(), [ULID]);
        let (listed, partial) = list_blocks(&bucket).await.unwrap();
        assert_eq!(listed, [ULID]);
        assert!(partial.is_empty());
        let (inspected, _) = inspect_blocks(&bucket).await.unwrap();
        assert_eq!(inspected[0].meta.stats.num_series, 2);
        assert!(!inspected[0].deletion_marked);

        let again = upload_blocks(&bucket, &blocks, &[], &|_| {}).await.unwrap();
        assert_eq!((again.uploaded, again.skipped), (0, 1));
    }

    #[test]
    fn recognises_ulids() {
        assert!(is_ulid("01JDQ7Y3Z5X1A2B3C4D5E6F7G8"));
        assert!(!is_ulid("01JDQ7Y3Z5X1A2B3C4D5E6F7G"));
        assert!(!is_ulid("81JDQ7Y3Z5X1A2B3C4D5E6F7G8"));
        assert!(!is_ulid("01JDQ7Y3Z5X1A2B3C4D5E6F7GU"));
        assert!(!is_ulid("wal"));
    }
}
