//! The PromQL engine: parses a query with `promql-parser`, fetches every selector's series once
//! through a [`Queryable`], and evaluates the expression over all steps at once (series-at-a-time
//! for range functions, grouped once per query for aggregations and joins).
//!
//! This module tree must never reach storage except through [`Queryable`], never panic on any
//! query text or data, and never hold more samples than [`EngineOptions::max_samples`].

mod aggregations;
mod binary;
mod durations;
mod engine;
mod error;
mod eval;
mod functions;
mod histogram;
mod storage;
mod value;

pub use engine::{CancelFlag, Engine, EngineOptions, parse_expr};
pub use error::{QueryError, StorageError};
pub use storage::{
    Chunk, MatchKind, Matcher, MemoryQueryable, Queryable, SelectHints, Selection, SeriesData,
    SeriesSet, StoredSeries,
};
pub use value::{InstantSample, Point, QueryResult, Series, Value};
