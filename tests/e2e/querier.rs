//! The querier as users run it: `gauntlet demo` and `gauntlet query` processes on loopback,
//! a querier stacked on another over the StoreAPI, and promtool as a real client; the demo
//! without its file-store plugin.

#[path = "plugin_common.rs"]
mod plugin_common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gauntlet_e2e::{
    Process, demo_args, free_loopback_address, gauntlet_binary, get_json, scratch_dir,
    wait_until_ok,
};
use serde_json::Value;

/// A running `gauntlet demo` and a `gauntlet query` stacked on its StoreAPI.
struct Stack {
    demo_http: String,
    stacked_http: String,
    _demo: Process,
    _stacked: Process,
}

async fn start_stack() -> anyhow::Result<Stack> {
    // The demo's warehouse store is the file-store plugin, found where this build leaves it.
    plugin_common::components();
    let binary = gauntlet_binary()?;
    let (demo_http, demo_grpc) = (free_loopback_address()?, free_loopback_address()?);
    let demo = Process::spawn("demo", &binary, &demo_args(demo_http, demo_grpc, None))?;
    wait_until_ok(
        &format!("http://{demo_http}/-/ready"),
        Duration::from_secs(30),
    )
    .await?;
    let (stacked_http, stacked_grpc) = (free_loopback_address()?, free_loopback_address()?);
    let stacked = Process::spawn(
        "stacked-querier",
        &binary,
        &[
            "query".into(),
            "--http-address".into(),
            stacked_http.to_string(),
            "--grpc-address".into(),
            stacked_grpc.to_string(),
            "--endpoint".into(),
            demo_grpc.to_string(),
            "--query.replica-label".into(),
            "replica".into(),
        ],
    )?;
    wait_until_ok(
        &format!("http://{stacked_http}/-/ready"),
        Duration::from_secs(30),
    )
    .await?;
    Ok(Stack {
        demo_http: format!("http://{demo_http}"),
        stacked_http: format!("http://{stacked_http}"),
        _demo: demo,
        _stacked: stacked,
    })
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[tokio::test]
async fn a_querier_stacked_on_another_returns_the_same_answers() -> anyhow::Result<()> {
    let stack = start_stack().await?;
    let at = (now_seconds() - 1800).to_string();
    let (start, end) = (
        (now_seconds() - 3 * 3600).to_string(),
        (now_seconds() - 600).to_string(),
    );
    for query in [
        "up",
        "sum by (cluster) (rate(http_requests_total[5m]))",
        "histogram_quantile(0.9, sum by (le, cluster) (rate(http_request_duration_seconds_bucket[5m])))",
        "topk(3, node_memory_MemAvailable_bytes)",
        "count_over_time(up[1h])",
        gauntlet::demo::files::EXAMPLE_QUERY,
        "sum by (provider) (increase(shop_payments_total{status=\"failed\"}[30m]))",
        "time() - batch_job_last_success_timestamp_seconds",
    ] {
        for dedup in ["true", "false"] {
            let instant = [
                ("query", query.to_owned()),
                ("time", at.clone()),
                ("dedup", dedup.into()),
            ];
            let direct = get_json(&stack.demo_http, "/api/v1/query", &instant).await?;
            let stacked = get_json(&stack.stacked_http, "/api/v1/query", &instant).await?;
            assert_eq!(direct["data"], stacked["data"], "{query} dedup={dedup}");
            assert!(
                !direct["data"]["result"]
                    .as_array()
                    .is_none_or(Vec::is_empty),
                "{query}: empty result"
            );
            let range = [
                ("query", query.to_owned()),
                ("start", start.clone()),
                ("end", end.clone()),
                ("step", "60".to_owned()),
                ("dedup", dedup.into()),
            ];
            let direct = get_json(&stack.demo_http, "/api/v1/query_range", &range).await?;
            let stacked = get_json(&stack.stacked_http, "/api/v1/query_range", &range).await?;
            assert_eq!(
                direct["data"], stacked["data"],
                "range {query} dedup={dedup}"
            );
        }
    }
    let count = |body: &Value| {
        body["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_owned)
    };
    let deduped = get_json(
        &stack.stacked_http,
        "/api/v1/query",
        &[("query", "count(up)".into()), ("time", at.clone())],
    )
    .await?;
    let all = get_json(
        &stack.stacked_http,
        "/api/v1/query",
        &[
            ("query", "count(up)".into()),
            ("time", at.clone()),
            ("dedup", "false".into()),
        ],
    )
    .await?;
    assert_eq!(
        count(&deduped).as_deref(),
        Some("12"),
        "6 targets in each of 2 clusters"
    );
    assert_eq!(count(&all).as_deref(), Some("18"), "us1's targets twice");

    let stores = get_json(&stack.stacked_http, "/api/v1/stores", &[]).await?;
    let queriers = stores["data"]["query"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(queriers.len(), 1, "{stores}");
    assert_eq!(queriers[0]["lastError"], Value::Null);
    let sets = queriers[0]["labelSets"].to_string();
    for cluster in ["eu1", "us1"] {
        assert!(
            sets.contains(&format!("\"cluster\":\"{cluster}\"")),
            "{sets}"
        );
    }
    Ok(())
}

fn promtool(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("promtool")
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("promtool: {e} (install Debian's prometheus)"))?;
    anyhow::ensure!(
        output.status.success(),
        "promtool {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn promtool_is_a_working_client() -> anyhow::Result<()> {
    let stack = start_stack().await?;
    let server = stack.stacked_http.as_str();
    let instant = promtool(&["query", "instant", server, "count by (cluster) (up)"])?;
    assert!(instant.contains("{cluster=\"eu1\"} => 6 @["), "{instant}");
    assert!(instant.contains("{cluster=\"us1\"} => 6 @["), "{instant}");
    let end = now_seconds() - 60;
    let (start, end) = ((end - 600).to_string(), end.to_string());
    let range = promtool(&[
        "query", "range", "--start", &start, "--end", &end, "--step", "5m", server, "sum(up)",
    ])?;
    assert_eq!(range.matches(" @[").count(), 3, "{range}");
    let series = promtool(&[
        "query",
        "series",
        "--match",
        "up{cluster=\"us1\",job=\"api\"}",
        server,
    ])?;
    assert_eq!(series.lines().count(), 3, "{series}");
    assert!(
        !series.contains("replica"),
        "deduplicated series have no replica label: {series}"
    );
    let labels = promtool(&["query", "labels", server, "job"])?;
    assert_eq!(labels.lines().collect::<Vec<_>>(), ["api", "node"]);
    Ok(())
}

#[tokio::test]
async fn the_demo_starts_without_its_plugin_and_says_how_to_build_it() -> anyhow::Result<()> {
    // A binary outside the source tree, with an empty plugin folder: no file-store.wasm.
    let dir = scratch_dir("demo-no-plugin")?;
    let binary = dir.join("gauntlet");
    if std::fs::hard_link(gauntlet_binary()?, &binary).is_err() {
        std::fs::copy(gauntlet_binary()?, &binary)?;
    }
    let empty = dir.join("no-plugins");
    std::fs::create_dir_all(&empty)?;
    let (http, grpc) = (free_loopback_address()?, free_loopback_address()?);
    let demo = Process::spawn_with_env(
        "demo-no-plugin",
        &binary,
        &demo_args(http, grpc, Some(&dir.join("data"))),
        &[("GAUNTLET_PLUGIN_DIR", empty.as_os_str())],
    )?;
    wait_until_ok(&format!("http://{http}/-/ready"), Duration::from_secs(60)).await?;
    let base = format!("http://{http}");
    let output = demo.output();
    assert!(
        output.contains("warning: starting without the warehouse's file store")
            && output.contains("file-store.wasm")
            && output.contains("bash scripts/build-plugins"),
        "{output}"
    );
    let stores = get_json(&base, "/api/v1/stores", &[]).await?;
    let mut names: Vec<String> = stores["data"]
        .as_object()
        .into_iter()
        .flat_map(|t| t.values())
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["prometheus-eu1-0", "prometheus-us1-0", "prometheus-us1-1"]
    );
    // The block stores answer; the warehouse's files were written, only their store is
    // missing.
    let body = get_json(&base, "/api/v1/query", &[("query", "up".into())]).await?;
    assert!(
        body["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    let written: Vec<PathBuf> = std::fs::read_dir(dir.join("data"))?
        .filter_map(Result::ok)
        .map(|generation| {
            generation
                .path()
                .join("bucket/warehouse/shop_orders_total.csv")
        })
        .filter(|csv| csv.is_file())
        .collect();
    assert_eq!(written.len(), 1, "{output}");
    let warehouse = get_json(
        &base,
        "/api/v1/query",
        &[("query", gauntlet::demo::files::EXAMPLE_QUERY.into())],
    )
    .await?;
    assert_eq!(warehouse["data"]["result"], Value::Array(Vec::new()));
    Ok(())
}

#[tokio::test]
async fn sigterm_stops_the_querier_gracefully() -> anyhow::Result<()> {
    let binary = gauntlet_binary()?;
    let (http, grpc) = (free_loopback_address()?, free_loopback_address()?);
    let unreachable = free_loopback_address()?.to_string();
    let mut querier = Process::spawn(
        "querier",
        &binary,
        &[
            "query".into(),
            "--http-address".into(),
            http.to_string(),
            "--grpc-address".into(),
            grpc.to_string(),
            "--endpoint".into(),
            unreachable.clone(),
        ],
    )?;
    // An unreachable endpoint at start is not fatal.
    wait_until_ok(&format!("http://{http}/-/ready"), Duration::from_secs(30)).await?;
    let stores = get_json(&format!("http://{http}"), "/api/v1/stores", &[]).await?;
    let unknown = stores["data"]["unknown"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(unknown.len(), 1, "{stores}");
    assert_eq!(unknown[0]["name"], Value::String(unreachable));
    assert!(
        unknown[0]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("unavailable")),
        "{stores}"
    );
    assert_eq!(
        querier.terminate(Duration::from_secs(10))?,
        Some(0),
        "{}",
        querier.output()
    );
    Ok(())
}

#[tokio::test]
async fn pyarrow_reads_the_arrow_format() -> anyhow::Result<()> {
    let stack = start_stack().await?;
    let end = now_seconds() - 600;
    let url = format!(
        "{}/api/v1/query_range?query=sum+by+(cluster)+(rate(http_requests_total%5B5m%5D))&start={}&end={end}&step=60&format=arrow",
        stack.stacked_http,
        end - 3600
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("e2e")
        .join("arrow_read.py");
    let output = Command::new("python3").arg(script).arg(&url).output()?;
    assert!(
        output.status.success(),
        "pyarrow failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(
        summary["content_type"],
        "application/vnd.apache.arrow.stream"
    );
    assert_eq!(summary["result_type"], "matrix");
    assert_eq!(
        summary["columns"],
        serde_json::json!(["cluster", "timestamp", "value"])
    );
    assert_eq!(
        summary["types"],
        serde_json::json!([
            "dictionary<values=string, indices=int32, ordered=0>",
            "timestamp[ms, tz=UTC]",
            "double"
        ])
    );
    assert_eq!(summary["rows"], 2 * 61, "two clusters, 61 steps");
    assert_eq!(summary["clusters"], serde_json::json!(["eu1", "us1"]));
    assert!(summary["value_sum"].as_f64().is_some_and(|sum| sum > 0.0));
    Ok(())
}
