//! [`ProxyStore`]: fan-out of one StoreAPI request to every endpoint that can hold matching
//! series, merged into one sorted answer.
//!
//! Endpoints are skipped when their external label sets cannot satisfy the matchers or their
//! time range does not overlap the request. Each selected store is asked concurrently; a store
//! that fails or exceeds the response timeout becomes a warning when partial responses are
//! allowed and fails the request otherwise — results are never silently incomplete. Answers
//! are bounded by the series and samples limits per store. The proxy is itself a [`Store`], so
//! queriers stack: a querier serves its proxy over gRPC to the next one.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::future::join_all;
use gauntlet_proto::thanos::info::{InfoResponse, StoreInfo};
use gauntlet_proto::thanos::series_response::Result as Frame;
use gauntlet_proto::thanos::{
    AggrChunk, Label as ProtoLabel, LabelMatcher, LabelNamesRequest, LabelNamesResponse,
    LabelValuesRequest, LabelValuesResponse, PartialResponseStrategy, Series, SeriesRequest,
    SeriesResponse, ZLabelSet,
};
use gauntlet_tsdb::labels::{Label, Labels};
use tokio::task::JoinSet;

use super::deferred::DeferredChecks;
use super::endpoints::{Endpoint, EndpointSet, labels_to_proto};
use super::matchers::{CompiledMatchers, compile_matchers};
use super::store::{SeriesStream, Store, StoreError};

/// Limits and timeouts applied to each store's answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyLimits {
    /// Longest a single store may take to answer; `None` leaves it to the query timeout.
    pub response_timeout: Option<Duration>,
    /// Most series one store may return for one request (0: unlimited).
    pub series_per_store: u64,
    /// Most samples one store may return for one request (0: unlimited).
    pub samples_per_store: u64,
}

/// How one store fared in one request; shown in query stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    pub name: String,
    pub duration: Duration,
    pub series: usize,
    pub chunks: usize,
    pub samples: u64,
    pub error: Option<String>,
}

/// A merged answer: series sorted by labels, each label set once, chunks in time order.
#[derive(Debug, Default)]
pub struct FanOut {
    pub series: Vec<(Labels, Vec<AggrChunk>)>,
    pub warnings: Vec<String>,
    pub stats: Vec<StoreStats>,
}

/// A merged answer with series grouped by their labels without the replica labels.
#[derive(Debug, Default)]
pub struct ReplicaFanOut {
    /// Sorted by labels, each label set once.
    pub groups: Vec<ReplicaGroup>,
    pub warnings: Vec<String>,
    pub stats: Vec<StoreStats>,
}

/// The series that differ only in their replica labels.
#[derive(Debug)]
pub struct ReplicaGroup {
    /// The labels without the replica labels.
    pub labels: Labels,
    /// Each replica's chunks in time order; replicas ordered by their replica label values.
    pub replicas: Vec<Vec<AggrChunk>>,
}

/// A series as a store sent it.
type WireSeries = (Vec<ProtoLabel>, Vec<AggrChunk>);

/// One store's answer (series and warnings) with its statistics.
type Answer = (
    StoreStats,
    Result<(Vec<WireSeries>, Vec<String>), StoreError>,
);

/// Every selected store's answer, before merging.
struct Gathered {
    series: Vec<WireSeries>,
    warnings: Vec<String>,
    stats: Vec<StoreStats>,
}

/// Fans requests out over an [`EndpointSet`].
pub struct ProxyStore {
    endpoints: Arc<EndpointSet>,
    limits: ProxyLimits,
}

impl ProxyStore {
    pub fn new(endpoints: Arc<EndpointSet>, limits: ProxyLimits) -> Self {
        Self { endpoints, limits }
    }

    pub fn endpoints(&self) -> &Arc<EndpointSet> {
        &self.endpoints
    }

    /// The endpoints that may hold series matching `matchers` in `[min_time, max_time]`.
    fn select_endpoints(
        &self,
        matchers: &CompiledMatchers,
        min_time: i64,
        max_time: i64,
    ) -> Vec<Arc<Endpoint>> {
        self.endpoints
            .endpoints()
            .into_iter()
            .filter(|endpoint| {
                endpoint.may_match(min_time, max_time, |set| matchers.may_match_label_set(set))
            })
            .collect()
    }

    /// Asks every selected store and merges the answers.
    pub async fn select(
        &self,
        request: &SeriesRequest,
        partial_response: bool,
    ) -> Result<FanOut, StoreError> {
        let gathered = self.gather(request, partial_response).await?;
        let series = gathered
            .series
            .into_iter()
            .map(|(labels, chunks)| (labels_from_wire(labels), chunks))
            .collect();
        Ok(FanOut {
            series: merge_series(series),
            warnings: gathered.warnings,
            stats: gathered.stats,
        })
    }

    /// Asks every selected store and groups the answers by their labels without
    /// `replica_labels`: the input of replica deduplication.
    pub async fn select_replicas(
        &self,
        request: &SeriesRequest,
        partial_response: bool,
        replica_labels: &[&str],
    ) -> Result<ReplicaFanOut, StoreError> {
        let gathered = self.gather(request, partial_response).await?;
        Ok(ReplicaFanOut {
            groups: group_replicas(gathered.series, replica_labels),
            warnings: gathered.warnings,
            stats: gathered.stats,
        })
    }

    /// Asks every selected store; the answers are kept as they came.
    async fn gather(
        &self,
        request: &SeriesRequest,
        partial_response: bool,
    ) -> Result<Gathered, StoreError> {
        let matchers = compile_matchers(&request.matchers)?;
        if request.min_time > request.max_time {
            return Err(StoreError::InvalidArgument(format!(
                "min_time {} is after max_time {}",
                request.min_time, request.max_time
            )));
        }
        let endpoints = self.select_endpoints(&matchers, request.min_time, request.max_time);
        let answers = self.ask_all(&endpoints, request).await;
        let mut gathered = Gathered {
            series: Vec::new(),
            warnings: Vec::new(),
            stats: Vec::new(),
        };
        for (stats, answer) in answers {
            match answer {
                Ok((series, warnings)) => {
                    gathered.series.extend(series);
                    gathered.warnings.extend(warnings);
                }
                Err(error) => {
                    let message = format!("store {}: {error}", stats.name);
                    if !partial_response {
                        return Err(with_context(error, &stats.name));
                    }
                    gathered.warnings.push(message);
                }
            }
            gathered.stats.push(stats);
        }
        Ok(gathered)
    }

    /// Every endpoint's answer, in the order of `endpoints`. Each store is asked in a task of
    /// its own, so stores served by this process (store gateway, plugins) answer in parallel;
    /// dropping the future stops them all.
    async fn ask_all(&self, endpoints: &[Arc<Endpoint>], request: &SeriesRequest) -> Vec<Answer> {
        let limits = self.limits;
        if let [endpoint] = endpoints {
            return vec![ask(limits, endpoint, request.clone()).await];
        }
        // A query's deferred chunk checks follow its stores into their tasks.
        let checks = DeferredChecks::current();
        let mut tasks = JoinSet::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            let endpoint = endpoint.clone();
            let request = request.clone();
            let checks = checks.clone();
            tasks.spawn(async move {
                let answer = ask(limits, &endpoint, request);
                (index, DeferredChecks::scope(checks.as_ref(), answer).await)
            });
        }
        let mut answers: Vec<Option<Answer>> = endpoints.iter().map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((index, answer)) = joined {
                answers[index] = Some(answer);
            }
        }
        answers
            .into_iter()
            .zip(endpoints)
            .map(|(answer, endpoint)| {
                answer.unwrap_or_else(|| {
                    let error = StoreError::Internal("the store's task failed".to_owned());
                    let stats = StoreStats {
                        name: endpoint.name().to_owned(),
                        duration: Duration::ZERO,
                        series: 0,
                        chunks: 0,
                        samples: 0,
                        error: Some(error.to_string()),
                    };
                    (stats, Err(error))
                })
            })
            .collect()
    }

    /// Fans a label-names or label-values request out and unions the sorted answers.
    async fn gather_strings<Ask, Answer>(
        &self,
        matchers: &[LabelMatcher],
        (start, end): (i64, i64),
        partial_response: bool,
        ask: Ask,
    ) -> Result<(Vec<String>, Vec<String>), StoreError>
    where
        Ask: Fn(Arc<dyn Store>) -> Answer,
        Answer: Future<Output = Result<(Vec<String>, Vec<String>), StoreError>>,
    {
        let matchers = compile_matchers(matchers)?;
        let endpoints = self.select_endpoints(&matchers, start, end);
        let answers = join_all(
            endpoints
                .iter()
                .map(|endpoint| ask(endpoint.store().clone())),
        )
        .await;
        let mut strings = BTreeSet::new();
        let mut warnings = Vec::new();
        for (endpoint, answer) in endpoints.iter().zip(answers) {
            match answer {
                Ok((found, store_warnings)) => {
                    strings.extend(found);
                    warnings.extend(store_warnings);
                }
                Err(error) if partial_response => {
                    warnings.push(format!("store {}: {error}", endpoint.name()));
                }
                Err(error) => return Err(with_context(error, endpoint.name())),
            }
        }
        Ok((strings.into_iter().collect(), warnings))
    }
}

/// One store's answer, collected, bounded and timed.
async fn ask(limits: ProxyLimits, endpoint: &Endpoint, request: SeriesRequest) -> Answer {
    let started = Instant::now();
    let collect = collect(limits, endpoint, request);
    let result = match limits.response_timeout {
        Some(timeout) => tokio::time::timeout(timeout, collect)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Timeout(format!(
                    "no complete answer within {timeout:?}"
                )))
            }),
        None => collect.await,
    };
    let mut stats = StoreStats {
        name: endpoint.name().to_owned(),
        duration: started.elapsed(),
        series: 0,
        chunks: 0,
        samples: 0,
        error: None,
    };
    let result = match result {
        Ok(collected) => {
            stats.series = collected.series.len();
            stats.chunks = collected.chunks;
            stats.samples = collected.samples;
            Ok((collected.series, collected.warnings))
        }
        Err(error) => {
            stats.error = Some(error.to_string());
            Err(error)
        }
    };
    (stats, result)
}

/// A store's whole answer, with its size.
struct Collected {
    series: Vec<WireSeries>,
    warnings: Vec<String>,
    chunks: usize,
    samples: u64,
}

async fn collect(
    limits: ProxyLimits,
    endpoint: &Endpoint,
    request: SeriesRequest,
) -> Result<Collected, StoreError> {
    let mut frames = endpoint.store().series(request).await?;
    let mut collected = Collected {
        series: Vec::new(),
        warnings: Vec::new(),
        chunks: 0,
        samples: 0,
    };
    while let Some(frame) = frames.next().await {
        match frame?.result {
            Some(Frame::Series(one)) => {
                collected.chunks += one.chunks.len();
                collected.samples += one.chunks.iter().map(chunk_samples).sum::<u64>();
                collected.series.push((one.labels, one.chunks));
                limits.check(collected.series.len() as u64, collected.samples)?;
            }
            Some(Frame::Warning(warning)) => {
                let warning = format!("store {}: {warning}", endpoint.name());
                collected.warnings.push(warning);
            }
            Some(Frame::Hints(_)) | None => {}
        }
    }
    Ok(collected)
}

impl ProxyLimits {
    fn check(&self, series: u64, samples: u64) -> Result<(), StoreError> {
        if self.series_per_store > 0 && series > self.series_per_store {
            return Err(StoreError::ResourceExhausted(format!(
                "more than {} series in one answer (--store.limits.request-series)",
                self.series_per_store
            )));
        }
        if self.samples_per_store > 0 && samples > self.samples_per_store {
            return Err(StoreError::ResourceExhausted(format!(
                "more than {} samples in one answer (--store.limits.request-samples)",
                self.samples_per_store
            )));
        }
        Ok(())
    }
}

fn with_context(error: StoreError, store: &str) -> StoreError {
    match error {
        StoreError::InvalidArgument(m) => {
            StoreError::InvalidArgument(format!("store {store}: {m}"))
        }
        StoreError::Unavailable(m) => StoreError::Unavailable(format!("store {store}: {m}")),
        StoreError::Timeout(m) => StoreError::Timeout(format!("store {store}: {m}")),
        StoreError::ResourceExhausted(m) => {
            StoreError::ResourceExhausted(format!("store {store}: {m}"))
        }
        StoreError::Canceled => StoreError::Canceled,
        StoreError::Internal(m) => StoreError::Internal(format!("store {store}: {m}")),
    }
}

/// Sample count of a chunk from its header (XOR chunks start with a big-endian u16 count).
fn chunk_samples(chunk: &AggrChunk) -> u64 {
    chunk
        .raw
        .as_ref()
        .and_then(|raw| raw.data.get(..2))
        .map_or(0, |header| {
            u64::from(u16::from_be_bytes([header[0], header[1]]))
        })
}

/// Labels as sent by a store, taken over without copying.
fn labels_from_wire(labels: Vec<ProtoLabel>) -> Labels {
    Labels::new(
        labels
            .into_iter()
            .map(|l| Label {
                name: l.name,
                value: l.value,
            })
            .collect(),
    )
}

/// Groups series by their labels without `replica_labels` (sorted by those labels, replicas by
/// their replica label values); series equal in all labels, from different stores, are merged
/// into one replica as [`merge_series`] does. Labels are compared where they arrived, with
/// the replica labels moved behind the others; only each group's label set is built.
fn group_replicas(series: Vec<WireSeries>, replica_labels: &[&str]) -> Vec<ReplicaGroup> {
    // (labels with the replica labels last, where the replica labels start, chunks)
    let mut keyed: Vec<(Vec<ProtoLabel>, usize, Vec<AggrChunk>)> = series
        .into_iter()
        .map(|(mut labels, chunks)| {
            normalize(&mut labels);
            let mut split = labels.len();
            let mut i = 0;
            while i < split {
                if replica_labels.contains(&labels[i].name.as_str()) {
                    labels[i..].rotate_left(1);
                    split -= 1;
                } else {
                    i += 1;
                }
            }
            (labels, split, chunks)
        })
        .collect();
    keyed.sort_by(|a, b| {
        compare_labels(&a.0[..a.1], &b.0[..b.1])
            .then_with(|| compare_labels(&a.0[a.1..], &b.0[b.1..]))
    });
    let mut groups: Vec<ReplicaGroup> = Vec::new();
    for i in 0..keyed.len() {
        let (done, rest) = keyed.split_at_mut(i);
        let (labels, split, chunks) = &mut rest[0];
        let chunks = std::mem::take(chunks);
        let same_group = groups
            .last()
            .is_some_and(|group| same_labels(&group.labels, &labels[..*split]));
        // From here on each entry keeps only its replica labels.
        let stripped = labels.drain(..*split);
        match groups.last_mut() {
            Some(group) if same_group => {
                drop(stripped);
                let same_replica = done.last().is_some_and(|previous| previous.0 == *labels);
                if same_replica && let Some(last) = group.replicas.last_mut() {
                    join_chunks(last, chunks);
                } else {
                    group.replicas.push(chunks);
                }
            }
            _ => {
                let stripped: Vec<ProtoLabel> = stripped.collect();
                groups.push(ReplicaGroup {
                    labels: labels_from_wire(stripped),
                    replicas: vec![chunks],
                });
            }
        }
    }
    groups
}

fn same_labels(set: &Labels, wire: &[ProtoLabel]) -> bool {
    set.len() == wire.len()
        && set
            .iter()
            .zip(wire)
            .all(|(a, b)| a.name == b.name && a.value == b.value)
}

/// Puts wire labels in the shape of a label set — sorted by name, names unique (the last
/// wins), no empty values — unless they already are, as stores send them.
fn normalize(labels: &mut Vec<ProtoLabel>) {
    let tidy = labels.windows(2).all(|w| w[0].name < w[1].name)
        && labels.iter().all(|l| !l.value.is_empty());
    if !tidy {
        let set = labels_from_wire(std::mem::take(labels));
        *labels = labels_to_proto(&set);
    }
}

/// Label lists in label-set order: label by label (name, then value), then by length.
fn compare_labels(a: &[ProtoLabel], b: &[ProtoLabel]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = x.name.cmp(&y.name).then_with(|| x.value.cmp(&y.value));
        if order.is_ne() {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// Sorts series by labels and merges equal label sets (from different stores) into one series
/// whose chunks are in time order, exact duplicates removed.
fn merge_series(mut all: Vec<(Labels, Vec<AggrChunk>)>) -> Vec<(Labels, Vec<AggrChunk>)> {
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged: Vec<(Labels, Vec<AggrChunk>)> = Vec::with_capacity(all.len());
    for (labels, chunks) in all {
        match merged.last_mut() {
            Some((last, last_chunks)) if *last == labels => join_chunks(last_chunks, chunks),
            _ => merged.push((labels, chunks)),
        }
    }
    merged
}

/// Adds the chunks of the same series from another store: time order, exact duplicates removed.
fn join_chunks(into: &mut Vec<AggrChunk>, chunks: Vec<AggrChunk>) {
    into.extend(chunks);
    into.sort_by_key(|c| (c.min_time, c.max_time));
    into.dedup();
}

#[async_trait]
impl Store for ProxyStore {
    async fn info(&self) -> Result<InfoResponse, StoreError> {
        let mut label_sets = BTreeSet::new();
        let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
        for endpoint in self.endpoints.endpoints() {
            if let Some(info) = endpoint.status().info {
                label_sets.extend(info.label_sets);
                min_time = min_time.min(info.min_time);
                max_time = max_time.max(info.max_time);
            }
        }
        if min_time > max_time {
            (min_time, max_time) = (i64::MAX, i64::MIN);
        }
        Ok(InfoResponse {
            label_sets: label_sets
                .iter()
                .map(|set| ZLabelSet {
                    labels: labels_to_proto(set),
                })
                .collect(),
            component_type: "query".to_owned(),
            store: Some(StoreInfo {
                min_time,
                max_time,
                ..StoreInfo::default()
            }),
            ..InfoResponse::default()
        })
    }

    async fn series(&self, request: SeriesRequest) -> Result<SeriesStream, StoreError> {
        let partial = !request.partial_response_disabled
            && request.partial_response_strategy != PartialResponseStrategy::Abort as i32;
        let fan_out = self.select(&request, partial).await?;
        let skip_chunks = request.skip_chunks;
        let warnings = fan_out.warnings.into_iter().map(Frame::Warning);
        let series = fan_out.series.into_iter().map(move |(labels, chunks)| {
            Frame::Series(Series {
                labels: labels_to_proto(&labels),
                chunks: if skip_chunks { Vec::new() } else { chunks },
            })
        });
        let frames = warnings.chain(series).map(|frame| {
            Ok(SeriesResponse {
                result: Some(frame),
            })
        });
        Ok(Box::pin(futures::stream::iter(frames)))
    }

    async fn label_names(
        &self,
        request: LabelNamesRequest,
    ) -> Result<LabelNamesResponse, StoreError> {
        let (names, warnings) = self
            .gather_strings(
                &request.matchers,
                (request.start, request.end),
                !request.partial_response_disabled,
                |store| {
                    let request = request.clone();
                    async move {
                        store
                            .label_names(request)
                            .await
                            .map(|r| (r.names, r.warnings))
                    }
                },
            )
            .await?;
        Ok(LabelNamesResponse {
            names,
            warnings,
            hints: None,
        })
    }

    async fn label_values(
        &self,
        request: LabelValuesRequest,
    ) -> Result<LabelValuesResponse, StoreError> {
        let (values, warnings) = self
            .gather_strings(
                &request.matchers,
                (request.start, request.end),
                !request.partial_response_disabled,
                |store| {
                    let request = request.clone();
                    async move {
                        store
                            .label_values(request)
                            .await
                            .map(|r| (r.values, r.warnings))
                    }
                },
            )
            .await?;
        Ok(LabelValuesResponse {
            values,
            warnings,
            hints: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(pairs: &[(&str, &str)], min_time: i64) -> WireSeries {
        let labels = pairs
            .iter()
            .map(|(name, value)| ProtoLabel {
                name: (*name).to_owned(),
                value: (*value).to_owned(),
            })
            .collect();
        let chunk = AggrChunk {
            min_time,
            max_time: min_time + 10,
            ..AggrChunk::default()
        };
        (labels, vec![chunk])
    }

    fn starts(replicas: &[Vec<AggrChunk>]) -> Vec<Vec<i64>> {
        replicas
            .iter()
            .map(|chunks| chunks.iter().map(|c| c.min_time).collect())
            .collect()
    }

    #[test]
    fn replicas_are_grouped_by_their_other_labels() {
        let series = vec![
            // Store answers as they come: each sorted, replicas interleaved across stores.
            wire(&[("__name__", "up"), ("job", "b"), ("replica", "1")], 100),
            wire(&[("__name__", "up"), ("job", "a"), ("replica", "1")], 200),
            wire(&[("__name__", "up"), ("job", "a"), ("replica", "0")], 300),
            // The same series as the one before, from another store (e.g. a store gateway).
            wire(&[("__name__", "up"), ("job", "a"), ("replica", "0")], 400),
            // Unsorted, with an empty label: treated as the label set it stands for.
            wire(
                &[
                    ("replica", "0"),
                    ("job", "b"),
                    ("x", ""),
                    ("__name__", "up"),
                ],
                500,
            ),
            // No replica label at all.
            wire(&[("__name__", "up"), ("job", "c")], 600),
            // Two replica labels.
            wire(
                &[
                    ("__name__", "up"),
                    ("job", "c"),
                    ("replica", "0"),
                    ("rule_replica", "1"),
                ],
                700,
            ),
        ];
        let groups = group_replicas(series, &["replica", "rule_replica"]);
        let got: Vec<(String, Vec<Vec<i64>>)> = groups
            .iter()
            .map(|g| (g.labels.to_string(), starts(&g.replicas)))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    r#"{__name__="up", job="a"}"#.to_owned(),
                    vec![vec![300, 400], vec![200]]
                ),
                (
                    r#"{__name__="up", job="b"}"#.to_owned(),
                    vec![vec![500], vec![100]]
                ),
                (
                    r#"{__name__="up", job="c"}"#.to_owned(),
                    vec![vec![600], vec![700]]
                ),
            ]
        );
    }
}
