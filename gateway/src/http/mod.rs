//! HTTP serving shared by every role: `/-/healthy`, `/-/ready`, `/metrics`, and the server loop
//! with graceful shutdown. Role-specific routes (the Prometheus API, the UI) are merged in by
//! the role.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics;
use crate::shutdown::Shutdown;

/// Whether the role has finished starting (`/-/ready` answers 200) — shared with the role.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The routes every role serves.
pub fn common_routes(readiness: Readiness) -> Router {
    Router::new()
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(readiness)
}

async fn healthy() -> &'static str {
    "Gauntlet is Healthy.\n"
}

async fn ready(State(readiness): State<Readiness>) -> impl IntoResponse {
    if readiness.is_ready() {
        (StatusCode::OK, "Gauntlet is Ready.\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Gauntlet is not ready yet.\n")
    }
}

async fn metrics_text() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], metrics::render())
}

/// Binds `address`, naming the flag in the error so a busy or invalid port is easy to fix.
pub async fn bind(address: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {flag} {address}: {error}"))
}

/// Serves `router` on `listener` until `shutdown` is requested, then lets in-flight requests
/// finish.
pub async fn serve(listener: TcpListener, router: Router, shutdown: Shutdown) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown.requested()).await
}
