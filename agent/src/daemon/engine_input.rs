//! One reading of the inputs as the engine's changes: the snapshot is
//! compared with what the engine holds, object by object, for the objects
//! the inputs say changed (policy objects by key; pods and namespaces
//! when the topology changed; the node's and other hosts' addresses
//! always, as they are cheap to compare).

use super::changes::{Changes, InputSnapshot, ObjectKey, TopologyDelta};
use policy_model::Topology;
use policy_model::incremental::{Change, Hosts, IncrementalCluster, PolicyKey};
use policy_model::rules::{PolicyKind, PolicyRule};
use policy_model::topology::PodSpec;
use policy_model::topology::cidr_group::CidrGroup;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

/// What the engine is to do with a reading.
#[derive(Debug, PartialEq)]
pub(super) enum EngineInput {
    /// Something the engine takes only at build changed (the topology's
    /// `world`): build it again from the snapshot.
    Rebuild,
    /// These changes, in this order (possibly none).
    Changes(Vec<Change>),
}

/// The hosts of `topology` as the engine takes them (the node's own
/// addresses are added by [`with_node_addresses`]).
pub(super) fn hosts_of(topology: &Topology) -> Hosts {
    Hosts {
        node: topology.node.clone(),
        kube_apiserver: topology.kube_apiserver.clone(),
        remote_nodes: topology.remote_nodes.clone(),
    }
}

/// `hosts` with every address the node owns (`node_addrs`, from the
/// kernel) as the node's.
pub(super) fn with_node_addresses(mut hosts: Hosts, node_addrs: &BTreeSet<IpAddr>) -> Hosts {
    if !node_addrs.is_empty() {
        let n = hosts.node.get_or_insert_with(Default::default);
        for ip in node_addrs {
            if !n.ips.contains(ip) {
                n.ips.push(*ip);
            }
        }
    }
    hosts
}

/// The snapshot's topology as the engine is built from it: the node with
/// its own addresses, and every CIDR group ([`cidr_groups_of`]).
pub(super) fn engine_topology(snapshot: &InputSnapshot, node_addrs: &BTreeSet<IpAddr>) -> Topology {
    let mut t = (*snapshot.topology).clone();
    t.node = with_node_addresses(hosts_of(&snapshot.topology), node_addrs).node;
    t.cidr_groups = cidr_groups_of(snapshot);
    t
}

/// The CIDR groups in force: the topology's (the watched CiliumCIDRGroups,
/// or the topology file's), then those of the policy files in load order.
pub(super) fn cidr_groups_of(snapshot: &InputSnapshot) -> Vec<CidrGroup> {
    snapshot
        .topology
        .cidr_groups
        .iter()
        .chain(snapshot.policies.cidr_groups())
        .cloned()
        .collect()
}

/// The policy objects of `snapshot` by engine key, with their rules in
/// the order the snapshot lists them.
pub(super) fn policies_by_key(snapshot: &InputSnapshot) -> BTreeMap<PolicyKey, Vec<PolicyRule>> {
    let mut out: BTreeMap<PolicyKey, Vec<PolicyRule>> = BTreeMap::new();
    for p in snapshot.policies.iter() {
        out.entry(PolicyKey::of(&p.origin))
            .or_default()
            .extend(p.rules.iter().cloned());
    }
    out
}

/// The changes that take `engine` to `snapshot`, given what the inputs
/// said changed (`delta`) and the hosts as they are now (`hosts`).
pub(super) fn changes_for(
    engine: &IncrementalCluster,
    snapshot: &InputSnapshot,
    delta: &Changes,
    hosts: Hosts,
) -> EngineInput {
    if snapshot.topology.world.as_ref() != engine.world() {
        return EngineInput::Rebuild;
    }
    let mut out = Vec::new();
    if let Some(t) = &delta.topology {
        topology_changes(engine, &snapshot.topology, t, &mut out);
    }
    if &hosts != engine.hosts() {
        out.push(Change::Hosts(hosts));
    }
    // Compared on every reading: a handful of objects, and a policy file
    // may define groups without anything else changing.
    let groups = cidr_groups_of(snapshot);
    if groups.as_slice() != engine.cidr_groups() {
        out.push(Change::CidrGroups(groups));
    }
    policy_changes(engine, snapshot, delta, &mut out);
    EngineInput::Changes(out)
}

/// The namespaces and pods `delta` names (namespaces first: a pod's
/// identity takes its namespace's labels), each upserted when it differs
/// from the engine's and deleted when the topology no longer has it; pod
/// deletes before upserts (a pod's address may move to another pod).
fn topology_changes(
    engine: &IncrementalCluster,
    topology: &Topology,
    delta: &TopologyDelta,
    out: &mut Vec<Change>,
) {
    let names = |a: &BTreeSet<String>, c: &BTreeSet<String>, r: &BTreeSet<String>| {
        a.iter()
            .chain(c)
            .chain(r)
            .cloned()
            .collect::<BTreeSet<String>>()
    };
    for name in names(
        &delta.namespaces_added,
        &delta.namespaces_changed,
        &delta.namespaces_removed,
    ) {
        let held = engine.namespaces().find(|n| n.name == name);
        match (topology.namespace(&name), held) {
            (None, Some(_)) => out.push(Change::NamespaceDelete(name)),
            (Some(new), held) if held != Some(new) => {
                out.push(Change::NamespaceUpsert(new.clone()))
            }
            _ => {}
        }
    }
    let named = names(&delta.pods_added, &delta.pods_changed, &delta.pods_removed);
    // Looked up by name when many changed, else found by a pass each.
    let by_name: Option<HashMap<String, &Arc<PodSpec>>> =
        (named.len() > 8).then(|| topology.pods.iter().map(|p| (p.full_name(), p)).collect());
    let find = |full: &str| -> Option<&Arc<PodSpec>> {
        match &by_name {
            Some(m) => m.get(full).copied(),
            None => {
                let (ns, name) = full.split_once('/')?;
                topology
                    .pods
                    .iter()
                    .find(|p| p.namespace == ns && p.name == name)
            }
        }
    };
    let mut upserts = Vec::new();
    for full in &named {
        match (find(full), engine.pod(full)) {
            (None, Some(old)) => out.push(Change::PodDelete {
                namespace: old.namespace.clone(),
                name: old.name.clone(),
            }),
            (Some(new), held) if held != Some(&**new) => {
                upserts.push(Change::PodUpsert(new.clone()))
            }
            _ => {}
        }
    }
    out.extend(upserts);
}

/// The policy objects `delta` names: upserted when their rules differ
/// from the engine's, deleted when the snapshot no longer has them. Their
/// new rules are read from the sets the change brought (`upserted`); an
/// object that another, unchanged file defines too (the same kind,
/// namespace and name twice) is gathered from the whole snapshot, in load
/// order, as a resolution from scratch reads it.
fn policy_changes(
    engine: &IncrementalCluster,
    snapshot: &InputSnapshot,
    delta: &Changes,
    out: &mut Vec<Change>,
) {
    let p = &delta.policies;
    let keys: BTreeSet<PolicyKey> = p
        .added
        .iter()
        .chain(&p.updated)
        .chain(&p.removed)
        .filter_map(policy_key)
        .collect();
    if keys.is_empty() {
        return;
    }
    // The files (or watched objects) this change replaced or removed.
    let replaced: HashSet<&str> = p
        .upserted
        .iter()
        .flat_map(|s| s.policies.iter())
        .filter_map(|lp| lp.origin.file.as_deref())
        .collect();
    let removed_files: Vec<String> = p
        .files_removed
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    let kept_elsewhere = |key: &PolicyKey| {
        engine.policy(key).is_some_and(|rules| {
            rules.iter().any(|r| {
                r.origin
                    .file
                    .as_deref()
                    .is_none_or(|f| !replaced.contains(f) && !removed_files.iter().any(|g| g == f))
            })
        })
    };
    let mut now: BTreeMap<PolicyKey, Vec<PolicyRule>> = BTreeMap::new();
    let mut whole: BTreeSet<PolicyKey> = BTreeSet::new();
    for key in &keys {
        if kept_elsewhere(key) {
            whole.insert(key.clone());
        }
    }
    for lp in p.upserted.iter().flat_map(|s| s.policies.iter()) {
        let key = PolicyKey::of(&lp.origin);
        if keys.contains(&key) && !whole.contains(&key) {
            now.entry(key).or_default().extend(lp.rules.iter().cloned());
        }
    }
    if !whole.is_empty() {
        for lp in snapshot.policies.iter() {
            let o = &lp.origin;
            if whole
                .iter()
                .any(|k| k.kind == o.kind && k.name == o.name && k.namespace == o.namespace)
            {
                now.entry(PolicyKey::of(o))
                    .or_default()
                    .extend(lp.rules.iter().cloned());
            }
        }
    }
    for key in keys {
        match now.remove(&key) {
            Some(rules) => {
                if engine.policy(&key) != Some(rules.as_slice()) {
                    out.push(Change::PolicyUpsert { key, rules });
                }
            }
            None => {
                if engine.policy(&key).is_some() {
                    out.push(Change::PolicyDelete(key));
                }
            }
        }
    }
}

/// The engine's key of an object key (kind as the API spells it).
fn policy_key((kind, namespace, name): &ObjectKey) -> Option<PolicyKey> {
    let kind = [
        PolicyKind::NetworkPolicy,
        PolicyKind::CiliumNetworkPolicy,
        PolicyKind::CiliumClusterwideNetworkPolicy,
    ]
    .into_iter()
    .find(|k| k.as_str() == kind)?;
    Some(PolicyKey {
        kind,
        namespace: namespace.clone(),
        name: name.clone(),
    })
}

#[cfg(test)]
mod tests;
