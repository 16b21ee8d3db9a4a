//! The configuration reloader, one round per `tick`: watches the configuration file and the
//! rule folders, writes the configuration with `$(ENV)` variables substituted to the envsubst
//! file, and asks Prometheus to reload (`POST /-/reload`, which needs
//! `--web.enable-lifecycle`), retrying with backoff (250 ms doubling to 5 s) until it succeeds.
//!
//! Files are reached through WASI: the manifest grants the configuration file's folder and
//! the rule folders read-only, and the envsubst file's folder writable. Variables come from
//! the WASI environment, which the host fills only when it grants the reloader (a missing
//! variable fails the round, naming it). It polls instead of relying on file-system events,
//! which miss changes made through symlink swaps (Kubernetes ConfigMaps). A failed round is
//! logged and counted (`reloader_reload_failures`), never fatal; every change is applied once
//! (`reloader_reloads`), and the first round always applies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gauntlet_plugin_sdk::log::Level;

use crate::outside::Outside;

/// First wait after a failed reload.
const FIRST_BACKOFF_MS: i64 = 250;
/// Longest wait between reload attempts.
const MAX_BACKOFF_MS: i64 = 5_000;

/// What the reloader watches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloaderSettings {
    /// The configuration file to watch.
    pub config_file: Option<PathBuf>,
    /// Where the substituted configuration goes (none: no substitution, no output).
    pub envsubst_file: Option<PathBuf>,
    /// Rule folders to watch.
    pub rule_dirs: Vec<PathBuf>,
}

impl ReloaderSettings {
    /// Whether there is anything to watch.
    pub fn is_enabled(&self) -> bool {
        self.config_file.is_some() || !self.rule_dirs.is_empty()
    }
}

/// What the watched files looked like: the configuration's content, and every rule file's
/// size and modification time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Snapshot {
    config: Option<Vec<u8>>,
    rules: BTreeMap<PathBuf, (u64, Option<SystemTime>)>,
}

/// What one round did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// Nothing changed since the last reload.
    Unchanged,
    /// A change is waiting for the backoff after a failure to pass.
    Waiting,
    /// Prometheus reloaded the change.
    Reloaded,
    /// Reading, substituting, writing or reloading failed; tried again after the backoff.
    Failed(String),
}

/// The reloader's state between rounds.
#[derive(Debug, Clone)]
pub struct Reloader {
    settings: ReloaderSettings,
    applied: Option<Snapshot>,
    next_attempt_ms: i64,
    backoff_ms: i64,
    last_error: Option<String>,
}

impl Reloader {
    /// A reloader that applies at its first round.
    pub fn new(settings: ReloaderSettings) -> Self {
        Self {
            settings,
            applied: None,
            next_attempt_ms: i64::MIN,
            backoff_ms: FIRST_BACKOFF_MS,
            last_error: None,
        }
    }

    /// Exports the reloader's counters at zero.
    pub fn export_metrics(outside: &dyn Outside) {
        outside.count("reloader_reloads", 0.0);
        outside.count("reloader_reload_failures", 0.0);
    }

    /// One round at `now` (milliseconds).
    pub fn round(&mut self, outside: &dyn Outside, now: i64) -> Round {
        let round = self.try_round(outside, now);
        match &round {
            Round::Reloaded => {
                outside.count("reloader_reloads", 1.0);
                let first = self.last_error.is_none();
                outside.log(
                    Level::Info,
                    if first {
                        "Prometheus configuration reloaded"
                    } else {
                        "Prometheus configuration reloaded after earlier failures"
                    },
                );
                self.last_error = None;
                self.backoff_ms = FIRST_BACKOFF_MS;
            }
            Round::Failed(error) => {
                outside.count("reloader_reload_failures", 1.0);
                // Logged when the failure changes; every attempt is counted.
                if self.last_error.as_deref() != Some(error) {
                    outside.log(
                        Level::Warn,
                        &format!("reloader: {error}; retrying with backoff"),
                    );
                }
                self.last_error = Some(error.clone());
                self.next_attempt_ms = now.saturating_add(self.backoff_ms);
                self.backoff_ms = (self.backoff_ms * 2).min(MAX_BACKOFF_MS);
            }
            Round::Unchanged | Round::Waiting => {}
        }
        round
    }

    fn try_round(&mut self, outside: &dyn Outside, now: i64) -> Round {
        let snapshot = match self.snapshot() {
            Ok(snapshot) => snapshot,
            Err(error) => return Round::Failed(error),
        };
        if self.applied.as_ref() == Some(&snapshot) {
            return Round::Unchanged;
        }
        if now < self.next_attempt_ms {
            return Round::Waiting;
        }
        if let Some(config) = &snapshot.config
            && let Err(error) = self.write_output(outside, config)
        {
            return Round::Failed(error);
        }
        match outside.reload() {
            Ok(()) => {
                self.applied = Some(snapshot);
                Round::Reloaded
            }
            Err(error) => Round::Failed(format!("reloading Prometheus: {error}")),
        }
    }

    fn snapshot(&self) -> Result<Snapshot, String> {
        let config = match &self.settings.config_file {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            None => None,
        };
        let mut rules = BTreeMap::new();
        for dir in &self.settings.rule_dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                // A rule folder removed meanwhile is an empty one (it may come back).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("{}: {e}", dir.display())),
            };
            for entry in entries.flatten() {
                // Follows symlinks (inside the granted folder), so a swapped ConfigMap link
                // counts as a change.
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
    fn write_output(&self, outside: &dyn Outside, config: &[u8]) -> Result<(), String> {
        let (Some(input), Some(output)) =
            (&self.settings.config_file, &self.settings.envsubst_file)
        else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(config);
        let substituted = envsubst(&text, |name| outside.var(name)).map_err(|name| {
            format!(
                "{}: environment variable {name} referenced as $({name}) is not set",
                input.display()
            )
        })?;
        write_atomically(output, substituted.as_bytes())
            .map_err(|e| format!("{}: {e}", output.display()))
    }
}

/// Replaces every `$(NAME)` with the value of the environment variable `NAME` (as Thanos's
/// reloader does); `$$(NAME)` is left as the literal `$(NAME)`. `Err` names a variable that
/// is not set.
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

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`, so
/// Prometheus never reads a half-written configuration.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outside::tests::Recorder;

    #[test]
    fn substitutes_environment_variables() {
        let env = |name: &str| (name == "CLUSTER").then(|| "eu1".to_owned());
        assert_eq!(
            envsubst("cluster: $(CLUSTER)\nx: $$(CLUSTER) $(bad-name) $(", env).as_deref(),
            Ok("cluster: eu1\nx: $(CLUSTER) $(bad-name) $(")
        );
        assert_eq!(envsubst("a: $(MISSING)", env), Err("MISSING".to_owned()));
    }

    #[test]
    fn applies_changes_once_and_backs_off_after_failures() {
        let dir = crate::outside::tests::scratch("reloader");
        let rules = dir.join("rules");
        std::fs::create_dir_all(&rules).expect("test setup");
        let input = dir.join("prometheus.yml.tmpl");
        let output = dir.join("prometheus.yml");
        std::fs::write(&input, "cluster: $(CLUSTER)\n").expect("test setup");
        let outside = Recorder::default();
        outside.env("CLUSTER", "eu1");
        let mut reloader = Reloader::new(ReloaderSettings {
            config_file: Some(input.clone()),
            envsubst_file: Some(output.clone()),
            rule_dirs: vec![rules.clone()],
        });

        assert_eq!(reloader.round(&outside, 0), Round::Reloaded);
        assert_eq!(
            std::fs::read_to_string(&output).expect("output"),
            "cluster: eu1\n"
        );
        assert_eq!(reloader.round(&outside, 1_000), Round::Unchanged);
        assert_eq!(outside.reloads(), 1);

        // A new rule file is a change; Prometheus refuses twice, then accepts.
        std::fs::write(rules.join("a.yml"), "groups: []\n").expect("test setup");
        outside.fail_reloads(2);
        assert!(matches!(reloader.round(&outside, 2_000), Round::Failed(_)));
        assert_eq!(reloader.round(&outside, 2_100), Round::Waiting);
        assert!(matches!(reloader.round(&outside, 2_250), Round::Failed(_)));
        // The second wait is twice the first.
        assert_eq!(reloader.round(&outside, 2_700), Round::Waiting);
        assert_eq!(reloader.round(&outside, 2_750), Round::Reloaded);
        assert_eq!(outside.reloads(), 4);
        assert_eq!(outside.counter("reloader_reloads"), 2.0);
        assert_eq!(outside.counter("reloader_reload_failures"), 2.0);

        // An unset variable fails the round, naming it, and leaves the output alone.
        std::fs::write(&input, "cluster: $(REGION)\n").expect("test setup");
        match reloader.round(&outside, 10_000) {
            Round::Failed(error) => assert!(error.contains("REGION"), "{error}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        assert_eq!(
            std::fs::read_to_string(&output).expect("output"),
            "cluster: eu1\n"
        );
        assert_eq!(outside.reloads(), 4);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
