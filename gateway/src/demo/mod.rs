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

pub mod blocks;
pub mod data;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;

use crate::cli::DemoArgs;
use crate::http::api::ApiOptions;
use crate::promql::EngineOptions;
use crate::query::endpoints::EndpointSet;
use crate::query::proxy::ProxyLimits;
use crate::query::querier::{self, QuerierConfig};
use crate::shutdown::Shutdown;
use crate::store::bucket::{BucketStore, BucketStoreConfig};

/// The label that tells the demo's HA replicas apart.
pub const REPLICA_LABEL: &str = "replica";

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
    for (name, store) in stores {
        endpoints.add_local(&name, store);
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
        "Gauntlet demo: {} series in {blocks} blocks of 3 stores (cluster eu1, HA pair us1 with replica 0/1), 6h at 15s, bucket {}",
        generation.series,
        generation.bucket_dir().display()
    );
    println!(
        "Open http://{}/ — try  sum by (cluster) (rate(http_requests_total[5m]))",
        args.http_address
    );
    querier::serve(endpoints, &config, shutdown).await
}

/// Where one generation of demo data lives.
#[derive(Debug, Clone)]
pub struct Generation {
    /// `DATA_DIR/<end ms>`.
    pub dir: PathBuf,
    /// Names of the simulated Prometheus servers (bucket prefixes and store names).
    pub names: Vec<String>,
    /// Series written (all stores).
    pub series: usize,
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
