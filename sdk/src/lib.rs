//! The crate Gauntlet plugin authors depend on: bindings for the `gauntlet:plugin` WIT package
//! and helpers for what every store plugin does — building sorted label sets, evaluating
//! matchers, encoding samples into Prometheus XOR chunks and cutting answers into batches.
//!
//! Build plugins for `wasm32-wasip2`. The host imports are generated once, in [`bindings`];
//! [`store_backend`] holds the export glue of the `store-backend` world and its
//! `store_backend::export_store_backend!` macro. Plugins of the other worlds (`sidecar`,
//! `compactor`, `ruler`) generate their export glue with `wit_bindgen::generate!` over [`WIT`],
//! mapping the shared interfaces to [`bindings`] with `with:`, because wit-bindgen's export
//! macros of two worlds cannot live in one crate. This crate must never hide a
//! host error: every helper returns a [`PluginError`] the author can pass back to the host.

#![warn(missing_docs)]

pub mod batch;
pub mod chunks;
pub mod config;
pub mod matchers;

/// Host imports and shared types, generated once from `wit/` (world `host`).
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "host",
        generate_all,
    });
}

/// Export glue for the `store-backend` world. Implement
/// [`store_backend::exports::gauntlet::plugin::store::Guest`] and
/// [`store_backend::exports::gauntlet::plugin::lifecycle::Guest`], and [`PackedStream`] for
/// your series stream (an empty `impl` packs what `next-batch` returns), then call
/// `gauntlet_plugin_sdk::export_store_backend!(YourType);`.
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod store_backend {
    wit_bindgen::generate!({
        path: "../wit",
        world: "store-backend",
        with: {
            "gauntlet:plugin/types@0.1.1": crate::bindings::gauntlet::plugin::types,
            "gauntlet:plugin/log@0.1.1": crate::bindings::gauntlet::plugin::log,
            "gauntlet:plugin/metrics@0.1.1": crate::bindings::gauntlet::plugin::metrics,
            "gauntlet:plugin/clock@0.1.1": crate::bindings::gauntlet::plugin::clock,
            "gauntlet:plugin/bucket@0.1.1": crate::bindings::gauntlet::plugin::bucket,
            "gauntlet:plugin/http@0.1.1": crate::bindings::gauntlet::plugin::http,
            "gauntlet:plugin/query@0.1.1": crate::bindings::gauntlet::plugin::query,
            "gauntlet:plugin/alerts@0.1.1": crate::bindings::gauntlet::plugin::alerts,
        },
        pub_export_macro: true,
        export_macro_name: "export_store_backend",
        default_bindings_module: "gauntlet_plugin_sdk::store_backend",
    });
}

pub use batch::PackedStream;
pub use bindings::gauntlet::plugin::types::{
    Chunk, ChunkEncoding, Label, MatchOp, Matcher, PluginError, Series, TimeRange,
};
/// Where the WIT package lives relative to this crate, for plugins generating other worlds.
pub const WIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../wit");

pub use bindings::gauntlet::plugin::{alerts, bucket, clock, http, log, metrics, query};
/// The XOR chunk codec shared with the host (`gauntlet_tsdb::chunkenc`).
pub use gauntlet_tsdb::chunkenc;

/// Builds a label set sorted by name from `(name, value)` pairs; pairs with an empty value
/// are dropped and a repeated name keeps its last value.
pub fn labels<N: AsRef<str>, V: AsRef<str>>(pairs: &[(N, V)]) -> Vec<Label> {
    let mut out: Vec<Label> = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        let (name, value) = (name.as_ref(), value.as_ref());
        if value.is_empty() {
            continue;
        }
        if let Some(existing) = out.iter_mut().find(|l| l.name == name) {
            existing.value = value.to_owned();
        } else {
            out.push(Label {
                name: name.to_owned(),
                value: value.to_owned(),
            });
        }
    }
    sort_labels(&mut out);
    out
}

/// Sorts a label set by name (the order the host requires).
pub fn sort_labels(labels: &mut [Label]) {
    labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
}

/// Compares two sorted label sets the way Prometheus orders series.
pub fn compare_labels(a: &[Label], b: &[Label]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b.iter()) {
        let ord = x.name.cmp(&y.name).then_with(|| x.value.cmp(&y.value));
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

/// Writes a log line through the host at the given level.
pub fn log(level: log::Level, message: &str) {
    log::log(level, message);
}

impl From<bucket::BucketError> for PluginError {
    fn from(error: bucket::BucketError) -> Self {
        match error {
            bucket::BucketError::NotFound(key) => Self::Unavailable(format!("not found: {key}")),
            bucket::BucketError::Denied(m) => Self::Denied(format!("bucket: {m}")),
            bucket::BucketError::InvalidKey(m) => Self::Denied(format!("bucket key: {m}")),
            bucket::BucketError::TooLarge(n) => {
                Self::ResourceExhausted(format!("bucket object of {n} bytes is too large"))
            }
            bucket::BucketError::Io(m) => Self::Unavailable(format!("bucket: {m}")),
        }
    }
}

impl From<http::HttpError> for PluginError {
    fn from(error: http::HttpError) -> Self {
        match error {
            http::HttpError::Denied(m) => Self::Denied(format!("http: {m}")),
            http::HttpError::InvalidRequest(m) => Self::InvalidArgument(format!("http: {m}")),
            http::HttpError::Transport(m) => Self::Unavailable(format!("http: {m}")),
            http::HttpError::Timeout => Self::Unavailable("http: timed out".to_owned()),
            http::HttpError::TooLarge(n) => {
                Self::ResourceExhausted(format!("http: response of {n} bytes is too large"))
            }
        }
    }
}
