//! The process-wide metrics registry exposed on `/metrics` in Prometheus text format.
//!
//! Every role registers its metrics here; `gauntlet_build_info` and the standard `process_*`
//! metrics are always present.

use std::sync::OnceLock;

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::build_info;

/// The registry every component registers its metrics in.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let registry = Registry::new();
        register_build_info(&registry);
        #[cfg(target_os = "linux")]
        {
            let _ = registry
                .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        }
        registry
    })
}

fn register_build_info(registry: &Registry) {
    let opts = Opts::new(
        "gauntlet_build_info",
        "A metric with a constant '1' value labeled by version and the Rust version it requires.",
    );
    let Ok(gauge) = IntGaugeVec::new(opts, &["version", "rustversion"]) else {
        return;
    };
    gauge.with_label_values(&[build_info::VERSION, build_info::RUST_VERSION]).set(1);
    let _ = registry.register(Box::new(gauge));
}

/// Renders every registered metric in the Prometheus text exposition format (0.0.4).
pub fn render() -> String {
    let families = registry().gather();
    let mut buffer = Vec::new();
    // Encoding into a Vec cannot fail for the text format except on invalid metric data, which
    // the registry already rejected at registration.
    let _ = TextEncoder::new().encode(&families, &mut buffer);
    String::from_utf8(buffer).unwrap_or_default()
}

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
