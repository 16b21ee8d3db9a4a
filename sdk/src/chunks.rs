//! Encoding samples into Prometheus XOR chunks for the host: chunks of at most
//! [`SAMPLES_PER_CHUNK`] samples, in time order, with exact min/max times. The host checks
//! every chunk it receives; this encoder must never emit one it would reject (unsorted
//! samples are refused here instead).

use gauntlet_tsdb::chunkenc::XorChunk;

use crate::{Chunk, ChunkEncoding, PluginError};

/// Samples per chunk, as Prometheus cuts head chunks.
pub const SAMPLES_PER_CHUNK: usize = 120;

/// Builds XOR chunks from samples appended in increasing timestamp order.
#[derive(Debug, Default)]
pub struct ChunkEncoder {
    chunks: Vec<Chunk>,
    current: Option<(XorChunk, i64, i64)>,
    last_t: Option<i64>,
    per_chunk: usize,
}

impl ChunkEncoder {
    /// An encoder cutting chunks at [`SAMPLES_PER_CHUNK`] samples.
    pub fn new() -> Self {
        Self::with_chunk_size(SAMPLES_PER_CHUNK)
    }

    /// An encoder cutting chunks at `per_chunk` samples (1..=65535).
    pub fn with_chunk_size(per_chunk: usize) -> Self {
        Self {
            per_chunk: per_chunk.clamp(1, usize::from(u16::MAX)),
            ..Self::default()
        }
    }

    /// Appends one sample; timestamps must strictly increase.
    pub fn push(&mut self, t: i64, v: f64) -> Result<(), PluginError> {
        if let Some(last) = self.last_t
            && t <= last
        {
            return Err(PluginError::InvalidArgument(format!(
                "samples out of order: {t} after {last}"
            )));
        }
        self.last_t = Some(t);
        let (chunk, _, max) = self.current.get_or_insert_with(|| (XorChunk::new(), t, t));
        chunk
            .append(t, v)
            .map_err(|e| PluginError::Internal(format!("encoding chunk: {e}")))?;
        *max = t;
        if chunk.num_samples() >= self.per_chunk {
            self.cut();
        }
        Ok(())
    }

    fn cut(&mut self) {
        if let Some((chunk, min_time, max_time)) = self.current.take() {
            self.chunks.push(Chunk {
                min_time,
                max_time,
                encoding: ChunkEncoding::Xor,
                data: chunk.into_bytes(),
            });
        }
    }

    /// Finishes and returns the chunks.
    pub fn finish(mut self) -> Vec<Chunk> {
        self.cut();
        self.chunks
    }
}

/// Encodes time-ordered samples into chunks in one go.
pub fn encode_xor(samples: &[(i64, f64)]) -> Result<Vec<Chunk>, PluginError> {
    let mut encoder = ChunkEncoder::new();
    for &(t, v) in samples {
        encoder.push(t, v)?;
    }
    Ok(encoder.finish())
}
