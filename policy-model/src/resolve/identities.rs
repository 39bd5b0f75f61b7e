//! Identity allocation for a cluster (the first half of cilium's
//! pipeline): reserved identities, one per endpoint label set, one per
//! CIDR a policy names, one per label set of learned addresses; and the
//! ipcache that maps every address to its identity.

use super::fqdn::{FqdnCache, fqdn_key, fqdn_keys_of};
use super::numbering::{EndpointIds, Numbering};
use crate::identity::{
    Identity, IdentityAllocator, IdentityKind, NumericIdentity, RESERVED, cidr_labels, fqdn_labels,
    reserved_labels,
};
use crate::l7::dns::FqdnPattern;
use crate::labels::LabelSet;
use crate::rules::{Peer, PolicyRule, Protocol};
use crate::topology::Topology;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
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
    /// Every toFQDNs selector of the rules: label key and matcher.
    pub fqdn_patterns: Vec<(String, FqdnPattern)>,
    /// Every prefix the rules name (CIDRs and their exceptions).
    pub cidr_prefixes: Vec<IpNet>,
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
        let named_ports = pod
            .ports
            .iter()
            .filter_map(|p| {
                let proto = p
                    .protocol
                    .as_deref()
                    .and_then(Protocol::parse)
                    .unwrap_or(Protocol::Tcp);
                p.name.clone().map(|n| (n, proto, p.container_port))
            })
            .collect();
        endpoints.push(Endpoint {
            id: endpoint_ids.id(i, &pod.full_name()),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            identity: id,
            ips: pod.addresses(),
            named_ports,
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

    // CIDR identities for every prefix policies name.
    let mut prefixes = BTreeSet::new();
    for r in rules {
        for d in [&r.ingress, &r.egress] {
            for e in &d.entries {
                for p in &e.peers {
                    if let Peer::Cidr { cidr, except } = p {
                        prefixes.insert(*cidr);
                        prefixes.extend(except.iter().copied());
                    }
                }
            }
        }
    }
    let cidr_prefixes: Vec<IpNet> = prefixes.iter().copied().collect();
    for p in prefixes {
        if p.prefix_len() == 0 || ipcache.iter().any(|(q, _)| *q == p) {
            continue;
        }
        let labels = cidr_labels(&p);
        let id = alloc.local(&labels);
        identities.insert(
            id,
            Identity {
                id,
                labels,
                kind: IdentityKind::Cidr(p),
            },
        );
        ipcache.push((p, id));
    }

    // FQDN identities for learned addresses that some toFQDNs selects.
    let patterns: Vec<(String, FqdnPattern)> = rules
        .iter()
        .flat_map(|r| r.egress.entries.iter())
        .flat_map(|e| e.peers.iter())
        .filter_map(|p| match p {
            Peer::Fqdn(sel) => FqdnPattern::from_selector(sel)
                .ok()
                .map(|pat| (fqdn_key(sel), pat)),
            _ => None,
        })
        .collect();
    let mut by_ip: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
    for (name, ips) in &fqdn.names {
        let keys = fqdn_keys_of(&patterns, name);
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
        if let Some(i) = ipcache.iter().position(|(p, _)| *p == prefix) {
            if !identities
                .get(&ipcache[i].1)
                .is_some_and(|id| matches!(id.kind, IdentityKind::Cidr(_)))
            {
                // A cluster address (pod, node) keeps its own identity.
                continue;
            }
            // A /32 a policy names: the learned labels join its own.
            ipcache.remove(i);
        }
        let labels = fqdn_labels(ip, &keys, &cidr_prefixes);
        groups
            .entry(labels)
            .or_insert_with(|| (prefix, keys, Vec::new()))
            .2
            .push(prefix);
    }
    for (labels, (representative, names, members)) in groups {
        let id = alloc.local(&labels);
        identities.insert(
            id,
            Identity {
                id,
                labels,
                kind: IdentityKind::Fqdn {
                    prefix: representative,
                    names,
                },
            },
        );
        ipcache.extend(members.into_iter().map(|p| (p, id)));
    }
    ipcache.sort_by(|a, b| b.0.prefix_len().cmp(&a.0.prefix_len()).then(a.0.cmp(&b.0)));

    Allocation {
        identities,
        endpoints,
        ipcache,
        fqdn_patterns: patterns,
        cidr_prefixes,
    }
}

#[cfg(test)]
mod tests;
