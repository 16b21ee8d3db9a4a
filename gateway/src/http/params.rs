//! Parsing of Prometheus HTTP API parameters: timestamps, durations and query-range steps, with
//! Prometheus's rules and error messages, each naming the parameter.

use chrono::DateTime;

/// Timestamps in milliseconds since the Unix epoch, as the engine uses them.
pub type Millis = i64;

/// The earliest and latest timestamps Prometheus's API works with (its `minTime`/`maxTime`:
/// the extremes of Go's time type, in milliseconds); larger inputs are clamped onto them.
pub const MIN_TIME: Millis = -9_223_309_901_257_974_000;
pub const MAX_TIME: Millis = 9_223_309_901_257_974_999;

/// The largest number of points a range query may return per series.
pub const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// A parameter that was refused, worded as Prometheus words it (usually
/// `invalid parameter "start": ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParamError {
    /// The parameter at fault.
    pub name: String,
    /// The whole message.
    pub message: String,
}

impl ParamError {
    /// `invalid parameter "NAME": REASON`.
    pub fn new(name: &str, reason: impl std::fmt::Display) -> Self {
        let message = format!("invalid parameter {name:?}: {reason}");
        Self {
            name: name.to_owned(),
            message,
        }
    }

    /// A message that Prometheus does not prefix with the parameter.
    pub fn bare(name: &str, message: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            message: message.into(),
        }
    }
}

/// Parses a timestamp given as Unix seconds (`1700000000.123`) or RFC 3339
/// (`2023-11-14T22:13:20.123Z`), rounded to milliseconds.
pub fn parse_time(name: &str, text: &str) -> Result<Millis, ParamError> {
    let invalid = || ParamError::new(name, format!("cannot parse {text:?} to a valid timestamp"));
    if let Ok(seconds) = text.parse::<f64>() {
        if !seconds.is_finite() {
            return Err(invalid());
        }
        let millis = (seconds * 1000.0).round();
        // Clamp instead of wrapping: timestamps beyond the accepted range mean "unbounded".
        return Ok(clamp_to_time_range(millis));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.timestamp_millis().clamp(MIN_TIME, MAX_TIME))
        .map_err(|_| invalid())
}

#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
fn clamp_to_time_range(millis: f64) -> Millis {
    if millis <= MIN_TIME as f64 {
        MIN_TIME
    } else if millis >= MAX_TIME as f64 {
        MAX_TIME
    } else {
        millis as Millis
    }
}

/// Parses a timestamp parameter that may be absent, defaulting to `default`.
pub fn parse_time_or(
    name: &str,
    text: Option<&str>,
    default: Millis,
) -> Result<Millis, ParamError> {
    match text {
        None | Some("") => Ok(default),
        Some(text) => parse_time(name, text).map_err(|_| {
            let reason = format!("cannot parse {text:?} to a valid timestamp");
            ParamError::new(name, format!("Invalid time value for '{name}': {reason}"))
        }),
    }
}

/// Parses a duration given as float seconds (`15`, `0.5`) or Prometheus syntax (`1m30s`),
/// returning milliseconds.
pub fn parse_duration(name: &str, text: &str) -> Result<Millis, ParamError> {
    if let Ok(seconds) = text.parse::<f64>() {
        let millis = (seconds * 1000.0).round();
        #[allow(clippy::cast_precision_loss)]
        let in_range = millis.is_finite() && millis.abs() < i64::MAX as f64;
        if !in_range {
            return Err(ParamError::new(
                name,
                format!("cannot parse {text:?} to a valid duration. It overflows int64"),
            ));
        }
        #[allow(clippy::cast_possible_truncation)]
        return Ok(millis as Millis);
    }
    crate::duration::parse(text)
        .ok()
        .and_then(|duration| Millis::try_from(duration.as_millis()).ok())
        .ok_or_else(|| ParamError::new(name, format!("cannot parse {text:?} to a valid duration")))
}

/// The validated time range of a range query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeParams {
    pub start: Millis,
    pub end: Millis,
    pub step: Millis,
}

/// Validates `start`, `end` and `step` of `query_range` as Prometheus does.
pub fn parse_range(
    start: Option<&str>,
    end: Option<&str>,
    step: Option<&str>,
) -> Result<RangeParams, ParamError> {
    let start = parse_time("start", start.ok_or_else(|| missing("start"))?)?;
    let end = parse_time("end", end.ok_or_else(|| missing("end"))?)?;
    if end < start {
        return Err(ParamError::new(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    let step = parse_duration("step", step.ok_or_else(|| missing("step"))?)?;
    if step <= 0 {
        return Err(ParamError::new(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    // For safety, limit the number of returned points per timeseries.
    if (end - start) / step > MAX_POINTS_PER_SERIES {
        return Err(ParamError::bare(
            "step",
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    Ok(RangeParams { start, end, step })
}

fn missing(name: &str) -> ParamError {
    ParamError::new(name, "parameter is missing")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_seconds_and_rfc3339() {
        assert_eq!(parse_time("time", "1700000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("time", "1700000000.1234"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("time", "1700000000.1235"), Ok(1_700_000_000_124));
        assert_eq!(
            parse_time("time", "2023-11-14T22:13:20.5Z"),
            Ok(1_700_000_000_500)
        );
        assert_eq!(
            parse_time("time", "2023-11-14T23:13:20+01:00"),
            Ok(1_700_000_000_000)
        );
        assert_eq!(parse_time("time", "-1.5"), Ok(-1500));
        assert_eq!(parse_time("time", "1e300"), Ok(MAX_TIME));
    }

    #[test]
    fn bad_timestamps_name_the_parameter() {
        let error = parse_time("start", "yesterday").expect_err("not a time");
        assert_eq!(
            error.to_string(),
            "invalid parameter \"start\": cannot parse \"yesterday\" to a valid timestamp"
        );
        assert!(parse_time("time", "NaN").is_err());
        assert!(parse_time("time", "Inf").is_err());
    }

    #[test]
    fn durations_in_seconds_and_prometheus_syntax() {
        assert_eq!(parse_duration("step", "15"), Ok(15_000));
        assert_eq!(parse_duration("step", "0.5"), Ok(500));
        assert_eq!(parse_duration("step", "1m30s"), Ok(90_000));
        assert!(parse_duration("step", "fast").is_err());
        assert!(parse_duration("step", "1e300").is_err());
    }

    #[test]
    fn range_validation_follows_prometheus() {
        assert_eq!(
            parse_range(Some("0"), Some("60"), Some("15")),
            Ok(RangeParams {
                start: 0,
                end: 60_000,
                step: 15_000
            })
        );
        let reversed = parse_range(Some("60"), Some("0"), Some("15")).expect_err("end < start");
        assert_eq!(reversed.name, "end");
        let zero_step = parse_range(Some("0"), Some("60"), Some("0")).expect_err("zero step");
        assert_eq!(zero_step.name, "step");
        let too_many = parse_range(Some("0"), Some("11001"), Some("1")).expect_err("too many");
        assert!(
            too_many
                .message
                .starts_with("exceeded maximum resolution of 11,000 points")
        );
        assert!(parse_range(Some("0"), Some("11000"), Some("1")).is_ok());
        assert_eq!(
            parse_range(None, Some("1"), Some("1"))
                .expect_err("missing")
                .name,
            "start"
        );
    }
}
