//! The store gateway's metrics on `/metrics`: blocks loaded, object-store requests by
//! operation, cache lookups by outcome. Registered once per process in the shared registry.

use std::sync::OnceLock;

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts};

/// The store gateway's metrics.
pub struct BucketMetrics {
    /// `gauntlet_bucket_store_blocks_loaded`.
    pub blocks_loaded: IntGauge,
    /// `gauntlet_bucket_store_objstore_requests_total{operation}`.
    pub objstore_requests: IntCounterVec,
    /// `gauntlet_bucket_store_objstore_bytes_total{operation}`.
    pub objstore_bytes: IntCounterVec,
    /// `gauntlet_bucket_store_cache_requests_total{cache,item_type,outcome}`.
    pub cache_requests: IntCounterVec,
    /// `gauntlet_bucket_store_cache_bytes{cache}`.
    pub cache_bytes: IntGaugeVec,
    /// `gauntlet_bucket_store_block_load_failures_total`.
    pub block_load_failures: IntCounterVec,
}

impl BucketMetrics {
    /// The process-wide instance, registered on first use.
    pub fn get() -> &'static Self {
        static METRICS: OnceLock<BucketMetrics> = OnceLock::new();
        METRICS.get_or_init(|| {
            let registry = crate::metrics::registry();
            let m = Self::new();
            // A name already taken (never the case in one process) leaves the metric unexported.
            let _ = registry.register(Box::new(m.blocks_loaded.clone()));
            let _ = registry.register(Box::new(m.objstore_requests.clone()));
            let _ = registry.register(Box::new(m.objstore_bytes.clone()));
            let _ = registry.register(Box::new(m.cache_requests.clone()));
            let _ = registry.register(Box::new(m.cache_bytes.clone()));
            let _ = registry.register(Box::new(m.block_load_failures.clone()));
            m
        })
    }

    #[allow(clippy::expect_used)]
    fn new() -> Self {
        // The names and label sets are constants: construction cannot fail.
        Self {
            blocks_loaded: IntGauge::new(
                "gauntlet_bucket_store_blocks_loaded",
                "Number of blocks the store gateway serves.",
            )
            .expect("valid metric"),
            objstore_requests: IntCounterVec::new(
                Opts::new(
                    "gauntlet_bucket_store_objstore_requests_total",
                    "Object storage requests made by the store gateway, by operation.",
                ),
                &["operation"],
            )
            .expect("valid metric"),
            objstore_bytes: IntCounterVec::new(
                Opts::new(
                    "gauntlet_bucket_store_objstore_bytes_total",
                    "Bytes read from object storage by the store gateway, by operation.",
                ),
                &["operation"],
            )
            .expect("valid metric"),
            cache_requests: IntCounterVec::new(
                Opts::new(
                    "gauntlet_bucket_store_cache_requests_total",
                    "Cache lookups of the store gateway by cache, item type and outcome (hit, miss).",
                ),
                &["cache", "item_type", "outcome"],
            )
            .expect("valid metric"),
            cache_bytes: IntGaugeVec::new(
                Opts::new(
                    "gauntlet_bucket_store_cache_bytes",
                    "Bytes held by each cache of the store gateway.",
                ),
                &["cache"],
            )
            .expect("valid metric"),
            block_load_failures: IntCounterVec::new(
                Opts::new(
                    "gauntlet_bucket_store_block_load_failures_total",
                    "Blocks the store gateway could not load, by reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
        }
    }
}
