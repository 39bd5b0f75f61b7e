//! The lab's network: its fixed names and addresses, the check that a
//! topology fits them, and the namespaces and veth links `lab up` makes
//! (node and world first, then one link per pod).

use crate::netns;
use crate::paths::LAB_NODE;
use anyhow::{Result, bail};
use policy_model::Topology;
use policy_model::topology::PodSpec;
use std::net::IpAddr;

/// Node namespace name.
pub const NODE_NS: &str = "pc-node";
/// World namespace name.
pub const WORLD_NS: &str = "pc-world";
/// Prefix of every namespace the lab creates.
pub const NS_PREFIX: &str = "pc-";
/// Node side of the uplink veth.
pub const UPLINK_IF: &str = "pcup";
/// Gateway address every pod routes through (on each node-side veth).
pub const POD_GATEWAY_V4: &str = "169.254.1.1";
pub const POD_GATEWAY_V6: &str = "fe80::1";
/// Node-side addresses of the uplink.
pub const UPLINK_NODE_V4: &str = "10.201.255.254";
pub const UPLINK_NODE_V6: &str = "fd00:201::fffe";
/// The world namespace's own addresses (on its end of the uplink).
pub const WORLD_V4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 201, 0, 1));
pub const WORLD_V6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0x201, 0, 0, 0, 0, 0, 1));

/// Namespace of the pod with endpoint id `id`.
pub fn pod_ns(id: u16) -> String {
    format!("{NS_PREFIX}pod{id}")
}

/// Node-side interface of the pod with endpoint id `id`.
pub fn host_ifname(id: u16) -> String {
    format!("pc{id}")
}

fn net(s: &str) -> ipnet::IpNet {
    s.parse().expect("literal")
}

/// The lab's pod ranges (also the node's addresses).
pub fn pod_nets() -> [ipnet::IpNet; 2] {
    [net("10.200.0.0/16"), net("fd00:200::/64")]
}

/// The world's ranges, behind the uplink.
pub fn world_nets() -> [ipnet::IpNet; 2] {
    [net("10.201.0.0/16"), net("fd00:201::/64")]
}

/// Fails unless every address of the topology is in the lab's ranges:
/// the lab's addresses are never reachable from outside.
pub fn check_lab_addresses(topo: &Topology) -> Result<()> {
    let in_pods = |ip: &IpAddr| pod_nets().iter().any(|n| n.contains(ip));
    let in_world = |ip: &IpAddr| world_nets().iter().any(|n| n.contains(ip));
    for p in &topo.pods {
        for ip in p.addresses() {
            if !in_pods(&ip) {
                bail!(
                    "pod {}: address {ip} is outside the lab's pod ranges 10.200.0.0/16 and fd00:200::/64",
                    p.full_name()
                );
            }
        }
    }
    for ip in topo.world.iter().flat_map(|w| w.ips.iter()) {
        if !in_world(ip) {
            bail!("world address {ip} is outside 10.201.0.0/16 and fd00:201::/64");
        }
    }
    for ip in topo.node.iter().flat_map(|w| w.ips.iter()) {
        if !in_pods(ip) {
            bail!("node address {ip} is outside 10.200.0.0/16 and fd00:200::/64");
        }
    }
    for n in &topo.nodes {
        for ip in &n.ips {
            if !in_pods(ip) {
                bail!(
                    "node {}: address {ip} is outside 10.200.0.0/16 and fd00:200::/64",
                    n.name
                );
            }
        }
    }
    Ok(())
}

/// `ADDR/32` or `ADDR/128`.
pub fn host_prefix(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// `ip addr add ADDR/len dev DEV` in `ns`, without duplicate address
/// detection for IPv6 (the lab's addresses are usable at once).
pub(crate) fn add_addr(ns: &str, prefix: &str, dev: &str, v6: bool) -> Result<()> {
    if v6 {
        netns::ip_in(ns, &["addr", "add", prefix, "dev", dev, "nodad"])
    } else {
        netns::ip_in(ns, &["addr", "add", prefix, "dev", dev])
    }
}

/// The node and world namespaces, the node's addresses, and the uplink
/// veth between them with the world's addresses and default routes.
pub fn make_node_and_world(topo: &Topology) -> Result<()> {
    for ns in [NODE_NS, WORLD_NS] {
        netns::ip(&["netns", "add", ns])?;
        netns::ip_in(ns, &["link", "set", "lo", "up"])?;
    }
    netns::sysctl_in(NODE_NS, "net.ipv4.ip_forward", "1")?;
    netns::sysctl_in(NODE_NS, "net.ipv6.conf.all.forwarding", "1")?;
    for ip in topo.node.iter().flat_map(|n| n.ips.iter()) {
        netns::ip_in(NODE_NS, &["addr", "add", &host_prefix(ip), "dev", "lo"])?;
    }

    netns::ip(&[
        "link", "add", UPLINK_IF, "netns", NODE_NS, "type", "veth", "peer", "name", "eth0",
        "netns", WORLD_NS,
    ])?;
    add_addr(NODE_NS, &format!("{UPLINK_NODE_V4}/16"), UPLINK_IF, false)?;
    add_addr(NODE_NS, &format!("{UPLINK_NODE_V6}/64"), UPLINK_IF, true)?;
    netns::ip_in(NODE_NS, &["link", "set", UPLINK_IF, "up"])?;
    netns::sysctl_in(WORLD_NS, "net.ipv6.conf.all.accept_dad", "0")?;
    add_addr(WORLD_NS, &format!("{WORLD_V4}/16"), "eth0", false)?;
    add_addr(WORLD_NS, &format!("{WORLD_V6}/64"), "eth0", true)?;
    for ip in topo.world.iter().flat_map(|w| w.ips.iter()) {
        add_addr(WORLD_NS, &host_prefix(ip), "eth0", ip.is_ipv6())?;
    }
    netns::ip_in(WORLD_NS, &["link", "set", "eth0", "up"])?;
    netns::ip_in(
        WORLD_NS,
        &["route", "add", "default", "via", UPLINK_NODE_V4],
    )?;
    netns::ip_in(
        WORLD_NS,
        &["-6", "route", "add", "default", "via", UPLINK_NODE_V6],
    )?;
    Ok(())
}

/// The pod with endpoint id `id`: its namespace, and a veth to the node
/// (`eth0` in the pod, [`host_ifname`] on the node) with the pod's
/// addresses, the gateway routes in the pod and host routes on the node
/// (IPv4 ones with the node's first IPv4 address as source, if any).
/// Returns the pod's namespace.
pub fn link_pod(id: u16, pod: &PodSpec, node_v4: Option<IpAddr>) -> Result<String> {
    link_pod_on(id, pod, NODE_NS, node_v4)
}

/// [`link_pod`] on the node whose namespace is `node_ns` (a cluster lab's
/// node).
pub fn link_pod_on(
    id: u16,
    pod: &PodSpec,
    node_ns: &str,
    node_v4: Option<IpAddr>,
) -> Result<String> {
    let ns = pod_ns(id);
    let hif = host_ifname(id);
    netns::ip(&["netns", "add", &ns])?;
    netns::ip_in(&ns, &["link", "set", "lo", "up"])?;
    netns::sysctl_in(&ns, "net.ipv6.conf.all.accept_dad", "0")?;
    netns::ip(&[
        "link", "add", &hif, "netns", node_ns, "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ])?;
    for ip in pod.addresses() {
        add_addr(&ns, &host_prefix(&ip), "eth0", ip.is_ipv6())?;
    }
    netns::ip_in(&ns, &["link", "set", "eth0", "up"])?;
    netns::ip_in(
        &ns,
        &[
            "route",
            "add",
            POD_GATEWAY_V4,
            "dev",
            "eth0",
            "scope",
            "link",
        ],
    )?;
    netns::ip_in(
        &ns,
        &[
            "route",
            "add",
            "default",
            "via",
            POD_GATEWAY_V4,
            "dev",
            "eth0",
        ],
    )?;
    netns::ip_in(
        &ns,
        &[
            "-6",
            "route",
            "add",
            "default",
            "via",
            POD_GATEWAY_V6,
            "dev",
            "eth0",
        ],
    )?;
    add_addr(node_ns, &format!("{POD_GATEWAY_V4}/32"), &hif, false)?;
    add_addr(node_ns, &format!("{POD_GATEWAY_V6}/64"), &hif, true)?;
    netns::ip_in(node_ns, &["link", "set", &hif, "up"])?;
    for ip in pod.addresses() {
        let p = host_prefix(&ip);
        match (ip, node_v4) {
            (IpAddr::V4(_), Some(src)) => netns::ip_in(
                node_ns,
                &["route", "add", &p, "dev", &hif, "src", &src.to_string()],
            )?,
            (IpAddr::V4(_), None) => netns::ip_in(node_ns, &["route", "add", &p, "dev", &hif])?,
            (IpAddr::V6(_), _) => netns::ip_in(node_ns, &["-6", "route", "add", &p, "dev", &hif])?,
        }
    }
    Ok(ns)
}

/// Each pod of the lab's node (`ns/pod`, [`Topology::pods_on`] the
/// [`LAB_NODE`]: pods without `node:` or with `node: lab-node`) with the
/// namespace `lab up` gives it: endpoint ids are the pod's position in the
/// topology, counting from 1, so a file without `node:` numbers as before.
/// Pods on other nodes get no namespace: they exist only as addresses.
pub fn pod_namespaces(topo: &Topology) -> Result<Vec<(String, String)>> {
    local_pods(topo)?
        .into_iter()
        .map(|(id, p)| Ok((p.full_name(), pod_ns(id))))
        .collect()
}

/// The pods of the lab's node with their endpoint ids (see
/// [`pod_namespaces`]).
pub fn local_pods(topo: &Topology) -> Result<Vec<(u16, &PodSpec)>> {
    topo.pods
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_on(LAB_NODE))
        .map(|(i, p)| {
            let id = u16::try_from(i + 1).map_err(|_| anyhow::anyhow!("too many pods"))?;
            Ok((id, &**p))
        })
        .collect()
}

/// The pods of other nodes (`ns/pod`, node): no namespace, no veth, only
/// addresses the agent keeps as remote endpoints.
pub fn remote_pods(topo: &Topology) -> Vec<(String, String)> {
    topo.pods
        .iter()
        .filter(|p| !p.is_on(LAB_NODE))
        .map(|p| (p.full_name(), p.node.clone().unwrap_or_default()))
        .collect()
}

#[cfg(test)]
mod tests;
