//! Learned addresses past their TTL that open flows still use: marked in
//! the ipcache so they admit no new flow (finding: reconnecting every few
//! seconds used to keep an expired address open forever), unmarked when
//! learned again or gone.

use ipnet::IpNet;
use policy_model::incremental::IncrementalCluster;
use redirect_ebpf::Datapath;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The marks as written to the ipcache: address -> (identity, identity of
/// new flows).
#[derive(Debug, Default)]
pub(super) struct Lingering(BTreeMap<IpAddr, (u32, u32)>);

impl Lingering {
    /// Whether `ip` is marked.
    pub(super) fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains_key(ip)
    }

    /// After an apply, which rewrote changed entries without the mark:
    /// forgets the marks whose identity changed.
    pub(super) fn forget_rewritten(&mut self, cluster: &IncrementalCluster) {
        self.0.retain(|ip, (id, _)| {
            cluster
                .learned_and_fallback_identity(*ip)
                .is_some_and(|(now, _)| now.0 == *id)
        });
    }

    /// Marks the addresses of `past_ttl` the kernel holds (`ipcache`: what
    /// was written; a full ipcache may have left a learned address out,
    /// and it stays out) and unmarks the ones no longer past their TTL.
    pub(super) fn mark(
        &mut self,
        dp: &mut Datapath,
        cluster: &IncrementalCluster,
        past_ttl: BTreeSet<IpAddr>,
        ipcache: &BTreeMap<IpNet, u32>,
    ) {
        let mut target = BTreeMap::new();
        for ip in past_ttl {
            if let Some((id, fallback)) = cluster.learned_and_fallback_identity(ip)
                && ipcache.get(&IpNet::from(ip)) == Some(&id.0)
            {
                target.insert(ip, (id.0, fallback.0));
            }
        }
        for (ip, (id, fallback)) in &target {
            if self.0.get(ip) == Some(&(*id, *fallback)) {
                continue;
            }
            match dp.set_ipcache_lingering(IpNet::from(*ip), *id, *fallback) {
                Ok(()) => tracing::debug!(%ip, "learned address past its TTL: open flows only"),
                Err(e) => tracing::error!(error = %e, %ip, "marking an expired address failed"),
            }
        }
        let old = std::mem::replace(&mut self.0, target);
        let unmark: Vec<IpAddr> = old
            .keys()
            .filter(|ip| !self.0.contains_key(ip))
            .copied()
            .collect();
        self.unmark(dp, cluster, unmark);
    }

    /// Gives `ips` back their plain entry.
    pub(super) fn unmark(
        &mut self,
        dp: &mut Datapath,
        cluster: &IncrementalCluster,
        ips: Vec<IpAddr>,
    ) {
        for ip in ips {
            self.0.remove(&ip);
            let prefix = IpNet::from(ip);
            let Some(id) = cluster.state().ipcache.get(&prefix) else {
                continue;
            };
            if let Err(e) = dp.set_ipcache(prefix, id.0) {
                tracing::error!(error = %e, %ip, "unmarking a learned address failed");
            }
        }
    }
}
