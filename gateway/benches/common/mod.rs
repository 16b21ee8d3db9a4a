//! Shared by the benchmarks that compare against a real Prometheus: a child server killed on
//! drop, Prometheus 2.42 started over a data directory, waiting for readiness, and timing a
//! query through the HTTP API.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process the benchmark started; killed when dropped.
pub struct Server {
    /// `http://host:port` of its HTTP API.
    pub base: String,
    /// The process.
    pub child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Prometheus on a free loopback port over the blocks in `data`, with its configuration
/// in `dir`, keeping every block (`--storage.tsdb.retention.time=10y`).
pub fn start_prometheus(dir: &Path, data: &Path) -> anyhow::Result<Server> {
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1h\n")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg("--storage.tsdb.retention.time=10y")
        .arg("--query.max-samples=500000000")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Server {
        base: format!("http://127.0.0.1:{port}"),
        child,
    })
}

/// Waits until `base` answers `/-/ready` with success, for at most `timeout`.
pub async fn wait_ready(
    client: &reqwest::Client,
    base: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if client
            .get(format!("{base}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{base} did not become ready")
}

/// One query through the HTTP API (`query_range` when `params` has a step): wall time and the
/// number of result series.
pub async fn query_once(
    client: &reqwest::Client,
    base: &str,
    params: &[(&str, String)],
) -> anyhow::Result<(Duration, usize)> {
    let path = if params.iter().any(|(k, _)| *k == "step") {
        "/api/v1/query_range"
    } else {
        "/api/v1/query"
    };
    let started = Instant::now();
    let body: serde_json::Value = client
        .get(format!("{base}{path}"))
        .query(params)
        .send()
        .await?
        .json()
        .await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(body["status"] == "success", "{base}: {body}");
    Ok((
        elapsed,
        body["data"]["result"].as_array().map_or(0, Vec::len),
    ))
}

/// The median wall time of `runs` runs of a query, and its number of result series.
pub async fn median_query(
    client: &reqwest::Client,
    base: &str,
    params: &[(&str, String)],
    runs: usize,
) -> anyhow::Result<(Duration, usize)> {
    let mut times = Vec::with_capacity(runs.max(1));
    let mut series = 0;
    for _ in 0..runs.max(1) {
        let (time, n) = query_once(client, base, params).await?;
        times.push(time);
        series = n;
    }
    times.sort();
    Ok((times[times.len() / 2], series))
}
