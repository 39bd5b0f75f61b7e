//! Writes through the API: create, replace, the four patch types, delete.
//! Each turns a request into the object that would be stored, runs the
//! checks every write passes ([`admit`]), then stores it and sends the
//! watch event ([`commit`]) unless it is a dry run.

use super::crd;
use super::kinds::{Kind, kind_named};
use super::patch::{self, PatchError};
use super::schema;
use super::status::{ApiError, Cause, KindName};
use super::validate::{self, Validator};
use super::{Shared, State, record};
use serde_json::{Value, json};

/// `fieldValidation`: what to do with fields the schema does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    pub fn parse(v: Option<&str>) -> Result<FieldValidation, ApiError> {
        match v {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::BadRequest(format!(
                "fieldValidation parameter {other:?} is not one of Strict, Warn or Ignore"
            ))),
        }
    }
}

/// The patch formats, by request content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let essence = ct.split(';').next().unwrap_or("").trim();
        match essence {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// What a write request is about.
pub(crate) struct Target<'a> {
    pub kind: Kind,
    /// The URL's namespace (namespaced kinds).
    pub namespace: Option<&'a str>,
    /// The URL's name (replace, patch, delete).
    pub name: Option<&'a str>,
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    pub validator: Option<Validator>,
    /// A write to the `status` subresource: only `status` changes.
    pub status_only: bool,
}

impl Target<'_> {
    fn key(&self, name: &str) -> (&'static str, String, String) {
        let ns = if self.kind.namespaced {
            self.namespace.unwrap_or("default").to_string()
        } else {
            String::new()
        };
        (self.kind.plural, ns, name.to_string())
    }

    fn not_found(&self, name: &str) -> ApiError {
        ApiError::NotFound {
            kind: self.kind.into(),
            name: name.to_string(),
        }
    }
}

/// A stored (or, on a dry run, would-be stored) object.
#[derive(Debug)]
pub(crate) struct Written {
    pub object: Value,
    pub created: bool,
    /// `Warning` header texts (unknown fields with `fieldValidation=Warn`).
    pub warnings: Vec<String>,
}

/// Namespaces a real cluster always has: writes into them need no
/// Namespace object in the fake.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The object without what `generation` does not count.
fn generation_content(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

const PATCH_OPTIONS: KindName = KindName {
    kind: "PatchOptions",
    group: "meta.k8s.io",
    plural: "patchoptions",
};

/// Turns a request body (or a patched object) into the object to store,
/// or the API server's refusal. `old` is the stored object for updates.
fn admit(
    st: &State,
    t: &Target<'_>,
    body: Value,
    old: Option<&Value>,
) -> Result<(Value, Vec<String>), ApiError> {
    let kind = t.kind;
    let Value::Object(mut map) = body else {
        return Err(ApiError::BadRequest(format!(
            "the body is not a {} object",
            kind.kind
        )));
    };
    let handled = || {
        format!(
            "{} in version \"{}\" cannot be handled as a {}",
            kind.kind, kind.version, kind.kind
        )
    };
    match map.get("apiVersion") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) if v == kind.api_version => {}
        Some(v) => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({}) does not match the expected API version ({})",
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
                kind.api_version
            )));
        }
    }
    match map.get("kind") {
        None | Some(Value::Null) => {}
        Some(Value::String(k)) if k == kind.kind => {}
        Some(k) => {
            let named = k.as_str().unwrap_or("");
            let what = match kind_named(named) {
                Some(_) => format!("{named} in version \"{}\"", kind.version),
                None => format!("{k}"),
            };
            return Err(ApiError::BadRequest(format!(
                "{}: the kind in the data ({what}) does not match the expected kind ({})",
                handled(),
                kind.kind
            )));
        }
    }
    map.insert("apiVersion".into(), kind.api_version.into());
    map.insert("kind".into(), kind.kind.into());
    let mut obj = Value::Object(map);
    if !obj.get("metadata").is_some_and(Value::is_object) {
        if obj.get("metadata").is_some_and(|m| !m.is_null()) {
            return Err(ApiError::BadRequest(format!(
                "{}: metadata is not an object",
                handled()
            )));
        }
        obj["metadata"] = json!({});
    }
    let decoded = schema::decode(schema::of(&kind), &mut obj)
        .map_err(|e| ApiError::BadRequest(format!("{}: {e}", handled())))?;
    let mut warnings = Vec::new();
    if !decoded.unknown.is_empty() {
        let each: Vec<String> = decoded
            .unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        match t.field_validation {
            FieldValidation::Strict => {
                return Err(ApiError::BadRequest(format!(
                    "{}: strict decoding error: {}",
                    handled(),
                    each.join(", ")
                )));
            }
            FieldValidation::Warn => warnings = each,
            FieldValidation::Ignore => {}
        }
    }
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("metadata was made an object above");
    // Namespace: the URL's; a different one in the body is refused.
    if kind.namespaced {
        let url_ns = t.namespace.unwrap_or("default");
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != url_ns => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request"
                        .into(),
                ));
            }
            _ => {
                meta.insert("namespace".into(), url_ns.into());
            }
        }
    } else {
        meta.remove("namespace");
    }
    // Name: the URL's for updates; generated from generateName on create.
    if let Some(url_name) = t.name {
        match meta.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != url_name => {
                return Err(ApiError::BadRequest(format!(
                    "the name of the object ({n}) does not match the name on the URL ({url_name})"
                )));
            }
            _ => {
                meta.insert("name".into(), url_name.into());
            }
        }
    } else if meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
        && let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
        && !prefix.is_empty()
    {
        let suffix = generated_suffix(st.rv + st.uid + 1);
        meta.insert("name".into(), format!("{prefix}{suffix}").into());
    }
    meta.remove("managedFields");
    meta.remove("selfLink");
    match old {
        Some(old) => {
            let old_meta = &old["metadata"];
            for field in ["uid", "creationTimestamp", "deletionTimestamp"] {
                match old_meta.get(field) {
                    Some(v) => meta.insert(field.into(), v.clone()),
                    None => meta.remove(field),
                };
            }
            if kind.has_generation {
                let g = old_meta
                    .get("generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                let changed = generation_content(old) != generation_content(&obj);
                let meta = obj["metadata"].as_object_mut().expect("an object");
                meta.insert(
                    "generation".into(),
                    (if changed { g + 1 } else { g }).into(),
                );
            } else {
                obj["metadata"]
                    .as_object_mut()
                    .expect("an object")
                    .remove("generation");
            }
        }
        None => {
            if meta
                .get("resourceVersion")
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty())
            {
                return Err(ApiError::Internal(
                    "resourceVersion should not be set on objects to be created".into(),
                ));
            }
            meta.remove("resourceVersion");
            meta.remove("deletionTimestamp");
            meta.insert(
                "uid".into(),
                format!("00000000-0000-4000-8000-{:012}", st.uid + 1).into(),
            );
            meta.insert("creationTimestamp".into(), now().into());
            if kind.has_generation {
                meta.insert("generation".into(), 1.into());
            } else {
                meta.remove("generation");
            }
        }
    }
    if kind.has_status && !t.status_only {
        let status = match old {
            Some(old) => old.get("status").cloned(),
            None => match kind.kind {
                "Pod" => Some(json!({"phase": "Pending"})),
                "Namespace" => Some(json!({"phase": "Active"})),
                _ => None,
            },
        };
        let map = obj.as_object_mut().expect("an object");
        match status {
            Some(s) => map.insert("status".into(), s),
            None => map.remove("status"),
        };
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_string);
    if old.is_none()
        && kind.namespaced
        && let Some(ns) = t.namespace
        && !SYSTEM_NAMESPACES.contains(&ns)
        && !st
            .objects
            .contains_key(&("namespaces", String::new(), ns.to_string()))
    {
        return Err(ApiError::NotFound {
            kind: kind_named("Namespace").expect("Namespace is served").into(),
            name: ns.to_string(),
        });
    }
    let mut causes = validate::check_name(name.as_deref(), kind.kind == "Namespace");
    causes.extend(validate::check_labels(&obj));
    // A custom resource: its CRD's value checks (enums, bounds, patterns).
    if let Some(definition) = kind.custom.then(|| crd::of_kind(kind.kind)).flatten() {
        causes.extend(crd::values::check(&definition.schema, &obj, ""));
    }
    if !causes.is_empty() {
        return Err(ApiError::Invalid {
            kind: kind.into(),
            name: name.unwrap_or_default(),
            causes,
            message: None,
        });
    }
    if let Some(v) = &t.validator
        && let Err(message) = v(&obj)
    {
        let field = ["spec", "specs"]
            .into_iter()
            .find(|f| obj.get(*f).is_some())
            .unwrap_or("");
        return Err(ApiError::Invalid {
            kind: kind.into(),
            name: name.unwrap_or_default(),
            causes: vec![Cause {
                reason: "FieldValueInvalid",
                message: message.clone(),
                field: field.into(),
            }],
            message: Some(message),
        });
    }
    Ok((obj, warnings))
}

/// Five characters from `[a-z0-9]` (no vowels, as the real server),
/// derived from a counter: `generateName` needs unique, not random.
fn generated_suffix(mut n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    // Spread consecutive counters over the space.
    n = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// Stores an admitted object and sends its watch event; an update that
/// changes nothing stores nothing and sends nothing, as the real server.
fn commit(
    shared: &Shared,
    st: &mut State,
    t: &Target<'_>,
    mut obj: Value,
    old: Option<&Value>,
) -> Value {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let key = t.key(&name);
    if let Some(old) = old {
        obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if &obj == old {
            return obj;
        }
    }
    if t.dry_run {
        return obj;
    }
    if old.is_none() {
        st.uid += 1;
    }
    st.rv += 1;
    obj["metadata"]["resourceVersion"] = st.rv.to_string().into();
    let event = if old.is_some() { "MODIFIED" } else { "ADDED" };
    st.objects.insert(key, obj.clone());
    record(shared, st, t.kind, event, obj.clone());
    obj
}

/// `POST` to a collection.
pub(crate) fn create(
    shared: &Shared,
    st: &mut State,
    t: &Target<'_>,
    body: Value,
) -> Result<Written, ApiError> {
    let (obj, warnings) = admit(st, t, body, None)?;
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if st.objects.contains_key(&t.key(&name)) {
        return Err(ApiError::AlreadyExists {
            kind: t.kind.into(),
            name,
        });
    }
    let object = commit(shared, st, t, obj, None);
    Ok(Written {
        object,
        created: true,
        warnings,
    })
}

fn precondition(t: &Target<'_>, name: &str, obj: &Value, old: &Value) -> Result<(), ApiError> {
    let want = obj
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let have = old
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !want.is_empty() && want != have {
        return Err(ApiError::Conflict {
            kind: t.kind.into(),
            name: name.to_string(),
            detail: "the object has been modified; please apply your changes to the latest version and try again".into(),
        });
    }
    Ok(())
}

fn update(
    shared: &Shared,
    st: &mut State,
    t: &Target<'_>,
    name: &str,
    new: Value,
    old: &Value,
) -> Result<Written, ApiError> {
    precondition(t, name, &new, old)?;
    let new = if t.status_only {
        // The status subresource: the stored object with the new status.
        let mut o = old.clone();
        match new.get("status") {
            Some(s) if !s.is_null() => o["status"] = s.clone(),
            _ => {
                o.as_object_mut().map(|m| m.remove("status"));
            }
        }
        o
    } else {
        new
    };
    let (obj, warnings) = admit(st, t, new, Some(old))?;
    let object = commit(shared, st, t, obj, Some(old));
    Ok(Written {
        object,
        created: false,
        warnings,
    })
}

/// `PUT` to an object.
pub(crate) fn replace(
    shared: &Shared,
    st: &mut State,
    t: &Target<'_>,
    body: Value,
) -> Result<Written, ApiError> {
    let name = t.name.unwrap_or("");
    let old = st
        .objects
        .get(&t.key(name))
        .cloned()
        .ok_or_else(|| t.not_found(name))?;
    update(shared, st, t, name, body, &old)
}

fn patch_error(e: PatchError) -> ApiError {
    match e {
        PatchError::Malformed(m) => ApiError::BadRequest(m),
        PatchError::DoesNotApply(m) => ApiError::PatchDoesNotApply(m),
    }
}

/// `PATCH` to an object; `patch` is the decoded body.
pub(crate) fn apply_patch(
    shared: &Shared,
    st: &mut State,
    t: &Target<'_>,
    kind_of_patch: PatchType,
    patch: Value,
    field_manager: Option<&str>,
) -> Result<Written, ApiError> {
    let name = t.name.unwrap_or("");
    let old = st.objects.get(&t.key(name)).cloned();
    let schema = schema::of(&t.kind);
    let new = match kind_of_patch {
        PatchType::Json => {
            let old = old.as_ref().ok_or_else(|| t.not_found(name))?;
            patch::json_patch(old, &patch).map_err(patch_error)?
        }
        PatchType::Merge => {
            let old = old.as_ref().ok_or_else(|| t.not_found(name))?;
            patch::merge_patch(old, &patch).map_err(patch_error)?
        }
        PatchType::Strategic => {
            if t.kind.custom {
                return Err(unsupported_patch(t.kind));
            }
            let old = old.as_ref().ok_or_else(|| t.not_found(name))?;
            patch::strategic_merge(old, &patch, Some(schema)).map_err(patch_error)?
        }
        PatchType::Apply => {
            if field_manager.is_none_or(str::is_empty) {
                return Err(ApiError::Invalid {
                    kind: PATCH_OPTIONS,
                    name: String::new(),
                    causes: vec![Cause::required(
                        "fieldManager",
                        "is required for apply patch",
                    )],
                    message: None,
                });
            }
            match &old {
                None if t.status_only => return Err(t.not_found(name)),
                None => {
                    if !patch.is_object() {
                        return Err(ApiError::BadRequest(
                            "an apply patch must be an object".into(),
                        ));
                    }
                    let (obj, warnings) = admit(st, t, patch, None)?;
                    let object = commit(shared, st, t, obj, None);
                    return Ok(Written {
                        object,
                        created: true,
                        warnings,
                    });
                }
                Some(old) => {
                    let mut applied = patch;
                    if let Some(m) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
                        // Server-side apply takes no preconditions from the
                        // configuration's metadata but the name.
                        m.remove("resourceVersion");
                    }
                    patch::strategic_merge(old, &applied, Some(schema)).map_err(patch_error)?
                }
            }
        }
    };
    let old = old.ok_or_else(|| t.not_found(name))?;
    let (depth, _) = patch::measure(&new);
    if depth > patch::MAX_DEPTH {
        return Err(patch_error(PatchError::DoesNotApply(format!(
            "the patched object is nested deeper than {} levels",
            patch::MAX_DEPTH
        ))));
    }
    update(shared, st, t, name, new, &old)
}

/// The 415 the real server gives for a strategic merge patch to a custom
/// resource.
pub(crate) fn unsupported_patch(kind: Kind) -> ApiError {
    let mut accepted = vec![
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ];
    if !kind.custom {
        accepted.push("application/strategic-merge-patch+json");
    }
    ApiError::UnsupportedMediaType(format!(
        "the body of the request was in an unknown format - accepted media types include: {}",
        accepted.join(", ")
    ))
}

/// Removes a stored object and sends DELETED; the object as deleted.
pub(crate) fn remove_stored(
    shared: &Shared,
    st: &mut State,
    kind: Kind,
    key: &(&'static str, String, String),
) -> Option<Value> {
    let mut obj = st.objects.remove(key)?;
    st.rv += 1;
    obj["metadata"]["resourceVersion"] = st.rv.to_string().into();
    record(shared, st, kind, "DELETED", obj.clone());
    Some(obj)
}

/// `DELETE` of an object, with `DeleteOptions` preconditions. Deletion is
/// immediate (no graceful termination, no finalizers); a namespace takes
/// its objects with it.
pub(crate) fn delete(
    shared: &Shared,
    st: &mut State,
    t: &Target<'_>,
    options: &Value,
) -> Result<Value, ApiError> {
    let name = t.name.unwrap_or("");
    let key = t.key(name);
    let old = st
        .objects
        .get(&key)
        .cloned()
        .ok_or_else(|| t.not_found(name))?;
    if let Some(rv) = options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
    {
        precondition(t, name, &json!({"metadata": {"resourceVersion": rv}}), &old)?;
    }
    if let Some(uid) = options
        .pointer("/preconditions/uid")
        .and_then(Value::as_str)
    {
        let have = old
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        if uid != have {
            return Err(ApiError::Conflict {
                kind: t.kind.into(),
                name: name.to_string(),
                detail: format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                ),
            });
        }
    }
    if t.dry_run {
        return Ok(old);
    }
    if t.kind.kind == "Namespace" {
        let inside: Vec<_> = st
            .objects
            .keys()
            .filter(|(_, ns, _)| ns == name)
            .cloned()
            .collect();
        for k in inside {
            if let Some(kind) = super::kinds::KINDS.iter().find(|x| x.plural == k.0) {
                remove_stored(shared, st, *kind, &k);
            }
        }
    }
    Ok(remove_stored(shared, st, t.kind, &key).unwrap_or(old))
}

#[cfg(test)]
mod tests;
