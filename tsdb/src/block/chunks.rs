//! Chunk segment files (`chunks/000001`, `chunks/000002`, ...): an 8-byte header (magic,
//! version 1, three bytes of padding) followed by chunks, each `len <uvarint> | encoding <1b> |
//! data <len bytes> | CRC32 <4b>` with the CRC over encoding and data.
//!
//! A chunk reference packs the segment's position in the sorted list of segment files (upper
//! 32 bits, 0 for `000001`) and the chunk's byte offset in it (lower 32 bits). Decoding is
//! sans-IO: [`decode_chunk`] reads one chunk from a slice that starts at a known offset of the
//! segment, so a caller can fetch just that range.

use super::encoding::{check_crc, read_uvarint};
use super::error::{BlockError, ErrorKind};
use crate::chunkenc::{ChunkError, ENCODING_XOR, XorIterator};
use crate::histogram::FloatHistogram;
use crate::histogram_chunk::{
    ENCODING_FLOAT_HISTOGRAM, ENCODING_HISTOGRAM, decode_histogram_chunk,
};

/// Magic number at the start of a chunk segment file.
pub const CHUNKS_MAGIC: u32 = 0x85BD_40DD;
/// The segment format version.
pub const CHUNKS_VERSION: u8 = 1;
/// Size of a segment's header: magic, version, padding.
pub const SEGMENT_HEADER_LEN: usize = 8;
/// Prometheus's default largest segment file.
pub const DEFAULT_SEGMENT_SIZE: u64 = 512 << 20;
/// Most bytes a chunk's length prefix takes.
pub const MAX_CHUNK_LEN_FIELD: usize = 5;
/// Bytes a chunk occupies besides its data, at most: length prefix, encoding, CRC.
pub const MAX_CHUNK_OVERHEAD: usize = MAX_CHUNK_LEN_FIELD + 1 + 4;

/// Name of the segment file at position `index` (0-based) of a block: `chunks/000001` for 0.
pub fn segment_file_name(index: u32) -> String {
    format!("chunks/{:06}", u64::from(index) + 1)
}

/// A chunk reference split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkRef {
    /// Position of the segment file among the block's segment files (0 for `000001`).
    pub segment: u32,
    /// Byte offset of the chunk in the segment.
    pub offset: u32,
}

impl ChunkRef {
    /// Splits a packed reference.
    pub fn from_u64(r: u64) -> Self {
        Self {
            segment: (r >> 32) as u32,
            // The lower 32 bits are the offset.
            #[allow(clippy::cast_possible_truncation)]
            offset: r as u32,
        }
    }

    /// The packed reference.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.segment) << 32) | u64::from(self.offset)
    }
}

/// Checks a segment file's 8-byte header.
pub fn parse_segment_header(bytes: &[u8], segment: u32) -> Result<(), BlockError> {
    let file = segment_file_name(segment);
    let section = "header";
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(BlockError::new(file, section, ErrorKind::Truncated));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != CHUNKS_MAGIC {
        return Err(BlockError::new(file, section, ErrorKind::BadMagic(magic)));
    }
    if bytes[4] != CHUNKS_VERSION {
        return Err(BlockError::new(
            file,
            section,
            ErrorKind::UnsupportedVersion(bytes[4]),
        ));
    }
    Ok(())
}

/// One chunk as stored: its encoding and its data, borrowed from the segment bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawChunk<'a> {
    /// 1 = XOR (floats), 2 = histogram, 3 = float histogram.
    pub encoding: u8,
    /// The encoded samples (the 2-byte sample count first).
    pub data: &'a [u8],
}

impl RawChunk<'_> {
    /// Number of samples the chunk's header declares.
    pub fn num_samples(&self) -> usize {
        match self.data {
            [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
            _ => 0,
        }
    }

    /// Decodes the float samples of an XOR chunk.
    pub fn float_samples(&self) -> Result<Vec<(i64, f64)>, ChunkError> {
        if self.encoding != ENCODING_XOR {
            return Err(ChunkError::Invalid("not an XOR chunk"));
        }
        let it = XorIterator::new(self.data)?;
        // Bounded by the header (at most 65535) and by the bits available.
        let mut out = Vec::with_capacity(it.num_samples().min(self.data.len() * 8));
        for s in it {
            out.push(s?);
        }
        Ok(out)
    }

    /// Decodes the samples of a histogram or float histogram chunk.
    pub fn histogram_samples(&self) -> Result<Vec<(i64, FloatHistogram)>, ChunkError> {
        decode_histogram_chunk(self.encoding, self.data)
    }
}

/// Decodes the chunk at `chunk_offset` of segment `segment` from `bytes`, which hold the
/// segment's bytes starting at `bytes_offset` (0 when the whole segment is at hand). Returns the
/// chunk and the number of bytes it spans. Checks the CRC.
pub fn decode_chunk(
    bytes: &[u8],
    bytes_offset: u64,
    segment: u32,
    chunk_offset: u32,
) -> Result<(RawChunk<'_>, usize), BlockError> {
    let file = || segment_file_name(segment);
    let section = || format!("chunk at offset {chunk_offset}");
    let fail = |kind| BlockError::new(file(), section(), kind);
    if u64::from(chunk_offset) < SEGMENT_HEADER_LEN as u64 {
        return Err(fail(ErrorKind::Invalid(
            "chunk offset inside the segment header".into(),
        )));
    }
    let start = u64::from(chunk_offset)
        .checked_sub(bytes_offset)
        .and_then(|s| usize::try_from(s).ok())
        .ok_or_else(|| {
            fail(ErrorKind::Invalid(
                "chunk offset before the bytes given".into(),
            ))
        })?;
    let b = bytes
        .get(start..)
        .ok_or_else(|| fail(ErrorKind::Truncated))?;
    let (len, n) = read_uvarint(&b[..b.len().min(MAX_CHUNK_LEN_FIELD)]).map_err(|k| {
        // A length prefix longer than 5 bytes is corrupt even if more bytes follow.
        if k == ErrorKind::Truncated && b.len() >= MAX_CHUNK_LEN_FIELD {
            fail(ErrorKind::BadVarint)
        } else {
            fail(k)
        }
    })?;
    let len = usize::try_from(len).map_err(|_| fail(ErrorKind::Truncated))?;
    let total = n
        .checked_add(1)
        .and_then(|x| x.checked_add(len))
        .and_then(|x| x.checked_add(4))
        .ok_or_else(|| fail(ErrorKind::Truncated))?;
    if b.len() < total {
        return Err(fail(ErrorKind::Truncated));
    }
    let enc_and_data = &b[n..n + 1 + len];
    let crc = &b[n + 1 + len..total];
    let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    check_crc(enc_and_data, stored).map_err(fail)?;
    let encoding = enc_and_data[0];
    if !matches!(
        encoding,
        ENCODING_XOR | ENCODING_HISTOGRAM | ENCODING_FLOAT_HISTOGRAM
    ) {
        return Err(fail(ErrorKind::Invalid(
            format!("unknown chunk encoding {encoding}").into(),
        )));
    }
    Ok((
        RawChunk {
            encoding,
            data: &enc_and_data[1..],
        },
        total,
    ))
}

/// All segment files of a block in memory, in order.
#[derive(Debug, Clone)]
pub struct ChunksReader<'a> {
    segments: Vec<&'a [u8]>,
}

impl<'a> ChunksReader<'a> {
    /// Checks each segment's header.
    pub fn new(segments: Vec<&'a [u8]>) -> Result<Self, BlockError> {
        for (i, s) in segments.iter().enumerate() {
            let i = u32::try_from(i)
                .map_err(|_| BlockError::invalid("chunks", "segments", "too many segment files"))?;
            parse_segment_header(s, i)?;
        }
        Ok(Self { segments })
    }

    /// Number of segment files.
    pub fn num_segments(&self) -> usize {
        self.segments.len()
    }

    /// The chunk a packed reference points at.
    pub fn chunk(&self, chunk_ref: u64) -> Result<RawChunk<'a>, BlockError> {
        let r = ChunkRef::from_u64(chunk_ref);
        let seg = usize::try_from(r.segment)
            .ok()
            .and_then(|i| self.segments.get(i))
            .ok_or_else(|| {
                BlockError::invalid(
                    "chunks",
                    "chunk reference",
                    format!(
                        "segment {} of {} does not exist",
                        r.segment,
                        self.segments.len()
                    ),
                )
            })?;
        Ok(decode_chunk(seg, 0, r.segment, r.offset)?.0)
    }
}

/// Encodes one chunk as stored in a segment (length, encoding, data, CRC).
pub fn encode_chunk(encoding: u8, data: &[u8], out: &mut Vec<u8>) {
    super::encoding::put_uvarint(out, data.len() as u64);
    let start = out.len();
    out.push(encoding);
    out.extend_from_slice(data);
    let crc = super::encoding::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// The 8-byte segment header.
pub fn segment_header() -> [u8; SEGMENT_HEADER_LEN] {
    let m = CHUNKS_MAGIC.to_be_bytes();
    [m[0], m[1], m[2], m[3], CHUNKS_VERSION, 0, 0, 0]
}
