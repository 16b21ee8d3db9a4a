//! [`MemoryStore`]: series held in memory as XOR chunks, served through the [`Store`] trait.
//!
//! It behaves like a sidecar in front of one Prometheus: every series carries the store's
//! external labels, `Info` announces them with the data's time range, and `Series` streams the
//! chunks that overlap the requested range, sorted by labels. It backs `gauntlet demo` and the
//! querier's tests; it never decodes a chunk to answer a request.

use std::collections::BTreeSet;

use async_trait::async_trait;
use gauntlet_proto::thanos::chunk::Encoding;
use gauntlet_proto::thanos::info::{InfoResponse, StoreInfo};
use gauntlet_proto::thanos::series_response::Result as Frame;
use gauntlet_proto::thanos::{
    AggrChunk, Chunk, LabelMatcher, LabelNamesRequest, LabelNamesResponse, LabelValuesRequest,
    LabelValuesResponse, Series, SeriesRequest, SeriesResponse, ZLabelSet,
};
use gauntlet_tsdb::chunkenc::{ChunkError, XorChunk};
use gauntlet_tsdb::labels::Labels;

use crate::query::endpoints::labels_to_proto;
use crate::query::matchers::compile_matchers;
use crate::query::store::{SeriesStream, Store, StoreError};

/// Samples per chunk, as Prometheus cuts them.
pub const SAMPLES_PER_CHUNK: usize = 120;

struct MemorySeries {
    labels: Labels,
    chunks: Vec<AggrChunk>,
}

/// An in-memory StoreAPI store.
pub struct MemoryStore {
    external_labels: Labels,
    component_type: String,
    /// Sorted by labels.
    series: Vec<MemorySeries>,
    min_time: i64,
    max_time: i64,
}

impl MemoryStore {
    /// A store holding `series` (samples sorted by time), each extended with
    /// `external_labels` (which win over a series' own label of the same name).
    pub fn from_samples(
        external_labels: Labels,
        component_type: &str,
        series: impl IntoIterator<Item = (Labels, Vec<(i64, f64)>)>,
    ) -> Result<Self, ChunkError> {
        let series = series.into_iter();
        // Every chunk's bytes go into one buffer that the chunks slice: answers then share one
        // reference count instead of touching one per chunk.
        let mut bytes = Vec::new();
        let mut pending = Vec::with_capacity(series.size_hint().0);
        let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
        for (labels, samples) in series {
            let mut builder = labels.builder();
            for label in external_labels.iter() {
                builder.set(&label.name, &label.value);
            }
            let mut spans = Vec::with_capacity(samples.len().div_ceil(SAMPLES_PER_CHUNK));
            for window in samples.chunks(SAMPLES_PER_CHUNK) {
                let mut chunk = XorChunk::new();
                for &(t, v) in window {
                    chunk.append(t, v)?;
                }
                let (first, last) = (window[0].0, window[window.len() - 1].0);
                min_time = min_time.min(first);
                max_time = max_time.max(last);
                let start = bytes.len();
                bytes.extend_from_slice(&chunk.into_bytes());
                spans.push((first, last, start..bytes.len()));
            }
            pending.push((builder.build(), spans));
        }
        bytes.shrink_to_fit();
        let bytes = bytes::Bytes::from(bytes);
        let mut stored: Vec<MemorySeries> = pending
            .into_iter()
            .map(|(labels, spans)| MemorySeries {
                labels,
                chunks: spans
                    .into_iter()
                    .map(|(first, last, span)| AggrChunk {
                        min_time: first,
                        max_time: last,
                        raw: Some(Chunk {
                            r#type: Encoding::Xor as i32,
                            data: bytes.slice(span),
                            hash: 0,
                        }),
                        ..AggrChunk::default()
                    })
                    .collect(),
            })
            .collect();
        stored.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(Self {
            external_labels,
            component_type: component_type.to_owned(),
            series: stored,
            min_time,
            max_time,
        })
    }

    /// Number of series held.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Series matching `matchers` with at least one chunk in `[min_time, max_time]`.
    fn matching(
        &self,
        matchers: &[LabelMatcher],
        min_time: i64,
        max_time: i64,
    ) -> Result<impl Iterator<Item = &MemorySeries>, StoreError> {
        let matchers = compile_matchers(matchers)?;
        Ok(self.series.iter().filter(move |series| {
            series
                .chunks
                .iter()
                .any(|c| c.max_time >= min_time && c.min_time <= max_time)
                && matchers.matches(&series.labels)
        }))
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn info(&self) -> Result<InfoResponse, StoreError> {
        let (min_time, max_time) = if self.series.is_empty() {
            (i64::MAX, i64::MIN)
        } else {
            (self.min_time, self.max_time)
        };
        Ok(InfoResponse {
            label_sets: vec![ZLabelSet {
                labels: labels_to_proto(&self.external_labels),
            }],
            component_type: self.component_type.clone(),
            store: Some(StoreInfo {
                min_time,
                max_time,
                supports_without_replica_labels: false,
                ..StoreInfo::default()
            }),
            ..InfoResponse::default()
        })
    }

    async fn series(&self, request: SeriesRequest) -> Result<SeriesStream, StoreError> {
        let (min_time, max_time) = (request.min_time, request.max_time);
        let frames: Vec<Result<SeriesResponse, StoreError>> = self
            .matching(&request.matchers, min_time, max_time)?
            .map(|series| {
                let chunks = if request.skip_chunks {
                    Vec::new()
                } else {
                    series
                        .chunks
                        .iter()
                        .filter(|c| c.max_time >= min_time && c.min_time <= max_time)
                        .cloned()
                        .collect()
                };
                Ok(SeriesResponse {
                    result: Some(Frame::Series(Series {
                        labels: labels_to_proto(&series.labels),
                        chunks,
                    })),
                })
            })
            .collect();
        Ok(Box::pin(futures::stream::iter(frames)))
    }

    async fn label_names(
        &self,
        request: LabelNamesRequest,
    ) -> Result<LabelNamesResponse, StoreError> {
        let mut names = BTreeSet::new();
        for series in self.matching(&request.matchers, request.start, request.end)? {
            names.extend(series.labels.iter().map(|l| l.name.clone()));
        }
        Ok(LabelNamesResponse {
            names: names.into_iter().collect(),
            ..Default::default()
        })
    }

    async fn label_values(
        &self,
        request: LabelValuesRequest,
    ) -> Result<LabelValuesResponse, StoreError> {
        let mut values = BTreeSet::new();
        for series in self.matching(&request.matchers, request.start, request.end)? {
            if let Some(value) = series.labels.get(&request.label) {
                values.insert(value.to_owned());
            }
        }
        Ok(LabelValuesResponse {
            values: values.into_iter().collect(),
            ..Default::default()
        })
    }
}
