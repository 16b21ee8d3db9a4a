//! `gauntlet store` over a filesystem bucket behind `gauntlet query`, against a real
//! Prometheus 2.42 opened on copies of the same blocks: instant and range queries must answer
//! identically (same series, same timestamps, values within 1e-9 relative).
//!
//! The blocks are written by our block writer (counters, gauges, a classic histogram) and by
//! promtool from OpenMetrics, so the gateway reads both producers' files. Sample timestamps sit
//! off whole seconds: Prometheus 2.42 closes range windows on the left while our engine follows
//! Prometheus 3 (left-open), so a sample exactly on a window's start would differ by design,
//! not because of the store.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gauntlet_e2e::{
    Process, S3Server, free_loopback_address, gauntlet_binary, moto_server, scratch_dir,
    wait_until_ok,
};
use gauntlet_tsdb::block::{BlockWriterOptions, ThanosMeta, write_block_dir};
use gauntlet_tsdb::labels::Labels;
use serde_json::Value;

/// 2023-11-14T20:00:00Z, 2h-aligned.
const T0: i64 = 1_699_992_000_000;
const HOUR: i64 = 3_600_000;
const STEP: i64 = 15_000;

type SeriesData = Vec<(Labels, Vec<(i64, f64)>)>;

fn series_between(start: i64, end: i64) -> SeriesData {
    let mut out: SeriesData = Vec::new();
    let times = move |offset: i64| {
        (0..)
            .map(move |i| start + offset + 1234 + i * STEP)
            .take_while(move |&t| t < end)
    };
    for (j, job) in ["api", "web"].iter().enumerate() {
        for instance in 0..4 {
            let inst = format!("host-{instance}:9100");
            for code in ["200", "500"] {
                let labels = Labels::from_pairs(&[
                    ("__name__", "http_requests_total"),
                    ("code", code),
                    ("instance", inst.as_str()),
                    ("job", job),
                ]);
                let samples = times(instance * 1000)
                    .map(|t| {
                        let k = (t - T0) / STEP;
                        // A counter with a reset every 500 steps.
                        let base = (k % 500) as f64
                            * (1.5 + instance as f64)
                            * if code == "500" { 0.1 } else { 1.0 };
                        (t, base * (1.0 + j as f64))
                    })
                    .collect();
                out.push((labels, samples));
            }
            let labels = Labels::from_pairs(&[
                ("__name__", "node_memory_used_bytes"),
                ("instance", inst.as_str()),
                ("job", job),
            ]);
            let samples = times(instance * 500)
                .map(|t| {
                    let k = ((t - T0) / STEP) as f64;
                    (
                        t,
                        1.0e9 + (k * 0.05 + instance as f64).sin() * 2.0e8 + j as f64 * 1.0e7,
                    )
                })
                .collect();
            out.push((labels, samples));
        }
        for le in ["0.1", "0.5", "1", "+Inf"] {
            let labels = Labels::from_pairs(&[
                ("__name__", "request_duration_seconds_bucket"),
                ("job", job),
                ("le", le),
            ]);
            let share = match le {
                "0.1" => 0.4,
                "0.5" => 0.7,
                "1" => 0.9,
                _ => 1.0,
            };
            let samples = times(0)
                .map(|t| {
                    let k = ((t - T0) / STEP) as f64;
                    (t, (k * 3.0 * share).floor())
                })
                .collect();
            out.push((labels, samples));
        }
    }
    out.sort_by(|a, b| a.0.compare(&b.0));
    out
}

fn write_blocks(bucket: &Path) -> anyhow::Result<()> {
    for (start, end) in [(T0, T0 + 2 * HOUR), (T0 + 2 * HOUR, T0 + 4 * HOUR)] {
        let series = series_between(start, end);
        let options = BlockWriterOptions {
            thanos: Some(ThanosMeta {
                source: "test".into(),
                ..ThanosMeta::default()
            }),
            ..BlockWriterOptions::default()
        };
        write_block_dir(
            bucket,
            options,
            series.iter().map(|(l, s)| (l, s.as_slice())),
        )?;
    }
    Ok(())
}

fn promtool_blocks(work: &Path, bucket: &Path) -> anyhow::Result<()> {
    let mut text = String::from(
        "# HELP room_temperature_celsius Temperature.\n# TYPE room_temperature_celsius gauge\n",
    );
    for room in ["kitchen", "office"] {
        for i in 0..(4 * 60) {
            let t = format!("{}.321", T0 / 1000 + 60 * i);
            let v = 20.0 + ((i % 17) as f64) * 0.25 + if room == "office" { 2.0 } else { 0.0 };
            text.push_str(&format!(
                "room_temperature_celsius{{room=\"{room}\"}} {v} {t}\n"
            ));
        }
    }
    text.push_str("# EOF\n");
    let input = work.join("rooms.om");
    std::fs::write(&input, text)?;
    let status = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(bucket)
        .output()
        .map_err(|e| anyhow::anyhow!("promtool: {e} (install Debian's prometheus)"))?;
    anyhow::ensure!(
        status.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

async fn get(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    params: &[(&str, String)],
) -> anyhow::Result<Value> {
    let response = client
        .get(format!("{base}{path}"))
        .query(params)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    anyhow::ensure!(
        status.is_success(),
        "{base}{path} {params:?}: {status} {body}"
    );
    Ok(body)
}

fn number(v: &Value) -> f64 {
    match v.as_str() {
        Some("NaN") => f64::NAN,
        Some("+Inf") => f64::INFINITY,
        Some("-Inf") => f64::NEG_INFINITY,
        Some(s) => s.parse().unwrap_or(f64::NAN),
        None => f64::NAN,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn points(v: &Value) -> Vec<(f64, f64)> {
    let one = |p: &Value| (p[0].as_f64().unwrap_or(f64::NAN), number(&p[1]));
    if let Some(values) = v.get("values").and_then(Value::as_array) {
        values.iter().map(one).collect()
    } else if let Some(value) = v.get("value") {
        vec![one(value)]
    } else {
        Vec::new()
    }
}

/// Compares two API answers; returns a description of the first difference.
fn compare(ours: &Value, theirs: &Value) -> Result<(), String> {
    let (a, b) = (&ours["data"], &theirs["data"]);
    if a["resultType"] != b["resultType"] {
        return Err(format!(
            "result type {} vs {}",
            a["resultType"], b["resultType"]
        ));
    }
    if a["resultType"] == "scalar" {
        let (x, y) = (
            points(&serde_json::json!({"value": a["result"]})),
            points(&serde_json::json!({"value": b["result"]})),
        );
        return if x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| p.0 == q.0 && close(p.1, q.1))
        {
            Ok(())
        } else {
            Err(format!("scalar {x:?} vs {y:?}"))
        };
    }
    let sorted = |v: &Value| {
        let mut s: Vec<(String, Value)> = v["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s["metric"].to_string(), s))
            .collect();
        s.sort_by(|x, y| x.0.cmp(&y.0));
        s
    };
    let (x, y) = (sorted(a), sorted(b));
    if x.len() != y.len() {
        return Err(format!(
            "{} series vs {}: {:?} vs {:?}",
            x.len(),
            y.len(),
            x.iter().map(|s| &s.0).collect::<Vec<_>>(),
            y.iter().map(|s| &s.0).collect::<Vec<_>>()
        ));
    }
    for ((ma, sa), (mb, sb)) in x.iter().zip(&y) {
        if ma != mb {
            return Err(format!("series {ma} vs {mb}"));
        }
        let (pa, pb) = (points(sa), points(sb));
        if pa.len() != pb.len() {
            return Err(format!("{ma}: {} points vs {}", pa.len(), pb.len()));
        }
        for (p, q) in pa.iter().zip(&pb) {
            if p.0 != q.0 || !close(p.1, q.1) {
                return Err(format!("{ma}: point {p:?} vs {q:?}"));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_gateway_answers_like_prometheus_on_the_same_blocks() -> anyhow::Result<()> {
    let work = scratch_dir("store-gateway")?;
    let bucket = work.join("bucket");
    std::fs::create_dir_all(&bucket)?;
    write_blocks(&bucket)?;
    promtool_blocks(&work, &bucket)?;
    let prom_data = work.join("prometheus-data");
    copy_dir(&bucket, &prom_data)?;
    std::fs::write(
        work.join("prometheus.yml"),
        "global:\n  scrape_interval: 1h\n",
    )?;

    let prom_http = free_loopback_address()?;
    let _prometheus = Process::spawn(
        "prometheus",
        Path::new("prometheus"),
        &[
            format!("--config.file={}", work.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", prom_data.display()),
            "--storage.tsdb.retention.time=10y".into(),
            format!("--web.listen-address={prom_http}"),
        ],
    )?;
    // The blocks go to a real S3 server with `gauntlet tools bucket upload`, as users move
    // Prometheus blocks to long-term storage; without moto the filesystem bucket is served.
    let binary = gauntlet_binary()?;
    let s3 = match moto_server() {
        Some(moto) => Some(S3Server::start(&moto, "blocks").await?),
        None => None,
    };
    let objstore = match &s3 {
        Some(server) => {
            let yaml = server.objstore_yaml();
            let upload = Command::new(&binary)
                .args(["tools", "bucket", "upload", "--objstore.config", &yaml])
                .arg(&bucket)
                .output()?;
            anyhow::ensure!(
                upload.status.success(),
                "upload: {}",
                String::from_utf8_lossy(&upload.stderr)
            );
            yaml
        }
        None => format!(
            "type: FILESYSTEM\nconfig:\n  directory: {}\n",
            bucket.display()
        ),
    };
    let (store_http, store_grpc) = (free_loopback_address()?, free_loopback_address()?);
    let _store = Process::spawn(
        "store-gateway",
        &binary,
        &[
            "store".into(),
            "--objstore.config".into(),
            objstore,
            "--data-dir".into(),
            work.join("store-data").display().to_string(),
            "--http-address".into(),
            store_http.to_string(),
            "--grpc-address".into(),
            store_grpc.to_string(),
        ],
    )?;
    let (query_http, query_grpc) = (free_loopback_address()?, free_loopback_address()?);
    let _query = Process::spawn(
        "querier",
        &binary,
        &[
            "query".into(),
            "--http-address".into(),
            query_http.to_string(),
            "--grpc-address".into(),
            query_grpc.to_string(),
            "--store".into(),
            store_grpc.to_string(),
        ],
    )?;
    wait_until_ok(
        &format!("http://{store_http}/-/ready"),
        Duration::from_secs(60),
    )
    .await?;
    wait_until_ok(
        &format!("http://{query_http}/-/ready"),
        Duration::from_secs(60),
    )
    .await?;
    wait_until_ok(
        &format!("http://{prom_http}/-/ready"),
        Duration::from_secs(60),
    )
    .await?;
    let client = reqwest::Client::new();
    let (ours, theirs) = (
        format!("http://{query_http}"),
        format!("http://{prom_http}"),
    );

    // The querier learns the store's time range from Info (every few seconds).
    let probe = [
        ("query", "count(http_requests_total)".to_owned()),
        ("time", ((T0 + HOUR) / 1000).to_string()),
    ];
    let mut found = false;
    for _ in 0..100 {
        let answer = get(&client, &ours, "/api/v1/query", &probe).await?;
        if answer["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::ensure!(found, "the querier never saw the store gateway's data");

    let metrics = client
        .get(format!("http://{store_http}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    anyhow::ensure!(
        metrics.contains("gauntlet_bucket_store_blocks_loaded 4"),
        "blocks loaded:\n{metrics}"
    );

    let expressions = [
        "http_requests_total",
        "http_requests_total{instance=\"host-1:9100\"}[20m]",
        "node_memory_used_bytes{job=\"web\"}[7m]",
        "http_requests_total{code=\"500\"}",
        "http_requests_total{job=~\"a.*\",code!=\"200\"}",
        "rate(http_requests_total[5m])",
        "sum by (job) (rate(http_requests_total[5m]))",
        "sum(increase(http_requests_total{job=\"web\"}[30m]))",
        "resets(http_requests_total[1h])",
        "node_memory_used_bytes",
        "avg_over_time(node_memory_used_bytes[10m])",
        "max by (job) (node_memory_used_bytes) / 1e6",
        "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
        "histogram_quantile(0.5, rate(request_duration_seconds_bucket{job=\"api\"}[10m]))",
        "room_temperature_celsius",
        "max_over_time(room_temperature_celsius{room=\"office\"}[15m])",
        "count by (__name__) ({__name__=~\".+\"})",
        "topk(3, node_memory_used_bytes)",
        "deriv(node_memory_used_bytes[15m])",
        "absent(nonexistent_metric)",
    ];
    let instants = [
        T0 + 10 * 60_000,
        T0 + HOUR + 7_000,
        T0 + 2 * HOUR + 30_000,
        T0 + 3 * HOUR + 59 * 60_000,
    ];
    let mut compared = 0;
    let mut failures = Vec::new();
    for expression in expressions {
        for at in instants {
            let params = [
                ("query", expression.to_owned()),
                ("time", format!("{:.3}", at as f64 / 1000.0)),
            ];
            let a = get(&client, &ours, "/api/v1/query", &params).await?;
            let b = get(&client, &theirs, "/api/v1/query", &params).await?;
            if let Err(why) = compare(&a, &b) {
                failures.push(format!("{expression} @ {at}: {why}"));
            }
            compared += 1;
        }
        if expression.ends_with(']') {
            // A range vector is an instant query's answer only.
            continue;
        }
        for (start, end, step) in [
            (T0, T0 + 4 * HOUR, "300"),
            (T0 + 90 * 60_000, T0 + 150 * 60_000, "45"),
        ] {
            let params = [
                ("query", expression.to_owned()),
                ("start", (start / 1000).to_string()),
                ("end", (end / 1000).to_string()),
                ("step", step.to_owned()),
            ];
            let a = get(&client, &ours, "/api/v1/query_range", &params).await?;
            let b = get(&client, &theirs, "/api/v1/query_range", &params).await?;
            if let Err(why) = compare(&a, &b) {
                failures.push(format!("{expression} [{start}, {end}] step {step}: {why}"));
            }
            compared += 1;
        }
    }
    assert!(compared >= 100, "{compared} queries compared");
    eprintln!("{compared} queries answered identically by the store gateway and Prometheus");
    assert!(
        failures.is_empty(),
        "{} of {compared} queries differ:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Labels and label values through the querier's API match Prometheus's as well.
    let window = [
        ("start", (T0 / 1000).to_string()),
        ("end", ((T0 + 4 * HOUR) / 1000).to_string()),
    ];
    let a = get(&client, &ours, "/api/v1/labels", &window).await?;
    let b = get(&client, &theirs, "/api/v1/labels", &window).await?;
    assert_eq!(a["data"], b["data"], "labels");
    let a = get(&client, &ours, "/api/v1/label/instance/values", &window).await?;
    let b = get(&client, &theirs, "/api/v1/label/instance/values", &window).await?;
    assert_eq!(a["data"], b["data"], "instance values");
    Ok(())
}
