//! Reads from object storage: whole small objects and byte ranges of large ones, counted by
//! operation on `/metrics`, with nearby ranges coalesced into one request.
//!
//! A range past the end of an object is clamped to it, so callers may over-estimate the length
//! of what they read (a chunk, a series entry) and check what came back.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt as _};

use super::metrics::BucketMetrics;

/// Ranges closer than this are fetched as one request (as Thanos does for chunks).
pub const COALESCE_GAP: u64 = 16 * 1024;
/// A coalesced request never grows past this.
pub const MAX_COALESCED: u64 = 16 << 20;
/// Range requests in flight at once for one read.
pub const FETCH_CONCURRENCY: usize = 8;

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Anything else the object store reported.
    #[error("reading {path}: {source}")]
    Store {
        /// The object's path.
        path: String,
        /// What went wrong.
        #[source]
        source: object_store::Error,
    },
}

fn store_error(path: &Path, source: object_store::Error) -> FetchError {
    match source {
        object_store::Error::NotFound { .. } => FetchError::NotFound(path.to_string()),
        source => FetchError::Store {
            path: path.to_string(),
            source,
        },
    }
}

fn count(operation: &str, bytes: usize) {
    let m = BucketMetrics::get();
    m.objstore_requests.with_label_values(&[operation]).inc();
    m.objstore_bytes
        .with_label_values(&[operation])
        .inc_by(bytes as u64);
}

/// Reads a whole object.
pub async fn get(bucket: &dyn ObjectStore, path: &Path) -> Result<Bytes, FetchError> {
    let result = bucket.get(path).await;
    let bytes = match result {
        Ok(r) => r.bytes().await.map_err(|e| store_error(path, e)),
        Err(e) => Err(store_error(path, e)),
    };
    count("get", bytes.as_ref().map_or(0, Bytes::len));
    bytes
}

/// Objects under `prefix` (recursively) with their sizes.
pub async fn list(bucket: &dyn ObjectStore, prefix: &Path) -> Result<Vec<(Path, u64)>, FetchError> {
    count("iter", 0);
    bucket
        .list(Some(prefix))
        .map_ok(|meta| (meta.location, meta.size))
        .try_collect()
        .await
        .map_err(|e| store_error(prefix, e))
}

/// The top-level "directories" of the bucket.
pub async fn list_top_level(bucket: &dyn ObjectStore) -> Result<Vec<String>, FetchError> {
    count("iter", 0);
    let listed = bucket
        .list_with_delimiter(None)
        .await
        .map_err(|e| store_error(&Path::default(), e))?;
    Ok(listed
        .common_prefixes
        .into_iter()
        .filter_map(|p| p.parts().next().map(|part| part.as_ref().to_owned()))
        .collect())
}

/// Whether an object exists.
pub async fn exists(bucket: &dyn ObjectStore, path: &Path) -> Result<bool, FetchError> {
    count("exists", 0);
    match bucket.head(path).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(store_error(path, e)),
    }
}

/// The last `n` bytes of an object and the object's size.
pub async fn get_suffix(
    bucket: &dyn ObjectStore,
    path: &Path,
    n: u64,
) -> Result<(Bytes, u64), FetchError> {
    let options = GetOptions {
        range: Some(GetRange::Suffix(n)),
        ..GetOptions::default()
    };
    let result = bucket
        .get_opts(path, options)
        .await
        .map_err(|e| store_error(path, e))?;
    let size = result.meta.size;
    let bytes = result.bytes().await.map_err(|e| store_error(path, e))?;
    count("get_range", bytes.len());
    Ok((bytes, size))
}

/// Bytes `range` of an object, clamped to its end.
pub async fn get_range(
    bucket: &dyn ObjectStore,
    path: &Path,
    range: Range<u64>,
) -> Result<Bytes, FetchError> {
    let options = GetOptions {
        range: Some(GetRange::Bounded(range)),
        ..GetOptions::default()
    };
    let result = bucket
        .get_opts(path, options)
        .await
        .map_err(|e| store_error(path, e))?;
    let bytes = result.bytes().await.map_err(|e| store_error(path, e))?;
    count("get_range", bytes.len());
    Ok(bytes)
}

/// Groups sorted-or-not `ranges` into requests: ranges closer than [`COALESCE_GAP`] share one
/// (up to [`MAX_COALESCED`] bytes). Returns the requests in order, each with the indices of the
/// ranges it covers.
pub fn coalesce(ranges: &[Range<u64>]) -> Vec<(Range<u64>, Vec<usize>)> {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| (ranges[i].start, ranges[i].end));
    let mut out: Vec<(Range<u64>, Vec<usize>)> = Vec::new();
    for i in order {
        let r = &ranges[i];
        if let Some((cur, members)) = out.last_mut()
            && r.start <= cur.end.saturating_add(COALESCE_GAP)
            && r.end.max(cur.end) - cur.start <= MAX_COALESCED
        {
            cur.end = cur.end.max(r.end);
            members.push(i);
            continue;
        }
        out.push((r.clone(), vec![i]));
    }
    out
}

/// Reads every range of `ranges` from one object, coalescing nearby ones, and returns for each
/// range the bytes read (shorter than asked when the object ends first).
pub async fn get_ranges(
    bucket: &Arc<dyn ObjectStore>,
    path: &Path,
    ranges: &[Range<u64>],
) -> Result<Vec<Bytes>, FetchError> {
    let groups = coalesce(ranges);
    let fetched: Vec<(Range<u64>, Vec<usize>, Bytes)> =
        futures::stream::iter(groups.into_iter().map(|(range, members)| {
            let bucket = bucket.clone();
            async move {
                let bytes = get_range(bucket.as_ref(), path, range.clone()).await?;
                Ok::<_, FetchError>((range, members, bytes))
            }
        }))
        .buffer_unordered(FETCH_CONCURRENCY)
        .try_collect()
        .await?;
    let mut out = vec![Bytes::new(); ranges.len()];
    for (range, members, bytes) in fetched {
        for i in members {
            let r = &ranges[i];
            let start = usize::try_from(r.start - range.start).unwrap_or(usize::MAX);
            let end = usize::try_from(r.end - range.start).unwrap_or(usize::MAX);
            let end = end.min(bytes.len());
            out[i] = if start < end {
                bytes.slice(start..end)
            } else {
                Bytes::new()
            };
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_nearby_ranges_only() {
        let groups = coalesce(&[100..200, 0..50, 50_000..50_100, 210..300]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, 0..300);
        assert_eq!(groups[0].1, vec![1, 0, 3]);
        assert_eq!(groups[1].0, 50_000..50_100);
    }
}
