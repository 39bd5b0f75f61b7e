//! What a change does to a node: [`Delta`]; the whole state of the node
//! ([`NodeState`]); and what a writer of deltas holds ([`Realized`]).

use crate::identity::{Identity, NumericIdentity};
use crate::mapstate::{MapChange, MapKey, MapState};
use crate::resolve::{Endpoint, EndpointPolicy, L7Policy};
use ipnet::IpNet;
use std::collections::BTreeMap;

/// One ipcache write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpcacheChange {
    Upsert(IpNet, NumericIdentity),
    Delete(IpNet),
}

/// A local endpoint that appeared, changed (identity, addresses, named
/// ports) or went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointChange {
    /// New, or changed: the endpoint as it is now.
    Upsert(Endpoint),
    /// Gone (or no longer local): its policy map goes with it.
    Removed(Endpoint),
}

/// What one change does to the node, in the order to apply it.
///
/// A writer applies `endpoints` removals (dropping those endpoints' maps),
/// then `ipcache` and `policy` (each endpoint's changes as
/// [`MapState::diff`] orders them: upserts first), then hands `l7` to the
/// proxies. An added endpoint's `policy` holds its whole map; a removed
/// endpoint has none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delta {
    /// Identities that appeared or changed what they stand for (same
    /// number and labels: an FQDN identity's representative address, the
    /// host's labels).
    pub identities_added: Vec<Identity>,
    /// Identities that went away (no ipcache entry or map key refers to
    /// them any more once the delta is applied).
    pub identities_removed: Vec<NumericIdentity>,
    /// Ipcache writes, by prefix.
    pub ipcache: Vec<IpcacheChange>,
    pub endpoints: Vec<EndpointChange>,
    /// Endpoint id -> its policy map changes.
    pub policy: BTreeMap<u16, Vec<MapChange>>,
    /// Endpoint id -> its whole new L7 rule set, for the endpoints whose L7
    /// rules changed (an empty set: none left).
    pub l7: BTreeMap<u16, BTreeMap<MapKey, L7Policy>>,
}

impl Delta {
    /// Whether the change did nothing.
    pub fn is_empty(&self) -> bool {
        self.identities_added.is_empty()
            && self.identities_removed.is_empty()
            && self.ipcache.is_empty()
            && self.endpoints.is_empty()
            && self.policy.is_empty()
            && self.l7.is_empty()
    }
}

/// The whole resolved state of a node: what a restarted daemon writes, and
/// what the property test compares with a resolution from scratch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeState {
    pub identities: BTreeMap<NumericIdentity, Identity>,
    pub ipcache: BTreeMap<IpNet, NumericIdentity>,
    /// Local endpoints by id, with their resolved policy.
    pub endpoints: BTreeMap<u16, (Endpoint, EndpointPolicy)>,
}

impl NodeState {
    /// The ipcache as [`Cluster::ipcache`](crate::Cluster::ipcache) orders
    /// it: longest prefixes first.
    pub fn ipcache_ordered(&self) -> Vec<(IpNet, NumericIdentity)> {
        let mut v: Vec<(IpNet, NumericIdentity)> =
            self.ipcache.iter().map(|(p, i)| (*p, *i)).collect();
        v.sort_by(|a, b| b.0.prefix_len().cmp(&a.0.prefix_len()).then(a.0.cmp(&b.0)));
        v
    }

    /// What a daemon holds after writing this state.
    pub fn realized(&self) -> Realized {
        Realized {
            identities: self.identities.clone(),
            ipcache: self.ipcache.clone(),
            endpoints: self
                .endpoints
                .iter()
                .map(|(id, (e, _))| (*id, e.clone()))
                .collect(),
            maps: self
                .endpoints
                .iter()
                .map(|(id, (_, p))| (*id, p.map.clone()))
                .collect(),
            l7: self
                .endpoints
                .iter()
                .map(|(id, (_, p))| (*id, p.l7.clone()))
                .collect(),
        }
    }
}

/// What a daemon that writes only deltas holds: the ipcache, the local
/// endpoints, their policy maps and their L7 rule sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Realized {
    pub identities: BTreeMap<NumericIdentity, Identity>,
    pub ipcache: BTreeMap<IpNet, NumericIdentity>,
    pub endpoints: BTreeMap<u16, Endpoint>,
    pub maps: BTreeMap<u16, MapState>,
    pub l7: BTreeMap<u16, BTreeMap<MapKey, L7Policy>>,
}

impl Realized {
    /// Applies a delta as a daemon would.
    pub fn apply(&mut self, d: &Delta) {
        for i in &d.identities_added {
            self.identities.insert(i.id, i.clone());
        }
        for id in &d.identities_removed {
            self.identities.remove(id);
        }
        for e in &d.endpoints {
            match e {
                EndpointChange::Removed(ep) => {
                    self.endpoints.remove(&ep.id);
                    self.maps.remove(&ep.id);
                    self.l7.remove(&ep.id);
                }
                EndpointChange::Upsert(ep) => {
                    self.maps.entry(ep.id).or_default();
                    self.l7.entry(ep.id).or_default();
                    self.endpoints.insert(ep.id, ep.clone());
                }
            }
        }
        for c in &d.ipcache {
            match c {
                IpcacheChange::Upsert(p, id) => {
                    self.ipcache.insert(*p, *id);
                }
                IpcacheChange::Delete(p) => {
                    self.ipcache.remove(p);
                }
            }
        }
        for (id, changes) in &d.policy {
            let map = self.maps.entry(*id).or_default();
            for c in changes {
                match c {
                    MapChange::Upsert(k, v) => {
                        map.entries.insert(*k, *v);
                    }
                    MapChange::Delete(k) => {
                        map.entries.remove(k);
                    }
                }
            }
        }
        for (id, l7) in &d.l7 {
            self.l7.insert(*id, l7.clone());
        }
    }
}
