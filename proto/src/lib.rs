//! Protobuf messages and gRPC services for the Thanos StoreAPI and for Prometheus remote
//! read/write, generated at build time from the `.proto` files in this crate.
//!
//! The `.proto` files are the contract: they keep upstream's package names, message names,
//! field numbers and enum values (Thanos v0.39, Prometheus v3.14) so Gauntlet interoperates
//! with real Thanos and Prometheus peers. This crate must never add logic beyond the generated
//! code, and a field must never be renumbered or reused. Lints are silenced only on the
//! generated modules below.
//!
//! | module | proto package | what it carries |
//! |---|---|---|
//! | [`thanos`] | `thanos` | StoreAPI: `Store` and `WriteableStore` services, series, chunks, matchers |
//! | [`thanos::info`] | `thanos.info` | the `Info` service: external labels, time range, served APIs |
//! | [`prometheus`] | `prometheus` | remote write 1.0 and remote read |
//! | [`prometheus_copy`] | `prometheus_copy` | Thanos's copy of the Prometheus types, used by [`thanos::WriteRequest`] |

/// Package `thanos`: the StoreAPI.
#[allow(clippy::all, clippy::pedantic)]
pub mod thanos {
    include!(concat!(env!("OUT_DIR"), "/thanos.rs"));

    /// Package `thanos.info`: what an endpoint is and which APIs it serves.
    pub mod info {
        include!(concat!(env!("OUT_DIR"), "/thanos.info.rs"));
    }
}

/// Package `prometheus`: Prometheus remote write 1.0 and remote read.
#[allow(clippy::all, clippy::pedantic)]
pub mod prometheus {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// Package `prometheus_copy`: Thanos's copy of the Prometheus types (labels are
/// [`thanos::Label`]). Only [`thanos::WriteRequest`] uses it.
#[allow(clippy::all, clippy::pedantic)]
pub mod prometheus_copy {
    include!(concat!(env!("OUT_DIR"), "/prometheus_copy.rs"));
}
