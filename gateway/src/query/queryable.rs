//! [`StoreQueryable`]: the engine's window onto the stores. Each selector of a query becomes
//! one fan-out through the [`ProxyStore`]; the answers are deduplicated across replicas and
//! handed to the engine as compressed chunks (single series) or merged samples (replicas).
//!
//! One instance serves one query: it carries that query's dedup and partial-response choices
//! and collects per-store statistics for the response.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gauntlet_proto::thanos::chunk::Encoding;
use gauntlet_proto::thanos::{
    AggrChunk, Func, Grouping, PartialResponseStrategy, QueryHints, Range, SeriesRequest,
};
use gauntlet_tsdb::histogram_chunk::decode_histogram_chunk;
use gauntlet_tsdb::{Labels, is_stale_nan, stale_nan};

use super::dedup::{ReplicaChunks, is_counter_function};
use super::deferred::{Deferral, DeferredChecks};
use super::matchers::matcher_to_proto;
use super::proxy::{ProxyStore, ReplicaGroup, StoreStats};
use super::store::StoreError;
use crate::promql::{
    Chunk, Point, Queryable, Selection, SeriesData, SeriesSet, StorageError, StoredSeries,
};

/// Per-query choices, from the request or the querier's flags.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// Merge series that differ only in replica labels.
    pub dedup: bool,
    /// Labels that tell replicas apart (`--query.replica-label`, `replicaLabels[]`).
    pub replica_labels: Vec<String>,
    /// Turn failing stores into warnings instead of failing the query.
    pub partial_response: bool,
}

/// The stores, seen by one query.
pub struct StoreQueryable {
    proxy: Arc<ProxyStore>,
    options: QueryOptions,
    stats: Mutex<Vec<StoreStats>>,
    /// With partial response: set when a chunk failed a check deferred to the engine's
    /// decode (`None`: no checks are deferred under partial response).
    late_failure: Option<Arc<AtomicBool>>,
}

impl StoreQueryable {
    pub fn new(proxy: Arc<ProxyStore>, options: QueryOptions) -> Self {
        Self {
            proxy,
            options,
            stats: Mutex::new(Vec::new()),
            late_failure: None,
        }
    }

    /// Lets stores leave chunk body checks to the engine's decode under partial response
    /// too. The caller promises to run the query again through [`Self::checked_up_front`]
    /// when it fails and [`Self::late_check_failed`] says why: only an up-front check can
    /// turn a store's bad answer into a warning.
    #[must_use]
    pub fn retrying_late_checks(mut self) -> Self {
        self.late_failure = Some(Arc::new(AtomicBool::new(false)));
        self
    }

    /// Whether a deferred chunk check failed during a query with partial response.
    pub fn late_check_failed(&self) -> bool {
        self.late_failure
            .as_ref()
            .is_some_and(|failed| failed.load(Ordering::Relaxed))
    }

    /// The same stores and options, with every answer checked when it arrives.
    pub fn checked_up_front(&self) -> Self {
        Self::new(self.proxy.clone(), self.options.clone())
    }

    /// The deferred checks for one selection, when stores may defer them.
    fn deferred_checks(&self) -> Option<Arc<DeferredChecks>> {
        if !self.options.partial_response {
            // A store's failure fails the query, early or late.
            return Some(Arc::new(DeferredChecks::default()));
        }
        let failed = self.late_failure.clone()?;
        Some(Arc::new(DeferredChecks::provisional(failed)))
    }

    /// How each store fared across every selector of the query so far.
    pub fn take_stats(&self) -> Vec<StoreStats> {
        self.stats
            .lock()
            .map(|mut stats| std::mem::take(&mut *stats))
            .unwrap_or_default()
    }

    /// The StoreAPI request for one selection, with the engine's hints passed on.
    pub fn series_request(&self, selection: &Selection) -> SeriesRequest {
        let hints = &selection.hints;
        let partial = self.options.partial_response;
        SeriesRequest {
            min_time: selection.start_ms,
            max_time: selection.end_ms,
            matchers: selection.matchers.iter().map(matcher_to_proto).collect(),
            partial_response_disabled: !partial,
            partial_response_strategy: if partial {
                PartialResponseStrategy::Warn as i32
            } else {
                PartialResponseStrategy::Abort as i32
            },
            step: hints.step_ms,
            range: hints.range_ms,
            query_hints: Some(QueryHints {
                step_millis: hints.step_ms,
                func: hints.func.as_ref().map(|name| Func { name: name.clone() }),
                grouping: (!hints.grouping.is_empty() || hints.by).then(|| Grouping {
                    by: hints.by,
                    labels: hints.grouping.clone(),
                }),
                range: (hints.range_ms > 0).then_some(Range {
                    millis: hints.range_ms,
                }),
            }),
            ..SeriesRequest::default()
        }
    }
}

#[async_trait]
impl Queryable for StoreQueryable {
    async fn select(&self, selection: &Selection) -> Result<SeriesSet, StorageError> {
        let request = self.series_request(selection);
        let partial = self.options.partial_response;
        let replica_labels: Vec<&str> = self
            .options
            .replica_labels
            .iter()
            .map(String::as_str)
            .collect();
        let failed = |error: StoreError| StorageError(error.to_string());
        let checks = self.deferred_checks();
        let (series, warnings, stats) = if self.options.dedup && !replica_labels.is_empty() {
            let select = self
                .proxy
                .select_replicas(&request, partial, &replica_labels);
            let fan_out = DeferredChecks::scope(checks.as_ref(), select)
                .await
                .map_err(failed)?;
            let counter = selection
                .hints
                .func
                .as_deref()
                .is_some_and(is_counter_function);
            let mut warnings = fan_out.warnings;
            let checks = checks.as_deref().filter(|checks| checks.any());
            let series = deduplicate(fan_out.groups, counter, selection, checks, &mut warnings)?;
            (series, warnings, fan_out.stats)
        } else {
            let select = self.proxy.select(&request, partial);
            let fan_out = DeferredChecks::scope(checks.as_ref(), select)
                .await
                .map_err(failed)?;
            let checks = checks.as_deref().filter(|checks| checks.any());
            let series = fan_out
                .series
                .into_iter()
                .map(|(labels, chunks)| {
                    let data = checked_series_data(checks, &labels, chunks, selection)?;
                    Ok(StoredSeries { labels, data })
                })
                .collect::<Result<_, StorageError>>()?;
            (series, fan_out.warnings, fan_out.stats)
        };
        if let Ok(mut all) = self.stats.lock() {
            all.extend(stats);
        }
        Ok(SeriesSet { series, warnings })
    }
}

/// Whether any chunk of the series holds native histograms.
fn has_histograms(chunks: &[AggrChunk]) -> bool {
    chunks.iter().any(|c| {
        c.raw
            .as_ref()
            .is_some_and(|raw| raw.r#type != Encoding::Xor as i32)
    })
}

/// The engine's view of one series: XOR chunks stay compressed (decoded lazily by the
/// engine); a series with native histogram chunks is decoded into points.
fn series_data(chunks: Vec<AggrChunk>, selection: &Selection) -> Result<SeriesData, StorageError> {
    if has_histograms(&chunks) {
        return decode_points(&chunks, selection).map(SeriesData::Points);
    }
    Ok(SeriesData::Chunks(xor_chunks(chunks)))
}

/// [`series_data`], with the bodies of chunks a store deferred (`checks`) checked as the
/// engine decodes them.
fn checked_series_data(
    checks: Option<&DeferredChecks>,
    labels: &Labels,
    chunks: Vec<AggrChunk>,
    selection: &Selection,
) -> Result<SeriesData, StorageError> {
    match checks {
        Some(checks) => match checks.series_data(labels, chunks)? {
            Deferral::Checked(data) => Ok(data),
            Deferral::Plain(chunks) => series_data(chunks, selection),
        },
        None => series_data(chunks, selection),
    }
}

/// The XOR chunks of a float series.
fn xor_chunks(chunks: Vec<AggrChunk>) -> Vec<Chunk> {
    chunks
        .into_iter()
        .filter_map(|chunk| {
            let raw = chunk.raw?;
            (raw.r#type == Encoding::Xor as i32).then_some(Chunk {
                min_time: chunk.min_time,
                max_time: chunk.max_time,
                data: raw.data,
            })
        })
        .collect()
}

/// Decodes every chunk of a series (floats and native histograms) within the selection, in time
/// order; where chunks overlap the first sample of a timestamp wins. A stale histogram becomes
/// a float stale marker, which is how the engine sees staleness.
fn decode_points(
    chunks: &[AggrChunk],
    selection: &Selection,
) -> Result<Arc<[Point]>, StorageError> {
    let (mint, maxt) = (selection.start_ms, selection.end_ms);
    let mut points: Vec<Point> = Vec::new();
    for chunk in chunks {
        let Some(raw) = &chunk.raw else { continue };
        if chunk.max_time < mint || chunk.min_time > maxt {
            continue;
        }
        let bad = |e: &dyn std::fmt::Display| StorageError(format!("decoding chunk: {e}"));
        match Encoding::try_from(raw.r#type) {
            Ok(Encoding::Xor) => {
                let mut samples = Vec::new();
                gauntlet_tsdb::chunkenc::decode_xor_into(&raw.data, mint, maxt, &mut samples)
                    .map_err(|e| bad(&e))?;
                points.extend(samples.into_iter().map(|(t, v)| Point { t, v, h: None }));
            }
            Ok(encoding @ (Encoding::Histogram | Encoding::FloatHistogram)) => {
                // Prometheus's chunk encoding bytes: 2 integer, 3 float histograms.
                let prometheus_encoding = if encoding == Encoding::Histogram {
                    2
                } else {
                    3
                };
                let decoded =
                    decode_histogram_chunk(prometheus_encoding, &raw.data).map_err(|e| bad(&e))?;
                points.extend(
                    decoded
                        .into_iter()
                        .filter(|(t, _)| (mint..=maxt).contains(t))
                        .map(|(t, h)| {
                            if is_stale_nan(h.sum) {
                                Point {
                                    t,
                                    v: stale_nan(),
                                    h: None,
                                }
                            } else {
                                Point {
                                    t,
                                    v: 0.0,
                                    h: Some(Arc::new(h)),
                                }
                            }
                        }),
                );
            }
            Err(_) => {
                return Err(StorageError(format!(
                    "chunk encoding {} is not supported",
                    raw.r#type
                )));
            }
        }
    }
    points.sort_by_key(|p| p.t);
    points.dedup_by_key(|p| p.t);
    Ok(Arc::from(points))
}

/// Merges each group of replicas into one series with the penalty algorithm, as the engine
/// reads it. Series without a twin keep their chunks undecoded.
fn deduplicate(
    groups: Vec<ReplicaGroup>,
    counter: bool,
    selection: &Selection,
    checks: Option<&DeferredChecks>,
    warnings: &mut Vec<String>,
) -> Result<Vec<StoredSeries>, StorageError> {
    let mut out = Vec::with_capacity(groups.len());
    for ReplicaGroup {
        labels,
        mut replicas,
    } in groups
    {
        if replicas.len() == 1 {
            let chunks = replicas.pop().unwrap_or_default();
            let data = checked_series_data(checks, &labels, chunks, selection)?;
            out.push(StoredSeries { labels, data });
            continue;
        }
        // The merge decodes replicas without checking: deferred chunks are checked here.
        if let Some(checks) = checks {
            for chunks in &replicas {
                checks.check_now(&labels, chunks)?;
            }
        }
        if replicas.iter().any(|chunks| has_histograms(chunks)) {
            // The penalty algorithm merges float samples; for native histograms the replica
            // with the most samples in range answers.
            let mut best: Option<Arc<[Point]>> = None;
            for chunks in &replicas {
                let points = decode_points(chunks, selection)?;
                if best.as_ref().is_none_or(|b| points.len() > b.len()) {
                    best = Some(points);
                }
            }
            let warning = "native histogram series from several replicas: the replica with the most samples was used";
            if !warnings.iter().any(|w| w == warning) {
                warnings.push(warning.to_owned());
            }
            out.push(StoredSeries {
                labels,
                data: SeriesData::Points(best.unwrap_or_else(|| Arc::from(Vec::new()))),
            });
            continue;
        }
        let replicas: Vec<Vec<Chunk>> = replicas.into_iter().map(xor_chunks).collect();
        let merged = ReplicaChunks::new(replicas, counter, selection.start_ms, selection.end_ms);
        out.push(StoredSeries {
            labels,
            data: SeriesData::Deferred(Arc::new(merged)),
        });
    }
    Ok(out)
}
