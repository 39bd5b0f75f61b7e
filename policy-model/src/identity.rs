//! Numeric security identities: Cilium's reserved ids, label-set identities
//! for endpoints, and node-local identities for CIDR prefixes and
//! DNS-learned addresses.

use crate::labels::{LabelSet, SOURCE_CIDR, SOURCE_FQDN, SOURCE_RESERVED};
use ipnet::IpNet;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// A numeric security identity. `0` is never an identity: the policy map
/// uses it for "any identity".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct NumericIdentity(pub u32);

impl NumericIdentity {
    pub const ANY: Self = Self(0);
    pub const HOST: Self = Self(1);
    pub const WORLD: Self = Self(2);
    pub const UNMANAGED: Self = Self(3);
    pub const HEALTH: Self = Self(4);
    pub const INIT: Self = Self(5);
    pub const REMOTE_NODE: Self = Self(6);
    pub const KUBE_APISERVER: Self = Self(7);
    pub const INGRESS: Self = Self(8);
    pub const WORLD_IPV4: Self = Self(9);
    pub const WORLD_IPV6: Self = Self(10);
    /// First identity allocated for endpoint label sets.
    pub const FIRST_ENDPOINT: u32 = 256;
    /// First node-local identity (CIDR and FQDN), as Cilium's local scope.
    pub const FIRST_LOCAL: u32 = 1 << 24;

    /// Whether this is a node-local (CIDR/FQDN) identity.
    pub fn is_local(self) -> bool {
        self.0 >= Self::FIRST_LOCAL
    }
}

impl fmt::Display for NumericIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Cilium's reserved identities, with their label names.
pub const RESERVED: &[(NumericIdentity, &str)] = &[
    (NumericIdentity::HOST, "host"),
    (NumericIdentity::WORLD, "world"),
    (NumericIdentity::UNMANAGED, "unmanaged"),
    (NumericIdentity::HEALTH, "health"),
    (NumericIdentity::INIT, "init"),
    (NumericIdentity::REMOTE_NODE, "remote-node"),
    (NumericIdentity::KUBE_APISERVER, "kube-apiserver"),
    (NumericIdentity::INGRESS, "ingress"),
    (NumericIdentity::WORLD_IPV4, "world-ipv4"),
    (NumericIdentity::WORLD_IPV6, "world-ipv6"),
];

/// What an identity stands for; selectors that are not label-based
/// (entities, CIDRs) look at this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityKind {
    /// One of Cilium's reserved identities.
    Reserved,
    /// A label set of one or more pods.
    Endpoint,
    /// A CIDR prefix named by a policy (outside the cluster).
    Cidr(IpNet),
    /// Addresses learned from DNS answers for names these toFQDNs
    /// selectors select, all in the same policy prefixes.
    Fqdn {
        /// One of the addresses (as a /32 or /128): it stands for all of
        /// them where CIDR selectors are evaluated.
        prefix: IpNet,
        names: BTreeSet<String>,
    },
}

/// A resolved identity: number, labels and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: NumericIdentity,
    pub labels: LabelSet,
    pub kind: IdentityKind,
}

impl Identity {
    /// The prefix of a CIDR or FQDN identity; `0.0.0.0/0` / `::/0` for the
    /// family-specific world identities.
    pub fn prefix(&self) -> Option<IpNet> {
        match &self.kind {
            IdentityKind::Cidr(p) => Some(*p),
            IdentityKind::Fqdn { prefix, .. } => Some(*prefix),
            IdentityKind::Reserved if self.id == NumericIdentity::WORLD_IPV4 => {
                Some("0.0.0.0/0".parse().expect("valid literal prefix"))
            }
            IdentityKind::Reserved if self.id == NumericIdentity::WORLD_IPV6 => {
                Some("::/0".parse().expect("valid literal prefix"))
            }
            _ => None,
        }
    }

    /// Whether this identity is outside the cluster (world, CIDR, FQDN).
    pub fn is_world(&self) -> bool {
        matches!(self.kind, IdentityKind::Cidr(_) | IdentityKind::Fqdn { .. })
            || [
                NumericIdentity::WORLD,
                NumericIdentity::WORLD_IPV4,
                NumericIdentity::WORLD_IPV6,
            ]
            .contains(&self.id)
    }

    /// A short human name (`x/a`-style names come from the topology).
    pub fn describe(&self) -> String {
        match &self.kind {
            IdentityKind::Reserved => {
                let name = RESERVED
                    .iter()
                    .find(|(id, _)| *id == self.id)
                    .map(|(_, n)| *n)
                    .unwrap_or("reserved");
                format!("reserved:{name}")
            }
            IdentityKind::Endpoint => {
                // The pod's own labels and namespace; the derived Cilium
                // labels (namespace labels, service account, cluster) are
                // left out to keep explanations readable.
                let mut parts = Vec::new();
                if let Some(ns) = self.labels.get(crate::labels::POD_NAMESPACE_LABEL) {
                    parts.push(format!("ns={}", ns.value));
                }
                for (k, v) in self.labels.iter() {
                    if k.starts_with("io.cilium.k8s.") || k == crate::labels::POD_NAMESPACE_LABEL {
                        continue;
                    }
                    parts.push(if v.value.is_empty() {
                        k.to_string()
                    } else {
                        format!("{k}={}", v.value)
                    });
                }
                format!("identity {} [{}]", self.id, parts.join(" "))
            }
            IdentityKind::Cidr(p) => format!("cidr:{p}"),
            IdentityKind::Fqdn { names, .. } => format!(
                "fqdn:{}",
                names.iter().cloned().collect::<Vec<_>>().join(",")
            ),
        }
    }
}

/// Builds the labels of a reserved identity.
pub fn reserved_labels(name: &str) -> LabelSet {
    LabelSet::new().with(SOURCE_RESERVED, name, "")
}

/// Hands out identities: the same label set always gets the same number
/// within a run, and numbers are never reused (a seeded allocator
/// continues a numbering, see [`IdentityAllocator::seeded`]).
#[derive(Debug, Clone)]
pub struct IdentityAllocator {
    by_labels: HashMap<LabelSet, NumericIdentity>,
    next_endpoint: u32,
    next_local: u32,
}

impl Default for IdentityAllocator {
    fn default() -> Self {
        Self {
            by_labels: HashMap::new(),
            next_endpoint: NumericIdentity::FIRST_ENDPOINT,
            next_local: NumericIdentity::FIRST_LOCAL,
        }
    }
}

impl IdentityAllocator {
    /// A fresh allocator.
    pub fn new() -> Self {
        Self::default()
    }

    /// The identity of an endpoint label set (allocated on first use).
    pub fn endpoint(&mut self, labels: &LabelSet) -> NumericIdentity {
        if let Some(id) = self.by_labels.get(labels) {
            return *id;
        }
        let id = NumericIdentity(self.next_endpoint);
        self.next_endpoint += 1;
        self.by_labels.insert(labels.clone(), id);
        id
    }

    /// An allocator that hands out `numbers` for their label sets and new
    /// numbers from `next_endpoint` / `next_local` up (or above the
    /// highest of `numbers`, whichever is higher), so a number given out
    /// before is never handed to another label set.
    pub fn seeded(
        numbers: &std::collections::BTreeMap<LabelSet, NumericIdentity>,
        next_endpoint: u32,
        next_local: u32,
    ) -> Self {
        let mut a = Self::default();
        a.next_endpoint = a.next_endpoint.max(next_endpoint);
        a.next_local = a.next_local.max(next_local);
        for (labels, id) in numbers {
            if id.is_local() {
                a.next_local = a.next_local.max(id.0 + 1);
            } else {
                a.next_endpoint = a.next_endpoint.max(id.0 + 1);
            }
            a.by_labels.insert(labels.clone(), *id);
        }
        a
    }

    /// The next numbers [`Self::endpoint`] and [`Self::local`] would hand
    /// out for a new label set.
    pub fn next_numbers(&self) -> (u32, u32) {
        (self.next_endpoint, self.next_local)
    }

    /// The identity of a node-local label set (CIDR or FQDN).
    pub fn local(&mut self, labels: &LabelSet) -> NumericIdentity {
        if let Some(id) = self.by_labels.get(labels) {
            return *id;
        }
        let id = NumericIdentity(self.next_local);
        self.next_local += 1;
        self.by_labels.insert(labels.clone(), id);
        id
    }
}

/// Labels of a CIDR identity: `cidr:<prefix>` plus the world labels.
pub fn cidr_labels(prefix: &IpNet) -> LabelSet {
    let world = if prefix.addr().is_ipv4() {
        "world-ipv4"
    } else {
        "world-ipv6"
    };
    LabelSet::new()
        .with(SOURCE_CIDR, &prefix.to_string(), "")
        .with(SOURCE_RESERVED, "world", "")
        .with(SOURCE_RESERVED, world, "")
}

/// Labels of a learned address: `fqdn:<selector>` for each toFQDNs
/// selector that selects a name it answered for, `cidr:<prefix>` for each
/// prefix policies name that contains it, plus world (CFP-28427: no
/// per-address CIDR labels, so addresses with the same selectors share
/// the identity).
pub fn fqdn_labels(
    ip: std::net::IpAddr,
    names: &BTreeSet<String>,
    policy_prefixes: &[IpNet],
) -> LabelSet {
    let world = if ip.is_ipv4() {
        "world-ipv4"
    } else {
        "world-ipv6"
    };
    let mut l = LabelSet::new()
        .with(SOURCE_RESERVED, "world", "")
        .with(SOURCE_RESERVED, world, "");
    for p in policy_prefixes.iter().filter(|p| p.contains(&ip)) {
        l.insert(SOURCE_CIDR, &p.to_string(), "");
    }
    for n in names {
        l.insert(SOURCE_FQDN, n, "");
    }
    l
}
