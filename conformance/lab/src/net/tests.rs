use super::*;

fn topo(yaml: &str) -> Topology {
    Topology::from_yaml(yaml, "test.yaml").expect("topology")
}

const OK: &str = "
namespaces: [{name: x}]
pods:
  - {namespace: x, name: a, ips: [10.200.1.1, 'fd00:200::1']}
  - {namespace: x, name: b, ip: 10.200.1.2}
node: {ips: [10.200.0.1]}
world: {ips: [10.201.0.10]}
";

#[test]
fn addresses_inside_the_lab_ranges_pass() {
    check_lab_addresses(&topo(OK)).expect("in range");
}

#[test]
fn addresses_outside_the_lab_ranges_are_refused_with_the_range() {
    let pod = OK.replace("10.200.1.2", "192.168.1.2");
    let e = check_lab_addresses(&topo(&pod)).expect_err("pod outside");
    assert!(
        e.to_string().contains("pod x/b: address 192.168.1.2"),
        "{e}"
    );
    let world = OK.replace("10.201.0.10", "10.200.9.9");
    let e = check_lab_addresses(&topo(&world)).expect_err("world outside");
    assert!(e.to_string().contains("world address 10.200.9.9"), "{e}");
    let node = OK.replace("10.200.0.1]", "10.201.0.2]");
    let e = check_lab_addresses(&topo(&node)).expect_err("node outside");
    assert!(e.to_string().contains("node address 10.201.0.2"), "{e}");
}

#[test]
fn pods_get_namespaces_in_topology_order_from_one() {
    assert_eq!(
        pod_namespaces(&topo(OK)).expect("names"),
        vec![
            ("x/a".to_string(), "pc-pod1".to_string()),
            ("x/b".to_string(), "pc-pod2".to_string())
        ]
    );
    assert_eq!(host_ifname(2), "pc2");
    assert_eq!(host_prefix(&WORLD_V6), "fd00:201::1/128");
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
";

#[test]
fn only_the_lab_nodes_pods_get_namespaces_numbered_by_topology_position() {
    let t = topo(PLACED);
    assert_eq!(
        pod_namespaces(&t).expect("names"),
        vec![
            ("x/a".to_string(), "pc-pod1".to_string()),
            ("x/here".to_string(), "pc-pod3".to_string())
        ]
    );
    let ids: Vec<u16> = local_pods(&t)
        .expect("local")
        .iter()
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(ids, [1, 3]);
    assert_eq!(
        remote_pods(&t),
        vec![("x/far".to_string(), "node-2".to_string())]
    );
}

#[test]
fn a_topology_without_node_fields_has_no_remote_pods() {
    assert!(remote_pods(&topo(OK)).is_empty());
    assert_eq!(pod_namespaces(&topo(OK)).expect("names").len(), 2);
}

#[test]
fn listed_node_addresses_must_be_in_the_lab_range() {
    check_lab_addresses(&topo(PLACED)).expect("in range");
    let out = PLACED.replace("10.200.0.2]", "192.168.0.2]");
    let e = check_lab_addresses(&topo(&out)).expect_err("node outside");
    assert!(
        e.to_string().contains("node node-2: address 192.168.0.2"),
        "{e}"
    );
}
