//! Prometheus remote read with `STREAMED_XOR_CHUNKS`: the request (a snappy block-compressed
//! protobuf `prometheus.ReadRequest`) and the response decoder (a stream of frames, each an
//! unsigned varint length, a big-endian CRC32-Castagnoli checksum of the message and a
//! protobuf `prometheus.ChunkedReadResponse`).
//!
//! The message structs mirror `prompb` (Prometheus 2.42): same field numbers, only the fields
//! the sidecar uses. Chunk bytes are kept exactly as Prometheus sent them; nothing here
//! decodes or re-encodes samples. Every length read from the wire is bounded before it
//! allocates, and a frame whose checksum does not match is an error, never data.

use crc32c::crc32c;
use prost::Message;

/// `prometheus.ReadRequest.ResponseType.STREAMED_XOR_CHUNKS`.
pub const STREAMED_XOR_CHUNKS: i32 = 1;
/// The content type of a streamed remote read answer.
pub const STREAMED_CONTENT_TYPE: &str =
    "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse";
/// Largest frame accepted (Prometheus cuts frames at about 1 MiB of chunks).
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// `prometheus.ReadRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct ReadRequest {
    /// Field 1.
    #[prost(message, repeated, tag = "1")]
    pub queries: Vec<Query>,
    /// Field 2: `ResponseType` values.
    #[prost(int32, repeated, packed = "true", tag = "2")]
    pub accepted_response_types: Vec<i32>,
}

/// `prometheus.Query`.
#[derive(Clone, PartialEq, Message)]
pub struct Query {
    /// Field 1.
    #[prost(int64, tag = "1")]
    pub start_timestamp_ms: i64,
    /// Field 2.
    #[prost(int64, tag = "2")]
    pub end_timestamp_ms: i64,
    /// Field 3.
    #[prost(message, repeated, tag = "3")]
    pub matchers: Vec<LabelMatcher>,
}

/// `prometheus.LabelMatcher`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelMatcher {
    /// Field 1: EQ = 0, NEQ = 1, RE = 2, NRE = 3.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// Field 2.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Field 3.
    #[prost(string, tag = "3")]
    pub value: String,
}

/// `prometheus.ChunkedReadResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct ChunkedReadResponse {
    /// Field 1.
    #[prost(message, repeated, tag = "1")]
    pub chunked_series: Vec<ChunkedSeries>,
    /// Field 2.
    #[prost(int64, tag = "2")]
    pub query_index: i64,
}

/// `prometheus.ChunkedSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct ChunkedSeries {
    /// Field 1: sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Field 2: in time order.
    #[prost(message, repeated, tag = "2")]
    pub chunks: Vec<Chunk>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    /// Field 1.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Field 2.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Chunk`.
#[derive(Clone, PartialEq, Message)]
pub struct Chunk {
    /// Field 1.
    #[prost(int64, tag = "1")]
    pub min_time_ms: i64,
    /// Field 2.
    #[prost(int64, tag = "2")]
    pub max_time_ms: i64,
    /// Field 3: UNKNOWN = 0, XOR = 1, HISTOGRAM = 2, FLOAT_HISTOGRAM = 3.
    #[prost(int32, tag = "3")]
    pub r#type: i32,
    /// Field 4: the encoded chunk.
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
}

/// The body of a remote read request: `request` encoded and snappy block-compressed.
pub fn encode_request(request: &ReadRequest) -> Result<Vec<u8>, String> {
    let raw = request.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .map_err(|e| format!("snappy: {e}"))
}

/// Why a streamed answer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The stream ends inside a frame.
    Truncated,
    /// A frame is longer than [`MAX_FRAME_BYTES`] or its varint is malformed.
    BadLength(u64),
    /// The frame's CRC32-Castagnoli does not match its bytes.
    Checksum {
        /// From the wire.
        expected: u32,
        /// Of the bytes.
        actual: u32,
    },
    /// The message does not decode.
    Protobuf(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated => f.write_str("remote read stream ends inside a frame"),
            Self::BadLength(n) => write!(f, "remote read frame length {n} is invalid"),
            Self::Checksum { expected, actual } => write!(
                f,
                "remote read frame checksum mismatch: expected {expected:08x}, got {actual:08x}"
            ),
            Self::Protobuf(m) => write!(f, "remote read frame does not decode: {m}"),
        }
    }
}

/// Iterates over the `ChunkedReadResponse` frames of a streamed answer.
#[derive(Debug)]
pub struct FrameReader<'a> {
    rest: &'a [u8],
}

impl<'a> FrameReader<'a> {
    /// A reader over a whole response body.
    pub fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }
}

impl Iterator for FrameReader<'_> {
    type Item = Result<ChunkedReadResponse, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        Some(self.read_frame())
    }
}

impl FrameReader<'_> {
    fn read_frame(&mut self) -> Result<ChunkedReadResponse, FrameError> {
        let (length, used) = uvarint(self.rest)?;
        let length = usize::try_from(length)
            .ok()
            .filter(|&n| n <= MAX_FRAME_BYTES)
            .ok_or(FrameError::BadLength(length))?;
        let rest = &self.rest[used..];
        if rest.len() < 4 + length {
            self.rest = &[];
            return Err(FrameError::Truncated);
        }
        let expected = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let message = &rest[4..4 + length];
        let actual = crc32c(message);
        self.rest = &rest[4 + length..];
        if actual != expected {
            self.rest = &[];
            return Err(FrameError::Checksum { expected, actual });
        }
        ChunkedReadResponse::decode(message).map_err(|e| FrameError::Protobuf(e.to_string()))
    }
}

/// Reads an unsigned LEB128 varint; returns the value and the bytes it used.
fn uvarint(bytes: &[u8]) -> Result<(u64, usize), FrameError> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if bytes.len() < 10 {
        Err(FrameError::Truncated)
    } else {
        Err(FrameError::BadLength(value))
    }
}

/// Writes one frame the way Prometheus does (for tests and tools).
pub fn write_frame(out: &mut Vec<u8>, message: &ChunkedReadResponse) {
    let bytes = message.encode_to_vec();
    let mut length = bytes.len() as u64;
    loop {
        let byte = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&crc32c(&bytes).to_be_bytes());
    out.extend_from_slice(&bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_answer() {
        // RFC 3720 test vector: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    fn sample() -> ChunkedReadResponse {
        ChunkedReadResponse {
            chunked_series: vec![ChunkedSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                chunks: vec![Chunk {
                    min_time_ms: 1,
                    max_time_ms: 2,
                    r#type: 1,
                    data: vec![0, 1, 2, 3],
                }],
            }],
            query_index: 0,
        }
    }

    #[test]
    fn frames_round_trip() {
        let mut body = Vec::new();
        write_frame(&mut body, &sample());
        write_frame(&mut body, &sample());
        let frames: Vec<_> = FrameReader::new(&body).collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], Ok(sample()));
    }

    #[test]
    fn corrupt_frames_are_errors() {
        let mut body = Vec::new();
        write_frame(&mut body, &sample());
        let mut flipped = body.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            FrameReader::new(&flipped).next(),
            Some(Err(FrameError::Checksum { .. }))
        ));
        assert_eq!(
            FrameReader::new(&body[..body.len() - 1]).next(),
            Some(Err(FrameError::Truncated))
        );
        assert!(matches!(
            FrameReader::new(&[0xff; 12]).next(),
            Some(Err(FrameError::BadLength(_)))
        ));
    }

    #[test]
    fn request_is_snappy_protobuf() {
        let request = ReadRequest {
            queries: vec![Query {
                start_timestamp_ms: 5,
                end_timestamp_ms: 10,
                matchers: vec![LabelMatcher {
                    r#type: 0,
                    name: "__name__".into(),
                    value: "up".into(),
                }],
            }],
            accepted_response_types: vec![STREAMED_XOR_CHUNKS],
        };
        let body = encode_request(&request).expect("encode");
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body)
            .expect("snappy");
        assert_eq!(
            ReadRequest::decode(raw.as_slice()).expect("decode"),
            request
        );
    }
}
