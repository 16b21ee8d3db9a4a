//! The WebAssembly plugin host: loads components that implement a `gauntlet:plugin` world
//! (see `wit/`), runs them sandboxed under wasmtime, and serves store plugins to the querier
//! through the [`Store`](crate::query::store::Store) trait ([`PluginStore`]).
//!
//! One [`PluginHost`] owns one wasmtime `Engine` (epoch interruption, pooling allocator), one
//! `Linker` with the host imports and WASI, and an on-disk cache of compiled components. Each
//! plugin is described by a [`Manifest`]; a [`LoadedPlugin`] keeps its `InstancePre` and a
//! small pool of idle instances. Every call into a plugin has a deadline, a memory limit and a
//! host-call budget; a trap becomes a typed [`PluginError`] and the trapped instance is thrown
//! away. Nothing a plugin does may take the process down, block a runtime thread, or reach
//! anything its manifest does not grant.

pub mod batch;
pub mod bench;
pub mod bindings;
pub mod bucket;
pub mod engine;
mod host;
pub mod instance;
pub mod limits;
pub mod manifest;
pub mod metrics;
pub mod reload;
pub mod services;
pub mod state;
pub mod store;
pub mod tool;
pub mod validate;

use std::path::PathBuf;
use std::time::Duration;

pub use engine::{HostConfig, HostServices, PluginHost};
pub use instance::LoadedPlugin;
pub use manifest::{FailurePolicy, Manifest, ManifestError, World};
pub use reload::{PluginDirectory, PluginSlot};
pub use store::PluginStore;

use crate::query::store::StoreError;

/// How a plugin's own `plugin-error` classified a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestErrorKind {
    /// `invalid-argument`.
    InvalidArgument,
    /// `unavailable`.
    Unavailable,
    /// `resource-exhausted`.
    ResourceExhausted,
    /// `denied`.
    Denied,
    /// `internal`.
    Internal,
}

/// Why loading or calling a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The component file could not be read.
    #[error("plugin {plugin}: reading component {path}: {message}")]
    Component {
        /// Plugin name.
        plugin: String,
        /// Component file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The component's sha256 differs from the manifest's; the plugin is not loaded.
    #[error(
        "plugin {plugin}: component {path} has sha256 {actual} but the manifest says {expected}; refusing to load it"
    )]
    Sha256Mismatch {
        /// Plugin name.
        plugin: String,
        /// Component file.
        path: PathBuf,
        /// From the manifest.
        expected: String,
        /// Of the file.
        actual: String,
    },
    /// wasmtime could not compile the component.
    #[error("plugin {plugin}: compiling the component: {message}")]
    Compile {
        /// Plugin name.
        plugin: String,
        /// wasmtime's message.
        message: String,
    },
    /// The component does not implement the manifest's world, or imports something the host
    /// does not provide.
    #[error("plugin {plugin}: does not fit world {world}: {message}")]
    Link {
        /// Plugin name.
        plugin: String,
        /// Manifest world.
        world: World,
        /// wasmtime's message.
        message: String,
    },
    /// `lifecycle.init` refused the configuration.
    #[error("plugin {plugin}: init refused the configuration: {message}")]
    Init {
        /// Plugin name.
        plugin: String,
        /// The plugin's message.
        message: String,
    },
    /// A call ran past its deadline and was interrupted.
    #[error("plugin {plugin}: {call} exceeded its time limit of {limit:?}")]
    Timeout {
        /// Plugin name.
        plugin: String,
        /// Which export.
        call: &'static str,
        /// `limits.time_per_call`.
        limit: Duration,
    },
    /// A call needed more linear memory than allowed.
    #[error("plugin {plugin}: {call} exceeded its memory limit of {limit} bytes")]
    MemoryLimit {
        /// Plugin name.
        plugin: String,
        /// Which export.
        call: &'static str,
        /// `limits.memory`.
        limit: u64,
    },
    /// A call overflowed the WebAssembly stack.
    #[error("plugin {plugin}: {call} overflowed its stack")]
    StackOverflow {
        /// Plugin name.
        plugin: String,
        /// Which export.
        call: &'static str,
    },
    /// A call made more host calls than allowed.
    #[error("plugin {plugin}: {call} exceeded its budget of {limit} host calls")]
    HostCallBudget {
        /// Plugin name.
        plugin: String,
        /// Which export.
        call: &'static str,
        /// `limits.host_calls_per_call`.
        limit: u64,
    },
    /// Any other trap (a panic, `unreachable`, an out-of-bounds access).
    #[error("plugin {plugin}: {call} trapped: {message}")]
    Trap {
        /// Plugin name.
        plugin: String,
        /// Which export.
        call: &'static str,
        /// wasmtime's description.
        message: String,
    },
    /// The plugin returned its own `plugin-error`.
    #[error("plugin {plugin}: {call} failed: {message}")]
    Guest {
        /// Plugin name.
        plugin: String,
        /// Which export.
        call: &'static str,
        /// The plugin's classification.
        kind: GuestErrorKind,
        /// The plugin's message.
        message: String,
    },
    /// The plugin answered with data that breaks the contract (unsorted labels, corrupt
    /// chunks, ...).
    #[error("plugin {plugin}: {call} returned malformed data: {message}")]
    Malformed {
        /// Plugin name.
        plugin: String,
        /// Which export.
        call: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The answer exceeds a host limit (batch size).
    #[error("plugin {plugin}: {call}: {message}")]
    LimitExceeded {
        /// Plugin name.
        plugin: String,
        /// Which export.
        call: &'static str,
        /// Which limit.
        message: String,
    },
    /// The request cannot be passed to the plugin.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The host itself failed (no runtime, engine creation, cache I/O).
    #[error("plugin host: {0}")]
    Host(String),
}

impl PluginError {
    /// Whether the error is a trap (the instance was discarded).
    pub fn is_trap(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. }
                | Self::MemoryLimit { .. }
                | Self::StackOverflow { .. }
                | Self::HostCallBudget { .. }
                | Self::Trap { .. }
        )
    }
}

impl From<PluginError> for StoreError {
    fn from(error: PluginError) -> Self {
        let message = error.to_string();
        match error {
            PluginError::Timeout { .. } => Self::Timeout(message),
            PluginError::MemoryLimit { .. }
            | PluginError::HostCallBudget { .. }
            | PluginError::LimitExceeded { .. } => Self::ResourceExhausted(message),
            PluginError::InvalidRequest(_) => Self::InvalidArgument(message),
            PluginError::Guest { kind, .. } => match kind {
                GuestErrorKind::InvalidArgument => Self::InvalidArgument(message),
                GuestErrorKind::Unavailable => Self::Unavailable(message),
                GuestErrorKind::ResourceExhausted => Self::ResourceExhausted(message),
                GuestErrorKind::Denied | GuestErrorKind::Internal => Self::Internal(message),
            },
            PluginError::Manifest(_)
            | PluginError::Component { .. }
            | PluginError::Sha256Mismatch { .. }
            | PluginError::Compile { .. }
            | PluginError::Link { .. }
            | PluginError::Init { .. }
            | PluginError::Host(_) => Self::Unavailable(message),
            PluginError::StackOverflow { .. }
            | PluginError::Trap { .. }
            | PluginError::Malformed { .. } => Self::Internal(message),
        }
    }
}
