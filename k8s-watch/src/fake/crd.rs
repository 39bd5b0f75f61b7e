//! The CustomResourceDefinitions of `deploy/kubernetes/crds/`, compiled
//! in: the fake serves the custom kinds with the schemas a cluster gets
//! from those files, and serves the files themselves as
//! `apiextensions.k8s.io/v1` objects (`kubectl get crd`).
//!
//! Loading checks what the real API server checks of a CRD's schema that
//! `kubernetes-validate` does not: every keyword is one the API server
//! knows, the schema is structural (every node typed, `properties` and
//! `additionalProperties` never together, `oneOf`/`anyOf`/`allOf`/`not`
//! holding value checks only, `metadata` left open) and every `pattern`
//! compiles. The value checks themselves are [`values`].

pub(crate) mod values;

use serde_json::{Value, json};
use std::sync::OnceLock;

/// The files, by name.
const FILES: &[(&str, &str)] = &[
    (
        "ciliumnetworkpolicies.cilium.io.yaml",
        include_str!("../../../deploy/kubernetes/crds/ciliumnetworkpolicies.cilium.io.yaml"),
    ),
    (
        "ciliumclusterwidenetworkpolicies.cilium.io.yaml",
        include_str!(
            "../../../deploy/kubernetes/crds/ciliumclusterwidenetworkpolicies.cilium.io.yaml"
        ),
    ),
    (
        "ciliumcidrgroups.cilium.io.yaml",
        include_str!("../../../deploy/kubernetes/crds/ciliumcidrgroups.cilium.io.yaml"),
    ),
    (
        "clusternetworkpolicies.policy.networking.k8s.io.yaml",
        include_str!(
            "../../../deploy/kubernetes/crds/clusternetworkpolicies.policy.networking.k8s.io.yaml"
        ),
    ),
];

/// One CRD, as the fake uses it.
#[derive(Debug)]
pub(crate) struct Crd {
    /// `spec.names.kind`.
    pub kind: String,
    /// The file it came from.
    pub file: &'static str,
    /// The CRD object as served (`metadata` filled in, `status` added).
    pub object: Value,
    /// The storage version's `schema.openAPIV3Schema`.
    pub schema: Value,
    /// The storage version's `additionalPrinterColumns`.
    pub columns: Vec<PrinterColumn>,
}

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PrinterColumn {
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    pub json_path: String,
    pub priority: u8,
}

/// What is wrong with a CRD file.
#[derive(Debug, thiserror::Error)]
#[error("deploy/kubernetes/crds/{file}: {reason}")]
pub(crate) struct CrdError {
    file: String,
    reason: String,
}

/// Every CRD, loaded once. The files are part of the build, and
/// `crd::tests` loads them: a file that does not load is a broken build,
/// not a runtime condition.
pub(crate) fn all() -> &'static [Crd] {
    static CRDS: OnceLock<Vec<Crd>> = OnceLock::new();
    CRDS.get_or_init(|| {
        FILES
            .iter()
            .map(|(file, text)| {
                load(file, text).expect("deploy/kubernetes/crds loads (crd::tests)")
            })
            .collect()
    })
}

/// The CRD of a custom kind.
pub(crate) fn of_kind(kind: &str) -> Option<&'static Crd> {
    all().iter().find(|c| c.kind == kind)
}

fn at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// Parses and checks one file.
pub(crate) fn load(file: &'static str, text: &str) -> Result<Crd, CrdError> {
    let fail = |reason: String| CrdError {
        file: file.to_string(),
        reason,
    };
    let mut object: Value =
        serde_yaml_ng::from_str(text).map_err(|e| fail(format!("not YAML: {e}")))?;
    if at(&object, "/apiVersion") != Some("apiextensions.k8s.io/v1")
        || at(&object, "/kind") != Some("CustomResourceDefinition")
    {
        return Err(fail(
            "not an apiextensions.k8s.io/v1 CustomResourceDefinition".into(),
        ));
    }
    let name = at(&object, "/metadata/name")
        .unwrap_or_default()
        .to_string();
    let group = at(&object, "/spec/group").unwrap_or_default();
    let plural = at(&object, "/spec/names/plural").unwrap_or_default();
    if name != format!("{plural}.{group}") || format!("{name}.yaml") != file {
        return Err(fail(format!(
            "metadata.name {name:?} must be PLURAL.GROUP ({plural}.{group}) and the file NAME.yaml"
        )));
    }
    let kind = at(&object, "/spec/names/kind")
        .ok_or_else(|| fail("spec.names.kind is missing".into()))?
        .to_string();
    let versions = object
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let stored: Vec<&Value> = versions
        .iter()
        .filter(|v| v.get("storage") == Some(&Value::Bool(true)))
        .collect();
    let [version] = stored.as_slice() else {
        return Err(fail(format!(
            "{} versions are the storage version; exactly one must be",
            stored.len()
        )));
    };
    let schema = version
        .pointer("/schema/openAPIV3Schema")
        .cloned()
        .ok_or_else(|| fail("the storage version has no schema.openAPIV3Schema".into()))?;
    check_root(&schema).map_err(fail)?;
    let mut columns = Vec::new();
    for (i, c) in version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = |f: &str| c.get(f).and_then(Value::as_str).map(str::to_string);
        let (Some(name), Some(type_), Some(json_path)) =
            (field("name"), field("type"), field("jsonPath"))
        else {
            return Err(fail(format!(
                "additionalPrinterColumns[{i}] needs name, type and jsonPath"
            )));
        };
        if !json_path.starts_with('.') || json_path.contains(['[', '?', '*']) {
            return Err(fail(format!(
                "additionalPrinterColumns[{i}].jsonPath {json_path:?}: the fake reads only .a.b.c paths"
            )));
        }
        columns.push(PrinterColumn {
            name,
            type_,
            json_path,
            priority: c.get("priority").and_then(Value::as_u64).unwrap_or(0) as u8,
        });
    }
    let accepted = object["spec"]["names"].clone();
    let stored_version = version.get("name").cloned().unwrap_or_default();
    let meta = object["metadata"]
        .as_object_mut()
        .ok_or_else(|| fail("metadata is not an object".into()))?;
    meta.insert(
        "uid".into(),
        format!("00000000-0000-4000-9000-{:012}", stable_number(&name)).into(),
    );
    meta.insert("resourceVersion".into(), "1".into());
    meta.insert("generation".into(), 1.into());
    meta.insert("creationTimestamp".into(), "2025-01-01T00:00:00Z".into());
    let condition = |type_: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z",
               "reason": reason, "message": message})
    };
    object["status"] = json!({
        "acceptedNames": accepted,
        "storedVersions": [stored_version],
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
    });
    Ok(Crd {
        kind,
        file,
        object,
        schema,
        columns,
    })
}

/// A number derived from a name, the same every run (the served objects'
/// `uid`).
fn stable_number(name: &str) -> u64 {
    name.bytes()
        .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
        % 1_000_000_000_000
}

/// The keywords the API server accepts in a schema node (`title`,
/// `example` and the rest it knows but the fake does not use are refused
/// too: these files do not need them, and a refusal catches typos).
const KEYWORDS: &[&str] = &[
    "type",
    "format",
    "description",
    "properties",
    "additionalProperties",
    "items",
    "required",
    "enum",
    "default",
    "nullable",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "oneOf",
    "anyOf",
    "allOf",
    "not",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-map-type",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-validations",
];

/// The keywords a `oneOf`/`anyOf`/`allOf`/`not` branch may hold: value
/// checks, never types or fields (a structural schema's rule).
const VALUE_KEYWORDS: &[&str] = &[
    "required",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "oneOf",
    "anyOf",
    "allOf",
    "not",
];

fn check_root(schema: &Value) -> Result<(), String> {
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err("openAPIV3Schema: the root must be of type object".into());
    }
    if let Some(meta) = schema.pointer("/properties/metadata") {
        let fields: Vec<&String> = meta
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().collect())
            .unwrap_or_default();
        if fields.iter().any(|f| *f != "name" && *f != "generateName") {
            return Err(
                "openAPIV3Schema.properties.metadata: only name and generateName may be restricted"
                    .into(),
            );
        }
    }
    check_node(schema, "openAPIV3Schema")
}

/// One node of a schema: known keywords, structural, patterns compile.
fn check_node(node: &Value, path: &str) -> Result<(), String> {
    let Some(map) = node.as_object() else {
        return Err(format!("{path}: a schema must be an object"));
    };
    if let Some(k) = map.keys().find(|k| !KEYWORDS.contains(&k.as_str())) {
        return Err(format!("{path}: unknown keyword {k:?}"));
    }
    let int_or_string = map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let type_ = map.get("type").and_then(Value::as_str);
    match (type_, int_or_string) {
        (Some(_), true) => {
            return Err(format!("{path}: x-kubernetes-int-or-string takes no type"));
        }
        (None, false) if !preserve => {
            return Err(format!(
                "{path}: no type (a structural schema types every node)"
            ));
        }
        (Some(t), false) if !["object", "array", "string", "integer", "boolean"].contains(&t) => {
            return Err(format!(
                "{path}: type {t:?} is not one the fake serves (object, array, string, integer, boolean)"
            ));
        }
        _ => {}
    }
    if let Some(Value::Array(branches)) = map.get("anyOf")
        && int_or_string
    {
        let plain = |t: &str| json!({"type": t});
        if branches.as_slice() != [plain("integer"), plain("string")] {
            return Err(format!(
                "{path}: with x-kubernetes-int-or-string, anyOf must be exactly [{{type: integer}}, {{type: string}}]"
            ));
        }
    } else {
        check_branches(map, path)?;
    }
    if map.contains_key("properties") && map.contains_key("additionalProperties") {
        return Err(format!(
            "{path}: properties and additionalProperties are mutually exclusive"
        ));
    }
    if let Some(p) = map.get("pattern") {
        let p = p.as_str().ok_or(format!("{path}.pattern: not a string"))?;
        regex::Regex::new(p).map_err(|e| format!("{path}.pattern: {e}"))?;
    }
    if let Some(props) = map.get("properties") {
        if type_ != Some("object") {
            return Err(format!(
                "{path}: properties on a node that is not an object"
            ));
        }
        let props = props
            .as_object()
            .ok_or(format!("{path}.properties: not an object"))?;
        for (name, child) in props {
            check_node(child, &format!("{path}.properties.{name}"))?;
        }
        if let Some(required) = map.get("required").and_then(Value::as_array)
            && let Some(missing) = required
                .iter()
                .filter_map(Value::as_str)
                .find(|r| !props.contains_key(*r))
        {
            return Err(format!("{path}.required: {missing:?} is not a property"));
        }
    }
    match map.get("additionalProperties") {
        None => {}
        Some(Value::Object(_)) => check_node(
            &map["additionalProperties"],
            &format!("{path}.additionalProperties"),
        )?,
        Some(_) => {
            return Err(format!(
                "{path}.additionalProperties: must be a schema (booleans are not structural)"
            ));
        }
    }
    match (type_, map.get("items")) {
        (Some("array"), Some(items)) => check_node(items, &format!("{path}.items"))?,
        (Some("array"), None) => return Err(format!("{path}: an array needs items")),
        (_, Some(_)) => return Err(format!("{path}: items on a node that is not an array")),
        _ => {}
    }
    Ok(())
}

/// `oneOf`/`anyOf`/`allOf` branches and `not` hold value checks only.
fn check_branches(map: &serde_json::Map<String, Value>, path: &str) -> Result<(), String> {
    let mut branches: Vec<(String, &Value)> = Vec::new();
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(b) = map.get(key) {
            let list = b.as_array().ok_or(format!("{path}.{key}: not a list"))?;
            branches.extend(
                list.iter()
                    .enumerate()
                    .map(|(i, v)| (format!("{path}.{key}[{i}]"), v)),
            );
        }
    }
    if let Some(n) = map.get("not") {
        branches.push((format!("{path}.not"), n));
    }
    for (bpath, b) in branches {
        let bmap = b
            .as_object()
            .ok_or(format!("{bpath}: a schema must be an object"))?;
        if let Some(k) = bmap.keys().find(|k| !VALUE_KEYWORDS.contains(&k.as_str())) {
            return Err(format!(
                "{bpath}: {k:?} is not a value check (structural schemas allow only those here)"
            ));
        }
        check_branches(bmap, &bpath)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
