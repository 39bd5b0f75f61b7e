//! The schemas of the served kinds, written once and used four ways: the
//! OpenAPI v2 and v3 documents kubectl validates against, the strategic
//! merge patch metadata (merge keys), and the server's own decoding (type
//! errors, unknown fields, pruning).
//!
//! Built-in kinds list their usual fields; subtrees the fake has no use
//! for (probes, affinity, volume sources, statuses...) are open objects
//! that accept anything. Custom kinds take theirs from their CRD
//! (`deploy/kubernetes/crds/`, see [`crd`](super::crd)): the structural
//! part here, the value checks (enums, bounds, patterns) in
//! [`crd::values`](super::crd::values).

use super::crd;
use super::kinds::Kind;
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::sync::OnceLock;

/// How a list is merged by a strategic merge patch (and published as
/// `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListMeta {
    /// Replaced as a whole.
    Atomic,
    /// Objects merged by the value of a key field.
    MergeKey(&'static str),
    /// As `MergeKey`, with `$retainKeys` honoured in the items.
    MergeKeyRetainKeys(&'static str),
    /// Scalars merged as a set.
    Set,
}

/// One node of a schema.
#[derive(Debug, Clone)]
pub(crate) enum Schema {
    String,
    Integer,
    Boolean,
    /// An integer or a string (ports).
    IntOrString,
    /// A resource quantity: a string or a number.
    Quantity,
    /// An RFC 3339 date-time string.
    Time,
    /// Any object: fields are not checked.
    OpenObject,
    /// An object with known fields; others are unknown.
    Object(Vec<(Cow<'static, str>, Schema)>),
    /// An object whose values all have one schema.
    Map(Box<Schema>),
    Array(Box<Schema>, ListMeta),
}

impl Schema {
    /// The schema of a field of an object (or a value of a map); `None`
    /// for unknown fields and open objects.
    pub fn field(&self, name: &str) -> Option<&Schema> {
        match self {
            Schema::Object(fields) => fields.iter().find(|(n, _)| *n == name).map(|(_, s)| s),
            Schema::Map(v) => Some(v),
            _ => None,
        }
    }

    /// A list's item schema and merge strategy.
    pub fn list(&self) -> Option<(&Schema, ListMeta)> {
        match self {
            Schema::Array(items, meta) => Some((items, *meta)),
            _ => None,
        }
    }

    /// The OpenAPI (v2 and v3 alike) form, inline (no `$ref`).
    pub fn openapi(&self) -> Value {
        match self {
            Schema::String => json!({"type": "string"}),
            Schema::Integer => json!({"type": "integer", "format": "int64"}),
            Schema::Boolean => json!({"type": "boolean"}),
            Schema::IntOrString => json!({"type": "string", "format": "int-or-string",
                                          "x-kubernetes-int-or-string": true}),
            Schema::Quantity => json!({"type": "string", "format": "quantity"}),
            Schema::Time => json!({"type": "string", "format": "date-time"}),
            Schema::OpenObject => json!({"type": "object",
                                         "x-kubernetes-preserve-unknown-fields": true}),
            Schema::Object(fields) => {
                let props: Map<String, Value> = fields
                    .iter()
                    .map(|(n, s)| (n.to_string(), s.openapi()))
                    .collect();
                json!({"type": "object", "properties": props})
            }
            Schema::Map(v) => json!({"type": "object", "additionalProperties": v.openapi()}),
            Schema::Array(items, meta) => {
                let mut out = json!({"type": "array", "items": items.openapi()});
                match meta {
                    ListMeta::Atomic => {
                        out["x-kubernetes-list-type"] = "atomic".into();
                    }
                    ListMeta::MergeKey(k) | ListMeta::MergeKeyRetainKeys(k) => {
                        out["x-kubernetes-patch-merge-key"] = (*k).into();
                        out["x-kubernetes-patch-strategy"] =
                            if matches!(meta, ListMeta::MergeKeyRetainKeys(_)) {
                                "merge,retainKeys".into()
                            } else {
                                "merge".into()
                            };
                        out["x-kubernetes-list-type"] = "map".into();
                        out["x-kubernetes-list-map-keys"] = json!([k]);
                    }
                    ListMeta::Set => {
                        out["x-kubernetes-patch-strategy"] = "merge".into();
                        out["x-kubernetes-list-type"] = "set".into();
                    }
                }
                out
            }
        }
    }
}

/// What decoding an object against its schema found.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Decoded {
    /// Paths of the fields the schema does not know (`spec.foo`,
    /// `spec.containers[0].bar`); they were removed.
    pub unknown: Vec<String>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Checks types, removes unknown fields and `null` fields of typed
/// objects (as the real server's decoding does). A type error is `Err`
/// with the field's path.
pub(crate) fn decode(schema: &Schema, value: &mut Value) -> Result<Decoded, String> {
    let mut out = Decoded::default();
    walk(schema, value, "", &mut out)?;
    Ok(out)
}

fn walk(schema: &Schema, value: &mut Value, path: &str, out: &mut Decoded) -> Result<(), String> {
    let wrong = |expected: &str, v: &Value| {
        let at = if path.is_empty() { "object" } else { path };
        Err(format!("{at}: expected {expected}, got {}", type_name(v)))
    };
    match schema {
        Schema::String | Schema::Time => match value {
            Value::String(_) => Ok(()),
            v => wrong("string", v),
        },
        Schema::Integer => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(()),
            v => wrong("integer", v),
        },
        Schema::Boolean => match value {
            Value::Bool(_) => Ok(()),
            v => wrong("boolean", v),
        },
        Schema::IntOrString => match value {
            Value::String(_) => Ok(()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(()),
            v => wrong("integer or string", v),
        },
        Schema::Quantity => match value {
            Value::String(_) | Value::Number(_) => Ok(()),
            v => wrong("quantity (string or number)", v),
        },
        Schema::OpenObject => match value {
            Value::Object(_) => Ok(()),
            v => wrong("object", v),
        },
        Schema::Object(fields) => {
            let Value::Object(map) = value else {
                return wrong("object", value);
            };
            map.retain(|_, v| !v.is_null());
            let mut unknown = Vec::new();
            for (k, v) in map.iter_mut() {
                match fields.iter().find(|(n, _)| n.as_ref() == k.as_str()) {
                    Some((_, s)) => walk(s, v, &join(path, k), out)?,
                    None => unknown.push(k.clone()),
                }
            }
            for k in unknown {
                map.remove(&k);
                out.unknown.push(join(path, &k));
            }
            Ok(())
        }
        Schema::Map(inner) => {
            let Value::Object(map) = value else {
                return wrong("object", value);
            };
            map.retain(|_, v| !v.is_null());
            for (k, v) in map.iter_mut() {
                walk(inner, v, &join(path, k), out)?;
            }
            Ok(())
        }
        Schema::Array(items, _) => {
            let Value::Array(list) = value else {
                return wrong("array", value);
            };
            for (i, v) in list.iter_mut().enumerate() {
                walk(items, v, &format!("{path}[{i}]"), out)?;
            }
            Ok(())
        }
    }
}

fn obj(fields: Vec<(&'static str, Schema)>) -> Schema {
    Schema::Object(
        fields
            .into_iter()
            .map(|(n, s)| (Cow::Borrowed(n), s))
            .collect(),
    )
}

fn arr(items: Schema) -> Schema {
    Schema::Array(Box::new(items), ListMeta::Atomic)
}

fn keyed(items: Schema, key: &'static str) -> Schema {
    Schema::Array(Box::new(items), ListMeta::MergeKey(key))
}

fn map(values: Schema) -> Schema {
    Schema::Map(Box::new(values))
}

fn object_meta() -> Schema {
    use Schema::*;
    obj(vec![
        ("annotations", map(String)),
        ("creationTimestamp", Time),
        ("deletionGracePeriodSeconds", Integer),
        ("deletionTimestamp", Time),
        ("finalizers", Schema::Array(Box::new(String), ListMeta::Set)),
        ("generateName", String),
        ("generation", Integer),
        ("labels", map(String)),
        ("managedFields", arr(OpenObject)),
        ("name", String),
        ("namespace", String),
        ("ownerReferences", keyed(OpenObject, "uid")),
        ("resourceVersion", String),
        ("selfLink", String),
        ("uid", String),
    ])
}

fn label_selector() -> Schema {
    use Schema::*;
    obj(vec![
        (
            "matchExpressions",
            arr(obj(vec![
                ("key", String),
                ("operator", String),
                ("values", arr(String)),
            ])),
        ),
        ("matchLabels", map(String)),
    ])
}

fn container() -> Schema {
    use Schema::*;
    obj(vec![
        ("args", arr(String)),
        ("command", arr(String)),
        (
            "env",
            keyed(
                obj(vec![
                    ("name", String),
                    ("value", String),
                    ("valueFrom", OpenObject),
                ]),
                "name",
            ),
        ),
        ("envFrom", arr(OpenObject)),
        ("image", String),
        ("imagePullPolicy", String),
        ("lifecycle", OpenObject),
        ("livenessProbe", OpenObject),
        ("name", String),
        (
            "ports",
            keyed(
                obj(vec![
                    ("containerPort", Integer),
                    ("hostIP", String),
                    ("hostPort", Integer),
                    ("name", String),
                    ("protocol", String),
                ]),
                "containerPort",
            ),
        ),
        ("readinessProbe", OpenObject),
        ("resizePolicy", arr(OpenObject)),
        ("resources", OpenObject),
        ("restartPolicy", String),
        ("securityContext", OpenObject),
        ("startupProbe", OpenObject),
        ("stdin", Boolean),
        ("stdinOnce", Boolean),
        ("terminationMessagePath", String),
        ("terminationMessagePolicy", String),
        ("tty", Boolean),
        ("volumeDevices", keyed(OpenObject, "devicePath")),
        ("volumeMounts", keyed(OpenObject, "mountPath")),
        ("workingDir", String),
    ])
}

fn pod_spec() -> Schema {
    use Schema::*;
    obj(vec![
        ("activeDeadlineSeconds", Integer),
        ("affinity", OpenObject),
        ("automountServiceAccountToken", Boolean),
        ("containers", keyed(container(), "name")),
        ("dnsConfig", OpenObject),
        ("dnsPolicy", String),
        ("enableServiceLinks", Boolean),
        ("ephemeralContainers", keyed(OpenObject, "name")),
        ("hostAliases", keyed(OpenObject, "ip")),
        ("hostIPC", Boolean),
        ("hostNetwork", Boolean),
        ("hostPID", Boolean),
        ("hostUsers", Boolean),
        ("hostname", String),
        ("imagePullSecrets", keyed(OpenObject, "name")),
        ("initContainers", keyed(container(), "name")),
        ("nodeName", String),
        ("nodeSelector", map(String)),
        ("os", OpenObject),
        ("overhead", map(Quantity)),
        ("preemptionPolicy", String),
        ("priority", Integer),
        ("priorityClassName", String),
        ("readinessGates", arr(OpenObject)),
        ("resourceClaims", keyed(OpenObject, "name")),
        ("resources", OpenObject),
        ("restartPolicy", String),
        ("runtimeClassName", String),
        ("schedulerName", String),
        ("schedulingGates", keyed(OpenObject, "name")),
        ("securityContext", OpenObject),
        ("serviceAccount", String),
        ("serviceAccountName", String),
        ("setHostnameAsFQDN", Boolean),
        ("shareProcessNamespace", Boolean),
        ("subdomain", String),
        ("terminationGracePeriodSeconds", Integer),
        ("tolerations", arr(OpenObject)),
        (
            "topologySpreadConstraints",
            keyed(OpenObject, "topologyKey"),
        ),
        (
            "volumes",
            Schema::Array(Box::new(OpenObject), ListMeta::MergeKeyRetainKeys("name")),
        ),
    ])
}

fn network_policy_spec() -> Schema {
    use Schema::*;
    let peer = || {
        obj(vec![
            (
                "ipBlock",
                obj(vec![("cidr", String), ("except", arr(String))]),
            ),
            ("namespaceSelector", label_selector()),
            ("podSelector", label_selector()),
        ])
    };
    let port = || {
        obj(vec![
            ("endPort", Integer),
            ("port", IntOrString),
            ("protocol", String),
        ])
    };
    obj(vec![
        (
            "egress",
            arr(obj(vec![("ports", arr(port())), ("to", arr(peer()))])),
        ),
        (
            "ingress",
            arr(obj(vec![("from", arr(peer())), ("ports", arr(port()))])),
        ),
        ("podSelector", label_selector()),
        ("policyTypes", arr(String)),
    ])
}

fn build(kind: &str) -> Schema {
    use Schema::*;
    let mut fields = vec![
        ("apiVersion", String),
        ("kind", String),
        ("metadata", object_meta()),
    ];
    match kind {
        "Namespace" => {
            fields.push(("spec", obj(vec![("finalizers", arr(String))])));
            fields.push(("status", OpenObject));
        }
        "Pod" => {
            fields.push(("spec", pod_spec()));
            fields.push(("status", OpenObject));
        }
        "Node" => {
            fields.push(("spec", OpenObject));
            fields.push(("status", OpenObject));
        }
        "Secret" => {
            fields.push(("data", map(String)));
            fields.push(("immutable", Boolean));
            fields.push(("stringData", map(String)));
            fields.push(("type", String));
        }
        "Endpoints" => fields.push(("subsets", arr(OpenObject))),
        "EndpointSlice" => {
            fields.push(("addressType", String));
            fields.push(("endpoints", arr(OpenObject)));
            fields.push(("ports", arr(OpenObject)));
        }
        "NetworkPolicy" => fields.push(("spec", network_policy_spec())),
        "CustomResourceDefinition" => {
            fields.push(("spec", OpenObject));
            fields.push(("status", OpenObject));
        }
        custom => {
            let crd = crd::of_kind(custom).expect("every custom kind has a CRD (crd::tests)");
            let Schema::Object(mut own) = from_openapi(&crd.schema, "openAPIV3Schema")
                .expect("the CRDs are structural (crd::tests)")
            else {
                panic!(
                    "{}: the root of a CRD schema is an object (crd::tests)",
                    crd.file
                );
            };
            // apiVersion, kind and metadata are the API server's, whatever
            // the CRD says of them.
            own.retain(|(n, _)| !matches!(n.as_ref(), "apiVersion" | "kind" | "metadata"));
            for (n, s) in fields {
                own.push((Cow::Borrowed(n), s));
            }
            return Schema::Object(own);
        }
    }
    obj(fields)
}

/// The structural part of a CRD's schema node: types and fields, for
/// decoding and the OpenAPI documents. `x-kubernetes-list-type: map`
/// lists are atomic here (server-side apply replaces them whole).
pub(crate) fn from_openapi(node: &Value, path: &str) -> Result<Schema, String> {
    let flag = |k: &str| node.get(k) == Some(&Value::Bool(true));
    if flag("x-kubernetes-int-or-string") {
        return Ok(Schema::IntOrString);
    }
    let type_ = node.get("type").and_then(Value::as_str);
    Ok(match type_ {
        Some("string") if node.get("format").and_then(Value::as_str) == Some("date-time") => {
            Schema::Time
        }
        Some("string") => Schema::String,
        Some("integer") => Schema::Integer,
        Some("boolean") => Schema::Boolean,
        Some("array") => {
            let items = node
                .get("items")
                .ok_or(format!("{path}: an array needs items"))?;
            let meta = match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => ListMeta::Set,
                _ => ListMeta::Atomic,
            };
            Schema::Array(
                Box::new(from_openapi(items, &format!("{path}.items"))?),
                meta,
            )
        }
        Some("object") | None => {
            if let Some(props) = node.get("properties").and_then(Value::as_object) {
                let fields = props
                    .iter()
                    .map(|(name, child)| {
                        let child = from_openapi(child, &format!("{path}.properties.{name}"))?;
                        Ok((Cow::Owned(name.clone()), child))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Schema::Object(fields)
            } else if let Some(values) = node.get("additionalProperties") {
                Schema::Map(Box::new(from_openapi(
                    values,
                    &format!("{path}.additionalProperties"),
                )?))
            } else if flag("x-kubernetes-preserve-unknown-fields") {
                Schema::OpenObject
            } else if type_.is_some() {
                // No fields listed: the API server prunes every field.
                Schema::Object(Vec::new())
            } else {
                return Err(format!("{path}: no type"));
            }
        }
        Some(other) => return Err(format!("{path}: type {other:?} is not served")),
    })
}

/// The schema of a served kind (built once).
pub(crate) fn of(kind: &Kind) -> &'static Schema {
    static SCHEMAS: OnceLock<Vec<(&'static str, Schema)>> = OnceLock::new();
    let all = SCHEMAS.get_or_init(|| {
        super::kinds::KINDS
            .iter()
            .map(|k| (k.kind, build(k.kind)))
            .collect()
    });
    all.iter()
        .find(|(k, _)| *k == kind.kind)
        .map(|(_, s)| s)
        .expect("every served kind has a schema")
}

/// The OpenAPI definition name of a kind (`io.k8s.api.core.v1.Pod`,
/// `io.cilium.v2.CiliumNetworkPolicy`).
pub(crate) fn definition_name(kind: &Kind) -> String {
    let package = match kind.group {
        "" => "io.k8s.api.core".to_string(),
        "networking.k8s.io" => "io.k8s.api.networking".to_string(),
        "discovery.k8s.io" => "io.k8s.api.discovery".to_string(),
        g => g.split('.').rev().collect::<Vec<_>>().join("."),
    };
    format!("{package}.{}.{}", kind.version, kind.kind)
}

/// A kind's OpenAPI definition, with `x-kubernetes-group-version-kind`.
pub(crate) fn definition(kind: &Kind) -> Value {
    let mut def = of(kind).openapi();
    def["x-kubernetes-group-version-kind"] =
        json!([{"group": kind.group, "version": kind.version, "kind": kind.kind}]);
    def
}

#[cfg(test)]
mod tests;
