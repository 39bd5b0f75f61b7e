//! Shared helpers of the resolve tests: a small topology, policies in,
//! map verdicts out.

use super::*;
use crate::identity::NumericIdentity;
use crate::load::load_str;
use crate::mapstate::MapVerdict;
use crate::rules::Direction;
use std::net::IpAddr;

pub const TOPO: &str = "
namespaces:
- {name: ns1, labels: {team: blue}}
- {name: ns2}
pods:
- {namespace: ns1, name: a, labels: {app: a}, ip: 10.0.1.1, ports: [{name: http, containerPort: 8080}]}
- {namespace: ns1, name: a2, labels: {app: a}, ip: 10.0.1.3}
- {namespace: ns1, name: b, labels: {app: b}, ip: 10.0.1.2, ports: [{name: http, containerPort: 9090}]}
- {namespace: ns2, name: c, labels: {app: c}, ip: 10.0.2.1}
node: {ips: [192.168.0.10], labels: {role: worker}}
kubeApiserver: {ips: [192.168.0.1]}
remoteNodes: {ips: [192.168.0.11]}
";

pub const TCP: u8 = 6;

pub const UDP: u8 = 17;

pub fn cluster_with(policies: &str, fqdn: &FqdnCache) -> Cluster {
    let set = load_str(policies, "p.yaml").expect("test policies load");
    let topo = Topology::from_yaml(TOPO, "t.yaml").expect("test topology is valid");
    Cluster::new(topo, set.rules().cloned().collect(), fqdn)
}

pub fn cluster(policies: &str) -> Cluster {
    cluster_with(policies, &FqdnCache::default())
}

pub fn pol(c: &Cluster, pod: &str) -> EndpointPolicy {
    c.endpoint_policy(c.endpoint(pod).expect("pod in topology"))
}

pub fn id(c: &Cluster, pod: &str) -> NumericIdentity {
    c.endpoint(pod).expect("pod in topology").identity
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

/// The verdict of the kernel's lookup (`None` = no entry = drop).
pub fn verdict(
    p: &EndpointPolicy,
    d: Direction,
    remote: NumericIdentity,
    proto: u8,
    port: u16,
) -> Option<MapVerdict> {
    p.map.lookup(d, remote, proto, port).map(|(_, v)| v.verdict)
}

pub fn cnp(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: ns1}}\nspec:\n{spec}\n---\n"
    )
}

pub const ON_A: &str = "  endpointSelector: {matchLabels: {app: a}}\n";
