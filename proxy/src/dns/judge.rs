//! The verdict on a DNS query (pure): the source endpoint's egress DNS
//! rules for (DNS server identity, port, protocol), found with the
//! kernel's own lookup by [`ProxyPolicy::dns_rules`]. Every question name
//! must be allowed. Anything the proxy cannot account for denies.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use policy_model::l7::DnsRuleSet;
use policy_model::resolve::L7Policy;
use policy_model::rules::L7Rules;
use policy_model::{L7Parser, NumericIdentity};

use super::parse::{DnsQuery, ParseError, parse_query};
use crate::policy::ProxyPolicy;

/// The compiled DNS rules of one redirected policy key.
#[derive(Debug)]
pub struct DnsSidePolicy {
    /// An L3/L4 allow of the same traffic without L7 rules: every name
    /// passes.
    allow_all: bool,
    /// Every `rules.dns` list of the key as one set; `Err`: why it did not
    /// compile (then nothing is allowed).
    set: Result<DnsRuleSet, String>,
    /// For each selector of `set`: the policy and rule path it came from,
    /// formatted once here rather than for every query.
    origins: Vec<String>,
}

impl DnsSidePolicy {
    /// Compiles the DNS rule lists of one key.
    pub fn compile(l7: &L7Policy) -> DnsSidePolicy {
        let mut selectors = Vec::new();
        let mut origins = Vec::new();
        let mut foreign = None;
        for (list, origin, path) in &l7.rules {
            match list.as_ref() {
                L7Rules::Dns(dns) => {
                    for (i, selector) in dns.iter().enumerate() {
                        selectors.push(selector.clone());
                        origins.push(format!("{origin} {path}.rules.dns[{i}]"));
                    }
                }
                other => {
                    foreign = Some(format!(
                        "{origin} {path} attaches {} rules to a DNS-redirected port",
                        other.parser()
                    ))
                }
            }
        }
        let set = match foreign {
            Some(why) => Err(why),
            None => DnsRuleSet::compile(&selectors).map_err(|e| e.to_string()),
        };
        DnsSidePolicy {
            allow_all: l7.allow_all,
            set,
            origins,
        }
    }

    /// Why the rules did not compile, if they did not.
    pub fn compile_error(&self) -> Option<&str> {
        self.set.as_ref().err().map(String::as_str)
    }
}

/// Why a query gets no DNS rules (it is denied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsRefusal {
    /// The client is not a local endpoint: no egress policy to apply.
    NotLocal,
    /// The source's egress has no map entry for the DNS server.
    NoEntry { endpoint: String },
    /// The source's egress denies the flow at L3/L4.
    DeniedAtL4 { endpoint: String },
    /// The entry allows the flow without a redirect: the kernel should
    /// not have sent it here.
    NotRedirected { endpoint: String },
    /// The entry redirects to another parser's proxy.
    OtherParser { endpoint: String, parser: L7Parser },
    /// Redirected to DNS but no rule set for the key.
    MissingRules { endpoint: String },
}

impl fmt::Display for DnsRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsRefusal::NotLocal => f.write_str("the client is not a local endpoint"),
            DnsRefusal::NoEntry { endpoint } => {
                write!(f, "{endpoint} egress: no policy entry allows the flow")
            }
            DnsRefusal::DeniedAtL4 { endpoint } => {
                write!(f, "{endpoint} egress: the flow is denied at L3/L4")
            }
            DnsRefusal::NotRedirected { endpoint } => write!(
                f,
                "{endpoint} egress: the flow is allowed without a DNS redirect"
            ),
            DnsRefusal::OtherParser { endpoint, parser } => write!(
                f,
                "{endpoint} egress: the port is redirected to the {parser} proxy, not DNS"
            ),
            DnsRefusal::MissingRules { endpoint } => {
                write!(f, "{endpoint} egress: redirected without DNS rules")
            }
        }
    }
}

/// The DNS rules that apply to one query's flow under one snapshot.
#[derive(Debug, Clone)]
pub struct DnsRules {
    pub src_identity: NumericIdentity,
    pub dst_identity: NumericIdentity,
    /// The source endpoint's rules, or why there are none.
    pub side: Result<(String, Arc<DnsSidePolicy>), DnsRefusal>,
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
            Ok(side) => side,
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
