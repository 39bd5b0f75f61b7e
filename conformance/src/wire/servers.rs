//! The peers a topology group's probes go to, started in the lab: haproxy
//! on every probed TCP port (HTTP/1.1 and h2c), the lab's UDP responders
//! (and raw-protocol ones for the extended protocols: GRE, ESP, ...),
//! knot where DNS probes go, nginx on TLS-probed ports and tansu on
//! Kafka-probed ports, in the pod, node and world namespaces. All of it is
//! stopped when the returned [`Processes`] is dropped.

use super::plan::{DNS_PORT, dns_server, runnable};
use super::{kafka, tls};
use crate::case::Case;
use anyhow::Result;
use policy_model::{Protocol, Topology};
use portcullis_lab::net::{WORLD_NS, WORLD_V4, WORLD_V6};
use portcullis_lab::servers::{self, Processes};
use portcullis_lab::{LabState, paths};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

/// knot's root zone for a topology group: every name probes ask about,
/// with the address a `to-fqdn` probe expects it to resolve to (short TTL).
pub fn zone_for(cases: &[Case]) -> String {
    let mut records: BTreeSet<(String, IpAddr)> = BTreeSet::new();
    for c in cases {
        for p in &c.probes {
            if let (Some(name), Some(ip)) = (&p.to_fqdn, &p.to_ip)
                && let Ok(ip) = ip.parse::<IpAddr>()
            {
                for n in std::iter::once(name).chain(&p.to_fqdn_also) {
                    records.insert((policy_model::l7::dns::normalize_name(n), ip));
                }
            }
            if let Some(name) = &p.dns {
                records.insert((policy_model::l7::dns::normalize_name(name), WORLD_V4));
            }
        }
    }
    let mut z = String::from(
        "$TTL 30\n@ SOA ns.lab. hostmaster.lab. 1 3600 600 86400 30\n@ NS ns.lab.\nns.lab. A 10.201.0.1\n",
    );
    for (name, ip) in records {
        let rr = if ip.is_ipv4() { "A" } else { "AAAA" };
        z.push_str(&format!("{name} 30 {rr} {ip}\n"));
    }
    z
}

/// The TCP and UDP ports the group's runnable probes go to.
fn probed_ports(cases: &[Case]) -> (BTreeSet<u16>, BTreeSet<u16>) {
    let mut tcp = BTreeSet::new();
    let mut udp = BTreeSet::new();
    for p in cases
        .iter()
        .flat_map(|c| c.probes.iter())
        .filter(|p| runnable(p))
    {
        match p
            .protocol
            .as_deref()
            .unwrap_or("TCP")
            .to_ascii_uppercase()
            .as_str()
        {
            "TCP" => {
                tcp.insert(p.port);
            }
            "UDP" => {
                udp.insert(p.port);
            }
            _ => {}
        }
    }
    (tcp, udp)
}

/// The IP protocol numbers of the extended protocols (GRE, ESP, ...) the
/// group's runnable probes send.
fn probed_raw_protocols(cases: &[Case]) -> BTreeSet<u8> {
    cases
        .iter()
        .flat_map(|c| c.probes.iter())
        .filter(|p| runnable(p))
        .filter_map(|p| Protocol::parse(p.protocol.as_deref()?))
        .filter(|p| p.is_extended())
        .map(|p| p.number())
        .collect()
}

/// The namespaces where DNS probes (or probes to port 53) go.
fn dns_namespaces(state: &LabState, topo: &Topology, cases: &[Case]) -> BTreeSet<String> {
    let mut dns_ns = BTreeSet::new();
    for p in cases
        .iter()
        .flat_map(|c| c.probes.iter())
        .filter(|p| runnable(p))
    {
        if p.port != DNS_PORT && p.dns.is_none() && p.to_fqdn.is_none() {
            continue;
        }
        let dst = match (&p.to, p.to_fqdn.is_some()) {
            (Some(side), false) => match crate::model::named_node(topo, side) {
                Some(node) => state.namespace_of(&node.name).ok(),
                None => state.namespace_of(side).ok(),
            },
            (None, false) => Some(WORLD_NS.to_string()),
            (_, true) => dns_server(topo)
                .and_then(|(pod, _)| pod.and_then(|p| state.namespace_of(&p).ok()))
                .or(Some(WORLD_NS.to_string())),
        };
        dns_ns.extend(dst);
    }
    dns_ns
}

/// Starts every peer the group's probes need, with the agent binary `me`
/// for the lab's own responders.
pub fn start(me: &Path, state: &LabState, topo: &Topology, cases: &[Case]) -> Result<Processes> {
    let (mut tcp, mut udp) = probed_ports(cases);
    let raw = probed_raw_protocols(cases);
    tcp.remove(&DNS_PORT);
    udp.remove(&DNS_PORT);
    // Every pod, the world (its own and the topology's addresses) and
    // each node (when it has addresses: the `host` of its own view) serve;
    // UDP binds those addresses.
    let mut namespaces: Vec<(String, Vec<IpAddr>)> = state
        .pods
        .iter()
        .map(|(_, ns)| (ns.clone(), vec![]))
        .collect();
    let mut world: Vec<IpAddr> = vec![WORLD_V4, WORLD_V6];
    world.extend(topo.world.iter().flat_map(|w| w.ips.iter().copied()));
    namespaces.push((WORLD_NS.to_string(), world));
    for node in &state.nodes {
        let view = topo.for_node(&node.name);
        let ips: Vec<IpAddr> = view
            .node
            .iter()
            .flat_map(|n| n.ips.iter().copied())
            .collect();
        if !ips.is_empty() {
            namespaces.push((node.netns.clone(), ips));
        }
    }
    let mut procs = Processes::new();
    // TLS-probed ports are served by nginx (HTTPS), Kafka-probed ports by
    // tansu, not haproxy.
    let tls_ports = tls::ports(cases);
    tcp.retain(|p| !tls_ports.contains(p));
    let kafka_ports = kafka::ports(cases);
    tcp.retain(|p| !kafka_ports.contains(p));
    kafka::start_servers(&mut procs, state, topo, cases)?;
    let ns_names: Vec<String> = namespaces.iter().map(|(n, _)| n.clone()).collect();
    tls::start_servers(&mut procs, cases, &ns_names)?;
    let cfg_dir = paths::work_dir("conformance");
    let dns_ns = dns_namespaces(state, topo, cases);
    if !dns_ns.is_empty() {
        std::fs::write(cfg_dir.join("root.zone"), zone_for(cases))?;
    }
    for ns in &dns_ns {
        servers::start_knot(&mut procs, &cfg_dir, ns)?;
    }
    for (ns, bind) in namespaces {
        if !tcp.is_empty() {
            servers::start_haproxy(&mut procs, &cfg_dir, &ns, &tcp)?;
        }
        if !udp.is_empty() {
            servers::start_responders(&mut procs, me, &ns, &BTreeSet::new(), &udp, &bind)?;
        }
        if !raw.is_empty() {
            servers::start_raw_responders(&mut procs, me, &ns, &raw, &bind)?;
        }
    }
    Ok(procs)
}
