use super::*;

const TOPO: &str = "
namespaces: [{name: x, labels: {team: a}}]
pods:
  - {namespace: x, name: a, labels: {app: a}, ips: [10.200.1.1, 'fd00:200::1'],
     ports: [{name: http, containerPort: 80}]}
node: {ips: [10.200.0.1], labels: {zone: z}}
";

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pclab-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn the_topology_becomes_a_namespace_pods_and_the_lab_node() {
    let topo = Topology::from_yaml(TOPO, "t.yaml").expect("topology");
    let objs = topology_objects(&topo);
    let keys: Vec<_> = objs.iter().map(object_key).collect();
    assert_eq!(
        keys,
        [
            ("Namespace".into(), "".into(), "x".into()),
            ("Pod".into(), "x".into(), "a".into()),
            ("Node".into(), "".into(), LAB_NODE.into()),
        ]
    );
    let pod = &objs[1];
    assert_eq!(pod["spec"]["nodeName"], LAB_NODE);
    assert_eq!(pod["status"]["podIP"], "10.200.1.1");
    assert_eq!(pod["status"]["podIPs"][1]["ip"], "fd00:200::1");
    assert_eq!(pod["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
    assert_eq!(objs[2]["status"]["addresses"][0]["address"], "10.200.0.1");
}

#[test]
fn every_document_of_the_policy_files_is_an_object_in_path_order() {
    let d = temp_dir("policies");
    std::fs::create_dir_all(d.join("sub")).expect("sub");
    std::fs::write(
        d.join("b.yaml"),
        "kind: NetworkPolicy\nmetadata: {name: two, namespace: x}\n---\nkind: NetworkPolicy\nmetadata: {name: three, namespace: x}\n",
    )
    .expect("write");
    std::fs::write(
        d.join("sub/a.yaml"),
        "kind: CiliumNetworkPolicy\nmetadata: {name: four}\n---\n# only a comment\n",
    )
    .expect("write");
    std::fs::write(
        d.join("a.yaml"),
        "kind: NetworkPolicy\nmetadata: {name: one, namespace: x}\n",
    )
    .expect("write");
    let names: Vec<_> = policy_objects(std::slice::from_ref(&d))
        .iter()
        .map(|o| object_key(o).2)
        .collect();
    assert_eq!(names, ["one", "two", "three", "four"]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn secret_files_become_secrets_without_hidden_items() {
    let d = temp_dir("secrets");
    let s = d.join("shop").join("tls-a");
    std::fs::create_dir_all(&s).expect("secret dir");
    std::fs::write(s.join("tls.crt"), "CERT").expect("write");
    std::fs::write(s.join(".tls.key.tmp"), "half-written").expect("write");
    let objs = secret_objects(&d);
    assert_eq!(objs.len(), 1);
    assert_eq!(
        object_key(&objs[0]),
        ("Secret".into(), "shop".into(), "tls-a".into())
    );
    // base64 of "CERT"
    assert_eq!(objs[0]["data"]["tls.crt"], "Q0VSVA==");
    assert!(objs[0]["data"].get(".tls.key.tmp").is_none());
    assert!(secret_objects(&d.join("missing")).is_empty());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn every_pod_is_published_with_its_node_and_the_listed_nodes_too() {
    let topo = Topology::from_yaml(
        "
namespaces: [{name: x}]
nodes: [{name: node-2, ips: [10.200.0.2], labels: {zone: b}}]
pods:
  - {namespace: x, name: a, ip: 10.200.1.1}
  - {namespace: x, name: far, ip: 10.200.1.2, node: node-2}
",
        "t.yaml",
    )
    .expect("topology");
    let objs = topology_objects(&topo);
    let node_of = |name: &str| {
        objs.iter()
            .find(|o| o["kind"] == "Pod" && o["metadata"]["name"] == name)
            .map(|o| o["spec"]["nodeName"].clone())
            .expect("pod published")
    };
    assert_eq!(node_of("a"), LAB_NODE);
    assert_eq!(node_of("far"), "node-2");
    let node2 = objs
        .iter()
        .find(|o| o["kind"] == "Node" && o["metadata"]["name"] == "node-2")
        .expect("node-2 published");
    assert_eq!(node2["status"]["addresses"][0]["address"], "10.200.0.2");
    assert_eq!(node2["metadata"]["labels"]["zone"], "b");
}
