//! The plugin benchmark. The quick test checks that every figure is measured; the full run
//! prints the table (release build):
//!
//! ```sh
//! cargo test --release -p gauntlet-e2e --test plugin_bench -- --ignored --nocapture
//! ```

#[path = "plugin_common.rs"]
mod plugin_common;

use gauntlet::plugin::bench::{BenchConfig, run};
use plugin_common::{component, workspace};

fn config() -> BenchConfig {
    BenchConfig {
        component: component("hostile"),
        cache_dir: Some(workspace().join("target/plugin-cache")),
        ..BenchConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_figure_is_measured() {
    let report = run(&BenchConfig {
        series: 50,
        samples_per_series: 240,
        calls: 200,
        instantiations: 5,
        selects: 2,
        ..config()
    })
    .await
    .expect("bench");
    assert_eq!(report.rows.len(), 7, "{report}");
    assert!(report.rows.iter().all(|r| r.value > 0.0), "{report}");
    println!("{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --release -- --ignored --nocapture"]
async fn full_benchmark() {
    let report = run(&config()).await.expect("bench");
    println!("\n{report}");
}
