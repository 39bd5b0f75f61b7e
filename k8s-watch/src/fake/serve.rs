//! The HTTP side: one hyper connection per client, each request routed to
//! discovery, OpenAPI, a read, a watch or a write. Every rejection is an
//! [`ApiError`] turned into a `Status` response here, in [`respond`].

use super::kinds::{KINDS, Kind};
use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, status_object};
use super::write::{self, FieldValidation, PatchType, Target};
use super::{Live, Shared, State, discovery, lock, openapi, protobuf, table};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The largest request body accepted (the real server's limit for most
/// writes is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Serves one connection until the client closes it.
pub(super) async fn connection(shared: Arc<Shared>, stream: TcpStream) {
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(serve(&shared, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

/// A response body and how to send it.
enum Reply {
    Json {
        code: StatusCode,
        body: Value,
        content_type: String,
        warnings: Vec<String>,
    },
    Bytes {
        content_type: &'static str,
        body: Vec<u8>,
    },
    Stream(Response<Body>),
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply::Json {
            code: StatusCode::OK,
            body,
            content_type: "application/json".into(),
            warnings: Vec::new(),
        }
    }
}

fn respond(result: Result<Reply, ApiError>) -> Response<Body> {
    let reply = result.unwrap_or_else(|e| Reply::Json {
        code: StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body: e.status(),
        content_type: "application/json".into(),
        warnings: Vec::new(),
    });
    match reply {
        Reply::Json {
            code,
            body,
            content_type,
            warnings,
        } => {
            let mut b = Response::builder()
                .status(code)
                .header("content-type", content_type);
            for w in warnings {
                // Header values must be visible ASCII.
                let text: String = w
                    .chars()
                    .map(|c| {
                        if c.is_ascii_graphic() || c == ' ' {
                            c
                        } else {
                            '?'
                        }
                    })
                    .collect();
                b = b.header("warning", format!("299 - {:?}", text));
            }
            b.body(Full::new(Bytes::from(body.to_string())).boxed_unsync())
                .expect("static response parts are valid")
        }
        Reply::Bytes { content_type, body } => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)).boxed_unsync())
            .expect("static response parts are valid"),
        Reply::Stream(r) => r,
    }
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
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
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

/// What a request URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Collection {
        kind: Kind,
        namespace: Option<String>,
    },
    Object {
        kind: Kind,
        namespace: Option<String>,
        name: String,
    },
    /// The `status` subresource of an object.
    Status {
        kind: Kind,
        namespace: Option<String>,
        name: String,
    },
}

fn route(path: &str) -> Option<Route> {
    for k in KINDS {
        let Some(rest) = path.strip_prefix(&k.prefix()) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('/') else {
            continue;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let found = match parts.as_slice() {
            [plural] if *plural == k.plural => Some(Route::Collection {
                kind: *k,
                namespace: None,
            }),
            [plural, name] if *plural == k.plural && !k.namespaced && !name.is_empty() => {
                Some(Route::Object {
                    kind: *k,
                    namespace: None,
                    name: name.to_string(),
                })
            }
            ["namespaces", ns, plural] if *plural == k.plural && k.namespaced && !ns.is_empty() => {
                Some(Route::Collection {
                    kind: *k,
                    namespace: Some(ns.to_string()),
                })
            }
            ["namespaces", ns, plural, name]
                if *plural == k.plural && k.namespaced && !ns.is_empty() && !name.is_empty() =>
            {
                Some(Route::Object {
                    kind: *k,
                    namespace: Some(ns.to_string()),
                    name: name.to_string(),
                })
            }
            [plural, name, "status"]
                if *plural == k.plural && !k.namespaced && k.has_status && !name.is_empty() =>
            {
                Some(Route::Status {
                    kind: *k,
                    namespace: None,
                    name: name.to_string(),
                })
            }
            ["namespaces", ns, plural, name, "status"]
                if *plural == k.plural
                    && k.namespaced
                    && k.has_status
                    && !ns.is_empty()
                    && !name.is_empty() =>
            {
                Some(Route::Status {
                    kind: *k,
                    namespace: Some(ns.to_string()),
                    name: name.to_string(),
                })
            }
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The namespace, labelSelector and fieldSelector of a read.
#[derive(Debug, Clone)]
struct Selection {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selection {
    fn parse(namespace: Option<String>, q: &BTreeMap<String, String>) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(ApiError::BadRequest)?;
        let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
            .map_err(ApiError::BadRequest)?;
        Ok(Selection {
            namespace,
            labels,
            fields,
        })
    }

    fn selects(&self, obj: &Value) -> bool {
        let ns_ok = match &self.namespace {
            Some(ns) => obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns),
            None => true,
        };
        ns_ok && self.labels.matches_object(obj) && self.fields.matches(obj)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
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
    let (parts, body) = req.into_parts();
    let body = if matches!(
        parts.method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return respond(Err(ApiError::RequestEntityTooLarge(format!(
                    "the request body is larger than {MAX_BODY} bytes (or could not be read)"
                ))));
            }
        }
    } else {
        Bytes::new()
    };
    respond(handle(shared, &parts, &body).await)
}

fn not_served(st: &State) -> impl Fn(&Kind) -> bool + '_ {
    move |k: &Kind| st.not_served.contains(k.plural)
}

async fn handle(
    shared: &Arc<Shared>,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let path = parts.uri.path().trim_end_matches('/');
    let q = query(&parts.uri);
    let accept = header(&parts.headers, "accept");
    if let Some(reply) = meta_document(shared, &parts.method, path, accept)? {
        return Ok(reply);
    }
    let route = route(path).ok_or(ApiError::NoRoute)?;
    let kind = match &route {
        Route::Collection { kind, .. }
        | Route::Object { kind, .. }
        | Route::Status { kind, .. } => *kind,
    };
    if lock(&shared.state).not_served.contains(kind.plural) {
        return Err(ApiError::NoRoute);
    }
    if kind.read_only && parts.method != Method::GET {
        return Err(ApiError::MethodNotSupported(format!(
            "{} are read-only here: the fake serves the files of deploy/kubernetes/crds as they were built in",
            kind.plural
        )));
    }
    let table = table::wanted(accept).then(|| q.get("includeObject").cloned().unwrap_or_default());
    let (route, status_only) = match route {
        Route::Status {
            kind,
            namespace,
            name,
        } => {
            if !matches!(parts.method, Method::GET | Method::PUT | Method::PATCH) {
                return Err(ApiError::MethodNotSupported(format!(
                    "the status subresource takes GET, PUT and PATCH, not {}",
                    parts.method
                )));
            }
            let object = Route::Object {
                kind,
                namespace,
                name,
            };
            (object, true)
        }
        r => (r, false),
    };
    match (&parts.method, route) {
        (&Method::GET, Route::Collection { kind, namespace }) => {
            let sel = Selection::parse(namespace, &q)?;
            let watching = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
            if watching {
                Ok(Reply::Stream(
                    watch_response(shared, kind, sel, &q, table).await,
                ))
            } else {
                Ok(list(shared, kind, &sel, table.as_deref()))
            }
        }
        (
            &Method::GET,
            Route::Object {
                kind,
                namespace,
                name,
            },
        ) => get(shared, kind, namespace.as_deref(), &name, table.as_deref()),
        (&Method::POST, Route::Collection { kind, namespace }) => {
            if kind.namespaced && namespace.is_none() {
                return Err(ApiError::MethodNotSupported(format!(
                    "POST is not supported on {} across namespaces; use .../namespaces/NAMESPACE/{}",
                    kind.plural, kind.plural
                )));
            }
            let obj = decode_body(body, header(&parts.headers, "content-type"))?;
            let t = target(shared, kind, namespace.as_deref(), None, &q)?;
            let mut st = lock(&shared.state);
            let w = write::create(shared, &mut st, &t, obj)?;
            Ok(written(w))
        }
        (
            &Method::PUT,
            Route::Object {
                kind,
                namespace,
                name,
            },
        ) => {
            let obj = decode_body(body, header(&parts.headers, "content-type"))?;
            let mut t = target(shared, kind, namespace.as_deref(), Some(&name), &q)?;
            t.status_only = status_only;
            let mut st = lock(&shared.state);
            Ok(written(write::replace(shared, &mut st, &t, obj)?))
        }
        (
            &Method::PATCH,
            Route::Object {
                kind,
                namespace,
                name,
            },
        ) => {
            let ct = header(&parts.headers, "content-type");
            let patch_type =
                PatchType::from_content_type(ct).ok_or_else(|| write::unsupported_patch(kind))?;
            if patch_type == PatchType::Strategic && kind.custom {
                return Err(write::unsupported_patch(kind));
            }
            let patch = match patch_type {
                PatchType::Apply => decode_yaml(body)?,
                _ => decode_json(body)?,
            };
            let mut t = target(shared, kind, namespace.as_deref(), Some(&name), &q)?;
            t.status_only = status_only;
            let mut st = lock(&shared.state);
            let w = write::apply_patch(
                shared,
                &mut st,
                &t,
                patch_type,
                patch,
                q.get("fieldManager").map(String::as_str),
            )?;
            Ok(written(w))
        }
        (
            &Method::DELETE,
            Route::Object {
                kind,
                namespace,
                name,
            },
        ) => {
            let options = delete_options(body)?;
            let mut t = target(shared, kind, namespace.as_deref(), Some(&name), &q)?;
            t.dry_run |= dry_run_in(&options);
            let mut st = lock(&shared.state);
            Ok(Reply::ok(write::delete(shared, &mut st, &t, &options)?))
        }
        (&Method::DELETE, Route::Collection { kind, namespace }) => {
            let options = delete_options(body)?;
            let sel = Selection::parse(namespace.clone(), &q)?;
            let mut st = lock(&shared.state);
            let names: Vec<(String, String)> = st
                .objects
                .iter()
                .filter(|((plural, _, _), o)| *plural == kind.plural && sel.selects(o))
                .map(|((_, ns, name), _)| (ns.clone(), name.clone()))
                .collect();
            let mut items = Vec::new();
            for (ns, name) in names {
                let ns = (!ns.is_empty()).then_some(ns);
                let mut t = target(shared, kind, ns.as_deref(), Some(&name), &q)?;
                t.dry_run |= dry_run_in(&options);
                items.push(without_type_meta(&write::delete(
                    shared, &mut st, &t, &options,
                )?));
            }
            Ok(Reply::ok(json!({
                "kind": format!("{}List", kind.kind),
                "apiVersion": kind.api_version,
                "metadata": {"resourceVersion": st.rv.to_string()},
                "items": items,
            })))
        }
        (m, _) => Err(ApiError::MethodNotSupported(format!(
            "the server does not allow this method on the requested resource ({m})"
        ))),
    }
}

/// Discovery, OpenAPI and `/version`; `None` for any other path.
fn meta_document(
    shared: &Shared,
    method: &Method,
    path: &str,
    accept: &str,
) -> Result<Option<Reply>, ApiError> {
    let is_meta = matches!(path, "/version" | "/api" | "/apis" | "/openapi/v2")
        || path.starts_with("/openapi/v3")
        || (route(path).is_none() && (path.starts_with("/api/") || path.starts_with("/apis/")));
    if !is_meta {
        return Ok(None);
    }
    if method != Method::GET {
        return Err(ApiError::MethodNotSupported(format!(
            "the server does not allow this method on {path}"
        )));
    }
    let st = lock(&shared.state);
    let hidden = not_served(&st);
    let reply = match path {
        "/version" => Reply::ok(discovery::version()),
        "/api" | "/apis" => match discovery::aggregated_version(accept) {
            Some(v) => Reply::Json {
                code: StatusCode::OK,
                body: discovery::aggregated(path == "/api", v, &hidden),
                content_type: format!(
                    "application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList"
                ),
                warnings: Vec::new(),
            },
            None if path == "/api" => Reply::ok(discovery::core_versions()),
            None => Reply::ok(discovery::group_list(&hidden)),
        },
        "/openapi/v2" => {
            let doc = openapi::v2(&hidden);
            if openapi::wants_protobuf(accept) {
                Reply::Bytes {
                    content_type: openapi::V2_PROTOBUF,
                    body: openapi::proto::encode(&doc),
                }
            } else {
                Reply::ok(doc)
            }
        }
        "/openapi/v3" => Reply::ok(openapi::v3_index(&hidden)),
        p => {
            if let Some(key) = p.strip_prefix("/openapi/v3/") {
                Reply::ok(openapi::v3(key, &hidden).ok_or(ApiError::NoRoute)?)
            } else {
                Reply::ok(discovery::resource_list(p, &hidden).ok_or(ApiError::NoRoute)?)
            }
        }
    };
    Ok(Some(reply))
}

fn target<'a>(
    shared: &Shared,
    kind: Kind,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    q: &BTreeMap<String, String>,
) -> Result<Target<'a>, ApiError> {
    let dry_run = match q.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "dryRun {other:?} is not supported; the only valid value is All"
            )));
        }
    };
    Ok(Target {
        kind,
        namespace,
        name,
        dry_run,
        field_validation: FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?,
        validator: lock(&shared.validator.0).clone(),
        status_only: false,
    })
}

fn written(w: write::Written) -> Reply {
    Reply::Json {
        code: if w.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        body: w.object,
        content_type: "application/json".into(),
        warnings: w.warnings,
    }
}

fn decode_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("error decoding the request body as JSON: {e}")))
}

fn decode_yaml(body: &[u8]) -> Result<Value, ApiError> {
    serde_yaml_ng::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("error decoding the request body as YAML: {e}")))
}

/// A create or replace body: JSON, YAML or (Namespace, Secret) protobuf
/// by content type.
fn decode_body(body: &[u8], content_type: &str) -> Result<Value, ApiError> {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    match essence {
        "" | "application/json" | "*/*" => decode_json(body),
        "application/yaml" => decode_yaml(body),
        protobuf::MEDIA_TYPE => protobuf::decode(body).map_err(|e| match e {
            protobuf::ProtobufError::Malformed(m) => ApiError::BadRequest(m),
            protobuf::ProtobufError::Unsupported(m) => ApiError::UnsupportedMediaType(m),
        }),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format ({other}) - accepted media types include: application/json, application/yaml"
        ))),
    }
}

fn delete_options(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let v = decode_json(body)?;
    if !v.is_object() {
        return Err(ApiError::BadRequest(
            "DeleteOptions must be an object".into(),
        ));
    }
    Ok(v)
}

fn dry_run_in(options: &Value) -> bool {
    options
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v == "All"))
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

fn get(
    shared: &Shared,
    kind: Kind,
    namespace: Option<&str>,
    name: &str,
    table: Option<&str>,
) -> Result<Reply, ApiError> {
    let st = lock(&shared.state);
    let ns = if kind.namespaced {
        namespace.unwrap_or("default").to_string()
    } else {
        String::new()
    };
    let obj = st
        .objects
        .get(&(kind.plural, ns, name.to_string()))
        .ok_or_else(|| ApiError::NotFound {
            kind: kind.into(),
            name: name.to_string(),
        })?;
    Ok(Reply::ok(match table {
        Some(include) => table::table(&kind, &[obj], &st.rv.to_string(), include),
        None => obj.clone(),
    }))
}

fn list(shared: &Shared, kind: Kind, sel: &Selection, table: Option<&str>) -> Reply {
    let st = lock(&shared.state);
    let selected: Vec<&Value> = st
        .objects
        .iter()
        .filter(|((plural, _, _), _)| *plural == kind.plural)
        .map(|(_, o)| o)
        .filter(|o| sel.selects(o))
        .collect();
    if let Some(include) = table {
        return Reply::ok(table::table(&kind, &selected, &st.rv.to_string(), include));
    }
    // `limit` is honoured by returning everything in one page without a
    // `continue` token, which the API allows.
    Reply::ok(json!({
        "kind": format!("{}List", kind.kind),
        "apiVersion": kind.api_version,
        "metadata": {"resourceVersion": st.rv.to_string()},
        "items": selected.into_iter().map(without_type_meta).collect::<Vec<_>>(),
    }))
}

fn watch_line(kind: &Kind, event_type: &str, object: &Value, table: Option<&str>) -> Bytes {
    let object = match table {
        Some(include) if event_type != "BOOKMARK" && event_type != "ERROR" => {
            let rv = object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            table::table(kind, &[object], rv, include)
        }
        _ => object.clone(),
    };
    let mut line = json!({"type": event_type, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

async fn watch_response(
    shared: &Arc<Shared>,
    kind: Kind,
    sel: Selection,
    q: &BTreeMap<String, String>,
    table: Option<String>,
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
    let table_ref = table.as_deref();
    {
        let st = lock(&shared.state);
        live = shared.live.subscribe();
        match from {
            Some(rv) if rv < st.compacted => {
                expired = true;
                initial.push(watch_line(
                    &kind,
                    "ERROR",
                    &status_object(
                        410,
                        "Expired",
                        &format!("too old resource version: {rv} ({})", st.compacted),
                    ),
                    None,
                ));
            }
            Some(rv) => {
                for ev in st.history.iter().filter(|e| e.rv > rv && e.kind == kind) {
                    if sel.selects(&ev.object) {
                        initial.push(watch_line(&kind, ev.event_type, &ev.object, table_ref));
                    }
                }
            }
            None => {
                // No resourceVersion: synthetic ADDED events for the
                // current state first, then changes.
                for ((plural, _, _), o) in &st.objects {
                    if *plural == kind.plural && sel.selects(o) {
                        initial.push(watch_line(&kind, "ADDED", o, table_ref));
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
                        if e.kind != kind || !sel.selects(&e.object) {
                            continue;
                        }
                        watch_line(&kind, e.event_type, &e.object, table.as_deref())
                    }
                    Ok(Live::Bookmark(rv)) => {
                        if !bookmarks {
                            continue;
                        }
                        watch_line(&kind, "BOOKMARK", &json!({
                            "kind": kind.kind,
                            "apiVersion": kind.api_version,
                            "metadata": {"resourceVersion": rv.to_string()},
                        }), None)
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

#[cfg(test)]
mod tests;
