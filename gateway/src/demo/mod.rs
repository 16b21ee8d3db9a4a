//! `gauntlet demo`: the querier, its UI and the store gateway over generated data, in one
//! process with no external services.
//!
//! Three Prometheus servers with sidecars are simulated: cluster `eu1`, and cluster `us1` as an
//! HA pair (`replica` 0 and 1) with outages in each replica, so deduplication and the Stores
//! page have something to show. Data covers six hours at 15 s. On first start it is written as
//! TSDB blocks (2 h each, Thanos external labels in `meta.json`) into a filesystem bucket under
//! `--data-dir`, one prefix per simulated Prometheus, and served by one [`BucketStore`] each;
//! a later start reuses the blocks while they are recent enough to reach the present (a demo
//! whose newest sample is minutes old shows empty "now" panels, so older data is generated
//! anew in a new folder, never under a running demo).
//!
//! A fourth store is not Prometheus at all: a shop's data warehouse that exports business and
//! batch job metrics once a minute as CSV and JSON Lines files ([`files`]), written beside the
//! blocks under their own bucket prefix and served by the example store plugin
//! (`plugins/file-store`) in this process's plugin host. When that component is not built the
//! demo starts without it and says how to build it; it never fails for want of it.

pub mod blocks;
pub mod data;
pub mod files;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;

use crate::cli::DemoArgs;
use crate::http::api::ApiOptions;
use crate::plugin::bucket::{Bucket, ObjectStoreBucket};
use crate::plugin::manifest::sha256_hex;
use crate::plugin::{HostConfig, HostServices, PluginHost, PluginSlot, World};
use crate::promql::EngineOptions;
use crate::query::endpoints::EndpointSet;
use crate::query::proxy::ProxyLimits;
use crate::query::querier::{self, QuerierConfig};
use crate::query::store::Store;
use crate::shutdown::Shutdown;
use crate::store::bucket::{BucketStore, BucketStoreConfig};

/// The label that tells the demo's HA replicas apart.
pub const REPLICA_LABEL: &str = "replica";
/// File name of the example store plugin's component.
pub const FILE_STORE_COMPONENT: &str = "file-store.wasm";
/// The store name of the warehouse's files served by the plugin.
pub const FILE_STORE_NAME: &str = "file-store-warehouse";

/// Opens the demo's stores over the bucket at `bucket_dir` (one prefix per simulated
/// Prometheus), index-headers under `headers_dir`: name and store, each synced once.
pub async fn open_stores(
    bucket_dir: &std::path::Path,
    headers_dir: &std::path::Path,
    names: &[String],
) -> anyhow::Result<Vec<(String, Arc<BucketStore>)>> {
    let root: Arc<dyn ObjectStore> = Arc::new(
        LocalFileSystem::new_with_prefix(bucket_dir)
            .with_context(|| format!("opening the demo bucket {}", bucket_dir.display()))?,
    );
    let mut stores = Vec::with_capacity(names.len());
    for name in names {
        let bucket: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(root.clone(), name.as_str()));
        let store = BucketStore::new(bucket, BucketStoreConfig::new(headers_dir.join(name)));
        let summary = store
            .sync()
            .await
            .with_context(|| format!("loading the demo blocks of {name}"))?;
        anyhow::ensure!(
            summary.failed == 0 && !store.blocks().is_empty(),
            "the demo blocks of {name} in {} are incomplete; remove that folder to regenerate",
            bucket_dir.display()
        );
        stores.push((name.clone(), Arc::new(store)));
    }
    Ok(stores)
}

/// The manifest of the example store plugin over the warehouse's prefix of the demo bucket.
pub fn file_store_manifest(component: &std::path::Path, sha256: &str) -> String {
    let toml_string = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let external_labels = files::EXTERNAL_LABELS
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "name = \"file-store\"\nversion = \"{}\"\nworld = \"store-backend\"\npath = {}\nsha256 = \"{sha256}\"\nfailure_policy = \"fail-open\"\n\n[capabilities]\nbucket_prefix = {}\n\n[limits]\nmemory = \"256MiB\"\ntime_per_call = \"30s\"\n\n[config]\nexternal_labels = {}\n",
        crate::build_info::VERSION,
        toml_string(&component.display().to_string()),
        toml_string(files::PREFIX),
        toml_string(&external_labels),
    )
}

/// Loads the example store plugin (`component`) over the warehouse's files in the
/// generation's bucket, in a plugin host of its own; its manifest is written beside the data
/// for the load and removed after it.
pub async fn open_file_store(
    generation: &Generation,
    component: &std::path::Path,
) -> anyhow::Result<Arc<PluginSlot>> {
    let bytes = tokio::fs::read(component)
        .await
        .with_context(|| format!("reading {}", component.display()))?;
    let bucket_dir = generation.bucket_dir();
    let bucket: Arc<dyn Bucket> = Arc::new(
        ObjectStoreBucket::local(&bucket_dir)
            .with_context(|| format!("opening the demo bucket {}", bucket_dir.display()))?,
    );
    let host = PluginHost::new(
        HostConfig {
            cache_dir: crate::sidecar::compiled_cache_dir(),
            ..HostConfig::default()
        },
        HostServices {
            bucket: Some(bucket),
            ..HostServices::default()
        },
    )?;
    let manifest = generation
        .dir
        .join(format!("file-store.{}.toml", std::process::id()));
    tokio::fs::write(
        &manifest,
        file_store_manifest(component, &sha256_hex(&bytes)),
    )
    .await
    .with_context(|| format!("writing {}", manifest.display()))?;
    let slot = PluginSlot::load_async(&host, &manifest).await;
    let _ = tokio::fs::remove_file(&manifest).await;
    let slot = slot?;
    let world = slot.current().manifest().world;
    anyhow::ensure!(
        world == World::StoreBackend,
        "{}: world is {world}, not store-backend",
        component.display()
    );
    Ok(slot)
}

/// The warehouse's store, or `None` with a warning on stderr saying why and how to build it.
async fn warehouse_store(generation: &Generation) -> Option<Arc<dyn Store>> {
    let opened = match crate::sidecar::locate_builtin(FILE_STORE_COMPONENT, "file-store") {
        Ok(component) => open_file_store(generation, &component).await,
        Err(error) => Err(error),
    };
    match opened {
        Ok(slot) => Some(Arc::new(slot.store())),
        Err(error) => {
            eprintln!(
                "demo: warning: starting without the warehouse's file store: {error:#}\n\
                 demo: build the plugins with `bash scripts/build-plugins` (./scripts/demo does) and start the demo again"
            );
            None
        }
    }
}

/// `gauntlet demo`.
pub async fn run(args: &DemoArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let now = i64::try_from(now).context("the system clock is out of range")?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("gauntlet-demo"));
    let generation = tokio::task::spawn_blocking({
        let data_dir = data_dir.clone();
        move || blocks::prepare(&data_dir, now)
    })
    .await
    .context("the block writer task failed")??;
    let endpoints = Arc::new(EndpointSet::new(Vec::new(), Vec::new()));
    let stores = open_stores(
        &generation.bucket_dir(),
        &generation.headers_dir(),
        &generation.names,
    )
    .await?;
    let blocks: usize = stores.iter().map(|(_, s)| s.blocks().len()).sum();
    let store_count = stores.len();
    for (name, store) in stores {
        endpoints.add_local(&name, store);
    }
    let warehouse = warehouse_store(&generation).await;
    let with_warehouse = warehouse.is_some();
    if let Some(store) = warehouse {
        endpoints.add_local(FILE_STORE_NAME, store);
    }
    let config = QuerierConfig {
        http_address: args.http_address,
        grpc_address: args.grpc_address,
        api: ApiOptions {
            engine: EngineOptions::default(),
            replica_labels: vec![REPLICA_LABEL.to_owned()],
            partial_response: true,
            max_concurrent: 20,
        },
        limits: ProxyLimits::default(),
    };
    println!(
        "Gauntlet demo: {} series in {blocks} blocks of {store_count} stores (cluster eu1, HA pair us1 with replica 0/1), 6h at 15s, bucket {}",
        generation.series,
        generation.bucket_dir().display()
    );
    if with_warehouse {
        println!(
            "  and {} series of a shop's data warehouse, 6h at 1m, from CSV and JSON Lines files in {}/ through the file-store plugin (store {FILE_STORE_NAME})",
            generation.file_series,
            files::PREFIX,
        );
    }
    println!(
        "Open http://{}/ — try  sum by (cluster) (rate(http_requests_total[5m]))",
        args.http_address
    );
    if with_warehouse {
        println!("  and  {}", files::EXAMPLE_QUERY);
    }
    querier::serve(endpoints, &config, shutdown).await
}

/// Where one generation of demo data lives.
#[derive(Debug, Clone)]
pub struct Generation {
    /// `DATA_DIR/<end ms>`.
    pub dir: PathBuf,
    /// Names of the simulated Prometheus servers (bucket prefixes and store names).
    pub names: Vec<String>,
    /// Series written as blocks (all simulated Prometheus servers).
    pub series: usize,
    /// Series in the warehouse's files.
    pub file_series: usize,
}

impl Generation {
    /// The filesystem bucket.
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.join("bucket")
    }

    /// The store gateways' index-headers.
    pub fn headers_dir(&self) -> PathBuf {
        self.dir.join("index-headers")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_store_manifest_grants_only_the_warehouse_prefix() {
        let text = file_store_manifest(std::path::Path::new("/x/file-store.wasm"), &"a".repeat(64));
        let manifest =
            crate::plugin::Manifest::parse(&text, std::path::Path::new("/tmp/file-store.toml"))
                .expect("parse");
        assert_eq!(manifest.world, World::StoreBackend);
        assert_eq!(
            manifest.capabilities.bucket_prefix,
            Some(format!("{}/", files::PREFIX))
        );
        assert!(manifest.capabilities.http_hosts.is_empty());
        assert_eq!(
            manifest.config,
            vec![(
                "external_labels".to_owned(),
                "environment=production,source=warehouse".to_owned()
            )]
        );
    }
}
