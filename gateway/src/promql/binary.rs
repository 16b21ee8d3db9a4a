//! Binary operators: arithmetic, comparison (with and without `bool`), `atan2`, and the set
//! operators `and`, `or`, `unless`, with `on`/`ignoring` and `group_left`/`group_right`.
//!
//! Join signatures are computed once per series (labels do not change across steps); only the
//! presence of samples is checked per step. Must report Prometheus's matching errors.

use std::collections::HashMap;
use std::sync::Arc;

use gauntlet_tsdb::labels::METRIC_NAME;
use gauntlet_tsdb::{FloatHistogram, Labels};
use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD,
    T_MUL, T_NEQ, T_POW, T_SUB,
};
use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::error::QueryError;
use super::eval::{Evaluator, Result, VSeries, Val};
use super::value::Point;

pub(crate) fn arith(op: u16, l: f64, r: f64) -> f64 {
    match op {
        T_ADD => l + r,
        T_SUB => l - r,
        T_MUL => l * r,
        T_DIV => l / r,
        T_POW => l.powf(r),
        T_MOD => l % r,
        T_ATAN2 => l.atan2(r),
        _ => f64::NAN,
    }
}

pub(crate) fn is_comparison(op: u16) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

fn compare(op: u16, l: f64, r: f64) -> bool {
    match op {
        T_EQLC => l == r,
        T_NEQ => l != r,
        T_GTR => l > r,
        T_LSS => l < r,
        T_GTE => l >= r,
        T_LTE => l <= r,
        _ => false,
    }
}

/// The value of `l op r` and whether a comparison kept it.
fn elem(op: u16, l: f64, r: f64) -> (f64, bool) {
    if is_comparison(op) {
        (l, compare(op, l, r))
    } else {
        (arith(op, l, r), true)
    }
}

/// An annotation raised by one element operation.
enum Note {
    Info(String),
    Warn(String),
}

fn op_name(op: u16) -> &'static str {
    match op {
        T_ADD => "+",
        T_SUB => "-",
        T_MUL => "*",
        T_DIV => "/",
        T_POW => "^",
        T_MOD => "%",
        T_ATAN2 => "atan2",
        T_EQLC => "==",
        T_NEQ => "!=",
        T_GTR => ">",
        T_LSS => "<",
        T_GTE => ">=",
        T_LTE => "<=",
        _ => "?",
    }
}

/// `l op r` where either side may be a histogram: the float value, the histogram value (if
/// the result is one) and whether a comparison kept it; `Err` for combinations that produce
/// nothing.
fn elem_any(
    op: u16,
    (lf, lh): (f64, Option<&Arc<FloatHistogram>>),
    (rf, rh): (f64, Option<&Arc<FloatHistogram>>),
) -> std::result::Result<(f64, Option<Arc<FloatHistogram>>, bool), Note> {
    let scaled = |h: &FloatHistogram, f: f64, div: bool| {
        let mut h = h.clone();
        if div {
            h.div(f);
        } else {
            h.mul(f);
        }
        h.compact();
        Ok((0.0, Some(Arc::new(h)), true))
    };
    let incompatible = |a: &str, b: &str| {
        Err(Note::Info(format!(
            "PromQL info: incompatible sample types encountered for binary operator {:?}: {a} {} {b}",
            op_name(op),
            op_name(op)
        )))
    };
    match (lh, rh) {
        (None, None) => {
            let (v, keep) = elem(op, lf, rf);
            Ok((v, None, keep))
        }
        (None, Some(h)) if op == T_MUL => scaled(h, lf, false),
        (None, Some(_)) => incompatible("float", "histogram"),
        (Some(h), None) if op == T_MUL => scaled(h, rf, false),
        (Some(h), None) if op == T_DIV => scaled(h, rf, true),
        (Some(_), None) => incompatible("histogram", "float"),
        (Some(a), Some(b)) => match op {
            T_ADD | T_SUB => {
                let mut h = FloatHistogram::clone(a);
                let r = if op == T_ADD { h.add(b) } else { h.sub(b) };
                if r.is_err() {
                    return Err(Note::Warn(format!(
                        "PromQL warning: incompatible bucket layout encountered for binary operator {}",
                        op_name(op)
                    )));
                }
                h.compact();
                Ok((0.0, Some(Arc::new(h)), true))
            }
            T_EQLC => Ok((0.0, Some(a.clone()), a.equals(b))),
            T_NEQ => Ok((0.0, Some(a.clone()), !a.equals(b))),
            _ => incompatible("histogram", "histogram"),
        },
    }
}

fn report(ev: &mut Evaluator<'_>, notes: Vec<Note>) {
    for n in notes {
        match n {
            Note::Info(s) => ev.info(s),
            Note::Warn(s) => ev.warn(s),
        }
    }
}

pub(crate) fn eval_binary(ev: &mut Evaluator<'_>, b: &BinaryExpr) -> Result<Val> {
    let op = b.op.id();
    let default_mod = BinModifier::default();
    let m = b.modifier.as_ref().unwrap_or(&default_mod);
    let ret_bool = m.return_bool;
    let lhs = ev.eval(&b.lhs)?;
    let rhs = ev.eval(&b.rhs)?;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => Ok(Val::Scalar(
            l.iter()
                .zip(&r)
                .map(|(&a, &c)| {
                    if is_comparison(op) {
                        f64::from(u8::from(compare(op, a, c)))
                    } else {
                        arith(op, a, c)
                    }
                })
                .collect(),
        )),
        (Val::Vector(v), Val::Scalar(s)) => {
            let (out, notes) = vector_scalar(ev, op, v, &s, false, ret_bool);
            report(ev, notes);
            Ok(Val::Vector(out))
        }
        (Val::Scalar(s), Val::Vector(v)) => {
            let (out, notes) = vector_scalar(ev, op, v, &s, true, ret_bool);
            report(ev, notes);
            Ok(Val::Vector(out))
        }
        (Val::Vector(l), Val::Vector(r)) => {
            let held: usize = l.iter().chain(r.iter()).map(|s| s.pts.len()).sum();
            let out = match op {
                T_LAND => set_and_unless(ev, l, &r, m, true),
                T_LUNLESS => set_and_unless(ev, l, &r, m, false),
                T_LOR => set_or(ev, l, r, m),
                _ => vector_vector(ev, op, l, r, m)?,
            };
            ev.add_samples(out.iter().map(|s| s.pts.len()).sum())?;
            ev.release_samples(held);
            Ok(Val::Vector(out))
        }
        _ => Err(QueryError::exec(
            "binary operation on unsupported operand types",
        )),
    }
}

fn vector_scalar(
    ev: &Evaluator<'_>,
    op: u16,
    v: Vec<VSeries>,
    s: &[f64],
    swap: bool,
    ret_bool: bool,
) -> (Vec<VSeries>, Vec<Note>) {
    let mut out = Vec::with_capacity(v.len());
    let mut notes = Vec::new();
    for mut series in v {
        series.pts.retain_mut(|p| {
            let sv = s.get(ev.step_index(p.t)).copied().unwrap_or(f64::NAN);
            let (l, r) = if swap {
                ((sv, None), (p.v, p.h.as_ref()))
            } else {
                ((p.v, p.h.as_ref()), (sv, None))
            };
            let (mut val, mut h, keep) = match elem_any(op, l, r) {
                Ok(x) => x,
                Err(n) => {
                    notes.push(n);
                    return false;
                }
            };
            if is_comparison(op) && swap {
                val = r.0;
                h = r.1.cloned();
            }
            if ret_bool {
                p.v = f64::from(u8::from(keep));
                p.h = None;
                return true;
            }
            p.v = val;
            p.h = h;
            keep
        });
        if !is_comparison(op) || ret_bool {
            series.drop_name = true;
        }
        if !series.pts.is_empty() {
            out.push(series);
        }
    }
    (out, notes)
}

/// Signature of a series for matching: `on` keeps only the listed labels, otherwise the listed
/// labels and the metric name are dropped.
fn signature(l: &Labels, m: &BinModifier) -> Labels {
    match &m.matching {
        Some(LabelModifier::Include(ls)) => l.keep(&ls.labels),
        Some(LabelModifier::Exclude(ls)) => l.drop_names(&ls.labels),
        None => l.drop_names(&[]),
    }
}

fn sig_map(ss: &[VSeries], m: &BinModifier) -> (Vec<Labels>, HashMap<Labels, Vec<usize>>) {
    let mut sigs = Vec::with_capacity(ss.len());
    let mut map: HashMap<Labels, Vec<usize>> = HashMap::with_capacity(ss.len());
    for (i, s) in ss.iter().enumerate() {
        let sig = signature(&s.labels, m);
        map.entry(sig.clone()).or_default().push(i);
        sigs.push(sig);
    }
    (sigs, map)
}

fn set_and_unless(
    ev: &Evaluator<'_>,
    l: Vec<VSeries>,
    r: &[VSeries],
    m: &BinModifier,
    and: bool,
) -> Vec<VSeries> {
    let n = ev.nsteps();
    let (_, rmap) = sig_map(r, m);
    // Per signature: steps at which any rhs series is present.
    let mut present: HashMap<&Labels, Vec<bool>> = HashMap::with_capacity(rmap.len());
    for (sig, idxs) in &rmap {
        let mut p = vec![false; n];
        for &i in idxs {
            for pt in &r[i].pts {
                if let Some(x) = p.get_mut(ev.step_index(pt.t)) {
                    *x = true;
                }
            }
        }
        present.insert(sig, p);
    }
    let mut out = Vec::with_capacity(l.len());
    for mut s in l {
        let sig = signature(&s.labels, m);
        let p = present.get(&sig);
        s.pts.retain(|pt| {
            let here = p
                .and_then(|p| p.get(ev.step_index(pt.t)).copied())
                .unwrap_or(false);
            here == and
        });
        if !s.pts.is_empty() {
            out.push(s);
        }
    }
    out
}

fn set_or(ev: &Evaluator<'_>, l: Vec<VSeries>, r: Vec<VSeries>, m: &BinModifier) -> Vec<VSeries> {
    let n = ev.nsteps();
    let mut present: HashMap<Labels, Vec<bool>> = HashMap::with_capacity(l.len());
    for s in &l {
        let p = present
            .entry(signature(&s.labels, m))
            .or_insert_with(|| vec![false; n]);
        for pt in &s.pts {
            if let Some(x) = p.get_mut(ev.step_index(pt.t)) {
                *x = true;
            }
        }
    }
    let mut out = l;
    for mut s in r {
        let sig = signature(&s.labels, m);
        if let Some(p) = present.get(&sig) {
            s.pts
                .retain(|pt| !p.get(ev.step_index(pt.t)).copied().unwrap_or(false));
        }
        if !s.pts.is_empty() {
            out.push(s);
        }
    }
    out
}

fn result_labels(ls: &Labels, rs: &Labels, op: u16, m: &BinModifier) -> Labels {
    let drop = !is_comparison(op);
    // Plain one-to-one matching: the left side's labels, without the name for arithmetic.
    if matches!(m.card, VectorMatchCardinality::OneToOne) && m.matching.is_none() {
        return if drop {
            ls.without(&[METRIC_NAME, "__type__", "__unit__"])
        } else {
            ls.clone()
        };
    }
    let mut b = ls.builder();
    if drop {
        b.del(METRIC_NAME).del("__type__").del("__unit__");
    }
    if matches!(m.card, VectorMatchCardinality::OneToOne) {
        match &m.matching {
            Some(LabelModifier::Include(on)) => {
                let keep: Vec<String> = ls
                    .iter()
                    .filter(|l| !on.labels.contains(&l.name))
                    .map(|l| l.name.clone())
                    .collect();
                for k in keep {
                    b.del(&k);
                }
            }
            Some(LabelModifier::Exclude(ign)) => {
                for k in &ign.labels {
                    b.del(k);
                }
            }
            None => {}
        }
    }
    if let Some(include) = m.card.labels() {
        for ln in &include.labels {
            match rs.get(ln) {
                Some(v) => b.set(ln, v),
                None => b.del(ln),
            };
        }
    }
    b.build()
}

fn vector_vector(
    ev: &mut Evaluator<'_>,
    op: u16,
    l: Vec<VSeries>,
    r: Vec<VSeries>,
    m: &BinModifier,
) -> Result<Vec<VSeries>> {
    let n = ev.nsteps();
    let swapped = matches!(m.card, VectorMatchCardinality::OneToMany(_));
    let (many, one) = if swapped { (r, l) } else { (l, r) };
    let ret_bool = m.return_bool;
    let one_to_one = matches!(m.card, VectorMatchCardinality::OneToOne);

    // Signature groups of the "one" side, numbered once.
    let mut ord_of: HashMap<Labels, usize> = HashMap::with_capacity(one.len());
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, s) in one.iter().enumerate() {
        let next = groups.len();
        let g = *ord_of.entry(signature(&s.labels, m)).or_insert_with(|| {
            groups.push(Vec::new());
            next
        });
        groups[g].push(i);
    }
    // Groups with several "one" series: a dense view of which one is present per step, and
    // the duplicate check Prometheus does.
    let mut group_dense: HashMap<usize, Vec<Option<(usize, usize)>>> = HashMap::new();
    for (g, idxs) in groups.iter().enumerate() {
        if idxs.len() < 2 {
            continue;
        }
        let mut d: Vec<Option<(usize, usize)>> = vec![None; n];
        for &j in idxs {
            for (pi, p) in one[j].pts.iter().enumerate() {
                let i = ev.step_index(p.t);
                let Some(slot) = d.get_mut(i) else { continue };
                if let Some((prev, _)) = *slot {
                    let side = if swapped { "left" } else { "right" };
                    let a = &one[j].labels;
                    let bl = &one[prev].labels;
                    return Err(QueryError::exec(format!(
                        "found duplicate series for the match group {} on the {side} hand-side of the operation: [{a}, {bl}];many-to-many matching not allowed: matching labels must be unique on one side",
                        match_labels(a, m)
                    )));
                }
                *slot = Some((j, pi));
            }
        }
        group_dense.insert(g, d);
    }
    // Group of each "many" series, and how many "many" series share it.
    let many_group: Vec<Option<usize>> = many
        .iter()
        .map(|s| ord_of.get(&signature(&s.labels, m)).copied())
        .collect();
    let mut many_count = vec![0usize; groups.len()];
    for g in many_group.iter().flatten() {
        many_count[*g] += 1;
    }
    // Per (group, step) record of produced result label fingerprints, only where collisions
    // are possible.
    let mut produced: HashMap<usize, Vec<Vec<u64>>> = HashMap::new();
    let mut out: Vec<VSeries> = Vec::with_capacity(many.len());
    let mut fps: Vec<u64> = Vec::new();
    let mut cache: HashMap<(usize, usize), usize> = HashMap::new();
    let mut notes = Vec::new();
    for (mi, ms) in many.iter().enumerate() {
        ev.check()?;
        let Some(g) = many_group[mi] else { continue };
        let check = many_count[g] > 1;
        let single = groups[g].len() == 1;
        let mut j = 0usize;
        // The output series of the last match (nearly always the same one).
        let mut last: Option<(usize, usize)> = None;
        for p in &ms.pts {
            let (oi, q) = if single {
                let oi = groups[g][0];
                let op_pts = &one[oi].pts;
                while j < op_pts.len() && op_pts[j].t < p.t {
                    j += 1;
                }
                match op_pts.get(j) {
                    Some(q) if q.t == p.t => (oi, q),
                    _ => continue,
                }
            } else {
                match group_dense
                    .get(&g)
                    .and_then(|d| d.get(ev.step_index(p.t)).copied().flatten())
                    .and_then(|(oi, pi)| Some((oi, one[oi].pts.get(pi)?)))
                {
                    Some(x) => x,
                    None => continue,
                }
            };
            let (a, b) = ((p.v, p.h.as_ref()), (q.v, q.h.as_ref()));
            let (fl, fr) = if swapped { (b, a) } else { (a, b) };
            let (mut val, mut hv, keep) = match elem_any(op, fl, fr) {
                Ok(x) => x,
                Err(n) => {
                    notes.push(n);
                    continue;
                }
            };
            if ret_bool {
                val = f64::from(u8::from(keep));
                hv = None;
            }
            let cached = match last {
                Some((loi, lo)) if loi == oi => Some(lo),
                _ => cache.get(&(mi, oi)).copied(),
            };
            let oidx = match cached {
                Some(o) => o,
                None => {
                    let lbls = result_labels(&ms.labels, &one[oi].labels, op, m);
                    fps.push(if check { lbls.fingerprint() } else { 0 });
                    out.push(VSeries {
                        labels: lbls,
                        pts: Vec::new(),
                        drop_name: ret_bool || (ms.drop_name && is_comparison(op)),
                    });
                    cache.insert((mi, oi), out.len() - 1);
                    out.len() - 1
                }
            };
            last = Some((oi, oidx));
            if check {
                let steps = produced.entry(g).or_insert_with(|| vec![Vec::new(); n]);
                let i = ev.step_index(p.t);
                if let Some(st) = steps.get_mut(i) {
                    let fp = fps[oidx];
                    if one_to_one {
                        if !st.is_empty() {
                            return Err(QueryError::exec(
                                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                            ));
                        }
                    } else if st.contains(&fp) {
                        return Err(QueryError::exec(
                            "multiple matches for labels: grouping labels must ensure unique matches",
                        ));
                    }
                    st.push(fp);
                }
            }
            if !keep && !ret_bool {
                continue;
            }
            out[oidx].pts.push(match hv {
                Some(h) => Point::histogram(p.t, h),
                None => Point::float(p.t, val),
            });
        }
    }
    report(ev, notes);
    out.retain(|s| !s.pts.is_empty());
    Ok(out)
}

fn match_labels(l: &Labels, m: &BinModifier) -> Labels {
    match &m.matching {
        Some(LabelModifier::Include(on)) => l.keep(&on.labels),
        Some(LabelModifier::Exclude(ign)) => l.drop_names(&ign.labels),
        None => l.drop_names(&[]),
    }
}
