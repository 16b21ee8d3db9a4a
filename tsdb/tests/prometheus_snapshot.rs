//! A block written by a real Prometheus 2.42 — its head, cut into a block by the snapshot admin
//! API after scraping itself for a few seconds — read with our index and chunk readers and
//! compared series for series and sample for sample with what `promtool tsdb dump` (Prometheus's
//! own reader) prints for the same block.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ReadBlock, block_dirs, free_port, http_get, prom_labels, run};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn post(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// Samples by label set, values compared by bits except that every NaN is one NaN.
type Dump = BTreeMap<String, Vec<(i64, u64)>>;

fn value_key(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

/// Parses `promtool tsdb dump` lines: `{a="b", c="d"} VALUE TIMESTAMP`.
fn parse_dump(text: &str) -> Dump {
    let mut out = Dump::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (rest, t) = line.rsplit_once(' ').unwrap();
        let (labels, v) = rest.rsplit_once(' ').unwrap();
        let v: f64 = match v {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse().unwrap(),
        };
        out.entry(labels.to_owned())
            .or_default()
            .push((t.parse().unwrap(), value_key(v)));
    }
    out
}

#[test]
fn a_block_prometheus_wrote_reads_as_prometheus_reads_it() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = data.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let _server = Server(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-admin-api")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (install Debian's `prometheus` package)"),
    );
    // Wait for a few scrapes of its own metrics.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = http_get(
            port,
            "/api/v1/query?query=count_over_time(up%5B10s%5D)%20%3E%203",
        )
        .is_ok_and(|(status, body)| status == 200 && body.contains("\"value\""));
        if ok || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(4));

    let answer = post(port, "/api/v1/admin/tsdb/snapshot");
    assert!(answer.contains("\"success\""), "{answer}");
    let snapshots = data.path().join("data/snapshots");
    let snapshot = std::fs::read_dir(&snapshots)
        .unwrap()
        .next()
        .expect("a snapshot")
        .unwrap()
        .path();
    // promtool opens the snapshot as a data directory, which needs a (here empty) WAL.
    std::fs::create_dir_all(snapshot.join("wal")).unwrap();
    let blocks = block_dirs(&snapshot);
    assert!(!blocks.is_empty(), "the snapshot holds no block");

    let mut ours = Dump::new();
    let mut series = 0;
    for dir in &blocks {
        let block = ReadBlock::open(dir);
        assert!(block.meta.stats.num_series > 0);
        for (labels, samples) in block.series() {
            series += 1;
            ours.entry(prom_labels(&labels))
                .or_default()
                .extend(samples.iter().map(|&(t, v)| (t, value_key(v))));
        }
    }
    let theirs = parse_dump(&run(Command::new("promtool")
        .args(["tsdb", "dump"])
        .arg(&snapshot)));
    assert!(
        series > 100,
        "only {series} series in Prometheus's own block"
    );
    assert_eq!(ours.len(), theirs.len(), "series count");
    for (labels, samples) in &theirs {
        assert_eq!(ours.get(labels), Some(samples), "{labels}");
    }
}
