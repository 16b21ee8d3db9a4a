//! The plugin manifest: a TOML file beside each component saying what the plugin is (name,
//! version, world), where its component is and what its sha256 must be, what it may touch
//! (capabilities, deny by default), how much it may use (limits) and what the querier does
//! when it fails (failure policy), plus the plugin's own `[config]`.
//!
//! Parsing is strict: unknown keys are errors, and every validation error names the field to
//! fix. This module never reads the component itself; [`crate::plugin::PluginHost`] checks the
//! sha256 when it loads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default linear-memory limit of one plugin instance.
pub const DEFAULT_MEMORY: u64 = 64 << 20;
/// Default time one call into a plugin may take.
pub const DEFAULT_TIME_PER_CALL: Duration = Duration::from_secs(5);
/// Default number of host calls one call into a plugin may make.
pub const DEFAULT_HOST_CALLS_PER_CALL: u64 = 100_000;
/// Default cap on series in one batch.
pub const DEFAULT_BATCH_SERIES: u64 = 100_000;
/// Default cap on chunk and label bytes in one batch.
pub const DEFAULT_BATCH_BYTES: u64 = 64 << 20;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("reading manifest {path}: {source}")]
    Read {
        /// The manifest file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown or mistyped keys.
    #[error("manifest {path}: {message}")]
    Syntax {
        /// The manifest file.
        path: PathBuf,
        /// toml's message, which names the key and line.
        message: String,
    },
    /// A field has a value that is not allowed.
    #[error("manifest {path}: field `{field}`: {message}")]
    Field {
        /// The manifest file.
        path: PathBuf,
        /// Dotted field name, e.g. `limits.memory`.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// Which WIT world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// A custom store backend (`store` export).
    StoreBackend,
    /// A sidecar (`store` + `background` exports).
    Sidecar,
    /// A compactor (`compaction` export).
    Compactor,
    /// A ruler (`rules` export).
    Ruler,
}

impl World {
    /// The world's name in the WIT package.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StoreBackend => "store-backend",
            Self::Sidecar => "sidecar",
            Self::Compactor => "compactor",
            Self::Ruler => "ruler",
        }
    }

    /// Parses a world name as written in a manifest.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "store-backend" => Some(Self::StoreBackend),
            "sidecar" => Some(Self::Sidecar),
            "compactor" => Some(Self::Compactor),
            "ruler" => Some(Self::Ruler),
            _ => None,
        }
    }

    /// Whether plugins of this world answer StoreAPI requests.
    pub fn serves_store(self) -> bool {
        matches!(self, Self::StoreBackend | Self::Sidecar)
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the querier does when a plugin fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// The query fails with the plugin's error.
    #[default]
    FailClosed,
    /// The plugin is skipped and the query answers with a warning.
    FailOpen,
}

/// What a plugin may touch beyond `log`, `metrics` and `clock`. Everything is denied unless
/// listed here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Object-storage prefix the `bucket` import is scoped to; `None` denies `bucket`.
    pub bucket_prefix: Option<String>,
    /// Hosts (`host` or `host:port`) the `http` import may reach.
    pub http_hosts: Vec<String>,
    /// Whether the `query` import may run PromQL against the host.
    pub query: bool,
    /// Whether the `alerts` import may send alerts.
    pub alerts: bool,
    /// Environment variables visible through WASI (name → value), none by default.
    pub env: BTreeMap<String, String>,
    /// Whether the whole environment of the host process is visible through WASI (after
    /// `env`, which wins on a name in both); off by default.
    pub inherit_env: bool,
    /// Host directories preopened read-only through WASI (same path inside), none by default.
    pub read_only_dirs: Vec<PathBuf>,
    /// Host directories preopened read-write through WASI (same path inside), none by
    /// default. Inside a read-only directory, a writable one is the only writable part.
    pub writable_dirs: Vec<PathBuf>,
    /// Socket addresses WASI TCP may connect to, none by default.
    pub sockets: Vec<SocketAddr>,
}

/// Resource limits of one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory of one instance, bytes.
    pub memory: u64,
    /// Wall time of one call into the plugin (one `next-batch`, one `label-names`, ...).
    pub time_per_call: Duration,
    /// Wall time of one `background.tick` (world `sidecar`); `time_per_call` unless set.
    pub time_per_tick: Duration,
    /// Host calls (bucket, http, log, ...) one call into the plugin may make.
    pub host_calls_per_call: u64,
    /// Series in one batch.
    pub batch_series: u64,
    /// Label and chunk bytes in one batch.
    pub batch_bytes: u64,
    /// Decode every XOR chunk completely to check it (`validate_chunks = "full"`, the
    /// default), or check only its header and time range (`"header"`, for trusted plugins:
    /// about twice the throughput; a corrupt chunk then fails later, in the querier's decoder).
    pub full_chunk_validation: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: DEFAULT_MEMORY,
            time_per_call: DEFAULT_TIME_PER_CALL,
            time_per_tick: DEFAULT_TIME_PER_CALL,
            host_calls_per_call: DEFAULT_HOST_CALLS_PER_CALL,
            batch_series: DEFAULT_BATCH_SERIES,
            batch_bytes: DEFAULT_BATCH_BYTES,
            full_chunk_validation: true,
        }
    }
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The manifest file it was read from (absolute or as given).
    pub source: PathBuf,
    /// Plugin name: `[a-z0-9][a-z0-9_-]*`, at most 64 characters; names metrics and logs.
    pub name: String,
    /// The plugin's own version (semver).
    pub version: String,
    /// The WIT world it implements.
    pub world: World,
    /// The component file, resolved against the manifest's folder.
    pub component_path: PathBuf,
    /// Expected lowercase hex sha256 of the component file.
    pub sha256: String,
    /// What it may touch.
    pub capabilities: Capabilities,
    /// How much it may use.
    pub limits: Limits,
    /// What the querier does when it fails.
    pub failure_policy: FailurePolicy,
    /// The `[config]` table flattened to `key = value` strings for `lifecycle.init`.
    pub config: Vec<(String, String)>,
}

// ------------------------------------------------------------------ raw TOML shape

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    world: String,
    path: String,
    sha256: String,
    #[serde(default)]
    failure_policy: Option<String>,
    #[serde(default)]
    capabilities: RawCapabilities,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    config: Option<toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapabilities {
    bucket_prefix: Option<String>,
    #[serde(default)]
    http_hosts: Vec<String>,
    #[serde(default)]
    query: bool,
    #[serde(default)]
    alerts: bool,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    inherit_env: bool,
    #[serde(default)]
    read_only_dirs: Vec<String>,
    #[serde(default)]
    writable_dirs: Vec<String>,
    #[serde(default)]
    sockets: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<toml::Value>,
    time_per_call: Option<String>,
    time_per_tick: Option<String>,
    host_calls_per_call: Option<u64>,
    batch_series: Option<u64>,
    batch_bytes: Option<toml::Value>,
    validate_chunks: Option<String>,
}

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates manifest text; `source` locates relative component paths and
    /// names the file in errors.
    pub fn parse(text: &str, source: &Path) -> Result<Self, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Syntax {
            path: source.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let field = |field: &'static str, message: String| ManifestError::Field {
            path: source.to_owned(),
            field,
            message,
        };

        if !valid_name(&raw.name) {
            return Err(field(
                "name",
                format!(
                    "{:?} is not a plugin name (lowercase letters, digits, `-` and `_`, starting with a letter or digit, at most 64)",
                    raw.name
                ),
            ));
        }
        if !valid_version(&raw.version) {
            return Err(field(
                "version",
                format!("{:?} is not a semver version like 1.2.3", raw.version),
            ));
        }
        let world = World::parse(&raw.world).ok_or_else(|| {
            field(
                "world",
                format!(
                    "unknown world {:?} (expected store-backend, sidecar, compactor or ruler)",
                    raw.world
                ),
            )
        })?;
        if raw.path.trim().is_empty() {
            return Err(field("path", "must name the component file".to_owned()));
        }
        let component_path = {
            let given = PathBuf::from(&raw.path);
            if given.is_absolute() {
                given
            } else {
                source
                    .parent()
                    .unwrap_or_else(|| Path::new("."))
                    .join(given)
            }
        };
        let sha256 = raw.sha256.trim().to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(field(
                "sha256",
                "must be 64 hexadecimal digits (the sha256 of the component file)".to_owned(),
            ));
        }
        let failure_policy = match raw.failure_policy.as_deref() {
            None | Some("fail-closed") => FailurePolicy::FailClosed,
            Some("fail-open") => FailurePolicy::FailOpen,
            Some(other) => {
                return Err(field(
                    "failure_policy",
                    format!("{other:?} is not fail-closed or fail-open"),
                ));
            }
        };

        let caps = raw.capabilities;
        let bucket_prefix = match caps.bucket_prefix {
            None => None,
            Some(prefix) => Some(
                normalize_prefix(&prefix).map_err(|m| field("capabilities.bucket_prefix", m))?,
            ),
        };
        for host in &caps.http_hosts {
            if !valid_host_entry(host) {
                return Err(field(
                    "capabilities.http_hosts",
                    format!("{host:?} is not `host` or `host:port`"),
                ));
            }
        }
        for name in caps.env.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(field(
                    "capabilities.env",
                    format!("{name:?} is not an environment variable name"),
                ));
            }
        }
        let read_only_dirs = granted_dirs(caps.read_only_dirs)
            .map_err(|m| field("capabilities.read_only_dirs", m))?;
        let writable_dirs =
            granted_dirs(caps.writable_dirs).map_err(|m| field("capabilities.writable_dirs", m))?;
        let mut sockets = Vec::with_capacity(caps.sockets.len());
        for addr in caps.sockets {
            sockets.push(addr.parse::<SocketAddr>().map_err(|_| {
                field(
                    "capabilities.sockets",
                    format!("{addr:?} is not an ip:port socket address"),
                )
            })?);
        }
        let capabilities = Capabilities {
            bucket_prefix,
            http_hosts: caps
                .http_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            query: caps.query,
            alerts: caps.alerts,
            env: caps.env,
            inherit_env: caps.inherit_env,
            read_only_dirs,
            writable_dirs,
            sockets,
        };

        let mut limits = Limits::default();
        if let Some(memory) = &raw.limits.memory {
            limits.memory = parse_bytes(memory).map_err(|m| field("limits.memory", m))?;
            if limits.memory < (1 << 20) {
                return Err(field("limits.memory", "must be at least 1MiB".to_owned()));
            }
        }
        if let Some(time) = &raw.limits.time_per_call {
            limits.time_per_call = crate::duration::parse(time)
                .map_err(|e| field("limits.time_per_call", e.to_string()))?;
            if limits.time_per_call.is_zero() {
                return Err(field(
                    "limits.time_per_call",
                    "must be more than zero".to_owned(),
                ));
            }
        }
        limits.time_per_tick = limits.time_per_call;
        if let Some(time) = &raw.limits.time_per_tick {
            limits.time_per_tick = crate::duration::parse(time)
                .map_err(|e| field("limits.time_per_tick", e.to_string()))?;
            if limits.time_per_tick.is_zero() {
                return Err(field(
                    "limits.time_per_tick",
                    "must be more than zero".to_owned(),
                ));
            }
        }
        if let Some(calls) = raw.limits.host_calls_per_call {
            limits.host_calls_per_call = calls;
        }
        if let Some(series) = raw.limits.batch_series {
            if series == 0 {
                return Err(field(
                    "limits.batch_series",
                    "must be more than zero".to_owned(),
                ));
            }
            limits.batch_series = series;
        }
        if let Some(bytes) = &raw.limits.batch_bytes {
            limits.batch_bytes = parse_bytes(bytes).map_err(|m| field("limits.batch_bytes", m))?;
        }

        match raw.limits.validate_chunks.as_deref() {
            None | Some("full") => limits.full_chunk_validation = true,
            Some("header") => limits.full_chunk_validation = false,
            Some(other) => {
                return Err(field(
                    "limits.validate_chunks",
                    format!("{other:?} is not full or header"),
                ));
            }
        }

        let mut config = Vec::new();
        if let Some(table) = &raw.config {
            flatten_config("", table, &mut config);
        }

        Ok(Self {
            source: source.to_owned(),
            name: raw.name,
            version: raw.version,
            world,
            component_path,
            sha256,
            capabilities,
            limits,
            failure_policy,
            config,
        })
    }
}

/// Checks granted directories: absolute, without `.` or `..` components (a grant names
/// exactly the folder it opens).
fn granted_dirs(dirs: Vec<String>) -> Result<Vec<PathBuf>, String> {
    dirs.into_iter()
        .map(|dir| {
            let path = PathBuf::from(&dir);
            if !path.is_absolute() {
                return Err(format!("{dir} is not an absolute path"));
            }
            if path.components().any(|c| {
                matches!(
                    c,
                    std::path::Component::ParentDir | std::path::Component::CurDir
                )
            }) || dir
                .split('/')
                .any(|segment| segment == "." || segment == "..")
            {
                return Err(format!("{dir} has a `.` or `..` component"));
            }
            Ok(path)
        })
        .collect()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn valid_version(version: &str) -> bool {
    let core = version.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn valid_host_entry(entry: &str) -> bool {
    let (host, port) = match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.starts_with('[') => (host, Some(port)),
        _ => (entry, None),
    };
    !host.is_empty()
        && !host.contains('/')
        && !host.contains('@')
        && !host.contains(char::is_whitespace)
        && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

/// Normalises a bucket prefix: no leading `/`, no `..` or `.` segments, ends with `/`.
fn normalize_prefix(prefix: &str) -> Result<String, String> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Err(
            "must name a folder such as `tenants/a/` (the whole bucket is never granted)"
                .to_owned(),
        );
    }
    for segment in trimmed.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." || segment.contains('\\') {
            return Err(format!(
                "{prefix:?} has an empty, `.`, `..` or backslash segment"
            ));
        }
    }
    Ok(format!("{trimmed}/"))
}

/// Parses a byte size: an integer, or a string such as `64MiB`, `1GiB`, `512KiB`, `10MB`.
pub fn parse_bytes(value: &toml::Value) -> Result<u64, String> {
    match value {
        toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| format!("{n} is negative")),
        toml::Value::String(text) => {
            let text = text.trim();
            let split = text
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len());
            let (number, unit) = text.split_at(split);
            let number: u64 = number
                .parse()
                .map_err(|_| format!("{text:?} is not a size like 64MiB"))?;
            let multiplier: u64 = match unit.trim() {
                "" | "B" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                "KB" => 1_000,
                "MB" => 1_000_000,
                "GB" => 1_000_000_000,
                other => {
                    return Err(format!(
                        "unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
                    ));
                }
            };
            number
                .checked_mul(multiplier)
                .ok_or_else(|| format!("{text:?} is too large"))
        }
        other => Err(format!(
            "{other} is not a size (an integer or a string like \"64MiB\")"
        )),
    }
}

fn flatten_config(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
    for (key, value) in table {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => flatten_config(&name, inner, out),
            toml::Value::String(s) => out.push((name, s.clone())),
            toml::Value::Array(items) => {
                let joined: Vec<String> = items
                    .iter()
                    .map(|v| match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                out.push((name, joined.join(",")));
            }
            other => out.push((name, other.to_string())),
        }
    }
}

/// The lowercase hex sha256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for byte in digest {
        use std::fmt::Write;
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "csv-store"
version = "0.1.0"
world = "store-backend"
path = "file-store.wasm"
sha256 = "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
failure_policy = "fail-open"

[capabilities]
bucket_prefix = "/metrics/csv"
http_hosts = ["127.0.0.1:8080", "api.example.com"]

[limits]
memory = "32MiB"
time_per_call = "1s500ms"

[config]
prefix = "data/"
batch_series = 10
nested = { a = "x", b = true }
"#;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("/plugins/csv/plugin.toml"))
    }

    #[test]
    fn parses_a_full_manifest() {
        let m = parse(GOOD).expect("test setup");
        assert_eq!(m.name, "csv-store");
        assert_eq!(m.world, World::StoreBackend);
        assert_eq!(
            m.component_path,
            PathBuf::from("/plugins/csv/file-store.wasm")
        );
        assert_eq!(&m.sha256[..6], "abcdef");
        assert_eq!(m.failure_policy, FailurePolicy::FailOpen);
        assert_eq!(
            m.capabilities.bucket_prefix.as_deref(),
            Some("metrics/csv/")
        );
        assert_eq!(m.limits.memory, 32 << 20);
        assert_eq!(m.limits.time_per_call, Duration::from_millis(1500));
        assert!(
            m.config
                .contains(&("batch_series".to_owned(), "10".to_owned()))
        );
        assert!(
            m.config
                .contains(&("nested.b".to_owned(), "true".to_owned()))
        );
        assert!(!m.capabilities.query && !m.capabilities.alerts);
    }

    fn field_of(text: &str) -> String {
        match parse(text) {
            Err(ManifestError::Field { field, .. }) => field.to_owned(),
            Err(other) => format!("other: {other}"),
            Ok(_) => "ok".to_owned(),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(&GOOD.replace("csv-store", "CSV Store")), "name");
        assert_eq!(field_of(&GOOD.replace("\"0.1.0\"", "\"one\"")), "version");
        assert_eq!(field_of(&GOOD.replace("store-backend", "nope")), "world");
        assert_eq!(field_of(&GOOD.replace("ABCDEF", "XYZ")), "sha256");
        assert_eq!(
            field_of(&GOOD.replace("\"fail-open\"", "\"maybe\"")),
            "failure_policy"
        );
        assert_eq!(
            field_of(&GOOD.replace("/metrics/csv", "../up")),
            "capabilities.bucket_prefix"
        );
        assert_eq!(
            field_of(&GOOD.replace("/metrics/csv", "/")),
            "capabilities.bucket_prefix"
        );
        assert_eq!(
            field_of(&GOOD.replace("\"32MiB\"", "\"32 parsecs\"")),
            "limits.memory"
        );
        assert_eq!(
            field_of(&GOOD.replace("1s500ms", "soon")),
            "limits.time_per_call"
        );
        assert_eq!(
            field_of(&GOOD.replace("api.example.com", "http://x/y")),
            "capabilities.http_hosts"
        );
        let with_dirs = |line: &str| GOOD.replace("[limits]", &format!("{line}\n\n[limits]"));
        assert_eq!(
            field_of(&with_dirs("writable_dirs = [\"relative/dir\"]")),
            "capabilities.writable_dirs"
        );
        assert_eq!(
            field_of(&with_dirs("read_only_dirs = [\"/data/../etc\"]")),
            "capabilities.read_only_dirs"
        );
        assert_eq!(
            field_of(&GOOD.replace("1s500ms", "1s\"\ntime_per_tick = \"0s")),
            "limits.time_per_tick"
        );
    }

    #[test]
    fn directory_grants_and_the_tick_limit() {
        let text = GOOD.replace(
            "[limits]",
            "inherit_env = true\nread_only_dirs = [\"/data/prometheus\"]\nwritable_dirs = [\"/data/prometheus/thanos\"]\n\n[limits]\ntime_per_tick = \"10m\"",
        );
        let m = parse(&text).expect("test setup");
        assert!(m.capabilities.inherit_env);
        assert_eq!(
            m.capabilities.read_only_dirs,
            [PathBuf::from("/data/prometheus")]
        );
        assert_eq!(
            m.capabilities.writable_dirs,
            [PathBuf::from("/data/prometheus/thanos")]
        );
        assert_eq!(m.limits.time_per_tick, Duration::from_secs(600));
        // Without time_per_tick, a tick has the time of any call.
        let m = parse(GOOD).expect("test setup");
        assert_eq!(m.limits.time_per_tick, m.limits.time_per_call);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = parse(&GOOD.replace("[limits]", "[limits]\nmemroy = 1")).expect_err("must fail");
        assert!(err.to_string().contains("memroy"), "{err}");
    }

    #[test]
    fn defaults_deny_everything() {
        let text = r#"
name = "p"
version = "1.0.0"
world = "ruler"
path = "/abs/p.wasm"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
"#;
        let m = parse(text).expect("test setup");
        assert_eq!(m.capabilities, Capabilities::default());
        assert_eq!(m.failure_policy, FailurePolicy::FailClosed);
        assert_eq!(m.limits, Limits::default());
        assert_eq!(m.component_path, PathBuf::from("/abs/p.wasm"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes(&toml::Value::Integer(5)), Ok(5));
        assert_eq!(
            parse_bytes(&toml::Value::String("2GiB".into())),
            Ok(2 << 30)
        );
        assert!(parse_bytes(&toml::Value::Integer(-1)).is_err());
    }

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
