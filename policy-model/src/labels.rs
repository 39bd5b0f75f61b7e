//! Labels with a source (Cilium's `source:key=value`) and compiled label
//! selectors.

use crate::api::{LabelSelector, SelectorOperator};
use std::collections::BTreeMap;
use std::fmt;

/// Label source of Kubernetes labels (`k8s:app=web`).
pub const SOURCE_K8S: &str = "k8s";
/// Label source of Cilium's reserved labels (`reserved:host`).
pub const SOURCE_RESERVED: &str = "reserved";
/// Label source that matches any source in a selector.
pub const SOURCE_ANY: &str = "any";
/// Label source of CIDR-derived identities (`cidr:10.0.0.0/8`).
pub const SOURCE_CIDR: &str = "cidr";
/// Label source of FQDN-derived identities (`fqdn:*.example.com`).
pub const SOURCE_FQDN: &str = "fqdn";

/// The pod label holding the pod's namespace.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Prefix under which a pod carries its namespace's labels.
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
/// The pod label holding its service account.
pub const SERVICE_ACCOUNT_LABEL: &str = "io.cilium.k8s.policy.serviceaccount";
/// The pod label holding its cluster name.
pub const CLUSTER_LABEL: &str = "io.cilium.k8s.policy.cluster";
/// The label Kubernetes puts on every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The value part of a label: where it came from and its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelValue {
    pub source: String,
    pub value: String,
}

/// A set of labels, unique by key (as in Cilium).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelSet {
    labels: BTreeMap<String, LabelValue>,
}

impl LabelSet {
    /// An empty label set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) `source:key=value`.
    pub fn insert(&mut self, source: &str, key: &str, value: &str) {
        self.labels.insert(
            key.to_string(),
            LabelValue {
                source: source.to_string(),
                value: value.to_string(),
            },
        );
    }

    /// Builder form of [`insert`](Self::insert).
    pub fn with(mut self, source: &str, key: &str, value: &str) -> Self {
        self.insert(source, key, value);
        self
    }

    /// The label under `key`, whatever its source.
    pub fn get(&self, key: &str) -> Option<&LabelValue> {
        self.labels.get(key)
    }

    /// Whether a label `source:key` exists (source `any` matches all).
    fn lookup(&self, source: &str, key: &str) -> Option<&str> {
        let v = self.labels.get(key)?;
        if source == SOURCE_ANY || v.source == source {
            Some(&v.value)
        } else {
            None
        }
    }

    /// Iterates `(key, value)` pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &LabelValue)> {
        self.labels.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in &self.labels {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if v.value.is_empty() {
                write!(f, "{}:{}", v.source, k)?;
            } else {
                write!(f, "{}:{}={}", v.source, k, v.value)?;
            }
        }
        Ok(())
    }
}

/// Splits a selector key into `(source, key)`. No prefix means `any`, as in
/// Cilium's endpoint selectors.
pub fn split_source(key: &str) -> (&str, &str) {
    source_or(key, SOURCE_ANY)
}

/// One compiled requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    pub source: String,
    pub key: String,
    pub op: SelectorOperator,
    pub values: Vec<String>,
}

impl Requirement {
    /// Builds `source:key op values`.
    pub fn new(source: &str, key: &str, op: SelectorOperator, values: Vec<String>) -> Self {
        let mut values = values;
        values.sort();
        values.dedup();
        Self {
            source: source.to_string(),
            key: key.to_string(),
            op,
            values,
        }
    }

    /// `source:key = value`.
    pub fn equals(source: &str, key: &str, value: &str) -> Self {
        Self::new(source, key, SelectorOperator::In, vec![value.to_string()])
    }

    fn matches(&self, labels: &LabelSet) -> bool {
        let found = labels.lookup(&self.source, &self.key);
        match self.op {
            SelectorOperator::In => found.is_some_and(|v| self.values.iter().any(|x| x == v)),
            SelectorOperator::NotIn => found.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            SelectorOperator::Exists => found.is_some(),
            SelectorOperator::DoesNotExist => found.is_none(),
        }
    }

    /// Whether this requirement constrains the pod namespace label.
    pub fn is_namespace_requirement(&self) -> bool {
        self.key == POD_NAMESPACE_LABEL && (self.source == SOURCE_K8S || self.source == SOURCE_ANY)
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.source == SOURCE_ANY {
            self.key.clone()
        } else {
            format!("{}:{}", self.source, self.key)
        };
        match self.op {
            SelectorOperator::In if self.values.len() == 1 => write!(f, "{key}={}", self.values[0]),
            SelectorOperator::In => write!(f, "{key} in ({})", self.values.join(",")),
            SelectorOperator::NotIn => write!(f, "{key} notin ({})", self.values.join(",")),
            SelectorOperator::Exists => write!(f, "{key}"),
            SelectorOperator::DoesNotExist => write!(f, "!{key}"),
        }
    }
}

/// A compiled label selector: all requirements must hold. No requirement
/// selects every label set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

/// Why a selector in a policy is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("matchExpressions[{index}]: operator {op:?} needs at least one value")]
    MissingValues { index: usize, op: SelectorOperator },
    #[error("matchExpressions[{index}]: operator {op:?} takes no values")]
    UnexpectedValues { index: usize, op: SelectorOperator },
    #[error("empty label key")]
    EmptyKey,
}

impl Selector {
    /// The selector that selects everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Compiles a YAML selector; keys without a `source:` prefix get
    /// `default_source`.
    pub fn compile(sel: &LabelSelector, default_source: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for (k, v) in &sel.match_labels {
            let (source, key) = source_or(k, default_source);
            if key.is_empty() {
                return Err(SelectorError::EmptyKey);
            }
            reqs.push(Requirement::equals(source, key, v));
        }
        for (index, e) in sel.match_expressions.iter().enumerate() {
            let (source, key) = source_or(&e.key, default_source);
            if key.is_empty() {
                return Err(SelectorError::EmptyKey);
            }
            match e.operator {
                SelectorOperator::In | SelectorOperator::NotIn if e.values.is_empty() => {
                    return Err(SelectorError::MissingValues {
                        index,
                        op: e.operator,
                    });
                }
                SelectorOperator::Exists | SelectorOperator::DoesNotExist
                    if !e.values.is_empty() =>
                {
                    return Err(SelectorError::UnexpectedValues {
                        index,
                        op: e.operator,
                    });
                }
                _ => {}
            }
            reqs.push(Requirement::new(source, key, e.operator, e.values.clone()));
        }
        let mut s = Self { requirements: reqs };
        s.normalize();
        Ok(s)
    }

    /// Prefixes every key with `prefix` (used to turn a namespace selector
    /// into a selector over the pod's `io.cilium.k8s.namespace.labels.*`).
    pub fn with_key_prefix(mut self, prefix: &str) -> Self {
        for r in &mut self.requirements {
            r.key = format!("{prefix}{}", r.key);
        }
        self
    }

    /// Adds a requirement (AND).
    pub fn and(mut self, r: Requirement) -> Self {
        self.requirements.push(r);
        self.normalize();
        self
    }

    /// AND of two selectors.
    pub fn and_all(mut self, other: &Selector) -> Self {
        self.requirements.extend(other.requirements.iter().cloned());
        self.normalize();
        self
    }

    fn normalize(&mut self) {
        self.requirements.sort();
        self.requirements.dedup();
    }

    /// Whether the selector constrains the pod namespace.
    pub fn has_namespace_requirement(&self) -> bool {
        self.requirements
            .iter()
            .any(Requirement::is_namespace_requirement)
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether this selector has no requirement at all.
    pub fn is_wildcard(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("{}");
        }
        let parts: Vec<String> = self.requirements.iter().map(|r| r.to_string()).collect();
        write!(f, "{{{}}}", parts.join(", "))
    }
}

fn source_or<'a>(key: &'a str, default_source: &'a str) -> (&'a str, &'a str) {
    match key.split_once(':') {
        Some((source, rest)) if !source.is_empty() && !source.contains('/') => (source, rest),
        _ => (default_source, key),
    }
}

#[cfg(test)]
mod tests;
