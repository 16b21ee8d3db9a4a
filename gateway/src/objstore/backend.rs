//! Turns an [`ObjstoreConfig`] into an `object_store` client: S3 (path-style against custom
//! endpoints, plain HTTP with `insecure: true`), GCS, Azure (account suffix or full endpoint URL)
//! and the local filesystem, with the top-level `prefix:` applied.
//!
//! Building a client never makes a request; the first operation finds out whether the endpoint
//! and credentials work.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use super::ObjstoreError;
use super::config::{AzureConfig, BackendConfig, GcsConfig, ObjstoreConfig, S3Config};

/// How the HTTP client behaves: retries and timeouts. The default suits production; tests use
/// [`ClientTuning::fail_fast`] so a missing server fails in milliseconds, not minutes.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientTuning {
    /// Retries of a failed request; `None` keeps the config's `max_retries` or the client's
    /// default (10).
    pub max_retries: Option<usize>,
    /// Give up retrying after this long.
    pub retry_timeout: Duration,
    /// Timeout for establishing a connection.
    pub connect_timeout: Duration,
    /// Timeout for a whole request (large objects are read in ranges well below it).
    pub request_timeout: Duration,
}

impl Default for ClientTuning {
    fn default() -> Self {
        Self {
            max_retries: None,
            retry_timeout: Duration::from_secs(3 * 60),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5 * 60),
        }
    }
}

impl ClientTuning {
    /// One retry with a short backoff: for tests and command-line tools.
    pub fn fail_fast() -> Self {
        Self {
            max_retries: Some(1),
            retry_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(60),
        }
    }

    fn retry(&self, configured: Option<u32>) -> RetryConfig {
        let max_retries = self
            .max_retries
            .or_else(|| configured.filter(|n| *n > 0).map(|n| n as usize))
            .unwrap_or(10);
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(15),
                base: 2.0,
            },
            max_retries,
            retry_timeout: self.retry_timeout,
        }
    }

    fn client_options(&self, allow_http: bool) -> ClientOptions {
        ClientOptions::new()
            .with_allow_http(allow_http)
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
    }
}

/// Builds the client for `config`, scoped to its `prefix:`.
pub fn build(
    config: &ObjstoreConfig,
    tuning: &ClientTuning,
) -> Result<Arc<dyn ObjectStore>, ObjstoreError> {
    let store: Arc<dyn ObjectStore> = match &config.backend {
        BackendConfig::S3(c) => s3(c, tuning)?,
        BackendConfig::Gcs(c) => gcs(c, tuning)?,
        BackendConfig::Azure(c) => azure(c, tuning)?,
        BackendConfig::Filesystem(c) => {
            let dir = std::path::Path::new(&c.directory);
            std::fs::create_dir_all(dir).map_err(|e| ObjstoreError::Config {
                message: format!(
                    "cannot create the bucket directory {}: {e} (check `config.directory`)",
                    dir.display()
                ),
            })?;
            let store = LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| ObjstoreError::Config {
                    message: format!("bucket directory {}: {e}", dir.display()),
                })?
                .with_automatic_cleanup(true);
            Arc::new(store)
        }
    };
    if config.prefix.is_empty() {
        Ok(store)
    } else {
        let prefix =
            object_store::path::Path::parse(&config.prefix).map_err(|e| ObjstoreError::Config {
                message: format!("`prefix`: {e}"),
            })?;
        Ok(Arc::new(PrefixStore::new(store, prefix)))
    }
}

fn config_error(what: &str, error: &object_store::Error) -> ObjstoreError {
    ObjstoreError::Config {
        message: format!("{what}: {error}"),
    }
}

/// Where S3 requests go: the values handed to `AmazonS3Builder`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct S3Addressing {
    /// Custom endpoint (`None`: AWS's regional endpoint, derived from the region).
    endpoint: Option<String>,
    /// Bucket in the host name rather than in the path.
    virtual_hosted: bool,
    region: String,
    allow_http: bool,
}

/// Thanos's rules, as minio applies them: AWS endpoints get virtual-hosted requests (path-style
/// for bucket names with dots, which break TLS host names), any other endpoint path-style,
/// unless `bucket_lookup_type` says otherwise.
fn s3_addressing(c: &S3Config) -> Result<S3Addressing, ObjstoreError> {
    let url = c.endpoint_url();
    let parsed = reqwest::Url::parse(&url).map_err(|e| ObjstoreError::Config {
        message: format!("`config.endpoint`: {url:?} is not host:port or a URL: {e}"),
    })?;
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let aws = host == "amazonaws.com" || host.ends_with(".amazonaws.com");
    let lookup = c.bucket_lookup_type.as_deref().unwrap_or("auto");
    let region = if c.region.is_empty() {
        // `s3.eu-west-1.amazonaws.com` names its region; anything else defaults like minio.
        host.strip_prefix("s3.")
            .and_then(|rest| rest.strip_suffix(".amazonaws.com"))
            .filter(|r| !r.is_empty() && !r.contains('.'))
            .unwrap_or("us-east-1")
            .to_owned()
    } else {
        c.region.clone()
    };
    let allow_http = parsed.scheme() == "http";
    let base = url.trim_end_matches('/').to_owned();
    let addressing = match lookup {
        "path" if aws => S3Addressing {
            endpoint: None,
            virtual_hosted: false,
            region,
            allow_http,
        },
        "path" => S3Addressing {
            endpoint: Some(base),
            virtual_hosted: false,
            region,
            allow_http,
        },
        "virtual-hosted" if !aws => {
            let rest = base.split_once("://").map_or(base.as_str(), |(_, r)| r);
            S3Addressing {
                endpoint: Some(format!("{}://{}.{rest}", parsed.scheme(), c.bucket)),
                virtual_hosted: true,
                region,
                allow_http,
            }
        }
        _ if aws => S3Addressing {
            endpoint: None,
            virtual_hosted: lookup == "virtual-hosted" || !c.bucket.contains('.'),
            region,
            allow_http,
        },
        _ => S3Addressing {
            endpoint: Some(base),
            virtual_hosted: false,
            region,
            allow_http,
        },
    };
    Ok(addressing)
}

fn s3(c: &S3Config, tuning: &ClientTuning) -> Result<Arc<dyn ObjectStore>, ObjstoreError> {
    let addressing = s3_addressing(c)?;
    let mut builder = if c.access_key.is_empty() {
        // Like Thanos: credentials from the environment, the shared file or the instance role.
        AmazonS3Builder::from_env()
    } else {
        let mut b = AmazonS3Builder::new()
            .with_access_key_id(&c.access_key)
            .with_secret_access_key(&c.secret_key);
        if !c.session_token.is_empty() {
            b = b.with_token(&c.session_token);
        }
        b
    };
    builder = builder
        .with_bucket_name(&c.bucket)
        .with_region(addressing.region)
        .with_virtual_hosted_style_request(addressing.virtual_hosted)
        .with_retry(tuning.retry(c.max_retries))
        .with_client_options(tuning.client_options(addressing.allow_http));
    if let Some(endpoint) = addressing.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let store = builder.build().map_err(|e| config_error("S3 client", &e))?;
    Ok(Arc::new(store))
}

fn gcs(c: &GcsConfig, tuning: &ClientTuning) -> Result<Arc<dyn ObjectStore>, ObjstoreError> {
    let mut builder = if c.service_account.trim().is_empty() {
        GoogleCloudStorageBuilder::from_env()
    } else {
        GoogleCloudStorageBuilder::new().with_service_account_key(&c.service_account)
    };
    // A key may point the client at an emulator (`gcs_base_url`), which speaks plain HTTP.
    let base_url = serde_json::from_str::<serde_json::Value>(&c.service_account)
        .ok()
        .and_then(|v| v.get("gcs_base_url")?.as_str().map(str::to_owned));
    let allow_http = base_url
        .as_deref()
        .is_some_and(|u| u.starts_with("http://"));
    builder = builder
        .with_bucket_name(&c.bucket)
        .with_retry(tuning.retry(c.max_retries))
        .with_client_options(tuning.client_options(allow_http));
    let store = builder
        .build()
        .map_err(|e| config_error("GCS client", &e))?;
    Ok(Arc::new(store))
}

fn azure(c: &AzureConfig, tuning: &ClientTuning) -> Result<Arc<dyn ObjectStore>, ObjstoreError> {
    let url = c.endpoint_url();
    let mut builder = MicrosoftAzureBuilder::new()
        .with_account(&c.storage_account)
        .with_container_name(&c.container)
        .with_retry(tuning.retry(c.max_retries))
        .with_client_options(tuning.client_options(url.starts_with("http://")));
    if !c.storage_account_key.is_empty() {
        builder = builder.with_access_key(&c.storage_account_key);
    }
    if c.endpoint_is_url() || !c.endpoint.is_empty() {
        builder = builder.with_endpoint(url);
    }
    let store = builder
        .build()
        .map_err(|e| config_error("Azure client", &e))?;
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_config(extra: &str) -> S3Config {
        let yaml = format!("type: S3\nconfig:\n  bucket: blocks\n{extra}");
        match ObjstoreConfig::parse(&yaml).expect("valid").backend {
            BackendConfig::S3(c) => c,
            other => panic!("not S3: {:?}", other.provider()),
        }
    }

    #[test]
    fn s3_addressing_follows_thanos() {
        let local = s3_addressing(&s3_config("  endpoint: 127.0.0.1:9000\n  insecure: true\n"))
            .expect("valid");
        assert_eq!(local.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(!local.virtual_hosted && local.allow_http);
        assert_eq!(local.region, "us-east-1");

        let aws =
            s3_addressing(&s3_config("  endpoint: s3.eu-west-1.amazonaws.com\n")).expect("valid");
        assert_eq!(aws.endpoint, None);
        assert!(aws.virtual_hosted && !aws.allow_http);
        assert_eq!(aws.region, "eu-west-1");

        let dotted = s3_addressing(&s3_config(
            "  endpoint: s3.amazonaws.com\n  region: us-west-2\n",
        ))
        .expect("valid");
        assert_eq!(dotted.region, "us-west-2");
        let mut with_dots = s3_config("  endpoint: s3.amazonaws.com\n");
        with_dots.bucket = "my.blocks".to_owned();
        assert!(!s3_addressing(&with_dots).expect("valid").virtual_hosted);

        let hosted = s3_addressing(&s3_config(
            "  endpoint: minio.example:9000\n  bucket_lookup_type: virtual-hosted\n",
        ))
        .expect("valid");
        assert_eq!(
            hosted.endpoint.as_deref(),
            Some("https://blocks.minio.example:9000")
        );
        assert!(hosted.virtual_hosted);

        let schemed = s3_addressing(&s3_config("  endpoint: http://ceph.local/\n")).expect("valid");
        assert_eq!(schemed.endpoint.as_deref(), Some("http://ceph.local"));
        assert!(schemed.allow_http);
    }
}
