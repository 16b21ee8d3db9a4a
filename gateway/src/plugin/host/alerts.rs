//! `gauntlet:plugin/alerts`: alerts to the host's Alertmanagers. Denied unless the manifest
//! sets `capabilities.alerts` and the host role provides an
//! [`AlertSink`](crate::plugin::services::AlertSink).

use crate::plugin::bindings::host::gauntlet::plugin::alerts::{Alert, AlertError, Host};
use crate::plugin::services::AlertMessage;
use crate::plugin::state::{HostState, block_on};

/// Alerts one call may send.
const MAX_ALERTS: usize = 10_000;

impl Host for HostState {
    fn send(&mut self, alerts: Vec<Alert>) -> wasmtime::Result<Result<(), AlertError>> {
        self.enter("alerts")?;
        let sink = match (&self.ctx.alerts, self.ctx.capabilities.alerts) {
            (Some(sink), true) => sink.clone(),
            _ => {
                self.ctx.count_denied("alerts");
                return Ok(Err(AlertError::Denied));
            }
        };
        if alerts.len() > MAX_ALERTS {
            return Ok(Err(AlertError::Delivery(format!(
                "{} alerts exceed the {MAX_ALERTS} one call may send",
                alerts.len()
            ))));
        }
        let messages: Vec<AlertMessage> = alerts
            .into_iter()
            .map(|a| AlertMessage {
                labels: a.labels.into_iter().map(|l| (l.name, l.value)).collect(),
                annotations: a
                    .annotations
                    .into_iter()
                    .map(|l| (l.name, l.value))
                    .collect(),
                starts_at_ms: a.starts_at,
                ends_at_ms: a.ends_at,
                generator_url: a.generator_url,
            })
            .collect();
        let plugin = self.ctx.name.clone();
        Ok(
            match block_on(async move { sink.send(&plugin, messages).await }) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(message)) | Err(message) => Err(AlertError::Delivery(message)),
            },
        )
    }
}
