//! One vocabulary for "which L7 rules apply to this side of this flow",
//! shared by every parser (HTTP, DNS, Kafka, and TLS on the HTTP port):
//! a compiled [`SidePolicy`] per redirected policy key, one typed
//! [`Refusal`] for a flow the proxy cannot account for, and one lookup
//! (`lookup.rs`) that repeats the kernel's own.
//!
//! Each protocol's `judge.rs` turns the sides into its verdict; this file
//! knows the rule sets only as [`RuleSet`]s of `policy-model`.

use std::fmt;
use std::sync::Arc;

use policy_model::api::{FqdnSelector, HttpRule, KafkaRule};
use policy_model::l7::{DnsRuleSet, HttpRuleSet, KafkaRuleSet};
use policy_model::resolve::L7Policy;
use policy_model::rules::L7Rules;
use policy_model::{Direction, L7Parser, NumericIdentity};

/// A protocol's compiled rule set, as a side policy holds it.
pub trait RuleSet: Sized + fmt::Debug + Send + Sync + 'static {
    /// One rule of a `rules.<parser>` list.
    type Rule: Clone;
    /// The parser whose redirect these rules serve.
    const PARSER: L7Parser;
    /// How a compile error names the redirected port ("an HTTP-redirected
    /// port").
    const REDIRECTED_PORT: &'static str;
    /// The rules of this protocol in `rules`, `None` for another's.
    fn rules_of(rules: &L7Rules) -> Option<&[Self::Rule]>;
    /// Compiles the concatenated rules of one key.
    fn compile(rules: &[Self::Rule]) -> Result<Self, String>;
    /// How a compile error names the rules of another parser.
    fn foreign(parser: L7Parser) -> String {
        parser.to_string()
    }
    /// This set's entry in a key's compiled rules.
    fn compiled(rules: &CompiledRules) -> Option<&Arc<SidePolicy<Self>>>;
}

impl RuleSet for HttpRuleSet {
    type Rule = HttpRule;
    const PARSER: L7Parser = L7Parser::Http;
    const REDIRECTED_PORT: &'static str = "an HTTP-redirected port";
    fn rules_of(rules: &L7Rules) -> Option<&[HttpRule]> {
        match rules {
            L7Rules::Http(r) => Some(r),
            _ => None,
        }
    }
    fn compile(rules: &[HttpRule]) -> Result<Self, String> {
        HttpRuleSet::compile(rules).map_err(|e| e.to_string())
    }
    fn foreign(parser: L7Parser) -> String {
        protocol_name(parser).to_string()
    }
    fn compiled(rules: &CompiledRules) -> Option<&Arc<SidePolicy<Self>>> {
        match rules {
            CompiledRules::Http(p) => Some(p),
            _ => None,
        }
    }
}

impl RuleSet for DnsRuleSet {
    type Rule = FqdnSelector;
    const PARSER: L7Parser = L7Parser::Dns;
    const REDIRECTED_PORT: &'static str = "a DNS-redirected port";
    fn rules_of(rules: &L7Rules) -> Option<&[FqdnSelector]> {
        match rules {
            L7Rules::Dns(r) => Some(r),
            _ => None,
        }
    }
    fn compile(rules: &[FqdnSelector]) -> Result<Self, String> {
        DnsRuleSet::compile(rules).map_err(|e| e.to_string())
    }
    fn compiled(rules: &CompiledRules) -> Option<&Arc<SidePolicy<Self>>> {
        match rules {
            CompiledRules::Dns(p) => Some(p),
            _ => None,
        }
    }
}

impl RuleSet for KafkaRuleSet {
    type Rule = KafkaRule;
    const PARSER: L7Parser = L7Parser::Kafka;
    const REDIRECTED_PORT: &'static str = "a Kafka-redirected port";
    fn rules_of(rules: &L7Rules) -> Option<&[KafkaRule]> {
        match rules {
            L7Rules::Kafka(r) => Some(r),
            _ => None,
        }
    }
    fn compile(rules: &[KafkaRule]) -> Result<Self, String> {
        KafkaRuleSet::compile(rules).map_err(|e| e.to_string())
    }
    fn compiled(rules: &CompiledRules) -> Option<&Arc<SidePolicy<Self>>> {
        match rules {
            CompiledRules::Kafka(p) => Some(p),
            _ => None,
        }
    }
}

/// The protocol's name in messages.
pub fn protocol_name(parser: L7Parser) -> &'static str {
    match parser {
        L7Parser::Http => "HTTP",
        L7Parser::Dns => "DNS",
        L7Parser::Kafka => "Kafka",
    }
}

/// The compiled L7 rules of one redirected policy key.
#[derive(Debug)]
pub struct SidePolicy<R> {
    /// An L3/L4 allow of the same traffic without L7 rules: every request
    /// passes (the flow is still redirected).
    pub(crate) allow_all: bool,
    /// Every rule list of the key, concatenated into one set (the lists
    /// are OR-ed, so one set judges them at once). `Err` holds why it did
    /// not compile: then nothing is allowed.
    pub(crate) set: Result<R, String>,
    /// For each rule of `set`: the policy and rule path it came from
    /// (`policy spec.egress[0].toPorts[0].rules.http[1]`), formatted once
    /// here rather than for every request.
    pub(crate) origins: Vec<String>,
    /// The audit verdict's rules when audited policies add rules to the
    /// key: a request these deny and the enforced ones allow passes,
    /// reported as AUDIT.
    pub(crate) audit: Option<Arc<SidePolicy<R>>>,
}

impl<R: RuleSet> SidePolicy<R> {
    /// Concatenates and compiles every rule list of `l7`; rules of another
    /// protocol on the key make the set deny everything.
    pub fn compile(l7: &L7Policy) -> SidePolicy<R> {
        let mut rules = Vec::new();
        let mut origins = Vec::new();
        let mut foreign = None;
        for (list, origin, path) in &l7.rules {
            match R::rules_of(list) {
                Some(own) => {
                    for (i, rule) in own.iter().enumerate() {
                        rules.push(rule.clone());
                        origins.push(format!("{origin} {path}.rules.{}[{i}]", R::PARSER));
                    }
                }
                None => {
                    foreign = Some(format!(
                        "{origin} {path} attaches {} rules to {}",
                        R::foreign(list.parser()),
                        R::REDIRECTED_PORT
                    ))
                }
            }
        }
        let set = match foreign {
            Some(why) => Err(why),
            None => R::compile(&rules),
        };
        SidePolicy {
            allow_all: l7.allow_all,
            set,
            origins,
            audit: l7
                .audit
                .as_deref()
                .map(|a| Arc::new(SidePolicy::compile(a))),
        }
    }

    /// Whether the audit verdict judges this key too.
    pub fn audited_rules(&self) -> Option<&SidePolicy<R>> {
        self.audit.as_deref()
    }

    /// Why the rules did not compile, if they did not.
    pub fn compile_error(&self) -> Option<&str> {
        self.set.as_ref().err().map(String::as_str)
    }
}

/// The compiled rules of one redirected key, for the parser it redirects
/// to.
#[derive(Debug, Clone)]
pub enum CompiledRules {
    Http(Arc<SidePolicy<HttpRuleSet>>),
    Dns(Arc<SidePolicy<DnsRuleSet>>),
    Kafka(Arc<SidePolicy<KafkaRuleSet>>),
}

impl CompiledRules {
    /// Compiles `l7` for its parser.
    pub(crate) fn compile(l7: &L7Policy) -> CompiledRules {
        match l7.parser {
            L7Parser::Http => CompiledRules::Http(Arc::new(SidePolicy::compile(l7))),
            L7Parser::Dns => CompiledRules::Dns(Arc::new(SidePolicy::compile(l7))),
            L7Parser::Kafka => CompiledRules::Kafka(Arc::new(SidePolicy::compile(l7))),
        }
    }

    /// Why the rules did not compile, if they did not.
    pub(crate) fn compile_error(&self) -> Option<&str> {
        match self {
            CompiledRules::Http(p) => p.compile_error(),
            CompiledRules::Dns(p) => p.compile_error(),
            CompiledRules::Kafka(p) => p.compile_error(),
        }
    }
}

/// One local side's rules for a flow.
#[derive(Debug)]
pub struct Side<R> {
    /// `namespace/name` of the endpoint whose policy this is.
    pub endpoint: String,
    pub direction: Direction,
    pub(crate) policy: Arc<SidePolicy<R>>,
    /// The endpoint is in audit mode: what this side denies passes,
    /// reported as AUDIT.
    pub audited: bool,
}

impl<R> Side<R> {
    /// This side as denials name it.
    pub fn name(&self) -> SideName {
        SideName {
            endpoint: self.endpoint.clone(),
            direction: self.direction,
        }
    }
}

/// A local side of a flow as a denial names it: `ns1/a ingress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideName {
    /// `namespace/name` of the endpoint.
    pub endpoint: String,
    pub direction: Direction,
}

impl fmt::Display for SideName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.endpoint, self.direction)
    }
}

// Not derived: `R` itself need not be `Clone`.
impl<R> Clone for Side<R> {
    fn clone(&self) -> Self {
        Side {
            endpoint: self.endpoint.clone(),
            direction: self.direction,
            policy: self.policy.clone(),
            audited: self.audited,
        }
    }
}

/// What applies to one redirected TCP connection under one policy
/// snapshot: the identities of its ends and the sides with rules.
#[derive(Debug)]
pub struct FlowRules<R> {
    pub src_identity: NumericIdentity,
    pub dst_identity: NumericIdentity,
    /// The sides with rules (egress of the source, then ingress of the
    /// destination).
    pub sides: Vec<Side<R>>,
    /// Set when the connection gets no rules: every request is denied.
    pub refusal: Option<Refusal>,
    /// What the L3/L4 policy of a local end in audit mode would refuse
    /// (no entry, or a deny): requests the sides allow pass, reported as
    /// AUDIT with this reason.
    pub audit_faults: Vec<Refusal>,
}

impl<R> Clone for FlowRules<R> {
    fn clone(&self) -> Self {
        FlowRules {
            src_identity: self.src_identity,
            dst_identity: self.dst_identity,
            sides: self.sides.clone(),
            refusal: self.refusal.clone(),
            audit_faults: self.audit_faults.clone(),
        }
    }
}

/// Why a flow gets no rules from a proxy (every request on it is denied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The client is not a local endpoint: no egress policy to apply.
    #[error("the client is not a local endpoint")]
    NotLocal,
    /// No side of the flow redirects it to this parser's proxy.
    #[error("no policy redirects this flow to the {} proxy", protocol_name(*.0))]
    NotRedirected(L7Parser),
    /// A local side of the flow cannot account for it.
    #[error("{endpoint} {direction}: {fault}")]
    Side {
        endpoint: String,
        direction: Direction,
        fault: SideFault,
    },
    /// The connection's TLS (or its absence) is not admitted by a side's
    /// `serverNames` / TLS settings.
    #[error("{0}")]
    Tls(String),
}

/// Why one local side has no rules for the proxy the flow reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SideFault {
    /// No map entry for the flow (default deny).
    #[error("no policy entry allows the flow")]
    NoEntry,
    /// The entry denies the flow at L3/L4.
    #[error("the flow is denied at L3/L4")]
    DeniedAtL4,
    /// The entry allows the flow without a redirect, where one side must
    /// redirect it (DNS judges the source's egress only).
    #[error("the flow is allowed without a {} redirect", protocol_name(*.0))]
    NotRedirected(L7Parser),
    /// The entry redirects to another parser's proxy.
    #[error("the port is redirected to the {found} proxy, not {}", protocol_name(*.wanted))]
    OtherParser { found: L7Parser, wanted: L7Parser },
    /// Redirected to this parser, but without a rule set for the key.
    #[error("redirected without {} rules", protocol_name(*.0))]
    MissingRules(L7Parser),
}

impl<R> SidePolicy<R> {
    /// The access-log reason of a request that passes although these
    /// rules would deny it: `{side}: audit: {why}`, then the policy and
    /// rule path of each rule here (`Kind ns/name rule-path`), each once,
    /// all `; `-separated. The agent reads the parts that start with a
    /// policy kind as the policies that would deny.
    pub fn audit_reason(&self, side: &SideName, why: impl fmt::Display) -> String {
        let mut parts = vec![format!("{side}: audit: {why}")];
        for origin in &self.origins {
            if !parts[1..].contains(origin) {
                parts.push(origin.clone());
            }
        }
        parts.join("; ")
    }
}

impl Refusal {
    /// The access-log reason part of an end in audit mode whose L3/L4
    /// entry would refuse the flow (an `audit_faults` entry of
    /// [`FlowRules`]): `{endpoint} {direction}: audit: {fault}`.
    pub fn audit_reason(&self) -> String {
        match self {
            Refusal::Side {
                endpoint,
                direction,
                fault,
            } => format!("{endpoint} {direction}: audit: {fault}"),
            other => format!("audit: {other}"),
        }
    }
}
