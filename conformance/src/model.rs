//! Runs cases against the policy model (`policy_model::explain`).

use crate::case::{Case, Expect, NODE_PREFIX, Probe, yaml_scalar};
use policy_model::explain::{HttpRequestSpec, KafkaRequestSpec, TlsRequestSpec};
use policy_model::topology::NodeSpec;
use policy_model::{
    Cluster, Explanation, FlowPeer, FlowQuery, FqdnCache, L7Request, PolicySet, Protocol, Topology,
    Verdict,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The outcome of one probe.
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    pub case: String,
    pub probe: Probe,
    /// The model's verdict and layer, or why the probe could not be asked.
    pub got: Result<(Verdict, String), String>,
    pub pass: bool,
}

impl ProbeOutcome {
    /// `allowed`/`denied` (+ layer) or the error.
    pub fn got_text(&self) -> String {
        match &self.got {
            Ok((v, l)) => format!("{v} ({l})"),
            Err(e) => format!("error: {e}"),
        }
    }
}

/// Parses the probe's protocol.
pub fn probe_protocol(p: &Probe) -> Result<Protocol, String> {
    let s = p.protocol.as_deref().unwrap_or("TCP");
    match Protocol::parse(s) {
        Some(Protocol::Any) | None => Err(format!(
            "probe protocol {s:?} is not TCP, UDP, SCTP, ICMP or ICMPv6"
        )),
        Some(p) => Ok(p),
    }
}

/// The node a probe side names as `node/NAME`, when `topology` lists it
/// under `nodes:`.
pub fn named_node<'a>(topology: &'a Topology, side: &str) -> Option<&'a NodeSpec> {
    let name = side.strip_prefix(NODE_PREFIX)?;
    topology.nodes.iter().find(|n| n.name == name)
}

/// Builds the model's flow question for a probe. A side `node/NAME` is
/// the node's first address in `topology` (any of them has the node's
/// identity).
pub fn to_query(p: &Probe, topology: &Topology) -> Result<FlowQuery, String> {
    let peer =
        |pod: &Option<String>, ip: &Option<String>, what: &str| -> Result<FlowPeer, String> {
            match (pod, ip) {
                (Some(side), None) => match named_node(topology, side) {
                    Some(node) => node.ips.first().copied().map(FlowPeer::Ip).ok_or_else(|| {
                        format!("{what} {side:?}: the node has no address in the topology")
                    }),
                    None => Ok(FlowPeer::Pod(side.clone())),
                },
                (None, Some(ip)) => ip
                    .parse::<IpAddr>()
                    .map(FlowPeer::Ip)
                    .map_err(|_| format!("{what}-ip {ip:?} is not an IP address")),
                _ => Err(format!("give exactly one of {what} and {what}-ip")),
            }
        };
    let http = |h: &crate::case::HttpProbe| -> Result<HttpRequestSpec, String> {
        let mut headers = Vec::new();
        for hd in &h.headers {
            let (k, v) = hd
                .split_once(':')
                .ok_or_else(|| format!("header {hd:?} is not 'Name: value'"))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        Ok(HttpRequestSpec {
            method: h.method.clone().unwrap_or_else(|| "GET".into()),
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            host: h.host.clone().unwrap_or_default(),
            headers,
        })
    };
    let l7 = if let Some(t) = &p.tls {
        Some(L7Request::Tls(TlsRequestSpec {
            sni: t.sni.clone(),
            http: p.http.as_ref().map(http).transpose()?,
        }))
    } else if let Some(h) = &p.http {
        let mut headers = Vec::new();
        for hd in &h.headers {
            let (k, v) = hd
                .split_once(':')
                .ok_or_else(|| format!("header {hd:?} is not 'Name: value'"))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        Some(L7Request::Http(HttpRequestSpec {
            method: h.method.clone().unwrap_or_else(|| "GET".into()),
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            host: h.host.clone().unwrap_or_default(),
            headers,
        }))
    } else if let Some(d) = &p.dns {
        Some(L7Request::Dns { name: d.clone() })
    } else if let Some(k) = &p.kafka {
        let key_text = yaml_scalar(&k.api_key);
        let api_key = key_text
            .parse::<i16>()
            .ok()
            .or_else(|| policy_model::l7::kafka::api_key_by_name(&key_text))
            .ok_or_else(|| format!("unknown Kafka api key {key_text:?}"))?;
        Some(L7Request::Kafka(KafkaRequestSpec {
            api_key,
            api_version: k.api_version.unwrap_or(0),
            client_id: k.client_id.clone(),
            topics: k.topics.clone(),
        }))
    } else {
        None
    };
    Ok(FlowQuery {
        from: peer(&p.from, &p.from_ip, "from")?,
        to: peer(&p.to, &p.to_ip, "to")?,
        to_fqdn: p.to_fqdn.clone(),
        protocol: probe_protocol(p)?,
        port: p.port,
        l7,
    })
}

/// Loads a case's policies.
pub fn case_policies(case: &Case) -> Result<PolicySet, String> {
    policy_model::load::load_str(&case.policies, &case.file.display().to_string()).map_err(|errs| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// The models of one case, built on demand: one per node whose agent
/// judges a probe (see [`judging_node`]) and per set of names learned for
/// a `to-fqdn` probe (`to-fqdn` and `to-fqdn-also`, each with `to-ip`).
pub type CaseClusters = BTreeMap<(Option<String>, Vec<(String, String)>), Cluster>;

/// The node whose agent judges a probe in a topology with `nodes:`: the
/// source pod's (it judges egress), else the destination pod's (ingress);
/// a pod without `node:` runs on the first node, as the lab places it.
/// `None` without `nodes:` or when no side is a pod (no policy applies).
///
/// One node's view is exact for both directions: a pod's identity is the
/// same on every node, and only node addresses (`host` on their own node,
/// `remote-node` elsewhere) depend on which agent looks. A flow between
/// two pods judges the other pod by identity; a flow with a node on one
/// side has a single pod, whose node's view it takes.
pub fn judging_node(topology: &Topology, q: &FlowQuery) -> Option<String> {
    let first = topology.nodes.first()?;
    let node_of = |peer: &FlowPeer| {
        let pod = match peer {
            FlowPeer::Pod(name) => topology.pod(name),
            FlowPeer::Ip(ip) => topology
                .pods
                .iter()
                .map(|p| &**p)
                .find(|p| p.addresses().contains(ip)),
        }?;
        Some(pod.node.clone().unwrap_or_else(|| first.name.clone()))
    };
    node_of(&q.from).or_else(|| node_of(&q.to))
}

/// The model's answer to one probe of a case.
pub fn explain_probe(
    case: &Case,
    set: &PolicySet,
    clusters: &mut CaseClusters,
    p: &Probe,
) -> Result<Explanation, String> {
    let q = to_query(p, &case.topology)?;
    let learned: Vec<(String, String)> = match (&p.to_fqdn, &p.to_ip) {
        (Some(f), Some(ip)) => std::iter::once(f)
            .chain(&p.to_fqdn_also)
            .map(|name| (name.clone(), ip.clone()))
            .collect(),
        (Some(_), None) => return Err("to-fqdn needs to-ip".into()),
        (None, _) if !p.to_fqdn_also.is_empty() => {
            return Err("to-fqdn-also needs to-fqdn".into());
        }
        _ => Vec::new(),
    };
    let key = (judging_node(&case.topology, &q), learned);
    let cluster = clusters.entry(key.clone()).or_insert_with(|| {
        let mut fq = FqdnCache::default();
        for (name, ip) in &key.1 {
            if let Ok(ip) = ip.parse() {
                fq.learn(name, ip);
            }
        }
        let mut topology = match &key.0 {
            Some(node) => case.topology.for_node(node),
            None => case.topology.clone(),
        };
        // CiliumCIDRGroups are applied with the policies.
        topology.cidr_groups.extend(set.cidr_groups.iter().cloned());
        Cluster::new(topology, set.rules().cloned().collect(), &fq)
    });
    policy_model::explain(cluster, &q).map_err(|e| e.to_string())
}

/// Runs every probe of a case against the model.
pub fn run_case(case: &Case) -> Vec<ProbeOutcome> {
    let set = match case_policies(case) {
        Ok(s) => s,
        Err(e) => {
            return case
                .probes
                .iter()
                .map(|p| ProbeOutcome {
                    case: case.name.clone(),
                    probe: p.clone(),
                    got: Err(format!("policies do not load: {e}")),
                    pass: false,
                })
                .collect();
        }
    };
    let mut clusters = CaseClusters::new();
    case.probes
        .iter()
        .map(|p| {
            let got = explain_probe(case, &set, &mut clusters, p)
                .map(|e| (e.verdict, e.layer.to_string()));
            let pass = match &got {
                Ok((v, layer)) => {
                    let vok = matches!(
                        (v, p.expect),
                        (Verdict::Allowed, Expect::Allowed) | (Verdict::Denied, Expect::Denied)
                    );
                    vok && p.layer.as_ref().is_none_or(|l| l == layer)
                }
                Err(_) => false,
            };
            ProbeOutcome {
                case: case.name.clone(),
                probe: p.clone(),
                got,
                pass,
            }
        })
        .collect()
}
