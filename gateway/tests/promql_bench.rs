//! A timing run of the engine on the reference workload (10k series × 2h at 15s): the queries
//! the engine is compared against Prometheus with. Ignored by default; run with
//! `cargo test --release -p gauntlet --test promql_bench -- --ignored --nocapture`.
//! Prints a table of instant and range (step 15s) timings, wall clock and on-CPU.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use gauntlet::promql::{Engine, MemoryQueryable, Value};
use gauntlet_tsdb::{Labels, Sample};

const SERIES: usize = 10_000;
const STEP_MS: i64 = 15_000;
const POINTS: usize = 480; // 2h at 15s

fn build() -> MemoryQueryable {
    let mut s = MemoryQueryable::new();
    let mut seed = 42u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for name in ["x_total", "y_total"] {
        for i in 0..SERIES {
            let job = format!("job{}", i % 10);
            let inst = format!("inst{i}");
            let l = Labels::from_pairs(&[("__name__", name), ("job", &job), ("instance", &inst)]);
            let mut v = 0.0;
            let samples: Vec<Sample> = (0..POINTS)
                .map(|k| {
                    v += (rnd() % 100) as f64;
                    Sample {
                        t: k as i64 * STEP_MS,
                        v,
                    }
                })
                .collect();
            s.add_series(l, &samples).unwrap();
        }
    }
    // Classic histogram: 1000 series of 10 buckets each.
    let les = [
        "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "10", "50", "+Inf",
    ];
    for i in 0..1000 {
        let inst = format!("inst{i}");
        for (b, le) in les.iter().enumerate() {
            let l = Labels::from_pairs(&[
                ("__name__", "h_bucket"),
                ("job", "api"),
                ("instance", &inst),
                ("le", le),
            ]);
            let samples: Vec<Sample> = (0..POINTS)
                .map(|k| Sample {
                    t: k as i64 * STEP_MS,
                    v: (k * (b + 1)) as f64,
                })
                .collect();
            s.add_series(l, &samples).unwrap();
        }
    }
    s
}

/// On-CPU time of the current thread in ns (from /proc; 0 where unavailable), so timings stay
/// meaningful on a busy machine.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}

#[tokio::test]
#[ignore = "timing run; use --release --ignored"]
async fn promql_bench() {
    let t0 = Instant::now();
    let store = build();
    println!("built {} series in {:?}", store.len(), t0.elapsed());
    let engine = Engine::default();
    let end = (POINTS as i64 - 1) * STEP_MS;
    let queries = [
        "sum by (job) (rate(x_total[5m]))",
        "histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))",
        "topk(5, x_total)",
        "x_total / y_total",
        "max_over_time(rate(x_total[5m])[30m:1m])",
        "count_over_time(x_total[1h])",
        "sum by (instance) (rate(x_total[5m]))",
    ];
    // Profiling aid: GAUNTLET_BENCH_REPEAT=instant:N or range:N repeats one kind N times,
    // GAUNTLET_BENCH_QUERY=text keeps only queries containing `text`.
    let filter = std::env::var("GAUNTLET_BENCH_QUERY").unwrap_or_default();
    if let Ok(spec) = std::env::var("GAUNTLET_BENCH_REPEAT") {
        let (kind, n) = spec.split_once(':').unwrap_or(("instant", "10"));
        let n: usize = n.parse().unwrap_or(10);
        for _ in 0..n {
            for q in queries.iter().filter(|q| q.contains(filter.as_str())) {
                if kind == "range" {
                    engine
                        .range_query(&store, q, 0, end, STEP_MS)
                        .await
                        .unwrap();
                } else {
                    engine.instant_query(&store, q, end).await.unwrap();
                }
            }
        }
        return;
    }
    println!(
        "{:<58} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "query", "inst ms", "inst cpu", "range ms", "range cpu", "series"
    );
    for q in queries {
        let t = Instant::now();
        let c = thread_cpu_ns();
        let r = engine.instant_query(&store, q, end).await.unwrap();
        let inst = t.elapsed();
        let inst_cpu = (thread_cpu_ns() - c) as f64 / 1e6;
        let t = Instant::now();
        let c = thread_cpu_ns();
        let rr = engine
            .range_query(&store, q, 0, end, STEP_MS)
            .await
            .unwrap();
        let range = t.elapsed();
        let range_cpu = (thread_cpu_ns() - c) as f64 / 1e6;
        let n = match (&r.value, &rr.value) {
            (Value::Vector(v), Value::Matrix(m)) => format!("{}/{}", v.len(), m.len()),
            _ => "?".into(),
        };
        println!(
            "{q:<58} {:>9.1} {inst_cpu:>9.1} {:>9.1} {range_cpu:>9.1} {n:>12}",
            inst.as_secs_f64() * 1e3,
            range.as_secs_f64() * 1e3
        );
    }
}
