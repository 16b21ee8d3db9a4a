//! Shared test harness: a querier on a loopback port over in-process stores.

use std::sync::Arc;

use gauntlet::http::Readiness;
use gauntlet::http::api::ApiOptions;
use gauntlet::promql::EngineOptions;
use gauntlet::query::endpoints::EndpointSet;
use gauntlet::query::proxy::{ProxyLimits, ProxyStore};
use gauntlet::query::querier::router;
use gauntlet::query::store::Store;
use gauntlet::shutdown::{self, ShutdownTrigger};

/// A querier serving HTTP on a loopback port; stops when dropped.
pub struct Querier {
    pub base: String,
    pub client: reqwest::Client,
    _stop: ShutdownTrigger,
}

impl Querier {
    /// Starts a querier over `stores` with replica label `replica`.
    pub async fn start(
        stores: Vec<(&str, Arc<dyn Store>)>,
        limits: ProxyLimits,
    ) -> anyhow::Result<Self> {
        let endpoints = Arc::new(EndpointSet::new(Vec::new(), Vec::new()));
        for (name, store) in stores {
            endpoints.add_local(name, store);
        }
        endpoints.refresh().await;
        let proxy = Arc::new(ProxyStore::new(endpoints, limits));
        let api = ApiOptions {
            engine: EngineOptions::default(),
            replica_labels: vec!["replica".into()],
            partial_response: true,
            max_concurrent: 4,
        };
        let readiness = Readiness::default();
        readiness.set_ready(true);
        let listener = gauntlet::http::bind("127.0.0.1:0".parse()?, "--http-address").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, shutdown) = shutdown::channel();
        tokio::spawn(gauntlet::http::serve(
            listener,
            router(proxy, api, readiness),
            shutdown,
        ));
        Ok(Self {
            base,
            client: reqwest::Client::new(),
            _stop: stop,
        })
    }
}
