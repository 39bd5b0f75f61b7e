//! The engine: inputs by object, the numbering it keeps, and the state it
//! resolves after each change.

use super::change::{Change, Hosts, PolicyKey};
use super::delta::{Delta, NodeState, diff_states};
use crate::identity::{Identity, IdentityKind, NumericIdentity};
use crate::resolve::{Cluster, Endpoint, EndpointPolicy, FqdnCache, Numbering};
use crate::rules::PolicyRule;
use crate::topology::{HostSpec, NamespaceSpec, PodSpec, Topology};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};

/// The policy of one node, kept up to date one input change at a time.
///
/// Build it from the node's view of the topology
/// ([`Topology::for_node`]), the policy objects, the learned names and
/// the node's name (a pod is local when [`PodSpec::is_on`] that node);
/// then feed it every [`Change`] and write the [`Delta`] each returns.
/// [`Self::state`] is the whole state (for a restart), [`Self::numbering`]
/// the numbers handed out (to keep them across a restart).
#[derive(Debug, Clone)]
pub struct IncrementalCluster {
    node: String,
    namespaces: BTreeMap<String, NamespaceSpec>,
    /// Pods by `namespace/name`.
    pods: BTreeMap<String, PodSpec>,
    hosts: Hosts,
    world: Option<HostSpec>,
    policies: BTreeMap<PolicyKey, Vec<PolicyRule>>,
    fqdn: FqdnCache,
    numbering: Numbering,
    state: NodeState,
}

impl IncrementalCluster {
    /// Resolves `topology` (the node's view), `policies` and `fqdn` for the
    /// node `node`, numbering as [`Cluster::new`] does (identities in
    /// allocation order; a local pod's endpoint id is its topology
    /// position + 1).
    pub fn new(
        topology: Topology,
        policies: impl IntoIterator<Item = (PolicyKey, Vec<PolicyRule>)>,
        fqdn: FqdnCache,
        node: &str,
    ) -> Self {
        let mut numbering = Numbering::default();
        for (i, p) in topology.pods.iter().enumerate() {
            if p.is_on(node) {
                numbering
                    .endpoints
                    .insert(p.full_name(), u16::try_from(i + 1).unwrap_or(u16::MAX));
            }
        }
        Self::with_numbering(topology, policies, fqdn, node, numbering)
    }

    /// As [`Self::new`], keeping the numbers of `numbering` (what
    /// [`Self::numbering`] returned before a restart). Pods and label sets
    /// it does not list get new numbers.
    pub fn with_numbering(
        topology: Topology,
        policies: impl IntoIterator<Item = (PolicyKey, Vec<PolicyRule>)>,
        fqdn: FqdnCache,
        node: &str,
        numbering: Numbering,
    ) -> Self {
        let mut policy_map: BTreeMap<PolicyKey, Vec<PolicyRule>> = BTreeMap::new();
        for (k, rules) in policies {
            policy_map.entry(k).or_default().extend(rules);
        }
        let mut engine = IncrementalCluster {
            node: node.to_string(),
            namespaces: topology
                .namespaces
                .iter()
                .map(|n| (n.name.clone(), n.clone()))
                .collect(),
            pods: BTreeMap::new(),
            hosts: Hosts {
                node: topology.node.clone(),
                kube_apiserver: topology.kube_apiserver.clone(),
                remote_nodes: topology.remote_nodes.clone(),
            },
            world: topology.world.clone(),
            policies: policy_map,
            fqdn,
            numbering,
            state: NodeState::default(),
        };
        engine.pods = topology
            .pods
            .iter()
            .map(|p| (p.full_name(), p.clone()))
            .collect();
        engine.assign_endpoint_ids();
        // The first resolve sees the pods in the topology's order, so new
        // identities are numbered as `Cluster::new` numbers them.
        engine.state = engine.resolve(&topology);
        engine
    }

    /// Applies one change and returns what it did.
    pub fn apply(&mut self, change: Change) -> Delta {
        match change {
            Change::PolicyUpsert { key, rules } => {
                self.policies.insert(key, rules);
            }
            Change::PolicyDelete(key) => {
                self.policies.remove(&key);
            }
            Change::PodUpsert(pod) => {
                self.pods.insert(pod.full_name(), pod);
            }
            Change::PodDelete { namespace, name } => {
                self.pods.remove(&format!("{namespace}/{name}"));
            }
            Change::NamespaceUpsert(ns) => {
                self.namespaces.insert(ns.name.clone(), ns);
            }
            Change::NamespaceDelete(name) => {
                self.namespaces.remove(&name);
            }
            Change::Learned { name, ips } => {
                for ip in ips {
                    self.fqdn.learn(&name, ip);
                }
            }
            Change::Expired { name, ips } => {
                let name = crate::l7::dns::normalize_name(&name);
                if let Some(set) = self.fqdn.names.get_mut(&name) {
                    for ip in &ips {
                        set.remove(ip);
                    }
                    if set.is_empty() {
                        self.fqdn.names.remove(&name);
                    }
                }
            }
            Change::Hosts(h) => self.hosts = h,
        }
        self.assign_endpoint_ids();
        let topo = self.topology();
        let new = self.resolve(&topo);
        let delta = diff_states(&self.state, &new);
        self.state = new;
        delta
    }

    /// Local pods keep their ids; a new one gets the lowest id no local
    /// pod has; a pod that is gone or no longer local frees its id.
    fn assign_endpoint_ids(&mut self) {
        let node = &self.node;
        let pods = &self.pods;
        self.numbering
            .endpoints
            .retain(|name, _| pods.get(name).is_some_and(|p| p.is_on(node)));
        let mut taken: BTreeSet<u16> = self.numbering.endpoints.values().copied().collect();
        let mut next: u16 = 1;
        for (name, p) in pods {
            if !p.is_on(node) || self.numbering.endpoints.contains_key(name) {
                continue;
            }
            while taken.contains(&next) {
                next += 1;
            }
            taken.insert(next);
            self.numbering.endpoints.insert(name.clone(), next);
        }
    }

    /// Resolves everything from scratch with the current numbering, and
    /// records the identities it handed out.
    fn resolve(&mut self, topo: &Topology) -> NodeState {
        let cluster =
            Cluster::with_numbering(topo.clone(), self.rules(), &self.fqdn, &self.numbering);
        self.numbering.identities = cluster
            .identities()
            .values()
            .filter(|i| i.kind != IdentityKind::Reserved)
            .map(|i| (i.labels.clone(), i.id))
            .collect();
        for id in cluster.identities().keys() {
            if id.is_local() {
                self.numbering.next_local = self.numbering.next_local.max(id.0 + 1);
            } else if id.0 >= NumericIdentity::FIRST_ENDPOINT {
                self.numbering.next_endpoint = self.numbering.next_endpoint.max(id.0 + 1);
            }
        }
        let mut state = NodeState {
            identities: cluster.identities().clone(),
            ipcache: cluster.ipcache().iter().copied().collect(),
            endpoints: BTreeMap::new(),
        };
        for ep in cluster.endpoints() {
            if self.numbering.endpoints.get(&ep.full_name()) == Some(&ep.id) {
                state
                    .endpoints
                    .insert(ep.id, (ep.clone(), cluster.endpoint_policy(ep)));
            }
        }
        state
    }

    /// The node's view of the topology as it is now (pods and namespaces
    /// in name order).
    pub fn topology(&self) -> Topology {
        Topology {
            namespaces: self.namespaces.values().cloned().collect(),
            pods: self.pods.values().cloned().collect(),
            node: self.hosts.node.clone(),
            kube_apiserver: self.hosts.kube_apiserver.clone(),
            remote_nodes: self.hosts.remote_nodes.clone(),
            world: self.world.clone(),
            nodes: Vec::new(),
        }
    }

    /// Every rule, in the order resolution reads them: by policy key,
    /// then as the object lists them.
    pub fn rules(&self) -> Vec<PolicyRule> {
        self.policies.values().flatten().cloned().collect()
    }

    /// The keys of the policy objects in force.
    pub fn policy_keys(&self) -> impl Iterator<Item = &PolicyKey> {
        self.policies.keys()
    }

    /// The learned names.
    pub fn fqdn(&self) -> &FqdnCache {
        &self.fqdn
    }

    /// The numbers handed out (identities of live label sets, endpoint
    /// ids of local pods, and the floors for new numbers).
    pub fn numbering(&self) -> &Numbering {
        &self.numbering
    }

    /// The whole current state.
    pub fn state(&self) -> &NodeState {
        &self.state
    }

    /// One identity.
    pub fn identity(&self, id: NumericIdentity) -> Option<&Identity> {
        self.state.identities.get(&id)
    }

    /// The ipcache, longest prefixes first.
    pub fn ipcache(&self) -> Vec<(IpNet, NumericIdentity)> {
        self.state.ipcache_ordered()
    }

    /// Local endpoints, by id.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.state.endpoints.values().map(|(e, _)| e)
    }

    /// The resolved policy of local endpoint `id`.
    pub fn endpoint_policy(&self, id: u16) -> Option<&EndpointPolicy> {
        self.state.endpoints.get(&id).map(|(_, p)| p)
    }
}
