//! The engine: inputs by object, the numbering it keeps, the selector
//! cache, and each local endpoint's policy kept per peer identity.
//!
//! A change is applied in three stages (as Cilium's policy repository,
//! selector cache and endpoint regeneration):
//! 1. inputs: the object is replaced, identities of the pods it touches
//!    are acquired or released, ipcache entries of the addresses it
//!    touches are rewritten; CIDR and FQDN identities are recomputed when
//!    the prefixes or toFQDNs selectors of the rules, the learned names or
//!    the cluster's addresses among them changed;
//! 2. the selector cache: every identity added is matched against every
//!    cached selector once, a removed one leaves every selection it was
//!    in; each (selector, identity) that flipped is recorded;
//! 3. policies, per policy owner (local endpoints with the same identity
//!    and named ports share one): an owner whose selecting rules or named
//!    ports changed is resolved again; any other owner recomputes only the
//!    tables (map entries of one peer identity) of the identities that
//!    flipped in a selector its rules use. Both use the resolution code of
//!    [`Cluster`](crate::Cluster) ([`DirectionPlan`]).

use super::change::{Change, Hosts, PolicyKey};
use super::delta::{Delta, EndpointChange, IpcacheChange, NodeState};
use crate::api::FqdnSelector;
use crate::identity::{Identity, IdentityKind, NumericIdentity};
use crate::labels::{LabelSet, POD_NAMESPACE_LABEL};
use crate::mapstate::{MapChange, MapKey};
use crate::resolve::endpoint::{DirectionPlan, Selections, Table, add_direction, empty_policy};
use crate::resolve::identities::{
    external_identities, fqdn_selectors_of, named_ports_of, patterns_of, prefixes_of,
};
use crate::resolve::selectors::{identity_namespace, node_labels, peer_namespaces, peer_selects};
use crate::resolve::{
    Endpoint, EndpointPolicy, FqdnCache, NamedPort, Numbering, expand_rule, names_cidr_groups,
};
use crate::rules::{
    Direction, Peer, PolicyRule, PortSpec, Protocol, Subject, Visibility, visibility_of,
};
use crate::topology::cidr_group::CidrGroup;
use crate::topology::{HostSpec, NamespaceSpec, PodSpec, Topology};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Local endpoints with the same identity and named ports have the same
/// policy: they share one owner.
type OwnerKey = (NumericIdentity, Vec<NamedPort>, Vec<Visibility>);

const DIRECTIONS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

/// One cached selector: the identities it selects and how many rule
/// entries use it.
#[derive(Debug, Clone)]
struct Selection {
    ids: Arc<Vec<NumericIdentity>>,
    users: usize,
}

/// The resolved policy shared by the local endpoints of one [`OwnerKey`].
#[derive(Debug, Clone)]
struct Owner {
    endpoints: BTreeSet<u16>,
    /// Ingress and egress plans.
    plans: Vec<DirectionPlan>,
    /// Per direction: peer identity (0 = wildcard) -> its table.
    tables: Vec<BTreeMap<NumericIdentity, Table>>,
    /// Selectors the plans evaluate per identity (entry peers, requires).
    peers: HashSet<Peer>,
    /// Whether some selecting rule has an egress named port (which every
    /// pod's named ports decide).
    egress_named: bool,
    /// The assembled policy (endpoint id 0).
    policy: EndpointPolicy,
}

/// The work one change leaves for the later stages.
#[derive(Default)]
struct Work {
    /// CIDR and FQDN identities must be recomputed.
    external: bool,
    added: BTreeSet<NumericIdentity>,
    removed: BTreeSet<NumericIdentity>,
    /// Same number and labels, different record (an FQDN identity's
    /// representative address, the host's labels).
    changed: BTreeSet<NumericIdentity>,
    /// Owners to resolve again.
    full: BTreeSet<OwnerKey>,
    /// Some port name maps to a different set of ports.
    named_ports_changed: bool,
    /// Local endpoints whose record or owner changed.
    endpoints: BTreeSet<u16>,
    delta: Delta,
}

/// The policy of one node, kept up to date one input change at a time.
///
/// Build it from the node's view of the topology
/// ([`Topology::for_node`]), the policy objects, the learned names and
/// the node's name (a pod is local when [`PodSpec::is_on`] that node);
/// then feed it every [`Change`] and write the [`Delta`] each returns.
/// [`Self::state`] is the whole state (for a restart), [`Self::numbering`]
/// the numbers handed out (to keep them across a restart).
///
/// Numbering: a label set keeps its identity while some pod (endpoint
/// identities) or some prefix / learned address (CIDR and FQDN ones)
/// has it; when the last goes the identity is released and its number is
/// never handed out again by this engine (new numbers only grow, from
/// [`Numbering::next_endpoint`] / [`Numbering::next_local`]). A local pod
/// keeps its endpoint id while it exists and is local; a new local pod
/// gets the lowest id no local pod has (an id is reused only after the
/// delta removing its endpoint).
///
/// Pods are expected to have distinct addresses (as the topology checks).
#[derive(Debug, Clone)]
pub struct IncrementalCluster {
    node: String,
    namespaces: BTreeMap<String, NamespaceSpec>,
    /// Pods by `namespace/name`.
    pods: BTreeMap<String, Arc<PodSpec>>,
    hosts: Hosts,
    world: Option<HostSpec>,
    /// The rules in force, CIDR group peers expanded.
    policies: BTreeMap<PolicyKey, Arc<Vec<PolicyRule>>>,
    /// The policies whose rules name CIDR groups, as given (unexpanded):
    /// expanded again whenever the groups change.
    group_policies: BTreeMap<PolicyKey, Arc<Vec<PolicyRule>>>,
    /// The cluster's CIDR groups.
    cidr_groups: Vec<CidrGroup>,
    /// Policy namespace (`None`: cluster-wide) -> its policies. A
    /// namespaced policy's rules select only pods of its namespace.
    policies_by_namespace: BTreeMap<Option<String>, BTreeSet<PolicyKey>>,
    fqdn: FqdnCache,
    numbering: Numbering,
    /// Endpoint identity -> how many pods have it.
    endpoint_users: HashMap<NumericIdentity, usize>,
    /// Endpoint identities by pod namespace.
    identities_by_namespace: HashMap<String, BTreeSet<NumericIdentity>>,
    /// Every pod's identity, by `namespace/name`.
    pod_identities: HashMap<String, NumericIdentity>,
    /// Pod addresses -> identity.
    pod_addresses: BTreeMap<IpNet, NumericIdentity>,
    /// Node, kube-apiserver and remote-node addresses (they win over pods).
    host_addresses: BTreeMap<IpNet, NumericIdentity>,
    /// CIDR and FQDN identities' prefixes.
    external_addresses: BTreeMap<IpNet, NumericIdentity>,
    /// Prefixes the rules name, with how many times.
    prefix_refs: BTreeMap<IpNet, usize>,
    /// toFQDNs selectors of the rules, with how many times.
    fqdn_refs: BTreeMap<FqdnSelector, usize>,
    /// Port name -> (protocol, port) -> how many pods name it so.
    named_ports: HashMap<String, BTreeMap<(Protocol, u16), usize>>,
    node_labels: LabelSet,
    /// The selector cache: every peer and requires selector of the rules.
    selections: HashMap<Peer, Selection>,
    /// The cached selectors by the namespaces they are confined to
    /// (`None`: not confined), so a new endpoint identity is matched only
    /// against the selectors that can select it.
    selectors_by_namespace: HashMap<Option<String>, HashSet<Peer>>,
    owners: BTreeMap<OwnerKey, Owner>,
    /// Local endpoints and their owners.
    endpoints: BTreeMap<u16, (Endpoint, OwnerKey)>,
    state: NodeState,
}

impl IncrementalCluster {
    /// Resolves `topology` (the node's view), `policies` and `fqdn` for the
    /// node `node`, numbering as [`Cluster::new`](crate::Cluster::new) does
    /// (identities in allocation order; a local pod's endpoint id is its
    /// topology position + 1).
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
        mut numbering: Numbering,
    ) -> Self {
        numbering.next_endpoint = numbering.next_endpoint.max(NumericIdentity::FIRST_ENDPOINT);
        numbering.next_local = numbering.next_local.max(NumericIdentity::FIRST_LOCAL);
        for id in numbering.identities.values() {
            if id.is_local() {
                numbering.next_local = numbering.next_local.max(id.0 + 1);
            } else {
                numbering.next_endpoint = numbering.next_endpoint.max(id.0 + 1);
            }
        }
        // Label sets the inputs no longer have are dropped by the first
        // resolve; the floors keep their numbers from coming back.
        let given_identities = std::mem::take(&mut numbering.identities);
        let given_endpoints = std::mem::take(&mut numbering.endpoints);
        let mut engine = IncrementalCluster {
            node: node.to_string(),
            namespaces: topology
                .namespaces
                .iter()
                .map(|n| (n.name.clone(), n.clone()))
                .collect(),
            pods: BTreeMap::new(),
            hosts: Hosts::default(),
            world: topology.world.clone(),
            policies: BTreeMap::new(),
            group_policies: BTreeMap::new(),
            cidr_groups: topology.cidr_groups.clone(),
            policies_by_namespace: BTreeMap::new(),
            fqdn,
            numbering,
            endpoint_users: HashMap::new(),
            identities_by_namespace: HashMap::new(),
            pod_identities: HashMap::new(),
            pod_addresses: BTreeMap::new(),
            host_addresses: BTreeMap::new(),
            external_addresses: BTreeMap::new(),
            prefix_refs: BTreeMap::new(),
            fqdn_refs: BTreeMap::new(),
            named_ports: HashMap::new(),
            node_labels: LabelSet::new(),
            selections: HashMap::new(),
            selectors_by_namespace: HashMap::new(),
            owners: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            state: NodeState::default(),
        };
        for (id, name) in crate::identity::RESERVED {
            engine.state.identities.insert(
                *id,
                Identity {
                    id: *id,
                    labels: crate::identity::reserved_labels(name),
                    kind: IdentityKind::Reserved,
                },
            );
        }
        for (p, id) in [
            ("0.0.0.0/0", NumericIdentity::WORLD_IPV4),
            ("::/0", NumericIdentity::WORLD_IPV6),
        ] {
            engine
                .state
                .ipcache
                .insert(p.parse().expect("valid literal"), id);
        }
        let mut w = Work::default();
        // The given numbers are reserved before any new one is handed out.
        engine.numbering.endpoints = given_endpoints;
        engine.numbering.identities = given_identities;
        engine.set_hosts(
            Hosts {
                node: topology.node.clone(),
                kube_apiserver: topology.kube_apiserver.clone(),
                remote_nodes: topology.remote_nodes.clone(),
            },
            &mut w,
        );
        // Pods in topology order: new identities are numbered as
        // `Cluster::new` numbers them.
        for p in topology.pods {
            engine.set_pod(p.full_name(), Some(p), &mut w);
        }
        let mut by_key: BTreeMap<PolicyKey, Vec<PolicyRule>> = BTreeMap::new();
        for (k, rules) in policies {
            by_key.entry(k).or_default().extend(rules);
        }
        for (k, rules) in by_key {
            engine.upsert_policy(k, rules, &mut w);
        }
        w.external = true;
        engine.finish(w);
        // Label sets of the given numbering the inputs do not have.
        let live: BTreeSet<NumericIdentity> = engine.state.identities.keys().copied().collect();
        engine
            .numbering
            .identities
            .retain(|_, id| live.contains(id));
        engine
    }

    /// Applies one change and returns what it did.
    pub fn apply(&mut self, change: Change) -> Delta {
        let mut w = Work::default();
        match change {
            Change::PolicyUpsert { key, rules } => self.upsert_policy(key, rules, &mut w),
            Change::PolicyDelete(key) => {
                self.group_policies.remove(&key);
                self.set_policy(key, None, &mut w)
            }
            Change::CidrGroups(groups) => self.set_cidr_groups(groups, &mut w),
            Change::PodUpsert(pod) => self.set_pod(pod.full_name(), Some(pod), &mut w),
            Change::PodDelete { namespace, name } => {
                self.set_pod(format!("{namespace}/{name}"), None, &mut w)
            }
            Change::NamespaceUpsert(ns) => {
                let name = ns.name.clone();
                self.namespaces.insert(name.clone(), ns);
                self.relabel_namespace(&name, &mut w);
            }
            Change::NamespaceDelete(name) => {
                self.namespaces.remove(&name);
                self.relabel_namespace(&name, &mut w);
            }
            Change::Learned { name, ips } => {
                for ip in ips {
                    self.fqdn.learn(&name, ip);
                }
                w.external = true;
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
                w.external = true;
            }
            Change::Names(cache) => {
                if cache != self.fqdn {
                    self.fqdn = cache;
                    w.external = true;
                }
            }
            Change::Hosts(h) => self.set_hosts(h, &mut w),
        }
        self.finish(w)
    }

    // Stage 1: inputs.

    /// A policy object as given: rules naming CIDR groups are kept as
    /// given and put in force expanded against the groups.
    fn upsert_policy(&mut self, key: PolicyKey, rules: Vec<PolicyRule>, w: &mut Work) {
        if rules.iter().any(names_cidr_groups) {
            let expanded = rules
                .iter()
                .map(|r| expand_rule(r, &self.cidr_groups))
                .collect();
            self.group_policies.insert(key.clone(), Arc::new(rules));
            self.set_policy(key, Some(expanded), w);
        } else {
            self.group_policies.remove(&key);
            self.set_policy(key, Some(rules), w);
        }
    }

    /// New CIDR groups: the policies naming groups are expanded again (the
    /// ones whose rules come out different are put in force again), and
    /// the CIDR identities take the groups' labels.
    fn set_cidr_groups(&mut self, groups: Vec<CidrGroup>, w: &mut Work) {
        if groups == self.cidr_groups {
            return;
        }
        self.cidr_groups = groups;
        let keys: Vec<PolicyKey> = self.group_policies.keys().cloned().collect();
        for key in keys {
            let expanded: Vec<PolicyRule> = self.group_policies[&key]
                .iter()
                .map(|r| expand_rule(r, &self.cidr_groups))
                .collect();
            if self.policies.get(&key).map(|v| v.as_slice()) != Some(expanded.as_slice()) {
                self.set_policy(key, Some(expanded), w);
            }
        }
        w.external = true;
    }

    fn set_policy(&mut self, key: PolicyKey, rules: Option<Vec<PolicyRule>>, w: &mut Work) {
        let old = self.policies.remove(&key);
        let new = rules.map(Arc::new);
        let ns_key = key.namespace.clone();
        match &new {
            Some(rules) => {
                self.policies.insert(key.clone(), rules.clone());
                self.policies_by_namespace
                    .entry(ns_key.clone())
                    .or_default()
                    .insert(key);
            }
            None => {
                if let Some(set) = self.policies_by_namespace.get_mut(&ns_key) {
                    set.remove(&key);
                    if set.is_empty() {
                        self.policies_by_namespace.remove(&ns_key);
                    }
                }
            }
        }
        let old_rules: &[PolicyRule] = old.as_deref().map_or(&[], |v| v.as_slice());
        let new_rules: &[PolicyRule] = new.as_deref().map_or(&[], |v| v.as_slice());
        for r in new_rules {
            self.use_rule(r, true, w);
        }
        for r in old_rules {
            self.use_rule(r, false, w);
        }
        // Owners the old or new rules select are resolved again.
        for (okey, _) in self.owners.iter() {
            if w.full.contains(okey) {
                continue;
            }
            let Some(identity) = self.state.identities.get(&okey.0) else {
                continue;
            };
            if ns_key.is_some()
                && identity.labels.get(POD_NAMESPACE_LABEL).map(|v| &v.value) != ns_key.as_ref()
            {
                continue;
            }
            let selects = |r: &PolicyRule| match &r.subject {
                Subject::Endpoints(sel) => sel.matches(&identity.labels),
                Subject::Nodes(_) => false,
            };
            if old_rules.iter().chain(new_rules).any(selects) {
                w.full.insert(okey.clone());
            }
        }
    }

    /// Counts (or uncounts) what one rule uses: its selectors in the
    /// selector cache, its prefixes and toFQDNs selectors.
    fn use_rule(&mut self, r: &PolicyRule, add: bool, w: &mut Work) {
        let mut peers: Vec<Peer> = Vec::new();
        for d in [&r.ingress, &r.egress] {
            for e in &d.entries {
                peers.extend(e.peers.iter().cloned());
            }
            peers.extend(d.requires.iter().map(|s| Peer::Endpoints(s.clone())));
        }
        for p in peers {
            if add {
                if let Some(s) = self.selections.get_mut(&p) {
                    s.users += 1;
                    continue;
                }
                let ids = self.evaluate(&p);
                for scope in selector_scopes(&p) {
                    self.selectors_by_namespace
                        .entry(scope)
                        .or_default()
                        .insert(p.clone());
                }
                self.selections.insert(
                    p,
                    Selection {
                        ids: Arc::new(ids),
                        users: 1,
                    },
                );
            } else if let Some(s) = self.selections.get_mut(&p) {
                s.users -= 1;
                if s.users == 0 {
                    self.selections.remove(&p);
                    for scope in selector_scopes(&p) {
                        if let Some(set) = self.selectors_by_namespace.get_mut(&scope) {
                            set.remove(&p);
                            if set.is_empty() {
                                self.selectors_by_namespace.remove(&scope);
                            }
                        }
                    }
                }
            }
        }
        for p in prefixes_of(r) {
            w.external |= count(&mut self.prefix_refs, p, add);
        }
        for sel in fqdn_selectors_of(r) {
            w.external |= count(&mut self.fqdn_refs, sel.clone(), add);
        }
    }

    fn relabel_namespace(&mut self, ns: &str, w: &mut Work) {
        let prefix = format!("{ns}/");
        let names: Vec<String> = self
            .pods
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for name in names {
            let pod = self.pods.get(&name).cloned();
            self.set_pod(name, pod, w);
        }
    }

    fn set_pod(&mut self, name: String, new: Option<Arc<PodSpec>>, w: &mut Work) {
        let old = self.pods.remove(&name);
        // Named ports of every pod (egress named ports resolve over them).
        for (pod, add) in [(&new, true), (&old, false)] {
            for (n, proto, port) in pod.iter().flat_map(|p| named_ports_of(p)) {
                let ports = self.named_ports.entry(n.clone()).or_default();
                w.named_ports_changed |= count(ports, (proto, port), add);
                if ports.is_empty() {
                    self.named_ports.remove(&n);
                }
            }
        }
        // Identity: acquire the new one before releasing the old one.
        let new_id = new.as_ref().map(|p| {
            let labels = self.pod_labels(p);
            self.acquire_endpoint_identity(labels, w)
        });
        if let Some(old_id) = self.pod_identities.remove(&name) {
            self.release_endpoint_identity(old_id, w);
        }
        // Addresses.
        let mut touched: BTreeSet<IpNet> = BTreeSet::new();
        for a in old.iter().flat_map(|p| p.addresses()) {
            self.pod_addresses.remove(&IpNet::from(a));
            touched.insert(IpNet::from(a));
        }
        if let (Some(p), Some(id)) = (&new, new_id) {
            self.pod_identities.insert(name.clone(), id);
            for a in p.addresses() {
                self.pod_addresses.insert(IpNet::from(a), id);
                touched.insert(IpNet::from(a));
            }
        }
        self.addresses_touched(&touched, w);
        // The local endpoint.
        let old_local = old.as_ref().is_some_and(|p| p.is_on(&self.node));
        let new_local = new.as_ref().is_some_and(|p| p.is_on(&self.node));
        if old_local
            && !new_local
            && let Some(id) = self.numbering.endpoints.remove(&name)
        {
            self.detach_endpoint(id);
            w.endpoints.insert(id);
        }
        if let (true, Some(p), Some(identity)) = (new_local, &new, new_id) {
            let id = match self.numbering.endpoints.get(&name) {
                Some(id) => *id,
                None => {
                    let taken: BTreeSet<u16> = self.numbering.endpoints.values().copied().collect();
                    let id = (1..=u16::MAX)
                        .find(|i| !taken.contains(i))
                        .unwrap_or(u16::MAX);
                    self.numbering.endpoints.insert(name.clone(), id);
                    id
                }
            };
            let ep = Endpoint {
                id,
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                identity,
                ips: p.addresses(),
                named_ports: named_ports_of(p),
                visibility: visibility_of(
                    &p.annotations,
                    self.namespaces.get(&p.namespace).map(|n| &n.annotations),
                ),
            };
            let okey: OwnerKey = (identity, ep.named_ports.clone(), ep.visibility.clone());
            let same = self
                .endpoints
                .get(&id)
                .is_some_and(|(e, k)| *e == ep && *k == okey);
            if !same {
                self.detach_endpoint(id);
                let owner = self.owners.entry(okey.clone()).or_insert_with(|| {
                    w.full.insert(okey.clone());
                    Owner {
                        endpoints: BTreeSet::new(),
                        plans: Vec::new(),
                        tables: Vec::new(),
                        peers: HashSet::new(),
                        egress_named: false,
                        policy: empty_policy(&ep),
                    }
                });
                owner.endpoints.insert(id);
                self.endpoints.insert(id, (ep, okey));
                w.endpoints.insert(id);
            }
        }
        if let Some(p) = new {
            self.pods.insert(name, p);
        }
    }

    /// Takes endpoint `id` off its owner (dropping an owner left empty).
    fn detach_endpoint(&mut self, id: u16) {
        if let Some((_, okey)) = self.endpoints.remove(&id)
            && let Some(owner) = self.owners.get_mut(&okey)
        {
            owner.endpoints.remove(&id);
            if owner.endpoints.is_empty() {
                self.owners.remove(&okey);
            }
        }
    }

    fn pod_labels(&self, pod: &PodSpec) -> LabelSet {
        let view = Topology {
            namespaces: self
                .namespaces
                .get(&pod.namespace)
                .cloned()
                .into_iter()
                .collect(),
            ..Topology::default()
        };
        view.pod_labels(pod)
    }

    fn acquire_endpoint_identity(&mut self, labels: LabelSet, w: &mut Work) -> NumericIdentity {
        let id = match self.numbering.identities.get(&labels) {
            Some(id) if self.state.identities.contains_key(id) => *id,
            given => {
                let id = match given {
                    Some(id) => *id,
                    None => {
                        let id = NumericIdentity(self.numbering.next_endpoint);
                        self.numbering.next_endpoint += 1;
                        id
                    }
                };
                self.numbering.identities.insert(labels.clone(), id);
                let identity = Identity {
                    id,
                    labels,
                    kind: IdentityKind::Endpoint,
                };
                if let Some(ns) = identity_namespace(&identity) {
                    self.identities_by_namespace
                        .entry(ns.to_string())
                        .or_default()
                        .insert(id);
                }
                self.state.identities.insert(id, identity);
                w.identity_added(id);
                id
            }
        };
        *self.endpoint_users.entry(id).or_default() += 1;
        id
    }

    fn release_endpoint_identity(&mut self, id: NumericIdentity, w: &mut Work) {
        let Some(users) = self.endpoint_users.get_mut(&id) else {
            return;
        };
        *users -= 1;
        if *users > 0 {
            return;
        }
        self.endpoint_users.remove(&id);
        if let Some(i) = self.state.identities.remove(&id) {
            if let Some(ns) = identity_namespace(&i)
                && let Some(set) = self.identities_by_namespace.get_mut(ns)
            {
                set.remove(&id);
                if set.is_empty() {
                    self.identities_by_namespace.remove(ns);
                }
            }
            self.numbering.identities.remove(&i.labels);
        }
        w.identity_removed(id);
    }

    fn set_hosts(&mut self, hosts: Hosts, w: &mut Work) {
        self.hosts = hosts;
        let mut entries = BTreeMap::new();
        // Later entries win: the host identity beats kube-apiserver for
        // an address that is both, as in Cilium.
        for (spec, id) in [
            (&self.hosts.remote_nodes, NumericIdentity::REMOTE_NODE),
            (&self.hosts.kube_apiserver, NumericIdentity::KUBE_APISERVER),
            (&self.hosts.node, NumericIdentity::HOST),
        ] {
            for ip in spec.iter().flat_map(|s| s.ips.iter()) {
                entries.insert(IpNet::from(*ip), id);
            }
        }
        let touched: BTreeSet<IpNet> = entries
            .keys()
            .chain(self.host_addresses.keys())
            .copied()
            .collect();
        self.host_addresses = entries;
        self.addresses_touched(&touched, w);
        let labels = node_labels(self.hosts.node.as_ref());
        if labels != self.node_labels {
            self.node_labels = labels;
            w.changed.insert(NumericIdentity::HOST);
        }
    }

    /// Rewrites the ipcache entries of `prefixes` from their sources, and
    /// asks for the CIDR and FQDN identities again if one of them is a
    /// prefix the rules name or a learned address.
    fn addresses_touched(&mut self, prefixes: &BTreeSet<IpNet>, w: &mut Work) {
        for p in prefixes {
            self.refresh_ipcache(*p, w);
            if self.prefix_refs.contains_key(p)
                || self.fqdn.names.values().any(|ips| ips.contains(&p.addr()))
            {
                w.external = true;
            }
        }
    }

    fn refresh_ipcache(&mut self, p: IpNet, w: &mut Work) {
        let want = self
            .host_addresses
            .get(&p)
            .or_else(|| self.pod_addresses.get(&p))
            .or_else(|| self.external_addresses.get(&p))
            .copied();
        let have = self.state.ipcache.get(&p).copied();
        if want == have {
            return;
        }
        match want {
            Some(id) => {
                self.state.ipcache.insert(p, id);
                w.delta.ipcache.push(IpcacheChange::Upsert(p, id));
            }
            None => {
                self.state.ipcache.remove(&p);
                w.delta.ipcache.push(IpcacheChange::Delete(p));
            }
        }
    }

    /// Recomputes the CIDR and FQDN identities and their prefixes.
    fn refresh_external(&mut self, w: &mut Work) {
        let prefixes: BTreeSet<IpNet> = self.prefix_refs.keys().copied().collect();
        let patterns = patterns_of(self.fqdn_refs.keys());
        let hosts = &self.host_addresses;
        let pods = &self.pod_addresses;
        let is_cluster = |p: &IpNet| hosts.contains_key(p) || pods.contains_key(p);
        let wanted = external_identities(
            &is_cluster,
            &prefixes,
            &self.cidr_groups,
            &patterns,
            &self.fqdn,
        );
        let mut entries: BTreeMap<IpNet, NumericIdentity> = BTreeMap::new();
        let mut live: BTreeSet<NumericIdentity> = BTreeSet::new();
        for ext in wanted {
            let id = match self.numbering.identities.get(&ext.labels) {
                Some(id) => *id,
                None => {
                    let id = NumericIdentity(self.numbering.next_local);
                    self.numbering.next_local += 1;
                    self.numbering.identities.insert(ext.labels.clone(), id);
                    id
                }
            };
            live.insert(id);
            entries.extend(ext.members.iter().map(|p| (*p, id)));
            let record = Identity {
                id,
                labels: ext.labels,
                kind: ext.kind,
            };
            match self.state.identities.get(&id) {
                Some(old) if *old == record => {}
                Some(_) => {
                    self.state.identities.insert(id, record);
                    w.changed.insert(id);
                }
                None => {
                    self.state.identities.insert(id, record);
                    w.identity_added(id);
                }
            }
        }
        let gone: Vec<NumericIdentity> = self
            .state
            .identities
            .values()
            .filter(|i| matches!(i.kind, IdentityKind::Cidr(_) | IdentityKind::Fqdn { .. }))
            .map(|i| i.id)
            .filter(|id| !live.contains(id))
            .collect();
        for id in gone {
            if let Some(i) = self.state.identities.remove(&id) {
                self.numbering.identities.remove(&i.labels);
            }
            w.identity_removed(id);
        }
        let touched: BTreeSet<IpNet> = entries
            .keys()
            .chain(self.external_addresses.keys())
            .copied()
            .collect();
        self.external_addresses = entries;
        for p in touched {
            self.refresh_ipcache(p, w);
        }
    }

    // Stages 2 and 3.

    fn finish(&mut self, mut w: Work) -> Delta {
        if w.external {
            self.refresh_external(&mut w);
        }
        // The selector cache: (selector, identity) pairs that flipped.
        let mut flipped: HashMap<Peer, BTreeSet<NumericIdentity>> = HashMap::new();
        let evaluate: Vec<NumericIdentity> = w.added.union(&w.changed).copied().collect();
        let mut flips: HashMap<Peer, Vec<(NumericIdentity, bool)>> = HashMap::new();
        if !w.removed.is_empty() {
            for (peer, sel) in &self.selections {
                for id in &w.removed {
                    if sel.ids.binary_search(id).is_ok() {
                        flips.entry(peer.clone()).or_default().push((*id, false));
                    }
                }
            }
        }
        let none: HashSet<Peer> = HashSet::new();
        for id in &evaluate {
            let Some(identity) = self.state.identities.get(id) else {
                continue;
            };
            let unconfined = self.selectors_by_namespace.get(&None).unwrap_or(&none);
            let confined = identity_namespace(identity)
                .and_then(|ns| self.selectors_by_namespace.get(&Some(ns.to_string())))
                .unwrap_or(&none);
            for peer in unconfined.iter().chain(confined) {
                let Some(sel) = self.selections.get(peer) else {
                    continue;
                };
                let wanted = peer_selects(peer, identity, &self.node_labels);
                if sel.ids.binary_search(id).is_ok() != wanted {
                    flips.entry(peer.clone()).or_default().push((*id, wanted));
                }
            }
        }
        for (peer, list) in flips {
            let Some(sel) = self.selections.get_mut(&peer) else {
                continue;
            };
            let ids = Arc::make_mut(&mut sel.ids);
            for (id, selected) in &list {
                match (ids.binary_search(id), selected) {
                    (Err(at), true) => ids.insert(at, *id),
                    (Ok(at), false) => {
                        ids.remove(at);
                    }
                    _ => {}
                }
            }
            flipped
                .entry(peer)
                .or_default()
                .extend(list.iter().map(|(id, _)| *id));
        }
        if w.named_ports_changed {
            for (k, o) in &self.owners {
                if o.egress_named {
                    w.full.insert(k.clone());
                }
            }
        }
        let mut touched_owners: BTreeSet<OwnerKey> = BTreeSet::new();
        for k in std::mem::take(&mut w.full) {
            if self.owners.contains_key(&k) {
                self.resolve_owner(&k);
                touched_owners.insert(k);
            }
        }
        if !flipped.is_empty() {
            let keys: Vec<OwnerKey> = self
                .owners
                .keys()
                .filter(|k| !touched_owners.contains(*k))
                .cloned()
                .collect();
            for k in keys {
                let owner = &self.owners[&k];
                let mut ids: BTreeSet<NumericIdentity> = BTreeSet::new();
                for p in &owner.peers {
                    if let Some(f) = flipped.get(p) {
                        ids.extend(f.iter().copied());
                    }
                }
                if !ids.is_empty() {
                    self.retable_owner(&k, &ids, &w.endpoints, &mut w.delta);
                }
            }
        }
        // Endpoints: their records and policies into the state, and the
        // delta.
        for k in &touched_owners {
            if let Some(o) = self.owners.get(k) {
                w.endpoints.extend(o.endpoints.iter().copied());
            }
        }
        for id in std::mem::take(&mut w.endpoints) {
            self.refresh_endpoint(id, &mut w.delta);
        }
        w.delta.identities_added = w
            .added
            .union(&w.changed)
            .filter_map(|id| self.state.identities.get(id).cloned())
            .collect();
        w.delta.identities_removed = w.removed.into_iter().collect();
        w.delta
    }

    /// Resolves an owner from scratch.
    fn resolve_owner(&mut self, k: &OwnerKey) {
        let Some(identity) = self.state.identities.get(&k.0) else {
            return;
        };
        let ns = identity
            .labels
            .get(POD_NAMESPACE_LABEL)
            .map(|v| v.value.clone());
        let mut keys: BTreeSet<&PolicyKey> = BTreeSet::new();
        for scope in [ns, None] {
            if let Some(set) = self.policies_by_namespace.get(&scope) {
                keys.extend(set.iter());
            }
        }
        let selecting: Vec<&PolicyRule> = keys
            .into_iter()
            .flat_map(|key| self.policies[key].iter())
            .filter(|r| match &r.subject {
                Subject::Endpoints(sel) => sel.matches(&identity.labels),
                Subject::Nodes(_) => false,
            })
            .collect();
        let ep = Endpoint {
            id: 0,
            namespace: String::new(),
            name: String::new(),
            identity: k.0,
            ips: Vec::new(),
            named_ports: k.1.clone(),
            visibility: k.2.clone(),
        };
        let mut plans = Vec::new();
        let mut tables = Vec::new();
        let mut peers = HashSet::new();
        for dir in DIRECTIONS {
            let plan = DirectionPlan::new(self, &ep, &selecting, dir);
            let mut t = BTreeMap::new();
            insert_table(
                &mut t,
                NumericIdentity::ANY,
                plan.table(NumericIdentity::ANY, &[]),
            );
            for (id, own) in plan.contributions(self) {
                insert_table(&mut t, id, plan.table(id, &own));
            }
            peers.extend(plan.requires.iter().cloned());
            for e in &plan.entries {
                peers.extend(e.peers.iter().map(|(p, _)| p.clone()));
            }
            plans.push(plan);
            tables.push(t);
        }
        let egress_named = selecting.iter().any(|r| {
            r.egress
                .entries
                .iter()
                .flat_map(|e| e.ports.iter().flatten())
                .any(|pm| matches!(pm.port, PortSpec::Named(_)))
        });
        let mut policy = empty_policy(&ep);
        assemble(&plans, &tables, &mut policy);
        let owner = self.owners.get_mut(k).expect("owner exists");
        owner.plans = plans;
        owner.tables = tables;
        owner.peers = peers;
        owner.egress_named = egress_named;
        owner.policy = policy;
    }

    /// Recomputes the tables of `ids` of an owner (their selections
    /// changed; nothing else did), and writes the entries that changed
    /// into its endpoints' policies and `delta` (but for the endpoints of
    /// `refreshed`, which are written whole later).
    fn retable_owner(
        &mut self,
        k: &OwnerKey,
        ids: &BTreeSet<NumericIdentity>,
        refreshed: &BTreeSet<u16>,
        delta: &mut Delta,
    ) {
        let identities = &self.state.identities;
        let node_labels = &self.node_labels;
        let owner = self.owners.get_mut(k).expect("owner exists");
        let mut replaced: Vec<(Option<Table>, Option<Table>)> = Vec::new();
        for (plan, tables) in owner.plans.iter().zip(owner.tables.iter_mut()) {
            for id in ids {
                let own = identities
                    .get(id)
                    .map(|i| plan.contributions_of(i, node_labels))
                    .unwrap_or_default();
                let old = tables.remove(id);
                let new = plan.table(*id, &own);
                let new = (!(new.entries.is_empty() && new.warnings.is_empty())).then_some(new);
                if old == new {
                    if let Some(t) = old {
                        tables.insert(*id, t);
                    }
                    continue;
                }
                if let Some(t) = &new {
                    tables.insert(*id, t.clone());
                }
                replaced.push((old, new));
            }
        }
        if replaced.is_empty() {
            return;
        }
        let mut changes = Vec::new();
        let mut l7_changed = false;
        for (old, new) in &replaced {
            l7_changed |=
                replace_table(&mut owner.policy, old.as_ref(), new.as_ref(), &mut changes);
        }
        let warned = replaced
            .iter()
            .any(|(o, n)| o.iter().chain(n).any(|t| !t.warnings.is_empty()));
        if warned {
            owner.policy.warnings = warnings_of(&owner.plans, &owner.tables);
        }
        for ep in owner.endpoints.difference(refreshed) {
            if let Some((_, pol)) = self.state.endpoints.get_mut(ep) {
                for (old, new) in &replaced {
                    replace_table(pol, old.as_ref(), new.as_ref(), &mut Vec::new());
                }
                if warned {
                    pol.warnings = owner.policy.warnings.clone();
                }
                if !changes.is_empty() {
                    delta
                        .policy
                        .entry(*ep)
                        .or_default()
                        .extend(changes.iter().cloned());
                }
                if l7_changed {
                    delta.l7.insert(*ep, pol.l7.clone());
                }
            }
        }
    }

    /// Puts endpoint `id` (record and policy) into the state, adding what
    /// changed to `delta`.
    fn refresh_endpoint(&mut self, id: u16, delta: &mut Delta) {
        let new = self.endpoints.get(&id).map(|(ep, k)| {
            let mut pol = self.owners[k].policy.clone();
            pol.endpoint_id = id;
            (ep.clone(), pol)
        });
        // The new record goes into the state as it is (no second copy);
        // the delta is read from it there.
        let old = match new {
            Some(n) => self.state.endpoints.insert(id, n),
            None => self.state.endpoints.remove(&id),
        };
        match (old, self.state.endpoints.get(&id)) {
            (Some((ep, _)), None) => delta.endpoints.push(EndpointChange::Removed(ep)),
            (old, Some((ep, pol))) => {
                if old.as_ref().map(|(e, _)| e) != Some(ep) {
                    delta.endpoints.push(EndpointChange::Upsert(ep.clone()));
                }
                let empty = crate::mapstate::MapState::default();
                let changes = old.as_ref().map_or(&empty, |(_, p)| &p.map).diff(&pol.map);
                if !changes.is_empty() {
                    delta.policy.insert(id, changes);
                }
                if old.as_ref().is_none_or(|(_, p)| p.l7 != pol.l7) {
                    delta.l7.insert(id, pol.l7.clone());
                }
            }
            (None, None) => {}
        }
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
            cidr_groups: self.cidr_groups.clone(),
        }
    }

    /// Every rule, in the order resolution reads them: by policy key,
    /// then as the object lists them.
    pub fn rules(&self) -> Vec<PolicyRule> {
        self.policies
            .values()
            .flat_map(|v| v.iter())
            .cloned()
            .collect()
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

    /// The node this engine resolves for.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Every pod (local and remote), by `namespace/name`.
    pub fn pods(&self) -> impl Iterator<Item = &PodSpec> {
        self.pods.values().map(|p| &**p)
    }

    /// One pod, by `namespace/name`.
    pub fn pod(&self, full_name: &str) -> Option<&PodSpec> {
        self.pods.get(full_name).map(|p| &**p)
    }

    /// Every namespace, by name.
    pub fn namespaces(&self) -> impl Iterator<Item = &NamespaceSpec> {
        self.namespaces.values()
    }

    /// The node's, the kube-apiserver's and the other nodes' addresses.
    pub fn hosts(&self) -> &Hosts {
        &self.hosts
    }

    /// The topology's `world` entry (fixed for the engine's life).
    pub fn world(&self) -> Option<&HostSpec> {
        self.world.as_ref()
    }

    /// The rules of one policy object, if it is in force, as given (CIDR
    /// group peers unexpanded).
    pub fn policy(&self, key: &PolicyKey) -> Option<&[PolicyRule]> {
        self.group_policies
            .get(key)
            .or_else(|| self.policies.get(key))
            .map(|v| v.as_slice())
    }

    /// The cluster's CIDR groups, as last given.
    pub fn cidr_groups(&self) -> &[CidrGroup] {
        &self.cidr_groups
    }

    /// Longest-prefix identity of an address (world when no prefix holds
    /// it), as [`Cluster::identity_of_ip`](crate::Cluster::identity_of_ip).
    pub fn identity_of_ip(&self, ip: std::net::IpAddr) -> NumericIdentity {
        self.longest_prefix(ip, None)
            .unwrap_or(NumericIdentity::WORLD)
    }

    /// The identity of the longest ipcache prefix holding `ip`, other than
    /// `except`.
    fn longest_prefix(
        &self,
        ip: std::net::IpAddr,
        except: Option<IpNet>,
    ) -> Option<NumericIdentity> {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        (0..=max).rev().find_map(|len| {
            let p = IpNet::new(ip, len).ok()?.trunc();
            if Some(p) == except {
                return None;
            }
            self.state.ipcache.get(&p).copied()
        })
    }

    /// For a learned address: its identity (an FQDN one) and the identity
    /// it has without its names, as
    /// [`Cluster::learned_and_fallback_identity`](crate::Cluster::learned_and_fallback_identity).
    pub fn learned_and_fallback_identity(
        &self,
        ip: std::net::IpAddr,
    ) -> Option<(NumericIdentity, NumericIdentity)> {
        let prefix = IpNet::from(ip);
        let id = *self.state.ipcache.get(&prefix)?;
        if !self
            .state
            .identities
            .get(&id)
            .is_some_and(|x| matches!(x.kind, IdentityKind::Fqdn { .. }))
        {
            return None;
        }
        let fallback = self
            .longest_prefix(ip, Some(prefix))
            .unwrap_or(NumericIdentity::WORLD);
        Some((id, fallback))
    }

    /// The rules that select an endpoint identity (their subject), in
    /// policy key order.
    pub fn rules_selecting(&self, id: NumericIdentity) -> Vec<&PolicyRule> {
        let Some(identity) = self.state.identities.get(&id) else {
            return Vec::new();
        };
        self.policies
            .values()
            .flat_map(|v| v.iter())
            .filter(|r| match &r.subject {
                Subject::Endpoints(sel) => sel.matches(&identity.labels),
                Subject::Nodes(_) => false,
            })
            .collect()
    }
}

impl IncrementalCluster {
    /// The identities a selector selects, from scratch (a selector
    /// confined to namespaces is matched against theirs only).
    fn evaluate(&self, peer: &Peer) -> Vec<NumericIdentity> {
        let Some(nss) = peer_namespaces(peer) else {
            return self
                .state
                .identities
                .values()
                .filter(|i| peer_selects(peer, i, &self.node_labels))
                .map(|i| i.id)
                .collect();
        };
        let mut ids: Vec<NumericIdentity> = nss
            .iter()
            .flat_map(|ns| self.identities_by_namespace.get(ns).into_iter().flatten())
            .filter(|id| {
                self.state
                    .identities
                    .get(id)
                    .is_some_and(|i| peer_selects(peer, i, &self.node_labels))
            })
            .copied()
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

impl Selections for IncrementalCluster {
    fn selected(&self, peer: &Peer) -> Arc<Vec<NumericIdentity>> {
        match self.selections.get(peer) {
            Some(s) => s.ids.clone(),
            None => Arc::new(self.evaluate(peer)),
        }
    }

    fn named_ports(&self, name: &str) -> BTreeSet<(Protocol, u16)> {
        self.named_ports
            .get(name)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }
}

impl Work {
    fn identity_added(&mut self, id: NumericIdentity) {
        if !self.removed.remove(&id) {
            self.added.insert(id);
        } else {
            self.changed.insert(id);
        }
    }

    fn identity_removed(&mut self, id: NumericIdentity) {
        if !self.added.remove(&id) {
            self.removed.insert(id);
        }
    }
}

/// Adds (`add`) or takes away one use of `k`; whether `k` appeared or
/// went away.
fn count<K: Ord>(m: &mut BTreeMap<K, usize>, k: K, add: bool) -> bool {
    if add {
        let n = m.entry(k).or_default();
        *n += 1;
        *n == 1
    } else {
        match m.get_mut(&k) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                m.remove(&k);
                true
            }
            None => false,
        }
    }
}

/// The keys of [`IncrementalCluster::selectors_by_namespace`] a selector
/// is filed under.
fn selector_scopes(p: &Peer) -> Vec<Option<String>> {
    match peer_namespaces(p) {
        Some(nss) => nss.iter().map(|n| Some(n.clone())).collect(),
        None => vec![None],
    }
}

/// Takes table `old` out of a policy and puts `new` in; appends the map
/// changes (upserts, then deletes) to `changes`. Whether the L7 rules
/// changed.
fn replace_table(
    policy: &mut EndpointPolicy,
    old: Option<&Table>,
    new: Option<&Table>,
    changes: &mut Vec<MapChange>,
) -> bool {
    let mut l7_changed = false;
    if let Some(new) = new {
        for (k, v) in &new.entries {
            if old.and_then(|o| o.entries.get(k)) != Some(v) {
                changes.push(MapChange::Upsert(*k, *v));
            }
            policy.map.entries.insert(*k, *v);
        }
        for (k, v) in &new.provenance {
            policy.provenance.insert(*k, v.clone());
        }
        for (k, v) in &new.l7 {
            if old.and_then(|o| o.l7.get(k)) != Some(v) {
                l7_changed = true;
            }
            policy.l7.insert(*k, v.clone());
        }
    }
    if let Some(old) = old {
        let kept = |k: &MapKey| new.is_some_and(|n| n.entries.contains_key(k));
        for k in old.entries.keys() {
            if !kept(k) {
                changes.push(MapChange::Delete(*k));
                policy.map.entries.remove(k);
                policy.provenance.remove(k);
            }
        }
        for k in old.l7.keys() {
            if !new.is_some_and(|n| n.l7.contains_key(k)) {
                l7_changed = true;
                policy.l7.remove(k);
            }
        }
    }
    l7_changed
}

/// An owner's warnings in the order the resolution writes them.
fn warnings_of(
    plans: &[DirectionPlan],
    tables: &[BTreeMap<NumericIdentity, Table>],
) -> Vec<String> {
    let mut out = Vec::new();
    for (plan, t) in plans.iter().zip(tables) {
        out.extend(plan.warnings.iter().cloned());
        for table in t.values() {
            out.extend(table.warnings.iter().cloned());
        }
    }
    out
}

fn insert_table(tables: &mut BTreeMap<NumericIdentity, Table>, id: NumericIdentity, t: Table) {
    if !(t.entries.is_empty() && t.warnings.is_empty()) {
        tables.insert(id, t);
    }
}

/// An owner's policy from its plans and tables, in the order
/// [`Cluster::endpoint_policy`](crate::Cluster::endpoint_policy) writes
/// it.
fn assemble(
    plans: &[DirectionPlan],
    tables: &[BTreeMap<NumericIdentity, Table>],
    out: &mut EndpointPolicy,
) {
    for (plan, t) in plans.iter().zip(tables) {
        add_direction(plan, out);
        for table in t.values() {
            table.merge_into(out);
        }
    }
}
