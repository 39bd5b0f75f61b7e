//! What can change: one input object at a time.

use crate::load::LoadedPolicy;
use crate::origin::{PolicyKind, PolicyRef};
use crate::rules::PolicyRule;
use crate::topology::cidr_group::CidrGroup;
use crate::topology::{HostSpec, NamespaceSpec, PodSpec};
use std::net::IpAddr;
use std::sync::Arc;

/// Which policy object rules came from: kind, namespace and name (the file
/// it was read from is not part of it, so a policy moved between files is
/// the same object).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub kind: PolicyKind,
    /// `None` for cluster-wide policies.
    pub namespace: Option<String>,
    pub name: String,
}

impl PolicyKey {
    /// The key of the object a rule came from.
    pub fn of(origin: &PolicyRef) -> Self {
        PolicyKey {
            kind: origin.kind,
            namespace: origin.namespace.clone(),
            name: origin.name.clone(),
        }
    }
}

/// The addresses of the node's non-pod peers: the node itself (`host`,
/// with the labels `fromNodes` selectors match), the kube-apiserver and the
/// other nodes (`remote-node`), as [`Topology::for_node`] gives them.
///
/// [`Topology::for_node`]: crate::topology::Topology::for_node
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hosts {
    pub node: Option<HostSpec>,
    pub kube_apiserver: Option<HostSpec>,
    pub remote_nodes: Option<HostSpec>,
}

/// One change to the engine's inputs.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A policy object added or replaced: all of its rules (possibly
    /// none).
    PolicyUpsert {
        key: PolicyKey,
        rules: Vec<PolicyRule>,
    },
    /// A policy object deleted.
    PolicyDelete(PolicyKey),
    /// A pod added or replaced (labels, addresses, ports, node).
    PodUpsert(Arc<PodSpec>),
    /// A pod deleted.
    PodDelete { namespace: String, name: String },
    /// A namespace added or relabelled: every pod in it may change
    /// identity.
    NamespaceUpsert(NamespaceSpec),
    /// A namespace deleted (its pods lose the namespace's labels).
    NamespaceDelete(String),
    /// DNS answered `name` with these addresses.
    Learned { name: String, ips: Vec<IpAddr> },
    /// These addresses of `name` expired.
    Expired { name: String, ips: Vec<IpAddr> },
    /// Every learned name as it is now (what a daemon's store holds after
    /// a batch of answers and expiries): one change for many.
    Names(crate::resolve::FqdnCache),
    /// The node's, the kube-apiserver's or the other nodes' addresses (or
    /// the node's labels) changed.
    Hosts(Hosts),
    /// Every CIDR group as it is now (CiliumCIDRGroup objects): the
    /// policies naming groups select their new CIDRs.
    CidrGroups(Vec<CidrGroup>),
}

impl Change {
    /// The upsert of one loaded policy object.
    pub fn policy(p: LoadedPolicy) -> Self {
        Change::PolicyUpsert {
            key: PolicyKey::of(&p.origin),
            rules: p.rules,
        }
    }
}
