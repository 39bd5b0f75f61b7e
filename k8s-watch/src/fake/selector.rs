//! `labelSelector` and `fieldSelector` query parameters: parsed once per
//! request, matched against stored objects. Pure.

use serde_json::Value;
use std::collections::BTreeMap;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector(pub Vec<Requirement>);

/// Splits on commas outside parentheses.
fn terms(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced ')' in {text:?}"))?;
            }
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced '(' in {text:?}"));
    }
    out.push(&text[start..]);
    Ok(out)
}

fn check_key(key: &str, term: &str) -> Result<String, String> {
    let key = key.trim();
    let ok = !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(key.to_string())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label key {key:?} in {term:?}"
        ))
    }
}

fn check_value(value: &str, term: &str) -> Result<String, String> {
    let value = value.trim();
    let ok = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label value {value:?} in {term:?}"
        ))
    }
}

fn set_values(rest: &str, term: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: expected (v1,v2) in {term:?}"))?;
    inner
        .split(',')
        .map(|v| check_value(v, term))
        .collect::<Result<Vec<_>, _>>()
}

/// Splits `key in (a,b)` / `key notin (a)` at the operator word.
fn set_operator<'a>(term: &'a str, word: &str) -> Option<(&'a str, &'a str)> {
    let pos = term.find(&format!(" {word}"))?;
    let rest = &term[pos + 1 + word.len()..];
    rest.trim_start()
        .starts_with('(')
        .then(|| (&term[..pos], rest))
}

impl LabelSelector {
    /// Parses the Kubernetes selector syntax: `k=v`, `k==v`, `k!=v`,
    /// `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>n`, `k<n`.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        if text.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for raw in terms(text)? {
            let term = raw.trim();
            if term.is_empty() {
                return Err(format!(
                    "unable to parse requirement: empty term in {text:?}"
                ));
            }
            let req = if let Some((k, rest)) = set_operator(term, "notin") {
                Requirement::NotIn(check_key(k, term)?, set_values(rest, term)?)
            } else if let Some((k, rest)) = set_operator(term, "in") {
                Requirement::In(check_key(k, term)?, set_values(rest, term)?)
            } else if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(check_key(k, term)?, check_value(v, term)?)
            } else if let Some((k, v)) = term.split_once("==") {
                Requirement::Equals(check_key(k, term)?, check_value(v, term)?)
            } else if let Some((k, v)) = term.split_once('=') {
                Requirement::Equals(check_key(k, term)?, check_value(v, term)?)
            } else if let Some((k, v)) = term.split_once('>') {
                let n = v.trim().parse().map_err(|_| {
                    format!("unable to parse requirement: {v:?} is not an integer in {term:?}")
                })?;
                Requirement::GreaterThan(check_key(k, term)?, n)
            } else if let Some((k, v)) = term.split_once('<') {
                let n = v.trim().parse().map_err(|_| {
                    format!("unable to parse requirement: {v:?} is not an integer in {term:?}")
                })?;
                Requirement::LessThan(check_key(k, term)?, n)
            } else if let Some(k) = term.strip_prefix('!') {
                Requirement::DoesNotExist(check_key(k, term)?)
            } else {
                Requirement::Exists(check_key(term, term)?)
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
            Requirement::GreaterThan(k, n) => labels
                .get(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l > *n),
            Requirement::LessThan(k, n) => labels
                .get(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l < *n),
        })
    }

    /// Whether an object's `metadata.labels` satisfy the selector.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let labels: BTreeMap<String, String> = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }
}

/// One `fieldSelector` term: `field=value`, `field==value`, `field!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldTerm {
    pointer: String,
    value: String,
    negate: bool,
}

/// A parsed field selector (the fields kube-apiserver supports for the
/// kinds served here: `metadata.name`, `metadata.namespace`,
/// `spec.nodeName`, `status.phase`, ... any string field by its path).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector(Vec<FieldTerm>);

impl FieldSelector {
    pub fn parse(text: &str) -> Result<FieldSelector, String> {
        let mut out = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, negate) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(format!("invalid selector: {term:?}; expected FIELD=VALUE"));
            };
            out.push(FieldTerm {
                pointer: format!("/{}", field.trim().replace('.', "/")),
                value: value.trim().to_string(),
                negate,
            });
        }
        Ok(FieldSelector(out))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|t| {
            let have = obj
                .pointer(&t.pointer)
                .and_then(Value::as_str)
                .unwrap_or("");
            (have == t.value) != t.negate
        })
    }
}

#[cfg(test)]
mod tests;
