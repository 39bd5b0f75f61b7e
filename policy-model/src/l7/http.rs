//! HTTP request matching for `rules.http`, with the semantics Cilium gives
//! these rules through Envoy (`pkg/envoy` builds Envoy header matchers from
//! them; the `cilium.l7policy` filter applies `headerMatches`).
//!
//! - Rules are OR-ed; inside a rule every field that is set must match. An
//!   empty rule `{}` matches every request. Empty strings count as unset.
//! - `method`, `path` and `host` are RE2-style regular expressions matched
//!   against the WHOLE value (Envoy's `safe_regex` is a full match): `/public`
//!   matches neither `/publicity` nor `/x/public`. `path` sees the
//!   request-target exactly as sent, query string included, never
//!   normalised; `host` sees the authority (`Host` / `:authority`).
//! - `headers` entries are `Name` (the header must be present) or
//!   `Name value` / `Name: value` (present, with exactly that value): the
//!   entry is split at its first space and trailing colons are trimmed
//!   from the name, as Cilium does.
//! - `headerMatches` without `mismatch`: the header must be present with
//!   exactly `value` (present at all when `value` is empty). With
//!   `mismatch`, a mismatch does not deny: the rule still matches and the
//!   verdict carries the action (LOG, ADD, DELETE, REPLACE) for the proxy to
//!   apply.
//! - Header names compare case-insensitively, values exactly. A header
//!   sent several times is compared as its values joined with `,` (Envoy's
//!   `getAllOfHeaderAsString`).
//!
//! Where this differs from Cilium with Envoy, on purpose:
//! - rules are judged against the request as received; Envoy applies one
//!   rule's header edits before judging the next (in its own sorted
//!   order), so an ADD/REPLACE could make a later rule match there;
//! - regexes may be larger than Envoy's RE2 program-size limit (100), and
//!   `host` regexes are validated here rather than rejected by Envoy later;
//! - header rules naming `host` or `:authority` read the authority.
//!
//! Evaluation is precompiled for large rule sets: per field, literal
//! patterns (`GET`, `GET|POST`, `/api/v1/users`) are a hash lookup and the
//! remaining regexes share one `RegexSet`, so judging a request costs three
//! set lookups plus header checks on the surviving candidates, not one regex
//! run per rule.

use std::borrow::Cow;
use std::collections::HashMap;

use regex::{Regex, RegexSet, RegexSetBuilder};

use super::error::{L7Protocol, L7RuleError};
use crate::api::{HttpRule, MismatchAction, SecretRef};

#[cfg(test)]
mod tests;

/// Compiled-size limit for one regex (and for the shared set, per pattern);
/// a rule beyond it is rejected rather than slowing every request.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One HTTP request as the policy sees it, borrowed from the parser.
///
/// `method`, `path` and `authority` must be ASCII (a parser rejects
/// anything else); a non-ASCII value never matches a regex, so that the
/// Unicode-aware `regex` crate and RE2 cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    /// The method token as sent (case-sensitive).
    pub method: &'a str,
    /// The request-target as sent, query string included, not normalised
    /// (origin-form; a parser given absolute-form splits it into
    /// `authority` and `path`, as Envoy does).
    pub path: &'a str,
    /// `:authority`, or the `Host` header for HTTP/1; `None` when absent.
    /// Header rules naming `host` or `:authority` read this field.
    pub authority: Option<&'a str>,
    /// Every other header as sent, in order; repeats allowed.
    pub headers: &'a [(&'a str, &'a str)],
}

/// A header edit (or log entry) a matching rule asks the proxy to apply
/// before forwarding, from a `headerMatches` entry with `mismatch` set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderAction<'s> {
    /// Index of the rule the entry belongs to.
    pub rule: usize,
    /// `Log`: record the mismatch. `Add`: append `name: value` (the header
    /// may then have several values). `Delete`: remove every `name` header
    /// (only emitted when the header is present with another value).
    /// `Replace`: set `name` to `value`, replacing all its values, adding
    /// it if absent.
    pub action: MismatchAction,
    /// Header name, lowercase.
    pub name: &'s str,
    /// The value the rule expects; empty when the rule only requires
    /// presence.
    pub value: &'s str,
    /// `value` came from a Kubernetes Secret: redact it in logs.
    pub secret: bool,
}

/// The outcome of [`HttpRuleSet::judge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpVerdict<'s> {
    /// Allowed by rule `rule` (the lowest-indexed matching rule). `actions`
    /// holds the header actions of every matching rule, in rule order: as
    /// in Cilium, once any rule has `headerMatches`, all matching rules'
    /// actions apply, not only the first's.
    Allowed {
        rule: usize,
        actions: Vec<HeaderAction<'s>>,
    },
    /// No rule matched.
    Denied,
}

impl HttpVerdict<'_> {
    /// Whether the request may be forwarded.
    pub fn is_allowed(&self) -> bool {
        matches!(self, HttpVerdict::Allowed { .. })
    }
}

/// Where a header rule reads its value from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
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
struct HeaderRequirement {
    target: Target,
    /// `None`: presence only.
    value: Option<String>,
}

impl HeaderRequirement {
    fn is_met(&self, req: &HttpRequest<'_>) -> bool {
        match (self.target.value(req), &self.value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(actual), Some(expected)) => same_bytes(actual.as_bytes(), expected.as_bytes()),
        }
    }
}

/// A `headerMatches` entry with a mismatch action.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeaderMismatchCheck {
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
    fn action<'s>(&'s self, rule: usize, req: &HttpRequest<'_>) -> Option<HeaderAction<'s>> {
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
struct CompiledHttpRule {
    requirements: Vec<HeaderRequirement>,
    mismatch_checks: Vec<HeaderMismatchCheck>,
    /// A `headerMatches` entry whose secret is unavailable and that has no
    /// fallback `value`: Cilium makes such a rule match nothing.
    never_matches: bool,
}

/// Which rules accept a given value of one field (`method`, `path` or
/// `host`).
#[derive(Debug, Clone)]
struct FieldIndex {
    /// Bitset of rules that do not constrain the field.
    unconstrained: Vec<u64>,
    /// Literal value -> rules whose pattern is exactly that literal (or an
    /// alternation containing it).
    literals: HashMap<String, Vec<usize>>,
    /// The non-literal patterns, anchored.
    regexes: RegexSet,
    /// Pattern index in `regexes` -> rule index.
    regex_rules: Vec<usize>,
}

impl FieldIndex {
    /// ORs into `out` the rules accepting `value` (`None`: the field is
    /// absent, which only unconstrained rules accept).
    fn accepting(&self, value: Option<&str>, out: &mut [u64]) {
        for (o, u) in out.iter_mut().zip(&self.unconstrained) {
            *o |= u;
        }
        let Some(value) = value else {
            return;
        };
        if let Some(rules) = self.literals.get(value) {
            for &rule in rules {
                set_bit(out, rule);
            }
        }
        if !self.regex_rules.is_empty() && value.is_ascii() {
            for hit in self.regexes.matches(value).iter() {
                set_bit(out, self.regex_rules[hit]);
            }
        }
    }

    /// Whether no rule constrains this field.
    fn is_trivial(&self) -> bool {
        self.literals.is_empty() && self.regex_rules.is_empty()
    }
}

fn set_bit(bits: &mut [u64], index: usize) {
    bits[index / 64] |= 1 << (index % 64);
}

/// The compiled `rules.http` list of one port.
#[derive(Debug, Clone)]
pub struct HttpRuleSet {
    rules: Vec<CompiledHttpRule>,
    method: FieldIndex,
    path: FieldIndex,
    host: FieldIndex,
    /// Some rule has a `headerMatches` entry with a mismatch action: every
    /// matching rule must then be found to collect its actions.
    collects_actions: bool,
}

impl HttpRuleSet {
    /// Compiles `rules` with no Kubernetes Secrets available: a
    /// `headerMatches` entry naming a secret uses its `value`, or makes its
    /// rule match nothing when it has none (as Cilium does when the secret
    /// cannot be read).
    pub fn compile(rules: &[HttpRule]) -> Result<HttpRuleSet, L7RuleError> {
        Self::compile_with_secrets(rules, |_| None)
    }

    /// Compiles `rules`, reading `headerMatches[].secret` values through
    /// `secret` (`None`: unavailable). A non-empty secret value takes
    /// precedence over `value`, as in Cilium.
    pub fn compile_with_secrets(
        rules: &[HttpRule],
        secret: impl Fn(&SecretRef) -> Option<String>,
    ) -> Result<HttpRuleSet, L7RuleError> {
        let mut compiled = Vec::with_capacity(rules.len());
        let mut method = FieldBuilder::default();
        let mut path = FieldBuilder::default();
        let mut host = FieldBuilder::default();
        for (index, rule) in rules.iter().enumerate() {
            method.add(index, "method", rule.method.as_deref())?;
            path.add(index, "path", rule.path.as_deref())?;
            host.add(index, "host", rule.host.as_deref())?;
            compiled.push(compile_headers(index, rule, &secret)?);
        }
        let collects_actions = compiled.iter().any(|r| !r.mismatch_checks.is_empty());
        Ok(HttpRuleSet {
            method: method.build(rules.len())?,
            path: path.build(rules.len())?,
            host: host.build(rules.len())?,
            rules: compiled,
            collects_actions,
        })
    }

    /// Judges one request. An empty rule set denies everything: Cilium
    /// treats `http: []` as no L7 rules and never redirects such a port, so
    /// the caller should not build one.
    pub fn judge(&self, req: &HttpRequest<'_>) -> HttpVerdict<'_> {
        let words = self.rules.len().div_ceil(64);
        if words == 0 {
            return HttpVerdict::Denied;
        }
        let mut candidates = vec![u64::MAX; words];
        let mut field = vec![0u64; words];
        for (index, value) in [
            (&self.method, Some(req.method)),
            (&self.path, Some(req.path)),
            (&self.host, req.authority),
        ] {
            if index.is_trivial() {
                continue;
            }
            field.fill(0);
            index.accepting(value, &mut field);
            let mut any = 0;
            for (c, f) in candidates.iter_mut().zip(&field) {
                *c &= f;
                any |= *c;
            }
            if any == 0 {
                return HttpVerdict::Denied;
            }
        }
        let mut allowed_by = None;
        let mut actions = Vec::new();
        for (w, word) in candidates.iter().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let index = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                // Bits past the last rule are set in the last word.
                let Some(rule) = self.rules.get(index) else {
                    break;
                };
                if rule.never_matches || !rule.requirements.iter().all(|r| r.is_met(req)) {
                    continue;
                }
                if !self.collects_actions {
                    return HttpVerdict::Allowed {
                        rule: index,
                        actions,
                    };
                }
                allowed_by.get_or_insert(index);
                actions.extend(
                    rule.mismatch_checks
                        .iter()
                        .filter_map(|c| c.action(index, req)),
                );
            }
        }
        match allowed_by {
            Some(rule) => HttpVerdict::Allowed { rule, actions },
            None => HttpVerdict::Denied,
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules (then nothing is allowed).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Collects one field's patterns while compiling.
#[derive(Default)]
struct FieldBuilder {
    unconstrained: Vec<usize>,
    literals: HashMap<String, Vec<usize>>,
    regexes: Vec<String>,
    regex_rules: Vec<usize>,
}

impl FieldBuilder {
    fn add(&mut self, rule: usize, field: &str, pattern: Option<&str>) -> Result<(), L7RuleError> {
        let Some(pattern) = pattern.filter(|p| !p.is_empty()) else {
            self.unconstrained.push(rule);
            return Ok(());
        };
        let anchored = anchored_regex(rule, field, pattern)?;
        match literal_alternatives(pattern) {
            Some(literals) => {
                for literal in literals {
                    let rules = self.literals.entry(literal).or_default();
                    if rules.last() != Some(&rule) {
                        rules.push(rule);
                    }
                }
            }
            None => {
                self.regexes.push(anchored.as_str().to_string());
                self.regex_rules.push(rule);
            }
        }
        Ok(())
    }

    fn build(self, rules: usize) -> Result<FieldIndex, L7RuleError> {
        let mut unconstrained = vec![0u64; rules.div_ceil(64)];
        for rule in self.unconstrained {
            set_bit(&mut unconstrained, rule);
        }
        let regexes = RegexSetBuilder::new(&self.regexes)
            .size_limit(REGEX_SIZE_LIMIT.saturating_mul(self.regexes.len().max(1)))
            .build()
            .map_err(|e| L7RuleError::InvalidRegex {
                protocol: L7Protocol::Http,
                rule: self.regex_rules.first().copied().unwrap_or(0),
                field: "(all rules)".to_string(),
                pattern: String::new(),
                reason: format!("the rules' regexes together are too large: {e}"),
            })?;
        Ok(FieldIndex {
            unconstrained,
            literals: self.literals,
            regexes,
            regex_rules: self.regex_rules,
        })
    }
}

/// Compiles `pattern` alone (so that it cannot unbalance the anchoring
/// group), then anchored to match whole values only.
fn anchored_regex(rule: usize, field: &str, pattern: &str) -> Result<Regex, L7RuleError> {
    let invalid = |reason: String| L7RuleError::InvalidRegex {
        protocol: L7Protocol::Http,
        rule,
        field: field.to_string(),
        pattern: pattern.to_string(),
        reason,
    };
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| invalid(e.to_string()))?;
    regex::RegexBuilder::new(&format!(r"\A(?:{pattern})\z"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| invalid(format!("cannot be anchored: {e}")))
}

/// The strings a pattern matches when it is a literal or an alternation of
/// literals (`GET`, `GET|POST`, `/api/v1\.0/users`); `None` when it uses
/// any other regex feature. `pattern` has compiled, so escapes are valid.
fn literal_alternatives(pattern: &str) -> Option<Vec<String>> {
    let mut alternatives = vec![String::new()];
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        let current = alternatives.last_mut()?;
        match c {
            // `\<` and `\>` are word boundaries; letters are classes or
            // assertions; any other escaped ASCII punctuation is itself.
            '\\' => match chars.next()? {
                e if e.is_ascii_punctuation() && e != '<' && e != '>' => current.push(e),
                _ => return None,
            },
            '|' => alternatives.push(String::new()),
            '.' | '+' | '*' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '^' | '$' => return None,
            c => current.push(c),
        }
    }
    Some(alternatives)
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

fn compile_headers(
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
