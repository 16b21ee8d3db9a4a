//! Prometheus TSDB blocks: the directory a block lives in (`meta.json`, `index`, `chunks/`,
//! `tombstones`) and the codecs for each file.

pub mod meta;

pub use meta::{BlockMeta, BlockStats, ThanosMeta};
