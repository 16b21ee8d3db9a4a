//! Native histograms end to end: written into a real Prometheus 2.42 through remote write, read
//! by `gauntlet sidecar` as histogram chunks (remote read), and evaluated by `gauntlet query`
//! exactly as Prometheus evaluates them itself.

#[path = "plugin_common.rs"]
mod plugin_common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gauntlet_e2e::{Process, free_loopback_address, gauntlet_binary, get_json, wait_until_ok};
use gauntlet_proto::prometheus::{
    BucketSpan, Histogram, Label, TimeSeries, WriteRequest, histogram,
};
use prost::Message;
use serde_json::Value;

const STEP_MS: i64 = 30_000;
const SAMPLES: i64 = 40;

/// A counter histogram growing by a different amount in each of four buckets every sample.
fn series(name: &str, job: &str, end_ms: i64, growth: u64) -> TimeSeries {
    let start = end_ms - (SAMPLES - 1) * STEP_MS;
    let histograms = (0..SAMPLES)
        .map(|i| {
            let n = i as u64;
            let buckets = [n * growth, n * (growth + 1), n * 2, n];
            let count: u64 = buckets.iter().sum::<u64>() + n;
            let mut deltas = Vec::new();
            let mut previous = 0i64;
            for b in buckets {
                deltas.push(b as i64 - previous);
                previous = b as i64;
            }
            Histogram {
                count: Some(histogram::Count::CountInt(count)),
                sum: count as f64 * 1.75,
                schema: 0,
                zero_threshold: 1e-128,
                zero_count: Some(histogram::ZeroCount::ZeroCountInt(n)),
                positive_spans: vec![BucketSpan {
                    offset: 0,
                    length: 4,
                }],
                positive_deltas: deltas,
                timestamp: start + i * STEP_MS,
                ..Histogram::default()
            }
        })
        .collect();
    TimeSeries {
        labels: vec![
            Label {
                name: "__name__".into(),
                value: name.into(),
            },
            Label {
                name: "job".into(),
                value: job.into(),
            },
        ],
        histograms,
        ..TimeSeries::default()
    }
}

/// Whether two API results are equal, numbers (JSON strings) within 1e-9 relative.
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| close(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        (Value::String(x), Value::String(y)) => match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(p), Ok(q)) if p.is_finite() && q.is_finite() => {
                (p - q).abs() <= 1e-9 * p.abs().max(q.abs()) || p == q
            }
            _ => x == y,
        },
        _ => a == b,
    }
}

/// The result with every series' `cluster` label removed, sorted by labels.
fn normalised(mut body: Value) -> Value {
    let result = &mut body["data"]["result"];
    if let Some(items) = result.as_array_mut() {
        for item in items.iter_mut() {
            if let Some(metric) = item["metric"].as_object_mut() {
                metric.remove("cluster");
            }
        }
        items.sort_by_key(|item| item["metric"].to_string());
    }
    result.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_histograms_through_the_sidecar_match_prometheus() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let prometheus_address = free_loopback_address()?;
    std::fs::write(
        dir.path().join("prometheus.yml"),
        "global:\n  external_labels:\n    cluster: hist\n",
    )?;
    let _prometheus = Process::spawn(
        "prometheus-histograms",
        Path::new("prometheus"),
        &[
            format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address={prometheus_address}"),
            "--enable-feature=native-histograms".to_owned(),
            "--web.enable-remote-write-receiver".to_owned(),
            "--storage.tsdb.retention.time=10y".to_owned(),
        ],
    )?;
    let prometheus = format!("http://{prometheus_address}");
    wait_until_ok(&format!("{prometheus}/-/ready"), Duration::from_secs(60)).await?;

    let now_ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let end_ms = now_ms - now_ms % STEP_MS;
    let request = WriteRequest {
        timeseries: vec![
            series("rpc_duration_seconds", "api", end_ms, 3),
            series("rpc_duration_seconds", "db", end_ms, 7),
        ],
        ..WriteRequest::default()
    };
    let body = snap::raw::Encoder::new().compress_vec(&request.encode_to_vec())?;
    let response = reqwest::Client::new()
        .post(format!("{prometheus}/api/v1/write"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "remote write: {}: {}",
        response.status(),
        response.text().await?
    );

    let binary = gauntlet_binary()?;
    let (sidecar_http, sidecar_grpc) = (free_loopback_address()?, free_loopback_address()?);
    let plugins = plugin_common::components();
    let _sidecar = Process::spawn_with_env(
        "sidecar-histograms",
        &binary,
        &[
            "sidecar".into(),
            format!("--prometheus.url={prometheus}"),
            format!("--http-address={sidecar_http}"),
            format!("--grpc-address={sidecar_grpc}"),
        ],
        &[("GAUNTLET_PLUGIN_DIR", plugins.as_os_str())],
    )?;
    wait_until_ok(
        &format!("http://{sidecar_http}/-/ready"),
        Duration::from_secs(60),
    )
    .await?;
    let (query_http, query_grpc) = (free_loopback_address()?, free_loopback_address()?);
    let _querier = Process::spawn(
        "querier-histograms",
        &binary,
        &[
            "query".into(),
            format!("--http-address={query_http}"),
            format!("--grpc-address={query_grpc}"),
            format!("--endpoint={sidecar_grpc}"),
        ],
    )?;
    let querier = format!("http://{query_http}");
    wait_until_ok(&format!("{querier}/-/ready"), Duration::from_secs(30)).await?;

    let at = format!("{:.3}", (end_ms - 3 * STEP_MS) as f64 / 1000.0);
    let start = format!("{:.3}", (end_ms - 30 * STEP_MS) as f64 / 1000.0);
    let end = format!("{:.3}", end_ms as f64 / 1000.0);
    // Quantiles and fractions of exponential buckets interpolate linearly in Prometheus 2.x
    // and exponentially in 3.x (the semantics this engine implements), so those are compared
    // through quantities both versions define the same way: counts, sums, rates, increases and
    // bucket contents.
    let queries = [
        "rpc_duration_seconds",
        "histogram_count(rpc_duration_seconds)",
        "histogram_sum(rate(rpc_duration_seconds[5m]))",
        "histogram_count(sum by (job) (rate(rpc_duration_seconds[5m])))",
        "sum(increase(rpc_duration_seconds[10m]))",
        "sum by (job) (rate(rpc_duration_seconds[5m]))",
        "histogram_count(rpc_duration_seconds offset 5m) / 2",
    ];
    let mut compared = 0;
    for query in queries {
        let instant = [("query", query.to_owned()), ("time", at.clone())];
        let range = [
            ("query", query.to_owned()),
            ("start", start.clone()),
            ("end", end.clone()),
            ("step", "60".to_owned()),
        ];
        for (path, params) in [
            ("/api/v1/query", &instant[..]),
            ("/api/v1/query_range", &range[..]),
        ] {
            let expected = normalised(get_json(&prometheus, path, params).await?);
            // The querier sees the data once the sidecar's first Info has been answered.
            let mut actual = Value::Null;
            for _ in 0..20 {
                actual = normalised(get_json(&querier, path, params).await?);
                if close(&actual, &expected) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            assert!(
                expected.as_array().is_some_and(|a| !a.is_empty()),
                "{query}: Prometheus returned nothing"
            );
            assert!(
                close(&actual, &expected),
                "{path} {query}\n  gauntlet:   {actual}\n  prometheus: {expected}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 14);
    Ok(())
}
