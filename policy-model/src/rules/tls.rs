//! The TLS settings of a `toPorts` entry (`serverNames`,
//! `terminatingTLS`, `originatingTLS`), validated into a [`PortTls`].

use super::rule::{RuleError, rerr};
use crate::api::{self, PortRule};
use crate::l7::tls::{PortTls, TlsContextRef, validate_server_name};
use crate::l7::{L7Parser, L7Rules};
use std::sync::Arc;

/// The TLS settings of a `toPorts` entry, validated: `serverNames` are DNS
/// names (a leading `*.` allowed), each TLS context names a secret, and
/// TLS goes only with HTTP rules (or none).
pub(super) fn port_tls(
    pr: &PortRule,
    l7: Option<&L7Rules>,
    path: &str,
) -> Result<Option<Arc<PortTls>>, RuleError> {
    if pr.server_names.is_none() && pr.terminating_tls.is_none() && pr.originating_tls.is_none() {
        return Ok(None);
    }
    if let Some(rules) = l7
        && rules.parser() != L7Parser::Http
    {
        return Err(rerr(
            format!("{path}.rules"),
            format!(
                "serverNames / TLS settings go with HTTP rules (or none), not {} rules",
                rules.parser()
            ),
        ));
    }
    let mut server_names = Vec::new();
    for (i, n) in pr.server_names.iter().flatten().enumerate() {
        let name =
            validate_server_name(n).map_err(|e| rerr(format!("{path}.serverNames[{i}]"), e))?;
        server_names.push(name);
    }
    let context = |c: &Option<api::TlsContext>,
                   field: &str|
     -> Result<Option<TlsContextRef>, RuleError> {
        let Some(c) = c else { return Ok(None) };
        let Some(secret) = &c.secret else {
            return Err(rerr(
                format!("{path}.{field}.secret"),
                "a TLS context needs `secret: {name: ..., namespace: ...}`;                  portcullis loads certificates only from secrets",
            ));
        };
        if secret.name.is_empty() {
            return Err(rerr(
                format!("{path}.{field}.secret.name"),
                "the secret name is empty",
            ));
        }
        let item = |v: &Option<String>, f: &str| -> Result<Option<String>, RuleError> {
            match v.as_deref() {
                None | Some("") => Ok(None),
                Some(s) if s.contains('/') || s == "." || s == ".." => Err(rerr(
                    format!("{path}.{field}.{f}"),
                    format!("{s:?} is not a secret item name"),
                )),
                Some(s) => Ok(Some(s.to_string())),
            }
        };
        for (n, v) in [
            ("secret.name", Some(&secret.name)),
            ("secret.namespace", secret.namespace.as_ref()),
        ] {
            if let Some(v) = v
                && (v.contains('/') || v == "." || v == "..")
            {
                return Err(rerr(
                    format!("{path}.{field}.{n}"),
                    format!("{v:?} is not a Kubernetes object name"),
                ));
            }
        }
        Ok(Some(TlsContextRef {
            namespace: secret.namespace.clone().filter(|n| !n.is_empty()),
            name: secret.name.clone(),
            trusted_ca: item(&c.trusted_ca, "trustedCA")?,
            certificate: item(&c.certificate, "certificate")?,
            private_key: item(&c.private_key, "privateKey")?,
        }))
    };
    Ok(Some(Arc::new(PortTls {
        server_names,
        terminating: context(&pr.terminating_tls, "terminatingTLS")?,
        originating: context(&pr.originating_tls, "originatingTLS")?,
    })))
}

#[cfg(test)]
mod tests;
