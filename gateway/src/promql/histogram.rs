//! Histogram functions: `histogram_quantile` over classic (`le`-labelled) bucket series, with
//! Prometheus's bucket coalescing, monotonicity fix (reported as an info annotation) and
//! interpolation, and over native histograms; `histogram_fraction`, `histogram_count`,
//! `histogram_sum`, `histogram_avg`, `histogram_stddev` and `histogram_stdvar` on native
//! histograms.
//!
//! Float samples never reach the native computations and histogram samples never reach the
//! classic ones.

use std::collections::HashMap;

use gauntlet_tsdb::{FloatHistogram, Labels};
use promql_parser::parser::Call;

use super::error::QueryError;
use super::eval::{Evaluator, Result, VSeries, Val};
use super::functions::fmt_go_g;
use super::value::Point;

const SMALL_DELTA_TOLERANCE: f64 = 1e-12;

fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let min_normal = f64::from_bits(0x0010_0000_0000_0000);
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < min_normal {
        return diff < eps * min_normal;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

/// Computes the quantile of classic buckets `(upper_bound, cumulative_count)`; returns the value
/// and whether monotonicity had to be forced.
pub(crate) fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    match buckets.last() {
        Some(b) if b.0 == f64::INFINITY => {}
        _ => return (f64::NAN, false),
    }
    // Coalesce equal upper bounds.
    let mut co: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &b in buckets.iter() {
        match co.last_mut() {
            Some(l) if l.0 == b.0 => l.1 += b.1,
            _ => co.push(b),
        }
    }
    let mut forced = false;
    if let Some(first) = co.first() {
        let mut prev = first.1;
        for b in co.iter_mut().skip(1) {
            let cur = b.1;
            if cur == prev {
                continue;
            }
            if almost_equal(prev, cur, SMALL_DELTA_TOLERANCE) {
                b.1 = prev;
                continue;
            }
            if cur < prev {
                b.1 = prev;
                forced = true;
                continue;
            }
            prev = cur;
        }
    }
    if co.len() < 2 {
        return (f64::NAN, forced);
    }
    let obs = co[co.len() - 1].1;
    if obs == 0.0 {
        return (f64::NAN, forced);
    }
    let mut rank = q * obs;
    let b = co[..co.len() - 1].partition_point(|x| x.1 < rank);
    if b == co.len() - 1 {
        return (co[co.len() - 2].0, forced);
    }
    if b == 0 && co[0].0 <= 0.0 {
        return (co[0].0, forced);
    }
    let mut start = 0.0;
    let end = co[b].0;
    let mut count = co[b].1;
    if b > 0 {
        start = co[b - 1].0;
        count -= co[b - 1].1;
        rank -= co[b - 1].1;
    }
    (start + (end - start) * (rank / count), forced)
}

/// `histogram_quantile(q, v)` and `histogram_fraction(lower, upper, v)`: native histogram
/// samples are evaluated one by one, float samples as classic buckets grouped by their labels
/// without `le`. A native histogram and classic buckets with the same labels at the same step
/// give no result there (with a warning).
pub(crate) fn histogram_quantile(ev: &mut Evaluator<'_>, c: &Call, fraction: bool) -> Result<Val> {
    let name = if fraction {
        "histogram_fraction"
    } else {
        "histogram_quantile"
    };
    let nargs = if fraction { 3 } else { 2 };
    let arg = |i: usize| {
        c.args
            .args
            .get(i)
            .ok_or_else(|| QueryError::bad(format!("{name} needs {nargs} arguments")))
    };
    let mut scalars = Vec::new();
    for i in 0..nargs - 1 {
        scalars.push(ev.eval_scalar(arg(i)?)?);
    }
    let input = ev.eval_vector(arg(nargs - 1)?)?;
    let n = ev.nsteps();
    let param = |k: usize, i: usize| scalars[k].get(i).copied().unwrap_or(f64::NAN);
    // Group bucket series by their labels without `le`, once.
    let mut groups: HashMap<Labels, usize> = HashMap::new();
    let mut members: Vec<Vec<(usize, f64)>> = Vec::new();
    let mut glabels: Vec<Labels> = Vec::new();
    for (si, s) in input.iter().enumerate() {
        if s.pts.iter().all(|p| p.h.is_some()) {
            continue;
        }
        let le = s.labels.get("le");
        let ub = le.and_then(parse_go_float);
        let Some(ub) = ub else {
            let name = s.labels.metric_name().unwrap_or("");
            let mut msg = format!(
                "PromQL warning: bucket label \"le\" is missing or has a malformed value of {:?}",
                le.unwrap_or("")
            );
            if !name.is_empty() {
                msg.push_str(&format!(" for metric name {name:?}"));
            }
            ev.warn(msg);
            continue;
        };
        let key = s.labels.without(&["le"]);
        let next = members.len();
        let g = *groups.entry(key.clone()).or_insert_with(|| {
            members.push(Vec::new());
            glabels.push(key);
            next
        });
        members[g].push((si, ub));
    }
    if !fraction {
        for &q in scalars[0].iter().take(1) {
            if q.is_nan() || !(0.0..=1.0).contains(&q) {
                ev.warn(format!(
                    "PromQL warning: quantile value should be between 0 and 1, got {}",
                    fmt_go_g(q)
                ));
            }
        }
    }
    // Steps at which a group has classic buckets and a native histogram with its labels.
    let mut conflicts: std::collections::HashSet<(usize, usize)> = Default::default();
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for s in &input {
        let g = groups.get(&s.labels).copied();
        let metric = s.labels.metric_name().unwrap_or("");
        let mut pts = Vec::new();
        for p in &s.pts {
            let Some(h) = p.h.as_deref() else { continue };
            let i = ev.step_index(p.t);
            if let Some(g) = g
                && members[g]
                    .iter()
                    .any(|&(si, _)| input[si].pts.iter().any(|q| q.t == p.t && q.h.is_none()))
            {
                conflicts.insert((g, i));
                ev.warn(format!(
                    "PromQL warning: vector contains a mix of classic and native histograms for metric name {metric:?}"
                ));
                continue;
            }
            let (v, note) = if fraction {
                native_fraction(param(0, i), param(1, i), h)
            } else {
                native_quantile(param(0, i), h)
            };
            if let Some(note) = note {
                notes.push(note.message(metric));
            }
            pts.push(Point::float(p.t, v));
        }
        if !pts.is_empty() {
            out.push(VSeries {
                labels: s.labels.clone(),
                pts,
                drop_name: true,
            });
        }
    }
    for note in notes {
        ev.info(note);
    }
    let mut buckets = Vec::new();
    // Per group, the buckets present at each step (built group by group to bound memory).
    let mut per_step: Vec<Vec<(f64, f64)>> = vec![Vec::new(); n];
    for (g, mem) in members.iter().enumerate() {
        per_step.iter_mut().for_each(Vec::clear);
        for &(si, ub) in mem {
            for p in input[si].pts.iter().filter(|p| p.h.is_none()) {
                if let Some(b) = per_step.get_mut(ev.step_index(p.t)) {
                    b.push((ub, p.v));
                }
            }
        }
        let mut pts = Vec::new();
        for (i, step_buckets) in per_step.iter().enumerate() {
            if step_buckets.is_empty() || conflicts.contains(&(g, i)) {
                continue;
            }
            buckets.clear();
            buckets.extend_from_slice(step_buckets);
            let v = if fraction {
                bucket_fraction(param(0, i), param(1, i), &mut buckets)
            } else {
                let (v, forced) = bucket_quantile(param(0, i), &mut buckets);
                if forced {
                    let name = glabels[g].metric_name().unwrap_or("");
                    let mut msg = "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile)".to_string();
                    if !name.is_empty() {
                        msg.push_str(&format!(" for metric name {name:?}"));
                    }
                    ev.info(msg);
                }
                v
            };
            pts.push(Point::float(ev.ts(i), v));
        }
        if !pts.is_empty() {
            out.push(VSeries {
                labels: glabels[g].clone(),
                pts,
                drop_name: true,
            });
        }
    }
    Ok(Val::Vector(out))
}

/// The fraction of observations between `lower` and `upper` in classic buckets
/// `(upper_bound, cumulative_count)`, interpolating linearly.
fn bucket_fraction(lower: f64, upper: f64, buckets: &mut [(f64, f64)]) -> f64 {
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    let mut co: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &b in buckets.iter() {
        match co.last_mut() {
            Some(l) if l.0 == b.0 => l.1 += b.1,
            _ => co.push(b),
        }
    }
    let count = co.last().map_or(0.0, |b| b.1);
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, None, None);
    for (i, &(ub, c)) in co.iter().enumerate() {
        let lb = if i > 0 {
            co[i - 1].0
        } else {
            f64::NEG_INFINITY
        };
        let interpolate = |v: f64| rank + (c - rank) * (v - lb) / (ub - lb);
        if lower_rank.is_none() && lb >= lower {
            lower_rank = Some(rank);
        }
        if upper_rank.is_none() && lb >= upper {
            upper_rank = Some(rank);
        }
        if lower_rank.is_some() && upper_rank.is_some() {
            break;
        }
        if lower_rank.is_none() && lb < lower && ub > lower {
            lower_rank = Some(interpolate(lower));
        }
        if upper_rank.is_none() && lb < upper && ub > upper {
            upper_rank = Some(interpolate(upper));
        }
        if lower_rank.is_some() && upper_rank.is_some() {
            break;
        }
        rank = c;
    }
    let lower_rank = lower_rank.map_or(count, |r: f64| r.min(count));
    let upper_rank = upper_rank.map_or(count, |r: f64| r.min(count));
    (upper_rank - lower_rank) / count
}

/// The `q` quantile of a native histogram, interpolating exponentially within exponential
/// buckets and linearly within the zero bucket and custom buckets.
pub(crate) fn native_quantile(q: f64, h: &FloatHistogram) -> (f64, Option<NanNote>) {
    if q < 0.0 {
        return (f64::NEG_INFINITY, None);
    }
    if q > 1.0 {
        return (f64::INFINITY, None);
    }
    if h.count == 0.0 || q.is_nan() {
        return (f64::NAN, None);
    }
    let mut buckets = h.all_buckets();
    let forward = h.sum.is_nan() || q < 0.5;
    let mut rank = if forward {
        q * h.count
    } else {
        (1.0 - q) * h.count
    };
    if !forward {
        buckets.reverse();
    }
    let mut count = 0.0;
    let mut bucket = None;
    let mut rest = buckets.iter();
    for b in rest.by_ref() {
        if b.count == 0.0 {
            continue;
        }
        count += b.count;
        bucket = Some(*b);
        if count >= rank {
            break;
        }
    }
    // With no populated bucket, Prometheus looks at an empty bucket at zero.
    let mut b = bucket.unwrap_or(gauntlet_tsdb::histogram::Bucket {
        lower: 0.0,
        upper: 0.0,
        lower_inclusive: false,
        upper_inclusive: false,
        count: 0.0,
        index: 0,
    });
    if !h.uses_custom_buckets() && b.lower < 0.0 && b.upper > 0.0 {
        if h.negative_buckets.is_empty() && !h.positive_buckets.is_empty() {
            b.lower = 0.0;
        } else if h.positive_buckets.is_empty() && !h.negative_buckets.is_empty() {
            b.upper = 0.0;
        }
    } else if h.uses_custom_buckets() {
        if b.lower == f64::NEG_INFINITY {
            if b.upper <= 0.0 {
                return (b.upper, None);
            }
            b.lower = 0.0;
        } else if b.upper == f64::INFINITY {
            return (b.lower, None);
        }
    }
    let mut count = count.min(h.count);
    if count < rank {
        if h.sum.is_nan() {
            return (f64::NAN, Some(NanNote::QuantileNan));
        }
        return (b.upper, None);
    }
    if forward {
        rank -= count - b.count;
    } else {
        rank = count - rank;
    }
    let mut note = None;
    if h.sum.is_nan() {
        count += rest.map(|b| b.count).sum::<f64>();
        if count < h.count {
            note = Some(NanNote::QuantileSkew);
        }
    }
    let fraction = rank / b.count;
    if h.uses_custom_buckets() || (b.lower <= 0.0 && b.upper >= 0.0) {
        return (b.lower + (b.upper - b.lower) * fraction, note);
    }
    let log_lower = b.lower.abs().log2();
    let log_upper = b.upper.abs().log2();
    let v = if b.lower > 0.0 {
        (log_lower + (log_upper - log_lower) * fraction).exp2()
    } else {
        -(log_upper + (log_lower - log_upper) * (1.0 - fraction)).exp2()
    };
    (v, note)
}

/// A native histogram as Prometheus prints it (`{count:N, sum:S, [lo,hi):c, ...}`), used as a
/// label value by `count_values`.
pub(crate) fn histogram_string(h: &FloatHistogram) -> String {
    let mut out = format!("{{count:{}, sum:{}", fmt_go_g(h.count), fmt_go_g(h.sum));
    let mut buckets: Vec<_> = h.negative_bucket_list();
    buckets.retain(|b| b.count != 0.0);
    buckets.reverse();
    if h.zero_count != 0.0
        && let Some(z) = h.zero_bucket()
    {
        buckets.push(z);
    }
    buckets.extend(
        h.positive_bucket_list()
            .into_iter()
            .filter(|b| b.count != 0.0),
    );
    for b in buckets {
        out.push_str(&format!(
            ", {}{},{}{}:{}",
            if b.lower_inclusive { '[' } else { '(' },
            fmt_go_g(b.lower),
            fmt_go_g(b.upper),
            if b.upper_inclusive { ']' } else { ')' },
            fmt_go_g(b.count)
        ));
    }
    out.push('}');
    out
}

/// Observations a native histogram cannot place in a bucket (NaN) affect the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NanNote {
    QuantileNan,
    QuantileSkew,
    Fraction,
}

impl NanNote {
    fn message(self, metric: &str) -> String {
        let what = match self {
            NanNote::QuantileNan => {
                "input to histogram_quantile has NaN observations, result is NaN"
            }
            NanNote::QuantileSkew => {
                "input to histogram_quantile has NaN observations, result is skewed higher"
            }
            NanNote::Fraction => {
                "input to histogram_fraction has NaN observations, which are excluded from all fractions"
            }
        };
        format!("PromQL info: {what} for metric name {metric:?}")
    }
}

/// The fraction of a native histogram's observations between `lower` and `upper`.
pub(crate) fn native_fraction(
    lower: f64,
    upper: f64,
    h: &FloatHistogram,
) -> (f64, Option<NanNote>) {
    if h.count == 0.0 || lower.is_nan() || upper.is_nan() {
        return (f64::NAN, None);
    }
    if lower >= upper {
        return (0.0, None);
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, None, None);
    let mut count = 0.0;
    let buckets = h.all_buckets();
    let mut it = buckets.iter();
    for b in it.by_ref() {
        let mut b = *b;
        count += b.count;
        let zero = b.lower <= 0.0 && b.upper >= 0.0;
        if zero {
            if h.negative_buckets.is_empty() && !h.positive_buckets.is_empty() {
                b.lower = 0.0;
            } else if h.positive_buckets.is_empty() && !h.negative_buckets.is_empty() {
                b.upper = 0.0;
            }
        }
        let interpolate = |v: f64| {
            if h.uses_custom_buckets() || zero {
                rank + b.count * (v - b.lower) / (b.upper - b.lower)
            } else {
                let (ll, lu, lv) = (b.lower.abs().log2(), b.upper.abs().log2(), v.abs().log2());
                let f = if v > 0.0 {
                    (lv - ll) / (lu - ll)
                } else {
                    1.0 - (lv - lu) / (ll - lu)
                };
                rank + b.count * f
            }
        };
        if lower_rank.is_none() && b.lower >= lower {
            lower_rank = Some(rank);
        }
        if upper_rank.is_none() && b.lower >= upper {
            upper_rank = Some(rank);
        }
        if lower_rank.is_some() && upper_rank.is_some() {
            break;
        }
        if lower_rank.is_none() && b.lower < lower && b.upper > lower {
            lower_rank = Some(interpolate(lower));
        }
        if upper_rank.is_none() && b.lower < upper && b.upper > upper {
            upper_rank = Some(interpolate(upper));
        }
        if lower_rank.is_some() && upper_rank.is_some() {
            break;
        }
        rank += b.count;
    }
    let mut note = None;
    if h.sum.is_nan() {
        count += it.map(|b| b.count).sum::<f64>();
        if count < h.count {
            note = Some(NanNote::Fraction);
        }
    } else {
        count = h.count;
    }
    let lower_rank = lower_rank.map_or(count, |r: f64| r.min(count));
    let upper_rank = upper_rank.map_or(count, |r: f64| r.min(count));
    ((upper_rank - lower_rank) / h.count, note)
}

/// The variance of a native histogram's observations, each bucket's observations taken at
/// its (geometric, for exponential buckets) midpoint.
fn native_variance(h: &FloatHistogram) -> f64 {
    let mean = h.sum / h.count;
    let (mut v, mut c) = (0.0, 0.0);
    for b in h.all_buckets().iter().filter(|b| b.count != 0.0) {
        let val = if h.uses_custom_buckets() {
            (b.upper + b.lower) / 2.0
        } else if b.lower <= 0.0 && b.upper >= 0.0 {
            0.0
        } else {
            let m = (b.upper * b.lower).sqrt();
            if b.upper < 0.0 { -m } else { m }
        };
        let d = val - mean;
        (v, c) = super::aggregations::kahan_inc(b.count * d * d, v, c);
    }
    (v + c) / h.count
}

/// `histogram_count`, `histogram_sum`, `histogram_avg`, `histogram_stddev` and
/// `histogram_stdvar`: one float per native histogram sample; float
/// samples are dropped.
pub(crate) fn native_function(ev: &mut Evaluator<'_>, c: &Call, name: &str) -> Result<Val> {
    let arg = |i: usize| {
        c.args
            .args
            .get(i)
            .ok_or_else(|| QueryError::bad(format!("{name} needs more arguments")))
    };
    let mut v = ev.eval_vector(arg(0)?)?;
    for s in &mut v {
        s.pts.retain(|p| p.h.is_some());
        for p in &mut s.pts {
            let Some(h) = p.h.take() else { continue };
            p.v = match name {
                "histogram_count" => h.count,
                "histogram_sum" => h.sum,
                "histogram_avg" => h.sum / h.count,
                "histogram_stddev" => native_variance(&h).sqrt(),
                "histogram_stdvar" => native_variance(&h),
                _ => f64::NAN,
            };
        }
        s.drop_name = true;
    }
    v.retain(|s| !s.pts.is_empty());
    Ok(Val::Vector(v))
}

/// Parses a float the way Go's `strconv.ParseFloat` accepts it (incl. `+Inf`, `Inf`, `NaN`).
pub(crate) fn parse_go_float(s: &str) -> Option<f64> {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "+inf" | "inf" | "+infinity" | "infinity" => return Some(f64::INFINITY),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return i64::from_str_radix(h, 16).ok().map(|v| v as f64);
    }
    t.replace('_', "").parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_within_bucket() {
        let mut b = vec![(0.1, 10.0), (0.5, 20.0), (f64::INFINITY, 20.0)];
        let (q, forced) = bucket_quantile(0.75, &mut b);
        assert!(!forced);
        assert!((q - 0.3).abs() < 1e-12, "{q}");
    }

    #[test]
    fn fixes_monotonicity_and_reports_it() {
        let mut b = vec![(1.0, 10.0), (2.0, 8.0), (f64::INFINITY, 12.0)];
        let (_, forced) = bucket_quantile(0.5, &mut b);
        assert!(forced);
    }

    #[test]
    fn edge_cases() {
        assert!(bucket_quantile(0.5, &mut [(1.0, 1.0)]).0.is_nan());
        assert!(
            bucket_quantile(0.5, &mut [(1.0, 0.0), (f64::INFINITY, 0.0)])
                .0
                .is_nan()
        );
        assert_eq!(bucket_quantile(-1.0, &mut []).0, f64::NEG_INFINITY);
        assert_eq!(bucket_quantile(2.0, &mut []).0, f64::INFINITY);
        // Rank in the +Inf bucket returns the highest finite bound.
        assert_eq!(
            bucket_quantile(0.99, &mut [(1.0, 1.0), (f64::INFINITY, 10.0)]).0,
            1.0
        );
        assert_eq!(parse_go_float("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_go_float("0.5"), Some(0.5));
        assert_eq!(parse_go_float("x"), None);
    }
}
