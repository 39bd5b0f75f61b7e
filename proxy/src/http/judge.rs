//! The verdict on an HTTP request (pure): the request head's checks
//! ([`super::request::view`]), then the HTTP rules of every local side of
//! the connection's flow, found with the kernel's own lookup
//! ([`ProxyPolicy::http_rules`], or [`ProxyPolicy::http_rules_in`] inside
//! TLS). [`decide`] is the whole step; `serve.rs` only does the I/O around
//! it, as DNS does with its own `decide`.

use http::request::Parts;
use policy_model::api::MismatchAction;
use policy_model::l7::tls::ClientStart;
use policy_model::l7::{HttpRequest, HttpRuleSet, HttpVerdict};
use policy_model::{L7Parser, NumericIdentity};

use super::metrics::VerdictLabel;
use super::request::{self, Rejection};
use crate::conn::ConnAddrs;
use crate::policy::{FlowRules, ProxyPolicy, Refusal, Side, SideName};

#[cfg(test)]
mod tests;

/// What applies to one redirected HTTP connection under one snapshot.
pub type HttpRules = FlowRules<HttpRuleSet>;

/// One side's HTTP rules for a connection.
pub type SideRules = Side<HttpRuleSet>;

/// A header edit to apply to an allowed request before forwarding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEdit {
    pub action: MismatchAction,
    /// Lowercase header name.
    pub name: String,
    pub value: String,
    /// The value is a secret: never log it.
    pub secret: bool,
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Forward, after applying `edits` in order.
    Allowed {
        edits: Vec<HeaderEdit>,
        /// Which rule of each side allowed it (`policy rule-path`, or
        /// `allow-all`), for the access log.
        rules: Vec<String>,
    },
    /// Answer with the protocol's denial.
    Denied(HttpDenial),
}

/// Why the rules denied a request. Its text is the access log's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpDenial {
    /// The flow gets no HTTP rules.
    #[error("{0}")]
    Refusal(#[from] Refusal),
    /// A side's rules did not compile: that side allows nothing.
    #[error("{side}: rules do not compile: {why}")]
    Uncompiled { side: SideName, why: String },
    /// No rule of a side matches the request.
    #[error("{side}: no HTTP rule matches")]
    NoRuleMatched { side: SideName },
}

impl HttpDenial {
    /// The metrics verdict and the access-log reason of this denial: the
    /// one place both are derived from it.
    pub fn logged(&self) -> (VerdictLabel, String) {
        (VerdictLabel::Denied, self.to_string())
    }
}

impl Judgement {
    /// Whether the request may be forwarded.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Judgement::Allowed { .. })
    }
}

impl ProxyPolicy {
    /// The rules that apply to a redirected TCP connection from `src` to
    /// `orig_dst`: the source endpoint's egress side (when the source is
    /// local) and the destination endpoint's ingress side (when it is
    /// local), each found with the kernel's lookup.
    pub fn http_rules(
        &self,
        src: std::net::SocketAddr,
        orig_dst: std::net::SocketAddr,
    ) -> HttpRules {
        self.flow_rules(src, orig_dst)
    }
}

impl FlowRules<HttpRuleSet> {
    /// Judges one request: every side must allow it.
    pub fn judge(&self, req: &HttpRequest<'_>) -> Judgement {
        if let Some(refusal) = &self.refusal {
            return Judgement::Denied(refusal.clone().into());
        }
        if self.sides.is_empty() {
            return Judgement::Denied(Refusal::NotRedirected(L7Parser::Http).into());
        }
        let mut edits = Vec::new();
        let mut rules = Vec::new();
        for side in &self.sides {
            if side.policy.allow_all {
                rules.push(format!("{} {}: allow-all", side.endpoint, side.direction));
                continue;
            }
            let set = match &side.policy.set {
                Ok(set) => set,
                Err(why) => {
                    return Judgement::Denied(HttpDenial::Uncompiled {
                        side: side.name(),
                        why: why.clone(),
                    });
                }
            };
            match set.judge(req) {
                HttpVerdict::Allowed { rule, actions } => {
                    rules.push(side.policy.origins[rule].clone());
                    edits.extend(actions.iter().map(|a| HeaderEdit {
                        action: a.action,
                        name: a.name.to_string(),
                        value: a.value.to_string(),
                        secret: a.secret,
                    }));
                }
                HttpVerdict::Denied => {
                    return Judgement::Denied(HttpDenial::NoRuleMatched { side: side.name() });
                }
            }
        }
        Judgement::Allowed { edits, rules }
    }
}

/// A request head's checks and verdict: what the proxy does with a
/// request before any I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Refused by the proxy's own checks before any rule is looked up.
    Rejected(Rejection),
    /// Judged by the rules of the connection's flow.
    Judged {
        judgement: Judgement,
        src_identity: NumericIdentity,
        dst_identity: NumericIdentity,
        /// The request's authority, for the access log.
        authority: Option<String>,
    },
}

/// Checks the head `parts` of a request on the connection `addrs` and
/// judges it under `policy`; `tls` is how the connection started when the
/// port has TLS settings (see [`crate::tls`]).
pub fn decide(
    policy: &ProxyPolicy,
    addrs: &ConnAddrs,
    tls: Option<ClientStart<'_>>,
    parts: &Parts,
) -> Decision {
    let view = match request::view(parts) {
        Ok(view) => view,
        Err(rejection) => return Decision::Rejected(rejection),
    };
    let rules = match tls {
        None => policy.http_rules(addrs.client, addrs.original_dst),
        Some(start) => policy.http_rules_in(addrs.client, addrs.original_dst, start),
    };
    Decision::Judged {
        judgement: rules.judge(&view.as_request()),
        src_identity: rules.src_identity,
        dst_identity: rules.dst_identity,
        authority: view.authority.map(str::to_string),
    }
}
