//! `gauntlet store --plugin MANIFEST`: a store plugin served over the StoreAPI by its own
//! process, queried by a separate `gauntlet query`, with the plugin's metrics on /metrics.

#[path = "plugin_common.rs"]
mod plugin_common;

use std::time::Duration;

use gauntlet_e2e::{Process, free_loopback_address, gauntlet_binary, wait_until_ok};
use serde_json::Value;

const CSV: &str = "timestamp,value,instance,job\n\
1000,1,a:9100,node\n\
2000,2,a:9100,node\n\
3000,3,a:9100,node\n\
1000,10,b:9100,node\n\
2000,20,b:9100,node\n";

async fn get_json(url: &str, params: &[(&str, &str)]) -> anyhow::Result<Value> {
    let response = reqwest::Client::new().get(url).query(params).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    Ok(response.json().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_store_process_serves_a_querier() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(data_dir.join("bucket/metrics"))?;
    std::fs::write(data_dir.join("bucket/metrics/node_load1.csv"), CSV)?;
    let manifest = plugin_common::write_manifest(
        dir.path(),
        "csv-store",
        &plugin_common::component("file-store"),
        "[capabilities]\nbucket_prefix = \"metrics\"\n[config]\nexternal_labels = \"site=lab\"\n",
    );

    let binary = gauntlet_binary()?;
    let (store_http, store_grpc) = (free_loopback_address()?, free_loopback_address()?);
    let _store = Process::spawn(
        "plugin-store",
        &binary,
        &[
            "store".into(),
            "--plugin".into(),
            manifest.display().to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--http-address".into(),
            store_http.to_string(),
            "--grpc-address".into(),
            store_grpc.to_string(),
        ],
    )?;
    wait_until_ok(
        &format!("http://{store_http}/-/ready"),
        Duration::from_secs(60),
    )
    .await?;
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
        &format!("http://{query_http}/-/ready"),
        Duration::from_secs(30),
    )
    .await?;

    let body = get_json(
        &format!("http://{query_http}/api/v1/query"),
        &[("query", "sum by (site) (node_load1)"), ("time", "2")],
    )
    .await?;
    assert_eq!(body["status"], "success", "{body}");
    let result = &body["data"]["result"];
    assert_eq!(result.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(result[0]["metric"]["site"], "lab", "{body}");
    assert_eq!(result[0]["value"][1], "22", "{body}");

    let stores = get_json(&format!("http://{query_http}/api/v1/stores"), &[]).await?;
    let text = stores.to_string();
    assert!(text.contains(&store_grpc.to_string()), "{text}");
    assert!(text.contains("\"site\""), "{text}");

    let metrics = reqwest::get(format!("http://{store_http}/metrics"))
        .await?
        .text()
        .await?;
    let calls = metrics
        .lines()
        .filter(|l| l.starts_with("gauntlet_plugin_calls_total{") && l.contains("csv-store"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>();
    assert!(calls >= 1.0, "plugin calls not counted:\n{metrics}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_of_another_world_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let manifest = plugin_common::write_manifest_world(
        dir.path(),
        "ruler",
        "ruler",
        &plugin_common::component("ruler-example"),
        "",
    );
    let output = std::process::Command::new(gauntlet_binary()?)
        .args(["store", "--plugin"])
        .arg(&manifest)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--http-address",
            "127.0.0.1:0",
            "--grpc-address",
            "127.0.0.1:0",
        ])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("serves store-backend plugins"),
        "unexpected error: {stderr}"
    );
    Ok(())
}
