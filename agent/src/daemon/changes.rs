//! What one look at the inputs found (the new inputs, [`InputUpdate`]) and
//! what it changed, object by object: the policy objects added, updated and
//! removed (by origin, with the sets that bring their new rules), and the
//! topology's pods and namespaces. `engine_input.rs` turns the two into the
//! incremental engine's changes.

use policy_model::load::LoadedPolicy;
use policy_model::topology::PodSpec;
use policy_model::topology::cidr_group::CidrGroup;
use policy_model::topology::reader::PodChanges;
use policy_model::{PolicySet, Topology};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// The policy objects in force, in load order: each file's (or watched
/// object's) parsed set, shared with the cache that parsed it, so a
/// reading of the inputs copies no policy.
#[derive(Debug, Clone, Default)]
pub(super) struct Policies(pub(super) Vec<Arc<PolicySet>>);

impl Policies {
    /// Every policy object, in load order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &LoadedPolicy> {
        self.0.iter().flat_map(|s| s.policies.iter())
    }

    /// How many policy objects.
    pub(super) fn len(&self) -> usize {
        self.0.iter().map(|s| s.policies.len()).sum()
    }

    /// The CIDR groups the policy files define, in load order.
    pub(super) fn cidr_groups(&self) -> impl Iterator<Item = &CidrGroup> {
        self.0.iter().flat_map(|s| s.cidr_groups.iter())
    }
}

/// A policy object's identity across versions: kind, namespace, name (not
/// the file or document it sits in).
pub(super) type ObjectKey = (String, Option<String>, String);

/// The key of every policy object of `set`.
pub(super) fn object_keys(set: &PolicySet) -> BTreeSet<ObjectKey> {
    set.policies
        .iter()
        .map(|p| {
            (
                p.origin.kind.to_string(),
                p.origin.namespace.clone(),
                p.origin.name.clone(),
            )
        })
        .collect()
}

/// Policy objects changed by one change of the inputs.
#[derive(Debug, Default, Clone)]
pub(super) struct PolicyDelta {
    /// Files whose new content is in force (added or edited).
    pub(super) files_changed: Vec<PathBuf>,
    /// Files gone, with their objects.
    pub(super) files_removed: Vec<PathBuf>,
    pub(super) added: BTreeSet<ObjectKey>,
    /// Objects in a file whose content changed (maybe not the object).
    pub(super) updated: BTreeSet<ObjectKey>,
    pub(super) removed: BTreeSet<ObjectKey>,
    /// The new parsed sets of the files (or watched objects) added or
    /// changed: where the rules of `added` and `updated` are.
    pub(super) upserted: Vec<Arc<PolicySet>>,
}

impl PolicyDelta {
    /// Records one file's objects going from `old` to `new`.
    pub(super) fn file(&mut self, old: &BTreeSet<ObjectKey>, new: &BTreeSet<ObjectKey>) {
        self.added.extend(new.difference(old).cloned());
        self.updated.extend(new.intersection(old).cloned());
        self.removed.extend(old.difference(new).cloned());
    }

    pub(super) fn is_empty(&self) -> bool {
        self.files_changed.is_empty() && self.files_removed.is_empty()
    }
}

/// Pods and namespaces changed by one change of the topology.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct TopologyDelta {
    /// `ns/pod`.
    pub(super) pods_added: BTreeSet<String>,
    /// Labels, addresses, ports, service account or node changed.
    pub(super) pods_changed: BTreeSet<String>,
    pub(super) pods_removed: BTreeSet<String>,
    pub(super) namespaces_added: BTreeSet<String>,
    pub(super) namespaces_changed: BTreeSet<String>,
    pub(super) namespaces_removed: BTreeSet<String>,
    /// The node, nodes, remote nodes, API server or world changed.
    pub(super) hosts_changed: bool,
    /// The CIDR groups (watched, or in the topology file) changed.
    pub(super) cidr_groups_changed: bool,
}

impl TopologyDelta {
    /// What differs from `old` to `new`.
    pub(super) fn between(old: &Topology, new: &Topology) -> Self {
        let mut d = TopologyDelta::default();
        d.pods_between(&old.pods, &new.pods);
        d.others_between(old, new);
        d
    }

    /// What differs from `old` to `new` when the topology reader knows
    /// which pods it changed: only those pods are compared.
    pub(super) fn from_pod_changes(old: &Topology, new: &Topology, pods: &PodChanges) -> Self {
        let mut d = TopologyDelta::default();
        d.pods_between(&pods.gone, &pods.fresh);
        d.others_between(old, new);
        d
    }

    /// Pods in `new` and not in `old` by name are added, the other way
    /// removed, in both and different changed. A pod shared by both (the
    /// topology reader keeps unchanged entries) is the same without
    /// comparing it.
    fn pods_between(&mut self, old: &[Arc<PodSpec>], new: &[Arc<PodSpec>]) {
        let held: HashMap<(&str, &str), &Arc<PodSpec>> = old
            .iter()
            .map(|p| ((p.namespace.as_str(), p.name.as_str()), p))
            .collect();
        let mut seen = HashSet::with_capacity(new.len());
        for p in new {
            let key = (p.namespace.as_str(), p.name.as_str());
            seen.insert(key);
            match held.get(&key) {
                None => {
                    self.pods_added.insert(p.full_name());
                }
                Some(o) if !Arc::ptr_eq(o, p) && ***o != **p => {
                    self.pods_changed.insert(p.full_name());
                }
                Some(_) => {}
            }
        }
        for (key, p) in &held {
            if !seen.contains(key) {
                self.pods_removed.insert(p.full_name());
            }
        }
    }

    fn others_between(&mut self, old: &Topology, new: &Topology) {
        fn namespaces(t: &Topology) -> BTreeMap<String, &policy_model::topology::NamespaceSpec> {
            t.namespaces.iter().map(|n| (n.name.clone(), n)).collect()
        }
        diff(
            &namespaces(old),
            &namespaces(new),
            (
                &mut self.namespaces_added,
                &mut self.namespaces_changed,
                &mut self.namespaces_removed,
            ),
        );
        self.hosts_changed = old.node != new.node
            || old.nodes != new.nodes
            || old.remote_nodes != new.remote_nodes
            || old.kube_apiserver != new.kube_apiserver
            || old.world != new.world;
        self.cidr_groups_changed = old.cidr_groups != new.cidr_groups;
    }

    pub(super) fn is_empty(&self) -> bool {
        *self == TopologyDelta::default()
    }
}

type DiffSets<'a> = (
    &'a mut BTreeSet<String>,
    &'a mut BTreeSet<String>,
    &'a mut BTreeSet<String>,
);

fn diff<V: PartialEq>(
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
    (added, changed, removed): DiffSets<'_>,
) {
    for (k, v) in new {
        match old.get(k) {
            None => {
                added.insert(k.clone());
            }
            Some(o) if o != v => {
                changed.insert(k.clone());
            }
            Some(_) => {}
        }
    }
    removed.extend(old.keys().filter(|k| !new.contains_key(*k)).cloned());
}

/// One change of the inputs: the per-object delta alongside the full new
/// state (shared, not copied), which the engine's changes are read from.
#[derive(Debug, Default, Clone)]
pub(super) struct Changes {
    pub(super) policies: PolicyDelta,
    /// `None`: the topology did not change (or its new version was
    /// rejected).
    pub(super) topology: Option<TopologyDelta>,
}

impl Changes {
    /// Whether anything in force changed.
    pub(super) fn is_empty(&self) -> bool {
        self.policies.is_empty() && self.topology.as_ref().is_none_or(TopologyDelta::is_empty)
    }

    /// One line for the log: what changed.
    pub(super) fn summary(&self) -> String {
        let p = &self.policies;
        let mut out = format!(
            "policy files changed {:?} removed {:?}; objects +{} ~{} -{}",
            p.files_changed,
            p.files_removed,
            p.added.len(),
            p.updated.len(),
            p.removed.len()
        );
        if let Some(t) = &self.topology {
            out.push_str(&format!(
                "; topology pods +{} ~{} -{}, namespaces +{} ~{} -{}{}",
                t.pods_added.len(),
                t.pods_changed.len(),
                t.pods_removed.len(),
                t.namespaces_added.len(),
                t.namespaces_changed.len(),
                t.namespaces_removed.len(),
                if t.hosts_changed { ", nodes/hosts" } else { "" }
            ));
        }
        out
    }
}

/// The pods this node enforces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalPods(Option<BTreeSet<String>>);

impl LocalPods {
    /// Every pod of the topology.
    #[cfg(test)]
    pub fn all() -> Self {
        LocalPods(None)
    }

    /// Only these pods (`ns/pod`).
    pub fn only(pods: BTreeSet<String>) -> Self {
        LocalPods(Some(pods))
    }

    /// Whether the pod `ns/pod` is enforced here.
    pub fn contains(&self, full_name: &str) -> bool {
        self.0.as_ref().is_none_or(|l| l.contains(full_name))
    }
}

/// One complete reading of the inputs.
pub(super) struct InputSnapshot {
    /// The node's view of the topology (shared until the topology changes).
    pub(super) topology: Arc<Topology>,
    pub(super) policies: Policies,
    pub(super) local_pods: LocalPods,
}

/// What one look at the inputs found.
#[derive(Default)]
pub(super) struct InputUpdate {
    /// The new inputs, when something in force changed.
    pub(super) snapshot: Option<InputSnapshot>,
    /// What changed, object by object.
    pub(super) changes: Changes,
    /// New rejections (the previous version of each object stays).
    pub(super) rejected: Vec<String>,
    /// Every rejection still standing, for `status`.
    pub(super) standing: Vec<String>,
    /// Reads that failed for lack of resources (retried).
    pub(super) unreadable: Vec<String>,
}
