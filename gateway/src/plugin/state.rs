//! What a plugin instance's wasmtime `Store` carries: its WASI context (deny by default),
//! resource table, limiter, per-call host-call counter, and the shared [`PluginContext`]
//! (capabilities, limits, services the host grants it).
//!
//! Every host import goes through [`HostState::enter`], which counts the call and traps the
//! plugin once it exceeds its per-call budget; nothing here may block without a timeout.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bucket::Bucket;
use super::limits::PluginLimiter;
use super::manifest::{Capabilities, Limits, World};
use super::metrics::plugin_metrics;
use super::services::{AlertSink, QueryBackend};

/// A plugin exceeded the number of host calls one call may make; raised as a trap.
#[derive(Debug, thiserror::Error)]
#[error("plugin made more than {limit} host calls in one call")]
pub struct HostCallBudgetExceeded {
    /// The budget.
    pub limit: u64,
}

/// Lines one call may log before further lines are dropped.
pub const LOG_LINES_PER_CALL: u32 = 1_000;

/// What every instance of one loaded plugin shares.
pub struct PluginContext {
    /// Manifest name.
    pub name: String,
    /// Manifest world.
    pub world: World,
    /// Granted capabilities.
    pub capabilities: Capabilities,
    /// Limits.
    pub limits: Limits,
    /// The bucket scoped to the granted prefix, if granted and the host has one.
    pub bucket: Option<Arc<dyn Bucket>>,
    /// HTTP client for the `http` import (no redirects).
    pub http: reqwest::Client,
    /// PromQL backend for the `query` import, if granted and the host has one.
    pub query: Option<Arc<dyn QueryBackend>>,
    /// Alert sink for the `alerts` import, if granted and the host has one.
    pub alerts: Option<Arc<dyn AlertSink>>,
    /// Names of metrics the plugin created (capped).
    pub metric_names: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for PluginContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginContext")
            .field("name", &self.name)
            .field("world", &self.world)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

impl PluginContext {
    /// Counts a host call refused for lack of a capability.
    pub fn count_denied(&self, capability: &str) {
        plugin_metrics()
            .denied
            .with_label_values(&[self.name.as_str(), capability])
            .inc();
    }
}

/// The data of one plugin instance's `Store`.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: PluginLimiter,
    pub(crate) ctx: Arc<PluginContext>,
    pub(crate) host_calls: u64,
    pub(crate) log_lines: u32,
}

impl HostState {
    /// State for a new instance: WASI with only what the capabilities grant.
    pub(crate) fn new(ctx: Arc<PluginContext>, memory_limit: usize) -> Result<Self, String> {
        let mut builder = WasiCtx::builder();
        if ctx.capabilities.inherit_env {
            for (name, value) in std::env::vars_os() {
                if let (Some(name), Some(value)) = (name.to_str(), value.to_str())
                    && !ctx.capabilities.env.contains_key(name)
                {
                    builder.env(name, value);
                }
            }
        }
        for (name, value) in &ctx.capabilities.env {
            builder.env(name, value);
        }
        let dirs = ctx
            .capabilities
            .read_only_dirs
            .iter()
            .map(|dir| (dir, wasmtime_wasi::FsPerms::ReadOnly))
            .chain(
                ctx.capabilities
                    .writable_dirs
                    .iter()
                    .map(|dir| (dir, wasmtime_wasi::FsPerms::ReadWrite)),
            );
        for (dir, perms) in dirs {
            let guest = dir.to_string_lossy().into_owned();
            builder
                .preopened_dir(dir, guest, perms)
                .map_err(|e| format!("preopening {}: {e}", dir.display()))?;
        }
        if !ctx.capabilities.sockets.is_empty() {
            let allowed = ctx.capabilities.sockets.clone();
            builder.allow_tcp(true);
            builder.socket_addr_check(move |addr, _| {
                let ok = allowed.contains(&addr);
                Box::pin(async move { ok })
            });
        }
        Ok(Self {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limiter: PluginLimiter::new(memory_limit),
            ctx,
            host_calls: 0,
            log_lines: 0,
        })
    }

    /// Resets the per-call counters (at the start of each call into the plugin).
    pub(crate) fn start_call(&mut self) {
        self.host_calls = 0;
        self.log_lines = 0;
        self.limiter.clear_refusal();
    }

    /// Counts one host call; traps the plugin past its budget.
    pub(crate) fn enter(&mut self, interface: &'static str) -> wasmtime::Result<()> {
        self.host_calls += 1;
        plugin_metrics()
            .host_calls
            .with_label_values(&[self.ctx.name.as_str(), interface])
            .inc();
        if self.host_calls > self.ctx.limits.host_calls_per_call {
            return Err(wasmtime::Error::new(HostCallBudgetExceeded {
                limit: self.ctx.limits.host_calls_per_call,
            }));
        }
        Ok(())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Runs a future to completion from a host import (which runs on a blocking thread).
pub(crate) fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, String> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(handle.block_on(future)),
        Err(_) => Err("no async runtime available to the plugin host".to_owned()),
    }
}

/// Like [`block_on`], but the future runs as a task on the runtime's workers and the
/// blocking thread wakes once, for the result. For futures that wake often (a response read
/// piece by piece): each wake-up of a blocking thread is a futex round trip, while a task
/// woken on a worker is a queue push.
pub(crate) fn run_on_runtime<F>(future: F) -> Result<F::Output, String>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| "no async runtime available to the plugin host".to_owned())?;
    let task = handle.spawn(future);
    handle
        .block_on(task)
        .map_err(|e| format!("host task failed: {e}"))
}
