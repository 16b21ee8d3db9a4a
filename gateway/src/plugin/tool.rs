//! The library side of `gauntlet plugin new | inspect | validate`: template generation for a
//! new plugin crate, a description of a manifest or component (sha256, world, imports,
//! exports), and a full validation that loads the plugin exactly as the host would
//! (manifest checks, sha256, compile, world check, `init` with its config).
//!
//! These functions print nothing; they return values whose `Display` is what the CLI shows.
//! `new` never overwrites an existing file.

use std::fmt;
use std::path::{Path, PathBuf};

use super::PluginError;
use super::engine::{HostConfig, HostServices, PluginHost};
use super::manifest::{Manifest, World, sha256_hex};

/// Why a tool command failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The plugin name is not valid.
    #[error("invalid plugin name {0:?}: use lowercase letters, digits, `-` and `_`")]
    InvalidName(String),
    /// A file the template would write exists already.
    #[error("{0} already exists; not overwriting it")]
    Exists(PathBuf),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The path is neither a manifest (`.toml`) nor a component (`.wasm`).
    #[error("{0}: expected a plugin manifest (.toml) or a component (.wasm)")]
    UnknownKind(PathBuf),
    /// Loading the plugin failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ToolError + '_ {
    move |source| ToolError::Io {
        path: path.to_owned(),
        source,
    }
}

// ------------------------------------------------------------------------------- new

/// What `plugin new` wrote.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    /// The crate folder.
    pub dir: PathBuf,
    /// Every file written.
    pub files: Vec<PathBuf>,
}

impl fmt::Display for NewPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "created {}", self.dir.display())?;
        for file in &self.files {
            writeln!(f, "  {}", file.display())?;
        }
        writeln!(f, "next:")?;
        writeln!(
            f,
            "  cargo build --release --target wasm32-wasip2 --manifest-path {}/Cargo.toml",
            self.dir.display()
        )?;
        write!(
            f,
            "  gauntlet plugin validate {}/plugin.toml --update-sha256",
            self.dir.display()
        )
    }
}

/// Generates a plugin crate `parent/NAME` for `world`: `Cargo.toml` (its own workspace),
/// `src/lib.rs`, `plugin.toml` and `README.md`. `sdk` is the path of the `sdk/` folder the
/// crate depends on (a path dependency).
pub fn new_plugin(
    parent: &Path,
    name: &str,
    world: World,
    sdk: &Path,
) -> Result<NewPlugin, ToolError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        || !name.as_bytes()[0].is_ascii_lowercase()
    {
        return Err(ToolError::InvalidName(name.to_owned()));
    }
    let dir = parent.join(name);
    let crate_name = name.replace('-', "_");
    let sdk = sdk.to_string_lossy().replace('\\', "/");
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk, world)),
        ("src/lib.rs", lib_rs(world, &format!("{sdk}/../wit"))),
        (
            "plugin.toml",
            manifest_toml(
                name,
                world,
                &format!("target/wasm32-wasip2/release/{crate_name}.wasm"),
            ),
        ),
        ("README.md", readme(name, world)),
    ];
    for (file, _) in &files {
        let path = dir.join(file);
        if path.exists() {
            return Err(ToolError::Exists(path));
        }
    }
    let mut written = Vec::new();
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
        written.push(path);
    }
    Ok(NewPlugin {
        dir,
        files: written,
    })
}

fn cargo_toml(name: &str, sdk: &str, world: World) -> String {
    let bindgen = if world == World::StoreBackend {
        ""
    } else {
        "wit-bindgen = { version = \"0.46\", default-features = false, features = [\"macros\", \"realloc\"] }\n"
    };
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
rust-version = "1.95"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
gauntlet-plugin-sdk = {{ path = "{sdk}" }}
{bindgen}
# A plugin is its own workspace, built with:
#   cargo build --release --target wasm32-wasip2
[workspace]

[profile.release]
opt-level = 3
lto = "thin"
strip = "debuginfo"
panic = "abort"
"#
    )
}

fn manifest_toml(name: &str, world: World, path: &str) -> String {
    format!(
        r#"# Manifest of the {name} plugin. The host refuses to load the component unless its
# sha256 matches: after each build run `gauntlet plugin validate plugin.toml --update-sha256`.
name = "{name}"
version = "0.1.0"
world = "{world}"
path = "{path}"
sha256 = "{zeros}"
# fail-closed: a failure fails the query; fail-open: the plugin is skipped with a warning.
failure_policy = "fail-closed"

[capabilities]
# Everything is denied unless granted here.
# bucket_prefix = "metrics/"
# http_hosts = ["api.example.com"]

[limits]
memory = "64MiB"
time_per_call = "5s"

[config]
# Passed to `lifecycle.init` as key/value strings.
greeting = "hello"
"#,
        world = world.as_str(),
        zeros = "0".repeat(64),
    )
}

fn readme(name: &str, world: World) -> String {
    format!(
        "# {name}\n\nA Gauntlet `{world}` plugin. See `docs/write-a-store-plugin.md` in the Gauntlet \
         repository.\n\n```sh\ncargo build --release --target wasm32-wasip2\ngauntlet plugin validate plugin.toml --update-sha256\n```\n",
        world = world.as_str()
    )
}

fn lib_rs(world: World, wit: &str) -> String {
    match world {
        World::StoreBackend => STORE_TEMPLATE.to_owned(),
        other => other_world_template(other, wit),
    }
}

const STORE_TEMPLATE: &str = r#"//! A Gauntlet store plugin: serves one series, `hello_plugin{greeting="..."}`, with a sample
//! every 15 seconds over the requested range (at most 10 000 samples).

use std::cell::RefCell;

use gauntlet_plugin_sdk::batch::Batcher;
use gauntlet_plugin_sdk::chunks::ChunkEncoder;
use gauntlet_plugin_sdk::config::Config;
use gauntlet_plugin_sdk::matchers::MatcherSet;
use gauntlet_plugin_sdk::store_backend::exports::gauntlet::plugin::{lifecycle, store};
use gauntlet_plugin_sdk::{labels, PluginError, Series, TimeRange};

thread_local! {
    static GREETING: RefCell<String> = RefCell::new(String::new());
}

struct Plugin;

impl lifecycle::Guest for Plugin {
    fn init(config: Vec<(String, String)>) -> Result<(), PluginError> {
        let config = Config::new(config);
        let greeting = config.require("greeting")?.to_owned();
        GREETING.with(|g| *g.borrow_mut() = greeting);
        Ok(())
    }
}

fn series_labels() -> Vec<gauntlet_plugin_sdk::Label> {
    GREETING.with(|g| labels(&[("__name__", "hello_plugin"), ("greeting", g.borrow().as_str())]))
}

pub struct Stream(RefCell<Batcher>);

impl store::GuestSeriesStream for Stream {
    fn next_batch(&self) -> Result<Option<store::SeriesBatch>, PluginError> {
        Ok(self.0.borrow_mut().next_batch().map(|series| store::SeriesBatch {
            series,
            warnings: Vec::new(),
        }))
    }
}

// `packed-series.next-packed-batch` answers with what `next_batch` returns, its chunk bytes in
// one list; override `next_packed_batch` to build packed batches directly.
impl gauntlet_plugin_sdk::PackedStream for Stream {}

impl store::Guest for Plugin {
    type SeriesStream = Stream;

    fn info() -> Result<store::StoreInfo, PluginError> {
        Ok(store::StoreInfo {
            label_sets: Vec::new(),
            range: TimeRange { min_time: i64::MIN, max_time: i64::MAX },
        })
    }

    fn select(request: store::SeriesRequest) -> Result<store::SeriesStream, PluginError> {
        let matchers = MatcherSet::new(&request.matchers)?;
        let labels = series_labels();
        let mut out = Vec::new();
        if matchers.matches(&labels) {
            let step = 15_000;
            let start = request.range.min_time.max(0).div_euclid(step) * step;
            let mut chunks = ChunkEncoder::new();
            let mut t = start.max(request.range.min_time);
            let mut n = 0;
            while t <= request.range.max_time && n < 10_000 {
                chunks.push(t, n as f64)?;
                t += step;
                n += 1;
            }
            let chunks = if request.skip_chunks { Vec::new() } else { chunks.finish() };
            if n > 0 {
                out.push(Series { labels, chunks });
            }
        }
        Ok(store::SeriesStream::new(Stream(RefCell::new(Batcher::new(out)))))
    }

    fn label_names(request: store::LabelRequest) -> Result<store::LabelResponse, PluginError> {
        let matchers = MatcherSet::new(&request.matchers)?;
        let labels = series_labels();
        let values = if matchers.matches(&labels) {
            labels.into_iter().map(|l| l.name).collect()
        } else {
            Vec::new()
        };
        Ok(store::LabelResponse { values, warnings: Vec::new() })
    }

    fn label_values(
        name: String,
        request: store::LabelRequest,
    ) -> Result<store::LabelResponse, PluginError> {
        let matchers = MatcherSet::new(&request.matchers)?;
        let labels = series_labels();
        let values = if matchers.matches(&labels) {
            labels.into_iter().filter(|l| l.name == name).map(|l| l.value).collect()
        } else {
            Vec::new()
        };
        Ok(store::LabelResponse { values, warnings: Vec::new() })
    }
}

gauntlet_plugin_sdk::store_backend::export_store_backend!(Plugin);
"#;

fn other_world_template(world: World, wit: &str) -> String {
    let (interface, body) = match world {
        World::Sidecar => (
            "store and background",
            "// Implement exports::gauntlet::plugin::{lifecycle, store, packed_series, background}::Guest here.\n",
        ),
        World::Compactor => (
            "compaction",
            "// Implement exports::gauntlet::plugin::{lifecycle, compaction}::Guest here.\n",
        ),
        World::Ruler | World::StoreBackend => (
            "rules",
            "// Implement exports::gauntlet::plugin::{lifecycle, rules}::Guest here.\n",
        ),
    };
    format!(
        r#"//! A Gauntlet `{world}` plugin ({interface}). The SDK generates the host imports once;
//! this crate generates its world's export glue, reusing the SDK's import bindings.

wit_bindgen::generate!({{
    path: "{wit}",
    world: "{world}",
    with: {{
        "gauntlet:plugin/types@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::types,
        "gauntlet:plugin/log@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::log,
        "gauntlet:plugin/metrics@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::metrics,
        "gauntlet:plugin/clock@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::clock,
        "gauntlet:plugin/bucket@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::bucket,
        "gauntlet:plugin/http@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::http,
        "gauntlet:plugin/query@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::query,
        "gauntlet:plugin/alerts@0.1.1": gauntlet_plugin_sdk::bindings::gauntlet::plugin::alerts,
    }},
}});

{body}
// export!(YourType);
"#,
        world = world.as_str(),
    )
}

// --------------------------------------------------------------------------- inspect

/// What `plugin inspect` shows.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The manifest, when a manifest was inspected.
    pub manifest: Option<Manifest>,
    /// The component file.
    pub component: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256.
    pub sha256: String,
    /// Whether it matches the manifest's (when there is one).
    pub sha256_matches: Option<bool>,
    /// Worlds whose exports the component provides.
    pub worlds: Vec<World>,
    /// Import names (interfaces with versions).
    pub imports: Vec<String>,
    /// Export names.
    pub exports: Vec<String>,
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(m) = &self.manifest {
            writeln!(f, "manifest:        {}", m.source.display())?;
            writeln!(f, "name:            {}", m.name)?;
            writeln!(f, "version:         {}", m.version)?;
            writeln!(f, "world:           {}", m.world)?;
            writeln!(f, "failure policy:  {:?}", m.failure_policy)?;
            writeln!(f, "memory limit:    {} bytes", m.limits.memory)?;
            writeln!(f, "time per call:   {:?}", m.limits.time_per_call)?;
            if m.world == crate::plugin::World::Sidecar {
                writeln!(f, "time per tick:   {:?}", m.limits.time_per_tick)?;
            }
            let caps = &m.capabilities;
            writeln!(
                f,
                "capabilities:    bucket_prefix={} http_hosts=[{}] query={} alerts={} env={} inherit_env={} read_only_dirs={} writable_dirs={} sockets={}",
                caps.bucket_prefix.as_deref().unwrap_or("-"),
                caps.http_hosts.join(", "),
                caps.query,
                caps.alerts,
                caps.env.len(),
                caps.inherit_env,
                caps.read_only_dirs.len(),
                caps.writable_dirs.len(),
                caps.sockets.len()
            )?;
        }
        writeln!(f, "component:       {}", self.component.display())?;
        writeln!(f, "size:            {} bytes", self.size)?;
        write!(f, "sha256:          {}", self.sha256)?;
        match self.sha256_matches {
            Some(true) => writeln!(f, " (matches the manifest)")?,
            Some(false) => writeln!(f, " (DOES NOT match the manifest)")?,
            None => writeln!(f)?,
        }
        let worlds: Vec<&str> = self.worlds.iter().map(|w| w.as_str()).collect();
        writeln!(
            f,
            "fits worlds:     {}",
            if worlds.is_empty() {
                "none".to_owned()
            } else {
                worlds.join(", ")
            }
        )?;
        writeln!(f, "imports:")?;
        for name in &self.imports {
            writeln!(f, "  {name}")?;
        }
        writeln!(f, "exports:")?;
        for name in &self.exports {
            writeln!(f, "  {name}")?;
        }
        Ok(())
    }
}

fn tool_host(cache_dir: Option<&Path>) -> Result<PluginHost, ToolError> {
    Ok(PluginHost::new(
        HostConfig {
            max_instances: 4,
            cache_dir: cache_dir.map(Path::to_owned),
            ..HostConfig::default()
        },
        HostServices::default(),
    )?)
}

/// Describes a manifest (`.toml`, with its component) or a bare component (`.wasm`):
/// sha256, the worlds it fits, its imports and exports. Compiles the component (blocking),
/// through the compiled-component cache in `cache_dir` when given.
pub fn inspect(path: &Path, cache_dir: Option<&Path>) -> Result<Inspection, ToolError> {
    inspect_with(&tool_host(cache_dir)?, path)
}

fn inspect_with(host: &PluginHost, path: &Path) -> Result<Inspection, ToolError> {
    let (manifest, component_path) = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => {
            let manifest = Manifest::load(path).map_err(PluginError::from)?;
            let component = manifest.component_path.clone();
            (Some(manifest), component)
        }
        Some("wasm") => (None, path.to_owned()),
        _ => return Err(ToolError::UnknownKind(path.to_owned())),
    };
    let bytes = std::fs::read(&component_path).map_err(io(&component_path))?;
    let sha256 = sha256_hex(&bytes);
    let sha256_matches = manifest.as_ref().map(|m| m.sha256 == sha256);
    let name = manifest.as_ref().map_or("inspect", |m| m.name.as_str());
    let component = host.compile_cached(name, &sha256, &bytes)?;
    let engine = host.engine();
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
    let has = |interface: &str| {
        exports
            .iter()
            .any(|e| e.starts_with(&format!("gauntlet:plugin/{interface}@")))
    };
    let mut worlds = Vec::new();
    if has("lifecycle") {
        if has("store") {
            worlds.push(World::StoreBackend);
            if has("background") {
                worlds.push(World::Sidecar);
            }
        }
        if has("compaction") {
            worlds.push(World::Compactor);
        }
        if has("rules") {
            worlds.push(World::Ruler);
        }
    }
    Ok(Inspection {
        manifest,
        component: component_path,
        size: bytes.len() as u64,
        sha256,
        sha256_matches,
        worlds,
        imports,
        exports,
    })
}

// -------------------------------------------------------------------------- validate

/// What `plugin validate` checked.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Everything `inspect` shows.
    pub inspection: Inspection,
    /// Set when the sha256 in the manifest was rewritten (`update_sha256`).
    pub sha256_updated: bool,
}

impl fmt::Display for Validation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inspection)?;
        if self.sha256_updated {
            writeln!(f, "sha256 in the manifest updated")?;
        }
        write!(
            f,
            "ok: manifest valid, sha256 matches, component fits world {}, init accepted the config",
            self.inspection
                .manifest
                .as_ref()
                .map_or("?", |m| m.world.as_str())
        )
    }
}

/// Validates a manifest the way the host loads it: fields, sha256 (optionally rewritten first
/// with `update_sha256`), compile, world exports, imports the host provides, and `init` with
/// the manifest's config. Blocking; needs a tokio runtime only if `init` uses the bucket.
/// `cache_dir` is the compiled-component cache, as for [`inspect`].
pub fn validate(
    manifest_path: &Path,
    update_sha256: bool,
    cache_dir: Option<&Path>,
) -> Result<Validation, ToolError> {
    let mut updated = false;
    if update_sha256 {
        updated = rewrite_sha256(manifest_path)?;
    }
    let host = tool_host(cache_dir)?;
    let inspection = inspect_with(&host, manifest_path)?;
    host.load(manifest_path)?;
    Ok(Validation {
        inspection,
        sha256_updated: updated,
    })
}

/// Rewrites the manifest's `sha256 = "..."` line with the component's sha256. Returns whether
/// the file changed.
pub fn rewrite_sha256(manifest_path: &Path) -> Result<bool, ToolError> {
    let text = std::fs::read_to_string(manifest_path).map_err(io(manifest_path))?;
    // Parse leniently: the current sha256 may be a placeholder, but every other field must be
    // valid for the component path to be trusted.
    let manifest = Manifest::parse(&text, manifest_path).map_err(PluginError::from)?;
    let bytes = std::fs::read(&manifest.component_path).map_err(io(&manifest.component_path))?;
    let sha256 = sha256_hex(&bytes);
    if sha256 == manifest.sha256 {
        return Ok(false);
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.trim_start().starts_with("sha256") && line.contains('=') {
            out.push_str(&format!("sha256 = \"{sha256}\""));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    std::fs::write(manifest_path, out).map_err(io(manifest_path))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_plugin_writes_a_crate_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let created = new_plugin(
            dir.path(),
            "my-store",
            World::StoreBackend,
            Path::new("/sdk"),
        )
        .expect("new");
        assert_eq!(created.files.len(), 4);
        let manifest =
            std::fs::read_to_string(dir.path().join("my-store/plugin.toml")).expect("read");
        let parsed =
            Manifest::parse(&manifest, &dir.path().join("my-store/plugin.toml")).expect("parse");
        assert_eq!(parsed.world, World::StoreBackend);
        assert!(
            parsed
                .component_path
                .ends_with("target/wasm32-wasip2/release/my_store.wasm")
        );
        let cargo = std::fs::read_to_string(dir.path().join("my-store/Cargo.toml")).expect("read");
        assert!(cargo.contains("path = \"/sdk\""));
        assert!(matches!(
            new_plugin(
                dir.path(),
                "my-store",
                World::StoreBackend,
                Path::new("/sdk")
            ),
            Err(ToolError::Exists(_))
        ));
        assert!(matches!(
            new_plugin(
                dir.path(),
                "My Store",
                World::StoreBackend,
                Path::new("/sdk")
            ),
            Err(ToolError::InvalidName(_))
        ));
        new_plugin(dir.path(), "my-ruler", World::Ruler, Path::new("/sdk")).expect("ruler");
    }

    #[test]
    fn inspect_refuses_other_files() {
        assert!(matches!(
            inspect(Path::new("x.txt"), None),
            Err(ToolError::UnknownKind(_))
        ));
    }
}
