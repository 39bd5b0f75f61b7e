//! TLS on a redirected port: `serverNames`, `terminatingTLS` and
//! `originatingTLS` (Cilium's `PortRule` fields), and the pure decision of
//! what the proxy does with one connection on one side of a flow.
//!
//! Semantics (Cilium's, with one deliberate deviation noted below):
//! - `serverNames`: the connection must be TLS and its ClientHello must
//!   name one of them (SNI, case-insensitive; a leading `*.` label matches
//!   one or more labels). Without termination the bytes pass untouched.
//! - `terminatingTLS`: the proxy terminates TLS with the secret's
//!   certificate and key (`tls.crt`/`tls.key` unless `certificate`/
//!   `privateKey` name other items) and applies the port's HTTP rules to
//!   the plaintext. Deviation: a client certificate is required and checked
//!   only when the policy names `trustedCA` explicitly; an implicit
//!   `ca.crt` in the secret is not a client-CA (cert-manager puts `ca.crt`
//!   into every secret it issues, and Cilium users report that reusing such
//!   a secret for termination breaks every client that has no certificate).
//! - `originatingTLS`: the proxy connects upstream with TLS, verifying the
//!   server against the secret's `ca.crt` (or the item `trustedCA` names),
//!   and with the system's trust store when the secret has no CA, as
//!   Cilium does; `tls.crt`/`tls.key`, when present, are offered as the
//!   client certificate.
//!
//! Rules are OR-ed per port as everywhere else; a rule's `serverNames`
//! limit which connections its HTTP rules and TLS contexts apply to.

use std::fmt;
use std::sync::Arc;

use super::L7Rules;
use crate::origin::PolicyRef;

/// A reference to a secret holding TLS material, as written in a policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TlsContextRef {
    /// `None`: the namespace of the policy (`default` for cluster-wide
    /// policies), resolved with [`TlsContextRef::resolve`].
    pub namespace: Option<String>,
    pub name: String,
    /// Item of the secret with the trusted CA bundle; `None` = `ca.crt` if
    /// present.
    pub trusted_ca: Option<String>,
    /// Item with the certificate chain; `None` = `tls.crt` if present.
    pub certificate: Option<String>,
    /// Item with the private key; `None` = `tls.key` if present.
    pub private_key: Option<String>,
}

impl TlsContextRef {
    /// This reference with its namespace filled in for a rule of `origin`.
    pub fn resolve(&self, origin: &PolicyRef) -> ResolvedTlsContext {
        let namespace = self
            .namespace
            .clone()
            .or_else(|| origin.namespace.clone())
            .unwrap_or_else(|| "default".to_string());
        ResolvedTlsContext {
            namespace,
            name: self.name.clone(),
            trusted_ca: self.trusted_ca.clone(),
            certificate: self.certificate.clone(),
            private_key: self.private_key.clone(),
        }
    }
}

/// A TLS context whose secret namespace is known: what the proxy loads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResolvedTlsContext {
    pub namespace: String,
    pub name: String,
    pub trusted_ca: Option<String>,
    pub certificate: Option<String>,
    pub private_key: Option<String>,
}

impl fmt::Display for ResolvedTlsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "secret {}/{}", self.namespace, self.name)
    }
}

/// The TLS settings of one `toPorts` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortTls {
    /// Lowercase; empty = any (or no) SNI.
    pub server_names: Vec<String>,
    pub terminating: Option<TlsContextRef>,
    pub originating: Option<TlsContextRef>,
}

impl PortTls {
    /// Whether the rule applies only to connections that start with TLS.
    pub fn expects_client_tls(&self) -> bool {
        !self.server_names.is_empty() || self.terminating.is_some()
    }

    /// Whether `sni` satisfies `serverNames` (always, when it is empty).
    pub fn sni_matches(&self, sni: Option<&str>) -> bool {
        if self.server_names.is_empty() {
            return true;
        }
        let Some(sni) = sni else { return false };
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        self.server_names
            .iter()
            .any(|n| server_name_matches(n, &sni))
    }
}

/// `pattern` (lowercase, validated) against a lowercase name.
fn server_name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name.len() > suffix.len() + 1 && name.ends_with(&format!(".{suffix}")),
        None => pattern == name,
    }
}

/// Checks one `serverNames` entry; returns it lowercased.
pub fn validate_server_name(name: &str) -> Result<String, String> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    if lower.is_empty() {
        return Err("an empty server name matches nothing; remove it".into());
    }
    if lower.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    let body = lower.strip_prefix("*.").unwrap_or(&lower);
    for label in body.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!(
                "{name:?} is not a DNS name (letters, digits, '-', '_' per label; \
                 a wildcard only as a leading \"*.\" label)"
            ));
        }
    }
    Ok(lower)
}

/// One allowing rule entry of a redirected port that carries TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRule {
    pub tls: Arc<PortTls>,
    /// The entry's L7 rules (`None`: every request is allowed).
    pub http: Option<Arc<L7Rules>>,
    pub origin: Arc<PolicyRef>,
    /// Field path of the rule entry (`spec.egress[0]`).
    pub rule: String,
}

/// What the client's first bytes showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientStart<'a> {
    /// Not a TLS handshake.
    Plaintext,
    /// A TLS ClientHello, with its SNI if it has one.
    Tls { sni: Option<&'a str> },
}

/// One HTTP rule list that applies to a connection, with where it came
/// from; `rules: None` allows every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRules {
    pub rules: Option<Arc<L7Rules>>,
    pub origin: Arc<PolicyRef>,
    pub rule: String,
}

/// What one side of a flow requires of one connection.
// Built per connection and consumed at once: boxing the large variant
// would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SidePlan {
    /// Pass the bytes through untouched (an allow-all, or a `serverNames`
    /// rule without termination and HTTP rules); `why` is for the log.
    Splice { why: String },
    /// Judge HTTP requests with `http` (OR-ed), on plaintext after
    /// terminating with `terminate` when set; connect upstream with TLS
    /// from `originate` when set.
    Inspect {
        terminate: Option<ResolvedTlsContext>,
        originate: Option<ResolvedTlsContext>,
        /// Every request passes (an L3/L4 allow cancels the L7 rules).
        allow_all: bool,
        http: Vec<PlanRules>,
    },
}

/// Decides what one side's L7 policy (`allow_all`, the plain HTTP `rules`
/// and the TLS rules of the key) requires of a connection that starts as
/// `start`. `Err` says why the connection must be closed.
pub fn plan_side(
    allow_all: bool,
    plain: &[(Arc<L7Rules>, Arc<PolicyRef>, String)],
    tls: &[TlsRule],
    start: ClientStart<'_>,
) -> Result<SidePlan, String> {
    match start {
        ClientStart::Plaintext => {
            if allow_all {
                return Ok(SidePlan::Inspect {
                    terminate: None,
                    originate: None,
                    allow_all: true,
                    http: Vec::new(),
                });
            }
            let mut http: Vec<PlanRules> = plain
                .iter()
                .map(|(r, o, p)| PlanRules {
                    rules: Some(r.clone()),
                    origin: o.clone(),
                    rule: p.clone(),
                })
                .collect();
            let mut originate: Option<Option<ResolvedTlsContext>> =
                (!http.is_empty()).then_some(None);
            for t in tls.iter().filter(|t| !t.tls.expects_client_tls()) {
                let ctx = t.tls.originating.as_ref().map(|c| c.resolve(&t.origin));
                match &originate {
                    Some(existing) if *existing != ctx => {
                        return Err(format!(
                            "{} {}: rules on this port disagree on originatingTLS for plaintext \
                             connections; denying",
                            t.origin, t.rule
                        ));
                    }
                    _ => originate = Some(ctx),
                }
                http.push(PlanRules {
                    rules: t.http.clone(),
                    origin: t.origin.clone(),
                    rule: t.rule.clone(),
                });
            }
            Ok(SidePlan::Inspect {
                terminate: None,
                originate: originate.flatten(),
                allow_all: false,
                http,
            })
        }
        ClientStart::Tls { sni } => {
            if allow_all {
                return Ok(SidePlan::Splice {
                    why: "an L3/L4 rule without L7 rules allows this traffic".into(),
                });
            }
            let shown = sni.unwrap_or("(none)");
            let matching: Vec<&TlsRule> = tls
                .iter()
                .filter(|t| t.tls.expects_client_tls() && t.tls.sni_matches(sni))
                .collect();
            if matching.is_empty() {
                let names: Vec<&str> = tls
                    .iter()
                    .flat_map(|t| t.tls.server_names.iter().map(String::as_str))
                    .collect();
                return Err(if names.is_empty() {
                    "TLS on a port whose rules have no serverNames or terminatingTLS: \
                     the HTTP rules cannot see inside it"
                        .to_string()
                } else {
                    format!("SNI {shown} is not in serverNames [{}]", names.join(", "))
                });
            }
            if let Some(t) = matching
                .iter()
                .find(|t| t.tls.terminating.is_none() && t.http.is_none())
            {
                return Ok(SidePlan::Splice {
                    why: format!("{} {}: serverNames allows SNI {shown}", t.origin, t.rule),
                });
            }
            let terminating: Vec<&&TlsRule> = matching
                .iter()
                .filter(|t| t.tls.terminating.is_some())
                .collect();
            let Some(first) = terminating.first() else {
                return Err(format!(
                    "SNI {shown}: the matching rules have HTTP rules but no terminatingTLS; \
                     encrypted requests cannot be judged"
                ));
            };
            let resolve =
                |t: &TlsRule, c: &Option<TlsContextRef>| c.as_ref().map(|c| c.resolve(&t.origin));
            let terminate = resolve(first, &first.tls.terminating);
            let originate = resolve(first, &first.tls.originating);
            let mut http = Vec::new();
            for t in &terminating {
                if resolve(t, &t.tls.terminating) != terminate
                    || resolve(t, &t.tls.originating) != originate
                {
                    return Err(format!(
                        "SNI {shown}: {} {} and {} {} name different TLS contexts for one \
                         connection; denying",
                        first.origin, first.rule, t.origin, t.rule
                    ));
                }
                http.push(PlanRules {
                    rules: t.http.clone(),
                    origin: t.origin.clone(),
                    rule: t.rule.clone(),
                });
            }
            Ok(SidePlan::Inspect {
                terminate,
                originate,
                allow_all: false,
                http,
            })
        }
    }
}

/// What the proxy does with a connection, both sides combined.
#[allow(clippy::large_enum_variant)] // as SidePlan
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnPlan {
    Splice,
    Inspect {
        terminate: Option<ResolvedTlsContext>,
        originate: Option<ResolvedTlsContext>,
    },
}

/// Combines the sides' plans (each must be satisfiable by one
/// connection): termination and origination happen once, so two sides
/// that name different contexts deny.
pub fn combine_sides(plans: &[&SidePlan], start: ClientStart<'_>) -> Result<ConnPlan, String> {
    let mut terminate: Option<&ResolvedTlsContext> = None;
    let mut originate: Option<Option<&ResolvedTlsContext>> = None;
    let mut inspect = false;
    for plan in plans {
        if let SidePlan::Inspect {
            terminate: t,
            originate: o,
            ..
        } = plan
        {
            inspect = true;
            if let Some(t) = t {
                if terminate.is_some_and(|x| x != t) {
                    return Err(format!(
                        "the two sides of the flow terminate TLS with different contexts \
                         ({} and {t}); denying",
                        terminate.map(ToString::to_string).unwrap_or_default()
                    ));
                }
                terminate = Some(t);
            }
            match originate {
                Some(existing) if existing != o.as_ref() => {
                    return Err(
                        "the two sides of the flow disagree on originatingTLS; denying".into(),
                    );
                }
                _ => originate = Some(o.as_ref()),
            }
        }
    }
    if !inspect {
        return Ok(ConnPlan::Splice);
    }
    if matches!(start, ClientStart::Tls { .. }) && terminate.is_none() {
        // Only reachable with an allow-all Inspect plan for TLS, which
        // plan_side never returns; deny rather than judge ciphertext.
        return Err("TLS connection without a terminating context to inspect it".into());
    }
    Ok(ConnPlan::Inspect {
        terminate: terminate.cloned(),
        originate: originate.flatten().cloned(),
    })
}

#[cfg(test)]
mod tests;
