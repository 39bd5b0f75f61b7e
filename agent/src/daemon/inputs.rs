//! Where the daemon's inputs come from: files or the Kubernetes API.

use super::args::{AgentArgs, PodScope};
pub(super) use super::changes::{InputSnapshot, InputUpdate, LocalPods, Policies};
use super::events::FileBatch;
use super::kube_inputs::KubeObjects;
use super::policy_files::{PolicyFileCache, TopologyFile, TopologyRefresh};
use super::status::PolicyState;
use super::watch::WatchedInputs;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where the agent's inputs come from.
pub(super) enum Inputs {
    /// Topology and policy files, re-read by object when they change.
    Files(Box<FileInputs>),
    /// The Kubernetes API, through a watcher's snapshots.
    Kubernetes {
        /// Kept alive: dropping it stops the watches.
        _watcher: k8s_watch::Watcher,
        rx: tokio::sync::watch::Receiver<Option<Arc<k8s_watch::Snapshot>>>,
        /// The last snapshot read, its policy objects parsed.
        objects: KubeObjects,
    },
}

/// File mode: the paths, the files in force and this node's name.
pub(super) struct FileInputs {
    topology_path: PathBuf,
    policies: Vec<PathBuf>,
    topology: Option<TopologyFile>,
    /// This node's view of the topology and its pods, until the topology
    /// changes.
    view: Option<(Arc<policy_model::Topology>, LocalPods)>,
    cache: PolicyFileCache,
    node: String,
    /// Times and sizes of the inputs at the last fallback re-check.
    stamp: Vec<(PathBuf, Option<SystemTime>, u64)>,
}

pub(super) fn states_of(set: &Policies) -> Vec<PolicyState> {
    set.iter()
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
        // Absolute, as the file watcher reports them.
        let absolute = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
        let topology = args.topology.as_ref().context("--topology is required")?;
        Ok(Inputs::Files(Box::new(FileInputs {
            topology_path: absolute(topology),
            policies: args.policies.iter().map(absolute).collect(),
            topology: None,
            view: None,
            cache: PolicyFileCache::default(),
            node: args.node_name.clone(),
            stamp: Vec::new(),
        })))
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
                objects: KubeObjects::default(),
            })
        })
    }

    /// File mode: what the file watcher watches.
    pub(super) fn watched(&self) -> Option<WatchedInputs> {
        match self {
            Inputs::Files(f) => Some(WatchedInputs {
                topology: f.topology_path.clone(),
                policies: f.policies.clone(),
            }),
            Inputs::Kubernetes { .. } => None,
        }
    }

    /// The fallback re-check, when the file watcher is not running:
    /// whether any input's time or size changed since the last call.
    pub(super) fn files_touched(&mut self) -> bool {
        let Inputs::Files(f) = self else { return false };
        let mut paths = f.policies.clone();
        paths.push(f.topology_path.clone());
        let now = fingerprint(&paths);
        let touched = now != f.stamp;
        f.stamp = now;
        touched
    }

    /// Kubernetes mode: the watcher's snapshots, for forwarding.
    pub(super) fn snapshots(
        &self,
    ) -> Option<tokio::sync::watch::Receiver<Option<Arc<k8s_watch::Snapshot>>>> {
        match self {
            Inputs::Files(_) => None,
            Inputs::Kubernetes { rx, .. } => Some(rx.clone()),
        }
    }

    /// Per-policy states of the newest input (k8s: the API's view,
    /// including invalid objects).
    pub(super) fn policy_states(&self, set: &Policies) -> Vec<PolicyState> {
        match self {
            Inputs::Files(f) => {
                let kept = f.cache.kept_back();
                let mut states = states_of(set);
                for st in &mut states {
                    let key = (st.kind.clone(), st.namespace.clone(), st.name.clone());
                    if kept.contains(&key) {
                        st.reason = Some(
                            "its file's newest version was rejected (see last_error); this version stays in force".into(),
                        );
                    }
                }
                states
            }
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

    /// What `applied.hash` records once the inputs are applied: in file
    /// mode the hash of the policy files in force, computed after the
    /// apply, off the change's path (it reads every file's bytes); in
    /// Kubernetes mode the digest of the policy objects' versions in force
    /// ([`k8s_watch::policy_digest`]).
    pub(super) fn applied_hash(&mut self) -> Option<u64> {
        match self {
            Inputs::Files(f) => Some(f.cache.content_hash()),
            Inputs::Kubernetes { objects, .. } => objects.digest(),
        }
    }

    pub(super) fn mode(&self) -> &'static str {
        match self {
            Inputs::Files(_) => "files",
            Inputs::Kubernetes { .. } => "kubernetes",
        }
    }

    /// The first inputs (an error when any of them is invalid: there is no
    /// previous version to keep).
    pub(super) fn initial(&mut self) -> Result<InputSnapshot, String> {
        match self {
            Inputs::Files(f) => f.initial(),
            Inputs::Kubernetes { rx, objects, .. } => {
                let snap = rx.borrow_and_update().clone();
                let snap = snap.ok_or("no snapshot yet")?;
                let read = objects.read(&snap);
                match (read.snapshot, read.rejected.into_iter().next()) {
                    (Some(first), None) => Ok(first),
                    (_, e) => Err(e.unwrap_or_else(|| "no snapshot yet".into())),
                }
            }
        }
    }

    /// What changed since the last call. `files`: the file batch that woke
    /// the loop (`None` in Kubernetes mode or for a look at everything).
    pub(super) fn changed(&mut self, files: Option<&FileBatch>) -> Option<InputUpdate> {
        match self {
            Inputs::Files(f) => Some(f.changed(files.and_then(|b| b.paths.as_ref()))),
            Inputs::Kubernetes { rx, objects, .. } => {
                if !rx.has_changed().unwrap_or(false) {
                    return None;
                }
                let snap = rx.borrow_and_update().clone()?;
                Some(objects.read(&snap))
            }
        }
    }
}

impl FileInputs {
    fn initial(&mut self) -> Result<InputSnapshot, String> {
        self.topology = Some(TopologyFile::open(&self.topology_path)?);
        let read = self.cache.refresh(&self.policies, None);
        if let Some(e) = read.rejected.into_iter().chain(read.unreadable).next() {
            return Err(e);
        }
        Ok(self.snapshot())
    }

    /// Reads again what `paths` names (`None`: everything): the topology
    /// if named, the policy files named (or all whose content changed).
    fn changed(&mut self, paths: Option<&BTreeSet<PathBuf>>) -> InputUpdate {
        let mut update = InputUpdate::default();
        let topology_named = paths.is_none_or(|p| p.contains(&self.topology_path));
        let policies_named = paths.is_none_or(|p| p.iter().any(|p| *p != self.topology_path));
        let topology_started = std::time::Instant::now();
        if let Some(topo) = self.topology.as_mut().filter(|_| topology_named) {
            match topo.refresh() {
                TopologyRefresh::Unchanged => {}
                TopologyRefresh::Changed(d) => {
                    update.changes.topology = Some(d);
                    self.view = None;
                }
                TopologyRefresh::Rejected(e) => update.rejected.push(e),
                TopologyRefresh::Unreadable(e) => update.unreadable.push(e),
            }
        }
        let topology_us = topology_started.elapsed().as_micros() as u64;
        let started = std::time::Instant::now();
        if policies_named {
            let read = self.cache.refresh(&self.policies, paths);
            update.changes.policies = read.delta;
            update.rejected.extend(read.rejected);
            update.unreadable.extend(read.unreadable);
        }
        let refreshed = started.elapsed();
        update.standing = self.cache.rejections();
        update
            .standing
            .extend(self.topology.as_ref().and_then(TopologyFile::rejection));
        let standing = started.elapsed();
        if !update.changes.is_empty() {
            update.snapshot = Some(self.snapshot());
        }
        tracing::debug!(
            topology_us,
            refresh_us = refreshed.as_micros() as u64,
            rejections_us = (standing - refreshed).as_micros() as u64,
            snapshot_us = (started.elapsed() - standing).as_micros() as u64,
            "inputs read"
        );
        update
    }

    /// The inputs in force, as this node sees them: its pods are the local
    /// endpoints, its addresses `host`, other nodes' `remote-node`.
    fn snapshot(&mut self) -> InputSnapshot {
        let (topology, local_pods) = match &self.view {
            Some(v) => v.clone(),
            None => {
                let topo = self
                    .topology
                    .as_ref()
                    .expect("read by initial()")
                    .topology();
                let view = (
                    Arc::new(topo.for_node(&self.node)),
                    LocalPods::only(topo.pods_on(&self.node).map(|p| p.full_name()).collect()),
                );
                self.view = Some(view.clone());
                view
            }
        };
        InputSnapshot {
            topology,
            policies: self.cache.set(),
            local_pods,
        }
    }
}

/// Modification times and sizes of every policy file the loader reads
/// (`policy_model::load::policy_files`, the one walker), and the inputs
/// that cannot be read: a cheap change check for the fallback re-check
/// (when the file watcher could not start).
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
