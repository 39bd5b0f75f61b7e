//! Which addresses of a DNS answer the agent learns (issue 13, findings
//! 1a and 6).
//!
//! A learned address lands in the node-wide ipcache and widens what is
//! allowed wherever a `toFQDNs` allow selects its name (an `egressDeny`
//! `toFQDNs` narrows it instead). So before an answer's addresses reach
//! the store:
//!
//! - addresses no `toFQDNs` rule may select are refused: loopback,
//!   unspecified, link-local, multicast, broadcast, IPv4-mapped and
//!   IPv4-compatible IPv6, the node's own addresses (they are `host`), and
//!   cluster addresses (pods, the configured pod ranges);
//! - each endpoint has budgets: addresses per name (Cilium's
//!   `--tofqdns-endpoint-max-ip-per-hostname`) and addresses in all;
//! - the node has a budget for all learned addresses, below the ipcache's
//!   size, so learning never crowds out cluster entries.
//!
//! A refused address gets no name: no `toFQDNs` allow admits it and no
//! `toFQDNs` deny denies it (the other rules judge it, e.g. a `world`
//! allow), and it is counted by reason. Budgets free up as addresses
//! expire.

use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

/// Learned-address budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnLimits {
    /// Addresses one endpoint may have learned under one name.
    pub per_name: usize,
    /// Addresses one endpoint may have learned in all.
    pub per_endpoint: usize,
    /// Learned (name, address) pairs on the node.
    pub node: usize,
}

/// Why an address was not learned (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// An address class no `toFQDNs` rule may select.
    Unlearnable(&'static str),
    /// The node owns it: it is `host`.
    NodeAddress,
    /// A pod's address or in a pod range.
    ClusterAddress,
    /// The endpoint has `per_name` addresses under this name.
    PerName,
    /// The endpoint has `per_endpoint` addresses.
    PerEndpoint,
    /// The node has `node` learned addresses.
    Node,
}

impl Refusal {
    /// The label in metrics and `status`.
    pub fn label(&self) -> String {
        match self {
            Refusal::Unlearnable(class) => format!("unlearnable-{class}"),
            Refusal::NodeAddress => "node-address".into(),
            Refusal::ClusterAddress => "cluster-address".into(),
            Refusal::PerName => "per-endpoint-per-name-budget".into(),
            Refusal::PerEndpoint => "per-endpoint-budget".into(),
            Refusal::Node => "node-budget".into(),
        }
    }
}

/// The class of an address that no DNS answer may make allowed, if it is
/// one.
pub fn unlearnable_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_unspecified() {
                Some("unspecified")
            } else if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if v4.is_broadcast() {
                Some("broadcast")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.to_ipv4_mapped().is_some() {
                Some("ipv4-mapped")
            } else if seg[..6] == [0; 6] {
                // ::a.b.c.d (deprecated IPv4-compatible), ::1 handled above.
                Some("ipv4-compatible")
            } else {
                None
            }
        }
    }
}

/// A DNS answer's addresses with their TTLs.
pub type Answer = Vec<(IpAddr, Duration)>;

/// The learn filter and the per-endpoint accounting.
#[derive(Debug)]
pub struct LearnGuard {
    limits: LearnLimits,
    /// Addresses the node owns (kept current by the agent).
    node: BTreeSet<IpAddr>,
    /// Pod addresses and configured pod ranges.
    cluster_addrs: HashSet<IpAddr>,
    cluster_ranges: Vec<IpNet>,
    /// Which endpoint an address belongs to (a pod's v4 and v6 share one
    /// budget); an unknown source is its own endpoint.
    endpoint_of: HashMap<IpAddr, String>,
    /// Endpoint -> name -> addresses it learned.
    charged: HashMap<String, HashMap<String, BTreeSet<IpAddr>>>,
    /// Refusals since start, by reason label.
    refused: BTreeMap<String, u64>,
}

impl LearnGuard {
    pub fn new(limits: LearnLimits, pod_ranges: Vec<IpNet>) -> Self {
        LearnGuard {
            limits,
            node: BTreeSet::new(),
            cluster_addrs: HashSet::new(),
            cluster_ranges: pod_ranges,
            endpoint_of: HashMap::new(),
            charged: HashMap::new(),
            refused: BTreeMap::new(),
        }
    }

    /// The node's addresses (never learned).
    pub fn set_node_addresses(&mut self, node: BTreeSet<IpAddr>) {
        self.node = node;
    }

    /// The cluster's endpoints: `(ns/pod, addresses)`.
    pub fn set_endpoints<'a>(&mut self, endpoints: impl Iterator<Item = (String, &'a [IpAddr])>) {
        self.cluster_addrs.clear();
        self.endpoint_of.clear();
        for (name, ips) in endpoints {
            for ip in ips {
                self.cluster_addrs.insert(*ip);
                self.endpoint_of.insert(*ip, name.clone());
            }
        }
    }

    /// One endpoint's addresses changed: `old` (its addresses before) are
    /// forgotten unless another endpoint holds them, `new` are its.
    pub fn update_endpoint(&mut self, name: &str, old: &[IpAddr], new: &[IpAddr]) {
        for ip in old {
            if self.endpoint_of.get(ip).is_some_and(|n| n == name) {
                self.endpoint_of.remove(ip);
                self.cluster_addrs.remove(ip);
            }
        }
        for ip in new {
            self.cluster_addrs.insert(*ip);
            self.endpoint_of.insert(*ip, name.to_string());
        }
    }

    /// Why `ip` may never be learned, whoever asks.
    pub fn never_learned(&self, ip: IpAddr) -> Option<Refusal> {
        if let Some(class) = unlearnable_class(ip) {
            return Some(Refusal::Unlearnable(class));
        }
        if self.node.contains(&ip) {
            return Some(Refusal::NodeAddress);
        }
        if self.cluster_addrs.contains(&ip) || self.cluster_ranges.iter().any(|r| r.contains(&ip)) {
            return Some(Refusal::ClusterAddress);
        }
        None
    }

    /// The addresses of one answer (for `source`, under the normalized
    /// `name`) that may be learned; the others are counted as refused.
    /// `learned_pairs` is how many (name, address) pairs the node has
    /// learned so far.
    pub fn admit(
        &mut self,
        source: IpAddr,
        name: &str,
        ips: &[(IpAddr, Duration)],
        learned_pairs: usize,
    ) -> (Answer, Vec<(IpAddr, Refusal)>) {
        let endpoint = self
            .endpoint_of
            .get(&source)
            .cloned()
            .unwrap_or_else(|| source.to_string());
        let mut admitted = Vec::new();
        let mut refused = Vec::new();
        let mut added = 0usize;
        for (ip, ttl) in ips {
            if let Some(r) = self.never_learned(*ip) {
                refused.push((*ip, r));
                continue;
            }
            let names = self.charged.entry(endpoint.clone()).or_default();
            if names.get(name).is_some_and(|s| s.contains(ip)) {
                admitted.push((*ip, *ttl));
                continue;
            }
            let total: usize = names.values().map(BTreeSet::len).sum();
            let refusal = if names.get(name).map_or(0, BTreeSet::len) >= self.limits.per_name {
                Some(Refusal::PerName)
            } else if total >= self.limits.per_endpoint {
                Some(Refusal::PerEndpoint)
            } else if learned_pairs + added >= self.limits.node {
                Some(Refusal::Node)
            } else {
                None
            };
            match refusal {
                Some(r) => refused.push((*ip, r)),
                None => {
                    names.entry(name.to_string()).or_default().insert(*ip);
                    added += 1;
                    admitted.push((*ip, *ttl));
                }
            }
        }
        for (_, r) in &refused {
            *self.refused.entry(r.label()).or_default() += 1;
        }
        (admitted, refused)
    }

    /// Forgets charges for (name, address) pairs the store no longer has
    /// (expired): the budgets free up.
    pub fn prune(&mut self, knows: impl Fn(&str, &IpAddr) -> bool) {
        for names in self.charged.values_mut() {
            for (name, ips) in names.iter_mut() {
                ips.retain(|ip| knows(name, ip));
            }
            names.retain(|_, ips| !ips.is_empty());
        }
        self.charged.retain(|_, names| !names.is_empty());
    }

    /// Refusals since start, by reason.
    pub fn refused(&self) -> &BTreeMap<String, u64> {
        &self.refused
    }
}

#[cfg(test)]
mod tests;
