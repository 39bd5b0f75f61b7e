//! The internal rule form every policy kind is translated into (as
//! Cilium translates everything into `api.Rule`): a subject, and per
//! direction the allow and deny entries with their peers and ports.

use crate::api::FqdnSelector;
use crate::labels::Selector;
use ipnet::IpNet;
use std::fmt;
use std::sync::Arc;

use crate::l7::L7Rules;
use crate::l7::tls::PortTls;
use crate::origin::PolicyRef;

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
    /// The CIDRs of the CIDR groups `group` names, but not in `except`.
    /// Resolution replaces it by one [`Peer::Cidr`] per CIDR of the groups
    /// as they are now; unexpanded (no such group) it selects nothing.
    CidrGroup {
        group: CidrGroupRef,
        except: Vec<IpNet>,
    },
}

/// How a CIDR set entry names CIDR groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CidrGroupRef {
    /// `cidrGroupRef`: the group of this name.
    Name(String),
    /// `cidrGroupSelector`: every group whose labels match.
    Selector(Selector),
}

impl fmt::Display for CidrGroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrGroupRef::Name(n) => write!(f, "cidrGroupRef {n}"),
            CidrGroupRef::Selector(s) => write!(f, "cidrGroupSelector {s}"),
        }
    }
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
            Peer::CidrGroup { group, except } if except.is_empty() => write!(f, "{group}"),
            Peer::CidrGroup { group, except } => {
                let ex: Vec<String> = except.iter().map(|e| e.to_string()).collect();
                write!(f, "{group} except {}", ex.join(","))
            }
        }
    }
}

/// IP protocols a port rule can name. `Any` = TCP, UDP and SCTP: it never
/// stands for ICMP or for the extended protocols, which a rule names one by
/// one. The extended protocols (Cilium's `VRRP`, `IGMP`, `GRE`, `IPIP`,
/// `IPV6`, `ESP`, `AH`) carry no ports: a rule on one of them matches the
/// whole protocol, and the datapath looks them up with port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
    Any,
    /// Virtual Router Redundancy Protocol (112).
    Vrrp,
    /// Internet Group Management Protocol (2), IPv4's multicast membership.
    Igmp,
    /// Generic Routing Encapsulation (47).
    Gre,
    /// IPv4 encapsulated in IP (4): `IPIP`.
    Ipip,
    /// IPv6 encapsulated in IP (41): Cilium's `IPV6` (6in4, and IPv6 in IPv6).
    Ipv6Encap,
    /// IPsec Encapsulating Security Payload (50).
    Esp,
    /// IPsec Authentication Header (51). In IPv6 too it is the protocol a
    /// packet is judged by, not an extension header skipped to reach what it
    /// protects (see redirect-ebpf's README).
    Ah,
}

impl Protocol {
    /// The extended protocols, in Cilium's order.
    pub const EXTENDED: [Protocol; 7] = [
        Protocol::Vrrp,
        Protocol::Igmp,
        Protocol::Gre,
        Protocol::Ipip,
        Protocol::Ipv6Encap,
        Protocol::Esp,
        Protocol::Ah,
    ];

    /// IANA protocol number (0 for `Any`).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
            Protocol::Icmp => 1,
            Protocol::Icmpv6 => 58,
            Protocol::Any => 0,
            Protocol::Vrrp => 112,
            Protocol::Igmp => 2,
            Protocol::Gre => 47,
            Protocol::Ipip => 4,
            Protocol::Ipv6Encap => 41,
            Protocol::Esp => 50,
            Protocol::Ah => 51,
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
            _ => return Protocol::EXTENDED.into_iter().find(|p| p.number() == n),
        })
    }

    /// Parses a protocol name as Cilium does, in any letter case: `TCP`,
    /// `UDP`, `SCTP`, `ICMP`, `ICMPv6`, `ANY`, and the extended protocols
    /// `VRRP`, `IGMP`, `GRE`, `IPIP`, `IPV6`, `ESP`, `AH`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            "ICMP" => Protocol::Icmp,
            "ICMPV6" => Protocol::Icmpv6,
            "ANY" => Protocol::Any,
            "VRRP" => Protocol::Vrrp,
            "IGMP" => Protocol::Igmp,
            "GRE" => Protocol::Gre,
            "IPIP" => Protocol::Ipip,
            "IPV6" => Protocol::Ipv6Encap,
            "ESP" => Protocol::Esp,
            "AH" => Protocol::Ah,
            _ => return None,
        })
    }

    /// Whether this is one of the extended protocols, which have no ports.
    pub fn is_extended(self) -> bool {
        Protocol::EXTENDED.contains(&self)
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
            Protocol::Vrrp => &[Protocol::Vrrp],
            Protocol::Igmp => &[Protocol::Igmp],
            Protocol::Gre => &[Protocol::Gre],
            Protocol::Ipip => &[Protocol::Ipip],
            Protocol::Ipv6Encap => &[Protocol::Ipv6Encap],
            Protocol::Esp => &[Protocol::Esp],
            Protocol::Ah => &[Protocol::Ah],
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
            Protocol::Vrrp => "VRRP",
            Protocol::Igmp => "IGMP",
            Protocol::Gre => "GRE",
            Protocol::Ipip => "IPIP",
            Protocol::Ipv6Encap => "IPV6",
            Protocol::Esp => "ESP",
            Protocol::Ah => "AH",
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
    pub tls: Option<Arc<PortTls>>,
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
    /// Audit mode: what this rule would drop passes and is reported as
    /// AUDIT; its allows widen nothing that is enforced.
    pub audit: bool,
    /// `spec.log.value`: carried into the flows this rule decides.
    pub log: Option<Arc<str>>,
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

pub(super) fn rerr(path: impl Into<String>, reason: impl Into<String>) -> RuleError {
    RuleError {
        path: path.into(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests;
