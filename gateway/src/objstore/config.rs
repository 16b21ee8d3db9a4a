//! Thanos's object storage configuration (`--objstore.config-file` / `--objstore.config`):
//! `type:` (S3, GCS, AZURE, FILESYSTEM; any case), `config:` with the provider's fields, and an
//! optional top-level `prefix:`.
//!
//! Field names follow `thanos-io/objstore`, so an existing Thanos bucket file works unchanged.
//! Fields Thanos knows but Gauntlet does not apply (`http_config`, `signature_version2`,
//! `sse_config`, ...) are accepted with a warning; anything else is an error naming the field.
//! Parsing never touches the network; [`ObjstoreConfig::build`] creates the client.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

/// Why an objstore configuration cannot be used. Each message names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not YAML, or not a mapping.
    #[error("objstore config: {0}")]
    Syntax(String),
    /// A field is missing, has the wrong type, or is unknown.
    #[error("objstore config: {0}")]
    Field(String),
    /// Neither `--objstore.config-file` nor `--objstore.config` was given.
    #[error(
        "no object storage configured: pass --objstore.config-file FILE or --objstore.config YAML \
         (e.g. 'type: FILESYSTEM' with 'config: {{directory: ./bucket}}')"
    )]
    Missing,
    /// The configuration file could not be read.
    #[error("cannot read objstore config file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
}

/// The provider named by `type:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Amazon S3 and S3-compatible servers (MinIO, Ceph, moto, ...).
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
    /// A local directory.
    Filesystem,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::S3 => "S3",
            Self::Gcs => "GCS",
            Self::Azure => "AZURE",
            Self::Filesystem => "FILESYSTEM",
        })
    }
}

/// A parsed objstore configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct ObjstoreConfig {
    /// The provider's settings.
    pub backend: BackendConfig,
    /// Key prefix every object lives under (`prefix:`), without leading or trailing `/`.
    pub prefix: String,
    /// Fields accepted for compatibility but not applied, as `config.NAME`.
    pub ignored_fields: Vec<String>,
}

impl fmt::Debug for ObjstoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets stay out of logs: only the provider and where it points.
        f.debug_struct("ObjstoreConfig")
            .field("provider", &self.backend.provider())
            .field("location", &self.backend.location())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// One provider's settings.
#[derive(Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// `type: S3`.
    S3(S3Config),
    /// `type: GCS`.
    Gcs(GcsConfig),
    /// `type: AZURE`.
    Azure(AzureConfig),
    /// `type: FILESYSTEM`.
    Filesystem(FilesystemConfig),
}

impl BackendConfig {
    /// The provider these settings are for.
    pub fn provider(&self) -> Provider {
        match self {
            Self::S3(_) => Provider::S3,
            Self::Gcs(_) => Provider::Gcs,
            Self::Azure(_) => Provider::Azure,
            Self::Filesystem(_) => Provider::Filesystem,
        }
    }

    /// Bucket (or container, or directory) and endpoint, for messages; never a secret.
    pub fn location(&self) -> String {
        match self {
            Self::S3(c) => format!("s3 bucket '{}' at {}", c.bucket, c.endpoint_url()),
            Self::Gcs(c) => format!("gcs bucket '{}'", c.bucket),
            Self::Azure(c) => format!("azure container '{}' at {}", c.container, c.endpoint_url()),
            Self::Filesystem(c) => format!("directory {}", c.directory),
        }
    }
}

/// `type: S3` settings (Thanos's `s3.Config`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name.
    #[serde(default)]
    pub bucket: String,
    /// `host[:port]` of the S3 API (Thanos requires it; `s3.amazonaws.com` for AWS).
    #[serde(default)]
    pub endpoint: String,
    /// Region; empty means `us-east-1` (or the region named in an AWS endpoint).
    #[serde(default)]
    pub region: String,
    /// Access key id; with `secret_key`. Empty: credentials from the environment.
    #[serde(default)]
    pub access_key: String,
    /// Secret access key.
    #[serde(default)]
    pub secret_key: String,
    /// Session token for temporary credentials.
    #[serde(default)]
    pub session_token: String,
    /// Plain HTTP instead of HTTPS.
    #[serde(default)]
    pub insecure: bool,
    /// `auto` (default), `virtual-hosted` or `path`.
    #[serde(default)]
    pub bucket_lookup_type: Option<String>,
    /// Maximum retries of a failed request (0: the client's default).
    #[serde(default)]
    pub max_retries: Option<u32>,
    #[serde(default)]
    signature_version2: Option<Value>,
    #[serde(default)]
    http_config: Option<Value>,
    #[serde(default)]
    aws_sdk_auth: Option<Value>,
    #[serde(default)]
    disable_dualstack: Option<Value>,
    #[serde(default)]
    put_user_metadata: Option<Value>,
    #[serde(default)]
    trace: Option<Value>,
    #[serde(default)]
    list_objects_version: Option<Value>,
    #[serde(default)]
    send_content_md5: Option<Value>,
    #[serde(default)]
    disable_multipart: Option<Value>,
    #[serde(default)]
    part_size: Option<Value>,
    #[serde(default)]
    sse_config: Option<Value>,
    #[serde(default)]
    sts_endpoint: Option<Value>,
}

impl S3Config {
    /// The endpoint as a URL: `http://` when `insecure`, `https://` otherwise; a scheme given
    /// in `endpoint` is kept.
    pub fn endpoint_url(&self) -> String {
        endpoint_with_scheme(&self.endpoint, self.insecure)
    }

    fn ignored(&self) -> Vec<&'static str> {
        let fields = [
            ("signature_version2", &self.signature_version2),
            ("http_config", &self.http_config),
            ("aws_sdk_auth", &self.aws_sdk_auth),
            ("disable_dualstack", &self.disable_dualstack),
            ("put_user_metadata", &self.put_user_metadata),
            ("trace", &self.trace),
            ("list_objects_version", &self.list_objects_version),
            ("send_content_md5", &self.send_content_md5),
            ("disable_multipart", &self.disable_multipart),
            ("part_size", &self.part_size),
            ("sse_config", &self.sse_config),
            ("sts_endpoint", &self.sts_endpoint),
        ];
        present(&fields)
    }
}

/// `type: GCS` settings (Thanos's `gcs.Config`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcsConfig {
    /// Bucket name.
    #[serde(default)]
    pub bucket: String,
    /// The service account key as a JSON string; empty: application default credentials.
    #[serde(default)]
    pub service_account: String,
    /// Maximum retries of a failed request (0: the client's default).
    #[serde(default)]
    pub max_retries: Option<u32>,
    #[serde(default)]
    use_grpc: Option<Value>,
    #[serde(default)]
    grpc_conn_pool_size: Option<Value>,
    #[serde(default)]
    http_config: Option<Value>,
    #[serde(default)]
    chunk_size_bytes: Option<Value>,
}

impl GcsConfig {
    fn ignored(&self) -> Vec<&'static str> {
        present(&[
            ("use_grpc", &self.use_grpc),
            ("grpc_conn_pool_size", &self.grpc_conn_pool_size),
            ("http_config", &self.http_config),
            ("chunk_size_bytes", &self.chunk_size_bytes),
        ])
    }
}

/// `type: AZURE` settings (Thanos's `azure.Config`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// Storage account name.
    #[serde(default)]
    pub storage_account: String,
    /// Storage account key (base64).
    #[serde(default)]
    pub storage_account_key: String,
    /// Container name.
    #[serde(default)]
    pub container: String,
    /// Endpoint suffix (`blob.core.windows.net`, the default) or a full URL such as an
    /// emulator's `http://127.0.0.1:10000/devstoreaccount1`.
    #[serde(default)]
    pub endpoint: String,
    /// Maximum retries of a failed request (0: the client's default).
    #[serde(default)]
    pub max_retries: Option<u32>,
    #[serde(default)]
    az_tenant_id: Option<Value>,
    #[serde(default)]
    client_id: Option<Value>,
    #[serde(default)]
    client_secret: Option<Value>,
    #[serde(default)]
    storage_connection_string: Option<Value>,
    #[serde(default)]
    storage_create_container: Option<Value>,
    #[serde(default)]
    user_assigned_id: Option<Value>,
    #[serde(default)]
    reader_config: Option<Value>,
    #[serde(default)]
    pipeline_config: Option<Value>,
    #[serde(default)]
    http_config: Option<Value>,
    #[serde(default)]
    msi_resource: Option<Value>,
}

impl AzureConfig {
    /// The account's blob endpoint: `https://ACCOUNT.SUFFIX` for a suffix, or the URL as given.
    pub fn endpoint_url(&self) -> String {
        let endpoint = self.endpoint.trim().trim_end_matches('/');
        if endpoint.contains("://") {
            endpoint.to_owned()
        } else {
            let suffix = if endpoint.is_empty() {
                "blob.core.windows.net"
            } else {
                endpoint
            };
            format!("https://{}.{suffix}", self.storage_account)
        }
    }

    /// Whether the endpoint is a full URL (an emulator or a private endpoint).
    pub fn endpoint_is_url(&self) -> bool {
        self.endpoint.contains("://")
    }

    fn ignored(&self) -> Vec<&'static str> {
        present(&[
            ("az_tenant_id", &self.az_tenant_id),
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
            ("storage_connection_string", &self.storage_connection_string),
            ("storage_create_container", &self.storage_create_container),
            ("user_assigned_id", &self.user_assigned_id),
            ("reader_config", &self.reader_config),
            ("pipeline_config", &self.pipeline_config),
            ("http_config", &self.http_config),
            ("msi_resource", &self.msi_resource),
        ])
    }
}

/// `type: FILESYSTEM` settings.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemConfig {
    /// The directory that plays the bucket (created if missing).
    #[serde(default)]
    pub directory: String,
}

fn present(fields: &[(&'static str, &Option<Value>)]) -> Vec<&'static str> {
    fields
        .iter()
        .filter(|(_, value)| value.is_some())
        .map(|(name, _)| *name)
        .collect()
}

fn endpoint_with_scheme(endpoint: &str, insecure: bool) -> String {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else if insecure {
        format!("http://{endpoint}")
    } else {
        format!("https://{endpoint}")
    }
}

impl ObjstoreConfig {
    /// Parses Thanos's objstore YAML.
    pub fn parse(yaml: &str) -> Result<Self, ConfigError> {
        let root: Value = serde_saphyr::from_str(yaml)
            .map_err(|e| ConfigError::Syntax(first_line(&e.to_string())))?;
        let Value::Object(mut root) = root else {
            return Err(ConfigError::Syntax(
                "expected a mapping with `type:` and `config:`".to_owned(),
            ));
        };
        let kind = match root.remove("type") {
            Some(Value::String(kind)) => kind,
            Some(_) => return Err(field("type", "must be a string")),
            None => {
                return Err(field("type", "missing; one of S3, GCS, AZURE, FILESYSTEM"));
            }
        };
        let config = match root.remove("config") {
            None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
            Some(config @ Value::Object(_)) => config,
            Some(_) => return Err(field("config", "must be a mapping")),
        };
        let prefix = match root.remove("prefix") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(prefix)) => prefix.trim_matches('/').to_owned(),
            Some(_) => return Err(field("prefix", "must be a string")),
        };
        if let Some(unknown) = root.keys().next() {
            return Err(field(
                unknown,
                "unknown top-level field (expected type, config, prefix)",
            ));
        }
        let (backend, ignored) = match kind.to_ascii_uppercase().as_str() {
            "S3" => {
                let c: S3Config = typed(config, "S3")?;
                require(&c.bucket, "bucket")?;
                require(&c.endpoint, "endpoint")?;
                if c.access_key.is_empty() != c.secret_key.is_empty() {
                    return Err(field(
                        "config.access_key",
                        "access_key and secret_key must be given together (or neither, to use \
                         AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from the environment)",
                    ));
                }
                match c.bucket_lookup_type.as_deref() {
                    None | Some("" | "auto" | "virtual-hosted" | "path") => {}
                    Some(other) => {
                        return Err(field(
                            "config.bucket_lookup_type",
                            &format!("{other:?} is not one of auto, virtual-hosted, path"),
                        ));
                    }
                }
                let ignored = c.ignored();
                (BackendConfig::S3(c), ignored)
            }
            "GCS" => {
                let c: GcsConfig = typed(config, "GCS")?;
                require(&c.bucket, "bucket")?;
                if !c.service_account.trim().is_empty()
                    && serde_json::from_str::<Value>(&c.service_account).is_err()
                {
                    return Err(field(
                        "config.service_account",
                        "must be the service account key as a JSON string",
                    ));
                }
                let ignored = c.ignored();
                (BackendConfig::Gcs(c), ignored)
            }
            "AZURE" => {
                let c: AzureConfig = typed(config, "AZURE")?;
                require(&c.storage_account, "storage_account")?;
                require(&c.container, "container")?;
                let ignored = c.ignored();
                (BackendConfig::Azure(c), ignored)
            }
            "FILESYSTEM" => {
                let c: FilesystemConfig = typed(config, "FILESYSTEM")?;
                require(&c.directory, "directory")?;
                (BackendConfig::Filesystem(c), Vec::new())
            }
            other => {
                return Err(field(
                    "type",
                    &format!("unknown type {other:?}; one of S3, GCS, AZURE, FILESYSTEM"),
                ));
            }
        };
        Ok(Self {
            backend,
            prefix,
            ignored_fields: ignored.into_iter().map(|f| format!("config.{f}")).collect(),
        })
    }

    /// Reads the configuration from `--objstore.config-file` or `--objstore.config`.
    pub fn from_flags(file: Option<&Path>, inline: Option<&str>) -> Result<Self, ConfigError> {
        match (file, inline) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                Self::parse(&text).map_err(|e| match e {
                    ConfigError::Syntax(m) | ConfigError::Field(m) => {
                        ConfigError::Field(format!("{}: {m}", path.display()))
                    }
                    other => other,
                })
            }
            (None, Some(yaml)) => Self::parse(yaml),
            (None, None) => Err(ConfigError::Missing),
        }
    }

    /// Logs one warning per accepted-but-ignored field.
    pub fn warn_ignored(&self) {
        for name in &self.ignored_fields {
            tracing::warn!(
                field = %name,
                provider = %self.backend.provider(),
                "objstore config field is accepted for Thanos compatibility but ignored"
            );
        }
    }
}

fn typed<T: serde::de::DeserializeOwned>(config: Value, provider: &str) -> Result<T, ConfigError> {
    serde_json::from_value(config).map_err(|e| field("config", &format!("{provider}: {e}")))
}

fn require(value: &str, name: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        Err(field(&format!("config.{name}"), "missing or empty"))
    } else {
        Ok(())
    }
}

fn field(name: &str, message: &str) -> ConfigError {
    ConfigError::Field(format!("`{name}`: {message}"))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_thanos_s3() {
        let c = ObjstoreConfig::parse(
            "type: s3\nconfig:\n  bucket: blocks\n  endpoint: 127.0.0.1:9000\n  access_key: a\n  \
             secret_key: b\n  insecure: true\n  signature_version2: false\n  http_config:\n    \
             idle_conn_timeout: 90s\nprefix: /tenant-a/\n",
        )
        .expect("valid");
        let BackendConfig::S3(s3) = &c.backend else {
            panic!("not s3")
        };
        assert_eq!(s3.bucket, "blocks");
        assert_eq!(s3.endpoint_url(), "http://127.0.0.1:9000");
        assert_eq!(c.prefix, "tenant-a");
        assert_eq!(
            c.ignored_fields,
            ["config.signature_version2", "config.http_config"]
        );
        assert!(!format!("{c:?}").contains("secret"), "{c:?}");
    }

    #[test]
    fn errors_name_the_field() {
        let err = |yaml: &str| ObjstoreConfig::parse(yaml).expect_err(yaml).to_string();
        assert!(err("type: S3\nconfig:\n  endpoint: x\n").contains("`config.bucket`"));
        assert!(err("type: FOO\n").contains("`type`"));
        assert!(err("config: {}\n").contains("`type`"));
        assert!(
            err("type: S3\nconfig:\n  bucket: b\n  endpoint: e\n  bukcet: x\n").contains("bukcet")
        );
        assert!(err("type: GCS\nconfig: {}\n").contains("`config.bucket`"));
        assert!(err("type: AZURE\nconfig:\n  storage_account: a\n").contains("`config.container`"));
        assert!(err("type: FILESYSTEM\nconfig: {}\n").contains("`config.directory`"));
        assert!(err("type: S3\nbogus: 1\n").contains("`bogus`"));
        for e in [err("type: S3\nconfig:\n  endpoint: x\n"), err("- a\n")] {
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn azure_endpoints() {
        let c = ObjstoreConfig::parse(
            "type: azure\nconfig:\n  storage_account: acct\n  storage_account_key: a2V5\n  \
             container: c\n",
        )
        .expect("valid");
        let BackendConfig::Azure(az) = &c.backend else {
            panic!("not azure")
        };
        assert_eq!(az.endpoint_url(), "https://acct.blob.core.windows.net");
        let mut emulator = az.clone();
        emulator.endpoint = "http://127.0.0.1:10000/devstoreaccount1/".to_owned();
        assert_eq!(
            emulator.endpoint_url(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
    }

    #[test]
    fn filesystem_and_missing_flags() {
        let c = ObjstoreConfig::parse("type: filesystem\nconfig:\n  directory: /tmp/b\n")
            .expect("valid");
        assert_eq!(c.backend.provider(), Provider::Filesystem);
        assert_eq!(
            ObjstoreConfig::from_flags(None, None),
            Err(ConfigError::Missing)
        );
    }
}
