//! The resolved cluster: identities, endpoints, ipcache and selector
//! cache, with the lookups every other part of resolution reads.

use super::identities::Endpoint;
use crate::identity::{Identity, NumericIdentity};
use crate::rules::{Peer, PolicyRule, Protocol};
use crate::topology::Topology;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// A topology, its policies and learned names, with identities allocated
/// and selectors evaluated.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub topology: Topology,
    pub rules: Vec<PolicyRule>,
    pub(super) identities: BTreeMap<NumericIdentity, Identity>,
    pub(super) endpoints: Vec<Endpoint>,
    /// Prefix -> identity, longest prefixes first.
    pub(super) ipcache: Vec<(IpNet, NumericIdentity)>,
    /// Selector cache: peer or subject selector -> identities it selects.
    pub(super) selections: HashMap<Peer, Arc<Vec<NumericIdentity>>>,
    /// Endpoint identity -> indices of rules that select it.
    pub(super) subjects: HashMap<NumericIdentity, Vec<usize>>,
    /// Port name -> every (protocol, port) a pod gives it.
    pub(super) named_ports: HashMap<String, BTreeSet<(Protocol, u16)>>,
    /// `namespace/name` -> position in `endpoints`.
    pub(super) endpoint_by_name: HashMap<String, usize>,
    /// Pod address -> position in `endpoints`.
    pub(super) endpoint_by_ip: HashMap<IpAddr, usize>,
}

impl Cluster {
    /// All identities, by number.
    pub fn identities(&self) -> &BTreeMap<NumericIdentity, Identity> {
        &self.identities
    }

    /// One identity.
    pub fn identity(&self, id: NumericIdentity) -> Option<&Identity> {
        self.identities.get(&id)
    }

    /// Local endpoints in topology order.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The endpoint `namespace/name`.
    pub fn endpoint(&self, full_name: &str) -> Option<&Endpoint> {
        self.endpoint_by_name
            .get(full_name)
            .map(|i| &self.endpoints[*i])
    }

    /// The endpoint owning `ip`.
    pub fn endpoint_by_ip(&self, ip: IpAddr) -> Option<&Endpoint> {
        self.endpoint_by_ip.get(&ip).map(|i| &self.endpoints[*i])
    }

    /// The ipcache: prefix -> identity, longest prefixes first.
    pub fn ipcache(&self) -> &[(IpNet, NumericIdentity)] {
        &self.ipcache
    }

    /// Longest-prefix identity of an address.
    pub fn identity_of_ip(&self, ip: IpAddr) -> NumericIdentity {
        self.ipcache
            .iter()
            .find(|(p, _)| p.contains(&ip))
            .map(|(_, id)| *id)
            .unwrap_or(NumericIdentity::WORLD)
    }
}
