//! Decoding of Prometheus's native histogram chunks: encoding 2 (`HISTOGRAM`, integer counts
//! stored as deltas of deltas) and encoding 3 (`FLOAT_HISTOGRAM`, counts XOR-encoded like float
//! samples), both into [`FloatHistogram`]s.
//!
//! Layout: a 2-byte big-endian sample count, a flags byte whose two top bits are the counter
//! reset header, then a bit stream: zero threshold, schema, positive and negative spans (and
//! custom bounds for schema -53), followed by the samples. The bucket layout is fixed for the
//! whole chunk. Every count read from the stream is checked against the input size before it
//! allocates; corrupt input is an error, never a panic.

use crate::chunkenc::{BitReader, ChunkError, read_xor_value};
use crate::histogram::{CUSTOM_BUCKETS_SCHEMA, CounterResetHint, FloatHistogram, Span};
use crate::sample::is_stale_nan;

/// Chunk encoding of integer native histograms.
pub const ENCODING_HISTOGRAM: u8 = 2;
/// Chunk encoding of float native histograms.
pub const ENCODING_FLOAT_HISTOGRAM: u8 = 3;

const HEADER_SIZE: usize = 3;

/// Reads the variable-width integer used by histogram chunks: a unary prefix of up to eight
/// one bits selects 0, 3, 6, 9, 12, 18, 25, 56 or 64 payload bits. Signed values are stored
/// in two's complement of the payload width.
fn read_varbit(r: &mut BitReader<'_>, signed: bool) -> Result<u64, ChunkError> {
    let mut ones = 0u8;
    while ones < 8 && r.read_bit().ok_or(ChunkError::Truncated("varbit prefix"))? {
        ones += 1;
    }
    let size: u8 = match ones {
        0 => return Ok(0),
        1 => 3,
        2 => 6,
        3 => 9,
        4 => 12,
        5 => 18,
        6 => 25,
        7 => 56,
        _ => 64,
    };
    let bits = r
        .read_bits(size)
        .ok_or(ChunkError::Truncated("varbit value"))?;
    if signed && size < 64 && bits > (1u64 << (size - 1)) {
        return Ok(bits.wrapping_sub(1u64 << size));
    }
    Ok(bits)
}

fn read_varbit_int(r: &mut BitReader<'_>) -> Result<i64, ChunkError> {
    read_varbit(r, true).map(|v| v as i64)
}

fn read_varbit_uint(r: &mut BitReader<'_>) -> Result<u64, ChunkError> {
    read_varbit(r, false)
}

fn read_f64(r: &mut BitReader<'_>) -> Result<f64, ChunkError> {
    r.read_bits(64)
        .map(f64::from_bits)
        .ok_or(ChunkError::Truncated("float"))
}

/// A count read from the stream, bounded by the bits left in the input (each counted item
/// takes at least one bit).
fn bounded(n: u64, input_bits: usize) -> Result<usize, ChunkError> {
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= input_bits)
        .ok_or(ChunkError::Invalid("count larger than the chunk"))
}

fn read_spans(r: &mut BitReader<'_>, input_bits: usize) -> Result<Vec<Span>, ChunkError> {
    let n = bounded(read_varbit_uint(r)?, input_bits)?;
    let mut spans = Vec::with_capacity(n);
    for _ in 0..n {
        let length =
            u32::try_from(read_varbit_uint(r)?).map_err(|_| ChunkError::Invalid("span length"))?;
        let offset =
            i32::try_from(read_varbit_int(r)?).map_err(|_| ChunkError::Invalid("span offset"))?;
        spans.push(Span { offset, length });
    }
    Ok(spans)
}

fn read_zero_threshold(r: &mut BitReader<'_>) -> Result<f64, ChunkError> {
    match r
        .read_byte()
        .ok_or(ChunkError::Truncated("zero threshold"))?
    {
        0 => Ok(0.0),
        255 => read_f64(r),
        b => Ok(0.5 * 2f64.powi(i32::from(b) - 243)),
    }
}

/// The bucket layout shared by all samples of a chunk.
struct Layout {
    schema: i32,
    zero_threshold: f64,
    positive: Vec<Span>,
    negative: Vec<Span>,
    custom_values: Vec<f64>,
    n_pos: usize,
    n_neg: usize,
}

fn read_layout(r: &mut BitReader<'_>, input_bits: usize) -> Result<Layout, ChunkError> {
    let zero_threshold = read_zero_threshold(r)?;
    let schema = i32::try_from(read_varbit_int(r)?).map_err(|_| ChunkError::Invalid("schema"))?;
    let positive = read_spans(r, input_bits)?;
    let negative = read_spans(r, input_bits)?;
    let mut custom_values = Vec::new();
    if schema == CUSTOM_BUCKETS_SCHEMA {
        let n = bounded(read_varbit_uint(r)?, input_bits)?;
        custom_values.reserve(n);
        for _ in 0..n {
            let v = read_varbit_uint(r)?;
            custom_values.push(if v == 0 {
                read_f64(r)?
            } else {
                (v - 1) as f64 / 1000.0
            });
        }
    }
    let count = |spans: &[Span]| -> Result<usize, ChunkError> {
        let n: u64 = spans.iter().map(|s| u64::from(s.length)).sum();
        bounded(n, input_bits)
    };
    Ok(Layout {
        schema,
        zero_threshold,
        n_pos: count(&positive)?,
        n_neg: count(&negative)?,
        positive,
        negative,
        custom_values,
    })
}

impl Layout {
    fn histogram(&self, hint: CounterResetHint) -> FloatHistogram {
        FloatHistogram {
            counter_reset_hint: hint,
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            positive_spans: self.positive.clone(),
            negative_spans: self.negative.clone(),
            custom_values: self.custom_values.clone(),
            ..FloatHistogram::default()
        }
    }
}

/// The counter reset hint of the `i`-th sample (0-based) from the chunk's header bits.
fn hint(header: u8, i: usize) -> CounterResetHint {
    match header & 0b1100_0000 {
        0b1100_0000 => CounterResetHint::Gauge,
        _ if i > 0 => CounterResetHint::NotCounterReset,
        0b1000_0000 => CounterResetHint::CounterReset,
        _ => CounterResetHint::Unknown,
    }
}

/// Decodes a histogram chunk of `encoding` 2 or 3 (header included) into
/// `(timestamp, histogram)` pairs. Stale markers come back as histograms whose `sum` is the
/// stale NaN.
pub fn decode_histogram_chunk(
    encoding: u8,
    bytes: &[u8],
) -> Result<Vec<(i64, FloatHistogram)>, ChunkError> {
    if bytes.len() < HEADER_SIZE {
        return Err(ChunkError::NoHeader);
    }
    let total = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
    let header = bytes[2];
    let stream = &bytes[HEADER_SIZE..];
    let input_bits = stream.len().saturating_mul(8);
    if total > input_bits {
        return Err(ChunkError::Invalid("more samples than bits"));
    }
    let mut r = BitReader::new(stream);
    let mut out = Vec::with_capacity(total);
    if total == 0 {
        return Ok(out);
    }
    let layout = read_layout(&mut r, input_bits)?;
    match encoding {
        ENCODING_FLOAT_HISTOGRAM => decode_float(&mut r, &layout, header, total, &mut out)?,
        ENCODING_HISTOGRAM => decode_int(&mut r, &layout, header, total, &mut out)?,
        _ => return Err(ChunkError::Invalid("not a histogram chunk encoding")),
    }
    Ok(out)
}

/// An XOR-encoded float with its window.
#[derive(Clone, Copy, Default)]
struct XorValue {
    v: f64,
    leading: u8,
    trailing: u8,
}

impl XorValue {
    fn read(&mut self, r: &mut BitReader<'_>) -> Result<f64, ChunkError> {
        read_xor_value(r, &mut self.v, &mut self.leading, &mut self.trailing)?;
        Ok(self.v)
    }
}

fn decode_float(
    r: &mut BitReader<'_>,
    layout: &Layout,
    header: u8,
    total: usize,
    out: &mut Vec<(i64, FloatHistogram)>,
) -> Result<(), ChunkError> {
    let (mut t, mut t_delta) = (0i64, 0i64);
    let (mut count, mut zero, mut sum) = (
        XorValue::default(),
        XorValue::default(),
        XorValue::default(),
    );
    let mut pos = vec![XorValue::default(); layout.n_pos];
    let mut neg = vec![XorValue::default(); layout.n_neg];
    for i in 0..total {
        if i == 0 {
            t = read_varbit_int(r)?;
            count.v = read_f64(r)?;
            zero.v = read_f64(r)?;
            sum.v = read_f64(r)?;
            for b in pos.iter_mut().chain(neg.iter_mut()) {
                b.v = read_f64(r)?;
            }
        } else {
            t_delta = t_delta.wrapping_add(read_varbit_int(r)?);
            t = t.wrapping_add(t_delta);
            count.read(r)?;
            zero.read(r)?;
            sum.read(r)?;
            if !is_stale_nan(sum.v) {
                for b in pos.iter_mut().chain(neg.iter_mut()) {
                    b.read(r)?;
                }
            }
        }
        let mut h = layout.histogram(hint(header, i));
        h.count = count.v;
        h.zero_count = zero.v;
        h.sum = sum.v;
        if !is_stale_nan(sum.v) {
            h.positive_buckets = pos.iter().map(|b| b.v).collect();
            h.negative_buckets = neg.iter().map(|b| b.v).collect();
        } else {
            h.positive_spans.clear();
            h.negative_spans.clear();
        }
        out.push((t, h));
    }
    Ok(())
}

/// Integer bucket counts: each stored value is the difference to the previous bucket; sample
/// to sample, those differences change by a delta of deltas.
#[derive(Clone, Copy, Default)]
struct IntBucket {
    value: i64,
    delta: i64,
}

fn decode_int(
    r: &mut BitReader<'_>,
    layout: &Layout,
    header: u8,
    total: usize,
    out: &mut Vec<(i64, FloatHistogram)>,
) -> Result<(), ChunkError> {
    let (mut t, mut t_delta) = (0i64, 0i64);
    let (mut count, mut count_delta) = (0i64, 0i64);
    let (mut zero, mut zero_delta) = (0i64, 0i64);
    let mut sum = XorValue::default();
    let mut pos = vec![IntBucket::default(); layout.n_pos];
    let mut neg = vec![IntBucket::default(); layout.n_neg];
    let absolute = |bs: &[IntBucket]| -> Vec<f64> {
        let mut cur = 0i64;
        bs.iter()
            .map(|b| {
                cur = cur.wrapping_add(b.value);
                cur as f64
            })
            .collect()
    };
    for i in 0..total {
        if i == 0 {
            t = read_varbit_int(r)?;
            count = read_varbit_uint(r)? as i64;
            zero = read_varbit_uint(r)? as i64;
            sum.v = read_f64(r)?;
            for b in pos.iter_mut().chain(neg.iter_mut()) {
                b.value = read_varbit_int(r)?;
            }
        } else {
            t_delta = t_delta.wrapping_add(read_varbit_int(r)?);
            t = t.wrapping_add(t_delta);
            count_delta = count_delta.wrapping_add(read_varbit_int(r)?);
            count = count.wrapping_add(count_delta);
            zero_delta = zero_delta.wrapping_add(read_varbit_int(r)?);
            zero = zero.wrapping_add(zero_delta);
            sum.read(r)?;
            if !is_stale_nan(sum.v) {
                for b in pos.iter_mut().chain(neg.iter_mut()) {
                    b.delta = b.delta.wrapping_add(read_varbit_int(r)?);
                    b.value = b.value.wrapping_add(b.delta);
                }
            }
        }
        let mut h = layout.histogram(hint(header, i));
        h.count = count as u64 as f64;
        h.zero_count = zero as u64 as f64;
        h.sum = sum.v;
        if is_stale_nan(sum.v) {
            h.positive_spans.clear();
            h.negative_spans.clear();
        } else {
            h.positive_buckets = absolute(&pos);
            h.negative_buckets = absolute(&neg);
        }
        out.push((t, h));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A minimal bit writer for building test chunks.
    #[derive(Default)]
    struct Bits {
        bytes: Vec<u8>,
        n: usize,
    }

    impl Bits {
        fn bit(&mut self, b: bool) {
            if self.n.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if b {
                let last = self.bytes.len() - 1;
                self.bytes[last] |= 0x80 >> (self.n % 8);
            }
            self.n += 1;
        }

        fn bits(&mut self, v: u64, n: u8) {
            for i in (0..n).rev() {
                self.bit((v >> i) & 1 == 1);
            }
        }

        fn varbit(&mut self, v: i64) {
            let (ones, size) = match v {
                0 => (0, 0),
                -3..=4 => (1, 3),
                -31..=32 => (2, 6),
                -255..=256 => (3, 9),
                -2047..=2048 => (4, 12),
                _ => (8, 64),
            };
            for _ in 0..ones {
                self.bit(true);
            }
            if ones < 8 {
                self.bit(false);
            }
            if size > 0 {
                let mask = if size == 64 {
                    u64::MAX
                } else {
                    (1u64 << size) - 1
                };
                self.bits(v as u64 & mask, size);
            }
        }

        /// A float XOR-encoded against the previous value with a fresh window.
        fn xor(&mut self, prev: f64, v: f64) {
            let x = prev.to_bits() ^ v.to_bits();
            if x == 0 {
                self.bit(false);
                return;
            }
            self.bits(0b11, 2);
            let lead = x.leading_zeros().min(31) as u8;
            let trail = x.trailing_zeros() as u8;
            let sig = 64 - lead - trail;
            self.bits(u64::from(lead), 5);
            self.bits(u64::from(sig % 64), 6);
            self.bits(x >> trail, sig);
        }
    }

    fn layout(w: &mut Bits) {
        w.bits(0, 8); // zero threshold 0
        w.varbit(0); // schema 0
        w.varbit(1); // one positive span
        w.varbit(2); // length 2
        w.varbit(1); // offset 1
        w.varbit(0); // no negative spans
    }

    fn chunk(n: u16, header: u8, w: Bits) -> Vec<u8> {
        let mut b = n.to_be_bytes().to_vec();
        b.push(header);
        b.extend(w.bytes);
        b
    }

    #[test]
    fn float_histogram_chunk() {
        let mut w = Bits::default();
        layout(&mut w);
        w.varbit(1000); // t
        for v in [3.0f64, 0.0, 5.5, 1.0, 2.0] {
            w.bits(v.to_bits(), 64);
        }
        w.varbit(15); // t delta
        for (p, v) in [
            (3.0f64, 5.0f64),
            (0.0, 0.0),
            (5.5, 9.0),
            (1.0, 2.0),
            (2.0, 3.0),
        ] {
            w.xor(p, v);
        }
        let out = decode_histogram_chunk(ENCODING_FLOAT_HISTOGRAM, &chunk(2, 0x80, w)).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, 1000);
        assert_eq!(out[1].0, 1015);
        let h = &out[1].1;
        assert_eq!((h.count, h.sum), (5.0, 9.0));
        assert_eq!(h.positive_indexed(), vec![(1, 2.0), (2, 3.0)]);
        assert_eq!(out[0].1.counter_reset_hint, CounterResetHint::CounterReset);
        assert_eq!(h.counter_reset_hint, CounterResetHint::NotCounterReset);
    }

    #[test]
    fn integer_histogram_chunk() {
        let mut w = Bits::default();
        layout(&mut w);
        w.varbit(0); // t
        w.varbit(3); // count (unsigned, small)
        w.varbit(0); // zero count
        w.bits(4.0f64.to_bits(), 64); // sum
        w.varbit(1); // bucket 1: 1
        w.varbit(1); // bucket 2: 1 + 1 = 2
        w.varbit(60_000); // t delta
        w.varbit(2); // count delta
        w.varbit(0); // zero count delta
        w.xor(4.0, 8.0);
        w.varbit(1); // bucket 1 value 1 → 2
        w.varbit(0); // bucket 2 difference stays 1 → 3
        let out = decode_histogram_chunk(ENCODING_HISTOGRAM, &chunk(2, 0xc0, w)).unwrap();
        assert_eq!(out[0].1.positive_indexed(), vec![(1, 1.0), (2, 2.0)]);
        let (t, h) = &out[1];
        assert_eq!(*t, 60_000);
        assert_eq!((h.count, h.sum), (5.0, 8.0));
        assert_eq!(h.positive_indexed(), vec![(1, 2.0), (2, 3.0)]);
        assert_eq!(h.counter_reset_hint, CounterResetHint::Gauge);
    }

    #[test]
    fn corrupt_chunks_are_errors() {
        assert!(decode_histogram_chunk(ENCODING_FLOAT_HISTOGRAM, &[0, 1]).is_err());
        assert!(decode_histogram_chunk(ENCODING_FLOAT_HISTOGRAM, &[0, 9, 0, 0xff]).is_err());
        // A span count far larger than the input.
        let mut w = Bits::default();
        w.bits(0, 8);
        w.varbit(0);
        w.varbit(1 << 40);
        assert!(decode_histogram_chunk(ENCODING_HISTOGRAM, &chunk(1, 0, w)).is_err());
        assert!(decode_histogram_chunk(1, &[0, 0, 0]).unwrap().is_empty());
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = decode_histogram_chunk(ENCODING_HISTOGRAM, &bytes);
            let _ = decode_histogram_chunk(ENCODING_FLOAT_HISTOGRAM, &bytes);
        }
    }
}
