//! What the kernel maps hold and how the model's entries become theirs.

use super::capacity::{self, MapLimits};
use super::inputs::LocalPods;
use anyhow::{Context, Result};
use policy_model::{
    Cluster, Direction, L7Parser, MapChange, MapKey, MapState, MapValue, MapVerdict,
};
use redirect_ebpf::{Datapath, PolicyChange, PolicyKey, PolicyValue};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Proxy port per L7 parser. The proxy listens on these; until it does,
/// redirected flows are dropped by the kernel (fail closed).
pub fn proxy_port(parser: L7Parser) -> u16 {
    match parser {
        L7Parser::Http => 15001,
        L7Parser::Dns => 15053,
        L7Parser::Kafka => 15092,
    }
}

/// The model's key and value as the kernel's: the one conversion point.
pub fn kernel_entry(
    endpoint_id: u16,
    key: &MapKey,
    value: Option<&MapValue>,
) -> Result<(PolicyKey, Option<PolicyValue>)> {
    let dir = match key.direction {
        Direction::Ingress => redirect_ebpf::Direction::Ingress,
        Direction::Egress => redirect_ebpf::Direction::Egress,
    };
    let k = PolicyKey::new(
        key.identity.0,
        endpoint_id,
        dir,
        key.port.protocol,
        key.port.port,
        key.port.prefix_len,
    )?;
    let v = value.map(|v| match (v.verdict, v.redirect) {
        (MapVerdict::Deny, _) => PolicyValue::deny(v.cookie),
        (MapVerdict::Allow, None) => PolicyValue::allow(v.cookie),
        (MapVerdict::Allow, Some(p)) => PolicyValue::redirect(proxy_port(p), v.cookie),
    });
    Ok((k, v))
}

/// What the agent last wrote to the kernel; persisted so a restarted
/// agent can compute deltas against the pinned maps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct KernelState {
    pub(super) policies: BTreeMap<u16, Vec<(MapKey, MapValue)>>,
    pub(super) ipcache: Vec<(ipnet::IpNet, u32)>,
}

/// What one apply did: counts for metrics, failures for `status`.
#[derive(Debug, Default, Clone)]
pub(super) struct ApplyOutcome {
    /// Map entries written or deleted.
    pub(super) changes: usize,
    /// Endpoints (`ns/pod`) whose policy could not be written whole, with
    /// why. Their entries were removed: all their traffic is dropped.
    pub(super) failed: BTreeMap<String, String>,
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

/// One endpoint's part of an apply.
struct EndpointApply {
    id: u16,
    name: String,
    old: MapState,
    new: MapState,
}

/// The kernel change of one model change, and whether it narrows what is
/// allowed (deletes of allows, deny upserts: written first) or widens it.
fn phase_of(old: &MapState, change: &MapChange) -> bool {
    match change {
        MapChange::Upsert(_, v) => v.verdict == MapVerdict::Deny,
        MapChange::Delete(k) => old
            .entries
            .get(k)
            .is_none_or(|v| v.verdict != MapVerdict::Deny),
    }
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

/// Applies the cluster's ipcache and every endpoint's map state as deltas
/// against what was applied before, within `limits`, and never stops at
/// one endpoint's failure:
///
/// 1. capacity is planned first ([`capacity`]): an endpoint over its
///    budget or without room fails closed (all its entries removed);
/// 2. changes that narrow what is allowed (deletes of allows, deny
///    upserts) go first, for every endpoint, so a revocation is never
///    held up by another endpoint's growth;
/// 3. then the ipcache (deletes first; learned addresses are the ones left
///    out when it is full);
/// 4. then the widening changes.
///
/// An endpoint whose write fails in any step has all its entries removed
/// (no entry = drop). Everything is reported in the outcome.
pub(super) fn apply(
    dp: &mut Datapath,
    cluster: &Cluster,
    applied: &mut KernelState,
    local: &LocalPods,
    limits: &MapLimits,
) -> ApplyOutcome {
    use capacity::{Admission, EndpointDemand, IpcacheClass};
    let mut out = ApplyOutcome::default();
    let old_state = |applied: &KernelState, id: u16| MapState {
        entries: applied
            .policies
            .get(&id)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default(),
    };
    let mut eps: Vec<EndpointApply> = Vec::new();
    let mut identities = BTreeMap::new();
    for ep in cluster.endpoints() {
        if !local.contains(&ep.full_name()) {
            continue;
        }
        let pol = cluster.endpoint_policy(ep);
        for w in &pol.warnings {
            tracing::warn!(endpoint = %ep.full_name(), "{w}");
        }
        identities.insert(ep.id, ep.identity);
        eps.push(EndpointApply {
            id: ep.id,
            name: ep.full_name(),
            old: old_state(applied, ep.id),
            new: pol.map,
        });
    }
    // Endpoints that are gone: their entries leave the policy map.
    let gone: Vec<u16> = applied
        .policies
        .keys()
        .copied()
        .filter(|id| !eps.iter().any(|e| e.id == *id))
        .collect();
    for id in gone {
        eps.push(EndpointApply {
            id,
            name: format!("endpoint {id} (removed)"),
            old: old_state(applied, id),
            new: MapState::default(),
        });
    }

    // The ipcache plan: pods and reserved addresses first, then policy
    // CIDRs, then learned addresses (the ones left out when it is full).
    let mut new_ipc: Vec<(ipnet::IpNet, u32, IpcacheClass, u8)> = cluster
        .ipcache()
        .iter()
        .map(|(p, id)| {
            use policy_model::identity::IdentityKind;
            let (class, rank) = match cluster.identity(*id).map(|i| &i.kind) {
                Some(IdentityKind::Fqdn { .. }) => (IpcacheClass::Learned, 2),
                Some(IdentityKind::Cidr(_)) => (IpcacheClass::Cluster, 1),
                _ => (IpcacheClass::Cluster, 0),
            };
            (*p, id.0, class, rank)
        })
        .collect();
    new_ipc.sort_by_key(|e| e.3);
    let new_ipc: Vec<(ipnet::IpNet, u32, IpcacheClass)> = new_ipc
        .into_iter()
        .map(|(p, id, c, _)| (p, id, c))
        .collect();
    let plan = capacity::plan_ipcache(&applied.ipcache, &new_ipc, limits.ipcache);
    // Identities some of whose addresses cannot be written: an endpoint
    // whose policy names one would see those addresses as a wider
    // identity (e.g. a deny CIDR falling back to an allowed world), so it
    // fails closed.
    let unwritable_ids: BTreeSet<u32> = new_ipc
        .iter()
        .filter(|(p, _, _)| plan.unwritable.contains(p))
        .map(|(_, id, _)| *id)
        .collect();

    // 1. Capacity.
    let demands: Vec<EndpointDemand> = eps
        .iter()
        .map(|e| EndpointDemand {
            id: e.id,
            old: e.old.len(),
            new: e.new.len(),
        })
        .collect();
    let admissions = capacity::admit_endpoints(&demands, limits);
    let mut failed: BTreeMap<u16, String> = BTreeMap::new();
    for e in &mut eps {
        if let Some(reason) = admissions.get(&e.id).and_then(Admission::reason) {
            failed.insert(e.id, reason);
            e.new = MapState::default();
        } else if let Some(k) = e
            .new
            .entries
            .keys()
            .find(|k| unwritable_ids.contains(&k.identity.0))
        {
            failed.insert(
                e.id,
                format!(
                    "its policy names identity {} whose addresses do not fit in the ipcache (--ipcache-max-entries {}); all its traffic is denied",
                    k.identity.0, limits.ipcache
                ),
            );
            e.new = MapState::default();
        }
    }

    // 2. Narrowing changes, every endpoint.
    let write = |dp: &mut Datapath,
                 failed: &mut BTreeMap<u16, String>,
                 out: &mut ApplyOutcome,
                 e: &EndpointApply,
                 narrowing: bool| {
        if failed.contains_key(&e.id) && !narrowing {
            return;
        }
        let changes: Result<Vec<PolicyChange>> = e
            .old
            .diff(&e.new)
            .iter()
            .filter(|c| phase_of(&e.old, c) == narrowing)
            .map(|c| kernel_change(e.id, c))
            .collect();
        let result = changes.and_then(|changes| {
            out.changes += changes.len();
            dp.apply_policy(&changes).map_err(anyhow::Error::from)
        });
        if let Err(err) = result {
            failed.entry(e.id).or_insert_with(|| {
                format!("writing its policy failed: {err:#}; all its traffic is denied")
            });
        }
    };
    for e in &eps {
        write(dp, &mut failed, &mut out, e, true);
    }

    // 3. The ipcache (planned before step 1).
    let mut ipc: BTreeMap<ipnet::IpNet, u32> = applied.ipcache.iter().copied().collect();
    for p in &plan.deletes {
        match dp.remove_ipcache(*p) {
            Ok(()) => {
                ipc.remove(p);
                out.changes += 1;
            }
            Err(e) => out
                .errors
                .push(format!("ipcache: removing {p} failed: {e}")),
        }
    }
    let learned: BTreeSet<ipnet::IpNet> = new_ipc
        .iter()
        .filter(|e| e.2 == IpcacheClass::Learned)
        .map(|e| e.0)
        .collect();
    out.ipcache_refused = plan.refused_learned.len();
    for (p, id) in &plan.upserts {
        match dp.set_ipcache(*p, *id) {
            Ok(()) => {
                ipc.insert(*p, *id);
                out.changes += 1;
            }
            // A learned address only widens: left out, counted.
            Err(_) if learned.contains(p) => out.ipcache_refused += 1,
            Err(e) => out.errors.push(format!("ipcache: writing {p} failed: {e}")),
        }
    }
    if !plan.unwritable.is_empty() {
        out.errors.push(format!(
            "ipcache: {} cluster entries do not fit in {} (raise --ipcache-max-entries), e.g. {}",
            plan.unwritable.len(),
            limits.ipcache,
            plan.unwritable[0]
        ));
    }
    // Kept in the model's order (longest prefixes first).
    applied.ipcache = new_ipc
        .iter()
        .filter_map(|(p, _, _)| ipc.get(p).map(|id| (*p, *id)))
        .collect();
    for (p, id) in &ipc {
        if !applied.ipcache.iter().any(|(q, _)| q == p) {
            // Still in the map (a delete failed): remembered, retried.
            applied.ipcache.push((*p, *id));
        }
    }

    // 4. Widening changes.
    for e in &eps {
        write(dp, &mut failed, &mut out, e, false);
    }

    // Endpoints that failed: every entry they may hold goes (no entry =
    // drop); what cannot be removed stays recorded and is retried.
    for e in &mut eps {
        if !failed.contains_key(&e.id) {
            continue;
        }
        let keys: BTreeSet<MapKey> = e
            .old
            .entries
            .keys()
            .chain(e.new.entries.keys())
            .copied()
            .collect();
        let mut left = MapState::default();
        for k in keys {
            let removed = kernel_entry(e.id, &k, None)
                .and_then(|(k, _)| Ok(dp.apply_policy(&[PolicyChange::Delete(k)])?));
            if removed.is_err() {
                let v = e.old.entries.get(&k).or(e.new.entries.get(&k)).copied();
                if let Some(v) = v {
                    left.entries.insert(k, v);
                }
            }
        }
        e.new = left;
    }
    for e in &eps {
        if e.new.is_empty() && !identities.contains_key(&e.id) {
            applied.policies.remove(&e.id);
        } else {
            applied
                .policies
                .insert(e.id, e.new.entries.iter().map(|(k, v)| (*k, *v)).collect());
        }
        if let Some(reason) = failed.get(&e.id) {
            tracing::error!(endpoint = %e.name, reason = %reason, "endpoint policy not applied; its traffic is denied");
            out.failed.insert(e.name.clone(), reason.clone());
            if let Some(identity) = identities.get(&e.id) {
                for rule in cluster.rules_selecting(*identity) {
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
    }
    for err in &out.errors {
        tracing::error!(error = %err, "ipcache write failed");
    }
    out.policy_entries = applied.policies.values().map(Vec::len).sum();
    out.ipcache_entries = applied.ipcache.len();
    out
}

#[cfg(test)]
mod tests;
