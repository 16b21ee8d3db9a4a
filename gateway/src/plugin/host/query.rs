//! `gauntlet:plugin/query`: PromQL against the host, for rule evaluation. Denied unless the
//! manifest sets `capabilities.query` and the host role provides a
//! [`QueryBackend`](crate::plugin::services::QueryBackend).

use crate::plugin::bindings::host::gauntlet::plugin::query::{Host, QueryError, VectorSample};
use crate::plugin::bindings::host::gauntlet::plugin::types::Label;
use crate::plugin::services::QueryFailure;
use crate::plugin::state::{HostState, block_on};

impl Host for HostState {
    fn instant(
        &mut self,
        expr: String,
        time: i64,
    ) -> wasmtime::Result<Result<Vec<VectorSample>, QueryError>> {
        self.enter("query")?;
        let backend = match (&self.ctx.query, self.ctx.capabilities.query) {
            (Some(backend), true) => backend.clone(),
            _ => {
                self.ctx.count_denied("query");
                return Ok(Err(QueryError::Denied));
            }
        };
        let result = match block_on(async move { backend.instant(&expr, time).await }) {
            Ok(result) => result,
            Err(message) => return Ok(Err(QueryError::Execution(message))),
        };
        Ok(match result {
            Ok(samples) => Ok(samples
                .into_iter()
                .map(|s| VectorSample {
                    labels: s
                        .labels
                        .into_iter()
                        .map(|(name, value)| Label { name, value })
                        .collect(),
                    timestamp: s.timestamp_ms,
                    value: s.value,
                })
                .collect()),
            Err(QueryFailure::BadQuery(m)) => Err(QueryError::BadQuery(m)),
            Err(QueryFailure::Execution(m)) => Err(QueryError::Execution(m)),
        })
    }
}
