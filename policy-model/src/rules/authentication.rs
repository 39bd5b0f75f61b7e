//! Cilium's `authentication` field: which modes ask for mutual
//! authentication, and the loader's warning that such an allow admits
//! nothing here.

use super::rule::{RuleError, rerr};
use crate::api::{self, CiliumPolicy};

/// Whether `authentication` asks for mutual authentication (`required`,
/// `test-always-fail`); `disabled` or absent: no.
pub(super) fn auth_required(
    auth: Option<&api::Authentication>,
    path: &str,
) -> Result<bool, RuleError> {
    match auth.map(|a| a.mode.as_str()) {
        None | Some("disabled") => Ok(false),
        Some("required" | "test-always-fail") => Ok(true),
        Some(other) => Err(rerr(
            format!("{path}.authentication.mode"),
            format!("{other:?} is not a mode (disabled, required, test-always-fail)"),
        )),
    }
}

/// What the loader says about rules that ask for mutual authentication:
/// one message per allow entry, naming its path.
pub fn authentication_warnings(cp: &CiliumPolicy) -> Vec<String> {
    let mut out = Vec::new();
    let mut specs: Vec<(String, &api::Rule)> = Vec::new();
    if let Some(s) = &cp.spec {
        specs.push(("spec".into(), s));
    }
    for (i, s) in cp.specs.iter().flatten().enumerate() {
        specs.push((format!("specs[{i}]"), s));
    }
    for (path, r) in specs {
        let ingress = r
            .ingress
            .iter()
            .flatten()
            .map(|e| e.authentication.as_ref());
        let egress = r.egress.iter().flatten().map(|e| e.authentication.as_ref());
        for (field, auths) in [
            ("ingress", ingress.collect::<Vec<_>>()),
            ("egress", egress.collect::<Vec<_>>()),
        ] {
            for (i, a) in auths.into_iter().enumerate() {
                let p = format!("{path}.{field}[{i}]");
                if let Some(a) = a
                    && auth_required(Some(a), &p).unwrap_or(false)
                {
                    out.push(format!(
                        "{p}.authentication: mode {:?} needs mutual authentication, which \
                         portcullis does not do; this rule allows nothing (Cilium drops \
                         unauthenticated traffic the same way)",
                        a.mode
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
