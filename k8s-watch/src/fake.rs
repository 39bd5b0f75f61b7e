//! An in-process fake Kubernetes API server over plain HTTP/1.1, for tests
//! and the lab (enabled by the `fake` feature). The agent's watcher and
//! an unmodified `kubectl` work against it with default flags (tested:
//! Debian bookworm's 1.20 and 1.27 to 1.33; `tests/kubectl.rs`).
//!
//! What it serves, as kube-apiserver does:
//! - **reads**: `GET` of one object (`/api/v1/namespaces/NS/pods/NAME`,
//!   `/api/v1/namespaces/NAME`, `/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies/NAME`)
//!   and of lists, in one namespace or across all, filtered by
//!   `labelSelector` (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`, `>`,
//!   `<`) and `fieldSelector` (`=`, `==`, `!=` on string fields). List
//!   items carry no `apiVersion` or `kind`. `limit` is honoured by
//!   answering everything in one page. An `Accept` asking for
//!   `as=Table` gets a `meta.k8s.io/v1` `Table` (pods: NAME, READY,
//!   STATUS, RESTARTS, AGE, IP, NODE; others NAME, AGE and a column or two).
//! - **watches**: `?watch=true&resourceVersion=N&allowWatchBookmarks=true`
//!   streams chunked JSON lines `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":...}`:
//!   first every stored event after N, then live ones; an N older than the
//!   last compaction gets one `ERROR` event with a `Status` of code 410;
//!   `timeoutSeconds` ends the stream; selectors apply; Table on request.
//! - **writes**: `POST` (create; `generateName`), `PUT` (replace, `409
//!   Conflict` on a stale `metadata.resourceVersion`), `PATCH` as
//!   `application/merge-patch+json` (RFC 7386), `application/json-patch+json`
//!   (RFC 6902), `application/strategic-merge-patch+json` (built-in kinds
//!   only; custom resources get `415` as from the real server, so kubectl
//!   falls back to a merge patch) and `application/apply-patch+yaml`
//!   (server-side apply, simplified: `fieldManager` is required, a missing
//!   object is created, an existing one gets the given fields merged in
//!   as a strategic merge patch would; see below), `DELETE` (returns the
//!   deleted object; preconditions honoured) and `DELETE` of a collection.
//!   `dryRun=All` checks without storing. `fieldValidation=Strict` refuses
//!   unknown fields (`strict decoding error: unknown field "spec.foo"`),
//!   `Warn` (the default) answers with a `Warning: 299` header, `Ignore`
//!   accepts; unknown fields are never stored. Every write bumps the
//!   resourceVersion, create sets `uid` and `creationTimestamp`, a change
//!   outside `metadata` and `status` bumps `metadata.generation`, and the
//!   watch event (ADDED, MODIFIED, DELETED) is the one the test hooks
//!   send. An update that changes nothing stores nothing and sends
//!   nothing. Errors are the API server's `Status` objects: `NotFound`
//!   (404, also for a namespaced create in a namespace that does not
//!   exist), `AlreadyExists` and `Conflict` (409), `BadRequest` (400:
//!   malformed bodies, wrong types, a kind, apiVersion, name or namespace
//!   that does not match the URL), `Invalid` (422: a missing or malformed
//!   name, bad labels, the validator's verdict), `UnsupportedMediaType`
//!   (415), `RequestEntityTooLarge` (413, bodies over 3 MiB).
//! - **validation hook**: [`FakeHandle::set_validator`] is called on the
//!   object every write would store; [`policy_validator`] judges policy
//!   objects exactly as the watcher does.
//! - **custom resources**: CiliumNetworkPolicy,
//!   CiliumClusterwideNetworkPolicy, CiliumCIDRGroup (`cilium.io/v2`) and
//!   ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`) are served
//!   with the schemas of `deploy/kubernetes/crds/` (compiled in, `crd`
//!   module): unknown fields pruned or refused as above, then the schemas'
//!   value checks (enums, bounds, lengths, patterns, `format: cidr`,
//!   required fields, one-of) answered with `422 Invalid` naming each
//!   field, before the validator hook. CEL rules
//!   (`x-kubernetes-validations`) are not evaluated and defaults are not
//!   applied. The CRD files themselves are `apiextensions.k8s.io/v1`
//!   CustomResourceDefinitions (`kubectl get crd`), read-only (`405` to
//!   writes), one for each custom kind being served. `kubectl get` of a
//!   custom kind prints its CRD's `additionalPrinterColumns` (`.a.b.c`
//!   paths only).
//! - **discovery**: `/api`, `/apis` (legacy, or `apidiscovery.k8s.io/v2`
//!   and `v2beta1` aggregated documents when `Accept` asks), `/api/v1`,
//!   `/apis/GROUP/VERSION` with every verb, short names (`po`, `ns`, `no`,
//!   `netpol`, `cnp`/`ciliumnp`, `ccnp`, `ccg`, `crd`), singular names and
//!   categories; `/version`.
//! - **OpenAPI**: `/openapi/v3` (index) and `/openapi/v3/api/v1`,
//!   `/openapi/v3/apis/GROUP/VERSION`; `/openapi/v2` as JSON or as
//!   gnostic protobuf. Each kind's schema carries
//!   `x-kubernetes-group-version-kind` and the merge keys of its lists;
//!   PATCH, POST and PUT list `fieldValidation`. The schemas of the
//!   built-in kinds list their usual fields and leave rarely used subtrees
//!   (probes, affinity, volume sources, statuses) open; the custom kinds'
//!   are their CRDs' structural schemas.
//! - **status**: writes to an object keep its stored `status` (a pod
//!   created through the API is `Pending` with no address, as without a
//!   kubelet); `GET`, `PUT` and `PATCH` of the `status` subresource
//!   (`.../pods/NAME/status`, `kubectl patch --subresource=status`)
//!   change the status alone.
//! - **bodies**: JSON; YAML (`application/yaml`, and server-side apply);
//!   protobuf for Namespace and Secret only (what `kubectl create
//!   namespace|secret` send).
//!
//! Not implemented: authentication and authorization (no TLS, no RBAC;
//! anyone reaching the socket is cluster-admin), admission (no defaults,
//! no quotas), other subresources (`/log`, `/exec`, `/eviction`...),
//! graceful deletion and finalizers (deletion is immediate; deleting a
//! namespace deletes its objects at once), `managedFields` and
//! server-side apply's field ownership (apply never removes a field and
//! never conflicts; `force` is ignored), pagination (`continue`), CBOR
//! bodies and other protobuf bodies, the `status` of NetworkPolicy, and
//! any kind not in `fake/kinds.rs`. Writes into the namespaces `default`,
//! `kube-system`, `kube-public` and `kube-node-lease` need no Namespace
//! object. Objects stored through the test hooks carry no
//! `creationTimestamp` unless given one (their AGE is `<unknown>`).
//!
//! Test hooks on [`FakeHandle`]: apply and delete objects (bypassing the
//! API's checks and the validator), drop every open watch, hold new
//! watches (to open a gap), compact the history, send bookmarks, stop
//! serving a resource (a cluster without Cilium CRDs), list the requests
//! served.

mod crd;
mod discovery;
mod kinds;
mod openapi;
mod patch;
mod protobuf;
mod schema;
mod selector;
mod serve;
mod status;
mod table;
mod validate;
mod write;

pub use validate::{Validator, policy_validator};

use kinds::{KINDS, Kind, kind_named};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

/// A misuse of the fake (an object it cannot store).
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    #[error("object has no `kind` the fake serves (one of {known}): {got:?}")]
    UnknownKind { got: Option<String>, known: String },
    #[error("object {kind} has no metadata.name")]
    NoName { kind: String },
    #[error("{kind} {namespace:?}/{name} does not exist")]
    NotFound {
        kind: String,
        namespace: Option<String>,
        name: String,
    },
    #[error("cannot bind the fake API server: {0}")]
    Bind(#[source] std::io::Error),
}

/// One entry of the watch history.
#[derive(Debug)]
struct StoredEvent {
    rv: u64,
    kind: Kind,
    event_type: &'static str,
    object: Value,
}

/// What a live watch stream receives.
#[derive(Debug, Clone)]
enum Live {
    Event(Arc<StoredEvent>),
    Bookmark(u64),
}

/// (plural, namespace or "", name): where an object is stored.
type ObjectKey = (&'static str, String, String);

#[derive(Debug, Default)]
struct State {
    rv: u64,
    objects: BTreeMap<ObjectKey, Value>,
    history: Vec<Arc<StoredEvent>>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    not_served: BTreeSet<&'static str>,
    uid: u64,
}

/// The validator in force, if any.
#[derive(Default)]
struct ValidatorSlot(Mutex<Option<Validator>>);

impl std::fmt::Debug for ValidatorSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = lock(&self.0).is_some();
        f.debug_struct("ValidatorSlot").field("set", &set).finish()
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    live: broadcast::Sender<Live>,
    /// Bumped to end every open watch stream.
    drop_watches: watch::Sender<u64>,
    /// While true, new watch requests wait before they are answered.
    hold: watch::Sender<bool>,
    requests: Mutex<Vec<String>>,
    validator: ValidatorSlot,
}

/// The fake API server. [`FakeApiServer::start`] runs it on 127.0.0.1.
#[derive(Debug)]
pub struct FakeApiServer;

/// Controls a running fake API server.
#[derive(Debug, Clone)]
pub struct FakeHandle {
    url: String,
    shared: Arc<Shared>,
}

/// Serves every connection of a listener, each on its own task.
fn spawn_accept(shared: Arc<Shared>, listener: TcpListener) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve::connection(shared.clone(), stream));
        }
    });
}

impl FakeApiServer {
    /// Starts the server on an ephemeral port of 127.0.0.1 (inside a tokio
    /// runtime); returns its URL (`http://127.0.0.1:PORT`) and a handle.
    pub async fn start() -> Result<(String, FakeHandle), FakeError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(FakeError::Bind)?;
        let addr = listener.local_addr().map_err(FakeError::Bind)?;
        let url = format!("http://{addr}");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                objects: crd::all()
                    .iter()
                    .map(|c| (crd_key(c), c.object.clone()))
                    .collect(),
                ..State::default()
            }),
            live: broadcast::channel(4096).0,
            drop_watches: watch::channel(0).0,
            hold: watch::channel(false).0,
            requests: Mutex::new(Vec::new()),
            validator: ValidatorSlot::default(),
        });
        spawn_accept(shared.clone(), listener);
        Ok((url.clone(), FakeHandle { url, shared }))
    }
}

impl FakeHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kube client configuration for this server: plain HTTP, no auth.
    pub fn config(&self) -> kube::Config {
        let uri = self.url.parse().expect("the fake's own URL is a valid URI");
        let mut config = kube::Config::new(uri);
        config.read_timeout = Some(Duration::from_secs(30));
        config
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config()).expect("a plain-HTTP client needs no TLS setup")
    }

    /// A kubeconfig file's text pointing at this server (for running the
    /// agent binary or kubectl against it with `KUBECONFIG`).
    pub fn kubeconfig_yaml(&self) -> String {
        Self::kubeconfig_yaml_for(&self.url)
    }

    /// A kubeconfig file's text pointing at `url` (another listener of
    /// this server, see [`serve_listener`](Self::serve_listener)): plain
    /// HTTP, no credentials.
    pub fn kubeconfig_yaml_for(url: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\n"
        )
    }

    /// Serves the same state on another socket (e.g. one bound inside
    /// another network namespace), until the runtime stops.
    pub fn serve_listener(&self, listener: TcpListener) {
        spawn_accept(self.shared.clone(), listener);
    }

    /// Installs the validator every write through the API passes:
    /// `Err(message)` refuses the write with `422 Invalid`, nothing stored,
    /// no event. The [`apply`](Self::apply) hook does not run it. See
    /// [`policy_validator`]. It runs under the server's state lock, so
    /// that a refusal and a store cannot interleave: it must not call
    /// this handle.
    pub fn set_validator(&self, validator: Validator) {
        *lock(&self.shared.validator.0) = Some(validator);
    }

    /// Removes the validator.
    pub fn clear_validator(&self) {
        *lock(&self.shared.validator.0) = None;
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// Creates or replaces an object (by `kind`, `metadata.namespace`,
    /// `metadata.name`) as it is, without the API's checks or the
    /// validator (tests inject invalid objects with it); returns its new
    /// resourceVersion.
    pub fn apply(&self, mut obj: Value) -> Result<u64, FakeError> {
        let kind_name = obj.get("kind").and_then(Value::as_str).map(str::to_string);
        let Some(kind) = kind_name.as_deref().and_then(kind_named) else {
            return Err(FakeError::UnknownKind {
                got: kind_name,
                known: KINDS.iter().map(|k| k.kind).collect::<Vec<_>>().join(", "),
            });
        };
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| FakeError::NoName {
                kind: kind.kind.into(),
            })?;
        let namespace = if kind.namespaced {
            obj.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let mut st = self.state();
        st.rv += 1;
        let rv = st.rv;
        let key = (kind.plural, namespace.clone(), name);
        let existing_uid = st
            .objects
            .get(&key)
            .and_then(|o| o.pointer("/metadata/uid").cloned());
        let uid = match existing_uid {
            Some(u) => u,
            None => {
                st.uid += 1;
                Value::String(format!("00000000-0000-4000-8000-{:012}", st.uid))
            }
        };
        obj["apiVersion"] = kind.api_version.into();
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), rv.to_string().into());
            meta.insert("uid".into(), uid);
            if kind.namespaced {
                meta.insert("namespace".into(), namespace.into());
            } else {
                meta.remove("namespace");
            }
        }
        let event_type = if st.objects.insert(key, obj.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        record(&self.shared, &mut st, kind, event_type, obj);
        Ok(rv)
    }

    /// Deletes an object; `namespace` is ignored for cluster-scoped kinds.
    pub fn delete(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<u64, FakeError> {
        let not_found = || FakeError::NotFound {
            kind: kind.into(),
            namespace: namespace.map(str::to_string),
            name: name.into(),
        };
        let k = kind_named(kind).ok_or_else(not_found)?;
        let ns = if k.namespaced {
            namespace.unwrap_or("default").to_string()
        } else {
            String::new()
        };
        let mut st = self.state();
        let mut obj = st
            .objects
            .remove(&(k.plural, ns, name.to_string()))
            .ok_or_else(not_found)?;
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        record(&self.shared, &mut st, k, "DELETED", obj);
        Ok(rv)
    }

    /// Ends every open watch stream (clients resume from their last
    /// resourceVersion).
    pub fn drop_watches(&self) {
        self.shared.drop_watches.send_modify(|g| *g += 1);
    }

    /// While held, new watch requests are not answered (lists are): with
    /// [`drop_watches`](Self::drop_watches) this opens a gap in which
    /// changes happen unseen.
    pub fn hold_watches(&self, hold: bool) {
        self.shared.hold.send_replace(hold);
    }

    /// Forgets the history: a watch resuming from an older resourceVersion
    /// than the current one gets `410 Gone` and must relist.
    pub fn compact(&self) {
        let mut st = self.state();
        st.compacted = st.rv;
        st.history.clear();
    }

    /// Sends a BOOKMARK with the current resourceVersion to every open
    /// watch that asked for bookmarks.
    pub fn bookmark(&self) {
        let rv = self.state().rv;
        let _ = self.shared.live.send(Live::Bookmark(rv));
    }

    /// Stops (or resumes) serving a kind: its URLs answer 404, as for a
    /// CRD that is not installed, and its CustomResourceDefinition object
    /// is gone (or back; no watch event either way).
    pub fn set_served(&self, kind: &str, served: bool) {
        if let Some(k) = kind_named(kind) {
            let mut st = self.state();
            let definition = crd::of_kind(k.kind);
            if served {
                st.not_served.remove(k.plural);
                if let Some(c) = definition {
                    st.objects.insert(crd_key(c), c.object.clone());
                }
            } else {
                st.not_served.insert(k.plural);
                if let Some(c) = definition {
                    st.objects.remove(&crd_key(c));
                }
            }
        }
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state().rv
    }

    /// Every request line served so far (`GET /api/v1/pods?...`).
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.requests).clone()
    }
}

/// Where a CustomResourceDefinition object is stored.
fn crd_key(c: &crd::Crd) -> ObjectKey {
    let name = c.object["metadata"]["name"].as_str().unwrap_or_default();
    ("customresourcedefinitions", String::new(), name.to_string())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the state from the others.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn record(shared: &Shared, st: &mut State, kind: Kind, event_type: &'static str, object: Value) {
    let ev = Arc::new(StoredEvent {
        rv: st.rv,
        kind,
        event_type,
        object,
    });
    st.history.push(ev.clone());
    // Sent under the state lock, so a watch that copied the history under
    // the same lock and then subscribed sees each event exactly once.
    let _ = shared.live.send(Live::Event(ev));
}
