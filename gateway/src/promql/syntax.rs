//! Where and why a query that lexes cleanly fails to parse, in Prometheus's words.
//!
//! `promql-parser` reports every grammar error as "invalid promql query" without a position.
//! When that happens this module re-reads the query with a small recogniser of the PromQL
//! grammar and names the first token no valid query could continue with, the way Prometheus's
//! parser does: `unexpected <token>`, qualified by the innermost construct that has its own
//! error rule (aggregation, grouping labels, label matchers, offset, `@`, subquery), e.g.
//! `1:5: parse error: unexpected identifier "bar"` or
//! `1:13: parse error: unexpected end of input in offset, expected number or duration`.

/// A grammar error: byte offset of the offending token and Prometheus's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Byte range of the offending token (`start == end == len` at end of input).
    pub range: (usize, usize),
    /// The message without position, e.g. `unexpected <op:*>`.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Identifier,
    MetricIdentifier,
    Number,
    Duration,
    String,
    /// `and`, `or`, `unless`, `atan2` and symbolic operators.
    Operator,
    Aggregator,
    /// `offset`, `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`, `bool`,
    /// `start`, `end`.
    Keyword,
    /// `(`, `)`, `{`, `}`, `[`, `]`, `,`, `=`, `:`, `@`, `=~`, `!~`.
    Punct,
    Eof,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
    start: usize,
}

impl Token<'_> {
    fn is(&self, text: &str) -> bool {
        matches!(self.kind, Kind::Punct | Kind::Operator | Kind::Keyword) && self.text == text
    }

    /// Prometheus's `Item.desc()`.
    fn describe(&self) -> String {
        match self.kind {
            Kind::Eof => "end of input".to_owned(),
            Kind::Identifier => format!("identifier {}", go_quote(self.text)),
            Kind::MetricIdentifier => format!("metric identifier {}", go_quote(self.text)),
            Kind::Number => format!("number {}", short_quote(self.text)),
            Kind::Duration => format!("duration {}", short_quote(self.text)),
            Kind::String => format!("string {}", short_quote(self.text)),
            Kind::Aggregator => format!("<aggr:{}>", self.text),
            Kind::Keyword => format!("<{}>", self.text),
            Kind::Operator => format!("<op:{}>", self.text),
            Kind::Punct if self.text == "@" => format!("<{}>", self.text),
            Kind::Punct => go_quote(self.text),
        }
    }
}

/// Go's `%q` for the strings tokens hold (printable text: escape quotes and backslashes).
fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%.10q...` for values longer than ten bytes, `%q` otherwise.
fn short_quote(text: &str) -> String {
    if text.len() <= 10 {
        return go_quote(text);
    }
    let cut = (0..=10)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}...", go_quote(&text[..cut]))
}

const AGGREGATORS: &[&str] = &[
    "sum",
    "avg",
    "count",
    "min",
    "max",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "count_values",
    "quantile",
    "limitk",
    "limit_ratio",
];
const KEYWORDS: &[&str] = &[
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "start",
    "end",
];
const WORD_OPERATORS: &[&str] = &["and", "or", "unless", "atan2"];
const SYMBOLS: &[&str] = &[
    "==", "!=", "<=", ">=", "=~", "!~", "+", "-", "*", "/", "%", "^", "<", ">", "(", ")", "{", "}",
    "[", "]", ",", "=", ":", "@",
];

/// Splits a query into tokens; `None` when it meets something only the lexer reports.
fn tokenize(query: &str) -> Option<Vec<Token<'_>>> {
    let bytes = query.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut braces = false;
    let mut brackets = false;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'"' || c == b'\'' || c == b'`' {
            i += 1;
            while i < bytes.len() && bytes[i] != c {
                if bytes[i] == b'\\' && c != b'`' {
                    i += 1;
                }
                i += 1;
            }
            if i >= bytes.len() {
                return None;
            }
            i += 1;
            tokens.push(Token {
                kind: Kind::String,
                text: &query[start..i],
                start,
            });
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric()
                    || bytes[i] == b'.'
                    || ((bytes[i] == b'+' || bytes[i] == b'-')
                        && matches!(bytes[i - 1], b'e' | b'E')
                        && !query[start..i].starts_with("0x")))
            {
                i += 1;
            }
            let text = &query[start..i];
            let kind = if text
                .bytes()
                .any(|b| matches!(b, b's' | b'm' | b'h' | b'd' | b'w' | b'y'))
                && !text.starts_with("0x")
            {
                Kind::Duration
            } else {
                Kind::Number
            };
            tokens.push(Token { kind, text, start });
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || (c == b':' && !brackets) {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            let text = &query[start..i];
            let lower = text.to_ascii_lowercase();
            let kind = if braces {
                Kind::Identifier
            } else if lower == "inf" || lower == "nan" {
                Kind::Number
            } else if AGGREGATORS.contains(&lower.as_str()) {
                Kind::Aggregator
            } else if WORD_OPERATORS.contains(&lower.as_str()) {
                Kind::Operator
            } else if KEYWORDS.contains(&lower.as_str()) {
                Kind::Keyword
            } else if text.contains(':') {
                Kind::MetricIdentifier
            } else {
                Kind::Identifier
            };
            // Keywords and operators compare in lower case, as Prometheus's lexer does.
            let text = if matches!(kind, Kind::Aggregator | Kind::Operator | Kind::Keyword) {
                AGGREGATORS
                    .iter()
                    .chain(WORD_OPERATORS)
                    .chain(KEYWORDS)
                    .find(|k| **k == lower)
                    .copied()
                    .unwrap_or(text)
            } else {
                text
            };
            tokens.push(Token { kind, text, start });
            continue;
        }
        let symbol = SYMBOLS.iter().find(|s| query[i..].starts_with(**s))?;
        i += symbol.len();
        match *symbol {
            "{" => braces = true,
            "}" => braces = false,
            "[" => brackets = true,
            "]" => brackets = false,
            _ => {}
        }
        let kind = match *symbol {
            "+" | "-" | "*" | "/" | "%" | "^" | "==" | "!=" | "<" | ">" | "<=" | ">=" => {
                Kind::Operator
            }
            _ => Kind::Punct,
        };
        tokens.push(Token {
            kind,
            text: symbol,
            start,
        });
    }
    tokens.push(Token {
        kind: Kind::Eof,
        text: "",
        start: query.len(),
    });
    Some(tokens)
}

/// A construct with its own error rule in Prometheus's grammar: (context, expected).
type Context = (&'static str, &'static str);

struct Failure {
    token: usize,
    context: Option<Context>,
}

type Parsed = Result<(), Failure>;

struct Recogniser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
    depth: usize,
    calls: Vec<Call<'a>>,
    /// Binary expressions in the order Prometheus checks them (operands first).
    binaries: Vec<Binary<'a>>,
}

/// A binary expression as written: its operands' byte ranges and its operator.
#[derive(Debug, Clone)]
struct Binary<'a> {
    lhs: (usize, usize),
    op: Token<'a>,
    /// `on(...)`/`ignoring(...)` given.
    matching: bool,
    rhs: (usize, usize),
}

/// A function call as written: where it starts, its arguments, a trailing comma.
#[derive(Debug, Clone)]
struct Call<'a> {
    name: &'a str,
    start: usize,
    args: usize,
    trailing_comma: Option<usize>,
    /// Byte ranges of the arguments.
    spans: Vec<(usize, usize)>,
    /// An aggregation (`sum(...)`, `topk(k, ...)`) rather than a function call.
    aggregation: bool,
}

/// A call's arguments as byte ranges, and where a trailing comma is.
type CallArgs = (Vec<(usize, usize)>, Option<usize>);

/// Deepest nesting the recogniser follows (the engine rejects deeper queries before parsing).
const MAX_DEPTH: usize = 2_000;

impl<'a> Recogniser<'a> {
    fn peek(&self) -> Token<'a> {
        self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token<'a> {
        let token = self.peek();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        token
    }

    fn fail(&self, context: Option<Context>) -> Failure {
        Failure {
            token: self.pos,
            context,
        }
    }

    fn expect(&mut self, text: &str, context: Option<Context>) -> Parsed {
        if self.peek().is(text) {
            self.bump();
            Ok(())
        } else {
            Err(self.fail(context))
        }
    }

    fn binary_precedence(token: Token<'_>) -> Option<(u8, bool)> {
        if token.kind != Kind::Operator {
            return None;
        }
        Some(match token.text {
            "or" => (1, false),
            "and" | "unless" => (2, false),
            "==" | "!=" | "<" | "<=" | ">" | ">=" => (3, false),
            "+" | "-" => (4, false),
            "*" | "/" | "%" | "atan2" => (5, false),
            "^" => (6, true),
            _ => return None,
        })
    }

    fn expr(&mut self, min_precedence: u8) -> Parsed {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.fail(None));
        }
        let start = self.peek().start;
        self.unary()?;
        while let Some((precedence, right)) = Self::binary_precedence(self.peek()) {
            if precedence < min_precedence {
                break;
            }
            let op = self.bump();
            let matching = self.peek().is("on")
                || self.peek().is("ignoring")
                || (self.peek().is("bool")
                    && self
                        .tokens
                        .get(self.pos + 1)
                        .is_some_and(|t| t.is("on") || t.is("ignoring")));
            self.bin_modifiers()?;
            let rhs_start = self.peek().start;
            self.expr(if right { precedence } else { precedence + 1 })?;
            self.binaries.push(Binary {
                lhs: (start, op.start),
                op,
                matching,
                rhs: (rhs_start, self.peek().start),
            });
        }
        self.depth -= 1;
        Ok(())
    }

    fn bin_modifiers(&mut self) -> Parsed {
        if self.peek().is("bool") {
            self.bump();
        }
        if self.peek().is("on") || self.peek().is("ignoring") {
            self.bump();
            self.grouping_labels()?;
            if self.peek().is("group_left") || self.peek().is("group_right") {
                self.bump();
                if self.peek().is("(") {
                    self.grouping_labels()?;
                }
            }
        }
        Ok(())
    }

    fn unary(&mut self) -> Parsed {
        if self.peek().is("+") || self.peek().is("-") {
            self.bump();
            // Unary operators bind looser than `^` and tighter than `*`.
            return self.expr(6);
        }
        self.primary()?;
        self.postfix()
    }

    fn primary(&mut self) -> Parsed {
        let token = self.peek();
        match token.kind {
            Kind::Number | Kind::Duration | Kind::String => {
                self.bump();
                Ok(())
            }
            Kind::Aggregator => self.aggregation(),
            Kind::Identifier | Kind::MetricIdentifier => {
                self.bump();
                if token.kind == Kind::Identifier && self.peek().is("(") {
                    let index = self.open_call(token, false);
                    let args = self.call_args()?;
                    self.close_call(index, args);
                    Ok(())
                } else if self.peek().is("{") {
                    self.matchers()
                } else {
                    Ok(())
                }
            }
            Kind::Punct if token.text == "(" => {
                self.bump();
                self.expr(0)?;
                self.expect(")", None)
            }
            Kind::Punct if token.text == "{" => self.matchers(),
            _ => Err(self.fail(None)),
        }
    }

    /// Records a call (or aggregation) named by `token` before its arguments are read.
    fn open_call(&mut self, token: Token<'a>, aggregation: bool) -> usize {
        self.calls.push(Call {
            name: token.text,
            start: token.start,
            args: 0,
            trailing_comma: None,
            spans: Vec::new(),
            aggregation,
        });
        self.calls.len() - 1
    }

    /// Completes the call recorded at `index` with its arguments.
    fn close_call(&mut self, index: usize, (spans, trailing_comma): CallArgs) {
        let call = &mut self.calls[index];
        call.args = spans.len();
        call.spans = spans;
        call.trailing_comma = trailing_comma;
    }

    /// `( expr, ... )`: the byte range of each argument and where a trailing comma is.
    fn call_args(&mut self) -> Result<CallArgs, Failure> {
        self.expect("(", None)?;
        let mut spans = Vec::new();
        loop {
            if self.peek().is(")") {
                self.bump();
                return Ok((spans, None));
            }
            let start = self.peek().start;
            self.expr(0)?;
            spans.push((start, self.peek().start));
            if self.peek().is(",") {
                let comma = self.bump().start;
                if self.peek().is(")") {
                    self.bump();
                    return Ok((spans, Some(comma)));
                }
                continue;
            }
            self.expect(")", None)?;
            return Ok((spans, None));
        }
    }

    fn aggregation(&mut self) -> Parsed {
        const AGGREGATION: Context = ("aggregation", "");
        let token = self.bump();
        let index = self.open_call(token, true);
        let modifier_first = self.peek().is("by") || self.peek().is("without");
        if modifier_first {
            self.bump();
            self.grouping_labels()?;
        } else if !self.peek().is("(") {
            return Err(self.fail(None));
        }
        let args = self.call_args().map_err(|f| Failure {
            context: f.context.or(Some(AGGREGATION)),
            ..f
        })?;
        self.close_call(index, args);
        if !modifier_first && (self.peek().is("by") || self.peek().is("without")) {
            self.bump();
            self.grouping_labels()?;
        }
        Ok(())
    }

    fn grouping_labels(&mut self) -> Parsed {
        self.expect("(", Some(("grouping opts", "\"(\"")))?;
        loop {
            let token = self.peek();
            if token.is(")") {
                self.bump();
                return Ok(());
            }
            let label = matches!(
                token.kind,
                Kind::Identifier
                    | Kind::MetricIdentifier
                    | Kind::Keyword
                    | Kind::Aggregator
                    | Kind::String
            ) || (token.kind == Kind::Operator
                && token.text.chars().all(char::is_alphabetic));
            if !label {
                return Err(self.fail(Some(("grouping opts", "label"))));
            }
            self.bump();
            if self.peek().is(",") {
                self.bump();
            } else if !self.peek().is(")") {
                return Err(self.fail(Some(("grouping opts", "\",\" or \")\""))));
            }
        }
    }

    fn matchers(&mut self) -> Parsed {
        const CONTEXT: &str = "label matching";
        self.expect("{", None)?;
        loop {
            let token = self.peek();
            if token.is("}") {
                self.bump();
                return Ok(());
            }
            if !matches!(token.kind, Kind::Identifier | Kind::String) {
                return Err(self.fail(Some((CONTEXT, "identifier or \"}\""))));
            }
            self.bump();
            let op = self.peek();
            if op.kind == Kind::String && token.kind == Kind::String {
                // A bare quoted metric name: `{"name"}`.
            } else if op.is("=") || op.is("!=") || op.is("=~") || op.is("!~") {
                self.bump();
                if self.peek().kind != Kind::String {
                    return Err(self.fail(Some((CONTEXT, "string"))));
                }
                self.bump();
            } else if !(token.kind == Kind::String && (op.is(",") || op.is("}"))) {
                return Err(self.fail(Some((CONTEXT, "label matching operator"))));
            }
            if self.peek().is(",") {
                self.bump();
            } else if !self.peek().is("}") {
                return Err(self.fail(Some((CONTEXT, "\",\" or \"}\""))));
            }
        }
    }

    fn duration_literal(&mut self) -> bool {
        if matches!(self.peek().kind, Kind::Duration | Kind::Number) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn postfix(&mut self) -> Parsed {
        loop {
            let token = self.peek();
            if token.is("[") {
                self.bump();
                if !self.duration_literal() {
                    return Err(self.fail(Some(("subquery selector", "number or duration"))));
                }
                if self.peek().is(":") {
                    self.bump();
                    if !self.peek().is("]") && !self.duration_literal() {
                        return Err(
                            self.fail(Some(("subquery selector", "number or duration or \"]\"")))
                        );
                    }
                    self.expect("]", Some(("subquery selector", "\"]\"")))?;
                } else {
                    self.expect("]", Some(("subquery or range", "\":\" or \"]\"")))?;
                }
            } else if token.is("offset") {
                self.bump();
                if self.peek().is("-") || self.peek().is("+") {
                    self.bump();
                }
                if !self.duration_literal() {
                    return Err(self.fail(Some(("offset", "number or duration"))));
                }
            } else if token.is("@") {
                self.bump();
                if self.peek().is("-") || self.peek().is("+") {
                    self.bump();
                }
                if self.peek().is("start") || self.peek().is("end") {
                    self.bump();
                    self.expect("(", Some(("@", "timestamp")))?;
                    self.expect(")", Some(("@", "timestamp")))?;
                } else if !self.duration_literal() {
                    return Err(self.fail(Some(("@", "timestamp"))));
                }
            } else {
                return Ok(());
            }
        }
    }
}

/// The first grammar error in `query`, or `None` when the recogniser accepts it (the error is
/// then semantic) or cannot tokenize it (the error is lexical).
pub fn diagnose(query: &str) -> Option<SyntaxError> {
    let tokens = tokenize(query)?;
    let mut recogniser = Recogniser {
        tokens,
        pos: 0,
        depth: 0,
        calls: Vec::new(),
        binaries: Vec::new(),
    };
    let failure = match recogniser.expr(0) {
        Ok(()) if recogniser.peek().kind == Kind::Eof => return None,
        Ok(()) => recogniser.fail(None),
        Err(failure) => failure,
    };
    let token = recogniser.tokens[failure.token.min(recogniser.tokens.len() - 1)];
    let mut message = format!("unexpected {}", token.describe());
    if let Some((context, expected)) = failure.context {
        message.push_str(" in ");
        message.push_str(context);
        if !expected.is_empty() {
            message.push_str(", expected ");
            message.push_str(expected);
        }
    }
    Some(SyntaxError {
        range: (token.start, token.start + token.text.len()),
        message,
    })
}

/// Where a function-call error points, in Prometheus's words: `message` is the parser's own
/// message; the result is Prometheus's message and the byte offset it points at.
pub fn locate_call_error(query: &str, message: &str) -> Option<(usize, String)> {
    let tokens = tokenize(query)?;
    if let Some(bracket) = misplaced_range(&tokens, message) {
        return Some((bracket, message.to_owned()));
    }
    let mut recogniser = Recogniser {
        tokens,
        pos: 0,
        depth: 0,
        calls: Vec::new(),
        binaries: Vec::new(),
    };
    let _ = recogniser.expr(0);
    if let Some(located) = locate_binary_error(query, &recogniser.binaries, message) {
        return Some(located);
    }
    let calls = recogniser.calls;
    if message.starts_with("trailing commas not allowed") {
        let comma = calls
            .iter()
            .filter(|c| !c.aggregation)
            .find_map(|c| c.trailing_comma)?;
        return Some((comma, message.to_owned()));
    }
    if let Some(located) = locate_type_error(query, &calls, message) {
        return Some(located);
    }
    // "expected 5 argument(s) in call to 'label_replace', got 2"
    if let Some(rest) = message.strip_prefix("expected ")
        && let Some((_, call)) = rest.split_once(" in call to '")
        && let Some((name, got)) = call.split_once("', got ")
    {
        let got: usize = got.trim().parse().ok()?;
        let start = calls
            .iter()
            .find(|c| !c.aggregation && c.name == name && c.args == got)?
            .start;
        return Some((
            start,
            message.replace(&format!("'{name}'"), &format!("\"{name}\"")),
        ));
    }
    None
}

/// Where a range that Prometheus refuses opens: after a parenthesis ("ranges only allowed for
/// vector selectors") or after an offset ("no offset modifiers allowed before range").
fn misplaced_range(tokens: &[Token<'_>], message: &str) -> Option<usize> {
    let after_parenthesis = message == "ranges only allowed for vector selectors";
    let after_offset = message == "no offset modifiers allowed before range";
    if !after_parenthesis && !after_offset {
        return None;
    }
    tokens.iter().enumerate().find_map(|(i, token)| {
        if !token.is("[") || i == 0 {
            return None;
        }
        // A subquery (`[5m:1m]`) may follow anything; a range may not.
        let closing = tokens[i..].iter().position(|t| t.is("]"))?;
        if tokens[i..i + closing].iter().any(|t| t.is(":")) {
            return None;
        }
        let previous = &tokens[i - 1];
        let found = if after_parenthesis {
            previous.is(")")
        } else {
            previous.kind == Kind::Duration
                && tokens[..i - 1]
                    .iter()
                    .rev()
                    .find(|t| !t.is("-") && !t.is("+"))
                    .is_some_and(|t| t.is("offset"))
        };
        found.then_some(token.start)
    })
}

/// Where Prometheus points for an error in a binary expression: the operand of the wrong type,
/// the operator of a scalar comparison without `bool`, or the whole expression.
fn locate_binary_error(
    query: &str,
    binaries: &[Binary<'_>],
    message: &str,
) -> Option<(usize, String)> {
    let type_of = |(start, end): (usize, usize)| query.get(start..end).and_then(argument_type);
    let is = |span, t: &str| type_of(span).is_some_and(|got| got == t);
    if message == "binary expression must contain only scalar and instant vector types" {
        let allowed = |span| matches!(type_of(span), Some("scalar" | "instant vector"));
        let start = binaries.iter().find_map(|b| {
            [b.lhs, b.rhs]
                .into_iter()
                .find(|&span| type_of(span).is_some() && !allowed(span))
                .map(|(start, _)| start)
        })?;
        return Some((start, message.to_owned()));
    }
    if message == "comparisons between scalars must use BOOL modifier" {
        let b = binaries.iter().find(|b| {
            matches!(b.op.text, "==" | "!=" | "<" | "<=" | ">" | ">=")
                && is(b.lhs, "scalar")
                && is(b.rhs, "scalar")
        })?;
        return Some((b.op.start, message.to_owned()));
    }
    if message == "vector matching only allowed between instant vectors" {
        let b = binaries.iter().find(|b| {
            b.matching && !(is(b.lhs, "instant vector") && is(b.rhs, "instant vector"))
        })?;
        return Some((b.lhs.0, message.to_owned()));
    }
    let rest = message.strip_prefix("set operator '")?;
    let (op, rest) = rest.split_once('\'')?;
    if rest != " not allowed in binary scalar expression" {
        return None;
    }
    let b = binaries
        .iter()
        .find(|b| b.op.text == op && (is(b.lhs, "scalar") || is(b.rhs, "scalar")))?;
    Some((
        b.lhs.0,
        format!("set operator \"{op}\" not allowed in binary scalar expression"),
    ))
}

/// A type error in an argument points at the argument, as in Prometheus: the first argument
/// of a call to the named function (or of an aggregation) whose own type is the one the
/// message says it got. An aggregation's scalar or string argument is its "parameter".
fn locate_type_error(query: &str, calls: &[Call<'_>], message: &str) -> Option<(usize, String)> {
    let typed = prometheus_type_names(message);
    let rest = typed.strip_prefix("expected type ")?;
    let (expected, rest) = rest.split_once(" in ")?;
    let (context, got) = rest.rsplit_once(", got ")?;
    let has_type = |&&(start, end): &&(usize, usize)| {
        query
            .get(start..end)
            .and_then(argument_type)
            .is_some_and(|t| t == got)
    };
    if let Some(function) = context
        .strip_prefix("call to function \"")
        .and_then(|f| f.strip_suffix('"'))
    {
        let (start, _) = calls
            .iter()
            .filter(|c| !c.aggregation && c.name == function)
            .find_map(|c| c.spans.iter().find(has_type))?;
        return Some((*start, typed));
    }
    if context == "aggregation expression" {
        let parameter = matches!(expected, "scalar" | "string");
        let (start, _) = calls.iter().filter(|c| c.aggregation).find_map(|c| {
            let span = if parameter {
                c.spans.first()
            } else {
                c.spans.last()
            };
            span.filter(has_type)
        })?;
        let message = if parameter {
            typed.replacen("aggregation expression", "aggregation parameter", 1)
        } else {
            typed
        };
        return Some((*start, message));
    }
    None
}

/// The Prometheus name of an argument's value type, when it parses on its own.
fn argument_type(text: &str) -> Option<&'static str> {
    use promql_parser::parser::value::ValueType;
    Some(
        match promql_parser::parser::parse(text).ok()?.value_type() {
            ValueType::Vector => "instant vector",
            ValueType::Matrix => "range vector",
            ValueType::Scalar => "scalar",
            ValueType::String => "string",
        },
    )
}

/// Prometheus's names for value types in type errors: "expected type matrix in call to
/// function 'rate', got vector" → "expected type range vector in call to function \"rate\",
/// got instant vector".
pub fn prometheus_type_names(message: &str) -> String {
    let Some(rest) = message.strip_prefix("expected type ") else {
        return message.to_owned();
    };
    let Some((expected, rest)) = rest.split_once(" in ") else {
        return message.to_owned();
    };
    let Some((context, got)) = rest.rsplit_once(", got ") else {
        return message.to_owned();
    };
    let name = |t: &str| match t {
        "matrix" => "range vector".to_owned(),
        "vector" => "instant vector".to_owned(),
        other => other.to_owned(),
    };
    let context = match context.strip_prefix("call to function '") {
        Some(f) => format!("call to function \"{}\"", f.trim_end_matches('\'')),
        None => context.to_owned(),
    };
    format!(
        "expected type {} in {context}, got {}",
        name(expected),
        name(got)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str) -> (usize, String) {
        let e = diagnose(query).unwrap_or_else(|| panic!("{query} accepted"));
        (e.range.0, e.message)
    }

    #[test]
    fn names_the_offending_token_like_prometheus() {
        assert_eq!(check("foo +"), (5, "unexpected end of input".to_owned()));
        assert_eq!(check("1 + * 2"), (4, "unexpected <op:*>".to_owned()));
        assert_eq!(
            check("foo bar"),
            (4, "unexpected identifier \"bar\"".to_owned())
        );
        assert_eq!(
            check("foo offset"),
            (
                10,
                "unexpected end of input in offset, expected number or duration".to_owned()
            )
        );
        assert_eq!(
            check("foo @ bar"),
            (
                6,
                "unexpected identifier \"bar\" in @, expected timestamp".to_owned()
            )
        );
        assert_eq!(
            check("sum(foo bar)"),
            (8, "unexpected identifier \"bar\" in aggregation".to_owned())
        );
        assert_eq!(
            check("sum by foo (x)"),
            (
                7,
                "unexpected identifier \"foo\" in grouping opts, expected \"(\"".to_owned()
            )
        );
        assert_eq!(
            check("foo{a=1}"),
            (
                6,
                "unexpected number \"1\" in label matching, expected string".to_owned()
            )
        );
    }

    #[test]
    fn locates_call_errors() {
        assert_eq!(
            locate_call_error(
                "abs(foo,)",
                "trailing commas not allowed in function call args"
            ),
            Some((
                7,
                "trailing commas not allowed in function call args".to_owned()
            ))
        );
        assert_eq!(
            locate_call_error(
                "1 + label_replace(foo, \"a\")",
                "expected 5 argument(s) in call to 'label_replace', got 2"
            ),
            Some((
                4,
                "expected 5 argument(s) in call to \"label_replace\", got 2".to_owned()
            ))
        );
        assert_eq!(
            prometheus_type_names("expected type matrix in call to function 'rate', got vector"),
            "expected type range vector in call to function \"rate\", got instant vector"
        );
    }

    #[test]
    fn accepts_valid_queries() {
        for q in [
            "sum by (job) (rate(x{a=\"b\",c!~\"d\"}[5m] offset 1h @ end()))",
            "a / on(b) group_left(c) d",
            "-x ^ 2 and bool y",
            "max_over_time(x[1h:5m])",
            "topk(3, x) without (a)",
            "{\"name\", a=\"b\"}",
        ] {
            assert_eq!(diagnose(q), None, "{q}");
        }
    }
}
