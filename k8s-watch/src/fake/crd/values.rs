//! The value checks of a CRD's `openAPIV3Schema`, run on a custom
//! resource after decoding (types checked, unknown fields pruned), as the
//! API server does: `enum`, bounds, lengths, `pattern`, `format: cidr`,
//! `required`, item and property counts, duplicate items of `set` and
//! `map` lists, and `oneOf`/`anyOf`/`allOf`/`not`. Each failure is a
//! [`Cause`] naming the field's path (`spec.ingress[0].toPorts[0].ports[0].port`)
//! in the API server's words.
//!
//! Not checked: CEL rules (`x-kubernetes-validations`), formats other than
//! `cidr`, `default` (the fake applies no defaults).

use crate::fake::status::Cause;
use serde_json::Value;

/// Every failure of `value` against `schema`, a CRD's `openAPIV3Schema`
/// (or any node of it, at `path`).
pub(crate) fn check(schema: &Value, value: &Value, path: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    walk(schema, value, path, &mut out);
    out
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// A value as the API server quotes it: strings quoted, numbers bare.
fn shown(v: &Value) -> String {
    match v {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        v => v.to_string(),
    }
}

fn invalid(path: &str, value: &Value, detail: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {}: {detail}", shown(value)),
        field: path.into(),
    }
}

fn number(schema: &Value, key: &str) -> Option<f64> {
    schema.get(key).and_then(Value::as_f64)
}

fn count(schema: &Value, key: &str) -> Option<usize> {
    schema
        .get(key)
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
}

fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<Cause>) {
    if value.is_null() {
        return;
    }
    let at = if path.is_empty() { "<root>" } else { path };
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        out.push(Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {}: supported values: {}",
                shown(value),
                list.join(", ")
            ),
            field: path.into(),
        });
    }
    match value {
        Value::Number(n) => numeric(schema, value, n.as_f64().unwrap_or(0.0), at, out),
        Value::String(s) => string(schema, value, s, at, out),
        Value::Array(items) => array(schema, items, path, at, out),
        Value::Object(map) => object(schema, map, path, at, out),
        Value::Bool(_) | Value::Null => {}
    }
    combinators(schema, value, path, at, out);
}

fn numeric(schema: &Value, value: &Value, n: f64, at: &str, out: &mut Vec<Cause>) {
    let exclusive = |k: &str| schema.get(k) == Some(&Value::Bool(true));
    if let Some(min) = number(schema, "minimum") {
        if exclusive("exclusiveMinimum") && n <= min {
            out.push(invalid(
                at,
                value,
                format!("{at} in body should be greater than {min}"),
            ));
        } else if n < min {
            out.push(invalid(
                at,
                value,
                format!("{at} in body should be greater than or equal to {min}"),
            ));
        }
    }
    if let Some(max) = number(schema, "maximum") {
        if exclusive("exclusiveMaximum") && n >= max {
            out.push(invalid(
                at,
                value,
                format!("{at} in body should be less than {max}"),
            ));
        } else if n > max {
            out.push(invalid(
                at,
                value,
                format!("{at} in body should be less than or equal to {max}"),
            ));
        }
    }
}

fn string(schema: &Value, value: &Value, s: &str, at: &str, out: &mut Vec<Cause>) {
    let len = s.chars().count();
    if let Some(max) = count(schema, "maxLength")
        && len > max
    {
        out.push(Cause {
            reason: "FieldValueTooLong",
            message: format!("Too long: may not be more than {max} bytes"),
            field: at.into(),
        });
    }
    if let Some(min) = count(schema, "minLength")
        && len < min
    {
        out.push(invalid(
            at,
            value,
            format!("{at} in body should be at least {min} chars long"),
        ));
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        // Patterns compiled when the CRD loaded (crd::check_node).
        let matches = regex::Regex::new(p).is_ok_and(|re| re.is_match(s));
        if !matches {
            out.push(invalid(
                at,
                value,
                format!("{at} in body should match '{p}'"),
            ));
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("cidr") && !is_cidr(s) {
        out.push(invalid(
            at,
            value,
            format!("{at} in body must be of type cidr: {value}"),
        ));
    }
}

/// `ADDRESS/PREFIX` with the prefix in range for the address family (Go's
/// `net.ParseCIDR`, which the API server's `cidr` format uses).
pub(crate) fn is_cidr(s: &str) -> bool {
    let Some((addr, prefix)) = s.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

fn array(schema: &Value, items: &[Value], path: &str, at: &str, out: &mut Vec<Cause>) {
    if let Some(max) = count(schema, "maxItems")
        && items.len() > max
    {
        out.push(Cause {
            reason: "FieldValueTooMany",
            message: format!("Too many: {}: must have at most {max} items", items.len()),
            field: at.into(),
        });
    }
    if let Some(min) = count(schema, "minItems")
        && items.len() < min
    {
        out.push(invalid(
            at,
            &Value::from(items.len()),
            format!("{at} in body should have at least {min} items"),
        ));
    }
    let keys: Vec<&str> = schema
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|k| k.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let identity = |item: &Value| -> Value {
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => Value::Array(keys.iter().map(|k| item[*k].clone()).collect()),
            _ => item.clone(),
        }
    };
    if matches!(
        schema.get("x-kubernetes-list-type").and_then(Value::as_str),
        Some("set" | "map")
    ) {
        for (i, item) in items.iter().enumerate() {
            if items[..i]
                .iter()
                .any(|earlier| identity(earlier) == identity(item))
            {
                out.push(Cause {
                    reason: "FieldValueDuplicate",
                    message: format!("Duplicate value: {}", shown(&identity(item))),
                    field: format!("{path}[{i}]"),
                });
            }
        }
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            walk(item_schema, item, &format!("{path}[{i}]"), out);
        }
    }
}

fn object(
    schema: &Value,
    map: &serde_json::Map<String, Value>,
    path: &str,
    at: &str,
    out: &mut Vec<Cause>,
) {
    for r in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if map.get(r).is_none_or(Value::is_null) {
            out.push(Cause {
                reason: "FieldValueRequired",
                message: "Required value".into(),
                field: join(path, r),
            });
        }
    }
    let n = map.len();
    if let Some(max) = count(schema, "maxProperties")
        && n > max
    {
        out.push(invalid(
            at,
            &Value::from(n),
            format!("{at} in body should have at most {max} properties"),
        ));
    }
    if let Some(min) = count(schema, "minProperties")
        && n < min
    {
        out.push(invalid(
            at,
            &Value::from(n),
            format!("{at} in body should have at least {min} properties"),
        ));
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in map {
            if let Some(s) = props.get(k) {
                walk(s, v, &join(path, k), out);
            }
        }
    } else if let Some(s) = schema.get("additionalProperties").filter(|s| s.is_object()) {
        for (k, v) in map {
            walk(s, v, &join(path, k), out);
        }
    }
}

fn combinators(schema: &Value, value: &Value, path: &str, at: &str, out: &mut Vec<Cause>) {
    let passes = |branch: &Value| check(branch, value, path).is_empty();
    if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
        let valid = branches.iter().filter(|b| passes(b)).count();
        if valid != 1 {
            let found = match valid {
                0 => "Found none valid".to_string(),
                n => format!("Found {n} valid alternatives"),
            };
            out.push(invalid(
                at,
                value,
                format!("{at} in body must validate one and only one schema (oneOf). {found}"),
            ));
        }
    }
    if let Some(branches) = schema.get("anyOf").and_then(Value::as_array)
        && !branches.iter().any(passes)
    {
        out.push(invalid(
            at,
            value,
            format!("{at} in body must validate at least one schema (anyOf)"),
        ));
    }
    for branch in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        walk(branch, value, path, out);
    }
    if let Some(branch) = schema.get("not")
        && passes(branch)
    {
        out.push(invalid(
            at,
            value,
            format!("{at} in body must not validate the schema (not)"),
        ));
    }
}

#[cfg(test)]
mod tests;
