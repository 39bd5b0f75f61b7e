//! The one error type of every L7 rule compiler: which protocol, which
//! rule of its list, which field, and what is accepted instead.

use std::fmt;

/// The protocol whose rule an [`L7RuleError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L7Protocol {
    Http,
    Dns,
    Kafka,
}

impl fmt::Display for L7Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            L7Protocol::Http => "http",
            L7Protocol::Dns => "dns",
            L7Protocol::Kafka => "kafka",
        })
    }
}

/// An L7 rule that cannot be compiled. Every variant names the protocol, the
/// index of the rule in its list (`rules.http[rule]`, `toFQDNs[rule]`, ...)
/// and the field at fault, so the message points at the line to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum L7RuleError {
    /// A `method`, `path` or `host` that is not a valid regular expression.
    #[error(
        "{protocol} rule {rule}, field `{field}`: {pattern:?} is not a valid regular expression \
         (RE2 syntax, matched against the whole value): {reason}"
    )]
    InvalidRegex {
        protocol: L7Protocol,
        rule: usize,
        field: String,
        pattern: String,
        reason: String,
    },
    /// A field whose value is malformed or out of range; `reason` says what
    /// is accepted.
    #[error("{protocol} rule {rule}, field `{field}`: {value:?} {reason}")]
    InvalidValue {
        protocol: L7Protocol,
        rule: usize,
        field: String,
        value: String,
        reason: String,
    },
    /// Two fields that exclude each other are both set.
    #[error("{protocol} rule {rule}: `{first}` and `{second}` cannot both be set; {hint}")]
    ConflictingFields {
        protocol: L7Protocol,
        rule: usize,
        first: &'static str,
        second: &'static str,
        hint: &'static str,
    },
    /// A rule that must set one of several fields sets none.
    #[error("{protocol} rule {rule}: {expected} must be set")]
    MissingField {
        protocol: L7Protocol,
        rule: usize,
        expected: &'static str,
    },
}

impl L7RuleError {
    /// Index of the offending rule in its list.
    pub fn rule(&self) -> usize {
        match self {
            L7RuleError::InvalidRegex { rule, .. }
            | L7RuleError::InvalidValue { rule, .. }
            | L7RuleError::ConflictingFields { rule, .. }
            | L7RuleError::MissingField { rule, .. } => *rule,
        }
    }

    /// The protocol of the offending rule.
    pub fn protocol(&self) -> L7Protocol {
        match self {
            L7RuleError::InvalidRegex { protocol, .. }
            | L7RuleError::InvalidValue { protocol, .. }
            | L7RuleError::ConflictingFields { protocol, .. }
            | L7RuleError::MissingField { protocol, .. } => *protocol,
        }
    }

    /// The same error, about rule `index` (for single-rule constructors
    /// called from a list compiler).
    pub(crate) fn at_rule(mut self, index: usize) -> Self {
        match &mut self {
            L7RuleError::InvalidRegex { rule, .. }
            | L7RuleError::InvalidValue { rule, .. }
            | L7RuleError::ConflictingFields { rule, .. }
            | L7RuleError::MissingField { rule, .. } => *rule = index,
        }
        self
    }
}
