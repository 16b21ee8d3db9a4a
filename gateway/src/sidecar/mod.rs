//! `gauntlet sidecar`: serves the Prometheus server next to it over the StoreAPI, keeps its
//! configuration reloaded and ships its blocks to object storage, all through the sidecar
//! WebAssembly plugin (`plugins/sidecar`, world `sidecar`).
//!
//! The plugin is the built-in component `sidecar.wasm` (see [`locate_component`]) or the one
//! `--plugin` names. The built-in one gets a manifest built from the flags ([`Grants`]) with
//! exactly what it needs: HTTP to the `--prometheus.url` host; with the reloader, the folder of
//! `--reloader.config-file` and every `--reloader.rule-dir` read-only, the folder of
//! `--reloader.config-envsubst-file` writable and this process's environment (for `$(ENV)`
//! substitution; only then); with the shipper, `--tsdb.path` read-only, its `thanos/` folder
//! writable (the shipper's state), and the bucket of `--objstore.config`. It runs under the
//! host's limits like any plugin. This module serves it as `thanos.Store` +
//! `thanos.info.Info` on gRPC (component type `sidecar`), HTTP with `/metrics`
//! (`gauntlet_sidecar_prometheus_up` and the plugin metrics), `/-/healthy` and `/-/ready`,
//! and calls its `tick` every [`TICK_INTERVAL`] (health, reloader, shipper).
//!
//! A Prometheus that is down never stops the sidecar: calls fail with `unavailable` (the
//! querier turns them into warnings), `gauntlet_sidecar_prometheus_up` drops to 0, and
//! everything recovers by itself when Prometheus answers again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use gauntlet_proto::thanos::info::InfoResponse;
use gauntlet_proto::thanos::{
    LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, SeriesRequest,
};
use prometheus::IntGauge;

use crate::cli::SidecarArgs;
use crate::compact::RootBucket;
use crate::http::{self, Readiness};
use crate::plugin::bucket::{Bucket, ObjectStoreBucket};
use crate::plugin::manifest::sha256_hex;
use crate::plugin::{HostConfig, HostServices, PluginHost, PluginSlot, PluginStore, World};
use crate::query::store::{SeriesStream, Store, StoreError};
use crate::shutdown::Shutdown;

/// File name of the built-in sidecar component.
pub const COMPONENT_FILE: &str = "sidecar.wasm";
/// Environment variable naming a folder to look for [`COMPONENT_FILE`] in first.
pub const PLUGIN_DIR_ENV: &str = "GAUNTLET_PLUGIN_DIR";
/// How often the plugin's `tick` runs (Prometheus's health, a reloader round, a shipper
/// sync when one is due).
pub const TICK_INTERVAL: Duration = Duration::from_secs(1);
/// The bucket folder the built-in plugin is granted: the whole bucket (see [`RootBucket`]).
pub const BUCKET_GRANT: &str = crate::compact::ROOT_ALIAS;
/// The folder of `--tsdb.path` the shipper may write (its state file), as Thanos keeps its
/// upload staging there.
pub const STATE_DIR: &str = "thanos";

/// Metrics of the sidecar role.
#[derive(Debug)]
pub struct SidecarMetrics {
    /// `gauntlet_sidecar_prometheus_up`: 1 when the last health check of Prometheus passed.
    pub prometheus_up: IntGauge,
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
        let _ = crate::metrics::registry().register(Box::new(prometheus_up.clone()));
        SidecarMetrics { prometheus_up }
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

/// The built-in components this binary carries: (file name, bytes). The build embeds those
/// `scripts/build-plugins` had built before it (`plugins/target/components/`); empty
/// otherwise.
pub static EMBEDDED: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The built-in component `file` of `role`: the first file of [`builtin_candidates`] that
/// exists, else the copy built into the binary ([`EMBEDDED`]), written once per content to the
/// per-user cache (`$XDG_CACHE_HOME/gauntlet/builtin` or `~/.cache/gauntlet/builtin`); or an
/// error listing where it was looked for and how to provide it.
pub fn locate_builtin(file: &str, role: &str) -> anyhow::Result<PathBuf> {
    let candidates = builtin_candidates(file);
    if let Some(found) = candidates.iter().find(|path| path.is_file()) {
        return Ok(found.clone());
    }
    if EMBEDDED.iter().any(|(name, _)| *name == file) {
        let dir = user_cache_dir("builtin").with_context(|| {
            format!(
                "the {role} plugin {file} is built into this binary, but there is no per-user cache folder to write it to (set HOME or XDG_CACHE_HOME, or {PLUGIN_DIR_ENV})"
            )
        })?;
        if let Some(path) = write_embedded(&dir, file, EMBEDDED)? {
            return Ok(path);
        }
    }
    Err(anyhow::anyhow!(
        "the {role} plugin {file} was not found (looked in {}) and is not built into this binary; build it with scripts/build-plugins (before building gauntlet, to build it in), set {PLUGIN_DIR_ENV}, or pass --plugin",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Writes the copy of `file` in `table` to `dir` as `<sha256 prefix>-<file>` unless a file
/// with the same content is there already; returns its path, or none when `table` has no
/// `file`. Written to a temporary name and renamed, so a concurrent start never reads half a
/// component.
fn write_embedded(
    dir: &Path,
    file: &str,
    table: &[(&str, &[u8])],
) -> anyhow::Result<Option<PathBuf>> {
    let Some((_, bytes)) = table.iter().find(|(name, _)| *name == file) else {
        return Ok(None);
    };
    let sha256 = sha256_hex(bytes);
    let path = dir.join(format!("{}-{file}", &sha256[..16]));
    if std::fs::read(&path).is_ok_and(|existing| sha256_hex(&existing) == sha256) {
        return Ok(Some(path));
    }
    let temporary = dir.join(format!(".{file}.{}.tmp", std::process::id()));
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, &path))
        .with_context(|| format!("writing the built-in plugin to {}", path.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })?;
    Ok(Some(path))
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

/// What the built-in plugin is granted beyond HTTP to Prometheus, derived from the flags.
/// Paths are absolute and free of `.`/`..`; a folder granted writable is not also listed
/// read-only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// `--reloader.config-file` (its folder granted read-only).
    pub config_file: Option<PathBuf>,
    /// `--reloader.config-envsubst-file` (its folder granted writable, and the environment).
    pub envsubst_file: Option<PathBuf>,
    /// `--reloader.rule-dir` folders (read-only).
    pub rule_dirs: Vec<PathBuf>,
    /// `--tsdb.path` when shipping (read-only).
    pub tsdb: Option<PathBuf>,
    /// `<tsdb>/thanos` when it exists or could be created (writable).
    pub state_dir: Option<PathBuf>,
    /// `--shipper.upload-compacted`.
    pub upload_compacted: bool,
}

impl Grants {
    /// The grants the flags ask for; `ship` says whether object storage is configured. Files
    /// and folders that must exist are checked here, with errors naming the flag.
    pub fn from_args(args: &SidecarArgs, ship: bool) -> anyhow::Result<Self> {
        let mut grants = Self {
            upload_compacted: args.shipper_upload_compacted,
            ..Self::default()
        };
        if let Some(file) = &args.reloader_config_file {
            grants.config_file = Some(file_in_real_folder(file, "--reloader.config-file")?);
        }
        if let Some(file) = &args.reloader_config_envsubst_file {
            anyhow::ensure!(
                grants.config_file.is_some(),
                "--reloader.config-envsubst-file needs --reloader.config-file"
            );
            grants.envsubst_file = Some(file_in_real_folder(
                file,
                "--reloader.config-envsubst-file",
            )?);
        }
        for dir in &args.reloader_rule_dirs {
            grants
                .rule_dirs
                .push(real_folder(dir, "--reloader.rule-dir")?);
        }
        if ship {
            let tsdb = args
                .tsdb_path
                .as_deref()
                .context("shipping blocks needs --tsdb.path, the data directory of Prometheus")?;
            let tsdb = real_folder(tsdb, "--tsdb.path").context(
                "pass the data directory of Prometheus (its --storage.tsdb.path) as --tsdb.path",
            )?;
            let state = tsdb.join(STATE_DIR);
            match std::fs::create_dir_all(&state) {
                Ok(()) => grants.state_dir = Some(state),
                Err(error) => tracing::error!(
                    folder = %state.display(),
                    %error,
                    "cannot create the shipper's state folder: make it writable by the sidecar (until then, blocks found in the bucket after a restart are recorded again, not uploaded)"
                ),
            }
            grants.tsdb = Some(tsdb);
        }
        Ok(grants)
    }

    /// Folders preopened read-only: the configuration's, the rule folders and the TSDB.
    pub fn read_only_dirs(&self) -> Vec<PathBuf> {
        let writable = self.writable_dirs();
        let mut dirs: Vec<PathBuf> = self
            .config_file
            .iter()
            .filter_map(|file| file.parent().map(Path::to_path_buf))
            .chain(self.rule_dirs.iter().cloned())
            .chain(self.tsdb.iter().cloned())
            .filter(|dir| !writable.contains(dir))
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Folders preopened writable: the envsubst file's and the shipper's state folder.
    pub fn writable_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .envsubst_file
            .iter()
            .filter_map(|file| file.parent().map(Path::to_path_buf))
            .chain(self.state_dir.iter().cloned())
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

/// `path` as an absolute path without symlinks or `..` in its folder; the last component is
/// kept as given (a configuration file swapped through a symlink stays watched by name).
fn file_in_real_folder(path: &Path, flag: &str) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{flag} {}: not a file name", path.display()))?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    Ok(real_folder(parent, flag)?.join(name))
}

/// An existing folder as an absolute path without symlinks or `..`.
fn real_folder(dir: &Path, flag: &str) -> anyhow::Result<PathBuf> {
    let real = dir
        .canonicalize()
        .with_context(|| format!("{flag} {}", dir.display()))?;
    anyhow::ensure!(real.is_dir(), "{flag} {} is not a directory", dir.display());
    anyhow::ensure!(
        real.to_str().is_some(),
        "{flag} {}: the path is not valid UTF-8",
        dir.display()
    );
    Ok(real)
}

fn path_value(path: &Path) -> toml::Value {
    toml::Value::String(path.to_string_lossy().into_owned())
}

/// The manifest of the built-in plugin for one Prometheus, with `grants`.
pub fn builtin_manifest(
    component: &Path,
    sha256: &str,
    prometheus_url: &reqwest::Url,
    grants: &Grants,
) -> anyhow::Result<String> {
    use toml::{Table, Value};
    let host = allowed_host(prometheus_url)?;
    let strings = |items: Vec<PathBuf>| Value::Array(items.iter().map(|p| path_value(p)).collect());
    let mut root = Table::new();
    root.insert("name".into(), Value::String("sidecar".into()));
    root.insert(
        "version".into(),
        Value::String(crate::build_info::VERSION.into()),
    );
    root.insert("world".into(), Value::String("sidecar".into()));
    root.insert("path".into(), path_value(component));
    root.insert("sha256".into(), Value::String(sha256.into()));
    root.insert("failure_policy".into(), Value::String("fail-closed".into()));

    let mut capabilities = Table::new();
    capabilities.insert("http_hosts".into(), Value::Array(vec![Value::String(host)]));
    let read_only = grants.read_only_dirs();
    if !read_only.is_empty() {
        capabilities.insert("read_only_dirs".into(), strings(read_only));
    }
    let writable = grants.writable_dirs();
    if !writable.is_empty() {
        capabilities.insert("writable_dirs".into(), strings(writable));
    }
    if grants.envsubst_file.is_some() {
        capabilities.insert("inherit_env".into(), Value::Boolean(true));
    }
    if grants.tsdb.is_some() {
        capabilities.insert("bucket_prefix".into(), Value::String(BUCKET_GRANT.into()));
    }
    root.insert("capabilities".into(), Value::Table(capabilities));

    let mut limits = Table::new();
    limits.insert("memory".into(), Value::String("512MiB".into()));
    limits.insert("time_per_call".into(), Value::String("60s".into()));
    // One tick may upload a block of several gigabytes.
    limits.insert("time_per_tick".into(), Value::String("30m".into()));
    limits.insert("host_calls_per_call".into(), Value::Integer(100_000));
    limits.insert("validate_chunks".into(), Value::String("header".into()));
    root.insert("limits".into(), Value::Table(limits));

    let mut config = Table::new();
    config.insert(
        "prometheus_url".into(),
        Value::String(prometheus_url.as_str().into()),
    );
    let mut reloader = Table::new();
    if let Some(file) = &grants.config_file {
        reloader.insert("config_file".into(), path_value(file));
    }
    if let Some(file) = &grants.envsubst_file {
        reloader.insert("envsubst_file".into(), path_value(file));
    }
    if !grants.rule_dirs.is_empty() {
        let dirs: Table = grants
            .rule_dirs
            .iter()
            .enumerate()
            .map(|(i, dir)| (i.to_string(), path_value(dir)))
            .collect();
        reloader.insert("rule_dirs".into(), Value::Table(dirs));
    }
    if !reloader.is_empty() {
        config.insert("reloader".into(), Value::Table(reloader));
    }
    if let Some(tsdb) = &grants.tsdb {
        let mut shipper = Table::new();
        shipper.insert("tsdb_path".into(), path_value(tsdb));
        if let Some(state) = &grants.state_dir {
            shipper.insert("state_dir".into(), path_value(state));
        }
        shipper.insert(
            "upload_compacted".into(),
            Value::Boolean(grants.upload_compacted),
        );
        config.insert("shipper".into(), Value::Table(shipper));
    }
    root.insert("config".into(), Value::Table(config));
    Ok(root.to_string())
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

/// Loads the sidecar plugin: the `--plugin` manifest (its `bucket_prefix` is a folder of the
/// bucket), or the built-in component with a manifest for `grants` written to `runtime_dir`
/// (granted the whole bucket).
async fn load_plugin(
    args: &SidecarArgs,
    prometheus_url: &reqwest::Url,
    grants: &Grants,
    bucket: Option<&crate::objstore::Bucket>,
    runtime_dir: &Path,
) -> anyhow::Result<Arc<PluginSlot>> {
    let objects: Option<Arc<dyn Bucket>> = bucket.map(|bucket| {
        let objects: Arc<dyn Bucket> = Arc::new(ObjectStoreBucket::from_objstore(bucket));
        match &args.plugin {
            Some(_) => objects,
            None => Arc::new(RootBucket::new(objects)) as Arc<dyn Bucket>,
        }
    });
    let host = PluginHost::new(
        HostConfig {
            cache_dir: compiled_cache_dir(),
            ..HostConfig::default()
        },
        HostServices {
            bucket: objects,
            ..HostServices::default()
        },
    )?;
    let manifest = match &args.plugin {
        Some(manifest) => manifest.clone(),
        None => {
            let component = locate_component()?;
            let bytes = tokio::fs::read(&component)
                .await
                .with_context(|| format!("reading {}", component.display()))?;
            let text = builtin_manifest(&component, &sha256_hex(&bytes), prometheus_url, grants)?;
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

/// Runs the plugin's `tick` every [`TICK_INTERVAL`] until shutdown: Prometheus's health (the
/// tick's result), a reloader round and, when due, a shipper sync. The first success marks
/// the sidecar ready (it then knows the external labels).
async fn run_ticks(slot: Arc<PluginSlot>, readiness: Readiness, shutdown: Shutdown) {
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
            () = tokio::time::sleep(TICK_INTERVAL) => {}
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
    let bucket = bucket_for(args)?;
    let grants = Grants::from_args(args, bucket.is_some())?;
    let http_listener = http::bind(args.server.http_address, "--http-address").await?;
    let grpc_listener = http::bind(args.server.grpc_address, "--grpc-address").await?;
    let runtime_dir = private_temp_dir()?;
    let slot = load_plugin(
        args,
        &prometheus_url,
        &grants,
        bucket.as_ref(),
        &runtime_dir,
    )
    .await;
    let _ = std::fs::remove_dir_all(&runtime_dir);
    let slot = slot?;
    sidecar_metrics().prometheus_up.set(0);

    let readiness = Readiness::default();
    let store: Arc<dyn Store> = Arc::new(SidecarStore::new(slot.store()));
    tokio::spawn(run_ticks(slot.clone(), readiness.clone(), shutdown.clone()));
    if let (Some(bucket), Some(tsdb)) = (&bucket, &grants.tsdb) {
        tracing::info!(
            tsdb = %tsdb.display(),
            bucket = bucket.location(),
            upload_compacted = grants.upload_compacted,
            "shipping blocks to object storage"
        );
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

/// The object storage the flags configure, if any: blocks are shipped to it.
fn bucket_for(args: &SidecarArgs) -> anyhow::Result<Option<crate::objstore::Bucket>> {
    let objstore = &args.objstore;
    if objstore.objstore_config_file.is_none() && objstore.objstore_config.is_none() {
        return Ok(None);
    }
    crate::objstore::Bucket::from_flags(
        objstore.objstore_config_file.as_deref(),
        objstore.objstore_config.as_deref(),
        &crate::objstore::ClientTuning::default(),
    )
    .context("--objstore.config")
    .map(Some)
}

/// The per-user folder for compiled components (`$XDG_CACHE_HOME/gauntlet/plugins` or
/// `~/.cache/gauntlet/plugins`); none without a usable home (components are then compiled
/// at every start). Never a shared folder such as `/tmp`: compiled code in the cache is run
/// as is.
pub fn compiled_cache_dir() -> Option<PathBuf> {
    user_cache_dir("plugins")
}

/// `$XDG_CACHE_HOME/gauntlet/<name>` or `~/.cache/gauntlet/<name>`, created; none without a
/// usable home.
fn user_cache_dir(name: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|home| home.join(".cache"))
        })?;
    let dir = base.join("gauntlet").join(name);
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
        let text = builtin_manifest(
            Path::new("/x/sidecar.wasm"),
            &"a".repeat(64),
            &url,
            &Grants::default(),
        )
        .expect("manifest");
        let manifest =
            crate::plugin::Manifest::parse(&text, Path::new("/tmp/sidecar.toml")).expect("parse");
        assert_eq!(manifest.capabilities.http_hosts, vec!["127.0.0.1:9091"]);
        assert_eq!(
            manifest.capabilities,
            crate::plugin::manifest::Capabilities {
                http_hosts: vec!["127.0.0.1:9091".to_owned()],
                ..Default::default()
            }
        );
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

    #[test]
    fn embedded_components_are_written_once_per_content() {
        let dir = tempfile::tempdir().expect("test setup");
        let table: &[(&str, &[u8])] = &[("sidecar.wasm", b"\0asm component")];
        let path = write_embedded(dir.path(), "sidecar.wasm", table)
            .expect("write")
            .expect("in the table");
        assert_eq!(std::fs::read(&path).expect("read"), b"\0asm component");
        assert!(
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("-sidecar.wasm"))
        );
        // A damaged copy is replaced; an intact one is reused.
        std::fs::write(&path, b"damaged").expect("test setup");
        let again = write_embedded(dir.path(), "sidecar.wasm", table)
            .expect("write")
            .expect("in the table");
        assert_eq!(again, path);
        assert_eq!(std::fs::read(&path).expect("read"), b"\0asm component");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
        assert!(
            write_embedded(dir.path(), "compactor.wasm", table)
                .expect("write")
                .is_none()
        );
        // Whatever this build carries is a component of the listed names.
        for (name, bytes) in EMBEDDED {
            assert!(["sidecar.wasm", "compactor.wasm"].contains(name), "{name}");
            assert!(bytes.starts_with(b"\0asm"), "{name}");
        }
    }

    #[test]
    fn the_manifest_grants_exactly_what_the_reloader_and_shipper_need() {
        let grants = Grants {
            config_file: Some(PathBuf::from("/etc/prometheus/prometheus.yml.tmpl")),
            envsubst_file: Some(PathBuf::from("/shared/prometheus.yml")),
            rule_dirs: vec![PathBuf::from("/etc/rules"), PathBuf::from("/shared")],
            tsdb: Some(PathBuf::from("/data/prom \"x\"")),
            state_dir: Some(PathBuf::from("/data/prom \"x\"/thanos")),
            upload_compacted: true,
        };
        let url = reqwest::Url::parse("http://127.0.0.1:9091").expect("url");
        let text = builtin_manifest(Path::new("/x/sidecar.wasm"), &"a".repeat(64), &url, &grants)
            .expect("manifest");
        let manifest =
            crate::plugin::Manifest::parse(&text, Path::new("/tmp/sidecar.toml")).expect("parse");
        let caps = &manifest.capabilities;
        // `/shared` is writable (the envsubst output), so it is not also listed read-only.
        assert_eq!(
            caps.read_only_dirs,
            [
                PathBuf::from("/data/prom \"x\""),
                PathBuf::from("/etc/prometheus"),
                PathBuf::from("/etc/rules"),
            ]
        );
        assert_eq!(
            caps.writable_dirs,
            [
                PathBuf::from("/data/prom \"x\"/thanos"),
                PathBuf::from("/shared")
            ]
        );
        assert!(caps.inherit_env);
        assert!(caps.env.is_empty());
        assert_eq!(caps.bucket_prefix.as_deref(), Some(BUCKET_GRANT));
        assert!(!caps.query && !caps.alerts && caps.sockets.is_empty());
        assert_eq!(manifest.limits.time_per_tick, Duration::from_secs(1800));
        let config: std::collections::BTreeMap<_, _> = manifest.config.iter().cloned().collect();
        assert_eq!(
            config["reloader.config_file"],
            "/etc/prometheus/prometheus.yml.tmpl"
        );
        assert_eq!(config["reloader.envsubst_file"], "/shared/prometheus.yml");
        assert_eq!(config["reloader.rule_dirs.0"], "/etc/rules");
        assert_eq!(config["reloader.rule_dirs.1"], "/shared");
        assert_eq!(config["shipper.tsdb_path"], "/data/prom \"x\"");
        assert_eq!(config["shipper.state_dir"], "/data/prom \"x\"/thanos");
        assert_eq!(config["shipper.upload_compacted"], "true");
        // Keys are relative to the bucket grant: no prefix of the plugin's own.
        assert!(!config.contains_key("shipper.key_prefix"));

        // Without an envsubst file the environment stays closed.
        let without = Grants {
            envsubst_file: None,
            ..grants
        };
        let text = builtin_manifest(
            Path::new("/x/sidecar.wasm"),
            &"a".repeat(64),
            &url,
            &without,
        )
        .expect("manifest");
        let manifest =
            crate::plugin::Manifest::parse(&text, Path::new("/tmp/sidecar.toml")).expect("parse");
        assert!(!manifest.capabilities.inherit_env);
        assert!(
            manifest
                .capabilities
                .read_only_dirs
                .contains(&PathBuf::from("/shared"))
        );
    }
}
