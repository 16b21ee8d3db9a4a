//! A block written by our writer, checked by Prometheus 2.42 itself: `promtool tsdb analyze`
//! accepts it, `promtool tsdb dump` prints exactly our samples, and a real Prometheus server
//! loading it answers `query` and `query_range` with our data.

#![allow(clippy::unwrap_used)]

mod common;

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{ReadBlock, free_port, go_g, http_get, prom_labels, run, urlencode};
use gauntlet_tsdb::Labels;
use gauntlet_tsdb::block::{BlockWriterOptions, write_block_dir};

type Series = Vec<(Labels, Vec<(i64, f64)>)>;

fn generate(base: i64) -> Series {
    let mut out = Series::new();
    for i in 0..300usize {
        let labels = if i < 100 {
            Labels::from_pairs(&[
                ("__name__", "gauntlet_written_total".to_owned()),
                ("instance", format!("host-{i:03}")),
                ("job", "writer".to_owned()),
            ])
        } else {
            Labels::from_pairs(&[
                ("__name__", "gauntlet_gauge".to_owned()),
                ("shard", format!("{}", i % 40)),
                ("zone", format!("z{}", i % 5)),
            ])
        };
        let mut v = 0.0;
        let samples = (0..241usize)
            .map(|j| {
                let t = base + j as i64 * 30_000 + ((i * 13 + j * 7) % 977) as i64;
                v = if i < 100 {
                    v + ((i + j) % 5) as f64 * 0.5
                } else {
                    ((i * 3 + j * 11) % 1601) as f64 / 4.0 - 200.0
                };
                (t, v)
            })
            .collect();
        out.push((labels, samples));
    }
    // Labels repeat across the gauge shards: keep the first of each.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_reads_a_block_we_wrote() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Two hours of data ending an hour ago, at timestamps off any alignment.
    let base = now - 3 * 3600 * 1000 + 123;
    let series = generate(base);
    let data = tempfile::tempdir().unwrap();
    let (meta, dir) = write_block_dir(
        data.path(),
        BlockWriterOptions::default(),
        series.iter().map(|(l, s)| (l, s.as_slice())),
    )
    .unwrap();
    assert_eq!(dir.file_name().unwrap().to_str().unwrap(), meta.ulid);
    // Our own reader agrees before Prometheus is asked.
    assert_eq!(ReadBlock::open(&dir).series(), series);

    let analyze = run(Command::new("promtool")
        .args(["tsdb", "analyze"])
        .arg(data.path())
        .arg(&meta.ulid));
    assert!(
        analyze.contains(&format!("Block ID: {}", meta.ulid)),
        "{analyze}"
    );
    assert!(
        analyze.contains(&format!("Series: {}", series.len())),
        "{analyze}"
    );

    // Dump a window in the middle of the block.
    let (lo, hi) = (base + 1800 * 1000, base + 5400 * 1000);
    let dump = run(Command::new("promtool")
        .args(["tsdb", "dump"])
        .arg(format!("--min-time={lo}"))
        .arg(format!("--max-time={hi}"))
        .arg(data.path()));
    let mut want = String::new();
    for (l, samples) in &series {
        for &(t, v) in samples.iter().filter(|s| s.0 >= lo && s.0 <= hi) {
            writeln!(want, "{} {} {t}", prom_labels(l), go_g(v)).unwrap();
        }
    }
    assert_eq!(dump.lines().count(), want.lines().count());
    assert!(
        dump == want,
        "promtool tsdb dump differs from what we wrote"
    );

    // A real server with the block in its data directory.
    let port = free_port();
    let config = data.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
    let _server = Server(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.path().display()))
            .arg("--storage.tsdb.retention.time=10y")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus binary (Debian's `prometheus` package)"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = http_get(port, "/-/ready") {
            break;
        }
        assert!(Instant::now() < deadline, "prometheus did not become ready");
        std::thread::sleep(Duration::from_millis(200));
    }

    let query = |path: &str| -> serde_json::Value {
        let (status, body) = http_get(port, path).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{body}");
        v["data"].clone()
    };
    let end_s = (meta.max_time + 1000) as f64 / 1000.0;

    // Raw samples of a few series through a range selector.
    for (l, samples) in series.iter().step_by(37) {
        let selector = prom_selector(l);
        let data = query(&format!(
            "/api/v1/query?query={}&time={end_s}",
            urlencode(&format!("{selector}[3h]"))
        ));
        let result = data["result"].as_array().unwrap();
        assert_eq!(result.len(), 1, "{selector}");
        let values = result[0]["values"].as_array().unwrap();
        let got: Vec<(i64, f64)> = values.iter().map(point).collect();
        assert_eq!(&got, samples, "{selector}");
    }

    // query_range of a whole metric: every step sees the latest sample within 5 minutes.
    let step = 60_000i64;
    let (start, end) = (base - 10 * step, meta.max_time + 10 * step);
    let data = query(&format!(
        "/api/v1/query_range?query={}&start={}&end={}&step=60",
        urlencode("gauntlet_written_total"),
        start as f64 / 1000.0,
        end as f64 / 1000.0
    ));
    let result = data["result"].as_array().unwrap();
    assert_eq!(result.len(), 100);
    for r in result {
        let instance = r["metric"]["instance"].as_str().unwrap();
        let (_, samples) = series
            .iter()
            .find(|(l, _)| l.get("instance") == Some(instance))
            .unwrap();
        let got: Vec<(i64, f64)> = r["values"].as_array().unwrap().iter().map(point).collect();
        let mut want = Vec::new();
        let mut t = start;
        while t <= end {
            if let Some(&(st, v)) = samples.iter().rev().find(|s| s.0 <= t)
                && st > t - 300_000
            {
                want.push((t, v));
            }
            t += step;
        }
        assert_eq!(got, want, "{instance}");
    }

    // An aggregation over the gauges at one instant.
    let at = base + 3600 * 1000;
    let data = query(&format!(
        "/api/v1/query?query={}&time={}",
        urlencode("sum(gauntlet_gauge)"),
        at as f64 / 1000.0
    ));
    let got: f64 = data["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let want: f64 = series
        .iter()
        .filter(|(l, _)| l.metric_name() == Some("gauntlet_gauge"))
        .filter_map(|(_, s)| s.iter().rev().find(|p| p.0 <= at && p.0 > at - 300_000))
        .map(|p| p.1)
        .sum();
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
}

fn prom_selector(l: &Labels) -> String {
    let parts: Vec<String> = l
        .iter()
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn point(p: &serde_json::Value) -> (i64, f64) {
    let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
    let v: f64 = p[1].as_str().unwrap().parse().unwrap();
    (t, v)
}
