//! The selector cache (cilium's `selectorcache`): every peer selector of
//! the rules evaluated once against every identity, and the rules that
//! select each local endpoint.

use super::cluster::Cluster;
use super::fqdn::fqdn_key;
use crate::api::SelectorOperator;
use crate::identity::{Identity, IdentityKind, NumericIdentity};
use crate::labels::LabelSet;
use crate::rules::{Entity, Peer, PolicyRule, Subject};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

impl Cluster {
    pub(super) fn build_selector_cache(&mut self) {
        let mut peers: BTreeSet<Peer> = BTreeSet::new();
        for r in &self.rules {
            for d in [&r.ingress, &r.egress] {
                for e in &d.entries {
                    peers.extend(e.peers.iter().cloned());
                }
                for req in &d.requires {
                    peers.insert(Peer::Endpoints(req.clone()));
                }
            }
        }
        let ids: Vec<&Identity> = self.identities.values().collect();
        // Endpoint identities by namespace: a selector that names its
        // namespaces is evaluated against theirs only.
        let mut by_namespace: HashMap<&str, Vec<&Identity>> = HashMap::new();
        for i in &ids {
            if let Some(ns) = identity_namespace(i) {
                by_namespace.entry(ns).or_default().push(i);
            }
        }
        let node_labels = self.node_labels();
        for p in peers {
            let mut sel: Vec<NumericIdentity> = match peer_namespaces(&p) {
                Some(nss) => {
                    let mut v: Vec<NumericIdentity> = nss
                        .iter()
                        .flat_map(|ns| by_namespace.get(ns.as_str()).into_iter().flatten())
                        .filter(|i| peer_selects(&p, i, &node_labels))
                        .map(|i| i.id)
                        .collect();
                    v.sort();
                    v.dedup();
                    v
                }
                None => ids
                    .iter()
                    .filter(|i| peer_selects(&p, i, &node_labels))
                    .map(|i| i.id)
                    .collect(),
            };
            sel.shrink_to_fit();
            self.selections.insert(p, Arc::new(sel));
        }
        let endpoint_ids: BTreeSet<NumericIdentity> =
            self.endpoints.iter().map(|e| e.identity).collect();
        for (idx, r) in self.rules.iter().enumerate() {
            if let Subject::Endpoints(sel) = &r.subject {
                for id in &endpoint_ids {
                    if sel.matches(&self.identities[id].labels) {
                        self.subjects.entry(*id).or_default().push(idx);
                    }
                }
            }
        }
    }

    fn node_labels(&self) -> LabelSet {
        node_labels(self.topology.node.as_ref())
    }

    /// Identities a peer selector selects.
    pub fn selected(&self, peer: &Peer) -> Arc<Vec<NumericIdentity>> {
        if let Some(s) = self.selections.get(peer) {
            return s.clone();
        }
        let node_labels = self.node_labels();
        Arc::new(
            self.identities
                .values()
                .filter(|i| peer_selects(peer, i, &node_labels))
                .map(|i| i.id)
                .collect(),
        )
    }

    /// Rules that select an endpoint identity.
    pub fn rules_selecting(&self, id: NumericIdentity) -> impl Iterator<Item = &PolicyRule> {
        self.subjects
            .get(&id)
            .into_iter()
            .flatten()
            .map(|i| &self.rules[*i])
    }
}

/// The namespaces outside which a peer selector selects nothing: an
/// endpoint selector requiring the pod namespace label to be one of
/// them (only endpoint identities carry that label). `None`: it may
/// select identities anywhere.
pub(crate) fn peer_namespaces(peer: &Peer) -> Option<&[String]> {
    match peer {
        Peer::Endpoints(sel) => sel
            .requirements
            .iter()
            .find(|r| r.is_namespace_requirement() && r.op == SelectorOperator::In)
            .map(|r| r.values.as_slice()),
        _ => None,
    }
}

/// The pod namespace of an endpoint identity.
pub(crate) fn identity_namespace(id: &Identity) -> Option<&str> {
    match id.kind {
        IdentityKind::Endpoint => id
            .labels
            .get(crate::labels::POD_NAMESPACE_LABEL)
            .map(|v| v.value.as_str()),
        _ => None,
    }
}

/// The labels `fromNodes` / `toNodes` selectors match against the node.
pub(crate) fn node_labels(node: Option<&crate::topology::HostSpec>) -> LabelSet {
    let mut l = LabelSet::new();
    if let Some(n) = node {
        for (k, v) in &n.labels {
            l.insert(crate::labels::SOURCE_K8S, k, v);
        }
    }
    l
}

/// Whether a peer selector selects an identity.
pub fn peer_selects(peer: &Peer, id: &Identity, node_labels: &LabelSet) -> bool {
    use NumericIdentity as N;
    match peer {
        Peer::All => true,
        Peer::Endpoints(sel) => sel.matches(&id.labels),
        Peer::Entity(e) => match e {
            Entity::All => true,
            Entity::World => id.is_world(),
            Entity::WorldIpv4 => {
                id.is_world() && id.prefix().is_some_and(|p| p.addr().is_ipv4())
                    || id.id == N::WORLD
            }
            Entity::WorldIpv6 => {
                id.is_world() && id.prefix().is_some_and(|p| p.addr().is_ipv6())
                    || id.id == N::WORLD
            }
            Entity::Cluster => {
                id.kind == IdentityKind::Endpoint
                    || [
                        N::HOST,
                        N::REMOTE_NODE,
                        N::INIT,
                        N::HEALTH,
                        N::UNMANAGED,
                        N::INGRESS,
                        N::KUBE_APISERVER,
                    ]
                    .contains(&id.id)
            }
            Entity::Host => id.id == N::HOST,
            Entity::RemoteNode => id.id == N::REMOTE_NODE,
            Entity::KubeApiserver => id.id == N::KUBE_APISERVER,
            Entity::Init => id.id == N::INIT,
            Entity::Health => id.id == N::HEALTH,
            Entity::Unmanaged => id.id == N::UNMANAGED,
            Entity::Ingress => id.id == N::INGRESS,
            Entity::None => false,
        },
        Peer::Cidr { cidr, except } => id
            .prefix()
            .is_some_and(|p| cidr.contains(&p) && !except.iter().any(|e| e.contains(&p))),
        Peer::Fqdn(sel) => match &id.kind {
            IdentityKind::Fqdn { names, .. } => names.contains(&fqdn_key(sel)),
            _ => false,
        },
        Peer::Nodes(sel) => id.id == N::HOST && sel.matches(node_labels),
        // Expanded into CIDR peers before resolution; left unexpanded it
        // names no group the resolution knows.
        Peer::CidrGroup { .. } => false,
    }
}

#[cfg(test)]
mod tests;
