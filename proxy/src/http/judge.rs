//! The verdict on an HTTP request (pure): the request head's checks
//! ([`super::request::view`]), then the HTTP rules of every local side of
//! the connection's flow, found with the kernel's own lookup
//! ([`ProxyPolicy::http_rules`], or [`ProxyPolicy::http_rules_in`] inside
//! TLS). [`decide`] is the whole step; `serve.rs` only does the I/O around
//! it, as DNS does with its own `decide`.
//!
//! Audit mode: a request that only audit mode would deny (a side of an
//! endpoint in audit mode denies it, by its rules or its L3/L4 entry, or a
//! side's audit verdict with the audited policies' rules does) is
//! forwarded as [`Judgement::Audit`].

use http::request::Parts;
use policy_model::api::MismatchAction;
use policy_model::l7::tls::ClientStart;
use policy_model::l7::{HeaderAction, HttpRequest, HttpRuleSet, HttpVerdict};
use policy_model::{L7Parser, NumericIdentity};

use super::metrics::VerdictLabel;
use super::request::{self, Rejection};
use crate::conn::ConnAddrs;
use crate::policy::{FlowRules, ProxyPolicy, Refusal, Side, SideName, SidePolicy};

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
    /// Forward after applying `edits` (those of the sides that allow it),
    /// although a policy would deny it: a side of an endpoint in audit
    /// mode denies it (its rules or its L3/L4 entry), or a side's audit
    /// verdict (the audited policies' rules too) does. `reason` names each
    /// such side and the policies that would deny, `; `-separated.
    Audit {
        edits: Vec<HeaderEdit>,
        reason: String,
    },
    /// Answer with the protocol's denial.
    Denied(HttpDenial),
}

/// A request to forward, as its access record and metrics tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    /// Header edits to apply first, in order.
    pub edits: Vec<HeaderEdit>,
    /// `Allowed` or `Audit`.
    pub verdict: VerdictLabel,
    /// The rule of each side that allowed it, or why audit mode passed it.
    pub reason: String,
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
    /// Whether the request is allowed (and not only passing as AUDIT).
    pub fn is_allowed(&self) -> bool {
        matches!(self, Judgement::Allowed { .. })
    }

    /// Whether the request is forwarded: allowed, or passing as AUDIT.
    pub fn forwards(&self) -> bool {
        !matches!(self, Judgement::Denied(_))
    }

    /// What forwarding the request takes and logs, or the denial: the one
    /// place a judgement's metrics verdict and access-log reason are
    /// derived (with [`HttpDenial::logged`]).
    pub fn into_forwarding(self) -> Result<Forwarding, HttpDenial> {
        match self {
            Judgement::Allowed { edits, rules } => Ok(Forwarding {
                edits,
                verdict: VerdictLabel::Allowed,
                reason: rules.join("; "),
            }),
            Judgement::Audit { edits, reason } => Ok(Forwarding {
                edits,
                verdict: VerdictLabel::Audit,
                reason,
            }),
            Judgement::Denied(denial) => Err(denial),
        }
    }
}

/// Why one side's rule set denies a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SideDenial<'r> {
    /// The rules did not compile: they allow nothing.
    Uncompiled(&'r str),
    /// No rule matches.
    NoRuleMatched,
}

impl SideDenial<'_> {
    /// The denial of the enforced rules of `side`.
    fn denial(self, side: SideName) -> HttpDenial {
        match self {
            SideDenial::Uncompiled(why) => HttpDenial::Uncompiled {
                side,
                why: why.to_string(),
            },
            SideDenial::NoRuleMatched => HttpDenial::NoRuleMatched { side },
        }
    }

    /// What an AUDIT reason says of it; `whose`: ` of the audited
    /// policies` for the audit verdict's rules, empty for the enforced.
    fn audit_why(self, whose: &str) -> String {
        match self {
            SideDenial::Uncompiled(why) => format!("rules{whose} do not compile: {why}"),
            SideDenial::NoRuleMatched => format!("no HTTP rule{whose} matches"),
        }
    }
}

/// A side's rule set allowing a request: the rule (`None` under
/// `allow_all`) and the header actions of the matching rules.
type SideAllow<'r> = (Option<&'r str>, Vec<HeaderAction<'r>>);

/// Judges `req` by one side's rule set.
fn judge_side<'r>(
    policy: &'r SidePolicy<HttpRuleSet>,
    req: &HttpRequest<'_>,
) -> Result<SideAllow<'r>, SideDenial<'r>> {
    if policy.allow_all {
        return Ok((None, Vec::new()));
    }
    let set = policy
        .set
        .as_ref()
        .map_err(|why| SideDenial::Uncompiled(why))?;
    match set.judge(req) {
        HttpVerdict::Allowed { rule, actions } => Ok((Some(&policy.origins[rule]), actions)),
        HttpVerdict::Denied => Err(SideDenial::NoRuleMatched),
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
    /// Judges one request: every side must allow it, or only audit mode
    /// deny it (then it passes as [`Judgement::Audit`]).
    pub fn judge(&self, req: &HttpRequest<'_>) -> Judgement {
        if let Some(refusal) = &self.refusal {
            return Judgement::Denied(refusal.clone().into());
        }
        if self.sides.is_empty() {
            return Judgement::Denied(Refusal::NotRedirected(L7Parser::Http).into());
        }
        let mut edits = Vec::new();
        let mut rules = Vec::new();
        // An end in audit mode whose L3/L4 entry would refuse the flow.
        let mut audit: Vec<String> = self
            .audit_faults
            .iter()
            .map(Refusal::audit_reason)
            .collect();
        for side in &self.sides {
            match judge_side(&side.policy, req) {
                Ok((rule, actions)) => {
                    rules.push(match rule {
                        Some(origin) => origin.to_string(),
                        None => format!("{}: allow-all", side.name()),
                    });
                    edits.extend(actions.iter().map(|a| HeaderEdit {
                        action: a.action,
                        name: a.name.to_string(),
                        value: a.value.to_string(),
                        secret: a.secret,
                    }));
                    if let Some(audited) = side.policy.audited_rules()
                        && let Err(why) = judge_side(audited, req)
                    {
                        let why = why.audit_why(" of the audited policies");
                        audit.push(audited.audit_reason(&side.name(), why));
                    }
                }
                Err(why) if side.audited => {
                    audit.push(side.policy.audit_reason(&side.name(), why.audit_why("")));
                }
                Err(why) => return Judgement::Denied(why.denial(side.name())),
            }
        }
        if audit.is_empty() {
            Judgement::Allowed { edits, rules }
        } else {
            Judgement::Audit {
                edits,
                reason: audit.join("; "),
            }
        }
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
