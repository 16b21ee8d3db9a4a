//! The sidecar's shipper against real processes on loopback: blocks written by promtool into
//! the data directory of a real Prometheus 2.42 (Debian's `prometheus`), `gauntlet sidecar
//! --tsdb.path ... --objstore.config-file ...` next to it, S3 served by moto. Every block
//! lands in the bucket with the `thanos` section (Prometheus's external labels, source
//! `sidecar`, files with their sizes), `thanos/thanos.shipper.json` lists them (the only file
//! the plugin writes: the data directory is granted read-only), a restarted sidecar uploads
//! nothing, and `gauntlet tools bucket inspect` sees the blocks. The shipper runs in the
//! sidecar plugin's `tick`; its metrics are the plugin's (`gauntlet_plugin_counter_total`).
//!
//! moto missing skips the test loudly unless `GAUNTLET_REQUIRE_TEST_SERVERS` is set.

#[path = "plugin_common.rs"]
mod plugin_common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gauntlet::objstore::{Bucket, ClientTuning};
use gauntlet_e2e::{
    Process, S3Server, free_loopback_address, gauntlet_binary, moto_server, scratch_dir,
    wait_until_ok,
};
use serde_json::Value;

const SERIES: usize = 3;
/// Hours of data: one 2h-aligned block each.
const HOURS: i64 = 6;
const BUCKET: &str = "shipped";

/// Writes blocks with promtool into `data`, for [`HOURS`] hours ending at least two hours
/// before now; returns their ULIDs, sorted.
fn make_blocks(dir: &Path, data: &Path) -> anyhow::Result<Vec<String>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let end = now / 7200 * 7200 - 7200;
    let start = end - HOURS * 3600;
    let mut openmetrics =
        String::from("# HELP temperature Room temperature.\n# TYPE temperature gauge\n");
    for room in ["a", "b", "c"].iter().take(SERIES) {
        let mut t = start;
        while t < end {
            openmetrics.push_str(&format!("temperature{{room=\"{room}\"}} {}.5 {t}\n", t % 7));
            t += 60;
        }
    }
    openmetrics.push_str("# EOF\n");
    let input = dir.join("input.om");
    std::fs::write(&input, openmetrics)?;
    let output = std::process::Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(data)
        .output()
        .map_err(|e| anyhow::anyhow!("promtool: {e} (install Debian's prometheus)"))?;
    anyhow::ensure!(
        output.status.success(),
        "promtool failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut ulids: Vec<String> = std::fs::read_dir(data)?
        .filter_map(Result::ok)
        .filter(|e| e.path().join("meta.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ulids.sort();
    anyhow::ensure!(
        ulids.len() == HOURS as usize / 2,
        "expected {} blocks from promtool, got {ulids:?}",
        HOURS / 2
    );
    Ok(ulids)
}

/// Starts Prometheus on `data` with external labels and compaction off (as Thanos asks), so
/// the blocks stay as promtool wrote them.
async fn start_prometheus(
    dir: &Path,
    data: &Path,
    external_labels: bool,
) -> anyhow::Result<(Process, SocketAddr)> {
    let address = free_loopback_address()?;
    let config = dir.join("prometheus.yml");
    let labels = if external_labels {
        "  external_labels:\n    cluster: \"eu1\"\n    replica: \"0\"\n"
    } else {
        ""
    };
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 15s\n{labels}scrape_configs: []\n"),
    )?;
    let process = Process::spawn(
        "shipper-prometheus",
        Path::new("prometheus"),
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address={address}"),
            "--storage.tsdb.retention.time=10y".to_owned(),
            "--storage.tsdb.min-block-duration=2h".to_owned(),
            "--storage.tsdb.max-block-duration=2h".to_owned(),
        ],
    )?;
    wait_until_ok(
        &format!("http://{address}/-/ready"),
        Duration::from_secs(60),
    )
    .await?;
    Ok((process, address))
}

/// Writes the objstore configuration of the S3 server's bucket.
fn s3_config(dir: &Path, s3: &S3Server) -> anyhow::Result<PathBuf> {
    let config = dir.join("s3.yml");
    std::fs::write(&config, s3.objstore_yaml())?;
    Ok(config)
}

/// A running `gauntlet sidecar` with the shipper on.
struct Sidecar {
    http: SocketAddr,
    process: Process,
}

fn start_sidecar(prometheus: SocketAddr, data: &Path, config: &Path) -> anyhow::Result<Sidecar> {
    let (http, grpc) = (free_loopback_address()?, free_loopback_address()?);
    let plugins = plugin_common::components();
    let process = Process::spawn_with_env(
        &format!("shipper-sidecar-{}", http.port()),
        &gauntlet_binary()?,
        &[
            "sidecar".to_owned(),
            format!("--prometheus.url=http://{prometheus}"),
            format!("--http-address={http}"),
            format!("--grpc-address={grpc}"),
            format!("--tsdb.path={}", data.display()),
            format!("--objstore.config-file={}", config.display()),
        ],
        &[("GAUNTLET_PLUGIN_DIR", plugins.as_os_str())],
    )?;
    Ok(Sidecar { http, process })
}

/// The shipper metric `name` the sidecar plugin reports (a counter, or the gauge
/// `shipper_last_successful_upload_time`).
fn metric(text: &str, name: &str) -> Option<f64> {
    let family = if name.ends_with("_time") {
        "gauntlet_plugin_gauge"
    } else {
        "gauntlet_plugin_counter_total"
    };
    let series = format!("{family}{{plugin=\"sidecar\",name=\"{name}\"}} ");
    let other_order = format!("{family}{{name=\"{name}\",plugin=\"sidecar\"}} ");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(&series)
                .or_else(|| l.strip_prefix(&other_order))
        })
        .and_then(|v| v.trim().parse().ok())
}

/// The shipper's state file.
fn state_file(data: &Path) -> PathBuf {
    data.join("thanos").join("thanos.shipper.json")
}

/// Waits until the sidecar's /metrics satisfies `done`; returns the text.
async fn metrics_until(
    sidecar: &Sidecar,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = match reqwest::get(format!("http://{}/metrics", sidecar.http)).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if done(&text) {
            return Ok(text);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: not reached within 120s; metrics:\n{}\nsidecar output:\n{}",
            text.lines()
                .filter(|l| l.contains("name=\"shipper_"))
                .collect::<Vec<_>>()
                .join("\n"),
            sidecar.process.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every object in the bucket: key → (size, last modified in ms), listed through signed
/// requests.
async fn objects(bucket: &Bucket) -> anyhow::Result<BTreeMap<String, (u64, i64)>> {
    Ok(bucket
        .list_recursive("")
        .await?
        .into_iter()
        .map(|o| (o.key, (o.size, o.last_modified_ms)))
        .collect())
}

#[tokio::test]
async fn the_sidecar_ships_every_block_once_with_the_thanos_section() -> anyhow::Result<()> {
    let Some(moto) = moto_server() else {
        return Ok(());
    };
    plugin_common::components();
    gauntlet_binary()?;
    let dir = scratch_dir("shipper")?;
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let ulids = make_blocks(&dir, &data)?;
    let (_prometheus, prometheus) = start_prometheus(&dir, &data, true).await?;
    let s3 = S3Server::start(&moto, BUCKET).await?;
    let config = s3_config(&dir, &s3)?;
    let bucket = Bucket::from_flags(Some(&config), None, &ClientTuning::fail_fast())?;

    // First run: every block is shipped.
    let mut sidecar = start_sidecar(prometheus, &data, &config)?;
    let started = Instant::now();
    let text = metrics_until(&sidecar, "all blocks shipped", |t| {
        metric(t, "shipper_uploads") == Some(ulids.len() as f64)
            && metric(t, "shipper_dir_syncs").is_some_and(|n| n >= 1.0)
    })
    .await?;
    eprintln!(
        "shipped {} blocks in {:.1}s after the sidecar started",
        ulids.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(metric(&text, "shipper_upload_failures"), Some(0.0));
    let last = metric(&text, "shipper_last_successful_upload_time").unwrap_or_default();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    assert!(last > now - 300.0 && last <= now + 1.0, "{last} vs {now}");

    let listed = objects(&bucket).await?;
    for ulid in &ulids {
        let meta: Value = serde_json::from_slice(&bucket.get(&format!("{ulid}/meta.json")).await?)?;
        let thanos = &meta["thanos"];
        assert_eq!(
            thanos["labels"],
            serde_json::json!({"cluster": "eu1", "replica": "0"}),
            "{meta}"
        );
        assert_eq!(thanos["source"], "sidecar", "{meta}");
        assert_eq!(thanos["downsample"]["resolution"], 0, "{meta}");
        assert_eq!(
            thanos["segment_files"],
            serde_json::json!(["000001"]),
            "{meta}"
        );
        let files = thanos["files"].as_array().cloned().unwrap_or_default();
        let mut listed_files: Vec<&str> = files
            .iter()
            .filter_map(|f| f["rel_path"].as_str())
            .collect();
        listed_files.sort_unstable();
        for expected in ["chunks/000001", "index", "meta.json"] {
            assert!(listed_files.contains(&expected), "{expected}: {meta}");
        }
        for file in &files {
            let rel = file["rel_path"].as_str().unwrap_or_default();
            if rel == "meta.json" {
                continue;
            }
            let local = std::fs::metadata(data.join(ulid).join(rel))?.len();
            assert_eq!(file["size_bytes"].as_u64(), Some(local), "{rel}: {meta}");
            let remote = listed.get(&format!("{ulid}/{rel}")).map(|(size, _)| *size);
            assert_eq!(remote, Some(local), "{ulid}/{rel} in the bucket");
        }
        // The local block is left as Prometheus wrote it.
        let local: Value =
            serde_json::from_slice(&std::fs::read(data.join(ulid).join("meta.json"))?)?;
        assert!(local.get("thanos").is_none(), "{local}");
    }

    // The plugin wrote nothing but its state file.
    let written: Vec<String> = std::fs::read_dir(data.join("thanos"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    assert_eq!(written, ["thanos.shipper.json"]);
    assert!(!data.join("thanos.shipper.json").exists());

    let state: Value = serde_json::from_slice(&std::fs::read(state_file(&data))?)?;
    assert_eq!(state["version"], 1, "{state}");
    let mut recorded: Vec<String> = state["uploaded"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|u| u.as_str().map(str::to_owned))
        .collect();
    recorded.sort();
    assert_eq!(recorded, ulids, "{state}");

    // A restart uploads nothing: the metric stays at 0 through a full sync and no object
    // in the bucket changes.
    assert_eq!(sidecar.process.terminate(Duration::from_secs(30))?, Some(0));
    let mut sidecar = start_sidecar(prometheus, &data, &config)?;
    let text = metrics_until(&sidecar, "a sync after the restart", |t| {
        metric(t, "shipper_dir_syncs").is_some_and(|n| n >= 1.0)
    })
    .await?;
    assert_eq!(metric(&text, "shipper_uploads"), Some(0.0));
    assert_eq!(metric(&text, "shipper_upload_failures"), Some(0.0));
    assert_eq!(
        objects(&bucket).await?,
        listed,
        "objects changed after the restart"
    );
    assert!(
        sidecar
            .process
            .output()
            .contains("shipping blocks to object storage"),
        "{}",
        sidecar.process.output()
    );
    sidecar.process.terminate(Duration::from_secs(30))?;

    // The bucket tools see the blocks the sidecar shipped.
    let output = std::process::Command::new(gauntlet_binary()?)
        .args(["tools", "bucket", "inspect", "--output=json"])
        .arg(format!("--objstore.config-file={}", config.display()))
        .output()?;
    let json = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{json}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<Value> = serde_json::from_str(&json)?;
    let mut inspected: Vec<&str> = rows.iter().filter_map(|r| r["ulid"].as_str()).collect();
    inspected.sort_unstable();
    assert_eq!(inspected, ulids, "{json}");
    for row in &rows {
        assert_eq!(row["source"], "sidecar", "{row}");
        assert_eq!(row["labels"]["cluster"], "eu1", "{row}");
        assert_eq!(row["labels"]["replica"], "0", "{row}");
        assert_eq!(row["series"], SERIES, "{row}");
        assert_eq!(row["level"], 1, "{row}");
    }
    Ok(())
}

#[tokio::test]
async fn without_external_labels_nothing_is_shipped() -> anyhow::Result<()> {
    let Some(moto) = moto_server() else {
        return Ok(());
    };
    plugin_common::components();
    gauntlet_binary()?;
    let dir = scratch_dir("shipper-unlabelled")?;
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    make_blocks(&dir, &data)?;
    let (_prometheus, prometheus) = start_prometheus(&dir, &data, false).await?;
    let s3 = S3Server::start(&moto, BUCKET).await?;
    let config = s3_config(&dir, &s3)?;
    let bucket = Bucket::from_flags(Some(&config), None, &ClientTuning::fail_fast())?;
    let sidecar = start_sidecar(prometheus, &data, &config)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sidecar.process.output().contains("no external labels") {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            sidecar.process.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let output = sidecar.process.output();
    assert!(output.contains("global.external_labels"), "{output}");
    // Still serving, nothing shipped, nothing recorded.
    wait_until_ok(
        &format!("http://{}/-/ready", sidecar.http),
        Duration::from_secs(30),
    )
    .await?;
    let text = reqwest::get(format!("http://{}/metrics", sidecar.http))
        .await?
        .text()
        .await?;
    assert_eq!(metric(&text, "shipper_uploads"), Some(0.0));
    assert!(objects(&bucket).await?.is_empty());
    assert!(!state_file(&data).exists());
    assert!(!data.join("thanos.shipper.json").exists());
    Ok(())
}
