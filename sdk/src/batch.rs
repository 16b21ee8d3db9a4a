//! Cutting a sorted list of series into batches for `series-stream.next-batch`, bounded by
//! series count and encoded bytes so that no batch approaches the host's limits. A batcher
//! never reorders series: the host requires label order across batches.
//!
//! Packing a batch for `packed-series.next-packed-batch` ([`pack`], [`PackedStream`]): the
//! same series with all their chunk bytes in one list, which crosses the boundary as one
//! allocation instead of one per chunk.

use std::collections::VecDeque;

use crate::store_backend::exports::gauntlet::plugin::packed_series::{
    self, PackedBatch, PackedChunk, PackedSeries,
};
use crate::store_backend::exports::gauntlet::plugin::store::{
    self, GuestSeriesStream, SeriesBatch, SeriesStreamBorrow,
};
use crate::{Chunk, PluginError, Series};

/// Default cap on series per batch.
pub const DEFAULT_MAX_SERIES: usize = 1024;
/// Default cap on chunk bytes per batch.
pub const DEFAULT_MAX_BYTES: usize = 4 << 20;

/// Hands out series in batches.
#[derive(Debug)]
pub struct Batcher {
    pending: VecDeque<Series>,
    max_series: usize,
    max_bytes: usize,
    /// Warnings not handed out yet (they go with the next batch).
    warnings: Vec<String>,
}

impl Batcher {
    /// A batcher over series already sorted by labels, with default caps.
    pub fn new(series: Vec<Series>) -> Self {
        Self::with_limits(series, DEFAULT_MAX_SERIES, DEFAULT_MAX_BYTES)
    }

    /// A batcher with explicit caps (each at least one series per batch).
    pub fn with_limits(series: Vec<Series>, max_series: usize, max_bytes: usize) -> Self {
        Self {
            pending: series.into(),
            max_series: max_series.max(1),
            max_bytes,
            warnings: Vec::new(),
        }
    }

    /// Warnings of the answer, handed out with the first batch of [`Batcher::next_answer`].
    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }

    /// What one `next-batch` returns: the next batch with the warnings not handed out yet
    /// (a batch of warnings only when no series are left), or `None` at the end.
    pub fn next_answer(&mut self) -> Option<(Vec<Series>, Vec<String>)> {
        let warnings = std::mem::take(&mut self.warnings);
        match self.next_batch() {
            Some(series) => Some((series, warnings)),
            None if !warnings.is_empty() => Some((Vec::new(), warnings)),
            None => None,
        }
    }

    /// The next batch, or `None` when every series was handed out.
    pub fn next_batch(&mut self) -> Option<Vec<Series>> {
        if self.pending.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some(series) = self.pending.front() {
            let size: usize = series.chunks.iter().map(|c| c.data.len()).sum::<usize>()
                + series
                    .labels
                    .iter()
                    .map(|l| l.name.len() + l.value.len())
                    .sum::<usize>();
            if !out.is_empty() && (out.len() >= self.max_series || bytes + size > self.max_bytes) {
                break;
            }
            bytes += size;
            if let Some(series) = self.pending.pop_front() {
                out.push(series);
            }
        }
        Some(out)
    }

    /// Series not yet handed out.
    pub fn remaining(&self) -> usize {
        self.pending.len()
    }
}

/// The packed form of one chunk whose bytes go next into the batch's data.
pub fn packed_chunk(chunk: &Chunk) -> PackedChunk {
    PackedChunk {
        min_time: chunk.min_time,
        max_time: chunk.max_time,
        encoding: chunk.encoding,
        size: u32::try_from(chunk.data.len()).unwrap_or(u32::MAX),
    }
}

/// Packs a batch: the same series and warnings, every chunk's bytes appended in order to one
/// list.
pub fn pack(batch: SeriesBatch) -> PackedBatch {
    let size = data_size(&batch.series);
    let mut series = batch.series;
    let labelled = series
        .iter_mut()
        .map(|s| (std::mem::take(&mut s.labels), s.chunks.as_slice()));
    pack_with(size, labelled, batch.warnings)
}

/// Packs copies of `series`, for a store that keeps its series (encoded chunks included) in
/// memory: labels cloned, chunk bytes copied straight into the batch's one list, without a
/// buffer per chunk.
pub fn pack_copied(series: &[Series], warnings: Vec<String>) -> PackedBatch {
    let labelled = series
        .iter()
        .map(|s| (s.labels.clone(), s.chunks.as_slice()));
    pack_with(data_size(series), labelled, warnings)
}

fn data_size(series: &[Series]) -> usize {
    series
        .iter()
        .flat_map(|s| &s.chunks)
        .map(|c| c.data.len())
        .sum()
}

fn pack_with<'a>(
    size: usize,
    series: impl Iterator<Item = (Vec<crate::Label>, &'a [Chunk])>,
    warnings: Vec<String>,
) -> PackedBatch {
    let mut data = Vec::with_capacity(size);
    let series = series
        .map(|(labels, chunks)| PackedSeries {
            labels,
            chunks: chunks
                .iter()
                .map(|c| {
                    data.extend_from_slice(&c.data);
                    packed_chunk(c)
                })
                .collect(),
        })
        .collect();
    PackedBatch {
        series,
        data,
        warnings,
    }
}

/// How a series stream answers `packed-series.next-packed-batch`. The default packs what
/// `next-batch` returns; a stream that holds its chunk bytes already may build the packed
/// batch directly and save the per-chunk buffers.
pub trait PackedStream: GuestSeriesStream {
    /// The next batch, packed, or none at the end of the answer.
    fn next_packed_batch(&self) -> Result<Option<PackedBatch>, PluginError> {
        Ok(self.next_batch()?.map(pack))
    }
}

impl<T> packed_series::Guest for T
where
    T: store::Guest,
    T::SeriesStream: PackedStream,
{
    fn next_packed_batch(
        answer: SeriesStreamBorrow<'_>,
    ) -> Result<Option<PackedBatch>, PluginError> {
        answer.get::<T::SeriesStream>().next_packed_batch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Label;

    fn series(name: &str) -> Series {
        Series {
            labels: vec![Label {
                name: "__name__".into(),
                value: name.into(),
            }],
            chunks: Vec::new(),
        }
    }

    #[test]
    fn warnings_go_with_the_first_batch() {
        let mut batcher =
            Batcher::with_limits(vec![series("a"), series("b")], 1, DEFAULT_MAX_BYTES)
                .with_warnings(vec!["w".into()]);
        let (first, warnings) = batcher.next_answer().expect("first batch");
        assert_eq!((first.len(), warnings), (1, vec!["w".to_owned()]));
        let (second, warnings) = batcher.next_answer().expect("second batch");
        assert_eq!((second.len(), warnings.len()), (1, 0));
        assert!(batcher.next_answer().is_none());
    }

    #[test]
    fn warnings_alone_when_there_are_no_series() {
        let mut batcher = Batcher::new(Vec::new()).with_warnings(vec!["w".into()]);
        assert_eq!(
            batcher.next_answer().map(|(s, w)| (s.len(), w)),
            Some((0, vec!["w".to_owned()]))
        );
        assert!(batcher.next_answer().is_none());
        assert!(Batcher::new(Vec::new()).next_answer().is_none());
    }

    #[test]
    fn packing_keeps_series_and_puts_chunk_bytes_in_order() {
        let chunk = |t: i64, data: &[u8]| crate::Chunk {
            min_time: t,
            max_time: t + 1,
            encoding: crate::ChunkEncoding::Xor,
            data: data.to_vec(),
        };
        let mut a = series("a");
        a.chunks = vec![chunk(0, b"ab"), chunk(10, b"cde")];
        let mut b = series("b");
        b.chunks = vec![chunk(20, b"f")];
        let kept = vec![a.clone(), b.clone(), series("c")];
        let packed = pack(SeriesBatch {
            series: vec![a, b, series("c")],
            warnings: vec!["w".into()],
        });
        assert_eq!(packed.data, b"abcdef");
        let sizes: Vec<Vec<(i64, u32)>> = packed
            .series
            .iter()
            .map(|s| s.chunks.iter().map(|c| (c.min_time, c.size)).collect())
            .collect();
        assert_eq!(sizes, [vec![(0, 2), (10, 3)], vec![(20, 1)], vec![]]);
        assert_eq!(packed.series[1].labels[0].value, "b");
        assert_eq!(packed.warnings, ["w"]);
        let copied = pack_copied(&kept, vec![]);
        assert_eq!(copied.data, b"abcdef");
        assert_eq!(copied.series.len(), 3);
        assert_eq!(copied.series[0].chunks[1].size, 3);
    }
}
