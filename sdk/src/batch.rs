//! Cutting a sorted list of series into batches for `series-stream.next-batch`, bounded by
//! series count and encoded bytes so that no batch approaches the host's limits. A batcher
//! never reorders series: the host requires label order across batches.

use std::collections::VecDeque;

use crate::Series;

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
            if !out.is_empty() && (out.len() >= self.max_series || bytes + size > self.max_bytes)
            {
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
