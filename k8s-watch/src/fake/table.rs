//! `meta.k8s.io/v1` `Table` responses, which `kubectl get` asks for
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).

use super::crd;
use super::kinds::Kind;
use serde_json::{Value, json};

/// Whether an `Accept` header asks for a Table.
pub(crate) fn wanted(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=Table")
            && params
                .iter()
                .all(|p| !p.starts_with("g=") || *p == "g=meta.k8s.io")
    })
}

/// kubectl's short durations: `45s`, `3m20s`, `5h`, `2d3h`, `400d`, `3y`.
pub(crate) fn human_duration(secs: i64) -> String {
    if secs < 0 {
        return "<invalid>".into();
    }
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        match secs % 60 {
            0 => format!("{m}m"),
            s => format!("{m}m{s}s"),
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            mm => format!("{h}h{mm}m"),
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        match h % 24 {
            0 => format!("{d}d"),
            hh => format!("{d}d{hh}h"),
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        match d % 365 {
            0 => format!("{}y", d / 365),
            dd => format!("{}y{dd}d", d / 365),
        }
    } else {
        format!("{}y", d / 365)
    }
}

fn age(obj: &Value) -> String {
    since(obj.pointer("/metadata/creationTimestamp"))
}

/// The time since an RFC 3339 timestamp, as kubectl prints ages.
fn since(time: Option<&Value>) -> String {
    let created = time
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    match created {
        Some(c) => human_duration(k8s_openapi::jiff::Timestamp::now().as_second() - c.as_second()),
        None => "<unknown>".into(),
    }
}

fn column(name: &str, type_: &str, format: &str, priority: u8, description: &str) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": description,
           "priority": priority})
}

fn columns(kind: &Kind) -> Vec<Value> {
    let name = column(
        "Name",
        "string",
        "name",
        0,
        "Name must be unique within a namespace.",
    );
    let age = column("Age", "string", "", 0, "Time since the object was created.");
    match kind.kind {
        "Pod" => vec![
            name,
            column(
                "Ready",
                "string",
                "",
                0,
                "Ready containers of all containers.",
            ),
            column(
                "Status",
                "string",
                "",
                0,
                "The pod's phase, or why it is not running.",
            ),
            column("Restarts", "string", "", 0, "Container restarts."),
            age,
            column("IP", "string", "", 1, "The pod's IP address."),
            column("Node", "string", "", 1, "The node the pod is bound to."),
        ],
        "Namespace" => vec![
            name,
            column("Status", "string", "", 0, "The namespace's phase."),
            age,
        ],
        "Node" => vec![
            name,
            column("Status", "string", "", 0, "Whether the node is ready."),
            age,
            column(
                "Internal-IP",
                "string",
                "",
                1,
                "The node's InternalIP address.",
            ),
        ],
        "NetworkPolicy" => vec![
            name,
            column(
                "Pod-Selector",
                "string",
                "",
                0,
                "The pods the policy selects.",
            ),
            age,
        ],
        "CustomResourceDefinition" => vec![
            name,
            column(
                "Created At",
                "date",
                "",
                0,
                "When the definition was created.",
            ),
        ],
        other => match crd::of_kind(other) {
            // A custom kind: its CRD's printer columns after the name, as
            // the real server prints them.
            Some(c) if !c.columns.is_empty() => std::iter::once(name)
                .chain(c.columns.iter().map(|pc| {
                    let type_ = if pc.type_ == "date" {
                        "string"
                    } else {
                        pc.type_.as_str()
                    };
                    column(&pc.name, type_, "", pc.priority, &pc.json_path)
                }))
                .collect(),
            _ => vec![name, age],
        },
    }
}

/// A printer column's cell: `.a.b.c` of the object; a date as an age,
/// lists and objects as JSON, nothing as `<none>`.
fn printer_cell(obj: &Value, pc: &crd::PrinterColumn) -> Value {
    let pointer = pc.json_path.replace('.', "/");
    match obj.pointer(&pointer) {
        None | Some(Value::Null) => "<none>".into(),
        Some(v) if pc.type_ == "date" => since(Some(v)).into(),
        Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => v.clone(),
        Some(v) => v.to_string().into(),
    }
}

fn selector_text(sel: &Value) -> String {
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(match e.get("operator").and_then(Value::as_str) {
            Some("In") => format!("{key} in ({})", values.join(",")),
            Some("NotIn") => format!("{key} notin ({})", values.join(",")),
            Some("Exists") => key.to_string(),
            Some("DoesNotExist") => format!("!{key}"),
            _ => format!("{key} ?"),
        });
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

fn cells(kind: &Kind, obj: &Value) -> Vec<Value> {
    let name = obj.pointer("/metadata/name").cloned().unwrap_or_default();
    let str_at = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("<none>")
            .to_string()
    };
    match kind.kind {
        "Pod" => {
            let containers = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ready = statuses
                .iter()
                .filter(|s| s.get("ready").and_then(Value::as_bool) == Some(true))
                .count();
            let restarts: i64 = statuses
                .iter()
                .filter_map(|s| s.get("restartCount").and_then(Value::as_i64))
                .sum();
            let status = if obj.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating".to_string()
            } else {
                obj.pointer("/status/reason")
                    .or_else(|| obj.pointer("/status/phase"))
                    .and_then(Value::as_str)
                    .unwrap_or("Unknown")
                    .to_string()
            };
            vec![
                name,
                format!("{ready}/{containers}").into(),
                status.into(),
                restarts.to_string().into(),
                age(obj).into(),
                str_at("/status/podIP").into(),
                str_at("/spec/nodeName").into(),
            ]
        }
        "Namespace" => vec![name, str_at("/status/phase").into(), age(obj).into()],
        "Node" => {
            let ready = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| {
                    c.iter()
                        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
                })
                .and_then(|c| c.get("status").and_then(Value::as_str))
                == Some("True");
            let ip = obj
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
                })
                .and_then(|a| a.get("address").and_then(Value::as_str))
                .unwrap_or("<none>");
            vec![
                name,
                (if ready { "Ready" } else { "NotReady" }).into(),
                age(obj).into(),
                ip.into(),
            ]
        }
        "NetworkPolicy" => vec![
            name,
            obj.pointer("/spec/podSelector")
                .map(selector_text)
                .unwrap_or_else(|| "<none>".into())
                .into(),
            age(obj).into(),
        ],
        "CustomResourceDefinition" => vec![name, str_at("/metadata/creationTimestamp").into()],
        other => match crd::of_kind(other) {
            Some(c) if !c.columns.is_empty() => std::iter::once(name)
                .chain(c.columns.iter().map(|pc| printer_cell(obj, pc)))
                .collect(),
            _ => vec![name, age(obj).into()],
        },
    }
}

/// The object a row carries: `PartialObjectMetadata` (the default), the
/// full object for `includeObject=Object`, nothing for `None`.
fn row_object(obj: &Value, include: &str) -> Option<Value> {
    match include {
        "None" => None,
        "Object" => Some(obj.clone()),
        _ => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_default(),
        })),
    }
}

/// A Table of objects.
pub(crate) fn table(
    kind: &Kind,
    objects: &[&Value],
    resource_version: &str,
    include: &str,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(kind, o)});
            if let Some(obj) = row_object(o, include) {
                row["object"] = obj;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns(kind),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests;
