//! `histogram_quantile` over classic (`le`-labelled) bucket series, with Prometheus's bucket
//! coalescing, monotonicity fix (reported as an info annotation) and interpolation.
//!
//! Native histograms are not supported here; this module must never guess at them.

use std::collections::HashMap;

use gauntlet_tsdb::Labels;
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

pub(crate) fn histogram_quantile(ev: &mut Evaluator<'_>, c: &Call) -> Result<Val> {
    let qarg = c
        .args
        .args
        .first()
        .ok_or_else(|| QueryError::bad("histogram_quantile needs 2 arguments"))?;
    let varg = c
        .args
        .args
        .get(1)
        .ok_or_else(|| QueryError::bad("histogram_quantile needs 2 arguments"))?;
    let qs = ev.eval_scalar(qarg)?;
    let input = ev.eval_vector(varg)?;
    let n = ev.nsteps();
    // Group bucket series by their labels without `le`, once.
    let mut groups: HashMap<Labels, usize> = HashMap::new();
    let mut members: Vec<Vec<(usize, f64)>> = Vec::new();
    let mut glabels: Vec<Labels> = Vec::new();
    for (si, s) in input.iter().enumerate() {
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
    for &q in qs.iter().take(1) {
        if q.is_nan() || !(0.0..=1.0).contains(&q) {
            ev.warn(format!(
                "PromQL warning: quantile value should be between 0 and 1, got {}",
                fmt_go_g(q)
            ));
        }
    }
    let mut out = Vec::with_capacity(glabels.len());
    let mut buckets = Vec::new();
    // Per group, the buckets present at each step (built group by group to bound memory).
    let mut per_step: Vec<Vec<(f64, f64)>> = vec![Vec::new(); n];
    for (g, mem) in members.iter().enumerate() {
        per_step.iter_mut().for_each(Vec::clear);
        for &(si, ub) in mem {
            for p in &input[si].pts {
                if let Some(b) = per_step.get_mut(ev.step_index(p.t)) {
                    b.push((ub, p.v));
                }
            }
        }
        let mut pts = Vec::new();
        for (i, step_buckets) in per_step.iter().enumerate() {
            if step_buckets.is_empty() {
                continue;
            }
            buckets.clear();
            buckets.extend_from_slice(step_buckets);
            let q = qs.get(i).copied().unwrap_or(f64::NAN);
            let (v, forced) = bucket_quantile(q, &mut buckets);
            if forced {
                let name = glabels[g].metric_name().unwrap_or("");
                let mut msg = "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile)".to_string();
                if !name.is_empty() {
                    msg.push_str(&format!(" for metric name {name:?}"));
                }
                ev.info(msg);
            }
            pts.push(Point { t: ev.ts(i), v });
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
