//! `cilium.io/v2` `CiliumNetworkPolicy` and `CiliumClusterwideNetworkPolicy`.

use super::meta::{IntOrString, LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

/// A `CiliumNetworkPolicy` or `CiliumClusterwideNetworkPolicy`: one `spec`,
/// a list of `specs`, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumPolicy {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<Rule>,
    #[serde(default)]
    pub specs: Option<Vec<Rule>>,
}

/// One Cilium policy rule (`spec` or an entry of `specs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub endpoint_selector: Option<LabelSelector>,
    #[serde(default)]
    pub node_selector: Option<LabelSelector>,
    #[serde(default)]
    pub ingress: Option<Vec<IngressRule>>,
    #[serde(default)]
    pub ingress_deny: Option<Vec<IngressRule>>,
    #[serde(default)]
    pub egress: Option<Vec<EgressRule>>,
    #[serde(default)]
    pub egress_deny: Option<Vec<EgressRule>>,
    #[serde(default)]
    pub enable_default_deny: Option<DefaultDenyConfig>,
    #[serde(default)]
    pub labels: Vec<RuleLabel>,
    #[serde(default)]
    pub description: Option<String>,
    /// `log.value`: a text carried into the flows this rule decides
    /// (Hubble's `policy_log`).
    #[serde(default)]
    pub log: Option<LogConfig>,
}

/// `spec.log`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub value: String,
}

/// `enableDefaultDeny`: unset fields default to true when the rule has
/// rules in that direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultDenyConfig {
    #[serde(default)]
    pub ingress: Option<bool>,
    #[serde(default)]
    pub egress: Option<bool>,
}

/// A label attached to a rule (`spec.labels`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleLabel {
    pub key: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub source: String,
}

/// An `ingress` or `ingressDeny` entry. Deny entries use the same shape;
/// validation rejects L7 rules inside them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    #[serde(default)]
    pub from_endpoints: Option<Vec<LabelSelector>>,
    #[serde(default)]
    pub from_requires: Option<Vec<LabelSelector>>,
    #[serde(default, rename = "fromCIDR")]
    pub from_cidr: Option<Vec<String>>,
    #[serde(default, rename = "fromCIDRSet")]
    pub from_cidr_set: Option<Vec<CidrRule>>,
    #[serde(default)]
    pub from_entities: Option<Vec<String>>,
    #[serde(default)]
    pub from_groups: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub from_nodes: Option<Vec<LabelSelector>>,
    #[serde(default)]
    pub to_ports: Option<Vec<PortRule>>,
    #[serde(default)]
    pub icmps: Option<Vec<IcmpRule>>,
    #[serde(default)]
    pub authentication: Option<Authentication>,
}

/// An `egress` or `egressDeny` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    #[serde(default)]
    pub to_endpoints: Option<Vec<LabelSelector>>,
    #[serde(default)]
    pub to_requires: Option<Vec<LabelSelector>>,
    #[serde(default, rename = "toCIDR")]
    pub to_cidr: Option<Vec<String>>,
    #[serde(default, rename = "toCIDRSet")]
    pub to_cidr_set: Option<Vec<CidrRule>>,
    #[serde(default)]
    pub to_entities: Option<Vec<String>>,
    #[serde(default)]
    pub to_services: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub to_groups: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub to_nodes: Option<Vec<LabelSelector>>,
    #[serde(default, rename = "toFQDNs")]
    pub to_fqdns: Option<Vec<FqdnSelector>>,
    #[serde(default)]
    pub to_ports: Option<Vec<PortRule>>,
    #[serde(default)]
    pub icmps: Option<Vec<IcmpRule>>,
    #[serde(default)]
    pub authentication: Option<Authentication>,
}

/// `authentication` (mutual auth). portcullis does not authenticate: an
/// allow that requires it admits nothing, as Cilium drops unauthenticated
/// traffic; the loader warns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authentication {
    pub mode: String,
}

/// A `CiliumCIDRGroup` (`cilium.io/v2`, cluster-scoped): CIDRs that CIDR
/// set entries name with `cidrGroupRef` or `cidrGroupSelector`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumCidrGroup {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: CidrGroupSpec,
}

/// The `spec` of a `CiliumCIDRGroup`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CidrGroupSpec {
    #[serde(rename = "externalCIDRs")]
    pub external_cidrs: Vec<String>,
}

/// `fromCIDRSet` / `toCIDRSet` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CidrRule {
    #[serde(default)]
    pub cidr: Option<String>,
    #[serde(default)]
    pub cidr_group_ref: Option<String>,
    #[serde(default)]
    pub cidr_group_selector: Option<LabelSelector>,
    #[serde(default)]
    pub except: Vec<String>,
}

/// `toFQDNs` entry (and the shape of a DNS L7 rule).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FqdnSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_pattern: Option<String>,
}

/// `toPorts` entry: ports plus optional L7 rules and TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortRule {
    #[serde(default)]
    pub ports: Vec<PortProtocol>,
    #[serde(default)]
    pub rules: Option<L7Rules>,
    #[serde(default)]
    pub server_names: Option<Vec<String>>,
    #[serde(default, rename = "terminatingTLS")]
    pub terminating_tls: Option<TlsContext>,
    #[serde(default, rename = "originatingTLS")]
    pub originating_tls: Option<TlsContext>,
    #[serde(default)]
    pub listener: Option<serde_json::Value>,
}

/// `ports` entry of a `toPorts` rule. `port` is a string: a number, a
/// named port, or empty/"0" for all ports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortProtocol {
    #[serde(default)]
    pub port: Option<IntOrString>,
    #[serde(default)]
    pub end_port: Option<i64>,
    #[serde(default)]
    pub protocol: Option<String>,
}

/// `terminatingTLS` / `originatingTLS`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsContext {
    #[serde(default)]
    pub secret: Option<SecretRef>,
    #[serde(default, rename = "trustedCA")]
    pub trusted_ca: Option<String>,
    #[serde(default)]
    pub certificate: Option<String>,
    #[serde(default)]
    pub private_key: Option<String>,
}

/// A reference to a Kubernetes Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
}

/// `rules`: at most one protocol's rules per port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L7Rules {
    #[serde(default)]
    pub http: Option<Vec<HttpRule>>,
    #[serde(default)]
    pub kafka: Option<Vec<KafkaRule>>,
    #[serde(default)]
    pub dns: Option<Vec<FqdnSelector>>,
    #[serde(default)]
    pub l7proto: Option<String>,
    #[serde(default)]
    pub l7: Option<Vec<serde_json::Value>>,
}

/// One HTTP rule. Every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header_matches: Vec<HeaderMatch>,
}

/// `headerMatches` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<MismatchAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
}

/// What to do when a `headerMatches` entry does not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MismatchAction {
    Log,
    Add,
    Delete,
    Replace,
}

/// One Kafka rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, rename = "clientID", skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

/// `icmps` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IcmpRule {
    #[serde(default)]
    pub fields: Vec<IcmpField>,
}

/// One ICMP type; family defaults to IPv4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IcmpField {
    #[serde(default)]
    pub family: Option<String>,
    #[serde(rename = "type")]
    pub icmp_type: IntOrString,
}
