//! The kernel maps: what they hold ([`KernelState`]), which entries to
//! write ([`plan`], pure: the only place that decides), and the writer
//! ([`write`], thin: it writes what the plan says and records what it
//! could).
//!
//! An apply never stops at one endpoint's failure:
//!
//! 1. capacity is planned first ([`super::capacity`]): an endpoint over its
//!    budget or without room fails closed (all its entries removed);
//! 2. changes that narrow what is allowed (deletes of allows, deny
//!    upserts) go first, for every endpoint, so a revocation is never
//!    held up by another endpoint's growth;
//! 3. then the ipcache (deletes first; learned addresses are the ones left
//!    out when it is full);
//! 4. then the widening changes.
//!
//! An endpoint whose write fails in any step has all its entries removed
//! (no entry = drop). Every map write bumps the policy epoch in
//! [`redirect_ebpf::Datapath`], so established flows are judged again.

mod plan;
mod state;
mod write;

pub(super) use state::KernelState;

use super::capacity::MapLimits;
use super::inputs::LocalPods;
use plan::plan;
use policy_model::incremental::IncrementalCluster;
use std::collections::{BTreeMap, BTreeSet};
use write::{KernelMaps, write};

/// What one apply did: counts for metrics, failures for `status`.
#[derive(Debug, Default, Clone)]
pub(super) struct ApplyOutcome {
    /// Map entries written or deleted.
    pub(super) changes: usize,
    /// Endpoints (`ns/pod`) whose policy could not be written whole, with
    /// why. Their entries were removed: all their traffic is dropped.
    pub(super) failed: BTreeMap<String, String>,
    /// The endpoint ids of `failed` (planned again on every apply).
    pub(super) failed_ids: BTreeSet<u16>,
    /// Policies selecting a failed endpoint -> the endpoints.
    pub(super) failed_policies: BTreeMap<(String, Option<String>, String), Vec<String>>,
    /// Learned addresses left out of the ipcache (map full).
    pub(super) ipcache_refused: usize,
    /// Writes that failed outside an endpoint's policy (ipcache).
    pub(super) errors: Vec<String>,
    /// Entries in the policy map and the ipcache afterwards.
    pub(super) policy_entries: usize,
    pub(super) ipcache_entries: usize,
}

impl ApplyOutcome {
    pub(super) fn is_clean(&self) -> bool {
        self.failed.is_empty() && self.errors.is_empty() && self.ipcache_refused == 0
    }
}

/// Plans and writes `engine`'s state (see [`plan`] and [`write`]),
/// comparing only the endpoints of `touched` and the ipcache `prefixes`
/// (`None`: all); reports what did not go in.
pub(super) fn apply(
    dp: &mut impl KernelMaps,
    engine: &IncrementalCluster,
    state: &mut KernelState,
    local: &LocalPods,
    limits: &MapLimits,
    (touched, prefixes): (Option<&BTreeSet<u16>>, Option<&BTreeSet<ipnet::IpNet>>),
) -> ApplyOutcome {
    let plan = plan(state, engine, local, limits, touched, prefixes);
    let written = write(dp, &plan, state);
    let mut out = ApplyOutcome {
        changes: written.changes,
        ipcache_refused: written.ipcache_refused,
        errors: written.errors,
        ..ApplyOutcome::default()
    };
    for e in &plan.endpoints {
        let Some(reason) = written.failed.get(&e.id) else {
            continue;
        };
        tracing::error!(endpoint = %e.name, reason = %reason, "endpoint policy not applied; its traffic is denied");
        out.failed.insert(e.name.clone(), reason.clone());
        out.failed_ids.insert(e.id);
        if let Some(identity) = e.identity {
            for rule in engine.rules_selecting(identity) {
                let o = &rule.origin;
                let pods = out
                    .failed_policies
                    .entry((o.kind.to_string(), o.namespace.clone(), o.name.clone()))
                    .or_default();
                if !pods.contains(&e.name) {
                    pods.push(e.name.clone());
                }
            }
        }
    }
    for err in &out.errors {
        tracing::error!(error = %err, "ipcache write failed");
    }
    out.policy_entries = state.policies.values().map(Vec::len).sum();
    out.ipcache_entries = state.ipcache.len();
    out
}

#[cfg(test)]
mod tests;
