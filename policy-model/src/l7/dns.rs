//! DNS name matching for `rules.dns` and `toFQDNs` selectors, with the
//! semantics of Cilium's `pkg/fqdn/matchpattern` and `pkg/policy/api/fqdn.go`.
//!
//! - Names compare case-insensitively (ASCII) and fully qualified: a trailing
//!   dot is optional on both the selector and the queried name.
//! - `matchName` is an exact name.
//! - `matchPattern`: `*` matches zero or more DNS characters
//!   (`[-a-zA-Z0-9_]`) inside one label and never crosses a dot; a leading
//!   `**.` (two or more stars, then a dot) matches one or more whole labels;
//!   a pattern made only of stars (optionally with a trailing dot) matches
//!   every name made of DNS characters, and the root `.`.
//! - A selector sets exactly one of `matchName` and `matchPattern`.

use std::borrow::Cow;
use std::collections::HashMap;

use regex::{Regex, RegexSet};

use super::error::{L7Protocol, L7RuleError};
use crate::api::FqdnSelector;

#[cfg(test)]
mod tests;

/// Longest `matchName` / `matchPattern` accepted (Cilium's `MaxFQDNLength`).
pub const MAX_FQDN_LENGTH: usize = 255;

/// One DNS label character as Cilium's patterns see it, after lowercasing.
const DNS_CHAR_CLASS: &str = "[-a-z0-9_]";

/// `name` lowercased (ASCII) and fully qualified (with a trailing dot).
/// The empty name is the root, `.`.
pub fn normalize_name(name: &str) -> String {
    normalized(name).into_owned()
}

/// [`normalize_name`] without allocating when `name` is already normal.
fn normalized(name: &str) -> Cow<'_, str> {
    let has_dot = name.ends_with('.');
    if has_dot && !name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 1);
    out.push_str(name);
    out.make_ascii_lowercase();
    if !has_dot {
        out.push('.');
    }
    Cow::Owned(out)
}

/// One compiled FQDN selector.
#[derive(Debug, Clone)]
pub struct FqdnPattern {
    /// The selector as written, for explanations.
    source: String,
    kind: PatternKind,
}

#[derive(Debug, Clone)]
enum PatternKind {
    /// A normalized name (from `matchName`, or a pattern without `*`).
    Exact(String),
    /// Every name made of DNS characters, and the root (`*`).
    AnyName,
    /// An anchored regex over normalized names.
    Wildcard(Regex),
}

impl FqdnPattern {
    /// Compiles one selector. Errors name rule 0; [`DnsRuleSet::compile`]
    /// reports the selector's real index.
    pub fn from_selector(selector: &FqdnSelector) -> Result<FqdnPattern, L7RuleError> {
        let name = selector.match_name.as_deref().filter(|s| !s.is_empty());
        let pattern = selector.match_pattern.as_deref().filter(|s| !s.is_empty());
        match (name, pattern) {
            (Some(_), Some(_)) => Err(L7RuleError::ConflictingFields {
                protocol: L7Protocol::Dns,
                rule: 0,
                first: "matchName",
                second: "matchPattern",
                hint: "use two selectors to allow both",
            }),
            (None, None) => Err(L7RuleError::MissingField {
                protocol: L7Protocol::Dns,
                rule: 0,
                expected: "one of `matchName` and `matchPattern`",
            }),
            (Some(name), None) => {
                validate(name, "matchName", false)?;
                Ok(FqdnPattern {
                    source: name.to_string(),
                    kind: PatternKind::Exact(normalize_name(name)),
                })
            }
            (None, Some(pattern)) => {
                validate(pattern, "matchPattern", true)?;
                Ok(FqdnPattern {
                    source: pattern.to_string(),
                    kind: compile_pattern(pattern),
                })
            }
        }
    }

    /// Whether `name` (any case, trailing dot optional) is selected.
    pub fn matches(&self, name: &str) -> bool {
        self.matches_normalized(&normalized(name))
    }

    /// The selector as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn matches_normalized(&self, name: &str) -> bool {
        match &self.kind {
            PatternKind::Exact(exact) => exact == name,
            PatternKind::AnyName => is_any_name(name),
            PatternKind::Wildcard(re) => re.is_match(name),
        }
    }
}

/// What `*` alone matches: one or more non-empty labels of DNS characters,
/// each followed by a dot, or the root.
fn is_any_name(name: &str) -> bool {
    if name == "." {
        return true;
    }
    let Some(body) = name.strip_suffix('.') else {
        return false;
    };
    body.split('.')
        .all(|label| !label.is_empty() && label.bytes().all(is_dns_char))
}

fn is_dns_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Cilium's checks: length, character set, and the CRD's shape
/// (`^([-a-zA-Z0-9_]+[.]?)+$`, with `*` allowed in patterns): no empty
/// label, no leading dot.
fn validate(value: &str, field: &str, allow_star: bool) -> Result<(), L7RuleError> {
    let invalid = |reason: &str| L7RuleError::InvalidValue {
        protocol: L7Protocol::Dns,
        rule: 0,
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    if value.len() > MAX_FQDN_LENGTH {
        return Err(invalid("is longer than 255 characters"));
    }
    if !value
        .bytes()
        .all(|b| is_dns_char(b) || b == b'.' || (allow_star && b == b'*'))
    {
        return Err(invalid(if allow_star {
            "has characters other than a-z, A-Z, 0-9, '-', '_', '.' and '*'"
        } else {
            "has characters other than a-z, A-Z, 0-9, '-', '_' and '.' (use matchPattern for '*')"
        }));
    }
    if value.starts_with('.') || value.contains("..") {
        return Err(invalid(
            "has an empty label (a leading dot or two dots in a row)",
        ));
    }
    Ok(())
}

/// Builds the matcher of a validated `matchPattern`.
fn compile_pattern(pattern: &str) -> PatternKind {
    let lower = pattern.to_ascii_lowercase();
    let stars_only = lower.strip_suffix('.').unwrap_or(&lower);
    if stars_only.bytes().all(|b| b == b'*') {
        return PatternKind::AnyName;
    }
    if !lower.contains('*') {
        return PatternKind::Exact(normalize_name(&lower));
    }
    let fqdn = normalize_name(&lower);
    let bytes = fqdn.as_bytes();
    let mut re = String::with_capacity(fqdn.len() * 4 + 32);
    re.push('^');
    let leading_stars = bytes.iter().take_while(|&&b| b == b'*').count();
    let mut i = 0;
    if leading_stars >= 2 && bytes.get(leading_stars) == Some(&b'.') {
        // One or more whole labels, each followed by its dot.
        re.push_str(&format!("{DNS_CHAR_CLASS}+(?:[.]{DNS_CHAR_CLASS}+)*[.]"));
        i = leading_stars + 1;
    }
    while i < bytes.len() {
        match bytes[i] {
            b'.' => re.push_str("[.]"),
            b'*' => {
                while bytes.get(i + 1) == Some(&b'*') {
                    i += 1;
                }
                re.push_str(DNS_CHAR_CLASS);
                re.push('*');
            }
            // Validated: only [-a-z0-9_] remain, none special outside a class.
            other => re.push(char::from(other)),
        }
        i += 1;
    }
    re.push('$');
    // The regex is built from validated characters only.
    PatternKind::Wildcard(Regex::new(&re).expect("FQDN pattern regex is well-formed"))
}

/// The compiled selectors of one `rules.dns` list (or one `toFQDNs` list).
/// Exact names are a hash lookup; wildcard patterns share one `RegexSet`.
#[derive(Debug, Clone)]
pub struct DnsRuleSet {
    patterns: Vec<FqdnPattern>,
    /// Normalized exact name -> lowest rule index selecting it.
    exact: HashMap<String, usize>,
    /// Lowest rule index of a `*` selector.
    any_name: Option<usize>,
    wildcards: RegexSet,
    /// Regex index in `wildcards` -> rule index.
    wildcard_rules: Vec<usize>,
}

impl DnsRuleSet {
    /// Compiles every selector; the first invalid one is reported with its
    /// index.
    pub fn compile(selectors: &[FqdnSelector]) -> Result<DnsRuleSet, L7RuleError> {
        let mut patterns = Vec::with_capacity(selectors.len());
        let mut exact = HashMap::new();
        let mut any_name = None;
        let mut wildcard_sources = Vec::new();
        let mut wildcard_rules = Vec::new();
        for (index, selector) in selectors.iter().enumerate() {
            let pattern = FqdnPattern::from_selector(selector).map_err(|e| e.at_rule(index))?;
            match &pattern.kind {
                PatternKind::Exact(name) => {
                    exact.entry(name.clone()).or_insert(index);
                }
                PatternKind::AnyName => {
                    any_name.get_or_insert(index);
                }
                PatternKind::Wildcard(re) => {
                    wildcard_sources.push(re.as_str().to_string());
                    wildcard_rules.push(index);
                }
            }
            patterns.push(pattern);
        }
        let wildcards =
            RegexSet::new(&wildcard_sources).expect("FQDN pattern regexes compiled individually");
        Ok(DnsRuleSet {
            patterns,
            exact,
            any_name,
            wildcards,
            wildcard_rules,
        })
    }

    /// Whether some selector allows `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.matching_rule(name).is_some()
    }

    /// The lowest index of a selector that allows `name`, for explanations.
    pub fn matching_rule(&self, name: &str) -> Option<usize> {
        let name = normalized(name);
        let mut best = self.exact.get(name.as_ref()).copied();
        if let Some(any) = self.any_name
            && is_any_name(&name)
        {
            best = Some(best.map_or(any, |b| b.min(any)));
        }
        if !self.wildcard_rules.is_empty() {
            // Set indices ascend with rule indices: the first hit is lowest.
            if let Some(hit) = self.wildcards.matches(&name).iter().next() {
                let rule = self.wildcard_rules[hit];
                best = Some(best.map_or(rule, |b| b.min(rule)));
            }
        }
        best
    }

    /// The compiled selectors, in rule order.
    pub fn patterns(&self) -> &[FqdnPattern] {
        &self.patterns
    }

    /// Number of selectors.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Whether there are no selectors (then nothing is allowed).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}
