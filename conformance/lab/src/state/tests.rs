use super::*;

fn state() -> LabState {
    LabState {
        topology: PathBuf::from("/t/topology.yaml"),
        policies: vec![],
        pods: vec![("x/a".into(), "pc-pod1".into())],
        remote_pods: vec![("x/far".into(), "node-2".into())],
        nodes: vec![LabNode::single()],
        pod_nodes: vec![],
        cluster: false,
        kubernetes: false,
        agent_args: vec![],
    }
}

#[test]
fn a_local_pod_node_and_world_have_namespaces() {
    let s = state();
    assert_eq!(s.namespace_of("x/a").expect("local"), "pc-pod1");
    assert_eq!(s.namespace_of("node").expect("node"), NODE_NS);
    assert_eq!(s.namespace_of("world").expect("world"), WORLD_NS);
}

#[test]
fn a_remote_pod_is_refused_by_name_with_its_node() {
    let e = state().namespace_of("x/far").expect_err("remote");
    let msg = e.to_string();
    assert!(msg.contains("pod x/far is not on this node"), "{msg}");
    assert!(msg.contains("node-2"), "{msg}");
}

#[test]
fn an_unknown_pod_lists_the_local_ones() {
    let e = state().namespace_of("x/nope").expect_err("unknown");
    assert!(e.to_string().contains("no node or pod \"x/nope\""), "{e}");
    assert!(e.to_string().contains("pods: x/a"), "{e}");
}

#[test]
fn a_state_file_without_remote_pods_still_reads() {
    let mut v = serde_json::to_value(state()).expect("json");
    v.as_object_mut().expect("object").remove("remote_pods");
    let s: LabState = serde_json::from_value(v).expect("older state file");
    assert!(s.remote_pods.is_empty());
}

#[test]
fn a_cluster_names_its_nodes_and_the_first_is_node() {
    let mut s = state();
    s.cluster = true;
    s.nodes = vec![
        LabNode {
            name: "n1".into(),
            netns: "pc-node-n1".into(),
            state_dir: "/s/n1".into(),
            pin_dir: "/p/n1".into(),
            agent_pid: None,
        },
        LabNode {
            name: "n2".into(),
            netns: "pc-node-n2".into(),
            state_dir: "/s/n2".into(),
            pin_dir: "/p/n2".into(),
            agent_pid: None,
        },
    ];
    s.pod_nodes = vec![("x/a".into(), "n2".into())];
    assert_eq!(s.namespace_of("node").expect("node"), "pc-node-n1");
    assert_eq!(s.namespace_of("n2").expect("n2"), "pc-node-n2");
    assert_eq!(s.node_of_pod("x/a").expect("placed").name, "n2");
    let e = s.node("n3").expect_err("unknown node");
    assert!(e.to_string().contains("nodes: n1, n2"), "{e}");
}
