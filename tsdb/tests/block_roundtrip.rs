//! Blocks written by `BlockWriter` read back with the sans-IO readers: every series, chunk and
//! sample, matcher selection, and typed errors (never panics) on corrupt or truncated files.

#![allow(clippy::unwrap_used)]

use gauntlet_tsdb::Labels;
use gauntlet_tsdb::block::index::{MatchType, Matcher};
use gauntlet_tsdb::block::{
    BlockMeta, BlockWriter, BlockWriterOptions, ChunksReader, IndexReader, MemorySink, Ulid,
    parse_tombstones,
};

type Series = Vec<(Labels, Vec<(i64, f64)>)>;

fn generate(n: usize, samples: usize) -> Series {
    let mut out: Series = (0..n)
        .map(|i| {
            let labels = Labels::from_pairs(&[
                (
                    "__name__",
                    if i % 3 == 0 {
                        "up"
                    } else {
                        "http_requests_total"
                    }
                    .to_owned(),
                ),
                ("instance", format!("host-{}", i % 17)),
                ("job", format!("job{}", i % 5)),
                ("series", format!("{i:05}")),
            ]);
            let samples = (0..samples)
                .map(|j| {
                    let t = 1_700_000_000_123 + (j as i64) * 15_000 + (i as i64 % 7);
                    (t, (i * 1000 + j) as f64 * 0.5)
                })
                .collect();
            (labels, samples)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn write(series: &Series, segment_size: u64) -> (BlockMeta, MemorySink) {
    let options = BlockWriterOptions {
        segment_size,
        ulid: Some(Ulid::from_parts(1_700_000_000_000, [7; 10])),
        ..BlockWriterOptions::default()
    };
    let mut w = BlockWriter::new(MemorySink::default(), options).unwrap();
    for (l, s) in series {
        w.add_samples(l, s).unwrap();
    }
    w.finish().unwrap()
}

fn segments(sink: &MemorySink) -> Vec<&[u8]> {
    sink.files
        .iter()
        .filter(|(k, _)| k.starts_with("chunks/"))
        .map(|(_, v)| v.as_slice())
        .collect()
}

#[test]
fn writes_and_reads_back_every_sample() {
    let series = generate(300, 250);
    // Small segments force several segment files.
    let (meta, sink) = write(&series, 64 << 10);
    assert_eq!(meta.stats.num_series, 300);
    assert_eq!(meta.stats.num_samples, 300 * 250);
    assert_eq!(meta.stats.num_chunks, 300 * 3);
    assert_eq!(
        Ulid::parse(&meta.ulid).unwrap().timestamp_ms(),
        1_700_000_000_000
    );
    let parsed = BlockMeta::parse(&sink.files["meta.json"]).unwrap();
    assert_eq!(parsed, meta);
    assert!(
        parse_tombstones(&sink.files["tombstones"])
            .unwrap()
            .is_empty()
    );
    let segs = segments(&sink);
    assert!(segs.len() > 1, "{} segments", segs.len());
    assert!(segs.iter().all(|s| s.len() <= 64 << 10));

    let index = IndexReader::new(&sink.files["index"]).unwrap();
    let chunks = ChunksReader::new(segs).unwrap();
    let all = index.all_postings().unwrap();
    assert_eq!(all.len(), series.len());
    for (id, (labels, samples)) in all.iter().zip(&series) {
        let entry = index.series(*id).unwrap();
        assert_eq!(&entry.labels, labels);
        let mut got = Vec::new();
        for c in &entry.chunks {
            let raw = chunks.chunk(c.chunk_ref).unwrap();
            let s = raw.float_samples().unwrap();
            assert_eq!(s.first().unwrap().0, c.min_time);
            assert_eq!(s.last().unwrap().0, c.max_time);
            got.extend(s);
        }
        assert_eq!(&got, samples);
    }
    assert_eq!(
        index.label_names(),
        ["__name__", "instance", "job", "series"]
    );
    assert_eq!(
        index.label_values("job"),
        ["job0", "job1", "job2", "job3", "job4"]
    );
    let li = index.label_indices().unwrap();
    assert_eq!(li.len(), 4);
    assert_eq!(li[2].0, "job");
    assert_eq!(li[2].1.len(), 5);

    let select = |ms: Vec<Matcher>| -> Vec<Labels> {
        index
            .select(&ms)
            .unwrap()
            .into_iter()
            .map(|id| index.series(id).unwrap().labels)
            .collect()
    };
    let expect = |f: &dyn Fn(&Labels) -> bool| -> Vec<Labels> {
        series
            .iter()
            .map(|s| s.0.clone())
            .filter(|l| f(l))
            .collect()
    };
    let m = |k, n: &str, v: &str| Matcher::new(k, n, v).unwrap();
    assert_eq!(
        select(vec![
            m(MatchType::Equal, "__name__", "up"),
            m(MatchType::Equal, "job", "job2")
        ]),
        expect(&|l| l.get("__name__") == Some("up") && l.get("job") == Some("job2"))
    );
    assert_eq!(
        select(vec![
            m(MatchType::Regex, "instance", "host-1.*"),
            m(MatchType::NotEqual, "job", "job0")
        ]),
        expect(
            &|l| l.get("instance").unwrap().starts_with("host-1") && l.get("job") != Some("job0")
        )
    );
    assert_eq!(
        select(vec![m(MatchType::NotRegex, "job", "job[0-3]")]),
        expect(&|l| l.get("job") == Some("job4"))
    );
    assert_eq!(
        select(vec![m(MatchType::Equal, "job", "nope")]),
        Vec::<Labels>::new()
    );
    assert_eq!(
        select(vec![m(MatchType::Equal, "missing", "")]).len(),
        series.len()
    );
    assert_eq!(
        select(vec![m(MatchType::NotEqual, "missing", "")]),
        Vec::<Labels>::new()
    );
    assert_eq!(
        select(vec![m(MatchType::Regex, "job", ".*")]).len(),
        series.len()
    );
}

#[test]
fn writer_refuses_bad_input() {
    let mut w = BlockWriter::new(MemorySink::default(), BlockWriterOptions::default()).unwrap();
    let a = Labels::from_pairs(&[("a", "1")]);
    let b = Labels::from_pairs(&[("a", "2")]);
    w.add_samples(&b, &[(1, 1.0)]).unwrap();
    assert!(w.add_samples(&a, &[(1, 1.0)]).is_err(), "out of order");
    assert!(w.add_samples(&b, &[(1, 1.0)]).is_err(), "duplicate");
    let c = Labels::from_pairs(&[("a", "3")]);
    assert!(
        w.add_samples(&c, &[(2, 1.0), (2, 2.0)]).is_err(),
        "equal timestamps"
    );
    assert!(w.add_samples(&Labels::empty(), &[(2, 1.0)]).is_err());
    let empty = BlockWriter::new(MemorySink::default(), BlockWriterOptions::default()).unwrap();
    assert!(empty.finish().is_err());
}
