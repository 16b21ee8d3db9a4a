//! Runs Prometheus's PromQL test corpus (`*.test` files, see FORMAT.md beside them) through the
//! engine and compares results the way Prometheus's own test runner does.
//!
//! The corpus lives in `../shared/promql-tests/` relative to the repository root
//! (`GAUNTLET_PROMQL_TESTS` overrides it). A missing directory is a failure, never a skip.
//! Cases listed in `tests/promql/known_failures.txt` may fail; any other failure fails the test,
//! and so does a listed case that now passes (so the list only shrinks). Set
//! `GAUNTLET_PROMQL_WRITE_KNOWN_FAILURES=1` to rewrite the list from the current run.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::too_many_lines)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gauntlet::promql::{
    CancelFlag, Engine, EngineOptions, MemoryQueryable, Point, QueryError, QueryResult, Value,
};
use gauntlet_tsdb::{CounterResetHint, FloatHistogram, Labels, stale_nan};
use promql_parser::parser::{self as pp, Expr};

const EPSILON: f64 = 0.000_001;

// ------------------------------------------------------------------ comparison

fn almost_equal(a: f64, b: f64) -> bool {
    let sa = gauntlet_tsdb::is_stale_nan(a);
    let sb = gauntlet_tsdb::is_stale_nan(b);
    if sa || sb {
        return sa && sb;
    }
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
        return diff < EPSILON * min_normal;
    }
    diff / abs_sum.min(f64::MAX) < EPSILON
}

// ------------------------------------------------------------------ parsing helpers

fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    if s == "0" {
        return Some(0);
    }
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let mut total: i64 = 0;
    let b = s.as_bytes();
    let mut i = 0;
    if b.is_empty() {
        return None;
    }
    while i < b.len() {
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if st == i {
            return None;
        }
        let n: i64 = s[st..i].parse().ok()?;
        let us = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let mult = match &s[us..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return None,
        };
        total += n * mult;
    }
    Some(if neg { -total } else { total })
}

fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    let (neg, body) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let v = match body.to_ascii_lowercase().as_str() {
        "inf" | "infinity" => Some(f64::INFINITY),
        "nan" => Some(f64::NAN),
        lb => {
            if let Some(h) = lb.strip_prefix("0x") {
                i64::from_str_radix(h, 16).ok().map(|x| x as f64)
            } else if lb.len() > 1 && lb.starts_with('0') && lb.bytes().all(|c| c.is_ascii_digit())
            {
                i64::from_str_radix(&lb[1..], 8).ok().map(|x| x as f64)
            } else if lb
                .bytes()
                .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'+' | b'-'))
            {
                lb.parse::<f64>().ok()
            } else {
                None
            }
        }
    }?;
    Some(if neg { -v } else { v })
}

/// Unquotes a Go-style string literal starting at `s[0]` (", ' or `); returns value and length.
fn unquote(s: &str) -> Option<(String, usize)> {
    let mut chars = s.char_indices();
    let (_, q) = chars.next()?;
    if q == '`' {
        let end = s[1..].find('`')? + 1;
        return Some((s[1..end].to_string(), end + 1));
    }
    let mut bytes: Vec<u8> = Vec::new();
    let b = s.as_bytes();
    let mut i = 1;
    while i < b.len() {
        let c = b[i];
        if c as char == q {
            return Some((String::from_utf8_lossy(&bytes).into_owned(), i + 1));
        }
        if c == b'\\' {
            i += 1;
            let e = *b.get(i)?;
            match e {
                b'n' => bytes.push(b'\n'),
                b't' => bytes.push(b'\t'),
                b'r' => bytes.push(b'\r'),
                b'\\' => bytes.push(b'\\'),
                b'"' => bytes.push(b'"'),
                b'\'' => bytes.push(b'\''),
                b'a' => bytes.push(7),
                b'b' => bytes.push(8),
                b'f' => bytes.push(12),
                b'v' => bytes.push(11),
                b'x' => {
                    let h = s.get(i + 1..i + 3)?;
                    bytes.push(u8::from_str_radix(h, 16).ok()?);
                    i += 2;
                }
                b'u' | b'U' => {
                    let n = if e == b'u' { 4 } else { 8 };
                    let h = s.get(i + 1..i + 1 + n)?;
                    let ch = char::from_u32(u32::from_str_radix(h, 16).ok()?)?;
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    i += n;
                }
                b'0'..=b'7' => {
                    let h = s.get(i..i + 3)?;
                    bytes.push(u8::from_str_radix(h, 8).ok()?);
                    i += 2;
                }
                _ => return None,
            }
            i += 1;
            continue;
        }
        bytes.push(c);
        i += 1;
    }
    None
}

/// Parses `name{l="v", ...}` (or `{...}`) at the start of `s`; returns labels and the rest.
fn parse_metric(s: &str) -> Option<(Labels, &str)> {
    let s = s.trim_start();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let name_end = s
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(s.len());
    if name_end > 0 {
        pairs.push(("__name__".into(), s[..name_end].to_string()));
    }
    let mut rest = &s[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut r = r.trim_start();
        loop {
            if let Some(r2) = r.strip_prefix('}') {
                rest = r2;
                break;
            }
            // Label name: identifier or quoted.
            let (lname, used) = if r.starts_with('"') || r.starts_with('\'') || r.starts_with('`') {
                unquote(r)?
            } else {
                let e = r.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))?;
                (r[..e].to_string(), e)
            };
            r = r[used..].trim_start();
            if let Some(r2) = r.strip_prefix('=') {
                r = r2.trim_start();
                let (val, used) = unquote(r)?;
                pairs.push((lname, val));
                r = r[used..].trim_start();
            } else {
                // A quoted metric name inside the braces.
                pairs.push(("__name__".into(), lname));
            }
            if let Some(r2) = r.strip_prefix(',') {
                r = r2.trim_start();
            }
        }
    }
    Some((Labels::from_pairs(&pairs), rest))
}

#[derive(Clone, Debug)]
enum SeqVal {
    Omitted,
    Value(f64),
    Hist(Box<FloatHistogram>),
}

/// Parses a float list `[1 2 3]`.
fn parse_float_list(s: &str) -> Result<Vec<f64>, String> {
    let inner = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .ok_or_else(|| format!("bad list {s}"))?;
    inner
        .split_whitespace()
        .map(|x| parse_number(x).ok_or_else(|| format!("bad number {x}")))
        .collect()
}

/// Parses the inside of `{{schema:1 sum:3 count:22 buckets:[5 10 7] ...}}`.
fn parse_histogram(body: &str) -> Result<FloatHistogram, String> {
    let mut h = FloatHistogram::default();
    let (mut offset, mut n_offset) = (0i32, 0i32);
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    let mut rest = body.trim();
    while !rest.is_empty() {
        let (key, r) = rest
            .split_once(':')
            .ok_or_else(|| format!("bad histogram {body}"))?;
        let r = r.trim_start();
        let (val, r) = if r.starts_with('[') {
            let e = r.find(']').ok_or("unterminated list")? + 1;
            (&r[..e], &r[e..])
        } else {
            let e = r.find(char::is_whitespace).unwrap_or(r.len());
            (&r[..e], &r[e..])
        };
        rest = r.trim_start();
        let num = || parse_number(val).ok_or_else(|| format!("bad value {val}"));
        match key.trim() {
            "schema" => h.schema = val.parse().map_err(|_| format!("bad schema {val}"))?,
            "sum" => h.sum = num()?,
            "count" => h.count = num()?,
            "z_bucket" => h.zero_count = num()?,
            "z_bucket_w" => h.zero_threshold = num()?,
            "offset" => offset = val.parse().map_err(|_| format!("bad offset {val}"))?,
            "n_offset" => n_offset = val.parse().map_err(|_| format!("bad offset {val}"))?,
            "buckets" => pos = parse_float_list(val)?,
            "n_buckets" => neg = parse_float_list(val)?,
            "custom_values" => h.custom_values = parse_float_list(val)?,
            "counter_reset_hint" => {
                h.counter_reset_hint = match val {
                    "unknown" => CounterResetHint::Unknown,
                    "reset" => CounterResetHint::CounterReset,
                    "not_reset" => CounterResetHint::NotCounterReset,
                    "gauge" => CounterResetHint::Gauge,
                    _ => return Err(format!("bad counter reset hint {val}")),
                }
            }
            k => return Err(format!("unknown histogram field {k}")),
        }
    }
    let at = |o: i32, v: &[f64]| -> Vec<(i32, f64)> {
        v.iter()
            .enumerate()
            .map(|(i, &c)| (o + i as i32, c))
            .collect()
    };
    h.set_positive(&at(offset, &pos));
    h.set_negative(&at(n_offset, &neg));
    Ok(h)
}

/// Expands the value notation: `_`, `_xN`, `stale`, numbers, `axN`, `a+bxN`, `a-bxN`, and
/// native histograms `{{...}}`, `{{...}}xN`, `{{...}}+{{...}}xN`, `{{...}}-{{...}}xN`.
fn parse_values(s: &str) -> Result<Vec<SeqVal>, String> {
    let mut out = Vec::new();
    let mut toks: Vec<String> = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("{{") {
        toks.extend(rest[..i].split_whitespace().map(str::to_string));
        let end = rest[i..].find("}}").ok_or("unterminated histogram")? + i;
        let first = parse_histogram(&rest[i + 2..end])?;
        let mut tail = &rest[end + 2..];
        let mut items = vec![first.clone()];
        if let Some(t) = tail.strip_prefix('x') {
            let e = t.find(char::is_whitespace).unwrap_or(t.len());
            let n = t[..e].parse::<usize>().map_err(|_| "bad repetition")?;
            items.extend(std::iter::repeat_n(first, n));
            tail = &t[e..];
        } else if tail.starts_with("+{{") || tail.starts_with("-{{") {
            let sign = tail.starts_with('+');
            let e = tail.find("}}").ok_or("unterminated histogram")?;
            let inc = parse_histogram(&tail[3..e])?;
            let t2 = tail[e + 2..]
                .strip_prefix('x')
                .ok_or("missing repetition")?;
            let e2 = t2.find(char::is_whitespace).unwrap_or(t2.len());
            let n = t2[..e2].parse::<usize>().map_err(|_| "bad repetition")?;
            let mut cur = first;
            for _ in 0..n {
                if sign {
                    cur.add(&inc).map_err(|e| e.to_string())?;
                } else {
                    cur.sub(&inc).map_err(|e| e.to_string())?;
                }
                items.push(cur.clone());
            }
            tail = &t2[e2..];
        }
        for h in items {
            out.push(SeqVal::Hist(Box::new(h)));
            toks.push("{{}}".to_string());
        }
        rest = tail;
    }
    toks.extend(rest.split_whitespace().map(str::to_string));
    let mut hists = std::mem::take(&mut out).into_iter();
    for tok in &toks {
        let tok = tok.as_str();
        if tok == "{{}}" {
            out.push(hists.next().ok_or("histogram count mismatch")?);
            continue;
        }
        if tok == "_" {
            out.push(SeqVal::Omitted);
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("bad token {tok}"))?;
            out.extend(std::iter::repeat_n(SeqVal::Omitted, n));
            continue;
        }
        if tok == "stale" {
            out.push(SeqVal::Value(stale_nan()));
            continue;
        }
        // `axN` repetition wins over hexadecimal (`0x59` is 0 repeated).
        let repetition = tok.rfind('x').is_some_and(|i| {
            i > 0 && i + 1 < tok.len() && tok[i + 1..].bytes().all(|c| c.is_ascii_digit())
        });
        if !repetition && let Some(v) = parse_number(tok) {
            out.push(SeqVal::Value(v));
            continue;
        }
        let xi = tok.rfind('x').ok_or_else(|| format!("bad token {tok}"))?;
        let n: u64 = tok[xi + 1..]
            .parse()
            .map_err(|_| format!("bad token {tok}"))?;
        let head = &tok[..xi];
        // Split at the operator between start and increment.
        let b = head.as_bytes();
        let mut op = None;
        for i in (1..b.len()).rev() {
            if (b[i] == b'+' || b[i] == b'-') && !matches!(b[i - 1], b'e' | b'E') {
                op = Some(i);
                break;
            }
        }
        match op {
            None => {
                let v = parse_number(head).ok_or_else(|| format!("bad token {tok}"))?;
                for _ in 0..=n {
                    out.push(SeqVal::Value(v));
                }
            }
            Some(i) => {
                let mut a = parse_number(&head[..i]).ok_or_else(|| format!("bad token {tok}"))?;
                let inc = parse_number(&head[i..]).ok_or_else(|| format!("bad token {tok}"))?;
                out.push(SeqVal::Value(a));
                for _ in 0..n {
                    a += inc;
                    out.push(SeqVal::Value(a));
                }
            }
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------ commands

#[derive(Debug, Default)]
struct ExpectAnno {
    msg: Option<String>,
    regex: Option<regex::Regex>,
}

impl ExpectAnno {
    fn matches(&self, s: &str) -> bool {
        match (&self.msg, &self.regex) {
            (Some(m), _) => m == s,
            (None, Some(r)) => r.is_match(s),
            _ => true,
        }
    }
}

#[derive(Debug, Default)]
struct EvalCmd {
    line: usize,
    expr: String,
    instant: bool,
    start: i64,
    end: i64,
    step: i64,
    fail: bool,
    fail_expect: Option<ExpectAnno>,
    ordered: bool,
    warn: bool,
    info: bool,
    expect_warn: Vec<ExpectAnno>,
    expect_info: Vec<ExpectAnno>,
    no_warn: bool,
    no_info: bool,
    expect_string: Option<String>,
    range_vector: bool,
    exclude_from_range: bool,
    scalar: Option<f64>,
    /// Expected series in file order.
    series: Vec<(Labels, Vec<SeqVal>)>,
    unsupported: Option<String>,
    /// True when a histogram value is expected.
    has_hist: bool,
}

enum Cmd {
    Load(i64, Vec<(Labels, Vec<SeqVal>)>),
    Clear,
    Eval(Box<EvalCmd>),
}

fn parse_expect_anno(rest: &str) -> Result<ExpectAnno, String> {
    let rest = rest.trim();
    if rest.is_empty() {
        return Ok(ExpectAnno::default());
    }
    if let Some(m) = rest.strip_prefix("msg:") {
        return Ok(ExpectAnno {
            msg: Some(m.trim().to_string()),
            regex: None,
        });
    }
    if let Some(r) = rest.strip_prefix("regex:") {
        let re = regex::Regex::new(r.trim()).map_err(|e| e.to_string())?;
        return Ok(ExpectAnno {
            msg: None,
            regex: Some(re),
        });
    }
    Err(format!("bad expect: {rest}"))
}

/// Blank lines and comments separate commands.
fn is_blank(line: &str) -> bool {
    let l = line.trim();
    l.is_empty() || l.starts_with('#')
}

fn parse_file(text: &str) -> Result<Vec<Cmd>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut cmds = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let raw = lines[i];
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            i += 1;
            continue;
        }
        if l == "clear" {
            cmds.push(Cmd::Clear);
            i += 1;
            continue;
        }
        if let Some(rest) = l.strip_prefix("load") {
            // `load_with_nhcb` also converts classic histograms into native histograms with
            // custom buckets.
            let nhcb = rest.starts_with("_with_nhcb");
            let rest = rest.strip_prefix("_with_nhcb").unwrap_or(rest);
            let gap =
                parse_duration(rest.trim()).ok_or_else(|| format!("line {}: bad load", i + 1))?;
            let mut series = Vec::new();
            i += 1;
            // A comment ends a block, as a blank line does.
            while i < lines.len() && !is_blank(lines[i]) {
                let d = lines[i].trim();
                let (lbls, rest) =
                    parse_metric(d).ok_or_else(|| format!("line {}: bad series", i + 1))?;
                let v = parse_values(rest).map_err(|e| format!("line {}: {e}", i + 1))?;
                series.push((lbls, v));
                i += 1;
            }
            if nhcb {
                let converted = classic_to_nhcb(&series);
                series.extend(converted);
            }
            cmds.push(Cmd::Load(gap, series));
            continue;
        }
        if l.starts_with("eval") {
            let line_no = i + 1;
            let mut ev = EvalCmd {
                line: line_no,
                ..EvalCmd::default()
            };
            let (head, rest) = l.split_once(char::is_whitespace).ok_or("bad eval")?;
            match head {
                "eval" => {}
                "eval_fail" => ev.fail = true,
                "eval_warn" => ev.warn = true,
                "eval_info" => ev.info = true,
                "eval_ordered" => ev.ordered = true,
                _ => return Err(format!("line {line_no}: bad eval {head}")),
            }
            let rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix("instant") {
                let r = r.trim_start();
                let r = r.strip_prefix("at").ok_or("missing at")?.trim_start();
                let (t, expr) = r.split_once(char::is_whitespace).ok_or("bad instant")?;
                ev.instant = true;
                ev.start = parse_duration(t).ok_or_else(|| format!("line {line_no}: bad time"))?;
                ev.end = ev.start;
                ev.expr = expr.trim().to_string();
            } else if let Some(r) = rest.strip_prefix("range") {
                let r = r
                    .trim_start()
                    .strip_prefix("from")
                    .ok_or("missing from")?
                    .trim_start();
                let (from, r) = r.split_once(" to ").ok_or("missing to")?;
                let (to, r) = r.trim_start().split_once(" step ").ok_or("missing step")?;
                let (step, expr) = r
                    .trim_start()
                    .split_once(char::is_whitespace)
                    .ok_or("bad step")?;
                ev.start = parse_duration(from).ok_or("bad from")?;
                ev.end = parse_duration(to).ok_or("bad to")?;
                ev.step = parse_duration(step).ok_or("bad step")?;
                ev.expr = expr.trim().to_string();
            } else {
                return Err(format!("line {line_no}: bad eval"));
            }
            i += 1;
            while i < lines.len() && !is_blank(lines[i]) {
                let d = lines[i].trim();
                i += 1;
                if ev.fail && d.starts_with("expected_fail_message") {
                    let m = d
                        .trim_start_matches("expected_fail_message")
                        .trim()
                        .to_string();
                    ev.fail_expect = Some(ExpectAnno {
                        msg: Some(m),
                        regex: None,
                    });
                    continue;
                }
                if ev.fail && d.starts_with("expected_fail_regexp") {
                    let m = d.trim_start_matches("expected_fail_regexp").trim();
                    ev.fail_expect = Some(ExpectAnno {
                        msg: None,
                        regex: Some(regex::Regex::new(m).map_err(|e| e.to_string())?),
                    });
                    continue;
                }
                if let Some(r) = d.strip_prefix("expect range vector") {
                    let r = r
                        .trim()
                        .strip_prefix("from")
                        .ok_or("bad range vector")?
                        .trim();
                    let (from, r) = r.split_once(" to ").ok_or("bad range vector")?;
                    let (to, step) = r.split_once(" step ").ok_or("bad range vector")?;
                    ev.start = parse_duration(from).ok_or("bad from")?;
                    ev.end = parse_duration(to).ok_or("bad to")?;
                    ev.step = parse_duration(step).ok_or("bad step")?;
                    ev.range_vector = true;
                    ev.exclude_from_range = true;
                    continue;
                }
                if let Some(r) = d.strip_prefix("expect string") {
                    let (s, _) = unquote(r.trim()).ok_or("bad expect string")?;
                    ev.expect_string = Some(s);
                    ev.exclude_from_range = true;
                    continue;
                }
                if d.split(' ').next() == Some("expect") {
                    let r = d["expect".len()..].trim();
                    let (kind, rest) = r.split_once(char::is_whitespace).unwrap_or((r, ""));
                    match kind {
                        "fail" => {
                            ev.fail = true;
                            ev.fail_expect = Some(parse_expect_anno(rest)?);
                        }
                        "ordered" => ev.ordered = true,
                        "warn" => ev.expect_warn.push(parse_expect_anno(rest)?),
                        "info" => ev.expect_info.push(parse_expect_anno(rest)?),
                        "no_warn" => ev.no_warn = true,
                        "no_info" => ev.no_info = true,
                        _ => return Err(format!("line {i}: bad expect {kind}")),
                    }
                    continue;
                }
                if let Some(f) = parse_number(d) {
                    ev.scalar = Some(f);
                    continue;
                }
                let (lbls, rest) =
                    parse_metric(d).ok_or_else(|| format!("line {i}: bad expected series"))?;
                match parse_values(rest) {
                    Ok(v) => {
                        ev.has_hist |= v.iter().any(|x| matches!(x, SeqVal::Hist(_)));
                        ev.series.push((lbls, v));
                    }
                    Err(e) => ev.unsupported = Some(e),
                }
            }
            cmds.push(Cmd::Eval(Box::new(ev)));
            continue;
        }
        return Err(format!("line {}: unknown command {l:?}", i + 1));
    }
    Ok(cmds)
}

// ------------------------------------------------------------------ running

/// Converts classic histogram series (`_bucket` with `le`, `_count`, `_sum`) into native
/// histograms with custom buckets, one per base series and timestamp.
fn classic_to_nhcb(series: &[(Labels, Vec<SeqVal>)]) -> Vec<(Labels, Vec<SeqVal>)> {
    #[derive(Default)]
    struct Temp {
        buckets: Vec<(f64, f64)>,
        count: Option<f64>,
        sum: f64,
    }
    let mut by_base: BTreeMap<Labels, BTreeMap<usize, Temp>> = BTreeMap::new();
    for (l, vals) in series {
        let Some(name) = l.metric_name() else {
            continue;
        };
        let (base, kind) = if let Some(b) = name.strip_suffix("_bucket") {
            (b, 0)
        } else if let Some(b) = name.strip_suffix("_count") {
            (b, 1)
        } else if let Some(b) = name.strip_suffix("_sum") {
            (b, 2)
        } else {
            continue;
        };
        let le = if kind == 0 {
            match l.get("le").and_then(parse_number) {
                Some(le) => Some(le),
                None => continue,
            }
        } else {
            None
        };
        let pairs: Vec<(String, String)> = l
            .iter()
            .filter(|x| x.name != "le")
            .map(|x| {
                let v = if x.name == "__name__" { base } else { &x.value };
                (x.name.clone(), v.to_string())
            })
            .collect();
        let entry = by_base.entry(Labels::from_pairs(&pairs)).or_default();
        for (i, v) in vals.iter().enumerate() {
            let SeqVal::Value(f) = v else { continue };
            let t = entry.entry(i).or_default();
            match (kind, le) {
                (0, Some(le)) => {
                    if !t.buckets.iter().any(|b| b.0 == le) {
                        t.buckets.push((le, *f));
                    }
                }
                (1, _) => t.count = Some(*f),
                _ => t.sum = *f,
            }
        }
    }
    let mut out = Vec::new();
    for (labels, by_t) in by_base {
        let len = by_t.keys().max().map_or(0, |m| m + 1);
        let mut vals = vec![SeqVal::Omitted; len];
        for (i, mut t) in by_t {
            t.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let count = t
                .count
                .unwrap_or_else(|| t.buckets.last().map_or(0.0, |b| b.1));
            if t.buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
                t.buckets.push((f64::INFINITY, count));
            }
            let mut h = FloatHistogram {
                schema: gauntlet_tsdb::histogram::CUSTOM_BUCKETS_SCHEMA,
                count,
                sum: t.sum,
                custom_values: t.buckets[..t.buckets.len() - 1]
                    .iter()
                    .map(|b| b.0)
                    .collect(),
                ..FloatHistogram::default()
            };
            let mut prev = 0.0;
            let pos: Vec<(i32, f64)> = t
                .buckets
                .iter()
                .enumerate()
                .map(|(k, b)| {
                    let d = b.1 - prev;
                    prev = b.1;
                    (k as i32, d)
                })
                .collect();
            h.set_positive(&pos);
            vals[i] = SeqVal::Hist(Box::new(h));
        }
        out.push((labels, vals));
    }
    out
}

fn load(store: &mut MemoryQueryable, gap: i64, series: &[(Labels, Vec<SeqVal>)]) {
    for (l, vals) in series {
        let points: Vec<Point> = vals
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let t = i as i64 * gap;
                match v {
                    SeqVal::Omitted => None,
                    SeqVal::Value(f) => Some(Point::float(t, *f)),
                    SeqVal::Hist(h) => Some(Point::histogram(t, Arc::new((**h).clone()))),
                }
            })
            .collect();
        store.add_points(l.clone(), &points).unwrap();
    }
}

fn check_annos(ev: &EvalCmd, res: &QueryResult) -> Result<(), String> {
    if ev.warn && res.warnings.is_empty() {
        return Err("expected warnings but got none".into());
    }
    if ev.info && res.infos.is_empty() {
        return Err("expected info annotations but got none".into());
    }
    for (exp, actual, kind) in [
        (&ev.expect_warn, &res.warnings, "warn"),
        (&ev.expect_info, &res.infos, "info"),
    ] {
        if exp.is_empty() {
            continue;
        }
        if actual.is_empty() {
            return Err(format!("expected {kind} annotations but none were found"));
        }
        for e in exp.iter() {
            if !actual.iter().any(|a| e.matches(a)) {
                return Err(format!(
                    "expected {kind} annotation {:?}/{:?} not found in {actual:?}",
                    e.msg, e.regex
                ));
            }
        }
        for a in actual {
            if !exp.iter().any(|e| e.matches(a)) {
                return Err(format!("unexpected {kind} annotation {a:?}"));
            }
        }
    }
    if ev.no_warn && !res.warnings.is_empty() {
        return Err(format!("unexpected warnings {:?}", res.warnings));
    }
    if ev.no_info && !res.infos.is_empty() {
        return Err(format!("unexpected infos {:?}", res.infos));
    }
    Ok(())
}

fn check_fail(ev: &EvalCmd, err: &QueryError) -> Result<(), String> {
    if let Some(e) = &ev.fail_expect
        && !e.matches(&err.to_string())
    {
        return Err(format!(
            "expected error {:?}/{:?}, got {err}",
            e.msg, e.regex
        ));
    }
    Ok(())
}

/// Compares one expected value with a result value, as Prometheus's test runner does
/// (histograms compacted, floats almost equal).
fn check_value(e: &SeqVal, v: f64, h: Option<&FloatHistogram>) -> Result<(), String> {
    match (e, h) {
        (SeqVal::Value(f), None) if almost_equal(*f, v) => Ok(()),
        (SeqVal::Value(f), None) => Err(format!("expected {f} but got {v}")),
        (SeqVal::Value(f), Some(h)) => Err(format!("expected float {f} but got histogram {h:?}")),
        (SeqVal::Hist(eh), Some(h)) if histograms_match(eh, h) => Ok(()),
        (SeqVal::Hist(eh), Some(h)) => Err(format!("expected histogram {eh:?} but got {h:?}")),
        (SeqVal::Hist(eh), None) => Err(format!("expected histogram {eh:?} but got float {v}")),
        (SeqVal::Omitted, _) => Err("expected value missing".into()),
    }
}

fn histograms_match(a: &FloatHistogram, b: &FloatHistogram) -> bool {
    let mut a = a.clone();
    let mut b = b.clone();
    a.compact();
    b.compact();
    let floats = |x: &[f64], y: &[f64]| {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| almost_equal(*p, *q))
    };
    a.schema == b.schema
        && almost_equal(a.count, b.count)
        && almost_equal(a.sum, b.sum)
        && (!a.uses_custom_buckets() || a.custom_values == b.custom_values)
        && a.zero_threshold == b.zero_threshold
        && almost_equal(a.zero_count, b.zero_count)
        && a.positive_spans == b.positive_spans
        && a.negative_spans == b.negative_spans
        && floats(&a.positive_buckets, &b.positive_buckets)
        && floats(&a.negative_buckets, &b.negative_buckets)
}

fn compare(ev: &EvalCmd, value: &Value, start: i64, end: i64, step: i64) -> Result<(), String> {
    let expected: HashMap<&Labels, (usize, &Vec<SeqVal>)> = ev
        .series
        .iter()
        .enumerate()
        .map(|(i, (l, v))| (l, (i, v)))
        .collect();
    match value {
        Value::Matrix(m) => {
            if ev.ordered {
                return Err("expected ordered result, but query returned a matrix".into());
            }
            if ev.scalar.is_some() {
                return Err("expected scalar result, but got matrix".into());
            }
            for w in m.windows(2) {
                if w[0].labels > w[1].labels {
                    return Err("matrix results should always be sorted by labels".into());
                }
            }
            let mut seen = 0;
            for s in m {
                let Some((_, vals)) = expected.get(&s.labels) else {
                    return Err(format!("unexpected metric {} in result", s.labels));
                };
                seen += 1;
                let mut exp = Vec::new();
                for (i, v) in vals.iter().enumerate() {
                    let t = start + i as i64 * step;
                    if t > end {
                        return Err(format!(
                            "expected {} points for {}, but query time range cannot return this many points",
                            vals.len(),
                            s.labels
                        ));
                    }
                    if !matches!(v, SeqVal::Omitted) {
                        exp.push((t, v));
                    }
                }
                if exp.len() != s.points.len() {
                    return Err(format!(
                        "expected {} points for {}, got {:?}",
                        exp.len(),
                        s.labels,
                        s.points
                            .iter()
                            .map(|p| (p.t, p.v, p.h.is_some()))
                            .collect::<Vec<_>>()
                    ));
                }
                for (e, p) in exp.iter().zip(&s.points) {
                    if e.0 != p.t {
                        return Err(format!(
                            "expected timestamp {} for {}, got {}",
                            e.0, s.labels, p.t
                        ));
                    }
                    check_value(e.1, p.v, p.h.as_deref())
                        .map_err(|m| format!("{m} at t={} for {}", p.t, s.labels))?;
                }
            }
            if seen != expected.len() {
                return Err(format!("expected {} series, found {seen}", expected.len()));
            }
        }
        Value::Vector(v) => {
            if ev.scalar.is_some() {
                return Err(format!(
                    "expected scalar result, but got vector of {}",
                    v.len()
                ));
            }
            let mut seen = std::collections::HashSet::new();
            for (pos, s) in v.iter().enumerate() {
                let Some((epos, vals)) = expected.get(&s.labels) else {
                    return Err(format!(
                        "unexpected metric {} in result, has value {}",
                        s.labels, s.v
                    ));
                };
                if ev.ordered && *epos != pos {
                    return Err(format!(
                        "expected metric {} at position {} but was at {}",
                        s.labels,
                        epos + 1,
                        pos + 1
                    ));
                }
                let Some(e) = vals.first() else {
                    return Err("expected value missing".into());
                };
                check_value(e, s.v, s.h.as_deref()).map_err(|m| format!("{m} for {}", s.labels))?;
                seen.insert(&s.labels);
            }
            if seen.len() != expected.len() {
                return Err(format!(
                    "expected {} series, got {}",
                    expected.len(),
                    seen.len()
                ));
            }
        }
        Value::Scalar(p) => {
            let Some(e) = ev.scalar else {
                return Err(format!(
                    "expected vector or matrix result, but got scalar {}",
                    p.v
                ));
            };
            if !almost_equal(e, p.v) {
                return Err(format!("expected scalar {e} but got {}", p.v));
            }
        }
        Value::String { value, .. } => {
            if ev.expect_string.as_deref() != Some(value.as_str()) {
                return Err(format!(
                    "expected string {:?} but got {value:?}",
                    ev.expect_string
                ));
            }
        }
    }
    Ok(())
}

const AT_UNSAFE: &[&str] = &[
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "end",
    "hour",
    "minute",
    "month",
    "year",
    "predict_linear",
    "range",
    "start",
    "step",
    "time",
    "timestamp",
];

/// Pins every selector/subquery without `@` to `t` (not descending into subqueries that have
/// one); returns false when the expression contains a function unsafe for this rewrite.
fn pin_at(e: &mut Expr, t: i64) -> bool {
    let at = || {
        let secs = t as f64 / 1000.0;
        pp::AtModifier::try_from(secs).ok()
    };
    match e {
        Expr::VectorSelector(vs) => {
            if vs.at.is_none() {
                vs.at = at();
            }
            true
        }
        Expr::MatrixSelector(ms) => {
            if ms.vs.at.is_none() {
                ms.vs.at = at();
            }
            true
        }
        Expr::Subquery(sq) => {
            if sq.at.is_none() {
                sq.at = at();
                safe(&sq.expr)
            } else {
                safe(&sq.expr)
            }
        }
        Expr::Aggregate(a) => {
            let mut ok = pin_at(&mut a.expr, t);
            if let Some(p) = a.param.as_mut() {
                ok &= pin_at(p, t);
            }
            ok
        }
        Expr::Unary(u) => pin_at(&mut u.expr, t),
        Expr::Binary(b) => pin_at(&mut b.lhs, t) & pin_at(&mut b.rhs, t),
        Expr::Paren(p) => pin_at(&mut p.expr, t),
        Expr::Call(c) => {
            let mut ok = !AT_UNSAFE.contains(&c.func.name);
            for a in &mut c.args.args {
                ok &= pin_at(a, t);
            }
            ok
        }
        _ => true,
    }
}

fn safe(e: &Expr) -> bool {
    match e {
        Expr::Subquery(sq) => safe(&sq.expr),
        Expr::Aggregate(a) => safe(&a.expr) && a.param.as_ref().is_none_or(|p| safe(p)),
        Expr::Unary(u) => safe(&u.expr),
        Expr::Binary(b) => safe(&b.lhs) && safe(&b.rhs),
        Expr::Paren(p) => safe(&p.expr),
        Expr::Call(c) => !AT_UNSAFE.contains(&c.func.name) && c.args.args.iter().all(|a| safe(a)),
        _ => true,
    }
}

fn context_funcs(expr: &str) -> bool {
    ["start()", "end()", "range()", "step()"]
        .iter()
        .any(|f| expr.contains(f))
}

async fn run_instant(
    engine: &Engine,
    store: &MemoryQueryable,
    ev: &EvalCmd,
    expr: &Expr,
    t: i64,
) -> Result<(), String> {
    let cancel = CancelFlag::new();
    let res = engine.instant_query_expr(store, expr, t, &cancel).await;
    let res = match res {
        Err(e) => {
            if ev.fail {
                return check_fail(ev, &e);
            }
            return Err(format!("error evaluating query: {e}"));
        }
        Ok(r) => r,
    };
    if ev.fail {
        return Err("expected error evaluating query but got none".into());
    }
    check_annos(ev, &res)?;
    compare(ev, &res.value, ev.start, ev.end, ev.step)?;
    if ev.exclude_from_range || context_funcs(&ev.expr) {
        return Ok(());
    }
    let rr = engine
        .range_query_expr(store, expr, t - 60_000, t + 60_000, 60_000, &cancel)
        .await
        .map_err(|e| format!("error evaluating query in range mode: {e}"))?;
    if ev.ordered {
        return Ok(());
    }
    let Value::Matrix(m) = &rr.value else {
        return Err("range query did not return a matrix".into());
    };
    let mut vec = Vec::new();
    for s in m {
        if let Some(p) = s.points.iter().find(|p| p.t == t) {
            vec.push(gauntlet::promql::InstantSample {
                labels: s.labels.clone(),
                t,
                v: p.v,
                h: p.h.clone(),
            });
        }
    }
    let v = if matches!(res.value, Value::Scalar(_)) {
        Value::Scalar(Point::float(t, vec.first().map_or(f64::NAN, |s| s.v)))
    } else {
        Value::Vector(vec)
    };
    compare(ev, &v, ev.start, ev.end, ev.step).map_err(|e| format!("range mode: {e}"))
}

async fn run_eval(engine: &Engine, store: &MemoryQueryable, ev: &EvalCmd) -> Result<(), String> {
    if let Some(u) = &ev.unsupported {
        return Err(format!("unsupported expectation: {u}"));
    }
    let expr = match gauntlet::promql::parse_expr(&ev.expr) {
        Ok(e) => e,
        Err(err) => {
            if ev.fail {
                return check_fail(ev, &err);
            }
            return Err(format!("parse error: {err}"));
        }
    };

    if ev.instant {
        let t = ev.start;
        let t = if ev.range_vector { ev.end } else { t };
        run_instant(engine, store, ev, &expr, t).await?;
        // The same query with every selector pinned by `@` must give the same result.
        let mut pinned = expr.clone();
        if pin_at(&mut pinned, t) {
            let times: Vec<i64> = if t == 0 {
                vec![-1000, 0, 1000]
            } else {
                vec![-10 * t, 0, t / 5, t, 10 * t]
            };
            for et in times {
                run_instant(engine, store, ev, &pinned, et)
                    .await
                    .map_err(|e| format!("with @ {t} at {et}: {e}"))?;
            }
        }
        Ok(())
    } else {
        let cancel = CancelFlag::new();
        match engine
            .range_query_expr(store, &expr, ev.start, ev.end, ev.step, &cancel)
            .await
        {
            Err(e) => {
                if ev.fail {
                    check_fail(ev, &e)
                } else {
                    Err(format!("error evaluating query: {e}"))
                }
            }
            Ok(res) => {
                if ev.fail {
                    return Err("expected error but got none".into());
                }
                check_annos(ev, &res)?;
                compare(ev, &res.value, ev.start, ev.end, ev.step)
            }
        }
    }
}

fn corpus_dir() -> PathBuf {
    match std::env::var("GAUNTLET_PROMQL_TESTS") {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/promql-tests"
        )),
    }
}

fn known_failures_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/promql/known_failures.txt")
}

fn read_known() -> BTreeMap<String, String> {
    let Ok(text) = std::fs::read_to_string(known_failures_path()) else {
        return BTreeMap::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((id, reason)) => (id.to_string(), reason.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

#[tokio::test]
async fn promql_conformance() {
    let dir = corpus_dir();
    assert!(
        dir.is_dir(),
        "PromQL test corpus not found at {} (set GAUNTLET_PROMQL_TESTS to its directory)",
        dir.display()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.test files in {}", dir.display());
    let engine = Engine::new(EngineOptions::default());
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    let mut table = String::new();
    let (mut tp, mut tf) = (0usize, 0usize);
    let (mut np, mut nf) = (0usize, 0usize);
    // Cases that involve no native histograms (no histogram data loaded, none expected).
    let (mut fp, mut ff) = (0usize, 0usize);
    writeln!(table, "{:<32} {:>7} {:>7}", "file", "passed", "failed").unwrap();
    for f in &files {
        let fname = f.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        let cmds = match parse_file(&text) {
            Ok(c) => c,
            Err(e) => panic!("{fname}: {e}"),
        };
        let mut store = MemoryQueryable::new();
        let mut hist_data = false;
        let (mut p, mut fl) = (0usize, 0usize);
        for c in &cmds {
            match c {
                Cmd::Clear => {
                    store.clear();
                    hist_data = false;
                }
                Cmd::Load(gap, series) => {
                    load(&mut store, *gap, series);
                    hist_data |= series
                        .iter()
                        .any(|(_, v)| v.iter().any(|x| matches!(x, SeqVal::Hist(_))));
                }
                Cmd::Eval(ev) => {
                    let id = format!("{fname}:{}", ev.line);
                    let res = run_eval(&engine, &store, ev).await;
                    let native = fname == "native_histograms.test" || hist_data || ev.has_hist;
                    match res {
                        Ok(()) => {
                            p += 1;
                            fp += usize::from(!native);
                        }
                        Err(e) => {
                            fl += 1;
                            ff += usize::from(!native);
                            let prefix =
                                if hist_data || ev.has_hist || e.contains("native histogram") {
                                    "[native histograms] "
                                } else {
                                    ""
                                };
                            let reason: String = format!("{prefix}{}", e.replace('\n', " "))
                                .chars()
                                .take(160)
                                .collect();
                            failures.insert(id, reason);
                        }
                    }
                }
            }
        }
        writeln!(table, "{fname:<32} {p:>7} {fl:>7}").unwrap();
        tp += p;
        tf += fl;
        if fname != "native_histograms.test" {
            np += p;
            nf += fl;
        }
    }
    println!("{table}");
    println!("{tp} passed, {tf} failed");
    let pct = if np + nf > 0 {
        100.0 * np as f64 / (np + nf) as f64
    } else {
        0.0
    };
    println!("excluding native_histograms.test: {np} passed, {nf} failed ({pct:.1}% passing)");
    let fpct = if fp + ff > 0 {
        100.0 * fp as f64 / (fp + ff) as f64
    } else {
        0.0
    };
    println!("cases without native histograms: {fp} passed, {ff} failed ({fpct:.1}% passing)");

    if std::env::var("GAUNTLET_PROMQL_WRITE_KNOWN_FAILURES").is_ok_and(|v| v == "1") {
        let mut out = String::from(
            "# PromQL conformance cases that fail today: `file.test:LINE reason`.\n# The conformance test fails if a case not listed here fails, or a listed case passes.\n",
        );
        for (id, reason) in &failures {
            writeln!(out, "{id} {reason}").unwrap();
        }
        std::fs::write(known_failures_path(), out).unwrap();
        println!("wrote {}", known_failures_path().display());
        return;
    }
    let known = read_known();
    let new_failures: Vec<_> = failures
        .iter()
        .filter(|(id, _)| !known.contains_key(*id))
        .collect();
    let fixed: Vec<_> = known
        .keys()
        .filter(|id| !failures.contains_key(*id))
        .collect();
    for (id, reason) in &new_failures {
        println!("NEW FAILURE {id}: {reason}");
    }
    for id in &fixed {
        println!("NOW PASSING (remove from known_failures.txt) {id}");
    }
    assert!(
        new_failures.is_empty() && fixed.is_empty(),
        "{} unexpected failures, {} known failures now pass",
        new_failures.len(),
        fixed.len()
    );
}
