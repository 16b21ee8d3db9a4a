//! PromQL functions: element-wise math, date functions, label manipulation, sorting, and the
//! range-vector functions (`rate`, `*_over_time`, ...) evaluated by sliding a window over each
//! series' samples across all steps.
//!
//! Semantics follow Prometheus 3.x (extrapolation in `rate`/`increase`/`delta`, Kahan sums,
//! NaN propagation as in Go's `math` package). Must never panic on any argument values.

use std::cmp::Ordering;

use gauntlet_tsdb::Labels;
use gauntlet_tsdb::labels::METRIC_NAME;
use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr};

use super::aggregations::{kahan_inc, quantile};
use super::error::QueryError;
use super::eval::{Evaluator, Result, VSeries, Val, retain_floats};
use super::value::{Point, PointValue};
use gauntlet_tsdb::histogram::{CounterResetHint, FloatHistogram, HistogramError};
use std::borrow::Cow;
use std::cell::RefCell;

/// Formats a float the way Go's `strconv.FormatFloat(f, 'f', -1, 64)`/`%g` mostly do for
/// messages and label values.
pub(crate) fn fmt_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        let s = format!("{f}");
        if s == "-0" { "-0".into() } else { s }
    }
}

/// Formats a float like Go's `%g`/`%v` (shortest digits, exponent form below 1e-4 and from
/// 1e6 on), as Prometheus's messages do.
pub(crate) fn fmt_go_g(f: f64) -> String {
    if !f.is_finite() || f == 0.0 {
        return fmt_float(f);
    }
    let sci = format!("{f:e}");
    let Some((mant, exp)) = sci.split_once('e') else {
        return fmt_float(f);
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        return format!("{f}");
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mant}e{sign}{:02}", exp.abs())
}

fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn arg(c: &Call, i: usize) -> Result<&Expr> {
    c.args
        .args
        .get(i)
        .map(|b| b.as_ref())
        .ok_or_else(|| QueryError::bad(format!("missing argument {} to {}", i + 1, c.func.name)))
}

fn string_arg(ev: &mut Evaluator<'_>, c: &Call, i: usize) -> Result<String> {
    match ev.eval(arg(c, i)?)? {
        Val::Str(s) => Ok(s),
        _ => Err(QueryError::bad(format!(
            "expected string argument to {}",
            c.func.name
        ))),
    }
}

/// Applies `f` to every sample; the metric name is dropped.
fn map_vector(ev: &mut Evaluator<'_>, c: &Call, f: impl Fn(f64) -> f64) -> Result<Val> {
    let mut v = ev.eval_vector(arg(c, 0)?)?;
    retain_floats(&mut v);
    for s in &mut v {
        s.pts.iter_mut().for_each(|p| p.v = f(p.v));
        s.drop_name = true;
    }
    Ok(Val::Vector(v))
}

fn scalar_at(s: &[f64], ev: &Evaluator<'_>, t: i64) -> f64 {
    s.get(ev.step_index(t)).copied().unwrap_or(f64::NAN)
}

pub(crate) fn eval_call(ev: &mut Evaluator<'_>, c: &Call) -> Result<Val> {
    let name = c.func.name;
    match name {
        "abs" => map_vector(ev, c, f64::abs),
        "ceil" => map_vector(ev, c, f64::ceil),
        "floor" => map_vector(ev, c, f64::floor),
        "exp" => map_vector(ev, c, f64::exp),
        "sqrt" => map_vector(ev, c, f64::sqrt),
        "ln" => map_vector(ev, c, f64::ln),
        "log2" => map_vector(ev, c, f64::log2),
        "log10" => map_vector(ev, c, f64::log10),
        "sin" => map_vector(ev, c, f64::sin),
        "cos" => map_vector(ev, c, f64::cos),
        "tan" => map_vector(ev, c, f64::tan),
        "asin" => map_vector(ev, c, f64::asin),
        "acos" => map_vector(ev, c, f64::acos),
        "atan" => map_vector(ev, c, f64::atan),
        "sinh" => map_vector(ev, c, f64::sinh),
        "cosh" => map_vector(ev, c, f64::cosh),
        "tanh" => map_vector(ev, c, f64::tanh),
        "asinh" => map_vector(ev, c, f64::asinh),
        "acosh" => map_vector(ev, c, f64::acosh),
        "atanh" => map_vector(ev, c, f64::atanh),
        "deg" => map_vector(ev, c, |x| x * 180.0 / std::f64::consts::PI),
        "rad" => map_vector(ev, c, |x| x * std::f64::consts::PI / 180.0),
        "sgn" => map_vector(ev, c, |x| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        }),
        "pi" => Ok(Val::Scalar(vec![std::f64::consts::PI; ev.nsteps()])),
        "time" => Ok(Val::Scalar(
            (0..ev.nsteps()).map(|i| ev.ts(i) as f64 / 1000.0).collect(),
        )),
        "round" => {
            let to = if c.args.args.len() > 1 {
                Some(ev.eval_scalar(arg(c, 1)?)?)
            } else {
                None
            };
            let mut v = ev.eval_vector(arg(c, 0)?)?;
            retain_floats(&mut v);
            for s in &mut v {
                for p in &mut s.pts {
                    let n = to.as_ref().map_or(1.0, |t| scalar_at(t, ev, p.t));
                    let inv = 1.0 / n;
                    p.v = (p.v * inv + 0.5).floor() / inv;
                }
                s.drop_name = true;
            }
            Ok(Val::Vector(v))
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let (lo, hi) = match name {
                "clamp" => (
                    Some(ev.eval_scalar(arg(c, 1)?)?),
                    Some(ev.eval_scalar(arg(c, 2)?)?),
                ),
                "clamp_min" => (Some(ev.eval_scalar(arg(c, 1)?)?), None),
                _ => (None, Some(ev.eval_scalar(arg(c, 1)?)?)),
            };
            let mut v = ev.eval_vector(arg(c, 0)?)?;
            retain_floats(&mut v);
            for s in &mut v {
                s.pts.retain_mut(|p| {
                    let l = lo.as_ref().map(|x| scalar_at(x, ev, p.t));
                    let h = hi.as_ref().map(|x| scalar_at(x, ev, p.t));
                    match (l, h) {
                        (Some(l), Some(h)) => {
                            if h < l {
                                return false;
                            }
                            p.v = go_max(l, go_min(h, p.v));
                        }
                        (Some(l), None) => p.v = go_max(p.v, l),
                        (None, Some(h)) => p.v = go_min(p.v, h),
                        _ => {}
                    }
                    true
                });
                s.drop_name = true;
            }
            v.retain(|s| !s.pts.is_empty());
            Ok(Val::Vector(v))
        }
        "vector" => {
            let s = ev.eval_scalar(arg(c, 0)?)?;
            let pts = s
                .iter()
                .enumerate()
                .map(|(i, &v)| Point::float(ev.ts(i), v))
                .collect();
            Ok(Val::Vector(vec![VSeries {
                labels: Labels::empty(),
                pts,
                drop_name: false,
            }]))
        }
        "scalar" => {
            let v = ev.eval_vector(arg(c, 0)?)?;
            let n = ev.nsteps();
            let mut cnt = vec![0u32; n];
            let mut val = vec![f64::NAN; n];
            for s in &v {
                for p in s.pts.iter().filter(|p| p.h.is_none()) {
                    let i = ev.step_index(p.t);
                    if i < n {
                        cnt[i] += 1;
                        val[i] = p.v;
                    }
                }
            }
            Ok(Val::Scalar(
                val.into_iter()
                    .zip(cnt)
                    .map(|(v, c)| if c == 1 { v } else { f64::NAN })
                    .collect(),
            ))
        }
        "timestamp" => {
            let a = arg(c, 0)?;
            let mut inner = a;
            while let Expr::Paren(p) = inner {
                inner = &p.expr;
            }
            let mut v = if let Expr::VectorSelector(vs) = inner {
                ev.eval_vector_selector(vs, true)?
            } else {
                let mut v = ev.eval_vector(a)?;
                for s in &mut v {
                    s.pts.iter_mut().for_each(|p| p.v = p.t as f64 / 1000.0);
                }
                v
            };
            v.iter_mut().for_each(|s| s.drop_name = true);
            Ok(Val::Vector(v))
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => {
            let mut v = if c.args.args.is_empty() {
                let pts = (0..ev.nsteps())
                    .map(|i| Point::float(ev.ts(i), ev.ts(i) as f64 / 1000.0))
                    .collect();
                vec![VSeries {
                    labels: Labels::empty(),
                    pts,
                    drop_name: false,
                }]
            } else {
                let mut v = ev.eval_vector(arg(c, 0)?)?;
                retain_floats(&mut v);
                v
            };
            for s in &mut v {
                for p in &mut s.pts {
                    p.v = date_part(name, p.v);
                }
                s.drop_name = true;
            }
            Ok(Val::Vector(v))
        }
        "absent" => {
            let v = ev.eval_vector(arg(c, 0)?)?;
            let n = ev.nsteps();
            let mut present = vec![false; n];
            for s in &v {
                for p in &s.pts {
                    if let Some(x) = present.get_mut(ev.step_index(p.t)) {
                        *x = true;
                    }
                }
            }
            let pts: Vec<Point> = (0..n)
                .filter(|&i| !present[i])
                .map(|i| Point::float(ev.ts(i), 1.0))
                .collect();
            if pts.is_empty() {
                return Ok(Val::Vector(Vec::new()));
            }
            Ok(Val::Vector(vec![VSeries {
                labels: absent_labels(arg(c, 0)?),
                pts,
                drop_name: false,
            }]))
        }
        "absent_over_time" => {
            let ri = ev.eval_range_arg(arg(c, 0)?)?;
            let n = ev.nsteps();
            let mut present = vec![false; n];
            for r in ev.map_windows(&ri, |w, _, _| (!w.is_empty()).then_some(1.0))? {
                for p in r.pts {
                    if let Some(x) = present.get_mut(ev.step_index(p.t)) {
                        *x = true;
                    }
                }
            }
            let pts: Vec<Point> = (0..n)
                .filter(|&i| !present[i])
                .map(|i| Point::float(ev.ts(i), 1.0))
                .collect();
            if pts.is_empty() {
                return Ok(Val::Vector(Vec::new()));
            }
            Ok(Val::Vector(vec![VSeries {
                labels: absent_labels(arg(c, 0)?),
                pts,
                drop_name: false,
            }]))
        }
        "label_replace" => {
            let dst = string_arg(ev, c, 1)?;
            let repl = string_arg(ev, c, 2)?;
            let src = string_arg(ev, c, 3)?;
            let re_s = string_arg(ev, c, 4)?;
            // Prometheus names only the pattern, not why it is invalid.
            let re = super::storage::anchored_regex(&re_s).map_err(|_| {
                QueryError::exec(format!(
                    "invalid regular expression in label_replace(): {re_s}"
                ))
            })?;
            if !valid_label_name(&dst) {
                return Err(QueryError::exec(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let mut v = ev.eval_vector(arg(c, 0)?)?;
            for s in &mut v {
                let sv = s.labels.get(&src).unwrap_or("");
                if let Some(caps) = re.captures(sv) {
                    let mut res = String::new();
                    caps.expand(&repl, &mut res);
                    let mut b = s.labels.builder();
                    b.set(&dst, &res);
                    s.labels = b.build();
                    if dst == METRIC_NAME {
                        s.drop_name = false;
                    }
                }
            }
            Ok(Val::Vector(v))
        }
        "label_join" => {
            let dst = string_arg(ev, c, 1)?;
            let sep = string_arg(ev, c, 2)?;
            let mut srcs = Vec::new();
            for i in 3..c.args.args.len() {
                srcs.push(string_arg(ev, c, i)?);
            }
            if !valid_label_name(&dst) {
                return Err(QueryError::exec(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            for s in &srcs {
                if !valid_label_name(s) {
                    return Err(QueryError::exec(format!(
                        "invalid source label name in label_join(): {s}"
                    )));
                }
            }
            let mut v = ev.eval_vector(arg(c, 0)?)?;
            for s in &mut v {
                let joined: Vec<&str> =
                    srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
                let val = joined.join(&sep);
                let mut b = s.labels.builder();
                b.set(&dst, &val);
                s.labels = b.build();
                if dst == METRIC_NAME {
                    s.drop_name = false;
                }
            }
            Ok(Val::Vector(v))
        }
        "sort" | "sort_desc" => {
            let mut v = ev.eval_vector(arg(c, 0)?)?;
            retain_floats(&mut v);
            if ev.instant_query && ev.nsteps() == 1 {
                let desc = name == "sort_desc";
                v.sort_by(|a, b| {
                    let (x, y) = (
                        a.pts.first().map_or(f64::NAN, |p| p.v),
                        b.pts.first().map_or(f64::NAN, |p| p.v),
                    );
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => Ordering::Equal,
                        (true, false) => Ordering::Greater,
                        (false, true) => Ordering::Less,
                        _ => {
                            let o = x.partial_cmp(&y).unwrap_or(Ordering::Equal);
                            if desc { o.reverse() } else { o }
                        }
                    }
                });
            }
            Ok(Val::Vector(v))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut names = Vec::new();
            for i in 1..c.args.args.len() {
                names.push(string_arg(ev, c, i)?);
            }
            let mut v = ev.eval_vector(arg(c, 0)?)?;
            let desc = name == "sort_by_label_desc";
            v.sort_by(|a, b| {
                let mut o = Ordering::Equal;
                for n in &names {
                    let (x, y) = (a.labels.get(n).unwrap_or(""), b.labels.get(n).unwrap_or(""));
                    if x != y {
                        o = natural_cmp(x, y);
                        break;
                    }
                }
                if o == Ordering::Equal {
                    o = a.labels.cmp(&b.labels);
                }
                if desc { o.reverse() } else { o }
            });
            Ok(Val::Vector(v))
        }
        "histogram_quantile" => super::histogram::histogram_quantile(ev, c, false),
        "histogram_fraction" => super::histogram::histogram_quantile(ev, c, true),
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => super::histogram::native_function(ev, c, name),
        _ => eval_range_function(ev, c),
    }
}

/// Label names must be non-empty valid UTF-8 (raw-byte characters mark bytes that were not).
fn valid_label_name(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(super::durations::is_raw_byte)
}

/// Labels for `absent`: equality matchers of a plain selector (names matched more than once are
/// dropped).
fn absent_labels(e: &Expr) -> Labels {
    let vs = match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::empty(),
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut dup: Vec<String> = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if vs
            .matchers
            .matchers
            .iter()
            .filter(|x| x.name == m.name)
            .count()
            > 1
        {
            dup.push(m.name.clone());
        }
        if matches!(m.op, MatchOp::Equal) {
            if pairs.iter().any(|(n, _)| *n == m.name) {
                dup.push(m.name.clone());
            } else {
                pairs.push((m.name.clone(), m.value.clone()));
            }
        }
    }
    pairs.retain(|(n, _)| !dup.contains(n));
    Labels::from_pairs(&pairs)
}

/// Compares strings with runs of digits compared numerically.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let na = a[si..i].trim_start_matches('0');
            let nb = b[sj..j].trim_start_matches('0');
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            if ab[i] != bb[j] {
                return ab[i].cmp(&bb[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}

/// Converts days since the epoch to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn date_part(name: &str, v: f64) -> f64 {
    if v.is_nan() || v.is_infinite() {
        return f64::NAN;
    }
    let secs = v as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let dim = |y: i64, m: u32| -> u32 {
        match m {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            _ => {
                if is_leap(y) {
                    29
                } else {
                    28
                }
            }
        }
    };
    match name {
        "day_of_month" => f64::from(d),
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => {
            let mut doy = d;
            for mm in 1..m {
                doy += dim(y, mm);
            }
            f64::from(doy)
        }
        "days_in_month" => f64::from(dim(y, m)),
        "hour" => (sod / 3600) as f64,
        "minute" => ((sod % 3600) / 60) as f64,
        "month" => f64::from(m),
        "year" => y as f64,
        _ => f64::NAN,
    }
}

fn sum_kahan(w: &[Point]) -> f64 {
    let (mut s, mut c) = (0.0, 0.0);
    for p in w {
        (s, c) = kahan_inc(p.v, s, c);
    }
    if s.is_infinite() { s } else { s + c }
}

fn avg_over(w: &[Point]) -> f64 {
    let mut sum = w[0].v;
    let mut count = 1.0;
    let (mut mean, mut c) = (0.0, 0.0);
    let mut incr = false;
    for (i, p) in w[1..].iter().enumerate() {
        count = (i + 2) as f64;
        if !incr {
            let (ns, nc) = kahan_inc(p.v, sum, c);
            if !ns.is_infinite() {
                sum = ns;
                c = nc;
                continue;
            }
            incr = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_inc(p.v / count, q * mean, q * c);
    }
    if incr {
        mean + c
    } else {
        sum / count + c / count
    }
}

fn stdvar_over(w: &[Point]) -> f64 {
    let (mut count, mut mean, mut cm, mut aux, mut ca) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in w {
        count += 1.0;
        let delta = p.v - (mean + cm);
        (mean, cm) = kahan_inc(delta / count, mean, cm);
        (aux, ca) = kahan_inc(delta * (p.v - (mean + cm)), aux, ca);
    }
    (aux + ca) / count
}

pub(crate) fn linear_regression(w: &[Point], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init_y = w[0].v;
    let mut const_y = true;
    for (i, p) in w.iter().enumerate() {
        if const_y && i > 0 && p.v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (p.t - intercept_t) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(p.v, sy, cy);
        (sxy, cxy) = kahan_inc(x * p.v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sx += cx;
    sy += cy;
    sxy += cxy;
    sx2 += cx2;
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// Extrapolation of a rate-like result over a window `(et - range, et]` whose first and last
/// samples are at `first_t` and `last_t` (`n` samples). `to_zero`, for counters, is how far
/// before the first sample the counter would have been zero.
fn extrapolation_factor(
    first_t: i64,
    last_t: i64,
    n: usize,
    et: i64,
    range: i64,
    to_zero: Option<f64>,
    is_rate: bool,
) -> f64 {
    let range_start = et.saturating_sub(range);
    let mut to_start = first_t.saturating_sub(range_start) as f64 / 1000.0;
    let mut to_end = et.saturating_sub(last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let avg = sampled / (n - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if let Some(z) = to_zero
        && z < to_start
    {
        to_start = z;
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= range as f64 / 1000.0;
    }
    factor
}

fn extrapolated_rate(
    w: &[Point],
    et: i64,
    range: i64,
    has_reset: bool,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let first = &w[0];
    let last = &w[w.len() - 1];
    let mut result = last.v - first.v;
    if has_reset {
        let mut prev = 0.0;
        for p in w {
            if p.v < prev {
                result += prev;
            }
            prev = p.v;
        }
    }
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let to_zero =
        (is_counter && result > 0.0 && first.v >= 0.0).then(|| sampled * (first.v / result));
    let factor = extrapolation_factor(first.t, last.t, w.len(), et, range, to_zero, is_rate);
    Some(result * factor)
}

/// `rate`/`increase`/`delta` over a window of histograms only.
fn extrapolate_histogram(
    w: &[Point],
    et: i64,
    range: i64,
    mut h: FloatHistogram,
    is_rate: bool,
) -> Option<FloatHistogram> {
    let (first, last) = (w.first()?, w.last()?);
    if w.len() < 2 {
        return None;
    }
    h.mul(extrapolation_factor(
        first.t,
        last.t,
        w.len(),
        et,
        range,
        None,
        is_rate,
    ));
    Some(h)
}

/// The float samples of a window when there are at least `min` (and at least one) of them;
/// `on_ignored` runs when histograms were dropped from a window that still has floats.
fn float_window(w: &[Point], min: usize, on_ignored: impl FnOnce()) -> Option<Cow<'_, [Point]>> {
    if w.iter().all(|p| p.h.is_none()) {
        return (w.len() >= min.max(1)).then_some(Cow::Borrowed(w));
    }
    let f: Vec<Point> = w.iter().filter(|p| p.h.is_none()).cloned().collect();
    if !f.is_empty() {
        on_ignored();
    }
    (f.len() >= min.max(1)).then_some(Cow::Owned(f))
}

/// Warnings and infos raised inside windowing closures, reported afterwards.
#[derive(Default)]
struct Notes {
    warns: Vec<String>,
    infos: Vec<String>,
}

impl Notes {
    fn warn(&mut self, s: String) {
        self.warns.push(s);
    }

    fn info(&mut self, s: String) {
        self.infos.push(s);
    }
}

pub(crate) fn mixed_warning(metric: &str) -> String {
    format!("PromQL warning: encountered a mix of histograms and floats for metric name {metric:?}")
}

pub(crate) fn incompatible_warning(e: HistogramError, metric: &str) -> String {
    match e {
        HistogramError::IncompatibleSchema => format!(
            "PromQL warning: vector contains a mix of histograms with exponential and custom buckets schemas for metric name {metric:?}"
        ),
        HistogramError::IncompatibleBounds => format!(
            "PromQL warning: vector contains histograms with incompatible custom buckets for metric name {metric:?}"
        ),
    }
}

fn not_counter_warning(metric: &str) -> String {
    format!("PromQL warning: this native histogram metric is not a counter: {metric:?}")
}

fn not_gauge_warning(metric: &str) -> String {
    format!("PromQL warning: this native histogram metric is not a gauge: {metric:?}")
}

/// A point's value.
fn point_value(p: &Point) -> PointValue {
    match &p.h {
        Some(h) => PointValue::Histogram(h.clone()),
        None => PointValue::Float(p.v),
    }
}

/// The increase (counters: corrected for resets) between the first and last histogram of a
/// window of histograms; `None` (with a warning) when they cannot be combined.
fn histogram_rate(
    w: &[Point],
    is_counter: bool,
    metric: &str,
    notes: &mut Notes,
) -> Option<FloatHistogram> {
    if w.len() < 2 {
        return None;
    }
    let hs: Vec<&FloatHistogram> = w.iter().filter_map(|p| p.h.as_deref()).collect();
    let (first, last) = (*hs.first()?, *hs.last()?);
    let gauge = |h: &FloatHistogram| h.counter_reset_hint == CounterResetHint::Gauge;
    if is_counter && hs.iter().any(|h| gauge(h)) {
        notes.warn(not_counter_warning(metric));
    }
    // A reset right after the first histogram makes the first one irrelevant.
    let empty;
    let mut prev = first;
    if is_counter && hs[1].detect_reset(first) {
        empty = FloatHistogram {
            schema: hs[1].schema,
            custom_values: hs[1].custom_values.clone(),
            ..FloatHistogram::default()
        };
        prev = &empty;
    }
    let custom = prev.uses_custom_buckets();
    if hs[1..].iter().any(|h| h.uses_custom_buckets() != custom) {
        notes.warn(incompatible_warning(
            HistogramError::IncompatibleSchema,
            metric,
        ));
        return None;
    }
    let min_schema = hs[1..].iter().map(|h| h.schema).fold(prev.schema, i32::min);
    let mut h = last.clone();
    h.reduce_resolution(min_schema);
    if let Err(e) = h.sub(prev) {
        notes.warn(incompatible_warning(e, metric));
        return None;
    }
    if is_counter {
        for cur in &hs[1..] {
            if cur.detect_reset(prev)
                && let Err(e) = h.add(prev)
            {
                notes.warn(incompatible_warning(e, metric));
                return None;
            }
            prev = cur;
        }
    } else if !gauge(first) || !gauge(last) {
        notes.warn(not_gauge_warning(metric));
    }
    h.counter_reset_hint = CounterResetHint::Gauge;
    h.compact();
    Some(h)
}

/// `irate`/`idelta` when one of the last two samples is a histogram.
fn instant_delta_histogram(
    w: &[Point],
    is_rate: bool,
    metric: &str,
    notes: &mut Notes,
) -> Option<FloatHistogram> {
    let (prev, last) = (&w[w.len().checked_sub(2)?], w.last()?);
    let (Some(a), Some(b)) = (&prev.h, &last.h) else {
        notes.warn(mixed_warning(metric));
        return None;
    };
    let interval = last.t - prev.t;
    if interval == 0 {
        return None;
    }
    let gauge = |h: &FloatHistogram| h.counter_reset_hint == CounterResetHint::Gauge;
    if is_rate && (gauge(a) || gauge(b)) {
        notes.warn(not_counter_warning(metric));
    }
    if !is_rate && (!gauge(a) || !gauge(b)) {
        notes.warn(not_gauge_warning(metric));
    }
    let mut h = FloatHistogram::clone(b);
    if (!is_rate || !b.detect_reset(a))
        && let Err(e) = h.sub(a)
    {
        notes.warn(incompatible_warning(e, metric));
        return None;
    }
    h.counter_reset_hint = CounterResetHint::Gauge;
    h.compact();
    if is_rate {
        h.div(interval as f64 / 1000.0);
    }
    Some(h)
}

fn instant_delta(w: &[Point], is_rate: bool) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let last = &w[w.len() - 1];
    let prev = &w[w.len() - 2];
    let mut r = if is_rate && last.v < prev.v {
        last.v
    } else {
        last.v - prev.v
    };
    let interval = last.t - prev.t;
    if interval == 0 {
        return None;
    }
    if is_rate {
        r /= interval as f64 / 1000.0;
    }
    Some(r)
}

fn eval_range_function(ev: &mut Evaluator<'_>, c: &Call) -> Result<Val> {
    let name = c.func.name;
    const RANGE_FUNCS: &[&str] = &[
        "rate",
        "increase",
        "delta",
        "irate",
        "idelta",
        "deriv",
        "predict_linear",
        "double_exponential_smoothing",
        "holt_winters",
        "avg_over_time",
        "sum_over_time",
        "count_over_time",
        "present_over_time",
        "last_over_time",
        "first_over_time",
        "ts_of_last_over_time",
        "ts_of_first_over_time",
        "max_over_time",
        "min_over_time",
        "ts_of_max_over_time",
        "ts_of_min_over_time",
        "stddev_over_time",
        "stdvar_over_time",
        "quantile_over_time",
        "mad_over_time",
        "changes",
        "resets",
    ];
    if !RANGE_FUNCS.contains(&name) {
        return Err(QueryError::exec(format!(
            "function {name}() is not supported (native histograms are not implemented)"
        )));
    }
    // Position of the range-vector argument.
    let (mi, scalar_args): (usize, Vec<usize>) = match name {
        "quantile_over_time" => (1, vec![0]),
        "predict_linear" => (0, vec![1]),
        "double_exponential_smoothing" | "holt_winters" => (0, vec![1, 2]),
        _ => (0, vec![]),
    };
    let mut scalars = Vec::new();
    for &i in &scalar_args {
        scalars.push(ev.eval_scalar(arg(c, i)?)?);
    }
    let input = ev.eval_range_arg(arg(c, mi)?)?;
    let in_samples: usize = input.series.iter().map(|s| s.pts.len()).sum();
    let range = input.range;
    let keep_name = matches!(name, "last_over_time" | "first_over_time");
    if matches!(name, "double_exponential_smoothing" | "holt_winters") {
        for (i, what) in [(0usize, "smoothing"), (1, "trend")] {
            if let Some(&v) = scalars[i].first()
                && (v <= 0.0 || v >= 1.0 || v.is_nan())
            {
                let short = if i == 0 { "sf" } else { "tf" };
                return Err(QueryError::exec(format!(
                    "invalid {what} factor. Expected: 0 < {short} < 1, got: {v:.6}"
                )));
            }
        }
    }
    if name == "quantile_over_time"
        && let Some(&q) = scalars[0].first()
        && (q.is_nan() || !(0.0..=1.0).contains(&q))
    {
        ev.warn(format!(
            "PromQL warning: quantile value should be between 0 and 1, got {}",
            fmt_go_g(q)
        ));
    }
    let start = ev.start;
    let step = ev.step;
    let sidx = |t: i64| usize::try_from(t.saturating_sub(start) / step).unwrap_or(usize::MAX);
    let notes = RefCell::new(Notes::default());
    let mname = |si: usize| input.metric_name(si).to_string();
    // Float-only functions: histograms in the window are ignored (with an info when floats
    // remain); `min` is the number of floats needed for a result.
    let ignored = |si: usize| {
        notes.borrow_mut().info(format!(
            "PromQL info: ignored histograms in a range containing both floats and histograms for metric name {:?}",
            mname(si)
        ));
    };
    let mut out = match name {
        "rate" | "increase" | "delta" => {
            let (is_counter, is_rate) = (name != "delta", name == "rate");
            // Per series, the number of counter resets up to each sample: windows without a
            // reset skip the correction loop.
            let mut cur = usize::MAX;
            let mut resets: Vec<u32> = Vec::new();
            let mut has_hist = false;
            ev.map_windows_idx(&input, |si, pts, lo, hi, et, _| {
                if si != cur {
                    cur = si;
                    has_hist = pts.iter().any(|p| p.h.is_some());
                    resets.clear();
                    if is_counter {
                        let mut acc = 0u32;
                        let mut prev = f64::NEG_INFINITY;
                        resets.extend(pts.iter().map(|p| {
                            if p.v < prev {
                                acc += 1;
                            }
                            prev = p.v;
                            acc
                        }));
                    }
                }
                let w = &pts[lo..hi];
                if has_hist && w.iter().any(|p| p.h.is_some()) {
                    if w.iter().any(|p| p.h.is_none()) {
                        notes.borrow_mut().warn(mixed_warning(&mname(si)));
                        return None;
                    }
                    let mut n = notes.borrow_mut();
                    let h = histogram_rate(w, is_counter, &mname(si), &mut n)?;
                    return extrapolate_histogram(w, et, range, h, is_rate).map(PointValue::from);
                }
                let has_reset = is_counter && hi > lo + 1 && resets[hi - 1] != resets[lo];
                extrapolated_rate(w, et, range, has_reset, is_counter, is_rate)
                    .map(PointValue::from)
            })?
        }
        "irate" | "idelta" => {
            let is_rate = name == "irate";
            ev.map_windows_idx(&input, |si, pts, lo, hi, _, _| {
                let w = &pts[lo..hi];
                if w.len() >= 2 && (w[w.len() - 1].h.is_some() || w[w.len() - 2].h.is_some()) {
                    let mut n = notes.borrow_mut();
                    return instant_delta_histogram(w, is_rate, &mname(si), &mut n)
                        .map(PointValue::from);
                }
                instant_delta(w, is_rate).map(PointValue::from)
            })?
        }
        "deriv" => ev.map_windows_idx(&input, |si, pts, lo, hi, _, _| {
            let w = float_window(&pts[lo..hi], 2, || ignored(si))?;
            Some(linear_regression(&w, w[0].t).0)
        })?,
        "predict_linear" => {
            let d = &scalars[0];
            ev.map_windows_idx(&input, |si, pts, lo, hi, _, t| {
                let w = float_window(&pts[lo..hi], 2, || ignored(si))?;
                let (slope, intercept) = linear_regression(&w, t);
                let dur = d.get(sidx(t)).copied().unwrap_or(f64::NAN);
                Some(slope * dur + intercept)
            })?
        }
        "double_exponential_smoothing" | "holt_winters" => {
            let (sf_s, tf_s) = (&scalars[0], &scalars[1]);
            ev.map_windows_idx(&input, |si, pts, lo, hi, _, t| {
                let w = float_window(&pts[lo..hi], 2, || ignored(si))?;
                let i = sidx(t);
                let sf = sf_s.get(i).copied().unwrap_or(f64::NAN);
                let tf = tf_s.get(i).copied().unwrap_or(f64::NAN);
                let (mut s0, mut s1) = (0.0, w[0].v);
                let mut b = w[1].v - w[0].v;
                for (k, p) in w.iter().enumerate().skip(1) {
                    let x = sf * p.v;
                    if k > 1 {
                        b = tf * (s1 - s0) + (1.0 - tf) * b;
                    }
                    let y = (1.0 - sf) * (s1 + b);
                    s0 = s1;
                    s1 = x + y;
                }
                Some(s1)
            })?
        }
        "avg_over_time" | "sum_over_time" => {
            let avg = name == "avg_over_time";
            ev.map_windows_idx(&input, |si, pts, lo, hi, _, _| {
                let w = &pts[lo..hi];
                let first = w.first()?;
                if first.h.is_none() && w.iter().all(|p| p.h.is_none()) {
                    return Some(PointValue::from(if avg {
                        avg_over(w)
                    } else {
                        sum_kahan(w)
                    }));
                }
                if w.iter().any(|p| p.h.is_none()) {
                    notes.borrow_mut().warn(mixed_warning(&mname(si)));
                    return None;
                }
                let mut sum = FloatHistogram::clone(first.h.as_deref()?);
                for p in &w[1..] {
                    if let Some(h) = &p.h
                        && let Err(e) = sum.add(h)
                    {
                        notes.borrow_mut().warn(incompatible_warning(e, &mname(si)));
                        return None;
                    }
                }
                if avg {
                    sum.div(w.len() as f64);
                }
                sum.compact();
                Some(PointValue::from(sum))
            })?
        }
        "count_over_time" => {
            ev.map_windows(&input, |w, _, _| (!w.is_empty()).then_some(w.len() as f64))?
        }
        "present_over_time" => ev.map_windows(&input, |w, _, _| (!w.is_empty()).then_some(1.0))?,
        "last_over_time" => ev.map_windows(&input, |w, _, _| w.last().map(point_value))?,
        "first_over_time" => ev.map_windows(&input, |w, _, _| w.first().map(point_value))?,
        "ts_of_last_over_time" => {
            ev.map_windows(&input, |w, _, _| w.last().map(|p| p.t as f64 / 1000.0))?
        }
        "ts_of_first_over_time" => {
            ev.map_windows(&input, |w, _, _| w.first().map(|p| p.t as f64 / 1000.0))?
        }
        "max_over_time" | "min_over_time" | "ts_of_max_over_time" | "ts_of_min_over_time" => {
            let is_max = name.contains("max");
            let ts = name.starts_with("ts_of");
            ev.map_windows_idx(&input, |si, pts, lo, hi, _, _| {
                let w = float_window(&pts[lo..hi], 1, || ignored(si))?;
                let first = w.first()?;
                let (mut best, mut bt) = (first.v, first.t);
                for p in w.iter() {
                    let better = if ts {
                        if is_max { p.v >= best } else { p.v <= best }
                    } else if is_max {
                        p.v > best
                    } else {
                        p.v < best
                    };
                    if better || best.is_nan() {
                        best = p.v;
                        bt = p.t;
                    }
                }
                Some(if ts { bt as f64 / 1000.0 } else { best })
            })?
        }
        "stddev_over_time" | "stdvar_over_time" => {
            let dev = name == "stddev_over_time";
            ev.map_windows_idx(&input, |si, pts, lo, hi, _, _| {
                let w = float_window(&pts[lo..hi], 1, || ignored(si))?;
                let v = stdvar_over(&w);
                Some(if dev { v.sqrt() } else { v })
            })?
        }
        "quantile_over_time" => {
            let qs = &scalars[0];
            let mut buf = Vec::new();
            ev.map_windows_idx(&input, |si, pts, lo, hi, _, t| {
                let w = float_window(&pts[lo..hi], 1, || ignored(si))?;
                buf.clear();
                buf.extend(w.iter().map(|p| p.v));
                Some(quantile(
                    qs.get(sidx(t)).copied().unwrap_or(f64::NAN),
                    &mut buf,
                ))
            })?
        }
        "mad_over_time" => {
            let mut buf = Vec::new();
            ev.map_windows_idx(&input, |si, pts, lo, hi, _, _| {
                let w = float_window(&pts[lo..hi], 1, || ignored(si))?;
                buf.clear();
                buf.extend(w.iter().map(|p| p.v));
                let med = quantile(0.5, &mut buf);
                buf.clear();
                buf.extend(w.iter().map(|p| (p.v - med).abs()));
                Some(quantile(0.5, &mut buf))
            })?
        }
        "changes" | "resets" => {
            let changes = name == "changes";
            ev.map_windows(&input, |w, _, _| {
                w.first()?;
                let mut n = 0.0;
                for pair in w.windows(2) {
                    let (prev, p) = (&pair[0], &pair[1]);
                    let counted = match (&prev.h, &p.h) {
                        (None, None) if changes => {
                            !(p.v == prev.v || (p.v.is_nan() && prev.v.is_nan()))
                        }
                        (None, None) => p.v < prev.v,
                        (Some(a), Some(b)) if changes => !b.equals(a),
                        (Some(a), Some(b)) => b.detect_reset(a),
                        _ => true,
                    };
                    if counted {
                        n += 1.0;
                    }
                }
                Some(n)
            })?
        }
        _ => return Err(QueryError::bad(format!("function {name} is not supported"))),
    };
    let notes = notes.into_inner();
    for w in notes.warns {
        ev.warn(w);
    }
    for i in notes.infos {
        ev.info(i);
    }
    if matches!(name, "rate" | "increase") {
        // Only float samples raise the "not a counter" info; histograms carry their own hint.
        for s in out.iter().filter(|s| s.pts.iter().any(|p| p.h.is_none())) {
            if let Some(mn) = s.labels.metric_name()
                && !(mn.ends_with("_total")
                    || mn.ends_with("_sum")
                    || mn.ends_with("_count")
                    || mn.ends_with("_bucket"))
            {
                let msg = format!(
                    "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {mn:?}"
                );
                ev.info(msg);
            }
        }
    }
    if !keep_name {
        out.iter_mut().for_each(|s| s.drop_name = true);
    }
    ev.release_samples(in_samples);
    Ok(Val::Vector(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        // 2024-02-29T13:45:00Z
        let t = 1_709_214_300.0;
        assert_eq!(date_part("year", t), 2024.0);
        assert_eq!(date_part("month", t), 2.0);
        assert_eq!(date_part("day_of_month", t), 29.0);
        assert_eq!(date_part("days_in_month", t), 29.0);
        assert_eq!(date_part("day_of_year", t), 60.0);
        assert_eq!(date_part("day_of_week", t), 4.0);
        assert_eq!(date_part("hour", t), 13.0);
        assert_eq!(date_part("minute", t), 45.0);
        assert_eq!(date_part("year", -1.0), 1969.0);
        assert!(date_part("year", f64::NAN).is_nan());
    }

    #[test]
    fn natural_order() {
        assert_eq!(natural_cmp("a2", "a10"), Ordering::Less);
        assert_eq!(natural_cmp("a10", "a10"), Ordering::Equal);
        assert_eq!(natural_cmp("b", "a10"), Ordering::Greater);
    }

    #[test]
    fn rate_extrapolation() {
        let w: Vec<Point> = (0..5)
            .map(|i| Point::float(15_000 * i + 15_000, (10 * i) as f64))
            .collect();
        // Samples at 15s..75s, window (0, 75s]: delta extrapolates to the window start...
        let v = extrapolated_rate(&w, 75_000, 75_000, false, false, false).unwrap_or(f64::NAN);
        assert!((v - 50.0).abs() < 1e-9, "{v}");
        // ...while a counter is not extrapolated below zero (its first value is 0).
        let v = extrapolated_rate(&w, 75_000, 75_000, false, true, false).unwrap_or(f64::NAN);
        assert!((v - 40.0).abs() < 1e-9, "{v}");
        assert!(extrapolated_rate(&w[..1], 75_000, 75_000, false, true, true).is_none());
        assert_eq!(fmt_float(f64::INFINITY), "+Inf");
        assert_eq!(fmt_float(1.5), "1.5");
        assert_eq!(fmt_go_g(1.5), "1.5");
        assert_eq!(fmt_go_g(1e20), "1e+20");
        assert_eq!(fmt_go_g(123_456_789.0), "1.23456789e+08");
        assert_eq!(fmt_go_g(0.00001), "1e-05");
        assert_eq!(fmt_go_g(-0.5), "-0.5");
        assert_eq!(fmt_go_g(f64::NAN), "NaN");
    }
}
