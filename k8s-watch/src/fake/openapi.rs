//! The OpenAPI documents: v3 (`/openapi/v3` index and one document per
//! group-version) and v2 (`/openapi/v2`, JSON or gnostic protobuf).
//!
//! kubectl reads them for three things: whether PATCH takes
//! `fieldValidation` (v3 first, v2 when v3 fails), the strategic merge
//! patch metadata of built-in kinds (`x-kubernetes-patch-merge-key`), and
//! (kubectl before 1.27) client-side validation against the v2 protobuf.

pub(crate) mod proto;

use super::kinds::{KINDS, Kind, group_versions};
use super::schema;
use serde_json::{Map, Value, json};

/// The `Content-Type` of the v2 protobuf document. Not the media type
/// clients ask for (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`):
/// Go's MIME parser refuses its `@`, and client-go parses the
/// `Content-Type` of every response.
pub(crate) const V2_PROTOBUF: &str = "application/octet-stream";

/// Whether an `Accept` header asks for the v2 protobuf.
pub(crate) fn wants_protobuf(accept: &str) -> bool {
    accept.contains("application/com.github.proto-openapi.spec.v2")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    V2,
    V3,
}

fn reference(flavor: Flavor, def: &str) -> Value {
    match flavor {
        Flavor::V2 => json!({"$ref": format!("#/definitions/{def}")}),
        Flavor::V3 => json!({"$ref": format!("#/components/schemas/{def}")}),
    }
}

fn query(flavor: Flavor, name: &str, type_: &str) -> Value {
    match flavor {
        Flavor::V2 => json!({"name": name, "in": "query", "type": type_, "uniqueItems": true}),
        Flavor::V3 => json!({"name": name, "in": "query", "schema": {"type": type_},
                             "uniqueItems": true}),
    }
}

fn path_param(flavor: Flavor, name: &str) -> Value {
    match flavor {
        Flavor::V2 => json!({"name": name, "in": "path", "required": true, "type": "string",
                             "uniqueItems": true}),
        Flavor::V3 => json!({"name": name, "in": "path", "required": true,
                             "schema": {"type": "string"}, "uniqueItems": true}),
    }
}

fn list_name(kind: &Kind) -> String {
    format!("{}List", schema::definition_name(kind))
}

/// The patch media types a kind takes: custom resources take no strategic
/// merge patch, and kubectl 1.27+ reads that from the PATCH operation's
/// request body to choose a merge patch.
fn patch_types(kind: &Kind) -> Vec<&'static str> {
    let mut out = vec![
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ];
    if !kind.custom {
        out.push("application/strategic-merge-patch+json");
    }
    out
}

/// One operation of a path.
fn operation(flavor: Flavor, kind: &Kind, action: &str, id: &str) -> Value {
    let def = schema::definition_name(kind);
    let response_def = if action == "list" || action == "deletecollection" {
        list_name(kind)
    } else {
        def.clone()
    };
    let names: &[(&str, &str)] = match action {
        "list" => &[
            ("allowWatchBookmarks", "boolean"),
            ("continue", "string"),
            ("fieldSelector", "string"),
            ("labelSelector", "string"),
            ("limit", "integer"),
            ("resourceVersion", "string"),
            ("timeoutSeconds", "integer"),
            ("watch", "boolean"),
        ],
        "post" | "put" => &[
            ("dryRun", "string"),
            ("fieldManager", "string"),
            ("fieldValidation", "string"),
        ],
        "patch" => &[
            ("dryRun", "string"),
            ("fieldManager", "string"),
            ("fieldValidation", "string"),
            ("force", "boolean"),
        ],
        "delete" | "deletecollection" => &[
            ("dryRun", "string"),
            ("gracePeriodSeconds", "integer"),
            ("labelSelector", "string"),
            ("propagationPolicy", "string"),
        ],
        _ => &[],
    };
    let mut params: Vec<Value> = names.iter().map(|(n, t)| query(flavor, n, t)).collect();
    let body_schema = if action == "patch" {
        json!({"type": "object"})
    } else {
        reference(flavor, &def)
    };
    let mut op = json!({
        "operationId": id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind":
            {"group": kind.group, "version": kind.version, "kind": kind.kind},
    });
    match flavor {
        Flavor::V2 => {
            if matches!(action, "post" | "put" | "patch") {
                params.push(json!({"name": "body", "in": "body", "required": true,
                                   "schema": body_schema}));
            }
            op["consumes"] = if action == "patch" {
                json!(patch_types(kind))
            } else {
                json!(["*/*"])
            };
            op["produces"] = json!(["application/json", "application/yaml"]);
            op["responses"] = json!({"200": {"description": "OK",
                                             "schema": reference(flavor, &response_def)}});
        }
        Flavor::V3 => {
            if matches!(action, "post" | "put" | "patch") {
                let types = if action == "patch" {
                    patch_types(kind)
                } else {
                    vec!["*/*"]
                };
                let content: Map<String, Value> = types
                    .iter()
                    .map(|t| (t.to_string(), json!({"schema": body_schema})))
                    .collect();
                op["requestBody"] = json!({"content": content, "required": true});
            }
            op["responses"] = json!({"200": {"description": "OK", "content": {
                "application/json": {"schema": reference(flavor, &response_def)}}}});
        }
    }
    op["parameters"] = Value::Array(params);
    op
}

fn paths(flavor: Flavor, kinds: &[&Kind]) -> Map<String, Value> {
    let mut out = Map::new();
    for k in kinds {
        let base = k.prefix();
        let (collection, object) = if k.namespaced {
            (
                format!("{base}/namespaces/{{namespace}}/{}", k.plural),
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", k.plural),
            )
        } else {
            (
                format!("{base}/{}", k.plural),
                format!("{base}/{}/{{name}}", k.plural),
            )
        };
        let ns_param: Vec<Value> = if k.namespaced {
            vec![path_param(flavor, "namespace")]
        } else {
            Vec::new()
        };
        let mut with_name = ns_param.clone();
        with_name.push(path_param(flavor, "name"));
        let id = |verb: &str| format!("{verb}{}", k.kind);
        out.insert(
            collection,
            json!({
                "get": operation(flavor, k, "list", &id("list")),
                "post": operation(flavor, k, "post", &id("create")),
                "delete": operation(flavor, k, "deletecollection", &id("deleteCollection")),
                "parameters": ns_param,
            }),
        );
        out.insert(
            object,
            json!({
                "get": operation(flavor, k, "get", &id("read")),
                "put": operation(flavor, k, "put", &id("replace")),
                "patch": operation(flavor, k, "patch", &id("patch")),
                "delete": operation(flavor, k, "delete", &id("delete")),
                "parameters": with_name,
            }),
        );
        if k.namespaced {
            out.insert(
                format!("{base}/{}", k.plural),
                json!({"get": operation(flavor, k, "list", &id("listForAllNamespaces"))}),
            );
        }
    }
    out
}

fn definitions(flavor: Flavor, kinds: &[&Kind]) -> Map<String, Value> {
    let mut out = Map::new();
    for k in kinds {
        let def = schema::definition_name(k);
        out.insert(def.clone(), schema::definition(k));
        out.insert(
            list_name(k),
            json!({
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object",
                                 "x-kubernetes-preserve-unknown-fields": true},
                    "items": {"type": "array", "items": reference(flavor, &def)},
                },
                "x-kubernetes-group-version-kind":
                    [{"group": k.group, "version": k.version, "kind": format!("{}List", k.kind)}],
            }),
        );
    }
    out
}

fn info() -> Value {
    json!({"title": "Kubernetes", "version": "v1.33.0-portcullis-fake"})
}

/// The v2 document (every served kind).
pub(crate) fn v2(not_served: &dyn Fn(&Kind) -> bool) -> Value {
    let kinds: Vec<&Kind> = KINDS.iter().filter(|k| !not_served(k)).collect();
    json!({
        "swagger": "2.0",
        "info": info(),
        "paths": paths(Flavor::V2, &kinds),
        "definitions": definitions(Flavor::V2, &kinds),
    })
}

/// `api/v1`, `apis/GROUP/VERSION`: the v3 document's key in the index.
fn v3_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// One group-version's v3 document, by its index key.
pub(crate) fn v3(key: &str, not_served: &dyn Fn(&Kind) -> bool) -> Option<Value> {
    let kinds: Vec<&Kind> = KINDS
        .iter()
        .filter(|k| !not_served(k) && v3_key(k.group, k.version) == key)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": info(),
        "paths": paths(Flavor::V3, &kinds),
        "components": {"schemas": definitions(Flavor::V3, &kinds)},
    }))
}

/// FNV-1a, for the documents' `hash` parameter (a cache key).
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The v3 index: one `serverRelativeURL` per group-version.
pub(crate) fn v3_index(not_served: &dyn Fn(&Kind) -> bool) -> Value {
    let mut paths = Map::new();
    for (g, v) in group_versions() {
        let key = v3_key(g, v);
        if let Some(doc) = v3(&key, not_served) {
            let hash = format!("{:016X}", fnv(&doc.to_string()));
            paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
            );
        }
    }
    json!({"paths": paths})
}
