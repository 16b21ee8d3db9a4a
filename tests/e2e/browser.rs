//! The web UI of `gauntlet demo` in headless Chromium (Debian's, driven by playwright-core):
//! query, table, the deduplication toggle, graphs of the Prometheus data and of the warehouse
//! files served by the file-store plugin, an error, and the Stores page with all four stores.
//! Every expectation comes from the demo's own API. Screenshots are kept in
//! `tests/artifacts/browser/demo/`.

#[path = "plugin_common.rs"]
mod plugin_common;

use std::time::Duration;

use gauntlet_e2e::{
    Process, api_stores, browser_artifacts, demo_args, drive_ui, free_loopback_address,
    gauntlet_binary, get_json, scratch_dir, sorted_strings, ui_labels, ui_stores, wait_until_ok,
};
use serde_json::{Value, json};

const GRAPH_CLUSTERS: &str = "sum by (cluster) (rate(http_requests_total[5m]))";
const GRAPH_WAREHOUSE: &str = gauntlet::demo::files::EXAMPLE_QUERY;

async fn api(base: &str, path: &str, params: &[(&str, &str)]) -> anyhow::Result<Value> {
    let params: Vec<(&str, String)> = params.iter().map(|&(k, v)| (k, v.to_owned())).collect();
    let body = get_json(base, path, &params).await?;
    anyhow::ensure!(body["status"] == "success", "{path} {params:?}: {body}");
    Ok(body)
}

/// The label sets of an instant query's result, as the UI shows them.
async fn result_labels(base: &str, query: &str, dedup: bool) -> anyhow::Result<Vec<String>> {
    let body = api(
        base,
        "/api/v1/query",
        &[
            ("query", query),
            ("dedup", if dedup { "true" } else { "false" }),
        ],
    )
    .await?;
    let mut out: Vec<String> = body["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| ui_labels(&s["metric"]))
        .collect();
    out.sort();
    Ok(out)
}

#[tokio::test]
async fn the_ui_queries_toggles_dedup_graphs_and_lists_stores() -> anyhow::Result<()> {
    // The demo finds the file-store component where scripts/build-plugins leaves it.
    plugin_common::components();
    let (http, grpc) = (free_loopback_address()?, free_loopback_address()?);
    let data_dir = scratch_dir("browser-demo")?;
    let demo = Process::spawn(
        "demo",
        &gauntlet_binary()?,
        &demo_args(http, grpc, Some(&data_dir)),
    )?;
    wait_until_ok(&format!("http://{http}/-/ready"), Duration::from_secs(60)).await?;
    let base = format!("http://{http}");
    assert!(
        !demo.output().contains("starting without"),
        "the demo started without a store: {}",
        demo.output()
    );

    let seen = drive_ui(
        &base,
        "demo",
        &json!({ "query": "up", "graphQueries": [GRAPH_CLUSTERS, GRAPH_WAREHOUSE] }),
    )?;

    // The table shows what the API answers, with and without deduplication.
    let deduped = result_labels(&base, "up", true).await?;
    let raw = result_labels(&base, "up", false).await?;
    assert!(raw.len() > deduped.len(), "{raw:?} vs {deduped:?}");
    assert_eq!(sorted_strings(&seen["dedupSeries"]), deduped, "{seen}");
    assert_eq!(sorted_strings(&seen["rawSeries"]), raw, "{seen}");
    assert_eq!(seen["dedupRows"], deduped.len(), "{seen}");
    assert_eq!(seen["rawRows"], raw.len(), "{seen}");
    assert!(
        deduped.iter().all(|s| !s.contains("replica=")),
        "{deduped:?}"
    );
    assert!(
        raw.iter().any(|s| s.contains("replica=\"1\"")),
        "unticking deduplication shows both us1 replicas: {raw:?}"
    );
    assert!(
        seen["statsText"]
            .as_str()
            .is_some_and(|s| s.contains(&format!("Result series: {}", deduped.len()))),
        "{seen}"
    );

    // Graphs: one line per cluster, then one per region of the warehouse's orders.
    for (i, query) in [GRAPH_CLUSTERS, GRAPH_WAREHOUSE].iter().enumerate() {
        let expected = result_labels(&base, query, true).await?;
        assert!(!expected.is_empty(), "{query}: empty");
        assert_eq!(
            sorted_strings(&seen["legends"][i]),
            expected,
            "{query}: {seen}"
        );
    }
    let legend = seen["legends"].to_string();
    for needle in [
        "cluster=\\\"eu1\\\"",
        "cluster=\\\"us1\\\"",
        "region=\\\"eu-west\\\"",
    ] {
        assert!(legend.contains(needle), "{needle} not in {legend}");
    }
    assert!(
        seen["errorText"]
            .as_str()
            .is_some_and(|e| e.contains("bad_data")),
        "{seen}"
    );

    // The Stores page lists every store the API knows, with its label sets and state.
    let stores = api_stores(&api(&base, "/api/v1/stores", &[]).await?);
    assert_eq!(ui_stores(&seen), stores, "{seen}");
    assert_eq!(seen["storeRows"], stores.len());
    let names: Vec<&str> = stores.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "file-store-warehouse",
            "prometheus-eu1-0",
            "prometheus-us1-0",
            "prometheus-us1-1"
        ]
    );
    assert_eq!(
        stores[0].1,
        ["{environment=\"production\", source=\"warehouse\"}"]
    );
    let rows = seen["stores"].as_array().cloned().unwrap_or_default();
    assert!(
        rows.iter()
            .all(|r| r["text"].as_str().is_some_and(|t| t.contains("UP"))),
        "{rows:?}"
    );
    assert_eq!(
        seen["failures"],
        json!([]),
        "page errors or failed requests"
    );
    let artifacts = browser_artifacts("demo");
    for shot in [
        "1-table-dedup.png",
        "2-table-no-dedup.png",
        "3-graph-1.png",
        "3-graph-2.png",
        "4-stores.png",
    ] {
        assert!(artifacts.join(shot).is_file(), "missing screenshot {shot}");
    }
    Ok(())
}
