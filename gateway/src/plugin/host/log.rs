//! `gauntlet:plugin/log`: plugin log lines into the host's log, tagged with the plugin name,
//! truncated to 4 KiB and capped per call. It never fails the plugin.

use crate::plugin::bindings::host::gauntlet::plugin::log::{Host, Level};
use crate::plugin::state::{HostState, LOG_LINES_PER_CALL};

const MAX_LINE: usize = 4096;

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.enter("log")?;
        self.log_lines += 1;
        if self.log_lines > LOG_LINES_PER_CALL {
            return Ok(());
        }
        let mut message = message;
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let plugin = self.ctx.name.as_str();
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }
}
