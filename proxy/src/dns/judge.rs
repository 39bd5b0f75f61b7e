//! The verdict on a DNS query (pure): the source endpoint's egress DNS
//! rules for (DNS server identity, port, protocol), found with the
//! kernel's own lookup by [`ProxyPolicy::dns_rules`]. Every question name
//! must be allowed. Anything the proxy cannot account for denies.

use std::net::SocketAddr;

use policy_model::NumericIdentity;
use policy_model::l7::DnsRuleSet;

use super::parse::{DnsQuery, ParseError, parse_query};
use crate::policy::{ProxyPolicy, Refusal, Side};

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
    /// Answer with the configured denial.
    Denied { reason: String },
}

impl DnsJudgement {
    /// Whether the query may be forwarded.
    pub fn is_allowed(&self) -> bool {
        matches!(self, DnsJudgement::Allowed { .. })
    }

    /// Which rules allowed it, or why it was denied (for the log).
    pub fn reason(&self) -> String {
        match self {
            DnsJudgement::Allowed { rules } => rules.join("; "),
            DnsJudgement::Denied { reason } => reason.clone(),
        }
    }
}

impl DnsRules {
    /// Judges the question names of a query: every one must be allowed.
    pub fn judge<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> DnsJudgement {
        let (endpoint, side) = match &self.side {
            Ok(side) => (&side.endpoint, &side.policy),
            Err(refusal) => {
                return DnsJudgement::Denied {
                    reason: refusal.to_string(),
                };
            }
        };
        let mut rules = Vec::new();
        let mut any = false;
        for name in names {
            any = true;
            if side.allow_all {
                continue;
            }
            let set = match &side.set {
                Ok(set) => set,
                Err(why) => {
                    return DnsJudgement::Denied {
                        reason: format!("{endpoint} egress: DNS rules do not compile: {why}"),
                    };
                }
            };
            match set.matching_rule(name) {
                Some(i) => rules.push(side.origins[i].clone()),
                None => {
                    return DnsJudgement::Denied {
                        reason: format!("{endpoint} egress: no DNS rule matches {name}"),
                    };
                }
            }
        }
        if !any {
            return DnsJudgement::Denied {
                reason: "the query has no question".to_string(),
            };
        }
        if side.allow_all {
            rules.push(format!("{endpoint} egress: allow-all"));
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
        Err(e) => DnsJudgement::Denied {
            reason: e.to_string(),
        },
    };
    Decision {
        rules,
        query,
        judgement,
    }
}
