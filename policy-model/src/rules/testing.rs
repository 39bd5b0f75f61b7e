//! Shared helpers of the rules tests: policies in, internal rules out.

use super::{Peer, PolicyKind, PolicyRef, PolicyRule, RuleError, Subject};
use super::{from_cilium_policy, from_network_policy};
use crate::api::{CiliumPolicy, NetworkPolicy};
use crate::labels::{LabelSet, NAMESPACE_LABELS_PREFIX, POD_NAMESPACE_LABEL, SOURCE_K8S, Selector};
use std::sync::Arc;

pub fn origin(kind: PolicyKind, ns: Option<&str>) -> Arc<PolicyRef> {
    Arc::new(PolicyRef {
        kind,
        namespace: ns.map(str::to_string),
        name: "p".into(),
        file: None,
        document: None,
    })
}

pub fn np(yaml: &str) -> Result<Vec<PolicyRule>, RuleError> {
    let np: NetworkPolicy = serde_yaml_ng::from_str(yaml).expect("test NetworkPolicy parses");
    from_network_policy(&np, origin(PolicyKind::NetworkPolicy, Some("ns1")))
}

pub fn np_ok(yaml: &str) -> PolicyRule {
    let mut r = np(yaml).expect("valid NetworkPolicy");
    assert_eq!(r.len(), 1);
    r.remove(0)
}

/// A CNP in namespace `ns1`.
pub fn cnp(yaml: &str) -> Result<Vec<PolicyRule>, RuleError> {
    let cp: CiliumPolicy = serde_yaml_ng::from_str(yaml).expect("test CNP parses");
    from_cilium_policy(
        &cp,
        Some("ns1"),
        origin(PolicyKind::CiliumNetworkPolicy, Some("ns1")),
    )
}

pub fn cnp_ok(yaml: &str) -> PolicyRule {
    let mut r = cnp(yaml).expect("valid CNP");
    assert_eq!(r.len(), 1);
    r.remove(0)
}

pub fn ccnp(yaml: &str) -> Result<Vec<PolicyRule>, RuleError> {
    let cp: CiliumPolicy = serde_yaml_ng::from_str(yaml).expect("test CCNP parses");
    from_cilium_policy(
        &cp,
        None,
        origin(PolicyKind::CiliumClusterwideNetworkPolicy, None),
    )
}

pub fn cnp_err(yaml: &str) -> RuleError {
    cnp(yaml).expect_err("the CNP must be rejected")
}

/// Labels of a pod in `ns` (namespace labels included, as the topology
/// derives them).
pub fn pod(ns: &str, ns_labels: &[(&str, &str)], labels: &[(&str, &str)]) -> LabelSet {
    let mut l = LabelSet::new();
    for (k, v) in labels {
        l.insert(SOURCE_K8S, k, v);
    }
    l.insert(SOURCE_K8S, POD_NAMESPACE_LABEL, ns);
    for (k, v) in ns_labels {
        l.insert(SOURCE_K8S, &format!("{NAMESPACE_LABELS_PREFIX}{k}"), v);
    }
    l
}

pub fn endpoints_sel(p: &Peer) -> &Selector {
    match p {
        Peer::Endpoints(s) => s,
        other => panic!("expected an endpoints peer, got {other:?}"),
    }
}

pub fn subject_sel(r: &PolicyRule) -> &Selector {
    match &r.subject {
        Subject::Endpoints(s) => s,
        other => panic!("expected an endpoints subject, got {other:?}"),
    }
}

pub const NP_HEAD: &str = "metadata: {name: p, namespace: ns1}\n";

pub const CNP_HEAD: &str = "metadata: {name: p}\n";
