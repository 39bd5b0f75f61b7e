//! The thin half: writes a plan's ops and records what the maps hold.

use super::plan::{EndpointPlan, KernelOp, KernelPlan};
use super::state::{KernelState, kernel_entry};
use anyhow::{Context, Result};
use ipnet::IpNet;
use policy_model::{MapChange, MapState};
use redirect_ebpf::{Datapath, PolicyChange};
use std::collections::BTreeMap;

/// The map writes the writer needs; [`Datapath`] in the daemon, a fake in
/// the tests.
pub(in crate::daemon) trait KernelMaps {
    fn apply_policy(&mut self, changes: &[PolicyChange]) -> Result<()>;
    fn set_ipcache(&mut self, prefix: IpNet, identity: u32) -> Result<()>;
    fn remove_ipcache(&mut self, prefix: IpNet) -> Result<()>;
}

impl KernelMaps for Datapath {
    fn apply_policy(&mut self, changes: &[PolicyChange]) -> Result<()> {
        Ok(Datapath::apply_policy(self, changes)?)
    }
    fn set_ipcache(&mut self, prefix: IpNet, identity: u32) -> Result<()> {
        Ok(Datapath::set_ipcache(self, prefix, identity)?)
    }
    fn remove_ipcache(&mut self, prefix: IpNet) -> Result<()> {
        Ok(Datapath::remove_ipcache(self, prefix)?)
    }
}

/// What the writer did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(in crate::daemon) struct Written {
    /// Map entries written or deleted.
    pub(in crate::daemon) changes: usize,
    /// Endpoints that failed closed (in the plan or while writing), with why.
    pub(in crate::daemon) failed: BTreeMap<u16, String>,
    /// Learned addresses left out of the ipcache.
    pub(in crate::daemon) ipcache_refused: usize,
    /// Writes that failed outside an endpoint's policy.
    pub(in crate::daemon) errors: Vec<String>,
}

fn kernel_change(id: u16, change: &MapChange) -> Result<PolicyChange> {
    Ok(match change {
        MapChange::Upsert(k, v) => {
            let (k, v) = kernel_entry(id, k, Some(v))?;
            PolicyChange::Upsert(k, v.context("a value was given")?)
        }
        MapChange::Delete(k) => PolicyChange::Delete(kernel_entry(id, k, None)?.0),
    })
}

/// Writes `plan` and records in `state` what the maps now hold. An
/// endpoint that fails (in the plan, or at a write) has every entry it may
/// hold removed; what cannot be removed stays recorded and is retried.
pub(in crate::daemon) fn write(
    maps: &mut impl KernelMaps,
    plan: &KernelPlan,
    state: &mut KernelState,
) -> Written {
    let mut out = Written {
        failed: plan.failed.clone(),
        ipcache_refused: plan.ipcache_left_out,
        ..Written::default()
    };
    for op in &plan.ops {
        match op {
            KernelOp::Policy {
                endpoint,
                narrowing,
                changes,
            } => {
                if !narrowing && out.failed.contains_key(endpoint) {
                    continue;
                }
                let changes: Result<Vec<PolicyChange>> = changes
                    .iter()
                    .map(|c| kernel_change(*endpoint, c))
                    .collect();
                let result = changes.and_then(|changes| {
                    out.changes += changes.len();
                    maps.apply_policy(&changes)
                });
                if let Err(err) = result {
                    out.failed.entry(*endpoint).or_insert_with(|| {
                        format!("writing its policy failed: {err:#}; all its traffic is denied")
                    });
                }
            }
            KernelOp::IpcacheDelete(p) => match maps.remove_ipcache(*p) {
                Ok(()) => {
                    state.ipcache.remove(p);
                    out.changes += 1;
                }
                Err(e) => out
                    .errors
                    .push(format!("ipcache: removing {p} failed: {e}")),
            },
            KernelOp::IpcacheUpsert {
                prefix,
                identity,
                learned,
            } => match maps.set_ipcache(*prefix, *identity) {
                Ok(()) => {
                    state.ipcache.insert(*prefix, *identity);
                    out.changes += 1;
                }
                Err(_) if *learned => out.ipcache_refused += 1,
                Err(e) => out
                    .errors
                    .push(format!("ipcache: writing {prefix} failed: {e}")),
            },
        }
    }
    out.errors.extend(plan.errors.iter().cloned());
    for e in &plan.endpoints {
        let held = if out.failed.contains_key(&e.id) {
            fail_closed(maps, e)
        } else {
            e.new.clone()
        };
        if held.is_empty() && e.identity.is_none() {
            state.policies.remove(&e.id);
        } else {
            state
                .policies
                .insert(e.id, held.entries.into_iter().collect());
        }
    }
    out
}

/// Removes every entry `e` may hold (no entry = drop), one at a time;
/// returns what could not be removed.
fn fail_closed(maps: &mut impl KernelMaps, e: &EndpointPlan) -> MapState {
    let mut left = MapState::default();
    for k in e.held_keys() {
        let removed = kernel_entry(e.id, &k, None)
            .and_then(|(k, _)| maps.apply_policy(&[PolicyChange::Delete(k)]));
        if removed.is_err() {
            let v = e.old.entries.get(&k).or(e.new.entries.get(&k)).copied();
            if let Some(v) = v {
                left.entries.insert(k, v);
            }
        }
    }
    left
}
