//! A loaded plugin: its manifest, its `InstancePre` (typed for its world), and a small pool of
//! idle instances, plus the guarded call every export goes through — epoch deadline,
//! host-call budget, metrics, and trap classification. A trapped instance is never reused.
//!
//! All calls here block the calling thread while the guest runs; callers on a runtime must
//! use `spawn_blocking` (as [`crate::plugin::PluginStore`] does).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::{Component, InstancePre};
use wasmtime::{Store, Trap};

use super::batch::{NextPacked, NextPackedIndex, RawBatch};
use super::bindings::host::gauntlet::plugin::types::PluginError as GuestError;
use super::bindings::{compactor, ruler, sidecar, store_backend};
use super::engine::PluginHost;
use super::manifest::{Manifest, World};
use super::metrics::plugin_metrics;
use super::state::{HostCallBudgetExceeded, HostState, PluginContext};
use super::{GuestErrorKind, PluginError};

pub use super::bindings::compactor::exports::gauntlet::plugin::compaction::{Job, Outcome};
pub use super::bindings::ruler::exports::gauntlet::plugin::rules::{Evaluation, Recorded};

/// The typed pre-instantiated component for the plugin's world.
enum WorldPre {
    Store {
        pre: InstancePre<HostState>,
        indices: store_backend::StoreBackendIndices,
        next_packed: Option<NextPackedIndex>,
    },
    Compactor(compactor::CompactorPre<HostState>),
    Ruler(ruler::RulerPre<HostState>),
}

/// One live instance of a store plugin.
pub struct StoreInstance {
    pub(crate) store: Store<HostState>,
    pub(crate) exports: StoreExports,
    poisoned: bool,
}

/// What the host calls on a store instance: the exports every store plugin has, through the
/// generated bindings, and `packed-series.next-packed-batch` when the plugin has it.
pub(crate) struct StoreExports {
    pub(crate) world: store_backend::StoreBackend,
    pub(crate) next_packed: Option<NextPacked>,
}

impl StoreExports {
    /// The call that hands out series batches: `next-packed-batch` when the plugin has it
    /// (since 0.1.1), else `next-batch`.
    pub(crate) fn batch_call(&self) -> &'static str {
        if self.next_packed.is_some() {
            "next-packed-batch"
        } else {
            "next-batch"
        }
    }

    /// The next batch of `stream`, through [`Self::batch_call`].
    pub(crate) fn next_batch(
        &self,
        store: &mut Store<HostState>,
        stream: wasmtime::component::ResourceAny,
    ) -> wasmtime::Result<Result<Option<RawBatch>, GuestError>> {
        Ok(match &self.next_packed {
            Some(next_packed) => next_packed
                .call(store, stream)?
                .map(|batch| batch.map(RawBatch::Packed)),
            None => self
                .world
                .gauntlet_plugin_store()
                .series_stream()
                .call_next_batch(store, stream)?
                .map(|batch| batch.map(RawBatch::Plain)),
        })
    }
}

impl StoreInstance {
    /// Whether a trap hit this instance (it must be dropped, never reused).
    pub fn poisoned(&self) -> bool {
        self.poisoned
    }
}

/// The instance `background.tick` runs on, kept from one tick to the next.
struct TickInstance {
    store: Store<HostState>,
    exports: sidecar::Sidecar,
}

/// Metric handles of one (plugin, world, call), resolved once.
struct CallMetrics {
    calls: prometheus::IntCounter,
    errors: prometheus::IntCounter,
    duration: prometheus::Histogram,
}

/// A plugin ready to be called.
pub struct LoadedPlugin {
    host: PluginHost,
    manifest: Manifest,
    ctx: Arc<PluginContext>,
    pre: WorldPre,
    idle: Mutex<Vec<StoreInstance>>,
    ticker: Mutex<Option<TickInstance>>,
    high_water: AtomicUsize,
    loaded_at: std::time::SystemTime,
    call_metrics: Mutex<std::collections::HashMap<&'static str, Arc<CallMetrics>>>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.manifest.name)
            .field("version", &self.manifest.version)
            .field("world", &self.manifest.world)
            .field("sha256", &self.manifest.sha256)
            .finish_non_exhaustive()
    }
}

pub(crate) fn guest_error(plugin: &str, call: &'static str, error: GuestError) -> PluginError {
    let (kind, message) = match error {
        GuestError::InvalidArgument(m) => (GuestErrorKind::InvalidArgument, m),
        GuestError::Unavailable(m) => (GuestErrorKind::Unavailable, m),
        GuestError::ResourceExhausted(m) => (GuestErrorKind::ResourceExhausted, m),
        GuestError::Denied(m) => (GuestErrorKind::Denied, format!("denied: {m}")),
        GuestError::Internal(m) => (GuestErrorKind::Internal, m),
    };
    PluginError::Guest {
        plugin: plugin.to_owned(),
        call,
        kind,
        message,
    }
}

impl LoadedPlugin {
    pub(crate) fn new(
        host: PluginHost,
        manifest: Manifest,
        ctx: Arc<PluginContext>,
        component: &Component,
    ) -> Result<Self, PluginError> {
        let link = |e: wasmtime::Error| PluginError::Link {
            plugin: manifest.name.clone(),
            world: manifest.world,
            message: format!("{e:#}"),
        };
        let instance_pre = host.inner.linker.instantiate_pre(component).map_err(link)?;
        let pre = match manifest.world {
            World::StoreBackend | World::Sidecar => WorldPre::Store {
                indices: store_backend::StoreBackendIndices::new(&instance_pre).map_err(link)?,
                next_packed: NextPackedIndex::find(component),
                pre: instance_pre,
            },
            World::Compactor => {
                WorldPre::Compactor(compactor::CompactorPre::new(instance_pre).map_err(link)?)
            }
            World::Ruler => WorldPre::Ruler(ruler::RulerPre::new(instance_pre).map_err(link)?),
        };
        let plugin = Self {
            host,
            manifest,
            ctx,
            pre,
            idle: Mutex::new(Vec::new()),
            ticker: Mutex::new(None),
            high_water: AtomicUsize::new(0),
            loaded_at: std::time::SystemTime::now(),
            call_metrics: Mutex::new(std::collections::HashMap::new()),
        };
        plugin.check_init()?;
        Ok(plugin)
    }

    /// The manifest it was loaded from.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Plugin name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// When it was loaded.
    pub fn loaded_at(&self) -> std::time::SystemTime {
        self.loaded_at
    }

    /// Largest linear memory any of its instances reached, bytes.
    pub fn memory_high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }

    /// Idle instances kept for reuse.
    pub fn idle_instances(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }

    fn new_store(&self) -> Result<Store<HostState>, PluginError> {
        let state = self.host.new_state(&self.ctx)?;
        let mut store = Store::new(&self.host.inner.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_trap();
        plugin_metrics()
            .instances
            .with_label_values(&[self.manifest.name.as_str()])
            .inc();
        Ok(store)
    }

    /// Instantiates once and runs `init` so that a bad configuration fails the load.
    fn check_init(&self) -> Result<(), PluginError> {
        match &self.pre {
            WorldPre::Store { .. } => {
                let instance = self.instantiate_store()?;
                self.checkin(instance);
                Ok(())
            }
            WorldPre::Compactor(pre) => {
                let mut store = self.new_store()?;
                let exports = self.guard(&mut store, "instantiate", |s| pre.instantiate(s))?;
                self.init(&mut store, |s, config| {
                    exports.gauntlet_plugin_lifecycle().call_init(s, config)
                })
            }
            WorldPre::Ruler(pre) => {
                let mut store = self.new_store()?;
                let exports = self.guard(&mut store, "instantiate", |s| pre.instantiate(s))?;
                self.init(&mut store, |s, config| {
                    exports.gauntlet_plugin_lifecycle().call_init(s, config)
                })
            }
        }
    }

    /// Runs the guest's `lifecycle.init` (through `call`) with the manifest's configuration;
    /// a guest error is an [`PluginError::Init`].
    fn init(
        &self,
        store: &mut Store<HostState>,
        call: impl FnOnce(
            &mut Store<HostState>,
            &[(String, String)],
        ) -> wasmtime::Result<Result<(), GuestError>>,
    ) -> Result<(), PluginError> {
        self.guard(store, "init", |s| call(s, &self.manifest.config))?
            .map_err(|e| self.init_error(e))
    }

    fn init_error(&self, error: GuestError) -> PluginError {
        PluginError::Init {
            plugin: self.manifest.name.clone(),
            message: guest_error(&self.manifest.name, "init", error).to_string(),
        }
    }

    pub(crate) fn instantiate_store(&self) -> Result<StoreInstance, PluginError> {
        let WorldPre::Store {
            pre,
            indices,
            next_packed,
        } = &self.pre
        else {
            return Err(PluginError::Host(format!(
                "plugin {} (world {}) does not serve the store interface",
                self.manifest.name, self.manifest.world
            )));
        };
        let mut store = self.new_store()?;
        let exports = self.guard(&mut store, "instantiate", |s| {
            let instance = pre.instantiate(&mut *s)?;
            Ok(StoreExports {
                world: indices.load(&mut *s, &instance)?,
                next_packed: next_packed
                    .map(|index| index.load(s, &instance))
                    .transpose()?,
            })
        })?;
        self.init(&mut store, |s, config| {
            exports
                .world
                .gauntlet_plugin_lifecycle()
                .call_init(s, config)
        })?;
        Ok(StoreInstance {
            store,
            exports,
            poisoned: false,
        })
    }

    /// An idle instance, or a new one.
    pub(crate) fn checkout(&self) -> Result<StoreInstance, PluginError> {
        if let Ok(mut idle) = self.idle.lock()
            && let Some(instance) = idle.pop()
        {
            return Ok(instance);
        }
        self.instantiate_store()
    }

    /// Returns an instance to the pool (dropped if poisoned or the pool is full).
    pub(crate) fn checkin(&self, instance: StoreInstance) {
        if instance.poisoned {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.host.inner.config.max_idle_per_plugin
        {
            idle.push(instance);
        }
    }

    /// Runs one call into the instance with its deadline, counting it; a trap poisons it.
    pub(crate) fn call<R>(
        &self,
        instance: &mut StoreInstance,
        call: &'static str,
        f: impl FnOnce(&mut Store<HostState>, &StoreExports) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let exports = &instance.exports;
        let result = self.guard(&mut instance.store, call, |store| f(store, exports));
        if let Err(e) = &result
            && e.is_trap()
        {
            instance.poisoned = true;
        }
        result
    }

    /// Deadline, metrics and trap classification around one guest call.
    fn guard<R>(
        &self,
        store: &mut Store<HostState>,
        call: &'static str,
        f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let labels = [
            self.manifest.name.as_str(),
            self.manifest.world.as_str(),
            call,
        ];
        let metrics = plugin_metrics();
        let handles = self.call_metrics(call);
        handles.calls.inc();
        let tick = self.host.inner.config.epoch_tick.as_nanos().max(1);
        let ticks = self.time_limit(call).as_nanos().div_ceil(tick);
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX).max(1));
        store.data_mut().start_call();
        let started = Instant::now();
        let result = f(store);
        handles.duration.observe(started.elapsed().as_secs_f64());
        let high_water = store.data().limiter.high_water();
        let previous = self.high_water.fetch_max(high_water, Ordering::Relaxed);
        if high_water > previous {
            // Rare (only when the mark rises): resolve the labelled gauge here.
            metrics
                .memory_high_water
                .with_label_values(&labels)
                .set(i64::try_from(high_water).unwrap_or(i64::MAX));
        }
        match result {
            Ok(value) => Ok(value),
            Err(error) => {
                let classified = self.classify(store, call, &error);
                handles.errors.inc();
                if classified.is_trap() {
                    let reason = match &classified {
                        PluginError::Timeout { .. } => "timeout",
                        PluginError::MemoryLimit { .. } => "memory",
                        PluginError::StackOverflow { .. } => "stack-overflow",
                        PluginError::HostCallBudget { .. } => "host-call-budget",
                        _ => "trap",
                    };
                    metrics
                        .traps
                        .with_label_values(&[labels[0], labels[1], labels[2], reason])
                        .inc();
                }
                tracing::warn!(plugin = %self.manifest.name, call, error = %classified, "plugin call failed");
                Err(classified)
            }
        }
    }

    /// The wall time `call` may take: `limits.time_per_tick` for `tick`, else
    /// `limits.time_per_call`.
    fn time_limit(&self, call: &str) -> std::time::Duration {
        if call == "tick" {
            self.manifest.limits.time_per_tick
        } else {
            self.manifest.limits.time_per_call
        }
    }

    fn call_metrics(&self, call: &'static str) -> Arc<CallMetrics> {
        let create = || {
            let metrics = plugin_metrics();
            let labels = [
                self.manifest.name.as_str(),
                self.manifest.world.as_str(),
                call,
            ];
            Arc::new(CallMetrics {
                calls: metrics.calls.with_label_values(&labels),
                errors: metrics.errors.with_label_values(&labels),
                duration: metrics.duration.with_label_values(&labels),
            })
        };
        match self.call_metrics.lock() {
            Ok(mut cache) => cache.entry(call).or_insert_with(create).clone(),
            Err(_) => create(),
        }
    }

    fn classify(
        &self,
        store: &Store<HostState>,
        call: &'static str,
        error: &wasmtime::Error,
    ) -> PluginError {
        let plugin = self.manifest.name.clone();
        if let Some(budget) = error.downcast_ref::<HostCallBudgetExceeded>() {
            return PluginError::HostCallBudget {
                plugin,
                call,
                limit: budget.limit,
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PluginError::Timeout {
                plugin,
                call,
                limit: self.time_limit(call),
            },
            Some(Trap::StackOverflow) => PluginError::StackOverflow { plugin, call },
            Some(_) if store.data().limiter.memory_refused() => PluginError::MemoryLimit {
                plugin,
                call,
                limit: self.manifest.limits.memory,
            },
            Some(trap) => PluginError::Trap {
                plugin,
                call,
                message: trap.to_string(),
            },
            None if store.data().limiter.memory_refused() => PluginError::MemoryLimit {
                plugin,
                call,
                limit: self.manifest.limits.memory,
            },
            None => PluginError::Trap {
                plugin,
                call,
                message: format!("{error:#}"),
            },
        }
    }

    /// Evaluates rule group `group` at `timestamp_ms` (world `ruler`) on a fresh instance.
    /// Blocking.
    pub fn evaluate_rules(
        &self,
        group: &str,
        timestamp_ms: i64,
    ) -> Result<Evaluation, PluginError> {
        let WorldPre::Ruler(pre) = &self.pre else {
            return Err(self.wrong_world("ruler"));
        };
        let mut store = self.new_store()?;
        let exports = self.guard(&mut store, "instantiate", |s| pre.instantiate(s))?;
        self.init(&mut store, |s, config| {
            exports.gauntlet_plugin_lifecycle().call_init(s, config)
        })?;
        self.guard(&mut store, "evaluate", |s| {
            exports
                .gauntlet_plugin_rules()
                .call_evaluate(s, group, timestamp_ms)
        })?
        .map_err(|e| self.guest_failure("evaluate", e))
    }

    /// The compaction jobs the plugin proposes (world `compactor`), on a fresh instance.
    /// Blocking.
    pub fn compaction_plan(&self) -> Result<Vec<Job>, PluginError> {
        let WorldPre::Compactor(pre) = &self.pre else {
            return Err(self.wrong_world("compactor"));
        };
        let mut store = self.new_store()?;
        let exports = self.guard(&mut store, "instantiate", |s| pre.instantiate(s))?;
        self.init(&mut store, |s, config| {
            exports.gauntlet_plugin_lifecycle().call_init(s, config)
        })?;
        self.guard(&mut store, "plan", |s| {
            exports.gauntlet_plugin_compaction().call_plan(s)
        })?
        .map_err(|e| self.guest_failure("plan", e))
    }

    /// Runs one job from [`Self::compaction_plan`] (world `compactor`), on a fresh instance.
    /// Blocking.
    pub fn compaction_run(&self, job: &Job) -> Result<Outcome, PluginError> {
        let WorldPre::Compactor(pre) = &self.pre else {
            return Err(self.wrong_world("compactor"));
        };
        let mut store = self.new_store()?;
        let exports = self.guard(&mut store, "instantiate", |s| pre.instantiate(s))?;
        self.init(&mut store, |s, config| {
            exports.gauntlet_plugin_lifecycle().call_init(s, config)
        })?;
        self.guard(&mut store, "run", |s| {
            exports.gauntlet_plugin_compaction().call_run(s, job)
        })?
        .map_err(|e| self.guest_failure("run", e))
    }

    /// Runs `background.tick(now_ms)` (world `sidecar`). Ticks share one instance, kept
    /// from one tick to the next so the plugin can remember what it did (a trap discards
    /// it; the next tick starts a fresh one). Never runs two ticks at once. Blocking.
    pub fn tick(&self, now_ms: i64) -> Result<(), PluginError> {
        let (World::Sidecar, WorldPre::Store { pre, .. }) = (self.manifest.world, &self.pre) else {
            return Err(self.wrong_world("sidecar"));
        };
        let mut slot = self
            .ticker
            .lock()
            .map_err(|_| PluginError::Host("the tick instance lock is poisoned".to_owned()))?;
        let mut instance = match slot.take() {
            Some(instance) => instance,
            None => {
                let pre = sidecar::SidecarPre::new(pre.clone()).map_err(|e| PluginError::Link {
                    plugin: self.manifest.name.clone(),
                    world: self.manifest.world,
                    message: format!("{e:#}"),
                })?;
                let mut store = self.new_store()?;
                let exports = self.guard(&mut store, "instantiate", |s| pre.instantiate(s))?;
                self.init(&mut store, |s, config| {
                    exports.gauntlet_plugin_lifecycle().call_init(s, config)
                })?;
                TickInstance { store, exports }
            }
        };
        let exports = &instance.exports;
        let result = self.guard(&mut instance.store, "tick", |s| {
            exports.gauntlet_plugin_background().call_tick(s, now_ms)
        });
        match result {
            Ok(answer) => {
                *slot = Some(instance);
                answer.map_err(|e| self.guest_failure("tick", e))
            }
            // A trapped instance is never reused.
            Err(error) => Err(error),
        }
    }

    fn wrong_world(&self, wanted: &str) -> PluginError {
        PluginError::Host(format!(
            "plugin {} is a {} plugin, not a {wanted}",
            self.manifest.name, self.manifest.world
        ))
    }

    /// Errors and metrics for a plugin's own `plugin-error` answer.
    pub(crate) fn guest_failure(&self, call: &'static str, error: GuestError) -> PluginError {
        plugin_metrics()
            .errors
            .with_label_values(&[
                self.manifest.name.as_str(),
                self.manifest.world.as_str(),
                call,
            ])
            .inc();
        guest_error(&self.manifest.name, call, error)
    }

    /// Counts a refused (malformed or oversized) answer.
    pub(crate) fn count_malformed(&self, call: &'static str) {
        let labels = [
            self.manifest.name.as_str(),
            self.manifest.world.as_str(),
            call,
        ];
        plugin_metrics().malformed.with_label_values(&labels).inc();
        plugin_metrics().errors.with_label_values(&labels).inc();
    }
}
