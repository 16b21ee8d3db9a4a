//! `gauntlet store`: serves a store over `thanos.Store` + `thanos.info.Info` on gRPC, with
//! health, readiness and metrics on HTTP.
//!
//! By default the store is the store gateway: a [`BucketStore`] over the bucket that
//! `--objstore.config-file`/`--objstore.config` describe, with index-headers in `--data-dir`.
//! It syncs blocks at start (`/-/ready` answers 200 after that first sync) and every
//! `--sync-block-duration`.
//!
//! With `--plugin MANIFEST` the store is a WebAssembly store plugin; its `bucket` import is
//! scoped (to the manifest's prefix) within the configured bucket, or within a local folder
//! `--data-dir/bucket` when no bucket is configured. The manifest and component are
//! watched: a changed plugin is swapped in atomically while calls in flight finish on the old
//! version, and a plugin that fails to load keeps the previous version serving.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::{RunError, StoreArgs};
use crate::grpc;
use crate::http::{self, Readiness};
use crate::objstore::{Bucket as ObjectBucket, ClientTuning, ObjstoreError};
use crate::plugin::bucket::{Bucket, ObjectStoreBucket};
use crate::plugin::{HostConfig, HostServices, PluginHost, PluginSlot, World};
use crate::query::store::Store;
use crate::shutdown::Shutdown;
use crate::store::bucket::parse::{parse_size, parse_time};
use crate::store::bucket::{BucketStore, BucketStoreConfig, SERIES_BATCH_SIZE};

/// How often the plugin's manifest and component are checked for changes.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// `gauntlet store`.
pub async fn run(args: &StoreArgs, shutdown: Shutdown) -> Result<(), RunError> {
    if let Some(manifest) = &args.plugin {
        let configured =
            args.objstore.objstore_config_file.is_some() || args.objstore.objstore_config.is_some();
        let bucket = if configured {
            let bucket = objstore_bucket(args)?;
            Some(Arc::new(ObjectStoreBucket::from_objstore(&bucket)) as Arc<dyn Bucket>)
        } else {
            None
        };
        let slot = load_plugin(manifest, &args.data_dir, bucket).await?;
        let store: Arc<dyn Store> = Arc::new(slot.store());
        tokio::spawn(watch(slot, shutdown.clone()));
        let readiness = Readiness::default();
        readiness.set_ready(true);
        return Ok(serve(store, readiness, args, shutdown).await?);
    }
    let config = bucket_config(args)?;
    let bucket = objstore_bucket(args)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating --data-dir {}", config.data_dir.display()))?;
    let store = Arc::new(BucketStore::new(bucket.store(), config));
    let readiness = Readiness::default();
    tokio::spawn(sync_loop(
        store.clone(),
        args.sync_block_duration,
        readiness.clone(),
        shutdown.clone(),
    ));
    Ok(serve(store, readiness, args, shutdown).await?)
}

/// The store gateway's settings from the flags; a bad value is a usage error naming the flag.
fn bucket_config(args: &StoreArgs) -> Result<BucketStoreConfig, RunError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let time = |flag: &str, value: &Option<String>| {
        value
            .as_deref()
            .map(|v| parse_time(v, now).map_err(|e| RunError::Usage(format!("--{flag}: {e}"))))
            .transpose()
    };
    let size = |flag: &str, value: &str| {
        parse_size(value).map_err(|e| RunError::Usage(format!("--{flag}: {e}")))
    };
    let config = BucketStoreConfig {
        data_dir: args.data_dir.clone(),
        min_time: time("min-time", &args.min_time)?,
        max_time: time("max-time", &args.max_time)?,
        index_cache_bytes: size("index-cache-size", &args.index_cache_size)?,
        chunk_cache_bytes: size("store.chunk-cache-size", &args.chunk_cache_size)?,
        chunk_pool_bytes: size("chunk-pool-size", &args.chunk_pool_size)?,
        series_limit: args.request_series_limit,
        samples_limit: args.request_samples_limit,
        series_batch_size: SERIES_BATCH_SIZE,
        postings_offsets_sampling: usize::try_from(args.postings_offsets_sampling)
            .unwrap_or(usize::MAX),
    };
    if let (Some(min), Some(max)) = (config.min_time, config.max_time)
        && min >= max
    {
        return Err(RunError::Usage(
            "--min-time must be before --max-time".to_owned(),
        ));
    }
    Ok(config)
}

/// Syncs blocks at start and every `every`; the first completed sync makes the store ready.
async fn sync_loop(
    store: Arc<BucketStore>,
    every: Duration,
    readiness: Readiness,
    shutdown: Shutdown,
) {
    let mut interval = tokio::time::interval(every.max(Duration::from_secs(1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = shutdown.requested();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = interval.tick() => {}
        }
        match store.sync().await {
            Ok(summary) => {
                if !readiness.is_ready() {
                    tracing::info!(
                        blocks = store.blocks().len(),
                        failed = summary.failed,
                        headers_built = summary.headers_built,
                        "initial block sync done"
                    );
                }
                readiness.set_ready(true);
            }
            Err(error) => {
                tracing::error!(%error, "block sync failed; serving the blocks known so far");
            }
        }
    }
}

/// The bucket `--objstore.config-file`/`--objstore.config` describe; an unusable configuration
/// is a usage error.
fn objstore_bucket(args: &StoreArgs) -> Result<ObjectBucket, RunError> {
    ObjectBucket::from_flags(
        args.objstore.objstore_config_file.as_deref(),
        args.objstore.objstore_config.as_deref(),
        &ClientTuning::default(),
    )
    .map_err(|error| match error {
        ObjstoreError::Config { .. } => RunError::Usage(error.to_string()),
        other => RunError::Failed(other.into()),
    })
}

/// Loads a store plugin with a host whose bucket is `bucket`, or the local folder
/// `data_dir/bucket` without one.
async fn load_plugin(
    manifest: &Path,
    data_dir: &Path,
    bucket: Option<Arc<dyn Bucket>>,
) -> anyhow::Result<Arc<PluginSlot>> {
    let bucket_root = data_dir.join("bucket");
    let bucket: Arc<dyn Bucket> = match bucket {
        Some(bucket) => bucket,
        None => {
            std::fs::create_dir_all(&bucket_root)
                .with_context(|| format!("creating --data-dir {}", bucket_root.display()))?;
            Arc::new(
                ObjectStoreBucket::local(&bucket_root)
                    .with_context(|| format!("opening the bucket {}", bucket_root.display()))?,
            )
        }
    };
    let host = PluginHost::new(
        HostConfig {
            cache_dir: Some(data_dir.join("plugin-cache")),
            ..HostConfig::default()
        },
        HostServices {
            bucket: Some(bucket),
            ..HostServices::default()
        },
    )?;
    let slot = PluginSlot::load_async(&host, manifest).await?;
    let plugin = slot.current();
    if plugin.manifest().world != World::StoreBackend {
        anyhow::bail!(
            "--plugin {}: world is {}, but `gauntlet store` serves store-backend plugins",
            manifest.display(),
            plugin.manifest().world
        );
    }
    tracing::info!(
        plugin = plugin.name(),
        version = %plugin.manifest().version,
        "store plugin loaded"
    );
    Ok(slot)
}

/// Reloads the plugin when its manifest or component changes, until shutdown.
async fn watch(slot: Arc<PluginSlot>, shutdown: Shutdown) {
    let mut interval = tokio::time::interval(RELOAD_CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = shutdown.requested();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = interval.tick() => {}
        }
        let checked = slot.clone();
        match tokio::task::spawn_blocking(move || checked.reload_if_changed()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "plugin not reloaded; the previous version keeps serving");
            }
            Err(error) => tracing::error!(%error, "plugin reload task failed"),
        }
    }
}

/// Serves `store` on the role's gRPC and HTTP addresses until shutdown.
async fn serve(
    store: Arc<dyn Store>,
    readiness: Readiness,
    args: &StoreArgs,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let http_listener = http::bind(args.server.http_address, "--http-address").await?;
    let grpc_listener = http::bind(args.server.grpc_address, "--grpc-address").await?;
    let router = http::common_routes(readiness.clone());
    let grpc_server = tokio::spawn(grpc::serve(grpc_listener, store, shutdown.clone()));
    tracing::info!(
        http = %args.server.http_address,
        grpc = %args.server.grpc_address,
        "store listening"
    );
    http::serve(http_listener, router, shutdown).await?;
    grpc_server.await??;
    Ok(())
}
