//! Where the daemon's inputs come from: files or the Kubernetes API.

use super::args::{AgentArgs, PodScope};
use super::status::PolicyState;
use anyhow::{Context, Result};
use policy_model::{PolicySet, Topology};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The pods this node enforces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalPods(Option<BTreeSet<String>>);

impl LocalPods {
    /// Every pod of the topology (file mode: the topology is this node's).
    pub fn all() -> Self {
        LocalPods(None)
    }

    /// Only these pods (`ns/pod`).
    pub fn only(pods: BTreeSet<String>) -> Self {
        LocalPods(Some(pods))
    }

    /// Whether the pod `ns/pod` is enforced here.
    pub fn contains(&self, full_name: &str) -> bool {
        self.0.as_ref().is_none_or(|l| l.contains(full_name))
    }
}

/// One complete reading of the inputs.
pub(super) struct InputSnapshot {
    pub(super) topology: Topology,
    pub(super) policies: PolicySet,
    pub(super) local_pods: LocalPods,
    /// File mode: the policy files' content hash (`applied.hash`).
    pub(super) content_hash: Option<u64>,
}

/// Where the agent's inputs come from.
pub(super) enum Inputs {
    /// Topology and policy files, re-read when they change.
    Files {
        topology: PathBuf,
        policies: Vec<PathBuf>,
        stamp: Vec<(PathBuf, Option<SystemTime>, u64)>,
    },
    /// The Kubernetes API, through a watcher's snapshots.
    Kubernetes {
        /// Kept alive: dropping it stops the watches.
        _watcher: k8s_watch::Watcher,
        rx: tokio::sync::watch::Receiver<Option<Arc<k8s_watch::Snapshot>>>,
    },
}

pub(super) fn states_of(set: &PolicySet) -> Vec<PolicyState> {
    set.policies
        .iter()
        .map(|p| PolicyState {
            kind: p.origin.kind.to_string(),
            namespace: p.origin.namespace.clone(),
            name: p.origin.name.clone(),
            valid: true,
            reason: None,
            applied: true,
            not_applied_on: Vec::new(),
        })
        .collect()
}

impl Inputs {
    /// The inputs `args` name: the Kubernetes API (waits for its first
    /// complete list) or files.
    /// `watch_metrics`: where the Kubernetes watcher counts (registered in
    /// the agent's registry); `None` outside Kubernetes mode.
    pub(super) fn open(
        rt: &tokio::runtime::Runtime,
        args: &AgentArgs,
        watch_metrics: Option<k8s_watch::WatchMetrics>,
    ) -> Result<Self> {
        if args.kubernetes {
            return Self::kubernetes(rt, args, watch_metrics.unwrap_or_default());
        }
        Ok(Inputs::Files {
            topology: args.topology.clone().context("--topology is required")?,
            policies: args.policies.clone(),
            stamp: Vec::new(),
        })
    }

    fn kubernetes(
        rt: &tokio::runtime::Runtime,
        args: &AgentArgs,
        watch_metrics: k8s_watch::WatchMetrics,
    ) -> Result<Self> {
        let scope = match args.pod_scope {
            PodScope::Cluster => k8s_watch::PodScope::Cluster,
            PodScope::ThisNode => k8s_watch::PodScope::ThisNode,
        };
        let kubeconfig = args.kubeconfig.clone();
        let node = args.node_name.clone();
        rt.block_on(async move {
            let client = crate::k8s::client(kubeconfig.as_deref()).await?;
            let mut config = k8s_watch::WatchConfig::new(&node);
            config.pod_scope = scope;
            config.metrics = watch_metrics;
            let watcher = k8s_watch::Watcher::start(client, config);
            let first = tokio::time::timeout(Duration::from_secs(60), watcher.ready())
                .await
                .context("no complete list from the API server within 60 s")?;
            tracing::info!(
                pods = first.local_pods.len(),
                policies = first.policies.len(),
                "first snapshot from the API server"
            );
            let rx = watcher.subscribe();
            Ok(Inputs::Kubernetes {
                _watcher: watcher,
                rx,
            })
        })
    }

    /// Per-policy states of the newest input (k8s: the API's view,
    /// including invalid objects).
    pub(super) fn policy_states(&self, set: &PolicySet) -> Vec<PolicyState> {
        match self {
            Inputs::Files { .. } => states_of(set),
            Inputs::Kubernetes { rx, .. } => rx
                .borrow()
                .as_ref()
                .map(|snap| {
                    snap.status
                        .iter()
                        .map(|st| PolicyState {
                            kind: st.kind.to_string(),
                            namespace: st.namespace.clone(),
                            name: st.name.clone(),
                            valid: st.valid,
                            reason: st.reason.clone(),
                            applied: true,
                            not_applied_on: Vec::new(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub(super) fn mode(&self) -> &'static str {
        match self {
            Inputs::Files { .. } => "files",
            Inputs::Kubernetes { .. } => "kubernetes",
        }
    }

    fn from_snapshot(snap: &k8s_watch::Snapshot) -> Result<InputSnapshot, String> {
        for st in snap.status.iter().filter(|s| !s.valid) {
            tracing::warn!(
                kind = %st.kind, namespace = ?st.namespace, name = %st.name,
                reason = ?st.reason, "invalid policy (not enforced)"
            );
        }
        let set = snap.policy_set().map_err(|errs| {
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        Ok(InputSnapshot {
            topology: snap.topology.clone(),
            policies: set,
            local_pods: LocalPods::only(snap.local_pods.iter().cloned().collect()),
            content_hash: None,
        })
    }

    /// The first inputs.
    pub(super) fn initial(&mut self) -> Result<InputSnapshot, String> {
        match self {
            Inputs::Files {
                topology,
                policies,
                stamp,
            } => {
                *stamp = fingerprint(policies);
                let topo = Topology::from_file(topology).map_err(|e| e.to_string())?;
                let hash = policy_model::load::content_hash(policies);
                let set = load_policies(policies)?;
                Ok(InputSnapshot {
                    topology: topo,
                    policies: set,
                    local_pods: LocalPods::all(),
                    content_hash: Some(hash),
                })
            }
            Inputs::Kubernetes { rx, .. } => {
                let snap = rx.borrow_and_update().clone();
                let snap = snap.ok_or("no snapshot yet")?;
                Self::from_snapshot(&snap)
            }
        }
    }

    /// Whether [`Self::changed`] may have something (a cheap look: file
    /// metadata, or the watch's flag).
    pub(super) fn pending(&self) -> bool {
        match self {
            Inputs::Files {
                policies, stamp, ..
            } => fingerprint(policies) != *stamp,
            Inputs::Kubernetes { rx, .. } => rx.has_changed().unwrap_or(false),
        }
    }

    /// New inputs if something changed since the last call.
    pub(super) fn changed(&mut self) -> Option<Result<InputSnapshot, String>> {
        match self {
            Inputs::Files {
                topology,
                policies,
                stamp,
            } => {
                let now = fingerprint(policies);
                if now == *stamp {
                    return None;
                }
                *stamp = now;
                let hash = policy_model::load::content_hash(policies);
                let read = load_policies(policies).and_then(|set| {
                    let topo = Topology::from_file(topology).map_err(|e| e.to_string())?;
                    Ok(InputSnapshot {
                        topology: topo,
                        policies: set,
                        local_pods: LocalPods::all(),
                        content_hash: Some(hash),
                    })
                });
                if let Err(e) = &read
                    && super::fdlimit::is_resource_error(e)
                {
                    // Read again on the next poll.
                    stamp.clear();
                }
                Some(read)
            }
            Inputs::Kubernetes { rx, .. } => {
                if !rx.has_changed().unwrap_or(false) {
                    return None;
                }
                let snap = rx.borrow_and_update().clone()?;
                Some(Self::from_snapshot(&snap))
            }
        }
    }
}

fn load_policies(paths: &[PathBuf]) -> Result<PolicySet, String> {
    PolicySet::load_paths(paths).map_err(|errs| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Modification times and sizes of every policy file the loader reads
/// (`policy_model::load::policy_files`, the one walker), and the inputs
/// that cannot be read: a cheap change check.
fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let listed = policy_model::load::policy_files(paths);
    let mut out: Vec<_> = listed
        .files
        .into_iter()
        .map(|p| match std::fs::metadata(&p) {
            Ok(m) => (p, m.modified().ok(), m.len()),
            Err(_) => (p, None, 0),
        })
        .collect();
    // An input that is missing or cannot be listed counts too, so its
    // return is seen.
    out.extend(
        listed
            .errors
            .iter()
            .map(|e| (PathBuf::from(e.to_string()), None, 0)),
    );
    out.sort();
    out
}

#[cfg(test)]
mod tests;
