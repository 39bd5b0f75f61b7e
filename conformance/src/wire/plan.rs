//! A case's probes as wire probes: for each probe the model can judge and
//! the lab can send, one wire probe per address family and per call (HTTP
//! as HTTP/1.1 and HTTP/2, TLS with and without h2 by ALPN), each with the
//! outcome the model's verdict means on the wire. Pure: it reads the case,
//! the topology and the lab's namespace names, and sends nothing.

use super::kafka::{self, KafkaCall};
use super::tls::{self, TlsCall};
use crate::case::{Case, Expect, Probe};
use crate::model;
use policy_model::{Layer, Protocol, Topology, Verdict};
use portcullis_lab::LabState;
use portcullis_lab::net::{WORLD_NS, WORLD_V4, WORLD_V6, world_nets};
use portcullis_lab::probe::{DNS_ANSWERED, DNS_REFUSED, Outcome};
use std::net::IpAddr;

/// The DNS port: served by knot (a real authoritative server) wherever a
/// probe goes to it; L4 probes to it send a DNS query.
pub const DNS_PORT: u16 = 53;

/// An HTTP request of a probe (sent with curl).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCall {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub headers: Vec<String>,
    pub h2: bool,
}

/// What a wire probe sends.
#[derive(Clone, Debug)]
pub enum WireCall {
    /// A TCP connect, a UDP exchange or a ping; to port 53 over TCP or UDP,
    /// a DNS query (any answer means connected).
    L4,
    /// An HTTP request (to port 53 over TCP or UDP: a DNS query, as L4).
    Http(HttpCall),
    /// A DNS query for this name (a `dns:` probe).
    Dns(String),
    /// HTTPS with curl (a `tls:` probe), see `wire::tls`.
    Tls(TlsCall),
    /// A Kafka request (kafka-python to tansu), see `wire::kafka`.
    Kafka(KafkaCall),
}

/// One probe as run on the wire.
#[derive(Clone, Debug)]
pub struct WireProbe {
    pub describe: String,
    /// `v4`/`v6`, with `/h2` for HTTP/2 requests, `/tls` and `/h2s` for TLS.
    pub family: &'static str,
    pub call: WireCall,
    /// What the wire must show for the model's verdict.
    pub want: Outcome,
    /// Resolve these names through these servers first (a `to-fqdn`
    /// probe: its name and its `to-fqdn-also` names), A or AAAA as the
    /// destination's family.
    pub resolve_first: Vec<(String, IpAddr)>,
    pub src_ns: String,
    /// The source address to bind, for sources in the world or node
    /// namespaces (which hold several).
    pub src_ip: Option<IpAddr>,
    pub dst: IpAddr,
    /// The pods on either side (`ns/pod`), when they are pods.
    pub src_pod: Option<String>,
    pub dst_pod: Option<String>,
    /// The nodes of either side (a pod's node, or the node itself); `None`
    /// for the world.
    pub src_node: Option<String>,
    pub dst_node: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
    pub model: Verdict,
    pub expect: Expect,
}

/// A case's wire probes, and how many of its probes could not be sent.
#[derive(Debug, Default)]
pub struct CasePlan {
    pub probes: Vec<WireProbe>,
    pub skipped: usize,
}

/// Whether a probe can run in the lab (Kafka probes are skipped, counted,
/// when tansu or kafka-python is missing: see [`plan_case`]).
pub fn runnable(p: &Probe) -> bool {
    p.e2e != Some(false)
}

/// Whether the lab sends probes of `proto` to `port`: not SCTP, of ICMP
/// only echo requests, and the extended protocols (raw packets, answered
/// by the lab's raw responders) without a port.
pub fn sends(proto: Protocol, port: u16) -> bool {
    match proto {
        Protocol::Icmp => port == 8,
        Protocol::Icmpv6 => port == 128,
        Protocol::Sctp => false,
        p if p.is_extended() => port == 0,
        _ => true,
    }
}

/// Whether a probe reaches the wire (Kafka probes aside, which need a
/// broker): runnable, and of a protocol the lab sends.
pub fn sendable(p: &Probe) -> bool {
    runnable(p) && model::probe_protocol(p).is_ok_and(|proto| sends(proto, p.port))
}

/// The cluster's DNS server: a pod labelled `k8s-app: kube-dns`, else the
/// world namespace's 10.201.0.1.
pub fn dns_server(topo: &Topology) -> Option<(Option<String>, IpAddr)> {
    if let Some(p) = topo
        .pods
        .iter()
        .find(|p| p.labels.get("k8s-app").is_some_and(|v| v == "kube-dns"))
    {
        let ip = p.addresses().into_iter().find(|a| a.is_ipv4())?;
        return Some((Some(p.full_name()), ip));
    }
    Some((None, WORLD_V4))
}

/// One side of a wire probe in the lab, for one address family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The namespace it is in (where a source sends from).
    pub ns: String,
    pub addr: IpAddr,
    /// The pod (`ns/pod`), when the side is one.
    pub pod: Option<String>,
    /// The pod's node, or the node itself; `None` for the world.
    pub node: Option<String>,
    /// The namespace holds several addresses (a node's, the world's): a
    /// source binds [`Located::addr`].
    pub binds: bool,
}

/// Where a probe side (`side`: a pod or `node/NAME`; else `ip`) is in the
/// lab `state` built from `topo`, with its address of one family; `None`
/// when the lab has no such side or it has no address of the family.
pub fn locate(
    state: &LabState,
    topo: &Topology,
    side: &Option<String>,
    ip: &Option<String>,
    v6: bool,
) -> Option<Located> {
    let of_family = |a: &IpAddr| a.is_ipv6() == v6;
    let node_side = |name: &str, addr: IpAddr| {
        Some(Located {
            ns: state.namespace_of(name).ok()?,
            addr,
            pod: None,
            node: Some(state.node(name).ok()?.name.clone()),
            binds: true,
        })
    };
    let pod_side = |pod: &str, addr: IpAddr| {
        Some(Located {
            ns: state.namespace_of(pod).ok()?,
            addr,
            pod: Some(pod.to_string()),
            node: state.node_of_pod(pod).map(|n| n.name.clone()),
            binds: false,
        })
    };
    if let Some(side) = side {
        if let Some(node) = model::named_node(topo, side) {
            let addr = node.ips.iter().copied().find(of_family)?;
            return node_side(&node.name, addr);
        }
        let addr = topo.pod(side)?.addresses().into_iter().find(of_family)?;
        return pod_side(side, addr);
    }
    let addr: IpAddr = ip.as_ref()?.parse().ok()?;
    if !of_family(&addr) {
        return None;
    }
    if let Some(p) = topo.pods.iter().find(|p| p.addresses().contains(&addr)) {
        return pod_side(&p.full_name(), addr);
    }
    if let Some(node) = topo.nodes.iter().find(|n| n.ips.contains(&addr)) {
        return node_side(&node.name, addr);
    }
    // A topology's `node:` is the lab's (first) node.
    if topo
        .node
        .iter()
        .flat_map(|n| n.ips.iter())
        .any(|a| *a == addr)
    {
        return node_side("node", addr);
    }
    let in_world_ns = [WORLD_V4, WORLD_V6].contains(&addr)
        || topo
            .world
            .iter()
            .flat_map(|w| w.ips.iter())
            .any(|a| *a == addr);
    if world_nets().iter().any(|n| n.contains(&addr)) && in_world_ns {
        return Some(Located {
            ns: WORLD_NS.to_string(),
            addr,
            pod: None,
            node: None,
            binds: true,
        });
    }
    None
}

/// The HTTP calls of a plain (not TLS) probe: none for a TLS probe, one
/// `None` (no HTTP) without `http:`, else HTTP/1.1 and HTTP/2.
fn http_calls(p: &Probe) -> Vec<Option<HttpCall>> {
    match &p.http {
        _ if p.tls.is_some() => vec![],
        None => vec![None],
        Some(h) => [false, true]
            .into_iter()
            .map(|h2| {
                Some(HttpCall {
                    method: h.method.clone().unwrap_or_else(|| "GET".into()),
                    path: h.path.clone().unwrap_or_else(|| "/".into()),
                    host: h.host.clone(),
                    headers: h.headers.clone(),
                    h2,
                })
            })
            .collect(),
    }
}

/// What the wire must show for a plain probe: an HTTP status for HTTP, a
/// DNS rcode for DNS when allowed or denied at L7, else connected or
/// blocked; a Kafka probe's own outcome.
fn plain_want(p: &Probe, kafka: Option<&KafkaCall>, verdict: Verdict, layer: Layer) -> Outcome {
    let want = match (&p.http, &p.dns, verdict, layer) {
        (Some(_), _, Verdict::Allowed, _) => Outcome::Http(200),
        (Some(_), _, Verdict::Denied, Layer::L7) => Outcome::Http(403),
        (None, Some(_), Verdict::Allowed, _) => Outcome::Dns(DNS_ANSWERED),
        (None, Some(_), Verdict::Denied, Layer::L7) => Outcome::Dns(DNS_REFUSED),
        (_, _, Verdict::Allowed, _) => Outcome::Connected,
        (_, _, Verdict::Denied, _) => Outcome::Blocked,
    };
    kafka.map_or(want, |k| kafka::want(k, verdict, layer))
}

/// What a plain probe sends: Kafka, then DNS, then HTTP take precedence,
/// in that order, over an L4 probe.
fn plain_call(
    kafka: &Option<KafkaCall>,
    dns: &Option<String>,
    http: &Option<HttpCall>,
) -> WireCall {
    match (kafka, dns, http) {
        (Some(k), _, _) => WireCall::Kafka(k.clone()),
        (None, Some(name), _) => WireCall::Dns(name.clone()),
        (None, None, Some(h)) => WireCall::Http(h.clone()),
        (None, None, None) => WireCall::L4,
    }
}

/// The wire probes of `case` in the lab `state` built from `topo`.
/// `kafka_ok`: Kafka probes can run (tansu and kafka-python are there);
/// otherwise they are skipped. Probes the lab cannot send (SCTP, ICMP
/// other than echo, sides with no address in a family, `to-fqdn` without
/// a DNS server) are skipped and counted.
pub fn plan_case(
    case: &Case,
    topo: &Topology,
    state: &LabState,
    kafka_ok: bool,
) -> anyhow::Result<CasePlan> {
    let set = model::case_policies(case).map_err(|e| anyhow::anyhow!("{}: {e}", case.name))?;
    let mut clusters = model::CaseClusters::new();
    let mut plan = CasePlan::default();
    for p in case.probes.iter().filter(|p| runnable(p)) {
        let kafka = kafka::call(p);
        if p.kafka.is_some() && (kafka.is_none() || !kafka_ok) {
            plan.skipped += 1;
            continue;
        }
        let Ok(proto) = model::probe_protocol(p) else {
            plan.skipped += 1;
            continue;
        };
        if !sends(proto, p.port) {
            plan.skipped += 1;
            continue;
        }
        let explained = match model::explain_probe(case, &set, &mut clusters, p) {
            Ok(e) => e,
            Err(e) => anyhow::bail!("{}: {}: {e}", case.name, p.describe()),
        };
        let verdict = explained.verdict;
        let tls_calls = tls::calls(p);
        // A TLS probe whose handshake the model denies is closed on the wire.
        let handshake_ok = p.tls.is_none() || {
            let mut hello = p.clone();
            hello.http = None;
            model::explain_probe(case, &set, &mut clusters, &hello)
                .is_ok_and(|e| e.verdict == Verdict::Allowed)
        };
        let calls = http_calls(p);
        let want = plain_want(p, kafka.as_ref(), verdict, explained.layer);
        // A `to-fqdn` probe first resolves the name through the DNS proxy
        // (so the agent learns it), then connects.
        let resolve_first: Vec<(String, IpAddr)> = match (&p.to_fqdn, dns_server(topo)) {
            (Some(name), Some((_, server))) => std::iter::once(name)
                .chain(&p.to_fqdn_also)
                .map(|n| (n.clone(), server))
                .collect(),
            (Some(_), None) => {
                plan.skipped += 1;
                continue;
            }
            _ => Vec::new(),
        };
        let mut any = false;
        for v6 in [false, true] {
            match proto {
                Protocol::Icmp if v6 => continue,
                Protocol::Icmpv6 if !v6 => continue,
                // IGMP is IPv4's (IPv6 has MLD, inside ICMPv6).
                Protocol::Igmp if v6 => continue,
                _ => {}
            }
            let (Some(src), Some(dst)) = (
                locate(state, topo, &p.from, &p.from_ip, v6),
                locate(state, topo, &p.to, &p.to_ip, v6),
            ) else {
                continue;
            };
            any = true;
            let probe = |family, call, want| WireProbe {
                describe: p.describe(),
                family,
                call,
                want,
                resolve_first: resolve_first.clone(),
                src_ns: src.ns.clone(),
                src_ip: src.binds.then_some(src.addr),
                dst: dst.addr,
                src_pod: src.pod.clone(),
                dst_pod: dst.pod.clone(),
                src_node: src.node.clone(),
                dst_node: dst.node.clone(),
                protocol: proto,
                port: p.port,
                model: verdict,
                expect: p.expect,
            };
            for call in &calls {
                let family = match (v6, call.as_ref().is_some_and(|c| c.h2)) {
                    (false, false) => "v4",
                    (true, false) => "v6",
                    (false, true) => "v4/h2",
                    (true, true) => "v6/h2",
                };
                plan.probes
                    .push(probe(family, plain_call(&kafka, &p.dns, call), want));
            }
            for call in &tls_calls {
                let family = match (v6, call.h2) {
                    (false, false) => "v4/tls",
                    (true, false) => "v6/tls",
                    (false, true) => "v4/h2s",
                    (true, true) => "v6/h2s",
                };
                let want = tls::want(call, verdict == Verdict::Allowed, handshake_ok);
                plan.probes
                    .push(probe(family, WireCall::Tls(call.clone()), want));
            }
        }
        if !any {
            plan.skipped += 1;
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests;
