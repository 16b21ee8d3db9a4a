//! `gauntlet plugin new | inspect | validate` as library functions: a generated store plugin
//! builds for wasm32-wasip2, validates once its sha256 is written, and serves its series.

#[path = "plugin_common.rs"]
mod plugin_common;

use futures::StreamExt;
use gauntlet::plugin::tool::{ToolError, inspect, new_plugin, validate};
use gauntlet::plugin::{PluginError, PluginSlot, World};
use gauntlet::query::store::Store;
use gauntlet_proto::thanos::{SeriesRequest, series_response};
use plugin_common::{Fixture, component, workspace};

fn cache() -> std::path::PathBuf {
    workspace().join("target/plugin-cache")
}

#[test]
fn inspect_describes_a_component_and_its_manifest() {
    let wasm = component("file-store");
    let inspection = inspect(&wasm, Some(&cache())).expect("inspect");
    assert_eq!(inspection.worlds, vec![World::StoreBackend]);
    assert!(
        inspection
            .imports
            .iter()
            .any(|i| i == "gauntlet:plugin/bucket@0.1.1"),
        "{:?}",
        inspection.imports
    );
    assert!(
        inspection
            .exports
            .iter()
            .any(|e| e == "gauntlet:plugin/store@0.1.1")
    );
    assert!(
        inspection
            .exports
            .iter()
            .any(|e| e == "gauntlet:plugin/packed-series@0.1.1")
    );
    assert_eq!(inspection.sha256.len(), 64);
    let text = inspection.to_string();
    assert!(text.contains("fits worlds:     store-backend"), "{text}");

    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = plugin_common::write_manifest(dir.path(), "inspected", &wasm, "");
    let inspection = inspect(&manifest, Some(&cache())).expect("inspect manifest");
    assert_eq!(inspection.sha256_matches, Some(true));
    assert!(inspection.to_string().contains("(matches the manifest)"));
}

#[test]
fn validate_reports_a_sha256_mismatch_and_can_fix_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = component("hostile");
    let manifest = plugin_common::write_manifest(dir.path(), "to-fix", &wasm, "");
    let text = std::fs::read_to_string(&manifest).expect("read");
    let line = text
        .lines()
        .find(|l| l.starts_with("sha256"))
        .expect("line")
        .to_owned();
    std::fs::write(
        &manifest,
        text.replace(&line, &format!("sha256 = \"{}\"", "a".repeat(64))),
    )
    .expect("write");
    let err = validate(&manifest, false, Some(&cache())).expect_err("mismatch");
    assert!(
        matches!(err, ToolError::Plugin(PluginError::Sha256Mismatch { .. })),
        "{err}"
    );
    let fixed = validate(&manifest, true, Some(&cache())).expect("validate --update-sha256");
    assert!(fixed.sha256_updated);
    assert!(fixed.to_string().contains("ok: manifest valid"), "{fixed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_store_plugin_builds_validates_and_serves() {
    let parent = tempfile::tempdir().expect("tempdir");
    let created = new_plugin(
        parent.path(),
        "tool-store",
        World::StoreBackend,
        &workspace().join("sdk"),
    )
    .expect("new plugin");
    std::fs::copy(
        workspace().join("plugins/Cargo.lock"),
        created.dir.join("Cargo.lock"),
    )
    .expect("lock");
    let target = workspace().join("plugins/target");
    let status = std::process::Command::new("cargo")
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&created.dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("cargo");
    assert!(status.success(), "building the generated plugin failed");
    let built = target.join("wasm32-wasip2/release/tool_store.wasm");
    let expected = created
        .dir
        .join("target/wasm32-wasip2/release/tool_store.wasm");
    std::fs::create_dir_all(expected.parent().expect("parent")).expect("mkdir");
    std::fs::copy(&built, &expected).expect("copy component");

    let manifest = created.dir.join("plugin.toml");
    let validated = tokio::task::spawn_blocking({
        let manifest = manifest.clone();
        move || validate(&manifest, true, Some(&cache()))
    })
    .await
    .expect("join")
    .expect("validate");
    assert!(validated.sha256_updated);

    let fx = Fixture::new();
    let store = PluginSlot::load_async(&fx.host, &manifest)
        .await
        .expect("load")
        .store();
    let mut stream = store
        .series(SeriesRequest {
            min_time: 0,
            max_time: 60_000,
            ..SeriesRequest::default()
        })
        .await
        .expect("series");
    let mut series = Vec::new();
    while let Some(frame) = stream.next().await {
        if let Some(series_response::Result::Series(s)) = frame.expect("frame").result {
            series.push(s);
        }
    }
    assert_eq!(series.len(), 1);
    assert!(
        series[0]
            .labels
            .iter()
            .any(|l| l.name == "greeting" && l.value == "hello")
    );
}
