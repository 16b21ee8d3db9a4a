//! Services the host offers plugins beyond storage: PromQL evaluation for the `query` import
//! and alert delivery for the `alerts` import. The roles that have them (the querier's engine,
//! the ruler's Alertmanager client) implement these traits; the plugin host never evaluates
//! PromQL or talks to Alertmanager itself.

use async_trait::async_trait;

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSample {
    /// Labels, sorted by name.
    pub labels: Vec<(String, String)>,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// The value.
    pub value: f64,
}

/// Evaluates PromQL for plugins.
#[async_trait]
pub trait QueryBackend: Send + Sync {
    /// Evaluates `expr` at `time_ms`; a scalar is one sample without labels. `Err` carries a
    /// message for the plugin (bad query or failed evaluation).
    async fn instant(&self, expr: &str, time_ms: i64) -> Result<Vec<VectorSample>, QueryFailure>;
}

/// Why a query for a plugin failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryFailure {
    /// The expression is not valid PromQL or not a vector/scalar.
    #[error("bad query: {0}")]
    BadQuery(String),
    /// Evaluation failed.
    #[error("execution: {0}")]
    Execution(String),
}

/// An alert as a plugin sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertMessage {
    /// Identifying labels, including `alertname`.
    pub labels: Vec<(String, String)>,
    /// Annotations.
    pub annotations: Vec<(String, String)>,
    /// Start, milliseconds.
    pub starts_at_ms: i64,
    /// End, milliseconds, when resolved.
    pub ends_at_ms: Option<i64>,
    /// Link to the expression.
    pub generator_url: String,
}

/// Delivers alerts plugins send.
#[async_trait]
pub trait AlertSink: Send + Sync {
    /// Queues alerts from plugin `plugin` for delivery.
    async fn send(&self, plugin: &str, alerts: Vec<AlertMessage>) -> Result<(), String>;
}
