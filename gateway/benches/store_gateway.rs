//! Store gateway benchmark: one block of many series in a filesystem bucket, served by
//! `gauntlet store` (its own process, so its resident memory is the gateway's alone) behind an
//! in-process querier, and by Prometheus 2.42 opened on a copy of the same block, side by side
//! in one run.
//!
//! Run with `cargo bench -p gauntlet --bench store_gateway`; `STORE_GATEWAY_BENCH_SERIES`
//! sets the number of series (default 100,000; the block for a count is written once under
//! `target/bench-store-gateway/` and reused). Each series has 2 h of samples at 30 s (two XOR
//! chunks). The gateway runs with its default flags plus those in `STORE_GATEWAY_BENCH_FLAGS`
//! (space-separated, e.g. `--index-cache-size=0`). Printed: its resident memory against the
//! total index size right after start (index-headers loaded, caches empty), its high-water
//! mark over the queries, right after them and after 10 s idle; the time from process start
//! to the first answered query (cold: index-headers built from the bucket; restart: read from
//! disk); the latency of a selective and a broad query against Prometheus (ratio); and the
//! object-store requests each query made with empty caches.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/mod.rs"]
mod common;

use common::{Server, median_query, query_once, wait_ready};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gauntlet::grpc::GrpcStore;
use gauntlet::query::proxy::ProxyLimits;
use gauntlet_tsdb::Labels;
use gauntlet_tsdb::block::{BlockWriter, BlockWriterOptions, DirSink, ThanosMeta, Ulid};

const SERIES_ENV: &str = "STORE_GATEWAY_BENCH_SERIES";
/// Extra flags for `gauntlet store`, separated by spaces (e.g. `--index-cache-size=0`).
const FLAGS_ENV: &str = "STORE_GATEWAY_BENCH_FLAGS";
const DEFAULT_SERIES: usize = 100_000;
/// 2023-11-14T20:00:00Z.
const START_MS: i64 = 1_699_992_000_000;
const SPAN_MS: i64 = 2 * 3_600_000;
const INTERVAL_MS: i64 = 30_000;
const METRICS: usize = 20;
const RUNS: usize = 5;
/// How long the gateway idles before its resident memory is read once more.
const SETTLE: Duration = Duration::from_secs(10);

fn series_count() -> usize {
    std::env::var(SERIES_ENV)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(DEFAULT_SERIES)
}

fn work_dir(series: usize) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("bench-store-gateway")
        .join(series.to_string())
}

/// Label sets in label order: `metric_<m>{instance="host-<i>", job="job-<i % 10>"}`.
fn label_sets(series: usize) -> Vec<Labels> {
    let instances = series.div_ceil(METRICS);
    let mut out = Vec::with_capacity(series);
    for m in 0..METRICS {
        for i in 0..instances {
            if out.len() == series {
                break;
            }
            out.push(Labels::from_pairs(&[
                ("__name__", format!("metric_{m}").as_str()),
                ("instance", format!("host-{i}").as_str()),
                ("job", format!("job-{}", i % 10).as_str()),
            ]));
        }
    }
    out.sort();
    out
}

/// Writes the bucket's one block unless it is there; returns the total index size.
fn write_bucket(bucket: &Path, series: usize) -> anyhow::Result<u64> {
    std::fs::create_dir_all(bucket)?;
    let existing = std::fs::read_dir(bucket)?
        .filter_map(Result::ok)
        .find(|e| e.path().join("meta.json").is_file());
    if let Some(block) = existing {
        return Ok(std::fs::metadata(block.path().join("index"))?.len());
    }
    eprintln!("writing a block of {series} series ...");
    let ulid = Ulid::generate()?;
    let tmp = bucket.join(format!("{ulid}.tmp"));
    let options = BlockWriterOptions {
        ulid: Some(ulid),
        thanos: Some(ThanosMeta {
            source: "bench".into(),
            ..ThanosMeta::default()
        }),
        ..BlockWriterOptions::default()
    };
    let mut writer = BlockWriter::new(DirSink::new(&tmp), options)?;
    let mut samples = Vec::new();
    for (n, labels) in label_sets(series).iter().enumerate() {
        samples.clear();
        let mut v = (n % 1000) as f64;
        let mut seed = n as u64 | 1;
        for k in 0..SPAN_MS / INTERVAL_MS {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            v += (seed % 100) as f64 / 10.0;
            samples.push((START_MS + k * INTERVAL_MS + (n as i64 % 1000), v));
        }
        writer.add_samples(labels, &samples)?;
        if n % 100_000 == 99_999 {
            eprintln!("  {} series", n + 1);
        }
    }
    writer.finish()?;
    let dir = bucket.join(ulid.to_string());
    std::fs::rename(&tmp, &dir)?;
    Ok(std::fs::metadata(dir.join("index"))?.len())
}

/// A running store gateway (`gauntlet store` over the bucket, its own process so its resident
/// memory is the gateway's alone) and an in-process querier over its gRPC StoreAPI.
struct Gateway {
    /// The querier's `http://host:port`.
    base: String,
    /// The store gateway's HTTP `http://host:port` (`/metrics`, `/-/ready`).
    store_http: String,
    process: Server,
    _querier: support::Querier,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `gauntlet store` over `bucket` with index-headers in `data_dir`, waits until its
/// first block sync is done, and puts a querier in front of it. Returns it with the instant
/// the process was started.
async fn start_gateway(
    client: &reqwest::Client,
    bucket: &Path,
    data_dir: &Path,
) -> anyhow::Result<(Gateway, Instant)> {
    let (http_port, grpc_port) = (free_port()?, free_port()?);
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_gauntlet"))
        .arg("store")
        .arg(format!(
            "--objstore.config=type: FILESYSTEM\nconfig:\n  directory: {}\n",
            bucket.display()
        ))
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg(format!("--http-address=127.0.0.1:{http_port}"))
        .arg(format!("--grpc-address=127.0.0.1:{grpc_port}"))
        .args(
            std::env::var(FLAGS_ENV)
                .unwrap_or_default()
                .split_whitespace(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let store_http = format!("http://127.0.0.1:{http_port}");
    let process = Server {
        base: store_http.clone(),
        child,
    };
    wait_ready(client, &store_http, Duration::from_secs(600)).await?;
    let store = GrpcStore::connect_lazy(&format!("127.0.0.1:{grpc_port}"))?;
    let querier = support::Querier::start(
        vec![("store-gateway", Arc::new(store))],
        ProxyLimits::default(),
    )
    .await?;
    Ok((
        Gateway {
            base: querier.base.clone(),
            store_http,
            process,
            _querier: querier,
        },
        started,
    ))
}

fn start_prometheus(dir: &Path, bucket: &Path) -> anyhow::Result<Server> {
    let data = dir.join("prometheus-data");
    if !data.exists() {
        let status = Command::new("cp")
            .arg("-r")
            .arg(bucket)
            .arg(&data)
            .status()?;
        anyhow::ensure!(status.success(), "copying the block failed");
    }
    common::start_prometheus(dir, &data)
}

/// Sum of the gateway's object-store request counters.
async fn objstore_requests(client: &reqwest::Client, base: &str) -> anyhow::Result<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("gauntlet_bucket_store_objstore_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

fn status_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix(field)
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
        })
        .unwrap_or(f64::NAN)
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| {
                let p = e.path();
                if p.is_dir() {
                    dir_size(&p)
                } else {
                    e.metadata().map_or(0, |m| m.len())
                }
            })
            .sum()
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let series = series_count();
    let dir = work_dir(series);
    let bucket = dir.join("bucket");
    let data_dir = dir.join("store-data");
    let index_size = write_bucket(&bucket, series)?;
    let _ = std::fs::remove_dir_all(&data_dir);
    let client = reqwest::Client::new();
    let prometheus = start_prometheus(&dir, &bucket)?;

    let at = ((START_MS + SPAN_MS - 60_000) / 1000).to_string();
    let selective = [
        ("query", "metric_7{instance=\"host-123\"}".to_owned()),
        ("time", at.clone()),
    ];
    let broad = [
        ("query", "sum by (job) (metric_3)".to_owned()),
        ("time", at.clone()),
    ];
    let broad_range = [
        ("query", "sum by (job) (rate(metric_3[5m]))".to_owned()),
        ("start", ((START_MS + SPAN_MS / 2) / 1000).to_string()),
        ("end", ((START_MS + SPAN_MS) / 1000).to_string()),
        ("step", "60".to_owned()),
    ];

    // Cold start: index-headers built from the bucket.
    let (gateway, started) = start_gateway(&client, &bucket, &data_dir).await?;
    let (_, n) = query_once(&client, &gateway.base, &selective).await?;
    let first_query_cold = started.elapsed();
    anyhow::ensure!(n == 1, "the selective query found {n} series");
    drop(gateway);
    // Restart: index-headers from disk, empty caches.
    let (gateway, started) = start_gateway(&client, &bucket, &data_dir).await?;
    let pid = gateway.process.child.id();
    let idle_rss = status_kib(pid, "VmRSS:");
    let before = objstore_requests(&client, &gateway.store_http).await?;
    let (selective_cold, _) = query_once(&client, &gateway.base, &selective).await?;
    let first_query_restart = started.elapsed();
    let after_selective = objstore_requests(&client, &gateway.store_http).await?;
    let (broad_cold, _) = query_once(&client, &gateway.base, &broad).await?;
    let after_broad = objstore_requests(&client, &gateway.store_http).await?;
    let (broad_range_cold, _) = query_once(&client, &gateway.base, &broad_range).await?;
    let after_range = objstore_requests(&client, &gateway.store_http).await?;

    wait_ready(&client, &prometheus.base, Duration::from_secs(300)).await?;
    let mut rows = Vec::new();
    for (name, params, cold, requests) in [
        (
            "selective",
            &selective[..],
            selective_cold,
            after_selective - before,
        ),
        (
            "broad",
            &broad[..],
            broad_cold,
            after_broad - after_selective,
        ),
        (
            "broad range",
            &broad_range[..],
            broad_range_cold,
            after_range - after_broad,
        ),
    ] {
        let (ours, n_ours) = median_query(&client, &gateway.base, params, RUNS).await?;
        let (theirs, n_theirs) = median_query(&client, &prometheus.base, params, RUNS).await?;
        anyhow::ensure!(n_ours == n_theirs, "{name}: {n_ours} series vs {n_theirs}");
        rows.push((
            name,
            params[0].1.clone(),
            cold,
            ours,
            theirs,
            requests,
            n_ours,
        ));
    }
    let final_rss = status_kib(pid, "VmRSS:");
    let peak_rss = status_kib(pid, "VmHWM:");
    tokio::time::sleep(SETTLE).await;
    let settled_rss = status_kib(pid, "VmRSS:");
    let prom_rss = status_kib(prometheus.child.id(), "VmRSS:");
    let headers = dir_size(&data_dir);
    let chunks = dir_size(&bucket) - index_size;

    let mib = |kib: f64| kib / 1024.0;
    let ratio = |kib: f64| kib * 1024.0 / index_size as f64;
    println!();
    println!(
        "store gateway: {series} series, 1 block, index {:.1} MiB, chunks {:.1} MiB, local index-headers {:.1} MiB; Prometheus RSS {:.1} MiB; extra flags: {:?}",
        index_size as f64 / 1048576.0,
        chunks as f64 / 1048576.0,
        headers as f64 / 1048576.0,
        mib(prom_rss),
        std::env::var(FLAGS_ENV).unwrap_or_default()
    );
    println!();
    println!("| store gateway resident memory | MiB | ÷ index size (goal ≤ 0.5) |");
    println!("|---|---:|---:|");
    for (what, kib) in [
        ("after start (index-headers loaded)", idle_rss),
        ("high-water mark over the queries", peak_rss),
        ("after the queries", final_rss),
        ("after the queries + 10 s idle", settled_rss),
    ] {
        println!("| {what} | {:.1} | {:.2} |", mib(kib), ratio(kib));
    }
    println!();
    println!(
        "time to first query: {:.0} ms cold (index-headers built), {:.0} ms after a restart (index-headers on disk)",
        ms(first_query_cold),
        ms(first_query_restart)
    );
    println!();
    println!(
        "| query | series | gateway cold ms | gateway warm ms | Prometheus ms | warm ratio | object-store requests (cold) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, expr, cold, ours, theirs, requests, n) in rows {
        println!(
            "| {name}: `{expr}` | {n} | {:.1} | {:.1} | {:.1} | {:.2} | {requests:.0} |",
            ms(cold),
            ms(ours),
            ms(theirs),
            ours.as_secs_f64() / theirs.as_secs_f64()
        );
    }
    Ok(())
}
