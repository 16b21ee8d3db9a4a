//! Label matchers as PromQL defines them: `=`, `!=`, `=~`, `!~`, regular expressions fully
//! anchored, a missing label matching as the empty value. Used for matcher pushdown inside
//! plugins; it must agree with the host's own matching or series would vanish or appear.

use regex::Regex;

use crate::{Label, MatchOp, Matcher, PluginError};

/// One compiled matcher.
#[derive(Debug, Clone)]
pub struct CompiledMatcher {
    name: String,
    op: MatchOp,
    value: String,
    regex: Option<Regex>,
}

impl CompiledMatcher {
    /// Compiles a matcher; a bad regular expression is an `invalid-argument` error.
    pub fn new(matcher: &Matcher) -> Result<Self, PluginError> {
        let regex = match matcher.op {
            MatchOp::Re | MatchOp::Nre => Some(
                Regex::new(&format!("^(?s:{})$", matcher.value)).map_err(|e| {
                    PluginError::InvalidArgument(format!(
                        "matcher {}: bad regular expression: {e}",
                        matcher.name
                    ))
                })?,
            ),
            MatchOp::Eq | MatchOp::Neq => None,
        };
        Ok(Self {
            name: matcher.name.clone(),
            op: matcher.op,
            value: matcher.value.clone(),
            regex,
        })
    }

    /// The label name this matcher looks at.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a label value (empty for a missing label) matches.
    pub fn matches_value(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Eq, _) => value == self.value,
            (MatchOp::Neq, _) => value != self.value,
            (MatchOp::Re, Some(re)) => re.is_match(value),
            (MatchOp::Nre, Some(re)) => !re.is_match(value),
            (MatchOp::Re | MatchOp::Nre, None) => false,
        }
    }

    /// For an `=` matcher, the one value it accepts (useful to skip whole files).
    pub fn equal_value(&self) -> Option<&str> {
        (self.op == MatchOp::Eq).then_some(self.value.as_str())
    }
}

/// A conjunction of matchers, as in one selector.
#[derive(Debug, Clone, Default)]
pub struct MatcherSet {
    matchers: Vec<CompiledMatcher>,
}

impl MatcherSet {
    /// Compiles every matcher of a request.
    pub fn new(matchers: &[Matcher]) -> Result<Self, PluginError> {
        Ok(Self {
            matchers: matchers
                .iter()
                .map(CompiledMatcher::new)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether every matcher matches the label set (sorted or not).
    pub fn matches(&self, labels: &[Label]) -> bool {
        self.matchers.iter().all(|m| {
            let value = labels
                .iter()
                .find(|l| l.name == m.name)
                .map_or("", |l| l.value.as_str());
            m.matches_value(value)
        })
    }

    /// The value an `=` matcher requires for `name`, if there is one.
    pub fn required_value(&self, name: &str) -> Option<&str> {
        self.matchers
            .iter()
            .filter(|m| m.name == name)
            .find_map(CompiledMatcher::equal_value)
    }

    /// The compiled matchers.
    pub fn iter(&self) -> std::slice::Iter<'_, CompiledMatcher> {
        self.matchers.iter()
    }
}
