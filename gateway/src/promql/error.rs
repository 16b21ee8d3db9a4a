//! Query errors in Prometheus's shape: every error has a kind (`bad_data`, `execution`,
//! `timeout`, `canceled`) and a message worded like Prometheus's.
//!
//! Must never carry anything but plain data (no sources that borrow from the query).

use thiserror::Error;

/// An error from a [`crate::promql::Queryable`] implementation.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct StorageError(pub String);

/// Why a query failed.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum QueryError {
    /// The query text does not parse or is not valid for this kind of query.
    #[error("{message}")]
    BadData {
        /// Prometheus-style message.
        message: String,
        /// Byte range in the query the error points at, when known.
        position: Option<(usize, usize)>,
    },
    /// Evaluation failed.
    #[error("{0}")]
    Execution(String),
    /// The query ran longer than the configured timeout.
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    /// The query was canceled by its caller.
    #[error("query was canceled in {0}")]
    Canceled(&'static str),
    /// A storage read failed.
    #[error("{0}")]
    Storage(#[from] StorageError),
}

impl QueryError {
    /// The Prometheus API `errorType` for this error.
    pub fn kind(&self) -> &'static str {
        match self {
            QueryError::BadData { .. } => "bad_data",
            QueryError::Execution(_) | QueryError::Storage(_) => "execution",
            QueryError::Timeout(_) => "timeout",
            QueryError::Canceled(_) => "canceled",
        }
    }

    pub(crate) fn bad(message: impl Into<String>) -> Self {
        QueryError::BadData {
            message: message.into(),
            position: None,
        }
    }

    pub(crate) fn exec(message: impl Into<String>) -> Self {
        QueryError::Execution(message.into())
    }

    /// The error Prometheus reports when the sample limit is hit.
    pub(crate) fn too_many_samples() -> Self {
        QueryError::Execution(
            "query processing would load too many samples into memory in query execution".into(),
        )
    }
}
