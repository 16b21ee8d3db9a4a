//! `gauntlet:plugin/metrics`: counters and gauges a plugin creates, exposed on `/metrics` as
//! `gauntlet_plugin_counter_total` / `gauntlet_plugin_gauge` with the plugin's name. Names are
//! validated and capped per plugin so a plugin cannot blow up the host's series count.

use crate::plugin::bindings::host::gauntlet::plugin::metrics::{Host, MetricError};
use crate::plugin::metrics::plugin_metrics;
use crate::plugin::state::HostState;

/// Distinct metric names one plugin may create.
pub const MAX_METRIC_NAMES: usize = 100;

impl HostState {
    fn admit_metric(&self, name: &str) -> Result<(), MetricError> {
        if name.is_empty()
            || name.len() > 128
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        {
            return Err(MetricError::InvalidName(name.chars().take(128).collect()));
        }
        let Ok(mut names) = self.ctx.metric_names.lock() else {
            return Err(MetricError::TooManyMetrics(0));
        };
        if names.contains(name) {
            return Ok(());
        }
        if names.len() >= MAX_METRIC_NAMES {
            self.ctx.count_denied("metrics");
            return Err(MetricError::TooManyMetrics(MAX_METRIC_NAMES as u32));
        }
        names.insert(name.to_owned());
        Ok(())
    }
}

impl Host for HostState {
    fn counter_add(
        &mut self,
        name: String,
        delta: f64,
    ) -> wasmtime::Result<Result<(), MetricError>> {
        self.enter("metrics")?;
        if !(delta >= 0.0 && delta.is_finite()) {
            return Ok(Err(MetricError::NegativeIncrement));
        }
        if let Err(e) = self.admit_metric(&name) {
            return Ok(Err(e));
        }
        plugin_metrics()
            .user_counters
            .with_label_values(&[self.ctx.name.as_str(), name.as_str()])
            .inc_by(delta);
        Ok(Ok(()))
    }

    fn gauge_set(&mut self, name: String, value: f64) -> wasmtime::Result<Result<(), MetricError>> {
        self.enter("metrics")?;
        if let Err(e) = self.admit_metric(&name) {
            return Ok(Err(e));
        }
        plugin_metrics()
            .user_gauges
            .with_label_values(&[self.ctx.name.as_str(), name.as_str()])
            .set(value);
        Ok(Ok(()))
    }
}
