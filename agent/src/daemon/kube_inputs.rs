//! Kubernetes mode's inputs: the watcher's snapshots, read object by
//! object. A policy object is parsed once per resource version and kept;
//! a new snapshot re-parses only the objects whose version in force
//! changed ([`k8s_watch::Snapshot::policy_changes_since`]), so one edited
//! policy costs one parse, not one per object of the cluster.

use super::changes::{
    Changes, InputSnapshot, InputUpdate, LocalPods, ObjectKey, Policies, TopologyDelta,
};
use k8s_watch::{PolicyKey, Snapshot};
use policy_model::PolicySet;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the last snapshot held, parsed.
#[derive(Default)]
pub(super) struct KubeObjects {
    last: Option<Arc<Snapshot>>,
    /// Each policy object in force, parsed.
    parsed: BTreeMap<PolicyKey, Arc<PolicySet>>,
}

fn object_key(key: &PolicyKey) -> ObjectKey {
    (key.0.to_string(), key.1.clone(), key.2.clone())
}

impl KubeObjects {
    /// The digest of the policy objects of the last snapshot read
    /// ([`Snapshot::policy_digest`]): what `applied.hash` records in
    /// Kubernetes mode once they are applied.
    pub(super) fn digest(&self) -> Option<u64> {
        self.last.as_ref().map(|s| s.policy_digest())
    }

    /// Reads `snap`: the full inputs (for the resolution from scratch)
    /// and what changed since the last snapshot read, object by object.
    /// An object that does not parse (the watcher checked it already, so a
    /// bug) fails the read and nothing changes.
    pub(super) fn read(&mut self, snap: &Arc<Snapshot>) -> InputUpdate {
        match self.try_read(snap) {
            Ok(update) => update,
            Err(e) => InputUpdate {
                rejected: vec![e.clone()],
                standing: vec![e],
                ..Default::default()
            },
        }
    }

    fn try_read(&mut self, snap: &Arc<Snapshot>) -> Result<InputUpdate, String> {
        for st in snap.status.iter().filter(|s| !s.valid) {
            tracing::warn!(
                kind = %st.kind, namespace = ?st.namespace, name = %st.name,
                reason = ?st.reason, "invalid policy (not enforced)"
            );
        }
        let empty = Snapshot::default();
        let before = self.last.as_deref().unwrap_or(&empty);
        let (upserted, removed) = snap.policy_changes_since(before);
        // Parse every new version first: one that does not parse leaves
        // the kept objects untouched (no copy of them is needed).
        let mut fresh = Vec::with_capacity(upserted.len());
        for p in &upserted {
            let set = policy_model::load::load_str(&p.json, &p.source_name()).map_err(|errs| {
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
            fresh.push(((p.kind, p.namespace.clone(), p.name.clone()), set));
        }
        let mut changes = Changes::default();
        for (key, set) in fresh {
            let delta = &mut changes.policies;
            let set = Arc::new(set);
            delta.upserted.push(set.clone());
            let added = self.parsed.insert(key.clone(), set).is_none();
            if added {
                &mut delta.added
            } else {
                &mut delta.updated
            }
            .insert(object_key(&key));
        }
        for key in &removed {
            self.parsed.remove(key);
            changes.policies.removed.insert(object_key(key));
        }
        if self.last.is_some() {
            let topology = TopologyDelta::between(&before.topology, &snap.topology);
            changes.topology = (!topology.is_empty()).then_some(topology);
        }
        // The set in the snapshot's order (kind, namespace, name).
        let mut policies = Policies::default();
        for p in &snap.policies {
            if let Some(set) = self
                .parsed
                .get(&(p.kind, p.namespace.clone(), p.name.clone()))
            {
                policies.0.push(set.clone());
            }
        }
        self.last = Some(snap.clone());
        Ok(InputUpdate {
            snapshot: Some(InputSnapshot {
                topology: Arc::new(snap.topology.clone()),
                policies,
                local_pods: LocalPods::only(snap.local_pods.iter().cloned().collect()),
            }),
            changes,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests;
