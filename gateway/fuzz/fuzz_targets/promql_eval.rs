//! Parse and evaluate arbitrary query text, instant and range, over a small fixed data set with
//! tight limits. Any panic, hang past the timeout or runaway allocation is a finding.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use gauntlet::promql::{Engine, EngineOptions, MemoryQueryable};
use gauntlet_tsdb::{Labels, Sample, stale_nan};
use libfuzzer_sys::fuzz_target;

fn data() -> &'static MemoryQueryable {
    static DATA: OnceLock<MemoryQueryable> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut store = MemoryQueryable::new();
        for (i, job) in ["api", "db", "web"].iter().enumerate() {
            for le in ["0.1", "1", "+Inf"] {
                let labels = Labels::from_pairs(&[("__name__", "h_bucket"), ("job", job), ("le", le)]);
                let samples: Vec<Sample> =
                    (0..60).map(|n| Sample { t: n * 15_000, v: (n * (i as i64 + 1)) as f64 }).collect();
                let _ = store.add_series(labels, &samples);
            }
            let labels = Labels::from_pairs(&[("__name__", "x"), ("job", job)]);
            let mut samples: Vec<Sample> =
                (0..60).map(|n| Sample { t: n * 15_000 + i as i64, v: (n % 7) as f64 - 3.0 }).collect();
            samples[30].v = stale_nan();
            samples[31].v = f64::NAN;
            samples[32].v = f64::INFINITY;
            let _ = store.add_series(labels, &samples);
        }
        store
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime")
    })
}

/// libFuzzer's panic hook aborts at once, even inside `catch_unwind`. The engine contains panics
/// of the third-party parser on purpose, so restore the default hook: any panic that escapes
/// the engine still fails the run, because the fuzz harness aborts on it.
fn restore_default_panic_hook() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| drop(std::panic::take_hook()));
}

fuzz_target!(|input: &[u8]| {
    restore_default_panic_hook();
    let Ok(query) = std::str::from_utf8(input) else { return };
    if query.len() > 4096 {
        return;
    }
    let engine = Engine::new(EngineOptions {
        timeout: Duration::from_secs(2),
        max_samples: 1_000_000,
        ..EngineOptions::default()
    });
    runtime().block_on(async {
        let _ = engine.instant_query(data(), query, 450_000).await;
        let _ = engine.range_query(data(), query, 0, 900_000, 15_000).await;
    });
});
