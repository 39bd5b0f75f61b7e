//! Upstream sockets come from the client's address only towards the
//! local endpoints of the snapshot a request was judged under.

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
