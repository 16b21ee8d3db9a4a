//! The web UI in headless Chromium (Debian's, driven by playwright-core): query, table, the
//! deduplication toggle, the graph, an error, and the Stores page. Screenshots are kept in
//! `tests/artifacts/browser/`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use gauntlet_e2e::{Process, free_loopback_address, gauntlet_binary, wait_until_ok};
use serde_json::Value;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Installs playwright-core from the lock file when it is missing.
fn ensure_playwright() -> anyhow::Result<()> {
    let dir = browser_dir();
    if dir.join("node_modules/playwright-core").is_dir() {
        return Ok(());
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()?;
    anyhow::ensure!(status.success(), "npm ci in {} failed", dir.display());
    Ok(())
}

#[tokio::test]
async fn the_ui_queries_toggles_dedup_graphs_and_lists_stores() -> anyhow::Result<()> {
    ensure_playwright()?;
    let (http, grpc) = (free_loopback_address()?, free_loopback_address()?);
    let _demo = Process::spawn(
        "demo",
        &gauntlet_binary()?,
        &[
            "demo".into(),
            "--http-address".into(),
            http.to_string(),
            "--grpc-address".into(),
            grpc.to_string(),
        ],
    )?;
    wait_until_ok(&format!("http://{http}/-/ready"), Duration::from_secs(30)).await?;

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("artifacts")
        .join("browser");
    let output = Command::new("node")
        .arg(browser_dir().join("ui.mjs"))
        .arg(format!("http://{http}"))
        .arg(&artifacts)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "browser run failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or_default())?;

    assert_eq!(seen["dedupRows"], 12, "{seen}");
    assert_eq!(
        seen["rawRows"], 18,
        "unticking deduplication shows both us1 replicas: {seen}"
    );
    assert_eq!(seen["rawHasReplica"], true);
    assert!(
        seen["statsText"]
            .as_str()
            .is_some_and(|s| s.contains("Result series: 12")),
        "{seen}"
    );
    let legend = seen["legend"].to_string();
    assert!(
        legend.contains("cluster=\\\"eu1\\\"") && legend.contains("cluster=\\\"us1\\\""),
        "{legend}"
    );
    assert!(
        seen["errorText"]
            .as_str()
            .is_some_and(|e| e.contains("bad_data")),
        "{seen}"
    );
    assert_eq!(seen["storeRows"], 3, "{seen}");
    let stores = seen["storesText"].as_str().unwrap_or_default();
    for needle in [
        "prometheus-eu1-0",
        "prometheus-us1-1",
        "cluster=\"us1\"",
        "replica=\"1\"",
        "UP",
    ] {
        assert!(
            stores.contains(needle),
            "Stores page lacks {needle}: {stores}"
        );
    }
    assert_eq!(
        seen["failures"],
        serde_json::json!([]),
        "page errors or failed requests"
    );
    for shot in [
        "1-table-dedup.png",
        "2-table-no-dedup.png",
        "3-graph.png",
        "4-stores.png",
    ] {
        assert!(artifacts.join(shot).is_file(), "missing screenshot {shot}");
    }
    Ok(())
}
