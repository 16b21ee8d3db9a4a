//! Hot reload: a new version of a plugin is swapped in atomically while calls keep running —
//! no call fails during the swap, in-flight calls finish on the old version — and a broken
//! new version is refused while the old one keeps serving. Also the watched-folder path.

#[path = "plugin_common.rs"]
mod plugin_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gauntlet::plugin::{PluginDirectory, PluginSlot, PluginStore};
use gauntlet::query::store::Store;
use gauntlet_proto::thanos::{SeriesRequest, series_response};
use plugin_common::Fixture;

/// The `version` external label of the single series, or the error.
async fn served_version(store: &PluginStore) -> Result<String, String> {
    let mut stream = store
        .series(SeriesRequest {
            min_time: 0,
            max_time: 10_000,
            ..SeriesRequest::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut version = None;
    while let Some(frame) = stream.next().await {
        if let Some(series_response::Result::Series(s)) = frame.map_err(|e| e.to_string())?.result {
            version = s
                .labels
                .iter()
                .find(|l| l.name == "version")
                .map(|l| l.value.clone());
        }
    }
    version.ok_or_else(|| "no series".to_owned())
}

fn manifest_for(fx: &Fixture, name: &str, version: u32) -> std::path::PathBuf {
    fx.manifest(
        name,
        "file-store",
        &format!("[capabilities]\nbucket_prefix = \"data\"\n[config]\nexternal_labels = \"version={version}\"\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_versions_under_a_call_loop_fails_no_call() {
    let fx = Fixture::new();
    fx.put("data/up.csv", "timestamp,value\n1000,1\n").await;
    let manifest = manifest_for(&fx, "reload-loop", 1);
    let slot = PluginSlot::load_async(&fx.host, &manifest)
        .await
        .expect("load");
    let store = slot.store();
    assert_eq!(served_version(&store).await.as_deref(), Ok("1"));

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let mut loops = Vec::new();
    for _ in 0..3 {
        let (store, stop, failures, calls, seen) = (
            store.clone(),
            stop.clone(),
            failures.clone(),
            calls.clone(),
            seen.clone(),
        );
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match served_version(&store).await {
                    Ok(v) => {
                        seen.lock().expect("lock").insert(v);
                    }
                    Err(e) => {
                        eprintln!("call failed: {e}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for version in 2..=6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        manifest_for(&fx, "reload-loop", version);
        let reload_slot = slot.clone();
        let reloaded = tokio::task::spawn_blocking(move || reload_slot.reload_if_changed())
            .await
            .expect("join")
            .expect("reload");
        assert!(reloaded);
        // Unchanged files: nothing to do.
        let again = {
            let slot = slot.clone();
            tokio::task::spawn_blocking(move || slot.reload_if_changed())
                .await
                .expect("join")
        };
        assert_eq!(again.ok(), Some(false));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.expect("loop");
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "calls failed during reloads"
    );
    assert!(
        calls.load(Ordering::Relaxed) > 20,
        "too few calls: {}",
        calls.load(Ordering::Relaxed)
    );
    assert_eq!(served_version(&store).await.as_deref(), Ok("6"));
    assert!(
        seen.lock().expect("lock").len() >= 3,
        "{:?}",
        seen.lock().expect("lock")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_streams_finish_on_the_old_version() {
    let fx = Fixture::new();
    let mut csv = String::from("timestamp,value,i\n");
    for i in 0..2000 {
        csv.push_str(&format!("1000,1,{i:05}\n"));
    }
    fx.put("data/many.csv", &csv).await;
    let manifest = fx.manifest(
        "reload-inflight",
        "file-store",
        "[capabilities]\nbucket_prefix = \"data\"\n[config]\nexternal_labels = \"version=1\"\nbatch_series = 100\n",
    );
    let slot = PluginSlot::load_async(&fx.host, &manifest)
        .await
        .expect("load");
    let store = slot.store();
    let mut stream = store
        .series(SeriesRequest {
            min_time: 0,
            max_time: 10_000,
            ..SeriesRequest::default()
        })
        .await
        .expect("series");
    let first = stream.next().await.expect("frame").expect("ok");
    fx.manifest(
        "reload-inflight",
        "file-store",
        "[capabilities]\nbucket_prefix = \"data\"\n[config]\nexternal_labels = \"version=2\"\nbatch_series = 100\n",
    );
    let reload_slot = slot.clone();
    tokio::task::spawn_blocking(move || reload_slot.reload())
        .await
        .expect("join")
        .expect("reload");
    let mut versions = std::collections::BTreeSet::new();
    let mut count = 0;
    for frame in std::iter::once(Ok(first)).chain(stream.collect::<Vec<_>>().await) {
        if let Some(series_response::Result::Series(s)) = frame.expect("frame").result {
            count += 1;
            versions.extend(
                s.labels
                    .iter()
                    .filter(|l| l.name == "version")
                    .map(|l| l.value.clone()),
            );
        }
    }
    assert_eq!(count, 2000);
    assert_eq!(
        versions.into_iter().collect::<Vec<_>>(),
        vec!["1".to_owned()]
    );
    // New calls see the new version.
    assert_eq!(served_version(&store).await.as_deref(), Ok("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_new_version_is_refused_and_the_old_one_keeps_serving() {
    let fx = Fixture::new();
    fx.put("data/up.csv", "timestamp,value\n1000,1\n").await;
    let manifest = manifest_for(&fx, "reload-broken", 1);
    let slot = PluginSlot::load_async(&fx.host, &manifest)
        .await
        .expect("load");
    let store = slot.store();
    let text = std::fs::read_to_string(&manifest).expect("read");
    std::fs::write(
        &manifest,
        text.replace("version=1", "version=2")
            .replace("sha256 = \"", "sha256 = \"0"),
    )
    .expect("write");
    let reload_slot = slot.clone();
    let err = tokio::task::spawn_blocking(move || reload_slot.reload_if_changed())
        .await
        .expect("join")
        .expect_err("refused");
    assert!(err.to_string().contains("sha256"), "{err}");
    assert_eq!(served_version(&store).await.as_deref(), Ok("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_folder_picks_up_changes() {
    let fx = Fixture::new();
    fx.put("data/up.csv", "timestamp,value\n1000,1\n").await;
    manifest_for(&fx, "watched", 1);
    let host = fx.host.clone();
    let dir = fx.plugins_dir();
    let (directory, report) =
        tokio::task::spawn_blocking(move || PluginDirectory::open(&host, &dir))
            .await
            .expect("join");
    assert_eq!(report.loaded.len(), 1, "{report:?}");
    directory.watch(Duration::from_millis(100)).expect("watch");
    let store = directory.stores().pop().expect("a store");
    assert_eq!(served_version(&store).await.as_deref(), Ok("1"));
    manifest_for(&fx, "watched", 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match served_version(&store).await.as_deref() {
            Ok("2") => break,
            Ok("1") => {}
            other => panic!("unexpected answer during reload: {other:?}"),
        }
        assert!(Instant::now() < deadline, "the change was not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
