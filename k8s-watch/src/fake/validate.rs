//! The checks every write passes (names, labels), and the validator hook
//! the lab plugs in, with [`policy_validator`]: the watcher's own
//! judgement of policy objects.

use crate::convert::{object_key, raw_policy};
use crate::store::{self, Event, Resource, Store, Update};
use policy_model::rules::PolicyKind;
use serde_json::Value;
use std::sync::Arc;

use super::status::Cause;

/// Called on the object every write would store; `Err(message)` refuses
/// the write with `422 Invalid`.
pub type Validator = Arc<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;

fn is_alnum_lower(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63.
pub(crate) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && is_alnum_lower(b[0])
        && is_alnum_lower(b[b.len() - 1])
        && b.iter().all(|&c| is_alnum_lower(c) || c == b'-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && is_alnum_lower(b[0])
                && is_alnum_lower(b[b.len() - 1])
                && b.iter().all(|&c| is_alnum_lower(c) || c == b'-')
        })
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

const SUBDOMAIN_RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_RULE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const KEY_RULE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]'), with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";
const VALUE_RULE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// The object's name: required, a DNS label for namespaces and a DNS
/// subdomain for everything else.
pub(crate) fn check_name(name: Option<&str>, dns_label: bool) -> Vec<Cause> {
    match name {
        None | Some("") => vec![Cause::required(
            "metadata.name",
            "name or generateName is required",
        )],
        Some(n) if dns_label && !is_dns_label(n) => {
            vec![Cause::invalid("metadata.name", n, LABEL_RULE)]
        }
        Some(n) if !dns_label && !is_dns_subdomain(n) => {
            vec![Cause::invalid("metadata.name", n, SUBDOMAIN_RULE)]
        }
        Some(_) => Vec::new(),
    }
}

/// `metadata.labels`: qualified-name keys and label values.
pub(crate) fn check_labels(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) else {
        return causes;
    };
    for (k, v) in labels {
        let key_ok = match k.split_once('/') {
            Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
            None => is_label_name(k),
        };
        if !key_ok {
            causes.push(Cause::invalid("metadata.labels", k, KEY_RULE));
        }
        let value = v.as_str().unwrap_or_default();
        if !(value.is_empty() || is_label_name(value)) {
            causes.push(Cause::invalid("metadata.labels", value, VALUE_RULE));
        }
    }
    causes
}

fn policy_kind(obj: &Value) -> Option<PolicyKind> {
    match obj.get("kind").and_then(Value::as_str)? {
        "NetworkPolicy" => Some(PolicyKind::NetworkPolicy),
        "CiliumNetworkPolicy" => Some(PolicyKind::CiliumNetworkPolicy),
        "CiliumClusterwideNetworkPolicy" => Some(PolicyKind::CiliumClusterwideNetworkPolicy),
        _ => None,
    }
}

/// A validator that judges NetworkPolicy, CiliumNetworkPolicy and
/// CiliumClusterwideNetworkPolicy objects exactly as the watcher does (it
/// runs the watcher's own conversion and [`Store`]), so a policy the
/// agents would refuse is refused at the API with the same reason. Other
/// kinds pass.
pub fn policy_validator() -> Validator {
    Arc::new(|obj: &Value| {
        let Some(kind) = policy_kind(obj) else {
            return Ok(());
        };
        let object: kube::api::DynamicObject = serde_json::from_value(obj.clone())
            .map_err(|e| format!("not a Kubernetes object: {e}"))?;
        let raw = raw_policy(kind, &object);
        let rv = raw.resource_version.clone();
        let key = object_key(raw.namespace.as_deref(), &raw.name);
        let mut judge = Store::new("");
        judge.apply(Update {
            resource: Resource::Policy(kind),
            event: Event::Apply {
                key,
                value: store::Value::Policy(raw),
            },
        });
        let verdict = judge.snapshot().status.into_iter().next();
        match verdict {
            Some(s) if !s.valid => {
                let reason = s.reason.unwrap_or_default();
                // The store words it for a status line; the API message
                // wants the load errors alone.
                let prefix = format!("resourceVersion {rv} is invalid: ");
                let inner = reason
                    .strip_prefix(&prefix)
                    .and_then(|r| r.split("; no valid version to keep").next())
                    .unwrap_or(&reason);
                Err(inner.to_string())
            }
            _ => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests;
