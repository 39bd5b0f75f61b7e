//! What the HTTP matcher takes and gives: a request borrowed from the
//! proxy's parser, and the verdict with the header actions of the
//! matching rules.

use crate::api::MismatchAction;

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
