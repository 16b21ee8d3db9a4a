//! The Prometheus TSDB data model and on-disk formats, shared by the native gateway and by
//! WebAssembly plugins.
//!
//! This crate must build for `wasm32-wasip2` as well as natively: no tokio, no threads, no
//! filesystem access of its own. Every length it reads from untrusted bytes is checked against
//! the input before it allocates.

pub mod block;
pub mod chunkenc;
pub mod histogram;
pub mod histogram_chunk;
pub mod labels;
pub mod sample;

pub use histogram::{CounterResetHint, FloatHistogram};
pub use labels::{Label, Labels, LabelsBuilder};
pub use sample::{Sample, is_stale_nan, stale_nan};
