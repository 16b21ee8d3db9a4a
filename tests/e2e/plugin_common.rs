//! Shared by the `plugin_*` suites: builds the guests in `plugins/` once per test process
//! (through `scripts/build-plugins`), writes manifests with the right sha256, and creates
//! plugin hosts with a bucket in a temporary folder.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use gauntlet::plugin::bucket::{Bucket, ObjectStoreBucket};
use gauntlet::plugin::manifest::sha256_hex;
use gauntlet::plugin::{HostConfig, HostServices, PluginHost};

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// Folder with `file-store.wasm`, `hostile.wasm`, built from source once per process.
pub fn components() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = workspace();
            let status = std::process::Command::new("bash")
                .arg(root.join("scripts/build-plugins"))
                .current_dir(&root)
                .env_remove("CARGO_TARGET_DIR")
                .status()
                .expect("run scripts/build-plugins");
            assert!(status.success(), "scripts/build-plugins failed: {status}");
            root.join("plugins/target/components")
        })
        .clone()
}

pub fn component(name: &str) -> PathBuf {
    components().join(format!("{name}.wasm"))
}

/// A temporary folder with a bucket root and a plugin folder, and a host over them.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub host: PluginHost,
    pub bucket: Arc<dyn Bucket>,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with_config(HostConfig::default())
    }

    pub fn with_config(config: HostConfig) -> Self {
        Self::with_services(config, HostServices::default())
    }

    /// A fixture whose host offers `services` (its bucket is replaced by the fixture's).
    pub fn with_services(mut config: HostConfig, services: HostServices) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let bucket: Arc<dyn Bucket> =
            Arc::new(ObjectStoreBucket::local(&dir.path().join("bucket")).expect("bucket"));
        if config.cache_dir.is_none() {
            // Shared across test processes: each component is compiled once.
            config.cache_dir = Some(workspace().join("target/plugin-cache"));
        }
        let host = PluginHost::new(
            config,
            HostServices {
                bucket: Some(bucket.clone()),
                ..services
            },
        )
        .expect("plugin host");
        std::fs::create_dir_all(dir.path().join("plugins")).expect("plugins dir");
        Self { dir, host, bucket }
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// Writes a manifest for `component` (a name in `components()`), with `extra` TOML after
    /// the required keys, and returns its path.
    pub fn manifest(&self, name: &str, component: &str, extra: &str) -> PathBuf {
        write_manifest(
            &self.plugins_dir(),
            name,
            &self::component(component),
            extra,
        )
    }

    pub async fn put(&self, key: &str, data: &str) {
        self.bucket
            .put(key, data.as_bytes().to_vec())
            .await
            .expect("bucket put");
    }
}

pub fn write_manifest(dir: &Path, name: &str, wasm: &Path, extra: &str) -> PathBuf {
    write_manifest_world(dir, name, "store-backend", wasm, extra)
}

pub fn write_manifest_world(
    dir: &Path,
    name: &str,
    world: &str,
    wasm: &Path,
    extra: &str,
) -> PathBuf {
    let bytes = std::fs::read(wasm).expect("read component");
    let text = format!(
        "name = \"{name}\"\nversion = \"0.1.0\"\nworld = \"{world}\"\npath = \"{}\"\nsha256 = \"{}\"\n{extra}\n",
        wasm.display(),
        sha256_hex(&bytes)
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write manifest");
    path
}

/// Renders the metrics registry and returns the value of the first line starting with
/// `prefix` (a metric name with labels in the registry's order), or 0.
pub fn metric(name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = gauntlet::metrics::render();
    for line in text.lines() {
        if line.starts_with('#') || !line.starts_with(name) {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if !series.starts_with(&format!("{name}{{")) && series != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        {
            return value.parse().unwrap_or(0.0);
        }
    }
    0.0
}

/// Sum over every series of `name` whose labels include `labels`.
pub fn metric_sum(name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = gauntlet::metrics::render();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| series.starts_with(&format!("{name}{{")))
        .filter(|(series, _)| {
            labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap_or(0.0))
        .sum()
}
