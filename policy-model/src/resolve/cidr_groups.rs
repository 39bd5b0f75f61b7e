//! CIDR set entries that name CIDR groups, resolved against the groups as
//! they are: each becomes one CIDR peer per CIDR of the groups it names,
//! its `except` applied to the CIDRs it falls in. A group that does not
//! exist selects nothing (it may appear later); a group that changes
//! changes what the entry selects, without an edit to the policy. The
//! CIDRs' identities carry their groups' labels ([`add_group_labels`]).

use crate::labels::LabelSet;
use crate::rules::{CidrGroupRef, Peer, PolicyRule};
use crate::topology::cidr_group::CidrGroup;
use ipnet::IpNet;
use std::collections::HashMap;

/// Whether one of the rule's entries names CIDR groups.
pub fn names_cidr_groups(r: &PolicyRule) -> bool {
    [&r.ingress, &r.egress]
        .into_iter()
        .flat_map(|d| d.entries.iter())
        .flat_map(|e| e.peers.iter())
        .any(|p| matches!(p, Peer::CidrGroup { .. }))
}

/// `rules` with every group peer replaced by the CIDRs it stands for in
/// `groups` (rules naming no group are returned as they are).
pub fn expand_cidr_groups(rules: Vec<PolicyRule>, groups: &[CidrGroup]) -> Vec<PolicyRule> {
    if !rules.iter().any(names_cidr_groups) {
        return rules;
    }
    let index = GroupIndex::new(groups);
    rules
        .into_iter()
        .map(|r| {
            if names_cidr_groups(&r) {
                index.expand(&r)
            } else {
                r
            }
        })
        .collect()
}

/// One rule with its group peers expanded against `groups`.
pub fn expand_rule(r: &PolicyRule, groups: &[CidrGroup]) -> PolicyRule {
    GroupIndex::new(groups).expand(r)
}

/// The groups by name; the first of a name wins.
struct GroupIndex<'a> {
    groups: Vec<&'a CidrGroup>,
    by_name: HashMap<&'a str, &'a CidrGroup>,
}

impl<'a> GroupIndex<'a> {
    fn new(groups: &'a [CidrGroup]) -> Self {
        let mut by_name = HashMap::new();
        let mut kept = Vec::new();
        for g in groups {
            if !by_name.contains_key(g.name.as_str()) {
                by_name.insert(g.name.as_str(), g);
                kept.push(g);
            }
        }
        GroupIndex {
            groups: kept,
            by_name,
        }
    }

    /// The CIDRs a reference stands for, each once, in group order.
    fn cidrs(&self, group: &CidrGroupRef) -> Vec<IpNet> {
        let chosen: Vec<&CidrGroup> = match group {
            CidrGroupRef::Name(n) => self.by_name.get(n.as_str()).copied().into_iter().collect(),
            CidrGroupRef::Selector(sel) => self
                .groups
                .iter()
                .copied()
                .filter(|g| sel.matches(&g.selector_labels()))
                .collect(),
        };
        let mut out: Vec<IpNet> = Vec::new();
        for c in chosen.iter().flat_map(|g| g.cidrs.iter()) {
            if !out.contains(c) {
                out.push(*c);
            }
        }
        out
    }

    fn expand(&self, r: &PolicyRule) -> PolicyRule {
        let mut r = r.clone();
        for d in [&mut r.ingress, &mut r.egress] {
            for e in &mut d.entries {
                if !e.peers.iter().any(|p| matches!(p, Peer::CidrGroup { .. })) {
                    continue;
                }
                let mut peers = Vec::with_capacity(e.peers.len());
                for p in std::mem::take(&mut e.peers) {
                    match p {
                        Peer::CidrGroup { group, except } => {
                            for cidr in self.cidrs(&group) {
                                if let Some(peer) = cidr_peer(cidr, &except)
                                    && !peers.contains(&peer)
                                {
                                    peers.push(peer);
                                }
                            }
                        }
                        other => peers.push(other),
                    }
                }
                e.peers = peers;
            }
        }
        r
    }
}

/// The peer of one group CIDR under an entry's `except`: none when an
/// exception covers the whole CIDR, else the CIDR with the exceptions
/// inside it (the others concern the group's other CIDRs).
fn cidr_peer(cidr: IpNet, except: &[IpNet]) -> Option<Peer> {
    if except.iter().any(|e| e.contains(&cidr)) {
        return None;
    }
    let mut inside: Vec<IpNet> = except
        .iter()
        .filter(|e| cidr.contains(*e))
        .copied()
        .collect();
    inside.sort();
    inside.dedup();
    Some(Peer::Cidr {
        cidr,
        except: inside,
    })
}

/// Adds to `labels` what membership in `groups` gives the identity of
/// `prefix`: the labels of every group that lists exactly this CIDR (the
/// first group of a name counts). Nothing when no group lists it.
pub fn add_group_labels(prefix: &IpNet, groups: &[CidrGroup], labels: &mut LabelSet) {
    let mut seen: Vec<&str> = Vec::new();
    for g in groups {
        if seen.contains(&g.name.as_str()) {
            continue;
        }
        seen.push(&g.name);
        if g.cidrs.contains(prefix) {
            g.label_member(labels);
        }
    }
}

#[cfg(test)]
mod tests;
