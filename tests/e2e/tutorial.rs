//! The Thanos tutorial with Gauntlet: real Prometheus 2.42 servers (Debian's `prometheus`),
//! `gauntlet sidecar` next to each (the sidecar WebAssembly plugin built from source), and
//! `gauntlet query` over them — all on loopback, each test with its own ports and folders.
//!
//! 1. `examples/tutorial/run-local.sh`: three Prometheus, three sidecars, one querier; external
//!    labels, sums, `/api/v1/stores`, the sidecars' own metrics, and a querier stacked on it.
//! 2. An HA pair plus a second cluster: deduplication, a replica killed, rate at failover.
//! 3. The reloader: a changed configuration and a new rule file reach Prometheus.
//! 4. Prometheus down at start: warnings first, then answers once it is up.
//! 6. The UI in headless Chromium over an HA pair and a second cluster: a query with and
//!    without deduplication, a graph, and the Stores page, each compared with what the
//!    Prometheus servers themselves hold.

#[path = "plugin_common.rs"]
mod plugin_common;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gauntlet_e2e::{
    Process, api_stores, browser_artifacts, drive_ui, free_loopback_address, gauntlet_binary,
    get_json, scratch_dir, sorted_strings, ui_labels, ui_stores, wait_until_ok,
};
use serde_json::Value;

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Retries `check` every 500 ms until it returns `Ok(Some(_))` or `timeout` passes.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let outcome = check().await;
        match outcome {
            Ok(Some(value)) => return Ok(value),
            Ok(None) if Instant::now() < deadline => {}
            Err(_) if Instant::now() < deadline => {}
            Ok(None) => anyhow::bail!("{what}: not reached within {timeout:?}"),
            Err(e) => anyhow::bail!("{what}: not reached within {timeout:?}: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Folder with `sidecar.wasm`, built from source.
fn plugin_dir() -> PathBuf {
    plugin_common::components()
}

/// A Prometheus server with a configuration file.
struct Prometheus {
    address: SocketAddr,
    config: PathBuf,
    data: PathBuf,
    process: Option<Process>,
}

impl Prometheus {
    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let args = vec![
            format!("--config.file={}", self.config.display()),
            format!("--storage.tsdb.path={}", self.data.display()),
            format!("--web.listen-address={}", self.address),
            "--web.enable-lifecycle".to_owned(),
            "--web.enable-admin-api".to_owned(),
        ];
        self.process = Some(Process::spawn(
            &format!("prometheus-{}", self.address.port()),
            Path::new("prometheus"),
            &args,
        )?);
        Ok(())
    }

    async fn ready(&self) -> anyhow::Result<()> {
        wait_until_ok(&format!("{}/-/ready", self.url()), Duration::from_secs(60)).await
    }
}

/// Writes a Prometheus configuration (and returns the server, not yet started).
/// A Prometheus (not started) listening on `address`, with its own folder under `dir`.
fn prometheus(
    dir: &Path,
    name: &str,
    address: SocketAddr,
    external: &[(&str, &str)],
    targets: &[String],
    interval: &str,
) -> anyhow::Result<Prometheus> {
    let folder = dir.join(name);
    std::fs::create_dir_all(folder.join("data"))?;
    let config = folder.join("prometheus.yml");
    std::fs::write(&config, render_config(external, targets, interval, None))?;
    Ok(Prometheus {
        address,
        config,
        data: folder.join("data"),
        process: None,
    })
}

fn render_config(
    external: &[(&str, &str)],
    targets: &[String],
    interval: &str,
    rule_dir: Option<&Path>,
) -> String {
    let labels: String = external
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    let rules = rule_dir.map_or_else(String::new, |d| {
        format!("rule_files:\n  - '{}/*.yml'\n", d.display())
    });
    format!(
        "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n  external_labels:\n{labels}{rules}scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    )
}

/// A running `gauntlet sidecar`.
struct Sidecar {
    http: SocketAddr,
    grpc: SocketAddr,
    _process: Process,
}

fn sidecar(prometheus_url: &str, extra: &[String]) -> anyhow::Result<Sidecar> {
    sidecar_with_env(prometheus_url, extra, &[])
}

fn sidecar_with_env(
    prometheus_url: &str,
    extra: &[String],
    env: &[(&str, &std::ffi::OsStr)],
) -> anyhow::Result<Sidecar> {
    let (http, grpc) = (free_loopback_address()?, free_loopback_address()?);
    let mut args = vec![
        "sidecar".to_owned(),
        format!("--prometheus.url={prometheus_url}"),
        format!("--http-address={http}"),
        format!("--grpc-address={grpc}"),
    ];
    args.extend_from_slice(extra);
    let plugins = plugin_dir();
    let mut env = env.to_vec();
    env.push(("GAUNTLET_PLUGIN_DIR", plugins.as_os_str()));
    let process =
        Process::spawn_with_env(&format!("sidecar-{}", grpc.port()), &binary()?, &args, &env)?;
    Ok(Sidecar {
        http,
        grpc,
        _process: process,
    })
}

/// A running `gauntlet query`.
struct Querier {
    http: SocketAddr,
    _process: Process,
}

impl Querier {
    fn url(&self) -> String {
        format!("http://{}", self.http)
    }
}

async fn querier(endpoints: &[SocketAddr]) -> anyhow::Result<Querier> {
    let (http, grpc) = (free_loopback_address()?, free_loopback_address()?);
    let mut args = vec![
        "query".to_owned(),
        format!("--http-address={http}"),
        format!("--grpc-address={grpc}"),
        "--query.replica-label=replica".to_owned(),
    ];
    for endpoint in endpoints {
        args.push(format!("--endpoint={endpoint}"));
    }
    let process = Process::spawn(&format!("querier-{}", http.port()), &binary()?, &args)?;
    wait_until_ok(&format!("http://{http}/-/ready"), Duration::from_secs(60)).await?;
    Ok(Querier {
        http,
        _process: process,
    })
}

/// The `gauntlet` binary: `$GAUNTLET_BINARY` (e.g. a release build for the benchmark), or
/// the workspace's debug build.
fn binary() -> anyhow::Result<PathBuf> {
    match std::env::var_os("GAUNTLET_BINARY") {
        Some(path) => Ok(PathBuf::from(path)),
        None => gauntlet_binary(),
    }
}

fn setup() -> anyhow::Result<()> {
    plugin_dir();
    binary()?;
    Ok(())
}

fn result(body: &Value) -> Vec<Value> {
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

async fn instant(base: &str, query: &str, at: f64, dedup: bool) -> anyhow::Result<Value> {
    get_json(
        base,
        "/api/v1/query",
        &[
            ("query", query.to_owned()),
            ("time", format!("{at:.3}")),
            ("dedup", dedup.to_string()),
        ],
    )
    .await
}

// ------------------------------------------------------------------ 1 + 5: the tutorial script

/// The tutorial script's process group, stopped (SIGTERM, then SIGKILL) when dropped.
struct Script {
    child: std::process::Child,
    log: PathBuf,
}

impl Drop for Script {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(std::process::Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- run-local.sh ----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// A port offset at which all the tutorial's ports are free.
fn free_offset() -> anyhow::Result<u16> {
    let base = [
        9091u16, 9092, 9093, 19091, 19092, 19093, 19191, 19192, 19193, 29090, 29190,
    ];
    let start = 20_000 + u16::try_from(std::process::id() % 500).unwrap_or(0) * 17;
    for k in 0..200u16 {
        let offset = 20_000 + (start + k * 31) % 16_000;
        let free = base
            .iter()
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p + offset)).is_ok());
        if free {
            return Ok(offset);
        }
    }
    anyhow::bail!("no free port offset found")
}

#[tokio::test]
async fn the_tutorial_script_runs_three_prometheus_three_sidecars_and_a_querier()
-> anyhow::Result<()> {
    setup()?;
    let offset = free_offset()?;
    let dir = scratch_dir("tutorial")?;
    let script = plugin_common::workspace().join("examples/tutorial/run-local.sh");
    let log = dir.join("run-local.log");
    let file = std::fs::File::create(&log)?;
    let child = std::process::Command::new("bash")
        .arg(&script)
        .env("PORT_OFFSET", offset.to_string())
        .env("DATA_DIR", &dir)
        .env("GAUNTLET", binary()?)
        .env("GAUNTLET_PLUGIN_DIR", plugin_dir())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0)
        .spawn()?;
    let _script = Script { child, log };
    let port = |p: u16| p + offset;
    let querier = format!("http://127.0.0.1:{}", port(29090));
    wait_until_ok(&format!("{querier}/-/ready"), Duration::from_secs(60)).await?;

    // The three sidecars with their external labels.
    let stores = eventually(
        "three sidecars in /api/v1/stores",
        Duration::from_secs(60),
        || async {
            let stores = get_json(&querier, "/api/v1/stores", &[]).await?;
            let sidecars = stores["data"]["sidecar"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let healthy = sidecars
                .iter()
                .filter(|s| {
                    s["lastError"].is_null() && !s["labelSets"].as_array().is_none_or(Vec::is_empty)
                })
                .count();
            Ok((healthy == 3).then_some(stores))
        },
    )
    .await?;
    let sets = stores["data"]["sidecar"].to_string();
    for i in 1..=3 {
        assert!(
            sets.contains(&format!("\"cluster\":\"prometheus-node{i}\"")),
            "{sets}"
        );
    }
    assert_eq!(sets.matches("\"replica\":\"0\"").count(), 3, "{sets}");

    // The sum over the querier equals the sum of the servers' own answers, once every
    // Prometheus scraped all three.
    eventually(
        "sum(prometheus_tsdb_head_series) agrees",
        Duration::from_secs(90),
        || {
            let querier = querier.clone();
            async move {
                let at = now_seconds() - 2.0;
                let mut direct = 0.0;
                for i in 1..=3u16 {
                    let url = format!("http://127.0.0.1:{}", port(9090 + i));
                    let own = result(
                        &instant(&url, "count(prometheus_tsdb_head_series)", at, true).await?,
                    );
                    if own.first().map(value) != Some(3.0) {
                        return Ok(None);
                    }
                    direct += value(
                        &result(
                            &instant(&url, "sum(prometheus_tsdb_head_series)", at, true).await?,
                        )[0],
                    );
                }
                let through =
                    result(&instant(&querier, "sum(prometheus_tsdb_head_series)", at, true).await?);
                Ok((through.first().map(value) == Some(direct)).then_some(()))
            }
        },
    )
    .await?;

    // Every series carries its cluster, none its replica; three clusters.
    let at = now_seconds() - 1.0;
    let series = result(&instant(&querier, "prometheus_tsdb_head_series", at, true).await?);
    assert_eq!(
        series.len(),
        9,
        "3 servers scraped by each of 3 clusters: {series:?}"
    );
    for s in &series {
        assert!(s["metric"]["cluster"].is_string(), "{s}");
        assert!(s["metric"]["replica"].is_null(), "{s}");
    }
    let clusters = result(
        &instant(
            &querier,
            "count by (cluster) (prometheus_tsdb_head_series)",
            at,
            true,
        )
        .await?,
    );
    assert_eq!(clusters.len(), 3, "{clusters:?}");
    let values = get_json(&querier, "/api/v1/label/cluster/values", &[]).await?;
    assert_eq!(
        values["data"],
        serde_json::json!(["prometheus-node1", "prometheus-node2", "prometheus-node3"])
    );

    // Each Prometheus scrapes the three sidecars, which report Prometheus up.
    eventually(
        "gauntlet_sidecar_prometheus_up scraped as 1",
        Duration::from_secs(60),
        || {
            let querier = querier.clone();
            async move {
                let up = result(
                    &instant(
                        &querier,
                        "gauntlet_sidecar_prometheus_up",
                        now_seconds() - 1.0,
                        true,
                    )
                    .await?,
                );
                Ok((up.len() == 9 && up.iter().all(|s| value(s) == 1.0)).then_some(()))
            }
        },
    )
    .await?;

    // 5. A querier stacked on the first one's gRPC answers the same.
    let first_grpc: SocketAddr = format!("127.0.0.1:{}", port(29190)).parse()?;
    let stacked = querier_over(&[first_grpc]).await?;
    let at = now_seconds() - 5.0;
    for query in [
        "prometheus_tsdb_head_series",
        "sum by (cluster) (rate(prometheus_http_requests_total[1m]))",
        "count(up)",
    ] {
        for dedup in [true, false] {
            let direct = instant(&querier, query, at, dedup).await?;
            let through = instant(&stacked.url(), query, at, dedup).await?;
            assert_eq!(direct["data"], through["data"], "{query} dedup={dedup}");
        }
        let range = [
            ("query", query.to_owned()),
            ("start", format!("{:.0}", at - 60.0)),
            ("end", format!("{at:.0}")),
            ("step", "5".to_owned()),
        ];
        let direct = get_json(&querier, "/api/v1/query_range", &range).await?;
        let through = get_json(&stacked.url(), "/api/v1/query_range", &range).await?;
        assert_eq!(direct["data"], through["data"], "range {query}");
    }
    Ok(())
}

async fn querier_over(endpoints: &[SocketAddr]) -> anyhow::Result<Querier> {
    querier(endpoints).await
}

// ------------------------------------------------------------------ 2: HA pair

#[tokio::test]
async fn an_ha_pair_deduplicates_and_survives_losing_a_replica() -> anyhow::Result<()> {
    setup()?;
    let dir = scratch_dir("ha")?;
    // Every server scrapes one common target: the eu1 server.
    let eu1_address = free_loopback_address()?;
    let target = vec![eu1_address.to_string()];
    let mut eu1 = prometheus(
        &dir,
        "eu1",
        eu1_address,
        &[("cluster", "eu1"), ("replica", "0")],
        &target,
        "1s",
    )?;
    let mut us1_0 = prometheus(
        &dir,
        "us1-0",
        free_loopback_address()?,
        &[("cluster", "us1"), ("replica", "0")],
        &target,
        "1s",
    )?;
    let mut us1_1 = prometheus(
        &dir,
        "us1-1",
        free_loopback_address()?,
        &[("cluster", "us1"), ("replica", "1")],
        &target,
        "1s",
    )?;
    for p in [&mut eu1, &mut us1_0, &mut us1_1] {
        p.start()?;
    }
    for p in [&eu1, &us1_0, &us1_1] {
        p.ready().await?;
    }
    let sidecars = [
        sidecar(&eu1.url(), &[])?,
        sidecar(&us1_0.url(), &[])?,
        sidecar(&us1_1.url(), &[])?,
    ];
    let grpc: Vec<SocketAddr> = sidecars.iter().map(|s| s.grpc).collect();
    let querier = querier(&grpc).await?;
    let base = querier.url();
    let started = now_seconds();

    let query = "prometheus_http_requests_total{handler=\"/metrics\"}";
    eventually(
        "one series per cluster with dedup, three without",
        Duration::from_secs(60),
        || {
            let base = base.clone();
            async move {
                let at = now_seconds() - 1.0;
                let on = result(&instant(&base, query, at, true).await?);
                let off = result(&instant(&base, query, at, false).await?);
                Ok((on.len() == 2 && off.len() == 3).then_some(()))
            }
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(8)).await;

    // Lose one replica of us1: answers stay complete.
    let killed_at = now_seconds();
    drop(us1_0.process.take());
    tokio::time::sleep(Duration::from_secs(12)).await;
    let at = now_seconds() - 1.0;
    let on = result(&instant(&base, query, at, true).await?);
    let clusters: Vec<&str> = on
        .iter()
        .filter_map(|s| s["metric"]["cluster"].as_str())
        .collect();
    assert_eq!(clusters, vec!["eu1", "us1"], "{on:?}");
    let warnings = instant(&base, query, at, true).await?;
    assert!(
        warnings["warnings"]
            .as_array()
            .is_some_and(|w| !w.is_empty()),
        "the lost replica's sidecar is reported: {warnings}"
    );

    // rate() across the failover: no gap, no spike, no negative value.
    let range = get_json(
        &base,
        "/api/v1/query_range",
        &[
            ("query", format!("rate({query}[5s])")),
            ("start", format!("{:.0}", started + 8.0)),
            ("end", format!("{at:.0}")),
            ("step", "1".to_owned()),
        ],
    )
    .await?;
    let us1 = result(&range)
        .into_iter()
        .find(|s| s["metric"]["cluster"] == "us1")
        .ok_or_else(|| anyhow::anyhow!("no us1 series: {range}"))?;
    let points: Vec<f64> = us1["values"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p[1].as_str().and_then(|v| v.parse().ok()))
        .collect();
    let expected = (at.floor() - (started + 8.0).floor()) as usize + 1;
    assert!(
        points.len() + 2 >= expected,
        "gap at failover ({killed_at}): {points:?}"
    );
    let mut sorted = points.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    assert!(median > 0.0, "{points:?}");
    for p in &points {
        assert!(
            *p >= 0.0 && *p <= median * 3.0,
            "rate artefact {p} (median {median}) at failover: {points:?}"
        );
    }
    Ok(())
}

// ------------------------------------------------------------------ 3: reloader

#[tokio::test]
async fn the_reloader_applies_configuration_and_rule_changes() -> anyhow::Result<()> {
    setup()?;
    let dir = scratch_dir("reloader")?;
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules)?;
    let mut server = prometheus(
        &dir,
        "prom",
        free_loopback_address()?,
        &[("cluster", "a")],
        &[],
        "5s",
    )?;
    let template = dir.join("prometheus.yml.tmpl");
    let write_template = |interval: &str| {
        let text = render_config(
            &[("cluster", "$(RELOADER_TEST_CLUSTER)")],
            &[],
            interval,
            Some(&rules),
        );
        std::fs::write(&template, text)
    };
    write_template("5s")?;
    std::fs::write(
        &server.config,
        render_config(&[("cluster", "a")], &[], "5s", Some(&rules)),
    )?;
    server.start()?;
    server.ready().await?;
    let _sidecar = sidecar_with_env(
        &server.url(),
        &[
            format!("--reloader.config-file={}", template.display()),
            format!(
                "--reloader.config-envsubst-file={}",
                server.config.display()
            ),
            format!("--reloader.rule-dir={}", rules.display()),
        ],
        &[("RELOADER_TEST_CLUSTER", std::ffi::OsStr::new("substituted"))],
    )?;
    let url = server.url();
    let loaded = || {
        let url = url.clone();
        async move {
            let config = get_json(&url, "/api/v1/status/config", &[]).await?;
            Ok::<String, anyhow::Error>(config["data"]["yaml"].as_str().unwrap_or("").to_owned())
        }
    };
    eventually(
        "the substituted configuration is loaded",
        Duration::from_secs(60),
        || async {
            Ok(loaded()
                .await?
                .contains("cluster: substituted")
                .then_some(()))
        },
    )
    .await?;

    write_template("7s")?;
    eventually(
        "the changed configuration is loaded",
        Duration::from_secs(60),
        || async {
            Ok(loaded()
                .await?
                .contains("scrape_interval: 7s")
                .then_some(()))
        },
    )
    .await?;

    std::fs::write(
        rules.join("example.yml"),
        "groups:\n  - name: example\n    rules:\n      - record: job:up:sum\n        expr: sum(up)\n",
    )?;
    eventually(
        "the new rule file is loaded",
        Duration::from_secs(60),
        || {
            let url = url.clone();
            async move {
                let rules = get_json(&url, "/api/v1/rules", &[]).await?;
                Ok(rules.to_string().contains("job:up:sum").then_some(()))
            }
        },
    )
    .await?;
    Ok(())
}

// ------------------------------------------------------------------ 4: Prometheus down at start

#[tokio::test]
async fn a_prometheus_down_at_start_gives_warnings_then_answers() -> anyhow::Result<()> {
    setup()?;
    let dir = scratch_dir("down")?;
    let address = free_loopback_address()?;
    let mut server = prometheus(
        &dir,
        "prom",
        address,
        &[("cluster", "late")],
        &[address.to_string()],
        "1s",
    )?;
    let sidecar = sidecar(&server.url(), &[])?;
    wait_until_ok(
        &format!("http://{}/-/healthy", sidecar.http),
        Duration::from_secs(60),
    )
    .await?;
    let metrics_url = format!("http://{}/metrics", sidecar.http);
    let up_metric = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("gauntlet_sidecar_prometheus_up "))
            .map(|v| v.trim().to_owned())
    };
    let text = reqwest::get(&metrics_url).await?.text().await?;
    assert_eq!(up_metric(&text).as_deref(), Some("0"), "{text}");
    let ready = reqwest::get(format!("http://{}/-/ready", sidecar.http)).await?;
    assert_eq!(ready.status().as_u16(), 503);

    let querier = querier(&[sidecar.grpc]).await?;
    let body = instant(&querier.url(), "up", now_seconds(), true).await?;
    assert_eq!(body["status"], "success", "{body}");
    assert!(result(&body).is_empty(), "{body}");
    assert!(
        body["warnings"].as_array().is_some_and(|w| !w.is_empty()),
        "partial response names the failing sidecar: {body}"
    );

    server.start()?;
    server.ready().await?;
    let base = querier.url();
    eventually(
        "answers without warnings once Prometheus is up",
        Duration::from_secs(90),
        || {
            let base = base.clone();
            async move {
                let body = instant(&base, "up", now_seconds(), true).await?;
                let clean = body["warnings"].as_array().is_none_or(Vec::is_empty);
                Ok((clean && result(&body).len() == 1).then_some(()))
            }
        },
    )
    .await?;
    let text = reqwest::get(&metrics_url).await?.text().await?;
    assert_eq!(up_metric(&text).as_deref(), Some("1"), "{text}");
    assert!(
        text.contains("gauntlet_plugin_calls_total{"),
        "plugin metrics on /metrics"
    );
    wait_until_ok(
        &format!("http://{}/-/ready", sidecar.http),
        Duration::from_secs(10),
    )
    .await?;

    // Gone again: warnings, and recovery after a restart.
    drop(server.process.take());
    eventually(
        "a warning once Prometheus is gone",
        Duration::from_secs(30),
        || {
            let base = base.clone();
            async move {
                let body = instant(&base, "up", now_seconds(), true).await?;
                Ok(body["warnings"]
                    .as_array()
                    .is_some_and(|w| !w.is_empty())
                    .then_some(()))
            }
        },
    )
    .await?;
    server.start()?;
    server.ready().await?;
    eventually(
        "recovered after the restart",
        Duration::from_secs(60),
        || {
            let base = base.clone();
            async move {
                let body = instant(&base, "up", now_seconds(), true).await?;
                Ok(body["warnings"]
                    .as_array()
                    .is_none_or(Vec::is_empty)
                    .then_some(()))
            }
        },
    )
    .await?;
    Ok(())
}

// ------------------------------------------------------------------ 6: the UI in a browser

/// The label sets (as the UI shows them) of `query` asked of one Prometheus, with its external
/// labels added as its sidecar adds them.
async fn labels_at_prometheus(
    server: &Prometheus,
    external: &[(&str, &str)],
    query: &str,
) -> anyhow::Result<Vec<Value>> {
    let body = get_json(
        &server.url(),
        "/api/v1/query",
        &[("query", query.to_owned())],
    )
    .await?;
    Ok(result(&body)
        .into_iter()
        .map(|series| {
            let mut metric = series["metric"].clone();
            for (name, value) in external {
                metric[*name] = Value::from(*value);
            }
            metric
        })
        .collect())
}

fn shown(metrics: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = metrics.iter().map(ui_labels).collect();
    out.sort();
    out.dedup();
    out
}

#[tokio::test]
async fn the_ui_shows_the_ha_pair_deduplicated_and_the_three_sidecars() -> anyhow::Result<()> {
    setup()?;
    let dir = scratch_dir("ui")?;
    // Each server scrapes all three: `up` has three series per server.
    let addresses = [
        free_loopback_address()?,
        free_loopback_address()?,
        free_loopback_address()?,
    ];
    let targets: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    let topology: [(&str, [(&str, &str); 2]); 3] = [
        ("eu1", [("cluster", "eu1"), ("replica", "0")]),
        ("us1-0", [("cluster", "us1"), ("replica", "0")]),
        ("us1-1", [("cluster", "us1"), ("replica", "1")]),
    ];
    let mut servers = Vec::new();
    for ((name, external), address) in topology.iter().zip(addresses) {
        let mut server = prometheus(&dir, name, address, external, &targets, "1s")?;
        server.start()?;
        servers.push(server);
    }
    for server in &servers {
        server.ready().await?;
    }
    let sidecars: Vec<Sidecar> = servers
        .iter()
        .map(|s| sidecar(&s.url(), &[]))
        .collect::<anyhow::Result<_>>()?;
    let grpc: Vec<SocketAddr> = sidecars.iter().map(|s| s.grpc).collect();
    let querier = querier(&grpc).await?;
    let base = querier.url();

    // What the topology has, asked of each Prometheus: every `up` series with its server's
    // external labels; deduplication drops `replica`.
    let raw = eventually(
        "every server scrapes all three targets",
        Duration::from_secs(60),
        || {
            let servers = &servers;
            async move {
                let mut all = Vec::new();
                for (server, (_, external)) in servers.iter().zip(&topology) {
                    let seen = labels_at_prometheus(server, external, "up").await?;
                    if seen.len() != addresses.len() {
                        return Ok(None);
                    }
                    all.extend(seen);
                }
                Ok(Some(all))
            }
        },
    )
    .await?;
    let deduped: Vec<Value> = raw
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m.as_object_mut().map(|o| o.remove("replica"));
            m
        })
        .collect();
    let (raw, deduped) = (shown(&raw), shown(&deduped));
    assert!(raw.len() > deduped.len(), "{raw:?} vs {deduped:?}");
    eventually(
        "the querier answers with every series",
        Duration::from_secs(60),
        || {
            let (base, expected) = (base.clone(), raw.len());
            async move {
                let body = instant(&base, "up", now_seconds(), false).await?;
                Ok((result(&body).len() == expected).then_some(()))
            }
        },
    )
    .await?;

    let graph = "sum by (cluster) (prometheus_tsdb_head_series)";
    let seen = tokio::task::spawn_blocking({
        let base = base.clone();
        move || {
            drive_ui(
                &base,
                "tutorial",
                &serde_json::json!({ "query": "up", "graphQueries": [graph] }),
            )
        }
    })
    .await??;

    // Deduplicated: one row per target and cluster, `cluster` shown, `replica` gone.
    assert_eq!(sorted_strings(&seen["dedupSeries"]), deduped, "{seen}");
    assert_eq!(seen["dedupRows"], deduped.len(), "{seen}");
    assert!(
        deduped
            .iter()
            .all(|s| s.contains("cluster=") && !s.contains("replica=")),
        "{deduped:?}"
    );
    assert!(
        seen["statsText"]
            .as_str()
            .is_some_and(|s| s.contains(&format!("Result series: {}", deduped.len()))),
        "{seen}"
    );
    // Unticked: both replicas of us1, `replica` shown.
    assert_eq!(sorted_strings(&seen["rawSeries"]), raw, "{seen}");
    assert_eq!(seen["rawRows"], raw.len(), "{seen}");
    for replica in ["replica=\"0\"", "replica=\"1\""] {
        assert!(raw.iter().any(|s| s.contains(replica)), "{raw:?}");
    }
    // The graph: one line per cluster of the topology.
    let mut clusters: Vec<String> = topology
        .iter()
        .map(|(_, external)| format!("{{cluster=\"{}\"}}", external[0].1))
        .collect();
    clusters.dedup();
    assert_eq!(sorted_strings(&seen["legends"][0]), clusters, "{seen}");
    // The Stores page: the three sidecars, up, with their Prometheus's external labels.
    let mut expected_stores: Vec<(String, Vec<String>)> = sidecars
        .iter()
        .zip(&topology)
        .map(|(sidecar, (_, external))| {
            let set = serde_json::Value::Object(
                external
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                    .collect(),
            );
            (sidecar.grpc.to_string(), vec![ui_labels(&set)])
        })
        .collect();
    expected_stores.sort();
    assert_eq!(ui_stores(&seen), expected_stores, "{seen}");
    assert_eq!(
        api_stores(&get_json(&base, "/api/v1/stores", &[]).await?),
        expected_stores
    );
    let rows = seen["stores"].as_array().cloned().unwrap_or_default();
    assert!(
        rows.iter()
            .all(|r| r["text"].as_str().is_some_and(|t| t.contains("UP"))),
        "{rows:?}"
    );
    assert_eq!(seen["failures"], serde_json::json!([]), "{seen}");
    let artifacts = browser_artifacts("tutorial");
    for shot in [
        "1-table-dedup.png",
        "2-table-no-dedup.png",
        "3-graph-1.png",
        "4-stores.png",
    ] {
        assert!(artifacts.join(shot).is_file(), "missing screenshot {shot}");
    }
    Ok(())
}

// ------------------------------------------------------------------ benchmark

fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Series, points and the sum of the finite values of a range query's answer.
fn matrix_digest(body: &Value) -> (usize, usize, f64) {
    let series = result(body);
    let mut points = 0;
    let mut sum = 0.0;
    for s in &series {
        for point in s["values"].as_array().into_iter().flatten() {
            points += 1;
            let v: f64 = point[1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            if v.is_finite() {
                sum += v;
            }
        }
    }
    (series.len(), points, sum)
}

/// Asks each range query of Prometheus (`direct`) and of the querier (`through`) in turn, 31
/// times over kept-alive connections, checks that the last answers agree, and prints a table
/// row per query: the median milliseconds of each and the median of the pairs' ratios (which
/// a machine whose speed drifts affects less than the ratio of medians). Returns the worst
/// ratio.
async fn compare_range_queries(
    direct: &str,
    through: &str,
    queries: &[&str],
    (start, end, step): (f64, f64, f64),
) -> anyhow::Result<f64> {
    let client = reqwest::Client::new();
    println!("| query | prometheus ms | gauntlet ms | ratio |");
    println!("|---|---:|---:|---:|");
    let mut worst: f64 = 0.0;
    for query in queries {
        let params = [
            ("query", (*query).to_owned()),
            ("start", format!("{start:.0}")),
            ("end", format!("{end:.0}")),
            ("step", format!("{step:.0}")),
        ];
        let mut timings = [Vec::new(), Vec::new()];
        let mut answers = [Value::Null, Value::Null];
        for _ in 0..31 {
            for (i, base) in [direct, through].iter().enumerate() {
                let started = Instant::now();
                let response = client
                    .get(format!("{base}/api/v1/query_range"))
                    .query(&params)
                    .send()
                    .await?;
                let status = response.status();
                let body = response.text().await?;
                timings[i].push(started.elapsed().as_secs_f64() * 1000.0);
                anyhow::ensure!(status.is_success(), "{base} {query}: {status}: {body}");
                answers[i] = serde_json::from_str(&body)?;
            }
        }
        let (want, got) = (matrix_digest(&answers[0]), matrix_digest(&answers[1]));
        assert!(want.1 > 0, "{query}: Prometheus answered no points");
        assert_eq!(
            (want.0, want.1),
            (got.0, got.1),
            "{query}: series and points"
        );
        assert!(
            (want.2 - got.2).abs() <= want.2.abs() * 1e-9,
            "{query}: sums {} and {}",
            want.2,
            got.2
        );
        let mut ratios: Vec<f64> = timings[1]
            .iter()
            .zip(&timings[0])
            .map(|(through, direct)| through / direct)
            .collect();
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (direct, through) = (median(&mut timings[0]), median(&mut timings[1]));
        let ratio = median(&mut ratios);
        worst = worst.max(ratio);
        println!("| `{query}` | {direct:.2} | {through:.2} | {ratio:.2} |");
    }
    Ok(worst)
}

/// Writes the OpenMetrics file `metrics` into blocks in the data folder `data` with promtool
/// (for a Prometheus that is not running yet), then deletes the file.
fn backfill(metrics: &Path, data: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(metrics)
        .arg(data)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "promtool: {status}");
    std::fs::remove_file(metrics)?;
    Ok(())
}

/// Writes an OpenMetrics file of `series` counters `http_requests_total` (labels `job`, one of
/// ten, and `instance`), each with `samples` samples 15 s apart ending two hours and 7 s before
/// a whole hour, and a reset every 500 samples. Returns the last timestamp (seconds). Off the
/// whole minute, no sample sits on the boundary of a range selector evaluated on whole minutes,
/// where Prometheus 2.42 (closed ranges) and Gauntlet (3.x: left-open) would differ.
fn write_counters(path: &Path, series: usize, samples: i64) -> anyhow::Result<i64> {
    use std::io::Write;
    let now = now_seconds() as i64;
    let end = now / 3600 * 3600 - 7200 - 7;
    let start = end - (samples - 1) * 15;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "# TYPE http_requests counter")?;
    for s in 0..series {
        let rate = (s % 7 + 1) as f64;
        for i in 0..samples {
            let value = rate * (i % 500) as f64;
            writeln!(
                out,
                "http_requests_total{{job=\"job-{}\",instance=\"host-{s}:9100\"}} {value} {}",
                s % 10,
                start + i * 15
            )?;
        }
    }
    writeln!(out, "# EOF")?;
    out.flush()?;
    Ok(end)
}

/// The same range queries asked of Prometheus directly and through querier → sidecar plugin →
/// Prometheus: median latency of each, their ratio, and the sidecar's resident memory. Two data
/// sets: a minute of one Prometheus scraping itself every second (small answers, where each
/// hop's fixed cost shows), and 1,000 counters over 6 hours at 15 s backfilled into blocks
/// (dashboard-sized answers, where the samples dominate).
/// `GAUNTLET_BINARY=target/release/gauntlet cargo test -p gauntlet-e2e --test tutorial --
/// --ignored --nocapture` (a debug build measures mostly its own overhead).
#[tokio::test]
#[ignore = "benchmark: prints a table"]
async fn benchmark_querier_over_sidecar_against_prometheus() -> anyhow::Result<()> {
    setup()?;
    let dir = scratch_dir("bench")?;
    let address = free_loopback_address()?;
    let mut server = prometheus(
        &dir,
        "prom",
        address,
        &[("cluster", "bench")],
        &[address.to_string()],
        "1s",
    )?;
    server.start()?;
    let scraping_since = Instant::now();
    server.ready().await?;
    let scraping_sidecar = sidecar(&server.url(), &[])?;
    let scraping_querier = querier(&[scraping_sidecar.grpc]).await?;

    // While the first Prometheus scrapes: the second one's blocks.
    let mut backfilled = prometheus(
        &dir,
        "backfilled",
        free_loopback_address()?,
        &[("cluster", "backfilled")],
        &[],
        "1m",
    )?;
    let (series, samples) = (1_000usize, 6 * 240i64);
    let metrics = dir.join("counters.om");
    let last = write_counters(&metrics, series, samples)?;
    backfill(&metrics, &backfilled.data)?;
    backfilled.start()?;
    backfilled.ready().await?;
    let backfilled_sidecar = sidecar(&backfilled.url(), &[])?;
    let backfilled_querier = querier(&[backfilled_sidecar.grpc]).await?;

    // Enough samples to matter: a minute of self-scrapes every second.
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(scraping_since.elapsed())).await;
    let end = now_seconds().floor() - 1.0;
    println!("one Prometheus scraping itself every second, the last 55 s at 1 s steps:");
    let small = compare_range_queries(
        &server.url(),
        &scraping_querier.url(),
        &[
            "rate(prometheus_http_requests_total[10s])",
            "sum by (__name__) ({__name__=~\"prometheus_tsdb_.*\"})",
            "count({__name__=~\".+\"})",
        ],
        (end - 55.0, end, 1.0),
    )
    .await?;

    let last = (last + 7) as f64;
    println!("\n{series} counters x 6 h at 15 s in blocks, 6 h at 60 s steps:");
    let large = compare_range_queries(
        &backfilled.url(),
        &backfilled_querier.url(),
        &[
            "sum by (job) (rate(http_requests_total[5m]))",
            "max_over_time(http_requests_total{job=\"job-3\"}[10m])",
            "rate(http_requests_total{instance=\"host-7:9100\"}[5m])",
        ],
        (last - 6.0 * 3600.0 + 600.0, last, 60.0),
    )
    .await?;

    println!(
        "\nworst ratio {small:.2} (self-scrapes), {large:.2} (blocks); sidecar RSS {:.1} MiB \
         (self-scrapes), {:.1} MiB (blocks)",
        resident_mib(&scraping_sidecar).await?,
        resident_mib(&backfilled_sidecar).await?
    );
    Ok(())
}

/// The sidecar's resident memory in MiB, as its `/metrics` reports it (NaN without it).
async fn resident_mib(sidecar: &Sidecar) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("http://{}/metrics", sidecar.http))
        .await?
        .text()
        .await?;
    let bytes = metric_value(&text, "process_resident_memory_bytes").unwrap_or(f64::NAN);
    Ok(bytes / (1024.0 * 1024.0))
}

// ------------------------------------------------------------------ command line

#[test]
fn the_sidecar_refuses_shipping_without_tsdb_path_and_bad_urls() -> anyhow::Result<()> {
    let dir = scratch_dir("sidecar-cli")?;
    let bucket = dir.join("bucket.yml");
    std::fs::write(&bucket, "type: FILESYSTEM\nconfig:\n  directory: /tmp/x\n")?;
    let run = |args: &[&str]| -> anyhow::Result<(Option<i32>, String)> {
        let output = std::process::Command::new(binary()?)
            .arg("sidecar")
            .args(args)
            .output()?;
        Ok((
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    };
    let address = free_loopback_address()?.to_string();
    let (code, message) = run(&[
        "--objstore.config-file",
        &bucket.display().to_string(),
        "--http-address",
        &address,
    ])?;
    assert_eq!(code, Some(2), "{message}");
    assert!(message.contains("needs --tsdb.path"), "{message}");
    let (code, message) = run(&[
        "--prometheus.url",
        "ftp://example",
        "--http-address",
        &address,
        "--grpc-address",
        &free_loopback_address()?.to_string(),
    ])?;
    assert_eq!(code, Some(1), "{message}");
    assert!(message.contains("--prometheus.url"), "{message}");
    // A plugin of another world is refused, naming it.
    let manifest =
        plugin_common::write_manifest(&dir, "files", &plugin_dir().join("file-store.wasm"), "");
    let (code, message) = run(&[
        "--plugin",
        &manifest.display().to_string(),
        "--http-address",
        &address,
        "--grpc-address",
        &free_loopback_address()?.to_string(),
    ])?;
    assert_eq!(code, Some(1), "{message}");
    assert!(message.contains("world is store-backend"), "{message}");
    Ok(())
}

/// A binary built after `scripts/build-plugins` carries the sidecar plugin: copied away from
/// the source tree, with an empty plugin folder, it writes its own copy to the per-user cache
/// and runs it.
#[tokio::test]
async fn a_binary_alone_runs_its_built_in_sidecar_plugin() -> anyhow::Result<()> {
    let components = plugin_common::components();
    // Built after the plugins, so that it embeds them.
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--bin", "gauntlet"])
        .current_dir(plugin_common::workspace())
        .status()?;
    anyhow::ensure!(status.success(), "building gauntlet failed: {status}");
    let dir = scratch_dir("embedded")?;
    let alone = dir.join("bin").join("gauntlet");
    std::fs::create_dir_all(dir.join("bin"))?;
    std::fs::copy(gauntlet_binary()?, &alone)?;
    let (no_plugins, cache) = (dir.join("no-plugins"), dir.join("cache"));
    std::fs::create_dir_all(&no_plugins)?;
    let (http, grpc) = (free_loopback_address()?, free_loopback_address()?);
    let mut sidecar = Process::spawn_with_env(
        &format!("embedded-sidecar-{}", http.port()),
        &alone,
        &[
            "sidecar".to_owned(),
            "--prometheus.url=http://127.0.0.1:9".to_owned(),
            format!("--http-address={http}"),
            format!("--grpc-address={grpc}"),
        ],
        &[
            ("GAUNTLET_PLUGIN_DIR", no_plugins.as_os_str()),
            ("XDG_CACHE_HOME", cache.as_os_str()),
        ],
    )?;
    let healthy = wait_until_ok(&format!("http://{http}/-/healthy"), Duration::from_secs(60)).await;
    let output = sidecar.output();
    healthy.map_err(|e| anyhow::anyhow!("{e}\n{output}"))?;
    let written: Vec<PathBuf> = std::fs::read_dir(cache.join("gauntlet").join("builtin"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    assert_eq!(written.len(), 1, "{written:?}");
    assert!(
        written[0].to_string_lossy().ends_with("-sidecar.wasm"),
        "{written:?}"
    );
    assert_eq!(
        std::fs::read(&written[0])?,
        std::fs::read(components.join("sidecar.wasm"))?
    );
    assert_eq!(sidecar.terminate(Duration::from_secs(30))?, Some(0));
    Ok(())
}

// ------------------------------------------------------------------ answers beyond one response

/// Writes an OpenMetrics file of `series` gauges with `samples` random values 15 s apart,
/// ending two hours before now (so that promtool cuts it into blocks).
fn write_openmetrics(path: &Path, series: usize, samples: i64) -> anyhow::Result<i64> {
    use std::io::Write;
    let now = now_seconds() as i64;
    let end = now / 3600 * 3600 - 7200;
    let start = end - samples * 15;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "# TYPE big gauge")?;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for s in 0..series {
        for i in 0..samples {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let value = (state >> 11) as f64 / (1u64 << 53) as f64;
            writeln!(out, "big{{series=\"{s}\"}} {value} {}", start + i * 15)?;
        }
    }
    writeln!(out, "# EOF")?;
    out.flush()?;
    Ok(end)
}

#[tokio::test]
async fn an_answer_larger_than_one_http_response_is_read_in_slices() -> anyhow::Result<()> {
    setup()?;
    let dir = scratch_dir("large")?;
    let mut server = prometheus(
        &dir,
        "prom",
        free_loopback_address()?,
        &[("cluster", "large")],
        &[],
        "1m",
    )?;
    // About 24 MiB of chunks: beyond the 16 MiB the host hands a plugin in one response.
    let (series, samples) = (400usize, 8000i64);
    let metrics = dir.join("big.om");
    let end = write_openmetrics(&metrics, series, samples)?;
    backfill(&metrics, &server.data)?;
    server.start()?;
    server.ready().await?;
    let sidecar = sidecar(&server.url(), &[])?;
    let querier = querier(&[sidecar.grpc]).await?;
    let query = "sum(count_over_time(big[5d])), sum(sum_over_time(big[5d]))";
    let at = end as f64;
    for q in query.split(", ") {
        let direct = instant(&server.url(), q, at, true).await?;
        let through = eventually("the large answer", Duration::from_secs(60), || async {
            let body = instant(&querier.url(), q, at, true).await?;
            Ok((!result(&body).is_empty()).then_some(body))
        })
        .await?;
        assert_eq!(result(&direct).len(), 1, "{direct}");
        // The engines sum in different orders: equal up to rounding.
        let (a, b) = (value(&result(&direct)[0]), value(&result(&through)[0]));
        assert!((a - b).abs() <= a.abs() * 1e-12, "{q}: {a} vs {b}");
        assert!(through["warnings"].is_null(), "{through}");
    }
    let direct = instant(&server.url(), "sum(count_over_time(big[5d]))", at, true).await?;
    assert_eq!(
        value(&result(&direct)[0]),
        (series as f64) * (samples as f64)
    );
    // Prometheus counts the remote reads: more than one a query.
    let text = reqwest::get(format!("{}/metrics", server.url()))
        .await?
        .text()
        .await?;
    let reads: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("prometheus_http_requests_total{")
                && l.contains("handler=\"/api/v1/read\"")
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    assert!(
        reads >= 4.0,
        "two queries of at least two slices each: {reads} remote reads"
    );
    Ok(())
}
