//! Byte-level primitives shared by the block codecs: a bounded decoder over a byte slice
//! (big-endian integers, Go-compatible varints, length-prefixed strings), CRC32 Castagnoli, and
//! the matching encoders.
//!
//! The decoder never indexes past its slice and never allocates: every read checks the
//! remaining length first and reports [`ErrorKind::Truncated`].

use super::error::ErrorKind;

/// CRC32 with the Castagnoli polynomial, as every block file uses.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Continues a CRC32 Castagnoli over more bytes.
pub(crate) fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

/// A cursor over untrusted bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decbuf<'a> {
    b: &'a [u8],
}

impl<'a> Decbuf<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Self { b }
    }

    /// Bytes not read yet.
    pub(crate) fn len(&self) -> usize {
        self.b.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.b.is_empty()
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.b
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], ErrorKind> {
        if n > self.b.len() {
            return Err(ErrorKind::Truncated);
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }

    pub(crate) fn byte(&mut self) -> Result<u8, ErrorKind> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn be32(&mut self) -> Result<u32, ErrorKind> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn be64(&mut self) -> Result<u64, ErrorKind> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// An unsigned varint as Go's `encoding/binary` writes it (at most 10 bytes).
    pub(crate) fn uvarint(&mut self) -> Result<u64, ErrorKind> {
        let (v, n) = read_uvarint(self.b)?;
        self.b = &self.b[n..];
        Ok(v)
    }

    /// A zig-zag signed varint.
    pub(crate) fn varint(&mut self) -> Result<i64, ErrorKind> {
        let u = self.uvarint()?;
        Ok(zigzag_decode(u))
    }

    /// An unsigned varint that must fit in 32 bits.
    pub(crate) fn uvarint32(&mut self) -> Result<u32, ErrorKind> {
        u32::try_from(self.uvarint()?)
            .map_err(|_| ErrorKind::Invalid("varint does not fit in 32 bits".into()))
    }

    /// A uvarint length followed by that many bytes.
    pub(crate) fn uvarint_bytes(&mut self) -> Result<&'a [u8], ErrorKind> {
        let n = self.uvarint()?;
        let n = usize::try_from(n).map_err(|_| ErrorKind::Truncated)?;
        self.bytes(n)
    }

    /// A uvarint length followed by that many bytes of UTF-8.
    pub(crate) fn uvarint_str(&mut self) -> Result<&'a str, ErrorKind> {
        let b = self.uvarint_bytes()?;
        std::str::from_utf8(b).map_err(|_| ErrorKind::Invalid("string is not valid UTF-8".into()))
    }
}

/// Decodes a Go unsigned varint from the start of `b`; returns the value and its length.
pub(crate) fn read_uvarint(b: &[u8]) -> Result<(u64, usize), ErrorKind> {
    let mut x = 0u64;
    let mut shift = 0u32;
    for (i, &byte) in b.iter().enumerate() {
        if i == 10 {
            return Err(ErrorKind::BadVarint);
        }
        if byte < 0x80 {
            if i == 9 && byte > 1 {
                return Err(ErrorKind::BadVarint);
            }
            return Ok((x | (u64::from(byte) << shift), i + 1));
        }
        x |= u64::from(byte & 0x7f) << shift;
        shift += 7;
    }
    if b.len() >= 10 {
        return Err(ErrorKind::BadVarint);
    }
    Err(ErrorKind::Truncated)
}

fn zigzag_decode(u: u64) -> i64 {
    // Reinterpreting the bits is the point of zig-zag decoding.
    #[allow(clippy::cast_possible_wrap)]
    let x = (u >> 1) as i64;
    if u & 1 != 0 { !x } else { x }
}

/// Checks a section laid out as `len <4b> | body <len bytes> | CRC32 <4b>` at the start of `b`
/// and returns the body. Bytes after the CRC are ignored.
pub(crate) fn checked_section(b: &[u8]) -> Result<&[u8], ErrorKind> {
    let mut d = Decbuf::new(b);
    let len = d.be32()?;
    let len = usize::try_from(len).map_err(|_| ErrorKind::Truncated)?;
    let body = d.bytes(len)?;
    let stored = d.be32()?;
    check_crc(body, stored)?;
    Ok(body)
}

/// Like [`checked_section`] but with a uvarint length (series entries).
/// Returns the body and the total bytes the entry spans, CRC included.
pub(crate) fn checked_uvarint_section(b: &[u8]) -> Result<(&[u8], usize), ErrorKind> {
    let (len, n) = read_uvarint(b)?;
    let len = usize::try_from(len).map_err(|_| ErrorKind::Truncated)?;
    let mut d = Decbuf::new(&b[n..]);
    let body = d.bytes(len)?;
    let stored = d.be32()?;
    check_crc(body, stored)?;
    Ok((body, n + len + 4))
}

/// Under cargo-fuzz (`cfg(fuzzing)`) a mismatch is ignored, so random inputs reach the decoders
/// a checksum would otherwise guard; every other build checks it.
pub(crate) fn check_crc(body: &[u8], stored: u32) -> Result<(), ErrorKind> {
    let computed = crc32c(body);
    if computed == stored || cfg!(fuzzing) {
        Ok(())
    } else {
        Err(ErrorKind::CrcMismatch { stored, computed })
    }
}

/// Appends a Go unsigned varint.
pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        // Truncation to the low 7 bits is intended.
        #[allow(clippy::cast_possible_truncation)]
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    #[allow(clippy::cast_possible_truncation)]
    out.push(x as u8);
}

/// Appends a zig-zag signed varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, x: i64) {
    #[allow(clippy::cast_sign_loss)]
    let u = ((x << 1) ^ (x >> 63)) as u64;
    put_uvarint(out, u);
}

/// Number of bytes [`put_uvarint`] writes for `x`.
pub(crate) fn uvarint_len(mut x: u64) -> usize {
    let mut n = 1;
    while x >= 0x80 {
        x >>= 7;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for x in [0i64, 1, -1, 63, -64, 64, 1 << 40, i64::MAX, i64::MIN] {
            let mut b = Vec::new();
            put_varint(&mut b, x);
            assert_eq!(Decbuf::new(&b).varint().unwrap(), x);
        }
        for x in [0u64, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut b = Vec::new();
            put_uvarint(&mut b, x);
            assert_eq!(b.len(), uvarint_len(x));
            assert_eq!(read_uvarint(&b).unwrap(), (x, b.len()));
        }
    }

    #[test]
    fn bad_varints() {
        assert_eq!(read_uvarint(&[0x80; 3]), Err(ErrorKind::Truncated));
        assert_eq!(read_uvarint(&[0xff; 11]), Err(ErrorKind::BadVarint));
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(read_uvarint(&over), Err(ErrorKind::BadVarint));
        assert_eq!(read_uvarint(&[]), Err(ErrorKind::Truncated));
    }

    #[test]
    fn sections_check_length_and_crc() {
        let body = b"hello";
        let mut s = Vec::new();
        s.extend_from_slice(&5u32.to_be_bytes());
        s.extend_from_slice(body);
        s.extend_from_slice(&crc32c(body).to_be_bytes());
        assert_eq!(checked_section(&s).unwrap(), body);
        assert_eq!(checked_section(&s[..8]), Err(ErrorKind::Truncated));
        s[5] ^= 1;
        assert!(matches!(
            checked_section(&s),
            Err(ErrorKind::CrcMismatch { .. })
        ));
    }
}
