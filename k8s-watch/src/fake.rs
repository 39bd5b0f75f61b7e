//! An in-process fake Kubernetes API server speaking the list/watch
//! protocol over plain HTTP/1.1, for tests (enabled by the `fake` feature).
//!
//! It serves what the watcher calls, as kube-apiserver does:
//! - lists: `GET /api/v1/pods?fieldSelector=spec.nodeName%3Dn1` answers a
//!   `PodList` with `metadata.resourceVersion`; items carry no `apiVersion`
//!   or `kind` (as the real server's JSON lists);
//! - watches: `?watch=true&resourceVersion=N&allowWatchBookmarks=true`
//!   streams chunked JSON lines `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":...}`:
//!   first every stored event after N, then live ones; an N older than the
//!   last compaction gets one `ERROR` event with a `Status` of code 410;
//!   `timeoutSeconds` ends the stream;
//! - discovery: `/api`, `/apis`, `/api/v1`, `/apis/GROUP/VERSION`, `/version`.
//!
//! Test hooks on [`FakeHandle`]: apply and delete objects, drop every open
//! watch, hold new watches (to open a gap), compact the history, send
//! bookmarks, stop serving a resource (a cluster without Cilium CRDs).

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};

/// A resource type the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kind {
    kind: &'static str,
    api_version: &'static str,
    plural: &'static str,
    namespaced: bool,
}

impl Kind {
    /// `/api/v1` or `/apis/GROUP/VERSION`.
    fn prefix(&self) -> String {
        if self.api_version.contains('/') {
            format!("/apis/{}", self.api_version)
        } else {
            format!("/api/{}", self.api_version)
        }
    }
}

const KINDS: &[Kind] = &[
    Kind {
        kind: "Namespace",
        api_version: "v1",
        plural: "namespaces",
        namespaced: false,
    },
    Kind {
        kind: "Pod",
        api_version: "v1",
        plural: "pods",
        namespaced: true,
    },
    Kind {
        kind: "Node",
        api_version: "v1",
        plural: "nodes",
        namespaced: false,
    },
    Kind {
        kind: "Secret",
        api_version: "v1",
        plural: "secrets",
        namespaced: true,
    },
    Kind {
        kind: "Endpoints",
        api_version: "v1",
        plural: "endpoints",
        namespaced: true,
    },
    Kind {
        kind: "EndpointSlice",
        api_version: "discovery.k8s.io/v1",
        plural: "endpointslices",
        namespaced: true,
    },
    Kind {
        kind: "NetworkPolicy",
        api_version: "networking.k8s.io/v1",
        plural: "networkpolicies",
        namespaced: true,
    },
    Kind {
        kind: "CiliumNetworkPolicy",
        api_version: "cilium.io/v2",
        plural: "ciliumnetworkpolicies",
        namespaced: true,
    },
    Kind {
        kind: "CiliumClusterwideNetworkPolicy",
        api_version: "cilium.io/v2",
        plural: "ciliumclusterwidenetworkpolicies",
        namespaced: false,
    },
];

fn kind_named(kind: &str) -> Option<Kind> {
    KINDS.iter().copied().find(|k| k.kind == kind)
}

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

#[derive(Debug, Default)]
struct State {
    rv: u64,
    /// (plural, namespace or "", name) -> object
    objects: BTreeMap<(&'static str, String, String), Value>,
    history: Vec<Arc<StoredEvent>>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    not_served: BTreeSet<&'static str>,
    uid: u64,
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
            state: Mutex::new(State::default()),
            live: broadcast::channel(4096).0,
            drop_watches: watch::channel(0).0,
            hold: watch::channel(false).0,
            requests: Mutex::new(Vec::new()),
        });
        let accept_shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = accept_shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(serve(&shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
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
    /// agent binary against it with `KUBECONFIG`).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\n",
            url = self.url
        )
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// Creates or replaces an object (by `kind`, `metadata.namespace`,
    /// `metadata.name`), as `kubectl apply` would; returns its new
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
    /// CRD that is not installed.
    pub fn set_served(&self, kind: &str, served: bool) {
        if let Some(k) = kind_named(kind) {
            let mut st = self.state();
            if served {
                st.not_served.remove(k.plural);
            } else {
                st.not_served.insert(k.plural);
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

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed_unsync())
        .expect("static response parts are valid")
}

fn status_response(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &status_object(code, reason, message),
    )
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

/// The decoded query parameters.
fn query(uri: &http::Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether an object matches a `fieldSelector` (`a=b,c=d`, also `==` and
/// `!=`; the fields kube-apiserver supports for the kinds served here).
fn fields_match(obj: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (field, want, negate) = if let Some((f, v)) = term.split_once("!=") {
            (f, v, true)
        } else if let Some((f, v)) = term.split_once("==") {
            (f, v, false)
        } else if let Some((f, v)) = term.split_once('=') {
            (f, v, false)
        } else {
            return false;
        };
        let pointer = format!("/{}", field.replace('.', "/"));
        let have = obj.pointer(&pointer).and_then(Value::as_str).unwrap_or("");
        (have == want) != negate
    })
}

/// A list item or watch object: as stored, or (lists) without type meta.
fn without_type_meta(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

/// Where a request points: a kind, and a namespace for namespaced URLs.
fn route(path: &str) -> Option<(Kind, Option<String>)> {
    for k in KINDS {
        let prefix = k.prefix();
        let Some(rest) = path.strip_prefix(&prefix) else {
            continue;
        };
        let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            [plural] if *plural == k.plural => return Some((*k, None)),
            ["namespaces", ns, plural] if *plural == k.plural && k.namespaced => {
                return Some((*k, Some(ns.to_string())));
            }
            _ => {}
        }
    }
    None
}

async fn serve(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let line = format!(
        "{} {}",
        req.method(),
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    lock(&shared.requests).push(line);
    if req.method() != Method::GET {
        return status_response(405, "MethodNotAllowed", "the fake serves GET only");
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    let q = query(req.uri());
    if let Some(body) = discovery(&path) {
        return json_response(StatusCode::OK, &body);
    }
    let Some((kind, namespace)) = route(&path) else {
        return status_response(
            404,
            "NotFound",
            &format!("the server could not find {path}"),
        );
    };
    if lock(&shared.state).not_served.contains(kind.plural) {
        return status_response(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    }
    let watching = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    if watching {
        watch_response(shared, kind, namespace, q).await
    } else {
        list_response(shared, kind, namespace.as_deref(), &q)
    }
}

fn selected(
    kind: Kind,
    namespace: Option<&str>,
    q: &BTreeMap<String, String>,
    obj: &Value,
) -> bool {
    let ns_ok = match namespace {
        Some(ns) => obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns),
        None => true,
    };
    let _ = kind;
    ns_ok && fields_match(obj, q.get("fieldSelector"))
}

fn list_response(
    shared: &Shared,
    kind: Kind,
    namespace: Option<&str>,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    let st = lock(&shared.state);
    let items: Vec<Value> = st
        .objects
        .iter()
        .filter(|((plural, _, _), _)| *plural == kind.plural)
        .map(|(_, o)| o)
        .filter(|o| selected(kind, namespace, q, o))
        .map(without_type_meta)
        .collect();
    // `limit` is honoured by returning everything in one page without a
    // `continue` token, which the API allows.
    json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", kind.kind),
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": items,
        }),
    )
}

fn watch_line(event_type: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": event_type, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

async fn watch_response(
    shared: &Arc<Shared>,
    kind: Kind,
    namespace: Option<String>,
    q: BTreeMap<String, String>,
) -> Response<Body> {
    let mut hold = shared.hold.subscribe();
    // A closed channel cannot happen: `shared` owns the sender.
    let _ = hold.wait_for(|h| !*h).await;

    let bookmarks = q.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let from: Option<u64> = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .and_then(|v| v.parse().ok());
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let mut initial = Vec::new();
    let mut expired = false;
    let mut live;
    {
        let st = lock(&shared.state);
        live = shared.live.subscribe();
        match from {
            Some(rv) if rv < st.compacted => {
                expired = true;
                initial.push(watch_line(
                    "ERROR",
                    &status_object(
                        410,
                        "Expired",
                        &format!("too old resource version: {rv} ({})", st.compacted),
                    ),
                ));
            }
            Some(rv) => {
                for ev in st.history.iter().filter(|e| e.rv > rv && e.kind == kind) {
                    if selected(kind, namespace.as_deref(), &q, &ev.object) {
                        initial.push(watch_line(ev.event_type, &ev.object));
                    }
                }
            }
            None => {
                // No resourceVersion: synthetic ADDED events for the
                // current state first, then changes.
                for ((plural, _, _), o) in &st.objects {
                    if *plural == kind.plural && selected(kind, namespace.as_deref(), &q, o) {
                        initial.push(watch_line("ADDED", o));
                    }
                }
            }
        }
    }
    let mut dropped = shared.drop_watches.subscribe();
    dropped.mark_unchanged();
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let line = tokio::select! {
                _ = &mut deadline => return,
                _ = dropped.changed() => return,
                ev = live.recv() => match ev {
                    Ok(Live::Event(e)) => {
                        if e.kind != kind || !selected(kind, namespace.as_deref(), &q, &e.object) {
                            continue;
                        }
                        watch_line(e.event_type, &e.object)
                    }
                    Ok(Live::Bookmark(rv)) => {
                        if !bookmarks {
                            continue;
                        }
                        watch_line("BOOKMARK", &json!({
                            "kind": kind.kind,
                            "apiVersion": kind.api_version,
                            "metadata": {"resourceVersion": rv.to_string()},
                        }))
                    }
                    // Lagged: end the stream, the client resumes from its
                    // last resourceVersion as from any dropped watch.
                    Err(_) => return,
                },
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(StreamBody::new(stream.boxed()).boxed_unsync())
        .expect("static response parts are valid")
}

/// The discovery documents.
fn discovery(path: &str) -> Option<Value> {
    let resources = |prefix: &str| -> Vec<Value> {
        KINDS
            .iter()
            .filter(|k| k.prefix() == prefix)
            .map(|k| {
                json!({
                    "name": k.plural, "singularName": k.kind.to_lowercase(),
                    "namespaced": k.namespaced, "kind": k.kind,
                    "verbs": ["get", "list", "watch"],
                })
            })
            .collect()
    };
    let groups: BTreeSet<&str> = KINDS
        .iter()
        .filter_map(|k| k.api_version.split_once('/').map(|(g, _)| g))
        .collect();
    match path {
        "/version" => Some(json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-portcullis-fake",
            "platform": "linux/amd64"
        })),
        "/api" => Some(json!({"kind": "APIVersions", "versions": ["v1"]})),
        "/apis" => Some(json!({
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": groups.iter().map(|g| {
                let version = KINDS.iter()
                    .find_map(|k| k.api_version.strip_prefix(&format!("{g}/")))
                    .unwrap_or("v1");
                let gv = format!("{g}/{version}");
                json!({"name": g, "versions": [{"groupVersion": gv, "version": version}],
                       "preferredVersion": {"groupVersion": gv, "version": version}})
            }).collect::<Vec<_>>(),
        })),
        _ => {
            let list = resources(path);
            if list.is_empty() {
                return None;
            }
            let gv = path
                .strip_prefix("/apis/")
                .or_else(|| path.strip_prefix("/api/"))?;
            Some(
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
            )
        }
    }
}
