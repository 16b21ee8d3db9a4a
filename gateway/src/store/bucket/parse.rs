//! Parsing of the store gateway's flag values: byte sizes (`250MB`, `2GB`, `512KiB`) and
//! times (RFC3339, or relative to now like `-2w`, as Thanos's `--min-time`/`--max-time`).

/// Parses a byte size: a number with an optional unit B, KB, MB, GB, TB (powers of 1024, as
/// Thanos reads them) or KiB, MiB, GiB, TiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected a number and a unit like 250MB"))?;
    let multiplier: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "KIB" | "K" => 1 << 10,
        "MB" | "MIB" | "M" => 1 << 20,
        "GB" | "GIB" | "G" => 1 << 30,
        "TB" | "TIB" | "T" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {unit:?} (use B, KB, MB, GB or TB)"
            ));
        }
    };
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("invalid size {text:?}: out of range"));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bytes as u64)
}

/// Parses a time flag into milliseconds since the epoch: RFC3339 (`2024-01-02T03:04:05Z`) or a
/// duration relative to `now_ms` with a sign (`-2w`, `-36h`, `+1d`).
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(time.timestamp_millis());
    }
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'-') => (-1, &t[1..]),
        Some(b'+') => (1, &t[1..]),
        _ => (1, t),
    };
    let duration = crate::duration::parse(rest).map_err(|_| {
        format!("invalid time {text:?}: expected RFC3339 or a relative duration like -2w")
    })?;
    let ms = i64::try_from(duration.as_millis())
        .map_err(|_| format!("invalid time {text:?}: out of range"))?;
    Ok(now_ms.saturating_add(sign * ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("250MB"), Ok(250 << 20));
        assert_eq!(parse_size("2GB"), Ok(2 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("1.5KB"), Ok(1536));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MB").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z", 0), Ok(1000));
        assert_eq!(parse_time("-2w", 1_209_600_000), Ok(0));
        assert_eq!(parse_time("-1d", 86_400_000), Ok(0));
        assert!(parse_time("yesterday", 0).is_err());
    }
}
