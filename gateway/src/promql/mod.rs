//! The PromQL engine: parses a query with `promql-parser`, fetches every selector's series once
//! through a [`Queryable`], and evaluates the expression over all steps at once (series-at-a-time
//! for range functions, grouped once per query for aggregations and joins).
//!
//! This module tree must never reach storage except through [`Queryable`], never panic on any
//! query text or data, and never hold more samples than [`EngineOptions::max_samples`].
//!
//! # Using it
//!
//! ```text
//! let engine = Engine::new(EngineOptions::default());
//! let res = engine.range_query(&queryable, "sum by (job) (rate(x[5m]))", start_ms, end_ms, step_ms).await?;
//! match res.value { Value::Matrix(series) => ..., _ => ... }   // plus res.warnings / res.infos
//! ```
//!
//! # Implementing [`Queryable`]
//!
//! The engine calls [`Queryable::select`] once per selector per query (concurrently for
//! different selectors), with the matchers and the inclusive millisecond range `[start_ms,
//! end_ms]` that evaluation needs (offset, `@`, range, lookback and subqueries already
//! accounted for) plus [`SelectHints`]. Return every matching series with data in that range;
//! extra samples outside it are ignored. Series may carry XOR chunks ([`SeriesData::Chunks`],
//! decoded lazily, overlaps allowed), decoded samples ([`SeriesData::Samples`]), decoded float
//! and native histogram samples ([`SeriesData::Points`]) or samples computed when the engine
//! reads the series ([`SeriesData::Deferred`], e.g. replicas deduplicated on the fly). Each
//! label set must appear once.
//!
//! # Native histograms
//!
//! A [`Point`] (and an [`InstantSample`]) holds either a float (`v`) or a native histogram
//! (`h: Some(..)`, a [`gauntlet_tsdb::FloatHistogram`]; `v` is then 0 and meaningless). Results
//! may mix both kinds, even within one series. Staleness markers of histogram series are
//! histograms whose `sum` is the stale NaN; the engine never returns them. Non-fatal problems go into
//! [`SeriesSet::warnings`] and surface as query warnings; an `Err` fails the query with an
//! `execution` error. Results sorted by labels save the engine a sort.

mod aggregations;
mod binary;
mod durations;
mod engine;
mod error;
mod eval;
mod functions;
mod histogram;
mod storage;
mod syntax;
mod value;

pub use engine::{CancelFlag, Engine, EngineOptions, parse_expr};
pub use error::{QueryError, StorageError};
pub(crate) use storage::decode_chunks;
pub use storage::{
    Chunk, DeferredSamples, MatchKind, Matcher, MemoryQueryable, Queryable, SelectHints, Selection,
    SeriesData, SeriesSet, StoredSeries,
};
pub use value::{InstantSample, Point, PointValue, QueryResult, Series, Value};
