//! Query results: the value types a PromQL query returns (scalar, string, instant vector,
//! range vector) plus the warnings and infos collected while evaluating.
//!
//! These types are what the HTTP layer serialises; they must stay plain data with no
//! references into engine internals.

use std::sync::Arc;

use gauntlet_tsdb::{FloatHistogram, Labels};

/// One point of a series: timestamp in milliseconds and either a float value or a native
/// histogram (then `v` is 0 and meaningless).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    /// Float value (when `h` is `None`).
    pub v: f64,
    /// Native histogram value, if this is a histogram sample.
    pub h: Option<Arc<FloatHistogram>>,
}

impl Point {
    /// A float point.
    pub fn float(t: i64, v: f64) -> Self {
        Self { t, v, h: None }
    }

    /// A histogram point.
    pub fn histogram(t: i64, h: Arc<FloatHistogram>) -> Self {
        Self {
            t,
            v: 0.0,
            h: Some(h),
        }
    }

    /// A point at `t` holding `value`.
    pub fn at(t: i64, value: impl Into<PointValue>) -> Self {
        match value.into() {
            PointValue::Float(v) => Self::float(t, v),
            PointValue::Histogram(h) => Self::histogram(t, h),
        }
    }

    /// True for a staleness marker (a float marker, or a histogram whose sum is the marker).
    pub fn is_stale(&self) -> bool {
        match &self.h {
            Some(h) => gauntlet_tsdb::is_stale_nan(h.sum),
            None => gauntlet_tsdb::is_stale_nan(self.v),
        }
    }
}

/// A point's value without its timestamp.
#[derive(Debug, Clone, PartialEq)]
pub enum PointValue {
    /// A float.
    Float(f64),
    /// A native histogram.
    Histogram(Arc<FloatHistogram>),
}

impl From<f64> for PointValue {
    fn from(v: f64) -> Self {
        PointValue::Float(v)
    }
}

impl From<FloatHistogram> for PointValue {
    fn from(h: FloatHistogram) -> Self {
        PointValue::Histogram(Arc::new(h))
    }
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
    /// Float value (when `h` is `None`).
    pub v: f64,
    /// Native histogram value, if this is a histogram sample.
    pub h: Option<Arc<FloatHistogram>>,
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
