//! PromQL benchmark against Prometheus 2.42, side by side in one run, through each system's
//! HTTP API.
//!
//! Run with `cargo bench -p gauntlet --bench promql`. The data set — 10,000 series over 2 h at
//! 15 s: 4,000 counters, 4,000 gauges and 200 classic histograms of 10 buckets — is generated
//! deterministically, written as OpenMetrics, turned into blocks by `promtool tsdb
//! create-blocks-from openmetrics` and served by `prometheus`; Gauntlet serves the same series
//! from a child process (this binary in server mode) holding them as XOR chunks in memory.
//! Every query runs instant (at the end) and as a range query (step 15 s over the 2 h); the
//! table shows the median of several runs, the ratio Gauntlet / Prometheus, and each process's
//! peak resident memory (VmHWM) at the end.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/mod.rs"]
mod common;

use common::{Server, median_query, wait_ready};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use gauntlet::query::proxy::ProxyLimits;
use gauntlet::store::memory::MemoryStore;
use gauntlet_tsdb::Labels;

const START_S: i64 = 1_700_000_000;
const HOURS: i64 = 2;
const STEP_S: i64 = 15;
const RUNS: usize = 5;
const SERVE_ENV: &str = "GAUNTLET_BENCH_SERVE";

const QUERIES: [&str; 6] = [
    "sum by (job) (rate(x[5m]))",
    "histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))",
    "topk(10, x)",
    "x / y",
    "max_over_time(rate(x[5m])[30m:1m])",
    "count_over_time(x[1h])",
];

/// The data set, one series at a time (never all samples at once).
fn series() -> impl Iterator<Item = (Labels, Vec<(i64, f64)>)> {
    let steps = HOURS * 3600 / STEP_S;
    let mut seed = 0x853c_49e6_748f_ea9b_u64;
    let mut random = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let mut all = Vec::new();
    for i in 0..4000u64 {
        let job = format!("job-{}", i % 20);
        let instance = format!("host-{i}:9100");
        let jitter = 1 + random(999) as i64;
        for name in ["x", "y"] {
            let labels = Labels::from_pairs(&[
                ("__name__", name),
                ("job", job.as_str()),
                ("instance", instance.as_str()),
            ]);
            let mut value = random(1000) as f64;
            let samples: Vec<(i64, f64)> = (0..steps)
                .map(|s| {
                    value = if name == "x" {
                        value + random(100) as f64
                    } else {
                        (random(10_000) as f64) / 100.0
                    };
                    ((START_S + s * STEP_S) * 1000 + jitter, value)
                })
                .collect();
            all.push((labels, samples));
        }
    }
    let bounds = [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf",
    ];
    for i in 0..200u64 {
        let job = format!("job-{}", i % 20);
        let instance = format!("host-{i}:9100");
        let jitter = 1 + random(999) as i64;
        let mut counts = vec![0.0; bounds.len()];
        let mut per_bucket: Vec<Vec<(i64, f64)>> =
            vec![Vec::with_capacity(steps as usize); bounds.len()];
        for s in 0..steps {
            let t = (START_S + s * STEP_S) * 1000 + jitter;
            let mut running = 0.0;
            for (b, count) in counts.iter_mut().enumerate() {
                running += random(20) as f64;
                *count += running;
                per_bucket[b].push((t, *count));
            }
        }
        for (bound, samples) in bounds.iter().zip(per_bucket) {
            let labels = Labels::from_pairs(&[
                ("__name__", "h_bucket"),
                ("job", job.as_str()),
                ("instance", instance.as_str()),
                ("le", bound),
            ]);
            all.push((labels, samples));
        }
    }
    all.into_iter()
}

fn work_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("bench-promql")
}

/// Writes the OpenMetrics file once; later runs reuse it.
fn write_openmetrics(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    eprintln!("writing {} ...", path.display());
    let mut out = std::io::BufWriter::new(std::fs::File::create(path.with_extension("tmp"))?);
    let mut current_name = String::new();
    for (labels, samples) in series() {
        let name = labels.get("__name__").unwrap_or_default().to_owned();
        if name != current_name {
            let family = name.trim_end_matches("_bucket");
            let kind = match name.as_str() {
                "x" => "counter",
                "y" => "gauge",
                _ => "histogram",
            };
            writeln!(out, "# TYPE {family} {kind}")?;
            current_name = name.clone();
        }
        let rendered: Vec<String> = labels
            .iter()
            .filter(|l| l.name != "__name__")
            .map(|l| format!("{}=\"{}\"", l.name, l.value))
            .collect();
        let series = format!("{name}{{{}}}", rendered.join(","));
        for (t, v) in samples {
            writeln!(out, "{series} {v} {}.{:03}", t / 1000, t % 1000)?;
        }
    }
    writeln!(out, "# EOF")?;
    out.flush()?;
    drop(out);
    std::fs::rename(path.with_extension("tmp"), path)
}

/// Peak resident memory of a process in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Server mode: serve the data set through a querier until killed; prints the address.
async fn serve() -> anyhow::Result<()> {
    let store = MemoryStore::from_samples(Labels::empty(), "sidecar", series())?;
    let querier =
        support::Querier::start(vec![("bench", Arc::new(store))], ProxyLimits::default()).await?;
    println!("{}", querier.base);
    std::io::stdout().flush()?;
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    Ok(())
}

fn start_gauntlet() -> anyhow::Result<Server> {
    let mut child = Command::new(std::env::current_exe()?)
        .env(SERVE_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    Ok(Server {
        base: line.trim().to_owned(),
        child,
    })
}

fn start_prometheus(openmetrics: &Path) -> anyhow::Result<Server> {
    let dir = work_dir();
    let data = dir.join("prometheus-data");
    if !data.exists() {
        eprintln!("promtool tsdb create-blocks-from openmetrics ...");
        let status = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(openmetrics)
            .arg(&data)
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "promtool failed");
    }
    common::start_prometheus(&dir, &data)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os(SERVE_ENV).is_some() {
        return serve().await;
    }
    std::fs::create_dir_all(work_dir())?;
    let openmetrics = work_dir().join("data.om");
    write_openmetrics(&openmetrics)?;
    let prometheus = start_prometheus(&openmetrics)?;
    let gauntlet = start_gauntlet()?;
    let client = reqwest::Client::new();
    wait_ready(&client, &prometheus.base, Duration::from_secs(60)).await?;
    wait_ready(&client, &gauntlet.base, Duration::from_secs(60)).await?;

    let end = START_S + HOURS * 3600 - 10;
    println!(
        "{:<62} {:>7} {:>10} {:>10} {:>6} {:>8}",
        "query", "kind", "prom ms", "gauntlet", "ratio", "series"
    );
    for query in QUERIES {
        for (kind, params) in [
            (
                "instant",
                vec![("query", query.to_owned()), ("time", end.to_string())],
            ),
            (
                "range",
                vec![
                    ("query", query.to_owned()),
                    ("start", START_S.to_string()),
                    ("end", end.to_string()),
                    ("step", STEP_S.to_string()),
                ],
            ),
        ] {
            let (prom, prom_series) =
                median_query(&client, &prometheus.base, &params, RUNS).await?;
            let (ours, our_series) = median_query(&client, &gauntlet.base, &params, RUNS).await?;
            let note = if prom_series == our_series {
                String::new()
            } else {
                format!(" (prometheus {prom_series})")
            };
            println!(
                "{:<62} {:>7} {:>10.1} {:>10.1} {:>6.2} {:>8}{note}",
                query,
                kind,
                prom.as_secs_f64() * 1000.0,
                ours.as_secs_f64() * 1000.0,
                ours.as_secs_f64() / prom.as_secs_f64(),
                our_series
            );
        }
    }
    println!(
        "peak RSS: prometheus {:.0} MiB, gauntlet {:.0} MiB",
        peak_rss_mib(prometheus.child.id()),
        peak_rss_mib(gauntlet.child.id())
    );
    Ok(())
}
