use super::*;

const CLUSTER: &str = r#"
namespaces: [{name: shop}]
nodes:
  - {name: node-a, ips: [192.168.1.1], labels: {zone: a}}
  - {name: node-b, ips: [192.168.1.2]}
node: {ips: [10.0.0.1]}
pods:
  - {namespace: shop, name: web, ip: 10.200.1.1, node: node-a}
  - {namespace: shop, name: db, ip: 10.200.2.1, node: node-b}
  - {namespace: shop, name: everywhere, ip: 10.200.3.1}
"#;

#[test]
fn a_pod_is_local_on_its_node_and_a_pod_without_node_everywhere() {
    let topo = Topology::from_yaml(CLUSTER, "t.yaml").expect("valid");
    let on_a: Vec<String> = topo.pods_on("node-a").map(|p| p.full_name()).collect();
    assert_eq!(on_a, ["shop/web", "shop/everywhere"]);
    let on_b: Vec<String> = topo.pods_on("node-b").map(|p| p.full_name()).collect();
    assert_eq!(on_b, ["shop/db", "shop/everywhere"]);
}

#[test]
fn the_view_of_a_node_makes_it_host_and_the_others_remote_nodes() {
    let topo = Topology::from_yaml(CLUSTER, "t.yaml").expect("valid");
    let a = topo.for_node("node-a");
    let host = a.node.expect("host");
    assert_eq!(
        host.ips,
        [
            "10.0.0.1".parse::<IpAddr>().unwrap(),
            "192.168.1.1".parse().unwrap()
        ]
    );
    assert_eq!(host.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(
        a.remote_nodes.expect("remote").ips,
        ["192.168.1.2".parse::<IpAddr>().unwrap()]
    );
    // A node that is not listed sees every listed node as remote.
    let other = topo.for_node("node-c");
    assert_eq!(other.remote_nodes.expect("remote").ips.len(), 2);
}

#[test]
fn a_pod_on_an_unlisted_node_is_refused_with_its_field() {
    let yaml = CLUSTER.replace("node: node-b}", "node: node-x}");
    let err = Topology::from_yaml(&yaml, "t.yaml").expect_err("unlisted node");
    let text = err.to_string();
    assert!(text.contains("t.yaml: pods[1].node"), "{text}");
    assert!(text.contains("node-x"), "{text}");
}

#[test]
fn a_node_listed_twice_is_refused() {
    let yaml = CLUSTER.replace("name: node-b", "name: node-a");
    let err = Topology::from_yaml(&yaml, "t.yaml").expect_err("twice");
    assert!(err.to_string().contains("nodes[1].name"), "{err}");
}

#[test]
fn without_a_nodes_list_any_node_name_is_taken() {
    let yaml = r#"
namespaces: [{name: shop}]
pods: [{namespace: shop, name: web, ip: 10.200.1.1, node: somewhere}]
"#;
    let topo = Topology::from_yaml(yaml, "t.yaml").expect("valid");
    assert_eq!(topo.pods_on("lab-node").count(), 0);
    assert_eq!(topo.pods_on("somewhere").count(), 1);
}

#[test]
fn a_proxy_visibility_annotation_that_does_not_parse_is_refused_with_its_path() {
    let yaml = CLUSTER.replace(
        "name: db, ip: 10.200.2.1,",
        "name: db, annotations: {policy.cilium.io/proxy-visibility: '<Ingress/80/UDP/HTTP>'}, ip: 10.200.2.1,",
    );
    let err = Topology::from_yaml(&yaml, "t.yaml").expect_err("UDP HTTP");
    let text = err.to_string();
    assert!(
        text.contains("t.yaml: pods[1].annotations.policy.cilium.io/proxy-visibility"),
        "{text}"
    );
    assert!(text.contains("runs over TCP only"), "{text}");
}
