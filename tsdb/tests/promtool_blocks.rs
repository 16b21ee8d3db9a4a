//! Blocks created by Prometheus's own `promtool tsdb create-blocks-from openmetrics` read with
//! our index and chunk readers: every series and sample equals what was generated, and
//! matcher selection agrees with filtering every series by hand.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use common::{ReadBlock, block_dirs, by_labels, run};
use gauntlet_tsdb::Labels;
use gauntlet_tsdb::block::index::{MatchType, Matcher};

const SAMPLES: usize = 200;
/// Not aligned to a second, nor to the 2 h block boundaries.
const BASE_MS: i64 = 1_700_000_123_457;
const STEP_MS: i64 = 36_000;

fn timestamp(i: usize, j: usize) -> i64 {
    BASE_MS + j as i64 * STEP_MS + ((i * 31 + j * 17) % 1000) as i64
}

/// OpenMetrics text for 1200 counters and 2000 gauges, and the series it holds.
fn generate() -> (String, BTreeMap<String, Vec<(i64, f64)>>) {
    let mut text = String::new();
    let mut expected = BTreeMap::new();
    let mut i = 0usize;
    text.push_str("# HELP http_requests Requests served.\n# TYPE http_requests counter\n");
    for method in ["DELETE", "GET", "POST", "PUT"] {
        for code in ["200", "404", "500"] {
            for instance in 0..100 {
                let instance = format!("host-{instance:03}");
                let labels = Labels::from_pairs(&[
                    ("__name__", "http_requests_total"),
                    ("code", code),
                    ("instance", &instance),
                    ("method", method),
                ]);
                let mut v = 0.0;
                let mut samples = Vec::with_capacity(SAMPLES);
                for j in 0..SAMPLES {
                    v += ((i + j) % 7) as f64 * 0.25;
                    let t = timestamp(i, j);
                    writeln!(
                        text,
                        "http_requests_total{{method=\"{method}\",code=\"{code}\",instance=\"{instance}\"}} {v} {}.{:03}",
                        t / 1000,
                        t % 1000
                    )
                    .unwrap();
                    samples.push((t, v));
                }
                expected.insert(labels.to_string(), samples);
                i += 1;
            }
        }
    }
    text.push_str(
        "# HELP node_temperature_celsius Temperature.\n# TYPE node_temperature_celsius gauge\n",
    );
    for sensor in 0..2000 {
        let sensor = format!("s{sensor}");
        let labels = Labels::from_pairs(&[
            ("__name__", "node_temperature_celsius"),
            ("sensor", &sensor),
        ]);
        let mut samples = Vec::with_capacity(SAMPLES);
        for j in 0..SAMPLES {
            let v = ((i * 7 + j * 13) % 2001) as f64 / 8.0 - 100.0;
            let t = timestamp(i, j);
            writeln!(
                text,
                "node_temperature_celsius{{sensor=\"{sensor}\"}} {v} {}.{:03}",
                t / 1000,
                t % 1000
            )
            .unwrap();
            samples.push((t, v));
        }
        expected.insert(labels.to_string(), samples);
        i += 1;
    }
    text.push_str("# EOF\n");
    (text, expected)
}

#[test]
fn reads_every_sample_of_promtool_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (text, expected) = generate();
    assert!(expected.len() >= 3000);
    let om = dir.path().join("data.om");
    std::fs::write(&om, text).unwrap();
    let out = dir.path().join("blocks");
    std::fs::create_dir(&out).unwrap();
    run(Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&out));

    let blocks = block_dirs(&out);
    // The data spans a 2 h boundary.
    assert!(blocks.len() >= 2, "{} blocks", blocks.len());
    let mut all = Vec::new();
    let mut total_samples = 0;
    for dir in &blocks {
        let block = ReadBlock::open(dir);
        let series = block.series();
        let samples: usize = series.iter().map(|s| s.1.len()).sum();
        assert_eq!(samples as u64, block.meta.stats.num_samples);
        assert_eq!(series.len() as u64, block.meta.stats.num_series);
        for (_, s) in &series {
            assert!(
                s.iter()
                    .all(|&(t, _)| t >= block.meta.min_time && t < block.meta.max_time)
            );
        }
        total_samples += samples;
        check_selection(&block, &series);
        all.extend(series);
    }
    assert_eq!(total_samples, expected.len() * SAMPLES);
    let got = by_labels(all);
    assert_eq!(got.len(), expected.len());
    for (labels, samples) in &expected {
        let g = &got[labels];
        assert_eq!(g.len(), samples.len(), "{labels}");
        for (a, b) in g.iter().zip(samples) {
            assert_eq!(a.0, b.0, "{labels}");
            assert_eq!(a.1.to_bits(), b.1.to_bits(), "{labels} at {}", a.0);
        }
    }
}

/// Matcher selection through postings agrees with filtering every series.
fn check_selection(block: &ReadBlock, series: &[(Labels, Vec<(i64, f64)>)]) {
    let index = block.index();
    let m = |k, n: &str, v: &str| Matcher::new(k, n, v).unwrap();
    let cases = vec![
        vec![m(MatchType::Equal, "__name__", "http_requests_total")],
        vec![
            m(MatchType::Equal, "__name__", "http_requests_total"),
            m(MatchType::Regex, "method", "GET|PUT"),
            m(MatchType::NotEqual, "code", "500"),
        ],
        vec![m(MatchType::Regex, "sensor", "s1[0-9]{2}")],
        vec![
            m(MatchType::NotRegex, "__name__", "http.*"),
            m(MatchType::NotEqual, "sensor", "s7"),
        ],
        vec![m(MatchType::Equal, "instance", "")],
        vec![m(MatchType::Regex, "instance", "host-0[0-4].|nothing")],
        vec![m(MatchType::Equal, "code", "201")],
    ];
    for matchers in cases {
        let selected: Vec<Labels> = index
            .select(&matchers)
            .unwrap()
            .into_iter()
            .map(|id| index.series(id).unwrap().labels)
            .collect();
        let want: Vec<Labels> = series
            .iter()
            .filter(|(l, _)| {
                matchers
                    .iter()
                    .all(|m| m.matches(l.get(&m.name).unwrap_or("")))
            })
            .map(|(l, _)| l.clone())
            .collect();
        assert_eq!(selected, want, "{matchers:?}");
    }
    assert_eq!(
        index.label_values("method"),
        ["DELETE", "GET", "POST", "PUT"]
    );
    assert_eq!(index.label_values("sensor").len(), 2000);
    // Prometheus 2.42 still writes label indices; they agree with the postings offset table.
    let label_indices = index.label_indices().unwrap();
    assert_eq!(label_indices.len(), index.label_names().len());
    for (name, values) in label_indices {
        assert_eq!(values, index.label_values(&name), "{name}");
    }
}
