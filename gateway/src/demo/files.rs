//! The demo's fourth store: an online shop's data warehouse that exports its business and batch
//! job metrics as files, served by the example store plugin (`plugins/file-store`).
//!
//! Unlike the three simulated Prometheus servers, this system is not scraped: once a minute it
//! appends to CSV and JSON Lines files under the bucket prefix [`PREFIX`], which the plugin
//! reads through its `bucket` import. Six hours at one minute, deterministic for a given end
//! time:
//!
//! - `shop_orders_total.csv` (the file name is the metric name): orders by `region` and
//!   `channel`, following each region's local time of day;
//! - `payments.csv` (a `__name__` column): `shop_payments_total` by `provider` and `status`,
//!   with a card provider incident two hours before the end, and
//!   `shop_payment_amount_euros_total` by `provider` (no `status`: an empty cell);
//! - `batch_jobs.jsonl` (one series a line, `samples` arrays): the warehouse's ETL jobs,
//!   Pushgateway-style (`batch_job_last_success_timestamp_seconds`, `batch_job_duration_seconds`,
//!   `batch_job_records_processed_total`, `batch_job_failures_total` by `batch_job`), one of whose
//!   runs failed.
//!
//! Its external labels ([`EXTERNAL_LABELS`]) tell it apart from the Prometheus servers.

use std::fmt::Write as _;

use super::data::{noise, splitmix};

/// The bucket prefix the files are written under and the plugin is scoped to.
pub const PREFIX: &str = "warehouse";
/// The external labels the plugin adds to every series.
pub const EXTERNAL_LABELS: [(&str, &str); 2] =
    [("environment", "production"), ("source", "warehouse")];
/// Export interval (ms): coarser than the Prometheus scrapes.
pub const INTERVAL_MS: i64 = 60_000;
/// How far back the export goes (ms).
pub const SPAN_MS: i64 = 6 * 3_600_000;
/// A query that shows the warehouse's data, for the start-up message and the README.
pub const EXAMPLE_QUERY: &str = "sum by (region) (rate(shop_orders_total[5m]))";

/// Regions: name, UTC offset (hours) and orders per minute at the evening peak.
const REGIONS: [(&str, f64, f64); 3] = [
    ("eu-west", 1.0, 42.0),
    ("us-east", -5.0, 57.0),
    ("ap-southeast", 8.0, 26.0),
];
/// Ordering channels and their share of the orders.
const CHANNELS: [(&str, f64); 2] = [("web", 0.58), ("app", 0.42)];
/// Payment providers: share of the orders, usual failure ratio, mean amount (EUR).
const PROVIDERS: [(&str, f64, f64, f64); 3] = [
    ("card", 0.61, 0.028, 48.0),
    ("paypal", 0.29, 0.014, 41.5),
    ("invoice", 0.10, 0.046, 96.0),
];
/// The card provider's incident, relative to the end (ms): from, to, failure ratio.
const CARD_INCIDENT: (i64, i64, f64) = (-2 * 3_600_000 - 25 * 60_000, -2 * 3_600_000, 0.31);

/// One batch job: name, period and offset of its runs (ms), typical duration (s).
struct BatchJob {
    name: &'static str,
    period: i64,
    offset: i64,
    duration: f64,
}

const BATCH_JOBS: [BatchJob; 3] = [
    BatchJob {
        name: "orders-etl",
        period: 15 * 60_000,
        offset: 2 * 60_000,
        duration: 48.0,
    },
    BatchJob {
        name: "invoice-export",
        period: 3_600_000,
        offset: 5 * 60_000,
        duration: 210.0,
    },
    BatchJob {
        name: "inventory-sync",
        period: 30 * 60_000,
        offset: 11 * 60_000,
        duration: 95.0,
    },
];
/// The run of `invoice-export` that fails: the one starting in this window relative to the end.
const FAILED_RUN: (i64, i64) = (-3 * 3_600_000 - 30 * 60_000, -2 * 3_600_000 - 30 * 60_000);

/// A data file: key under [`PREFIX`] and contents.
#[derive(Debug, Clone)]
pub struct DataFile {
    pub name: &'static str,
    pub contents: String,
}

/// The warehouse's files for the six hours up to `end`, and how many series they hold.
pub fn generate(end: i64) -> (Vec<DataFile>, usize) {
    let start = (end - SPAN_MS).div_euclid(INTERVAL_MS) * INTERVAL_MS + INTERVAL_MS;
    let timestamps: Vec<i64> = (0..)
        .map(|i| start + i * INTERVAL_MS)
        .take_while(|t| *t <= end)
        .collect();
    let orders = orders_csv(&timestamps);
    let payments = payments_csv(&timestamps, end);
    let jobs = batch_jobs_jsonl(&timestamps, end);
    let series = REGIONS.len() * CHANNELS.len()
        + PROVIDERS.len() * 2
        + PROVIDERS.len()
        + BATCH_JOBS.len() * BATCH_METRICS.len();
    (
        vec![
            DataFile {
                name: "shop_orders_total.csv",
                contents: orders,
            },
            DataFile {
                name: "payments.csv",
                contents: payments,
            },
            DataFile {
                name: "batch_jobs.jsonl",
                contents: jobs,
            },
        ],
        series,
    )
}

/// Orders per minute in `region` at `t`: low at night, highest in the local evening.
fn order_rate(region: usize, t: i64) -> f64 {
    let (_, offset, peak) = REGIONS[region];
    let local_hour = (t as f64 / 3_600_000.0 + offset).rem_euclid(24.0);
    let phase = (local_hour - 20.0) / 24.0 * std::f64::consts::TAU;
    let minute = t.div_euclid(60_000);
    peak * (0.58 + 0.42 * phase.cos()) * (1.0 + 0.12 * noise(splitmix(region as u64 + 11), minute))
}

/// Orders of every region in the minute before `t`.
fn total_orders(t: i64) -> f64 {
    (0..REGIONS.len()).map(|r| order_rate(r, t)).sum()
}

/// A counter's starting value: what the warehouse had counted before the window.
fn initial_count(seed: u64, scale: f64) -> f64 {
    (scale * (200.0 + (splitmix(seed) % 800) as f64)).round()
}

fn orders_csv(timestamps: &[i64]) -> String {
    let mut out = String::from("timestamp,region,channel,value\n");
    let mut counts: Vec<f64> = (0..REGIONS.len() * CHANNELS.len())
        .map(|i| initial_count(i as u64 + 100, 1000.0))
        .collect();
    for &t in timestamps {
        for (r, (region, ..)) in REGIONS.iter().enumerate() {
            for (c, (channel, share)) in CHANNELS.iter().enumerate() {
                // Counted as a fraction, exported whole: small rates still add up.
                let count = &mut counts[r * CHANNELS.len() + c];
                *count += order_rate(r, t) * share;
                let _ = writeln!(out, "{t},{region},{channel},{}", count.floor());
            }
        }
    }
    out
}

fn payments_csv(timestamps: &[i64], end: i64) -> String {
    let mut out = String::from("timestamp,__name__,provider,status,value\n");
    let mut succeeded: Vec<f64> = (0..PROVIDERS.len())
        .map(|p| initial_count(p as u64 + 200, 1000.0))
        .collect();
    let mut failed: Vec<f64> = (0..PROVIDERS.len())
        .map(|p| initial_count(p as u64 + 300, 30.0))
        .collect();
    let mut amount: Vec<f64> = succeeded.iter().map(|n| n * 52.0).collect();
    let incident = (end + CARD_INCIDENT.0)..(end + CARD_INCIDENT.1);
    for &t in timestamps {
        let orders = total_orders(t);
        let minute = t.div_euclid(60_000);
        for (p, (provider, share, failure, mean)) in PROVIDERS.iter().enumerate() {
            let attempts = orders * share;
            let ratio = if *provider == "card" && incident.contains(&t) {
                CARD_INCIDENT.2
            } else {
                failure * (1.0 + 0.3 * noise(splitmix(p as u64 + 21), minute))
            };
            // Counted as fractions, exported whole: small rates still add up.
            let fails = attempts * ratio;
            let ok = attempts - fails;
            failed[p] += fails;
            succeeded[p] += ok;
            let basket = mean * (1.0 + 0.15 * noise(splitmix(p as u64 + 31), minute));
            amount[p] += ok * basket;
            let _ = writeln!(
                out,
                "{t},shop_payments_total,{provider},succeeded,{}",
                succeeded[p].floor()
            );
            let _ = writeln!(
                out,
                "{t},shop_payments_total,{provider},failed,{}",
                failed[p].floor()
            );
            let _ = writeln!(
                out,
                "{t},shop_payment_amount_euros_total,{provider},,{:.2}",
                amount[p]
            );
        }
    }
    out
}

/// The metrics of every batch job, as the Pushgateway names them.
const BATCH_METRICS: [&str; 4] = [
    "batch_job_last_success_timestamp_seconds",
    "batch_job_duration_seconds",
    "batch_job_records_processed_total",
    "batch_job_failures_total",
];

/// One finished run of a batch job.
struct Run {
    finished: i64,
    succeeded: bool,
    duration: f64,
    records: f64,
}

fn runs(job: usize, from: i64, to: i64, end: i64) -> Vec<Run> {
    let spec = &BATCH_JOBS[job];
    let first = (from - spec.offset).div_euclid(spec.period) * spec.period + spec.offset;
    let failed_window = (end + FAILED_RUN.0)..(end + FAILED_RUN.1);
    (0..)
        .map(|i| first + i * spec.period)
        .take_while(|s| *s <= to)
        .map(|started| {
            let slot = started.div_euclid(60_000);
            let load = total_orders(started) / 125.0;
            let records = match spec.name {
                "orders-etl" => total_orders(started) * 15.0,
                "invoice-export" => total_orders(started) * 60.0 * PROVIDERS[2].1,
                _ => 11_800.0 + 900.0 * noise(splitmix(41), slot),
            }
            .round();
            let duration = (spec.duration
                * (0.6 + 0.5 * load)
                * (1.0 + 0.1 * noise(splitmix(job as u64 + 51), slot))
                * 100.0)
                .round()
                / 100.0;
            let succeeded = !(spec.name == "invoice-export" && failed_window.contains(&started));
            Run {
                // A failed run gives up after a third of its usual time.
                finished: started + (duration * if succeeded { 1000.0 } else { 333.0 }) as i64,
                succeeded,
                duration,
                records,
            }
        })
        .collect()
}

fn batch_jobs_jsonl(timestamps: &[i64], end: i64) -> String {
    let (Some(&first), Some(&last)) = (timestamps.first(), timestamps.last()) else {
        return String::new();
    };
    let mut out = String::new();
    for (j, spec) in BATCH_JOBS.iter().enumerate() {
        // Start a few runs early so that every series has a value from the first sample on.
        let runs = runs(j, first - 2 * spec.period, last, end);
        let mut series: [Vec<[serde_json::Value; 2]>; 4] = Default::default();
        let mut next = 0;
        let (mut last_success, mut duration) = (0.0, 0.0);
        let mut records = initial_count(j as u64 + 400, 5_000.0);
        let mut failures = (splitmix(j as u64 + 500) % 4) as f64;
        for &t in timestamps {
            while let Some(run) = runs.get(next).filter(|r| r.finished <= t) {
                duration = run.duration;
                if run.succeeded {
                    last_success = (run.finished / 1000) as f64;
                    records += run.records;
                } else {
                    failures += 1.0;
                }
                next += 1;
            }
            for (values, value) in
                series
                    .iter_mut()
                    .zip([last_success, duration, records, failures])
            {
                values.push([t.into(), value.into()]);
            }
        }
        for (metric, samples) in BATCH_METRICS.iter().zip(series) {
            let line = serde_json::json!({
                "labels": { "__name__": metric, "batch_job": spec.name },
                "samples": samples,
            });
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const END: i64 = 1_700_000_000_000;

    fn file<'a>(files: &'a [DataFile], name: &str) -> &'a str {
        files
            .iter()
            .find(|f| f.name == name)
            .map_or("", |f| f.contents.as_str())
    }

    /// Rows of a CSV file as (labels, timestamp, value), labels joined by `,`.
    fn csv_rows(text: &str) -> Vec<(String, i64, f64)> {
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
        let t = header.iter().position(|c| *c == "timestamp").expect("ts");
        let v = header.iter().position(|c| *c == "value").expect("value");
        lines
            .map(|line| {
                let fields: Vec<&str> = line.split(',').collect();
                assert_eq!(fields.len(), header.len(), "{line}");
                let labels = fields
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != t && *i != v)
                    .map(|(_, f)| *f)
                    .collect::<Vec<_>>()
                    .join(",");
                (
                    labels,
                    fields[t].parse().expect("timestamp"),
                    fields[v].parse().expect("value"),
                )
            })
            .collect()
    }

    fn by_series(rows: &[(String, i64, f64)]) -> std::collections::BTreeMap<&str, Vec<(i64, f64)>> {
        let mut out: std::collections::BTreeMap<&str, Vec<(i64, f64)>> = Default::default();
        for (labels, t, v) in rows {
            out.entry(labels.as_str()).or_default().push((*t, *v));
        }
        out
    }

    #[test]
    fn six_hours_at_one_minute_with_monotonic_counters() {
        let (files, series) = generate(END);
        let mut counted = 0;
        for name in ["shop_orders_total.csv", "payments.csv"] {
            let rows = csv_rows(file(&files, name));
            for (labels, samples) in by_series(&rows) {
                counted += 1;
                assert_eq!(samples.len(), 360, "{labels}");
                assert!(END - samples[samples.len() - 1].0 < INTERVAL_MS);
                assert!(samples[0].0 - (END - SPAN_MS) <= INTERVAL_MS);
                assert!(
                    samples
                        .windows(2)
                        .all(|w| w[1].0 - w[0].0 == INTERVAL_MS && w[1].1 >= w[0].1),
                    "{labels} is not a counter"
                );
                assert!(samples[359].1 > samples[0].1, "{labels} never grows");
            }
        }
        for line in file(&files, "batch_jobs.jsonl").lines() {
            let record: serde_json::Value = serde_json::from_str(line).expect("json line");
            assert_eq!(record["samples"].as_array().map(Vec::len), Some(360));
            counted += 1;
        }
        assert_eq!(counted, series);
    }

    #[test]
    fn the_card_incident_shows_in_failed_payments() {
        let (files, _) = generate(END);
        let rows = csv_rows(file(&files, "payments.csv"));
        let series = by_series(&rows);
        let failed = &series["shop_payments_total,card,failed"];
        let per_minute = |at: i64| {
            let i = failed.partition_point(|s| s.0 < at);
            failed[i].1 - failed[i - 1].1
        };
        let during = per_minute(END + CARD_INCIDENT.0 + 10 * 60_000);
        let before = per_minute(END + CARD_INCIDENT.0 - 30 * 60_000);
        assert!(during > 4.0 * before.max(1.0), "{during} vs {before}");
        // The amount has no status label: its cell is empty.
        assert!(series.contains_key("shop_payment_amount_euros_total,card,"));
    }

    #[test]
    fn one_invoice_export_run_fails() {
        let (files, _) = generate(END);
        let jobs = file(&files, "batch_jobs.jsonl");
        let failures = jobs
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
            .find(|r| {
                r["labels"]["__name__"] == "batch_job_failures_total"
                    && r["labels"]["batch_job"] == "invoice-export"
            })
            .expect("failures series");
        let values: Vec<f64> = failures["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .filter_map(|s| s[1].as_f64())
            .collect();
        assert_eq!(values[values.len() - 1] - values[0], 1.0);
    }

    #[test]
    fn generation_is_deterministic() {
        let (a, _) = generate(END);
        let (b, _) = generate(END);
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(a.contents, b.contents, "{}", a.name);
        }
    }
}
