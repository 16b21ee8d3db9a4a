//! Shared test harness: a querier on a loopback port over in-process stores, an OpenMetrics
//! reader for test data, and a real Prometheus serving the same data.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::sync::Arc;

use gauntlet::http::Readiness;
use gauntlet::http::api::ApiOptions;
use gauntlet::promql::EngineOptions;
use gauntlet::query::endpoints::EndpointSet;
use gauntlet::query::proxy::{ProxyLimits, ProxyStore};
use gauntlet::query::querier::router;
use gauntlet::query::store::Store;
use gauntlet::shutdown::{self, ShutdownTrigger};
use gauntlet_tsdb::{Label, Labels};

/// A querier serving HTTP on a loopback port; stops when dropped.
pub struct Querier {
    pub base: String,
    pub client: reqwest::Client,
    _stop: ShutdownTrigger,
}

impl Querier {
    /// Starts a querier over `stores` with replica label `replica`.
    pub async fn start(
        stores: Vec<(&str, Arc<dyn Store>)>,
        limits: ProxyLimits,
    ) -> anyhow::Result<Self> {
        let endpoints = Arc::new(EndpointSet::new(Vec::new(), Vec::new()));
        for (name, store) in stores {
            endpoints.add_local(name, store);
        }
        endpoints.refresh().await;
        let proxy = Arc::new(ProxyStore::new(endpoints, limits));
        let api = ApiOptions {
            engine: EngineOptions::default(),
            replica_labels: vec!["replica".into()],
            partial_response: true,
            max_concurrent: 4,
        };
        let readiness = Readiness::default();
        readiness.set_ready(true);
        let listener = gauntlet::http::bind("127.0.0.1:0".parse()?, "--http-address").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, shutdown) = shutdown::channel();
        tokio::spawn(gauntlet::http::serve(
            listener,
            router(proxy, api, readiness),
            shutdown,
        ));
        Ok(Self {
            base,
            client: reqwest::Client::new(),
            _stop: stop,
        })
    }
}

/// Series with their samples (ms, value).
pub type SeriesSamples = Vec<(Labels, Vec<(i64, f64)>)>;

/// Parses the OpenMetrics sample lines of `data.om` (`name{l="v",...} value seconds`).
pub fn parse_openmetrics(text: &str) -> anyhow::Result<SeriesSamples> {
    let mut series: std::collections::BTreeMap<Labels, Vec<(i64, f64)>> = Default::default();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (name, rest) = line
            .split_once('{')
            .ok_or_else(|| anyhow::anyhow!("no labels: {line}"))?;
        let mut labels = vec![Label::new("__name__", name)];
        let mut chars = rest.chars();
        loop {
            let label: String = chars.by_ref().take_while(|c| *c != '=').collect();
            anyhow::ensure!(chars.next() == Some('"'), "expected a quote in {line}");
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => anyhow::bail!("dangling escape in {line}"),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.push(Label::new(label.trim_start_matches(','), value));
            match chars.next() {
                Some(',') => {}
                Some('}') => break,
                other => anyhow::bail!("unexpected {other:?} in {line}"),
            }
        }
        let rest: String = chars.collect();
        let mut fields = rest.split_whitespace();
        let value: f64 = fields
            .next()
            .ok_or_else(|| anyhow::anyhow!("no value: {line}"))?
            .parse()?;
        let seconds: f64 = fields
            .next()
            .ok_or_else(|| anyhow::anyhow!("no timestamp: {line}"))?
            .parse()?;
        // Prometheus truncates `seconds * 1000` to an integer; do the same so both see one time.
        let millis = (seconds * 1000.0) as i64;
        series
            .entry(Labels::new(labels))
            .or_default()
            .push((millis, value));
    }
    Ok(series.into_iter().collect())
}

/// A real Prometheus (Debian's `prometheus`, 2.42 here) serving blocks made from an OpenMetrics
/// file by `promtool tsdb create-blocks-from openmetrics`, on a loopback port. Killed on drop.
pub struct Prometheus {
    pub base: String,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Prometheus {
    pub async fn serve(openmetrics: &std::path::Path) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "gauntlet-prometheus-{}-{}",
            std::process::id(),
            openmetrics
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("data")
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let data = dir.join("data");
        let status = std::process::Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(openmetrics)
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| anyhow::anyhow!("promtool: {e} (install Debian's prometheus package)"))?;
        anyhow::ensure!(
            status.success(),
            "promtool could not convert {}",
            openmetrics.display()
        );
        std::fs::write(
            dir.join("prometheus.yml"),
            "global:\n  scrape_interval: 1h\n",
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = std::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg("--storage.tsdb.retention.time=10y")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("prometheus: {e} (install Debian's prometheus package)")
            })?;
        let server = Self {
            base: format!("http://127.0.0.1:{port}"),
            child,
            dir,
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client
                .get(format!("{}/-/ready", server.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(server);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "prometheus did not become ready: {}",
            std::fs::read_to_string(server.dir.join("prometheus.log")).unwrap_or_default()
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
