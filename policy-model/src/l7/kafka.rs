//! Kafka request matching for `rules.kafka`, with the semantics of Cilium's
//! `pkg/policy/api/kafka` and its Kafka parser's `MatchesRule`.
//!
//! A rule matches a request when its API keys contain the request's (a
//! `role` expands to a fixed set, `apiKey` is one key, neither is any key),
//! its `apiVersion` equals the request's if set, and its `clientID` equals
//! the request's if set. Topics are checked per topic:
//!
//! - a rule without a topic that matches allows the whole request;
//! - a rule with a topic that matches allows that topic, and the request is
//!   allowed once every topic it names is allowed by some rule;
//! - a request that names no topic (ApiVersions, Heartbeat, a Metadata
//!   request for brokers only, an incremental Fetch with no changes) is not
//!   constrained by topics: any rule matching its key/version/client allows
//!   it. This is Cilium's documented rule ("ignored if the matched request
//!   message type doesn't contain any topic") and what its parser does for
//!   the requests it parses.
//!
//! The last point puts one duty on the parser: [`KafkaRequest::topics`] must
//! list every topic the request addresses, by name. A request that
//! addresses topics the parser cannot name (a topic ID it cannot resolve, a
//! version it cannot decode) must be denied by the parser, never passed
//! with an empty list.

use super::error::{L7Protocol, L7RuleError};
use crate::api::KafkaRule;

#[cfg(test)]
mod tests;

/// Longest topic a rule may name (Cilium keeps Kafka's old limit of 255,
/// not 0.10's 249, for compatibility).
pub const MAX_TOPIC_LEN: usize = 255;

/// Every Kafka API key up to Kafka 4.1, by number, with the official name.
/// Lookups by name are case-insensitive; see [`api_key_by_name`] for the
/// older spellings also accepted.
pub const API_KEYS: &[(i16, &str)] = &[
    (0, "Produce"),
    (1, "Fetch"),
    (2, "ListOffsets"),
    (3, "Metadata"),
    (4, "LeaderAndIsr"),
    (5, "StopReplica"),
    (6, "UpdateMetadata"),
    (7, "ControlledShutdown"),
    (8, "OffsetCommit"),
    (9, "OffsetFetch"),
    (10, "FindCoordinator"),
    (11, "JoinGroup"),
    (12, "Heartbeat"),
    (13, "LeaveGroup"),
    (14, "SyncGroup"),
    (15, "DescribeGroups"),
    (16, "ListGroups"),
    (17, "SaslHandshake"),
    (18, "ApiVersions"),
    (19, "CreateTopics"),
    (20, "DeleteTopics"),
    (21, "DeleteRecords"),
    (22, "InitProducerId"),
    (23, "OffsetForLeaderEpoch"),
    (24, "AddPartitionsToTxn"),
    (25, "AddOffsetsToTxn"),
    (26, "EndTxn"),
    (27, "WriteTxnMarkers"),
    (28, "TxnOffsetCommit"),
    (29, "DescribeAcls"),
    (30, "CreateAcls"),
    (31, "DeleteAcls"),
    (32, "DescribeConfigs"),
    (33, "AlterConfigs"),
    (34, "AlterReplicaLogDirs"),
    (35, "DescribeLogDirs"),
    (36, "SaslAuthenticate"),
    (37, "CreatePartitions"),
    (38, "CreateDelegationToken"),
    (39, "RenewDelegationToken"),
    (40, "ExpireDelegationToken"),
    (41, "DescribeDelegationToken"),
    (42, "DeleteGroups"),
    (43, "ElectLeaders"),
    (44, "IncrementalAlterConfigs"),
    (45, "AlterPartitionReassignments"),
    (46, "ListPartitionReassignments"),
    (47, "OffsetDelete"),
    (48, "DescribeClientQuotas"),
    (49, "AlterClientQuotas"),
    (50, "DescribeUserScramCredentials"),
    (51, "AlterUserScramCredentials"),
    (52, "Vote"),
    (53, "BeginQuorumEpoch"),
    (54, "EndQuorumEpoch"),
    (55, "DescribeQuorum"),
    (56, "AlterPartition"),
    (57, "UpdateFeatures"),
    (58, "Envelope"),
    (59, "FetchSnapshot"),
    (60, "DescribeCluster"),
    (61, "DescribeProducers"),
    (62, "BrokerRegistration"),
    (63, "BrokerHeartbeat"),
    (64, "UnregisterBroker"),
    (65, "DescribeTransactions"),
    (66, "ListTransactions"),
    (67, "AllocateProducerIds"),
    (68, "ConsumerGroupHeartbeat"),
    (69, "ConsumerGroupDescribe"),
    (70, "ControllerRegistration"),
    (71, "GetTelemetrySubscriptions"),
    (72, "PushTelemetry"),
    (73, "AssignReplicasToDirs"),
    (74, "ListConfigResources"),
    (75, "DescribeTopicPartitions"),
    (76, "ShareGroupHeartbeat"),
    (77, "ShareGroupDescribe"),
    (78, "ShareFetch"),
    (79, "ShareAcknowledge"),
    (80, "AddRaftVoter"),
    (81, "RemoveRaftVoter"),
    (82, "UpdateRaftVoter"),
    (83, "InitializeShareGroupState"),
    (84, "ReadShareGroupState"),
    (85, "WriteShareGroupState"),
    (86, "DeleteShareGroupState"),
    (87, "ReadShareGroupStateSummary"),
    (88, "StreamsGroupHeartbeat"),
    (89, "StreamsGroupDescribe"),
    (90, "DescribeShareGroupOffsets"),
    (91, "AlterShareGroupOffsets"),
    (92, "DeleteShareGroupOffsets"),
];

/// Older names of keys that were renamed, still accepted in rules.
/// `offsets` is the name Cilium's own table uses for key 2.
const API_KEY_ALIASES: &[(&str, i16)] = &[
    ("offsets", 2),
    ("electpreferredleaders", 43),
    ("alterisr", 56),
    ("listclientmetricsresources", 74),
];

const PRODUCE: i16 = 0;
const FETCH: i16 = 1;
const LIST_OFFSETS: i16 = 2;
const METADATA: i16 = 3;
const OFFSET_COMMIT: i16 = 8;
const OFFSET_FETCH: i16 = 9;
const FIND_COORDINATOR: i16 = 10;
const JOIN_GROUP: i16 = 11;
const HEARTBEAT: i16 = 12;
const LEAVE_GROUP: i16 = 13;
const SYNC_GROUP: i16 = 14;
const API_VERSIONS: i16 = 18;

/// The keys `role: produce` expands to (Cilium's `GetAPIKeys`).
pub const PRODUCE_ROLE_KEYS: &[i16] = &[PRODUCE, METADATA, API_VERSIONS];

/// The keys `role: consume` expands to (Cilium's `GetAPIKeys`).
pub const CONSUME_ROLE_KEYS: &[i16] = &[
    FETCH,
    LIST_OFFSETS,
    METADATA,
    OFFSET_COMMIT,
    OFFSET_FETCH,
    FIND_COORDINATOR,
    JOIN_GROUP,
    HEARTBEAT,
    LEAVE_GROUP,
    SYNC_GROUP,
    API_VERSIONS,
];

/// The official name of API key `key`, if Kafka defines it.
pub fn api_key_name(key: i16) -> Option<&'static str> {
    let index = usize::try_from(key).ok()?;
    // The table is dense from 0; the assertion in the tests keeps it so.
    API_KEYS.get(index).map(|&(_, name)| name)
}

/// The number of the API key called `name`, case-insensitively: the
/// official name (`ListOffsets`, `listoffsets`) or an older spelling
/// (`offsets`, `ElectPreferredLeaders`, `AlterIsr`,
/// `ListClientMetricsResources`).
pub fn api_key_by_name(name: &str) -> Option<i16> {
    API_KEYS
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(name))
        .map(|&(key, _)| key)
        .or_else(|| {
            API_KEY_ALIASES
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|&(_, key)| key)
        })
}

/// One Kafka request as the policy sees it, borrowed from the parsed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaRequest<'a> {
    pub api_key: i16,
    pub api_version: i16,
    /// The header's client ID; `None` when null.
    pub client_id: Option<&'a str>,
    /// Every topic the request addresses, by name (repeats allowed). Empty
    /// only when the request addresses no topic; see the module docs.
    pub topics: &'a [&'a str],
}

/// The outcome of [`KafkaRuleSet::judge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaVerdict<'a> {
    /// Allowed. `rule` is the rule that allowed the whole request, or, when
    /// topics were allowed one by one, the rule that allowed the last of
    /// them.
    Allowed { rule: usize },
    /// Denied. `topic` is the first topic of the request no rule allowed,
    /// when some rule with a topic matched the request's key, version and
    /// client ID; `None` when the denial is not about topics (no rule
    /// matched key, version and client ID).
    Denied { topic: Option<&'a str> },
}

impl KafkaVerdict<'_> {
    /// Whether the request may be forwarded.
    pub fn is_allowed(&self) -> bool {
        matches!(self, KafkaVerdict::Allowed { .. })
    }
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CompiledKafkaRule {
    /// `None` = every key.
    api_keys: Option<Vec<i16>>,
    api_version: Option<i16>,
    client_id: Option<String>,
    topic: Option<String>,
}

impl CompiledKafkaRule {
    /// Key, version and client ID: everything but the topic.
    fn matches_request(&self, req: &KafkaRequest<'_>) -> bool {
        self.api_keys
            .as_ref()
            .is_none_or(|keys| keys.contains(&req.api_key))
            && self.api_version.is_none_or(|v| v == req.api_version)
            && self
                .client_id
                .as_deref()
                .is_none_or(|id| req.client_id == Some(id))
    }
}

/// The compiled `rules.kafka` list of one port. Rules are OR-ed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRuleSet {
    rules: Vec<CompiledKafkaRule>,
}

impl KafkaRuleSet {
    /// Validates and compiles every rule (Cilium's `Sanitize`): `role` and
    /// `apiKey` exclude each other and must be known; `apiVersion` is a
    /// number from 0 to 32767; a topic has at most 255 characters from
    /// `[a-zA-Z0-9._-]`. Empty strings count as unset, as in Cilium.
    pub fn compile(rules: &[KafkaRule]) -> Result<KafkaRuleSet, L7RuleError> {
        let compiled = rules
            .iter()
            .enumerate()
            .map(|(index, rule)| compile_rule(index, rule))
            .collect::<Result<_, _>>()?;
        Ok(KafkaRuleSet { rules: compiled })
    }

    /// Judges one request (Cilium's `MatchesRule`). An empty rule set
    /// denies everything: Cilium never redirects a port without Kafka
    /// rules to its Kafka parser.
    pub fn judge<'a>(&self, req: &KafkaRequest<'a>) -> KafkaVerdict<'a> {
        // Topics not yet allowed; allocated only when a topic rule matches.
        let mut pending: Option<Vec<bool>> = None;
        let mut remaining = req.topics.len();
        // Whether some topic rule matched key, version and client ID, so
        // that a denial is about a topic.
        let mut topic_rule_applied = false;
        for (index, rule) in self.rules.iter().enumerate() {
            match rule.topic.as_deref() {
                Some(topic) if !req.topics.is_empty() => {
                    if !rule.matches_request(req) {
                        continue;
                    }
                    topic_rule_applied = true;
                    if !req.topics.contains(&topic) {
                        continue;
                    }
                    let pending = pending.get_or_insert_with(|| vec![true; req.topics.len()]);
                    for (slot, t) in pending.iter_mut().zip(req.topics) {
                        if *slot && *t == topic {
                            *slot = false;
                            remaining -= 1;
                        }
                    }
                    if remaining == 0 {
                        return KafkaVerdict::Allowed { rule: index };
                    }
                }
                _ => {
                    if rule.matches_request(req) {
                        return KafkaVerdict::Allowed { rule: index };
                    }
                }
            }
        }
        if !topic_rule_applied {
            return KafkaVerdict::Denied { topic: None };
        }
        let topic = match &pending {
            Some(pending) => req
                .topics
                .iter()
                .zip(pending)
                .find(|(_, p)| **p)
                .map(|(t, _)| *t),
            None => req.topics.first().copied(),
        };
        KafkaVerdict::Denied { topic }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules (then nothing is allowed).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|s| !s.is_empty())
}

fn compile_rule(index: usize, rule: &KafkaRule) -> Result<CompiledKafkaRule, L7RuleError> {
    let invalid = |field: &str, value: &str, reason: &str| L7RuleError::InvalidValue {
        protocol: L7Protocol::Kafka,
        rule: index,
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let role = non_empty(&rule.role);
    let api_key = non_empty(&rule.api_key);
    let api_keys = match (role, api_key) {
        (Some(_), Some(_)) => {
            return Err(L7RuleError::ConflictingFields {
                protocol: L7Protocol::Kafka,
                rule: index,
                first: "role",
                second: "apiKey",
                hint: "a role already expands to its API keys; use separate rules",
            });
        }
        (Some(role), None) => {
            if role.eq_ignore_ascii_case("produce") {
                Some(PRODUCE_ROLE_KEYS.to_vec())
            } else if role.eq_ignore_ascii_case("consume") {
                Some(CONSUME_ROLE_KEYS.to_vec())
            } else {
                return Err(invalid(
                    "role",
                    role,
                    "is not a Kafka role; use \"produce\" or \"consume\"",
                ));
            }
        }
        (None, Some(name)) => match api_key_by_name(name) {
            Some(key) => Some(vec![key]),
            None => {
                return Err(invalid(
                    "apiKey",
                    name,
                    "is not a Kafka API key name (e.g. \"produce\", \"fetch\", \"metadata\", \
                     \"listoffsets\"; see https://kafka.apache.org/protocol#protocol_api_keys)",
                ));
            }
        },
        (None, None) => None,
    };
    let api_version = match non_empty(&rule.api_version) {
        None => None,
        Some(text) => match text.parse::<i16>() {
            Ok(v) if v >= 0 => Some(v),
            _ => {
                return Err(invalid(
                    "apiVersion",
                    text,
                    "is not a version number (an integer from 0 to 32767)",
                ));
            }
        },
    };
    let topic = match non_empty(&rule.topic) {
        None => None,
        Some(topic) => {
            if topic.len() > MAX_TOPIC_LEN {
                return Err(invalid("topic", topic, "is longer than 255 characters"));
            }
            if !topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return Err(invalid(
                    "topic",
                    topic,
                    "has characters other than a-z, A-Z, 0-9, '.', '_' and '-'",
                ));
            }
            Some(topic.to_string())
        }
    };
    Ok(CompiledKafkaRule {
        api_keys,
        api_version,
        client_id: non_empty(&rule.client_id).map(str::to_string),
        topic,
    })
}
