//! Hot reload. A [`PluginSlot`] holds the current version of one plugin behind an atomic
//! pointer (arc-swap): each call takes the version current when it starts and finishes on it,
//! and a reload swaps in a fully loaded (compiled, linked, `init`-checked) new version, so no
//! call ever sees a half-loaded plugin or fails because of the swap. A failed reload keeps the
//! old version serving.
//!
//! A [`PluginDirectory`] loads every `*.toml` manifest of a folder and, when watching, reloads
//! a slot when its manifest or component file changes (inotify through `notify`, debounced).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::PluginError;
use super::engine::PluginHost;
use super::instance::LoadedPlugin;
use super::manifest::Manifest;
use super::store::PluginStore;

/// What identifies the files a loaded version came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    manifest: Vec<u8>,
    component: Option<(u64, Option<SystemTime>)>,
}

fn fingerprint(manifest_path: &Path) -> Fingerprint {
    let manifest = std::fs::read(manifest_path).unwrap_or_default();
    let component = Manifest::parse(&String::from_utf8_lossy(&manifest), manifest_path)
        .ok()
        .and_then(|m| std::fs::metadata(&m.component_path).ok())
        .map(|meta| (meta.len(), meta.modified().ok()));
    Fingerprint {
        manifest,
        component,
    }
}

/// One plugin, swappable at run time.
pub struct PluginSlot {
    host: PluginHost,
    manifest_path: PathBuf,
    current: ArcSwap<LoadedPlugin>,
    loaded_from: Mutex<Fingerprint>,
}

impl std::fmt::Debug for PluginSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSlot")
            .field("manifest", &self.manifest_path)
            .field("current", &self.current.load())
            .finish()
    }
}

impl PluginSlot {
    /// Loads the plugin of a manifest into a new slot (blocking).
    pub fn load(host: &PluginHost, manifest_path: &Path) -> Result<Arc<Self>, PluginError> {
        let loaded_from = fingerprint(manifest_path);
        let plugin = host.load(manifest_path)?;
        Ok(Arc::new(Self {
            host: host.clone(),
            manifest_path: manifest_path.to_owned(),
            current: ArcSwap::new(plugin),
            loaded_from: Mutex::new(loaded_from),
        }))
    }

    /// [`Self::load`] on a blocking thread.
    pub async fn load_async(
        host: &PluginHost,
        manifest_path: &Path,
    ) -> Result<Arc<Self>, PluginError> {
        let host = host.clone();
        let path = manifest_path.to_owned();
        tokio::task::spawn_blocking(move || Self::load(&host, &path))
            .await
            .map_err(|e| PluginError::Host(format!("load task failed: {e}")))?
    }

    /// The version serving new calls.
    pub fn current(&self) -> Arc<LoadedPlugin> {
        self.current.load_full()
    }

    /// The manifest file.
    pub fn manifest_path(&self) -> &Path {
        &self.manifest_path
    }

    /// A [`PluginStore`] over this slot.
    pub fn store(self: &Arc<Self>) -> PluginStore {
        PluginStore::new(self.clone())
    }

    /// Reloads if the manifest or the component changed since the last load (blocking).
    /// `Ok(true)` when a new version was swapped in; on error the old version keeps serving.
    pub fn reload_if_changed(&self) -> Result<bool, PluginError> {
        let now = fingerprint(&self.manifest_path);
        let unchanged = self
            .loaded_from
            .lock()
            .map(|loaded| *loaded == now)
            .unwrap_or(false);
        if unchanged {
            return Ok(false);
        }
        self.reload_with(now).map(|()| true)
    }

    /// Reloads unconditionally (blocking).
    pub fn reload(&self) -> Result<(), PluginError> {
        self.reload_with(fingerprint(&self.manifest_path))
    }

    fn reload_with(&self, now: Fingerprint) -> Result<(), PluginError> {
        match self.host.load(&self.manifest_path) {
            Ok(plugin) => {
                tracing::info!(
                    plugin = plugin.name(),
                    version = %plugin.manifest().version,
                    sha256 = %plugin.manifest().sha256,
                    "plugin reloaded"
                );
                self.current.store(plugin);
                if let Ok(mut loaded) = self.loaded_from.lock() {
                    *loaded = now;
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(manifest = %self.manifest_path.display(), error = %e, "plugin reload failed; the previous version keeps serving");
                // Remember the failed files so the same broken state is not retried in a loop.
                if let Ok(mut loaded) = self.loaded_from.lock() {
                    *loaded = now;
                }
                Err(e)
            }
        }
    }
}

/// Every plugin of a folder of manifests, optionally watched for changes.
pub struct PluginDirectory {
    host: PluginHost,
    dir: PathBuf,
    slots: Mutex<BTreeMap<PathBuf, Arc<PluginSlot>>>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

impl std::fmt::Debug for PluginDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginDirectory")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What a rescan did, by manifest path.
#[derive(Debug, Default)]
pub struct RescanReport {
    /// Newly loaded.
    pub loaded: Vec<PathBuf>,
    /// Reloaded with a new version.
    pub reloaded: Vec<PathBuf>,
    /// Removed because the manifest is gone.
    pub removed: Vec<PathBuf>,
    /// Failed to load or reload (the old version, if any, keeps serving).
    pub failed: Vec<(PathBuf, String)>,
}

fn manifests_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

impl PluginDirectory {
    /// Loads every manifest in `dir` (blocking). Manifests that fail are reported, not fatal.
    pub fn open(host: &PluginHost, dir: &Path) -> (Arc<Self>, RescanReport) {
        let directory = Arc::new(Self {
            host: host.clone(),
            dir: dir.to_owned(),
            slots: Mutex::new(BTreeMap::new()),
            watcher: Mutex::new(None),
        });
        let report = directory.rescan();
        (directory, report)
    }

    /// The loaded slots, by manifest path.
    pub fn slots(&self) -> Vec<Arc<PluginSlot>> {
        self.slots
            .lock()
            .map(|slots| slots.values().cloned().collect())
            .unwrap_or_default()
    }

    /// A [`PluginStore`] for every loaded plugin whose world serves the store interface.
    pub fn stores(&self) -> Vec<PluginStore> {
        self.slots()
            .into_iter()
            .filter(|slot| slot.current().manifest().world.serves_store())
            .map(|slot| slot.store())
            .collect()
    }

    /// Loads new manifests, reloads changed ones, drops removed ones (blocking).
    pub fn rescan(&self) -> RescanReport {
        let mut report = RescanReport::default();
        let present = manifests_in(&self.dir);
        let existing: BTreeMap<PathBuf, Arc<PluginSlot>> =
            self.slots.lock().map(|s| s.clone()).unwrap_or_default();
        let mut next = BTreeMap::new();
        for path in &present {
            match existing.get(path) {
                Some(slot) => {
                    match slot.reload_if_changed() {
                        Ok(true) => report.reloaded.push(path.clone()),
                        Ok(false) => {}
                        Err(e) => report.failed.push((path.clone(), e.to_string())),
                    }
                    next.insert(path.clone(), slot.clone());
                }
                None => match PluginSlot::load(&self.host, path) {
                    Ok(slot) => {
                        report.loaded.push(path.clone());
                        next.insert(path.clone(), slot);
                    }
                    Err(e) => report.failed.push((path.clone(), e.to_string())),
                },
            }
        }
        for path in existing.keys() {
            if !next.contains_key(path) {
                report.removed.push(path.clone());
            }
        }
        if let Ok(mut slots) = self.slots.lock() {
            *slots = next;
        }
        report
    }

    /// Watches the folder and rescans (debounced by `debounce`) on every change. Needs a
    /// tokio runtime (plugins' host calls use it). Stops when the directory is dropped.
    pub fn watch(self: &Arc<Self>, debounce: Duration) -> Result<(), PluginError> {
        use notify::Watcher;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| PluginError::Host("watching plugins needs a tokio runtime".to_owned()))?;
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok() {
                    let _ = tx.send(());
                }
            })
            .map_err(|e| PluginError::Host(format!("watching {}: {e}", self.dir.display())))?;
        watcher
            .watch(&self.dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| PluginError::Host(format!("watching {}: {e}", self.dir.display())))?;
        // Also watch the folders of components that live elsewhere.
        for slot in self.slots() {
            if let Some(parent) = slot.current().manifest().component_path.parent()
                && parent != self.dir
            {
                let _ = watcher.watch(parent, notify::RecursiveMode::NonRecursive);
            }
        }
        if let Ok(mut current) = self.watcher.lock() {
            *current = Some(watcher);
        }
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("plugin-reload".to_owned())
            .spawn(move || {
                let _runtime = runtime.enter();
                while rx.recv().is_ok() {
                    std::thread::sleep(debounce);
                    while rx.try_recv().is_ok() {}
                    let Some(directory) = weak.upgrade() else {
                        break;
                    };
                    let report = directory.rescan();
                    for (path, error) in &report.failed {
                        tracing::error!(manifest = %path.display(), %error, "plugin not (re)loaded");
                    }
                }
            })
            .map_err(|e| PluginError::Host(format!("starting the reload thread: {e}")))?;
        Ok(())
    }
}
