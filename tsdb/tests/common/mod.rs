//! Helpers shared by the block tests: reading a block directory with the sans-IO readers,
//! running Prometheus's tools, and a minimal HTTP client for a local Prometheus.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use gauntlet_tsdb::Labels;
use gauntlet_tsdb::block::{BlockMeta, ChunksReader, IndexReader};

/// Every series of a block directory with its float samples, read with our readers.
pub struct ReadBlock {
    pub meta: BlockMeta,
    pub index: Vec<u8>,
    pub segments: Vec<Vec<u8>>,
}

impl ReadBlock {
    pub fn open(dir: &Path) -> ReadBlock {
        let meta = BlockMeta::parse(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
        let index = std::fs::read(dir.join("index")).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(dir.join("chunks"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let segments = names
            .iter()
            .map(|n| std::fs::read(dir.join("chunks").join(n)).unwrap())
            .collect();
        ReadBlock {
            meta,
            index,
            segments,
        }
    }

    pub fn index(&self) -> IndexReader<'_> {
        IndexReader::new(&self.index).unwrap()
    }

    pub fn chunks(&self) -> ChunksReader<'_> {
        ChunksReader::new(self.segments.iter().map(Vec::as_slice).collect()).unwrap()
    }

    /// Every series (in index order) with its samples.
    pub fn series(&self) -> Vec<(Labels, Vec<(i64, f64)>)> {
        let index = self.index();
        let chunks = self.chunks();
        index
            .all_postings()
            .unwrap()
            .into_iter()
            .map(|id| {
                let entry = index.series(id).unwrap();
                let mut samples = Vec::new();
                for c in &entry.chunks {
                    let s = chunks.chunk(c.chunk_ref).unwrap().float_samples().unwrap();
                    assert_eq!(s.first().unwrap().0, c.min_time, "{}", entry.labels);
                    assert_eq!(s.last().unwrap().0, c.max_time, "{}", entry.labels);
                    samples.extend(s);
                }
                (entry.labels, samples)
            })
            .collect()
    }
}

/// Block directories (those with a `meta.json`) under `dir`, sorted by name.
pub fn block_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("meta.json").exists())
        .collect();
    out.sort();
    out
}

/// Runs a command, failing the test with its output when it does not succeed.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (install Debian's `prometheus` package)"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Go's `%g` for the values the tests use (|v| < 1e6, a few decimals): the shortest decimal
/// that round-trips, which Rust's `Display` also prints in that range.
pub fn go_g(v: f64) -> String {
    assert!(v == 0.0 || (v.abs() >= 1e-4 && v.abs() < 1e6), "{v}");
    format!("{v}")
}

/// Labels as Prometheus prints them: `{a="1", b="2"}`.
pub fn prom_labels(l: &Labels) -> String {
    let parts: Vec<String> = l
        .iter()
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// A GET request to a local server; returns status and body.
pub fn http_get(port: u16, path_and_query: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// Percent-encodes a query parameter value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Groups samples by the label set's text form.
pub fn by_labels(series: Vec<(Labels, Vec<(i64, f64)>)>) -> BTreeMap<String, Vec<(i64, f64)>> {
    let mut out: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for (l, s) in series {
        out.entry(l.to_string()).or_default().extend(s);
    }
    out
}
