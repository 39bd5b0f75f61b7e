//! Addresses learned from DNS: the identity a learned address has and the
//! one it falls back to without its names (what an address that lingers
//! past its TTL is marked with).

use super::cluster::Cluster;
use crate::identity::{IdentityKind, NumericIdentity};
use ipnet::IpNet;
use std::net::IpAddr;

impl Cluster {
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

#[cfg(test)]
mod tests;
