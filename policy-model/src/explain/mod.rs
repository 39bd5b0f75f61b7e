//! `explain`: the verdict on one flow, which layer took it and why.
//!
//! The verdict is computed from the same resolved map state the kernel
//! holds (the two-step lookup of [`MapState::lookup`]) and from the same L7
//! rule sets the proxy applies, so the model and the datapath cannot
//! disagree by construction of two separate evaluators.

mod l7;
mod query;

pub use query::{
    ExplainError, Explanation, FlowPeer, FlowQuery, HttpRequestSpec, KafkaRequestSpec, L7Request,
    Layer, PolicyName, Reason, ResolvedPeer, TlsRequestSpec, Verdict,
};

use self::l7::{L7Outcome, judge};
use crate::identity::NumericIdentity;
use crate::mapstate::{MapVerdict, PortKey};
use crate::resolve::{Cluster, Contribution, Endpoint, EndpointPolicy, L7Policy};
use crate::rules::{Direction, Protocol};

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
    /// Allowed, but an audited policy would drop it: why.
    audit: Vec<Reason>,
}

/// Answers a flow question against a cluster. For a `to_fqdn` question the
/// cluster must have been built with that name learned for the address.
pub fn explain(cluster: &Cluster, q: &FlowQuery) -> Result<Explanation, ExplainError> {
    let src = resolve_side(cluster, &q.from)?;
    let dst = resolve_side(cluster, &q.to)?;
    let proto = match q.protocol {
        Protocol::Any => {
            return Err(ExplainError::Invalid(
                "a flow has one protocol: TCP, UDP, SCTP, ICMP, ICMPv6 or one of VRRP, IGMP, GRE, IPIP, IPV6, ESP, AH".into(),
            ));
        }
        p if p.is_extended() && q.port != 0 => {
            return Err(ExplainError::Invalid(format!(
                "{p} has no ports: the port must be 0 (the datapath looks it up with port 0)"
            )));
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
            audit: Vec::new(),
        });
    }
    // A side in an audited namespace passes what its policy denies.
    let side_audited = |d: Direction| {
        let ep = match d {
            Direction::Egress => src.endpoint,
            Direction::Ingress => dst.endpoint,
        };
        ep.is_some_and(|e| namespace_audited(cluster, &e.namespace))
    };
    let mut ns_audit = Vec::new();
    for c in checks.iter_mut().filter(|c| !c.allowed) {
        if side_audited(c.direction) {
            c.allowed = true;
            ns_audit.extend(c.reasons.drain(..).map(namespace_audit_reason));
        }
    }
    if let Some(denied) = checks.iter().find(|c| !c.allowed) {
        return Ok(Explanation {
            verdict: Verdict::Denied,
            layer: denied.layer,
            reasons: denied.reasons.clone(),
            source: src.resolved,
            destination: dst.resolved,
            redirected: false,
            audit: Vec::new(),
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
    let mut audit_l7 = Vec::new();
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
                    let audited = pol
                        .audit
                        .as_deref()
                        .map(|a| judge(a, q.l7.as_ref(), c.direction));
                    if let Some(L7Outcome::Denied(r)) = audited {
                        audit_l7.push(Reason {
                            message: format!(
                                "audit mode: {}: would be denied, passes as AUDIT",
                                r.message
                            ),
                            ..r
                        });
                    }
                }
                L7Outcome::Denied(r) if side_audited(c.direction) => {
                    layer = Layer::L7;
                    ns_audit.push(namespace_audit_reason(r));
                }
                L7Outcome::Denied(r) => {
                    return Ok(Explanation {
                        verdict: Verdict::Denied,
                        layer: Layer::L7,
                        reasons: vec![r],
                        source: src.resolved,
                        destination: dst.resolved,
                        redirected: true,
                        audit: Vec::new(),
                    });
                }
            }
        }
    }
    let audit = checks
        .iter()
        .flat_map(|c| c.audit.iter().cloned())
        .chain(audit_l7)
        .chain(ns_audit)
        .collect();
    Ok(Explanation {
        verdict: Verdict::Allowed,
        layer,
        reasons,
        source: src.resolved,
        destination: dst.resolved,
        redirected,
        audit,
    })
}

/// Whether `namespace` is annotated `policy.cilium.io/audit-mode: "true"`.
fn namespace_audited(cluster: &Cluster, namespace: &str) -> bool {
    cluster
        .topology
        .namespaces
        .iter()
        .any(|n| n.name == namespace && n.audit_mode())
}

/// A denial of a side whose namespace is in audit mode, as an audit reason.
fn namespace_audit_reason(r: Reason) -> Reason {
    Reason {
        message: format!(
            "audit mode (the namespace's policy.cilium.io/audit-mode): {}: would be denied, passes as AUDIT",
            r.message
        ),
        ..r
    }
}

/// Why an audited policy would drop what the enforced ones allow.
fn audit_reasons(
    pol: &EndpointPolicy,
    contribs: &[Contribution],
    direction: Direction,
    towards: &str,
    remote_name: &str,
    key: &crate::mapstate::MapKey,
) -> Vec<Reason> {
    let denies: Vec<Reason> = contribs
        .iter()
        .filter(|c| c.deny)
        .map(|c| {
            reason_from(
                c,
                direction,
                format!(
                    "audit mode: denies {direction} {towards} {remote_name} ({}) on {}: would be dropped, passes as AUDIT",
                    c.peer, c.key.port
                ),
            )
        })
        .collect();
    if !denies.is_empty() {
        return denies;
    }
    pol.audit_enforcing
        .get(&direction)
        .into_iter()
        .flatten()
        .map(|p| Reason {
            direction: Some(direction),
            policy: Some(PolicyName::from(p.as_ref())),
            rule: None,
            message: format!(
                "audit mode: puts this endpoint into default deny for {direction} and no rule allows {towards} {remote_name} on {}: would be dropped, passes as AUDIT",
                key.port
            ),
        })
        .collect()
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
    // A deny of no rule (written where only audited rules reach) is the
    // default deny, as a missing entry.
    let found = pol
        .map
        .lookup(direction, remote, proto, port)
        .filter(|(k, v)| {
            !(v.verdict == MapVerdict::Deny
                && v.cookie == 0
                && pol.provenance.get(*k).is_none_or(|p| p.is_empty()))
        });
    match found {
        Some((key, value)) if value.verdict == MapVerdict::Allow => {
            let layer = if key.port.protocol == 0 {
                Layer::L3
            } else {
                Layer::L4
            };
            let contribs = pol.provenance.get(key).cloned().unwrap_or_default();
            let audit = if value.audit {
                audit_reasons(pol, &contribs, direction, towards, &remote_name, key)
            } else {
                Vec::new()
            };
            let mut reasons: Vec<Reason> = contribs
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
            if value.audit {
                reasons.push(Reason {
                    direction: Some(direction),
                    policy: None,
                    rule: None,
                    message: format!(
                        "the enforced policies allow {direction} {towards} {remote_name} on {}",
                        key.port
                    ),
                });
            }
            Check {
                direction,
                allowed: true,
                layer,
                reasons,
                l7: pol.l7.get(key).cloned(),
                audit,
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
                audit: Vec::new(),
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
            let others = match Protocol::from_number(proto) {
                Some(p) if p.is_extended() => " (other protocols are allowed)",
                _ => " (other ports are allowed)",
            };
            let enforcing = pol.enforcing.get(&direction).cloned().unwrap_or_default();
            let mut reasons: Vec<Reason> = enforcing
                .iter()
                .map(|p| Reason {
                    direction: Some(direction),
                    policy: Some(PolicyName::from(p.as_ref())),
                    rule: None,
                    message: format!(
                        "selects the endpoint for {direction} (default deny) and no rule allows {towards} {remote_name} on {flow}{}",
                        if peer_known { others } else { "" }
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
                audit: Vec::new(),
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

#[cfg(test)]
mod tests;
