//! The plugin benchmark behind `gauntlet plugin bench` (and `tests/e2e/plugin_bench.rs`):
//! host→guest call overhead, instantiation from the cached `InstancePre`, and samples per
//! second of series batches crossing the boundary as XOR chunks — through [`PluginStore`] and,
//! as the baseline measured in the same run, through a native in-process store serving the
//! very same series.
//!
//! The last rows are a PromQL range query (`sum(rate(bench[5m]))` over the whole data set)
//! evaluated through the querier's proxy over the plugin store and over the native store, with
//! full and with header-only chunk checks: three pairs of runs per `selects`, each pair the
//! plugin then the native store; medians of each, and the median of the pairs' ratios.
//!
//! It uses the `hostile` guest's `synthetic` behaviour (precomputed series) so that the
//! numbers measure the boundary, not the guest's encoder: each answer copies the precomputed
//! labels and chunk bytes into packed batches (`packed-series`), as a store holding encoded
//! chunks in memory would. It never touches the network.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use gauntlet_proto::thanos::info::InfoResponse;
use gauntlet_proto::thanos::{
    LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, Series,
    SeriesRequest, SeriesResponse, series_response,
};

use super::PluginError;
use super::engine::{HostConfig, HostServices, PluginHost};
use super::manifest::sha256_hex;
use super::reload::PluginSlot;
use crate::query::store::{SeriesStream, Store, StoreError};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The `hostile` component (`plugins/target/components/hostile.wasm`).
    pub component: PathBuf,
    /// Series in the synthetic data set.
    pub series: usize,
    /// Samples per series (cut into chunks of 120).
    pub samples_per_series: usize,
    /// Guest calls for the call-overhead figure.
    pub calls: usize,
    /// Instantiations for the instantiate figure.
    pub instantiations: usize,
    /// Full `Series` answers for the throughput figures.
    pub selects: usize,
    /// Compiled-component cache.
    pub cache_dir: Option<PathBuf>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            component: PathBuf::from("plugins/target/components/hostile.wasm"),
            series: 1000,
            samples_per_series: 1200,
            calls: 20_000,
            instantiations: 200,
            selects: 10,
            cache_dir: None,
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct BenchRow {
    /// What was measured.
    pub name: String,
    /// The figure.
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
    /// The same measured natively in the same run, when there is a native counterpart.
    pub baseline: Option<f64>,
    /// For figures measured in pairs (plugin, then native, over and over): the median of the
    /// pairs' ratios, which a machine whose speed drifts affects less than the ratio of the
    /// medians. Otherwise the ratio is `value / baseline`.
    pub paired_ratio: Option<f64>,
}

impl BenchRow {
    /// The ratio to the native baseline.
    pub fn ratio(&self) -> Option<f64> {
        self.paired_ratio.or(match self.baseline {
            Some(b) if b > 0.0 => Some(self.value / b),
            _ => None,
        })
    }
}

/// The benchmark's result; `Display` prints the table.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    /// Rows in order.
    pub rows: Vec<BenchRow>,
}

impl BenchReport {
    /// The row called `name`.
    pub fn row(&self, name: &str) -> Option<&BenchRow> {
        self.rows.iter().find(|r| r.name == name)
    }
}

fn human(value: f64, unit: &str) -> String {
    if unit != "/s" {
        return format!("{value:.1} {unit}");
    }
    let value = if value >= 1e9 {
        format!("{:.2} G", value / 1e9)
    } else if value >= 1e6 {
        format!("{:.2} M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.2} k", value / 1e3)
    } else {
        format!("{value:.2} ")
    };
    format!("{value}{unit}")
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| {:<58} | {:>14} | {:>15} | {:>7} |",
            "measurement", "plugin", "native baseline", "ratio"
        )?;
        writeln!(f, "|{:-<60}|{:->16}|{:->17}|{:->9}|", "", "", "", "")?;
        for row in &self.rows {
            let baseline = row.baseline.map_or("-".to_owned(), |b| human(b, row.unit));
            let ratio = row.ratio().map_or("-".to_owned(), |r| format!("{r:.2}"));
            writeln!(
                f,
                "| {:<58} | {:>14} | {:>15} | {:>7} |",
                row.name,
                human(row.value, row.unit),
                baseline,
                ratio
            )?;
        }
        Ok(())
    }
}

/// A native in-process store serving fixed series, the baseline.
#[derive(Debug, Clone)]
struct InMemoryStore {
    series: Arc<Vec<Series>>,
}

#[async_trait]
impl Store for InMemoryStore {
    async fn info(&self) -> Result<InfoResponse, StoreError> {
        Ok(InfoResponse::default())
    }

    async fn series(&self, _request: SeriesRequest) -> Result<SeriesStream, StoreError> {
        let series = self.series.clone();
        // Clone per request like a store producing fresh frames.
        let frames: Vec<Result<SeriesResponse, StoreError>> = series
            .iter()
            .cloned()
            .map(|s| {
                Ok(SeriesResponse {
                    result: Some(series_response::Result::Series(s)),
                })
            })
            .collect();
        Ok(Box::pin(futures::stream::iter(frames)))
    }

    async fn label_names(&self, _: LabelNamesRequest) -> Result<LabelNamesResponse, StoreError> {
        Ok(LabelNamesResponse::default())
    }

    async fn label_values(&self, _: LabelValuesRequest) -> Result<LabelValuesResponse, StoreError> {
        Ok(LabelValuesResponse::default())
    }
}

/// Samples in a series, from the chunk headers.
fn count_samples(series: &Series) -> usize {
    series
        .chunks
        .iter()
        .filter_map(|c| c.raw.as_ref())
        .map(|raw| match raw.data.get(..2) {
            Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
            _ => 0,
        })
        .sum()
}

/// Consumes one full answer; returns (series, samples).
async fn drain(store: &dyn Store) -> Result<(Vec<Series>, usize), StoreError> {
    let mut stream = store
        .series(SeriesRequest {
            min_time: i64::MIN,
            max_time: i64::MAX,
            ..SeriesRequest::default()
        })
        .await?;
    let mut out = Vec::new();
    let mut samples = 0;
    while let Some(frame) = stream.next().await {
        if let Some(series_response::Result::Series(s)) = frame?.result {
            samples += count_samples(&s);
            out.push(s);
        }
    }
    Ok((out, samples))
}

async fn throughput(store: &dyn Store, selects: usize) -> Result<f64, StoreError> {
    let mut samples = 0usize;
    let started = Instant::now();
    for _ in 0..selects {
        samples += drain(store).await?.1;
    }
    Ok(samples as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

fn manifest(
    dir: &std::path::Path,
    name: &str,
    component: &std::path::Path,
    limits: &str,
    config: &str,
) -> Result<PathBuf, PluginError> {
    let bytes = std::fs::read(component).map_err(|e| PluginError::Component {
        plugin: name.to_owned(),
        path: component.to_owned(),
        message: e.to_string(),
    })?;
    let text = format!(
        "name = \"{name}\"\nversion = \"0.1.0\"\nworld = \"store-backend\"\npath = \"{}\"\nsha256 = \"{}\"\n[limits]\nmemory = \"512MiB\"\ntime_per_call = \"30s\"\nbatch_bytes = \"256MiB\"\n{limits}\n[config]\n{config}\n",
        component.display(),
        sha256_hex(&bytes)
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)
        .map_err(|e| PluginError::Host(format!("{}: {e}", path.display())))?;
    Ok(path)
}

/// Runs the benchmark (needs a multi-thread tokio runtime).
pub async fn run(config: &BenchConfig) -> Result<BenchReport, PluginError> {
    let dir = std::env::temp_dir().join(format!("gauntlet-plugin-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| PluginError::Host(e.to_string()))?;
    let host = PluginHost::new(
        HostConfig {
            cache_dir: config.cache_dir.clone(),
            ..HostConfig::default()
        },
        HostServices::default(),
    )?;
    let mut report = BenchReport::default();

    // Call overhead and instantiation, on the calling (blocking) thread.
    let plain = manifest(
        &dir,
        "bench-calls",
        &config.component,
        "",
        "behaviour = \"none\"",
    )?;
    let slot = PluginSlot::load_async(&host, &plain).await?;
    let plugin = slot.current();
    let (calls, instantiations) = (config.calls.max(1), config.instantiations.max(1));
    let (call_ns, instantiate_us) =
        tokio::task::spawn_blocking(move || -> Result<(f64, f64), PluginError> {
            let mut instance = plugin.checkout()?;
            let started = Instant::now();
            for _ in 0..calls {
                let answer = plugin.call(&mut instance, "info", |store, exports| {
                    exports.world.gauntlet_plugin_store().call_info(store)
                })?;
                std::hint::black_box(answer.ok());
            }
            let call_ns = started.elapsed().as_nanos() as f64 / calls as f64;
            plugin.checkin(instance);
            let started = Instant::now();
            for _ in 0..instantiations {
                std::hint::black_box(plugin.instantiate_store()?);
            }
            let instantiate_us = started.elapsed().as_micros() as f64 / instantiations as f64;
            Ok((call_ns, instantiate_us))
        })
        .await
        .map_err(|e| PluginError::Host(e.to_string()))??;
    report.rows.push(BenchRow {
        name: "host→guest call (store.info), per call".to_owned(),
        value: call_ns,
        unit: "ns",
        baseline: None,
        paired_ratio: None,
    });
    report.rows.push(BenchRow {
        name: "instantiate from InstancePre + init, per instance".to_owned(),
        value: instantiate_us,
        unit: "µs",
        baseline: None,
        paired_ratio: None,
    });
    let store = slot.store();
    let started = Instant::now();
    for _ in 0..calls.min(2000) {
        store
            .info()
            .await
            .map_err(|e| PluginError::Host(e.to_string()))?;
    }
    let info_us = started.elapsed().as_micros() as f64 / calls.min(2000) as f64;
    let native_store = InMemoryStore {
        series: Arc::new(Vec::new()),
    };
    let started = Instant::now();
    for _ in 0..calls.min(2000) {
        std::hint::black_box(
            native_store
                .info()
                .await
                .map_err(|e| PluginError::Host(e.to_string()))?,
        );
    }
    let native_info_us = started.elapsed().as_micros() as f64 / calls.min(2000) as f64;
    report.rows.push(BenchRow {
        name: "Store::info through PluginStore, per call".to_owned(),
        value: info_us,
        unit: "µs",
        baseline: Some(native_info_us),
        paired_ratio: None,
    });

    // Throughput of series batches as XOR chunks, with full and header-only chunk checks.
    let mut promql_rows = Vec::new();
    for (name, limits) in [
        ("bench-series", ""),
        ("bench-series-header", "validate_chunks = \"header\""),
    ] {
        let synthetic = manifest(
            &dir,
            name,
            &config.component,
            limits,
            &format!(
                "behaviour = \"synthetic\"\nseries = \"{}\"\nsamples = \"{}\"",
                config.series, config.samples_per_series
            ),
        )?;
        let slot = PluginSlot::load_async(&host, &synthetic).await?;
        let plugin_store = slot.store();
        let to_host = |e: StoreError| PluginError::Host(e.to_string());
        // Warm up (and capture the data for the native store).
        let (series, samples) = drain(&plugin_store).await.map_err(to_host)?;
        let expected = config.series * config.samples_per_series;
        if samples != expected {
            return Err(PluginError::Host(format!(
                "synthetic data has {samples} samples, expected {expected}"
            )));
        }
        let native = InMemoryStore {
            series: Arc::new(series),
        };
        drain(&native).await.map_err(to_host)?;
        let plugin_rate = throughput(&plugin_store, config.selects.max(1))
            .await
            .map_err(to_host)?;
        let native_rate = throughput(&native, config.selects.max(1))
            .await
            .map_err(to_host)?;
        let checks = if limits.is_empty() { "full" } else { "header" };
        let span_ms = (config.samples_per_series.max(2) as i64 - 1) * 15_000;
        let (plugin_ms, native_ms, paired_ratio) = promql_range_ms(
            Arc::new(plugin_store.clone()),
            Arc::new(native.clone()),
            span_ms,
            config.selects.max(1) * PROMQL_RUNS_PER_SELECT,
        )
        .await?;
        promql_rows.push(BenchRow {
            name: format!(
                "PromQL sum(rate(bench[5m])), {} series, step 60s, {checks} chunk checks",
                config.series
            ),
            value: plugin_ms,
            unit: "ms",
            baseline: Some(native_ms),
            paired_ratio: Some(paired_ratio),
        });
        report.rows.push(BenchRow {
            name: format!(
                "Series, {}×{} samples, {checks} chunk checks, samples/s",
                config.series, config.samples_per_series
            ),
            value: plugin_rate,
            unit: "/s",
            baseline: Some(native_rate),
            paired_ratio: None,
        });
    }
    report.rows.extend(promql_rows);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

/// PromQL pairs run per `selects`: a query is short, and its ratio is the figure with a goal.
const PROMQL_RUNS_PER_SELECT: usize = 3;

/// Median milliseconds of a PromQL range query over `store` and over `baseline`, each behind
/// the querier's proxy, and the median of the runs' ratios. The two are queried in turn, so
/// that both see the same machine.
async fn promql_range_ms(
    store: Arc<dyn Store>,
    baseline: Arc<dyn Store>,
    span_ms: i64,
    runs: usize,
) -> Result<(f64, f64, f64), PluginError> {
    use crate::promql::{Engine, EngineOptions};
    use crate::query::endpoints::EndpointSet;
    use crate::query::proxy::{ProxyLimits, ProxyStore};
    use crate::query::queryable::{QueryOptions, StoreQueryable};

    let mut proxies = Vec::new();
    for store in [store, baseline] {
        let endpoints = Arc::new(EndpointSet::new(Vec::new(), Vec::new()));
        endpoints.add_local("bench", store);
        endpoints.refresh().await;
        proxies.push(Arc::new(ProxyStore::new(endpoints, ProxyLimits::default())));
    }
    let engine = Engine::new(EngineOptions::default());
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..runs.max(1) {
        for (proxy, times) in proxies.iter().zip(&mut times) {
            let queryable = StoreQueryable::new(proxy.clone(), QueryOptions::default());
            let started = Instant::now();
            engine
                .range_query(&queryable, "sum(rate(bench[5m]))", 300_000, span_ms, 60_000)
                .await
                .map_err(|e| PluginError::Host(format!("bench query: {e}")))?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let [mut measured, mut base] = times;
    let mut ratios: Vec<f64> = measured.iter().zip(&base).map(|(m, b)| m / b).collect();
    let median = |times: &mut Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    Ok((
        median(&mut measured),
        median(&mut base),
        median(&mut ratios),
    ))
}
