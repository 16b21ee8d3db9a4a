//! `gauntlet compact` with the compactor WebAssembly plugin, driven as a user would: 2h blocks
//! of two clusters written into a filesystem bucket are merged into one 8h block per cluster
//! with every sample, the sources get Thanos deletion marks, promtool accepts the output, and
//! a second run finds nothing to do. An empty bucket plans nothing; a corrupt source block
//! fails its job with an error naming it and leaves every block as it was. With `--wait` the
//! compactor keeps running and reports its work on `/metrics`.

mod plugin_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gauntlet_e2e::{Process, free_loopback_address, gauntlet_binary, scratch_dir};
use gauntlet_tsdb::Labels;
use gauntlet_tsdb::block::writer::{BlockWriter, BlockWriterOptions, MemorySink};
use gauntlet_tsdb::block::{BlockMeta, ChunksReader, IndexReader, ThanosMeta};

const H: i64 = 3_600_000;
/// 2023-11-14T16:00:00Z, a multiple of 8h.
const T0: i64 = 1_699_977_600_000;
const STEP: i64 = 15_000;

type Samples = BTreeMap<String, Vec<(i64, f64)>>;

/// The series of block `k` (2h from `T0 + k·2h`) of `cluster`: two series in every block,
/// one only in even blocks.
fn block_series(cluster: &str, k: i64) -> Vec<(Labels, Vec<(i64, f64)>)> {
    let start = T0 + k * 2 * H;
    let mut names = vec!["a", "b"];
    if k % 2 == 0 {
        names.push("c");
    }
    names
        .into_iter()
        .map(|instance| {
            let offset = match instance {
                "a" => 0.25,
                "b" => 0.5,
                _ => 0.75,
            };
            let samples = (0..(2 * H / STEP))
                .map(|i| {
                    let t = start + i * STEP;
                    let step = i32::try_from(t / STEP % 1000).unwrap_or(0);
                    (t, f64::from(step) + offset)
                })
                .collect();
            (
                Labels::from_pairs(&[("__name__", "up"), ("instance", instance), ("job", cluster)]),
                samples,
            )
        })
        .collect()
}

/// Writes block `k` of `cluster` into the bucket folder and returns its ULID.
fn write_block(bucket: &Path, cluster: &str, k: i64) -> anyhow::Result<String> {
    let start = T0 + k * 2 * H;
    let mut writer = BlockWriter::new(
        MemorySink::default(),
        BlockWriterOptions {
            time_range: Some((start, start + 2 * H)),
            thanos: Some(ThanosMeta {
                labels: [("cluster".to_owned(), cluster.to_owned())].into(),
                source: "sidecar".to_owned(),
                ..ThanosMeta::default()
            }),
            ..BlockWriterOptions::default()
        },
    )?;
    for (labels, samples) in block_series(cluster, k) {
        writer.add_samples(&labels, &samples)?;
    }
    let (meta, sink) = writer.finish()?;
    for (path, data) in sink.files {
        let file = bucket.join(&meta.ulid).join(path);
        std::fs::create_dir_all(file.parent().expect("parent"))?;
        std::fs::write(file, data)?;
    }
    Ok(meta.ulid)
}

fn expected(cluster: &str) -> Samples {
    let mut out = Samples::new();
    for k in 0..4 {
        for (labels, samples) in block_series(cluster, k) {
            out.entry(labels.to_string()).or_default().extend(samples);
        }
    }
    out
}

/// Every sample of a block in the bucket, by series.
fn read_samples(block: &Path) -> anyhow::Result<Samples> {
    let index = std::fs::read(block.join("index"))?;
    let index = IndexReader::new(&index)?;
    let mut segment_files: Vec<PathBuf> = std::fs::read_dir(block.join("chunks"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    segment_files.sort();
    let segments: Vec<Vec<u8>> = segment_files
        .iter()
        .map(std::fs::read)
        .collect::<Result<_, _>>()?;
    let chunks = ChunksReader::new(segments.iter().map(Vec::as_slice).collect())?;
    let mut out = Samples::new();
    for r in index.all_postings()? {
        let series = index.series(r)?;
        let samples = out.entry(series.labels.to_string()).or_default();
        for c in &series.chunks {
            samples.extend(chunks.chunk(c.chunk_ref)?.float_samples()?);
        }
    }
    Ok(out)
}

/// (ULID, meta) of every block in the bucket, and the ULIDs with a deletion mark.
fn blocks(bucket: &Path) -> anyhow::Result<(Vec<BlockMeta>, Vec<String>)> {
    let mut metas = Vec::new();
    let mut marked = Vec::new();
    for entry in std::fs::read_dir(bucket)? {
        let dir = entry?.path();
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if dir.join("meta.json").is_file() {
            metas.push(BlockMeta::parse(&std::fs::read(dir.join("meta.json"))?)?);
        }
        if dir.join("deletion-mark.json").is_file() {
            marked.push(name);
        }
    }
    metas.sort_by(|a, b| a.ulid.cmp(&b.ulid));
    marked.sort();
    Ok((metas, marked))
}

struct Setup {
    dir: PathBuf,
    bucket: PathBuf,
    config: PathBuf,
}

fn setup(name: &str) -> anyhow::Result<Setup> {
    let dir = scratch_dir(name)?;
    let bucket = dir.join("bucket");
    std::fs::create_dir_all(&bucket)?;
    let config = dir.join("bucket.yml");
    std::fs::write(
        &config,
        format!(
            "type: FILESYSTEM\nconfig:\n  directory: {}\n",
            bucket.display()
        ),
    )?;
    Ok(Setup {
        dir,
        bucket,
        config,
    })
}

fn compact(setup: &Setup) -> anyhow::Result<Output> {
    let components = plugin_common::components();
    Ok(Command::new(gauntlet_binary()?)
        .arg("compact")
        .arg("--objstore.config-file")
        .arg(&setup.config)
        .arg("--data-dir")
        .arg(setup.dir.join("data"))
        .env("GAUNTLET_PLUGIN_DIR", components)
        .output()?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn adjacent_2h_blocks_become_one_8h_block_per_cluster() -> anyhow::Result<()> {
    let setup = setup("compact")?;
    let mut sources: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for cluster in ["eu1", "us1"] {
        for k in 0..4 {
            sources
                .entry(cluster)
                .or_default()
                .push(write_block(&setup.bucket, cluster, k)?);
        }
    }

    let output = compact(&setup)?;
    let stderr = text(&output.stderr);
    anyhow::ensure!(output.status.success(), "compact failed: {stderr}");
    for cluster in ["eu1", "us1"] {
        assert!(
            stderr.contains(&format!(
                "compacting 4 blocks of {{cluster=\"{cluster}\"}} into 8h block"
            )),
            "{stderr}"
        );
    }

    let (metas, marked) = blocks(&setup.bucket)?;
    let mut all_sources: Vec<String> = sources.values().flatten().cloned().collect();
    all_sources.sort();
    assert_eq!(marked, all_sources, "every source is marked for deletion");
    for ulid in &all_sources {
        let mark: serde_json::Value = serde_json::from_slice(&std::fs::read(
            setup.bucket.join(ulid).join("deletion-mark.json"),
        )?)?;
        assert_eq!(mark["id"], ulid.as_str());
        assert_eq!(mark["version"], 1);
        assert!(mark["deletion_time"].as_i64().unwrap_or(0) > 1_700_000_000);
    }
    let new: Vec<&BlockMeta> = metas
        .iter()
        .filter(|m| !all_sources.contains(&m.ulid))
        .collect();
    assert_eq!(new.len(), 2, "one new block per cluster: {new:?}");
    for meta in new {
        let thanos = meta.thanos.as_ref().expect("thanos section");
        let cluster = thanos.labels["cluster"].as_str();
        assert_eq!(thanos.source, "compactor");
        assert_eq!((meta.min_time, meta.max_time), (T0, T0 + 8 * H));
        assert_eq!(meta.compaction.level, 2);
        let mut want_sources = sources[cluster].clone();
        want_sources.sort();
        assert_eq!(meta.compaction.sources, want_sources);
        assert_eq!(meta.compaction.parents.len(), 4);
        let got = read_samples(&setup.bucket.join(&meta.ulid))?;
        let want = expected(cluster);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        for (series, samples) in &want {
            let have = &got[series];
            assert_eq!(have.len(), samples.len(), "{series}");
            for (h, w) in have.iter().zip(samples) {
                assert_eq!(h.0, w.0, "{series}");
                assert_eq!(h.1.to_bits(), w.1.to_bits(), "{series} at {}", w.0);
            }
        }
        let total: usize = want.values().map(Vec::len).sum();
        assert_eq!(meta.stats.num_samples, total as u64);

        // promtool reads the block like any Prometheus block.
        let db = setup.dir.join(format!("promtool-{cluster}"));
        copy_dir(&setup.bucket.join(&meta.ulid), &db.join(&meta.ulid))?;
        let analyze = Command::new("promtool")
            .args(["tsdb", "analyze"])
            .arg(&db)
            .arg(&meta.ulid)
            .output()
            .map_err(|e| anyhow::anyhow!("promtool: {e} (install Debian's prometheus)"))?;
        let out = text(&analyze.stdout);
        anyhow::ensure!(
            analyze.status.success(),
            "promtool tsdb analyze failed: {out}{}",
            text(&analyze.stderr)
        );
        assert!(out.contains(&format!("Block ID: {}", meta.ulid)), "{out}");
        assert!(out.contains(&format!("Series: {}", want.len())), "{out}");
    }

    // Nothing left to do.
    let again = compact(&setup)?;
    let stderr = text(&again.stderr);
    anyhow::ensure!(again.status.success(), "second compact failed: {stderr}");
    assert!(!stderr.contains("compacting"), "{stderr}");
    assert!(stderr.contains("0 jobs run"), "{stderr}");
    assert_eq!(blocks(&setup.bucket)?.0.len(), metas.len());
    std::fs::remove_dir_all(&setup.dir)?;
    Ok(())
}

#[test]
fn an_empty_bucket_plans_nothing() -> anyhow::Result<()> {
    let setup = setup("compact-empty")?;
    let output = compact(&setup)?;
    let stderr = text(&output.stderr);
    anyhow::ensure!(output.status.success(), "compact failed: {stderr}");
    assert!(stderr.contains("0 jobs run"), "{stderr}");
    assert!(!stderr.contains("compacting"), "{stderr}");
    std::fs::remove_dir_all(&setup.dir)?;
    Ok(())
}

#[test]
fn a_corrupt_source_block_fails_the_job_and_changes_nothing() -> anyhow::Result<()> {
    let setup = setup("compact-corrupt")?;
    let mut ulids = Vec::new();
    for k in 0..4 {
        ulids.push(write_block(&setup.bucket, "eu1", k)?);
    }
    let victim = &ulids[2];
    let index = setup.bucket.join(victim).join("index");
    let mut bytes = std::fs::read(&index)?;
    let n = bytes.len();
    bytes.truncate(n - 20);
    std::fs::write(&index, bytes)?;
    let before = snapshot(&setup.bucket)?;

    let output = compact(&setup)?;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("block {victim}")), "{stderr}");
    assert!(stderr.contains("no-compact-mark.json"), "{stderr}");
    assert_eq!(snapshot(&setup.bucket)?, before, "the bucket is unchanged");
    std::fs::remove_dir_all(&setup.dir)?;
    Ok(())
}

#[test]
fn with_wait_it_keeps_running_and_reports_metrics() -> anyhow::Result<()> {
    let setup = setup("compact-wait")?;
    for k in 0..4 {
        write_block(&setup.bucket, "eu1", k)?;
    }
    let address = free_loopback_address()?;
    let components = plugin_common::components();
    let args: Vec<String> = vec![
        "compact".into(),
        "--objstore.config-file".into(),
        setup.config.display().to_string(),
        "--data-dir".into(),
        setup.dir.join("data").display().to_string(),
        "--wait".into(),
        "--wait-interval".into(),
        "1s".into(),
        "--http-address".into(),
        address.to_string(),
    ];
    let mut process = Process::spawn_with_env(
        "compact-wait",
        &gauntlet_binary()?,
        &args,
        &[("GAUNTLET_PLUGIN_DIR", components.as_os_str())],
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    let url = format!("http://{address}/metrics");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let metrics = loop {
        let text = runtime.block_on(async {
            match reqwest::get(&url).await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
        });
        // Two passes: the one that compacted and one that found nothing left.
        if text.lines().any(|l| {
            l.strip_prefix("gauntlet_compactor_passes_total ")
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v >= 2.0)
        }) {
            break text;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no second pass within 60 s:\n{}",
            process.output()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    for line in [
        "gauntlet_compactor_jobs_total{result=\"success\"} 1",
        "gauntlet_compactor_blocks_created_total 1",
        "gauntlet_compactor_blocks_marked_for_deletion_total 4",
        "gauntlet_compactor_halted 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    assert_eq!(
        process.terminate(std::time::Duration::from_secs(10))?,
        Some(0)
    );
    assert_eq!(blocks(&setup.bucket)?.1.len(), 4);
    std::fs::remove_dir_all(&setup.dir)?;
    Ok(())
}

/// Every file of the bucket with its size.
fn snapshot(dir: &Path) -> anyhow::Result<BTreeMap<PathBuf, u64>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else {
                out.insert(entry.path(), entry.metadata()?.len());
            }
        }
    }
    Ok(out)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}
