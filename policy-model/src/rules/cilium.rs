//! `CiliumNetworkPolicy` and `CiliumClusterwideNetworkPolicy` into the
//! internal form: one rule per `spec`/`specs[i]`, subjects and peers
//! scoped as Cilium scopes them, one kind of L3 peer per entry.

use super::authentication::auth_required;
use super::parse::{compile_selector, parse_cidr, parse_excepts};
use super::port_rule::{cilium_port_rule, icmp_field};
use super::rule::{
    CidrGroupRef, Direction, DirectionRules, Entity, Peer, PolicyRule, PortMatch, RuleEntry,
    RuleError, Subject, rerr,
};
use crate::api::{
    self, CidrRule, CiliumPolicy, EgressRule, FqdnSelector, IngressRule, LabelSelector, PortRule,
    SelectorOperator,
};
use crate::labels::{
    NAMESPACE_LABELS_PREFIX, POD_NAMESPACE_LABEL, Requirement, SOURCE_ANY, SOURCE_K8S, Selector,
};
use crate::origin::PolicyRef;
use crate::topology::cidr_group::SOURCE_CIDR_GROUP;
use std::sync::Arc;

/// Translates a CNP (`namespace` = Some) or CCNP (`namespace` = None).
pub fn from_cilium_policy(
    cp: &CiliumPolicy,
    namespace: Option<&str>,
    origin: Arc<PolicyRef>,
) -> Result<Vec<PolicyRule>, RuleError> {
    if cp.metadata.name.is_empty() {
        return Err(rerr("metadata.name", "is required"));
    }
    let mut specs: Vec<(String, &api::Rule)> = Vec::new();
    if let Some(s) = &cp.spec {
        specs.push(("spec".into(), s));
    }
    for (i, s) in cp.specs.iter().flatten().enumerate() {
        specs.push((format!("specs[{i}]"), s));
    }
    if specs.is_empty() {
        return Err(rerr("spec", "a policy needs `spec` or `specs`"));
    }
    let audit = cp.metadata.audit_mode();
    specs
        .into_iter()
        .map(|(path, r)| {
            cilium_rule(r, namespace, origin.clone(), path).map(|mut rule| {
                rule.audit = audit;
                rule
            })
        })
        .collect()
}

fn cilium_rule(
    r: &api::Rule,
    ns: Option<&str>,
    origin: Arc<PolicyRef>,
    path: String,
) -> Result<PolicyRule, RuleError> {
    let subject = match (&r.endpoint_selector, &r.node_selector) {
        (Some(_), Some(_)) => {
            return Err(rerr(
                &path,
                "endpointSelector and nodeSelector cannot be used together",
            ));
        }
        (None, None) => {
            return Err(rerr(
                &path,
                "one of endpointSelector or nodeSelector is required",
            ));
        }
        (Some(es), None) => {
            let sel = compile_selector(es, SOURCE_ANY, &format!("{path}.endpointSelector"))?;
            Subject::Endpoints(scope_subject(sel, ns))
        }
        (None, Some(_)) => {
            // Accepting a host policy and not enforcing it would leave the
            // node open while its owner believes it is locked down.
            return Err(rerr(
                format!("{path}.nodeSelector"),
                "host policies (nodeSelector) are not enforced by portcullis: it has no host \
                 firewall, so the node would stay open; remove this rule, or protect the \
                 node's services another way (pods are selected with endpointSelector)",
            ));
        }
    };
    let dd = r.enable_default_deny.unwrap_or_default();

    let mut ingress = DirectionRules::default();
    let has_ingress = r.ingress.as_ref().is_some_and(|v| !v.is_empty())
        || r.ingress_deny.as_ref().is_some_and(|v| !v.is_empty());
    ingress.default_deny = has_ingress && dd.ingress.unwrap_or(true);
    for (deny, list, field) in [
        (false, &r.ingress, "ingress"),
        (true, &r.ingress_deny, "ingressDeny"),
    ] {
        for (i, ir) in list.iter().flatten().enumerate() {
            let p = format!("{path}.{field}[{i}]");
            let (entry, requires) = cilium_ingress(ir, deny, ns, &p)?;
            ingress.requires.extend(requires);
            ingress.entries.push(entry);
        }
    }

    let mut egress = DirectionRules::default();
    let has_egress = r.egress.as_ref().is_some_and(|v| !v.is_empty())
        || r.egress_deny.as_ref().is_some_and(|v| !v.is_empty());
    egress.default_deny = has_egress && dd.egress.unwrap_or(true);
    for (deny, list, field) in [
        (false, &r.egress, "egress"),
        (true, &r.egress_deny, "egressDeny"),
    ] {
        for (i, er) in list.iter().flatten().enumerate() {
            let p = format!("{path}.{field}[{i}]");
            let (entry, requires) = cilium_egress(er, deny, ns, &p)?;
            egress.requires.extend(requires);
            egress.entries.push(entry);
        }
    }

    let log = match &r.log {
        None => None,
        Some(l) => {
            let v = &l.value;
            if v.chars().count() > 32 {
                return Err(rerr(
                    format!("{path}.log.value"),
                    format!("{v:?} is longer than 32 characters"),
                ));
            }
            if !v.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
                return Err(rerr(
                    format!("{path}.log.value"),
                    format!("{v:?} holds a character that is not printable ASCII"),
                ));
            }
            (!v.is_empty()).then(|| Arc::from(v.as_str()))
        }
    };
    Ok(PolicyRule {
        origin,
        path,
        description: r.description.clone(),
        subject,
        ingress,
        egress,
        audit: false,
        log,
    })
}

/// A CNP's `endpointSelector` selects only pods of its namespace.
/// A namespace named in it is replaced by the policy's own, as Cilium
/// does: a CNP can never select pods of another namespace.
fn scope_subject(mut sel: Selector, ns: Option<&str>) -> Selector {
    match ns {
        Some(ns) => {
            sel.requirements.retain(|r| !r.is_namespace_requirement());
            sel.and(Requirement::equals(SOURCE_K8S, POD_NAMESPACE_LABEL, ns))
        }
        None => sel,
    }
}

/// A peer selector in a CNP is scoped to the policy's namespace unless it
/// names a namespace or selects on namespace labels; in a CCNP a selector
/// without a namespace key only selects pods (the namespace label exists),
/// as Cilium's `getEndpointSelector` does. Selectors of reserved labels are
/// left alone.
fn scope_peer(sel: Selector, ns: Option<&str>) -> Selector {
    if sel.has_namespace_requirement()
        || sel
            .requirements
            .iter()
            .any(|r| r.source == crate::labels::SOURCE_RESERVED)
    {
        return sel;
    }
    match ns {
        None => sel.and(Requirement::new(
            SOURCE_K8S,
            POD_NAMESPACE_LABEL,
            SelectorOperator::Exists,
            vec![],
        )),
        Some(_)
            if sel.requirements.iter().any(|r| {
                r.key.starts_with(NAMESPACE_LABELS_PREFIX)
                    && (r.source == SOURCE_K8S || r.source == SOURCE_ANY)
            }) =>
        {
            sel
        }
        Some(ns) => sel.and(Requirement::equals(SOURCE_K8S, POD_NAMESPACE_LABEL, ns)),
    }
}

struct L3Fields<'a> {
    endpoints: &'a Option<Vec<LabelSelector>>,
    requires: &'a Option<Vec<LabelSelector>>,
    cidr: &'a Option<Vec<String>>,
    cidr_set: &'a Option<Vec<CidrRule>>,
    entities: &'a Option<Vec<String>>,
    nodes: &'a Option<Vec<LabelSelector>>,
    fqdns: Option<&'a Vec<FqdnSelector>>,
    authentication: Option<&'a api::Authentication>,
    unsupported: Vec<(&'static str, bool)>,
    prefix: &'static str,
}

fn cilium_ingress(
    r: &IngressRule,
    deny: bool,
    ns: Option<&str>,
    path: &str,
) -> Result<(RuleEntry, Vec<Selector>), RuleError> {
    let l3 = L3Fields {
        endpoints: &r.from_endpoints,
        requires: &r.from_requires,
        cidr: &r.from_cidr,
        cidr_set: &r.from_cidr_set,
        entities: &r.from_entities,
        nodes: &r.from_nodes,
        fqdns: None,
        authentication: r.authentication.as_ref(),
        unsupported: vec![("fromGroups", r.from_groups.is_some())],
        prefix: "from",
    };
    cilium_entry(
        &l3,
        r.to_ports.as_deref(),
        r.icmps.as_deref(),
        deny,
        ns,
        path,
        Direction::Ingress,
    )
}

fn cilium_egress(
    r: &EgressRule,
    deny: bool,
    ns: Option<&str>,
    path: &str,
) -> Result<(RuleEntry, Vec<Selector>), RuleError> {
    let l3 = L3Fields {
        endpoints: &r.to_endpoints,
        requires: &r.to_requires,
        cidr: &r.to_cidr,
        cidr_set: &r.to_cidr_set,
        entities: &r.to_entities,
        nodes: &r.to_nodes,
        fqdns: r.to_fqdns.as_ref(),
        authentication: r.authentication.as_ref(),
        unsupported: vec![
            ("toGroups", r.to_groups.is_some()),
            ("toServices", r.to_services.is_some()),
        ],
        prefix: "to",
    };
    cilium_entry(
        &l3,
        r.to_ports.as_deref(),
        r.icmps.as_deref(),
        deny,
        ns,
        path,
        Direction::Egress,
    )
}

fn cilium_entry(
    l3: &L3Fields<'_>,
    to_ports: Option<&[PortRule]>,
    icmps: Option<&[api::IcmpRule]>,
    deny: bool,
    ns: Option<&str>,
    path: &str,
    dir: Direction,
) -> Result<(RuleEntry, Vec<Selector>), RuleError> {
    let p = l3.prefix;
    for (field, present) in &l3.unsupported {
        if *present {
            return Err(rerr(
                format!("{path}.{field}"),
                "is not supported by portcullis (no cloud provider or service integration); remove it or express the peers as CIDRs",
            ));
        }
    }
    // Cilium accepts one kind of L3 peer per rule.
    let present: Vec<String> = [
        (
            "Endpoints",
            l3.endpoints.as_ref().is_some_and(|v| !v.is_empty()),
        ),
        ("CIDR", l3.cidr.as_ref().is_some_and(|v| !v.is_empty())),
        (
            "CIDRSet",
            l3.cidr_set.as_ref().is_some_and(|v| !v.is_empty()),
        ),
        (
            "Entities",
            l3.entities.as_ref().is_some_and(|v| !v.is_empty()),
        ),
        ("Nodes", l3.nodes.as_ref().is_some_and(|v| !v.is_empty())),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(n, _)| format!("{p}{n}"))
    .collect();
    let has_fqdns = l3.fqdns.is_some_and(|v| !v.is_empty());
    if has_fqdns && !present.is_empty() {
        return Err(rerr(
            format!("{path}.toFQDNs"),
            format!(
                "toFQDNs cannot be combined with another L3 peer ({}) in one rule; use a separate rule",
                present.join(", ")
            ),
        ));
    }
    if present.len() > 1 {
        return Err(rerr(
            path,
            format!(
                "combining {} in one rule is not supported; use separate rules",
                present.join(" and ")
            ),
        ));
    }
    if to_ports.is_some_and(|v| !v.is_empty()) && icmps.is_some_and(|v| !v.is_empty()) {
        return Err(rerr(
            format!("{path}.icmps"),
            "icmps cannot be combined with toPorts in one rule; define a separate rule",
        ));
    }

    let mut peers = Vec::new();
    let mut any_l3 = false;
    if let Some(eps) = l3.endpoints {
        any_l3 = true;
        for (i, s) in eps.iter().enumerate() {
            let sel = compile_selector(s, SOURCE_ANY, &format!("{path}.{p}Endpoints[{i}]"))?;
            peers.push(Peer::Endpoints(scope_peer(sel, ns)));
        }
    }
    if let Some(c) = l3.cidr {
        any_l3 = true;
        for (i, s) in c.iter().enumerate() {
            let cidr = parse_cidr(s, &format!("{path}.{p}CIDR[{i}]"))?;
            peers.push(Peer::Cidr {
                cidr,
                except: vec![],
            });
        }
    }
    if let Some(cs) = l3.cidr_set {
        any_l3 = true;
        for (i, c) in cs.iter().enumerate() {
            let cpath = format!("{path}.{p}CIDRSet[{i}]");
            let group = match (&c.cidr, &c.cidr_group_ref, &c.cidr_group_selector) {
                (Some(_), None, None) => None,
                (None, Some(name), None) => {
                    if name.is_empty() {
                        return Err(rerr(
                            format!("{cpath}.cidrGroupRef"),
                            "is empty; name a CiliumCIDRGroup",
                        ));
                    }
                    Some(CidrGroupRef::Name(name.clone()))
                }
                (None, None, Some(sel)) => Some(CidrGroupRef::Selector(compile_selector(
                    sel,
                    SOURCE_CIDR_GROUP,
                    &format!("{cpath}.cidrGroupSelector"),
                )?)),
                (None, None, None) => {
                    return Err(rerr(
                        format!("{cpath}.cidr"),
                        "is required (or name CIDR groups with cidrGroupRef or cidrGroupSelector)",
                    ));
                }
                _ => {
                    return Err(rerr(
                        cpath,
                        "cidr, cidrGroupRef and cidrGroupSelector exclude each other; write one per entry",
                    ));
                }
            };
            if let Some(group) = group {
                // The groups' CIDRs are not known here: each except is
                // applied to the CIDRs it falls in when they are.
                let mut except = Vec::with_capacity(c.except.len());
                for (j, e) in c.except.iter().enumerate() {
                    except.push(parse_cidr(e, &format!("{cpath}.except[{j}]"))?);
                }
                peers.push(Peer::CidrGroup { group, except });
                continue;
            }
            let Some(s) = &c.cidr else {
                return Err(rerr(format!("{cpath}.cidr"), "is required"));
            };
            let cidr = parse_cidr(s, &format!("{cpath}.cidr"))?;
            let except = parse_excepts(&cidr, &c.except, &format!("{cpath}.except"))?;
            peers.push(Peer::Cidr { cidr, except });
        }
    }
    if let Some(es) = l3.entities {
        any_l3 = true;
        for (i, e) in es.iter().enumerate() {
            let ent = Entity::parse(e).ok_or_else(|| {
                rerr(
                    format!("{path}.{p}Entities[{i}]"),
                    format!("unknown entity {e:?} (known: all, world, world-ipv4, world-ipv6, cluster, host, remote-node, kube-apiserver, init, health, unmanaged, ingress, none)"),
                )
            })?;
            peers.push(Peer::Entity(ent));
        }
    }
    if let Some(ns_sel) = l3.nodes {
        any_l3 = true;
        for (i, s) in ns_sel.iter().enumerate() {
            peers.push(Peer::Nodes(compile_selector(
                s,
                SOURCE_ANY,
                &format!("{path}.{p}Nodes[{i}]"),
            )?));
        }
    }
    if let Some(fq) = l3.fqdns {
        any_l3 = true;
        for (i, f) in fq.iter().enumerate() {
            let fpath = format!("{path}.toFQDNs[{i}]");
            crate::l7::dns::FqdnPattern::from_selector(f)
                .map_err(|e| rerr(&fpath, e.to_string()))?;
            peers.push(Peer::Fqdn(f.clone()));
        }
    }

    let mut requires = Vec::new();
    if let Some(rs) = l3.requires {
        for (i, s) in rs.iter().enumerate() {
            let sel = compile_selector(s, SOURCE_ANY, &format!("{path}.{p}Requires[{i}]"))?;
            requires.push(scope_peer(sel, ns));
        }
    }

    let mut ports: Option<Vec<PortMatch>> = None;
    if let Some(tp) = to_ports {
        for (i, pr) in tp.iter().enumerate() {
            let ppath = format!("{path}.toPorts[{i}]");
            let list = cilium_port_rule(pr, deny, dir, &ppath)?;
            ports.get_or_insert_with(Vec::new).extend(list);
        }
    }
    if let Some(ic) = icmps {
        for (i, rule) in ic.iter().enumerate() {
            for (j, f) in rule.fields.iter().enumerate() {
                let fpath = format!("{path}.icmps[{i}].fields[{j}]");
                let pm = icmp_field(f, &fpath)?;
                ports.get_or_insert_with(Vec::new).push(pm);
            }
        }
    }

    // A rule that names no peer applies to every peer when it names ports
    // (an L4-only rule); with neither it selects nothing.
    if !any_l3 && ports.is_some() {
        peers.push(Peer::All);
    }
    // Mutual authentication: Cilium drops traffic that needs it until the
    // peers are authenticated. portcullis never authenticates, so such an
    // allow admits nothing (the rule's default deny still applies); the
    // loader warns about it. A deny rule denies whatever the field says.
    if auth_required(l3.authentication, path)? && !deny {
        peers.clear();
    }
    Ok((
        RuleEntry {
            path: path.to_string(),
            deny,
            peers,
            ports,
        },
        requires,
    ))
}

#[cfg(test)]
mod tests;
