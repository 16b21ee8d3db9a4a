//! Aggregation operators (`sum`, `avg`, `count`, `min`, `max`, `group`, `stddev`, `stdvar`,
//! `quantile`, `topk`, `bottomk`, `count_values`, `limitk`, `limit_ratio`).
//!
//! Each input series is assigned to its group once; values are then accumulated per group and
//! step. Arithmetic follows Prometheus (Kahan-compensated sums, incremental mean on overflow,
//! NaN handling for min/max). Must never hash labels per step.

use std::cmp::Ordering;
use std::collections::HashMap;

use gauntlet_tsdb::labels::METRIC_NAME;
use std::sync::Arc;

use gauntlet_tsdb::histogram::HistogramError;
use gauntlet_tsdb::{FloatHistogram, Labels, LabelsBuilder};
use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_LIMIT_RATIO, T_LIMITK, T_MAX, T_MIN,
    T_QUANTILE, T_STDDEV, T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, Expr, LabelModifier};

use super::error::QueryError;
use super::eval::{Evaluator, Result, VSeries, Val};
use super::functions::{fmt_float, fmt_go_g, incompatible_warning};
use super::value::Point;

/// Neumaier-compensated summation step, as Prometheus does it.
#[inline]
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

#[derive(Clone, Copy, Default)]
struct Acc {
    seen: bool,
    incr: bool,
    v: f64,
    c: f64,
    mean: f64,
    n: f64,
}

/// NaN sorts before everything, as in Prometheus's value heaps.
pub(crate) fn cmp_nan_first(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// Prometheus's `quantile` over a set of values (sorted in place).
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| cmp_nan_first(*a, *b));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

fn group_labels(l: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    match modifier {
        None => Labels::empty(),
        Some(LabelModifier::Include(ls)) => l.keep(&ls.labels),
        Some(LabelModifier::Exclude(ls)) => l.drop_names(&ls.labels),
    }
}

fn param_scalar(ev: &mut Evaluator<'_>, p: &Option<Box<Expr>>) -> Result<Vec<f64>> {
    match p {
        Some(e) => ev.eval_scalar(e),
        None => Err(QueryError::bad("aggregation requires a parameter")),
    }
}

fn to_k(f: f64) -> Result<i64> {
    if f.is_nan() || !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) {
        return Err(QueryError::exec(format!(
            "Scalar value {} overflows int64",
            fmt_go_g(f)
        )));
    }
    Ok(f as i64)
}

pub(crate) fn eval_aggregate(ev: &mut Evaluator<'_>, a: &AggregateExpr) -> Result<Val> {
    let op = a.op.id();
    let params = match op {
        T_TOPK | T_BOTTOMK | T_QUANTILE | T_LIMITK | T_LIMIT_RATIO => {
            Some(param_scalar(ev, &a.param)?)
        }
        _ => None,
    };
    let label_param = if op == T_COUNT_VALUES {
        match a.param.as_deref() {
            Some(Expr::StringLiteral(s)) => Some(s.val.clone()),
            Some(e) => match ev.eval(e)? {
                Val::Str(s) => Some(s),
                _ => return Err(QueryError::bad("count_values requires a string parameter")),
            },
            None => return Err(QueryError::bad("count_values requires a string parameter")),
        }
    } else {
        None
    };
    let input = ev.eval_vector(&a.expr)?;
    let in_samples: usize = input.iter().map(|s| s.pts.len()).sum();
    let n = ev.nsteps();

    // Group assignment, once per series.
    let mut groups: HashMap<Labels, usize> = HashMap::new();
    let mut group_of = Vec::with_capacity(input.len());
    let mut group_lbls: Vec<Labels> = Vec::new();
    let mut group_drop: Vec<bool> = Vec::new();
    let keeps_name = matches!(&a.modifier, Some(LabelModifier::Include(ls)) if ls.labels.iter().any(|l| l == METRIC_NAME));
    for s in &input {
        let gl = group_labels(&s.labels, &a.modifier);
        let next = group_lbls.len();
        let g = *groups.entry(gl.clone()).or_insert_with(|| {
            group_lbls.push(gl);
            group_drop.push(false);
            next
        });
        if s.drop_name && keeps_name {
            group_drop[g] = true;
        }
        group_of.push(g);
    }
    let ng = group_lbls.len();

    let out = match op {
        T_SUM | T_AVG | T_COUNT | T_MIN | T_MAX | T_GROUP | T_STDDEV | T_STDVAR => {
            // Steps are processed in blocks so the accumulators stay bounded (groups × block)
            // however long the range is; each series keeps a cursor into its points.
            // Few groups (the common case) take a single pass over each series.
            const BLOCK: usize = 64;
            const SINGLE_PASS_CELLS: usize = 1 << 18;
            let bw = if ng.saturating_mul(n) <= SINGLE_PASS_CELLS {
                n
            } else {
                BLOCK.min(n)
            }
            .max(1);
            let mut acc = vec![Acc::default(); ng * bw];
            // Histogram sums only for the cells that see histograms (float-only inputs pay
            // nothing).
            let mut hacc: HashMap<usize, HistAcc> = HashMap::new();
            let mut ignored = false;
            let mut mixed = false;
            let mut incompatible: Vec<String> = Vec::new();
            let mut cursors = vec![0usize; input.len()];
            let mut group_pts: Vec<Vec<Point>> = vec![Vec::new(); ng];
            let mut b0 = 0;
            while b0 < n {
                let b1 = (b0 + bw).min(n);
                acc.iter_mut().for_each(|a| a.seen = false);
                hacc.clear();
                for (si, s) in input.iter().enumerate() {
                    let g = group_of[si];
                    let c = &mut cursors[si];
                    while let Some(p) = s.pts.get(*c) {
                        let i = ev.step_index(p.t);
                        if i >= b1 {
                            break;
                        }
                        *c += 1;
                        if i < b0 {
                            continue;
                        }
                        let cell = g * bw + (i - b0);
                        match &p.h {
                            Some(h) if matches!(op, T_SUM | T_AVG) => {
                                if let Err(e) = hacc.entry(cell).or_default().add(h) {
                                    let metric = s.labels.metric_name().unwrap_or("");
                                    incompatible.push(incompatible_warning(e, metric));
                                }
                            }
                            Some(_) if matches!(op, T_COUNT | T_GROUP) => {
                                if let Some(x) = acc.get_mut(cell) {
                                    accumulate(op, x, 0.0);
                                }
                            }
                            Some(_) => ignored = true,
                            None => {
                                if let Some(x) = acc.get_mut(cell) {
                                    accumulate(op, x, p.v);
                                }
                            }
                        }
                    }
                }
                for (g, pts) in group_pts.iter_mut().enumerate() {
                    for k in 0..(b1 - b0) {
                        let x = &acc[g * bw + k];
                        if let Some(hx) = hacc.get_mut(&(g * bw + k)) {
                            if x.seen {
                                mixed = true;
                                continue;
                            }
                            if hx.incompatible {
                                continue;
                            }
                            if let Some(mut h) = hx.sum.take() {
                                if op == T_AVG {
                                    h.div(hx.n);
                                }
                                h.compact();
                                pts.push(Point::histogram(ev.ts(b0 + k), Arc::new(h)));
                            }
                            continue;
                        }
                        if !x.seen {
                            continue;
                        }
                        let v = match op {
                            T_SUM => x.v + x.c,
                            T_AVG => {
                                if x.incr {
                                    x.mean + x.c
                                } else {
                                    (x.v + x.c) / x.n
                                }
                            }
                            T_COUNT => x.n,
                            T_GROUP => 1.0,
                            T_MIN | T_MAX => x.v,
                            T_STDVAR => x.v / x.n,
                            _ => (x.v / x.n).sqrt(),
                        };
                        pts.push(Point::float(ev.ts(b0 + k), v));
                    }
                }
                b0 = b1;
            }
            if ignored {
                ev.info(format!(
                    "PromQL info: ignored histogram in {} aggregation",
                    a.op
                ));
            }
            if mixed {
                ev.warn(
                    "PromQL warning: encountered a mix of histograms and floats for aggregation"
                        .to_string(),
                );
            }
            for w in incompatible {
                ev.warn(w);
            }
            let mut out = Vec::with_capacity(ng);
            for (g, pts) in group_pts.into_iter().enumerate() {
                if !pts.is_empty() {
                    out.push(VSeries {
                        labels: group_lbls[g].clone(),
                        pts,
                        drop_name: group_drop[g],
                    });
                }
            }
            out
        }
        T_QUANTILE => {
            let qs = params.unwrap_or_default();
            for &q in &qs {
                if q.is_nan() || !(0.0..=1.0).contains(&q) {
                    ev.warn(format!(
                        "PromQL warning: quantile value should be between 0 and 1, got {}",
                        fmt_go_g(q)
                    ));
                }
            }
            // Values per step tagged with their group; memory is proportional to the input.
            let mut by_step: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
            if input.iter().any(|s| s.pts.iter().any(|p| p.h.is_some())) {
                ev.info("PromQL info: ignored histogram in quantile aggregation".to_string());
            }
            for (si, s) in input.iter().enumerate() {
                let g = group_of[si];
                for p in s.pts.iter().filter(|p| p.h.is_none()) {
                    if let Some(v) = by_step.get_mut(ev.step_index(p.t)) {
                        v.push((g, p.v));
                    }
                }
            }
            let mut group_pts: Vec<Vec<Point>> = vec![Vec::new(); ng];
            let mut buf: Vec<f64> = Vec::new();
            for (i, vals) in by_step.iter_mut().enumerate() {
                vals.sort_by_key(|x| x.0);
                let q = qs.get(i).copied().unwrap_or(f64::NAN);
                for run in vals.chunk_by(|a, b| a.0 == b.0) {
                    buf.clear();
                    buf.extend(run.iter().map(|x| x.1));
                    group_pts[run[0].0].push(Point::float(ev.ts(i), quantile(q, &mut buf)));
                }
            }
            let mut out = Vec::with_capacity(ng);
            for (g, pts) in group_pts.into_iter().enumerate() {
                if !pts.is_empty() {
                    out.push(VSeries {
                        labels: group_lbls[g].clone(),
                        pts,
                        drop_name: group_drop[g],
                    });
                }
            }
            out
        }
        T_COUNT_VALUES => {
            let name = label_param.unwrap_or_default();
            if !is_valid_label_name(&name) {
                return Err(QueryError::exec(format!(
                    "invalid label name {}",
                    super::durations::go_quote(&name)
                )));
            }
            // Keyed by output labels: the new label may overwrite a grouping label, merging
            // groups.
            let mut idx: HashMap<Labels, usize> = HashMap::new();
            let mut out: Vec<VSeries> = Vec::new();
            let mut counts: Vec<Vec<f64>> = Vec::new();
            let mut by_value: HashMap<(usize, String), usize> = HashMap::new();
            for (si, s) in input.iter().enumerate() {
                let g = group_of[si];
                for p in &s.pts {
                    let value = match &p.h {
                        Some(h) => super::histogram::histogram_string(h),
                        None => fmt_float(p.v),
                    };
                    let o = match by_value.get(&(g, value.clone())) {
                        Some(&o) => o,
                        None => {
                            let mut b: LabelsBuilder = group_lbls[g].builder();
                            b.set(&name, &value);
                            let labels = b.build();
                            let o = match idx.get(&labels) {
                                Some(&o) => o,
                                None => {
                                    idx.insert(labels.clone(), out.len());
                                    out.push(VSeries {
                                        labels,
                                        pts: Vec::new(),
                                        drop_name: false,
                                    });
                                    counts.push(vec![0.0; n]);
                                    out.len() - 1
                                }
                            };
                            by_value.insert((g, value), o);
                            o
                        }
                    };
                    if let Some(c) = counts[o].get_mut(ev.step_index(p.t)) {
                        *c += 1.0;
                    }
                }
            }
            for (o, c) in out.iter_mut().zip(counts) {
                o.pts = c
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0.0)
                    .map(|(i, &c)| Point::float(ev.ts(i), c))
                    .collect();
            }
            out
        }
        T_TOPK | T_BOTTOMK | T_LIMITK | T_LIMIT_RATIO => {
            let ps = params.unwrap_or_default();
            select_series(ev, op, &ps, input, &group_of, ng)?
        }
        _ => {
            return Err(QueryError::exec(format!(
                "unsupported aggregation {}",
                a.op
            )));
        }
    };
    let out_samples: usize = out.iter().map(|s| s.pts.len()).sum();
    ev.add_samples(out_samples)?;
    ev.release_samples(in_samples);
    Ok(Val::Vector(out))
}

/// A group's histogram sum at one step.
#[derive(Clone, Default)]
struct HistAcc {
    sum: Option<FloatHistogram>,
    n: f64,
    incompatible: bool,
}

impl HistAcc {
    /// Adds `h`; an incompatible histogram spoils the sum (no result for this cell).
    fn add(&mut self, h: &FloatHistogram) -> std::result::Result<(), HistogramError> {
        self.n += 1.0;
        match &mut self.sum {
            None => self.sum = Some(h.clone()),
            Some(s) => {
                if let Err(e) = s.add(h) {
                    self.incompatible = true;
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

fn accumulate(op: u16, x: &mut Acc, f: f64) {
    if !x.seen {
        *x = Acc {
            seen: true,
            incr: false,
            v: f,
            c: 0.0,
            mean: f,
            n: 1.0,
        };
        if op == T_STDDEV || op == T_STDVAR {
            x.v = if f.is_nan() || f.is_infinite() {
                f64::NAN
            } else {
                0.0
            };
        }
        return;
    }
    match op {
        T_SUM => (x.v, x.c) = kahan_inc(f, x.v, x.c),
        T_AVG => {
            x.n += 1.0;
            if !x.incr {
                let (nv, nc) = kahan_inc(f, x.v, x.c);
                if !nv.is_infinite() {
                    x.v = nv;
                    x.c = nc;
                    return;
                }
                x.incr = true;
                x.mean = x.v / (x.n - 1.0);
                x.c /= x.n - 1.0;
            }
            if x.mean.is_infinite() {
                if f.is_infinite() && (x.mean > 0.0) == (f > 0.0) {
                    return;
                }
                if !f.is_infinite() && !f.is_nan() {
                    return;
                }
            }
            let cur = x.mean + x.c;
            (x.mean, x.c) = kahan_inc(f / x.n - cur / x.n, x.mean, x.c);
        }
        T_COUNT => x.n += 1.0,
        T_MAX if (x.v < f || x.v.is_nan()) => {
            x.v = f;
        }
        T_MIN if (x.v > f || x.v.is_nan()) => {
            x.v = f;
        }
        T_STDDEV | T_STDVAR => {
            x.n += 1.0;
            let delta = f - x.mean;
            x.mean += delta / x.n;
            x.v += delta * (f - x.mean);
        }
        _ => {}
    }
}

/// Label names must be non-empty valid UTF-8 (raw-byte characters mark bytes that were not).
pub(crate) fn is_valid_label_name(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(super::durations::is_raw_byte)
}

/// `topk`, `bottomk`, `limitk` and `limit_ratio`: pick input series per group and step; the
/// output keeps the input series' labels.
fn select_series(
    ev: &mut Evaluator<'_>,
    op: u16,
    params: &[f64],
    input: Vec<VSeries>,
    group_of: &[usize],
    ng: usize,
) -> Result<Vec<VSeries>> {
    let n = ev.nsteps();
    let mut picked: Vec<Vec<Point>> = vec![Vec::new(); input.len()];
    // Order of output for instant queries: group first-seen order, then rank.
    let mut order: Vec<usize> = Vec::new();
    if op == T_LIMIT_RATIO {
        let mut warned = false;
        let mut ratios = Vec::with_capacity(n);
        for &r0 in params.iter().take(n) {
            if r0.is_nan() {
                return Err(QueryError::exec(format!(
                    "Ratio value {} is NaN",
                    fmt_go_g(r0)
                )));
            }
            let mut r = r0;
            if !(-1.0..=1.0).contains(&r) {
                let cap = if r < 0.0 { -1.0 } else { 1.0 };
                if !warned {
                    ev.warn(format!(
                        "PromQL warning: ratio value should be between -1 and 1, got {}, capping to {}",
                        fmt_go_g(r),
                        fmt_go_g(cap)
                    ));
                    warned = true;
                }
                r = cap;
            }
            ratios.push(r);
        }
        for (si, s) in input.iter().enumerate() {
            // Each series' position in [0, 1) comes from its labels' hash, as in Prometheus,
            // so the same series is kept at every step and Prometheus keeps the same ones.
            let off = s.labels.prometheus_hash() as f64 / u64::MAX as f64;
            for p in &s.pts {
                let Some(&r) = ratios.get(ev.step_index(p.t)) else {
                    continue;
                };
                let keep = if r >= 0.0 { off < r } else { off >= 1.0 + r };
                if keep {
                    picked[si].push(p.clone());
                }
            }
        }
        for (si, _) in input.iter().enumerate() {
            order.push(si);
        }
    } else {
        // Dense view: for each step, which series are present with which value.
        let mut by_step: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
        let mut ignored = false;
        for (si, s) in input.iter().enumerate() {
            for p in &s.pts {
                if p.h.is_some() && op != T_LIMITK {
                    ignored = true;
                    continue;
                }
                if let Some(v) = by_step.get_mut(ev.step_index(p.t)) {
                    v.push((si, p.v));
                }
            }
        }
        if ignored {
            let name = if op == T_TOPK { "topk" } else { "bottomk" };
            ev.info(format!(
                "PromQL info: ignored histogram in {name} aggregation"
            ));
        }
        let mut per_group: Vec<Vec<(usize, f64)>> = vec![Vec::new(); ng];
        const SMALL_K: usize = 64;
        let mut best: Vec<(usize, f64)> = Vec::with_capacity(SMALL_K);
        for (i, present) in by_step.iter().enumerate() {
            if present.is_empty() {
                continue;
            }
            let k = to_k(params.get(i).copied().unwrap_or(f64::NAN))?;
            if k < 1 {
                continue;
            }
            let k = usize::try_from(k).unwrap_or(usize::MAX);
            per_group.iter_mut().for_each(Vec::clear);
            let mut gorder: Vec<usize> = Vec::new();
            for &(si, v) in present {
                let g = group_of[si];
                if per_group[g].is_empty() {
                    gorder.push(g);
                }
                per_group[g].push((si, v));
            }
            for g in gorder {
                let cands = &mut per_group[g];
                // Input order breaks ties, so the selection is deterministic and matches a
                // stable sort.
                let cmp = |a: &(usize, f64), b: &(usize, f64)| -> Ordering {
                    let o = match op {
                        T_TOPK => cmp_nan_first(b.1, a.1),
                        T_BOTTOMK => match (a.1.is_nan(), b.1.is_nan()) {
                            (true, false) => Ordering::Greater,
                            (false, true) => Ordering::Less,
                            _ => a.1.partial_cmp(&b.1).unwrap_or(Ordering::Equal),
                        },
                        _ => Ordering::Equal,
                    };
                    o.then(a.0.cmp(&b.0))
                };
                if op != T_LIMITK {
                    if k <= SMALL_K && k < cands.len() {
                        // Small k: keep a sorted list of the best k; most candidates lose to
                        // the current k-th with a single comparison.
                        best.clear();
                        for &c in cands.iter() {
                            if best.len() == k {
                                if let Some(last) = best.last()
                                    && cmp(&c, last) != Ordering::Less
                                {
                                    continue;
                                }
                                best.pop();
                            }
                            let pos = best.partition_point(|b| cmp(b, &c) == Ordering::Less);
                            best.insert(pos, c);
                        }
                        cands.clear();
                        cands.extend_from_slice(&best);
                    } else {
                        if k < cands.len() {
                            cands.select_nth_unstable_by(k - 1, cmp);
                            cands.truncate(k);
                        }
                        cands.sort_by(cmp);
                    }
                }
                for &(si, v) in cands.iter().take(k) {
                    let t = ev.ts(i);
                    let h = input[si]
                        .pts
                        .iter()
                        .find(|p| p.t == t)
                        .and_then(|p| p.h.clone());
                    picked[si].push(match h {
                        Some(h) => Point::histogram(t, h),
                        None => Point::float(t, v),
                    });
                    if n == 1 {
                        order.push(si);
                    }
                }
            }
        }
        if n != 1 {
            order = (0..input.len()).collect();
        }
    }
    let mut slots: Vec<Option<VSeries>> = input.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(order.len());
    for si in order {
        let pts = std::mem::take(&mut picked[si]);
        if pts.is_empty() {
            continue;
        }
        if let Some(s) = slots.get_mut(si).and_then(Option::take) {
            out.push(VSeries {
                labels: s.labels,
                pts,
                drop_name: s.drop_name,
            });
        }
    }
    Ok(out)
}
