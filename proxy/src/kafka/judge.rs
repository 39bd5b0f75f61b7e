//! Which Kafka rules apply to a redirected connection, and the verdict on
//! one request (pure). The lookups are the kernel's own
//! (`MapState::lookup`, see [`ProxyPolicy::kafka_rules`]); each side that
//! redirects to Kafka contributes its compiled rule set and a request
//! passes only when every such side allows it, or passes as AUDIT where
//! only audit mode would deny it (an end in audit mode, or an audited
//! policy's rules).

use std::net::SocketAddr;

use policy_model::L7Parser;
use policy_model::l7::{KafkaRequest, KafkaRuleSet, KafkaVerdict};

use kafka_protocol::messages::ApiKey;

use super::metrics::KafkaVerdictLabel;
use super::parse::{KafkaFrame, Topics, Unnamed};
use crate::policy::{FlowRules, ProxyPolicy, Refusal, Side, SideName, SidePolicy};

#[cfg(test)]
mod tests;

/// One side's Kafka rules for a connection.
pub type KafkaSide = Side<KafkaRuleSet>;

/// What applies to one redirected Kafka connection under one snapshot.
pub type KafkaRules = FlowRules<KafkaRuleSet>;

impl ProxyPolicy {
    /// The Kafka rules that apply to a redirected TCP connection from `src`
    /// to `orig_dst`: the source endpoint's egress side (when the source is
    /// local) and the destination endpoint's ingress side (when it is
    /// local), each found with the kernel's lookup. Fails closed as
    /// [`http_rules`](ProxyPolicy::http_rules) does.
    pub fn kafka_rules(&self, src: SocketAddr, orig_dst: SocketAddr) -> KafkaRules {
        self.flow_rules(src, orig_dst)
    }
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaJudgement {
    /// Forward. `rules`: which rule of each side allowed it.
    Allowed { rules: Vec<String> },
    /// Forward, although a policy would deny it: a side of an endpoint in
    /// audit mode denies it (its rules or its L3/L4 entry), or a side's
    /// audit verdict (audited policies' rules too) does. `reason` names
    /// each such side and the policies that would deny, `; `-separated.
    Audit { reason: String },
    /// Answer with the API's authorization error.
    Denied(KafkaDenial),
}

/// Why a request is denied. Its text is the access log's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KafkaDenial {
    /// The flow gets no Kafka rules.
    #[error("{0}")]
    Refusal(#[from] Refusal),
    /// The request's topics cannot all be named.
    #[error("{0}")]
    Unnamed(Unnamed),
    /// A side's rules did not compile: that side allows nothing.
    #[error("{side}: rules do not compile: {why}")]
    Uncompiled { side: SideName, why: String },
    /// A side has rules for the request's API, but none for this topic.
    #[error("{side}: no Kafka rule allows topic {topic}")]
    TopicNotAllowed { side: SideName, topic: String },
    /// No rule of a side matches the request's API key, version and
    /// client ID.
    #[error("{side}: no Kafka rule matches the request")]
    NoRuleMatched { side: SideName },
}

impl KafkaDenial {
    /// The metrics verdict and the access-log reason of this denial: the
    /// one place both are derived from it. A denial the proxy cannot
    /// encode closes the connection instead (`Invalid`, in `conn.rs`).
    pub fn logged(&self) -> (KafkaVerdictLabel, String) {
        (KafkaVerdictLabel::Denied, self.to_string())
    }
}

impl KafkaJudgement {
    /// Whether the request is allowed (and not only passing as AUDIT).
    pub fn is_allowed(&self) -> bool {
        matches!(self, KafkaJudgement::Allowed { .. })
    }

    /// Whether the request is forwarded: allowed, or passing as AUDIT.
    pub fn forwards(&self) -> bool {
        matches!(
            self,
            KafkaJudgement::Allowed { .. } | KafkaJudgement::Audit { .. }
        )
    }

    /// The metrics verdict and the access-log reason (which rule of each
    /// side allowed it, which policies would deny it, or why it was
    /// denied): the one place both are derived.
    pub fn logged(&self) -> (KafkaVerdictLabel, String) {
        match self {
            KafkaJudgement::Allowed { rules } => (KafkaVerdictLabel::Allowed, rules.join("; ")),
            KafkaJudgement::Audit { reason } => (KafkaVerdictLabel::Audit, reason.clone()),
            KafkaJudgement::Denied(denial) => denial.logged(),
        }
    }
}

/// Why one side's rule set denies a request.
enum SideDenial<'r> {
    /// The rules did not compile: they allow nothing.
    Uncompiled(&'r str),
    /// The rules have this API but not this topic.
    TopicNotAllowed(String),
    /// No rule matches the API key, version and client ID.
    NoRuleMatched,
}

impl SideDenial<'_> {
    /// The denial of the enforced rules of `side`.
    fn denial(self, side: SideName) -> KafkaDenial {
        match self {
            SideDenial::Uncompiled(why) => KafkaDenial::Uncompiled {
                side,
                why: why.to_string(),
            },
            SideDenial::TopicNotAllowed(topic) => KafkaDenial::TopicNotAllowed { side, topic },
            SideDenial::NoRuleMatched => KafkaDenial::NoRuleMatched { side },
        }
    }

    /// What an AUDIT reason says of it; `whose`: ` of the audited
    /// policies` for the audit verdict's rules, empty for the enforced.
    fn audit_why(&self, whose: &str) -> String {
        match self {
            SideDenial::Uncompiled(why) => format!("rules{whose} do not compile: {why}"),
            SideDenial::TopicNotAllowed(topic) => {
                format!("no Kafka rule{whose} allows topic {topic}")
            }
            SideDenial::NoRuleMatched => format!("no Kafka rule{whose} matches the request"),
        }
    }
}

/// Judges `req` by one side's rule set: the origin of the rule that
/// allowed it (`None` under `allow_all`), or why it is denied.
fn judge_side<'r>(
    policy: &'r SidePolicy<KafkaRuleSet>,
    req: &KafkaRequest<'_>,
) -> Result<Option<&'r str>, SideDenial<'r>> {
    if policy.allow_all {
        return Ok(None);
    }
    let set = policy
        .set
        .as_ref()
        .map_err(|why| SideDenial::Uncompiled(why))?;
    match set.judge(req) {
        KafkaVerdict::Allowed { rule } => Ok(Some(&policy.origins[rule])),
        KafkaVerdict::Denied { topic: Some(t) } => Err(SideDenial::TopicNotAllowed(t.to_string())),
        KafkaVerdict::Denied { topic: None } => Err(SideDenial::NoRuleMatched),
    }
}

impl FlowRules<KafkaRuleSet> {
    /// Judges one parsed request: its topics must all be named, and every
    /// side must allow it, or be of an endpoint in audit mode (AUDIT). A
    /// request every side allows passes as AUDIT when a side's audit
    /// verdict denies it or an end in audit mode has an `audit_faults`
    /// entry. A refusal is a denial, audit mode or not.
    pub fn judge(&self, frame: &KafkaFrame) -> KafkaJudgement {
        let denied = |denial: KafkaDenial| KafkaJudgement::Denied(denial);
        if let Some(refusal) = &self.refusal {
            return denied(refusal.clone().into());
        }
        if self.sides.is_empty() {
            return denied(Refusal::NotRedirected(L7Parser::Kafka).into());
        }
        // A Metadata request for every topic names none, as in Cilium: any
        // rule whose API keys include Metadata allows it, and the proxy
        // removes the topics the rules do not allow from the response
        // (`filter_metadata_response`), so no topic leaks by this route.
        let topics = if frame.api_key == ApiKey::Metadata && frame.topics == Topics::All {
            Vec::new()
        } else {
            match frame.topics.names() {
                Ok(t) => t,
                Err(why) => return denied(KafkaDenial::Unnamed(why)),
            }
        };
        self.judge_topics(frame, &topics)
    }

    /// Whether `topic` may be listed in the response to `frame`, a Metadata
    /// request for every topic: a Metadata request naming only that topic
    /// would be forwarded (allowed, or passing as AUDIT: audit mode hides
    /// nothing it would pass).
    pub fn allows_listing(&self, frame: &KafkaFrame, topic: &str) -> bool {
        self.judge_topics(frame, &[topic]).forwards()
    }

    fn judge_topics(&self, frame: &KafkaFrame, topics: &[&str]) -> KafkaJudgement {
        let denied = |denial: KafkaDenial| KafkaJudgement::Denied(denial);
        if let Some(refusal) = &self.refusal {
            return denied(refusal.clone().into());
        }
        if self.sides.is_empty() {
            return denied(Refusal::NotRedirected(L7Parser::Kafka).into());
        }
        let req = KafkaRequest {
            api_key: frame.api_key as i16,
            api_version: frame.api_version,
            client_id: frame.client_id.as_deref(),
            topics,
        };
        let mut rules = Vec::new();
        // An end in audit mode whose L3/L4 entry would refuse the flow.
        let mut audit: Vec<String> = self
            .audit_faults
            .iter()
            .map(Refusal::audit_reason)
            .collect();
        for side in &self.sides {
            match judge_side(&side.policy, &req) {
                Ok(rule) => {
                    rules.push(match rule {
                        Some(origin) => origin.to_string(),
                        None => format!("{}: allow-all", side.name()),
                    });
                    if let Some(audited) = side.policy.audited_rules()
                        && let Err(why) = judge_side(audited, &req)
                    {
                        let why = why.audit_why(" of the audited policies");
                        audit.push(audited.audit_reason(&side.name(), why));
                    }
                }
                Err(why) if side.audited => {
                    audit.push(side.policy.audit_reason(&side.name(), why.audit_why("")));
                }
                Err(why) => return denied(why.denial(side.name())),
            }
        }
        if audit.is_empty() {
            KafkaJudgement::Allowed { rules }
        } else {
            KafkaJudgement::Audit {
                reason: audit.join("; "),
            }
        }
    }
}
