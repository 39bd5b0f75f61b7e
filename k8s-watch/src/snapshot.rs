//! What the watcher publishes: a topology and the valid policy objects.

use policy_model::rules::PolicyKind;
use policy_model::topology::{NamespaceSpec, PodSpec};
use policy_model::{LoadError, PolicySet, Topology};
use std::collections::BTreeMap;

/// Everything the agent needs from the API server, at one point in time.
///
/// `policies` holds only objects that load cleanly; an object whose latest
/// version is invalid is represented by its last valid version, if it had
/// one (its `status` entry says so), and is absent otherwise.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Namespaces and pods sorted by name; `node`, `kube_apiserver` and
    /// `remote_nodes` from the Node objects and the `default/kubernetes`
    /// EndpointSlice.
    pub topology: Topology,
    /// `namespace/name` of the pods scheduled on this node (all of
    /// `topology.pods` when only this node's pods are watched).
    pub local_pods: Vec<String>,
    /// Valid policy objects, sorted by kind, namespace and name.
    pub policies: Vec<PolicyObject>,
    /// One entry per policy object in the API server, valid or not.
    pub status: Vec<PolicyStatus>,
    /// Objects left out of the topology and why (e.g. two pods claiming
    /// the same address).
    pub warnings: Vec<String>,
}

/// One valid policy object as JSON, ready for `policy_model::load::load_str`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyObject {
    pub kind: PolicyKind,
    /// `None` for cluster-wide policies.
    pub namespace: Option<String>,
    pub name: String,
    pub resource_version: String,
    /// The object with `apiVersion` and `kind` set (list responses omit
    /// them) and `metadata.managedFields` removed.
    pub json: String,
}

impl PolicyObject {
    /// The name `load_str` gets for this object, shown in explanations:
    /// `k8s:KIND/NAMESPACE/NAME` (`k8s:KIND/NAME` when cluster-wide).
    pub fn source_name(&self) -> String {
        source_name(self.kind, self.namespace.as_deref(), &self.name)
    }
}

/// Whether a policy object is in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStatus {
    pub kind: PolicyKind,
    pub namespace: Option<String>,
    pub name: String,
    /// Whether the object's latest version loads.
    pub valid: bool,
    /// For an invalid object: the load errors, and whether a previous
    /// valid version stays in force.
    pub reason: Option<String>,
}

impl Snapshot {
    /// Loads every policy object of the snapshot (each was loaded once
    /// already when it arrived, so this fails only on a bug).
    pub fn policy_set(&self) -> Result<PolicySet, Vec<LoadError>> {
        let mut set = PolicySet::default();
        let mut errors = Vec::new();
        for p in &self.policies {
            match policy_model::load::load_str(&p.json, &p.source_name()) {
                Ok(s) => set.extend(s),
                Err(mut e) => errors.append(&mut e),
            }
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// The status of one object.
    pub fn status_of(
        &self,
        kind: PolicyKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<&PolicyStatus> {
        self.status
            .iter()
            .find(|s| s.kind == kind && s.namespace.as_deref() == namespace && s.name == name)
    }

    /// The policy object in force, if any.
    pub fn policy(
        &self,
        kind: PolicyKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<&PolicyObject> {
        self.policies
            .iter()
            .find(|p| p.kind == kind && p.namespace.as_deref() == namespace && p.name == name)
    }
}

/// A policy object's key: kind, namespace (`None`: cluster-wide), name.
pub type PolicyKey = (PolicyKind, Option<String>, String);

/// What changed between two snapshots, object by object: what an
/// incremental consumer applies instead of the whole new snapshot. Policy
/// objects are compared by resource version (the API server changes it on
/// every write), pods and namespaces by value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnapshotChanges {
    /// Policy objects new or with a new version in force.
    pub policies_upserted: Vec<PolicyObject>,
    /// Policy objects no longer in force.
    pub policies_removed: Vec<PolicyKey>,
    /// Pods new or changed (labels, addresses, ports, node).
    pub pods_upserted: Vec<PodSpec>,
    /// Pods gone, by `namespace/name`.
    pub pods_removed: Vec<String>,
    /// Namespaces new or relabelled.
    pub namespaces_upserted: Vec<NamespaceSpec>,
    /// Namespaces gone, by name.
    pub namespaces_removed: Vec<String>,
    /// The node, the other nodes or the kube-apiserver's addresses changed.
    pub hosts_changed: bool,
    /// The set of this node's pods changed.
    pub local_pods_changed: bool,
}

impl SnapshotChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == SnapshotChanges::default()
    }
}

/// The upserted and removed values of two keyed collections.
fn keyed_diff<'a, K: Ord, V: PartialEq + Clone + 'a>(
    before: impl Iterator<Item = (K, &'a V)>,
    after: impl Iterator<Item = (K, &'a V)>,
) -> (Vec<V>, Vec<K>) {
    let mut old: BTreeMap<K, &V> = before.collect();
    let mut upserted = Vec::new();
    for (k, v) in after {
        if old.remove(&k) != Some(v) {
            upserted.push(v.clone());
        }
    }
    (upserted, old.into_keys().collect())
}

impl Snapshot {
    /// What changed from `before` to this snapshot.
    pub fn changes_since(&self, before: &Snapshot) -> SnapshotChanges {
        let key = |p: &PolicyObject| -> PolicyKey { (p.kind, p.namespace.clone(), p.name.clone()) };
        let mut old: BTreeMap<PolicyKey, &str> = before
            .policies
            .iter()
            .map(|p| (key(p), p.resource_version.as_str()))
            .collect();
        let mut policies_upserted = Vec::new();
        for p in &self.policies {
            if old.remove(&key(p)) != Some(p.resource_version.as_str()) {
                policies_upserted.push(p.clone());
            }
        }
        let (pods_upserted, pods_removed) = keyed_diff(
            before.topology.pods.iter().map(|p| (p.full_name(), p)),
            self.topology.pods.iter().map(|p| (p.full_name(), p)),
        );
        let (namespaces_upserted, namespaces_removed) = keyed_diff(
            before
                .topology
                .namespaces
                .iter()
                .map(|n| (n.name.clone(), n)),
            self.topology.namespaces.iter().map(|n| (n.name.clone(), n)),
        );
        let hosts = |t: &Topology| {
            (
                t.node.clone(),
                t.remote_nodes.clone(),
                t.kube_apiserver.clone(),
                t.nodes.clone(),
            )
        };
        SnapshotChanges {
            policies_upserted,
            policies_removed: old.into_keys().collect(),
            pods_upserted,
            pods_removed,
            namespaces_upserted,
            namespaces_removed,
            hosts_changed: hosts(&self.topology) != hosts(&before.topology),
            local_pods_changed: self.local_pods != before.local_pods,
        }
    }
}

pub(crate) fn source_name(kind: PolicyKind, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("k8s:{kind}/{ns}/{name}"),
        None => format!("k8s:{kind}/{name}"),
    }
}

#[cfg(test)]
mod tests;
