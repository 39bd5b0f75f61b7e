use super::*;
use crate::state::LabNode;
use std::path::PathBuf;

fn state(kubernetes: bool) -> LabState {
    LabState {
        topology: PathBuf::from("/t/topology.yaml"),
        policies: vec![PathBuf::from("/t/a.yaml"), PathBuf::from("/t/b")],
        pods: vec![("x/a".into(), "pc-pod1".into())],
        remote_pods: vec![],
        nodes: vec![LabNode::single()],
        pod_nodes: vec![],
        cluster: false,
        kubernetes,
        agent_args: vec!["--dns-max-ips".into(), "8".into()],
    }
}

fn args(state: &LabState) -> Vec<String> {
    agent_command(state, &state.nodes[0], Path::new("/bin/portcullis"))
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn file_mode_passes_the_files_and_the_secrets_dir() {
    let a = args(&state(false));
    assert_eq!(
        a.join(" "),
        "agent --netns pc-node --topology /t/topology.yaml --policy /t/a.yaml --policy /t/b \
         --tls-secrets-dir /run/portcullis/lab/tls-secrets \
         --pod-cidr 10.200.0.0/16 --pod-cidr fd00:200::/64 \
         --pin-dir /run/portcullis/bpffs/lab --state-dir /run/portcullis/lab --uplink pcup \
         --dns-max-ips 8"
    );
}

#[test]
fn kubernetes_mode_watches_the_fake_api_server_instead() {
    let a = args(&state(true));
    assert_eq!(
        a.join(" "),
        "agent --netns pc-node --kubernetes --kubeconfig /run/portcullis/lab/agent-kubeconfig \
         --node-name lab-node --pod-cidr 10.200.0.0/16 --pod-cidr fd00:200::/64 \
         --pin-dir /run/portcullis/bpffs/lab --state-dir /run/portcullis/lab --uplink pcup \
         --dns-max-ips 8"
    );
}

#[test]
fn the_agent_binary_is_the_callers_unless_the_environment_names_another() {
    let caller = Path::new("/bin/portcullis");
    assert_eq!(agent_binary_from(caller, None), caller);
    assert_eq!(agent_binary_from(caller, Some("".into())), caller);
    assert_eq!(
        agent_binary_from(caller, Some("/work/base/portcullis".into())),
        Path::new("/work/base/portcullis")
    );
}

#[test]
fn a_cluster_nodes_agent_reads_the_built_topology_as_its_node_with_its_own_dirs() {
    let mut s = state(false);
    s.cluster = true;
    s.nodes = vec![LabNode {
        name: "node-2".into(),
        netns: "pc-node-node-2".into(),
        state_dir: crate::paths::node_state_dir("node-2"),
        pin_dir: crate::paths::node_pin_dir("node-2"),
        agent_pid: None,
    }];
    let a = args(&s).join(" ");
    assert!(a.starts_with("agent --netns pc-node-node-2 --topology /run/portcullis/lab/cluster-topology.yaml --node-name node-2 "), "{a}");
    assert!(a.contains("--pin-dir /run/portcullis/bpffs/lab/node-2 --state-dir /run/portcullis/lab/nodes/node-2 "), "{a}");
    s.kubernetes = true;
    let a = args(&s).join(" ");
    assert!(
        a.contains(
            "--kubernetes --kubeconfig /run/portcullis/lab/agent-kubeconfig --node-name node-2 "
        ),
        "{a}"
    );
}
