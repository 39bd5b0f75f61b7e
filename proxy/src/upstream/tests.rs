//! Upstream sockets come from the client's address only towards the
//! pods of the cluster (local endpoints and pods on other nodes) of the
//! snapshot a request was judged under.

use std::net::IpAddr;

use policy_model::{Cluster, FqdnCache, Topology};

use super::*;
use crate::policy::PolicyHandle;

const TOPO: &str = "
namespaces:
- {name: ns1}
pods:
- {namespace: ns1, name: a, labels: {app: a}, ip: 10.0.1.1}
";

fn pods() -> ProxyPolicy {
    let topo = Topology::from_yaml(TOPO, "t.yaml").expect("test topology is valid");
    let cluster = Cluster::new(topo, Vec::new(), &FqdnCache::default());
    ProxyPolicy::new(&cluster)
}

#[test]
fn each_handle_keeps_its_own_local_destinations() {
    let cfg = UpstreamConfig::datapath();
    let pod: IpAddr = "10.0.1.1".parse().expect("literal");
    // Two proxies in one process (the tests, the bench binaries): one
    // serves the pods of TOPO, the other a node without endpoints. Each
    // snapshot answers for itself, whichever was installed last.
    let with_pods = PolicyHandle::deny_all();
    with_pods.update(pods());
    let without = PolicyHandle::deny_all();
    without.update(ProxyPolicy::empty());
    assert!(bind_client_address(&cfg, &with_pods.snapshot(), pod));
    assert!(!bind_client_address(&cfg, &without.snapshot(), pod));
    // Not local: a reply from outside the node would reach the client pod.
    let world: IpAddr = "10.201.0.1".parse().expect("literal");
    assert!(!bind_client_address(&cfg, &with_pods.snapshot(), world));
    // From the node's address, never bound.
    assert!(!bind_client_address(
        &UpstreamConfig::plain(),
        &with_pods.snapshot(),
        pod
    ));
}

const TWO_NODES: &str = "
namespaces:
- {name: ns1}
nodes:
- {name: lab-node}
- {name: n2, ips: [10.0.9.2]}
pods:
- {namespace: ns1, name: a, labels: {app: a}, ip: 10.0.1.1, node: lab-node}
- {namespace: ns1, name: b, labels: {app: b}, ip: 10.0.2.1, node: n2}
";

#[test]
fn a_pod_on_another_node_gets_the_clients_address_the_world_and_nodes_do_not() {
    let topo = Topology::from_yaml(TWO_NODES, "t.yaml")
        .expect("test topology is valid")
        .for_node("lab-node");
    let cluster = Cluster::new(topo, Vec::new(), &FqdnCache::default());
    let policy = ProxyPolicy::new(&cluster);
    let cfg = UpstreamConfig::datapath();
    let ip = |s: &str| s.parse::<IpAddr>().expect("literal");
    // Its ingress is judged on its own node, by the client's identity.
    assert!(bind_client_address(&cfg, &policy, ip("10.0.2.1")));
    assert!(bind_client_address(&cfg, &policy, ip("10.0.1.1")));
    // Another node (remote-node) and the world are no pods.
    assert!(!bind_client_address(&cfg, &policy, ip("10.0.9.2")));
    assert!(!bind_client_address(&cfg, &policy, ip("10.201.0.1")));
}
