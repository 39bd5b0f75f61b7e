//! Root-only: a topology with pods on other nodes gets namespaces and veths
//! for the lab node's pods only. The lab's namespaces are removed on drop,
//! also when an assertion fails. Prints SKIP and passes when not root, or
//! when a lab is up already. Run it holding the lab lock, as every lab test:
//! `flock -o /run/portcullis-lab.lock cargo test --release -p portcullis-lab --test placement`.

use policy_model::Topology;
use portcullis_lab::netns::{self, root_or_skip};
use portcullis_lab::{LAB_NODE, NODE_NS, make_network};

/// Removes the lab's namespaces on drop (also when an assertion fails).
struct LabGuard;

impl LabGuard {
    /// `None` (after a SKIP line) when a lab is up: a lab someone left up
    /// between two locked commands is not ours to remove.
    fn take() -> Option<LabGuard> {
        if netns::list()
            .iter()
            .any(|n| n.starts_with(portcullis_lab::NS_PREFIX))
        {
            eprintln!("SKIP lab placement: a lab is up (run `portcullis lab down` first)");
            return None;
        }
        Some(LabGuard)
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        remove_lab_namespaces();
    }
}

fn remove_lab_namespaces() {
    for ns in netns::list() {
        if ns.starts_with(portcullis_lab::NS_PREFIX) {
            let _ = netns::ip(&["netns", "del", &ns]);
        }
    }
}

const PLACED: &str = "
namespaces: [{name: x}]
nodes:
  - {name: lab-node, ips: [10.200.0.1]}
  - {name: node-2, ips: [10.200.0.2]}
pods:
  - {namespace: x, name: a, ip: 10.200.1.1}
  - {namespace: x, name: far, ip: 10.200.1.2, node: node-2}
  - {namespace: x, name: here, ip: 10.200.1.3, node: lab-node}
  - {namespace: x, name: farther, ip: 10.200.1.4, node: node-2}
";

#[test]
fn only_the_lab_nodes_pods_get_namespaces_and_veths() {
    if !root_or_skip("lab placement") {
        return;
    }
    let Some(_lab) = LabGuard::take() else {
        return;
    };
    let topo = Topology::from_yaml(PLACED, "placed.yaml")
        .expect("topology")
        .for_node(LAB_NODE);
    let pods = make_network(&topo).expect("make the lab network");
    assert_eq!(
        pods,
        vec![
            ("x/a".to_string(), "pc-pod1".to_string()),
            ("x/here".to_string(), "pc-pod3".to_string())
        ]
    );
    let mut made: Vec<String> = netns::list()
        .into_iter()
        .filter(|n| n.starts_with("pc-pod"))
        .collect();
    made.sort();
    assert_eq!(made, ["pc-pod1", "pc-pod3"]);
    // The node has a veth for each local pod and a route to its address,
    // none for the remote pods, and the lab node's address from `nodes:`.
    let links = netns::in_netns(NODE_NS, || {
        nix::net::if_::if_nameindex()
            .expect("interfaces")
            .iter()
            .map(|i| i.name().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    })
    .expect("in the node");
    assert!(
        links.contains(&"pc1".to_string()) && links.contains(&"pc3".to_string()),
        "{links:?}"
    );
    assert!(
        !links.contains(&"pc2".to_string()) && !links.contains(&"pc4".to_string()),
        "{links:?}"
    );
    let route = |ip: &str| {
        std::process::Command::new("ip")
            .args(["-n", NODE_NS, "route", "show", ip])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .expect("ip route")
    };
    assert!(route("10.200.1.3").contains("dev pc3"));
    assert!(route("10.200.1.2").trim().is_empty());
    let addrs = std::process::Command::new("ip")
        .args(["-n", NODE_NS, "addr", "show", "dev", "lo"])
        .output()
        .expect("ip addr");
    assert!(String::from_utf8_lossy(&addrs.stdout).contains("10.200.0.1/32"));
}
