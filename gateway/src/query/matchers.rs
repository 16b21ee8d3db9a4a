//! Label matchers as they arrive on the wire (Thanos `LabelMatcher`), compiled once per
//! request into the engine's [`Matcher`], plus the external-label-set test used to skip stores.
//!
//! Regular expressions are fully anchored, as in Prometheus. An invalid regular expression is
//! an `InvalidArgument` error naming it, never a panic.

use gauntlet_proto::thanos::LabelMatcher;
use gauntlet_proto::thanos::label_matcher::Type as MatchType;
use gauntlet_tsdb::labels::Labels;

use super::store::StoreError;
use crate::promql::{MatchKind, Matcher};

/// The compiled matchers of one request.
#[derive(Debug, Clone, Default)]
pub struct CompiledMatchers(pub Vec<Matcher>);

impl CompiledMatchers {
    /// Whether a series with these labels is selected (all matchers match).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|matcher| matcher.matches_labels(labels))
    }

    /// Whether a store with this external label set can hold selected series: every matcher
    /// on a label the set has must accept its value; matchers on other labels can't rule the
    /// store out.
    pub fn may_match_label_set(&self, set: &Labels) -> bool {
        self.0.iter().all(|matcher| {
            set.get(&matcher.name)
                .is_none_or(|value| matcher.matches(value))
        })
    }
}

/// Compiles wire matchers.
pub fn compile_matchers(matchers: &[LabelMatcher]) -> Result<CompiledMatchers, StoreError> {
    matchers
        .iter()
        .map(|m| {
            let kind = match MatchType::try_from(m.r#type) {
                Ok(MatchType::Eq) => MatchKind::Equal,
                Ok(MatchType::Neq) => MatchKind::NotEqual,
                Ok(MatchType::Re) => MatchKind::RegexMatch,
                Ok(MatchType::Nre) => MatchKind::RegexNoMatch,
                Err(_) => {
                    return Err(StoreError::InvalidArgument(format!(
                        "unknown matcher type {} for label {:?}",
                        m.r#type, m.name
                    )));
                }
            };
            Matcher::new(kind, &m.name, &m.value)
                .map_err(|error| StoreError::InvalidArgument(error.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(CompiledMatchers)
}

/// The wire form of an engine matcher.
pub fn matcher_to_proto(matcher: &Matcher) -> LabelMatcher {
    let kind = match matcher.kind {
        MatchKind::Equal => MatchType::Eq,
        MatchKind::NotEqual => MatchType::Neq,
        MatchKind::RegexMatch => MatchType::Re,
        MatchKind::RegexNoMatch => MatchType::Nre,
    };
    LabelMatcher {
        r#type: kind as i32,
        name: matcher.name.clone(),
        value: matcher.value.clone(),
    }
}
