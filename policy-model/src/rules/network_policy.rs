//! Kubernetes `NetworkPolicy` into the internal form: one rule per
//! object, Kubernetes' `policyTypes` defaults, peers scoped to the
//! policy's namespace unless a `namespaceSelector` says otherwise.

use super::parse::{compile_selector, parse_cidr, parse_excepts, parse_port};
use super::rule::{
    DirectionRules, Peer, PolicyRule, PortMatch, Protocol, RuleEntry, RuleError, Subject, rerr,
};
use crate::api::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, SelectorOperator};
use crate::labels::{
    NAMESPACE_LABELS_PREFIX, POD_NAMESPACE_LABEL, Requirement, SOURCE_K8S, Selector,
};
use crate::origin::PolicyRef;
use std::sync::Arc;

/// Translates a NetworkPolicy into one internal rule.
pub fn from_network_policy(
    np: &NetworkPolicy,
    origin: Arc<PolicyRef>,
) -> Result<Vec<PolicyRule>, RuleError> {
    let ns = np
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    if np.metadata.name.is_empty() {
        return Err(rerr("metadata.name", "is required"));
    }
    let spec = &np.spec;
    let subject = compile_selector(&spec.pod_selector, SOURCE_K8S, "spec.podSelector")?
        .and(Requirement::equals(SOURCE_K8S, POD_NAMESPACE_LABEL, &ns));

    // Kubernetes defaults policyTypes to Ingress, plus Egress when the
    // policy has at least one egress rule (`egress: []` does not count).
    let (mut ingress_on, mut egress_on) =
        (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty()));
    if let Some(types) = spec.policy_types.as_ref().filter(|t| !t.is_empty()) {
        ingress_on = false;
        egress_on = false;
        for (i, t) in types.iter().enumerate() {
            match t.as_str() {
                "Ingress" => ingress_on = true,
                "Egress" => egress_on = true,
                other => {
                    return Err(rerr(
                        format!("spec.policyTypes[{i}]"),
                        format!("{other:?} is not Ingress or Egress"),
                    ));
                }
            }
        }
    }

    let mut ingress = DirectionRules {
        default_deny: ingress_on,
        ..Default::default()
    };
    if ingress_on {
        for (i, r) in spec.ingress.iter().flatten().enumerate() {
            let path = format!("spec.ingress[{i}]");
            let peers = np_peers(r.from.as_deref(), &ns, &format!("{path}.from"))?;
            let ports = np_ports(r.ports.as_deref(), &format!("{path}.ports"))?;
            ingress.entries.push(RuleEntry {
                path,
                deny: false,
                peers,
                ports,
            });
        }
    }
    let mut egress = DirectionRules {
        default_deny: egress_on,
        ..Default::default()
    };
    if egress_on {
        for (i, r) in spec.egress.iter().flatten().enumerate() {
            let path = format!("spec.egress[{i}]");
            let peers = np_peers(r.to.as_deref(), &ns, &format!("{path}.to"))?;
            let ports = np_ports(r.ports.as_deref(), &format!("{path}.ports"))?;
            egress.entries.push(RuleEntry {
                path,
                deny: false,
                peers,
                ports,
            });
        }
    }
    Ok(vec![PolicyRule {
        origin,
        path: "spec".into(),
        description: None,
        subject: Subject::Endpoints(subject),
        ingress,
        egress,
        audit: np.metadata.audit_mode(),
        log: None,
    }])
}

fn np_peers(
    peers: Option<&[NetworkPolicyPeer]>,
    ns: &str,
    path: &str,
) -> Result<Vec<Peer>, RuleError> {
    let peers = match peers {
        None | Some([]) => return Ok(vec![Peer::All]),
        Some(p) => p,
    };
    let mut out = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        let path = format!("{path}[{i}]");
        match (&p.pod_selector, &p.namespace_selector, &p.ip_block) {
            (None, None, None) => {
                return Err(rerr(
                    path,
                    "a peer needs podSelector, namespaceSelector or ipBlock",
                ));
            }
            (None, None, Some(b)) => {
                let cidr = parse_cidr(&b.cidr, &format!("{path}.ipBlock.cidr"))?;
                let except = parse_excepts(&cidr, &b.except, &format!("{path}.ipBlock.except"))?;
                out.push(Peer::Cidr { cidr, except });
            }
            (_, _, Some(_)) => {
                return Err(rerr(
                    path,
                    "ipBlock cannot be combined with podSelector or namespaceSelector in one peer",
                ));
            }
            (pod, nsel, None) => {
                let mut sel = match pod {
                    Some(ps) => compile_selector(ps, SOURCE_K8S, &format!("{path}.podSelector"))?,
                    None => Selector::all(),
                };
                match nsel {
                    Some(n) => {
                        let nsel =
                            compile_selector(n, SOURCE_K8S, &format!("{path}.namespaceSelector"))?
                                .with_key_prefix(NAMESPACE_LABELS_PREFIX);
                        sel = sel.and_all(&nsel).and(Requirement::new(
                            SOURCE_K8S,
                            POD_NAMESPACE_LABEL,
                            SelectorOperator::Exists,
                            vec![],
                        ));
                    }
                    None => {
                        sel = sel.and(Requirement::equals(SOURCE_K8S, POD_NAMESPACE_LABEL, ns));
                    }
                }
                out.push(Peer::Endpoints(sel));
            }
        }
    }
    Ok(out)
}

fn np_ports(
    ports: Option<&[NetworkPolicyPort]>,
    path: &str,
) -> Result<Option<Vec<PortMatch>>, RuleError> {
    let ports = match ports {
        None | Some([]) => return Ok(None),
        Some(p) => p,
    };
    let mut out = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let protocol = match p.protocol.as_deref() {
            None => Protocol::Tcp,
            Some(s) => match Protocol::parse(s) {
                Some(pr @ (Protocol::Tcp | Protocol::Udp | Protocol::Sctp)) => pr,
                _ => {
                    return Err(rerr(
                        format!("{path}.protocol"),
                        format!("{s:?} is not TCP, UDP or SCTP"),
                    ));
                }
            },
        };
        let port = parse_port(p.port.as_ref(), p.end_port, &path)?;
        out.push(PortMatch {
            protocol,
            port,
            l7: None,
            tls: None,
        });
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests;
