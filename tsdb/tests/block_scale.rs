//! A block of one million series written to a directory and read back: memory stays
//! proportional to the series, not the samples. Run with
//! `cargo test --release -p gauntlet-tsdb --test block_scale -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use gauntlet_tsdb::Labels;
use gauntlet_tsdb::block::{
    BlockWriter, BlockWriterOptions, DirSink, IndexReader, MatchType, Matcher,
};

fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

#[test]
#[ignore = "a minute in release mode; run by hand"]
fn one_million_series() {
    const SERIES: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let mut w = BlockWriter::new(DirSink::new(dir.path()), BlockWriterOptions::default()).unwrap();
    let mut samples = Vec::with_capacity(240);
    for i in 0..SERIES {
        let labels = Labels::from_pairs(&[
            ("__name__", "scale_test".to_owned()),
            ("id", format!("{i:07}")),
            ("pod", format!("pod-{}", i % 5000)),
            ("zone", format!("z{}", i % 3)),
        ]);
        samples.clear();
        samples.extend((0..240).map(|j| (1_700_000_000_000 + j * 15_000, (i + j as usize) as f64)));
        w.add_samples(&labels, &samples).unwrap();
    }
    let (meta, _) = w.finish().unwrap();
    let write = start.elapsed();
    let index = std::fs::read(dir.path().join("index")).unwrap();
    let start = Instant::now();
    let r = IndexReader::new(&index).unwrap();
    let sel = r
        .select(&[
            Matcher::new(MatchType::Equal, "pod", "pod-42").unwrap(),
            Matcher::new(MatchType::Regex, "zone", "z[01]").unwrap(),
        ])
        .unwrap();
    let read = start.elapsed();
    let want = (0..SERIES).filter(|i| i % 5000 == 42 && i % 3 < 2).count();
    assert_eq!(sel.len(), want);
    assert_eq!(meta.stats.num_series, SERIES as u64);
    println!(
        "{} series, {} samples: write {write:?}, index {} MiB, open+select {read:?}, peak RSS {} MiB",
        meta.stats.num_series,
        meta.stats.num_samples,
        index.len() >> 20,
        peak_rss_mib()
    );
}
