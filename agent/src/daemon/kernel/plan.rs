//! The pure half: which map entries to write, and in which order.

use super::state::KernelState;
use crate::daemon::capacity::{self, Admission, EndpointDemand, IpcacheClass, MapLimits};
use crate::daemon::inputs::LocalPods;
use ipnet::IpNet;
use policy_model::incremental::IncrementalCluster;
use policy_model::{MapChange, MapKey, MapState, MapVerdict, NumericIdentity};
use std::collections::{BTreeMap, BTreeSet};

/// One write to the kernel maps; [`plan`] lists them in the order they are
/// written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::daemon) enum KernelOp {
    /// One endpoint's policy changes of one phase, written as one batch.
    /// A widening batch is skipped when the endpoint failed before it.
    Policy {
        endpoint: u16,
        narrowing: bool,
        changes: Vec<MapChange>,
    },
    /// Removes an ipcache prefix.
    IpcacheDelete(IpNet),
    /// Writes an ipcache prefix. A learned address that does not go in is
    /// left out (it only widens what is allowed), not an error.
    IpcacheUpsert {
        prefix: IpNet,
        identity: u32,
        learned: bool,
    },
}

/// One endpoint of a plan.
#[derive(Debug, Clone)]
pub(in crate::daemon) struct EndpointPlan {
    pub(in crate::daemon) id: u16,
    /// `ns/pod`, or `endpoint ID (removed)`.
    pub(in crate::daemon) name: String,
    /// `None`: the endpoint is gone.
    pub(in crate::daemon) identity: Option<NumericIdentity>,
    /// What it holds now.
    pub(in crate::daemon) old: MapState,
    /// What it is to hold (nothing when it fails closed).
    pub(in crate::daemon) new: MapState,
}

impl EndpointPlan {
    /// Every entry it may hold: what an endpoint that fails closed has
    /// removed.
    pub(in crate::daemon) fn held_keys(&self) -> BTreeSet<MapKey> {
        self.old
            .entries
            .keys()
            .chain(self.new.entries.keys())
            .copied()
            .collect()
    }
}

/// Which map entries to write, decided before any is.
#[derive(Debug, Clone, Default)]
pub(in crate::daemon) struct KernelPlan {
    /// The writes, in order.
    pub(in crate::daemon) ops: Vec<KernelOp>,
    /// Every local endpoint, then every endpoint that is gone.
    pub(in crate::daemon) endpoints: Vec<EndpointPlan>,
    /// Endpoints failing closed before anything is written, with why.
    pub(in crate::daemon) failed: BTreeMap<u16, String>,
    /// Learned addresses left out because the ipcache is full.
    pub(in crate::daemon) ipcache_left_out: usize,
    /// Cluster entries that do not fit in the ipcache.
    pub(in crate::daemon) errors: Vec<String>,
}

/// Whether a model change narrows what is allowed (deletes of allows, deny
/// upserts: written first) or widens it.
pub(in crate::daemon) fn phase_of(old: &MapState, change: &MapChange) -> bool {
    match change {
        MapChange::Upsert(_, v) => v.verdict == MapVerdict::Deny,
        MapChange::Delete(k) => old
            .entries
            .get(k)
            .is_none_or(|v| v.verdict != MapVerdict::Deny),
    }
}

/// The map writes that take the kernel from `state` to `engine`'s
/// ipcache and the map state of every endpoint of `local`, within
/// `limits` (see the module's documentation for the order).
///
/// `touched`: the endpoints whose policy may have changed since `state`
/// was written (the others are taken as they are, and only counted for
/// capacity); `None`: every endpoint is compared. A plan in which an
/// endpoint not compared would fail is made again with every endpoint.
///
/// `prefixes`: the ipcache prefixes that may have changed since `state`
/// was written, when it holds every other entry the engine has (nothing
/// was left out); compared alone while the whole ipcache fits. `None`:
/// the whole ipcache is planned (capacity, learned addresses left out).
pub(in crate::daemon) fn plan(
    state: &KernelState,
    engine: &IncrementalCluster,
    local: &LocalPods,
    limits: &MapLimits,
    touched: Option<&BTreeSet<u16>>,
    prefixes: Option<&BTreeSet<IpNet>>,
) -> KernelPlan {
    let planned = plan_some(state, engine, local, limits, touched, prefixes);
    match planned {
        Some(p) => p,
        None => plan_some(state, engine, local, limits, None, None)
            .expect("a plan comparing every endpoint is always made"),
    }
}

/// [`plan`]; `None` when an endpoint not in `touched` would fail.
fn plan_some(
    state: &KernelState,
    engine: &IncrementalCluster,
    local: &LocalPods,
    limits: &MapLimits,
    touched: Option<&BTreeSet<u16>>,
    prefixes: Option<&BTreeSet<IpNet>>,
) -> Option<KernelPlan> {
    let old_state = |id: u16| MapState {
        entries: state
            .policies
            .get(&id)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default(),
    };
    let is_touched = |id: u16| touched.is_none_or(|t| t.contains(&id));
    let mut eps: Vec<EndpointPlan> = Vec::new();
    // Endpoints taken as they are: id -> entries held.
    let mut kept: BTreeMap<u16, usize> = BTreeMap::new();
    for ep in engine.endpoints() {
        if !local.contains(&ep.full_name()) {
            continue;
        }
        if let Some(held) = state.policies.get(&ep.id).filter(|_| !is_touched(ep.id)) {
            kept.insert(ep.id, held.len());
            continue;
        }
        let Some(pol) = engine.endpoint_policy(ep.id) else {
            continue;
        };
        for w in &pol.warnings {
            tracing::warn!(endpoint = %ep.full_name(), "{w}");
        }
        eps.push(EndpointPlan {
            id: ep.id,
            name: ep.full_name(),
            identity: Some(ep.identity),
            old: old_state(ep.id),
            new: pol.map.clone(),
        });
    }
    // Endpoints that are gone: their entries leave the policy map.
    let gone: Vec<u16> = state
        .policies
        .keys()
        .copied()
        .filter(|id| !eps.iter().any(|e| e.id == *id) && !kept.contains_key(id))
        .collect();
    for id in gone {
        eps.push(EndpointPlan {
            id,
            name: format!("endpoint {id} (removed)"),
            identity: None,
            old: old_state(id),
            new: MapState::default(),
        });
    }

    let (ipc, unwritable_ids) = match prefixes {
        Some(ps) if engine.state().ipcache.len() <= limits.ipcache => {
            (plan_prefixes(state, engine, ps), BTreeSet::new())
        }
        _ => plan_whole_ipcache(state, engine, limits),
    };

    if touched.is_some() && !ipc.unwritable.is_empty() {
        // Endpoints not compared may name those identities.
        return None;
    }
    // 1. Capacity.
    let demands: Vec<EndpointDemand> = eps
        .iter()
        .map(|e| EndpointDemand {
            id: e.id,
            old: e.old.len(),
            new: e.new.len(),
        })
        .chain(kept.iter().map(|(id, n)| EndpointDemand {
            id: *id,
            old: *n,
            new: *n,
        }))
        .collect();
    let admissions = capacity::admit_endpoints(&demands, limits);
    if kept
        .keys()
        .any(|id| admissions.get(id).and_then(Admission::reason).is_some())
    {
        return None;
    }
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

    let mut ops = Vec::new();
    // Each endpoint's changes, compared once and split by phase.
    let mut widening: Vec<(u16, Vec<MapChange>)> = Vec::new();
    // 2. Narrowing changes, every endpoint (those failing closed too).
    for e in &eps {
        let (narrow, widen): (Vec<MapChange>, Vec<MapChange>) = e
            .old
            .diff(&e.new)
            .into_iter()
            .partition(|c| phase_of(&e.old, c));
        if !narrow.is_empty() {
            ops.push(KernelOp::Policy {
                endpoint: e.id,
                narrowing: true,
                changes: narrow,
            });
        }
        if !widen.is_empty() && !failed.contains_key(&e.id) {
            widening.push((e.id, widen));
        }
    }
    // 3. The ipcache.
    ops.extend(ipc.deletes.iter().map(|p| KernelOp::IpcacheDelete(*p)));
    ops.extend(ipc.upserts.iter().map(|(p, id)| KernelOp::IpcacheUpsert {
        prefix: *p,
        identity: *id,
        learned: is_learned(engine, *id),
    }));
    // 4. Widening changes of the endpoints that fit.
    ops.extend(
        widening
            .into_iter()
            .map(|(endpoint, changes)| KernelOp::Policy {
                endpoint,
                narrowing: false,
                changes,
            }),
    );

    let mut errors = Vec::new();
    if !ipc.unwritable.is_empty() {
        errors.push(format!(
            "ipcache: {} cluster entries do not fit in {} (raise --ipcache-max-entries), e.g. {}",
            ipc.unwritable.len(),
            limits.ipcache,
            ipc.unwritable[0]
        ));
    }
    Some(KernelPlan {
        ops,
        endpoints: eps,
        failed,
        ipcache_left_out: ipc.refused_learned.len(),
        errors,
    })
}

/// Whether `id` is a learned address's (FQDN) identity: such an entry only
/// widens what is allowed, so it is the one left out when the ipcache is
/// full.
fn is_learned(engine: &IncrementalCluster, id: u32) -> bool {
    use policy_model::identity::IdentityKind;
    matches!(
        engine.identity(NumericIdentity(id)).map(|i| &i.kind),
        Some(IdentityKind::Fqdn { .. })
    )
}

/// The ipcache writes of the prefixes a change touched, when `state`
/// holds every other entry and the whole ipcache fits.
fn plan_prefixes(
    state: &KernelState,
    engine: &IncrementalCluster,
    prefixes: &BTreeSet<IpNet>,
) -> capacity::IpcachePlan {
    let mut plan = capacity::IpcachePlan::default();
    for p in prefixes {
        let want = engine.state().ipcache.get(p).map(|id| id.0);
        match (want, state.ipcache.get(p)) {
            (Some(id), have) if have != Some(&id) => plan.upserts.push((*p, id)),
            (None, Some(_)) => plan.deletes.push(*p),
            _ => {}
        }
    }
    plan
}

/// The whole ipcache against `limits`: pods and reserved addresses first,
/// then policy CIDRs, then learned addresses (the ones left out when it is
/// full); with the identities some of whose addresses cannot be written.
fn plan_whole_ipcache(
    state: &KernelState,
    engine: &IncrementalCluster,
    limits: &MapLimits,
) -> (capacity::IpcachePlan, BTreeSet<u32>) {
    let mut new_ipc: Vec<(IpNet, u32, IpcacheClass, u8)> = engine
        .ipcache()
        .iter()
        .map(|(p, id)| {
            use policy_model::identity::IdentityKind;
            let (class, rank) = match engine.identity(*id).map(|i| &i.kind) {
                Some(IdentityKind::Fqdn { .. }) => (IpcacheClass::Learned, 2),
                Some(IdentityKind::Cidr(_)) => (IpcacheClass::Cluster, 1),
                _ => (IpcacheClass::Cluster, 0),
            };
            (*p, id.0, class, rank)
        })
        .collect();
    new_ipc.sort_by_key(|e| e.3);
    let new_ipc: Vec<(IpNet, u32, IpcacheClass)> = new_ipc
        .into_iter()
        .map(|(p, id, c, _)| (p, id, c))
        .collect();
    let ipc = capacity::plan_ipcache(&state.ipcache, &new_ipc, limits.ipcache);
    // Identities some of whose addresses cannot be written: an endpoint
    // whose policy names one would see those addresses as a wider
    // identity (e.g. a deny CIDR falling back to an allowed world), so it
    // fails closed.
    let unwritable_ids: BTreeSet<u32> = new_ipc
        .iter()
        .filter(|(p, _, _)| ipc.unwritable.contains(p))
        .map(|(_, id, _)| *id)
        .collect();

    (ipc, unwritable_ids)
}
