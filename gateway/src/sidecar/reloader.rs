//! The configuration reloader of `gauntlet sidecar`: watches `--reloader.config-file` and the
//! `--reloader.rule-dir` folders, writes the configuration with `$(ENV)` variables substituted
//! to `--reloader.config-envsubst-file`, and asks Prometheus to reload (`POST /-/reload`, which
//! needs `--web.enable-lifecycle`), retrying with backoff until it succeeds.
//!
//! It runs in the host rather than in the sidecar plugin: it writes a file and reads the
//! process environment, two things plugins are never granted. It polls (every
//! [`Reloader::interval`]) instead of relying on file-system events, which miss changes made
//! through symlink swaps (Kubernetes ConfigMaps). It never exits on an error: a failed round
//! is logged, counted and retried.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::shutdown::Shutdown;

/// What to watch and where to send reloads.
#[derive(Debug, Clone)]
pub struct Reloader {
    /// `POST` target, e.g. `http://localhost:9090/-/reload`.
    pub reload_url: reqwest::Url,
    /// The configuration file to watch.
    pub config_file: Option<PathBuf>,
    /// Where the substituted configuration goes (none: no substitution).
    pub envsubst_file: Option<PathBuf>,
    /// Rule folders to watch.
    pub rule_dirs: Vec<PathBuf>,
    /// How often the files are checked.
    pub interval: Duration,
    /// How long one reload keeps being retried before the round gives up.
    pub retry_for: Duration,
}

/// Why a round of the reloader failed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A watched file could not be read or the output not written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The configuration names an environment variable that is not set.
    #[error("{path}: environment variable {name} referenced as $({name}) is not set")]
    UnsetVariable {
        /// The configuration file.
        path: PathBuf,
        /// The variable.
        name: String,
    },
    /// Prometheus did not accept the reload.
    #[error("reloading Prometheus at {url}: {message}")]
    Reload {
        /// The reload URL.
        url: String,
        /// The last failure.
        message: String,
    },
}

/// Replaces every `$(NAME)` with the value of the environment variable `NAME` (as Thanos's
/// reloader does); `$$(NAME)` is left as the literal `$(NAME)`.
pub fn envsubst(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("$(") {
        if at > 0 && rest.as_bytes()[at - 1] == b'$' {
            out.push_str(&rest[..at - 1]);
            out.push_str("$(");
            rest = &rest[at + 2..];
            continue;
        }
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else {
            out.push_str(&rest[at..]);
            return Ok(out);
        };
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            out.push_str("$(");
            rest = after;
            continue;
        }
        out.push_str(&lookup(name).ok_or_else(|| name.to_owned())?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What the watched files looked like: config content, and every rule file's size and mtime.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Snapshot {
    config: Option<Vec<u8>>,
    rules: BTreeMap<PathBuf, (u64, Option<SystemTime>)>,
}

impl Reloader {
    fn snapshot(&self) -> Result<Snapshot, ReloadError> {
        let config = match &self.config_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| ReloadError::File {
                path: path.clone(),
                message: e.to_string(),
            })?),
            None => None,
        };
        let mut rules = BTreeMap::new();
        for dir in &self.rule_dirs {
            // A missing rule folder is an empty one (it may be created later).
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                // Follows symlinks, so a swapped ConfigMap link counts as a change.
                if let Ok(meta) = std::fs::metadata(entry.path())
                    && meta.is_file()
                {
                    rules.insert(entry.path(), (meta.len(), meta.modified().ok()));
                }
            }
        }
        Ok(Snapshot { config, rules })
    }

    /// Writes the substituted configuration if an output file is configured.
    fn write_output(&self, config: &[u8]) -> Result<(), ReloadError> {
        let (Some(input), Some(output)) = (&self.config_file, &self.envsubst_file) else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(config);
        let substituted = envsubst(&text, |name| std::env::var(name).ok()).map_err(|name| {
            ReloadError::UnsetVariable {
                path: input.clone(),
                name,
            }
        })?;
        write_atomically(output, substituted.as_bytes()).map_err(|e| ReloadError::File {
            path: output.clone(),
            message: e.to_string(),
        })
    }

    /// Asks Prometheus to reload, retrying with backoff for up to `retry_for`.
    async fn reload(
        &self,
        client: &reqwest::Client,
        shutdown: &Shutdown,
    ) -> Result<(), ReloadError> {
        let started = std::time::Instant::now();
        let mut backoff = Duration::from_millis(250);
        loop {
            let result = client.post(self.reload_url.clone()).send().await;
            let message = match result {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    format!("status {status}: {}", body.trim())
                }
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= self.retry_for || shutdown.is_requested() {
                return Err(ReloadError::Reload {
                    url: self.reload_url.to_string(),
                    message,
                });
            }
            tracing::debug!(url = %self.reload_url, error = %message, "reload failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Watches until `shutdown`. The first round writes the output file and reloads.
    pub async fn run(self, shutdown: Shutdown) {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "reloader: cannot create the HTTP client");
                return;
            }
        };
        let mut applied: Option<Snapshot> = None;
        loop {
            match self.snapshot() {
                Ok(now) if applied.as_ref() != Some(&now) => {
                    let first = applied.is_none();
                    match self.apply(&client, &shutdown, &now).await {
                        Ok(()) => {
                            super::sidecar_metrics()
                                .reloads
                                .with_label_values(&["success"])
                                .inc();
                            tracing::info!(first, "Prometheus configuration reloaded");
                            applied = Some(now);
                        }
                        Err(e) => {
                            super::sidecar_metrics()
                                .reloads
                                .with_label_values(&["failure"])
                                .inc();
                            tracing::warn!(error = %e, "reloader: round failed; retrying");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reloader: cannot read watched files"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = shutdown.clone().requested() => return,
            }
        }
    }

    async fn apply(
        &self,
        client: &reqwest::Client,
        shutdown: &Shutdown,
        snapshot: &Snapshot,
    ) -> Result<(), ReloadError> {
        if let Some(config) = &snapshot.config {
            self.write_output(config)?;
        }
        self.reload(client, shutdown).await
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::envsubst;

    #[test]
    fn substitutes_environment_variables() {
        let env = |name: &str| (name == "CLUSTER").then(|| "eu1".to_owned());
        assert_eq!(
            envsubst("cluster: $(CLUSTER)\nx: $$(CLUSTER) $(bad-name) $(", env).as_deref(),
            Ok("cluster: eu1\nx: $(CLUSTER) $(bad-name) $(")
        );
        assert_eq!(envsubst("a: $(MISSING)", env), Err("MISSING".to_owned()));
    }
}
