//! The Kubernetes shapes both policy families share: object metadata,
//! label selectors and `IntOrString`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The subset of Kubernetes `ObjectMeta` policy evaluation needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations; `policy.cilium.io/audit-mode: "true"` puts a policy
    /// into audit mode.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The annotation that puts a policy (or, on a Namespace, every policy of
/// its pods) into audit mode, as Cilium users already write it.
pub const AUDIT_MODE_ANNOTATION: &str = "policy.cilium.io/audit-mode";

impl ObjectMeta {
    /// Whether the object is annotated `policy.cilium.io/audit-mode: "true"`.
    pub fn audit_mode(&self) -> bool {
        audit_mode(&self.annotations)
    }
}

/// Whether `annotations` hold `policy.cilium.io/audit-mode: "true"`.
pub fn audit_mode(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .get(AUDIT_MODE_ANNOTATION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// A Kubernetes label selector (also Cilium's `EndpointSelector` and
/// `NodeSelector`, which have the same shape).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// `matchExpressions` operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// Kubernetes `IntOrString` (ports, ICMP types).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl std::fmt::Display for IntOrString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}
