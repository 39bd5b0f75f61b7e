//! The verdict on a DNS query (pure): the source endpoint's egress DNS
//! rules for (DNS server identity, port, protocol), found with the
//! kernel's own lookup by [`ProxyPolicy::dns_rules`]. Every question name
//! must be allowed, or the query passes as AUDIT (audit mode). Anything
//! the proxy cannot account for denies.

use std::net::SocketAddr;

use policy_model::NumericIdentity;
use policy_model::l7::DnsRuleSet;

use super::metrics::DnsVerdict;
use super::parse::{DnsQuery, ParseError, parse_query};
use crate::policy::{ProxyPolicy, Refusal, Side, SideName, SidePolicy};

#[cfg(test)]
mod tests;

/// The DNS rules that apply to one query's flow under one snapshot.
#[derive(Debug, Clone)]
pub struct DnsRules {
    pub src_identity: NumericIdentity,
    pub dst_identity: NumericIdentity,
    /// The source endpoint's rules, or why there are none.
    pub side: Result<Side<DnsRuleSet>, Refusal>,
}

impl ProxyPolicy {
    /// The DNS rules that apply to a redirected query from `src` to
    /// `orig_dst` over `transport`: the source endpoint's egress entry for
    /// (the DNS server's identity, port, protocol), found with the kernel's
    /// lookup. Only a DNS redirect with a rule set yields rules.
    pub fn dns_rules(
        &self,
        src: SocketAddr,
        orig_dst: SocketAddr,
        transport: Transport,
    ) -> DnsRules {
        let (src_identity, dst_identity, side) =
            self.egress_rules(src, orig_dst, transport.protocol());
        DnsRules {
            src_identity,
            dst_identity,
            side,
        }
    }
}

/// The verdict on one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsJudgement {
    /// Forward; `rules` says which selector allowed each name.
    Allowed { rules: Vec<String> },
    /// Forward, although a policy would deny a name: the client is in
    /// audit mode, or an audited policy's rules would deny it. `reason`
    /// names the side and the policies that would deny.
    Audit { reason: String },
    /// Answer with the configured denial (FORMERR when malformed).
    Denied(DnsDenial),
}

/// Why a query is denied. Its text is the access log's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsDenial {
    /// The flow gets no DNS rules.
    #[error("{0}")]
    Refusal(#[from] Refusal),
    /// The source's DNS rules did not compile: they allow nothing.
    #[error("{side}: DNS rules do not compile: {why}")]
    Uncompiled { side: SideName, why: String },
    /// No rule of the source allows this question name.
    #[error("{side}: no DNS rule matches {name}")]
    NoRuleMatched { side: SideName, name: String },
    /// The query asks nothing.
    #[error("the query has no question")]
    NoQuestion,
    /// Not a query the proxy can judge.
    #[error("{0}")]
    Malformed(#[from] ParseError),
}

impl DnsJudgement {
    /// Whether the query is allowed (and not only passing as AUDIT).
    pub fn is_allowed(&self) -> bool {
        matches!(self, DnsJudgement::Allowed { .. })
    }

    /// Whether the query is forwarded: allowed, or passing as AUDIT.
    pub fn forwards(&self) -> bool {
        matches!(
            self,
            DnsJudgement::Allowed { .. } | DnsJudgement::Audit { .. }
        )
    }

    /// The metrics verdict and the access-log reason (which rules allowed
    /// the query, which policies would deny it, or why it was denied): the
    /// one place both are derived. A forwarded query's verdict holds until
    /// the server fails to answer.
    pub fn logged(&self) -> (DnsVerdict, String) {
        match self {
            DnsJudgement::Allowed { rules } => (DnsVerdict::Allowed, rules.join("; ")),
            DnsJudgement::Audit { reason } => (DnsVerdict::Audit, reason.clone()),
            DnsJudgement::Denied(denial @ DnsDenial::Malformed(_)) => {
                (DnsVerdict::Invalid, denial.to_string())
            }
            DnsJudgement::Denied(denial) => (DnsVerdict::Denied, denial.to_string()),
        }
    }

    /// Which rules allowed it, which policies would deny it, or why it was
    /// denied (for the log).
    pub fn reason(&self) -> String {
        self.logged().1
    }
}

/// Why one rule set denies a query's names.
enum NameFault {
    /// The rules did not compile: they allow nothing.
    Uncompiled(String),
    /// No rule matches this name.
    NoRuleMatched(String),
}

/// Matches every name against `policy`: the origin of the rule that
/// allowed each (none under `allow_all`), or the first fault.
fn match_names(policy: &SidePolicy<DnsRuleSet>, names: &[&str]) -> Result<Vec<String>, NameFault> {
    if policy.allow_all {
        return Ok(Vec::new());
    }
    let set = policy
        .set
        .as_ref()
        .map_err(|why| NameFault::Uncompiled(why.clone()))?;
    names
        .iter()
        .map(|name| match set.matching_rule(name) {
            Some(i) => Ok(policy.origins[i].clone()),
            None => Err(NameFault::NoRuleMatched(name.to_string())),
        })
        .collect()
}

impl DnsRules {
    /// Judges the question names of a query: every one must be allowed by
    /// the source's rules, or the source be in audit mode (AUDIT); a query
    /// they allow and the audit verdict's rules (audited policies' too)
    /// deny passes as AUDIT. A refusal is a denial, audit mode or not.
    pub fn judge<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> DnsJudgement {
        let source = match &self.side {
            Ok(source) => source,
            Err(refusal) => return DnsJudgement::Denied(refusal.clone().into()),
        };
        let names: Vec<&str> = names.into_iter().collect();
        if names.is_empty() {
            return DnsJudgement::Denied(DnsDenial::NoQuestion);
        }
        let side = source.name();
        let mut rules = match match_names(&source.policy, &names) {
            Ok(rules) => rules,
            Err(fault) if source.audited => {
                let why = match fault {
                    NameFault::Uncompiled(why) => format!("DNS rules do not compile: {why}"),
                    NameFault::NoRuleMatched(name) => format!("no DNS rule matches {name}"),
                };
                let reason = source.policy.audit_reason(&side, why);
                return DnsJudgement::Audit { reason };
            }
            Err(NameFault::Uncompiled(why)) => {
                return DnsJudgement::Denied(DnsDenial::Uncompiled { side, why });
            }
            Err(NameFault::NoRuleMatched(name)) => {
                return DnsJudgement::Denied(DnsDenial::NoRuleMatched { side, name });
            }
        };
        if let Some(audited) = source.policy.audited_rules()
            && let Err(fault) = match_names(audited, &names)
        {
            let why = match fault {
                NameFault::Uncompiled(why) => {
                    format!("DNS rules of the audited policies do not compile: {why}")
                }
                NameFault::NoRuleMatched(name) => {
                    format!("no DNS rule of the audited policies matches {name}")
                }
            };
            let reason = audited.audit_reason(&side, why);
            return DnsJudgement::Audit { reason };
        }
        if source.policy.allow_all {
            rules.push(format!("{side}: allow-all"));
        }
        DnsJudgement::Allowed { rules }
    }
}

/// The transport a query came over (the policy key's protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// The IP protocol number.
    pub fn protocol(self) -> u8 {
        match self {
            Transport::Udp => 17,
            Transport::Tcp => 6,
        }
    }

    /// `udp` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// A query's parse and verdict: what the proxy does with a message before
/// any I/O. The fuzz target drives this.
#[derive(Debug, Clone)]
pub struct Decision {
    pub rules: DnsRules,
    pub query: Result<DnsQuery, ParseError>,
    /// `Denied` whenever `query` is `Err`.
    pub judgement: DnsJudgement,
}

/// Parses `bytes` and judges the query from `client` to `original_dst`.
pub fn decide(
    policy: &ProxyPolicy,
    client: SocketAddr,
    original_dst: SocketAddr,
    transport: Transport,
    bytes: &[u8],
) -> Decision {
    let rules = policy.dns_rules(client, original_dst, transport);
    let query = parse_query(bytes);
    let judgement = match &query {
        Ok(q) => rules.judge(q.questions.iter().map(|q| q.name.as_str())),
        Err(e) => DnsJudgement::Denied(e.clone().into()),
    };
    Decision {
        rules,
        query,
        judgement,
    }
}
