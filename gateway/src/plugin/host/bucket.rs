//! `gauntlet:plugin/bucket`: object storage scoped to the manifest's `bucket_prefix`. Without
//! the capability every call is `denied`; keys are validated before any storage call; objects
//! larger than the plugin's memory limit are refused after a `head`, never read. An `upload`
//! lives in the instance's resource table; dropping it unfinished abandons the object.

use wasmtime::component::Resource;

use crate::plugin::bindings::host::gauntlet::plugin::bucket::{
    BucketError, Host, HostUpload, ObjectMeta,
};
use crate::plugin::bucket::{self as store, Bucket, UploadHandle};
use crate::plugin::state::{HostState, block_on};

/// Objects one `list-objects` call may return.
const MAX_LIST: usize = 100_000;

fn convert(error: store::BucketError) -> BucketError {
    match error {
        store::BucketError::NotFound(key) => BucketError::NotFound(key),
        store::BucketError::InvalidKey(message) => BucketError::InvalidKey(message),
        store::BucketError::TooLarge(size) => BucketError::TooLarge(size),
        store::BucketError::Io(message) => BucketError::Io(message),
    }
}

impl HostState {
    /// The scoped bucket, or the `denied` answer (counted).
    fn granted_bucket(&self) -> Result<std::sync::Arc<dyn Bucket>, BucketError> {
        match &self.ctx.bucket {
            Some(bucket) => Ok(bucket.clone()),
            None => {
                self.ctx.count_denied("bucket");
                Err(BucketError::Denied(
                    "the manifest grants no bucket (capabilities.bucket_prefix)".to_owned(),
                ))
            }
        }
    }

    fn bucket_call<T>(
        &mut self,
        key: &str,
        allow_empty: bool,
        op: impl AsyncBucketOp<T>,
    ) -> wasmtime::Result<Result<T, BucketError>> {
        self.enter("bucket")?;
        let bucket = match self.granted_bucket() {
            Ok(bucket) => bucket,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = store::validate_key(key, allow_empty) {
            self.ctx.count_denied("bucket-key");
            return Ok(Err(convert(e)));
        }
        let max = u64::try_from(self.limiter.memory_limit()).unwrap_or(u64::MAX);
        match block_on(op.run(bucket, max)) {
            Ok(result) => Ok(result.map_err(convert)),
            Err(message) => Ok(Err(BucketError::Io(message))),
        }
    }
}

/// One bucket operation, run on the host's runtime.
trait AsyncBucketOp<T> {
    fn run(
        self,
        bucket: std::sync::Arc<dyn Bucket>,
        max_bytes: u64,
    ) -> impl std::future::Future<Output = Result<T, store::BucketError>>;
}

impl<T, F, Fut> AsyncBucketOp<T> for F
where
    F: FnOnce(std::sync::Arc<dyn Bucket>, u64) -> Fut,
    Fut: std::future::Future<Output = Result<T, store::BucketError>>,
{
    fn run(
        self,
        bucket: std::sync::Arc<dyn Bucket>,
        max_bytes: u64,
    ) -> impl std::future::Future<Output = Result<T, store::BucketError>> {
        self(bucket, max_bytes)
    }
}

fn meta(info: store::ObjectInfo) -> ObjectMeta {
    ObjectMeta {
        key: info.key,
        size: info.size,
        last_modified: info.last_modified_ms,
    }
}

impl HostUpload for HostState {
    fn write(
        &mut self,
        upload: Resource<UploadHandle>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), BucketError>> {
        self.enter("bucket")?;
        let handle = self.table.get_mut(&upload)?;
        match block_on(handle.upload.write(data)) {
            Ok(result) => Ok(result.map_err(convert)),
            Err(message) => Ok(Err(BucketError::Io(message))),
        }
    }

    fn finish(
        &mut self,
        upload: Resource<UploadHandle>,
    ) -> wasmtime::Result<Result<u64, BucketError>> {
        self.enter("bucket")?;
        let handle = self.table.get_mut(&upload)?;
        let key = handle.key.clone();
        let result = match block_on(handle.upload.finish()) {
            Ok(result) => result.map_err(convert),
            Err(message) => Err(BucketError::Io(message)),
        };
        if let Err(error) = &result {
            tracing::debug!(plugin = %self.ctx.name, key, ?error, "plugin upload failed");
        }
        Ok(result)
    }

    fn drop(&mut self, upload: Resource<UploadHandle>) -> wasmtime::Result<()> {
        let mut handle = self.table.delete(upload)?;
        // Abandons an unfinished object; after `finish` this does nothing.
        let _ = block_on(handle.upload.abort());
        Ok(())
    }
}

impl Host for HostState {
    fn start_upload(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Resource<UploadHandle>, BucketError>> {
        let k = key.clone();
        let started =
            self.bucket_call(
                &key,
                false,
                move |bucket: std::sync::Arc<dyn Bucket>, _| async move {
                    bucket.start_upload(&k).await
                },
            )?;
        Ok(match started {
            Ok(upload) => Ok(self.table.push(UploadHandle { key, upload })?),
            Err(error) => Err(error),
        })
    }

    fn get(&mut self, key: String) -> wasmtime::Result<Result<Vec<u8>, BucketError>> {
        let k = key.clone();
        self.bucket_call(
            &key,
            false,
            move |bucket: std::sync::Arc<dyn Bucket>, max| async move {
                let info = bucket.head(&k).await?;
                if info.size > max {
                    return Err(store::BucketError::TooLarge(info.size));
                }
                bucket.get(&k).await
            },
        )
    }

    fn get_range(
        &mut self,
        key: String,
        offset: u64,
        length: u64,
    ) -> wasmtime::Result<Result<Vec<u8>, BucketError>> {
        let k = key.clone();
        self.bucket_call(
            &key,
            false,
            move |bucket: std::sync::Arc<dyn Bucket>, max| async move {
                if length > max {
                    return Err(store::BucketError::TooLarge(length));
                }
                let end = offset
                    .checked_add(length)
                    .ok_or_else(|| store::BucketError::InvalidKey("range overflows".to_owned()))?;
                bucket.get_range(&k, offset..end).await
            },
        )
    }

    fn head(&mut self, key: String) -> wasmtime::Result<Result<ObjectMeta, BucketError>> {
        let k = key.clone();
        self.bucket_call(&key, false, move |bucket: std::sync::Arc<dyn Bucket>, _| async move {
            bucket.head(&k).await.map(meta)
        })
    }

    fn list_objects(
        &mut self,
        prefix: String,
    ) -> wasmtime::Result<Result<Vec<ObjectMeta>, BucketError>> {
        let p = prefix.clone();
        self.bucket_call(
            &prefix,
            true,
            move |bucket: std::sync::Arc<dyn Bucket>, _| async move {
                let list = bucket.list(&p).await?;
                if list.len() > MAX_LIST {
                    return Err(store::BucketError::Io(format!(
                        "{} objects exceed the {MAX_LIST} one listing may return",
                        list.len()
                    )));
                }
                Ok(list.into_iter().map(meta).collect())
            },
        )
    }

    fn put(&mut self, key: String, data: Vec<u8>) -> wasmtime::Result<Result<(), BucketError>> {
        let k = key.clone();
        self.bucket_call(
            &key,
            false,
            move |bucket: std::sync::Arc<dyn Bucket>, _| async move { bucket.put(&k, data).await },
        )
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), BucketError>> {
        let k = key.clone();
        self.bucket_call(
            &key,
            false,
            move |bucket: std::sync::Arc<dyn Bucket>, _| async move { bucket.delete(&k).await },
        )
    }
}
