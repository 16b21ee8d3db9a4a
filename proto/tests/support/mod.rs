//! Test-only helpers: a minimal Prometheus XOR chunk encoder and decoder, just enough to put
//! real chunk bytes on the wire in tests. It is not the product codec (that lives in the
//! `tsdb` crate) and must never be used outside tests.

/// Writes bits most significant first, as Prometheus's `bstream` does.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits still free in the last byte (0 means a new byte is needed).
    free: u8,
}

impl BitWriter {
    fn bit(&mut self, one: bool) {
        if self.free == 0 {
            self.bytes.push(0);
            self.free = 8;
        }
        self.free -= 1;
        if let (true, Some(last)) = (one, self.bytes.last_mut()) {
            *last |= 1 << self.free;
        }
    }

    /// Writes the low `n` bits of `v`.
    fn bits(&mut self, v: u64, n: u8) {
        for i in (0..n).rev() {
            self.bit((v >> i) & 1 == 1);
        }
    }

    fn uvarint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.bits((v & 0x7f) | 0x80, 8);
            v >>= 7;
        }
        self.bits(v, 8);
    }

    fn varint(&mut self, v: i64) {
        self.uvarint(((v << 1) ^ (v >> 63)) as u64);
    }
}

/// Encodes float samples `(timestamp_ms, value)` as a Prometheus XOR chunk, including the
/// two-byte big-endian sample count that starts every XOR chunk.
pub fn encode_xor(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut w = BitWriter::default();
    let (mut t_prev, mut v_prev, mut delta_prev) = (0i64, 0u64, 0i64);
    let (mut leading, mut trailing) = (0xffu8, 0u8);
    for (i, &(t, v)) in samples.iter().enumerate() {
        let v = v.to_bits();
        match i {
            0 => {
                w.varint(t);
                w.bits(v, 64);
            }
            1 => {
                delta_prev = t - t_prev;
                w.uvarint(delta_prev as u64);
                write_xor(&mut w, v, v_prev, &mut leading, &mut trailing);
            }
            _ => {
                let delta = t - t_prev;
                let dod = delta - delta_prev;
                match dod {
                    0 => w.bit(false),
                    d if fits(d, 14) => {
                        w.bits(0b10, 2);
                        w.bits(d as u64, 14);
                    }
                    d if fits(d, 17) => {
                        w.bits(0b110, 3);
                        w.bits(d as u64, 17);
                    }
                    d if fits(d, 20) => {
                        w.bits(0b1110, 4);
                        w.bits(d as u64, 20);
                    }
                    d => {
                        w.bits(0b1111, 4);
                        w.bits(d as u64, 64);
                    }
                }
                delta_prev = delta;
                write_xor(&mut w, v, v_prev, &mut leading, &mut trailing);
            }
        }
        t_prev = t;
        v_prev = v;
    }
    let count = u16::try_from(samples.len()).expect("an XOR chunk holds at most 65535 samples");
    let mut out = count.to_be_bytes().to_vec();
    out.extend_from_slice(&w.bytes);
    out
}

/// Whether `d` fits the `n`-bit delta-of-delta bucket (Prometheus's `bitRange`).
fn fits(d: i64, n: u32) -> bool {
    -((1 << (n - 1)) - 1) <= d && d <= 1 << (n - 1)
}

fn write_xor(w: &mut BitWriter, v: u64, prev: u64, leading: &mut u8, trailing: &mut u8) {
    let delta = v ^ prev;
    if delta == 0 {
        w.bit(false);
        return;
    }
    w.bit(true);
    let new_leading = (delta.leading_zeros() as u8).min(31);
    let new_trailing = delta.trailing_zeros() as u8;
    if *leading != 0xff && new_leading >= *leading && new_trailing >= *trailing {
        w.bit(false);
        w.bits(delta >> *trailing, 64 - *leading - *trailing);
        return;
    }
    *leading = new_leading;
    *trailing = new_trailing;
    w.bit(true);
    w.bits(u64::from(new_leading), 5);
    let significant = 64 - new_leading - new_trailing;
    // 64 significant bits do not fit in 6 bits and are written as 0.
    w.bits(u64::from(significant) & 0x3f, 6);
    w.bits(delta >> new_trailing, significant);
}

/// Reads bits most significant first.
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> bool {
        let byte = self.bytes[self.pos / 8];
        let one = byte >> (7 - self.pos % 8) & 1 == 1;
        self.pos += 1;
        one
    }

    fn bits(&mut self, n: u8) -> u64 {
        (0..n).fold(0, |acc, _| acc << 1 | u64::from(self.bit()))
    }

    fn uvarint(&mut self) -> u64 {
        let mut v = 0;
        for shift in (0..).step_by(7) {
            let b = self.bits(8);
            v |= (b & 0x7f) << shift;
            if b < 0x80 {
                break;
            }
        }
        v
    }

    fn varint(&mut self) -> i64 {
        let u = self.uvarint();
        (u >> 1) as i64 ^ -((u & 1) as i64)
    }
}

/// Decodes a chunk produced by [`encode_xor`] (or by Prometheus) back into samples.
pub fn decode_xor(chunk: &[u8]) -> Vec<(i64, f64)> {
    let count = u16::from_be_bytes([chunk[0], chunk[1]]);
    let mut r = BitReader {
        bytes: &chunk[2..],
        pos: 0,
    };
    let mut out = Vec::new();
    let (mut t, mut v, mut delta) = (0i64, 0u64, 0i64);
    let (mut leading, mut trailing) = (0u8, 0u8);
    for i in 0..count {
        match i {
            0 => {
                t = r.varint();
                v = r.bits(64);
                out.push((t, f64::from_bits(v)));
                continue;
            }
            1 => delta = r.uvarint() as i64,
            _ => {
                let mut prefix = 0;
                while prefix < 4 && r.bit() {
                    prefix += 1;
                }
                let dod = match prefix {
                    0 => 0,
                    4 => r.bits(64) as i64,
                    p => {
                        let size = [14u8, 17, 20][p - 1];
                        let raw = r.bits(size) as i64;
                        if raw > 1 << (size - 1) {
                            raw - (1 << size)
                        } else {
                            raw
                        }
                    }
                };
                delta += dod;
            }
        }
        t += delta;
        if r.bit() {
            if r.bit() {
                leading = r.bits(5) as u8;
                let significant = match r.bits(6) as u8 {
                    0 => 64,
                    s => s,
                };
                trailing = 64 - leading - significant;
            }
            let significant = 64 - leading - trailing;
            v ^= r.bits(significant) << trailing;
        }
        out.push((t, f64::from_bits(v)));
    }
    out
}
