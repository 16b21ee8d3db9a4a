//! `gauntlet:plugin/clock`: the host's wall clock in milliseconds.

use crate::plugin::bindings::host::gauntlet::plugin::clock::Host;
use crate::plugin::state::HostState;

impl Host for HostState {
    fn now_millis(&mut self) -> wasmtime::Result<i64> {
        self.enter("clock")?;
        Ok(chrono::Utc::now().timestamp_millis())
    }
}
