//! The three patch formats of the Kubernetes API, on JSON values. Pure,
//! and total: hostile input (deep nesting, huge lists, bad pointers,
//! unknown directives) is an error, never a panic.
//!
//! - [`merge_patch`]: RFC 7386 (`application/merge-patch+json`);
//! - [`json_patch`]: RFC 6902 (`application/json-patch+json`), with a
//!   bound on operations, nesting and copied size;
//! - [`strategic_merge`]: `application/strategic-merge-patch+json` as the
//!   API server applies it (`MergeParallelList`, `IgnoreUnmatchedNulls`):
//!   maps merge, `null` deletes, `$patch: replace|delete`, `$retainKeys`,
//!   `$setElementOrder/<list>`, `$deleteFromPrimitiveList/<list>`, lists
//!   merged by their schema's merge key, other lists replaced.

use super::schema::{ListMeta, Schema};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// Operations a JSON patch may hold (the API server's bound).
pub(crate) const MAX_JSON_PATCH_OPS: usize = 10_000;
/// Nesting a patched object may reach.
pub(crate) const MAX_DEPTH: usize = 200;
/// Values (nodes) JSON patch `copy` operations may duplicate in total.
pub(crate) const MAX_COPIED_NODES: usize = 1_000_000;

/// Why a patch was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PatchError {
    /// The patch document itself is malformed (HTTP 400).
    #[error("{0}")]
    Malformed(String),
    /// The patch is well formed but does not apply to the object (422).
    #[error("{0}")]
    DoesNotApply(String),
}

use PatchError::{DoesNotApply, Malformed};

/// The nesting depth and node count of a value, without recursion.
pub(crate) fn measure(v: &Value) -> (usize, usize) {
    let mut stack = vec![(v, 1usize)];
    let (mut depth, mut nodes) = (0, 0);
    while let Some((v, d)) = stack.pop() {
        nodes += 1;
        depth = depth.max(d);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|c| (c, d + 1))),
            Value::Object(m) => stack.extend(m.values().map(|c| (c, d + 1))),
            _ => {}
        }
    }
    (depth, nodes)
}

// ---------------------------------------------------------------- RFC 7386

/// Applies an RFC 7386 merge patch. The patch must be an object (a
/// Kubernetes object cannot be replaced by a scalar or a list).
pub(crate) fn merge_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_object() {
        return Err(Malformed(format!(
            "a merge patch must be a JSON object, got {}",
            kind_of(patch)
        )));
    }
    too_deep(patch)?;
    Ok(merge_value(target.clone(), patch))
}

/// Refuses a patch nested deeper than [`MAX_DEPTH`] (the merges recurse
/// along the patch).
fn too_deep(patch: &Value) -> Result<(), PatchError> {
    if measure(patch).0 > MAX_DEPTH {
        return Err(Malformed(format!(
            "the patch is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(())
}

fn merge_value(target: Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut t = match target {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            let old = t.remove(k).unwrap_or(Value::Null);
            t.insert(k.clone(), merge_value(old, v));
        }
    }
    Value::Object(t)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------- RFC 6902

/// A JSON pointer (RFC 6901), as reference tokens.
fn parse_pointer(p: &str) -> Result<Vec<String>, PatchError> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(Malformed(format!(
            "JSON pointer {p:?} must be empty or start with '/'"
        )));
    };
    rest.split('/')
        .map(|t| {
            let mut out = String::with_capacity(t.len());
            let mut chars = t.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => {
                            return Err(Malformed(format!(
                                "JSON pointer {p:?} has a bad escape ('~' must be followed by 0 or 1)"
                            )));
                        }
                    }
                } else {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .collect()
}

/// An array index token: digits without leading zeros.
fn index(token: &str, len: usize, path: &str) -> Result<usize, PatchError> {
    let well_formed = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    let i = well_formed
        .then(|| token.parse::<usize>().ok())
        .flatten()
        .ok_or_else(|| DoesNotApply(format!("{path}: {token:?} is not an array index")))?;
    if i < len {
        Ok(i)
    } else {
        Err(DoesNotApply(format!(
            "{path}: index {i} is out of range (the list has {len} items)"
        )))
    }
}

fn get<'a>(doc: &'a Value, tokens: &[String], path: &str) -> Result<&'a Value, PatchError> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m
                .get(t)
                .ok_or_else(|| DoesNotApply(format!("{path}: no such field {t:?}")))?,
            Value::Array(a) => &a[index(t, a.len(), path)?],
            _ => return Err(DoesNotApply(format!("{path}: {t:?} is inside a scalar"))),
        };
    }
    Ok(cur)
}

fn get_mut<'a>(
    doc: &'a mut Value,
    tokens: &[String],
    path: &str,
) -> Result<&'a mut Value, PatchError> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(t)
                .ok_or_else(|| DoesNotApply(format!("{path}: no such field {t:?}")))?,
            Value::Array(a) => {
                let i = index(t, a.len(), path)?;
                &mut a[i]
            }
            _ => return Err(DoesNotApply(format!("{path}: {t:?} is inside a scalar"))),
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, tokens: &[String], value: Value, path: &str) -> Result<(), PatchError> {
    let Some((last, parent)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent, path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                // Inserting at len (the end) is allowed.
                let i = index(last, a.len() + 1, path)?;
                a.insert(i, value);
            }
        }
        _ => return Err(DoesNotApply(format!("{path}: the parent is a scalar"))),
    }
    Ok(())
}

fn remove(doc: &mut Value, tokens: &[String], path: &str) -> Result<Value, PatchError> {
    let Some((last, parent)) = tokens.split_last() else {
        return Err(DoesNotApply("cannot remove the whole object".into()));
    };
    match get_mut(doc, parent, path)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| DoesNotApply(format!("{path}: no such field {last:?}"))),
        Value::Array(a) => {
            let i = index(last, a.len(), path)?;
            Ok(a.remove(i))
        }
        _ => Err(DoesNotApply(format!("{path}: the parent is a scalar"))),
    }
}

fn str_field<'a>(op: &'a Map<String, Value>, name: &str, n: usize) -> Result<&'a str, PatchError> {
    op.get(name).and_then(Value::as_str).ok_or_else(|| {
        Malformed(format!(
            "operation {n}: {name:?} is missing or not a string"
        ))
    })
}

/// Applies an RFC 6902 JSON patch.
pub(crate) fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = patch else {
        return Err(Malformed(format!(
            "a JSON patch must be a list of operations, got {}",
            kind_of(patch)
        )));
    };
    if ops.len() > MAX_JSON_PATCH_OPS {
        return Err(Malformed(format!(
            "the JSON patch has {} operations; at most {MAX_JSON_PATCH_OPS} are allowed",
            ops.len()
        )));
    }
    let mut doc = target.clone();
    let mut copied = 0usize;
    for (n, op) in ops.iter().enumerate() {
        let Value::Object(op) = op else {
            return Err(Malformed(format!("operation {n} is not an object")));
        };
        let name = str_field(op, "op", n)?;
        let path = str_field(op, "path", n)?;
        let tokens = parse_pointer(path)?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| Malformed(format!("operation {n} ({name}): \"value\" is missing")))
        };
        let inserted = match name {
            "add" => {
                let v = value()?;
                let depth = measure(&v).0;
                add(&mut doc, &tokens, v, path)?;
                depth
            }
            "remove" => {
                remove(&mut doc, &tokens, path)?;
                0
            }
            "replace" => {
                let v = value()?;
                let depth = measure(&v).0;
                *get_mut(&mut doc, &tokens, path)? = v;
                depth
            }
            "move" => {
                let from = str_field(op, "from", n)?;
                let from_tokens = parse_pointer(from)?;
                if tokens.len() > from_tokens.len() && tokens.starts_with(&from_tokens) {
                    return Err(DoesNotApply(format!(
                        "operation {n}: cannot move {from} into its own child {path}"
                    )));
                }
                let v = remove(&mut doc, &from_tokens, from)?;
                let depth = measure(&v).0;
                add(&mut doc, &tokens, v, path)?;
                depth
            }
            "copy" => {
                let from = str_field(op, "from", n)?;
                let v = get(&doc, &parse_pointer(from)?, from)?;
                let (depth, nodes) = measure(v);
                copied += nodes;
                if copied > MAX_COPIED_NODES {
                    return Err(DoesNotApply(format!(
                        "the JSON patch copies more than {MAX_COPIED_NODES} values"
                    )));
                }
                let v = v.clone();
                add(&mut doc, &tokens, v, path)?;
                depth
            }
            "test" => {
                let want = value()?;
                if get(&doc, &tokens, path)? != &want {
                    return Err(DoesNotApply(format!(
                        "operation {n}: test failed: {path} is not {want}"
                    )));
                }
                0
            }
            other => {
                return Err(Malformed(format!(
                    "operation {n}: unknown op {other:?} (add, remove, replace, move, copy or test)"
                )));
            }
        };
        if tokens.len() + inserted > MAX_DEPTH {
            return Err(DoesNotApply(format!(
                "operation {n}: the object would be nested deeper than {MAX_DEPTH} levels"
            )));
        }
    }
    Ok(doc)
}

// ------------------------------------------------------- strategic merge

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch to an object, with the object's schema
/// for merge keys (`None`: every list is atomic).
pub(crate) fn strategic_merge(
    original: &Value,
    patch: &Value,
    schema: Option<&Schema>,
) -> Result<Value, PatchError> {
    let Value::Object(p) = patch else {
        return Err(Malformed(format!(
            "a strategic merge patch must be a JSON object, got {}",
            kind_of(patch)
        )));
    };
    too_deep(patch)?;
    let o = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    merge_map(o, p.clone(), schema).map(Value::Object)
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: Option<&Schema>,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.remove(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => merge_map(Map::new(), patch, schema),
            Some("delete") => Ok(Map::new()),
            _ => Err(Malformed(format!(
                "unknown $patch directive {directive} in a map (replace or delete)"
            ))),
        };
    }
    if patch.is_empty() {
        return Ok(original);
    }
    if let Some(retain) = patch.remove(RETAIN_KEYS) {
        let Value::Array(keys) = retain else {
            return Err(DoesNotApply(
                "$retainKeys must be a list of field names".into(),
            ));
        };
        let keys: HashSet<&str> = keys.iter().filter_map(Value::as_str).collect();
        for (k, v) in &patch {
            if v.is_null() || k.starts_with(DELETE_FROM) || k.starts_with(SET_ORDER) {
                continue;
            }
            if !keys.contains(k.as_str()) {
                return Err(DoesNotApply(format!(
                    "field {k:?} of the patch is not in its $retainKeys list"
                )));
            }
        }
        original.retain(|k, _| keys.contains(k.as_str()));
    }
    let orders: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ORDER))
        .cloned()
        .collect();
    for key in orders {
        let order = patch.remove(&key).unwrap_or(Value::Null);
        let field = &key[SET_ORDER.len()..];
        let Value::Array(order) = order else {
            return Err(DoesNotApply(format!("{key} must be a list")));
        };
        let field_schema = schema.and_then(|s| s.field(field));
        let merge_key = list_key(field_schema);
        let original_list = match original.get(field) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(_) => return Err(DoesNotApply(format!("{field} is not a list in the object"))),
        };
        let patch_list = match patch.remove(field) {
            None => None,
            Some(Value::Array(a)) => Some(a),
            Some(_) => return Err(DoesNotApply(format!("{field} is not a list in the patch"))),
        };
        if let Some(pl) = &patch_list {
            check_order_covers(pl, &order, merge_key, field)?;
        }
        let merged = match (&original_list, patch_list) {
            (Some(o), None) => o.clone(),
            (None, Some(p)) => merge_list(Vec::new(), p, field_schema, false)?,
            (Some(o), Some(p)) => merge_list(o.clone(), p, field_schema, false)?,
            (None, None) => continue,
        };
        let server_order = original_list.unwrap_or_default();
        let ordered = order_items(merged, &order, &server_order, merge_key)?;
        original.insert(field.to_string(), Value::Array(ordered));
    }
    for (k, patch_v) in patch {
        let (k, delete_list) = match k.strip_prefix(DELETE_FROM) {
            Some(field) => (field.to_string(), true),
            None => (k, false),
        };
        if delete_list {
            let Value::Array(gone) = patch_v else {
                return Err(DoesNotApply(format!("{DELETE_FROM}{k} must be a list")));
            };
            if let Some(Value::Array(list)) = original.get_mut(&k) {
                let gone: HashSet<String> = gone.iter().map(Value::to_string).collect();
                list.retain(|v| !gone.contains(&v.to_string()));
            }
            continue;
        }
        if patch_v.is_null() {
            original.remove(&k);
            continue;
        }
        let field_schema = schema.and_then(|s| s.field(&k));
        let merged = match (original.remove(&k), patch_v) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                Value::Object(merge_map(o, p, field_schema)?)
            }
            (Some(Value::Array(o)), Value::Array(p)) => {
                Value::Array(merge_list(o, p, field_schema, true)?)
            }
            (_, p) => fresh(p, field_schema)?,
        };
        original.insert(k, merged);
    }
    Ok(original)
}

/// A patch value for a field the object does not have (or has with
/// another type): its directives are applied to nothing.
fn fresh(v: Value, schema: Option<&Schema>) -> Result<Value, PatchError> {
    match v {
        Value::Object(p) => merge_map(Map::new(), p, schema).map(Value::Object),
        Value::Array(p) => merge_list(Vec::new(), p, schema, true).map(Value::Array),
        v => Ok(v),
    }
}

/// The merge key of a field's list, `None` for lists of scalars.
fn list_key(field_schema: Option<&Schema>) -> Option<&'static str> {
    match field_schema.and_then(Schema::list).map(|(_, m)| m) {
        Some(ListMeta::MergeKey(k) | ListMeta::MergeKeyRetainKeys(k)) => Some(k),
        _ => None,
    }
}

/// How a list item is identified: its merge key's value, or (scalars) its
/// own value, as canonical JSON text.
fn identity(item: &Value, merge_key: Option<&str>) -> Option<String> {
    match merge_key {
        Some(k) => item.get(k).map(Value::to_string),
        None => Some(item.to_string()),
    }
}

fn check_order_covers(
    patch_list: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
    field: &str,
) -> Result<(), PatchError> {
    let listed: HashSet<String> = order
        .iter()
        .filter_map(|v| identity(v, merge_key))
        .collect();
    for item in patch_list {
        if item.get(DIRECTIVE).is_some() {
            continue;
        }
        match identity(item, merge_key) {
            Some(id) if listed.contains(&id) => {}
            _ => {
                return Err(DoesNotApply(format!(
                    "$setElementOrder/{field} does not list the patch's item {item}"
                )));
            }
        }
    }
    Ok(())
}

fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    field_schema: Option<&Schema>,
    order_by_patch: bool,
) -> Result<Vec<Value>, PatchError> {
    let Some((items, meta)) = field_schema.and_then(Schema::list) else {
        return Ok(patch);
    };
    let merge_key = match meta {
        ListMeta::Atomic => return Ok(patch),
        ListMeta::Set => None,
        ListMeta::MergeKey(k) | ListMeta::MergeKeyRetainKeys(k) => Some(k),
    };
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let maps = original
        .iter()
        .chain(&patch)
        .filter(|v| v.is_object())
        .count();
    let lists = original
        .iter()
        .chain(&patch)
        .filter(|v| v.is_array())
        .count();
    let total = original.len() + patch.len();
    if lists > 0 || (maps > 0 && maps != total) {
        return Err(DoesNotApply(
            "a merged list must hold only objects or only scalars".into(),
        ));
    }
    if maps == 0 {
        // Scalars: a set union in order.
        let order = patch.clone();
        let mut seen = HashSet::new();
        let merged: Vec<Value> = original
            .iter()
            .cloned()
            .chain(patch)
            .filter(|v| seen.insert(v.to_string()))
            .collect();
        return if order_by_patch {
            order_items(merged, &order, &original, None)
        } else {
            Ok(merged)
        };
    }
    let Some(key) = merge_key else {
        return Err(DoesNotApply(
            "cannot merge a list of objects without a merge key".into(),
        ));
    };
    let mut original = original;
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        match item.get(DIRECTIVE).map(|d| d.as_str()) {
            None => plain.push(item),
            Some(Some("delete")) => {
                let Some(id) = item.get(key).map(Value::to_string) else {
                    return Err(DoesNotApply(format!(
                        "{item} does not contain the merge key {key:?}"
                    )));
                };
                original.retain(|o| o.get(key).map(Value::to_string).as_ref() != Some(&id));
            }
            Some(Some("replace")) => replace = true,
            Some(Some("merge")) => {
                return Err(DoesNotApply(
                    "$patch: merge is not supported in lists".into(),
                ));
            }
            Some(d) => {
                return Err(Malformed(format!(
                    "unknown $patch directive {:?} in a list",
                    d.unwrap_or("(not a string)")
                )));
            }
        }
    }
    if replace {
        return plain
            .into_iter()
            .map(|v| fresh(v, Some(items)))
            .collect::<Result<Vec<_>, _>>();
    }
    let mut positions: HashMap<String, usize> = HashMap::new();
    for (i, o) in original.iter().enumerate() {
        if let Some(id) = o.get(key).map(Value::to_string) {
            positions.entry(id).or_insert(i);
        }
    }
    let server_order = original.clone();
    let mut merged = original;
    for item in &plain {
        let Some(id) = item.get(key).map(Value::to_string) else {
            return Err(DoesNotApply(format!(
                "{item} does not contain the merge key {key:?}"
            )));
        };
        let Value::Object(p) = item.clone() else {
            continue;
        };
        match positions.get(&id) {
            Some(&i) => {
                let o = match std::mem::take(&mut merged[i]) {
                    Value::Object(o) => o,
                    _ => Map::new(),
                };
                merged[i] = Value::Object(merge_map(o, p, Some(items))?);
            }
            None => {
                positions.insert(id, merged.len());
                merged.push(Value::Object(merge_map(Map::new(), p, Some(items))?));
            }
        }
    }
    if order_by_patch {
        order_items(merged, &plain, &server_order, Some(key))
    } else {
        Ok(merged)
    }
}

/// The API server's ordering of a merged list: items named in `order`
/// (the patch, or `$setElementOrder`) in that order, the server-only
/// items in their server order, interleaved where the server order
/// relates them.
fn order_items(
    merged: Vec<Value>,
    order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
) -> Result<Vec<Value>, PatchError> {
    let rank = |list: &[Value]| -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (i, v) in list.iter().enumerate() {
            if let Some(id) = identity(v, merge_key) {
                m.entry(id).or_insert(i);
            }
        }
        m
    };
    let patch_rank = rank(order);
    let server_rank = rank(server_order);
    // (rank, item): a position in `order`, or in the server order.
    let mut from_patch: Vec<(usize, Value)> = Vec::new();
    let mut server_only: Vec<(usize, Value)> = Vec::new();
    for v in merged {
        let id = identity(&v, merge_key);
        match id.as_ref().and_then(|id| patch_rank.get(id)) {
            Some(&r) => from_patch.push((r, v)),
            None => {
                let r = id
                    .as_ref()
                    .and_then(|id| server_rank.get(id))
                    .copied()
                    .unwrap_or(usize::MAX);
                server_only.push((r, v));
            }
        }
    }
    from_patch.sort_by_key(|(r, _)| *r);
    server_only.sort_by_key(|(r, _)| *r);
    let server_pos =
        |v: &Value| identity(v, merge_key).and_then(|id| server_rank.get(&id).copied());
    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().map(|(_, v)| v).peekable();
    let mut right = from_patch.into_iter().map(|(_, v)| v).peekable();
    loop {
        match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => {
                let before = match (server_pos(l), server_pos(r)) {
                    (Some(a), Some(b)) => a < b,
                    _ => false,
                };
                if before {
                    out.extend(left.next());
                } else {
                    out.extend(right.next());
                }
            }
            (Some(_), None) => out.extend(left.next()),
            (None, Some(_)) => out.extend(right.next()),
            (None, None) => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
