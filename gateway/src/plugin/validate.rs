//! Checks every series a plugin returns before it reaches the querier, and converts it to the
//! Thanos wire type: label sets sorted with unique, non-empty names and non-empty values;
//! series in strictly increasing label order across batches; chunks with `min <= max`, in
//! time order, and — for XOR — bytes that decode completely with every timestamp inside the
//! chunk's declared range (with `limits.validate_chunks = "header"`: the header and the first
//! sample; when the querier's engine checks the bytes as it decodes them, see
//! [`crate::query::deferred`]: none of them). Batches are bounded in series and bytes.
//!
//! A plugin's data is untrusted: this module must refuse, never repair, and never panic or
//! allocate in proportion to a length the plugin declares.

use std::cmp::Ordering;

use gauntlet_proto::thanos::{self, AggrChunk, chunk::Encoding};

use super::batch::{Chunk, Series};
use super::bindings::host::gauntlet::plugin::types::{ChunkEncoding, Label};
use crate::query::deferred::{open_checked, read_checked};

/// Limits on one batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Series in one batch.
    pub max_series: u64,
    /// Label and chunk bytes in one batch.
    pub max_bytes: u64,
}

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The data breaks the contract.
    #[error("{0}")]
    Malformed(String),
    /// The batch exceeds a limit.
    #[error("{0}")]
    TooLarge(String),
}

/// Validates series across the batches of one answer.
#[derive(Debug)]
pub struct SeriesValidator {
    limits: BatchLimits,
    previous: Option<Vec<thanos::Label>>,
    /// Decode XOR chunks fully (otherwise only the header is checked).
    deep: bool,
    /// Leave the chunk bytes of series made of XOR chunks only unread: the engine checks them
    /// as it decodes them.
    defer_xor_bodies: bool,
}

fn labels_cmp(a: &[thanos::Label], b: &[thanos::Label]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let ord = x.name.cmp(&y.name).then_with(|| x.value.cmp(&y.value));
        if ord != Ordering::Equal {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

/// Checks one label set and converts it.
pub fn check_labels(labels: Vec<Label>) -> Result<Vec<thanos::Label>, String> {
    if labels.is_empty() {
        return Err("series without labels".to_owned());
    }
    let mut out: Vec<thanos::Label> = Vec::with_capacity(labels.len());
    for label in labels {
        if label.name.is_empty() {
            return Err("label with an empty name".to_owned());
        }
        if label.value.is_empty() {
            return Err(format!("label {} has an empty value", label.name));
        }
        if let Some(last) = out.last() {
            match last.name.as_str().cmp(label.name.as_str()) {
                Ordering::Less => {}
                Ordering::Equal => return Err(format!("label {} appears twice", label.name)),
                Ordering::Greater => {
                    return Err(format!(
                        "labels not sorted: {} after {}",
                        label.name, last.name
                    ));
                }
            }
        }
        out.push(thanos::Label {
            name: label.name,
            value: label.value,
        });
    }
    Ok(out)
}

/// The shortest XOR chunk that holds a sample: the 2-byte sample count, the first timestamp
/// (a varint of at least 1 byte) and the first value (8 bytes).
const MIN_XOR_CHUNK_BYTES: usize = 11;

/// How much of an XOR chunk's bytes the validator reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// None: the engine's checked decode reads and checks them (a deferred series).
    Nothing,
    /// The header and the first sample (`validate_chunks = "header"`).
    FirstSample,
    /// Every sample.
    All,
}

fn check_chunk(chunk: &Chunk, read: Read) -> Result<(), String> {
    if chunk.min_time > chunk.max_time {
        return Err(format!(
            "chunk min time {} after max time {}",
            chunk.min_time, chunk.max_time
        ));
    }
    if chunk.encoding != ChunkEncoding::Xor {
        return Ok(());
    }
    // Its length needs none of its bytes: a chunk too short to hold one sample is refused
    // even when the engine is to check the rest, so that chunks it never reads cannot pile up
    // unchecked and uncounted (they add next to nothing to `batch_bytes`).
    if chunk.data.len() < MIN_XOR_CHUNK_BYTES {
        return Err(format!(
            "corrupt XOR chunk: {} bytes are too few to hold a sample",
            chunk.data.len()
        ));
    }
    if read == Read::Nothing {
        return Ok(());
    }
    // With `Read::FirstSample`, only the first sample: cheap to read, and it says whether the
    // declared range is a lie.
    read_checked(
        open_checked(&chunk.data)?,
        (chunk.min_time, chunk.max_time),
        |_, _| read == Read::All,
    )
}

impl SeriesValidator {
    /// A validator for one answer.
    pub fn new(limits: BatchLimits, deep: bool) -> Self {
        Self {
            limits,
            previous: None,
            deep,
            defer_xor_bodies: false,
        }
    }

    /// Leaves the bytes of series made of XOR chunks only unread and unchecked (see
    /// [`deferred_xor_bodies`]): for answers whose chunks the engine decodes with checks.
    #[must_use]
    pub fn deferring_xor_bodies(mut self) -> Self {
        self.defer_xor_bodies = true;
        self
    }

    /// Checks a batch and converts it to Thanos series, in order.
    pub fn check_batch(&mut self, series: Vec<Series>) -> Result<Vec<thanos::Series>, BatchError> {
        if series.len() as u64 > self.limits.max_series {
            return Err(BatchError::TooLarge(format!(
                "batch of {} series exceeds limits.batch_series = {}",
                series.len(),
                self.limits.max_series
            )));
        }
        let bytes: u64 = series
            .iter()
            .map(|s| {
                s.chunks.iter().map(|c| c.data.len() as u64).sum::<u64>()
                    + s.labels
                        .iter()
                        .map(|l| (l.name.len() + l.value.len()) as u64)
                        .sum::<u64>()
            })
            .sum();
        if bytes > self.limits.max_bytes {
            return Err(BatchError::TooLarge(format!(
                "batch of {bytes} bytes exceeds limits.batch_bytes = {}",
                self.limits.max_bytes
            )));
        }
        let mut out = Vec::with_capacity(series.len());
        for s in series {
            let labels = check_labels(s.labels).map_err(BatchError::Malformed)?;
            // The previous series: this batch's last, else the previous batch's.
            let previous = out
                .last()
                .map(|s: &thanos::Series| s.labels.as_slice())
                .or(self.previous.as_deref());
            if let Some(previous) = previous
                && labels_cmp(previous, &labels) != Ordering::Less
            {
                return Err(BatchError::Malformed(format!(
                    "series not in strictly increasing label order: {} after {}",
                    format_labels(&labels),
                    format_labels(previous)
                )));
            }
            // The engine checks a deferred series' bytes as it decodes them; checking them here
            // as well would read each chunk twice.
            let read = if self.defer_xor_bodies && only_xor(&s.chunks) {
                Read::Nothing
            } else if self.deep {
                Read::All
            } else {
                Read::FirstSample
            };
            let mut chunks = Vec::with_capacity(s.chunks.len());
            let mut last_max: Option<i64> = None;
            for chunk in s.chunks {
                check_chunk(&chunk, read).map_err(|e| {
                    BatchError::Malformed(format!("series {}: {e}", format_labels(&labels)))
                })?;
                if last_max.is_some_and(|m| chunk.min_time <= m) {
                    return Err(BatchError::Malformed(format!(
                        "series {}: chunks overlap or are out of order",
                        format_labels(&labels)
                    )));
                }
                last_max = Some(chunk.max_time);
                let encoding = match chunk.encoding {
                    ChunkEncoding::Xor => Encoding::Xor,
                    ChunkEncoding::Histogram => Encoding::Histogram,
                    ChunkEncoding::FloatHistogram => Encoding::FloatHistogram,
                };
                chunks.push(AggrChunk {
                    min_time: chunk.min_time,
                    max_time: chunk.max_time,
                    raw: Some(thanos::Chunk {
                        r#type: encoding as i32,
                        data: chunk.data,
                        hash: 0,
                    }),
                    ..AggrChunk::default()
                });
            }
            out.push(thanos::Series { labels, chunks });
        }
        if let Some(last) = out.last() {
            self.previous = Some(last.labels.clone());
        }
        Ok(out)
    }
}

fn only_xor(chunks: &[Chunk]) -> bool {
    chunks.iter().all(|c| c.encoding == ChunkEncoding::Xor)
}

/// The chunk bodies of a checked series that a validator [`deferring_xor_bodies`] left
/// unchecked: those of a series made of XOR chunks only.
///
/// [`deferring_xor_bodies`]: SeriesValidator::deferring_xor_bodies
pub fn deferred_xor_bodies(series: &thanos::Series) -> impl Iterator<Item = &bytes::Bytes> + Clone {
    let xor = series.chunks.iter().all(|c| {
        c.raw
            .as_ref()
            .is_some_and(|r| r.r#type == Encoding::Xor as i32)
    });
    series
        .chunks
        .iter()
        .filter(move |_| xor)
        .filter_map(|c| c.raw.as_ref().map(|r| &r.data))
}

fn format_labels(labels: &[thanos::Label]) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gauntlet_tsdb::chunkenc::XorChunk;

    fn label(n: &str, v: &str) -> Label {
        Label {
            name: n.into(),
            value: v.into(),
        }
    }

    fn xor(samples: &[(i64, f64)]) -> Chunk {
        let mut c = XorChunk::new();
        for &(t, v) in samples {
            c.append(t, v).expect("test setup");
        }
        Chunk {
            min_time: samples[0].0,
            max_time: samples[samples.len() - 1].0,
            encoding: ChunkEncoding::Xor,
            data: c.into_bytes().into(),
        }
    }

    fn validator() -> SeriesValidator {
        SeriesValidator::new(
            BatchLimits {
                max_series: 10,
                max_bytes: 1 << 20,
            },
            true,
        )
    }

    #[test]
    fn accepts_good_series_across_batches() {
        let mut v = validator();
        let a = Series {
            labels: vec![label("__name__", "a")],
            chunks: vec![xor(&[(1, 1.0), (2, 2.0)]), xor(&[(3, 1.0)])],
        };
        let b = Series {
            labels: vec![label("__name__", "b")],
            chunks: vec![],
        };
        assert_eq!(v.check_batch(vec![a]).expect("test setup").len(), 1);
        assert_eq!(
            v.check_batch(vec![b]).expect("test setup")[0].labels[0].value,
            "b"
        );
    }

    #[test]
    fn refuses_malformed_data() {
        let bad = |s: Series| validator().check_batch(vec![s]).expect_err("must fail");
        assert!(matches!(
            bad(Series {
                labels: vec![label("b", "1"), label("a", "1")],
                chunks: vec![]
            }),
            BatchError::Malformed(_)
        ));
        bad(Series {
            labels: vec![label("a", "1"), label("a", "2")],
            chunks: vec![],
        });
        bad(Series {
            labels: vec![label("a", "")],
            chunks: vec![],
        });
        bad(Series {
            labels: vec![],
            chunks: vec![],
        });
        let mut inverted = xor(&[(1, 1.0)]);
        inverted.min_time = 5;
        bad(Series {
            labels: vec![label("a", "1")],
            chunks: vec![inverted],
        });
        let corrupt = Chunk {
            min_time: 0,
            max_time: 10,
            encoding: ChunkEncoding::Xor,
            data: vec![0, 200, 1, 2, 3].into(),
        };
        bad(Series {
            labels: vec![label("a", "1")],
            chunks: vec![corrupt],
        });
        let mut lying = xor(&[(100, 1.0), (200, 1.0)]);
        lying.max_time = 150;
        bad(Series {
            labels: vec![label("a", "1")],
            chunks: vec![lying],
        });
        let mut v = validator();
        let s = |n: &str| Series {
            labels: vec![label("a", n)],
            chunks: vec![],
        };
        assert!(v.check_batch(vec![s("2"), s("1")]).is_err());
        let mut v = validator();
        assert!(v.check_batch(vec![s("1"), s("1")]).is_err());
        let mut v = validator();
        assert!(v.check_batch(vec![s("1"), s("3")]).is_ok());
        assert!(v.check_batch(vec![s("2")]).is_err());
    }

    #[test]
    fn deferred_series_are_checked_without_reading_their_chunk_bytes() {
        let mut v = validator().deferring_xor_bodies();
        let corrupt = || Chunk {
            min_time: 0,
            max_time: 10,
            encoding: ChunkEncoding::Xor,
            // 200 samples declared, one there (at 1).
            data: vec![0, 200, 2, 0, 0, 0, 0, 0, 0, 0, 0].into(),
        };
        let series = |name: &str, chunks: Vec<Chunk>| Series {
            labels: vec![label("__name__", name)],
            chunks,
        };
        // Left to the engine's checked decode.
        let passed = v
            .check_batch(vec![series("a", vec![corrupt()])])
            .expect("deferred");
        assert_eq!(deferred_xor_bodies(&passed[0]).count(), 1);
        // What needs no bytes is still checked: declared times, and a length too short for
        // one sample.
        let mut inverted = corrupt();
        inverted.min_time = 20;
        assert!(v.check_batch(vec![series("b", vec![inverted])]).is_err());
        let mut short = corrupt();
        short.data = short.data.slice(..10);
        let err = v
            .check_batch(vec![series("b", vec![short])])
            .expect_err("too short");
        assert!(matches!(err, BatchError::Malformed(m) if m.contains("10 bytes are too few")));
        // A series with another encoding is not deferred: read in full.
        let histogram = Chunk {
            min_time: 11,
            max_time: 12,
            encoding: ChunkEncoding::Histogram,
            data: vec![0, 1].into(),
        };
        let err = v
            .check_batch(vec![series("c", vec![corrupt(), histogram])])
            .expect_err("read in full");
        assert!(
            matches!(&err, BatchError::Malformed(m) if m.contains("corrupt XOR chunk")),
            "{err}"
        );
    }

    #[test]
    fn refuses_oversized_batches() {
        let mut v = validator();
        let many: Vec<Series> = (0..11)
            .map(|i| Series {
                labels: vec![label("i", &format!("{i:02}"))],
                chunks: vec![],
            })
            .collect();
        assert!(matches!(v.check_batch(many), Err(BatchError::TooLarge(_))));
    }
}
