//! Query results: the value types a PromQL query returns (scalar, string, instant vector,
//! range vector) plus the warnings and infos collected while evaluating.
//!
//! These types are what the HTTP layer serialises; they must stay plain data with no
//! references into engine internals.

use gauntlet_tsdb::Labels;

/// One point of a series: timestamp in milliseconds and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    /// Value.
    pub v: f64,
}

/// A series with its points (a range-vector element or a range-query result series).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Series labels.
    pub labels: Labels,
    /// Points in increasing time order.
    pub points: Vec<Point>,
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantSample {
    /// Series labels.
    pub labels: Labels,
    /// Evaluation timestamp (ms).
    pub t: i64,
    /// Value.
    pub v: f64,
}

/// A query's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar at a timestamp.
    Scalar(Point),
    /// A string at a timestamp.
    String {
        /// Evaluation timestamp (ms).
        t: i64,
        /// The string.
        value: String,
    },
    /// An instant vector (instant queries).
    Vector(Vec<InstantSample>),
    /// A range vector: the result of every range query, and of instant queries for range
    /// expressions. Range-query results are sorted by labels.
    Matrix(Vec<Series>),
}

impl Value {
    /// The Prometheus API `resultType` of this value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// A successful query's value with its annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// The value.
    pub value: Value,
    /// `PromQL warning: ...` annotations, deduplicated, in first-seen order.
    pub warnings: Vec<String>,
    /// `PromQL info: ...` annotations, deduplicated, in first-seen order.
    pub infos: Vec<String>,
}
