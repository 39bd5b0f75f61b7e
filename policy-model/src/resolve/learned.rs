//! Addresses learned from DNS after a resolve: what one changes, and the
//! ipcache updates that stand in for a whole resolve when that is all it
//! changes.

use super::cluster::Cluster;
use super::fqdn::fqdn_keys_of;
use crate::identity::{IdentityKind, NumericIdentity, fqdn_labels};
use ipnet::IpNet;
use std::collections::BTreeSet;
use std::net::IpAddr;

impl Cluster {
    /// What learning `ip` (answered for `names`, every name it is known
    /// under) changes: nothing, one ipcache entry to an identity this
    /// cluster already has (so no policy map changes), or more (a new
    /// label set: resolve again).
    pub fn learned_address(&self, ip: IpAddr, names: &[&str]) -> LearnedAddress {
        let keys: BTreeSet<String> = names
            .iter()
            .flat_map(|n| fqdn_keys_of(&self.fqdn_patterns, n))
            .collect();
        let prefix = IpNet::from(ip);
        let current = self
            .ipcache
            .iter()
            .find(|(p, _)| *p == prefix)
            .and_then(|(_, id)| self.identities.get(id));
        if keys.is_empty() {
            return match current.map(|c| &c.kind) {
                // It was selected under names it no longer has.
                Some(IdentityKind::Fqdn { .. }) => LearnedAddress::Resolve,
                _ => LearnedAddress::Unchanged,
            };
        }
        let labels = fqdn_labels(ip, &keys, &self.cidr_prefixes);
        match current {
            Some(c) if matches!(c.kind, IdentityKind::Endpoint | IdentityKind::Reserved) => {
                LearnedAddress::Unchanged
            }
            Some(c) if c.labels == labels => LearnedAddress::Unchanged,
            Some(_) => LearnedAddress::Resolve,
            None => self
                .identities
                .values()
                .find(|id| matches!(id.kind, IdentityKind::Fqdn { .. }) && id.labels == labels)
                .map_or(LearnedAddress::Resolve, |id| {
                    LearnedAddress::Ipcache(prefix, id.id)
                }),
        }
    }

    /// Adds the ipcache entry [`Self::learned_address`] asked for, as a
    /// resolve with the address learned would have it.
    pub fn add_learned_address(&mut self, prefix: IpNet, id: NumericIdentity) {
        if self.ipcache.iter().any(|(p, _)| *p == prefix) {
            return;
        }
        let at = self
            .ipcache
            .iter()
            .position(|(p, _)| {
                p.prefix_len() < prefix.prefix_len()
                    || (p.prefix_len() == prefix.prefix_len() && *p > prefix)
            })
            .unwrap_or(self.ipcache.len());
        self.ipcache.insert(at, (prefix, id));
    }

    /// Takes a learned address that no name answers for any more out of
    /// the ipcache, when that is all a resolve without it would change:
    /// its identity keeps other addresses (so the policy maps keep it).
    /// Returns the identity the address falls back to (a covering
    /// prefix's, or world), or `None` when a resolve is needed.
    pub fn forget_learned_address(&mut self, ip: IpAddr) -> Option<NumericIdentity> {
        let prefix = IpNet::from(ip);
        let i = self.ipcache.iter().position(|(p, _)| *p == prefix)?;
        let id = self.ipcache[i].1;
        if !self
            .identities
            .get(&id)
            .is_some_and(|x| matches!(x.kind, IdentityKind::Fqdn { .. }))
        {
            return None;
        }
        let others = self
            .ipcache
            .iter()
            .any(|(p, other)| *other == id && *p != prefix);
        if !others {
            return None;
        }
        self.ipcache.remove(i);
        Some(self.identity_of_ip(ip))
    }

    /// For a learned address: its identity (an FQDN one) and the identity
    /// it has without its names (a covering prefix's, or world). `None`
    /// when the address has no learned (FQDN) identity of its own.
    pub fn learned_and_fallback_identity(
        &self,
        ip: IpAddr,
    ) -> Option<(NumericIdentity, NumericIdentity)> {
        let prefix = IpNet::from(ip);
        let id = self.ipcache.iter().find(|(p, _)| *p == prefix)?.1;
        if !self
            .identities
            .get(&id)
            .is_some_and(|x| matches!(x.kind, IdentityKind::Fqdn { .. }))
        {
            return None;
        }
        let fallback = self
            .ipcache
            .iter()
            .find(|(p, _)| *p != prefix && p.contains(&ip))
            .map(|(_, id)| *id)
            .unwrap_or(NumericIdentity::WORLD);
        Some((id, fallback))
    }
}

/// What a newly learned address changes (see [`Cluster::learned_address`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnedAddress {
    /// Nothing: no toFQDNs selector selects it, or it already has the
    /// identity it would get, or it is a cluster address.
    Unchanged,
    /// Only this ipcache entry, to an identity the cluster already has.
    Ipcache(IpNet, NumericIdentity),
    /// A label set the cluster has no identity for yet, or an address
    /// whose identity changes: resolve again.
    Resolve,
}

#[cfg(test)]
mod tests;
