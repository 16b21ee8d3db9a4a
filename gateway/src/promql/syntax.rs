//! Where and why a query fails to parse, in Prometheus's words.
//!
//! `promql-parser` reports grammar errors as "invalid promql query" and other errors without a
//! position. This module re-reads a rejected query with a lexer that fails where and as
//! Prometheus's lexer does, and a small recogniser of the PromQL grammar that names the first
//! token no valid query could continue with, or the first error Prometheus's parser reports
//! while building the tree (invalid number, duration or regular expression, unknown function,
//! misplaced range or modifier), in the order Prometheus meets them. Grammar errors read: `unexpected <token>`, qualified by the innermost construct that has its own
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
    /// Prometheus's lexer (or number parsing) reports it, not the grammar.
    pub lexical: bool,
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
    /// Where the lexer fails; the parser never reads past it.
    Error,
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
            Kind::Eof | Kind::Error => "end of input".to_owned(),
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

/// Splits a query into tokens the way Prometheus's lexer does. A lexical error ends the list
/// with a [`Kind::Error`] token where Prometheus points (then end of input); its message is
/// returned alongside. Inside brackets plain numbers are accepted as durations (Prometheus 3).
fn lex(query: &str) -> (Vec<Token<'_>>, Option<String>) {
    let mut lexer = Lexer {
        query,
        pos: 0,
        width: 0,
        tokens: Vec::new(),
        parens: 0,
        braces: false,
        brackets: false,
        colon: false,
    };
    let error = lexer.run().err().map(|(at, message)| {
        lexer.tokens.push(Token {
            kind: Kind::Error,
            text: "",
            start: at,
        });
        message
    });
    lexer.tokens.push(Token {
        kind: Kind::Eof,
        text: "",
        start: query.len(),
    });
    (lexer.tokens, error)
}

/// The tokens of a query that lexes cleanly.
fn tokenize(query: &str) -> Option<Vec<Token<'_>>> {
    match lex(query) {
        (tokens, None) => Some(tokens),
        (_, Some(_)) => None,
    }
}

/// A lexical error: where Prometheus points and its message.
type LexError = (usize, String);

struct Lexer<'a> {
    query: &'a str,
    pos: usize,
    /// Byte length of the last character read (0 at end of input).
    width: usize,
    tokens: Vec<Token<'a>>,
    parens: usize,
    braces: bool,
    brackets: bool,
    /// A colon (or what Prometheus takes for one) was seen in the open brackets.
    colon: bool,
}

/// Prometheus's white space.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn is_alpha(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_alphanumeric(c: char) -> bool {
    is_alpha(c) || c.is_ascii_digit()
}

impl<'a> Lexer<'a> {
    fn next(&mut self) -> Option<char> {
        let c = self.query[self.pos..].chars().next();
        self.width = c.map_or(0, char::len_utf8);
        self.pos += self.width;
        c
    }

    fn backup(&mut self) {
        self.pos -= self.width;
        self.width = 0;
    }

    fn peek(&self) -> Option<char> {
        self.query[self.pos..].chars().next()
    }

    /// Consumes the next character when `f` accepts it.
    fn accept(&mut self, f: impl Fn(char) -> bool) -> bool {
        match self.next() {
            Some(c) if f(c) => true,
            _ => {
                self.backup();
                false
            }
        }
    }

    fn accept_run(&mut self, f: impl Fn(char) -> bool) {
        while self.accept(&f) {}
    }

    fn emit(&mut self, kind: Kind, start: usize) {
        self.tokens.push(Token {
            kind,
            text: &self.query[start..self.pos],
            start,
        });
    }

    fn run(&mut self) -> Result<(), LexError> {
        loop {
            if self.braces {
                self.inside_braces()?;
                continue;
            }
            let start = self.pos;
            let Some(c) = self.next() else {
                if self.parens > 0 {
                    return Err((start, "unclosed left parenthesis".to_owned()));
                }
                if self.brackets {
                    return Err((start, "unclosed left bracket".to_owned()));
                }
                return Ok(());
            };
            match c {
                '#' => self.comment(),
                c if is_space(c) => {}
                ',' | '@' => self.emit(Kind::Punct, start),
                '*' | '/' | '%' | '+' | '-' | '^' => self.emit(Kind::Operator, start),
                '=' => match self.peek() {
                    Some('=') => {
                        self.next();
                        self.emit(Kind::Operator, start);
                    }
                    Some('~') => {
                        return Err((start, "unexpected character after '=': '~'".to_owned()));
                    }
                    _ => self.emit(Kind::Punct, start),
                },
                '!' => match self.next() {
                    Some('=') => self.emit(Kind::Operator, start),
                    c => {
                        let c = quote_rune(c.unwrap_or(char::REPLACEMENT_CHARACTER));
                        return Err((start, format!("unexpected character after '!': {c}")));
                    }
                },
                '<' | '>' => {
                    self.accept(|c| c == '=');
                    self.emit(Kind::Operator, start);
                }
                c if c.is_ascii_digit()
                    || (c == '.' && self.peek().is_some_and(|c| c.is_ascii_digit())) =>
                {
                    self.backup();
                    self.number_or_duration(start, false)?;
                }
                '"' | '\'' => self.string(start, c)?,
                '`' => self.raw_string(start)?,
                c if (is_alpha(c) || c == ':') && !self.brackets => {
                    self.accept_run(|c| is_alphanumeric(c) || c == ':');
                    self.word(start);
                }
                // In brackets Prometheus reads any letter as the subquery colon.
                c if is_alpha(c) || c == ':' => {
                    if self.colon {
                        return Err((start, format!("unexpected colon {}", quote_rune(c))));
                    }
                    self.tokens.push(Token {
                        kind: Kind::Punct,
                        text: ":",
                        start,
                    });
                    self.colon = true;
                }
                '(' => {
                    self.parens += 1;
                    self.emit(Kind::Punct, start);
                }
                ')' => {
                    // Prometheus points past the parenthesis here.
                    if self.parens == 0 {
                        return Err((self.pos, "unexpected right parenthesis ')'".to_owned()));
                    }
                    self.emit(Kind::Punct, start);
                    self.parens -= 1;
                }
                '{' => {
                    self.emit(Kind::Punct, start);
                    self.braces = true;
                }
                '[' => {
                    if self.brackets {
                        return Err((start, "unexpected left bracket '['".to_owned()));
                    }
                    self.colon = false;
                    self.emit(Kind::Punct, start);
                    self.accept_run(is_space);
                    self.brackets = true;
                    self.range()?;
                }
                ']' => {
                    if !self.brackets {
                        return Err((start, "unexpected right bracket ']'".to_owned()));
                    }
                    self.emit(Kind::Punct, start);
                    self.brackets = false;
                }
                c => return Err((start, format!("unexpected character: {}", quote_rune(c)))),
            }
        }
    }

    /// A line comment (the `#` has been read); the parser never sees it.
    fn comment(&mut self) {
        while self.peek().is_some_and(|c| c != '\n' && c != '\r') {
            self.next();
        }
    }

    /// Classifies the identifier-like word just read.
    fn word(&mut self, start: usize) {
        let text = &self.query[start..self.pos];
        let lower = text.to_ascii_lowercase();
        let kind = if lower == "inf" || lower == "nan" {
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
        self.tokens.push(Token { kind, text, start });
    }

    fn inside_braces(&mut self) -> Result<(), LexError> {
        let start = self.pos;
        let Some(c) = self.next() else {
            return Err((start, "unexpected end of input inside braces".to_owned()));
        };
        match c {
            '#' => self.comment(),
            c if is_space(c) => {}
            c if is_alpha(c) => {
                self.accept_run(is_alphanumeric);
                self.emit(Kind::Identifier, start);
            }
            ',' => self.emit(Kind::Punct, start),
            '"' | '\'' => self.string(start, c)?,
            '`' => self.raw_string(start)?,
            '=' => {
                self.accept(|c| c == '~');
                self.emit(Kind::Punct, start);
            }
            '!' => match self.next() {
                Some('~') => self.emit(Kind::Punct, start),
                Some('=') => self.emit(Kind::Operator, start),
                c => {
                    let c = quote_rune(c.unwrap_or(char::REPLACEMENT_CHARACTER));
                    return Err((
                        start,
                        format!("unexpected character after '!' inside braces: {c}"),
                    ));
                }
            },
            '{' => return Err((start, "unexpected left brace '{'".to_owned())),
            '}' => {
                self.emit(Kind::Punct, start);
                self.braces = false;
            }
            c => {
                return Err((
                    start,
                    format!("unexpected character inside braces: {}", quote_rune(c)),
                ));
            }
        }
        Ok(())
    }

    /// The range right after `[`: a duration (or, unlike Prometheus 2, a plain number).
    fn range(&mut self) -> Result<(), LexError> {
        let start = self.pos;
        self.number_or_duration(start, true)
    }

    /// A number or a duration starting at `start`; `in_range` right after `[`, where
    /// Prometheus words its errors for durations only.
    fn number_or_duration(&mut self, start: usize, in_range: bool) -> Result<(), LexError> {
        if self.scan_number() {
            if in_range && self.pos == start {
                return Err((start, "missing unit character in duration".to_owned()));
            }
            self.emit(Kind::Number, start);
        } else if self.remaining_duration() {
            self.backup();
            self.emit(Kind::Duration, start);
        } else {
            let text = go_quote(&self.query[start..self.pos]);
            let what = if in_range {
                "duration"
            } else {
                "number or duration"
            };
            return Err((start, format!("bad {what} syntax: {text}")));
        }
        Ok(())
    }

    /// Reads what may be a number (decimal, hexadecimal, with fraction and exponent); true when
    /// no letter or digit follows it. The text is not necessarily a valid number.
    fn scan_number(&mut self) -> bool {
        let hex = self.accept(|c| c == '0') && self.accept(|c| c == 'x' || c == 'X');
        let digit = |c: char| {
            if hex {
                c.is_ascii_hexdigit()
            } else {
                c.is_ascii_digit()
            }
        };
        self.accept_run(digit);
        if self.accept(|c| c == '.') {
            self.accept_run(digit);
        }
        if self.accept(|c| c == 'e' || c == 'E') {
            self.accept(|c| c == '+' || c == '-');
            self.accept_run(|c| c.is_ascii_digit());
        }
        !self.peek().is_some_and(is_alphanumeric)
    }

    /// The unit(s) after a duration's first number; true when followed by a non-alphanumeric
    /// character (which has been read too).
    fn remaining_duration(&mut self) -> bool {
        if !self.accept(|c| "smhdwy".contains(c)) {
            return false;
        }
        self.accept(|c| c == 's');
        while self.accept(|c| c.is_ascii_digit()) {
            self.accept_run(|c| c.is_ascii_digit());
            if !self.accept(|c| "smhdw".contains(c)) {
                return false;
            }
            self.accept(|c| c == 's');
        }
        !self.next().is_some_and(is_alphanumeric)
    }

    /// A quoted string (the quote has been read). Errors point at the opening quote.
    fn string(&mut self, start: usize, quote: char) -> Result<(), LexError> {
        loop {
            match self.next() {
                None | Some('\n') => {
                    return Err((start, "unterminated quoted string".to_owned()));
                }
                Some('\\') => self.escape(quote).map_err(|message| (start, message))?,
                Some(c) if c == quote => break,
                Some(_) => {}
            }
        }
        self.emit(Kind::String, start);
        Ok(())
    }

    /// An escape sequence (the backslash has been read), checked as Go checks them.
    fn escape(&mut self, quote: char) -> Result<(), String> {
        let mut c = self.next();
        let (mut digits, base, max) = match c {
            Some('a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '\\') => return Ok(()),
            Some(q) if q == quote => return Ok(()),
            Some('0'..='7') => (3, 8, 255),
            Some('x') => (2, 16, 255),
            Some('u') => (4, 16, 0x10_FFFF),
            Some('U') => (8, 16, 0x10_FFFF),
            None => return Err("escape sequence not terminated".to_owned()),
            Some(other) => return Err(format!("unknown escape sequence {}", sharp_u(other))),
        };
        if matches!(c, Some('x' | 'u' | 'U')) {
            c = self.next();
        }
        let mut value: u32 = 0;
        while digits > 0 {
            let Some(d) = c.and_then(|c| c.to_digit(base)) else {
                return Err(match c {
                    None => "escape sequence not terminated".to_owned(),
                    Some(c) => format!("illegal character {} in escape sequence", sharp_u(c)),
                });
            };
            value = value * base + d;
            digits -= 1;
            if digits > 0 {
                c = self.next();
            }
        }
        if value > max || (0xD800..0xE000).contains(&value) {
            return Err("escape sequence is an invalid Unicode code point".to_owned());
        }
        Ok(())
    }

    fn raw_string(&mut self, start: usize) -> Result<(), LexError> {
        loop {
            match self.next() {
                None => return Err((start, "unterminated raw string".to_owned())),
                Some('`') => break,
                Some(_) => {}
            }
        }
        self.emit(Kind::String, start);
        Ok(())
    }
}

/// Go's `%q` for a character: `'x'`, with escapes for quotes, backslashes and unprintables.
fn quote_rune(c: char) -> String {
    match c {
        '\'' => "'\\''".to_owned(),
        '\\' => "'\\\\'".to_owned(),
        c if is_printable(c) => format!("'{c}'"),
        '\u{7}' => "'\\a'".to_owned(),
        '\u{8}' => "'\\b'".to_owned(),
        '\u{c}' => "'\\f'".to_owned(),
        '\n' => "'\\n'".to_owned(),
        '\r' => "'\\r'".to_owned(),
        '\t' => "'\\t'".to_owned(),
        '\u{b}' => "'\\v'".to_owned(),
        c if (c as u32) < 0x80 => format!("'\\x{:02x}'", c as u32),
        c if (c as u32) < 0x10000 => format!("'\\u{:04x}'", c as u32),
        c => format!("'\\U{:08x}'", c as u32),
    }
}

/// Go's `%#U` for a character: `U+0071 'q'` (without the quoted character if unprintable).
fn sharp_u(c: char) -> String {
    if is_printable(c) {
        format!("U+{:04X} '{c}'", c as u32)
    } else {
        format!("U+{:04X}", c as u32)
    }
}

/// Roughly Go's `strconv.IsPrint`: not a control, format or non-ASCII space character.
fn is_printable(c: char) -> bool {
    c == ' ' || !(c.is_control() || c.is_whitespace() || ('\u{200b}'..='\u{200f}').contains(&c))
}

/// A construct with its own error rule in Prometheus's grammar: (context, expected).
type Context = (&'static str, &'static str);

struct Failure {
    token: usize,
    context: Option<Context>,
    /// A message of its own instead of `unexpected <token>` (an invalid number).
    message: Option<String>,
}

type Parsed = Result<(), Failure>;

struct Recogniser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
    depth: usize,
    calls: Vec<Call<'a>>,
    /// Binary expressions in the order Prometheus checks them (operands first).
    binaries: Vec<Binary<'a>>,
    /// Byte ranges of vector selectors with braces, in query order.
    selectors: Vec<(usize, usize)>,
    /// Regular-expression matchers: where the label starts, and the quoted pattern.
    regexes: Vec<(usize, &'a str)>,
}

/// A binary expression as written: its operands' byte ranges, its operator and modifiers.
#[derive(Debug, Clone, Default)]
struct Binary<'a> {
    lhs: (usize, usize),
    op: &'a str,
    /// Where the operator is.
    op_start: usize,
    modifiers: Modifiers<'a>,
    rhs: (usize, usize),
}

/// A binary operator's modifiers as written.
#[derive(Debug, Clone, Default)]
struct Modifiers<'a> {
    bool: bool,
    /// `on` (rather than `ignoring`) given.
    on: bool,
    /// The labels of `on(...)`/`ignoring(...)`.
    matching: Vec<&'a str>,
    /// `group_left`/`group_right` given, and its labels.
    group: Option<Vec<&'a str>>,
}

/// What a range or modifier applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operand {
    /// An instant vector selector.
    Selector,
    /// A selector with a range.
    Matrix,
    Subquery,
    Other,
}

/// Whether the parser crate knows a function (Prometheus 3's set).
fn known_function(name: &str) -> bool {
    promql_parser::parser::parse(&format!("{name}()"))
        .err()
        .is_none_or(|e| !e.starts_with("unknown function"))
}

/// Whether Prometheus reads a duration literal: numbers with units in the order
/// `y w d h m s ms`, each at most once.
fn valid_duration(text: &str) -> bool {
    const UNITS: &[&str] = &["y", "w", "d", "h", "m", "s", "ms"];
    let mut rest = text;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = (next_unit..UNITS.len())
            .rev()
            .find(|&u| rest.starts_with(UNITS[u]))
        else {
            return false;
        };
        rest = &rest[UNITS[unit].len()..];
        next_unit = unit + 1;
    }
    !text.is_empty()
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
    fn new(tokens: Vec<Token<'a>>) -> Self {
        Self {
            tokens,
            pos: 0,
            depth: 0,
            calls: Vec::new(),
            binaries: Vec::new(),
            selectors: Vec::new(),
            regexes: Vec::new(),
        }
    }

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
            message: None,
        }
    }

    /// Consumes a number token; one Go cannot parse fails as Prometheus's parser does.
    fn number(&mut self) -> Parsed {
        let token = self.peek();
        let Err(why) = go_number(token.text) else {
            self.bump();
            return Ok(());
        };
        Err(Failure {
            message: Some(format!(
                "error parsing number: strconv.ParseFloat: parsing {}: {why}",
                go_quote(token.text)
            )),
            ..self.fail(None)
        })
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
            let modifiers = self.bin_modifiers()?;
            let rhs_start = self.peek().start;
            self.expr(if right { precedence } else { precedence + 1 })?;
            self.binaries.push(Binary {
                lhs: (start, op.start),
                op: op.text,
                op_start: op.start,
                modifiers,
                rhs: (rhs_start, self.peek().start),
            });
        }
        self.depth -= 1;
        Ok(())
    }

    fn bin_modifiers(&mut self) -> Result<Modifiers<'a>, Failure> {
        let mut modifiers = Modifiers::default();
        if self.peek().is("bool") {
            self.bump();
            modifiers.bool = true;
        }
        if self.peek().is("on") || self.peek().is("ignoring") {
            modifiers.on = self.bump().is("on");
            modifiers.matching = self.grouping_labels()?;
            if self.peek().is("group_left") || self.peek().is("group_right") {
                self.bump();
                modifiers.group = Some(if self.peek().is("(") {
                    self.grouping_labels()?
                } else {
                    Vec::new()
                });
            }
        }
        Ok(modifiers)
    }

    fn unary(&mut self) -> Parsed {
        if self.peek().is("+") || self.peek().is("-") {
            self.bump();
            // Unary operators bind looser than `^` and tighter than `*`.
            return self.expr(6);
        }
        let first = self.pos;
        let operand = self.primary()?;
        self.postfix(first, operand)
    }

    /// A failure at token `index` with a message of its own (an error Prometheus's parser
    /// reports while building the tree).
    fn fail_at(&self, index: usize, message: String) -> Failure {
        Failure {
            token: index,
            context: None,
            message: Some(message),
        }
    }

    fn primary(&mut self) -> Result<Operand, Failure> {
        let token = self.peek();
        match token.kind {
            Kind::Number => self.number().map(|()| Operand::Other),
            Kind::Duration | Kind::String => {
                self.bump();
                Ok(Operand::Other)
            }
            Kind::Aggregator => self.aggregation().map(|()| Operand::Other),
            Kind::Identifier | Kind::MetricIdentifier => {
                let name = self.pos;
                self.bump();
                if token.kind == Kind::Identifier && self.peek().is("(") {
                    let index = self.open_call(token, false);
                    let args = self.call_args()?;
                    self.close_call(index, args);
                    if !known_function(token.text) {
                        let message =
                            format!("unknown function with name {}", go_quote(token.text));
                        return Err(self.fail_at(name, message));
                    }
                    Ok(Operand::Other)
                } else if self.peek().is("{") {
                    self.matchers(token.start).map(|()| Operand::Selector)
                } else {
                    Ok(Operand::Selector)
                }
            }
            Kind::Punct if token.text == "(" => {
                self.bump();
                self.expr(0)?;
                self.expect(")", None).map(|()| Operand::Other)
            }
            Kind::Punct if token.text == "{" => {
                self.matchers(token.start).map(|()| Operand::Selector)
            }
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

    /// `( label, ... )`: the labels (quoted ones with their quotes).
    fn grouping_labels(&mut self) -> Result<Vec<&'a str>, Failure> {
        self.expect("(", Some(("grouping opts", "\"(\"")))?;
        let mut labels = Vec::new();
        loop {
            let token = self.peek();
            if token.is(")") {
                self.bump();
                return Ok(labels);
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
            labels.push(self.bump().text);
            if self.peek().is(",") {
                self.bump();
            } else if !self.peek().is(")") {
                return Err(self.fail(Some(("grouping opts", "\",\" or \")\""))));
            }
        }
    }

    /// `{ matcher, ... }` of the selector starting at `start`.
    fn matchers(&mut self, start: usize) -> Parsed {
        const CONTEXT: &str = "label matching";
        self.expect("{", None)?;
        loop {
            let token = self.peek();
            if token.is("}") {
                self.bump();
                self.selectors.push((start, token.start + 1));
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
                let value = self.bump();
                if op.is("=~") || op.is("!~") {
                    // Prometheus compiles the expression as soon as it has read the matcher.
                    if let Some(e) = unquote(value.text).and_then(|p| go_regex_error(&p)) {
                        let label = self.pos - 3;
                        return Err(self.fail_at(label, format!("error parsing regexp: {e}")));
                    }
                    self.regexes.push((token.start, value.text));
                }
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

    /// A duration or number (`Ok(false)` when the next token is neither).
    fn duration_literal(&mut self) -> Result<bool, Failure> {
        match self.peek().kind {
            Kind::Duration if !valid_duration(self.peek().text) => {
                let text = go_quote(self.peek().text);
                Err(self.fail_at(self.pos, format!("not a valid duration string: {text}")))
            }
            Kind::Duration => {
                self.bump();
                Ok(true)
            }
            Kind::Number => self.number().map(|()| true),
            _ => Ok(false),
        }
    }

    /// Ranges, subqueries, `offset` and `@` after the expression starting at token `first`,
    /// with the checks Prometheus makes as it builds them: a range only on a vector selector
    /// without modifiers (pointing at `[`), each modifier once and only on a selector or
    /// subquery (pointing at the expression).
    fn postfix(&mut self, first: usize, mut operand: Operand) -> Parsed {
        const PRECEDED: &str =
            "must be preceded by an instant vector selector or range vector selector or a subquery";
        let (mut offset, mut at) = (false, false);
        loop {
            let token = self.peek();
            let index = self.pos;
            if token.is("[") {
                self.bump();
                if !self.duration_literal()? {
                    return Err(self.fail(Some(("subquery selector", "number or duration"))));
                }
                if self.peek().is(":") {
                    self.bump();
                    if !self.peek().is("]") && !self.duration_literal()? {
                        return Err(
                            self.fail(Some(("subquery selector", "number or duration or \"]\"")))
                        );
                    }
                    self.expect("]", Some(("subquery selector", "\"]\"")))?;
                    (operand, offset, at) = (Operand::Subquery, false, false);
                } else {
                    self.expect("]", Some(("subquery or range", "\":\" or \"]\"")))?;
                    let error = if operand != Operand::Selector {
                        "ranges only allowed for vector selectors"
                    } else if offset {
                        "no offset modifiers allowed before range"
                    } else if at {
                        "no @ modifiers allowed before range"
                    } else {
                        operand = Operand::Matrix;
                        continue;
                    };
                    return Err(self.fail_at(index, error.to_owned()));
                }
            } else if token.is("offset") {
                self.bump();
                if self.peek().is("-") || self.peek().is("+") {
                    self.bump();
                }
                if !self.duration_literal()? {
                    return Err(self.fail(Some(("offset", "number or duration"))));
                }
                if operand == Operand::Other {
                    return Err(self.fail_at(first, format!("offset modifier {PRECEDED}")));
                }
                if offset {
                    let message = "offset may not be set multiple times".to_owned();
                    return Err(self.fail_at(first, message));
                }
                offset = true;
            } else if token.is("@") {
                self.bump();
                if self.peek().is("-") || self.peek().is("+") {
                    self.bump();
                }
                if self.peek().is("start") || self.peek().is("end") {
                    self.bump();
                    self.expect("(", Some(("@", "timestamp")))?;
                    self.expect(")", Some(("@", "timestamp")))?;
                } else if !self.duration_literal()? {
                    return Err(self.fail(Some(("@", "timestamp"))));
                }
                if operand == Operand::Other {
                    return Err(self.fail_at(first, format!("@ modifier {PRECEDED}")));
                }
                if at {
                    let message = "@ <timestamp> may not be set multiple times".to_owned();
                    return Err(self.fail_at(first, message));
                }
                at = true;
            } else {
                return Ok(());
            }
        }
    }
}

/// The first lexical or grammar error in `query`, in the order Prometheus's parser meets them
/// (a grammar error before a lexical error wins), or `None` when the recogniser accepts it (the
/// error is then semantic).
pub fn diagnose(query: &str) -> Option<SyntaxError> {
    let (tokens, lex_error) = lex(query);
    if tokens[0].kind == Kind::Eof {
        // Only white space and comments; Prometheus points at the start.
        return Some(SyntaxError {
            range: (0, 0),
            message: "no expression found in input".to_owned(),
            lexical: true,
        });
    }
    let mut recogniser = Recogniser::new(tokens);
    let failure = match recogniser.expr(0) {
        Ok(()) if recogniser.peek().kind == Kind::Eof => return None,
        Ok(()) => recogniser.fail(None),
        Err(failure) => failure,
    };
    let token = recogniser.tokens[failure.token.min(recogniser.tokens.len() - 1)];
    let range = (token.start, token.start + token.text.len());
    if token.kind == Kind::Error {
        return Some(SyntaxError {
            // Prometheus's range for a lexical error runs to the end of the input.
            range: (token.start, query.len()),
            message: lex_error.unwrap_or_default(),
            lexical: true,
        });
    }
    if let Some(message) = failure.message {
        return Some(SyntaxError {
            range,
            message,
            lexical: true,
        });
    }
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
        range,
        message,
        lexical: false,
    })
}

/// Whether Go's `strconv` reads a number token (decimal, or hexadecimal 64-bit integer), and if not,
/// why (`invalid syntax`, `value out of range`).
fn go_number(text: &str) -> Result<(), &'static str> {
    let lower = text.to_ascii_lowercase();
    if lower == "inf" || lower == "nan" {
        return Ok(());
    }
    match lower.strip_prefix("0x") {
        // A hexadecimal float needs an exponent: only 64-bit integers are read.
        Some(hex) if i64::from_str_radix(hex, 16).is_ok() && !hex.starts_with('+') => Ok(()),
        Some(_) => Err("invalid syntax"),
        None => match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(()),
            Ok(_) => Err("value out of range"),
            Err(_) => Err("invalid syntax"),
        },
    }
}

/// Where a function-call error points, in Prometheus's words: `message` is the parser's own
/// message; the result is Prometheus's message and the byte offset it points at.
pub fn locate_call_error(query: &str, message: &str) -> Option<(usize, String)> {
    let tokens = tokenize(query)?;
    if let Some(bracket) = misplaced_range(&tokens, message) {
        return Some((bracket, message.to_owned()));
    }
    // A duration with a unit given twice or out of order (`5hs`) points at the duration.
    if let Some(text) = message.strip_prefix("not a valid duration string: ") {
        let token = tokens
            .iter()
            .find(|t| t.kind == Kind::Duration && t.text == text)?;
        let message = format!("not a valid duration string: {}", go_quote(text));
        return Some((token.start, message));
    }
    let mut recogniser = Recogniser::new(tokens);
    let _ = recogniser.expr(0);
    if let Some(located) = locate_binary_error(query, &recogniser.binaries, message) {
        return Some(located);
    }
    if let Some(located) = locate_selector_error(query, &recogniser, message) {
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
    if message.starts_with("no arguments for aggregate expression") {
        let call = calls.iter().find(|c| c.aggregation && c.args == 0)?;
        let message = "no arguments for aggregate expression provided";
        return Some((call.start, message.to_owned()));
    }
    // "wrong number of arguments for aggregate expression provided, expected 1, got 2"
    if message.starts_with("wrong number of arguments for aggregate expression")
        && let Some((_, got)) = message.rsplit_once(", got ")
    {
        let got: usize = got.trim().parse().ok()?;
        let call = calls.iter().find(|c| c.aggregation && c.args == got)?;
        return Some((call.start, message.to_owned()));
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

/// Messages of the checks Prometheus makes on binary expressions.
const BINARY_ERRORS: &[&str] = &[
    "bool modifier can only be used on comparison operators",
    "comparisons between scalars must use BOOL modifier",
    "must not occur in ON and GROUP clause at once",
    "binary expression must contain only scalar and instant vector types",
    "vector matching only allowed between",
    "no grouping allowed for",
    "set operations must always be many-to-many",
    "not allowed in binary scalar expression",
];

/// For an error from the binary-expression checks, the first one Prometheus reports: it checks
/// operands before the expression and, per expression, `bool` on a non-comparison (at the
/// operator), a scalar comparison without `bool` (operator), a label in both `on` and the
/// group modifier (operator), operand types (the operand), vector matching with a scalar (the
/// expression), grouping on a set operator (expression), a set operator on a scalar.
fn locate_binary_error(
    query: &str,
    binaries: &[Binary<'_>],
    message: &str,
) -> Option<(usize, String)> {
    if !BINARY_ERRORS.iter().any(|m| message.contains(m)) {
        return None;
    }
    binaries.iter().find_map(|b| binary_error(query, b))
}

/// The first error Prometheus reports for one binary expression (operands already checked).
fn binary_error(query: &str, b: &Binary<'_>) -> Option<(usize, String)> {
    let type_of = |(start, end): (usize, usize)| query.get(start..end).and_then(argument_type);
    let (lhs, rhs) = (type_of(b.lhs), type_of(b.rhs));
    let comparison = matches!(b.op, "==" | "!=" | "<" | "<=" | ">" | ">=");
    let set = matches!(b.op, "and" | "or" | "unless");
    let m = &b.modifiers;
    if m.bool && !comparison {
        let message = "bool modifier can only be used on comparison operators";
        return Some((b.op_start, message.to_owned()));
    }
    if comparison && !m.bool && lhs == Some("scalar") && rhs == Some("scalar") {
        let message = "comparisons between scalars must use BOOL modifier";
        return Some((b.op_start, message.to_owned()));
    }
    let unquote = |l: &str| {
        l.trim_matches(|c| c == '"' || c == '\'' || c == '`')
            .to_owned()
    };
    if m.on
        && let Some(label) = m
            .matching
            .iter()
            .map(|l| unquote(l))
            .find(|l| m.group.iter().flatten().any(|g| unquote(g) == *l))
    {
        let message = format!(
            "label {} must not occur in ON and GROUP clause at once",
            go_quote(&label)
        );
        return Some((b.op_start, message));
    }
    for (span, t) in [(b.lhs, lhs), (b.rhs, rhs)] {
        if t.is_some_and(|t| t != "scalar" && t != "instant vector") {
            let message = "binary expression must contain only scalar and instant vector types";
            return Some((span.0, message.to_owned()));
        }
    }
    let (lhs, rhs) = (lhs?, rhs?);
    let vectors = lhs == "instant vector" && rhs == "instant vector";
    if !vectors && !m.matching.is_empty() {
        let message = "vector matching only allowed between instant vectors";
        return Some((b.lhs.0, message.to_owned()));
    }
    if vectors && set && m.group.is_some() {
        let message = format!("no grouping allowed for \"{}\" operation", b.op);
        return Some((b.lhs.0, message));
    }
    if set && (lhs == "scalar" || rhs == "scalar") {
        let message = format!(
            "set operator \"{}\" not allowed in binary scalar expression",
            b.op
        );
        return Some((b.lhs.0, message));
    }
    None
}

/// Errors in a vector selector: an invalid regular expression points at its matcher, a metric
/// name given twice or no non-empty matcher at the selector.
fn locate_selector_error(
    query: &str,
    recogniser: &Recogniser<'_>,
    message: &str,
) -> Option<(usize, String)> {
    // Prometheus compiles regular expressions while parsing, before it checks selectors.
    let regex_error = || {
        recogniser.regexes.iter().find_map(|&(start, quoted)| {
            let pattern = unquote(quoted)?;
            go_regex_error(&pattern).map(|e| (start, format!("error parsing regexp: {e}")))
        })
    };
    if message.starts_with("illegal regex for ") {
        return regex_error();
    }
    let message = if let Some(names) = message
        .strip_prefix("metric name must not be set twice: '")
        .and_then(|m| m.strip_suffix('\''))
        .and_then(|m| m.split_once("' or '"))
    {
        format!(
            "metric name must not be set twice: {} or {}",
            go_quote(names.0),
            go_quote(names.1)
        )
    } else if message == "vector selector must contain at least one non-empty matcher" {
        message.to_owned()
    } else {
        return None;
    };
    if let Some(located) = regex_error() {
        return Some(located);
    }
    // The first selector that fails the same way on its own.
    let own_error = |&&(start, end): &&(usize, usize)| {
        let text = query.get(start..end)?;
        let e = promql_parser::parser::parse(text).err()?;
        Some(e.split(':').next() == message.split(':').next())
    };
    let (start, _) = recogniser
        .selectors
        .iter()
        .find(|s| own_error(s) == Some(true))?;
    Some((*start, message))
}

/// A string literal's value, read by the parser crate.
fn unquote(quoted: &str) -> Option<String> {
    use promql_parser::parser::Expr;
    match promql_parser::parser::parse(quoted).ok()? {
        Expr::StringLiteral(s) => Some(s.val),
        _ => None,
    }
}

/// Go's `regexp/syntax` error for a pattern Prometheus compiles as `^(?:pattern)$`, worded as
/// Go words it (`missing closing ): `+"`^(?:()$`"+`); `None` when it compiles. The regex crate
/// reports the same mistakes with its own words and spans: its common error kinds are mapped
/// to Go's codes and the fragment Go quotes is cut from the span. Where no Go code corresponds,
/// the crate's own short message is kept after the code-less prefix.
fn go_regex_error(pattern: &str) -> Option<String> {
    let whole = format!("^(?:{pattern})$");
    let regex::Error::Syntax(text) = regex::Regex::new(&whole).err()? else {
        return Some("expression too large".to_owned());
    };
    let kind = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(&text)
        .to_owned();
    // The span: the caret line under the (single-line) pattern, in characters.
    let mut lines = text.lines();
    let span = (!whole.contains('\n'))
        .then(|| lines.find(|l| l.trim() == whole))
        .flatten()
        .and_then(|_| lines.next())
        .map(|carets| {
            let from = carets.find('^').unwrap_or(0).saturating_sub(4);
            (from, carets.trim().chars().count())
        });
    // Byte range of the span in `whole`.
    let span = span.and_then(|(from, len)| {
        let start = whole.char_indices().nth(from)?.0;
        let end = whole[start..]
            .char_indices()
            .nth(len)
            .map_or(whole.len(), |(i, _)| start + i);
        Some((start, end))
    });
    let cut = |from_start: bool| -> Option<String> {
        let (start, end) = span?;
        Some(whole[start..if from_start { whole.len() } else { end }].to_owned())
    };
    // Go quotes a counted repetition whole (`{2}`).
    let repetition = || {
        let (start, end) = span?;
        let end = match whole[start..].strip_prefix('{') {
            Some(rest) => rest.find('}').map_or(end, |i| start + i + 2),
            None => end,
        };
        Some(whole[start..end].to_owned())
    };
    // Go quotes an unsupported group from its `(?` to the first character it cannot read.
    let perl = || {
        let (start, _) = span?;
        let open = if whole[start..].starts_with("(?") {
            start
        } else {
            whole[..start].rfind("(?")?
        };
        let at = start.max(open + 2);
        let len = whole[at..].chars().next().map_or(0, char::len_utf8);
        Some(whole[open..at + len].to_owned())
    };
    let (code, fragment) = match kind.as_str() {
        "unclosed group" => ("missing closing )", Some(whole.clone())),
        "unopened group" => ("unexpected )", Some(whole.clone())),
        "unclosed character class" => ("missing closing ]", cut(true)),
        "repetition operator missing expression" => {
            ("missing argument to repetition operator", repetition())
        }
        "invalid character class range, the start must be <= the end"
        | "Unicode property not found" => ("invalid character class range", cut(false)),
        "unrecognized escape sequence" | "backreferences are not supported" => {
            ("invalid escape sequence", cut(false))
        }
        "incomplete escape sequence, reached end of pattern prematurely" => (
            "trailing backslash at end of expression",
            Some(String::new()),
        ),
        "invalid repetition count range, the start must be <= the end" => {
            ("invalid repeat count", repetition())
        }
        "look-around, including look-ahead and look-behind, is not supported"
        | "unrecognized flag" => ("invalid or unsupported Perl syntax", perl()),
        _ => return Some(kind),
    };
    Some(match fragment {
        Some(f) => format!("{code}: `{f}`"),
        None => code.to_owned(),
    })
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
            (6, "unexpected character inside braces: '1'".to_owned())
        );
        assert_eq!(
            check("foo{a=\"\\q\"}"),
            (6, "unknown escape sequence U+0071 'q'".to_owned())
        );
        assert_eq!(
            check("foo)"),
            (4, "unexpected right parenthesis ')'".to_owned())
        );
        assert_eq!(
            check(" # comment"),
            (0, "no expression found in input".to_owned())
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
