//! The querier role assembled: endpoint set, fan-out proxy, PromQL engine, Prometheus HTTP API,
//! web UI, and the StoreAPI on gRPC so other queriers can stack on this one.
//!
//! Used by `gauntlet query` and by `gauntlet demo`. Start-up never fails because an endpoint is
//! unreachable; only unusable listen addresses are fatal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use super::endpoints::EndpointSet;
use super::proxy::{ProxyLimits, ProxyStore};
use crate::cli::QueryArgs;
use crate::grpc;
use crate::http::api::{ApiOptions, ApiState};
use crate::http::{self, Readiness};
use crate::promql::EngineOptions;
use crate::shutdown::Shutdown;

/// Everything the querier needs besides its endpoints.
#[derive(Debug, Clone)]
pub struct QuerierConfig {
    pub http_address: SocketAddr,
    pub grpc_address: SocketAddr,
    pub api: ApiOptions,
    pub limits: ProxyLimits,
}

impl QuerierConfig {
    /// The configuration `gauntlet query` flags describe.
    pub fn from_args(args: &QueryArgs) -> Self {
        let max_samples = usize::try_from(args.max_samples).unwrap_or(usize::MAX);
        Self {
            http_address: args.server.http_address,
            grpc_address: args.server.grpc_address,
            api: ApiOptions {
                engine: EngineOptions {
                    lookback_delta: args.lookback_delta,
                    max_samples,
                    timeout: args.timeout,
                    ..EngineOptions::default()
                },
                replica_labels: args.replica_labels.clone(),
                partial_response: args.partial_response_enabled(),
                max_concurrent: args.max_concurrent,
            },
            limits: ProxyLimits {
                response_timeout: (args.store_response_timeout > Duration::ZERO)
                    .then_some(args.store_response_timeout),
                series_per_store: args.request_series_limit,
                samples_per_store: args.request_samples_limit,
            },
        }
    }
}

/// `gauntlet query`.
pub async fn run(args: &QueryArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    let endpoints = Arc::new(EndpointSet::new(
        args.endpoints.clone(),
        args.endpoint_sd_files.clone(),
    ));
    serve(endpoints, &QuerierConfig::from_args(args), shutdown).await
}

/// Serves a querier over `endpoints` until `shutdown`.
pub async fn serve(
    endpoints: Arc<EndpointSet>,
    config: &QuerierConfig,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let http_listener = http::bind(config.http_address, "--http-address").await?;
    let grpc_listener = http::bind(config.grpc_address, "--grpc-address").await?;
    let readiness = Readiness::default();
    let proxy = Arc::new(ProxyStore::new(endpoints.clone(), config.limits));
    let router = router(proxy.clone(), config.api.clone(), readiness.clone());

    tracing::info!(
        http = %config.http_address,
        grpc = %config.grpc_address,
        endpoints = endpoints.endpoints().len(),
        "starting querier"
    );
    endpoints.refresh().await;
    tokio::spawn(endpoints.clone().run(shutdown.clone()));
    let grpc_server = tokio::spawn(grpc::serve(grpc_listener, proxy, shutdown.clone()));
    readiness.set_ready(true);
    tracing::info!(url = %format!("http://{}/", config.http_address), "querier ready");
    http::serve(http_listener, router, shutdown).await?;
    grpc_server.await??;
    Ok(())
}

/// All HTTP routes of a querier: API, UI, health and metrics.
pub fn router(proxy: Arc<ProxyStore>, api: ApiOptions, readiness: Readiness) -> Router {
    http::common_routes(readiness)
        .merge(http::api::routes(Arc::new(ApiState::new(api, proxy))))
        .merge(http::ui::routes())
}
