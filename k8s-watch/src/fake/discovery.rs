//! Discovery: the legacy documents (`/api`, `/apis`, `/api/v1`,
//! `/apis/GROUP/VERSION`) and the aggregated ones
//! (`apidiscovery.k8s.io/v2` and `v2beta1` `APIGroupDiscoveryList`, asked
//! for by `Accept` on `/api` and `/apis`), plus `/version`.

use super::kinds::{KINDS, Kind, group_versions};
use serde_json::{Value, json};

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The verbs of the `status` subresource.
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

/// The verbs of a read-only kind, and of its `status`.
const READ_VERBS: &[&str] = &["get", "list", "watch"];
const READ_STATUS_VERBS: &[&str] = &["get"];

fn verbs(k: &Kind) -> (&'static [&'static str], &'static [&'static str]) {
    if k.read_only {
        (READ_VERBS, READ_STATUS_VERBS)
    } else {
        (VERBS, STATUS_VERBS)
    }
}

/// The aggregated discovery version an `Accept` header asks for.
pub(crate) fn aggregated_version(accept: &str) -> Option<&'static str> {
    let asks = |v: &str| {
        accept.split(',').any(|media| {
            let p: Vec<&str> = media.split(';').map(str::trim).collect();
            p.contains(&"g=apidiscovery.k8s.io")
                && p.contains(&"as=APIGroupDiscoveryList")
                && p.contains(&v)
        })
    };
    if asks("v=v2") {
        Some("v2")
    } else if asks("v=v2beta1") {
        Some("v2beta1")
    } else {
        None
    }
}

fn served(not_served: &dyn Fn(&Kind) -> bool) -> impl Iterator<Item = &'static Kind> + '_ {
    KINDS.iter().filter(move |k| !not_served(k))
}

/// `/version`.
pub(crate) fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-portcullis-fake",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `/api`.
pub(crate) fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})
}

/// `/apis`.
pub(crate) fn group_list(not_served: &dyn Fn(&Kind) -> bool) -> Value {
    let groups: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .filter(|(g, v)| served(not_served).any(|k| k.group == *g && k.version == *v))
        .map(|(g, v)| {
            let gv = format!("{g}/{v}");
            json!({"name": g, "versions": [{"groupVersion": gv, "version": v}],
                   "preferredVersion": {"groupVersion": gv, "version": v}})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/api/v1`, `/apis/GROUP/VERSION`: `None` for a path that is neither.
pub(crate) fn resource_list(path: &str, not_served: &dyn Fn(&Kind) -> bool) -> Option<Value> {
    let gv = path
        .strip_prefix("/apis/")
        .or_else(|| path.strip_prefix("/api/"))?;
    let resources: Vec<Value> = served(not_served)
        .filter(|k| k.prefix() == path)
        .flat_map(|k| {
            let (verbs, status_verbs) = verbs(k);
            let mut r = json!({
                "name": k.plural, "singularName": k.singular,
                "namespaced": k.namespaced, "kind": k.kind, "verbs": verbs,
                "storageVersionHash": "",
            });
            if !k.short_names.is_empty() {
                r["shortNames"] = json!(k.short_names);
            }
            if !k.categories.is_empty() {
                r["categories"] = json!(k.categories);
            }
            let status = k.has_status.then(|| {
                json!({"name": format!("{}/status", k.plural), "singularName": "",
                       "namespaced": k.namespaced, "kind": k.kind, "verbs": status_verbs})
            });
            std::iter::once(r).chain(status)
        })
        .collect();
    if resources.is_empty() {
        return None;
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                "resources": resources}),
    )
}

/// The aggregated document for `/api` (`core`) or `/apis`.
pub(crate) fn aggregated(core: bool, version: &str, not_served: &dyn Fn(&Kind) -> bool) -> Value {
    let items: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .filter_map(|(g, v)| {
            let resources: Vec<Value> = served(not_served)
                .filter(|k| k.group == g && k.version == v)
                .map(|k| {
                    let (verbs, status_verbs) = verbs(k);
                    let mut r = json!({
                        "resource": k.plural,
                        "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
                        "scope": if k.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": k.singular,
                        "verbs": verbs,
                    });
                    if !k.short_names.is_empty() {
                        r["shortNames"] = json!(k.short_names);
                    }
                    if !k.categories.is_empty() {
                        r["categories"] = json!(k.categories);
                    }
                    if k.has_status {
                        r["subresources"] = json!([{
                            "subresource": "status",
                            "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
                            "verbs": status_verbs,
                        }]);
                    }
                    r
                })
                .collect();
            (!resources.is_empty()).then(|| {
                json!({
                    "metadata": {"name": g, "creationTimestamp": null},
                    "versions": [{"version": v, "resources": resources, "freshness": "Current"}],
                })
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}
