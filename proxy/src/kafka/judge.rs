//! Which Kafka rules apply to a redirected connection, and the verdict on
//! one request (pure). The lookups are the kernel's own
//! (`MapState::lookup`, see [`ProxyPolicy::kafka_rules`]); each side that
//! redirects to Kafka contributes its compiled rule set and a request
//! passes only when every such side allows it.

use std::net::SocketAddr;

use policy_model::L7Parser;
use policy_model::l7::{KafkaRequest, KafkaRuleSet, KafkaVerdict};

use kafka_protocol::messages::ApiKey;

use super::metrics::KafkaVerdictLabel;
use super::parse::{KafkaFrame, Topics, Unnamed};
use crate::policy::{FlowRules, ProxyPolicy, Refusal, Side, SideName};

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
    /// Whether the request may be forwarded.
    pub fn is_allowed(&self) -> bool {
        matches!(self, KafkaJudgement::Allowed { .. })
    }
}

impl FlowRules<KafkaRuleSet> {
    /// Judges one parsed request: its topics must all be named, and every
    /// side must allow it.
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
    /// would be allowed.
    pub fn allows_listing(&self, frame: &KafkaFrame, topic: &str) -> bool {
        self.judge_topics(frame, &[topic]).is_allowed()
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
        for side in &self.sides {
            if side.policy.allow_all {
                rules.push(format!("{} {}: allow-all", side.endpoint, side.direction));
                continue;
            }
            let set = match &side.policy.set {
                Ok(set) => set,
                Err(why) => {
                    return denied(KafkaDenial::Uncompiled {
                        side: side.name(),
                        why: why.clone(),
                    });
                }
            };
            match set.judge(&req) {
                KafkaVerdict::Allowed { rule } => {
                    rules.push(side.policy.origins[rule].clone());
                }
                KafkaVerdict::Denied { topic } => {
                    return denied(match topic {
                        Some(t) => KafkaDenial::TopicNotAllowed {
                            side: side.name(),
                            topic: t.to_string(),
                        },
                        None => KafkaDenial::NoRuleMatched { side: side.name() },
                    });
                }
            }
        }
        KafkaJudgement::Allowed { rules }
    }
}
