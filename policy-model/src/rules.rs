//! Internal rules: NetworkPolicy, CNP and CCNP translated into one form
//! (as Cilium translates everything into `api.Rule`), with selectors
//! compiled, ports parsed and every input error reported with its path.

use crate::api::{
    self, CidrRule, CiliumPolicy, EgressRule, FqdnSelector, IngressRule, IntOrString,
    LabelSelector, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, PortRule, SelectorOperator,
};
use crate::labels::{
    NAMESPACE_LABELS_PREFIX, POD_NAMESPACE_LABEL, Requirement, SOURCE_ANY, SOURCE_K8S, Selector,
};
use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

pub use crate::l7::{L7Parser, L7Rules};
pub use crate::origin::{PolicyKind, PolicyRef};

/// Traffic direction, seen from the selected endpoint.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// Cilium's entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Entity {
    All,
    World,
    WorldIpv4,
    WorldIpv6,
    Cluster,
    Host,
    RemoteNode,
    KubeApiserver,
    Init,
    Health,
    Unmanaged,
    Ingress,
    None,
}

impl Entity {
    /// Parses an entity name as written in `fromEntities`/`toEntities`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "all" => Entity::All,
            "world" => Entity::World,
            "world-ipv4" => Entity::WorldIpv4,
            "world-ipv6" => Entity::WorldIpv6,
            "cluster" => Entity::Cluster,
            "host" => Entity::Host,
            "remote-node" => Entity::RemoteNode,
            "kube-apiserver" => Entity::KubeApiserver,
            "init" => Entity::Init,
            "health" => Entity::Health,
            "unmanaged" => Entity::Unmanaged,
            "ingress" => Entity::Ingress,
            "none" => Entity::None,
            _ => return Option::None,
        })
    }

    /// The name as written in policies.
    pub fn name(self) -> &'static str {
        match self {
            Entity::All => "all",
            Entity::World => "world",
            Entity::WorldIpv4 => "world-ipv4",
            Entity::WorldIpv6 => "world-ipv6",
            Entity::Cluster => "cluster",
            Entity::Host => "host",
            Entity::RemoteNode => "remote-node",
            Entity::KubeApiserver => "kube-apiserver",
            Entity::Init => "init",
            Entity::Health => "health",
            Entity::Unmanaged => "unmanaged",
            Entity::Ingress => "ingress",
            Entity::None => "none",
        }
    }
}

/// A remote peer selector: which identities a rule talks about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// Every identity (K8s NP without `from`/`to`, CNP rule with only ports).
    All,
    /// Endpoints (and reserved identities) whose labels match.
    Endpoints(Selector),
    /// A Cilium entity.
    Entity(Entity),
    /// Addresses outside the cluster within `cidr` but not in `except`.
    Cidr { cidr: IpNet, except: Vec<IpNet> },
    /// Addresses learned from DNS answers for names matching the selector.
    Fqdn(FqdnSelector),
    /// Nodes whose labels match (`fromNodes`/`toNodes`).
    Nodes(Selector),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::All => f.write_str("any peer"),
            Peer::Endpoints(s) => write!(f, "endpoints {s}"),
            Peer::Entity(e) => write!(f, "entity {}", e.name()),
            Peer::Cidr { cidr, except } if except.is_empty() => write!(f, "cidr {cidr}"),
            Peer::Cidr { cidr, except } => {
                let ex: Vec<String> = except.iter().map(|e| e.to_string()).collect();
                write!(f, "cidr {cidr} except {}", ex.join(","))
            }
            Peer::Fqdn(s) => match (&s.match_name, &s.match_pattern) {
                (Some(n), _) => write!(f, "fqdn matchName {n}"),
                (_, Some(p)) => write!(f, "fqdn matchPattern {p}"),
                _ => f.write_str("fqdn (empty)"),
            },
            Peer::Nodes(s) => write!(f, "nodes {s}"),
        }
    }
}

/// IP protocols a port rule can name. `Any` = TCP, UDP and SCTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
    Any,
}

impl Protocol {
    /// IANA protocol number (0 for `Any`).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
            Protocol::Icmp => 1,
            Protocol::Icmpv6 => 58,
            Protocol::Any => 0,
        }
    }

    /// Protocol from its number.
    pub fn from_number(n: u8) -> Option<Self> {
        Some(match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            132 => Protocol::Sctp,
            1 => Protocol::Icmp,
            58 => Protocol::Icmpv6,
            0 => Protocol::Any,
            _ => return None,
        })
    }

    /// Parses `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6`/`ICMPV6`, `ANY`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            "ICMP" => Protocol::Icmp,
            "ICMPV6" => Protocol::Icmpv6,
            "ANY" => Protocol::Any,
            _ => return None,
        })
    }

    /// The concrete protocols this stands for.
    pub fn expand(self) -> &'static [Protocol] {
        match self {
            Protocol::Any => &[Protocol::Tcp, Protocol::Udp, Protocol::Sctp],
            Protocol::Tcp => &[Protocol::Tcp],
            Protocol::Udp => &[Protocol::Udp],
            Protocol::Sctp => &[Protocol::Sctp],
            Protocol::Icmp => &[Protocol::Icmp],
            Protocol::Icmpv6 => &[Protocol::Icmpv6],
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Icmp => "ICMP",
            Protocol::Icmpv6 => "ICMPv6",
            Protocol::Any => "ANY",
        })
    }
}

/// A port or port range, or a named port resolved later.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortSpec {
    /// All ports of the protocol.
    Any,
    /// `lo..=hi` (equal for a single port).
    Range(u16, u16),
    /// A named container port.
    Named(String),
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Any => f.write_str("any port"),
            PortSpec::Range(lo, hi) if lo == hi => write!(f, "{lo}"),
            PortSpec::Range(lo, hi) => write!(f, "{lo}-{hi}"),
            PortSpec::Named(n) => write!(f, "{n}"),
        }
    }
}

/// One port (or ICMP type) a rule entry allows or denies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortMatch {
    pub protocol: Protocol,
    pub port: PortSpec,
    pub l7: Option<Arc<L7Rules>>,
    /// `serverNames` / `terminatingTLS` / `originatingTLS` of the entry.
    pub tls: Option<Arc<crate::l7::tls::PortTls>>,
}

/// One allow or deny entry of a rule, in one direction.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleEntry {
    /// Field path in the source object, e.g. `spec.ingressDeny[0]`.
    pub path: String,
    pub deny: bool,
    /// Peers; empty = the entry selects no peer.
    pub peers: Vec<Peer>,
    /// `None` = all protocols and ports (an L3-only rule).
    pub ports: Option<Vec<PortMatch>>,
}

/// A rule's contribution to one direction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DirectionRules {
    /// Whether selected endpoints become default-deny in this direction.
    pub default_deny: bool,
    pub entries: Vec<RuleEntry>,
    /// `fromRequires` / `toRequires`: every peer must also match all of these.
    pub requires: Vec<Selector>,
}

/// What a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// Pods whose labels match.
    Endpoints(Selector),
    /// The node (host firewall) when its labels match.
    Nodes(Selector),
}

/// One internal rule.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRule {
    pub origin: Arc<PolicyRef>,
    /// Path of this rule in the object (`spec`, `specs[2]`).
    pub path: String,
    pub description: Option<String>,
    pub subject: Subject,
    pub ingress: DirectionRules,
    pub egress: DirectionRules,
}

impl PolicyRule {
    /// The rules of one direction.
    pub fn direction(&self, d: Direction) -> &DirectionRules {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// A policy object that does not make sense, with the field and reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct RuleError {
    pub path: String,
    pub reason: String,
}

fn rerr(path: impl Into<String>, reason: impl Into<String>) -> RuleError {
    RuleError {
        path: path.into(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------
// Kubernetes NetworkPolicy

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

// ---------------------------------------------------------------------------
// Cilium policies

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
    specs
        .into_iter()
        .map(|(path, r)| cilium_rule(r, namespace, origin.clone(), path))
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

    Ok(PolicyRule {
        origin,
        path,
        description: r.description.clone(),
        subject,
        ingress,
        egress,
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
    if deny && r.to_fqdns.is_some() {
        return Err(rerr(
            format!("{path}.toFQDNs"),
            "toFQDNs is not supported in egressDeny rules",
        ));
    }
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
            if c.cidr_group_ref.is_some() || c.cidr_group_selector.is_some() {
                return Err(rerr(
                    cpath,
                    "cidrGroupRef/cidrGroupSelector are not supported by portcullis; inline the CIDRs",
                ));
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

/// Whether `authentication` asks for mutual authentication (`required`,
/// `test-always-fail`); `disabled` or absent: no.
fn auth_required(auth: Option<&api::Authentication>, path: &str) -> Result<bool, RuleError> {
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

fn cilium_port_rule(
    pr: &PortRule,
    deny: bool,
    dir: Direction,
    path: &str,
) -> Result<Vec<PortMatch>, RuleError> {
    if pr.listener.is_some() {
        return Err(rerr(
            format!("{path}.listener"),
            "Envoy listeners are not supported by portcullis",
        ));
    }
    let l7 = match &pr.rules {
        None => None,
        Some(rules) => {
            if deny {
                return Err(rerr(
                    format!("{path}.rules"),
                    "L7 rules are not allowed in a deny rule",
                ));
            }
            let mut kinds = Vec::new();
            if rules.http.is_some() {
                kinds.push("http");
            }
            if rules.kafka.is_some() {
                kinds.push("kafka");
            }
            if rules.dns.is_some() {
                kinds.push("dns");
            }
            if rules.l7proto.is_some() || rules.l7.is_some() {
                kinds.push("l7proto");
            }
            if kinds.len() > 1 {
                return Err(rerr(
                    format!("{path}.rules"),
                    format!(
                        "mixed L7 rule types on one port ({}); use one protocol per port",
                        kinds.join(", ")
                    ),
                ));
            }
            if let Some(http) = &rules.http {
                crate::l7::http::HttpRuleSet::compile(http)
                    .map_err(|e| rerr(format!("{path}.rules.http"), e.to_string()))?;
                Some(Arc::new(L7Rules::Http(http.clone())))
            } else if let Some(k) = &rules.kafka {
                crate::l7::kafka::KafkaRuleSet::compile(k)
                    .map_err(|e| rerr(format!("{path}.rules.kafka"), e.to_string()))?;
                Some(Arc::new(L7Rules::Kafka(k.clone())))
            } else if let Some(d) = &rules.dns {
                if dir == Direction::Ingress {
                    return Err(rerr(
                        format!("{path}.rules.dns"),
                        "DNS rules are only supported on egress",
                    ));
                }
                crate::l7::dns::DnsRuleSet::compile(d)
                    .map_err(|e| rerr(format!("{path}.rules.dns"), e.to_string()))?;
                Some(Arc::new(L7Rules::Dns(d.clone())))
            } else if kinds.is_empty() {
                None
            } else {
                return Err(rerr(
                    format!("{path}.rules"),
                    "generic l7proto rules are not supported by portcullis",
                ));
            }
        }
    };
    if deny
        && (pr.server_names.is_some()
            || pr.terminating_tls.is_some()
            || pr.originating_tls.is_some())
    {
        return Err(rerr(
            path,
            "serverNames / TLS settings are not allowed in a deny rule",
        ));
    }
    let tls = port_tls(pr, l7.as_deref(), path)?;
    let mut out = Vec::new();
    let ports: Vec<api::PortProtocol> = if pr.ports.is_empty() {
        vec![api::PortProtocol::default()]
    } else {
        pr.ports.clone()
    };
    for (i, pp) in ports.iter().enumerate() {
        let ppath = format!("{path}.ports[{i}]");
        let protocol = match pp.protocol.as_deref() {
            None | Some("") => Protocol::Any,
            Some(s) => match Protocol::parse(s) {
                Some(pr @ (Protocol::Tcp | Protocol::Udp | Protocol::Sctp | Protocol::Any)) => pr,
                _ => {
                    return Err(rerr(
                        format!("{ppath}.protocol"),
                        format!("{s:?} is not TCP, UDP, SCTP or ANY (use `icmps` for ICMP)"),
                    ));
                }
            },
        };
        let port = parse_port(pp.port.as_ref(), pp.end_port, &ppath)?;
        if l7.is_some() || tls.is_some() {
            let what = if l7.is_some() {
                "L7 rules"
            } else {
                "serverNames / TLS settings"
            };
            match &port {
                PortSpec::Any => {
                    return Err(rerr(
                        format!("{ppath}.port"),
                        format!("{what} need a specific port"),
                    ));
                }
                PortSpec::Range(lo, hi) if lo != hi => {
                    return Err(rerr(
                        format!("{ppath}.endPort"),
                        format!("{what} cannot apply to a port range"),
                    ));
                }
                _ => {}
            }
            if tls.is_some() && protocol == Protocol::Udp {
                return Err(rerr(
                    format!("{ppath}.protocol"),
                    "serverNames / TLS settings need TCP",
                ));
            }
        }
        if let Some(rules) = &l7
            && rules.parser() != L7Parser::Dns
            && protocol == Protocol::Udp
        {
            return Err(rerr(
                format!("{ppath}.protocol"),
                format!("{} rules need TCP", rules.parser()),
            ));
        }
        out.push(PortMatch {
            protocol,
            port,
            l7: l7.clone(),
            tls: tls.clone(),
        });
    }
    Ok(out)
}

/// The TLS settings of a `toPorts` entry, validated: `serverNames` are DNS
/// names (a leading `*.` allowed), each TLS context names a secret, and
/// TLS goes only with HTTP rules (or none).
fn port_tls(
    pr: &PortRule,
    l7: Option<&L7Rules>,
    path: &str,
) -> Result<Option<Arc<crate::l7::tls::PortTls>>, RuleError> {
    use crate::l7::tls::{PortTls, TlsContextRef, validate_server_name};
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

fn icmp_field(f: &api::IcmpField, path: &str) -> Result<PortMatch, RuleError> {
    let family = f.family.as_deref().unwrap_or("IPv4");
    let protocol = match family {
        "IPv4" => Protocol::Icmp,
        "IPv6" => Protocol::Icmpv6,
        other => {
            return Err(rerr(
                format!("{path}.family"),
                format!("{other:?} is not IPv4 or IPv6"),
            ));
        }
    };
    let t = match &f.icmp_type {
        IntOrString::Int(i) if (0..=255).contains(i) => *i as u16,
        IntOrString::Int(i) => {
            return Err(rerr(format!("{path}.type"), format!("{i} is not 0..255")));
        }
        IntOrString::String(s) => icmp_type_by_name(protocol, s).ok_or_else(|| {
            rerr(
                format!("{path}.type"),
                format!("unknown ICMP type name {s:?} for {family}"),
            )
        })?,
    };
    Ok(PortMatch {
        protocol,
        port: PortSpec::Range(t, t),
        l7: None,
        tls: None,
    })
}

/// ICMP type names as Cilium accepts them.
fn icmp_type_by_name(p: Protocol, name: &str) -> Option<u16> {
    let v4: &[(&str, u16)] = &[
        ("EchoReply", 0),
        ("DestinationUnreachable", 3),
        ("Redirect", 5),
        ("Echo", 8),
        ("EchoRequest", 8),
        ("RouterAdvertisement", 9),
        ("RouterSelection", 10),
        ("TimeExceeded", 11),
        ("ParameterProblem", 12),
        ("Timestamp", 13),
        ("TimestampReply", 14),
        ("Photuris", 40),
        ("ExtendedEchoRequest", 42),
        ("ExtendedEchoReply", 43),
    ];
    let v6: &[(&str, u16)] = &[
        ("DestinationUnreachable", 1),
        ("PacketTooBig", 2),
        ("TimeExceeded", 3),
        ("ParameterProblem", 4),
        ("EchoRequest", 128),
        ("EchoReply", 129),
        ("MulticastListenerQuery", 130),
        ("MulticastListenerReport", 131),
        ("MulticastListenerDone", 132),
        ("RouterSolicitation", 133),
        ("RouterAdvertisement", 134),
        ("NeighborSolicitation", 135),
        ("NeighborAdvertisement", 136),
        ("RedirectMessage", 137),
        ("RouterRenumbering", 138),
        ("ICMPNodeInformationQuery", 139),
        ("ICMPNodeInformationResponse", 140),
        ("InverseNeighborDiscoverySolicitation", 141),
        ("InverseNeighborDiscoveryAdvertisement", 142),
        ("HomeAgentAddressDiscoveryRequest", 144),
        ("HomeAgentAddressDiscoveryReply", 145),
        ("MobilePrefixSolicitation", 146),
        ("MobilePrefixAdvertisement", 147),
        ("DuplicateAddressRequestCodeSuffix", 157),
        ("DuplicateAddressConfirmationCodeSuffix", 158),
        ("ExtendedEchoRequest", 160),
        ("ExtendedEchoReply", 161),
    ];
    let table = if p == Protocol::Icmp { v4 } else { v6 };
    table.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

// ---------------------------------------------------------------------------
// Shared parsing helpers

fn compile_selector(
    s: &LabelSelector,
    default_source: &str,
    path: &str,
) -> Result<Selector, RuleError> {
    Selector::compile(s, default_source).map_err(|e| rerr(path, e.to_string()))
}

/// Parses a port (number, name, or empty/0 for all) and optional endPort.
fn parse_port(
    port: Option<&IntOrString>,
    end_port: Option<i64>,
    path: &str,
) -> Result<PortSpec, RuleError> {
    let spec = match port {
        None => PortSpec::Any,
        Some(IntOrString::Int(i)) => number_port(*i, &format!("{path}.port"))?,
        Some(IntOrString::String(s)) if s.is_empty() => PortSpec::Any,
        Some(IntOrString::String(s)) => match s.parse::<i64>() {
            Ok(i) => number_port(i, &format!("{path}.port"))?,
            Err(_) => {
                validate_port_name(s).map_err(|r| rerr(format!("{path}.port"), r))?;
                PortSpec::Named(s.clone())
            }
        },
    };
    match (spec, end_port) {
        (s, None) | (s, Some(0)) => Ok(s),
        (PortSpec::Range(lo, _), Some(e)) => {
            if e < i64::from(lo) || e > 65535 {
                return Err(rerr(
                    format!("{path}.endPort"),
                    format!("{e} must be between port ({lo}) and 65535"),
                ));
            }
            Ok(PortSpec::Range(lo, e as u16))
        }
        (PortSpec::Named(_), Some(_)) => Err(rerr(
            format!("{path}.endPort"),
            "endPort cannot be used with a named port",
        )),
        (PortSpec::Any, Some(_)) => Err(rerr(format!("{path}.endPort"), "endPort needs a port")),
    }
}

fn number_port(i: i64, path: &str) -> Result<PortSpec, RuleError> {
    match i {
        0 => Ok(PortSpec::Any),
        1..=65535 => Ok(PortSpec::Range(i as u16, i as u16)),
        _ => Err(rerr(path, format!("{i} is not a port (0..65535)"))),
    }
}

/// IANA service names: 1-15 chars of lowercase letters, digits and '-',
/// at least one letter, no leading/trailing/double '-'.
fn validate_port_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is neither a port number nor a valid port name (1-15 lowercase letters, digits, '-')"
        ))
    }
}

/// Parses `a.b.c.d/n`, `a::/n`, or a bare address (a host prefix).
pub fn parse_cidr(s: &str, path: &str) -> Result<IpNet, RuleError> {
    let net = if s.contains('/') {
        s.parse::<IpNet>()
            .map_err(|_| rerr(path, format!("{s:?} is not a CIDR")))?
    } else {
        let ip: IpAddr = s
            .parse()
            .map_err(|_| rerr(path, format!("{s:?} is not a CIDR or IP address")))?;
        IpNet::from(ip)
    };
    Ok(net.trunc())
}

fn parse_excepts(cidr: &IpNet, except: &[String], path: &str) -> Result<Vec<IpNet>, RuleError> {
    let mut out = Vec::new();
    for (i, e) in except.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let net = parse_cidr(e, &p)?;
        if !cidr.contains(&net) {
            return Err(rerr(p, format!("{net} is not inside {cidr}")));
        }
        out.push(net);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
