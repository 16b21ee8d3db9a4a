//! The `Store` trait: one interface for everything that answers StoreAPI requests — a remote
//! gRPC endpoint (sidecar, store gateway, receiver, another querier), a WebAssembly store
//! plugin, or an in-process store — so the querier fans out over all of them alike.
//!
//! Requests and responses are the Thanos wire messages themselves (`gauntlet_proto::thanos`),
//! so a store can be served over gRPC, and a remote one consumed, without translation; chunks
//! stay encoded end to end. Implementations must never block a thread and must turn every
//! failure into a [`StoreError`], never a panic.

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;
use gauntlet_proto::thanos::info::InfoResponse;
use gauntlet_proto::thanos::{
    LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, SeriesRequest,
    SeriesResponse,
};

/// The frames of a `Series` answer: series, warnings and hints, in the order the store sent
/// them. An `Err` item ends the stream.
pub type SeriesStream = Pin<Box<dyn Stream<Item = Result<SeriesResponse, StoreError>> + Send>>;

/// Why a store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The request itself is wrong (a bad matcher, an inverted time range).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The store cannot be reached or is not ready.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The request exceeds a limit (series, samples, bytes).
    #[error("limit exceeded: {0}")]
    ResourceExhausted(String),
    /// The caller went away.
    #[error("canceled")]
    Canceled,
    /// Anything else, e.g. corrupt data or a failed plugin.
    #[error("{0}")]
    Internal(String),
}

/// A source of series speaking the StoreAPI.
#[async_trait]
pub trait Store: Send + Sync {
    /// What the store is: external label sets, time range, component type.
    async fn info(&self) -> Result<InfoResponse, StoreError>;

    /// Streams the series matching the request's matchers with data in its time range.
    async fn series(&self, request: SeriesRequest) -> Result<SeriesStream, StoreError>;

    /// Label names of series matching the request.
    async fn label_names(
        &self,
        request: LabelNamesRequest,
    ) -> Result<LabelNamesResponse, StoreError>;

    /// Values of one label of series matching the request.
    async fn label_values(
        &self,
        request: LabelValuesRequest,
    ) -> Result<LabelValuesResponse, StoreError>;
}

impl From<StoreError> for tonic::Status {
    fn from(error: StoreError) -> Self {
        let message = error.to_string();
        match error {
            StoreError::InvalidArgument(_) => Self::invalid_argument(message),
            StoreError::Unavailable(_) => Self::unavailable(message),
            StoreError::Timeout(_) => Self::deadline_exceeded(message),
            StoreError::ResourceExhausted(_) => Self::resource_exhausted(message),
            StoreError::Canceled => Self::cancelled(message),
            StoreError::Internal(_) => Self::internal(message),
        }
    }
}

impl From<tonic::Status> for StoreError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            tonic::Code::InvalidArgument => Self::InvalidArgument(message),
            tonic::Code::Unavailable => Self::Unavailable(message),
            tonic::Code::DeadlineExceeded => Self::Timeout(message),
            tonic::Code::ResourceExhausted => Self::ResourceExhausted(message),
            tonic::Code::Cancelled => Self::Canceled,
            code => Self::Internal(format!("{code:?}: {message}")),
        }
    }
}
