//! What the watcher publishes: a topology and the valid policy objects.

use policy_model::rules::PolicyKind;
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

/// A digest of a set of policy objects by kind, namespace, name and
/// resourceVersion (FNV-1a over their sorted `KIND/NAMESPACE/NAME@RV`
/// lines): two views of the API's policies agree exactly when their
/// digests do. An agent in Kubernetes mode records the digest of the
/// policies it applied (`applied.hash`), the lab's API server the digest
/// of what it stores, so a test can wait for every agent to catch up.
pub fn policy_digest<'a>(
    objects: impl IntoIterator<Item = (&'a str, Option<&'a str>, &'a str, &'a str)>,
) -> u64 {
    let mut lines: Vec<String> = objects
        .into_iter()
        .map(|(kind, ns, name, rv)| format!("{kind}/{}/{name}@{rv}\n", ns.unwrap_or("")))
        .collect();
    lines.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in lines.iter().flat_map(|l| l.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Snapshot {
    /// [`policy_digest`] of the policy objects in force.
    pub fn policy_digest(&self) -> u64 {
        let kinds: Vec<String> = self.policies.iter().map(|p| p.kind.to_string()).collect();
        policy_digest(self.policies.iter().zip(&kinds).map(|(p, k)| {
            (
                k.as_str(),
                p.namespace.as_deref(),
                p.name.as_str(),
                p.resource_version.as_str(),
            )
        }))
    }
}

impl Snapshot {
    /// The policy objects whose version in force changed from `before` to
    /// this snapshot (new, or a new resource version: the API server
    /// changes it on every write), and the keys of those no longer in
    /// force: what an incremental consumer parses and drops, instead of
    /// every object again. Pods and namespaces are compared by value by
    /// whoever holds both topologies.
    pub fn policy_changes_since(&self, before: &Snapshot) -> (Vec<PolicyObject>, Vec<PolicyKey>) {
        let key = |p: &PolicyObject| -> PolicyKey { (p.kind, p.namespace.clone(), p.name.clone()) };
        let mut old: BTreeMap<PolicyKey, &str> = before
            .policies
            .iter()
            .map(|p| (key(p), p.resource_version.as_str()))
            .collect();
        let mut upserted = Vec::new();
        for p in &self.policies {
            if old.remove(&key(p)) != Some(p.resource_version.as_str()) {
                upserted.push(p.clone());
            }
        }
        (upserted, old.into_keys().collect())
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
