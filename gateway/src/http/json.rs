//! Fast JSON output in exactly the shapes and number formats of Prometheus's HTTP API: sample
//! values as strings in shortest round-trip form (`NaN`, `+Inf`, `-Inf` spelled out), timestamps
//! as seconds with millisecond fractions, strings escaped as Go's encoding/json does.
//!
//! Writes into a `String` directly: results can hold millions of points, and building a
//! `serde_json::Value` tree first would double the memory of every response.

use std::fmt::Write;

use gauntlet_tsdb::{FloatHistogram, Labels};

/// Appends `text` as a JSON string, escaping like Go (`<`, `>`, `&`, U+2028 and U+2029 too).
pub fn write_str(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a millisecond timestamp as Prometheus does: seconds, then `.` and three digits when
/// the milliseconds are not zero (`1700000000.5` is written `1700000000.500`).
pub fn write_timestamp(out: &mut String, t: i64) {
    let magnitude = t.unsigned_abs();
    if t < 0 {
        out.push('-');
    }
    let _ = write!(out, "{}", magnitude / 1000);
    let fraction = magnitude % 1000;
    if fraction != 0 {
        let _ = write!(out, ".{fraction:03}");
    }
}

/// Appends a millisecond timestamp as a plain JSON float of seconds (`1700000000.25`), the form
/// Prometheus uses for scalar and string results.
pub fn write_float_timestamp(out: &mut String, t: i64) {
    #[allow(clippy::cast_precision_loss)]
    let seconds = t as f64 / 1000.0;
    let _ = write!(out, "{seconds}");
}

/// Appends a sample value as a JSON string in Go's `strconv.FormatFloat(v, 'f', -1, 64)` form.
pub fn write_value(out: &mut String, v: f64) {
    out.push('"');
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        // Rust's Display is the shortest round-trip representation without an exponent.
        let _ = write!(out, "{v}");
    }
    out.push('"');
}

/// Appends a value as Prometheus's `jsonutil.MarshalValue` does (histogram counts, sums and
/// bucket bounds): Go's `'f'` format, or `'e'` (`1e-128`, `1.5e+21`) below 1e-6 and from 1e21.
fn write_histogram_value(out: &mut String, v: f64) {
    let abs = v.abs();
    if !v.is_finite() || abs == 0.0 || (1e-6..1e21).contains(&abs) {
        write_value(out, v);
        return;
    }
    let text = format!("{v:e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let (sign, digits) = match exponent.strip_prefix('-') {
        Some(digits) => ('-', digits),
        None => ('+', exponent),
    };
    let _ = write!(out, "\"{mantissa}e{sign}{digits:0>2}\"");
}

/// Appends a native histogram as Prometheus does: count and sum as strings, then every bucket
/// with a non-zero count as `[boundary_rule, "lower", "upper", "count"]`, where the rule is
/// 0 (open left), 1 (open right), 2 (open both) or 3 (closed both).
pub fn write_histogram(out: &mut String, histogram: &FloatHistogram) {
    out.push_str(r#"{"count":"#);
    write_histogram_value(out, histogram.count);
    out.push_str(r#","sum":"#);
    write_histogram_value(out, histogram.sum);
    let buckets: Vec<_> = histogram
        .all_buckets()
        .into_iter()
        .filter(|b| b.count != 0.0)
        .collect();
    if !buckets.is_empty() {
        out.push_str(r#","buckets":["#);
        for (i, bucket) in buckets.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let rule = match (bucket.lower_inclusive, bucket.upper_inclusive) {
                (false, true) => 0,
                (true, false) => 1,
                (false, false) => 2,
                (true, true) => 3,
            };
            let _ = write!(out, "[{rule},");
            write_histogram_value(out, bucket.lower);
            out.push(',');
            write_histogram_value(out, bucket.upper);
            out.push(',');
            write_histogram_value(out, bucket.count);
            out.push(']');
        }
        out.push(']');
    }
    out.push('}');
}

/// Appends a label set as a JSON object in label-name order.
pub fn write_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, &label.name);
        out.push(':');
        write_str(out, &label.value);
    }
    out.push('}');
}

/// Appends `["a","b"]`.
pub fn write_str_array<'a>(out: &mut String, items: impl IntoIterator<Item = &'a str>) {
    out.push('[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, item);
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: f64) -> String {
        let mut out = String::new();
        write_value(&mut out, v);
        out
    }

    fn timestamp(t: i64) -> String {
        let mut out = String::new();
        write_timestamp(&mut out, t);
        out
    }

    #[test]
    fn histogram_values_switch_to_exponents_like_prometheus() {
        let text = |v: f64| {
            let mut out = String::new();
            write_histogram_value(&mut out, v);
            out
        };
        assert_eq!(text(1e-128), "\"1e-128\"");
        assert_eq!(text(-1e-128), "\"-1e-128\"");
        assert_eq!(text(1e-7), "\"1e-07\"");
        assert_eq!(text(1.5e21), "\"1.5e+21\"");
        assert_eq!(text(0.000001), "\"0.000001\"");
        assert_eq!(text(0.0), "\"0\"");
        assert_eq!(text(36.0), "\"36\"");
    }

    #[test]
    fn values_are_formatted_like_go() {
        assert_eq!(value(1.0), "\"1\"");
        assert_eq!(value(0.1), "\"0.1\"");
        assert_eq!(value(-2.5), "\"-2.5\"");
        assert_eq!(value(1e21), "\"1000000000000000000000\"");
        assert_eq!(value(1e-7), "\"0.0000001\"");
        assert_eq!(value(f64::NAN), "\"NaN\"");
        assert_eq!(value(f64::INFINITY), "\"+Inf\"");
        assert_eq!(value(f64::NEG_INFINITY), "\"-Inf\"");
        assert_eq!(value(-0.0), "\"-0\"");
    }

    #[test]
    fn timestamps_are_seconds_with_millisecond_fractions() {
        assert_eq!(timestamp(1_435_781_451_781), "1435781451.781");
        assert_eq!(timestamp(1_500), "1.500");
        assert_eq!(timestamp(1_005), "1.005");
        assert_eq!(timestamp(60_000), "60");
        assert_eq!(timestamp(-1_500), "-1.500");
        assert_eq!(timestamp(0), "0");
    }

    #[test]
    fn strings_are_escaped_like_go() {
        let mut out = String::new();
        write_str(&mut out, "a\"b\\c\n<&>\u{1}\u{2028}é");
        assert_eq!(out, r#""a\"b\\c\n\u003c\u0026\u003e\u0001\u2028é""#);
    }

    #[test]
    fn native_histograms_are_written_like_prometheus() {
        let mut histogram = FloatHistogram {
            schema: 0,
            count: 3.0,
            sum: 5.5,
            ..Default::default()
        };
        histogram.set_positive(&[(1, 1.0), (2, 0.0), (3, 2.0)]);
        let mut out = String::new();
        write_histogram(&mut out, &histogram);
        assert_eq!(
            out,
            r#"{"count":"3","sum":"5.5","buckets":[[0,"1","2","1"],[0,"4","8","2"]]}"#
        );
    }
}
