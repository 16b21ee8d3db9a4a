//! Querier benchmark: what fan-out, replica deduplication and gRPC cost, each against a
//! baseline measured in the same run.
//!
//! Run with `cargo bench -p gauntlet --bench querier`. It prints one table:
//! - dedup overhead: the same series held by 3 HA replicas (deduplicated) vs by 1 store, with
//!   the stores in process and, as deployed, behind the gRPC StoreAPI on loopback;
//! - fan-out: the series spread over 10 stores vs all in 1 store;
//! - transport: one store reached over the gRPC StoreAPI on loopback vs called in process.
//!
//! Each row runs the same PromQL range query through the baseline and the compared setup in
//! turn, several times: the medians of both, and the median of the runs' ratios (so that a
//! machine whose speed drifts affects both sides alike).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gauntlet::grpc::{self, GrpcStore};
use gauntlet::promql::{Engine, EngineOptions};
use gauntlet::query::endpoints::EndpointSet;
use gauntlet::query::proxy::{ProxyLimits, ProxyStore};
use gauntlet::query::queryable::{QueryOptions, StoreQueryable};
use gauntlet::query::store::Store;
use gauntlet::shutdown;
use gauntlet::store::memory::MemoryStore;
use gauntlet_tsdb::Labels;

const SERIES: usize = 2_000;
const HOURS: i64 = 2;
const INTERVAL_MS: i64 = 15_000;
const RUNS: usize = 11;
const QUERIES: [&str; 3] = [
    "sum by (job) (rate(http_requests_total[5m]))",
    "max_over_time(http_requests_total[10m])",
    "http_requests_total",
];

/// Series `first..last` of the data set, scraped with `offset_ms`.
fn series(first: usize, last: usize, offset_ms: i64) -> Vec<(Labels, Vec<(i64, f64)>)> {
    (first..last)
        .map(|i| {
            let instance = format!("host-{i}:9100");
            let job = format!("job-{}", i % 10);
            let labels = Labels::from_pairs(&[
                ("__name__", "http_requests_total"),
                ("instance", instance.as_str()),
                ("job", job.as_str()),
            ]);
            let samples = (0..HOURS * 3_600_000 / INTERVAL_MS)
                .map(|n| (n * INTERVAL_MS + offset_ms, (n * (i as i64 % 7 + 1)) as f64))
                .collect();
            (labels, samples)
        })
        .collect()
}

fn store(replica: &str, data: Vec<(Labels, Vec<(i64, f64)>)>) -> Arc<dyn Store> {
    let external = Labels::from_pairs(&[("cluster", "bench"), ("replica", replica)]);
    Arc::new(MemoryStore::from_samples(external, "sidecar", data).expect("valid bench data"))
}

/// `store` served over the gRPC StoreAPI on a loopback port until `stopped`, and a client of it.
async fn served(store: Arc<dyn Store>, stopped: shutdown::Shutdown) -> (String, Arc<dyn Store>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback listener");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(grpc::serve(listener, store, stopped));
    let remote = GrpcStore::connect_lazy(&address).expect("endpoint");
    (address, Arc::new(remote))
}

async fn proxy(stores: Vec<(String, Arc<dyn Store>)>) -> Arc<ProxyStore> {
    let endpoints = Arc::new(EndpointSet::new(Vec::new(), Vec::new()));
    for (name, store) in stores {
        endpoints.add_local(&name, store);
    }
    endpoints.refresh().await;
    Arc::new(ProxyStore::new(endpoints, ProxyLimits::default()))
}

/// Wall time of one range query over the whole data set through `proxy`.
async fn run_query(proxy: &Arc<ProxyStore>, query: &str) -> Duration {
    let engine = Engine::new(EngineOptions::default());
    let options = QueryOptions {
        dedup: true,
        replica_labels: vec!["replica".into()],
        partial_response: false,
    };
    let queryable = StoreQueryable::new(proxy.clone(), options);
    let started = Instant::now();
    let result = engine
        .range_query(&queryable, query, 600_000, HOURS * 3_600_000, 60_000)
        .await;
    let elapsed = started.elapsed();
    if let Err(error) = result {
        panic!("{query}: {error}");
    }
    elapsed
}

/// Runs the query through `base` and `measured` in turn, `RUNS` times, so that both see the
/// same machine: the median of each, and the median of the runs' ratios.
async fn compare(
    base: &Arc<ProxyStore>,
    measured: &Arc<ProxyStore>,
    query: &str,
) -> (Duration, Duration, f64) {
    let (mut bases, mut times, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let b = run_query(base, query).await;
        let m = run_query(measured, query).await;
        ratios.push(m.as_secs_f64() / b.as_secs_f64());
        bases.push(b);
        times.push(m);
    }
    bases.sort();
    times.sort();
    ratios.sort_by(f64::total_cmp);
    (bases[RUNS / 2], times[RUNS / 2], ratios[RUNS / 2])
}

fn main() {
    // As `gauntlet query` does before it starts its threads.
    gauntlet::allocator::tune_for_queries();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run());
}

async fn run() {
    eprintln!("building {SERIES} series x {HOURS}h at 15s in 1, 3 and 10 stores ...");
    let one = proxy(vec![("single".into(), store("0", series(0, SERIES, 0)))]).await;
    let replicas = proxy(
        (0..3)
            .map(|r| {
                (
                    format!("replica-{r}"),
                    store(&r.to_string(), series(0, SERIES, r * 1_000)),
                )
            })
            .collect(),
    )
    .await;
    let spread = proxy(
        (0..10)
            .map(|s| {
                let part = series(s * SERIES / 10, (s + 1) * SERIES / 10, 0);
                (format!("shard-{s}"), store("0", part))
            })
            .collect(),
    )
    .await;
    let (_stop, stopped) = shutdown::channel();
    let over_grpc = proxy(vec![
        served(store("0", series(0, SERIES, 0)), stopped.clone()).await,
    ])
    .await;
    let mut remote_replicas = Vec::new();
    for r in 0..3 {
        let replica = store(&r.to_string(), series(0, SERIES, r * 1_000));
        remote_replicas.push(served(replica, stopped.clone()).await);
    }
    let replicas_over_grpc = proxy(remote_replicas).await;

    println!(
        "{:<48} {:>32} {:>10} {:>10} {:>7}",
        "query", "comparison", "base ms", "ms", "ratio"
    );
    for query in QUERIES {
        for (name, base, proxy) in [
            ("3 HA replicas, dedup vs 1 store", &one, &replicas),
            (
                "over gRPC: 3 HA replicas vs 1 store",
                &over_grpc,
                &replicas_over_grpc,
            ),
            ("10 stores vs 1 store", &one, &spread),
            ("gRPC StoreAPI vs in-process", &one, &over_grpc),
        ] {
            let (base, measured, ratio) = compare(base, proxy, query).await;
            println!(
                "{:<48} {:>32} {:>10.1} {:>10.1} {:>7.2}",
                query,
                name,
                base.as_secs_f64() * 1000.0,
                measured.as_secs_f64() * 1000.0,
                ratio
            );
        }
    }
}
