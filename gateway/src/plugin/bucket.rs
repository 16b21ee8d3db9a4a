//! The `Bucket` abstraction plugins reach through the `bucket` import: object storage behind
//! the `object_store` crate (any backend `--objstore.config` names, see [`crate::objstore`]),
//! and [`PrefixedBucket`], which scopes a bucket to the prefix a manifest grants.
//!
//! Invariant: a key that is empty, absolute, has `.`/`..`/empty segments, backslashes or
//! control characters is refused before any storage call, so a plugin can never name an
//! object outside its prefix. Objects larger than the caller's cap are refused after a `head`,
//! never read into memory. Large objects are written through an [`Upload`]: parts go to the
//! backend as they fill, so the host holds at most a few parts of one object at a time.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

use crate::objstore::{MULTIPART_THRESHOLD, PART_SIZE};

/// Why a bucket operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketError {
    /// No object under the key.
    #[error("object not found: {0}")]
    NotFound(String),
    /// The key is malformed or escapes the granted prefix.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The object exceeds the size the caller accepts.
    #[error("object of {0} bytes is too large")]
    TooLarge(u64),
    /// The storage backend failed.
    #[error("bucket: {0}")]
    Io(String),
}

/// Metadata of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key (relative to the bucket the call was made on).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
}

/// Object storage as the host and plugins use it.
#[async_trait]
pub trait Bucket: Send + Sync + fmt::Debug {
    /// Reads a whole object.
    async fn get(&self, key: &str) -> Result<Vec<u8>, BucketError>;
    /// Reads a byte range of an object.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, BucketError>;
    /// Metadata of an object.
    async fn head(&self, key: &str) -> Result<ObjectInfo, BucketError>;
    /// Objects whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BucketError>;
    /// Writes a whole object.
    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), BucketError>;
    /// Deletes an object; a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), BucketError>;
    /// Starts writing an object in parts.
    async fn start_upload(&self, key: &str) -> Result<Box<dyn Upload>, BucketError>;
}

/// An object being written in parts: nothing is visible under its key before
/// [`Upload::finish`]; [`Upload::abort`] (or dropping it) abandons it.
#[async_trait]
pub trait Upload: Send + fmt::Debug {
    /// Appends bytes.
    async fn write(&mut self, data: Vec<u8>) -> Result<(), BucketError>;
    /// Completes the object; returns its size. Any later call fails.
    async fn finish(&mut self) -> Result<u64, BucketError>;
    /// Abandons the object (parts already sent are discarded by the backend).
    async fn abort(&mut self);
}

/// A [`Bucket`] over any `object_store` backend.
#[derive(Debug, Clone)]
pub struct ObjectStoreBucket {
    store: Arc<dyn ObjectStore>,
}

impl ObjectStoreBucket {
    /// A bucket over an `object_store` backend.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// The configured object storage (S3, GCS, Azure or a directory, with its `prefix:`).
    pub fn from_objstore(bucket: &crate::objstore::Bucket) -> Self {
        Self::new(bucket.store())
    }

    /// A bucket in a local directory (created if missing).
    pub fn local(root: &Path) -> Result<Self, BucketError> {
        std::fs::create_dir_all(root).map_err(|e| BucketError::Io(e.to_string()))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(root)
            .map_err(|e| BucketError::Io(e.to_string()))?;
        Ok(Self::new(Arc::new(store)))
    }
}

fn object_path(key: &str) -> Result<ObjectPath, BucketError> {
    ObjectPath::parse(key).map_err(|e| BucketError::InvalidKey(format!("{key:?}: {e}")))
}

fn map_error(key: &str, error: object_store::Error) -> BucketError {
    match error {
        object_store::Error::NotFound { .. } => BucketError::NotFound(key.to_owned()),
        other => BucketError::Io(other.to_string()),
    }
}

fn info(meta: &object_store::ObjectMeta) -> ObjectInfo {
    ObjectInfo {
        key: meta.location.to_string(),
        size: meta.size,
        last_modified_ms: meta.last_modified.timestamp_millis(),
    }
}

#[async_trait]
impl Bucket for ObjectStoreBucket {
    async fn get(&self, key: &str) -> Result<Vec<u8>, BucketError> {
        let path = object_path(key)?;
        let result = self.store.get(&path).await.map_err(|e| map_error(key, e))?;
        let bytes = result.bytes().await.map_err(|e| map_error(key, e))?;
        Ok(bytes.to_vec())
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, BucketError> {
        let path = object_path(key)?;
        let bytes = self
            .store
            .get_range(&path, range)
            .await
            .map_err(|e| map_error(key, e))?;
        Ok(bytes.to_vec())
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, BucketError> {
        let path = object_path(key)?;
        let meta = self
            .store
            .head(&path)
            .await
            .map_err(|e| map_error(key, e))?;
        Ok(info(&meta))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BucketError> {
        // object_store lists by path segments: list the folder part, filter on the rest.
        let folder = prefix.rsplit_once('/').map_or("", |(folder, _)| folder);
        let folder_path = if folder.is_empty() {
            None
        } else {
            Some(object_path(folder)?)
        };
        let mut out: Vec<ObjectInfo> = self
            .store
            .list(folder_path.as_ref())
            .map_ok(|meta| info(&meta))
            .try_collect()
            .await
            .map_err(|e| map_error(prefix, e))?;
        out.retain(|o| o.key.starts_with(prefix));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), BucketError> {
        let path = object_path(key)?;
        self.store
            .put(&path, data.into())
            .await
            .map(|_| ())
            .map_err(|e| map_error(key, e))
    }

    async fn delete(&self, key: &str) -> Result<(), BucketError> {
        let path = object_path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_error(key, e)),
        }
    }

    async fn start_upload(&self, key: &str) -> Result<Box<dyn Upload>, BucketError> {
        Ok(Box::new(ObjectStoreUpload {
            store: self.store.clone(),
            key: key.to_owned(),
            path: object_path(key)?,
            buffer: Vec::new(),
            writer: None,
            size: 0,
            finished: false,
        }))
    }
}

/// An `upload` resource of a plugin instance: the object's key and its [`Upload`].
#[derive(Debug)]
pub struct UploadHandle {
    pub(crate) key: String,
    pub(crate) upload: Box<dyn Upload>,
}

/// An [`Upload`] to an `object_store` backend: up to [`MULTIPART_THRESHOLD`] bytes are kept
/// and written with one `put`; beyond that a multipart upload of [`PART_SIZE`] parts starts,
/// with at most two parts in flight.
#[derive(Debug)]
struct ObjectStoreUpload {
    store: Arc<dyn ObjectStore>,
    key: String,
    path: ObjectPath,
    buffer: Vec<u8>,
    writer: Option<WriteMultipart>,
    size: u64,
    finished: bool,
}

impl ObjectStoreUpload {
    fn check_open(&self) -> Result<(), BucketError> {
        if self.finished {
            return Err(BucketError::Io(format!(
                "upload of {} is already finished or abandoned",
                self.key
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Upload for ObjectStoreUpload {
    async fn write(&mut self, data: Vec<u8>) -> Result<(), BucketError> {
        self.check_open()?;
        self.size += data.len() as u64;
        if let Some(writer) = &mut self.writer {
            writer
                .wait_for_capacity(2)
                .await
                .map_err(|e| map_error(&self.key, e))?;
            writer.write(&data);
            return Ok(());
        }
        self.buffer.extend_from_slice(&data);
        if self.buffer.len() > MULTIPART_THRESHOLD {
            let upload = self
                .store
                .put_multipart(&self.path)
                .await
                .map_err(|e| map_error(&self.key, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            writer.write(&std::mem::take(&mut self.buffer));
            self.writer = Some(writer);
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<u64, BucketError> {
        self.check_open()?;
        self.finished = true;
        match self.writer.take() {
            Some(writer) => {
                writer.finish().await.map_err(|e| map_error(&self.key, e))?;
            }
            None => {
                let data = std::mem::take(&mut self.buffer);
                self.store
                    .put(&self.path, data.into())
                    .await
                    .map_err(|e| map_error(&self.key, e))?;
            }
        }
        Ok(self.size)
    }

    async fn abort(&mut self) {
        self.finished = true;
        self.buffer = Vec::new();
        if let Some(writer) = self.writer.take() {
            let _ = writer.abort().await;
        }
    }
}

/// Checks a relative object key: non-empty, at most 1024 bytes, no leading `/`, no empty, `.`
/// or `..` segments, no backslashes or control characters. `allow_empty` admits the empty
/// string (a list prefix meaning "everything").
pub fn validate_key(key: &str, allow_empty: bool) -> Result<(), BucketError> {
    let bad = |why: &str| Err(BucketError::InvalidKey(format!("{key:?}: {why}")));
    if key.is_empty() {
        return if allow_empty { Ok(()) } else { bad("empty") };
    }
    if key.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return bad("absolute keys are not allowed");
    }
    if key.contains('\\') || key.chars().any(char::is_control) {
        return bad("backslashes and control characters are not allowed");
    }
    let segments: Vec<&str> = key.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if *segment == ".." || *segment == "." {
            return bad("`.` and `..` segments are not allowed");
        }
        // A trailing `/` is fine for a list prefix; an empty segment elsewhere is not.
        if segment.is_empty() && !(last && allow_empty) {
            return bad("empty path segments are not allowed");
        }
    }
    Ok(())
}

/// A bucket scoped to a prefix: keys are relative to it and cannot leave it.
#[derive(Debug, Clone)]
pub struct PrefixedBucket {
    inner: Arc<dyn Bucket>,
    prefix: String,
}

impl PrefixedBucket {
    /// Scopes `inner` to `prefix` (normalised to end with `/`).
    pub fn new(inner: Arc<dyn Bucket>, prefix: &str) -> Result<Self, BucketError> {
        let trimmed = prefix.trim_matches('/');
        validate_key(trimmed, false)?;
        Ok(Self {
            inner,
            prefix: format!("{trimmed}/"),
        })
    }

    /// The granted prefix, ending with `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full(&self, key: &str) -> Result<String, BucketError> {
        validate_key(key, false)?;
        Ok(format!("{}{key}", self.prefix))
    }

    fn relative(&self, mut info: ObjectInfo) -> Option<ObjectInfo> {
        info.key = info.key.strip_prefix(&self.prefix)?.to_owned();
        Some(info)
    }
}

#[async_trait]
impl Bucket for PrefixedBucket {
    async fn get(&self, key: &str) -> Result<Vec<u8>, BucketError> {
        self.inner.get(&self.full(key)?).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, BucketError> {
        self.inner.get_range(&self.full(key)?, range).await
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, BucketError> {
        let info = self.inner.head(&self.full(key)?).await?;
        self.relative(info)
            .ok_or_else(|| BucketError::InvalidKey(key.to_owned()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BucketError> {
        validate_key(prefix, true)?;
        let all = self.inner.list(&format!("{}{prefix}", self.prefix)).await?;
        Ok(all.into_iter().filter_map(|o| self.relative(o)).collect())
    }

    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), BucketError> {
        self.inner.put(&self.full(key)?, data).await
    }

    async fn delete(&self, key: &str) -> Result<(), BucketError> {
        self.inner.delete(&self.full(key)?).await
    }

    async fn start_upload(&self, key: &str) -> Result<Box<dyn Upload>, BucketError> {
        self.inner.start_upload(&self.full(key)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_escape_are_refused() {
        for key in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a\\b",
            "a\nb",
            "..",
        ] {
            assert!(validate_key(key, false).is_err(), "{key:?} accepted");
        }
        for key in ["a", "a/b.csv", "a/b/c.jsonl", "x..y", ".hidden"] {
            assert!(validate_key(key, false).is_ok(), "{key:?} refused");
        }
        assert!(validate_key("", true).is_ok());
        assert!(validate_key("data/", true).is_ok());
        assert!(validate_key("data/", false).is_err());
    }

    #[tokio::test]
    async fn uploads_in_parts_and_abandoned_uploads_leave_nothing() {
        let dir = tempfile::tempdir().expect("test setup");
        let root: Arc<dyn Bucket> =
            Arc::new(ObjectStoreBucket::local(dir.path()).expect("test setup"));
        let scoped = PrefixedBucket::new(root.clone(), "blocks").expect("test setup");

        // Beyond the multipart threshold, in uneven pieces.
        let piece: Vec<u8> = (0..7 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut upload = scoped.start_upload("b/chunks/000001").await.expect("start");
        for _ in 0..3 {
            upload.write(piece.clone()).await.expect("write");
        }
        upload.write(b"tail".to_vec()).await.expect("write");
        assert_eq!(upload.finish().await.expect("finish"), 3 * (7 << 20) + 4);
        assert!(upload.write(b"late".to_vec()).await.is_err());
        let stored = root.get("blocks/b/chunks/000001").await.expect("get");
        assert_eq!(stored.len(), 3 * (7 << 20) + 4);
        assert_eq!(&stored[..piece.len()], &piece[..]);
        assert_eq!(&stored[stored.len() - 4..], b"tail");

        // A small object goes up in one piece.
        let mut small = scoped.start_upload("b/index").await.expect("start");
        small.write(b"index".to_vec()).await.expect("write");
        assert_eq!(small.finish().await.expect("finish"), 5);
        assert_eq!(root.get("blocks/b/index").await.expect("get"), b"index");

        // Abandoned, small or large: nothing under the key.
        for size in [10usize, 20 << 20] {
            let mut abandoned = scoped.start_upload("b/abandoned").await.expect("start");
            abandoned.write(vec![1; size]).await.expect("write");
            abandoned.abort().await;
            assert!(matches!(
                root.head("blocks/b/abandoned").await,
                Err(BucketError::NotFound(_))
            ));
        }
        assert!(matches!(
            scoped.start_upload("../escape").await,
            Err(BucketError::InvalidKey(_))
        ));
    }

    #[tokio::test]
    async fn prefixed_bucket_stays_inside_its_prefix() {
        let dir = std::env::temp_dir().join(format!("gauntlet-bucket-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root: Arc<dyn Bucket> = Arc::new(ObjectStoreBucket::local(&dir).expect("test setup"));
        root.put("secret/key", b"no".to_vec())
            .await
            .expect("test setup");
        root.put("tenant/a/x.csv", b"yes".to_vec())
            .await
            .expect("test setup");
        root.put("tenant/ab/y.csv", b"other".to_vec())
            .await
            .expect("test setup");

        let scoped = PrefixedBucket::new(root.clone(), "tenant/a").expect("test setup");
        assert_eq!(scoped.get("x.csv").await.expect("test setup"), b"yes");
        let listed: Vec<String> = scoped
            .list("")
            .await
            .expect("test setup")
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(listed, vec!["x.csv".to_owned()]);
        assert!(matches!(
            scoped.get("../../secret/key").await,
            Err(BucketError::InvalidKey(_))
        ));
        assert!(matches!(
            scoped.get("/secret/key").await,
            Err(BucketError::InvalidKey(_))
        ));
        assert!(matches!(
            scoped.get("missing").await,
            Err(BucketError::NotFound(_))
        ));
        scoped
            .put("new/z", b"1".to_vec())
            .await
            .expect("test setup");
        assert_eq!(root.get("tenant/a/new/z").await.expect("test setup"), b"1");
        scoped.delete("new/z").await.expect("test setup");
        scoped.delete("new/z").await.expect("test setup");
        assert_eq!(scoped.head("x.csv").await.expect("test setup").size, 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
