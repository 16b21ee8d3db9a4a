//! `gauntlet demo`: the querier, its UI and in-process stores with generated data, in one
//! process with no external services.
//!
//! Three stores stand in for three Prometheus servers with sidecars: cluster `eu1`, and cluster
//! `us1` as an HA pair (`replica` 0 and 1) with outages in each replica, so deduplication and the
//! Stores page have something to show. Data covers the last six hours at 15 s.

pub mod data;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::cli::DemoArgs;
use crate::http::api::ApiOptions;
use crate::promql::EngineOptions;
use crate::query::endpoints::EndpointSet;
use crate::query::proxy::ProxyLimits;
use crate::query::querier::{self, QuerierConfig};
use crate::shutdown::Shutdown;
use crate::store::memory::MemoryStore;

/// The label that tells the demo's HA replicas apart.
pub const REPLICA_LABEL: &str = "replica";

/// Builds the demo's stores: one [`MemoryStore`] per generated Prometheus replica, named after
/// its external labels.
pub fn stores(end_ms: i64) -> anyhow::Result<Vec<(String, MemoryStore)>> {
    data::generate(data::DemoShape::six_hours_until(end_ms))
        .into_iter()
        .map(|replica| {
            let name = format!(
                "prometheus-{}-{}",
                replica.external_labels.get("cluster").unwrap_or("unknown"),
                replica.external_labels.get(REPLICA_LABEL).unwrap_or("0")
            );
            let store =
                MemoryStore::from_samples(replica.external_labels, "sidecar", replica.series)
                    .with_context(|| format!("encoding the demo data of {name}"))?;
            Ok((name, store))
        })
        .collect()
}

/// `gauntlet demo`.
pub async fn run(args: &DemoArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let now = i64::try_from(now).context("the system clock is out of range")?;
    let endpoints = Arc::new(EndpointSet::new(Vec::new(), Vec::new()));
    let stores = stores(now)?;
    let series: usize = stores.iter().map(|(_, store)| store.series_count()).sum();
    for (name, store) in stores {
        endpoints.add_local(&name, Arc::new(store));
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
        "Gauntlet demo: {series} series in 3 stores (cluster eu1, HA pair us1 with replica 0/1), last 6h at 15s"
    );
    println!(
        "Open http://{}/ — try  sum by (cluster) (rate(http_requests_total[5m]))",
        args.http_address
    );
    querier::serve(endpoints, &config, shutdown).await
}
