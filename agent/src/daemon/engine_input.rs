//! One reading of the inputs as the engine's changes: the snapshot is
//! compared with what the engine holds, object by object, for the objects
//! the inputs say changed (policy objects by key; pods and namespaces
//! when the topology changed; the node's and other hosts' addresses
//! always, as they are cheap to compare).

use super::changes::{Changes, InputSnapshot};
use policy_model::Topology;
use policy_model::incremental::{Change, Hosts, IncrementalCluster, PolicyKey};
use policy_model::rules::{PolicyKind, PolicyRule};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

/// What the engine is to do with a reading.
#[derive(Debug, PartialEq)]
pub(super) enum EngineInput {
    /// Something the engine takes only at build changed (the topology's
    /// `world`): build it again from the snapshot.
    Rebuild,
    /// These changes, in this order (possibly none).
    Changes(Vec<Change>),
}

/// The hosts of `topology` as the engine takes them, with every address
/// the node owns (`node_addrs`, from the kernel) as the node's.
pub(super) fn hosts_of(topology: &Topology, node_addrs: &BTreeSet<IpAddr>) -> Hosts {
    let mut node = topology.node.clone();
    if !node_addrs.is_empty() {
        let n = node.get_or_insert_with(Default::default);
        for ip in node_addrs {
            if !n.ips.contains(ip) {
                n.ips.push(*ip);
            }
        }
    }
    Hosts {
        node,
        kube_apiserver: topology.kube_apiserver.clone(),
        remote_nodes: topology.remote_nodes.clone(),
    }
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
    if delta.topology.is_some() {
        topology_changes(engine, &snapshot.topology, &mut out);
    }
    if &hosts != engine.hosts() {
        out.push(Change::Hosts(hosts));
    }
    policy_changes(engine, snapshot, delta, &mut out);
    EngineInput::Changes(out)
}

/// Namespaces first (a pod's identity takes its namespace's labels), then
/// pods.
fn topology_changes(engine: &IncrementalCluster, topology: &Topology, out: &mut Vec<Change>) {
    let namespaces: HashMap<&str, _> = topology
        .namespaces
        .iter()
        .map(|n| (n.name.as_str(), n))
        .collect();
    let mut held: BTreeSet<&str> = BTreeSet::new();
    for n in engine.namespaces() {
        held.insert(n.name.as_str());
        match namespaces.get(n.name.as_str()) {
            None => out.push(Change::NamespaceDelete(n.name.clone())),
            Some(new) if *new != n => out.push(Change::NamespaceUpsert((*new).clone())),
            Some(_) => {}
        }
    }
    for n in &topology.namespaces {
        if !held.contains(n.name.as_str()) {
            out.push(Change::NamespaceUpsert(n.clone()));
        }
    }
    let pods: HashMap<String, _> = topology.pods.iter().map(|p| (p.full_name(), p)).collect();
    let mut held: BTreeSet<String> = BTreeSet::new();
    // Deletes first: a pod's address may move to another pod.
    let mut upserts = Vec::new();
    for p in engine.pods() {
        let name = p.full_name();
        match pods.get(&name) {
            None => out.push(Change::PodDelete {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            }),
            Some(new) if *new != p => upserts.push(Change::PodUpsert((*new).clone())),
            Some(_) => {}
        }
        held.insert(name);
    }
    for (name, p) in &pods {
        if !held.contains(name) {
            upserts.push(Change::PodUpsert((*p).clone()));
        }
    }
    out.extend(upserts);
}

/// The policy objects `delta` names: upserted when their rules differ
/// from the engine's, deleted when the snapshot no longer has them.
fn policy_changes(
    engine: &IncrementalCluster,
    snapshot: &InputSnapshot,
    delta: &Changes,
    out: &mut Vec<Change>,
) {
    let p = &delta.policies;
    // Looked up without allocating: every policy object of the snapshot
    // is checked against them.
    let named: HashSet<(&str, Option<&str>, &str)> = p
        .added
        .iter()
        .chain(&p.updated)
        .chain(&p.removed)
        .map(|(kind, ns, name)| (kind.as_str(), ns.as_deref(), name.as_str()))
        .collect();
    if named.is_empty() {
        return;
    }
    let is_named = |kind: PolicyKind, ns: &Option<String>, name: &str| {
        named.contains(&(kind.as_str(), ns.as_deref(), name))
    };
    let mut now: BTreeMap<PolicyKey, Vec<PolicyRule>> = BTreeMap::new();
    for lp in snapshot.policies.iter() {
        let o = &lp.origin;
        if is_named(o.kind, &o.namespace, &o.name) {
            now.entry(PolicyKey::of(o))
                .or_default()
                .extend(lp.rules.iter().cloned());
        }
    }
    let gone: Vec<PolicyKey> = engine
        .policy_keys()
        .filter(|k| !now.contains_key(*k) && is_named(k.kind, &k.namespace, &k.name))
        .cloned()
        .collect();
    out.extend(gone.into_iter().map(Change::PolicyDelete));
    for (key, rules) in now {
        if engine.policy(&key) != Some(rules.as_slice()) {
            out.push(Change::PolicyUpsert { key, rules });
        }
    }
}

#[cfg(test)]
mod tests;
