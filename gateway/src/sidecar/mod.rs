//! `gauntlet sidecar`: serves the Prometheus server next to it over the StoreAPI, through the
//! sidecar WebAssembly plugin (`plugins/sidecar`, world `sidecar`), and keeps its
//! configuration reloaded ([`reloader`]).
//!
//! The plugin is the built-in component `sidecar.wasm` (see [`locate_component`]) or the one
//! `--plugin` names. Its only capability is HTTP to the `--prometheus.url` host; it runs under
//! the host's limits like any plugin. This module serves it as `thanos.Store` +
//! `thanos.info.Info` on gRPC (component type `sidecar`), and HTTP with `/metrics`
//! (`gauntlet_sidecar_prometheus_up` and the plugin metrics), `/-/healthy` and `/-/ready`.
//!
//! A Prometheus that is down never stops the sidecar: calls fail with `unavailable` (the
//! querier turns them into warnings), `gauntlet_sidecar_prometheus_up` drops to 0, and
//! everything recovers by itself when Prometheus answers again. With `--objstore.config-file`
//! (or `--objstore.config`) and `--tsdb.path`, the [`shipper`] uploads the blocks Prometheus
//! writes to object storage.

pub mod reloader;
pub mod shipper;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use gauntlet_proto::thanos::info::InfoResponse;
use gauntlet_proto::thanos::{
    LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, SeriesRequest,
};
use prometheus::{IntCounterVec, IntGauge, Opts};

use crate::cli::SidecarArgs;
use crate::http::{self, Readiness};
use crate::plugin::manifest::sha256_hex;
use crate::plugin::{HostConfig, HostServices, PluginHost, PluginSlot, PluginStore, World};
use crate::query::store::{SeriesStream, Store, StoreError};
use crate::shutdown::Shutdown;

/// File name of the built-in sidecar component.
pub const COMPONENT_FILE: &str = "sidecar.wasm";
/// Environment variable naming a folder to look for [`COMPONENT_FILE`] in first.
pub const PLUGIN_DIR_ENV: &str = "GAUNTLET_PLUGIN_DIR";
/// How often Prometheus's health is checked (and the plugin's `tick` runs).
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// How often the reloader looks at its files.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Metrics of the sidecar role.
#[derive(Debug)]
pub struct SidecarMetrics {
    /// `gauntlet_sidecar_prometheus_up`: 1 when the last health check of Prometheus passed.
    pub prometheus_up: IntGauge,
    /// `gauntlet_sidecar_reloads_total{result}`: reloads of Prometheus by the reloader.
    pub reloads: IntCounterVec,
}

// The metric definitions are constants prometheus accepts; only an edit to an invalid name
// could reach this, and the role's tests would catch it.
#[allow(clippy::panic)]
fn invalid_metric(name: &str) -> ! {
    panic!("invalid metric definition {name}")
}

/// The sidecar metrics, registered on first use.
pub fn sidecar_metrics() -> &'static SidecarMetrics {
    static METRICS: OnceLock<SidecarMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let prometheus_up = IntGauge::new(
            "gauntlet_sidecar_prometheus_up",
            "Whether the Prometheus server next to this sidecar answered its last health check (1) or not (0).",
        )
        .unwrap_or_else(|_| invalid_metric("gauntlet_sidecar_prometheus_up"));
        let reloads = IntCounterVec::new(
            Opts::new(
                "gauntlet_sidecar_reloads_total",
                "Reloads of Prometheus triggered by configuration or rule changes, by result.",
            ),
            &["result"],
        )
        .unwrap_or_else(|_| invalid_metric("gauntlet_sidecar_reloads_total"));
        let registry = crate::metrics::registry();
        let _ = registry.register(Box::new(prometheus_up.clone()));
        let _ = registry.register(Box::new(reloads.clone()));
        SidecarMetrics {
            prometheus_up,
            reloads,
        }
    })
}

/// Where the built-in sidecar component is looked for: see [`builtin_candidates`].
pub fn component_candidates() -> Vec<PathBuf> {
    builtin_candidates(COMPONENT_FILE)
}

/// Where a built-in component `file` (`sidecar.wasm`, `compactor.wasm`) is looked for, in
/// order: `$GAUNTLET_PLUGIN_DIR`, the folder of the running binary, its `plugins/` subfolder,
/// `../lib/gauntlet/plugins/` next to it (an installed layout), and
/// `plugins/target/components/` of the source tree the binary was built in
/// (`target/<profile>/gauntlet`), where `scripts/build-plugins` puts it.
pub fn builtin_candidates(file: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = std::env::var_os(PLUGIN_DIR_ENV) {
        out.push(PathBuf::from(dir).join(file));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.canonicalize().ok())
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        out.push(dir.join(file));
        out.push(dir.join("plugins").join(file));
        out.push(dir.join("../lib/gauntlet/plugins").join(file));
        // target/<profile>/gauntlet → <workspace>/plugins/target/components/
        if let Some(workspace) = dir.parent().and_then(Path::parent) {
            out.push(workspace.join("plugins/target/components").join(file));
        }
    }
    out
}

/// The first existing built-in sidecar component, or an error listing where it was looked for.
pub fn locate_component() -> anyhow::Result<PathBuf> {
    locate_builtin(COMPONENT_FILE, "sidecar")
}

/// The first existing built-in component `file` of `role`, or an error listing where it was
/// looked for and how to provide it.
pub fn locate_builtin(file: &str, role: &str) -> anyhow::Result<PathBuf> {
    let candidates = builtin_candidates(file);
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the {role} plugin {file} was not found (looked in {}); build it with scripts/build-plugins, set {PLUGIN_DIR_ENV}, or pass --plugin",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// The `host:port` the plugin may reach for a Prometheus URL.
pub fn allowed_host(url: &reqwest::Url) -> anyhow::Result<String> {
    let host = url
        .host_str()
        .with_context(|| format!("--prometheus.url {url} has no host"))?;
    let port = url
        .port_or_known_default()
        .with_context(|| format!("--prometheus.url {url} has no port"))?;
    Ok(format!(
        "{}:{port}",
        host.trim_start_matches('[').trim_end_matches(']')
    ))
}

/// The manifest of the built-in plugin for one Prometheus.
pub fn builtin_manifest(
    component: &Path,
    sha256: &str,
    prometheus_url: &reqwest::Url,
) -> anyhow::Result<String> {
    let host = allowed_host(prometheus_url)?;
    let toml_string = |s: &str| toml::Value::String(s.to_owned()).to_string();
    Ok(format!(
        "name = \"sidecar\"\nversion = \"{}\"\nworld = \"sidecar\"\npath = {}\nsha256 = \"{sha256}\"\nfailure_policy = \"fail-closed\"\n\n[capabilities]\nhttp_hosts = [{}]\n\n[limits]\nmemory = \"512MiB\"\ntime_per_call = \"60s\"\nhost_calls_per_call = 1000\nvalidate_chunks = \"header\"\n\n[config]\nprometheus_url = {}\n",
        crate::build_info::VERSION,
        toml_string(&component.display().to_string()),
        toml_string(&host),
        toml_string(prometheus_url.as_str()),
    ))
}

/// The plugin as the sidecar's [`Store`]: Info says component type `sidecar`, and every Info
/// outcome updates `gauntlet_sidecar_prometheus_up`.
#[derive(Clone, Debug)]
pub struct SidecarStore {
    plugin: PluginStore,
}

impl SidecarStore {
    /// Wraps a loaded plugin.
    pub fn new(plugin: PluginStore) -> Self {
        Self { plugin }
    }
}

#[async_trait]
impl Store for SidecarStore {
    async fn info(&self) -> Result<InfoResponse, StoreError> {
        let result = self.plugin.info().await;
        sidecar_metrics()
            .prometheus_up
            .set(i64::from(result.is_ok()));
        let mut info = result?;
        "sidecar".clone_into(&mut info.component_type);
        Ok(info)
    }

    async fn series(&self, request: SeriesRequest) -> Result<SeriesStream, StoreError> {
        self.plugin.series(request).await
    }

    async fn label_names(
        &self,
        request: LabelNamesRequest,
    ) -> Result<LabelNamesResponse, StoreError> {
        self.plugin.label_names(request).await
    }

    async fn label_values(
        &self,
        request: LabelValuesRequest,
    ) -> Result<LabelValuesResponse, StoreError> {
        self.plugin.label_values(request).await
    }
}

/// Loads the sidecar plugin: the `--plugin` manifest, or the built-in component with a
/// manifest written to `runtime_dir`.
async fn load_plugin(
    args: &SidecarArgs,
    prometheus_url: &reqwest::Url,
    runtime_dir: &Path,
) -> anyhow::Result<Arc<PluginSlot>> {
    let host = PluginHost::new(
        HostConfig {
            cache_dir: compiled_cache_dir(),
            ..HostConfig::default()
        },
        HostServices::default(),
    )?;
    let manifest = match &args.plugin {
        Some(manifest) => manifest.clone(),
        None => {
            let component = locate_component()?;
            let bytes = tokio::fs::read(&component)
                .await
                .with_context(|| format!("reading {}", component.display()))?;
            let text = builtin_manifest(&component, &sha256_hex(&bytes), prometheus_url)?;
            let path = runtime_dir.join("sidecar.toml");
            tokio::fs::write(&path, text)
                .await
                .with_context(|| format!("writing {}", path.display()))?;
            path
        }
    };
    let slot = PluginSlot::load_async(&host, &manifest).await?;
    let world = slot.current().manifest().world;
    if world != World::Sidecar {
        anyhow::bail!(
            "--plugin {}: world is {world}, but `gauntlet sidecar` runs sidecar plugins",
            manifest.display()
        );
    }
    Ok(slot)
}

/// Checks Prometheus every [`HEALTH_INTERVAL`] through the plugin's `tick`, until shutdown.
/// The first success marks the sidecar ready (it then knows the external labels).
async fn watch_health(slot: Arc<PluginSlot>, readiness: Readiness, shutdown: Shutdown) {
    let mut was_up: Option<bool> = None;
    loop {
        let plugin = slot.current();
        let now = chrono::Utc::now().timestamp_millis();
        let result = tokio::task::spawn_blocking(move || plugin.tick(now))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let up = result.is_ok();
        sidecar_metrics().prometheus_up.set(i64::from(up));
        if up {
            readiness.set_ready(true);
        }
        if was_up != Some(up) {
            match &result {
                Ok(()) => tracing::info!("Prometheus is up"),
                Err(e) => tracing::warn!(error = %e, "Prometheus is not reachable"),
            }
            was_up = Some(up);
        }
        tokio::select! {
            () = tokio::time::sleep(HEALTH_INTERVAL) => {}
            () = shutdown.clone().requested() => return,
        }
    }
}

/// `gauntlet sidecar`.
pub async fn run(args: &SidecarArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    let prometheus_url = reqwest::Url::parse(&args.prometheus_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .with_context(|| {
            format!(
                "--prometheus.url {:?} is not an http:// or https:// URL",
                args.prometheus_url
            )
        })?;
    let shipper = shipper_for(args)?;
    let http_listener = http::bind(args.server.http_address, "--http-address").await?;
    let grpc_listener = http::bind(args.server.grpc_address, "--grpc-address").await?;
    let runtime_dir = private_temp_dir()?;
    let slot = load_plugin(args, &prometheus_url, &runtime_dir).await;
    let _ = std::fs::remove_dir_all(&runtime_dir);
    let slot = slot?;
    sidecar_metrics().prometheus_up.set(0);

    let readiness = Readiness::default();
    let store: Arc<dyn Store> = Arc::new(SidecarStore::new(slot.store()));
    tokio::spawn(watch_health(
        slot.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));
    if args.reloader_config_file.is_some() || !args.reloader_rule_dirs.is_empty() {
        let reloader = reloader::Reloader {
            reload_url: prometheus_url
                .join("-/reload")
                .context("--prometheus.url: cannot derive the reload URL")?,
            config_file: args.reloader_config_file.clone(),
            envsubst_file: args.reloader_config_envsubst_file.clone(),
            rule_dirs: args.reloader_rule_dirs.clone(),
            interval: RELOAD_INTERVAL,
            retry_for: Duration::from_secs(120),
        };
        tokio::spawn(reloader.run(shutdown.clone()));
    }
    if let Some(shipper) = shipper {
        tracing::info!(
            tsdb = %shipper.data_dir.display(),
            bucket = shipper.bucket.location(),
            upload_compacted = shipper.upload_compacted,
            "shipping blocks to object storage"
        );
        tokio::spawn(shipper.run(store.clone(), shipper::SYNC_INTERVAL, shutdown.clone()));
    }
    tracing::info!(
        prometheus = %prometheus_url,
        http = %args.server.http_address,
        grpc = %args.server.grpc_address,
        plugin = %slot.current().manifest().component_path.display(),
        "starting sidecar"
    );
    let grpc_server = tokio::spawn(crate::grpc::serve(grpc_listener, store, shutdown.clone()));
    http::serve(http_listener, http::common_routes(readiness), shutdown).await?;
    grpc_server.await??;
    Ok(())
}

/// The shipper the flags ask for: none without an objstore configuration; an error naming
/// the flag when the configuration or `--tsdb.path` is unusable.
fn shipper_for(args: &SidecarArgs) -> anyhow::Result<Option<shipper::Shipper>> {
    let objstore = &args.objstore;
    if objstore.objstore_config_file.is_none() && objstore.objstore_config.is_none() {
        return Ok(None);
    }
    let data_dir = args
        .tsdb_path
        .clone()
        .context("shipping blocks needs --tsdb.path, the data directory of Prometheus")?;
    anyhow::ensure!(
        data_dir.is_dir(),
        "--tsdb.path {} is not a directory: pass the data directory of Prometheus \
         (its --storage.tsdb.path)",
        data_dir.display()
    );
    let bucket = crate::objstore::Bucket::from_flags(
        objstore.objstore_config_file.as_deref(),
        objstore.objstore_config.as_deref(),
        &crate::objstore::ClientTuning::default(),
    )
    .context("--objstore.config")?;
    Ok(Some(shipper::Shipper {
        data_dir,
        bucket,
        upload_compacted: args.shipper_upload_compacted,
    }))
}

/// The per-user folder for compiled components (`$XDG_CACHE_HOME/gauntlet/plugins` or
/// `~/.cache/gauntlet/plugins`); none without a usable home (components are then compiled
/// at every start). Never a shared folder such as `/tmp`: compiled code in the cache is run
/// as is.
pub fn compiled_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|home| home.join(".cache"))
        })?;
    let dir = base.join("gauntlet").join("plugins");
    std::fs::create_dir_all(&dir).ok().map(|()| dir)
}

/// A fresh folder for the generated manifest, created by this process and readable by its
/// user only (an existing folder of the same name is never reused).
fn private_temp_dir() -> anyhow::Result<PathBuf> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    let base = std::env::temp_dir();
    let mut last_error = None;
    for attempt in 0..16u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = base.join(format!(
            "gauntlet-sidecar-{}-{nanos:x}-{attempt}",
            std::process::id()
        ));
        match builder.create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => last_error = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "cannot create a private folder in {}: {}",
        base.display(),
        last_error.map_or_else(String::new, |e| e.to_string())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_allows_only_the_prometheus_host() {
        let url = reqwest::Url::parse("http://127.0.0.1:9091").expect("url");
        let text = builtin_manifest(Path::new("/x/sidecar.wasm"), &"a".repeat(64), &url)
            .expect("manifest");
        let manifest =
            crate::plugin::Manifest::parse(&text, Path::new("/tmp/sidecar.toml")).expect("parse");
        assert_eq!(manifest.capabilities.http_hosts, vec!["127.0.0.1:9091"]);
        assert_eq!(
            manifest.config,
            vec![(
                "prometheus_url".to_owned(),
                "http://127.0.0.1:9091/".to_owned()
            )]
        );
        assert_eq!(
            allowed_host(&reqwest::Url::parse("https://prom.example").expect("url")).expect("host"),
            "prom.example:443"
        );
    }
}
