//! The web UI: a query page and a Stores page, served from assets embedded in the binary (no
//! CDN, no files read at run time). The pages only call this server's `/api/v1` endpoints.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("../../ui/src/index.html");

/// Embedded assets: name, content type, body.
const ASSETS: [(&str, &str, &str); 4] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/src/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/src/style.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!(concat!(env!("OUT_DIR"), "/uPlot.iife.min.js")),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!(concat!(env!("OUT_DIR"), "/uPlot.min.css")),
    ),
];

/// Routes of the UI: `/` redirects to the query page; `/graph` and `/stores` are the pages.
pub fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/graph") }))
        .route("/graph", get(index))
        .route("/stores", get(index))
        .route("/assets/{name}", get(asset))
}

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(asset, _, _)| *asset == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}
