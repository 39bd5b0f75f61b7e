//! The in-memory copy of the watched objects and the snapshots built from
//! it. Pure: the watch tasks feed it [`Update`]s, it answers with
//! [`Snapshot`]s.

use crate::convert::{NodeInfo, POLICY_KINDS, PodEndpoint, RawPolicy};
use crate::snapshot::{PolicyObject, PolicyStatus, Snapshot, source_name};
use policy_model::rules::PolicyKind;
use policy_model::topology::cidr_group::CidrGroup;
use policy_model::topology::{HostSpec, NamespaceSpec, Topology};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// One watched resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Namespace,
    Pod,
    Node,
    /// The `default/kubernetes` EndpointSlice.
    ApiServer,
    Policy(PolicyKind),
    /// `CiliumCIDRGroup` objects.
    CidrGroup,
}

impl Resource {
    /// Every resource the watcher lists and watches.
    pub fn all() -> Vec<Resource> {
        let mut v = vec![
            Resource::Namespace,
            Resource::Pod,
            Resource::Node,
            Resource::ApiServer,
        ];
        v.extend(POLICY_KINDS.map(Resource::Policy));
        v.push(Resource::CidrGroup);
        v
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Namespace => f.write_str("Namespace"),
            Resource::Pod => f.write_str("Pod"),
            Resource::Node => f.write_str("Node"),
            Resource::ApiServer => f.write_str("EndpointSlice default/kubernetes"),
            Resource::Policy(k) => write!(f, "{k}"),
            Resource::CidrGroup => f.write_str("CiliumCIDRGroup"),
        }
    }
}

/// A converted object. `Pod(None)` is a pod that is not an endpoint (no
/// address, host network, finished): it is removed from the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Namespace(NamespaceSpec),
    Pod(Option<PodEndpoint>),
    Node(NodeInfo),
    ApiServer(Vec<IpAddr>),
    Policy(RawPolicy),
    /// A CIDR group, or why it cannot be used (it is then left out, with
    /// a snapshot warning).
    CidrGroup(Result<CidrGroup, String>),
}

/// What a watch stream reported, in the terms of `kube::runtime::watcher`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An object was added or modified.
    Apply {
        key: String,
        value: Value,
    },
    /// An object was deleted.
    Delete {
        key: String,
    },
    /// A (re)list starts: the objects up to `InitDone` replace the table.
    Init,
    InitApply {
        key: String,
        value: Value,
    },
    InitDone,
    /// The resource does not exist in this cluster (e.g. no Cilium CRDs):
    /// the table is empty and counts as synced.
    Absent,
}

/// One event of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub resource: Resource,
    pub event: Event,
}

/// A policy object's latest version and the version in force.
#[derive(Debug, Clone, PartialEq)]
struct PolicyEntry {
    in_force: Option<RawPolicy>,
    status: PolicyStatus,
}

#[derive(Debug, Clone, PartialEq)]
enum Stored {
    Namespace(NamespaceSpec),
    Pod(PodEndpoint),
    Node(NodeInfo),
    ApiServer(Vec<IpAddr>),
    Policy(PolicyEntry),
    CidrGroup(Result<CidrGroup, String>),
}

/// The objects of one resource, and the buffer of a (re)list in progress.
#[derive(Debug, Default)]
struct Table {
    live: BTreeMap<String, Stored>,
    relist: Option<BTreeMap<String, Stored>>,
    synced: bool,
}

/// The watched objects of every resource.
#[derive(Debug)]
pub struct Store {
    node_name: String,
    tables: BTreeMap<Resource, Table>,
}

impl Store {
    /// An empty store for the agent on `node_name`.
    pub fn new(node_name: &str) -> Self {
        Store {
            node_name: node_name.to_string(),
            tables: Resource::all()
                .into_iter()
                .map(|r| (r, Table::default()))
                .collect(),
        }
    }

    /// Whether every resource has been listed at least once (or found
    /// absent). Before that a snapshot would be partial.
    pub fn ready(&self) -> bool {
        self.tables.values().all(|t| t.synced)
    }

    /// Resources not yet listed.
    pub fn pending(&self) -> Vec<Resource> {
        self.tables
            .iter()
            .filter(|(_, t)| !t.synced)
            .map(|(r, _)| *r)
            .collect()
    }

    /// Applies one event; returns whether the live objects changed.
    pub fn apply(&mut self, update: Update) -> bool {
        let table = self.tables.entry(update.resource).or_default();
        match update.event {
            Event::Apply { key, value } => {
                let new = stored(table.live.get(&key), value);
                match new {
                    Some(s) => table.live.insert(key, s.clone()).as_ref() != Some(&s),
                    None => table.live.remove(&key).is_some(),
                }
            }
            Event::Delete { key } => table.live.remove(&key).is_some(),
            Event::Init => {
                table.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply { key, value } => {
                let new = stored(table.live.get(&key), value);
                if let (Some(buf), Some(s)) = (table.relist.as_mut(), new) {
                    buf.insert(key, s);
                }
                false
            }
            Event::InitDone => {
                let Some(buf) = table.relist.take() else {
                    return false;
                };
                let changed = buf != table.live || !table.synced;
                table.live = buf;
                table.synced = true;
                changed
            }
            Event::Absent => {
                let changed = !table.live.is_empty() || !table.synced;
                table.live.clear();
                table.relist = None;
                table.synced = true;
                changed
            }
        }
    }

    fn live(&self, r: Resource) -> impl Iterator<Item = &Stored> {
        self.tables
            .get(&r)
            .into_iter()
            .flat_map(|t| t.live.values())
    }

    /// The snapshot of the live objects.
    pub fn snapshot(&self) -> Snapshot {
        let mut warnings = Vec::new();
        let mut namespaces: BTreeMap<String, NamespaceSpec> = BTreeMap::new();
        for s in self.live(Resource::Namespace) {
            if let Stored::Namespace(ns) = s {
                namespaces.insert(ns.name.clone(), ns.clone());
            }
        }
        let mut pods = Vec::new();
        let mut local_pods = Vec::new();
        let mut owners: BTreeMap<IpAddr, String> = BTreeMap::new();
        for s in self.live(Resource::Pod) {
            let Stored::Pod(p) = s else { continue };
            let full = p.spec.full_name();
            if let Some((ip, other)) = p
                .spec
                .ips
                .iter()
                .find_map(|ip| owners.get(ip).map(|o| (ip, o)))
            {
                warnings.push(format!(
                    "pod {full} left out: address {ip} is already used by pod {other}"
                ));
                continue;
            }
            for ip in &p.spec.ips {
                owners.insert(*ip, full.clone());
            }
            // A pod whose namespace object is not (or no longer) there
            // still gets its namespace's name label.
            namespaces
                .entry(p.spec.namespace.clone())
                .or_insert_with(|| NamespaceSpec {
                    name: p.spec.namespace.clone(),
                    labels: BTreeMap::new(),
                    annotations: BTreeMap::new(),
                });
            if p.node_name.as_deref().is_none_or(|n| n == self.node_name) {
                local_pods.push(full);
            }
            pods.push(p.spec.clone());
        }
        let mut node = None;
        let mut remote = HostSpec::default();
        for s in self.live(Resource::Node) {
            let Stored::Node(n) = s else { continue };
            if n.name == self.node_name {
                node = Some(HostSpec {
                    ips: n.ips.clone(),
                    labels: n.labels.clone(),
                });
            } else {
                for ip in &n.ips {
                    if !remote.ips.contains(ip) {
                        remote.ips.push(*ip);
                    }
                }
            }
        }
        let mut apiserver = HostSpec::default();
        for s in self.live(Resource::ApiServer) {
            let Stored::ApiServer(ips) = s else { continue };
            for ip in ips {
                if !apiserver.ips.contains(ip) {
                    apiserver.ips.push(*ip);
                }
            }
        }
        // In name order (the table's keys are the names).
        let mut cidr_groups = Vec::new();
        for s in self.live(Resource::CidrGroup) {
            match s {
                Stored::CidrGroup(Ok(g)) => cidr_groups.push(g.clone()),
                Stored::CidrGroup(Err(reason)) => {
                    warnings.push(format!("CIDR group left out: {reason}"))
                }
                _ => {}
            }
        }
        let mut policies = Vec::new();
        let mut status = Vec::new();
        for kind in POLICY_KINDS {
            for s in self.live(Resource::Policy(kind)) {
                let Stored::Policy(e) = s else { continue };
                if let Some(p) = &e.in_force {
                    policies.push(PolicyObject {
                        kind: p.kind,
                        namespace: p.namespace.clone(),
                        name: p.name.clone(),
                        resource_version: p.resource_version.clone(),
                        json: p.json.clone(),
                    });
                }
                status.push(e.status.clone());
            }
        }
        Snapshot {
            topology: Topology {
                namespaces: namespaces.into_values().collect(),
                pods,
                node,
                kube_apiserver: (!apiserver.ips.is_empty()).then_some(apiserver),
                remote_nodes: (!remote.ips.is_empty()).then_some(remote),
                world: None,
                nodes: Vec::new(),
                cidr_groups,
            },
            local_pods,
            policies,
            status,
            warnings,
        }
    }
}

/// What the store keeps for a new value, given the value it replaces.
fn stored(old: Option<&Stored>, value: Value) -> Option<Stored> {
    match value {
        Value::Namespace(ns) => Some(Stored::Namespace(ns)),
        Value::Pod(p) => p.map(Stored::Pod),
        Value::Node(n) => Some(Stored::Node(n)),
        Value::ApiServer(ips) => Some(Stored::ApiServer(ips)),
        Value::CidrGroup(g) => Some(Stored::CidrGroup(g)),
        Value::Policy(raw) => {
            let previous = match old {
                Some(Stored::Policy(e)) => e.in_force.as_ref(),
                _ => None,
            };
            Some(Stored::Policy(judge_policy(previous, raw)))
        }
    }
}

/// Loads a policy object: a valid one is in force; an invalid one leaves
/// the previous valid version (if any) in force.
fn judge_policy(previous: Option<&RawPolicy>, raw: RawPolicy) -> PolicyEntry {
    let source = source_name(raw.kind, raw.namespace.as_deref(), &raw.name);
    let result = match policy_model::load::load_str(&raw.json, &source) {
        Ok(set) if set.policies.len() == 1 => Ok(()),
        Ok(set) => Err(format!(
            "expected one policy object, loaded {}{}",
            set.policies.len(),
            set.warnings
                .iter()
                .map(|w| format!("; {w}"))
                .collect::<String>()
        )),
        Err(errors) => Err(errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")),
    };
    let status = |valid: bool, reason: Option<String>| PolicyStatus {
        kind: raw.kind,
        namespace: raw.namespace.clone(),
        name: raw.name.clone(),
        valid,
        reason,
    };
    match result {
        Ok(()) => PolicyEntry {
            status: status(true, None),
            in_force: Some(raw),
        },
        Err(reason) => {
            let (reason, in_force) = match previous {
                Some(p) => (
                    format!(
                        "resourceVersion {} is invalid: {reason}; resourceVersion {} stays in force",
                        raw.resource_version, p.resource_version
                    ),
                    Some(p.clone()),
                ),
                None => (
                    format!(
                        "resourceVersion {} is invalid: {reason}; no valid version to keep, the object is ignored",
                        raw.resource_version
                    ),
                    None,
                ),
            };
            PolicyEntry {
                status: status(false, Some(reason)),
                in_force,
            }
        }
    }
}

#[cfg(test)]
mod tests;
