//! The evaluator: walks the AST once per query, evaluating every node over all steps at once.
//! Instant vectors are kept series-major (each series carries its points over the steps), range
//! functions slide a window over each series' sorted samples, and label work (grouping, join
//! signatures) happens once per series rather than once per step.
//!
//! It must never call storage (data arrives pre-fetched in [`Fetched`]), never panic, and must
//! check the deadline, cancellation and sample limit while it works.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gauntlet_tsdb::labels::METRIC_NAME;
use gauntlet_tsdb::{CounterResetHint, Labels};
use promql_parser::label::{MatchOp, Matchers};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};

use super::engine::{CancelFlag, EngineOptions};
use super::error::QueryError;
use super::storage::{MatchKind, Matcher, SelectHints, Selection, StoredSeries};
use super::value::{Point, PointValue};

/// Series fetched for one selector.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    pub series: Vec<StoredSeries>,
}

/// What to fetch for one selector node (several selections for `or`-ed matcher sets).
#[derive(Debug)]
pub(crate) struct SelectorPlan {
    pub key: usize,
    pub selections: Vec<Selection>,
}

/// A series of an intermediate value: labels, points (step timestamps for instant vectors, raw
/// timestamps for range vectors) and whether `__name__` is to be dropped at the end.
#[derive(Debug, Clone)]
pub(crate) struct VSeries {
    pub labels: Labels,
    pub pts: Vec<Point>,
    pub drop_name: bool,
}

/// An intermediate value.
#[derive(Debug)]
pub(crate) enum Val {
    /// One value per step.
    Scalar(Vec<f64>),
    Str(String),
    Vector(Vec<VSeries>),
    Matrix(Vec<VSeries>),
}

pub(crate) type Result<T> = std::result::Result<T, QueryError>;

pub(crate) fn expr_type(e: &Expr) -> &'static str {
    match e.value_type() {
        ValueType::Scalar => "scalar",
        ValueType::Vector => "vector",
        ValueType::Matrix => "matrix",
        ValueType::String => "string",
    }
}

/// Deepest expression nesting the engine evaluates.
pub(crate) const MAX_DEPTH: usize = 1000;

/// Checks rules the parser does not enforce; today the nesting limit (computed without
/// recursion, so it is safe on any input).
pub(crate) fn validate(e: &Expr) -> Result<()> {
    let mut stack: Vec<(&Expr, usize)> = vec![(e, 1)];
    while let Some((node, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(QueryError::bad(format!(
                "query is nested too deeply (more than {MAX_DEPTH} levels)"
            )));
        }
        let d = depth + 1;
        match node {
            Expr::Aggregate(a) => {
                stack.push((&a.expr, d));
                if let Some(p) = &a.param {
                    stack.push((p, d));
                }
            }
            Expr::Unary(u) => stack.push((&u.expr, d)),
            Expr::Binary(b) => {
                stack.push((&b.lhs, d));
                stack.push((&b.rhs, d));
            }
            Expr::Paren(p) => stack.push((&p.expr, d)),
            Expr::Subquery(sq) => stack.push((&sq.expr, d)),
            Expr::Call(c) => stack.extend(c.args.args.iter().map(|a| (a.as_ref(), d))),
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn dur_ms(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => dur_ms(d),
        Some(Offset::Neg(d)) => -dur_ms(d),
    }
}

pub(crate) fn at_ms(a: &Option<AtModifier>, qstart: i64, qend: i64) -> Option<i64> {
    match a {
        None => None,
        Some(AtModifier::Start) => Some(qstart),
        Some(AtModifier::End) => Some(qend),
        Some(AtModifier::At(t)) => Some(system_time_ms(t)),
    }
}

pub(crate) fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => dur_ms(&d),
        Err(e) => -dur_ms(&e.duration()),
    }
}

/// Converts the parser's matchers for one selector into matcher sets (one per `or` branch).
fn matcher_sets(vs: &VectorSelector) -> Vec<Vec<Matcher>> {
    let conv = |ms: &[promql_parser::label::Matcher]| -> Vec<Matcher> {
        let mut out: Vec<Matcher> = ms
            .iter()
            .map(|m| match &m.op {
                MatchOp::Equal => Matcher::with_kind(MatchKind::Equal, &m.name, &m.value),
                MatchOp::NotEqual => Matcher::with_kind(MatchKind::NotEqual, &m.name, &m.value),
                MatchOp::Re(r) => Matcher::new(MatchKind::RegexMatch, &m.name, &m.value)
                    .unwrap_or_else(|_| {
                        Matcher::with_regex(MatchKind::RegexMatch, &m.name, &m.value, r.clone())
                    }),
                MatchOp::NotRe(r) => Matcher::new(MatchKind::RegexNoMatch, &m.name, &m.value)
                    .unwrap_or_else(|_| {
                        Matcher::with_regex(MatchKind::RegexNoMatch, &m.name, &m.value, r.clone())
                    }),
            })
            .collect();
        if let Some(name) = &vs.name
            && !out
                .iter()
                .any(|m| m.name == METRIC_NAME && m.kind == MatchKind::Equal && m.value == *name)
        {
            out.push(Matcher::with_kind(MatchKind::Equal, METRIC_NAME, name));
        }
        out
    };
    let Matchers {
        matchers,
        or_matchers,
    } = &vs.matchers;
    if or_matchers.is_empty() {
        vec![conv(matchers)]
    } else {
        or_matchers.iter().map(|set| conv(set)).collect()
    }
}

pub(crate) fn selector_key(vs: &VectorSelector) -> usize {
    std::ptr::from_ref(vs) as usize
}

struct PlanCtx {
    qstart: i64,
    qend: i64,
    step: i64,
    lookback: i64,
    sub_step: i64,
    /// Grouping of the innermost enclosing aggregation (`by`, labels).
    grouping: Option<(bool, Vec<String>)>,
    out: Vec<SelectorPlan>,
}

/// Computes, for every selector, the time range of samples evaluation will need.
pub(crate) fn plan_selectors(
    e: &Expr,
    start: i64,
    end: i64,
    step: i64,
    lookback: i64,
    sub_step: i64,
) -> Vec<SelectorPlan> {
    let mut ctx = PlanCtx {
        qstart: start,
        qend: end,
        step,
        lookback,
        sub_step,
        grouping: None,
        out: Vec::new(),
    };
    plan_walk(e, start, end, &mut ctx, None);
    ctx.out
}

fn plan_walk(e: &Expr, start: i64, end: i64, ctx: &mut PlanCtx, func: Option<&str>) {
    match e {
        Expr::VectorSelector(vs) => plan_selector(vs, start, end, 0, ctx, func),
        Expr::MatrixSelector(ms) => plan_selector(&ms.vs, start, end, dur_ms(&ms.range), ctx, func),
        Expr::Subquery(sq) => {
            let off = offset_ms(&sq.offset);
            let range = dur_ms(&sq.range);
            let (s, en) = match at_ms(&sq.at, ctx.qstart, ctx.qend) {
                Some(a) => (a, a),
                None => (start, end),
            };
            let step = sq.step.as_ref().map(dur_ms).unwrap_or(ctx.sub_step);
            let outer_step = std::mem::replace(&mut ctx.step, step);
            plan_walk(
                &sq.expr,
                s.saturating_sub(off)
                    .saturating_sub(range)
                    .saturating_sub(step),
                en.saturating_sub(off),
                ctx,
                None,
            );
            ctx.step = outer_step;
        }
        Expr::Aggregate(a) => {
            let grouping = match &a.modifier {
                None => (true, Vec::new()),
                Some(promql_parser::parser::LabelModifier::Include(l)) => (true, l.labels.clone()),
                Some(promql_parser::parser::LabelModifier::Exclude(l)) => (false, l.labels.clone()),
            };
            let outer = ctx.grouping.replace(grouping);
            plan_walk(&a.expr, start, end, ctx, None);
            ctx.grouping = outer;
            if let Some(p) = &a.param {
                plan_walk(p, start, end, ctx, None);
            }
        }
        Expr::Unary(u) => plan_walk(&u.expr, start, end, ctx, func),
        Expr::Binary(b) => {
            plan_walk(&b.lhs, start, end, ctx, None);
            plan_walk(&b.rhs, start, end, ctx, None);
        }
        Expr::Paren(p) => plan_walk(&p.expr, start, end, ctx, func),
        Expr::Call(c) => {
            for a in &c.args.args {
                plan_walk(a, start, end, ctx, Some(c.func.name));
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn plan_selector(
    vs: &VectorSelector,
    start: i64,
    end: i64,
    range: i64,
    ctx: &mut PlanCtx,
    func: Option<&str>,
) {
    let off = offset_ms(&vs.offset);
    let (s, e) = match at_ms(&vs.at, ctx.qstart, ctx.qend) {
        Some(a) => (a, a),
        None => (start, end),
    };
    let back = if range > 0 { range } else { ctx.lookback };
    let selections = matcher_sets(vs)
        .into_iter()
        .map(|matchers| Selection {
            matchers,
            start_ms: s.saturating_sub(off).saturating_sub(back).saturating_add(1),
            end_ms: e.saturating_sub(off),
            hints: SelectHints {
                step_ms: ctx.step,
                range_ms: range,
                func: func.map(str::to_string),
                grouping: ctx
                    .grouping
                    .as_ref()
                    .map(|g| g.1.clone())
                    .unwrap_or_default(),
                by: ctx.grouping.as_ref().is_some_and(|g| g.0),
            },
        })
        .collect();
    ctx.out.push(SelectorPlan {
        key: selector_key(vs),
        selections,
    });
}

/// A range-vector argument prepared for windowing: either evaluated series (subqueries) or the
/// stored series of a matrix selector, decoded one at a time while windowing.
pub(crate) struct RangeInput<'a> {
    pub series: Vec<VSeries>,
    pub lazy: Option<LazySource<'a>>,
    pub range: i64,
    pub offset: i64,
    pub at: Option<i64>,
}

/// Stored series to decode on demand, with the time range windows can reach.
pub(crate) struct LazySource<'a> {
    pub series: &'a [StoredSeries],
    pub mint: i64,
    pub maxt: i64,
}

pub(crate) struct Evaluator<'a> {
    pub opts: &'a EngineOptions,
    data: &'a HashMap<usize, Fetched>,
    pub start: i64,
    pub end: i64,
    /// Step between evaluation timestamps (1 for instant evaluation).
    pub step: i64,
    pub qstart: i64,
    pub qend: i64,
    pub instant_query: bool,
    pub lookback: i64,
    deadline: Instant,
    cancel: CancelFlag,
    warnings: Vec<String>,
    infos: Vec<String>,
    pub cur_samples: usize,
    buf: Vec<Point>,
    ticks: u32,
}

impl<'a> Evaluator<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        opts: &'a EngineOptions,
        data: &'a HashMap<usize, Fetched>,
        start: i64,
        end: i64,
        step: i64,
        lookback: i64,
        deadline: Instant,
        cancel: CancelFlag,
    ) -> Self {
        Self {
            opts,
            data,
            start,
            end,
            step: if step <= 0 { 1 } else { step },
            qstart: start,
            qend: end,
            instant_query: step <= 0,
            lookback,
            deadline,
            cancel,
            warnings: Vec::new(),
            infos: Vec::new(),
            cur_samples: 0,
            buf: Vec::new(),
            ticks: 0,
        }
    }

    pub fn take_annotations(&mut self) -> (Vec<String>, Vec<String>) {
        (
            std::mem::take(&mut self.warnings),
            std::mem::take(&mut self.infos),
        )
    }

    pub fn warn(&mut self, s: String) {
        if !self.warnings.contains(&s) {
            self.warnings.push(s);
        }
    }

    pub fn info(&mut self, s: String) {
        if !self.infos.contains(&s) {
            self.infos.push(s);
        }
    }

    /// Number of evaluation steps.
    pub fn nsteps(&self) -> usize {
        let n = (i128::from(self.end) - i128::from(self.start)) / i128::from(self.step) + 1;
        usize::try_from(n).unwrap_or(0)
    }

    /// Fails when the current evaluation would need more steps than samples allowed, before
    /// anything is allocated for them.
    pub fn check_steps(&self) -> Result<()> {
        let n = (i128::from(self.end) - i128::from(self.start)) / i128::from(self.step) + 1;
        if n > i128::try_from(self.opts.max_samples).unwrap_or(i128::MAX) {
            return Err(QueryError::too_many_samples());
        }
        Ok(())
    }

    #[inline]
    pub fn ts(&self, i: usize) -> i64 {
        self.start
            .saturating_add((i as i64).saturating_mul(self.step))
    }

    #[inline]
    pub fn step_index(&self, t: i64) -> usize {
        usize::try_from(t.saturating_sub(self.start) / self.step).unwrap_or(usize::MAX)
    }

    /// Checks deadline and cancellation (cheaply: the clock is read every 64 calls).
    pub fn check(&mut self) -> Result<()> {
        if self.cancel.is_canceled() {
            return Err(QueryError::Canceled("query execution"));
        }
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(64) && Instant::now() > self.deadline {
            return Err(QueryError::Timeout("query execution"));
        }
        Ok(())
    }

    /// Records `n` more samples held; fails past the limit.
    pub fn add_samples(&mut self, n: usize) -> Result<()> {
        self.cur_samples = self.cur_samples.saturating_add(n);
        if self.cur_samples > self.opts.max_samples {
            return Err(QueryError::too_many_samples());
        }
        Ok(())
    }

    pub fn release_samples(&mut self, n: usize) {
        self.cur_samples = self.cur_samples.saturating_sub(n);
    }

    pub fn eval_top(&mut self, e: &Expr) -> Result<Val> {
        self.check_steps()?;
        let v = self.eval(e)?;
        Ok(match v {
            Val::Vector(mut ss) => {
                finish_names(&mut ss);
                if self.instant_query {
                    check_unique(&ss)?;
                    Val::Vector(ss)
                } else {
                    Val::Vector(merge_same_labels(ss)?)
                }
            }
            Val::Matrix(mut ss) => {
                finish_names(&mut ss);
                Val::Matrix(merge_same_labels(ss)?)
            }
            other => other,
        })
    }

    pub fn eval(&mut self, e: &Expr) -> Result<Val> {
        // Deep expressions recurse deeply: grow the stack on demand instead of overflowing it.
        stacker::maybe_grow(128 * 1024, 2 * 1024 * 1024, || self.eval_node(e))
    }

    fn eval_node(&mut self, e: &Expr) -> Result<Val> {
        self.check()?;
        match e {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(vec![n.val; self.nsteps()])),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Unary(u) => match self.eval(&u.expr)? {
                Val::Scalar(mut v) => {
                    v.iter_mut().for_each(|x| *x = -*x);
                    Ok(Val::Scalar(v))
                }
                Val::Vector(mut ss) => {
                    for s in &mut ss {
                        for p in &mut s.pts {
                            p.v = -p.v;
                            if let Some(h) = &mut p.h {
                                std::sync::Arc::make_mut(h).mul(-1.0);
                            }
                        }
                        s.drop_name = true;
                    }
                    Ok(Val::Vector(ss))
                }
                _ => Err(QueryError::exec(
                    "unary expression only allowed on expressions of type scalar or instant vector",
                )),
            },
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.eval_vector_selector(vs, false)?)),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                let ri = self.eval_range_arg(e)?;
                let (range, offset, at) = (ri.range, ri.offset, ri.at);
                let series = self.materialize(ri)?;
                let ri = RangeInput {
                    series,
                    lazy: None,
                    range,
                    offset,
                    at,
                };
                // A range vector as a result: the window at the (single) evaluation time.
                let t = ri.at.unwrap_or(self.start).saturating_sub(ri.offset);
                let mut out = Vec::with_capacity(ri.series.len());
                for s in ri.series {
                    let pts: Vec<Point> = s
                        .pts
                        .into_iter()
                        .filter(|p| p.t > t.saturating_sub(ri.range) && p.t <= t)
                        .collect();
                    if !pts.is_empty() {
                        out.push(VSeries {
                            labels: s.labels,
                            pts,
                            drop_name: s.drop_name,
                        });
                    }
                }
                Ok(Val::Matrix(out))
            }
            Expr::Call(c) => super::functions::eval_call(self, c),
            Expr::Aggregate(a) => super::aggregations::eval_aggregate(self, a),
            Expr::Binary(b) => super::binary::eval_binary(self, b),
            Expr::Extension(_) => Err(QueryError::exec("unsupported expression")),
        }
    }

    /// Evaluates and expects an instant vector.
    pub fn eval_vector(&mut self, e: &Expr) -> Result<Vec<VSeries>> {
        match self.eval(e)? {
            Val::Vector(v) => Ok(v),
            _ => Err(QueryError::exec(format!(
                "expected instant vector, got {}",
                expr_type(e)
            ))),
        }
    }

    /// Evaluates and expects a scalar (one value per step).
    pub fn eval_scalar(&mut self, e: &Expr) -> Result<Vec<f64>> {
        match self.eval(e)? {
            Val::Scalar(v) => Ok(v),
            _ => Err(QueryError::exec(format!(
                "expected scalar, got {}",
                expr_type(e)
            ))),
        }
    }

    fn decode(&mut self, s: &StoredSeries, mint: i64, maxt: i64) -> Result<Vec<Point>> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        s.decode_into(mint, maxt, &mut buf)?;
        Ok(buf)
    }

    /// Evaluates an instant selector at every step. With `timestamps`, values are the selected
    /// samples' timestamps in seconds (for `timestamp()`).
    pub fn eval_vector_selector(
        &mut self,
        vs: &VectorSelector,
        timestamps: bool,
    ) -> Result<Vec<VSeries>> {
        let data = self.data;
        let Some(f) = data.get(&selector_key(vs)) else {
            return Ok(Vec::new());
        };
        let off = offset_ms(&vs.offset);
        let at = at_ms(&vs.at, self.qstart, self.qend);
        let n = self.nsteps();
        let (first_et, last_et) = match at {
            Some(a) => (a.saturating_sub(off), a.saturating_sub(off)),
            None => (self.start.saturating_sub(off), self.end.saturating_sub(off)),
        };
        let mut out = Vec::with_capacity(f.series.len());
        for s in &f.series {
            self.check()?;
            let buf = self.decode(
                s,
                first_et.saturating_sub(self.lookback).saturating_add(1),
                last_et,
            )?;
            let mut pts = Vec::new();
            if at.is_some() {
                if let Some(p) = pick(&buf, first_et, self.lookback, timestamps) {
                    pts = (0..n).map(|i| Point::at(self.ts(i), p.clone())).collect();
                }
            } else {
                // One point a step at most, and only steps from the first sample to the end of
                // the last one's lookback window.
                if let (Some(first), Some(last)) = (buf.first(), buf.last()) {
                    let span = last.t.saturating_add(self.lookback).saturating_sub(first.t);
                    let steps = usize::try_from(span / self.step).unwrap_or(usize::MAX);
                    pts.reserve(n.min(steps.saturating_add(1)));
                }
                let mut j = 0usize; // number of samples with t <= et
                for i in 0..n {
                    let t = self.ts(i);
                    let et = t.saturating_sub(off);
                    while j < buf.len() && buf[j].t <= et {
                        j += 1;
                    }
                    if j == 0 {
                        continue;
                    }
                    let s = &buf[j - 1];
                    if s.t <= et.saturating_sub(self.lookback) || s.is_stale() {
                        continue;
                    }
                    pts.push(if timestamps {
                        Point::float(t, s.t as f64 / 1000.0)
                    } else {
                        Point { t, ..s.clone() }
                    });
                }
            }
            self.buf = buf;
            if !pts.is_empty() {
                self.add_samples(pts.len())?;
                out.push(VSeries {
                    labels: s.labels.clone(),
                    pts,
                    drop_name: false,
                });
            }
        }
        Ok(out)
    }

    /// Prepares a range-vector argument (matrix selector or subquery) for windowing: raw samples
    /// (without staleness markers) covering every window the steps will need.
    pub fn eval_range_arg(&mut self, e: &Expr) -> Result<RangeInput<'a>> {
        match e {
            Expr::Paren(p) => self.eval_range_arg(&p.expr),
            Expr::MatrixSelector(ms) => {
                let vs = &ms.vs;
                let range = dur_ms(&ms.range);
                let off = offset_ms(&vs.offset);
                let at = at_ms(&vs.at, self.qstart, self.qend);
                let (first_et, last_et) = match at {
                    Some(a) => (a.saturating_sub(off), a.saturating_sub(off)),
                    None => (self.start.saturating_sub(off), self.end.saturating_sub(off)),
                };
                let data = self.data;
                let lazy = data.get(&selector_key(vs)).map(|f| LazySource {
                    series: f.series.as_slice(),
                    mint: first_et.saturating_sub(range).saturating_add(1),
                    maxt: last_et,
                });
                Ok(RangeInput {
                    series: Vec::new(),
                    lazy,
                    range,
                    offset: off,
                    at,
                })
            }
            Expr::Subquery(sq) => {
                let range = dur_ms(&sq.range);
                let off = offset_ms(&sq.offset);
                let at = at_ms(&sq.at, self.qstart, self.qend);
                let step = sq
                    .step
                    .as_ref()
                    .map(dur_ms)
                    .unwrap_or_else(|| dur_ms(&self.opts.default_subquery_step))
                    .max(1);
                let (s, en) = match at {
                    Some(a) => (a, a),
                    None => (self.start, self.end),
                };
                let new_start = s.saturating_sub(off).saturating_sub(range);
                let mut inner_start = step * (new_start / step);
                if inner_start <= new_start {
                    inner_start = inner_start.saturating_add(step);
                }
                let inner_end = en.saturating_sub(off);
                let saved = (self.start, self.end, self.step);
                self.start = inner_start;
                self.end = inner_end.max(inner_start - step);
                self.step = step;
                let r = if inner_end < inner_start {
                    Ok(Val::Vector(Vec::new()))
                } else {
                    self.check_steps().and_then(|()| self.eval(&sq.expr))
                };
                (self.start, self.end, self.step) = saved;
                let series = match r? {
                    Val::Vector(mut v) => {
                        // Explicit counter reset hints may be wrong for the subquery's samples
                        // (a reset sample returned several times, or not at all): readers
                        // detect resets themselves, as for floats.
                        for p in v.iter_mut().flat_map(|s| s.pts.iter_mut()) {
                            if let Some(h) = &mut p.h
                                && matches!(
                                    h.counter_reset_hint,
                                    CounterResetHint::CounterReset
                                        | CounterResetHint::NotCounterReset
                                )
                            {
                                std::sync::Arc::make_mut(h).counter_reset_hint =
                                    CounterResetHint::Unknown;
                            }
                        }
                        v
                    }
                    Val::Scalar(v) => {
                        let pts = v
                            .iter()
                            .enumerate()
                            .map(|(i, &x)| {
                                Point::float(
                                    inner_start.saturating_add((i as i64).saturating_mul(step)),
                                    x,
                                )
                            })
                            .collect();
                        vec![VSeries {
                            labels: Labels::empty(),
                            pts,
                            drop_name: false,
                        }]
                    }
                    _ => {
                        return Err(QueryError::exec(
                            "subquery is only allowed on instant vector or scalar",
                        ));
                    }
                };
                Ok(RangeInput {
                    series,
                    lazy: None,
                    range,
                    offset: off,
                    at,
                })
            }
            _ => Err(QueryError::exec(format!(
                "expected range vector, got {}",
                expr_type(e)
            ))),
        }
    }
}

impl RangeInput<'_> {
    /// Metric name of input series `si` ("" when it has none).
    pub fn metric_name(&self, si: usize) -> &str {
        let l = match &self.lazy {
            Some(l) => l.series.get(si).map(|s| &s.labels),
            None => self.series.get(si).map(|s| &s.labels),
        };
        l.and_then(Labels::metric_name).unwrap_or("")
    }
}

impl<'a> Evaluator<'a> {
    /// Applies `f` to each step's window `(et - range, et]` of every series, producing points at
    /// the step timestamps. `f` gets the window, the window end `et` and the step timestamp.
    pub fn map_windows<F, V>(&mut self, input: &RangeInput<'_>, mut f: F) -> Result<Vec<VSeries>>
    where
        F: FnMut(&[Point], i64, i64) -> Option<V>,
        V: Into<PointValue>,
    {
        self.map_windows_idx(input, |_, pts, lo, hi, et, t| f(&pts[lo..hi], et, t))
    }

    /// Like [`Self::map_windows`], but `f` gets the series index, all of its points and the
    /// window bounds `lo..hi`, so it can use per-series precomputed data.
    pub fn map_windows_idx<F, V>(
        &mut self,
        input: &RangeInput<'_>,
        mut f: F,
    ) -> Result<Vec<VSeries>>
    where
        F: FnMut(usize, &[Point], usize, usize, i64, i64) -> Option<V>,
        V: Into<PointValue>,
    {
        let n = self.nsteps();
        let count = input
            .lazy
            .as_ref()
            .map_or(input.series.len(), |l| l.series.len());
        let mut out = Vec::with_capacity(count);
        let mut decoded: Vec<Point> = Vec::new();
        for si in 0..count {
            self.check()?;
            let (labels, drop_name, pts): (&Labels, bool, &[Point]) = match &input.lazy {
                Some(l) => {
                    let s = &l.series[si];
                    // Stale markers dropped in place; the previous series' buffer is handed
                    // back for the next decode.
                    let mut buf = self.decode(s, l.mint, l.maxt)?;
                    buf.retain(|x| !x.is_stale());
                    std::mem::swap(&mut decoded, &mut buf);
                    self.buf = buf;
                    (&s.labels, false, decoded.as_slice())
                }
                None => {
                    let s = &input.series[si];
                    (&s.labels, s.drop_name, s.pts.as_slice())
                }
            };
            if pts.is_empty() {
                continue;
            }
            // Raw samples held while this series is windowed.
            let held = if input.lazy.is_some() { pts.len() } else { 0 };
            self.add_samples(held)?;
            let mut res = Vec::with_capacity(n);
            if let Some(a) = input.at {
                let et = a.saturating_sub(input.offset);
                let lo = pts.partition_point(|p| p.t <= et.saturating_sub(input.range));
                let hi = pts.partition_point(|p| p.t <= et).max(lo);
                for i in 0..n {
                    let t = self.ts(i);
                    if let Some(v) = f(si, pts, lo, hi, et, t) {
                        res.push(Point::at(t, v));
                    }
                }
            } else {
                let (mut lo, mut hi) = (0usize, 0usize);
                for i in 0..n {
                    let t = self.ts(i);
                    let et = t.saturating_sub(input.offset);
                    let from = et.saturating_sub(input.range);
                    while lo < pts.len() && pts[lo].t <= from {
                        lo += 1;
                    }
                    if hi < lo {
                        hi = lo;
                    }
                    while hi < pts.len() && pts[hi].t <= et {
                        hi += 1;
                    }
                    if let Some(v) = f(si, pts, lo, hi, et, t) {
                        res.push(Point::at(t, v));
                    }
                }
            }
            self.release_samples(held);
            if !res.is_empty() {
                res.shrink_to_fit();
                self.add_samples(res.len())?;
                out.push(VSeries {
                    labels: labels.clone(),
                    pts: res,
                    drop_name,
                });
            }
        }
        Ok(out)
    }

    /// Turns a range input into series (for range vectors returned as values).
    pub fn materialize(&mut self, ri: RangeInput<'_>) -> Result<Vec<VSeries>> {
        let Some(l) = ri.lazy else {
            return Ok(ri.series);
        };
        let mut out = Vec::with_capacity(l.series.len());
        for s in l.series {
            self.check()?;
            let buf = self.decode(s, l.mint, l.maxt)?;
            let pts: Vec<Point> = buf.iter().filter(|x| !x.is_stale()).cloned().collect();
            self.buf = buf;
            if !pts.is_empty() {
                self.add_samples(pts.len())?;
                out.push(VSeries {
                    labels: s.labels.clone(),
                    pts,
                    drop_name: false,
                });
            }
        }
        Ok(out)
    }
}

fn pick(buf: &[Point], et: i64, lookback: i64, timestamps: bool) -> Option<PointValue> {
    let j = buf.partition_point(|x| x.t <= et);
    let s = buf.get(j.checked_sub(1)?)?;
    if s.t <= et.saturating_sub(lookback) || s.is_stale() {
        return None;
    }
    Some(match &s.h {
        _ if timestamps => PointValue::Float(s.t as f64 / 1000.0),
        Some(h) => PointValue::Histogram(h.clone()),
        None => PointValue::Float(s.v),
    })
}

/// Drops histogram samples (for functions and operators defined on floats only) and the
/// series left empty.
pub(crate) fn retain_floats(ss: &mut Vec<VSeries>) {
    for s in ss.iter_mut() {
        s.pts.retain(|p| p.h.is_none());
    }
    ss.retain(|s| !s.pts.is_empty());
}

/// Applies delayed `__name__` removal.
pub(crate) fn finish_names(ss: &mut [VSeries]) {
    for s in ss.iter_mut() {
        if s.drop_name {
            s.labels = s.labels.without(&[METRIC_NAME, "__type__", "__unit__"]);
            s.drop_name = false;
        }
    }
}

pub(crate) fn check_unique(ss: &[VSeries]) -> Result<()> {
    let mut seen = std::collections::HashSet::with_capacity(ss.len());
    for s in ss {
        if s.pts.is_empty() {
            continue;
        }
        if !seen.insert(&s.labels) {
            return Err(QueryError::exec(
                "vector cannot contain metrics with the same labelset",
            ));
        }
    }
    Ok(())
}

/// Merges series that ended up with equal labels; overlapping timestamps are an error.
pub(crate) fn merge_same_labels(ss: Vec<VSeries>) -> Result<Vec<VSeries>> {
    let mut idx: HashMap<Labels, usize> = HashMap::with_capacity(ss.len());
    let mut out: Vec<VSeries> = Vec::with_capacity(ss.len());
    for s in ss {
        if s.pts.is_empty() {
            continue;
        }
        match idx.get(&s.labels) {
            Some(&i) => {
                let o = &mut out[i];
                let mut merged = Vec::with_capacity(o.pts.len() + s.pts.len());
                let (mut a, mut b) = (0, 0);
                while a < o.pts.len() || b < s.pts.len() {
                    if b >= s.pts.len() || (a < o.pts.len() && o.pts[a].t < s.pts[b].t) {
                        merged.push(o.pts[a].clone());
                        a += 1;
                    } else if a >= o.pts.len() || s.pts[b].t < o.pts[a].t {
                        merged.push(s.pts[b].clone());
                        b += 1;
                    } else {
                        return Err(QueryError::exec(
                            "vector cannot contain metrics with the same labelset",
                        ));
                    }
                }
                o.pts = merged;
            }
            None => {
                idx.insert(s.labels.clone(), out.len());
                out.push(s);
            }
        }
    }
    Ok(out)
}
