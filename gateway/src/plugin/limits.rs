//! Resource limits of one plugin instance: linear memory, tables and instances through
//! wasmtime's `ResourceLimiter`, with the memory high-water mark recorded for metrics and a
//! flag telling a trap that followed a refused growth apart from any other trap.
//!
//! The limiter only ever refuses growth; it never traps by itself, so a plugin that handles
//! allocation failure keeps running.

/// Tables, memories and instances one component instance may create.
const MAX_TABLES: usize = 32;
const MAX_MEMORIES: usize = 8;
const MAX_INSTANCES: usize = 64;
/// Elements one table may hold.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The `ResourceLimiter` of one plugin instance.
#[derive(Debug, Clone)]
pub struct PluginLimiter {
    memory_limit: usize,
    high_water: usize,
    memory_refused: bool,
}

impl PluginLimiter {
    /// A limiter allowing `memory_limit` bytes of linear memory in total per memory.
    pub fn new(memory_limit: usize) -> Self {
        Self {
            memory_limit,
            high_water: 0,
            memory_refused: false,
        }
    }

    /// Largest linear memory granted so far, bytes.
    pub fn high_water(&self) -> usize {
        self.high_water
    }

    /// Whether a memory growth was refused since the last [`Self::clear_refusal`].
    pub fn memory_refused(&self) -> bool {
        self.memory_refused
    }

    /// Forgets a refused growth (at the start of each call).
    pub fn clear_refusal(&mut self) {
        self.memory_refused = false;
    }

    /// The configured memory limit, bytes.
    pub fn memory_limit(&self) -> usize {
        self.memory_limit
    }
}

impl wasmtime::ResourceLimiter for PluginLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit || maximum.is_some_and(|max| desired > max) {
            self.memory_refused = true;
            return Ok(false);
        }
        self.high_water = self.high_water.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}
