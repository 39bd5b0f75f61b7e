//! What fits in the kernel maps, decided before anything is written.
//!
//! The policy map and the ipcache are fixed-size kernel maps shared by every
//! endpoint of the node. A write that does not fit fails in the kernel; if
//! that failure stopped the whole apply, one tenant's oversized policy (or
//! a flood of learned names) would keep everyone else's older, wider policy
//! in force. So the agent plans first, with pure functions:
//!
//! - every endpoint has a budget of policy entries; an endpoint over it,
//!   or one that no longer fits in what the others leave, **fails closed**:
//!   all its entries are removed (no entry = drop in the kernel) and the
//!   failure shows in `status`, metrics and flows (`DROP_NO_POLICY`);
//! - in the ipcache, cluster entries (reserved, pods, policy CIDRs) come
//!   first; learned FQDN addresses only widen what is allowed, so they are
//!   the ones left out (or evicted) when the map is full: an address left
//!   out keeps the identity it would have without the name, never a wider
//!   one. CIDR identities (deny rules included) are never dropped for them.

use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};

/// Map sizes and budgets (entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLimits {
    /// The ipcache map's capacity.
    pub ipcache: usize,
    /// The policy map's capacity (all endpoints).
    pub policy: usize,
    /// Most policy entries one endpoint may hold.
    pub policy_per_endpoint: usize,
}

/// The kernel program's map sizes (`redirect-ebpf/bpf/portcullis.c`) and
/// Cilium's default per-endpoint policy map size.
pub const DEFAULT_LIMITS: MapLimits = MapLimits {
    ipcache: 65_536,
    policy: 65_536,
    policy_per_endpoint: 16_384,
};

/// Whether an endpoint's policy may be written this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Written whole.
    Full,
    /// More entries than one endpoint may hold.
    OverBudget { entries: usize, budget: usize },
    /// Fits its budget, but not in what the other endpoints leave free.
    NoRoom { entries: usize, free: usize },
}

impl Admission {
    /// Why the endpoint fails closed (`None`: it does not).
    pub fn reason(&self) -> Option<String> {
        match self {
            Admission::Full => None,
            Admission::OverBudget { entries, budget } => Some(format!(
                "policy needs {entries} map entries, more than the per-endpoint budget of {budget} (--policy-max-entries-per-endpoint); all its traffic is denied"
            )),
            Admission::NoRoom { entries, free } => Some(format!(
                "policy needs {entries} map entries but the node's policy map has {free} left (--policy-map-max-entries); all its traffic is denied"
            )),
        }
    }
}

/// One endpoint's entries before and after this change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointDemand {
    pub id: u16,
    /// Entries it holds now.
    pub old: usize,
    /// Entries its new policy needs.
    pub new: usize,
}

/// Decides which endpoints get their new policy written whole. Endpoints
/// are admitted in order of growth (shrinking and unchanged ones first, so
/// a change that only removes entries always goes through); an endpoint
/// over its budget, or one that does not fit after those admitted before
/// it, fails closed (holds no entries).
pub fn admit_endpoints(demands: &[EndpointDemand], limits: &MapLimits) -> BTreeMap<u16, Admission> {
    let mut order: Vec<&EndpointDemand> = demands.iter().collect();
    order.sort_by_key(|d| (d.new as i64 - d.old as i64, d.new, d.id));
    let mut used = 0usize;
    let mut out = BTreeMap::new();
    for d in order {
        let admission = if d.new > limits.policy_per_endpoint {
            Admission::OverBudget {
                entries: d.new,
                budget: limits.policy_per_endpoint,
            }
        } else if used + d.new <= limits.policy {
            used += d.new;
            Admission::Full
        } else {
            Admission::NoRoom {
                entries: d.new,
                free: limits.policy.saturating_sub(used),
            }
        };
        out.insert(d.id, admission);
    }
    out
}

/// What an ipcache entry is, for deciding what to leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpcacheClass {
    /// Reserved addresses, pods, policy CIDRs: never left out for a
    /// learned address.
    Cluster,
    /// An address learned from a DNS answer.
    Learned,
}

/// The ipcache writes of one apply.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IpcachePlan {
    /// Prefixes to remove (stale, or evicted learned addresses), first.
    pub deletes: Vec<IpNet>,
    /// Entries to add or change, after the deletes.
    pub upserts: Vec<(IpNet, u32)>,
    /// Learned addresses left out (not written or evicted).
    pub refused_learned: Vec<IpNet>,
    /// Cluster entries that do not fit even with every learned address
    /// left out (the map is too small for the node: raise
    /// `--ipcache-max-entries`).
    pub unwritable: Vec<IpNet>,
}

/// Plans the ipcache: cluster entries first (in the model's order), then
/// learned addresses already in the map, then new learned ones, up to
/// `capacity` entries.
pub fn plan_ipcache(
    old_map: &BTreeMap<IpNet, u32>,
    new: &[(IpNet, u32, IpcacheClass)],
    capacity: usize,
) -> IpcachePlan {
    let cluster = new.iter().filter(|e| e.2 == IpcacheClass::Cluster);
    let (learned_old, learned_new): (Vec<_>, Vec<_>) = new
        .iter()
        .filter(|e| e.2 == IpcacheClass::Learned)
        .partition(|e| old_map.contains_key(&e.0));
    let mut plan = IpcachePlan::default();
    let mut kept: BTreeSet<IpNet> = BTreeSet::new();
    for (prefix, id, class) in cluster.chain(learned_old).chain(learned_new) {
        if kept.contains(prefix) {
            continue;
        }
        if kept.len() >= capacity {
            match class {
                IpcacheClass::Cluster => plan.unwritable.push(*prefix),
                IpcacheClass::Learned => plan.refused_learned.push(*prefix),
            }
            continue;
        }
        kept.insert(*prefix);
        if old_map.get(prefix) != Some(id) {
            plan.upserts.push((*prefix, *id));
        }
    }
    plan.deletes = old_map
        .keys()
        .filter(|p| !kept.contains(*p))
        .copied()
        .collect();
    plan
}

#[cfg(test)]
mod tests;
