//! The I/O around the store: one kube-rs watcher per resource feeding one
//! task that owns the [`Store`], debounces, and publishes snapshots.
//!
//! `kube::runtime::watcher` does the protocol work: list, then watch from
//! the list's resourceVersion with bookmarks; a dropped watch resumes from
//! the last resourceVersion seen (bookmarks advance it); `410 Gone` means
//! the history is compacted and it relists, which the store applies as an
//! atomic replacement (objects deleted during the gap disappear). Errors
//! are retried with kube's default backoff (0.8 s up to 30 s).

use crate::convert::{self, POLICY_KINDS};
use crate::metrics::WatchMetrics;
use crate::snapshot::Snapshot;
use crate::store::{Event, Resource, Store, Update, Value};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Which pods become endpoints of the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodScope {
    /// Only this node's pods (`fieldSelector=spec.nodeName=NODE`): the
    /// agent's own endpoints. Pods on other nodes are then outside the
    /// topology, so their addresses resolve to `world`: enough for a
    /// single-node cluster, not for peer selectors across nodes.
    ThisNode,
    /// Every pod of the cluster, so peers on other nodes get their label
    /// identities; [`Snapshot::local_pods`] names this node's.
    Cluster,
}

/// How to watch.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// This node's name (`spec.nodeName` of its pods, `metadata.name` of
    /// its Node object): usually the downward API's `spec.nodeName`.
    pub node_name: String,
    pub pod_scope: PodScope,
    /// A snapshot is published once no event arrived for this long...
    pub debounce: Duration,
    /// ...or this long after the first unpublished event, whichever is
    /// first, so a steady stream of events cannot starve publication.
    pub max_delay: Duration,
    /// Where to count events, errors and snapshots (see [`WatchMetrics`]).
    pub metrics: WatchMetrics,
}

impl WatchConfig {
    /// Defaults: [`PodScope::Cluster`], 20 ms debounce, 250 ms max delay.
    pub fn new(node_name: &str) -> Self {
        WatchConfig {
            node_name: node_name.to_string(),
            pod_scope: PodScope::Cluster,
            debounce: Duration::from_millis(20),
            max_delay: Duration::from_millis(250),
            metrics: WatchMetrics::default(),
        }
    }
}

/// A failure to set up the client.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "no Kubernetes client configuration (in-cluster service account or kubeconfig): {0}; run inside a pod with a service account, or set KUBECONFIG"
    )]
    Config(#[source] kube::Error),
}

/// A client from the in-cluster service account, or else `$KUBECONFIG` /
/// `~/.kube/config`.
pub async fn client_from_env() -> Result<kube::Client, WatchError> {
    kube::Client::try_default()
        .await
        .map_err(WatchError::Config)
}

/// Running watches. Dropping it stops them.
#[derive(Debug)]
pub struct Watcher {
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Watcher {
    /// Starts watching (inside a tokio runtime). The channel holds `None`
    /// until every resource has been listed once, then the latest
    /// snapshot; it changes only when the snapshot does.
    pub fn start(client: kube::Client, config: WatchConfig) -> Watcher {
        let (tx, rx) = mpsc::channel(1024);
        let mut tasks = Vec::new();
        let node = config.node_name.clone();

        tasks.push(spawn_watch(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            Resource::Namespace,
            tx.clone(),
            config.metrics.clone(),
            |ns| {
                let spec = convert::namespace_spec(ns);
                (spec.name.clone(), Value::Namespace(spec))
            },
        ));
        let pod_config = match config.pod_scope {
            PodScope::ThisNode => {
                watcher::Config::default().fields(&format!("spec.nodeName={node}"))
            }
            PodScope::Cluster => watcher::Config::default(),
        };
        tasks.push(spawn_watch(
            Api::<Pod>::all(client.clone()),
            pod_config,
            Resource::Pod,
            tx.clone(),
            config.metrics.clone(),
            |pod| {
                let key = convert::object_key(
                    Some(pod.metadata.namespace.as_deref().unwrap_or("default")),
                    pod.metadata.name.as_deref().unwrap_or_default(),
                );
                (key, Value::Pod(convert::pod_endpoint(pod).ok()))
            },
        ));
        tasks.push(spawn_watch(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            Resource::Node,
            tx.clone(),
            config.metrics.clone(),
            |n| {
                let info = convert::node_info(n);
                (info.name.clone(), Value::Node(info))
            },
        ));
        tasks.push(spawn_watch(
            Api::<EndpointSlice>::namespaced(client.clone(), "default"),
            watcher::Config::default().fields("metadata.name=kubernetes"),
            Resource::ApiServer,
            tx.clone(),
            config.metrics.clone(),
            |s| {
                (
                    s.metadata.name.clone().unwrap_or_default(),
                    Value::ApiServer(convert::apiserver_ips(s)),
                )
            },
        ));
        for kind in POLICY_KINDS {
            let ar = convert::policy_resource(kind);
            tasks.push(spawn_watch(
                Api::<DynamicObject>::all_with(client.clone(), &ar),
                watcher::Config::default(),
                Resource::Policy(kind),
                tx.clone(),
                config.metrics.clone(),
                move |obj| {
                    let raw = convert::raw_policy(kind, obj);
                    (
                        convert::object_key(raw.namespace.as_deref(), &raw.name),
                        Value::Policy(raw),
                    )
                },
            ));
        }
        let groups = convert::cidr_group_resource();
        tasks.push(spawn_watch(
            Api::<DynamicObject>::all_with(client.clone(), &groups),
            watcher::Config::default(),
            Resource::CidrGroup,
            tx.clone(),
            config.metrics.clone(),
            |obj| {
                (
                    obj.metadata.name.clone().unwrap_or_default(),
                    Value::CidrGroup(convert::cidr_group(obj)),
                )
            },
        ));
        drop(tx);

        let (snap_tx, snap_rx) = watch::channel(None);
        tasks.push(tokio::spawn(run_store(
            rx,
            Store::new(&config.node_name),
            snap_tx,
            config.debounce,
            config.max_delay,
            config.metrics.clone(),
        )));
        Watcher {
            snapshots: snap_rx,
            tasks,
        }
    }

    /// A receiver of the snapshots (`None` until the first full list).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.snapshots.clone()
    }

    /// Waits for the first complete snapshot.
    pub async fn ready(&self) -> Arc<Snapshot> {
        let mut rx = self.snapshots.clone();
        loop {
            if let Some(s) = rx.borrow_and_update().clone() {
                return s;
            }
            if rx.changed().await.is_err() {
                // The store task never exits while the watcher lives.
                std::future::pending::<()>().await;
            }
        }
    }
}

fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    resource: Resource,
    tx: mpsc::Sender<Update>,
    metrics: WatchMetrics,
    convert: impl Fn(&K) -> (String, Value) + Send + 'static,
) -> JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let stream = watcher(api, config).default_backoff();
    tokio::spawn(forward(stream, resource, tx, metrics, convert))
}

async fn forward<K>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    resource: Resource,
    tx: mpsc::Sender<Update>,
    metrics: WatchMetrics,
    convert: impl Fn(&K) -> (String, Value),
) {
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(watcher::Event::Apply(k)) => {
                let (key, value) = convert(&k);
                Event::Apply { key, value }
            }
            Ok(watcher::Event::Delete(k)) => Event::Delete { key: convert(&k).0 },
            Ok(watcher::Event::Init) => Event::Init,
            Ok(watcher::Event::InitApply(k)) => {
                let (key, value) = convert(&k);
                Event::InitApply { key, value }
            }
            Ok(watcher::Event::InitDone) => {
                tracing::debug!(%resource, "listed");
                Event::InitDone
            }
            Err(e) => {
                if matches!(resource, Resource::Policy(_)) && is_not_found(&e) {
                    // No such CRD in this cluster: nothing of this kind to
                    // enforce. The backoff keeps retrying, so CRDs
                    // installed later are picked up.
                    tracing::debug!(%resource, "resource not served by this cluster");
                    Event::Absent
                } else {
                    let hint = if is_forbidden(&e) {
                        "; check the ClusterRole grants list and watch on it"
                    } else {
                        ""
                    };
                    metrics.error(&resource);
                    tracing::warn!(%resource, error = %e, "watch failed, retrying{hint}");
                    continue;
                }
            }
        };
        let label = match &event {
            Event::Apply { .. } => Some("apply"),
            Event::Delete { .. } => Some("delete"),
            Event::InitDone => Some("relist"),
            Event::Absent => Some("absent"),
            Event::Init | Event::InitApply { .. } => None,
        };
        if let Some(l) = label {
            metrics.event(&resource, l);
        }
        if tx.send(Update { resource, event }).await.is_err() {
            return;
        }
    }
}

fn api_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}

fn is_not_found(e: &watcher::Error) -> bool {
    api_code(e) == Some(404)
}

fn is_forbidden(e: &watcher::Error) -> bool {
    api_code(e) == Some(403)
}

async fn run_store(
    mut rx: mpsc::Receiver<Update>,
    mut store: Store,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    debounce: Duration,
    max_delay: Duration,
    metrics: WatchMetrics,
) {
    let mut invalid: BTreeSet<String> = BTreeSet::new();
    while let Some(first) = rx.recv().await {
        let mut changed = store.apply(first);
        let deadline = Instant::now() + max_delay;
        let mut closed = false;
        loop {
            let until = (Instant::now() + debounce).min(deadline);
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(u)) => changed |= store.apply(u),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if changed && store.ready() {
            let snap = store.snapshot();
            log_status_changes(&snap, &mut invalid);
            let invalid_count = invalid.len();
            let published = tx.send_if_modified(|cur| {
                if cur.as_deref() == Some(&snap) {
                    false
                } else {
                    *cur = Some(Arc::new(snap));
                    true
                }
            });
            if published {
                metrics.published(invalid_count);
            }
        } else if !store.ready() {
            tracing::debug!(pending = ?store.pending(), "waiting for the first list of every resource");
        }
        if closed {
            break;
        }
    }
}

/// Warns once when an object turns invalid, and says when it is fixed.
fn log_status_changes(snap: &Snapshot, invalid: &mut BTreeSet<String>) {
    let mut now = BTreeSet::new();
    for s in &snap.status {
        let id = crate::snapshot::source_name(s.kind, s.namespace.as_deref(), &s.name);
        if !s.valid {
            if !invalid.contains(&id) {
                tracing::warn!(policy = %id, reason = s.reason.as_deref().unwrap_or(""), "invalid policy object");
            }
            now.insert(id);
        } else if invalid.contains(&id) {
            tracing::info!(policy = %id, "policy object valid again");
        }
    }
    *invalid = now;
}
