//! Gauntlet: a global query layer for Prometheus.
//!
//! One binary hosts every role (querier, store gateway, sidecar, receiver, compactor, ruler,
//! demo); `cli` picks the role, the other modules are the pieces roles are built from.

pub mod allocator;
pub mod build_info;
pub mod cli;
pub mod compact;
pub mod demo;
pub mod duration;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod objstore;
pub mod plugin;
pub mod promql;
pub mod query;
pub mod shutdown;
pub mod sidecar;
pub mod store;
pub mod telemetry;
