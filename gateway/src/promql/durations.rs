//! Query-text rewrites done before parsing, where Prometheus 3.5 and the parser crate differ:
//! duration expressions (`foo[5m+1m]`, `[1h/2:10s*3]`, `offset (2*30s)`) are evaluated to
//! plain millisecond durations, and string escapes that spell invalid UTF-8 are kept as
//! raw-byte characters instead of being read as Latin-1.
//!
//! Only bracket contents, parenthesised offsets with arithmetic and such string literals are
//! touched. Must never change the meaning of a query that needs neither rewrite.

use std::borrow::Cow;

/// Rewrites duration arithmetic into literal durations; errors carry a Prometheus-like message.
pub(crate) fn rewrite(q: &str) -> Result<Cow<'_, str>, String> {
    if !q.contains('[') && !q.contains("offset") {
        return Ok(Cow::Borrowed(q));
    }
    let b = q.as_bytes();
    let mut out = String::with_capacity(q.len());
    let mut changed = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            let end = skip_string(b, i);
            out.push_str(&q[i..end]);
            i = end;
            continue;
        }
        if c == b'[' {
            let Some(close) = q[i..].find(']').map(|x| x + i) else {
                out.push_str(&q[i..]);
                break;
            };
            let inner = &q[i + 1..close];
            let parts: Vec<&str> = inner.split(':').collect();
            if parts.len() <= 2 && parts.iter().any(|p| needs_eval(p)) {
                let mut rewritten = Vec::new();
                for p in &parts {
                    if needs_eval(p) {
                        rewritten.push(format!("{}ms", eval_ms(p)?));
                    } else {
                        rewritten.push((*p).to_string());
                    }
                }
                out.push('[');
                out.push_str(&rewritten.join(":"));
                out.push(']');
                changed = true;
            } else {
                out.push_str(&q[i..=close]);
            }
            i = close + 1;
            continue;
        }
        if q[i..].starts_with("offset")
            && (i == 0 || !is_ident(b[i - 1]))
            && b.get(i + 6).is_none_or(|x| !is_ident(*x))
        {
            out.push_str("offset");
            let mut j = i + 6;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let mut neg = false;
            let mut k = j;
            if k < b.len() && b[k] == b'-' {
                neg = true;
                k += 1;
                while k < b.len() && b[k].is_ascii_whitespace() {
                    k += 1;
                }
            }
            if k < b.len()
                && b[k] == b'('
                && let Some(close) = matching_paren(b, k)
            {
                {
                    let ms = eval_ms(&q[k..=close])?;
                    let ms = if neg { -ms } else { ms };
                    out.push(' ');
                    out.push_str(&format!("{ms}ms"));
                    changed = true;
                    i = close + 1;
                    continue;
                }
            }
            i += 6;
            continue;
        }
        let ch_len = q[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&q[i..i + ch_len]);
        i += ch_len;
    }
    Ok(if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(q)
    })
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn skip_string(b: &[u8], start: usize) -> usize {
    let q = b[start];
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\\' && q != b'`' {
            i += 2;
            continue;
        }
        if b[i] == q {
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

fn matching_paren(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, &c) in b.iter().enumerate().skip(open) {
        match c {
            b'(' => depth += 1,
            b')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn needs_eval(s: &str) -> bool {
    let t = s.trim();
    // A leading sign alone is not arithmetic for the parser's purposes only when it is a plain
    // duration; anything with an operator after the first character or parentheses is.
    t.char_indices()
        .any(|(i, c)| matches!(c, '+' | '*' | '/' | '%' | '^' | '(' | ')') || (c == '-' && i > 0))
        || t.starts_with('-')
}

struct P<'a> {
    b: &'a [u8],
    i: usize,
}

impl P<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }
    fn expr(&mut self) -> Result<f64, String> {
        let mut v = self.term()?;
        while let Some(c) = self.peek() {
            match c {
                b'+' => {
                    self.i += 1;
                    v += self.term()?;
                }
                b'-' => {
                    self.i += 1;
                    v -= self.term()?;
                }
                _ => break,
            }
        }
        Ok(v)
    }
    fn term(&mut self) -> Result<f64, String> {
        let mut v = self.unary()?;
        while let Some(c) = self.peek() {
            match c {
                b'*' => {
                    self.i += 1;
                    v *= self.unary()?;
                }
                b'/' => {
                    self.i += 1;
                    let d = self.unary()?;
                    if d == 0.0 {
                        return Err("division by zero in duration expression".into());
                    }
                    v /= d;
                }
                b'%' => {
                    self.i += 1;
                    let d = self.unary()?;
                    if d == 0.0 {
                        return Err("modulo by zero in duration expression".into());
                    }
                    v %= d;
                }
                _ => break,
            }
        }
        Ok(v)
    }
    fn unary(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some(b'-') => {
                self.i += 1;
                Ok(-self.unary()?)
            }
            Some(b'+') => {
                self.i += 1;
                self.unary()
            }
            _ => self.power(),
        }
    }
    fn power(&mut self) -> Result<f64, String> {
        let base = self.atom()?;
        if self.peek() == Some(b'^') {
            self.i += 1;
            let e = self.unary()?;
            return Ok(base.powf(e));
        }
        Ok(base)
    }
    fn atom(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some(b'(') => {
                self.i += 1;
                let v = self.expr()?;
                if self.peek() != Some(b')') {
                    return Err("unclosed parenthesis in duration expression".into());
                }
                self.i += 1;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => self.number(),
            _ => Err("unexpected token in duration expression".into()),
        }
    }
    /// A number (seconds) or a duration literal like `1h30m` or `8000ms`, in seconds.
    fn number(&mut self) -> Result<f64, String> {
        let start = self.i;
        let mut total = 0.0;
        let mut any_unit = false;
        loop {
            let ns = self.i;
            while self.i < self.b.len()
                && (self.b[self.i].is_ascii_digit() || self.b[self.i] == b'.')
            {
                self.i += 1;
            }
            if ns == self.i {
                break;
            }
            let n: f64 = std::str::from_utf8(&self.b[ns..self.i])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("bad number in duration expression")?;
            let us = self.i;
            while self.i < self.b.len() && self.b[self.i].is_ascii_alphabetic() {
                self.i += 1;
            }
            let unit = std::str::from_utf8(&self.b[us..self.i]).unwrap_or("");
            let mult = match unit {
                "" => {
                    if any_unit {
                        return Err("bad duration".into());
                    }
                    total += n;
                    break;
                }
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86_400.0,
                "w" => 604_800.0,
                "y" => 31_536_000.0,
                _ => return Err(format!("unknown unit {unit:?} in duration expression")),
            };
            any_unit = true;
            total += n * mult;
        }
        if start == self.i {
            return Err("expected number".into());
        }
        Ok(total)
    }
}

fn eval_ms(s: &str) -> Result<i64, String> {
    let mut p = P {
        b: s.as_bytes(),
        i: 0,
    };
    let v = p.expr()?;
    p.ws();
    if p.i != s.len() {
        return Err(format!("unexpected character in duration expression {s:?}"));
    }
    if !v.is_finite() {
        return Err(format!("duration expression {s:?} is not finite"));
    }
    Ok((v * 1000.0).round() as i64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::rewrite;

    #[test]
    fn rewrites_arithmetic_only() {
        assert_eq!(rewrite("rate(x[5m])").unwrap(), "rate(x[5m])");
        assert_eq!(rewrite("x[26m+4m]").unwrap(), "x[1800000ms]");
        assert_eq!(rewrite("x[2m*(10+5)]").unwrap(), "x[1800000ms]");
        assert_eq!(rewrite("x[29s+1s:5s+5s]").unwrap(), "x[30000ms:10000ms]");
        assert_eq!(rewrite("x[29s+1s:]").unwrap(), "x[30000ms:]");
        assert_eq!(rewrite("x offset (100 + 2)").unwrap(), "x offset 102000ms");
        assert_eq!(rewrite("x offset -(2 * 2)").unwrap(), "x offset -4000ms");
        assert_eq!(rewrite("x offset 100 + 2").unwrap(), "x offset 100 + 2");
        assert_eq!(rewrite("x{a=\"[1+1]\"}").unwrap(), "x{a=\"[1+1]\"}");
        assert_eq!(rewrite("x[1h30m % 1h]").unwrap(), "x[1800000ms]");
    }
}

/// First of 256 private-use characters standing for the bytes of invalid UTF-8 sequences.
pub(crate) const RAW_BYTE_BASE: u32 = 0x10_FF00;

/// True when `c` stands for a raw byte of an invalid UTF-8 sequence.
pub(crate) fn is_raw_byte(c: char) -> bool {
    (RAW_BYTE_BASE..=RAW_BYTE_BASE + 0xff).contains(&u32::from(c))
}

/// Quotes a string like Go's `%q`, showing raw-byte characters as `\xNN`.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            _ if is_raw_byte(c) => {
                out.push_str(&format!("\\x{:02x}", u32::from(c) - RAW_BYTE_BASE));
            }
            _ if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Rewrites string literals whose escapes (`\xNN`, octal) spell invalid UTF-8 so that each
/// invalid byte becomes a private-use character (see [`RAW_BYTE_BASE`]). Prometheus sees such
/// strings as raw bytes and rejects them as label names; the parser crate would read the
/// bytes as Latin-1 characters instead, which are valid names.
pub(crate) fn mark_invalid_utf8(q: &str) -> Cow<'_, str> {
    if !q.contains('\\') {
        return Cow::Borrowed(q);
    }
    let b = q.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'`' {
            i = skip_string(b, i);
            continue;
        }
        if c != b'"' && c != b'\'' {
            i += 1;
            continue;
        }
        let end = skip_string(b, i);
        if let Some(bytes) = go_unescape(&b[i + 1..end.saturating_sub(1).max(i + 1)])
            && std::str::from_utf8(&bytes).is_err()
        {
            out.push_str(&q[copied..i]);
            out.push(c as char);
            let mut text = String::new();
            for chunk in bytes.utf8_chunks() {
                text.push_str(chunk.valid());
                for &raw in chunk.invalid() {
                    text.push(char::from_u32(RAW_BYTE_BASE + u32::from(raw)).unwrap_or('\u{FFFD}'));
                }
            }
            for ch in text.chars() {
                match ch {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    _ if ch as u32 == u32::from(c) => {
                        out.push('\\');
                        out.push(ch);
                    }
                    _ => out.push(ch),
                }
            }
            out.push(c as char);
            copied = end;
        }
        i = end;
    }
    if copied == 0 {
        return Cow::Borrowed(q);
    }
    out.push_str(&q[copied..]);
    Cow::Owned(out)
}

/// Go-style unescaping of a quoted string's body into bytes; None on malformed escapes.
fn go_unescape(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = *body.get(i + 1)?;
        i += 2;
        match e {
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'\\' | b'"' | b'\'' => out.push(e),
            b'x' => {
                let h = std::str::from_utf8(body.get(i..i + 2)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            b'0'..=b'7' => {
                let o = std::str::from_utf8(body.get(i - 1..i + 2)?).ok()?;
                out.push(u8::try_from(u32::from_str_radix(o, 8).ok()?).ok()?);
                i += 2;
            }
            b'u' | b'U' => {
                let n = if e == b'u' { 4 } else { 8 };
                let h = std::str::from_utf8(body.get(i..i + n)?).ok()?;
                let ch = char::from_u32(u32::from_str_radix(h, 16).ok()?)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                i += n;
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod utf8_tests {
    use super::mark_invalid_utf8;

    #[test]
    fn marks_only_invalid_literals() {
        assert_eq!(mark_invalid_utf8(r#"f("a\xc5z")"#), "f(\"a\u{10FFC5}z\")");
        assert_eq!(
            mark_invalid_utf8(r#"f("\xff", "ok\n")"#),
            "f(\"\u{10FFFF}\", \"ok\\n\")"
        );
        assert_eq!(super::go_quote("a\u{10FFC5}z"), r#""a\xc5z""#);
        assert_eq!(mark_invalid_utf8(r#"f("\xc3\xa9")"#), r#"f("\xc3\xa9")"#);
        assert_eq!(mark_invalid_utf8(r#"f(`\xff`)"#), r#"f(`\xff`)"#);
    }
}
