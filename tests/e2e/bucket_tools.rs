//! `gauntlet tools bucket upload|ls|inspect` driven as a user would: blocks made by promtool
//! from OpenMetrics, uploaded to a filesystem bucket and to S3 (moto), listed and inspected
//! with the right counts, uploaded again without effect, and an incomplete block refused.
//!
//! moto missing skips the S3 half loudly unless `GAUNTLET_REQUIRE_TEST_SERVERS` is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gauntlet_e2e::{S3Server, gauntlet_binary, moto_server, scratch_dir};

const SERIES: usize = 3;
const SAMPLES_PER_SERIES: usize = 180;
/// 2023-11-14T22:13:20Z: three hours from here span two 2h-aligned blocks.
const START: i64 = 1_700_000_000;

fn gauntlet(args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(gauntlet_binary()?).args(args).output()?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs gauntlet and requires success; returns stdout and stderr.
fn ok(args: &[&str]) -> anyhow::Result<(String, String)> {
    let output = gauntlet(args)?;
    let (out, err) = (text(&output.stdout), text(&output.stderr));
    anyhow::ensure!(
        output.status.success(),
        "gauntlet {args:?} failed ({}):\nstdout: {out}\nstderr: {err}",
        output.status
    );
    Ok((out, err))
}

/// Prometheus blocks made by promtool from generated OpenMetrics; returns the data directory
/// and the block ULIDs, sorted.
fn make_blocks(dir: &Path) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let mut openmetrics =
        String::from("# HELP temperature Room temperature.\n# TYPE temperature gauge\n");
    for room in ["a", "b", "c"].iter().take(SERIES) {
        for i in 0..SAMPLES_PER_SERIES {
            let t = START + 60 * i as i64;
            openmetrics.push_str(&format!(
                "temperature{{room=\"{room}\"}} {}.5 {t}\n",
                20 + i % 5
            ));
        }
    }
    openmetrics.push_str("# EOF\n");
    let input = dir.join("input.om");
    std::fs::write(&input, openmetrics)?;
    let data = dir.join("prometheus-data");
    let output = Command::new("promtool")
        .arg("tsdb")
        .arg("create-blocks-from")
        .arg("openmetrics")
        .arg(&input)
        .arg(&data)
        .output()
        .map_err(|e| anyhow::anyhow!("promtool: {e} (install Debian's prometheus)"))?;
    anyhow::ensure!(
        output.status.success(),
        "promtool failed: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let mut ulids: Vec<String> = std::fs::read_dir(&data)?
        .filter_map(Result::ok)
        .filter(|e| e.path().join("meta.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ulids.sort();
    anyhow::ensure!(
        ulids.len() == 2,
        "expected 2 blocks from promtool, got {ulids:?}"
    );
    Ok((data, ulids))
}

/// Checks `ls` and `inspect` (table and JSON) against the uploaded blocks.
fn check_listing(config: &[&str], ulids: &[String]) -> anyhow::Result<()> {
    let (out, _) = ok(&[&["tools", "bucket", "ls"], config].concat())?;
    let listed: Vec<&str> = out.lines().collect();
    assert_eq!(listed, ulids, "ls output:\n{out}");

    let (json, _) = ok(&[&["tools", "bucket", "inspect", "--output=json"], config].concat())?;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json)?;
    assert_eq!(rows.len(), 2, "{json}");
    let mut samples = 0;
    for row in &rows {
        assert_eq!(row["series"], SERIES, "{row}");
        assert_eq!(row["source"], "bucket.upload", "{row}");
        assert_eq!(row["labels"]["cluster"], "eu1", "{row}");
        assert_eq!(row["labels"]["replica"], "0", "{row}");
        assert_eq!(row["deletionMarked"], false, "{row}");
        assert_eq!(row["level"], 1, "{row}");
        samples += row["samples"].as_u64().unwrap_or_default();
    }
    assert_eq!(samples, (SERIES * SAMPLES_PER_SERIES) as u64, "{json}");

    let (table, _) = ok(&[&["tools", "bucket", "inspect"], config].concat())?;
    let header = table.lines().next().unwrap_or_default();
    for column in [
        "ULID",
        "FROM",
        "UNTIL",
        "RANGE",
        "SERIES",
        "SAMPLES",
        "CHUNKS",
        "LEVEL",
        "RESOLUTION",
        "SOURCE",
        "LABELS",
    ] {
        assert!(header.contains(column), "{column} missing:\n{table}");
    }
    for ulid in ulids {
        let line = table
            .lines()
            .find(|l| l.starts_with(ulid.as_str()))
            .unwrap_or_else(|| panic!("{ulid} missing:\n{table}"));
        assert!(line.contains("cluster=eu1,replica=0"), "{line}");
        assert!(line.contains("bucket.upload"), "{line}");
    }
    Ok(())
}

/// Uploads twice (the second time nothing), then checks the listing.
fn upload_and_check(config: &[&str], data: &Path, ulids: &[String]) -> anyhow::Result<()> {
    let dir = data.to_string_lossy();
    let upload = [
        &["tools", "bucket", "upload"][..],
        config,
        &[&dir, "--label", "cluster=\"eu1\"", "--label", "replica=0"],
    ]
    .concat();
    let (out, err) = ok(&upload)?;
    assert!(out.contains("uploaded 2 block(s)"), "{out}");
    for ulid in ulids {
        assert!(err.contains(&format!("uploaded block {ulid}")), "{err}");
    }
    check_listing(config, ulids)?;

    let (out, err) = ok(&upload)?;
    assert!(
        out.contains("uploaded 0 block(s)") && out.contains("skipped 2"),
        "{out}"
    );
    assert!(err.contains("already in the bucket"), "{err}");
    Ok(())
}

#[test]
fn upload_ls_inspect_on_a_filesystem_bucket() -> anyhow::Result<()> {
    let dir = scratch_dir("bucket-tools-fs")?;
    let (data, ulids) = make_blocks(&dir)?;
    let bucket = dir.join("bucket");
    let config_file = dir.join("bucket.yml");
    std::fs::write(
        &config_file,
        format!(
            "type: FILESYSTEM\nconfig:\n  directory: {}\n",
            bucket.display()
        ),
    )?;
    let file = config_file.to_string_lossy().into_owned();
    let config = ["--objstore.config-file", file.as_str()];
    upload_and_check(&config, &data, &ulids)?;

    // The uploaded meta.json lists every file with its size; the files are all there.
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bucket.join(&ulids[0]).join("meta.json"))?)?;
    let files = meta["thanos"]["files"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for file in &files {
        let rel = file["rel_path"].as_str().unwrap_or_default();
        let on_disk = std::fs::metadata(bucket.join(&ulids[0]).join(rel))?.len();
        if rel != "meta.json" {
            assert_eq!(file["size_bytes"].as_u64(), Some(on_disk), "{file}");
        }
    }
    assert!(files.iter().any(|f| f["rel_path"] == "index"), "{meta}");
    assert!(
        files.iter().any(|f| f["rel_path"] == "chunks/000001"),
        "{meta}"
    );

    // A deletion mark shows; a folder without meta.json is skipped with a note.
    std::fs::write(bucket.join(&ulids[1]).join("deletion-mark.json"), "{}")?;
    let partial = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    std::fs::create_dir_all(bucket.join(partial))?;
    std::fs::write(bucket.join(partial).join("index"), "x")?;
    let (json, err) = ok(&[
        &["tools", "bucket", "inspect", "--output=json"][..],
        &config,
    ]
    .concat())?;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json)?;
    let marked: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["deletionMarked"] == true)
        .collect();
    assert_eq!(marked.len(), 1, "{json}");
    assert_eq!(marked[0]["ulid"], ulids[1].as_str());
    assert!(
        err.contains(partial) && err.contains("without meta.json"),
        "{err}"
    );
    let (table, _) = ok(&[&["tools", "bucket", "inspect"][..], &config].concat())?;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&ulids[1]) && l.ends_with("marked")),
        "{table}"
    );

    // A block directory without meta.json refuses the whole upload.
    let incomplete = dir.join("incomplete");
    let broken = incomplete.join("01BX5ZZKBKACTAV9WEVGEMMVRZ");
    std::fs::create_dir_all(broken.join("chunks"))?;
    std::fs::copy(data.join(&ulids[0]).join("index"), broken.join("index"))?;
    let output = gauntlet(
        &[
            &["tools", "bucket", "upload"][..],
            &config,
            &[incomplete.to_string_lossy().as_ref()],
        ]
        .concat(),
    )?;
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("01BX5ZZKBKACTAV9WEVGEMMVRZ has no meta.json"),
        "{err}"
    );
    assert!(err.contains("then upload again"), "{err}");
    assert!(!bucket.join("01BX5ZZKBKACTAV9WEVGEMMVRZ").exists());
    Ok(())
}

#[tokio::test]
async fn upload_ls_inspect_on_s3() -> anyhow::Result<()> {
    let Some(moto) = moto_server() else {
        return Ok(());
    };
    let server = S3Server::start(&moto, "blocks").await?;
    let address = server.address;

    let dir = scratch_dir("bucket-tools-s3")?;
    let (data, ulids) = make_blocks(&dir)?;
    let yaml = format!(
        "type: s3\nconfig:\n  bucket: blocks\n  endpoint: {address}\n  access_key: test\n  \
         secret_key: test\n  insecure: true\n"
    );
    let inline = yaml.clone();
    tokio::task::spawn_blocking(move || {
        upload_and_check(&["--objstore.config", inline.as_str()], &data, &ulids)
    })
    .await??;

    // A bucket that does not exist: one clear error, exit 1.
    let missing = yaml.replace("bucket: blocks", "bucket: absent");
    let output = tokio::task::spawn_blocking(move || {
        gauntlet(&["tools", "bucket", "ls", "--objstore.config", &missing])
    })
    .await??;
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("'absent'") && err.contains("create it or check `bucket:`"),
        "{err}"
    );
    Ok(())
}
