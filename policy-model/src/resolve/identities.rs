//! Identity allocation for a cluster (the first half of cilium's
//! pipeline): reserved identities, one per endpoint label set, one per
//! CIDR a policy names, one per label set of learned addresses; and the
//! ipcache that maps every address to its identity.

use super::cidr_groups::add_group_labels;
use super::fqdn::{FqdnCache, fqdn_key, fqdn_keys_of};
use super::numbering::{EndpointIds, Numbering};
use crate::api::FqdnSelector;
use crate::identity::{
    Identity, IdentityAllocator, IdentityKind, NumericIdentity, RESERVED, cidr_labels, fqdn_labels,
    reserved_labels,
};
use crate::l7::dns::FqdnPattern;
use crate::labels::LabelSet;
use crate::rules::{Peer, PolicyRule, Protocol, Visibility, visibility_of};
use crate::topology::Topology;
use crate::topology::cidr_group::CidrGroup;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

/// A named container port: (name, protocol, port).
pub type NamedPort = (String, Protocol, u16);

/// A local endpoint (pod) of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Endpoint id (1-based, in topology order), as the kernel maps use it.
    pub id: u16,
    pub namespace: String,
    pub name: String,
    pub identity: NumericIdentity,
    pub ips: Vec<IpAddr>,
    /// Named container ports.
    pub named_ports: Vec<NamedPort>,
    /// Ports redirected to a proxy for access records only
    /// (`policy.cilium.io/proxy-visibility` on the pod or its namespace).
    pub visibility: Vec<Visibility>,
}

impl Endpoint {
    /// `namespace/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The identities of a cluster, its local endpoints and its ipcache,
/// before any selector is evaluated.
pub(super) struct Allocation {
    pub identities: BTreeMap<NumericIdentity, Identity>,
    pub endpoints: Vec<Endpoint>,
    /// Prefix -> identity, longest prefixes first.
    pub ipcache: Vec<(IpNet, NumericIdentity)>,
}

/// Allocates the identities of `topology`, of the prefixes `rules` name
/// and of the addresses in `fqdn` that a toFQDNs selector selects.
pub(super) fn allocate(
    topology: &Topology,
    rules: &[PolicyRule],
    fqdn: &FqdnCache,
    numbering: Option<&Numbering>,
) -> Allocation {
    let mut alloc = match numbering {
        Some(n) => IdentityAllocator::seeded(&n.identities, n.next_endpoint, n.next_local),
        None => IdentityAllocator::new(),
    };
    let mut endpoint_ids = EndpointIds::new(numbering);
    let mut identities = BTreeMap::new();
    for (id, name) in RESERVED {
        identities.insert(
            *id,
            Identity {
                id: *id,
                labels: reserved_labels(name),
                kind: IdentityKind::Reserved,
            },
        );
    }
    let mut ipcache: Vec<(IpNet, NumericIdentity)> = vec![
        (
            "0.0.0.0/0".parse().expect("valid literal"),
            NumericIdentity::WORLD_IPV4,
        ),
        (
            "::/0".parse().expect("valid literal"),
            NumericIdentity::WORLD_IPV6,
        ),
    ];
    let mut endpoints = Vec::new();
    for (i, pod) in topology.pods.iter().enumerate() {
        let labels = topology.pod_labels(pod);
        let id = alloc.endpoint(&labels);
        identities.entry(id).or_insert_with(|| Identity {
            id,
            labels: labels.clone(),
            kind: IdentityKind::Endpoint,
        });
        for ip in pod.addresses() {
            ipcache.push((IpNet::from(ip), id));
        }
        let named_ports = named_ports_of(pod);
        let namespace = topology
            .namespaces
            .iter()
            .find(|n| n.name == pod.namespace)
            .map(|n| &n.annotations);
        endpoints.push(Endpoint {
            id: endpoint_ids.id(i, &pod.full_name()),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            identity: id,
            ips: pod.addresses(),
            named_ports,
            visibility: visibility_of(&pod.annotations, namespace),
        });
    }
    for (spec, id) in [
        (&topology.remote_nodes, NumericIdentity::REMOTE_NODE),
        (&topology.kube_apiserver, NumericIdentity::KUBE_APISERVER),
        (&topology.node, NumericIdentity::HOST),
    ] {
        for ip in spec.iter().flat_map(|s| s.ips.iter()) {
            // Later entries win: the host identity beats kube-apiserver
            // for an address that is both, as in Cilium.
            ipcache.retain(|(p, _)| *p != IpNet::from(*ip));
            ipcache.push((IpNet::from(*ip), id));
        }
    }

    let prefixes = rule_prefixes(rules);
    let patterns = rule_patterns(rules);
    let cluster: HashSet<IpNet> = ipcache.iter().map(|(p, _)| *p).collect();
    let external = external_identities(
        &|p| cluster.contains(p),
        &prefixes,
        &topology.cidr_groups,
        &patterns,
        fqdn,
    );
    for ext in external {
        let id = alloc.local(&ext.labels);
        identities.insert(
            id,
            Identity {
                id,
                labels: ext.labels,
                kind: ext.kind,
            },
        );
        ipcache.extend(ext.members.into_iter().map(|p| (p, id)));
    }
    ipcache.sort_by(|a, b| b.0.prefix_len().cmp(&a.0.prefix_len()).then(a.0.cmp(&b.0)));

    Allocation {
        identities,
        endpoints,
        ipcache,
    }
}

/// The named container ports of a pod (TCP unless it says otherwise).
pub(crate) fn named_ports_of(pod: &crate::topology::PodSpec) -> Vec<NamedPort> {
    pod.ports
        .iter()
        .filter_map(|p| {
            let proto = p
                .protocol
                .as_deref()
                .and_then(Protocol::parse)
                .unwrap_or(Protocol::Tcp);
            p.name.clone().map(|n| (n, proto, p.container_port))
        })
        .collect()
}

/// Every prefix `rules` name (CIDRs and their exceptions).
pub(crate) fn rule_prefixes(rules: &[PolicyRule]) -> BTreeSet<IpNet> {
    let mut prefixes = BTreeSet::new();
    for r in rules {
        prefixes.extend(prefixes_of(r));
    }
    prefixes
}

/// The prefixes one rule names, with repeats.
pub(crate) fn prefixes_of(r: &PolicyRule) -> impl Iterator<Item = IpNet> + '_ {
    [&r.ingress, &r.egress]
        .into_iter()
        .flat_map(|d| d.entries.iter())
        .flat_map(|e| e.peers.iter())
        .flat_map(|p| match p {
            Peer::Cidr { cidr, except } => std::iter::once(*cidr)
                .chain(except.iter().copied())
                .collect(),
            _ => Vec::new(),
        })
}

/// The toFQDNs selectors one rule names, with repeats.
pub(crate) fn fqdn_selectors_of(r: &PolicyRule) -> impl Iterator<Item = &FqdnSelector> + '_ {
    r.egress
        .entries
        .iter()
        .flat_map(|e| e.peers.iter())
        .filter_map(|p| match p {
            Peer::Fqdn(sel) => Some(sel),
            _ => None,
        })
}

/// Every toFQDNs selector of `rules`: label key and matcher.
pub(crate) fn rule_patterns(rules: &[PolicyRule]) -> Vec<(String, FqdnPattern)> {
    patterns_of(rules.iter().flat_map(fqdn_selectors_of))
}

/// The label keys and matchers of toFQDNs selectors (those that do not
/// compile select nothing).
pub(crate) fn patterns_of<'a>(
    sels: impl Iterator<Item = &'a FqdnSelector>,
) -> Vec<(String, FqdnPattern)> {
    sels.filter_map(|sel| {
        FqdnPattern::from_selector(sel)
            .ok()
            .map(|pat| (fqdn_key(sel), pat))
    })
    .collect()
}

/// A node-local identity to be: its labels, what it stands for and the
/// ipcache prefixes that map to it.
pub(crate) struct ExternalIdentity {
    pub labels: LabelSet,
    pub kind: IdentityKind,
    pub members: Vec<IpNet>,
}

/// The CIDR and FQDN identities of a cluster, in allocation order (CIDR
/// ones by prefix, then FQDN ones by labels): one per prefix the rules
/// name (`prefixes`), except the zero-length ones and the cluster's own
/// addresses (`is_cluster`), labelled with the CIDR groups that list it
/// (`groups`), and one per label set of the learned
/// addresses some toFQDNs selector (`patterns`) selects. One function
/// for [`Cluster`](super::Cluster) and the incremental engine.
pub(crate) fn external_identities(
    is_cluster: &dyn Fn(&IpNet) -> bool,
    prefixes: &BTreeSet<IpNet>,
    groups: &[CidrGroup],
    patterns: &[(String, FqdnPattern)],
    fqdn: &FqdnCache,
) -> Vec<ExternalIdentity> {
    let mut out: Vec<ExternalIdentity> = Vec::new();
    let mut cidr_at: BTreeMap<IpNet, usize> = BTreeMap::new();
    for p in prefixes {
        if p.prefix_len() == 0 || is_cluster(p) {
            continue;
        }
        cidr_at.insert(*p, out.len());
        let mut labels = cidr_labels(p);
        add_group_labels(p, groups, &mut labels);
        out.push(ExternalIdentity {
            labels,
            kind: IdentityKind::Cidr(*p),
            members: vec![*p],
        });
    }
    if patterns.is_empty() {
        return out;
    }
    let cidr_prefixes: Vec<IpNet> = prefixes.iter().copied().collect();
    let mut by_ip: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
    for (name, ips) in &fqdn.names {
        let keys = fqdn_keys_of(patterns, name);
        if keys.is_empty() {
            continue;
        }
        for ip in ips {
            by_ip.entry(*ip).or_default().extend(keys.iter().cloned());
        }
    }
    // One identity per label set, as Cilium since 1.16 (CFP-28427):
    // an address is labelled with the toFQDNs selectors whose names
    // it answered for and with the policy CIDRs that contain it, so
    // every address a selector set returns shares one identity and a
    // new address of a known set needs only an ipcache entry.
    let mut groups: BTreeMap<LabelSet, (IpNet, BTreeSet<String>, Vec<IpNet>)> = BTreeMap::new();
    for (ip, keys) in by_ip {
        let prefix = IpNet::from(ip);
        if is_cluster(&prefix) {
            // A cluster address (pod, node) keeps its own identity.
            continue;
        }
        if let Some(i) = cidr_at.get(&prefix) {
            // A /32 a policy names: the learned labels join its own.
            out[*i].members.clear();
        }
        let labels = fqdn_labels(ip, &keys, &cidr_prefixes);
        groups
            .entry(labels)
            .or_insert_with(|| (prefix, keys, Vec::new()))
            .2
            .push(prefix);
    }
    for (labels, (representative, names, members)) in groups {
        out.push(ExternalIdentity {
            labels,
            kind: IdentityKind::Fqdn {
                prefix: representative,
                names,
            },
            members,
        });
    }
    out
}

#[cfg(test)]
mod tests;
