//! Which Kafka rules apply to a redirected connection, and the verdict on
//! one request (pure). The lookups are the kernel's own
//! (`MapState::lookup`, see [`ProxyPolicy::kafka_rules`]); each side that
//! redirects to Kafka contributes its compiled rule set and a request
//! passes only when every such side allows it.

use std::fmt;
use std::sync::Arc;

use policy_model::l7::{KafkaRequest, KafkaRuleSet, KafkaVerdict};
use policy_model::resolve::L7Policy;
use policy_model::rules::{L7Rules, PolicyRef};
use policy_model::{Direction, L7Parser, NumericIdentity};

use kafka_protocol::messages::ApiKey;

use super::parse::{KafkaFrame, Topics};

#[cfg(doc)]
use crate::policy::ProxyPolicy;

/// The compiled Kafka rules of one redirected policy key.
#[derive(Debug)]
pub struct KafkaSidePolicy {
    /// An L3/L4 allow without L7 rules covers the same traffic.
    allow_all: bool,
    /// Every `rules.kafka` list of the key as one set; `Err` holds why it
    /// did not compile (then nothing is allowed).
    set: Result<KafkaRuleSet, String>,
    /// For each rule of `set`: the policy and rule path it came from.
    origins: Vec<(Arc<PolicyRef>, String)>,
}

impl KafkaSidePolicy {
    /// Concatenates and compiles every `rules.kafka` list of `l7`; rules of
    /// another protocol on the key make the set deny everything.
    pub fn compile(l7: &L7Policy) -> KafkaSidePolicy {
        let mut rules = Vec::new();
        let mut origins = Vec::new();
        let mut foreign = None;
        for (list, origin, path) in &l7.rules {
            match list.as_ref() {
                L7Rules::Kafka(kafka) => {
                    for (i, rule) in kafka.iter().enumerate() {
                        rules.push(rule.clone());
                        origins.push((origin.clone(), format!("{path}.rules.kafka[{i}]")));
                    }
                }
                other => {
                    foreign = Some(format!(
                        "{origin} {path} attaches {} rules to a Kafka-redirected port",
                        other.parser()
                    ))
                }
            }
        }
        let set = match foreign {
            Some(why) => Err(why),
            None => KafkaRuleSet::compile(&rules).map_err(|e| e.to_string()),
        };
        KafkaSidePolicy {
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

/// One side's Kafka rules for a connection.
#[derive(Debug, Clone)]
pub struct KafkaSide {
    /// `namespace/name` of the endpoint whose policy this is.
    pub endpoint: String,
    pub direction: Direction,
    pub(crate) rules: Arc<KafkaSidePolicy>,
}

/// Why a connection gets no Kafka rules (every request is denied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaRefusal {
    /// No side of the flow redirects it to the Kafka proxy.
    NotRedirected,
    /// A local side has no map entry for the flow.
    NoEntry {
        endpoint: String,
        direction: Direction,
    },
    /// A local side denies the flow at L3/L4.
    DeniedAtL4 {
        endpoint: String,
        direction: Direction,
    },
    /// A side redirects the flow to another parser's proxy.
    OtherParser {
        endpoint: String,
        direction: Direction,
        parser: L7Parser,
    },
    /// A side redirects to Kafka but has no rule set for the key.
    MissingRules {
        endpoint: String,
        direction: Direction,
    },
}

impl fmt::Display for KafkaRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KafkaRefusal::NotRedirected => {
                f.write_str("no policy redirects this flow to the Kafka proxy")
            }
            KafkaRefusal::NoEntry {
                endpoint,
                direction,
            } => write!(f, "{endpoint} {direction}: no policy entry allows the flow"),
            KafkaRefusal::DeniedAtL4 {
                endpoint,
                direction,
            } => write!(f, "{endpoint} {direction}: the flow is denied at L3/L4"),
            KafkaRefusal::OtherParser {
                endpoint,
                direction,
                parser,
            } => write!(
                f,
                "{endpoint} {direction}: the port is redirected to the {parser} proxy, not Kafka"
            ),
            KafkaRefusal::MissingRules {
                endpoint,
                direction,
            } => write!(f, "{endpoint} {direction}: redirected without Kafka rules"),
        }
    }
}

/// What applies to one redirected connection under one policy snapshot.
#[derive(Debug, Clone)]
pub struct KafkaRules {
    pub src_identity: NumericIdentity,
    pub dst_identity: NumericIdentity,
    /// Sides with Kafka rules (egress of the source, then ingress of the
    /// destination).
    pub sides: Vec<KafkaSide>,
    /// Set when the connection gets no rules.
    pub refusal: Option<KafkaRefusal>,
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaJudgement {
    /// Forward. `rules`: which rule of each side allowed it.
    Allowed { rules: Vec<String> },
    /// Answer with the API's authorization error; `reason` is for the log.
    Denied { reason: String },
}

impl KafkaJudgement {
    /// Whether the request may be forwarded.
    pub fn is_allowed(&self) -> bool {
        matches!(self, KafkaJudgement::Allowed { .. })
    }
}

impl KafkaRules {
    /// Judges one parsed request: its topics must all be named, and every
    /// side must allow it.
    pub fn judge(&self, frame: &KafkaFrame) -> KafkaJudgement {
        let denied = |reason: String| KafkaJudgement::Denied { reason };
        if let Some(refusal) = &self.refusal {
            return denied(refusal.to_string());
        }
        if self.sides.is_empty() {
            return denied(KafkaRefusal::NotRedirected.to_string());
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
                Err(why) => return denied(why.to_string()),
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
        let denied = |reason: String| KafkaJudgement::Denied { reason };
        if let Some(refusal) = &self.refusal {
            return denied(refusal.to_string());
        }
        if self.sides.is_empty() {
            return denied(KafkaRefusal::NotRedirected.to_string());
        }
        let req = KafkaRequest {
            api_key: frame.api_key as i16,
            api_version: frame.api_version,
            client_id: frame.client_id.as_deref(),
            topics,
        };
        let mut rules = Vec::new();
        for side in &self.sides {
            if side.rules.allow_all {
                rules.push(format!("{} {}: allow-all", side.endpoint, side.direction));
                continue;
            }
            let set = match &side.rules.set {
                Ok(set) => set,
                Err(why) => {
                    return denied(format!(
                        "{} {}: rules do not compile: {why}",
                        side.endpoint, side.direction
                    ));
                }
            };
            match set.judge(&req) {
                KafkaVerdict::Allowed { rule } => {
                    let (origin, path) = &side.rules.origins[rule];
                    rules.push(format!("{origin} {path}"));
                }
                KafkaVerdict::Denied { topic } => {
                    return denied(match topic {
                        Some(t) => format!(
                            "{} {}: no Kafka rule allows topic {t}",
                            side.endpoint, side.direction
                        ),
                        None => format!(
                            "{} {}: no Kafka rule matches the request",
                            side.endpoint, side.direction
                        ),
                    });
                }
            }
        }
        KafkaJudgement::Allowed { rules }
    }
}
