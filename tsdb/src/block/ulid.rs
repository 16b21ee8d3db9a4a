//! ULIDs, the names of blocks: 48 bits of Unix milliseconds and 80 random bits, written as 26
//! characters of Crockford's base32. Uses the system clock and the OS random source through
//! `getrandom`, both available on `wasm32-wasip2`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A 128-bit ULID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ulid(pub u128);

/// Why a string is not a ULID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UlidError {
    /// Not 26 characters.
    #[error("ULID must be 26 characters, got {0}")]
    Length(usize),
    /// A character outside Crockford's base32, or a value over 128 bits.
    #[error("ULID has an invalid character or overflows 128 bits")]
    Invalid,
    /// The OS random source failed.
    #[error("no randomness for a ULID: {0}")]
    Random(String),
}

impl Ulid {
    /// A new ULID for the current time.
    pub fn generate() -> Result<Self, UlidError> {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut random = [0u8; 10];
        getrandom::fill(&mut random).map_err(|e| UlidError::Random(e.to_string()))?;
        Ok(Self::from_parts(ms, random))
    }

    /// A ULID from a millisecond timestamp (its low 48 bits) and 80 random bits.
    pub fn from_parts(ms: u64, random: [u8; 10]) -> Self {
        let mut r = 0u128;
        for b in random {
            r = (r << 8) | u128::from(b);
        }
        Self((u128::from(ms & 0xFFFF_FFFF_FFFF) << 80) | r)
    }

    /// Milliseconds since the Unix epoch encoded in the ULID.
    pub fn timestamp_ms(&self) -> u64 {
        // The top 48 bits always fit.
        #[allow(clippy::cast_possible_truncation)]
        let ms = (self.0 >> 80) as u64;
        ms
    }

    /// Parses the 26-character form (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, UlidError> {
        if s.len() != 26 {
            return Err(UlidError::Length(s.len()));
        }
        let mut v = 0u128;
        for (i, c) in s.bytes().enumerate() {
            let c = c.to_ascii_uppercase();
            let d = ALPHABET
                .iter()
                .position(|&a| a == c)
                .ok_or(UlidError::Invalid)?;
            // The first character carries only 3 bits (26 × 5 = 130).
            if i == 0 && d > 7 {
                return Err(UlidError::Invalid);
            }
            v = (v << 5) | d as u128;
        }
        Ok(Self(v))
    }
}

impl fmt::Display for Ulid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 26];
        let mut v = self.0;
        for slot in out.iter_mut().rev() {
            *slot = ALPHABET[(v & 31) as usize];
            v >>= 5;
        }
        // Every byte comes from the ASCII alphabet.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

/// Whether `name` is a ULID: 26 characters of Crockford base32, the first at most `7`.
pub fn is_ulid(name: &str) -> bool {
    name.len() == 26
        && name.as_bytes()[0] <= b'7'
        && name.bytes().all(|b| {
            matches!(b, b'0'..=b'9' | b'A'..=b'H' | b'J' | b'K' | b'M' | b'N' | b'P'..=b'T' | b'V'..=b'Z')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let u = Ulid::from_parts(1_469_918_176_385, [0; 10]);
        assert_eq!(u.to_string(), "01ARYZ6S410000000000000000");
        assert_eq!(Ulid::parse("01ARYZ6S410000000000000000").unwrap(), u);
        assert_eq!(u.timestamp_ms(), 1_469_918_176_385);
        let g = Ulid::generate().unwrap();
        let s = g.to_string();
        assert_eq!(s.len(), 26);
        assert_eq!(Ulid::parse(&s.to_lowercase()).unwrap(), g);
        assert_ne!(Ulid::generate().unwrap(), g);
        assert!(Ulid::parse("8ZZZZZZZZZZZZZZZZZZZZZZZZZ").is_err());
        assert!(Ulid::parse("01ARYZ6S41000000000000000U").is_err());
        assert!(Ulid::parse("short").is_err());
    }
}
