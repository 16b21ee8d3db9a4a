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
}
