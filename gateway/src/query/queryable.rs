//! [`StoreQueryable`]: the engine's window onto the stores. Each selector of a query becomes
//! one fan-out through the [`ProxyStore`]; the answers are deduplicated across replicas and
//! handed to the engine as compressed chunks (single series) or merged samples (replicas).
//!
//! One instance serves one query: it carries that query's dedup and partial-response choices
//! and collects per-store statistics for the response.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gauntlet_proto::thanos::chunk::Encoding;
use gauntlet_proto::thanos::{
    AggrChunk, Func, Grouping, PartialResponseStrategy, QueryHints, Range, SeriesRequest,
};
use gauntlet_tsdb::{Labels, Sample};

use super::dedup::{dedup_chunks, is_counter_function};
use super::matchers::matcher_to_proto;
use super::proxy::{ProxyStore, StoreStats};
use crate::promql::{
    Chunk, Queryable, Selection, SeriesData, SeriesSet, StorageError, StoredSeries,
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
}

impl StoreQueryable {
    pub fn new(proxy: Arc<ProxyStore>, options: QueryOptions) -> Self {
        Self {
            proxy,
            options,
            stats: Mutex::new(Vec::new()),
        }
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
        let fan_out = self
            .proxy
            .select(&request, self.options.partial_response)
            .await
            .map_err(|error| StorageError(error.to_string()))?;
        if let Ok(mut stats) = self.stats.lock() {
            stats.extend(fan_out.stats);
        }
        let mut warnings = fan_out.warnings;
        let replica_labels: Vec<&str> = self
            .options
            .replica_labels
            .iter()
            .map(String::as_str)
            .collect();
        let series = if self.options.dedup && !replica_labels.is_empty() {
            let counter = selection
                .hints
                .func
                .as_deref()
                .is_some_and(is_counter_function);
            deduplicate(
                fan_out.series,
                &replica_labels,
                counter,
                selection,
                &mut warnings,
            )?
        } else {
            fan_out
                .series
                .into_iter()
                .map(|(labels, chunks)| StoredSeries {
                    labels,
                    data: SeriesData::Chunks(xor_chunks(chunks, &mut warnings)),
                })
                .collect()
        };
        Ok(SeriesSet { series, warnings })
    }
}

/// Keeps the XOR chunks of a series; other encodings (native histograms) are dropped with a
/// warning, since the engine evaluates float samples only.
fn xor_chunks(chunks: Vec<AggrChunk>, warnings: &mut Vec<String>) -> Vec<Chunk> {
    let mut kept = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        match chunk.raw {
            Some(raw) if raw.r#type == Encoding::Xor as i32 => {
                kept.push(Chunk {
                    min_time: chunk.min_time,
                    max_time: chunk.max_time,
                    data: raw.data,
                });
            }
            Some(_) => {
                let warning = "native histogram chunks are not supported yet; they were skipped";
                if !warnings.iter().any(|w| w == warning) {
                    warnings.push(warning.to_owned());
                }
            }
            None => {}
        }
    }
    kept
}

/// Removes replica labels and merges each group of replicas into one series with the penalty
/// algorithm. Series without a twin keep their chunks undecoded.
fn deduplicate(
    series: Vec<(Labels, Vec<AggrChunk>)>,
    replica_labels: &[&str],
    counter: bool,
    selection: &Selection,
    warnings: &mut Vec<String>,
) -> Result<Vec<StoredSeries>, StorageError> {
    let mut stripped: Vec<(Labels, Vec<AggrChunk>)> = series
        .into_iter()
        .map(|(labels, chunks)| (labels.without(replica_labels), chunks))
        .collect();
    stripped.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(stripped.len());
    let mut rest = stripped.as_mut_slice();
    while let Some(first) = rest.first() {
        let group_len = rest
            .iter()
            .take_while(|(labels, _)| *labels == first.0)
            .count();
        let (group, tail) = rest.split_at_mut(group_len);
        rest = tail;
        let labels = group[0].0.clone();
        if let [(_, chunks)] = group {
            let chunks = xor_chunks(std::mem::take(chunks), warnings);
            out.push(StoredSeries {
                labels,
                data: SeriesData::Chunks(chunks),
            });
            continue;
        }
        let replicas: Vec<Vec<Chunk>> = group
            .iter_mut()
            .map(|(_, chunks)| xor_chunks(std::mem::take(chunks), warnings))
            .collect();
        let replicas: Vec<&[Chunk]> = replicas.iter().map(Vec::as_slice).collect();
        let merged: Arc<[Sample]> =
            dedup_chunks(&replicas, counter, selection.start_ms, selection.end_ms)
                .map_err(StorageError)?
                .into_iter()
                .map(|(t, v)| Sample { t, v })
                .collect();
        out.push(StoredSeries {
            labels,
            data: SeriesData::Samples(merged),
        });
    }
    Ok(out)
}
