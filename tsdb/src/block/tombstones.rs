//! The `tombstones` file: deletion intervals per series. Layout: magic `0x0130BA30` <4b>,
//! version 1 <1b>, then entries `series ref <uvarint> | mint <varint> | maxt <varint>`, then a
//! CRC32 <4b> over the entries (the version byte excluded).

use super::encoding::{Decbuf, check_crc, crc32c, put_uvarint, put_varint};
use super::error::{BlockError, ErrorKind};

/// Magic number at the start of a tombstones file.
pub const TOMBSTONES_MAGIC: u32 = 0x0130_BA30;
/// The tombstones format version.
pub const TOMBSTONES_VERSION: u8 = 1;

const FILE: &str = "tombstones";

/// Samples of series `series_ref` with `min_time <= t <= max_time` are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tombstone {
    /// The series reference (as in the index).
    pub series_ref: u64,
    /// First deleted timestamp, milliseconds.
    pub min_time: i64,
    /// Last deleted timestamp, milliseconds (inclusive).
    pub max_time: i64,
}

/// Parses a whole tombstones file.
pub fn parse_tombstones(bytes: &[u8]) -> Result<Vec<Tombstone>, BlockError> {
    let fail = |section: &'static str| move |k: ErrorKind| BlockError::new(FILE, section, k);
    if bytes.len() < 9 {
        return Err(BlockError::new(FILE, "header", ErrorKind::Truncated));
    }
    let mut d = Decbuf::new(bytes);
    let magic = d.be32().map_err(fail("header"))?;
    if magic != TOMBSTONES_MAGIC {
        return Err(BlockError::new(FILE, "header", ErrorKind::BadMagic(magic)));
    }
    let version = d.byte().map_err(fail("header"))?;
    if version != TOMBSTONES_VERSION {
        return Err(BlockError::new(
            FILE,
            "header",
            ErrorKind::UnsupportedVersion(version),
        ));
    }
    let body = &bytes[5..bytes.len() - 4];
    let crc = &bytes[bytes.len() - 4..];
    check_crc(body, u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]))
        .map_err(fail("entries"))?;
    let mut d = Decbuf::new(body);
    // An entry takes at least 3 bytes.
    let mut out = Vec::with_capacity(body.len() / 3);
    while !d.is_empty() {
        let series_ref = d.uvarint().map_err(fail("entries"))?;
        let min_time = d.varint().map_err(fail("entries"))?;
        let max_time = d.varint().map_err(fail("entries"))?;
        out.push(Tombstone {
            series_ref,
            min_time,
            max_time,
        });
    }
    Ok(out)
}

/// Encodes a tombstones file (an empty slice gives the 9-byte file of a fresh block).
pub fn encode_tombstones(tombstones: &[Tombstone]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + tombstones.len() * 6);
    out.extend_from_slice(&TOMBSTONES_MAGIC.to_be_bytes());
    out.push(TOMBSTONES_VERSION);
    for t in tombstones {
        put_uvarint(&mut out, t.series_ref);
        put_varint(&mut out, t.min_time);
        put_varint(&mut out, t.max_time);
    }
    let crc = crc32c(&out[5..]);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        assert_eq!(
            encode_tombstones(&[]),
            [0x01, 0x30, 0xBA, 0x30, 1, 0, 0, 0, 0]
        );
        let ts = vec![
            Tombstone {
                series_ref: 7,
                min_time: -5,
                max_time: 1_700_000_000_000,
            },
            Tombstone {
                series_ref: 300,
                min_time: 0,
                max_time: 10,
            },
        ];
        let b = encode_tombstones(&ts);
        assert_eq!(parse_tombstones(&b).unwrap(), ts);
        for i in 0..b.len() {
            let _ = parse_tombstones(&b[..i]).unwrap_err();
            let mut c = b.clone();
            c[i] ^= 0x10;
            let e = parse_tombstones(&c).unwrap_err();
            assert!(e.to_string().starts_with("tombstones: "), "{e}");
        }
    }
}
