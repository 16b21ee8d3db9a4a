//! Generated, realistic monitoring data for `gauntlet demo`: two clusters, one of them an HA
//! pair of Prometheus replicas, each scraping API servers and nodes.
//!
//! Series follow what real exporters produce — request counters with restarts, CPU counters,
//! memory gauges, classic latency histograms with ten buckets — on a daily-looking load curve.
//! The HA replicas scrape the same targets a few seconds apart, and one of them has an outage,
//! so deduplication and gap filling are visible. Generation is deterministic for a given end
//! time, and never allocates more than the samples it returns.

use gauntlet_tsdb::labels::{Labels, METRIC_NAME};

/// A float sample: timestamp in milliseconds and value.
pub type Sample = (i64, f64);

/// What one Prometheus server would hold: its external labels and its series.
pub struct ReplicaData {
    pub external_labels: Labels,
    pub series: Vec<(Labels, Vec<Sample>)>,
}

/// The shape of the generated data.
#[derive(Debug, Clone, Copy)]
pub struct DemoShape {
    /// Timestamp of the newest sample (ms).
    pub end: i64,
    /// How far back the data goes (ms).
    pub span: i64,
    /// Scrape interval (ms).
    pub interval: i64,
}

impl DemoShape {
    /// Six hours at 15 s up to `end`.
    pub fn six_hours_until(end: i64) -> Self {
        Self {
            end,
            span: 6 * 3_600_000,
            interval: 15_000,
        }
    }
}

/// Histogram bucket bounds (seconds) of `http_request_duration_seconds`; `+Inf` is added.
const LATENCY_BUCKETS: [f64; 9] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

struct Replica {
    cluster: &'static str,
    replica: &'static str,
    /// Scrape offset of this replica (ms): HA replicas do not scrape in lockstep.
    scrape_offset: i64,
    /// Time ranges (relative to the start, ms) during which this replica was down.
    outages: &'static [(i64, i64)],
}

const REPLICAS: [Replica; 3] = [
    Replica {
        cluster: "eu1",
        replica: "0",
        scrape_offset: 0,
        outages: &[],
    },
    Replica {
        cluster: "us1",
        replica: "0",
        scrape_offset: 0,
        outages: &[(7_200_000, 8_400_000)],
    },
    Replica {
        cluster: "us1",
        replica: "1",
        scrape_offset: 3_000,
        outages: &[(15_000_000, 15_600_000)],
    },
];

/// Generates the data of every replica.
pub fn generate(shape: DemoShape) -> Vec<ReplicaData> {
    REPLICAS
        .iter()
        .map(|replica| generate_replica(replica, shape))
        .collect()
}

fn generate_replica(replica: &Replica, shape: DemoShape) -> ReplicaData {
    let external_labels =
        Labels::from_pairs(&[("cluster", replica.cluster), ("replica", replica.replica)]);
    let start = shape.end - shape.span;
    let timestamps: Vec<i64> = (0..)
        .map(|i| start + replica.scrape_offset + i * shape.interval)
        .take_while(|t| *t <= shape.end)
        .filter(|t| {
            !replica
                .outages
                .iter()
                .any(|(from, to)| (start + from..start + to).contains(t))
        })
        .collect();
    // Targets are the same in both replicas of a cluster: seed by cluster, not replica.
    let cluster_seed = u64::from(
        replica
            .cluster
            .bytes()
            .fold(7u8, |a, b| a.wrapping_mul(31) ^ b),
    );
    let mut series = Vec::new();
    for instance in 0..3 {
        let target = Target {
            cluster_seed,
            instance,
            start,
        };
        target.api_series(&timestamps, &mut series);
        target.node_series(&timestamps, &mut series);
    }
    ReplicaData {
        external_labels,
        series,
    }
}

struct Target {
    cluster_seed: u64,
    instance: u64,
    start: i64,
}

impl Target {
    fn seed(&self, salt: u64) -> u64 {
        splitmix(self.cluster_seed.wrapping_mul(1_000_003) ^ (self.instance << 20) ^ salt)
    }

    /// Requests per second of this target at `t`: a daily curve with a per-target scale.
    fn load(&self, t: i64) -> f64 {
        let day = 86_400_000.0;
        let phase = (t as f64 / day) * std::f64::consts::TAU;
        let scale = 20.0 + (self.seed(1) % 30) as f64;
        scale * (1.3 + phase.sin()) * (1.0 + 0.15 * noise(self.seed(2), t / 60_000))
    }

    fn api_series(&self, timestamps: &[i64], out: &mut Vec<(Labels, Vec<Sample>)>) {
        let instance = format!("api-{}:8080", self.instance);
        let base = [("job", "api"), ("instance", instance.as_str())];
        // The API server restarts once, two thirds into the window: counters reset.
        let restart = self.start + (4 * 3_600_000) + (self.instance as i64) * 600_000;
        for (method, code, share) in [
            ("GET", "200", 0.7),
            ("POST", "200", 0.22),
            ("GET", "500", 0.05),
            ("POST", "500", 0.03),
        ] {
            let labels = with(
                &base,
                &[
                    (METRIC_NAME, "http_requests_total"),
                    ("method", method),
                    ("code", code),
                ],
            );
            out.push((
                labels,
                self.counter(timestamps, restart, |t| self.load(t) * share),
            ));
        }
        let mut cumulative = [0.0; LATENCY_BUCKETS.len() + 1];
        let mut samples: Vec<Vec<Sample>> =
            vec![Vec::with_capacity(timestamps.len()); LATENCY_BUCKETS.len() + 3];
        let mut last_t = self.start;
        for &t in timestamps {
            if t >= restart && last_t < restart {
                cumulative = [0.0; LATENCY_BUCKETS.len() + 1];
            }
            let requests = self.load(t) * ((t - last_t) as f64 / 1000.0);
            last_t = t;
            // Latency distribution: mostly fast, a slow tail that grows with load.
            let slow = 0.02 + 0.03 * (1.0 + (t as f64 / 5_400_000.0).sin());
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                let fast_share = 1.0 - (-bound / 0.04).exp();
                let share = (1.0 - slow) * fast_share + slow * (bound / 2.5).min(1.0);
                cumulative[i] += (requests * share).floor();
            }
            cumulative[LATENCY_BUCKETS.len()] += requests.floor();
            // Keep buckets monotonic, as a real histogram is.
            for i in 1..cumulative.len() {
                cumulative[i] = cumulative[i].max(cumulative[i - 1]);
            }
            for (i, value) in cumulative.iter().enumerate() {
                samples[i].push((t, *value));
            }
            let count = cumulative[LATENCY_BUCKETS.len()];
            samples[LATENCY_BUCKETS.len() + 1].push((t, count * (0.03 + slow)));
            samples[LATENCY_BUCKETS.len() + 2].push((t, count));
        }
        let mut samples = samples.into_iter();
        for bound in LATENCY_BUCKETS
            .iter()
            .map(|b| b.to_string())
            .chain(["+Inf".to_owned()])
        {
            let labels = with(
                &base,
                &[
                    (METRIC_NAME, "http_request_duration_seconds_bucket"),
                    ("le", &bound),
                ],
            );
            out.push((labels, samples.next().unwrap_or_default()));
        }
        for suffix in ["sum", "count"] {
            let name = format!("http_request_duration_seconds_{suffix}");
            out.push((
                with(&base, &[(METRIC_NAME, &name)]),
                samples.next().unwrap_or_default(),
            ));
        }
        out.push((
            with(&base, &[(METRIC_NAME, "up")]),
            timestamps.iter().map(|t| (*t, 1.0)).collect(),
        ));
    }

    fn node_series(&self, timestamps: &[i64], out: &mut Vec<(Labels, Vec<Sample>)>) {
        let instance = format!("node-{}:9100", self.instance);
        let base = [("job", "node"), ("instance", instance.as_str())];
        for cpu in ["0", "1"] {
            for (mode, share) in [("user", 0.35), ("system", 0.1), ("idle", 0.0)] {
                let labels = with(
                    &base,
                    &[
                        (METRIC_NAME, "node_cpu_seconds_total"),
                        ("cpu", cpu),
                        ("mode", mode),
                    ],
                );
                let busy = |t: i64| (self.load(t) / 120.0).min(0.95);
                let rate = |t: i64| {
                    if mode == "idle" {
                        1.0 - busy(t) * 0.45
                    } else {
                        busy(t) * share
                    }
                };
                out.push((labels, self.counter(timestamps, i64::MAX, rate)));
            }
        }
        let total = 8.0 * 1024.0 * 1024.0 * 1024.0;
        let seed = self.seed(3);
        let available = timestamps
            .iter()
            .map(|&t| {
                (
                    t,
                    (total
                        * (0.55 - 0.2 * (self.load(t) / 100.0) + 0.02 * noise(seed, t / 15_000)))
                    .round(),
                )
            })
            .collect();
        out.push((
            with(&base, &[(METRIC_NAME, "node_memory_MemAvailable_bytes")]),
            available,
        ));
        out.push((
            with(&base, &[(METRIC_NAME, "node_memory_MemTotal_bytes")]),
            timestamps.iter().map(|t| (*t, total)).collect(),
        ));
        out.push((
            with(&base, &[(METRIC_NAME, "up")]),
            timestamps.iter().map(|t| (*t, 1.0)).collect(),
        ));
    }

    /// A counter increasing at `rate(t)` per second, reset to zero at `restart`.
    fn counter(&self, timestamps: &[i64], restart: i64, rate: impl Fn(i64) -> f64) -> Vec<Sample> {
        let mut value = 1000.0 * (1 + self.seed(4) % 50) as f64;
        let mut last_t = self.start;
        timestamps
            .iter()
            .map(|&t| {
                if t >= restart && last_t < restart {
                    value = 0.0;
                }
                value += (rate(t) * (t - last_t) as f64 / 1000.0).round();
                last_t = t;
                (t, value)
            })
            .collect()
    }
}

fn with(base: &[(&str, &str)], extra: &[(&str, &str)]) -> Labels {
    let pairs: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
    Labels::from_pairs(&pairs)
}

/// SplitMix64: a tiny, well-distributed deterministic mixer.
pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Deterministic noise in [-1, 1) for a seed and a slot.
pub(crate) fn noise(seed: u64, slot: i64) -> f64 {
    let bits = splitmix(seed ^ slot as u64) >> 11;
    bits as f64 / (1u64 << 52) as f64 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> DemoShape {
        DemoShape::six_hours_until(1_700_000_000_000)
    }

    #[test]
    fn two_clusters_one_of_them_an_ha_pair() {
        let data = generate(shape());
        let sets: Vec<String> = data.iter().map(|r| r.external_labels.to_string()).collect();
        assert_eq!(
            sets,
            [
                r#"{cluster="eu1", replica="0"}"#,
                r#"{cluster="us1", replica="0"}"#,
                r#"{cluster="us1", replica="1"}"#
            ]
        );
        // The HA pair scrapes the same targets.
        let names = |r: &ReplicaData| {
            r.series
                .iter()
                .map(|(l, _)| l.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&data[1]), names(&data[2]));
        assert!(data[0].series.len() > 50);
    }

    #[test]
    fn samples_are_sorted_cover_six_hours_and_show_the_outage() {
        let shape = shape();
        let data = generate(shape);
        for replica in &data {
            for (labels, samples) in &replica.series {
                assert!(
                    samples.windows(2).all(|w| w[0].0 < w[1].0),
                    "{labels} unsorted"
                );
                assert!(samples.iter().all(|(_, v)| v.is_finite()), "{labels}");
                let first = samples.first().map_or(0, |s| s.0);
                assert!(
                    first - (shape.end - shape.span) < 15_000,
                    "{labels} starts late"
                );
            }
        }
        let per_series = |r: &ReplicaData| r.series[0].1.len();
        let full = (shape.span / shape.interval + 1) as usize;
        assert_eq!(per_series(&data[0]), full);
        assert_eq!(
            per_series(&data[1]),
            full - 80,
            "a 20 minute outage is 80 scrapes"
        );
    }

    #[test]
    fn histograms_are_cumulative_and_counters_reset_once() {
        let data = generate(shape());
        let find = |name: &str, le: Option<&str>| {
            data[0].series.iter().find(|(l, _)| {
                l.get(METRIC_NAME) == Some(name)
                    && l.get("instance") == Some("api-0:8080")
                    && l.get("le") == le
            })
        };
        let small = find("http_request_duration_seconds_bucket", Some("0.1")).map(|s| &s.1);
        let inf = find("http_request_duration_seconds_bucket", Some("+Inf")).map(|s| &s.1);
        let count = find("http_request_duration_seconds_count", None).map(|s| &s.1);
        let (Some(small), Some(inf), Some(count)) = (small, inf, count) else {
            panic!("missing histogram series")
        };
        assert!(small.iter().zip(inf).all(|(a, b)| a.1 <= b.1));
        assert_eq!(inf, count);
        let requests = data[0]
            .series
            .iter()
            .find(|(l, _)| l.get(METRIC_NAME) == Some("http_requests_total"));
        let resets = requests.map_or(0, |(_, s)| s.windows(2).filter(|w| w[1].1 < w[0].1).count());
        assert_eq!(resets, 1);
    }

    #[test]
    fn generation_is_deterministic() {
        let a = generate(shape());
        let b = generate(shape());
        assert_eq!(a[2].series[5].1, b[2].series[5].1);
    }
}
