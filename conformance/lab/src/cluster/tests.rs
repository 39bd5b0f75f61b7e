use super::*;

const TWO: &str = "
namespaces: [{name: x}]
nodes:
  - {name: n1, ips: [10.200.0.1]}
  - {name: n2}
pods:
  - {namespace: x, name: a, ip: 10.200.1.1, node: n1}
  - {namespace: x, name: b, node: n2}
  - {namespace: x, name: c}
  - {namespace: x, name: d, node: n2}
";

fn planned(text: &str) -> ClusterPlan {
    plan(&Topology::from_yaml(text, "t.yaml").expect("topology")).expect("plan")
}

#[test]
fn nodes_get_namespaces_and_underlay_addresses_in_order() {
    let p = planned(TWO);
    assert_eq!(p.nodes.len(), 2);
    assert_eq!(p.nodes[0].netns, "pc-node-n1");
    assert_eq!(p.nodes[0].underlay_v4, Ipv4Addr::new(10, 201, 255, 254));
    assert_eq!(p.nodes[1].underlay_v4, Ipv4Addr::new(10, 201, 255, 253));
    assert_eq!(p.nodes[1].underlay_v6.to_string(), "fd00:201::fffd");
    // The first topology IPv4 address is the source towards pods; a node
    // without one uses its underlay address.
    assert_eq!(p.nodes[0].src_v4, Ipv4Addr::new(10, 200, 0, 1));
    assert_eq!(p.nodes[1].src_v4, p.nodes[1].underlay_v4);
    // Each node lists its underlay addresses, so other agents see them as
    // `remote-node`.
    let n2 = &p.topology.nodes[1];
    assert!(n2.ips.contains(&"10.201.255.253".parse().expect("ip")));
    assert!(n2.ips.contains(&"fd00:201::fffd".parse().expect("ip")));
}

#[test]
fn pods_are_placed_and_addressed_from_their_nodes_range() {
    let p = planned(TWO);
    let pod = |name: &str| p.topology.pod(&format!("x/{name}")).expect("pod").clone();
    assert_eq!(
        pod("a").addresses(),
        ["10.200.1.1".parse::<IpAddr>().expect("ip")]
    );
    // Without `node:`, the first node (as a scheduler would place it).
    assert_eq!(pod("c").node.as_deref(), Some("n1"));
    let b = pod("b").addresses();
    assert_eq!(b[0].to_string(), "10.200.130.2");
    assert_eq!(b[1].to_string(), "fd00:200::82:2");
    assert_eq!(pod("d").addresses()[0].to_string(), "10.200.130.3");
    assert_eq!(pod("c").addresses()[0].to_string(), "10.200.129.2");
    let (v4, v6) = node_pod_range(2);
    assert!(ipnet::IpNet::V4(v4).contains(&b[0]) && ipnet::IpNet::V6(v6).contains(&b[1]));
}

#[test]
fn a_node_name_too_long_for_a_namespace_is_refused() {
    let long = "n".repeat(41);
    let text = format!("nodes: [{{name: {long}}}, {{name: n2}}]\n");
    let e = plan(&Topology::from_yaml(&text, "t.yaml").expect("topology")).expect_err("long");
    assert!(e.to_string().contains("1 to 40 characters"), "{e}");
}

#[test]
fn two_nodes_make_a_cluster_one_does_not() {
    let t = |s: &str| Topology::from_yaml(s, "t.yaml").expect("topology");
    assert!(is_cluster(&t(TWO)));
    assert!(!is_cluster(&t("nodes: [{name: lab-node}]\n")));
    assert!(!is_cluster(&t("pods: []\n")));
}
