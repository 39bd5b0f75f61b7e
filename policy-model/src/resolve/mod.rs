//! Resolution: identities for the topology and the policies' CIDRs and
//! learned names, the selector cache, and each endpoint's resolved policy.
//!
//! The files follow cilium's pipeline: `identities.rs` allocates
//! identities and the ipcache (with `fqdn.rs`, the names learned from
//! DNS), `selectors.rs` evaluates every selector once, `endpoint.rs`
//! resolves one endpoint into a `policy.rs` [`EndpointPolicy`], and
//! `learned.rs` applies an address learned later; `cidr_groups.rs` turns
//! CIDR set entries naming CIDR groups into CIDRs. `cluster.rs` holds the
//! [`Cluster`] they all read; this file builds it.

mod cidr_groups;
mod cluster;
pub(crate) mod endpoint;
mod fqdn;
pub(crate) mod identities;
mod learned;
mod numbering;
mod policy;
pub(crate) mod selectors;

pub use cidr_groups::{add_group_labels, expand_cidr_groups, expand_rule, names_cidr_groups};
pub use cluster::Cluster;
pub use fqdn::{FqdnCache, fqdn_key};
pub use identities::{Endpoint, NamedPort};
pub use numbering::Numbering;
pub use policy::{Contribution, EndpointPolicy, L7Policy};
pub use selectors::peer_selects;

use crate::rules::PolicyRule;
use crate::topology::Topology;
use std::collections::HashMap;

impl Cluster {
    /// Builds identities and the selector cache. Identities are numbered
    /// in allocation order and endpoint ids are topology positions + 1.
    pub fn new(topology: Topology, rules: Vec<PolicyRule>, fqdn: &FqdnCache) -> Self {
        Self::build(topology, rules, fqdn, None)
    }

    /// As [`Cluster::new`], keeping the identity numbers and endpoint ids
    /// of `numbering` (what an incremental resolution handed out, so the
    /// two can be compared).
    pub fn with_numbering(
        topology: Topology,
        rules: Vec<PolicyRule>,
        fqdn: &FqdnCache,
        numbering: &Numbering,
    ) -> Self {
        Self::build(topology, rules, fqdn, Some(numbering))
    }

    fn build(
        topology: Topology,
        rules: Vec<PolicyRule>,
        fqdn: &FqdnCache,
        numbering: Option<&Numbering>,
    ) -> Self {
        let rules = expand_cidr_groups(rules, &topology.cidr_groups);
        let ids = identities::allocate(&topology, &rules, fqdn, numbering);
        let mut cluster = Cluster {
            topology,
            rules,
            identities: ids.identities,
            endpoints: ids.endpoints,
            ipcache: ids.ipcache,
            selections: HashMap::new(),
            subjects: HashMap::new(),
            named_ports: HashMap::new(),
            endpoint_by_name: HashMap::new(),
            endpoint_by_ip: HashMap::new(),
        };
        for (i, e) in cluster.endpoints.iter().enumerate() {
            // The first endpoint of a name or address wins, as the scans
            // these maps replace found it.
            cluster.endpoint_by_name.entry(e.full_name()).or_insert(i);
            for ip in &e.ips {
                cluster.endpoint_by_ip.entry(*ip).or_insert(i);
            }
        }
        for e in &cluster.endpoints {
            for (name, proto, port) in &e.named_ports {
                cluster
                    .named_ports
                    .entry(name.clone())
                    .or_default()
                    .insert((*proto, *port));
            }
        }
        cluster.build_selector_cache();
        cluster
    }
}

#[cfg(test)]
mod testing;
