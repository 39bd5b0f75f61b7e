//! The header half of a compiled HTTP rule: `headers` and `headerMatches`
//! entries as requirements (unmet: the rule does not match) and mismatch
//! checks (unmet: the rule matches and asks for an action).

use std::borrow::Cow;

use super::request::{HeaderAction, HttpRequest};
use crate::api::{HttpRule, MismatchAction, SecretRef};
use crate::l7::error::{L7Protocol, L7RuleError};

/// Where a header rule reads its value from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    Method,
    Path,
    Authority,
    /// A regular header, by lowercase name.
    Header(String),
}

impl Target {
    /// The value of the target in `req`: `None` when absent; repeated
    /// headers joined with `,`.
    fn value<'r>(&self, req: &HttpRequest<'r>) -> Option<Cow<'r, str>> {
        match self {
            Target::Method => Some(Cow::Borrowed(req.method)),
            Target::Path => Some(Cow::Borrowed(req.path)),
            Target::Authority => req.authority.map(Cow::Borrowed),
            Target::Header(name) => {
                let mut values = req
                    .headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| *v);
                let first = values.next()?;
                match values.next() {
                    None => Some(Cow::Borrowed(first)),
                    Some(second) => {
                        let mut joined = format!("{first},{second}");
                        for v in values {
                            joined.push(',');
                            joined.push_str(v);
                        }
                        Some(Cow::Owned(joined))
                    }
                }
            }
        }
    }
}

/// A header requirement that denies when unmet (`headers`, and
/// `headerMatches` without `mismatch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HeaderRequirement {
    target: Target,
    /// `None`: presence only.
    value: Option<String>,
}

impl HeaderRequirement {
    pub(super) fn is_met(&self, req: &HttpRequest<'_>) -> bool {
        match (self.target.value(req), &self.value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(actual), Some(expected)) => same_bytes(actual.as_bytes(), expected.as_bytes()),
        }
    }
}

/// A `headerMatches` entry with a mismatch action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HeaderMismatchCheck {
    /// Lowercase name, as the action reports it.
    name: String,
    target: Target,
    /// Empty: presence only.
    value: String,
    action: MismatchAction,
    secret: bool,
}

impl HeaderMismatchCheck {
    /// The action this entry asks for on `req`, if any (Cilium's
    /// `HeaderMatch::allowed`).
    pub(super) fn action<'s>(
        &'s self,
        rule: usize,
        req: &HttpRequest<'_>,
    ) -> Option<HeaderAction<'s>> {
        let actual = self.target.value(req);
        let matches = match &actual {
            None => false,
            Some(_) if self.value.is_empty() => true,
            Some(actual) => same_bytes(actual.as_bytes(), self.value.as_bytes()),
        };
        if matches {
            return None;
        }
        // DELETE only acts on a header present with a wrong value.
        if self.action == MismatchAction::Delete && (self.value.is_empty() || actual.is_none()) {
            return None;
        }
        Some(HeaderAction {
            rule,
            action: self.action,
            name: &self.name,
            value: &self.value,
            secret: self.secret,
        })
    }
}

/// Compares two values in time that depends only on their lengths (values
/// may be secrets).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One compiled rule; its `method`, `path` and `host` live in the set's
/// field indexes.
#[derive(Debug, Clone)]
pub(super) struct CompiledHttpRule {
    pub(super) requirements: Vec<HeaderRequirement>,
    pub(super) mismatch_checks: Vec<HeaderMismatchCheck>,
    /// A `headerMatches` entry whose secret is unavailable and that has no
    /// fallback `value`: Cilium makes such a rule match nothing.
    pub(super) never_matches: bool,
}

/// Whether `name` is an HTTP field name (RFC 9110 `token`).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The target a rule's header name reads: pseudo-headers map to the
/// request line, `host` to the authority.
fn header_target(name: &str) -> Option<Target> {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        ":method" => Some(Target::Method),
        ":path" => Some(Target::Path),
        ":authority" | "host" => Some(Target::Authority),
        _ if is_token(&lower) => Some(Target::Header(lower)),
        _ => None,
    }
}

pub(super) fn compile_headers(
    index: usize,
    rule: &HttpRule,
    secret: &impl Fn(&SecretRef) -> Option<String>,
) -> Result<CompiledHttpRule, L7RuleError> {
    let invalid = |field: String, value: &str, reason: &str| L7RuleError::InvalidValue {
        protocol: L7Protocol::Http,
        rule: index,
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let mut requirements = Vec::new();
    for (i, entry) in rule.headers.iter().enumerate() {
        let (name, value) = match entry.split_once(' ') {
            Some((name, value)) => (name.trim_end_matches(':'), Some(value.to_string())),
            None => (entry.as_str(), None),
        };
        let target = header_target(name).ok_or_else(|| {
            invalid(
                format!("headers[{i}]"),
                entry,
                "is not `Name` or `Name: value` with a valid header name \
                 (letters, digits and !#$%&'*+-.^_`|~)",
            )
        })?;
        requirements.push(HeaderRequirement { target, value });
    }
    let mut mismatch_checks = Vec::new();
    let mut never_matches = false;
    for (i, hm) in rule.header_matches.iter().enumerate() {
        let target = match header_target(&hm.name) {
            Some(target) if !hm.name.starts_with(':') => target,
            _ => {
                let reason = if hm.name.is_empty() {
                    "is empty; a header name is required"
                } else {
                    "is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"
                };
                return Err(invalid(
                    format!("headerMatches[{i}].name"),
                    &hm.name,
                    reason,
                ));
            }
        };
        let from_secret = match &hm.secret {
            Some(secret_ref) if secret_ref.name.is_empty() => {
                return Err(invalid(
                    format!("headerMatches[{i}].secret.name"),
                    "",
                    "is empty; name the Secret holding the value",
                ));
            }
            Some(secret_ref) => secret(secret_ref).filter(|v| !v.is_empty()),
            None => None,
        };
        let inline = hm.value.clone().unwrap_or_default();
        if hm.secret.is_some() && from_secret.is_none() && inline.is_empty() {
            never_matches = true;
        }
        let is_secret = from_secret.is_some();
        let value = from_secret.unwrap_or(inline);
        match hm.mismatch {
            None => requirements.push(HeaderRequirement {
                target,
                value: (!value.is_empty()).then_some(value),
            }),
            Some(action) => mismatch_checks.push(HeaderMismatchCheck {
                name: hm.name.to_ascii_lowercase(),
                target,
                value,
                action,
                secret: is_secret,
            }),
        }
    }
    Ok(CompiledHttpRule {
        requirements,
        mismatch_checks,
        never_matches,
    })
}
