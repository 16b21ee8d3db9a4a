//! Flag definitions for every role. Names, defaults and meanings follow Thanos so that existing
//! deployments move over by changing the binary name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::plugin::World;
use crate::telemetry::{LogFormat, LogLevel};

/// Gauntlet: one global, deduplicated PromQL view over many Prometheus servers, with long-term
/// storage in object storage and sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(
    name = "gauntlet",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Logging flags, accepted before or after the subcommand.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only log messages with this severity or above.
    #[arg(long = "log.level", value_enum, default_value = "info", global = true)]
    pub level: LogLevel,
    /// Output format of log messages.
    #[arg(
        long = "log.format",
        value_enum,
        default_value = "logfmt",
        global = true
    )]
    pub format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Query node: PromQL over every StoreAPI endpoint, with replica deduplication.
    Query(QueryArgs),
    /// Store gateway: serves Prometheus blocks from object storage over the StoreAPI.
    Store(StoreArgs),
    /// Sidecar next to a Prometheus: StoreAPI over remote read, config reloader, block shipper.
    Sidecar(SidecarArgs),
    /// Receiver: accepts Prometheus remote write and serves it over the StoreAPI.
    Receive(ReceiveArgs),
    /// Compactor: compacts, downsamples and applies retention to blocks in object storage.
    Compact(CompactArgs),
    /// Ruler: evaluates recording and alerting rules against a querier.
    Rule(RuleArgs),
    /// Everything in one process on a local bucket with generated data; UI on localhost.
    Demo(DemoArgs),
    /// Create, inspect and validate WebAssembly plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Utilities: bucket inspection and block upload.
    #[command(subcommand)]
    Tools(ToolsCommand),
}

/// HTTP and gRPC listen flags shared by the serving roles.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Listen host:port for HTTP endpoints (API, UI, /metrics, /-/healthy, /-/ready).
    #[arg(
        long = "http-address",
        value_name = "HOST:PORT",
        default_value = "0.0.0.0:10902"
    )]
    pub http_address: SocketAddr,
    /// Time to wait after an interrupt for in-flight HTTP requests to finish.
    #[arg(long = "http-grace-period", value_name = "DURATION", default_value = "2m", value_parser = duration)]
    pub http_grace_period: Duration,
    /// Listen host:port for the gRPC StoreAPI and Info services.
    #[arg(
        long = "grpc-address",
        value_name = "HOST:PORT",
        default_value = "0.0.0.0:10901"
    )]
    pub grpc_address: SocketAddr,
    /// Time to wait after an interrupt for in-flight gRPC calls to finish.
    #[arg(long = "grpc-grace-period", value_name = "DURATION", default_value = "2m", value_parser = duration)]
    pub grpc_grace_period: Duration,
}

/// Object storage configuration, in Thanos's objstore YAML.
#[derive(Debug, Args)]
pub struct ObjstoreArgs {
    /// Path to a YAML file with the object storage configuration (type: S3|GCS|AZURE|FILESYSTEM).
    #[arg(long = "objstore.config-file", value_name = "FILE", value_parser = readable_file, conflicts_with = "objstore_config")]
    pub objstore_config_file: Option<PathBuf>,
    /// The object storage configuration as inline YAML (instead of --objstore.config-file).
    #[arg(long = "objstore.config", value_name = "YAML")]
    pub objstore_config: Option<String>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Address (host:port) of a StoreAPI endpoint to query. Repeatable.
    #[arg(long = "endpoint", visible_alias = "store", value_name = "HOST:PORT")]
    pub endpoints: Vec<String>,
    /// Files with endpoint addresses (file service discovery, YAML or JSON target groups),
    /// re-read when they change. Repeatable.
    #[arg(
        long = "endpoint.sd-files",
        visible_alias = "store.sd-files",
        value_name = "FILE"
    )]
    pub endpoint_sd_files: Vec<PathBuf>,
    /// Refresh interval for the --endpoint.sd-files, in addition to reloading on change.
    #[arg(long = "endpoint.sd-interval", visible_alias = "store.sd-interval", value_name = "DURATION", default_value = "5m", value_parser = duration)]
    pub endpoint_sd_interval: Duration,
    /// Label that distinguishes replicas of the same data; removed and deduplicated. Repeatable.
    #[arg(long = "query.replica-label", value_name = "LABEL")]
    pub replica_labels: Vec<String>,
    /// Answer with a warning instead of an error when some stores fail (the default).
    #[arg(
        long = "query.partial-response",
        overrides_with = "no_partial_response"
    )]
    pub partial_response: bool,
    /// Fail the whole query when any store fails.
    #[arg(long = "no-query.partial-response")]
    pub no_partial_response: bool,
    /// Maximum time to process a query.
    #[arg(long = "query.timeout", value_name = "DURATION", default_value = "2m", value_parser = duration)]
    pub timeout: Duration,
    /// Maximum number of queries processed concurrently.
    #[arg(long = "query.max-concurrent", value_name = "N", default_value_t = 20)]
    pub max_concurrent: usize,
    /// How far back to look for a sample when evaluating an instant vector.
    #[arg(long = "query.lookback-delta", value_name = "DURATION", default_value = "5m", value_parser = duration)]
    pub lookback_delta: Duration,
    /// Maximum number of samples a single query may hold in memory.
    #[arg(
        long = "query.max-samples",
        value_name = "N",
        default_value_t = 50_000_000
    )]
    pub max_samples: u64,
    /// Maximum series a single store may return for one request (0: unlimited).
    #[arg(
        long = "store.limits.request-series",
        value_name = "N",
        default_value_t = 0
    )]
    pub request_series_limit: u64,
    /// Maximum samples a single store may return for one request (0: unlimited).
    #[arg(
        long = "store.limits.request-samples",
        value_name = "N",
        default_value_t = 0
    )]
    pub request_samples_limit: u64,
    /// Timeout for one store's response; 0 means the query timeout applies.
    #[arg(long = "store.response-timeout", value_name = "DURATION", default_value = "0", value_parser = duration)]
    pub store_response_timeout: Duration,
}

impl QueryArgs {
    /// Partial response is on unless `--no-query.partial-response` was given.
    pub fn partial_response_enabled(&self) -> bool {
        self.partial_response || !self.no_partial_response
    }
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub objstore: ObjstoreArgs,
    /// Local directory for index-headers and caches.
    #[arg(long = "data-dir", value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Serve only blocks ending after this time (RFC3339 or relative like -2w).
    #[arg(long = "min-time", value_name = "TIME")]
    pub min_time: Option<String>,
    /// Serve only blocks starting before this time (RFC3339 or relative like -1d).
    #[arg(long = "max-time", value_name = "TIME")]
    pub max_time: Option<String>,
    /// Maximum size of the in-memory index cache: postings lists and series entries (e.g.
    /// 250MB).
    #[arg(
        long = "index-cache-size",
        value_name = "SIZE",
        default_value = "250MB"
    )]
    pub index_cache_size: String,
    /// Maximum bytes of chunks the Series requests in flight hold at once; a request that
    /// would need more fails with resource exhausted (e.g. 2GB).
    #[arg(long = "chunk-pool-size", value_name = "SIZE", default_value = "2GB")]
    pub chunk_pool_size: String,
    /// Maximum size of the in-memory chunk cache; 0 reads every chunk from the bucket, as
    /// Thanos does without a caching bucket (e.g. 512MB).
    #[arg(
        long = "store.chunk-cache-size",
        value_name = "SIZE",
        default_value = "0"
    )]
    pub chunk_cache_size: String,
    /// Keep one postings offset table value in this many in memory per label name; the rest
    /// is read from the local index-header when a lookup needs it (1 keeps every value).
    #[arg(
        long = "store.index-header-posting-offsets-in-mem-sampling",
        value_name = "N",
        default_value_t = 32,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub postings_offsets_sampling: u64,
    /// How often to look for new and deleted blocks in the bucket.
    #[arg(long = "sync-block-duration", value_name = "DURATION", default_value = "15m", value_parser = duration)]
    pub sync_block_duration: Duration,
    /// Maximum series one Series request may touch (0: unlimited).
    #[arg(
        long = "store.limits.request-series",
        value_name = "N",
        default_value_t = 0
    )]
    pub request_series_limit: u64,
    /// Maximum samples one Series request may return (0: unlimited).
    #[arg(
        long = "store.limits.request-samples",
        value_name = "N",
        default_value_t = 0
    )]
    pub request_samples_limit: u64,
    /// Serve a store plugin (a manifest.toml beside its component) instead of a bucket.
    #[arg(long = "plugin", value_name = "MANIFEST", value_parser = readable_file)]
    pub plugin: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SidecarArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub objstore: ObjstoreArgs,
    /// URL at which the Prometheus server next to this sidecar is reached.
    #[arg(
        long = "prometheus.url",
        value_name = "URL",
        default_value = "http://localhost:9090"
    )]
    pub prometheus_url: String,
    /// Data directory of that Prometheus; needed to ship blocks to object storage.
    #[arg(long = "tsdb.path", value_name = "DIR")]
    pub tsdb_path: Option<PathBuf>,
    /// Ship compacted blocks (level > 1) too, e.g. once to migrate existing data; only with
    /// compaction disabled in Prometheus.
    #[arg(long = "shipper.upload-compacted")]
    pub shipper_upload_compacted: bool,
    /// Prometheus configuration file to watch; changes trigger a reload of Prometheus.
    #[arg(long = "reloader.config-file", value_name = "FILE", value_parser = readable_file)]
    pub reloader_config_file: Option<PathBuf>,
    /// Where to write --reloader.config-file with $(ENV) variables substituted.
    #[arg(long = "reloader.config-envsubst-file", value_name = "FILE")]
    pub reloader_config_envsubst_file: Option<PathBuf>,
    /// Rule directories to watch; changes trigger a reload of Prometheus. Repeatable.
    #[arg(long = "reloader.rule-dir", value_name = "DIR")]
    pub reloader_rule_dirs: Vec<PathBuf>,
    /// Use this sidecar plugin (manifest.toml) instead of the built-in one.
    #[arg(long = "plugin", value_name = "MANIFEST", value_parser = readable_file)]
    pub plugin: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub objstore: ObjstoreArgs,
    /// Listen host:port for Prometheus remote write (POST /api/v1/receive).
    #[arg(
        long = "remote-write.address",
        value_name = "HOST:PORT",
        default_value = "0.0.0.0:19291"
    )]
    pub remote_write_address: SocketAddr,
    /// Directory for the write-ahead log and the local head block.
    #[arg(long = "tsdb.path", value_name = "DIR", default_value = "./data")]
    pub tsdb_path: PathBuf,
    /// How long to keep blocks locally.
    #[arg(long = "tsdb.retention", value_name = "DURATION", default_value = "15d", value_parser = duration)]
    pub tsdb_retention: Duration,
    /// External label to announce, as name="value". Repeatable.
    #[arg(long = "label", value_name = "NAME=\"VALUE\"", value_parser = external_label)]
    pub labels: Vec<(String, String)>,
    /// HTTP header that carries the tenant of a write request.
    #[arg(
        long = "receive.tenant-header",
        value_name = "HEADER",
        default_value = "THANOS-TENANT"
    )]
    pub tenant_header: String,
    /// Tenant used when a request carries no tenant header.
    #[arg(
        long = "receive.default-tenant-id",
        value_name = "TENANT",
        default_value = "default-tenant"
    )]
    pub default_tenant: String,
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Listen host:port for HTTP endpoints (/metrics, /-/healthy, /-/ready).
    #[arg(
        long = "http-address",
        value_name = "HOST:PORT",
        default_value = "0.0.0.0:10902"
    )]
    pub http_address: SocketAddr,
    #[command(flatten)]
    pub objstore: ObjstoreArgs,
    /// Scratch directory for blocks being compacted.
    #[arg(long = "data-dir", value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Keep running and compact again every --wait-interval instead of exiting after one pass.
    #[arg(long = "wait")]
    pub wait: bool,
    /// Pause between compaction passes with --wait.
    #[arg(long = "wait-interval", value_name = "DURATION", default_value = "5m", value_parser = duration)]
    pub wait_interval: Duration,
    /// How long to keep raw-resolution samples (0d: forever).
    #[arg(long = "retention.resolution-raw", value_name = "DURATION", default_value = "0d", value_parser = duration)]
    pub retention_raw: Duration,
    /// How long to keep 5m-downsampled samples (0d: forever).
    #[arg(long = "retention.resolution-5m", value_name = "DURATION", default_value = "0d", value_parser = duration)]
    pub retention_5m: Duration,
    /// How long to keep 1h-downsampled samples (0d: forever).
    #[arg(long = "retention.resolution-1h", value_name = "DURATION", default_value = "0d", value_parser = duration)]
    pub retention_1h: Duration,
    /// Use this compactor plugin (manifest.toml) instead of the built-in one.
    #[arg(long = "plugin", value_name = "MANIFEST", value_parser = readable_file)]
    pub plugin: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RuleArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub objstore: ObjstoreArgs,
    /// Rule files to evaluate (Prometheus rule file format; globs allowed). Repeatable.
    #[arg(long = "rule-file", value_name = "FILE", default_value = "rules/")]
    pub rule_files: Vec<String>,
    /// Address of a querier to evaluate rules against. Repeatable.
    #[arg(long = "query", value_name = "URL")]
    pub queriers: Vec<String>,
    /// Alertmanager URL to send alerts to. Repeatable.
    #[arg(long = "alertmanagers.url", value_name = "URL")]
    pub alertmanagers: Vec<String>,
    /// Default evaluation interval of rule groups.
    #[arg(long = "eval-interval", value_name = "DURATION", default_value = "1m", value_parser = duration)]
    pub eval_interval: Duration,
    /// External label to add to produced series and alerts, as name="value". Repeatable.
    #[arg(long = "label", value_name = "NAME=\"VALUE\"", value_parser = external_label)]
    pub labels: Vec<(String, String)>,
    /// Directory for the ruler's local TSDB.
    #[arg(long = "data-dir", value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Use this ruler plugin (manifest.toml) instead of the built-in one.
    #[arg(long = "plugin", value_name = "MANIFEST", value_parser = readable_file)]
    pub plugin: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Listen host:port for the UI and the Prometheus HTTP API.
    #[arg(
        long = "http-address",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:29090"
    )]
    pub http_address: SocketAddr,
    /// Listen host:port for the StoreAPI, so other queriers can use the demo's data.
    #[arg(
        long = "grpc-address",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:29091"
    )]
    pub grpc_address: SocketAddr,
    /// Directory for the demo's bucket of blocks and index-headers (default: a `gauntlet-demo`
    /// folder in the system temp directory).
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a new plugin crate from a template.
    New {
        /// Name of the plugin (also the crate and directory name).
        name: String,
        /// The WIT world the plugin implements: store-backend, sidecar, compactor or ruler.
        #[arg(long = "world", value_name = "WORLD", default_value = "store-backend", value_parser = plugin_world)]
        world: World,
        /// Directory to create the plugin in.
        #[arg(long = "dir", value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// The plugin SDK (`sdk/` of a Gauntlet checkout) the new crate depends on.
        #[arg(long = "sdk", value_name = "DIR", env = "GAUNTLET_PLUGIN_SDK", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk"))]
        sdk: PathBuf,
    },
    /// Print a plugin's manifest, world, imports and exports.
    Inspect {
        /// A manifest (plugin.toml) or a component (.wasm).
        path: PathBuf,
        /// Cache for compiled components.
        #[arg(long = "cache-dir", value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Check a plugin the way the host loads it: manifest, sha256, world, imports, init.
    Validate {
        /// A manifest (plugin.toml).
        path: PathBuf,
        /// Write the component's sha256 into the manifest first.
        #[arg(long = "update-sha256")]
        update_sha256: bool,
        /// Cache for compiled components.
        #[arg(long = "cache-dir", value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// Inspect and modify the blocks in a bucket.
    #[command(subcommand)]
    Bucket(BucketCommand),
}

#[derive(Debug, Subcommand)]
pub enum BucketCommand {
    /// List the blocks in a bucket.
    Ls(BucketArgs),
    /// Print a table of the blocks in a bucket: ULID, time range, series, samples, resolution,
    /// labels.
    Inspect {
        #[command(flatten)]
        bucket: BucketArgs,
        /// Output format: an aligned table, tab-separated values, or JSON.
        #[arg(long = "output", value_enum, default_value = "table")]
        output: InspectOutput,
    },
    /// Upload existing Prometheus blocks from a directory to the bucket (meta.json last).
    Upload {
        #[command(flatten)]
        bucket: BucketArgs,
        /// A Prometheus data directory or a single block directory.
        dir: PathBuf,
        /// External label to add to the uploaded blocks' Thanos metadata. Repeatable.
        #[arg(long = "label", value_name = "NAME=\"VALUE\"", value_parser = external_label)]
        labels: Vec<(String, String)>,
    },
}

/// Output format of `gauntlet tools bucket inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InspectOutput {
    /// Aligned columns for people.
    Table,
    /// Tab-separated values with a header line.
    Tsv,
    /// One JSON array of blocks.
    Json,
}

#[derive(Debug, Args)]
pub struct BucketArgs {
    #[command(flatten)]
    pub objstore: ObjstoreArgs,
}

/// A WIT world name.
fn plugin_world(text: &str) -> Result<World, String> {
    World::parse(text)
        .ok_or_else(|| format!("unknown world {text:?} (store-backend, sidecar, compactor, ruler)"))
}

/// A Prometheus duration flag value (`30s`, `5m`, `1h30m`).
fn duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text).map_err(|error| error.to_string())
}

/// A file that exists and can be opened for reading, checked at start so the error names the
/// flag instead of surfacing later.
fn readable_file(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    match std::fs::File::open(&path) {
        Ok(file) => match file.metadata() {
            Ok(meta) if meta.is_dir() => Err(format!("{text} is a directory, not a file")),
            _ => Ok(path),
        },
        Err(error) => Err(format!("cannot read {text}: {error}")),
    }
}

/// An external label as Thanos writes it: `name="value"` (quotes optional).
fn external_label(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not of the form name=\"value\""))?;
    let valid_name = name
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if name.is_empty() || !valid_name {
        return Err(format!("{name:?} is not a valid label name"));
    }
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    Ok((name.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn endpoint_accepts_the_store_alias() {
        let cli = Cli::try_parse_from([
            "gauntlet",
            "query",
            "--endpoint",
            "a:1",
            "--store",
            "b:2",
            "--query.replica-label",
            "replica",
        ])
        .expect("valid command line");
        let Command::Query(query) = cli.command else {
            panic!("expected the query role")
        };
        assert_eq!(query.endpoints, ["a:1", "b:2"]);
        assert_eq!(query.replica_labels, ["replica"]);
        assert!(query.partial_response_enabled());
        assert_eq!(query.lookback_delta, Duration::from_secs(300));
    }

    #[test]
    fn partial_response_can_be_disabled() {
        let cli = Cli::try_parse_from(["gauntlet", "query", "--no-query.partial-response"])
            .expect("valid command line");
        let Command::Query(query) = cli.command else {
            panic!("expected the query role")
        };
        assert!(!query.partial_response_enabled());
    }

    #[test]
    fn external_labels_parse_with_and_without_quotes() {
        assert_eq!(
            external_label("replica=\"0\""),
            Ok(("replica".into(), "0".into()))
        );
        assert_eq!(
            external_label("cluster=eu1"),
            Ok(("cluster".into(), "eu1".into()))
        );
        assert!(external_label("noequals").is_err());
        assert!(external_label("0bad=x").is_err());
    }
}
