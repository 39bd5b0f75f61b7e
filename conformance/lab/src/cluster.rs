//! A cluster lab: every node of the topology's `nodes:` list as a network
//! namespace of its own, with its pods behind it, and the nodes joined by
//! an underlay namespace (a bridge) with native routing: each node routes
//! every other node's pod addresses to that node's underlay address. The
//! world namespace hangs off the same bridge, as it hangs off the node's
//! uplink in a one-node lab.
//!
//! [`plan`] is pure: it places and addresses the pods, names the nodes'
//! namespaces and gives each its underlay addresses; [`build`] makes it.

use crate::net::{self, WORLD_NS, WORLD_V4, WORLD_V6, host_prefix};
use crate::netns;
use crate::paths;
use crate::state::LabNode;
use anyhow::{Result, bail};
use policy_model::Topology;
use policy_model::topology::PodSpec;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// The underlay namespace (the bridge every node and the world plug in).
pub const UNDERLAY_NS: &str = "pc-underlay";
/// The bridge in [`UNDERLAY_NS`].
pub const BRIDGE: &str = "br0";
/// The underlay's own addresses (on the bridge): where the lab's API
/// server listens for the agents.
pub const UNDERLAY_V4: Ipv4Addr = Ipv4Addr::new(10, 201, 254, 1);
pub const UNDERLAY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x201, 0, 0, 0, 0, 0, 0xfe01);
/// The API server's port on the underlay.
pub const API_PORT: u16 = 6443;
/// At most this many nodes (each takes an underlay address and a pod
/// range of its own).
pub const MAX_NODES: usize = 100;

/// A node as the cluster lab builds it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedNode {
    pub name: String,
    /// 1-based position in `nodes:`.
    pub index: usize,
    pub netns: String,
    /// The node's uplink addresses on the underlay (its `InternalIP`s).
    pub underlay_v4: Ipv4Addr,
    pub underlay_v6: Ipv6Addr,
    /// The source of the node's own IPv4 packets to its pods: its first
    /// topology IPv4 address, or its underlay address.
    pub src_v4: Ipv4Addr,
}

impl PlannedNode {
    /// The node's files and agent in the lab state.
    pub fn lab_node(&self) -> LabNode {
        LabNode {
            name: self.name.clone(),
            netns: self.netns.clone(),
            state_dir: paths::node_state_dir(&self.name),
            pin_dir: paths::node_pin_dir(&self.name),
            agent_pid: None,
        }
    }

    /// The underlay side of the node's uplink veth.
    pub fn underlay_ifname(&self) -> String {
        format!("u{}", self.index)
    }
}

/// The cluster to build: its nodes and the topology as built.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    pub nodes: Vec<PlannedNode>,
    /// Every pod placed (`node:` set, the first node for a pod without
    /// one) and addressed (from its node's range when it had none), every
    /// node with its underlay addresses added.
    pub topology: Topology,
}

impl ClusterPlan {
    /// The planned node named `name`.
    pub fn node(&self, name: &str) -> Option<&PlannedNode> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// Node `index`'s (1-based) pod range: `10.200.(128+index).0/24` and
/// `fd00:200::(128+index):0/112`, for pods written without addresses.
pub fn node_pod_range(index: usize) -> (ipnet::Ipv4Net, ipnet::Ipv6Net) {
    let third = u8::try_from(128 + index).expect("at most MAX_NODES nodes");
    let v4 = ipnet::Ipv4Net::new(Ipv4Addr::new(10, 200, third, 0), 24).expect("valid prefix");
    let v6 = ipnet::Ipv6Net::new(
        Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 128 + index as u16, 0),
        112,
    )
    .expect("valid prefix");
    (v4, v6)
}

/// Whether `topo` asks for a cluster lab: two nodes or more in `nodes:`.
pub fn is_cluster(topo: &Topology) -> bool {
    topo.nodes.len() >= 2
}

/// Plans the cluster for `topo` (a topology with `nodes:`).
pub fn plan(topo: &Topology) -> Result<ClusterPlan> {
    if topo.nodes.is_empty() {
        bail!("a cluster lab needs `nodes:` in the topology");
    }
    if topo.nodes.len() > MAX_NODES {
        bail!(
            "the lab builds at most {MAX_NODES} nodes; the topology has {}",
            topo.nodes.len()
        );
    }
    let mut nodes = Vec::new();
    for (i, n) in topo.nodes.iter().enumerate() {
        let index = i + 1;
        if n.name.is_empty() || n.name.contains('/') || n.name.len() > 40 {
            bail!(
                "node {:?}: a lab node's name must be 1 to 40 characters without '/'",
                n.name
            );
        }
        if topo.nodes[..i].iter().any(|o| o.name == n.name) {
            bail!("node {:?} is listed twice in `nodes:`", n.name);
        }
        let last = u8::try_from(255 - index).expect("at most MAX_NODES nodes");
        let underlay_v4 = Ipv4Addr::new(10, 201, 255, last);
        let underlay_v6 = Ipv6Addr::new(0xfd00, 0x201, 0, 0, 0, 0, 0, 0xffff - index as u16);
        let src_v4 = n
            .ips
            .iter()
            .find_map(|ip| match ip {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .unwrap_or(underlay_v4);
        nodes.push(PlannedNode {
            name: n.name.clone(),
            index,
            netns: format!("{}node-{}", net::NS_PREFIX, n.name),
            underlay_v4,
            underlay_v6,
            src_v4,
        });
    }
    let mut built = topo.clone();
    for (n, planned) in built.nodes.iter_mut().zip(&nodes) {
        for ip in [
            IpAddr::V4(planned.underlay_v4),
            IpAddr::V6(planned.underlay_v6),
        ] {
            if !n.ips.contains(&ip) {
                n.ips.push(ip);
            }
        }
    }
    let mut next_host = vec![2u16; nodes.len()];
    for pod in &mut built.pods {
        let node = match &pod.node {
            Some(name) => nodes.iter().position(|n| &n.name == name).ok_or_else(|| {
                anyhow::anyhow!(
                    "pod {}: node {name:?} is not in `nodes:` ({})",
                    pod.full_name(),
                    topo.nodes
                        .iter()
                        .map(|n| n.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
            None => 0,
        };
        let needs_addresses = pod.addresses().is_empty();
        if pod.node.is_some() && !needs_addresses {
            continue;
        }
        let p: &mut PodSpec = Arc::make_mut(pod);
        p.node = Some(nodes[node].name.clone());
        if needs_addresses {
            let host = next_host[node];
            if host > 253 {
                bail!(
                    "node {}: more than 252 pods without addresses (give them `ip:`)",
                    nodes[node].name
                );
            }
            next_host[node] += 1;
            let (v4, v6) = node_pod_range(nodes[node].index);
            let o = v4.network().octets();
            p.ips = vec![
                IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], host as u8)),
                IpAddr::V6(Ipv6Addr::from(u128::from(v6.network()) + u128::from(host))),
            ];
        }
    }
    built
        .validate("the cluster topology")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(ClusterPlan {
        nodes,
        topology: built,
    })
}

/// `ip route add PREFIX via GW dev pcup` in `ns` (IPv4 with source `src`).
fn route_via(ns: &str, ip: &IpAddr, gw_v4: Ipv4Addr, gw_v6: Ipv6Addr, src: Ipv4Addr) -> Result<()> {
    let p = host_prefix(ip);
    match ip {
        IpAddr::V4(_) => netns::ip_in(
            ns,
            &[
                "route",
                "replace",
                &p,
                "via",
                &gw_v4.to_string(),
                "dev",
                net::UPLINK_IF,
                "src",
                &src.to_string(),
            ],
        ),
        IpAddr::V6(_) => netns::ip_in(
            ns,
            &[
                "-6",
                "route",
                "replace",
                &p,
                "via",
                &gw_v6.to_string(),
                "dev",
                net::UPLINK_IF,
            ],
        ),
    }
}

/// Builds the planned cluster: the underlay and its bridge, the world,
/// each node with its uplink on the bridge, each pod on its node, and the
/// routes between them. Returns each pod (`ns/pod`) with its namespace
/// and node. [`crate::down`] removes what it made.
pub fn build(plan: &ClusterPlan) -> Result<Vec<(String, String, String)>> {
    let topo = &plan.topology;
    netns::ip(&["netns", "add", UNDERLAY_NS])?;
    netns::ip_in(UNDERLAY_NS, &["link", "set", "lo", "up"])?;
    netns::sysctl_in(UNDERLAY_NS, "net.ipv6.conf.all.accept_dad", "0")?;
    netns::sysctl_in(UNDERLAY_NS, "net.ipv6.conf.default.accept_dad", "0")?;
    netns::ip_in(UNDERLAY_NS, &["link", "add", BRIDGE, "type", "bridge"])?;
    netns::ip_in(UNDERLAY_NS, &["link", "set", BRIDGE, "up"])?;
    net::add_addr(UNDERLAY_NS, &format!("{UNDERLAY_V4}/16"), BRIDGE, false)?;
    net::add_addr(UNDERLAY_NS, &format!("{UNDERLAY_V6}/64"), BRIDGE, true)?;

    // The world, on the bridge; it routes each node's pods to that node.
    netns::ip(&["netns", "add", WORLD_NS])?;
    netns::ip_in(WORLD_NS, &["link", "set", "lo", "up"])?;
    netns::sysctl_in(WORLD_NS, "net.ipv6.conf.all.accept_dad", "0")?;
    netns::ip(&[
        "link",
        "add",
        "uw",
        "netns",
        UNDERLAY_NS,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        WORLD_NS,
    ])?;
    netns::ip_in(UNDERLAY_NS, &["link", "set", "uw", "master", BRIDGE, "up"])?;
    net::add_addr(WORLD_NS, &format!("{WORLD_V4}/16"), "eth0", false)?;
    net::add_addr(WORLD_NS, &format!("{WORLD_V6}/64"), "eth0", true)?;
    for ip in topo.world.iter().flat_map(|w| w.ips.iter()) {
        net::add_addr(WORLD_NS, &host_prefix(ip), "eth0", ip.is_ipv6())?;
    }
    netns::ip_in(WORLD_NS, &["link", "set", "eth0", "up"])?;

    for node in &plan.nodes {
        let ns = &node.netns;
        netns::ip(&["netns", "add", ns])?;
        netns::ip_in(ns, &["link", "set", "lo", "up"])?;
        netns::sysctl_in(ns, "net.ipv4.ip_forward", "1")?;
        netns::sysctl_in(ns, "net.ipv6.conf.all.forwarding", "1")?;
        netns::sysctl_in(ns, "net.ipv6.conf.all.accept_dad", "0")?;
        let spec = topo.nodes.iter().find(|n| n.name == node.name);
        for ip in spec.iter().flat_map(|n| n.ips.iter()) {
            if *ip == IpAddr::V4(node.underlay_v4) || *ip == IpAddr::V6(node.underlay_v6) {
                continue;
            }
            netns::ip_in(ns, &["addr", "add", &host_prefix(ip), "dev", "lo"])?;
        }
        let uif = node.underlay_ifname();
        netns::ip(&[
            "link",
            "add",
            net::UPLINK_IF,
            "netns",
            ns,
            "type",
            "veth",
            "peer",
            "name",
            &uif,
            "netns",
            UNDERLAY_NS,
        ])?;
        netns::ip_in(UNDERLAY_NS, &["link", "set", &uif, "master", BRIDGE, "up"])?;
        net::add_addr(
            ns,
            &format!("{}/16", node.underlay_v4),
            net::UPLINK_IF,
            false,
        )?;
        net::add_addr(
            ns,
            &format!("{}/64", node.underlay_v6),
            net::UPLINK_IF,
            true,
        )?;
        netns::ip_in(ns, &["link", "set", net::UPLINK_IF, "up"])?;
    }

    // The pods, each on its node; endpoint ids are positions in the
    // topology (counting from 1), unique across the cluster.
    let mut pods = Vec::new();
    for (i, pod) in topo.pods.iter().enumerate() {
        let id = u16::try_from(i + 1).map_err(|_| anyhow::anyhow!("too many pods"))?;
        let node_name = pod.node.as_deref().unwrap_or_default();
        let Some(node) = plan.node(node_name) else {
            bail!("pod {}: no node {node_name:?}", pod.full_name());
        };
        let ns = net::link_pod_on(id, pod, &node.netns, Some(IpAddr::V4(node.src_v4)))?;
        pods.push((pod.full_name(), ns, node.name.clone()));
    }

    // Native routing: every node (and the world) reaches each pod and
    // each node's own addresses through that node's underlay address.
    for node in &plan.nodes {
        let spec = topo.nodes.iter().find(|n| n.name == node.name);
        let own: Vec<IpAddr> = spec
            .iter()
            .flat_map(|n| n.ips.iter().copied())
            .filter(|ip| *ip != IpAddr::V4(node.underlay_v4) && *ip != IpAddr::V6(node.underlay_v6))
            .collect();
        let behind: Vec<IpAddr> = topo
            .pods
            .iter()
            .filter(|p| p.node.as_deref() == Some(node.name.as_str()))
            .flat_map(|p| p.addresses())
            .chain(own)
            .collect();
        for other in plan.nodes.iter().filter(|o| o.name != node.name) {
            for ip in &behind {
                route_via(
                    &other.netns,
                    ip,
                    node.underlay_v4,
                    node.underlay_v6,
                    other.src_v4,
                )?;
            }
        }
        for ip in &behind {
            route_via_world(ip, node)?;
        }
    }
    Ok(pods)
}

/// The world's route to `ip` through `node`.
fn route_via_world(ip: &IpAddr, node: &PlannedNode) -> Result<()> {
    let p = host_prefix(ip);
    match ip {
        IpAddr::V4(_) => netns::ip_in(
            WORLD_NS,
            &["route", "replace", &p, "via", &node.underlay_v4.to_string()],
        ),
        IpAddr::V6(_) => netns::ip_in(
            WORLD_NS,
            &[
                "-6",
                "route",
                "replace",
                &p,
                "via",
                &node.underlay_v6.to_string(),
            ],
        ),
    }
}

#[cfg(test)]
mod tests;
