//! The query entry points: [`Engine`] parses a query, plans which series each selector needs,
//! fetches them from the [`Queryable`] (once per selector per query), runs the evaluator and
//! shapes the result.
//!
//! This is the only place that awaits storage; evaluation itself is synchronous and checks the
//! deadline and cancellation flag as it goes. It must never return a partially evaluated value.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use promql_parser::parser::{self, Expr};

use super::error::QueryError;
use super::eval::{Evaluator, Fetched, SelectorPlan, plan_selectors};
use super::storage::{Queryable, SeriesSet};
use super::value::{InstantSample, Point, QueryResult, Series, Value};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (Prometheus default 5m).
    pub lookback_delta: Duration,
    /// Most samples a query may hold in memory at once.
    pub max_samples: usize,
    /// Longest a query may run.
    pub timeout: Duration,
    /// Step used for subqueries without an explicit step (Prometheus default 1m).
    pub default_subquery_step: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            lookback_delta: Duration::from_secs(300),
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            default_subquery_step: Duration::from_secs(60),
        }
    }
}

/// A flag a caller sets to cancel a running query (clone it, keep one, pass one in).
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }
    /// Requests cancellation.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    /// True once cancellation was requested.
    pub fn is_canceled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The PromQL engine. Cheap to share; holds only options.
///
/// Queries must run inside a Tokio runtime with the time driver enabled (the timeout covers
/// storage reads). After the reads, evaluation is synchronous CPU work on the calling task;
/// callers that must stay responsive run queries on their own task and cancel through
/// [`CancelFlag`] (dropping the future cancels only while storage is being read).
#[derive(Debug, Clone, Default)]
pub struct Engine {
    opts: EngineOptions,
}

/// Parses a query, mapping parser errors to `bad_data`. Lexical errors carry the position of the
/// offending character (as `line:column: parse error: ...`, like Prometheus).
pub fn parse_expr(query: &str) -> Result<Expr, QueryError> {
    let nesting = nesting_estimate(query);
    if nesting > MAX_OPERATORS {
        return Err(QueryError::bad(format!(
            "query has too many operators and parentheses (more than {MAX_OPERATORS})"
        )));
    }
    // Parsing and dropping an AST recurse once per nesting level: deep queries get a roomy
    // stack of their own (a fresh stack costs more than parsing a short query, so short ones
    // stay on the caller's), and only trees the evaluator accepts are handed out.
    let parse = || {
        let expr = parse_unguarded(query)?;
        super::eval::validate(&expr)?;
        Ok(expr)
    };
    let roomy = stacker::remaining_stack().is_some_and(|left| left >= INLINE_PARSE_STACK);
    if roomy && nesting_bound(query) <= INLINE_NESTING {
        parse()
    } else {
        stacker::grow(PARSE_STACK, parse)
    }
}

/// The parser is third-party code: a panic inside it (e.g. a range so large that converting it
/// to a `Duration` overflows) becomes a `bad_data` error instead of taking the caller down.
fn parse_unguarded(query: &str) -> Result<Expr, QueryError> {
    std::panic::catch_unwind(|| parse_unchecked(query)).unwrap_or_else(|_| {
        Err(QueryError::bad("1:1: parse error: the query could not be parsed (a number or duration is out of range)"))
    })
}

/// Most operators and parentheses a query may contain (bounds the parser's recursion).
const MAX_OPERATORS: usize = 10_000;
/// Stack for parsing (and dropping rejected trees).
const PARSE_STACK: usize = 32 * 1024 * 1024;
/// Queries with at most this many operators and parentheses ([`nesting_bound`]) parse on the
/// caller's stack when `INLINE_PARSE_STACK` of it is left: they need a quarter of that, even
/// unoptimised.
const INLINE_NESTING: usize = 32;
const INLINE_PARSE_STACK: usize = 1024 * 1024;

/// Whether a byte is a parenthesis or an operator character.
fn is_nesting_byte(c: u8) -> bool {
    matches!(
        c,
        b'(' | b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' | b'=' | b'!'
    )
}

/// Whether a word is a keyword operator (keywords are case-insensitive).
fn is_keyword_operator(word: &str) -> bool {
    ["and", "or", "unless", "atan2"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

/// Where the word starting at `start` ends: words are runs of letters, digits and `_`.
fn word_end(b: &[u8], start: usize) -> usize {
    start
        + b[start..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
            .count()
}

/// The words of a query that start with a letter.
fn words(q: &str) -> impl Iterator<Item = &str> {
    let b = q.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() && !b[i].is_ascii_alphabetic() {
            i += 1;
        }
        if i == b.len() {
            return None;
        }
        let start = i;
        i = word_end(b, start);
        Some(&q[start..i])
    })
}

/// Counts parentheses, operator characters and keyword operators outside string literals and
/// comments, as the lexer sees them.
fn nesting_estimate(q: &str) -> usize {
    let b = q.as_bytes();
    let mut n = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && q != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            c if is_nesting_byte(c) => n += 1,
            c if c.is_ascii_alphabetic() => {
                let end = word_end(b, i);
                if is_keyword_operator(&q[i..end]) {
                    n += 1;
                }
                i = end - 1;
            }
            _ => {}
        }
        i += 1;
    }
    n
}

/// At least the nesting a query can reach: every parenthesis, operator character and keyword
/// operator, strings and comments included, so that no way of hiding one lets a deep query
/// parse on a small stack.
fn nesting_bound(q: &str) -> usize {
    let operators = q.bytes().filter(|&c| is_nesting_byte(c)).count();
    operators + words(q).filter(|w| is_keyword_operator(w)).count()
}

fn parse_unchecked(query: &str) -> Result<Expr, QueryError> {
    let marked = super::durations::mark_invalid_utf8(query);
    let rewritten = super::durations::rewrite(&marked).map_err(|e| QueryError::BadData {
        message: format!("parse error: {e}"),
        position: None,
    })?;
    parser::parse(&rewritten).map_err(|e| {
        let plain = std::ptr::eq(rewritten.as_ref(), query) && std::ptr::eq(marked.as_ref(), query);
        // Lexical and grammar errors come first in Prometheus, in the order its parser reads the
        // query. The recogniser also runs where the parser crate saw a semantic error: it may be
        // one Prometheus's lexer reports (e.g. an invalid escape sequence).
        let grammar = e == GRAMMAR_ERROR || parser::lexer(&rewritten).is_err();
        let diagnosed = if plain || e == GRAMMAR_ERROR {
            super::syntax::diagnose(query).filter(|d| d.lexical || grammar)
        } else {
            None
        };
        let located = if let Some(d) = diagnosed {
            Some((d.range, d.message))
        } else if e.starts_with("unexpected ") {
            super::syntax::diagnose(query).map(|s| (s.range, e.clone()))
        } else {
            super::syntax::locate_call_error(query, &e).map(|(at, m)| ((at, at), m))
        };
        if let Some((range, message)) = located {
            let (line, col) = line_col(query, range.0);
            return QueryError::BadData {
                message: format!("{line}:{col}: parse error: {message}"),
                position: Some(range),
            };
        }
        let e = super::syntax::prometheus_type_names(&e);
        let position = if plain {
            lex_error_position(query, &e)
        } else {
            None
        };
        match position {
            Some((start, end)) => {
                let (line, col) = line_col(query, start);
                QueryError::BadData {
                    message: format!("{line}:{col}: parse error: {e}"),
                    position: Some((start, end)),
                }
            }
            None => QueryError::BadData {
                message: format!("parse error: {e}"),
                position: None,
            },
        }
    })
}

/// What `promql-parser` says for every grammar (as opposed to lexical or type) error.
const GRAMMAR_ERROR: &str = "invalid promql query";

/// Finds where the lexer fails: the shortest prefix that yields the same lexical error.
fn lex_error_position(query: &str, err: &str) -> Option<(usize, usize)> {
    const MAX_SCAN: usize = 4096;
    if query.len() > MAX_SCAN || parser::lexer(query).is_ok() {
        return None;
    }
    let mut ends: Vec<usize> = query
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .collect();
    ends.dedup();
    for end in ends {
        if let Err(e) = parser::lexer(&query[..end])
            && e == err
        {
            let start = query[..end].char_indices().last().map_or(0, |(i, _)| i);
            return Some((start, end));
        }
    }
    None
}

/// Prometheus's `line:column` for a byte offset: the column counts bytes, not characters.
fn line_col(query: &str, byte: usize) -> (usize, usize) {
    let before = &query.as_bytes()[..byte.min(query.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, col)
}

impl Engine {
    /// An engine with the given options.
    pub fn new(opts: EngineOptions) -> Self {
        Self { opts }
    }

    /// The engine's options.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `query` at `time_ms`.
    pub async fn instant_query(
        &self,
        q: &dyn Queryable,
        query: &str,
        time_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        let expr = parse_expr(query)?;
        self.instant_query_expr(q, &expr, time_ms, &CancelFlag::new())
            .await
    }

    /// Evaluates `query` at every step from `start_ms` to `end_ms`.
    pub async fn range_query(
        &self,
        q: &dyn Queryable,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        let expr = parse_expr(query)?;
        self.range_query_expr(q, &expr, start_ms, end_ms, step_ms, &CancelFlag::new())
            .await
    }

    /// Evaluates a parsed expression at `time_ms`; `cancel` aborts it when set.
    pub async fn instant_query_expr(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        time_ms: i64,
        cancel: &CancelFlag,
    ) -> Result<QueryResult, QueryError> {
        self.run(q, expr, time_ms, time_ms, 0, cancel).await
    }

    /// Evaluates a parsed expression as a range query; `cancel` aborts it when set.
    pub async fn range_query_expr(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        cancel: &CancelFlag,
    ) -> Result<QueryResult, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::bad(
                "zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        if end_ms < start_ms {
            return Err(QueryError::bad(
                "end timestamp must not be before start time",
            ));
        }
        super::eval::validate(expr)?;
        let ty = super::eval::expr_type(expr);
        if ty != "scalar" && ty != "vector" {
            return Err(QueryError::bad(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                if ty == "matrix" { "range vector" } else { ty }
            )));
        }
        self.run(q, expr, start_ms, end_ms, step_ms, cancel).await
    }

    async fn run(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
        cancel: &CancelFlag,
    ) -> Result<QueryResult, QueryError> {
        let deadline = Instant::now() + self.opts.timeout;
        super::eval::validate(expr)?;
        let lookback = i64::try_from(self.opts.lookback_delta.as_millis()).unwrap_or(i64::MAX);
        let sub_step = i64::try_from(self.opts.default_subquery_step.as_millis())
            .unwrap_or(60_000)
            .max(1);
        let plans: Vec<SelectorPlan> = plan_selectors(expr, start, end, step, lookback, sub_step);
        let mut data: HashMap<usize, Fetched> = HashMap::with_capacity(plans.len());
        let mut warnings: Vec<String> = Vec::new();
        let fetches = plans.iter().map(|p| async move {
            let mut merged = SeriesSet::default();
            let mut seen = std::collections::HashSet::new();
            for sel in &p.selections {
                let mut set = q.select(sel).await?;
                merged.warnings.append(&mut set.warnings);
                if p.selections.len() > 1 {
                    // `{a="1" or b="2"}`: the union of the alternatives, each series once.
                    for s in set.series {
                        if seen.insert(s.labels.clone()) {
                            merged.series.push(s);
                        }
                    }
                } else {
                    merged.series = set.series;
                }
            }
            Ok::<_, QueryError>((p.key, merged))
        });
        let fetched = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            futures::future::try_join_all(fetches),
        )
        .await
        .map_err(|_| QueryError::Timeout("query execution"))??;
        for (key, mut set) in fetched {
            warnings.append(&mut set.warnings);
            if !set.series.is_sorted_by(|a, b| a.labels <= b.labels) {
                set.series.sort_by(|a, b| a.labels.cmp(&b.labels));
            }
            data.insert(key, Fetched { series: set.series });
        }
        if cancel.is_canceled() {
            return Err(QueryError::Canceled("query execution"));
        }
        if Instant::now() >= deadline {
            return Err(QueryError::Timeout("query execution"));
        }
        let mut ev = Evaluator::new(
            &self.opts,
            &data,
            start,
            end,
            step,
            lookback,
            deadline,
            cancel.clone(),
        );
        let val = ev.eval_top(expr)?;
        let (mut warns, infos) = ev.take_annotations();
        warnings.append(&mut warns);
        dedup(&mut warnings);
        let value = shape(val, start, step);
        Ok(QueryResult {
            value,
            warnings,
            infos,
        })
    }
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

/// Turns the evaluator's step-major value into the public result shape.
fn shape(val: super::eval::Val, start: i64, step: i64) -> Value {
    use super::eval::Val;
    let instant = step == 0;
    match val {
        Val::Scalar(vs) => {
            if instant {
                Value::Scalar(Point::float(start, vs.first().copied().unwrap_or(f64::NAN)))
            } else {
                let points = vs
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| Point::float(start + i as i64 * step, v))
                    .collect();
                Value::Matrix(vec![Series {
                    labels: gauntlet_tsdb::Labels::empty(),
                    points,
                }])
            }
        }
        Val::Str(s) => Value::String { t: start, value: s },
        Val::Vector(series) => {
            if instant {
                let mut out = Vec::with_capacity(series.len());
                for s in series {
                    if let Some(p) = s.pts.first() {
                        out.push(InstantSample {
                            labels: s.labels,
                            t: p.t,
                            v: p.v,
                            h: p.h.clone(),
                        });
                    }
                }
                Value::Vector(out)
            } else {
                let mut out: Vec<Series> = series
                    .into_iter()
                    .filter(|s| !s.pts.is_empty())
                    .map(|s| Series {
                        labels: s.labels,
                        points: s.pts,
                    })
                    .collect();
                out.sort_by(|a, b| a.labels.cmp(&b.labels));
                Value::Matrix(out)
            }
        }
        Val::Matrix(series) => {
            let mut out: Vec<Series> = series
                .into_iter()
                .filter(|s| !s.pts.is_empty())
                .map(|s| Series {
                    labels: s.labels,
                    points: s.pts,
                })
                .collect();
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            Value::Matrix(out)
        }
    }
}
