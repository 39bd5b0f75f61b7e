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

mod fields;
mod headers;
mod request;

pub use request::{HeaderAction, HttpRequest, HttpVerdict};

use self::fields::{FieldBuilder, FieldIndex};
use self::headers::{CompiledHttpRule, compile_headers};
use super::error::L7RuleError;
use crate::api::{HttpRule, SecretRef};

#[cfg(test)]
mod tests;

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
