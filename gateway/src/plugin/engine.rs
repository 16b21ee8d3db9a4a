//! [`PluginHost`]: the one wasmtime `Engine` of the process (epoch interruption, pooling
//! allocator), its `Linker` (host imports + WASI), the thread that advances the epoch, and
//! the on-disk cache of compiled components keyed by the component's sha256 and the engine's
//! compatibility hash (which covers the wasmtime version and configuration).
//!
//! Loading compiles (or reads from the cache), checks the component against its world,
//! instantiates it once and runs `init`; it never runs a component whose sha256 differs from
//! its manifest. Loading blocks: call [`PluginHost::load_async`] from async code.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::PluginError;
use super::bucket::{Bucket, PrefixedBucket};
use super::instance::LoadedPlugin;
use super::manifest::{Manifest, sha256_hex};
use super::metrics::plugin_metrics;
use super::services::{AlertSink, QueryBackend};
use super::state::{HostState, PluginContext};

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where compiled components are cached; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Largest `limits.memory` any manifest may ask for (also the pooling slot size).
    pub max_memory_per_instance: u64,
    /// Instances alive at once across all plugins (the pooling allocator's size).
    pub max_instances: u32,
    /// How often the epoch advances; deadlines are accurate to about one tick.
    pub epoch_tick: Duration,
    /// Idle instances kept per plugin for reuse.
    pub max_idle_per_plugin: usize,
    /// WebAssembly stack size.
    pub max_wasm_stack: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_memory_per_instance: 1 << 30,
            max_instances: 64,
            epoch_tick: Duration::from_millis(5),
            max_idle_per_plugin: 4,
            max_wasm_stack: 512 << 10,
        }
    }
}

/// What the host offers plugins besides WASI: storage, PromQL, alert delivery.
#[derive(Clone, Default)]
pub struct HostServices {
    /// The bucket plugins' `bucket_prefix` capabilities are scoped within.
    pub bucket: Option<Arc<dyn Bucket>>,
    /// PromQL for the `query` import.
    pub query: Option<Arc<dyn QueryBackend>>,
    /// Alert delivery for the `alerts` import.
    pub alerts: Option<Arc<dyn AlertSink>>,
}

impl std::fmt::Debug for HostServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostServices")
            .field("bucket", &self.bucket)
            .field("query", &self.query.is_some())
            .field("alerts", &self.alerts.is_some())
            .finish()
    }
}

/// Advances the engine's epoch every tick until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine, tick: Duration) -> Result<Self, PluginError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let engine = engine.clone();
        std::thread::Builder::new()
            .name("plugin-epoch".to_owned())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Host(format!("starting the epoch thread: {e}")))?;
        Ok(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub(crate) struct HostInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) config: HostConfig,
    pub(crate) services: HostServices,
    http: reqwest::Client,
    _ticker: EpochTicker,
}

/// The plugin host. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct PluginHost {
    pub(crate) inner: Arc<HostInner>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The engine configuration every host uses.
pub(crate) fn engine_config(config: &HostConfig) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    let instances = config.max_instances.max(1);
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(16))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(8))
        .total_stacks(instances)
        .max_core_instances_per_component(32)
        .max_memories_per_component(4)
        .max_tables_per_component(16)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20)
        .table_elements(100_000)
        .max_memory_size(usize::try_from(config.max_memory_per_instance).unwrap_or(usize::MAX))
        .max_unused_warm_slots(instances / 4);
    let mut c = Config::new();
    c.wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(config.max_wasm_stack)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    c
}

impl PluginHost {
    /// A host with its own engine.
    pub fn new(config: HostConfig, services: HostServices) -> Result<Self, PluginError> {
        let engine = Engine::new(&engine_config(&config))
            .map_err(|e| PluginError::Host(format!("creating the wasmtime engine: {e}")))?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        super::bindings::host::Host_::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| PluginError::Host(format!("linking host imports: {e}")))?;
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| PluginError::Host(format!("linking WASI: {e}")))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| PluginError::Host(format!("creating the HTTP client: {e}")))?;
        let ticker = EpochTicker::start(&engine, config.epoch_tick)?;
        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| PluginError::Host(format!("creating {}: {e}", dir.display())))?;
        }
        Ok(Self {
            inner: Arc::new(HostInner {
                engine,
                linker,
                config,
                services,
                http,
                _ticker: ticker,
            }),
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The engine settings.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// Loads the plugin a manifest file describes. Blocks (compiles, instantiates, runs
    /// `init`): from async code use [`Self::load_async`].
    pub fn load(&self, manifest_path: &Path) -> Result<Arc<LoadedPlugin>, PluginError> {
        let manifest = Manifest::load(manifest_path)?;
        self.load_manifest(manifest)
    }

    /// [`Self::load`] on a blocking thread.
    pub async fn load_async(&self, manifest_path: &Path) -> Result<Arc<LoadedPlugin>, PluginError> {
        let host = self.clone();
        let path = manifest_path.to_owned();
        tokio::task::spawn_blocking(move || host.load(&path))
            .await
            .map_err(|e| PluginError::Host(format!("load task failed: {e}")))?
    }

    /// Loads a plugin from an already validated manifest (blocking).
    pub fn load_manifest(&self, manifest: Manifest) -> Result<Arc<LoadedPlugin>, PluginError> {
        let name = manifest.name.clone();
        let result = self.load_inner(manifest);
        let outcome = if result.is_ok() { "ok" } else { "error" };
        plugin_metrics()
            .reloads
            .with_label_values(&[name.as_str(), outcome])
            .inc();
        result
    }

    fn load_inner(&self, manifest: Manifest) -> Result<Arc<LoadedPlugin>, PluginError> {
        let plugin = manifest.name.clone();
        if manifest.limits.memory > self.inner.config.max_memory_per_instance {
            return Err(PluginError::Manifest(super::ManifestError::Field {
                path: manifest.source.clone(),
                field: "limits.memory",
                message: format!(
                    "{} bytes exceed the host's maximum of {}",
                    manifest.limits.memory, self.inner.config.max_memory_per_instance
                ),
            }));
        }
        let bytes =
            std::fs::read(&manifest.component_path).map_err(|e| PluginError::Component {
                plugin: plugin.clone(),
                path: manifest.component_path.clone(),
                message: e.to_string(),
            })?;
        let actual = sha256_hex(&bytes);
        if actual != manifest.sha256 {
            return Err(PluginError::Sha256Mismatch {
                plugin,
                path: manifest.component_path.clone(),
                expected: manifest.sha256,
                actual,
            });
        }
        let component = self.compile_cached(&plugin, &actual, &bytes)?;
        let ctx = Arc::new(self.context_for(&manifest)?);
        LoadedPlugin::new(self.clone(), manifest, ctx, &component).map(Arc::new)
    }

    fn context_for(&self, manifest: &Manifest) -> Result<PluginContext, PluginError> {
        let caps = &manifest.capabilities;
        let bucket: Option<Arc<dyn Bucket>> =
            match (&caps.bucket_prefix, &self.inner.services.bucket) {
                (Some(prefix), Some(root)) => Some(Arc::new(
                    PrefixedBucket::new(root.clone(), prefix)
                        .map_err(|e| PluginError::Host(format!("bucket prefix {prefix}: {e}")))?,
                )),
                _ => None,
            };
        Ok(PluginContext {
            name: manifest.name.clone(),
            world: manifest.world,
            capabilities: caps.clone(),
            limits: manifest.limits.clone(),
            bucket,
            http: self.inner.http.clone(),
            query: caps
                .query
                .then(|| self.inner.services.query.clone())
                .flatten(),
            alerts: caps
                .alerts
                .then(|| self.inner.services.alerts.clone())
                .flatten(),
            metric_names: std::sync::Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// The cache key: component sha256 + engine compatibility (wasmtime version, config).
    fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        let dir = self.inner.config.cache_dir.as_ref()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.inner
            .engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        Some(dir.join(format!("{sha256}-{:016x}.cwasm", hasher.finish())))
    }

    /// Compiles a component, or reads it from the on-disk cache.
    pub(crate) fn compile_cached(
        &self,
        plugin: &str,
        sha256: &str,
        bytes: &[u8],
    ) -> Result<Component, PluginError> {
        let cache = self.cache_path(sha256);
        if let Some(path) = &cache
            && let Some(component) = self.read_cache(path)
        {
            return Ok(component);
        }
        let component =
            Component::new(&self.inner.engine, bytes).map_err(|e| PluginError::Compile {
                plugin: plugin.to_owned(),
                message: format!("{e:#}"),
            })?;
        if let Some(path) = &cache {
            self.write_cache(path, &component);
        }
        // The compiler's working memory (tens of MiB) is free now; give it back rather than
        // keep it resident for the life of the process.
        crate::allocator::release_free_memory();
        Ok(component)
    }

    fn read_cache(&self, path: &Path) -> Option<Component> {
        let compiled = std::fs::read(path).ok()?;
        let recorded = std::fs::read_to_string(path.with_extension("cwasm.sha256")).ok()?;
        if recorded.trim() != sha256_hex(&compiled) {
            tracing::warn!(path = %path.display(), "compiled plugin cache entry is corrupt; recompiling");
            return None;
        }
        // SAFETY: `Component::deserialize` runs native code from the bytes, so they must come
        // from `Component::serialize` of a compatible engine. This file was written by
        // `write_cache` below into the host's own cache directory (operator-controlled, not
        // reachable by plugins), under a name keyed by the source component's sha256 (checked
        // against the manifest before we get here) and the engine's compatibility hash; its
        // own sha256 was recorded beside it at write time and verified just above, so a
        // truncated or altered file is rejected. wasmtime additionally checks the header,
        // version and engine settings and returns an error on any mismatch.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.inner.engine, &compiled) };
        match component {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compiled plugin cache entry unusable; recompiling");
                None
            }
        }
    }

    fn write_cache(&self, path: &Path, component: &Component) {
        let Ok(compiled) = component.serialize() else {
            return;
        };
        let digest = sha256_hex(&compiled);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::write(&tmp, &compiled)
            .and_then(|()| std::fs::write(path.with_extension("cwasm.sha256"), &digest))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %e, "could not cache compiled plugin");
        }
    }

    pub(crate) fn new_state(&self, ctx: &Arc<PluginContext>) -> Result<HostState, PluginError> {
        let memory = usize::try_from(ctx.limits.memory).unwrap_or(usize::MAX);
        HostState::new(ctx.clone(), memory).map_err(PluginError::Host)
    }
}
