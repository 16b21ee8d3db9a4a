//! Samples and the staleness marker: the smallest units of series data.
//!
//! Must stay plain data: no I/O, no allocation beyond what a caller asks for.

/// The bit pattern Prometheus writes to mark a series stale.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// True when `v` is exactly the staleness marker (not any other NaN).
#[inline]
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A float sample: timestamp in milliseconds and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Timestamp, milliseconds since the Unix epoch.
    pub t: i64,
    /// Value.
    pub v: f64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stale_marker_is_distinct() {
        assert!(is_stale_nan(stale_nan()));
        assert!(!is_stale_nan(f64::NAN));
    }
}
