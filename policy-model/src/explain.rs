//! `explain`: the verdict on one flow, which layer took it and why.
//!
//! The verdict is computed from the same resolved map state the kernel
//! holds (the two-step lookup of [`MapState::lookup`]) and from the same L7
//! rule sets the proxy applies, so the model and the datapath cannot
//! disagree by construction of two separate evaluators.

use crate::identity::NumericIdentity;
use crate::l7::{self, L7Parser, L7Rules};
use crate::mapstate::{MapVerdict, PortKey};
use crate::origin::PolicyRef;
use crate::resolve::{Cluster, Contribution, Endpoint, EndpointPolicy, L7Policy};
use crate::rules::{Direction, Protocol};
use serde::Serialize;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// One side of a flow as a user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowPeer {
    /// `namespace/pod`.
    Pod(String),
    /// Any address (a pod's address resolves to that pod).
    Ip(IpAddr),
}

/// An HTTP request to judge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequestSpec {
    pub method: String,
    pub path: String,
    pub host: String,
    pub headers: Vec<(String, String)>,
}

/// A Kafka request to judge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaRequestSpec {
    pub api_key: i16,
    pub api_version: i16,
    pub client_id: Option<String>,
    pub topics: Vec<String>,
}

/// A TLS connection to judge: its ClientHello's SNI and, optionally, one
/// HTTP request sent inside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsRequestSpec {
    pub sni: Option<String>,
    pub http: Option<HttpRequestSpec>,
}

/// The L7 part of a flow question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L7Request {
    Http(HttpRequestSpec),
    Dns {
        name: String,
    },
    Kafka(KafkaRequestSpec),
    /// A TLS connection (served by the HTTP proxy).
    Tls(TlsRequestSpec),
}

impl L7Request {
    fn parser(&self) -> L7Parser {
        match self {
            L7Request::Http(_) => L7Parser::Http,
            L7Request::Dns { .. } => L7Parser::Dns,
            L7Request::Kafka(_) => L7Parser::Kafka,
            L7Request::Tls(_) => L7Parser::Http,
        }
    }
}

/// A question about one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowQuery {
    pub from: FlowPeer,
    pub to: FlowPeer,
    /// The destination address was learned from a DNS answer for this name.
    pub to_fqdn: Option<String>,
    pub protocol: Protocol,
    /// Destination port; the ICMP type for ICMP.
    pub port: u16,
    pub l7: Option<L7Request>,
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allowed,
    Denied,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
        })
    }
}

/// Which layer decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Layer {
    L3,
    L4,
    L7,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::L3 => "L3",
            Layer::L4 => "L4",
            Layer::L7 => "L7",
        })
    }
}

/// A policy as named in a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyName {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl From<&PolicyRef> for PolicyName {
    fn from(r: &PolicyRef) -> Self {
        PolicyName {
            kind: r.kind.to_string(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        }
    }
}

/// One reason behind a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// Whose policy: the source's egress or the destination's ingress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyName>,
    /// Field path of the deciding rule, e.g. `spec.ingress[0]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub message: String,
}

/// What a flow endpoint resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedPeer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    pub identity: NumericIdentity,
    pub identity_labels: String,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub verdict: Verdict,
    pub layer: Layer,
    pub reasons: Vec<Reason>,
    pub source: ResolvedPeer,
    pub destination: ResolvedPeer,
    /// Whether the flow is redirected to the L7 proxy.
    pub redirected: bool,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |p: &ResolvedPeer| match (&p.pod, &p.ip) {
            (Some(pod), _) => pod.clone(),
            (None, Some(ip)) => ip.to_string(),
            _ => "?".into(),
        };
        writeln!(
            f,
            "{} at {}: {} (identity {}) -> {} (identity {}){}",
            self.verdict.to_string().to_uppercase(),
            self.layer,
            name(&self.source),
            self.source.identity,
            name(&self.destination),
            self.destination.identity,
            if self.redirected {
                " [redirected to the L7 proxy]"
            } else {
                ""
            }
        )?;
        for r in &self.reasons {
            let mut line = String::from("  - ");
            if let Some(d) = r.direction {
                line.push_str(&format!("[{d}] "));
            }
            if let Some(p) = &r.policy {
                match &p.namespace {
                    Some(ns) => line.push_str(&format!("{} {}/{}", p.kind, ns, p.name)),
                    None => line.push_str(&format!("{} {}", p.kind, p.name)),
                }
                if let Some(rule) = &r.rule {
                    line.push_str(&format!(" {rule}"));
                }
                line.push_str(": ");
            }
            line.push_str(&r.message);
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// A question that cannot be answered as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("unknown pod {0:?} (not in the topology)")]
    UnknownPod(String),
    #[error("{0}")]
    Invalid(String),
}

struct Side<'a> {
    endpoint: Option<&'a Endpoint>,
    identity: NumericIdentity,
    resolved: ResolvedPeer,
}

fn resolve_side<'a>(cluster: &'a Cluster, peer: &FlowPeer) -> Result<Side<'a>, ExplainError> {
    let (endpoint, ip) = match peer {
        FlowPeer::Pod(name) => (
            Some(
                cluster
                    .endpoint(name)
                    .ok_or_else(|| ExplainError::UnknownPod(name.clone()))?,
            ),
            None,
        ),
        FlowPeer::Ip(ip) => (cluster.endpoint_by_ip(*ip), Some(*ip)),
    };
    let identity = match (endpoint, ip) {
        (Some(e), _) => e.identity,
        (None, Some(ip)) => cluster.identity_of_ip(ip),
        (None, None) => NumericIdentity::WORLD,
    };
    let labels = cluster
        .identity(identity)
        .map(|i| i.describe())
        .unwrap_or_default();
    Ok(Side {
        endpoint,
        identity,
        resolved: ResolvedPeer {
            pod: endpoint.map(|e| e.full_name()),
            ip,
            identity,
            identity_labels: labels,
        },
    })
}

/// One direction's L3/L4 outcome.
struct Check {
    direction: Direction,
    allowed: bool,
    layer: Layer,
    reasons: Vec<Reason>,
    l7: Option<L7Policy>,
}

/// Answers a flow question against a cluster. For a `to_fqdn` question the
/// cluster must have been built with that name learned for the address.
pub fn explain(cluster: &Cluster, q: &FlowQuery) -> Result<Explanation, ExplainError> {
    let src = resolve_side(cluster, &q.from)?;
    let dst = resolve_side(cluster, &q.to)?;
    let proto = match q.protocol {
        Protocol::Any => {
            return Err(ExplainError::Invalid(
                "a flow has one protocol: TCP, UDP, SCTP, ICMP or ICMPv6".into(),
            ));
        }
        p => p.number(),
    };

    let mut checks = Vec::new();
    if let Some(ep) = src.endpoint {
        let pol = cluster.endpoint_policy(ep);
        checks.push(check(
            cluster,
            &pol,
            Direction::Egress,
            dst.identity,
            proto,
            q.port,
        ));
    }
    if let Some(ep) = dst.endpoint {
        let pol = cluster.endpoint_policy(ep);
        checks.push(check(
            cluster,
            &pol,
            Direction::Ingress,
            src.identity,
            proto,
            q.port,
        ));
    }

    let mut reasons = Vec::new();
    if checks.is_empty() {
        reasons.push(Reason {
            direction: None,
            policy: None,
            rule: None,
            message: "neither side is a local endpoint: no policy of this node applies".into(),
        });
        return Ok(Explanation {
            verdict: Verdict::Allowed,
            layer: Layer::L3,
            reasons,
            source: src.resolved,
            destination: dst.resolved,
            redirected: false,
        });
    }
    if let Some(denied) = checks.iter().find(|c| !c.allowed) {
        return Ok(Explanation {
            verdict: Verdict::Denied,
            layer: denied.layer,
            reasons: denied.reasons.clone(),
            source: src.resolved,
            destination: dst.resolved,
            redirected: false,
        });
    }
    let redirected = checks.iter().any(|c| c.l7.is_some());
    let mut layer = checks
        .iter()
        .map(|c| c.layer)
        .max_by_key(|l| *l as u8)
        .unwrap_or(Layer::L3);
    for c in &checks {
        reasons.extend(c.reasons.iter().cloned());
    }
    if redirected {
        for c in &checks {
            let Some(pol) = &c.l7 else { continue };
            let outcome = judge(pol, q.l7.as_ref(), c.direction);
            match outcome {
                L7Outcome::NotGiven => {
                    reasons.push(Reason {
                        direction: Some(c.direction),
                        policy: None,
                        rule: None,
                        message: format!(
                            "redirected to the {} proxy; give the request (e.g. --http-method/--dns-name/--kafka-api-key) to see its L7 verdict",
                            pol.parser
                        ),
                    });
                }
                L7Outcome::Allowed(r) => {
                    layer = Layer::L7;
                    reasons.push(r);
                }
                L7Outcome::Denied(r) => {
                    return Ok(Explanation {
                        verdict: Verdict::Denied,
                        layer: Layer::L7,
                        reasons: vec![r],
                        source: src.resolved,
                        destination: dst.resolved,
                        redirected: true,
                    });
                }
            }
        }
    }
    Ok(Explanation {
        verdict: Verdict::Allowed,
        layer,
        reasons,
        source: src.resolved,
        destination: dst.resolved,
        redirected,
    })
}

fn reason_from(c: &Contribution, direction: Direction, message: String) -> Reason {
    Reason {
        direction: Some(direction),
        policy: c.origin.as_deref().map(PolicyName::from),
        rule: c.origin.as_ref().map(|_| c.rule.clone()),
        message,
    }
}

fn check(
    cluster: &Cluster,
    pol: &EndpointPolicy,
    direction: Direction,
    remote: NumericIdentity,
    proto: u8,
    port: u16,
) -> Check {
    let remote_name = cluster
        .identity(remote)
        .map(|i| i.describe())
        .unwrap_or_else(|| remote.to_string());
    let flow = PortKey::exact(proto, port);
    let towards = match direction {
        Direction::Ingress => "from",
        Direction::Egress => "to",
    };
    match pol.map.lookup(direction, remote, proto, port) {
        Some((key, value)) if value.verdict == MapVerdict::Allow => {
            let layer = if key.port.protocol == 0 {
                Layer::L3
            } else {
                Layer::L4
            };
            let contribs = pol.provenance.get(key).cloned().unwrap_or_default();
            let reasons = contribs
                .iter()
                .filter(|c| !c.deny)
                .map(|c| {
                    if c.origin.is_none() {
                        Reason {
                            direction: Some(direction),
                            policy: None,
                            rule: None,
                            message: format!(
                                "no policy puts this endpoint into default deny for {direction}: allowed"
                            ),
                        }
                    } else {
                        reason_from(
                            c,
                            direction,
                            format!(
                                "allows {direction} {towards} {} ({}) on {}{}",
                                remote_name,
                                c.peer,
                                c.key.port,
                                if c.l7.is_some() { " with L7 rules" } else { "" }
                            ),
                        )
                    }
                })
                .collect();
            Check {
                direction,
                allowed: true,
                layer,
                reasons,
                l7: pol.l7.get(key).cloned(),
            }
        }
        Some((key, _)) => {
            let contribs = pol.provenance.get(key).cloned().unwrap_or_default();
            let layer = if contribs
                .iter()
                .filter(|c| c.deny)
                .all(|c| c.key.port.protocol == 0)
            {
                Layer::L3
            } else {
                Layer::L4
            };
            let mut reasons: Vec<Reason> = contribs
                .iter()
                .filter(|c| c.deny)
                .map(|c| {
                    reason_from(
                        c,
                        direction,
                        format!(
                            "denies {direction} {towards} {} ({}) on {}; deny wins over any allow",
                            remote_name, c.peer, c.key.port
                        ),
                    )
                })
                .collect();
            if reasons.is_empty() {
                reasons.push(Reason {
                    direction: Some(direction),
                    policy: None,
                    rule: None,
                    message: format!("denied on {flow}: {}", pol.warnings.join("; ")),
                });
            }
            Check {
                direction,
                allowed: false,
                layer,
                reasons,
                l7: None,
            }
        }
        None => {
            // Default deny. L4 when the peer is allowed on some other port.
            let peer_known = pol.map.entries.iter().any(|(k, v)| {
                k.direction == direction
                    && (k.identity == remote || k.identity == NumericIdentity::ANY)
                    && v.verdict == MapVerdict::Allow
            });
            let layer = if peer_known { Layer::L4 } else { Layer::L3 };
            let enforcing = pol.enforcing.get(&direction).cloned().unwrap_or_default();
            let mut reasons: Vec<Reason> = enforcing
                .iter()
                .map(|p| Reason {
                    direction: Some(direction),
                    policy: Some(PolicyName::from(p.as_ref())),
                    rule: None,
                    message: format!(
                        "selects the endpoint for {direction} (default deny) and no rule allows {towards} {remote_name} on {flow}{}",
                        if peer_known { " (other ports are allowed)" } else { "" }
                    ),
                })
                .collect();
            dedup_reasons(&mut reasons);
            Check {
                direction,
                allowed: false,
                layer,
                reasons,
                l7: None,
            }
        }
    }
}

fn dedup_reasons(r: &mut Vec<Reason>) {
    let mut seen = Vec::new();
    r.retain(|x| {
        if seen.contains(x) {
            false
        } else {
            seen.push(x.clone());
            true
        }
    });
}

enum L7Outcome {
    NotGiven,
    Allowed(Reason),
    Denied(Reason),
}

fn judge(pol: &L7Policy, req: Option<&L7Request>, direction: Direction) -> L7Outcome {
    let Some(req) = req else {
        return L7Outcome::NotGiven;
    };
    let base = Reason {
        direction: Some(direction),
        policy: None,
        rule: None,
        message: String::new(),
    };
    if req.parser() != pol.parser {
        return L7Outcome::Denied(Reason {
            message: format!(
                "the port is redirected to the {} proxy; a {} request does not parse there and is denied",
                pol.parser,
                req.parser()
            ),
            ..base
        });
    }
    match req {
        L7Request::Tls(t) => return judge_tls(pol, t.sni.as_deref(), t.http.as_ref(), base),
        L7Request::Http(h) if !pol.tls.is_empty() => return judge_tls_plain(pol, h, base),
        _ => {}
    }
    if pol.allow_all {
        return L7Outcome::Allowed(Reason {
            message: format!(
                "an L3/L4 rule without L7 rules also allows this traffic, which cancels the {} rules: every request is allowed",
                pol.parser
            ),
            ..base
        });
    }
    for (rules, origin, path) in &pol.rules {
        if let Some(detail) = l7_allows(rules, req) {
            return L7Outcome::Allowed(Reason {
                policy: Some(PolicyName::from(origin.as_ref())),
                rule: Some(path.clone()),
                message: format!("{} rule allows the request: {detail}", pol.parser),
                ..base
            });
        }
    }
    let names: Vec<String> = pol
        .rules
        .iter()
        .map(|(_, o, p)| format!("{o} {p}"))
        .collect();
    L7Outcome::Denied(Reason {
        message: format!(
            "no {} rule allows the request (rules from: {})",
            pol.parser,
            names.join("; ")
        ),
        ..base
    })
}

/// A TLS connection on an HTTP-redirected port: the side's plan for its
/// SNI, then the HTTP request (if given) against the plan's rules.
fn judge_tls(
    pol: &L7Policy,
    sni: Option<&str>,
    http: Option<&HttpRequestSpec>,
    base: Reason,
) -> L7Outcome {
    let plan = l7::tls::plan_side(
        pol.allow_all,
        &pol.rules,
        &pol.tls,
        l7::tls::ClientStart::Tls { sni },
    );
    match plan {
        Err(why) => L7Outcome::Denied(Reason {
            message: format!("TLS connection closed: {why}"),
            ..base
        }),
        Ok(l7::tls::SidePlan::Splice { why }) => L7Outcome::Allowed(Reason {
            message: format!("TLS passes through without termination: {why}"),
            ..base
        }),
        Ok(l7::tls::SidePlan::Inspect {
            terminate,
            allow_all,
            http: rules,
            ..
        }) => {
            let shown = terminate.map(|t| t.to_string()).unwrap_or_default();
            match http {
                None => L7Outcome::Allowed(Reason {
                    message: format!(
                        "TLS terminated with {shown}; give an HTTP request to see its verdict"
                    ),
                    ..base
                }),
                Some(h) => judge_plan_http(
                    allow_all,
                    &rules,
                    h,
                    &format!("inside TLS terminated with {shown}"),
                    base,
                ),
            }
        }
    }
}

/// A plaintext HTTP request on a port that also has TLS rules: only the
/// rules that apply to plaintext judge it.
fn judge_tls_plain(pol: &L7Policy, h: &HttpRequestSpec, base: Reason) -> L7Outcome {
    match l7::tls::plan_side(
        pol.allow_all,
        &pol.rules,
        &pol.tls,
        l7::tls::ClientStart::Plaintext,
    ) {
        Err(why) => L7Outcome::Denied(Reason {
            message: why,
            ..base
        }),
        Ok(l7::tls::SidePlan::Splice { why }) => L7Outcome::Allowed(Reason {
            message: why,
            ..base
        }),
        Ok(l7::tls::SidePlan::Inspect {
            allow_all, http, ..
        }) => judge_plan_http(allow_all, &http, h, "in plaintext", base),
    }
}

/// One HTTP request against the rule lists of a plan (an entry without
/// rules allows every request).
fn judge_plan_http(
    allow_all: bool,
    rules: &[l7::tls::PlanRules],
    h: &HttpRequestSpec,
    context: &str,
    base: Reason,
) -> L7Outcome {
    if allow_all {
        return L7Outcome::Allowed(Reason {
            message: format!("an L3/L4 rule without L7 rules allows every request {context}"),
            ..base
        });
    }
    let req = L7Request::Http(h.clone());
    for r in rules {
        let detail = match &r.rules {
            None => Some(format!(
                "the rule has no HTTP rules: every request {context} passes"
            )),
            Some(list) => l7_allows(list, &req).map(|d| format!("{d} {context}")),
        };
        if let Some(detail) = detail {
            return L7Outcome::Allowed(Reason {
                policy: Some(PolicyName::from(r.origin.as_ref())),
                rule: Some(r.rule.clone()),
                message: format!("http rule allows the request: {detail}"),
                ..base
            });
        }
    }
    let names: Vec<String> = rules
        .iter()
        .map(|r| format!("{} {}", r.origin, r.rule))
        .collect();
    L7Outcome::Denied(Reason {
        message: format!(
            "no http rule allows the request {context} (rules from: {})",
            names.join("; ")
        ),
        ..base
    })
}

/// Whether one rule list allows the request; `Some(detail)` if it does.
fn l7_allows(rules: &Arc<L7Rules>, req: &L7Request) -> Option<String> {
    match (rules.as_ref(), req) {
        (L7Rules::Http(list), L7Request::Http(h)) => {
            let set = l7::http::HttpRuleSet::compile(list).ok()?;
            let headers: Vec<(&str, &str)> = h
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let view = l7::http::HttpRequest {
                method: &h.method,
                path: &h.path,
                authority: (!h.host.is_empty()).then_some(h.host.as_str()),
                headers: &headers,
            };
            match set.judge(&view) {
                l7::http::HttpVerdict::Allowed { rule, .. } => {
                    Some(format!("http[{rule}] matches {} {}", h.method, h.path))
                }
                l7::http::HttpVerdict::Denied => None,
            }
        }
        (L7Rules::Dns(list), L7Request::Dns { name }) => {
            let set = l7::dns::DnsRuleSet::compile(list).ok()?;
            set.matching_rule(name)
                .map(|i| format!("dns[{i}] matches {name}"))
        }
        (L7Rules::Kafka(list), L7Request::Kafka(k)) => {
            let set = l7::kafka::KafkaRuleSet::compile(list).ok()?;
            let topics: Vec<&str> = k.topics.iter().map(String::as_str).collect();
            let view = l7::kafka::KafkaRequest {
                api_key: k.api_key,
                api_version: k.api_version,
                client_id: k.client_id.as_deref(),
                topics: &topics,
            };
            if set.judge(&view).is_allowed() {
                Some(format!(
                    "kafka api key {} v{} topics [{}]",
                    k.api_key,
                    k.api_version,
                    k.topics.join(",")
                ))
            } else {
                None
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
