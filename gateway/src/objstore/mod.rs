//! Object storage: Thanos's objstore YAML ([`config`]), the `object_store` clients it builds
//! ([`backend`]), and [`Bucket`], the handful of operations the gateway needs (get, ranged get,
//! head, exists, list with or without common prefixes, put with multipart for large objects,
//! delete) with errors that say what to do.
//!
//! Invariants: keys are `/`-separated and relative to the configured `prefix:`; a range is
//! either returned whole or refused with the object's size, never silently truncated; a delete
//! of a missing object succeeds. Nothing here reads an object into memory unless asked for its
//! bytes.

pub mod backend;
pub mod blocks;
pub mod config;

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

pub use backend::ClientTuning;
pub use config::{ConfigError, ObjstoreConfig, Provider};

/// Objects above this size are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 16 << 20;

/// Size of one part of a multipart upload (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 << 20;

/// Why an object storage operation failed. Messages name the bucket and what to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjstoreError {
    /// The configuration cannot produce a client.
    #[error("objstore config: {message}")]
    Config {
        /// What is wrong, naming the field.
        message: String,
    },
    /// No object under the key.
    #[error("object '{key}' not found in {location}")]
    NotFound {
        /// The key asked for.
        key: String,
        /// Bucket and endpoint.
        location: String,
    },
    /// The bucket or container does not exist.
    #[error("{location} not found: create it or check `bucket:` (`container:` for Azure)")]
    BucketNotFound {
        /// Bucket and endpoint.
        location: String,
    },
    /// Credentials were refused.
    #[error(
        "access denied to {location}: check the credentials (access_key/secret_key, \
         service_account, storage_account_key): {detail}"
    )]
    AccessDenied {
        /// Bucket and endpoint.
        location: String,
        /// The server's answer.
        detail: String,
    },
    /// The endpoint could not be reached.
    #[error("cannot reach {location}: check `endpoint` and `insecure` (http vs https): {detail}")]
    Unreachable {
        /// Bucket and endpoint.
        location: String,
        /// The connection error.
        detail: String,
    },
    /// A byte range reaching past the end of the object.
    #[error(
        "range {start}..{end} of '{key}' is past the end of the object ({size} bytes): read at \
         most up to byte {size}"
    )]
    RangeNotSatisfiable {
        /// The key.
        key: String,
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The object's size.
        size: u64,
    },
    /// An empty or inverted byte range.
    #[error("invalid range {start}..{end} for '{key}': the end must be after the start")]
    InvalidRange {
        /// The key.
        key: String,
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
    },
    /// The key cannot name an object.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Any other failure of the backend or of local files.
    #[error("{location}: {detail}")]
    Other {
        /// Bucket and endpoint (or the local file).
        location: String,
        /// The underlying error.
        detail: String,
    },
}

/// Metadata of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the bucket (and its prefix).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
}

/// One level of a listing: objects directly under a prefix and the "directories" below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Objects directly under the prefix, in key order.
    pub objects: Vec<ObjectInfo>,
    /// Common prefixes one level down, each ending with `/`, in order.
    pub prefixes: Vec<String>,
}

/// A bucket: an `object_store` client plus a description of where it points, for errors.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    location: String,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Bucket {
    /// Wraps any `object_store` client; `location` describes it in errors.
    pub fn new(store: Arc<dyn ObjectStore>, location: impl Into<String>) -> Self {
        Self {
            store,
            location: location.into(),
        }
    }

    /// The client for a parsed configuration, logging any ignored fields.
    pub fn from_config(
        config: &ObjstoreConfig,
        tuning: &ClientTuning,
    ) -> Result<Self, ObjstoreError> {
        config.warn_ignored();
        let store = backend::build(config, tuning)?;
        let mut location = config.backend.location();
        if !config.prefix.is_empty() {
            location = format!("{location} (prefix '{}')", config.prefix);
        }
        Ok(Self::new(store, location))
    }

    /// The bucket described by `--objstore.config-file` or `--objstore.config`.
    pub fn from_flags(
        file: Option<&Path>,
        inline: Option<&str>,
        tuning: &ClientTuning,
    ) -> Result<Self, ObjstoreError> {
        let config =
            ObjstoreConfig::from_flags(file, inline).map_err(|e| ObjstoreError::Config {
                message: e
                    .to_string()
                    .trim_start_matches("objstore config: ")
                    .to_owned(),
            })?;
        Self::from_config(&config, tuning)
    }

    /// The underlying client, for code that needs the full `object_store` API.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Bucket and endpoint, as errors name them.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(key: &str) -> Result<ObjectPath, ObjstoreError> {
        if key.is_empty() {
            return Err(ObjstoreError::InvalidKey {
                key: String::new(),
                reason: "empty".to_owned(),
            });
        }
        ObjectPath::parse(key).map_err(|e| ObjstoreError::InvalidKey {
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }

    fn dir(prefix: &str) -> Result<Option<ObjectPath>, ObjstoreError> {
        let trimmed = prefix.trim_end_matches('/');
        if trimmed.is_empty() {
            Ok(None)
        } else {
            Self::path(trimmed).map(Some)
        }
    }

    /// Classifies a backend error for `key` into one that says what to check.
    fn error(&self, key: &str, error: &object_store::Error) -> ObjstoreError {
        let detail = error_chain(error);
        let lower = detail.to_ascii_lowercase();
        let location = self.location.clone();
        if lower.contains("nosuchbucket")
            || lower.contains("containernotfound")
            || lower.contains("bucket does not exist")
            || lower.contains("container does not exist")
        {
            return ObjstoreError::BucketNotFound { location };
        }
        if let object_store::Error::NotFound { .. } = error {
            return ObjstoreError::NotFound {
                key: key.to_owned(),
                location,
            };
        }
        if matches!(
            error,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || [
            "accessdenied",
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "authenticationfailed",
            "authorizationfailure",
            "403 forbidden",
            "401 unauthorized",
        ]
        .iter()
        .any(|needle| lower.contains(needle))
        {
            return ObjstoreError::AccessDenied { location, detail };
        }
        if lower.contains("error sending request")
            || lower.contains("connection refused")
            || lower.contains("dns error")
            || lower.contains("tcp connect")
            || lower.contains("client error (connect)")
        {
            return ObjstoreError::Unreachable { location, detail };
        }
        ObjstoreError::Other { location, detail }
    }

    /// Reads a whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes, ObjstoreError> {
        let path = Self::path(key)?;
        let result = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.error(key, &e))?;
        result.bytes().await.map_err(|e| self.error(key, &e))
    }

    /// Reads bytes `range` of an object. A range reaching past the end is refused with
    /// [`ObjstoreError::RangeNotSatisfiable`], on every backend alike.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjstoreError> {
        let path = Self::path(key)?;
        if range.start >= range.end {
            return Err(ObjstoreError::InvalidRange {
                key: key.to_owned(),
                start: range.start,
                end: range.end,
            });
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            ..GetOptions::default()
        };
        let result = match self.store.get_opts(&path, options).await {
            Ok(result) => result,
            Err(error) => {
                let mapped = self.error(key, &error);
                if matches!(mapped, ObjstoreError::Other { .. }) {
                    // Backends report a range starting past the end differently; the size says
                    // what happened.
                    if let Ok(meta) = self.store.head(&path).await
                        && range.end > meta.size
                    {
                        return Err(range_error(key, &range, meta.size));
                    }
                }
                return Err(mapped);
            }
        };
        let size = result.meta.size;
        if range.end > size {
            return Err(range_error(key, &range, size));
        }
        let bytes = result.bytes().await.map_err(|e| self.error(key, &e))?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(ObjstoreError::Other {
                location: self.location.clone(),
                detail: format!(
                    "'{key}': asked for {} bytes, got {}",
                    range.end - range.start,
                    bytes.len()
                ),
            });
        }
        Ok(bytes)
    }

    /// Size and modification time of an object.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, ObjstoreError> {
        let path = Self::path(key)?;
        let meta = self
            .store
            .head(&path)
            .await
            .map_err(|e| self.error(key, &e))?;
        Ok(info(&meta))
    }

    /// Whether an object exists.
    pub async fn exists(&self, key: &str) -> Result<bool, ObjstoreError> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(ObjstoreError::NotFound { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Every object under the "directory" `prefix` (`""` for all), recursively, in key order.
    pub async fn list_recursive(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjstoreError> {
        let dir = Self::dir(prefix)?;
        let mut out: Vec<ObjectInfo> = self
            .store
            .list(dir.as_ref())
            .map_ok(|meta| info(&meta))
            .try_collect()
            .await
            .map_err(|e| self.error(prefix, &e))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// One level under the "directory" `prefix` (`""` for the root): objects and common
    /// prefixes.
    pub async fn list_dir(&self, prefix: &str) -> Result<Listing, ObjstoreError> {
        let dir = Self::dir(prefix)?;
        let result = self
            .store
            .list_with_delimiter(dir.as_ref())
            .await
            .map_err(|e| self.error(prefix, &e))?;
        let mut objects: Vec<ObjectInfo> = result.objects.iter().map(info).collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        let mut prefixes: Vec<String> = result
            .common_prefixes
            .iter()
            .map(|p| format!("{p}/"))
            .collect();
        prefixes.sort();
        Ok(Listing { objects, prefixes })
    }

    /// Writes a whole object (in parts above [`MULTIPART_THRESHOLD`]), replacing any existing.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), ObjstoreError> {
        let path = Self::path(key)?;
        if data.len() <= MULTIPART_THRESHOLD {
            self.store
                .put(&path, PutPayload::from_bytes(data))
                .await
                .map_err(|e| self.error(key, &e))?;
            return Ok(());
        }
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| self.error(key, &e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        for chunk in data.chunks(PART_SIZE) {
            writer
                .wait_for_capacity(2)
                .await
                .map_err(|e| self.error(key, &e))?;
            writer.put(data.slice_ref(chunk));
        }
        writer.finish().await.map_err(|e| self.error(key, &e))?;
        Ok(())
    }

    /// Uploads a local file, in parts when large, calling `progress` with the bytes sent so
    /// far; returns the file's size.
    pub async fn upload_file(
        &self,
        key: &str,
        file: &Path,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64, ObjstoreError> {
        use tokio::io::AsyncReadExt;
        let local = |e: std::io::Error| ObjstoreError::Other {
            location: file.display().to_string(),
            detail: e.to_string(),
        };
        let path = Self::path(key)?;
        let mut reader = tokio::fs::File::open(file).await.map_err(local)?;
        let size = reader.metadata().await.map_err(local)?.len();
        if size <= MULTIPART_THRESHOLD as u64 {
            let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            reader.read_to_end(&mut data).await.map_err(local)?;
            self.store
                .put(&path, PutPayload::from(data))
                .await
                .map_err(|e| self.error(key, &e))?;
            progress(size);
            return Ok(size);
        }
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| self.error(key, &e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut sent = 0u64;
        let mut buffer = vec![0u8; PART_SIZE];
        loop {
            let mut filled = 0;
            while filled < buffer.len() {
                let n = reader.read(&mut buffer[filled..]).await.map_err(local)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(2).await {
                return Err(self.error(key, &e));
            }
            writer.write(&buffer[..filled]);
            sent += filled as u64;
            progress(sent);
            if filled < buffer.len() {
                break;
            }
        }
        writer.finish().await.map_err(|e| self.error(key, &e))?;
        Ok(sent)
    }

    /// Deletes an object; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), ObjstoreError> {
        let path = Self::path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(key, &e)),
        }
    }
}

fn range_error(key: &str, range: &Range<u64>, size: u64) -> ObjstoreError {
    ObjstoreError::RangeNotSatisfiable {
        key: key.to_owned(),
        start: range.start,
        end: range.end,
        size,
    }
}

fn info(meta: &object_store::ObjectMeta) -> ObjectInfo {
    ObjectInfo {
        key: meta.location.to_string(),
        size: meta.size,
        last_modified_ms: meta.last_modified.timestamp_millis(),
    }
}

/// An error and its sources on one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let next = inner.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = inner.source();
    }
    text.replace('\n', " ")
}
