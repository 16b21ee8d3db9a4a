//! `gauntlet store`: serves a store over `thanos.Store` + `thanos.info.Info` on gRPC, with
//! health, readiness and metrics on HTTP.
//!
//! With `--plugin MANIFEST` the store is a WebAssembly store plugin; its `bucket` import is
//! scoped to a local filesystem bucket rooted at `--data-dir`. The manifest and component are
//! watched: a changed plugin is swapped in atomically while calls in flight finish on the old
//! version, and a plugin that fails to load keeps the previous version serving.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::StoreArgs;
use crate::grpc;
use crate::http::{self, Readiness};
use crate::plugin::bucket::{Bucket, ObjectStoreBucket};
use crate::plugin::{HostConfig, HostServices, PluginHost, PluginSlot, World};
use crate::query::store::Store;
use crate::shutdown::Shutdown;

/// How often the plugin's manifest and component are checked for changes.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// `gauntlet store`.
pub async fn run(args: &StoreArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    let Some(manifest) = &args.plugin else {
        anyhow::bail!("gauntlet store needs --plugin MANIFEST");
    };
    let slot = load_plugin(manifest, &args.data_dir).await?;
    let store: Arc<dyn Store> = Arc::new(slot.store());
    tokio::spawn(watch(slot, shutdown.clone()));
    serve(store, args, shutdown).await
}

/// Loads a store plugin with a host whose bucket is the local folder `data_dir/bucket`.
async fn load_plugin(manifest: &Path, data_dir: &Path) -> anyhow::Result<Arc<PluginSlot>> {
    let bucket_root = data_dir.join("bucket");
    std::fs::create_dir_all(&bucket_root)
        .with_context(|| format!("creating --data-dir {}", bucket_root.display()))?;
    let bucket: Arc<dyn Bucket> = Arc::new(
        ObjectStoreBucket::local(&bucket_root)
            .with_context(|| format!("opening the bucket {}", bucket_root.display()))?,
    );
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
        bucket = %bucket_root.display(),
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
async fn serve(store: Arc<dyn Store>, args: &StoreArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    let http_listener = http::bind(args.server.http_address, "--http-address").await?;
    let grpc_listener = http::bind(args.server.grpc_address, "--grpc-address").await?;
    let readiness = Readiness::default();
    let router = http::common_routes(readiness.clone());
    let grpc_server = tokio::spawn(grpc::serve(grpc_listener, store, shutdown.clone()));
    readiness.set_ready(true);
    tracing::info!(
        http = %args.server.http_address,
        grpc = %args.server.grpc_address,
        "store ready"
    );
    http::serve(http_listener, router, shutdown).await?;
    grpc_server.await??;
    Ok(())
}
